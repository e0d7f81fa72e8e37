//! The health checker: runs an async probe periodically in a background task and keeps a
//! report with hysteresis, so one slow probe does not flip a dependency to unhealthy and one
//! lucky probe does not flip it back.
//!
//! The details are in the documentation of [`HealthChecker`].

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use engram_config::HealthConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clock::{Clock, default_clock};
use crate::error::{InvalidSettings, ensure};
use crate::observe::{Observer, noop};

/// The health of a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// The last `healthy_threshold` probes succeeded.
    Healthy,
    /// Some recent probes failed, or too few have succeeded since the start or since an outage.
    Degraded,
    /// The last `unhealthy_threshold` probes failed (and none has succeeded since).
    Unhealthy,
}

impl HealthStatus {
    /// The status as a metric label value: `healthy`, `degraded` or `unhealthy`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// Every status, in label order.
    pub const ALL: [Self; 3] = [Self::Healthy, Self::Degraded, Self::Unhealthy];
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The health checker's latest report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthReport {
    /// The current status.
    pub status: HealthStatus,
    /// When the status last changed (or the checker started).
    pub since: Instant,
    /// How long the last probe took (the timeout when it timed out).
    pub last_latency: Option<Duration>,
    /// The last failed probe's error text, cleared by a success.
    pub last_error: Option<String>,
    /// Probes run since the checker started.
    pub checks_run: u64,
    /// Successful probes in a row.
    pub consecutive_successes: u32,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
}

impl HealthReport {
    /// The report of a checker that has not probed yet: degraded, since `now`.
    pub fn initial(now: Instant) -> Self {
        Self {
            status: HealthStatus::Degraded,
            since: now,
            last_latency: None,
            last_error: None,
            checks_run: 0,
            consecutive_successes: 0,
            consecutive_failures: 0,
        }
    }

    /// Updates the report with one probe's outcome; returns whether the status changed.
    fn apply(
        &mut self,
        thresholds: Thresholds,
        outcome: Result<(), String>,
        latency: Duration,
        now: Instant,
    ) -> bool {
        self.checks_run += 1;
        self.last_latency = Some(latency);
        let next = match outcome {
            Ok(()) => {
                self.last_error = None;
                self.consecutive_failures = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                if self.consecutive_successes >= thresholds.healthy {
                    HealthStatus::Healthy
                } else {
                    self.status
                }
            }
            Err(error) => {
                self.last_error = Some(error);
                self.consecutive_successes = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= thresholds.unhealthy {
                    HealthStatus::Unhealthy
                } else if self.status == HealthStatus::Healthy {
                    HealthStatus::Degraded
                } else {
                    self.status
                }
            }
        };
        let changed = next != self.status;
        if changed {
            self.status = next;
            self.since = now;
        }
        changed
    }
}

#[derive(Debug, Clone, Copy)]
struct Thresholds {
    healthy: u32,
    unhealthy: u32,
}

/// Validated settings of the checker.
#[derive(Debug, Clone, Copy)]
struct Settings {
    interval: Duration,
    timeout: Duration,
    thresholds: Thresholds,
}

impl TryFrom<&HealthConfig> for Settings {
    type Error = InvalidSettings;

    fn try_from(c: &HealthConfig) -> Result<Self, Self::Error> {
        ensure(!c.interval.is_zero(), "interval", || "(0s) must be above zero".to_owned())?;
        ensure(!c.timeout.is_zero(), "timeout", || "(0s) must be above zero".to_owned())?;
        ensure(c.healthy_threshold >= 1, "healthy_threshold", || {
            "(0) must be at least 1".to_owned()
        })?;
        ensure(c.unhealthy_threshold >= 1, "unhealthy_threshold", || {
            "(0) must be at least 1".to_owned()
        })?;
        Ok(Self {
            interval: c.interval,
            timeout: c.timeout,
            thresholds: Thresholds {
                healthy: c.healthy_threshold,
                unhealthy: c.unhealthy_threshold,
            },
        })
    }
}

/// The checker could not start its background task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// A setting was out of range.
    #[error(transparent)]
    InvalidSettings(#[from] InvalidSettings),
    /// `spawn` was called outside a tokio runtime.
    #[error("the health checker must be started inside a tokio runtime")]
    NoRuntime,
}

/// Builds a [`HealthChecker`]; see [`HealthChecker::builder`].
#[derive(Debug)]
pub struct HealthCheckerBuilder {
    settings: Settings,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn Observer>,
}

impl HealthCheckerBuilder {
    /// Reads time and sleeps on `clock` instead of the tokio clock.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Reports probes and status changes to `observer`.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Starts the background task, which runs `probe` at once and then every interval. A probe
    /// succeeds with `Ok(())`; the `Display` of its error becomes the report's `last_error`.
    ///
    /// # Errors
    /// [`HealthError::NoRuntime`] when called outside a tokio runtime.
    pub fn spawn<P, Fut, E>(self, probe: P) -> Result<HealthChecker, HealthError>
    where
        P: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| HealthError::NoRuntime)?;
        let (sender, receiver) = watch::channel(HealthReport::initial(self.clock.now()));
        self.observer.health_status(None, HealthStatus::Degraded);
        let task = runtime.spawn(run(self.settings, self.clock, self.observer, sender, probe));
        Ok(HealthChecker { receiver, task })
    }
}

/// A running health checker; dropping it stops the background task.
///
/// Status rules, with the thresholds of [`HealthConfig`]:
///
/// - `unhealthy_threshold` failures in a row make the status unhealthy;
/// - `healthy_threshold` successes in a row make it healthy;
/// - otherwise a failure turns healthy into degraded, and the status stays as it is.
///
/// The checker starts degraded (nothing is known yet) and probes at once. A probe that takes
/// longer than `timeout` is a failure. Probes start every `interval` (measured from the start
/// of the previous probe). The task stops when the [`HealthChecker`] is dropped.
#[derive(Debug)]
pub struct HealthChecker {
    receiver: watch::Receiver<HealthReport>,
    task: JoinHandle<()>,
}

impl HealthChecker {
    /// A builder with the settings of `config` (`config.enabled` is for the caller to check),
    /// the tokio clock and no observer.
    ///
    /// # Errors
    /// When a setting is out of range.
    pub fn builder(config: &HealthConfig) -> Result<HealthCheckerBuilder, InvalidSettings> {
        Ok(HealthCheckerBuilder {
            settings: Settings::try_from(config)?,
            clock: default_clock(),
            observer: noop(),
        })
    }

    /// The latest report.
    pub fn report(&self) -> HealthReport {
        self.receiver.borrow().clone()
    }

    /// The current status.
    pub fn status(&self) -> HealthStatus {
        self.receiver.borrow().status
    }

    /// A receiver that always holds the latest report and is notified when the status changes
    /// (not on every probe). Once the checker is dropped, `changed()` returns an error.
    pub fn subscribe(&self) -> watch::Receiver<HealthReport> {
        self.receiver.clone()
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run<P, Fut, E>(
    settings: Settings,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn Observer>,
    sender: watch::Sender<HealthReport>,
    mut probe: P,
) where
    P: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: fmt::Display,
{
    loop {
        let started = clock.now();
        let outcome = match with_timeout(probe(), clock.sleep(settings.timeout)).await {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => Err(error.to_string()),
            None => Err(format!("probe timed out after {:?}", settings.timeout)),
        };
        let finished = clock.now();
        let latency = finished.saturating_duration_since(started);
        observer.health_check(latency, outcome.is_ok());
        let mut change = None;
        sender.send_if_modified(|report| {
            let from = report.status;
            let changed = report.apply(settings.thresholds, outcome, latency, finished);
            if changed {
                change = Some((from, report.status));
            }
            changed
        });
        if let Some((from, to)) = change {
            observer.health_status(Some(from), to);
        }
        clock.sleep(settings.interval.saturating_sub(latency)).await;
    }
}

/// Runs `future` until it completes (`Some`) or `deadline` does (`None`).
async fn with_timeout<F: Future>(
    future: F,
    deadline: impl Future<Output = ()>,
) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut deadline = pin!(deadline);
    poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        deadline.as_mut().poll(cx).map(|()| None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::observe::recording::{Event, Recorder};

    use HealthStatus::{Degraded, Healthy, Unhealthy};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[derive(Debug, Clone, Copy)]
    enum Step {
        Ok,
        Fail(&'static str),
        Slow(Duration),
    }

    fn config() -> HealthConfig {
        HealthConfig {
            enabled: true,
            interval: ms(1_000),
            timeout: ms(200),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }

    /// Starts a checker whose probe follows `script` (then succeeds), reporting to a recorder.
    fn start(script: &[Step]) -> (HealthChecker, Arc<Recorder>) {
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let recorder = Arc::new(Recorder::default());
        let checker = HealthChecker::builder(&config())
            .unwrap()
            .observer(recorder.clone())
            .spawn(move || {
                let step = script.lock().unwrap().pop_front().unwrap_or(Step::Ok);
                async move {
                    match step {
                        Step::Ok => Ok(()),
                        Step::Fail(message) => Err(message),
                        Step::Slow(delay) => {
                            tokio::time::sleep(delay).await;
                            Ok(())
                        }
                    }
                }
            })
            .unwrap();
        (checker, recorder)
    }

    fn statuses(recorder: &Recorder) -> Vec<(Option<HealthStatus>, HealthStatus)> {
        recorder
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Status(from, to) => Some((from, to)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn statuses_follow_the_thresholds() {
        let start_time = Instant::now();
        let script = [
            Step::Ok,
            Step::Ok,
            Step::Fail("down"),
            Step::Fail("down"),
            Step::Fail("refused"),
            Step::Ok,
        ];
        let (checker, recorder) = start(&script);
        let mut seen = Vec::new();
        // Probes run at 0s, 1s, 2s, ...: look half-way between them.
        tokio::time::sleep(ms(500)).await;
        for _ in 0..7 {
            seen.push(checker.status());
            tokio::time::sleep(ms(1_000)).await;
        }
        assert_eq!(seen, [Degraded, Healthy, Degraded, Degraded, Unhealthy, Unhealthy, Healthy]);
        assert_eq!(
            statuses(&recorder),
            [
                (None, Degraded),
                (Some(Degraded), Healthy),
                (Some(Healthy), Degraded),
                (Some(Degraded), Unhealthy),
                (Some(Unhealthy), Healthy)
            ]
        );
        // Now 7.5s: the eighth probe ran at 7s.
        let report = checker.report();
        assert_eq!(report.checks_run, 8);
        assert_eq!(report.since, start_time + ms(6_000));
        assert_eq!(report.last_error, None);
        assert_eq!((report.consecutive_successes, report.consecutive_failures), (3, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn report_holds_latency_error_text_and_timeouts() {
        let (checker, recorder) =
            start(&[Step::Slow(ms(50)), Step::Fail("connection refused"), Step::Slow(ms(5_000))]);
        tokio::time::sleep(ms(500)).await;
        assert_eq!(checker.report().last_latency, Some(ms(50)));
        tokio::time::sleep(ms(1_000)).await;
        let report = checker.report();
        assert_eq!(report.last_error.as_deref(), Some("connection refused"));
        assert_eq!(report.last_latency, Some(Duration::ZERO));
        tokio::time::sleep(ms(1_000)).await;
        let report = checker.report();
        assert_eq!(report.last_error.as_deref(), Some("probe timed out after 200ms"));
        assert_eq!(report.last_latency, Some(ms(200)));
        assert_eq!(report.consecutive_failures, 2);
        let checks: Vec<_> =
            recorder.events().into_iter().filter(|e| matches!(e, Event::Check(..))).collect();
        assert_eq!(
            checks,
            [
                Event::Check(ms(50), true),
                Event::Check(Duration::ZERO, false),
                Event::Check(ms(200), false)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn probes_start_every_interval() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let start_time = Instant::now();
        let seen = Arc::clone(&calls);
        let _checker = HealthChecker::builder(&config())
            .unwrap()
            .spawn(move || {
                seen.lock().unwrap().push(Instant::now() - start_time);
                async {
                    tokio::time::sleep(ms(150)).await;
                    Ok::<(), String>(())
                }
            })
            .unwrap();
        tokio::time::sleep(ms(3_500)).await;
        assert_eq!(*calls.lock().unwrap(), [ms(0), ms(1_000), ms(2_000), ms(3_000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_are_notified_of_status_changes_only() {
        let (checker, _) = start(&[Step::Ok, Step::Ok, Step::Ok, Step::Fail("x")]);
        let mut receiver = checker.subscribe();
        receiver.borrow_and_update();
        receiver.changed().await.unwrap();
        let report = receiver.borrow_and_update().clone();
        assert_eq!((report.status, report.checks_run), (Healthy, 2));
        receiver.changed().await.unwrap();
        let report = receiver.borrow_and_update().clone();
        assert_eq!((report.status, report.checks_run), (Degraded, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_when_the_checker_is_dropped() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let checker = HealthChecker::builder(&config())
            .unwrap()
            .spawn(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>("down") }
            })
            .unwrap();
        let mut receiver = checker.subscribe();
        tokio::time::sleep(ms(2_500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        drop(checker);
        tokio::time::sleep(ms(10_000)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // The task, its probe and its sender are gone.
        assert_eq!(Arc::strong_count(&calls), 1);
        receiver.borrow_and_update();
        assert!(receiver.changed().await.is_err());
    }

    #[test]
    fn spawning_outside_a_runtime_is_an_error() {
        let result =
            HealthChecker::builder(&config()).unwrap().spawn(|| async { Ok::<(), String>(()) });
        assert_eq!(result.unwrap_err(), HealthError::NoRuntime);
    }

    #[test]
    fn settings_are_checked() {
        let bad = |c: HealthConfig| HealthChecker::builder(&c).unwrap_err().setting();
        assert_eq!(bad(HealthConfig { interval: Duration::ZERO, ..config() }), "interval");
        assert_eq!(bad(HealthConfig { timeout: Duration::ZERO, ..config() }), "timeout");
        assert_eq!(bad(HealthConfig { healthy_threshold: 0, ..config() }), "healthy_threshold");
        assert_eq!(bad(HealthConfig { unhealthy_threshold: 0, ..config() }), "unhealthy_threshold");
    }
}
