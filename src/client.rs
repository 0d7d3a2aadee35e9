//! The client commands of the binary — `create`, `status` and `watch` — against a running
//! server's REST API.
//!
//! The token travels only in the `Authorization` header: it is never printed, never put in a
//! URL, and the argument structs hold it as a [`SecretString`].
//!
//! Exit statuses: 0 success (for `watch`: the runbook completed), 1 the watched runbook
//! failed, 2 the command could not be carried out (usage, network, or an error answered by
//! the server, printed as `error: <message>`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::actions::{StepDocument, StepsDocument};
use crate::api::runbooks::{RepositoryRef, RunbookDocument};
use crate::config::{CreateArgs, ServerArgs, StatusArgs, WatchArgs};
use crate::domain::{PrMode, RepoName, RunbookNumber, RunbookStatus};

/// `watch`: the runbook failed.
pub const EXIT_FAILED: u8 = 1;
/// The command could not be carried out: usage, network, or an error answered by the server.
pub const EXIT_ERROR: u8 = 2;
/// Interrupted by Ctrl-C (128 + SIGINT, as shells do).
const EXIT_INTERRUPTED: u8 = 130;

/// Attempts of a request whose failure may be passing (network, 429, a proxy's 502-504).
const ATTEMPTS: u32 = 4;
/// Wait before the second attempt; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest `Retry-After` honoured before giving up.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why a client command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad arguments or configuration, found before asking the server.
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached (after retries).
    #[error("could not reach the runbooks server at {url}: {cause}")]
    Network { url: String, cause: String },
    /// The server answered with an error (`{"error", "message"}`).
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server's answer is not what the API describes.
    #[error("unexpected answer from {url}: {cause}")]
    Decode { url: String, cause: String },
}

impl ClientError {
    /// A hint printed after the error, where one helps.
    fn hint(&self) -> Option<&'static str> {
        match self {
            ClientError::Api { status: 401, .. } => Some(
                "check RUNBOOKS_TOKEN (or --token): an operator creates tokens with `runbooks token create --org ORG`",
            ),
            ClientError::Network { .. } => {
                Some("is the server running? Its address is set with --url or RUNBOOKS_URL")
            }
            _ => None,
        }
    }
}

/// `runbooks create`.
pub async fn create(args: CreateArgs) -> ExitCode {
    conclude(create_runbook(args).await)
}

/// `runbooks status`.
pub async fn status(args: StatusArgs) -> ExitCode {
    conclude(show_status(args).await)
}

/// `runbooks watch`.
pub async fn watch(args: WatchArgs) -> ExitCode {
    let result = match Client::new(&args.server) {
        Ok(client) => watch_runbook(&client, args.number, args.options.interval).await,
        Err(e) => Err(e),
    };
    conclude(result)
}

fn conclude(result: Result<ExitCode, ClientError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", clean_line(&e.to_string()));
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Body of `POST /api/v1/runbook`: only the fields given are sent, so the server's defaults
/// (and the repository's configuration) apply to the others.
#[derive(Debug, Serialize)]
struct CreateBody {
    repository: RepositoryRef,
    prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oneshot: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    draft: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pr_mode: Option<PrMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    author_email: Option<String>,
}

async fn create_runbook(args: CreateArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.server)?;
    let repository = repository(&args)?;
    let prompt = read_prompt(&args).await?;
    let body = CreateBody {
        repository,
        prompt,
        title: args.title,
        oneshot: args.plan.then_some(false),
        draft: match (args.draft, args.ready) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        pr_mode: args.pr_mode,
        target_branch: args.target,
        description: args.description,
        labels: args.labels,
        author_email: args.author_email,
    };
    let (raw, doc): (_, RunbookDocument) = client
        .request(Method::POST, "/api/v1/runbook", Some(&body))
        .await?;
    if args.json {
        say(raw.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    say(&format!(
        "runbook {} created: {}",
        doc.runbook_number,
        clean_line(&doc.url)
    ));
    if args.watch {
        let number =
            RunbookNumber::try_from(doc.runbook_number).map_err(|e| ClientError::Decode {
                url: format!("{}/api/v1/runbook", client.base),
                cause: format!("runbook_number {}: {e}", doc.runbook_number),
            })?;
        return watch_runbook(&client, number, args.watch_options.interval).await;
    }
    Ok(ExitCode::SUCCESS)
}

fn repository(args: &CreateArgs) -> Result<RepositoryRef, ClientError> {
    if let (Some(org), Some(name)) = (&args.org, &args.repo) {
        return Ok(RepositoryRef {
            org: org.clone(),
            name: name.clone(),
        });
    }
    let given = args.repository.as_deref().unwrap_or("");
    match given.parse::<RepoName>() {
        Ok(full_name) => Ok(RepositoryRef {
            org: full_name.owner().to_string(),
            name: full_name.name().to_string(),
        }),
        Err(_) => Err(ClientError::Usage(format!(
            "--repository must be ORG/NAME, got {given:?}"
        ))),
    }
}

async fn read_prompt(args: &CreateArgs) -> Result<String, ClientError> {
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(prompt), _) => prompt.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut text = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::stdin(), &mut text)
                .await
                .map_err(|e| {
                    ClientError::Usage(format!(
                        "could not read the prompt from standard input: {e}"
                    ))
                })?;
            text
        }
        (None, Some(path)) => tokio::fs::read_to_string(path).await.map_err(|e| {
            ClientError::Usage(format!(
                "could not read the prompt from {}: {e}",
                path.display()
            ))
        })?,
        (None, None) => String::new(),
    };
    if prompt.trim().is_empty() {
        return Err(ClientError::Usage("the prompt is empty".to_string()));
    }
    Ok(prompt)
}

async fn show_status(args: StatusArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.server)?;
    let (raw, doc) = client.runbook(args.number).await?;
    if args.json {
        say(raw.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    let steps = client.steps(args.number).await?;
    say(render_status(&doc, &steps.steps).trim_end());
    Ok(ExitCode::SUCCESS)
}

/// The human view of `status`: status, counts, the step tree, commits, errors and PRs.
pub fn render_status(doc: &RunbookDocument, steps: &[StepDocument]) -> String {
    let mut out = format!(
        "runbook {}: {}\n{}\n{}\n",
        doc.runbook_number,
        doc.status,
        clean_line(&doc.url),
        counts_line(doc)
    );
    if !steps.is_empty() {
        out.push_str("\nsteps:\n");
        for step in steps {
            let indent = "  ".repeat(depth(&step.number) + 1);
            let mut details = vec![clean_line(&step.state)];
            if let Some(sha) = &step.commit_sha {
                details.push(format!("commit {}", short_sha(sha)));
            }
            if let Some(pr) = step.pull_request {
                details.push(format!("PR #{pr}"));
            }
            out.push_str(&format!(
                "{indent}{} {}  {}  ({})\n",
                symbol(&step.state),
                clean_line(&step.number),
                clean_line(&step.title),
                details.join(", ")
            ));
            if let Some(error) = &step.error {
                out.push_str(&error_lines(&format!("{indent}    "), error));
            }
        }
    }
    if !doc.pull_requests.is_empty() {
        out.push_str("\npull requests:\n");
        for pr in &doc.pull_requests {
            out.push_str(&pull_request_line(pr));
        }
    }
    out
}

fn counts_line(doc: &RunbookDocument) -> String {
    let c = &doc.steps;
    if c.total == 0 {
        return "no steps yet".to_string();
    }
    let parts: Vec<String> = [
        (c.completed, "completed"),
        (c.in_progress, "in progress"),
        (c.queued, "queued"),
        (c.not_started, "not started"),
        (c.failed, "failed"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    format!(
        "{} leaf step{}: {}",
        c.total,
        if c.total == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

fn pull_request_line(pr: &crate::api::runbooks::PullRequestDocument) -> String {
    let steps: Vec<String> = pr.step_numbers.iter().map(|s| clean_line(s)).collect();
    let steps = match steps.len() {
        0 => String::new(),
        1 => format!(" (step {})", steps[0]),
        _ => format!(" (steps {})", steps.join(", ")),
    };
    format!("  #{} {}{steps}\n", pr.number, clean_line(&pr.url))
}

fn error_lines(indent: &str, error: &str) -> String {
    let mut out = String::new();
    for (i, line) in clean_text(error).lines().enumerate() {
        let label = if i == 0 { "error: " } else { "       " };
        out.push_str(&format!("{indent}{label}{line}\n"));
    }
    out
}

/// The nesting depth of a dotted step number: "2" is 0, "2.1" is 1.
fn depth(number: &str) -> usize {
    number.matches('.').count()
}

fn symbol(state: &str) -> &'static str {
    match state {
        "completed" => "✓",
        "failed" => "✗",
        "in_progress" => "▶",
        "queued" => "…",
        "not_started" => "○",
        "partially_completed" => "◐",
        "generating_steps" => "…",
        _ => "?",
    }
}

fn short_sha(sha: &str) -> String {
    clean_line(&sha.chars().take(7).collect::<String>())
}

/// Text from the server, safe for a terminal: control characters (escape sequences
/// included) are replaced, line breaks kept.
fn clean_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '\n' || c == '\t' || !c.is_control() {
                c
            } else {
                '\u{FFFD}'
            }
        })
        .collect()
}

/// Like [`clean_text`], on one line.
fn clean_line(text: &str) -> String {
    clean_text(text)
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect()
}

/// Prints a line on stdout; a closed pipe (`| head`) is not an error worth a panic.
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Where `watch` shows its progress: a bar on a terminal, plain lines otherwise.
enum View {
    Bar {
        bar: ProgressBar,
        /// Whether the bar has steps to count yet (a spinner alone until then).
        counting: std::cell::Cell<bool>,
    },
    Plain,
}

impl View {
    fn new() -> Self {
        if !std::io::stdout().is_terminal() {
            return View::Plain;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        bar.set_style(Self::style(false));
        bar.enable_steady_tick(Duration::from_millis(120));
        View::Bar {
            bar,
            counting: std::cell::Cell::new(false),
        }
    }

    fn style(counting: bool) -> ProgressStyle {
        let template = if counting {
            "{spinner} [{bar:30}] {pos}/{len} {wide_msg}"
        } else {
            "{spinner} {wide_msg}"
        };
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .progress_chars("=> ")
    }

    fn line(&self, line: &str) {
        match self {
            View::Bar { bar, .. } => bar.println(line),
            View::Plain => say(line),
        }
    }

    fn progress(&self, completed: u32, total: u32, message: String) {
        if let View::Bar { bar, counting } = self {
            if counting.get() != (total > 0) {
                counting.set(total > 0);
                bar.set_style(Self::style(total > 0));
            }
            bar.set_length(u64::from(total));
            bar.set_position(u64::from(completed));
            bar.set_message(message);
        }
    }

    fn clear(&self) {
        if let View::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

/// What `watch` remembers between two polls.
#[derive(Default)]
struct Watched {
    /// Leaf states by step number; a leaf not seen yet counts as not started.
    leaves: HashMap<String, String>,
    leaf_count: usize,
    status: Option<RunbookStatus>,
    hinted: bool,
}

/// Follows a runbook until it completes (exit 0) or fails (exit 1).
pub async fn watch_runbook(
    client: &Client,
    number: RunbookNumber,
    interval: Duration,
) -> Result<ExitCode, ClientError> {
    let view = View::new();
    // Ctrl-C at any point (a request included) clears the bar and ends with 130.
    let result = tokio::select! {
        result = watch_loop(client, number, interval, &view) => result,
        Ok(()) = tokio::signal::ctrl_c() => Ok(Ending::Interrupted),
    };
    view.clear();
    match result? {
        Ending::Completed(doc) => {
            say(&format!(
                "runbook {number} completed: {}/{} steps",
                doc.steps.completed, doc.steps.total
            ));
            for pr in &doc.pull_requests {
                say(pull_request_line(pr).trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        Ending::Failed(doc, steps) => {
            let failed: Vec<&StepDocument> = steps
                .iter()
                .filter(|s| s.leaf && s.state == "failed")
                .collect();
            say(&format!(
                "runbook {number} failed: {} of {} steps failed, {} completed",
                doc.steps.failed, doc.steps.total, doc.steps.completed
            ));
            for step in failed {
                say(&format!(
                    "✗ step {} failed: {}",
                    clean_line(&step.number),
                    clean_line(&step.title)
                ));
                if let Some(error) = &step.error {
                    say(error_lines("    ", error).trim_end());
                }
            }
            for pr in &doc.pull_requests {
                say(pull_request_line(pr).trim_end());
            }
            Ok(ExitCode::from(EXIT_FAILED))
        }
        Ending::Interrupted => Ok(ExitCode::from(EXIT_INTERRUPTED)),
    }
}

enum Ending {
    Completed(RunbookDocument),
    Failed(RunbookDocument, Vec<StepDocument>),
    Interrupted,
}

async fn watch_loop(
    client: &Client,
    number: RunbookNumber,
    interval: Duration,
    view: &View,
) -> Result<Ending, ClientError> {
    let mut watched = Watched::default();
    loop {
        // The document first: the step tree read after it is at least as recent.
        let (_, doc) = client.runbook(number).await?;
        let steps = if doc.steps.total > 0 {
            client.steps(number).await?.steps
        } else {
            Vec::new()
        };
        for line in observe(&mut watched, number, &doc, &steps) {
            view.line(&line);
        }
        view.progress(
            doc.steps.completed,
            doc.steps.total,
            current_step(&doc, &steps),
        );
        match doc.status {
            RunbookStatus::Completed => return Ok(Ending::Completed(doc)),
            RunbookStatus::Failed => return Ok(Ending::Failed(doc, steps)),
            _ => {}
        }
        tokio::time::sleep(interval).await;
    }
}

/// The lines one poll adds to the display: the runbook at first sight, a plan that appears
/// or grows, every leaf step whose state changed, and the hint that a runbook waits for
/// `execute`.
fn observe(
    watched: &mut Watched,
    number: RunbookNumber,
    doc: &RunbookDocument,
    steps: &[StepDocument],
) -> Vec<String> {
    let mut lines = Vec::new();
    if watched.status.is_none() {
        lines.push(format!(
            "runbook {number}: {} ({})",
            doc.status,
            clean_line(&doc.url)
        ));
    }
    let leaves: Vec<&StepDocument> = steps.iter().filter(|s| s.leaf).collect();
    if leaves.len() > watched.leaf_count {
        lines.push(if watched.leaf_count == 0 {
            format!("planned {} steps", leaves.len())
        } else {
            format!(
                "planned {} more steps ({} in all)",
                leaves.len() - watched.leaf_count,
                leaves.len()
            )
        });
        watched.leaf_count = leaves.len();
    }
    for leaf in leaves {
        let before = watched
            .leaves
            .get(&leaf.number)
            .map(String::as_str)
            .unwrap_or("not_started");
        if before != leaf.state {
            let commit = match (&leaf.commit_sha, leaf.state.as_str()) {
                (Some(sha), "completed") => format!(" (commit {})", short_sha(sha)),
                _ => String::new(),
            };
            lines.push(format!(
                "{} step {} {}: {}{commit}",
                symbol(&leaf.state),
                clean_line(&leaf.number),
                clean_line(&leaf.state).replace('_', " "),
                clean_line(&leaf.title)
            ));
            watched
                .leaves
                .insert(leaf.number.clone(), leaf.state.clone());
        }
    }
    let idle = doc.steps.in_progress == 0 && doc.steps.queued == 0;
    let waiting = match doc.status {
        RunbookStatus::NotStarted => true,
        RunbookStatus::PartiallyCompleted => idle,
        _ => false,
    };
    if waiting && !watched.hinted {
        lines.push(format!(
            "runbook {number} waits for `execute` (POST /api/v1/runbook/{number}/execute); \
             still watching, Ctrl-C to stop"
        ));
    }
    watched.hinted = waiting;
    watched.status = Some(doc.status);
    lines
}

/// The bar's message: the running step, else what the runbook waits for.
fn current_step(doc: &RunbookDocument, steps: &[StepDocument]) -> String {
    if let Some(step) = steps
        .iter()
        .find(|s| s.leaf && s.state == "in_progress")
        .or_else(|| steps.iter().find(|s| s.leaf && s.state == "queued"))
    {
        return format!("{} {}", clean_line(&step.number), clean_line(&step.title));
    }
    match doc.status {
        RunbookStatus::GeneratingSteps => "generating the plan".to_string(),
        RunbookStatus::NotStarted | RunbookStatus::PartiallyCompleted => {
            "waiting for execute".to_string()
        }
        _ => String::new(),
    }
}

/// A REST client of one server, with one token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

impl Client {
    pub fn new(server: &ServerArgs) -> Result<Self, ClientError> {
        let token = server
            .token
            .as_ref()
            .map(|t| t.expose_secret().trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ClientError::Usage(
                    "no API token: set RUNBOOKS_TOKEN (or pass --token); an operator creates \
                     one with `runbooks token create --org ORG`"
                        .to_string(),
                )
            })?;
        if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ClientError::Usage(
                "the API token contains spaces or control characters".to_string(),
            ));
        }
        let base = server.url.trim().trim_end_matches('/').to_string();
        let host = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"));
        if !matches!(host, Some(h) if !h.is_empty() && !h.contains(char::is_whitespace)) {
            return Err(ClientError::Usage(format!(
                "the server URL must be an http:// or https:// URL, got {:?}",
                server.url
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("runbooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Usage(format!("could not set up HTTP: {e}")))?;
        Ok(Self {
            http,
            base,
            token: SecretString::from(token),
        })
    }

    /// `GET /api/v1/runbook/<n>`: the answer as sent and the document.
    pub async fn runbook(
        &self,
        number: RunbookNumber,
    ) -> Result<(String, RunbookDocument), ClientError> {
        self.request::<(), _>(Method::GET, &format!("/api/v1/runbook/{number}"), None)
            .await
    }

    /// `GET /api/v1/runbook/<n>/steps`.
    pub async fn steps(&self, number: RunbookNumber) -> Result<StepsDocument, ClientError> {
        let (_, steps) = self
            .request::<(), _>(
                Method::GET,
                &format!("/api/v1/runbook/{number}/steps"),
                None,
            )
            .await?;
        Ok(steps)
    }

    /// Sends a request and answers its JSON body, as sent and decoded. Retries what may pass:
    /// any network failure of a GET, a connection that could not be opened (nothing was
    /// sent), 429 after its `Retry-After`, and 502-504 (a proxy's) to a GET.
    pub async fn request<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(String, T), ClientError> {
        let url = format!("{}{path}", self.base);
        let idempotent = method == Method::GET;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let last = attempt >= ATTEMPTS;
            let wait = match self.attempt(&method, &url, body).await {
                Attempt::Done(result) => return result.and_then(|raw| decode(&url, raw)),
                Attempt::Network { error, sent } => {
                    if last || (sent && !idempotent) {
                        return Err(error);
                    }
                    backoff
                }
                Attempt::Busy { error, retry_after } => {
                    let wait = retry_after.unwrap_or(backoff);
                    if last || wait > MAX_RETRY_AFTER || !(idempotent || retry_after.is_some()) {
                        return Err(error);
                    }
                    wait
                }
            };
            tokio::time::sleep(wait).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    async fn attempt<B: Serialize>(&self, method: &Method, url: &str, body: Option<&B>) -> Attempt {
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(self.token.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let network = |e: reqwest::Error| ClientError::Network {
            url: url.to_string(),
            cause: root_cause(&e),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Attempt::Network {
                    sent: !e.is_connect(),
                    error: network(e),
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                return Attempt::Network {
                    sent: true,
                    error: network(e),
                };
            }
        };
        if status.is_success() {
            return Attempt::Done(String::from_utf8(bytes.to_vec()).map_err(|e| {
                ClientError::Decode {
                    url: url.to_string(),
                    cause: e.to_string(),
                }
            }));
        }
        let error = api_error(status, &bytes);
        match status {
            StatusCode::TOO_MANY_REQUESTS => Attempt::Busy { error, retry_after },
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
                if method == Method::GET =>
            {
                Attempt::Busy { error, retry_after }
            }
            _ => Attempt::Done(Err(error)),
        }
    }
}

enum Attempt {
    /// The body of a successful answer, or the error to report.
    Done(Result<String, ClientError>),
    /// The request failed on the way; `sent`: it may have reached the server.
    Network { error: ClientError, sent: bool },
    /// Refused for now (429, or a proxy's 502-504).
    Busy {
        error: ClientError,
        retry_after: Option<Duration>,
    },
}

fn decode<T: DeserializeOwned>(url: &str, raw: String) -> Result<(String, T), ClientError> {
    match serde_json::from_str(&raw) {
        Ok(doc) => Ok((raw, doc)),
        Err(e) => Err(ClientError::Decode {
            url: url.to_string(),
            cause: e.to_string(),
        }),
    }
}

/// The server's `{"error", "message"}`, or a sentence about an answer without one (a proxy's
/// page, say).
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => ClientError::Api {
            status: status.as_u16(),
            code: e.error,
            message: e.message,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: String::new(),
            message: format!("the server answered HTTP {status}"),
        },
    }
}

/// The innermost cause of a request error ("Connection refused (os error 111)"), which says
/// more than reqwest's own "error sending request".
fn root_cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "the request timed out".to_string();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StepCounts;

    fn doc(status: RunbookStatus, steps: StepCounts) -> RunbookDocument {
        RunbookDocument {
            runbook_number: 4,
            url: "http://x/runbooks/4".to_string(),
            status,
            steps,
            pull_requests: Vec::new(),
        }
    }

    fn leaf(number: &str, state: &str) -> StepDocument {
        StepDocument {
            number: number.to_string(),
            title: format!("step {number}"),
            leaf: true,
            state: state.to_string(),
            commit_sha: None,
            error: None,
            pull_request: None,
            usage: None,
        }
    }

    #[test]
    fn text_from_the_server_cannot_drive_the_terminal() {
        assert_eq!(clean_line("a\u{1b}[2Jb\nc\td"), "a\u{FFFD}[2Jb c d");
        assert_eq!(clean_text("x\ny\u{7}"), "x\ny\u{FFFD}");
    }

    #[test]
    fn steps_are_indented_by_depth() {
        assert_eq!(depth("2"), 0);
        assert_eq!(depth("2.1"), 1);
        assert_eq!(depth("2.1.3"), 2);
    }

    #[test]
    fn watch_reports_changes_once_and_the_execute_hint_once_per_wait() {
        let mut watched = Watched::default();
        let counts = StepCounts {
            total: 2,
            not_started: 2,
            ..StepCounts::default()
        };
        let planned = [leaf("1", "not_started"), leaf("2", "not_started")];
        let lines = observe(
            &mut watched,
            RunbookNumber::try_from(4).unwrap(),
            &doc(RunbookStatus::NotStarted, counts),
            &planned,
        );
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[1] == "planned 2 steps" && lines[2].contains("waits for `execute`"));
        let again = observe(
            &mut watched,
            RunbookNumber::try_from(4).unwrap(),
            &doc(RunbookStatus::NotStarted, counts),
            &planned,
        );
        assert!(again.is_empty(), "{again:?}");

        let running = StepCounts {
            total: 2,
            in_progress: 1,
            not_started: 1,
            ..StepCounts::default()
        };
        let lines = observe(
            &mut watched,
            RunbookNumber::try_from(4).unwrap(),
            &doc(RunbookStatus::InProgress, running),
            &[leaf("1", "in_progress"), leaf("2", "not_started")],
        );
        assert_eq!(lines, ["▶ step 1 in progress: step 1"]);
    }
}
