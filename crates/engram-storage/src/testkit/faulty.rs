//! A backend that replays scripted faults in front of a real one, to test the layers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{
    BackendInfo, BatchReport, IndexStatus, ItemOutcome, ScanCursor, ScanPage, SearchHit,
    StorageBackend, Touched, UnboxedBackend, VectorQuery,
};
use crate::error::{ErrorKind, Operation, StorageError};
use crate::filter::Filter;
use crate::ids::{Namespace, RecordId};
use crate::record::{Record, Timestamp};
use crate::schema::IndexSchema;

/// What the next call meets.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Forwarded to the real backend.
    Pass,
    /// Fails with this kind (every item of a batch), without reaching the real backend.
    Fail(ErrorKind),
    /// Waits, then forwards.
    Delay(Duration),
    /// Never answers (a stopped server); only a timeout ends it.
    Hang,
    /// For a batch: the items with `Some(kind)` fail with it, the others are forwarded.
    FailItems(Vec<Option<ErrorKind>>),
}

/// Replays a script of [`Fault`]s, one per call in call order (then [`Fault::Pass`]), and
/// counts the calls and batch sizes that reach it.
///
/// With [`FaultyBackend::with_own_limit`] it also bounds every call itself, as a client with a
/// per-command timeout does, and says so through [`StorageBackend::call_limit`].
#[derive(Debug)]
pub struct FaultyBackend {
    inner: Arc<dyn StorageBackend>,
    script: Mutex<VecDeque<Fault>>,
    calls: Mutex<HashMap<Operation, Vec<usize>>>,
    own_limit: Option<Duration>,
    /// Reads asked for through [`UnboxedBackend`].
    unboxed: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FaultyBackend {
    /// In front of `inner`, with an empty script.
    pub fn new(inner: Arc<dyn StorageBackend>) -> Self {
        Self {
            inner,
            script: Mutex::new(VecDeque::new()),
            calls: Mutex::new(HashMap::new()),
            own_limit: None,
            unboxed: AtomicUsize::new(0),
        }
    }

    /// Ends every call that has not answered within `limit` with an [`ErrorKind::Timeout`]
    /// error whose message says it was this backend's own limit.
    pub fn with_own_limit(mut self, limit: Duration) -> Self {
        self.own_limit = Some(limit);
        self
    }

    /// The error of a call this backend ended at its own limit.
    fn own_timeout(op: Operation, limit: Duration) -> StorageError {
        StorageError::new(ErrorKind::Timeout, op, format!("the backend's own limit ({limit:?})"))
    }

    /// Appends faults to the script.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.script).extend(faults);
    }

    /// Calls of `op` that reached this backend.
    pub fn calls(&self, op: Operation) -> usize {
        lock(&self.calls).get(&op).map_or(0, Vec::len)
    }

    /// The number of items of each call of `op` (1 for calls that are not batches).
    pub fn batch_sizes(&self, op: Operation) -> Vec<usize> {
        lock(&self.calls).get(&op).cloned().unwrap_or_default()
    }

    /// How many reads (gets by id, searches) were asked for through [`UnboxedBackend`], as a
    /// stack around this backend's own type asks for them.
    pub fn unboxed_reads(&self) -> usize {
        self.unboxed.load(Ordering::Relaxed)
    }

    fn next(&self, op: Operation, items: usize) -> Fault {
        lock(&self.calls).entry(op).or_default().push(items);
        lock(&self.script).pop_front().unwrap_or(Fault::Pass)
    }

    fn scripted(op: Operation, kind: ErrorKind) -> StorageError {
        StorageError::new(kind, op, "scripted fault")
    }

    async fn call<T, F>(&self, op: Operation, f: F) -> Result<T, StorageError>
    where
        F: Future<Output = Result<T, StorageError>>,
    {
        let run = self.faulted_call(op, f);
        match self.own_limit {
            Some(limit) => tokio::time::timeout(limit, run)
                .await
                .unwrap_or_else(|_| Err(Self::own_timeout(op, limit))),
            None => run.await,
        }
    }

    async fn faulted_call<T, F>(&self, op: Operation, f: F) -> Result<T, StorageError>
    where
        F: Future<Output = Result<T, StorageError>>,
    {
        match self.next(op, 1) {
            Fault::Pass => f.await,
            Fault::Fail(kind) => Err(Self::scripted(op, kind)),
            Fault::FailItems(kinds) => match kinds.first() {
                Some(Some(kind)) => Err(Self::scripted(op, *kind)),
                _ => f.await,
            },
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                f.await
            }
            Fault::Hang => std::future::pending().await,
        }
    }

    async fn batch<I: Clone, T, F, Fut>(&self, op: Operation, items: &[I], f: F) -> BatchReport<T>
    where
        F: FnOnce(Vec<I>) -> Fut,
        Fut: Future<Output = BatchReport<T>>,
    {
        let run = self.faulted_batch(op, items, f);
        match self.own_limit {
            Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                BatchReport::all_failed(items.len(), &Self::own_timeout(op, limit))
            }),
            None => run.await,
        }
    }

    async fn faulted_batch<I: Clone, T, F, Fut>(
        &self,
        op: Operation,
        items: &[I],
        f: F,
    ) -> BatchReport<T>
    where
        F: FnOnce(Vec<I>) -> Fut,
        Fut: Future<Output = BatchReport<T>>,
    {
        match self.next(op, items.len()) {
            Fault::Pass => f(items.to_vec()).await,
            Fault::Fail(kind) => BatchReport::all_failed(items.len(), &Self::scripted(op, kind)),
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                f(items.to_vec()).await
            }
            Fault::Hang => std::future::pending().await,
            Fault::FailItems(kinds) => {
                let kind_of = |i: usize| kinds.get(i).copied().flatten();
                let forward: Vec<I> = items
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| kind_of(*i).is_none())
                    .map(|(_, x)| x.clone())
                    .collect();
                let mut forwarded = f(forward).await.items.into_iter();
                let items = (0..items.len())
                    .map(|i| match kind_of(i) {
                        Some(kind) => ItemOutcome::Failed(Self::scripted(op, kind)),
                        None => forwarded.next().unwrap_or(ItemOutcome::NotAttempted),
                    })
                    .collect();
                BatchReport::new(items)
            }
        }
    }
}

/// The reads count themselves ([`FaultyBackend::unboxed_reads`]) and run as the boxed calls,
/// faults included.
impl UnboxedBackend for FaultyBackend {
    fn get_batch_unboxed<'a>(
        &'a self,
        namespace: &'a Namespace,
        ids: &'a [RecordId],
    ) -> impl Future<Output = BatchReport<Option<Record>>> + Send + 'a {
        self.unboxed.fetch_add(1, Ordering::Relaxed);
        self.get_batch(namespace, ids)
    }

    fn search_unboxed<'a>(
        &'a self,
        query: &'a VectorQuery,
    ) -> impl Future<Output = Result<Vec<SearchHit>, StorageError>> + Send + 'a {
        self.unboxed.fetch_add(1, Ordering::Relaxed);
        self.search(query)
    }

    fn into_dyn(self: Arc<Self>) -> Arc<dyn StorageBackend> {
        self
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl StorageBackend for FaultyBackend {
    async fn ensure_index(&self, schema: &IndexSchema) -> Result<IndexStatus, StorageError> {
        self.call(Operation::EnsureIndex, self.inner.ensure_index(schema)).await
    }

    async fn put_batch(&self, records: Vec<Record>) -> BatchReport<()> {
        self.batch(Operation::Put, &records, |r| self.inner.put_batch(r)).await
    }

    async fn put_batch_borrowed(&self, records: &[Record]) -> BatchReport<()> {
        self.batch(Operation::Put, records, |r| self.inner.put_batch(r)).await
    }

    async fn get_batch(
        &self,
        namespace: &Namespace,
        ids: &[RecordId],
    ) -> BatchReport<Option<Record>> {
        self.batch(
            Operation::Get,
            ids,
            |ids| async move { self.inner.get_batch(namespace, &ids).await },
        )
        .await
    }

    async fn delete_batch(&self, namespace: &Namespace, ids: &[RecordId]) -> BatchReport<bool> {
        self.batch(Operation::Delete, ids, |ids| async move {
            self.inner.delete_batch(namespace, &ids).await
        })
        .await
    }

    async fn search(&self, query: &VectorQuery) -> Result<Vec<SearchHit>, StorageError> {
        self.call(Operation::Search, self.inner.search(query)).await
    }

    async fn find(
        &self,
        namespace: &Namespace,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        self.call(Operation::Find, self.inner.find(namespace, filter, limit)).await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64, StorageError> {
        self.call(Operation::Count, self.inner.count(namespace)).await
    }

    async fn scan(
        &self,
        namespace: &Namespace,
        cursor: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StorageError> {
        self.call(Operation::Scan, self.inner.scan(namespace, cursor, limit)).await
    }

    async fn touch(
        &self,
        namespace: &Namespace,
        id: &RecordId,
        now: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<Option<Touched>, StorageError> {
        self.call(Operation::Touch, self.inner.touch(namespace, id, now, ttl)).await
    }

    async fn compare_and_set(
        &self,
        record: Record,
        expected: Option<u64>,
    ) -> Result<(), StorageError> {
        self.call(Operation::CompareAndSet, self.inner.compare_and_set(record, expected)).await
    }

    async fn ping(&self) -> Result<Duration, StorageError> {
        self.call(Operation::Ping, self.inner.ping()).await
    }

    async fn describe(&self) -> Result<BackendInfo, StorageError> {
        self.call(Operation::Describe, self.inner.describe()).await
    }

    fn call_limit(&self, _op: Operation, _items: usize) -> Option<Duration> {
        self.own_limit
    }
}
