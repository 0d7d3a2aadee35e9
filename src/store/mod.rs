//! Storage: one interface, two implementations — SQLite (the embedded default, a file in WAL
//! mode) and PostgreSQL (for several replicas). The SQL is written once, in `sql.rs`, with
//! `$1`-style parameters that both databases accept, and compiled for each backend.

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::domain::{
    FollowUp, NewRunbook, Plan, PrMode, RunbookSummary, ShownState, StepNumber, StepState,
};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database holds a value this version cannot read: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An API token as the store knows it: never the token itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    /// Lower-case organisation names the token may act for.
    pub orgs: Vec<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// Everything stored about a runbook's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunbookRecord {
    pub number: i64,
    pub org: String,
    pub repo: String,
    pub title: String,
    pub prompt: String,
    pub oneshot: bool,
    pub draft: Option<bool>,
    pub pr_mode: Option<PrMode>,
    pub target_branch: Option<String>,
    pub description: Option<String>,
    pub labels: Vec<String>,
    pub author_email: Option<String>,
    pub created_by_token: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// A `manual` runbook's pull request was asked for.
    pub pull_request_requested: bool,
}

/// What a runbook owes GitHub (see [`Store::owe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    /// Bumped by every [`Store::owe`]: settling an older version leaves the debt in place.
    pub version: i64,
    /// Failed attempts to pay it since it was first owed.
    pub attempts: i64,
    /// Not tried again before this time (Unix milliseconds).
    pub not_before_ms: i64,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// A follow-up instruction waiting for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpRecord {
    pub id: i64,
    pub runbook_number: i64,
    pub prompt: String,
    pub created_at_ms: i64,
}

/// A runbook read together with the state of the reader's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunbookRead {
    pub summary: Option<RunbookSummary>,
    /// Whether the token hash given to the read belongs to an active token.
    pub token_active: bool,
}

/// The issue or pull-request thread a runbook is started from by a `/runbook` comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewThread {
    /// `owner/name` (stored in lower case).
    pub repository: String,
    pub issue_number: u64,
    pub is_pull_request: bool,
    /// The thread's page on GitHub.
    pub url: String,
    /// The comment holding the command: one runbook per comment.
    pub command_comment_id: u64,
    /// The login of who wrote the command.
    pub requested_by: String,
    /// The issue's title and body, for the planner.
    pub context: Option<String>,
}

/// A runbook's thread, with its status comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRecord {
    pub runbook_number: i64,
    pub thread: NewThread,
    pub status_comment_id: Option<u64>,
    pub status_comment_url: Option<String>,
    /// What the status comment says now.
    pub status_body: Option<String>,
    pub needs_report: bool,
}

/// Which runbooks a listing shows. Organisations compare without regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunbookFilter {
    /// The organisations the reader may see (lower case); nothing is visible without one.
    pub visible_orgs: Vec<String>,
    pub org: Option<String>,
    /// A repository name (within `org`, or any visible organisation).
    pub repository: Option<String>,
}

/// A pull request of a runbook with its leaf steps, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullWithSteps {
    pub record: PullRecord,
    /// Leaf step numbers in plan order.
    pub step_numbers: Vec<String>,
}

/// A webhook delivery as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub payload: String,
}

/// A step of a stored plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub number: StepNumber,
    pub title: String,
    pub details: String,
    pub is_leaf: bool,
    pub state: StepState,
    pub pr_number: Option<u64>,
    pub commit_sha: Option<String>,
    pub error: Option<String>,
    /// `work`, or `plan` for the step that stands for a plan that could not be generated.
    pub kind: String,
    /// The agent's output tail or transcript.
    pub log: Option<String>,
    /// When the step last started and ended (Unix milliseconds).
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

impl StepRecord {
    /// How this step is shown among `steps`, the runbook's whole plan.
    pub fn shown_state(&self, steps: &[StepRecord]) -> ShownState {
        ShownState::of(
            &self.number,
            self.is_leaf.then_some(self.state),
            steps
                .iter()
                .filter(|s| s.is_leaf)
                .map(|s| (&s.number, s.state)),
        )
    }
}

/// A pull request the engine opened, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRecord {
    pub number: u64,
    pub url: String,
    pub node_id: Option<String>,
    pub head: Option<String>,
    pub finished: bool,
    /// `open`, `closed` or `merged`, as the last `pull_request` webhook said.
    pub state: String,
    /// The branch it goes into, as the engine last set it (unknown for PRs linked by hand).
    pub base: Option<String>,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    Completed {
        commit_sha: Option<String>,
        log: String,
    },
    Failed {
        error: String,
        log: String,
    },
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Runs the embedded migrations that have not run yet.
    async fn migrate(&self) -> StoreResult<()>;

    /// Whether the database answers.
    async fn ping(&self) -> StoreResult<()>;

    async fn create_token(
        &self,
        name: &str,
        orgs: &[String],
        token_hash: &str,
    ) -> StoreResult<TokenInfo>;
    async fn list_tokens(&self) -> StoreResult<Vec<TokenInfo>>;
    /// Revokes a token; `false` when no active token has that id.
    async fn revoke_token(&self, id: i64) -> StoreResult<bool>;
    /// The active (not revoked) token with this hash.
    async fn active_token(&self, token_hash: &str) -> StoreResult<Option<TokenInfo>>;

    /// Stores a new runbook under the next number of the deployment's sequence and returns it.
    async fn create_runbook(&self, new: &NewRunbook, created_by: Option<i64>) -> StoreResult<i64>;
    async fn runbook(&self, number: i64) -> StoreResult<Option<RunbookRecord>>;
    /// Organisation, title, leaf-step counts and pull requests: what the status document
    /// needs, read together with whether `token_hash` names an active token — one round trip
    /// that both confirms a caller's (cached) token and reads what it asked for.
    async fn read_runbook(&self, number: i64, token_hash: Option<&str>)
    -> StoreResult<RunbookRead>;

    /// [`Store::read_runbook`] without a token.
    async fn runbook_summary(&self, number: i64) -> StoreResult<Option<RunbookSummary>> {
        Ok(self.read_runbook(number, None).await?.summary)
    }

    /// Records a follow-up: replaces the description when given, merges the labels, and
    /// queues the prompt for the engine. `false` when there is no such runbook.
    async fn add_follow_up(&self, number: i64, follow_up: &FollowUp) -> StoreResult<bool>;
    async fn pending_follow_ups(&self, number: i64) -> StoreResult<Vec<FollowUpRecord>>;

    /// Appends the steps of a plan after the runbook's existing steps, all `not_started`.
    async fn append_steps(&self, number: i64, plan: &Plan) -> StoreResult<()> {
        self.record_plan(number, plan, StepState::NotStarted, None)
            .await
    }
    async fn steps(&self, number: i64) -> StoreResult<Vec<StepRecord>>;
    /// Sets a leaf step's state; `false` when there is no such leaf step.
    async fn set_step_state(
        &self,
        number: i64,
        step: &StepNumber,
        state: StepState,
    ) -> StoreResult<bool>;
    /// Records a pull request of the runbook and the leaf steps it carries, after the
    /// runbook's other pull requests.
    async fn record_pull_request(
        &self,
        number: i64,
        pr_number: u64,
        url: &str,
        steps: &[StepNumber],
    ) -> StoreResult<()>;
    /// [`Store::record_pull_request`] at a given place among the runbook's pull requests
    /// (a stacked PR's top-level step: the stack's order whatever order they were opened in).
    async fn record_pull_request_at(
        &self,
        number: i64,
        pr_number: u64,
        url: &str,
        steps: &[StepNumber],
        position: Option<i64>,
    ) -> StoreResult<()>;

    // --- the engine ------------------------------------------------------------------

    /// Fills what the request left out from the project configuration: `pr_mode` and `draft`
    /// only when unset, and `labels` merged after the request's.
    async fn apply_project_config(
        &self,
        number: i64,
        pr_mode: Option<PrMode>,
        draft: Option<bool>,
        labels: &[String],
    ) -> StoreResult<()>;

    /// Remembers a pull request's GraphQL id and head branch.
    async fn save_pull_request_details(
        &self,
        number: i64,
        pr_number: u64,
        node_id: &str,
        head: &str,
    ) -> StoreResult<()>;
    /// The runbook's pull requests, in the order they were opened.
    async fn pull_request_records(&self, number: i64) -> StoreResult<Vec<PullRecord>>;
    /// Remembers the branch a pull request goes into.
    async fn set_pull_request_base(
        &self,
        number: i64,
        pr_number: u64,
        base: &str,
    ) -> StoreResult<()>;
    /// Records a pull request's state on GitHub (`open`, `closed`, `merged`).
    async fn set_pull_request_state(
        &self,
        number: i64,
        pr_number: u64,
        state: &str,
    ) -> StoreResult<()>;
    /// Marks a pull request made final (`true`) or back at work (`false`).
    async fn set_pull_request_finished(
        &self,
        number: i64,
        pr_number: u64,
        finished: bool,
    ) -> StoreResult<()>;

    /// Runbooks with work to do (a plan to make, a follow-up to plan, queued or running
    /// steps, a status report asked for, or a debt to GitHub due at `now_ms`) whose lease is
    /// free or expired at `now_ms`, oldest first.
    async fn runbooks_with_work(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<i64>>;
    /// Takes the runbook's lease until `until_ms` when it is free or expired at `now_ms`;
    /// `false` when another owner holds it.
    async fn claim_runbook(
        &self,
        number: i64,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool>;
    /// Extends a lease this owner holds; `false` when it was lost.
    async fn renew_lease(&self, number: i64, owner: &str, until_ms: i64) -> StoreResult<bool>;
    async fn release_lease(&self, number: i64, owner: &str) -> StoreResult<()>;
    /// Appends a generated plan with its leaves in `state`, and marks the follow-up it
    /// answers (if any) processed — in one transaction.
    async fn record_plan(
        &self,
        number: i64,
        plan: &Plan,
        state: StepState,
        follow_up: Option<i64>,
    ) -> StoreResult<()>;
    /// Records a plan that could not be generated: one failed step of kind `plan` numbered
    /// `after + 1`, carrying the error (its details keep the prompt, for a retry).
    async fn record_plan_failure(
        &self,
        number: i64,
        after: u32,
        prompt: &str,
        error: &str,
        follow_up: Option<i64>,
    ) -> StoreResult<()>;
    /// Moves the given leaves from any of `from` to `to`; answers how many moved.
    async fn transition_steps(
        &self,
        number: i64,
        steps: &[StepNumber],
        from: &[StepState],
        to: StepState,
    ) -> StoreResult<u32>;
    /// Ends a running step; a failure also returns the queued steps to `not_started`.
    async fn finish_step(&self, number: i64, step: &StepNumber, end: &StepEnd) -> StoreResult<()>;
    /// Removes failed `plan` steps (before planning again).
    async fn remove_plan_failures(&self, number: i64) -> StoreResult<u32>;
    /// Records that GitHub may not show the runbook's state any more (before the work that
    /// makes it so): its pull requests and status comment must be brought up to date by
    /// whoever holds the runbook next. Answers the debt's new version.
    async fn owe(&self, number: i64) -> StoreResult<i64>;
    /// The runbook's debt to GitHub, if any.
    async fn owed(&self, number: i64) -> StoreResult<Option<Owed>>;
    /// GitHub shows everything owed up to `version`: the debt is paid, unless a newer change
    /// came since (then `false`, and it stays).
    async fn settle_owed(&self, number: i64, version: i64) -> StoreResult<bool>;
    /// An attempt to pay the debt failed: counts it, keeps the error, and puts the next
    /// attempt off until `not_before_ms(attempts)`. Answers the attempts so far.
    async fn owed_failed(
        &self,
        number: i64,
        error: &str,
        not_before_ms: &(dyn Fn(i64) -> i64 + Send + Sync),
    ) -> StoreResult<i64>;
    /// Remembers that a `manual` runbook's pull request was asked for.
    async fn request_pull_request(&self, number: i64) -> StoreResult<()>;
    /// Asks for the runbook to stop (`None` clears the request).
    async fn set_cancel_requested(&self, number: i64, requested: bool) -> StoreResult<()>;
    async fn cancel_requested(&self, number: i64) -> StoreResult<bool>;
    /// Queues a follow-up prompt for planning (used by retry of a failed follow-up plan).
    async fn add_follow_up_prompt(&self, number: i64, prompt: &str) -> StoreResult<()>;

    // --- listings (GraphQL, the dashboard): a page at a time, batched --------------------

    /// Runbooks matching the filter, newest first, numbered below `before` when given.
    async fn list_runbooks(
        &self,
        filter: &RunbookFilter,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<RunbookRecord>>;
    /// The steps of several runbooks, in plan order, in one query.
    async fn steps_of(
        &self,
        numbers: &[i64],
    ) -> StoreResult<std::collections::HashMap<i64, Vec<StepRecord>>>;
    /// The pull requests of several runbooks, in the order opened, in one query.
    async fn pull_requests_of(
        &self,
        numbers: &[i64],
    ) -> StoreResult<std::collections::HashMap<i64, Vec<PullWithSteps>>>;
    /// The threads of several runbooks (those started from comments), in one query.
    async fn threads_of(
        &self,
        numbers: &[i64],
    ) -> StoreResult<std::collections::HashMap<i64, ThreadRecord>>;

    // --- threads (runbooks started from comments) ------------------------------------

    /// Creates a runbook started by a comment, with its thread, in one transaction. When the
    /// comment already started one (a webhook handled again), answers that runbook and
    /// `false`, and creates nothing.
    async fn create_runbook_in_thread(
        &self,
        new: &NewRunbook,
        thread: &NewThread,
    ) -> StoreResult<(i64, bool)>;
    async fn thread(&self, number: i64) -> StoreResult<Option<ThreadRecord>>;
    /// The newest runbook started in an issue or pull request thread.
    async fn latest_runbook_in_thread(
        &self,
        repository: &str,
        issue_number: u64,
    ) -> StoreResult<Option<i64>>;
    /// Remembers the status comment (and what it says) and asks for a report, so the
    /// runbook's lease holder brings it up to date.
    async fn set_status_comment(
        &self,
        number: i64,
        comment_id: u64,
        url: &str,
        body: &str,
    ) -> StoreResult<()>;
    /// Asks the runbook's lease holder to bring the status comment up to date.
    async fn request_report(&self, number: i64) -> StoreResult<()>;
    /// Clears a report request; `true` when there was one.
    async fn take_report_request(&self, number: i64) -> StoreResult<bool>;
    /// Records what the status comment says after an edit.
    async fn record_status_body(&self, number: i64, body: &str) -> StoreResult<()>;

    /// Persists a webhook delivery; `false` when this delivery id was seen before (a
    /// redelivery), in which case nothing changes.
    async fn record_delivery(&self, delivery: &DeliveryRecord) -> StoreResult<bool>;
    /// Marks a delivery handled, with the error it ended in, if any.
    async fn finish_delivery(&self, delivery_id: &str, error: Option<&str>) -> StoreResult<()>;
    /// The oldest deliveries received but not yet handled, at most `limit` of them.
    async fn unfinished_deliveries(&self, limit: i64) -> StoreResult<Vec<DeliveryRecord>>;

    // --- dashboard sessions (sign-ins with an API token; see `crate::dashboard`) --------

    /// Stores a new dashboard session, and removes the sessions that expired before it.
    async fn create_dashboard_session(&self, session: &NewDashboardSession) -> StoreResult<()>;
    /// The session stored under this hash, if it has not expired at `now_ms` and its token
    /// is still active — one round trip, so a revoked token's sessions end at once.
    async fn dashboard_session(
        &self,
        session_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<DashboardSession>>;
    /// Ends a session; `false` when there was none.
    async fn delete_dashboard_session(&self, session_hash: &str) -> StoreResult<bool>;

    /// Forgets at most `limit` deliveries handled before `handled_before_ms`, oldest first;
    /// answers how many. Deliveries not yet handled are never forgotten.
    async fn prune_deliveries(&self, handled_before_ms: i64, limit: i64) -> StoreResult<u64>;
}

// --- dashboard sessions ---------------------------------------------------------------

/// A dashboard session to store: never its id, only the id's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDashboardSession {
    pub session_hash: String,
    pub token_id: i64,
    /// What the session's forms must send back.
    pub csrf_secret: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A live dashboard session with the (active) token it was opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardSession {
    pub token: TokenInfo,
    pub csrf_secret: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// Opens the database named by a `sqlite://…` or `postgres://…` URL (creating a missing
/// SQLite file) and brings its schema up to date.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    let store: Arc<dyn Store> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(PgStore::connect(url).await?)
        } else if url.starts_with("sqlite:") {
            Arc::new(SqliteStore::connect(url).await?)
        } else {
            return Err(StoreError::Invalid(
                "the database URL must start with sqlite:// or postgres://".into(),
            ));
        };
    store.migrate().await?;
    Ok(store)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
