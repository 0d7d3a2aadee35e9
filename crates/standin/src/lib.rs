//! A faithful, stateful, in-memory GitHub served over HTTP on a loopback port.
//!
//! The app's real GitHub client (octocrab with app JWT auth, git over smart HTTP, webhook
//! verification) talks to it exactly as it would talk to api.github.com: the integration tests
//! use it, and so does the offline `runbooks demo`. It is a crate of its own: a test double
//! (with a private key) has no place in the product's library, which does not depend on it;
//! the `runbooks` binary (for `demo` and `standin`) and the tests do.
//!
//! What it serves (paths, status codes and JSON as GitHub's OpenAPI description and real
//! payloads have them):
//! - app endpoints under `/app` with RS256 JWT auth and the token exchange;
//! - repositories, issues, issue comments, reactions, labels, collaborator permissions and
//!   pull requests under `/repos`, with installation tokens;
//! - file contents (`/repos/{o}/{r}/contents/{path}`) and branch deletion
//!   (`DELETE /repos/{o}/{r}/git/refs/heads/{branch}`);
//! - GraphQL at `/graphql` for `markPullRequestReadyForReview` / `convertPullRequestToDraft`;
//! - git smart HTTP at `/git/{owner}/{repo}.git` over real bare repositories, by
//!   `git http-backend`, with GitHub's Basic auth (`x-access-token:<token>`).
//!
//! It also sends signed webhooks built from real deliveries, injects GitHub-shaped faults,
//! and records every request with its operation id.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use runbooks_standin::StandIn;
//!
//! let github = StandIn::start().await?;
//! github.create_repo("acme", "widgets", "main", &[("README.md", "# widgets\n")]).await?;
//! github.install("acme", &["widgets"]);
//! // Configure the app with GITHUB_API_URL = github.api_url(), GITHUB_APP_ID =
//! // github.app_id(), GITHUB_PRIVATE_KEY = github.private_key_pem() and
//! // GITHUB_WEBHOOK_SECRET = github.webhook_secret(), then start it.
//! let issue = github.add_issue("acme", "widgets", "Upgrade React", "", "alice")?;
//! github.set_permission("acme", "widgets", "alice", "write");
//! let event =
//!     github.issue_comment_created("acme", "widgets", issue, "/runbook Upgrade React", "alice")?;
//! let delivery = github.send("http://127.0.0.1:8080/webhooks/github", &event).await?;
//! assert!(delivery.status < 300);
//! let comment = event.payload["comment"]["id"].as_u64().unwrap_or_default();
//! github
//!     .wait_until(std::time::Duration::from_secs(10), "the eyes reaction", |g| {
//!         g.reactions("acme", "widgets", comment).iter().any(|r| r.content == "eyes")
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod apps;
mod auth;
mod contents;
mod faults;
mod git;
mod graphql;
mod http;
mod issues;
mod pulls;
mod render;
mod state;
mod webhooks;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use faults::{Fault, FaultKind};
pub use state::{CommentInfo, IssueInfo, PullInfo, ReactionInfo, RecordedRequest};
pub use webhooks::{Delivery, USER_AGENT, WebhookEvent, fixture_payload, payload_names, sign};

use state::{Config, Installation, Issue, Repo, Selection, Shared, State, UserKind};

/// The app's private key (PKCS#1 RSA PEM, the format GitHub hands out). Generated for this
/// project, test-only, not a secret: configure the app under test with it.
pub const APP_PRIVATE_KEY_PEM: &str = include_str!("../../../fixtures/standin/app-private-key.pem");

/// The public half, with which the stand-in verifies the app's JWTs.
pub const APP_PUBLIC_KEY_PEM: &str = include_str!("../../../fixtures/standin/app-public-key.pem");

/// How the stand-in presents itself.
#[derive(Debug, Clone)]
pub struct Options {
    pub app_id: u64,
    pub app_slug: String,
    pub app_name: String,
    /// The organisation that owns the app (`GET /app` → `owner`).
    pub app_owner: String,
    /// The id of the `<slug>[bot]` user, used in the bot's commit e-mail
    /// (`<id>+<slug>[bot]@users.noreply.github.com`).
    pub bot_user_id: u64,
    pub webhook_secret: String,
    /// Where to listen; port 0 lets the OS choose.
    pub listen: SocketAddr,
    /// Directory for the bare repositories; a fresh temporary directory when `None`.
    pub dir: Option<PathBuf>,
    /// Serve the GitHub Enterprise Server layout: REST under `/api/v3`, GraphQL at
    /// `/api/graphql` (so `api_url()` ends in `/api/v3`).
    pub enterprise: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            app_id: 424_242,
            app_slug: "runbooks".to_string(),
            app_name: "Runbooks".to_string(),
            app_owner: "runbooks-dev".to_string(),
            bot_user_id: 142_424_242,
            webhook_secret: "stand-in webhook secret".to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: None,
            enterprise: false,
        }
    }
}

/// A running stand-in. Dropping it stops the server (and removes its temporary directory).
pub struct StandIn {
    pub(crate) shared: Arc<Shared>,
    /// Woken after every request and delivery, for [`StandIn::wait_until`].
    changed: Arc<Notify>,
    addr: SocketAddr,
    server: JoinHandle<()>,
    _tempdir: Option<tempfile::TempDir>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The identity the helpers commit as on behalf of a person.
fn person(login: &str, id: u64) -> git::Identity {
    git::Identity {
        name: login.to_string(),
        email: format!("{id}+{login}@users.noreply.github.com"),
    }
}

fn pull_info(issue: &Issue) -> Option<PullInfo> {
    let pull = issue.pull.as_ref()?;
    Some(PullInfo {
        number: issue.number,
        node_id: issue.node_id(),
        title: issue.title.clone(),
        body: issue.body.clone(),
        author: issue.author.clone(),
        head: pull.head_ref.clone(),
        head_sha: pull.head_sha.clone(),
        base: pull.base_ref.clone(),
        open: issue.open,
        draft: pull.draft,
        merged: pull.merged,
        merge_commit_sha: pull.merge_commit_sha.clone(),
        labels: issue.labels.clone(),
    })
}

fn comment_info(c: &state::Comment) -> CommentInfo {
    CommentInfo {
        id: c.id,
        issue: c.issue,
        author: c.author.clone(),
        body: c.body.clone(),
        edited: c.updated_at != c.created_at,
        reactions: c
            .reactions
            .iter()
            .map(|r| ReactionInfo {
                user: r.user.clone(),
                content: r.content.clone(),
            })
            .collect(),
    }
}

impl StandIn {
    /// Starts a stand-in on `127.0.0.1` (a port the OS picks) with its repositories in a
    /// fresh temporary directory.
    pub async fn start() -> anyhow::Result<StandIn> {
        StandIn::start_with(Options::default()).await
    }

    /// Like [`StandIn::start`], with the repositories under `dir` (kept after drop).
    pub async fn start_in(dir: impl Into<PathBuf>) -> anyhow::Result<StandIn> {
        StandIn::start_with(Options {
            dir: Some(dir.into()),
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(options: Options) -> anyhow::Result<StandIn> {
        let git_ok = tokio::process::Command::new("git")
            .arg("--version")
            .output()
            .await
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !git_ok {
            bail!("the GitHub stand-in needs the git command-line tool on PATH");
        }
        let (root, tempdir) = match options.dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                (dir, None)
            }
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("github-standin-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding {}", options.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let cfg = Config {
            app_id: options.app_id,
            app_slug: options.app_slug,
            app_name: options.app_name,
            app_owner: options.app_owner,
            bot_user_id: options.bot_user_id,
            webhook_secret: options.webhook_secret,
            api_url: if options.enterprise {
                format!("http://{addr}/api/v3")
            } else {
                format!("http://{addr}")
            },
            enterprise: options.enterprise,
            root,
        };
        let decoding_key =
            octocrab::jsonwebtoken::DecodingKey::from_rsa_pem(APP_PUBLIC_KEY_PEM.as_bytes())
                .context("parsing the app's public key")?;
        let changed = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(&cfg)),
            cfg,
            decoding_key,
            changed: changed.clone(),
        });
        let router = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the GitHub stand-in stopped");
            }
        });
        Ok(StandIn {
            shared,
            changed,
            addr,
            server,
            _tempdir: tempdir,
        })
    }

    /// The REST base URL, `http://127.0.0.1:PORT` (configure `GITHUB_API_URL` with it).
    pub fn api_url(&self) -> String {
        self.shared.cfg.api_url.clone()
    }

    /// The GraphQL endpoint: `{api_url}/graphql` as on github.com, `/api/graphql` on an
    /// Enterprise Server layout.
    pub fn graphql_url(&self) -> String {
        match self.shared.cfg.api_url.strip_suffix("/v3") {
            Some(api) if self.shared.cfg.enterprise => format!("{api}/graphql"),
            _ => format!("{}/graphql", self.shared.cfg.api_url),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app_id(&self) -> u64 {
        self.shared.cfg.app_id
    }

    pub fn app_slug(&self) -> &str {
        &self.shared.cfg.app_slug
    }

    /// The bot's login, `<slug>[bot]`: the author of everything the app does.
    pub fn bot_login(&self) -> String {
        self.shared.cfg.bot_login()
    }

    pub fn bot_user_id(&self) -> u64 {
        self.shared.cfg.bot_user_id
    }

    /// The bot's commit e-mail as GitHub shows bots:
    /// `<bot-user-id>+<slug>[bot]@users.noreply.github.com`.
    pub fn bot_email(&self) -> String {
        format!(
            "{}+{}@users.noreply.github.com",
            self.shared.cfg.bot_user_id,
            self.shared.cfg.bot_login()
        )
    }

    pub fn private_key_pem(&self) -> &'static str {
        APP_PRIVATE_KEY_PEM
    }

    pub fn webhook_secret(&self) -> &str {
        &self.shared.cfg.webhook_secret
    }

    /// Where the bare repositories live (`{root}/{owner}/{name}.git`, lower case).
    pub fn root(&self) -> &Path {
        &self.shared.cfg.root
    }

    // ----- installations and tokens -------------------------------------------------------

    fn add_installation(&self, account: &str, selection: Selection) -> u64 {
        let mut state = self.shared.lock();
        state.ensure_user(account, UserKind::Organization);
        let id = state.next_id();
        let now = SystemTime::now();
        state.installations.insert(
            id,
            Installation {
                id,
                account: account.to_lowercase(),
                selection,
                created_at: now,
                updated_at: now,
            },
        );
        id
    }

    /// Installs the app on organisation `account` for the named repositories ("Only select
    /// repositories"). Returns the installation id. Repositories may be created before or
    /// after.
    pub fn install(&self, account: &str, repos: &[&str]) -> u64 {
        let names = repos.iter().map(|r| r.to_lowercase()).collect();
        self.add_installation(account, Selection::Selected(names))
    }

    /// Installs the app on every repository of `account` ("All repositories").
    pub fn install_all(&self, account: &str) -> u64 {
        self.add_installation(account, Selection::All)
    }

    /// Removes the installation; its tokens stop working at once. Returns whether it existed.
    pub fn uninstall(&self, installation: u64) -> bool {
        let mut state = self.shared.lock();
        state.tokens.retain(|_, t| t.installation != installation);
        state.installations.remove(&installation).is_some()
    }

    /// Adds repositories to a "selected repositories" installation.
    pub fn add_repos(&self, installation: u64, repos: &[&str]) {
        let mut state = self.shared.lock();
        if let Some(inst) = state.installations.get_mut(&installation) {
            if let Selection::Selected(names) = &mut inst.selection {
                names.extend(repos.iter().map(|r| r.to_lowercase()));
            }
            inst.updated_at = SystemTime::now();
        }
    }

    /// Removes repositories from an installation (an "all repositories" installation becomes
    /// "selected" with the others, as on GitHub).
    pub fn remove_repos(&self, installation: u64, repos: &[&str]) {
        let mut state = self.shared.lock();
        let current: BTreeSet<String> = state
            .installation_repos(installation)
            .iter()
            .map(|r| r.name.to_lowercase())
            .collect();
        if let Some(inst) = state.installations.get_mut(&installation) {
            let mut names = match &inst.selection {
                Selection::All => current,
                Selection::Selected(names) => names.clone(),
            };
            for repo in repos {
                names.remove(&repo.to_lowercase());
            }
            inst.selection = Selection::Selected(names);
            inst.updated_at = SystemTime::now();
        }
    }

    /// The ids of all installations.
    pub fn installations(&self) -> Vec<u64> {
        self.shared.lock().installations.keys().copied().collect()
    }

    /// How long new installation tokens live (GitHub: one hour). `Duration::ZERO` makes
    /// every new token expired on arrival, which tests token refresh without waiting.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = lifetime;
    }

    /// Expires every token issued so far (as if an hour had passed for them).
    pub fn expire_tokens(&self) {
        let now = SystemTime::now();
        for token in self.shared.lock().tokens.values_mut() {
            token.expires_at = now;
        }
    }

    /// Mints an installation token without going through HTTP (for tests that need one for
    /// git or curl-style requests), for every repository of the installation with every
    /// permission of the app.
    pub fn create_token(&self, installation: u64) -> anyhow::Result<String> {
        let mut state = self.shared.lock();
        if !state.installations.contains_key(&installation) {
            bail!("no installation {installation}");
        }
        Ok(auth::mint_token(&mut state, installation, None, None, SystemTime::now()).0)
    }

    // ----- repositories and git -----------------------------------------------------------

    /// The bare repository of `owner/name`.
    pub fn repo_path(&self, owner: &str, name: &str) -> PathBuf {
        pulls::repo_dir(&self.shared.cfg, owner, name)
    }

    /// The clone URL GitHub's API gives for the repository.
    pub fn clone_url(&self, owner: &str, name: &str) -> String {
        render::clone_url(&self.shared.cfg, owner, name)
    }

    /// Creates `owner/name`: a real bare git repository with one commit on `default_branch`
    /// holding `files` (path, content), authored by the owner.
    pub async fn create_repo(
        &self,
        owner: &str,
        name: &str,
        default_branch: &str,
        files: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let owner_user = {
            let mut state = self.shared.lock();
            if state.repo(owner, name).is_some() {
                bail!("repository {owner}/{name} already exists");
            }
            state.ensure_user(owner, UserKind::Organization)
        };
        let path = self.repo_path(owner, name);
        git::init_bare(&path, default_branch).await?;
        let sha = git::commit_files(
            &path,
            None,
            files,
            "Initial commit",
            &person(&owner_user.login, owner_user.id),
        )
        .await?;
        git::update_branch(&path, default_branch, &sha, None).await?;
        let mut state = self.shared.lock();
        let id = state.next_id();
        let now = SystemTime::now();
        // A new repository under a transferred one's old name ends its redirects, as on GitHub.
        state.moved.remove(&state::repo_key(owner, name));
        state.repos.insert(
            state::repo_key(owner, name),
            Repo {
                id,
                owner: owner_user.login,
                name: name.to_string(),
                default_branch: default_branch.to_string(),
                created_at: now,
                pushed_at: now,
                issues: BTreeMap::new(),
                next_number: 1,
                labels: BTreeMap::new(),
                permissions: Default::default(),
                comments: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Transfers `owner/name` to `new_owner`, as GitHub does: the repository (its id, issues,
    /// pull requests and git data) now answers as `new_owner/name`, and its old name keeps
    /// working through redirects (`301` to `/repositories/{id}/…` for reads, `307` for
    /// writes) until a repository takes that name again. Installations do not follow: the
    /// app sees it under `new_owner` only if installed there on it.
    pub async fn transfer_repo(
        &self,
        owner: &str,
        name: &str,
        new_owner: &str,
    ) -> anyhow::Result<()> {
        let from = self.repo_path(owner, name);
        let to = self.repo_path(new_owner, name);
        {
            let state = self.shared.lock();
            if state.repo(new_owner, name).is_some() {
                bail!("repository {new_owner}/{name} already exists");
            }
            if state.repo(owner, name).is_none() {
                bail!("no repository {owner}/{name}");
            }
        }
        if let Some(parent) = to.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(&from, &to)
            .await
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        let mut state = self.shared.lock();
        let account = state.ensure_user(new_owner, UserKind::Organization);
        let mut repo = state
            .repos
            .remove(&state::repo_key(owner, name))
            .ok_or_else(|| anyhow!("no repository {owner}/{name}"))?;
        repo.owner = account.login;
        state.moved.insert(state::repo_key(owner, name), repo.id);
        state.repos.insert(state::repo_key(new_owner, name), repo);
        Ok(())
    }

    fn default_branch(&self, owner: &str, name: &str) -> anyhow::Result<String> {
        self.shared
            .lock()
            .repo(owner, name)
            .map(|r| r.default_branch.clone())
            .ok_or_else(|| anyhow!("no repository {owner}/{name}"))
    }

    /// A person (`author`) pushes one commit with `files` to `branch` (created from the
    /// default branch when missing). Open pull requests follow, as after any push. Returns the
    /// new commit's sha.
    pub async fn push_commit(
        &self,
        owner: &str,
        name: &str,
        branch: &str,
        files: &[(&str, &str)],
        message: &str,
        author: &str,
    ) -> anyhow::Result<String> {
        let default = self.default_branch(owner, name)?;
        let user = self.shared.lock().user(author);
        let path = self.repo_path(owner, name);
        let current = git::branch_sha(&path, branch).await?;
        let parent = match &current {
            Some(sha) => sha.clone(),
            None => git::branch_sha(&path, &default)
                .await?
                .ok_or_else(|| anyhow!("default branch {default} is missing"))?,
        };
        let sha = git::commit_files(
            &path,
            Some(&parent),
            files,
            message,
            &person(&user.login, user.id),
        )
        .await?;
        git::update_branch(&path, branch, &sha, current.as_deref()).await?;
        pulls::after_push(&self.shared, owner, name, SystemTime::now()).await;
        Ok(sha)
    }

    /// The sha of `branch`, if it exists.
    pub async fn branch_sha(
        &self,
        owner: &str,
        name: &str,
        branch: &str,
    ) -> anyhow::Result<Option<String>> {
        git::branch_sha(&self.repo_path(owner, name), branch).await
    }

    /// All branches with their shas.
    pub async fn branches(
        &self,
        owner: &str,
        name: &str,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        git::branches(&self.repo_path(owner, name)).await
    }

    /// The content of `path` at `rev` (a branch or sha), if it exists there.
    pub async fn file(
        &self,
        owner: &str,
        name: &str,
        rev: &str,
        path: &str,
    ) -> anyhow::Result<Option<String>> {
        git::show_file(&self.repo_path(owner, name), rev, path).await
    }

    /// Full commit messages from `rev` back to the first commit, newest first.
    pub async fn commit_messages(
        &self,
        owner: &str,
        name: &str,
        rev: &str,
    ) -> anyhow::Result<Vec<String>> {
        git::log_messages(&self.repo_path(owner, name), rev).await
    }

    /// Deletes a branch as a person would on github.com. Pull requests whose head or base it
    /// was are closed (GitHub's behaviour: a PR whose base is deleted cannot be reopened).
    pub async fn delete_branch(&self, owner: &str, name: &str, branch: &str) -> anyhow::Result<()> {
        git::delete_branch(&self.repo_path(owner, name), branch).await?;
        pulls::after_push(&self.shared, owner, name, SystemTime::now()).await;
        Ok(())
    }

    /// Gives `user` a role on the repository: `admin`, `maintain`, `write`, `triage`, `read`
    /// or `none`. (The owner is always `admin`.)
    pub fn set_permission(&self, owner: &str, name: &str, user: &str, permission: &str) {
        debug_assert!(
            ["admin", "maintain", "write", "triage", "read", "none"].contains(&permission),
            "unknown permission {permission}"
        );
        let mut state = self.shared.lock();
        state.user(user);
        if let Some(repo) = state.repo_mut(owner, name) {
            repo.permissions
                .insert(user.to_lowercase(), permission.to_string());
        }
    }

    /// Opens an issue by `author`. Returns its number (issues and pull requests share one
    /// sequence per repository).
    pub fn add_issue(
        &self,
        owner: &str,
        name: &str,
        title: &str,
        body: &str,
        author: &str,
    ) -> anyhow::Result<u64> {
        let mut state = self.shared.lock();
        state.user(author);
        let id = state.next_id();
        let repo = state
            .repo_mut(owner, name)
            .ok_or_else(|| anyhow!("no repository {owner}/{name}"))?;
        let number = repo.next_number;
        repo.next_number += 1;
        let now = SystemTime::now();
        repo.issues.insert(
            number,
            Issue {
                number,
                id,
                title: title.to_string(),
                body: Some(body.to_string()).filter(|b| !b.is_empty()),
                author: author.to_string(),
                open: true,
                state_reason: None,
                labels: Vec::new(),
                created_at: now,
                updated_at: now,
                closed_at: None,
                closed_by: None,
                pull: None,
            },
        );
        Ok(number)
    }

    /// Adds a comment by `author` (a person typing on github.com). Returns its id.
    pub fn add_comment(
        &self,
        owner: &str,
        repo: &str,
        issue: u64,
        author: &str,
        body: &str,
    ) -> anyhow::Result<u64> {
        let mut state = self.shared.lock();
        issues::add_comment(
            &mut state,
            owner,
            repo,
            issue,
            author,
            body,
            SystemTime::now(),
        )
        .ok_or_else(|| anyhow!("no issue {owner}/{repo}#{issue}"))
    }

    /// A person opens a pull request (with GitHub's validation). Returns its number.
    pub async fn open_pull(
        &self,
        owner: &str,
        name: &str,
        head: &str,
        base: &str,
        title: &str,
        author: &str,
    ) -> anyhow::Result<u64> {
        let new = pulls::NewPull {
            title,
            body: None,
            head,
            base,
            draft: false,
            maintainer_can_modify: true,
            author,
        };
        pulls::open(&self.shared, owner, name, new, SystemTime::now())
            .await
            .map_err(|e| anyhow!("{} {}: {:?}", e.status, e.message, e.errors))
    }

    /// Merges a pull request as `merger` would with GitHub's "Create a merge commit": a real
    /// merge commit on the base branch (refused on conflicts and for drafts, like GitHub),
    /// then the pull request is closed and marked merged. Returns the merge commit's sha.
    pub async fn merge_pull(
        &self,
        owner: &str,
        name: &str,
        number: u64,
        merger: &str,
    ) -> anyhow::Result<String> {
        let (head_sha, base_ref, head_ref, repo_owner) = {
            let mut state = self.shared.lock();
            state.user(merger);
            let repo = state
                .repo(owner, name)
                .ok_or_else(|| anyhow!("no repository {owner}/{name}"))?;
            let issue = repo
                .issues
                .get(&number)
                .ok_or_else(|| anyhow!("no pull request #{number}"))?;
            let pull = issue
                .pull
                .as_ref()
                .ok_or_else(|| anyhow!("#{number} is an issue, not a pull request"))?;
            if !issue.open {
                bail!("pull request #{number} is closed");
            }
            if pull.draft {
                bail!("pull request #{number} is still a draft");
            }
            (
                pull.head_sha.clone(),
                pull.base_ref.clone(),
                pull.head_ref.clone(),
                repo.owner.clone(),
            )
        };
        let path = self.repo_path(owner, name);
        let base_sha = git::branch_sha(&path, &base_ref)
            .await?
            .ok_or_else(|| anyhow!("base branch {base_ref} is missing"))?;
        let user = self.shared.lock().user(merger);
        let message = format!("Merge pull request #{number} from {repo_owner}/{head_ref}");
        let merge = git::merge_commit(
            &path,
            &base_sha,
            &head_sha,
            &message,
            &person(&user.login, user.id),
        )
        .await?
        .ok_or_else(|| anyhow!("pull request #{number} has conflicts with {base_ref}"))?;
        git::update_branch(&path, &base_ref, &merge, Some(&base_sha)).await?;
        let now = SystemTime::now();
        {
            let mut state = self.shared.lock();
            let issue = state
                .repo_mut(owner, name)
                .and_then(|r| r.issues.get_mut(&number))
                .ok_or_else(|| anyhow!("pull request #{number} vanished"))?;
            issue.open = false;
            issue.closed_at = Some(now);
            issue.closed_by = Some(user.login.clone());
            issue.updated_at = now;
            if let Some(pull) = issue.pull.as_mut() {
                pull.merged = true;
                pull.merged_at = Some(now);
                pull.merged_by = Some(user.login.clone());
                pull.merge_commit_sha = Some(merge.clone());
                pull.base_sha = base_sha;
            }
        }
        pulls::after_push(&self.shared, owner, name, now).await;
        Ok(merge)
    }

    /// Closes a pull request without merging, as `closer`.
    pub fn close_pull(
        &self,
        owner: &str,
        name: &str,
        number: u64,
        closer: &str,
    ) -> anyhow::Result<()> {
        let mut state = self.shared.lock();
        state.user(closer);
        let issue = state
            .repo_mut(owner, name)
            .and_then(|r| r.issues.get_mut(&number))
            .filter(|i| i.pull.is_some())
            .ok_or_else(|| anyhow!("no pull request {owner}/{name}#{number}"))?;
        let now = SystemTime::now();
        issue.open = false;
        issue.closed_at = Some(now);
        issue.closed_by = Some(closer.to_string());
        issue.updated_at = now;
        Ok(())
    }

    // ----- inspection ----------------------------------------------------------------------

    /// All pull requests of the repository, by number.
    pub fn pulls(&self, owner: &str, name: &str) -> Vec<PullInfo> {
        let state = self.shared.lock();
        state
            .repo(owner, name)
            .map(|r| r.issues.values().filter_map(pull_info).collect())
            .unwrap_or_default()
    }

    pub fn pull(&self, owner: &str, name: &str, number: u64) -> Option<PullInfo> {
        let state = self.shared.lock();
        state
            .repo(owner, name)
            .and_then(|r| r.issues.get(&number))
            .and_then(pull_info)
    }

    /// An issue, or the issue side of a pull request.
    pub fn issue(&self, owner: &str, name: &str, number: u64) -> Option<IssueInfo> {
        let state = self.shared.lock();
        let issue = state.repo(owner, name)?.issues.get(&number)?;
        Some(IssueInfo {
            number: issue.number,
            title: issue.title.clone(),
            body: issue.body.clone(),
            author: issue.author.clone(),
            open: issue.open,
            is_pull_request: issue.pull.is_some(),
            labels: issue.labels.clone(),
        })
    }

    /// The comments on an issue or pull request, oldest first.
    pub fn comments(&self, owner: &str, name: &str, issue: u64) -> Vec<CommentInfo> {
        let state = self.shared.lock();
        state
            .repo(owner, name)
            .map(|r| {
                r.comments
                    .values()
                    .filter(|c| c.issue == issue)
                    .map(comment_info)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One comment by id.
    pub fn comment(&self, owner: &str, name: &str, id: u64) -> Option<CommentInfo> {
        let state = self.shared.lock();
        state.repo(owner, name)?.comments.get(&id).map(comment_info)
    }

    /// The reactions on a comment.
    pub fn reactions(&self, owner: &str, name: &str, comment: u64) -> Vec<ReactionInfo> {
        self.comment(owner, name, comment)
            .map(|c| c.reactions)
            .unwrap_or_default()
    }

    /// The label names of an issue or pull request, in the order they were added.
    pub fn labels(&self, owner: &str, name: &str, issue: u64) -> Vec<String> {
        self.issue(owner, name, issue)
            .map(|i| i.labels)
            .unwrap_or_default()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests with this operation id (`pulls/create` …).
    pub fn requests_for(&self, operation: &str) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.operation == operation)
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Adds a fault rule (see [`Fault`]); rules are tried in the order they were added.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Waits until `condition` holds, re-checking after every request the stand-in answers
    /// and every webhook it delivers (no polling), for at most `timeout`.
    pub async fn wait_until<F>(
        &self,
        timeout: Duration,
        what: &str,
        condition: F,
    ) -> anyhow::Result<()>
    where
        F: Fn(&StandIn) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if condition(self) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
        }
    }
}
