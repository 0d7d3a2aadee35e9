//! Command line and configuration. Every setting is a flag and an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::domain::LimitValue;
use crate::domain::limits;

// The agent's settings live with the agent (which reads them); they are parsed here.
pub use crate::agent::settings::{AgentConfig, AgentKind, NetworkKind, SandboxKind};

#[derive(Debug, Parser)]
#[command(
    name = "runbooks",
    version,
    about = "A self-hosted GitHub App that runs runbooks and opens pull requests."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The command line, with the environment's value of every setting hidden from `--help`
    /// (clap shows `[env: NAME=value]` otherwise): URLs, the agent command and the hosts an
    /// agent may reach can carry credentials, and a setting added later must not leak either.
    /// The defaults are still shown; they are no secret.
    pub fn command_line() -> clap::Command {
        fn hide(command: clap::Command) -> clap::Command {
            command
                .mut_args(|arg| arg.hide_env_values(true))
                .mut_subcommands(hide)
        }
        hide(<Self as clap::CommandFactory>::command())
    }

    /// Parses the process's arguments; on an error or `--help`, prints and exits as clap does.
    pub fn from_env_args() -> Self {
        let matches = Self::command_line().get_matches();
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the REST API (and, in later versions, webhooks and the engine).
    Serve(Box<ServeArgs>),
    /// Create or update the database schema, then exit.
    Migrate(DatabaseArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Limits per organisation: runbooks running at once, steps per runbook, monthly
    /// budgets of model tokens and agent minutes.
    #[command(subcommand)]
    Org(OrgCommand),
    /// The offline end-to-end demonstration: a local GitHub stand-in, the service, and a
    /// runbook run from the REST API to its commits. No network, no credentials.
    Demo {
        /// Where the service listens (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Keep serving after the runbook ends, until Ctrl-C.
        #[arg(long)]
        serve: bool,
    },
    /// A local GitHub stand-in with the app installed on the repositories named, for trying
    /// the service or testing it from outside (`.ci/schemathesis`): writes the `GITHUB_*`
    /// settings that point `runbooks serve` at it, then serves until Ctrl-C or SIGTERM.
    Standin {
        /// Where the stand-in listens (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// A repository to create (with a README) and install the app on: `OWNER/NAME`;
        /// repeat for more.
        #[arg(long = "repo", required = true)]
        repos: Vec<String>,
        /// Where to write the settings, one `NAME=value` a line (`set -a; . FILE` in a shell);
        /// the app's private key is written beside it, as `FILE.pem`. The file appears once
        /// the stand-in answers.
        #[arg(long)]
        env_file: PathBuf,
    },
    /// Create a runbook on a running server (POST /api/v1/runbook).
    Create(Box<CreateArgs>),
    /// Show a runbook's status, its step tree, commits, errors and pull requests.
    Status(StatusArgs),
    /// Follow a runbook's progress until it ends: exits 0 when it completes, 1 when it
    /// fails, 2 when the server cannot be asked.
    Watch(WatchArgs),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for one or more organisations; prints the token alone on stdout.
    Create {
        /// Organisation the token may act for (repeat, or separate with commas, for several).
        #[arg(long = "org", required = true, value_delimiter = ',')]
        orgs: Vec<String>,
        /// A name to recognise the token by in `token list`.
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List tokens (never the tokens themselves).
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke a token by its id; it stops working at once.
    Revoke {
        id: i64,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Set an organisation's limits; a limit not given keeps its value, `none` removes one.
    /// They take effect at once, in every running server.
    Set {
        /// The organisation (compared without regard to case).
        org: String,
        /// Runbooks running at once (at least 1); more wait, and start in order.
        #[arg(long, value_name = "N|none", allow_negative_numbers = true, value_parser = |s: &str| limits::parse_count(s, 1))]
        max_running: Option<LimitValue>,
        /// Leaf steps a runbook's plan may have, follow-ups included (at least 1).
        #[arg(long, value_name = "N|none", allow_negative_numbers = true, value_parser = |s: &str| limits::parse_count(s, 1))]
        max_steps: Option<LimitValue>,
        /// Model tokens (prompt and completion) a calendar month (UTC).
        #[arg(long, value_name = "N|none", allow_negative_numbers = true, value_parser = |s: &str| limits::parse_count(s, 0))]
        monthly_tokens: Option<LimitValue>,
        /// Agent minutes (the steps' wall time) a calendar month (UTC); may be fractional.
        #[arg(long, value_name = "M|none", allow_negative_numbers = true, value_parser = limits::parse_minutes)]
        monthly_agent_minutes: Option<LimitValue>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Show an organisation's limits and this calendar month's (UTC) use.
    Show {
        org: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (created when missing) or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        env = "RUNBOOKS_DATABASE_URL",
        default_value = "sqlite://runbooks.db",
        hide_env_values = true
    )]
    pub database_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve on.
    #[arg(long, env = "RUNBOOKS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Base of the `url` field and of links (default: http:// + the listen address).
    #[arg(long, env = "RUNBOOKS_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Repository cache and working trees.
    #[arg(long, env = "RUNBOOKS_DATA_DIR", default_value = "./runbooks-data")]
    pub data_dir: PathBuf,
    /// Leaf steps executed at once by this process.
    #[arg(long, env = "RUNBOOKS_WORKERS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// GitHub REST base (GitHub Enterprise Server: https://HOST/api/v3).
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
    /// The GitHub App's id.
    #[arg(long, env = "GITHUB_APP_ID")]
    pub github_app_id: Option<u64>,
    /// The app's private key (PEM), inline.
    #[arg(
        long,
        env = "GITHUB_PRIVATE_KEY",
        hide_env_values = true,
        conflicts_with = "github_private_key_path"
    )]
    pub github_private_key: Option<String>,
    /// The app's private key (PEM), from a file.
    #[arg(long, env = "GITHUB_PRIVATE_KEY_PATH")]
    pub github_private_key_path: Option<PathBuf>,
    /// Webhook HMAC secret; several, comma-separated, during a rotation.
    #[arg(long, env = "GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub github_webhook_secret: Option<String>,
    /// Which agent plans and executes steps.
    #[arg(long, env = "RUNBOOKS_AGENT", value_enum, default_value_t = AgentKind::Script)]
    pub agent: AgentKind,
    /// Base URL of the OpenAI-compatible endpoint (openai agent).
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub openai_base_url: Option<String>,
    /// API key of the OpenAI-compatible endpoint (openai agent).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// Model name (openai agent).
    #[arg(long = "model", env = "RUNBOOKS_MODEL")]
    pub model: Option<String>,
    /// The coding-agent command run per step (command agent).
    #[arg(long, env = "RUNBOOKS_AGENT_COMMAND")]
    pub agent_command: Option<String>,
    /// The command that plans free-text prompts, for coding CLIs that plan differently from
    /// how they carry out a step (command agent; default: the agent command).
    #[arg(long, env = "RUNBOOKS_AGENT_PLAN_COMMAND")]
    pub agent_plan_command: Option<String>,
    /// The jail agent commands run in: `bwrap` (bubblewrap: only the working tree, a private
    /// HOME and /tmp and the system directories; own processes and network), `none` (no
    /// jail: an explicit opt-out), or `auto` (bwrap, and the server refuses to start when it
    /// cannot make one).
    #[arg(long, env = "RUNBOOKS_SANDBOX", value_enum, default_value_t = SandboxKind::Auto)]
    pub sandbox: SandboxKind,
    /// Where jailed agent commands may connect: `none`, `allowlist` (the hosts of
    /// RUNBOOKS_AGENT_ALLOW_HOSTS, through the server's egress proxy) or `open` (any public
    /// address, through the proxy). Default: `none` for the script agent, `allowlist` for
    /// the others. Never the server's own ports, private or metadata addresses.
    #[arg(long, env = "RUNBOOKS_AGENT_NETWORK", value_enum)]
    pub agent_network: Option<NetworkKind>,
    /// Hosts jailed agent commands may reach with `allowlist`, comma-separated:
    /// `registry.npmjs.org`, `*.pypi.org` (its subdomains), `api.example.com:443`, or an IP
    /// address (the only way to allow a private or loopback address).
    #[arg(long, env = "RUNBOOKS_AGENT_ALLOW_HOSTS", default_value = "")]
    pub agent_allow_hosts: String,
    /// Names of the server's environment variables passed to agent commands, comma-separated
    /// (e.g. a coding CLI's model key). The server's and GitHub's own are refused.
    #[arg(long, env = "RUNBOOKS_AGENT_ENV", value_delimiter = ',')]
    pub agent_env: Vec<String>,
    /// More directories jailed agent commands may read, comma-separated absolute paths
    /// (e.g. where a coding CLI is installed).
    #[arg(long, env = "RUNBOOKS_AGENT_READ_PATHS", value_delimiter = ',')]
    pub agent_read_paths: Vec<PathBuf>,
    /// Processes and threads an agent command may run (counted for the server's user as a
    /// whole, as the kernel counts them); 0: no limit.
    #[arg(long, env = "RUNBOOKS_AGENT_MAX_PROCESSES", default_value_t = 4096)]
    pub agent_max_processes: u64,
    /// The largest file an agent command may write (e.g. `4GiB`); 0: no limit.
    #[arg(long, env = "RUNBOOKS_AGENT_MAX_FILE_SIZE", default_value = "4GiB",
          value_parser = parse_size)]
    pub agent_max_file_size: u64,
    /// Memory one agent process may use (data and private mappings, e.g. `8GiB`); 0: no
    /// limit.
    #[arg(long, env = "RUNBOOKS_AGENT_MAX_MEMORY", default_value = "8GiB",
          value_parser = parse_size)]
    pub agent_max_memory: u64,
    /// How long a worker's claim on a runbook lasts without renewal; work of a process that
    /// died is taken over after this.
    #[arg(long, env = "RUNBOOKS_LEASE_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_seconds: u64,
    /// Least time between two edits of a runbook's status comment on GitHub (e.g. `5s`):
    /// changes in between are coalesced into the next edit, to stay well inside GitHub's
    /// secondary rate limits.
    #[arg(long, env = "RUNBOOKS_STATUS_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub status_interval: std::time::Duration,
    /// API requests one token may make per minute; 0 turns the limit off.
    #[arg(long, env = "RUNBOOKS_RATE_LIMIT", default_value_t = 600)]
    pub rate_limit: u32,
    /// Log lines as text or JSON.
    #[arg(long, env = "RUNBOOKS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Longest time a request may take to arrive and be answered (e.g. `60s`); also how long
    /// an idle connection is kept. The dashboard's live-update streams are not cut by it.
    #[arg(long, env = "RUNBOOKS_REQUEST_TIMEOUT", default_value = "60s",
          value_parser = parse_timeout)]
    pub request_timeout: std::time::Duration,
    /// Most connections served at once; further ones wait to be accepted.
    #[arg(long, env = "RUNBOOKS_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Most live-update streams one dashboard session may keep open at once (in this
    /// process).
    #[arg(long, env = "RUNBOOKS_MAX_STREAMS_PER_SESSION", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_streams_per_session: u32,
    /// Sign-in attempts and requests with API tokens this process does not know yet, per
    /// client address and minute; 0 turns the limit off.
    #[arg(long, env = "RUNBOOKS_AUTH_RATE_LIMIT", default_value_t = 30)]
    pub auth_rate_limit: u32,
    /// Reverse proxies whose `X-Forwarded-For` names the client, comma-separated addresses
    /// or CIDR ranges (e.g. `10.0.0.0/8`). Without them, the client is the connection's peer.
    #[arg(long, env = "RUNBOOKS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// How long handled webhook deliveries are remembered (at least 3 days: GitHub lets a
    /// delivery be redelivered for 3 days, and a redelivery of a forgotten one is handled
    /// again).
    #[arg(long, env = "RUNBOOKS_DELIVERY_RETENTION", default_value = "7d",
          value_parser = parse_retention)]
    pub delivery_retention: std::time::Duration,
}

/// A request timeout: at least a second.
fn parse_timeout(value: &str) -> Result<std::time::Duration, String> {
    let timeout = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if timeout < std::time::Duration::from_secs(1) {
        return Err("the timeout must be at least 1s".to_string());
    }
    Ok(timeout)
}

/// The least retention of handled deliveries: GitHub's redelivery window.
pub const MIN_DELIVERY_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(3 * 24 * 60 * 60);

fn parse_retention(value: &str) -> Result<std::time::Duration, String> {
    let retention = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if retention < MIN_DELIVERY_RETENTION {
        return Err(
            "deliveries must be kept at least 3d: GitHub lets a delivery be redelivered for 3 \
             days, and one no longer remembered would be handled again"
                .to_string(),
        );
    }
    Ok(retention)
}

/// A size such as `4GiB`, `512MiB`, `1G` or a number of bytes.
fn parse_size(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("not a size ({e}); e.g. 4GiB, 512MiB or 1048576"))
}

/// The server's settings, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Without a trailing slash. `None`: derived from the bound address.
    pub public_url: Option<String>,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub workers: u32,
    pub lease: std::time::Duration,
    /// Least time between two edits of a status comment.
    pub status_interval: std::time::Duration,
    pub github: GithubConfig,
    pub agent: AgentConfig,
    /// Requests per minute and token; 0 is unlimited.
    pub rate_limit_per_minute: u32,
    pub log_format: LogFormat,
    pub limits: ServerLimits,
    /// How long handled webhook deliveries are kept.
    pub delivery_retention: std::time::Duration,
}

/// What the server grants one connection, session and client address.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Longest time for a request to arrive and be answered; idle connections close after it.
    pub request_timeout: std::time::Duration,
    pub max_connections: u32,
    pub max_streams_per_session: u32,
    /// Sign-ins and checks of unknown tokens per client address and minute; 0 is unlimited.
    pub auth_rate_limit_per_minute: u32,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub struct GithubConfig {
    pub api_url: String,
    pub app_id: Option<u64>,
    pub private_key: Option<PrivateKeySource>,
    pub webhook_secrets: Vec<SecretString>,
}

#[derive(Debug, Clone)]
pub enum PrivateKeySource {
    Inline(SecretString),
    File(PathBuf),
}

fn check_http_url(name: &str, url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(trimmed.to_string())
        }
        // The value is not echoed: a URL may carry credentials (`https://user:key@…`).
        _ => anyhow::bail!("{name} must be an http:// or https:// URL"),
    }
}

impl Config {
    /// Checks the arguments and turns them into a configuration.
    pub fn from_args(args: ServeArgs) -> anyhow::Result<Self> {
        let public_url = args
            .public_url
            .as_deref()
            .map(|url| check_http_url("RUNBOOKS_PUBLIC_URL", url))
            .transpose()?;
        let api_url = check_http_url("GITHUB_API_URL", &args.github_api_url)?;
        let openai_base_url = args
            .openai_base_url
            .as_deref()
            .map(|url| check_http_url("OPENAI_BASE_URL", url))
            .transpose()?;
        let private_key = match (args.github_private_key, args.github_private_key_path) {
            (Some(pem), _) => Some(PrivateKeySource::Inline(SecretString::from(pem))),
            (None, Some(path)) => Some(PrivateKeySource::File(path)),
            (None, None) => None,
        };
        let webhook_secrets = args
            .github_webhook_secret
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| SecretString::from(s.to_string()))
            .collect();
        let allow_hosts = crate::agent::egress::parse_allow_hosts(&args.agent_allow_hosts)
            .map_err(|e| anyhow::anyhow!("RUNBOOKS_AGENT_ALLOW_HOSTS: {e}"))?;
        if let Some(network @ (NetworkKind::None | NetworkKind::Open)) = args.agent_network
            && !allow_hosts.is_empty()
        {
            // A list that would silently do nothing is a mistake worth reporting.
            let network = if network == NetworkKind::None {
                "none"
            } else {
                "open"
            };
            anyhow::bail!(
                "RUNBOOKS_AGENT_ALLOW_HOSTS is set, but RUNBOOKS_AGENT_NETWORK={network} does \
                 not use it: set RUNBOOKS_AGENT_NETWORK=allowlist or leave \
                 RUNBOOKS_AGENT_ALLOW_HOSTS empty"
            );
        }
        let names: Vec<&str> = args
            .agent_env
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .collect();
        // Every name is checked before any value is read: a refused name is the message.
        for name in &names {
            crate::agent::jail::check_pass_through(name)?;
            // The openai agent's own key is the server's secret when that agent is in use.
            if args.agent == AgentKind::Openai && name.eq_ignore_ascii_case("OPENAI_API_KEY") {
                anyhow::bail!(
                    "RUNBOOKS_AGENT_ENV names OPENAI_API_KEY, the openai agent's own key: the \
                     model's key stays with the server"
                );
            }
        }
        let mut pass_env = Vec::new();
        for name in names {
            let value = std::env::var_os(name).ok_or_else(|| {
                anyhow::anyhow!("RUNBOOKS_AGENT_ENV names {name}, which is not set")
            })?;
            pass_env.push(crate::agent::jail::PassedVar {
                name: name.to_string(),
                value,
            });
        }
        for path in &args.agent_read_paths {
            if !path.is_absolute() {
                anyhow::bail!(
                    "RUNBOOKS_AGENT_READ_PATHS: {} is not an absolute path",
                    path.display()
                );
            }
        }
        let trusted_proxies = args
            .trusted_proxies
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "RUNBOOKS_TRUSTED_PROXIES: {p:?} is neither an IP address nor a CIDR \
                             range"
                        )
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let limit = |value: u64| (value > 0).then_some(value);
        match args.agent {
            AgentKind::Openai if openai_base_url.is_none() || args.model.is_none() => {
                anyhow::bail!("the openai agent needs OPENAI_BASE_URL and RUNBOOKS_MODEL")
            }
            AgentKind::Command if args.agent_command.is_none() => {
                anyhow::bail!("the command agent needs RUNBOOKS_AGENT_COMMAND")
            }
            _ => {}
        }
        Ok(Self {
            listen: args.listen,
            public_url,
            database_url: args.database.database_url,
            data_dir: args.data_dir,
            workers: args.workers,
            lease: std::time::Duration::from_secs(args.lease_seconds),
            status_interval: args.status_interval,
            github: GithubConfig {
                api_url,
                app_id: args.github_app_id,
                private_key,
                webhook_secrets,
            },
            agent: AgentConfig {
                kind: args.agent,
                openai_base_url,
                openai_api_key: args.openai_api_key.map(SecretString::from),
                model: args.model,
                command: args.agent_command,
                plan_command: args.agent_plan_command,
                sandbox: args.sandbox,
                network: args.agent_network,
                allow_hosts,
                pass_env,
                read_paths: args.agent_read_paths,
                limits: crate::agent::jail::ResourceLimits {
                    processes: limit(args.agent_max_processes),
                    file_size: limit(args.agent_max_file_size),
                    memory: limit(args.agent_max_memory),
                },
                helper: std::env::current_exe().ok(),
            },
            rate_limit_per_minute: args.rate_limit,
            log_format: args.log_format,
            limits: ServerLimits {
                request_timeout: args.request_timeout,
                max_connections: args.max_connections,
                max_streams_per_session: args.max_streams_per_session,
                auth_rate_limit_per_minute: args.auth_rate_limit,
                trusted_proxies,
            },
            delivery_retention: args.delivery_retention,
        })
    }

    /// A configuration for tests and embedding: defaults everywhere, the given database,
    /// listening on an OS-chosen loopback port. The process's environment is not read: a
    /// developer's own `GITHUB_APP_ID` or `RUNBOOKS_AGENT` must not change what a test runs.
    pub fn for_database(database_url: &str) -> Self {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let command = Cli::command()
            .mut_subcommand("serve", |serve| serve.mut_args(|arg| arg.env(None::<&str>)));
        let matches = command.get_matches_from(["runbooks", "serve", "--listen", "127.0.0.1:0"]);
        let args = Cli::from_arg_matches(&matches).expect("the defaults parse");
        let Command::Serve(mut serve) = args.command else {
            unreachable!("parsed a serve command")
        };
        serve.database.database_url = database_url.to_string();
        Self::from_args(*serve).expect("the defaults are valid")
    }
}

/// Where the client commands find the server, and the token they present.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the runbooks server.
    #[arg(long, env = "RUNBOOKS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token (from `runbooks token create`); prefer the environment variable, a flag
    /// shows in the process list.
    #[arg(long, env = "RUNBOOKS_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub token: Option<SecretString>,
}

fn parse_secret(value: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(value.to_string()))
}

/// How often `watch` asks the server.
#[derive(Debug, Clone, Args)]
pub struct WatchOptions {
    /// Time between two polls of the server (e.g. `500ms`, `2s`; at least 100ms).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: std::time::Duration,
}

fn parse_interval(value: &str) -> Result<std::time::Duration, String> {
    let interval = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if interval < std::time::Duration::from_millis(100) {
        return Err("the interval must be at least 100ms".to_string());
    }
    Ok(interval)
}

/// `runbooks create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Organisation of the repository (with --repo).
    #[arg(long, requires = "repo", conflicts_with = "repository")]
    pub org: Option<String>,
    /// Name of the repository (with --org).
    #[arg(long, requires = "org", conflicts_with = "repository")]
    pub repo: Option<String>,
    /// The repository as ORG/NAME (instead of --org and --repo).
    #[arg(long, value_name = "ORG/NAME", required_unless_present_all = ["org", "repo"])]
    pub repository: Option<String>,
    /// Title of the runbook (generated from the prompt when missing).
    #[arg(long)]
    pub title: Option<String>,
    /// Only plan: the steps wait for `execute` (sends `oneshot: false`).
    #[arg(long)]
    pub plan: bool,
    /// Open the pull requests as drafts.
    #[arg(long, conflicts_with = "ready")]
    pub draft: bool,
    /// Open the pull requests ready for review (not drafts).
    #[arg(long)]
    pub ready: bool,
    /// How pull requests are opened (default: the repository's configuration, else
    /// single_pr).
    #[arg(
        long,
        value_name = "MODE",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(["single_pr", "stacked_pr", "manual"]),
            |mode| mode.parse::<crate::domain::PrMode>().expect("one of the listed modes"),
        )
    )]
    pub pr_mode: Option<crate::domain::PrMode>,
    /// Branch the pull requests go into (default: the repository's default branch).
    #[arg(long, value_name = "BRANCH")]
    pub target: Option<String>,
    /// Text put first in the body of every pull request the runbook opens.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// A label applied to every pull request the runbook opens (repeat for several).
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Who the runbook is attributed to in PR bodies and commit trailers.
    #[arg(long, value_name = "EMAIL")]
    pub author_email: Option<String>,
    /// The task, in plain words (or use --prompt-file).
    #[arg(
        required_unless_present = "prompt_file",
        conflicts_with = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from a file (`-`: standard input).
    #[arg(long, value_name = "PATH")]
    pub prompt_file: Option<PathBuf>,
    /// Print the runbook document as JSON.
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Then follow its progress, as `runbooks watch` does (and exit as it does).
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub watch_options: WatchOptions,
}

/// `runbooks status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The runbook number.
    #[arg(value_parser = runbook_number())]
    pub number: crate::domain::RunbookNumber,
    /// Print the runbook document as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `runbooks watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The runbook number.
    #[arg(value_parser = runbook_number())]
    pub number: crate::domain::RunbookNumber,
    #[command(flatten)]
    pub options: WatchOptions,
}

/// A runbook number argument: clap's range check (and its words for a number out of range),
/// then the number as the rest of the code holds it.
fn runbook_number() -> impl clap::builder::TypedValueParser<Value = crate::domain::RunbookNumber> {
    clap::value_parser!(i64)
        .range(1..)
        .map(|n| crate::domain::RunbookNumber::try_from(n).expect("the range starts at 1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn no_setting_shows_its_environment_value_in_help() {
        fn check(command: &clap::Command, seen: &mut usize) {
            for arg in command.get_arguments() {
                if arg.get_env().is_some() {
                    *seen += 1;
                    assert!(
                        arg.is_hide_env_values_set(),
                        "{} shows its value",
                        arg.get_id()
                    );
                }
            }
            for sub in command.get_subcommands() {
                check(sub, seen);
            }
        }
        let mut seen = 0;
        check(&Cli::command_line(), &mut seen);
        assert!(seen > 30, "{seen} settings with a variable");
    }

    #[test]
    fn urls_are_checked_and_trimmed() {
        assert_eq!(
            check_http_url("X", "https://runbooks.example.com/").unwrap(),
            "https://runbooks.example.com"
        );
        assert!(check_http_url("X", "ftp://x").is_err());
        assert!(check_http_url("X", "http://").is_err());
    }
}
