//! Organisations' limits (`runbooks org set`), read where they are enforced: no cache, so a
//! change takes effect with the next decision, in every process.
//!
//! How many of an organisation's runbooks are running is not stored here: it is counted
//! from the leases when a worker claims one (`leases.rs`), where `org_turns` also records
//! each organisation's last turn.

use async_trait::async_trait;

use super::{Store, StoreResult};
use crate::domain::limits::month_start_ms;
use crate::domain::{LimitChanges, OrgLimits};

/// Limits per organisation (its name compared without regard to case).
#[async_trait]
pub trait OrgStore: Send + Sync {
    /// The organisation's limits; none when it has none.
    async fn org_limits(&self, org: &str) -> StoreResult<OrgLimits>;

    /// Makes `changes` to the organisation's limits, in one transaction; answers them as they
    /// are now.
    async fn update_org_limits(&self, org: &str, changes: &LimitChanges) -> StoreResult<OrgLimits>;
}

/// Why the organisation may not start an agent's work now (its budget for the calendar
/// month of `now_ms`, UTC, is spent), if it may not.
pub async fn budget_refusal(
    store: &dyn Store,
    org: &str,
    now_ms: i64,
) -> StoreResult<Option<String>> {
    let limits = store.org_limits(org).await?;
    if !limits.has_budget() {
        return Ok(None);
    }
    let used = store.org_usage_since(org, month_start_ms(now_ms)).await?;
    Ok(limits.budget_spent(&org.to_lowercase(), &used))
}

/// The SQL of [`OrgStore`], written once for both databases and compiled for each backend
/// by `sql_store!` (`sql.rs`).
macro_rules! org_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use sqlx::Row as _;
            use $crate::domain::{LimitChanges, OrgLimits};
            use $crate::store::{StoreResult, now_ms};

            impl $store {
                async fn read_org_limits<'e, E>(executor: E, org: &str) -> StoreResult<OrgLimits>
                where
                    E: sqlx::Executor<'e, Database = $db>,
                {
                    let row = sqlx::query(
                        "SELECT max_running, max_steps, monthly_tokens, monthly_agent_ms \
                         FROM org_limits WHERE org = $1",
                    )
                    .bind(org.to_lowercase())
                    .fetch_optional(executor)
                    .await?;
                    let Some(row) = row else {
                        return Ok(OrgLimits::default());
                    };
                    let get = |column: &str| -> StoreResult<Option<u64>> {
                        let value: Option<i64> = row.try_get(column)?;
                        Ok(value.map(|v| u64::try_from(v).unwrap_or(0)))
                    };
                    Ok(OrgLimits {
                        max_running: get("max_running")?,
                        max_steps: get("max_steps")?,
                        monthly_tokens: get("monthly_tokens")?,
                        monthly_agent_ms: get("monthly_agent_ms")?,
                    })
                }
            }

            #[async_trait::async_trait]
            impl $crate::store::OrgStore for $store {
                async fn org_limits(&self, org: &str) -> StoreResult<OrgLimits> {
                    Self::read_org_limits(&self.pool, org).await
                }

                async fn update_org_limits(&self, org: &str, changes: &LimitChanges) -> StoreResult<OrgLimits> {
                    let org = org.to_lowercase();
                    let mut tx = self.begin_write().await?;
                    // Taken first, so two changes at once apply one after the other.
                    sqlx::query("INSERT INTO org_limits (org, updated_at) VALUES ($1, $2) ON CONFLICT (org) DO UPDATE SET updated_at = excluded.updated_at")
                        .bind(&org)
                        .bind(now_ms())
                        .execute(&mut *tx)
                        .await?;
                    let limits = Self::read_org_limits(&mut *tx, &org).await?.with(changes);
                    let value = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
                    sqlx::query(
                        "UPDATE org_limits SET max_running = $1, max_steps = $2, monthly_tokens = $3, \
                         monthly_agent_ms = $4 WHERE org = $5",
                    )
                    .bind(value(limits.max_running))
                    .bind(value(limits.max_steps))
                    .bind(value(limits.monthly_tokens))
                    .bind(value(limits.monthly_agent_ms))
                    .bind(&org)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(limits)
                }
            }
        };
    };
}

pub(super) use org_sql;
