//! Conformance of the GitHub stand-in to GitHub's own OpenAPI description.
//!
//! `fixtures/openapi/github-subset.json` holds, for every operation the stand-in serves, the
//! documented status codes and simplified response schemas (extracted from GitHub's
//! description by `fixtures/openapi/extract.py`). Each operation is called on a stand-in with
//! some data in it, successes and documented failures alike; the answer's status must be one
//! GitHub documents for that operation, and its body must have every required field, with the
//! documented JSON type, recursively (null only where the schema says nullable).

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use runbooks_standin::StandIn;
use serde_json::{Value, json};

const SUBSET: &str = include_str!("../../fixtures/openapi/github-subset.json");

/// Checks `value` against a simplified schema; problems are pushed as `path: problem`.
fn check(value: &Value, schema: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    if schema.is_empty() {
        return;
    }
    if value.is_null() {
        let nullable = schema.get("nullable") == Some(&Value::Bool(true))
            || schema
                .get("anyOf")
                .and_then(Value::as_array)
                .is_some_and(|vs| {
                    vs.iter()
                        .any(|v| v.get("nullable") == Some(&Value::Bool(true)))
                });
        if !nullable {
            problems.push(format!("{path}: null but not nullable"));
        }
        return;
    }
    if let Some(variants) = schema.get("anyOf").and_then(Value::as_array) {
        let fits = variants.iter().any(|variant| {
            let mut sub = Vec::new();
            check(value, variant, path, &mut sub);
            sub.is_empty()
        });
        if !fits {
            problems.push(format!(
                "{path}: matches none of the {} variants",
                variants.len()
            ));
        }
        if !schema.contains_key("type") && !schema.contains_key("properties") {
            return;
        }
    }
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .or_else(|| schema.contains_key("properties").then_some("object"));
    let type_ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        problems.push(format!(
            "{path}: expected {}, got {value}",
            ty.unwrap_or("?")
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        problems.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                problems.push(format!("{path}.{name}: required but missing"));
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, sub) in properties {
                if let Some(v) = object.get(name) {
                    check(v, sub, &format!("{path}.{name}"), problems);
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(item, items, &format!("{path}[{i}]"), problems);
        }
    }
}

#[test]
fn the_checker_catches_missing_fields_wrong_types_and_bad_nulls() {
    let schema = json!({
        "type": "object",
        "required": ["id", "user", "labels"],
        "properties": {
            "id": {"type": "integer"},
            "user": {"type": "object", "nullable": true, "required": ["login"], "properties": {"login": {"type": "string"}}},
            "labels": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
            "state": {"type": "string", "enum": ["open", "closed"]}
        }
    });
    let mut problems = Vec::new();
    check(
        &json!({"id": 1, "user": null, "labels": [{"name": "a"}], "state": "open"}),
        &schema,
        "$",
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
    check(
        &json!({"id": "1", "user": {}, "labels": [{}], "state": "merged"}),
        &schema,
        "$",
        &mut problems,
    );
    assert_eq!(problems.len(), 4, "{problems:?}");
    for expected in [
        "$.id: expected integer",
        "$.labels[0].name: required but missing",
        "$.state: \"merged\" is not one of",
        "$.user.login: required but missing",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected} in {problems:?}"
        );
    }
    problems.clear();
    check(
        &json!({"user": {"login": "a"}, "labels": null}),
        &schema,
        "$",
        &mut problems,
    );
    assert_eq!(
        problems,
        [
            "$.id: required but missing",
            "$.labels: null but not nullable"
        ]
    );
}

/// Who calls an operation.
#[derive(Clone, Copy)]
enum Auth {
    Jwt,
    Token,
    /// A token for `acme/widgets` with only `issues: write`.
    IssuesOnly,
}

struct Call {
    operation: &'static str,
    method: Method,
    path: String,
    auth: Auth,
    body: Option<Value>,
    expect: u16,
}

fn call(
    operation: &'static str,
    method: Method,
    path: &str,
    auth: Auth,
    body: Option<Value>,
    expect: u16,
) -> Call {
    Call {
        operation,
        method,
        path: path.to_string(),
        auth,
        body,
        expect,
    }
}

#[tokio::test]
async fn every_served_operation_answers_as_documented() {
    tokio::time::timeout(Duration::from_secs(60), run())
        .await
        .expect("finished in time");
}

async fn run() {
    let subset: Value = serde_json::from_str(SUBSET).expect("the subset fixture parses");
    let operations = subset["operations"].as_object().expect("operations");

    let s = StandIn::start().await.expect("stand-in starts");
    s.create_repo("acme", "widgets", "main", &[("README.md", "hi\n")])
        .await
        .expect("repo");
    s.create_repo("acme", "private", "main", &[("README.md", "hi\n")])
        .await
        .expect("repo");
    let id = s.install("acme", &["widgets"]);
    s.push_commit(
        "acme",
        "widgets",
        "feature",
        &[("f.txt", "f\n")],
        "Feature",
        "alice",
    )
    .await
    .expect("push");
    s.push_commit(
        "acme",
        "widgets",
        "other",
        &[("o.txt", "o\n")],
        "Other",
        "alice",
    )
    .await
    .expect("push");
    let issue = s
        .add_issue("acme", "widgets", "An issue", "body", "alice")
        .expect("issue");
    let user_comment = s
        .add_comment("acme", "widgets", issue, "alice", "/runbook go")
        .expect("comment");
    s.set_permission("acme", "widgets", "alice", "maintain");
    let token = s.create_token(id).expect("token");
    let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(s.private_key_pem().as_bytes())
        .expect("key");
    let jwt = octocrab::auth::create_jwt(octocrab::models::AppId(s.app_id()), &key).expect("jwt");

    let r = "/repos/acme/widgets";
    // Pull request #3 is opened by the first call; #4 by a person.
    let pr = 3;
    #[rustfmt::skip]
    let calls = vec![
        call("apps/get-authenticated", Method::GET, "/app", Auth::Jwt, None, 200),
        call("apps/list-installations", Method::GET, "/app/installations", Auth::Jwt, None, 200),
        call("apps/get-repo-installation", Method::GET, &format!("{r}/installation"), Auth::Jwt, None, 200),
        call("apps/get-repo-installation", Method::GET, "/repos/acme/private/installation", Auth::Jwt, None, 404),
        call("apps/create-installation-access-token", Method::POST, &format!("/app/installations/{id}/access_tokens"), Auth::Jwt, Some(json!({})), 201),
        call("apps/create-installation-access-token", Method::POST, &format!("/app/installations/{id}/access_tokens"), Auth::Jwt, Some(json!({"repositories": ["widgets"]})), 201),
        call("apps/create-installation-access-token", Method::POST, &format!("/app/installations/{id}/access_tokens"), Auth::Jwt, Some(json!({"repositories": ["private"]})), 422),
        call("apps/create-installation-access-token", Method::POST, "/app/installations/1/access_tokens", Auth::Jwt, None, 404),
        call("apps/create-installation-access-token", Method::POST, &format!("/app/installations/{id}/access_tokens"), Auth::Token, None, 401),
        call("apps/list-repos-accessible-to-installation", Method::GET, "/installation/repositories", Auth::Token, None, 200),
        call("repos/get", Method::GET, r, Auth::Token, None, 200),
        call("repos/get", Method::GET, "/repos/acme/private", Auth::Token, None, 404),
        call("pulls/create", Method::POST, &format!("{r}/pulls"), Auth::Token, Some(json!({"title": "F", "head": "feature", "base": "main", "body": "b", "draft": true})), 201),
        call("pulls/create", Method::POST, &format!("{r}/pulls"), Auth::Token, Some(json!({"title": "F", "head": "feature", "base": "main"})), 422),
        call("pulls/create", Method::POST, &format!("{r}/pulls"), Auth::Token, Some(json!({"title": "F", "head": "missing", "base": "main"})), 422),
        call("issues/get", Method::GET, &format!("{r}/issues/{issue}"), Auth::Token, None, 200),
        call("issues/get", Method::GET, &format!("{r}/issues/{pr}"), Auth::Token, None, 200),
        call("issues/get", Method::GET, &format!("{r}/issues/999"), Auth::Token, None, 404),
        call("issues/create-comment", Method::POST, &format!("{r}/issues/{issue}/comments"), Auth::Token, Some(json!({"body": "Status"})), 201),
        call("issues/create-comment", Method::POST, &format!("{r}/issues/{pr}/comments"), Auth::Token, Some(json!({"body": "On the PR"})), 201),
        call("issues/create-comment", Method::POST, &format!("{r}/issues/999/comments"), Auth::Token, Some(json!({"body": "x"})), 404),
        call("issues/create-comment", Method::POST, &format!("{r}/issues/{issue}/comments"), Auth::Token, Some(json!({})), 422),
        call("issues/list-comments", Method::GET, &format!("{r}/issues/{issue}/comments"), Auth::Token, None, 200),
        call("issues/list-comments", Method::GET, &format!("{r}/issues/999/comments"), Auth::Token, None, 404),
        call("issues/update-comment", Method::PATCH, &format!("{r}/issues/comments/{user_comment}"), Auth::Token, Some(json!({"body": "edited"})), 200),
        call("issues/update-comment", Method::PATCH, &format!("{r}/issues/comments/{user_comment}"), Auth::Token, Some(json!({})), 422),
        call("reactions/create-for-issue-comment", Method::POST, &format!("{r}/issues/comments/{user_comment}/reactions"), Auth::Token, Some(json!({"content": "eyes"})), 201),
        call("reactions/create-for-issue-comment", Method::POST, &format!("{r}/issues/comments/{user_comment}/reactions"), Auth::Token, Some(json!({"content": "eyes"})), 200),
        call("reactions/create-for-issue-comment", Method::POST, &format!("{r}/issues/comments/{user_comment}/reactions"), Auth::Token, Some(json!({"content": "nope"})), 422),
        call("issues/add-labels", Method::POST, &format!("{r}/issues/{issue}/labels"), Auth::Token, Some(json!({"labels": ["runbook", "deps"]})), 200),
        call("issues/add-labels", Method::POST, &format!("{r}/issues/{pr}/labels"), Auth::Token, Some(json!({"labels": ["runbook"]})), 200),
        call("issues/add-labels", Method::POST, &format!("{r}/issues/999/labels"), Auth::Token, Some(json!({"labels": ["x"]})), 404),
        call("repos/get-collaborator-permission-level", Method::GET, &format!("{r}/collaborators/alice/permission"), Auth::Token, None, 200),
        call("repos/get-collaborator-permission-level", Method::GET, "/repos/acme/private/collaborators/alice/permission", Auth::Token, None, 404),
        call("pulls/list", Method::GET, &format!("{r}/pulls"), Auth::Token, None, 200),
        call("pulls/list", Method::GET, &format!("{r}/pulls?state=all&head=acme:feature&base=main&per_page=1"), Auth::Token, None, 200),
        call("pulls/list", Method::GET, &format!("{r}/pulls?state=bogus"), Auth::Token, None, 422),
        call("pulls/get", Method::GET, &format!("{r}/pulls/{pr}"), Auth::Token, None, 200),
        call("pulls/get", Method::GET, &format!("{r}/pulls/{issue}"), Auth::Token, None, 404),
        call("pulls/update", Method::PATCH, &format!("{r}/pulls/{pr}"), Auth::Token, Some(json!({"title": "Feature", "body": "new"})), 200),
        call("pulls/update", Method::PATCH, &format!("{r}/pulls/{pr}"), Auth::Token, Some(json!({"base": "missing"})), 422),
        call("pulls/update", Method::PATCH, &format!("{r}/pulls/{pr}"), Auth::Token, Some(json!({"state": "closed"})), 200),
        call("pulls/get", Method::GET, &format!("{r}/pulls/{pr}"), Auth::Token, None, 200),
        call("repos/get-content", Method::GET, &format!("{r}/contents/README.md"), Auth::Token, None, 200),
        call("repos/get-content", Method::GET, &format!("{r}/contents/f.txt?ref=feature"), Auth::Token, None, 200),
        call("repos/get-content", Method::GET, &format!("{r}/contents"), Auth::Token, None, 200),
        call("repos/get-content", Method::GET, &format!("{r}/contents/missing.txt"), Auth::Token, None, 404),
        call("git/delete-ref", Method::DELETE, &format!("{r}/git/refs/heads/other"), Auth::Token, None, 204),
        call("git/delete-ref", Method::DELETE, &format!("{r}/git/refs/heads/other"), Auth::Token, None, 422),
        call("apps/create-installation-access-token", Method::POST, &format!("/app/installations/{id}/access_tokens"), Auth::Jwt, Some(json!({"repositories": ["widgets"], "permissions": {"contents": "read"}})), 201),
        call("apps/create-installation-access-token", Method::POST, &format!("/app/installations/{id}/access_tokens"), Auth::Jwt, Some(json!({"permissions": {"administration": "write"}})), 422),
        call("pulls/create", Method::POST, &format!("{r}/pulls"), Auth::IssuesOnly, Some(json!({"title": "O", "head": "other", "base": "main"})), 403),
        call("pulls/update", Method::PATCH, &format!("{r}/pulls/{pr}"), Auth::IssuesOnly, Some(json!({"title": "Nope"})), 403),
        call("issues/create-comment", Method::POST, &format!("{r}/issues/{pr}/comments"), Auth::IssuesOnly, Some(json!({"body": "x"})), 403),
        call("repos/get-content", Method::GET, &format!("{r}/contents/README.md"), Auth::IssuesOnly, None, 403),
        call("repos/get", Method::GET, r, Auth::IssuesOnly, None, 200),
    ];

    let client = reqwest::Client::builder()
        .user_agent("runbooks-conformance")
        .build()
        .expect("client");
    let issues_only: Value = client
        .post(format!(
            "{}/app/installations/{id}/access_tokens",
            s.api_url()
        ))
        .bearer_auth(&jwt)
        .json(&json!({"repositories": ["widgets"], "permissions": {"issues": "write"}}))
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token answer");
    let issues_only = issues_only["token"].as_str().expect("token").to_string();
    let mut failures = Vec::new();
    let mut exercised = BTreeSet::new();
    for (i, c) in calls.iter().enumerate() {
        if i == 12 {
            // A pull request opened by a person, so lists hold more than the bot's.
            s.open_pull("acme", "widgets", "other", "main", "Other", "alice")
                .await
                .expect("pr");
        }
        let spec = &operations[c.operation];
        assert_eq!(
            spec["method"].as_str(),
            Some(c.method.as_str()),
            "{}: the call uses the documented method",
            c.operation
        );
        let credential = match c.auth {
            Auth::Jwt => &jwt,
            Auth::Token => &token,
            Auth::IssuesOnly => &issues_only,
        };
        let mut request = client
            .request(c.method.clone(), format!("{}{}", s.api_url(), c.path))
            .bearer_auth(credential)
            .header("accept", "application/vnd.github+json");
        if let Some(body) = &c.body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("a body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        let what = format!("{} {} {}", c.operation, c.method, c.path);
        if status != c.expect {
            failures.push(format!(
                "{what}: status {status}, expected {} ({body})",
                c.expect
            ));
            continue;
        }
        let responses = spec["responses"].as_object().expect("responses");
        // 401 is GitHub's answer to bad credentials on every operation, documented or not.
        if status != 401 && !responses.contains_key(&status.to_string()) {
            failures.push(format!(
                "{what}: status {status} is not documented (documented: {:?})",
                responses.keys().collect::<Vec<_>>()
            ));
            continue;
        }
        if status == 204 && !bytes.is_empty() {
            failures.push(format!("{what}: a 204 with a body"));
        }
        let schema = match responses.get(&status.to_string()) {
            Some(schema) => schema.clone(),
            None => json!({"type": "object", "required": ["message", "documentation_url"]}),
        };
        let mut problems = Vec::new();
        check(&body, &schema, "$", &mut problems);
        if status < 300 && body.as_array().is_some_and(Vec::is_empty) {
            problems.push("an empty list checks nothing".to_string());
        }
        for problem in problems {
            failures.push(format!("{what}: {problem}"));
        }
        exercised.insert(c.operation);
    }
    let missing: Vec<&String> = operations
        .keys()
        .filter(|op| !exercised.contains(op.as_str()))
        .collect();
    assert!(missing.is_empty(), "operations never checked: {missing:?}");
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
