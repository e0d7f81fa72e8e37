//! The metrics layer: what the caller sees, through the `metrics` facade.
//!
//! Names and labels follow `observability.md`; labels are bounded (operation, outcome, error
//! kind, hit/miss), never a namespace, id or query.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use tokio::time::Instant;
use tracing::Instrument;

use super::Policy;
use super::stats::OperationStats;
use crate::backend::{BatchReport, ItemOutcome};
use crate::error::{ErrorKind, Operation, StorageError};

/// Latency per operation, labelled `operation` and `outcome` (ok, error, rejected).
pub const OPERATION_DURATION: &str = "engram_operation_duration_seconds";
/// Errors per operation and kind.
pub const OPERATION_ERRORS: &str = "engram_operation_errors_total";
/// Operations in flight.
pub const OPERATIONS_IN_FLIGHT: &str = "engram_operations_in_flight";
/// Items per batch.
pub const BATCH_SIZE: &str = "engram_batch_size";
/// Hits per search.
pub const SEARCH_RESULTS: &str = "engram_search_results";
/// Reads by id, labelled `result` (hit, miss).
pub const GET_TOTAL: &str = "engram_get_total";

/// The names of the metrics this layer records.
pub fn metric_names() -> [&'static str; 6] {
    [
        OPERATION_DURATION,
        OPERATION_ERRORS,
        OPERATIONS_IN_FLIGHT,
        BATCH_SIZE,
        SEARCH_RESULTS,
        GET_TOTAL,
    ]
}

/// Registers descriptions and units with the installed recorder (call after installing it).
pub fn describe_metrics() {
    describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "Latency of storage operations as the caller sees them"
    );
    describe_counter!(
        OPERATION_ERRORS,
        "Failed storage operations (batch items count one each) by error kind"
    );
    describe_gauge!(OPERATIONS_IN_FLIGHT, "Storage operations in flight");
    describe_histogram!(BATCH_SIZE, Unit::Count, "Items per batch operation");
    describe_histogram!(SEARCH_RESULTS, Unit::Count, "Hits returned per vector search");
    describe_counter!(GET_TOTAL, "Reads by id, by hit or miss");
}

/// Records latency, outcome, errors, in-flight calls, batch sizes, search hits and the read
/// hit ratio. Operations slower than the threshold are reported as slow (WARN logging comes
/// with the tracing work).
#[derive(Debug, Clone)]
pub struct MetricsPolicy {
    slow: Duration,
    stats: Option<Arc<OperationStats>>,
    system: &'static str,
}

impl MetricsPolicy {
    /// Metrics with `slow` as the slow-operation threshold.
    pub fn new(slow: Duration) -> Self {
        Self { slow, stats: None, system: "redis" }
    }

    /// Names the backend in traces (`db.system.name`, OpenTelemetry): `redis` by default.
    pub fn with_db_system(mut self, system: &'static str) -> Self {
        self.system = system;
        self
    }

    /// The span of one operation, with OpenTelemetry's database fields. It never carries
    /// keys, content, vectors or credentials.
    fn span(&self, op: Operation, keys: usize) -> tracing::Span {
        tracing::debug_span!(
            "engram.storage",
            otel.kind = "client",
            db.system.name = self.system,
            db.operation.name = op.as_str(),
            db.operation.batch.size = keys,
            outcome = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    }

    /// Also records every call into `stats`, at the same point as the metrics.
    pub fn with_stats(mut self, stats: Arc<OperationStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    fn finish(&self, op: Operation, kind: Option<ErrorKind>, start: Instant, keys: usize) {
        let elapsed = start.elapsed();
        let outcome = outcome(kind);
        histogram!(OPERATION_DURATION, "operation" => op.as_str(), "outcome" => outcome)
            .record(elapsed.as_secs_f64());
        if let Some(stats) = &self.stats {
            stats.record(op.as_str(), outcome, elapsed);
        }
        let span = tracing::Span::current();
        span.record("outcome", outcome);
        if let Some(kind) = kind {
            span.record("error.type", kind.as_str());
        }
        if elapsed > self.slow {
            tracing::warn!(
                db.operation.name = op.as_str(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                keys,
                outcome,
                "slow storage operation"
            );
        }
    }

    /// The slow-operation threshold.
    pub fn slow_threshold(&self) -> Duration {
        self.slow
    }
}

fn outcome(kind: Option<ErrorKind>) -> &'static str {
    match kind {
        None => "ok",
        Some(ErrorKind::CircuitOpen) => "rejected",
        Some(_) => "error",
    }
}

/// Decrements the in-flight gauge even if the call is dropped half-way.
struct InFlight(Operation);

impl InFlight {
    fn start(op: Operation) -> Self {
        gauge!(OPERATIONS_IN_FLIGHT, "operation" => op.as_str()).increment(1.0);
        Self(op)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(OPERATIONS_IN_FLIGHT, "operation" => self.0.as_str()).decrement(1.0);
    }
}

fn record_error(op: Operation, e: &StorageError) {
    counter!(OPERATION_ERRORS, "operation" => op.as_str(), "error_kind" => e.kind().as_str())
        .increment(1);
}

impl Policy for MetricsPolicy {
    async fn call<'a, T, F, Fut>(&'a self, op: Operation, mut f: F) -> Result<T, StorageError>
    where
        T: Send + 'a,
        F: FnMut() -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'a,
    {
        let _guard = InFlight::start(op);
        let span = self.span(op, 1);
        async {
            let start = Instant::now();
            let result = f().await;
            self.finish(op, result.as_ref().err().map(StorageError::kind), start, 1);
            result
        }
        .instrument(span)
        .await
        .inspect_err(|e| record_error(op, e))
    }

    async fn batch<'a, I, T, F, Fut>(
        &'a self,
        op: Operation,
        items: Vec<I>,
        mut f: F,
    ) -> BatchReport<T>
    where
        I: Clone + Send + Sync + 'a,
        T: Send + 'a,
        F: FnMut(Vec<I>) -> Fut + Send + 'a,
        Fut: Future<Output = BatchReport<T>> + Send + 'a,
    {
        let _guard = InFlight::start(op);
        let n = items.len();
        histogram!(BATCH_SIZE, "operation" => op.as_str()).record(n as f64);
        let span = self.span(op, n);
        async {
            let start = Instant::now();
            let report = f(items).await;
            let mut kinds = Vec::new();
            for o in &report.items {
                match o {
                    ItemOutcome::Failed(e) => {
                        record_error(op, e);
                        kinds.push(e.kind());
                    }
                    ItemOutcome::NotAttempted => {
                        counter!(OPERATION_ERRORS, "operation" => op.as_str(), "error_kind" => "not_attempted")
                            .increment(1);
                        kinds.push(ErrorKind::Unavailable);
                    }
                    ItemOutcome::Succeeded(_) => {}
                }
            }
            // A batch is "rejected" only when the breaker refused all of it.
            let worst = kinds.iter().copied().find(|k| *k != ErrorKind::CircuitOpen).or(kinds.first().copied());
            self.finish(op, worst, start, n);
            report
        }
        .instrument(span)
        .await
    }

    fn on_search_results(&self, hits: usize) {
        histogram!(SEARCH_RESULTS).record(hits as f64);
    }

    fn on_get(&self, hits: usize, misses: usize) {
        counter!(GET_TOTAL, "result" => "hit").increment(hits as u64);
        counter!(GET_TOTAL, "result" => "miss").increment(misses as u64);
    }
}
