//! App endpoints (JWT), token exchange, and repository-level lookups (`repos/get`,
//! collaborator permission).

use std::collections::BTreeSet;
use std::time::SystemTime;

use axum::http::{StatusCode, header};
use serde_json::{Value, json};

use super::auth;
use super::http::{ApiError, Reply, Req, paginate};
use super::render;
use super::state::{Access, Grant, Permissions, Shared, app_permissions, timestamp};

const TOKEN_DOCS: &str =
    "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app";

pub(crate) fn get_app(shared: &Shared) -> Result<Reply, ApiError> {
    let state = shared.lock();
    Ok(Reply::ok(render::app(&shared.cfg, &state)))
}

/// `GET /users/{username}`: known users (the app's bot among them), else 404.
pub(crate) fn get_user(shared: &Shared, login: &str) -> Result<Reply, ApiError> {
    let state = shared.lock();
    match state.users.get(&login.to_lowercase()) {
        Some(user) => Ok(Reply::ok(render::user(&shared.cfg, user))),
        None => Err(ApiError::not_found()),
    }
}

pub(crate) fn list_installations(shared: &Shared, req: &Req) -> Result<Reply, ApiError> {
    let state = shared.lock();
    let items = state
        .installations
        .values()
        .map(|inst| render::installation(&shared.cfg, &state, inst))
        .collect();
    Ok(paginate(&shared.cfg.api_url, req, items))
}

pub(crate) fn get_installation(shared: &Shared, id: u64) -> Result<Reply, ApiError> {
    let state = shared.lock();
    let inst = state
        .installations
        .get(&id)
        .ok_or_else(ApiError::not_found)?;
    Ok(Reply::ok(render::installation(&shared.cfg, &state, inst)))
}

/// `GET /repos/{owner}/{repo}/installation`: 404 unless the app is installed on the account
/// *and* the repository is selected.
pub(crate) fn repo_installation(
    shared: &Shared,
    owner: &str,
    repo: &str,
) -> Result<Reply, ApiError> {
    let state = shared.lock();
    let inst = state
        .installation_for_repo(owner, repo)
        .ok_or_else(ApiError::not_found)?;
    Ok(Reply::ok(render::installation(&shared.cfg, &state, inst)))
}

/// `POST /app/installations/{id}/access_tokens` → **201**. The body may narrow the token to
/// some repositories (`repositories` by name, `repository_ids`) and to some permissions
/// (`permissions`, e.g. `{"contents": "read"}`); naming a repository the installation cannot
/// see, or a permission above what the app was granted, is a 422 with GitHub's message (one
/// bad entry refuses the whole token). A narrowed token also holds `metadata: read`, as on
/// GitHub, and the answer's `permissions` are the token's own.
pub(crate) fn create_token(
    shared: &Shared,
    id: u64,
    req: &Req,
    now: SystemTime,
) -> Result<Reply, ApiError> {
    let body = req.json()?;
    let mut state = shared.lock();
    let inst = state
        .installations
        .get(&id)
        .ok_or_else(ApiError::not_found)?;
    let account = inst.account.clone();
    let visible: Vec<(u64, String)> = state
        .installation_repos(id)
        .iter()
        .map(|r| (r.id, r.name.to_lowercase()))
        .collect();
    let inaccessible = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
        )
        .with_docs(TOKEN_DOCS)
    };
    let mut scope: Option<BTreeSet<String>> = None;
    if let Some(names) = body.get("repositories").filter(|v| !v.is_null()) {
        let names = names
            .as_array()
            .ok_or_else(|| ApiError::invalid("`repositories` must be an array."))?;
        let set = scope.get_or_insert_with(BTreeSet::new);
        for name in names {
            // GitHub accepts `name` or `owner/name`.
            let name = name.as_str().ok_or_else(inaccessible)?.to_lowercase();
            let name = match name.split_once('/') {
                Some((o, n)) if o == account => n.to_string(),
                Some(_) => return Err(inaccessible()),
                None => name,
            };
            if !visible.iter().any(|(_, n)| *n == name) {
                return Err(inaccessible());
            }
            set.insert(name);
        }
    }
    if let Some(ids) = body.get("repository_ids").filter(|v| !v.is_null()) {
        let ids = ids
            .as_array()
            .ok_or_else(|| ApiError::invalid("`repository_ids` must be an array."))?;
        let set = scope.get_or_insert_with(BTreeSet::new);
        for rid in ids {
            let rid = rid.as_u64().ok_or_else(inaccessible)?;
            let (_, name) = visible
                .iter()
                .find(|(i, _)| *i == rid)
                .ok_or_else(inaccessible)?;
            set.insert(name.clone());
        }
    }
    let permissions = match body.get("permissions").filter(|v| !v.is_null()) {
        Some(requested) => Some(requested_permissions(requested)?),
        None => None,
    };
    let selection = match &state.installations[&id].selection {
        super::state::Selection::All if scope.is_none() => "all",
        _ => "selected",
    };
    let repositories: Option<Vec<Value>> = scope.as_ref().map(|names| {
        state
            .installation_repos(id)
            .into_iter()
            .filter(|r| names.contains(&r.name.to_lowercase()))
            .map(|r| render::repo(&shared.cfg, &state, r))
            .collect()
    });
    let shown = match &permissions {
        Some(permissions) => render::permissions(permissions),
        None => render::app_permissions(),
    };
    let (token, expires_at) = auth::mint_token(&mut state, id, scope, permissions, now);
    let mut answer = json!({
        "token": token,
        "expires_at": timestamp(expires_at),
        "permissions": shown,
        "repository_selection": selection,
    });
    if let Some(repositories) = repositories {
        answer["repositories"] = Value::Array(repositories);
    }
    Ok(Reply::created(answer))
}

/// The permissions a token request names, checked against the app's: each must be one the
/// app has, at a level not above the app's. The token also gets `metadata: read`, which
/// GitHub adds to every narrowed token.
fn requested_permissions(requested: &Value) -> Result<Permissions, ApiError> {
    let requested = requested
        .as_object()
        .ok_or_else(|| ApiError::invalid("For 'properties/permissions', it is not an object."))?;
    let granted = app_permissions();
    let mut permissions = Permissions::new();
    for (name, level) in requested {
        let access = level.as_str().and_then(Access::parse).ok_or_else(|| {
            ApiError::invalid(&format!(
                "For 'properties/{name}', {level} is not one of [\"read\", \"write\"]."
            ))
        })?;
        if granted.get(name).is_none_or(|held| *held < access) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The permissions requested are not granted to this installation.",
            )
            .with_docs(TOKEN_DOCS));
        }
        permissions.insert(name.clone(), access);
    }
    if let Some(metadata) = granted.get("metadata") {
        permissions
            .entry("metadata".to_string())
            .or_insert(*metadata);
    }
    Ok(permissions)
}

/// `GET /installation/repositories`: what the token can see, wrapped GitHub's way
/// (`{total_count, repository_selection, repositories}`), paged like a list.
pub(crate) fn installation_repos(
    shared: &Shared,
    grant: &Grant,
    req: &Req,
) -> Result<Reply, ApiError> {
    let state = shared.lock();
    let repos: Vec<Value> = state
        .installation_repos(grant.installation)
        .into_iter()
        .filter(|r| state.grant_sees(grant, &r.owner, &r.name))
        .map(|r| render::repo(&shared.cfg, &state, r))
        .collect();
    let total = repos.len();
    let selection = match state
        .installations
        .get(&grant.installation)
        .map(|i| &i.selection)
    {
        Some(super::state::Selection::All) if grant.repositories.is_none() => "all",
        _ => "selected",
    };
    let mut reply = paginate(&shared.cfg.api_url, req, repos);
    reply.body = json!({
        "total_count": total,
        "repository_selection": selection,
        "repositories": reply.body,
    });
    Ok(reply)
}

pub(crate) fn get_repo(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
) -> Result<Reply, ApiError> {
    let state = shared.lock();
    if !state.grant_sees(grant, owner, repo) {
        return Err(ApiError::not_found());
    }
    let r = state.repo(owner, repo).ok_or_else(ApiError::not_found)?;
    Ok(Reply::ok(render::repo(&shared.cfg, &state, r)))
}

/// GitHub's legacy `permission` folds the five roles into four: `maintain` reads as `write`
/// and `triage` as `read`; the exact role is only in `role_name`. Apps that check for
/// "write or better" must therefore look at `role_name` or accept `write` for maintainers.
pub(crate) fn legacy_permission(role: &str) -> &'static str {
    match role {
        "admin" => "admin",
        "maintain" | "write" => "write",
        "triage" | "read" => "read",
        _ => "none",
    }
}

/// `GET /repos/{owner}/{repo}/collaborators/{username}/permission`.
pub(crate) fn permission(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    user: &str,
) -> Result<Reply, ApiError> {
    let mut state = shared.lock();
    if !state.grant_sees(grant, owner, repo) {
        return Err(ApiError::not_found());
    }
    let role = {
        let r = state.repo(owner, repo).ok_or_else(ApiError::not_found)?;
        if user.eq_ignore_ascii_case(&r.owner) {
            "admin".to_string()
        } else {
            r.permissions
                .get(&user.to_lowercase())
                .cloned()
                .unwrap_or_else(|| "none".to_string())
        }
    };
    let u = state.user(user);
    let mut collaborator = render::user(&shared.cfg, &u);
    collaborator["permissions"] = json!({
        "admin": role == "admin",
        "maintain": matches!(role.as_str(), "admin" | "maintain"),
        "push": matches!(role.as_str(), "admin" | "maintain" | "write"),
        "triage": matches!(role.as_str(), "admin" | "maintain" | "write" | "triage"),
        "pull": role != "none",
    });
    collaborator["role_name"] = json!(role);
    Ok(Reply::ok(json!({
        "permission": legacy_permission(&role),
        "role_name": role,
        "user": collaborator,
    })))
}

/// `Location` header value for a created resource.
pub(crate) fn location(reply: Reply, url: &str) -> Reply {
    reply.header(header::LOCATION, url.to_string())
}
