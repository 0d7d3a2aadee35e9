//! Pull requests: create, list, get, update, and what pushes and merges do to them.
//!
//! Branch facts come from the real bare repository (a pull request cannot be opened from or
//! onto a branch that does not exist, nor with no commits between base and head), so the
//! app's pushes are what make pull requests possible, as on GitHub.

use std::path::PathBuf;
use std::time::SystemTime;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::apps::location;
use super::git;
use super::http::{ApiError, Reply, Req, paginate};
use super::issues::visible_repo;
use super::render;
use super::state::{Config, Grant, Issue, Pull, Repo, Shared, State, node_id, timestamp};

const CREATE_DOCS: &str = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request";
const UPDATE_DOCS: &str = "https://docs.github.com/rest/pulls/pulls#update-a-pull-request";

/// Diff statistics only the single-pull-request answers carry.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    pub commits: u64,
    pub additions: u64,
    pub deletions: u64,
    pub changed_files: u64,
}

async fn stats(repo_path: &std::path::Path, base: &str, head: &str) -> Stats {
    let commits = git::count_commits(repo_path, base, head).await.unwrap_or(0);
    let (additions, deletions, changed_files) = git::diff_stats(repo_path, base, head)
        .await
        .unwrap_or_default();
    Stats {
        commits,
        additions,
        deletions,
        changed_files,
    }
}

/// The path of a repository's bare git directory.
pub(crate) fn repo_dir(cfg: &Config, owner: &str, name: &str) -> PathBuf {
    cfg.root
        .join(owner.to_lowercase())
        .join(format!("{}.git", name.to_lowercase()))
}

fn branch_end(cfg: &Config, state: &State, repo: &Repo, branch: &str, sha: &str) -> Value {
    json!({
        "label": format!("{}:{branch}", repo.owner),
        "ref": branch,
        "sha": sha,
        "user": render::user_by_login(cfg, state, &repo.owner),
        "repo": render::repo(cfg, state, repo),
    })
}

/// A pull request object: `pull-request` with `stats`, `pull-request-simple` (what lists
/// return) without.
pub(crate) fn render_pull(
    cfg: &Config,
    state: &State,
    repo: &Repo,
    issue: &Issue,
    stats: Option<Stats>,
) -> Value {
    let Some(pull) = &issue.pull else {
        return Value::Null;
    };
    let api = &cfg.api_url;
    let repo_url = format!("{api}/repos/{}", repo.full_name());
    let url = format!("{repo_url}/pulls/{}", issue.number);
    let issue_url = format!("{repo_url}/issues/{}", issue.number);
    let html_url = format!("{}/pull/{}", render::repo_html_url(cfg, repo), issue.number);
    let statuses_url = format!("{repo_url}/statuses/{}", pull.head_sha);
    let mut value = json!({
        "url": url,
        "id": pull.id,
        "node_id": node_id("PR", pull.id),
        "html_url": html_url,
        "diff_url": format!("{html_url}.diff"),
        "patch_url": format!("{html_url}.patch"),
        "issue_url": issue_url,
        "commits_url": format!("{url}/commits"),
        "review_comments_url": format!("{url}/comments"),
        "review_comment_url": format!("{repo_url}/pulls/comments{{/number}}"),
        "comments_url": format!("{issue_url}/comments"),
        "statuses_url": statuses_url,
        "number": issue.number,
        "state": if issue.open { "open" } else { "closed" },
        "locked": false,
        "title": issue.title,
        "user": render::user_by_login(cfg, state, &issue.author),
        "body": issue.body,
        "labels": render::issue_labels(cfg, repo, issue),
        "milestone": null,
        "active_lock_reason": null,
        "created_at": timestamp(issue.created_at),
        "updated_at": timestamp(issue.updated_at),
        "closed_at": issue.closed_at.map(timestamp),
        "merged_at": pull.merged_at.map(timestamp),
        "merge_commit_sha": pull.merge_commit_sha,
    });
    let rest = json!({
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "head": branch_end(cfg, state, repo, &pull.head_ref, &pull.head_sha),
        "base": branch_end(cfg, state, repo, &pull.base_ref, &pull.base_sha),
        "_links": {
            "self": {"href": url},
            "html": {"href": html_url},
            "issue": {"href": issue_url},
            "comments": {"href": format!("{issue_url}/comments")},
            "review_comments": {"href": format!("{url}/comments")},
            "review_comment": {"href": format!("{repo_url}/pulls/comments{{/number}}")},
            "commits": {"href": format!("{url}/commits")},
            "statuses": {"href": statuses_url},
        },
        "author_association": render::author_association(state, repo, &issue.author),
        "auto_merge": null,
        "draft": pull.draft,
    });
    render::merge(&mut value, rest);
    if let Some(stats) = stats {
        let comments = repo
            .comments
            .values()
            .filter(|c| c.issue == issue.number)
            .count();
        // GitHub computes mergeability in the background; for an open pull request the
        // stand-in reports the settled answer at once.
        let (mergeable, mergeable_state) = if !issue.open {
            (Value::Null, "unknown")
        } else if pull.draft {
            (json!(true), "draft")
        } else {
            (json!(true), "clean")
        };
        let extra = json!({
            "merged": pull.merged,
            "mergeable": mergeable,
            "rebaseable": mergeable,
            "mergeable_state": mergeable_state,
            "merged_by": pull.merged_by.as_deref().map(|l| render::user_by_login(cfg, state, l)),
            "comments": comments,
            "review_comments": 0,
            "maintainer_can_modify": pull.maintainer_can_modify,
            "commits": stats.commits,
            "additions": stats.additions,
            "deletions": stats.deletions,
            "changed_files": stats.changed_files,
        });
        render::merge(&mut value, extra);
    }
    value
}

/// What opening a pull request needs.
pub(crate) struct NewPull<'a> {
    pub title: &'a str,
    pub body: Option<&'a str>,
    pub head: &'a str,
    pub base: &'a str,
    pub draft: bool,
    pub maintainer_can_modify: bool,
    pub author: &'a str,
}

fn field_error(field: &str, code: &str) -> Value {
    json!([{"resource": "PullRequest", "field": field, "code": code}])
}

fn custom_error(message: String, docs: &str) -> ApiError {
    ApiError::validation(
        json!([{"resource": "PullRequest", "code": "custom", "message": message}]),
        docs,
    )
}

/// Opens a pull request with GitHub's checks: both branches exist in the repository, there
/// are commits between them, and no open pull request has the same head and base (GitHub's
/// "A pull request already exists for owner:branch."). Returns its number.
pub(crate) async fn open(
    shared: &Shared,
    owner: &str,
    repo: &str,
    new: NewPull<'_>,
    now: SystemTime,
) -> Result<u64, ApiError> {
    let (repo_owner, dir) = {
        let state = shared.lock();
        let r = state.repo(owner, repo).ok_or_else(ApiError::not_found)?;
        (r.owner.clone(), repo_dir(&shared.cfg, owner, repo))
    };
    // `head` is `branch` or `owner:branch`; forks are not modelled, so another owner's branch
    // does not exist.
    let head = match new.head.split_once(':') {
        Some((o, branch)) if o.eq_ignore_ascii_case(&repo_owner) => branch,
        Some(_) => {
            return Err(ApiError::validation(
                field_error("head", "invalid"),
                CREATE_DOCS,
            ));
        }
        None => new.head,
    };
    let git_error = |e: anyhow::Error| {
        tracing::error!(error = %e, "git failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Server Error")
    };
    let head_sha = git::branch_sha(&dir, head).await.map_err(git_error)?;
    let base_sha = git::branch_sha(&dir, new.base).await.map_err(git_error)?;
    let (head_sha, base_sha) = match (head_sha, base_sha) {
        (Some(h), Some(b)) => (h, b),
        (None, _) => {
            return Err(ApiError::validation(
                field_error("head", "invalid"),
                CREATE_DOCS,
            ));
        }
        (_, None) => {
            return Err(ApiError::validation(
                field_error("base", "invalid"),
                CREATE_DOCS,
            ));
        }
    };
    let ahead = git::count_commits(&dir, &base_sha, &head_sha)
        .await
        .map_err(git_error)?;
    if ahead == 0 {
        return Err(custom_error(
            format!("No commits between {} and {head}", new.base),
            CREATE_DOCS,
        ));
    }
    let mut state = shared.lock();
    state.user(new.author);
    let issue_id = state.next_id();
    let pull_id = state.next_id();
    let r = state
        .repo_mut(owner, repo)
        .ok_or_else(ApiError::not_found)?;
    let duplicate = r.issues.values().any(|i| {
        i.open
            && i.pull
                .as_ref()
                .is_some_and(|p| p.head_ref == head && p.base_ref == new.base)
    });
    if duplicate {
        return Err(custom_error(
            format!("A pull request already exists for {}:{head}.", r.owner),
            CREATE_DOCS,
        ));
    }
    let number = r.next_number;
    r.next_number += 1;
    r.issues.insert(
        number,
        Issue {
            number,
            id: issue_id,
            title: new.title.to_string(),
            body: new.body.map(str::to_string),
            author: new.author.to_string(),
            open: true,
            state_reason: None,
            labels: Vec::new(),
            created_at: now,
            updated_at: now,
            closed_at: None,
            closed_by: None,
            pull: Some(Pull {
                id: pull_id,
                head_ref: head.to_string(),
                head_sha,
                base_ref: new.base.to_string(),
                base_sha,
                draft: new.draft,
                merged: false,
                merged_at: None,
                merged_by: None,
                merge_commit_sha: None,
                maintainer_can_modify: new.maintainer_can_modify,
            }),
        },
    );
    Ok(number)
}

fn opt_string(body: &Value, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(&format!(
            "For 'properties/{field}', it is not a string."
        ))),
    }
}

fn opt_bool(body: &Value, field: &str) -> Result<Option<bool>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(&format!(
            "For 'properties/{field}', it is not a boolean."
        ))),
    }
}

/// Renders one pull request with its diff statistics.
async fn reply_for(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    number: u64,
) -> Result<Value, ApiError> {
    let (base, head) = {
        let state = shared.lock();
        let r = visible_repo(&state, grant, owner, repo)?;
        let pull = r
            .issues
            .get(&number)
            .and_then(|i| i.pull.as_ref())
            .ok_or_else(ApiError::not_found)?;
        (pull.base_sha.clone(), pull.head_sha.clone())
    };
    let stats = stats(&repo_dir(&shared.cfg, owner, repo), &base, &head).await;
    let state = shared.lock();
    let r = visible_repo(&state, grant, owner, repo)?;
    let issue = r.issues.get(&number).ok_or_else(ApiError::not_found)?;
    Ok(render_pull(&shared.cfg, &state, r, issue, Some(stats)))
}

/// `POST /repos/{owner}/{repo}/pulls` → **201**, opened by the app's bot.
pub(crate) async fn create(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    req: &Req,
    now: SystemTime,
) -> Result<Reply, ApiError> {
    {
        let state = shared.lock();
        visible_repo(&state, grant, owner, repo)?;
    }
    let body = req.json()?;
    let title = opt_string(&body, "title")?;
    let head = opt_string(&body, "head")?;
    let base = opt_string(&body, "base")?;
    let text = opt_string(&body, "body")?;
    let draft = opt_bool(&body, "draft")?.unwrap_or(false);
    let modify = opt_bool(&body, "maintainer_can_modify")?.unwrap_or(true);
    let missing: Vec<Value> = [("title", &title), ("head", &head), ("base", &base)]
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(f, _)| json!({"resource": "PullRequest", "field": f, "code": "missing_field"}))
        .collect();
    let (Some(title), Some(head), Some(base)) = (title, head, base) else {
        return Err(ApiError::validation(Value::Array(missing), CREATE_DOCS));
    };
    let bot = shared.cfg.bot_login();
    let new = NewPull {
        title: &title,
        body: text.as_deref(),
        head: &head,
        base: &base,
        draft,
        maintainer_can_modify: modify,
        author: &bot,
    };
    let number = open(shared, owner, repo, new, now).await?;
    let value = reply_for(shared, grant, owner, repo, number).await?;
    let url = value["url"].as_str().unwrap_or_default().to_string();
    Ok(location(Reply::created(value), &url))
}

/// `GET /repos/{owner}/{repo}/pulls` with GitHub's filters. `head` must be `owner:branch`:
/// GitHub silently ignores a `head` without an owner and returns every pull request, a quirk
/// kept here so that code relying on the bare form fails in tests as it would in production.
pub(crate) fn list(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    req: &Req,
) -> Result<Reply, ApiError> {
    let state = shared.lock();
    let r = visible_repo(&state, grant, owner, repo)?;
    let wanted_state = req.query.get("state").map_or("open", String::as_str);
    if !matches!(wanted_state, "open" | "closed" | "all") {
        return Err(ApiError::validation(
            json!([{"resource": "PullRequest", "field": "state", "code": "invalid"}]),
            "https://docs.github.com/rest/pulls/pulls#list-pull-requests",
        ));
    }
    let head = req
        .query
        .get("head")
        .and_then(|h| h.split_once(':'))
        .map(|(o, b)| (o.to_lowercase(), b.to_string()));
    let base = req.query.get("base");
    let mut pulls: Vec<&Issue> = r
        .issues
        .values()
        .filter(|i| i.pull.is_some())
        .filter(|i| match wanted_state {
            "open" => i.open,
            "closed" => !i.open,
            _ => true,
        })
        .filter(|i| {
            let Some(p) = &i.pull else { return false };
            head.as_ref()
                .is_none_or(|(o, b)| *o == r.owner.to_lowercase() && p.head_ref == *b)
                && base.is_none_or(|b| p.base_ref == *b)
        })
        .collect();
    let sort = req.query.get("sort").map_or("created", String::as_str);
    match sort {
        "updated" => pulls.sort_by_key(|i| (i.updated_at, i.number)),
        _ => pulls.sort_by_key(|i| (i.created_at, i.number)),
    }
    let default_direction = if sort == "created" { "desc" } else { "asc" };
    if req
        .query
        .get("direction")
        .map_or(default_direction, String::as_str)
        == "desc"
    {
        pulls.reverse();
    }
    let items = pulls
        .into_iter()
        .map(|i| render_pull(&shared.cfg, &state, r, i, None))
        .collect();
    Ok(paginate(&shared.cfg.api_url, req, items))
}

pub(crate) async fn get(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    number: u64,
) -> Result<Reply, ApiError> {
    reply_for(shared, grant, owner, repo, number)
        .await
        .map(Reply::ok)
}

/// `PATCH /repos/{owner}/{repo}/pulls/{n}`: `title`, `body`, `state`, `base`,
/// `maintainer_can_modify`. REST cannot change `draft` (GitHub ignores it here; only GraphQL
/// can), so neither does the stand-in.
pub(crate) async fn update(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    number: u64,
    req: &Req,
    now: SystemTime,
) -> Result<Reply, ApiError> {
    {
        let state = shared.lock();
        let r = visible_repo(&state, grant, owner, repo)?;
        r.issues
            .get(&number)
            .and_then(|i| i.pull.as_ref())
            .ok_or_else(ApiError::not_found)?;
    }
    let body = req.json()?;
    let title = opt_string(&body, "title")?;
    let text = opt_string(&body, "body")?;
    let new_state = opt_string(&body, "state")?;
    let base = opt_string(&body, "base")?;
    let modify = opt_bool(&body, "maintainer_can_modify")?;
    if let Some(s) = &new_state
        && s != "open"
        && s != "closed"
    {
        return Err(ApiError::validation(
            field_error("state", "invalid"),
            UPDATE_DOCS,
        ));
    }
    let dir = repo_dir(&shared.cfg, owner, repo);
    let git_error = |e: anyhow::Error| {
        tracing::error!(error = %e, "git failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Server Error")
    };
    let base_sha = match &base {
        Some(b) => Some(
            git::branch_sha(&dir, b)
                .await
                .map_err(git_error)?
                .ok_or_else(|| ApiError::validation(field_error("base", "invalid"), UPDATE_DOCS))?,
        ),
        None => None,
    };
    let (head_ref, base_ref) = {
        let state = shared.lock();
        let r = visible_repo(&state, grant, owner, repo)?;
        r.issues
            .get(&number)
            .and_then(|i| i.pull.as_ref())
            .map(|p| (p.head_ref.clone(), p.base_ref.clone()))
            .ok_or_else(ApiError::not_found)?
    };
    let head_exists = git::branch_sha(&dir, &head_ref)
        .await
        .map_err(git_error)?
        .is_some();
    let base_exists = git::branch_sha(&dir, &base_ref)
        .await
        .map_err(git_error)?
        .is_some();
    {
        let mut state = shared.lock();
        let closer = shared.cfg.bot_login();
        let r = state
            .repo_mut(owner, repo)
            .ok_or_else(ApiError::not_found)?;
        let repo_owner = r.owner.clone();
        let others_open: Vec<(String, String)> = r
            .issues
            .values()
            .filter(|i| i.open && i.number != number)
            .filter_map(|i| i.pull.as_ref())
            .map(|p| (p.head_ref.clone(), p.base_ref.clone()))
            .collect();
        let issue = r.issues.get_mut(&number).ok_or_else(ApiError::not_found)?;
        let (open, merged, head_ref, current_base) = match &issue.pull {
            Some(p) => (issue.open, p.merged, p.head_ref.clone(), p.base_ref.clone()),
            None => return Err(ApiError::not_found()),
        };
        if let (Some(b), false) = (&base, open)
            && *b != current_base
        {
            return Err(custom_error(
                "Cannot change the base branch of a closed pull request.".to_string(),
                UPDATE_DOCS,
            ));
        }
        let target_base = base.clone().unwrap_or(current_base);
        if new_state.as_deref() == Some("open") && !open {
            if merged {
                return Err(custom_error(
                    "state cannot be changed. The pull request has already been merged."
                        .to_string(),
                    UPDATE_DOCS,
                ));
            }
            if !head_exists {
                return Err(custom_error(
                    "state cannot be changed. The head branch was deleted.".to_string(),
                    UPDATE_DOCS,
                ));
            }
            // A pull request closed because its base branch was deleted stays closed.
            if !base_exists {
                return Err(custom_error(
                    "state cannot be changed. The base branch was deleted.".to_string(),
                    UPDATE_DOCS,
                ));
            }
        }
        let will_be_open = match new_state.as_deref() {
            Some("open") => true,
            Some(_) => false,
            None => open,
        };
        if will_be_open && others_open.contains(&(head_ref.clone(), target_base.clone())) {
            return Err(custom_error(
                format!("A pull request already exists for {repo_owner}:{head_ref}."),
                UPDATE_DOCS,
            ));
        }
        if let Some(title) = title {
            issue.title = title;
        }
        if let Some(text) = text {
            issue.body = Some(text);
        }
        if let Some(pull) = issue.pull.as_mut() {
            if let (Some(b), Some(sha)) = (base, base_sha) {
                pull.base_ref = b;
                pull.base_sha = sha;
            }
            if let Some(m) = modify {
                pull.maintainer_can_modify = m;
            }
        }
        if will_be_open != open {
            issue.open = will_be_open;
            if will_be_open {
                issue.closed_at = None;
                issue.closed_by = None;
                issue.state_reason = Some("reopened");
            } else {
                issue.closed_at = Some(now);
                issue.closed_by = Some(closer);
                issue.state_reason = None;
            }
        }
        issue.updated_at = now;
    }
    reply_for(shared, grant, owner, repo, number)
        .await
        .map(Reply::ok)
}

/// What GitHub does after a push (or a branch deletion): open pull requests follow their
/// branches' new tips, and a pull request whose head or base branch is gone is closed (for
/// good, in the base case: that is why stacks must be retargeted before a branch is deleted).
pub(crate) async fn after_push(shared: &Shared, owner: &str, repo: &str, now: SystemTime) {
    let dir = repo_dir(&shared.cfg, owner, repo);
    let branches = match git::branches(&dir).await {
        Ok(branches) => branches,
        Err(error) => {
            tracing::error!(%error, "listing branches after a push");
            return;
        }
    };
    let mut state = shared.lock();
    let Some(r) = state.repo_mut(owner, repo) else {
        return;
    };
    r.pushed_at = now;
    for issue in r.issues.values_mut() {
        if !issue.open {
            continue;
        }
        let Some(pull) = issue.pull.as_mut() else {
            continue;
        };
        match (branches.get(&pull.head_ref), branches.get(&pull.base_ref)) {
            (Some(head), Some(base)) => {
                if pull.head_sha != *head || pull.base_sha != *base {
                    pull.head_sha = head.clone();
                    pull.base_sha = base.clone();
                    issue.updated_at = now;
                }
            }
            _ => {
                issue.open = false;
                issue.closed_at = Some(now);
                issue.updated_at = now;
            }
        }
    }
}
