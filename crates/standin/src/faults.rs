//! Fault injection: make the next N matching requests fail the way GitHub fails.
//!
//! GitHub's failures that a client must survive: 5xx from its front ends (a 502 often with
//! an HTML body, not JSON), secondary rate limits (403 *or* 429, with `Retry-After`), primary
//! rate limits (403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset`), 401 when a
//! token is revoked under the client's feet, and lost answers (GitHub did the work, the
//! connection broke before the client heard so).

use std::time::{Duration, SystemTime};

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::state::epoch;

/// What the faulty answer looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// 500 `{"message": "Server Error"}`.
    ServerError,
    /// 502 with an HTML body, as GitHub's front ends answer when the backend is unavailable.
    BadGateway,
    /// 403 with `Retry-After` and GitHub's secondary-rate-limit message.
    SecondaryRateLimit { retry_after: Duration },
    /// 429 with `Retry-After` (GitHub also answers secondary limits with 429).
    TooManyRequests { retry_after: Duration },
    /// 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` `reset_in` from now.
    PrimaryRateLimit { reset_in: Duration },
    /// 401 `Bad credentials`.
    Unauthorized,
    /// The request is handled as usual, then its answer is lost: the connection breaks
    /// after the status line, before the body. The client cannot tell whether it took
    /// effect (it did).
    LostAnswer,
}

/// A rule: the next `times` requests whose path starts with `path_prefix` (and whose method
/// is `method`, when set) get the faulty answer instead of being handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub method: Option<Method>,
    pub path_prefix: String,
    pub times: u32,
}

impl Fault {
    /// A fault of `kind` for the next request under `path_prefix`, any method.
    pub fn new(kind: FaultKind, path_prefix: impl Into<String>) -> Fault {
        Fault {
            kind,
            method: None,
            path_prefix: path_prefix.into(),
            times: 1,
        }
    }

    pub fn server_error(path_prefix: impl Into<String>) -> Fault {
        Fault::new(FaultKind::ServerError, path_prefix)
    }

    pub fn bad_gateway(path_prefix: impl Into<String>) -> Fault {
        Fault::new(FaultKind::BadGateway, path_prefix)
    }

    pub fn secondary_rate_limit(path_prefix: impl Into<String>, retry_after: Duration) -> Fault {
        Fault::new(FaultKind::SecondaryRateLimit { retry_after }, path_prefix)
    }

    pub fn too_many_requests(path_prefix: impl Into<String>, retry_after: Duration) -> Fault {
        Fault::new(FaultKind::TooManyRequests { retry_after }, path_prefix)
    }

    pub fn primary_rate_limit(path_prefix: impl Into<String>, reset_in: Duration) -> Fault {
        Fault::new(FaultKind::PrimaryRateLimit { reset_in }, path_prefix)
    }

    pub fn lost_answer(path_prefix: impl Into<String>) -> Fault {
        Fault::new(FaultKind::LostAnswer, path_prefix)
    }

    pub fn unauthorized(path_prefix: impl Into<String>) -> Fault {
        Fault::new(FaultKind::Unauthorized, path_prefix)
    }

    /// Only requests with this method (`"POST"`, `"PATCH"` …) match.
    ///
    /// # Panics
    /// When `method` is not a valid HTTP method token (a test bug).
    pub fn method(mut self, method: &str) -> Fault {
        self.method = Some(Method::from_bytes(method.as_bytes()).expect("a valid HTTP method"));
        self
    }

    /// The fault applies to this many matching requests (default 1).
    pub fn times(mut self, times: u32) -> Fault {
        self.times = times;
        self
    }

    pub(crate) fn matches(&self, method: &Method, path: &str) -> bool {
        self.times > 0
            && self.method.as_ref().is_none_or(|m| m == method)
            && path.starts_with(&self.path_prefix)
    }

    /// The faulty response. `request_id` goes into the secondary-rate-limit message, as
    /// GitHub puts it there for support requests.
    pub(crate) fn response(&self, request_id: &str, now: SystemTime) -> Response {
        match &self.kind {
            FaultKind::ServerError => super::http::error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Server Error",
                super::http::DOCS_URL,
            ),
            FaultKind::BadGateway => (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>502 Bad Gateway</h1>\nThe server returned an invalid or incomplete response.\n</body></html>\n",
            )
                .into_response(),
            FaultKind::SecondaryRateLimit { retry_after } => {
                secondary(StatusCode::FORBIDDEN, *retry_after, request_id)
            }
            FaultKind::TooManyRequests { retry_after } => {
                secondary(StatusCode::TOO_MANY_REQUESTS, *retry_after, request_id)
            }
            FaultKind::PrimaryRateLimit { reset_in } => {
                let mut response = super::http::error_response(
                    StatusCode::FORBIDDEN,
                    "API rate limit exceeded for installation. If you reach out to GitHub Support for help, please include the request ID.",
                    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                );
                let headers = response.headers_mut();
                headers.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
                headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
                headers.insert("x-ratelimit-used", HeaderValue::from_static("5000"));
                headers.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
                headers.insert("x-ratelimit-reset", HeaderValue::from(epoch(now + *reset_in)));
                response
            }
            FaultKind::Unauthorized => super::http::error_response(
                StatusCode::UNAUTHORIZED,
                "Bad credentials",
                super::http::DOCS_URL,
            ),
            // Handled by the caller: the request is served, then `lose` breaks the answer.
            FaultKind::LostAnswer => super::http::error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Server Error",
                super::http::DOCS_URL,
            ),
        }
    }

    /// Whether the request is to be served (and its answer lost) rather than refused.
    pub(crate) fn serves(&self) -> bool {
        self.kind == FaultKind::LostAnswer
    }
}

fn secondary(status: StatusCode, retry_after: Duration, request_id: &str) -> Response {
    let message = format!(
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID {request_id}."
    );
    let mut response = super::http::error_response(
        status,
        &message,
        "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs()),
    );
    response
}

/// `response` with its body replaced by a stream that fails at once: the client gets the
/// status line and headers, then a broken connection.
pub(crate) fn lose(response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let broken = futures_util::stream::once(async {
        Err::<bytes::Bytes, std::io::Error>(std::io::Error::other("the answer was lost"))
    });
    Response::from_parts(parts, axum::body::Body::from_stream(broken))
}
