//! The retry loop around the circuit breaker, as the storage layers stack them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use engram_config::CircuitBreakerConfig;
use engram_resilience::{
    Backoff, BreakerError, BreakerState, CircuitBreaker, ClassifyFailure, ClassifyRetry, Operation,
    Retrier, RetryClass, RetryError, RetryPolicy, Verdict,
};

#[derive(Debug, PartialEq)]
struct Unavailable;

impl ClassifyRetry for Unavailable {
    fn retry_class(&self) -> RetryClass {
        RetryClass::Temporary
    }
}

impl ClassifyFailure for Unavailable {
    fn verdict(&self) -> Verdict {
        Verdict::Failure
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_stops_retrying_at_once() {
    let breaker = CircuitBreaker::new(
        "dependency",
        &CircuitBreakerConfig {
            consecutive_failures: Some(2),
            open_duration: Duration::from_secs(10),
            ..CircuitBreakerConfig::default()
        },
    )
    .expect("valid settings");
    let policy =
        RetryPolicy::new(Backoff::fixed(Duration::from_millis(10)), 5).expect("valid policy");
    let retrier = Retrier::new(policy);
    let ran = Arc::new(AtomicU32::new(0));
    let start = tokio::time::Instant::now();
    let result = retrier
        .retry(Operation::idempotent("get"), |_| {
            breaker.call(|| {
                ran.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(Unavailable) }
            })
        })
        .await;
    let Err(RetryError::NotRetryable { error: BreakerError::Rejected(rejected), attempts }) =
        result
    else {
        panic!("expected a rejection by the breaker, got {result:?}");
    };
    assert_eq!(attempts, 3);
    assert_eq!(rejected.state(), BreakerState::Open);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        2,
        "the dependency saw only the attempts before the breaker opened"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_hand_back_the_last_error() {
    let policy =
        RetryPolicy::new(Backoff::fixed(Duration::from_millis(10)), 3).expect("valid policy");
    let result = Retrier::new(policy)
        .retry(Operation::idempotent("get"), |_| async { Err::<(), _>(Unavailable) })
        .await;
    let error = result.expect_err("every attempt fails");
    assert!(error.is_persistent());
    assert_eq!(error.attempts(), 3);
    assert_eq!(error.into_error(), Unavailable);
}
