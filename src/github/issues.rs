//! Issue threads: comments, reactions, and who may act on a repository.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{As, GitHubApp, GitHubError, Operation, RepoInfo};

/// How long a user's permission on a repository is trusted without asking GitHub again.
const PERMISSION_TTL: Duration = Duration::from_secs(60);

/// A user's role on a repository, as far as runbooks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `write`, `maintain` or `admin`: may start and steer runbooks.
    Write,
    /// `triage`, `read`, or no access at all.
    ReadOnly,
}

/// A comment the app wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub url: String,
}

impl GitHubApp {
    /// The user's permission on the repository (cached for a minute).
    pub async fn permission(
        &self,
        repo: &RepoInfo,
        login: &str,
    ) -> Result<Permission, GitHubError> {
        const OPERATION: Operation = Operation::ReposGetCollaboratorPermissionLevel;
        let key = (repo.full_name.as_str().to_lowercase(), login.to_lowercase());
        if let Some((permission, at)) = self.permissions.lock().expect("permission cache").get(&key)
            && at.elapsed() < PERMISSION_TTL
        {
            return Ok(*permission);
        }
        let path = format!(
            "/repos/{}/collaborators/{}/permission",
            repo.full_name,
            super::pulls::encode(login)
        );
        let answer = self
            .client
            .call(OPERATION, As::repo(repo), Method::GET, &path, None)
            .await?;
        let permission = if answer.status == StatusCode::NOT_FOUND {
            // Not a collaborator (GitHub answers 404 for users it does not know as one).
            Permission::ReadOnly
        } else if !answer.status.is_success() {
            return Err(GitHubError::Status {
                operation: OPERATION.id(),
                status: answer.status.as_u16(),
                message: answer.message(),
            });
        } else {
            let value: Value = answer.json(OPERATION.id())?;
            // `permission` says `write` for the maintain role; `role_name` names it exactly.
            let granted = |field: &str| {
                value
                    .get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|p| matches!(p, "admin" | "maintain" | "write"))
            };
            if granted("permission") || granted("role_name") {
                Permission::Write
            } else {
                Permission::ReadOnly
            }
        };
        self.permissions
            .lock()
            .expect("permission cache")
            .insert(key, (permission, Instant::now()));
        Ok(permission)
    }

    /// Adds a reaction (`eyes`, `+1`, `confused`, …) to an issue comment.
    pub async fn react(
        &self,
        repo: &RepoInfo,
        comment_id: u64,
        content: &str,
    ) -> Result<(), GitHubError> {
        let path = format!(
            "/repos/{}/issues/comments/{comment_id}/reactions",
            repo.full_name
        );
        let _: Value = self
            .repo_json(
                repo,
                Operation::ReactionsCreateForIssueComment,
                Method::POST,
                &path,
                Some(&json!({"content": content})),
            )
            .await?;
        Ok(())
    }

    /// Writes a comment on an issue or pull request.
    pub async fn comment(
        &self,
        repo: &RepoInfo,
        issue: u64,
        body: &str,
    ) -> Result<Comment, GitHubError> {
        const OPERATION: Operation = Operation::IssuesCreateComment;
        let path = format!("/repos/{}/issues/{issue}/comments", repo.full_name);
        let value: Value = self
            .repo_json(
                repo,
                OPERATION,
                Method::POST,
                &path,
                Some(&json!({"body": body})),
            )
            .await?;
        parse_comment(OPERATION.id(), &value)
    }

    /// The comments of an issue or pull request, oldest first, with their bodies and their
    /// authors' logins.
    pub async fn comments(
        &self,
        repo: &RepoInfo,
        issue: u64,
    ) -> Result<Vec<(Comment, String, String)>, GitHubError> {
        const OPERATION: Operation = Operation::IssuesListComments;
        const PER_PAGE: usize = 100;
        let mut all = Vec::new();
        for page in 1.. {
            let path = format!(
                "/repos/{}/issues/{issue}/comments?per_page={PER_PAGE}&page={page}",
                repo.full_name
            );
            let values: Vec<Value> = self
                .repo_json(repo, OPERATION, Method::GET, &path, None)
                .await?;
            let last = values.len() < PER_PAGE;
            for value in &values {
                let body = value
                    .get("body")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let author = value
                    .pointer("/user/login")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                all.push((parse_comment(OPERATION.id(), value)?, body, author));
            }
            if last {
                break;
            }
        }
        Ok(all)
    }

    /// Replaces the body of a comment the app wrote.
    pub async fn edit_comment(
        &self,
        repo: &RepoInfo,
        comment_id: u64,
        body: &str,
    ) -> Result<(), GitHubError> {
        let path = format!("/repos/{}/issues/comments/{comment_id}", repo.full_name);
        let _: Value = self
            .repo_json(
                repo,
                Operation::IssuesUpdateComment,
                Method::PATCH,
                &path,
                Some(&json!({"body": body})),
            )
            .await?;
        Ok(())
    }
}

fn parse_comment(operation: &'static str, value: &Value) -> Result<Comment, GitHubError> {
    let decode = |message: &str| GitHubError::Decode {
        operation,
        message: message.into(),
    };
    Ok(Comment {
        id: value
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| decode("a comment without `id`"))?,
        url: value
            .get("html_url")
            .and_then(Value::as_str)
            .ok_or_else(|| decode("a comment without `html_url`"))?
            .to_string(),
    })
}
