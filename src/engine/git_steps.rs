//! One leaf step in git: prepare the working tree on the right branch, set it up when it is
//! fresh (the repository's setup, [`super::setup`]), let the agent work, commit what changed
//! and push it.

use secrecy::SecretString;

use crate::agent::StepTask;
use crate::domain::{PrMode, RunbookNumber, StepNumber, Usage};
use crate::git::{Identity, Remote, Worktree};
use crate::github::RepoInfo;
use crate::store::{RunbookRecord, StepEnd, StepRecord};

use super::{Engine, branches, commit_message, is_commit_of, tops_with_commits};

fn failed(error: impl std::fmt::Display) -> StepEnd {
    StepEnd::Failed {
        error: error.to_string(),
        log: String::new(),
    }
}

/// How many times the machinery of a step is tried before the step fails.
const MACHINERY_ATTEMPTS: u32 = 5;
/// The wait before the second attempt; it doubles for each one after.
const MACHINERY_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the step; what its agent used is added to `used` as each run of the agent ends (so a
/// caller that stops waiting keeps what the finished runs used).
///
/// A retry of the machinery after the agent ran (the commit or the push failed) runs the
/// agent again, from a fresh tree: both runs really used the model and the CPU, and each is
/// added once, when it ends. The wall time is the caller's, measured around all of it.
pub(super) async fn execute(
    engine: &Engine,
    number: RunbookNumber,
    step: &StepRecord,
    used: &mut Usage,
) -> StepEnd {
    // An agent's failure is the step's; a failure of the machinery around it (GitHub, git,
    // the working tree) is tried again, from a freshly prepared tree, with a growing wait
    // (1, 2, 4, 8 s) before it fails the step: such failures are usually passing (a 502, a
    // rate limit on git), and each attempt starts from the branch as pushed, so nothing is
    // committed twice.
    let mut attempt = 1;
    loop {
        match try_execute(engine, number, step, used).await {
            Ok(end) => return end,
            Err(end) if attempt >= MACHINERY_ATTEMPTS => return end,
            Err(end) => {
                let error = match &end {
                    StepEnd::Failed { error, .. } => error.as_str(),
                    StepEnd::Completed { .. } => "",
                };
                let wait = MACHINERY_BACKOFF * 2u32.pow(attempt - 1);
                tracing::warn!(runbook = number.get(), step = %step.number, attempt, %error, ?wait, "step machinery failed; trying again");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

/// A runbook's working tree, prepared for a step, with what it took.
pub(super) struct Prepared {
    pub runbook: RunbookRecord,
    pub repo: RepoInfo,
    pub token: SecretString,
    pub worktree: Worktree,
}

/// Prepares the runbook's working tree on the branch `step` works on (see [`branches`]),
/// from the mirror brought up to date.
pub(super) async fn prepare(
    engine: &Engine,
    number: RunbookNumber,
    step: &StepNumber,
) -> Result<Prepared, String> {
    let runbook = engine
        .store
        .runbook(number)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the runbook no longer exists".to_string())?;
    let repo = engine
        .github
        .installed_repo(&runbook.org, &runbook.repo)
        .await
        .map_err(|e| e.to_string())?;
    let token = engine
        .github
        .git_token(&repo)
        .await
        .map_err(|e| e.to_string())?;
    let remote = Remote {
        full_name: repo.full_name.as_str(),
        clone_url: &repo.clone_url,
        token: &token,
    };
    let target = runbook
        .target_branch
        .clone()
        .unwrap_or_else(|| repo.default_branch.clone());
    let mode = runbook.pr_mode.unwrap_or(PrMode::SinglePr);
    let steps = engine
        .store
        .steps(number)
        .await
        .map_err(|e| e.to_string())?;
    let (branch, base) = branches(number, mode, step, &target, &tops_with_commits(&steps));
    let worktree = engine
        .repos
        .worktree(&remote, number.get(), &branch, &base)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Prepared {
        runbook,
        repo,
        token,
        worktree,
    })
}

/// The working tree a plan is made in: the one the plan's first step (`after + 1`) will work
/// in. Preparing it is machinery: a passing failure is tried again, like a step's.
pub(super) async fn prepare_for_plan(
    engine: &Engine,
    number: RunbookNumber,
    after: u32,
) -> Result<Worktree, String> {
    let first = StepNumber::top(after.saturating_add(1));
    let mut attempt = 1;
    loop {
        match prepare(engine, number, &first).await {
            Ok(prepared) => return Ok(prepared.worktree),
            Err(error) if attempt >= MACHINERY_ATTEMPTS => {
                return Err(format!(
                    "the working tree to plan in could not be prepared: {error}"
                ));
            }
            Err(error) => {
                let wait = MACHINERY_BACKOFF * 2u32.pow(attempt - 1);
                tracing::warn!(runbook = number.get(), attempt, %error, ?wait, "working tree for planning not prepared; trying again");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

async fn try_execute(
    engine: &Engine,
    number: RunbookNumber,
    step: &StepRecord,
    used: &mut Usage,
) -> Result<StepEnd, StepEnd> {
    let Prepared {
        runbook,
        repo,
        token,
        worktree,
    } = prepare(engine, number, &step.number)
        .await
        .map_err(failed)?;
    let bot = engine.github.bot(&repo).await.map_err(failed)?;
    let identity = Identity {
        name: bot.name,
        email: bot.email,
    };
    let remote = Remote {
        full_name: repo.full_name.as_str(),
        clone_url: &repo.clone_url,
        token: &token,
    };

    // A step interrupted after its push: the branch already ends with its commit. Adopted
    // only when the app made it (its trailers are plain text anyone pushing to the branch
    // could write): author and committer must be the app's bot.
    let head = worktree.head_commit().await.map_err(failed)?;
    if is_commit_of(&head.message, number, &step.number) {
        if head.author == identity && head.committer == identity {
            tracing::info!(runbook = number.get(), step = %step.number, "the step's commit is already pushed");
            return Ok(StepEnd::Completed {
                commit_sha: Some(head.sha),
                log: "already committed and pushed before an interruption".into(),
            });
        }
        tracing::warn!(
            runbook = number.get(),
            step = %step.number,
            sha = %head.sha,
            "the branch ends with a commit naming this step that the app did not make; running the step"
        );
    }

    // Before the agent, after the check above: a step found already pushed needs no setup.
    if let Some(end) = super::setup::ensure(engine, number, &runbook, &worktree).await? {
        return Ok(end);
    }

    let task = StepTask {
        runbook: number.get(),
        number: step.number.clone(),
        title: step.title.clone(),
        details: step.details.clone(),
        runbook_prompt: runbook.prompt.clone(),
    };
    let outcome = match engine.agent.execute(&task, worktree.path()).await {
        Ok(outcome) => {
            *used = *used + outcome.usage;
            outcome
        }
        Err(e) => {
            *used = *used + e.usage();
            let log = e.log().unwrap_or_default().to_string();
            return Ok(StepEnd::Failed {
                error: e.to_string(),
                log,
            });
        }
    };
    let message = commit_message(
        number,
        &step.number,
        &step.title,
        &step.details,
        runbook.author_email.as_deref(),
    );
    let commit = worktree
        .commit_all(&message, &identity)
        .await
        .map_err(failed)?;
    if commit.is_some() {
        worktree.push(&remote).await.map_err(failed)?;
    }
    // The commit is pushed: the step is done. Its pull request is the engine's business
    // once the step is recorded (`Engine::reconcile`), the same for a step that just ran and
    // one found already pushed after a crash.
    Ok(StepEnd::Completed {
        commit_sha: commit,
        log: outcome.log,
    })
}
