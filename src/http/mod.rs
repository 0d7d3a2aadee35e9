//! What the HTTP front doors (the REST API, GraphQL, the dashboard) share: the state every
//! handler gets, bearer-token authentication and its cache, client addresses and their
//! limits, the JSON body extractor, and the error answer. Below `api/`, `graphql/` and
//! `dashboard/`, which take their state from here rather than from one another;
//! `routes.rs` puts them together.

pub mod auth;
pub mod client_addr;
pub mod error;
pub mod json;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
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
    pub streams: Arc<SessionStreams>,
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
            streams: Arc::new(SessionStreams::new(DEFAULT_STREAMS_PER_SESSION)),
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

/// The streams each session has open in this process, bounded per session.
#[derive(Debug)]
pub struct SessionStreams {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

impl SessionStreams {
    pub fn new(max_per_session: usize) -> Self {
        Self {
            max: max_per_session,
            open: Mutex::default(),
        }
    }

    /// Counts one more stream for the session, unless it has the most it may have.
    pub(crate) fn open(self: &Arc<Self>, session_hash: &str) -> Option<SessionStream> {
        let mut open = self.open.lock().expect("session streams lock");
        let count = open.entry(session_hash.to_string()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(SessionStream {
            streams: self.clone(),
            session_hash: session_hash.to_string(),
        })
    }
}

/// One stream of a session, counted until dropped.
pub(crate) struct SessionStream {
    streams: Arc<SessionStreams>,
    session_hash: String,
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().expect("session streams lock");
        if let Some(count) = open.get_mut(&self.session_hash) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.session_hash);
            }
        }
    }
}
