//! `POST /webhooks/github`: signatures, persistence, redelivery, limits, retention and the
//! intake's batches — with real payloads.

use crate::support;

use std::time::{Duration, Instant};

use runbooks::github::webhook::sign;
use runbooks::store::DeliveryRecord;
use secrecy::SecretString;
use support::{Backend, TestServer, expect_error};

const SECRET: &str = "webhook-secret-for-tests";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/fixtures/webhooks/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

async fn start(backend: Backend, secrets: &[&str]) -> TestServer {
    let secrets: Vec<SecretString> = secrets.iter().map(|s| SecretString::from(*s)).collect();
    TestServer::start_with(backend, move |config| {
        config.github.webhook_secrets = secrets
    })
    .await
}

async fn deliver(
    t: &TestServer,
    event: &str,
    delivery: &str,
    body: &str,
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = t
        .http
        .post(t.url("/webhooks/github"))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/044aadd")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    request.send().await.unwrap()
}

fn signed(body: &str) -> Option<String> {
    Some(sign(SECRET.as_bytes(), body.as_bytes()))
}

/// Waits until every stored delivery has been handled.
async fn until_handled(t: &TestServer) {
    t.until_handled(Duration::from_secs(10)).await;
}

async fn stored_deliveries(t: &TestServer) -> i64 {
    let url = &t.db.url;
    if url.starts_with("sqlite") {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    } else {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }
}

async fn signed_deliveries_are_stored_answered_and_handled(backend: Backend) {
    let t = start(backend, &[SECRET]).await;
    let body = fixture("installation_repositories.removed");
    let response = deliver(&t, "installation_repositories", "d-1", &body, signed(&body)).await;
    assert_eq!(response.status(), 202);
    until_handled(&t).await;
    assert_eq!(stored_deliveries(&t).await, 1);

    // An event the app does not act on is acknowledged and ignored.
    let body = fixture("issue_comment.deleted");
    let response = deliver(&t, "issue_comment", "d-2", &body, signed(&body)).await;
    assert_eq!(response.status(), 202);
    until_handled(&t).await;

    let body = fixture("ping.none");
    let response = deliver(&t, "ping", "d-3", &body, signed(&body)).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["message"], "pong");
    t.stop().await;
}

async fn bad_or_missing_signatures_are_401_and_change_nothing(backend: Backend) {
    let t = start(backend, &[SECRET]).await;
    let body = fixture("installation.deleted");
    let wrong_secret = Some(sign(b"not the secret", body.as_bytes()));
    let tampered = signed(&body.replace("\"deleted\"", "\"created\""));
    let cases = [
        None,
        wrong_secret,
        tampered,
        Some("sha256=".into()),
        Some("sha1=0000".into()),
    ];
    for signature in cases {
        let response = deliver(&t, "installation", "d-bad", &body, signature).await;
        expect_error(response, 401, "bad-signature").await;
    }
    // The signature is checked before the body is parsed: garbage with a bad signature is a
    // 401, not a 400.
    let response = deliver(&t, "installation", "d-bad", "{not json", None).await;
    expect_error(response, 401, "bad-signature").await;
    assert_eq!(stored_deliveries(&t).await, 0, "nothing was stored");

    // With a good signature, garbage is a 400 and missing headers too.
    let response = deliver(&t, "installation", "d-x", "{not json", signed("{not json")).await;
    expect_error(response, 400, "bad-request").await;
    let response = deliver(&t, "", "d-y", &body, signed(&body)).await;
    expect_error(response, 400, "bad-request").await;
    assert_eq!(stored_deliveries(&t).await, 0);
    t.stop().await;
}

async fn a_redelivery_has_effect_once(backend: Backend) {
    let t = start(backend, &[SECRET]).await;
    let body = fixture("installation.created");
    let first = deliver(
        &t,
        "installation",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        &body,
        signed(&body),
    )
    .await;
    assert_eq!(first.status(), 202);
    until_handled(&t).await;
    let again = deliver(
        &t,
        "installation",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        &body,
        signed(&body),
    )
    .await;
    assert_eq!(again.status(), 200);
    let answer: serde_json::Value = again.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("already received")
    );
    assert_eq!(stored_deliveries(&t).await, 1);
    t.stop().await;
}

async fn secrets_can_be_rotated(backend: Backend) {
    let t = start(backend, &["old-secret", SECRET]).await;
    let body = fixture("ping.none");
    let old = Some(sign(b"old-secret", body.as_bytes()));
    assert_eq!(deliver(&t, "ping", "r-1", &body, old).await.status(), 200);
    assert_eq!(
        deliver(&t, "ping", "r-2", &body, signed(&body))
            .await
            .status(),
        200
    );
    t.stop().await;
}

async fn bodies_over_25_mb_are_413(backend: Backend) {
    let t = start(backend, &[SECRET]).await;
    // A raw client: the server answers as soon as it sees the declared length.
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-github-event: ping\r\nx-github-delivery: big\r\nx-hub-signature-256: {}\r\n\
         content-length: {}\r\n\r\n",
        sign(SECRET.as_bytes(), b"whatever"),
        25 * 1024 * 1024 + 1
    );
    let (status, body) = support::raw_exchange(&t.base, &head, &[]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload-too-large"), "{body}");
    assert_eq!(stored_deliveries(&t).await, 0);
    t.stop().await;
}

async fn deliveries_left_unhandled_by_a_crash_are_handled_at_start(backend: Backend) {
    let db = support::TestDb::new(backend).await;
    // As if the process died between storing and handling.
    let store = db.store().await;
    let recorded = store
        .record_delivery(&DeliveryRecord {
            delivery_id: "left-over".into(),
            event: "installation".into(),
            action: Some("deleted".into()),
            payload: fixture("installation.deleted"),
        })
        .await
        .unwrap();
    assert!(recorded);
    let config = runbooks::config::Config::for_database(&db.url);
    let server = runbooks::server::start_with_store(&config, store.clone())
        .await
        .unwrap();
    support::until_handled(&server.intake, store.as_ref(), Duration::from_secs(10)).await;
    server.shutdown().await.unwrap();
}

/// Runs one statement on the test's database (to age deliveries).
async fn execute(url: &str, statement: &str) {
    if url.starts_with("sqlite") {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
}

async fn delivery_ids(url: &str) -> Vec<String> {
    let statement = "SELECT delivery_id FROM webhook_deliveries ORDER BY delivery_id";
    if url.starts_with("sqlite") {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        sqlx::query_scalar(statement)
            .fetch_all(&mut conn)
            .await
            .unwrap()
    } else {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .unwrap();
        sqlx::query_scalar(statement)
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }
}

fn ping(id: &str) -> DeliveryRecord {
    DeliveryRecord {
        delivery_id: id.into(),
        event: "ping".into(),
        action: None,
        payload: fixture("ping.none"),
    }
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Handled deliveries are forgotten once older than `RUNBOOKS_DELIVERY_RETENTION` (7 days by
/// default), at start and every hour; deliveries not yet handled never are, however old. A
/// redelivery of a forgotten delivery is handled again.
async fn handled_deliveries_are_forgotten_after_the_retention(backend: Backend) {
    let db = support::TestDb::new(backend).await;
    let store = db.store().await;
    for id in ["old", "recent", "pending"] {
        assert!(store.record_delivery(&ping(id)).await.unwrap());
    }
    store.finish_delivery("old", None).await.unwrap();
    store.finish_delivery("recent", None).await.unwrap();
    let now = runbooks_now_ms();
    execute(
        &db.url,
        &format!(
            "UPDATE webhook_deliveries SET received_at = {}, processed_at = {} WHERE delivery_id = 'old'",
            now - 9 * DAY_MS,
            now - 8 * DAY_MS
        ),
    )
    .await;
    execute(
        &db.url,
        &format!(
            "UPDATE webhook_deliveries SET processed_at = {} WHERE delivery_id = 'recent'",
            now - 6 * DAY_MS
        ),
    )
    .await;
    execute(
        &db.url,
        &format!(
            "UPDATE webhook_deliveries SET received_at = {} WHERE delivery_id = 'pending'",
            now - 30 * DAY_MS
        ),
    )
    .await;

    let mut config = runbooks::config::Config::for_database(&db.url);
    config.github.webhook_secrets = vec![SecretString::from(SECRET)];
    assert_eq!(
        config.delivery_retention,
        Duration::from_secs(7 * 24 * 60 * 60)
    );
    let server = runbooks::server::start_with_store(&config, store.clone())
        .await
        .unwrap();
    // Polled: the pruning at start announces nothing (only handled deliveries are).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ids = delivery_ids(&db.url).await;
        let pending_left = !store.unfinished_deliveries(1).await.unwrap().is_empty();
        if ids == ["pending", "recent"] && !pending_left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left: {ids:?}, pending unhandled: {pending_left}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // GitHub's redelivery of the forgotten one is taken as new.
    let body = fixture("ping.none");
    let response = reqwest::Client::new()
        .post(format!("http://{}/webhooks/github", server.addr))
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-delivery", "old")
        .header("x-hub-signature-256", signed(&body).unwrap())
        .body(body)
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["message"], "pong", "{answer}");
    assert_eq!(delivery_ids(&db.url).await, ["old", "pending", "recent"]);
    server.shutdown().await.unwrap();
}

fn runbooks_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The intake reads unhandled deliveries a batch at a time, oldest first, and goes on until
/// none is left: a backlog of more than two batches is handled whole.
async fn a_backlog_is_handled_a_batch_at_a_time(backend: Backend) {
    let db = support::TestDb::new(backend).await;
    let store = db.store().await;
    let backlog = 2 * runbooks::intake::BATCH as usize + 1;
    for i in 0..backlog {
        assert!(
            store
                .record_delivery(&ping(&format!("b-{i:04}")))
                .await
                .unwrap()
        );
    }
    // The store reads at most what it is asked for, oldest first.
    let first = store.unfinished_deliveries(3).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(ids, ["b-0000", "b-0001", "b-0002"]);

    let config = runbooks::config::Config::for_database(&db.url);
    let server = runbooks::server::start_with_store(&config, store.clone())
        .await
        .unwrap();
    support::until_handled(&server.intake, store.as_ref(), Duration::from_secs(30)).await;
    assert_eq!(delivery_ids(&db.url).await.len(), backlog);
    server.shutdown().await.unwrap();
}

/// A request without a signature is refused before its body is read: the answer comes
/// while the declared body has not been sent at all.
async fn an_unsigned_request_is_refused_before_its_body_is_read(backend: Backend) {
    let t = start(backend, &[SECRET]).await;
    for signature in [
        "",
        "x-hub-signature-256: sha256=not-hex\r\n",
        "x-hub-signature-256: sha1=00\r\n",
    ] {
        let head = format!(
            "POST /webhooks/github HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             x-github-event: ping\r\nx-github-delivery: unsigned\r\n{signature}\
             content-length: 1000000\r\n\r\n"
        );
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(20),
            support::raw_exchange(&t.base, &head, &[]),
        )
        .await
        .expect("the server answered without waiting for the body");
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("bad-signature"), "{body}");
    }
    assert_eq!(stored_deliveries(&t).await, 0);
    t.stop().await;
}

both_backends!(
    handled_deliveries_are_forgotten_after_the_retention,
    a_backlog_is_handled_a_batch_at_a_time,
    an_unsigned_request_is_refused_before_its_body_is_read,
    signed_deliveries_are_stored_answered_and_handled,
    bad_or_missing_signatures_are_401_and_change_nothing,
    a_redelivery_has_effect_once,
    secrets_can_be_rotated,
    bodies_over_25_mb_are_413,
    deliveries_left_unhandled_by_a_crash_are_handled_at_start,
);

#[tokio::test]
async fn without_a_configured_secret_every_delivery_is_refused() {
    let t = start(Backend::Sqlite, &[]).await;
    let body = fixture("ping.none");
    let response = deliver(&t, "ping", "n-1", &body, Some(sign(b"", body.as_bytes()))).await;
    expect_error(response, 401, "bad-signature").await;
    t.stop().await;
}
