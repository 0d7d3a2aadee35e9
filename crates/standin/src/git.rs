//! Real git repositories behind the stand-in: bare repositories on disk, written with the git
//! CLI, and served over smart HTTP by `git http-backend` run as a CGI program.
//!
//! Every git process gets a clean environment (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL` =
//! the null device, inherited `GIT_DIR`-style variables removed), so the machine's or the
//! developer's git configuration cannot change what the stand-in does.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::auth;
use super::http::{Need, Req, plain};
use super::state::Shared;

/// Variables that would point git somewhere else than the repository we name.
const INHERITED_GIT_VARS: [&str; 8] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_COMMON_DIR",
];

/// A git command with a clean configuration environment.
fn git() -> Command {
    let mut cmd = Command::new("git");
    for var in INHERITED_GIT_VARS {
        cmd.env_remove(var);
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", null_device())
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn null_device() -> &'static str {
    if cfg!(windows) { "NUL" } else { "/dev/null" }
}

/// Who commits made by the stand-in's helpers are attributed to.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub name: String,
    pub email: String,
}

/// Runs `git --git-dir <repo> args…` and returns its trimmed stdout, or an error carrying
/// stderr when it exits non-zero.
async fn run(
    repo: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> anyhow::Result<String> {
    let (ok, stdout, stderr) = run_status(repo, args, stdin, env).await?;
    if !ok {
        bail!("git {} failed: {}", args.join(" "), stderr.trim());
    }
    Ok(stdout.trim().to_string())
}

/// Like [`run`] but reports a non-zero exit as `Ok((false, …))`.
async fn run_status(
    repo: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> anyhow::Result<(bool, String, String)> {
    let mut cmd = git();
    cmd.arg("--git-dir").arg(repo).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning git {}", args.join(" ")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input).await.context("writing to git")?;
        drop(pipe);
    }
    let out = child.wait_with_output().await.context("waiting for git")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Creates an empty bare repository whose `HEAD` names `default_branch`.
pub(crate) async fn init_bare(path: &Path, default_branch: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let status = git()
        .arg("init")
        .arg("--quiet")
        .arg("--bare")
        .arg(format!("--initial-branch={default_branch}"))
        .arg(path)
        .status()
        .await
        .context("running git init")?;
    if !status.success() {
        bail!("git init --bare {} failed", path.display());
    }
    Ok(())
}

/// Writes a commit with `files` (path, content) on top of `parent` (or as a root commit)
/// without a working tree: blobs go straight into the object store and the tree is built in a
/// throw-away index. Returns the new commit's sha; no ref is moved.
pub(crate) async fn commit_files(
    repo: &Path,
    parent: Option<&str>,
    files: &[(&str, &str)],
    message: &str,
    who: &Identity,
) -> anyhow::Result<String> {
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let index = scratch.path().join("index");
    let index = index.to_string_lossy().into_owned();
    let env = [("GIT_INDEX_FILE", index.as_str())];
    match parent {
        Some(parent) => run(repo, &["read-tree", parent], None, &env).await?,
        None => run(repo, &["read-tree", "--empty"], None, &env).await?,
    };
    let mut index_info = String::new();
    for (path, content) in files {
        let blob = run(
            repo,
            &["hash-object", "-w", "--stdin"],
            Some(content.as_bytes()),
            &env,
        )
        .await?;
        let mode = if path.ends_with(".sh") {
            "100755"
        } else {
            "100644"
        };
        index_info.push_str(&format!("{mode} {blob}\t{path}\n"));
    }
    run(
        repo,
        &["update-index", "--index-info"],
        Some(index_info.as_bytes()),
        &env,
    )
    .await?;
    let tree = run(repo, &["write-tree"], None, &env).await?;
    let identity = [
        ("GIT_AUTHOR_NAME", who.name.as_str()),
        ("GIT_AUTHOR_EMAIL", who.email.as_str()),
        ("GIT_COMMITTER_NAME", who.name.as_str()),
        ("GIT_COMMITTER_EMAIL", who.email.as_str()),
    ];
    let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
    if let Some(parent) = parent {
        args.extend(["-p", parent]);
    }
    run(repo, &args, None, &identity).await
}

/// Points `refs/heads/<branch>` at `new`; with `old`, only if it still points there.
pub(crate) async fn update_branch(
    repo: &Path,
    branch: &str,
    new: &str,
    old: Option<&str>,
) -> anyhow::Result<()> {
    let name = format!("refs/heads/{branch}");
    let mut args = vec!["update-ref", name.as_str(), new];
    if let Some(old) = old {
        args.push(old);
    }
    run(repo, &args, None, &[]).await.map(|_| ())
}

/// Deletes `refs/heads/<branch>`.
pub(crate) async fn delete_branch(repo: &Path, branch: &str) -> anyhow::Result<()> {
    let name = format!("refs/heads/{branch}");
    run(repo, &["update-ref", "-d", name.as_str()], None, &[])
        .await
        .map(|_| ())
}

/// The sha `refs/heads/<branch>` points at, if the branch exists.
pub(crate) async fn branch_sha(repo: &Path, branch: &str) -> anyhow::Result<Option<String>> {
    let name = format!("refs/heads/{branch}^{{commit}}");
    let (ok, out, _) = run_status(
        repo,
        &["rev-parse", "--verify", "--quiet", &name],
        None,
        &[],
    )
    .await?;
    Ok(ok.then(|| out.trim().to_string()))
}

/// All branches and their shas.
pub(crate) async fn branches(repo: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let out = run(
        repo,
        &[
            "for-each-ref",
            "--format=%(refname:strip=2) %(objectname)",
            "refs/heads/",
        ],
        None,
        &[],
    )
    .await?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, sha)| (name.to_string(), sha.to_string()))
        .collect())
}

/// Number of commits reachable from `head` but not from `base`.
pub(crate) async fn count_commits(repo: &Path, base: &str, head: &str) -> anyhow::Result<u64> {
    let range = format!("{base}..{head}");
    let out = run(repo, &["rev-list", "--count", &range], None, &[]).await?;
    out.parse().context("parsing rev-list --count")
}

/// `(additions, deletions, changed files)` of `head` against its merge base with `base`,
/// as GitHub computes a pull request's diff.
pub(crate) async fn diff_stats(
    repo: &Path,
    base: &str,
    head: &str,
) -> anyhow::Result<(u64, u64, u64)> {
    let range = format!("{base}...{head}");
    let out = run(repo, &["diff", "--numstat", &range], None, &[]).await?;
    let mut totals = (0, 0, 0);
    for line in out.lines() {
        let mut parts = line.split('\t');
        // Binary files show `-`: they count as changed without lines.
        totals.0 += parts
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        totals.1 += parts
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        totals.2 += 1;
    }
    Ok(totals)
}

/// A merge commit of `head` into `base` (both shas), or `None` on conflicts. Uses
/// `git merge-tree --write-tree` (git ≥ 2.38), which works in a bare repository.
pub(crate) async fn merge_commit(
    repo: &Path,
    base: &str,
    head: &str,
    message: &str,
    who: &Identity,
) -> anyhow::Result<Option<String>> {
    let (ok, out, err) =
        run_status(repo, &["merge-tree", "--write-tree", base, head], None, &[]).await?;
    if !ok {
        if out.trim().is_empty() {
            bail!("git merge-tree failed: {}", err.trim());
        }
        return Ok(None);
    }
    let tree = out.lines().next().unwrap_or_default().trim().to_string();
    let identity = [
        ("GIT_AUTHOR_NAME", who.name.as_str()),
        ("GIT_AUTHOR_EMAIL", who.email.as_str()),
        ("GIT_COMMITTER_NAME", who.name.as_str()),
        ("GIT_COMMITTER_EMAIL", who.email.as_str()),
    ];
    let sha = run(
        repo,
        &["commit-tree", &tree, "-p", base, "-p", head, "-m", message],
        None,
        &identity,
    )
    .await?;
    Ok(Some(sha))
}

/// The content of `path` at `rev`, if it exists there.
pub(crate) async fn show_file(
    repo: &Path,
    rev: &str,
    path: &str,
) -> anyhow::Result<Option<String>> {
    let spec = format!("{rev}:{path}");
    let (ok, out, _) = run_status(repo, &["cat-file", "blob", &spec], None, &[]).await?;
    Ok(ok.then_some(out))
}

/// One entry of a tree, as `git ls-tree -l` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    /// `blob`, `tree` or `commit` (a submodule).
    pub kind: String,
    pub sha: String,
    /// Bytes for blobs, 0 otherwise.
    pub size: u64,
    /// Path from the repository root.
    pub path: String,
}

fn parse_ls_tree(out: &[u8]) -> Vec<TreeEntry> {
    out.split(|b| *b == 0)
        .filter(|record| !record.is_empty())
        .filter_map(|record| {
            let record = String::from_utf8_lossy(record);
            let (meta, path) = record.split_once('\t')?;
            let mut fields = meta.split_whitespace();
            let _mode = fields.next()?;
            let kind = fields.next()?.to_string();
            let sha = fields.next()?.to_string();
            let size = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            Some(TreeEntry {
                kind,
                sha,
                size,
                path: path.to_string(),
            })
        })
        .collect()
}

/// Runs git and returns raw stdout, or an error with stderr.
async fn run_bytes(repo: &Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = git()
        .arg("--git-dir")
        .arg(repo)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Whether `rev` names a commit.
pub(crate) async fn rev_exists(repo: &Path, rev: &str) -> anyhow::Result<bool> {
    let spec = format!("{rev}^{{commit}}");
    let (ok, _, _) = run_status(
        repo,
        &["rev-parse", "--verify", "--quiet", &spec],
        None,
        &[],
    )
    .await?;
    Ok(ok)
}

/// The tree entry at `path` in `rev`, if any.
pub(crate) async fn tree_entry(
    repo: &Path,
    rev: &str,
    path: &str,
) -> anyhow::Result<Option<TreeEntry>> {
    let out = run_bytes(repo, &["ls-tree", "-l", "-z", rev, "--", path]).await?;
    Ok(parse_ls_tree(&out).into_iter().find(|e| e.path == path))
}

/// The entries of directory `path` (the root when empty) in `rev`.
pub(crate) async fn list_tree(
    repo: &Path,
    rev: &str,
    path: &str,
) -> anyhow::Result<Vec<TreeEntry>> {
    let out = if path.is_empty() {
        run_bytes(repo, &["ls-tree", "-l", "-z", rev]).await?
    } else {
        let dir = format!("{path}/");
        run_bytes(repo, &["ls-tree", "-l", "-z", rev, "--", &dir]).await?
    };
    Ok(parse_ls_tree(&out))
}

/// The bytes of a blob.
pub(crate) async fn blob(repo: &Path, sha: &str) -> anyhow::Result<Vec<u8>> {
    run_bytes(repo, &["cat-file", "blob", sha]).await
}

/// Commit subjects and bodies from `rev` back to the root, newest first.
pub(crate) async fn log_messages(repo: &Path, rev: &str) -> anyhow::Result<Vec<String>> {
    let out = run(repo, &["log", "--format=%B%x00", rev], None, &[]).await?;
    Ok(out
        .split('\0')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect())
}

/// Splits `owner/repo.git/rest` (the path after `/git/`). GitHub serves the same repository
/// with or without the `.git` suffix.
pub(crate) fn parse_path(path: &str) -> Option<(String, String, String)> {
    let (owner, rest) = path.split_once('/')?;
    let (repo, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    if owner.is_empty() || repo.is_empty() || owner.contains("..") || repo.contains("..") {
        return None;
    }
    Some((owner.to_string(), repo.to_string(), rest.to_string()))
}

pub(crate) fn operation(rest: &str) -> &'static str {
    match rest {
        "info/refs" => "git/info-refs",
        "git-upload-pack" => "git/upload-pack",
        "git-receive-pack" => "git/receive-pack",
        _ => "git/other",
    }
}

/// 401 with `WWW-Authenticate: Basic`, GitHub's answer to git without valid credentials.
/// git and libgit2 only send credentials after this challenge.
fn challenge() -> Response {
    let mut response = plain(
        StatusCode::UNAUTHORIZED,
        "Invalid username or token. Password authentication is not supported for Git operations.\n",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"GitHub\""),
    );
    response
}

/// Serves one smart-HTTP request: checks the installation token (HTTP Basic, any user name,
/// the token as password), that it can see the repository (else GitHub's 404) and holds what
/// the request needs (`contents: read` to fetch, `contents: write` to push; else GitHub's 403,
/// which git shows as `remote: Permission to … denied to …`), then hands the request to
/// `git http-backend`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    owner: &str,
    repo: &str,
    rest: &str,
    need: Need,
    req: &Req,
    now: SystemTime,
    installation: &mut Option<u64>,
) -> Response {
    let Some(password) = auth::basic_password(&req.headers) else {
        return challenge();
    };
    let (grant, full_name) = {
        let state = shared.lock();
        match auth::grant_for(&state, &password, now) {
            Some(grant) => {
                let full_name = state
                    .repo(owner, repo)
                    .filter(|_| state.grant_sees(&grant, owner, repo))
                    .map(|r| r.full_name());
                (grant, full_name)
            }
            None => return challenge(),
        }
    };
    *installation = Some(grant.installation);
    let Some(full_name) = full_name else {
        return plain(StatusCode::NOT_FOUND, "Repository not found.\n");
    };
    if let Need::Permission(permission, access) = need
        && !grant.allows(permission, access)
    {
        let bot = shared.cfg.bot_login();
        return plain(
            StatusCode::FORBIDDEN,
            &format!("Permission to {full_name}.git denied to {bot}.\n"),
        );
    }
    let pushing = rest == "git-receive-pack"
        || req.query.get("service").map(String::as_str) == Some("git-receive-pack");
    let response = match http_backend(&shared.cfg.root, owner, repo, rest, req).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "git http-backend failed");
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "git http-backend failed\n",
            );
        }
    };
    if pushing && rest == "git-receive-pack" && response.status().is_success() {
        super::pulls::after_push(shared, owner, repo, now).await;
    }
    response
}

/// Runs `git http-backend` as a CGI program on a fully collected request body (libgit2 sends
/// push bodies chunked; CGI needs `CONTENT_LENGTH`). A gzip-encoded body (the git CLI gzips
/// large upload-pack requests) is passed through with `HTTP_CONTENT_ENCODING`, which
/// `http-backend` inflates itself.
async fn http_backend(
    root: &Path,
    owner: &str,
    repo: &str,
    rest: &str,
    req: &Req,
) -> anyhow::Result<Response> {
    let path_info = format!(
        "/{}/{}.git/{rest}",
        owner.to_lowercase(),
        repo.to_lowercase()
    );
    let header = |name: &str| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut cmd = git();
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", req.method.as_str())
        .env("PATH_INFO", &path_info)
        .env("QUERY_STRING", req.raw_query.clone().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(encoding) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", &protocol)
            .env("HTTP_GIT_PROTOCOL", protocol);
    }
    let mut child = cmd.spawn().context("spawning git http-backend")?;
    let stdin = child.stdin.take();
    let body = req.body.clone();
    // Write the body concurrently with reading the output: a large push and a large answer
    // would otherwise block each other on full pipes.
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            // http-backend may stop reading early (e.g. on an error); that is not ours to report.
            let _ = stdin.write_all(&body).await;
        }
    });
    let output = child
        .wait_with_output()
        .await
        .context("waiting for git http-backend")?;
    let _ = writer.await;
    if !output.stderr.is_empty() {
        tracing::debug!(stderr = %String::from_utf8_lossy(&output.stderr), "git http-backend");
    }
    parse_cgi(&output.stdout)
}

/// Splits a CGI answer into headers (with `Status:` as the status code) and body.
fn parse_cgi(out: &[u8]) -> anyhow::Result<Response> {
    let (head_end, body_start) = find_header_end(out).context("CGI answer without headers")?;
    let head = std::str::from_utf8(&out[..head_end]).context("CGI headers are not UTF-8")?;
    let mut status = StatusCode::OK;
    let mut builder = Response::builder();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            builder = builder.header(name, value);
        }
    }
    let body = out[body_start..].to_vec();
    builder
        .status(status)
        .body(Body::from(body))
        .context("building the CGI response")
}

/// Where the CGI header block ends (`\r\n\r\n` or `\n\n`): `(end of headers, body start)`.
fn find_header_end(out: &[u8]) -> Option<(usize, usize)> {
    for i in 0..out.len() {
        if out[i..].starts_with(b"\r\n\r\n") {
            return Some((i, i + 4));
        }
        if out[i..].starts_with(b"\n\n") {
            return Some((i, i + 2));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_git_paths_with_and_without_suffix() {
        assert_eq!(
            parse_path("acme/widgets.git/info/refs"),
            Some(("acme".into(), "widgets".into(), "info/refs".into()))
        );
        assert_eq!(
            parse_path("acme/widgets/git-upload-pack"),
            Some(("acme".into(), "widgets".into(), "git-upload-pack".into()))
        );
        assert_eq!(parse_path("acme/../etc/info/refs"), None);
        assert_eq!(parse_path("acme"), None);
    }

    #[test]
    fn parses_cgi_status_and_headers() {
        let out = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope";
        let response = parse_cgi(out).expect("valid CGI");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["content-type"], "text/plain");
        let out = b"Content-Type: application/x-git-upload-pack-advertisement\n\n001e# service";
        let response = parse_cgi(out).expect("valid CGI");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
