//! The engine end to end: runbooks created through the REST API are planned by the script
//! agent, executed step by step in a git working tree, committed and pushed to the GitHub
//! stand-in — with the state machine's rules observed through the API.

use crate::support;

use support::{LIB, RENAME};

use std::time::Duration;

use runbooks_standin::StandIn;
use serde_json::{Value, json};
use support::{Backend, TestServer, expect_error, json, server_for, wait_for, wait_for_status};

async fn github() -> StandIn {
    support::github_with_backend(&[("src/lib.rs", LIB), ("README.md", "# backend\n")]).await
}

fn body(prompt: &str) -> Value {
    json!({"repository": {"org": "acme-corp", "name": "backend"}, "prompt": prompt})
}

async fn steps(t: &TestServer, number: i64) -> Value {
    let response = t
        .http
        .get(t.url(&format!("/api/v1/runbook/{number}/steps")))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    json(response).await.1
}

async fn post(t: &TestServer, number: i64, action: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = t
        .http
        .post(t.url(&format!("/api/v1/runbook/{number}/{action}")))
        .bearer_auth(&t.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn a_runbook_runs_to_completion_with_one_commit_per_step(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let mut request = body(RENAME);
    request["author_email"] = json!("dev@acme.example");
    let (status, doc) = json(t.create(request).await).await;
    assert_eq!(
        (status, doc["status"].clone()),
        (202, json!("generating_steps"))
    );

    let done = wait_for_status(&t, 1, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed", "{done} {}", steps(&t, 1).await);
    assert_eq!(done["steps"]["total"], 3);
    assert_eq!(done["steps"]["completed"], 3);

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
    let rows: Vec<(String, String, bool)> = tree["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["number"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
                s["commit_sha"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("1".to_string(), "completed".to_string(), false),
            ("1.1".to_string(), "completed".to_string(), true),
            ("1.2".to_string(), "completed".to_string(), true),
            ("2".to_string(), "completed".to_string(), true),
        ]
    );
    let head = github
        .branch_sha("acme-corp", "backend", "runbooks/1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tree["steps"][3]["commit_sha"], head);
    t.stop().await;
}

async fn oneshot_false_waits_for_execute(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let mut request = body(RENAME);
    request["oneshot"] = json!(false);
    json(t.create(request).await).await;
    let planned = wait_for_status(&t, 1, &["not_started"]).await;
    assert_eq!(planned["steps"]["not_started"], 3);

    // Up to step 1: both of its leaves run, step 2 waits.
    let (status, _) = json(post(&t, 1, "execute", Some(json!({"step": "1"}))).await).await;
    assert_eq!(status, 202);
    let partial = wait_for(&t, 1, "step 1 done", |d| {
        d["steps"]["completed"] == 2 && d["steps"]["queued"] == 0 && d["steps"]["in_progress"] == 0
    })
    .await;
    assert_eq!(partial["status"], "partially_completed");
    assert_eq!(partial["steps"]["not_started"], 1);

    // A step the plan does not have is about the runbook's state (a follow-up may add it).
    expect_error(
        post(&t, 1, "execute", Some(json!({"step": "7"}))).await,
        409,
        "conflict",
    )
    .await;
    expect_error(
        post(&t, 1, "execute", Some(json!({"step": "x.1"}))).await,
        400,
        "bad-request",
    )
    .await;
    let (status, _) = json(post(&t, 1, "execute", None).await).await;
    assert_eq!(status, 202);
    assert_eq!(
        wait_for_status(&t, 1, &["completed", "failed"]).await["status"],
        "completed"
    );
    expect_error(post(&t, 1, "execute", None).await, 409, "conflict").await;
    t.stop().await;
}

async fn a_failed_step_stops_the_runbook_until_retried(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let prompt = "## Execution Steps\n### Step 1: Works\n```sh\necho one > one.txt\n```\n### Step 2: Breaks\n```sh\necho 'about to fail'\nexit 3\n```\n### Step 3: Never reached\n```sh\necho three > three.txt\n```\n";
    json(t.create(body(prompt)).await).await;
    let failed = wait_for_status(&t, 1, &["failed", "completed"]).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["steps"],
        json!({"total": 3, "not_started": 1, "in_progress": 0, "completed": 1, "failed": 1, "queued": 0})
    );
    let tree = steps(&t, 1).await;
    let error = tree["steps"][1]["error"].as_str().unwrap();
    assert!(error.contains('3'), "the exit status is named: {error}");

    expect_error(
        post(&t, 1, "execute", Some(json!({"step": "0"}))).await,
        400,
        "bad-request",
    )
    .await;
    let (status, doc) = json(post(&t, 1, "retry", None).await).await;
    assert_eq!(status, 202, "{doc}");
    let again = wait_for(&t, 1, "the retry to end", |d| {
        d["steps"]["queued"] == 0 && d["steps"]["in_progress"] == 0 && d["status"] == "failed"
    })
    .await;
    assert_eq!(again["steps"]["completed"], 1, "step 1 is not run twice");
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
    json(
        t.create(body(
            "## Execution Steps\n### Step 1: Look around\n```sh\nls\n```\n",
        ))
        .await,
    )
    .await;
    assert_eq!(
        wait_for_status(&t, 1, &["completed", "failed"]).await["status"],
        "completed"
    );
    assert!(steps(&t, 1).await["steps"][0]["commit_sha"].is_null());
    assert!(
        github
            .branch_sha("acme-corp", "backend", "runbooks/1")
            .await
            .unwrap()
            .is_none(),
        "nothing pushed"
    );

    // A plan that cannot be made ends `failed`, with the reason, never stuck generating.
    json(
        t.create(body(
            "## Execution Steps\n### Step 2: Out of order\n```sh\ntrue\n```\n",
        ))
        .await,
    )
    .await;
    let failed = wait_for_status(&t, 2, &["failed"]).await;
    assert_eq!(failed["steps"]["failed"], 1);
    let error = steps(&t, 2).await["steps"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("expected step 1"), "{error}");

    // A free-text step needs an LLM agent: the script agent says so.
    json(t.create(body("Make the code nicer")).await).await;
    wait_for_status(&t, 3, &["failed"]).await;
    let error = steps(&t, 3).await["steps"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("LLM agent"), "{error}");
    t.stop().await;
}

async fn a_follow_up_appends_steps_on_the_same_branch(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    json(t.create(body(RENAME)).await).await;
    wait_for_status(&t, 1, &["completed"]).await;
    let follow_up = "## Execution Steps\n### Step 3: Add a changelog\n```sh\necho '- renamed old_name' > CHANGELOG.md\n```\n";
    let (status, _) = json(t.patch(1, json!({"prompt": follow_up})).await).await;
    assert_eq!(status, 202);
    let done = wait_for(&t, 1, "the follow-up to run", |d| {
        d["steps"]["total"] == 4 && d["status"] == "completed"
    })
    .await;
    assert_eq!(done["steps"]["completed"], 4);
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
    json(t.create(body(prompt)).await).await;
    wait_for(&t, 1, "step 1 to start", |d| d["steps"]["in_progress"] == 1).await;
    let (status, _) = json(post(&t, 1, "cancel", None).await).await;
    assert_eq!(status, 202);
    let cancelled = wait_for_status(&t, 1, &["failed"]).await;
    assert_eq!(cancelled["steps"]["not_started"], 1);
    assert_eq!(steps(&t, 1).await["steps"][0]["error"], "cancelled");
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
    json(t.create(request).await).await;
    assert_eq!(
        wait_for_status(&t, 1, &["completed", "failed"]).await["status"],
        "completed"
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
    let doc = json(t.get(1).await).await.1;
    assert_eq!(
        doc["pull_requests"][0]["step_numbers"],
        json!(["1.1", "1.2"])
    );
    assert_eq!(doc["pull_requests"][1]["step_numbers"], json!(["3"]));

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
    json(t.create(request).await).await;
    let done = wait_for_status(&t, 1, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed");
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
    assert_eq!(
        done["pull_requests"],
        json!([{"number": pr.number, "url": format!("{}/acme-corp/backend/pull/{}", github.api_url(), pr.number), "step_numbers": ["1.1", "1.2", "2"]}])
    );
    let created = github.requests_for("pulls/create").len();
    assert_eq!(created, 1);

    // A follow-up: same PR, one more step, final again.
    let follow_up =
        "## Execution Steps\n### Step 3: Changelog\n```sh\necho changed > CHANGELOG.md\n```\n";
    json(
        t.patch(1, json!({"prompt": follow_up, "labels": ["follow-up"]}))
            .await,
    )
    .await;
    let again = wait_for(&t, 1, "the follow-up", |d| {
        d["steps"]["total"] == 4 && d["status"] == "completed"
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
        again["pull_requests"][0]["step_numbers"],
        json!(["1.1", "1.2", "2", "3"])
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
    json(t.create(request).await).await;
    wait_for_status(&t, 1, &["completed"]).await;
    let prompt = "## Execution Steps\n### Step 1: Works\n```sh\necho x > x.txt\n```\n### Step 2: Breaks\n```sh\nexit 1\n```\n";
    json(t.create(body(prompt)).await).await;
    wait_for_status(&t, 2, &["failed"]).await;
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
    json(t.create(request).await).await;
    let done = wait_for_status(&t, 1, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed");
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
    assert_eq!(done["pull_requests"], json!([]));

    let (status, doc) = json(post(&t, 1, "pull_requests", None).await).await;
    assert_eq!(status, 202, "{doc}");
    assert_eq!(
        doc["pull_requests"][0]["step_numbers"],
        json!(["1.1", "1.2", "2"])
    );
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
    let (status, _) = json(post(&t, 1, "pull_requests", None).await).await;
    assert_eq!(status, 202);
    assert_eq!(github.pulls("acme-corp", "backend").len(), 1);

    // A PR a person opens from a manual runbook's branch is linked through the webhook.
    let mut request = body(RENAME);
    request["pr_mode"] = json!("manual");
    json(t.create(request).await).await;
    wait_for_status(&t, 2, &["completed"]).await;
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
    let linked = wait_for(&t, 2, "the PR linked", |d| {
        d["pull_requests"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    assert_eq!(linked["pull_requests"][0]["number"], opened);
    assert_eq!(
        linked["pull_requests"][0]["step_numbers"],
        json!(["1.1", "1.2", "2"])
    );

    // Not for a runbook that opens its PRs itself.
    json(t.create(body(RENAME)).await).await;
    expect_error(post(&t, 3, "pull_requests", None).await, 409, "conflict").await;
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
    json(t.create(body(&prompt)).await).await;
    wait_for_status(&t, 1, &["completed"]).await;
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
    json(t.create(request).await).await;
    wait_for_status(&t, 2, &["completed"]).await;
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
    json(t.create(request).await).await;
    wait_for_status(&t, 1, &["completed"]).await;
    let stored = t.store.runbook(support::rn(1)).await.unwrap().unwrap();
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
    json(t.create(request).await).await;
    wait_for_status(&t, 2, &["completed"]).await;
    let stored = t.store.runbook(support::rn(2)).await.unwrap().unwrap();
    assert_eq!(
        (stored.pr_mode, stored.draft),
        (Some(runbooks::domain::PrMode::SinglePr), Some(false))
    );

    let mut request = body(prompt);
    request["repository"]["name"] = json!("broken");
    json(t.create(request).await).await;
    wait_for_status(&t, 3, &["failed"]).await;
    let error = steps(&t, 3).await["steps"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
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
    json(t.create(body(RENAME)).await).await;
    let done = wait_for_status(&t, 1, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(github.pulls("acme-corp", "backend").len(), 1);
    assert_eq!(
        done["pull_requests"][0]["step_numbers"],
        json!(["1.1", "1.2", "2"])
    );
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
    json(t.create(body(one_step)).await).await;
    let done = wait_for_status(&t, 1, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed");
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
    let doc = wait_for(&t, 1, "the PR listed", |d| {
        d["pull_requests"].as_array().is_some_and(|p| p.len() == 1)
    })
    .await;
    assert_eq!(doc["pull_requests"][0]["step_numbers"], json!(["1"]));
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
    json(t.create(request).await).await;
    let done = wait_for_status(&t, 1, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed");
    github
        .wait_until(Duration::from_secs(60), "both pull requests", |g| {
            g.pulls("acme-corp", "backend").len() == 2
        })
        .await
        .unwrap();
    let pulls = github.pulls("acme-corp", "backend");
    let base_of = |head: &str| {
        pulls
            .iter()
            .find(|p| p.head == head)
            .map(|p| p.base.clone())
            .unwrap()
    };
    assert_eq!(base_of("runbooks/1/step-1"), "main");
    assert_eq!(base_of("runbooks/1/step-2"), "runbooks/1/step-1");
    let doc = wait_for(&t, 1, "both PRs listed", |d| {
        d["pull_requests"].as_array().is_some_and(|p| p.len() == 2)
    })
    .await;
    // In the stack's order (its top-level steps'), whatever order they were opened in.
    let steps: Vec<&Value> = doc["pull_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["step_numbers"])
        .collect();
    assert_eq!(steps, [&json!(["1"]), &json!(["2"])], "{doc}");
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

both_backends!(
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
    json(t.create(request).await).await;
    wait_for_status(&t, 1, &["not_started"]).await;
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
    let (status, _) = json(post(&t, 1, "execute", None).await).await;
    assert_eq!(status, 202);
    let doc = wait_for_status(&t, 1, &["completed", "failed"]).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let tree = steps(&t, 1).await;
    let step = tree["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["number"] == "1.1")
        .unwrap()
        .clone();
    let sha = step["commit_sha"].as_str().unwrap().to_string();
    assert_ne!(sha, forged, "the forged commit was adopted: {tree}");
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
    json(t.create(body(one_step)).await).await;
    let done = wait_for_status(&t, 1, &["completed", "failed"]).await;
    assert_eq!(done["status"], "completed");
    // The debt is recorded with why it is not paid yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(owed) = t.store.owed(support::rn(1)).await.unwrap()
            && owed.attempts >= 1
        {
            assert!(
                owed.error.as_deref().unwrap_or("").contains("502"),
                "{owed:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed attempt recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    github
        .wait_until(Duration::from_secs(60), "the final pull request", |g| {
            g.pulls("acme-corp", "backend")
                .iter()
                .any(|p| !p.title.starts_with("[WIP]") && !p.draft)
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while t.store.owed(support::rn(1)).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the debt was never paid"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(github.pulls("acme-corp", "backend").len(), 1);
    t.stop().await;
}
