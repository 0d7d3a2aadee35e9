//! API errors, always answered as `{"error": "<kebab-case-code>", "message": "<sentence>"}`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::FieldError;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, kebab-case code such as `bad-request`, `unauthorized` or `not-found`.
    #[schema(example = "bad-request")]
    pub error: String,
    /// A sentence for people; for a rejected field it names the field.
    #[schema(example = "`prompt` must not be empty")]
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// No token, or one that is unknown, malformed or revoked.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    /// The request does not fit the runbook's state (e.g. nothing to retry).
    #[error("{0}")]
    Conflict(String),
    /// Over a rate limit: `of` says whose (`for this token`, `from this address`).
    #[error("too many requests {of}; retry in {} s", retry_after.as_secs().max(1))]
    RateLimited {
        retry_after: Duration,
        of: &'static str,
    },
    /// The organisation's monthly budget is spent.
    #[error("{0}")]
    BudgetExhausted(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A webhook whose signature does not match (no bearer challenge: GitHub signs instead).
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BudgetExhausted(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::PayloadTooLarge { .. } => "payload-too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::Unprocessable(_) => "unprocessable-entity",
            ApiError::Conflict(_) => "conflict",
            ApiError::RateLimited { .. } => "rate-limited",
            ApiError::BudgetExhausted(_) => "budget-exhausted",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::BadSignature(_) => "bad-signature",
            ApiError::BadGateway(_) => "github-unavailable",
            ApiError::Unavailable(_) => "service-unavailable",
            ApiError::Internal(_) => "internal-error",
        }
    }

    pub fn runbook_not_found(number: impl std::fmt::Display) -> Self {
        ApiError::NotFound(format!("runbook {number} was not found"))
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<crate::github::GitHubError> for ApiError {
    fn from(e: crate::github::GitHubError) -> Self {
        tracing::warn!(error = %e, "GitHub call failed");
        ApiError::BadGateway(format!("GitHub could not be asked: {e}"))
    }
}

/// The status comes from [`crate::ops::OpError::status`], where every front door's comes from.
impl From<crate::ops::OpError> for ApiError {
    fn from(e: crate::ops::OpError) -> Self {
        use crate::ops::OpError;
        match e {
            OpError::Store(e) => e.into(),
            OpError::GitHub(e) => e.into(),
            OpError::NotFound(number) => ApiError::runbook_not_found(number),
            OpError::Invalid(e) => e.into(),
            e => {
                let message = e.to_string();
                match e.status() {
                    StatusCode::UNAUTHORIZED => ApiError::Unauthorized(message),
                    StatusCode::FORBIDDEN => ApiError::Forbidden(message),
                    StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(message),
                    StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(message),
                    StatusCode::CONFLICT => ApiError::Conflict(message),
                    StatusCode::PAYMENT_REQUIRED => ApiError::BudgetExhausted(message),
                    status => ApiError::Internal(anyhow::anyhow!("{message} ({status})")),
                }
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            // The cause goes to the log, never to the client.
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let status = self.status();
        let body = ErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"runbooks\""),
                );
            }
            ApiError::RateLimited { retry_after, .. } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        response
    }
}
