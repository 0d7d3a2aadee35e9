//! Throughput and latency of `GET /api/v1/runbook/<n>`: our server reading SQLite, against a
//! bare axum server that answers the same JSON documents from memory.
//!
//! Run with `cargo bench --bench get_runbook`. Settings, from the environment:
//!
//! - `BENCH_CONCURRENCY`: keep-alive HTTP/1.1 connections, one request in flight on each
//!   (default 32);
//! - `BENCH_SECONDS`: length of the measured phase for each server (default 5).
//!
//! The run seeds 10,000 runbooks in a temporary SQLite file (every 10th with a plan of steps
//! in various states, every 20th with a pull request), starts the real server in this process
//! with the rate limiter on but its limit out of reach, fetches every document once to build
//! the baseline's copy, then loads each server with random runbook numbers: a warm-up, then
//! the measured phase. Every request's latency is kept; the report gives requests per second,
//! p50 and p99. Any answer other than 200 fails the run.

use std::env;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use runbooks::config::Config;
use runbooks::domain::{NewRunbook, Plan, PlannedStep, RunbookNumber, StepNumber, StepState};
use runbooks::store::Store;
use runbooks::tokens;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Runbooks stored, numbered 1 to this.
const RUNBOOKS: u64 = 10_000;
const ORG: &str = "acme-corp";
const REPO: &str = "backend";
/// Concurrent creations while seeding (the store's pool holds 8 connections).
const SEED_WORKERS: usize = 8;
const WARM_UP: Duration = Duration::from_secs(1);
/// A request slower than this is counted as failed rather than waited for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// High enough never to trip, so the limiter's code still runs on every request.
const RATE_LIMIT_PER_MINUTE: u32 = 1_000_000_000;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the tokio runtime")?
        .block_on(run(settings))
}

struct Settings {
    concurrency: usize,
    measured: Duration,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let concurrency = env_or("BENCH_CONCURRENCY", 32)?;
        ensure!(concurrency > 0, "BENCH_CONCURRENCY must be at least 1");
        let seconds = env_or("BENCH_SECONDS", 5)?;
        ensure!(seconds > 0, "BENCH_SECONDS must be at least 1");
        Ok(Self {
            concurrency,
            measured: Duration::from_secs(seconds),
        })
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match env::var(name) {
        Ok(raw) => raw
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name} must be a whole number, not {raw:?}")),
        Err(_) => Ok(default),
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("could not create a temporary directory")?;
    let database_url = format!("sqlite://{}/bench.db", dir.path().display());
    let store = runbooks::store::connect(&database_url)
        .await
        .context("could not open the SQLite store")?;
    let token = tokens::generate();
    let token_id = store
        .create_token("bench", &[ORG.into()], &tokens::hash(&token))
        .await?
        .id;

    let started = Instant::now();
    seed(&store, token_id).await?;
    println!(
        "seeded {RUNBOOKS} runbooks in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut config = Config::for_database(&database_url);
    config.rate_limit_per_minute = RATE_LIMIT_PER_MINUTE;
    let server = runbooks::server::start_with_store(&config, store.clone()).await?;
    let authorization = HeaderValue::try_from(format!("Bearer {token}"))?;
    let ours = Target::new("runbooks (SQLite):", server.addr, authorization.clone());

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let documents = fetch_all(&client, &ours, settings.concurrency).await?;
    let bare_addr = start_bare(documents, authorization.clone()).await?;
    let bare = Target::new("bare axum (from memory):", bare_addr, authorization);

    let bare_result = benchmark(&client, &bare, &settings).await?;
    let ours_result = benchmark(&client, &ours, &settings).await?;
    report(&settings, &[(&bare, &bare_result), (&ours, &ours_result)]);
    println!(
        "ratio (runbooks / bare): {:.2} throughput",
        ours_result.per_second / bare_result.per_second
    );

    drop(client);
    server.shutdown().await
}

// ---------------------------------------------------------------------------------------------
// Seeding

/// Stores the runbooks, several creations at a time; a runbook's number is handed out by the
/// store, so what is added to it is decided from the number it got.
async fn seed(store: &Arc<dyn Store>, token_id: i64) -> anyhow::Result<()> {
    let created = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..SEED_WORKERS {
        let store = store.clone();
        let created = created.clone();
        workers.spawn(async move {
            while created.fetch_add(1, Ordering::Relaxed) < RUNBOOKS {
                let number = store.create_runbook(&new_runbook(), Some(token_id)).await?;
                if number.get() % 10 == 0 {
                    add_progress(store.as_ref(), number).await?;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a seeding task panicked")??;
    }
    Ok(())
}

fn new_runbook() -> NewRunbook {
    NewRunbook {
        org: ORG.into(),
        repo: REPO.into(),
        prompt: "Upgrade all React dependencies to v19 and fix the type errors that follow".into(),
        title: "React v19 upgrade".into(),
        oneshot: true,
        draft: None,
        pr_mode: None,
        target_branch: None,
        description: None,
        labels: vec!["dependencies".into()],
        author_email: Some("dev@acme.example".into()),
    }
}

/// Gives a runbook a plan (`1`, `1.1`, `1.2`, `2`), moves some of its leaf steps along and,
/// for every other one, records a pull request carrying steps 1.1 and 1.2.
async fn add_progress(store: &dyn Store, number: RunbookNumber) -> anyhow::Result<()> {
    store.append_steps(number, &plan()?).await?;
    let states: &[(&str, StepState)] = match (number.get() / 10) % 4 {
        0 => &[],
        1 => &[
            ("1.1", StepState::Completed),
            ("1.2", StepState::InProgress),
        ],
        2 => &[
            ("1.1", StepState::Completed),
            ("1.2", StepState::Completed),
            ("2", StepState::Completed),
        ],
        _ => &[("1.1", StepState::Completed), ("1.2", StepState::Failed)],
    };
    for (step, state) in states {
        let found = store
            .set_step_state(number, &step_number(step), *state)
            .await?;
        ensure!(found, "runbook {number} has no leaf step {step}");
    }
    if number.get() % 20 == 0 {
        let url = format!("https://github.com/{ORG}/{REPO}/pull/{number}");
        let steps = [step_number("1.1"), step_number("1.2")];
        store
            .record_pull_request(number, number.get().unsigned_abs(), &url, &steps)
            .await?;
    }
    Ok(())
}

fn plan() -> anyhow::Result<Plan> {
    let step = |number: &str, title: &str| PlannedStep {
        number: step_number(number),
        title: title.into(),
        details: format!("Step {number}: {title}."),
    };
    Ok(Plan::new(vec![
        step("1", "Upgrade the dependencies"),
        step("1.1", "Bump react and react-dom"),
        step("1.2", "Update the lock file"),
        step("2", "Fix the type errors"),
    ])?)
}

fn step_number(raw: &str) -> StepNumber {
    raw.parse().expect("the bench uses valid step numbers")
}

// ---------------------------------------------------------------------------------------------
// Servers and requests

/// A server under load, and how to ask it for a runbook.
#[derive(Clone)]
struct Target {
    name: &'static str,
    addr: SocketAddr,
    authorization: HeaderValue,
}

impl Target {
    fn new(name: &'static str, addr: SocketAddr, authorization: HeaderValue) -> Self {
        Self {
            name,
            addr,
            authorization,
        }
    }

    /// Fetches runbook `number`; anything but a 200 with its body is an error.
    async fn get(&self, client: &HttpClient, number: u64) -> anyhow::Result<Bytes> {
        let uri: Uri = format!("http://{}/api/v1/runbook/{number}", self.addr).parse()?;
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .body(Empty::new())?;
        let exchange = async {
            let response = client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("runbook {number}: no answer in {REQUEST_TIMEOUT:?}"))??;
        if status != StatusCode::OK {
            bail!(
                "runbook {number}: status {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }
}

/// Every runbook's document as our server serves it, at index `number - 1`.
async fn fetch_all(
    client: &HttpClient,
    target: &Target,
    concurrency: usize,
) -> anyhow::Result<Vec<Bytes>> {
    let mut tasks = JoinSet::new();
    for first in 1..=concurrency as u64 {
        let (client, target) = (client.clone(), target.clone());
        tasks.spawn(async move {
            let mut fetched = Vec::new();
            for number in (first..=RUNBOOKS).step_by(concurrency) {
                fetched.push((number, target.get(&client, number).await?));
            }
            anyhow::Ok(fetched)
        });
    }
    let mut documents = vec![Bytes::new(); RUNBOOKS as usize];
    while let Some(joined) = tasks.join_next().await {
        for (number, document) in joined.context("a fetching task panicked")?? {
            documents[number as usize - 1] = document;
        }
    }
    Ok(documents)
}

/// What the baseline serves: the documents, and the one `Authorization` value it accepts.
#[derive(Clone)]
struct Bare {
    documents: Arc<[Bytes]>,
    authorization: HeaderValue,
}

/// Starts the baseline on an OS-chosen loopback port; it serves until the runtime stops.
async fn start_bare(
    documents: Vec<Bytes>,
    authorization: HeaderValue,
) -> anyhow::Result<SocketAddr> {
    let state = Bare {
        documents: documents.into(),
        authorization,
    };
    let app = Router::new()
        .route("/api/v1/runbook/{runbook_number}", get(bare_get))
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

async fn bare_get(
    State(bare): State<Bare>,
    Path(number): Path<usize>,
    headers: HeaderMap,
) -> Response {
    if headers.get(header::AUTHORIZATION) != Some(&bare.authorization) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match number.checked_sub(1).and_then(|i| bare.documents.get(i)) {
        Some(document) => (
            [(header::CONTENT_TYPE, "application/json")],
            document.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Load and measurement

/// One server's measured phase.
struct Measurement {
    requests: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// A warm-up, whose results are dropped, then the measured phase.
async fn benchmark(
    client: &HttpClient,
    target: &Target,
    settings: &Settings,
) -> anyhow::Result<Measurement> {
    load(client, target, settings.concurrency, WARM_UP).await?;
    load(client, target, settings.concurrency, settings.measured).await
}

/// What one connection's loop saw.
#[derive(Default)]
struct Sample {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<anyhow::Error>,
}

/// Keeps `concurrency` requests in flight for `duration`; fails if any request failed.
async fn load(
    client: &HttpClient,
    target: &Target,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for seed in 0..concurrency as u64 {
        tasks.spawn(request_loop(client.clone(), target.clone(), deadline, seed));
    }
    let mut merged = Sample::default();
    while let Some(joined) = tasks.join_next().await {
        let sample = joined.context("a load task panicked")?;
        merged.latencies_us.extend(sample.latencies_us);
        merged.errors += sample.errors;
        merged.first_error = merged.first_error.or(sample.first_error);
    }
    let elapsed = started.elapsed();
    if let Some(error) = merged.first_error {
        let total = merged.errors + merged.latencies_us.len() as u64;
        bail!(
            "{}: {} of {total} requests failed; the first: {error:#}",
            target.name,
            merged.errors
        );
    }
    Ok(Measurement::new(merged.latencies_us, elapsed))
}

/// One connection: requests for random runbooks, one after the other, until the deadline.
async fn request_loop(client: HttpClient, target: Target, deadline: Instant, seed: u64) -> Sample {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut sample = Sample::default();
    while Instant::now() < deadline {
        let number = rng.random_range(1..=RUNBOOKS);
        let sent = Instant::now();
        match target.get(&client, number).await {
            Ok(_) => {
                let micros = sent.elapsed().as_micros();
                sample
                    .latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Err(error) => {
                sample.errors += 1;
                sample.first_error.get_or_insert(error);
            }
        }
    }
    sample
}

impl Measurement {
    fn new(mut latencies_us: Vec<u32>, elapsed: Duration) -> Self {
        latencies_us.sort_unstable();
        Self {
            requests: latencies_us.len(),
            per_second: latencies_us.len() as f64 / elapsed.as_secs_f64(),
            p50_ms: percentile_ms(&latencies_us, 0.50),
            p99_ms: percentile_ms(&latencies_us, 0.99),
        }
    }
}

/// The `q` quantile (nearest rank) of sorted microsecond latencies, in milliseconds.
fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted_us.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted_us[rank]) / 1000.0
}

fn report(settings: &Settings, results: &[(&Target, &Measurement)]) {
    println!(
        "GET /api/v1/runbook/<n>, {RUNBOOKS} runbooks stored (SQLite), {} connections, {} s each",
        settings.concurrency,
        settings.measured.as_secs()
    );
    for (target, m) in results {
        println!(
            "{:<26} {:>7.0} req/s   p50 {:.2} ms   p99 {:.2} ms   ({} requests)",
            target.name, m.per_second, m.p50_ms, m.p99_ms, m.requests
        );
    }
}
