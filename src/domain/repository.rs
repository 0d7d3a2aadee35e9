//! A repository's full name, `owner/name`: split once, where it enters (GitHub's answers and
//! webhooks, the CLI's arguments, the stored thread), and carried whole from there.

use std::fmt;
use std::str::FromStr;

/// `owner/name` as GitHub spells it. Both parts are non-empty and neither holds a `/`; the
/// spelling is kept (GitHub compares names without regard to case: see [`RepoName::is`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    full: String,
    /// Where the `/` is in `full`.
    slash: usize,
}

/// Not `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a repository's full name (owner/name)")]
pub struct NotARepoName(pub String);

impl RepoName {
    /// From its two parts, which the caller has checked (they come from a stored runbook or
    /// a validated request).
    pub fn new(owner: &str, name: &str) -> Self {
        Self {
            full: format!("{owner}/{name}"),
            slash: owner.len(),
        }
    }

    /// The organisation or user that owns it.
    pub fn owner(&self) -> &str {
        &self.full[..self.slash]
    }

    /// The name without the owner.
    pub fn name(&self) -> &str {
        &self.full[self.slash + 1..]
    }

    /// `owner/name`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Whether this is `owner/name`, compared as GitHub compares names (without regard to
    /// case).
    pub fn is(&self, owner: &str, name: &str) -> bool {
        self.owner().eq_ignore_ascii_case(owner) && self.name().eq_ignore_ascii_case(name)
    }
}

impl FromStr for RepoName {
    type Err = NotARepoName;

    fn from_str(full: &str) -> Result<Self, NotARepoName> {
        match full.split_once('/') {
            Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::new(owner, name))
            }
            _ => Err(NotARepoName(full.to_string())),
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_are_split_once() {
        let repo: RepoName = "Acme/Widgets.rs".parse().expect("a full name");
        assert_eq!(repo.owner(), "Acme");
        assert_eq!(repo.name(), "Widgets.rs");
        assert_eq!(repo.to_string(), "Acme/Widgets.rs");
        assert!(repo.is("acme", "widgets.RS"));
        assert!(!repo.is("acme", "widgets"));
        assert_eq!(repo, RepoName::new("Acme", "Widgets.rs"));
        for bad in ["", "acme", "acme/", "/widgets", "a/b/c", "/"] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?} accepted");
        }
    }
}
