//! Keeping the status comment of a runbook started from a comment up to date.
//!
//! Only the holder of the runbook's lease edits the comment, so replicas never race each
//! other's edits. While it works, a [`Reporter`] coalesces changes: the first change is
//! shown at once, later ones at most once per `status_interval`, and the state the runbook
//! is left in is always shown when the worker lets it go. An edit that would not change the
//! comment's text is never sent. Others (the comment handler, after `/runbook retry` …) ask
//! for a report through the store; a worker then takes the runbook and makes it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Engine, EngineError};
use crate::domain::{PrMode, RepoName, RunbookNumber};
use crate::status_comment::{StatusView, render};
use crate::store::ThreadRecord;

impl Engine {
    /// The status comment's text for the runbook of a thread now (`None` when the runbook
    /// is gone).
    pub(crate) async fn status_body(
        &self,
        thread: &ThreadRecord,
    ) -> Result<Option<String>, EngineError> {
        let number = thread.runbook_number;
        let Some(runbook) = self.store.runbook(number).await? else {
            return Ok(None);
        };
        let steps = self.store.steps(number).await?;
        let planning = self.store.plan_usage(number).await?;
        let pull_requests = self
            .store
            .runbook_summary(number)
            .await?
            .map(|s| s.pull_requests)
            .unwrap_or_default();
        let url = self.dashboard(number);
        let branch = super::single_branch(number);
        Ok(Some(render(&StatusView {
            number,
            title: &runbook.title,
            url: &url,
            requested_by: &thread.thread.requested_by,
            steps: &steps,
            pull_requests: &pull_requests,
            manual_branch: (runbook.pr_mode == Some(PrMode::Manual)).then_some(branch.as_str()),
            planning,
        })))
    }

    /// Brings the runbook's status comment up to date, when it has one whose text changed.
    /// Answers whether GitHub was asked to edit it.
    pub(crate) async fn report(&self, number: RunbookNumber) -> bool {
        match self.try_report(number).await {
            Ok(edited) => edited,
            Err(error) => {
                tracing::warn!(runbook = number.get(), %error, "status comment not updated");
                false
            }
        }
    }

    pub(super) async fn try_report(&self, number: RunbookNumber) -> Result<bool, EngineError> {
        // Cleared before reading, so a request made while this report is written is not lost.
        self.store.take_report_request(number).await?;
        let Some(thread) = self.store.thread(number).await? else {
            return Ok(false);
        };
        let Some(comment_id) = thread.status_comment_id else {
            // The comment handler has not written it yet; it asks for a report when it has.
            return Ok(false);
        };
        let Some(body) = self.status_body(&thread).await? else {
            return Ok(false);
        };
        if thread.status_body.as_deref() == Some(body.as_str()) {
            return Ok(false);
        }
        let Ok(repository) = thread.thread.repository.parse::<RepoName>() else {
            return Err(EngineError::BadThread(thread.thread.repository.clone()));
        };
        let repo = self
            .github
            .installed_repo(repository.owner(), repository.name())
            .await?;
        self.github.edit_comment(&repo, comment_id, &body).await?;
        self.store.record_status_body(number, &body).await?;
        self.announce(number, super::Progress::Reported);
        Ok(true)
    }
}

/// Coalesces a worker's changes to one runbook into few status-comment edits.
pub(super) struct Reporter {
    changes: Option<mpsc::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Reporter {
    /// A reporter for a runbook; one that does nothing when the runbook has no thread.
    pub(super) async fn start(engine: &Arc<Engine>, number: RunbookNumber) -> Self {
        if !matches!(engine.store.thread(number).await, Ok(Some(_))) {
            return Self {
                changes: None,
                task: None,
            };
        }
        // One slot: changes made while the reporter waits or edits fold into one.
        let (tx, rx) = mpsc::channel(1);
        let engine = engine.clone();
        let interval = engine.config.status_interval;
        let task = tokio::spawn(coalesce(rx, interval, move || {
            let engine = engine.clone();
            async move {
                engine.report(number).await;
            }
        }));
        Self {
            changes: Some(tx),
            task: Some(task),
        }
    }

    /// Something about the runbook changed.
    pub(super) fn changed(&self) {
        if let Some(tx) = &self.changes {
            // A full slot already holds a change that is not shown yet: nothing to add.
            let _ = tx.try_send(());
        }
    }

    /// The worker lets the runbook go: the state it is in now is shown.
    pub(super) async fn finish(mut self) {
        drop(self.changes.take());
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        // A worker stopped without `finish` (shutdown): no edit after it.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Calls `report` for changes received on `changes`: the first at once, later ones no sooner
/// than `interval` after the previous report (changes in between fold into one), and once
/// more when `changes` closes.
async fn coalesce<F, Fut>(mut changes: mpsc::Receiver<()>, interval: Duration, mut report: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut last: Option<Instant> = None;
    'changes: while changes.recv().await.is_some() {
        if let Some(last) = last {
            let due = last + interval;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => break,
                    change = changes.recv() => if change.is_none() {
                        break 'changes;
                    },
                }
            }
        }
        report().await;
        last = Some(Instant::now());
    }
    report().await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Under a paused clock: a burst of changes makes few reports, and the last state is
    /// always reported when the worker finishes.
    #[tokio::test(start_paused = true)]
    async fn bursts_of_changes_fold_into_few_reports() {
        let reports = Arc::new(AtomicU32::new(0));
        let (tx, rx) = mpsc::channel(1);
        let counted = reports.clone();
        let task = tokio::spawn(coalesce(rx, Duration::from_secs(5), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }));
        // 100 changes, 100 ms apart: 10 seconds of a busy runbook.
        for _ in 0..100 {
            let _ = tx.try_send(());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        // At once, then at most one per 5 s: 0 s, 5 s, 10 s.
        assert_eq!(reports.load(Ordering::SeqCst), 3);
        drop(tx);
        task.await.unwrap();
        // And the final state.
        assert_eq!(reports.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_runbook_is_reported_once_when_finished() {
        let reports = Arc::new(AtomicU32::new(0));
        let (tx, rx) = mpsc::channel::<()>(1);
        let counted = reports.clone();
        let task = tokio::spawn(coalesce(rx, Duration::from_secs(5), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }));
        drop(tx);
        task.await.unwrap();
        assert_eq!(reports.load(Ordering::SeqCst), 1);
    }
}
