//! Storage: one interface, two implementations — SQLite (the embedded default, a file in WAL
//! mode) and PostgreSQL (for several replicas).
//!
//! The interface is cut by aggregate, a trait and a module each, with its records beside it:
//! tokens ([`TokenStore`]), runbooks and their follow-ups ([`RunbookStore`]), their plans'
//! steps ([`StepStore`]), their pull requests ([`PullStore`]), the work queue — leases, cancel
//! requests, debts to GitHub ([`LeaseStore`]), the threads of runbooks started from comments
//! ([`ThreadStore`]), webhook deliveries ([`DeliveryStore`]), dashboard sessions
//! ([`SessionStore`]), runbooks' repository setups ([`SetupStore`]) and organisations' limits
//! ([`OrgStore`]). [`Store`] is all of them together, so an `Arc<dyn Store>` reaches every
//! method without importing the aggregates' traits. Each aggregate's SQL is written once, with
//! `$1`-style parameters that both databases accept, and compiled for each backend (`sql.rs`).

mod deliveries;
mod leases;
mod orgs;
mod postgres;
mod pulls;
mod runbooks;
mod sessions;
mod setup;
mod sql;
mod sqlite;
mod steps;
mod threads;
mod tokens;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

pub use deliveries::{DeliveryRecord, DeliveryStore};
pub use leases::{LeaseStore, Owed};
pub use orgs::{OrgStore, budget_refusal};
pub use postgres::PgStore;
pub use pulls::{PullRecord, PullStore, PullWithSteps};
pub use runbooks::{FollowUpRecord, RunbookFilter, RunbookRead, RunbookRecord, RunbookStore};
pub use sessions::{DashboardSession, NewDashboardSession, SessionStore};
pub use setup::SetupStore;
pub use sqlite::SqliteStore;
pub use steps::{StepEnd, StepRecord, StepStore};
pub use threads::{NewThread, ThreadRecord, ThreadStore};
pub use tokens::{TokenInfo, TokenStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database holds a value this version cannot read: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The whole store: every aggregate's trait, and the database itself.
#[async_trait]
pub trait Store:
    TokenStore
    + RunbookStore
    + StepStore
    + PullStore
    + LeaseStore
    + ThreadStore
    + DeliveryStore
    + SessionStore
    + SetupStore
    + OrgStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Runs the embedded migrations that have not run yet.
    async fn migrate(&self) -> StoreResult<()>;

    /// Whether the database answers.
    async fn ping(&self) -> StoreResult<()>;
}

/// Opens the database named by a `sqlite://…` or `postgres://…` URL (creating a missing
/// SQLite file) and brings its schema up to date.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    let store: Arc<dyn Store> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(PgStore::connect(url).await?)
        } else if url.starts_with("sqlite:") {
            Arc::new(SqliteStore::connect(url).await?)
        } else {
            return Err(StoreError::Invalid(
                "the database URL must start with sqlite:// or postgres://".into(),
            ));
        };
    store.migrate().await?;
    Ok(store)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
