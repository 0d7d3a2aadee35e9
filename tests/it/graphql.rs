//! The GraphQL API over real HTTP, against the real server on a loopback port: queries,
//! mutations, scoping, pagination, filters, errors, limits (the fragment bomb, aliases and
//! mutations against the rate limit), the page served on `GET`, and a runbook run to
//! completion by the engine against the GitHub stand-in.

use crate::support;
use crate::support::rn;

use support::{LIB, RENAME};

use runbooks::domain::{
    NewRunbook, Plan, PlannedStep, PullState, RunbookNumber, StepNumber, StepState,
};
use runbooks::store::{NewThread, StepEnd, Store};
use serde_json::{Value, json};
use support::{Backend, TestServer, create_token, expect_error, server_for};

/// Every field of a runbook.
const FULL: &str = "fragment Full on Runbook {
  number url title prompt description labels status
  stepCounts { total notStarted queued inProgress completed failed }
  steps { number title leaf status commitSha error log startedAt finishedAt pullRequestNumber }
  pullRequests { number url state draft stepNumbers }
  repository { org name }
  targetBranch oneshot draft prMode
  thread { url issueNumber isPullRequest requestedBy statusCommentUrl }
  createdAt updatedAt
}";

async fn send(
    t: &TestServer,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> reqwest::Response {
    let mut request = t
        .http
        .post(t.url("/api/graphql"))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("sending the request")
}

/// Runs a GraphQL request with `token`: HTTP 200 and the JSON answer.
async fn answer(t: &TestServer, token: &str, query: &str, variables: Value) -> Value {
    let response = send(t, Some(token), query, variables).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON answer")
}

/// Runs a GraphQL request with the server's token; it must succeed: its `data`.
async fn data(t: &TestServer, query: &str, variables: Value) -> Value {
    let answer = answer(t, &t.token, query, variables).await;
    assert!(
        answer.get("errors").is_none(),
        "unexpected errors: {answer}"
    );
    answer["data"].clone()
}

/// Runs a GraphQL request that must fail with one error: its code and message.
async fn error_with(
    t: &TestServer,
    token: &str,
    query: &str,
    variables: Value,
) -> (String, String) {
    let answer = answer(t, token, query, variables).await;
    let errors = answer["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("expected errors: {answer}"));
    assert_eq!(errors.len(), 1, "{answer}");
    let code = errors[0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error code: {answer}"))
        .to_string();
    (code, errors[0]["message"].as_str().unwrap().to_string())
}

async fn error(t: &TestServer, query: &str, variables: Value) -> (String, String) {
    error_with(t, &t.token, query, variables).await
}

fn n(s: &str) -> StepNumber {
    s.parse().unwrap()
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

fn new_runbook(org: &str, repo: &str, prompt: &str) -> NewRunbook {
    NewRunbook {
        org: org.into(),
        repo: repo.into(),
        prompt: prompt.into(),
        title: prompt.into(),
        oneshot: true,
        draft: None,
        pr_mode: None,
        target_branch: None,
        description: None,
        labels: vec![],
        author_email: None,
    }
}

async fn runbook_in(store: &std::sync::Arc<dyn Store>, org: &str, repo: &str) -> RunbookNumber {
    store
        .create_runbook(&new_runbook(org, repo, "p"), None)
        .await
        .unwrap()
}

/// Sets every leaf of a runbook with plan `1, 1.1, 1.2, 2` to the states given.
async fn with_states(
    store: &std::sync::Arc<dyn Store>,
    number: RunbookNumber,
    states: [StepState; 3],
) {
    store
        .append_steps(number, &plan(&["1", "1.1", "1.2", "2"]))
        .await
        .unwrap();
    for (step, state) in ["1.1", "1.2", "2"].iter().zip(states) {
        store.set_step_state(number, &n(step), state).await.unwrap();
    }
}

const CREATE: &str = "mutation($input: CreateRunbookInput!) {
  createRunbook(input: $input) { ...Full }
}";

fn with_full(query: &str) -> String {
    format!("{query}\n{FULL}")
}

async fn every_field_of_a_runbook(backend: Backend) {
    let t = TestServer::start(backend).await;
    let input = json!({
        "repository": {"org": "acme-corp", "name": "backend"},
        "prompt": "Upgrade all React dependencies to v19\n\nEverywhere.",
        "oneshot": false,
        "draft": true,
        "prMode": "STACKED_PR",
        "targetBranch": "develop",
        "description": "Part of the Q3 upgrade.",
        "labels": ["deps", "react", "Deps"],
        "authorEmail": "dev@acme.example"
    });
    let created =
        data(&t, &with_full(CREATE), json!({"input": input})).await["createRunbook"].clone();
    assert_eq!(created["number"], 1);
    assert_eq!(created["url"], format!("{}/runbooks/1", t.base));
    assert_eq!(created["title"], "Upgrade all React dependencies to v19");
    assert_eq!(created["status"], "GENERATING_STEPS");
    assert_eq!(created["labels"], json!(["deps", "react"]));
    assert_eq!(created["steps"], json!([]));
    assert_eq!(created["pullRequests"], json!([]));
    assert_eq!(created["thread"], Value::Null);
    assert_eq!(
        (
            created["oneshot"].clone(),
            created["draft"].clone(),
            created["prMode"].clone()
        ),
        (json!(false), json!(true), json!("STACKED_PR"))
    );
    let stored = t.store.runbook(rn(1)).await.unwrap().unwrap();
    assert_eq!(stored.author_email.as_deref(), Some("dev@acme.example"));
    assert_eq!(stored.target_branch.as_deref(), Some("develop"));

    // A plan, a step done with a commit, one failed, a pull request.
    t.store
        .append_steps(rn(1), &plan(&["1", "1.1", "1.2", "2"]))
        .await
        .unwrap();
    for step in ["1.1", "1.2"] {
        t.store
            .transition_steps(
                rn(1),
                &[n(step)],
                &[StepState::NotStarted],
                StepState::InProgress,
            )
            .await
            .unwrap();
    }
    t.store
        .finish_step(
            rn(1),
            &n("1.1"),
            &StepEnd::Completed {
                commit_sha: Some("a".repeat(40)),
                log: "done".into(),
            },
            &runbooks::domain::Usage {
                wall_ms: 4000,
                agent_cpu_ms: 900,
                prompt_tokens: Some(1200),
                completion_tokens: Some(300),
            },
        )
        .await
        .unwrap();
    t.store
        .finish_step(
            rn(1),
            &n("1.2"),
            &StepEnd::Failed {
                error: "exit status 3".into(),
                log: "tail".into(),
            },
            &runbooks::domain::Usage {
                wall_ms: 1000,
                agent_cpu_ms: 100,
                prompt_tokens: None,
                completion_tokens: None,
            },
        )
        .await
        .unwrap();
    t.store
        .record_pull_request(
            rn(1),
            7,
            "https://github.com/acme-corp/backend/pull/7",
            &[n("1.1")],
        )
        .await
        .unwrap();

    let query = with_full("query($n: Int!) { runbook(number: $n) { ...Full } }");
    let runbook = data(&t, &query, json!({"n": 1})).await["runbook"].clone();
    assert_eq!(runbook["status"], "FAILED");
    assert_eq!(
        runbook["stepCounts"],
        json!({"total": 3, "notStarted": 1, "queued": 0, "inProgress": 0, "completed": 1, "failed": 1})
    );
    let steps = runbook["steps"].as_array().unwrap();
    let rows: Vec<(&str, bool, &str)> = steps
        .iter()
        .map(|s| {
            (
                s["number"].as_str().unwrap(),
                s["leaf"].as_bool().unwrap(),
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("1", false, "FAILED"),
            ("1.1", true, "COMPLETED"),
            ("1.2", true, "FAILED"),
            ("2", true, "NOT_STARTED")
        ]
    );
    assert_eq!(steps[1]["commitSha"], "a".repeat(40));
    assert_eq!(steps[1]["log"], "done");
    assert_eq!(steps[1]["pullRequestNumber"], 7);
    assert_eq!(steps[2]["error"], "exit status 3");
    assert_eq!(steps[3]["startedAt"], Value::Null);
    let started = steps[1]["startedAt"].as_str().unwrap();
    let finished = steps[1]["finishedAt"].as_str().unwrap();
    for time in [started, finished, runbook["createdAt"].as_str().unwrap()] {
        assert!(humantime::parse_rfc3339(time).is_ok(), "RFC 3339: {time}");
    }
    assert!(started <= finished);
    assert_eq!(
        runbook["pullRequests"],
        json!([{"number": 7, "url": "https://github.com/acme-corp/backend/pull/7", "state": "OPEN", "draft": true, "stepNumbers": ["1.1"]}])
    );
    assert_eq!(
        runbook["repository"],
        json!({"org": "acme-corp", "name": "backend"})
    );
    assert_eq!(runbook["targetBranch"], "develop");
    assert_eq!(runbook["description"], "Part of the Q3 upgrade.");
    // What the steps used: each one's last run (null for a parent and a step not run), and
    // the total, whose tokens are those that were known.
    let usage = data(
        &t,
        "query($n: Int!) { runbook(number: $n) { \
           usage { wallMs agentCpuMs promptTokens completionTokens } planningUsage { wallMs } \
           steps { usage { wallMs agentCpuMs promptTokens completionTokens } } } }",
        json!({"n": 1}),
    )
    .await["runbook"]
        .clone();
    assert_eq!(
        usage["usage"],
        json!({"wallMs": 5000, "agentCpuMs": 1000, "promptTokens": 1200, "completionTokens": 300})
    );
    assert_eq!(usage["planningUsage"], Value::Null);
    assert_eq!(
        usage["steps"],
        json!([
            {"usage": null},
            {"usage": {"wallMs": 4000, "agentCpuMs": 900, "promptTokens": 1200, "completionTokens": 300}},
            {"usage": {"wallMs": 1000, "agentCpuMs": 100, "promptTokens": null, "completionTokens": null}},
            {"usage": null}
        ])
    );

    // The REST document agrees.
    let document = t.api().runbook(1).await.expect("the runbook");
    assert_eq!(document.status, runbooks::domain::RunbookStatus::Failed);
    assert_eq!(document.steps.completed, 1);
    assert_eq!(document.pull_requests[0].step_numbers, ["1.1"]);

    // A merged pull request of a runbook that is not a draft, and a thread.
    let mut new = new_runbook("acme-corp", "backend", "From a comment");
    new.draft = Some(false);
    let thread = NewThread {
        repository: "acme-corp/backend".into(),
        issue_number: 42,
        is_pull_request: false,
        url: "https://github.com/acme-corp/backend/issues/42".into(),
        command_comment_id: 9001,
        requested_by: "octocat".into(),
        context: None,
    };
    let (two, created) = t
        .store
        .create_runbook_in_thread(&new, &thread)
        .await
        .unwrap();
    assert!(created);
    t.store.append_steps(two, &plan(&["1"])).await.unwrap();
    t.store
        .set_step_state(two, &n("1"), StepState::Completed)
        .await
        .unwrap();
    t.store
        .record_pull_request(
            two,
            8,
            "https://github.com/acme-corp/backend/pull/8",
            &[n("1")],
        )
        .await
        .unwrap();
    t.store
        .set_pull_request_finished(two, 8, true)
        .await
        .unwrap();
    t.store
        .set_pull_request_state(two, 8, PullState::Merged)
        .await
        .unwrap();
    t.store
        .set_status_comment(
            two,
            77,
            "https://github.com/acme-corp/backend/issues/42#issuecomment-77",
            "status",
        )
        .await
        .unwrap();
    let second = data(&t, &query, json!({"n": two.get()})).await["runbook"].clone();
    assert_eq!(second["status"], "COMPLETED");
    assert_eq!(
        second["thread"],
        json!({
            "url": "https://github.com/acme-corp/backend/issues/42",
            "issueNumber": 42,
            "isPullRequest": false,
            "requestedBy": "octocat",
            "statusCommentUrl": "https://github.com/acme-corp/backend/issues/42#issuecomment-77"
        })
    );
    assert_eq!(
        second["pullRequests"],
        json!([{"number": 8, "url": "https://github.com/acme-corp/backend/pull/8", "state": "MERGED", "draft": false, "stepNumbers": ["1"]}])
    );
    assert_eq!(
        (second["prMode"].clone(), second["draft"].clone()),
        (json!("SINGLE_PR"), json!(false))
    );

    // Both in one listing, with the same fields.
    let listing = data(
        &t,
        &with_full("{ runbooks { nodes { ...Full } } }"),
        json!({}),
    )
    .await;
    let nodes = listing["runbooks"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0], second, "newest first, same answer as `runbook`");
    assert_eq!(nodes[1], runbook);
    assert_eq!(
        data(&t, "{ runbook(number: 3) { number } }", json!({})).await["runbook"],
        Value::Null
    );
    t.stop().await;
}

async fn listings_filter_by_org_repository_and_status(backend: Backend) {
    let t = TestServer::start(backend).await;
    let both = create_token(&t.store, &["acme-corp", "globex"]).await;
    use StepState::*;
    // 1: acme/backend completed, 2: acme/frontend failed, 3: globex/backend in progress,
    // 4: acme/backend generating steps, 5: acme/backend not started, 6: globex/web completed,
    // 7: acme/backend partially completed (one done, one queued).
    let layout: [(&str, &str, Option<[StepState; 3]>); 7] = [
        (
            "acme-corp",
            "backend",
            Some([Completed, Completed, Completed]),
        ),
        (
            "acme-corp",
            "frontend",
            Some([Completed, Failed, NotStarted]),
        ),
        ("globex", "backend", Some([Completed, InProgress, Queued])),
        ("acme-corp", "backend", None),
        (
            "ACME-Corp",
            "backend",
            Some([NotStarted, NotStarted, NotStarted]),
        ),
        ("globex", "web", Some([Completed, Completed, Completed])),
        ("acme-corp", "backend", Some([Completed, Queued, Queued])),
    ];
    for (org, repo, states) in layout {
        let number = runbook_in(&t.store, org, repo).await;
        if let Some(states) = states {
            with_states(&t.store, number, states).await;
        }
    }
    let numbers = |answer: &Value| -> Vec<i64> {
        answer["runbooks"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["number"].as_i64().unwrap())
            .collect()
    };
    let query =
        "query($filter: RunbookFilter) { runbooks(filter: $filter) { nodes { number status } } }";
    let cases: [(Value, Vec<i64>); 11] = [
        (Value::Null, vec![7, 6, 5, 4, 3, 2, 1]),
        (json!({"org": "globex"}), vec![6, 3]),
        (json!({"org": "ACME-CORP"}), vec![7, 5, 4, 2, 1]),
        (json!({"repository": "backend"}), vec![7, 5, 4, 3, 1]),
        (
            json!({"org": "acme-corp", "repository": "backend"}),
            vec![7, 5, 4, 1],
        ),
        (json!({"status": "COMPLETED"}), vec![6, 1]),
        (json!({"status": "FAILED"}), vec![2]),
        (json!({"status": "IN_PROGRESS"}), vec![3]),
        (json!({"status": "GENERATING_STEPS"}), vec![4]),
        (json!({"status": "NOT_STARTED"}), vec![5]),
        (
            json!({"status": "PARTIALLY_COMPLETED", "repository": "backend"}),
            vec![7],
        ),
    ];
    for (filter, expected) in cases {
        let answer = answer(&t, &both, query, json!({"filter": filter})).await;
        assert!(answer.get("errors").is_none(), "{answer}");
        assert_eq!(numbers(&answer["data"]), expected, "filter {filter}");
    }
    // The default token sees acme-corp only, whatever the filter says.
    assert_eq!(numbers(&data(&t, query, json!({})).await), [7, 5, 4, 2, 1]);
    assert_eq!(
        numbers(&data(&t, query, json!({"filter": {"org": "globex"}})).await),
        Vec::<i64>::new()
    );
    assert_eq!(
        numbers(&data(&t, query, json!({"filter": {"status": "COMPLETED"}})).await),
        [1]
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_cursors() {
    let t = TestServer::start(Backend::Sqlite).await;
    for _ in 0..7 {
        runbook_in(&t.store, "acme-corp", "backend").await;
    }
    let query = "query($first: Int!, $after: String) {
      runbooks(first: $first, after: $after) {
        edges { cursor node { number } }
        nodes { number }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      }
    }";
    let mut after = Value::Null;
    let mut pages = Vec::new();
    loop {
        let page = data(&t, query, json!({"first": 3, "after": after})).await["runbooks"].clone();
        let edges = page["edges"].as_array().unwrap();
        let numbers: Vec<i64> = edges
            .iter()
            .map(|e| e["node"]["number"].as_i64().unwrap())
            .collect();
        let nodes: Vec<i64> = page["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["number"].as_i64().unwrap())
            .collect();
        assert_eq!(numbers, nodes, "nodes are the edges' nodes");
        assert_eq!(
            page["pageInfo"]["endCursor"],
            edges.last().unwrap()["cursor"]
        );
        assert_eq!(page["pageInfo"]["startCursor"], edges[0]["cursor"]);
        assert_eq!(page["pageInfo"]["hasPreviousPage"], !after.is_null());
        pages.push(numbers);
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(pages, [vec![7, 6, 5], vec![4, 3, 2], vec![1]]);

    // Exactly a page left: no next page.
    let all = data(&t, query, json!({"first": 7})).await;
    assert_eq!(all["runbooks"]["pageInfo"]["hasNextPage"], false);
    // The default page size.
    let default = data(
        &t,
        "{ runbooks { nodes { number } pageInfo { hasNextPage } } }",
        json!({}),
    )
    .await;
    assert_eq!(default["runbooks"]["nodes"].as_array().unwrap().len(), 7);

    for first in [0, -1, 101] {
        let (code, message) = error(&t, query, json!({"first": first})).await;
        assert_eq!(code, "bad-request");
        assert!(
            message.contains("`first`") && message.contains("100"),
            "{message}"
        );
    }
    for cursor in ["nonsense", "", "MTI"] {
        let (code, message) = error(&t, query, json!({"first": 3, "after": cursor})).await;
        assert_eq!(code, "bad-request");
        assert!(message.contains("`after`"), "{message}");
    }
    // A status filter goes on reading (in batches of 50) until the page is full: 60
    // runbooks, every fourth completed.
    for i in 0..60 {
        let number = runbook_in(&t.store, "acme-corp", "web").await;
        if i % 4 == 0 {
            with_states(&t.store, number, [StepState::Completed; 3]).await;
        }
    }
    let filtered = "query($after: String) {
      runbooks(first: 14, after: $after, filter: {status: COMPLETED, repository: \"web\"}) {
        nodes { number status } pageInfo { hasNextPage endCursor }
      }
    }";
    let first_page = data(&t, filtered, json!({})).await["runbooks"].clone();
    let expected: Vec<i64> = (8..=67).rev().filter(|n| (n - 8) % 4 == 0).collect();
    assert_eq!(expected.len(), 15);
    let got: Vec<i64> = first_page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["number"].as_i64().unwrap())
        .collect();
    assert_eq!(got, expected[..14]);
    assert_eq!(first_page["pageInfo"]["hasNextPage"], true);
    let second_page = data(
        &t,
        filtered,
        json!({"after": first_page["pageInfo"]["endCursor"]}),
    )
    .await["runbooks"]
        .clone();
    let got: Vec<i64> = second_page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["number"].as_i64().unwrap())
        .collect();
    assert_eq!(got, expected[14..]);
    assert_eq!(second_page["pageInfo"]["hasNextPage"], false);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbooks_of_other_organisations_are_invisible() {
    let t = TestServer::start(Backend::Sqlite).await;
    let number = runbook_in(&t.store, "acme-corp", "backend").await;
    with_states(
        &t.store,
        number,
        [
            StepState::Failed,
            StepState::NotStarted,
            StepState::NotStarted,
        ],
    )
    .await;
    let globex = create_token(&t.store, &["globex"]).await;

    let runbook = answer(
        &t,
        &globex,
        "{ runbook(number: 1) { number title } }",
        json!({}),
    )
    .await;
    assert_eq!(
        runbook,
        json!({"data": {"runbook": null}}),
        "the same as no runbook at all"
    );
    let listing = answer(&t, &globex, "{ runbooks(filter: {org: \"acme-corp\"}) { nodes { number } pageInfo { hasNextPage endCursor } } }", json!({})).await;
    assert_eq!(
        listing,
        json!({"data": {"runbooks": {"nodes": [], "pageInfo": {"hasNextPage": false, "endCursor": null}}}})
    );
    for mutation in [
        "mutation { updateRunbook(number: 1, input: {prompt: \"more\"}) { number } }",
        "mutation { executeRunbook(number: 1) { number } }",
        "mutation { retryRunbook(number: 1) { number } }",
        "mutation { cancelRunbook(number: 1) { number } }",
        "mutation { openPullRequest(number: 1) { number } }",
    ] {
        let (code, message) = error_with(&t, &globex, mutation, json!({})).await;
        assert_eq!(code, "not-found", "{mutation}");
        assert_eq!(message, "runbook 1 was not found");
        // The same answer as a runbook that does not exist.
        let (code, _) = error(&t, &mutation.replace("number: 1", "number: 99"), json!({})).await;
        assert_eq!(code, "not-found");
    }
    let (code, message) = error_with(
        &t,
        &globex,
        "mutation { createRunbook(input: {repository: {org: \"acme-corp\", name: \"backend\"}, prompt: \"p\"}) { number } }",
        json!({}),
    )
    .await;
    assert_eq!(code, "forbidden");
    assert!(message.contains("acme-corp"), "{message}");
    // Nothing changed.
    assert!(t.store.pending_follow_ups(rn(1)).await.unwrap().is_empty());
    assert!(!t.store.cancel_requested(rn(1)).await.unwrap());
    assert_eq!(
        t.store.steps(rn(1)).await.unwrap()[1].state,
        StepState::Failed
    );
    assert!(t.store.runbook(rn(2)).await.unwrap().is_none());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_check_like_rest_and_change_state() {
    let t = TestServer::start(Backend::Sqlite).await;
    let create =
        "mutation($input: CreateRunbookInput!) { createRunbook(input: $input) { number title } }";
    let good = json!({"repository": {"org": "acme-corp", "name": "backend"}, "prompt": "Rename the helper"});
    let bad: [(Value, &str); 8] = [
        (json!({"prompt": ""}), "`input.prompt`"),
        (json!({"prompt": "   "}), "`input.prompt`"),
        (
            json!({"repository": {"org": "-acme", "name": "backend"}}),
            "`input.repository.org`",
        ),
        (
            json!({"repository": {"org": "acme-corp", "name": "back end"}}),
            "`input.repository.name`",
        ),
        (
            json!({"targetBranch": "bad..branch"}),
            "`input.targetBranch`",
        ),
        (json!({"labels": ["ok", ""]}), "`input.labels[1]`"),
        (
            json!({"authorEmail": "not an email"}),
            "`input.authorEmail`",
        ),
        (json!({"title": ""}), "`input.title`"),
    ];
    for (change, field) in bad {
        let mut input = good.clone();
        for (k, v) in change.as_object().unwrap() {
            input[k] = v.clone();
        }
        let (code, message) = error(&t, create, json!({"input": input})).await;
        assert_eq!(code, "bad-request", "{input}");
        assert!(message.contains(field), "{field} in {message}");
    }
    // GraphQL's own checks: a missing field, a wrong type, an unknown enum value.
    for input in [
        json!({"repository": {"org": "acme-corp", "name": "backend"}}),
        json!({"repository": {"org": "acme-corp", "name": "backend"}, "prompt": 3}),
        json!({"repository": {"org": "acme-corp", "name": "backend"}, "prompt": "p", "prMode": "SOMETIMES"}),
        json!({"repository": {"org": "acme-corp", "name": "backend"}, "prompt": "p", "extra": 1}),
    ] {
        let (code, _) = error(&t, create, json!({"input": input})).await;
        assert_eq!(code, "bad-request", "{input}");
    }
    // Nothing was stored: the next good runbook is number 1, with REST's defaults.
    let created = data(&t, create, json!({"input": good})).await;
    assert_eq!(
        created["createRunbook"],
        json!({"number": 1, "title": "Rename the helper"})
    );
    let stored = t.store.runbook(rn(1)).await.unwrap().unwrap();
    assert!(stored.oneshot);
    assert_eq!(
        (stored.draft, stored.pr_mode, stored.target_branch),
        (None, None, None)
    );

    // A follow-up: description replaced, labels merged.
    let update = "mutation($n: Int!, $input: UpdateRunbookInput!) {
      updateRunbook(number: $n, input: $input) { number description labels }
    }";
    let updated = data(&t, update, json!({"n": 1, "input": {"prompt": "Also the docs", "description": "Docs too.", "labels": ["docs", "deps"]}})).await;
    assert_eq!(
        updated["updateRunbook"],
        json!({"number": 1, "description": "Docs too.", "labels": ["docs", "deps"]})
    );
    let more = data(
        &t,
        update,
        json!({"n": 1, "input": {"prompt": "And the changelog", "labels": ["deps", "changelog"]}}),
    )
    .await;
    assert_eq!(
        more["updateRunbook"]["labels"],
        json!(["docs", "deps", "changelog"])
    );
    assert_eq!(more["updateRunbook"]["description"], "Docs too.");
    let pending: Vec<String> = t
        .store
        .pending_follow_ups(rn(1))
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.prompt)
        .collect();
    assert_eq!(pending, ["Also the docs", "And the changelog"]);
    let (code, message) = error(&t, update, json!({"n": 1, "input": {"prompt": ""}})).await;
    assert_eq!(
        (code.as_str(), message.contains("`input.prompt`")),
        ("bad-request", true),
        "{message}"
    );

    // Execute before the plan exists, then with one.
    let execute = "mutation($n: Int!, $step: String) {
      executeRunbook(number: $n, step: $step) { status stepCounts { queued notStarted } }
    }";
    let (code, _) = error(&t, execute, json!({"n": 1})).await;
    assert_eq!(code, "conflict");
    let two = runbook_in(&t.store, "acme-corp", "backend").await;
    with_states(&t.store, two, [StepState::NotStarted; 3]).await;
    for (step, code) in [
        ("9", "conflict"),
        ("x.1", "bad-request"),
        ("0", "bad-request"),
    ] {
        let (got, message) = error(&t, execute, json!({"n": two.get(), "step": step})).await;
        assert_eq!(got, code, "{step}: {message}");
        assert!(message.contains("step"), "{message}");
    }
    let executed = data(&t, execute, json!({"n": two.get(), "step": "1"})).await;
    assert_eq!(
        executed["executeRunbook"],
        json!({"status": "PARTIALLY_COMPLETED", "stepCounts": {"queued": 2, "notStarted": 1}}),
        "the answer shows the state after the change"
    );
    // Cancel: queued steps wait again.
    let cancelled = data(
        &t,
        &format!("mutation {{ cancelRunbook(number: {two}) {{ status }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(cancelled["cancelRunbook"]["status"], "NOT_STARTED");
    assert!(t.store.cancel_requested(two).await.unwrap());
    // Retry needs a failure.
    let retry =
        format!("mutation {{ retryRunbook(number: {two}) {{ status stepCounts {{ queued }} }} }}");
    let (code, message) = error(&t, &retry, json!({})).await;
    assert_eq!(code, "conflict", "{message}");
    t.store
        .set_step_state(two, &n("1.1"), StepState::Failed)
        .await
        .unwrap();
    let retried = data(&t, &retry, json!({})).await;
    assert_eq!(retried["retryRunbook"]["status"], "PARTIALLY_COMPLETED");
    assert!(
        !t.store.cancel_requested(two).await.unwrap(),
        "a retry lifts the cancellation"
    );
    // Open a pull request: not for a single_pr runbook; not without GitHub for a manual one.
    let (code, _) = error(
        &t,
        &format!("mutation {{ openPullRequest(number: {two}) {{ number }} }}"),
        json!({}),
    )
    .await;
    assert_eq!(code, "conflict");
    // Several mutations in one request run in order, each answering its own state.
    let three = data(
        &t,
        &format!(
            "mutation {{
              a: cancelRunbook(number: {two}) {{ stepCounts {{ queued }} }}
              b: executeRunbook(number: {two}) {{ stepCounts {{ queued }} }}
              c: cancelRunbook(number: {two}) {{ stepCounts {{ queued notStarted }} }}
            }}"
        ),
        json!({}),
    )
    .await;
    assert_eq!(three["a"]["stepCounts"]["queued"], 0);
    assert_eq!(three["b"]["stepCounts"]["queued"], 3);
    assert_eq!(
        three["c"]["stepCounts"],
        json!({"queued": 0, "notStarted": 3})
    );
    // Numbers are positive.
    for query in [
        "{ runbook(number: 0) { number } }",
        "mutation { cancelRunbook(number: -1) { number } }",
    ] {
        let (code, message) = error(&t, query, json!({})).await;
        assert_eq!(code, "bad-request");
        assert!(message.contains("`number`"), "{message}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_get_401_like_rest() {
    let t = TestServer::start(Backend::Sqlite).await;
    runbook_in(&t.store, "acme-corp", "backend").await;
    let revoked = create_token(&t.store, &["acme-corp"]).await;
    // Seen (and cached) once, then revoked: refused with the next request.
    assert!(answer(&t, &revoked, "{ runbook(number: 1) { number } }", json!({})).await["data"]["runbook"].is_object());
    let id = t.store.list_tokens().await.unwrap().last().unwrap().id;
    assert!(t.store.revoke_token(id).await.unwrap());

    let query = "{ runbook(number: 1) { number } }";
    for token in [
        None,
        Some("not-a-token".to_string()),
        Some(format!("rbk_{}", "0".repeat(64))),
        Some(revoked),
    ] {
        let response = send(&t, token.as_deref(), query, json!({})).await;
        let (headers, _) = expect_error(response, 401, "unauthorized").await;
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    let mutation = "mutation { createRunbook(input: {repository: {org: \"acme-corp\", name: \"backend\"}, prompt: \"p\"}) { number } }";
    expect_error(
        send(&t, None, mutation, json!({})).await,
        401,
        "unauthorized",
    )
    .await;
    assert!(
        t.store.runbook(rn(2)).await.unwrap().is_none(),
        "nothing was created"
    );

    // The body rules of REST: JSON only, 1 MiB at most.
    let response = t
        .http
        .post(t.url("/api/graphql"))
        .bearer_auth(&t.token)
        .header("content-type", "application/graphql")
        .body(query)
        .send()
        .await
        .unwrap();
    expect_error(response, 415, "unsupported-media-type").await;
    let (status, body) = support::declared_too_large(&t, "POST", "/api/graphql").await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("\"error\":\"payload-too-large\""), "{body}");
    let response = t
        .http
        .post(t.url("/api/graphql"))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body("{\"query\": ")
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "bad-request").await;
    // A GraphQL syntax error or an unknown field: a GraphQL error, coded.
    for broken in [
        "{ runbook(number: 1) { number ",
        "{ runbook(number: 1) { colour } }",
        "{ nothing }",
    ] {
        let (code, _) = error(&t, broken, json!({})).await;
        assert_eq!(code, "bad-request", "{broken}");
    }
    // `variables: null` and `operationName` as clients send them.
    let named = t
        .http
        .post(t.url("/api/graphql"))
        .bearer_auth(&t.token)
        .json(&json!({"query": "query A { runbook(number: 1) { number } } query B { runbooks { nodes { number } } }", "variables": null, "operationName": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(named.status(), 200);
    assert_eq!(
        named.json::<Value>().await.unwrap(),
        json!({"data": {"runbook": {"number": 1}}})
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_applies_per_token() {
    let t =
        TestServer::start_with(Backend::Sqlite, |config| config.rate_limit_per_minute = 2).await;
    for _ in 0..2 {
        data(&t, "{ runbooks { nodes { number } } }", json!({})).await;
    }
    let response = send(
        &t,
        Some(&t.token),
        "{ runbooks { nodes { number } } }",
        json!({}),
    )
    .await;
    let (headers, _) = expect_error(response, 429, "rate-limited").await;
    assert!(headers.contains_key("retry-after"));
    t.stop().await;
}

/// graphql-js's introspection query (what GraphiQL sends), with its default type depth.
fn introspection_query(type_depth: usize) -> String {
    let mut type_ref = String::from("kind name");
    for _ in 0..type_depth {
        type_ref = format!("kind name ofType {{ {type_ref} }}");
    }
    format!(
        "query IntrospectionQuery {{
          __schema {{
            queryType {{ name }} mutationType {{ name }} subscriptionType {{ name }}
            types {{ ...FullType }}
            directives {{ name description locations args {{ ...InputValue }} }}
          }}
        }}
        fragment FullType on __Type {{
          kind name description
          fields(includeDeprecated: true) {{
            name description args {{ ...InputValue }} type {{ ...TypeRef }} isDeprecated deprecationReason
          }}
          inputFields {{ ...InputValue }}
          interfaces {{ ...TypeRef }}
          enumValues(includeDeprecated: true) {{ name description isDeprecated deprecationReason }}
          possibleTypes {{ ...TypeRef }}
        }}
        fragment InputValue on __InputValue {{ name description type {{ ...TypeRef }} defaultValue }}
        fragment TypeRef on __Type {{ {type_ref} }}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_and_complexity_are_limited() {
    let t = TestServer::start(Backend::Sqlite).await;
    // GraphiQL's introspection passes.
    let schema = data(&t, &introspection_query(9), json!({})).await;
    let types: Vec<&str> = schema["__schema"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for name in [
        "Runbook",
        "RunbookConnection",
        "RunbookStatus",
        "CreateRunbookInput",
        "DateTime",
    ] {
        assert!(types.contains(&name), "{name} in {types:?}");
    }
    // Deeper is refused.
    let (code, message) = error(&t, &introspection_query(10), json!({})).await;
    assert_eq!(code, "bad-request");
    assert!(message.contains("nested too deep"), "{message}");
    let mut deep = String::from("name");
    for _ in 0..20 {
        deep = format!("ofType {{ {deep} }}");
    }
    let (_, message) = error(
        &t,
        &format!("{{ __type(name: \"Runbook\") {{ fields {{ type {{ {deep} }} }} }} }}"),
        json!({}),
    )
    .await;
    assert!(message.contains("nested too deep"), "{message}");

    // A page of 25 runbooks with every field passes; 100 of them is too complex, and so
    // are many pages asked for at once under aliases.
    data(
        &t,
        &with_full("{ runbooks(first: 25) { nodes { ...Full } pageInfo { endCursor } } }"),
        json!({}),
    )
    .await;
    let (code, message) = error(
        &t,
        &with_full("{ runbooks(first: 100) { nodes { ...Full } } }"),
        json!({}),
    )
    .await;
    assert_eq!(code, "bad-request");
    assert!(message.contains("too complex"), "{message}");
    let aliased: String = (0..30)
        .map(|i| format!("p{i}: runbooks(first: 100) {{ nodes {{ number }} }} "))
        .collect();
    let (_, message) = error(&t, &format!("{{ {aliased} }}"), json!({})).await;
    assert!(message.contains("too complex"), "{message}");
    // A variable counts as well.
    let (_, message) = error(
        &t,
        &with_full("query($first: Int!) { runbooks(first: $first) { nodes { ...Full } } }"),
        json!({"first": 100}),
    )
    .await;
    assert!(message.contains("too complex"), "{message}");
    t.stop().await;
}

/// GraphiQL is not served (it would be third-party script where dashboard sessions live):
/// `GET` answers a page saying how to use the endpoint, with the schema, under the
/// dashboard's security headers and without any script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_explains_the_endpoint_without_third_party_scripts() {
    let t = TestServer::start(Backend::Sqlite).await;
    let response = t.http.get(t.url("/api/graphql")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response.headers()[name]
            .to_str()
            .unwrap_or_else(|_| panic!("{name}"))
            .to_string()
    };
    assert!(header("content-type").starts_with("text/html"));
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("http"), "no other origin is allowed: {csp}");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "same-origin");
    assert_eq!(header("cache-control"), "no-store");
    assert_eq!(header("x-content-type-options"), "nosniff");
    let page = response.text().await.unwrap();
    assert!(page.contains(&format!("{}/api/graphql", t.base)), "{page}");
    assert!(page.contains("Authorization: Bearer"), "{page}");
    // The schema, escaped.
    assert!(
        page.contains("createRunbook(input: CreateRunbookInput!): Runbook!"),
        "{page}"
    );
    assert!(!page.contains("<script"), "no script at all: {page}");
    assert!(!page.contains(&t.token));
    t.stop().await;
}

/// The query of the issue: fragments spreading the next one ten times, seven deep — 674
/// bytes that async-graphql's validation walks as ten million fields. It is refused by
/// counting, before validation. (`the_fragment_bomb_as_async_graphql_alone_sees_it`, run
/// with `--ignored`, measures what the same text cost before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_bomb_is_refused_before_validation() {
    let t = TestServer::start(Backend::Sqlite).await;
    let bomb = runbooks::graphql::limits::fragment_bomb(7, 10);
    println!("the fragment bomb: {} bytes", bomb.len());
    let started = std::time::Instant::now();
    let (code, message) = error(&t, &bomb, json!({})).await;
    println!("refused over HTTP in {:?}: {message}", started.elapsed());
    assert_eq!(code, "bad-request");
    assert!(message.contains("more than 1000 fields"), "{message}");

    // Cycles, too many fragments, a text too long or nested too deep: refused the same way.
    for (query, expected) in [
        (
            "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }".to_string(),
            "spreads itself",
        ),
        (
            runbooks::graphql::limits::fragment_bomb(40, 1),
            "41 fragments",
        ),
        (
            format!(
                "{{ runbooks {{ nodes {{ number }} }} }} #{}",
                "x".repeat(16 * 1024)
            ),
            "bytes long",
        ),
        (format!("{}{}", "{ a".repeat(100), "}".repeat(100)), "nests"),
    ] {
        let (code, message) = error(&t, &query, json!({})).await;
        assert_eq!(code, "bad-request", "{message}");
        assert!(message.contains(expected), "{expected}: {message}");
    }
    // A long prompt still fits, in variables.
    let long = "Upgrade everything. ".repeat(2000);
    let created = data(
        &t,
        CREATE_SHORT,
        json!({"input": {"repository": {"org": "acme-corp", "name": "backend"}, "prompt": long}}),
    )
    .await;
    assert_eq!(created["createRunbook"]["number"], 1);
    t.stop().await;
}

/// What the endpoint did with the bomb before: async-graphql's own parse and validation,
/// timed. Run by hand: `cargo test --test it graphql -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement: seconds of CPU"]
async fn the_fragment_bomb_as_async_graphql_alone_sees_it() {
    let schema = runbooks::graphql::schema();
    for levels in [5, 6, 7] {
        let bomb = runbooks::graphql::limits::fragment_bomb(levels, 10);
        let started = std::time::Instant::now();
        let refused = runbooks::graphql::limits::check(&bomb, None);
        let checked = started.elapsed();
        let started = std::time::Instant::now();
        let response = schema.execute(bomb.as_str()).await;
        println!(
            "{levels} levels, {} bytes: async-graphql alone took {:?} to answer {} errors; \
             the limits {checked:?} to answer {refused:?}",
            bomb.len(),
            started.elapsed(),
            response.errors.len(),
        );
    }
}

/// Every top-level field a request runs takes a request from the token's rate limit:
/// aliases and several mutations in one request cost what separate requests would, and a
/// request over what is left changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliased_fields_and_mutations_count_against_the_rate_limit() {
    let t =
        TestServer::start_with(Backend::Sqlite, |config| config.rate_limit_per_minute = 10).await;
    let create = |n: usize| {
        let fields: String = (0..n)
            .map(|i| {
                format!(
                    " c{i}: createRunbook(input: {{repository: {{org: \"acme-corp\", name: \"backend\"}}, prompt: \"p{i}\"}}) {{ number }}"
                )
            })
            .collect();
        format!("mutation {{{fields} }}")
    };
    // The issue's 900 aliased creations in one request: refused outright (the text alone is
    // too long), and so are 101, nothing created.
    let (code, message) = error(&t, &create(900), json!({})).await;
    assert_eq!(code, "bad-request");
    assert!(message.contains("bytes long"), "{message}");
    let (code, message) = error(&t, &create(101), json!({})).await;
    assert_eq!(code, "bad-request");
    assert!(message.contains("aliased"), "{message}");
    // More than the whole budget: refused as a request to split.
    let response = send(&t, Some(&t.token), &create(20), json!({})).await;
    let (_, message) = expect_error(response, 400, "bad-request").await;
    assert!(message.contains("RUNBOOKS_RATE_LIMIT"), "{message}");
    assert!(
        t.store.runbook(rn(1)).await.unwrap().is_none(),
        "nothing was created"
    );

    // 10 a minute: the three refusals above took one each; 4 reads take 4.
    let reads: String = (0..4)
        .map(|i| format!(" r{i}: runbook(number: {}) {{ number }}", i + 1))
        .collect();
    data(&t, &format!("{{{reads} }}"), json!({})).await;
    // 8 creations do not fit in the 3 left (one comes back every 6 s): 429 with
    // Retry-After, and nothing is created.
    let response = send(&t, Some(&t.token), &create(8), json!({})).await;
    let (headers, _) = expect_error(response, 429, "rate-limited").await;
    assert!(headers.contains_key("retry-after"));
    assert!(
        t.store.runbook(rn(1)).await.unwrap().is_none(),
        "nothing was created"
    );
    // (The refused request took its first one.) 2 creations fit in the 2 left.
    let created = data(&t, &create(2), json!({})).await;
    assert_eq!(created["c1"]["number"], 2);
    t.stop().await;
}

/// Reads `runbook(number)` until `done` holds, looking again after each of the engine's steps
/// on it, or fails after a deadline.
async fn wait_for_runbook(
    t: &TestServer,
    number: i64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let query = with_full("query($n: Int!) { runbook(number: $n) { ...Full } }");
    let mut progress = t.watch(number, std::time::Duration::from_secs(60));
    loop {
        let runbook = data(t, &query, json!({"n": number})).await["runbook"].clone();
        if done(&runbook) {
            return runbook;
        }
        assert!(
            progress.next().await,
            "runbook {number} never reached {what}; last: {runbook}"
        );
    }
}

/// The engine runs runbooks created, executed and completed through GraphQL: commits
/// show on the steps and the pull requests on the runbook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_runs_to_completion_through_graphql() {
    let github =
        support::github_with_backend(&[("src/lib.rs", LIB), ("README.md", "# backend\n")]).await;
    let t = server_for(&github, Backend::Sqlite, |_| {}).await;

    let (code, message) = error(
        &t,
        CREATE_SHORT,
        json!({"input": {"repository": {"org": "acme-corp", "name": "missing"}, "prompt": "p"}}),
    )
    .await;
    assert_eq!(code, "unprocessable-entity");
    assert!(message.contains("acme-corp/missing"), "{message}");

    // Planned, executed up to step 1, then the rest.
    let created = data(
        &t,
        CREATE_SHORT,
        json!({"input": {"repository": {"org": "acme-corp", "name": "backend"}, "prompt": RENAME, "oneshot": false, "labels": ["runbook"]}}),
    )
    .await;
    assert_eq!(created["createRunbook"]["number"], 1);
    assert_eq!(
        created["createRunbook"]["targetBranch"], "main",
        "the default branch, fixed at creation"
    );
    wait_for_runbook(&t, 1, "a plan", |r| r["status"] == "NOT_STARTED").await;
    data(
        &t,
        "mutation { executeRunbook(number: 1, step: \"1\") { number } }",
        json!({}),
    )
    .await;
    let partial = wait_for_runbook(&t, 1, "step 1 done", |r| {
        r["stepCounts"]["completed"] == 2
            && r["stepCounts"]["queued"] == 0
            && r["stepCounts"]["inProgress"] == 0
    })
    .await;
    assert_eq!(partial["status"], "PARTIALLY_COMPLETED");
    assert_eq!(
        partial["steps"][0]["status"], "COMPLETED",
        "the parent of done leaves"
    );
    data(
        &t,
        "mutation { executeRunbook(number: 1) { number } }",
        json!({}),
    )
    .await;
    let done = wait_for_runbook(&t, 1, "completion with a final PR", |r| {
        r["status"] == "COMPLETED" && r["pullRequests"][0]["draft"] == false
    })
    .await;

    let head = github
        .branch_sha("acme-corp", "backend", "runbooks/1")
        .await
        .unwrap()
        .unwrap();
    let steps = done["steps"].as_array().unwrap();
    let shas: Vec<(&str, Option<&str>)> = steps
        .iter()
        .map(|s| (s["number"].as_str().unwrap(), s["commitSha"].as_str()))
        .collect();
    assert_eq!(shas[0], ("1", None), "a parent makes no commit");
    assert!(
        shas[1..]
            .iter()
            .all(|(_, sha)| sha.is_some_and(|s| s.len() == 40)),
        "{shas:?}"
    );
    assert_eq!(
        shas[3].1,
        Some(head.as_str()),
        "the last step's commit is the branch's head"
    );
    for step in &steps[1..] {
        assert_eq!(step["status"], "COMPLETED");
        assert!(
            step["startedAt"].is_string() && step["finishedAt"].is_string(),
            "{step}"
        );
    }
    let pulls = github.pulls("acme-corp", "backend");
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        done["pullRequests"],
        json!([{
            "number": pulls[0].number,
            "url": format!("{}/acme-corp/backend/pull/{}", github.api_url(), pulls[0].number),
            "state": "OPEN",
            "draft": false,
            "stepNumbers": ["1.1", "1.2", "2"]
        }])
    );
    assert!(
        steps[1..]
            .iter()
            .all(|s| s["pullRequestNumber"] == pulls[0].number)
    );

    // A manual runbook: its pull request is opened on request.
    let manual = "## Execution Steps\n### Step 1: Add a file\n```sh\necho hi > hi.txt\n```\n";
    let created = data(
        &t,
        CREATE_SHORT,
        json!({"input": {"repository": {"org": "acme-corp", "name": "backend"}, "prompt": manual, "prMode": "MANUAL"}}),
    )
    .await;
    let two = created["createRunbook"]["number"].as_i64().unwrap();
    wait_for_runbook(&t, two, "completion", |r| r["status"] == "COMPLETED").await;
    assert_eq!(
        github.pulls("acme-corp", "backend").len(),
        1,
        "no PR by itself"
    );
    let opened = data(&t, &format!("mutation {{ openPullRequest(number: {two}) {{ pullRequests {{ number stepNumbers }} }} }}"), json!({})).await;
    let pulls = github.pulls("acme-corp", "backend");
    assert_eq!(pulls.len(), 2);
    let pr = pulls
        .iter()
        .find(|p| p.head == format!("runbooks/{two}"))
        .unwrap();
    assert_eq!(
        opened["openPullRequest"]["pullRequests"],
        json!([{"number": pr.number, "stepNumbers": ["1"]}])
    );
    t.stop().await;
}

const CREATE_SHORT: &str = "mutation($input: CreateRunbookInput!) {
  createRunbook(input: $input) { number status targetBranch }
}";

both_backends!(
    every_field_of_a_runbook,
    listings_filter_by_org_repository_and_status
);
