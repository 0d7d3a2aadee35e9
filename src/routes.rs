//! Every front door's routes in one router, and what they share: each request must be
//! answered within the request timeout (503 otherwise; a streamed body such as the
//! dashboard's live updates is not cut, only the wait for its start), and a path whose
//! percent-decoding is not UTF-8 is refused with 400 before any route sees it — JSON
//! everywhere, the dashboard's page on the dashboard's paths.

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::http::{ApiError, AppState, json};

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

/// The application's routes: the REST API's, GraphQL's and the dashboard's.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::api::routes())
        .merge(crate::graphql::router())
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
