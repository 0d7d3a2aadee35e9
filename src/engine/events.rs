//! What the engine does, as it happens: a broadcast of [`EngineEvent`]s, each sent once the
//! store has recorded the progress it names. A reader that subscribes, then reads the store,
//! then waits for the next event misses nothing: whatever it did not read was recorded
//! after it subscribed, and announced.
//!
//! Cheap by design, so the engine can announce everything: an event is two words (`Copy`,
//! no allocation), the channel is bounded, and sending never waits — with no receiver the
//! event is dropped; a receiver that falls behind loses the oldest events and is told so
//! (`RecvError::Lagged`), and then reads the store again. The tests wait on it instead of
//! polling; the dashboard's live updates or `/metrics` could follow it the same way.

use tokio::sync::broadcast;

use crate::domain::RunbookNumber;

/// How many events a receiver may fall behind before it loses the oldest.
const CAPACITY: usize = 256;

/// Something the engine did to a runbook, already recorded in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineEvent {
    pub runbook: RunbookNumber,
    pub progress: Progress,
}

/// What happened (the store has the details: which step, which pull request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A plan was recorded (the first one, or a follow-up's): the runbook has new steps.
    Planned,
    /// The plan could not be made; why is recorded as a failed step.
    PlanFailed,
    /// Steps an interrupted worker left in progress are queued again.
    Resumed,
    /// A cancellation was carried out: the running step failed, queued steps wait.
    Cancelled,
    /// A step went from queued to in progress.
    StepStarted,
    /// A step's end, completed or failed, was recorded.
    StepFinished,
    /// The runbook's pull requests were reconciled with its steps (opened, recorded, made
    /// final), or an attempt at it ended part way.
    PullRequests,
    /// The status comment was edited.
    Reported,
    /// GitHub shows everything the runbook did: its debt is paid.
    Settled,
    /// GitHub could not be brought up to date: the debt stays, to be tried again.
    Owed,
    /// A worker let the runbook go (nothing left to do, the lease lost, or an error).
    Released,
}

/// The sending side, held by the engine.
pub(super) struct Events(broadcast::Sender<EngineEvent>);

impl Events {
    pub(super) fn new() -> Self {
        Self(broadcast::channel(CAPACITY).0)
    }

    /// Announces progress on a runbook; never waits, and no receiver is no error.
    pub(super) fn send(&self, runbook: RunbookNumber, progress: Progress) {
        let _ = self.0.send(EngineEvent { runbook, progress });
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_reach_subscribers_and_never_wait() {
        let events = Events::new();
        let (one, two) = (
            RunbookNumber::try_from(1).unwrap(),
            RunbookNumber::try_from(2).unwrap(),
        );
        // No receiver: nothing to deliver, nothing to wait for.
        events.send(one, Progress::Planned);
        let mut receiver = events.subscribe();
        for _ in 0..CAPACITY + 1 {
            events.send(two, Progress::StepStarted);
        }
        // A receiver that fell behind is told how far, then reads on.
        assert!(matches!(
            receiver.recv().await,
            Err(broadcast::error::RecvError::Lagged(1))
        ));
        assert_eq!(
            receiver.recv().await.unwrap(),
            EngineEvent {
                runbook: two,
                progress: Progress::StepStarted
            }
        );
    }
}
