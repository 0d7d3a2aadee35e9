//! GitHub's JSON representations of the stand-in's objects.
//!
//! Field names, types and nullability follow GitHub's OpenAPI description (checked by
//! `tests/it/standin_conformance.rs`) and every field octocrab's models require is present (checked
//! by `tests/it/standin.rs`, which deserializes these answers with octocrab). URLs point at the
//! stand-in itself (`api_url`), so nothing refers to github.com; "html" pages live under the
//! same origin, as on GitHub Enterprise Server.

use serde_json::{Value, json};

use super::state::{
    Comment, Config, Installation, Issue, Label, Permissions, Reaction, Repo, Selection, State,
    User, UserKind, node_id, timestamp,
};

/// Permissions the app declares (and every installation grants), as GitHub shows them.
pub(crate) fn app_permissions() -> Value {
    permissions(&super::state::app_permissions())
}

/// A permission map as GitHub shows it: `{"contents": "write", …}`.
pub(crate) fn permissions(permissions: &Permissions) -> Value {
    Value::Object(
        permissions
            .iter()
            .map(|(name, access)| (name.clone(), Value::from(access.as_str())))
            .collect(),
    )
}

/// Events the app subscribes to. `installation` and `installation_repositories` are not
/// listed: GitHub delivers them to every app and does not show them in this list.
pub(crate) fn app_events() -> Value {
    json!(["issue_comment", "pull_request"])
}

fn user_path(login: &str) -> String {
    login.replace('[', "%5B").replace(']', "%5D")
}

/// A `simple-user` object. Bots get GitHub's bot shape: `type: "Bot"`, an `html_url` under
/// `/apps/<slug>`, and an `[bot]`-suffixed login.
pub(crate) fn user(cfg: &Config, user: &User) -> Value {
    let api = &cfg.api_url;
    let path = user_path(&user.login);
    let url = format!("{api}/users/{path}");
    let html_url = match user.kind {
        UserKind::Bot => format!(
            "{api}/apps/{}",
            user.login.trim_end_matches("[bot]").to_lowercase()
        ),
        _ => format!("{api}/{path}"),
    };
    let node_prefix = match user.kind {
        UserKind::User => "U",
        UserKind::Organization => "O",
        UserKind::Bot => "BOT",
    };
    json!({
        "login": user.login,
        "id": user.id,
        "node_id": node_id(node_prefix, user.id),
        "avatar_url": format!("{api}/avatars/u/{}?v=4", user.id),
        "gravatar_id": "",
        "url": url,
        "html_url": html_url,
        "followers_url": format!("{url}/followers"),
        "following_url": format!("{url}/following{{/other_user}}"),
        "gists_url": format!("{url}/gists{{/gist_id}}"),
        "starred_url": format!("{url}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{url}/subscriptions"),
        "organizations_url": format!("{url}/orgs"),
        "repos_url": format!("{url}/repos"),
        "events_url": format!("{url}/events{{/privacy}}"),
        "received_events_url": format!("{url}/received_events"),
        "type": user.kind.as_str(),
        "user_view_type": "public",
        "site_admin": false
    })
}

/// Renders a user by login; a login the state does not know (cannot happen for objects the
/// stand-in created) renders as a user with id 0 rather than failing the whole answer.
pub(crate) fn user_by_login(cfg: &Config, state: &State, login: &str) -> Value {
    match state.users.get(&login.to_lowercase()) {
        Some(u) => user(cfg, u),
        None => user(
            cfg,
            &User {
                id: 0,
                login: login.to_string(),
                kind: UserKind::User,
            },
        ),
    }
}

/// The `html_url` of a repository.
pub(crate) fn repo_html_url(cfg: &Config, repo: &Repo) -> String {
    format!("{}/{}/{}", cfg.api_url, repo.owner, repo.name)
}

/// The clone URL: the stand-in's git smart-HTTP endpoint for the repository.
pub(crate) fn clone_url(cfg: &Config, owner: &str, name: &str) -> String {
    format!("{}/git/{owner}/{name}.git", cfg.api_url)
}

/// A `full-repository` object (what `GET /repos/{owner}/{repo}` answers).
///
/// Repositories are private: the git endpoint refuses anonymous access, as GitHub does for
/// private repositories, so the JSON says so too.
pub(crate) fn repo(cfg: &Config, state: &State, repo: &Repo) -> Value {
    let api = &cfg.api_url;
    let full = repo.full_name();
    let url = format!("{api}/repos/{full}");
    let html_url = repo_html_url(cfg, repo);
    let open_issues = repo.issues.values().filter(|i| i.open).count();
    let mut value = json!({
        "id": repo.id,
        "node_id": node_id("R", repo.id),
        "name": repo.name,
        "full_name": full,
        "private": true,
        "visibility": "private",
        "owner": user_by_login(cfg, state, &repo.owner),
        "html_url": html_url,
        "description": null,
        "fork": false,
        "url": url,
        "archive_url": format!("{url}/{{archive_format}}{{/ref}}"),
        "assignees_url": format!("{url}/assignees{{/user}}"),
        "blobs_url": format!("{url}/git/blobs{{/sha}}"),
        "branches_url": format!("{url}/branches{{/branch}}"),
        "collaborators_url": format!("{url}/collaborators{{/collaborator}}"),
        "comments_url": format!("{url}/comments{{/number}}"),
        "commits_url": format!("{url}/commits{{/sha}}"),
        "compare_url": format!("{url}/compare/{{base}}...{{head}}"),
        "contents_url": format!("{url}/contents/{{+path}}"),
        "contributors_url": format!("{url}/contributors"),
        "deployments_url": format!("{url}/deployments"),
        "downloads_url": format!("{url}/downloads"),
        "events_url": format!("{url}/events"),
        "forks_url": format!("{url}/forks"),
    });
    let more = json!({
        "git_commits_url": format!("{url}/git/commits{{/sha}}"),
        "git_refs_url": format!("{url}/git/refs{{/sha}}"),
        "git_tags_url": format!("{url}/git/tags{{/sha}}"),
        "git_url": format!("{}.git", api.replacen("http", "git", 1) + "/" + &full),
        "hooks_url": format!("{url}/hooks"),
        "issue_comment_url": format!("{url}/issues/comments{{/number}}"),
        "issue_events_url": format!("{url}/issues/events{{/number}}"),
        "issues_url": format!("{url}/issues{{/number}}"),
        "keys_url": format!("{url}/keys{{/key_id}}"),
        "labels_url": format!("{url}/labels{{/name}}"),
        "languages_url": format!("{url}/languages"),
        "merges_url": format!("{url}/merges"),
        "milestones_url": format!("{url}/milestones{{/number}}"),
        "notifications_url": format!("{url}/notifications{{?since,all,participating}}"),
        "pulls_url": format!("{url}/pulls{{/number}}"),
        "releases_url": format!("{url}/releases{{/id}}"),
        "ssh_url": format!("git@{}:{full}.git", api.trim_start_matches("http://")),
        "stargazers_url": format!("{url}/stargazers"),
        "statuses_url": format!("{url}/statuses/{{sha}}"),
        "subscribers_url": format!("{url}/subscribers"),
        "subscription_url": format!("{url}/subscription"),
        "tags_url": format!("{url}/tags"),
        "teams_url": format!("{url}/teams"),
        "trees_url": format!("{url}/git/trees{{/sha}}"),
    });
    let rest = json!({
        "clone_url": clone_url(cfg, &repo.owner, &repo.name),
        "mirror_url": null,
        "svn_url": html_url,
        "homepage": null,
        "language": null,
        "forks_count": 0,
        "forks": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "watchers": 0,
        "size": 0,
        "default_branch": repo.default_branch,
        "open_issues_count": open_issues,
        "open_issues": open_issues,
        "is_template": false,
        "topics": [],
        "has_issues": true,
        "has_projects": true,
        "has_wiki": false,
        "has_pages": false,
        "has_downloads": true,
        "has_discussions": false,
        "archived": false,
        "disabled": false,
        "pushed_at": timestamp(repo.pushed_at),
        "created_at": timestamp(repo.created_at),
        "updated_at": timestamp(repo.pushed_at),
        "permissions": {"admin": false, "maintain": false, "push": true, "triage": true, "pull": true},
        "allow_rebase_merge": true,
        "allow_squash_merge": true,
        "allow_merge_commit": true,
        "allow_auto_merge": false,
        "delete_branch_on_merge": false,
        "allow_update_branch": false,
        "allow_forking": false,
        "web_commit_signoff_required": false,
        "license": null,
        "network_count": 0,
        "subscribers_count": 0
    });
    merge(&mut value, more);
    merge(&mut value, rest);
    value
}

/// Adds the fields of object `extra` to object `value` (big objects are built in parts:
/// `json!` recursion is limited).
pub(crate) fn merge(value: &mut Value, extra: Value) {
    if let (Some(map), Value::Object(extra)) = (value.as_object_mut(), extra) {
        map.extend(extra);
    }
}

/// A `label` object.
pub(crate) fn label(cfg: &Config, repo: &Repo, label: &Label) -> Value {
    json!({
        "id": label.id,
        "node_id": node_id("LA", label.id),
        "url": format!("{}/repos/{}/labels/{}", cfg.api_url, repo.full_name(), label.name.replace(' ', "%20")),
        "name": label.name,
        "description": label.description,
        "color": label.color,
        "default": false
    })
}

/// The labels of an issue, in the order they were added.
pub(crate) fn issue_labels(cfg: &Config, repo: &Repo, issue: &Issue) -> Vec<Value> {
    issue
        .labels
        .iter()
        .filter_map(|name| repo.labels.get(&name.to_lowercase()))
        .map(|l| label(cfg, repo, l))
        .collect()
}

/// The `reactions` roll-up GitHub attaches to issues and comments.
fn reaction_rollup(url: String, reactions: &[Reaction]) -> Value {
    let count = |c: &str| reactions.iter().filter(|r| r.content == c).count();
    json!({
        "url": url,
        "total_count": reactions.len(),
        "+1": count("+1"),
        "-1": count("-1"),
        "laugh": count("laugh"),
        "hooray": count("hooray"),
        "confused": count("confused"),
        "heart": count("heart"),
        "rocket": count("rocket"),
        "eyes": count("eyes")
    })
}

/// How GitHub describes the commenter's relation to the repository.
pub(crate) fn author_association(state: &State, repo: &Repo, login: &str) -> &'static str {
    if login.eq_ignore_ascii_case(&repo.owner) {
        return "OWNER";
    }
    if state
        .users
        .get(&login.to_lowercase())
        .is_some_and(|u| u.kind == UserKind::Bot)
    {
        return "NONE";
    }
    match repo
        .permissions
        .get(&login.to_lowercase())
        .map(String::as_str)
    {
        Some("admin" | "maintain" | "write" | "triage") => "COLLABORATOR",
        Some("read") => "MEMBER",
        _ => "NONE",
    }
}

/// An `issue` object. For a pull request it carries GitHub's `pull_request` link object and
/// the pull request's `html_url` (`…/pull/N`), like the real API.
pub(crate) fn issue(cfg: &Config, state: &State, repo: &Repo, issue: &Issue) -> Value {
    let api = &cfg.api_url;
    let repo_url = format!("{api}/repos/{}", repo.full_name());
    let url = format!("{repo_url}/issues/{}", issue.number);
    let html_base = repo_html_url(cfg, repo);
    let comments = repo
        .comments
        .values()
        .filter(|c| c.issue == issue.number)
        .count();
    let html_url = match issue.pull {
        Some(_) => format!("{html_base}/pull/{}", issue.number),
        None => format!("{html_base}/issues/{}", issue.number),
    };
    let mut value = json!({
        "id": issue.id,
        "node_id": issue.node_id(),
        "url": url,
        "repository_url": repo_url,
        "labels_url": format!("{url}/labels{{/name}}"),
        "comments_url": format!("{url}/comments"),
        "events_url": format!("{url}/events"),
        "html_url": html_url,
        "number": issue.number,
        "state": if issue.open { "open" } else { "closed" },
        "state_reason": issue.state_reason,
        "title": issue.title,
        "body": issue.body,
        "user": user_by_login(cfg, state, &issue.author),
        "labels": issue_labels(cfg, repo, issue),
        "assignee": null,
        "assignees": [],
        "milestone": null,
        "locked": false,
        "active_lock_reason": null,
        "comments": comments,
        "closed_at": issue.closed_at.map(timestamp),
        "closed_by": issue.closed_by.as_deref().map(|l| user_by_login(cfg, state, l)),
        "created_at": timestamp(issue.created_at),
        "updated_at": timestamp(issue.updated_at),
        "author_association": author_association(state, repo, &issue.author),
        "reactions": reaction_rollup(format!("{url}/reactions"), &[]),
        "timeline_url": format!("{url}/timeline"),
        "performed_via_github_app": null
    });
    if let Some(pull) = &issue.pull {
        value["draft"] = json!(pull.draft);
        value["pull_request"] = json!({
            "url": format!("{repo_url}/pulls/{}", issue.number),
            "html_url": format!("{html_base}/pull/{}", issue.number),
            "diff_url": format!("{html_base}/pull/{}.diff", issue.number),
            "patch_url": format!("{html_base}/pull/{}.patch", issue.number),
            "merged_at": pull.merged_at.map(timestamp)
        });
    }
    value
}

/// An `issue-comment` object.
pub(crate) fn comment(cfg: &Config, state: &State, repo: &Repo, comment: &Comment) -> Value {
    let api = &cfg.api_url;
    let repo_url = format!("{api}/repos/{}", repo.full_name());
    let url = format!("{repo_url}/issues/comments/{}", comment.id);
    let is_pull = repo
        .issues
        .get(&comment.issue)
        .is_some_and(|i| i.pull.is_some());
    let kind = if is_pull { "pull" } else { "issues" };
    let app = state
        .users
        .get(&comment.author.to_lowercase())
        .filter(|u| u.kind == UserKind::Bot && u.id == cfg.bot_user_id)
        .map(|_| app(cfg, state));
    json!({
        "id": comment.id,
        "node_id": node_id("IC", comment.id),
        "url": url,
        "html_url": format!("{}/{kind}/{}#issuecomment-{}", repo_html_url(cfg, repo), comment.issue, comment.id),
        "issue_url": format!("{repo_url}/issues/{}", comment.issue),
        "body": comment.body,
        "user": user_by_login(cfg, state, &comment.author),
        "created_at": timestamp(comment.created_at),
        "updated_at": timestamp(comment.updated_at),
        "author_association": author_association(state, repo, &comment.author),
        "reactions": reaction_rollup(format!("{url}/reactions"), &comment.reactions),
        "performed_via_github_app": app
    })
}

/// A `reaction` object.
pub(crate) fn reaction(cfg: &Config, state: &State, reaction: &Reaction) -> Value {
    json!({
        "id": reaction.id,
        "node_id": node_id("REA", reaction.id),
        "user": user_by_login(cfg, state, &reaction.user),
        "content": reaction.content,
        "created_at": timestamp(reaction.created_at)
    })
}

/// The GitHub App itself (`integration`), as `GET /app` answers.
pub(crate) fn app(cfg: &Config, state: &State) -> Value {
    json!({
        "id": cfg.app_id,
        "slug": cfg.app_slug,
        "node_id": node_id("A", cfg.app_id),
        "client_id": format!("Iv1.{:016x}", cfg.app_id),
        "owner": user_by_login(cfg, state, &cfg.app_owner),
        "name": cfg.app_name,
        "description": "Runs runbooks and opens pull requests.",
        "external_url": cfg.api_url,
        "html_url": format!("{}/apps/{}", cfg.api_url, cfg.app_slug),
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "permissions": app_permissions(),
        "events": app_events(),
        "installations_count": state.installations.len()
    })
}

/// An `installation` object (REST shape: ISO timestamps).
pub(crate) fn installation(cfg: &Config, state: &State, inst: &Installation) -> Value {
    let account = state
        .users
        .get(&inst.account)
        .map(|u| user(cfg, u))
        .unwrap_or(Value::Null);
    let target_id = account.get("id").cloned().unwrap_or(Value::Null);
    let target_type = account.get("type").cloned().unwrap_or(Value::Null);
    json!({
        "id": inst.id,
        "account": account,
        "repository_selection": match inst.selection {
            Selection::All => "all",
            Selection::Selected(_) => "selected",
        },
        "access_tokens_url": format!("{}/app/installations/{}/access_tokens", cfg.api_url, inst.id),
        "repositories_url": format!("{}/installation/repositories", cfg.api_url),
        "html_url": format!("{}/organizations/{}/settings/installations/{}", cfg.api_url, inst.account, inst.id),
        "app_id": cfg.app_id,
        "app_slug": cfg.app_slug,
        "target_id": target_id,
        "target_type": target_type,
        "permissions": app_permissions(),
        "events": app_events(),
        "created_at": timestamp(inst.created_at),
        "updated_at": timestamp(inst.updated_at),
        "single_file_name": null,
        "has_multiple_single_files": false,
        "single_file_paths": [],
        "suspended_by": null,
        "suspended_at": null
    })
}

/// The short repository object webhook payloads list (`repositories_added` …).
pub(crate) fn repo_short(repo: &Repo) -> Value {
    json!({
        "id": repo.id,
        "node_id": node_id("R", repo.id),
        "name": repo.name,
        "full_name": repo.full_name(),
        "private": true
    })
}
