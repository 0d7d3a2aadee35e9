//! Pull requests. `single_pr`: opened (as a `[WIP] ` draft) once the branch has its first
//! commit, made final — title without the prefix, ready for review unless the runbook asked
//! for drafts — when every step is completed. `stacked_pr`: one PR per top-level step with
//! commits, opened when that step completes, on the branch of the nearest earlier one; every
//! body lists the whole stack between HTML comment markers, rewritten once all numbers exist.
//! Bodies are rewritten once, when the runbook settles, to stay far inside GitHub's limits on
//! content-creating requests.

use crate::domain::runbook::title_from_prompt;
use crate::domain::{PrMode, StepNumber, StepState};
use crate::github::pulls::PullRequest;
use crate::github::{GitHubError, RepoInfo};
use crate::store::{RunbookRecord, StepRecord};

use super::Engine;

const WIP: &str = "[WIP] ";

/// Where the stack list sits in a stacked PR's body, so it can be rewritten.
pub const STACK_START: &str = "<!-- runbooks:stack -->";
pub const STACK_END: &str = "<!-- /runbooks:stack -->";

/// The stack list of a stacked PR's body: every PR of the runbook, bottom first, with the
/// current one marked.
pub fn stack(pulls: &[(u64, String)], current: u64) -> String {
    let mut list = format!("{STACK_START}\n**Stack** (merge from the bottom)\n\n");
    for (number, title) in pulls {
        let mark = if *number == current {
            " ← this PR"
        } else {
            ""
        };
        list.push_str(&format!("1. #{number} {title}{mark}\n"));
    }
    list.push_str(STACK_END);
    list.push('\n');
    list
}

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
    /// The dashboard page of a runbook.
    pub(crate) fn dashboard(&self, number: i64) -> String {
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
            None if runbook.pr_mode == Some(PrMode::Manual) => {
                // No PR until someone asks for one.
                return Ok(());
            }
            Some(pr) => {
                if pr.finished {
                    // New work (a follow-up) on a finished PR: back to a `[WIP]` draft while
                    // it runs, settled again at the end.
                    let steps = self.store.steps(number).await.map_err(store_error)?;
                    let title = format!("{WIP}{}", runbook.title);
                    let body = body(runbook, &steps, &self.dashboard(number));
                    self.github
                        .update_pull(repo, pr.number, &title, &body)
                        .await?;
                    if let Some(node_id) = &pr.node_id {
                        self.github.convert_to_draft(repo, node_id).await?;
                    }
                    // A follow-up may have brought labels.
                    self.github
                        .add_labels(repo, pr.number, &runbook.labels)
                        .await?;
                    self.store
                        .set_pull_request_finished(number, pr.number, false)
                        .await
                        .map_err(store_error)?;
                }
                (pr.number, pr.url)
            }
            None => self.open_single_pull(runbook, repo, branch, base).await?,
        };
        self.store
            .record_pull_request(number, pr_number, &url, std::slice::from_ref(step))
            .await
            .map_err(store_error)
    }

    /// Opens a pull request of the runbook as a `[WIP]` draft titled `title`, labels it and
    /// records it with the leaf steps it carries.
    async fn open_draft_pull(
        &self,
        runbook: &RunbookRecord,
        repo: &RepoInfo,
        (branch, base): (&str, &str),
        steps: &[StepRecord],
        title: &str,
        carried: &[StepNumber],
    ) -> Result<PullRequest, GitHubError> {
        let number = runbook.number;
        let body = body(runbook, steps, &self.dashboard(number));
        // Found, not opened twice, when a crash came between the push and here.
        let pr = self
            .github
            .create_pull(repo, branch, base, &format!("{WIP}{title}"), &body, true)
            .await?;
        self.github
            .add_labels(repo, pr.number, &runbook.labels)
            .await?;
        self.store
            .record_pull_request(number, pr.number, &pr.url, carried)
            .await
            .map_err(store_error)?;
        self.store
            .save_pull_request_details(number, pr.number, &pr.node_id, branch)
            .await
            .map_err(store_error)?;
        tracing::info!(
            runbook = number,
            pr = pr.number,
            branch,
            "pull request opened"
        );
        Ok(pr)
    }

    /// Opens the one pull request of a runbook's branch, carrying every step committed so
    /// far; answers its number and URL.
    async fn open_single_pull(
        &self,
        runbook: &RunbookRecord,
        repo: &RepoInfo,
        branch: &str,
        base: &str,
    ) -> Result<(u64, String), GitHubError> {
        let steps = self
            .store
            .steps(runbook.number)
            .await
            .map_err(store_error)?;
        let carried = committed(&steps);
        let pr = self
            .open_draft_pull(
                runbook,
                repo,
                (branch, base),
                &steps,
                &runbook.title,
                &carried,
            )
            .await?;
        Ok((pr.number, pr.url))
    }

    /// At settle, every pull request the runbook should have is open: opening one may have
    /// failed after its last step (GitHub down through every retry), and no later step would
    /// open it. `single_pr`: the branch's PR once it has commits; `stacked_pr`: the PR of
    /// every top-level step whose leaves are completed with commits.
    pub(super) async fn open_missing_pulls(
        &self,
        runbook: &RunbookRecord,
        repo: &RepoInfo,
    ) -> Result<(), GitHubError> {
        let number = runbook.number;
        let mode = runbook.pr_mode.unwrap_or(PrMode::SinglePr);
        if mode == PrMode::Manual {
            return Ok(());
        }
        let records = self
            .store
            .pull_request_records(number)
            .await
            .map_err(store_error)?;
        let has_pull = |branch: &str| records.iter().any(|r| r.head.as_deref() == Some(branch));
        let steps = self.store.steps(number).await.map_err(store_error)?;
        let target = runbook
            .target_branch
            .clone()
            .unwrap_or_else(|| repo.default_branch.clone());
        if mode == PrMode::SinglePr {
            let branch = super::single_branch(number);
            if !has_pull(&branch) && !committed(&steps).is_empty() {
                self.open_single_pull(runbook, repo, &branch, &target)
                    .await?;
            }
            return Ok(());
        }
        let leaves: Vec<&StepRecord> = steps.iter().filter(|s| s.is_leaf).collect();
        let tops_with_commits = super::tops_with_commits(&steps);
        let mut tops: Vec<u32> = leaves.iter().map(|s| s.number.top_level()).collect();
        tops.dedup();
        for top in tops {
            let in_top: Vec<&&StepRecord> = leaves
                .iter()
                .filter(|s| s.number.top_level() == top)
                .collect();
            let done = in_top.iter().all(|s| s.state == StepState::Completed);
            if !done || !tops_with_commits.contains(&top) {
                continue;
            }
            let (branch, base) = super::branches(
                number,
                PrMode::StackedPr,
                &in_top[0].number,
                &target,
                &tops_with_commits,
            );
            if has_pull(&branch) {
                continue;
            }
            let numbers: Vec<StepNumber> = in_top.iter().map(|s| s.number.clone()).collect();
            self.pull_for_top_level(runbook, repo, &branch, &base, top, &numbers)
                .await?;
        }
        Ok(())
    }

    /// Opens the pull request of a `manual` runbook's branch now (or finds the one already
    /// open); answers its number. `None` when the branch has no commits yet.
    pub async fn open_manual_pull(
        &self,
        runbook: &RunbookRecord,
    ) -> Result<Option<u64>, GitHubError> {
        let number = runbook.number;
        let repo = self
            .github
            .installed_repo(&runbook.org, &runbook.repo)
            .await?;
        let steps = self.store.steps(number).await.map_err(store_error)?;
        if committed(&steps).is_empty() {
            return Ok(None);
        }
        let base = runbook
            .target_branch
            .clone()
            .unwrap_or_else(|| repo.default_branch.clone());
        let (pr, _) = self
            .open_single_pull(runbook, &repo, &super::single_branch(number), &base)
            .await?;
        // Made final right away when the runbook has nothing left to do.
        self.settle_pulls(runbook, &repo).await?;
        Ok(Some(pr))
    }

    /// When a top-level step of a `stacked_pr` runbook completed with commits: its PR, from
    /// its branch onto `base` (the previous PR's branch, or the target for the first).
    pub(super) async fn pull_for_top_level(
        &self,
        runbook: &RunbookRecord,
        repo: &RepoInfo,
        branch: &str,
        base: &str,
        top: u32,
        leaves: &[StepNumber],
    ) -> Result<(), GitHubError> {
        let steps = self
            .store
            .steps(runbook.number)
            .await
            .map_err(store_error)?;
        let title = stacked_title(runbook, &steps, top);
        self.open_draft_pull(runbook, repo, (branch, base), &steps, &title, leaves)
            .await
            .map(|_| ())
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
        let stacked = runbook.pr_mode == Some(PrMode::StackedPr);
        let stack_list: Vec<(u64, String)> = records
            .iter()
            .map(|r| {
                let top = steps
                    .iter()
                    .find(|s| s.pr_number == Some(r.number))
                    .map(|s| s.number.top_level())
                    .unwrap_or(0);
                (r.number, stacked_title(runbook, &steps, top))
            })
            .collect();
        for record in records.iter().filter(|r| !r.finished) {
            // A single PR carries the whole runbook; a stacked one its top-level step.
            let done = steps
                .iter()
                .filter(|s| s.is_leaf && (!stacked || s.pr_number == Some(record.number)))
                .all(|s| s.state == StepState::Completed);
            let mut body = body(runbook, &steps, &self.dashboard(number));
            let mut title = runbook.title.clone();
            if stacked {
                body.push('\n');
                body.push_str(&stack(&stack_list, record.number));
                if let Some((_, t)) = stack_list.iter().find(|(n, _)| *n == record.number) {
                    title = t.clone();
                }
            }
            if !done {
                title = format!("{WIP}{title}");
            }
            self.github
                .update_pull(repo, record.number, &title, &body)
                .await?;
            if done {
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

/// A stacked PR's title: the runbook's, and the top-level step it carries.
fn stacked_title(runbook: &RunbookRecord, steps: &[StepRecord], top: u32) -> String {
    match steps
        .iter()
        .find(|s| s.number.depth() == 1 && s.number.top_level() == top)
    {
        Some(step) => format!("{} ({top}. {})", runbook.title, step.title.trim()),
        None => runbook.title.clone(),
    }
}

/// The leaves whose commits are already on the branch (when a PR is opened late, after an
/// earlier attempt failed, it carries them too).
fn committed(steps: &[StepRecord]) -> Vec<StepNumber> {
    steps
        .iter()
        .filter(|s| s.is_leaf && s.commit_sha.is_some())
        .map(|s| s.number.clone())
        .collect()
}

fn store_error(e: crate::store::StoreError) -> GitHubError {
    GitHubError::Decode {
        operation: "store",
        message: e.to_string(),
    }
}

/// The runbook number (and top-level step, for a stacked branch) a branch name belongs to:
/// `runbooks/<n>` or `runbooks/<n>/step-<k>`.
pub fn runbook_branch(branch: &str) -> Option<(i64, Option<u32>)> {
    let rest = branch.strip_prefix("runbooks/")?;
    let (number, step) = match rest.split_once('/') {
        Some((number, step)) => (number, Some(step.strip_prefix("step-")?.parse().ok()?)),
        None => (rest, None),
    };
    Some((number.parse().ok()?, step))
}

/// Acts on a `pull_request` webhook about a runbook's branch: links a PR a person opened from
/// a `manual` runbook's branch, records merges, closes and reopens, and — when a PR of a
/// stack is merged — retargets the next PR onto the merged one's base, so the stack stays
/// mergeable (nothing deletes the old base branch).
pub async fn track_pull_request(
    store: &dyn crate::store::Store,
    github: &crate::github::GitHubApp,
    event: &crate::github::webhook::Event,
) -> Result<(), String> {
    let crate::github::webhook::Event::PullRequest {
        action,
        repository,
        number: pr_number,
        url,
        node_id,
        head: Some(head),
        base,
        merged,
        ..
    } = event
    else {
        return Ok(());
    };
    let Some((number, top)) = runbook_branch(head) else {
        return Ok(());
    };
    let e = |e: crate::store::StoreError| e.to_string();
    let Some(runbook) = store.runbook(number).await.map_err(e)? else {
        return Ok(());
    };
    if !format!("{}/{}", runbook.org, runbook.repo).eq_ignore_ascii_case(repository) {
        return Ok(());
    }
    let records = store.pull_request_records(number).await.map_err(e)?;
    let known = records.iter().position(|r| r.number == *pr_number);
    match action.as_str() {
        "opened" | "reopened" => {
            if known.is_none() && top.is_none() {
                // A person opened the PR of this runbook's branch: it is the runbook's PR.
                let steps = store.steps(number).await.map_err(e)?;
                let committed: Vec<StepNumber> = steps
                    .iter()
                    .filter(|s| s.is_leaf && s.commit_sha.is_some())
                    .map(|s| s.number.clone())
                    .collect();
                store
                    .record_pull_request(number, *pr_number, url, &committed)
                    .await
                    .map_err(e)?;
                store
                    .save_pull_request_details(number, *pr_number, node_id, head)
                    .await
                    .map_err(e)?;
                tracing::info!(runbook = number, pr = pr_number, "pull request linked");
            }
            store
                .set_pull_request_state(number, *pr_number, "open")
                .await
                .map_err(e)?;
        }
        "closed" => {
            let state = if *merged { "merged" } else { "closed" };
            store
                .set_pull_request_state(number, *pr_number, state)
                .await
                .map_err(e)?;
            if *merged
                && let Some(next) = known.and_then(|i| records.get(i + 1))
                && next.state == "open"
            {
                let repo = match github
                    .resolve(&runbook.org, &runbook.repo)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    crate::github::Resolution::Found(repo) => repo,
                    crate::github::Resolution::NotInstalled => return Ok(()),
                };
                github
                    .retarget_pull(&repo, next.number, base)
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(runbook = number, pr = next.number, base = %base, "stacked pull request retargeted");
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_branches() {
        assert_eq!(runbook_branch("runbooks/12"), Some((12, None)));
        assert_eq!(runbook_branch("runbooks/12/step-3"), Some((12, Some(3))));
        for other in [
            "main",
            "runbooks/x",
            "runbooks/1/other",
            "feature/runbooks/1",
            "runbooks/",
        ] {
            assert_eq!(runbook_branch(other), None, "{other}");
        }
    }
}
