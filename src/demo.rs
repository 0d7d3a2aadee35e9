//! `runbooks demo`: the whole product on one machine, offline and without credentials.
//!
//! It starts a local GitHub stand-in holding a small repository with the app installed,
//! starts the service against it (SQLite, the script agent), creates a runbook through the
//! REST API like any client would, and shows its steps progressing to the commits they make.
//!
//! `runbooks standin` is its first half alone: the stand-in, for a `runbooks serve` started
//! separately (`.ci/schemathesis` tests the real server that way).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde_json::{Value, json};

use runbooks::config::{Config, PrivateKeySource};
use runbooks::server;
use runbooks::tokens;
use runbooks_standin::StandIn;

const ORG: &str = "acme-corp";
const REPO: &str = "hello";
const PROMPT: &str = include_str!("../fixtures/prompts/rename-helper.md");
const FILES: [(&str, &str); 4] = [
    ("Cargo.toml", include_str!("../fixtures/demo/Cargo.toml")),
    ("README.md", include_str!("../fixtures/demo/README.md")),
    ("src/lib.rs", include_str!("../fixtures/demo/src/lib.rs")),
    ("src/main.rs", include_str!("../fixtures/demo/src/main.rs")),
];
/// The longest the demo waits for its runbook.
const DEADLINE: Duration = Duration::from_secs(120);

pub struct DemoOptions {
    /// Where the service listens (port 0: any free port).
    pub listen: SocketAddr,
    /// Keep serving after the runbook ends, until Ctrl-C.
    pub keep_serving: bool,
}

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("runbooks-demo-")
        .tempdir()
        .context("creating the demo's directory")?;
    let github = StandIn::start_in(dir.path().join("github")).await?;
    github.create_repo(ORG, REPO, "main", &FILES).await?;
    github.install(ORG, &[REPO]);

    let database = format!("sqlite://{}", dir.path().join("runbooks.db").display());
    let mut config = Config::for_database(&database);
    config.listen = options.listen;
    config.public_url = None;
    config.data_dir = dir.path().join("data");
    config.github.api_url = github.api_url();
    config.github.app_id = Some(github.app_id());
    config.github.private_key = Some(PrivateKeySource::Inline(SecretString::from(
        github.private_key_pem(),
    )));
    config.github.webhook_secrets = vec![SecretString::from(github.webhook_secret())];
    // The demo runs only its own bundled sample, so without a working jail it may run it
    // unjailed; it says so. (`serve` never does that unless told to.)
    let jailed = runbooks::agent::jail(&config.agent, runbooks::agent::JailSite::default())
        .await
        .is_ok();
    if !jailed {
        config.agent.sandbox = runbooks::config::SandboxKind::None;
    }
    let running = server::start(&config).await?;
    let token = tokens::generate();
    running
        .store
        .create_token("demo", &[ORG.to_string()], &tokens::hash(&token))
        .await?;
    let base = format!("http://{}", running.addr);

    println!("runbooks demo — everything runs on this machine, nothing leaves it.");
    println!(
        "  GitHub stand-in   {}  (repository {ORG}/{REPO}, app installed)",
        github.api_url()
    );
    println!("  runbooks service  {base}  (SQLite, script agent)");
    println!("  working directory {}", dir.path().display());
    if !jailed {
        println!(
            "  note: bubblewrap cannot make a jail here, so the sample's commands run unjailed"
        );
    }
    println!();

    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{base}/api/v1/runbook"))
        .bearer_auth(&token)
        .json(&json!({"repository": {"org": ORG, "name": REPO}, "prompt": PROMPT}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let number = created["runbook_number"]
        .as_i64()
        .context("the API answered without a runbook number")?;
    println!(
        "POST /api/v1/runbook → 202, runbook {number}: {}",
        created["status"]
    );
    println!();

    let status = watch(&http, &base, &token, number).await?;
    println!();
    let branch = format!("runbooks/{number}");
    let messages = github.commit_messages(ORG, REPO, &branch).await?;
    let commits: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains(&format!("Runbook: {number}")))
        .collect();
    println!(
        "Commits pushed to {ORG}/{REPO} on {branch}: {}",
        commits.len()
    );
    for message in commits.iter().rev() {
        println!("  {}", message.lines().next().unwrap_or(""));
    }
    let doc: Value = http
        .get(format!("{base}/api/v1/runbook/{number}"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    for pr in doc["pull_requests"].as_array().into_iter().flatten() {
        let steps: Vec<&str> = pr["step_numbers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "Pull request #{} ({}), steps {}",
            pr["number"],
            pr["url"].as_str().unwrap_or(""),
            steps.join(", ")
        );
    }
    if let Some(lib) = github.file(ORG, REPO, &branch, "src/lib.rs").await? {
        println!();
        println!("src/lib.rs on {branch}:");
        for line in lib.lines() {
            println!("  {line}");
        }
    }
    println!();
    println!(
        "Status:    curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/runbook/{number}"
    );
    println!(
        "Steps:     curl -s -H 'Authorization: Bearer {token}' {base}/api/v1/runbook/{number}/steps"
    );
    println!("Dashboard: {}", created["url"].as_str().unwrap_or(""));
    if options.keep_serving {
        println!();
        println!("Serving until Ctrl-C.");
        tokio::signal::ctrl_c().await?;
    }
    running.shutdown().await?;
    if status != "completed" {
        bail!("the demo runbook ended {status}");
    }
    Ok(())
}

/// Prints each step as its state changes, until the runbook ends; answers the final status.
async fn watch(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    number: i64,
) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let mut seen: HashMap<String, String> = HashMap::new();
    loop {
        let doc: Value = http
            .get(format!("{base}/api/v1/runbook/{number}"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let steps: Value = http
            .get(format!("{base}/api/v1/runbook/{number}/steps"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for step in steps["steps"].as_array().into_iter().flatten() {
            let (Some(n), Some(state)) = (step["number"].as_str(), step["state"].as_str()) else {
                continue;
            };
            if step["leaf"] != true || seen.get(n).map(String::as_str) == Some(state) {
                continue;
            }
            seen.insert(n.to_string(), state.to_string());
            let commit = step["commit_sha"]
                .as_str()
                .map(|sha| format!("  commit {}", &sha[..sha.len().min(10)]))
                .unwrap_or_default();
            let error = step["error"]
                .as_str()
                .map(|e| format!("  {e}"))
                .unwrap_or_default();
            println!(
                "  step {n:<5} {:<28} {state}{commit}{error}",
                step["title"].as_str().unwrap_or("")
            );
        }
        let status = doc["status"].as_str().unwrap_or("").to_string();
        if matches!(status.as_str(), "completed" | "failed") && doc["steps"]["total"] != 0 {
            println!("runbook {number}: {status}");
            return Ok(status);
        }
        if started.elapsed() > DEADLINE {
            bail!("the demo runbook did not finish within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct StandinOptions {
    /// Where the stand-in listens (port 0: any free port).
    pub listen: SocketAddr,
    /// `OWNER/NAME` of each repository to create and install the app on.
    pub repos: Vec<String>,
    /// Where to write the `GITHUB_*` settings (and, beside it, the private key).
    pub env_file: PathBuf,
}

/// Serves a GitHub stand-in with the app installed on `options.repos` until `stop` ends.
/// The settings file is written (whole, by a rename) only once everything is in place, so a
/// script may wait for it to appear.
pub async fn standin(
    options: StandinOptions,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut repos = Vec::new();
    for repo in &options.repos {
        let full_name: runbooks::domain::RepoName = repo
            .parse()
            .with_context(|| format!("--repo {repo:?}: expected OWNER/NAME"))?;
        let (owner, name) = (full_name.owner(), full_name.name());
        runbooks::domain::runbook::check_org("--repo", owner).map_err(|e| anyhow::anyhow!(e))?;
        runbooks::domain::runbook::check_repo("--repo", name).map_err(|e| anyhow::anyhow!(e))?;
        repos.push((owner.to_string(), name.to_string()));
    }
    let github = StandIn::start_with(runbooks_standin::Options {
        listen: options.listen,
        ..Default::default()
    })
    .await?;
    let readme = |name: &str| format!("# {name}\n");
    for (owner, name) in &repos {
        github
            .create_repo(owner, name, "main", &[("README.md", &readme(name))])
            .await?;
    }
    let mut owners: Vec<&str> = repos.iter().map(|(owner, _)| owner.as_str()).collect();
    owners.sort_unstable();
    owners.dedup();
    for owner in owners {
        let names: Vec<&str> = repos
            .iter()
            .filter(|(o, _)| o == owner)
            .map(|(_, name)| name.as_str())
            .collect();
        github.install(owner, &names);
    }

    let key = options.env_file.with_extension("pem");
    std::fs::write(&key, github.private_key_pem())
        .with_context(|| format!("writing {}", key.display()))?;
    // Single-quoted, as a shell reads them (the webhook secret has spaces).
    let quote = |value: &str| format!("'{}'", value.replace('\'', r"'\''"));
    let settings: String = [
        ("GITHUB_API_URL", github.api_url()),
        ("GITHUB_APP_ID", github.app_id().to_string()),
        ("GITHUB_PRIVATE_KEY_PATH", key.display().to_string()),
        ("GITHUB_WEBHOOK_SECRET", github.webhook_secret().to_string()),
    ]
    .iter()
    .map(|(name, value)| format!("{name}={}\n", quote(value)))
    .collect();
    let partial = options.env_file.with_extension("partial");
    std::fs::write(&partial, settings)
        .and_then(|()| std::fs::rename(&partial, &options.env_file))
        .with_context(|| format!("writing {}", options.env_file.display()))?;
    eprintln!(
        "GitHub stand-in at {} ({}); settings in {}",
        github.api_url(),
        options.repos.join(", "),
        options.env_file.display()
    );
    stop.await;
    Ok(())
}
