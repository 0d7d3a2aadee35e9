//! The pull requests a runbook's engine opened, and which leaf steps each carries.

use std::collections::HashMap;

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{PullState, RunbookNumber, StepNumber};

/// A pull request the engine opened, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRecord {
    pub number: u64,
    pub url: String,
    pub node_id: Option<String>,
    pub head: Option<String>,
    pub finished: bool,
    /// As the last `pull_request` webhook said.
    pub state: PullState,
    /// The branch it goes into, as the engine last set it (unknown for PRs linked by hand).
    pub base: Option<String>,
}

/// A pull request of a runbook with its leaf steps, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullWithSteps {
    pub record: PullRecord,
    /// Leaf step numbers in plan order.
    pub step_numbers: Vec<String>,
}

/// Pull requests of runbooks.
#[async_trait]
pub trait PullStore: Send + Sync {
    /// Records a pull request of the runbook and the leaf steps it carries, after the
    /// runbook's other pull requests.
    async fn record_pull_request(
        &self,
        number: RunbookNumber,
        pr_number: u64,
        url: &str,
        steps: &[StepNumber],
    ) -> StoreResult<()>;

    /// [`PullStore::record_pull_request`] at a given place among the runbook's pull requests
    /// (a stacked PR's top-level step: the stack's order whatever order they were opened in).
    async fn record_pull_request_at(
        &self,
        number: RunbookNumber,
        pr_number: u64,
        url: &str,
        steps: &[StepNumber],
        position: Option<i64>,
    ) -> StoreResult<()>;

    /// Remembers a pull request's GraphQL id and head branch.
    async fn save_pull_request_details(
        &self,
        number: RunbookNumber,
        pr_number: u64,
        node_id: &str,
        head: &str,
    ) -> StoreResult<()>;

    /// The runbook's pull requests, in the order they were opened.
    async fn pull_request_records(&self, number: RunbookNumber) -> StoreResult<Vec<PullRecord>>;

    /// The pull requests of several runbooks, in the order opened, in one query.
    async fn pull_requests_of(
        &self,
        numbers: &[RunbookNumber],
    ) -> StoreResult<HashMap<RunbookNumber, Vec<PullWithSteps>>>;

    /// Remembers the branch a pull request goes into.
    async fn set_pull_request_base(
        &self,
        number: RunbookNumber,
        pr_number: u64,
        base: &str,
    ) -> StoreResult<()>;

    /// Records a pull request's state on GitHub.
    async fn set_pull_request_state(
        &self,
        number: RunbookNumber,
        pr_number: u64,
        state: PullState,
    ) -> StoreResult<()>;

    /// Marks a pull request made final (`true`) or back at work (`false`).
    async fn set_pull_request_finished(
        &self,
        number: RunbookNumber,
        pr_number: u64,
        finished: bool,
    ) -> StoreResult<()>;
}

/// The SQL of [`PullStore`], written once for both databases and compiled for
/// each backend by `sql_store!` (`sql.rs`).
macro_rules! pull_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use std::collections::HashMap;

            use sqlx::Row as _;
            use $crate::domain::{PullRequestRef, PullState, RunbookNumber, StepNumber};
            use $crate::store::sql::{parse_pull_state, placeholders, runbook_number};
            use $crate::store::{PullRecord, PullWithSteps, StoreError, StoreResult, now_ms};

            impl $store {
                /// The runbook's pull requests in the order they were opened, each once, with its
                /// leaf steps in plan order.
                async fn pull_requests(&self, number: RunbookNumber) -> StoreResult<Vec<PullRequestRef>> {
                    let rows = sqlx::query(
                        "SELECT p.number, p.url, s.number FROM pull_requests p \
                         LEFT JOIN steps s ON s.runbook_number = p.runbook_number AND s.pr_number = p.number AND s.is_leaf = $2 \
                         WHERE p.runbook_number = $1 ORDER BY p.position, s.position",
                    )
                    .bind(number)
                    .bind(true)
                    .fetch_all(&self.pool)
                    .await?;
                    let mut pull_requests: Vec<PullRequestRef> = Vec::new();
                    for r in rows {
                        let pr: i64 = r.try_get(0)?;
                        let step: Option<String> = r.try_get(2)?;
                        if pull_requests.last().is_none_or(|last| last.number != pr as u64) {
                            pull_requests.push(PullRequestRef { number: pr as u64, url: r.try_get(1)?, step_numbers: Vec::new() });
                        }
                        if let (Some(step), Some(last)) = (step, pull_requests.last_mut()) {
                            last.step_numbers.push(step);
                        }
                    }
                    Ok(pull_requests)
                }
            }

            #[async_trait::async_trait]
            impl $crate::store::PullStore for $store {
                async fn record_pull_request(&self, number: RunbookNumber, pr_number: u64, url: &str, steps: &[StepNumber]) -> StoreResult<()> {
                    self.record_pull_request_at(number, pr_number, url, steps, None).await
                }

                async fn record_pull_request_at(&self, number: RunbookNumber, pr_number: u64, url: &str, steps: &[StepNumber], position: Option<i64>) -> StoreResult<()> {
                    let pr = i64::try_from(pr_number).map_err(|_| StoreError::Invalid(format!("PR number {pr_number} is out of range")))?;
                    let mut tx = self.begin_write().await?;
                    sqlx::query(
                        "INSERT INTO pull_requests (runbook_number, number, url, position) \
                         VALUES ($1, $2, $3, COALESCE($4, (SELECT COALESCE(MAX(position), 0) + 1 FROM pull_requests WHERE runbook_number = $1))) \
                         ON CONFLICT (runbook_number, number) DO UPDATE SET url = excluded.url",
                    )
                    .bind(number)
                    .bind(pr)
                    .bind(url)
                    .bind(position)
                    .execute(&mut *tx)
                    .await?;
                    for step in steps {
                        sqlx::query("UPDATE steps SET pr_number = $1 WHERE runbook_number = $2 AND number = $3")
                            .bind(pr)
                            .bind(number)
                            .bind(step.to_string())
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn save_pull_request_details(&self, number: RunbookNumber, pr_number: u64, node_id: &str, head: &str) -> StoreResult<()> {
                    sqlx::query("UPDATE pull_requests SET node_id = $1, head = $2 WHERE runbook_number = $3 AND number = $4")
                        .bind(node_id)
                        .bind(head)
                        .bind(number)
                        .bind(pr_number as i64)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn pull_request_records(&self, number: RunbookNumber) -> StoreResult<Vec<PullRecord>> {
                    let rows = sqlx::query(
                        "SELECT number, url, node_id, head, finished_at, state, base FROM pull_requests \
                         WHERE runbook_number = $1 ORDER BY position",
                    )
                    .bind(number)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|r| {
                            let pr: i64 = r.try_get("number")?;
                            let finished: Option<i64> = r.try_get("finished_at")?;
                            let state: String = r.try_get("state")?;
                            Ok(PullRecord {
                                number: pr as u64,
                                url: r.try_get("url")?,
                                node_id: r.try_get("node_id")?,
                                head: r.try_get("head")?,
                                finished: finished.is_some(),
                                state: parse_pull_state(&state)?,
                                base: r.try_get("base")?,
                            })
                        })
                        .collect()
                }

                async fn pull_requests_of(&self, numbers: &[RunbookNumber]) -> StoreResult<HashMap<RunbookNumber, Vec<PullWithSteps>>> {
                    let mut map: HashMap<RunbookNumber, Vec<PullWithSteps>> = HashMap::new();
                    if numbers.is_empty() {
                        return Ok(map);
                    }
                    let sql = format!(
                        "SELECT p.runbook_number, p.number, p.url, p.node_id, p.head, p.finished_at, p.state, p.base, s.number AS step \
                         FROM pull_requests p LEFT JOIN steps s ON s.runbook_number = p.runbook_number AND s.pr_number = p.number AND s.is_leaf = $1 \
                         WHERE p.runbook_number IN ({}) ORDER BY p.runbook_number, p.position, s.position",
                        placeholders(2, numbers.len())
                    );
                    let mut query = sqlx::query(&sql).bind(true);
                    for n in numbers {
                        query = query.bind(*n);
                    }
                    for row in query.fetch_all(&self.pool).await? {
                        let runbook = runbook_number(row.try_get("runbook_number")?)?;
                        let pr = row.try_get::<i64, _>("number")? as u64;
                        let list = map.entry(runbook).or_default();
                        if list.last().is_none_or(|last| last.record.number != pr) {
                            let finished: Option<i64> = row.try_get("finished_at")?;
                            let state: String = row.try_get("state")?;
                            list.push(PullWithSteps {
                                record: PullRecord {
                                    number: pr,
                                    url: row.try_get("url")?,
                                    node_id: row.try_get("node_id")?,
                                    head: row.try_get("head")?,
                                    finished: finished.is_some(),
                                    state: parse_pull_state(&state)?,
                                    base: row.try_get("base")?,
                                },
                                step_numbers: Vec::new(),
                            });
                        }
                        if let (Some(step), Some(last)) = (row.try_get::<Option<String>, _>("step")?, list.last_mut()) {
                            last.step_numbers.push(step);
                        }
                    }
                    Ok(map)
                }

                async fn set_pull_request_base(&self, number: RunbookNumber, pr_number: u64, base: &str) -> StoreResult<()> {
                    sqlx::query("UPDATE pull_requests SET base = $1 WHERE runbook_number = $2 AND number = $3")
                        .bind(base)
                        .bind(number)
                        .bind(pr_number as i64)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn set_pull_request_state(&self, number: RunbookNumber, pr_number: u64, state: PullState) -> StoreResult<()> {
                    sqlx::query("UPDATE pull_requests SET state = $1 WHERE runbook_number = $2 AND number = $3")
                        .bind(state.as_str())
                        .bind(number)
                        .bind(pr_number as i64)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn set_pull_request_finished(&self, number: RunbookNumber, pr_number: u64, finished: bool) -> StoreResult<()> {
                    sqlx::query("UPDATE pull_requests SET finished_at = $1 WHERE runbook_number = $2 AND number = $3")
                        .bind(finished.then(now_ms))
                        .bind(number)
                        .bind(pr_number as i64)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }
            }
        };
    };
}

pub(super) use pull_sql;
