//! Webhook deliveries: stored as received, handled in the background, forgotten after a
//! while.

use async_trait::async_trait;

use super::StoreResult;

/// A webhook delivery as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub delivery_id: String,
    pub event: String,
    pub action: Option<String>,
    pub payload: String,
}

/// Webhook deliveries (see `crate::intake`).
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Persists a webhook delivery; `false` when this delivery id was seen before (a
    /// redelivery), in which case nothing changes.
    async fn record_delivery(&self, delivery: &DeliveryRecord) -> StoreResult<bool>;

    /// Marks a delivery handled, with the error it ended in, if any.
    async fn finish_delivery(&self, delivery_id: &str, error: Option<&str>) -> StoreResult<()>;

    /// The oldest deliveries received but not yet handled, at most `limit` of them.
    async fn unfinished_deliveries(&self, limit: i64) -> StoreResult<Vec<DeliveryRecord>>;

    /// Forgets at most `limit` deliveries handled before `handled_before_ms`, oldest first;
    /// answers how many. Deliveries not yet handled are never forgotten.
    async fn prune_deliveries(&self, handled_before_ms: i64, limit: i64) -> StoreResult<u64>;
}

/// The SQL of [`DeliveryStore`], written once for both databases and compiled for
/// each backend by `sql_store!` (`sql.rs`).
macro_rules! delivery_sql {
    ($store:ty, $db:ty) => {
        const _: () = {
            use sqlx::Row as _;
            use $crate::store::{DeliveryRecord, StoreResult, now_ms};

            #[async_trait::async_trait]
            impl $crate::store::DeliveryStore for $store {
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
    };
}

pub(super) use delivery_sql;
