//! Project configuration: `.github/runbooks.yml` in the repository, read when a runbook is
//! planned. It supplies what the request left out (`pr_mode`, `draft`) and labels added to
//! the request's; the server's defaults apply when neither says anything.
//!
//! ```yaml
//! pr_mode: stacked_pr   # manual | single_pr | stacked_pr
//! draft: true
//! labels: [runbook, automated]
//! ```

use serde::Deserialize;

use crate::domain::PrMode;
use crate::domain::runbook::normalize_labels;

pub const PATH: &str = ".github/runbooks.yml";

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub pr_mode: Option<PrMode>,
    pub draft: Option<bool>,
    #[serde(default)]
    pub labels: Vec<String>,
    /// Agent settings are the server's for now; accepted so that a file written for them
    /// does not fail.
    #[serde(default)]
    pub agent: Option<serde_norway::Value>,
}

/// Parses the file; the error says what to fix, with the file's name.
pub fn parse(text: &str) -> Result<ProjectConfig, String> {
    if text.trim().is_empty() {
        return Ok(ProjectConfig::default());
    }
    let mut config: ProjectConfig =
        serde_norway::from_str(text).map_err(|e| format!("{PATH} is not valid: {e}"))?;
    config.labels = normalize_labels("labels", &config.labels)
        .map_err(|e| format!("{PATH} is not valid: {e}"))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files() {
        let config = parse("pr_mode: stacked_pr\ndraft: true\nlabels: [a, b, A]\n").unwrap();
        assert_eq!(config.pr_mode, Some(PrMode::StackedPr));
        assert_eq!(config.draft, Some(true));
        assert_eq!(config.labels, ["a", "b"]);
        assert_eq!(parse("").unwrap(), ProjectConfig::default());
        assert_eq!(
            parse("# only a comment\n").unwrap(),
            ProjectConfig::default()
        );
        let err = parse("pr_mode: big\n").unwrap_err();
        assert!(err.contains(PATH) && err.contains("pr_mode"), "{err}");
        assert!(parse("prmode: manual\n").unwrap_err().contains("prmode"));
        assert!(parse("labels: ['']\n").is_err());
    }
}
