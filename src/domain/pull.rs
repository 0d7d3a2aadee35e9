//! Pull requests as the engine tracks them.

use std::fmt;
use std::str::FromStr;

/// A pull request's state on GitHub, as the last `pull_request` webhook said: a merged pull
/// request is closed too on GitHub, but the engine must tell the two apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PullState {
    Open,
    Closed,
    Merged,
}

impl PullState {
    pub const ALL: [PullState; 3] = [PullState::Open, PullState::Closed, PullState::Merged];

    /// The name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Open => "open",
            PullState::Closed => "closed",
            PullState::Merged => "merged",
        }
    }
}

impl fmt::Display for PullState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PullState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PullState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown pull request state `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_what_they_write() {
        for state in PullState::ALL {
            assert_eq!(state.as_str().parse::<PullState>(), Ok(state));
        }
        assert_eq!(
            "reopened".parse::<PullState>(),
            Err("unknown pull request state `reopened`".to_string())
        );
    }
}
