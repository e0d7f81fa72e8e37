//! `MemoryStore`: the API agent runtimes call.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use engram_config::{Config, ConfigError, DedupConfig, IndexConfig, RankingConfig};
use engram_resilience::{
    Backoff, BreakerSnapshot, CircuitBreaker, HealthChecker, HealthReport, HealthStatus, Jitter,
    MetricsObserver, Observer, Observers, TokioClock,
};
use engram_storage::clock::{SystemClock, WallClock};
use engram_storage::layers::{MetricsPolicy, OperationStats, OperationSummary, StackBuilder};
use engram_storage::{
    BackendInfo, ErrorKind, Filter, InProcessBackend, IndexSchema, ItemOutcome, Namespace, Record,
    RecordId, ScanCursor, StorageBackend, StorageBackendExt, StorageError, Timestamp,
    UnboxedBackend, VectorQuery,
};
use serde::{Deserialize, Serialize};

use crate::codec::{self, F_HASH, F_TYPE};
use crate::entry::{MemoryEntry, MemoryId, memory_id, namespace};
use crate::error::{MemoryError, from_storage_input};
use crate::policy::Policies;
use crate::query::{MemoryQuery, ScoredMemory};
use crate::ranking;

/// Namespace of engram's own records (names starting with `__` are refused to callers).
const META_NAMESPACE: &str = "__engram";
/// Id of the record that holds the index's embedding dimension and model name.
const META_ID: &str = "index-meta";
/// How many times `update_with` tries (reads, re-applies, writes) before it reports the
/// conflict. Between attempts it pauses 1 ms, doubling up to 64 ms, with equal jitter: at
/// least 0.13 s in all, so a writer that keeps winning cannot starve it.
pub const MAX_UPDATE_ATTEMPTS: u32 = 10;
/// Most distinct content hashes looked up by one exact-dedup `find`.
const DEDUP_HASHES_PER_FIND: usize = 256;
/// Stored candidates read per content hash (more than one only after hash collisions, or for
/// content stored twice while deduplication was off).
const DEDUP_CANDIDATES_PER_HASH: usize = 16;

/// The embedding facts recorded with the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IndexMeta {
    dimension: u32,
    model: Option<String>,
}

/// One page of [`MemoryStore::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// The entries of the page.
    pub entries: Vec<MemoryEntry>,
    /// The cursor of the next page, `None` at the end.
    pub next: Option<String>,
}

/// What [`MemoryStore::get_metrics`] returns: the same measurements as the Prometheus metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreMetrics {
    /// Totals, success rate, mean and p99 latency, and retries per operation.
    pub operations: Vec<OperationSummary>,
    /// Retries in all.
    pub retries: u64,
    /// Retries the budget refused.
    pub budget_refusals: u64,
    /// The circuit breaker, when enabled.
    pub breaker: Option<BreakerSnapshot>,
}

/// What [`MemoryStore::get_health_status`] returns.
#[derive(Debug, Clone)]
pub struct HealthStatusReport {
    /// The health checker's last report, when health checks are enabled.
    pub health: Option<HealthReport>,
    /// The circuit breaker, when enabled.
    pub breaker: Option<BreakerSnapshot>,
    /// The backend's description, or why it could not be read.
    pub backend: Result<BackendInfo, String>,
}

impl HealthStatusReport {
    /// Whether the index is still indexing existing records (`percent_indexed` below 1, as
    /// after a restart or after the index was re-created): searches may miss records.
    pub fn indexing(&self) -> bool {
        self.backend
            .as_ref()
            .ok()
            .and_then(|b| b.index.as_ref())
            .is_some_and(|i| i.percent_indexed < 1.0)
    }

    /// The overall status: the health checker's (healthy when it is off), unhealthy when the
    /// backend cannot be described, and degraded rather than healthy while the index is still
    /// [indexing](Self::indexing).
    pub fn status(&self) -> HealthStatus {
        let checked = self.health.as_ref().map_or(HealthStatus::Healthy, |h| h.status);
        match checked {
            _ if self.backend.is_err() => HealthStatus::Unhealthy,
            HealthStatus::Healthy if self.indexing() => HealthStatus::Degraded,
            other => other,
        }
    }
}

/// Options beyond the configuration, mostly for tests.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Wall clock for timestamps and expiry. Default: the system clock.
    pub clock: Arc<dyn WallClock>,
    /// Seed of the TTL jitter. Default: process entropy.
    pub seed: Option<u64>,
    /// Name of the circuit breaker (the `breaker` metric label). Default: `storage`.
    pub breaker_name: &'static str,
    /// The backend's name in traces (`db.system.name`). Default: `redis`.
    pub db_system: &'static str,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            seed: None,
            breaker_name: "storage",
            db_system: "redis",
        }
    }
}

/// The layer stack a [`MemoryStore`] calls its backend through, as the store builds it:
/// metrics (with the store's in-process statistics), retry with its budget, circuit breaker
/// and timeout, from the configuration. For callers that measure or use the stack itself
/// (`engram bench` compares it with the bare backend).
#[derive(Debug)]
pub struct StoreLayers {
    /// The backend behind every layer.
    pub backend: Arc<dyn StorageBackend>,
    /// The circuit breaker, when enabled.
    pub breaker: Option<Arc<CircuitBreaker>>,
    /// The statistics the metrics layer and the retrier feed.
    pub stats: Arc<OperationStats>,
    /// The observer of the retrier, the breaker and the health checker: metrics and `stats`.
    pub observer: Arc<dyn Observer>,
}

impl StoreLayers {
    /// The layers around `backend` as configured, named per `options` (breaker name, the
    /// backend's name in traces).
    ///
    /// # Errors
    /// A setting of the retrier, its budget or the breaker out of range.
    pub fn build<B: UnboxedBackend + ?Sized + 'static>(
        backend: Arc<B>,
        config: &Config,
        options: &StoreOptions,
    ) -> Result<Self, MemoryError> {
        let stats = Arc::new(OperationStats::new());
        let observer: Arc<dyn Observer> =
            Arc::new(Observers(vec![Arc::new(MetricsObserver), stats.clone()]));
        let builder = StackBuilder::from_config(
            backend,
            config,
            options.breaker_name,
            Arc::new(TokioClock),
            observer.clone(),
        )?
        .metrics(
            MetricsPolicy::new(config.observability.slow_operation_threshold)
                .with_stats(stats.clone())
                .with_db_system(options.db_system),
        );
        let breaker = builder.breaker().cloned();
        Ok(Self { backend: builder.build(), breaker, stats, observer })
    }
}

#[derive(Debug)]
struct Inner {
    backend: Arc<dyn StorageBackend>,
    schema: IndexSchema,
    full_text: bool,
    model: Option<String>,
    policies: Policies,
    dedup: DedupConfig,
    ranking: RankingConfig,
    breaker: Option<Arc<CircuitBreaker>>,
    stats: Arc<OperationStats>,
    health: Option<HealthChecker>,
    clock: Arc<dyn WallClock>,
}

/// A store of memories over a storage backend, with retries, a circuit breaker, metrics and a
/// health checker. Cheap to clone: clones share everything.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl MemoryStore {
    /// Connects to Redis Stack as configured, creates or checks the index, and starts the
    /// health checker.
    ///
    /// # Errors
    /// An invalid configuration, an unreachable server, a server without RediSearch 2.10, an
    /// existing index with another schema, or another embedding model.
    #[cfg(feature = "redis")]
    pub async fn connect(config: Config) -> Result<Self, MemoryError> {
        config.validate().map_err(|p| MemoryError::Config(ConfigError::Invalid(p)))?;
        let backend = engram_storage::redis::RedisBackend::connect(
            &config.redis,
            engram_storage::redis::RedisBackendOptions::default(),
        )
        .await?;
        Self::with_backend(config, Arc::new(backend), StoreOptions::default()).await
    }

    /// A store over the in-process backend (nothing leaves the process), with the index
    /// settings of `schema` and defaults for everything else.
    ///
    /// # Errors
    /// An invalid index configuration.
    pub async fn in_memory(schema: IndexConfig) -> Result<Self, MemoryError> {
        let config = Config { index: schema, ..Config::default() };
        let options = StoreOptions { db_system: "in-process", ..StoreOptions::default() };
        Self::with_backend(config, Arc::new(InProcessBackend::new()), options).await
    }

    /// A store over any backend: builds the layered stack (metrics, retry with budget,
    /// breaker, timeout) from `config`, ensures the index, checks the embedding model recorded
    /// with it, and starts the health checker when enabled.
    ///
    /// `backend` is a backend of known type (`Arc<RedisBackend>`), whose reads the stack then
    /// holds without a box of their own ([`UnboxedBackend`]), or any `Arc<dyn StorageBackend>`.
    ///
    /// # Errors
    /// As [`MemoryStore::connect`].
    pub async fn with_backend<B: UnboxedBackend + ?Sized + 'static>(
        config: Config,
        backend: Arc<B>,
        options: StoreOptions,
    ) -> Result<Self, MemoryError> {
        config.validate().map_err(|p| MemoryError::Config(ConfigError::Invalid(p)))?;
        let StoreLayers { backend: layered, breaker, stats, observer } =
            StoreLayers::build(backend.clone(), &config, &options)?;

        let schema = IndexSchema::from_config(&config.index, codec::fields(config.index.full_text));
        layered.ensure_index(&schema).await.map_err(with_full_text_hint)?;
        let model =
            check_index_meta(layered.as_ref(), &schema, config.index.embedding_model.clone())
                .await?;

        let health = if config.health.enabled {
            let probe_backend = backend.clone();
            Some(HealthChecker::builder(&config.health)?.observer(observer).spawn(move || {
                let b = probe_backend.clone();
                async move { b.ping().await.map(|_| ()) }
            })?)
        } else {
            None
        };
        let policies = match options.seed {
            Some(seed) => Policies::seeded(config.memory.clone(), seed),
            None => Policies::new(config.memory.clone()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend: layered,
                schema,
                full_text: config.index.full_text,
                model,
                policies,
                dedup: config.memory.dedup.clone(),
                ranking: config.memory.ranking.clone(),
                breaker,
                stats,
                health,
                clock: options.clock,
            }),
        })
    }

    /// The index schema the store uses.
    pub fn schema(&self) -> &IndexSchema {
        &self.inner.schema
    }

    /// The embedding model recorded with the index, if any.
    pub fn embedding_model(&self) -> Option<&str> {
        self.inner.model.as_deref()
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Checks an embedding against the index: dimension, finite, not all zero under COSINE.
    fn check_embedding(&self, embedding: &[f32]) -> Result<(), MemoryError> {
        let expected = self.inner.schema.vector.dimension;
        if embedding.len() != expected as usize {
            return Err(MemoryError::DimensionMismatch { expected, found: embedding.len() });
        }
        engram_storage::vector::validate(embedding, &self.inner.schema.vector)
            .map_err(|e| from_storage_input("embedding", e))
    }

    /// Validates a new entry and sets its timestamps, expiry and version.
    fn prepare(&self, mut entry: MemoryEntry, now: Timestamp) -> Result<MemoryEntry, MemoryError> {
        entry.validate()?;
        if entry.namespace.as_str().starts_with("__") {
            return Err(MemoryError::invalid(
                "namespace",
                "names starting with `__` are reserved for engram",
            ));
        }
        if let Some(e) = &entry.embedding {
            self.check_embedding(e)?;
        }
        // A zero or negative time to live: the entry would be gone before it is read.
        if let Some(at) = entry.expires_at.filter(|at| *at <= now) {
            return Err(MemoryError::invalid(
                "expires_at",
                format!(
                    "is {} ms since the epoch, expected a time after now ({} ms)",
                    at.as_millis(),
                    now.as_millis()
                ),
            ));
        }
        entry.created_at = now;
        entry.updated_at = now;
        entry.last_accessed = None;
        entry.access_count = 0;
        entry.version = 1;
        if entry.expires_at.is_none() {
            entry.expires_at = self.inner.policies.expiry(entry.memory_type, now);
        }
        Ok(entry)
    }

    /// For each entry of `entries` (all of namespace `ns`), the id of a stored entry of `ns`
    /// with identical content, when exact deduplication is on. The lookup is by content hash:
    /// one `find` per [`DEDUP_HASHES_PER_FIND`] distinct hashes, so a batch costs one or a few
    /// round trips, not one per entry. An entry never duplicates itself (a stored record with
    /// its id is skipped: the add replaces it); of several candidates the smallest id wins.
    async fn exact_duplicates(
        &self,
        ns: &Namespace,
        entries: &[&MemoryEntry],
    ) -> Result<Vec<Option<MemoryId>>, MemoryError> {
        let mut found: Vec<Option<MemoryId>> = vec![None; entries.len()];
        if !self.inner.dedup.exact || entries.is_empty() {
            return Ok(found);
        }
        let hashes: Vec<String> = entries.iter().map(|e| codec::content_hash(&e.content)).collect();
        let mut distinct: Vec<&str> = hashes.iter().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        for chunk in distinct.chunks(DEDUP_HASHES_PER_FIND) {
            let limit = chunk.len() * DEDUP_CANDIDATES_PER_HASH;
            let filter = Filter::tag_in(F_HASH, chunk.iter().copied());
            let records = match self.inner.backend.find(ns, &filter, limit).await {
                Ok(records) => records,
                // A backend that cannot search by filter alone cannot deduplicate exactly.
                Err(e) if e.kind() == ErrorKind::Unsupported => return Ok(found),
                Err(e) => return Err(e.into()),
            };
            // Records come sorted by id, so a list cut at the limit still holds the smallest
            // ids; only the hashes without a match may have lost theirs to the cut.
            let complete = records.len() < limit;
            let mut stored: HashMap<String, Vec<MemoryId>> = HashMap::new();
            for r in records {
                let id = r.id.clone();
                // A candidate that cannot be decoded is not a duplicate of anything.
                if let Ok(e) = codec::from_record(r) {
                    stored.entry(e.content).or_default().push(id);
                }
            }
            let in_chunk: HashSet<&str> = chunk.iter().copied().collect();
            for (i, entry) in entries.iter().enumerate() {
                if !in_chunk.contains(hashes[i].as_str()) {
                    continue;
                }
                found[i] = stored
                    .get(&entry.content)
                    .and_then(|ids| ids.iter().find(|id| **id != entry.id))
                    .cloned();
                if found[i].is_none() && !complete {
                    found[i] = self.exact_duplicate_alone(ns, entry, &hashes[i]).await?;
                }
            }
        }
        Ok(found)
    }

    /// The exact-dedup lookup of one entry by its content hash `hash`, for when a batched
    /// lookup was cut at its limit.
    async fn exact_duplicate_alone(
        &self,
        ns: &Namespace,
        entry: &MemoryEntry,
        hash: &str,
    ) -> Result<Option<MemoryId>, MemoryError> {
        let filter = Filter::tag_eq(F_HASH, hash);
        let records = self.inner.backend.find(ns, &filter, DEDUP_CANDIDATES_PER_HASH).await?;
        Ok(records.into_iter().find_map(|r| {
            let id = r.id.clone();
            (id != entry.id && codec::from_record(r).is_ok_and(|e| e.content == entry.content))
                .then_some(id)
        }))
    }

    /// The id of a stored entry whose embedding lies within `near_distance` of `entry`'s, in
    /// the same namespace and type, when near deduplication is on and the entry has one.
    async fn near_duplicate(&self, entry: &MemoryEntry) -> Result<Option<MemoryId>, MemoryError> {
        let (Some(max), Some(embedding)) = (self.inner.dedup.near_distance, &entry.embedding)
        else {
            return Ok(None);
        };
        let q = VectorQuery::new(entry.namespace.clone(), embedding.clone(), 2)
            .with_filter(Filter::tag_eq(F_TYPE, entry.memory_type.as_str()))
            .with_max_distance(max);
        let hits = self.inner.backend.search(&q).await?;
        Ok(hits.into_iter().find(|h| h.record.id != entry.id).map(|h| h.record.id))
    }

    /// The id of a stored entry that duplicates `entry`, per the dedup settings.
    async fn find_duplicate(&self, entry: &MemoryEntry) -> Result<Option<MemoryId>, MemoryError> {
        let exact = self.exact_duplicates(&entry.namespace, &[entry]).await?;
        if let Some(Some(id)) = exact.into_iter().next() {
            return Ok(Some(id));
        }
        self.near_duplicate(entry).await
    }

    /// Stores an entry and returns its id. An entry with the id of an existing one replaces
    /// it (a retried add is harmless). With deduplication on, content identical to an entry
    /// of the same namespace (or, with `near_distance`, an embedding that close within the same
    /// type) returns that entry's id and stores nothing. The expiry is the type's TTL with
    /// jitter unless the entry sets one; an explicit `expires_at` must lie in the future.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] or [`MemoryError::DimensionMismatch`] before any I/O, or a
    /// storage error.
    pub async fn add(&self, entry: MemoryEntry) -> Result<MemoryId, MemoryError> {
        let entry = self.prepare(entry, self.now())?;
        if let Some(existing) = self.find_duplicate(&entry).await? {
            return Ok(existing);
        }
        self.inner.backend.put(codec::to_record(&entry, self.inner.full_text)?).await?;
        Ok(entry.id)
    }

    /// Stores entries in one pipelined batch; one result per entry, in order. Invalid entries
    /// fail alone. Duplicates (as in [`MemoryStore::add`]) return the existing id; with exact
    /// deduplication on, an entry whose content equals that of an earlier entry of the batch in
    /// the same namespace stores nothing and gets the earlier entry's result (its id, or its
    /// error when that one failed).
    ///
    /// Exact duplicates are looked up for the whole batch at once: one `find` per namespace
    /// and per 256 distinct contents, not one per entry. Near duplicates (`near_distance`)
    /// still cost one vector search per entry with an embedding.
    pub async fn add_batch(&self, entries: Vec<MemoryEntry>) -> Vec<Result<MemoryId, MemoryError>> {
        let now = self.now();
        let mut results: Vec<Option<Result<MemoryId, MemoryError>>> =
            std::iter::repeat_with(|| None).take(entries.len()).collect();
        // Entries that passed validation and encoding, with their position and record.
        let mut valid: Vec<(usize, MemoryEntry, Record)> = Vec::new();
        // Entries with the content of an earlier valid entry: (position, the earlier position).
        let mut followers: Vec<(usize, usize)> = Vec::new();
        let mut first_of: HashMap<(Namespace, String), usize> = HashMap::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let prepared = match self.prepare(entry, now) {
                Ok(e) => e,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            let record = match codec::to_record(&prepared, self.inner.full_text) {
                Ok(r) => r,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            if self.inner.dedup.exact {
                let key = (prepared.namespace.clone(), prepared.content.clone());
                if let Some(&leader) = first_of.get(&key) {
                    followers.push((i, leader));
                    continue;
                }
                first_of.insert(key, i);
            }
            valid.push((i, prepared, record));
        }

        // Exact duplicates of stored entries, one lookup per namespace (in namespace order).
        let mut duplicate_of: Vec<Option<Result<MemoryId, MemoryError>>> =
            std::iter::repeat_with(|| None).take(valid.len()).collect();
        let mut by_namespace: BTreeMap<&Namespace, Vec<usize>> = BTreeMap::new();
        for (k, (_, entry, _)) in valid.iter().enumerate() {
            by_namespace.entry(&entry.namespace).or_default().push(k);
        }
        for (ns, members) in by_namespace {
            let group: Vec<&MemoryEntry> = members.iter().map(|&k| &valid[k].1).collect();
            match self.exact_duplicates(ns, &group).await {
                Ok(found) => {
                    for (&k, id) in members.iter().zip(found) {
                        duplicate_of[k] = id.map(Ok);
                    }
                }
                Err(e) => {
                    for &k in &members {
                        duplicate_of[k] = Some(Err(same_failure(&e)));
                    }
                }
            }
        }

        let mut positions = Vec::new();
        let mut records = Vec::new();
        for ((i, entry, record), duplicate) in valid.into_iter().zip(duplicate_of) {
            let outcome = match duplicate {
                Some(outcome) => Some(outcome),
                None => self.near_duplicate(&entry).await.transpose(),
            };
            match outcome {
                Some(outcome) => results[i] = Some(outcome),
                None => {
                    positions.push(i);
                    records.push(record);
                }
            }
        }
        if !records.is_empty() {
            let ids: Vec<RecordId> = records.iter().map(|r| r.id.clone()).collect();
            let report = self.inner.backend.put_batch(records).await;
            for ((i, id), outcome) in positions.into_iter().zip(ids).zip(report.items) {
                results[i] = Some(
                    outcome
                        .into_result(engram_storage::Operation::Put)
                        .map(|()| id)
                        .map_err(MemoryError::from),
                );
            }
        }
        // Followers come after their leader, whose result is final by now.
        for (i, leader) in followers {
            results[i] = Some(match &results[leader] {
                Some(Ok(id)) => Ok(id.clone()),
                Some(Err(e)) => Err(same_failure(e)),
                None => Err(MemoryError::invalid("batch", "no outcome")),
            });
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(MemoryError::invalid("batch", "no outcome"))))
            .collect()
    }

    async fn read(
        &self,
        ns: &Namespace,
        id: &MemoryId,
    ) -> Result<Option<MemoryEntry>, MemoryError> {
        match self.inner.backend.get(ns, id).await? {
            Some(r) => Ok(Some(codec::from_record(r)?)),
            None => Ok(None),
        }
    }

    /// Reads an entry and records the access: the access count and last-access time move
    /// atomically, and the TTL restarts when the type's policy refreshes on read.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] for a bad namespace or id, or a storage error.
    pub async fn get(
        &self,
        namespace_name: &str,
        id: &str,
    ) -> Result<Option<MemoryEntry>, MemoryError> {
        let (ns, id) = (namespace(namespace_name)?, memory_id(id)?);
        let Some(mut entry) = self.read(&ns, &id).await? else { return Ok(None) };
        let ttl = self.inner.policies.refresh_ttl(entry.memory_type);
        match self.inner.backend.touch(&ns, &id, self.now(), ttl).await? {
            None => Ok(None),
            Some(t) => {
                entry.access_count = t.access.count;
                entry.last_accessed = t.access.last_access;
                entry.expires_at = t.expires_at;
                Ok(Some(entry))
            }
        }
    }

    /// Reads entries without recording an access; one result per id.
    pub async fn get_batch(
        &self,
        namespace_name: &str,
        ids: &[&str],
    ) -> Vec<Result<Option<MemoryEntry>, MemoryError>> {
        self.by_ids(
            namespace_name,
            ids,
            |ns, ids| async move { self.inner.backend.get_batch(&ns, &ids).await },
            |found| found.map(codec::from_record).transpose(),
        )
        .await
    }

    /// Whether an entry exists (without recording an access).
    ///
    /// # Errors
    /// As [`MemoryStore::get`].
    pub async fn exists(&self, namespace_name: &str, id: &str) -> Result<bool, MemoryError> {
        let (ns, id) = (namespace(namespace_name)?, memory_id(id)?);
        Ok(self.inner.backend.get(&ns, &id).await?.is_some())
    }

    /// Writes a changed entry if nobody changed it since it was read (its `version` is the one
    /// read). Returns the stored entry with its new version and `updated_at`. A type with a
    /// TTL starts it again.
    ///
    /// # Errors
    /// [`MemoryError::Conflict`] when the stored version differs (or the entry is gone),
    /// validation errors, or a storage error.
    pub async fn update(&self, entry: MemoryEntry) -> Result<MemoryEntry, MemoryError> {
        entry.validate()?;
        if let Some(e) = &entry.embedding {
            self.check_embedding(e)?;
        }
        let now = self.now();
        let mut next = entry.clone();
        next.version = entry.version + 1;
        next.updated_at = now;
        if let Some(at) = self.inner.policies.expiry(entry.memory_type, now) {
            next.expires_at = Some(at);
        }
        match self
            .inner
            .backend
            .compare_and_set(codec::to_record(&next, self.inner.full_text)?, Some(entry.version))
            .await
        {
            Ok(()) => Ok(next),
            Err(e) if e.kind() == ErrorKind::Conflict => Err(MemoryError::Conflict {
                id: entry.id.to_string(),
                message: e.message().to_owned(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the entry, applies `change`, and writes it with [`MemoryStore::update`]; on a
    /// conflict it reads again and re-applies, up to [`MAX_UPDATE_ATTEMPTS`] times. Changes to
    /// the id, namespace or version made by `change` are ignored.
    ///
    /// # Errors
    /// [`MemoryError::NotFound`], [`MemoryError::Conflict`] after the last attempt, or as
    /// [`MemoryStore::update`].
    pub async fn update_with<F>(
        &self,
        namespace_name: &str,
        id: &str,
        mut change: F,
    ) -> Result<MemoryEntry, MemoryError>
    where
        F: FnMut(&mut MemoryEntry) + Send,
    {
        let (ns, rid) = (namespace(namespace_name)?, memory_id(id)?);
        let mut last = None;
        // Exponential pauses with equal jitter (half fixed, half random): a writer that keeps
        // winning cannot starve this one for long, and two losers do not retry in step.
        let mut pauses =
            Backoff::exponential(Duration::from_millis(1), Duration::from_millis(64), 2.0)
                .map_err(|e| MemoryError::Conflict { id: id.to_owned(), message: e.to_string() })?
                .with_jitter(Jitter::Equal)
                .delays();
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let Some(current) = self.read(&ns, &rid).await? else {
                return Err(MemoryError::NotFound {
                    namespace: ns.to_string(),
                    id: rid.to_string(),
                });
            };
            let mut changed = current.clone();
            change(&mut changed);
            changed.id = current.id;
            changed.namespace = current.namespace;
            changed.version = current.version;
            match self.update(changed).await {
                Err(e @ MemoryError::Conflict { .. }) => {
                    last = Some(e);
                    if let Some(pause) = pauses.next() {
                        tokio::time::sleep(pause).await;
                    }
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| MemoryError::Conflict {
            id: id.to_owned(),
            message: "no attempt made".into(),
        }))
    }

    /// Deletes an entry; `true` when it existed.
    ///
    /// # Errors
    /// As [`MemoryStore::get`].
    pub async fn delete(&self, namespace_name: &str, id: &str) -> Result<bool, MemoryError> {
        let (ns, id) = (namespace(namespace_name)?, memory_id(id)?);
        Ok(self.inner.backend.delete(&ns, &id).await?)
    }

    /// Deletes entries; one result per id (`true` when it existed).
    pub async fn delete_batch(
        &self,
        namespace_name: &str,
        ids: &[&str],
    ) -> Vec<Result<bool, MemoryError>> {
        self.by_ids(
            namespace_name,
            ids,
            |ns, ids| async move { self.inner.backend.delete_batch(&ns, &ids).await },
            Ok,
        )
        .await
    }

    /// Runs a batch call over the valid ids and answers one result per id, in order: the id's
    /// own validation error, or the backend's outcome mapped by `map`.
    async fn by_ids<T, U, F, Fut>(
        &self,
        namespace_name: &str,
        ids: &[&str],
        call: F,
        map: impl Fn(T) -> Result<U, MemoryError>,
    ) -> Vec<Result<U, MemoryError>>
    where
        F: FnOnce(Namespace, Vec<MemoryId>) -> Fut,
        Fut: std::future::Future<Output = engram_storage::BatchReport<T>>,
    {
        let ns = match namespace(namespace_name) {
            Ok(ns) => ns,
            Err(e) => {
                let message = match e {
                    MemoryError::Invalid { message, .. } => message,
                    other => other.to_string(),
                };
                return ids
                    .iter()
                    .map(|_| Err(MemoryError::invalid("namespace", message.clone())))
                    .collect();
            }
        };
        let parsed: Vec<Result<MemoryId, MemoryError>> =
            ids.iter().map(|id| memory_id(id)).collect();
        let valid: Vec<MemoryId> = parsed.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        let mut outcomes = call(ns, valid).await.items.into_iter();
        parsed
            .into_iter()
            .map(|p| {
                p.and_then(|_| match outcomes.next() {
                    Some(ItemOutcome::Succeeded(v)) => map(v),
                    Some(ItemOutcome::Failed(e)) => Err(e.into()),
                    _ => Err(MemoryError::invalid("batch", "item not attempted")),
                })
            })
            .collect()
    }

    /// Number of entries in a namespace.
    ///
    /// # Errors
    /// As [`MemoryStore::get`].
    pub async fn count(&self, namespace_name: &str) -> Result<u64, MemoryError> {
        Ok(self.inner.backend.count(&namespace(namespace_name)?).await?)
    }

    /// One page of at most `limit` entries of a namespace (without recording accesses);
    /// start with `cursor = None` and pass each page's `next` until it is `None`.
    ///
    /// # Errors
    /// As [`MemoryStore::get`].
    pub async fn list(
        &self,
        namespace_name: &str,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<ListPage, MemoryError> {
        let ns = namespace(namespace_name)?;
        let page = self
            .inner
            .backend
            .scan(&ns, cursor.map(ScanCursor), limit)
            .await
            .map_err(|e| from_storage_input("limit", e))?;
        let report = self.inner.backend.get_batch(&ns, &page.ids).await;
        let mut entries = Vec::with_capacity(page.ids.len());
        for outcome in report.items {
            // None: deleted or expired between the scan and the read.
            if let Some(r) = outcome.into_result(engram_storage::Operation::Get)? {
                entries.push(codec::from_record(r)?);
            }
        }
        Ok(ListPage { entries, next: page.next.map(|c| c.0) })
    }

    /// The nearest memories to the query embedding, filtered and ranked (see
    /// [`crate::ranking`]); deterministic for equal inputs.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`], [`MemoryError::DimensionMismatch`],
    /// [`MemoryError::ModelMismatch`], or [`MemoryError::FullTextDisabled`] for a text filter
    /// without `index.full_text`, all before any I/O; or a storage error.
    pub async fn query(&self, query: MemoryQuery) -> Result<Vec<ScoredMemory>, MemoryError> {
        query.validate()?;
        if query.text.is_some() && !self.inner.full_text {
            return Err(MemoryError::FullTextDisabled { index: self.inner.schema.name.clone() });
        }
        if let Some(model) = &query.model
            && self.inner.model.as_deref() != Some(model.as_str())
        {
            return Err(MemoryError::ModelMismatch {
                expected: self.inner.model.clone().unwrap_or_default(),
                found: model.clone(),
            });
        }
        self.check_embedding(&query.embedding)?;
        let w = &self.inner.ranking;
        let candidates = if ranking::is_pure_similarity(w) {
            query.k
        } else {
            (query.k * w.candidate_factor as usize).min(engram_storage::MAX_K)
        };
        let mut vq = VectorQuery::new(query.namespace.clone(), query.embedding.clone(), candidates);
        vq.filter = query.filter();
        vq.ef_runtime = query.ef_runtime;
        vq.max_distance = query.max_distance;
        let hits =
            self.inner.backend.search(&vq).await.map_err(|e| from_storage_input("query", e))?;
        let now = self.now();
        let metric = self.inner.schema.vector.metric;
        let mut scored = Vec::with_capacity(hits.len());
        for hit in hits {
            let entry = codec::from_record(hit.record)?;
            let similarity = ranking::similarity(metric, hit.distance);
            let half_life =
                self.inner.policies.get(entry.memory_type).decay_half_life.as_millis() as f64;
            let recency = ranking::recency(&entry, now, half_life);
            let score = ranking::score(w, similarity, entry.importance, recency);
            scored.push(ScoredMemory { entry, distance: hit.distance, similarity, score });
        }
        scored.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.distance.total_cmp(&b.distance))
                .then_with(|| a.entry.id.cmp(&b.entry.id))
        });
        scored.truncate(query.k);
        Ok(scored)
    }

    /// Totals, success rate, mean and p99 latency and retries per operation, and the breaker,
    /// from the same measurements the Prometheus metrics are made of.
    pub fn get_metrics(&self) -> StoreMetrics {
        let operations = self.inner.stats.snapshot();
        StoreMetrics {
            retries: operations.iter().map(|o| o.retries).sum(),
            budget_refusals: self.inner.stats.budget_refusals(),
            breaker: self.inner.breaker.as_ref().map(|b| b.snapshot()),
            operations,
        }
    }

    /// The health checker's report, the breaker, and the backend's description.
    pub async fn get_health_status(&self) -> HealthStatusReport {
        HealthStatusReport {
            health: self.inner.health.as_ref().map(HealthChecker::report),
            breaker: self.inner.breaker.as_ref().map(|b| b.snapshot()),
            backend: self.inner.backend.describe().await.map_err(|e| e.to_string()),
        }
    }

    /// A watch on the health checker's reports, when health checks are enabled.
    pub fn subscribe_health(&self) -> Option<tokio::sync::watch::Receiver<HealthReport>> {
        self.inner.health.as_ref().map(HealthChecker::subscribe)
    }
}

/// A schema mismatch with a hint at the setting behind the `content` field, which users
/// change by configuration rather than by schema; other errors unchanged.
fn with_full_text_hint(e: StorageError) -> StorageError {
    if e.kind() != ErrorKind::SchemaMismatch {
        return e;
    }
    StorageError::new(
        e.kind(),
        e.operation(),
        format!(
            "{}; note: field {:?} exists only with index.full_text = true",
            e.message(),
            codec::F_CONTENT
        ),
    )
    .with_status(e.status())
}

/// The error of an item that shares another item's failure (an identical entry of the batch,
/// or one lookup for many entries): storage errors keep their kind and retry status.
fn same_failure(e: &MemoryError) -> MemoryError {
    match e {
        MemoryError::Storage(s) => MemoryError::Storage(s.duplicate()),
        other => MemoryError::invalid("batch", format!("an identical entry failed: {other}")),
    }
}

/// Reads (or first writes) the embedding facts recorded with the index and checks them.
async fn check_index_meta(
    backend: &dyn StorageBackend,
    schema: &IndexSchema,
    model: Option<String>,
) -> Result<Option<String>, MemoryError> {
    let ns = Namespace::new(META_NAMESPACE)?;
    let id = RecordId::new(META_ID)?;
    for _ in 0..3 {
        match backend.get(&ns, &id).await? {
            None => {
                let meta = IndexMeta { dimension: schema.vector.dimension, model: model.clone() };
                let payload = rmp_serde::to_vec_named(&meta).map_err(|e| {
                    MemoryError::invalid("index", format!("cannot encode the index facts: {e}"))
                })?;
                match backend
                    .compare_and_set(Record::new(ns.clone(), id.clone(), payload), None)
                    .await
                {
                    Ok(()) => return Ok(model),
                    // Another process recorded them first: read theirs.
                    Err(e) if e.kind() == ErrorKind::Conflict => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(record) => {
                let meta: IndexMeta = rmp_serde::from_slice(&record.payload).map_err(|e| {
                    MemoryError::Corrupt { id: META_ID.into(), message: e.to_string() }
                })?;
                if meta.dimension != schema.vector.dimension {
                    return Err(MemoryError::DimensionMismatch {
                        expected: meta.dimension,
                        found: schema.vector.dimension as usize,
                    });
                }
                match (meta.model, model.clone()) {
                    (Some(recorded), Some(wanted)) if recorded != wanted => {
                        return Err(MemoryError::ModelMismatch {
                            expected: recorded,
                            found: wanted,
                        });
                    }
                    (Some(recorded), _) => return Ok(Some(recorded)),
                    (None, None) => return Ok(None),
                    (None, Some(wanted)) => {
                        // The index has vectors of no named model yet: record this one, so
                        // that a later store with another model is refused.
                        let meta =
                            IndexMeta { dimension: meta.dimension, model: Some(wanted.clone()) };
                        let payload = rmp_serde::to_vec_named(&meta).map_err(|e| {
                            MemoryError::invalid(
                                "index",
                                format!("cannot encode the index facts: {e}"),
                            )
                        })?;
                        let next = Record::new(ns.clone(), id.clone(), payload)
                            .with_version(record.version + 1);
                        match backend.compare_and_set(next, Some(record.version)).await {
                            Ok(()) => return Ok(Some(wanted)),
                            Err(e) if e.kind() == ErrorKind::Conflict => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
        }
    }
    Err(MemoryError::Conflict {
        id: META_ID.into(),
        message: "the index facts kept changing".into(),
    })
}
