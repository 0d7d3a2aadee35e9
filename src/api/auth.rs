//! Bearer-token authentication and per-token rate limiting.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::store::TokenInfo;
use crate::tokens;

/// The authenticated caller of an API request: the token it presented.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: TokenInfo,
}

impl Caller {
    /// Whether the token may see and act on repositories of this organisation.
    pub fn may_act_for(&self, org: &str) -> bool {
        self.token.orgs.iter().any(|o| o.eq_ignore_ascii_case(org))
    }
}

/// Reads `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 7235).
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::Unauthorized(
            "this endpoint needs an API token: send `Authorization: Bearer <token>`".into(),
        )
    };
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    match value.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(missing()),
    }
}

fn invalid() -> ApiError {
    ApiError::Unauthorized("the API token is not valid: it is unknown or revoked".into())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = bearer(parts)?;
        if !tokens::well_formed(presented) {
            return Err(invalid());
        }
        let token = state
            .store
            .active_token(&tokens::hash(presented))
            .await?
            .ok_or_else(invalid)?;
        if let Some(limiter) = &state.limiter
            && let Err(not_until) = limiter.check_key(&token.id)
        {
            let retry_after = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Err(ApiError::RateLimited { retry_after });
        }
        Ok(Caller { token })
    }
}
