//! Repository contents read through the API (`GET /repos/{o}/{r}/contents/{path}`, e.g. for
//! `.github/runbooks.yml`) and branch deletion (`DELETE /repos/{o}/{r}/git/refs/heads/{b}`),
//! both straight from the bare repository.

use std::time::SystemTime;

use axum::http::{StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};

use super::git;
use super::http::{ApiError, Reply, Req};
use super::issues::visible_repo;
use super::pulls::{after_push, repo_dir};
use super::render;
use super::state::{Grant, Shared};

/// GitHub wraps the base64 `content` of a file at 60 characters per line.
fn wrapped_base64(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 60 + 1);
    for chunk in encoded.as_bytes().chunks(60) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out
}

/// One entry (`file` or `dir`) in GitHub's contents shape.
fn entry(api: &str, html_base: &str, full: &str, rev: &str, item: &git::TreeEntry) -> Value {
    let kind = if item.kind == "tree" { "dir" } else { "file" };
    let url = format!("{api}/repos/{full}/contents/{}?ref={rev}", item.path);
    let git_url = match kind {
        "dir" => format!("{api}/repos/{full}/git/trees/{}", item.sha),
        _ => format!("{api}/repos/{full}/git/blobs/{}", item.sha),
    };
    let html_url = format!(
        "{html_base}/{}/{rev}/{}",
        if kind == "dir" { "tree" } else { "blob" },
        item.path
    );
    let download_url = (kind == "file").then(|| format!("{api}/{full}/raw/{rev}/{}", item.path));
    json!({
        "type": kind,
        "name": item.path.rsplit('/').next().unwrap_or(&item.path),
        "path": item.path,
        "sha": item.sha,
        "size": item.size,
        "url": url,
        "git_url": git_url,
        "html_url": html_url,
        "download_url": download_url,
        "_links": {"self": url, "git": git_url, "html": html_url},
    })
}

/// `GET /repos/{owner}/{repo}/contents/{path}?ref=`: a file (base64 `content`), a directory
/// (an array of entries), or with `Accept: application/vnd.github.raw` the file's bytes.
pub(crate) async fn get_content(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    path: &str,
    req: &Req,
) -> Result<Reply, ApiError> {
    let (full, default_branch, html_base) = {
        let state = shared.lock();
        let r = visible_repo(&state, grant, owner, repo)?;
        (
            r.full_name(),
            r.default_branch.clone(),
            render::repo_html_url(&shared.cfg, r),
        )
    };
    let rev = req.query.get("ref").cloned().unwrap_or(default_branch);
    let dir = repo_dir(&shared.cfg, owner, repo);
    let server_error = |e: anyhow::Error| {
        tracing::error!(error = %e, "git failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Server Error")
    };
    if !git::rev_exists(&dir, &rev).await.map_err(server_error)? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No commit found for the ref {rev}"),
        ));
    }
    let path = path.trim_matches('/');
    let api = &shared.cfg.api_url;
    let listing = |entries: Vec<git::TreeEntry>| {
        Reply::ok(Value::Array(
            entries
                .iter()
                .map(|e| entry(api, &html_base, &full, &rev, e))
                .collect(),
        ))
    };
    if path.is_empty() {
        let entries = git::list_tree(&dir, &rev, "").await.map_err(server_error)?;
        return Ok(listing(entries));
    }
    let item = git::tree_entry(&dir, &rev, path)
        .await
        .map_err(server_error)?
        .ok_or_else(ApiError::not_found)?;
    if item.kind == "tree" {
        let entries = git::list_tree(&dir, &rev, path)
            .await
            .map_err(server_error)?;
        return Ok(listing(entries));
    }
    let bytes = git::blob(&dir, &item.sha).await.map_err(server_error)?;
    let accept = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("application/vnd.github.raw")
        || accept.contains("application/vnd.github.v3.raw")
    {
        return Ok(Reply::raw(
            bytes,
            "application/vnd.github.raw; charset=utf-8",
        ));
    }
    let mut value = entry(api, &html_base, &full, &rev, &item);
    value["encoding"] = json!("base64");
    value["content"] = json!(wrapped_base64(&bytes));
    Ok(Reply::ok(value))
}

/// `DELETE /repos/{owner}/{repo}/git/refs/{ref}` → **204**. Only branches (`heads/…`) exist
/// in the stand-in. As on GitHub, open pull requests from or onto the branch are closed.
pub(crate) async fn delete_ref(
    shared: &Shared,
    grant: &Grant,
    owner: &str,
    repo: &str,
    reference: &str,
    now: SystemTime,
) -> Result<Reply, ApiError> {
    let default_branch = {
        let state = shared.lock();
        visible_repo(&state, grant, owner, repo)?
            .default_branch
            .clone()
    };
    let missing = || {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "Reference does not exist")
            .with_docs("https://docs.github.com/rest/git/refs#delete-a-reference")
    };
    let branch = reference.strip_prefix("heads/").ok_or_else(missing)?;
    if branch == default_branch {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Cannot delete the default branch",
        )
        .with_docs("https://docs.github.com/rest/git/refs#delete-a-reference"));
    }
    let dir = repo_dir(&shared.cfg, owner, repo);
    let server_error = |e: anyhow::Error| {
        tracing::error!(error = %e, "git failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Server Error")
    };
    if git::branch_sha(&dir, branch)
        .await
        .map_err(server_error)?
        .is_none()
    {
        return Err(missing());
    }
    git::delete_branch(&dir, branch)
        .await
        .map_err(server_error)?;
    after_push(shared, owner, repo, now).await;
    Ok(Reply::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_base64_wrapped_at_60_columns() {
        let text = "x".repeat(100);
        let wrapped = wrapped_base64(text.as_bytes());
        let lines: Vec<&str> = wrapped.lines().collect();
        assert_eq!(lines[0].len(), 60);
        assert!(wrapped.ends_with('\n'));
        let joined: String = lines.concat();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(joined)
            .expect("valid base64");
        assert_eq!(decoded, text.as_bytes());
    }
}
