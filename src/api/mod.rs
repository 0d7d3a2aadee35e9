//! The HTTP API: REST endpoints, health checks and the OpenAPI description.
//!
//! The router also holds what every front door shares: each request must be answered within
//! the request timeout (503 otherwise; a streamed body such as the dashboard's live updates
//! is not cut, only the wait for its start), and a path whose percent-decoding is not UTF-8
//! is refused with 400 before any route sees it — JSON everywhere, the dashboard's page on
//! the dashboard's paths.

pub mod actions;
pub mod auth;
pub mod client_addr;
pub mod error;
pub mod json;
pub mod runbooks;
pub mod schema;
pub mod webhooks;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use secrecy::SecretString;

use crate::intake::Intake;
use crate::ops::App;
use crate::store::Store;
pub use error::{ApiError, ErrorBody};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The application layer every front door acts through (and its store, for reads).
    pub app: App,
    /// Base of `url` fields, without a trailing slash.
    pub public_url: Arc<str>,
    /// Requests per token; `None` when the limit is off.
    pub limiter: Option<Arc<DefaultKeyedRateLimiter<i64>>>,
    /// Secrets webhook signatures are checked against (several during a rotation).
    pub webhook_secrets: Arc<[SecretString]>,
    pub intake: Intake,
    /// Tokens seen recently (always confirmed against the database, see `auth`).
    pub tokens: Arc<auth::TokenCache>,
    /// Turns `true` when the server begins a graceful shutdown: long-lived responses (the
    /// dashboard's event streams) end then, so the shutdown does not wait for them.
    pub shutting_down: Arc<tokio::sync::watch::Sender<bool>>,
    /// Sign-ins and checks of tokens not in the cache, per client address (see
    /// [`client_addr`]); `None` when the limit is off.
    pub clients: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// The dashboard's live-update streams open per session.
    pub streams: Arc<crate::dashboard::live::SessionStreams>,
    /// How long a request may take to be answered.
    pub request_timeout: Duration,
}

/// Defaults of [`AppState::new`]; the server sets its own from the configuration.
pub const DEFAULT_AUTH_RATE_LIMIT: u32 = 30;
pub const DEFAULT_STREAMS_PER_SESSION: usize = 8;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl AppState {
    pub fn new(app: App, public_url: &str, rate_limit_per_minute: u32) -> Self {
        Self {
            app,
            public_url: public_url.trim_end_matches('/').into(),
            limiter: NonZeroU32::new(rate_limit_per_minute)
                .map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n)))),
            webhook_secrets: Arc::new([]),
            intake: Intake::default(),
            tokens: Arc::default(),
            shutting_down: Arc::new(tokio::sync::watch::Sender::new(false)),
            clients: None,
            trusted_proxies: Arc::new([]),
            streams: Arc::new(crate::dashboard::live::SessionStreams::new(
                DEFAULT_STREAMS_PER_SESSION,
            )),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
        .with_auth_rate_limit(DEFAULT_AUTH_RATE_LIMIT)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.app.store()
    }

    /// Sets the budget of sign-ins and unknown-token checks per client address and minute
    /// (0: no limit).
    pub fn with_auth_rate_limit(mut self, per_minute: u32) -> Self {
        self.clients =
            NonZeroU32::new(per_minute).map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n))));
        self
    }

    /// Takes one attempt from the client's budget of sign-ins and unknown-token checks.
    pub fn check_client(&self, client: client_addr::ClientAddr) -> Result<(), ApiError> {
        let (Some(limiter), Some(key)) = (&self.clients, client.limit_key()) else {
            return Ok(());
        };
        limiter
            .check_key(&key)
            .map_err(|not_until| ApiError::RateLimited {
                retry_after: not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                )),
                of: "from this address",
            })
    }

    /// Lets the rate limiters forget keys whose budget is full again (their memory would
    /// otherwise grow with every address ever seen).
    pub fn forget_idle_limits(&self) {
        if let Some(limiter) = &self.clients {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "runbooks",
        description = "Runbooks REST API, compatible with Aviator's Runbooks API. Every \
                       error is `{\"error\": \"<code>\", \"message\": \"<sentence>\"}`."
    ),
    paths(runbooks::create_runbook, runbooks::get_runbook, runbooks::update_runbook,
          actions::execute, actions::retry, actions::cancel, actions::steps,
          actions::open_pull_request,
          healthz, readyz, openapi_json),
    modifiers(&BearerAuth, &RunbookLinks),
    tags((name = "runbooks", description = "Create runbooks and follow their progress"),
         (name = "operations", description = "Health and description of the service"))
)]
pub struct ApiDoc;

/// Links every operation on `/api/v1/runbook/{runbook_number}…` from the creation's answer
/// (`runbook_number` from its body), so clients and tools that follow OpenAPI links (a
/// stateful tester among them) know where a new runbook's number goes.
struct RunbookLinks;

impl utoipa::Modify for RunbookLinks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, link::LinkBuilder};
        let linked: Vec<String> = openapi
            .paths
            .paths
            .iter()
            .filter(|(path, _)| path.contains("{runbook_number}"))
            .flat_map(|(_, item)| {
                [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                    .into_iter()
                    .flatten()
                    .filter_map(|operation| operation.operation_id.clone())
            })
            .collect();
        let created = openapi
            .paths
            .paths
            .get_mut("/api/v1/runbook")
            .and_then(|item| item.post.as_mut())
            .and_then(|post| post.responses.responses.get_mut("202"));
        if let Some(RefOr::T(response)) = created {
            for operation_id in linked {
                let link = LinkBuilder::new()
                    .operation_id(&operation_id)
                    .parameter("runbook_number", "$response.body#/runbook_number")
                    .description("The runbook just created")
                    .build();
                response.links.insert(operation_id, RefOr::T(link));
            }
        }
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from `runbooks token create`"))
                    .build(),
            ),
        );
    }
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready to serve", body = String),
              (status = 503, description = "The database does not answer", body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.store().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::Unavailable("the database does not answer".into())
    })?;
    Ok("ready")
}

/// This document: the OpenAPI 3 description of the REST API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json() -> impl IntoResponse {
    Json(document())
}

/// The OpenAPI description as served.
///
/// utoipa 5 writes the fields of a response's links in snake case (`operation_id`), where
/// OpenAPI spells them `operationId`, `operationRef` and `requestBody`; they are renamed here.
pub fn document() -> serde_json::Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let operations = document
        .get_mut("paths")
        .and_then(|paths| paths.as_object_mut())
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let links = operation
            .get_mut("responses")
            .and_then(|responses| responses.as_object_mut())
            .into_iter()
            .flat_map(|responses| responses.values_mut())
            .filter_map(|response| response.get_mut("links")?.as_object_mut())
            .flat_map(|links| links.values_mut())
            .filter_map(|link| link.as_object_mut());
        for link in links {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(from) {
                    link.insert(to.to_string(), value);
                }
            }
        }
    }
    document
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this endpoint does not accept that method".into())
}

/// Refuses a path that is not UTF-8 once percent-decoded (`/api/v1/runbook/%FF`) before a
/// route's extractor answers it in plain text: 400 in the error format of the front door
/// the path belongs to.
async fn readable_path(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .is_err()
    {
        if crate::dashboard::owns(path) {
            return crate::dashboard::failure_page(
                &state,
                axum::http::StatusCode::BAD_REQUEST,
                "This address is not valid: it is not UTF-8 once decoded.",
            );
        }
        return ApiError::BadRequest("the path is not valid UTF-8 once percent-decoded".into())
            .into_response();
    }
    next.run(request).await
}

/// The answer to a request not answered within the request timeout.
async fn timed_out(state: AppState, error: tower::BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::Unavailable(format!(
            "the request was not answered within {} and was abandoned; try again",
            humantime::format_duration(state.request_timeout)
        ))
    } else {
        ApiError::Internal(anyhow::anyhow!(error))
    }
}

/// The application's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/runbook", post(runbooks::create_runbook))
        .route(
            "/api/v1/runbook/{runbook_number}",
            get(runbooks::get_runbook).patch(runbooks::update_runbook),
        )
        .route(
            "/api/v1/runbook/{runbook_number}/execute",
            post(actions::execute),
        )
        .route(
            "/api/v1/runbook/{runbook_number}/retry",
            post(actions::retry),
        )
        .route(
            "/api/v1/runbook/{runbook_number}/cancel",
            post(actions::cancel),
        )
        .route(
            "/api/v1/runbook/{runbook_number}/steps",
            get(actions::steps),
        )
        .route(
            "/api/v1/runbook/{runbook_number}/pull_requests",
            post(actions::open_pull_request),
        )
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/webhooks/github", post(webhooks::receive))
        .route("/healthz", get(healthz))
        .merge(crate::graphql::router())
        .route("/readyz", get(readyz))
        .merge(crate::dashboard::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by `JsonBody` under its own limit; this only stops huge uploads
        // to endpoints that take none.
        .layer(axum::extract::DefaultBodyLimit::max(json::MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), readable_path))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new({
                    let state = state.clone();
                    move |error| timed_out(state.clone(), error)
                }))
                .layer(tower::timeout::TimeoutLayer::new(state.request_timeout)),
        )
        .with_state(state)
}
