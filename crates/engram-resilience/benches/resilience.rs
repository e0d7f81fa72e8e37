//! Micro-benchmarks of the hot paths: breaker admit + record while closed, and the retry
//! wrapper around an operation that succeeds at once.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use engram_config::{CircuitBreakerConfig, RetryConfig};
use engram_resilience::{
    Backoff, CircuitBreaker, ClassifyRetry, Jitter, Operation, Retrier, RetryClass, Rng, TokioClock,
};

#[derive(Debug)]
struct Never;

impl ClassifyRetry for Never {
    fn retry_class(&self) -> RetryClass {
        RetryClass::Temporary
    }
}

fn breaker(c: &mut Criterion) {
    let breaker = CircuitBreaker::new("bench", &CircuitBreakerConfig::default())
        .expect("default settings are valid");
    c.bench_function("breaker_admit_record_closed", |b| {
        b.iter(|| {
            if let Ok(permit) = black_box(&breaker).try_acquire() {
                permit.success();
            }
        });
    });
    // During an outage rejection is the hot path: it reads the clock but takes no lock.
    let open = CircuitBreaker::new(
        "bench_open",
        &CircuitBreakerConfig {
            consecutive_failures: Some(1),
            open_duration: Duration::from_secs(3_600),
            ..CircuitBreakerConfig::default()
        },
    )
    .expect("valid settings");
    if let Ok(permit) = open.try_acquire() {
        permit.failure();
    }
    c.bench_function("breaker_reject_open", |b| {
        b.iter(|| black_box(&open).try_acquire().is_err());
    });
}

fn retry(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds");
    let retrier = Retrier::from_config(&RetryConfig::default(), Arc::new(TokioClock))
        .expect("default settings are valid");
    let get = Operation::idempotent("get");
    let mut group = c.benchmark_group("retry_first_try_success");
    group.bench_function("bare_future", |b| {
        b.iter(|| runtime.block_on(async { black_box(Ok::<u64, Never>(black_box(7))) }));
    });
    group.bench_function("with_retrier_and_budget", |b| {
        b.iter(|| {
            runtime.block_on(retrier.retry(get, |_| async { Ok::<u64, Never>(black_box(7)) }))
        });
    });
    group.finish();
}

fn backoff(c: &mut Criterion) {
    let backoff = Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2), 2.0)
        .expect("valid settings")
        .with_jitter(Jitter::Full);
    c.bench_function("backoff_full_jitter_10_delays", |b| {
        b.iter(|| backoff.delays_with(Rng::seeded(black_box(1))).take(10).sum::<Duration>());
    });
}

criterion_group!(benches, breaker, retry, backoff);
criterion_main!(benches);
