//! Starting and stopping the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::agent;
use crate::api::{self, AppState};
use crate::config::Config;
use crate::engine::{Engine, EngineConfig};
use crate::git::RepoCache;
use crate::github::GitHubApp;
use crate::store::{self, Store};

/// A server running in the background of this process.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The base of `url` fields and links.
    pub public_url: String,
    pub store: Arc<dyn Store>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting connections, finishes the requests in flight and waits for that.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .context("the server task panicked")??;
        Ok(())
    }
}

/// Opens the database (running migrations), binds the listen address and serves in the
/// background.
pub async fn start(config: &Config) -> anyhow::Result<RunningServer> {
    let store = store::connect(&config.database_url)
        .await
        .context("could not open the database")?;
    start_with_store(config, store).await
}

/// Like [`start`], with a store opened by the caller.
pub async fn start_with_store(
    config: &Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("could not listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let mut state = AppState::new(store.clone(), &public_url, config.rate_limit_per_minute);
    state.github = GitHubApp::from_config(&config.github)
        .context("the GitHub App settings are not usable")?
        .map(Arc::new);
    state.webhook_secrets = config.github.webhook_secrets.clone().into();
    let mut workers = Vec::new();
    match &state.github {
        Some(github) => {
            let jail = agent::jail(&config.agent, jail_site(config, addr)?).await?;
            let agent = agent::from_config(
                &config.agent,
                agent::Limits {
                    jail,
                    ..agent::Limits::default()
                },
            )
            .context("the agent settings are not usable")?;
            let engine = Engine::new(
                store.clone(),
                github.clone(),
                agent,
                RepoCache::new(&config.data_dir),
                EngineConfig {
                    workers: config.workers as usize,
                    lease: config.lease,
                    public_url: public_url.clone(),
                    status_interval: config.status_interval,
                    ..EngineConfig::default()
                },
            );
            workers = engine.start();
            state.engine = Some(engine);
        }
        None => tracing::warn!(
            "no GitHub App configured (GITHUB_APP_ID): runbooks are accepted but not run"
        ),
    }
    let intake = state.intake.spawn(
        store.clone(),
        state.github.clone(),
        state.engine.clone(),
        config.delivery_retention,
    );
    let shutting_down = state.shutting_down.clone();
    let app = api::router(state);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
                shutting_down.send_replace(true);
            })
            .await;
        intake.abort();
        // A step still running is abandoned safely: its lease expires and the step runs
        // again (or is found already pushed) when a worker takes the runbook over.
        for worker in workers {
            worker.abort();
        }
        served
    });
    Ok(RunningServer {
        addr,
        public_url,
        store,
        shutdown: Some(tx),
        task,
    })
}

/// What the jail must keep from agent commands: the server's own files (the data directory,
/// made private here, the database file and the key file) and its own listener.
fn jail_site(config: &Config, listening: SocketAddr) -> anyhow::Result<agent::JailSite> {
    use std::os::unix::fs::PermissionsExt as _;
    let data_dir = std::path::absolute(&config.data_dir)
        .with_context(|| format!("the data directory {}", config.data_dir.display()))?;
    crate::git::create_private_dir(&data_dir)
        .and_then(|()| std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)))
        .with_context(|| format!("making the data directory {}", data_dir.display()))?;
    let mut hidden = vec![data_dir];
    if let Some(file) = crate::store::SqliteStore::file(&config.database_url) {
        hidden.extend(std::path::absolute(file).ok());
    }
    if let Some(crate::config::PrivateKeySource::File(key)) = &config.github.private_key {
        hidden.extend(std::path::absolute(key).ok());
    }
    let mut deny = vec![config.listen, listening];
    deny.extend(database_addresses(&config.database_url));
    Ok(agent::JailSite { hidden, deny })
}

/// Where a PostgreSQL database URL points, resolved now (a Unix socket has no address; the
/// jail does not show it anyway): the egress proxy never connects there, even to an address
/// an allowlist names.
fn database_addresses(url: &str) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    use std::str::FromStr as _;
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Vec::new();
    }
    let Ok(options) = sqlx::postgres::PgConnectOptions::from_str(url) else {
        return Vec::new();
    };
    let host = options.get_host();
    if host.starts_with('/') {
        return Vec::new();
    }
    (host, options.get_port())
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::database_addresses;

    #[test]
    fn the_database_is_denied_to_agents_by_its_address() {
        let addresses = database_addresses("postgres://runbooks:pw@127.0.0.1:6543/runbooks");
        assert_eq!(addresses, ["127.0.0.1:6543".parse().unwrap()]);
        let default_port = database_addresses("postgresql://db@127.0.0.1/runbooks");
        assert_eq!(default_port, ["127.0.0.1:5432".parse().unwrap()]);
        assert!(database_addresses("sqlite://runbooks.db").is_empty());
        assert!(database_addresses("postgres:///runbooks?host=/run/postgresql").is_empty());
    }
}
