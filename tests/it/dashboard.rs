//! The dashboard over HTTP, as a browser without JavaScript sees it: signing in, the list and
//! its filters, organisation scoping, the page of a runbook, the actions and their CSRF
//! checks, signing out, revoked tokens, and the live-update stream.
//!
//! Runbook states are set through the store (no engine runs here), so every check is exact;
//! `tests/it/browser.rs` drives real runbooks through a real browser.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use runbooks::domain::{
    NewRunbook, Plan, PlannedStep, PrMode, RunbookNumber, StepNumber, StepState,
};
use runbooks::store::{NewThread, StepEnd, Store};
use support::{Backend, TestServer, create_token};

/// A client that does not follow redirects: the tests look at them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Self {
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }

    fn location(&self) -> &str {
        self.header("location")
    }
}

/// A signed-in browser: its session cookie and the CSRF value its forms carry.
struct Session {
    cookie: String,
    csrf: String,
}

fn cookie_header(session: Option<&Session>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(session) = session {
        headers.insert(
            "cookie",
            HeaderValue::from_str(&format!("runbooks_session={}", session.cookie)).unwrap(),
        );
    }
    headers
}

async fn get(t: &TestServer, session: Option<&Session>, path: &str) -> Answer {
    Answer::from(
        client()
            .get(t.url(path))
            .headers(cookie_header(session))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn post(
    t: &TestServer,
    session: Option<&Session>,
    path: &str,
    fields: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Answer {
    let mut request = client()
        .post(t.url(path))
        .headers(cookie_header(session))
        .form(fields);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    Answer::from(request.send().await.unwrap()).await
}

/// The value of the session cookie set by an answer.
fn session_cookie(answer: &Answer) -> Option<String> {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find_map(|c| c.strip_prefix("runbooks_session="))
        .map(|rest| rest.split(';').next().unwrap().to_string())
}

fn csrf_of(page: &str) -> String {
    let re = regex::Regex::new(r#"name="csrf" value="([0-9a-f]{64})""#).unwrap();
    re.captures(page)
        .unwrap_or_else(|| panic!("a CSRF field in the page: {page}"))[1]
        .to_string()
}

/// Signs in through the form, as a person would.
async fn sign_in(t: &TestServer, token: &str) -> Session {
    let answer = post(t, None, "/login", &[("token", token)], &[]).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let cookie = session_cookie(&answer).expect("a session cookie");
    let page = get(
        t,
        Some(&Session {
            cookie: cookie.clone(),
            csrf: String::new(),
        }),
        "/runbooks",
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    Session {
        csrf: csrf_of(&page.body),
        cookie,
    }
}

fn n(s: &str) -> StepNumber {
    s.parse().unwrap()
}

fn new_runbook(org: &str, repo: &str, title: &str) -> NewRunbook {
    NewRunbook {
        org: org.into(),
        repo: repo.into(),
        prompt: format!("Do {title}"),
        title: title.into(),
        oneshot: true,
        draft: None,
        pr_mode: Some(PrMode::SinglePr),
        target_branch: None,
        description: None,
        labels: vec![],
        author_email: None,
    }
}

/// Plan: 1 { 1.1, 1.2 }, 2 { 2.1, 2.2 }, 3.
async fn plan(store: &Arc<dyn Store>, number: RunbookNumber) {
    let steps = [
        ("1", "Rename the helper"),
        ("1.1", "Rename the definition"),
        ("1.2", "Update the callers"),
        ("2", "Document it"),
        ("2.1", "Write the <docs>"),
        ("2.2", "Link them"),
        ("3", "Release"),
    ]
    .into_iter()
    .map(|(number, title)| PlannedStep {
        number: n(number),
        title: title.into(),
        details: format!("details of {number}"),
    })
    .collect();
    store
        .append_steps(number, &Plan::new(steps).unwrap())
        .await
        .unwrap();
}

/// Runs a leaf step to its end, as the engine would record it.
async fn finish(store: &Arc<dyn Store>, number: RunbookNumber, step: &str, end: StepEnd) {
    start(store, number, step).await;
    store
        .finish_step(number, &n(step), &end, &runbooks::domain::Usage::default())
        .await
        .unwrap();
}

async fn start(store: &Arc<dyn Store>, number: RunbookNumber, step: &str) {
    store
        .transition_steps(
            number,
            &[n(step)],
            &[StepState::NotStarted, StepState::Queued],
            StepState::InProgress,
        )
        .await
        .unwrap();
}

async fn state_of(store: &Arc<dyn Store>, number: RunbookNumber, step: &str) -> StepState {
    store
        .steps(number)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.number == n(step))
        .unwrap()
        .state
}

const SHA_A: &str = "1111111111aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "2222222222bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A runbook with some of everything: completed steps with commits and a PR, a failure with
/// an error and output, steps not started.
async fn a_failed_runbook(store: &Arc<dyn Store>, title: &str) -> RunbookNumber {
    let mut new = new_runbook("acme-corp", "backend", title);
    new.target_branch = Some("develop".into());
    new.prompt = "Rename it.\n<b>not bold</b>".into();
    let number = store.create_runbook(&new, None).await.unwrap();
    plan(store, number).await;
    for (step, sha) in [("1.1", SHA_A), ("1.2", SHA_B)] {
        finish(
            store,
            number,
            step,
            StepEnd::Completed {
                commit_sha: Some(sha.into()),
                log: format!("ran {step} <ok>"),
            },
        )
        .await;
    }
    store
        .record_pull_request(
            number,
            7,
            "https://github.example/acme-corp/backend/pull/7",
            &[n("1.1"), n("1.2")],
        )
        .await
        .unwrap();
    finish(
        store,
        number,
        "2.1",
        StepEnd::Failed {
            error: "the command exited with status 3: <script>alert(1)</script>".into(),
            log: "line one\r\nline two".into(),
        },
    )
    .await;
    number
}

fn assert_security_headers(answer: &Answer) {
    assert_eq!(answer.header("x-frame-options"), "DENY");
    assert_eq!(answer.header("referrer-policy"), "same-origin");
    assert_eq!(answer.header("cache-control"), "no-store");
    let csp = answer.header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_sets_a_session_cookie_and_follows_only_local_paths() {
    let t = TestServer::start(Backend::Sqlite).await;

    // Not signed in: pages ask to sign in and come back; the form posts the token.
    let answer = get(&t, None, "/runbooks/1?x=1").await;
    assert_eq!(answer.status, 303);
    assert_eq!(answer.location(), "/login?next=%2Frunbooks%2F1%3Fx%3D1");
    let form = get(&t, None, "/login?next=%2Frunbooks%2F1%3Fx%3D1").await;
    assert_eq!(form.status, 200);
    assert_security_headers(&form);
    assert!(form.header("content-type").starts_with("text/html"));
    assert!(
        form.body.contains(r#"method="post" action="/login""#),
        "{}",
        form.body
    );
    assert!(form.body.contains(r#"name="token""#));
    assert!(
        form.body.contains(r#"name="next" value="/runbooks/1?x=1""#),
        "{}",
        form.body
    );
    let evil = get(&t, None, "/login?next=%2F%2Fevil.example").await;
    assert!(!evil.body.contains("evil.example"), "{}", evil.body);

    // A bad token: the form again, with a message, and no cookie.
    for bad in ["nonsense", &runbooks::tokens::generate()] {
        let answer = post(&t, None, "/login", &[("token", bad)], &[]).await;
        assert_eq!(answer.status, 401);
        assert!(
            answer.body.contains("That token is not valid"),
            "{}",
            answer.body
        );
        assert!(answer.body.contains(r#"name="token""#));
        assert!(!answer.body.contains(bad));
        assert!(session_cookie(&answer).is_none());
    }
    // A sign-in form posted from another site.
    let answer = post(
        &t,
        None,
        "/login",
        &[("token", &t.token)],
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(answer.status, 403);
    assert!(session_cookie(&answer).is_none());

    // A good token: a session cookie with the right flags, and on to `next`.
    let answer = post(
        &t,
        None,
        "/login",
        &[("token", &t.token), ("next", "/runbooks/1?x=1")],
        &[("origin", &t.base)],
    )
    .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.location(), "/runbooks/1?x=1");
    let set_cookie = answer.header("set-cookie").to_string();
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"HttpOnly"), "{set_cookie}");
    assert!(attributes.contains(&"SameSite=Lax"), "{set_cookie}");
    assert!(attributes.contains(&"Path=/"), "{set_cookie}");
    assert!(!attributes.contains(&"Secure"), "plain http: {set_cookie}");
    let id = session_cookie(&answer).unwrap();
    assert_eq!(id.len(), 64);
    assert!(!set_cookie.contains(&t.token));
    // Only the id's hash is stored.
    let stored = t
        .store
        .dashboard_session(&runbooks::tokens::hash(&id), 0)
        .await
        .unwrap()
        .expect("the session, under the hash of its id");
    assert_eq!(stored.token.orgs, ["acme-corp"]);
    assert!(stored.expires_at_ms - stored.created_at_ms >= 12 * 3600 * 1000 - 1);
    assert!(t.store.dashboard_session(&id, 0).await.unwrap().is_none());

    // `next` is followed only to a path of this site.
    for next in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "runbooks",
    ] {
        let answer = post(
            &t,
            None,
            "/login",
            &[("token", &t.token), ("next", next)],
            &[],
        )
        .await;
        assert_eq!(answer.status, 303);
        assert_eq!(answer.location(), "/runbooks", "next = {next}");
    }
    // No `next`: the list. `/` leads there too.
    let answer = post(&t, None, "/login", &[("token", &t.token)], &[]).await;
    assert_eq!(answer.location(), "/runbooks");
    assert_eq!(get(&t, None, "/").await.location(), "/runbooks");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_https_the_cookie_is_secure_and_links_keep_the_base_path() {
    let t = TestServer::start_with(Backend::Sqlite, |config| {
        config.public_url = Some("https://runbooks.example.test/ops".into());
    })
    .await;
    let answer = post(
        &t,
        None,
        "/login",
        &[("token", &t.token)],
        &[("origin", "https://runbooks.example.test")],
    )
    .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.location(), "/ops/runbooks");
    let set_cookie = answer.header("set-cookie");
    assert!(
        set_cookie.split(';').map(str::trim).any(|a| a == "Secure"),
        "{set_cookie}"
    );
    // The served origin is not the public one: a form posted from it is refused.
    let answer = post(
        &t,
        None,
        "/login",
        &[("token", &t.token)],
        &[("origin", &t.base)],
    )
    .await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        get(&t, None, "/runbooks").await.location(),
        "/ops/login?next=%2Fops%2Frunbooks"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_newest_first_paged_filtered_and_scoped() {
    let t = TestServer::start(Backend::Sqlite).await;
    let store = &t.store;
    let mut acme = Vec::new();
    for i in 0..28 {
        let repo = if i % 2 == 0 { "backend" } else { "web" };
        let number = store
            .create_runbook(&new_runbook("acme-corp", repo, &format!("Task {i}")), None)
            .await
            .unwrap();
        acme.push(number);
        if i % 7 == 3 {
            plan(store, number).await;
            finish(
                store,
                number,
                "1.1",
                StepEnd::Failed {
                    error: "no".into(),
                    log: String::new(),
                },
            )
            .await;
        }
        if i == 10 {
            // Another organisation's runbooks sit among them.
            for title in ["Secret one", "Secret two"] {
                store
                    .create_runbook(&new_runbook("other-org", "secret", title), None)
                    .await
                    .unwrap();
            }
        }
    }
    let me = sign_in(&t, &t.token).await;
    let rows = |page: &str| -> Vec<(RunbookNumber, String)> {
        regex::Regex::new(r#"<tr class="runbook" data-number="(\d+)" data-status="(\w+)">"#)
            .unwrap()
            .captures_iter(page)
            .map(|c| (c[1].parse().unwrap(), c[2].to_string()))
            .collect()
    };
    let next_link = |page: &str| -> Option<String> {
        regex::Regex::new(r#"rel="next" href="([^"]+)""#)
            .unwrap()
            .captures(page)
            .map(|c| c[1].replace("&amp;", "&"))
    };

    let first = get(&t, Some(&me), "/runbooks").await;
    assert_eq!(first.status, 200);
    assert_security_headers(&first);
    assert!(
        !first.body.contains("Secret"),
        "scoped to the token's organisations"
    );
    let page_one = rows(&first.body);
    let mut newest_first = acme.clone();
    newest_first.reverse();
    assert_eq!(
        page_one.iter().map(|r| r.0).collect::<Vec<_>>(),
        newest_first[..25]
    );
    let next = next_link(&first.body).expect("a next link");
    assert_eq!(next, format!("/runbooks?before={}", newest_first[24]));
    let second = get(&t, Some(&me), &next).await;
    assert_eq!(
        rows(&second.body).iter().map(|r| r.0).collect::<Vec<_>>(),
        newest_first[25..]
    );
    assert!(next_link(&second.body).is_none());

    // By repository, `org/name` or `name`; by status.
    for filter in ["acme-corp/web", "web", "ACME-CORP/Web"] {
        let page = get(
            &t,
            Some(&me),
            &format!("/runbooks?repository={}", filter.replace('/', "%2F")),
        )
        .await;
        let numbers: Vec<RunbookNumber> = rows(&page.body).iter().map(|r| r.0).collect();
        let expected: Vec<RunbookNumber> = newest_first
            .iter()
            .copied()
            .filter(|n| acme.iter().position(|a| a == n).unwrap() % 2 == 1)
            .collect();
        assert_eq!(numbers, expected, "repository={filter}");
    }
    let failed = get(&t, Some(&me), "/runbooks?status=failed").await;
    let failed_rows = rows(&failed.body);
    assert_eq!(failed_rows.len(), 4, "{failed_rows:?}");
    assert!(failed_rows.iter().all(|(_, s)| s == "failed"));
    assert!(failed.body.contains(r#"<option value="failed" selected>"#));
    let page = get(
        &t,
        Some(&me),
        "/runbooks?repository=backend&status=generating_steps",
    )
    .await;
    let numbers: Vec<RunbookNumber> = rows(&page.body).iter().map(|r| r.0).collect();
    assert_eq!(numbers.len(), 12, "{numbers:?}");
    // Another organisation's repository shows nothing, even by name.
    let page = get(&t, Some(&me), "/runbooks?repository=other-org%2Fsecret").await;
    assert_eq!(page.status, 200);
    assert!(rows(&page.body).is_empty());

    for bad in [
        "/runbooks?status=sleeping",
        "/runbooks?before=abc",
        "/runbooks?repository=a%2Fb%2Fc",
    ] {
        let page = get(&t, Some(&me), bad).await;
        assert_eq!(page.status, 400, "{bad}");
        assert!(page.body.contains(r#"class="notice""#), "{bad}");
    }

    // The other organisation's token sees only its own.
    let other_token = create_token(store, &["other-org"]).await;
    let other = sign_in(&t, &other_token).await;
    let page = get(&t, Some(&other), "/runbooks").await;
    assert_eq!(rows(&page.body).len(), 2);
    assert!(page.body.contains("Secret two"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_of_a_runbook_shows_everything_without_javascript() {
    let t = TestServer::start(Backend::Sqlite).await;
    let store = &t.store;
    let number = a_failed_runbook(store, r#"Upgrade <React> & "friends""#).await;
    let me = sign_in(&t, &t.token).await;

    let page = get(&t, Some(&me), &format!("/runbooks/{number}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_security_headers(&page);
    let body = &page.body;
    // Text from users and agents is escaped.
    assert!(
        body.contains("Upgrade &lt;React&gt; &amp; &quot;friends&quot;"),
        "{body}"
    );
    assert!(!body.contains("<React>") && !body.contains("<script>alert"));
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(body.contains("&lt;b&gt;not bold&lt;/b&gt;"));
    assert!(body.contains("Write the &lt;docs&gt;"));
    // What it runs against.
    assert!(
        body.contains(r#"<dd id="repository">acme-corp/backend</dd>"#),
        "{body}"
    );
    assert!(body.contains("<code>develop</code>"));
    assert!(body.contains(r#"<dd id="mode">single_pr"#));
    // Status and the step tree, parents showing the state of their leaves.
    assert!(body.contains(r#"data-status="failed""#));
    assert!(body.contains("2 of 5 steps completed · 1 failed · 2 not started"));
    for (step, state) in [
        ("1", "completed"),
        ("1.1", "completed"),
        ("1.2", "completed"),
        ("2", "failed"),
        ("2.1", "failed"),
        ("2.2", "not_started"),
        ("3", "not_started"),
    ] {
        assert!(
            body.contains(&format!(r#"data-step="{step}" data-state="{state}""#)),
            "step {step} {state}: {body}"
        );
    }
    // Commits, the error, the output (in <details>), the PR with its steps.
    assert!(body.contains(&format!(
        r#"<code class="sha" title="{SHA_A}">1111111111</code>"#
    )));
    assert!(body.contains(&format!(r#"title="{SHA_B}""#)));
    assert!(body.contains(r#"<pre class="error">the command exited with status 3"#));
    assert!(body.contains(r#"<details id="log-2-1">"#));
    assert!(body.contains("line one\r\nline two"));
    assert!(body.contains("ran 1.1 &lt;ok&gt;"));
    assert!(body.contains(r#"<a href="https://github.example/acme-corp/backend/pull/7">#7</a>"#));
    assert!(body.contains("steps 1.1, 1.2"));
    // The actions that fit, as forms carrying the CSRF value; a refresh link.
    assert!(body.contains(&format!(r#"action="/runbooks/{number}/retry""#)));
    assert!(body.contains(&format!(r#"action="/runbooks/{number}/execute""#)));
    assert!(!body.contains(&format!(r#"action="/runbooks/{number}/cancel""#)));
    assert!(!body.contains(&format!(r#"action="/runbooks/{number}/pull_requests""#)));
    assert!(body.contains(&format!(r#"name="csrf" value="{}""#, me.csrf)));
    assert!(body.contains(&format!(r#"<a id="refresh" href="/runbooks/{number}">"#)));
    // The inline script runs by the nonce of this answer's policy, and nothing else does.
    let csp = page.header("content-security-policy");
    let nonce = regex::Regex::new(r"script-src 'self' 'nonce-([0-9a-f]+)'")
        .unwrap()
        .captures(csp)
        .unwrap_or_else(|| panic!("{csp}"))[1]
        .to_string();
    assert_eq!(body.matches("<script").count(), 1);
    assert!(body.contains(&format!(r#"<script nonce="{nonce}">"#)));
    assert!(body.contains(&format!(r#"data-events="/runbooks/{number}/events?since="#)));

    // From a comment: the thread; without a plan yet: generating.
    let thread = NewThread {
        repository: "acme-corp/backend".into(),
        issue_number: 12,
        is_pull_request: false,
        url: "https://github.example/acme-corp/backend/issues/12".into(),
        command_comment_id: 99,
        requested_by: "octocat".into(),
        context: None,
    };
    let (from_comment, _) = store
        .create_runbook_in_thread(
            &new_runbook("acme-corp", "backend", "From a comment"),
            &thread,
        )
        .await
        .unwrap();
    let page = get(&t, Some(&me), &format!("/runbooks/{from_comment}")).await;
    assert!(
        page.body.contains(
            r#"<a href="https://github.example/acme-corp/backend/issues/12">acme-corp/backend#12</a> by @octocat"#
        ),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"data-status="generating_steps""#));
    assert!(page.body.contains("The plan is being generated"));

    // Unknown and out-of-scope runbooks: the same 404.
    let secret = store
        .create_runbook(&new_runbook("other-org", "secret", "Secret"), None)
        .await
        .unwrap();
    let unknown = get(&t, Some(&me), "/runbooks/999").await;
    let hidden = get(&t, Some(&me), &format!("/runbooks/{secret}")).await;
    assert_eq!((unknown.status, hidden.status), (404, 404));
    assert!(!hidden.body.contains("Secret"));
    // Random values (the style's nonce) and colours may hold the digits of a number: only
    // the number standing alone counts, and the nonce is set aside.
    let random = regex::Regex::new(r"[0-9a-f]{16,}").unwrap();
    let normalised = |body: &str, number: &str| {
        let body = random.replace_all(body, "R");
        regex::Regex::new(&format!(r"\b{number}\b"))
            .unwrap()
            .replace_all(&body, "N")
            .into_owned()
    };
    assert_eq!(
        normalised(&unknown.body, "999"),
        normalised(&hidden.body, &secret.to_string()),
        "the two answers differ only by the number"
    );
    assert_security_headers(&hidden);
    assert_eq!(get(&t, Some(&me), "/runbooks/abc").await.status, 404);
    t.stop().await;
}

/// The page shows what each step that ran used (its CPU time, and its tokens when a model
/// counted them) and the runbook's total; a step that has not run shows nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_of_a_runbook_shows_what_its_steps_used() {
    use runbooks::domain::Usage;
    let t = TestServer::start(Backend::Sqlite).await;
    let store = &t.store;
    let number = store
        .create_runbook(&new_runbook("acme-corp", "backend", "Measured"), None)
        .await
        .unwrap();
    plan(store, number).await;
    let used = [
        (
            "1.1",
            Usage {
                wall_ms: 150_000,
                agent_cpu_ms: 30_000,
                prompt_tokens: Some(10_000),
                completion_tokens: Some(2_345),
            },
        ),
        (
            "1.2",
            Usage {
                wall_ms: 42_500,
                agent_cpu_ms: 11_400,
                prompt_tokens: None,
                completion_tokens: None,
            },
        ),
    ];
    for (step, usage) in used {
        start(store, number, step).await;
        let end = StepEnd::Completed {
            commit_sha: None,
            log: String::new(),
        };
        store
            .finish_step(number, &n(step), &end, &usage)
            .await
            .unwrap();
    }
    let me = sign_in(&t, &t.token).await;
    let page = get(&t, Some(&me), &format!("/runbooks/{number}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    assert!(
        body.contains("Used 3m 12s of agent time (41s CPU) · 12,345 tokens</span>"),
        "{body}"
    );
    let step = |number: &str| {
        let start = body
            .find(&format!(r#"data-step="{number}""#))
            .unwrap_or_else(|| panic!("no step {number}: {body}"));
        let end = body[start..]
            .find("</li>")
            .map_or(body.len(), |i| start + i);
        &body[start..end]
    };
    assert!(
        step("1.1").contains("30s CPU · 12,345 tokens</span>"),
        "{}",
        step("1.1")
    );
    assert!(step("1.2").contains("11s CPU</span>"), "{}", step("1.2"));
    assert!(!step("1.2").contains("tokens"), "{}", step("1.2"));
    assert!(!step("2.1").contains("CPU"), "{}", step("2.1"));
    assert!(
        !body.contains("Repository setup"),
        "no setup, no line: {body}"
    );

    // The repository's setup, as it last ran: status, cache, time, its log folded.
    use runbooks::domain::{CacheOutcome, OnFailure, SetupConfig, SetupReport, SetupStatus};
    let config = SetupConfig {
        commands: vec!["npm ci".into()],
        on_failure: OnFailure::Fail,
        cache: None,
    };
    store.set_setup_config(number, &config).await.unwrap();
    let report = SetupReport {
        status: SetupStatus::Completed,
        cache: CacheOutcome::Hit,
        log: "restored node_modules <from the cache>".into(),
        wall_ms: 2_000,
    };
    store.record_setup(number, &report).await.unwrap();
    let page = get(&t, Some(&me), &format!("/runbooks/{number}")).await;
    let body = &page.body;
    let setup = &body[body.find(r#"id="setup""#).expect("the setup line")..];
    assert!(setup.contains("s-completed"), "{setup}");
    assert!(setup.contains(" · cache hit · 2s"), "{setup}");
    assert!(
        setup.contains("restored node_modules &lt;from the cache&gt;"),
        "the log, escaped: {setup}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_check_csrf_and_origin_then_change_the_runbook() {
    let t = TestServer::start(Backend::Sqlite).await;
    let store = &t.store;
    let number = a_failed_runbook(store, "Retry me").await;
    let me = sign_in(&t, &t.token).await;
    let retry = format!("/runbooks/{number}/retry");

    // Refused, and nothing changes: no session, no CSRF value, a wrong one, a foreign
    // Origin or Referer, a body that is not a form.
    let refusals: Vec<(u16, Answer)> = vec![
        (
            401,
            post(&t, None, &retry, &[("csrf", &me.csrf)], &[]).await,
        ),
        (403, post(&t, Some(&me), &retry, &[("x", "1")], &[]).await),
        (
            403,
            post(&t, Some(&me), &retry, &[("csrf", &"0".repeat(64))], &[]).await,
        ),
        (
            403,
            post(
                &t,
                Some(&me),
                &retry,
                &[("csrf", &me.csrf)],
                &[("origin", "http://evil.example")],
            )
            .await,
        ),
        (
            403,
            post(
                &t,
                Some(&me),
                &retry,
                &[("csrf", &me.csrf)],
                &[("origin", "null")],
            )
            .await,
        ),
        (
            403,
            post(
                &t,
                Some(&me),
                &retry,
                &[("csrf", &me.csrf)],
                &[("referer", "http://evil.example/page")],
            )
            .await,
        ),
        (
            403,
            Answer::from(
                client()
                    .post(t.url(&retry))
                    .headers(cookie_header(Some(&me)))
                    .header("content-type", "text/plain")
                    .body(format!("csrf={}", me.csrf))
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        ),
    ];
    for (i, (status, answer)) in refusals.iter().enumerate() {
        assert_eq!(answer.status, *status, "refusal {i}: {}", answer.body);
        assert_security_headers(answer);
    }
    assert_eq!(state_of(store, number, "2.1").await, StepState::Failed);

    // The form as the page sends it (same Origin): done, and back to the page.
    let answer = post(
        &t,
        Some(&me),
        &retry,
        &[("csrf", &me.csrf)],
        &[("origin", &t.base)],
    )
    .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.location(), format!("/runbooks/{number}"));
    assert_eq!(state_of(store, number, "2.1").await, StepState::Queued);
    assert_eq!(state_of(store, number, "3").await, StepState::Queued);

    // Cancel: the queued steps wait again. A Referer of this site is fine too.
    let answer = post(
        &t,
        Some(&me),
        &format!("/runbooks/{number}/cancel"),
        &[("csrf", &me.csrf)],
        &[("referer", &t.url(&format!("/runbooks/{number}")))],
    )
    .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(state_of(store, number, "2.1").await, StepState::NotStarted);

    // Nothing failed any more: the page with the reason, 409.
    let answer = post(&t, Some(&me), &retry, &[("csrf", &me.csrf)], &[]).await;
    assert_eq!(answer.status, 409);
    assert!(
        answer.body.contains(&format!(
            "Could not retry: runbook {number} has no failed step to retry."
        )),
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains(r#"data-step="2.1""#),
        "the page itself"
    );

    // Execute up to a step: it and the unfinished ones before it.
    let execute = format!("/runbooks/{number}/execute");
    let answer = post(
        &t,
        Some(&me),
        &execute,
        &[("csrf", &me.csrf), ("step", "2.1")],
        &[],
    )
    .await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(state_of(store, number, "2.1").await, StepState::Queued);
    assert_eq!(state_of(store, number, "2.2").await, StepState::NotStarted);
    let answer = post(
        &t,
        Some(&me),
        &execute,
        &[("csrf", &me.csrf), ("step", "x.1")],
        &[],
    )
    .await;
    assert_eq!(answer.status, 400);
    let answer = post(
        &t,
        Some(&me),
        &execute,
        &[("csrf", &me.csrf), ("step", "9")],
        &[],
    )
    .await;
    // A step the plan does not have is about the runbook's state: 409, as in the API.
    assert_eq!(answer.status, 409);
    assert!(
        answer.body.contains("is not a step of runbook"),
        "{}",
        answer.body
    );

    // Opening a PR: only for manual runbooks, and only with a GitHub App.
    let answer = post(
        &t,
        Some(&me),
        &format!("/runbooks/{number}/pull_requests"),
        &[("csrf", &me.csrf)],
        &[],
    )
    .await;
    assert_eq!(answer.status, 409);
    assert!(answer.body.contains("opens its pull requests itself"));
    let mut manual = new_runbook("acme-corp", "backend", "Manual");
    manual.pr_mode = Some(PrMode::Manual);
    let manual = store.create_runbook(&manual, None).await.unwrap();
    let page = get(&t, Some(&me), &format!("/runbooks/{manual}")).await;
    assert!(
        page.body
            .contains(&format!(r#"action="/runbooks/{manual}/pull_requests""#))
    );
    let answer = post(
        &t,
        Some(&me),
        &format!("/runbooks/{manual}/pull_requests"),
        &[("csrf", &me.csrf)],
        &[],
    )
    .await;
    assert_eq!(answer.status, 503);
    assert!(answer.body.contains("no GitHub App is configured"));

    // Another organisation's runbook: 404 as if it did not exist, and untouched.
    let secret = store
        .create_runbook(&new_runbook("other-org", "secret", "Secret"), None)
        .await
        .unwrap();
    plan(store, secret).await;
    let answer = post(
        &t,
        Some(&me),
        &format!("/runbooks/{secret}/execute"),
        &[("csrf", &me.csrf)],
        &[],
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(state_of(store, secret, "1.1").await, StepState::NotStarted);
    t.stop().await;
}

/// Signing out, and a revoked token: both end the session at the next request.
async fn sessions_end_on_sign_out_and_when_the_token_is_revoked(backend: Backend) {
    let t = TestServer::start(backend).await;
    let number = a_failed_runbook(&t.store, "Sessions").await;
    let page = format!("/runbooks/{number}");
    let me = sign_in(&t, &t.token).await;
    assert_eq!(get(&t, Some(&me), &page).await.status, 200);

    // Sign-out needs the CSRF value too.
    let answer = post(&t, Some(&me), "/logout", &[], &[]).await;
    assert_eq!(answer.status, 403);
    assert_eq!(get(&t, Some(&me), &page).await.status, 200);
    let answer = post(&t, Some(&me), "/logout", &[("csrf", &me.csrf)], &[]).await;
    assert_eq!(answer.status, 303);
    assert_eq!(answer.location(), "/login");
    let cleared = answer.header("set-cookie");
    assert!(cleared.starts_with("runbooks_session=;") && cleared.contains("Max-Age=0"));
    let answer = get(&t, Some(&me), &page).await;
    assert_eq!(answer.status, 303);
    assert_eq!(
        answer.location(),
        format!("/login?next=%2Frunbooks%2F{number}")
    );

    // Two sessions of one token; revoking the token ends both.
    let first = sign_in(&t, &t.token).await;
    let second = sign_in(&t, &t.token).await;
    assert_ne!(first.cookie, second.cookie);
    assert_ne!(first.csrf, second.csrf);
    // One session's CSRF value does not work for another.
    let answer = post(
        &t,
        Some(&first),
        &format!("/runbooks/{number}/retry"),
        &[("csrf", &second.csrf)],
        &[],
    )
    .await;
    assert_eq!(answer.status, 403);
    let id = t.store.list_tokens().await.unwrap()[0].id;
    assert!(t.store.revoke_token(id).await.unwrap());
    for session in [&first, &second] {
        assert_eq!(get(&t, Some(session), &page).await.status, 303);
        let answer = post(
            &t,
            Some(session),
            &format!("/runbooks/{number}/retry"),
            &[("csrf", &session.csrf)],
            &[],
        )
        .await;
        assert_eq!(answer.status, 401);
        let events = get(&t, Some(session), &format!("{page}/events")).await;
        assert_eq!(events.status, 401);
    }
    assert_eq!(state_of(&t.store, number, "2.1").await, StepState::Failed);
    // And the revoked token cannot sign in again.
    let answer = post(&t, None, "/login", &[("token", &t.token)], &[]).await;
    assert_eq!(answer.status, 401);
    t.stop().await;
}

both_backends!(sessions_end_on_sign_out_and_when_the_token_is_revoked);

/// Server-sent events, read from a streaming response.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug)]
struct Sse {
    event: String,
    id: String,
    data: String,
}

impl EventStream {
    async fn open(t: &TestServer, session: &Session, path: &str) -> Self {
        let response = client()
            .get(t.url(path))
            .headers(cookie_header(Some(session)))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The `live` events up to the first whose data contains `needle`.
    async fn until(&mut self, needle: &str) -> Vec<Sse> {
        let mut events = Vec::new();
        loop {
            let event = self.next_live().await.expect("an event");
            let found = event.data.contains(needle);
            events.push(event);
            if found {
                return events;
            }
        }
    }

    /// The next event named `live`; `None` when the stream ends. Fails after a deadline.
    async fn next_live(&mut self) -> Option<Sse> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse {
                    event: String::new(),
                    id: String::new(),
                    data: String::new(),
                };
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event.event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        event.id = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v);
                    } else if line == "data:" {
                        data.push("");
                    }
                }
                event.data = data.join("\n");
                if event.event == "live" {
                    return Some(event);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no event in time");
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
                Err(_) => panic!("no event in time"),
            }
        }
    }
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_updates_send_the_changed_part_of_the_page() {
    let t = TestServer::start(Backend::Sqlite).await;
    let store = &t.store;
    let number = store
        .create_runbook(&new_runbook("acme-corp", "backend", "Live"), None)
        .await
        .unwrap();
    plan(store, number).await;
    let me = sign_in(&t, &t.token).await;
    let page = get(&t, Some(&me), &format!("/runbooks/{number}")).await;
    let events = regex::Regex::new(r#"data-events="([^"]+)""#)
        .unwrap()
        .captures(&page.body)
        .unwrap()[1]
        .replace("&amp;", "&");
    assert_eq!(runbooks::dashboard::live::open_streams(), 0);
    let mut stream = EventStream::open(&t, &me, &events).await;

    // The page is up to date: the first event is the first change.
    start(store, number, "1.1").await;
    let event = stream.next_live().await.expect("an event");
    assert!(
        event
            .data
            .contains(r#"data-step="1.1" data-state="in_progress""#),
        "{}",
        event.data
    );
    assert!(event.data.contains(r#"data-status="in_progress""#));
    assert!(!event.data.contains("<html"), "only the live part");
    assert_eq!(event.id.len(), 32);

    // A step ends with output containing a carriage return: it arrives intact.
    store
        .finish_step(
            number,
            &n("1.1"),
            &StepEnd::Completed {
                commit_sha: Some(SHA_A.into()),
                log: "progress\r100%".into(),
            },
            &runbooks::domain::Usage::default(),
        )
        .await
        .unwrap();
    let event = stream.next_live().await.expect("an event");
    assert!(
        event
            .data
            .contains(r#"data-step="1.1" data-state="completed""#),
        "{}",
        event.data
    );
    assert!(event.data.contains(SHA_A));
    assert!(event.data.contains("progress&#13;100%"), "{}", event.data);

    // A reconnecting browser sends the last id: only news is sent.
    let again = EventStream::open(&t, &me, &events).await;
    drop(again.response);
    let mut resumed = {
        let response = client()
            .get(t.url(&events))
            .headers(cookie_header(Some(&me)))
            .header("last-event-id", &event.id)
            .send()
            .await
            .unwrap();
        EventStream {
            response,
            buffer: String::new(),
        }
    };
    let record = StepEnd::Failed {
        error: "broken".into(),
        log: String::new(),
    };
    finish(store, number, "1.2", record).await;
    // (The step may be seen running first: events come until it shows failed.)
    let failed = r#"data-step="1.2" data-state="failed""#;
    let news = resumed.until(failed).await;
    assert!(
        news.iter().all(|e| !e
            .data
            .contains(r#"data-step="1.2" data-state="not_started""#)),
        "what the page had already is not sent again: {news:?}"
    );
    stream.until(failed).await;

    // Streams end when their client goes away, and when the token is revoked.
    drop(resumed);
    eventually("the dropped streams to end", || {
        runbooks::dashboard::live::open_streams() == 1
    })
    .await;
    let id = store.list_tokens().await.unwrap()[0].id;
    store.revoke_token(id).await.unwrap();
    assert!(stream.next_live().await.is_none(), "the stream ends");
    eventually("the last stream to end", || {
        runbooks::dashboard::live::open_streams() == 0
    })
    .await;
    t.stop().await;
}

/// A graceful shutdown ends the open event streams instead of waiting for them (a stream
/// lasts up to 30 s otherwise; the deadline below is shorter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_ends_open_event_streams() {
    let t = TestServer::start(Backend::Sqlite).await;
    let number = t
        .store
        .create_runbook(&new_runbook("acme-corp", "backend", "Live"), None)
        .await
        .unwrap();
    plan(&t.store, number).await;
    let me = sign_in(&t, &t.token).await;
    let mut stream = EventStream::open(&t, &me, &format!("/runbooks/{number}/events")).await;
    let stopping = tokio::spawn(t.stop());
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while stream.next_live().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived the shutdown");
    tokio::time::timeout(std::time::Duration::from_secs(20), stopping)
        .await
        .expect("the shutdown did not wait for the stream")
        .unwrap();
}
