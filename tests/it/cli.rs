//! The `runbooks` binary: token commands, migrate, and serve configured by environment.

use crate::support;
use crate::support::rn;

use std::process::{Command, Output, Stdio};

use support::{Backend, Served, TestDb};

fn runbooks(args: &[&str], database_url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runbooks"))
        .args(args)
        .env_remove("RUST_LOG")
        .env("RUNBOOKS_DATABASE_URL", database_url)
        .output()
        .expect("running the binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

async fn token_commands(backend: Backend) {
    let db = TestDb::new(backend).await;
    let created = runbooks(
        &[
            "token",
            "create",
            "--org",
            "acme-corp",
            "--org",
            "globex,initech",
            "--name",
            "ci",
        ],
        &db.url,
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let out = stdout(&created);
    assert_eq!(out.lines().count(), 1, "only the token on stdout: {out:?}");
    let token = out.trim().to_string();
    assert!(runbooks::tokens::well_formed(&token), "{token}");
    assert!(stderr(&created).contains("created token 1"));

    let listed = runbooks(&["token", "list"], &db.url);
    assert!(listed.status.success());
    let table = stdout(&listed);
    assert!(
        table.contains("ci")
            && table.contains("acme-corp,globex,initech")
            && table.contains("active"),
        "{table}"
    );
    assert!(
        !table.contains(&token[4..20]),
        "the list never shows a token"
    );
    assert!(
        !table.contains(&runbooks::tokens::hash(&token)[..16]),
        "nor its hash"
    );

    let store = db.store().await;
    assert!(
        store
            .active_token(&runbooks::tokens::hash(&token))
            .await
            .unwrap()
            .is_some()
    );

    let revoked = runbooks(&["token", "revoke", "1"], &db.url);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(
        store
            .active_token(&runbooks::tokens::hash(&token))
            .await
            .unwrap()
            .is_none()
    );
    assert!(stdout(&runbooks(&["token", "list"], &db.url)).contains("revoked"));
    let again = runbooks(&["token", "revoke", "1"], &db.url);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("no active token with id 1"));

    let bad = runbooks(&["token", "create", "--org", "not an org"], &db.url);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--org"), "{}", stderr(&bad));
    assert!(stdout(&bad).is_empty());
    let missing = runbooks(&["token", "create"], &db.url);
    assert!(!missing.status.success());
    assert_eq!(
        store.list_tokens().await.unwrap().len(),
        1,
        "failed commands create nothing"
    );
}

async fn migrate_creates_the_schema(backend: Backend) {
    let db = TestDb::new(backend).await;
    let output = runbooks(&["migrate"], &db.url);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("up to date"));
    let again = runbooks(&["migrate"], &db.url);
    assert!(again.status.success());
    db.store().await.list_tokens().await.unwrap();
}

both_backends!(token_commands, migrate_creates_the_schema);

#[tokio::test]
async fn serve_is_configured_by_environment_and_sees_revocations_at_once() {
    let db = TestDb::new(Backend::Sqlite).await;
    let token = stdout(&runbooks(
        &["token", "create", "--org", "acme-corp"],
        &db.url,
    ))
    .trim()
    .to_string();
    let served = Served::start(
        &db,
        &[("RUNBOOKS_PUBLIC_URL", "https://runbooks.example.com/")],
    );
    let http = reqwest::Client::new();
    let base = format!("http://{}", served.addr);
    let response = http
        .post(format!("{base}/api/v1/runbook"))
        .bearer_auth(&token)
        .json(&support::minimal("Upgrade all React dependencies to v19"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let doc: serde_json::Value = response.json().await.unwrap();
    assert_eq!(doc["url"], "https://runbooks.example.com/runbooks/1");

    let revoked = runbooks(&["token", "revoke", "1"], &db.url);
    assert!(revoked.status.success());
    let response = http
        .get(format!("{base}/api/v1/runbook/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "a revoked token stops working at once"
    );

    let status = served.terminate();
    assert!(status.success(), "SIGTERM shuts down cleanly: {status:?}");
}

#[test]
fn bad_settings_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("never.db").display());
    for (env, expected) in [
        (
            ("RUNBOOKS_PUBLIC_URL", "ftp://example.com"),
            "RUNBOOKS_PUBLIC_URL",
        ),
        (("RUNBOOKS_WORKERS", "0"), "workers"),
        (("RUNBOOKS_LISTEN", "not-an-address"), "listen"),
        (("RUNBOOKS_AGENT", "magic"), "agent"),
        (
            ("RUNBOOKS_DATABASE_URL", "mysql://localhost/db"),
            "sqlite:// or postgres://",
        ),
        // The server's and GitHub's own secrets are never passed to agent commands.
        (
            (
                "RUNBOOKS_AGENT_ENV",
                "HOME_ASSISTANT_URL,GITHUB_PRIVATE_KEY",
            ),
            "RUNBOOKS_AGENT_ENV names GITHUB_PRIVATE_KEY",
        ),
        (
            ("RUNBOOKS_AGENT_ENV", "RUNBOOKS_DATABASE_URL"),
            "RUNBOOKS_AGENT_ENV names RUNBOOKS_DATABASE_URL",
        ),
        (("RUNBOOKS_AGENT_ENV", "NOT_SET_ANYWHERE_X"), "is not set"),
        (("RUNBOOKS_AGENT_NETWORK", "everywhere"), "agent-network"),
        (
            ("RUNBOOKS_AGENT_ALLOW_HOSTS", "exa mple.com/x"),
            "RUNBOOKS_AGENT_ALLOW_HOSTS",
        ),
        (("RUNBOOKS_AGENT_MAX_MEMORY", "lots"), "not a size"),
        (("RUNBOOKS_AGENT_READ_PATHS", "relative/dir"), "absolute"),
        (("RUNBOOKS_DELIVERY_RETENTION", "1day"), "at least 3d"),
        (("RUNBOOKS_REQUEST_TIMEOUT", "10ms"), "at least 1s"),
        (("RUNBOOKS_MAX_CONNECTIONS", "0"), "max-connections"),
        (
            ("RUNBOOKS_TRUSTED_PROXIES", "10.0.0.1,proxy.internal"),
            "RUNBOOKS_TRUSTED_PROXIES: \"proxy.internal\"",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_runbooks"))
            .arg("serve")
            .env("RUNBOOKS_LISTEN", "127.0.0.1:0")
            .env("RUNBOOKS_DATABASE_URL", &db)
            .env(env.0, env.1)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{env:?} was accepted");
        let message = stderr(&output);
        assert!(message.contains(expected), "{env:?}: {message}");
    }
    // Hosts listed for a network policy that does not use them: a mistake, said so.
    let output = Command::new(env!("CARGO_BIN_EXE_runbooks"))
        .arg("serve")
        .env("RUNBOOKS_LISTEN", "127.0.0.1:0")
        .env("RUNBOOKS_DATABASE_URL", &db)
        .env("RUNBOOKS_AGENT_NETWORK", "open")
        .env("RUNBOOKS_AGENT_ALLOW_HOSTS", "pypi.org")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("RUNBOOKS_AGENT_NETWORK=open does not use it"),
        "{message}"
    );
}

/// `--help` names every variable but shows none of their values: URLs, the agent command and
/// the hosts an agent may reach can carry credentials. Defaults are still shown.
#[test]
fn help_shows_no_value_of_any_setting() {
    const MARKER: &str = "s3cr3t-marker";
    let serve_settings = [
        ("RUNBOOKS_AGENT_COMMAND", format!("agent --key {MARKER}")),
        (
            "RUNBOOKS_DATABASE_URL",
            format!("postgres://u:{MARKER}@db/x"),
        ),
        (
            "OPENAI_BASE_URL",
            format!("https://u:{MARKER}@llm.example.com"),
        ),
        ("OPENAI_API_KEY", MARKER.to_string()),
        (
            "GITHUB_API_URL",
            format!("https://{MARKER}@ghe.example.com/api/v3"),
        ),
        ("GITHUB_PRIVATE_KEY", MARKER.to_string()),
        ("GITHUB_PRIVATE_KEY_PATH", format!("/keys/{MARKER}.pem")),
        ("GITHUB_WEBHOOK_SECRET", MARKER.to_string()),
        (
            "RUNBOOKS_PUBLIC_URL",
            format!("https://{MARKER}.example.com"),
        ),
        ("RUNBOOKS_AGENT_ALLOW_HOSTS", format!("{MARKER}.internal")),
        (
            "RUNBOOKS_AGENT_ENV",
            MARKER.to_uppercase().replace('-', "_"),
        ),
        ("RUNBOOKS_MODEL", MARKER.to_string()),
        ("RUNBOOKS_TRUSTED_PROXIES", "10.9.8.7".to_string()),
    ];
    let client_settings = [
        (
            "RUNBOOKS_URL",
            format!("https://u:{MARKER}@runbooks.example.com"),
        ),
        ("RUNBOOKS_TOKEN", MARKER.to_string()),
    ];
    for (args, settings) in [
        (&["serve", "--help"][..], &serve_settings[..]),
        (&["migrate", "--help"][..], &serve_settings[1..2]),
        (&["token", "list", "--help"][..], &serve_settings[1..2]),
        (&["create", "--help"][..], &client_settings[..]),
        (&["watch", "--help"][..], &client_settings[..]),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runbooks"));
        command.args(args);
        for (name, value) in settings {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{args:?}");
        let help = stdout(&output);
        for (name, value) in settings {
            assert!(
                help.contains(&format!("[env: {name}]")),
                "{name} in {args:?}:\n{help}"
            );
            assert!(
                !help.contains(value.as_str()),
                "{name}'s value in {args:?}:\n{help}"
            );
        }
        assert!(
            !help.contains(MARKER) && !help.contains("10.9.8.7"),
            "{args:?}:\n{help}"
        );
    }
    let output = Command::new(env!("CARGO_BIN_EXE_runbooks"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = stdout(&output);
    assert!(help.contains("[default: 127.0.0.1:8080]"), "{help}");
    assert!(help.contains("[default: 7d]"), "{help}");
}

/// The README's first command: the offline demonstration runs a runbook to its commits.
#[test]
fn the_demo_runs_a_runbook_to_completion_offline() {
    let output = Command::new(env!("CARGO_BIN_EXE_runbooks"))
        .arg("demo")
        .env_remove("RUNBOOKS_DATABASE_URL")
        .env_remove("GITHUB_APP_ID")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    assert!(out.contains("runbook 1: completed"), "{out}");
    assert!(
        out.contains("Commits pushed to acme-corp/hello on runbooks/1: 3"),
        "{out}"
    );
    assert!(out.contains("pub fn new_name"), "{out}");
    assert!(out.contains("Pull request #1"), "{out}");
    assert!(
        out.contains("/runbooks/1"),
        "the dashboard URL is shown: {out}"
    );
}

/// Kills a child process when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `runbooks standin` serves a GitHub with the repositories asked for, and its settings file
/// points a separately started `runbooks serve` at it: creating a runbook there asks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standin_command_points_serve_at_a_local_github() {
    let db = TestDb::new(Backend::Sqlite).await;
    let env_file = db.dir.path().join("github.env");
    let env_file_arg = env_file.display().to_string();
    let mut standin = Child(
        Command::new(env!("CARGO_BIN_EXE_runbooks"))
            .args(["standin", "--repo", "acme-corp/backend", "--env-file"])
            .arg(&env_file_arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The file appears whole (renamed into place) once the stand-in answers (another process:
    // polled).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !env_file.exists() {
        assert!(
            standin.0.try_wait().unwrap().is_none(),
            "the stand-in stopped"
        );
        assert!(std::time::Instant::now() < deadline, "no settings file");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let settings: Vec<(String, String)> = std::fs::read_to_string(&env_file)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, value) = line.split_once('=').expect("NAME=value");
            let value = value
                .strip_prefix('\'')
                .unwrap()
                .strip_suffix('\'')
                .unwrap();
            (name.to_string(), value.to_string())
        })
        .collect();
    let names: Vec<&str> = settings.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "GITHUB_API_URL",
            "GITHUB_APP_ID",
            "GITHUB_PRIVATE_KEY_PATH",
            "GITHUB_WEBHOOK_SECRET"
        ]
    );

    let created = runbooks(&["token", "create", "--org", "acme-corp"], &db.url);
    let token = stdout(&created).trim().to_string();
    let env: Vec<(&str, &str)> = settings
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let served = Served::start(&db, &env);
    let http = reqwest::Client::new();
    let create = |name: &str| {
        http.post(format!("http://{}/api/v1/runbook", served.addr))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "repository": {"org": "acme-corp", "name": name},
                "prompt": "Upgrade all React dependencies to v19",
            }))
            .send()
    };
    assert_eq!(create("backend").await.unwrap().status(), 202);
    assert_eq!(
        create("frontend").await.unwrap().status(),
        422,
        "the stand-in has no acme-corp/frontend"
    );
    let stored = db.store().await.runbook(rn(1)).await.unwrap().unwrap();
    assert_eq!(
        stored.target_branch.as_deref(),
        Some("main"),
        "the default branch, from the stand-in"
    );
    drop(served);
}
