//! Batched reads for the fields of many runbooks: one SQL statement per kind of data for a
//! whole page, never one per runbook.
//!
//! A [`Loaders`] lives for one request. It batches the keys asked for at the same time
//! (async-graphql resolves the runbooks of a list concurrently) and caches what it read, so
//! `status`, `stepCounts` and `steps` of a runbook share one read. Listings also load the
//! page's data up front ([`Loaders::prime`]), so the statement count does not depend on
//! how the resolvers happen to be scheduled. Mutations clear the cache ([`Loaders::forget`]).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};

use crate::domain::RunbookNumber;
use crate::http::ApiError;
use crate::store::{PullWithSteps, StepRecord, Store, StoreError, ThreadRecord};

/// The steps of a runbook, in plan order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StepsOf(pub RunbookNumber);

/// The pull requests of a runbook, in the order opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PullsOf(pub RunbookNumber);

/// The thread a runbook was started from, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThreadOf(pub RunbookNumber);

/// Reads for many runbooks at once, over [`crate::store::StepStore::steps_of`],
/// [`crate::store::PullStore::pull_requests_of`] and [`crate::store::ThreadStore::threads_of`].
/// Every key asked for gets a value (an empty list, or no thread), so that it is cached too.
pub struct Batch {
    store: Arc<dyn Store>,
}

/// A failed read, shared by every field waiting for it.
#[derive(Debug, Clone)]
pub struct LoadError(Arc<StoreError>);

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        ApiError::Internal(anyhow::anyhow!("{}", e.0))
    }
}

fn failed(e: StoreError) -> LoadError {
    LoadError(Arc::new(e))
}

impl Loader<StepsOf> for Batch {
    type Value = Arc<Vec<StepRecord>>;
    type Error = LoadError;

    async fn load(&self, keys: &[StepsOf]) -> Result<HashMap<StepsOf, Self::Value>, LoadError> {
        let numbers: Vec<RunbookNumber> = keys.iter().map(|k| k.0).collect();
        let mut found = self.store.steps_of(&numbers).await.map_err(failed)?;
        Ok(keys
            .iter()
            .map(|k| (*k, Arc::new(found.remove(&k.0).unwrap_or_default())))
            .collect())
    }
}

impl Loader<PullsOf> for Batch {
    type Value = Arc<Vec<PullWithSteps>>;
    type Error = LoadError;

    async fn load(&self, keys: &[PullsOf]) -> Result<HashMap<PullsOf, Self::Value>, LoadError> {
        let numbers: Vec<RunbookNumber> = keys.iter().map(|k| k.0).collect();
        let mut found = self
            .store
            .pull_requests_of(&numbers)
            .await
            .map_err(failed)?;
        Ok(keys
            .iter()
            .map(|k| (*k, Arc::new(found.remove(&k.0).unwrap_or_default())))
            .collect())
    }
}

impl Loader<ThreadOf> for Batch {
    type Value = Option<Arc<ThreadRecord>>;
    type Error = LoadError;

    async fn load(&self, keys: &[ThreadOf]) -> Result<HashMap<ThreadOf, Self::Value>, LoadError> {
        let numbers: Vec<RunbookNumber> = keys.iter().map(|k| k.0).collect();
        let mut found = self.store.threads_of(&numbers).await.map_err(failed)?;
        Ok(keys
            .iter()
            .map(|k| (*k, found.remove(&k.0).map(Arc::new)))
            .collect())
    }
}

/// The request's loaders.
pub struct Loaders {
    loader: DataLoader<Batch, HashMapCache>,
}

/// What a listing's selection needs, to load it for the whole page at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub steps: bool,
    pub pulls: bool,
    pub threads: bool,
}

impl Loaders {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            loader: DataLoader::with_cache(Batch { store }, tokio::spawn, HashMapCache::default()),
        }
    }

    pub async fn steps(&self, number: RunbookNumber) -> Result<Arc<Vec<StepRecord>>, ApiError> {
        Ok(self
            .loader
            .load_one(StepsOf(number))
            .await?
            .unwrap_or_default())
    }

    pub async fn pulls(&self, number: RunbookNumber) -> Result<Arc<Vec<PullWithSteps>>, ApiError> {
        Ok(self
            .loader
            .load_one(PullsOf(number))
            .await?
            .unwrap_or_default())
    }

    pub async fn thread(
        &self,
        number: RunbookNumber,
    ) -> Result<Option<Arc<ThreadRecord>>, ApiError> {
        Ok(self.loader.load_one(ThreadOf(number)).await?.flatten())
    }

    /// The steps of several runbooks, in one read (less what is cached already).
    pub async fn steps_of(
        &self,
        numbers: &[RunbookNumber],
    ) -> Result<HashMap<RunbookNumber, Arc<Vec<StepRecord>>>, ApiError> {
        let found = self
            .loader
            .load_many(numbers.iter().map(|n| StepsOf(*n)))
            .await?;
        Ok(found.into_iter().map(|(k, v)| (k.0, v)).collect())
    }

    /// Remembers runbooks' steps read already (by a listing), so fields asking for them do
    /// not read them again.
    pub async fn feed_steps(
        &self,
        steps: impl IntoIterator<Item = (RunbookNumber, Vec<StepRecord>)>,
    ) {
        self.loader
            .feed_many(steps.into_iter().map(|(n, s)| (StepsOf(n), Arc::new(s))))
            .await;
    }

    /// Loads what a page of runbooks will be asked for, one read per kind, concurrently.
    pub async fn prime(&self, numbers: &[RunbookNumber], needs: Needs) -> Result<(), ApiError> {
        let steps = async {
            if needs.steps {
                self.steps_of(numbers).await?;
            }
            Ok::<_, ApiError>(())
        };
        let pulls = async {
            if needs.pulls {
                self.loader
                    .load_many(numbers.iter().map(|n| PullsOf(*n)))
                    .await?;
            }
            Ok::<_, ApiError>(())
        };
        let threads = async {
            if needs.threads {
                self.loader
                    .load_many(numbers.iter().map(|n| ThreadOf(*n)))
                    .await?;
            }
            Ok::<_, ApiError>(())
        };
        let (steps, pulls, threads) = tokio::join!(steps, pulls, threads);
        steps.and(pulls).and(threads)
    }

    /// Forgets what was read: after a mutation, fields show the new state.
    pub fn forget(&self) {
        self.loader.clear::<StepsOf>();
        self.loader.clear::<PullsOf>();
        self.loader.clear::<ThreadOf>();
    }
}
