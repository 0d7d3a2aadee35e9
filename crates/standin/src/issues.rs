//! Issues, issue comments, reactions and labels.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::apps::location;
use super::http::{ApiError, Reply, Req, paginate};
use super::render;
use super::state::{Comment, Grant, Label, Reaction, Repo, Shared, State};

/// The repository, if the grant may see it; otherwise GitHub's 404 (never 403, so that a
/// private repository's existence is not revealed).
pub(crate) fn visible_repo<'a>(
    state: &'a State,
    grant: &Grant,
    owner: &str,
    repo: &str,
) -> Result<&'a Repo, ApiError> {
    if !state.grant_sees(grant, owner, repo) {
        return Err(ApiError::not_found());
    }
    state.repo(owner, repo).ok_or_else(ApiError::not_found)
}

fn visible_repo_mut<'a>(
    state: &'a mut State,
    grant: &Grant,
    owner: &str,
    repo: &str,
) -> Result<&'a mut Repo, ApiError> {
    if !state.grant_sees(grant, owner, repo) {
        return Err(ApiError::not_found());
    }
    state.repo_mut(owner, repo).ok_or_else(ApiError::not_found)
}

pub(crate) fn get_issue(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    number: u64,
) -> Result<Reply, ApiError> {
    let state = shared.lock();
    let r = visible_repo(&state, grant, owner, repo)?;
    let issue = r.issues.get(&number).ok_or_else(ApiError::not_found)?;
    Ok(Reply::ok(render::issue(&shared.cfg, &state, r, issue)))
}

pub(crate) fn list_comments(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    number: u64,
    req: &Req,
) -> Result<Reply, ApiError> {
    let state = shared.lock();
    let r = visible_repo(&state, grant, owner, repo)?;
    if !r.issues.contains_key(&number) {
        return Err(ApiError::not_found());
    }
    let items = r
        .comments
        .values()
        .filter(|c| c.issue == number)
        .map(|c| render::comment(&shared.cfg, &state, r, c))
        .collect();
    Ok(paginate(&shared.cfg.api_url, req, items))
}

/// The `body` string of a comment request; GitHub answers a missing one with 422.
fn comment_body(req: &Req) -> Result<String, ApiError> {
    let json = req.json()?;
    match json.get("body") {
        Some(Value::String(body)) => Ok(body.clone()),
        Some(_) => Err(ApiError::invalid(
            "For 'properties/body', it is not a string.",
        )),
        None => Err(ApiError::invalid("\"body\" wasn't supplied.")),
    }
}

/// Adds a comment by `author` (shared by the REST handler and the test helpers).
pub(crate) fn add_comment(
    state: &mut State,
    owner: &str,
    repo: &str,
    number: u64,
    author: &str,
    body: &str,
    now: SystemTime,
) -> Option<u64> {
    state.user(author);
    let id = state.next_id();
    let r = state.repo_mut(owner, repo)?;
    let issue = r.issues.get_mut(&number)?;
    issue.updated_at = now;
    r.comments.insert(
        id,
        Comment {
            id,
            issue: number,
            author: author.to_string(),
            body: body.to_string(),
            created_at: now,
            updated_at: now,
            reactions: Vec::new(),
        },
    );
    Some(id)
}

pub(crate) fn create_comment(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    number: u64,
    req: &Req,
    now: SystemTime,
) -> Result<Reply, ApiError> {
    let mut state = shared.lock();
    let r = visible_repo(&state, grant, owner, repo)?;
    if !r.issues.contains_key(&number) {
        return Err(ApiError::not_found());
    }
    let body = comment_body(req)?;
    let bot = shared.cfg.bot_login();
    let id = add_comment(&mut state, owner, repo, number, &bot, &body, now)
        .ok_or_else(ApiError::not_found)?;
    let r = visible_repo(&state, grant, owner, repo)?;
    let comment = render::comment(&shared.cfg, &state, r, &r.comments[&id]);
    let url = comment["url"].as_str().unwrap_or_default().to_string();
    Ok(location(Reply::created(comment), &url))
}

pub(crate) fn get_comment(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    id: u64,
) -> Result<Reply, ApiError> {
    let state = shared.lock();
    let r = visible_repo(&state, grant, owner, repo)?;
    let comment = r.comments.get(&id).ok_or_else(ApiError::not_found)?;
    Ok(Reply::ok(render::comment(&shared.cfg, &state, r, comment)))
}

pub(crate) fn update_comment(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    id: u64,
    req: &Req,
    now: SystemTime,
) -> Result<Reply, ApiError> {
    let mut state = shared.lock();
    let body = comment_body(req)?;
    let r = visible_repo_mut(&mut state, grant, owner, repo)?;
    let comment = r.comments.get_mut(&id).ok_or_else(ApiError::not_found)?;
    comment.body = body;
    comment.updated_at = now;
    let r = visible_repo(&state, grant, owner, repo)?;
    Ok(Reply::ok(render::comment(
        &shared.cfg,
        &state,
        r,
        &r.comments[&id],
    )))
}

pub(crate) fn list_reactions(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    id: u64,
    req: &Req,
) -> Result<Reply, ApiError> {
    let state = shared.lock();
    let r = visible_repo(&state, grant, owner, repo)?;
    let comment = r.comments.get(&id).ok_or_else(ApiError::not_found)?;
    let wanted = req.query.get("content");
    let items = comment
        .reactions
        .iter()
        .filter(|re| wanted.is_none_or(|w| *w == re.content))
        .map(|re| render::reaction(&shared.cfg, &state, re))
        .collect();
    Ok(paginate(&shared.cfg.api_url, req, items))
}

/// The reaction contents GitHub accepts.
pub(crate) const REACTIONS: [&str; 8] = [
    "+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes",
];

/// Adds a reaction unless the user already reacted with that content. Returns the reaction
/// id and whether it is new.
pub(crate) fn add_reaction(
    state: &mut State,
    owner: &str,
    repo: &str,
    comment: u64,
    user: &str,
    content: &str,
    now: SystemTime,
) -> Option<(u64, bool)> {
    state.user(user);
    let id = state.next_id();
    let r = state.repo_mut(owner, repo)?;
    let c = r.comments.get_mut(&comment)?;
    if let Some(existing) = c
        .reactions
        .iter()
        .find(|re| re.content == content && re.user.eq_ignore_ascii_case(user))
    {
        return Some((existing.id, false));
    }
    c.reactions.push(Reaction {
        id,
        user: user.to_string(),
        content: content.to_string(),
        created_at: now,
    });
    Some((id, true))
}

/// `POST …/issues/comments/{id}/reactions`: **201** for a new reaction, **200** with the
/// existing one when the same user already reacted with the same content.
pub(crate) fn create_reaction(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    id: u64,
    req: &Req,
    now: SystemTime,
) -> Result<Reply, ApiError> {
    let mut state = shared.lock();
    let r = visible_repo(&state, grant, owner, repo)?;
    if !r.comments.contains_key(&id) {
        return Err(ApiError::not_found());
    }
    let json = req.json()?;
    let content = json
        .get("content")
        .and_then(Value::as_str)
        .filter(|c| REACTIONS.contains(c))
        .ok_or_else(|| {
            ApiError::validation(
                json!([{"resource": "Reaction", "code": "invalid", "field": "content"}]),
                "https://docs.github.com/rest/reactions/reactions#create-reaction-for-an-issue-comment",
            )
        })?
        .to_string();
    let bot = shared.cfg.bot_login();
    let (reaction_id, new) = add_reaction(&mut state, owner, repo, id, &bot, &content, now)
        .ok_or_else(ApiError::not_found)?;
    let r = visible_repo(&state, grant, owner, repo)?;
    let reaction = r.comments[&id]
        .reactions
        .iter()
        .find(|re| re.id == reaction_id)
        .ok_or_else(ApiError::not_found)?;
    let body = render::reaction(&shared.cfg, &state, reaction);
    Ok(if new {
        Reply::created(body)
    } else {
        Reply::ok(body)
    })
}

pub(crate) fn list_labels(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    number: u64,
    req: &Req,
) -> Result<Reply, ApiError> {
    let state = shared.lock();
    let r = visible_repo(&state, grant, owner, repo)?;
    let issue = r.issues.get(&number).ok_or_else(ApiError::not_found)?;
    Ok(paginate(
        &shared.cfg.api_url,
        req,
        render::issue_labels(&shared.cfg, r, issue),
    ))
}

/// The label names of an add-labels body. GitHub takes `{"labels": ["a"]}`,
/// `{"labels": [{"name": "a"}]}` and a bare `["a"]`.
fn label_names(req: &Req) -> Result<Vec<String>, ApiError> {
    let value: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&req.body).map_err(|_| ApiError::bad_json())?
    };
    let list = match &value {
        Value::Array(items) => items.clone(),
        Value::Object(map) => match map.get("labels") {
            Some(Value::Array(items)) => items.clone(),
            _ => return Err(ApiError::invalid("\"labels\" wasn't supplied.")),
        },
        _ => return Err(ApiError::invalid("Body must be an object or an array.")),
    };
    list.iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.clone()),
            Value::Object(o) => o
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ApiError::invalid("A label needs a name.")),
            _ => Err(ApiError::invalid("Labels must be strings.")),
        })
        .collect()
}

/// Adds labels to an issue, creating unknown labels in the repository (GitHub does so, with
/// colour `ededed`). Names match case-insensitively; an issue never has a label twice.
pub(crate) fn add_labels_to(
    state: &mut State,
    owner: &str,
    repo: &str,
    number: u64,
    names: &[String],
    now: SystemTime,
) -> Option<()> {
    let ids: Vec<u64> = names.iter().map(|_| state.next_id()).collect();
    let r = state.repo_mut(owner, repo)?;
    r.issues.get(&number)?;
    for (name, id) in names.iter().zip(ids) {
        let key = name.to_lowercase();
        let canonical = r
            .labels
            .entry(key)
            .or_insert_with(|| Label {
                id,
                name: name.clone(),
                color: "ededed".to_string(),
                description: None,
            })
            .name
            .clone();
        let issue = r.issues.get_mut(&number)?;
        if !issue
            .labels
            .iter()
            .any(|l| l.eq_ignore_ascii_case(&canonical))
        {
            issue.labels.push(canonical);
            issue.updated_at = now;
        }
    }
    Some(())
}

/// `POST /repos/{owner}/{repo}/issues/{n}/labels`: **200** with *all* the issue's labels.
pub(crate) fn add_labels(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    number: u64,
    req: &Req,
    now: SystemTime,
) -> Result<Reply, ApiError> {
    let mut state = shared.lock();
    let r = visible_repo(&state, grant, owner, repo)?;
    if !r.issues.contains_key(&number) {
        return Err(ApiError::not_found());
    }
    let names = label_names(req)?;
    if names.iter().any(|n| n.trim().is_empty()) {
        return Err(ApiError::validation(
            json!([{"resource": "Label", "code": "invalid", "field": "name"}]),
            "https://docs.github.com/rest/issues/labels#add-labels-to-an-issue",
        ));
    }
    add_labels_to(&mut state, owner, repo, number, &names, now).ok_or_else(ApiError::not_found)?;
    let r = visible_repo(&state, grant, owner, repo)?;
    let labels = render::issue_labels(&shared.cfg, r, &r.issues[&number]);
    Ok(Reply::ok(Value::Array(labels)))
}
