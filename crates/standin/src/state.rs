//! The stand-in's in-memory model of GitHub: accounts, installations, repositories, issues,
//! pull requests, comments, tokens, and the request log.
//!
//! Everything lives behind one `std::sync::Mutex` (see [`Shared::lock`]): handlers take the
//! lock, read or change plain data, and drop it before any `.await` (git subprocesses run
//! without the lock held).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use super::faults::Fault;
use super::webhooks::Delivery;

/// Static facts about the app and the server, fixed when the stand-in starts.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub app_id: u64,
    pub app_slug: String,
    pub app_name: String,
    pub app_owner: String,
    pub bot_user_id: u64,
    pub webhook_secret: String,
    /// `http://127.0.0.1:PORT` (`…/api/v3` when `enterprise`), no trailing slash.
    pub api_url: String,
    /// Lay out the API as GitHub Enterprise Server does: REST under `/api/v3`, GraphQL at
    /// `/api/graphql`; nothing at the root.
    pub enterprise: bool,
    /// Root of the bare repositories: `{root}/{owner}/{name}.git` (lower case).
    pub root: PathBuf,
}

impl Config {
    pub fn bot_login(&self) -> String {
        format!("{}[bot]", self.app_slug)
    }
}

/// State shared by the HTTP handlers and the [`super::StandIn`] handle.
pub(crate) struct Shared {
    pub cfg: Config,
    pub state: Mutex<State>,
    pub decoding_key: octocrab::jsonwebtoken::DecodingKey,
    /// Notified after every answered request and every webhook delivery.
    pub changed: std::sync::Arc<tokio::sync::Notify>,
}

impl Shared {
    /// Locks the state. A panic in another handler must not wedge every later test request,
    /// so a poisoned lock is recovered (the data is plain and stays consistent per field).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserKind {
    User,
    Organization,
    Bot,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::User => "User",
            UserKind::Organization => "Organization",
            UserKind::Bot => "Bot",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub id: u64,
    pub login: String,
    pub kind: UserKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    All,
    /// Lower-case repository names of the installation's account.
    Selected(BTreeSet<String>),
}

#[derive(Debug, Clone)]
pub(crate) struct Installation {
    pub id: u64,
    /// Lower-case login of the account (organisation) it is installed on.
    pub account: String,
    pub selection: Selection,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

#[derive(Debug, Clone)]
pub(crate) struct Label {
    pub id: u64,
    pub name: String,
    pub color: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Reaction {
    pub id: u64,
    pub user: String,
    pub content: String,
    pub created_at: SystemTime,
}

#[derive(Debug, Clone)]
pub(crate) struct Comment {
    pub id: u64,
    pub issue: u64,
    pub author: String,
    pub body: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub reactions: Vec<Reaction>,
}

#[derive(Debug, Clone)]
pub(crate) struct Pull {
    /// The pull request's own id (distinct from the issue id, as on GitHub).
    pub id: u64,
    pub head_ref: String,
    pub head_sha: String,
    pub base_ref: String,
    pub base_sha: String,
    pub draft: bool,
    pub merged: bool,
    pub merged_at: Option<SystemTime>,
    pub merged_by: Option<String>,
    pub merge_commit_sha: Option<String>,
    pub maintainer_can_modify: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Issue {
    pub number: u64,
    pub id: u64,
    pub title: String,
    pub body: Option<String>,
    pub author: String,
    pub open: bool,
    pub state_reason: Option<&'static str>,
    /// Label names, in the order they were added.
    pub labels: Vec<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub closed_at: Option<SystemTime>,
    pub closed_by: Option<String>,
    pub pull: Option<Pull>,
}

impl Issue {
    /// GitHub gives a pull request's issue the pull request's node id (`PR_…`).
    pub fn node_id(&self) -> String {
        match &self.pull {
            Some(pull) => node_id("PR", pull.id),
            None => node_id("I", self.id),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Repo {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    pub created_at: SystemTime,
    pub pushed_at: SystemTime,
    /// Issues and pull requests share one number sequence per repository.
    pub issues: BTreeMap<u64, Issue>,
    pub next_number: u64,
    /// Keyed by lower-case name: GitHub label names are case-insensitive.
    pub labels: BTreeMap<String, Label>,
    /// Keyed by lower-case login; values are `admin|maintain|write|triage|read|none`.
    pub permissions: HashMap<String, String>,
    pub comments: BTreeMap<u64, Comment>,
}

impl Repo {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// How much of a permission a token holds, in GitHub's order: `read` < `write` < `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Access {
    Read,
    Write,
    Admin,
}

impl Access {
    pub fn parse(level: &str) -> Option<Access> {
        match level {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "admin" => Some(Access::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

/// Permissions by GitHub's names (`contents`, `pull_requests` …).
pub(crate) type Permissions = BTreeMap<String, Access>;

/// Permissions the app declares in `app-manifest.yml` (SPEC §6), and so every installation
/// grants; a token can be narrowed below them, never widened.
pub(crate) const APP_PERMISSIONS: [(&str, Access); 5] = [
    ("checks", Access::Write),
    ("contents", Access::Write),
    ("issues", Access::Write),
    ("metadata", Access::Read),
    ("pull_requests", Access::Write),
];

/// [`APP_PERMISSIONS`] as a map.
pub(crate) fn app_permissions() -> Permissions {
    APP_PERMISSIONS
        .iter()
        .map(|(name, access)| (name.to_string(), *access))
        .collect()
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub installation: u64,
    pub expires_at: SystemTime,
    /// `Some` when the token was scoped to some repositories (lower-case names).
    pub repositories: Option<BTreeSet<String>>,
    /// `Some` when the token was narrowed to some permissions; `None` holds all of the app's.
    pub permissions: Option<Permissions>,
}

/// What a valid installation token grants.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub installation: u64,
    pub repositories: Option<BTreeSet<String>>,
    /// As [`Token::permissions`].
    pub permissions: Option<Permissions>,
}

impl Grant {
    /// Whether the token holds `permission` at `access` or above.
    pub fn allows(&self, permission: &str, access: Access) -> bool {
        let held = match &self.permissions {
            Some(permissions) => permissions.get(permission).copied(),
            None => APP_PERMISSIONS
                .iter()
                .find(|(name, _)| *name == permission)
                .map(|(_, held)| *held),
        };
        held.is_some_and(|held| held >= access)
    }
}

/// One request as the stand-in saw and answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    /// GitHub's operation id (`pulls/create`, `issues/create-comment` …), `graphql`,
    /// `git/info-refs`, `git/upload-pack`, `git/receive-pack`, or `unknown`.
    pub operation: String,
    /// The installation whose token authenticated the request, if any.
    pub installation: Option<u64>,
    /// The JSON request body, when there was one.
    pub body: Option<serde_json::Value>,
}

/// A pull request as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullInfo {
    pub number: u64,
    pub node_id: String,
    pub title: String,
    pub body: Option<String>,
    pub author: String,
    pub head: String,
    pub head_sha: String,
    pub base: String,
    pub open: bool,
    pub draft: bool,
    pub merged: bool,
    pub merge_commit_sha: Option<String>,
    pub labels: Vec<String>,
}

/// An issue (or the issue side of a pull request) as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueInfo {
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub author: String,
    pub open: bool,
    pub is_pull_request: bool,
    pub labels: Vec<String>,
}

/// An issue comment as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentInfo {
    pub id: u64,
    pub issue: u64,
    pub author: String,
    pub body: String,
    /// True when the comment was edited after it was created.
    pub edited: bool,
    pub reactions: Vec<ReactionInfo>,
}

/// A reaction as tests see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionInfo {
    pub user: String,
    pub content: String,
}

/// Rate-limit bookkeeping per installation, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone)]
pub(crate) struct RateWindow {
    pub reset_at: SystemTime,
    pub used: u64,
}

pub(crate) struct State {
    next_id: u64,
    /// Keyed by lower-case login: GitHub logins are case-insensitive.
    pub users: BTreeMap<String, User>,
    pub installations: BTreeMap<u64, Installation>,
    /// Keyed by lower-case `(owner, name)`.
    pub repos: BTreeMap<(String, String), Repo>,
    /// Names repositories had before a transfer (lower-case `(owner, name)`), and the id of
    /// the repository each now names: GitHub redirects them.
    pub moved: BTreeMap<(String, String), u64>,
    pub tokens: HashMap<String, Token>,
    pub token_lifetime: Duration,
    pub faults: Vec<Fault>,
    pub requests: Vec<RecordedRequest>,
    pub deliveries: Vec<Delivery>,
    pub rate: HashMap<u64, RateWindow>,
    pub request_seq: u64,
}

/// Installation tokens live one hour on GitHub.
pub(crate) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

impl State {
    pub fn new(cfg: &Config) -> State {
        let mut state = State {
            next_id: 1000,
            users: BTreeMap::new(),
            installations: BTreeMap::new(),
            repos: BTreeMap::new(),
            moved: BTreeMap::new(),
            tokens: HashMap::new(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            faults: Vec::new(),
            requests: Vec::new(),
            deliveries: Vec::new(),
            rate: HashMap::new(),
            request_seq: 0,
        };
        let bot = cfg.bot_login();
        state.users.insert(
            bot.to_lowercase(),
            User {
                id: cfg.bot_user_id,
                login: bot,
                kind: UserKind::Bot,
            },
        );
        state.ensure_user(&cfg.app_owner, UserKind::Organization);
        state
    }

    /// A fresh id; ids are unique across all kinds of objects, as GitHub's database ids are
    /// in practice for the small numbers a test makes.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Returns the user, creating it (with `kind`) on first mention: the stand-in has no
    /// sign-up, anybody a test names exists.
    pub fn ensure_user(&mut self, login: &str, kind: UserKind) -> User {
        let key = login.to_lowercase();
        if let Some(user) = self.users.get(&key) {
            return user.clone();
        }
        let user = User {
            id: self.next_id(),
            login: login.to_string(),
            kind,
        };
        self.users.insert(key, user.clone());
        user
    }

    /// The user by login; unknown logins are created as plain users.
    pub fn user(&mut self, login: &str) -> User {
        // GitHub names every app's bot account `<slug>[bot]`.
        let kind = if login.ends_with("[bot]") {
            UserKind::Bot
        } else {
            UserKind::User
        };
        self.ensure_user(login, kind)
    }

    pub fn repo(&self, owner: &str, name: &str) -> Option<&Repo> {
        self.repos.get(&repo_key(owner, name))
    }

    pub fn repo_mut(&mut self, owner: &str, name: &str) -> Option<&mut Repo> {
        self.repos.get_mut(&repo_key(owner, name))
    }

    /// A repository by its id.
    pub fn repo_by_id(&self, id: u64) -> Option<&Repo> {
        self.repos.values().find(|repo| repo.id == id)
    }

    /// Whether the installation can see the repository (account matches and the repository
    /// is selected), ignoring any token scope.
    pub fn installation_sees(&self, installation: u64, owner: &str, name: &str) -> bool {
        let Some(inst) = self.installations.get(&installation) else {
            return false;
        };
        if inst.account != owner.to_lowercase() || self.repo(owner, name).is_none() {
            return false;
        }
        match &inst.selection {
            Selection::All => true,
            Selection::Selected(names) => names.contains(&name.to_lowercase()),
        }
    }

    /// Whether a token grant can see the repository.
    pub fn grant_sees(&self, grant: &Grant, owner: &str, name: &str) -> bool {
        self.installation_sees(grant.installation, owner, name)
            && grant
                .repositories
                .as_ref()
                .is_none_or(|names| names.contains(&name.to_lowercase()))
    }

    /// The installation on the account owning `owner/name` that can see it.
    pub fn installation_for_repo(&self, owner: &str, name: &str) -> Option<&Installation> {
        self.installations
            .values()
            .find(|inst| self.installation_sees(inst.id, owner, name))
    }

    /// Repositories an installation can see, in name order.
    pub fn installation_repos(&self, installation: u64) -> Vec<&Repo> {
        self.repos
            .values()
            .filter(|repo| self.installation_sees(installation, &repo.owner, &repo.name))
            .collect()
    }

    /// Counts one request against the installation's hourly budget and returns
    /// `(limit, remaining, reset, used)` for the `x-ratelimit-*` headers.
    pub fn count_rate(&mut self, installation: u64, now: SystemTime) -> (u64, u64, u64, u64) {
        const LIMIT: u64 = 5000;
        let window = self.rate.entry(installation).or_insert(RateWindow {
            reset_at: now + Duration::from_secs(3600),
            used: 0,
        });
        if window.reset_at <= now {
            window.reset_at = now + Duration::from_secs(3600);
            window.used = 0;
        }
        window.used += 1;
        (
            LIMIT,
            LIMIT.saturating_sub(window.used),
            epoch(window.reset_at),
            window.used,
        )
    }
}

pub(crate) fn repo_key(owner: &str, name: &str) -> (String, String) {
    (owner.to_lowercase(), name.to_lowercase())
}

/// A GitHub-style global node id (`PR_kwDO…`): an opaque, type-prefixed string that GraphQL
/// takes as input and REST returns as `node_id`.
pub(crate) fn node_id(prefix: &str, id: u64) -> String {
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.to_be_bytes());
    format!("{prefix}_kwDO{encoded}")
}

/// Seconds since the Unix epoch.
pub(crate) fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// GitHub's timestamp format: RFC 3339, UTC, whole seconds (`2011-01-26T19:01:12Z`).
pub(crate) fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
