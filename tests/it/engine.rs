//! The engine end to end: runbooks created through the REST API are planned by the script
//! agent, executed step by step in a git working tree, committed and pushed to the GitHub
//! stand-in — with the state machine's rules observed through the API.

use crate::support;
use crate::support::rn;

use support::{LIB, RENAME};

use std::time::Duration;

use runbooks::api::actions::StepDocument;
use runbooks::domain::{RunbookStatus, StepCounts};
use runbooks_standin::StandIn;
use serde_json::{Value, json};
use support::{Backend, Refused, TestServer, server_for, wait_for, wait_for_status};

async fn github() -> StandIn {
    support::github_with_backend(&[("src/lib.rs", LIB), ("README.md", "# backend\n")]).await
}

fn body(prompt: &str) -> Value {
    json!({"repository": {"org": "acme-corp", "name": "backend"}, "prompt": prompt})
}

async fn steps(t: &TestServer, number: i64) -> Vec<StepDocument> {
    t.api().steps(number).await.expect("the steps")
}

/// The base branch of the pull request whose head is `head`.
fn base_of(github: &StandIn, head: &str) -> String {
    github
        .pulls("acme-corp", "backend")
        .into_iter()
        .find(|p| p.head == head)
        .map(|p| p.base)
        .unwrap_or_else(|| panic!("no pull request from {head}"))
}

/// Creates a runbook (answered 202).
async fn create(t: &TestServer, request: Value) {
    t.api().create(&request).await.expect("created");
}

async fn a_runbook_runs_to_completion_with_one_commit_per_step(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let mut request = body(RENAME);
    request["author_email"] = json!("dev@acme.example");
    let doc = t.api().create(&request).await.expect("created");
    assert_eq!(doc.status, RunbookStatus::GeneratingSteps);

    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(
        done.status,
        RunbookStatus::Completed,
        "{done:?} {:?}",
        steps(&t, 1).await
    );
    assert_eq!(done.steps.total, 3);
    assert_eq!(done.steps.completed, 3);

    let lib = github
        .file("acme-corp", "backend", "runbooks/1", "src/lib.rs")
        .await
        .unwrap()
        .unwrap();
    assert!(
        lib.contains("pub fn new_name")
            && lib.contains("    new_name()")
            && !lib.contains("old_name"),
        "{lib}"
    );
    let readme = github
        .file("acme-corp", "backend", "runbooks/1", "README.md")
        .await
        .unwrap()
        .unwrap();
    assert!(readme.ends_with("Call new_name().\n"));
    assert_eq!(
        github
            .file("acme-corp", "backend", "main", "src/lib.rs")
            .await
            .unwrap()
            .unwrap(),
        LIB,
        "the target branch is untouched"
    );

    let messages = github
        .commit_messages("acme-corp", "backend", "runbooks/1")
        .await
        .unwrap();
    let ours: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains("Runbook: 1"))
        .collect();
    assert_eq!(ours.len(), 3, "{messages:?}");
    for (message, step) in ours.iter().rev().zip(["1.1", "1.2", "2"]) {
        assert!(
            message
                .lines()
                .any(|l| l == format!("Runbook-Step: {step}")),
            "{message}"
        );
        assert!(
            message.contains("Co-authored-by: dev <dev@acme.example>"),
            "{message}"
        );
    }

    let tree = steps(&t, 1).await;
    let rows: Vec<(&str, &str, bool)> = tree
        .iter()
        .map(|s| (s.number.as_str(), s.state.as_str(), s.commit_sha.is_some()))
        .collect();
    assert_eq!(
        rows,
        [
            ("1", "completed", false),
            ("1.1", "completed", true),
            ("1.2", "completed", true),
            ("2", "completed", true),
        ]
    );
    let head = github
        .branch_sha("acme-corp", "backend", "runbooks/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tree[3].commit_sha.as_deref(), Some(head.as_str()));
    t.stop().await;
}

async fn oneshot_false_waits_for_execute(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let mut request = body(RENAME);
    request["oneshot"] = json!(false);
    create(&t, request).await;
    let planned = wait_for_status(&t, 1, &[RunbookStatus::NotStarted]).await;
    assert_eq!(planned.steps.not_started, 3);

    // Up to step 1: both of its leaves run, step 2 waits.
    t.api()
        .act(1, "execute", Some(json!({"step": "1"})))
        .await
        .expect("queued");
    let partial = wait_for(&t, 1, "step 1 done", |d| {
        d.steps.completed == 2 && d.steps.queued == 0 && d.steps.in_progress == 0
    })
    .await;
    assert_eq!(partial.status, RunbookStatus::PartiallyCompleted);
    assert_eq!(partial.steps.not_started, 1);

    // A step the plan does not have is about the runbook's state (a follow-up may add it).
    t.api()
        .act(1, "execute", Some(json!({"step": "7"})))
        .await
        .refused(409, "conflict");
    t.api()
        .act(1, "execute", Some(json!({"step": "x.1"})))
        .await
        .refused(400, "bad-request");
    t.api().act(1, "execute", None).await.expect("queued");
    assert_eq!(
        wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed])
            .await
            .status,
        RunbookStatus::Completed
    );
    t.api()
        .act(1, "execute", None)
        .await
        .refused(409, "conflict");
    t.stop().await;
}

async fn a_failed_step_stops_the_runbook_until_retried(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let prompt = "## Execution Steps\n### Step 1: Works\n```sh\necho one > one.txt\n```\n### Step 2: Breaks\n```sh\necho 'about to fail'\nexit 3\n```\n### Step 3: Never reached\n```sh\necho three > three.txt\n```\n";
    create(&t, body(prompt)).await;
    let failed = wait_for_status(&t, 1, &[RunbookStatus::Failed, RunbookStatus::Completed]).await;
    assert_eq!(failed.status, RunbookStatus::Failed);
    assert_eq!(
        failed.steps,
        StepCounts {
            total: 3,
            not_started: 1,
            in_progress: 0,
            completed: 1,
            failed: 1,
            queued: 0
        }
    );
    let tree = steps(&t, 1).await;
    let error = tree[1].error.as_deref().unwrap();
    assert!(error.contains('3'), "the exit status is named: {error}");

    t.api()
        .act(1, "execute", Some(json!({"step": "0"})))
        .await
        .refused(400, "bad-request");
    t.api().act(1, "retry", None).await.expect("queued again");
    let again = wait_for(&t, 1, "the retry to end", |d| {
        d.steps.queued == 0 && d.steps.in_progress == 0 && d.status == RunbookStatus::Failed
    })
    .await;
    assert_eq!(again.steps.completed, 1, "step 1 is not run twice");
    let messages = github
        .commit_messages("acme-corp", "backend", "runbooks/1")
        .await
        .unwrap();
    let step_1 = messages
        .iter()
        .filter(|m| m.lines().any(|l| l == "Runbook-Step: 1"));
    assert_eq!(step_1.count(), 1, "{messages:?}");
    t.stop().await;
}

async fn steps_without_changes_make_no_commit_and_bad_plans_fail(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    create(
        &t,
        body("## Execution Steps\n### Step 1: Look around\n```sh\nls\n```\n"),
    )
    .await;
    assert_eq!(
        wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed])
            .await
            .status,
        RunbookStatus::Completed
    );
    assert!(steps(&t, 1).await[0].commit_sha.is_none());
    assert!(
        github
            .branch_sha("acme-corp", "backend", "runbooks/1")
            .await
            .unwrap()
            .is_none(),
        "nothing pushed"
    );

    // A plan that cannot be made ends `failed`, with the reason, never stuck generating.
    create(
        &t,
        body("## Execution Steps\n### Step 2: Out of order\n```sh\ntrue\n```\n"),
    )
    .await;
    let failed = wait_for_status(&t, 2, &[RunbookStatus::Failed]).await;
    assert_eq!(failed.steps.failed, 1);
    let error = steps(&t, 2).await[0].error.clone().unwrap();
    assert!(error.contains("expected step 1"), "{error}");

    // A free-text step needs an LLM agent: the script agent says so.
    create(&t, body("Make the code nicer")).await;
    wait_for_status(&t, 3, &[RunbookStatus::Failed]).await;
    let error = steps(&t, 3).await[0].error.clone().unwrap();
    assert!(error.contains("LLM agent"), "{error}");
    t.stop().await;
}

async fn a_follow_up_appends_steps_on_the_same_branch(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    create(&t, body(RENAME)).await;
    wait_for_status(&t, 1, &[RunbookStatus::Completed]).await;
    let follow_up = "## Execution Steps\n### Step 3: Add a changelog\n```sh\necho '- renamed old_name' > CHANGELOG.md\n```\n";
    t.api()
        .follow_up(1, &json!({"prompt": follow_up}))
        .await
        .expect("accepted");
    let done = wait_for(&t, 1, "the follow-up to run", |d| {
        d.steps.total == 4 && d.status == RunbookStatus::Completed
    })
    .await;
    assert_eq!(done.steps.completed, 4);
    let changelog = github
        .file("acme-corp", "backend", "runbooks/1", "CHANGELOG.md")
        .await
        .unwrap();
    assert_eq!(changelog.as_deref(), Some("- renamed old_name\n"));
    let readme = github
        .file("acme-corp", "backend", "runbooks/1", "README.md")
        .await
        .unwrap()
        .unwrap();
    assert!(
        readme.contains("Call new_name()."),
        "built on the earlier commits"
    );
    t.stop().await;
}

async fn cancel_stops_the_running_step(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let prompt = "## Execution Steps\n### Step 1: Take forever\n```sh\nsleep 60\n```\n### Step 2: After\n```sh\necho after > after.txt\n```\n";
    create(&t, body(prompt)).await;
    wait_for(&t, 1, "step 1 to start", |d| d.steps.in_progress == 1).await;
    t.api().act(1, "cancel", None).await.expect("requested");
    let cancelled = wait_for_status(&t, 1, &[RunbookStatus::Failed]).await;
    assert_eq!(cancelled.steps.not_started, 1);
    assert_eq!(steps(&t, 1).await[0].error.as_deref(), Some("cancelled"));
    t.stop().await;
}

/// `stacked_pr`: a branch per top-level step, each starting from the nearest earlier one
/// with commits; a top-level step without changes gets no branch.
async fn stacked_runbooks_build_a_branch_per_top_level_step(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let prompt = "## Execution Steps\n### Step 1: First\n#### 1.1: a\n```sh\necho a > a.txt\n```\n\
                  #### 1.2: b\n```sh\necho b > b.txt\n```\n\
                  ### Step 2: Nothing\n```sh\ntrue\n```\n\
                  ### Step 3: Third\n```sh\necho c > c.txt\n```\n";
    let mut request = body(prompt);
    request["pr_mode"] = json!("stacked_pr");
    create(&t, request).await;
    assert_eq!(
        wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed])
            .await
            .status,
        RunbookStatus::Completed
    );
    let branches = github.branches("acme-corp", "backend").await.unwrap();
    assert!(branches.contains_key("runbooks/1/step-1"), "{branches:?}");
    assert!(branches.contains_key("runbooks/1/step-3"), "{branches:?}");
    assert!(
        !branches.contains_key("runbooks/1/step-2") && !branches.contains_key("runbooks/1"),
        "{branches:?}"
    );
    let first = github
        .file("acme-corp", "backend", "runbooks/1/step-1", "b.txt")
        .await
        .unwrap();
    assert_eq!(first.as_deref(), Some("b\n"));
    assert!(
        github
            .file("acme-corp", "backend", "runbooks/1/step-1", "c.txt")
            .await
            .unwrap()
            .is_none()
    );
    // Step 3 builds on step 1's branch.
    let third = github
        .file("acme-corp", "backend", "runbooks/1/step-3", "a.txt")
        .await
        .unwrap();
    assert_eq!(third.as_deref(), Some("a\n"));
    let messages = github
        .commit_messages("acme-corp", "backend", "runbooks/1/step-3")
        .await
        .unwrap();
    assert!(
        messages[0].lines().any(|l| l == "Runbook-Step: 3"),
        "{messages:?}"
    );

    // One PR per top-level step with commits: step 1 onto main, step 3 onto step 1's branch;
    // each body lists the stack with its own PR marked.
    github
        .wait_until(std::time::Duration::from_secs(30), "two final PRs", |g| {
            let pulls = g.pulls("acme-corp", "backend");
            pulls.len() == 2 && pulls.iter().all(|p| !p.draft)
        })
        .await
        .unwrap();
    let pulls = github.pulls("acme-corp", "backend");
    let first = pulls
        .iter()
        .find(|p| p.head == "runbooks/1/step-1")
        .unwrap();
    let third = pulls
        .iter()
        .find(|p| p.head == "runbooks/1/step-3")
        .unwrap();
    assert_eq!(first.base, "main");
    assert_eq!(third.base, "runbooks/1/step-1");
    assert!(
        !first.title.starts_with("[WIP]") && first.title.contains("1. First"),
        "{}",
        first.title
    );
    for pr in [first, third] {
        let body = pr.body.clone().unwrap_or_default();
        assert!(
            body.contains("<!-- runbooks:stack -->") && body.contains("<!-- /runbooks:stack -->"),
            "{body}"
        );
        assert!(
            body.contains(&format!("#{}", first.number))
                && body.contains(&format!("#{}", third.number)),
            "{body}"
        );
        let marked: Vec<&str> = body.lines().filter(|l| l.contains("← this PR")).collect();
        assert_eq!(marked.len(), 1, "{body}");
        assert!(marked[0].contains(&format!("#{} ", pr.number)), "{body}");
    }
    let doc = t.api().runbook(1).await.expect("the runbook");
    assert_eq!(doc.pull_requests[0].step_numbers, ["1.1", "1.2"]);
    assert_eq!(doc.pull_requests[1].step_numbers, ["3"]);

    // The bottom PR is merged: the next one is retargeted onto its base.
    github
        .merge_pull("acme-corp", "backend", first.number, "octocat")
        .await
        .unwrap();
    let event = github
        .pull_request_closed("acme-corp", "backend", first.number)
        .await
        .unwrap();
    let hook = t.url("/webhooks/github");
    assert_eq!(github.send(&hook, &event).await.unwrap().status, 202);
    let third_number = third.number;
    github
        .wait_until(
            std::time::Duration::from_secs(30),
            "the next PR retargeted",
            |g| {
                g.pull("acme-corp", "backend", third_number)
                    .is_some_and(|p| p.base == "main" && p.open)
            },
        )
        .await
        .unwrap();
    t.stop().await;
}

/// `single_pr`: one PR from the runbook's branch, opened as a `[WIP] ` draft with the first
/// commit, made final (title, checklist, ready for review) when every step is completed;
/// a follow-up adds to the same PR.
async fn single_pr_runbooks_open_one_pull_request(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let mut request = body(RENAME);
    request["title"] = json!("Rename old_name");
    request["labels"] = json!(["runbook", "refactor"]);
    request["description"] = json!("Part of the naming clean-up.");
    create(&t, request).await;
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(done.status, RunbookStatus::Completed);
    // The PR is settled right after the last step: wait for that.
    github
        .wait_until(
            std::time::Duration::from_secs(30),
            "the PR made final",
            |g| g.pulls("acme-corp", "backend").iter().any(|p| !p.draft),
        )
        .await
        .unwrap();
    let pulls = github.pulls("acme-corp", "backend");
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let pr = &pulls[0];
    assert_eq!((pr.head.as_str(), pr.base.as_str()), ("runbooks/1", "main"));
    assert_eq!(pr.title, "Rename old_name", "the [WIP] prefix is gone");
    assert!(!pr.draft, "ready for review");
    assert_eq!(pr.labels, ["runbook", "refactor"]);
    let pr_body = pr.body.clone().unwrap_or_default();
    assert!(
        pr_body.starts_with("Part of the naming clean-up."),
        "{pr_body}"
    );
    for line in [
        "- [x] 1.1 Rename the definition",
        "- [x] 1.2 Update the callers",
        "- [x] 2 Document it",
    ] {
        assert!(pr_body.contains(line), "{line} in {pr_body}");
    }
    assert!(
        pr_body.contains(&format!("{}/runbooks/1", t.base)),
        "{pr_body}"
    );
    let listed: Vec<(u64, &str, &[String])> = done
        .pull_requests
        .iter()
        .map(|p| (p.number, p.url.as_str(), p.step_numbers.as_slice()))
        .collect();
    let url = format!("{}/acme-corp/backend/pull/{}", github.api_url(), pr.number);
    let carried = ["1.1", "1.2", "2"].map(String::from);
    assert_eq!(listed, [(pr.number, url.as_str(), carried.as_slice())]);
    let created = github.requests_for("pulls/create").len();
    assert_eq!(created, 1);

    // A follow-up: same PR, one more step, final again.
    let follow_up =
        "## Execution Steps\n### Step 3: Changelog\n```sh\necho changed > CHANGELOG.md\n```\n";
    t.api()
        .follow_up(1, &json!({"prompt": follow_up, "labels": ["follow-up"]}))
        .await
        .expect("accepted");
    let again = wait_for(&t, 1, "the follow-up", |d| {
        d.steps.total == 4 && d.status == RunbookStatus::Completed
    })
    .await;
    github
        .wait_until(
            std::time::Duration::from_secs(30),
            "the PR made final again",
            |g| {
                g.pulls("acme-corp", "backend").iter().any(|p| {
                    !p.draft && {
                        p.body
                            .as_deref()
                            .unwrap_or("")
                            .contains("- [x] 3 Changelog")
                    }
                })
            },
        )
        .await
        .unwrap();
    assert_eq!(
        github.pulls("acme-corp", "backend").len(),
        1,
        "no second PR"
    );
    assert_eq!(
        again.pull_requests[0].step_numbers,
        ["1.1", "1.2", "2", "3"]
    );
    assert_eq!(github.requests_for("pulls/create").len(), 1);
    let labels = github.pulls("acme-corp", "backend")[0].labels.clone();
    assert_eq!(
        labels,
        ["runbook", "refactor", "follow-up"],
        "the follow-up's labels"
    );
    // While the follow-up ran, the PR went back to being a draft.
    let conversions = github
        .requests_for("graphql")
        .iter()
        .filter(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b.to_string().contains("convertPullRequestToDraft"))
        })
        .count();
    assert_eq!(conversions, 1);
    t.stop().await;
}

/// `draft: true` keeps the PR a draft; a failure keeps it a `[WIP]` draft with the work done.
async fn drafts_and_failures_stay_drafts(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let mut request = body(RENAME);
    request["draft"] = json!(true);
    create(&t, request).await;
    wait_for_status(&t, 1, &[RunbookStatus::Completed]).await;
    let prompt = "## Execution Steps\n### Step 1: Works\n```sh\necho x > x.txt\n```\n### Step 2: Breaks\n```sh\nexit 1\n```\n";
    create(&t, body(prompt)).await;
    wait_for_status(&t, 2, &[RunbookStatus::Failed]).await;
    // Settling happens right after the last state change; wait for it.
    let settled = github
        .wait_until(
            std::time::Duration::from_secs(30),
            "the failed runbook's PR updated",
            |g| {
                g.pulls("acme-corp", "backend").iter().any(|p| {
                    p.head == "runbooks/2" && p.body.as_deref().unwrap_or("").contains("failed")
                })
            },
        )
        .await;
    settled.unwrap();
    let pulls = github.pulls("acme-corp", "backend");
    let first = pulls.iter().find(|p| p.head == "runbooks/1").unwrap();
    assert!(
        first.draft && !first.title.starts_with("[WIP]"),
        "{first:?}"
    );
    let second = pulls.iter().find(|p| p.head == "runbooks/2").unwrap();
    assert!(
        second.draft && second.title.starts_with("[WIP] "),
        "{second:?}"
    );
    t.stop().await;
}

/// `manual`: the work is pushed and no PR opens by itself; `POST …/pull_requests` opens it.
async fn manual_runbooks_open_their_pull_request_on_request(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let mut request = body(RENAME);
    request["pr_mode"] = json!("manual");
    create(&t, request).await;
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(done.status, RunbookStatus::Completed);
    assert!(
        github
            .branch_sha("acme-corp", "backend", "runbooks/1")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        github.pulls("acme-corp", "backend").is_empty(),
        "no PR by itself"
    );
    assert!(done.pull_requests.is_empty());

    let doc = t.api().act(1, "pull_requests", None).await.expect("opened");
    assert_eq!(doc.pull_requests[0].step_numbers, ["1.1", "1.2", "2"]);
    let pulls = github.pulls("acme-corp", "backend");
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        (pulls[0].head.as_str(), pulls[0].base.as_str()),
        ("runbooks/1", "main")
    );
    assert!(
        !pulls[0].draft && !pulls[0].title.starts_with("[WIP]"),
        "{:?}",
        pulls[0]
    );
    // Asking again opens nothing new.
    t.api()
        .act(1, "pull_requests", None)
        .await
        .expect("accepted");
    assert_eq!(github.pulls("acme-corp", "backend").len(), 1);

    // A PR a person opens from a manual runbook's branch is linked through the webhook.
    let mut request = body(RENAME);
    request["pr_mode"] = json!("manual");
    create(&t, request).await;
    wait_for_status(&t, 2, &[RunbookStatus::Completed]).await;
    let opened = github
        .open_pull(
            "acme-corp",
            "backend",
            "runbooks/2",
            "main",
            "By hand",
            "octocat",
        )
        .await
        .unwrap();
    let event = github
        .pull_request_opened("acme-corp", "backend", opened)
        .await
        .unwrap();
    let hook = t.url("/webhooks/github");
    assert_eq!(github.send(&hook, &event).await.unwrap().status, 202);
    let linked = wait_for(&t, 2, "the PR linked", |d| !d.pull_requests.is_empty()).await;
    assert_eq!(linked.pull_requests[0].number, opened);
    assert_eq!(linked.pull_requests[0].step_numbers, ["1.1", "1.2", "2"]);

    // Not for a runbook that opens its PRs itself.
    create(&t, body(RENAME)).await;
    t.api()
        .act(3, "pull_requests", None)
        .await
        .refused(409, "conflict");
    t.stop().await;
}

/// GitHub requests for a `single_pr` runbook of 10 leaf steps, git traffic aside: the
/// minimum is resolving the repository and the bot (4: installation, token, repository,
/// app; plus the bot user), finding and opening the PR (2), and making it final (2). The aim
/// is at most 12, whatever the number of steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_step_single_pr_runbook_makes_few_github_requests() {
    let github = github().await;
    let t = server_for(&github, Backend::Sqlite, |_| {}).await;
    let mut prompt = String::from("## Execution Steps\n");
    for i in 1..=10 {
        prompt.push_str(&format!(
            "### Step {i}: Step {i}\n```sh\necho {i} > file-{i}.txt\n```\n"
        ));
    }
    github.clear_requests();
    create(&t, body(&prompt)).await;
    wait_for_status(&t, 1, &[RunbookStatus::Completed]).await;
    github
        .wait_until(
            std::time::Duration::from_secs(30),
            "the PR made final",
            |g| g.pulls("acme-corp", "backend").iter().any(|p| !p.draft),
        )
        .await
        .unwrap();
    let api: Vec<String> = github
        .requests()
        .into_iter()
        .map(|r| r.operation)
        .filter(|op| !op.starts_with("git/"))
        .collect();
    println!("GitHub API requests for 10 steps: {} {api:?}", api.len());
    // Tokens are minted per permission set (metadata, contents read and write, pull requests
    // read and write), once each; every other call counts against the budget as before.
    let exchanges = api
        .iter()
        .filter(|op| *op == "apps/create-installation-access-token")
        .count();
    assert!(exchanges <= 5, "{exchanges} token exchanges: {api:?}");
    assert!(
        api.len() - exchanges <= 11,
        "{} requests: {api:?}",
        api.len()
    );

    // stacked_pr, 3 top-level steps of 3 leaves: per PR, a lookup, the creation, the final
    // body and the ready mutation; the repository and the bot are already known.
    let mut prompt = String::from("## Execution Steps\n");
    for top in 1..=3 {
        prompt.push_str(&format!("### Step {top}: Part {top}\n"));
        for leaf in 1..=3 {
            prompt.push_str(&format!(
                "#### {top}.{leaf}: Leaf\n```sh\necho {top}{leaf} > f-{top}-{leaf}.txt\n```\n"
            ));
        }
    }
    github.clear_requests();
    let mut request = body(&prompt);
    request["pr_mode"] = json!("stacked_pr");
    create(&t, request).await;
    wait_for_status(&t, 2, &[RunbookStatus::Completed]).await;
    github
        .wait_until(std::time::Duration::from_secs(30), "three final PRs", |g| {
            g.pulls("acme-corp", "backend")
                .iter()
                .filter(|p| p.head.starts_with("runbooks/2/") && !p.draft)
                .count()
                == 3
        })
        .await
        .unwrap();
    let api: Vec<String> = github
        .requests()
        .into_iter()
        .map(|r| r.operation)
        .filter(|op| !op.starts_with("git/"))
        .collect();
    println!("GitHub API requests for a 3x3 stack: {} {api:?}", api.len());
    assert!(api.len() <= 3 * 4 + 2, "{} requests: {api:?}", api.len());
    t.stop().await;
}

/// `.github/runbooks.yml` supplies what the request leaves out, under the request's own
/// values; a broken file fails the runbook with a message naming it.
async fn project_configuration_fills_in_defaults(backend: Backend) {
    let github = StandIn::start().await.unwrap();
    let config = "pr_mode: stacked_pr\ndraft: true\nlabels: [from-config]\n";
    github
        .create_repo(
            "acme-corp",
            "backend",
            "main",
            &[("README.md", "# b\n"), (".github/runbooks.yml", config)],
        )
        .await
        .unwrap();
    github
        .create_repo(
            "acme-corp",
            "broken",
            "main",
            &[(".github/runbooks.yml", "pr_mode: [nope\n")],
        )
        .await
        .unwrap();
    github.install("acme-corp", &["backend", "broken"]);
    let t = server_for(&github, backend, |_| {}).await;
    let prompt = "## Execution Steps\n### Step 1: One\n```sh\necho 1 > one.txt\n```\n";
    let mut request = body(prompt);
    request["labels"] = json!(["asked"]);
    create(&t, request).await;
    wait_for_status(&t, 1, &[RunbookStatus::Completed]).await;
    let stored = t.store.runbook(rn(1)).await.unwrap().unwrap();
    assert_eq!(stored.pr_mode, Some(runbooks::domain::PrMode::StackedPr));
    assert_eq!(stored.draft, Some(true));
    assert_eq!(stored.labels, ["asked", "from-config"]);
    assert!(
        github
            .branch_sha("acme-corp", "backend", "runbooks/1/step-1")
            .await
            .unwrap()
            .is_some()
    );

    // The request's own values win.
    let mut request = body(prompt);
    request["pr_mode"] = json!("single_pr");
    request["draft"] = json!(false);
    create(&t, request).await;
    wait_for_status(&t, 2, &[RunbookStatus::Completed]).await;
    let stored = t.store.runbook(rn(2)).await.unwrap().unwrap();
    assert_eq!(
        (stored.pr_mode, stored.draft),
        (Some(runbooks::domain::PrMode::SinglePr), Some(false))
    );

    let mut request = body(prompt);
    request["repository"]["name"] = json!("broken");
    create(&t, request).await;
    wait_for_status(&t, 3, &[RunbookStatus::Failed]).await;
    let error = steps(&t, 3).await[0].error.clone().unwrap();
    assert!(error.contains(".github/runbooks.yml"), "{error}");
    t.stop().await;
}

/// GitHub fails to open the PR after the first push: the step is done anyway (its work is
/// on the branch), the PR is opened with the next one, carrying both, and only once.
async fn a_pull_request_that_could_not_be_opened_is_opened_later(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    github.inject(
        runbooks_standin::Fault::server_error("/repos/acme-corp/backend/pulls")
            .method("POST")
            .times(4),
    );
    create(&t, body(RENAME)).await;
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(done.status, RunbookStatus::Completed);
    assert_eq!(github.pulls("acme-corp", "backend").len(), 1);
    assert_eq!(done.pull_requests[0].step_numbers, ["1.1", "1.2", "2"]);
    t.stop().await;
}

/// When opening the PR fails after the last step (GitHub down through every retry), no later
/// step would open it: the runbook opens it when it settles, and makes it final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_that_failed_after_the_last_step_is_opened_at_settle() {
    let github = github().await;
    let t = server_for(&github, Backend::Sqlite, |_| {}).await;
    // Every attempt of the client's at the step's PR fails; the next call succeeds.
    github.inject(
        runbooks_standin::Fault::server_error("/repos/acme-corp/backend/pulls")
            .method("POST")
            .times(4),
    );
    let one_step =
        "## Execution Steps\n### Step 1: Document it\n```sh\necho more >> README.md\n```\n";
    create(&t, body(one_step)).await;
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(done.status, RunbookStatus::Completed);
    github
        .wait_until(Duration::from_secs(60), "the final pull request", |g| {
            g.pulls("acme-corp", "backend")
                .iter()
                .any(|p| !p.title.starts_with("[WIP]") && !p.draft)
        })
        .await
        .unwrap();
    let pulls = github.pulls("acme-corp", "backend");
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].head, "runbooks/1");
    let doc = wait_for(&t, 1, "the PR listed", |d| d.pull_requests.len() == 1).await;
    assert_eq!(doc.pull_requests[0].step_numbers, ["1"]);
    t.stop().await;
}

/// The same for a stack: the first top-level step's PR could not be opened; the second's
/// was (onto the first's branch); at settle the first is opened too, onto the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stacked_pull_request_that_could_not_be_opened_is_opened_at_settle() {
    let github = github().await;
    let t = server_for(&github, Backend::Sqlite, |_| {}).await;
    github.inject(
        runbooks_standin::Fault::server_error("/repos/acme-corp/backend/pulls")
            .method("POST")
            .times(4),
    );
    let mut request = body(
        "## Execution Steps\n### Step 1: One\n```sh\necho 1 > one.txt\n```\n\
         ### Step 2: Two\n```sh\necho 2 > two.txt\n```\n",
    );
    request["pr_mode"] = json!("stacked_pr");
    create(&t, request).await;
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(done.status, RunbookStatus::Completed);
    github
        .wait_until(Duration::from_secs(60), "both pull requests", |g| {
            g.pulls("acme-corp", "backend").len() == 2
        })
        .await
        .unwrap();
    let base_of = |head: &str| base_of(&github, head);
    assert_eq!(base_of("runbooks/1/step-1"), "main");
    assert_eq!(base_of("runbooks/1/step-2"), "runbooks/1/step-1");
    let doc = wait_for(&t, 1, "both PRs listed", |d| d.pull_requests.len() == 2).await;
    // In the stack's order (its top-level steps'), whatever order they were opened in.
    let steps: Vec<&[String]> = doc
        .pull_requests
        .iter()
        .map(|p| p.step_numbers.as_slice())
        .collect();
    assert_eq!(steps, [["1"], ["2"]], "{doc:?}");
    github
        .wait_until(Duration::from_secs(30), "both final", |g| {
            g.pulls("acme-corp", "backend").iter().all(|p| !p.draft)
        })
        .await
        .unwrap();
    let pulls = github.pulls("acme-corp", "backend");
    let number_of = |head: &str| pulls.iter().find(|p| p.head == head).unwrap().number;
    let (one, two) = (
        number_of("runbooks/1/step-1"),
        number_of("runbooks/1/step-2"),
    );
    for pr in &pulls {
        let body = pr.body.clone().unwrap_or_default();
        let listed: Vec<&str> = body.lines().filter(|l| l.starts_with("1. #")).collect();
        assert_eq!(listed.len(), 2, "{body}");
        assert!(listed[0].starts_with(&format!("1. #{one} ")), "{body}");
        assert!(listed[1].starts_with(&format!("1. #{two} ")), "{body}");
    }
    t.stop().await;
}

/// The `command` agent end to end: a coding CLI (`fixtures/agents/fake-coding-cli`, jailed,
/// readable through `RUNBOOKS_AGENT_READ_PATHS` as a real one would be) plans a free-text
/// prompt into three top-level steps with sub-steps, then carries out each leaf: one commit
/// per leaf, a stacked pull request per top-level step.
async fn a_coding_cli_plans_and_carries_out_a_free_text_runbook(backend: Backend) {
    let github = github().await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/agents");
    let cli = fixtures.join("fake-coding-cli");
    let t = server_for(&github, backend, move |config| {
        config.agent.kind = runbooks::agent::AgentKind::Command;
        config.agent.command = Some(format!("sh '{}'", cli.display()));
        config.agent.read_paths.push(fixtures);
        // The fake needs no network (a real CLI reaches its model through the egress proxy).
        config.agent.network = Some(runbooks::agent::NetworkKind::None);
    })
    .await;
    let mut request = body("Write a note for every part of the code.");
    request["pr_mode"] = json!("stacked_pr");
    create(&t, request).await;
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    let all = steps(&t, 1).await;
    assert_eq!(done.status, RunbookStatus::Completed, "{all:?}");
    let numbers: Vec<&str> = all.iter().map(|s| s.number.as_str()).collect();
    assert_eq!(numbers, ["1", "1.1", "1.2", "2", "2.1", "2.2", "3"]);
    assert_eq!(all[1].title, "Write the first note");
    // The CLI's planning counts: its wall time (toward agent minutes), no tokens.
    let planning = t.store.plan_usage(rn(1)).await.unwrap().expect("recorded");
    assert!(planning.wall_ms > 0, "{planning:?}");
    assert_eq!(planning.prompt_tokens, None);

    // One commit per leaf, each on its top-level step's branch, stacked.
    let last = github
        .commit_messages("acme-corp", "backend", "runbooks/1/step-3")
        .await
        .unwrap();
    let made: Vec<String> = last
        .iter()
        .filter_map(|m| m.lines().find_map(|l| l.strip_prefix("Runbook-Step: ")))
        .map(str::to_string)
        .collect();
    assert_eq!(made, ["3", "2.2", "2.1", "1.2", "1.1"], "{last:?}");
    let note = github
        .file(
            "acme-corp",
            "backend",
            "runbooks/1/step-2",
            "notes/step-2.1.md",
        )
        .await
        .unwrap();
    assert_eq!(
        note.as_deref(),
        Some("Step 2.1 of runbook 1: Write the third note\n")
    );
    for branch in ["runbooks/1/step-1", "runbooks/1/step-3"] {
        assert!(
            github
                .file("acme-corp", "backend", branch, ".planner-was-here")
                .await
                .unwrap()
                .is_none(),
            "the planner could not write the tree"
        );
    }
    github
        .wait_until(Duration::from_secs(30), "three final PRs", |g| {
            let pulls = g.pulls("acme-corp", "backend");
            pulls.len() == 3 && pulls.iter().all(|p| !p.draft)
        })
        .await
        .unwrap();
    let base_of = |head: &str| base_of(&github, head);
    assert_eq!(base_of("runbooks/1/step-1"), "main");
    assert_eq!(base_of("runbooks/1/step-2"), "runbooks/1/step-1");
    assert_eq!(base_of("runbooks/1/step-3"), "runbooks/1/step-2");
    t.stop().await;
}

/// Planning takes as long as the CLI likes; cancelling stops it like a running step, and the
/// runbook shows why (a retry plans again).
async fn cancel_stops_a_coding_cli_that_is_planning(backend: Backend) {
    let github = github().await;
    let signs = tempfile::tempdir().unwrap();
    let started = signs.path().join("planning");
    let command = format!("touch '{}'; sleep 60", started.display());
    let t = server_for(&github, backend, move |config| {
        config.agent.kind = runbooks::agent::AgentKind::Command;
        config.agent.command = Some("true".into());
        config.agent.plan_command = Some(command);
        // Unjailed, so that the planner can leave the sign that it started where the test
        // sees it.
        config.agent.sandbox = runbooks::agent::SandboxKind::None;
    })
    .await;
    create(&t, body("Write notes.")).await;
    // The planner is another process: its sign is looked for until it shows.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the planner never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.api().act(1, "cancel", None).await.expect("requested");
    let cancelled = wait_for_status(&t, 1, &[RunbookStatus::Failed]).await;
    assert_eq!(cancelled.steps.failed, 1);
    assert_eq!(
        steps(&t, 1).await[0].error.as_deref(),
        Some("cancelled while planning")
    );
    t.stop().await;
}

both_backends!(
    cancel_stops_a_coding_cli_that_is_planning,
    a_coding_cli_plans_and_carries_out_a_free_text_runbook,
    a_pull_request_that_could_not_be_opened_is_opened_later,
    project_configuration_fills_in_defaults,
    manual_runbooks_open_their_pull_request_on_request,
    single_pr_runbooks_open_one_pull_request,
    drafts_and_failures_stay_drafts,
    stacked_runbooks_build_a_branch_per_top_level_step,
    a_runbook_runs_to_completion_with_one_commit_per_step,
    oneshot_false_waits_for_execute,
    a_failed_step_stops_the_runbook_until_retried,
    steps_without_changes_make_no_commit_and_bad_plans_fail,
    a_follow_up_appends_steps_on_the_same_branch,
    cancel_stops_the_running_step,
);

/// After a crash, a commit at the head of the branch naming the step stands for the step's
/// own push — but only when the app made it: trailers are plain text that anyone who can
/// push to the branch could write. A forged one (by mallory, naming runbook 1's step 1) is
/// not taken for the step: the step runs, and its commit is the app's, on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_commit_naming_a_step_is_not_adopted() {
    let github = github().await;
    let t = server_for(&github, Backend::Sqlite, |_| {}).await;
    let mut request = body(RENAME);
    request["oneshot"] = json!(false);
    create(&t, request).await;
    wait_for_status(&t, 1, &[RunbookStatus::NotStarted]).await;
    let forged = github
        .push_commit(
            "acme-corp",
            "backend",
            "runbooks/1",
            &[("README.md", "# forged\n")],
            "Rename the definition\n\nRunbook: 1\nRunbook-Step: 1.1",
            "mallory",
        )
        .await
        .unwrap();
    t.api().act(1, "execute", None).await.expect("queued");
    let doc = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(doc.status, RunbookStatus::Completed, "{doc:?}");
    let tree = steps(&t, 1).await;
    let step = tree.iter().find(|s| s.number == "1.1").unwrap();
    let sha = step.commit_sha.clone().unwrap();
    assert_ne!(sha, forged, "the forged commit was adopted: {tree:?}");
    let server = git2::Repository::open_bare(github.repo_path("acme-corp", "backend")).unwrap();
    let commit = server
        .find_commit(git2::Oid::from_str(&sha).unwrap())
        .unwrap();
    assert_eq!(
        commit.author().name().ok(),
        Some(github.bot_login().as_str())
    );
    assert_eq!(commit.parent_id(0).unwrap().to_string(), forged);
    assert!(
        github
            .file("acme-corp", "backend", &sha, "src/lib.rs")
            .await
            .unwrap()
            .unwrap()
            .contains("pub fn new_name")
    );
    t.stop().await;
}

/// Making a PR final is owed until GitHub has it: when GitHub fails the final pass (every
/// retry of the client's), the runbook keeps its debt, with the error and a backoff, and a
/// worker pays it later — the PR ends final, not a `[WIP]` draft forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_pass_that_github_fails_is_paid_later() {
    let github = github().await;
    let t = server_for(&github, Backend::Sqlite, |_| {}).await;
    // Two whole final passes fail (4 attempts of the client's each).
    github.inject(
        runbooks_standin::Fault::bad_gateway("/repos/acme-corp/backend/pulls/")
            .method("PATCH")
            .times(8),
    );
    let one_step =
        "## Execution Steps\n### Step 1: Document it\n```sh\necho more >> README.md\n```\n";
    create(&t, body(one_step)).await;
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(done.status, RunbookStatus::Completed);
    // The debt is recorded with why it is not paid yet.
    let mut progress = t.watch(1, Duration::from_secs(60));
    loop {
        if let Some(owed) = t.store.owed(rn(1)).await.unwrap()
            && owed.attempts >= 1
        {
            assert!(
                owed.error.as_deref().unwrap_or("").contains("502"),
                "{owed:?}"
            );
            break;
        }
        assert!(progress.next().await, "no failed attempt recorded");
    }
    github
        .wait_until(Duration::from_secs(60), "the final pull request", |g| {
            g.pulls("acme-corp", "backend")
                .iter()
                .any(|p| !p.title.starts_with("[WIP]") && !p.draft)
        })
        .await
        .unwrap();
    let mut progress = t.watch(1, Duration::from_secs(30));
    while t.store.owed(rn(1)).await.unwrap().is_some() {
        assert!(progress.next().await, "the debt was never paid");
    }
    assert_eq!(github.pulls("acme-corp", "backend").len(), 1);
    t.stop().await;
}
