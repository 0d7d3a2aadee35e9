//! The dashboard: the page behind every runbook's `url`, the list of runbooks, and the
//! actions (execute, retry, cancel, open the pull request) as plain HTML forms.
//!
//! Pages are rendered on the server and read fine without JavaScript; a small inline script
//! swaps in live updates sent as server-sent events (see [`live`]). People sign in with an
//! API token at `/login` (see [`session`]) and see the runbooks of that token's
//! organisations, exactly as the token would through the API.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /login`, `POST /login`, `POST /logout` | sign in with a token (form field `token`), sign out |
//! | `GET /runbooks` | the list, newest first; `repository`, `status` filters; `before` pages |
//! | `GET /runbooks/{n}` | a runbook: steps, states, errors, output, commits, PRs, actions |
//! | `GET /runbooks/{n}/events` | server-sent events: the live part of the page when it changes |
//! | `POST /runbooks/{n}/execute`, `…/retry`, `…/cancel`, `…/pull_requests` | the actions (CSRF-checked) |
//!
//! Pages served elsewhere — `GET /api/graphql`, and the 400 for a dashboard path that is not
//! UTF-8 — are rendered here and carry the same security headers ([`graphql_page`],
//! [`failure_page`]).

pub mod live;
mod pages;
pub mod session;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::domain::runbook::{check_org, check_repo};
use crate::domain::{RunbookNumber, RunbookStatus, StepCounts, StepNumber};
use crate::http::AppState;
use crate::ops::{Action, OpError, RunbookQuery};
use crate::store::{PullWithSteps, RunbookRecord, StepRecord, Store, StoreError, ThreadRecord};
use pages::Ctx;
pub use session::Reader;

/// Forms are small; nothing larger is read.
const FORM_LIMIT: usize = 16 * 1024;

/// Runbooks on one page of the list.
const PAGE_SIZE: usize = 25;

/// The dashboard's routes (merged into [`crate::api::router`], which gives them the state).
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/runbooks", get(list))
        .route("/runbooks/{number}", get(detail))
        .route("/runbooks/{number}/events", get(live::events))
        .route(
            "/runbooks/{number}/execute",
            action(Action::Execute { up_to: None }),
        )
        .route("/runbooks/{number}/retry", action(Action::Retry))
        .route("/runbooks/{number}/cancel", action(Action::Cancel))
        .route(
            "/runbooks/{number}/pull_requests",
            action(Action::OpenPullRequest),
        )
        .layer(middleware::map_response_with_state(state, finish))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
}

/// Whether a path is one of the dashboard's (its failures are pages, not JSON).
pub fn owns(path: &str) -> bool {
    matches!(path, "/" | "/login" | "/logout")
        || path == "/runbooks"
        || path.starts_with("/runbooks/")
}

/// The page of a failure found outside the dashboard's routes, with its security headers.
pub fn failure_page(state: &AppState, status: StatusCode, message: &str) -> Response {
    secure(pages::failure(&Ctx::anonymous(state), status, message))
}

/// The page explaining the GraphQL endpoint (`GET /api/graphql`), with the dashboard's
/// security headers.
pub fn graphql_page(state: &AppState, sdl: &str) -> Response {
    secure(pages::graphql(
        &Ctx::anonymous(state),
        &state.public_url,
        sdl,
    ))
}

/// Renders failures as pages, and puts the security headers on every answer.
async fn finish(State(state): State<AppState>, response: Response) -> Response {
    let response = match response.extensions().get::<Failure>() {
        Some(failure) => pages::failure(&Ctx::anonymous(&state), failure.status, &failure.message),
        None => response,
    };
    secure(response)
}

/// The security headers of every dashboard answer: no framing, no caching, no referrer to
/// other sites, and a strict content policy when the page did not set its own (pages allow
/// their inline style and script by nonce).
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            ),
        );
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A request the dashboard cannot serve: answered as a page saying why (see [`finish`]).
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn runbook_not_found(number: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("Runbook {number} was not found."),
        )
    }
}

/// A command or listing the application refused, as a page: the database's failures are the
/// operator's (logged, not shown), the rest say why with their status.
impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Store(e) => e.into(),
            OpError::NotFound(number) => Failure::runbook_not_found(number),
            e => {
                if let OpError::GitHub(e) = &e {
                    tracing::warn!(error = %e, "GitHub call failed");
                }
                Failure::new(e.status(), e.to_string())
            }
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        // The cause goes to the log, never to the page.
        tracing::error!(error = %e, "dashboard request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on the server; try again in a moment.",
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// A form body, or why it could not be read (so a handler decides what comes first).
pub struct FormBody<T>(pub Result<T, Failure>);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for FormBody<T> {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let form = axum::Form::<T>::from_request(req, state).await;
        Ok(FormBody(form.map(|f| f.0).map_err(|e: FormRejection| {
            Failure::new(
                e.status(),
                "The form could not be read; use the dashboard's own forms.",
            )
        })))
    }
}

/// `303 See Other` to a path of this site.
pub(crate) fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/runbooks")),
    );
    response
}

/// Percent-encodes a query value.
pub(crate) fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

/// Everything the page of a runbook shows.
#[derive(Debug, Clone)]
pub struct RunbookView {
    pub runbook: RunbookRecord,
    pub steps: Vec<StepRecord>,
    pub pulls: Vec<PullWithSteps>,
    pub thread: Option<ThreadRecord>,
    /// What planning it by an agent used; `None` when no agent planned it.
    pub planning: Option<crate::domain::Usage>,
    /// How the repository's setup last ran; `None` when it has none or has not started.
    pub setup: Option<crate::domain::SetupReport>,
}

impl RunbookView {
    pub async fn load(
        store: &dyn Store,
        number: RunbookNumber,
    ) -> Result<Option<Self>, StoreError> {
        let Some(runbook) = store.runbook(number).await? else {
            return Ok(None);
        };
        let numbers = [number];
        let (steps, mut pulls, thread, planning, setup) = tokio::try_join!(
            store.steps(number),
            store.pull_requests_of(&numbers),
            store.thread(number),
            store.plan_usage(number),
            store.setup_report(number),
        )?;
        Ok(Some(Self {
            runbook,
            steps,
            pulls: pulls.remove(&number).unwrap_or_default(),
            thread,
            planning,
            setup,
        }))
    }

    /// The runbook's view for a reader who may see it; `None` alike for a runbook that does
    /// not exist and one of another organisation.
    async fn visible(
        store: &dyn Store,
        reader: &Reader,
        number: RunbookNumber,
    ) -> Result<Option<Self>, StoreError> {
        Ok(Self::load(store, number)
            .await?
            .filter(|view| reader.may_see(&view.runbook.org, &view.runbook.repo)))
    }

    pub fn counts(&self) -> StepCounts {
        StepCounts::from_states(self.steps.iter().filter(|s| s.is_leaf).map(|s| s.state))
    }
}

/// A runbook number from the path: a positive whole number.
fn runbook_number(raw: &str) -> Result<RunbookNumber, Failure> {
    raw.parse::<RunbookNumber>()
        .map_err(|_| Failure::runbook_not_found(raw))
}

async fn home(State(state): State<AppState>) -> Response {
    redirect(&Ctx::anonymous(&state).href("/runbooks"))
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    repository: Option<String>,
    status: Option<String>,
    before: Option<String>,
}

/// `GET /runbooks`: the runbooks of the reader's organisations, newest first.
async fn list(
    State(state): State<AppState>,
    reader: Reader,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let ctx = Ctx::signed_in(&state, &reader);
    let asked = query.map(|q| q.0).unwrap_or_default();
    let repository = asked.repository.unwrap_or_default().trim().to_string();
    let status_text = asked.status.unwrap_or_default().trim().to_string();
    let shown = pages::ListQueryShown {
        repository: repository.clone(),
        status: status_text.clone(),
    };
    let bad = |message: String| {
        pages::list(
            &ctx,
            &shown,
            &[],
            None,
            Some(&message),
            StatusCode::BAD_REQUEST,
        )
    };

    let mut query = RunbookQuery {
        first: PAGE_SIZE,
        ..RunbookQuery::default()
    };
    if !repository.is_empty() {
        let (org, name) = match repository.split_once('/') {
            Some((org, name)) => (Some(org), name),
            None => (None, repository.as_str()),
        };
        if let Some(org) = org
            && let Err(e) = check_org("repository", org)
        {
            return Ok(bad(format!("{e} (use org/name or name)")));
        }
        if let Err(e) = check_repo("repository", name) {
            return Ok(bad(format!("{e} (use org/name or name)")));
        }
        query.org = org.map(str::to_string);
        query.repository = Some(name.to_string());
    }
    if !status_text.is_empty() {
        match RunbookStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == status_text)
        {
            Some(s) => query.status = Some(s),
            None => return Ok(bad(format!("There is no status `{status_text}`."))),
        }
    };
    query.before = match asked.before.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => match raw.parse::<i64>().map(RunbookNumber::try_from) {
            Ok(Ok(n)) => Some(n),
            _ => {
                return Ok(bad(format!(
                    "`before` must be a runbook number, not `{raw}`."
                )));
            }
        },
    };

    let page = state.app.list(reader.actor(), &query).await?;
    let numbers: Vec<RunbookNumber> = page.runbooks.iter().map(|r| r.record.number).collect();
    let mut pulls = state.store().pull_requests_of(&numbers).await?;
    let rows: Vec<pages::ListRow> = page
        .runbooks
        .into_iter()
        .map(|listed| pages::ListRow {
            pulls: pulls
                .remove(&listed.record.number)
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.record.number, p.record.url))
                .collect(),
            runbook: listed.record,
            status: listed.status,
            counts: listed.counts,
        })
        .collect();
    let next_before = page.next_before;
    let next = next_before.map(|before| {
        let mut href = format!("/runbooks?before={before}");
        if !repository.is_empty() {
            href.push_str(&format!("&repository={}", encode(&repository)));
        }
        if !status_text.is_empty() {
            href.push_str(&format!("&status={}", encode(&status_text)));
        }
        ctx.href(&href)
    });
    Ok(pages::list(&ctx, &shown, &rows, next, None, StatusCode::OK))
}

/// `GET /runbooks/{n}`: the page behind the runbook's `url`.
async fn detail(
    State(state): State<AppState>,
    reader: Reader,
    Path(raw): Path<String>,
) -> Result<Response, Failure> {
    let number = runbook_number(&raw)?;
    let view = RunbookView::visible(state.store().as_ref(), &reader, number)
        .await?
        .ok_or_else(|| Failure::runbook_not_found(number))?;
    let ctx = Ctx::signed_in(&state, &reader);
    Ok(pages::detail(&ctx, &view, None, StatusCode::OK))
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: Option<String>,
    /// For execute: up to this step (all when empty).
    step: Option<String>,
}

/// The route of one of the page's actions: a POST handled by [`act`].
fn action(action: Action) -> MethodRouter<AppState> {
    post(
        move |state: State<AppState>,
              reader: Reader,
              headers: HeaderMap,
              raw: Path<String>,
              form: FormBody<ActionForm>| {
            act(state, reader, headers, raw, form, action.clone())
        },
    )
}

/// An action from the page's forms: checked (same origin, the session's CSRF secret, the
/// runbook visible to the session's token), done through [`crate::ops`] like the API's, then
/// back to the page (303); an action the runbook's state forbids shows the page with the
/// reason (409).
async fn act(
    State(state): State<AppState>,
    reader: Reader,
    headers: HeaderMap,
    Path(raw): Path<String>,
    FormBody(form): FormBody<ActionForm>,
    action: Action,
) -> Result<Response, Failure> {
    let csrf = form.as_ref().ok().and_then(|f| f.csrf.as_deref());
    session::check_form(&state, &headers, &reader, csrf)?;
    let form = form?;
    let number = runbook_number(&raw)?;
    let store = state.store().as_ref();
    let action = match action {
        // The step comes from the form (all of them when empty).
        Action::Execute { .. } => Action::Execute {
            up_to: form
                .step
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::parse::<StepNumber>)
                .transpose()
                .map_err(|e| {
                    Failure::new(StatusCode::BAD_REQUEST, format!("`step` is invalid: {e}"))
                })?,
        },
        other => other,
    };
    let done = state.app.act(number, reader.actor(), &action).await;
    let ctx = Ctx::signed_in(&state, &reader);
    match done {
        Ok(()) => Ok(redirect(&ctx.href(&format!("/runbooks/{number}")))),
        Err(e @ (OpError::Store(_) | OpError::NotFound(_))) => Err(e.into()),
        // Refused, or GitHub failed: the page again, saying why.
        Err(e) => {
            if let OpError::GitHub(e) = &e {
                tracing::warn!(error = %e, "GitHub call failed");
            }
            let view = RunbookView::visible(store, &reader, number)
                .await?
                .ok_or_else(|| Failure::runbook_not_found(number))?;
            let reason = format!("{}: {e}.", action_name(&action));
            Ok(pages::detail(&ctx, &view, Some(&reason), e.status()))
        }
    }
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Execute { .. } => "Could not execute",
        Action::Retry => "Could not retry",
        Action::Cancel => "Could not cancel",
        Action::OpenPullRequest => "Could not open the pull request",
    }
}
