//! Signing in with an API token, the session cookie, and the checks every form goes through.
//!
//! - `POST /login` takes a token (form field `token`, never a URL) and, when it names an
//!   active token, opens a session: a random 256-bit id in the `runbooks_session` cookie
//!   (`HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` behind an `https` public URL). The store
//!   keeps only the id's SHA-256, the token's id, a CSRF secret and the expiry (12 h).
//! - Every request looks the session up together with its token in one round trip: a revoked
//!   token's sessions stop working with the next request.
//! - Every POST sends the session's CSRF secret back in a hidden field, and its `Origin` (or,
//!   without one, its `Referer`) must be the public URL's when the browser sends it.
//! - Every sign-in attempt costs the client address one of `RUNBOOKS_AUTH_RATE_LIMIT`'s
//!   attempts a minute (shared with API requests presenting unknown tokens) before the
//!   token is looked up: past it, the form answers 429 with `Retry-After`.

use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use serde::Deserialize;

use super::pages::{self, Ctx};
use super::{Failure, FormBody, redirect};
use crate::http::AppState;
use crate::ops::Actor;
use crate::store::{DashboardSession, NewDashboardSession, now_ms};
use crate::tokens;

/// The session cookie's name.
pub const COOKIE: &str = "runbooks_session";

/// How long a session lasts (it ends earlier when its token is revoked or on sign-out).
pub const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// A signed-in person: the session and the token it was opened with.
#[derive(Debug, Clone)]
pub struct Reader {
    pub session: DashboardSession,
    /// The SHA-256 of the session id, as stored.
    pub session_hash: String,
}

impl Reader {
    /// The session's token as the application layer knows it (confirmed with the session).
    pub fn actor(&self) -> Actor<'_> {
        Actor::Token {
            token: &self.session.token,
            confirm: None,
        }
    }

    /// Whether the session's token may see this repository's runbooks.
    pub fn may_see(&self, org: &str, repo: &str) -> bool {
        self.actor().may_act_for(org, repo)
    }

    pub fn csrf(&self) -> &str {
        &self.session.csrf_secret
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The session id carried by the request's cookie, if it has the shape of one.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The request's session, if it has a live one.
pub async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<Reader>, Failure> {
    let Some(id) = session_id(headers) else {
        return Ok(None);
    };
    let session_hash = tokens::hash(&id);
    let session = state
        .store()
        .dashboard_session(&session_hash, now_ms())
        .await?;
    Ok(session.map(|session| Reader {
        session,
        session_hash,
    }))
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = Response;

    /// Without a session, a page asks to sign in (and comes back afterwards); anything else
    /// is refused with 401.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match current(state, &parts.headers).await {
            Ok(Some(reader)) => Ok(reader),
            Ok(None) => {
                let ctx = Ctx::anonymous(state);
                if parts.method == Method::GET || parts.method == Method::HEAD {
                    let here = parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/");
                    let next = ctx.href(here);
                    Err(redirect(&format!(
                        "{}?next={}",
                        ctx.href("/login"),
                        super::encode(&next)
                    )))
                } else {
                    Err(Failure::new(
                        StatusCode::UNAUTHORIZED,
                        "You are not signed in (or your session ended). Sign in and try again; nothing was changed.",
                    )
                    .into_response())
                }
            }
            Err(failure) => Err(failure.into_response()),
        }
    }
}

/// Whether `next` is a path on this site (`/…` but not `//…` or `/\…`, which browsers take
/// for another host), made of printable characters only.
pub fn is_local_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && next.bytes().all(|b| b.is_ascii_graphic())
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            &url[..i + 3 + end]
        }
        None => url,
    }
}

/// The same-origin check of a POST: `Origin` when sent, else `Referer` when sent, must be
/// the public URL's origin. A browser always sends one of them for a cross-site form.
pub fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let ours = origin_of(&state.public_url);
    let get = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    if let Some(origin) = get(header::ORIGIN) {
        return origin.eq_ignore_ascii_case(ours);
    }
    if let Some(referer) = get(header::REFERER) {
        return origin_of(referer).eq_ignore_ascii_case(ours);
    }
    true
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The checks of every POST made with a session: same origin, and the session's CSRF secret.
pub fn check_form(
    state: &AppState,
    headers: &HeaderMap,
    reader: &Reader,
    csrf: Option<&str>,
) -> Result<(), Failure> {
    let refused = || {
        Failure::new(
            StatusCode::FORBIDDEN,
            "This form did not come from this dashboard (or is out of date), so nothing was \
             changed. Reload the page and try again.",
        )
    };
    if !same_origin(state, headers) {
        return Err(refused());
    }
    match csrf {
        Some(csrf) if constant_time_eq(csrf.as_bytes(), reader.csrf().as_bytes()) => Ok(()),
        _ => Err(refused()),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// `GET /login`: the sign-in form.
pub async fn login_form(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let ctx = Ctx::anonymous(&state);
    let next = query.next.filter(|n| is_local_path(n));
    pages::login(&ctx, next.as_deref(), None, StatusCode::OK)
}

/// `POST /login`: a valid token opens a session and goes on to `next` (a local path) or to
/// the list; anything else shows the form again.
pub async fn login(
    State(state): State<AppState>,
    client: crate::http::client_addr::ClientAddr,
    headers: HeaderMap,
    form: FormBody<LoginForm>,
) -> Response {
    let ctx = Ctx::anonymous(&state);
    if !same_origin(&state, &headers) {
        return Failure::new(
            StatusCode::FORBIDDEN,
            "This sign-in form did not come from this dashboard.",
        )
        .into_response();
    }
    let form = match form.0 {
        Ok(form) => form,
        Err(failure) => return failure.into_response(),
    };
    let next = form.next.filter(|n| is_local_path(n));
    if let Err(crate::http::ApiError::RateLimited { retry_after, .. }) = state.check_client(client)
    {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut page = pages::login(
            &ctx,
            next.as_deref(),
            Some(&format!(
                "Too many sign-in attempts from your address: try again in {} s.",
                secs.max(1)
            )),
            StatusCode::TOO_MANY_REQUESTS,
        );
        page.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return page;
    }
    let presented = form.token.trim();
    let token = if tokens::well_formed(presented) {
        match state.store().active_token(&tokens::hash(presented)).await {
            Ok(token) => token,
            Err(e) => return Failure::from(e).into_response(),
        }
    } else {
        None
    };
    let Some(token) = token else {
        return pages::login(
            &ctx,
            next.as_deref(),
            Some("That token is not valid: it is unknown or revoked."),
            StatusCode::UNAUTHORIZED,
        );
    };
    let id = random_hex();
    let now = now_ms();
    let session = NewDashboardSession {
        session_hash: tokens::hash(&id),
        token_id: token.id,
        csrf_secret: random_hex(),
        created_at_ms: now,
        expires_at_ms: now + LIFETIME.as_millis() as i64,
    };
    if let Err(e) = state.store().create_dashboard_session(&session).await {
        return Failure::from(e).into_response();
    }
    tracing::info!(token_id = token.id, "dashboard sign-in");
    let to = next.unwrap_or_else(|| ctx.href("/runbooks"));
    let mut response = redirect(&to);
    let secure = if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        LIFETIME.as_secs()
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie of hex digits"),
    );
    response
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// `POST /logout`: ends the session (CSRF-checked) and forgets the cookie.
pub async fn logout(
    State(state): State<AppState>,
    reader: Reader,
    headers: HeaderMap,
    form: FormBody<CsrfForm>,
) -> Result<Response, Failure> {
    let form = form.0?;
    check_form(&state, &headers, &reader, form.csrf.as_deref())?;
    state
        .store()
        .delete_dashboard_session(&reader.session_hash)
        .await?;
    let ctx = Ctx::anonymous(&state);
    let mut response = redirect(&ctx.href("/login"));
    let secure = if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}"
        ))
        .expect("a plain cookie"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert!(is_local_path("/runbooks/3"));
        assert!(is_local_path(
            "/runbooks?status=failed&repository=acme%2Fweb"
        ));
        for bad in [
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example/",
            "runbooks",
            "",
            "/a b",
            "/a\nb",
            "javascript:alert(1)",
        ] {
            assert!(!is_local_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://rb.example.com/base"),
            "https://rb.example.com"
        );
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(origin_of("http://h:1/x?y#z"), "http://h:1");
        assert_eq!(origin_of("http://h:1?y"), "http://h:1");
    }

    #[test]
    fn session_ids_come_from_the_cookie_header_only_when_well_formed() {
        let mut headers = HeaderMap::new();
        let id = "a".repeat(64);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={id}; x=y")).unwrap(),
        );
        assert_eq!(session_id(&headers), Some(id));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("{COOKIE}=short")).unwrap(),
        );
        assert_eq!(session_id(&headers), None);
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
