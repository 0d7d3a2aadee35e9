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
    /// free or expired at `now_ms`, the organisations taking turns: an organisation's oldest
    /// first, and an organisation with fewer runbooks running now (then the one whose last
    /// turn is older) before another. An agent's work (anything but a report or a debt) of
    /// an organisation already running its `max_running` runbooks is left out: it waits,
    /// oldest first.
    async fn runbooks_with_work(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<RunbookNumber>>;

    /// Takes the runbook's lease until `until_ms` when it is free or expired at `now_ms`;
    /// `false` when another owner holds it, or when the runbook has an agent's work and its
    /// organisation already runs its `max_running` runbooks (checked in the same
    /// transaction, one claim of an organisation at a time, so replicas never overshoot).
    /// Taking an agent's work records the organisation's turn.
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

/// SQL: whether runbook `r` has work for an agent — a plan to make (no steps yet, or a
/// follow-up that no failed plan holds back), queued or running steps. A report or a debt to
/// GitHub is work too, but not an agent's: it neither counts as running nor waits for a
/// place.
pub(super) const AGENT_WORK: &str = "(NOT EXISTS (SELECT 1 FROM steps s WHERE s.runbook_number = r.number) \
     OR EXISTS (SELECT 1 FROM steps s WHERE s.runbook_number = r.number AND s.state IN ('queued', 'in_progress')) \
     OR (EXISTS (SELECT 1 FROM follow_ups f WHERE f.runbook_number = r.number AND f.processed_at IS NULL) \
         AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.runbook_number = r.number AND s.state = 'failed' AND s.kind = 'plan')))";

/// The SQL of [`LeaseStore`], written once for both databases and compiled for
/// each backend by `sql_store!` (`sql.rs`).
macro_rules! lease_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use sqlx::Row as _;
            use $crate::domain::RunbookNumber;
            use $crate::store::leases::AGENT_WORK;
            use $crate::store::sql::runbook_number;
            use $crate::store::{Owed, StoreResult, now_ms};

            #[async_trait::async_trait]
            impl $crate::store::LeaseStore for $store {
                async fn runbooks_with_work(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<RunbookNumber>> {
                    // Per organisation, its runbooks with work in number order (`turn`); an
                    // organisation's runbook goes after as many of every other's as it has
                    // running now plus its own earlier ones (`running + turn`), ties going to
                    // the organisation whose last turn is oldest. An agent's work past the
                    // organisation's `max_running` is not offered.
                    let rows: Vec<i64> = sqlx::query_scalar(&format!(
                        "WITH candidates AS ( \
                           SELECT r.number, LOWER(r.org) AS org, CASE WHEN {AGENT_WORK} THEN 1 ELSE 0 END AS agent \
                           FROM runbooks r LEFT JOIN runbook_leases l ON l.runbook_number = r.number \
                           WHERE (l.runbook_number IS NULL OR l.expires_at < $1) AND ({AGENT_WORK} \
                             OR EXISTS (SELECT 1 FROM runbook_threads t WHERE t.runbook_number = r.number AND t.needs_report = $3) \
                             OR EXISTS (SELECT 1 FROM runbook_owed o WHERE o.runbook_number = r.number AND o.not_before <= $1))), \
                         running AS ( \
                           SELECT LOWER(r.org) AS org, COUNT(*) AS n FROM runbook_leases l JOIN runbooks r ON r.number = l.runbook_number \
                           WHERE l.expires_at >= $1 AND {AGENT_WORK} GROUP BY LOWER(r.org)), \
                         ranked AS ( \
                           SELECT c.number, c.agent, COALESCE(ru.n, 0) AS running, lim.max_running, \
                             COALESCE(ot.last_claimed_at, 0) AS last_turn, \
                             ROW_NUMBER() OVER (PARTITION BY c.org ORDER BY c.number) AS turn, \
                             SUM(c.agent) OVER (PARTITION BY c.org ORDER BY c.number) AS agent_turn \
                           FROM candidates c LEFT JOIN running ru ON ru.org = c.org \
                           LEFT JOIN org_limits lim ON lim.org = c.org LEFT JOIN org_turns ot ON ot.org = c.org) \
                         SELECT number FROM ranked \
                         WHERE agent = 0 OR max_running IS NULL OR running + agent_turn <= max_running \
                         ORDER BY running + turn, last_turn, number LIMIT $2",
                    ))
                    .bind(now_ms)
                    .bind(limit)
                    .bind(true)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.into_iter().map(runbook_number).collect()
                }

                async fn claim_runbook(&self, number: RunbookNumber, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
                    let mut tx = self.begin_write().await?;
                    let row = sqlx::query(&format!("SELECT LOWER(r.org) AS org, {AGENT_WORK} AS agent FROM runbooks r WHERE r.number = $1"))
                        .bind(number)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(row) = row else {
                        return Ok(false);
                    };
                    let org: String = row.try_get("org")?;
                    let agent: bool = row.try_get("agent")?;
                    if agent {
                        // The organisation's turn, taken first: on PostgreSQL the row stays
                        // locked until the end, so claims of one organisation's runbooks go one
                        // at a time across replicas (SQLite's writers always do) and the count
                        // below sees every lease taken before.
                        sqlx::query(
                            "INSERT INTO org_turns (org, last_claimed_at) VALUES ($1, $2) \
                             ON CONFLICT (org) DO UPDATE SET last_claimed_at = excluded.last_claimed_at",
                        )
                        .bind(&org)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                        let max: Option<Option<i64>> = sqlx::query_scalar("SELECT max_running FROM org_limits WHERE org = $1")
                            .bind(&org)
                            .fetch_optional(&mut *tx)
                            .await?;
                        if let Some(Some(max)) = max {
                            let running: i64 = sqlx::query_scalar(&format!(
                                "SELECT COUNT(*) FROM runbook_leases l JOIN runbooks r ON r.number = l.runbook_number \
                                 WHERE LOWER(r.org) = $1 AND l.expires_at >= $2 AND r.number <> $3 AND {AGENT_WORK}"
                            ))
                            .bind(&org)
                            .bind(now_ms)
                            .bind(number)
                            .fetch_one(&mut *tx)
                            .await?;
                            if running >= max {
                                return Ok(false);
                            }
                        }
                    }
                    // Insert the lease, or take it over when it has expired. The row comes
                    // back only when this owner got it.
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
                    .fetch_optional(&mut *tx)
                    .await?;
                    if claimed.is_none() {
                        return Ok(false);
                    }
                    tx.commit().await?;
                    Ok(true)
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
