//! Runbooks' repository setup: the setup the project configuration asked for (kept when the
//! runbook is first planned, so the file is read once) and what happened when it ran.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{RunbookNumber, SetupConfig, SetupReport};

/// Repository setups of runbooks.
#[async_trait]
pub trait SetupStore: Send + Sync {
    /// Keeps the setup the runbook's repository asks for (replacing one kept before; what
    /// happened when it ran is kept too).
    async fn set_setup_config(
        &self,
        number: RunbookNumber,
        config: &SetupConfig,
    ) -> StoreResult<()>;

    /// The setup kept for the runbook; `None` when its repository asks for none.
    async fn setup_config(&self, number: RunbookNumber) -> StoreResult<Option<SetupConfig>>;

    /// Records what the setup did (it started, or it ended). Does nothing for a runbook whose
    /// repository asks for no setup.
    async fn record_setup(&self, number: RunbookNumber, report: &SetupReport) -> StoreResult<()>;

    /// What the setup did the last time it ran; `None` when it has not run (or the
    /// repository asks for none).
    async fn setup_report(&self, number: RunbookNumber) -> StoreResult<Option<SetupReport>>;
}

/// The SQL of [`SetupStore`], written once for both databases and compiled for
/// each backend by `sql_store!` (`sql.rs`).
macro_rules! setup_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use sqlx::Row as _;
            use $crate::domain::{RunbookNumber, SetupConfig, SetupReport};
            use $crate::store::sql::{parse_cache_outcome, parse_setup_status};
            use $crate::store::{StoreError, StoreResult, now_ms};

            #[async_trait::async_trait]
            impl $crate::store::SetupStore for $store {
                async fn set_setup_config(&self, number: RunbookNumber, config: &SetupConfig) -> StoreResult<()> {
                    let json = serde_json::to_string(config).expect("a setup always serialises");
                    sqlx::query(
                        "INSERT INTO runbook_setup (runbook_number, config, updated_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (runbook_number) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
                    )
                    .bind(number)
                    .bind(json)
                    .bind(now_ms())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn setup_config(&self, number: RunbookNumber) -> StoreResult<Option<SetupConfig>> {
                    let json: Option<String> = sqlx::query_scalar("SELECT config FROM runbook_setup WHERE runbook_number = $1")
                        .bind(number)
                        .fetch_optional(&self.pool)
                        .await?;
                    json.map(|json| {
                        serde_json::from_str(&json)
                            .map_err(|e| StoreError::Corrupt(format!("the setup of runbook {number}: {e}")))
                    })
                    .transpose()
                }

                async fn record_setup(&self, number: RunbookNumber, report: &SetupReport) -> StoreResult<()> {
                    sqlx::query(
                        "UPDATE runbook_setup SET status = $1, cache = $2, log = $3, wall_ms = $4, updated_at = $5 \
                         WHERE runbook_number = $6",
                    )
                    .bind(report.status.as_str())
                    .bind(report.cache.as_str())
                    .bind(&report.log)
                    .bind(report.wall_ms)
                    .bind(now_ms())
                    .bind(number)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn setup_report(&self, number: RunbookNumber) -> StoreResult<Option<SetupReport>> {
                    let row = sqlx::query(
                        "SELECT status, cache, log, wall_ms FROM runbook_setup \
                         WHERE runbook_number = $1 AND status IS NOT NULL",
                    )
                    .bind(number)
                    .fetch_optional(&self.pool)
                    .await?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let status: String = row.try_get("status")?;
                    let cache: Option<String> = row.try_get("cache")?;
                    let log: Option<String> = row.try_get("log")?;
                    let wall_ms: Option<i64> = row.try_get("wall_ms")?;
                    Ok(Some(SetupReport {
                        status: parse_setup_status(&status)?,
                        cache: parse_cache_outcome(cache.as_deref().unwrap_or("none"))?,
                        log: log.unwrap_or_default(),
                        wall_ms: wall_ms.unwrap_or(0),
                    }))
                }
            }
        };
    };
}

pub(super) use setup_sql;
