//! One store test suite, run against both backends: SQLite and PostgreSQL.

use crate::support;
use crate::support::rn;

use std::collections::BTreeSet;
use std::sync::Arc;

use runbooks::domain::{
    FollowUp, NewRunbook, Plan, PlannedStep, PrMode, PullState, RunbookStatus, StepKind,
    StepNumber, StepState, Usage,
};
use runbooks::store::{RunbookFilter, StepEnd, Store, StoreError};
use support::{Backend, TestDb};

fn new_runbook(org: &str, prompt: &str) -> NewRunbook {
    NewRunbook {
        org: org.into(),
        repo: "backend".into(),
        prompt: prompt.into(),
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

fn plan(numbers: &[&str]) -> Plan {
    Plan::new(
        numbers
            .iter()
            .map(|n| PlannedStep {
                number: n.parse().unwrap(),
                title: format!("Step {n}"),
                details: format!("details of {n}"),
            })
            .collect(),
    )
    .unwrap()
}

fn n(s: &str) -> StepNumber {
    s.parse().unwrap()
}

async fn tokens_are_hashed_scoped_and_revocable(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let a = store
        .create_token(
            "ci",
            &["Acme-Corp".into(), "other".into(), "acme-corp".into()],
            "hash-a",
        )
        .await
        .unwrap();
    assert_eq!(a.orgs, ["acme-corp", "other"], "lower-cased, de-duplicated");
    let b = store
        .create_token("", &["x".into()], "hash-b")
        .await
        .unwrap();
    assert_ne!(a.id, b.id);

    let found = store.active_token("hash-a").await.unwrap().unwrap();
    assert_eq!(found, a);
    assert!(store.active_token("nope").await.unwrap().is_none());

    assert!(store.revoke_token(a.id).await.unwrap());
    assert!(!store.revoke_token(a.id).await.unwrap(), "already revoked");
    assert!(!store.revoke_token(9999).await.unwrap());
    assert!(store.active_token("hash-a").await.unwrap().is_none());

    let listed = store.list_tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].revoked_at_ms.is_some());
    assert_eq!(listed[0].orgs, ["acme-corp", "other"]);
    assert_eq!(listed[1].revoked_at_ms, None);
}

async fn runbooks_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let token = store
        .create_token("t", &["acme".into()], "h")
        .await
        .unwrap();
    let new = NewRunbook {
        org: "acme".into(),
        repo: "backend".into(),
        prompt: "Upgrade React\nto v19".into(),
        title: "React v19 upgrade".into(),
        oneshot: false,
        draft: Some(true),
        pr_mode: Some(PrMode::StackedPr),
        target_branch: Some("develop".into()),
        description: Some("Prefix".into()),
        labels: vec!["deps".into(), "react".into()],
        author_email: Some("dev@acme.example".into()),
    };
    let number = store.create_runbook(&new, Some(token.id)).await.unwrap();
    assert_eq!(number, rn(1));
    let stored = store.runbook(number).await.unwrap().unwrap();
    assert_eq!(stored.org, "acme");
    assert_eq!(stored.prompt, new.prompt);
    assert_eq!(stored.title, new.title);
    assert!(!stored.oneshot);
    assert_eq!(stored.draft, Some(true));
    assert_eq!(stored.pr_mode, Some(PrMode::StackedPr));
    assert_eq!(stored.target_branch.as_deref(), Some("develop"));
    assert_eq!(stored.description.as_deref(), Some("Prefix"));
    assert_eq!(stored.labels, ["deps", "react"]);
    assert_eq!(stored.author_email.as_deref(), Some("dev@acme.example"));
    assert_eq!(stored.created_by_token, Some(token.id));

    let defaults = store
        .create_runbook(&new_runbook("acme", "x"), None)
        .await
        .unwrap();
    let stored = store.runbook(defaults).await.unwrap().unwrap();
    assert_eq!(
        (stored.draft, stored.pr_mode, stored.target_branch),
        (None, None, None)
    );
    assert!(store.runbook(rn(99)).await.unwrap().is_none());
    assert!(store.runbook_summary(rn(99)).await.unwrap().is_none());

    let summary = store.runbook_summary(number).await.unwrap().unwrap();
    assert_eq!(summary.status(), RunbookStatus::GeneratingSteps);
    assert_eq!(summary.counts.total, 0);
    assert!(summary.pull_requests.is_empty());
}

/// Many writers at once, through two separate pools (as two processes or replicas would):
/// every number from 1 to N exactly once.
async fn numbers_are_unique_and_consecutive_under_concurrency(backend: Backend) {
    let db = TestDb::new(backend).await;
    let first = db.store().await;
    let second = db.store().await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store: Arc<dyn Store> = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            store
                .create_runbook(&new_runbook("acme", &format!("task {i}")), None)
                .await
                .expect("a concurrent creation succeeds")
        }));
    }
    let mut numbers = BTreeSet::new();
    for task in tasks {
        assert!(
            numbers.insert(task.await.unwrap()),
            "a number was handed out twice"
        );
    }
    assert_eq!(numbers, (1..=60).map(support::rn).collect::<BTreeSet<_>>());
    let next = first
        .create_runbook(&new_runbook("acme", "after"), None)
        .await
        .unwrap();
    assert_eq!(next, rn(61));
}

async fn step_counts_follow_leaf_states(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let number = store
        .create_runbook(&new_runbook("acme", "p"), None)
        .await
        .unwrap();
    store
        .append_steps(number, &plan(&["1", "1.1", "1.2", "2", "3", "3.1"]))
        .await
        .unwrap();
    let summary = store.runbook_summary(number).await.unwrap().unwrap();
    assert_eq!(summary.counts.total, 4, "only leaves count");
    assert_eq!(summary.counts.not_started, 4);
    assert_eq!(summary.status(), RunbookStatus::NotStarted);

    assert!(
        store
            .set_step_state(number, &n("1.1"), StepState::Completed)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_step_state(number, &n("1.2"), StepState::InProgress)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_step_state(number, &n("2"), StepState::Queued)
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_step_state(number, &n("1"), StepState::Queued)
            .await
            .unwrap(),
        "a parent is not a leaf"
    );
    assert!(
        !store
            .set_step_state(number, &n("9"), StepState::Queued)
            .await
            .unwrap()
    );
    let counts = store.runbook_summary(number).await.unwrap().unwrap().counts;
    assert_eq!(
        (
            counts.total,
            counts.completed,
            counts.in_progress,
            counts.queued,
            counts.not_started,
            counts.failed
        ),
        (4, 1, 1, 1, 1, 0)
    );
    assert_eq!(
        store
            .runbook_summary(number)
            .await
            .unwrap()
            .unwrap()
            .status(),
        RunbookStatus::InProgress
    );

    store
        .set_step_state(number, &n("1.2"), StepState::Failed)
        .await
        .unwrap();
    assert_eq!(
        store
            .runbook_summary(number)
            .await
            .unwrap()
            .unwrap()
            .status(),
        RunbookStatus::Failed
    );

    let steps = store.steps(number).await.unwrap();
    let order: Vec<String> = steps.iter().map(|s| s.number.to_string()).collect();
    assert_eq!(order, ["1", "1.1", "1.2", "2", "3", "3.1"]);
    assert!(!steps[0].is_leaf && steps[1].is_leaf);
    assert_eq!(steps[1].details, "details of 1.1");

    // A follow-up plan continues after the existing steps, in plan order.
    let more = Plan::continuing(
        vec![PlannedStep {
            number: n("4"),
            title: "More".into(),
            details: String::new(),
        }],
        3,
    )
    .unwrap();
    store.append_steps(number, &more).await.unwrap();
    let last = store.steps(number).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.number.to_string(), last.state),
        ("4".to_string(), StepState::NotStarted)
    );
}

async fn pull_requests_are_listed_once_with_their_leaves(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let number = store
        .create_runbook(&new_runbook("acme", "p"), None)
        .await
        .unwrap();
    store
        .append_steps(number, &plan(&["1", "1.1", "1.2", "2", "2.1", "3"]))
        .await
        .unwrap();
    store
        .record_pull_request(
            number,
            12,
            "https://github.com/acme/backend/pull/12",
            &[n("1.2"), n("1.1")],
        )
        .await
        .unwrap();
    store
        .record_pull_request(
            number,
            15,
            "https://github.com/acme/backend/pull/15",
            &[n("2.1")],
        )
        .await
        .unwrap();
    // Recording the same PR again (a retry) adds steps, never a second entry.
    store
        .record_pull_request(
            number,
            12,
            "https://github.com/acme/backend/pull/12",
            &[n("1.1")],
        )
        .await
        .unwrap();
    let prs = store
        .runbook_summary(number)
        .await
        .unwrap()
        .unwrap()
        .pull_requests;
    assert_eq!(prs.len(), 2);
    assert_eq!(prs[0].number, 12);
    assert_eq!(prs[0].step_numbers, ["1.1", "1.2"], "in plan order");
    assert_eq!(prs[1].number, 15);
    assert_eq!(prs[1].url, "https://github.com/acme/backend/pull/15");
    assert_eq!(prs[1].step_numbers, ["2.1"]);
}

async fn follow_ups_update_description_and_merge_labels(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut new = new_runbook("acme", "p");
    new.labels = vec!["deps".into(), "react".into()];
    new.description = Some("Old".into());
    let number = store.create_runbook(&new, None).await.unwrap();

    let follow_up = FollowUp {
        prompt: "Also the lock file".into(),
        description: None,
        labels: vec!["React".into(), "lockfile".into()],
    };
    assert!(store.add_follow_up(number, &follow_up).await.unwrap());
    let stored = store.runbook(number).await.unwrap().unwrap();
    assert_eq!(
        stored.description.as_deref(),
        Some("Old"),
        "kept when not given"
    );
    assert_eq!(stored.labels, ["deps", "react", "lockfile"]);

    let second = FollowUp {
        prompt: "And docs".into(),
        description: Some("New".into()),
        labels: vec![],
    };
    assert!(store.add_follow_up(number, &second).await.unwrap());
    let stored = store.runbook(number).await.unwrap().unwrap();
    assert_eq!(stored.description.as_deref(), Some("New"));
    assert_eq!(stored.labels, ["deps", "react", "lockfile"]);

    let pending = store.pending_follow_ups(number).await.unwrap();
    let prompts: Vec<_> = pending.iter().map(|f| f.prompt.as_str()).collect();
    assert_eq!(prompts, ["Also the lock file", "And docs"]);

    assert!(!store.add_follow_up(rn(404), &second).await.unwrap());
}

async fn migrations_run_once_and_data_survives_reopening(backend: Backend) {
    let db = TestDb::new(backend).await;
    let number = {
        let store = db.store().await;
        store
            .create_runbook(&new_runbook("acme", "p"), None)
            .await
            .unwrap()
    };
    let reopened = db.store().await;
    reopened.migrate().await.unwrap();
    assert!(reopened.runbook(number).await.unwrap().is_some());
    reopened.ping().await.unwrap();
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(reopened.backend(), expected);
}

async fn leases_are_exclusive_until_they_expire(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let a = store
        .create_runbook(&new_runbook("acme", "a"), None)
        .await
        .unwrap();
    let b = store
        .create_runbook(&new_runbook("acme", "b"), None)
        .await
        .unwrap();
    assert_eq!(
        store.runbooks_with_work(1_000, 10).await.unwrap(),
        [a, b],
        "both need a plan"
    );

    assert!(store.claim_runbook(a, "w1", 1_000, 31_000).await.unwrap());
    assert!(
        !store.claim_runbook(a, "w2", 2_000, 32_000).await.unwrap(),
        "held by w1"
    );
    assert!(
        store.claim_runbook(a, "w1", 2_000, 32_000).await.unwrap(),
        "the holder may claim again"
    );
    assert_eq!(
        store.runbooks_with_work(2_000, 10).await.unwrap(),
        [b],
        "a leased runbook is not offered"
    );
    assert!(store.renew_lease(a, "w1", 60_000).await.unwrap());
    assert!(!store.renew_lease(a, "w2", 60_000).await.unwrap());
    // w1 dies: after expiry, w2 takes over.
    assert!(!store.claim_runbook(a, "w2", 59_000, 90_000).await.unwrap());
    assert!(store.claim_runbook(a, "w2", 60_001, 90_000).await.unwrap());
    assert!(
        !store.renew_lease(a, "w1", 120_000).await.unwrap(),
        "w1 lost it"
    );
    store.release_lease(a, "w2").await.unwrap();
    assert!(store.claim_runbook(a, "w3", 60_002, 90_000).await.unwrap());
}

/// A runbook's debt to GitHub: owed before work, paid only for the version that was brought
/// up to date, kept with a backoff when paying fails, and work for a worker while it is due.
async fn debts_to_github_are_kept_until_paid(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let a = store
        .create_runbook(&new_runbook("acme", "a"), None)
        .await
        .unwrap();
    store
        .record_plan(a, &plan(&["1"]), StepState::NotStarted, None)
        .await
        .unwrap();
    assert!(
        store
            .runbooks_with_work(1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.owed(a).await.unwrap(), None);

    let first = store.owe(a).await.unwrap();
    assert_eq!(
        store.runbooks_with_work(1_000, 10).await.unwrap(),
        [a],
        "a debt is work"
    );
    // A newer change while the first was being paid: paying the first leaves the debt.
    let second = store.owe(a).await.unwrap();
    assert!(second > first);
    assert!(!store.settle_owed(a, first).await.unwrap());
    assert_eq!(store.owed(a).await.unwrap().unwrap().version, second);

    // A failed attempt puts the debt off; it is offered again once due.
    let attempts = store
        .owed_failed(a, "GitHub answered 502", &|attempts| {
            1_000 + attempts * 10_000
        })
        .await
        .unwrap();
    assert_eq!(attempts, 1);
    let owed = store.owed(a).await.unwrap().unwrap();
    assert_eq!((owed.attempts, owed.not_before_ms), (1, 11_000));
    assert_eq!(owed.error.as_deref(), Some("GitHub answered 502"));
    assert!(
        store
            .runbooks_with_work(5_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not yet due"
    );
    assert_eq!(store.runbooks_with_work(11_000, 10).await.unwrap(), [a]);
    let attempts = store
        .owed_failed(a, "again", &|attempts| 1_000 + attempts * 10_000)
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    // While it is held, a debt is not offered to another worker.
    assert!(store.claim_runbook(a, "w1", 30_000, 60_000).await.unwrap());
    assert!(
        store
            .runbooks_with_work(30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.release_lease(a, "w1").await.unwrap();

    assert!(store.settle_owed(a, second).await.unwrap());
    assert_eq!(store.owed(a).await.unwrap(), None);
    assert!(
        store
            .runbooks_with_work(100_000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A manual runbook's PR, once asked for, stays asked for.
    assert!(
        !store
            .runbook(a)
            .await
            .unwrap()
            .unwrap()
            .pull_request_requested
    );
    store.request_pull_request(a).await.unwrap();
    store.request_pull_request(a).await.unwrap();
    assert!(
        store
            .runbook(a)
            .await
            .unwrap()
            .unwrap()
            .pull_request_requested
    );

    // Pull requests placed by position (a stack's top-level step), whatever the order they
    // are recorded in; a base remembered.
    store
        .record_pull_request_at(
            a,
            12,
            "https://github.example/pull/12",
            &["1".parse().unwrap()],
            Some(3),
        )
        .await
        .unwrap();
    store
        .record_pull_request_at(a, 11, "https://github.example/pull/11", &[], Some(1))
        .await
        .unwrap();
    store
        .set_pull_request_base(a, 12, "runbooks/1/step-1")
        .await
        .unwrap();
    let records = store.pull_request_records(a).await.unwrap();
    let order: Vec<u64> = records.iter().map(|r| r.number).collect();
    assert_eq!(order, [11, 12]);
    assert_eq!(records[1].base.as_deref(), Some("runbooks/1/step-1"));
    assert_eq!(records[0].base, None);
}

async fn plans_failures_and_transitions(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let number = store
        .create_runbook(&new_runbook("acme", "p"), None)
        .await
        .unwrap();
    store
        .record_plan(
            number,
            &plan(&["1", "1.1", "1.2", "2"]),
            StepState::Queued,
            None,
        )
        .await
        .unwrap();
    let states = |steps: Vec<runbooks::store::StepRecord>| -> Vec<(String, StepState)> {
        steps
            .into_iter()
            .filter(|s| s.is_leaf)
            .map(|s| (s.number.to_string(), s.state))
            .collect()
    };
    assert_eq!(
        states(store.steps(number).await.unwrap()),
        [
            ("1.1".into(), StepState::Queued),
            ("1.2".into(), StepState::Queued),
            ("2".into(), StepState::Queued)
        ]
    );
    assert_eq!(
        store.steps(number).await.unwrap()[0].state,
        StepState::NotStarted,
        "parents do not run"
    );
    assert_eq!(store.runbooks_with_work(0, 10).await.unwrap(), [number]);

    let moved = store
        .transition_steps(
            number,
            &[n("1.1")],
            &[StepState::Queued],
            StepState::InProgress,
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);
    let again = store
        .transition_steps(
            number,
            &[n("1.1")],
            &[StepState::Queued],
            StepState::InProgress,
        )
        .await
        .unwrap();
    assert_eq!(again, 0, "only from the expected state");
    store
        .finish_step(
            number,
            &n("1.1"),
            &StepEnd::Completed {
                commit_sha: Some("abc".into()),
                log: "ok".into(),
            },
            &Usage {
                wall_ms: 1500,
                agent_cpu_ms: 300,
                prompt_tokens: Some(1000),
                completion_tokens: Some(200),
            },
        )
        .await
        .unwrap();
    store
        .transition_steps(
            number,
            &[n("1.2")],
            &[StepState::Queued],
            StepState::InProgress,
        )
        .await
        .unwrap();
    store
        .finish_step(
            number,
            &n("1.2"),
            &StepEnd::Failed {
                error: "exit 1".into(),
                log: "tail".into(),
            },
            &Usage {
                wall_ms: 500,
                agent_cpu_ms: 100,
                prompt_tokens: None,
                completion_tokens: None,
            },
        )
        .await
        .unwrap();
    let steps = store.steps(number).await.unwrap();
    assert_eq!(
        states(steps.clone()),
        [
            ("1.1".into(), StepState::Completed),
            ("1.2".into(), StepState::Failed),
            ("2".into(), StepState::NotStarted)
        ],
        "a failure returns the queued steps to not_started"
    );
    assert_eq!(steps[1].commit_sha.as_deref(), Some("abc"));
    assert_eq!(steps[1].log.as_deref(), Some("ok"));
    assert_eq!(steps[2].error.as_deref(), Some("exit 1"));
    assert_eq!(steps[0].usage, None, "a parent never runs");
    assert_eq!(steps[1].usage.unwrap().prompt_tokens, Some(1000));
    assert_eq!(steps[2].usage.unwrap().wall_ms, 500);
    assert_eq!(steps[2].usage.unwrap().completion_tokens, None);
    // The organisation's use, by name without regard to case, since a moment.
    let used = store.org_usage_since("ACME", 0).await.unwrap();
    assert_eq!(
        used,
        Usage {
            wall_ms: 2000,
            agent_cpu_ms: 400,
            prompt_tokens: Some(1000),
            completion_tokens: Some(200),
        }
    );
    assert_eq!(
        store.org_usage_since("other", 0).await.unwrap(),
        Usage::default()
    );
    assert_eq!(
        store.org_usage_since("acme", i64::MAX).await.unwrap(),
        Usage::default(),
        "only steps finished since then"
    );
    // Planning by a model: kept per runbook (every planning together) and counted in the
    // organisation's use; a runbook no model planned has none.
    assert_eq!(store.plan_usage(number).await.unwrap(), None);
    let planned = Usage {
        wall_ms: 300,
        agent_cpu_ms: 0,
        prompt_tokens: Some(50),
        completion_tokens: Some(5),
    };
    store.record_plan_usage(number, &planned).await.unwrap();
    let unknown = Usage {
        wall_ms: 100,
        ..Usage::default()
    };
    store.record_plan_usage(number, &unknown).await.unwrap();
    assert_eq!(
        store.plan_usage(number).await.unwrap(),
        Some(Usage {
            wall_ms: 400,
            ..planned
        })
    );
    assert_eq!(
        store.org_usage_since("Acme", 0).await.unwrap(),
        Usage {
            wall_ms: 2400,
            agent_cpu_ms: 400,
            prompt_tokens: Some(1050),
            completion_tokens: Some(205),
        }
    );
    assert_eq!(
        store.org_usage_since("acme", i64::MAX).await.unwrap(),
        Usage::default(),
        "only planning done since then"
    );
    assert!(
        store.runbooks_with_work(0, 10).await.unwrap().is_empty(),
        "a failed runbook waits"
    );

    // A follow-up whose plan fails: a failed `plan` step after the others, and the follow-up
    // is processed (no endless re-planning).
    store.add_follow_up_prompt(number, "more").await.unwrap();
    let pending = store.pending_follow_ups(number).await.unwrap();
    assert_eq!(store.runbooks_with_work(0, 10).await.unwrap(), [number]);
    store
        .record_plan_failure(number, 2, "more", "no steps", Some(pending[0].id))
        .await
        .unwrap();
    let last = store.steps(number).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.number.to_string(), last.kind.as_str(), last.state),
        ("3".into(), "plan", StepState::Failed)
    );
    assert_eq!(last.details, "more");
    assert!(store.pending_follow_ups(number).await.unwrap().is_empty());
    assert_eq!(store.remove_plan_failures(number).await.unwrap(), 1);

    assert!(!store.cancel_requested(number).await.unwrap());
    store.set_cancel_requested(number, true).await.unwrap();
    assert!(store.cancel_requested(number).await.unwrap());
    store.set_cancel_requested(number, false).await.unwrap();
    assert!(!store.cancel_requested(number).await.unwrap());
}

/// Listings for GraphQL and the dashboard: pages newest first, scoped to organisations,
/// filtered, and their steps, pull requests and threads read in one query each.
async fn listings_are_scoped_paged_and_batched(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut numbers = Vec::new();
    for (org, repo) in [
        ("Acme", "backend"),
        ("acme", "web"),
        ("other", "backend"),
        ("acme", "backend"),
    ] {
        let mut new = new_runbook(org, "p");
        new.repo = repo.into();
        numbers.push(store.create_runbook(&new, None).await.unwrap());
    }
    let acme = RunbookFilter {
        visible_orgs: vec!["acme".into()],
        ..RunbookFilter::default()
    };
    let listed = |records: Vec<runbooks::store::RunbookRecord>| {
        records.iter().map(|r| r.number.get()).collect::<Vec<_>>()
    };
    assert_eq!(
        listed(store.list_runbooks(&acme, None, 10).await.unwrap()),
        [4, 2, 1]
    );
    assert_eq!(
        listed(store.list_runbooks(&acme, None, 2).await.unwrap()),
        [4, 2]
    );
    assert_eq!(
        listed(store.list_runbooks(&acme, Some(rn(2)), 10).await.unwrap()),
        [1]
    );
    let backend_only = RunbookFilter {
        repository: Some("BACKEND".into()),
        ..acme.clone()
    };
    assert_eq!(
        listed(store.list_runbooks(&backend_only, None, 10).await.unwrap()),
        [4, 1]
    );
    // An organisation outside the reader's is never listed, even when asked for.
    let other = RunbookFilter {
        org: Some("other".into()),
        ..acme.clone()
    };
    assert!(
        store
            .list_runbooks(&other, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_runbooks(&RunbookFilter::default(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    store
        .append_steps(rn(1), &plan(&["1", "1.1", "2"]))
        .await
        .unwrap();
    store.append_steps(rn(4), &plan(&["1"])).await.unwrap();
    store
        .record_pull_request(
            rn(1),
            7,
            "https://github.com/acme/backend/pull/7",
            &[n("2"), n("1.1")],
        )
        .await
        .unwrap();
    let [one, two, four] = [1, 2, 4].map(support::rn);
    let steps = store.steps_of(&[one, two, four]).await.unwrap();
    assert_eq!(steps[&one].len(), 3);
    assert_eq!(steps[&one][1].number, n("1.1"));
    assert_eq!(steps[&four].len(), 1);
    assert!(!steps.contains_key(&two));
    let pulls = store.pull_requests_of(&[one, four]).await.unwrap();
    assert_eq!(pulls[&one].len(), 1);
    assert_eq!(pulls[&one][0].record.number, 7);
    assert_eq!(pulls[&one][0].step_numbers, ["1.1", "2"]);
    assert!(!pulls.contains_key(&four));
    assert!(store.threads_of(&[one, four]).await.unwrap().is_empty());
    assert!(store.steps_of(&[]).await.unwrap().is_empty());
}

/// Runs one statement on the test database, behind the store's back.
async fn execute(db: &TestDb, sql: &str) {
    if db.url.starts_with("sqlite") {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

async fn kinds_and_pull_states_are_stored_by_name(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let number = store
        .create_runbook(&new_runbook("acme", "p"), None)
        .await
        .unwrap();
    store.append_steps(number, &plan(&["1"])).await.unwrap();
    store
        .record_plan_failure(number, 1, "more", "no steps", None)
        .await
        .unwrap();
    let kinds: Vec<StepKind> = store
        .steps(number)
        .await
        .unwrap()
        .iter()
        .map(|s| s.kind)
        .collect();
    assert_eq!(kinds, [StepKind::Work, StepKind::Plan]);
    store
        .record_pull_request(number, 5, "https://example.test/pull/5", &[n("1")])
        .await
        .unwrap();
    let state = |records: Vec<runbooks::store::PullRecord>| records[0].state;
    assert_eq!(
        state(store.pull_request_records(number).await.unwrap()),
        PullState::Open
    );
    store
        .set_pull_request_state(number, 5, PullState::Merged)
        .await
        .unwrap();
    assert_eq!(
        state(store.pull_request_records(number).await.unwrap()),
        PullState::Merged
    );
    let pulls = store.pull_requests_of(&[number]).await.unwrap();
    assert_eq!(pulls[&number][0].record.state, PullState::Merged);

    // What this version cannot read is reported, not guessed.
    execute(&db, "UPDATE pull_requests SET state = 'draft'").await;
    for err in [
        store.pull_request_records(number).await.err(),
        store.pull_requests_of(&[number]).await.err(),
    ]
    .map(Option::unwrap)
    {
        assert!(
            matches!(&err, StoreError::Corrupt(m) if m.contains("`draft`")),
            "{err}"
        );
    }
    execute(&db, "UPDATE steps SET kind = 'review'").await;
    let err = store.steps(number).await.err().unwrap();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("`review`")),
        "{err}"
    );
}

/// A runbook's setup: none until the plan keeps one, not reported until it runs, then its
/// last run.
async fn setups_are_kept_and_reported(backend: Backend) {
    use runbooks::domain::{
        CacheConfig, CacheOutcome, OnFailure, SetupConfig, SetupReport, SetupStatus,
    };
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let number = store
        .create_runbook(&new_runbook("acme", "x"), None)
        .await
        .unwrap();
    let report = SetupReport {
        status: SetupStatus::InProgress,
        cache: CacheOutcome::Miss,
        log: String::new(),
        wall_ms: 0,
    };
    // Nothing to record for a runbook without a setup.
    store.record_setup(number, &report).await.unwrap();
    assert_eq!(store.setup_config(number).await.unwrap(), None);
    assert_eq!(store.setup_report(number).await.unwrap(), None);

    let config = SetupConfig {
        commands: vec!["npm ci".into(), "make tools".into()],
        on_failure: OnFailure::Warn,
        cache: Some(CacheConfig {
            keys: vec!["package-lock.json".into()],
            paths: vec!["node_modules".into()],
        }),
    };
    store.set_setup_config(number, &config).await.unwrap();
    assert_eq!(
        store.setup_config(number).await.unwrap(),
        Some(config.clone())
    );
    assert_eq!(store.setup_report(number).await.unwrap(), None);

    store.record_setup(number, &report).await.unwrap();
    assert_eq!(store.setup_report(number).await.unwrap(), Some(report));
    let done = SetupReport {
        status: SetupStatus::Failed,
        cache: CacheOutcome::Miss,
        log: "$ npm ci\nnpm ERR!\n".into(),
        wall_ms: 1234,
    };
    store.record_setup(number, &done).await.unwrap();
    assert_eq!(
        store.setup_report(number).await.unwrap(),
        Some(done.clone())
    );
    // Keeping the setup again (a new plan) keeps what it did.
    store.set_setup_config(number, &config).await.unwrap();
    assert_eq!(store.setup_report(number).await.unwrap(), Some(done));

    execute(&db, "UPDATE runbook_setup SET status = 'done'").await;
    let err = store.setup_report(number).await.err().unwrap();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("`done`")),
        "{err}"
    );
}

both_backends!(
    setups_are_kept_and_reported,
    tokens_are_hashed_scoped_and_revocable,
    runbooks_round_trip,
    numbers_are_unique_and_consecutive_under_concurrency,
    step_counts_follow_leaf_states,
    pull_requests_are_listed_once_with_their_leaves,
    follow_ups_update_description_and_merge_labels,
    migrations_run_once_and_data_survives_reopening,
    leases_are_exclusive_until_they_expire,
    debts_to_github_are_kept_until_paid,
    plans_failures_and_transitions,
    listings_are_scoped_paged_and_batched,
    kinds_and_pull_states_are_stored_by_name,
);

#[tokio::test]
async fn sqlite_uses_wal_mode() {
    let db = TestDb::new(Backend::Sqlite).await;
    let _store = db.store().await;
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn an_unknown_database_scheme_is_a_clear_error() {
    let err = runbooks::store::connect("mysql://localhost/x")
        .await
        .err()
        .expect("an error");
    assert!(
        err.to_string().contains("sqlite:// or postgres://"),
        "{err}"
    );
}
