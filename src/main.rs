use std::process::ExitCode;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use runbooks::agent::forward;

#[cfg(feature = "demo")]
mod demo;
use runbooks::config::{Cli, Command, Config, LogFormat, OrgCommand, TokenCommand};
use runbooks::store::{self, Store};
use runbooks::{client, domain, server, tokens};

fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // The jail's network forwarder starts before any argument parser, runtime or logging.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|arg| arg == forward::SUBCOMMAND) {
        forward::main(args.collect())
    }
    cli_main()
}

#[tokio::main]
async fn cli_main() -> ExitCode {
    let cli = Cli::from_env_args();
    // The client commands choose their own exit status (see `runbooks::client`).
    let cli = match cli.command {
        Command::Create(args) => return client::create(*args).await,
        Command::Status(args) => return client::status(args).await,
        Command::Watch(args) => return client::watch(args).await,
        command => Cli { command },
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::from_args(*args)?;
            init_logging(config.log_format, "info");
            serve(config).await
        }
        Command::Migrate(db) => {
            let store = store::connect(&db.database_url)
                .await
                .context("could not open the database")?;
            eprintln!("the {} database is up to date", store.backend());
            Ok(())
        }
        Command::Token(command) => token(command).await,
        Command::Org(command) => org(command).await,
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } | Command::Standin { .. } => anyhow::bail!(
            "this build has no GitHub stand-in: `demo` and `standin` need the `demo` feature"
        ),
        #[cfg(feature = "demo")]
        Command::Demo { listen, serve } => {
            // The demo says itself when its sample runs unjailed.
            init_logging(LogFormat::Text, "warn,runbooks::agent=error");
            demo::run(demo::DemoOptions {
                listen,
                keep_serving: serve,
            })
            .await
        }
        #[cfg(feature = "demo")]
        Command::Standin {
            listen,
            repos,
            env_file,
        } => {
            init_logging(LogFormat::Text, "warn");
            let options = demo::StandinOptions {
                listen,
                repos,
                env_file,
            };
            demo::standin(options, shutdown_signal()).await
        }
        Command::Create(_) | Command::Status(_) | Command::Watch(_) => {
            unreachable!("client commands are dispatched in main")
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = server::start(&config).await?;
    tracing::info!(
        addr = %running.addr,
        database = running.store.backend(),
        url = %running.public_url,
        "runbooks listening on http://{}",
        running.addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            orgs,
            name,
            database,
        } => {
            let orgs: Vec<String> = orgs.iter().map(|o| o.trim().to_string()).collect();
            for org in &orgs {
                domain::runbook::check_org("--org", org).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let store = open(&database.database_url).await?;
            let token = tokens::generate();
            let info = store
                .create_token(&name, &orgs, &tokens::hash(&token))
                .await?;
            eprintln!(
                "created token {} for {}; it is shown once, keep it now",
                info.id,
                info.orgs.join(", ")
            );
            println!("{token}");
            Ok(())
        }
        TokenCommand::List { database } => {
            let store = open(&database.database_url).await?;
            println!(
                "{:<6} {:<20} {:<24} {:<22} STATUS",
                "ID", "NAME", "ORGS", "CREATED"
            );
            for t in store.list_tokens().await? {
                let status = match t.revoked_at_ms {
                    Some(ms) => format!("revoked {}", timestamp(ms)),
                    None => "active".to_string(),
                };
                println!(
                    "{:<6} {:<20} {:<24} {:<22} {status}",
                    t.id,
                    t.name,
                    t.orgs.join(","),
                    timestamp(t.created_at_ms)
                );
            }
            Ok(())
        }
        TokenCommand::Revoke { id, database } => {
            let store = open(&database.database_url).await?;
            if store.revoke_token(id).await? {
                eprintln!("revoked token {id}");
                Ok(())
            } else {
                anyhow::bail!("there is no active token with id {id}")
            }
        }
    }
}

async fn org(command: OrgCommand) -> anyhow::Result<()> {
    use domain::LimitChanges;
    match command {
        OrgCommand::Set {
            org,
            max_running,
            max_steps,
            monthly_tokens,
            monthly_agent_minutes,
            database,
        } => {
            let org = org.trim().to_string();
            domain::runbook::check_org("ORG", &org).map_err(|e| anyhow::anyhow!("{e}"))?;
            let changes = LimitChanges {
                max_running,
                max_steps,
                monthly_tokens,
                monthly_agent_ms: monthly_agent_minutes,
            };
            if changes.is_empty() {
                anyhow::bail!(
                    "nothing to change: give --max-running, --max-steps, --monthly-tokens or \
                     --monthly-agent-minutes (a value, or `none` to remove the limit)"
                );
            }
            let store = open(&database.database_url).await?;
            let limits = store.update_org_limits(&org, &changes).await?;
            eprintln!("updated the limits of {}", org.to_lowercase());
            print_limits(store.as_ref(), &org, &limits).await
        }
        OrgCommand::Show { org, database } => {
            let org = org.trim().to_string();
            domain::runbook::check_org("ORG", &org).map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = open(&database.database_url).await?;
            let limits = store.org_limits(&org).await?;
            print_limits(store.as_ref(), &org, &limits).await
        }
    }
}

/// An organisation's limits, each with this month's use where it has one.
async fn print_limits(
    store: &dyn Store,
    org: &str,
    limits: &domain::OrgLimits,
) -> anyhow::Result<()> {
    use domain::limits::{civil_from_days, minutes, month_start_ms};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let start = month_start_ms(now);
    let used = store.org_usage_since(org, start).await?;
    let (year, month, _) = civil_from_days(start / 86_400_000);
    let count = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
    println!("organisation {}", org.to_lowercase());
    println!("max-running            {}", count(limits.max_running));
    println!("max-steps              {}", count(limits.max_steps));
    println!(
        "monthly-tokens         {:<12} used in {year}-{month:02} (UTC): {}",
        count(limits.monthly_tokens),
        used.tokens()
    );
    println!(
        "monthly-agent-minutes  {:<12} used in {year}-{month:02} (UTC): {}",
        limits.monthly_agent_ms.map_or("none".to_string(), minutes),
        minutes(used.wall_ms)
    );
    Ok(())
}

async fn open(url: &str) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    store::connect(url)
        .await
        .context("could not open the database")
}

fn timestamp(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}
