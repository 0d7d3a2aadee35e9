//! Webhook intake: deliveries are persisted by the HTTP handler and answered at once; this
//! worker handles them in the background, in the order received. Unfinished deliveries (a
//! crash between receipt and handling) are picked up again when the worker starts.
//!
//! The worker reads unhandled deliveries [`BATCH`] at a time (a backlog of any size costs
//! bounded memory), and forgets handled ones once they are older than the retention
//! (`RUNBOOKS_DELIVERY_RETENTION`, at least GitHub's 3-day redelivery window): at start and
//! every [`PRUNE_EVERY`], [`PRUNE_BATCH`] rows per statement so no write holds the database
//! long. A redelivery of a forgotten delivery would be handled again; the handlers make that
//! harmless too (a `/runbook` comment's id is stored with the runbook it started).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::github::webhook::{self, Event};
use crate::ops::App;
use crate::store::{DeliveryRecord, Store, now_ms};

/// Unhandled deliveries read from the store at a time.
pub const BATCH: i64 = 100;

/// How often handled deliveries past the retention are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Deliveries deleted by one statement.
pub const PRUNE_BATCH: i64 = 1000;

/// Wakes the worker when a delivery has been stored, and tells who follows it when one has
/// been handled.
#[derive(Clone)]
pub struct Intake {
    wake: Arc<Notify>,
    handled: Arc<watch::Sender<u64>>,
}

impl Default for Intake {
    fn default() -> Self {
        Self {
            wake: Arc::default(),
            handled: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Intake {
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// The count of deliveries this worker has handled, changed once each is recorded handled
    /// (a receiver sees the latest count and never holds the worker up).
    pub fn handled(&self) -> watch::Receiver<u64> {
        self.handled.subscribe()
    }

    /// Runs the worker until the task is dropped.
    pub fn spawn(&self, app: App, retention: Duration) -> tokio::task::JoinHandle<()> {
        let wake = self.wake.clone();
        let handled = self.handled.clone();
        tokio::spawn(async move {
            let mut prune = tokio::time::interval(PRUNE_EVERY);
            prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                handle_pending(&app, &handled).await;
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = prune.tick() => prune_handled(app.store().as_ref(), retention).await,
                }
            }
        })
    }
}

/// Handles the unhandled deliveries, a batch at a time, until there are none (or the store
/// fails: then the next wake-up tries again).
async fn handle_pending(app: &App, handled: &watch::Sender<u64>) {
    let store = app.store().as_ref();
    loop {
        let deliveries = match store.unfinished_deliveries(BATCH).await {
            Ok(deliveries) => deliveries,
            Err(e) => {
                tracing::error!(error = %e, "could not read webhook deliveries");
                return;
            }
        };
        let full = deliveries.len() as i64 == BATCH;
        for delivery in deliveries {
            let outcome = handle(app, &delivery).await;
            if let Err(e) = &outcome {
                tracing::warn!(delivery = %delivery.delivery_id, event = %delivery.event, error = %e, "webhook not handled");
            }
            if let Err(e) = store
                .finish_delivery(
                    &delivery.delivery_id,
                    outcome.err().map(|e| e.to_string()).as_deref(),
                )
                .await
            {
                // Read again, it would come back at once: wait for the next wake-up instead.
                tracing::error!(error = %e, "could not mark a webhook delivery handled");
                return;
            }
            handled.send_modify(|count| *count += 1);
        }
        if !full {
            return;
        }
    }
}

/// Deletes the deliveries handled longer than `retention` ago.
async fn prune_handled(store: &dyn Store, retention: Duration) {
    let before = now_ms().saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    let mut pruned = 0;
    loop {
        match store.prune_deliveries(before, PRUNE_BATCH).await {
            Ok(n) => {
                pruned += n;
                if n < PRUNE_BATCH as u64 {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not delete old webhook deliveries");
                break;
            }
        }
    }
    if pruned > 0 {
        tracing::info!(pruned, "old webhook deliveries forgotten");
    }
}

/// Why a delivery was not handled; recorded with the delivery.
#[derive(Debug, thiserror::Error)]
enum IntakeError {
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// The payload does not have the event's shape (the parser says where).
    #[error("{0}")]
    Event(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Comment(#[from] crate::comment::handler::CommentError),
}

/// Acts on one delivery.
async fn handle(app: &App, delivery: &DeliveryRecord) -> Result<(), IntakeError> {
    let payload: serde_json::Value = serde_json::from_str(&delivery.payload)?;
    let event = webhook::parse(&delivery.event, &payload).map_err(IntakeError::Event)?;
    tracing::info!(delivery = %delivery.delivery_id, event = %delivery.event, action = delivery.action.as_deref().unwrap_or(""), "webhook");
    let Some(github) = app.github() else {
        return Ok(());
    };
    match event {
        Event::Installation {
            action,
            installation_id,
            repositories,
        } => {
            // Whatever changed, the cached view of this installation is out of date.
            github.forget_installation(installation_id);
            github.forget_repos(&repositories);
            tracing::info!(installation = installation_id, %action, "installation changed");
        }
        Event::InstallationRepositories {
            installation_id,
            added,
            removed,
        } => {
            github.forget_repos(&removed);
            github.forget_repos(&added);
            tracing::info!(
                installation = installation_id,
                added = added.len(),
                removed = removed.len(),
                "installation repositories changed"
            );
        }
        event @ Event::PullRequest { .. } => {
            if let Some(engine) = app.engine()
                && crate::engine::pulls::track_pull_request(engine, &event).await?
            {
                app.wake();
            }
        }
        Event::IssueComment(comment) => {
            if let Some(engine) = app.engine() {
                crate::comment::handler::handle(app, engine, &comment).await?;
            }
        }
        Event::Ping | Event::Other { .. } => {}
    }
    Ok(())
}
