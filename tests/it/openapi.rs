//! The OpenAPI description says what the server does.
//!
//! Every operation found in the description served at `/api/v1/openapi.json` (so a new one
//! is probed as soon as it is described) is sent the requests that make each part of it
//! answer: no token, a bad token, the token's rate limit, bad runbook numbers, each kind of
//! bad body, runbooks in different states, GitHub refusing or failing, the database gone, and
//! the requests that succeed. Every answer must be listed for its operation, in the listed
//! content type, with the listed headers; and every status the description lists for an
//! operation must have been answered by some request, so the description lists nothing the
//! server never says.

use crate::support;
use crate::support::rn;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, RequestBuilder, Response};
use runbooks::domain::{Plan, PlannedStep, RunbookStatus, StepState};
use runbooks::github::RetryPolicy;
use runbooks_standin::Fault;
use serde_json::{Value, json};
use support::{Backend, LIB, RENAME, TestServer, create_token, minimal, server_for};

/// An operation of the description.
#[derive(Debug, Clone)]
struct Operation {
    path: String,
    method: Method,
    /// Behind the bearer token.
    secured: bool,
    /// Takes `{runbook_number}`.
    numbered: bool,
    /// Its JSON body, when it takes one: a valid example and whether it may be left out.
    body: Option<(Value, bool)>,
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn url(&self, base: &str, number: &str) -> String {
        format!("{base}{}", self.path.replace("{runbook_number}", number))
    }
}

/// The description, the operations in it, and the statuses each has answered so far.
struct Ledger {
    doc: Value,
    operations: Vec<Operation>,
    answered: BTreeMap<String, BTreeSet<u16>>,
}

/// A valid value for `schema`, from the examples the description gives.
fn example(doc: &Value, schema: &Value) -> Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return example(doc, &doc["components"]["schemas"][name]);
    }
    if let Some(value) = schema["examples"].get(0).or(schema.get("example")) {
        return value.clone();
    }
    if let Some(choices) = schema["oneOf"].as_array() {
        let choice = choices
            .iter()
            .find(|c| c["type"] != "null")
            .expect("a choice that is not null");
        return example(doc, choice);
    }
    if schema["properties"].is_object() {
        let mut object = serde_json::Map::new();
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().expect("a property name");
            object.insert(name.to_string(), example(doc, &schema["properties"][name]));
        }
        return Value::Object(object);
    }
    panic!("the description gives no example for {schema}");
}

impl Ledger {
    async fn new(t: &TestServer) -> Ledger {
        let doc: Value = t
            .http
            .get(t.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut operations = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                let method: Method = method.to_uppercase().parse().unwrap();
                let body = operation["requestBody"].as_object().map(|body| {
                    let schema = &body["content"]["application/json"]["schema"];
                    assert!(schema.is_object(), "{path}: a JSON body");
                    (
                        example(&doc, schema),
                        body.get("required") != Some(&json!(true)),
                    )
                });
                operations.push(Operation {
                    path: path.clone(),
                    method,
                    secured: operation["security"].to_string().contains("bearer"),
                    numbered: path.contains("{runbook_number}"),
                    body,
                });
            }
        }
        assert!(operations.len() >= 10, "{operations:?}");
        Ledger {
            doc,
            operations,
            answered: BTreeMap::new(),
        }
    }

    fn listed(&self, operation: &Operation) -> BTreeSet<u16> {
        self.doc["paths"][&operation.path][operation.method.as_str().to_lowercase()]["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .map(|code| code.parse().expect("a status code"))
            .collect()
    }

    /// Checks an answer against the description and records it.
    async fn check(&mut self, operation: &Operation, what: &str, response: Response) -> u16 {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let name = operation.name();
        let listed = &self.doc["paths"][&operation.path][operation.method.as_str().to_lowercase()]
            ["responses"][status.to_string()];
        assert!(
            listed.is_object(),
            "{name} answered {status} to {what}, which its description does not list: {text}"
        );
        if let Some(content) = listed["content"].as_object() {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .to_string();
            assert!(
                content.contains_key(&content_type),
                "{name} answered {status} to {what} as {content_type:?}, not as listed: {text}"
            );
            let schema = &content[&content_type]["schema"]["$ref"];
            if schema == "#/components/schemas/ErrorBody" {
                let body: Value = serde_json::from_str(&text).unwrap();
                let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
                keys.sort();
                assert_eq!(keys, ["error", "message"], "{name}, {what}: {body}");
            }
        }
        for header in listed["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|h| h.0)
        {
            assert!(
                headers.contains_key(header.as_str()),
                "{name} answered {status} to {what} without its listed {header} header"
            );
        }
        self.answered.entry(name).or_default().insert(status);
        status
    }

    /// Sends `operation` to `t` as `token`, on runbook `number`, with `body` (raw), and
    /// checks the answer.
    async fn send(
        &mut self,
        t: &TestServer,
        operation: &Operation,
        token: Option<&str>,
        number: &str,
        body: Body,
        what: &str,
    ) -> u16 {
        let mut request: RequestBuilder = t
            .http
            .request(operation.method.clone(), operation.url(&t.base, number));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(content_type, bytes) => {
                let request = match content_type {
                    Some(content_type) => request.header("content-type", content_type),
                    None => request,
                };
                request.body(bytes)
            }
        };
        let response = request.send().await.unwrap();
        self.check(operation, what, response).await
    }

    /// A body declared larger than the limit, from a raw client that sends only the head:
    /// the server answers before reading it (reqwest would race the answer with the upload).
    async fn too_large(&mut self, t: &TestServer, operation: &Operation) {
        let path = operation.path.replace("{runbook_number}", "1");
        let (status, body) = support::declared_too_large(t, operation.method.as_str(), &path).await;
        let name = operation.name();
        let listed = &self.doc["paths"][&operation.path][operation.method.as_str().to_lowercase()]
            ["responses"][status.to_string()];
        assert!(
            listed.is_object(),
            "{name} answered {status} to a body over the limit, which its description does \
             not list: {body}"
        );
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"], "payload-too-large", "{name}: {body}");
        self.answered.entry(name).or_default().insert(status);
    }

    /// The usual request: with the token and the description's example body.
    async fn good(&mut self, t: &TestServer, operation: &Operation, number: i64) -> u16 {
        let body = match &operation.body {
            Some((example, _)) => Body::Json(example.clone()),
            None => Body::None,
        };
        let token = t.token.clone();
        let what = format!("a valid request on runbook {number}");
        self.send(t, operation, Some(&token), &number.to_string(), body, &what)
            .await
    }
}

enum Body {
    None,
    Json(Value),
    Raw(Option<&'static str>, Vec<u8>),
}

fn plan(numbers: &[&str]) -> Plan {
    Plan::new(
        numbers
            .iter()
            .map(|n| PlannedStep {
                number: n.parse().unwrap(),
                title: format!("Step {n}"),
                details: String::new(),
            })
            .collect(),
    )
    .unwrap()
}

/// What fails before a handler's own work (token, number, body), and runbooks in several
/// states, on a server without a GitHub App.
async fn requests_of_every_kind(ledger: &mut Ledger) {
    let t = TestServer::start(Backend::Sqlite).await;
    let mut manual = minimal("manual");
    manual["pr_mode"] = json!("manual");
    for body in [minimal("no plan yet"), manual, minimal("planned")] {
        assert_eq!(t.create(body).await.status(), 202);
    }
    // Runbook 3 has a plan: step 1 not started, step 2 failed.
    t.store
        .append_steps(rn(3), &plan(&["1", "2"]))
        .await
        .unwrap();
    let reset = || async {
        for (step, state) in [("1", StepState::NotStarted), ("2", StepState::Failed)] {
            t.store
                .set_step_state(rn(3), &step.parse().unwrap(), state)
                .await
                .unwrap();
        }
    };
    let bad_token = format!("rbk_{}", "0".repeat(64));

    for operation in ledger.operations.clone() {
        let token = Some(t.token.as_str());
        if operation.secured {
            ledger
                .send(&t, &operation, None, "1", Body::None, "no token")
                .await;
            ledger
                .send(
                    &t,
                    &operation,
                    Some(&bad_token),
                    "1",
                    Body::None,
                    "an unknown token",
                )
                .await;
        }
        if operation.numbered {
            for number in [
                "0",
                "-1",
                "abc",
                "1.5",
                "99999999999999999999",
                "%FF",
                "%20",
            ] {
                let what = format!("runbook number {number:?}");
                ledger
                    .send(&t, &operation, token, number, Body::None, &what)
                    .await;
            }
            let what = "a runbook that does not exist";
            let body = operation
                .body
                .clone()
                .map_or(Body::None, |b| Body::Json(b.0));
            ledger
                .send(&t, &operation, token, &i64::MAX.to_string(), body, what)
                .await;
        }
        if let Some((example, optional)) = operation.body.clone() {
            ledger.too_large(&t, &operation).await;
            let bad_bodies: [(&str, Body); 7] = [
                ("a text body", Body::Raw(Some("text/plain"), b"{}".to_vec())),
                (
                    "a body without a content type",
                    Body::Raw(None, b"{}".to_vec()),
                ),
                (
                    "malformed JSON",
                    Body::Raw(Some("application/json"), b"{".to_vec()),
                ),
                ("an array", Body::Json(json!([example.clone()]))),
                (
                    "an unknown field",
                    Body::Json(json!({"surely_not_a_field": 1})),
                ),
                ("an empty object", Body::Json(json!({}))),
                ("a number", Body::Json(json!(7))),
            ];
            for (what, body) in bad_bodies {
                ledger.send(&t, &operation, token, "1", body, what).await;
            }
            if optional {
                ledger
                    .send(&t, &operation, token, "3", Body::None, "no body")
                    .await;
                reset().await;
                let null = Body::Raw(Some("application/json"), b"null".to_vec());
                ledger.send(&t, &operation, token, "3", null, "null").await;
            }
        }
        for number in [1, 2, 3] {
            reset().await;
            ledger.good(&t, &operation, number).await;
        }
    }
    // Another organisation's repository.
    let create = ledger.find(Method::POST, "/api/v1/runbook");
    let mut other = minimal("p");
    other["repository"]["org"] = json!("globex");
    let token = t.token.clone();
    let status = ledger
        .send(
            &t,
            &create,
            Some(&token),
            "",
            Body::Json(other),
            "another organisation",
        )
        .await;
    assert_eq!(status, 403);
    t.stop().await;
}

/// The token's rate limit, on every operation behind a token.
async fn the_rate_limit(ledger: &mut Ledger) {
    let t =
        TestServer::start_with(Backend::Sqlite, |config| config.rate_limit_per_minute = 1).await;
    for operation in ledger.operations.clone() {
        if !operation.secured {
            continue;
        }
        let token = create_token(&t.store, &["acme-corp"]).await;
        for what in ["a first request", "a second request within the minute"] {
            let body = operation
                .body
                .clone()
                .map_or(Body::None, |b| Body::Json(b.0));
            let status = ledger
                .send(&t, &operation, Some(&token), "1", body, what)
                .await;
            if what.starts_with("a second") {
                assert_eq!(status, 429, "{}", operation.name());
            }
        }
    }
    t.stop().await;
}

/// GitHub's answers: a repository the app is not on, GitHub failing, and the engine's work
/// (a `manual` runbook's pull request opened on request, or GitHub failing then).
async fn github_s_answers(ledger: &mut Ledger) {
    let github = support::github_with_backend(&[("src/lib.rs", LIB), ("README.md", "# b\n")]).await;
    let t = server_for(&github, Backend::Sqlite, |_| {}).await;
    let create = ledger.find(Method::POST, "/api/v1/runbook");
    let pull = ledger.find(
        Method::POST,
        "/api/v1/runbook/{runbook_number}/pull_requests",
    );
    let token = t.token.clone();
    let attempts = RetryPolicy::default().attempts;

    let mut missing = minimal("p");
    missing["repository"]["name"] = json!("missing");
    let what = "a repository that does not exist";
    let status = ledger
        .send(&t, &create, Some(&token), "", Body::Json(missing), what)
        .await;
    assert_eq!(status, 422);
    github.inject(Fault::server_error("/repos/acme-corp/backend/installation").times(attempts));
    let what = "GitHub failing";
    let status = ledger
        .send(
            &t,
            &create,
            Some(&token),
            "",
            Body::Json(minimal("p")),
            what,
        )
        .await;
    assert_eq!(status, 502);

    for (number, fails) in [(1, false), (2, true)] {
        let mut body = minimal(RENAME);
        body["pr_mode"] = json!("manual");
        let what = "a manual runbook";
        let status = ledger
            .send(&t, &create, Some(&token), "", Body::Json(body), what)
            .await;
        assert_eq!(status, 202);
        let done = support::wait_for_status(
            &t,
            number,
            &[RunbookStatus::Completed, RunbookStatus::Failed],
        )
        .await;
        assert_eq!(done.status, RunbookStatus::Completed, "{done:?}");
        if fails {
            // The request is recorded as owed first, so a worker may try to open the PR at
            // the same time as the request does: enough failures for both.
            github
                .inject(Fault::server_error("/repos/acme-corp/backend/pulls").times(attempts * 4));
        }
        let status = ledger.good(&t, &pull, number).await;
        assert_eq!(status, if fails { 502 } else { 202 });
    }
    t.stop().await;
}

/// An organisation whose monthly budget is spent: new runbooks and follow-ups are refused.
async fn a_spent_budget(ledger: &mut Ledger) {
    use runbooks::domain::{LimitChanges, LimitValue};
    let t = TestServer::start(Backend::Sqlite).await;
    assert_eq!(t.create(minimal("p")).await.status(), 202);
    // A budget of no tokens is spent at once.
    let spent = LimitChanges {
        monthly_tokens: Some(LimitValue::Set(0)),
        ..LimitChanges::default()
    };
    t.store
        .update_org_limits("acme-corp", &spent)
        .await
        .unwrap();
    let create = ledger.find(Method::POST, "/api/v1/runbook");
    let token = t.token.clone();
    let what = "a spent budget";
    let status = ledger
        .send(
            &t,
            &create,
            Some(&token),
            "",
            Body::Json(minimal("p")),
            what,
        )
        .await;
    assert_eq!(status, 402);
    let update = ledger.find(Method::PATCH, "/api/v1/runbook/{runbook_number}");
    assert_eq!(ledger.good(&t, &update, 1).await, 402);
    t.stop().await;
}

/// The database gone: every operation behind a token fails inside; the others say so or
/// do not need it.
async fn the_database_gone(ledger: &mut Ledger) {
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
    for operation in ledger.operations.clone() {
        let status = ledger.good(&t, &operation, 1).await;
        if operation.secured {
            assert_eq!(status, 500, "{}", operation.name());
        }
    }
    t.stop().await;
}

impl Ledger {
    fn find(&self, method: Method, path: &str) -> Operation {
        self.operations
            .iter()
            .find(|o| o.method == method && o.path == path)
            .unwrap_or_else(|| panic!("{method} {path} is not described"))
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_described_and_every_described_answer_happens() {
    let t = TestServer::start(Backend::Sqlite).await;
    let mut ledger = Ledger::new(&t).await;
    t.stop().await;

    requests_of_every_kind(&mut ledger).await;
    the_rate_limit(&mut ledger).await;
    github_s_answers(&mut ledger).await;
    a_spent_budget(&mut ledger).await;
    the_database_gone(&mut ledger).await;

    for operation in &ledger.operations {
        let listed = ledger.listed(operation);
        let answered = ledger
            .answered
            .get(&operation.name())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            listed,
            answered,
            "{}: the statuses listed, and those answered",
            operation.name()
        );
    }
}

/// The request rules in the description are the validator's: the same limits, and patterns
/// that the domain's tests prove equal to its checks.
#[tokio::test]
async fn request_rules_come_from_the_validator() {
    use runbooks::domain::StepNumber;
    use runbooks::domain::runbook::{limits, patterns};

    let t = TestServer::start(Backend::Sqlite).await;
    let doc: Value = t
        .http
        .get(t.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    t.stop().await;
    let schemas = &doc["components"]["schemas"];
    let create = &schemas["CreateRunbookRequest"]["properties"];
    let repository = &schemas["RepositoryRef"]["properties"];
    let rules = [
        (
            &repository["org"],
            Some(limits::ORG_CHARS),
            Some(patterns::org()),
        ),
        (
            &repository["name"],
            Some(limits::REPO_CHARS),
            Some(patterns::repo()),
        ),
        (
            &create["prompt"],
            Some(limits::PROMPT_CHARS),
            Some(patterns::not_blank()),
        ),
        (
            &create["title"],
            Some(limits::TITLE_CHARS),
            Some(patterns::title()),
        ),
        (
            &create["target_branch"],
            Some(limits::BRANCH_CHARS),
            Some(patterns::branch()),
        ),
        (
            &create["description"],
            Some(limits::DESCRIPTION_CHARS),
            None,
        ),
        (&create["labels"]["items"], None, Some(patterns::label())),
        (
            &create["author_email"],
            Some(limits::EMAIL_CHARS),
            Some(patterns::email()),
        ),
        (
            &schemas["UpdateRunbookRequest"]["properties"]["prompt"],
            Some(limits::PROMPT_CHARS),
            Some(patterns::not_blank()),
        ),
        (
            &schemas["ExecuteRequest"]["properties"]["step"],
            None,
            Some(StepNumber::pattern()),
        ),
    ];
    for (schema, max_length, pattern) in rules {
        assert_eq!(
            schema["maxLength"].as_u64(),
            max_length.map(|n| n as u64),
            "{schema}"
        );
        assert_eq!(schema["pattern"].as_str(), pattern.as_deref(), "{schema}");
    }
    assert_eq!(create["labels"]["maxItems"], json!(limits::LABELS));
    assert_eq!(
        schemas["UpdateRunbookRequest"]["properties"]["labels"]["maxItems"],
        json!(limits::LABELS)
    );
    let number = &doc["paths"]["/api/v1/runbook/{runbook_number}"]["get"]["parameters"][0];
    assert_eq!(number["schema"]["minimum"], json!(1));
    assert_eq!(number["schema"]["maximum"], json!(i64::MAX));
    let execute = &doc["paths"]["/api/v1/runbook/{runbook_number}/execute"]["post"];
    assert_ne!(
        execute["requestBody"]["required"],
        json!(true),
        "the body is optional"
    );
}
