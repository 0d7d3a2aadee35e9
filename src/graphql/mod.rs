//! The GraphQL API: `POST /api/graphql` executes, `GET /api/graphql` serves a page saying
//! how (with the schema), under the dashboard's security headers. GraphiQL is not served: it
//! would be third-party script on the origin that holds dashboard sessions.
//!
//! Same bearer tokens, organisation scoping and rate limit as the REST API (the [`Caller`]
//! extractor), the same request body rules (the [`JsonBody`] extractor: JSON only, 1 MiB),
//! and the same operations ([`crate::ops`]). Runbooks of organisations the token may not
//! see do not exist here: `runbook` answers null, listings leave them out, mutations answer
//! `not-found`.
//!
//! Errors are GraphQL errors whose `extensions.code` is the REST error code (`bad-request`,
//! `forbidden`, `not-found`, `conflict`, `unprocessable-entity`, …); errors the GraphQL
//! layer finds itself (syntax, unknown fields, limits) are `bad-request`. A missing or
//! invalid token is refused at the HTTP level, exactly as REST does (401, `WWW-Authenticate`).
//!
//! A page of runbooks costs a constant number of SQL statements whatever its size and
//! selection: the listing, then one batched read each for steps, pull requests and threads
//! (see [`loaders`]).
//!
//! Before async-graphql parses and validates a request, [`limits`] bounds what that may cost
//! (text size, nesting, fragments, fields and aliases with fragments expanded) in time linear
//! in the text, and counts the top-level fields the request runs: each one takes a request
//! from the token's rate limit, so aliased fields and mutations cost what separate requests
//! would.

pub mod limits;
mod loaders;
mod mutation;
mod query;
mod types;

use std::sync::OnceLock;

use async_graphql::{EmptySubscription, ErrorExtensions, Schema, ServerError};
use async_graphql_axum::GraphQLResponse;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};

use crate::http::auth::Caller;
use crate::http::json::JsonBody;
use crate::http::{ApiError, AppState};

pub use mutation::MutationRoot;
pub use query::QueryRoot;

/// Where the API is served.
pub const PATH: &str = "/api/graphql";

/// Deepest query accepted. Data queries reach 6 levels at most (`runbooks { edges { node {
/// steps { number } } } }`); GraphiQL's introspection query (graphql-js, `typeDepth` 9)
/// reaches 15, and needs to pass.
pub const MAX_DEPTH: usize = 15;

/// Most complex query accepted: every field counts 1, and the fields under `runbooks`
/// count once per runbook asked for (`first`). A page of 25 runbooks with everything on
/// them passes; 100 runbooks with a dozen fields each pass too.
pub const MAX_COMPLEXITY: usize = 2000;

pub type RunbooksSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// The schema, with its limits.
pub fn schema() -> RunbooksSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// The schema in SDL, e.g. for documentation.
pub fn sdl() -> String {
    schema().sdl()
}

/// What resolvers know about the request: the server and who asks.
pub(crate) struct RequestContext {
    pub state: AppState,
    pub caller: Caller,
}

/// The GraphQL routes, to merge into the application's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(PATH, get(page).post(execute))
        .layer(Extension(schema()))
}

async fn execute(
    State(state): State<AppState>,
    Extension(schema): Extension<RunbooksSchema>,
    caller: Caller,
    JsonBody(mut request): JsonBody<async_graphql::Request>,
) -> Result<GraphQLResponse, ApiError> {
    let mut response = match limits::check(&request.query, request.operation_name.as_deref()) {
        Err(refused) => {
            async_graphql::Response::from_errors(vec![ServerError::new(refused.to_string(), None)])
        }
        Ok(checked) => {
            // The extractor took one request from the token's budget; the other top-level
            // fields take theirs before anything runs.
            caller.take_more(&state, checked.cost.saturating_sub(1))?;
            if let Some(document) = checked.document {
                request.set_parsed_query(document);
            }
            // A cached token is confirmed once per request, before anything is read or
            // written: a revoked token stops working with the next request, as with REST.
            caller.confirm(&state).await?;
            let loaders = loaders::Loaders::new(state.store().clone());
            let request = request.data(RequestContext { state, caller }).data(loaders);
            schema.execute(request).await
        }
    };
    // Errors of the GraphQL layer itself (syntax, validation, limits, coercion of
    // arguments) carry no code: they are bad requests.
    for error in &mut response.errors {
        let coded = error
            .extensions
            .as_ref()
            .is_some_and(|e| e.get("code").is_some());
        if !coded {
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", "bad-request");
        }
    }
    Ok(response.into())
}

/// `GET /api/graphql`: how to use the endpoint, and the schema.
async fn page(State(state): State<AppState>) -> Response {
    static SDL: OnceLock<String> = OnceLock::new();
    crate::dashboard::graphql_page(&state, SDL.get_or_init(sdl))
}

/// An [`ApiError`] as a GraphQL error: its sentence, and its REST code in
/// `extensions.code`. Internal causes go to the log, never to the client.
pub(crate) fn graphql_error(error: ApiError) -> async_graphql::Error {
    if let ApiError::Internal(cause) = &error {
        tracing::error!(error = format!("{cause:#}"), "GraphQL request failed");
    }
    let code = error.code();
    async_graphql::Error::new(error.to_string()).extend_with(|_, e| e.set("code", code))
}

/// Resolvers work with [`ApiError`]; this turns their results into GraphQL's (a plain `?`
/// would drop the code).
pub(crate) trait OrGraphql<T> {
    fn or_graphql(self) -> async_graphql::Result<T>;
}

impl<T, E: Into<ApiError>> OrGraphql<T> for Result<T, E> {
    fn or_graphql(self) -> async_graphql::Result<T> {
        self.map_err(|e| graphql_error(e.into()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_has_the_documented_shape() {
        let sdl = super::sdl();
        println!("{sdl}");
        for line in [
            "runbook(number: Int!): Runbook",
            "runbooks(filter: RunbookFilter, first: Int! = 20, after: String): RunbookConnection!",
            "createRunbook(input: CreateRunbookInput!): Runbook!",
            "updateRunbook(number: Int!, input: UpdateRunbookInput!): Runbook!",
            "executeRunbook(number: Int!, step: String): Runbook!",
            "retryRunbook(number: Int!): Runbook!",
            "cancelRunbook(number: Int!): Runbook!",
            "openPullRequest(number: Int!): Runbook!",
            "GENERATING_STEPS",
            "PARTIALLY_COMPLETED",
            "stepCounts: StepCounts!",
            "pullRequests: [PullRequest!]!",
            "usage: Usage!",
            "planningUsage: Usage",
            "usage: Usage\n",
            "wallMs: Int!",
            "agentCpuMs: Int!",
            "promptTokens: Int\n",
            "completionTokens: Int\n",
            "scalar DateTime",
        ] {
            assert!(sdl.contains(line), "missing `{line}` in:\n{sdl}");
        }
    }
}
