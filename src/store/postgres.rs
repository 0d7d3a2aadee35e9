//! PostgreSQL, for running several replicas against one database.

use std::time::Duration;

use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::sql::{
    RUNBOOK_COLUMNS, STEP_COLUMNS, labels_json, parse_labels, parse_pr_mode, parse_state,
    parse_step_number, placeholders, sql_store,
};
use super::{
    DashboardSession, DeliveryRecord, FollowUpRecord, NewDashboardSession, NewThread, PullRecord,
    PullWithSteps, RunbookFilter, RunbookRead, RunbookRecord, StepEnd, StepRecord, Store,
    StoreError, StoreResult, ThreadRecord, TokenInfo, now_ms,
};
use crate::domain::{
    FollowUp, NewRunbook, Plan, PrMode, PullRequestRef, RunbookSummary, StepCounts, StepNumber,
    StepState,
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    const BACKEND: &'static str = "postgres";

    pub async fn connect(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Self { pool })
    }

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    /// Row locks serialise what needs it (the runbook counter is one row, updated first).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

sql_store!(PgStore, sqlx::Postgres);
