//! Pull requests: find, open, update, label, and mark ready for review.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{As, GitHubApp, GitHubError, Operation, RepoInfo};

/// A pull request as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    /// The page on GitHub (`html_url`).
    pub url: String,
    /// GraphQL id, for `markPullRequestReadyForReview`.
    pub node_id: String,
    pub draft: bool,
}

fn parse(operation: &'static str, value: &Value) -> Result<PullRequest, GitHubError> {
    let text = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| GitHubError::Decode {
                operation,
                message: format!("a pull request without `{field}`"),
            })
    };
    Ok(PullRequest {
        number: value
            .get("number")
            .and_then(Value::as_u64)
            .ok_or_else(|| GitHubError::Decode {
                operation,
                message: "a pull request without `number`".into(),
            })?,
        url: text("html_url")?,
        node_id: text("node_id")?,
        draft: value.get("draft").and_then(Value::as_bool).unwrap_or(false),
    })
}

impl GitHubApp {
    /// The open pull request from `head` (a branch of the repository itself), if any.
    pub async fn open_pull_for(
        &self,
        repo: &RepoInfo,
        head: &str,
    ) -> Result<Option<PullRequest>, GitHubError> {
        const OPERATION: Operation = Operation::PullsList;
        let owner = repo.full_name.owner();
        // `head` must be `owner:branch`, or GitHub ignores the filter and lists every PR.
        let path = format!(
            "/repos/{}/pulls?state=open&head={owner}:{}",
            repo.full_name,
            encode(head)
        );
        let pulls: Vec<Value> = self
            .repo_json(repo, OPERATION, Method::GET, &path, None)
            .await?;
        pulls.first().map(|p| parse(OPERATION.id(), p)).transpose()
    }

    /// Opens a pull request; when one is already open for the branch (a retry after a crash),
    /// that one is answered instead of a second.
    pub async fn create_pull(
        &self,
        repo: &RepoInfo,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
        draft: bool,
    ) -> Result<PullRequest, GitHubError> {
        const OPERATION: Operation = Operation::PullsCreate;
        if let Some(existing) = self.open_pull_for(repo, head).await? {
            return Ok(existing);
        }
        let path = format!("/repos/{}/pulls", repo.full_name);
        let request =
            json!({"title": title, "head": head, "base": base, "body": body, "draft": draft});
        let answer = self
            .client
            .call(
                OPERATION,
                As::repo(repo),
                Method::POST,
                &path,
                Some(&request),
            )
            .await?;
        if answer.status == StatusCode::UNPROCESSABLE_ENTITY
            && let Some(existing) = self.open_pull_for(repo, head).await?
        {
            return Ok(existing);
        }
        if answer.status != StatusCode::CREATED {
            return Err(GitHubError::Status {
                operation: OPERATION.id(),
                status: answer.status.as_u16(),
                message: answer.message(),
            });
        }
        parse(OPERATION.id(), &answer.json::<Value>(OPERATION.id())?)
    }

    /// Sets a pull request's title and body.
    pub async fn update_pull(
        &self,
        repo: &RepoInfo,
        number: u64,
        title: &str,
        body: &str,
    ) -> Result<(), GitHubError> {
        self.patch_pull(repo, number, json!({"title": title, "body": body}))
            .await
    }

    /// `PATCH /repos/{o}/{r}/pulls/{n}` with the given fields.
    async fn patch_pull(
        &self,
        repo: &RepoInfo,
        number: u64,
        fields: Value,
    ) -> Result<(), GitHubError> {
        let path = format!("/repos/{}/pulls/{number}", repo.full_name);
        let _: Value = self
            .repo_json(
                repo,
                Operation::PullsUpdate,
                Method::PATCH,
                &path,
                Some(&fields),
            )
            .await?;
        Ok(())
    }

    /// Points a pull request at another base branch (GitHub closes PRs whose base branch is
    /// deleted, for good: retarget first).
    pub async fn retarget_pull(
        &self,
        repo: &RepoInfo,
        number: u64,
        base: &str,
    ) -> Result<(), GitHubError> {
        self.patch_pull(repo, number, json!({"base": base})).await
    }

    /// A text file of the repository at `reference`, or `None` when there is none.
    pub async fn file(
        &self,
        repo: &RepoInfo,
        path: &str,
        reference: &str,
    ) -> Result<Option<String>, GitHubError> {
        const OPERATION: Operation = Operation::ReposGetContent;
        let uri = format!(
            "/repos/{}/contents/{path}?ref={}",
            repo.full_name,
            encode(reference)
        );
        let answer = self
            .client
            .call(OPERATION, As::repo(repo), Method::GET, &uri, None)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(GitHubError::Status {
                operation: OPERATION.id(),
                status: answer.status.as_u16(),
                message: answer.message(),
            });
        }
        let value: Value = answer.json(OPERATION.id())?;
        let encoded: String = value
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| GitHubError::Decode {
                operation: OPERATION.id(),
                message: format!("{path}: {e}"),
            })?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| GitHubError::Decode {
                operation: OPERATION.id(),
                message: format!("{path} is not text"),
            })
    }

    /// Adds labels to a pull request (GitHub creates labels that do not exist yet).
    pub async fn add_labels(
        &self,
        repo: &RepoInfo,
        number: u64,
        labels: &[String],
    ) -> Result<(), GitHubError> {
        if labels.is_empty() {
            return Ok(());
        }
        let path = format!("/repos/{}/issues/{number}/labels", repo.full_name);
        let _: Value = self
            .repo_json(
                repo,
                Operation::IssuesAddLabels,
                Method::POST,
                &path,
                Some(&json!({"labels": labels})),
            )
            .await?;
        Ok(())
    }

    /// Turns a pull request back into a draft (GraphQL only, like the opposite).
    pub async fn convert_to_draft(
        &self,
        repo: &RepoInfo,
        node_id: &str,
    ) -> Result<(), GitHubError> {
        self.client
            .graphql(
                Operation::GraphqlConvertPullRequestToDraft,
                As::repo(repo),
                "mutation($id: ID!) { convertPullRequestToDraft(input: {pullRequestId: $id}) \
                 { pullRequest { number isDraft } } }",
                json!({"id": node_id}),
            )
            .await?;
        Ok(())
    }

    /// Marks a draft ready for review: only GitHub's GraphQL API can.
    pub async fn mark_ready(&self, repo: &RepoInfo, pull: &PullRequest) -> Result<(), GitHubError> {
        self.client
            .graphql(
                Operation::GraphqlMarkPullRequestReadyForReview,
                As::repo(repo),
                "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) \
                 { pullRequest { number isDraft } } }",
                json!({"id": pull.node_id}),
            )
            .await?;
        Ok(())
    }
}

/// Percent-encodes what a branch name may hold that a query string may not.
pub(super) fn encode(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '.' | '/' | '~' => c.to_string(),
            other => {
                let mut buf = [0u8; 4];
                other
                    .encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}
