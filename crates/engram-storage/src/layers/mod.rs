//! Layers around a backend: timeout, circuit breaker, retry and metrics.
//!
//! Each layer is a [`Layer`] holding a policy and the backend it wraps; it implements
//! [`StorageBackend`] itself and forwards every method through its policy. The
//! [`StackBuilder`] applies them in one fixed order, each wrapping everything before it:
//!
//! ```text
//! Metrics          outermost: sees what the caller sees, rejections and retries included
//!   Retry          temporary errors only; after a timeout only idempotent operations;
//!                  a shared retry budget and a total-delay cap; batches re-send only the
//!                  items that failed with a retryable error
//!     Breaker      counts every attempt; an open breaker is a permanent error, so the
//!                  retry loop stops at once
//!       Timeout    per attempt; its error is temporary with an unknown outcome
//!         backend
//! ```
//!
//! Shared state (the breaker, the retry budget) lives in the policies, behind `Arc`s, so one
//! breaker can guard several stacks.

mod breaker;
mod classify;
pub mod metrics;
mod retry;
mod stats;
mod timeout;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engram_config::Config;
use engram_resilience::{CircuitBreaker, Clock, InvalidSettings, Observer, Retrier};

pub use breaker::BreakerPolicy;
pub use metrics::{MetricsPolicy, describe_metrics, metric_names};
pub use retry::RetryPolicy;
pub use stats::{OperationStats, OperationSummary};
pub use timeout::TimeoutPolicy;

use crate::backend::{
    BackendInfo, BatchReport, IndexStatus, ScanCursor, ScanPage, SearchHit, StorageBackend,
    Touched, VectorQuery,
};
use crate::error::{Operation, StorageError};
use crate::filter::Filter;
use crate::ids::{Namespace, RecordId};
use crate::record::{Record, Timestamp};
use crate::schema::IndexSchema;

/// What a layer does around each call. Implemented by the four policies of this module.
pub trait Policy: Send + Sync + fmt::Debug + 'static {
    /// Runs a single call (`f` may be called again by policies that retry).
    fn call<'a, T, F, Fut>(
        &'a self,
        op: Operation,
        f: F,
    ) -> impl Future<Output = Result<T, StorageError>> + Send + 'a
    where
        T: Send + 'a,
        F: FnMut() -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'a;

    /// Runs a batch; `f` receives the items to send (all of them, or on a retry those that
    /// failed with a retryable error) and must report one outcome per item given.
    fn batch<'a, I, T, F, Fut>(
        &'a self,
        op: Operation,
        items: Vec<I>,
        f: F,
    ) -> impl Future<Output = BatchReport<T>> + Send + 'a
    where
        I: Clone + Send + Sync + 'a,
        T: Send + 'a,
        F: FnMut(Vec<I>) -> Fut + Send + 'a,
        Fut: Future<Output = BatchReport<T>> + Send + 'a;

    /// Told how many hits a search returned.
    fn on_search_results(&self, _hits: usize) {}

    /// Told how many reads by id hit and missed.
    fn on_get(&self, _hits: usize, _misses: usize) {}
}

/// A backend wrapped by a policy.
#[derive(Debug)]
pub struct Layer<P> {
    policy: P,
    inner: Arc<dyn StorageBackend>,
}

impl<P: Policy> Layer<P> {
    /// Wraps `inner` with `policy`.
    pub fn new(policy: P, inner: Arc<dyn StorageBackend>) -> Self {
        Self { policy, inner }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<dyn StorageBackend> {
        &self.inner
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<P: Policy> StorageBackend for Layer<P> {
    async fn ensure_index(&self, schema: &IndexSchema) -> Result<IndexStatus, StorageError> {
        self.policy.call(Operation::EnsureIndex, || self.inner.ensure_index(schema)).await
    }

    async fn put_batch(&self, records: Vec<Record>) -> BatchReport<()> {
        self.policy.batch(Operation::Put, records, |r| self.inner.put_batch(r)).await
    }

    async fn get_batch(
        &self,
        namespace: &Namespace,
        ids: &[RecordId],
    ) -> BatchReport<Option<Record>> {
        let report = self
            .policy
            .batch(Operation::Get, ids.to_vec(), |ids| async move {
                self.inner.get_batch(namespace, &ids).await
            })
            .await;
        let hits = report.items.iter().filter(|o| matches!(o.ok(), Some(Some(_)))).count();
        let misses = report.items.iter().filter(|o| matches!(o.ok(), Some(None))).count();
        self.policy.on_get(hits, misses);
        report
    }

    async fn delete_batch(&self, namespace: &Namespace, ids: &[RecordId]) -> BatchReport<bool> {
        self.policy
            .batch(Operation::Delete, ids.to_vec(), |ids| async move {
                self.inner.delete_batch(namespace, &ids).await
            })
            .await
    }

    async fn search(&self, query: &VectorQuery) -> Result<Vec<SearchHit>, StorageError> {
        let hits = self.policy.call(Operation::Search, || self.inner.search(query)).await;
        if let Ok(h) = &hits {
            self.policy.on_search_results(h.len());
        }
        hits
    }

    async fn find(
        &self,
        namespace: &Namespace,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        self.policy.call(Operation::Find, || self.inner.find(namespace, filter, limit)).await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64, StorageError> {
        self.policy.call(Operation::Count, || self.inner.count(namespace)).await
    }

    async fn scan(
        &self,
        namespace: &Namespace,
        cursor: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StorageError> {
        self.policy
            .call(Operation::Scan, || self.inner.scan(namespace, cursor.clone(), limit))
            .await
    }

    async fn touch(
        &self,
        namespace: &Namespace,
        id: &RecordId,
        now: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<Option<Touched>, StorageError> {
        self.policy.call(Operation::Touch, || self.inner.touch(namespace, id, now, ttl)).await
    }

    async fn compare_and_set(
        &self,
        record: Record,
        expected: Option<u64>,
    ) -> Result<(), StorageError> {
        self.policy
            .call(Operation::CompareAndSet, || self.inner.compare_and_set(record.clone(), expected))
            .await
    }

    async fn ping(&self) -> Result<Duration, StorageError> {
        self.policy.call(Operation::Ping, || self.inner.ping()).await
    }

    async fn describe(&self) -> Result<BackendInfo, StorageError> {
        self.policy.call(Operation::Describe, || self.inner.describe()).await
    }
}

/// Builds the layered stack in the documented order (see the [module docs](self)), whatever
/// order the layers are given in.
#[derive(Debug)]
pub struct StackBuilder {
    backend: Arc<dyn StorageBackend>,
    timeout: Option<TimeoutPolicy>,
    breaker: Option<Arc<CircuitBreaker>>,
    retry: Option<Arc<Retrier>>,
    metrics: Option<MetricsPolicy>,
}

impl StackBuilder {
    /// Starts from the bare backend.
    pub fn new(backend: Arc<dyn StorageBackend>) -> Self {
        Self { backend, timeout: None, breaker: None, retry: None, metrics: None }
    }

    /// Every layer from configuration: the timeout from `redis.command_timeout`, the breaker
    /// (when enabled) named `breaker_name`, the retrier with its budget, and metrics with the
    /// slow-operation threshold. `observer` hears retries, refusals and breaker transitions.
    ///
    /// # Errors
    /// [`InvalidSettings`] when a resilience setting is out of range.
    pub fn from_config(
        backend: Arc<dyn StorageBackend>,
        config: &Config,
        breaker_name: &'static str,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, InvalidSettings> {
        let mut builder = Self::new(backend)
            .timeout(TimeoutPolicy::new(config.redis.command_timeout))
            .retry(Arc::new(
                Retrier::from_config(&config.retry, clock.clone())?.with_observer(observer.clone()),
            ))
            .metrics(MetricsPolicy::new(config.observability.slow_operation_threshold));
        if config.circuit_breaker.enabled {
            builder = builder.circuit_breaker(Arc::new(CircuitBreaker::with_parts(
                breaker_name,
                &config.circuit_breaker,
                clock,
                observer,
            )?));
        }
        Ok(builder)
    }

    /// Adds the per-attempt timeout.
    pub fn timeout(mut self, policy: TimeoutPolicy) -> Self {
        self.timeout = Some(policy);
        self
    }

    /// Adds the circuit breaker.
    pub fn circuit_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Adds retries.
    pub fn retry(mut self, retrier: Arc<Retrier>) -> Self {
        self.retry = Some(retrier);
        self
    }

    /// Adds metrics.
    pub fn metrics(mut self, policy: MetricsPolicy) -> Self {
        self.metrics = Some(policy);
        self
    }

    /// The breaker, if one was added (for health reports and snapshots).
    pub fn breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }

    /// Wraps the backend: Timeout innermost, then Breaker, Retry, and Metrics outermost.
    pub fn build(self) -> Arc<dyn StorageBackend> {
        let mut stack = self.backend;
        if let Some(p) = self.timeout {
            stack = Arc::new(Layer::new(p, stack));
        }
        if let Some(b) = self.breaker {
            stack = Arc::new(Layer::new(BreakerPolicy::new(b), stack));
        }
        if let Some(r) = self.retry {
            stack = Arc::new(Layer::new(RetryPolicy::new(r), stack));
        }
        if let Some(m) = self.metrics {
            stack = Arc::new(Layer::new(m, stack));
        }
        stack
    }
}
