//! Runbooks: the request (organisation, repository, prompt, options), its follow-ups, and
//! what is asked of it (a pull request of a `manual` runbook).

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{FollowUp, NewRunbook, PrMode, RunbookNumber, RunbookSummary};

/// Everything stored about a runbook's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunbookRecord {
    pub number: RunbookNumber,
    pub org: String,
    pub repo: String,
    pub title: String,
    pub prompt: String,
    pub oneshot: bool,
    pub draft: Option<bool>,
    pub pr_mode: Option<PrMode>,
    pub target_branch: Option<String>,
    pub description: Option<String>,
    pub labels: Vec<String>,
    pub author_email: Option<String>,
    pub created_by_token: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// A `manual` runbook's pull request was asked for.
    pub pull_request_requested: bool,
}

/// A follow-up instruction waiting for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpRecord {
    pub id: i64,
    pub runbook_number: RunbookNumber,
    pub prompt: String,
    pub created_at_ms: i64,
}

/// A runbook read together with the state of the reader's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunbookRead {
    pub summary: Option<RunbookSummary>,
    /// Whether the token hash given to the read belongs to an active token.
    pub token_active: bool,
}

/// Which runbooks a listing shows. Organisations compare without regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunbookFilter {
    /// The organisations the reader may see (lower case); nothing is visible without one.
    pub visible_orgs: Vec<String>,
    pub org: Option<String>,
    /// A repository name (within `org`, or any visible organisation).
    pub repository: Option<String>,
}

/// The columns a [`RunbookRecord`] is read from.
pub(super) const RUNBOOK_COLUMNS: &str = "number, org, repo, title, prompt, oneshot, draft, pr_mode, \
     target_branch, description, labels, author_email, created_by_token, created_at, updated_at, \
     pull_request_requested_at";

/// Runbooks and their follow-ups.
#[async_trait]
pub trait RunbookStore: Send + Sync {
    /// Stores a new runbook under the next number of the deployment's sequence and returns it.
    async fn create_runbook(
        &self,
        new: &NewRunbook,
        created_by: Option<i64>,
    ) -> StoreResult<RunbookNumber>;

    async fn runbook(&self, number: RunbookNumber) -> StoreResult<Option<RunbookRecord>>;

    /// Organisation, title, leaf-step counts and pull requests: what the status document
    /// needs, read together with whether `token_hash` names an active token — one round trip
    /// that both confirms a caller's (cached) token and reads what it asked for.
    async fn read_runbook(
        &self,
        number: RunbookNumber,
        token_hash: Option<&str>,
    ) -> StoreResult<RunbookRead>;

    /// [`RunbookStore::read_runbook`] without a token.
    async fn runbook_summary(&self, number: RunbookNumber) -> StoreResult<Option<RunbookSummary>> {
        Ok(self.read_runbook(number, None).await?.summary)
    }

    /// Runbooks matching the filter, newest first, numbered below `before` when given.
    async fn list_runbooks(
        &self,
        filter: &RunbookFilter,
        before: Option<RunbookNumber>,
        limit: i64,
    ) -> StoreResult<Vec<RunbookRecord>>;

    /// Records a follow-up: replaces the description when given, merges the labels, and
    /// queues the prompt for the engine. `false` when there is no such runbook.
    async fn add_follow_up(&self, number: RunbookNumber, follow_up: &FollowUp)
    -> StoreResult<bool>;

    async fn pending_follow_ups(&self, number: RunbookNumber) -> StoreResult<Vec<FollowUpRecord>>;

    /// Queues a follow-up prompt for planning (used by retry of a failed follow-up plan).
    async fn add_follow_up_prompt(&self, number: RunbookNumber, prompt: &str) -> StoreResult<()>;

    /// Fills what the request left out from the project configuration: `pr_mode` and `draft`
    /// only when unset, and `labels` merged after the request's.
    async fn apply_project_config(
        &self,
        number: RunbookNumber,
        pr_mode: Option<PrMode>,
        draft: Option<bool>,
        labels: &[String],
    ) -> StoreResult<()>;

    /// Remembers that a `manual` runbook's pull request was asked for.
    async fn request_pull_request(&self, number: RunbookNumber) -> StoreResult<()>;
}

/// The SQL of [`RunbookStore`], written once for both databases and compiled for
/// each backend by `sql_store!` (`sql.rs`).
macro_rules! runbook_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use sqlx::Row as _;
            use $crate::domain::{FollowUp, NewRunbook, PrMode, RunbookNumber, RunbookSummary, StepCounts, StepState};
            use $crate::store::runbooks::RUNBOOK_COLUMNS;
            use $crate::store::sql::{labels_json, parse_labels, parse_pr_mode, placeholders, runbook_number};
            use $crate::store::{FollowUpRecord, RunbookFilter, RunbookRead, RunbookRecord, StoreResult, now_ms};

            impl $store {
                /// Inserts a runbook under the next number, inside the caller's transaction.
                async fn insert_runbook(tx: &mut sqlx::Transaction<'_, $db>, new: &NewRunbook, created_by: Option<i64>) -> StoreResult<RunbookNumber> {
                    let now = now_ms();
                    // The counter row is updated inside the same transaction as the insert: numbers
                    // are handed out one writer at a time, and a rolled-back creation gives its
                    // number back, so the sequence has no gaps and never repeats.
                    let number: i64 = sqlx::query_scalar(
                        "UPDATE counters SET value = value + 1 WHERE name = 'runbook' RETURNING value",
                    )
                    .fetch_one(&mut **tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO runbooks (number, org, repo, title, prompt, oneshot, draft, pr_mode, \
                         target_branch, description, labels, author_email, created_by_token, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
                    )
                    .bind(number)
                    .bind(&new.org)
                    .bind(&new.repo)
                    .bind(&new.title)
                    .bind(&new.prompt)
                    .bind(new.oneshot)
                    .bind(new.draft)
                    .bind(new.pr_mode.map(|m| m.as_str()))
                    .bind(&new.target_branch)
                    .bind(&new.description)
                    .bind(labels_json(&new.labels))
                    .bind(&new.author_email)
                    .bind(created_by)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                    runbook_number(number)
                }

                fn runbook_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<RunbookRecord> {
                    let labels: String = row.try_get("labels")?;
                    Ok(RunbookRecord {
                        number: runbook_number(row.try_get("number")?)?,
                        org: row.try_get("org")?,
                        repo: row.try_get("repo")?,
                        title: row.try_get("title")?,
                        prompt: row.try_get("prompt")?,
                        oneshot: row.try_get("oneshot")?,
                        draft: row.try_get("draft")?,
                        pr_mode: parse_pr_mode(row.try_get("pr_mode")?)?,
                        target_branch: row.try_get("target_branch")?,
                        description: row.try_get("description")?,
                        labels: parse_labels(&labels)?,
                        author_email: row.try_get("author_email")?,
                        created_by_token: row.try_get("created_by_token")?,
                        created_at_ms: row.try_get("created_at")?,
                        updated_at_ms: row.try_get("updated_at")?,
                        pull_request_requested: row
                            .try_get::<Option<i64>, _>("pull_request_requested_at")?
                            .is_some(),
                    })
                }
            }

            #[async_trait::async_trait]
            impl $crate::store::RunbookStore for $store {
                async fn create_runbook(&self, new: &NewRunbook, created_by: Option<i64>) -> StoreResult<RunbookNumber> {
                    let mut tx = self.begin_write().await?;
                    let number = Self::insert_runbook(&mut tx, new, created_by).await?;
                    tx.commit().await?;
                    Ok(number)
                }

                async fn runbook(&self, number: RunbookNumber) -> StoreResult<Option<RunbookRecord>> {
                    sqlx::query(&format!("SELECT {RUNBOOK_COLUMNS} FROM runbooks WHERE number = $1"))
                        .bind(number)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(|row| Self::runbook_from_row(&row))
                        .transpose()
                }

                async fn read_runbook(&self, number: RunbookNumber, token_hash: Option<&str>) -> StoreResult<RunbookRead> {
                    // One round trip, one row: the runbook (NULLs when it does not exist, thanks
                    // to the anchor), its leaf counts by state, whether it has pull requests, and
                    // whether the token is active. A second query only for runbooks with PRs.
                    // The state names are those of `StepState::as_str`.
                    let row = sqlx::query(
                        "SELECT r.org, r.repo, r.title, \
                         COUNT(CASE WHEN s.state = 'not_started' THEN 1 END) AS not_started, \
                         COUNT(CASE WHEN s.state = 'queued' THEN 1 END) AS queued, \
                         COUNT(CASE WHEN s.state = 'in_progress' THEN 1 END) AS in_progress, \
                         COUNT(CASE WHEN s.state = 'completed' THEN 1 END) AS completed, \
                         COUNT(CASE WHEN s.state = 'failed' THEN 1 END) AS failed, \
                         EXISTS (SELECT 1 FROM pull_requests p WHERE p.runbook_number = $1) AS has_prs, \
                         EXISTS (SELECT 1 FROM api_tokens t WHERE t.token_hash = $3 AND t.revoked_at IS NULL) AS token_active \
                         FROM (SELECT 1 AS one) anchor \
                         LEFT JOIN runbooks r ON r.number = $1 \
                         LEFT JOIN steps s ON s.runbook_number = r.number AND s.is_leaf = $2 \
                         GROUP BY r.org, r.repo, r.title",
                    )
                    .bind(number)
                    .bind(true)
                    .bind(token_hash)
                    .fetch_one(&self.pool)
                    .await?;
                    let token_active: bool = row.try_get("token_active")?;
                    let Some(org) = row.try_get::<Option<String>, _>("org")? else {
                        return Ok(RunbookRead { summary: None, token_active });
                    };
                    let mut counts = StepCounts::default();
                    for state in StepState::ALL {
                        let n: i64 = row.try_get(state.as_str())?;
                        counts.add(state, n as u32);
                    }
                    let has_prs: bool = row.try_get("has_prs")?;
                    let pull_requests = if has_prs { self.pull_requests(number).await? } else { Vec::new() };
                    let summary = RunbookSummary {
                        number,
                        org,
                        repo: row.try_get("repo")?,
                        title: row.try_get("title")?,
                        counts,
                        pull_requests,
                    };
                    Ok(RunbookRead { summary: Some(summary), token_active })
                }

                async fn list_runbooks(&self, filter: &RunbookFilter, before: Option<RunbookNumber>, limit: i64) -> StoreResult<Vec<RunbookRecord>> {
                    if filter.visible_orgs.is_empty() {
                        return Ok(Vec::new());
                    }
                    // $1: before, $2: limit, $3: org, $4: repository; then the visible organisations.
                    let visible = placeholders(5, filter.visible_orgs.len());
                    let sql = format!(
                        "SELECT {RUNBOOK_COLUMNS} FROM runbooks WHERE number < $1 \
                         AND ($3 = '' OR LOWER(org) = $3) AND ($4 = '' OR LOWER(repo) = $4) \
                         AND LOWER(org) IN ({visible}) ORDER BY number DESC LIMIT $2"
                    );
                    let mut query = sqlx::query(&sql)
                        .bind(before.map_or(i64::MAX, RunbookNumber::get))
                        .bind(limit)
                        .bind(filter.org.as_deref().unwrap_or("").to_lowercase())
                        .bind(filter.repository.as_deref().unwrap_or("").to_lowercase());
                    for org in &filter.visible_orgs {
                        query = query.bind(org.to_lowercase());
                    }
                    query.fetch_all(&self.pool).await?.iter().map(|row| Self::runbook_from_row(row)).collect()
                }

                async fn add_follow_up(&self, number: RunbookNumber, follow_up: &FollowUp) -> StoreResult<bool> {
                    let now = now_ms();
                    let mut tx = self.begin_write().await?;
                    let Some(labels) = sqlx::query_scalar::<_, String>("SELECT labels FROM runbooks WHERE number = $1")
                        .bind(number)
                        .fetch_optional(&mut *tx)
                        .await?
                    else {
                        return Ok(false);
                    };
                    let labels = crate::domain::runbook::merge_labels(&parse_labels(&labels)?, &follow_up.labels);
                    sqlx::query(
                        "UPDATE runbooks SET labels = $1, description = COALESCE($2, description), updated_at = $3 WHERE number = $4",
                    )
                    .bind(labels_json(&labels))
                    .bind(&follow_up.description)
                    .bind(now)
                    .bind(number)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("INSERT INTO follow_ups (runbook_number, prompt, created_at) VALUES ($1, $2, $3)")
                        .bind(number)
                        .bind(&follow_up.prompt)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(true)
                }

                async fn pending_follow_ups(&self, number: RunbookNumber) -> StoreResult<Vec<FollowUpRecord>> {
                    let rows = sqlx::query(
                        "SELECT id, runbook_number, prompt, created_at FROM follow_ups \
                         WHERE runbook_number = $1 AND processed_at IS NULL ORDER BY id",
                    )
                    .bind(number)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|r| {
                            Ok(FollowUpRecord {
                                id: r.try_get("id")?,
                                runbook_number: runbook_number(r.try_get("runbook_number")?)?,
                                prompt: r.try_get("prompt")?,
                                created_at_ms: r.try_get("created_at")?,
                            })
                        })
                        .collect()
                }

                async fn add_follow_up_prompt(&self, number: RunbookNumber, prompt: &str) -> StoreResult<()> {
                    sqlx::query("INSERT INTO follow_ups (runbook_number, prompt, created_at) VALUES ($1, $2, $3)")
                        .bind(number)
                        .bind(prompt)
                        .bind(now_ms())
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn apply_project_config(&self, number: RunbookNumber, pr_mode: Option<PrMode>, draft: Option<bool>, labels: &[String]) -> StoreResult<()> {
                    let mut tx = self.begin_write().await?;
                    let stored: Option<String> = sqlx::query_scalar("SELECT labels FROM runbooks WHERE number = $1")
                        .bind(number)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some(stored) = stored else {
                        return Ok(());
                    };
                    let labels = crate::domain::runbook::merge_labels(&parse_labels(&stored)?, labels);
                    sqlx::query(
                        "UPDATE runbooks SET pr_mode = COALESCE(pr_mode, $1), draft = COALESCE(draft, $2), labels = $3 \
                         WHERE number = $4",
                    )
                    .bind(pr_mode.map(|m| m.as_str()))
                    .bind(draft)
                    .bind(labels_json(&labels))
                    .bind(number)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn request_pull_request(&self, number: RunbookNumber) -> StoreResult<()> {
                    sqlx::query("UPDATE runbooks SET pull_request_requested_at = COALESCE(pull_request_requested_at, $1) WHERE number = $2")
                        .bind(now_ms())
                        .bind(number)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }
            }
        };
    };
}

pub(super) use runbook_sql;
