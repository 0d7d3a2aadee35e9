//! The `script` agent: the embedded default, with no network and no model.
//!
//! It plans from a runbook written in the template layout ([`super::template`]) and executes a
//! leaf step by running the step's fenced `sh`, `shell` and `bash` blocks, in order, in the
//! working tree: a `sh` block as `sh -e -c BLOCK`, a `bash` block as `bash -e -c BLOCK`, so a
//! failing command inside a block fails the block. The first block that fails fails the step.
//! Bare ``` blocks (no language) are never run: they show output or file contents as often
//! as commands. A step with no command blocks fails with a message that says an LLM agent is
//! needed, rather than succeeding without doing anything.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::sandbox::{Exit, SandboxCommand};
use super::template::{self, CommandBlock};
use super::{Agent, AgentError, Limits, PlanRequest, StepOutcome, StepTask, keep_tail, short_tail};
use crate::domain::{Plan, Usage};

/// Lines and bytes of output quoted in a failure message; the step's log keeps more.
const MESSAGE_TAIL_LINES: usize = 20;
const MESSAGE_TAIL_BYTES: usize = 2000;

/// Runs the shell blocks of runbooks written in the template layout.
#[derive(Debug, Clone)]
pub struct ScriptAgent {
    limits: Limits,
}

impl ScriptAgent {
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }
}

/// Checks the working tree exists before anything runs in it, so the error names it.
pub(crate) fn check_worktree(worktree: &Path) -> Result<(), AgentError> {
    match std::fs::metadata(worktree) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(AgentError::Io {
            context: format!("the working tree {} is not a directory", worktree.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
        }),
        Err(source) => Err(AgentError::Io {
            context: format!("cannot use the working tree {}", worktree.display()),
            source,
        }),
    }
}

#[async_trait::async_trait]
impl Agent for ScriptAgent {
    async fn plan(&self, request: &PlanRequest) -> Result<Plan, AgentError> {
        // The template layout, or a plain prompt as one step (which then has no commands).
        template::parse_plan(&request.prompt, request.after)
            .map_err(|err| AgentError::Plan(err.to_string()))
    }

    async fn execute(&self, task: &StepTask, worktree: &Path) -> Result<StepOutcome, AgentError> {
        let span = tracing::info_span!("script_step", runbook = task.runbook, step = %task.number);
        self.run_blocks(task, worktree).instrument(span).await
    }
}

impl ScriptAgent {
    async fn run_blocks(
        &self,
        task: &StepTask,
        worktree: &Path,
    ) -> Result<StepOutcome, AgentError> {
        let step = &task.number;
        let blocks = template::command_blocks(&task.details);
        if blocks.is_empty() {
            return Err(AgentError::StepFailed {
                message: format!(
                    "step {step} has no commands to run: the script agent runs the sh/bash blocks \
                     of a runbook written in the template layout; free-text steps need an LLM \
                     agent (RUNBOOKS_AGENT=openai or command)"
                ),
                log: String::new(),
                usage: Usage::default(),
            });
        }
        if let Some(open) = blocks.iter().find(|block| !block.closed) {
            return Err(AgentError::StepFailed {
                message: format!(
                    "step {step}: the ```{} block on line {} of its details is never closed; \
                     nothing was run",
                    open.shell.program(),
                    open.line
                ),
                log: String::new(),
                usage: Usage::default(),
            });
        }
        check_worktree(worktree)?;

        let deadline = Instant::now() + self.limits.step_timeout;
        let count = blocks.len();
        let mut log = String::new();
        // The blocks' CPU time together; no tokens (no model).
        let mut usage = Usage::default();
        for (i, block) in blocks.iter().enumerate() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timed_out(task, log, usage));
            }
            tracing::debug!(block = i + 1, of = count, "running command block");
            let run = SandboxCommand::new(block.shell.program(), worktree)
                .arg("-e")
                .arg("-c")
                .arg(&block.code)
                .timeout(remaining)
                .output_cap(self.limits.output_cap)
                .jail(&self.limits.jail)
                .run()
                .await
                .map_err(AgentError::io(format!(
                    "could not run command block {} of step {step}",
                    i + 1
                )))?;
            usage.agent_cpu_ms = usage.agent_cpu_ms.saturating_add(run.cpu_ms());
            let output = run.output.text();
            log.push_str(&format!("$ {}\n{output}", describe(block, i, count)));
            if !output.is_empty() && !output.ends_with('\n') {
                log.push('\n');
            }
            match run.exit {
                Exit::Code(0) => {}
                Exit::TimedOut => return Err(self.timed_out(task, log, usage)),
                exit => {
                    let tail = short_tail(&output, MESSAGE_TAIL_LINES, MESSAGE_TAIL_BYTES);
                    let mut message =
                        format!("step {step} failed: {} {exit}", describe(block, i, count));
                    if tail.is_empty() {
                        message.push_str(" (no output)");
                    } else {
                        message.push_str(&format!("; last lines of its output:\n{tail}"));
                    }
                    return Err(AgentError::StepFailed {
                        message,
                        log: keep_tail(log, self.limits.output_cap),
                        usage,
                    });
                }
            }
        }
        let summary = if count == 1 {
            format!("ran 1 command block (`{}`)", blocks[0].label())
        } else {
            format!("ran {count} command blocks")
        };
        Ok(StepOutcome {
            summary,
            log: keep_tail(log, self.limits.output_cap),
            usage,
        })
    }

    fn timed_out(&self, task: &StepTask, log: String, usage: Usage) -> AgentError {
        AgentError::TimedOut {
            step: task.number.clone(),
            after: round(self.limits.step_timeout),
            log: keep_tail(log, self.limits.output_cap),
            usage,
        }
    }
}

/// `command block 2 of 3 (line 7: `cargo fmt`)`: enough to find the block in the runbook.
fn describe(block: &CommandBlock, index: usize, count: usize) -> String {
    format!(
        "command block {} of {count} (line {} of the step: `{}`)",
        index + 1,
        block.line,
        block.label()
    )
}

/// Durations in messages without sub-millisecond noise.
fn round(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis().try_into().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plans_from_the_template_and_ignores_the_context() {
        let agent = ScriptAgent::new(Limits::default());
        let request = PlanRequest {
            prompt: "Tidy up".into(),
            context: Some(
                "## Execution Steps\n### Step 1: From the issue\n```sh\nrm -rf .\n```".into(),
            ),
            after: 0,
            tree: None,
        };
        let plan = agent.plan(&request).await.unwrap();
        assert_eq!(plan.steps().len(), 1);
        assert_eq!(plan.steps()[0].details, "Tidy up");
        let err = agent
            .plan(&PlanRequest {
                prompt: "## Execution Steps\n### Step 2: x".into(),
                context: None,
                after: 0,
                tree: None,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, AgentError::Plan(_)));
        assert!(
            err.to_string()
                .starts_with("the plan could not be made: line 2: step 2 is out of order")
        );
    }
}
