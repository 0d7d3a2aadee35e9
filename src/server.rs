//! Starting and stopping the HTTP server.
//!
//! The accept loop is ours (hyper's HTTP/1 connection builder under it) so that connections
//! are bounded where they start: at most `RUNBOOKS_MAX_CONNECTIONS` are served at once — one
//! more waits in the kernel's backlog until one ends, instead of costing a task and memory —
//! and a connection must send a request's head within `RUNBOOKS_REQUEST_TIMEOUT` (hyper's
//! header-read timeout, which also closes idle keep-alive connections), so slow or silent
//! clients cannot hold the bound forever. The request timeout itself lives in the router
//! ([`crate::routes::router`]). Every request carries its peer address
//! ([`axum::extract::ConnectInfo`]) for the per-address limits.
//!
//! A graceful shutdown stops accepting, asks every connection to finish the request it is
//! serving, ends the dashboard's event streams and waits for the connections to close.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

use crate::agent;
use crate::config::Config;
use crate::engine::{Engine, EngineConfig};
use crate::git::RepoCache;
use crate::github::GitHubApp;
use crate::http::AppState;
use crate::intake::Intake;
use crate::ops::App;
use crate::store::{self, Store};

/// A server running in the background of this process.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The base of `url` fields and links.
    pub public_url: String,
    pub store: Arc<dyn Store>,
    /// The engine, when a GitHub App is configured: its progress can be followed
    /// ([`Engine::subscribe`]).
    pub engine: Option<Arc<Engine>>,
    /// The webhook intake: the deliveries it has handled can be followed
    /// ([`Intake::handled`]).
    pub intake: Intake,
    connections: Arc<Connections>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Connections served now, and the most ever served at once.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
    peak: AtomicUsize,
}

impl Connections {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn opened(&self) {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RunningServer {
    /// The connections this server serves.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

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
    let github = GitHubApp::from_config(&config.github)
        .context("the GitHub App settings are not usable")?
        .map(Arc::new);
    let mut workers = Vec::new();
    let mut engine = None;
    match &github {
        Some(github) => {
            let jail = agent::jail(&config.agent, jail_site(config, addr)?).await?;
            // One set of limits: the agent's steps and the repository's setup run under it.
            let limits = agent::Limits {
                jail,
                ..agent::Limits::default()
            };
            let agent = agent::from_config(&config.agent, limits.clone())
                .context("the agent settings are not usable")?;
            let started = Engine::new(
                store.clone(),
                github.clone(),
                agent,
                RepoCache::new(&config.data_dir),
                EngineConfig {
                    workers: config.workers as usize,
                    lease: config.lease,
                    public_url: public_url.clone(),
                    status_interval: config.status_interval,
                    limits,
                    ..EngineConfig::default()
                },
            );
            workers = started.start();
            engine = Some(started);
        }
        None => tracing::warn!(
            "no GitHub App configured (GITHUB_APP_ID): runbooks are accepted but not run"
        ),
    }
    let app = App::new(store.clone(), github, engine.clone());
    let mut state = AppState::new(app, &public_url, config.rate_limit_per_minute)
        .with_auth_rate_limit(config.limits.auth_rate_limit_per_minute);
    state.trusted_proxies = config.limits.trusted_proxies.clone().into();
    state.streams = Arc::new(crate::http::SessionStreams::new(
        config.limits.max_streams_per_session as usize,
    ));
    state.request_timeout = config.limits.request_timeout;
    state.webhook_secrets = config.github.webhook_secrets.clone().into();
    let deliveries = state.intake.clone();
    let intake = state
        .intake
        .spawn(state.app.clone(), config.delivery_retention);
    let housekeeping = tokio::spawn({
        let state = state.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                state.forget_idle_limits();
            }
        }
    });
    let shutting_down = state.shutting_down.clone();
    let app = crate::routes::router(state);
    let (tx, rx) = oneshot::channel::<()>();
    let connections = Arc::new(Connections::default());
    let bounds = Bounds {
        max_connections: config.limits.max_connections as usize,
        header_timeout: config.limits.request_timeout,
    };
    let counted = connections.clone();
    let task = tokio::spawn(async move {
        let served = serve(listener, app, bounds, counted, async move {
            let _ = rx.await;
            shutting_down.send_replace(true);
        })
        .await;
        intake.abort();
        housekeeping.abort();
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
        engine,
        intake: deliveries,
        connections,
        shutdown: Some(tx),
        task,
    })
}

/// What one server grants its connections.
struct Bounds {
    max_connections: usize,
    /// Longest wait for a request's head (also on an idle keep-alive connection).
    header_timeout: Duration,
}

/// Accepts connections (at most `bounds.max_connections` at once) and serves `app` on each
/// until `shutdown` completes; then lets every connection finish its request and close.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    bounds: Bounds,
    connections: Arc<Connections>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a receiver; all of them dropped means every connection closed.
    let (closed_tx, closed_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let mut stop = stop_rx.clone();
        let closed = closed_rx.clone();
        let connections = connections.clone();
        connections.opened();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(bounds.header_timeout);
            let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = async { drop(stop.wait_for(|stop| *stop).await) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            connections.closed();
            drop(slot);
            drop(closed);
        });
    }
    stop_tx.send_replace(true);
    drop(closed_rx);
    closed_tx.closed().await;
    Ok(())
}

/// An accept that failed: a connection given up by its client is nothing; running out of
/// file descriptors passes after a while, so wait a little rather than spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(%error, "could not accept a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
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
