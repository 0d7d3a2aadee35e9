//! The `openai` agent against a scripted OpenAI-compatible server: a real HTTP server on a
//! loopback port, answering `POST /v1/chat/completions` from a queue of canned answers and
//! recording every request, so each test checks both what the agent did (the plan, the files
//! in a real working tree, the error) and what it sent the model (messages, tools, tool
//! answers, the key).
//!
//! Every test calls `setup()` first, which puts secret-looking variables into this process's
//! environment: commands the agent runs must not see them, and the agent must not pick up
//! `OPENAI_API_KEY` from the environment behind its configuration's back.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::{Value, json};

use runbooks::agent::openai::OpenAiAgent;
use runbooks::agent::{Agent, AgentError, Limits, PlanRequest, StepTask};

const KEY: &str = "sk-test-0123456789abcdef";

/// Secrets of the running service, as its environment has them.
const SECRETS: [(&str, &str); 4] = [
    ("OPENAI_API_KEY", "sk-leaked-from-the-environment"),
    ("GITHUB_TOKEN", "ghs_leakedinstallationtoken"),
    ("GITHUB_WEBHOOK_SECRET", "leaked-webhook-secret"),
    (
        "RUNBOOKS_DATABASE_URL",
        "postgres://runbooks:leaked-password@db/runbooks",
    ),
];

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (name, value) in SECRETS {
            // SAFETY: every test in this binary calls `setup()` before doing anything else,
            // and `Once` makes the others wait until this closure returns, so no other thread
            // reads or writes the environment while it runs.
            unsafe { std::env::set_var(name, value) };
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The scripted server

/// One canned answer.
#[derive(Clone)]
enum Answer {
    /// This status and JSON body.
    Json(StatusCode, Value),
    /// Never answers (the client gives up).
    Hang,
    /// A 401 whose message repeats the Authorization header, as a careless proxy might.
    EchoAuthorization,
}

/// A request the server got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Script {
    answers: VecDeque<Answer>,
    /// Given once the queue is empty; without it the server answers 500 "script exhausted".
    repeat: Option<Answer>,
    seen: Vec<Seen>,
}

struct Server {
    base: String,
    script: Arc<Mutex<Script>>,
}

impl Server {
    async fn start(answers: Vec<Answer>) -> Self {
        let script = Arc::new(Mutex::new(Script {
            answers: answers.into(),
            ..Script::default()
        }));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base: format!("http://{addr}/v1"),
            script,
        }
    }

    fn repeat(&self, answer: Answer) {
        self.script.lock().unwrap().repeat = Some(answer);
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }

    fn agent(&self, limits: Limits) -> OpenAiAgent {
        OpenAiAgent::new(
            &self.base,
            Some(SecretString::from(KEY)),
            "test-model",
            limits,
        )
        .unwrap()
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let authorization = headers
        .get("authorization")
        .map(|value| value.to_str().unwrap().to_string());
    let next = {
        let mut script = script.lock().unwrap();
        script.seen.push(Seen {
            path: uri.path().to_string(),
            authorization: authorization.clone(),
            body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
        });
        if uri.path() != "/v1/chat/completions" {
            return (StatusCode::NOT_FOUND, "no such path").into_response();
        }
        script.answers.pop_front().or_else(|| script.repeat.clone())
    };
    match next {
        Some(Answer::Json(status, body)) => (status, Json(body)).into_response(),
        Some(Answer::Hang) => std::future::pending::<Response>().await,
        Some(Answer::EchoAuthorization) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {
                "message": format!("invalid credentials: {}", authorization.unwrap_or_default()),
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"
            }})),
        )
            .into_response(),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": "script exhausted", "type": "test"}})),
        )
            .into_response(),
    }
}

/// A chat completion as OpenAI sends it, with this message.
fn completion(message: Value) -> Answer {
    let finish = if message.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    Answer::Json(
        StatusCode::OK,
        json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "test-model",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        }),
    )
}

/// `answer` with the endpoint's count of tokens for it: `Some((prompt, completion))`, or
/// `None` for a server that reports none.
fn counted(answer: Answer, tokens: Option<(u64, u64)>) -> Answer {
    let Answer::Json(status, mut body) = answer else {
        panic!("only JSON answers have a usage");
    };
    match tokens {
        Some((prompt, completion)) => {
            body["usage"] = json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion
            });
        }
        None => {
            body.as_object_mut().unwrap().remove("usage");
        }
    }
    Answer::Json(status, body)
}

fn text(content: &str) -> Answer {
    completion(json!({"role": "assistant", "content": content}))
}

/// A reply calling these tools, `(name, arguments)`, with ids `call_{tag}_{i}`.
fn calls(tag: &str, calls: &[(&str, Value)]) -> Answer {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, arguments))| {
            json!({
                "id": format!("call_{tag}_{i}"),
                "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()}
            })
        })
        .collect();
    completion(json!({"role": "assistant", "content": null, "tool_calls": calls}))
}

fn finish(summary: &str) -> Answer {
    calls("finish", &[("finish", json!({ "summary": summary }))])
}

/// The `tool` messages of a request, as `(tool_call_id, content)`.
fn tool_answers(request: &Seen) -> Vec<(String, String)> {
    request.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The answer to one tool call, from the request after it.
fn answer_to(seen: &[Seen], id: &str) -> String {
    seen.iter()
        .flat_map(tool_answers)
        .find(|(call, _)| call == id)
        .unwrap_or_else(|| panic!("no answer to {id}"))
        .1
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn limits() -> Limits {
    Limits {
        step_timeout: Duration::from_secs(20),
        output_cap: 64 * 1024,
        ..Limits::default()
    }
}

fn plan_request(prompt: &str) -> PlanRequest {
    PlanRequest {
        prompt: prompt.into(),
        context: None,
        after: 0,
        tree: None,
    }
}

fn task(details: &str) -> StepTask {
    StepTask {
        runbook: 7,
        number: "2.1".parse().unwrap(),
        title: "Rename the helper".into(),
        details: details.into(),
        runbook_prompt: "Rename old_name to new_name everywhere.".into(),
    }
}

fn worktree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    std::fs::write(dir.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("src/lib.rs"),
        "pub fn old_name() -> u32 {\n    1\n}\n",
    )
    .unwrap();
    dir
}

fn read(dir: &Path, path: &str) -> String {
    std::fs::read_to_string(dir.join(path)).unwrap()
}

fn plan_json(steps: &[(&str, &str)]) -> String {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(n, t)| json!({"number": n, "title": t, "details": format!("details of {n}")}))
        .collect();
    json!({ "steps": steps }).to_string()
}

fn numbers(plan: &runbooks::domain::Plan) -> Vec<String> {
    plan.steps().iter().map(|s| s.number.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Planning

#[tokio::test]
async fn a_plain_prompt_is_planned_by_the_model_from_json() {
    setup();
    let answer = plan_json(&[
        ("1", "Rename the helper"),
        ("1.1", "Rename the definition"),
        ("1.2", "Update the callers"),
        ("2", "Document it"),
    ]);
    let server = Server::start(vec![text(&answer)]).await;
    let agent = server.agent(limits());
    let request = PlanRequest {
        context: Some("Issue #12: the helper has a confusing name".into()),
        ..plan_request("Rename old_name to new_name and document it.")
    };
    let plan = agent.plan(&request).await.unwrap();
    assert_eq!(numbers(&plan), ["1", "1.1", "1.2", "2"]);
    assert_eq!(plan.steps()[1].title, "Rename the definition");
    assert_eq!(plan.steps()[1].details, "details of 1.1");
    assert_eq!(
        plan.leaves()
            .map(|s| s.number.to_string())
            .collect::<Vec<_>>(),
        ["1.1", "1.2", "2"]
    );

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let sent = &seen[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(sent.body["model"], "test-model");
    assert!(sent.body.get("tools").is_none());
    // The schema both as structured output and in the prompt.
    let format = &sent.body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["name"], "runbook_plan");
    assert_eq!(
        format["json_schema"]["schema"]["required"],
        json!(["steps"])
    );
    let messages = sent.body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.contains(r#"{"steps": [{"number": "1", "title": "...", "details": "..."}"#));
    assert_eq!(messages[1]["role"], "user");
    let user = messages[1]["content"].as_str().unwrap();
    assert!(user.contains("Rename old_name to new_name and document it."));
    assert!(user.contains("Issue #12: the helper has a confusing name"));
}

#[tokio::test]
async fn a_follow_up_plan_continues_the_numbering() {
    setup();
    let server = Server::start(vec![text(&plan_json(&[("4", "More"), ("5", "Even more")]))]).await;
    let plan = server
        .agent(limits())
        .plan(&PlanRequest {
            after: 3,
            ..plan_request("Also handle the edge cases.")
        })
        .await
        .unwrap();
    assert_eq!(numbers(&plan), ["4", "5"]);
    let system = server.seen()[0].body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        system.contains("last top-level step is 3: the first step is \"4\""),
        "{system}"
    );
}

#[tokio::test]
async fn a_prompt_in_the_template_layout_is_its_own_plan() {
    setup();
    let server = Server::start(vec![]).await;
    let prompt = "Context.\n## Execution Steps\n### Step 1: Rename\n#### 1.1: Definition\nDo it.\n#### 1.2: Callers\n### Step 2: Docs\n";
    let plan = server
        .agent(limits())
        .plan(&plan_request(prompt))
        .await
        .unwrap();
    assert_eq!(numbers(&plan), ["1", "1.1", "1.2", "2"]);
    assert_eq!(plan.steps()[1].details, "Do it.");
    assert!(server.seen().is_empty(), "the model was asked");

    // A mistake in the layout is the parser's error, not a question to the model.
    let err = server
        .agent(limits())
        .plan(&plan_request(
            "## Execution Steps\n### Step 1: A\n### Step 3: B\n",
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Plan(_)), "{err:?}");
    assert!(err.to_string().contains("line 3"), "{err}");
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn malformed_json_is_sent_back_once_with_the_error() {
    setup();
    let good = plan_json(&[("1", "Only step")]);
    let server = Server::start(vec![
        text("Sure! Here is the plan: {\"steps\": [{\"number\": \"1\", \"title\": "),
        text(&format!("```json\n{good}\n```")),
    ])
    .await;
    let plan = server
        .agent(limits())
        .plan(&plan_request("Do the thing."))
        .await
        .unwrap();
    assert_eq!(numbers(&plan), ["1"]);

    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let retry = seen[1].body["messages"].as_array().unwrap();
    assert_eq!(retry.len(), 4);
    assert_eq!(retry[2]["role"], "assistant");
    assert!(
        retry[2]["content"]
            .as_str()
            .unwrap()
            .starts_with("Sure! Here is the plan")
    );
    assert_eq!(retry[3]["role"], "user");
    let complaint = retry[3]["content"].as_str().unwrap();
    assert!(
        complaint.starts_with("That answer could not be used: the answer is not valid JSON"),
        "{complaint}"
    );
}

#[tokio::test]
async fn a_second_bad_plan_fails_with_a_clear_error() {
    setup();
    let server = Server::start(vec![
        text("I cannot produce JSON today."),
        text(&plan_json(&[("1", "First"), ("3", "Skipped a number")])),
        text(&plan_json(&[("1", "Never asked for")])),
    ])
    .await;
    let err = server
        .agent(limits())
        .plan(&plan_request("Do the thing."))
        .await
        .unwrap_err();
    let AgentError::Plan(message) = &err else {
        panic!("expected a plan error, got {err:?}");
    };
    assert!(
        message.contains("gave no usable plan in 2 attempts"),
        "{message}"
    );
    assert!(
        message.contains("the last problem: step 3 is out of order: expected step 2"),
        "{message}"
    );
    assert_eq!(server.seen().len(), 2, "re-prompted more than once");
}

#[tokio::test]
async fn a_server_without_structured_output_is_asked_again_without_it() {
    setup();
    let rejection = Answer::Json(
        StatusCode::BAD_REQUEST,
        json!({"error": {"message": "response_format json_schema is not supported", "type": "invalid_request_error"}}),
    );
    let server = Server::start(vec![
        rejection,
        text(&plan_json(&[("1", "A")])),
        text(&plan_json(&[("1", "B")])),
    ])
    .await;
    let agent = server.agent(limits());
    assert_eq!(
        numbers(&agent.plan(&plan_request("One.")).await.unwrap()),
        ["1"]
    );
    // Remembered: the next plan does not try structured output again.
    assert_eq!(
        agent.plan(&plan_request("Two.")).await.unwrap().steps()[0].title,
        "B"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[0].body.get("response_format").is_some());
    assert!(seen[1].body.get("response_format").is_none());
    assert!(seen[2].body.get("response_format").is_none());
    // The prompt alone still asks for the JSON.
    assert!(
        seen[1].body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("Answer with only a JSON object")
    );
}

// ---------------------------------------------------------------------------------------------
// Steps

#[tokio::test]
async fn a_step_writes_and_edits_files_then_finishes() {
    setup();
    let tree = worktree();
    let server = Server::start(vec![
        calls("a", &[("read_file", json!({"path": "src/lib.rs"}))]),
        calls(
            "b",
            &[
                (
                    "edit_file",
                    json!({"path": "src/lib.rs", "old_str": "pub fn old_name()", "new_str": "pub fn new_name()"}),
                ),
                (
                    "write_file",
                    json!({"path": "docs/naming.md", "content": "# Naming\n\nnew_name, not old_name.\n"}),
                ),
            ],
        ),
        calls("c", &[("list_files", json!({}))]),
        finish("Renamed old_name to new_name and documented it\n(extra line)"),
    ])
    .await;
    let outcome = server
        .agent(limits())
        .execute(
            &task("Rename the function and write docs/naming.md."),
            tree.path(),
        )
        .await
        .unwrap();

    assert_eq!(
        read(tree.path(), "src/lib.rs"),
        "pub fn new_name() -> u32 {\n    1\n}\n"
    );
    assert_eq!(
        read(tree.path(), "docs/naming.md"),
        "# Naming\n\nnew_name, not old_name.\n"
    );
    assert_eq!(
        outcome.summary,
        "Renamed old_name to new_name and documented it"
    );
    for expected in [
        "[turn 1] → read_file {\"path\":\"src/lib.rs\"}",
        "[turn 2] → edit_file",
        "[turn 2] ← edited `src/lib.rs`",
        "[turn 2] ← created `docs/naming.md`",
        "[turn 4] finished:\nRenamed old_name to new_name and documented it\n(extra line)",
    ] {
        assert!(
            outcome.log.contains(expected),
            "{expected} not in\n{}",
            outcome.log
        );
    }

    let seen = server.seen();
    assert_eq!(seen.len(), 4);
    // The tools offered, the step's prompt, and each answer sent back by call id.
    let tools: Vec<&str> = seen[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tools,
        [
            "read_file",
            "write_file",
            "edit_file",
            "list_files",
            "search",
            "run_command",
            "finish"
        ]
    );
    let prompt = seen[0].body["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("# Your step: 2.1. Rename the helper"));
    assert!(prompt.contains("Rename old_name to new_name everywhere."));
    assert_eq!(
        answer_to(&seen, "call_a_0"),
        "pub fn old_name() -> u32 {\n    1\n}\n"
    );
    let second = seen[2].body["messages"].as_array().unwrap();
    let echoed = second
        .iter()
        .find(|m| m["role"] == "assistant" && m["tool_calls"][0]["id"] == "call_b_0")
        .expect("the assistant's calls are sent back");
    assert_eq!(echoed["tool_calls"][1]["function"]["name"], "write_file");
    assert!(
        answer_to(&seen, "call_b_0")
            .starts_with("edited `src/lib.rs`: replaced 1 line(s) at line 1")
    );
    assert_eq!(
        answer_to(&seen, "call_b_1"),
        "created `docs/naming.md` (34 bytes)"
    );
    assert_eq!(
        answer_to(&seen, "call_c_0"),
        "docs/\ndocs/naming.md\nsrc/\nsrc/lib.rs"
    );
}

#[tokio::test]
async fn an_edit_whose_old_str_is_missing_or_repeated_is_refused_to_the_model() {
    setup();
    let tree = worktree();
    std::fs::write(tree.path().join("notes.txt"), "todo\ndone\ntodo\n").unwrap();
    let server = Server::start(vec![
        calls(
            "a",
            &[
                (
                    "edit_file",
                    json!({"path": "notes.txt", "old_str": "todo", "new_str": "x"}),
                ),
                (
                    "edit_file",
                    json!({"path": "notes.txt", "old_str": "missing", "new_str": "x"}),
                ),
                (
                    "edit_file",
                    json!({"path": "notes.txt", "old_str": "", "new_str": "x"}),
                ),
            ],
        ),
        calls(
            "b",
            &[(
                "edit_file",
                json!({"path": "notes.txt", "old_str": "todo\ndone", "new_str": "did"}),
            )],
        ),
        finish("Edited notes"),
    ])
    .await;
    server
        .agent(limits())
        .execute(&task("Edit the notes."), tree.path())
        .await
        .unwrap();
    let seen = server.seen();
    let twice = answer_to(&seen, "call_a_0");
    assert!(
        twice.starts_with("error: old_str occurs 2 times in `notes.txt`: nothing was changed"),
        "{twice}"
    );
    let missing = answer_to(&seen, "call_a_1");
    assert!(
        missing.starts_with("error: old_str does not occur in `notes.txt`"),
        "{missing}"
    );
    assert!(answer_to(&seen, "call_a_2").starts_with("error: old_str is empty"));
    // The errors reached the model in the very next request.
    assert_eq!(tool_answers(&seen[1]).len(), 3);
    assert_eq!(read(tree.path(), "notes.txt"), "did\ntodo\n");
}

#[tokio::test]
async fn paths_leading_outside_the_working_tree_are_refused() {
    setup();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "outside secret").unwrap();
    let tree = worktree();
    std::os::unix::fs::symlink(outside.path(), tree.path().join("out")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        tree.path().join("src/link.txt"),
    )
    .unwrap();
    let server = Server::start(vec![
        calls(
            "a",
            &[
                ("read_file", json!({"path": "../secret.txt"})),
                ("read_file", json!({"path": "/etc/passwd"})),
                ("read_file", json!({"path": "out/secret.txt"})),
                ("read_file", json!({"path": "src/link.txt"})),
                ("write_file", json!({"path": "out/new.txt", "content": "x"})),
                (
                    "edit_file",
                    json!({"path": "src/link.txt", "old_str": "outside", "new_str": "x"}),
                ),
                (
                    "write_file",
                    json!({"path": "src/../../escape.txt", "content": "x"}),
                ),
                ("list_files", json!({"path": "out"})),
                ("search", json!({"pattern": "secret", "path": "out"})),
                (
                    "write_file",
                    json!({"path": ".git/hooks/post-checkout", "content": "x"}),
                ),
            ],
        ),
        finish("Tried"),
    ])
    .await;
    server
        .agent(limits())
        .execute(&task("Look around."), tree.path())
        .await
        .unwrap();
    let seen = server.seen();
    let expect = [
        (
            "call_a_0",
            "error: `../secret.txt` leads outside the working tree",
        ),
        ("call_a_1", "error: `/etc/passwd` is an absolute path"),
        (
            "call_a_2",
            "error: `out/secret.txt` goes through a symbolic link that leads outside",
        ),
        (
            "call_a_3",
            "error: `src/link.txt` goes through a symbolic link that leads outside",
        ),
        (
            "call_a_4",
            "error: `out/new.txt` goes through a symbolic link that leads outside",
        ),
        (
            "call_a_5",
            "error: `src/link.txt` goes through a symbolic link that leads outside",
        ),
        (
            "call_a_6",
            "error: `src/../../escape.txt` leads outside the working tree",
        ),
        (
            "call_a_7",
            "error: `out` goes through a symbolic link that leads outside",
        ),
        (
            "call_a_8",
            "error: `out` goes through a symbolic link that leads outside",
        ),
        (
            "call_a_9",
            "error: `.git/hooks/post-checkout` is inside a .git directory",
        ),
    ];
    for (id, start) in expect {
        let answer = answer_to(&seen, id);
        assert!(answer.starts_with(start), "{id}: {answer}");
        assert!(!answer.contains("outside secret"), "{id}: {answer}");
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).unwrap(),
        "outside secret"
    );
    assert!(!outside.path().join("new.txt").exists());
    assert!(!tree.path().parent().unwrap().join("escape.txt").exists());
    assert!(!tree.path().join(".git/hooks").exists());
}

#[tokio::test]
async fn run_command_runs_in_the_tree_with_a_scrubbed_environment() {
    setup();
    let tree = worktree();
    let server = Server::start(vec![
        calls(
            "a",
            &[
                (
                    "run_command",
                    json!({"command": "pwd; env; echo made > made.txt"}),
                ),
                (
                    "run_command",
                    json!({"command": "echo failing >&2; exit 3"}),
                ),
            ],
        ),
        finish("Ran commands"),
    ])
    .await;
    server
        .agent(limits())
        .execute(&task("Run things."), tree.path())
        .await
        .unwrap();
    let seen = server.seen();
    let answer = answer_to(&seen, "call_a_0");
    let root = tree.path().canonicalize().unwrap();
    assert!(
        answer.starts_with(&format!(
            "the command exited with status 0; output:\n{}\n",
            root.display()
        )),
        "{answer}"
    );
    assert!(answer.contains("TERM=dumb"), "{answer}");
    for (name, value) in SECRETS {
        assert!(std::env::var(name).is_ok());
        assert!(!answer.contains(name), "{name} visible:\n{answer}");
        assert!(!answer.contains(value), "{name}'s value visible:\n{answer}");
    }
    assert!(!answer.contains(KEY));
    assert!(!answer.contains("CARGO_"));
    assert_eq!(read(tree.path(), "made.txt"), "made\n");
    assert_eq!(
        answer_to(&seen, "call_a_1"),
        "the command exited with status 3; output:\nfailing\n"
    );
}

#[tokio::test]
async fn malformed_calls_are_answered_and_the_model_corrects_itself() {
    setup();
    let tree = worktree();
    let broken = Answer::Json(
        StatusCode::OK,
        json!({"choices": [{"message": {"role": "assistant", "tool_calls": [
            {"id": "bad_json", "type": "function", "function": {"name": "write_file", "arguments": "{\"path\": \"a.txt\", "}},
            {"id": "unknown", "type": "function", "function": {"name": "delete_everything", "arguments": "{}"}},
            {"id": "missing", "type": "function", "function": {"name": "write_file", "arguments": "{\"path\": \"a.txt\"}"}}
        ]}}]}),
    );
    // The minimal shape some servers send: no id, created or finish_reason, arguments as an
    // object, no call id.
    let fixed = Answer::Json(
        StatusCode::OK,
        json!({"choices": [{"message": {"role": "assistant", "content": "Fixing my call.", "tool_calls": [
            {"function": {"name": "write_file", "arguments": {"path": "a.txt", "content": "ok\n"}}}
        ]}}]}),
    );
    let server = Server::start(vec![broken, fixed, finish("Wrote a.txt")]).await;
    let outcome = server
        .agent(limits())
        .with_max_turns(3)
        .execute(&task("Write a.txt."), tree.path())
        .await
        .unwrap();
    assert_eq!(read(tree.path(), "a.txt"), "ok\n");
    assert_eq!(outcome.summary, "Wrote a.txt");
    let seen = server.seen();
    assert!(
        answer_to(&seen, "bad_json")
            .starts_with("error: the arguments of write_file are not valid")
    );
    let unknown = answer_to(&seen, "unknown");
    assert!(
        unknown.starts_with(
            "error: there is no tool named `delete_everything`; the tools are read_file, write_file"
        ),
        "{unknown}"
    );
    assert!(answer_to(&seen, "missing").contains("missing field `content`"));
    assert_eq!(answer_to(&seen, "call_2_0"), "created `a.txt` (3 bytes)");
    assert!(outcome.log.contains("[turn 2] assistant: Fixing my call."));
}

#[tokio::test]
async fn a_reply_without_a_tool_call_gets_a_nudge() {
    setup();
    let tree = worktree();
    let server = Server::start(vec![
        text("I think I am done."),
        completion(json!({"role": "assistant", "content": null})),
        finish("Nothing to change"),
    ])
    .await;
    let outcome = server
        .agent(limits())
        .execute(&task("Check."), tree.path())
        .await
        .unwrap();
    assert_eq!(outcome.summary, "Nothing to change");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let messages = seen[1].body["messages"].as_array().unwrap();
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["content"], "I think I am done.");
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "user");
    assert!(last["content"].as_str().unwrap().contains("call `finish`"));
    // An empty reply is not sent back as an (invalid) empty assistant message; the nudge is.
    let messages = seen[2].body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "user"]);
    assert!(
        outcome.log.contains("[turn 2] (no tool call) →"),
        "{}",
        outcome.log
    );
}

#[tokio::test]
async fn a_runaway_loop_is_cut_by_the_turn_bound() {
    setup();
    let tree = worktree();
    let server = Server::start(vec![]).await;
    server.repeat(calls("loop", &[("list_files", json!({"path": "src"}))]));
    let err = server
        .agent(limits())
        .with_max_turns(6)
        .execute(&task("Loop forever."), tree.path())
        .await
        .unwrap_err();
    let AgentError::StepFailed { message, log, .. } = &err else {
        panic!("expected a failed step, got {err:?}");
    };
    assert!(
        message.starts_with("step 2.1 did not finish within 6 turns of the model"),
        "{message}"
    );
    assert!(message.contains("[turn 6] → list_files"), "{message}");
    assert!(
        log.contains("[turn 1] → list_files {\"path\":\"src\"}"),
        "{log}"
    );
    assert!(log.contains("[turn 6] ← src/lib.rs"), "{log}");
    assert_eq!(server.seen().len(), 6);
}

#[tokio::test]
async fn the_default_turn_bound_is_forty() {
    setup();
    let tree = worktree();
    let server = Server::start(vec![]).await;
    server.repeat(calls(
        "loop",
        &[("read_file", json!({"path": "src/lib.rs"}))],
    ));
    let err = server
        .agent(limits())
        .execute(&task("Loop forever."), tree.path())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("within 40 turns"), "{err}");
    assert_eq!(server.seen().len(), 40);
}

#[tokio::test]
async fn a_model_that_never_answers_times_the_step_out() {
    setup();
    let tree = worktree();
    let server = Server::start(vec![
        calls(
            "a",
            &[("write_file", json!({"path": "partial.txt", "content": "x"}))],
        ),
        Answer::Hang,
    ])
    .await;
    let limits = Limits {
        step_timeout: Duration::from_millis(300),
        ..limits()
    };
    let err = server
        .agent(limits)
        .execute(&task("Hang."), tree.path())
        .await
        .unwrap_err();
    let AgentError::TimedOut {
        step, after, log, ..
    } = &err
    else {
        panic!("expected a timeout, got {err:?}");
    };
    assert_eq!(step.to_string(), "2.1");
    assert_eq!(*after, Duration::from_millis(300));
    assert!(log.contains("[turn 1] ← created `partial.txt`"), "{log}");
    assert!(err.to_string().contains("ran out of time after 300ms"));
}

#[tokio::test]
async fn a_command_that_outlives_the_step_times_it_out() {
    setup();
    let tree = worktree();
    let server = Server::start(vec![calls(
        "a",
        &[("run_command", json!({"command": "echo started; sleep 30"}))],
    )])
    .await;
    let limits = Limits {
        step_timeout: Duration::from_millis(500),
        ..limits()
    };
    let err = server
        .agent(limits)
        .execute(&task("Sleep."), tree.path())
        .await
        .unwrap_err();
    let AgentError::TimedOut { log, .. } = &err else {
        panic!("expected a timeout, got {err:?}");
    };
    // The sandbox stopped the command (it would otherwise have exited after 30 s with
    // status 0), and its output so far is in the log.
    // (It had what was left of the step's 500 ms.)
    assert!(
        log.contains("[turn 1] ←\nthe command ran out of time after "),
        "{log}"
    );
    assert!(
        log.contains("ms and was stopped; output:\nstarted\n"),
        "{log}"
    );
}

#[tokio::test]
async fn an_overloaded_endpoint_is_retried() {
    setup();
    let tree = worktree();
    let busy = Answer::Json(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"error": {"message": "rate limited", "type": "rate_limit_error"}}),
    );
    let server = Server::start(vec![busy.clone(), busy, finish("Done")]).await;
    let outcome = server
        .agent(limits())
        .execute(&task("Retry."), tree.path())
        .await
        .unwrap();
    assert_eq!(outcome.summary, "Done");
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test]
async fn a_failing_endpoint_fails_the_step_with_its_message() {
    setup();
    let tree = worktree();
    let server = Server::start(vec![Answer::Json(
        StatusCode::NOT_FOUND,
        json!({"error": {"message": "model `test-model` not found", "type": "invalid_request_error"}}),
    )])
    .await;
    let err = server
        .agent(limits())
        .execute(&task("Fail."), tree.path())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::StepFailed { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("step 2.1: the model endpoint failed: 404 Not Found invalid_request_error: model `test-model` not found"),
        "{err}"
    );
    assert_eq!(server.seen().len(), 1, "a 404 is not retried");

    // An endpoint nobody listens on: the step fails saying why.
    // Bound but not listening: refused, and no other test can take the port meanwhile.
    let closed = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    closed
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = closed.local_addr().unwrap().as_socket().unwrap();
    let err = OpenAiAgent::new(&format!("http://{addr}/v1"), None, "m", limits())
        .unwrap()
        .execute(&task("Fail."), tree.path())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("step 2.1: the model endpoint failed: error sending request"),
        "{message}"
    );
    assert!(message.contains("Connection refused"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// The key

#[tokio::test]
async fn the_key_never_appears_in_errors_logs_or_debug_output() {
    setup();
    let tree = worktree();
    let server = Server::start(vec![]).await;
    server.repeat(Answer::EchoAuthorization);
    let agent = server.agent(limits());
    assert!(!format!("{agent:?}").contains(KEY));

    let err = agent
        .execute(&task("Anything."), tree.path())
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?} {}", err.log().unwrap_or_default());
    assert!(!shown.contains(KEY), "{shown}");
    assert!(
        shown.contains("invalid credentials: Bearer [redacted]"),
        "{shown}"
    );

    let err = agent.plan(&plan_request("Plan it.")).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("401 Unauthorized"), "{shown}");
    // The key did go to the endpoint, where it belongs.
    assert!(
        server
            .seen()
            .iter()
            .all(|s| s.authorization.as_deref() == Some(&*format!("Bearer {KEY}")))
    );
}

#[test]
fn a_key_that_cannot_be_a_header_is_refused_at_startup() {
    setup();
    let base = "http://127.0.0.1:9/v1";
    let key = |k: &str| Some(SecretString::from(k.to_string()));
    let err = OpenAiAgent::new(base, key("sk-abc\ndef"), "m", limits()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("cannot be sent in an HTTP header"),
        "{message}"
    );
    assert!(!message.contains("sk-abc"), "{message}");
    assert!(OpenAiAgent::new(base, key("sk-é"), "m", limits()).is_err());
    // Surrounding whitespace (a trailing newline from a file) is trimmed, not refused.
    assert!(OpenAiAgent::new(base, key(" sk-abc\n"), "m", limits()).is_ok());
}

#[tokio::test]
async fn without_a_configured_key_none_is_taken_from_the_environment() {
    setup();
    let server = Server::start(vec![text(&plan_json(&[("1", "A")]))]).await;
    let agent = OpenAiAgent::new(&server.base, None, "local-model", limits()).unwrap();
    agent.plan(&plan_request("Do it.")).await.unwrap();
    let seen = server.seen();
    let authorization = seen[0].authorization.clone().unwrap_or_default();
    assert!(
        !authorization.contains("sk-leaked-from-the-environment"),
        "{authorization}"
    );
    assert_eq!(seen[0].body["model"], "local-model");
}

// ---------------------------------------------------------------------------------------------
// Usage

/// A step's usage is the sum of what the endpoint counted for each of its answers (answers
/// without a count add nothing), and its commands' CPU time; a failed step reports what it
/// used too; a step none of whose answers had a count has unknown tokens.
#[tokio::test]
async fn a_step_reports_the_tokens_the_endpoint_counted_and_its_commands_cpu() {
    setup();
    let tree = worktree();
    let busy = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo busy";
    let server = Server::start(vec![
        counted(
            calls("c", &[("run_command", json!({ "command": busy }))]),
            Some((120, 30)),
        ),
        counted(calls("l", &[("list_files", json!({"path": "src"}))]), None),
        counted(finish("Ran it"), Some((80, 20))),
    ])
    .await;
    let outcome = server
        .agent(limits())
        .execute(&task("Run it."), tree.path())
        .await
        .unwrap();
    assert_eq!(outcome.usage.prompt_tokens, Some(200));
    assert_eq!(outcome.usage.completion_tokens, Some(50));
    assert!(outcome.usage.agent_cpu_ms > 0, "{:?}", outcome.usage);
    assert_eq!(outcome.usage.wall_ms, 0, "the wall time is the engine's");

    // Cut by the turn bound: what the turns used is still reported.
    let server = Server::start(vec![]).await;
    server.repeat(counted(
        calls("loop", &[("list_files", json!({"path": "src"}))]),
        Some((7, 3)),
    ));
    let err = server
        .agent(limits())
        .with_max_turns(4)
        .execute(&task("Loop forever."), tree.path())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::StepFailed { .. }), "{err:?}");
    assert_eq!(err.usage().prompt_tokens, Some(28));
    assert_eq!(err.usage().completion_tokens, Some(12));

    // A server that never counts: the tokens are unknown, not zero.
    let server = Server::start(vec![counted(finish("Nothing to do"), None)]).await;
    let outcome = server
        .agent(limits())
        .execute(&task("Nothing."), tree.path())
        .await
        .unwrap();
    assert_eq!(
        (outcome.usage.prompt_tokens, outcome.usage.completion_tokens),
        (None, None)
    );
}

/// Planning by the model reports the tokens of every answer, the rejected one included; a
/// plan read from the template layout asked no model and reports nothing.
#[tokio::test]
async fn planning_reports_what_the_model_counted() {
    setup();
    let good = plan_json(&[("1", "Rename the helper")]);
    let server = Server::start(vec![
        counted(text("not json"), Some((300, 20))),
        counted(text(&good), Some((350, 30))),
    ])
    .await;
    let agent = server.agent(limits());
    let (plan, usage) = agent
        .plan_measured(&plan_request("Rename old_name to new_name."))
        .await;
    assert_eq!(numbers(&plan.unwrap()), ["1"]);
    let usage = usage.expect("a model was asked");
    assert_eq!(usage.prompt_tokens, Some(650));
    assert_eq!(usage.completion_tokens, Some(50));

    let (plan, usage) = agent
        .plan_measured(&plan_request(
            "Rename.\n\n## Execution Steps\n### Step 1: Rename\nDo it.\n",
        ))
        .await;
    assert!(plan.is_ok());
    assert_eq!(usage, None);
    assert_eq!(server.seen().len(), 2, "the template layout asks no model");
}
