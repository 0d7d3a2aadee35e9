//! The GitHub App: app authentication, installation tokens, repository resolution and
//! webhooks. Every call to GitHub goes through [`client::Client`], with a token for the one
//! repository it is about and only the permissions its operation needs
//! ([`operation::Operation::needs`]); git gets a token of its own ([`GitHubApp::git_token`]).

pub mod client;
pub mod issues;
pub mod operation;
pub mod pulls;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{GithubConfig, PrivateKeySource};
use crate::domain::{NotARepoName, RepoName};
pub use client::{As, Client, RetryPolicy};
pub use operation::Operation;

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub App configuration: {0}")]
    Config(String),
    /// The app is not (or no longer) installed on `owner/name`, or the repository is gone.
    #[error("the runbooks app is no longer installed on {0}")]
    NotInstalled(String),
    #[error("GitHub answered {status} to {operation}: {message}")]
    Status {
        operation: &'static str,
        status: u16,
        message: String,
    },
    #[error("GitHub's answer to {operation} could not be read: {message}")]
    Decode {
        operation: &'static str,
        message: String,
    },
    #[error("could not reach GitHub for {operation}: {message}")]
    Transport {
        operation: &'static str,
        message: String,
    },
    #[error("GitHub rate-limited {operation}; retry in {} s", retry_after.as_secs())]
    RateLimited {
        operation: &'static str,
        retry_after: Duration,
    },
    /// A call made with credentials its operation does not take (the app's JWT for a
    /// repository's endpoint, or an installation token for an `/app` one): a bug in the app,
    /// caught before anything is sent.
    #[error("{operation} was called with the wrong credentials (see Operation::needs)")]
    WrongCredentials { operation: &'static str },
}

impl GitHubError {
    /// Whether trying again later may succeed: GitHub unreachable, a 5xx, a rate limit.
    pub fn is_transient(&self) -> bool {
        match self {
            GitHubError::Transport { .. } | GitHubError::RateLimited { .. } => true,
            GitHubError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// A repository the app may work on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    pub installation_id: u64,
    pub id: u64,
    /// `owner/name` as GitHub spells it.
    pub full_name: RepoName,
    pub default_branch: String,
    /// Where to fetch and push, from GitHub's answer (never built from a host name).
    pub clone_url: String,
}

impl RepoInfo {
    /// The repository's name without the owner, as token requests name it.
    pub fn name(&self) -> &str {
        self.full_name.name()
    }
}

/// The outcome of resolving `org/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Found(RepoInfo),
    /// The app is not installed on it, or it does not exist: GitHub does not tell which.
    NotInstalled,
}

/// The app's identity as GitHub shows it (for commit authorship).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppIdentity {
    pub slug: String,
    pub name: String,
}

/// The app's bot user, as GitHub shows it on commits: `<slug>[bot]` and
/// `<id>+<slug>[bot]@users.noreply.github.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotUser {
    pub name: String,
    pub email: String,
}

/// How long a resolved repository is trusted without asking GitHub again. Webhooks about
/// installations clear entries at once; this bounds staleness when a webhook is missed.
const REPO_CACHE_TTL: Duration = Duration::from_secs(5 * 60);

/// The GitHub App, as configured.
pub struct GitHubApp {
    pub client: Client,
    repos: Mutex<HashMap<String, (RepoInfo, Instant)>>,
    /// Repository permissions of users (`owner/name` and login, lower case), briefly cached.
    permissions: Mutex<HashMap<(String, String), (issues::Permission, Instant)>>,
    identity: tokio::sync::OnceCell<AppIdentity>,
    bot: tokio::sync::OnceCell<BotUser>,
}

/// The token exchange's operation id, as errors carry it.
const TOKEN_EXCHANGE: &str = Operation::AppsCreateInstallationAccessToken.id();

fn repo_key(org: &str, name: &str) -> String {
    format!("{}/{}", org.to_ascii_lowercase(), name.to_ascii_lowercase())
}

impl GitHubApp {
    /// The app, when the configuration names one (`GITHUB_APP_ID` and a private key).
    pub fn from_config(config: &GithubConfig) -> Result<Option<Self>, GitHubError> {
        let (Some(app_id), Some(key)) = (config.app_id, &config.private_key) else {
            if config.app_id.is_some() || config.private_key.is_some() {
                return Err(GitHubError::Config(
                    "GITHUB_APP_ID and a private key (GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH) go together".into(),
                ));
            }
            return Ok(None);
        };
        let pem: SecretString = match key {
            PrivateKeySource::Inline(pem) => pem.clone(),
            PrivateKeySource::File(path) => std::fs::read_to_string(path)
                .map(SecretString::from)
                .map_err(|e| {
                GitHubError::Config(format!(
                    "could not read the private key {}: {e}",
                    path.display()
                ))
            })?,
        };
        Self::new(&config.api_url, app_id, &pem, RetryPolicy::default()).map(Some)
    }

    pub fn new(
        api_url: &str,
        app_id: u64,
        private_key_pem: &SecretString,
        policy: RetryPolicy,
    ) -> Result<Self, GitHubError> {
        let key = octocrab::EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes())
            .map_err(|e| {
            GitHubError::Config(format!(
                "the private key is not an RSA key in PEM form: {e}"
            ))
        })?;
        Ok(Self {
            client: Client::new(api_url, app_id, key, policy)?,
            repos: Mutex::new(HashMap::new()),
            permissions: Mutex::new(HashMap::new()),
            identity: tokio::sync::OnceCell::new(),
            bot: tokio::sync::OnceCell::new(),
        })
    }

    /// The app's slug and name (`GET /app`), asked once.
    pub async fn identity(&self) -> Result<AppIdentity, GitHubError> {
        self.identity
            .get_or_try_init(|| async {
                let app: serde_json::Value = self
                    .client
                    .json(
                        Operation::AppsGetAuthenticated,
                        As::App,
                        Method::GET,
                        "/app",
                        None,
                    )
                    .await?;
                let text = |field: &str| {
                    app.get(field)
                        .and_then(|v| v.as_str())
                        .map(String::from)
                        .ok_or_else(|| GitHubError::Decode {
                            operation: "apps/get-authenticated",
                            message: format!("no `{field}`"),
                        })
                };
                Ok(AppIdentity {
                    slug: text("slug")?,
                    name: text("name")?,
                })
            })
            .await
            .cloned()
    }

    /// The bot user commits are authored by (`GET /app` for the slug, then
    /// `GET /users/<slug>[bot]` for its id, as an installation: an app JWT is good for
    /// `/app` endpoints only), asked once.
    ///
    /// `GET /users/{login}` is about no repository, but every token the app mints names one:
    /// it is asked with a `metadata: read` token for the repository being worked on.
    pub async fn bot(&self, repo: &RepoInfo) -> Result<BotUser, GitHubError> {
        self.bot
            .get_or_try_init(|| async {
                let slug = self.identity().await?.slug;
                let login = format!("{slug}[bot]");
                // `[` and `]` are not allowed raw in a URI path.
                let path = format!("/users/{slug}%5Bbot%5D");
                let user: serde_json::Value = self
                    .client
                    .json(
                        Operation::UsersGetByUsername,
                        As::repo(repo),
                        Method::GET,
                        &path,
                        None,
                    )
                    .await?;
                let id =
                    user.get("id")
                        .and_then(|v| v.as_u64())
                        .ok_or_else(|| GitHubError::Decode {
                            operation: "users/get-by-username",
                            message: "no `id`".into(),
                        })?;
                Ok(BotUser {
                    email: format!("{id}+{login}@users.noreply.github.com"),
                    name: login,
                })
            })
            .await
            .cloned()
    }

    /// A token for fetching from and pushing to `repo` over git, good for that repository only
    /// and holding only `contents: write` ([`operation::GIT`]); cached and renewed like every
    /// token.
    pub async fn git_token(&self, repo: &RepoInfo) -> Result<SecretString, GitHubError> {
        self.client
            .token(repo.installation_id, repo.name(), operation::GIT)
            .await
    }

    /// `org/name` → installation → repository, from the cache while it is fresh.
    pub async fn resolve(&self, org: &str, name: &str) -> Result<Resolution, GitHubError> {
        let key = repo_key(org, name);
        if let Some((info, at)) = self.repos.lock().expect("repo cache lock").get(&key)
            && at.elapsed() < REPO_CACHE_TTL
        {
            return Ok(Resolution::Found(info.clone()));
        }
        let path = format!("/repos/{org}/{name}/installation");
        let answer = self
            .client
            .call(
                Operation::AppsGetRepoInstallation,
                As::App,
                Method::GET,
                &path,
                None,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(Resolution::NotInstalled);
        }
        if !answer.status.is_success() {
            return Err(GitHubError::Status {
                operation: Operation::AppsGetRepoInstallation.id(),
                status: answer.status.as_u16(),
                message: answer.message(),
            });
        }
        let installation: octocrab::models::Installation =
            answer.json(Operation::AppsGetRepoInstallation.id())?;
        let installation_id = installation.id.0;
        let path = format!("/repos/{org}/{name}");
        let who = As::Repo {
            installation: installation_id,
            repo: name,
        };
        let answer = match self
            .client
            .call(Operation::ReposGet, who, Method::GET, &path, None)
            .await
        {
            // Installed on the account, but this repository is not among those it was given:
            // GitHub refuses a token for it.
            Err(GitHubError::Status {
                operation: TOKEN_EXCHANGE,
                status: 422,
                ..
            }) => return Ok(Resolution::NotInstalled),
            answer => answer?,
        };
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(Resolution::NotInstalled);
        }
        if !answer.status.is_success() {
            return Err(GitHubError::Status {
                operation: Operation::ReposGet.id(),
                status: answer.status.as_u16(),
                message: answer.message(),
            });
        }
        let repo: octocrab::models::Repository = answer.json(Operation::ReposGet.id())?;
        let missing = |field: &str| GitHubError::Decode {
            operation: Operation::ReposGet.id(),
            message: format!("the repository has no `{field}`"),
        };
        let info = RepoInfo {
            installation_id,
            id: repo.id.0,
            full_name: repo
                .full_name
                .ok_or_else(|| missing("full_name"))?
                .parse()
                .map_err(|e: NotARepoName| GitHubError::Decode {
                    operation: Operation::ReposGet.id(),
                    message: e.to_string(),
                })?,
            default_branch: repo
                .default_branch
                .ok_or_else(|| missing("default_branch"))?,
            clone_url: repo
                .clone_url
                .ok_or_else(|| missing("clone_url"))?
                .to_string(),
        };
        self.repos
            .lock()
            .expect("repo cache lock")
            .insert(key, (info.clone(), Instant::now()));
        Ok(Resolution::Found(info))
    }

    /// A JSON call as the installation of `repo` that must succeed with a 2xx status.
    pub(crate) async fn repo_json<T: serde::de::DeserializeOwned>(
        &self,
        repo: &RepoInfo,
        operation: Operation,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, GitHubError> {
        self.client
            .json(operation, As::repo(repo), method, path, body)
            .await
    }

    /// [`GitHubApp::resolve`] for work already accepted: a repository the app can no longer
    /// reach is an error.
    pub async fn installed_repo(&self, org: &str, name: &str) -> Result<RepoInfo, GitHubError> {
        match self.resolve(org, name).await? {
            Resolution::Found(repo) => Ok(repo),
            Resolution::NotInstalled => Err(GitHubError::NotInstalled(format!("{org}/{name}"))),
        }
    }

    /// Forgets every repository of an installation (it was deleted or suspended).
    pub fn forget_installation(&self, installation_id: u64) {
        self.repos
            .lock()
            .expect("repo cache lock")
            .retain(|_, (info, _)| info.installation_id != installation_id);
    }

    /// Forgets repositories removed from an installation (`owner/name`).
    pub fn forget_repos(&self, full_names: &[RepoName]) {
        let mut repos = self.repos.lock().expect("repo cache lock");
        for full_name in full_names {
            repos.remove(&repo_key(full_name.owner(), full_name.name()));
        }
    }
}
