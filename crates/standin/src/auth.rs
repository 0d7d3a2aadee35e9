//! GitHub's three ways in: the app's JWT (for `/app/...`), installation tokens (REST and
//! GraphQL), and HTTP Basic with an installation token as password (git over HTTPS).

use std::collections::BTreeSet;
use std::time::SystemTime;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use octocrab::jsonwebtoken::{Algorithm, Validation, decode};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde_json::Value;

use super::http::{ApiError, DOCS_URL};
use super::state::{Grant, Permissions, Shared, State, Token, epoch};

/// How far in the future GitHub tolerates `iat` (clock drift between app and GitHub).
const IAT_SKEW: u64 = 60;
/// GitHub refuses app JWTs that live longer than ten minutes.
const MAX_JWT_LIFETIME: u64 = 600;

const JWT_DOCS: &str = "https://docs.github.com/apps/building-github-apps/authenticating-with-github-apps#authenticating-as-a-github-app";

/// The credential in an `Authorization` header: `Bearer X` or `token X` (GitHub takes both
/// for tokens; JWTs only as `Bearer`).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credential) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        Some(credential.trim().to_string())
    } else {
        None
    }
}

fn jwt_error(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message).with_docs(JWT_DOCS)
}

/// Verifies the app JWT the way GitHub does: RS256 signed by the app's key, `iss` the app id
/// (GitHub takes it as a number or a numeric string), `exp` in the future, `iat` not more than
/// 60 s in the future, and at most ten minutes between `iat` and `exp`. Each failure gets
/// GitHub's own message.
pub(crate) fn verify_jwt(
    shared: &Shared,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<(), ApiError> {
    let Some(jwt) = bearer(headers) else {
        return Err(jwt_error("A JSON web token could not be decoded"));
    };
    let mut validation = Validation::new(Algorithm::RS256);
    // GitHub's own checks below, with its own messages; jsonwebtoken would reject a numeric
    // `iss` given as a string and vice versa.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = decode::<Value>(&jwt, &shared.decoding_key, &validation)
        .map_err(|_| jwt_error("A JSON web token could not be decoded"))?
        .claims;
    let iss = match claims.get("iss") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        _ => None,
    };
    let Some(iss) = iss else {
        return Err(jwt_error("'Issuer' claim ('iss') must be an Integer"));
    };
    if iss != shared.cfg.app_id {
        return Err(
            ApiError::new(StatusCode::UNAUTHORIZED, "Integration not found").with_docs(JWT_DOCS),
        );
    }
    let now = epoch(now);
    let int = |name: &str| claims.get(name).and_then(Value::as_u64);
    let Some(iat) = int("iat").filter(|iat| *iat <= now + IAT_SKEW) else {
        return Err(jwt_error(
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        ));
    };
    let Some(exp) = int("exp").filter(|exp| *exp > now) else {
        return Err(jwt_error(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        ));
    };
    if exp.saturating_sub(iat) > MAX_JWT_LIFETIME {
        return Err(jwt_error(
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    Ok(())
}

/// A new installation token: `ghs_` and 36 alphanumerics, like GitHub's. `repositories` and
/// `permissions` narrow it (`None`: every repository of the installation, every permission
/// of the app).
pub(crate) fn mint_token(
    state: &mut State,
    installation: u64,
    repositories: Option<BTreeSet<String>>,
    permissions: Option<Permissions>,
    now: SystemTime,
) -> (String, SystemTime) {
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(36)
        .map(char::from)
        .collect();
    let token = format!("ghs_{suffix}");
    let expires_at = now + state.token_lifetime;
    state.tokens.insert(
        token.clone(),
        Token {
            installation,
            expires_at,
            repositories,
            permissions,
        },
    );
    (token, expires_at)
}

/// Looks an installation token up. Unknown, expired and uninstalled tokens are all
/// `401 Bad credentials`, as on GitHub.
pub(crate) fn grant_for(state: &State, token: &str, now: SystemTime) -> Option<Grant> {
    let t = state.tokens.get(token)?;
    if t.expires_at <= now || !state.installations.contains_key(&t.installation) {
        return None;
    }
    Some(Grant {
        installation: t.installation,
        repositories: t.repositories.clone(),
        permissions: t.permissions.clone(),
    })
}

pub(crate) fn bad_credentials() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "Bad credentials").with_docs(DOCS_URL)
}

/// Authenticates a REST or GraphQL request by installation token.
pub(crate) fn installation_grant(
    shared: &Shared,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Grant, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "Requires authentication").with_docs(DOCS_URL)
    })?;
    grant_for(&shared.lock(), &token, now).ok_or_else(bad_credentials)
}

/// The password of an HTTP Basic `Authorization` header. GitHub ignores the user name for
/// installation tokens (`x-access-token` by convention).
pub(crate) fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, password) = decoded.split_once(':')?;
    Some(password.to_string())
}
