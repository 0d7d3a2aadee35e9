//! Dashboard sessions: sign-ins with an API token (see `crate::dashboard`).

use async_trait::async_trait;

use super::{StoreResult, TokenInfo};

/// A dashboard session to store: never its id, only the id's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDashboardSession {
    pub session_hash: String,
    pub token_id: i64,
    /// What the session's forms must send back.
    pub csrf_secret: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A live dashboard session with the (active) token it was opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardSession {
    pub token: TokenInfo,
    pub csrf_secret: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// Dashboard sessions.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new dashboard session, and removes the sessions that expired before it.
    async fn create_dashboard_session(&self, session: &NewDashboardSession) -> StoreResult<()>;

    /// The session stored under this hash, if it has not expired at `now_ms` and its token
    /// is still active — one round trip, so a revoked token's sessions end at once.
    async fn dashboard_session(
        &self,
        session_hash: &str,
        now_ms: i64,
    ) -> StoreResult<Option<DashboardSession>>;

    /// Ends a session; `false` when there was none.
    async fn delete_dashboard_session(&self, session_hash: &str) -> StoreResult<bool>;
}

/// The SQL of [`SessionStore`], written once for both databases and compiled for
/// each backend by `sql_store!` (`sql.rs`).
macro_rules! session_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use sqlx::Row as _;
            use $crate::store::{DashboardSession, NewDashboardSession, StoreResult};

            #[async_trait::async_trait]
            impl $crate::store::SessionStore for $store {
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
                    let (Some(token), Some(first)) = (Self::token_from_rows(&rows)?, rows.first()) else {
                        return Ok(None);
                    };
                    Ok(Some(DashboardSession {
                        token,
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
            }
        };
    };
}

pub(super) use session_sql;
