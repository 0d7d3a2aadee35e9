//! The application layer: what can be done with runbooks, whoever asks — the REST API,
//! GraphQL, the dashboard's forms, a `/runbook …` comment. Each front door turns its request
//! into a call on [`App`] with the [`Actor`] asking; the command checks that the actor may
//! see the runbook (one rule, [`Actor::may_act_for`]), checks the runbook's state, changes
//! it, wakes the engine, and says why when it cannot ([`OpError`], with the HTTP status of
//! each case in one place, [`OpError::status`]).

use std::sync::Arc;

use axum::http::StatusCode;

use crate::domain::lifecycle::{self, Leaf};
use crate::domain::{
    FieldError, FollowUpRequest, NewRunbook, PrMode, RepoName, RunbookNumber, RunbookRequest,
    RunbookStatus, RunbookSummary, StepCounts, StepKind, StepNumber, StepState,
};
use crate::engine::Engine;
use crate::github::{GitHubApp, GitHubError, Resolution};
use crate::store::{
    NewThread, RunbookFilter, RunbookRecord, StepRecord, Store, StoreError, TokenInfo,
    budget_refusal, now_ms,
};

/// Who asks, and so which runbooks they may see and act on.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// An API token: its organisations. `confirm`, the token's hash, is checked against the
    /// database in the same round trip as the runbook's read, so a token this process has
    /// cached but another revoked stops at once (REST and GraphQL pass it); a dashboard
    /// session's token is confirmed with its session and passes `None`.
    Token {
        token: &'a TokenInfo,
        confirm: Option<&'a str>,
    },
    /// Someone GitHub says may write to this repository (`owner/name`): the author of a
    /// `/runbook` comment, whose permission the comment handler asked GitHub for.
    Writer { repository: &'a RepoName },
}

impl Actor<'_> {
    /// Whether the actor may see and act on runbooks of `org/repo` (organisations compared
    /// without regard to case, as GitHub compares logins).
    pub fn may_act_for(&self, org: &str, repo: &str) -> bool {
        match self {
            Actor::Token { token, .. } => may_act_for(token, org),
            Actor::Writer { repository } => repository.is(org, repo),
        }
    }
}

/// A command on an existing runbook's steps, whichever front door it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue every unfinished step, or with `up_to` that step and the unfinished ones before.
    Execute { up_to: Option<StepNumber> },
    /// Run the failed steps and the not-started ones after them again.
    Retry,
    /// Stop: the running step fails with `cancelled`, queued steps wait.
    Cancel,
    /// Open a `manual` runbook's pull request now.
    OpenPullRequest,
}

/// The application: the store, GitHub (when configured) and the engine (when this process
/// runs one), and the commands every front door shares.
#[derive(Clone)]
pub struct App {
    store: Arc<dyn Store>,
    github: Option<Arc<GitHubApp>>,
    engine: Option<Arc<Engine>>,
}

/// A runbook just created.
#[derive(Debug, Clone)]
pub struct Created {
    pub number: RunbookNumber,
    /// Whether this call created it (a comment handled again finds the one it started).
    pub new: bool,
    /// What was stored: the repository under the name GitHub gives it, the target branch
    /// filled in.
    pub runbook: NewRunbook,
}

impl App {
    pub fn new(
        store: Arc<dyn Store>,
        github: Option<Arc<GitHubApp>>,
        engine: Option<Arc<Engine>>,
    ) -> Self {
        Self {
            store,
            github,
            engine,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn github(&self) -> Option<&Arc<GitHubApp>> {
        self.github.as_ref()
    }

    pub fn engine(&self) -> Option<&Arc<Engine>> {
        self.engine.as_ref()
    }

    /// Tells the engine there is work (it also looks on its own, at its poll interval).
    pub fn wake(&self) {
        if let Some(engine) = &self.engine {
            engine.wake();
        }
    }

    /// The runbook's summary, when the actor may see it: [`OpError::NotFound`] alike for a
    /// missing runbook and another organisation's, so an actor never learns that one it may
    /// not see exists; [`OpError::TokenRevoked`] for a token found revoked.
    pub async fn visible(
        &self,
        number: RunbookNumber,
        actor: Actor<'_>,
    ) -> Result<RunbookSummary, OpError> {
        let confirm = match actor {
            Actor::Token { confirm, .. } => confirm,
            Actor::Writer { .. } => None,
        };
        let read = self.store.read_runbook(number, confirm).await?;
        if confirm.is_some() && !read.token_active {
            return Err(OpError::TokenRevoked);
        }
        match read.summary {
            Some(summary) if actor.may_act_for(&summary.org, &summary.repo) => Ok(summary),
            _ => Err(OpError::NotFound(number)),
        }
    }

    /// Checks the request and creates the runbook for a token: see [`create_runbook`].
    pub async fn create(
        &self,
        request: RunbookRequest,
        by: &TokenInfo,
    ) -> Result<Created, OpError> {
        let mut new = request.validate()?;
        let number =
            create_runbook(self.store.as_ref(), self.github.as_deref(), &mut new, by).await?;
        self.wake();
        Ok(Created {
            number,
            new: true,
            runbook: new,
        })
    }

    /// Checks the request and starts the runbook from a `/runbook` comment in `thread` (the
    /// commenter's permission and the repository checked by the comment handler), or finds
    /// the one this comment started already (the delivery handled again after a crash).
    pub async fn start_in_thread(
        &self,
        request: RunbookRequest,
        thread: &NewThread,
    ) -> Result<Created, OpError> {
        let new = request.validate()?;
        within_budget(self.store.as_ref(), &new.org).await?;
        let (number, created) = self.store.create_runbook_in_thread(&new, thread).await?;
        if created {
            tracing::info!(runbook = number.get(), repository = %thread.repository, issue = thread.issue_number, by = %thread.requested_by, "runbook started from a comment");
            self.wake();
        }
        Ok(Created {
            number,
            new: created,
            runbook: new,
        })
    }

    /// Checks the follow-up instruction and records it: see [`update_runbook`]. The
    /// request is checked before the runbook is looked up, as a malformed request is wrong
    /// whichever runbook it names.
    pub async fn follow_up(
        &self,
        number: RunbookNumber,
        actor: Actor<'_>,
        request: FollowUpRequest,
    ) -> Result<(), OpError> {
        let follow_up = request.validate()?;
        let summary = self.visible(number, actor).await?;
        within_budget(self.store.as_ref(), &summary.org).await?;
        update_runbook(self.store.as_ref(), number, &follow_up).await?;
        self.wake();
        Ok(())
    }

    /// The runbooks the actor may see that `query` asks for, newest first, a page at a time:
    /// the one listing behind GraphQL's `runbooks` and the dashboard's list. With a status
    /// wanted (computed from the steps), batches are looked through until the page is full,
    /// the runbooks run out, or [`MAX_SCANNED`] were seen; the page then says where to go on.
    pub async fn list(
        &self,
        actor: Actor<'_>,
        query: &RunbookQuery,
    ) -> Result<RunbookPage, OpError> {
        let mut filter = RunbookFilter {
            org: query.org.clone(),
            repository: query.repository.clone(),
            ..RunbookFilter::default()
        };
        match actor {
            Actor::Token { token, .. } => filter.visible_orgs = token.orgs.clone(),
            Actor::Writer { repository } => {
                filter.visible_orgs = vec![repository.owner().to_lowercase()];
                filter.org = Some(repository.owner().to_string());
                filter.repository = Some(repository.name().to_string());
            }
        }
        let first = query.first.max(1);
        let batch = match query.status {
            None => first + 1,
            Some(_) => (first + 1).max(LIST_BATCH),
        };
        let mut page = RunbookPage::default();
        let mut cursor = query.before;
        let mut scanned = 0;
        'scan: loop {
            let records = self
                .store
                .list_runbooks(&filter, cursor, batch as i64)
                .await?;
            let numbers: Vec<RunbookNumber> = records.iter().map(|r| r.number).collect();
            let mut steps = self.store.steps_of(&numbers).await?;
            let exhausted = records.len() < batch;
            for record in records {
                scanned += 1;
                cursor = Some(record.number);
                let steps = steps.remove(&record.number).unwrap_or_default();
                let counts =
                    StepCounts::from_states(steps.iter().filter(|s| s.is_leaf).map(|s| s.state));
                let status = crate::domain::status(&counts);
                if query.status.is_some_and(|wanted| wanted != status) {
                    continue;
                }
                if page.runbooks.len() == first {
                    // One more matches: the page is full, and the next starts after its last.
                    page.next_before = page.runbooks.last().map(|r| r.record.number);
                    break 'scan;
                }
                page.runbooks.push(Listed {
                    record,
                    steps,
                    counts,
                    status,
                });
            }
            if exhausted {
                break;
            }
            if scanned >= MAX_SCANNED {
                page.next_before = cursor;
                break;
            }
        }
        Ok(page)
    }

    /// Carries out `action` on the runbook (see [`execute`], [`retry`], [`cancel`],
    /// [`open_pull_request`]).
    pub async fn act(
        &self,
        number: RunbookNumber,
        actor: Actor<'_>,
        action: &Action,
    ) -> Result<(), OpError> {
        self.visible(number, actor).await?;
        let store = self.store.as_ref();
        match action {
            Action::Execute { up_to } => execute(store, number, up_to.as_ref()).await?,
            Action::Retry => retry(store, number).await?,
            Action::Cancel => cancel(store, number).await?,
            Action::OpenPullRequest => {
                open_pull_request(store, self.engine.as_deref(), number).await?;
            }
        }
        self.wake();
        Ok(())
    }
}

/// The most runbooks one listing looks through for a status before it answers what it has
/// found, with where to go on: a rare status among many runbooks costs pages, not one
/// unbounded scan.
pub const MAX_SCANNED: usize = 1000;

/// Runbooks read at once while looking for a status.
const LIST_BATCH: usize = 50;

/// A page of runbooks asked for: newest first, those numbered below `before`.
#[derive(Debug, Clone, Default)]
pub struct RunbookQuery {
    /// An organisation (compared without regard to case).
    pub org: Option<String>,
    /// A repository name, within `org` or any organisation the actor may see.
    pub repository: Option<String>,
    /// Only runbooks with this status.
    pub status: Option<RunbookStatus>,
    pub before: Option<RunbookNumber>,
    /// At most this many (at least one).
    pub first: usize,
}

/// A runbook as listed: its record, its steps, and what they add up to.
#[derive(Debug, Clone)]
pub struct Listed {
    pub record: RunbookRecord,
    pub steps: Vec<StepRecord>,
    pub counts: StepCounts,
    pub status: RunbookStatus,
}

/// What a listing found.
#[derive(Debug, Clone, Default)]
pub struct RunbookPage {
    pub runbooks: Vec<Listed>,
    /// Where the next page starts (its `before`), when there may be more.
    pub next_before: Option<RunbookNumber>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A field of the request is not acceptable; each front door names the field its own
    /// way ([`FieldError::field`]).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("runbook {0} has no plan yet; execute it once its steps exist")]
    NoPlan(RunbookNumber),
    #[error("`step` {step} is not a step of runbook {number}")]
    NoSuchStep {
        number: RunbookNumber,
        step: StepNumber,
    },
    #[error("runbook {0} has no unfinished steps to execute")]
    NothingToExecute(RunbookNumber),
    #[error("runbook {0} has no failed step to retry")]
    NothingToRetry(RunbookNumber),
    #[error("runbook {number} opens its pull requests itself (pr_mode {mode})")]
    NotManual { number: RunbookNumber, mode: PrMode },
    #[error("runbook {0} has no commits yet to open a pull request with")]
    NoCommits(RunbookNumber),
    #[error("runbook {0} does not exist")]
    NotFound(RunbookNumber),
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
    /// The organisation's monthly budget is spent: no new runbook or follow-up until it is
    /// raised (or the month ends). The sentence says which budget and how to raise it.
    #[error("{0}")]
    BudgetExhausted(String),
    /// A token taken from this process's cache was found revoked when confirmed.
    #[error("the API token is not valid: it is unknown or revoked")]
    TokenRevoked,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
}

impl OpError {
    /// The HTTP status of each case, for every front door that speaks HTTP.
    pub fn status(&self) -> StatusCode {
        match self {
            OpError::Invalid(_) => StatusCode::BAD_REQUEST,
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::TokenRevoked => StatusCode::UNAUTHORIZED,
            OpError::Forbidden(_) | OpError::ForbiddenOwner { .. } => StatusCode::FORBIDDEN,
            OpError::NotInstalled { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::NoGitHub => StatusCode::SERVICE_UNAVAILABLE,
            OpError::BudgetExhausted(_) => StatusCode::PAYMENT_REQUIRED,
            OpError::NoPlan(_)
            | OpError::NoSuchStep { .. }
            | OpError::NothingToExecute(_)
            | OpError::NothingToRetry(_)
            | OpError::NotManual { .. }
            | OpError::NoCommits(_) => StatusCode::CONFLICT,
            OpError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            OpError::GitHub(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Whether the message is for the person who asked (the runbook's state does not allow
    /// the command, or they may not): shown on the page, replied in the thread. The rest
    /// (the database, GitHub failing) is the operator's, and logged.
    pub fn is_for_the_user(&self) -> bool {
        !matches!(self, OpError::Store(_) | OpError::GitHub(_))
    }
}

/// The engine's errors are the store's, GitHub's, or a record that makes no sense (the
/// operator's, as a store error would be).
impl From<crate::engine::EngineError> for OpError {
    fn from(error: crate::engine::EngineError) -> Self {
        match error {
            crate::engine::EngineError::GitHub(e) => OpError::GitHub(e),
            crate::engine::EngineError::Store(e) => OpError::Store(e),
            bad @ crate::engine::EngineError::BadThread(_) => {
                OpError::Store(StoreError::Corrupt(bad.to_string()))
            }
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
fn may_act_for(token: &TokenInfo, org: &str) -> bool {
    token.orgs.iter().any(|o| o.eq_ignore_ascii_case(org))
}

/// Stores a new runbook (already validated) and answers its number. `by`, the API token
/// asking, must be allowed to act for the repository's organisation. With a GitHub App, the
/// repository must be one the app is installed on; it is recorded under the name GitHub
/// gives it, and when that is another owner's (GitHub answers a transferred repository's old
/// name with the repository itself), the token must be allowed to act for that owner too. A
/// missing target branch becomes the default branch now, so a later change of the default
/// branch does not move the runbook's work.
async fn create_runbook(
    store: &dyn Store,
    github: Option<&GitHubApp>,
    new: &mut NewRunbook,
    by: &TokenInfo,
) -> Result<RunbookNumber, OpError> {
    if !may_act_for(by, &new.org) {
        return Err(OpError::Forbidden(new.org.clone()));
    }
    if let Some(github) = github {
        match github.resolve(&new.org, &new.repo).await? {
            Resolution::Found(repo) => {
                let answered = &repo.full_name;
                if !may_act_for(by, answered.owner()) {
                    return Err(OpError::ForbiddenOwner {
                        org: new.org.clone(),
                        repo: new.repo.clone(),
                    });
                }
                if !answered.is(&new.org, &new.repo) {
                    tracing::info!(asked = %format_args!("{}/{}", new.org, new.repo), repository = %answered, "GitHub answers the repository under another name");
                    new.org = answered.owner().to_string();
                    new.repo = answered.name().to_string();
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
    within_budget(store, &new.org).await?;
    let number = store.create_runbook(new, Some(by.id)).await?;
    tracing::info!(runbook = number.get(), repo = %format_args!("{}/{}", new.org, new.repo), "runbook created");
    Ok(number)
}

/// Refuses new work for an organisation whose monthly budget is spent
/// ([`crate::store::budget_refusal`], read from the database each time: a raised budget
/// counts at once).
async fn within_budget(store: &dyn Store, org: &str) -> Result<(), OpError> {
    match budget_refusal(store, org, now_ms()).await? {
        Some(reason) => Err(OpError::BudgetExhausted(reason)),
        None => Ok(()),
    }
}

/// Records a follow-up instruction (validated): new steps on the same runbook, its
/// description replaced and its labels merged.
async fn update_runbook(
    store: &dyn Store,
    number: RunbookNumber,
    follow_up: &crate::domain::FollowUp,
) -> Result<(), OpError> {
    if !store.add_follow_up(number, follow_up).await? {
        return Err(OpError::NotFound(number));
    }
    tracing::info!(runbook = number.get(), "follow-up recorded");
    Ok(())
}

/// Queues waiting or failed leaves, lifting a cancellation.
async fn queue(
    store: &dyn Store,
    number: RunbookNumber,
    steps: &[StepNumber],
) -> Result<(), OpError> {
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
async fn execute(
    store: &dyn Store,
    number: RunbookNumber,
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
async fn retry(store: &dyn Store, number: RunbookNumber) -> Result<(), OpError> {
    let steps = store.steps(number).await?;
    store.set_cancel_requested(number, false).await?;
    let plan_failures: Vec<&StepRecord> =
        steps.iter().filter(|s| s.kind == StepKind::Plan).collect();
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
async fn cancel(store: &dyn Store, number: RunbookNumber) -> Result<(), OpError> {
    store.set_cancel_requested(number, true).await?;
    let steps = store.steps(number).await?;
    let queued = lifecycle::to_unqueue(&leaves(&steps));
    store
        .transition_steps(number, &queued, &[StepState::Queued], StepState::NotStarted)
        .await?;
    Ok(())
}

/// Opens the pull request of a `manual` runbook's branch now; answers its number.
async fn open_pull_request(
    store: &dyn Store,
    engine: Option<&Engine>,
    number: RunbookNumber,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_act_for_which_repository() {
        let token = TokenInfo {
            id: 1,
            name: "ci".into(),
            orgs: vec!["acme-corp".into()],
            created_at_ms: 0,
            revoked_at_ms: None,
        };
        let by_token = Actor::Token {
            token: &token,
            confirm: None,
        };
        assert!(by_token.may_act_for("ACME-Corp", "backend"));
        assert!(by_token.may_act_for("acme-corp", "anything"));
        assert!(!by_token.may_act_for("other", "backend"));
        // A writer of one repository: that repository only, not its organisation's others.
        let repository = RepoName::new("acme-corp", "backend");
        let writer = Actor::Writer {
            repository: &repository,
        };
        assert!(writer.may_act_for("Acme-Corp", "Backend"));
        assert!(!writer.may_act_for("acme-corp", "frontend"));
        assert!(!writer.may_act_for("other", "backend"));
    }

    #[test]
    fn every_refusal_has_its_status() {
        let one = RunbookNumber::try_from(1).unwrap();
        for (error, status) in [
            (
                OpError::Invalid(FieldError::new("prompt", "must not be empty")),
                400,
            ),
            (OpError::NotFound(one), 404),
            (OpError::TokenRevoked, 401),
            (OpError::Forbidden("o".into()), 403),
            (
                OpError::NotInstalled {
                    org: "o".into(),
                    repo: "r".into(),
                },
                422,
            ),
            (OpError::NoGitHub, 503),
            (OpError::BudgetExhausted("spent".into()), 402),
            (OpError::NothingToRetry(one), 409),
            (
                OpError::NoSuchStep {
                    number: one,
                    step: "9".parse().unwrap(),
                },
                409,
            ),
        ] {
            assert_eq!(error.status().as_u16(), status, "{error}");
            assert!(error.is_for_the_user(), "{error}");
        }
    }
}
