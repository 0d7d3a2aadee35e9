//! The status comment: what the app writes in the thread a runbook was started from, and
//! edits as the runbook progresses. Rendering is pure; the engine decides when to edit.

use crate::domain::{
    PullRequestRef, RunbookNumber, RunbookStatus, StepCounts, StepState, Usage, status,
};
use crate::store::StepRecord;

/// Every status comment starts with this marker (invisible on GitHub), so the app can find
/// the comment it wrote for a runbook.
pub fn marker(number: RunbookNumber) -> String {
    format!("<!-- runbooks:status runbook={number} -->")
}

/// GitHub refuses comments longer than 65,536 characters; the step list is cut well before.
const MAX_STEP_LINES: usize = 150;
const MAX_ERROR_CHARS: usize = 1_000;

/// What the status comment shows.
pub struct StatusView<'a> {
    pub number: RunbookNumber,
    pub title: &'a str,
    /// The dashboard page of the runbook.
    pub url: &'a str,
    pub requested_by: &'a str,
    pub steps: &'a [StepRecord],
    pub pull_requests: &'a [PullRequestRef],
    /// The runbook's branch, for a `manual` runbook without a pull request.
    pub manual_branch: Option<&'a str>,
    /// What planning the runbook by an agent used (`None`: no agent planned it).
    pub planning: Option<Usage>,
}

fn icon(state: &str) -> &'static str {
    match state {
        "completed" => "✅",
        "failed" => "❌",
        "in_progress" => "🔄",
        "queued" => "⏳",
        "partially_completed" => "◐",
        _ => "⚪",
    }
}

/// A fence longer than any run of backticks in `text`, so the text cannot close it.
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// Keeps the end of a long text (an error's tail is where the cause is).
fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let kept: String = text.chars().skip(count - max).collect();
    format!("…{kept}")
}

/// Text from the plan shown on one line: mentions would notify people, so `@` is kept from
/// forming one, and line breaks are flattened.
fn inline(text: &str) -> String {
    text.replace('@', "@\u{200b}")
        .replace(['\n', '\r'], " ")
        .trim()
        .to_string()
}

/// The comment's body.
pub fn render(view: &StatusView<'_>) -> String {
    let leaves = view.steps.iter().filter(|s| s.is_leaf);
    let counts = StepCounts::from_states(leaves.clone().map(|s| s.state));
    let status = status(&counts);
    let mut out = String::new();
    out.push_str(&marker(view.number));
    out.push('\n');
    out.push_str(&format!(
        "### {} Runbook [#{}]({}): {}\n\n",
        icon(status.as_str()),
        view.number,
        view.url,
        inline(view.title)
    ));
    let done = counts.completed;
    let total = counts.total;
    let headline = match status {
        RunbookStatus::GeneratingSteps => "**Planning…** the steps will appear here.".to_string(),
        RunbookStatus::NotStarted => {
            "**The plan is ready.** Comment `/runbook execute` to run it, or \
             `/runbook execute <step>` to run up to one step."
                .to_string()
        }
        RunbookStatus::InProgress => {
            let current = leaves
                .clone()
                .find(|s| s.state == StepState::InProgress)
                .map(|s| format!(": step {} — {}", s.number, inline(&s.title)))
                .unwrap_or_default();
            format!("**In progress** ({done} of {total} steps done){current}")
        }
        RunbookStatus::PartiallyCompleted => format!(
            "**Paused** ({done} of {total} steps done). Comment `/runbook execute` to continue."
        ),
        RunbookStatus::Failed => format!("**Failed** ({done} of {total} steps done)."),
        RunbookStatus::Completed => format!("**Completed**: all {total} steps done."),
    };
    out.push_str(&headline);
    out.push_str("\n\n");

    for (i, step) in view.steps.iter().enumerate() {
        if i == MAX_STEP_LINES {
            out.push_str(&format!(
                "- … and {} more steps on the [dashboard]({})\n",
                view.steps.len() - MAX_STEP_LINES,
                view.url
            ));
            break;
        }
        let state = step.shown_state(view.steps).as_str();
        let indent = "  ".repeat(step.number.depth().saturating_sub(1));
        let commit = step
            .commit_sha
            .as_deref()
            .map(|sha| format!(" — `{}`", &sha[..sha.len().min(7)]))
            .unwrap_or_default();
        out.push_str(&format!(
            "{indent}- {} **{}** {}{commit}\n",
            icon(state),
            step.number,
            inline(&step.title)
        ));
    }
    if !view.steps.is_empty() {
        out.push('\n');
    }

    if status == RunbookStatus::Failed {
        for step in view
            .steps
            .iter()
            .filter(|s| s.is_leaf && s.state == StepState::Failed)
        {
            let error = tail(
                step.error.as_deref().unwrap_or("no reason given"),
                MAX_ERROR_CHARS,
            );
            let fence = fence_for(&error);
            out.push_str(&format!(
                "Step **{}** failed:\n{fence}\n{error}\n{fence}\n\n",
                step.number
            ));
        }
        out.push_str("Comment `/runbook retry` to run it again.\n\n");
    }

    match view.pull_requests {
        [] => {
            if let (Some(branch), RunbookStatus::Completed) = (view.manual_branch, status) {
                out.push_str(&format!(
                    "The work is on branch `{branch}`; no pull request was opened (manual mode).\n\n"
                ));
            }
        }
        [only] => out.push_str(&format!("Pull request: {}\n\n", only.url)),
        many => {
            out.push_str("Pull requests:\n");
            for pr in many {
                out.push_str(&format!(
                    "- {} (steps {})\n",
                    pr.url,
                    pr.step_numbers.join(", ")
                ));
            }
            out.push('\n');
        }
    }
    // What planning and the steps that ran used, once anything has.
    let used = view
        .steps
        .iter()
        .filter_map(|s| s.usage)
        .chain(view.planning)
        .reduce(|a, b| a + b)
        .map(|total: Usage| format!(" · Used {}", total.summary()))
        .unwrap_or_default();
    out.push_str(&format!(
        "<sub>[Dashboard]({}) · requested by @{}{used}</sub>\n",
        view.url, view.requested_by
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(number: &str, title: &str, leaf: bool, state: StepState) -> StepRecord {
        StepRecord {
            number: number.parse().unwrap(),
            title: title.into(),
            details: String::new(),
            is_leaf: leaf,
            state,
            pr_number: None,
            commit_sha: None,
            error: None,
            kind: crate::domain::StepKind::Work,
            log: None,
            started_at_ms: None,
            finished_at_ms: None,
            usage: None,
        }
    }

    fn view<'a>(steps: &'a [StepRecord], prs: &'a [PullRequestRef]) -> StatusView<'a> {
        StatusView {
            number: RunbookNumber::try_from(12).unwrap(),
            title: "Rename @old",
            url: "https://runbooks.example/runbooks/12",
            requested_by: "octocat",
            steps,
            pull_requests: prs,
            manual_branch: None,
            planning: None,
        }
    }

    #[test]
    fn planning_shows_the_marker_and_no_steps() {
        let body = render(&view(&[], &[]));
        assert!(body.starts_with("<!-- runbooks:status runbook=12 -->\n"));
        assert!(body.contains("Planning"));
        assert!(body.contains("requested by @octocat"));
        // A title's mention does not notify anyone.
        assert!(body.contains("Rename @\u{200b}old"));
    }

    #[test]
    fn a_completed_runbook_ends_with_its_pull_request() {
        let mut a = step("1.1", "First", true, StepState::Completed);
        a.commit_sha = Some("0123456789abcdef".into());
        let steps = [
            step("1", "Group", false, StepState::NotStarted),
            a,
            step("1.2", "Second", true, StepState::Completed),
        ];
        let prs = [PullRequestRef {
            number: 5,
            url: "https://github.example/acme/backend/pull/5".into(),
            step_numbers: vec!["1.1".into(), "1.2".into()],
        }];
        let body = render(&view(&steps, &prs));
        assert!(body.contains("**Completed**: all 2 steps done."));
        // Nothing recorded as used (steps from before usage was kept): no figures.
        assert!(body.ends_with("requested by @octocat</sub>\n"), "{body}");
        assert!(body.contains("- ✅ **1** Group\n  - ✅ **1.1** First — `0123456`\n"));
        assert!(body.contains("Pull request: https://github.example/acme/backend/pull/5"));
    }

    #[test]
    fn a_failure_shows_the_reason_in_a_fence_it_cannot_close() {
        let mut failed = step("2", "Break", true, StepState::Failed);
        failed.error = Some("exit 1\n```\n@someone".into());
        let steps = [step("1", "Ok", true, StepState::Completed), failed];
        let body = render(&view(&steps, &[]));
        assert!(body.contains("**Failed** (1 of 2 steps done)."));
        assert!(body.contains("Step **2** failed:\n````\nexit 1\n```\n@someone\n````\n"));
        assert!(body.contains("/runbook retry"));
    }

    #[test]
    fn the_footer_shows_what_the_steps_used() {
        let mut first = step("1", "Model", true, StepState::Completed);
        first.usage = Some(Usage {
            wall_ms: 150_000,
            agent_cpu_ms: 30_000,
            prompt_tokens: Some(10_000),
            completion_tokens: Some(2_345),
        });
        let mut second = step("2", "Script", true, StepState::Failed);
        second.usage = Some(Usage {
            wall_ms: 42_500,
            agent_cpu_ms: 11_000,
            prompt_tokens: None,
            completion_tokens: None,
        });
        let steps = [
            first,
            second,
            step("3", "Later", true, StepState::NotStarted),
        ];
        let body = render(&view(&steps, &[]));
        assert!(
            body.ends_with(
                "requested by @octocat · Used 3m 12s of agent time (41s CPU) · 12,345 tokens</sub>\n"
            ),
            "{body}"
        );
        // Without a model, no tokens are known and none are shown.
        let body = render(&view(&steps[1..], &[]));
        assert!(
            body.ends_with("requested by @octocat · Used 42s of agent time (11s CPU)</sub>\n"),
            "{body}"
        );
    }

    #[test]
    fn in_progress_names_the_running_step_and_long_plans_are_cut() {
        let mut steps: Vec<StepRecord> = (1..=200)
            .map(|i| step(&i.to_string(), "Do", true, StepState::Queued))
            .collect();
        steps[0].state = StepState::InProgress;
        let body = render(&view(&steps, &[]));
        assert!(body.contains("**In progress** (0 of 200 steps done): step 1 — Do"));
        assert!(body.contains("… and 50 more steps"));
        assert!(body.len() < 65_536);
    }
}
