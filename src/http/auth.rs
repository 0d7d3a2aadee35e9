//! Bearer-token authentication and per-token rate limiting.
//!
//! Tokens are looked up by their SHA-256. A token found once is kept in a small in-memory
//! cache, but a cached token is never trusted on its own: every read confirms it in the same
//! database round trip that reads the data ([`crate::store::RunbookStore::read_runbook`]),
//! and every write confirms it first ([`Caller::confirm`]). So a token revoked from the
//! command line (another process) stops working with the very next request, while a status
//! poll costs one round trip instead of two.
//!
//! Presenting a token this process does not know yet (or a malformed one) costs the client
//! address an attempt of `RUNBOOKS_AUTH_RATE_LIMIT` before the database is asked: guessing
//! tokens is refused with 429 long before it gets anywhere, while a real client's token is
//! looked up once and then served from the cache.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::client_addr::ClientAddr;
use super::{ApiError, AppState};
use crate::ops::{Actor, OpError};
use crate::store::TokenInfo;
use crate::tokens;

/// Tokens seen recently, by hash. Bounded: cleared when full (tokens are few in practice).
#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<String, TokenInfo>>,
    /// Lookups under way, by hash: requests that present the same unknown token at once
    /// wait for the first one's lookup instead of each costing the address an attempt (a
    /// client firing 40 requests with a token this process has not seen yet is one attempt,
    /// not 40).
    lookups: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

const TOKEN_CACHE_CAPACITY: usize = 10_000;

impl TokenCache {
    fn get(&self, hash: &str) -> Option<TokenInfo> {
        self.entries
            .read()
            .expect("token cache lock")
            .get(hash)
            .cloned()
    }

    fn insert(&self, hash: String, token: TokenInfo) {
        let mut entries = self.entries.write().expect("token cache lock");
        if entries.len() >= TOKEN_CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(hash, token);
    }

    /// The lock of `hash`'s lookup; whoever holds it looks the token up.
    fn lookup_lock(&self, hash: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lookups
            .lock()
            .expect("token lookups lock")
            .entry(hash.to_string())
            .or_default()
            .clone()
    }

    fn lookup_done(&self, hash: &str) {
        self.lookups
            .lock()
            .expect("token lookups lock")
            .remove(hash);
    }

    /// The token of `hash` and whether it came from the cache. On a miss `look_up` answers
    /// it; requests presenting the same hash at once run it only once: the others wait for
    /// that lookup and take its answer from the cache.
    async fn get_or_look_up(
        &self,
        hash: &str,
        look_up: impl Future<Output = Result<Option<TokenInfo>, ApiError>>,
    ) -> Result<(TokenInfo, bool), ApiError> {
        if let Some(token) = self.get(hash) {
            return Ok((token, true));
        }
        let lock = self.lookup_lock(hash);
        let _looking = lock.lock().await;
        if let Some(token) = self.get(hash) {
            return Ok((token, true));
        }
        let found = look_up.await;
        if let Ok(Some(token)) = &found {
            self.insert(hash.to_string(), token.clone());
        }
        self.lookup_done(hash);
        Ok((found?.ok_or_else(invalid)?, false))
    }

    /// Drops a token found revoked.
    pub fn forget(&self, hash: &str) {
        self.entries.write().expect("token cache lock").remove(hash);
    }
}

/// The authenticated caller of an API request: the token it presented.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: TokenInfo,
    /// The token's hash, for confirming it along with a read.
    pub token_hash: String,
    /// Whether the token came from the cache (not yet confirmed by this request).
    cached: bool,
}

impl Caller {
    /// The caller as the application layer knows it: the token, confirmed in the same
    /// round trip as the runbook it reads.
    pub fn actor(&self) -> Actor<'_> {
        Actor::Token {
            token: &self.token,
            confirm: Some(&self.token_hash),
        }
    }

    /// The answer for a command the application refused; a token found revoked also leaves
    /// the cache.
    pub fn refused(&self, state: &AppState, error: OpError) -> ApiError {
        match error {
            OpError::TokenRevoked => self.revoked(state),
            error => error.into(),
        }
    }

    /// Makes sure the token is still active before a write.
    pub async fn confirm(&self, state: &AppState) -> Result<(), ApiError> {
        if self.cached
            && state
                .store()
                .active_token(&self.token_hash)
                .await?
                .is_none()
        {
            return Err(self.revoked(state));
        }
        Ok(())
    }

    /// The answer for a token found revoked; it also leaves the cache.
    pub fn revoked(&self, state: &AppState) -> ApiError {
        state.tokens.forget(&self.token_hash);
        invalid()
    }

    /// Takes `n` more requests from the token's rate limit, for a request that does the work
    /// of several (a GraphQL request running many top-level fields): 429 when the budget
    /// left is smaller, 400 when no budget could ever cover it.
    pub fn take_more(&self, state: &AppState, n: u32) -> Result<(), ApiError> {
        let (Some(limiter), Some(n)) = (&state.limiter, NonZeroU32::new(n)) else {
            return Ok(());
        };
        match limiter.check_key_n(&self.token.id, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(rate_limited(not_until)),
            Err(governor::InsufficientCapacity(capacity)) => Err(ApiError::BadRequest(format!(
                "this request does the work of {} requests, more than the {capacity} a minute \
                 this server allows a token (RUNBOOKS_RATE_LIMIT): split it",
                u64::from(n.get()) + 1
            ))),
        }
    }
}

fn rate_limited(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> ApiError {
    let retry_after = not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::DefaultClock::default(),
    ));
    ApiError::RateLimited {
        retry_after,
        of: "for this token",
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
        let client = || ClientAddr::of(parts, &state.trusted_proxies);
        if !tokens::well_formed(presented) {
            state.check_client(client())?;
            return Err(invalid());
        }
        let token_hash = tokens::hash(presented);
        let (token, cached) = state
            .tokens
            .get_or_look_up(&token_hash, async {
                state.check_client(client())?;
                Ok(state.store().active_token(&token_hash).await?)
            })
            .await?;
        if let Some(limiter) = &state.limiter
            && let Err(not_until) = limiter.check_key(&token.id)
        {
            return Err(rate_limited(not_until));
        }
        Ok(Caller {
            token,
            token_hash,
            cached,
        })
    }
}
