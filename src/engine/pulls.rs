//! Pull requests, reconciled: what a runbook's PRs should be is a function of its steps
//! ([`wanted`]), and [`Engine::reconcile_pulls`] makes GitHub match it — opening what is
//! missing, recording which steps each carries, retargeting, and making PRs final. It is
//! idempotent, so it can be run again after any crash or failure (the runbook's debt to
//! GitHub, `Store::owe`, says it must be), and a step recovered after a crash is recorded
//! exactly like one that just ran.
//!
//! `single_pr`: one PR, opened (as a `[WIP] ` draft) once the branch has its first commit,
//! carrying the leaves with commits; made final — title without the prefix, ready for review
//! unless the runbook asked for drafts — when the runbook has nothing left to do and every
//! leaf is completed. `manual`: the same PR, opened only once asked for (or linked when a
//! person opens it). `stacked_pr`: one PR per top-level step with commits, opened when that
//! step completes, on the branch of the nearest earlier one; every body lists the whole
//! stack in the order of the top-level steps (whatever order the PRs were opened in) between
//! HTML comment markers, rewritten once all numbers exist; when a lower PR is merged, the
//! next is retargeted onto the merged one's base. Bodies are rewritten when the runbook has
//! nothing left to do, to stay far inside GitHub's limits on content-creating requests.

use crate::domain::runbook::title_from_prompt;
use crate::domain::{PrMode, PullState, RunbookNumber, StepNumber, StepState};
use crate::github::RepoInfo;
use crate::github::pulls::PullRequest;
use crate::store::{RunbookRecord, StepRecord, StoreError};

use super::{Engine, EngineError};

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

/// A pull request the runbook should have, as its steps say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub branch: String,
    /// Where it goes: the target, or the branch of the stack's PR below it.
    pub base: String,
    /// Its place among the runbook's PRs: the top-level step it carries (stacks), else 1.
    pub position: i64,
    /// Its title, without the `[WIP] ` prefix.
    pub title: String,
    /// The leaves it carries.
    pub leaves: Vec<StepNumber>,
    /// Every leaf it stands for is completed: it can be made final.
    pub done: bool,
    /// It is to be opened when it does not exist yet.
    pub open: bool,
}

/// The pull requests a runbook should have, in order (a stack bottom first), from its steps:
/// see the module header for the rules of each mode. `merged` answers whether the PR of a
/// branch was merged: a PR above a merged one goes into the merged one's base.
pub fn wanted(
    runbook: &RunbookRecord,
    steps: &[StepRecord],
    target: &str,
    merged: impl Fn(&str) -> bool,
) -> Vec<Wanted> {
    let number = runbook.number;
    let mode = runbook.pr_mode.unwrap_or(PrMode::SinglePr);
    let leaves: Vec<&StepRecord> = steps.iter().filter(|s| s.is_leaf).collect();
    if mode != PrMode::StackedPr {
        let carried = committed(steps);
        return vec![Wanted {
            branch: super::single_branch(number),
            base: target.to_string(),
            position: 1,
            title: runbook.title.clone(),
            done: leaves.iter().all(|s| s.state == StepState::Completed),
            open: !carried.is_empty()
                && (mode == PrMode::SinglePr || runbook.pull_request_requested),
            leaves: carried,
        }];
    }
    let with_commits = super::tops_with_commits(steps);
    let mut tops: Vec<u32> = leaves.iter().map(|s| s.number.top_level()).collect();
    tops.dedup();
    let mut wanted: Vec<Wanted> = Vec::new();
    for top in tops.into_iter().filter(|top| with_commits.contains(top)) {
        let in_top: Vec<StepNumber> = leaves
            .iter()
            .filter(|s| s.number.top_level() == top)
            .map(|s| s.number.clone())
            .collect();
        let done = leaves
            .iter()
            .filter(|s| s.number.top_level() == top)
            .all(|s| s.state == StepState::Completed);
        let branch = format!("runbooks/{number}/step-{top}");
        // Onto the PR below; when that one was merged, onto what it went into.
        let base = match wanted.last() {
            Some(below) if merged(&below.branch) => below.base.clone(),
            Some(below) => below.branch.clone(),
            None => target.to_string(),
        };
        wanted.push(Wanted {
            branch,
            base,
            position: i64::from(top),
            title: stacked_title(runbook, steps, top),
            leaves: in_top,
            done,
            open: done,
        });
    }
    wanted
}

impl Engine {
    /// The dashboard page of a runbook.
    pub(crate) fn dashboard(&self, number: RunbookNumber) -> String {
        format!("{}/runbooks/{number}", self.config.public_url)
    }

    /// Makes the runbook's pull requests on GitHub what its steps say they should be
    /// ([`wanted`]): opens the missing ones (as `[WIP]` drafts, labelled), records the leaves
    /// each carries, retargets those whose base changed, turns a final PR that has new work
    /// (a follow-up) back into a draft, and — when `idle`, the runbook having nothing left to
    /// do — rewrites every unfinished PR's title and body and makes those whose steps are
    /// all completed final. Safe to run again at any point: every step of it is either
    /// idempotent on GitHub or guarded by what the store recorded.
    ///
    /// `ending`: a step that has just completed but is not recorded yet, taken as completed
    /// with its commit — so that when its completion is recorded, its PR (and its place on
    /// it) is already there, and no reader sees one without the other.
    pub(super) async fn reconcile_pulls(
        &self,
        runbook: &RunbookRecord,
        repo: &RepoInfo,
        idle: bool,
        ending: Option<(&StepNumber, Option<&str>)>,
    ) -> Result<(), EngineError> {
        let number = runbook.number;
        let mut steps = self.store.steps(number).await?;
        if let Some((ending, commit)) = ending
            && let Some(step) = steps.iter_mut().find(|s| &s.number == ending)
        {
            step.state = StepState::Completed;
            step.commit_sha = commit.map(String::from);
        }
        let records = self.store.pull_request_records(number).await?;
        let target = runbook
            .target_branch
            .clone()
            .unwrap_or_else(|| repo.default_branch.clone());
        let merged = |branch: &str| {
            records
                .iter()
                .any(|r| r.head.as_deref() == Some(branch) && r.state == PullState::Merged)
        };
        let wanted = wanted(runbook, &steps, &target, merged);
        // Final PRs that new work (a follow-up's commits) has just landed on.
        let mut back_at_work = Vec::new();
        for w in &wanted {
            match records
                .iter()
                .find(|r| r.head.as_deref() == Some(&w.branch))
            {
                None if w.open => self.open_draft_pull(runbook, repo, &steps, w).await?,
                None => {}
                Some(record) => {
                    let carried: Vec<StepNumber> = w
                        .leaves
                        .iter()
                        .filter(|leaf| {
                            steps
                                .iter()
                                .any(|s| &s.number == *leaf && s.pr_number != Some(record.number))
                        })
                        .cloned()
                        .collect();
                    if !carried.is_empty() {
                        if record.finished {
                            back_at_work.push(record.number);
                        }
                        self.store
                            .record_pull_request_at(
                                number,
                                record.number,
                                &record.url,
                                &carried,
                                None,
                            )
                            .await?;
                    }
                    if record.state == PullState::Open
                        && record.base.as_deref() != Some(w.base.as_str())
                    {
                        if record.base.is_some() || wanted.iter().any(|o| merged(&o.branch)) {
                            self.github
                                .retarget_pull(repo, record.number, &w.base)
                                .await?;
                            tracing::info!(runbook = number.get(), pr = record.number, base = %w.base, "pull request retargeted");
                        }
                        self.store
                            .set_pull_request_base(number, record.number, &w.base)
                            .await?;
                    }
                }
            }
        }
        self.bring_up_to_date(runbook, repo, &wanted, &back_at_work, idle)
            .await
    }

    /// Titles, bodies and drafts of the runbook's open PRs (see [`Engine::reconcile_pulls`]).
    async fn bring_up_to_date(
        &self,
        runbook: &RunbookRecord,
        repo: &RepoInfo,
        wanted: &[Wanted],
        back_at_work: &[u64],
        idle: bool,
    ) -> Result<(), EngineError> {
        let number = runbook.number;
        let steps = self.store.steps(number).await?;
        let records = self.store.pull_request_records(number).await?;
        let stacked = runbook.pr_mode == Some(PrMode::StackedPr);
        // The stack, bottom first: the wanted order, whatever order the PRs were opened in.
        let stack_list: Vec<(u64, String)> = wanted
            .iter()
            .filter_map(|w| {
                let record = records
                    .iter()
                    .find(|r| r.head.as_deref() == Some(&w.branch))?;
                Some((record.number, w.title.clone()))
            })
            .collect();
        for w in wanted {
            let Some(record) = records
                .iter()
                .find(|r| r.head.as_deref() == Some(&w.branch))
            else {
                continue;
            };
            if record.state != PullState::Open {
                // Merged or closed by a person: no longer the engine's to change.
                continue;
            }
            let reopened = record.finished && (!w.done || back_at_work.contains(&record.number));
            if !idle && !reopened {
                continue;
            }
            if idle && record.finished && !reopened {
                continue;
            }
            let mut body = body(runbook, &steps, &self.dashboard(number));
            if stacked {
                body.push('\n');
                body.push_str(&stack(&stack_list, record.number));
            }
            let final_now = idle && w.done;
            let title = if final_now {
                w.title.clone()
            } else {
                format!("{WIP}{}", w.title)
            };
            self.github
                .update_pull(repo, record.number, &title, &body)
                .await?;
            if reopened {
                // New work (a follow-up) on a final PR: a `[WIP]` draft again while it runs,
                // with the labels the follow-up may have brought.
                if let Some(node_id) = &record.node_id {
                    self.github.convert_to_draft(repo, node_id).await?;
                }
                self.github
                    .add_labels(repo, record.number, &runbook.labels)
                    .await?;
                self.store
                    .set_pull_request_finished(number, record.number, false)
                    .await?;
                tracing::info!(
                    runbook = number.get(),
                    pr = record.number,
                    "pull request back at work"
                );
            }
            if final_now {
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
                    .await?;
                tracing::info!(
                    runbook = number.get(),
                    pr = record.number,
                    "pull request final"
                );
            }
        }
        Ok(())
    }

    /// Opens a wanted pull request as a `[WIP]` draft, labels it and records it with the
    /// leaves it carries, at its place among the runbook's PRs. A PR already open for the
    /// branch (opened before a crash) is found, not opened twice.
    async fn open_draft_pull(
        &self,
        runbook: &RunbookRecord,
        repo: &RepoInfo,
        steps: &[StepRecord],
        w: &Wanted,
    ) -> Result<(), EngineError> {
        let number = runbook.number;
        let body = body(runbook, steps, &self.dashboard(number));
        let pr = self
            .github
            .create_pull(
                repo,
                &w.branch,
                &w.base,
                &format!("{WIP}{}", w.title),
                &body,
                true,
            )
            .await?;
        self.github
            .add_labels(repo, pr.number, &runbook.labels)
            .await?;
        self.store
            .record_pull_request_at(number, pr.number, &pr.url, &w.leaves, Some(w.position))
            .await?;
        self.store
            .save_pull_request_details(number, pr.number, &pr.node_id, &w.branch)
            .await?;
        self.store
            .set_pull_request_base(number, pr.number, &w.base)
            .await?;
        tracing::info!(
            runbook = number.get(),
            pr = pr.number,
            branch = %w.branch,
            "pull request opened"
        );
        Ok(())
    }

    /// Opens the pull request of a `manual` runbook's branch now (or finds the one already
    /// open): the request is recorded first, so it is kept after a crash. Answers its
    /// number; `None` when the branch has no commits yet.
    pub async fn open_manual_pull(
        &self,
        runbook: &RunbookRecord,
    ) -> Result<Option<u64>, EngineError> {
        let number = runbook.number;
        self.store.request_pull_request(number).await?;
        self.store.owe(number).await?;
        let Some(runbook) = self.store.runbook(number).await? else {
            return Ok(None);
        };
        let repo = self
            .github
            .installed_repo(&runbook.org, &runbook.repo)
            .await?;
        let steps = self.store.steps(number).await?;
        let idle = !steps
            .iter()
            .any(|s| matches!(s.state, StepState::Queued | StepState::InProgress));
        let reconciled = self.reconcile_pulls(&runbook, &repo, idle, None).await;
        self.announce(number, super::Progress::PullRequests);
        reconciled?;
        let branch = super::single_branch(number);
        Ok(self
            .store
            .pull_request_records(number)
            .await?
            .into_iter()
            .find(|r| r.head.as_deref() == Some(branch.as_str()))
            .map(|r| r.number))
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

/// The runbook number (and top-level step, for a stacked branch) a branch name belongs to:
/// `runbooks/<n>` or `runbooks/<n>/step-<k>`.
pub fn runbook_branch(branch: &str) -> Option<(RunbookNumber, Option<u32>)> {
    let rest = branch.strip_prefix("runbooks/")?;
    let (number, step) = match rest.split_once('/') {
        Some((number, step)) => (number, Some(step.strip_prefix("step-")?.parse().ok()?)),
        None => (rest, None),
    };
    let number = RunbookNumber::try_from(number.parse::<i64>().ok()?).ok()?;
    Some((number, step))
}

/// Acts on a `pull_request` webhook about a runbook's branch: links a PR a person opened from
/// a `manual` runbook's branch, and records merges, closes and reopens. A merge makes the
/// runbook owe GitHub a reconciliation: the next PR of a stack is retargeted onto the merged
/// one's base ([`wanted`]), so the stack stays mergeable (nothing deletes the old base
/// branch) — durably, by whichever worker takes the runbook. Answers whether the runbook
/// owes GitHub now (the engine is to be woken).
pub async fn track_pull_request(
    engine: &Engine,
    event: &crate::github::webhook::Event,
) -> Result<bool, StoreError> {
    let store = engine.store.as_ref();
    let crate::github::webhook::Event::PullRequest {
        action,
        repository,
        number: pr_number,
        url,
        node_id,
        head: Some(head),
        merged,
        ..
    } = event
    else {
        return Ok(false);
    };
    let Some((number, top)) = runbook_branch(head) else {
        return Ok(false);
    };
    let Some(runbook) = store.runbook(number).await? else {
        return Ok(false);
    };
    if !repository.is(&runbook.org, &runbook.repo) {
        return Ok(false);
    }
    let records = store.pull_request_records(number).await?;
    let known = records.iter().position(|r| r.number == *pr_number);
    match action.as_str() {
        "opened" | "reopened" => {
            if known.is_none() && top.is_none() {
                // A person opened the PR of this runbook's branch: it is the runbook's PR.
                let steps = store.steps(number).await?;
                let committed: Vec<StepNumber> = steps
                    .iter()
                    .filter(|s| s.is_leaf && s.commit_sha.is_some())
                    .map(|s| s.number.clone())
                    .collect();
                store
                    .record_pull_request(number, *pr_number, url, &committed)
                    .await?;
                store
                    .save_pull_request_details(number, *pr_number, node_id, head)
                    .await?;
                tracing::info!(
                    runbook = number.get(),
                    pr = pr_number,
                    "pull request linked"
                );
            }
            store
                .set_pull_request_state(number, *pr_number, PullState::Open)
                .await?;
            engine.announce(number, super::Progress::PullRequests);
        }
        "closed" => {
            let state = if *merged {
                PullState::Merged
            } else {
                PullState::Closed
            };
            if *merged && known.is_some() {
                // Owed before it is recorded: a crash in between leaves a reconciliation
                // that finds nothing to do, never a merge nobody acts on.
                store.owe(number).await?;
            }
            store
                .set_pull_request_state(number, *pr_number, state)
                .await?;
            engine.announce(number, super::Progress::PullRequests);
            return Ok(*merged && known.is_some());
        }
        _ => {}
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runbook(mode: PrMode) -> RunbookRecord {
        RunbookRecord {
            number: RunbookNumber::try_from(7).unwrap(),
            org: "acme".into(),
            repo: "app".into(),
            title: "Tidy".into(),
            prompt: "Tidy up".into(),
            oneshot: true,
            draft: None,
            pr_mode: Some(mode),
            target_branch: Some("main".into()),
            description: None,
            labels: Vec::new(),
            author_email: None,
            created_by_token: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            pull_request_requested: false,
        }
    }

    /// Steps from `(number, state, commit?)`; parents (numbers that prefix others) made so.
    fn steps(list: &[(&str, StepState, bool)]) -> Vec<StepRecord> {
        list.iter()
            .map(|(number, state, commit)| {
                let number: StepNumber = number.parse().unwrap();
                let is_leaf = !list
                    .iter()
                    .any(|(other, _, _)| other.starts_with(&format!("{number}.")));
                StepRecord {
                    title: format!("Step {number}"),
                    number,
                    details: String::new(),
                    is_leaf,
                    state: *state,
                    pr_number: None,
                    commit_sha: commit.then(|| "abc".to_string()),
                    error: None,
                    kind: crate::domain::StepKind::Work,
                    log: None,
                    started_at_ms: None,
                    finished_at_ms: None,
                    usage: None,
                }
            })
            .collect()
    }

    use StepState::{Completed as Done, NotStarted as Waiting, Queued};

    #[test]
    fn a_single_pr_is_opened_with_the_first_commit_and_carries_committed_leaves() {
        let none = steps(&[("1", Queued, false), ("2", Waiting, false)]);
        let w = wanted(&runbook(PrMode::SinglePr), &none, "main", |_| false);
        assert_eq!(w.len(), 1);
        assert!(!w[0].open && !w[0].done && w[0].leaves.is_empty());
        let some = steps(&[("1", Done, true), ("2", Done, false), ("3", Queued, false)]);
        let w = wanted(&runbook(PrMode::SinglePr), &some, "main", |_| false);
        assert_eq!(
            (w[0].branch.as_str(), w[0].base.as_str()),
            ("runbooks/7", "main")
        );
        assert!(w[0].open && !w[0].done);
        assert_eq!(w[0].leaves, ["1".parse::<StepNumber>().unwrap()]);
        // Manual: the same PR, opened only when asked for.
        let mut manual = runbook(PrMode::Manual);
        assert!(!wanted(&manual, &some, "main", |_| false)[0].open);
        manual.pull_request_requested = true;
        assert!(wanted(&manual, &some, "main", |_| false)[0].open);
    }

    #[test]
    fn a_stack_is_in_top_level_order_and_moves_onto_what_a_merged_pr_went_into() {
        let list = steps(&[
            ("1", Waiting, false),
            ("1.1", Done, true),
            ("1.2", Done, false),
            ("2", Done, false),
            ("3", Waiting, false),
            ("3.1", Done, true),
            ("4", Queued, false),
        ]);
        let w = wanted(&runbook(PrMode::StackedPr), &list, "main", |_| false);
        let layout: Vec<(&str, &str, i64, bool)> = w
            .iter()
            .map(|w| (w.branch.as_str(), w.base.as_str(), w.position, w.open))
            .collect();
        // Step 2 changed nothing: no PR; step 4 has no commit yet: no branch either.
        assert_eq!(
            layout,
            [
                ("runbooks/7/step-1", "main", 1, true),
                ("runbooks/7/step-3", "runbooks/7/step-1", 3, true),
            ]
        );
        assert_eq!(w[0].leaves.len(), 2, "every leaf of its top-level step");
        assert!(w[0].title.ends_with("(1. Step 1)"), "{}", w[0].title);
        // The bottom PR was merged: the next goes into what it went into.
        let w = wanted(&runbook(PrMode::StackedPr), &list, "main", |b| {
            b == "runbooks/7/step-1"
        });
        assert_eq!(w[1].base, "main");
    }

    #[test]
    fn runbook_branches() {
        let twelve = RunbookNumber::try_from(12).unwrap();
        assert_eq!(runbook_branch("runbooks/12"), Some((twelve, None)));
        assert_eq!(
            runbook_branch("runbooks/12/step-3"),
            Some((twelve, Some(3)))
        );
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
