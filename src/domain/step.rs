//! Step numbers, leaf-step states and the plan tree.
//!
//! A plan is a tree of numbered steps (`1`, `1.1`, `1.2`, `2`, …). Only leaf steps are
//! executed and counted; a parent step is a grouping. Numbers must be contiguous and unique
//! under every parent, so that `2.3` never exists without `2.1` and `2.2`.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The deepest nesting a plan may use; deeper trees are almost certainly a parsing mistake.
pub const MAX_STEP_DEPTH: usize = 8;

/// A dotted step number such as `2.3`. Ordered as a path, so `1.10` comes after `1.9` and a
/// parent comes before its children (plan order).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepNumber(Vec<u32>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepNumberError {
    #[error("a step number cannot be empty")]
    Empty,
    #[error("step number `{0}` is not a dotted list of positive whole numbers, like `2.3`")]
    Malformed(String),
    #[error("step number `{0}` is nested deeper than {MAX_STEP_DEPTH} levels")]
    TooDeep(String),
}

impl StepNumber {
    /// A top-level step number.
    pub fn top(n: u32) -> Self {
        assert!(n > 0, "step numbers start at 1");
        Self(vec![n])
    }

    pub fn segments(&self) -> &[u32] {
        &self.0
    }

    /// How deep the step sits: `1` is depth 1, `1.2` depth 2.
    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// The top-level step this number belongs to (`2` for `2.3.1`).
    pub fn top_level(&self) -> u32 {
        self.0[0]
    }

    /// The parent number (`2` for `2.3`), or `None` for a top-level step.
    pub fn parent(&self) -> Option<StepNumber> {
        (self.0.len() > 1).then(|| StepNumber(self.0[..self.0.len() - 1].to_vec()))
    }

    /// The last segment: the step's position under its parent.
    pub fn last(&self) -> u32 {
        *self
            .0
            .last()
            .expect("a step number has at least one segment")
    }

    /// Whether `self` is `other` or lies under it (`2.3.1` is within `2`).
    pub fn is_within(&self, other: &StepNumber) -> bool {
        self.0.starts_with(&other.0)
    }

    /// What [`StepNumber::from_str`] accepts, as a regular expression for the API's
    /// description (see [`super::runbook::patterns`]).
    pub fn pattern() -> String {
        let segment = super::runbook::patterns::positive_up_to(u64::from(u32::MAX));
        format!(r"^{segment}(?:\.{segment}){{0,{}}}$", MAX_STEP_DEPTH - 1)
    }

    /// The number of the `n`-th child of this step.
    pub fn child(&self, n: u32) -> StepNumber {
        assert!(n > 0, "step numbers start at 1");
        let mut segments = self.0.clone();
        segments.push(n);
        StepNumber(segments)
    }
}

impl fmt::Display for StepNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{segment}")?;
        }
        Ok(())
    }
}

impl FromStr for StepNumber {
    type Err = StepNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(StepNumberError::Empty);
        }
        let malformed = || StepNumberError::Malformed(s.to_string());
        let segments = s
            .split('.')
            .map(|part| {
                // Only plain ASCII digits: no signs, spaces or leading zeros ("01" is ambiguous).
                if part.is_empty()
                    || !part.bytes().all(|b| b.is_ascii_digit())
                    || (part.len() > 1 && part.starts_with('0'))
                {
                    return Err(malformed());
                }
                match part.parse::<u32>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(malformed()),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        if segments.len() > MAX_STEP_DEPTH {
            return Err(StepNumberError::TooDeep(s.to_string()));
        }
        Ok(Self(segments))
    }
}

impl Serialize for StepNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StepNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The state of a leaf step: `not_started` → `queued` → `in_progress` → `completed` | `failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    NotStarted,
    Queued,
    InProgress,
    Completed,
    Failed,
}

impl StepState {
    pub const ALL: [StepState; 5] = [
        StepState::NotStarted,
        StepState::Queued,
        StepState::InProgress,
        StepState::Completed,
        StepState::Failed,
    ];

    /// The name used in the API and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::NotStarted => "not_started",
            StepState::Queued => "queued",
            StepState::InProgress => "in_progress",
            StepState::Completed => "completed",
            StepState::Failed => "failed",
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown step state `{s}`"))
    }
}

/// What a stored step stands for: work for the agent, or a plan that could not be generated
/// (a failed step that keeps the prompt in its details, for a retry). The store's SQL names
/// `plan` in the queries that look for such steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepKind {
    Work,
    Plan,
}

impl StepKind {
    pub const ALL: [StepKind; 2] = [StepKind::Work, StepKind::Plan];

    /// The name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Work => "work",
            StepKind::Plan => "plan",
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| format!("unknown step kind `{s}`"))
    }
}

/// One step of a plan as a planner produces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedStep {
    pub number: StepNumber,
    pub title: String,
    /// What the agent is asked to do (for the script agent: the text with its command blocks).
    pub details: String,
}

/// Why a plan was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the plan has no steps")]
    Empty,
    #[error("step {0} appears more than once")]
    Duplicate(StepNumber),
    #[error("step {found} is out of order: expected step {expected}")]
    NotContiguous {
        expected: StepNumber,
        found: StepNumber,
    },
    #[error("step {0} has an empty title")]
    EmptyTitle(StepNumber),
}

/// A validated plan: steps in plan order (a parent before its children, siblings by number),
/// numbered contiguously from 1 under every parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    steps: Vec<PlannedStep>,
    leaves: Vec<bool>,
}

impl Plan {
    /// Checks the steps are a well-formed tree in plan order: the first step is `1`, and every
    /// next step is either the first child of the previous one, or the next sibling of the
    /// previous one or of one of its ancestors.
    pub fn new(steps: Vec<PlannedStep>) -> Result<Self, PlanError> {
        Self::continuing(steps, 0)
    }

    /// Like [`Plan::new`], but the first top-level step is `after + 1`: used for follow-up
    /// work appended after an existing plan whose last top-level step is `after`.
    pub fn continuing(steps: Vec<PlannedStep>, after: u32) -> Result<Self, PlanError> {
        if steps.is_empty() {
            return Err(PlanError::Empty);
        }
        let mut seen = HashSet::new();
        let mut previous: Option<&StepNumber> = None;
        for step in &steps {
            if !seen.insert(step.number.clone()) {
                return Err(PlanError::Duplicate(step.number.clone()));
            }
            if step.title.trim().is_empty() {
                return Err(PlanError::EmptyTitle(step.number.clone()));
            }
            let acceptable = match previous {
                None => vec![StepNumber::top(after + 1)],
                Some(prev) => next_numbers(prev),
            };
            if !acceptable.contains(&step.number) {
                // Name the most natural expectation: the next sibling at the found depth when
                // that exists, otherwise the first acceptable number.
                let expected = acceptable
                    .iter()
                    .find(|n| n.depth() == step.number.depth())
                    .unwrap_or(&acceptable[0])
                    .clone();
                return Err(PlanError::NotContiguous {
                    expected,
                    found: step.number.clone(),
                });
            }
            previous = Some(&step.number);
        }
        let leaves = steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                steps
                    .get(i + 1)
                    .is_none_or(|next| next.number.parent().as_ref() != Some(&step.number))
            })
            .collect();
        Ok(Self { steps, leaves })
    }

    pub fn steps(&self) -> &[PlannedStep] {
        &self.steps
    }

    /// Steps with whether each is a leaf, in plan order.
    pub fn iter(&self) -> impl Iterator<Item = (&PlannedStep, bool)> {
        self.steps.iter().zip(self.leaves.iter().copied())
    }

    pub fn leaves(&self) -> impl Iterator<Item = &PlannedStep> {
        self.iter().filter(|(_, leaf)| *leaf).map(|(step, _)| step)
    }

    pub fn into_steps(self) -> Vec<(PlannedStep, bool)> {
        self.steps.into_iter().zip(self.leaves).collect()
    }
}

/// The numbers that may follow `prev` in plan order: its first child, its next sibling, or the
/// next sibling of any of its ancestors.
fn next_numbers(prev: &StepNumber) -> Vec<StepNumber> {
    let mut options = Vec::with_capacity(prev.depth() + 1);
    if prev.depth() < MAX_STEP_DEPTH {
        options.push(prev.child(1));
    }
    let mut current = Some(prev.clone());
    while let Some(number) = current {
        let mut segments = number.segments().to_vec();
        *segments.last_mut().expect("non-empty") += 1;
        options.push(StepNumber(segments));
        current = number.parent();
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern the API's description gives for a step accepts exactly what parses.
    #[test]
    fn the_pattern_says_what_parses() {
        let pattern = fancy_regex::Regex::new(&StepNumber::pattern()).unwrap();
        let mut samples: Vec<String> = [
            "",
            "0",
            "1",
            "01",
            "1.",
            ".1",
            "1..2",
            "1.0",
            "1.2.3",
            "+1",
            "-1",
            " 1",
            "1 ",
            "x.1",
            "4294967295",
            "4294967296",
            "4294967295.4294967295",
            "99999999999",
            "١",
            "1.1.1.1.1.1.1.1",
            "1.1.1.1.1.1.1.1.1",
            "2.10",
            "1e3",
        ]
        .map(String::from)
        .to_vec();
        for a in ["1", "9", "10", "0", "429496729", "4294967294"] {
            for b in ["", ".", ".1", ".0", ".42949672950"] {
                samples.push(format!("{a}{b}"));
            }
        }
        for sample in &samples {
            assert_eq!(
                pattern.is_match(sample).unwrap(),
                sample.parse::<StepNumber>().is_ok(),
                "{sample:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn the_pattern_agrees_on_any_dotted_digits(sample in "[0-9.]{0,24}") {
            let pattern = fancy_regex::Regex::new(&StepNumber::pattern()).unwrap();
            proptest::prop_assert_eq!(
                pattern.is_match(&sample).unwrap(),
                sample.parse::<StepNumber>().is_ok()
            );
        }
    }

    fn n(s: &str) -> StepNumber {
        s.parse().unwrap()
    }

    fn plan(numbers: &[&str]) -> Result<Plan, PlanError> {
        Plan::new(
            numbers
                .iter()
                .map(|number| PlannedStep {
                    number: n(number),
                    title: format!("Step {number}"),
                    details: String::new(),
                })
                .collect(),
        )
    }

    #[test]
    fn numbers_parse_and_print() {
        assert_eq!(n("2.3").segments(), &[2, 3]);
        assert_eq!(n("2.3").to_string(), "2.3");
        assert_eq!(n("10").to_string(), "10");
        for bad in [
            "", "0", "1.0", "a", "1.", ".1", "1..2", "-1", "01", "1 .2", "+1",
        ] {
            assert!(
                bad.parse::<StepNumber>().is_err(),
                "{bad:?} should not parse"
            );
        }
        assert!("1.1.1.1.1.1.1.1.1".parse::<StepNumber>().is_err());
    }

    #[test]
    fn numbers_sort_in_plan_order() {
        let mut numbers = [n("2"), n("1.10"), n("1.9"), n("1"), n("1.9.1")];
        numbers.sort();
        let printed: Vec<_> = numbers.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["1", "1.9", "1.9.1", "1.10", "2"]);
    }

    #[test]
    fn relations() {
        assert_eq!(n("2.3").parent(), Some(n("2")));
        assert_eq!(n("2").parent(), None);
        assert!(n("2.3.1").is_within(&n("2")));
        assert!(!n("2").is_within(&n("2.3")));
        assert!(!n("12").is_within(&n("1")));
        assert_eq!(n("2.3.1").top_level(), 2);
    }

    #[test]
    fn valid_plans_and_their_leaves() {
        let p = plan(&["1", "1.1", "1.2", "2", "3", "3.1", "3.1.1", "3.2"]).unwrap();
        let leaves: Vec<_> = p.leaves().map(|s| s.number.to_string()).collect();
        assert_eq!(leaves, ["1.1", "1.2", "2", "3.1.1", "3.2"]);
    }

    #[test]
    fn invalid_plans_are_rejected_with_the_reason() {
        assert_eq!(plan(&[]), Err(PlanError::Empty));
        assert_eq!(
            plan(&["2"]),
            Err(PlanError::NotContiguous {
                expected: n("1"),
                found: n("2")
            })
        );
        assert_eq!(
            plan(&["1", "1.1", "1.3"]),
            Err(PlanError::NotContiguous {
                expected: n("1.2"),
                found: n("1.3")
            })
        );
        assert_eq!(plan(&["1", "2", "2"]), Err(PlanError::Duplicate(n("2"))));
        assert!(matches!(
            plan(&["1", "1.2"]),
            Err(PlanError::NotContiguous { .. })
        ));
        assert!(matches!(
            plan(&["1", "2", "1.1"]),
            Err(PlanError::NotContiguous { .. })
        ));
    }

    #[test]
    fn follow_up_plans_continue_the_numbering() {
        let steps = vec![PlannedStep {
            number: n("4"),
            title: "More".into(),
            details: String::new(),
        }];
        assert!(Plan::continuing(steps.clone(), 3).is_ok());
        assert!(Plan::continuing(steps, 2).is_err());
    }

    #[test]
    fn kinds_read_back_what_they_write() {
        for kind in StepKind::ALL {
            assert_eq!(kind.as_str().parse::<StepKind>(), Ok(kind));
        }
        assert_eq!(
            "Plan".parse::<StepKind>(),
            Err("unknown step kind `Plan`".to_string())
        );
    }
}
