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
//! Planning: the command agent has no planner of its own; it uses the script agent's parser
//! (a runbook in the template layout gives its steps, any other prompt is one step), and the
//! CLI then carries out each step, free text or not.

use std::path::Path;

use tracing::Instrument;

use super::sandbox::{Exit, SandboxCommand};
use super::script::{check_worktree, plan_from_template};
use super::{Agent, AgentError, Limits, PlanRequest, StepOutcome, StepTask, keep_tail, short_tail};
use crate::domain::{Plan, Usage};

/// Bytes of the prompt put in `RUNBOOKS_STEP_PROMPT`: under Linux's 128 KiB per-string limit
/// for the environment, with room for the name and a note.
const ENV_PROMPT_BYTES: usize = 120 * 1024;

/// Runs an external coding-agent CLI per step.
#[derive(Debug, Clone)]
pub struct CommandAgent {
    command: String,
    limits: Limits,
}

impl CommandAgent {
    /// `command` is a shell command line (run with `sh -c`).
    pub fn new(command: impl Into<String>, limits: Limits) -> Self {
        Self {
            command: command.into(),
            limits,
        }
    }
}

#[async_trait::async_trait]
impl Agent for CommandAgent {
    async fn plan(&self, request: &PlanRequest) -> Result<Plan, AgentError> {
        plan_from_template(request)
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
