//! The schema's types.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_graphql::{
    Context, Enum, InputValueError, InputValueResult, Object, Scalar, ScalarType, SimpleObject,
    Value,
};

use super::loaders::Loaders;
use super::{OrGraphql, RequestContext};
use crate::domain::{self, ShownState, StepCounts, StepState};
use crate::store::{PullWithSteps, RunbookRecord, StepRecord, ThreadRecord};

/// A point in time, as an RFC 3339 string in UTC with milliseconds
/// (`2026-11-30T06:00:47.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime(pub i64);

#[Scalar(
    name = "DateTime",
    specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339"
)]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        let Value::String(text) = &value else {
            return Err(InputValueError::expected_type(value));
        };
        let at = humantime::parse_rfc3339_weak(text)
            .map_err(|e| InputValueError::custom(format!("not an RFC 3339 time: {e}")))?;
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| InputValueError::custom("a time before 1970"))?
            .as_millis();
        Ok(DateTime(ms as i64))
    }

    fn to_value(&self) -> Value {
        let at = UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        Value::String(humantime::format_rfc3339_millis(at).to_string())
    }
}

/// A runbook's aggregate status, computed from its leaf steps when asked.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::domain::RunbookStatus")]
pub enum RunbookStatus {
    /// No steps exist yet: the plan is being generated.
    GeneratingSteps,
    /// All leaf steps are not started.
    NotStarted,
    /// A leaf step is running.
    InProgress,
    /// A mix of completed, queued and not started leaf steps.
    PartiallyCompleted,
    /// A leaf step failed (and none is running).
    Failed,
    /// All leaf steps completed.
    Completed,
}

/// How a runbook opens its pull requests.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::domain::PrMode")]
pub enum PrMode {
    /// Commit and push to one branch; open a PR only when asked (`openPullRequest`).
    Manual,
    /// One branch, one PR into the target branch.
    SinglePr,
    /// One branch and one PR per top-level step, each based on the previous one.
    StackedPr,
}

/// A step's status: a leaf's state, or for a parent step the status of the leaves under it.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    NotStarted,
    Queued,
    InProgress,
    /// Only for a parent step: some of its leaves are done, others wait.
    PartiallyCompleted,
    Completed,
    Failed,
}

impl StepStatus {
    fn from_shown(shown: ShownState) -> Self {
        match shown {
            ShownState::Leaf(StepState::NotStarted)
            | ShownState::Parent(domain::RunbookStatus::NotStarted) => StepStatus::NotStarted,
            ShownState::Leaf(StepState::Queued) => StepStatus::Queued,
            ShownState::Leaf(StepState::InProgress)
            | ShownState::Parent(domain::RunbookStatus::InProgress) => StepStatus::InProgress,
            ShownState::Parent(domain::RunbookStatus::PartiallyCompleted) => {
                StepStatus::PartiallyCompleted
            }
            ShownState::Leaf(StepState::Completed)
            | ShownState::Parent(domain::RunbookStatus::Completed) => StepStatus::Completed,
            ShownState::Leaf(StepState::Failed)
            | ShownState::Parent(domain::RunbookStatus::Failed) => StepStatus::Failed,
            // A parent step has leaves under it: their status is never "no steps yet".
            ShownState::Parent(domain::RunbookStatus::GeneratingSteps) => StepStatus::NotStarted,
        }
    }
}

/// A pull request's state on GitHub.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullRequestState {
    Open,
    Closed,
    Merged,
}

/// Counts of leaf steps by state.
#[derive(SimpleObject, Clone, Copy, Debug)]
#[graphql(name = "StepCounts")]
pub struct StepCountsObject {
    pub total: u32,
    pub not_started: u32,
    pub queued: u32,
    pub in_progress: u32,
    pub completed: u32,
    pub failed: u32,
}

impl From<StepCounts> for StepCountsObject {
    fn from(c: StepCounts) -> Self {
        Self {
            total: c.total,
            not_started: c.not_started,
            queued: c.queued,
            in_progress: c.in_progress,
            completed: c.completed,
            failed: c.failed,
        }
    }
}

/// What running steps used (a step's last run, or a runbook's steps together).
#[derive(SimpleObject, Clone, Copy, Debug)]
#[graphql(name = "Usage")]
pub struct UsageObject {
    /// Wall-clock time, from a step's start to its end, in milliseconds.
    pub wall_ms: u64,
    /// CPU time (user and system) of the agent's processes, in milliseconds.
    pub agent_cpu_ms: u64,
    /// Tokens of the prompts sent to a model, as its endpoint counted them; null when
    /// unknown (agents without a model, endpoints that do not count).
    pub prompt_tokens: Option<u64>,
    /// Tokens of the model's answers; null when unknown.
    pub completion_tokens: Option<u64>,
}

impl From<domain::Usage> for UsageObject {
    fn from(u: domain::Usage) -> Self {
        Self {
            wall_ms: u.wall_ms,
            agent_cpu_ms: u.agent_cpu_ms,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}

/// How a repository's setup ran.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupStatus {
    InProgress,
    Completed,
    Failed,
}

/// What the setup's cache did.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupCache {
    /// An entry was restored; no command ran.
    Hit,
    /// No entry: the commands ran.
    Miss,
    /// The repository's setup has no cache.
    None,
}

/// The repository's setup (`.github/runbooks.yml`), as it last ran in a fresh tree of the
/// runbook.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "Setup")]
pub struct SetupObject {
    pub status: SetupStatus,
    pub cache: SetupCache,
    /// Each command and its output (the last bytes), and what the engine did around them.
    pub log: String,
    pub wall_ms: i64,
}

impl From<domain::SetupReport> for SetupObject {
    fn from(report: domain::SetupReport) -> Self {
        Self {
            status: match report.status {
                domain::SetupStatus::InProgress => SetupStatus::InProgress,
                domain::SetupStatus::Completed => SetupStatus::Completed,
                domain::SetupStatus::Failed => SetupStatus::Failed,
            },
            cache: match report.cache {
                domain::CacheOutcome::Hit => SetupCache::Hit,
                domain::CacheOutcome::Miss => SetupCache::Miss,
                domain::CacheOutcome::None => SetupCache::None,
            },
            log: report.log,
            wall_ms: report.wall_ms,
        }
    }
}

/// The repository a runbook runs against.
#[derive(SimpleObject, Clone, Debug)]
pub struct Repository {
    /// The GitHub organisation (or user).
    pub org: String,
    pub name: String,
}

/// A step of a runbook's plan.
pub struct Step {
    record: StepRecord,
    /// The shown status (a parent's comes from the leaves under it).
    status: StepStatus,
}

#[Object]
impl Step {
    /// Dotted step number, e.g. `1.2`.
    async fn number(&self) -> String {
        self.record.number.to_string()
    }

    async fn title(&self) -> &str {
        &self.record.title
    }

    /// Whether this is an execution unit (a leaf) or a grouping of steps.
    async fn leaf(&self) -> bool {
        self.record.is_leaf
    }

    async fn status(&self) -> StepStatus {
        self.status
    }

    /// The commit the step made, if it changed files.
    async fn commit_sha(&self) -> Option<&str> {
        self.record.commit_sha.as_deref()
    }

    /// Why the step failed.
    async fn error(&self) -> Option<&str> {
        self.record.error.as_deref()
    }

    /// The agent's output tail or transcript.
    async fn log(&self) -> Option<&str> {
        self.record.log.as_deref()
    }

    /// When the step last started.
    async fn started_at(&self) -> Option<DateTime> {
        self.record.started_at_ms.map(DateTime)
    }

    /// When the step last ended.
    async fn finished_at(&self) -> Option<DateTime> {
        self.record.finished_at_ms.map(DateTime)
    }

    /// The pull request carrying the step's commit.
    async fn pull_request_number(&self) -> Option<u64> {
        self.record.pr_number
    }

    /// What the step used the last time it ran; null until it has run (and for parents).
    async fn usage(&self) -> Option<UsageObject> {
        self.record.usage.map(UsageObject::from)
    }
}

/// A pull request the runbook opened (or one opened on GitHub from its branch).
#[derive(SimpleObject, Clone, Debug)]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
    pub state: PullRequestState,
    /// Whether the pull request is (or stays) a draft: its steps are not all done yet, or
    /// the runbook keeps its pull requests drafts (`draft: true`).
    pub draft: bool,
    /// Leaf step numbers in this pull request, in plan order.
    pub step_numbers: Vec<String>,
}

impl PullRequest {
    fn new(pull: &PullWithSteps, runbook_draft: bool) -> Self {
        Self {
            number: pull.record.number,
            url: pull.record.url.clone(),
            state: match pull.record.state {
                domain::PullState::Open => PullRequestState::Open,
                domain::PullState::Closed => PullRequestState::Closed,
                domain::PullState::Merged => PullRequestState::Merged,
            },
            draft: runbook_draft || !pull.record.finished,
            step_numbers: pull.step_numbers.clone(),
        }
    }
}

/// The issue or pull request thread a runbook was started from with a `/runbook` comment.
#[derive(SimpleObject, Clone, Debug)]
pub struct Thread {
    /// The thread's page on GitHub.
    pub url: String,
    pub issue_number: u64,
    /// Whether the thread is a pull request (else an issue).
    pub is_pull_request: bool,
    /// The login of who wrote the command.
    pub requested_by: String,
    /// The status comment the app keeps up to date, once posted.
    pub status_comment_url: Option<String>,
}

impl From<&ThreadRecord> for Thread {
    fn from(t: &ThreadRecord) -> Self {
        Self {
            url: t.thread.url.clone(),
            issue_number: t.thread.issue_number,
            is_pull_request: t.thread.is_pull_request,
            requested_by: t.thread.requested_by.clone(),
            status_comment_url: t.status_comment_url.clone(),
        }
    }
}

/// A runbook: a task run against one repository as a plan of numbered steps.
#[derive(Clone)]
pub struct Runbook {
    pub record: Arc<RunbookRecord>,
}

impl Runbook {
    pub fn new(record: RunbookRecord) -> Self {
        Self {
            record: Arc::new(record),
        }
    }
}

impl Runbook {
    /// What planning the runbook used (one query per runbook: asked only with a usage field).
    async fn planning(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<domain::Usage>> {
        let state = &ctx.data_unchecked::<RequestContext>().state;
        state
            .store()
            .plan_usage(self.record.number)
            .await
            .or_graphql()
    }
}

fn loaders<'a>(ctx: &Context<'a>) -> &'a Loaders {
    ctx.data_unchecked::<Loaders>()
}

fn counts(steps: &[StepRecord]) -> StepCounts {
    StepCounts::from_states(steps.iter().filter(|s| s.is_leaf).map(|s| s.state))
}

/// The status of a runbook with these steps.
pub fn status_of(steps: &[StepRecord]) -> domain::RunbookStatus {
    domain::status(&counts(steps))
}

#[Object]
impl Runbook {
    /// The number identifying the runbook: one sequence per deployment, from 1.
    async fn number(&self) -> i64 {
        self.record.number.get()
    }

    /// The runbook's dashboard page.
    async fn url(&self, ctx: &Context<'_>) -> String {
        let public_url = &ctx.data_unchecked::<RequestContext>().state.public_url;
        format!("{public_url}/runbooks/{}", self.record.number)
    }

    async fn title(&self) -> &str {
        &self.record.title
    }

    /// The task, as it was asked for.
    async fn prompt(&self) -> &str {
        &self.record.prompt
    }

    /// Text put first in the body of every pull request the runbook opens.
    async fn description(&self) -> Option<&str> {
        self.record.description.as_deref()
    }

    /// Labels applied to every pull request the runbook opens.
    async fn labels(&self) -> &[String] {
        &self.record.labels
    }

    /// Computed from the leaf steps when asked.
    async fn status(&self, ctx: &Context<'_>) -> async_graphql::Result<RunbookStatus> {
        let steps = loaders(ctx).steps(self.record.number).await.or_graphql()?;
        Ok(status_of(&steps).into())
    }

    /// Leaf steps by state.
    async fn step_counts(&self, ctx: &Context<'_>) -> async_graphql::Result<StepCountsObject> {
        let steps = loaders(ctx).steps(self.record.number).await.or_graphql()?;
        Ok(counts(&steps).into())
    }

    /// The plan, in order: parent steps and the leaf steps under them.
    async fn steps(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Step>> {
        let steps = loaders(ctx).steps(self.record.number).await.or_graphql()?;
        Ok(steps
            .iter()
            .map(|step| Step {
                status: StepStatus::from_shown(step.shown_state(&steps)),
                record: step.clone(),
            })
            .collect())
    }

    /// What the runbook used, together: its steps, and planning it by a model (tokens null
    /// when none were known).
    async fn usage(&self, ctx: &Context<'_>) -> async_graphql::Result<UsageObject> {
        let steps = loaders(ctx).steps(self.record.number).await.or_graphql()?;
        let planning = self.planning(ctx).await?;
        let total: domain::Usage = steps
            .iter()
            .filter_map(|step| step.usage)
            .chain(planning)
            .sum();
        Ok(total.into())
    }

    /// What planning the runbook (and its follow-ups) by an agent (a model, a coding CLI)
    /// used, every time together, whether a plan came of it or not; null when no agent
    /// planned it.
    async fn planning_usage(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<UsageObject>> {
        Ok(self.planning(ctx).await?.map(UsageObject::from))
    }

    /// The repository's setup as it last ran; null when the repository has none, or it has
    /// not started yet.
    async fn setup(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<SetupObject>> {
        let state = &ctx.data_unchecked::<RequestContext>().state;
        let report = state
            .store()
            .setup_report(self.record.number)
            .await
            .or_graphql()?;
        Ok(report.map(SetupObject::from))
    }

    /// Pull requests of the runbook, in the order they were opened.
    async fn pull_requests(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<PullRequest>> {
        let pulls = loaders(ctx).pulls(self.record.number).await.or_graphql()?;
        let draft = self.record.draft.unwrap_or(false);
        Ok(pulls.iter().map(|p| PullRequest::new(p, draft)).collect())
    }

    async fn repository(&self) -> Repository {
        Repository {
            org: self.record.org.clone(),
            name: self.record.repo.clone(),
        }
    }

    /// The branch the work starts from and pull requests go into; null when the server
    /// has no GitHub App to ask the repository's default branch of.
    async fn target_branch(&self) -> Option<&str> {
        self.record.target_branch.as_deref()
    }

    /// Whether the plan runs without waiting for `executeRunbook`.
    async fn oneshot(&self) -> bool {
        self.record.oneshot
    }

    /// Whether pull requests stay drafts: the request's choice, else the repository's
    /// `.github/runbooks.yml` (read when the plan is made), else false.
    async fn draft(&self) -> bool {
        self.record.draft.unwrap_or(false)
    }

    /// How pull requests are opened: the request's choice, else the repository's
    /// `.github/runbooks.yml` (read when the plan is made), else `SINGLE_PR`.
    async fn pr_mode(&self) -> PrMode {
        self.record
            .pr_mode
            .unwrap_or(domain::PrMode::SinglePr)
            .into()
    }

    /// The thread the runbook was started from by a `/runbook` comment; null otherwise.
    async fn thread(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Thread>> {
        let thread = loaders(ctx).thread(self.record.number).await.or_graphql()?;
        Ok(thread.as_deref().map(Thread::from))
    }

    async fn created_at(&self) -> DateTime {
        DateTime(self.record.created_at_ms)
    }

    async fn updated_at(&self) -> DateTime {
        DateTime(self.record.updated_at_ms)
    }
}

/// A runbook in a listing, with the cursor to go on after it.
#[derive(SimpleObject)]
pub struct RunbookEdge {
    pub cursor: String,
    pub node: Runbook,
}

/// Where a page of a listing stands.
#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    /// Whether more runbooks follow: ask again with `after: endCursor`.
    pub has_next_page: bool,
    /// Whether the page was asked for after a cursor.
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    /// The cursor to go on from.
    pub end_cursor: Option<String>,
}

/// A page of runbooks, newest first.
#[derive(SimpleObject)]
pub struct RunbookConnection {
    pub edges: Vec<RunbookEdge>,
    /// The runbooks of the page (the edges' nodes, without cursors).
    pub nodes: Vec<Runbook>,
    pub page_info: PageInfo,
}
