//! The repository's setup (`setup`, `on_failure`, `cache` in `.github/runbooks.yml`, kept
//! with the runbook when it was planned), run before a runbook's first step in a fresh
//! working tree.
//!
//! - **When**: the step runner calls [`ensure`] after the tree is prepared and before the
//!   agent runs. A tree that was set up carries a mark in its slot, outside the tree (see
//!   `git::Worktree::is_set_up`), so later steps of the runbook skip it; a released or
//!   recycled tree forgets it, so a runbook picked up again in a fresh tree (after a crash, a
//!   takeover, a retry of a failed runbook, a follow-up) is set up again.
//! - **How**: each command as `sh -c CMD` in the tree, through the same sandbox and jail as
//!   the agents' commands (scrubbed environment, process group, resource limits, bounded
//!   output), one after the other, all of them within one step timeout. The first failure
//!   (an exit status other than 0, a signal, the timeout) ends the setup.
//! - **Nothing of it is committed**: afterwards tracked files it changed are checked out
//!   again and untracked paths it made are excluded from commits in the engine's own git
//!   directory (`git::Worktree::keep_setup_out_of_commits`); the steps see them.
//! - **Cache** ([`super::setup_cache`]): a key that has an entry restores it and runs no
//!   command (`hit`); otherwise the commands run and, when they succeed, the paths are saved
//!   (`miss`) — before any step runs. A cache the tree makes unusable when it is looked up
//!   (a key file leading out of the tree, a cached path restored through a symbolic link)
//!   fails the setup; an entry that cannot be saved (a cached path the commands made go
//!   through a link) is only noted in the log: the setup itself succeeded.
//! - **Failure**: with `on_failure: fail` the step about to run fails with the setup's
//!   error and the tail of its output; with `warn` the steps run anyway.
//! - **Reported** with the runbook (`store::SetupStore`): in progress when it starts, then
//!   completed or failed, with the cache's outcome, the log and the wall time.

use std::time::{Duration, Instant};

use crate::agent::sandbox::{Exit, SandboxCommand};
use crate::agent::{keep_tail, short_tail};
use crate::domain::{
    CacheOutcome, OnFailure, RunbookNumber, SetupConfig, SetupReport, SetupStatus,
};
use crate::git::Worktree;
use crate::store::{RunbookRecord, StepEnd};

use super::Engine;
use super::setup_cache::{self, CacheError, RepoSetupCache};

/// Lines and bytes of a failed command's output quoted in the step's error.
const MESSAGE_TAIL_LINES: usize = 10;
const MESSAGE_TAIL_BYTES: usize = 2000;

fn machinery(error: impl std::fmt::Display) -> StepEnd {
    StepEnd::Failed {
        error: error.to_string(),
        log: String::new(),
    }
}

/// Sets the runbook's tree up when its repository has a setup and the tree has not been set
/// up yet. `Ok(None)`: the step may run. `Ok(Some(end))`: the step fails with `end` (a
/// failed setup with `on_failure: fail`). `Err(end)`: the machinery failed (the store, git),
/// to be tried again like any other.
pub(super) async fn ensure(
    engine: &Engine,
    number: RunbookNumber,
    runbook: &RunbookRecord,
    worktree: &Worktree,
) -> Result<Option<StepEnd>, StepEnd> {
    if worktree.is_set_up() {
        return Ok(None);
    }
    let Some(config) = engine.store.setup_config(number).await.map_err(machinery)? else {
        return Ok(None);
    };
    let started = Instant::now();
    let limits = &engine.config.limits;
    let tree = worktree.path().to_path_buf();
    let mut log = String::new();

    let (outcome, cache) = prepare_cache(engine, runbook, &config, &tree).await;
    let cache_outcome = match &outcome {
        Prepared::Hit => CacheOutcome::Hit,
        Prepared::Miss(_) => CacheOutcome::Miss,
        Prepared::None | Prepared::Refused(_) => CacheOutcome::None,
    };
    let report = |status, log: &str| SetupReport {
        status,
        cache: cache_outcome,
        log: keep_tail(log.to_string(), limits.output_cap),
        wall_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
    };
    engine
        .store
        .record_setup(number, &report(SetupStatus::InProgress, ""))
        .await
        .map_err(machinery)?;
    tracing::info!(runbook = number.get(), cache = %cache_outcome, "running the repository's setup");

    let error = match outcome {
        Prepared::Hit => {
            log.push_str("[runbooks] the cache had this setup: restored, no command ran\n");
            None
        }
        Prepared::Refused(why) => {
            log.push_str(&format!("[runbooks] {why}\n"));
            Some(why)
        }
        Prepared::None | Prepared::Miss(_) => {
            let failure = run_commands(engine, number, &config.commands, &tree, &mut log).await;
            if failure.is_none()
                && let (Prepared::Miss(key), Some((cache, cache_config))) = (&outcome, &cache)
            {
                save(cache, key, cache_config, &tree, &mut log).await;
            }
            failure
        }
    };

    let status = if error.is_none() {
        SetupStatus::Completed
    } else {
        SetupStatus::Failed
    };
    let fails_the_step = error.is_some() && config.on_failure == OnFailure::Fail;
    if !fails_the_step {
        let leftovers = worktree
            .keep_setup_out_of_commits()
            .await
            .map_err(machinery)?;
        for path in &leftovers.restored {
            log.push_str(&format!(
                "[runbooks] the setup changed `{path}`, a tracked file: restored, so that no step commits the change\n"
            ));
        }
        if !leftovers.excluded.is_empty() {
            log.push_str(&format!(
                "[runbooks] kept out of commits: {}\n",
                leftovers.excluded.join(", ")
            ));
        }
        for path in &leftovers.removed {
            log.push_str(&format!(
                "[runbooks] removed `{}`: its name cannot be kept out of commits\n",
                path.escape_debug()
            ));
        }
        worktree.mark_set_up().await.map_err(machinery)?;
    }
    let done = report(status, &log);
    engine
        .store
        .record_setup(number, &done)
        .await
        .map_err(machinery)?;
    tracing::info!(runbook = number.get(), %status, wall_ms = done.wall_ms, "the repository's setup ended");
    match error {
        Some(error) if fails_the_step => Ok(Some(StepEnd::Failed {
            error: format!("the repository's setup failed: {error}"),
            log: done.log,
        })),
        Some(error) => {
            tracing::warn!(runbook = number.get(), %error, "the repository's setup failed; running the steps anyway (on_failure: warn)");
            Ok(None)
        }
        None => Ok(None),
    }
}

/// What the cache offers before the commands run.
enum Prepared {
    /// The repository's setup has no cache.
    None,
    /// The entry was restored.
    Hit,
    /// No entry under this key: the commands run, and are saved under it.
    Miss(String),
    /// The cache cannot be used; the setup fails with this.
    Refused(String),
}

type CacheSite = (RepoSetupCache, crate::domain::CacheConfig);

async fn prepare_cache(
    engine: &Engine,
    runbook: &RunbookRecord,
    config: &SetupConfig,
    tree: &std::path::Path,
) -> (Prepared, Option<CacheSite>) {
    let Some(cache_config) = config.cache.clone() else {
        return (Prepared::None, None);
    };
    let cache = match RepoSetupCache::new(engine.repos.root(), &runbook.org, &runbook.repo) {
        Ok(cache) => cache,
        Err(e) => return (Prepared::Refused(e.to_string()), None),
    };
    let (commands, tree) = (config.commands.clone(), tree.to_path_buf());
    let site = (cache.clone(), cache_config.clone());
    let looked = tokio::task::spawn_blocking(move || {
        let key = setup_cache::key(&commands, &cache_config, &tree)?;
        match cache.restore(&key, &cache_config, &tree) {
            Ok(true) => Ok(Prepared::Hit),
            Ok(false) => Ok(Prepared::Miss(key)),
            Err(CacheError::Io { .. }) => {
                // The restore may have written part of the paths: the commands run over
                // them, as they would over a tree a crash left half set up.
                Ok(Prepared::Miss(key))
            }
            Err(refused) => Err(refused),
        }
    })
    .await;
    let prepared = match looked {
        Ok(Ok(prepared)) => prepared,
        Ok(Err(CacheError::Refused(why))) => Prepared::Refused(why),
        Ok(Err(e)) => {
            tracing::warn!(runbook = runbook.number.get(), error = %e, "the setup cache could not be read; running the setup");
            return (Prepared::None, None);
        }
        Err(e) => Prepared::Refused(format!("the setup cache could not be read: {e}")),
    };
    (prepared, Some(site))
}

/// Saves the cached paths after a successful setup, before any step runs. A failure is
/// noted in the log; the setup itself succeeded.
async fn save(
    cache: &RepoSetupCache,
    key: &str,
    config: &crate::domain::CacheConfig,
    tree: &std::path::Path,
    log: &mut String,
) {
    let (cache, key, config, tree) = (
        cache.clone(),
        key.to_string(),
        config.clone(),
        tree.to_path_buf(),
    );
    let saved = tokio::task::spawn_blocking(move || cache.save(&key, &config, &tree)).await;
    match saved {
        Ok(Ok(count)) => log.push_str(&format!(
            "[runbooks] saved {count} cached path(s) for later runbooks\n"
        )),
        Ok(Err(e)) => log.push_str(&format!("[runbooks] the cache was not saved: {e}\n")),
        Err(e) => log.push_str(&format!("[runbooks] the cache was not saved: {e}\n")),
    }
}

/// Runs the commands one after the other in the jail, within one step timeout; the log gets
/// each command and its output. Returns why the setup failed, if it did.
async fn run_commands(
    engine: &Engine,
    number: RunbookNumber,
    commands: &[String],
    tree: &std::path::Path,
    log: &mut String,
) -> Option<String> {
    let limits = &engine.config.limits;
    let deadline = Instant::now() + limits.step_timeout;
    for command in commands {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Some(timed_out(command, limits.step_timeout));
        }
        let run = SandboxCommand::new("sh", tree)
            .arg("-c")
            .arg(command)
            .env("RUNBOOKS_RUNBOOK", number.to_string())
            .env("RUNBOOKS_SETUP", "1")
            .timeout(remaining)
            .output_cap(limits.output_cap)
            .jail(&limits.jail)
            .run()
            .await;
        let run = match run {
            Ok(run) => run,
            Err(e) => return Some(format!("`{command}` could not be run: {e}")),
        };
        let output = run.output.text();
        log.push_str(&format!("$ {command}\n{output}"));
        if !output.is_empty() && !output.ends_with('\n') {
            log.push('\n');
        }
        match run.exit {
            Exit::Code(0) => {}
            Exit::TimedOut => return Some(timed_out(command, limits.step_timeout)),
            exit => {
                let tail = short_tail(&output, MESSAGE_TAIL_LINES, MESSAGE_TAIL_BYTES);
                return Some(if tail.is_empty() {
                    format!("`{command}` {exit} (no output)")
                } else {
                    format!("`{command}` {exit}; last lines of its output:\n{tail}")
                });
            }
        }
    }
    None
}

fn timed_out(command: &str, after: Duration) -> String {
    format!(
        "`{command}` ran out of time: the whole setup must end within the step timeout ({})",
        humantime::format_duration(after)
    )
}
