//! The REST API: its endpoints, health checks and the OpenAPI description.

pub mod actions;
pub mod runbooks;
pub mod schema;
pub mod webhooks;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::http::{ApiError, AppState, ErrorBody};

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

/// The REST API's routes, health checks and the OpenAPI document (see `crate::routes`).
pub fn routes() -> Router<AppState> {
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
        .route("/readyz", get(readyz))
}
