//! Agents: what turns a runbook's prompt into a plan, and what carries out each leaf step in a
//! git working tree (SPEC §7).
//!
//! One interface, [`Agent`], several backends chosen by configuration (`RUNBOOKS_AGENT`):
//! - [`script::ScriptAgent`] (`script`, the default): no network, no model. Plans from a
//!   runbook written in the template layout ([`template`]) and runs its `sh`/`bash` blocks.
//! - [`command::CommandAgent`] (`command`): an external coding-agent CLI, run per step and to
//!   plan free-text prompts in the runbook's tree (read-only).
//! - [`openai::OpenAiAgent`] (`openai`): any OpenAI-compatible chat-completions endpoint
//!   plans free-text prompts and carries out steps with a bounded tool-calling loop
//!   ([`tools`]) confined to the working tree.
//!
//! Every agent process runs through [`sandbox`]: a scrubbed environment (no tokens, keys or
//! database URL), its own process group killed on timeout or cancellation, resource limits
//! and bounded output; and, in the server, inside the [`jail`] (bubblewrap: only the working
//! tree, its own processes and network, [`egress`] as the only way out). The engine owns git:
//! agents change files, the engine commits them with the app's identity, from a git
//! directory the jail does not show.

pub mod command;
pub mod egress;
pub mod forward;
pub mod jail;
pub mod openai;
pub mod planning;
pub mod sandbox;
pub mod script;
pub mod settings;
pub mod template;
pub mod tools;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{Plan, StepNumber, Usage};
pub use settings::{AgentConfig, AgentKind, NetworkKind, SandboxKind};

/// Plans runbooks and executes their leaf steps.
///
/// Implementations must be cancel-safe in the way the engine relies on: dropping the future of
/// [`Agent::execute`] (a cancelled runbook, a shutdown) stops everything the step started.
#[async_trait::async_trait]
pub trait Agent: Send + Sync {
    /// Turns a runbook prompt into a validated plan, numbered from `request.after + 1`.
    async fn plan(&self, request: &PlanRequest) -> Result<Plan, AgentError>;

    /// Plans as [`Agent::plan`] does, and says what planning used when an agent planned (a
    /// model asked, a coding CLI run), whether a plan came of it or not (it counts toward
    /// budgets either way); `None` when none did (the template layout, the `script` agent).
    /// The wall time is the engine's to measure.
    async fn plan_measured(
        &self,
        request: &PlanRequest,
    ) -> (Result<Plan, AgentError>, Option<Usage>) {
        (self.plan(request).await, None)
    }

    /// Whether this agent plans `prompt` by reading the repository: then the engine prepares
    /// the runbook's working tree first and gives it in [`PlanRequest::tree`].
    fn plans_in_tree(&self, _request: &PlanRequest) -> bool {
        false
    }

    /// Executes one leaf step inside `worktree` (a git working tree directory), leaving its
    /// changes uncommitted for the engine to commit.
    async fn execute(&self, task: &StepTask, worktree: &Path) -> Result<StepOutcome, AgentError>;
}

/// What a planner is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    pub prompt: String,
    /// Text around the prompt, e.g. the title and body of the issue the runbook was started
    /// from. Model-based planners may read it. The `script` and `command` planners ignore it
    /// on purpose: an issue body can be written by someone without write access to the
    /// repository, and must never become shell blocks that the script agent runs.
    pub context: Option<String>,
    /// The last top-level step number of the existing plan (0 for a new runbook): a follow-up
    /// plan continues the numbering (see [`Plan::continuing`]).
    pub after: u32,
    /// The runbook's working tree, prepared on the branch its next step starts from, for
    /// agents that plan by reading the repository ([`Agent::plans_in_tree`]); they must only
    /// read it.
    pub tree: Option<std::path::PathBuf>,
}

/// One leaf step to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTask {
    pub runbook: i64,
    pub number: StepNumber,
    pub title: String,
    /// The step's details from the plan (for the script agent: text with command blocks).
    pub details: String,
    /// The whole runbook prompt, for agents that need the big picture.
    pub runbook_prompt: String,
}

impl StepTask {
    /// The instructions an external coding agent gets for this step: the runbook's prompt for
    /// context, then this step's number, title and details, then the house rules.
    pub fn prompt(&self) -> String {
        let details = if self.details.trim().is_empty() {
            "(no further details)"
        } else {
            self.details.trim()
        };
        format!(
            "You are carrying out one step of a runbook in this git working tree \
             (the current directory).\n\n\
             # The runbook\n\n{runbook}\n\n\
             # Your step: {number}. {title}\n\n{details}\n\n\
             # Rules\n\n\
             - Do only this step; later steps are done separately.\n\
             - Change files only inside the current directory.\n\
             - Do not commit, push or switch branches: your changes are committed for you.\n",
            runbook = self.runbook_prompt.trim(),
            number = self.number,
            title = self.title.trim(),
        )
    }
}

/// A step that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// One line for the step list and the PR checklist.
    pub summary: String,
    /// The output tail or transcript, kept with the step (bounded by [`Limits::output_cap`]).
    pub log: String,
    /// What the agent used: its processes' CPU time and a model's tokens. The engine fills in
    /// the wall time ([`Usage::wall_ms`] is 0 here).
    pub usage: Usage,
}

/// Why planning or a step failed. Every message says what happened and, where a user can act,
/// what to do; none contains a secret (agents never see one).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The prompt could not become a plan; the message is shown as the runbook's failed plan.
    #[error("the plan could not be made: {0}")]
    Plan(String),
    /// The step ran and failed. It used resources all the same: `usage` counts toward the
    /// organisation's budgets like a completed step's.
    #[error("{message}")]
    StepFailed {
        message: String,
        log: String,
        usage: Usage,
    },
    /// The step ran out of time; everything it started was stopped (`usage`: what it used
    /// until then).
    #[error(
        "step {step} ran out of time after {} and was stopped: split it into smaller steps or raise the step timeout",
        humantime::format_duration(*.after)
    )]
    TimedOut {
        step: StepNumber,
        after: Duration,
        log: String,
        usage: Usage,
    },
    /// The engine could not run the agent at all (a missing working tree, no `sh`, …).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// The output kept for a failed or timed-out step, when there is any.
    pub fn log(&self) -> Option<&str> {
        match self {
            AgentError::StepFailed { log, .. } | AgentError::TimedOut { log, .. } => Some(log),
            AgentError::Plan(_) | AgentError::Io { .. } => None,
        }
    }

    /// What the step used before it failed: nothing for a plan or an engine error.
    pub fn usage(&self) -> Usage {
        match self {
            AgentError::StepFailed { usage, .. } | AgentError::TimedOut { usage, .. } => *usage,
            AgentError::Plan(_) | AgentError::Io { .. } => Usage::default(),
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| AgentError::Io { context, source }
    }
}

/// Bounds on every step an agent executes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock time for one leaf step, all of its commands together.
    pub step_timeout: Duration,
    /// Bytes of stdout and stderr kept per step: the last ones, where errors are.
    pub output_cap: usize,
    /// The jail the step's commands run in.
    pub jail: jail::Jail,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(10 * 60),
            output_cap: 64 * 1024,
            jail: jail::Jail::default(),
        }
    }
}

/// What the server tells the jail about itself.
#[derive(Debug, Clone, Default)]
pub struct JailSite {
    /// The server's own files and directories (data directory, database file, key file),
    /// masked if a jail would otherwise show them.
    pub hidden: Vec<std::path::PathBuf>,
    /// The server's own listeners, never reachable through the egress proxy.
    pub deny: Vec<std::net::SocketAddr>,
}

/// The jail the configuration asks for, tried on this machine. Fails closed: with `auto`
/// or `bwrap` and no working bubblewrap, the server must not start (unless the operator
/// opts out with `RUNBOOKS_SANDBOX=none`).
pub async fn jail(config: &AgentConfig, site: JailSite) -> anyhow::Result<jail::Jail> {
    let network = match config.network() {
        NetworkKind::None => egress::NetworkPolicy::None,
        NetworkKind::Allowlist => egress::NetworkPolicy::Allowlist(config.allow_hosts.clone()),
        NetworkKind::Open => egress::NetworkPolicy::Open,
    };
    let mut jail = jail::JailConfig {
        bwrap: Some("bwrap".into()),
        network,
        deny: site.deny,
        hidden: site.hidden,
        read_only: config.read_paths.clone(),
        limits: config.limits,
        pass_env: config.pass_env.clone(),
        helper: config.helper.clone(),
    };
    if config.sandbox == SandboxKind::None {
        tracing::warn!(
            "RUNBOOKS_SANDBOX=none: agent commands run unjailed, as the server's user, with \
             its files and network; use this only where every runbook's author is trusted"
        );
        jail.bwrap = None;
        return Ok(jail.into());
    }
    let jail = jail::Jail::from(jail);
    if let Err(reason) = sandbox::probe(&jail).await {
        anyhow::bail!(
            "agent commands must run in a jail, and bubblewrap cannot make one here ({reason}). \
             Install bubblewrap (Debian and Ubuntu: `apt-get install bubblewrap`; it needs \
             unprivileged user namespaces, or root; in a container, a seccomp profile that \
             allows them), or set RUNBOOKS_SANDBOX=none to run agent commands unjailed"
        );
    }
    Ok(jail)
}

/// The agent the configuration asks for.
pub fn from_config(config: &AgentConfig, limits: Limits) -> anyhow::Result<Arc<dyn Agent>> {
    match config.kind {
        AgentKind::Script => Ok(Arc::new(script::ScriptAgent::new(limits))),
        AgentKind::Command => {
            let command = config
                .command
                .as_deref()
                .map(str::trim)
                .filter(|command| !command.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the command agent needs RUNBOOKS_AGENT_COMMAND, e.g. \
                         'aider --yes --message \"$RUNBOOKS_STEP_PROMPT\"'"
                    )
                })?;
            let plan_command = config
                .plan_command
                .as_deref()
                .map(str::trim)
                .filter(|command| !command.is_empty());
            Ok(Arc::new(
                command::CommandAgent::new(command, limits).with_plan_command(plan_command),
            ))
        }
        AgentKind::Openai => Ok(Arc::new(openai::OpenAiAgent::from_config(config, limits)?)),
    }
}

/// The last `lines` lines of `text`, at most `max_bytes` of them, for a short error message
/// (the full output is in the step's log).
pub(crate) fn short_tail(text: &str, lines: usize, max_bytes: usize) -> String {
    let trimmed = text.trim_end();
    let start = trimmed
        .rmatch_indices('\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(i, _)| i + 1);
    let mut tail = &trimmed[start..];
    if tail.len() > max_bytes {
        let mut cut = tail.len() - max_bytes;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = &tail[cut..];
    }
    tail.to_string()
}

/// `text` cut to its last `cap` bytes (at a character boundary), with a note when cut.
pub(crate) fn keep_tail(text: String, cap: usize) -> String {
    if text.len() <= cap {
        return text;
    }
    let mut cut = text.len() - cap;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!(
        "[… {cut} earlier bytes of output not kept …]\n{}",
        &text[cut..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: AgentKind, command: Option<&str>) -> AgentConfig {
        AgentConfig {
            kind,
            openai_base_url: None,
            openai_api_key: None,
            model: None,
            command: command.map(str::to_string),
            plan_command: None,
            sandbox: SandboxKind::None,
            network: None,
            allow_hosts: Vec::new(),
            pass_env: Vec::new(),
            read_paths: Vec::new(),
            limits: jail::ResourceLimits::NONE,
            helper: None,
        }
    }

    #[test]
    fn agents_from_the_configuration() {
        assert!(from_config(&config(AgentKind::Script, None), Limits::default()).is_ok());
        assert!(
            from_config(
                &config(AgentKind::Command, Some("my-agent")),
                Limits::default()
            )
            .is_ok()
        );
        let err = from_config(&config(AgentKind::Command, Some("  ")), Limits::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("RUNBOOKS_AGENT_COMMAND"));
        let err = from_config(&config(AgentKind::Openai, None), Limits::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("OPENAI_BASE_URL"));
        let mut openai = config(AgentKind::Openai, None);
        openai.openai_base_url = Some("http://127.0.0.1:11434/v1".into());
        let err = from_config(&openai, Limits::default()).err().unwrap();
        assert!(err.to_string().contains("RUNBOOKS_MODEL"));
        openai.model = Some("llama3.1".into());
        assert!(from_config(&openai, Limits::default()).is_ok());
    }

    #[test]
    fn limits_default_to_ten_minutes_and_64_kib() {
        let limits = Limits::default();
        assert_eq!(limits.step_timeout, Duration::from_secs(600));
        assert_eq!(limits.output_cap, 65536);
    }

    #[test]
    fn tails() {
        assert_eq!(short_tail("a\nb\nc\nd\n\n", 2, 100), "c\nd");
        assert_eq!(short_tail("one line", 5, 100), "one line");
        assert_eq!(short_tail("abcdef", 5, 3), "def");
        assert_eq!(short_tail("ab€", 5, 2), "");
        assert_eq!(keep_tail("short".into(), 10), "short");
        assert_eq!(
            keep_tail("0123456789".into(), 4),
            "[… 6 earlier bytes of output not kept …]\n6789"
        );
        assert_eq!(
            keep_tail("a€".into(), 2),
            "[… 4 earlier bytes of output not kept …]\n"
        );
    }

    #[test]
    fn the_step_prompt_has_the_runbook_and_the_step() {
        let task = StepTask {
            runbook: 12,
            number: "1.2".parse().unwrap(),
            title: "Update the callers".into(),
            details: "Use the new name.".into(),
            runbook_prompt: "Rename old_name to new_name.".into(),
        };
        let prompt = task.prompt();
        assert!(prompt.contains("# The runbook\n\nRename old_name to new_name."));
        assert!(prompt.contains("# Your step: 1.2. Update the callers\n\nUse the new name."));
        assert!(prompt.contains("Do not commit"));
    }

    #[test]
    fn error_messages() {
        let err = AgentError::TimedOut {
            step: "2".parse().unwrap(),
            after: Duration::from_millis(300),
            log: "tail".into(),
            usage: Usage {
                agent_cpu_ms: 7,
                ..Usage::default()
            },
        };
        assert_eq!(
            err.to_string(),
            "step 2 ran out of time after 300ms and was stopped: split it into smaller steps or raise the step timeout"
        );
        assert_eq!(err.log(), Some("tail"));
        assert_eq!(err.usage().agent_cpu_ms, 7);
        assert_eq!(AgentError::Plan("x".into()).usage(), Usage::default());
        assert_eq!(
            AgentError::Plan("x".into()).to_string(),
            "the plan could not be made: x"
        );
    }
}
