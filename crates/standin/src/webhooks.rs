//! Webhook deliveries, signed and shaped as GitHub sends them.
//!
//! Payloads start from real deliveries (`fixtures/webhooks/`, embedded in the binary) and are
//! rewritten for the stand-in's state: `repository`, `installation`, `sender`, `issue`,
//! `comment`, `pull_request` come from the stand-in, while the template decides the key set
//! and a few webhook-only quirks (for instance installation timestamps are Unix epoch numbers
//! in webhooks, ISO strings in REST).

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use axum::body::Bytes;
use hmac::{Hmac, Mac as _};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng as _;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::StandIn;
use super::pulls::{self, Stats};
use super::render;
use super::state::{Selection, Shared, State};

/// How long GitHub waits for a webhook answer before recording a failed delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `User-Agent` GitHub's webhook sender uses (`GitHub-Hookshot/<build>`).
pub const USER_AGENT: &str = "GitHub-Hookshot/5a1d3e8";

/// The hook id of the app's webhook (`X-GitHub-Hook-ID`).
const HOOK_ID: u64 = 404_404_404;

/// `X-Hub-Signature-256` of `body`: `sha256=` and the hex HMAC-SHA256 of the raw bytes under
/// the webhook secret. Receivers must verify it over the bytes as received, before parsing.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook event ready to send: the `X-GitHub-Event` name and the JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    pub event: String,
    pub payload: Value,
}

/// One delivery attempt, as GitHub's "Recent deliveries" page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `X-GitHub-Delivery`: a GUID, the same on redelivery.
    pub id: String,
    pub event: String,
    /// The receiver's HTTP status.
    pub status: u16,
    /// The exact bytes sent (and signed).
    pub body: Vec<u8>,
    /// The receiver's answer body, as text.
    pub response: String,
    pub redelivery: bool,
}

const TEMPLATES: [(&str, &str); 12] = [
    (
        "installation.created",
        include_str!("../../../fixtures/webhooks/installation.created.json"),
    ),
    (
        "installation.deleted",
        include_str!("../../../fixtures/webhooks/installation.deleted.json"),
    ),
    (
        "installation_repositories.added",
        include_str!("../../../fixtures/webhooks/installation_repositories.added.json"),
    ),
    (
        "installation_repositories.removed",
        include_str!("../../../fixtures/webhooks/installation_repositories.removed.json"),
    ),
    (
        "issue_comment.created",
        include_str!("../../../fixtures/webhooks/issue_comment.created.json"),
    ),
    (
        "issue_comment.edited",
        include_str!("../../../fixtures/webhooks/issue_comment.edited.json"),
    ),
    (
        "issue_comment.deleted",
        include_str!("../../../fixtures/webhooks/issue_comment.deleted.json"),
    ),
    (
        "pull_request.opened",
        include_str!("../../../fixtures/webhooks/pull_request.opened.json"),
    ),
    (
        "pull_request.closed",
        include_str!("../../../fixtures/webhooks/pull_request.closed.json"),
    ),
    (
        "ping.none",
        include_str!("../../../fixtures/webhooks/ping.none.json"),
    ),
    (
        "bors-issue-comment",
        include_str!("../../../fixtures/webhooks/bors-issue-comment.json"),
    ),
    (
        "bors-pull-request-merged",
        include_str!("../../../fixtures/webhooks/bors-pull-request-merged.json"),
    ),
];

/// The names of the embedded real payloads (`fixtures/webhooks/<name>.json`).
pub fn payload_names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|(name, _)| *name).collect()
}

/// A real payload from `fixtures/webhooks/<name>.json`, unchanged.
pub fn fixture_payload(name: &str) -> anyhow::Result<Value> {
    let (_, text) = TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| anyhow!("no webhook fixture named {name:?}"))?;
    serde_json::from_str(text).with_context(|| format!("parsing fixture {name}"))
}

/// Lays the stand-in's values (`mine`) over a real payload (`template`): mine decides the
/// values; where the template has a number and mine an RFC 3339 date, the date becomes epoch
/// seconds (GitHub's webhook quirk); template-only keys survive only as harmless scalars
/// (counts, flags, nulls) so that no string of the original delivery (logins, URLs) leaks.
fn overlay(template: &Value, mine: Value) -> Value {
    match (template, mine) {
        (Value::Object(t), Value::Object(m)) => {
            let mut out = Map::new();
            for (key, tv) in t {
                if !m.contains_key(key)
                    && matches!(tv, Value::Number(_) | Value::Bool(_) | Value::Null)
                {
                    out.insert(key.clone(), tv.clone());
                }
            }
            for (key, mv) in m {
                let merged = match t.get(&key) {
                    Some(tv) => overlay(tv, mv),
                    None => mv,
                };
                out.insert(key, merged);
            }
            Value::Object(out)
        }
        (Value::Number(_), Value::String(s)) => match humantime::parse_rfc3339(&s) {
            Ok(t) => json!(super::state::epoch(t)),
            Err(_) => Value::String(s),
        },
        (_, mine) => mine,
    }
}

fn event(name: &str, template: &str, mine: Value) -> anyhow::Result<WebhookEvent> {
    let template = fixture_payload(template)?;
    Ok(WebhookEvent {
        event: name.to_string(),
        payload: overlay(&template, mine),
    })
}

/// The short `installation` object of repository events (`{id, node_id}`), when the app is
/// installed on the repository.
fn installation_ref(state: &State, owner: &str, repo: &str) -> Option<Value> {
    state
        .installation_for_repo(owner, repo)
        .map(|inst| json!({"id": inst.id, "node_id": installation_node_id(inst.id)}))
}

/// GitHub's legacy node id of an installation: base64 of `023:IntegrationInstallation<id>`.
fn installation_node_id(id: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("023:IntegrationInstallation{id}"))
}

fn with_installation(mut mine: Value, installation: Option<Value>) -> Value {
    if let Some(inst) = installation {
        mine["installation"] = inst;
    }
    mine
}

fn random_guid() -> String {
    let mut rng = rand::rng();
    let bytes: [u8; 16] = rng.random();
    let h = hex::encode(bytes);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

async fn post(
    url: &str,
    event: &str,
    id: &str,
    body: &[u8],
    secret: &str,
    app_id: u64,
) -> anyhow::Result<(u16, String)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "*/*")
        .header("user-agent", USER_AGENT)
        .header("x-github-event", event)
        .header("x-github-delivery", id)
        .header("x-github-hook-id", HOOK_ID.to_string())
        .header("x-github-hook-installation-target-type", "integration")
        .header("x-github-hook-installation-target-id", app_id.to_string())
        .header("x-hub-signature-256", sign(secret.as_bytes(), body))
        .body(Full::new(Bytes::copy_from_slice(body)))
        .context("building the webhook request")?;
    let response = tokio::time::timeout(DELIVERY_TIMEOUT, client.request(request))
        .await
        .map_err(|_| anyhow!("webhook delivery to {url} timed out after {DELIVERY_TIMEOUT:?}"))?
        .with_context(|| format!("delivering a webhook to {url}"))?;
    let status = response.status().as_u16();
    let bytes = tokio::time::timeout(DELIVERY_TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| anyhow!("webhook answer from {url} timed out"))?
        .context("reading the webhook answer")?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn shared_of(standin: &StandIn) -> &Shared {
    &standin.shared
}

impl StandIn {
    /// Delivers `payload` as event `event` to `url`, signed with the webhook secret, with
    /// GitHub's headers (`X-GitHub-Event`, `X-GitHub-Delivery` (a fresh GUID),
    /// `X-Hub-Signature-256`, `User-Agent: GitHub-Hookshot/…`, `Content-Type:
    /// application/json`, the hook and target ids). The body is compact JSON, as GitHub's.
    /// Errors only when no HTTP answer came back within GitHub's 10 s.
    pub async fn send_webhook(
        &self,
        url: &str,
        event: &str,
        payload: &Value,
    ) -> anyhow::Result<Delivery> {
        let body = serde_json::to_vec(payload).context("serializing the payload")?;
        self.deliver(url, event, random_guid(), body, false).await
    }

    /// Sends a prepared [`WebhookEvent`].
    pub async fn send(&self, url: &str, event: &WebhookEvent) -> anyhow::Result<Delivery> {
        self.send_webhook(url, &event.event, &event.payload).await
    }

    /// Redelivers a delivery: the same `X-GitHub-Delivery`, the same bytes, a new attempt
    /// (GitHub's "Redeliver" button; it never retries by itself).
    pub async fn redeliver(&self, url: &str, delivery: &Delivery) -> anyhow::Result<Delivery> {
        self.deliver(
            url,
            &delivery.event,
            delivery.id.clone(),
            delivery.body.clone(),
            true,
        )
        .await
    }

    async fn deliver(
        &self,
        url: &str,
        event: &str,
        id: String,
        body: Vec<u8>,
        redelivery: bool,
    ) -> anyhow::Result<Delivery> {
        let shared = shared_of(self);
        let (status, response) = post(
            url,
            event,
            &id,
            &body,
            &shared.cfg.webhook_secret,
            shared.cfg.app_id,
        )
        .await?;
        let delivery = Delivery {
            id,
            event: event.to_string(),
            status,
            body,
            response,
            redelivery,
        };
        shared.lock().deliveries.push(delivery.clone());
        shared.changed.notify_waiters();
        Ok(delivery)
    }

    /// Every delivery made so far, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// A real payload from `fixtures/webhooks/<name>.json`, unchanged (see
    /// [`payload_names`]).
    pub fn payload(&self, name: &str) -> anyhow::Result<Value> {
        fixture_payload(name)
    }

    /// The `ping` GitHub sends when an app's webhook is set up.
    pub fn ping(&self) -> anyhow::Result<WebhookEvent> {
        let cfg = &self.shared.cfg;
        let state = self.shared.lock();
        let mine = json!({
            "zen": "Keep it logically awesome.",
            "hook_id": HOOK_ID,
            "hook": {
                "type": "App",
                "id": HOOK_ID,
                "name": "web",
                "active": true,
                "app_id": cfg.app_id,
                "events": render::app_events(),
                "config": {"content_type": "json", "insecure_ssl": "0", "url": format!("{}/webhooks/github", cfg.api_url)},
                "created_at": "2024-01-01T00:00:00Z",
                "updated_at": "2024-01-01T00:00:00Z",
                "url": format!("{}/app/hook/config", cfg.api_url),
                "ping_url": format!("{}/app/hook/pings", cfg.api_url),
                "deliveries_url": format!("{}/app/hook/deliveries", cfg.api_url),
                "test_url": format!("{}/app/hook/test", cfg.api_url),
                "last_response": {"code": null, "status": "unused", "message": null},
            },
            "sender": render::user_by_login(cfg, &state, &cfg.app_owner),
        });
        event("ping", "ping.none", mine)
    }

    fn installation_event(
        &self,
        state: &State,
        action: &str,
        installation: u64,
        repos: Value,
    ) -> anyhow::Result<Value> {
        let cfg = &self.shared.cfg;
        let inst = state
            .installations
            .get(&installation)
            .ok_or_else(|| anyhow!("no installation {installation}"))?;
        Ok(json!({
            "action": action,
            "installation": render::installation(cfg, state, inst),
            "repositories": repos,
            "requester": null,
            "sender": render::user_by_login(cfg, state, &inst.account),
        }))
    }

    /// `installation` / `created` for an existing installation (make it with
    /// [`StandIn::install`] first).
    pub fn installation_created(&self, installation: u64) -> anyhow::Result<WebhookEvent> {
        let state = self.shared.lock();
        let repos: Vec<Value> = state
            .installation_repos(installation)
            .into_iter()
            .map(render::repo_short)
            .collect();
        let mine = self.installation_event(&state, "created", installation, Value::Array(repos))?;
        event("installation", "installation.created", mine)
    }

    /// `installation` / `deleted`: renders the event, then uninstalls the app (its tokens
    /// stop working), as happens when an organisation removes the app.
    pub fn installation_deleted(&self, installation: u64) -> anyhow::Result<WebhookEvent> {
        let mine = {
            let state = self.shared.lock();
            let repos: Vec<Value> = state
                .installation_repos(installation)
                .into_iter()
                .map(render::repo_short)
                .collect();
            self.installation_event(&state, "deleted", installation, Value::Array(repos))?
        };
        self.uninstall(installation);
        event("installation", "installation.deleted", mine)
    }

    fn repositories_changed(
        &self,
        installation: u64,
        repos: &[&str],
        added: bool,
    ) -> anyhow::Result<WebhookEvent> {
        if added {
            self.add_repos(installation, repos);
        }
        let cfg = &self.shared.cfg;
        let mine = {
            let state = self.shared.lock();
            let inst = state
                .installations
                .get(&installation)
                .ok_or_else(|| anyhow!("no installation {installation}"))?;
            let listed: Vec<Value> = repos
                .iter()
                .filter_map(|name| state.repo(&inst.account, name))
                .map(render::repo_short)
                .collect();
            let (added_list, removed_list) = if added {
                (listed, Vec::new())
            } else {
                (Vec::new(), listed)
            };
            json!({
                "action": if added { "added" } else { "removed" },
                "installation": render::installation(cfg, &state, inst),
                "repository_selection": match inst.selection { Selection::All => "all", Selection::Selected(_) => "selected" },
                "repositories_added": added_list,
                "repositories_removed": removed_list,
                "requester": null,
                "sender": render::user_by_login(cfg, &state, &inst.account),
            })
        };
        if !added {
            self.remove_repos(installation, repos);
        }
        let template = if added {
            "installation_repositories.added"
        } else {
            "installation_repositories.removed"
        };
        event("installation_repositories", template, mine)
    }

    /// `installation_repositories` / `added`: adds the repositories to the installation and
    /// returns the event.
    pub fn installation_repositories_added(
        &self,
        installation: u64,
        repos: &[&str],
    ) -> anyhow::Result<WebhookEvent> {
        self.repositories_changed(installation, repos, true)
    }

    /// `installation_repositories` / `removed`: removes the repositories from the
    /// installation and returns the event.
    pub fn installation_repositories_removed(
        &self,
        installation: u64,
        repos: &[&str],
    ) -> anyhow::Result<WebhookEvent> {
        self.repositories_changed(installation, repos, false)
    }

    fn comment_event(
        &self,
        state: &State,
        owner: &str,
        repo: &str,
        comment_id: u64,
        action: &str,
        sender: &str,
    ) -> anyhow::Result<Value> {
        let cfg = &self.shared.cfg;
        let r = state
            .repo(owner, repo)
            .ok_or_else(|| anyhow!("no repository {owner}/{repo}"))?;
        let comment = r
            .comments
            .get(&comment_id)
            .ok_or_else(|| anyhow!("no comment {comment_id}"))?;
        let issue = r
            .issues
            .get(&comment.issue)
            .ok_or_else(|| anyhow!("no issue {}", comment.issue))?;
        let mine = json!({
            "action": action,
            "issue": render::issue(cfg, state, r, issue),
            "comment": render::comment(cfg, state, r, comment),
            "repository": render::repo(cfg, state, r),
            "sender": render::user_by_login(cfg, state, sender),
        });
        Ok(with_installation(
            mine,
            installation_ref(state, owner, repo),
        ))
    }

    fn comment_template(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        action: &str,
    ) -> &'static str {
        let state = self.shared.lock();
        let on_pull = state
            .repo(owner, repo)
            .and_then(|r| {
                r.comments
                    .get(&comment_id)
                    .and_then(|c| r.issues.get(&c.issue))
            })
            .is_some_and(|i| i.pull.is_some());
        match action {
            // The octokit examples have no comment on a pull request; bors' real one does.
            "created" if on_pull => "bors-issue-comment",
            "created" => "issue_comment.created",
            "edited" => "issue_comment.edited",
            _ => "issue_comment.deleted",
        }
    }

    /// `issue_comment` / `created`: `commenter` writes `body` on issue or pull request
    /// `issue` (the comment is stored, so the app can react to it, list it and so on), and
    /// the event GitHub would deliver is returned. The comment id is
    /// `event.payload["comment"]["id"]`.
    pub fn issue_comment_created(
        &self,
        owner: &str,
        repo: &str,
        issue: u64,
        body: &str,
        commenter: &str,
    ) -> anyhow::Result<WebhookEvent> {
        let id = self.add_comment(owner, repo, issue, commenter, body)?;
        let template = self.comment_template(owner, repo, id, "created");
        let mine =
            self.comment_event(&self.shared.lock(), owner, repo, id, "created", commenter)?;
        event("issue_comment", template, mine)
    }

    /// `issue_comment` / `edited`: `editor` changes the comment's body; the event carries
    /// GitHub's `changes.body.from`.
    pub fn issue_comment_edited(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        new_body: &str,
        editor: &str,
    ) -> anyhow::Result<WebhookEvent> {
        let old = {
            let mut state = self.shared.lock();
            let r = state
                .repo_mut(owner, repo)
                .ok_or_else(|| anyhow!("no repository {owner}/{repo}"))?;
            let c = r
                .comments
                .get_mut(&comment_id)
                .ok_or_else(|| anyhow!("no comment {comment_id}"))?;
            c.updated_at = SystemTime::now();
            std::mem::replace(&mut c.body, new_body.to_string())
        };
        let template = self.comment_template(owner, repo, comment_id, "edited");
        let mut mine = self.comment_event(
            &self.shared.lock(),
            owner,
            repo,
            comment_id,
            "edited",
            editor,
        )?;
        mine["changes"] = json!({"body": {"from": old}});
        event("issue_comment", template, mine)
    }

    /// `issue_comment` / `deleted`: renders the event, then deletes the comment.
    pub fn issue_comment_deleted(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        deleter: &str,
    ) -> anyhow::Result<WebhookEvent> {
        let template = self.comment_template(owner, repo, comment_id, "deleted");
        let mine = {
            let mut state = self.shared.lock();
            state.user(deleter);
            let mine = self.comment_event(&state, owner, repo, comment_id, "deleted", deleter)?;
            if let Some(r) = state.repo_mut(owner, repo) {
                r.comments.remove(&comment_id);
            }
            mine
        };
        event("issue_comment", template, mine)
    }

    async fn pull_event(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        action: &str,
        sender: Option<&str>,
    ) -> anyhow::Result<(Value, bool)> {
        let cfg = &self.shared.cfg;
        let (base, head) = {
            let state = self.shared.lock();
            let pull = state
                .repo(owner, repo)
                .and_then(|r| r.issues.get(&number))
                .and_then(|i| i.pull.as_ref())
                .ok_or_else(|| anyhow!("no pull request {owner}/{repo}#{number}"))?;
            (pull.base_sha.clone(), pull.head_sha.clone())
        };
        let dir = self.repo_path(owner, repo);
        let stats = Stats {
            commits: super::git::count_commits(&dir, &base, &head)
                .await
                .unwrap_or(0),
            ..Stats::default()
        };
        let (additions, deletions, changed_files) = super::git::diff_stats(&dir, &base, &head)
            .await
            .unwrap_or_default();
        let stats = Stats {
            additions,
            deletions,
            changed_files,
            ..stats
        };
        let state = self.shared.lock();
        let r = state
            .repo(owner, repo)
            .ok_or_else(|| anyhow!("no repository {owner}/{repo}"))?;
        let issue = r
            .issues
            .get(&number)
            .ok_or_else(|| anyhow!("no pull request {number}"))?;
        let merged = issue.pull.as_ref().is_some_and(|p| p.merged);
        let sender = sender
            .map(str::to_string)
            .or_else(|| issue.pull.as_ref().and_then(|p| p.merged_by.clone()))
            .or_else(|| issue.closed_by.clone())
            .unwrap_or_else(|| issue.author.clone());
        let mine = json!({
            "action": action,
            "number": number,
            "pull_request": pulls::render_pull(cfg, &state, r, issue, Some(stats)),
            "repository": render::repo(cfg, &state, r),
            "sender": render::user_by_login(cfg, &state, &sender),
        });
        Ok((
            with_installation(mine, installation_ref(&state, owner, repo)),
            merged,
        ))
    }

    /// `pull_request` / `opened` for a pull request in the stand-in (opened by the app or by
    /// [`StandIn::open_pull`]).
    pub async fn pull_request_opened(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> anyhow::Result<WebhookEvent> {
        let (mine, _) = self.pull_event(owner, repo, number, "opened", None).await?;
        event("pull_request", "pull_request.opened", mine)
    }

    /// `pull_request` / `closed` for a closed pull request; `pull_request.merged` is true
    /// when it was merged (see [`StandIn::merge_pull`]).
    pub async fn pull_request_closed(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> anyhow::Result<WebhookEvent> {
        let (mine, merged) = self.pull_event(owner, repo, number, "closed", None).await?;
        if mine["pull_request"]["state"] != "closed" {
            bail!("pull request {owner}/{repo}#{number} is not closed");
        }
        let template = if merged {
            "bors-pull-request-merged"
        } else {
            "pull_request.closed"
        };
        event("pull_request", template, mine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_githubs_published_test_vector() {
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn overlay_keeps_template_types_and_drops_foreign_strings() {
        let template = json!({"created_at": 1557933591, "login": "Codertocat", "count": 3, "nested": {"url": "https://x"}});
        let mine = json!({"created_at": "2024-01-01T00:00:00Z", "nested": {"url": "http://y"}});
        let out = overlay(&template, mine);
        assert_eq!(
            out,
            json!({"created_at": 1704067200, "count": 3, "nested": {"url": "http://y"}})
        );
    }

    #[test]
    fn every_fixture_parses() {
        for name in payload_names() {
            fixture_payload(name).expect("fixture parses");
        }
    }

    #[test]
    fn delivery_ids_look_like_guids() {
        let id = random_guid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, random_guid());
    }
}
