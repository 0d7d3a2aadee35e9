//! What can be done to an existing runbook, whoever asks: the REST API, a `/runbook …`
//! comment, GraphQL. Each operation checks the runbook's state, changes it, and says why
//! when it cannot; the caller has already checked who may act.

use crate::domain::lifecycle::{self, Leaf};
use crate::domain::{FollowUp, NewRunbook, PrMode, StepNumber, StepState};
use crate::engine::Engine;
use crate::github::{GitHubApp, GitHubError, Resolution};
use crate::store::{StepRecord, Store, StoreError, TokenInfo};

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("runbook {0} has no plan yet; execute it once its steps exist")]
    NoPlan(i64),
    #[error("`step` {step} is not a step of runbook {number}")]
    NoSuchStep { number: i64, step: StepNumber },
    #[error("runbook {0} has no unfinished steps to execute")]
    NothingToExecute(i64),
    #[error("runbook {0} has no failed step to retry")]
    NothingToRetry(i64),
    #[error("runbook {number} opens its pull requests itself (pr_mode {mode})")]
    NotManual { number: i64, mode: PrMode },
    #[error("runbook {0} has no commits yet to open a pull request with")]
    NoCommits(i64),
    #[error("runbook {0} does not exist")]
    NotFound(i64),
    #[error("the runbooks app is not installed on {org}/{repo}, or the repository does not exist")]
    NotInstalled { org: String, repo: String },
    #[error("no GitHub App is configured on this server")]
    NoGitHub,
    #[error("this API token may not act for organisation `{0}`")]
    Forbidden(String),
    /// GitHub answers the repository asked for as another owner's (it was transferred), and
    /// the token may not act for that owner. The owner is not named: the token's holder may
    /// not see that organisation.
    #[error(
        "this API token may not act for the organisation that owns {org}/{repo} now: GitHub \
         answers it as another organisation's repository (it was transferred)"
    )]
    ForbiddenOwner { org: String, repo: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
}

impl From<crate::engine::pulls::EffectError> for OpError {
    fn from(error: crate::engine::pulls::EffectError) -> Self {
        match error {
            crate::engine::pulls::EffectError::GitHub(e) => OpError::GitHub(e),
            crate::engine::pulls::EffectError::Store(e) => OpError::Store(e),
        }
    }
}

fn leaves(steps: &[StepRecord]) -> Vec<Leaf> {
    steps
        .iter()
        .filter(|s| s.is_leaf)
        .map(|s| Leaf {
            number: s.number.clone(),
            state: s.state,
        })
        .collect()
}

/// Whether an API token may see and act on repositories of `org` (compared without regard to
/// case, as GitHub compares logins).
pub fn may_act_for(token: &TokenInfo, org: &str) -> bool {
    token.orgs.iter().any(|o| o.eq_ignore_ascii_case(org))
}

/// Stores a new runbook (already validated) and answers its number. `by`, the API token
/// asking, must be allowed to act for the repository's organisation. With a GitHub App, the
/// repository must be one the app is installed on; it is recorded under the name GitHub
/// gives it, and when that is another owner's (GitHub answers a transferred repository's old
/// name with the repository itself), the token must be allowed to act for that owner too. A
/// missing target branch becomes the default branch now, so a later change of the default
/// branch does not move the runbook's work. The caller wakes the engine.
pub async fn create_runbook(
    store: &dyn Store,
    github: Option<&GitHubApp>,
    new: &mut NewRunbook,
    by: Option<&TokenInfo>,
) -> Result<i64, OpError> {
    if let Some(token) = by
        && !may_act_for(token, &new.org)
    {
        return Err(OpError::Forbidden(new.org.clone()));
    }
    if let Some(github) = github {
        match github.resolve(&new.org, &new.repo).await? {
            Resolution::Found(repo) => {
                if let Some((owner, name)) = repo.full_name.split_once('/') {
                    if let Some(token) = by
                        && !may_act_for(token, owner)
                    {
                        return Err(OpError::ForbiddenOwner {
                            org: new.org.clone(),
                            repo: new.repo.clone(),
                        });
                    }
                    if !owner.eq_ignore_ascii_case(&new.org)
                        || !name.eq_ignore_ascii_case(&new.repo)
                    {
                        tracing::info!(asked = %format_args!("{}/{}", new.org, new.repo), repository = %repo.full_name, "GitHub answers the repository under another name");
                        new.org = owner.to_string();
                        new.repo = name.to_string();
                    }
                }
                new.target_branch.get_or_insert(repo.default_branch);
            }
            Resolution::NotInstalled => {
                return Err(OpError::NotInstalled {
                    org: new.org.clone(),
                    repo: new.repo.clone(),
                });
            }
        }
    }
    let number = store.create_runbook(new, by.map(|token| token.id)).await?;
    tracing::info!(runbook = number, repo = %format_args!("{}/{}", new.org, new.repo), "runbook created");
    Ok(number)
}

/// Records a follow-up instruction (validated): new steps on the same runbook, its
/// description replaced and its labels merged. The caller wakes the engine.
pub async fn update_runbook(
    store: &dyn Store,
    number: i64,
    follow_up: &FollowUp,
) -> Result<(), OpError> {
    if !store.add_follow_up(number, follow_up).await? {
        return Err(OpError::NotFound(number));
    }
    tracing::info!(runbook = number, "follow-up recorded");
    Ok(())
}

/// Queues waiting or failed leaves, lifting a cancellation.
async fn queue(store: &dyn Store, number: i64, steps: &[StepNumber]) -> Result<(), OpError> {
    store.set_cancel_requested(number, false).await?;
    store
        .transition_steps(
            number,
            steps,
            &[StepState::NotStarted, StepState::Failed],
            StepState::Queued,
        )
        .await?;
    Ok(())
}

/// Queues every unfinished step, or, with `up_to`, that step (all leaves under it) and every
/// unfinished step before it, so order is kept.
pub async fn execute(
    store: &dyn Store,
    number: i64,
    up_to: Option<&StepNumber>,
) -> Result<(), OpError> {
    let steps = store.steps(number).await?;
    if steps.is_empty() {
        return Err(OpError::NoPlan(number));
    }
    let Some(to_queue) = lifecycle::to_execute(&leaves(&steps), up_to) else {
        return Err(match up_to {
            Some(step) => OpError::NoSuchStep {
                number,
                step: step.clone(),
            },
            None => OpError::NothingToExecute(number),
        });
    };
    if to_queue.is_empty() {
        return Err(OpError::NothingToExecute(number));
    }
    queue(store, number, &to_queue).await
}

/// Runs the failed steps and the not-started ones after them again; a plan that could not
/// be made is made again (for a follow-up, its prompt is queued again as a follow-up).
pub async fn retry(store: &dyn Store, number: i64) -> Result<(), OpError> {
    let steps = store.steps(number).await?;
    store.set_cancel_requested(number, false).await?;
    let plan_failures: Vec<&StepRecord> = steps.iter().filter(|s| s.kind == "plan").collect();
    if !plan_failures.is_empty() {
        let others = steps.len() > plan_failures.len();
        store.remove_plan_failures(number).await?;
        if others {
            for failure in plan_failures {
                store.add_follow_up_prompt(number, &failure.details).await?;
            }
        }
        return Ok(());
    }
    let to_queue = lifecycle::to_retry(&leaves(&steps));
    if to_queue.is_empty() {
        return Err(OpError::NothingToRetry(number));
    }
    queue(store, number, &to_queue).await
}

/// Stops the runbook: the running step fails with `cancelled`, queued steps wait.
pub async fn cancel(store: &dyn Store, number: i64) -> Result<(), OpError> {
    store.set_cancel_requested(number, true).await?;
    let steps = store.steps(number).await?;
    let queued = lifecycle::to_unqueue(&leaves(&steps));
    store
        .transition_steps(number, &queued, &[StepState::Queued], StepState::NotStarted)
        .await?;
    Ok(())
}

/// Opens the pull request of a `manual` runbook's branch now; answers its number.
pub async fn open_pull_request(
    store: &dyn Store,
    engine: Option<&Engine>,
    number: i64,
) -> Result<u64, OpError> {
    let runbook = store
        .runbook(number)
        .await?
        .ok_or(OpError::NotFound(number))?;
    if runbook.pr_mode != Some(PrMode::Manual) {
        return Err(OpError::NotManual {
            number,
            mode: runbook.pr_mode.unwrap_or(PrMode::SinglePr),
        });
    }
    let engine = engine.ok_or(OpError::NoGitHub)?;
    match engine.open_manual_pull(&runbook).await? {
        Some(pull) => Ok(pull),
        None => Err(OpError::NoCommits(number)),
    }
}

/// How a step is shown: a leaf's state, or for a parent the status of the leaves under it
/// (`partially_completed` and so on).
pub fn shown_state(steps: &[StepRecord], step: &StepRecord) -> &'static str {
    if step.is_leaf {
        return step.state.as_str();
    }
    let under = steps
        .iter()
        .filter(|s| s.is_leaf && s.number.is_within(&step.number))
        .map(|s| s.state);
    crate::domain::status(&crate::domain::StepCounts::from_states(under)).as_str()
}
