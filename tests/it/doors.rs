//! The front doors under abuse, over real HTTP against the real server: connections beyond
//! the bound wait their turn, silent and slow clients are cut at the timeout (the dashboard's
//! event streams are not), sign-ins and unknown tokens are limited per client address (behind
//! trusted proxies too), a session's event streams are bounded, and a path that is not UTF-8
//! is a 400 in the front door's own format.
//!
//! (In a binary of its own: the dashboard's tests count the process's open event streams.)

use crate::support;
use crate::support::rn;

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use support::{Backend, TestServer, create_token, expect_error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn address(t: &TestServer) -> &str {
    t.base.trim_start_matches("http://")
}

/// With at most 2 connections, a third waits until one closes; every request is answered
/// in the end, and never were more than 2 served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_bound_wait_their_turn() {
    let t = TestServer::start_with(Backend::Sqlite, |config| {
        config.limits.max_connections = 2;
    })
    .await;
    let server = t.server.as_ref().unwrap();
    // Two clients connect and say nothing.
    let idle = [
        TcpStream::connect(address(&t)).await.unwrap(),
        TcpStream::connect(address(&t)).await.unwrap(),
    ];
    eventually("two connections served", || {
        server.connections().open() == 2
    })
    .await;
    // Three more requests, each on its own connection.
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let url = t.url("/healthz");
            tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    // They are served once the silent clients leave.
    drop(idle);
    for request in requests {
        let status = tokio::time::timeout(Duration::from_secs(30), request)
            .await
            .expect("the request was answered")
            .unwrap()
            .unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(server.connections().peak(), 2);
    t.stop().await;
}

/// A client that connects and sends nothing is disconnected at the request timeout; one that
/// sends a request head but not its body is answered 503 (JSON) at the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_are_cut_at_the_timeout() {
    let t = TestServer::start_with(Backend::Sqlite, |config| {
        config.limits.request_timeout = Duration::from_secs(1);
    })
    .await;
    let mut silent = TcpStream::connect(address(&t)).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buffer))
        .await
        .expect("the server closed the silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let head = format!(
        "POST /api/v1/runbook HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n",
        t.token
    );
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(30),
        support::raw_exchange(&t.base, &head, &["{\"repository\": ".to_string()]),
    )
    .await
    .expect("the slow request was answered");
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "service-unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("within 1s"),
        "{body}"
    );
    assert!(t.store.runbook(rn(1)).await.unwrap().is_none());
    t.stop().await;
}

/// Signs in through the form; the session cookie.
async fn sign_in(t: &TestServer, token: &str) -> String {
    let answer = client()
        .post(t.url("/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find_map(|c| c.strip_prefix("runbooks_session="))
        .map(|rest| rest.split(';').next().unwrap().to_string())
        .expect("a session cookie")
}

async fn open_events(
    t: &TestServer,
    cookie: &str,
    number: runbooks::domain::RunbookNumber,
) -> reqwest::Response {
    client()
        .get(t.url(&format!("/runbooks/{number}/events")))
        .header("cookie", format!("runbooks_session={cookie}"))
        .send()
        .await
        .unwrap()
}

/// The next chunk of an event stream, within a deadline (`None`: the stream ended).
async fn next_chunk(stream: &mut reqwest::Response) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(30), stream.chunk())
        .await
        .expect("the stream sent something")
        .unwrap()
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

fn runbook() -> runbooks::domain::NewRunbook {
    runbooks::domain::NewRunbook {
        org: "acme-corp".into(),
        repo: "backend".into(),
        title: "Live".into(),
        prompt: "Live".into(),
        oneshot: true,
        draft: None,
        pr_mode: None,
        target_branch: None,
        description: None,
        labels: vec![],
        author_email: None,
    }
}

/// A session keeps at most 2 event streams open (as configured); one more is refused with
/// 429 while another session is not affected, and a stream that ends frees its place.
/// Streams outlive the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_bounded_per_session_and_outlive_the_request_timeout() {
    let t = TestServer::start_with(Backend::Sqlite, |config| {
        config.limits.max_streams_per_session = 2;
        config.limits.request_timeout = Duration::from_secs(1);
    })
    .await;
    let number = t.store.create_runbook(&runbook(), None).await.unwrap();
    let me = sign_in(&t, &t.token).await;
    let mut first = open_events(&t, &me, number).await;
    assert_eq!(first.status(), 200);
    let second = open_events(&t, &me, number).await;
    assert_eq!(second.status(), 200);
    let third = open_events(&t, &me, number).await;
    assert_eq!(third.status(), 429);
    assert!(third.text().await.unwrap().contains("too many runbooks"));
    let other = sign_in(&t, &t.token).await;
    let theirs = open_events(&t, &other, number).await;
    assert_eq!(theirs.status(), 200);

    // Past the request timeout, the first stream still delivers a change.
    let opened = Instant::now();
    assert!(next_chunk(&mut first).await.unwrap().contains("retry"));
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(opened.elapsed())).await;
    let plan = runbooks::domain::Plan::new(vec![runbooks::domain::PlannedStep {
        number: "1".parse().unwrap(),
        title: "Only".into(),
        details: String::new(),
    }])
    .unwrap();
    t.store.append_steps(number, &plan).await.unwrap();
    let mut seen = String::new();
    while !seen.contains("event: live") {
        seen.push_str(
            &next_chunk(&mut first)
                .await
                .expect("the stream is still open"),
        );
    }

    // A stream that ends (its client went away) frees its place.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = open_events(&t, &me, number).await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(Instant::now() < deadline, "the ended stream kept its place");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.stop().await;
}

async fn create_with(t: &TestServer, token: &str, forwarded: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(t.url("/api/v1/runbook"))
        .bearer_auth(token)
        .json(&support::minimal("p"));
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    request.send().await.unwrap()
}

fn unknown_token(i: usize) -> String {
    format!("rbk_{i:064}")
}

/// A client address gets 3 sign-ins or unknown tokens a minute (as configured): the 4th is
/// 429 with Retry-After, in the API and on the sign-in form alike, before the database is
/// asked. A token already known keeps working, and `X-Forwarded-For` is not believed from
/// an untrusted peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_and_unknown_tokens_are_limited_per_client_address() {
    let t = TestServer::start_with(Backend::Sqlite, |config| {
        config.limits.auth_rate_limit_per_minute = 3;
    })
    .await;
    // The real token, looked up once (that takes one of the 3) and known from then on.
    assert_eq!(create_with(&t, &t.token, None).await.status(), 202);
    for i in 0..2 {
        let response = create_with(&t, &unknown_token(i), None).await;
        expect_error(response, 401, "unauthorized").await;
    }
    for forwarded in [None, Some("203.0.113.50")] {
        let response = create_with(&t, &unknown_token(9), forwarded).await;
        let (headers, message): (HeaderMap, String) =
            expect_error(response, 429, "rate-limited").await;
        assert!(headers.contains_key("retry-after"));
        assert!(message.contains("from this address"), "{message}");
    }
    // Malformed tokens count too.
    let response = create_with(&t, "not-a-token", None).await;
    expect_error(response, 429, "rate-limited").await;
    // The known token still works.
    assert_eq!(create_with(&t, &t.token, None).await.status(), 202);
    // The sign-in form shares the budget.
    let answer = client()
        .post(t.url("/login"))
        .form(&[("token", t.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 429);
    assert!(answer.headers().contains_key("retry-after"));
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("Too many sign-in attempts")
    );
    assert_eq!(t.store.runbook(rn(3)).await.unwrap(), None);
    t.stop().await;
}

/// A client that fires many requests at once with a real token this process has not seen
/// yet costs its address one attempt, not one per request: the requests wait for the first
/// one's lookup. (Each used to cost one, and a burst of 40 on a loaded machine met 429s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_with_a_new_token_costs_one_attempt() {
    let t = TestServer::start_with(Backend::Sqlite, |config| {
        config.limits.auth_rate_limit_per_minute = 2;
    })
    .await;
    let token = create_token(&t.store, &["acme-corp"]).await;
    let burst = (0..40).map(|_| create_with(&t, &token, None));
    for response in futures_util::future::join_all(burst).await {
        assert_eq!(response.status(), 202);
    }
    // One attempt was spent: one unknown token is still answered 401, the next is 429.
    expect_error(
        create_with(&t, &unknown_token(1), None).await,
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        create_with(&t, &unknown_token(2), None).await,
        429,
        "rate-limited",
    )
    .await;
    t.stop().await;
}

/// Behind a trusted proxy, each client named by `X-Forwarded-For` has its own budget, and
/// what the client wrote left of the proxy's entry is not believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let t = TestServer::start_with(Backend::Sqlite, |config| {
        config.limits.auth_rate_limit_per_minute = 2;
        config.limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    for i in 0..2 {
        // The client claims a fresh address each time; the proxy appends the real one.
        let forwarded = format!("198.51.100.{i}, 203.0.113.7");
        let response = create_with(&t, &unknown_token(i), Some(&forwarded)).await;
        expect_error(response, 401, "unauthorized").await;
    }
    let response = create_with(&t, &unknown_token(5), Some("198.51.100.99, 203.0.113.7")).await;
    expect_error(response, 429, "rate-limited").await;
    // Another client behind the same proxy.
    let response = create_with(&t, &unknown_token(6), Some("203.0.113.8")).await;
    expect_error(response, 401, "unauthorized").await;
    t.stop().await;
}

/// A path that is not UTF-8 once decoded is a 400 like every other error: JSON in the API,
/// the dashboard's page (with its security headers) on the dashboard's paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_utf8_is_a_bad_request_in_the_doors_own_format() {
    let t = TestServer::start(Backend::Sqlite).await;
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/runbook/%FF"),
        (reqwest::Method::PATCH, "/api/v1/runbook/%C3%28"),
        (reqwest::Method::POST, "/api/v1/runbook/%FF/retry"),
        (reqwest::Method::GET, "/api/v1/runbook/%FF/steps"),
        (reqwest::Method::GET, "/nowhere/%FE"),
    ] {
        let response = client()
            .request(method.clone(), t.url(path))
            .bearer_auth(&t.token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let (_, message) = expect_error(response, 400, "bad-request").await;
        assert!(message.contains("UTF-8"), "{method} {path}: {message}");
    }
    let page = client().get(t.url("/runbooks/%FF")).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.headers().contains_key("content-security-policy"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.text().await.unwrap().contains("not UTF-8"));
    // Valid percent-encoding still reaches the handler.
    let response = client()
        .get(t.url("/api/v1/runbook/%31"))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    expect_error(response, 404, "not-found").await;
    t.stop().await;
}

/// The request head is written by hand: a raw client over TCP, as an attacker would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_cut_at_the_timeout() {
    let t = TestServer::start_with(Backend::Sqlite, |config| {
        config.limits.request_timeout = Duration::from_secs(1);
    })
    .await;
    let mut slow = TcpStream::connect(address(&t)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut answer))
        .await
        .expect("the server gave up on the head");
    // hyper answers 408 or just closes; either way the connection ends.
    assert!(read.is_ok() || answer.is_empty(), "{read:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    t.stop().await;
}
