//! The observer hook: how the mechanisms report what they do, for metrics and logs.
//!
//! Every method has an empty default, so an observer implements only what it needs.
//! [`crate::MetricsObserver`] records them as the metrics of the observability guide.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::breaker::BreakerState;
use crate::health::HealthStatus;

/// Receives the events of retries, the retry budget, circuit breakers and the health checker.
///
/// Methods are called synchronously on the hot path (breaker transitions while the breaker's
/// lock is held, so that observers see transitions in order): keep them quick, never block, and
/// never call back into the breaker that reports.
pub trait Observer: Send + Sync + fmt::Debug {
    /// A retry of `operation` is about to wait `delay` before attempt number `attempt` (2 for
    /// the first retry).
    fn retry(&self, operation: &'static str, attempt: u32, delay: Duration) {
        let _ = (operation, attempt, delay);
    }

    /// The retry budget refused a retry of `operation`.
    fn retry_budget_exhausted(&self, operation: &'static str) {
        let _ = operation;
    }

    /// The breaker named `breaker` was created in `state`.
    fn breaker_created(&self, breaker: &'static str, state: BreakerState) {
        let _ = (breaker, state);
    }

    /// The breaker named `breaker` went from `from` to `to`.
    fn breaker_transition(&self, breaker: &'static str, from: BreakerState, to: BreakerState) {
        let _ = (breaker, from, to);
    }

    /// The breaker named `breaker` rejected a call while in `state` (open or half-open).
    fn breaker_rejected(&self, breaker: &'static str, state: BreakerState) {
        let _ = (breaker, state);
    }

    /// A health probe finished (or timed out) after `duration`; `healthy` tells which.
    fn health_check(&self, duration: Duration, healthy: bool) {
        let _ = (duration, healthy);
    }

    /// The health status changed from `from` (`None` when the checker starts) to `to`.
    fn health_status(&self, from: Option<HealthStatus>, to: HealthStatus) {
        let _ = (from, to);
    }
}

/// Forwards every event to each of its observers, in order (for example to the metrics and to
/// a store's own statistics).
#[derive(Debug, Clone, Default)]
pub struct Observers(pub Vec<Arc<dyn Observer>>);

impl Observer for Observers {
    fn retry(&self, operation: &'static str, attempt: u32, delay: Duration) {
        self.0.iter().for_each(|o| o.retry(operation, attempt, delay));
    }

    fn retry_budget_exhausted(&self, operation: &'static str) {
        self.0.iter().for_each(|o| o.retry_budget_exhausted(operation));
    }

    fn breaker_created(&self, breaker: &'static str, state: BreakerState) {
        self.0.iter().for_each(|o| o.breaker_created(breaker, state));
    }

    fn breaker_transition(&self, breaker: &'static str, from: BreakerState, to: BreakerState) {
        self.0.iter().for_each(|o| o.breaker_transition(breaker, from, to));
    }

    fn breaker_rejected(&self, breaker: &'static str, state: BreakerState) {
        self.0.iter().for_each(|o| o.breaker_rejected(breaker, state));
    }

    fn health_check(&self, duration: Duration, healthy: bool) {
        self.0.iter().for_each(|o| o.health_check(duration, healthy));
    }

    fn health_status(&self, from: Option<HealthStatus>, to: HealthStatus) {
        self.0.iter().for_each(|o| o.health_status(from, to));
    }
}

/// An observer that ignores every event; the default of every mechanism.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {}

/// The default observer shared by constructors that are not given one.
pub(crate) fn noop() -> Arc<dyn Observer> {
    Arc::new(NoopObserver)
}

#[cfg(test)]
pub(crate) mod recording {
    //! An observer that records events, for tests.

    use std::sync::Mutex;

    use super::*;

    /// One recorded event.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) enum Event {
        Retry(&'static str, u32, Duration),
        BudgetExhausted(&'static str),
        Created(&'static str, BreakerState),
        Transition(&'static str, BreakerState, BreakerState),
        Rejected(&'static str, BreakerState),
        Check(Duration, bool),
        Status(Option<HealthStatus>, HealthStatus),
    }

    /// Records every event in order.
    #[derive(Debug, Default)]
    pub(crate) struct Recorder(Mutex<Vec<Event>>);

    impl Recorder {
        pub(crate) fn events(&self) -> Vec<Event> {
            self.0.lock().unwrap().clone()
        }

        fn push(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    impl Observer for Recorder {
        fn retry(&self, operation: &'static str, attempt: u32, delay: Duration) {
            self.push(Event::Retry(operation, attempt, delay));
        }
        fn retry_budget_exhausted(&self, operation: &'static str) {
            self.push(Event::BudgetExhausted(operation));
        }
        fn breaker_created(&self, breaker: &'static str, state: BreakerState) {
            self.push(Event::Created(breaker, state));
        }
        fn breaker_transition(&self, breaker: &'static str, from: BreakerState, to: BreakerState) {
            self.push(Event::Transition(breaker, from, to));
        }
        fn breaker_rejected(&self, breaker: &'static str, state: BreakerState) {
            self.push(Event::Rejected(breaker, state));
        }
        fn health_check(&self, duration: Duration, healthy: bool) {
            self.push(Event::Check(duration, healthy));
        }
        fn health_status(&self, from: Option<HealthStatus>, to: HealthStatus) {
            self.push(Event::Status(from, to));
        }
    }
}
