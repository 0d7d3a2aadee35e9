//! Live updates of a runbook's page: `GET /runbooks/{n}/events`, server-sent events.
//!
//! Each connection polls the store (every [`POLL`]) and compares a fingerprint of the live
//! part of the page — status, actions, step tree, pull requests — with the last one it sent;
//! when it differs it sends the part re-rendered (event `live`, the fingerprint as its id).
//! Polling the shared database makes this work across replicas: whichever replica runs the
//! step, every replica serving a page sees the change. The session is confirmed on every
//! poll, so a revoked token's streams end too.
//!
//! A stream ends after [`MAX_STREAM`] (the browser reconnects by itself, sending the last
//! fingerprint as `Last-Event-ID`, so nothing is sent twice or missed) and when the client
//! goes away. The page carries the fingerprint it was rendered with (`?since=`), so a change
//! between the page and the stream is sent at once.
//!
//! One session keeps at most `RUNBOOKS_MAX_STREAMS_PER_SESSION` streams open in a process
//! ([`crate::http::SessionStreams`]); one more is refused with 429, which a browser's `EventSource` does not
//! retry (the page then says live updates stopped, and *Refresh* still works).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream;
use serde::Deserialize;
use tokio::time::Instant;

use super::pages::{self, Ctx};
use super::session::{self, Reader};
use super::{Failure, RunbookView, runbook_number};
use crate::domain::RunbookNumber;
use crate::http::{AppState, SessionStream};
use crate::store::now_ms;

/// How often a connection looks at the store.
pub const POLL: Duration = Duration::from_millis(500);

/// How long one stream lasts before the browser is asked to reconnect (streams also end at
/// once when the server shuts down).
pub const MAX_STREAM: Duration = Duration::from_secs(30);

/// How soon the browser reconnects after a stream ends.
const RETRY: Duration = Duration::from_millis(500);

static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Event streams open in this process now.
pub fn open_streams() -> usize {
    OPEN.load(Ordering::SeqCst)
}

/// Counts a stream while it is open: dropped with the stream, when it ends or when the
/// client went away.
struct OpenStream;

impl OpenStream {
    fn new() -> Self {
        OPEN.fetch_add(1, Ordering::SeqCst);
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// The fingerprint of what the page already shows.
    since: Option<String>,
}

struct Watch {
    state: AppState,
    session_hash: String,
    number: RunbookNumber,
    ctx: Ctx,
    /// The fingerprint the client has.
    last: Option<String>,
    first: bool,
    ends: Instant,
    /// Turns `true` when the server shuts down.
    shutdown: tokio::sync::watch::Receiver<bool>,
    _open: OpenStream,
    _session: SessionStream,
}

/// `GET /runbooks/{n}/events`.
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Some(reader) = session::current(&state, &headers).await? else {
        return Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "Sign in to follow a runbook.",
        ));
    };
    let number = runbook_number(&raw)?;
    if RunbookView::visible(state.store().as_ref(), &reader, number)
        .await?
        .is_none()
    {
        return Err(Failure::runbook_not_found(number));
    }
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query.ok().and_then(|q| q.0.since));
    let Some(session_stream) = state.streams.open(&reader.session_hash) else {
        return Err(Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "This session follows too many runbooks at once; close a page or refresh this one.",
        ));
    };
    let shutdown = state.shutting_down.subscribe();
    let watch = Watch {
        ctx: Ctx::signed_in(&state, &reader),
        state,
        session_hash: reader.session_hash,
        number,
        last,
        first: true,
        ends: Instant::now() + MAX_STREAM,
        shutdown,
        _open: OpenStream::new(),
        _session: session_stream,
    };
    let events = stream::once(async { Ok(Event::default().retry(RETRY)) })
        .chain(stream::unfold(watch, next_event));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response();
    // Reverse proxies (nginx) must pass events on as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Waits for the next change of the live part; `None` ends the stream.
async fn next_event(mut watch: Watch) -> Option<(Result<Event, Infallible>, Watch)> {
    loop {
        if !std::mem::take(&mut watch.first) {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = watch.shutdown.wait_for(|down| *down) => return None,
            }
        }
        if Instant::now() >= watch.ends || *watch.shutdown.borrow() {
            return None;
        }
        let store = watch.state.store().as_ref();
        let reader = match store.dashboard_session(&watch.session_hash, now_ms()).await {
            Ok(Some(session)) => Reader {
                session,
                session_hash: watch.session_hash.clone(),
            },
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "live update: the session could not be read");
                continue;
            }
        };
        let view = match RunbookView::visible(store, &reader, watch.number).await {
            Ok(Some(view)) => view,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "live update: the runbook could not be read");
                continue;
            }
        };
        let fragment = pages::live(&watch.ctx, &view).into_string();
        let fingerprint = pages::fingerprint(&fragment, &watch.ctx);
        if watch.last.as_deref() == Some(fingerprint.as_str()) {
            continue;
        }
        watch.last = Some(fingerprint.clone());
        // A carriage return would end an SSE line; as a character reference it stays text.
        let data = fragment.replace('\r', "&#13;");
        let event = Event::default().event("live").id(fingerprint).data(data);
        return Some((Ok(event), watch));
    }
}
