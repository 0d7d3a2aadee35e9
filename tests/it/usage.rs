//! What runbooks used, end to end: the engine records each step's wall time, its agent's CPU
//! time and the model's tokens; REST (`GET /api/v1/runbook/<n>/steps`) and GraphQL show
//! them per step and in total. The `openai` agent talks to a model endpoint stand-in that
//! reports a known count of tokens for each answer, so the totals can be checked exactly.

use crate::support;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use runbooks::config::AgentKind;
use runbooks::domain::RunbookStatus;
use serde_json::{Value, json};
use support::{Backend, LIB, TestServer, server_for, wait_for_status};

/// A runbook of three steps, in the template layout (so the plan is made without the model).
const THREE_STEPS: &str = "Write three notes.

## Execution Steps
### Step 1: First note
Write the first note.
### Step 2: Second note
Write the second note.
### Step 3: Third note
Write the third note.
";

/// What the model stand-in has counted: the tokens it reported, summed.
#[derive(Default)]
struct Counted {
    answers: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// The planner's answer: one step.
const PLAN: &str =
    r#"{"steps": [{"number": "1", "title": "Write the note", "details": "Write it."}]}"#;

/// What the endpoint counts for the planner's answer.
const PLAN_TOKENS: (u64, u64) = (40, 9);

/// An OpenAI-compatible endpoint: to a step's first request it answers with a `write_file`
/// call, to the next one with `finish`, each answer with a count of tokens of its own (some
/// with none, as servers that do not count); a planning request (no tools) gets [`PLAN`]
/// with [`PLAN_TOKENS`]. It adds up what it reported.
async fn model() -> (String, Arc<Mutex<Counted>>) {
    async fn answer(State(counted): State<Arc<Mutex<Counted>>>, body: String) -> Json<Value> {
        let request: Value = serde_json::from_str(&body).expect("a JSON request");
        let messages = request["messages"].as_array().expect("messages");
        if request.get("tools").is_none() {
            let mut counted = counted.lock().unwrap();
            counted.answers += 1;
            counted.prompt_tokens += PLAN_TOKENS.0;
            counted.completion_tokens += PLAN_TOKENS.1;
            return Json(json!({
                "id": "chatcmpl-plan", "object": "chat.completion", "created": 1_700_000_000,
                "model": "test-model",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": PLAN}}],
                "usage": {"prompt_tokens": PLAN_TOKENS.0, "completion_tokens": PLAN_TOKENS.1,
                          "total_tokens": PLAN_TOKENS.0 + PLAN_TOKENS.1}
            }));
        }
        let answered = messages.iter().any(|m| m["role"] == "tool");
        let prompt = messages
            .iter()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_string();
        // The prompt has the whole runbook, then the step's own heading.
        let step = (1..=3u64)
            .find(|n| prompt.contains(&format!("# Your step: {n}. ")))
            .expect("a step of the runbook");
        let mut counted = counted.lock().unwrap();
        counted.answers += 1;
        let message = if answered {
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_finish", "type": "function",
                "function": {"name": "finish", "arguments": json!({"summary": format!("wrote note {step}")}).to_string()}
            }]})
        } else {
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_write", "type": "function",
                "function": {"name": "write_file", "arguments": json!({
                    "path": format!("notes/{step}.md"), "content": format!("note {step}\n")
                }).to_string()}
            }]})
        };
        let mut body = json!({
            "id": "chatcmpl-usage", "object": "chat.completion", "created": 1_700_000_000,
            "model": "test-model",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]
        });
        // Step 2's finishing answer carries no count, as some servers send none.
        if !(step == 2 && answered) {
            let (prompt_tokens, completion_tokens) = (100 * step + counted.answers, 7);
            counted.prompt_tokens += prompt_tokens;
            counted.completion_tokens += completion_tokens;
            body["usage"] = json!({
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens
            });
        }
        Json(body)
    }
    let counted = Arc::new(Mutex::new(Counted::default()));
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(answer))
        .with_state(counted.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), counted)
}

async fn github() -> runbooks_standin::StandIn {
    support::github_with_backend(&[("src/lib.rs", LIB), ("README.md", "# backend\n")]).await
}

/// The steps document as JSON, as a client reads it.
async fn steps_json(t: &TestServer, number: i64) -> Value {
    let response = t
        .http
        .get(t.url(&format!("/api/v1/runbook/{number}/steps")))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn graphql(t: &TestServer, number: i64) -> Value {
    let query = "query($n: Int!) { runbook(number: $n) { \
        usage { wallMs agentCpuMs promptTokens completionTokens } \
        planningUsage { wallMs agentCpuMs promptTokens completionTokens } \
        steps { number leaf usage { wallMs agentCpuMs promptTokens completionTokens } } } }";
    let answer: Value = t
        .http
        .post(t.url("/api/graphql"))
        .bearer_auth(&t.token)
        .json(&json!({"query": query, "variables": {"n": number}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"]["runbook"].clone()
}

fn int(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

/// A runbook carried out by the `openai` agent: each step's tokens, and the runbook's, are
/// what the model's endpoint counted, in REST and GraphQL alike.
async fn tokens_are_what_the_model_counted(backend: Backend) {
    let github = github().await;
    let (base, counted) = model().await;
    let t = server_for(&github, backend, move |config| {
        config.agent.kind = AgentKind::Openai;
        config.agent.openai_base_url = Some(base);
        config.agent.model = Some("test-model".into());
    })
    .await;
    t.api()
        .create(&support::minimal(THREE_STEPS))
        .await
        .expect("created");
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(
        done.status,
        RunbookStatus::Completed,
        "{:?}",
        steps_json(&t, 1).await
    );

    let (answers, prompt_total, completion_total) = {
        let counted = counted.lock().unwrap();
        (
            counted.answers,
            counted.prompt_tokens,
            counted.completion_tokens,
        )
    };
    assert_eq!(answers, 6, "two answers per step, none to plan");

    let doc = steps_json(&t, 1).await;
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    let mut prompt_sum = 0;
    let mut wall_sum = 0;
    for step in steps {
        let usage = &step["usage"];
        assert!(int(&usage["wall_ms"]) > 0, "{step}");
        assert!(usage["agent_cpu_ms"].is_u64(), "{step}");
        prompt_sum += int(&usage["prompt_tokens"]);
        wall_sum += int(&usage["wall_ms"]);
    }
    // Step 2's second answer had no count: its tokens are its first answer's only.
    assert_eq!(int(&steps[1]["usage"]["completion_tokens"]), 7, "{doc}");
    assert_eq!(int(&steps[0]["usage"]["completion_tokens"]), 14, "{doc}");
    assert_eq!(prompt_sum, prompt_total);
    let total = &doc["usage"];
    assert_eq!(int(&total["prompt_tokens"]), prompt_total, "{doc}");
    assert_eq!(int(&total["completion_tokens"]), completion_total, "{doc}");
    assert_eq!(int(&total["wall_ms"]), wall_sum, "{doc}");
    assert_eq!(
        doc["planning_usage"],
        Value::Null,
        "no model planned it: {doc}"
    );

    let runbook = graphql(&t, 1).await;
    assert_eq!(int(&runbook["usage"]["promptTokens"]), prompt_total);
    assert_eq!(int(&runbook["usage"]["completionTokens"]), completion_total);
    assert_eq!(int(&runbook["usage"]["wallMs"]), wall_sum);
    assert_eq!(
        int(&runbook["usage"]["agentCpuMs"]),
        int(&total["agent_cpu_ms"])
    );
    for (rest, graph) in steps.iter().zip(runbook["steps"].as_array().unwrap()) {
        assert_eq!(
            rest["usage"]["prompt_tokens"], graph["usage"]["promptTokens"],
            "{rest} {graph}"
        );
        assert_eq!(rest["usage"]["wall_ms"], graph["usage"]["wallMs"]);
    }
    t.stop().await;
}

/// A runbook of the `script` agent: each step's wall time and CPU time are measured (a busy
/// loop uses more CPU than a sleep), its tokens are unknown (null, not 0), parents used
/// nothing of their own (null), and the totals add up.
async fn a_script_runbook_has_times_and_no_tokens(backend: Backend) {
    let github = github().await;
    let t = server_for(&github, backend, |_| {}).await;
    let prompt = "Measure.

## Execution Steps
### Step 1: Work
#### 1.1: Burn
```sh
i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo burnt > burnt.txt
```
#### 1.2: Rest
```sh
sleep 0.3; echo rested > rested.txt
```
";
    t.api()
        .create(&support::minimal(prompt))
        .await
        .expect("created");
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(
        done.status,
        RunbookStatus::Completed,
        "{:?}",
        steps_json(&t, 1).await
    );

    let doc = steps_json(&t, 1).await;
    let steps = doc["steps"].as_array().unwrap();
    let numbers: Vec<&str> = steps
        .iter()
        .map(|s| s["number"].as_str().unwrap())
        .collect();
    assert_eq!(numbers, ["1", "1.1", "1.2"]);
    assert!(steps[0]["usage"].is_null(), "a parent: {doc}");
    let (burn, rest) = (&steps[1]["usage"], &steps[2]["usage"]);
    for usage in [burn, rest] {
        assert!(int(&usage["wall_ms"]) > 0, "{doc}");
        // Unknown, and said so: the keys are there, null.
        assert_eq!(usage["prompt_tokens"], Value::Null, "{doc}");
        assert_eq!(usage["completion_tokens"], Value::Null, "{doc}");
        assert!(usage.as_object().unwrap().contains_key("prompt_tokens"));
    }
    assert!(int(&burn["agent_cpu_ms"]) > 0, "{doc}");
    assert!(
        int(&burn["agent_cpu_ms"]) > int(&rest["agent_cpu_ms"]),
        "the busy loop used more CPU than the sleep: {doc}"
    );
    let total = &doc["usage"];
    assert_eq!(
        int(&total["wall_ms"]),
        int(&burn["wall_ms"]) + int(&rest["wall_ms"])
    );
    assert_eq!(
        int(&total["agent_cpu_ms"]),
        int(&burn["agent_cpu_ms"]) + int(&rest["agent_cpu_ms"])
    );
    assert_eq!(total["prompt_tokens"], Value::Null, "{doc}");

    let runbook = graphql(&t, 1).await;
    assert_eq!(runbook["usage"]["promptTokens"], Value::Null);
    assert_eq!(runbook["usage"]["wallMs"], total["wall_ms"]);
    assert_eq!(runbook["steps"][0]["usage"], Value::Null);
    assert_eq!(
        runbook["steps"][1]["usage"]["agentCpuMs"],
        burn["agent_cpu_ms"]
    );
    t.stop().await;
}

/// Planning by the model counts too: the runbook's planning usage is what the endpoint
/// counted for the plan, its total adds it to its steps', and so does the organisation's
/// use (what budgets read).
async fn planning_by_the_model_counts(backend: Backend) {
    let github = github().await;
    let (base, counted) = model().await;
    let t = server_for(&github, backend, move |config| {
        config.agent.kind = AgentKind::Openai;
        config.agent.openai_base_url = Some(base);
        config.agent.model = Some("test-model".into());
    })
    .await;
    t.api()
        .create(&support::minimal("Write a note."))
        .await
        .expect("created");
    let done = wait_for_status(&t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(
        done.status,
        RunbookStatus::Completed,
        "{:?}",
        steps_json(&t, 1).await
    );
    let (answers, prompt_total, completion_total) = {
        let counted = counted.lock().unwrap();
        (
            counted.answers,
            counted.prompt_tokens,
            counted.completion_tokens,
        )
    };
    assert_eq!(answers, 3, "one to plan, two for the step");

    let doc = steps_json(&t, 1).await;
    let planning = &doc["planning_usage"];
    assert_eq!(int(&planning["prompt_tokens"]), PLAN_TOKENS.0, "{doc}");
    assert_eq!(int(&planning["completion_tokens"]), PLAN_TOKENS.1, "{doc}");
    assert!(planning["wall_ms"].is_u64(), "{doc}");
    let step = &doc["steps"][0]["usage"];
    assert_eq!(
        int(&step["prompt_tokens"]),
        prompt_total - PLAN_TOKENS.0,
        "{doc}"
    );
    let total = &doc["usage"];
    assert_eq!(int(&total["prompt_tokens"]), prompt_total, "{doc}");
    assert_eq!(int(&total["completion_tokens"]), completion_total, "{doc}");
    assert_eq!(
        int(&total["wall_ms"]),
        int(&step["wall_ms"]) + int(&planning["wall_ms"])
    );

    let runbook = graphql(&t, 1).await;
    assert_eq!(int(&runbook["usage"]["promptTokens"]), prompt_total);
    assert_eq!(
        int(&runbook["planningUsage"]["completionTokens"]),
        PLAN_TOKENS.1
    );

    let month = t.store.org_usage_since("ACME-CORP", 0).await.unwrap();
    assert_eq!(month.prompt_tokens, Some(prompt_total));
    assert_eq!(month.completion_tokens, Some(completion_total));
    t.stop().await;
}

both_backends!(
    planning_by_the_model_counts,
    tokens_are_what_the_model_counted,
    a_script_runbook_has_times_and_no_tokens
);
