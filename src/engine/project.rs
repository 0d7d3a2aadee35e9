//! Project configuration: `.github/runbooks.yml` in the repository, read when a runbook is
//! planned. It supplies what the request left out (`pr_mode`, `draft`) and labels added to
//! the request's; the server's defaults apply when neither says anything. It also names the
//! repository's setup (`setup`, `on_failure`, `cache`: see [`crate::domain::setup`]), kept
//! with the runbook and run before its first step in a fresh working tree.
//!
//! ```yaml
//! pr_mode: stacked_pr   # manual | single_pr | stacked_pr
//! draft: true
//! labels: [runbook, automated]
//! setup: ["npm ci"]
//! on_failure: fail      # fail | warn
//! cache: {keys: [package-lock.json], paths: [node_modules]}
//! ```

use serde::Deserialize;

use crate::domain::runbook::normalize_labels;
use crate::domain::{CacheConfig, OnFailure, PrMode, SetupConfig};

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
    /// Commands run in a fresh working tree before the runbook's first step.
    #[serde(default)]
    pub setup: Vec<String>,
    /// What a failed setup does (default `fail`).
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    /// Directories kept per repository instead of running the setup again.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
}

impl ProjectConfig {
    /// The repository's setup, when the file asks for one.
    pub fn setup(&self) -> Option<SetupConfig> {
        (!self.setup.is_empty()).then(|| SetupConfig {
            commands: self.setup.clone(),
            on_failure: self.on_failure.unwrap_or_default(),
            cache: self.cache.clone(),
        })
    }
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
    match config.setup() {
        Some(setup) => setup
            .validate()
            .map_err(|e| format!("{PATH} is not valid: {e}"))?,
        None if config.cache.is_some() || config.on_failure.is_some() => {
            return Err(format!(
                "{PATH} is not valid: `cache` and `on_failure` need `setup` commands"
            ));
        }
        None => {}
    }
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
        assert_eq!(parse("labels: []\n").unwrap().setup(), None);
    }

    #[test]
    fn setup() {
        let config = parse(
            "setup: [\"npm ci\", \"make tools\"]\non_failure: warn\n\
             cache: {keys: [package-lock.json], paths: [node_modules]}\n",
        )
        .unwrap();
        assert_eq!(
            config.setup(),
            Some(SetupConfig {
                commands: vec!["npm ci".into(), "make tools".into()],
                on_failure: OnFailure::Warn,
                cache: Some(CacheConfig {
                    keys: vec!["package-lock.json".into()],
                    paths: vec!["node_modules".into()],
                }),
            })
        );
        let plain = parse("setup:\n  - make\n").unwrap().setup().unwrap();
        assert_eq!(plain.on_failure, OnFailure::Fail);
        assert_eq!(plain.cache, None);

        for (text, names) in [
            ("setup: [make]\non_failure: sometimes\n", "on_failure"),
            ("setup: ['  ']\n", "setup"),
            ("setup: make\n", "setup"),
            ("setup: [make]\ncache: {paths: [../../x]}\n", "cache.paths"),
            ("setup: [make]\ncache: {paths: [/etc]}\n", "cache.paths"),
            (
                "setup: [make]\ncache: {keys: [../lock], paths: [x]}\n",
                "cache.keys",
            ),
            ("setup: [make]\ncache: {paths: [x], more: 1}\n", "more"),
            ("setup: [make]\ncache: {keys: [x]}\n", "paths"),
            ("cache: {paths: [x]}\n", "setup"),
            ("on_failure: warn\n", "setup"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(PATH) && err.contains(names), "{text}: {err}");
        }
    }
}
