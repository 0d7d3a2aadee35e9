//! Webhook intake: deliveries are persisted by the HTTP handler and answered at once; this
//! worker handles them in the background, in the order received. Unfinished deliveries (a
//! crash between receipt and handling) are picked up again when the worker starts.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::engine::Engine;
use crate::github::GitHubApp;
use crate::github::webhook::{self, Event};
use crate::store::{DeliveryRecord, Store};

/// Wakes the worker when a delivery has been stored.
#[derive(Clone, Default)]
pub struct Intake {
    wake: Arc<Notify>,
}

impl Intake {
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Runs the worker until the task is dropped.
    pub fn spawn(
        &self,
        store: Arc<dyn Store>,
        github: Option<Arc<GitHubApp>>,
        engine: Option<Arc<Engine>>,
    ) -> tokio::task::JoinHandle<()> {
        let wake = self.wake.clone();
        tokio::spawn(async move {
            loop {
                match store.unfinished_deliveries().await {
                    Ok(deliveries) => {
                        for delivery in deliveries {
                            let outcome = handle(
                                store.as_ref(),
                                github.as_deref(),
                                engine.as_deref(),
                                &delivery,
                            )
                            .await;
                            if let Err(e) = &outcome {
                                tracing::warn!(delivery = %delivery.delivery_id, event = %delivery.event, error = %e, "webhook not handled");
                            }
                            if let Err(e) = store
                                .finish_delivery(&delivery.delivery_id, outcome.err().as_deref())
                                .await
                            {
                                tracing::error!(error = %e, "could not mark a webhook delivery handled");
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "could not read webhook deliveries"),
                }
                wake.notified().await;
            }
        })
    }
}

/// Acts on one delivery.
async fn handle(
    store: &dyn Store,
    github: Option<&GitHubApp>,
    engine: Option<&Engine>,
    delivery: &DeliveryRecord,
) -> Result<(), String> {
    let payload: serde_json::Value =
        serde_json::from_str(&delivery.payload).map_err(|e| format!("payload: {e}"))?;
    let event = webhook::parse(&delivery.event, &payload)?;
    tracing::info!(delivery = %delivery.delivery_id, event = %delivery.event, action = delivery.action.as_deref().unwrap_or(""), "webhook");
    let Some(github) = github else {
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
            if crate::engine::pulls::track_pull_request(store, &event).await?
                && let Some(engine) = engine
            {
                engine.wake();
            }
        }
        Event::IssueComment(comment) => {
            if let Some(engine) = engine {
                crate::comment::handler::handle(engine, &comment).await?;
            }
        }
        Event::Ping | Event::Other { .. } => {}
    }
    Ok(())
}
