//! The dashboard's HTML, rendered on the server with `maud` (which escapes every value it
//! is given: titles, prompts, errors and agent output are text, never markup).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::RunbookView;
use super::session::Reader;
use crate::domain::usage::{count_text, duration_text};
use crate::domain::{PrMode, PullState, RunbookStatus, StepCounts, StepKind};
use crate::http::AppState;
use crate::store::{RunbookRecord, StepRecord};

/// What every page needs to know: where the dashboard lives, and who is looking.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The path of the public URL (`""` at the root of its host), put before every link.
    pub base: String,
    /// The session's CSRF secret, for the forms of a signed-in page.
    pub csrf: Option<String>,
    /// Who is signed in: the token's name and organisations.
    pub who: Option<String>,
}

impl Ctx {
    pub fn anonymous(state: &AppState) -> Self {
        let url = &state.public_url;
        let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
        let base = url[after_scheme..]
            .find('/')
            .map(|i| url[after_scheme + i..].trim_end_matches('/').to_string())
            .unwrap_or_default();
        Self {
            base,
            csrf: None,
            who: None,
        }
    }

    pub fn signed_in(state: &AppState, reader: &Reader) -> Self {
        let token = &reader.session.token;
        Self {
            csrf: Some(reader.csrf().to_string()),
            who: Some(format!("{} ({})", token.name, token.orgs.join(", "))),
            ..Self::anonymous(state)
        }
    }

    /// A path of the dashboard, as the browser must ask for it.
    pub fn href(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #ffffff;
  --panel: #f6f8fa; --link: #0969da; --ok: #1a7f37; --bad: #cf222e; --run: #9a6700; --wait: #59636e; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9198a1; --line: #3d444d;
  --bg: #0d1117; --panel: #151b23; --link: #4493f8; --ok: #3fb950; --bad: #f85149; --run: #d29922; --wait: #9198a1; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header.top { display: flex; gap: 1rem; align-items: center; padding: .6rem 1.5rem; border-bottom: 1px solid var(--line); background: var(--panel); }
header.top .brand { font-weight: 700; color: var(--fg); text-decoration: none; }
header.top .who { margin-left: auto; color: var(--muted); }
main { max-width: 72rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
a { color: var(--link); }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.muted, .crumbs { color: var(--muted); }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0 0 1rem; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; }
pre { white-space: pre-wrap; word-break: break-word; background: var(--panel); border: 1px solid var(--line);
  border-radius: 6px; padding: .6rem .8rem; margin: .4rem 0; max-height: 28rem; overflow: auto; font-size: 13px; }
pre.error { border-color: var(--bad); color: var(--bad); }
.badge { display: inline-block; padding: 0 .55rem; border-radius: 1rem; font-size: 12px; font-weight: 600;
  border: 1px solid currentColor; white-space: nowrap; }
.s-completed { color: var(--ok); } .s-failed { color: var(--bad); } .s-in_progress { color: var(--run); }
.s-queued, .s-not_started, .s-generating_steps, .s-partially_completed { color: var(--wait); }
.summary { display: flex; gap: .8rem; align-items: center; flex-wrap: wrap; }
.summary #status { font-size: 14px; }
.actions { display: flex; gap: .5rem; flex-wrap: wrap; margin: .8rem 0; }
.actions form { display: flex; gap: .3rem; margin: 0; }
button { font: inherit; padding: .3rem .9rem; border-radius: 6px; border: 1px solid var(--line); background: var(--panel);
  color: var(--fg); cursor: pointer; }
button.primary { background: var(--ok); border-color: var(--ok); color: #fff; }
button.danger { color: var(--bad); }
select, input[type=text], input[type=password] { font: inherit; padding: .3rem .5rem; border: 1px solid var(--line);
  border-radius: 6px; background: var(--bg); color: var(--fg); }
ol.steps { list-style: none; padding: 0; margin: 0; border: 1px solid var(--line); border-radius: 6px; }
li.step { padding: .45rem .8rem; border-top: 1px solid var(--line); }
li.step:first-child { border-top: none; }
li.step .head { display: flex; gap: .6rem; align-items: baseline; flex-wrap: wrap; }
li.step .num { font-variant-numeric: tabular-nums; color: var(--muted); min-width: 2.5rem; }
li.step.parent .title { font-weight: 600; }
li.step .sha, li.step .time, li.step .usage { color: var(--muted); font-size: 13px; }
.d2 { padding-left: 2.3rem; } .d3 { padding-left: 4.1rem; } .d4 { padding-left: 5.9rem; }
.d5, .d6, .d7, .d8 { padding-left: 7.7rem; }
details summary { cursor: pointer; color: var(--muted); font-size: 13px; }
table.list { width: 100%; border-collapse: collapse; }
table.list th, table.list td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
table.list th { color: var(--muted); font-weight: 600; font-size: 13px; }
form.filters { display: flex; gap: .5rem; align-items: end; flex-wrap: wrap; margin: .5rem 0 1rem; }
form.filters label, form.login label { display: flex; flex-direction: column; font-size: 13px; color: var(--muted); }
form.login { display: flex; flex-direction: column; gap: .8rem; max-width: 36rem; }
form.login input { width: 100%; }
.notice { border: 1px solid var(--bad); color: var(--bad); border-radius: 6px; padding: .5rem .8rem; margin: .8rem 0; }
.pager { margin-top: 1rem; }
section#live { margin-top: 1rem; }
"#;

/// Live updates: the server sends the re-rendered live part of the page when it changes;
/// this swaps it in, keeping open `<details>` open.
const SCRIPT: &str = r#"
(function () {
  var live = document.getElementById('live');
  var note = document.getElementById('live-note');
  if (!live || !window.EventSource) return;
  var source = new EventSource(live.getAttribute('data-events'));
  source.addEventListener('live', function (event) {
    var open = [];
    live.querySelectorAll('details[open]').forEach(function (d) { if (d.id) open.push(d.id); });
    live.innerHTML = event.data;
    open.forEach(function (id) { var d = document.getElementById(id); if (d) d.open = true; });
    if (note) note.textContent = 'Updated live at ' + new Date().toLocaleTimeString() + '.';
  });
  source.onopen = function () { if (note && !note.textContent) note.textContent = 'Live updates on.'; };
  source.onerror = function () {
    if (note && source.readyState === EventSource.CLOSED) note.textContent = 'Live updates stopped: refresh the page.';
  };
})();
"#;

/// A whole page with the security headers; the inline style (and script) run by nonce.
fn render(status: StatusCode, title: &str, ctx: &Ctx, body: Markup, script: bool) -> Response {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let nonce = hex::encode(bytes);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · runbooks" }
                style nonce=(nonce) { (PreEscaped(STYLE)) }
            }
            body {
                header.top {
                    a.brand href=(ctx.href("/runbooks")) { "runbooks" }
                    @if let (Some(who), Some(csrf)) = (&ctx.who, &ctx.csrf) {
                        span.who { "Signed in with " (who) }
                        form method="post" action=(ctx.href("/logout")) {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
                @if script {
                    script nonce=(nonce) { (PreEscaped(SCRIPT)) }
                }
            }
        }
    };
    let csp = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; \
         img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    );
    let mut response = (status, page.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).expect("a header of ASCII"),
    );
    response
}

/// The page of an error: what went wrong, and the way back.
pub fn failure(ctx: &Ctx, status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        h1 { (title) }
        p.notice role="alert" { (message) }
        p { a href=(ctx.href("/runbooks")) { "All runbooks" } " · " a href=(ctx.href("/login")) { "Sign in" } }
    };
    render(status, title, ctx, body, false)
}

/// `GET /api/graphql`: how to use the GraphQL endpoint, and its schema. GraphiQL is not
/// served: it would be third-party script on the origin that holds dashboard sessions.
pub fn graphql(ctx: &Ctx, public_url: &str, sdl: &str) -> Response {
    let endpoint = format!("{public_url}/api/graphql");
    let example = format!(
        "curl -s {endpoint} -H \"Authorization: Bearer $TOKEN\" \\\n  \
         -H 'Content-Type: application/json' \\\n  \
         -d '{{\"query\": \"{{ runbooks(first: 10) {{ nodes {{ number title status }} }} }}\"}}'"
    );
    let body = html! {
        h1 { "GraphQL API" }
        p { "This is the GraphQL endpoint of runbooks. Send queries and mutations as a "
            code { "POST" } " of a JSON object — " code { "query" } ", and optionally "
            code { "variables" } " and " code { "operationName" } " — with "
            code { "Content-Type: application/json" } " and an API token (from "
            code { "runbooks token create" } ") in " code { "Authorization: Bearer …" } "." }
        pre { code { (example) } }
        p { "The server does not serve GraphiQL, so that no third-party script runs where dashboard \
             sessions live. Any GraphQL client (a desktop or editor GraphQL client, or GraphiQL \
             run on your own machine) can explore this API: point it at "
            code { (endpoint) } " with the same header; introspection is on." }
        p { "Each request may be up to 16 KiB of query text (pass long values such as prompts in "
            code { "variables" } "), with at most 32 fragments, 100 aliased fields and 1,000 fields \
             with its fragments expanded; every top-level field counts as one request against the \
             token's rate limit." }
        details {
            summary { "Schema" }
            pre { code { (sdl) } }
        }
        p { a href=(ctx.href("/runbooks")) { "The dashboard" } }
    };
    render(StatusCode::OK, "GraphQL API", ctx, body, false)
}

/// The sign-in form. The token goes in the body of a POST, never in a URL.
pub fn login(ctx: &Ctx, next: Option<&str>, message: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(message) = message {
            p.notice role="alert" { (message) }
        }
        form.login method="post" action=(ctx.href("/login")) {
            label for="token" {
                "API token (from " code { "runbooks token create" } ")"
                input #token type="password" name="token" autocomplete="off" required
                    autofocus spellcheck="false";
            }
            @if let Some(next) = next {
                input type="hidden" name="next" value=(next);
            }
            div { button.primary type="submit" { "Sign in" } }
        }
        p.muted { "You see the runbooks of your token's organisations. The session lasts 12 hours, \
                   and ends at once when the token is revoked." }
    };
    render(status, "Sign in", ctx, body, false)
}

/// `2024-05-01 12:00:03 UTC`.
fn when(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

fn took(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Only web links are made links (a stored URL is never a `javascript:` one).
fn web_link(url: &str) -> Option<&str> {
    (url.starts_with("https://") || url.starts_with("http://")).then_some(url)
}

fn link_or_text(url: &str, text: &str) -> Markup {
    html! {
        @match web_link(url) {
            Some(href) => a href=(href) { (text) },
            None => (text),
        }
    }
}

fn badge(state: &str) -> Markup {
    html! { span class={ "badge s-" (state) } { (state) } }
}

fn counts_text(counts: &StepCounts) -> String {
    let mut parts = vec![format!(
        "{} of {} steps completed",
        counts.completed, counts.total
    )];
    for (n, what) in [
        (counts.in_progress, "in progress"),
        (counts.queued, "queued"),
        (counts.failed, "failed"),
        (counts.not_started, "not started"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(" · ")
}

#[derive(Debug, Clone)]
pub struct ListRow {
    pub runbook: RunbookRecord,
    pub status: RunbookStatus,
    pub counts: StepCounts,
    pub pulls: Vec<(u64, String)>,
}

/// What the list was asked for, shown again in its form.
#[derive(Debug, Clone, Default)]
pub struct ListQueryShown {
    pub repository: String,
    pub status: String,
}

pub fn list(
    ctx: &Ctx,
    shown: &ListQueryShown,
    rows: &[ListRow],
    next: Option<String>,
    message: Option<&str>,
    status: StatusCode,
) -> Response {
    let body = html! {
        h1 { "Runbooks" }
        form.filters method="get" action=(ctx.href("/runbooks")) {
            label { "Repository (org/name or name)"
                input type="text" name="repository" value=(shown.repository) placeholder="acme-corp/backend";
            }
            label { "Status"
                select name="status" {
                    option value="" selected[shown.status.is_empty()] { "any" }
                    @for s in RunbookStatus::ALL {
                        option value=(s.as_str()) selected[shown.status == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if !shown.repository.is_empty() || !shown.status.is_empty() {
                a href=(ctx.href("/runbooks")) { "Clear" }
            }
        }
        @if let Some(message) = message {
            p.notice role="alert" { (message) }
        }
        @if rows.is_empty() {
            p.muted { "No runbooks to show." }
        } @else {
            table.list {
                thead { tr { th { "#" } th { "Title" } th { "Repository" } th { "Status" } th { "Steps" } th { "Pull requests" } th { "Created" } } }
                tbody {
                    @for row in rows {
                        tr.runbook data-number=(row.runbook.number) data-status=(row.status.as_str()) {
                            td { a href=(ctx.href(&format!("/runbooks/{}", row.runbook.number))) { "#" (row.runbook.number) } }
                            td { a href=(ctx.href(&format!("/runbooks/{}", row.runbook.number))) { (row.runbook.title) } }
                            td { (row.runbook.org) "/" (row.runbook.repo) }
                            td { (badge(row.status.as_str())) }
                            td { (row.counts.completed) "/" (row.counts.total) }
                            td {
                                @for (i, (number, url)) in row.pulls.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (link_or_text(url, &format!("#{number}")))
                                }
                            }
                            td.muted { (when(row.runbook.created_at_ms)) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            p.pager { a rel="next" href=(next) { "Next (older) →" } }
        }
    };
    render(status, "Runbooks", ctx, body, false)
}

/// A step's element id (`step-1-2`): dots are awkward in CSS selectors.
fn step_id(step: &StepRecord) -> String {
    step.number.to_string().replace('.', "-")
}

fn step_item(view: &RunbookView, step: &StepRecord) -> Markup {
    let state = step.shown_state(&view.steps).as_str();
    let depth = step.number.depth().clamp(1, 8);
    let class = format!("step d{depth}{}", if step.is_leaf { "" } else { " parent" });
    let pr_url = step.pr_number.and_then(|n| {
        view.pulls
            .iter()
            .find(|p| p.record.number == n)
            .map(|p| p.record.url.as_str())
    });
    let timing = match (step.started_at_ms, step.finished_at_ms) {
        (Some(start), Some(end)) if step.is_leaf && end >= start && state != "in_progress" => {
            Some(format!("took {}", took(end - start)))
        }
        (Some(start), _) if state == "in_progress" => Some(format!("started {}", when(start))),
        _ => None,
    };
    let id = step_id(step);
    html! {
        li class=(class) id={ "step-" (id) } data-step=(step.number) data-state=(state) {
            div.head {
                span.num { (step.number) }
                span.title { (step.title) }
                (badge(state))
                @if let Some(sha) = &step.commit_sha {
                    code.sha title=(sha) { (sha.get(..10).unwrap_or(sha)) }
                }
                @if let Some(n) = step.pr_number {
                    span.pr {
                        @match pr_url {
                            Some(url) => (link_or_text(url, &format!("#{n}"))),
                            None => { "#" (n) },
                        }
                    }
                }
                @if let Some(timing) = timing {
                    span.time { (timing) }
                }
                @if let Some(usage) = step.usage.filter(|_| step.is_leaf) {
                    span.usage title="What the step used the last time it ran" {
                        (duration_text(usage.agent_cpu_ms)) " CPU"
                        @if usage.tokens_known() { " · " (count_text(usage.tokens())) " tokens" }
                    }
                }
            }
            @if let Some(error) = &step.error {
                pre.error { (error) }
            }
            @if let Some(log) = step.log.as_deref().filter(|l| !l.trim().is_empty()) {
                details id={ "log-" (id) } {
                    summary { @if step.kind == StepKind::Plan { "Planner output" } @else { "Output / agent transcript" } }
                    pre.log { (log) }
                }
            }
        }
    }
}

/// The repository's setup as it last ran: its status, what the cache did, its time, and its
/// log folded.
fn setup_item(setup: &crate::domain::SetupReport) -> Markup {
    use crate::domain::{CacheOutcome, SetupStatus};
    let status = match setup.status {
        SetupStatus::InProgress => "in_progress",
        SetupStatus::Completed => "completed",
        SetupStatus::Failed => "failed",
    };
    let cache = match setup.cache {
        CacheOutcome::Hit => " · cache hit",
        CacheOutcome::Miss => " · cache miss",
        CacheOutcome::None => "",
    };
    html! {
        div #setup.setup {
            "Repository setup " (badge(status))
            span.muted { (cache) " · " (duration_text(u64::try_from(setup.wall_ms).unwrap_or(0))) }
            @if !setup.log.trim().is_empty() {
                details #setup-log {
                    summary { "Setup output" }
                    pre.log { (setup.log) }
                }
            }
        }
    }
}

fn actions(ctx: &Ctx, view: &RunbookView, counts: &StepCounts) -> Markup {
    let Some(csrf) = &ctx.csrf else {
        return html! {};
    };
    let number = view.runbook.number;
    let action = |name: &str| ctx.href(&format!("/runbooks/{number}/{name}"));
    let can_execute = counts.not_started > 0 && counts.queued == 0 && counts.in_progress == 0;
    let can_retry = counts.failed > 0 && counts.in_progress == 0;
    let can_cancel = counts.queued > 0 || counts.in_progress > 0;
    let can_open = view.runbook.pr_mode == Some(PrMode::Manual)
        && !view.pulls.iter().any(|p| p.record.state == PullState::Open);
    let unfinished: Vec<&StepRecord> = view
        .steps
        .iter()
        .filter(|s| !s.shown_state(&view.steps).is_completed())
        .collect();
    html! {
        div.actions {
            @if can_execute {
                form method="post" action=(action("execute")) {
                    input type="hidden" name="csrf" value=(csrf);
                    select name="step" aria-label="Execute up to" {
                        option value="" { "all steps" }
                        @for s in &unfinished {
                            option value=(s.number) { "up to " (s.number) ": " (s.title.chars().take(50).collect::<String>()) }
                        }
                    }
                    button.primary type="submit" { "Execute" }
                }
            }
            @if can_retry {
                form method="post" action=(action("retry")) {
                    input type="hidden" name="csrf" value=(csrf);
                    button.primary type="submit" { "Retry" }
                }
            }
            @if can_cancel {
                form method="post" action=(action("cancel")) {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger type="submit" { "Cancel" }
                }
            }
            @if can_open {
                form method="post" action=(action("pull_requests")) {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" { "Open pull request" }
                }
            }
        }
    }
}

/// The part of the runbook's page that changes while it runs: status, actions, the step tree
/// and the pull requests. Sent again, re-rendered, to live pages when it changes.
pub fn live(ctx: &Ctx, view: &RunbookView) -> Markup {
    let counts = view.counts();
    let status = crate::domain::status(&counts);
    let used = view
        .steps
        .iter()
        .filter_map(|s| s.usage)
        .chain(view.planning)
        .reduce(|a, b| a + b);
    html! {
        div.summary {
            span #status class={ "badge s-" (status.as_str()) } data-status=(status.as_str()) { (status.as_str()) }
            span.counts.muted { (counts_text(&counts)) }
            @if let Some(used) = used {
                span #usage.muted title="What the runbook's steps used, together" { "Used " (used.summary()) }
            }
        }
        (actions(ctx, view, &counts))
        @if let Some(setup) = &view.setup {
            (setup_item(setup))
        }
        h2 { "Steps" }
        @if view.steps.is_empty() {
            p.muted { "The plan is being generated…" }
        } @else {
            ol.steps {
                @for step in &view.steps {
                    (step_item(view, step))
                }
            }
        }
        h2 { "Pull requests" }
        @if view.pulls.is_empty() {
            p.muted {
                @if view.runbook.pr_mode == Some(PrMode::Manual) {
                    "None yet: this runbook opens its pull request when asked."
                } @else {
                    "None yet."
                }
            }
        } @else {
            ul.pulls {
                @for pull in &view.pulls {
                    li.pull data-number=(pull.record.number) {
                        (link_or_text(&pull.record.url, &format!("#{}", pull.record.number)))
                        " " (badge(pull.record.state.as_str())) " "
                        span.muted {
                            @if pull.step_numbers.is_empty() { "no steps yet" }
                            @else { "steps " (pull.step_numbers.join(", ")) }
                        }
                        " "
                        span.muted { (pull.record.url) }
                    }
                }
            }
        }
    }
}

/// The fingerprint of what a live part shows (without the session's secret, which is in
/// its forms): sent as the event id, so a reconnecting page only gets news.
pub fn fingerprint(fragment: &str, ctx: &Ctx) -> String {
    let text = match &ctx.csrf {
        Some(csrf) => fragment.replace(csrf.as_str(), ""),
        None => fragment.to_string(),
    };
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

/// The page behind a runbook's `url`.
pub fn detail(ctx: &Ctx, view: &RunbookView, notice: Option<&str>, status: StatusCode) -> Response {
    let rb = &view.runbook;
    let fragment = live(ctx, view);
    let fp = fingerprint(&fragment.0, ctx);
    let here = ctx.href(&format!("/runbooks/{}", rb.number));
    let events = ctx.href(&format!("/runbooks/{}/events?since={fp}", rb.number));
    let body = html! {
        p.crumbs { a href=(ctx.href("/runbooks")) { "All runbooks" } }
        h1 { "#" (rb.number) " " (rb.title) }
        dl.meta {
            dt { "Repository" } dd #repository { (rb.org) "/" (rb.repo) }
            dt { "Target branch" } dd #target-branch {
                @match &rb.target_branch { Some(b) => code { (b) }, None => span.muted { "the repository's default branch" } }
            }
            dt { "Mode" } dd #mode {
                @match rb.pr_mode {
                    Some(m) => (m.as_str()),
                    None if view.steps.is_empty() => span.muted { "decided when planned (the project's configuration, else single_pr)" },
                    None => { "single_pr" span.muted { " (the default)" } },
                }
                @match rb.draft {
                    Some(true) => ", draft PRs",
                    None if view.steps.is_empty() => "",
                    Some(false) | None => ", ready for review when done",
                }
                @if !rb.oneshot { ", waits for Execute" }
            }
            @if !rb.labels.is_empty() {
                dt { "Labels" } dd { (rb.labels.join(", ")) }
            }
            @if let Some(email) = &rb.author_email {
                dt { "Requested by" } dd { (email) }
            }
            @if let Some(thread) = &view.thread {
                dt { "Started from" } dd #thread {
                    (link_or_text(&thread.thread.url, &format!("{}#{}", thread.thread.repository, thread.thread.issue_number)))
                    " by @" (thread.thread.requested_by)
                    @if let Some(url) = &thread.status_comment_url {
                        " · " (link_or_text(url, "status comment"))
                    }
                }
            }
            dt { "Created" } dd { (when(rb.created_at_ms)) }
        }
        @if let Some(description) = &rb.description {
            details { summary { "Description (first in every PR body)" } pre { (description) } }
        }
        details { summary { "Prompt" } pre #prompt { (rb.prompt) } }
        @if let Some(notice) = notice {
            p.notice #notice role="alert" { (notice) }
        }
        section #live data-events=(events) data-fingerprint=(fp) aria-live="polite" {
            (fragment)
        }
        p.muted.refresh { a #refresh href=(here) { "Refresh" } " " span #live-note {} }
    };
    render(
        status,
        &format!("#{} {}", rb.number, rb.title),
        ctx,
        body,
        true,
    )
}
