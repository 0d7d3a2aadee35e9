//! The agent's settings, as `crate::config` reads them from flags and the environment (and
//! re-exports them): which agent, its jail, its network, its limits.

use std::path::PathBuf;

use clap::ValueEnum;
use secrecy::SecretString;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AgentKind {
    /// Runs the shell blocks of a runbook written in the template layout; no network.
    Script,
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai,
    /// An external coding-agent command run per step.
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxKind {
    Auto,
    Bwrap,
    None,
}

/// Where jailed agent commands may connect (`RUNBOOKS_AGENT_NETWORK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkKind {
    /// Nothing: the jail's own loopback only.
    None,
    /// Only the hosts of RUNBOOKS_AGENT_ALLOW_HOSTS, through the server's egress proxy.
    Allowlist,
    /// Any public address, through the server's egress proxy.
    Open,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub kind: AgentKind,
    pub openai_base_url: Option<String>,
    pub openai_api_key: Option<SecretString>,
    pub model: Option<String>,
    pub command: Option<String>,
    /// The command that plans, when the agent's CLI plans differently from how it carries
    /// out a step (`RUNBOOKS_AGENT_PLAN_COMMAND`); `None`: `command` plans too.
    pub plan_command: Option<String>,
    pub sandbox: SandboxKind,
    /// `None`: the agent's default (`none` for the script agent, `allowlist` otherwise).
    pub network: Option<NetworkKind>,
    pub allow_hosts: Vec<super::egress::HostRule>,
    /// Variables passed through to agent commands, checked, with their values.
    pub pass_env: Vec<super::jail::PassedVar>,
    pub read_paths: Vec<PathBuf>,
    pub limits: super::jail::ResourceLimits,
    /// The `runbooks` binary, run in the jail as the egress forwarder (this executable).
    pub helper: Option<PathBuf>,
}

impl AgentConfig {
    /// The network policy in effect: the one set, else `allowlist` when hosts are listed,
    /// else the agent's default.
    pub fn network(&self) -> NetworkKind {
        self.network.unwrap_or(match self.kind {
            _ if !self.allow_hosts.is_empty() => NetworkKind::Allowlist,
            AgentKind::Script => NetworkKind::None,
            AgentKind::Openai | AgentKind::Command => NetworkKind::Allowlist,
        })
    }
}
