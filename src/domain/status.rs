//! The aggregate status of a runbook, computed from its leaf steps at query time.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::step::{StepNumber, StepState};

/// Counts of leaf steps by state, exactly as the API's `steps` object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepCounts {
    /// Total number of leaf steps.
    pub total: u32,
    /// Leaf steps that have not started.
    pub not_started: u32,
    /// Leaf steps currently executing.
    pub in_progress: u32,
    /// Leaf steps that completed successfully.
    pub completed: u32,
    /// Leaf steps that failed.
    pub failed: u32,
    /// Leaf steps queued for execution.
    pub queued: u32,
}

impl StepCounts {
    /// Counts the given leaf-step states.
    pub fn from_states(states: impl IntoIterator<Item = StepState>) -> Self {
        let mut counts = Self::default();
        for state in states {
            counts.add(state, 1);
        }
        counts
    }

    /// Adds `n` leaf steps in `state`.
    pub fn add(&mut self, state: StepState, n: u32) {
        self.total += n;
        *match state {
            StepState::NotStarted => &mut self.not_started,
            StepState::Queued => &mut self.queued,
            StepState::InProgress => &mut self.in_progress,
            StepState::Completed => &mut self.completed,
            StepState::Failed => &mut self.failed,
        } += n;
    }
}

/// The aggregate status of a runbook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunbookStatus {
    /// No steps exist yet: the plan is being generated.
    GeneratingSteps,
    /// All leaf steps are not_started.
    NotStarted,
    /// At least one leaf step is in_progress.
    InProgress,
    /// A mix of completed / queued / not_started leaf steps, none in_progress or failed.
    PartiallyCompleted,
    /// At least one leaf step failed and none is in_progress.
    Failed,
    /// All leaf steps completed.
    Completed,
}

impl RunbookStatus {
    pub const ALL: [RunbookStatus; 6] = [
        RunbookStatus::GeneratingSteps,
        RunbookStatus::NotStarted,
        RunbookStatus::InProgress,
        RunbookStatus::PartiallyCompleted,
        RunbookStatus::Failed,
        RunbookStatus::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunbookStatus::GeneratingSteps => "generating_steps",
            RunbookStatus::NotStarted => "not_started",
            RunbookStatus::InProgress => "in_progress",
            RunbookStatus::PartiallyCompleted => "partially_completed",
            RunbookStatus::Failed => "failed",
            RunbookStatus::Completed => "completed",
        }
    }
}

impl fmt::Display for RunbookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status rules of the API, evaluated in this order; the first that matches wins:
///
/// | status | condition |
/// | --- | --- |
/// | generating_steps | no steps exist yet |
/// | in_progress | at least one leaf step is in_progress |
/// | failed | at least one leaf step failed (and none in_progress) |
/// | completed | all leaf steps completed |
/// | not_started | all leaf steps not_started |
/// | partially_completed | anything else: a mix of completed / queued / not_started |
///
/// So all-`queued` is `partially_completed` (work is waiting, none has run or failed), as is
/// `completed` + `queued`.
pub fn status(counts: &StepCounts) -> RunbookStatus {
    if counts.total == 0 {
        RunbookStatus::GeneratingSteps
    } else if counts.in_progress > 0 {
        RunbookStatus::InProgress
    } else if counts.failed > 0 {
        RunbookStatus::Failed
    } else if counts.completed == counts.total {
        RunbookStatus::Completed
    } else if counts.not_started == counts.total {
        RunbookStatus::NotStarted
    } else {
        RunbookStatus::PartiallyCompleted
    }
}

/// How a step of the plan is shown: a leaf's own state, or for a parent the status of the
/// leaves under it (`partially_completed` and so on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShownState {
    Leaf(StepState),
    Parent(RunbookStatus),
}

impl ShownState {
    /// The step numbered `number` (a leaf in `state`, or a parent) among `leaves`, every
    /// leaf of the plan with its state.
    pub fn of<'a>(
        number: &StepNumber,
        leaf: Option<StepState>,
        leaves: impl IntoIterator<Item = (&'a StepNumber, StepState)>,
    ) -> Self {
        match leaf {
            Some(state) => ShownState::Leaf(state),
            None => ShownState::Parent(status(&StepCounts::from_states(
                leaves
                    .into_iter()
                    .filter(|(n, _)| n.is_within(number))
                    .map(|(_, state)| state),
            ))),
        }
    }

    /// The API's name: a step state's, or a runbook status's.
    pub fn as_str(self) -> &'static str {
        match self {
            ShownState::Leaf(state) => state.as_str(),
            ShownState::Parent(status) => status.as_str(),
        }
    }

    pub fn is_completed(self) -> bool {
        matches!(
            self,
            ShownState::Leaf(StepState::Completed) | ShownState::Parent(RunbookStatus::Completed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepState::*;
    use proptest::prelude::*;

    fn status_of(states: &[StepState]) -> RunbookStatus {
        status(&StepCounts::from_states(states.iter().copied()))
    }

    #[test]
    fn table_examples() {
        assert_eq!(status_of(&[]), RunbookStatus::GeneratingSteps);
        assert_eq!(
            status_of(&[Queued, Queued]),
            RunbookStatus::PartiallyCompleted
        );
        assert_eq!(
            status_of(&[Completed, Queued]),
            RunbookStatus::PartiallyCompleted
        );
        assert_eq!(
            status_of(&[Completed, NotStarted]),
            RunbookStatus::PartiallyCompleted
        );
        assert_eq!(
            status_of(&[NotStarted, NotStarted]),
            RunbookStatus::NotStarted
        );
        assert_eq!(status_of(&[Completed]), RunbookStatus::Completed);
        assert_eq!(status_of(&[Failed, InProgress]), RunbookStatus::InProgress);
        assert_eq!(
            status_of(&[Failed, Completed, Queued]),
            RunbookStatus::Failed
        );
    }

    fn any_state() -> impl Strategy<Value = StepState> {
        prop::sample::select(StepState::ALL.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn counts_add_up(states in prop::collection::vec(any_state(), 0..40)) {
            let c = StepCounts::from_states(states.iter().copied());
            prop_assert_eq!(c.total as usize, states.len());
            prop_assert_eq!(c.total, c.not_started + c.queued + c.in_progress + c.completed + c.failed);
        }

        /// Every rule of the table, checked against a direct reading of the table over the
        /// list of states (not over the counts the implementation uses).
        #[test]
        fn every_rule_of_the_table(states in prop::collection::vec(any_state(), 0..40)) {
            let got = status_of(&states);
            let any = |s: StepState| states.contains(&s);
            let all = |s: StepState| states.iter().all(|x| *x == s);
            let expected = if states.is_empty() {
                RunbookStatus::GeneratingSteps
            } else if any(InProgress) {
                RunbookStatus::InProgress
            } else if any(Failed) {
                RunbookStatus::Failed
            } else if all(Completed) {
                RunbookStatus::Completed
            } else if all(NotStarted) {
                RunbookStatus::NotStarted
            } else {
                RunbookStatus::PartiallyCompleted
            };
            prop_assert_eq!(got, expected);
        }

        /// Rule by rule, as properties a user can state.
        #[test]
        fn rule_properties(states in prop::collection::vec(any_state(), 1..40)) {
            let got = status_of(&states);
            // in_progress wins over everything.
            if states.contains(&InProgress) {
                prop_assert_eq!(got, RunbookStatus::InProgress);
            }
            // failed whenever something failed and nothing runs.
            if states.contains(&Failed) && !states.contains(&InProgress) {
                prop_assert_eq!(got, RunbookStatus::Failed);
            }
            // partially_completed never hides a failure or running work, and is never uniform.
            if got == RunbookStatus::PartiallyCompleted {
                prop_assert!(!states.contains(&Failed) && !states.contains(&InProgress));
                prop_assert!(states.iter().any(|s| *s != Completed));
                prop_assert!(states.iter().any(|s| *s != NotStarted));
            }
            // The status does not depend on the order of the steps.
            let mut reversed = states.clone();
            reversed.reverse();
            prop_assert_eq!(status_of(&reversed), got);
        }

        /// Mixes with only queued / completed / not_started that are not uniform.
        #[test]
        fn ambiguous_mixes_are_partially_completed(
            states in prop::collection::vec(prop::sample::select(vec![Queued, Completed, NotStarted]), 1..40)
        ) {
            let uniform_done = states.iter().all(|s| *s == Completed);
            let uniform_waiting = states.iter().all(|s| *s == NotStarted);
            prop_assume!(!uniform_done && !uniform_waiting);
            prop_assert_eq!(status_of(&states), RunbookStatus::PartiallyCompleted);
        }
    }
}

#[cfg(test)]
mod shown {
    use super::*;

    #[test]
    fn a_leaf_shows_its_state_and_a_parent_the_status_of_its_leaves() {
        let n = |s: &str| s.parse::<StepNumber>().unwrap();
        let leaves = [
            (n("1.1"), StepState::Completed),
            (n("1.2"), StepState::Queued),
            (n("2.1"), StepState::Completed),
            (n("10.1"), StepState::Failed),
        ];
        let all = || leaves.iter().map(|(number, state)| (number, *state));
        let leaf = ShownState::of(&n("1.2"), Some(StepState::Queued), all());
        assert_eq!(leaf, ShownState::Leaf(StepState::Queued));
        assert_eq!(leaf.as_str(), "queued");
        let one = ShownState::of(&n("1"), None, all());
        assert_eq!(one, ShownState::Parent(RunbookStatus::PartiallyCompleted));
        assert_eq!(one.as_str(), "partially_completed");
        // `1` is not within `10`.
        let two = ShownState::of(&n("2"), None, all());
        assert!(two.is_completed());
        assert_eq!(
            ShownState::of(&n("10"), None, all()),
            ShownState::Parent(RunbookStatus::Failed)
        );
    }
}
