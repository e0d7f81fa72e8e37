//! Resilience mechanisms for engram, independent of Redis and storage.
//!
//! - [`Backoff`]: fixed, linear or exponential delays with none, full, equal or decorrelated
//!   jitter, capped, as an endless iterator ([`Backoff::delays_with`]).
//! - [`Retrier`]: the async retry loop, driven by a [`RetryPolicy`] (attempts, total-delay
//!   cap), the error's [`RetryClass`] and the [`Operation`]'s idempotency, and limited by a
//!   shared [`RetryBudget`]; [`Retrier::start`] gives the same decisions one failed attempt at a
//!   time ([`RetryLoop`]) to callers that run the loop themselves.
//! - [`CircuitBreaker`]: closed / open / half-open over a count-based sliding window, with
//!   probe permits, growing open durations and a snapshot.
//! - [`HealthChecker`]: a background probe with healthy / degraded / unhealthy hysteresis and a
//!   `watch` channel of reports.
//! - [`Observer`]: the hook every mechanism reports to; [`MetricsObserver`] turns the events
//!   into the `engram_*` metrics.
//!
//! Settings come from `engram-config` ([`RetryConfig`](engram_config::RetryConfig),
//! [`CircuitBreakerConfig`](engram_config::CircuitBreakerConfig),
//! [`HealthConfig`](engram_config::HealthConfig)), and are checked again when a mechanism is
//! built, with a typed [`InvalidSettings`] error. Time goes through the [`Clock`] seam and
//! randomness through [`RandomSource`], so tests run on paused tokio time with seeded jitter.
//! Errors of the wrapped operations tell the mechanisms what they mean by implementing
//! [`ClassifyRetry`] and [`ClassifyFailure`].
//!
//! This crate knows nothing of Redis, storage or the memory domain: it compiles and tests
//! without a server.
//!
//! ```
//! use std::sync::Arc;
//! use engram_config::{CircuitBreakerConfig, RetryConfig};
//! use engram_resilience::{
//!     BreakerError, CircuitBreaker, ClassifyFailure, ClassifyRetry, Operation, Retrier,
//!     RetryClass, TokioClock, Verdict,
//! };
//!
//! #[derive(Debug)]
//! struct Unavailable;
//! impl ClassifyRetry for Unavailable {
//!     fn retry_class(&self) -> RetryClass { RetryClass::Temporary }
//! }
//! impl ClassifyFailure for Unavailable {
//!     fn verdict(&self) -> Verdict { Verdict::Failure }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let retrier = Retrier::from_config(&RetryConfig::default(), Arc::new(TokioClock))?;
//! let breaker = CircuitBreaker::new("example", &CircuitBreakerConfig::default())?;
//! let get = Operation::idempotent("get");
//! // The breaker inside the retry loop: every attempt counts, and an open breaker stops
//! // retrying at once because its rejection is permanent.
//! let value = retrier
//!     .retry(get, |attempt| {
//!         breaker.call(move || async move { if attempt < 2 { Err(Unavailable) } else { Ok(42) } })
//!     })
//!     .await
//!     .map_err(|e| format!("{e}"))?;
//! assert_eq!(value, 42);
//! # let _: Option<BreakerError<Unavailable>> = None;
//! # Ok(())
//! # }
//! ```

mod backoff;
mod breaker;
mod budget;
mod clock;
mod error;
mod health;
pub mod metrics;
mod observe;
mod random;
mod retry;

pub use backoff::{Backoff, BackoffStrategy, Delays, Jitter};
pub use breaker::{
    BreakerError, BreakerSnapshot, BreakerState, CircuitBreaker, ClassifyFailure, Permit, Rejected,
    Verdict,
};
pub use budget::RetryBudget;
pub use clock::{Clock, ManualClock, Sleep, TokioClock};
pub use error::InvalidSettings;
pub use health::{HealthChecker, HealthCheckerBuilder, HealthError, HealthReport, HealthStatus};
pub use metrics::MetricsObserver;
pub use observe::{NoopObserver, Observer, Observers};
pub use random::{RandomSource, Rng};
pub use retry::{
    ClassifyRetry, Operation, Retrier, RetryClass, RetryError, RetryLoop, RetryPolicy,
};
