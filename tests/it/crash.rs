//! Crash safety: `kill -9` in the middle of a step, then a restart — the runbook finishes,
//! nothing is lost and no step's commit appears twice.

use crate::support;
use crate::support::rn;

use std::time::Duration;

use runbooks_standin::StandIn;
use std::sync::Arc;

use runbooks::api::runbooks::RunbookDocument;
use runbooks::domain::{RunbookStatus, StepNumber, StepState};
use runbooks::store::Store;
use serde_json::json;
use support::{Backend, Served, TestDb};

/// `runbooks serve` as a child process configured as the stand-in's app.
/// Where the test leaves signals for jailed steps: the only directory outside their trees
/// they may read (`RUNBOOKS_AGENT_READ_PATHS`).
fn markers(db: &TestDb) -> std::path::PathBuf {
    let dir = db.dir.path().join("markers");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn serve(db: &TestDb, github: &StandIn) -> Served {
    let (api_url, app_id) = (github.api_url(), github.app_id().to_string());
    let markers = markers(db).display().to_string();
    Served::start(
        db,
        &[
            ("RUNBOOKS_AGENT_READ_PATHS", &markers),
            ("RUNBOOKS_LEASE_SECONDS", "2"),
            ("RUNBOOKS_RATE_LIMIT", "0"),
            ("GITHUB_API_URL", &api_url),
            ("GITHUB_APP_ID", &app_id),
            ("GITHUB_PRIVATE_KEY", github.private_key_pem()),
        ],
    )
}

async fn get(http: &reqwest::Client, url: String, token: &str) -> RunbookDocument {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_until(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    what: &str,
    done: impl Fn(&RunbookDocument) -> bool,
) -> RunbookDocument {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // `runbooks serve` is another process: its engine's events do not reach this one.
    loop {
        let doc = get(http, format!("{base}/api/v1/runbook/1"), token).await;
        if done(&doc) {
            return doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached {what}: {doc:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn kill_9_during_a_step_then_restart(backend: Backend) {
    let github = support::github_with_backend(&[("README.md", "# backend\n")]).await;
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let token = support::create_token(&store, &["acme-corp"]).await;
    // The second step blocks the first time it runs (until the process is killed), and goes
    // through when it runs again after the restart. Steps run jailed (they see only their
    // tree and the markers directory, read-only): the step marks that it is blocked in a
    // `.git` of its own in its tree (never committed), and the test releases it, after the
    // kill, from outside.
    let release = markers(&db).join("release");
    let prompt = format!(
        "## Execution Steps\n### Step 1: First\n```sh\necho one > one.txt\n```\n\
         ### Step 2: Interrupted\n```sh\necho two > two.txt\nif [ ! -e {release} ]; then mkdir -p .git; touch .git/blocked; \
         while [ ! -e {release} ]; do sleep 0.05; done; fi\n```\n\
         ### Step 3: Last\n```sh\necho three > three.txt\n```\n",
        release = release.display()
    );
    let once = db
        .dir
        .path()
        .join("data/worktrees/runbook-1/tree/.git/blocked");
    let http = reqwest::Client::new();
    let first = serve(&db, &github);
    let first_base = format!("http://{}", first.addr);
    let response = http
        .post(format!("{}/api/v1/runbook", first_base))
        .bearer_auth(&token)
        .json(&json!({"repository": {"org": "acme-corp", "name": "backend"}, "prompt": prompt}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_until(&http, &first_base, &token, "step 2 running", |d| {
        d.steps.completed == 1 && d.steps.in_progress == 1
    })
    .await;
    // Kill only once the step's command is really blocked (it has made its mark: a file, polled).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !once.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "step 2 never started its command"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first); // SIGKILL: no shutdown, no lease released
    std::fs::write(&release, "").unwrap();

    let second = serve(&db, &github);
    let second_base = format!("http://{}", second.addr);
    let done = wait_until(&http, &second_base, &token, "completion", |d| {
        matches!(d.status, RunbookStatus::Completed | RunbookStatus::Failed)
    })
    .await;
    assert_eq!(done.status, RunbookStatus::Completed, "{done:?}");
    assert_eq!(done.steps.completed, 3);
    let messages = github
        .commit_messages("acme-corp", "backend", "runbooks/1")
        .await
        .unwrap();
    for step in ["1", "2", "3"] {
        let commits = messages
            .iter()
            .filter(|m| m.lines().any(|l| l == format!("Runbook-Step: {step}")))
            .count();
        assert_eq!(commits, 1, "step {step}: {messages:?}");
    }
    for (file, content) in [
        ("one.txt", "one\n"),
        ("two.txt", "two\n"),
        ("three.txt", "three\n"),
    ] {
        let found = github
            .file("acme-corp", "backend", "runbooks/1", file)
            .await
            .unwrap();
        assert_eq!(found.as_deref(), Some(content), "{file}");
    }
}

fn config_for(github: &StandIn, db: &TestDb) -> runbooks::config::Config {
    let mut config = runbooks::config::Config::for_database(&db.url);
    config.github.api_url = github.api_url();
    config.github.app_id = Some(github.app_id());
    config.github.private_key = Some(runbooks::config::PrivateKeySource::Inline(
        secrecy::SecretString::from(github.private_key_pem()),
    ));
    config.data_dir = db.dir.path().join("data");
    // A shutdown abandons the lease of a runbook still held; keep the takeover quick.
    config.lease = Duration::from_secs(2);
    config
}

/// Waits, on the in-process server's engine, until runbook 1's first step is in `state`.
async fn wait_for_step(
    server: &runbooks::server::RunningServer,
    store: &Arc<dyn Store>,
    state: StepState,
) -> runbooks::store::StepRecord {
    let engine = server.engine.as_ref().expect("an engine");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut progress = support::Watch::new(&[engine], 1, deadline);
    loop {
        let steps = store.steps(rn(1)).await.unwrap();
        if let Some(step) = steps.first().filter(|s| s.state == state) {
            return step.clone();
        }
        assert!(
            progress.next().await,
            "step 1 never became {state}: {steps:?}"
        );
    }
}

/// The narrowest window: the step's commit was pushed but the process died before recording
/// the step completed. The step must not run (and commit) again.
async fn a_step_pushed_before_the_crash_is_not_committed_again(backend: Backend) {
    let github = support::github_with_backend(&[("README.md", "# backend\n")]).await;
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let token = support::create_token(&store, &["acme-corp"]).await;
    let config = config_for(&github, &db);
    let server = runbooks::server::start_with_store(&config, store.clone())
        .await
        .unwrap();
    let prompt = "## Execution Steps\n### Step 1: Append\n```sh\necho more >> README.md\n```\n";
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/runbook", server.addr))
        .bearer_auth(&token)
        .json(&support::minimal(prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let done = wait_for_step(&server, &store, StepState::Completed).await;
    server.shutdown().await.unwrap();
    let head = github
        .branch_sha("acme-corp", "backend", "runbooks/1")
        .await
        .unwrap();
    assert_eq!(done.commit_sha, head);

    // As the crash left it: pushed, but still `in_progress` in the database.
    let step: StepNumber = "1".parse().unwrap();
    store
        .transition_steps(
            rn(1),
            std::slice::from_ref(&step),
            &[StepState::Completed],
            StepState::InProgress,
        )
        .await
        .unwrap();
    let server = runbooks::server::start_with_store(&config, store.clone())
        .await
        .unwrap();
    let recovered = wait_for_step(&server, &store, StepState::Completed).await;
    assert_eq!(
        recovered.commit_sha, head,
        "the pushed commit is recognised"
    );
    assert_eq!(
        github
            .branch_sha("acme-corp", "backend", "runbooks/1")
            .await
            .unwrap(),
        head,
        "no second commit"
    );
    server.shutdown().await.unwrap();
}

/// Two replicas on one PostgreSQL database share the work; no step runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_work_and_never_run_a_step_twice() {
    let github = support::github_with_backend(&[("README.md", "# backend\n")]).await;
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    let token = support::create_token(&store, &["acme-corp"]).await;
    // No process dies here: leases of the default length, so that a loaded machine never
    // lets one replica take over from the other in the middle of a step.
    let mut first_config = config_for(&github, &db);
    first_config.data_dir = db.dir.path().join("replica-1");
    first_config.lease = runbooks::engine::DEFAULT_LEASE;
    let mut second_config = config_for(&github, &db);
    second_config.data_dir = db.dir.path().join("replica-2");
    second_config.lease = runbooks::engine::DEFAULT_LEASE;
    let first = runbooks::server::start(&first_config).await.unwrap();
    let second = runbooks::server::start(&second_config).await.unwrap();
    let http = reqwest::Client::new();
    let runbooks = 6;
    for i in 0..runbooks {
        let prompt = format!(
            "## Execution Steps\n### Step 1: One\n```sh\necho {i} > one.txt\n```\n\
             ### Step 2: Two\n```sh\necho {i} > two.txt\n```\n"
        );
        // Half through each replica.
        let addr = if i % 2 == 0 { first.addr } else { second.addr };
        let response = http
            .post(format!("http://{addr}/api/v1/runbook"))
            .bearer_auth(&token)
            .json(&support::minimal(&prompt))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let engines = [&first, &second].map(|s| s.engine.as_ref().expect("an engine"));
    for number in 1..=runbooks {
        let mut progress = support::Watch::new(&engines, number, deadline);
        loop {
            let summary = store.runbook_summary(rn(number)).await.unwrap().unwrap();
            if summary.status() == runbooks::domain::RunbookStatus::Completed {
                break;
            }
            assert!(
                progress.next().await,
                "runbook {number}: {summary:?} {:?}",
                store.steps(rn(number)).await.unwrap()
            );
        }
        let branch = format!("runbooks/{number}");
        let messages = github
            .commit_messages("acme-corp", "backend", &branch)
            .await
            .unwrap();
        for step in ["1", "2"] {
            let commits = messages
                .iter()
                .filter(|m| m.lines().any(|l| l == format!("Runbook-Step: {step}")))
                .count();
            assert_eq!(commits, 1, "runbook {number} step {step}: {messages:?}");
        }
    }
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
}

both_backends!(
    kill_9_during_a_step_then_restart,
    a_step_pushed_before_the_crash_is_not_committed_again
);
