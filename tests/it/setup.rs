//! Repository setup (`setup`, `on_failure`, `cache` in `.github/runbooks.yml`): the commands
//! run in the jail before a runbook's first step in a fresh tree, the steps see what they
//! made, no commit carries it, the cache restores it for a later runbook of the same
//! repository (and no other), a failing setup fails the runbook or only warns, and
//! `GET …/steps` reports it — on both databases.

use crate::support;

use runbooks::domain::RunbookStatus;
use runbooks_standin::StandIn;
use serde_json::{Value, json};
use support::{Backend, TestServer, server_for, wait_for_status};

fn body(org: &str, repo: &str, prompt: &str) -> Value {
    json!({"repository": {"org": org, "name": repo}, "prompt": prompt})
}

/// `GET /api/v1/runbook/<n>/steps` as JSON, with `token`.
async fn steps_json(t: &TestServer, token: &str, number: i64) -> Value {
    let response = t
        .http
        .get(t.url(&format!("/api/v1/runbook/{number}/steps")))
        .bearer_auth(token)
        .send()
        .await
        .expect("sending the request");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("a JSON body")
}

async fn file(github: &StandIn, org: &str, repo: &str, branch: &str, path: &str) -> Option<String> {
    github.file(org, repo, branch, path).await.unwrap()
}

async fn create_and_finish(t: &TestServer, token: &str, number: i64, request: Value) -> Value {
    t.api_as(token).create(&request).await.expect("created");
    // Read with the runbook's own token (another organisation's runbook is not found with
    // the default one).
    let mut progress = t.watch(number, std::time::Duration::from_secs(60));
    let done = loop {
        let doc = t.api_as(token).runbook(number).await.expect("the runbook");
        if matches!(doc.status, RunbookStatus::Completed | RunbookStatus::Failed) {
            break doc;
        }
        assert!(
            progress.next().await,
            "runbook {number} never ended: {doc:?}"
        );
    };
    let steps = steps_json(t, token, number).await;
    assert_eq!(
        done.status,
        RunbookStatus::Completed,
        "runbook {number}: {steps:#}"
    );
    steps
}

const README: &str = "# backend\n";

/// The setup's files are seen by every step of the runbook (it runs once, before the
/// first), and none of them is committed: an ignored file, an untracked one (excluded by the
/// engine), and a change to a tracked file (restored).
async fn setup_prepares_the_tree_and_stays_out_of_commits(backend: Backend) {
    let config = r#"setup:
  - "mkdir -p ignored && echo from-setup > ignored/marker && echo run >> ignored/count"
  - "echo untracked > setup-untracked.txt"
  - "echo changed-by-setup >> README.md"
"#;
    let github = support::github_with_backend(&[
        ("README.md", README),
        (".gitignore", "ignored/\n"),
        (".github/runbooks.yml", config),
    ])
    .await;
    let t = server_for(&github, backend, |_| {}).await;
    let prompt = "## Execution Steps
### Step 1: Look
```sh
cat ignored/marker setup-untracked.txt > seen.txt
```
### Step 2: Look again
```sh
test -f setup-untracked.txt
cp ignored/count count.txt
```
";
    let token = t.token.clone();
    let steps = create_and_finish(&t, &token, 1, body("acme-corp", "backend", prompt)).await;

    let branch = "runbooks/1";
    let at = |path| file(&github, "acme-corp", "backend", branch, path);
    assert_eq!(
        at("seen.txt").await.as_deref(),
        Some("from-setup\nuntracked\n")
    );
    // Set up once: the second step saw one run.
    assert_eq!(at("count.txt").await.as_deref(), Some("run\n"));
    assert_eq!(
        at("setup-untracked.txt").await,
        None,
        "the setup's file was committed"
    );
    assert_eq!(at("ignored/marker").await, None);
    assert_eq!(at("README.md").await.as_deref(), Some(README));

    let setup = &steps["setup"];
    assert_eq!(setup["status"], "completed", "{setup:#}");
    assert_eq!(setup["cache"], "none");
    assert!(
        setup["wall_ms"].as_i64().is_some_and(|ms| ms >= 0),
        "{setup:#}"
    );
    let log = setup["log"].as_str().unwrap();
    assert!(
        log.contains("$ echo untracked > setup-untracked.txt"),
        "{log}"
    );
    assert!(
        log.contains("setup-untracked.txt") && log.contains("README.md"),
        "{log}"
    );
    let keys: Vec<&String> = setup.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["cache", "log", "status", "wall_ms"]);
    t.stop().await;
}

const CACHED: &str = r#"setup:
  - "mkdir -p deps && echo installed > deps/lib.txt && date +%s%N > deps/stamp"
  - "touch setup-ran"
cache:
  keys: [package-lock.json]
  paths: [deps]
"#;

/// What each runbook's step records: whether the setup's command ran in its tree, and what
/// the cached directory held. Then it tampers with the cache's directory, which must not
/// reach a later runbook.
const CACHE_PROMPT: &str = "## Execution Steps
### Step 1: Record
```sh
if test -e setup-ran; then echo yes > ran.txt; else echo no > ran.txt; fi
cp deps/lib.txt lib.txt
cp deps/stamp stamp.txt
echo poisoned > deps/lib.txt
```
";

/// The second runbook of a repository with the same lock file restores the cached paths and
/// runs no setup command; a step of the first could not poison the entry (it was saved
/// before the step ran); another organisation's repository with the same files misses.
async fn a_second_runbook_with_the_same_lock_file_hits_the_cache(backend: Backend) {
    let files = [
        ("README.md", README),
        (".gitignore", "deps/\n"),
        ("package-lock.json", "{\"lockfileVersion\": 3}\n"),
        (".github/runbooks.yml", CACHED),
    ];
    let github = support::github_with_backend(&files).await;
    github
        .create_repo("umbrella", "backend", "main", &files)
        .await
        .unwrap();
    github.install("umbrella", &["backend"]);
    let t = server_for(&github, backend, |_| {}).await;
    let token = t.token.clone();

    let first = create_and_finish(&t, &token, 1, body("acme-corp", "backend", CACHE_PROMPT)).await;
    assert_eq!(first["setup"]["cache"], "miss", "{:#}", first["setup"]);
    assert_eq!(first["setup"]["status"], "completed");
    let at = |org: &'static str, n: i64, path: &'static str| {
        let github = &github;
        async move {
            file(github, org, "backend", &format!("runbooks/{n}"), path)
                .await
                .unwrap_or_else(|| panic!("{path} of runbook {n}"))
        }
    };
    assert_eq!(at("acme-corp", 1, "ran.txt").await, "yes\n");
    let stamp = at("acme-corp", 1, "stamp.txt").await;

    let second = create_and_finish(&t, &token, 2, body("acme-corp", "backend", CACHE_PROMPT)).await;
    assert_eq!(second["setup"]["cache"], "hit", "{:#}", second["setup"]);
    assert_eq!(second["setup"]["status"], "completed");
    assert!(
        !second["setup"]["log"].as_str().unwrap().contains("$ "),
        "a command ran: {:#}",
        second["setup"]
    );
    assert_eq!(at("acme-corp", 2, "ran.txt").await, "no\n", "the setup ran");
    assert_eq!(
        at("acme-corp", 2, "lib.txt").await,
        "installed\n",
        "poisoned"
    );
    assert_eq!(at("acme-corp", 2, "stamp.txt").await, stamp);
    // GraphQL says the same.
    let query = "query { runbook(number: 2) { setup { status cache log wallMs } } }";
    let answer: Value = t
        .http
        .post(t.url("/api/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": query}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let setup = &answer["data"]["runbook"]["setup"];
    assert_eq!(setup["status"], "COMPLETED", "{answer}");
    assert_eq!(setup["cache"], "HIT", "{answer}");
    assert_eq!(setup["log"], second["setup"]["log"]);
    assert_eq!(setup["wallMs"], second["setup"]["wall_ms"]);

    // Another organisation's repository of the same name and files: its own cache.
    let other = support::create_token(&t.store, &["umbrella"]).await;
    let third = create_and_finish(&t, &other, 3, body("umbrella", "backend", CACHE_PROMPT)).await;
    assert_eq!(third["setup"]["cache"], "miss", "{:#}", third["setup"]);
    assert_eq!(at("umbrella", 3, "ran.txt").await, "yes\n");
    assert_ne!(at("umbrella", 3, "stamp.txt").await, stamp);
    t.stop().await;
}

const FAILING: &str = r#"setup:
  - "echo preparing at $(date +%s%N)"
  - "echo 'npm ERR! could not resolve left-pad' >&2; exit 3"
  - "touch never"
"#;

/// `on_failure: fail` (the default): the runbook fails, the step's error quoting the command,
/// its status and the tail of its output; a retry runs the setup again. `on_failure: warn`:
/// the steps run, and the setup is reported failed.
async fn a_failing_setup_fails_the_runbook_or_warns(backend: Backend) {
    let github = StandIn::start().await.unwrap();
    let warn = format!("{FAILING}on_failure: warn\n");
    for (name, config) in [("failing", FAILING), ("warning", warn.as_str())] {
        github
            .create_repo(
                "acme-corp",
                name,
                "main",
                &[("README.md", README), (".github/runbooks.yml", config)],
            )
            .await
            .unwrap();
    }
    github.install("acme-corp", &["failing", "warning"]);
    let t = server_for(&github, backend, |_| {}).await;
    let prompt = "## Execution Steps\n### Step 1: Write\n```sh\necho done > done.txt\n```\n";

    t.api()
        .create(&body("acme-corp", "failing", prompt))
        .await
        .expect("created");
    let failed = wait_for_status(&t, 1, &[RunbookStatus::Failed, RunbookStatus::Completed]).await;
    assert_eq!(failed.status, RunbookStatus::Failed);
    let steps = steps_json(&t, &t.token, 1).await;
    let error = steps["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("the repository's setup failed: `echo 'npm ERR! could not resolve left-pad' >&2; exit 3` exited with status 3; last lines of its output:"),
        "{error}"
    );
    assert!(
        error.contains("npm ERR! could not resolve left-pad"),
        "{error}"
    );
    let setup = &steps["setup"];
    assert_eq!(setup["status"], "failed", "{setup:#}");
    let log = setup["log"].as_str().unwrap();
    assert!(
        log.contains("preparing") && !log.contains("touch never"),
        "{log}"
    );
    assert_eq!(
        file(&github, "acme-corp", "failing", "runbooks/1", "done.txt").await,
        None
    );

    // A retry sets the fresh tree up again (and fails again): the log is the new run's.
    let before = log.to_string();
    t.api().act(1, "retry", None).await.expect("queued again");
    let mut progress = t.watch(1, std::time::Duration::from_secs(60));
    loop {
        let doc = t.api().runbook(1).await.unwrap();
        let steps = steps_json(&t, &t.token, 1).await;
        if doc.status == RunbookStatus::Failed
            && steps["steps"][0]["state"] == "failed"
            && doc.steps.queued == 0
            && doc.steps.in_progress == 0
        {
            let error = steps["steps"][0]["error"].as_str().unwrap();
            assert!(
                error.starts_with("the repository's setup failed"),
                "{error}"
            );
            let log = steps["setup"]["log"].as_str().unwrap();
            assert!(log.contains("preparing at"), "{log}");
            assert_ne!(log, before, "the setup did not run again");
            break;
        }
        assert!(progress.next().await, "the retry never ended");
    }

    let warned = {
        t.api()
            .create(&body("acme-corp", "warning", prompt))
            .await
            .expect("created");
        wait_for_status(&t, 2, &[RunbookStatus::Failed, RunbookStatus::Completed]).await
    };
    assert_eq!(warned.status, RunbookStatus::Completed);
    let steps = steps_json(&t, &t.token, 2).await;
    assert_eq!(steps["setup"]["status"], "failed", "{steps:#}");
    assert_eq!(
        file(&github, "acme-corp", "warning", "runbooks/2", "done.txt")
            .await
            .as_deref(),
        Some("done\n")
    );
    t.stop().await;
}

/// Hostile configurations and setups: a cache path climbing out of the tree fails the plan
/// with a message naming the file (and the runbook has no setup to show); a setup that
/// makes a cached path go through a symbolic link out of the tree gets nothing saved, and
/// the link's target is not copied.
async fn hostile_cache_paths_are_refused(backend: Backend) {
    let climbing = "setup: [\"true\"]\ncache: {paths: [\"../../x\"]}\n";
    let linking = r#"setup:
  - "ln -s /etc out"
cache:
  paths: [out/hostname]
"#;
    let github = StandIn::start().await.unwrap();
    for (name, config) in [("climbing", climbing), ("linking", linking)] {
        github
            .create_repo(
                "acme-corp",
                name,
                "main",
                &[("README.md", README), (".github/runbooks.yml", config)],
            )
            .await
            .unwrap();
    }
    github.install("acme-corp", &["climbing", "linking"]);
    let t = server_for(&github, backend, |_| {}).await;
    let prompt = "## Execution Steps\n### Step 1: Write\n```sh\necho done > done.txt\n```\n";

    t.api()
        .create(&body("acme-corp", "climbing", prompt))
        .await
        .expect("created");
    wait_for_status(&t, 1, &[RunbookStatus::Failed]).await;
    let steps = steps_json(&t, &t.token, 1).await;
    let error = steps["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains(".github/runbooks.yml")
            && error.contains("cache.paths")
            && error.contains("../../x"),
        "{error}"
    );
    assert_eq!(steps["setup"], Value::Null);

    let token = t.token.clone();
    let steps = create_and_finish(&t, &token, 2, body("acme-corp", "linking", prompt)).await;
    let log = steps["setup"]["log"].as_str().unwrap();
    assert!(
        log.contains("the cache was not saved") && log.contains("symbolic link"),
        "{log}"
    );
    let cache = t.db.dir.path().join("data/setup-cache/acme-corp/linking");
    let entries: Vec<String> = std::fs::read_dir(&cache)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(entries.is_empty(), "an entry was saved: {entries:?}");
    t.stop().await;
}

both_backends!(
    setup_prepares_the_tree_and_stays_out_of_commits,
    a_second_runbook_with_the_same_lock_file_hits_the_cache,
    a_failing_setup_fails_the_runbook_or_warns,
    hostile_cache_paths_are_refused,
);
