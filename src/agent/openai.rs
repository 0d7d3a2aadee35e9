//! The `openai` agent: any OpenAI-compatible chat-completions endpoint (OpenAI, Ollama, vLLM,
//! llama.cpp server, LM Studio, …) plans runbooks and carries out their steps (SPEC §7).
//!
//! Configuration: `OPENAI_BASE_URL` is the API root up to and including its version segment
//! (`https://api.openai.com/v1`, `http://localhost:11434/v1`); requests go to
//! `{base}/chat/completions`. `OPENAI_API_KEY` is optional (local servers need none) and is
//! sent only as the `Authorization` header to that endpoint. `RUNBOOKS_MODEL` names the model.
//!
//! # Planning
//!
//! A prompt already in the template layout ([`super::template`]) is parsed as written, without
//! asking the model: its author wrote the plan, and a model would only reword, renumber or
//! drop steps (and cost time and tokens). A prompt in the layout with a mistake is rejected
//! with the parser's message, naming the line, exactly as with the `script` agent.
//!
//! Any other prompt goes to the model, which answers with JSON:
//! `{"steps": [{"number": "1", "title": "…", "details": "…"}, …]}`. The schema is sent as
//! `response_format: json_schema` (structured output) *and* described in the prompt, so that
//! servers without structured output still get it right; a server that rejects the
//! `response_format` field (HTTP 400) is asked again without it, and this agent stops sending
//! it. The answer is checked with [`Plan::continuing`]; an answer that is not JSON or not a
//! valid plan is sent back once with the problem, and a second bad answer fails the plan
//! with that problem ([`AgentError::Plan`]). Planning as a whole is bounded by the step
//! timeout ([`Limits::step_timeout`]).
//!
//! # Steps
//!
//! A bounded tool-calling loop ([`super::tools`]): the model gets the step's prompt
//! ([`StepTask::prompt`]) and the tools, calls them, reads their answers, and ends with
//! `finish {summary}`. Bounds: [`MAX_TURNS`] model replies (each reply is a turn, whatever it
//! holds: tool calls, malformed calls, or plain text), [`MAX_CALLS_PER_TURN`] tool calls per
//! reply, the step timeout ([`Limits::step_timeout`]) over everything, and the tools' own
//! output bounds. A malformed call (arguments that are not JSON, an unknown tool, a refused
//! path) is answered with an error the model sees, so it can correct itself. Running out of
//! turns fails the step ([`AgentError::StepFailed`]), running out of time times it out
//! ([`AgentError::TimedOut`]); both carry the transcript's tail.
//!
//! The transcript (the model's messages, every tool call and every answer, each entry cut to
//! [`TRANSCRIPT_ENTRY_CAP`]) is the step's log, bounded by [`Limits::output_cap`].
//!
//! # The endpoint
//!
//! Answers are read leniently (only the message is needed), so servers that leave out
//! OpenAI's bookkeeping fields or send tool arguments as an object work too. Rate limits,
//! server errors and connection failures are retried by `async-openai`'s client (three
//! times, with backoff and `Retry-After`), within the step's deadline; any other error, or
//! one that persists, fails the step (or the plan) with the endpoint's message.
//!
//! # Secrets
//!
//! The API key lives in a [`SecretString`] inside the HTTP client's configuration; it is
//! never put in a message, a log line or an error. Error text that comes back from the
//! endpoint is scrubbed of it anyway (a misconfigured proxy may echo the request), and so is
//! the transcript. Tools run through the sandbox, whose environment never holds it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestToolMessage, ChatCompletionRequestUserMessage, ChatCompletionTool,
    ChatCompletionTools, CreateChatCompletionRequest, FunctionCall, FunctionObject, ResponseFormat,
    ResponseFormatJsonSchema,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use super::AgentConfig;
use super::planning::{
    self, PLAN_ATTEMPTS, REJECTED_ANSWER_CAP, parse_plan_answer, planner_instructions,
    planning_prompt,
};
use super::script::check_worktree;
use super::tools::{self, COMMAND_TIMEOUT, ToolCall, ToolError};
use super::{Agent, AgentError, Limits, PlanRequest, StepOutcome, StepTask, keep_tail, short_tail};
use crate::domain::{Plan, Usage};

/// Model replies one step may take. Forty is generous for one commit's worth of work (read a
/// few files, edit, build, fix, test, finish) and stops a model that goes in circles before it
/// burns much time or money. Change it with [`OpenAiAgent::with_max_turns`].
pub const MAX_TURNS: u32 = 40;

/// Tool calls run from one reply; the rest are answered with an error. Models that call
/// tools in parallel rarely need more, and a runaway reply cannot queue thousands.
pub const MAX_CALLS_PER_TURN: usize = 16;

/// Bytes kept of each transcript entry (the head: what the model said or asked for first).
pub const TRANSCRIPT_ENTRY_CAP: usize = 2000;

/// Bytes of an endpoint's error text put in a message.
const ERROR_TEXT_CAP: usize = 600;

/// Lines and bytes of the transcript quoted in a failure message; the log keeps more.
const MESSAGE_TAIL_LINES: usize = 12;
const MESSAGE_TAIL_BYTES: usize = 2000;

/// Plans with, and executes steps through, an OpenAI-compatible chat-completions endpoint.
#[derive(Debug)]
pub struct OpenAiAgent {
    client: Client<OpenAIConfig>,
    model: String,
    limits: Limits,
    max_turns: u32,
    redactor: Redactor,
    /// Whether to send `response_format: json_schema` when planning; cleared for good the
    /// first time the endpoint rejects it.
    structured_output: AtomicBool,
}

impl OpenAiAgent {
    /// An agent talking to `base_url` (up to and including `/v1`) with `model`.
    ///
    /// Every setting of the HTTP client is given explicitly: `async-openai`'s defaults read
    /// `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID` from the
    /// environment, and this agent must use the configuration it was given, nothing else.
    ///
    /// The key is checked here because `async-openai` builds the `Authorization` header with
    /// an `unwrap()`: a key with a stray newline (pasted from a file) would panic on every
    /// request instead of failing once, at startup, with a message.
    pub fn new(
        base_url: &str,
        api_key: Option<SecretString>,
        model: impl Into<String>,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let api_key = api_key
            .map(|key| key.expose_secret().trim().to_string())
            .filter(|key| !key.is_empty());
        if let Some(key) = &api_key
            && !key.chars().all(|c| c == '\t' || (' '..='~').contains(&c))
        {
            anyhow::bail!(
                "OPENAI_API_KEY contains characters that cannot be sent in an HTTP header \
                 (a line break or non-ASCII text?): check how it was set"
            );
        }
        let config = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/'))
            .with_api_key(api_key.clone().unwrap_or_default())
            .with_org_id("")
            .with_project_id("");
        Ok(Self {
            client: Client::with_config(config),
            model: model.into(),
            limits,
            max_turns: MAX_TURNS,
            redactor: Redactor(api_key.map(SecretString::from)),
            structured_output: AtomicBool::new(true),
        })
    }

    /// The agent `RUNBOOKS_AGENT=openai` asks for.
    pub fn from_config(config: &AgentConfig, limits: Limits) -> anyhow::Result<Self> {
        let base_url = config
            .openai_base_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the openai agent needs OPENAI_BASE_URL, the API root up to and including \
                     /v1 (e.g. https://api.openai.com/v1 or http://localhost:11434/v1)"
                )
            })?;
        let model = config
            .model
            .as_deref()
            .map(str::trim)
            .filter(|model| !model.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("the openai agent needs RUNBOOKS_MODEL, the model name")
            })?;
        Self::new(base_url, config.openai_api_key.clone(), model, limits)
    }

    /// Sets the number of model replies a step may take (at least 1).
    pub fn with_max_turns(mut self, turns: u32) -> Self {
        self.max_turns = turns.max(1);
        self
    }
}

#[async_trait::async_trait]
impl Agent for OpenAiAgent {
    async fn plan(&self, request: &PlanRequest) -> Result<Plan, AgentError> {
        self.plan_measured(request).await.0
    }

    async fn plan_measured(
        &self,
        request: &PlanRequest,
    ) -> (Result<Plan, AgentError>, Option<Usage>) {
        // A prompt in the template layout is the plan already. `parse_plan` turns any other
        // prompt into one step whose details are the whole prompt: that is how a plain prompt
        // is recognised, and only those go to the model.
        planning::unless_written(request, || async {
            let mut usage = Usage::default();
            let span = tracing::info_span!("openai_plan", model = %self.model);
            let result = self
                .plan_with_model(request, &mut usage)
                .instrument(span)
                .await;
            (result, usage)
        })
        .await
    }

    async fn execute(&self, task: &StepTask, worktree: &Path) -> Result<StepOutcome, AgentError> {
        let span = tracing::info_span!("openai_step", runbook = task.runbook, step = %task.number);
        self.run_step(task, worktree).instrument(span).await
    }
}

// ---------------------------------------------------------------------------------------------
// Planning

/// The JSON schema of a plan answer (also what [`parse_plan_answer`] accepts, more leniently).
fn plan_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "number": {
                            "type": "string",
                            "description": "Dotted step number: \"1\", \"2\", \"2.1\", \"2.1.1\"."
                        },
                        "title": {"type": "string", "description": "One short line."},
                        "details": {"type": "string", "description": "What exactly to do."}
                    },
                    "required": ["number", "title", "details"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["steps"],
        "additionalProperties": false
    })
}

impl OpenAiAgent {
    /// Plans with the model; the tokens of its answers are added to `usage`.
    async fn plan_with_model(
        &self,
        request: &PlanRequest,
        usage: &mut Usage,
    ) -> Result<Plan, AgentError> {
        let deadline = Instant::now() + self.limits.step_timeout;
        let mut messages = vec![
            system(planner_instructions(request.after)),
            user(planning_prompt(request)),
        ];
        let mut problem = String::new();
        for attempt in 1..=PLAN_ATTEMPTS {
            let answer = self.plan_answer(&messages, deadline, usage).await?;
            match parse_plan_answer(&answer, request.after) {
                Ok(plan) => {
                    tracing::info!(attempt, steps = plan.steps().len(), "the model planned");
                    return Ok(plan);
                }
                Err(err) => {
                    tracing::info!(attempt, problem = %err, "the model's plan was rejected");
                    let answer = if answer.trim().is_empty() {
                        "(an empty answer)".to_string()
                    } else {
                        tools::cap_head(answer, REJECTED_ANSWER_CAP)
                    };
                    messages.push(assistant_text(answer));
                    messages.push(user(format!(
                        "That answer could not be used: {err}.\nAnswer again with only the JSON \
                         object described above, with this fixed."
                    )));
                    problem = err;
                }
            }
        }
        Err(AgentError::Plan(format!(
            "the model ({}) gave no usable plan in {PLAN_ATTEMPTS} attempts; the last problem: \
             {problem}. Rephrase the prompt, or write the steps in the template layout \
             (`### Step 1: …`)",
            self.model
        )))
    }

    /// One answer of the model to the planning conversation, as text.
    async fn plan_answer(
        &self,
        messages: &[ChatCompletionRequestMessage],
        deadline: Instant,
        usage: &mut Usage,
    ) -> Result<String, AgentError> {
        let structured = self.structured_output.load(Ordering::Relaxed);
        let mut request = self.request(messages.to_vec(), None);
        if structured {
            request.response_format = Some(ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    name: "runbook_plan".into(),
                    description: Some("The steps of the plan, in order.".into()),
                    schema: plan_schema(),
                    strict: Some(true),
                },
            });
        }
        let reply = match self.chat(&request, deadline, usage).await {
            Err(CallError::Rejected(message)) if structured => {
                // Structured output is an extension many compatible servers lack; the prompt
                // describes the format too, so ask again without it.
                tracing::warn!(
                    error = %message,
                    "the endpoint rejected response_format; planning without structured output"
                );
                self.structured_output.store(false, Ordering::Relaxed);
                request.response_format = None;
                self.chat(&request, deadline, usage).await
            }
            other => other,
        };
        let message = reply.map_err(|err| match err {
            CallError::TimedOut => AgentError::Plan(format!(
                "the model did not answer within {}",
                humantime::format_duration(self.limits.step_timeout)
            )),
            CallError::Failed(message) | CallError::Rejected(message) => {
                AgentError::Plan(format!("the model endpoint failed: {message}"))
            }
        })?;
        match (message.text(), &message.refusal) {
            (Some(text), _) => Ok(text),
            (None, Some(refusal)) => Ok(format!("(the model refused: {refusal})")),
            (None, None) => Ok(String::new()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Steps

fn step_instructions(max_turns: u32, limits: &Limits) -> String {
    format!(
        "You are a coding agent carrying out one step of a runbook in a git working tree. \
         Work with the tools: paths are relative to the root of the working tree, and commands \
         run there. Look before you change: read the files you edit. Keep changes to what the \
         step asks. When it is cheap, check your work (build, test, lint) with run_command and \
         fix what fails. When the step is done, call `finish` with a one-line summary of what \
         changed.\n\n\
         You have at most {max_turns} replies and {} in total; every reply should call a tool. \
         Never commit, push or switch branches: each step's changes are committed for you.",
        humantime::format_duration(limits.step_timeout)
    )
}

/// What a step's conversation is kept as, for its log and its error messages.
struct Transcript {
    text: String,
    cap: usize,
}

impl Transcript {
    fn new(cap: usize) -> Self {
        Self {
            text: String::new(),
            cap,
        }
    }

    /// Adds an entry, cut to [`TRANSCRIPT_ENTRY_CAP`]. The whole is trimmed to twice the
    /// log's cap as it grows (the log keeps the tail, so older text can go).
    fn push(&mut self, turn: u32, label: &str, body: &str) {
        let body = tools::cap_head(body.trim_end().to_string(), TRANSCRIPT_ENTRY_CAP);
        self.text.push_str(&format!("[turn {turn}] {label}"));
        if body.contains('\n') {
            self.text.push('\n');
        } else if !body.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(&body);
        self.text.push('\n');
        if self.text.len() > self.cap.saturating_mul(2).max(64 * 1024) {
            self.text = keep_tail(std::mem::take(&mut self.text), self.cap);
        }
    }

    fn finish(self, redactor: &Redactor) -> String {
        keep_tail(redactor.redact(&self.text), self.cap)
    }
}

impl OpenAiAgent {
    async fn run_step(&self, task: &StepTask, worktree: &Path) -> Result<StepOutcome, AgentError> {
        check_worktree(worktree)?;
        let root = worktree.canonicalize().map_err(AgentError::io(format!(
            "cannot use the working tree {}",
            worktree.display()
        )))?;
        let step = &task.number;
        let deadline = Instant::now() + self.limits.step_timeout;
        let mut transcript = Transcript::new(self.limits.output_cap);
        // Every answer's tokens and every command's CPU time, whatever the step's end.
        let mut usage = Usage::default();
        let mut messages = vec![
            system(step_instructions(self.max_turns, &self.limits)),
            user(task.prompt()),
        ];

        for turn in 1..=self.max_turns {
            if Instant::now() >= deadline {
                return Err(self.timed_out(task, transcript, usage));
            }
            let request = self.request(messages.clone(), Some(tool_definitions()));
            let message = match self.chat(&request, deadline, &mut usage).await {
                Ok(message) => message,
                Err(CallError::TimedOut) => return Err(self.timed_out(task, transcript, usage)),
                Err(CallError::Failed(err) | CallError::Rejected(err)) => {
                    transcript.push(turn, "endpoint error:", &err);
                    return Err(AgentError::StepFailed {
                        message: format!("step {step}: the model endpoint failed: {err}"),
                        log: transcript.finish(&self.redactor),
                        usage,
                    });
                }
            };
            let text = message.text();
            if let Some(text) = text.as_deref().filter(|t| !t.trim().is_empty()) {
                transcript.push(turn, "assistant:", text);
            }
            let calls = message.tool_calls(turn);
            tracing::debug!(turn, calls = calls.len(), "model replied");
            // A reply with neither text nor calls is not sent back: an assistant message
            // needs one or the other.
            let text = text.filter(|text| !text.is_empty());
            if text.is_some() || !calls.is_empty() {
                messages.push(assistant_with_calls(text, &calls));
            }

            if calls.is_empty() {
                // A reply without a tool call ends nothing: the step is done only when the
                // model says so with `finish`.
                let nudge = "Continue with the tools. If the step is done, call `finish` \
                             with a one-line summary.";
                transcript.push(turn, "(no tool call) →", nudge);
                messages.push(user(nudge.to_string()));
                continue;
            }

            for (i, call) in calls.iter().enumerate() {
                transcript.push(turn, &format!("→ {}", call.name), &call.arguments);
                if i >= MAX_CALLS_PER_TURN {
                    let answer = format!(
                        "error: not run: at most {MAX_CALLS_PER_TURN} tool calls are run per reply"
                    );
                    transcript.push(turn, "←", &answer);
                    messages.push(tool_answer(&call.id, answer));
                    continue;
                }
                let parsed = match &call.malformed {
                    Some(problem) => Err(ToolError(problem.clone())),
                    None => tools::parse_call(&call.name, &call.arguments),
                };
                let answer = match parsed {
                    Ok(ToolCall::Finish { summary }) => {
                        transcript.push(turn, "finished:", &summary);
                        return Ok(StepOutcome {
                            summary: one_line(&summary)
                                .unwrap_or_else(|| task.title.trim().to_string()),
                            log: transcript.finish(&self.redactor),
                            usage,
                        });
                    }
                    Ok(ToolCall::RunCommand { command }) => {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        let timeout = remaining.min(COMMAND_TIMEOUT);
                        let (result, cpu_ms) =
                            tools::run_command(&root, &command, timeout, &self.limits.jail).await;
                        usage.agent_cpu_ms = usage.agent_cpu_ms.saturating_add(cpu_ms);
                        if Instant::now() >= deadline {
                            transcript.push(turn, "←", &render(&result));
                            return Err(self.timed_out(task, transcript, usage));
                        }
                        result
                    }
                    Ok(file_call) => {
                        // File tools do blocking I/O: off the async threads, and always to the
                        // end (each is bounded), so that nothing still writes to the tree
                        // after this step has returned.
                        let root = root.clone();
                        tokio::task::spawn_blocking(move || tools::run_file_tool(&root, &file_call))
                            .await
                            .unwrap_or_else(|err| Err(ToolError(format!("the tool failed: {err}"))))
                    }
                    Err(err) => Err(err),
                };
                let answer = render(&answer);
                transcript.push(turn, "←", &answer);
                messages.push(tool_answer(&call.id, answer));
            }
        }

        let log = transcript.finish(&self.redactor);
        Err(AgentError::StepFailed {
            message: format!(
                "step {step} did not finish within {} turns of the model: split it into smaller \
                 steps or make its details more precise; the last turns:\n{}",
                self.max_turns,
                short_tail(&log, MESSAGE_TAIL_LINES, MESSAGE_TAIL_BYTES)
            ),
            log,
            usage,
        })
    }

    fn timed_out(&self, task: &StepTask, transcript: Transcript, usage: Usage) -> AgentError {
        AgentError::TimedOut {
            step: task.number.clone(),
            after: self.limits.step_timeout,
            log: transcript.finish(&self.redactor),
            usage,
        }
    }
}

/// A tool's answer as the model reads it: errors start with `error:`.
fn render(result: &Result<String, ToolError>) -> String {
    match result {
        Ok(answer) => answer.clone(),
        Err(err) => format!("error: {err}"),
    }
}

/// The first non-empty line of `text`, at most 200 characters.
fn one_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|line| !line.is_empty())?;
    let mut short: String = line.chars().take(200).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    Some(short)
}

fn tool_definitions() -> Vec<ChatCompletionTools> {
    tools::definitions()
        .into_iter()
        .map(|(name, description, parameters)| {
            ChatCompletionTools::Function(ChatCompletionTool {
                function: FunctionObject {
                    name: name.to_string(),
                    description: Some(description.to_string()),
                    parameters: Some(parameters),
                    strict: None,
                },
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The endpoint

/// A chat-completions answer, read leniently. `async-openai`'s own response type requires
/// fields and enum values that compatible servers do not all send (an `id`, `created`,
/// `finish_reason` values beyond OpenAI's, arguments as a string); this agent needs only the
/// message, so it reads only that (through the client's `*_byot` calls).
#[derive(Debug, Deserialize)]
struct ChatAnswer {
    #[serde(default)]
    choices: Vec<ChatChoice>,
    /// What the endpoint counted for this answer; some servers leave it out.
    #[serde(default)]
    usage: Option<AnswerUsage>,
}

/// The token counts of one answer. Read leniently: a server that sends something else in
/// their place (or nothing) only means the tokens are not known.
#[derive(Debug, Default, Deserialize)]
struct AnswerUsage {
    #[serde(default, deserialize_with = "lenient_count")]
    prompt_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient_count")]
    completion_tokens: Option<u64>,
}

impl AnswerUsage {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            ..Usage::default()
        }
    }
}

/// A count, or `None` for anything that is not a non-negative whole number.
fn lenient_count<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(deserializer)?.as_u64())
}

#[derive(Debug, Deserialize)]
struct ChatChoice {
    #[serde(default)]
    message: AnswerMessage,
}

#[derive(Debug, Default, Deserialize)]
struct AnswerMessage {
    /// A string, or (some servers) an array of `{"type": "text", "text": …}` parts.
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<AnswerToolCall>>,
}

#[derive(Debug, Deserialize)]
struct AnswerToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<AnswerFunction>,
}

#[derive(Debug, Deserialize)]
struct AnswerFunction {
    #[serde(default)]
    name: Option<String>,
    /// A JSON object in a string, as OpenAI sends it; some servers send the object itself.
    #[serde(default)]
    arguments: Option<Value>,
}

/// A tool call as this agent handles it: always with an id (made up when the server sent
/// none, as the next request must answer each call by id).
#[derive(Debug, Clone)]
struct Call {
    id: String,
    name: String,
    arguments: String,
    /// Why the call cannot be run at all (no function, no name), answered as a tool error.
    malformed: Option<String>,
}

impl AnswerMessage {
    fn text(&self) -> Option<String> {
        match self.content.as_ref()? {
            Value::String(text) => Some(text.clone()),
            Value::Array(parts) => Some(
                parts
                    .iter()
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
            ),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    fn tool_calls(&self, turn: u32) -> Vec<Call> {
        self.tool_calls
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, call)| {
                let id = call
                    .id
                    .clone()
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{turn}_{i}"));
                let function = call.function.as_ref();
                let name = function
                    .and_then(|f| f.name.clone())
                    .filter(|name| !name.is_empty());
                let arguments = match function.and_then(|f| f.arguments.as_ref()) {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                let malformed = name.is_none().then(|| {
                    format!(
                        "the tool call has no function name; call one of the tools: {}",
                        tools::TOOL_NAMES.join(", ")
                    )
                });
                Call {
                    id,
                    name: name.unwrap_or_else(|| "(none)".into()),
                    arguments,
                    malformed,
                }
            })
            .collect()
    }
}

/// Why a request to the endpoint gave no answer. Messages are scrubbed of the API key.
#[derive(Debug)]
enum CallError {
    /// The step's (or plan's) deadline passed.
    TimedOut,
    /// The endpoint refused the request as malformed (HTTP 400).
    Rejected(String),
    /// Anything else: unreachable, an error status, an answer that is not a chat completion.
    Failed(String),
}

impl OpenAiAgent {
    fn request(
        &self,
        messages: Vec<ChatCompletionRequestMessage>,
        tools: Option<Vec<ChatCompletionTools>>,
    ) -> CreateChatCompletionRequest {
        CreateChatCompletionRequest {
            model: self.model.clone(),
            messages,
            tools,
            ..Default::default()
        }
    }

    /// Sends one request and returns the first choice's message, giving up at `deadline`.
    /// The tokens the endpoint counted for the answer are added to `usage`.
    ///
    /// No retry loop here: `async-openai`'s client already retries rate limits (429, except
    /// `insufficient_quota`), server errors (5xx) and connection failures three times, with
    /// backoff from 100 ms and the server's `Retry-After`; the deadline bounds those waits.
    async fn chat(
        &self,
        request: &CreateChatCompletionRequest,
        deadline: Instant,
        usage: &mut Usage,
    ) -> Result<AnswerMessage, CallError> {
        let chat = self.client.chat();
        let call = chat.create_byot::<_, ChatAnswer>(request);
        match tokio::time::timeout_at(deadline, call).await {
            Err(_elapsed) => Err(CallError::TimedOut),
            Ok(Ok(answer)) => {
                if let Some(counted) = &answer.usage {
                    *usage = *usage + counted.usage();
                }
                answer
                    .choices
                    .into_iter()
                    .next()
                    .map(|choice| choice.message)
                    .ok_or_else(|| {
                        CallError::Failed("the endpoint answered without a message".into())
                    })
            }
            Ok(Err(err)) if rejected(&err) => Err(CallError::Rejected(self.describe(&err))),
            Ok(Err(err)) => Err(CallError::Failed(self.describe(&err))),
        }
    }

    /// An endpoint error as a short message without the API key.
    fn describe(&self, err: &OpenAIError) -> String {
        let text = match err {
            OpenAIError::JSONDeserialize(inner, content) => format!(
                "the answer is not a chat completion ({inner}): {}",
                content.trim()
            ),
            OpenAIError::Reqwest(inner) => format!("{inner} ({})", error_chain(inner)),
            other => other.to_string(),
        };
        let text = self.redactor.redact(&text);
        let text = text.trim();
        if text.len() <= ERROR_TEXT_CAP {
            return text.to_string();
        }
        let mut cut = ERROR_TEXT_CAP;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{} …", &text[..cut])
    }
}

/// The causes of an error, innermost last: reqwest's own message ("error sending request")
/// says nothing of why (connection refused, DNS).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        "no further detail".into()
    } else {
        causes.join(": ")
    }
}

/// The endpoint refused the request itself (HTTP 400), e.g. a field it does not support.
fn rejected(err: &OpenAIError) -> bool {
    matches!(err, OpenAIError::ApiError(api) if api.status_code.as_u16() == 400)
}

/// Removes the API key from text that came back from the endpoint or the model.
#[derive(Debug, Clone)]
struct Redactor(Option<SecretString>);

impl Redactor {
    fn redact(&self, text: &str) -> String {
        match self.0.as_ref().map(|key| key.expose_secret()) {
            Some(key) if !key.is_empty() && text.contains(key) => text.replace(key, "[redacted]"),
            _ => text.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

fn system(text: String) -> ChatCompletionRequestMessage {
    ChatCompletionRequestSystemMessage::from(text).into()
}

fn user(text: String) -> ChatCompletionRequestMessage {
    ChatCompletionRequestUserMessage::from(text).into()
}

fn assistant_text(text: String) -> ChatCompletionRequestMessage {
    ChatCompletionRequestAssistantMessage::from(text).into()
}

/// The model's reply as it goes back into the conversation: its text and its calls, with the
/// ids the tool answers refer to.
fn assistant_with_calls(text: Option<String>, calls: &[Call]) -> ChatCompletionRequestMessage {
    let tool_calls = (!calls.is_empty()).then(|| {
        calls
            .iter()
            .map(|call| {
                ChatCompletionMessageToolCalls::Function(ChatCompletionMessageToolCall {
                    id: call.id.clone(),
                    function: FunctionCall {
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    },
                })
            })
            .collect()
    });
    ChatCompletionRequestAssistantMessage {
        content: text.map(ChatCompletionRequestAssistantMessageContent::Text),
        tool_calls,
        ..Default::default()
    }
    .into()
}

fn tool_answer(id: &str, answer: String) -> ChatCompletionRequestMessage {
    ChatCompletionRequestToolMessage {
        content: answer.into(),
        tool_call_id: id.to_string(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_redacted() {
        let redactor = Redactor(Some(SecretString::from("sk-123")));
        assert_eq!(redactor.redact("bad key sk-123!"), "bad key [redacted]!");
        assert_eq!(Redactor(None).redact("sk-123"), "sk-123");
        assert_eq!(Redactor(Some(SecretString::from(""))).redact("x"), "x");
    }

    #[test]
    fn summaries_are_one_line() {
        assert_eq!(one_line("\n  Did it \nmore").as_deref(), Some("Did it"));
        assert_eq!(one_line("  \n "), None);
        assert_eq!(one_line(&"x".repeat(300)).unwrap().chars().count(), 201);
    }

    #[test]
    fn answers_with_odd_shapes_are_understood() {
        let message: AnswerMessage = serde_json::from_value(json!({
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "tool_calls": [
                {"function": {"name": "read_file", "arguments": {"path": "x"}}},
                {"id": "c2", "type": "function", "function": {"name": "finish", "arguments": null}},
                {"id": "c3", "type": "custom", "custom": {"name": "x", "input": "y"}}
            ]
        }))
        .unwrap();
        assert_eq!(message.text().as_deref(), Some("ab"));
        let calls = message.tool_calls(7);
        assert_eq!(calls[0].id, "call_7_0");
        assert_eq!(calls[0].arguments, r#"{"path":"x"}"#);
        assert_eq!(calls[1].id, "c2");
        assert_eq!(calls[1].arguments, "");
        assert!(
            calls[2]
                .malformed
                .as_deref()
                .unwrap()
                .contains("no function name")
        );
    }
}
