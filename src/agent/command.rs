//! The `command` agent: an external coding-agent CLI (`RUNBOOKS_AGENT_COMMAND`), run once per
//! leaf step in the working tree.
//!
//! The command is a shell command line, run as `sh -c COMMAND` in the working tree with the
//! sandbox's scrubbed environment. It gets the step's prompt ([`StepTask::prompt`]: the
//! runbook's prompt, the step's number, title and details, and the rules) two ways:
//! - on standard input, in full;
//! - in the variable `RUNBOOKS_STEP_PROMPT`, for CLIs that take the prompt as an argument:
//!   `aider --yes --message "$RUNBOOKS_STEP_PROMPT"`. A variable is limited by the kernel
//!   (128 KiB on Linux), so a longer prompt is cut there with a note; stdin always has it all.
//!
//! It also sees `RUNBOOKS_RUNBOOK` (the runbook number), `RUNBOOKS_STEP` (the step number)
//! and `RUNBOOKS_STEP_TITLE`. Exit status 0 is success, anything else fails the step with the
//! output's tail; the step is stopped (its whole process group) at the step timeout.
//!
//! Credentials for the CLI's own model are not passed through by default: the sandbox never
//! hands an agent the engine's environment. The operator names the variables the CLI needs
//! in `RUNBOOKS_AGENT_ENV` (e.g. `ANTHROPIC_API_KEY`), and its model API's host in
//! `RUNBOOKS_AGENT_ALLOW_HOSTS` (the jail's network goes through the egress proxy).
//!
//! # Planning
//!
//! A prompt in the template layout is the plan as written ([`planning::written_plan`]). Any
//! other prompt is planned by the same CLI (or by `RUNBOOKS_AGENT_PLAN_COMMAND`, for CLIs
//! that plan differently), run in the runbook's working tree — prepared by the engine on the
//! branch the first step starts from, and **read-only** in the jail: the planner reads the
//! repository and runs what it likes, but changes nothing. It gets the planning prompt (the
//! plan format of [`planning::planner_instructions`], then the task) on stdin and in
//! `RUNBOOKS_STEP_PROMPT` (so one command line serves both), and `RUNBOOKS_PLAN_FILE`, a
//! fresh path in its private /tmp, set for planning only. It answers with the JSON plan in
//! that file, or on stdout when it wrote none. The answer is checked like the `openai`
//! planner's ([`planning::parse_plan_answer`]); a bad one is given back once, with the
//! problem, to a second run, and a second bad answer fails the plan with it. A planning
//! command that fails (exit status, timeout) fails the plan with its output's tail. Planning
//! as a whole is bounded by the step timeout.
//!
//! The planner is not given the issue the runbook came from (`PlanRequest::context`): its
//! body can be written by someone without write access to the repository, and the plan
//! becomes what the CLI then does with write access.

use std::path::Path;

use tokio::time::Instant;
use tracing::Instrument;

use super::planning::{self, PLAN_ATTEMPTS, REJECTED_ANSWER_CAP};
use super::sandbox::{Exit, SandboxCommand};
use super::script::check_worktree;
use super::{Agent, AgentError, Limits, PlanRequest, StepOutcome, StepTask, keep_tail, short_tail};
use crate::domain::{Plan, Usage};

/// The variable naming the file a planning command writes its plan to.
pub const PLAN_FILE_VARIABLE: &str = "RUNBOOKS_PLAN_FILE";

/// Bytes of the prompt put in `RUNBOOKS_STEP_PROMPT`: under Linux's 128 KiB per-string limit
/// for the environment, with room for the name and a note.
const ENV_PROMPT_BYTES: usize = 120 * 1024;

/// Runs an external coding-agent CLI per step.
#[derive(Debug, Clone)]
pub struct CommandAgent {
    command: String,
    /// Plans instead of `command` when set.
    plan_command: Option<String>,
    limits: Limits,
}

impl CommandAgent {
    /// `command` is a shell command line (run with `sh -c`).
    pub fn new(command: impl Into<String>, limits: Limits) -> Self {
        Self {
            command: command.into(),
            plan_command: None,
            limits,
        }
    }

    /// A different command line for planning (`RUNBOOKS_AGENT_PLAN_COMMAND`).
    pub fn with_plan_command(mut self, command: Option<&str>) -> Self {
        self.plan_command = command.map(str::to_string);
        self
    }
}

#[async_trait::async_trait]
impl Agent for CommandAgent {
    async fn plan(&self, request: &PlanRequest) -> Result<Plan, AgentError> {
        self.plan_measured(request).await.0
    }

    /// A plan the CLI made reports its runs' CPU time (no tokens: a CLI does not say), so that
    /// its planning time counts toward the organisation's agent minutes.
    async fn plan_measured(
        &self,
        request: &PlanRequest,
    ) -> (Result<Plan, AgentError>, Option<Usage>) {
        planning::unless_written(request, || async {
            let mut usage = Usage::default();
            let span = tracing::info_span!("command_plan");
            let result = self
                .plan_in_tree(request, &mut usage)
                .instrument(span)
                .await;
            (result, usage)
        })
        .await
    }

    fn plans_in_tree(&self, request: &PlanRequest) -> bool {
        // Only a prompt the CLI plans; a written plan (or one with a mistake) needs no tree.
        matches!(planning::written_plan(request), Ok(None))
    }

    async fn execute(&self, task: &StepTask, worktree: &Path) -> Result<StepOutcome, AgentError> {
        let span = tracing::info_span!("command_step", runbook = task.runbook, step = %task.number);
        self.run(task, worktree).instrument(span).await
    }
}

impl CommandAgent {
    async fn run(&self, task: &StepTask, worktree: &Path) -> Result<StepOutcome, AgentError> {
        check_worktree(worktree)?;
        let prompt = task.prompt();
        let run = SandboxCommand::new("sh", worktree)
            .arg("-c")
            .arg(&self.command)
            .stdin(prompt.clone())
            .env("RUNBOOKS_STEP_PROMPT", env_prompt(&prompt))
            .env("RUNBOOKS_RUNBOOK", task.runbook.to_string())
            .env("RUNBOOKS_STEP", task.number.to_string())
            .env("RUNBOOKS_STEP_TITLE", task.title.clone())
            .timeout(self.limits.step_timeout)
            .jail(&self.limits.jail)
            .output_cap(self.limits.output_cap)
            .run()
            .await
            .map_err(AgentError::io(format!(
                "could not start the agent command for step {}",
                task.number
            )))?;
        let log = run.output.text();
        // The CLI's CPU time; its model's tokens are its own business (not reported to us).
        let usage = Usage {
            agent_cpu_ms: run.cpu_ms(),
            ..Usage::default()
        };
        match run.exit {
            Exit::Code(0) => Ok(StepOutcome {
                summary: summary(&log),
                log: keep_tail(log, self.limits.output_cap),
                usage,
            }),
            Exit::TimedOut => Err(AgentError::TimedOut {
                step: task.number.clone(),
                after: self.limits.step_timeout,
                log,
                usage,
            }),
            exit => {
                let tail = short_tail(&log, 20, 2000);
                let mut message = format!("step {} failed: the agent command {exit}", task.number);
                if tail.is_empty() {
                    message.push_str(" (no output)");
                } else {
                    message.push_str(&format!("; last lines of its output:\n{tail}"));
                }
                Err(AgentError::StepFailed {
                    message,
                    log,
                    usage,
                })
            }
        }
    }
}

impl CommandAgent {
    async fn plan_in_tree(
        &self,
        request: &PlanRequest,
        usage: &mut Usage,
    ) -> Result<Plan, AgentError> {
        let Some(tree) = request.tree.as_deref() else {
            return Err(AgentError::Plan(
                "the command agent plans in the repository's working tree, and none was prepared"
                    .into(),
            ));
        };
        check_worktree(tree)?;
        let command = self.plan_command.as_deref().unwrap_or(&self.command);
        let deadline = Instant::now() + self.limits.step_timeout;
        let mut rejected: Option<(String, String)> = None;
        for attempt in 1..=PLAN_ATTEMPTS {
            let prompt = planning_prompt(request, rejected.as_ref());
            let left = deadline.saturating_duration_since(Instant::now());
            let run = SandboxCommand::new("sh", tree)
                .arg("-c")
                .arg(command)
                .stdin(prompt.clone())
                .env("RUNBOOKS_STEP_PROMPT", env_prompt(&prompt))
                .collect_file(PLAN_FILE_VARIABLE, "runbooks-plan.json")
                .read_only_tree()
                .timeout(left)
                .jail(&self.limits.jail)
                .output_cap(self.limits.output_cap)
                .run()
                .await
                .map_err(AgentError::io("could not start the agent command to plan"))?;
            usage.agent_cpu_ms = usage.agent_cpu_ms.saturating_add(run.cpu_ms());
            let output = run.output.text();
            match run.exit {
                Exit::Code(0) => {}
                Exit::TimedOut => {
                    return Err(AgentError::Plan(format!(
                        "the agent command did not plan within {}",
                        humantime::format_duration(self.limits.step_timeout)
                    )));
                }
                exit => {
                    let tail = short_tail(&output, 20, 2000);
                    let mut message = format!("the agent command {exit} while planning");
                    if tail.is_empty() {
                        message.push_str(" (no output)");
                    } else {
                        message.push_str(&format!("; last lines of its output:\n{tail}"));
                    }
                    return Err(AgentError::Plan(message));
                }
            }
            // The plan file when there is one, else what the command printed.
            let answer = match run.collected {
                Some(Ok(bytes)) if !bytes.iter().all(u8::is_ascii_whitespace) => {
                    Ok(String::from_utf8_lossy(&bytes).into_owned())
                }
                Some(Err(reason)) => Err(format!("the plan file was not read: {reason}")),
                _ => Ok(output),
            };
            let parsed = answer
                .clone()
                .and_then(|answer| planning::parse_plan_output(&answer, request.after));
            match parsed {
                Ok(plan) => {
                    tracing::info!(
                        attempt,
                        steps = plan.steps().len(),
                        "the agent command planned"
                    );
                    return Ok(plan);
                }
                Err(problem) => {
                    tracing::info!(attempt, %problem, "the agent command's plan was rejected");
                    let answer = match answer {
                        Ok(answer) if !answer.trim().is_empty() => {
                            super::tools::cap_head(answer, REJECTED_ANSWER_CAP)
                        }
                        _ => "(no plan)".to_string(),
                    };
                    rejected = Some((answer, problem));
                }
            }
        }
        let problem = rejected.map(|(_, problem)| problem).unwrap_or_default();
        Err(AgentError::Plan(format!(
            "the agent command gave no usable plan in {PLAN_ATTEMPTS} attempts; the last \
             problem: {problem}. Rephrase the prompt, or write the steps in the template layout \
             (`### Step 1: …`)"
        )))
    }
}

/// What a planning command reads: the plan format, where to answer, the task, and, on a
/// second attempt, its rejected answer with the problem. The issue the runbook came from is
/// left out on purpose (see the module's documentation).
fn planning_prompt(request: &PlanRequest, rejected: Option<&(String, String)>) -> String {
    let task = PlanRequest {
        context: None,
        ..request.clone()
    };
    let mut prompt = format!(
        "{instructions}\n\n\
         # Where to answer\n\n\
         Write the JSON object to the file named by the environment variable \
         {PLAN_FILE_VARIABLE}; if you cannot write files, print it as the last thing you \
         output. The current directory is the repository's working tree, read-only while you \
         plan: read files and run commands to understand it, but change nothing; the steps of \
         your plan make the changes.\n\n\
         {task}",
        instructions = planning::planner_instructions(request.after),
        task = planning::planning_prompt(&task),
    );
    if let Some((answer, problem)) = rejected {
        prompt.push_str(&format!(
            "\n# Your previous answer\n\n{answer}\n\nThat answer could not be used: \
             {problem}.\nAnswer again with only the JSON object described above, with this \
             fixed.\n"
        ));
    }
    prompt
}

/// The prompt for the environment variable, cut (at a character boundary) to what the kernel
/// accepts.
fn env_prompt(prompt: &str) -> String {
    if prompt.len() <= ENV_PROMPT_BYTES {
        return prompt.to_string();
    }
    let mut cut = ENV_PROMPT_BYTES;
    while !prompt.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n[… the prompt is cut here; the full prompt is on standard input]",
        &prompt[..cut]
    )
}

/// The last non-empty output line, shortened: agent CLIs end with what they did.
fn summary(output: &str) -> String {
    let last = output
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with("[… "));
    match last {
        Some(line) if line.chars().count() > 200 => {
            format!("{}…", line.chars().take(199).collect::<String>())
        }
        Some(line) => line.to_string(),
        None => "the agent command finished without output".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_prompts_are_cut_for_the_environment_only() {
        let long = "é".repeat(ENV_PROMPT_BYTES);
        let cut = env_prompt(&long);
        assert!(cut.len() < ENV_PROMPT_BYTES + 100);
        assert!(cut.ends_with("the full prompt is on standard input]"));
        assert_eq!(env_prompt("short"), "short");
    }

    #[test]
    fn summaries() {
        assert_eq!(
            summary("working…\nEdited src/lib.rs\n\n"),
            "Edited src/lib.rs"
        );
        assert_eq!(summary(""), "the agent command finished without output");
        assert_eq!(summary(&"x".repeat(300)).chars().count(), 200);
    }
}
