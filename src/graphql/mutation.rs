//! Mutations: the REST API's writes, each answering the runbook as it is afterwards.

use async_graphql::{Context, InputObject, Object};

use super::loaders::Loaders;
use super::query::{check_number, visible};
use super::types::{PrMode, Runbook};
use super::{OrGraphql, RequestContext};
use crate::domain::{FollowUpRequest, RunbookNumber, RunbookRequest, StepNumber};
use crate::http::ApiError;
use crate::ops::{Action, OpError};

/// The repository a runbook runs against.
#[derive(InputObject, Debug, Clone)]
pub struct RepositoryInput {
    /// GitHub organisation (or user) name.
    pub org: String,
    /// Repository name.
    pub name: String,
}

/// A new runbook: the fields, defaults and checks of `POST /api/v1/runbook`.
#[derive(InputObject, Debug, Clone)]
pub struct CreateRunbookInput {
    pub repository: RepositoryInput,
    /// The task, in plain words (with the script agent: the runbook template layout).
    pub prompt: String,
    /// Generated from the prompt's first line when missing.
    pub title: Option<String>,
    /// Run every step without waiting (default true); false waits for `executeRunbook`.
    pub oneshot: Option<bool>,
    /// Keep pull requests drafts (default: the repository's `.github/runbooks.yml`, else
    /// false).
    pub draft: Option<bool>,
    /// How pull requests are opened (default: the repository's `.github/runbooks.yml`,
    /// else `SINGLE_PR`).
    pub pr_mode: Option<PrMode>,
    /// The branch to start from and open pull requests into (default: the repository's
    /// default branch).
    pub target_branch: Option<String>,
    /// Text put first in the body of every pull request the runbook opens.
    pub description: Option<String>,
    /// Labels applied to every pull request (de-duplicated, order kept).
    pub labels: Option<Vec<String>>,
    /// Who the runbook is attributed to in pull request bodies and commit trailers.
    pub author_email: Option<String>,
}

/// A follow-up instruction: the fields and checks of `PATCH /api/v1/runbook/<n>`.
#[derive(InputObject, Debug, Clone)]
pub struct UpdateRunbookInput {
    /// Run as new steps appended to the plan, on the same branch and pull requests.
    pub prompt: String,
    /// Replaces the text put first in pull request bodies.
    pub description: Option<String>,
    /// Merged into the runbook's labels (never removes any).
    pub labels: Option<Vec<String>>,
}

pub struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Creates a runbook; it runs in the background (status `GENERATING_STEPS` at first).
    async fn create_runbook(
        &self,
        ctx: &Context<'_>,
        input: CreateRunbookInput,
    ) -> async_graphql::Result<Runbook> {
        create(ctx, input).await.or_graphql()
    }

    /// Sends a follow-up instruction, run as new steps on the same branch and pull requests.
    async fn update_runbook(
        &self,
        ctx: &Context<'_>,
        number: i64,
        input: UpdateRunbookInput,
    ) -> async_graphql::Result<Runbook> {
        update(ctx, number, input).await.or_graphql()
    }

    /// Runs a runbook created with `oneshot: false`: every unfinished step, or with `step`,
    /// that step (all leaves under it) and every unfinished step before it.
    async fn execute_runbook(
        &self,
        ctx: &Context<'_>,
        number: i64,
        step: Option<String>,
    ) -> async_graphql::Result<Runbook> {
        let up_to = step
            .map(|step| {
                step.parse::<StepNumber>()
                    .map_err(|e| ApiError::BadRequest(format!("`step` is invalid: {e}")))
            })
            .transpose();
        act(ctx, number, up_to.map(|up_to| Action::Execute { up_to }))
            .await
            .or_graphql()
    }

    /// Runs the failed steps, and the not-started ones after them, again.
    async fn retry_runbook(
        &self,
        ctx: &Context<'_>,
        number: i64,
    ) -> async_graphql::Result<Runbook> {
        act(ctx, number, Ok(Action::Retry)).await.or_graphql()
    }

    /// Stops the runbook: the running step fails with `cancelled`, queued steps wait.
    async fn cancel_runbook(
        &self,
        ctx: &Context<'_>,
        number: i64,
    ) -> async_graphql::Result<Runbook> {
        act(ctx, number, Ok(Action::Cancel)).await.or_graphql()
    }

    /// Opens the pull request of a `MANUAL` runbook's branch now.
    async fn open_pull_request(
        &self,
        ctx: &Context<'_>,
        number: i64,
    ) -> async_graphql::Result<Runbook> {
        act(ctx, number, Ok(Action::OpenPullRequest))
            .await
            .or_graphql()
    }
}

/// A command refused: a rejected field named as the input names it (REST's
/// `target_branch` is `input.targetBranch` here), anything else as every front door says it.
fn refused(request: &RequestContext, error: OpError) -> ApiError {
    match error {
        OpError::Invalid(field) => ApiError::BadRequest(field.camel_case("input")),
        error => request.caller.refused(&request.state, error),
    }
}

/// After a change: what the request read before is stale.
fn changed(ctx: &Context<'_>) {
    ctx.data_unchecked::<Loaders>().forget();
}

async fn reread(ctx: &Context<'_>, number: RunbookNumber) -> Result<Runbook, ApiError> {
    visible(ctx.data_unchecked::<RequestContext>(), number)
        .await?
        .ok_or_else(|| ApiError::runbook_not_found(number))
}

async fn create(ctx: &Context<'_>, input: CreateRunbookInput) -> Result<Runbook, ApiError> {
    let request = ctx.data_unchecked::<RequestContext>();
    let runbook = RunbookRequest {
        org: input.repository.org,
        repo: input.repository.name,
        prompt: input.prompt,
        title: input.title,
        oneshot: input.oneshot,
        draft: input.draft,
        pr_mode: input.pr_mode.map(Into::into),
        target_branch: input.target_branch,
        description: input.description,
        labels: input.labels,
        author_email: input.author_email,
    };
    let created = request
        .state
        .app
        .create(runbook, &request.caller.token)
        .await
        .map_err(|e| refused(request, e))?;
    changed(ctx);
    reread(ctx, created.number).await
}

async fn update(
    ctx: &Context<'_>,
    number: i64,
    input: UpdateRunbookInput,
) -> Result<Runbook, ApiError> {
    let request = ctx.data_unchecked::<RequestContext>();
    let number = check_number(number)?;
    let follow_up = FollowUpRequest {
        prompt: input.prompt,
        description: input.description,
        labels: input.labels,
    };
    request
        .state
        .app
        .follow_up(number, request.caller.actor(), follow_up)
        .await
        .map_err(|e| refused(request, e))?;
    changed(ctx);
    reread(ctx, number).await
}

/// Carries out `action` (already read from the arguments, or why it could not be; the
/// number is checked first), then answers the runbook as it is now.
async fn act(
    ctx: &Context<'_>,
    number: i64,
    action: Result<Action, ApiError>,
) -> Result<Runbook, ApiError> {
    let request = ctx.data_unchecked::<RequestContext>();
    let number = check_number(number)?;
    let action = action?;
    request
        .state
        .app
        .act(number, request.caller.actor(), &action)
        .await
        .map_err(|e| refused(request, e))?;
    changed(ctx);
    reread(ctx, number).await
}
