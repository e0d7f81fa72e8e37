//! The in-process backend: a real backend that keeps records in memory.
//!
//! It serves tests and library users who run without a server. KNN is exact (brute force)
//! with RediSearch's distance definitions; filters are evaluated from the AST; expired
//! records are invisible at once and purged on the next write; every operation is scoped to
//! one namespace. It passes the same conformance suite as the Redis backend.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backend::{
    BackendInfo, BatchReport, Capabilities, IndexStats, IndexStatus, ItemOutcome, ScanCursor,
    ScanPage, SearchHit, StorageBackend, Touched, UnboxedBackend, VectorQuery, check_batch_len,
    check_find_limit, check_scan_limit,
};
use crate::clock::{SystemClock, WallClock};
use crate::error::{ErrorKind, Operation, StorageError};
use crate::filter::Filter;
use crate::ids::{Namespace, RecordId};
use crate::record::{Record, Timestamp};
use crate::schema::IndexSchema;
use crate::vector;

#[derive(Debug, Default)]
struct State {
    schema: Option<Arc<IndexSchema>>,
    namespaces: HashMap<Namespace, BTreeMap<RecordId, Record>>,
    /// Expiry times, for purging.
    expiries: BTreeSet<(Timestamp, Namespace, RecordId)>,
}

impl State {
    fn live<'a>(&'a self, ns: &Namespace, now: Timestamp) -> impl Iterator<Item = &'a Record> + 'a {
        self.namespaces
            .get(ns)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(move |r| !r.is_expired(now))
    }

    fn get_live(&self, ns: &Namespace, id: &RecordId, now: Timestamp) -> Option<&Record> {
        self.namespaces.get(ns)?.get(id).filter(|r| !r.is_expired(now))
    }

    fn insert(&mut self, record: Record) {
        self.remove(&record.namespace.clone(), &record.id.clone());
        if let Some(at) = record.expires_at {
            self.expiries.insert((at, record.namespace.clone(), record.id.clone()));
        }
        self.namespaces
            .entry(record.namespace.clone())
            .or_default()
            .insert(record.id.clone(), record);
    }

    fn remove(&mut self, ns: &Namespace, id: &RecordId) -> Option<Record> {
        let old = self.namespaces.get_mut(ns)?.remove(id)?;
        if let Some(at) = old.expires_at {
            self.expiries.remove(&(at, ns.clone(), id.clone()));
        }
        Some(old)
    }

    fn purge(&mut self, now: Timestamp) {
        while let Some((at, ns, id)) = self.expiries.first().cloned() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(m) = self.namespaces.get_mut(&ns) {
                m.remove(&id);
                if m.is_empty() {
                    self.namespaces.remove(&ns);
                }
            }
        }
    }

    fn schema(&self, op: Operation) -> Result<Arc<IndexSchema>, StorageError> {
        self.schema.clone().ok_or_else(|| {
            StorageError::new(ErrorKind::IndexMissing, op, "no index yet: call ensure_index first")
        })
    }
}

/// Records in memory, shared by clones of the `Arc` that holds it.
#[derive(Debug)]
pub struct InProcessBackend {
    state: RwLock<State>,
    clock: Arc<dyn WallClock>,
}

impl Default for InProcessBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBackend {
    /// An empty backend on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty backend on the given clock.
    pub fn with_clock(clock: Arc<dyn WallClock>) -> Self {
        Self { state: RwLock::new(State::default()), clock }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps (every mutation is a single
        // insert or remove), so a poisoned lock is still usable.
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        let mut guard = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.purge(self.clock.now());
        guard
    }
}

/// The reads, which the boxed calls of [`StorageBackend`] run too.
impl UnboxedBackend for InProcessBackend {
    async fn get_batch_unboxed(
        &self,
        namespace: &Namespace,
        ids: &[RecordId],
    ) -> BatchReport<Option<Record>> {
        if let Err(e) = check_batch_len(ids.len()) {
            return BatchReport::all_failed(ids.len(), &e.for_operation(Operation::Get));
        }
        let now = self.clock.now();
        let state = self.read();
        if let Err(e) = state.schema(Operation::Get) {
            return BatchReport::all_failed(ids.len(), &e);
        }
        BatchReport::new(
            ids.iter()
                .map(|id| ItemOutcome::Succeeded(state.get_live(namespace, id, now).cloned()))
                .collect(),
        )
    }

    async fn search_unboxed(&self, query: &VectorQuery) -> Result<Vec<SearchHit>, StorageError> {
        let op = Operation::Search;
        let now = self.clock.now();
        let state = self.read();
        let schema = state.schema(op)?;
        query.validate(&schema).map_err(|e| e.for_operation(op))?;
        let metric = schema.vector.metric;
        let mut hits: Vec<(f32, &Record)> = state
            .live(&query.namespace, now)
            .filter(|r| query.filter.as_ref().is_none_or(|f| f.matches(r)))
            .filter_map(|r| {
                r.vector.as_ref().map(|v| (vector::distance(metric, &query.vector, v), r))
            })
            .filter(|(d, _)| query.max_distance.is_none_or(|max| *d <= max))
            .collect();
        hits.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        hits.truncate(query.k);
        Ok(hits
            .into_iter()
            .map(|(distance, r)| SearchHit { record: r.clone(), distance })
            .collect())
    }

    fn into_dyn(self: Arc<Self>) -> Arc<dyn StorageBackend> {
        self
    }
}

#[async_trait]
impl StorageBackend for InProcessBackend {
    async fn ensure_index(&self, schema: &IndexSchema) -> Result<IndexStatus, StorageError> {
        schema.validate()?;
        let mut state = self.write();
        match &state.schema {
            None => {
                state.schema = Some(Arc::new(schema.clone()));
                Ok(IndexStatus::Created)
            }
            Some(existing) => {
                let mut diff = schema.differences(existing);
                if existing.name != schema.name {
                    diff.insert(
                        0,
                        format!(
                            "index name: wanted {:?}, this in-process backend holds {:?}",
                            schema.name, existing.name
                        ),
                    );
                }
                if diff.is_empty() {
                    Ok(IndexStatus::Existing)
                } else {
                    Err(schema.mismatch_error(&diff))
                }
            }
        }
    }

    async fn put_batch(&self, records: Vec<Record>) -> BatchReport<()> {
        let op = Operation::Put;
        if let Err(e) = check_batch_len(records.len()) {
            return BatchReport::all_failed(records.len(), &e.for_operation(op));
        }
        let mut state = self.write();
        let schema = match state.schema(op) {
            Ok(s) => s,
            Err(e) => return BatchReport::all_failed(records.len(), &e),
        };
        let items = records
            .into_iter()
            .map(|r| match r.validate(&schema) {
                Ok(()) => {
                    state.insert(r);
                    ItemOutcome::Succeeded(())
                }
                Err(e) => ItemOutcome::Failed(e.for_operation(op)),
            })
            .collect();
        BatchReport::new(items)
    }

    async fn get_batch(
        &self,
        namespace: &Namespace,
        ids: &[RecordId],
    ) -> BatchReport<Option<Record>> {
        self.get_batch_unboxed(namespace, ids).await
    }

    async fn delete_batch(&self, namespace: &Namespace, ids: &[RecordId]) -> BatchReport<bool> {
        if let Err(e) = check_batch_len(ids.len()) {
            return BatchReport::all_failed(ids.len(), &e.for_operation(Operation::Delete));
        }
        let mut state = self.write();
        if let Err(e) = state.schema(Operation::Delete) {
            return BatchReport::all_failed(ids.len(), &e);
        }
        BatchReport::new(
            ids.iter()
                .map(|id| ItemOutcome::Succeeded(state.remove(namespace, id).is_some()))
                .collect(),
        )
    }

    async fn search(&self, query: &VectorQuery) -> Result<Vec<SearchHit>, StorageError> {
        self.search_unboxed(query).await
    }

    async fn find(
        &self,
        namespace: &Namespace,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        let op = Operation::Find;
        check_find_limit(limit).map_err(|e| e.for_operation(op))?;
        let now = self.clock.now();
        let state = self.read();
        let schema = state.schema(op)?;
        filter.validate(&schema).map_err(|e| e.for_operation(op))?;
        // `live` walks the namespace's BTreeMap, so the records come sorted by id.
        Ok(state.live(namespace, now).filter(|r| filter.matches(r)).take(limit).cloned().collect())
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64, StorageError> {
        let now = self.clock.now();
        let state = self.read();
        state.schema(Operation::Count)?;
        Ok(state.live(namespace, now).count() as u64)
    }

    async fn scan(
        &self,
        namespace: &Namespace,
        cursor: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StorageError> {
        let op = Operation::Scan;
        check_scan_limit(limit).map_err(|e| e.for_operation(op))?;
        let after = match cursor {
            None => None,
            Some(ScanCursor(c)) => Some(RecordId::new(c).map_err(|_| {
                StorageError::new(
                    ErrorKind::InvalidInput,
                    op,
                    "the scan cursor was not made by this backend",
                )
            })?),
        };
        let now = self.clock.now();
        let state = self.read();
        state.schema(op)?;
        let Some(map) = state.namespaces.get(namespace) else {
            return Ok(ScanPage { ids: vec![], next: None });
        };
        let range = match &after {
            None => map.range::<RecordId, _>(..),
            Some(a) => {
                map.range::<RecordId, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
            }
        };
        let mut ids: Vec<RecordId> = Vec::with_capacity(limit);
        let mut more = false;
        for (id, r) in range {
            if r.is_expired(now) {
                continue;
            }
            if ids.len() == limit {
                more = true;
                break;
            }
            ids.push(id.clone());
        }
        let next =
            if more { ids.last().map(|id| ScanCursor(id.as_str().to_owned())) } else { None };
        Ok(ScanPage { ids, next })
    }

    async fn touch(
        &self,
        namespace: &Namespace,
        id: &RecordId,
        now: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<Option<Touched>, StorageError> {
        let op = Operation::Touch;
        let mut state = self.write();
        state.schema(op)?;
        let Some(mut record) = state.get_live(namespace, id, self.clock.now()).cloned() else {
            return Ok(None);
        };
        record.access.count += 1;
        record.access.last_access = Some(now);
        if let Some(ttl) = ttl {
            record.expires_at = Some(now.plus(ttl));
        }
        let touched = Touched { access: record.access, expires_at: record.expires_at };
        state.insert(record);
        Ok(Some(touched))
    }

    async fn compare_and_set(
        &self,
        record: Record,
        expected: Option<u64>,
    ) -> Result<(), StorageError> {
        let op = Operation::CompareAndSet;
        let mut state = self.write();
        let schema = state.schema(op)?;
        record.validate(&schema).map_err(|e| e.for_operation(op))?;
        check_cas_version(&record, expected)?;
        let current =
            state.get_live(&record.namespace, &record.id, self.clock.now()).map(|r| r.version);
        if current != expected {
            return Err(cas_conflict(&record.id, current, expected));
        }
        state.insert(record);
        Ok(())
    }

    async fn ping(&self) -> Result<Duration, StorageError> {
        let start = Instant::now();
        drop(self.read());
        Ok(start.elapsed())
    }

    async fn describe(&self) -> Result<BackendInfo, StorageError> {
        let now = self.clock.now();
        let state = self.read();
        let index = state.schema.as_ref().map(|_| IndexStats {
            documents: state
                .namespaces
                .values()
                .flat_map(|m| m.values())
                .filter(|r| !r.is_expired(now))
                .count() as u64,
            indexing_failures: 0,
            percent_indexed: 1.0,
        });
        Ok(BackendInfo {
            backend: "in-process",
            capabilities: Capabilities { durable: false, shared: false, approximate_knn: false },
            server_version: None,
            index,
            details: vec![("namespaces".into(), state.namespaces.len().to_string())],
        })
    }
}

/// Checks that a compare-and-set moves the version forward.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] when `record.version` is not above `expected`.
pub fn check_cas_version(record: &Record, expected: Option<u64>) -> Result<(), StorageError> {
    if record.version <= expected.unwrap_or(0) {
        return Err(StorageError::new(
            ErrorKind::InvalidInput,
            Operation::CompareAndSet,
            format!(
                "record {} carries version {}, which must be above the expected version {}",
                record.id,
                record.version,
                expected.unwrap_or(0)
            ),
        ));
    }
    Ok(())
}

/// The conflict error of a compare-and-set.
pub fn cas_conflict(id: &RecordId, current: Option<u64>, expected: Option<u64>) -> StorageError {
    let show = |v: Option<u64>| v.map_or_else(|| "absent".to_owned(), |v| format!("version {v}"));
    StorageError::new(
        ErrorKind::Conflict,
        Operation::CompareAndSet,
        format!("record {id} is {}, expected {}", show(current), show(expected)),
    )
}
