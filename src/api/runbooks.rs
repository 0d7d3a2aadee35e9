//! `POST /api/v1/runbook`, `GET /api/v1/runbook/<n>`, `PATCH /api/v1/runbook/<n>`.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::schema::{self, BodyErrors, NumberErrors, TokenErrors};
use crate::domain::{
    self, FollowUpRequest, PrMode, RunbookRequest, RunbookStatus, RunbookSummary, StepCounts,
};
use crate::http::auth::Caller;
use crate::http::error::ErrorBody;
use crate::http::json::JsonBody;
use crate::http::{ApiError, AppState};

/// The repository a runbook runs against.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepositoryRef {
    /// GitHub organisation (or user) name.
    #[schema(schema_with = schema::org)]
    pub org: String,
    /// Repository name.
    #[schema(schema_with = schema::repo)]
    pub name: String,
}

/// Body of `POST /api/v1/runbook`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunbookRequest {
    pub repository: RepositoryRef,
    /// Task description for the runbook.
    #[schema(schema_with = schema::create_prompt)]
    pub prompt: String,
    /// Title; generated from the prompt when missing.
    #[schema(schema_with = schema::title)]
    pub title: Option<String>,
    /// Run every step without waiting (default true); false waits for `execute`.
    pub oneshot: Option<bool>,
    /// Open pull requests as drafts (default: project configuration, else false).
    pub draft: Option<bool>,
    /// PR creation mode (default: project configuration, else `single_pr`).
    pub pr_mode: Option<PrMode>,
    /// Base branch (default: the repository's default branch).
    #[schema(schema_with = schema::target_branch)]
    pub target_branch: Option<String>,
    /// Text put first in the body of every PR the runbook opens.
    #[schema(schema_with = schema::create_description)]
    pub description: Option<String>,
    /// Labels applied to every PR the runbook opens (de-duplicated, order kept).
    #[schema(schema_with = schema::create_labels)]
    pub labels: Option<Vec<String>>,
    /// Who the runbook is attributed to in PR bodies and commit trailers.
    #[schema(schema_with = schema::author_email)]
    pub author_email: Option<String>,
}

/// Body of `PATCH /api/v1/runbook/<n>`: a follow-up instruction.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRunbookRequest {
    /// The follow-up instruction, run as new steps on the same branch and PRs.
    #[schema(schema_with = schema::follow_up_prompt)]
    pub prompt: String,
    /// Replaces the text put first in PR bodies.
    #[schema(schema_with = schema::follow_up_description)]
    pub description: Option<String>,
    /// Merged into the runbook's labels (never removes any).
    #[schema(schema_with = schema::follow_up_labels)]
    pub labels: Option<Vec<String>>,
}

/// A pull request opened by the runbook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PullRequestDocument {
    /// GitHub pull request number.
    pub number: u64,
    /// URL of the GitHub pull request.
    pub url: String,
    /// Leaf step numbers in this pull request, in plan order (e.g. "1.1", "2.3").
    pub step_numbers: Vec<String>,
}

/// The runbook document returned by every runbook endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunbookDocument {
    /// The unique number identifying the runbook.
    pub runbook_number: i64,
    /// URL of the runbook's dashboard page.
    pub url: String,
    /// Aggregate status computed from the leaf steps.
    pub status: RunbookStatus,
    /// Leaf step counts by state.
    pub steps: StepCounts,
    /// Pull requests created by the runbook, deduplicated by PR number.
    pub pull_requests: Vec<PullRequestDocument>,
}

impl RunbookDocument {
    pub fn new(public_url: &str, summary: RunbookSummary) -> Self {
        Self {
            runbook_number: summary.number.get(),
            url: format!("{public_url}/runbooks/{}", summary.number),
            status: summary.status(),
            steps: summary.counts,
            pull_requests: summary
                .pull_requests
                .into_iter()
                .map(|pr| PullRequestDocument {
                    number: pr.number,
                    url: pr.url,
                    step_numbers: pr.step_numbers,
                })
                .collect(),
        }
    }
}

/// The body as the application layer takes it, to check and carry out.
impl From<CreateRunbookRequest> for RunbookRequest {
    fn from(request: CreateRunbookRequest) -> Self {
        RunbookRequest {
            org: request.repository.org,
            repo: request.repository.name,
            prompt: request.prompt,
            title: request.title,
            oneshot: request.oneshot,
            draft: request.draft,
            pr_mode: request.pr_mode,
            target_branch: request.target_branch,
            description: request.description,
            labels: request.labels,
            author_email: request.author_email,
        }
    }
}

impl From<UpdateRunbookRequest> for FollowUpRequest {
    fn from(request: UpdateRunbookRequest) -> Self {
        FollowUpRequest {
            prompt: request.prompt,
            description: request.description,
            labels: request.labels,
        }
    }
}

/// The `{runbook_number}` path segment, parsed: a positive whole number of 64 bits, or a 400
/// that says so, in the API's JSON like every error (also for a segment that is not UTF-8
/// once percent-decoded, which axum would answer in plain text). Documented by
/// [`schema::NumberErrors`].
pub struct RunbookNumber(pub domain::RunbookNumber);

impl<S: Send + Sync> FromRequestParts<S> for RunbookNumber {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(raw)) => runbook_number(&raw).map(RunbookNumber),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "`runbook_number` must be a positive whole number: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// Parses the `<runbook_number>` path segment: a positive whole number.
pub(super) fn runbook_number(raw: &str) -> Result<domain::RunbookNumber, ApiError> {
    raw.parse::<domain::RunbookNumber>().map_err(|_| {
        ApiError::BadRequest(format!(
            "`runbook_number` must be a positive whole number, not `{raw}`"
        ))
    })
}

/// The summary of a runbook the caller may see (see [`crate::ops::App::visible`]).
pub(super) async fn visible_summary(
    state: &AppState,
    caller: &Caller,
    number: domain::RunbookNumber,
) -> Result<RunbookSummary, ApiError> {
    state
        .app
        .visible(number, caller.actor())
        .await
        .map_err(|e| caller.refused(state, e))
}

/// Create a runbook.
///
/// Creates a runbook and starts it asynchronously. Answers 202 with the runbook document:
/// status `generating_steps`, all step counts 0, no pull requests.
#[utoipa::path(
    post,
    path = "/api/v1/runbook",
    tag = "runbooks",
    request_body = CreateRunbookRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Runbook created; it runs asynchronously", body = RunbookDocument),
        (status = 403, description = "The token may not act for the repository's organisation (the one named, or the one GitHub says owns it now)", body = ErrorBody),
        (status = 402, description = "The organisation's monthly budget (model tokens or agent minutes) is spent: `budget-exhausted`", body = ErrorBody),
        (status = 422, description = "The app is not installed on the repository, or it does not exist", body = ErrorBody),
        (status = 502, description = "GitHub could not be asked", body = ErrorBody),
        TokenErrors, BodyErrors,
    )
)]
pub async fn create_runbook(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<CreateRunbookRequest>,
) -> Result<(StatusCode, Json<RunbookDocument>), ApiError> {
    caller.confirm(&state).await?;
    let created = state
        .app
        .create(request.into(), &caller.token)
        .await
        .map_err(|e| caller.refused(&state, e))?;
    let summary = RunbookSummary {
        number: created.number,
        org: created.runbook.org,
        repo: created.runbook.repo,
        title: created.runbook.title,
        counts: StepCounts::default(),
        pull_requests: Vec::new(),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(RunbookDocument::new(&state.public_url, summary)),
    ))
}

/// Get a runbook's status.
#[utoipa::path(
    get,
    path = "/api/v1/runbook/{runbook_number}",
    tag = "runbooks",
    params(RunbookNumber),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The runbook document", body = RunbookDocument),
        (status = 404, description = "No such runbook, or not visible to this token", body = ErrorBody),
        TokenErrors, NumberErrors,
    )
)]
pub async fn get_runbook(
    State(state): State<AppState>,
    caller: Caller,
    RunbookNumber(number): RunbookNumber,
) -> Result<Json<RunbookDocument>, ApiError> {
    let summary = visible_summary(&state, &caller, number).await?;
    Ok(Json(RunbookDocument::new(&state.public_url, summary)))
}

/// Send a follow-up instruction to a runbook.
///
/// The prompt runs as new steps appended to the plan, on the same branch and pull requests.
/// `description` replaces the stored one; `labels` are merged into the stored ones.
#[utoipa::path(
    patch,
    path = "/api/v1/runbook/{runbook_number}",
    tag = "runbooks",
    params(RunbookNumber),
    request_body = UpdateRunbookRequest,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Follow-up accepted", body = RunbookDocument),
        (status = 402, description = "The organisation's monthly budget (model tokens or agent minutes) is spent: `budget-exhausted`", body = ErrorBody),
        (status = 404, description = "No such runbook, or not visible to this token", body = ErrorBody),
        TokenErrors, NumberErrors, BodyErrors,
    )
)]
pub async fn update_runbook(
    State(state): State<AppState>,
    caller: Caller,
    RunbookNumber(number): RunbookNumber,
    JsonBody(request): JsonBody<UpdateRunbookRequest>,
) -> Result<(StatusCode, Json<RunbookDocument>), ApiError> {
    state
        .app
        .follow_up(number, caller.actor(), request.into())
        .await
        .map_err(|e| caller.refused(&state, e))?;
    let summary = visible_summary(&state, &caller, number).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunbookDocument::new(&state.public_url, summary)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_numbers() {
        assert_eq!(runbook_number("12").unwrap().get(), 12);
        for bad in ["0", "-1", "+1", "abc", "1.5", "99999999999999999999", ""] {
            assert!(runbook_number(bad).is_err(), "{bad}");
        }
    }
}
