//! A blocking facade over [`crate::MemoryStore`] for callers without an async runtime.
//!
//! It owns a small tokio runtime (one worker thread, which also runs the health checker) and
//! blocks on each call. Do not call it from inside an async runtime: use the async store there.

use engram_config::{Config, IndexConfig};

use crate::entry::{MemoryEntry, MemoryId};
use crate::error::MemoryError;
use crate::query::{MemoryQuery, ScoredMemory};
use crate::store::{self, HealthStatusReport, ListPage, StoreMetrics};

/// The blocking twin of [`crate::MemoryStore`]; every method has the same meaning.
#[derive(Debug)]
pub struct MemoryStore {
    runtime: tokio::runtime::Runtime,
    store: store::MemoryStore,
}

fn runtime() -> Result<tokio::runtime::Runtime, MemoryError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("engram-memory")
        .enable_all()
        .build()
        .map_err(|e| MemoryError::invalid("runtime", format!("cannot start a tokio runtime: {e}")))
}

impl MemoryStore {
    /// See [`crate::MemoryStore::connect`].
    ///
    /// # Errors
    /// As the async method.
    #[cfg(feature = "redis")]
    pub fn connect(config: Config) -> Result<Self, MemoryError> {
        let runtime = runtime()?;
        let store = runtime.block_on(store::MemoryStore::connect(config))?;
        Ok(Self { runtime, store })
    }

    /// See [`crate::MemoryStore::in_memory`].
    ///
    /// # Errors
    /// As the async method.
    pub fn in_memory(schema: IndexConfig) -> Result<Self, MemoryError> {
        let runtime = runtime()?;
        let store = runtime.block_on(store::MemoryStore::in_memory(schema))?;
        Ok(Self { runtime, store })
    }

    /// A blocking store over the in-process backend with a whole configuration.
    ///
    /// # Errors
    /// As [`crate::MemoryStore::with_backend`].
    pub fn with_config_in_memory(config: Config) -> Result<Self, MemoryError> {
        let runtime = runtime()?;
        let store = runtime.block_on(store::MemoryStore::with_backend(
            config,
            std::sync::Arc::new(engram_storage::InProcessBackend::new()),
            store::StoreOptions::default(),
        ))?;
        Ok(Self { runtime, store })
    }

    /// The async store inside.
    pub fn as_async(&self) -> &store::MemoryStore {
        &self.store
    }

    /// See [`crate::MemoryStore::add`].
    ///
    /// # Errors
    /// As the async method.
    pub fn add(&self, entry: MemoryEntry) -> Result<MemoryId, MemoryError> {
        self.runtime.block_on(self.store.add(entry))
    }

    /// See [`crate::MemoryStore::add_batch`].
    pub fn add_batch(&self, entries: Vec<MemoryEntry>) -> Vec<Result<MemoryId, MemoryError>> {
        self.runtime.block_on(self.store.add_batch(entries))
    }

    /// See [`crate::MemoryStore::get`].
    ///
    /// # Errors
    /// As the async method.
    pub fn get(&self, namespace: &str, id: &str) -> Result<Option<MemoryEntry>, MemoryError> {
        self.runtime.block_on(self.store.get(namespace, id))
    }

    /// See [`crate::MemoryStore::get_batch`].
    pub fn get_batch(
        &self,
        namespace: &str,
        ids: &[&str],
    ) -> Vec<Result<Option<MemoryEntry>, MemoryError>> {
        self.runtime.block_on(self.store.get_batch(namespace, ids))
    }

    /// See [`crate::MemoryStore::exists`].
    ///
    /// # Errors
    /// As the async method.
    pub fn exists(&self, namespace: &str, id: &str) -> Result<bool, MemoryError> {
        self.runtime.block_on(self.store.exists(namespace, id))
    }

    /// See [`crate::MemoryStore::update`].
    ///
    /// # Errors
    /// As the async method.
    pub fn update(&self, entry: MemoryEntry) -> Result<MemoryEntry, MemoryError> {
        self.runtime.block_on(self.store.update(entry))
    }

    /// See [`crate::MemoryStore::update_with`].
    ///
    /// # Errors
    /// As the async method.
    pub fn update_with<F>(
        &self,
        namespace: &str,
        id: &str,
        change: F,
    ) -> Result<MemoryEntry, MemoryError>
    where
        F: FnMut(&mut MemoryEntry) + Send,
    {
        self.runtime.block_on(self.store.update_with(namespace, id, change))
    }

    /// See [`crate::MemoryStore::delete`].
    ///
    /// # Errors
    /// As the async method.
    pub fn delete(&self, namespace: &str, id: &str) -> Result<bool, MemoryError> {
        self.runtime.block_on(self.store.delete(namespace, id))
    }

    /// See [`crate::MemoryStore::delete_batch`].
    pub fn delete_batch(&self, namespace: &str, ids: &[&str]) -> Vec<Result<bool, MemoryError>> {
        self.runtime.block_on(self.store.delete_batch(namespace, ids))
    }

    /// See [`crate::MemoryStore::count`].
    ///
    /// # Errors
    /// As the async method.
    pub fn count(&self, namespace: &str) -> Result<u64, MemoryError> {
        self.runtime.block_on(self.store.count(namespace))
    }

    /// See [`crate::MemoryStore::list`].
    ///
    /// # Errors
    /// As the async method.
    pub fn list(
        &self,
        namespace: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<ListPage, MemoryError> {
        self.runtime.block_on(self.store.list(namespace, cursor, limit))
    }

    /// See [`crate::MemoryStore::query`].
    ///
    /// # Errors
    /// As the async method.
    pub fn query(&self, query: MemoryQuery) -> Result<Vec<ScoredMemory>, MemoryError> {
        self.runtime.block_on(self.store.query(query))
    }

    /// See [`crate::MemoryStore::get_metrics`].
    pub fn get_metrics(&self) -> StoreMetrics {
        self.store.get_metrics()
    }

    /// See [`crate::MemoryStore::get_health_status`].
    pub fn get_health_status(&self) -> HealthStatusReport {
        self.runtime.block_on(self.store.get_health_status())
    }
}
