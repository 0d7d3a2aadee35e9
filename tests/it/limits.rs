//! Limits per organisation and fair sharing: `runbooks org set|show`, the work queue's order
//! and its `max_running` check, a spent budget refusing new runbooks (REST, GraphQL) and
//! stopping running ones until it is raised, `max_steps` failing a plan — on both databases,
//! without restarting the server.

use crate::support;
use crate::support::rn;

use std::process::{Command, Output};

use runbooks::domain::{LimitChanges, LimitValue, NewRunbook, OrgLimits, RunbookStatus};
use runbooks::store::Store;
use runbooks_standin::StandIn;
use serde_json::{Value, json};
use support::{Backend, LIB, RENAME, TestDb, server_for, wait_for, wait_for_status};

/// The stand-in with `acme-corp/backend` and `globex/backend`, the app on both.
async fn github() -> StandIn {
    let github =
        support::github_with_backend(&[("src/lib.rs", LIB), ("README.md", "# backend\n")]).await;
    github
        .create_repo("globex", "backend", "main", &[("README.md", "# globex\n")])
        .await
        .expect("the repository is created");
    github.install("globex", &["backend"]);
    github
}

fn body(org: &str, prompt: &str) -> Value {
    json!({"repository": {"org": org, "name": "backend"}, "prompt": prompt})
}

/// A one-step runbook that writes `file`.
fn one_step(file: &str) -> String {
    format!("## Execution Steps\n### Step 1: Write {file}\n```sh\necho {file} > {file}\n```\n")
}

async fn set(store: &dyn Store, org: &str, changes: LimitChanges) -> OrgLimits {
    store.update_org_limits(org, &changes).await.unwrap()
}

fn new_runbook(org: &str) -> NewRunbook {
    NewRunbook {
        org: org.into(),
        repo: "backend".into(),
        prompt: "p".into(),
        title: "A title".into(),
        oneshot: true,
        draft: None,
        pr_mode: None,
        target_branch: None,
        description: None,
        labels: vec![],
        author_email: None,
    }
}

/// Limits are kept per organisation, whatever the case of its name; the queue offers the
/// organisations in turn, leaves out an agent's work past `max_running`, and a claim past it
/// is refused even when asked for directly.
async fn the_queue_takes_organisations_in_turn_within_their_limits(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    assert_eq!(
        store.org_limits("acme").await.unwrap(),
        OrgLimits::default()
    );
    let limits = set(
        store.as_ref(),
        "ACME",
        LimitChanges {
            max_steps: Some(LimitValue::Set(5)),
            monthly_agent_ms: Some(LimitValue::Set(90_000)),
            ..LimitChanges::default()
        },
    )
    .await;
    assert_eq!(store.org_limits("acme").await.unwrap(), limits);
    let limits = set(
        store.as_ref(),
        "acme",
        LimitChanges {
            max_steps: Some(LimitValue::Remove),
            ..LimitChanges::default()
        },
    )
    .await;
    assert_eq!(
        limits,
        OrgLimits {
            monthly_agent_ms: Some(90_000),
            ..OrgLimits::default()
        },
        "what a change does not name is kept"
    );

    let mut acme = vec![];
    for _ in 0..3 {
        acme.push(
            store
                .create_runbook(&new_runbook("acme"), None)
                .await
                .unwrap(),
        );
    }
    let globex = store
        .create_runbook(&new_runbook("Globex"), None)
        .await
        .unwrap();
    assert_eq!(
        store.runbooks_with_work(1_000, 10).await.unwrap(),
        [acme[0], globex, acme[1], acme[2]],
        "each organisation's oldest first, then its next"
    );
    assert!(
        store
            .claim_runbook(acme[0], "w1", 1_000, 31_000)
            .await
            .unwrap()
    );
    assert_eq!(
        store.runbooks_with_work(1_000, 10).await.unwrap(),
        [globex, acme[1], acme[2]],
        "an organisation running fewer goes first"
    );
    assert!(
        store
            .claim_runbook(globex, "w2", 1_000, 31_000)
            .await
            .unwrap()
    );
    store.release_lease(acme[0], "w1").await.unwrap();
    store.release_lease(globex, "w2").await.unwrap();
    // Both run nothing now: the one whose last turn is older goes first.
    let globex2 = store
        .create_runbook(&new_runbook("globex"), None)
        .await
        .unwrap();
    assert_eq!(
        store.runbooks_with_work(2_000, 10).await.unwrap(),
        [acme[0], globex, acme[1], globex2, acme[2]],
    );
    assert!(
        store
            .claim_runbook(acme[1], "w1", 2_000, 32_000)
            .await
            .unwrap()
    );
    assert_eq!(
        store.runbooks_with_work(2_000, 10).await.unwrap()[0],
        globex,
        "acme's turn was the latest"
    );

    set(
        store.as_ref(),
        "acme",
        LimitChanges {
            max_running: Some(LimitValue::Set(1)),
            ..LimitChanges::default()
        },
    )
    .await;
    assert_eq!(
        store.runbooks_with_work(2_000, 10).await.unwrap(),
        [globex, globex2],
        "acme runs its one: its others wait"
    );
    assert!(
        !store
            .claim_runbook(acme[2], "w2", 2_000, 32_000)
            .await
            .unwrap(),
        "a claim past the limit is refused"
    );
    assert!(
        store
            .claim_runbook(acme[1], "w1", 3_000, 33_000)
            .await
            .unwrap(),
        "the holder keeps its own"
    );
    store.release_lease(acme[1], "w1").await.unwrap();
    assert_eq!(
        store.runbooks_with_work(3_000, 10).await.unwrap()[..2],
        [globex, acme[0]],
        "a place is free again: acme's oldest waiting one takes it"
    );
    assert!(
        store
            .claim_runbook(acme[2], "w2", 3_000, 33_000)
            .await
            .unwrap()
    );
    // An expired lease does not count as running.
    assert!(
        store
            .claim_runbook(acme[0], "w3", 40_000, 70_000)
            .await
            .unwrap()
    );
}

/// With `max_running` 1, a second runbook of the organisation waits, unplanned, while the
/// first runs (another organisation's runbook, created after it, runs meanwhile), and starts
/// when the first ends.
async fn a_runbook_over_max_running_waits_for_its_turn(backend: Backend) {
    let github = github().await;
    let mut t = server_for(&github, backend, |_| {}).await;
    t.token = support::create_token(&t.store, &["acme-corp", "globex"]).await;
    set(
        t.store.as_ref(),
        "acme-corp",
        LimitChanges {
            max_running: Some(LimitValue::Set(1)),
            ..LimitChanges::default()
        },
    )
    .await;
    let api = t.api();
    // Step 1 waits for a file the test writes into its working tree.
    let slow = "## Execution Steps\n### Step 1: Wait\n```sh\nwhile [ ! -e go ]; do sleep 0.05; done\nrm go\necho one > one.txt\n```\n";
    api.create(&body("acme-corp", slow)).await.expect("created");
    api.create(&body("acme-corp", &one_step("two.txt")))
        .await
        .expect("created");
    api.create(&body("globex", &one_step("three.txt")))
        .await
        .expect("created");
    wait_for(&t, 1, "its step to run", |d| d.steps.in_progress == 1).await;
    let other = wait_for_status(&t, 3, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(other.status, RunbookStatus::Completed);
    let waiting = api.runbook(2).await.unwrap();
    assert_eq!(
        waiting.status,
        RunbookStatus::GeneratingSteps,
        "not even planned while acme-corp runs its one: {waiting:?}"
    );
    assert_eq!(
        api.runbook(1).await.unwrap().status,
        RunbookStatus::InProgress
    );

    let tree = t.db.dir.path().join("data/worktrees/runbook-1/tree");
    std::fs::write(tree.join("go"), "").unwrap();
    let first = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(first.status, RunbookStatus::Completed);
    let second = wait_for_status(&t, 2, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(second.status, RunbookStatus::Completed);
    let ended = t.store.steps(rn(1)).await.unwrap()[0]
        .finished_at_ms
        .unwrap();
    let started = t.store.steps(rn(2)).await.unwrap()[0]
        .started_at_ms
        .unwrap();
    assert!(started >= ended, "the second started after the first ended");
    t.stop().await;
}

/// A spent budget: the running runbook's next step fails with the reason, new runbooks and
/// follow-ups get 402 `budget-exhausted` (REST and GraphQL); raising it lets a retry go on,
/// with the same server.
async fn a_spent_budget_stops_new_work_until_raised(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    // 60 ms of agent time a month: the first step spends it.
    set(
        t.store.as_ref(),
        "acme-corp",
        LimitChanges {
            monthly_agent_ms: Some(LimitValue::Set(60)),
            ..LimitChanges::default()
        },
    )
    .await;
    let prompt = "## Execution Steps\n### Step 1: Slow\n```sh\nsleep 0.2\necho a > a.txt\n```\n### Step 2: Next\n```sh\necho b > b.txt\n```\n";
    t.api()
        .create(&body("acme-corp", prompt))
        .await
        .expect("created");
    let failed = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(failed.status, RunbookStatus::Failed, "{failed:?}");
    assert_eq!((failed.steps.completed, failed.steps.failed), (1, 1));
    let steps = t.api().steps(1).await.unwrap();
    let error = steps[1].error.clone().expect("the reason");
    assert!(
        error.starts_with(
            "the organisation acme-corp's monthly budget of 0.001 agent minutes is spent ("
        ) && error.ends_with(
            "used this month); raise it with `runbooks org set acme-corp \
                 --monthly-agent-minutes …` and retry"
        ),
        "{error}"
    );

    let refusal = t
        .api()
        .create(&body("acme-corp", &one_step("c.txt")))
        .await
        .unwrap_err();
    assert_eq!(refusal.expect(402, "budget-exhausted"), error);
    let refusal = t
        .api()
        .follow_up(1, &json!({"prompt": one_step("d.txt")}))
        .await
        .unwrap_err();
    refusal.expect(402, "budget-exhausted");
    let answer: Value = t
        .http
        .post(t.url("/api/graphql"))
        .bearer_auth(&t.token)
        .json(&json!({
            "query": "mutation($input: CreateRunbookInput!) { createRunbook(input: $input) { number } }",
            "variables": {"input": {"repository": {"org": "acme-corp", "name": "backend"}, "prompt": "p"}}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "budget-exhausted",
        "{answer}"
    );
    assert_eq!(answer["errors"][0]["message"], error.as_str(), "{answer}");
    // Another organisation's budget is its own.
    let globex = support::create_token(&t.store, &["globex"]).await;
    t.api_as(&globex)
        .create(&body("globex", &one_step("g.txt")))
        .await
        .expect("globex has no budget");

    // A retry while the budget is still spent stops again, with the same reason.
    t.api().act(1, "retry", None).await.expect("retried");
    let mut watch = t.watch(1, std::time::Duration::from_secs(60));
    loop {
        let steps = t.store.steps(rn(1)).await.unwrap();
        if steps[1].state == runbooks::domain::StepState::Failed {
            break;
        }
        assert!(
            watch.next().await,
            "the retried step never stopped: {steps:?}"
        );
    }
    assert_eq!(
        t.api().steps(1).await.unwrap()[1].error.as_ref(),
        Some(&error)
    );

    // Raised (as `runbooks org set` does), without a restart: the retry goes on.
    set(
        t.store.as_ref(),
        "acme-corp",
        LimitChanges {
            monthly_agent_ms: Some(LimitValue::Set(3_600_000)),
            ..LimitChanges::default()
        },
    )
    .await;
    t.api().act(1, "retry", None).await.expect("retried");
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(done.status, RunbookStatus::Completed, "{done:?}");
    t.api()
        .create(&body("acme-corp", &one_step("e.txt")))
        .await
        .expect("created again");
    t.stop().await;
}

/// One worker, organisation A's six runbooks, then B's one: B's runs before A's last ones.
async fn organisations_share_the_workers_in_turn(backend: Backend) {
    let github = github().await;
    let mut t = server_for(&github, backend, |config| config.workers = 1).await;
    t.token = support::create_token(&t.store, &["acme-corp", "globex"]).await;
    let api = t.api();
    for i in 1..=6 {
        api.create(&body("acme-corp", &one_step(&format!("a{i}.txt"))))
            .await
            .expect("created");
    }
    api.create(&body("globex", &one_step("b.txt")))
        .await
        .expect("created");
    for number in 1..=7 {
        let done = wait_for_status(
            &t,
            number,
            &[RunbookStatus::Completed, RunbookStatus::Failed],
        )
        .await;
        assert_eq!(done.status, RunbookStatus::Completed, "{number}: {done:?}");
    }
    let mut started = vec![];
    for number in 1..=7 {
        started.push(
            t.store.steps(rn(number)).await.unwrap()[0]
                .started_at_ms
                .unwrap(),
        );
    }
    let order = {
        let mut numbers: Vec<usize> = (1..=7).collect();
        numbers.sort_by_key(|n| started[n - 1]);
        numbers
    };
    let b = order.iter().position(|n| *n == 7).unwrap();
    assert!(
        b < order.iter().position(|n| *n == 5).unwrap()
            && b < order.iter().position(|n| *n == 6).unwrap(),
        "globex's runbook ran before acme-corp's last ones: order {order:?}"
    );
    t.stop().await;
}

/// `max_steps`: a plan (or a follow-up's) with more leaf steps in all fails with the reason;
/// raised, a retry plans again.
async fn a_plan_over_max_steps_fails_with_the_reason(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    set(
        t.store.as_ref(),
        "acme-corp",
        LimitChanges {
            max_steps: Some(LimitValue::Set(2)),
            ..LimitChanges::default()
        },
    )
    .await;
    t.api()
        .create(&body("acme-corp", RENAME))
        .await
        .expect("created");
    let failed = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(failed.status, RunbookStatus::Failed);
    let steps = t.api().steps(1).await.unwrap();
    assert_eq!(steps.len(), 1, "no step of the plan was stored: {steps:?}");
    assert_eq!(
        steps[0].error.as_deref(),
        Some(
            "the plan has 3 steps, more than the 2 the organisation acme-corp allows a runbook; \
             raise it with `runbooks org set acme-corp --max-steps …` and retry"
        )
    );
    set(
        t.store.as_ref(),
        "acme-corp",
        LimitChanges {
            max_steps: Some(LimitValue::Set(3)),
            ..LimitChanges::default()
        },
    )
    .await;
    t.api().act(1, "retry", None).await.expect("retried");
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(done.status, RunbookStatus::Completed, "{done:?}");
    assert_eq!(done.steps.total, 3);

    // A follow-up's steps count with the runbook's.
    t.api()
        .follow_up(
            1,
            &json!({"prompt": "## Execution Steps\n### Step 3: More\n```sh\necho more > more.txt\n```\n"}),
        )
        .await
        .expect("accepted");
    let failed = wait_for_status(&t, 1, &[RunbookStatus::Failed]).await;
    assert_eq!(failed.steps.completed, 3);
    let steps = t.api().steps(1).await.unwrap();
    let last = steps.last().unwrap();
    assert!(
        last.error
            .as_deref()
            .is_some_and(|e| e.starts_with("the plan has 4 steps, more than the 3")),
        "{steps:?}"
    );
    t.stop().await;
}

fn runbooks(args: &[&str], database_url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runbooks"))
        .args(args)
        .env_remove("RUST_LOG")
        .env("RUNBOOKS_DATABASE_URL", database_url)
        .output()
        .expect("running the binary")
}

/// `runbooks org set` and `show`: values kept between calls, `none` removes one, fractional
/// minutes, and bad values refused with a clear error, changing nothing.
async fn org_set_and_show(backend: Backend) {
    let db = TestDb::new(backend).await;
    let out = |o: &Output| String::from_utf8_lossy(&o.stdout).to_string();
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).to_string();

    let set = runbooks(
        &[
            "org",
            "set",
            "Acme-Corp",
            "--max-running",
            "2",
            "--monthly-agent-minutes",
            "1.5",
        ],
        &db.url,
    );
    assert!(set.status.success(), "{}", err(&set));
    let set = runbooks(
        &[
            "org",
            "set",
            "acme-corp",
            "--max-steps",
            "40",
            "--monthly-tokens",
            "1000",
        ],
        &db.url,
    );
    assert!(set.status.success(), "{}", err(&set));
    let store = db.store().await;
    let wanted = OrgLimits {
        max_running: Some(2),
        max_steps: Some(40),
        monthly_tokens: Some(1000),
        monthly_agent_ms: Some(90_000),
    };
    assert_eq!(store.org_limits("ACME-CORP").await.unwrap(), wanted);

    let show = runbooks(&["org", "show", "acme-corp"], &db.url);
    assert!(show.status.success(), "{}", err(&show));
    let text = out(&show);
    for line in [
        "organisation acme-corp",
        "max-running            2",
        "max-steps              40",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("monthly-tokens         1000") && l.ends_with("(UTC): 0")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("monthly-agent-minutes  1.5") && l.ends_with("(UTC): 0")),
        "{text}"
    );

    for (args, message) in [
        (
            &["--max-running", "0"][..],
            "invalid value '0' for '--max-running <N|none>': must be at least 1",
        ),
        (&["--max-steps", "many"][..], "`many` is not a whole number"),
        (
            &["--monthly-tokens", "-5"][..],
            "`-5` is not a whole number",
        ),
        (
            &["--monthly-agent-minutes", "-1"][..],
            "must be a number of minutes, 0 or more",
        ),
        (&[][..], "nothing to change"),
    ] {
        let mut all = vec!["org", "set", "acme-corp"];
        all.extend_from_slice(args);
        let refused = runbooks(&all, &db.url);
        assert!(!refused.status.success(), "{args:?}");
        assert!(
            err(&refused).contains(message),
            "{args:?}: {}",
            err(&refused)
        );
        assert_eq!(
            store.org_limits("acme-corp").await.unwrap(),
            wanted,
            "{args:?} changed nothing"
        );
    }
    let bad_org = runbooks(&["org", "show", "not an org"], &db.url);
    assert!(!bad_org.status.success());
    assert!(err(&bad_org).contains("`ORG` must be a GitHub organisation name"));

    let removed = runbooks(
        &["org", "set", "acme-corp", "--max-running", "none"],
        &db.url,
    );
    assert!(removed.status.success(), "{}", err(&removed));
    assert!(out(&removed).contains("max-running            none"));
    assert_eq!(
        store.org_limits("acme-corp").await.unwrap(),
        OrgLimits {
            max_running: None,
            ..wanted
        }
    );
}

both_backends!(
    the_queue_takes_organisations_in_turn_within_their_limits,
    a_runbook_over_max_running_waits_for_its_turn,
    a_spent_budget_stops_new_work_until_raised,
    organisations_share_the_workers_in_turn,
    a_plan_over_max_steps_fails_with_the_reason,
    org_set_and_show,
);
