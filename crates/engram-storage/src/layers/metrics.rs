//! The metrics layer: what the caller sees, through the `metrics` facade.
//!
//! Names and labels follow `observability.md`; labels are bounded (operation, outcome, error
//! kind, hit/miss), never a namespace, id or query.

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics::{
    Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit, counter,
    describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use super::Policy;
use super::stack::Chain;
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
/// hit ratio. Operations slower than the threshold log a WARN line.
///
/// Every metric key is built at compile time (name, labels and their hash), so recording
/// allocates and hashes nothing. The recorder in effect (local to a thread, else global) is
/// asked at each update, as the `metrics` macros do, so a recorder installed after the stack
/// is built still sees everything. The handles of the global recorder are kept once it is
/// known (see `Rec`): an update then costs the metric's own atomic operation, not a
/// registry look-up. The debug span of an operation costs a level check when nothing listens
/// at debug level.
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
    pub(super) fn span(&self, op: Operation, keys: usize) -> tracing::Span {
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

    /// Records the end of a call that took `elapsed` (with its size when it is a `batch` of
    /// `keys` items, and `reads`, the hits and misses of a read by id, when given), into the
    /// metrics and into `span`, the operation's span (when it is enabled).
    // The parts of one call's end, passed as they are: a struct for them would only be built
    // to be taken apart here.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish(
        &self,
        op: Operation,
        kind: Option<ErrorKind>,
        elapsed: Duration,
        keys: usize,
        batch: bool,
        reads: Option<(usize, usize)>,
        span: &tracing::Span,
    ) {
        let outcome = outcome(kind);
        match OpKeys::of(op) {
            // One look-up of the recorder for the duration, the batch size and the reads.
            Some(k) => with_rec(|r| {
                let (key, slot) = match kind {
                    None => (&k.ok, &k.kept.ok),
                    Some(ErrorKind::CircuitOpen) => (&k.rejected, &k.kept.rejected),
                    Some(_) => (&k.error, &k.kept.error),
                };
                r.histogram(key, slot).record(elapsed.as_secs_f64());
                if batch {
                    r.histogram(&k.batch_size, &k.kept.batch_size).record(keys as f64);
                }
                if let Some((hits, misses)) = reads {
                    count_reads(r, hits, misses);
                }
            }),
            None => {
                histogram!(OPERATION_DURATION, "operation" => op.as_str(), "outcome" => outcome)
                    .record(elapsed.as_secs_f64());
                if batch {
                    histogram!(BATCH_SIZE, "operation" => op.as_str()).record(keys as f64);
                }
                if let Some((hits, misses)) = reads {
                    with_rec(|r| count_reads(r, hits, misses));
                }
            }
        }
        if let Some(stats) = &self.stats {
            stats.record(op, kind, elapsed);
        }
        if !span.is_disabled() {
            span.record("outcome", outcome);
            if let Some(kind) = kind {
                span.record("error.type", kind.as_str());
            }
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

/// Where the metrics of this layer come from, as the `metrics` macros called here would say.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The recorder in effect for one update, from [`with_rec`].
///
/// The handles of the global recorder are kept in statics beside their keys, registered at
/// first use (so a series appears once recorded, as with the macros): the global recorder is
/// never replaced or dropped once installed, so they stay valid. Those of any other recorder
/// (one local to a thread, as tests use) are registered at each update, since such a
/// recorder may be dropped and another put at the same address.
#[derive(Clone, Copy)]
struct Rec<'a> {
    recorder: &'a dyn Recorder,
    /// Whether `recorder` is the global recorder, whose handles are kept.
    global: bool,
}

impl Rec<'_> {
    /// The handle `register` makes with this recorder: the one kept in `kept` for the global
    /// recorder (registered there at first use), a new one for any other.
    fn handle<H: Clone>(
        self,
        kept: &'static OnceLock<H>,
        register: impl FnOnce(&dyn Recorder) -> H,
    ) -> Cow<'static, H> {
        if self.global {
            Cow::Borrowed(kept.get_or_init(|| register(self.recorder)))
        } else {
            Cow::Owned(register(self.recorder))
        }
    }

    fn histogram(
        self,
        key: &'static Key,
        kept: &'static OnceLock<Histogram>,
    ) -> Cow<'static, Histogram> {
        self.handle(kept, |r| r.register_histogram(key, &METADATA))
    }

    fn counter(self, key: &'static Key, kept: &'static OnceLock<Counter>) -> Cow<'static, Counter> {
        self.handle(kept, |r| r.register_counter(key, &METADATA))
    }

    fn gauge(self, key: &'static Key, kept: &'static OnceLock<Gauge>) -> Cow<'static, Gauge> {
        self.handle(kept, |r| r.register_gauge(key, &METADATA))
    }
}

/// Runs `f` with the recorder in effect (local to this thread, else global, else none).
fn with_rec<T>(f: impl FnOnce(Rec<'_>) -> T) -> T {
    metrics::with_recorder(|recorder| f(Rec { recorder, global: is_global(recorder) }))
}

/// The address of the global recorder, once seen installed. A global recorder is leaked by
/// `metrics` when installed and can be installed once, so no other recorder ever has it.
static GLOBAL: OnceLock<usize> = OnceLock::new();

/// Milliseconds after [`probe_epoch`] before which no new probe starts.
static NEXT_PROBE: AtomicU64 = AtomicU64::new(0);

/// At most one probe per this many milliseconds.
const PROBE_INTERVAL_MS: u64 = 1_000;

fn address(recorder: &dyn Recorder) -> usize {
    std::ptr::from_ref(recorder).cast::<()>() as usize
}

/// Whether `recorder` is the global recorder, as far as known yet.
///
/// `metrics` does not say whether the recorder in effect is the global one or one local to
/// this thread. A thread of our own, new, has no local recorder, so the one it sees is the
/// global one: while none is known and a recorder with state is in effect here, such a thread
/// is started (at most one a second) to learn its address. A recorder without state (the
/// no-op one `metrics` falls back on, among others) has no registry to look up, so it is
/// simply asked at each update.
fn is_global(recorder: &dyn Recorder) -> bool {
    if let Some(&global) = GLOBAL.get() {
        return global == address(recorder);
    }
    if size_of_val(recorder) > 0 {
        probe();
    }
    false
}

fn probe_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Learns the address of the global recorder on a new thread, unless a probe started less
/// than [`PROBE_INTERVAL_MS`] ago. The caller does not wait for it.
fn probe() {
    let now = u64::try_from(probe_epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
    let next = NEXT_PROBE.load(Ordering::Relaxed);
    if now < next
        || NEXT_PROBE
            .compare_exchange(
                next,
                now.saturating_add(PROBE_INTERVAL_MS),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
    {
        return;
    }
    // A thread that cannot start leaves the handles unkept: the updates still reach the
    // recorder, through its registry.
    let _ = std::thread::Builder::new().name("engram-metrics-probe".into()).spawn(|| {
        if let Some(global) = metrics::with_recorder(|r| (size_of_val(r) > 0).then(|| address(r))) {
            let _ = GLOBAL.set(global);
        }
    });
}

/// Whether the handles of the global recorder are kept: it was installed, and seen in effect
/// by a call through the layers. For tests and diagnostics.
#[doc(hidden)]
pub fn keeps_global_handles() -> bool {
    GLOBAL.get().is_some()
}

/// The handles of one operation's metrics in the global recorder, registered at first use.
#[derive(Debug)]
struct Kept {
    in_flight: OnceLock<Gauge>,
    batch_size: OnceLock<Histogram>,
    ok: OnceLock<Histogram>,
    error: OnceLock<Histogram>,
    rejected: OnceLock<Histogram>,
}

impl Kept {
    const fn new() -> Self {
        Self {
            in_flight: OnceLock::new(),
            batch_size: OnceLock::new(),
            ok: OnceLock::new(),
            error: OnceLock::new(),
            rejected: OnceLock::new(),
        }
    }
}

/// The keys of one operation's metrics, built at compile time.
#[derive(Debug)]
struct OpKeys {
    /// `engram_operations_in_flight{operation}`.
    in_flight: Key,
    /// `engram_batch_size{operation}`.
    batch_size: Key,
    /// `engram_operation_duration_seconds{operation, outcome="ok"}`.
    ok: Key,
    /// The same with `outcome="error"`.
    error: Key,
    /// The same with `outcome="rejected"`.
    rejected: Key,
    /// Their handles in the global recorder.
    kept: Kept,
}

macro_rules! op_keys {
    ($($op:ident => $name:literal),* $(,)?) => {
        impl OpKeys {
            /// The keys of `op`; `None` for an operation added to [`Operation`] and not here
            /// (its metrics are then keyed at run time).
            fn of(op: Operation) -> Option<&'static OpKeys> {
                match op {
                    $(Operation::$op => {
                        static OP: [Label; 1] = [Label::from_static_parts("operation", $name)];
                        static OK: [Label; 2] = [
                            Label::from_static_parts("operation", $name),
                            Label::from_static_parts("outcome", "ok"),
                        ];
                        static ERROR: [Label; 2] = [
                            Label::from_static_parts("operation", $name),
                            Label::from_static_parts("outcome", "error"),
                        ];
                        static REJECTED: [Label; 2] = [
                            Label::from_static_parts("operation", $name),
                            Label::from_static_parts("outcome", "rejected"),
                        ];
                        static KEYS: OpKeys = OpKeys {
                            in_flight: Key::from_static_parts(OPERATIONS_IN_FLIGHT, &OP),
                            batch_size: Key::from_static_parts(BATCH_SIZE, &OP),
                            ok: Key::from_static_parts(OPERATION_DURATION, &OK),
                            error: Key::from_static_parts(OPERATION_DURATION, &ERROR),
                            rejected: Key::from_static_parts(OPERATION_DURATION, &REJECTED),
                            kept: Kept::new(),
                        };
                        Some(&KEYS)
                    })*
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }
        }
    };
}

op_keys! {
    Validate => "validate",
    Connect => "connect",
    Ping => "ping",
    Describe => "describe",
    EnsureIndex => "ensure_index",
    Put => "put",
    Get => "get",
    Delete => "delete",
    Search => "search",
    Find => "find",
    Count => "count",
    Scan => "scan",
    Touch => "touch",
    CompareAndSet => "compare_and_set",
}

static HIT_LABELS: [Label; 1] = [Label::from_static_parts("result", "hit")];
static MISS_LABELS: [Label; 1] = [Label::from_static_parts("result", "miss")];
static GET_HIT: Key = Key::from_static_parts(GET_TOTAL, &HIT_LABELS);
static GET_MISS: Key = Key::from_static_parts(GET_TOTAL, &MISS_LABELS);
static SEARCH_RESULTS_KEY: Key = Key::from_static_parts(SEARCH_RESULTS, &[]);
static KEPT_HIT: OnceLock<Counter> = OnceLock::new();
static KEPT_MISS: OnceLock<Counter> = OnceLock::new();
static KEPT_SEARCH_RESULTS: OnceLock<Histogram> = OnceLock::new();

/// Decrements the in-flight gauge even if the call is dropped half-way, through the handle
/// that incremented it (at most one registry look-up per call, none once the global
/// recorder's handle is kept).
pub(super) struct InFlight(Cow<'static, Gauge>);

impl InFlight {
    /// Counts one call of `op` in flight until dropped.
    pub(super) fn start(op: Operation) -> Self {
        let g = match OpKeys::of(op) {
            Some(k) => with_rec(|r| r.gauge(&k.in_flight, &k.kept.in_flight)),
            None => Cow::Owned(gauge!(OPERATIONS_IN_FLIGHT, "operation" => op.as_str())),
        };
        g.increment(1.0);
        Self(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Counts the hits and misses of a read by id into `r`, leaving a counter at zero as it is.
fn count_reads(r: Rec<'_>, hits: usize, misses: usize) {
    if hits > 0 {
        r.counter(&GET_HIT, &KEPT_HIT).increment(hits as u64);
    }
    if misses > 0 {
        r.counter(&GET_MISS, &KEPT_MISS).increment(misses as u64);
    }
}

/// Counts one failure of `op` with an error of `kind`.
pub(super) fn record_error(op: Operation, kind: &'static str) {
    counter!(OPERATION_ERRORS, "operation" => op.as_str(), "error_kind" => kind).increment(1);
}

/// Counts a batch's failed items by kind and returns the batch's error kind, if any: a batch
/// is "rejected" only when the breaker refused all of it, so the first kind that is not a
/// rejection wins, else the first kind.
pub(super) fn batch_outcome<T>(op: Operation, report: &BatchReport<T>) -> Option<ErrorKind> {
    let (mut first, mut worst) = (None, None);
    for o in &report.items {
        let kind = match o {
            ItemOutcome::Failed(e) => {
                record_error(op, e.kind().as_str());
                e.kind()
            }
            ItemOutcome::NotAttempted => {
                record_error(op, "not_attempted");
                ErrorKind::Unavailable
            }
            ItemOutcome::Succeeded(_) => continue,
        };
        first.get_or_insert(kind);
        if worst.is_none() && kind != ErrorKind::CircuitOpen {
            worst = Some(kind);
        }
    }
    worst.or(first)
}

impl Policy for MetricsPolicy {
    run_through_chain!(this => Chain { metrics: Some(this), ..Chain::default() });

    fn on_search_results(&self, hits: usize) {
        with_rec(|r| r.histogram(&SEARCH_RESULTS_KEY, &KEPT_SEARCH_RESULTS).record(hits as f64));
    }

    fn on_get(&self, hits: usize, misses: usize) {
        // One look-up of the recorder for both.
        with_rec(|r| count_reads(r, hits, misses));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys built at compile time are those the macros would build at run time.
    #[test]
    fn static_keys_match_the_operation_names() {
        for op in Operation::ALL {
            let k = OpKeys::of(op).expect("every operation has static keys");
            let label = |name: &str, outcome: Option<&'static str>| {
                let mut labels = vec![metrics::Label::new("operation", op.as_str())];
                if let Some(o) = outcome {
                    labels.push(metrics::Label::new("outcome", o));
                }
                Key::from_parts(name.to_owned(), labels)
            };
            assert_eq!(k.in_flight, label(OPERATIONS_IN_FLIGHT, None), "{op:?}");
            assert_eq!(k.batch_size, label(BATCH_SIZE, None), "{op:?}");
            assert_eq!(k.ok, label(OPERATION_DURATION, Some("ok")), "{op:?}");
            assert_eq!(k.error, label(OPERATION_DURATION, Some("error")), "{op:?}");
            assert_eq!(k.rejected, label(OPERATION_DURATION, Some("rejected")), "{op:?}");
        }
        assert_eq!(GET_HIT, Key::from_parts(GET_TOTAL, vec![metrics::Label::new("result", "hit")]));
        assert_eq!(
            GET_MISS,
            Key::from_parts(GET_TOTAL, vec![metrics::Label::new("result", "miss")])
        );
        assert_eq!(SEARCH_RESULTS_KEY, Key::from_name(SEARCH_RESULTS));
    }
}
