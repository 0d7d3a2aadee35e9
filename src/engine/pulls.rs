//! Pull requests for `single_pr` runbooks: opened (as a `[WIP] ` draft) once the branch has
//! its first commit, and made final — title without the prefix, ready for review unless the
//! runbook asked for drafts — when every step is completed. Later commits only add the step to
//! the recorded PR: bodies are rewritten once, at the end, to stay far inside GitHub's limits
//! on content-creating requests.

use crate::domain::runbook::title_from_prompt;
use crate::domain::{StepNumber, StepState};
use crate::github::pulls::PullRequest;
use crate::github::{GitHubError, RepoInfo};
use crate::store::{RunbookRecord, StepRecord};

use super::Engine;

const WIP: &str = "[WIP] ";

/// The body of a runbook's PR: its description, the task, the step checklist, the dashboard
/// link and who asked.
pub fn body(runbook: &RunbookRecord, steps: &[StepRecord], dashboard: &str) -> String {
    let mut body = String::new();
    if let Some(description) = runbook
        .description
        .as_deref()
        .filter(|d| !d.trim().is_empty())
    {
        body.push_str(description.trim());
        body.push_str("\n\n");
    }
    body.push_str(&format!(
        "**Task:** {}\n\n",
        title_from_prompt(&runbook.prompt)
    ));
    body.push_str("**Steps**\n\n");
    for step in steps {
        let indent = "  ".repeat(step.number.depth().saturating_sub(1));
        let mark = match (step.is_leaf, step.state) {
            (true, StepState::Completed) => "- [x]",
            (true, _) => "- [ ]",
            (false, _) => "-",
        };
        let note = match (step.is_leaf, step.state) {
            (true, StepState::Failed) => " — failed",
            (true, StepState::InProgress) => " — in progress",
            _ => "",
        };
        body.push_str(&format!(
            "{indent}{mark} {} {}{note}\n",
            step.number,
            step.title.trim()
        ));
    }
    body.push_str(&format!("\nRunbook {}: {dashboard}\n", runbook.number));
    if let Some(email) = &runbook.author_email {
        body.push_str(&format!("Requested by {email}.\n"));
    }
    body
}

impl Engine {
    fn dashboard(&self, number: i64) -> String {
        format!("{}/runbooks/{number}", self.config.public_url)
    }

    /// After a step's commit is pushed to a `single_pr` branch: the PR exists (opened now if
    /// it did not) and carries the step.
    pub(super) async fn pull_after_push(
        &self,
        runbook: &RunbookRecord,
        repo: &RepoInfo,
        branch: &str,
        base: &str,
        step: &StepNumber,
    ) -> Result<(), GitHubError> {
        let number = runbook.number;
        let known = self
            .store
            .pull_request_records(number)
            .await
            .map_err(store_error)?
            .into_iter()
            .find(|pr| pr.head.as_deref() == Some(branch));
        let (pr_number, url) = match known {
            Some(pr) => {
                if pr.finished {
                    // New work (a follow-up) on a finished PR: settled again at the end.
                    self.store
                        .set_pull_request_finished(number, pr.number, false)
                        .await
                        .map_err(store_error)?;
                }
                (pr.number, pr.url)
            }
            None => {
                let steps = self.store.steps(number).await.map_err(store_error)?;
                let title = format!("{WIP}{}", runbook.title);
                let body = body(runbook, &steps, &self.dashboard(number));
                // Found, not opened twice, when a crash came between the push and here.
                let pr = self
                    .github
                    .create_pull(repo, branch, base, &title, &body, true)
                    .await?;
                self.github
                    .add_labels(repo, pr.number, &runbook.labels)
                    .await?;
                self.store
                    .record_pull_request(number, pr.number, &pr.url, &[])
                    .await
                    .map_err(store_error)?;
                self.store
                    .save_pull_request_details(number, pr.number, &pr.node_id, branch)
                    .await
                    .map_err(store_error)?;
                tracing::info!(runbook = number, pr = pr.number, "pull request opened");
                (pr.number, pr.url)
            }
        };
        self.store
            .record_pull_request(number, pr_number, &url, std::slice::from_ref(step))
            .await
            .map_err(store_error)
    }

    /// When a runbook has nothing left to do: a PR whose steps are all completed is made
    /// final; one with failed or waiting steps stays a `[WIP]` draft with its checklist
    /// brought up to date.
    pub(super) async fn settle_pulls(
        &self,
        runbook: &RunbookRecord,
        repo: &RepoInfo,
    ) -> Result<(), GitHubError> {
        let number = runbook.number;
        let records = self
            .store
            .pull_request_records(number)
            .await
            .map_err(store_error)?;
        let steps = self.store.steps(number).await.map_err(store_error)?;
        let all_done = steps
            .iter()
            .filter(|s| s.is_leaf)
            .all(|s| s.state == StepState::Completed);
        for record in records.into_iter().filter(|r| !r.finished) {
            let body = body(runbook, &steps, &self.dashboard(number));
            let title = if all_done {
                runbook.title.clone()
            } else {
                format!("{WIP}{}", runbook.title)
            };
            self.github
                .update_pull(repo, record.number, &title, &body)
                .await?;
            if all_done {
                if !runbook.draft.unwrap_or(false) {
                    let pull = PullRequest {
                        number: record.number,
                        url: record.url.clone(),
                        node_id: record.node_id.clone().unwrap_or_default(),
                        draft: true,
                    };
                    self.github.mark_ready(repo, &pull).await?;
                }
                self.store
                    .set_pull_request_finished(number, record.number, true)
                    .await
                    .map_err(store_error)?;
                tracing::info!(runbook = number, pr = record.number, "pull request final");
            }
        }
        Ok(())
    }
}

fn store_error(e: crate::store::StoreError) -> GitHubError {
    GitHubError::Decode {
        operation: "store",
        message: e.to_string(),
    }
}
