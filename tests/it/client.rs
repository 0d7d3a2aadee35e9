//! The client commands of the binary (`create`, `status`, `watch`) run as a separate process
//! against the real server on loopback, configured as the app of the GitHub stand-in, with the
//! script agent.

use crate::support;
use crate::support::rn;

use support::{LIB, RENAME};

use std::process::Stdio;
use std::time::Duration;

use runbooks::domain::RunbookStatus;
use runbooks_standin::StandIn;
use serde_json::{Value, json};
use support::{Backend, TestServer, server_for, wait_for_status};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BREAKS: &str = "## Execution Steps\n### Step 1: Works\n```sh\necho one > one.txt\n```\n### Step 2: Breaks\n```sh\necho 'about to fail'\nexit 3\n```\n### Step 3: Never reached\n```sh\necho three > three.txt\n```\n";

/// How long one run of the binary may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

async fn github() -> StandIn {
    support::github_with_backend(&[("src/lib.rs", LIB), ("README.md", "# backend\n")]).await
}

async fn setup() -> (StandIn, TestServer) {
    let github = github().await;
    let t = server_for(&github, Backend::Sqlite, |_| {}).await;
    (github, t)
}

fn body(prompt: &str) -> Value {
    json!({"repository": {"org": "acme-corp", "name": "backend"}, "prompt": prompt})
}

/// One run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The binary, with the server's URL and (when given) a token in the environment, nothing
/// inherited that could change its behaviour.
fn command(base: &str, token: Option<&str>, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_runbooks"));
    command
        .args(args)
        .env_remove("RUNBOOKS_TOKEN")
        .env_remove("RUST_LOG")
        .env("RUNBOOKS_URL", base)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("RUNBOOKS_TOKEN", token);
    }
    command
}

/// Runs the binary to its end with `stdin`, and checks that the token appears in none of its
/// output.
async fn run_with(base: &str, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = command(base, token, args);
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("starting the binary");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("runbooks {args:?} did not end within {DEADLINE:?}"))
        .expect("waiting for the binary");
    let run = Run {
        code: output.status.code().expect("an exit status"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 on stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 on stderr"),
    };
    if let Some(token) = token {
        assert!(
            !run.stdout.contains(token) && !run.stderr.contains(token),
            "the token was printed: {run}"
        );
    }
    assert!(
        !run.stdout.contains('\u{1b}'),
        "no escape codes when stdout is not a terminal: {run}"
    );
    run
}

async fn run(t: &TestServer, args: &[&str]) -> Run {
    run_with(&t.base, Some(&t.token), args, None).await
}

async fn steps(t: &TestServer, number: i64) -> Value {
    let response = t
        .http
        .get(t.url(&format!("/api/v1/runbook/{number}/steps")))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_prints_the_number_and_url_or_the_json_document() {
    let (_github, t) = setup().await;

    let created = run(
        &t,
        &[
            "create",
            "--repository",
            "acme-corp/backend",
            "--title",
            "Rename",
            "--plan",
            "--draft",
            "--pr-mode",
            "stacked_pr",
            "--target",
            "main",
            "--description",
            "Asked from the CLI.",
            "--label",
            "cli",
            "--label",
            "automated",
            "--author-email",
            "dev@acme.example",
            RENAME,
        ],
    )
    .await;
    assert_eq!(created.code, 0, "{created}");
    assert_eq!(
        created.stdout,
        format!("runbook 1 created: {}/runbooks/1\n", t.base),
        "{created}"
    );

    // Every flag reached the server.
    let record = t
        .store
        .runbook(rn(1))
        .await
        .unwrap()
        .expect("runbook 1 stored");
    assert_eq!(
        (record.org.as_str(), record.repo.as_str()),
        ("acme-corp", "backend")
    );
    assert_eq!(record.title, "Rename");
    assert_eq!(record.prompt, RENAME);
    assert!(!record.oneshot, "--plan sends oneshot: false");
    assert_eq!(record.draft, Some(true));
    assert_eq!(record.pr_mode, Some(runbooks::domain::PrMode::StackedPr));
    assert_eq!(record.target_branch.as_deref(), Some("main"));
    assert_eq!(record.description.as_deref(), Some("Asked from the CLI."));
    assert_eq!(record.labels, ["cli", "automated"]);
    assert_eq!(record.author_email.as_deref(), Some("dev@acme.example"));
    wait_for_status(&t, 1, &[RunbookStatus::NotStarted]).await;

    // --org/--repo, the prompt from standard input, the document as JSON.
    let json_run = run_with(
        &t.base,
        Some(&t.token),
        &[
            "create",
            "--org",
            "acme-corp",
            "--repo",
            "backend",
            "--ready",
            "--plan",
            "--prompt-file",
            "-",
            "--json",
        ],
        Some(RENAME),
    )
    .await;
    assert_eq!(json_run.code, 0, "{json_run}");
    let doc: Value = serde_json::from_str(&json_run.stdout).expect("a JSON document");
    assert_eq!(doc["runbook_number"], 2);
    assert_eq!(doc["url"], format!("{}/runbooks/2", t.base));
    assert_eq!(doc["status"], "generating_steps");
    assert_eq!(doc["pull_requests"], json!([]));
    let record = t
        .store
        .runbook(rn(2))
        .await
        .unwrap()
        .expect("runbook 2 stored");
    assert_eq!(record.draft, Some(false), "--ready sends draft: false");
    assert_eq!(record.prompt, RENAME);
    assert!(record.labels.is_empty());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_checks_its_arguments_before_asking_the_server() {
    let (_github, t) = setup().await;
    let bad_repository = run(&t, &["create", "--repository", "acme-corp", "x"]).await;
    assert_eq!(bad_repository.code, 2, "{bad_repository}");
    assert!(
        bad_repository
            .stderr
            .contains("--repository must be ORG/NAME"),
        "{bad_repository}"
    );
    let no_repository = run(&t, &["create", "a prompt"]).await;
    assert_eq!(no_repository.code, 2, "{no_repository}");
    assert!(
        no_repository.stderr.contains("--repository"),
        "{no_repository}"
    );
    let both = run(
        &t,
        &["create", "--repository", "a/b", "--draft", "--ready", "x"],
    )
    .await;
    assert_eq!(both.code, 2, "{both}");
    let empty = run_with(
        &t.base,
        Some(&t.token),
        &[
            "create",
            "--repository",
            "acme-corp/backend",
            "--prompt-file",
            "-",
        ],
        Some("  \n"),
    )
    .await;
    assert_eq!(empty.code, 2, "{empty}");
    assert!(
        empty.stderr.contains("error: the prompt is empty"),
        "{empty}"
    );
    // The server's own refusals are shown as its message.
    let bad_org = run(&t, &["create", "--repository", "acme corp/backend", "x"]).await;
    assert_eq!(bad_org.code, 2, "{bad_org}");
    assert!(
        bad_org.stderr.starts_with("error: ") && bad_org.stderr.contains("repository.org"),
        "{bad_org}"
    );
    assert!(
        t.store.runbook(rn(1)).await.unwrap().is_none(),
        "nothing created"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_step_tree_commits_and_pull_requests() {
    let (_github, t) = setup().await;
    t.create(body(RENAME)).await;
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(done.status, RunbookStatus::Completed);
    let tree = steps(&t, 1).await;

    let status = run(&t, &["status", "1"]).await;
    assert_eq!(status.code, 0, "{status}");
    let out = &status.stdout;
    assert!(out.starts_with("runbook 1: completed\n"), "{status}");
    assert!(
        out.contains(&format!("{}/runbooks/1\n", t.base)),
        "{status}"
    );
    assert!(out.contains("3 leaf steps: 3 completed\n"), "{status}");
    // The tree, indented by depth, with each commit's short SHA.
    assert!(
        out.contains("\n  ✓ 1  Rename the helper  (completed"),
        "{status}"
    );
    for (index, number, title) in [
        (1, "1.1", "Rename the definition"),
        (2, "1.2", "Update the callers"),
        (3, "2", "Document it"),
    ] {
        let sha = tree["steps"][index]["commit_sha"]
            .as_str()
            .expect("a commit");
        let indent = if number.contains('.') { "    " } else { "  " };
        let line = format!(
            "\n{indent}✓ {number}  {title}  (completed, commit {}",
            &sha[..7]
        );
        assert!(out.contains(&line), "{line:?} in {status}");
    }
    for pr in &done.pull_requests {
        assert!(
            out.contains(&format!("#{} {}", pr.number, pr.url)),
            "{status}"
        );
    }
    if !done.pull_requests.is_empty() {
        assert!(out.contains("\npull requests:\n"), "{status}");
    }

    let json_status = run(&t, &["status", "1", "--json"]).await;
    assert_eq!(json_status.code, 0, "{json_status}");
    let doc: Value = serde_json::from_str(&json_status.stdout).expect("a JSON document");
    assert_eq!(doc, serde_json::to_value(&done).unwrap());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_0_when_the_runbook_completes() {
    let (_github, t) = setup().await;
    // Created and followed live, from generating_steps to completed.
    let live = run(
        &t,
        &[
            "create",
            "--repository",
            "acme-corp/backend",
            "--watch",
            "--interval",
            "100ms",
            RENAME,
        ],
    )
    .await;
    assert_eq!(live.code, 0, "{live}");
    let out = &live.stdout;
    assert!(out.starts_with("runbook 1 created: "), "{live}");
    assert!(out.contains("planned 3 steps\n"), "{live}");
    for line in [
        "✓ step 1.1 completed: Rename the definition (commit ",
        "✓ step 1.2 completed: Update the callers (commit ",
        "✓ step 2 completed: Document it (commit ",
    ] {
        assert!(out.contains(line), "{line:?} in {live}");
    }
    assert!(out.contains("runbook 1 completed: 3/3 steps\n"), "{live}");
    let position = |line: &str| out.find(line).unwrap();
    assert!(
        position("step 1.1 completed") < position("step 2 completed"),
        "in plan order: {live}"
    );

    // Watching a runbook that has already ended ends at once.
    let again = run(&t, &["watch", "1"]).await;
    assert_eq!(again.code, 0, "{again}");
    assert!(
        again.stdout.starts_with("runbook 1: completed ("),
        "{again}"
    );
    assert!(
        again.stdout.ends_with("runbook 1 completed: 3/3 steps\n")
            || again.stdout.contains("runbook 1 completed: 3/3 steps\n  #"),
        "{again}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_1_and_shows_the_error_when_a_step_fails() {
    let (_github, t) = setup().await;
    t.create(body(BREAKS)).await;
    let watched = run(&t, &["watch", "1", "--interval", "100ms"]).await;
    assert_eq!(watched.code, 1, "{watched}");
    let tree = steps(&t, 1).await;
    let error = tree["steps"][1]["error"]
        .as_str()
        .expect("the step's error");
    let first_line = error.lines().next().unwrap();
    let out = &watched.stdout;
    assert!(
        out.contains("runbook 1 failed: 1 of 3 steps failed, 1 completed\n"),
        "{watched}"
    );
    assert!(out.contains("✗ step 2 failed: Breaks\n"), "{watched}");
    assert!(
        out.contains(&format!("    error: {first_line}")),
        "{first_line:?} in {watched}"
    );

    // `status` shows the error under its step, and ends 0: it only reports.
    let status = run(&t, &["status", "1"]).await;
    assert_eq!(status.code, 0, "{status}");
    assert!(status.stdout.starts_with("runbook 1: failed\n"), "{status}");
    assert!(
        status
            .stdout
            .contains("1 completed, 1 not started, 1 failed"),
        "{status}"
    );
    assert!(
        status.stdout.contains(&format!(
            "  ✗ 2  Breaks  (failed)\n      error: {first_line}"
        )),
        "{status}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_waits_for_execute_on_a_planned_runbook() {
    let (_github, t) = setup().await;
    let mut request = body(RENAME);
    request["oneshot"] = json!(false);
    t.create(request).await;
    wait_for_status(&t, 1, &[RunbookStatus::NotStarted]).await;

    let mut child = command(
        &t.base,
        Some(&t.token),
        &["watch", "1", "--interval", "100ms"],
    )
    .spawn()
    .expect("starting the binary");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Wait, with a deadline, for the hint; then start the runbook.
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let hint = line.contains("waits for `execute`");
            seen.push(line);
            if hint {
                return;
            }
        }
        panic!("watch ended before its hint: {seen:?}");
    })
    .await
    .expect("the hint within the deadline");
    assert_eq!(
        seen.iter()
            .filter(|l| l.contains("waits for `execute`"))
            .count(),
        1
    );
    let response = t
        .http
        .post(t.url("/api/v1/runbook/1/execute"))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("watch ends once the runbook completes")
        .unwrap();
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push(line);
    }
    assert_eq!(status.code(), Some(0), "{seen:?} {rest:?}");
    assert!(
        rest.iter().any(|l| l == "runbook 1 completed: 3/3 steps"),
        "{rest:?}"
    );
    assert!(
        !rest.iter().any(|l| l.contains("waits for `execute`")),
        "the hint is printed once: {rest:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_runbook_is_a_clear_error() {
    let (_github, t) = setup().await;
    for args in [
        &["status", "99"][..],
        &["status", "99", "--json"],
        &["watch", "99"],
    ] {
        let missing = run(&t, args).await;
        assert_eq!(missing.code, 2, "{args:?}: {missing}");
        assert_eq!(missing.stdout, "", "{args:?}: {missing}");
        assert_eq!(
            missing.stderr, "error: runbook 99 was not found\n",
            "{args:?}: {missing}"
        );
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_is_a_clear_error_and_never_printed() {
    let (_github, t) = setup().await;
    t.create(body(RENAME)).await;

    let missing = run_with(&t.base, None, &["status", "1"], None).await;
    assert_eq!(missing.code, 2, "{missing}");
    assert!(
        missing
            .stderr
            .starts_with("error: no API token: set RUNBOOKS_TOKEN"),
        "{missing}"
    );

    let wrong = runbooks::tokens::generate();
    for args in [&["status", "1"][..], &["watch", "1"]] {
        let refused = run_with(&t.base, Some(&wrong), args, None).await;
        assert_eq!(refused.code, 2, "{refused}");
        assert!(refused.stderr.starts_with("error: "), "{refused}");
        assert!(
            refused.stderr.contains("hint: check RUNBOOKS_TOKEN"),
            "{refused}"
        );
    }
    // Given as a flag, the token is not echoed either (run_with checks every output).
    let flagged = run_with(&t.base, None, &["status", "1", "--token", &wrong], None).await;
    assert_eq!(flagged.code, 2, "{flagged}");
    assert!(
        !flagged.stderr.contains(&wrong) && !flagged.stdout.contains(&wrong),
        "{flagged}"
    );
    // The good token works, and is not printed (checked by run_with).
    let fine = run(&t, &["status", "1", "--json"]).await;
    assert_eq!(fine.code, 0, "{fine}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error() {
    let (_bound, address) = support::refusing_address();
    let base = format!("http://{address}");
    let token = runbooks::tokens::generate();
    let unreachable = run_with(&base, Some(&token), &["watch", "1"], None).await;
    assert_eq!(unreachable.code, 2, "{unreachable}");
    assert!(
        unreachable.stderr.starts_with(&format!(
            "error: could not reach the runbooks server at {base}/"
        )),
        "{unreachable}"
    );
    assert!(unreachable.stderr.contains("RUNBOOKS_URL"), "{unreachable}");
}
