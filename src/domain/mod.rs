//! The product's pure core: runbooks, the step tree and the status function. No I/O here.

pub mod lifecycle;
pub mod limits;
pub mod pull;
pub mod repository;
pub mod runbook;
pub mod setup;
pub mod status;
pub mod step;
pub mod usage;

pub use limits::{LimitChanges, LimitValue, OrgLimits};
pub use pull::PullState;
pub use repository::{NotARepoName, RepoName};
pub use runbook::{
    FieldError, FieldPath, FollowUp, FollowUpRequest, NewRunbook, NotARunbookNumber, PrMode,
    RunbookNumber, RunbookRequest,
};
pub use setup::{CacheConfig, CacheOutcome, OnFailure, SetupConfig, SetupReport, SetupStatus};
pub use status::{RunbookStatus, ShownState, StepCounts, status};
pub use step::{Plan, PlanError, PlannedStep, StepKind, StepNumber, StepState};
pub use usage::Usage;

/// A pull request a runbook opened, with the leaf steps whose commits it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequestRef {
    pub number: u64,
    pub url: String,
    /// Leaf step numbers in plan order.
    pub step_numbers: Vec<String>,
}

/// What the status endpoints need to know about a runbook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunbookSummary {
    pub number: RunbookNumber,
    pub org: String,
    pub repo: String,
    pub title: String,
    pub counts: StepCounts,
    pub pull_requests: Vec<PullRequestRef>,
}

impl RunbookSummary {
    pub fn status(&self) -> RunbookStatus {
        status(&self.counts)
    }
}
