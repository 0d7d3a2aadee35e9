//! What the jail costs per step, against the same step run unjailed in the same run.
//!
//! Run with `cargo bench --bench jail` (bubblewrap must be installed). One script-agent step —
//! a `sh` block that edits a file of the tree with `sed` and appends to another — is run
//! `BENCH_ROUNDS` times (default 40) in each of three ways, interleaved so all see the same
//! machine load:
//!
//! 1. unjailed (`RUNBOOKS_SANDBOX=none`): a scrubbed environment and a process group;
//! 2. jailed, network `none` (the script agent's default): bubblewrap with its namespaces,
//!    mounts and limits;
//! 3. jailed, network `allowlist`: the same, plus the server's egress proxy on a Unix socket
//!    and the forwarder (this crate's `runbooks` binary) started inside the jail.
//!
//! Medians and the 90th percentile are printed with the ratios against the unjailed run;
//! nothing is asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use runbooks::agent::egress::NetworkPolicy;
use runbooks::agent::jail::{Jail, JailConfig, ResourceLimits};
use runbooks::agent::script::ScriptAgent;
use runbooks::agent::{Agent, Limits, StepTask};

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

fn agent(jail: JailConfig) -> ScriptAgent {
    ScriptAgent::new(Limits {
        jail: Jail::from(jail),
        ..Limits::default()
    })
}

async fn step(agent: &ScriptAgent, tree: &Path, round: usize) -> anyhow::Result<Duration> {
    let task = StepTask {
        runbook: 1,
        number: "1".parse().expect("a step number"),
        title: "Edit".into(),
        details: format!(
            "```sh\nsed -i 's/old_name/new_name/' src/lib.rs\necho {round} >> CHANGELOG.md\n```"
        ),
        runbook_prompt: String::new(),
    };
    let started = Instant::now();
    agent
        .execute(&task, tree)
        .await
        .map_err(|e| anyhow::anyhow!("the step failed: {e}"))?;
    Ok(started.elapsed())
}

fn stats(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn main() -> anyhow::Result<()> {
    let rounds = env_usize("BENCH_ROUNDS", 40)?.max(1);
    anyhow::ensure!(
        Path::new("/usr/bin/bwrap").exists(),
        "bubblewrap is needed: apt-get install bubblewrap"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let tree = tempfile::tempdir()?;
        std::fs::create_dir(tree.path().join("src"))?;
        std::fs::write(tree.path().join("src/lib.rs"), "pub fn old_name() {}\n")?;
        let jailed = |network| JailConfig {
            bwrap: Some("bwrap".into()),
            network,
            limits: ResourceLimits::default(),
            helper: Some(env!("CARGO_BIN_EXE_runbooks").into()),
            ..JailConfig::default()
        };
        let kinds = [
            (
                "unjailed (RUNBOOKS_SANDBOX=none)",
                agent(JailConfig::default()),
            ),
            ("jailed, network none", agent(jailed(NetworkPolicy::None))),
            (
                "jailed, network allowlist (egress proxy)",
                agent(jailed(NetworkPolicy::Allowlist(Vec::new()))),
            ),
        ];
        // One warm-up round each (page cache, the binary).
        for (_, agent) in &kinds {
            step(agent, tree.path(), 0).await?;
        }
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
        for round in 1..=rounds {
            for (i, (_, agent)) in kinds.iter().enumerate() {
                samples[i].push(step(agent, tree.path(), round).await?);
            }
        }
        let (baseline, _) = stats(&mut samples[0].clone());
        println!("one script step (sed + append), {rounds} rounds each, interleaved:");
        for ((name, _), samples) in kinds.iter().zip(samples.iter_mut()) {
            let (median, p90) = stats(samples);
            println!(
                "  {name:<44} median {:>7.2} ms  p90 {:>7.2} ms  ratio {:>5.2}x",
                median.as_secs_f64() * 1e3,
                p90.as_secs_f64() * 1e3,
                median.as_secs_f64() / baseline.as_secs_f64()
            );
        }
        anyhow::Ok(())
    })
}
