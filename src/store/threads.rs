//! The issue or pull-request threads runbooks are started from by `/runbook` comments, and
//! the status comment each runbook keeps up to date there.

use std::collections::HashMap;

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::{NewRunbook, RunbookNumber};

/// The issue or pull-request thread a runbook is started from by a `/runbook` comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewThread {
    /// `owner/name` (stored in lower case).
    pub repository: String,
    pub issue_number: u64,
    pub is_pull_request: bool,
    /// The thread's page on GitHub.
    pub url: String,
    /// The comment holding the command: one runbook per comment.
    pub command_comment_id: u64,
    /// The login of who wrote the command.
    pub requested_by: String,
    /// The issue's title and body, for the planner.
    pub context: Option<String>,
}

/// A runbook's thread, with its status comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRecord {
    pub runbook_number: RunbookNumber,
    pub thread: NewThread,
    pub status_comment_id: Option<u64>,
    pub status_comment_url: Option<String>,
    /// What the status comment says now.
    pub status_body: Option<String>,
    pub needs_report: bool,
}

/// Threads of runbooks started from comments.
#[async_trait]
pub trait ThreadStore: Send + Sync {
    /// Creates a runbook started by a comment, with its thread, in one transaction. When the
    /// comment already started one (a webhook handled again), answers that runbook and
    /// `false`, and creates nothing.
    async fn create_runbook_in_thread(
        &self,
        new: &NewRunbook,
        thread: &NewThread,
    ) -> StoreResult<(RunbookNumber, bool)>;

    async fn thread(&self, number: RunbookNumber) -> StoreResult<Option<ThreadRecord>>;

    /// The threads of several runbooks (those started from comments), in one query.
    async fn threads_of(
        &self,
        numbers: &[RunbookNumber],
    ) -> StoreResult<HashMap<RunbookNumber, ThreadRecord>>;

    /// The newest runbook started in an issue or pull request thread.
    async fn latest_runbook_in_thread(
        &self,
        repository: &str,
        issue_number: u64,
    ) -> StoreResult<Option<RunbookNumber>>;

    /// Remembers the status comment (and what it says) and asks for a report, so the
    /// runbook's lease holder brings it up to date.
    async fn set_status_comment(
        &self,
        number: RunbookNumber,
        comment_id: u64,
        url: &str,
        body: &str,
    ) -> StoreResult<()>;

    /// Asks the runbook's lease holder to bring the status comment up to date.
    async fn request_report(&self, number: RunbookNumber) -> StoreResult<()>;

    /// Clears a report request; `true` when there was one.
    async fn take_report_request(&self, number: RunbookNumber) -> StoreResult<bool>;

    /// Records what the status comment says after an edit.
    async fn record_status_body(&self, number: RunbookNumber, body: &str) -> StoreResult<()>;
}

/// The SQL of [`ThreadStore`], written once for both databases and compiled for
/// each backend by `sql_store!` (`sql.rs`).
macro_rules! thread_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use std::collections::HashMap;

            use sqlx::Row as _;
            use $crate::domain::{NewRunbook, RunbookNumber};
            use $crate::store::sql::{placeholders, runbook_number};
            use $crate::store::{NewThread, StoreResult, ThreadRecord};

            impl $store {
                fn thread_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<ThreadRecord> {
                    Ok(ThreadRecord {
                        runbook_number: runbook_number(row.try_get("runbook_number")?)?,
                        thread: NewThread {
                            repository: row.try_get("repository")?,
                            issue_number: row.try_get::<i64, _>("issue_number")? as u64,
                            is_pull_request: row.try_get("is_pull_request")?,
                            url: row.try_get("url")?,
                            command_comment_id: row.try_get::<i64, _>("command_comment_id")? as u64,
                            requested_by: row.try_get("requested_by")?,
                            context: row.try_get("context")?,
                        },
                        status_comment_id: row.try_get::<Option<i64>, _>("status_comment_id")?.map(|id| id as u64),
                        status_comment_url: row.try_get("status_comment_url")?,
                        status_body: row.try_get("status_body")?,
                        needs_report: row.try_get("needs_report")?,
                    })
                }
            }

            #[async_trait::async_trait]
            impl $crate::store::ThreadStore for $store {
                async fn create_runbook_in_thread(&self, new: &NewRunbook, thread: &NewThread) -> StoreResult<(RunbookNumber, bool)> {
                    let mut tx = self.begin_write().await?;
                    let existing: Option<i64> = sqlx::query_scalar(
                        "SELECT runbook_number FROM runbook_threads WHERE command_comment_id = $1",
                    )
                    .bind(thread.command_comment_id as i64)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(number) = existing {
                        return Ok((runbook_number(number)?, false));
                    }
                    let number = Self::insert_runbook(&mut tx, new, None).await?;
                    sqlx::query(
                        "INSERT INTO runbook_threads (runbook_number, repository, issue_number, is_pull_request, url, \
                         command_comment_id, requested_by, context, needs_report) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    )
                    .bind(number)
                    .bind(thread.repository.to_lowercase())
                    .bind(thread.issue_number as i64)
                    .bind(thread.is_pull_request)
                    .bind(&thread.url)
                    .bind(thread.command_comment_id as i64)
                    .bind(&thread.requested_by)
                    .bind(&thread.context)
                    .bind(false)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok((number, true))
                }

                async fn thread(&self, number: RunbookNumber) -> StoreResult<Option<ThreadRecord>> {
                    sqlx::query("SELECT * FROM runbook_threads WHERE runbook_number = $1")
                        .bind(number)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(|row| Self::thread_from_row(&row))
                        .transpose()
                }

                async fn threads_of(&self, numbers: &[RunbookNumber]) -> StoreResult<HashMap<RunbookNumber, ThreadRecord>> {
                    let mut map = HashMap::new();
                    if numbers.is_empty() {
                        return Ok(map);
                    }
                    let sql = format!(
                        "SELECT * FROM runbook_threads WHERE runbook_number IN ({})",
                        placeholders(1, numbers.len())
                    );
                    let mut query = sqlx::query(&sql);
                    for n in numbers {
                        query = query.bind(*n);
                    }
                    for row in query.fetch_all(&self.pool).await? {
                        let thread = Self::thread_from_row(&row)?;
                        map.insert(thread.runbook_number, thread);
                    }
                    Ok(map)
                }

                async fn latest_runbook_in_thread(&self, repository: &str, issue_number: u64) -> StoreResult<Option<RunbookNumber>> {
                    let latest: Option<i64> = sqlx::query_scalar(
                        "SELECT MAX(runbook_number) FROM runbook_threads WHERE repository = $1 AND issue_number = $2",
                    )
                    .bind(repository.to_lowercase())
                    .bind(issue_number as i64)
                    .fetch_one(&self.pool)
                    .await?;
                    latest.map(runbook_number).transpose()
                }

                async fn set_status_comment(&self, number: RunbookNumber, comment_id: u64, url: &str, body: &str) -> StoreResult<()> {
                    sqlx::query(
                        "UPDATE runbook_threads SET status_comment_id = $1, status_comment_url = $2, status_body = $3, \
                         needs_report = $4 WHERE runbook_number = $5",
                    )
                    .bind(comment_id as i64)
                    .bind(url)
                    .bind(body)
                    .bind(true)
                    .bind(number)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn request_report(&self, number: RunbookNumber) -> StoreResult<()> {
                    sqlx::query("UPDATE runbook_threads SET needs_report = $1 WHERE runbook_number = $2")
                        .bind(true)
                        .bind(number)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn take_report_request(&self, number: RunbookNumber) -> StoreResult<bool> {
                    let result = sqlx::query(
                        "UPDATE runbook_threads SET needs_report = $1 WHERE runbook_number = $2 AND needs_report = $3",
                    )
                    .bind(false)
                    .bind(number)
                    .bind(true)
                    .execute(&self.pool)
                    .await?;
                    Ok(result.rows_affected() == 1)
                }

                async fn record_status_body(&self, number: RunbookNumber, body: &str) -> StoreResult<()> {
                    sqlx::query("UPDATE runbook_threads SET status_body = $1 WHERE runbook_number = $2")
                        .bind(body)
                        .bind(number)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }
            }
        };
    };
}

pub(super) use thread_sql;
