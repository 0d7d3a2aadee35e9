//! The git cost of a step, against the git command-line tool measured in the same run, both
//! talking smart HTTP to the GitHub stand-in (`git http-backend`).
//!
//! Run with `cargo bench --bench git_step`. It seeds a repository of `BENCH_FILES` files
//! (default 10,000, in 100 directories) and measures:
//!
//! 1. per-step overhead without the agent: change one file, then commit and push it —
//!    `Worktree::commit_all` + `Worktree::push` against `git add -A && git commit && git push`
//!    (credentials through `http.extraHeader`), `BENCH_ROUNDS` rounds each (default 15),
//!    interleaved so both see the same machine load;
//! 2. working-tree setup for a further runbook on a cached repository (`RepoCache::worktree`
//!    with the mirror already present) against a fresh `git clone`, `BENCH_SETUP_ROUNDS`
//!    rounds each (default 5): taking a tree released by an earlier runbook (the usual
//!    case once a repository has had a runbook), creating a new tree when none is free,
//!    and preparing the same runbook's tree again (resuming). For reference it also times
//!    the design not chosen, a libgit2 local clone (hard links) of the mirror.
//!
//! Medians are printed with the ratios; nothing is asserted. `BENCH_LOG=runbooks=debug`
//! shows the git layer's own timings (fetch, checkout).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use runbooks::git::{Identity, Remote, RepoCache};
use runbooks_standin::StandIn;
use secrecy::SecretString;
use tokio::process::Command;

const OWNER: &str = "acme";
const NAME: &str = "big";

struct Settings {
    files: usize,
    rounds: usize,
    setup_rounds: usize,
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let settings = Settings {
        files: env_usize("BENCH_FILES", 10_000)?,
        rounds: env_usize("BENCH_ROUNDS", 15)?.max(1),
        setup_rounds: env_usize("BENCH_SETUP_ROUNDS", 5)?.max(1),
    };
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the runtime")?
        .block_on(run(settings))
}

/// A git command with no system or user configuration, so the machine's settings do not
/// change what is measured. `auth` (a full `Authorization` header) goes through the
/// environment form of `-c http.extraHeader=…`, keeping it out of the process list.
fn git(dir: &Path, args: &[&str], auth: Option<&str>) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "runbooks[bot]")
        .env(
            "GIT_AUTHOR_EMAIL",
            "142424242+runbooks[bot]@users.noreply.github.com",
        )
        .env("GIT_COMMITTER_NAME", "runbooks[bot]")
        .env(
            "GIT_COMMITTER_EMAIL",
            "142424242+runbooks[bot]@users.noreply.github.com",
        )
        .stdin(std::process::Stdio::null());
    if let Some(auth) = auth {
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", auth);
    }
    cmd
}

async fn run_git(dir: &Path, args: &[&str], auth: Option<&str>) -> anyhow::Result<()> {
    let out = git(dir, args, auth)
        .output()
        .await
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes `files` files into `dir` (100 directories), commits them with the git CLI and
/// pushes straight into the stand-in's bare repository on disk.
async fn seed(standin: &StandIn, scratch: &Path, files: usize) -> anyhow::Result<()> {
    let bare = standin.repo_path(OWNER, NAME);
    let work = scratch.join("seed");
    let bare_str = bare.to_string_lossy().into_owned();
    let work_str = work.to_string_lossy().into_owned();
    run_git(scratch, &["clone", "-q", &bare_str, &work_str], None).await?;
    let filler = "The quick brown fox jumps over the lazy dog. ".repeat(4);
    for i in 0..files {
        let dir = work.join(format!("dir-{:02}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&dir).context("creating a seed directory")?;
        }
        std::fs::write(
            dir.join(format!("file-{i:05}.txt")),
            format!("file {i}\n{filler}\n"),
        )
        .context("writing a seed file")?;
    }
    run_git(&work, &["add", "-A"], None).await?;
    run_git(&work, &["commit", "-q", "-m", "Seed"], None).await?;
    run_git(&work, &["push", "-q", "origin", "main"], None).await?;
    std::fs::remove_dir_all(&work).context("removing the seed checkout")?;
    Ok(())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn touch(file: &Path, round: usize) -> anyhow::Result<()> {
    std::fs::write(file, format!("changed in round {round}\n")).context("changing a file")
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let standin = StandIn::start().await?;
    standin
        .create_repo(OWNER, NAME, "main", &[("README.md", "benchmark\n")])
        .await?;
    let installation = standin.install(OWNER, &[NAME]);
    let token = standin.create_token(installation)?;
    let secret = SecretString::from(token.clone());
    let clone_url = standin.clone_url(OWNER, NAME);
    let auth = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
    );
    let remote = Remote {
        full_name: "acme/big",
        clone_url: &clone_url,
        token: &secret,
    };
    let started = Instant::now();
    seed(&standin, scratch.path(), settings.files).await?;
    println!(
        "seeded {} files in {} ({} rounds per step measurement, {} per setup measurement)",
        settings.files,
        ms(started.elapsed()),
        settings.rounds,
        settings.setup_rounds
    );

    // ----- 1. commit + push of a one-file change ------------------------------------------
    let data = scratch.path().join("data");
    let cache = RepoCache::new(&data);
    let started = Instant::now();
    let ours = cache.worktree(&remote, 1, "bench/ours", "main").await?;
    let first_setup = started.elapsed();

    let cli_dir = scratch.path().join("cli");
    let cli_str = cli_dir.to_string_lossy().into_owned();
    run_git(
        scratch.path(),
        &["clone", "-q", &clone_url, &cli_str],
        Some(&auth),
    )
    .await?;
    run_git(&cli_dir, &["checkout", "-q", "-b", "bench/cli"], None).await?;

    let who = Identity {
        name: "runbooks[bot]".to_string(),
        email: "142424242+runbooks[bot]@users.noreply.github.com".to_string(),
    };
    let ours_file = ours.path().join("dir-00/file-00000.txt");
    let cli_file = cli_dir.join("dir-00/file-00000.txt");
    let (mut ours_times, mut cli_times) = (Vec::new(), Vec::new());
    // Round 0 warms up both sides (and creates both branches on the server).
    for round in 0..=settings.rounds {
        touch(&ours_file, round)?;
        let t = Instant::now();
        let sha = ours
            .commit_all(&format!("Round {round}"), &who)
            .await?
            .context("a change to commit")?;
        let pushed = ours.push(&remote).await?;
        let ours_elapsed = t.elapsed();
        if pushed != sha {
            bail!("pushed {pushed}, committed {sha}");
        }

        touch(&cli_file, round)?;
        let t = Instant::now();
        run_git(&cli_dir, &["add", "-A"], None).await?;
        run_git(
            &cli_dir,
            &["commit", "-q", "-m", &format!("Round {round}")],
            None,
        )
        .await?;
        run_git(
            &cli_dir,
            &["push", "-q", "origin", "bench/cli"],
            Some(&auth),
        )
        .await?;
        let cli_elapsed = t.elapsed();
        if round > 0 {
            ours_times.push(ours_elapsed);
            cli_times.push(cli_elapsed);
        }
    }
    if standin.branch_sha(OWNER, NAME, "bench/ours").await? != Some(ours.head().await?) {
        bail!("the server does not have our last commit");
    }
    let (ours_step, cli_step) = (median(ours_times), median(cli_times));
    println!();
    println!(
        "1. commit + push of a one-file change ({} files)",
        settings.files
    );
    println!("   runbooks (git2) commit_all + push : {}", ms(ours_step));
    println!("   git add -A && commit && push      : {}", ms(cli_step));
    println!(
        "   ratio ours / CLI                  : {:.2}x (aim: <= 1.5x)",
        ours_step.as_secs_f64() / cli_step.as_secs_f64()
    );

    // ----- 2. working-tree setup --------------------------------------------------------
    // Each round: a runbook with no released tree to take (a new tree: every file written);
    // then the previous runbook is released and the next one takes its tree; then that tree
    // is prepared again (a resumed runbook); then the git CLI clones; then, for reference,
    // the design not chosen (a libgit2 local clone of the mirror).
    let (mut fresh, mut pooled, mut again, mut cloned, mut hardlinked) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mirror = cache.mirror_path("acme/big")?;
    let expected = std::fs::read_to_string(
        ours_file
            .parent()
            .context("a directory")?
            .join("file-00100.txt"),
    )
    .context("reading a file of the repository")?;
    let mut held = 1;
    for round in 0..settings.setup_rounds {
        let runbook = 200 + round as i64;
        let t = Instant::now();
        let wt = cache
            .worktree(&remote, runbook, &format!("bench/fresh-{round}"), "main")
            .await?;
        fresh.push(t.elapsed());
        check_tree(wt.path(), &expected)?;
        std::fs::remove_dir_all(wt.path()).context("removing a working tree")?;

        cache.release("acme/big", held).await?;
        let runbook = 100 + round as i64;
        let branch = format!("bench/setup-{round}");
        let t = Instant::now();
        let wt = cache.worktree(&remote, runbook, &branch, "main").await?;
        pooled.push(t.elapsed());
        check_tree(wt.path(), &expected)?;
        held = runbook;

        let t = Instant::now();
        cache.worktree(&remote, runbook, &branch, "main").await?;
        again.push(t.elapsed());

        let dest = scratch.path().join(format!("clone-{round}"));
        let dest_str = dest.to_string_lossy().into_owned();
        let t = Instant::now();
        run_git(
            scratch.path(),
            &["clone", "-q", &clone_url, &dest_str],
            Some(&auth),
        )
        .await?;
        cloned.push(t.elapsed());
        std::fs::remove_dir_all(&dest).context("removing a clone")?;

        let dest = scratch.path().join(format!("local-{round}"));
        hardlinked.push(local_clone(&mirror, &dest).await?);
        std::fs::remove_dir_all(&dest).context("removing a local clone")?;
    }
    let (fresh, pooled, again, cloned, hardlinked) = (
        median(fresh),
        median(pooled),
        median(again),
        median(cloned),
        median(hardlinked),
    );
    let ratio = |d: Duration| cloned.as_secs_f64() / d.as_secs_f64();
    println!();
    println!(
        "2. working-tree setup for another runbook ({} files)",
        settings.files
    );
    println!(
        "   git clone (fresh, over HTTP)                    : {}",
        ms(cloned)
    );
    println!(
        "   runbooks, tree released by an earlier runbook   : {}  clone/this = {:.1}x (aim: >= 10x)",
        ms(pooled),
        ratio(pooled)
    );
    println!(
        "   runbooks, new tree (no released tree to take)   : {}  clone/this = {:.1}x",
        ms(fresh),
        ratio(fresh)
    );
    println!(
        "   runbooks, same runbook prepared again (resume)  : {}  clone/this = {:.1}x",
        ms(again),
        ratio(again)
    );
    println!(
        "   first runbook of the repository (mirror clone)  : {}",
        ms(first_setup)
    );
    println!(
        "   reference: libgit2 local clone of the mirror (hard links, no fetch): {}",
        ms(hardlinked)
    );
    Ok(())
}

/// Fails when a prepared tree does not hold the seeded content of `main`.
fn check_tree(tree: &Path, expected: &str) -> anyhow::Result<()> {
    let actual = std::fs::read_to_string(tree.join("dir-00/file-00100.txt"))
        .context("reading a file of the prepared tree")?;
    let changed = std::fs::read_to_string(tree.join("dir-00/file-00000.txt"))
        .context("reading a file of the prepared tree")?;
    if actual != expected || changed.starts_with("changed") {
        bail!("the prepared tree at {} is not main", tree.display());
    }
    Ok(())
}

/// The design not chosen: a libgit2 local clone of the mirror (objects hard-linked) with a
/// checkout of `main`. Timed without the fetch that `RepoCache::worktree` includes.
async fn local_clone(mirror: &Path, dest: &Path) -> anyhow::Result<Duration> {
    let (mirror, dest): (PathBuf, PathBuf) = (mirror.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let mut builder = git2::build::RepoBuilder::new();
        builder
            .clone_local(git2::build::CloneLocal::Local)
            .branch("main");
        let url = mirror.to_string_lossy().into_owned();
        builder.clone(&url, &dest).context("local clone")?;
        Ok(t.elapsed())
    })
    .await
    .context("the local clone task")?
}
