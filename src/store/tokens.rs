//! API tokens: stored as a hash with the organisations they may act for.

use async_trait::async_trait;

use super::StoreResult;

/// An API token as the store knows it: never the token itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    /// Lower-case organisation names the token may act for.
    pub orgs: Vec<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// API tokens (see `crate::tokens` for how one is made and hashed).
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn create_token(
        &self,
        name: &str,
        orgs: &[String],
        token_hash: &str,
    ) -> StoreResult<TokenInfo>;

    async fn list_tokens(&self) -> StoreResult<Vec<TokenInfo>>;

    /// Revokes a token; `false` when no active token has that id.
    async fn revoke_token(&self, id: i64) -> StoreResult<bool>;

    /// The active (not revoked) token with this hash.
    async fn active_token(&self, token_hash: &str) -> StoreResult<Option<TokenInfo>>;
}

/// The SQL of [`TokenStore`], written once for both databases and compiled for
/// each backend by `sql_store!` (`sql.rs`).
macro_rules! token_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use std::collections::HashMap;

            use sqlx::Row as _;
            use $crate::store::{StoreResult, TokenInfo, now_ms};

            impl $store {
                async fn token_orgs(&self, ids: &[i64]) -> StoreResult<HashMap<i64, Vec<String>>> {
                    let mut map: HashMap<i64, Vec<String>> = HashMap::new();
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

                fn token_from_row(row: &<$db as sqlx::Database>::Row, orgs: Vec<String>) -> StoreResult<TokenInfo> {
                    Ok(TokenInfo {
                        id: row.try_get("id")?,
                        name: row.try_get("name")?,
                        orgs,
                        created_at_ms: row.try_get("created_at")?,
                        revoked_at_ms: row.try_get("revoked_at")?,
                    })
                }

                /// A token read joined with its organisations, one row per organisation (the
                /// token's columns repeated; `org` null for a token without any): `None`
                /// when there is no row.
                fn token_from_rows(rows: &[<$db as sqlx::Database>::Row]) -> StoreResult<Option<TokenInfo>> {
                    let Some(first) = rows.first() else {
                        return Ok(None);
                    };
                    let orgs = rows
                        .iter()
                        .filter_map(|row| row.try_get::<Option<String>, _>("org").transpose())
                        .collect::<Result<Vec<_>, _>>()?;
                    Self::token_from_row(first, orgs).map(Some)
                }
            }

            #[async_trait::async_trait]
            impl $crate::store::TokenStore for $store {
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
                    Self::token_from_rows(&rows)
                }
            }
        };
    };
}

pub(super) use token_sql;
