//! The REST API over real HTTP, against the real server on a loopback port, on both backends.

use crate::support;
use crate::support::rn;

use runbooks::domain::{Plan, PlannedStep, StepState};
use serde_json::{Value, json};
use support::{Backend, TestServer, create_token, expect_error, json, minimal};

const DOCUMENT_KEYS: [&str; 5] = ["pull_requests", "runbook_number", "status", "steps", "url"];
const STEP_KEYS: [&str; 6] = [
    "completed",
    "failed",
    "in_progress",
    "not_started",
    "queued",
    "total",
];

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

async fn create_answers_202_with_the_reference_document(backend: Backend) {
    let t = TestServer::start(backend).await;
    let body = json!({
        "repository": {"org": "acme-corp", "name": "backend"},
        "prompt": "Upgrade all React dependencies to v19",
        "title": "React v19 upgrade",
        "oneshot": true,
        "draft": true,
        "pr_mode": "single_pr",
        "target_branch": "develop"
    });
    let (status, doc) = json(t.create(body).await).await;
    assert_eq!(status, 202);
    assert_eq!(keys(&doc), DOCUMENT_KEYS);
    assert_eq!(keys(&doc["steps"]), STEP_KEYS);
    assert_eq!(doc["runbook_number"], 1);
    assert_eq!(doc["url"], format!("{}/runbooks/1", t.base));
    assert_eq!(doc["status"], "generating_steps");
    for key in STEP_KEYS {
        assert_eq!(doc["steps"][key], 0, "{key}");
    }
    assert_eq!(doc["pull_requests"], json!([]));

    let (status, second) = json(t.create(minimal("Second")).await).await;
    assert_eq!((status, second["runbook_number"].clone()), (202, json!(2)));

    let (status, got) = json(t.get(1).await).await;
    assert_eq!(status, 200);
    assert_eq!(got, doc, "GET returns the same document");
    t.stop().await;
}

/// Parallel POSTs through HTTP: every number from 1 to N exactly once.
async fn concurrent_creations_get_consecutive_numbers(backend: Backend) {
    let t = TestServer::start(backend).await;
    let requests = (0..40).map(|i| t.create(minimal(&format!("task {i}"))));
    let mut numbers: Vec<i64> = Vec::new();
    for response in futures_util::future::join_all(requests).await {
        let (status, doc) = json(response).await;
        assert_eq!(status, 202, "{doc}");
        numbers.push(doc["runbook_number"].as_i64().unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, (1..=40).collect::<Vec<i64>>());
    t.stop().await;
}

async fn fields_and_defaults_are_stored(backend: Backend) {
    let t = TestServer::start(backend).await;
    let (status, _) = json(
        t.create(minimal("Rename the helper\n\nand its callers"))
            .await,
    )
    .await;
    assert_eq!(status, 202);
    let stored = t.store.runbook(rn(1)).await.unwrap().unwrap();
    assert_eq!(
        stored.title, "Rename the helper",
        "a missing title comes from the prompt"
    );
    assert!(stored.oneshot, "oneshot defaults to true");
    assert_eq!(stored.draft, None, "left to the project configuration");
    assert_eq!(stored.pr_mode, None, "left to the project configuration");
    assert_eq!(
        stored.target_branch, None,
        "the repository's default branch"
    );
    assert!(stored.labels.is_empty());

    let body = json!({
        "repository": {"org": "ACME-Corp", "name": "backend"},
        "prompt": "p",
        "oneshot": false,
        "draft": false,
        "pr_mode": "stacked_pr",
        "description": "Part of the Q3 upgrade.",
        "labels": ["deps", "react", "Deps", "ci"],
        "author_email": "dev@acme.example"
    });
    let (status, doc) = json(t.create(body).await).await;
    assert_eq!(
        status, 202,
        "organisation names compare without case: {doc}"
    );
    let stored = t.store.runbook(rn(2)).await.unwrap().unwrap();
    assert!(!stored.oneshot);
    assert_eq!(stored.draft, Some(false));
    assert_eq!(stored.pr_mode, Some(runbooks::domain::PrMode::StackedPr));
    assert_eq!(
        stored.description.as_deref(),
        Some("Part of the Q3 upgrade.")
    );
    assert_eq!(
        stored.labels,
        ["deps", "react", "ci"],
        "de-duplicated, order kept"
    );
    assert_eq!(stored.author_email.as_deref(), Some("dev@acme.example"));
    t.stop().await;
}

async fn status_reflects_leaf_steps_and_pull_requests(backend: Backend) {
    let t = TestServer::start(backend).await;
    json(t.create(minimal("p")).await).await;
    let steps = ["1", "1.1", "1.2", "2"]
        .iter()
        .map(|n| PlannedStep {
            number: n.parse().unwrap(),
            title: format!("Step {n}"),
            details: String::new(),
        })
        .collect();
    t.store
        .append_steps(rn(1), &Plan::new(steps).unwrap())
        .await
        .unwrap();
    let (_, doc) = json(t.get(1).await).await;
    assert_eq!(doc["status"], "not_started");
    assert_eq!(doc["steps"]["total"], 3);
    assert_eq!(doc["steps"]["not_started"], 3);

    t.store
        .set_step_state(rn(1), &"1.1".parse().unwrap(), StepState::Completed)
        .await
        .unwrap();
    t.store
        .set_step_state(rn(1), &"1.2".parse().unwrap(), StepState::Queued)
        .await
        .unwrap();
    let (_, doc) = json(t.get(1).await).await;
    assert_eq!(doc["status"], "partially_completed");
    assert_eq!(
        doc["steps"],
        json!({"total": 3, "not_started": 1, "in_progress": 0, "completed": 1, "failed": 0, "queued": 1})
    );

    t.store
        .set_step_state(rn(1), &"1.2".parse().unwrap(), StepState::InProgress)
        .await
        .unwrap();
    assert_eq!(json(t.get(1).await).await.1["status"], "in_progress");
    t.store
        .set_step_state(rn(1), &"1.2".parse().unwrap(), StepState::Failed)
        .await
        .unwrap();
    assert_eq!(json(t.get(1).await).await.1["status"], "failed");
    for n in ["1.2", "2"] {
        t.store
            .set_step_state(rn(1), &n.parse().unwrap(), StepState::Completed)
            .await
            .unwrap();
    }
    t.store
        .record_pull_request(
            rn(1),
            7,
            "https://github.com/acme-corp/backend/pull/7",
            &["2".parse().unwrap(), "1.1".parse().unwrap()],
        )
        .await
        .unwrap();
    let (_, doc) = json(t.get(1).await).await;
    assert_eq!(doc["status"], "completed");
    assert_eq!(
        doc["pull_requests"],
        json!([{"number": 7, "url": "https://github.com/acme-corp/backend/pull/7", "step_numbers": ["1.1", "2"]}])
    );
    t.stop().await;
}

async fn patch_records_a_follow_up(backend: Backend) {
    let t = TestServer::start(backend).await;
    let mut body = minimal("p");
    body["labels"] = json!(["deps"]);
    body["description"] = json!("Old");
    json(t.create(body).await).await;

    let (status, doc) = json(
        t.patch(
            1,
            json!({"prompt": "Also the lock file", "labels": ["lockfile", "DEPS"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(keys(&doc), DOCUMENT_KEYS);
    assert_eq!(doc["runbook_number"], 1);
    let stored = t.store.runbook(rn(1)).await.unwrap().unwrap();
    assert_eq!(stored.labels, ["deps", "lockfile"], "merged, never removed");
    assert_eq!(stored.description.as_deref(), Some("Old"));

    let (status, _) = json(
        t.patch(1, json!({"prompt": "Docs", "description": "New"}))
            .await,
    )
    .await;
    assert_eq!(status, 202);
    let stored = t.store.runbook(rn(1)).await.unwrap().unwrap();
    assert_eq!(stored.description.as_deref(), Some("New"), "replaced");
    let pending: Vec<String> = t
        .store
        .pending_follow_ups(rn(1))
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.prompt)
        .collect();
    assert_eq!(pending, ["Also the lock file", "Docs"]);

    expect_error(t.patch(2, json!({"prompt": "x"})).await, 404, "not-found").await;
    t.stop().await;
}

/// Every malformed, missing, mistyped, oversized or out-of-range field: a 400 that names
/// it, and nothing stored — the next good runbook still gets number 1.
async fn bad_bodies_are_400s_naming_the_field_and_change_nothing(backend: Backend) {
    let t = TestServer::start(backend).await;
    let repo = json!({"org": "acme-corp", "name": "backend"});
    let with = |key: &str, value: Value| {
        let mut body = minimal("p");
        body[key] = value;
        body
    };
    let cases: Vec<(String, &str)> = vec![
        ("{\"repository\": ".into(), "not valid JSON"),
        ("[1, 2]".into(), "JSON object"),
        ("\"text\"".into(), "JSON object"),
        (json!({"prompt": "p"}).to_string(), "`repository`"),
        (
            json!({"repository": repo, "prompt": "p", "extra": 1}).to_string(),
            "`extra`",
        ),
        (
            json!({"repository": {"org": "acme-corp"}, "prompt": "p"}).to_string(),
            "`repository.name`",
        ),
        (
            json!({"repository": {"name": "backend"}, "prompt": "p"}).to_string(),
            "`repository.org`",
        ),
        (
            json!({"repository": "acme-corp/backend", "prompt": "p"}).to_string(),
            "`repository`",
        ),
        (json!({"repository": repo}).to_string(), "`prompt`"),
        (
            json!({"repository": repo, "prompt": null}).to_string(),
            "`prompt`",
        ),
        (with("prompt", json!(42)).to_string(), "`prompt`"),
        (with("prompt", json!("")).to_string(), "`prompt`"),
        (with("prompt", json!("  \n ")).to_string(), "`prompt`"),
        (
            with("prompt", json!("x".repeat(100 * 1024 + 1))).to_string(),
            "`prompt`",
        ),
        (
            with("repository", json!({"org": "acme corp", "name": "backend"})).to_string(),
            "`repository.org`",
        ),
        (
            with("repository", json!({"org": "acme-corp", "name": "../etc"})).to_string(),
            "`repository.name`",
        ),
        (
            with("repository", json!({"org": "acme-corp", "name": ""})).to_string(),
            "`repository.name`",
        ),
        (with("pr_mode", json!("big_pr")).to_string(), "`pr_mode`"),
        (with("pr_mode", json!(1)).to_string(), "`pr_mode`"),
        (with("oneshot", json!("yes")).to_string(), "`oneshot`"),
        (with("draft", json!(1)).to_string(), "`draft`"),
        (with("title", json!("")).to_string(), "`title`"),
        (with("title", json!("x".repeat(257))).to_string(), "`title`"),
        (with("title", json!("two\nlines")).to_string(), "`title`"),
        (
            with("target_branch", json!("bad..branch")).to_string(),
            "`target_branch`",
        ),
        (
            with("target_branch", json!("")).to_string(),
            "`target_branch`",
        ),
        (
            with("target_branch", json!(7)).to_string(),
            "`target_branch`",
        ),
        (
            with("description", json!("d".repeat(16 * 1024 + 1))).to_string(),
            "`description`",
        ),
        (with("labels", json!("deps")).to_string(), "`labels`"),
        (with("labels", json!(["ok", 3])).to_string(), "`labels[1]`"),
        (
            with("labels", json!(["ok", " "])).to_string(),
            "`labels[1]`",
        ),
        (
            with("labels", json!(["l".repeat(51)])).to_string(),
            "`labels[0]`",
        ),
        (
            with("labels", json!(vec!["x"; 101])).to_string(),
            "`labels`",
        ),
        (
            with("author_email", json!("not-an-email")).to_string(),
            "`author_email`",
        ),
        (
            with("author_email", json!(["a@b.c"])).to_string(),
            "`author_email`",
        ),
    ];
    for (body, field) in &cases {
        let response = t
            .http
            .post(t.url("/api/v1/runbook"))
            .bearer_auth(&t.token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (_, message) = expect_error(response, 400, "bad-request").await;
        assert!(
            message.contains(field),
            "{field} not named in {message:?} for body {}",
            &body[..body.len().min(120)]
        );
    }
    let empty = t
        .http
        .post(t.url("/api/v1/runbook"))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    expect_error(empty, 400, "bad-request").await;

    let (status, doc) = json(t.create(minimal("good")).await).await;
    assert_eq!(
        (status, doc["runbook_number"].clone()),
        (202, json!(1)),
        "nothing was stored before"
    );
    t.stop().await;
}

async fn bad_follow_ups_and_numbers_are_400s(backend: Backend) {
    let t = TestServer::start(backend).await;
    json(t.create(minimal("p")).await).await;
    for (body, field) in [
        (json!({}), "`prompt`"),
        (json!({"prompt": ""}), "`prompt`"),
        (json!({"prompt": "x", "labels": [""]}), "`labels[0]`"),
        (json!({"prompt": "x", "title": "no"}), "`title`"),
        (json!({"prompt": "x", "description": 5}), "`description`"),
    ] {
        let (_, message) = expect_error(t.patch(1, body).await, 400, "bad-request").await;
        assert!(message.contains(field), "{message}");
    }
    assert!(
        t.store.pending_follow_ups(rn(1)).await.unwrap().is_empty(),
        "nothing stored"
    );

    for bad in ["0", "-3", "abc", "1.5", "99999999999999999999999"] {
        let (_, message) = expect_error(t.get(bad).await, 400, "bad-request").await;
        assert!(message.contains("runbook_number"), "{message}");
        expect_error(
            t.patch(bad, json!({"prompt": "x"})).await,
            400,
            "bad-request",
        )
        .await;
    }
    expect_error(t.get(2).await, 404, "not-found").await;
    t.stop().await;
}

async fn unauthorized_requests_get_401_with_a_challenge(backend: Backend) {
    let t = TestServer::start(backend).await;
    json(t.create(minimal("p")).await).await;
    let revoked = create_token(&t.store, &["acme-corp"]).await;
    let revoked_id = t.store.list_tokens().await.unwrap().last().unwrap().id;
    assert!(t.store.revoke_token(revoked_id).await.unwrap());

    let bad_headers: Vec<Option<String>> = vec![
        None,
        Some(format!("Basic {}", t.token)),
        Some("Bearer".into()),
        Some("Bearer not-a-token".into()),
        Some(format!("Bearer rbk_{}", "0".repeat(64))),
        Some(format!("Bearer {revoked}")),
    ];
    for header in &bad_headers {
        let requests = [
            t.http.get(t.url("/api/v1/runbook/1")),
            t.http.post(t.url("/api/v1/runbook")).json(&minimal("p")),
            t.http
                .patch(t.url("/api/v1/runbook/1"))
                .json(&json!({"prompt": "x"})),
        ];
        for request in requests {
            let request = match header {
                Some(h) => request.header("authorization", h),
                None => request,
            };
            let (headers, _) =
                expect_error(request.send().await.unwrap(), 401, "unauthorized").await;
            let challenge = headers["www-authenticate"].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");
        }
    }
    // The scheme is case-insensitive.
    let ok = t
        .http
        .get(t.url("/api/v1/runbook/1"))
        .header("authorization", format!("bearer {}", t.token))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        t.store.runbook_summary(rn(2)).await.unwrap(),
        None,
        "nothing was created"
    );
    assert!(t.store.pending_follow_ups(rn(1)).await.unwrap().is_empty());
    t.stop().await;
}

/// A token the server has already seen (and cached) stops working with the next request
/// after its revocation, for reads and writes alike.
async fn a_revoked_token_stops_working_at_once(backend: Backend) {
    let t = TestServer::start(backend).await;
    json(t.create(minimal("p")).await).await;
    assert_eq!(t.get(1).await.status(), 200);
    assert_eq!(t.get(999).await.status(), 404);
    let id = t.store.list_tokens().await.unwrap()[0].id;
    assert!(t.store.revoke_token(id).await.unwrap());

    expect_error(t.get(1).await, 401, "unauthorized").await;
    expect_error(t.get(999).await, 401, "unauthorized").await;
    expect_error(t.create(minimal("p")).await, 401, "unauthorized").await;
    expect_error(
        t.patch(1, json!({"prompt": "x"})).await,
        401,
        "unauthorized",
    )
    .await;
    assert!(t.store.runbook(rn(2)).await.unwrap().is_none());
    assert!(t.store.pending_follow_ups(rn(1)).await.unwrap().is_empty());
    t.stop().await;
}

async fn tokens_see_only_their_organisations(backend: Backend) {
    let t = TestServer::start(backend).await;
    json(t.create(minimal("acme's")).await).await;
    let globex = create_token(&t.store, &["globex"]).await;

    let response = t
        .http
        .get(t.url("/api/v1/runbook/1"))
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap();
    let (_, hidden) = expect_error(response, 404, "not-found").await;
    let (_, missing) = expect_error(t.get(999).await, 404, "not-found").await;
    assert_eq!(
        hidden.replace('1', "N"),
        missing.replace("999", "N"),
        "the same answer as a missing runbook"
    );

    let response = t
        .http
        .patch(t.url("/api/v1/runbook/1"))
        .bearer_auth(&globex)
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(response, 404, "not-found").await;
    assert!(t.store.pending_follow_ups(rn(1)).await.unwrap().is_empty());

    let response = t
        .http
        .post(t.url("/api/v1/runbook"))
        .bearer_auth(&globex)
        .json(&minimal("p"))
        .send()
        .await
        .unwrap();
    let (_, message) = expect_error(response, 403, "forbidden").await;
    assert!(message.contains("acme-corp"), "{message}");

    // A token for several organisations acts for each of them.
    let both = create_token(&t.store, &["globex", "acme-corp"]).await;
    let response = t
        .http
        .get(t.url("/api/v1/runbook/1"))
        .bearer_auth(&both)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = minimal("p");
    body["repository"]["org"] = json!("globex");
    let response = t
        .http
        .post(t.url("/api/v1/runbook"))
        .bearer_auth(&both)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    t.stop().await;
}

async fn wrong_content_type_is_415_and_large_bodies_413(backend: Backend) {
    let t = TestServer::start(backend).await;
    let body = minimal("p").to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = t
            .http
            .post(t.url("/api/v1/runbook"))
            .bearer_auth(&t.token)
            .body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        expect_error(request.send().await.unwrap(), 415, "unsupported-media-type").await;
    }
    let ok = t
        .http
        .post(t.url("/api/v1/runbook"))
        .bearer_auth(&t.token)
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202, "a charset parameter is fine");

    // A declared length over the limit is refused before the body is read.
    let (status, body) = support::declared_too_large(&t, "POST", "/api/v1/runbook").await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\":\"payload-too-large\""), "{body}");
    // Without a length (chunked), the limit holds while reading.
    let head = format!(
        "POST /api/v1/runbook HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        t.token
    );
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
    let chunks = vec![chunk; 17]; // 1.06 MiB, never terminated: the answer must come first
    let (status, body) = support::raw_exchange(&t.base, &head, &chunks).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\":\"payload-too-large\""), "{body}");
    let response = t
        .http
        .patch(t.url("/api/v1/runbook/1"))
        .bearer_auth(&t.token)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(response, 415, "unsupported-media-type").await;
    assert!(t.store.runbook(rn(2)).await.unwrap().is_none());
    t.stop().await;
}

async fn rate_limited_tokens_get_429_with_retry_after(backend: Backend) {
    let t = TestServer::start_with(backend, |config| config.rate_limit_per_minute = 3).await;
    json(t.create(minimal("p")).await).await;
    assert_eq!(t.get(1).await.status(), 200);
    assert_eq!(t.get(1).await.status(), 200);
    let (headers, message) = expect_error(t.get(1).await, 429, "rate-limited").await;
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(message.contains("retry"), "{message}");
    let (_, _) = expect_error(t.create(minimal("p")).await, 429, "rate-limited").await;
    assert!(
        t.store.runbook(rn(2)).await.unwrap().is_none(),
        "a limited request changes nothing"
    );
    // The limit is per token.
    let other = create_token(&t.store, &["acme-corp"]).await;
    let response = t
        .http
        .get(t.url("/api/v1/runbook/1"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    t.stop().await;
}

async fn health_and_unknown_routes(backend: Backend) {
    let t = TestServer::start(backend).await;
    let healthz = t.http.get(t.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = t.http.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 200);
    expect_error(
        t.http.get(t.url("/api/v1/nothing")).send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    expect_error(
        t.http
            .delete(t.url("/api/v1/runbook/1"))
            .bearer_auth(&t.token)
            .send()
            .await
            .unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
    expect_error(
        t.http.get(t.url("/api/v1/runbook")).send().await.unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
    t.stop().await;
}

both_backends!(
    create_answers_202_with_the_reference_document,
    concurrent_creations_get_consecutive_numbers,
    fields_and_defaults_are_stored,
    status_reflects_leaf_steps_and_pull_requests,
    patch_records_a_follow_up,
    bad_bodies_are_400s_naming_the_field_and_change_nothing,
    bad_follow_ups_and_numbers_are_400s,
    unauthorized_requests_get_401_with_a_challenge,
    a_revoked_token_stops_working_at_once,
    tokens_see_only_their_organisations,
    wrong_content_type_is_415_and_large_bodies_413,
    rate_limited_tokens_get_429_with_retry_after,
    health_and_unknown_routes,
);

/// When PostgreSQL goes away, `/readyz` says so while `/healthz` still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_database_is_gone() {
    let t = TestServer::start(Backend::Postgres).await;
    let name = t.db.url.rsplit('/').next().unwrap().to_string();
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&support::postgres_admin_url())
            .await
            .unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    let readyz = t.http.get(t.url("/readyz")).send().await.unwrap();
    expect_error(readyz, 503, "service-unavailable").await;
    assert_eq!(
        t.http.get(t.url("/healthz")).send().await.unwrap().status(),
        200
    );
    t.stop().await;
}

#[tokio::test]
async fn the_openapi_document_covers_every_endpoint_body_and_error() {
    let t = TestServer::start(Backend::Sqlite).await;
    let (status, doc) = json(
        t.http
            .get(t.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    let paths = &doc["paths"];
    let create = &paths["/api/v1/runbook"]["post"];
    let get = &paths["/api/v1/runbook/{runbook_number}"]["get"];
    let patch = &paths["/api/v1/runbook/{runbook_number}"]["patch"];
    for (op, ok, errors) in [
        (
            create,
            "202",
            &["400", "401", "403", "413", "415", "429"][..],
        ),
        (get, "200", &["400", "401", "404", "429"][..]),
        (
            patch,
            "202",
            &["400", "401", "404", "413", "415", "429"][..],
        ),
    ] {
        let responses = &op["responses"];
        assert_eq!(
            responses[ok]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/RunbookDocument"
        );
        for code in errors {
            assert_eq!(
                responses[code]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{code}"
            );
        }
        assert!(op["security"].to_string().contains("bearer"));
    }
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateRunbookRequest"
    );
    assert_eq!(
        patch["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/UpdateRunbookRequest"
    );
    for action in ["execute", "retry", "cancel"] {
        let op = &paths[format!("/api/v1/runbook/{{runbook_number}}/{action}").as_str()]["post"];
        assert_eq!(
            op["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/RunbookDocument",
            "{action}"
        );
    }
    assert_eq!(
        paths["/api/v1/runbook/{runbook_number}/steps"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/StepsDocument"
    );
    for path in ["/healthz", "/readyz", "/api/v1/openapi.json"] {
        assert!(paths[path]["get"].is_object(), "{path}");
    }
    let schemas = &doc["components"]["schemas"];
    let required = |name: &str| -> Vec<String> {
        let mut r: Vec<String> = serde_json::from_value(schemas[name]["required"].clone()).unwrap();
        r.sort();
        r
    };
    assert_eq!(required("RunbookDocument"), DOCUMENT_KEYS);
    assert_eq!(required("StepCounts"), STEP_KEYS);
    assert_eq!(required("CreateRunbookRequest"), ["prompt", "repository"]);
    assert_eq!(required("ErrorBody"), ["error", "message"]);
    let create_fields = keys(&schemas["CreateRunbookRequest"]["properties"]);
    assert_eq!(
        create_fields,
        [
            "author_email",
            "description",
            "draft",
            "labels",
            "oneshot",
            "pr_mode",
            "prompt",
            "repository",
            "target_branch",
            "title"
        ]
    );
    let statuses = schemas["RunbookStatus"]["enum"].to_string();
    for status in [
        "generating_steps",
        "not_started",
        "in_progress",
        "partially_completed",
        "failed",
        "completed",
    ] {
        assert!(statuses.contains(status), "{status}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    t.stop().await;
}
