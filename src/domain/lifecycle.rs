//! The runbook state machine over leaf steps (SPEC §3–§4), as pure functions: given the
//! steps in plan order, which leaves change state for `execute`, `retry`, a failure and
//! `cancel`. The store applies the answer in one transaction.

use super::step::{StepNumber, StepState};

/// A leaf step as the state machine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub number: StepNumber,
    pub state: StepState,
}

fn unfinished(state: StepState) -> bool {
    matches!(state, StepState::NotStarted | StepState::Failed)
}

/// `execute`: without a step, every unfinished leaf; with a step, that step (every leaf under
/// it when it is a parent) and every unfinished leaf before it, so order is kept. Answers the
/// leaves to queue, or `None` when `up_to` names no step of the plan.
pub fn to_execute(leaves: &[Leaf], up_to: Option<&StepNumber>) -> Option<Vec<StepNumber>> {
    let Some(target) = up_to else {
        return Some(
            leaves
                .iter()
                .filter(|l| unfinished(l.state))
                .map(|l| l.number.clone())
                .collect(),
        );
    };
    let last = leaves.iter().rposition(|l| l.number.is_within(target))?;
    Some(
        leaves[..=last]
            .iter()
            .filter(|l| unfinished(l.state))
            .map(|l| l.number.clone())
            .collect(),
    )
}

/// `retry`: the failed leaves, and the not-started ones after the first failure.
pub fn to_retry(leaves: &[Leaf]) -> Vec<StepNumber> {
    let Some(first_failed) = leaves.iter().position(|l| l.state == StepState::Failed) else {
        return Vec::new();
    };
    leaves[first_failed..]
        .iter()
        .filter(|l| unfinished(l.state))
        .map(|l| l.number.clone())
        .collect()
}

/// When a leaf fails the runbook stops: the queued leaves go back to `not_started`.
pub fn to_unqueue(leaves: &[Leaf]) -> Vec<StepNumber> {
    leaves
        .iter()
        .filter(|l| l.state == StepState::Queued)
        .map(|l| l.number.clone())
        .collect()
}

/// The next leaf to run: the first queued one, unless an earlier leaf is unfinished (then
/// nothing runs: order is kept) or one is running.
pub fn next_to_run(leaves: &[Leaf]) -> Option<&Leaf> {
    for leaf in leaves {
        match leaf.state {
            StepState::Completed => continue,
            StepState::Queued => return Some(leaf),
            StepState::InProgress | StepState::NotStarted | StepState::Failed => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepState::*;

    fn leaves(spec: &[(&str, StepState)]) -> Vec<Leaf> {
        spec.iter()
            .map(|(n, s)| Leaf {
                number: n.parse().unwrap(),
                state: *s,
            })
            .collect()
    }

    fn names(numbers: Option<Vec<StepNumber>>) -> Vec<String> {
        numbers.unwrap().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn execute_everything_or_up_to_a_step() {
        let plan = leaves(&[
            ("1.1", Completed),
            ("1.2", NotStarted),
            ("2.1", NotStarted),
            ("2.2", Failed),
            ("3", NotStarted),
        ]);
        assert_eq!(names(to_execute(&plan, None)), ["1.2", "2.1", "2.2", "3"]);
        let two: StepNumber = "2".parse().unwrap();
        assert_eq!(names(to_execute(&plan, Some(&two))), ["1.2", "2.1", "2.2"]);
        let leaf: StepNumber = "2.1".parse().unwrap();
        assert_eq!(names(to_execute(&plan, Some(&leaf))), ["1.2", "2.1"]);
        let missing: StepNumber = "9".parse().unwrap();
        assert_eq!(to_execute(&plan, Some(&missing)), None);
    }

    #[test]
    fn retry_requeues_from_the_first_failure() {
        let plan = leaves(&[
            ("1", Completed),
            ("2", Failed),
            ("3", NotStarted),
            ("4", NotStarted),
        ]);
        let retried: Vec<String> = to_retry(&plan).iter().map(ToString::to_string).collect();
        assert_eq!(retried, ["2", "3", "4"]);
        assert!(to_retry(&leaves(&[("1", Completed), ("2", NotStarted)])).is_empty());
    }

    #[test]
    fn a_failure_unqueues_the_rest() {
        let plan = leaves(&[
            ("1", Failed),
            ("2", Queued),
            ("3", Queued),
            ("4", NotStarted),
        ]);
        let back: Vec<String> = to_unqueue(&plan).iter().map(ToString::to_string).collect();
        assert_eq!(back, ["2", "3"]);
    }

    #[test]
    fn steps_run_in_plan_order_one_at_a_time() {
        let plan = leaves(&[("1", Completed), ("2", Queued), ("3", Queued)]);
        assert_eq!(next_to_run(&plan).unwrap().number.to_string(), "2");
        let running = leaves(&[("1", InProgress), ("2", Queued)]);
        assert!(next_to_run(&running).is_none());
        let gap = leaves(&[("1", NotStarted), ("2", Queued)]);
        assert!(
            next_to_run(&gap).is_none(),
            "never skips an unfinished step"
        );
        assert!(next_to_run(&leaves(&[("1", Completed)])).is_none());
    }
}
