//! The layers on paused time, in front of a scripted `FaultyBackend`.

use std::sync::Arc;
use std::time::Duration;

use engram_config::{CircuitBreakerConfig, Config, Jitter, RetryConfig};
use engram_resilience::{BreakerState, CircuitBreaker, NoopObserver, Retrier, TokioClock};
use engram_storage::layers::{MetricsPolicy, StackBuilder, TimeoutPolicy};
use engram_storage::testkit::conformance::record;
use engram_storage::testkit::{Fault, FaultyBackend, suite_schema};
use engram_storage::{
    ErrorKind, InProcessBackend, Namespace, Operation, RecordId, RetryStatus, StorageBackend,
};

struct Rig {
    faulty: Arc<FaultyBackend>,
    stack: Arc<dyn StorageBackend>,
    breaker: Option<Arc<CircuitBreaker>>,
    ns: Namespace,
}

fn retry_config(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts,
        jitter: Jitter::None,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        max_total_delay: None,
        ..RetryConfig::default()
    }
}

fn breaker_config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        minimum_calls: 4,
        window_size: 10,
        failure_rate_threshold: 0.5,
        open_duration: Duration::from_secs(5),
        half_open_probes: 1,
        ..CircuitBreakerConfig::default()
    }
}

async fn rig(retry: Option<RetryConfig>, breaker: Option<CircuitBreakerConfig>) -> Rig {
    let inner = Arc::new(InProcessBackend::new());
    let schema = suite_schema();
    inner.ensure_index(&schema).await.expect("index");
    let faulty = Arc::new(FaultyBackend::new(inner));
    let mut b = StackBuilder::new(faulty.clone())
        .timeout(TimeoutPolicy::new(Duration::from_millis(200)))
        .metrics(MetricsPolicy::new(Duration::from_millis(100)));
    if let Some(r) = retry {
        b = b.retry(Arc::new(Retrier::from_config(&r, Arc::new(TokioClock)).expect("retrier")));
    }
    if let Some(c) = breaker {
        b = b.circuit_breaker(Arc::new(CircuitBreaker::new("test", &c).expect("breaker")));
    }
    let breaker = b.breaker().cloned();
    Rig { faulty, stack: b.build(), breaker, ns: Namespace::new("layers").expect("ns") }
}

#[tokio::test(start_paused = true)]
async fn retries_temporary_errors_and_counts_attempts() {
    let r = rig(Some(retry_config(3)), None).await;
    r.faulty.script([Fault::Fail(ErrorKind::Unavailable), Fault::Fail(ErrorKind::Backpressure)]);
    assert_eq!(r.stack.count(&r.ns).await.expect("third attempt succeeds"), 0);
    assert_eq!(r.faulty.calls(Operation::Count), 3);
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried() {
    let r = rig(Some(retry_config(5)), None).await;
    r.faulty.script([Fault::Fail(ErrorKind::OutOfMemory)]);
    let e = r.stack.count(&r.ns).await.expect_err("fails");
    assert_eq!((e.kind(), e.status()), (ErrorKind::OutOfMemory, RetryStatus::Permanent));
    assert_eq!(r.faulty.calls(Operation::Count), 1);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_make_the_error_persistent() {
    let r = rig(Some(retry_config(3)), None).await;
    r.faulty.script(vec![Fault::Fail(ErrorKind::Unavailable); 5]);
    let e = r.stack.count(&r.ns).await.expect_err("fails");
    assert_eq!((e.kind(), e.status()), (ErrorKind::Unavailable, RetryStatus::Persistent));
    assert_eq!(r.faulty.calls(Operation::Count), 3);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_retried_only_for_idempotent_operations() {
    let r = rig(Some(retry_config(3)), None).await;
    r.faulty.script([Fault::Hang]);
    let started = tokio::time::Instant::now();
    assert_eq!(r.stack.count(&r.ns).await.expect("retried after the timeout"), 0);
    assert_eq!(r.faulty.calls(Operation::Count), 2);
    assert!(started.elapsed() >= Duration::from_millis(200), "the timeout fired after 200ms");

    // touch counts accesses: after a timeout it may have run, so it is not run again.
    r.faulty.script([Fault::Hang]);
    let e = r
        .stack
        .touch(&r.ns, &RecordId::new("x").expect("id"), engram_storage::Timestamp(1), None)
        .await
        .expect_err("times out");
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(r.faulty.calls(Operation::Touch), 1);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_rejects_without_io_and_recovers() {
    let r = rig(None, Some(breaker_config())).await;
    let breaker = r.breaker.clone().expect("breaker");
    r.faulty.script(vec![Fault::Fail(ErrorKind::Unavailable); 4]);
    for _ in 0..4 {
        assert_eq!(
            r.stack.count(&r.ns).await.expect_err("scripted").kind(),
            ErrorKind::Unavailable
        );
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let e = r.stack.count(&r.ns).await.expect_err("rejected");
    assert_eq!((e.kind(), e.status()), (ErrorKind::CircuitOpen, RetryStatus::Permanent));
    assert_eq!(r.faulty.calls(Operation::Count), 4, "a rejected call reaches no backend");
    let batch = r.stack.put_batch(vec![record(&r.ns, "a", [1.0; 4])]).await;
    assert_eq!(batch.items[0].err().map(|e| e.kind()), Some(ErrorKind::CircuitOpen));
    assert_eq!(r.faulty.calls(Operation::Put), 0);

    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(r.stack.count(&r.ns).await.expect("the probe passes"), 0);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_stops_the_retry_loop_at_once() {
    let r = rig(Some(retry_config(10)), Some(breaker_config())).await;
    r.faulty.script(vec![Fault::Fail(ErrorKind::Unavailable); 20]);
    let e = r.stack.count(&r.ns).await.expect_err("fails");
    assert_eq!(e.kind(), ErrorKind::CircuitOpen, "{e}");
    // Retry is outside the breaker: each attempt counted, and the 5th met an open breaker.
    assert_eq!(r.faulty.calls(Operation::Count), 4);
    assert_eq!(r.breaker.expect("breaker").snapshot().calls_in_window, 4);
}

#[tokio::test(start_paused = true)]
async fn a_batch_retries_only_the_failed_items() {
    let r = rig(Some(retry_config(3)), None).await;
    let records: Vec<_> = ["a", "b", "c"].iter().map(|n| record(&r.ns, n, [1.0; 4])).collect();
    r.faulty.script([Fault::FailItems(vec![
        None,
        Some(ErrorKind::Unavailable),
        Some(ErrorKind::InvalidInput),
    ])]);
    let report = r.stack.put_batch(records).await;
    assert!(report.items[0].ok().is_some() && report.items[1].ok().is_some(), "{:?}", report.items);
    assert_eq!(report.items[2].err().map(|e| e.kind()), Some(ErrorKind::InvalidInput));
    assert_eq!(r.faulty.batch_sizes(Operation::Put), [3, 1], "only the retryable item is re-sent");
    assert_eq!(r.stack.count(&r.ns).await.expect("count"), 2);

    r.faulty.script(vec![Fault::Fail(ErrorKind::Unavailable); 3]);
    let report = r.stack.put_batch(vec![record(&r.ns, "d", [1.0; 4])]).await;
    let e = report.items[0].err().expect("fails");
    assert_eq!(e.status(), RetryStatus::Persistent, "{e}");
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_amplification_during_an_outage() {
    let mut config = retry_config(3);
    config.budget.ratio = 0.1;
    config.budget.min_per_second = 1;
    let r = rig(Some(config), None).await;
    let logical: u32 = 1_000;
    r.faulty.script(vec![Fault::Fail(ErrorKind::Unavailable); 10_000]);
    for _ in 0..logical {
        let _ = r.stack.count(&r.ns).await;
    }
    let attempts = r.faulty.calls(Operation::Count);
    let amplification = attempts as f64 / f64::from(logical);
    // Without a budget, 3 attempts each would make 3.0; the budget allows 10% plus a small floor.
    assert!(amplification <= 1.15, "amplification {amplification} ({attempts} attempts)");
    assert!(attempts > logical as usize, "some retries are allowed");
}

#[tokio::test(start_paused = true)]
async fn from_config_builds_every_layer() {
    let inner = Arc::new(InProcessBackend::new());
    let builder = StackBuilder::from_config(
        inner,
        &Config::default(),
        "redis",
        Arc::new(TokioClock),
        Arc::new(NoopObserver),
    )
    .expect("default config builds");
    assert!(builder.breaker().is_some());
    let stack = builder.build();
    let e = stack.count(&Namespace::new("x").expect("ns")).await.expect_err("no index yet");
    assert_eq!(e.kind(), ErrorKind::IndexMissing);
}

/// A metric's value in a debugging-recorder snapshot, by name and labels.
fn metric<'a>(
    snapshot: &'a [Entry],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a metrics_util::debugging::DebugValue> {
    snapshot.iter().find_map(|(key, _, _, value)| {
        let k = key.key();
        let matches = k.name() == name
            && labels
                .iter()
                .all(|(l, v)| k.labels().any(|label| label.key() == *l && label.value() == *v))
            && k.labels().count() == labels.len();
        matches.then_some(value)
    })
}

/// One metric in a snapshot of a debugging recorder.
type Entry = (
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    metrics_util::debugging::DebugValue,
);

/// Runs `body` on a current-thread runtime with paused time, with a debugging recorder in
/// place, and returns what was recorded.
fn recorded<Fut: std::future::Future<Output = ()>>(body: impl FnOnce() -> Fut) -> Vec<Entry> {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("rt");
        rt.block_on(body());
    });
    snapshotter.snapshot().into_vec()
}

#[test]
fn metrics_show_what_the_caller_sees() {
    use metrics_util::debugging::DebugValue;
    let snapshot = recorded(|| async {
        let inner = Arc::new(InProcessBackend::new());
        inner.ensure_index(&suite_schema()).await.expect("index");
        let faulty = Arc::new(FaultyBackend::new(inner));
        let retrier = Retrier::from_config(&retry_config(3), Arc::new(TokioClock))
            .expect("retrier")
            .with_observer(Arc::new(engram_resilience::MetricsObserver));
        let stack = StackBuilder::new(faulty.clone())
            .timeout(TimeoutPolicy::new(Duration::from_millis(200)))
            .retry(Arc::new(retrier))
            .metrics(MetricsPolicy::new(Duration::from_millis(100)))
            .build();
        let ns = Namespace::new("metrics").expect("ns");
        faulty.script([Fault::Fail(ErrorKind::Unavailable)]);
        stack.count(&ns).await.expect("count after one retry");
        let report =
            stack.put_batch(vec![record(&ns, "a", [1.0; 4]), record(&ns, "b", [1.0; 4])]).await;
        assert!(report.all_succeeded());
        let ids = [RecordId::new("a").expect("id"), RecordId::new("zz").expect("id")];
        let _ = stack.get_batch(&ns, &ids).await;
        let hits = stack
            .search(&engram_storage::VectorQuery::new(ns.clone(), vec![1.0; 4], 5))
            .await
            .expect("search");
        assert_eq!(hits.len(), 2);
        faulty.script([Fault::Fail(ErrorKind::OutOfMemory)]);
        let _ = stack.count(&ns).await;
    });
    let histogram_len = |name: &str, labels: &[(&str, &str)]| match metric(&snapshot, name, labels)
    {
        Some(DebugValue::Histogram(v)) => v.len(),
        other => panic!("{name} {labels:?}: {other:?}"),
    };
    let counter = |name: &str, labels: &[(&str, &str)]| match metric(&snapshot, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {labels:?}: {other:?}"),
    };
    // The outermost layer sees one successful count although two attempts were made.
    assert_eq!(
        histogram_len(
            "engram_operation_duration_seconds",
            &[("operation", "count"), ("outcome", "ok")]
        ),
        1
    );
    assert_eq!(
        histogram_len(
            "engram_operation_duration_seconds",
            &[("operation", "count"), ("outcome", "error")]
        ),
        1
    );
    assert_eq!(counter("engram_retries_total", &[("operation", "count")]), 1);
    assert_eq!(
        counter(
            "engram_operation_errors_total",
            &[("operation", "count"), ("error_kind", "out_of_memory")]
        ),
        1
    );
    assert_eq!(counter("engram_get_total", &[("result", "hit")]), 1);
    assert_eq!(counter("engram_get_total", &[("result", "miss")]), 1);
    match metric(&snapshot, "engram_batch_size", &[("operation", "put")]) {
        Some(DebugValue::Histogram(v)) => {
            assert_eq!(v.iter().map(|x| x.into_inner()).collect::<Vec<_>>(), [2.0])
        }
        other => panic!("batch size: {other:?}"),
    }
    match metric(&snapshot, "engram_search_results", &[]) {
        Some(DebugValue::Histogram(v)) => {
            assert_eq!(v.iter().map(|x| x.into_inner()).collect::<Vec<_>>(), [2.0])
        }
        other => panic!("search results: {other:?}"),
    }
    match metric(&snapshot, "engram_operations_in_flight", &[("operation", "count")]) {
        Some(DebugValue::Gauge(g)) => {
            assert_eq!(g.into_inner(), 0.0, "in-flight gauge returns to zero")
        }
        other => panic!("in flight: {other:?}"),
    }
}

/// A call the backend bounds itself within the layer's limit (as fred's per-command timeout
/// bounds a Redis read) gets no timer of the layer's: it ends at the backend's limit, with the
/// backend's error. A backend limit beyond the layer's leaves the layer's timer in place.
#[tokio::test(start_paused = true)]
async fn the_timeout_layer_trusts_a_backend_limit_only_within_its_own() {
    let layer = Duration::from_millis(200);
    for (own, ends_after, by_backend) in [
        (Duration::from_millis(120), Duration::from_millis(120), true),
        (Duration::from_millis(900), layer, false),
    ] {
        let inner = Arc::new(InProcessBackend::new());
        inner.ensure_index(&suite_schema()).await.expect("index");
        let faulty = Arc::new(FaultyBackend::new(inner).with_own_limit(own));
        let stack = StackBuilder::new(faulty.clone())
            .timeout(TimeoutPolicy::new(layer).with_per_item(Duration::ZERO))
            .build();
        let ns = Namespace::new("limits").expect("ns");
        let id = RecordId::new("a").expect("id");

        faulty.script([Fault::Hang]);
        let started = tokio::time::Instant::now();
        let e = stack.count(&ns).await.expect_err("the hung call ends");
        assert_eq!(started.elapsed(), ends_after, "count, own limit {own:?}");
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(e.to_string().contains("own limit"), by_backend, "{e}");

        faulty.script([Fault::Hang]);
        let started = tokio::time::Instant::now();
        let report = stack.get_batch(&ns, std::slice::from_ref(&id)).await;
        assert_eq!(started.elapsed(), ends_after, "get, own limit {own:?}");
        let e = report.into_result(Operation::Get).expect_err("the hung read ends");
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(e.to_string().contains("own limit"), by_backend, "{e}");
    }
}

/// Without the metrics layer the stack records no storage metric, even for a batch whose item
/// failed (the other layers count nothing under the metrics layer's names).
#[test]
fn a_stack_without_the_metrics_layer_records_no_storage_metric() {
    let snapshot = recorded(|| async {
        let inner = Arc::new(InProcessBackend::new());
        inner.ensure_index(&suite_schema()).await.expect("index");
        let faulty = Arc::new(FaultyBackend::new(inner));
        let retrier =
            Retrier::from_config(&retry_config(1), Arc::new(TokioClock)).expect("retrier");
        let stack = StackBuilder::new(faulty.clone())
            .timeout(TimeoutPolicy::new(Duration::from_millis(200)))
            .retry(Arc::new(retrier))
            .build();
        let ns = Namespace::new("unmetered").expect("ns");
        faulty.script([Fault::FailItems(vec![None, Some(ErrorKind::OutOfMemory)])]);
        let report =
            stack.put_batch(vec![record(&ns, "a", [1.0; 4]), record(&ns, "b", [1.0; 4])]).await;
        assert!(report.items[0].ok().is_some(), "{:?}", report.items);
        assert!(report.items[1].ok().is_none(), "{:?}", report.items);
        faulty.script([Fault::Fail(ErrorKind::OutOfMemory)]);
        assert!(stack.count(&ns).await.is_err());
    });
    let names: Vec<String> =
        snapshot.iter().map(|(key, _, _, _)| key.key().name().to_owned()).collect();
    for name in engram_storage::layers::metric_names() {
        assert!(!names.iter().any(|n| n == name), "{name} recorded without metrics: {names:?}");
    }
}

/// Without a timer of ours to arm, a read by id runs inline (`Policy::inline`): a failed item
/// is retried alone, the breaker still counts and sheds, and the caller's view is recorded
/// once per call, reads by hit and miss included.
#[test]
fn inline_reads_retry_failed_items_shed_when_open_and_record_once() {
    use metrics_util::debugging::DebugValue;
    let snapshot = recorded(|| async {
        let inner = Arc::new(InProcessBackend::new());
        inner.ensure_index(&suite_schema()).await.expect("index");
        let faulty = Arc::new(FaultyBackend::new(inner));
        let breaker = Arc::new(CircuitBreaker::new("inline", &breaker_config()).expect("breaker"));
        let stack = StackBuilder::new(faulty.clone())
            .retry(Arc::new(
                Retrier::from_config(&retry_config(3), Arc::new(TokioClock)).expect("retrier"),
            ))
            .circuit_breaker(breaker.clone())
            .metrics(MetricsPolicy::new(Duration::from_millis(100)))
            .build();
        let ns = Namespace::new("inline").expect("ns");
        let report =
            stack.put_batch(vec![record(&ns, "a", [1.0; 4]), record(&ns, "b", [1.0; 4])]).await;
        assert!(report.all_succeeded());
        let ids = ["a", "b", "zz"].map(|i| RecordId::new(i).expect("id"));
        faulty.script([Fault::FailItems(vec![None, Some(ErrorKind::Unavailable), None])]);
        let report = stack.get_batch(&ns, &ids).await;
        let found: Vec<bool> =
            report.items.iter().map(|o| matches!(o.ok(), Some(Some(_)))).collect();
        assert_eq!(found, [true, true, false], "{report:?}");
        assert_eq!(faulty.batch_sizes(Operation::Get), [3, 1]);

        // Every attempt fails until the breaker opens; then reads are shed at once.
        faulty.script(std::iter::repeat_n(Fault::Fail(ErrorKind::Unavailable), 12));
        while breaker.state() != BreakerState::Open {
            let report = stack.get_batch(&ns, &ids[..1]).await;
            assert!(report.items[0].ok().is_none());
        }
        let attempts = faulty.calls(Operation::Get);
        let report = stack.get_batch(&ns, &ids[..1]).await;
        match &report.items[0] {
            engram_storage::ItemOutcome::Failed(e) => assert_eq!(e.kind(), ErrorKind::CircuitOpen),
            other => panic!("a read through an open breaker: {other:?}"),
        }
        assert_eq!(faulty.calls(Operation::Get), attempts, "a shed read reaches the backend");
    });
    let value = |name: &str, labels: &[(&str, &str)]| metric(&snapshot, name, labels);
    let histogram_len = |name: &str, labels: &[(&str, &str)]| match value(name, labels) {
        Some(DebugValue::Histogram(v)) => v.len(),
        other => panic!("{name} {labels:?}: {other:?}"),
    };
    // One successful get (its retry inside it). Two shed: the one whose retry met the breaker
    // just opened (three failed attempts, then a fourth opens it) and the one after.
    let ok = [("operation", "get"), ("outcome", "ok")];
    assert_eq!(histogram_len("engram_operation_duration_seconds", &ok), 1);
    let rejected = [("operation", "get"), ("outcome", "rejected")];
    assert_eq!(histogram_len("engram_operation_duration_seconds", &rejected), 2);
    assert!(matches!(
        value("engram_get_total", &[("result", "hit")]),
        Some(DebugValue::Counter(2))
    ));
    assert!(matches!(
        value("engram_get_total", &[("result", "miss")]),
        Some(DebugValue::Counter(1))
    ));
    assert!(matches!(
        value("engram_operations_in_flight", &[("operation", "get")]),
        Some(DebugValue::Gauge(g)) if g.into_inner() == 0.0
    ));
}
