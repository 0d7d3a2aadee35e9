//! Chaos: many runbooks in every `pr_mode` on the real `runbooks serve` binary, killed with
//! SIGKILL at random moments and restarted, while the GitHub stand-in answers with 502s,
//! 500s, secondary rate limits and lost answers (it did the work, the client never heard).
//! Afterwards every runbook must have reached its final state: completed, one commit per
//! leaf that changed files, exactly the pull requests its mode calls for, all final, in
//! stack order, the REST document and the PR bodies agreeing, and nothing left owed to
//! GitHub.
//!
//! Seeded and reproducible in what it decides (prompts, kill times, faults): the seed is
//! printed; `RUNBOOKS_CHAOS_SEED=<n>` replays it. The test in the suite is small enough for
//! CI; `cargo test --test it chaos_long -- --ignored` runs a longer one.

use crate::support;
use crate::support::rn;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runbooks_standin::{Fault, FaultKind, StandIn};
use serde_json::{Value, json};
use support::{Backend, Served, TestDb};

const ORG: &str = "acme-corp";
const REPO: &str = "backend";

struct Size {
    /// Runbooks of each mode (single_pr, stacked_pr, manual).
    per_mode: usize,
    kills: usize,
}

/// One leaf of a generated runbook.
#[derive(Debug, Clone)]
struct Leaf {
    number: String,
    top: u32,
    /// Whether it changes a file (else it runs `true`: no commit).
    changes: bool,
}

#[derive(Debug, Clone)]
struct Planned {
    mode: &'static str,
    prompt: String,
    leaves: Vec<Leaf>,
}

/// A runbook in the template layout: 2 or 3 top-level steps, each a leaf or 2 sub-steps;
/// most leaves change a file, some do nothing (a top-level step of a stack may then have no
/// PR). Each leaf takes a moment, so that kills land in the middle of steps too.
fn generate(rng: &mut StdRng, index: usize, mode: &'static str) -> Planned {
    let mut prompt = format!("Chaos runbook {index}.\n\n## Execution Steps\n");
    let mut leaves = Vec::new();
    let tops = rng.random_range(2..=3u32);
    for top in 1..=tops {
        let subs = rng.random_range(0..=2u32);
        prompt.push_str(&format!("### Step {top}: Part {top}\n"));
        let numbers: Vec<String> = if subs == 0 {
            vec![top.to_string()]
        } else {
            (1..=subs).map(|sub| format!("{top}.{sub}")).collect()
        };
        for number in numbers {
            if number.contains('.') {
                prompt.push_str(&format!("#### {number}: Leaf {number}\n"));
            }
            let changes = rng.random_bool(0.85);
            let pause = rng.random_range(1..=30);
            let work = if changes {
                format!("echo {index}-{number} > file-{number}.txt")
            } else {
                "true".to_string()
            };
            prompt.push_str(&format!("```sh\nsleep 0.{pause:02}\n{work}\n```\n"));
            leaves.push(Leaf {
                number,
                top,
                changes,
            });
        }
    }
    Planned {
        mode,
        prompt,
        leaves,
    }
}

/// A fault for a random part of the stand-in's API or git service.
fn random_fault(rng: &mut StdRng) -> Fault {
    let prefixes = [
        format!("/repos/{ORG}/{REPO}/pulls"),
        format!("/repos/{ORG}/{REPO}/issues"),
        "/graphql".to_string(),
        format!("/git/{ORG}/{REPO}.git"),
        "/app/installations".to_string(),
    ];
    let prefix = prefixes[rng.random_range(0..prefixes.len())].clone();
    let kind = match rng.random_range(0..5) {
        0 => FaultKind::BadGateway,
        1 => FaultKind::ServerError,
        2 => FaultKind::SecondaryRateLimit {
            retry_after: Duration::from_secs(1),
        },
        3 => FaultKind::TooManyRequests {
            retry_after: Duration::from_secs(1),
        },
        _ => FaultKind::LostAnswer,
    };
    Fault::new(kind, prefix).times(rng.random_range(1..=3))
}

fn serve(db: &TestDb, github: &StandIn) -> Served {
    let (api_url, app_id) = (github.api_url(), github.app_id().to_string());
    Served::start(
        db,
        &[
            ("RUNBOOKS_LEASE_SECONDS", "2"),
            ("RUNBOOKS_WORKERS", "4"),
            ("RUNBOOKS_RATE_LIMIT", "0"),
            ("RUNBOOKS_STATUS_INTERVAL", "1s"),
            ("GITHUB_API_URL", &api_url),
            ("GITHUB_APP_ID", &app_id),
            ("GITHUB_PRIVATE_KEY", github.private_key_pem()),
        ],
    )
}

/// A REST call that is retried while the server is down (killed, restarting).
async fn call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut request = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Some((status, body))
}

async fn chaos(backend: Backend, size: Size) {
    let seed: u64 = std::env::var("RUNBOOKS_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("chaos seed {seed} (RUNBOOKS_CHAOS_SEED={seed} replays it), {backend:?}");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let github = support::github_with_backend(&[("README.md", "# backend\n")]).await;
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let token = support::create_token(&store, &[ORG]).await;
    let http = reqwest::Client::new();

    let mut planned = Vec::new();
    for _ in 0..size.per_mode {
        for mode in ["single_pr", "stacked_pr", "manual"] {
            planned.push(generate(&mut rng, planned.len(), mode));
        }
    }
    let mut server = serve(&db, &github);
    let base = |s: &Served| format!("http://{}", s.addr);
    for plan in &planned {
        let body = json!({"repository": {"org": ORG, "name": REPO}, "prompt": plan.prompt,
                          "pr_mode": plan.mode});
        let (status, doc) = call(
            &http,
            &base(&server),
            &token,
            reqwest::Method::POST,
            "/api/v1/runbook",
            Some(&body),
        )
        .await
        .expect("the server answers");
        assert_eq!(status, 202, "{doc}");
    }
    let numbers: Vec<i64> = (1..=planned.len() as i64).collect();

    // Kill -9 at random moments, with GitHub faults injected as it goes.
    let mut faults = 0;
    for _ in 0..size.kills {
        for _ in 0..rng.random_range(1..=3) {
            github.inject(random_fault(&mut rng));
            faults += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2500))).await;
        drop(server); // SIGKILL: no shutdown, leases left to expire
        server = serve(&db, &github);
    }
    // The manual runbooks' PRs are asked for once their work is done (through faults too).
    let deadline = Instant::now() + Duration::from_secs(240);
    let manual: Vec<i64> = numbers
        .iter()
        .copied()
        .filter(|n| planned[(*n - 1) as usize].mode == "manual")
        .collect();
    let mut requested: Vec<i64> = Vec::new();
    // `runbooks serve` is another process: its engine's events do not reach this one.
    loop {
        let mut all_done = true;
        for number in &numbers {
            let summary = store.runbook_summary(rn(*number)).await.unwrap().unwrap();
            let completed = summary.status() == runbooks::domain::RunbookStatus::Completed;
            all_done &= completed;
            if completed && manual.contains(number) && !requested.contains(number) {
                let path = format!("/api/v1/runbook/{number}/pull_requests");
                if let Some((202, _)) = call(
                    &http,
                    &base(&server),
                    &token,
                    reqwest::Method::POST,
                    &path,
                    None,
                )
                .await
                {
                    requested.push(*number);
                }
                all_done = false;
            }
            let owed = store.owed(rn(*number)).await.unwrap();
            all_done &= owed.is_none();
        }
        if all_done {
            break;
        }
        if Instant::now() > deadline {
            let mut state = String::new();
            for number in &numbers {
                state.push_str(&format!(
                    "runbook {number}: {:?}\n  owed {:?}\n  steps {:?}\n",
                    store
                        .runbook_summary(rn(*number))
                        .await
                        .unwrap()
                        .map(|s| s.status()),
                    store.owed(rn(*number)).await.unwrap(),
                    store
                        .steps(rn(*number))
                        .await
                        .unwrap()
                        .iter()
                        .map(|s| (s.number.to_string(), s.state, s.error.clone()))
                        .collect::<Vec<_>>()
                ));
            }
            panic!("seed {seed}: not every runbook reached its final state:\n{state}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Everything is final: check each runbook against what it should be.
    let pulls = github.pulls(ORG, REPO);
    for (plan, number) in planned.iter().zip(&numbers) {
        let context = format!("seed {seed}, runbook {number} ({})", plan.mode);
        let (status, doc) = call(
            &http,
            &base(&server),
            &token,
            reqwest::Method::GET,
            &format!("/api/v1/runbook/{number}"),
            None,
        )
        .await
        .expect("the server answers");
        assert_eq!(status, 200, "{context}: {doc}");
        assert_eq!(doc["status"], "completed", "{context}: {doc}");
        assert_eq!(
            doc["steps"]["completed"],
            plan.leaves.len(),
            "{context}: {doc}"
        );

        // One commit per leaf that changed files, none for the others.
        let branch_of = |leaf: &Leaf| match plan.mode {
            "stacked_pr" => format!("runbooks/{number}/step-{}", leaf.top),
            _ => format!("runbooks/{number}"),
        };
        let mut messages: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for leaf in &plan.leaves {
            let branch = branch_of(leaf);
            if !messages.contains_key(&branch)
                && let Some(list) = github.commit_messages(ORG, REPO, &branch).await.ok()
            {
                messages.insert(branch.clone(), list);
            }
            let commits = messages.get(&branch).map_or(0, |list| {
                list.iter()
                    .filter(|m| {
                        m.lines().any(|l| l == format!("Runbook: {number}"))
                            && m.lines()
                                .any(|l| l == format!("Runbook-Step: {}", leaf.number))
                    })
                    .count()
            });
            let expected = usize::from(leaf.changes);
            assert_eq!(
                commits, expected,
                "{context}: commits of step {}",
                leaf.number
            );
        }

        // Exactly the PRs the mode calls for, in order, all final, carrying their steps.
        let mut expected: Vec<(String, Vec<String>)> = Vec::new();
        match plan.mode {
            "stacked_pr" => {
                let mut tops: Vec<u32> = plan.leaves.iter().map(|l| l.top).collect();
                tops.dedup();
                for top in tops {
                    let in_top: Vec<&Leaf> = plan.leaves.iter().filter(|l| l.top == top).collect();
                    if in_top.iter().any(|l| l.changes) {
                        expected.push((
                            format!("runbooks/{number}/step-{top}"),
                            in_top.iter().map(|l| l.number.clone()).collect(),
                        ));
                    }
                }
            }
            _ => {
                let carried: Vec<String> = plan
                    .leaves
                    .iter()
                    .filter(|l| l.changes)
                    .map(|l| l.number.clone())
                    .collect();
                if !carried.is_empty() {
                    expected.push((format!("runbooks/{number}"), carried));
                }
            }
        }
        let listed: Vec<(String, Vec<String>)> = doc["pull_requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let pr = p["number"].as_u64().unwrap();
                let head = pulls
                    .iter()
                    .find(|g| g.number == pr)
                    .map(|g| g.head.clone())
                    .unwrap_or_default();
                let steps = p["step_numbers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect();
                (head, steps)
            })
            .collect();
        assert_eq!(
            listed, expected,
            "{context}: the document's pull requests: {doc}"
        );
        let mine: Vec<&runbooks_standin::PullInfo> = pulls
            .iter()
            .filter(|p| expected.iter().any(|(head, _)| head == &p.head))
            .collect();
        assert_eq!(
            mine.len(),
            expected.len(),
            "{context}: PRs on GitHub: {mine:#?}"
        );
        let stack: Vec<u64> = expected
            .iter()
            .map(|(head, _)| mine.iter().find(|p| &p.head == head).unwrap().number)
            .collect();
        for (i, (head, _)) in expected.iter().enumerate() {
            let pr = mine.iter().find(|p| &p.head == head).unwrap();
            assert!(
                !pr.draft && !pr.title.starts_with("[WIP]"),
                "{context}: {pr:#?}"
            );
            assert!(pr.open, "{context}: {pr:#?}");
            let base = if i == 0 {
                "main".to_string()
            } else {
                expected[i - 1].0.clone()
            };
            assert_eq!(pr.base, base, "{context}: {pr:#?}");
            let body = pr.body.clone().unwrap_or_default();
            assert!(
                !body.contains("- [ ]"),
                "{context}: an unchecked step: {body}"
            );
            for leaf in &plan.leaves {
                assert!(
                    body.contains(&format!("- [x] {} ", leaf.number)),
                    "{context}: step {} not checked: {body}",
                    leaf.number
                );
            }
            if plan.mode == "stacked_pr" {
                // The stack, bottom first, this PR marked.
                let listed: Vec<u64> = body
                    .lines()
                    .filter_map(|l| l.strip_prefix("1. #"))
                    .filter_map(|l| l.split_whitespace().next()?.parse().ok())
                    .collect();
                assert_eq!(
                    listed, stack,
                    "{context}: the stack in {}: {body}",
                    pr.number
                );
                assert!(
                    body.lines()
                        .any(|l| l.starts_with(&format!("1. #{} ", pr.number))
                            && l.ends_with("← this PR")),
                    "{context}: {body}"
                );
            }
        }
    }
    server.terminate();
    let leaves: usize = planned.iter().map(|p| p.leaves.len()).sum();
    println!(
        "chaos seed {seed}: {} runbooks ({leaves} leaf steps), {} kills, {faults} faults, {} pull requests, {:.1} s",
        planned.len(),
        size.kills,
        pulls.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runbook_reaches_its_final_state_through_kills_and_faults_on_sqlite() {
    chaos(
        Backend::Sqlite,
        Size {
            per_mode: 2,
            kills: 4,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runbook_reaches_its_final_state_through_kills_and_faults_on_postgres() {
    chaos(
        Backend::Postgres,
        Size {
            per_mode: 2,
            kills: 4,
        },
    )
    .await;
}

/// The longer run, for local use: `cargo test --release --test it chaos_long -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn chaos_long() {
    chaos(
        Backend::Sqlite,
        Size {
            per_mode: 7,
            kills: 12,
        },
    )
    .await;
}
