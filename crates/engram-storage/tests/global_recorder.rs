//! The metrics layer with a global recorder installed after the stack is built, as a process
//! of its own (a global recorder is installed once per process): every call is recorded once,
//! before and after the layer keeps the recorder's handles, and a recorder local to a thread
//! still receives its own calls, not the global one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_config::RetryConfig;
use engram_resilience::{Retrier, TokioClock};
use engram_storage::layers::{MetricsPolicy, StackBuilder, keeps_global_handles};
use engram_storage::testkit::conformance::record;
use engram_storage::testkit::suite_schema;
use engram_storage::{InProcessBackend, ItemOutcome, Namespace, RecordId, StorageBackend};
use metrics::{SharedString, Unit};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// Reads of one hit and one miss, `n` times.
fn reads(rt: &tokio::runtime::Runtime, stack: &dyn StorageBackend, ns: &Namespace, n: usize) {
    let ids = [RecordId::new("a").expect("id"), RecordId::new("absent").expect("id")];
    for _ in 0..n {
        let report = rt.block_on(stack.get_batch(ns, &ids));
        assert_eq!(report.items.len(), 2);
    }
}

/// The metrics of one snapshot (which drains histograms: take one per check).
type Seen = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

/// The value of the metric `name` whose labels include every one of `labels`: a counter's
/// count, a gauge's value, a histogram's number of samples.
fn value(seen: &Seen, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for (key, _, _, v) in seen {
        let key = key.key();
        let labelled =
            labels.iter().all(|(k, val)| key.labels().any(|l| l.key() == *k && l.value() == *val));
        if key.name() != name || !labelled {
            continue;
        }
        total += match v {
            DebugValue::Counter(c) => *c as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(h) => h.len() as f64,
        };
    }
    total
}

#[test]
fn a_global_recorder_installed_late_sees_every_call_and_locals_keep_their_own() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("rt");
    let ns = Namespace::new("global").expect("ns");
    let inner = Arc::new(InProcessBackend::new());
    rt.block_on(async {
        inner.ensure_index(&suite_schema()).await.expect("index");
        let report = inner.put_batch(vec![record(&ns, "a", [1.0, 0.0, 0.0, 0.0])]).await;
        assert!(report.items.iter().all(|o| matches!(o, ItemOutcome::Succeeded(_))));
    });
    let retrier =
        Retrier::from_config(&RetryConfig::default(), Arc::new(TokioClock)).expect("retrier");
    let stack = StackBuilder::new(inner)
        .metrics(MetricsPolicy::new(Duration::from_secs(1)))
        .retry(Arc::new(retrier))
        .build();

    // No recorder yet: the calls go nowhere, and there is nothing to keep.
    reads(&rt, stack.as_ref(), &ns, 3);
    assert!(!keeps_global_handles());

    let global = DebuggingRecorder::new();
    let seen = global.snapshotter();
    global.install().expect("the only global recorder of this process");

    // Recorded through the registry until the layer knows the global recorder, then through
    // the handles it keeps.
    let mut calls = 0u32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !keeps_global_handles() {
        assert!(Instant::now() < deadline, "the global recorder was never recognised");
        reads(&rt, stack.as_ref(), &ns, 1);
        calls += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    reads(&rt, stack.as_ref(), &ns, 7);
    calls += 7;

    // A recorder local to this thread gets its calls, the global one none of them.
    let local = DebuggingRecorder::new();
    let local_seen = local.snapshotter();
    metrics::with_local_recorder(&local, || reads(&rt, stack.as_ref(), &ns, 2));

    let get = [("operation", "get")];
    let ok = [("operation", "get"), ("outcome", "ok")];
    for (snapshotter, n) in [(&seen, calls), (&local_seen, 2)] {
        let (n, seen) = (f64::from(n), snapshotter.snapshot().into_vec());
        assert_eq!(value(&seen, "engram_get_total", &[("result", "hit")]), n);
        assert_eq!(value(&seen, "engram_get_total", &[("result", "miss")]), n);
        assert_eq!(value(&seen, "engram_operations_in_flight", &get), 0.0);
        assert_eq!(value(&seen, "engram_operation_duration_seconds", &ok), n);
        assert_eq!(value(&seen, "engram_batch_size", &get), n);
    }
}
