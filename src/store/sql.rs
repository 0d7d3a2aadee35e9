//! The SQL of the store, written once and compiled for each backend by `sql_store!`.
//!
//! Both SQLite and PostgreSQL accept `$1`-style parameters, `RETURNING` and the types used
//! here (integers, text, booleans), so one body of queries serves both. What differs — how a
//! write transaction begins, how the pool is opened, which migrations run — lives in each
//! backend's own file as inherent methods the macro calls (`begin_write`, `migrator`).

use crate::domain::{PrMode, StepNumber, StepState};

use super::{StoreError, StoreResult};

pub(super) fn parse_step_number(s: &str) -> StoreResult<StepNumber> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("step number {s:?}: {e}")))
}

pub(super) fn parse_state(s: &str) -> StoreResult<StepState> {
    s.parse().map_err(StoreError::Corrupt)
}

pub(super) fn parse_pr_mode(s: Option<String>) -> StoreResult<Option<PrMode>> {
    s.map(|s| s.parse().map_err(StoreError::Corrupt))
        .transpose()
}

pub(super) fn parse_labels(s: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("labels {s:?}: {e}")))
}

pub(super) fn labels_json(labels: &[String]) -> String {
    serde_json::to_string(labels).expect("a list of strings always serialises")
}

/// The columns a [`super::RunbookRecord`] is read from.
pub(super) const RUNBOOK_COLUMNS: &str = "number, org, repo, title, prompt, oneshot, draft, pr_mode, \
     target_branch, description, labels, author_email, created_by_token, created_at, updated_at, \
     pull_request_requested_at";

/// The columns a [`super::StepRecord`] is read from.
pub(super) const STEP_COLUMNS: &str = "number, title, details, is_leaf, state, pr_number, \
     commit_sha, error, kind, log, started_at, finished_at";

/// `$first, $first+1, …`: `count` parameters for an `IN (…)` list.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn token_orgs(&self, ids: &[i64]) -> StoreResult<std::collections::HashMap<i64, Vec<String>>> {
                let mut map: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
                if ids.is_empty() {
                    return Ok(map);
                }
                // Tokens are few; one query for all of them.
                let rows = sqlx::query("SELECT token_id, org FROM api_token_orgs ORDER BY token_id, org")
                    .fetch_all(&self.pool)
                    .await?;
                for row in rows {
                    let id: i64 = row.try_get(0)?;
                    if ids.contains(&id) {
                        map.entry(id).or_default().push(row.try_get(1)?);
                    }
                }
                Ok(map)
            }

            /// The runbook's pull requests in the order they were opened, each once, with its
            /// leaf steps in plan order.
            async fn pull_requests(&self, number: i64) -> StoreResult<Vec<PullRequestRef>> {
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

            /// Inserts a runbook under the next number, inside the caller's transaction.
            async fn insert_runbook(tx: &mut sqlx::Transaction<'_, $db>, new: &NewRunbook, created_by: Option<i64>) -> StoreResult<i64> {
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
                Ok(number)
            }

            fn thread_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<ThreadRecord> {
                Ok(ThreadRecord {
                    runbook_number: row.try_get("runbook_number")?,
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

            fn step_from_row(r: &<$db as sqlx::Database>::Row) -> StoreResult<StepRecord> {
                let number: String = r.try_get("number")?;
                let state: String = r.try_get("state")?;
                let pr_number: Option<i64> = r.try_get("pr_number")?;
                Ok(StepRecord {
                    number: parse_step_number(&number)?,
                    title: r.try_get("title")?,
                    details: r.try_get("details")?,
                    is_leaf: r.try_get("is_leaf")?,
                    state: parse_state(&state)?,
                    pr_number: pr_number.map(|n| n as u64),
                    commit_sha: r.try_get("commit_sha")?,
                    error: r.try_get("error")?,
                    kind: r.try_get("kind")?,
                    log: r.try_get("log")?,
                    started_at_ms: r.try_get("started_at")?,
                    finished_at_ms: r.try_get("finished_at")?,
                })
            }

            fn runbook_from_row(row: &<$db as sqlx::Database>::Row) -> StoreResult<RunbookRecord> {
                let labels: String = row.try_get("labels")?;
                Ok(RunbookRecord {
                    number: row.try_get("number")?,
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

            fn token_from_row(row: &<$db as sqlx::Database>::Row, orgs: Vec<String>) -> StoreResult<TokenInfo> {
                Ok(TokenInfo {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    orgs,
                    created_at_ms: row.try_get("created_at")?,
                    revoked_at_ms: row.try_get("revoked_at")?,
                })
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }

            async fn migrate(&self) -> StoreResult<()> {
                Self::migrator().run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn create_token(&self, name: &str, orgs: &[String], token_hash: &str) -> StoreResult<TokenInfo> {
                let now = now_ms();
                let mut tx = self.begin_write().await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO api_tokens (name, token_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
                )
                .bind(name)
                .bind(token_hash)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                let mut stored: Vec<String> = orgs.iter().map(|o| o.to_lowercase()).collect();
                stored.sort();
                stored.dedup();
                for org in &stored {
                    sqlx::query("INSERT INTO api_token_orgs (token_id, org) VALUES ($1, $2)")
                        .bind(id)
                        .bind(org)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(TokenInfo { id, name: name.to_string(), orgs: stored, created_at_ms: now, revoked_at_ms: None })
            }

            async fn list_tokens(&self) -> StoreResult<Vec<TokenInfo>> {
                let rows = sqlx::query("SELECT id, name, created_at, revoked_at FROM api_tokens ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
                let ids: Vec<i64> = rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?;
                let mut orgs = self.token_orgs(&ids).await?;
                rows.iter()
                    .map(|row| {
                        let id: i64 = row.try_get("id")?;
                        Self::token_from_row(row, orgs.remove(&id).unwrap_or_default())
                    })
                    .collect()
            }

            async fn revoke_token(&self, id: i64) -> StoreResult<bool> {
                let result = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(now_ms())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn active_token(&self, token_hash: &str) -> StoreResult<Option<TokenInfo>> {
                // One round trip: the token with its organisations (one row per organisation).
                let rows = sqlx::query(
                    "SELECT t.id, t.name, t.created_at, t.revoked_at, o.org FROM api_tokens t \
                     LEFT JOIN api_token_orgs o ON o.token_id = t.id \
                     WHERE t.token_hash = $1 AND t.revoked_at IS NULL ORDER BY o.org",
                )
                .bind(token_hash)
                .fetch_all(&self.pool)
                .await?;
                let Some(first) = rows.first() else {
                    return Ok(None);
                };
                let orgs = rows
                    .iter()
                    .filter_map(|row| row.try_get::<Option<String>, _>("org").transpose())
                    .collect::<Result<Vec<_>, _>>()?;
                Self::token_from_row(first, orgs).map(Some)
            }

            async fn create_runbook(&self, new: &NewRunbook, created_by: Option<i64>) -> StoreResult<i64> {
                let mut tx = self.begin_write().await?;
                let number = Self::insert_runbook(&mut tx, new, created_by).await?;
                tx.commit().await?;
                Ok(number)
            }

            async fn create_runbook_in_thread(&self, new: &NewRunbook, thread: &NewThread) -> StoreResult<(i64, bool)> {
                let mut tx = self.begin_write().await?;
                let existing: Option<i64> = sqlx::query_scalar(
                    "SELECT runbook_number FROM runbook_threads WHERE command_comment_id = $1",
                )
                .bind(thread.command_comment_id as i64)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(number) = existing {
                    return Ok((number, false));
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

            async fn thread(&self, number: i64) -> StoreResult<Option<ThreadRecord>> {
                sqlx::query("SELECT * FROM runbook_threads WHERE runbook_number = $1")
                    .bind(number)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|row| Self::thread_from_row(&row))
                    .transpose()
            }

            async fn latest_runbook_in_thread(&self, repository: &str, issue_number: u64) -> StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar(
                    "SELECT MAX(runbook_number) FROM runbook_threads WHERE repository = $1 AND issue_number = $2",
                )
                .bind(repository.to_lowercase())
                .bind(issue_number as i64)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn set_status_comment(&self, number: i64, comment_id: u64, url: &str, body: &str) -> StoreResult<()> {
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

            async fn request_report(&self, number: i64) -> StoreResult<()> {
                sqlx::query("UPDATE runbook_threads SET needs_report = $1 WHERE runbook_number = $2")
                    .bind(true)
                    .bind(number)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn take_report_request(&self, number: i64) -> StoreResult<bool> {
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

            async fn record_status_body(&self, number: i64, body: &str) -> StoreResult<()> {
                sqlx::query("UPDATE runbook_threads SET status_body = $1 WHERE runbook_number = $2")
                    .bind(body)
                    .bind(number)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn runbook(&self, number: i64) -> StoreResult<Option<RunbookRecord>> {
                sqlx::query(&format!("SELECT {RUNBOOK_COLUMNS} FROM runbooks WHERE number = $1"))
                    .bind(number)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|row| Self::runbook_from_row(&row))
                    .transpose()
            }

            async fn list_runbooks(&self, filter: &RunbookFilter, before: Option<i64>, limit: i64) -> StoreResult<Vec<RunbookRecord>> {
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
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(limit)
                    .bind(filter.org.as_deref().unwrap_or("").to_lowercase())
                    .bind(filter.repository.as_deref().unwrap_or("").to_lowercase());
                for org in &filter.visible_orgs {
                    query = query.bind(org.to_lowercase());
                }
                query.fetch_all(&self.pool).await?.iter().map(|row| Self::runbook_from_row(row)).collect()
            }

            async fn steps_of(&self, numbers: &[i64]) -> StoreResult<std::collections::HashMap<i64, Vec<StepRecord>>> {
                let mut map: std::collections::HashMap<i64, Vec<StepRecord>> = std::collections::HashMap::new();
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
                    let number: i64 = row.try_get("runbook_number")?;
                    map.entry(number).or_default().push(Self::step_from_row(&row)?);
                }
                Ok(map)
            }

            async fn pull_requests_of(&self, numbers: &[i64]) -> StoreResult<std::collections::HashMap<i64, Vec<PullWithSteps>>> {
                let mut map: std::collections::HashMap<i64, Vec<PullWithSteps>> = std::collections::HashMap::new();
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
                    let runbook: i64 = row.try_get("runbook_number")?;
                    let pr = row.try_get::<i64, _>("number")? as u64;
                    let list = map.entry(runbook).or_default();
                    if list.last().is_none_or(|last| last.record.number != pr) {
                        let finished: Option<i64> = row.try_get("finished_at")?;
                        list.push(PullWithSteps {
                            record: PullRecord {
                                number: pr,
                                url: row.try_get("url")?,
                                node_id: row.try_get("node_id")?,
                                head: row.try_get("head")?,
                                finished: finished.is_some(),
                                state: row.try_get("state")?,
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

            async fn threads_of(&self, numbers: &[i64]) -> StoreResult<std::collections::HashMap<i64, ThreadRecord>> {
                let mut map = std::collections::HashMap::new();
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

            async fn read_runbook(&self, number: i64, token_hash: Option<&str>) -> StoreResult<RunbookRead> {
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

            async fn add_follow_up(&self, number: i64, follow_up: &FollowUp) -> StoreResult<bool> {
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

            async fn pending_follow_ups(&self, number: i64) -> StoreResult<Vec<FollowUpRecord>> {
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
                            runbook_number: r.try_get("runbook_number")?,
                            prompt: r.try_get("prompt")?,
                            created_at_ms: r.try_get("created_at")?,
                        })
                    })
                    .collect()
            }

            async fn steps(&self, number: i64) -> StoreResult<Vec<StepRecord>> {
                let rows = sqlx::query(&format!("SELECT {STEP_COLUMNS} FROM steps WHERE runbook_number = $1 ORDER BY position"))
                    .bind(number)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| Self::step_from_row(r)).collect()
            }

            async fn set_step_state(&self, number: i64, step: &StepNumber, state: StepState) -> StoreResult<bool> {
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

            async fn record_pull_request(&self, number: i64, pr_number: u64, url: &str, steps: &[StepNumber]) -> StoreResult<()> {
                self.record_pull_request_at(number, pr_number, url, steps, None).await
            }

            async fn record_pull_request_at(&self, number: i64, pr_number: u64, url: &str, steps: &[StepNumber], position: Option<i64>) -> StoreResult<()> {
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

            async fn record_delivery(&self, delivery: &DeliveryRecord) -> StoreResult<bool> {
                let result = sqlx::query(
                    "INSERT INTO webhook_deliveries (delivery_id, event, action, payload, received_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (delivery_id) DO NOTHING",
                )
                .bind(&delivery.delivery_id)
                .bind(&delivery.event)
                .bind(&delivery.action)
                .bind(&delivery.payload)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn finish_delivery(&self, delivery_id: &str, error: Option<&str>) -> StoreResult<()> {
                sqlx::query("UPDATE webhook_deliveries SET processed_at = $1, error = $2 WHERE delivery_id = $3")
                    .bind(now_ms())
                    .bind(error)
                    .bind(delivery_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn unfinished_deliveries(&self, limit: i64) -> StoreResult<Vec<DeliveryRecord>> {
                let rows = sqlx::query(
                    "SELECT delivery_id, event, action, payload FROM webhook_deliveries \
                     WHERE processed_at IS NULL ORDER BY received_at, delivery_id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(DeliveryRecord {
                            delivery_id: r.try_get("delivery_id")?,
                            event: r.try_get("event")?,
                            action: r.try_get("action")?,
                            payload: r.try_get("payload")?,
                        })
                    })
                    .collect()
            }

            async fn runbooks_with_work(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<i64>> {
                let rows = sqlx::query_scalar(
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
                Ok(rows)
            }

            async fn claim_runbook(&self, number: i64, owner: &str, now_ms: i64, until_ms: i64) -> StoreResult<bool> {
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

            async fn renew_lease(&self, number: i64, owner: &str, until_ms: i64) -> StoreResult<bool> {
                let result = sqlx::query("UPDATE runbook_leases SET expires_at = $1 WHERE runbook_number = $2 AND owner = $3")
                    .bind(until_ms)
                    .bind(number)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn release_lease(&self, number: i64, owner: &str) -> StoreResult<()> {
                sqlx::query("DELETE FROM runbook_leases WHERE runbook_number = $1 AND owner = $2")
                    .bind(number)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn record_plan(&self, number: i64, plan: &Plan, state: StepState, follow_up: Option<i64>) -> StoreResult<()> {
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

            async fn record_plan_failure(&self, number: i64, after: u32, prompt: &str, error: &str, follow_up: Option<i64>) -> StoreResult<()> {
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

            async fn transition_steps(&self, number: i64, steps: &[StepNumber], from: &[StepState], to: StepState) -> StoreResult<u32> {
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

            async fn finish_step(&self, number: i64, step: &StepNumber, end: &StepEnd) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                let (state, commit_sha, error, log) = match end {
                    StepEnd::Completed { commit_sha, log } => (StepState::Completed, commit_sha.as_deref(), None, log),
                    StepEnd::Failed { error, log } => (StepState::Failed, None, Some(error.as_str()), log),
                };
                sqlx::query(
                    "UPDATE steps SET state = $1, commit_sha = $2, error = $3, log = $4, finished_at = $5 \
                     WHERE runbook_number = $6 AND number = $7",
                )
                .bind(state.as_str())
                .bind(commit_sha)
                .bind(error)
                .bind(log)
                .bind(now_ms())
                .bind(number)
                .bind(step.to_string())
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

            async fn remove_plan_failures(&self, number: i64) -> StoreResult<u32> {
                let result = sqlx::query("DELETE FROM steps WHERE runbook_number = $1 AND kind = 'plan' AND state = 'failed'")
                    .bind(number)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() as u32)
            }

            async fn set_cancel_requested(&self, number: i64, requested: bool) -> StoreResult<()> {
                sqlx::query("UPDATE runbooks SET cancel_requested_at = $1 WHERE number = $2")
                    .bind(requested.then(now_ms))
                    .bind(number)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn cancel_requested(&self, number: i64) -> StoreResult<bool> {
                let at: Option<Option<i64>> = sqlx::query_scalar("SELECT cancel_requested_at FROM runbooks WHERE number = $1")
                    .bind(number)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(matches!(at, Some(Some(_))))
            }

            async fn add_follow_up_prompt(&self, number: i64, prompt: &str) -> StoreResult<()> {
                sqlx::query("INSERT INTO follow_ups (runbook_number, prompt, created_at) VALUES ($1, $2, $3)")
                    .bind(number)
                    .bind(prompt)
                    .bind(now_ms())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn apply_project_config(&self, number: i64, pr_mode: Option<PrMode>, draft: Option<bool>, labels: &[String]) -> StoreResult<()> {
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

            async fn save_pull_request_details(&self, number: i64, pr_number: u64, node_id: &str, head: &str) -> StoreResult<()> {
                sqlx::query("UPDATE pull_requests SET node_id = $1, head = $2 WHERE runbook_number = $3 AND number = $4")
                    .bind(node_id)
                    .bind(head)
                    .bind(number)
                    .bind(pr_number as i64)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn pull_request_records(&self, number: i64) -> StoreResult<Vec<PullRecord>> {
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
                        Ok(PullRecord {
                            number: pr as u64,
                            url: r.try_get("url")?,
                            node_id: r.try_get("node_id")?,
                            head: r.try_get("head")?,
                            finished: finished.is_some(),
                            state: r.try_get("state")?,
                            base: r.try_get("base")?,
                        })
                    })
                    .collect()
            }

            async fn set_pull_request_base(&self, number: i64, pr_number: u64, base: &str) -> StoreResult<()> {
                sqlx::query("UPDATE pull_requests SET base = $1 WHERE runbook_number = $2 AND number = $3")
                    .bind(base)
                    .bind(number)
                    .bind(pr_number as i64)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_pull_request_state(&self, number: i64, pr_number: u64, state: &str) -> StoreResult<()> {
                sqlx::query("UPDATE pull_requests SET state = $1 WHERE runbook_number = $2 AND number = $3")
                    .bind(state)
                    .bind(number)
                    .bind(pr_number as i64)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_pull_request_finished(&self, number: i64, pr_number: u64, finished: bool) -> StoreResult<()> {
                sqlx::query("UPDATE pull_requests SET finished_at = $1 WHERE runbook_number = $2 AND number = $3")
                    .bind(finished.then(now_ms))
                    .bind(number)
                    .bind(pr_number as i64)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            // --- what a runbook owes GitHub ----------------------------------------------

            async fn owe(&self, number: i64) -> StoreResult<i64> {
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

            async fn owed(&self, number: i64) -> StoreResult<Option<super::Owed>> {
                let row = sqlx::query("SELECT version, attempts, not_before, error FROM runbook_owed WHERE runbook_number = $1")
                    .bind(number)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| {
                    Ok(super::Owed {
                        version: r.try_get("version")?,
                        attempts: r.try_get("attempts")?,
                        not_before_ms: r.try_get("not_before")?,
                        error: r.try_get("error")?,
                    })
                })
                .transpose()
            }

            async fn settle_owed(&self, number: i64, version: i64) -> StoreResult<bool> {
                let result = sqlx::query("DELETE FROM runbook_owed WHERE runbook_number = $1 AND version = $2")
                    .bind(number)
                    .bind(version)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn owed_failed(&self, number: i64, error: &str, not_before_ms: &(dyn Fn(i64) -> i64 + Send + Sync)) -> StoreResult<i64> {
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

            async fn request_pull_request(&self, number: i64) -> StoreResult<()> {
                sqlx::query("UPDATE runbooks SET pull_request_requested_at = COALESCE(pull_request_requested_at, $1) WHERE number = $2")
                    .bind(now_ms())
                    .bind(number)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            // --- dashboard sessions ------------------------------------------------------

            async fn create_dashboard_session(&self, session: &NewDashboardSession) -> StoreResult<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
                    .bind(session.created_at_ms)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO dashboard_sessions (session_hash, token_id, csrf_secret, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&session.session_hash)
                .bind(session.token_id)
                .bind(&session.csrf_secret)
                .bind(session.created_at_ms)
                .bind(session.expires_at_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn dashboard_session(&self, session_hash: &str, now_ms: i64) -> StoreResult<Option<DashboardSession>> {
                // One round trip: the session, its token (only while active) and the token's
                // organisations (one row per organisation).
                let rows = sqlx::query(
                    "SELECT s.csrf_secret, s.created_at AS session_created_at, s.expires_at, \
                     t.id, t.name, t.created_at, t.revoked_at, o.org FROM dashboard_sessions s \
                     JOIN api_tokens t ON t.id = s.token_id \
                     LEFT JOIN api_token_orgs o ON o.token_id = t.id \
                     WHERE s.session_hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL ORDER BY o.org",
                )
                .bind(session_hash)
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?;
                let Some(first) = rows.first() else {
                    return Ok(None);
                };
                let orgs = rows
                    .iter()
                    .filter_map(|row| row.try_get::<Option<String>, _>("org").transpose())
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some(DashboardSession {
                    token: Self::token_from_row(first, orgs)?,
                    csrf_secret: first.try_get("csrf_secret")?,
                    created_at_ms: first.try_get("session_created_at")?,
                    expires_at_ms: first.try_get("expires_at")?,
                }))
            }

            async fn delete_dashboard_session(&self, session_hash: &str) -> StoreResult<bool> {
                let result = sqlx::query("DELETE FROM dashboard_sessions WHERE session_hash = $1")
                    .bind(session_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn prune_deliveries(&self, handled_before_ms: i64, limit: i64) -> StoreResult<u64> {
                let result = sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE delivery_id IN (SELECT delivery_id \
                     FROM webhook_deliveries WHERE processed_at < $1 ORDER BY processed_at LIMIT $2)",
                )
                .bind(handled_before_ms)
                .bind(limit)
                .execute(&self.pool)
                .await?;
                Ok(result.rows_affected())
            }
        }
    };
}

pub(super) use sql_store;
