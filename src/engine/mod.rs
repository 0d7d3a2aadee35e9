//! The engine: plans runbooks and executes their leaf steps, one runbook per worker at a
//! time, under a lease in the database.
//!
//! A worker claims a runbook that has work (a plan to make, queued steps, a follow-up to
//! plan), renews the lease while it works, and releases it when the runbook has nothing left
//! to do. A process that dies stops renewing: its leases expire and any worker — another
//! replica, or this process after a restart — takes the runbook over. A step found
//! `in_progress` by a new lease holder was interrupted; it runs again, unless the branch
//! already ends with its commit (the crash came after the push), so no step's commit
//! appears twice.
//!
//! **What GitHub must show is a debt, paid durably.** A worker records the runbook's debt to
//! GitHub (`Store::owe`) when it takes the runbook, before it changes anything. After each
//! step it reconciles the pull requests with the steps ([`pulls::wanted`]); when the runbook
//! has nothing left to do it reconciles them once more in full (final titles, bodies, ready
//! for review, the stack list), brings the status comment up to date, and only then pays
//! the debt (`Store::settle_owed`). A failure keeps the debt, with a backoff; a crash keeps
//! it too; and a runbook that owes is work (`Store::runbooks_with_work`), so whoever holds
//! it next finishes the job. A step recovered after a crash takes the same path as one that
//! just ran: the PR bookkeeping is computed from the steps, never carried by the step.
//!
//! **Organisations take turns, within their limits.** Workers take runbooks in the order
//! `Store::runbooks_with_work` gives — organisation by organisation, in turn — and a claim
//! past an organisation's `max_running` is refused in the claim's own transaction. Before
//! each plan and each step the engine reads the organisation's budget from the database: a
//! spent one fails the plan or the step with the reason (a retry goes on once it is
//! raised), and a plan past `max_steps` fails with the reason.

mod events;
mod git_steps;
pub mod project;
pub mod pulls;
mod report;
mod setup;
mod setup_cache;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::agent::{Agent, PlanRequest};
use crate::domain::lifecycle::{self, Leaf};
use crate::domain::{PrMode, RunbookNumber, StepKind, StepNumber, StepState, Usage};
use crate::git::RepoCache;
use crate::github::GitHubApp;
use crate::store::{StepEnd, StepRecord, Store, StoreError, now_ms};

pub use events::{EngineEvent, Progress};

/// The first wait before a failed attempt to bring GitHub up to date is retried; it doubles
/// with every failure up to [`RETRY_MAX`].
const RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest wait between two attempts: GitHub down for a day is retried every 5 minutes.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// How many times GitHub is asked for the project configuration before the plan fails.
const PLAN_ATTEMPTS: u32 = 5;

/// Why the engine could not bring GitHub up to date (or read what it needed for it).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    GitHub(#[from] crate::github::GitHubError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A thread recorded under a name that is not `owner/name`.
    #[error("a thread in `{0}`")]
    BadThread(String),
}

/// Why the project configuration could not be applied.
#[derive(Debug, thiserror::Error)]
enum ConfigError {
    #[error(transparent)]
    GitHub(#[from] crate::github::GitHubError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// When the attempt after `attempts` failed ones may run.
fn retry_at(now: i64, attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let wait = RETRY_BASE
        .saturating_mul(2u32.saturating_pow(exp))
        .min(RETRY_MAX);
    now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2)
}

/// How long a lease lasts without renewal (SPEC §8: work is picked up within one lease).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Runbooks worked on at once by this process.
    pub workers: usize,
    pub lease: Duration,
    /// How often idle workers look for work that no wake-up announced (other replicas,
    /// expired leases).
    pub poll: Duration,
    /// Base of dashboard links in pull request bodies.
    pub public_url: String,
    /// Least time between two edits of a status comment.
    pub status_interval: Duration,
    /// The bounds and jail of agent steps, which the repository's setup runs under too: its
    /// commands together get one step timeout.
    pub limits: crate::agent::Limits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            lease: DEFAULT_LEASE,
            poll: Duration::from_secs(2),
            public_url: String::new(),
            status_interval: Duration::from_secs(5),
            limits: crate::agent::Limits::default(),
        }
    }
}

pub struct Engine {
    store: Arc<dyn Store>,
    github: Arc<GitHubApp>,
    agent: Arc<dyn Agent>,
    repos: RepoCache,
    config: EngineConfig,
    /// This process's name; each worker holds leases as `<owner>/<worker>`.
    owner: String,
    wake: Notify,
    events: events::Events,
}

/// What a runbook needs next.
enum Next {
    Plan {
        prompt: String,
        after: u32,
        follow_up: Option<i64>,
        queue: bool,
    },
    Run(Box<StepRecord>),
    /// Steps left `in_progress` by an interrupted worker: queue them again.
    Recover(Vec<StepNumber>),
    Cancel,
    Idle,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        github: Arc<GitHubApp>,
        agent: Arc<dyn Agent>,
        repos: RepoCache,
        config: EngineConfig,
    ) -> Arc<Self> {
        let owner = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "runbooks".into()),
            std::process::id(),
            rand::random::<u32>()
        );
        Arc::new(Self {
            store,
            github,
            agent,
            repos,
            config,
            owner,
            wake: Notify::new(),
            events: events::Events::new(),
        })
    }

    /// Starts the workers.
    pub fn start(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        (0..self.config.workers.max(1))
            .map(|i| {
                let worker = Worker {
                    engine: self.clone(),
                    owner: format!("{}/{i}", self.owner),
                };
                tokio::spawn(worker.run())
            })
            .collect()
    }

    pub(crate) fn github(&self) -> &Arc<GitHubApp> {
        &self.github
    }

    /// Tells idle workers there is new work (a runbook created, executed, retried…).
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// The engine's progress from now on, each event sent once the store has it (see
    /// [`events`]): subscribe, then read the store, then wait for the next event.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EngineEvent> {
        self.events.subscribe()
    }

    fn announce(&self, number: RunbookNumber, progress: Progress) {
        self.events.send(number, progress);
    }

    /// Does the next thing the runbook needs; `false` when there is nothing to do.
    async fn step_once(
        &self,
        number: RunbookNumber,
        lost: &AtomicBool,
    ) -> Result<bool, StoreError> {
        match self.next(number).await? {
            Next::Idle => Ok(false),
            Next::Cancel => {
                let steps = self.store.steps(number).await?;
                for step in steps.iter().filter(|s| s.state == StepState::InProgress) {
                    self.store
                        .finish_step(
                            number,
                            &step.number,
                            &cancelled(String::new()),
                            &Usage::default(),
                        )
                        .await?;
                }
                let queued: Vec<StepNumber> = steps
                    .iter()
                    .filter(|s| s.state == StepState::Queued)
                    .map(|s| s.number.clone())
                    .collect();
                self.store
                    .transition_steps(number, &queued, &[StepState::Queued], StepState::NotStarted)
                    .await?;
                self.store.set_cancel_requested(number, false).await?;
                self.announce(number, Progress::Cancelled);
                Ok(true)
            }
            Next::Recover(numbers) => {
                tracing::info!(
                    runbook = number.get(),
                    steps = numbers.len(),
                    "resuming interrupted steps"
                );
                self.store
                    .transition_steps(
                        number,
                        &numbers,
                        &[StepState::InProgress],
                        StepState::Queued,
                    )
                    .await?;
                self.announce(number, Progress::Resumed);
                Ok(true)
            }
            Next::Plan {
                prompt,
                after,
                follow_up,
                queue,
            } => {
                // A spent budget stops planning too (a model's planner spends tokens): the
                // plan fails with the reason, and a retry plans again.
                if let Some(reason) = self.budget_refusal(number).await? {
                    tracing::warn!(runbook = number.get(), %reason, "not planned: the budget is spent");
                    self.store
                        .record_plan_failure(number, after, &prompt, &reason, follow_up)
                        .await?;
                    self.announce(number, Progress::PlanFailed);
                    return Ok(true);
                }
                if follow_up.is_none()
                    && after == 0
                    && let Err(error) = self.apply_project_config(number).await
                {
                    tracing::warn!(runbook = number.get(), %error, "project configuration not applied");
                    self.store
                        .record_plan_failure(number, after, &prompt, &error.to_string(), follow_up)
                        .await?;
                    self.announce(number, Progress::PlanFailed);
                    return Ok(true);
                }
                // A runbook started from a comment plans with its thread as context.
                let context = self
                    .store
                    .thread(number)
                    .await?
                    .and_then(|t| t.thread.context);
                let mut request = PlanRequest {
                    prompt: prompt.clone(),
                    context,
                    after,
                    tree: None,
                };
                if self.agent.plans_in_tree(&request) {
                    match git_steps::prepare_for_plan(self, number, after).await {
                        Ok(worktree) => request.tree = Some(worktree.path().to_path_buf()),
                        Err(error) => {
                            tracing::warn!(runbook = number.get(), %error, "the plan could not be made");
                            self.store
                                .record_plan_failure(number, after, &prompt, &error, follow_up)
                                .await?;
                            self.announce(number, Progress::PlanFailed);
                            return Ok(true);
                        }
                    }
                }
                // Planning may take as long as a step: it stops, like one, when the runbook
                // is cancelled or the lease is lost.
                let started = std::time::Instant::now();
                let measured = self
                    .watched(number, lost, self.agent.plan_measured(&request))
                    .await;
                let planned = match measured {
                    Ok((result, used)) => {
                        if let Some(used) = used {
                            // A model was asked: what it took counts, plan or no plan.
                            let usage = Usage {
                                wall_ms: u64::try_from(started.elapsed().as_millis())
                                    .unwrap_or(u64::MAX),
                                ..used
                            };
                            self.store.record_plan_usage(number, &usage).await?;
                        }
                        match result {
                            Ok(plan) => match self.too_many_steps(number, &plan).await? {
                                Some(reason) => Err(reason),
                                None => Ok(plan),
                            },
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(Interrupted::LeaseLost) => return Ok(false),
                    Err(Interrupted::Cancelled) => {
                        // Recorded as a plan that was not made, so that the runbook stops
                        // (`failed`; a retry plans again) instead of planning again at once.
                        self.store
                            .record_plan_failure(
                                number,
                                after,
                                &prompt,
                                "cancelled while planning",
                                follow_up,
                            )
                            .await?;
                        self.store.set_cancel_requested(number, false).await?;
                        self.announce(number, Progress::Cancelled);
                        return Ok(true);
                    }
                };
                match planned {
                    Ok(plan) => {
                        let state = if queue {
                            StepState::Queued
                        } else {
                            StepState::NotStarted
                        };
                        tracing::info!(
                            runbook = number.get(),
                            steps = plan.steps().len(),
                            "planned"
                        );
                        self.store
                            .record_plan(number, &plan, state, follow_up)
                            .await?;
                        self.announce(number, Progress::Planned);
                    }
                    Err(e) => {
                        tracing::warn!(runbook = number.get(), error = %e, "the plan could not be made");
                        self.store
                            .record_plan_failure(number, after, &prompt, &e, follow_up)
                            .await?;
                        self.announce(number, Progress::PlanFailed);
                    }
                }
                Ok(true)
            }
            Next::Run(step) => {
                // A spent budget starts no new step: it fails with the reason (the runbook
                // stops, the status comment says why), and a retry runs it once the budget
                // allows.
                if let Some(reason) = self.budget_refusal(number).await? {
                    tracing::warn!(runbook = number.get(), step = %step.number, %reason, "step not run: the budget is spent");
                    let end = StepEnd::Failed {
                        error: reason,
                        log: String::new(),
                    };
                    self.store
                        .finish_step(number, &step.number, &end, &Usage::default())
                        .await?;
                    self.announce(number, Progress::StepFinished);
                    return Ok(true);
                }
                let moved = self
                    .store
                    .transition_steps(
                        number,
                        std::slice::from_ref(&step.number),
                        &[StepState::Queued],
                        StepState::InProgress,
                    )
                    .await?;
                if moved == 0 {
                    return Ok(true);
                }
                self.announce(number, Progress::StepStarted);
                let started = std::time::Instant::now();
                let (end, agent) = self.run_step(number, &step, lost).await;
                // The engine's clock for the wall time, the agent's figures for the rest.
                let usage = Usage {
                    wall_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    ..agent
                };
                if lost.load(Ordering::SeqCst) {
                    // Another worker owns the runbook now and will run the step again.
                    return Ok(false);
                }
                match &end {
                    StepEnd::Completed { commit_sha, .. } => {
                        tracing::info!(runbook = number.get(), step = %step.number, commit = commit_sha.as_deref().unwrap_or("none"), "step completed")
                    }
                    StepEnd::Failed { error, .. } => {
                        tracing::warn!(runbook = number.get(), step = %step.number, %error, "step failed")
                    }
                }
                if let StepEnd::Completed { commit_sha, .. } = &end {
                    // PRs opened as work lands, before the step is recorded completed: a
                    // reader never sees it done without its PR. (A failure here is covered
                    // by the runbook's debt; a crash, by the step running again.)
                    let ending = (&step.number, commit_sha.as_deref());
                    if let Err(error) = self.reconcile(number, false, Some(ending)).await {
                        tracing::warn!(runbook = number.get(), %error, "pull requests not brought up to date");
                    }
                }
                self.store
                    .finish_step(number, &step.number, &end, &usage)
                    .await?;
                self.announce(number, Progress::StepFinished);
                Ok(true)
            }
        }
    }

    /// Why the runbook's organisation may not use an agent now (its monthly budget is
    /// spent), read from the database each time, so a raised budget counts at once.
    async fn budget_refusal(&self, number: RunbookNumber) -> Result<Option<String>, StoreError> {
        let Some(runbook) = self.store.runbook(number).await? else {
            return Ok(None);
        };
        crate::store::budget_refusal(self.store.as_ref(), &runbook.org, now_ms()).await
    }

    /// Why a new plan makes the runbook's plan too big for its organisation's `max_steps`
    /// (its leaves counted with the ones the runbook has already), if it does.
    async fn too_many_steps(
        &self,
        number: RunbookNumber,
        plan: &crate::domain::Plan,
    ) -> Result<Option<String>, StoreError> {
        let Some(runbook) = self.store.runbook(number).await? else {
            return Ok(None);
        };
        let limits = self.store.org_limits(&runbook.org).await?;
        if limits.max_steps.is_none() {
            return Ok(None);
        }
        let existing = self
            .store
            .steps(number)
            .await?
            .iter()
            .filter(|s| s.is_leaf && s.kind != StepKind::Plan)
            .count();
        let leaves = (existing + plan.leaves().count()) as u64;
        Ok(limits.too_many_steps(&runbook.org.to_lowercase(), leaves))
    }

    /// Reads `.github/runbooks.yml` at the runbook's target branch and fills in what the
    /// request left out.
    /// GitHub failing passingly (a 502, a rate limit) is tried again with a growing wait
    /// before the plan fails: it is not the runbook's fault.
    async fn apply_project_config(&self, number: RunbookNumber) -> Result<(), ConfigError> {
        let mut attempt = 1;
        loop {
            match self.read_project_config(number).await {
                Err(ConfigError::GitHub(e)) if e.is_transient() && attempt < PLAN_ATTEMPTS => {
                    let wait = RETRY_BASE * 2u32.pow(attempt - 1);
                    tracing::warn!(runbook = number.get(), attempt, error = %e, ?wait, "project configuration not read; trying again");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn read_project_config(&self, number: RunbookNumber) -> Result<(), ConfigError> {
        let Some(runbook) = self.store.runbook(number).await? else {
            return Ok(());
        };
        let repo = self
            .github
            .installed_repo(&runbook.org, &runbook.repo)
            .await?;
        let target = runbook
            .target_branch
            .clone()
            .unwrap_or_else(|| repo.default_branch.clone());
        let Some(text) = self.github.file(&repo, project::PATH, &target).await? else {
            return Ok(());
        };
        let config = project::parse(&text).map_err(ConfigError::Invalid)?;
        self.store
            .apply_project_config(number, config.pr_mode, config.draft, &config.labels)
            .await?;
        if let Some(setup) = config.setup() {
            self.store.set_setup_config(number, &setup).await?;
        }
        Ok(())
    }

    /// The runbook's pull requests reconciled with its steps (see [`pulls::wanted`]).
    async fn reconcile(
        &self,
        number: RunbookNumber,
        idle: bool,
        ending: Option<(&StepNumber, Option<&str>)>,
    ) -> Result<(), EngineError> {
        let Some(runbook) = self.store.runbook(number).await? else {
            return Ok(());
        };
        let repo = self
            .github
            .installed_repo(&runbook.org, &runbook.repo)
            .await?;
        let reconciled = self.reconcile_pulls(&runbook, &repo, idle, ending).await;
        self.announce(number, Progress::PullRequests);
        reconciled
    }

    /// When a runbook has nothing left to do: its working tree is offered to later runbooks
    /// of the repository (it is set up again, from its branch, if this runbook gets more
    /// work), its pull requests are reconciled in full and its status comment brought up to
    /// date. An error means GitHub does not show everything yet.
    async fn finish(&self, number: RunbookNumber) -> Result<(), EngineError> {
        let Some(runbook) = self.store.runbook(number).await? else {
            return Ok(());
        };
        let full_name = format!("{}/{}", runbook.org, runbook.repo);
        if let Err(e) = self.repos.release(&full_name, number.get()).await {
            tracing::warn!(runbook = number.get(), error = %e, "working tree not released");
        }
        self.reconcile(number, true, None).await?;
        self.try_report(number).await.map(|_| ())
    }

    async fn next(&self, number: RunbookNumber) -> Result<Next, StoreError> {
        let Some(runbook) = self.store.runbook(number).await? else {
            return Ok(Next::Idle);
        };
        if self.store.cancel_requested(number).await? {
            return Ok(Next::Cancel);
        }
        let steps = self.store.steps(number).await?;
        if steps.is_empty() {
            return Ok(Next::Plan {
                prompt: runbook.prompt,
                after: 0,
                follow_up: None,
                queue: runbook.oneshot,
            });
        }
        let interrupted: Vec<StepNumber> = steps
            .iter()
            .filter(|s| s.state == StepState::InProgress)
            .map(|s| s.number.clone())
            .collect();
        if !interrupted.is_empty() {
            return Ok(Next::Recover(interrupted));
        }
        let leaves: Vec<Leaf> = steps
            .iter()
            .filter(|s| s.is_leaf)
            .map(|s| Leaf {
                number: s.number.clone(),
                state: s.state,
            })
            .collect();
        if let Some(leaf) = lifecycle::next_to_run(&leaves) {
            let step = steps
                .iter()
                .find(|s| s.number == leaf.number)
                .cloned()
                .expect("a leaf comes from the steps");
            return Ok(Next::Run(Box::new(step)));
        }
        let waiting = steps
            .iter()
            .any(|s| matches!(s.state, StepState::Queued | StepState::InProgress));
        let plan_failed = steps.iter().any(|s| s.kind == StepKind::Plan);
        if !waiting
            && !plan_failed
            && let Some(follow_up) = self.store.pending_follow_ups(number).await?.first()
        {
            let after = steps
                .iter()
                .map(|s| s.number.top_level())
                .max()
                .unwrap_or(0);
            // A follow-up is new work: it runs at once, unless the runbook stopped on a
            // failure (then it waits, with the rest, for a retry).
            let failed = steps.iter().any(|s| s.state == StepState::Failed);
            return Ok(Next::Plan {
                prompt: follow_up.prompt.clone(),
                after,
                follow_up: Some(follow_up.id),
                queue: !failed,
            });
        }
        Ok(Next::Idle)
    }

    /// Executes one step: working tree, agent, commit, push. Cancellation and a lost lease
    /// stop the agent. With the end, what the agent used (its CPU time and tokens; the wall
    /// time is the caller's).
    async fn run_step(
        &self,
        number: RunbookNumber,
        step: &StepRecord,
        lost: &AtomicBool,
    ) -> (StepEnd, Usage) {
        // What the agent's finished runs used; a run stopped by a cancel reports nothing.
        let mut used = Usage::default();
        let work = git_steps::execute(self, number, step, &mut used);
        let end = match self.watched(number, lost, work).await {
            Ok(end) => end,
            Err(Interrupted::LeaseLost) => StepEnd::Failed {
                error: "the lease was lost".into(),
                log: String::new(),
            },
            Err(Interrupted::Cancelled) => cancelled(String::new()),
        };
        (end, used)
    }

    /// Runs `work` (a step, a plan) until it ends, the runbook is cancelled or the lease is
    /// lost; then it is dropped, which stops whatever agent process it started.
    async fn watched<T>(
        &self,
        number: RunbookNumber,
        lost: &AtomicBool,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Interrupted> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if lost.load(Ordering::SeqCst) {
                        return Err(Interrupted::LeaseLost);
                    }
                    if self.store.cancel_requested(number).await.unwrap_or(false) {
                        return Err(Interrupted::Cancelled);
                    }
                }
            }
        }
    }
}

/// Why the engine stopped work before it ended.
enum Interrupted {
    LeaseLost,
    Cancelled,
}

/// One of the engine's workers: works on one runbook at a time, under its own lease.
struct Worker {
    engine: Arc<Engine>,
    owner: String,
}

impl Worker {
    async fn run(self) {
        loop {
            // Registered before looking, so a wake-up during the look is not lost.
            let notified = self.engine.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.claim_next().await {
                Ok(Some(number)) => {
                    self.run_claimed(number).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not look for work"),
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(self.engine.config.poll) => {}
            }
        }
    }

    async fn claim_next(&self) -> Result<Option<RunbookNumber>, StoreError> {
        let now = now_ms();
        let until = now + self.engine.config.lease.as_millis() as i64;
        for number in self.engine.store.runbooks_with_work(now, 16).await? {
            if self
                .engine
                .store
                .claim_runbook(number, &self.owner, now, until)
                .await?
            {
                return Ok(Some(number));
            }
        }
        Ok(None)
    }

    /// Works on a claimed runbook until it has nothing left to do, keeping the lease alive,
    /// then pays what the runbook owes GitHub.
    async fn run_claimed(&self, number: RunbookNumber) {
        // Owed before anything changes: whatever happens from here, GitHub is brought up to
        // date by this worker or, after a crash, by the next one.
        let version = match self.engine.store.owe(number).await {
            Ok(version) => version,
            Err(e) => {
                tracing::warn!(runbook = number.get(), error = %e, "could not record the runbook's debt to GitHub; leaving it");
                if let Err(e) = self.engine.store.release_lease(number, &self.owner).await {
                    tracing::warn!(runbook = number.get(), error = %e, "lease not released");
                }
                return;
            }
        };
        let lost = Arc::new(AtomicBool::new(false));
        // Aborted when dropped: a worker stopped in the middle (shutdown) must not leave the
        // lease renewed forever.
        let keeper = AbortOnDrop({
            let (store, owner, lease, lost) = (
                self.engine.store.clone(),
                self.owner.clone(),
                self.engine.config.lease,
                lost.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    let until = now_ms() + lease.as_millis() as i64;
                    match store.renew_lease(number, &owner, until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(runbook = number.get(), "lease lost");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(runbook = number.get(), error = %e, "lease not renewed")
                        }
                    }
                }
            })
        });
        let reporter = report::Reporter::start(&self.engine, number).await;
        let mut idle = false;
        while !lost.load(Ordering::SeqCst) {
            match self.engine.step_once(number, &lost).await {
                Ok(true) => reporter.changed(),
                Ok(false) => {
                    idle = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(runbook = number.get(), error = %e, "engine error; will retry");
                    break;
                }
            }
        }
        if !lost.load(Ordering::SeqCst) {
            reporter.finish().await;
        }
        if idle && !lost.load(Ordering::SeqCst) {
            self.pay(number, version).await;
        }
        drop(keeper);
        if let Err(e) = self.engine.store.release_lease(number, &self.owner).await {
            tracing::warn!(runbook = number.get(), error = %e, "lease not released");
        }
        self.engine.announce(number, Progress::Released);
    }
}

impl Worker {
    /// Brings GitHub up to date with a runbook that has nothing left to do, and pays its
    /// debt; on failure the debt stays, to be tried again after a backoff.
    async fn pay(&self, number: RunbookNumber, version: i64) {
        let store = &self.engine.store;
        let outcome = match self.engine.finish(number).await {
            Ok(()) => {
                let settled = store.settle_owed(number, version).await.map(|_| ());
                if settled.is_ok() {
                    self.engine.announce(number, Progress::Settled);
                }
                settled
            }
            Err(error) => {
                let attempts = store
                    .owed_failed(number, &error.to_string(), &|attempts| {
                        retry_at(now_ms(), attempts)
                    })
                    .await;
                if let Ok(attempts) = attempts {
                    tracing::warn!(runbook = number.get(), attempts, %error, "GitHub not brought up to date; will retry");
                    self.engine.announce(number, Progress::Owed);
                }
                attempts.map(|_| ())
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(runbook = number.get(), error = %e, "the runbook's debt to GitHub not recorded");
        }
    }
}

/// A task that is aborted when this handle is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn cancelled(log: String) -> StepEnd {
    StepEnd::Failed {
        error: "cancelled".into(),
        log,
    }
}

/// The one branch of a `single_pr` or `manual` runbook.
pub fn single_branch(number: RunbookNumber) -> String {
    format!("runbooks/{number}")
}

/// The top-level steps with a completed, committed leaf: the branches a stack is built on.
pub fn tops_with_commits(steps: &[StepRecord]) -> Vec<u32> {
    steps
        .iter()
        .filter(|s| s.state == StepState::Completed && s.commit_sha.is_some())
        .map(|s| s.number.top_level())
        .collect()
}

/// The branch a step's commits go to, and the branch it starts from.
pub fn branches(
    number: RunbookNumber,
    mode: PrMode,
    step: &StepNumber,
    target: &str,
    earlier_tops_with_commits: &[u32],
) -> (String, String) {
    match mode {
        PrMode::SinglePr | PrMode::Manual => (single_branch(number), target.to_string()),
        PrMode::StackedPr => {
            let top = step.top_level();
            let base = earlier_tops_with_commits
                .iter()
                .filter(|t| **t < top)
                .max()
                .map(|t| format!("runbooks/{number}/step-{t}"))
                .unwrap_or_else(|| target.to_string());
            (format!("runbooks/{number}/step-{top}"), base)
        }
    }
}

/// The commit message of a step: its title, its details, and trailers naming the runbook
/// and the step (and who asked, when known).
pub fn commit_message(
    number: RunbookNumber,
    step: &StepNumber,
    title: &str,
    details: &str,
    author_email: Option<&str>,
) -> String {
    let mut message = format!("{}\n", title.trim());
    let details = details.trim();
    if !details.is_empty() {
        message.push('\n');
        message.push_str(details);
        message.push('\n');
    }
    message.push_str(&format!("\nRunbook: {number}\nRunbook-Step: {step}\n"));
    if let Some(email) = author_email {
        let name = email.split('@').next().unwrap_or(email);
        message.push_str(&format!("Co-authored-by: {name} <{email}>\n"));
    }
    message
}

/// Whether a commit message is that of this runbook's step (its trailers say so).
pub fn is_commit_of(message: &str, number: RunbookNumber, step: &StepNumber) -> bool {
    let runbook = format!("Runbook: {number}");
    let step = format!("Runbook-Step: {step}");
    let has = |wanted: &str| message.lines().any(|line| line.trim() == wanted);
    has(&runbook) && has(&step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> StepNumber {
        s.parse().unwrap()
    }

    fn rn(number: i64) -> RunbookNumber {
        RunbookNumber::try_from(number).unwrap()
    }

    #[test]
    fn branch_layout_serves_every_pr_mode() {
        assert_eq!(
            branches(rn(7), PrMode::SinglePr, &n("2.1"), "main", &[1]),
            ("runbooks/7".into(), "main".into())
        );
        assert_eq!(
            branches(rn(7), PrMode::Manual, &n("1"), "develop", &[]),
            ("runbooks/7".into(), "develop".into())
        );
        assert_eq!(
            branches(rn(7), PrMode::StackedPr, &n("1.2"), "main", &[]),
            ("runbooks/7/step-1".into(), "main".into())
        );
        // The nearest earlier top-level step with commits; one without is skipped.
        assert_eq!(
            branches(rn(7), PrMode::StackedPr, &n("3.1"), "main", &[1]),
            ("runbooks/7/step-3".into(), "runbooks/7/step-1".into())
        );
    }

    #[test]
    fn commit_messages_carry_trailers() {
        let message = commit_message(
            rn(12),
            &n("1.2"),
            "Update callers",
            "```sh\nsed …\n```",
            Some("dev@acme.example"),
        );
        assert!(message.starts_with("Update callers\n\n```sh"));
        assert!(message.ends_with(
            "\nRunbook: 12\nRunbook-Step: 1.2\nCo-authored-by: dev <dev@acme.example>\n"
        ));
        assert!(is_commit_of(&message, rn(12), &n("1.2")));
        assert!(!is_commit_of(&message, rn(12), &n("1.1")));
        assert!(!is_commit_of(&message, rn(1), &n("1.2")));
        assert!(!is_commit_of("Initial commit", rn(12), &n("1.2")));
    }
}
