//! The HTTP front door: one handler that parses GitHub's paths into [`Route`]s, applies
//! injected faults, authenticates, checks the token holds the permission the route needs
//! ([`Route::need`], the stand-in's one table of them), dispatches, adds GitHub's response
//! headers and records the exchange.
//!
//! A hand-written router (rather than axum's) keeps three GitHub behaviours in one place: an
//! unknown path or method is a JSON `404 Not Found` (GitHub never answers 405), every request
//! (including refused ones) is logged with its operation id, and faults are matched on the
//! raw path before any handler runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::state::{Access, Grant, RecordedRequest, Shared, State, epoch};
use super::{apps, auth, contents, git, graphql, issues, pulls};

/// GitHub's generic documentation link in error bodies.
pub(crate) const DOCS_URL: &str = "https://docs.github.com/rest";

/// GitHub's message (REST 403, GraphQL `FORBIDDEN`) for a token without the permission an
/// operation needs.
pub(crate) const NOT_ACCESSIBLE: &str = "Resource not accessible by integration";

/// GitHub's answer (403, plain text) to an API request without a `User-Agent` header.
const USER_AGENT_REFUSAL: &str = "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.\n";

/// Git pushes of whole repositories can be large; REST bodies are small.
const MAX_BODY: usize = 512 * 1024 * 1024;

/// An error answer in GitHub's shape: `{"message", "documentation_url", "errors"?}`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub documentation_url: String,
    pub errors: Option<Value>,
    /// `x-accepted-github-permissions` (`issues=write`): what the refused token lacked.
    pub accepted_permissions: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            documentation_url: DOCS_URL.to_string(),
            errors: None,
            accepted_permissions: None,
        }
    }

    pub fn with_docs(mut self, url: &str) -> ApiError {
        self.documentation_url = url.to_string();
        self
    }

    /// `404 Not Found`: GitHub's answer for anything the caller may not see, so that
    /// existence is not revealed.
    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "Not Found")
    }

    /// `403 Resource not accessible by integration`: GitHub's answer to an installation token
    /// that can see the repository but lacks the permission the route needs. GitHub names the
    /// permission it wanted in `x-accepted-github-permissions`.
    pub fn not_accessible(permission: &str, access: Access) -> ApiError {
        let mut error = ApiError::new(StatusCode::FORBIDDEN, NOT_ACCESSIBLE);
        error.accepted_permissions = Some(format!("{permission}={}", access.as_str()));
        error
    }

    /// `422 Validation Failed` with GitHub's `errors` array.
    pub fn validation(errors: Value, docs: &str) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "Validation Failed".to_string(),
            documentation_url: docs.to_string(),
            errors: Some(errors),
            accepted_permissions: None,
        }
    }

    /// `400 Problems parsing JSON`, GitHub's answer to a body that is not JSON.
    pub fn bad_json() -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "Problems parsing JSON")
    }

    /// `422 Invalid request.` for a JSON body whose fields have the wrong types.
    pub fn invalid(detail: &str) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid request.\n\n{detail}"),
        )
    }

    fn into_response(self) -> Response {
        let mut body = json!({
            "message": self.message,
            "documentation_url": self.documentation_url,
        });
        if let Some(errors) = self.errors {
            body["errors"] = errors;
        }
        let mut response = json_response(self.status, &body);
        if let Some(accepted) = self
            .accepted_permissions
            .and_then(|a| HeaderValue::from_str(&a).ok())
        {
            response
                .headers_mut()
                .insert("x-accepted-github-permissions", accepted);
        }
        response
    }
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        bytes,
    )
        .into_response()
}

/// A `{"message", "documentation_url"}` error response.
pub(crate) fn error_response(status: StatusCode, message: &str, docs: &str) -> Response {
    ApiError::new(status, message)
        .with_docs(docs)
        .into_response()
}

/// A successful JSON answer, with extra headers (`Link`, `Location` …).
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(HeaderName, String)>,
    /// A non-JSON body and its content type (raw file contents).
    pub raw: Option<(Vec<u8>, &'static str)>,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            headers: Vec::new(),
            raw: None,
        }
    }

    pub fn created(body: Value) -> Reply {
        Reply {
            status: StatusCode::CREATED,
            body,
            headers: Vec::new(),
            raw: None,
        }
    }

    /// `204 No Content`.
    pub fn no_content() -> Reply {
        Reply {
            status: StatusCode::NO_CONTENT,
            body: Value::Null,
            headers: Vec::new(),
            raw: Some((Vec::new(), "application/octet-stream")),
        }
    }

    /// A 200 with a non-JSON body.
    pub fn raw(bytes: Vec<u8>, content_type: &'static str) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Value::Null,
            headers: Vec::new(),
            raw: Some((bytes, content_type)),
        }
    }

    pub fn header(mut self, name: HeaderName, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    fn into_response(self) -> Response {
        let mut response = match self.raw {
            Some((_, _)) if self.status == StatusCode::NO_CONTENT => self.status.into_response(),
            Some((bytes, content_type)) => {
                (self.status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
            }
            None => json_response(self.status, &self.body),
        };
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

/// What a handler sees of the request.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub raw_query: Option<String>,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// The JSON body; an empty body counts as `{}` (octocrab and curl send none for some
    /// POSTs).
    pub fn json(&self) -> Result<Value, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        let value: Value = serde_json::from_slice(&self.body).map_err(|_| ApiError::bad_json())?;
        if value.is_object() {
            Ok(value)
        } else {
            Err(ApiError::invalid("Body must be a JSON object."))
        }
    }

    /// `per_page` (default 30, at most 100) and `page` (default 1), as GitHub pages lists.
    pub fn paging(&self) -> (usize, usize) {
        let per_page = self
            .query
            .get("per_page")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(30)
            .min(100);
        let page = self
            .query
            .get("page")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        (per_page, page)
    }
}

/// One page of `items` as a JSON array, with GitHub's `Link` header (`next`, `last`, `first`,
/// `prev`) when there is more than one page.
pub(crate) fn paginate(api_url: &str, req: &Req, items: Vec<Value>) -> Reply {
    let (per_page, page) = req.paging();
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let page_items: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut reply = Reply::ok(Value::Array(page_items));
    if last > 1 {
        let link_to = |n: usize| {
            let mut params: Vec<(String, String)> = req
                .query
                .iter()
                .filter(|(k, _)| k.as_str() != "page" && k.as_str() != "per_page")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            params.sort();
            params.push(("per_page".to_string(), per_page.to_string()));
            params.push(("page".to_string(), n.to_string()));
            let query: Vec<String> = params
                .iter()
                .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
                .collect();
            format!("<{api_url}{}?{}>", req.path, query.join("&"))
        };
        let mut links = Vec::new();
        if page < last {
            links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
            links.push(format!("{}; rel=\"last\"", link_to(last)));
        }
        if page > 1 {
            links.push(format!("{}; rel=\"first\"", link_to(1)));
            links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
        }
        reply = reply.header(header::LINK, links.join(", "));
    }
    reply
}

fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Who a route must be called by.
enum AuthKind {
    /// The app's JWT.
    App,
    /// An installation token.
    Installation,
    /// Git over HTTP: Basic auth, checked by the git module (its 401 differs).
    Git,
}

/// What a route asks of the installation token that calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// No installation token: the route takes the app's JWT.
    Nothing,
    /// This permission (GitHub's name) at this level or above.
    Permission(&'static str, Access),
    /// Each field of the GraphQL document needs its own ([`graphql_field_need`]).
    PerField,
}

/// The operations the stand-in serves.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    GetApp,
    ListInstallations,
    GetInstallation(u64),
    CreateToken(u64),
    RepoInstallation {
        owner: String,
        repo: String,
    },
    GetRepo {
        owner: String,
        repo: String,
    },
    GetIssue {
        owner: String,
        repo: String,
        number: u64,
    },
    ListComments {
        owner: String,
        repo: String,
        number: u64,
    },
    CreateComment {
        owner: String,
        repo: String,
        number: u64,
    },
    GetComment {
        owner: String,
        repo: String,
        id: u64,
    },
    UpdateComment {
        owner: String,
        repo: String,
        id: u64,
    },
    ListReactions {
        owner: String,
        repo: String,
        id: u64,
    },
    CreateReaction {
        owner: String,
        repo: String,
        id: u64,
    },
    ListLabels {
        owner: String,
        repo: String,
        number: u64,
    },
    AddLabels {
        owner: String,
        repo: String,
        number: u64,
    },
    Permission {
        owner: String,
        repo: String,
        user: String,
    },
    CreatePull {
        owner: String,
        repo: String,
    },
    ListPulls {
        owner: String,
        repo: String,
    },
    GetPull {
        owner: String,
        repo: String,
        number: u64,
    },
    UpdatePull {
        owner: String,
        repo: String,
        number: u64,
    },
    InstallationRepos,
    /// `GET /users/{username}` (the app's bot user's id makes its commit e-mail).
    GetUser {
        login: String,
    },
    GetContent {
        owner: String,
        repo: String,
        path: String,
    },
    DeleteRef {
        owner: String,
        repo: String,
        reference: String,
    },
    Graphql,
    /// `/git/{owner}/{repo}.git/{rest}`.
    Git {
        owner: String,
        repo: String,
        rest: String,
    },
}

impl Route {
    pub fn parse(method: &Method, path: &str) -> Option<Route> {
        if let Some(rest) = path.strip_prefix("/git/") {
            return git::parse_path(rest).map(|(owner, repo, rest)| Route::Git {
                owner,
                repo,
                rest,
            });
        }
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let num = |s: &str| s.parse::<u64>().ok();
        let s = |v: &str| v.to_string();
        let m = method.clone();
        Some(match (m, segs.as_slice()) {
            (Method::GET, ["app"]) => Route::GetApp,
            (Method::GET, ["app", "installations"]) => Route::ListInstallations,
            (Method::GET, ["app", "installations", id]) => Route::GetInstallation(num(id)?),
            (Method::POST, ["app", "installations", id, "access_tokens"]) => {
                Route::CreateToken(num(id)?)
            }
            (Method::POST, ["graphql"]) => Route::Graphql,
            (Method::GET, ["installation", "repositories"]) => Route::InstallationRepos,
            (Method::GET, ["users", login]) => Route::GetUser { login: s(login) },
            (Method::GET, ["repos", o, r]) => Route::GetRepo {
                owner: s(o),
                repo: s(r),
            },
            (Method::GET, ["repos", o, r, "installation"]) => Route::RepoInstallation {
                owner: s(o),
                repo: s(r),
            },
            (Method::GET, ["repos", o, r, "issues", "comments", id]) => Route::GetComment {
                owner: s(o),
                repo: s(r),
                id: num(id)?,
            },
            // GitHub accepts POST wherever it takes PATCH (for clients without PATCH);
            // octocrab's `update_comment` relies on it.
            (Method::PATCH | Method::POST, ["repos", o, r, "issues", "comments", id]) => {
                Route::UpdateComment {
                    owner: s(o),
                    repo: s(r),
                    id: num(id)?,
                }
            }
            (Method::GET, ["repos", o, r, "issues", "comments", id, "reactions"]) => {
                Route::ListReactions {
                    owner: s(o),
                    repo: s(r),
                    id: num(id)?,
                }
            }
            (Method::POST, ["repos", o, r, "issues", "comments", id, "reactions"]) => {
                Route::CreateReaction {
                    owner: s(o),
                    repo: s(r),
                    id: num(id)?,
                }
            }
            (Method::GET, ["repos", o, r, "issues", n]) => Route::GetIssue {
                owner: s(o),
                repo: s(r),
                number: num(n)?,
            },
            (Method::GET, ["repos", o, r, "issues", n, "comments"]) => Route::ListComments {
                owner: s(o),
                repo: s(r),
                number: num(n)?,
            },
            (Method::POST, ["repos", o, r, "issues", n, "comments"]) => Route::CreateComment {
                owner: s(o),
                repo: s(r),
                number: num(n)?,
            },
            (Method::GET, ["repos", o, r, "issues", n, "labels"]) => Route::ListLabels {
                owner: s(o),
                repo: s(r),
                number: num(n)?,
            },
            (Method::POST, ["repos", o, r, "issues", n, "labels"]) => Route::AddLabels {
                owner: s(o),
                repo: s(r),
                number: num(n)?,
            },
            (Method::GET, ["repos", o, r, "collaborators", u, "permission"]) => Route::Permission {
                owner: s(o),
                repo: s(r),
                user: s(u),
            },
            (Method::POST, ["repos", o, r, "pulls"]) => Route::CreatePull {
                owner: s(o),
                repo: s(r),
            },
            (Method::GET, ["repos", o, r, "pulls"]) => Route::ListPulls {
                owner: s(o),
                repo: s(r),
            },
            (Method::GET, ["repos", o, r, "pulls", n]) => Route::GetPull {
                owner: s(o),
                repo: s(r),
                number: num(n)?,
            },
            (Method::PATCH | Method::POST, ["repos", o, r, "pulls", n]) => Route::UpdatePull {
                owner: s(o),
                repo: s(r),
                number: num(n)?,
            },
            (Method::GET, ["repos", o, r, "contents", rest @ ..]) => Route::GetContent {
                owner: s(o),
                repo: s(r),
                path: rest.join("/"),
            },
            (Method::DELETE, ["repos", o, r, "git", "refs", rest @ ..]) if !rest.is_empty() => {
                Route::DeleteRef {
                    owner: s(o),
                    repo: s(r),
                    reference: rest.join("/"),
                }
            }
            _ => return None,
        })
    }

    /// GitHub's operation id (from its OpenAPI description) for the request log.
    pub fn operation(&self) -> &'static str {
        match self {
            Route::GetApp => "apps/get-authenticated",
            Route::ListInstallations => "apps/list-installations",
            Route::GetInstallation(_) => "apps/get-installation",
            Route::CreateToken(_) => "apps/create-installation-access-token",
            Route::RepoInstallation { .. } => "apps/get-repo-installation",
            Route::GetRepo { .. } => "repos/get",
            Route::GetIssue { .. } => "issues/get",
            Route::ListComments { .. } => "issues/list-comments",
            Route::CreateComment { .. } => "issues/create-comment",
            Route::GetComment { .. } => "issues/get-comment",
            Route::UpdateComment { .. } => "issues/update-comment",
            Route::ListReactions { .. } => "reactions/list-for-issue-comment",
            Route::CreateReaction { .. } => "reactions/create-for-issue-comment",
            Route::ListLabels { .. } => "issues/list-labels-on-issue",
            Route::AddLabels { .. } => "issues/add-labels",
            Route::Permission { .. } => "repos/get-collaborator-permission-level",
            Route::CreatePull { .. } => "pulls/create",
            Route::ListPulls { .. } => "pulls/list",
            Route::GetPull { .. } => "pulls/get",
            Route::UpdatePull { .. } => "pulls/update",
            Route::InstallationRepos => "apps/list-repos-accessible-to-installation",
            Route::GetUser { .. } => "users/get-by-username",
            Route::GetContent { .. } => "repos/get-content",
            Route::DeleteRef { .. } => "git/delete-ref",
            Route::Graphql => "graphql",
            Route::Git { rest, .. } => git::operation(rest),
        }
    }

    /// What the calling token must hold, after GitHub's "Permissions required for GitHub
    /// Apps" — the one place the stand-in keeps it (GraphQL mutations: [`graphql_field_need`],
    /// beside it). GitHub's issue endpoints serve issues and pull requests alike but are
    /// "restricted to issues" for a token with only `issues`, and to pull requests for one with
    /// only `pull_requests`: on a pull request's thread they need `pull_requests`, on an
    /// issue's `issues`.
    pub fn need(&self, state: &State, req: &Req) -> Need {
        use Access::{Read, Write};
        let thread = |owner: &str, repo: &str, number: Option<u64>, access| {
            let pull = state.repo(owner, repo).is_some_and(|r| {
                number
                    .and_then(|n| r.issues.get(&n))
                    .is_some_and(|issue| issue.pull.is_some())
            });
            let permission = if pull { "pull_requests" } else { "issues" };
            Need::Permission(permission, access)
        };
        let comment_thread = |owner: &str, repo: &str, id: u64| {
            state
                .repo(owner, repo)
                .and_then(|r| r.comments.get(&id))
                .map(|c| c.issue)
        };
        match self {
            Route::GetApp
            | Route::ListInstallations
            | Route::GetInstallation(_)
            | Route::CreateToken(_)
            | Route::RepoInstallation { .. } => Need::Nothing,
            Route::InstallationRepos
            | Route::GetUser { .. }
            | Route::GetRepo { .. }
            | Route::Permission { .. } => Need::Permission("metadata", Read),
            Route::GetIssue {
                owner,
                repo,
                number,
            }
            | Route::ListComments {
                owner,
                repo,
                number,
            }
            | Route::ListLabels {
                owner,
                repo,
                number,
            } => thread(owner, repo, Some(*number), Read),
            Route::CreateComment {
                owner,
                repo,
                number,
            }
            | Route::AddLabels {
                owner,
                repo,
                number,
            } => thread(owner, repo, Some(*number), Write),
            Route::GetComment { owner, repo, id } | Route::ListReactions { owner, repo, id } => {
                thread(owner, repo, comment_thread(owner, repo, *id), Read)
            }
            Route::UpdateComment { owner, repo, id }
            | Route::CreateReaction { owner, repo, id } => {
                thread(owner, repo, comment_thread(owner, repo, *id), Write)
            }
            Route::ListPulls { .. } | Route::GetPull { .. } => {
                Need::Permission("pull_requests", Read)
            }
            Route::CreatePull { .. } | Route::UpdatePull { .. } => {
                Need::Permission("pull_requests", Write)
            }
            Route::GetContent { .. } => Need::Permission("contents", Read),
            Route::DeleteRef { .. } => Need::Permission("contents", Write),
            Route::Graphql => Need::PerField,
            Route::Git { rest, .. } => {
                let service = req.query.get("service").map(String::as_str);
                let pushing = rest == "git-receive-pack"
                    || (rest == "info/refs" && service == Some("git-receive-pack"));
                Need::Permission("contents", if pushing { Write } else { Read })
            }
        }
    }

    /// The repository a route is about, if it is about one.
    fn repository(&self) -> Option<(&str, &str)> {
        match self {
            Route::RepoInstallation { owner, repo }
            | Route::GetRepo { owner, repo }
            | Route::GetIssue { owner, repo, .. }
            | Route::ListComments { owner, repo, .. }
            | Route::CreateComment { owner, repo, .. }
            | Route::GetComment { owner, repo, .. }
            | Route::UpdateComment { owner, repo, .. }
            | Route::ListReactions { owner, repo, .. }
            | Route::CreateReaction { owner, repo, .. }
            | Route::ListLabels { owner, repo, .. }
            | Route::AddLabels { owner, repo, .. }
            | Route::Permission { owner, repo, .. }
            | Route::CreatePull { owner, repo }
            | Route::ListPulls { owner, repo }
            | Route::GetPull { owner, repo, .. }
            | Route::UpdatePull { owner, repo, .. }
            | Route::GetContent { owner, repo, .. }
            | Route::DeleteRef { owner, repo, .. }
            | Route::Git { owner, repo, .. } => Some((owner, repo)),
            Route::GetApp
            | Route::ListInstallations
            | Route::GetInstallation(_)
            | Route::CreateToken(_)
            | Route::InstallationRepos
            | Route::GetUser { .. }
            | Route::Graphql => None,
        }
    }

    fn auth(&self) -> AuthKind {
        match self {
            Route::GetApp
            | Route::ListInstallations
            | Route::GetInstallation(_)
            | Route::CreateToken(_)
            | Route::RepoInstallation { .. } => AuthKind::App,
            Route::Git { .. } => AuthKind::Git,
            _ => AuthKind::Installation,
        }
    }
}

/// What a GraphQL mutation needs of the calling token (the stand-in knows two, both about
/// pull requests); `None` for a field the stand-in does not serve.
pub(crate) fn graphql_field_need(field: &str) -> Option<(&'static str, Access)> {
    match field {
        "markPullRequestReadyForReview" | "convertPullRequestToDraft" => {
            Some(("pull_requests", Access::Write))
        }
        _ => None,
    }
}

/// Refuses a token without the permission the route needs. A repository the token cannot
/// see is not refused here: the handler answers GitHub's 404, which reveals nothing.
fn permit(state: &State, grant: &Grant, route: &Route, need: Need) -> Result<(), ApiError> {
    let Need::Permission(permission, access) = need else {
        return Ok(());
    };
    if grant.allows(permission, access) {
        return Ok(());
    }
    match route.repository() {
        Some((owner, repo)) if !state.grant_sees(grant, owner, repo) => Ok(()),
        _ => Err(ApiError::not_accessible(permission, access)),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path as the routes know it. On the Enterprise Server layout the REST API lives under
/// `/api/v3` and GraphQL at `/api/graphql`; anything else there is not found.
fn served_path(cfg: &crate::state::Config, path: &str) -> String {
    if !cfg.enterprise || path.starts_with("/git/") {
        return path.to_string();
    }
    match path.strip_prefix("/api/v3") {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ if path == "/api/graphql" => "/graphql".to_string(),
        _ => "/not-served-on-enterprise".to_string(),
    }
}

/// A request about a repository that was transferred: GitHub keeps the old name working by
/// redirecting it to `/repositories/{id}/…`, a path it serves as the repository's own.
enum Moved {
    /// The old `/repos/{owner}/{name}/…`: answered with a redirect to this path.
    Redirect(String),
    /// `/repositories/{id}/…`: served as this `/repos/{owner}/{name}/…` path.
    Serve(String),
}

fn moved(state: &State, path: &str) -> Option<Moved> {
    let path = path.trim_start_matches('/');
    let tail = |tail: Option<&str>| tail.map(|t| format!("/{t}")).unwrap_or_default();
    if let Some(after) = path.strip_prefix("repositories/") {
        let mut parts = after.splitn(2, '/');
        let repo = state.repo_by_id(parts.next()?.parse().ok()?)?;
        let tail = tail(parts.next());
        return Some(Moved::Serve(format!(
            "/repos/{}/{}{tail}",
            repo.owner, repo.name
        )));
    }
    let mut parts = path.strip_prefix("repos/")?.splitn(3, '/');
    let (owner, name) = (parts.next()?, parts.next()?);
    if state.repo(owner, name).is_some() {
        return None;
    }
    let id = state.moved.get(&super::state::repo_key(owner, name))?;
    Some(Moved::Redirect(format!(
        "/repositories/{id}{}",
        tail(parts.next())
    )))
}

/// GitHub's answer for a moved repository's old name: `301 Moved Permanently` for reads,
/// `307 Temporary Redirect` for writes (so that clients repeat the method and its body).
fn redirect(cfg: &super::state::Config, req: &Req, path: &str) -> Response {
    let query = req
        .raw_query
        .as_ref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let location = format!("{}{path}{query}", cfg.api_url);
    let status = if matches!(req.method, Method::GET | Method::HEAD) {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    let message = status.canonical_reason().unwrap_or("Moved");
    let body = json!({
        "message": message,
        "url": location,
        "documentation_url": "https://docs.github.com/rest/guides/best-practices-for-using-the-rest-api#follow-redirects",
    });
    let mut response = json_response(status, &body);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The axum handler behind every path.
pub(crate) async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
                .into_response();
        }
    };
    let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let requested = served_path(&shared.cfg, parts.uri.path());
    let mut req = Req {
        method: parts.method,
        path: requested.clone(),
        raw_query: parts.uri.query().map(str::to_string),
        query,
        headers: parts.headers,
        body,
    };
    let now = SystemTime::now();
    let request_id = {
        let mut state = shared.lock();
        state.request_seq += 1;
        // GitHub's shape: five colon-separated hex groups.
        format!(
            "5A1D:{:05X}:{:07X}:{:07X}:{:08X}",
            std::process::id() % 0xF_FFFF,
            state.request_seq,
            state.request_seq * 7,
            epoch(now) % 0xFFFF_FFFF
        )
    };
    let moved = moved(&shared.lock(), &req.path);
    let redirect_to = match moved {
        Some(Moved::Redirect(path)) => Some(path),
        Some(Moved::Serve(path)) => {
            req.path = path;
            None
        }
        None => None,
    };
    let route = Route::parse(&req.method, &req.path);
    let operation = route.as_ref().map_or("unknown", Route::operation);
    // Git's smart HTTP is not the REST API: no User-Agent rule, rate-limit headers or JSON.
    let smart_http = matches!(route, Some(Route::Git { .. }));

    // GitHub refuses API requests without a User-Agent at its edge, before anything else
    // (git clients always send one).
    let anonymous_agent = !smart_http
        && req
            .headers
            .get(header::USER_AGENT)
            .is_none_or(|ua| ua.as_bytes().trim_ascii().is_empty());
    let fault = if anonymous_agent {
        None
    } else {
        let mut state = shared.lock();
        let found = state
            .faults
            .iter_mut()
            .find(|f| f.matches(&req.method, &req.path));
        found.map(|f| {
            f.times -= 1;
            f.clone()
        })
    };
    state_cleanup_faults(&shared);

    let mut installation = None;
    // A lost answer: the request is served, and the answer broken afterwards.
    let lose_answer = fault.as_ref().is_some_and(super::faults::Fault::serves);
    let fault = fault.filter(|f| !f.serves());
    let mut response = if anonymous_agent {
        plain(StatusCode::FORBIDDEN, USER_AGENT_REFUSAL)
    } else if let Some(fault) = fault {
        fault.response(&request_id, now)
    } else if let Some(path) = &redirect_to {
        redirect(&shared.cfg, &req, path)
    } else if let Some(route) = route {
        match serve(&shared, route, &req, now, &mut installation).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    } else {
        ApiError::not_found().into_response()
    };

    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-github-request-id", value);
    }
    if operation != "unknown" && !smart_http {
        headers.insert(
            "x-github-media-type",
            HeaderValue::from_static("github.v3; format=json"),
        );
        headers.insert(
            "x-github-api-version-selected",
            HeaderValue::from_static("2022-11-28"),
        );
        if !headers.contains_key("x-ratelimit-remaining") {
            let (limit, remaining, reset, used) =
                shared.lock().count_rate(installation.unwrap_or(0), now);
            headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
            headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
            headers.insert("x-ratelimit-used", HeaderValue::from(used));
            let resource = if operation == "graphql" {
                "graphql"
            } else {
                "core"
            };
            headers.insert("x-ratelimit-resource", HeaderValue::from_static(resource));
        }
    }

    let body_json = if smart_http {
        None
    } else {
        serde_json::from_slice::<Value>(&req.body).ok()
    };
    shared.lock().requests.push(RecordedRequest {
        method: req.method.to_string(),
        path: requested,
        query: req.raw_query.clone(),
        status: response.status().as_u16(),
        operation: operation.to_string(),
        installation,
        body: body_json,
    });
    shared.changed.notify_waiters();
    if lose_answer {
        super::faults::lose(response)
    } else {
        response
    }
}

fn state_cleanup_faults(shared: &Shared) {
    shared.lock().faults.retain(|f| f.times > 0);
}

async fn serve(
    shared: &Arc<Shared>,
    route: Route,
    req: &Req,
    now: SystemTime,
    installation: &mut Option<u64>,
) -> Result<Response, ApiError> {
    let need = route.need(&shared.lock(), req);
    let grant = match route.auth() {
        AuthKind::App => {
            auth::verify_jwt(shared, &req.headers, now)?;
            None
        }
        AuthKind::Installation => {
            let grant = auth::installation_grant(shared, &req.headers, now)?;
            *installation = Some(grant.installation);
            permit(&shared.lock(), &grant, &route, need)?;
            Some(grant)
        }
        AuthKind::Git => None,
    };
    let reply = match (route, grant) {
        (Route::GetApp, _) => apps::get_app(shared),
        (Route::GetUser { login }, _) => apps::get_user(shared, &login),
        (Route::ListInstallations, _) => apps::list_installations(shared, req),
        (Route::GetInstallation(id), _) => apps::get_installation(shared, id),
        (Route::CreateToken(id), _) => apps::create_token(shared, id, req, now),
        (Route::RepoInstallation { owner, repo }, _) => {
            apps::repo_installation(shared, &owner, &repo)
        }
        (Route::Git { owner, repo, rest }, _) => {
            return Ok(
                git::serve(shared, &owner, &repo, &rest, need, req, now, installation).await,
            );
        }
        (Route::Graphql, Some(grant)) => graphql::serve(shared, &grant, req, now),
        (Route::GetRepo { owner, repo }, Some(grant)) => {
            apps::get_repo(shared, &grant, &owner, &repo)
        }
        (Route::Permission { owner, repo, user }, Some(grant)) => {
            apps::permission(shared, &grant, &owner, &repo, &user)
        }
        (
            Route::GetIssue {
                owner,
                repo,
                number,
            },
            Some(grant),
        ) => issues::get_issue(shared, &grant, &owner, &repo, number),
        (
            Route::ListComments {
                owner,
                repo,
                number,
            },
            Some(grant),
        ) => issues::list_comments(shared, &grant, &owner, &repo, number, req),
        (
            Route::CreateComment {
                owner,
                repo,
                number,
            },
            Some(grant),
        ) => issues::create_comment(shared, &grant, &owner, &repo, number, req, now),
        (Route::GetComment { owner, repo, id }, Some(grant)) => {
            issues::get_comment(shared, &grant, &owner, &repo, id)
        }
        (Route::UpdateComment { owner, repo, id }, Some(grant)) => {
            issues::update_comment(shared, &grant, &owner, &repo, id, req, now)
        }
        (Route::ListReactions { owner, repo, id }, Some(grant)) => {
            issues::list_reactions(shared, &grant, &owner, &repo, id, req)
        }
        (Route::CreateReaction { owner, repo, id }, Some(grant)) => {
            issues::create_reaction(shared, &grant, &owner, &repo, id, req, now)
        }
        (
            Route::ListLabels {
                owner,
                repo,
                number,
            },
            Some(grant),
        ) => issues::list_labels(shared, &grant, &owner, &repo, number, req),
        (
            Route::AddLabels {
                owner,
                repo,
                number,
            },
            Some(grant),
        ) => issues::add_labels(shared, &grant, &owner, &repo, number, req, now),
        (Route::CreatePull { owner, repo }, Some(grant)) => {
            pulls::create(shared, &grant, &owner, &repo, req, now).await
        }
        (Route::ListPulls { owner, repo }, Some(grant)) => {
            pulls::list(shared, &grant, &owner, &repo, req)
        }
        (
            Route::GetPull {
                owner,
                repo,
                number,
            },
            Some(grant),
        ) => pulls::get(shared, &grant, &owner, &repo, number).await,
        (
            Route::UpdatePull {
                owner,
                repo,
                number,
            },
            Some(grant),
        ) => pulls::update(shared, &grant, &owner, &repo, number, req, now).await,
        (Route::InstallationRepos, Some(grant)) => apps::installation_repos(shared, &grant, req),
        (Route::GetContent { owner, repo, path }, Some(grant)) => {
            contents::get_content(shared, &grant, &owner, &repo, &path, req).await
        }
        (
            Route::DeleteRef {
                owner,
                repo,
                reference,
            },
            Some(grant),
        ) => contents::delete_ref(shared, &grant, &owner, &repo, &reference, now).await,
        (_, None) => Err(auth::bad_credentials()),
    }?;
    Ok(reply.into_response())
}

/// An empty response with a status (used by the git module for plain errors).
pub(crate) fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from(text.to_string()),
    )
        .into_response()
}
