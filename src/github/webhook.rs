//! Webhook signatures and events: pure functions over the raw delivery.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Sha256;

use crate::domain::RepoName;

/// GitHub's limit on a delivery's body; larger ones are refused.
pub const MAX_PAYLOAD_BYTES: usize = 25 * 1024 * 1024;

/// Whether `X-Hub-Signature-256` (`sha256=<hex>`) is the HMAC-SHA256 of the raw body under
/// one of the secrets (several during a rotation). The comparison is constant-time.
pub fn signature_is_valid(secrets: &[SecretString], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_digest) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    secrets.iter().any(|secret| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    })
}

/// The signature GitHub would send for this body (for tests and the stand-in).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a delivery means to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ping,
    /// `installation` created, deleted, suspended, unsuspended, …
    Installation {
        action: String,
        installation_id: u64,
        /// `owner/name` of the repositories in the payload (when it lists them).
        repositories: Vec<RepoName>,
    },
    /// `installation_repositories` added or removed.
    InstallationRepositories {
        installation_id: u64,
        added: Vec<RepoName>,
        removed: Vec<RepoName>,
    },
    /// A pull request opened, closed (merged or not) or reopened.
    PullRequest {
        action: String,
        installation_id: u64,
        /// `owner/name` of the repository.
        repository: RepoName,
        number: u64,
        url: String,
        node_id: String,
        /// The head branch, when it is a branch of the same repository (not a fork).
        head: Option<String>,
        base: String,
        merged: bool,
    },
    /// A comment on an issue or pull request created, edited or deleted.
    IssueComment(Box<IssueComment>),
    /// Anything the app does not act on (yet): acknowledged and ignored.
    Other {
        event: String,
    },
}

/// An `issue_comment` delivery, as the comment trigger needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueComment {
    pub action: String,
    pub installation_id: u64,
    /// `owner/name` of the repository.
    pub repository: RepoName,
    pub issue_number: u64,
    /// Whether the thread is a pull request's.
    pub is_pull_request: bool,
    pub issue_title: String,
    pub issue_body: Option<String>,
    /// Who wrote the issue or pull request (its body), when the payload says.
    pub issue_author: Option<String>,
    /// The thread's page on GitHub.
    pub issue_url: String,
    pub comment_id: u64,
    pub body: String,
    pub author: String,
    /// The comment was written by a bot (any app, this one included).
    pub by_bot: bool,
}

fn full_names(list: Option<&Value>) -> Vec<RepoName> {
    list.and_then(Value::as_array)
        .map(|repos| {
            repos
                .iter()
                .filter_map(|r| r.get("full_name").and_then(Value::as_str))
                .filter_map(|full_name| full_name.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a delivery's payload for the event named by `X-GitHub-Event`.
pub fn parse(event: &str, payload: &Value) -> Result<Event, String> {
    let missing = |pointer: &str| format!("a `{event}` payload without {pointer}");
    let text = |pointer: &str| {
        payload
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| missing(pointer))
    };
    let number = |pointer: &str| {
        payload
            .pointer(pointer)
            .and_then(Value::as_u64)
            .ok_or_else(|| missing(pointer))
    };
    let installation_id = || number("/installation/id");
    let repository = || {
        text("/repository/full_name")?
            .parse::<RepoName>()
            .map_err(|e| format!("a `{event}` payload whose /repository/full_name: {e}"))
    };
    let action = payload
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Ok(match event {
        "ping" => Event::Ping,
        "installation" => Event::Installation {
            action,
            installation_id: installation_id()?,
            repositories: full_names(payload.get("repositories")),
        },
        "installation_repositories" => Event::InstallationRepositories {
            installation_id: installation_id()?,
            added: full_names(payload.get("repositories_added")),
            removed: full_names(payload.get("repositories_removed")),
        },
        "pull_request" => {
            let repository = repository()?;
            let same_repo = payload
                .pointer("/pull_request/head/repo/full_name")
                .and_then(Value::as_str)
                == Some(repository.as_str());
            Event::PullRequest {
                action,
                installation_id: installation_id()?,
                number: number("/pull_request/number")?,
                url: text("/pull_request/html_url")?,
                node_id: text("/pull_request/node_id")?,
                head: if same_repo {
                    Some(text("/pull_request/head/ref")?)
                } else {
                    None
                },
                base: text("/pull_request/base/ref")?,
                merged: payload
                    .pointer("/pull_request/merged")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                repository,
            }
        }
        "issue_comment" => {
            let author = text("/comment/user/login")?;
            let by_bot = payload
                .pointer("/comment/user/type")
                .and_then(Value::as_str)
                == Some("Bot")
                || author.ends_with("[bot]")
                || payload
                    .pointer("/comment/performed_via_github_app")
                    .is_some_and(|app| !app.is_null());
            Event::IssueComment(Box::new(IssueComment {
                action,
                installation_id: installation_id()?,
                repository: repository()?,
                issue_number: number("/issue/number")?,
                is_pull_request: payload
                    .pointer("/issue/pull_request")
                    .is_some_and(|p| !p.is_null()),
                issue_title: text("/issue/title")?,
                issue_body: payload
                    .pointer("/issue/body")
                    .and_then(Value::as_str)
                    .map(String::from),
                issue_author: payload
                    .pointer("/issue/user/login")
                    .and_then(Value::as_str)
                    .map(String::from),
                issue_url: text("/issue/html_url")?,
                comment_id: number("/comment/id")?,
                body: payload
                    .pointer("/comment/body")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                author,
                by_bot,
            }))
        }
        other => Event::Other {
            event: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published test vector.
    #[test]
    fn github_test_vector() {
        let secret = "It's a Secret to Everybody";
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret.as_bytes(), b"Hello, World!"), expected);
        let secrets = [SecretString::from(secret)];
        assert!(signature_is_valid(
            &secrets,
            b"Hello, World!",
            Some(expected)
        ));
        assert!(!signature_is_valid(
            &secrets,
            b"Hello, World?",
            Some(expected)
        ));
        assert!(!signature_is_valid(&secrets, b"Hello, World!", None));
        assert!(!signature_is_valid(
            &secrets,
            b"Hello, World!",
            Some("sha1=abc")
        ));
        assert!(!signature_is_valid(
            &secrets,
            b"Hello, World!",
            Some("sha256=zz")
        ));
        assert!(!signature_is_valid(&[], b"Hello, World!", Some(expected)));
    }

    #[test]
    fn any_of_several_secrets_during_rotation() {
        let secrets = [SecretString::from("old"), SecretString::from("new")];
        assert!(signature_is_valid(
            &secrets,
            b"x",
            Some(&sign(b"old", b"x"))
        ));
        assert!(signature_is_valid(
            &secrets,
            b"x",
            Some(&sign(b"new", b"x"))
        ));
        assert!(!signature_is_valid(
            &secrets,
            b"x",
            Some(&sign(b"other", b"x"))
        ));
    }

    #[test]
    fn events() {
        let payload = serde_json::json!({
            "action": "removed",
            "installation": {"id": 7},
            "repositories_added": [],
            "repositories_removed": [{"full_name": "acme/backend"}]
        });
        assert_eq!(
            parse("installation_repositories", &payload).unwrap(),
            Event::InstallationRepositories {
                installation_id: 7,
                added: vec![],
                removed: vec![RepoName::new("acme", "backend")]
            }
        );
        assert_eq!(parse("ping", &serde_json::json!({})).unwrap(), Event::Ping);
        assert!(parse("installation", &serde_json::json!({"action": "deleted"})).is_err());
        assert_eq!(
            parse("star", &serde_json::json!({})).unwrap(),
            Event::Other {
                event: "star".into()
            }
        );
    }
}
