//! A repository's setup: the commands `.github/runbooks.yml` asks to run in a fresh working
//! tree before a runbook's first step (`setup`, `on_failure`, `cache`), and what happened when
//! they ran. Pure data; the engine runs them (`engine::setup`), the store keeps both.

use std::fmt;
use std::path::{Component, Path};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a repository's setup is, as its project configuration says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupConfig {
    /// Shell commands (`sh -c`), run one after the other in the tree; the first failure
    /// stops them.
    pub commands: Vec<String>,
    pub on_failure: OnFailure,
    pub cache: Option<CacheConfig>,
}

/// What a failed setup does to the step about to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The step fails with the setup's error (the default).
    #[default]
    Fail,
    /// The steps run anyway; the setup is reported failed.
    Warn,
}

/// Directories of the tree kept per repository, keyed by the contents of some files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Files of the tree whose names and contents (with the commands) make the key, e.g.
    /// `package-lock.json`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// What is saved after a successful setup and restored instead of running it.
    pub paths: Vec<String>,
}

/// Most commands a setup may have.
pub const MAX_COMMANDS: usize = 32;
/// Most files a cache key or cached paths a cache may name.
pub const MAX_CACHE_ENTRIES: usize = 16;

impl SetupConfig {
    /// Checks what a file cannot say in its types: commands are non-empty text, cache keys
    /// and paths are relative paths inside the tree. The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.commands.is_empty() {
            return Err("`setup` must list at least one command".into());
        }
        if self.commands.len() > MAX_COMMANDS {
            return Err(format!("`setup` has more than {MAX_COMMANDS} commands"));
        }
        for (i, command) in self.commands.iter().enumerate() {
            if command.trim().is_empty() {
                return Err(format!("`setup` command {} is empty", i + 1));
            }
            if command.contains('\0') {
                return Err(format!("`setup` command {} holds a NUL character", i + 1));
            }
        }
        if let Some(cache) = &self.cache {
            if cache.paths.is_empty() {
                return Err("`cache.paths` must list at least one path".into());
            }
            for (field, list) in [("cache.keys", &cache.keys), ("cache.paths", &cache.paths)] {
                if list.len() > MAX_CACHE_ENTRIES {
                    return Err(format!(
                        "`{field}` has more than {MAX_CACHE_ENTRIES} entries"
                    ));
                }
                for path in list {
                    check_tree_path(path).map_err(|why| format!("`{field}`: `{path}` {why}"))?;
                }
            }
        }
        Ok(())
    }
}

/// A path inside the working tree, as a cache names one: relative, no `..`, not the tree
/// itself, nothing under `.git`.
pub fn check_tree_path(path: &str) -> Result<(), &'static str> {
    if path.trim().is_empty() {
        return Err("is empty");
    }
    if path.contains('\0') {
        return Err("holds a NUL character");
    }
    let mut normal = 0;
    for component in Path::new(path).components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err("is absolute: give a path relative to the repository's root");
            }
            Component::ParentDir => return Err("climbs with `..`: stay inside the repository"),
            Component::CurDir => {}
            Component::Normal(part) => {
                if part.eq_ignore_ascii_case(".git") {
                    return Err("names a `.git` directory");
                }
                normal += 1;
            }
        }
    }
    if normal == 0 {
        return Err("names the whole repository: name directories inside it");
    }
    Ok(())
}

/// How far a runbook's setup got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SetupStatus {
    InProgress,
    Completed,
    Failed,
}

/// What the cache did for a setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// An entry was restored; no command ran.
    Hit,
    /// No entry: the commands ran (and their paths were saved when they succeeded).
    Miss,
    /// The repository's setup has no cache.
    None,
}

macro_rules! names {
    ($ty:ty, $what:literal, $($variant:path => $name:literal),* $(,)?) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($variant => $name),* }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($variant),)*
                    _ => Err(format!(concat!("unknown ", $what, " `{}`"), s)),
                }
            }
        }
    };
}

names!(SetupStatus, "setup status",
    SetupStatus::InProgress => "in_progress",
    SetupStatus::Completed => "completed",
    SetupStatus::Failed => "failed",
);
names!(CacheOutcome, "setup cache outcome",
    CacheOutcome::Hit => "hit",
    CacheOutcome::Miss => "miss",
    CacheOutcome::None => "none",
);

/// What a runbook's setup did, as reported next to its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupReport {
    pub status: SetupStatus,
    pub cache: CacheOutcome,
    /// The commands and their output (bounded by the output cap), or what the cache did.
    pub log: String,
    pub wall_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(commands: &[&str], cache: Option<(&[&str], &[&str])>) -> SetupConfig {
        SetupConfig {
            commands: commands.iter().map(|c| c.to_string()).collect(),
            on_failure: OnFailure::Fail,
            cache: cache.map(|(keys, paths)| CacheConfig {
                keys: keys.iter().map(|k| k.to_string()).collect(),
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        }
    }

    #[test]
    fn configurations_are_checked() {
        assert!(config(&["npm ci"], None).validate().is_ok());
        assert!(
            config(
                &["npm ci"],
                Some((&["package-lock.json"], &["node_modules", "./a/b"]))
            )
            .validate()
            .is_ok()
        );
        assert!(config(&[], None).validate().is_err());
        assert!(config(&["  "], None).validate().unwrap_err().contains("1"));
        for bad in [
            "../x",
            "../../x",
            "/etc",
            "a/../../b",
            ".",
            "",
            ".git/x",
            "a/.GIT",
        ] {
            let err = config(&["x"], Some((&[], &[bad])))
                .validate()
                .expect_err(bad);
            assert!(err.contains("cache.paths"), "{err}");
            let err = config(&["x"], Some((&[bad], &["ok"])))
                .validate()
                .expect_err(bad);
            assert!(err.contains("cache.keys"), "{err}");
        }
        assert!(config(&["x"], Some((&["k"], &[]))).validate().is_err());
    }

    #[test]
    fn names_round_trip() {
        for status in [
            SetupStatus::InProgress,
            SetupStatus::Completed,
            SetupStatus::Failed,
        ] {
            assert_eq!(status.as_str().parse::<SetupStatus>(), Ok(status));
        }
        for cache in [CacheOutcome::Hit, CacheOutcome::Miss, CacheOutcome::None] {
            assert_eq!(cache.as_str().parse::<CacheOutcome>(), Ok(cache));
        }
        assert!("done".parse::<SetupStatus>().is_err());
    }
}
