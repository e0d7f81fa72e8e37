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
//!
//! [`StackBuilder::build`] fuses the four policies into one layer: a call goes through one
//! boxed future and one dynamic dispatch for the whole stack instead of one per layer, and a
//! batch's items are lent down the stack (a [`Cow`]) rather than copied by every layer. On the
//! common path (breaker closed, first attempt succeeds) the stack allocates nothing besides
//! that one box; the retry layer keeps per-item state only once an attempt has failed.
//! Around a backend of known type ([`UnboxedBackend`]), the backend's reads (get by id,
//! search) are held inside that box too, so such a read through the stack allocates and
//! dispatches once, as a read of the bare backend does.
//!
//! A read by id that needs no timer of ours (the backend ends it in time itself, as the Redis
//! backend does for a few ids) goes further: the fused stack begins it inline
//! ([`Policy::inline`], [`Inline`]), and the layer awaits its first attempt in its own future,
//! with the policies' steps as plain calls before and after it. Only a first attempt that
//! leaves items to retry continues on the general path, in a box of its own. That halves what
//! the stack adds to a get against Redis (see `docs/performance.md`).

/// The two running methods of a [`Policy`] whose calls go through a [`stack::Chain`]: `$this`
/// names the policy in `$chain`, the chain to run (one policy alone, or the fused stack).
macro_rules! run_through_chain {
    ($this:ident => $chain:expr) => {
        fn call<'a, T, F, Fut>(
            &'a self,
            op: Operation,
            own_limit: Option<std::time::Duration>,
            f: F,
        ) -> impl Future<Output = Result<T, StorageError>> + Send + 'a
        where
            T: Send + 'a,
            F: Fn() -> Fut + Send + Sync + 'a,
            Fut: Future<Output = Result<T, StorageError>> + Send + 'a,
        {
            let $this = self;
            Chain { own_limit, ..$chain }.call(op, f)
        }

        fn batch<'a, I, T, F, Fut>(
            &'a self,
            op: Operation,
            items: Cow<'a, [I]>,
            own_limit: Option<std::time::Duration>,
            f: F,
        ) -> impl Future<Output = BatchReport<T>> + Send + 'a
        where
            I: Clone + Send + Sync + 'a,
            T: Send + 'a,
            F: Fn(Cow<'a, [I]>) -> Fut + Send + Sync + 'a,
            Fut: Future<Output = BatchReport<T>> + Send + 'a,
        {
            let $this = self;
            Chain { own_limit, ..$chain }.batch(op, items, f)
        }
    };
}

mod breaker;
mod classify;
pub mod metrics;
mod retry;
mod stack;
mod stats;
mod timeout;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engram_config::Config;
use engram_resilience::{CircuitBreaker, Clock, InvalidSettings, Observer, Retrier};
use tracing::Instrument;

pub use breaker::BreakerPolicy;
pub use metrics::{MetricsPolicy, describe_metrics, keeps_global_handles, metric_names};
pub use retry::RetryPolicy;
pub use stats::{OperationStats, OperationSummary};
pub use timeout::TimeoutPolicy;

use stack::Chain;
pub use stack::Inline;

use crate::backend::{
    BackendInfo, BatchReport, IndexStatus, ItemOutcome, ScanCursor, ScanPage, SearchHit,
    StorageBackend, Touched, UnboxedBackend, VectorQuery,
};
use crate::error::{Operation, StorageError};
use crate::filter::Filter;
use crate::ids::{Namespace, RecordId};
use crate::record::{Record, Timestamp};
use crate::schema::IndexSchema;

/// What a layer does around each call. Implemented by the four policies of this module.
pub trait Policy: Send + Sync + fmt::Debug + 'static {
    /// Runs a single call (`f` may be called again by policies that retry). `own_limit` is
    /// how long the backend lets the call wait before it ends it itself
    /// ([`StorageBackend::call_limit`]).
    fn call<'a, T, F, Fut>(
        &'a self,
        op: Operation,
        own_limit: Option<Duration>,
        f: F,
    ) -> impl Future<Output = Result<T, StorageError>> + Send + 'a
    where
        T: Send + 'a,
        F: Fn() -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'a;

    /// Runs a batch; `f` receives the items to send (all of them, or on a retry those that
    /// failed with a retryable error) and must report one outcome per item given.
    ///
    /// Items are borrowed from the caller where the backend only reads them (ids), and owned
    /// where it consumes them (records); a policy that needs them again after `f` (retry)
    /// keeps its own copy only of owned items. `own_limit` is the backend's own limit for
    /// these items ([`StorageBackend::call_limit`]), which also holds for fewer.
    fn batch<'a, I, T, F, Fut>(
        &'a self,
        op: Operation,
        items: Cow<'a, [I]>,
        own_limit: Option<Duration>,
        f: F,
    ) -> impl Future<Output = BatchReport<T>> + Send + 'a
    where
        I: Clone + Send + Sync + 'a,
        T: Send + 'a,
        F: Fn(Cow<'a, [I]>) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = BatchReport<T>> + Send + 'a;

    /// Told how many hits a search returned.
    fn on_search_results(&self, _hits: usize) {}

    /// Told how many reads by id hit and missed.
    fn on_get(&self, _hits: usize, _misses: usize) {}

    /// Begins a batch of `op` on `keys` keys whose first attempt the layer awaits in its own
    /// future (see [`Inline`]); `None`, the default, for the general path ([`Policy::batch`]).
    /// `own_limit` is as for [`Policy::batch`].
    fn inline(
        &self,
        _op: Operation,
        _keys: usize,
        _own_limit: Option<Duration>,
    ) -> Option<Inline<'_>> {
        None
    }
}

/// The four policies in the documented order, each optional, applied as one policy: Metrics
/// around Retry around Breaker around Timeout.
///
/// The same steps as the four layers wrapped one around the other, run by one [`Chain`].
#[derive(Debug)]
struct Stack {
    metrics: Option<MetricsPolicy>,
    retry: Option<RetryPolicy>,
    breaker: Option<BreakerPolicy>,
    timeout: Option<TimeoutPolicy>,
}

impl Stack {
    fn chain(&self) -> Chain<'_> {
        Chain {
            metrics: self.metrics.as_ref(),
            retry: self.retry.as_ref(),
            breaker: self.breaker.as_ref(),
            timeout: self.timeout.as_ref(),
            own_limit: None,
        }
    }
}

impl Policy for Stack {
    run_through_chain!(this => this.chain());

    fn inline(
        &self,
        op: Operation,
        keys: usize,
        own_limit: Option<Duration>,
    ) -> Option<Inline<'_>> {
        Chain { own_limit, ..self.chain() }.inline(op, keys)
    }

    fn on_search_results(&self, hits: usize) {
        if let Some(m) = &self.metrics {
            m.on_search_results(hits);
        }
    }

    fn on_get(&self, hits: usize, misses: usize) {
        if let Some(m) = &self.metrics {
            m.on_get(hits, misses);
        }
    }
}

/// A backend wrapped by a policy: a backend of known type `B`, whose reads the layer holds
/// unboxed ([`UnboxedBackend`]), or by default any backend as a trait object.
#[derive(Debug)]
pub struct Layer<P, B: ?Sized = dyn StorageBackend> {
    policy: P,
    inner: Arc<B>,
}

impl<P: Policy, B: UnboxedBackend + ?Sized> Layer<P, B> {
    /// Wraps `inner` with `policy`.
    pub fn new(policy: P, inner: Arc<B>) -> Self {
        Self { policy, inner }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<B> {
        &self.inner
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// A single call of `op` through the policy, told the backend's own limit for it.
    fn run<'a, T, F, Fut>(
        &'a self,
        op: Operation,
        f: F,
    ) -> impl Future<Output = Result<T, StorageError>> + Send + 'a
    where
        T: Send + 'a,
        F: Fn() -> Fut + Send + Sync + 'a,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'a,
    {
        self.policy.call(op, self.inner.call_limit(op, 1), f)
    }

    /// A batch of `op` through the policy, told the backend's own limit for it.
    fn run_batch<'a, I, T, F, Fut>(
        &'a self,
        op: Operation,
        items: Cow<'a, [I]>,
        f: F,
    ) -> impl Future<Output = BatchReport<T>> + Send + 'a
    where
        I: Clone + Send + Sync + 'a,
        T: Send + 'a,
        F: Fn(Cow<'a, [I]>) -> Fut + Send + Sync + 'a,
        Fut: Future<Output = BatchReport<T>> + Send + 'a,
    {
        let own_limit = self.inner.call_limit(op, items.len());
        self.policy.batch(op, items, own_limit, f)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<P: Policy, B: UnboxedBackend + ?Sized> StorageBackend for Layer<P, B> {
    async fn ensure_index(&self, schema: &IndexSchema) -> Result<IndexStatus, StorageError> {
        self.run(Operation::EnsureIndex, || self.inner.ensure_index(schema)).await
    }

    async fn put_batch(&self, records: Vec<Record>) -> BatchReport<()> {
        // The policy retries by position: the records stay here, lent to the backend whole on
        // the first attempt and copied only for the ones a retry sends again.
        let records: Arc<[Record]> = records.into();
        let all: Vec<usize> = (0..records.len()).collect();
        self.run_batch(Operation::Put, Cow::Owned(all), |at: Cow<'_, [usize]>| {
            let records = records.clone();
            async move {
                if at.len() == records.len() {
                    self.inner.put_batch_borrowed(&records).await
                } else {
                    self.inner.put_batch(at.iter().map(|&i| records[i].clone()).collect()).await
                }
            }
        })
        .await
    }

    async fn put_batch_borrowed(&self, records: &[Record]) -> BatchReport<()> {
        self.put_batch(records.to_vec()).await
    }

    async fn get_batch(
        &self,
        namespace: &Namespace,
        ids: &[RecordId],
    ) -> BatchReport<Option<Record>> {
        let op = Operation::Get;
        let Some(mut call) =
            self.policy.inline(op, ids.len(), self.inner.call_limit(op, ids.len()))
        else {
            // Boxed: this path (a batch that needs a timer of ours, or single layers) would
            // otherwise make every read's future larger.
            let report = Box::pin(self.run_batch(
                op,
                Cow::Borrowed(ids),
                |ids: Cow<'_, [RecordId]>| async move {
                    self.inner.get_batch_unboxed(namespace, &ids).await
                },
            ))
            .await;
            let (hits, misses) = reads(&report);
            self.policy.on_get(hits, misses);
            return report;
        };
        // The first attempt is awaited here, in this call's own future; only retries go
        // through the general path.
        let first = match call.admit() {
            Ok(None) => self.inner.get_batch_unboxed(namespace, ids).await,
            Ok(Some(span)) => self.inner.get_batch_unboxed(namespace, ids).instrument(span).await,
            Err(refused) => refused,
        };
        let (report, ending) = match call.after_first(Cow::Borrowed(ids), first) {
            Ok(done) => done,
            Err(rest) => {
                Box::pin(rest.run(|ids: Cow<'_, [RecordId]>| async move {
                    self.inner.get_batch_unboxed(namespace, &ids).await
                }))
                .await
            }
        };
        ending.record(Some(reads(&report)));
        report
    }

    async fn delete_batch(&self, namespace: &Namespace, ids: &[RecordId]) -> BatchReport<bool> {
        self.run_batch(Operation::Delete, Cow::Borrowed(ids), |ids: Cow<'_, [RecordId]>| async move {
                self.inner.delete_batch(namespace, &ids).await
            })
            .await
    }

    async fn search(&self, query: &VectorQuery) -> Result<Vec<SearchHit>, StorageError> {
        let hits = self.run(Operation::Search, || self.inner.search_unboxed(query)).await;
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
        self.run(Operation::Find, || self.inner.find(namespace, filter, limit)).await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64, StorageError> {
        self.run(Operation::Count, || self.inner.count(namespace)).await
    }

    async fn scan(
        &self,
        namespace: &Namespace,
        cursor: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StorageError> {
        self.run(Operation::Scan, || self.inner.scan(namespace, cursor.clone(), limit)).await
    }

    async fn touch(
        &self,
        namespace: &Namespace,
        id: &RecordId,
        now: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<Option<Touched>, StorageError> {
        self.run(Operation::Touch, || self.inner.touch(namespace, id, now, ttl)).await
    }

    async fn compare_and_set(
        &self,
        record: Record,
        expected: Option<u64>,
    ) -> Result<(), StorageError> {
        self.run(Operation::CompareAndSet, || self.inner.compare_and_set(record.clone(), expected))
            .await
    }

    async fn ping(&self) -> Result<Duration, StorageError> {
        self.run(Operation::Ping, || self.inner.ping()).await
    }

    async fn describe(&self) -> Result<BackendInfo, StorageError> {
        self.run(Operation::Describe, || self.inner.describe()).await
    }

    /// None: retries may take a call past any one attempt's limit.
    fn call_limit(&self, _op: Operation, _items: usize) -> Option<Duration> {
        None
    }
}

/// The hits and misses of a read by id.
fn reads(report: &BatchReport<Option<Record>>) -> (usize, usize) {
    let (mut hits, mut misses) = (0, 0);
    for o in &report.items {
        match o {
            ItemOutcome::Succeeded(Some(_)) => hits += 1,
            ItemOutcome::Succeeded(None) => misses += 1,
            _ => {}
        }
    }
    (hits, misses)
}

/// Builds the layered stack in the documented order (see the [module docs](self)), whatever
/// order the layers are given in, around a backend of type `B`: a backend of known type
/// (`Arc<RedisBackend>`), whose reads the stack then holds unboxed ([`UnboxedBackend`]), or
/// any backend as `Arc<dyn StorageBackend>`.
#[derive(Debug)]
pub struct StackBuilder<B: ?Sized = dyn StorageBackend> {
    backend: Arc<B>,
    timeout: Option<TimeoutPolicy>,
    breaker: Option<Arc<CircuitBreaker>>,
    retry: Option<Arc<Retrier>>,
    metrics: Option<MetricsPolicy>,
}

impl<B: UnboxedBackend + ?Sized + 'static> StackBuilder<B> {
    /// Starts from the bare backend.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend, timeout: None, breaker: None, retry: None, metrics: None }
    }

    /// Every layer from configuration: the timeout from `redis.command_timeout`, the breaker
    /// (when enabled) named `breaker_name`, the retrier with its budget, and metrics with the
    /// slow-operation threshold. `observer` hears retries, refusals and breaker transitions.
    /// `clock` is the time of the retry budget and the breaker, and the metrics time calls on
    /// it too (one read serves the budget and the metrics, see the [module docs](self)).
    ///
    /// # Errors
    /// [`InvalidSettings`] when a resilience setting is out of range.
    pub fn from_config(
        backend: Arc<B>,
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
    ///
    /// The layers given are fused into one [`Layer`], which behaves as the same layers
    /// wrapped one around the other but costs one boxed future per call instead of one per
    /// layer (and, around a backend of known type, holds its reads unboxed within it).
    /// Without any layer the backend is returned as it is.
    pub fn build(self) -> Arc<dyn StorageBackend> {
        let stack = Stack {
            metrics: self.metrics,
            retry: self.retry.map(RetryPolicy::new),
            breaker: self.breaker.map(BreakerPolicy::new),
            timeout: self.timeout,
        };
        if stack.metrics.is_none()
            && stack.retry.is_none()
            && stack.breaker.is_none()
            && stack.timeout.is_none()
        {
            return self.backend.into_dyn();
        }
        Arc::new(Layer::new(stack, self.backend))
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use engram_resilience::{Retrier, RetryPolicy as Attempts};

    use super::*;
    use crate::ErrorKind;
    use crate::testkit::conformance::record;
    use crate::testkit::{Fault, FaultyBackend, suite_schema};

    /// Layers wrapped one around the other by hand behave as the fused stack: a batch's
    /// temporary failure is retried for the failed item only, under the timeout.
    #[tokio::test(start_paused = true)]
    async fn single_policy_layers_nest_as_before() {
        let inner = Arc::new(crate::InProcessBackend::new());
        inner.ensure_index(&suite_schema()).await.expect("index");
        let faulty = Arc::new(FaultyBackend::new(inner));
        let retrier = Retrier::new(
            Attempts::new(engram_resilience::Backoff::fixed(Duration::from_millis(1)), 3)
                .expect("policy"),
        );
        let timed: Arc<dyn StorageBackend> =
            Arc::new(Layer::new(TimeoutPolicy::new(Duration::from_millis(50)), faulty.clone()));
        let stack = Layer::new(RetryPolicy::new(Arc::new(retrier)), timed);
        let ns = Namespace::new("nested").expect("ns");
        faulty.script([Fault::FailItems(vec![None, Some(ErrorKind::Unavailable)]), Fault::Hang]);
        let report =
            stack.put_batch(vec![record(&ns, "a", [1.0; 4]), record(&ns, "b", [1.0; 4])]).await;
        assert!(report.items[0].ok().is_some(), "{:?}", report.items);
        // The second attempt hangs: the timeout ends it, and the third succeeds.
        assert!(report.items[1].ok().is_some(), "{:?}", report.items);
        assert_eq!(faulty.batch_sizes(Operation::Put), [2, 1, 1]);
        assert_eq!(stack.count(&ns).await.expect("count"), 2);
    }

    /// Around a backend of known type the stack asks for its reads unboxed, and around the
    /// trait object it cannot; either way the read goes through the policies (a fault is
    /// retried).
    #[tokio::test(start_paused = true)]
    async fn around_a_known_backend_reads_are_held_unboxed() {
        let inner = Arc::new(crate::InProcessBackend::new());
        inner.ensure_index(&suite_schema()).await.expect("index");
        let faulty = Arc::new(FaultyBackend::new(inner));
        let ns = Namespace::new("unboxed").expect("ns");
        crate::StorageBackendExt::put(&*faulty, record(&ns, "a", [1.0; 4])).await.expect("put");
        let ids = [RecordId::new("a").expect("id")];
        let query = VectorQuery::new(ns.clone(), vec![1.0; 4], 1);
        fn stack<B: UnboxedBackend + ?Sized + 'static>(
            b: StackBuilder<B>,
        ) -> Arc<dyn StorageBackend> {
            b.retry(Arc::new(Retrier::new(
                Attempts::new(engram_resilience::Backoff::fixed(Duration::from_millis(1)), 2)
                    .expect("policy"),
            )))
            .build()
        }
        let typed = stack(StackBuilder::new(faulty.clone()));
        faulty.script([Fault::Fail(ErrorKind::Unavailable)]);
        let report = typed.get_batch(&ns, &ids).await;
        assert!(matches!(report.items[..], [ItemOutcome::Succeeded(Some(_))]), "{report:?}");
        assert_eq!(typed.search(&query).await.expect("search").len(), 1);
        // Two attempts of the get and one search.
        assert_eq!(faulty.unboxed_reads(), 3);

        let boxed = stack(StackBuilder::new(faulty.clone() as Arc<dyn StorageBackend>));
        faulty.script([Fault::Fail(ErrorKind::Unavailable)]);
        let report = boxed.get_batch(&ns, &ids).await;
        assert!(matches!(report.items[..], [ItemOutcome::Succeeded(Some(_))]), "{report:?}");
        assert_eq!(boxed.search(&query).await.expect("search").len(), 1);
        assert_eq!(faulty.unboxed_reads(), 3);
        assert_eq!(faulty.batch_sizes(Operation::Get), [1, 1, 1, 1]);
    }

    /// The future of a read through the whole stack stays small: it is allocated and moved on
    /// every call (a kilobyte more costs a few percent of a get against Redis, measured with
    /// `benches/layers.rs`).
    #[tokio::test]
    async fn a_get_through_the_whole_stack_is_a_small_future() {
        let inner: Arc<dyn StorageBackend> = Arc::new(crate::InProcessBackend::new());
        inner.ensure_index(&suite_schema()).await.expect("index");
        let stack = StackBuilder::from_config(
            inner,
            &Config::default(),
            "size",
            Arc::new(engram_resilience::TokioClock),
            Arc::new(engram_resilience::NoopObserver),
        )
        .expect("stack")
        .build();
        let ns = Namespace::new("size").expect("ns");
        let ids = [RecordId::new("a").expect("id")];
        let get = stack.get_batch(&ns, &ids);
        let size = std::mem::size_of_val(&*get);
        // 640: the first attempt's policy state (span, in-flight gauge, start, retry loop,
        // permit) lives in this future itself since reads go inline (see `Policy::inline`).
        assert!(size <= 640, "the future of a get through the stack is {size} bytes");
        assert_eq!(get.await.items.len(), 1);
    }
}
