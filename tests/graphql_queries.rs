//! A page of runbooks costs the same few SQL statements whatever its size: the statements
//! the database really executed are counted (sqlx reports each one as a tracing event with
//! the target `sqlx::query`), with a counting subscriber installed for this whole test
//! binary — which therefore holds this one test only.

mod support;

use std::sync::Mutex;

use runbooks::domain::{NewRunbook, Plan, PlannedStep, StepNumber, StepState};
use runbooks::store::{NewThread, StepEnd};
use serde_json::{Value, json};
use support::{Backend, TestServer};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The statements executed since the last [`take`], in order.
static STATEMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The statements recorded since the last call, without a new connection's own setup
/// (`PRAGMA journal_mode = WAL; …`): when requests overlap on a busy machine the pool opens
/// a connection, which says nothing about what a page costs.
fn take() -> Vec<String> {
    std::mem::take(&mut *STATEMENTS.lock().unwrap())
        .into_iter()
        .filter(|statement| !statement.starts_with("PRAGMA "))
        .collect()
}

/// Records the summary of every statement sqlx reports.
struct CountStatements;

struct Summary(Option<String>);

impl Visit for Summary {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "summary" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: Subscriber> Layer<S> for CountStatements {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut summary = Summary(None);
        event.record(&mut summary);
        STATEMENTS
            .lock()
            .unwrap()
            .push(summary.0.unwrap_or_else(|| "?".into()));
    }
}

fn install() {
    let layer = CountStatements.with_filter(tracing_subscriber::filter::filter_fn(|meta| {
        meta.target() == "sqlx::query"
    }));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the only subscriber of this binary");
}

fn n(s: &str) -> StepNumber {
    s.parse().unwrap()
}

/// `count` runbooks started from comments, each with a plan of 3 leaves (one done with a
/// commit, one failed, one waiting), a pull request and a status comment.
async fn seed(t: &TestServer, count: u64) {
    let plan = Plan::new(
        ["1", "1.1", "1.2", "2"]
            .iter()
            .map(|n| PlannedStep {
                number: n.parse().unwrap(),
                title: format!("Step {n}"),
                details: String::new(),
            })
            .collect(),
    )
    .unwrap();
    for i in 1..=count {
        let new = NewRunbook {
            org: "acme-corp".into(),
            repo: "backend".into(),
            prompt: format!("task {i}"),
            title: format!("Task {i}"),
            oneshot: true,
            draft: None,
            pr_mode: None,
            target_branch: Some("main".into()),
            description: None,
            labels: vec!["runbook".into()],
            author_email: None,
        };
        let thread = NewThread {
            repository: "acme-corp/backend".into(),
            issue_number: i,
            is_pull_request: false,
            url: format!("https://github.com/acme-corp/backend/issues/{i}"),
            command_comment_id: 1000 + i,
            requested_by: "octocat".into(),
            context: None,
        };
        let (number, _) = t
            .store
            .create_runbook_in_thread(&new, &thread)
            .await
            .unwrap();
        t.store.append_steps(number, &plan).await.unwrap();
        for step in ["1.1", "1.2"] {
            t.store
                .transition_steps(
                    number,
                    &[n(step)],
                    &[StepState::NotStarted],
                    StepState::InProgress,
                )
                .await
                .unwrap();
        }
        t.store
            .finish_step(
                number,
                &n("1.1"),
                &StepEnd::Completed {
                    commit_sha: Some(format!("{i:040}")),
                    log: "ok".into(),
                },
                &runbooks::domain::Usage::default(),
            )
            .await
            .unwrap();
        t.store
            .finish_step(
                number,
                &n("1.2"),
                &StepEnd::Failed {
                    error: "exit status 1".into(),
                    log: "tail".into(),
                },
                &runbooks::domain::Usage::default(),
            )
            .await
            .unwrap();
        t.store
            .record_pull_request(
                number,
                100 + i,
                &format!("https://github.com/acme-corp/backend/pull/{}", 100 + i),
                &[n("1.1")],
            )
            .await
            .unwrap();
        t.store
            .set_status_comment(
                number,
                5000 + i,
                &format!("https://github.com/acme-corp/backend/issues/{i}#issuecomment-1"),
                "status",
            )
            .await
            .unwrap();
    }
}

const PAGE: &str = "query($first: Int!) {
  runbooks(first: $first) {
    edges { cursor node {
      number url title status labels
      stepCounts { total notStarted queued inProgress completed failed }
      steps { number title leaf status commitSha error startedAt finishedAt pullRequestNumber }
      pullRequests { number url state draft stepNumbers }
      thread { url issueNumber isPullRequest requestedBy statusCommentUrl }
      repository { org name }
    } }
    pageInfo { hasNextPage endCursor }
  }
}";

/// Runs the page query; answers the runbooks it listed and the statements it cost.
async fn page(t: &TestServer, first: usize) -> (Vec<Value>, Vec<String>) {
    take();
    let response = t
        .http
        .post(t.url("/api/graphql"))
        .bearer_auth(&t.token)
        .json(&json!({"query": PAGE, "variables": {"first": first}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let statements = take();
    assert!(answer.get("errors").is_none(), "{answer}");
    let nodes = answer["data"]["runbooks"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    (nodes, statements)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_runbooks_costs_a_constant_number_of_statements() {
    install();
    let t = TestServer::start(Backend::Sqlite).await;
    seed(&t, 30).await;
    // Once to settle the server (the token cached, connections open).
    page(&t, 25).await;

    let (five, for_five) = page(&t, 5).await;
    let (twenty_five, for_twenty_five) = page(&t, 25).await;
    println!(
        "SQL statements for a page of 5 runbooks with steps, pull requests and threads: {}",
        for_five.len()
    );
    for statement in &for_five {
        println!("  {statement}");
    }
    println!(
        "SQL statements for a page of 25 runbooks with steps, pull requests and threads: {}",
        for_twenty_five.len()
    );
    for statement in &for_twenty_five {
        println!("  {statement}");
    }

    // The answers are complete…
    assert_eq!(five.len(), 5);
    assert_eq!(twenty_five.len(), 25);
    for node in &twenty_five {
        assert_eq!(node["status"], "FAILED", "{node}");
        assert_eq!(node["steps"].as_array().unwrap().len(), 4, "{node}");
        assert_eq!(node["stepCounts"]["total"], 3);
        assert_eq!(node["pullRequests"].as_array().unwrap().len(), 1, "{node}");
        assert!(node["thread"]["statusCommentUrl"].is_string(), "{node}");
        assert!(node["steps"][1]["commitSha"].is_string(), "{node}");
    }
    assert_eq!(twenty_five[0]["number"], 30, "newest first");
    // …and cost the same few statements: the token confirmed, the page, then its steps,
    // pull requests and threads, one statement each.
    assert_eq!(
        for_five.len(),
        for_twenty_five.len(),
        "5: {for_five:#?}\n25: {for_twenty_five:#?}"
    );
    assert!(
        (4..=5).contains(&for_twenty_five.len()),
        "{for_twenty_five:#?}"
    );

    // One runbook by number, with everything on it: as few.
    take();
    let response = t
        .http
        .post(t.url("/api/graphql"))
        .bearer_auth(&t.token)
        .json(&json!({"query": "{ runbook(number: 7) { number status stepCounts { total } steps { number status } pullRequests { number } thread { url } } }"}))
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    let for_one = take();
    assert_eq!(answer["data"]["runbook"]["number"], 7, "{answer}");
    println!(
        "SQL statements for one runbook with steps, pull requests and thread: {}",
        for_one.len()
    );
    assert!((4..=5).contains(&for_one.len()), "{for_one:#?}");
    t.stop().await;
}
