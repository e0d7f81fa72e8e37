//! The clock seam: where the breaker, the retry loop, the budget and the health checker read the
//! time and sleep.
//!
//! Production code uses [`TokioClock`], which reads [`tokio::time::Instant`] and sleeps with
//! [`tokio::time::sleep`], so tests that call `tokio::time::pause()` see exact, instantaneous
//! time. [`ManualClock`] is a clock that moves only when told to, for synchronous tests and
//! model tests that run without a runtime.

use std::fmt;
use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The future returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of monotonic time and of sleeps.
///
/// Implementations must be cheap to call: the breaker reads the time on every rejection while
/// open, and the retry budget on every call.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant; never goes backwards.
    fn now(&self) -> Instant;

    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// The clock of the tokio runtime, which honours `tokio::time::pause()` in tests.
///
/// [`Clock::sleep`] must be awaited inside a tokio runtime with its timer enabled.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves it; cloning shares the time.
///
/// Its [`Clock::sleep`] advances the clock by the requested duration and completes at once, so
/// a retry loop driven by it runs instantly and the clock shows the total time slept.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    elapsed_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock whose current instant is the real (or paused tokio) time at creation.
    pub fn new() -> Self {
        Self { start: Instant::now(), elapsed_nanos: Arc::new(AtomicU64::new(0)) }
    }

    /// Moves the clock forward by `by` (saturating after about 584 years).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // `fetch_update` retries on contention, so concurrent advances add up.
        let _ = self.elapsed_nanos.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            Some(current.saturating_add(nanos))
        });
    }

    /// The time the clock has been advanced by since it was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_nanos.load(Ordering::Acquire))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        self.advance(duration);
        Box::pin(ready(()))
    }
}

/// The default clock shared by constructors that are not given one.
pub(crate) fn default_clock() -> Arc<dyn Clock> {
    Arc::new(TokioClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now() - t0, Duration::from_millis(250));
        let shared = clock.clone();
        shared.advance(Duration::from_millis(750));
        assert_eq!(clock.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn manual_clock_sleep_advances_and_completes_at_once() {
        let clock = ManualClock::new();
        clock.sleep(Duration::from_secs(3)).await;
        assert_eq!(clock.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time_exactly() {
        let clock = TokioClock;
        let t0 = clock.now();
        clock.sleep(Duration::from_millis(1500)).await;
        assert_eq!(clock.now() - t0, Duration::from_millis(1500));
    }
}
