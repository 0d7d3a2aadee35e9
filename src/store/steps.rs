//! A runbook's plan: its steps in plan order, their states, and how they end.

use std::collections::HashMap;

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{Plan, RunbookNumber, ShownState, StepKind, StepNumber, StepState, Usage};

/// A step of a stored plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub number: StepNumber,
    pub title: String,
    pub details: String,
    pub is_leaf: bool,
    pub state: StepState,
    pub pr_number: Option<u64>,
    pub commit_sha: Option<String>,
    pub error: Option<String>,
    /// Work, or the step that stands for a plan that could not be generated.
    pub kind: StepKind,
    /// The agent's output tail or transcript.
    pub log: Option<String>,
    /// When the step last started and ended (Unix milliseconds).
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// What the step used the last time it ran; `None` until it has finished once.
    pub usage: Option<Usage>,
}

impl StepRecord {
    /// How this step is shown among `steps`, the runbook's whole plan.
    pub fn shown_state(&self, steps: &[StepRecord]) -> ShownState {
        ShownState::of(
            &self.number,
            self.is_leaf.then_some(self.state),
            steps
                .iter()
                .filter(|s| s.is_leaf)
                .map(|s| (&s.number, s.state)),
        )
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    Completed {
        commit_sha: Option<String>,
        log: String,
    },
    Failed {
        error: String,
        log: String,
    },
}

/// The columns a [`StepRecord`] is read from.
pub(super) const STEP_COLUMNS: &str = "number, title, details, is_leaf, state, pr_number, \
     commit_sha, error, kind, log, started_at, finished_at, wall_ms, agent_cpu_ms, \
     prompt_tokens, completion_tokens";

/// The steps of runbooks' plans.
#[async_trait]
pub trait StepStore: Send + Sync {
    /// Appends the steps of a plan after the runbook's existing steps, all `not_started`.
    async fn append_steps(&self, number: RunbookNumber, plan: &Plan) -> StoreResult<()> {
        self.record_plan(number, plan, StepState::NotStarted, None)
            .await
    }

    async fn steps(&self, number: RunbookNumber) -> StoreResult<Vec<StepRecord>>;

    /// The steps of several runbooks, in plan order, in one query.
    async fn steps_of(
        &self,
        numbers: &[RunbookNumber],
    ) -> StoreResult<HashMap<RunbookNumber, Vec<StepRecord>>>;

    /// Sets a leaf step's state; `false` when there is no such leaf step.
    async fn set_step_state(
        &self,
        number: RunbookNumber,
        step: &StepNumber,
        state: StepState,
    ) -> StoreResult<bool>;

    /// Appends a generated plan with its leaves in `state`, and marks the follow-up it
    /// answers (if any) processed — in one transaction.
    async fn record_plan(
        &self,
        number: RunbookNumber,
        plan: &Plan,
        state: StepState,
        follow_up: Option<i64>,
    ) -> StoreResult<()>;

    /// Records a plan that could not be generated: one failed step of kind `plan` numbered
    /// `after + 1`, carrying the error (its details keep the prompt, for a retry).
    async fn record_plan_failure(
        &self,
        number: RunbookNumber,
        after: u32,
        prompt: &str,
        error: &str,
        follow_up: Option<i64>,
    ) -> StoreResult<()>;

    /// Moves the given leaves from any of `from` to `to`; answers how many moved.
    async fn transition_steps(
        &self,
        number: RunbookNumber,
        steps: &[StepNumber],
        from: &[StepState],
        to: StepState,
    ) -> StoreResult<u32>;

    /// Ends a running step with what it used; a failure also returns the queued steps to
    /// `not_started`.
    async fn finish_step(
        &self,
        number: RunbookNumber,
        step: &StepNumber,
        end: &StepEnd,
        usage: &Usage,
    ) -> StoreResult<()>;

    /// What the steps of an organisation's runbooks (its name compared without regard to
    /// case) that finished at or after `since_ms` used, together, with what planning them by
    /// an agent used since then ([`StepStore::record_plan_usage`]).
    async fn org_usage_since(&self, org: &str, since_ms: i64) -> StoreResult<Usage>;

    /// Records what planning a runbook (or a follow-up) by an agent (a model, a coding CLI)
    /// used, made or not.
    async fn record_plan_usage(&self, number: RunbookNumber, usage: &Usage) -> StoreResult<()>;

    /// What planning the runbook by an agent used, every time together; `None` when no agent
    /// planned it.
    async fn plan_usage(&self, number: RunbookNumber) -> StoreResult<Option<Usage>>;

    /// Removes failed `plan` steps (before planning again).
    async fn remove_plan_failures(&self, number: RunbookNumber) -> StoreResult<u32>;
}

/// The SQL of [`StepStore`], written once for both databases and compiled for
/// each backend by `sql_store!` (`sql.rs`).
macro_rules! step_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use std::collections::HashMap;

            use sqlx::Row as _;
            use $crate::domain::{Plan, RunbookNumber, StepNumber, StepState, Usage};
            use $crate::store::steps::STEP_COLUMNS;
            use $crate::store::sql::{parse_kind, parse_state, parse_step_number, placeholders, runbook_number};
            use $crate::store::{StepEnd, StepRecord, StoreResult, now_ms};

            /// A sum of usage: the columns `wall_ms`, `agent_cpu_ms` (never NULL) and the
            /// tokens (NULL when no summed row knew them).
            fn usage_of(row: &<$db as sqlx::Database>::Row) -> StoreResult<Usage> {
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                let wall_ms: i64 = row.try_get("wall_ms")?;
                let cpu_ms: i64 = row.try_get("agent_cpu_ms")?;
                let prompt_tokens: Option<i64> = row.try_get("prompt_tokens")?;
                let completion_tokens: Option<i64> = row.try_get("completion_tokens")?;
                Ok(Usage {
                    wall_ms: count(wall_ms),
                    agent_cpu_ms: count(cpu_ms),
                    prompt_tokens: prompt_tokens.map(count),
                    completion_tokens: completion_tokens.map(count),
                })
            }

            impl $store {
                fn step_from_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<StepRecord> {
                    let number: String = r.try_get("number")?;
                    let state: String = r.try_get("state")?;
                    let kind: String = r.try_get("kind")?;
                    let pr_number: Option<i64> = r.try_get("pr_number")?;
                    let wall_ms: Option<i64> = r.try_get("wall_ms")?;
                    let cpu_ms: Option<i64> = r.try_get("agent_cpu_ms")?;
                    let prompt_tokens: Option<i64> = r.try_get("prompt_tokens")?;
                    let completion_tokens: Option<i64> = r.try_get("completion_tokens")?;
                    let count = |n: i64| u64::try_from(n).unwrap_or(0);
                    Ok(StepRecord {
                        number: parse_step_number(&number)?,
                        title: r.try_get("title")?,
                        details: r.try_get("details")?,
                        is_leaf: r.try_get("is_leaf")?,
                        state: parse_state(&state)?,
                        pr_number: pr_number.map(|n| n as u64),
                        commit_sha: r.try_get("commit_sha")?,
                        error: r.try_get("error")?,
                        kind: parse_kind(&kind)?,
                        log: r.try_get("log")?,
                        started_at_ms: r.try_get("started_at")?,
                        finished_at_ms: r.try_get("finished_at")?,
                        usage: wall_ms.map(|wall_ms| Usage {
                            wall_ms: count(wall_ms),
                            agent_cpu_ms: cpu_ms.map_or(0, count),
                            prompt_tokens: prompt_tokens.map(count),
                            completion_tokens: completion_tokens.map(count),
                        }),
                    })
                }
            }

            #[async_trait::async_trait]
            impl $crate::store::StepStore for $store {
                async fn steps(&self, number: RunbookNumber) -> StoreResult<Vec<StepRecord>> {
                    let rows = sqlx::query(&format!("SELECT {STEP_COLUMNS} FROM steps WHERE runbook_number = $1 ORDER BY position"))
                        .bind(number)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(|r| Self::step_from_row(r)).collect()
                }

                async fn steps_of(&self, numbers: &[RunbookNumber]) -> StoreResult<HashMap<RunbookNumber, Vec<StepRecord>>> {
                    let mut map: HashMap<RunbookNumber, Vec<StepRecord>> = HashMap::new();
                    if numbers.is_empty() {
                        return Ok(map);
                    }
                    let sql = format!(
                        "SELECT runbook_number, {STEP_COLUMNS} FROM steps WHERE runbook_number IN ({}) ORDER BY runbook_number, position",
                        placeholders(1, numbers.len())
                    );
                    let mut query = sqlx::query(&sql);
                    for n in numbers {
                        query = query.bind(*n);
                    }
                    for row in query.fetch_all(&self.pool).await? {
                        let number = runbook_number(row.try_get("runbook_number")?)?;
                        map.entry(number).or_default().push(Self::step_from_row(&row)?);
                    }
                    Ok(map)
                }

                async fn set_step_state(&self, number: RunbookNumber, step: &StepNumber, state: StepState) -> StoreResult<bool> {
                    let result = sqlx::query(
                        "UPDATE steps SET state = $1 WHERE runbook_number = $2 AND number = $3 AND is_leaf = $4",
                    )
                    .bind(state.as_str())
                    .bind(number)
                    .bind(step.to_string())
                    .bind(true)
                    .execute(&self.pool)
                    .await?;
                    Ok(result.rows_affected() == 1)
                }

                async fn record_plan(&self, number: RunbookNumber, plan: &Plan, state: StepState, follow_up: Option<i64>) -> StoreResult<()> {
                    let mut tx = self.begin_write().await?;
                    let next: i64 = sqlx::query_scalar(
                        "SELECT COALESCE(MAX(position), 0) + 1 FROM steps WHERE runbook_number = $1",
                    )
                    .bind(number)
                    .fetch_one(&mut *tx)
                    .await?;
                    for (i, (step, leaf)) in plan.iter().enumerate() {
                        sqlx::query(
                            "INSERT INTO steps (runbook_number, number, position, title, details, is_leaf, state) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        )
                        .bind(number)
                        .bind(step.number.to_string())
                        .bind(next + i as i64)
                        .bind(&step.title)
                        .bind(&step.details)
                        .bind(leaf)
                        .bind(if leaf { state.as_str() } else { StepState::NotStarted.as_str() })
                        .execute(&mut *tx)
                        .await?;
                    }
                    if let Some(id) = follow_up {
                        sqlx::query("UPDATE follow_ups SET processed_at = $1 WHERE id = $2")
                            .bind(now_ms())
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn record_plan_failure(&self, number: RunbookNumber, after: u32, prompt: &str, error: &str, follow_up: Option<i64>) -> StoreResult<()> {
                    let now = now_ms();
                    let mut tx = self.begin_write().await?;
                    sqlx::query(
                        "INSERT INTO steps (runbook_number, number, position, title, details, is_leaf, state, kind, error, finished_at) \
                         VALUES ($1, $2, (SELECT COALESCE(MAX(position), 0) + 1 FROM steps WHERE runbook_number = $1), \
                         'Plan the runbook', $3, $4, 'failed', 'plan', $5, $6)",
                    )
                    .bind(number)
                    .bind((after + 1).to_string())
                    .bind(prompt)
                    .bind(true)
                    .bind(error)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    if let Some(id) = follow_up {
                        sqlx::query("UPDATE follow_ups SET processed_at = $1 WHERE id = $2")
                            .bind(now)
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn transition_steps(&self, number: RunbookNumber, steps: &[StepNumber], from: &[StepState], to: StepState) -> StoreResult<u32> {
                    let mut tx = self.begin_write().await?;
                    let mut moved = 0;
                    for step in steps {
                        for state in from {
                            let result = sqlx::query(
                                "UPDATE steps SET state = $1 WHERE runbook_number = $2 AND number = $3 AND state = $4 AND is_leaf = $5",
                            )
                            .bind(to.as_str())
                            .bind(number)
                            .bind(step.to_string())
                            .bind(state.as_str())
                            .bind(true)
                            .execute(&mut *tx)
                            .await?;
                            moved += result.rows_affected() as u32;
                        }
                    }
                    if to == StepState::InProgress {
                        sqlx::query("UPDATE steps SET started_at = $1, error = NULL WHERE runbook_number = $2 AND state = 'in_progress'")
                            .bind(now_ms())
                            .bind(number)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(moved)
                }

                async fn finish_step(&self, number: RunbookNumber, step: &StepNumber, end: &StepEnd, usage: &Usage) -> StoreResult<()> {
                    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                    let mut tx = self.begin_write().await?;
                    let (state, commit_sha, error, log) = match end {
                        StepEnd::Completed { commit_sha, log } => (StepState::Completed, commit_sha.as_deref(), None, log),
                        StepEnd::Failed { error, log } => (StepState::Failed, None, Some(error.as_str()), log),
                    };
                    sqlx::query(
                        "UPDATE steps SET state = $1, commit_sha = $2, error = $3, log = $4, finished_at = $5, \
                         wall_ms = $8, agent_cpu_ms = $9, prompt_tokens = $10, completion_tokens = $11 \
                         WHERE runbook_number = $6 AND number = $7",
                    )
                    .bind(state.as_str())
                    .bind(commit_sha)
                    .bind(error)
                    .bind(log)
                    .bind(now_ms())
                    .bind(number)
                    .bind(step.to_string())
                    .bind(count(usage.wall_ms))
                    .bind(count(usage.agent_cpu_ms))
                    .bind(usage.prompt_tokens.map(count))
                    .bind(usage.completion_tokens.map(count))
                    .execute(&mut *tx)
                    .await?;
                    if state == StepState::Failed {
                        // The runbook stops: what was queued after the failure waits for a retry.
                        sqlx::query("UPDATE steps SET state = 'not_started' WHERE runbook_number = $1 AND state = 'queued'")
                            .bind(number)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn org_usage_since(&self, org: &str, since_ms: i64) -> StoreResult<Usage> {
                    // CAST: SUM of BIGINT is NUMERIC on PostgreSQL.
                    let row = sqlx::query(
                        "SELECT CAST(COALESCE(SUM(u.wall_ms), 0) AS BIGINT) AS wall_ms, \
                         CAST(COALESCE(SUM(u.agent_cpu_ms), 0) AS BIGINT) AS agent_cpu_ms, \
                         CAST(SUM(u.prompt_tokens) AS BIGINT) AS prompt_tokens, \
                         CAST(SUM(u.completion_tokens) AS BIGINT) AS completion_tokens \
                         FROM (\
                           SELECT s.wall_ms, s.agent_cpu_ms, s.prompt_tokens, s.completion_tokens \
                           FROM steps s JOIN runbooks r ON r.number = s.runbook_number \
                           WHERE LOWER(r.org) = LOWER($1) AND s.finished_at >= $2 AND s.wall_ms IS NOT NULL \
                           UNION ALL \
                           SELECT p.wall_ms, p.agent_cpu_ms, p.prompt_tokens, p.completion_tokens \
                           FROM plan_usage p JOIN runbooks r ON r.number = p.runbook_number \
                           WHERE LOWER(r.org) = LOWER($1) AND p.finished_at >= $2\
                         ) u",
                    )
                    .bind(org)
                    .bind(since_ms)
                    .fetch_one(&self.pool)
                    .await?;
                    usage_of(&row)
                }

                async fn record_plan_usage(&self, number: RunbookNumber, usage: &Usage) -> StoreResult<()> {
                    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                    sqlx::query(
                        "INSERT INTO plan_usage (runbook_number, finished_at, wall_ms, agent_cpu_ms, prompt_tokens, completion_tokens) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(number)
                    .bind(now_ms())
                    .bind(count(usage.wall_ms))
                    .bind(count(usage.agent_cpu_ms))
                    .bind(usage.prompt_tokens.map(count))
                    .bind(usage.completion_tokens.map(count))
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn plan_usage(&self, number: RunbookNumber) -> StoreResult<Option<Usage>> {
                    let row = sqlx::query(
                        "SELECT COUNT(*) AS plans, \
                         CAST(COALESCE(SUM(wall_ms), 0) AS BIGINT) AS wall_ms, \
                         CAST(COALESCE(SUM(agent_cpu_ms), 0) AS BIGINT) AS agent_cpu_ms, \
                         CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
                         CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens \
                         FROM plan_usage WHERE runbook_number = $1",
                    )
                    .bind(number)
                    .fetch_one(&self.pool)
                    .await?;
                    let plans: i64 = row.try_get("plans")?;
                    if plans == 0 {
                        return Ok(None);
                    }
                    usage_of(&row).map(Some)
                }

                async fn remove_plan_failures(&self, number: RunbookNumber) -> StoreResult<u32> {
                    let result = sqlx::query("DELETE FROM steps WHERE runbook_number = $1 AND kind = 'plan' AND state = 'failed'")
                        .bind(number)
                        .execute(&self.pool)
                        .await?;
                    Ok(result.rows_affected() as u32)
                }
            }
        };
    };
}

pub(super) use step_sql;
