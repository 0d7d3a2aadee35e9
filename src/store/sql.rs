//! What the aggregates' SQL shares, and `sql_store!`, which compiles all of it for a backend.
//!
//! Both SQLite and PostgreSQL accept `$1`-style parameters, `RETURNING` and the types used
//! here (integers, text, booleans), so one body of queries serves both. Each aggregate's
//! queries live beside its trait, in a macro of their own (`token_sql!` in `tokens.rs`,
//! `runbook_sql!` in `runbooks.rs`, …); `sql_store!` expands them all for one backend. What
//! differs — how a write transaction begins, how the pool is opened, which migrations run —
//! lives in each backend's own file as inherent methods the macros call (`begin_write`,
//! `migrator`).
//!
//! The macros' helpers (`insert_runbook`, `token_from_row`, `pull_requests`, …) are inherent
//! methods of the backend's type, so one aggregate's SQL may use another's (a runbook started
//! in a thread is inserted as any other; a session reads its token as the tokens do). Each
//! macro wraps what it expands to in `const _: () = { … };`, so that its `use` lines are its
//! own: a backend's file invokes `sql_store!` and imports nothing for it.

use crate::domain::{
    CacheOutcome, PrMode, PullState, RunbookNumber, SetupStatus, StepKind, StepNumber, StepState,
};

use super::{StoreError, StoreResult};

/// A runbook number is stored as the integer it is, in every column that holds one: binding a
/// [`RunbookNumber`] binds its `i64`, for whichever database `i64` binds to. Kept here rather
/// than in the domain, which knows nothing of SQL.
impl<DB: sqlx::Database> sqlx::Type<DB> for RunbookNumber
where
    i64: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for RunbookNumber
where
    i64: sqlx::Encode<'q, DB>,
{
    fn encode_by_ref(
        &self,
        buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        self.get().encode_by_ref(buf)
    }
}

/// A runbook number read back: the integer the database holds, which must be positive.
pub(super) fn runbook_number(n: i64) -> StoreResult<RunbookNumber> {
    RunbookNumber::try_from(n).map_err(|e| StoreError::Corrupt(format!("runbook number {n}: {e}")))
}

pub(super) fn parse_step_number(s: &str) -> StoreResult<StepNumber> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("step number {s:?}: {e}")))
}

pub(super) fn parse_state(s: &str) -> StoreResult<StepState> {
    s.parse().map_err(StoreError::Corrupt)
}

pub(super) fn parse_kind(s: &str) -> StoreResult<StepKind> {
    s.parse().map_err(StoreError::Corrupt)
}

pub(super) fn parse_pull_state(s: &str) -> StoreResult<PullState> {
    s.parse().map_err(StoreError::Corrupt)
}

pub(super) fn parse_setup_status(s: &str) -> StoreResult<SetupStatus> {
    s.parse().map_err(StoreError::Corrupt)
}

pub(super) fn parse_cache_outcome(s: &str) -> StoreResult<CacheOutcome> {
    s.parse().map_err(StoreError::Corrupt)
}

pub(super) fn parse_pr_mode(s: Option<String>) -> StoreResult<Option<PrMode>> {
    s.map(|s| s.parse().map_err(StoreError::Corrupt))
        .transpose()
}

pub(super) fn parse_labels(s: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("labels {s:?}: {e}")))
}

pub(super) fn labels_json(labels: &[String]) -> String {
    serde_json::to_string(labels).expect("a list of strings always serialises")
}

/// `$first, $first+1, …`: `count` parameters for an `IN (…)` list.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Implements [`super::Store`] and every aggregate's trait for `$store`, a backend whose
/// `pool` is a pool of `$db`.
macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        $crate::store::tokens::token_sql!($store, $db);
        $crate::store::runbooks::runbook_sql!($store, $db);
        $crate::store::steps::step_sql!($store, $db);
        $crate::store::pulls::pull_sql!($store, $db);
        $crate::store::leases::lease_sql!($store, $db);
        $crate::store::threads::thread_sql!($store, $db);
        $crate::store::deliveries::delivery_sql!($store, $db);
        $crate::store::sessions::session_sql!($store, $db);
        $crate::store::setup::setup_sql!($store, $db);
        $crate::store::orgs::org_sql!($store, $db);

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }

            async fn migrate(&self) -> $crate::store::StoreResult<()> {
                Self::migrator().run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

pub(super) use sql_store;
