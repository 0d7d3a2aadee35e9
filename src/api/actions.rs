//! Extensions beyond the reference: execute, retry, cancel, and the step tree.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::runbooks::{RunbookDocument, RunbookNumber, visible_summary};
use super::schema::{self, BodyErrors, NumberErrors, TokenErrors};
use crate::domain::{self, StepNumber};
use crate::http::auth::Caller;
use crate::http::error::ErrorBody;
use crate::http::json::OptionalJsonBody;
use crate::http::{ApiError, AppState};
use crate::ops::Action;

/// Body of `POST /api/v1/runbook/<n>/execute` (may be empty).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Run up to this step (all leaves under it when it is a parent, and every unfinished
    /// step before it); the whole plan when missing.
    #[schema(schema_with = schema::step)]
    pub step: Option<String>,
}

/// A step of the plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepDocument {
    /// Dotted step number, e.g. "1.2".
    pub number: String,
    pub title: String,
    /// Whether this is an execution unit (a leaf) or a grouping.
    pub leaf: bool,
    /// A leaf's state; for a parent, the status of the leaves under it.
    pub state: String,
    /// The commit the step made, if it changed files.
    pub commit_sha: Option<String>,
    /// Why the step failed.
    pub error: Option<String>,
    /// The pull request carrying the step's commit.
    pub pull_request: Option<u64>,
    /// What the step used the last time it ran; null until it has run (and for parents).
    #[serde(default)]
    pub usage: Option<UsageDocument>,
}

/// What running steps used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageDocument {
    /// Wall-clock time, from a step's start to its end, in milliseconds.
    pub wall_ms: u64,
    /// CPU time (user and system) of the agent's processes, in milliseconds.
    pub agent_cpu_ms: u64,
    /// Tokens of the prompts sent to a model, as the model's endpoint counted them; null
    /// when unknown (agents without a model, endpoints that do not count).
    pub prompt_tokens: Option<u64>,
    /// Tokens of the model's answers; null when unknown.
    pub completion_tokens: Option<u64>,
}

impl From<domain::Usage> for UsageDocument {
    fn from(usage: domain::Usage) -> Self {
        Self {
            wall_ms: usage.wall_ms,
            agent_cpu_ms: usage.agent_cpu_ms,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        }
    }
}

impl From<UsageDocument> for domain::Usage {
    fn from(doc: UsageDocument) -> Self {
        Self {
            wall_ms: doc.wall_ms,
            agent_cpu_ms: doc.agent_cpu_ms,
            prompt_tokens: doc.prompt_tokens,
            completion_tokens: doc.completion_tokens,
        }
    }
}

/// The repository's setup (`setup` in `.github/runbooks.yml`), as it last ran in a fresh
/// working tree of the runbook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SetupDocument {
    /// `in_progress`, `completed` or `failed`.
    pub status: domain::SetupStatus,
    /// `hit` (restored from the cache, no command ran), `miss` (the commands ran) or `none`
    /// (the setup has no cache).
    pub cache: domain::CacheOutcome,
    /// The commands and their output (the last bytes, bounded like a step's log), and what
    /// the engine did around them.
    pub log: String,
    /// How long it took, in milliseconds.
    pub wall_ms: i64,
}

impl From<domain::SetupReport> for SetupDocument {
    fn from(report: domain::SetupReport) -> Self {
        Self {
            status: report.status,
            cache: report.cache,
            log: report.log,
            wall_ms: report.wall_ms,
        }
    }
}

/// The step tree of a runbook, in plan order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepsDocument {
    pub runbook_number: i64,
    pub steps: Vec<StepDocument>,
    /// The repository's setup; null when the repository has none, or it has not started
    /// yet.
    pub setup: Option<SetupDocument>,
    /// What the runbook used, together: its steps, and planning it by an agent (tokens null
    /// when none were known).
    #[serde(default)]
    pub usage: UsageDocument,
    /// What planning the runbook (and its follow-ups) by an agent used (a model, a coding
    /// CLI), every time together, whether a plan came of it or not; null when no agent
    /// planned it (a plan in the template layout, the `script` agent).
    #[serde(default)]
    pub planning_usage: Option<UsageDocument>,
}

/// Carries out `action`, then answers the runbook as it is now.
async fn act(
    state: &AppState,
    caller: &Caller,
    number: domain::RunbookNumber,
    action: Action,
) -> Result<(StatusCode, Json<RunbookDocument>), ApiError> {
    state
        .app
        .act(number, caller.actor(), &action)
        .await
        .map_err(|e| caller.refused(state, e))?;
    let summary = visible_summary(state, caller, number).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunbookDocument::new(&state.public_url, summary)),
    ))
}

/// Execute a runbook created with `oneshot: false`.
///
/// Queues every unfinished step, or, with `step`, that step (all leaves under it) and every
/// unfinished step before it, so order is kept.
#[utoipa::path(
    post,
    path = "/api/v1/runbook/{runbook_number}/execute",
    tag = "runbooks",
    params(RunbookNumber),
    request_body(content = Option<ExecuteRequest>, description = "Optional: no body (or an empty one) runs the whole plan"),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Steps queued", body = RunbookDocument),
        (status = 404, description = "No such runbook, or not visible to this token", body = ErrorBody),
        (status = 409, description = "The plan is not ready, nothing is left to run, or the plan has no such step", body = ErrorBody),
        TokenErrors, NumberErrors, BodyErrors,
    )
)]
pub async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    RunbookNumber(number): RunbookNumber,
    OptionalJsonBody(request): OptionalJsonBody<ExecuteRequest>,
) -> Result<(StatusCode, Json<RunbookDocument>), ApiError> {
    let up_to = request
        .step
        .as_deref()
        .map(|s| {
            s.parse::<StepNumber>()
                .map_err(|e| ApiError::BadRequest(format!("`step` is invalid: {e}")))
        })
        .transpose()?;
    act(&state, &caller, number, Action::Execute { up_to }).await
}

/// Retry a failed runbook: its failed steps and the not-started ones after them run again.
#[utoipa::path(
    post,
    path = "/api/v1/runbook/{runbook_number}/retry",
    tag = "runbooks",
    params(RunbookNumber),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Steps queued again", body = RunbookDocument),
        (status = 404, description = "No such runbook, or not visible to this token", body = ErrorBody),
        (status = 409, description = "Nothing failed", body = ErrorBody),
        TokenErrors, NumberErrors,
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    RunbookNumber(number): RunbookNumber,
) -> Result<(StatusCode, Json<RunbookDocument>), ApiError> {
    act(&state, &caller, number, Action::Retry).await
}

/// Cancel a runbook: the running step fails with reason "cancelled", queued steps wait.
#[utoipa::path(
    post,
    path = "/api/v1/runbook/{runbook_number}/cancel",
    tag = "runbooks",
    params(RunbookNumber),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Cancellation requested", body = RunbookDocument),
        (status = 404, description = "No such runbook, or not visible to this token", body = ErrorBody),
        TokenErrors, NumberErrors,
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    RunbookNumber(number): RunbookNumber,
) -> Result<(StatusCode, Json<RunbookDocument>), ApiError> {
    act(&state, &caller, number, Action::Cancel).await
}

/// Open the pull request of a `manual` runbook's branch now.
#[utoipa::path(
    post,
    path = "/api/v1/runbook/{runbook_number}/pull_requests",
    tag = "runbooks",
    params(RunbookNumber),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The pull request is open (listed in `pull_requests`)", body = RunbookDocument),
        (status = 404, description = "No such runbook, or not visible to this token", body = ErrorBody),
        (status = 409, description = "Not a manual runbook, or its branch has no commits yet", body = ErrorBody),
        (status = 502, description = "GitHub could not be asked", body = ErrorBody),
        (status = 503, description = "No GitHub App is configured", body = ErrorBody),
        TokenErrors, NumberErrors,
    )
)]
pub async fn open_pull_request(
    State(state): State<AppState>,
    caller: Caller,
    RunbookNumber(number): RunbookNumber,
) -> Result<(StatusCode, Json<RunbookDocument>), ApiError> {
    act(&state, &caller, number, Action::OpenPullRequest).await
}

/// The step tree: titles, states, commits, errors, what each step used and the total.
#[utoipa::path(
    get,
    path = "/api/v1/runbook/{runbook_number}/steps",
    tag = "runbooks",
    params(RunbookNumber),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The steps in plan order", body = StepsDocument),
        (status = 404, description = "No such runbook, or not visible to this token", body = ErrorBody),
        TokenErrors, NumberErrors,
    )
)]
pub async fn steps(
    State(state): State<AppState>,
    caller: Caller,
    RunbookNumber(number): RunbookNumber,
) -> Result<Json<StepsDocument>, ApiError> {
    visible_summary(&state, &caller, number).await?;
    let steps = state.store().steps(number).await?;
    let documents = steps
        .iter()
        .map(|step| {
            let state = step.shown_state(&steps).as_str().to_string();
            StepDocument {
                number: step.number.to_string(),
                title: step.title.clone(),
                leaf: step.is_leaf,
                state,
                commit_sha: step.commit_sha.clone(),
                error: step.error.clone(),
                pull_request: step.pr_number,
                usage: step.usage.map(UsageDocument::from),
            }
        })
        .collect();
    let setup = state.store().setup_report(number).await?;
    let planning = state.store().plan_usage(number).await?;
    let total: domain::Usage = steps
        .iter()
        .filter_map(|step| step.usage)
        .chain(planning)
        .sum();
    Ok(Json(StepsDocument {
        runbook_number: number.get(),
        steps: documents,
        setup: setup.map(SetupDocument::from),
        usage: total.into(),
        planning_usage: planning.map(UsageDocument::from),
    }))
}
