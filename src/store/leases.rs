//! The work queue: which runbooks have work, the lease one process holds on a runbook while
//! it works on it, what is asked of the lease holder (to stop), and what a runbook owes
//! GitHub until the lease holder has brought GitHub up to date.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::RunbookNumber;

/// What a runbook owes GitHub (see [`LeaseStore::owe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    /// Bumped by every [`LeaseStore::owe`]: settling an older version leaves the debt in place.
    pub version: i64,
    /// Failed attempts to pay it since it was first owed.
    pub attempts: i64,
    /// Not tried again before this time (Unix milliseconds).
    pub not_before_ms: i64,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// Leases on runbooks, cancel requests and debts to GitHub.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Runbooks with work to do (a plan to make, a follow-up to plan, queued or running
    /// steps, a status report asked for, or a debt to GitHub due at `now_ms`) whose lease is
    /// free or expired at `now_ms`, oldest first.
    async fn runbooks_with_work(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<RunbookNumber>>;

    /// Takes the runbook's lease until `until_ms` when it is free or expired at `now_ms`;
    /// `false` when another owner holds it.
    async fn claim_runbook(
        &self,
        number: RunbookNumber,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> StoreResult<bool>;

    /// Extends a lease this owner holds; `false` when it was lost.
    async fn renew_lease(
        &self,
        number: RunbookNumber,
        owner: &str,
        until_ms: i64,
    ) -> StoreResult<bool>;

    async fn release_lease(&self, number: RunbookNumber, owner: &str) -> StoreResult<()>;

    /// Asks for the runbook to stop (`false` clears the request).
    async fn set_cancel_requested(&self, number: RunbookNumber, requested: bool)
    -> StoreResult<()>;

    async fn cancel_requested(&self, number: RunbookNumber) -> StoreResult<bool>;

    /// Records that GitHub may not show the runbook's state any more (before the work that
    /// makes it so): its pull requests and status comment must be brought up to date by
    /// whoever holds the runbook next. Answers the debt's new version.
    async fn owe(&self, number: RunbookNumber) -> StoreResult<i64>;

    /// The runbook's debt to GitHub, if any.
    async fn owed(&self, number: RunbookNumber) -> StoreResult<Option<Owed>>;

    /// GitHub shows everything owed up to `version`: the debt is paid, unless a newer change
    /// came since (then `false`, and it stays).
    async fn settle_owed(&self, number: RunbookNumber, version: i64) -> StoreResult<bool>;

    /// An attempt to pay the debt failed: counts it, keeps the error, and puts the next
    /// attempt off until `not_before_ms(attempts)`. Answers the attempts so far.
    async fn owed_failed(
        &self,
        number: RunbookNumber,
        error: &str,
        not_before_ms: &(dyn Fn(i64) -> i64 + Send + Sync),
    ) -> StoreResult<i64>;
}

/// The SQL of [`LeaseStore`], written once for both databases and compiled for
/// each backend by `sql_store!` (`sql.rs`).
macro_rules! lease_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use sqlx::Row as _;
            use $crate::domain::RunbookNumber;
            use $crate::store::sql::runbook_number;
            use $crate::store::{Owed, StoreResult, now_ms};

            #[async_trait::async_trait]
            impl $crate::store::LeaseStore for $store {
                async fn runbooks_with_work(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<RunbookNumber>> {
                    let rows: Vec<i64> = sqlx::query_scalar(
                        "SELECT r.number FROM runbooks r \
                         LEFT JOIN runbook_leases l ON l.runbook_number = r.number \
                         WHERE (l.runbook_number IS NULL OR l.expires_at < $1) AND ( \
                           NOT EXISTS (SELECT 1 FROM steps s WHERE s.runbook_number = r.number) \
                           OR EXISTS (SELECT 1 FROM steps s WHERE s.runbook_number = r.number \
                                      AND s.state IN ('queued', 'in_progress')) \
                           OR (EXISTS (SELECT 1 FROM follow_ups f WHERE f.runbook_number = r.number AND f.processed_at IS NULL) \
                               AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.runbook_number = r.number AND s.state = 'failed' AND s.kind = 'plan')) \
                           OR EXISTS (SELECT 1 FROM runbook_threads t WHERE t.runbook_number = r.number AND t.needs_report = $3) \
                           OR EXISTS (SELECT 1 FROM runbook_owed o WHERE o.runbook_number = r.number AND o.not_before <= $1)) \
                         ORDER BY r.number LIMIT $2",
                    )
                    .bind(now_ms)
                    .bind(limit)
                    .bind(true)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.into_iter().map(runbook_number).collect()
                }

                async fn claim_runbook(&self, number: RunbookNumber, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
                    // One statement: insert the lease, or take it over when it has expired. The
                    // row comes back only when this owner got it.
                    let claimed: Option<i64> = sqlx::query_scalar(
                        "INSERT INTO runbook_leases (runbook_number, owner, expires_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (runbook_number) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
                         WHERE runbook_leases.expires_at < $4 OR runbook_leases.owner = excluded.owner \
                         RETURNING runbook_number",
                    )
                    .bind(number)
                    .bind(owner)
                    .bind(until_ms)
                    .bind(now_ms)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(claimed.is_some())
                }

                async fn renew_lease(&self, number: RunbookNumber, owner: &str, until_ms: i64) -> StoreResult<bool> {
                    let result = sqlx::query("UPDATE runbook_leases SET expires_at = $1 WHERE runbook_number = $2 AND owner = $3")
                        .bind(until_ms)
                        .bind(number)
                        .bind(owner)
                        .execute(&self.pool)
                        .await?;
                    Ok(result.rows_affected() == 1)
                }

                async fn release_lease(&self, number: RunbookNumber, owner: &str) -> StoreResult<()> {
                    sqlx::query("DELETE FROM runbook_leases WHERE runbook_number = $1 AND owner = $2")
                        .bind(number)
                        .bind(owner)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn set_cancel_requested(&self, number: RunbookNumber, requested: bool) -> StoreResult<()> {
                    sqlx::query("UPDATE runbooks SET cancel_requested_at = $1 WHERE number = $2")
                        .bind(requested.then(now_ms))
                        .bind(number)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn cancel_requested(&self, number: RunbookNumber) -> StoreResult<bool> {
                    let at: Option<Option<i64>> = sqlx::query_scalar("SELECT cancel_requested_at FROM runbooks WHERE number = $1")
                        .bind(number)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(matches!(at, Some(Some(_))))
                }

                async fn owe(&self, number: RunbookNumber) -> StoreResult<i64> {
                    let version: i64 = sqlx::query_scalar(
                        "INSERT INTO runbook_owed (runbook_number, version) VALUES ($1, 1) \
                         ON CONFLICT (runbook_number) DO UPDATE SET version = runbook_owed.version + 1 \
                         RETURNING version",
                    )
                    .bind(number)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(version)
                }

                async fn owed(&self, number: RunbookNumber) -> StoreResult<Option<Owed>> {
                    let row = sqlx::query("SELECT version, attempts, not_before, error FROM runbook_owed WHERE runbook_number = $1")
                        .bind(number)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.map(|r| {
                        Ok(Owed {
                            version: r.try_get("version")?,
                            attempts: r.try_get("attempts")?,
                            not_before_ms: r.try_get("not_before")?,
                            error: r.try_get("error")?,
                        })
                    })
                    .transpose()
                }

                async fn settle_owed(&self, number: RunbookNumber, version: i64) -> StoreResult<bool> {
                    let result = sqlx::query("DELETE FROM runbook_owed WHERE runbook_number = $1 AND version = $2")
                        .bind(number)
                        .bind(version)
                        .execute(&self.pool)
                        .await?;
                    Ok(result.rows_affected() == 1)
                }

                async fn owed_failed(&self, number: RunbookNumber, error: &str, not_before_ms: &(dyn Fn(i64) -> i64 + Send + Sync)) -> StoreResult<i64> {
                    let mut tx = self.begin_write().await?;
                    let attempts: Option<i64> = sqlx::query_scalar("SELECT attempts FROM runbook_owed WHERE runbook_number = $1")
                        .bind(number)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let attempts = attempts.unwrap_or(0) + 1;
                    sqlx::query(
                        "INSERT INTO runbook_owed (runbook_number, version, attempts, not_before, error) VALUES ($1, 1, $2, $3, $4) \
                         ON CONFLICT (runbook_number) DO UPDATE SET attempts = excluded.attempts, not_before = excluded.not_before, error = excluded.error",
                    )
                    .bind(number)
                    .bind(attempts)
                    .bind(not_before_ms(attempts))
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(attempts)
                }
            }
        };
    };
}

pub(super) use lease_sql;
