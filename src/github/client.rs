//! The one door every GitHub call goes through: authentication (app JWT, or an installation
//! token minted narrow: for the one repository a call is about, with only the permissions its
//! operation needs, see [`super::operation`]), retries with backoff on 5xx and transport
//! errors, waiting out rate limits, and a count of calls per operation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::BodyExt;
use octocrab::Octocrab;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::operation::{Needs, Operation, Permissions};
use super::{GitHubError, RepoInfo};

/// Who a request is made as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As<'a> {
    /// The app itself, with a short-lived RS256 JWT (app endpoints only).
    App,
    /// An installation, about one of its repositories: with a token for that repository
    /// only, holding only what the operation needs ([`Operation::needs`]).
    Repo {
        installation: u64,
        /// The repository's name, without the owner (the installation is on one account).
        repo: &'a str,
    },
}

impl<'a> As<'a> {
    /// As the installation of `repo`, for that repository.
    pub fn repo(repo: &'a RepoInfo) -> As<'a> {
        As::Repo {
            installation: repo.installation_id,
            repo: repo.name(),
        }
    }
}

/// How hard to try before giving up.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub attempts: u32,
    /// First backoff after a 5xx or transport error; doubles each time.
    pub backoff: Duration,
    /// The longest a rate limit may make a call wait; a longer demand fails the call.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            backoff: Duration::from_millis(250),
            max_wait: Duration::from_secs(120),
        }
    }
}

/// A raw answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn json<T: DeserializeOwned>(&self, operation: &'static str) -> Result<T, GitHubError> {
        serde_json::from_slice(&self.body).map_err(|e| GitHubError::Decode {
            operation,
            message: e.to_string(),
        })
    }

    /// GitHub's `message` field of an error body, or the status's reason.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| {
                self.status
                    .canonical_reason()
                    .unwrap_or("unknown status")
                    .to_string()
            })
    }
}

/// An installation token and when it stops working.
#[derive(Clone)]
pub(super) struct CachedToken {
    pub token: SecretString,
    pub expires_at: SystemTime,
}

/// Renew tokens this long before GitHub says they expire, so no call carries a token that
/// dies in flight.
const TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

/// What a cached token is good for: one installation, one repository (lower case: GitHub's
/// names are case-insensitive), one permission set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenScope {
    installation: u64,
    repo: String,
    permissions: Permissions,
}

impl TokenScope {
    fn new(installation: u64, repo: &str, permissions: Permissions) -> TokenScope {
        TokenScope {
            installation,
            repo: repo.to_lowercase(),
            permissions,
        }
    }
}

/// Transport, credentials and policy shared by every call.
pub struct Client {
    http: Octocrab,
    /// GraphQL lives beside the REST root on github.com (`/graphql`) but at `/api/graphql`
    /// on Enterprise Server, whose REST root is `/api/v3`: a transport of its own.
    graphql_http: Octocrab,
    app_id: octocrab::models::AppId,
    key: octocrab::EncodingKey,
    policy: RetryPolicy,
    tokens: tokio::sync::Mutex<HashMap<TokenScope, CachedToken>>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    /// GitHub asks integrations to make content-creating requests one at a time (its
    /// secondary rate limits): writes queue here, reads do not.
    writes: tokio::sync::Mutex<()>,
}

impl Client {
    pub fn new(
        api_url: &str,
        app_id: u64,
        key: octocrab::EncodingKey,
        policy: RetryPolicy,
    ) -> Result<Self, GitHubError> {
        // Unauthenticated transport: we put the Authorization header on each request
        // ourselves, so one policy (ours) covers token renewal and retries.
        let transport = |base: &str| {
            Octocrab::builder()
                .base_uri(base)
                .map_err(|e| GitHubError::Config(format!("GITHUB_API_URL {api_url:?}: {e}")))?
                .set_connect_timeout(Some(Duration::from_secs(10)))
                .set_read_timeout(Some(Duration::from_secs(60)))
                .build()
                .map_err(|e| GitHubError::Config(e.to_string()))
        };
        let api_url = api_url.trim_end_matches('/');
        let graphql_base = api_url.strip_suffix("/v3").unwrap_or(api_url);
        Ok(Self {
            http: transport(api_url)?,
            graphql_http: transport(graphql_base)?,
            app_id: octocrab::models::AppId(app_id),
            key,
            policy,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            calls: Mutex::new(BTreeMap::new()),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Calls made so far, by operation id (e.g. `pulls/create`).
    pub fn call_counts(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().expect("call counter lock").clone()
    }

    fn count(&self, operation: &'static str) {
        *self
            .calls
            .lock()
            .expect("call counter lock")
            .entry(operation)
            .or_default() += 1;
    }

    /// A JSON call that must succeed with a 2xx status.
    pub async fn json<T: DeserializeOwned>(
        &self,
        operation: Operation,
        who: As<'_>,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, GitHubError> {
        let answer = self.call(operation, who, method, path, body).await?;
        if !answer.status.is_success() {
            return Err(GitHubError::Status {
                operation: operation.id(),
                status: answer.status.as_u16(),
                message: answer.message(),
            });
        }
        answer.json(operation.id())
    }

    /// A GraphQL call as an installation; GraphQL reports errors in a 200 answer's
    /// `errors`, which become a [`GitHubError::Status`] here.
    pub async fn graphql(
        &self,
        operation: Operation,
        who: As<'_>,
        query: &str,
        variables: serde_json::Value,
    ) -> Result<serde_json::Value, GitHubError> {
        let body = serde_json::json!({"query": query, "variables": variables});
        let answer = self
            .call_via(
                &self.graphql_http,
                operation,
                who,
                Method::POST,
                "/graphql",
                Some(&body),
            )
            .await?;
        let value: serde_json::Value = answer.json(operation.id())?;
        let operation = operation.id();
        match value.get("errors").and_then(|e| e.as_array()) {
            Some(errors) if !errors.is_empty() || !answer.status.is_success() => {
                Err(GitHubError::Status {
                    operation,
                    status: answer.status.as_u16(),
                    message: errors
                        .iter()
                        .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
                        .collect::<Vec<_>>()
                        .join("; "),
                })
            }
            _ if !answer.status.is_success() => Err(GitHubError::Status {
                operation,
                status: answer.status.as_u16(),
                message: answer.message(),
            }),
            _ => Ok(value),
        }
    }

    /// A call with retries; answers whatever final status GitHub gave.
    pub async fn call(
        &self,
        operation: Operation,
        who: As<'_>,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        self.call_via(&self.http, operation, who, method, path, body)
            .await
    }

    async fn call_via(
        &self,
        transport: &Octocrab,
        op: Operation,
        who: As<'_>,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        let operation = op.id();
        let body = body.map(|b| b.to_string());
        // Token exchanges are writes too, but they happen inside another call's turn: only
        // the outer call queues.
        let _turn = if method != Method::GET && op != Operation::AppsCreateInstallationAccessToken {
            Some(self.writes.lock().await)
        } else {
            None
        };
        let mut renewed_after_401 = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.count(operation);
            let authorization = self.authorization(op, who).await?;
            let result = self
                .send(
                    transport,
                    method.clone(),
                    path,
                    &authorization,
                    body.clone(),
                )
                .await;
            let last = attempt >= self.policy.attempts;
            let answer = match result {
                Ok(answer) => answer,
                Err(e) if !last => {
                    tracing::warn!(operation, attempt, error = %e, "GitHub unreachable; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(e) => {
                    return Err(GitHubError::Transport {
                        operation,
                        message: e,
                    });
                }
            };
            let status = answer.status;
            if status == StatusCode::UNAUTHORIZED
                && let As::Repo { installation, repo } = who
                && let Needs::Token(permissions) = op.needs()
                && !renewed_after_401
            {
                // The token may have been revoked or expired early: drop it and try once more
                // with a fresh one.
                tracing::info!(
                    operation,
                    installation,
                    "401 from GitHub; renewing the installation token"
                );
                self.tokens
                    .lock()
                    .await
                    .remove(&TokenScope::new(installation, repo, permissions));
                renewed_after_401 = true;
                continue;
            }
            if let Some(wait) = rate_limit_wait(&answer) {
                if last || wait > self.policy.max_wait {
                    return Err(GitHubError::RateLimited {
                        operation,
                        retry_after: wait,
                    });
                }
                tracing::warn!(
                    operation,
                    wait_ms = wait.as_millis() as u64,
                    "GitHub rate limit; waiting"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_server_error() && !last {
                tracing::warn!(
                    operation,
                    attempt,
                    status = status.as_u16(),
                    "GitHub server error; retrying"
                );
                tokio::time::sleep(self.backoff(attempt)).await;
                continue;
            }
            return Ok(answer);
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.policy.backoff * 2u32.saturating_pow(attempt.saturating_sub(1));
        // A little jitter keeps replicas from retrying in lock-step.
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        exp.min(Duration::from_secs(10)) + jitter
    }

    async fn send(
        &self,
        transport: &Octocrab,
        method: Method,
        path: &str,
        authorization: &SecretString,
        body: Option<String>,
    ) -> Result<Answer, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header(
                header::USER_AGENT,
                concat!("runbooks/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::AUTHORIZATION, authorization.expose_secret());
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                octocrab::OctoBody::from(json)
            }
            None => {
                request = request.header(header::CONTENT_LENGTH, "0");
                octocrab::OctoBody::empty()
            }
        };
        let request = request.body(body).map_err(|e| e.to_string())?;
        let response = transport
            .execute(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn authorization(&self, op: Operation, who: As<'_>) -> Result<SecretString, GitHubError> {
        let token = match (who, op.needs()) {
            (As::App, Needs::App) => self.jwt()?,
            // Boxed: fetching a token is itself a call (as the app), a recursion the compiler
            // needs sized.
            (As::Repo { installation, repo }, Needs::Token(permissions)) => {
                Box::pin(self.token(installation, repo, permissions)).await?
            }
            (As::App, Needs::Token(_)) | (As::Repo { .. }, Needs::App) => {
                return Err(GitHubError::WrongCredentials { operation: op.id() });
            }
        };
        Ok(SecretString::from(format!(
            "Bearer {}",
            token.expose_secret()
        )))
    }

    /// A fresh app JWT: RS256, `iat` 60 s in the past (clock drift), expiring within 10 min.
    fn jwt(&self) -> Result<SecretString, GitHubError> {
        octocrab::auth::create_jwt(self.app_id, &self.key)
            .map(SecretString::from)
            .map_err(|e| GitHubError::Config(format!("could not sign the app JWT: {e}")))
    }

    /// An installation token for `repo` only (its name, without the owner), holding only
    /// `permissions`: from the cache while it has more than a few minutes to live, else newly
    /// exchanged (`POST /app/installations/{id}/access_tokens` with `repositories` and
    /// `permissions`). GitHub refuses (422) a repository the installation cannot see and a
    /// permission the installation was not granted.
    pub async fn token(
        &self,
        installation: u64,
        repo: &str,
        permissions: Permissions,
    ) -> Result<SecretString, GitHubError> {
        let scope = TokenScope::new(installation, repo, permissions);
        // One lock over the exchange: concurrent callers wait for the same new token instead
        // of each asking GitHub for one.
        let mut tokens = self.tokens.lock().await;
        if let Some(cached) = tokens.get(&scope)
            && cached
                .expires_at
                .duration_since(SystemTime::now())
                .is_ok_and(|left| left > TOKEN_RENEW_BEFORE)
        {
            return Ok(cached.token.clone());
        }
        #[derive(serde::Deserialize)]
        struct Exchanged {
            token: SecretString,
            expires_at: String,
        }
        const OPERATION: Operation = Operation::AppsCreateInstallationAccessToken;
        let path = format!("/app/installations/{installation}/access_tokens");
        let request = serde_json::json!({
            "repositories": [repo],
            "permissions": permissions
                .iter()
                .map(|(permission, access)| (permission.name(), access.as_str()))
                .collect::<BTreeMap<_, _>>(),
        });
        let answer = self
            .call(OPERATION, As::App, Method::POST, &path, Some(&request))
            .await?;
        let operation_id = OPERATION.id();
        if answer.status != StatusCode::CREATED {
            return Err(GitHubError::Status {
                operation: operation_id,
                status: answer.status.as_u16(),
                message: answer.message(),
            });
        }
        let exchanged: Exchanged = answer.json(operation_id)?;
        let expires_at = humantime::parse_rfc3339_weak(&exchanged.expires_at).map_err(|e| {
            GitHubError::Decode {
                operation: operation_id,
                message: format!("expires_at {:?}: {e}", exchanged.expires_at),
            }
        })?;
        tokens.insert(
            scope,
            CachedToken {
                token: exchanged.token.clone(),
                expires_at,
            },
        );
        Ok(exchanged.token)
    }
}

/// How long GitHub asks us to wait, when this answer is a rate limit: a 429, or a 403 that
/// says so (`Retry-After`, an exhausted `x-ratelimit-remaining` with its reset time, or a
/// "secondary rate limit" message, for which GitHub's advice is to wait a minute).
fn rate_limit_wait(answer: &Answer) -> Option<Duration> {
    let status = answer.status;
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(seconds) = header("retry-after") {
        return Some(Duration::from_secs(seconds));
    }
    if header("x-ratelimit-remaining") == Some(0)
        && let Some(reset) = header("x-ratelimit-reset")
    {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    let message = answer.message().to_ascii_lowercase();
    if status == StatusCode::TOO_MANY_REQUESTS || message.contains("secondary rate limit") {
        return Some(Duration::from_secs(60));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], message: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: serde_json::json!({"message": message}).to_string().into(),
        }
    }

    #[test]
    fn rate_limits_are_recognised() {
        let wait = |a: &Answer| rate_limit_wait(a).map(|d| d.as_secs());
        assert_eq!(wait(&answer(403, &[("retry-after", "7")], "x")), Some(7));
        assert_eq!(wait(&answer(429, &[("retry-after", "2")], "x")), Some(2));
        assert_eq!(wait(&answer(429, &[], "x")), Some(60));
        assert_eq!(
            wait(&answer(
                403,
                &[],
                "You have exceeded a secondary rate limit"
            )),
            Some(60)
        );
        let soon = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 30;
        let reset = soon.to_string();
        let w = wait(&answer(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ],
            "API rate limit exceeded",
        ))
        .unwrap();
        assert!((29..=30).contains(&w), "{w}");
        // A plain permission error is not a rate limit.
        assert_eq!(
            wait(&answer(403, &[], "Resource not accessible by integration")),
            None
        );
        assert_eq!(wait(&answer(500, &[("retry-after", "1")], "x")), None);
    }
}
