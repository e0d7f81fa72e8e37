//! The metrics adapter, seen through `metrics-util`'s debugging recorder.

use std::sync::Arc;
use std::time::Duration;

use engram_config::{CircuitBreakerConfig, HealthConfig};
use engram_resilience::metrics::{
    CIRCUIT_BREAKER_REJECTED_TOTAL, CIRCUIT_BREAKER_STATE, CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
    HEALTH_CHECK_DURATION_SECONDS, HEALTH_STATUS, RETRIES_TOTAL, RETRY_BUDGET_EXHAUSTED_TOTAL,
};
use engram_resilience::{
    Backoff, CircuitBreaker, ClassifyRetry, HealthChecker, MetricsObserver, Observer, Operation,
    Retrier, RetryBudget, RetryClass, RetryPolicy, TokioClock,
};
use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshot};

#[derive(Debug)]
struct Down;

impl ClassifyRetry for Down {
    fn retry_class(&self) -> RetryClass {
        RetryClass::Temporary
    }
}

/// One recorded metric: name, labels sorted by key, unit, value.
type Metric = (String, Vec<(String, String)>, Option<Unit>, DebugValue);

/// The recorded metrics.
fn collect(snapshot: Snapshot) -> Vec<Metric> {
    snapshot
        .into_vec()
        .into_iter()
        .map(|(key, unit, _, value)| {
            let mut labels: Vec<_> =
                key.key().labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            labels.sort();
            (key.key().name().to_owned(), labels, unit, value)
        })
        .collect()
}

fn find<'a>(metrics: &'a [Metric], name: &str, labels: &[(&str, &str)]) -> &'a DebugValue {
    let mut wanted: Vec<_> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    wanted.sort();
    metrics
        .iter()
        .find(|(n, l, _, _)| n == name && *l == wanted)
        .map(|(_, _, _, value)| value)
        .unwrap_or_else(|| panic!("no metric {name} {labels:?} in {metrics:#?}"))
}

fn gauge(value: &DebugValue) -> f64 {
    match value {
        DebugValue::Gauge(v) => v.0,
        other => panic!("expected a gauge, got {other:?}"),
    }
}

#[test]
fn the_observer_records_the_documented_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    metrics::with_local_recorder(&recorder, || {
        MetricsObserver::describe();
        let observer: Arc<dyn Observer> = Arc::new(MetricsObserver);
        runtime.block_on(async {
            // Two retries of "get", then one refusal by an empty budget.
            let policy =
                RetryPolicy::new(Backoff::fixed(Duration::from_millis(5)), 3).expect("policy");
            let retrier = Retrier::new(policy).with_observer(Arc::clone(&observer));
            let _ =
                retrier.retry(Operation::idempotent("get"), |_| async { Err::<(), _>(Down) }).await;
            let budget =
                Arc::new(RetryBudget::new(0.0, 0, Duration::from_secs(1)).expect("budget"));
            let starved =
                Retrier::new(policy).with_budget(budget).with_observer(Arc::clone(&observer));
            let _ =
                starved.retry(Operation::idempotent("put"), |_| async { Err::<(), _>(Down) }).await;

            // A breaker that opens after one failure, then rejects twice.
            let config = CircuitBreakerConfig {
                consecutive_failures: Some(1),
                ..CircuitBreakerConfig::default()
            };
            let breaker = CircuitBreaker::with_parts(
                "redis",
                &config,
                Arc::new(TokioClock),
                Arc::clone(&observer),
            )
            .expect("breaker");
            breaker.try_acquire().expect("closed").failure();
            assert!(breaker.try_acquire().is_err());
            assert!(breaker.try_acquire().is_err());

            // A health checker that succeeds twice: degraded, then healthy.
            let checker = HealthChecker::builder(&HealthConfig::default())
                .expect("health settings")
                .observer(Arc::clone(&observer))
                .spawn(|| async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok::<(), String>(())
                })
                .expect("inside a runtime");
            tokio::time::sleep(Duration::from_secs(6)).await;
            drop(checker);
        });
    });

    let metrics = collect(snapshotter.snapshot());
    assert_eq!(find(&metrics, RETRIES_TOTAL, &[("operation", "get")]), &DebugValue::Counter(2));
    assert_eq!(find(&metrics, RETRY_BUDGET_EXHAUSTED_TOTAL, &[]), &DebugValue::Counter(1));
    for (state, value) in [("closed", 0.0), ("open", 1.0), ("half_open", 0.0)] {
        let found =
            find(&metrics, CIRCUIT_BREAKER_STATE, &[("breaker", "redis"), ("state", state)]);
        assert_eq!(gauge(found), value, "state {state}");
    }
    assert_eq!(
        find(&metrics, CIRCUIT_BREAKER_TRANSITIONS_TOTAL, &[("breaker", "redis"), ("to", "open")]),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        find(&metrics, CIRCUIT_BREAKER_REJECTED_TOTAL, &[("breaker", "redis")]),
        &DebugValue::Counter(2)
    );
    for (status, value) in [("healthy", 1.0), ("degraded", 0.0), ("unhealthy", 0.0)] {
        assert_eq!(
            gauge(find(&metrics, HEALTH_STATUS, &[("status", status)])),
            value,
            "status {status}"
        );
    }
    let durations = find(&metrics, HEALTH_CHECK_DURATION_SECONDS, &[]);
    let DebugValue::Histogram(values) = durations else {
        panic!("expected a histogram, got {durations:?}");
    };
    assert_eq!(values.iter().map(|v| v.0).collect::<Vec<_>>(), [0.02, 0.02]);
    let unit = metrics
        .iter()
        .find(|(name, ..)| name == HEALTH_CHECK_DURATION_SECONDS)
        .and_then(|(_, _, unit, _)| *unit);
    assert_eq!(unit, Some(Unit::Seconds));
    // Every label value is one of the bounded names used above.
    let allowed =
        ["get", "put", "redis", "closed", "open", "half_open", "healthy", "degraded", "unhealthy"];
    for (name, labels, _, _) in &metrics {
        assert!(name.starts_with("engram_"), "{name}");
        for (_, value) in labels {
            assert!(allowed.contains(&value.as_str()), "unbounded label value {value} on {name}");
        }
    }
}
