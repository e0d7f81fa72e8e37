//! The circuit breaker: stops calling a dependency that keeps failing, and lets a few probe
//! calls through after a while to find out whether it has recovered.
//!
//! The details are in the documentation of [`CircuitBreaker`].

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use engram_config::CircuitBreakerConfig;
use tokio::time::Instant;

use crate::clock::{Clock, default_clock};
use crate::error::{InvalidSettings, ensure};
use crate::observe::{Observer, noop};
use crate::random::duration_nanos;
use crate::retry::{ClassifyRetry, RetryClass};

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through and their outcomes are counted.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A limited number of probe calls go through; the rest are rejected.
    HalfOpen,
}

impl BreakerState {
    /// The state's name as a metric label value: `closed`, `open` or `half_open`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// Every state, in label order.
    pub const ALL: [Self; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    const fn to_bits(self) -> u64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    const fn from_bits(bits: u64) -> Self {
        match bits & STATE_MASK {
            0 => Self::Closed,
            1 => Self::Open,
            _ => Self::HalfOpen,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        })
    }
}

/// What a call's outcome means for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The dependency did its job (this includes answers such as "not found").
    Success,
    /// The dependency failed (unavailable, timed out, overloaded).
    Failure,
    /// The outcome says nothing about the dependency (the caller's invalid input, a cancelled
    /// call): counted neither way.
    Ignored,
}

/// Classifies an error for the breaker. Implement it for the error type of the calls that
/// [`CircuitBreaker::call`] wraps.
pub trait ClassifyFailure {
    /// What this error means for the breaker: usually [`Verdict::Failure`] for the
    /// dependency's faults and [`Verdict::Ignored`] for the caller's.
    fn verdict(&self) -> Verdict;
}

impl<E: ClassifyFailure + ?Sized> ClassifyFailure for &E {
    fn verdict(&self) -> Verdict {
        (**self).verdict()
    }
}

impl<E: ClassifyFailure + ?Sized> ClassifyFailure for Box<E> {
    fn verdict(&self) -> Verdict {
        (**self).verdict()
    }
}

/// A call rejected by an open or half-open breaker. Permanent for the retry loop: retrying
/// against an open breaker would only add load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    breaker: &'static str,
    state: BreakerState,
    retry_after: Option<Duration>,
}

impl Rejected {
    /// The name of the breaker that rejected the call.
    pub fn breaker(&self) -> &'static str {
        self.breaker
    }

    /// The breaker's state when it rejected the call: open or half-open.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When open, the time until the breaker admits probes.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.retry_after) {
            (BreakerState::Open, Some(after)) => {
                write!(f, "circuit breaker {} is open, probes allowed in {after:?}", self.breaker)
            }
            (BreakerState::HalfOpen, _) => write!(
                f,
                "circuit breaker {} is half-open and all probe permits are taken",
                self.breaker
            ),
            (state, _) => write!(f, "circuit breaker {} is {state}", self.breaker),
        }
    }
}

impl std::error::Error for Rejected {}

impl ClassifyRetry for Rejected {
    fn retry_class(&self) -> RetryClass {
        RetryClass::Permanent
    }
}

/// The error of [`CircuitBreaker::call`]: rejected by the breaker, or the call's own error.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker rejected the call; it was not run.
    #[error(transparent)]
    Rejected(Rejected),
    /// The call ran and failed.
    #[error(transparent)]
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The call's own error, if it ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Rejected(_) => None,
            Self::Inner(error) => Some(error),
        }
    }
}

impl<E: ClassifyRetry> ClassifyRetry for BreakerError<E> {
    fn retry_class(&self) -> RetryClass {
        match self {
            Self::Rejected(rejected) => rejected.retry_class(),
            Self::Inner(error) => error.retry_class(),
        }
    }
}

/// A point-in-time view of a breaker, for health reports and tests.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The state. An open breaker whose open duration has passed still shows as open until the
    /// next call moves it to half-open.
    pub state: BreakerState,
    /// Failures over calls in the window, 0 when the window is empty.
    pub failure_rate: f64,
    /// Calls counted in the sliding window (successes and failures).
    pub calls_in_window: u32,
    /// Failures in the sliding window.
    pub failures_in_window: u32,
    /// Failures in a row since the last success.
    pub consecutive_failures: u32,
    /// When open, the time until the breaker admits probes.
    pub time_until_half_open: Option<Duration>,
    /// When half-open, probes admitted and not yet reported.
    pub probes_in_flight: u32,
    /// When half-open, probes that succeeded.
    pub probes_succeeded: u32,
}

/// Validated breaker settings.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// The failure-rate threshold in parts per million, so that the comparison with
    /// `failures / calls` is exact integer arithmetic (0.1 × 30 calls is 3 failures, not
    /// 3.0000000000000004).
    threshold_ppm: u64,
    minimum_calls: u32,
    window_size: u32,
    consecutive_failures: Option<u32>,
    open_duration: Duration,
    max_open_duration: Option<Duration>,
    half_open_probes: u32,
    max_half_open_wait: Duration,
}

impl TryFrom<&CircuitBreakerConfig> for Settings {
    type Error = InvalidSettings;

    fn try_from(c: &CircuitBreakerConfig) -> Result<Self, Self::Error> {
        let rate = c.failure_rate_threshold;
        ensure(rate.is_finite() && rate > 0.0 && rate <= 1.0, "failure_rate_threshold", || {
            format!("({rate}) must be above 0 and at most 1")
        })?;
        ensure((1..=1_000_000).contains(&c.window_size), "window_size", || {
            format!("({}) must be between 1 and 1000000", c.window_size)
        })?;
        ensure((1..=c.window_size).contains(&c.minimum_calls), "minimum_calls", || {
            format!("({}) must be between 1 and window_size ({})", c.minimum_calls, c.window_size)
        })?;
        ensure(c.consecutive_failures != Some(0), "consecutive_failures", || {
            "(0) must be at least 1, or absent".to_owned()
        })?;
        ensure(!c.open_duration.is_zero(), "open_duration", || {
            "(0s) must be above zero".to_owned()
        })?;
        if let Some(max) = c.max_open_duration {
            ensure(max >= c.open_duration, "max_open_duration", || {
                format!("({max:?}) is below open_duration ({:?})", c.open_duration)
            })?;
        }
        ensure((1..=10_000).contains(&c.half_open_probes), "half_open_probes", || {
            format!("({}) must be between 1 and 10000", c.half_open_probes)
        })?;
        ensure(!c.max_half_open_wait.is_zero(), "max_half_open_wait", || {
            "(0s) must be above zero".to_owned()
        })?;
        Ok(Self {
            // rate is in (0, 1], so the product is in (0, 1e6].
            threshold_ppm: (rate * PPM as f64).round() as u64,
            minimum_calls: c.minimum_calls,
            window_size: c.window_size,
            consecutive_failures: c.consecutive_failures,
            open_duration: c.open_duration,
            max_open_duration: c.max_open_duration,
            half_open_probes: c.half_open_probes,
            max_half_open_wait: c.max_half_open_wait,
        })
    }
}

impl Settings {
    /// The open duration after `opens` openings without a close in between (1 for the first).
    fn open_duration(&self, opens: u32) -> Duration {
        let Some(cap) = self.max_open_duration else {
            return self.open_duration;
        };
        let doublings = opens.saturating_sub(1);
        1u32.checked_shl(doublings)
            .and_then(|factor| self.open_duration.checked_mul(factor))
            .map_or(cap, |d| d.min(cap))
    }
}

/// One million: the failure-rate threshold is kept in parts per million.
const PPM: u64 = 1_000_000;

/// Bits of the state word that hold the state; the rest hold the generation.
const STATE_MASK: u64 = 0b11;

const fn pack(state: BreakerState, generation: u64) -> u64 {
    (generation << 2) | state.to_bits()
}

/// A count-based sliding window of outcomes with a running failure count.
#[derive(Debug)]
struct Window {
    /// `true` for a failure.
    outcomes: Box<[bool]>,
    next: usize,
    len: usize,
    failures: usize,
}

impl Window {
    fn new(size: u32) -> Self {
        Self {
            outcomes: vec![false; size as usize].into_boxed_slice(),
            next: 0,
            len: 0,
            failures: 0,
        }
    }

    fn push(&mut self, failure: bool) {
        if self.len == self.outcomes.len() {
            if self.outcomes[self.next] {
                self.failures -= 1;
            }
        } else {
            self.len += 1;
        }
        self.outcomes[self.next] = failure;
        self.failures += usize::from(failure);
        self.next = (self.next + 1) % self.outcomes.len();
    }

    fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
        self.failures = 0;
    }

    fn failure_rate(&self) -> f64 {
        if self.len == 0 { 0.0 } else { self.failures as f64 / self.len as f64 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    id: u64,
    admitted: Instant,
}

/// The breaker's state behind its lock; `CircuitBreaker::word` mirrors `state` and
/// `generation` for the lock-free fast path.
#[derive(Debug)]
struct Inner {
    state: BreakerState,
    generation: u64,
    window: Window,
    consecutive_failures: u32,
    /// Openings since the breaker last closed.
    opens: u32,
    probes: Vec<Probe>,
    probes_succeeded: u32,
    next_probe_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    Closed,
    Probe(u64),
}

/// A thread-safe circuit breaker.
///
/// The design follows resilience4j's count-based breaker:
///
/// - **Closed**: every call goes through. Outcomes go into a sliding window of the last
///   `window_size` calls; once it holds `minimum_calls`, a failure rate at or above
///   `failure_rate_threshold` opens the breaker. With `consecutive_failures` set, that many
///   failures in a row open it too.
/// - **Open**: every call is rejected with [`Rejected`] for `open_duration`. With
///   `max_open_duration` set, each reopening without a close in between doubles the duration,
///   up to that cap.
/// - **Half-open**: exactly `half_open_probes` calls are admitted, the rest rejected. When all
///   probes succeed the breaker closes with an empty window; when one fails it opens again. A
///   probe that has not reported after `max_half_open_wait` loses its permit, so a call that
///   never returns cannot hold the breaker half-open for ever.
///
/// Only failures that are the dependency's fault count ([`Verdict::Failure`]); errors that are
/// the caller's (invalid input) are [`Verdict::Ignored`] and count as neither success nor
/// failure. Outcomes of calls admitted before a transition are ignored after it.
///
/// The closed path costs one atomic load to admit. Recording takes a short lock, except for a
/// success while the window is full of successes and none failed since: that changes nothing,
/// so it costs one atomic load. While open, rejection reads the clock and two atomics without
/// locking.
///
/// Share it behind an [`Arc`]; [`CircuitBreaker::try_acquire`] and [`CircuitBreaker::call`]
/// take `&self`.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: &'static str,
    settings: Settings,
    /// The state in the low two bits, the generation (incremented by every transition) above.
    word: AtomicU64,
    /// When open: nanoseconds after `epoch` at which probes are admitted.
    open_until: AtomicU64,
    /// Closed with a full window of successes and no failure since the last success: a
    /// success would leave every count as it is, so it is recorded without the lock. Written
    /// under the lock, only when it changes.
    steady: AtomicBool,
    epoch: Instant,
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn Observer>,
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the `breaker` label of metrics, so a fixed name such as
    /// `"redis"`, never an id), reading time from the tokio clock and reporting to no observer.
    /// `config.enabled` is for the caller to check.
    ///
    /// # Errors
    /// When a setting is out of range.
    pub fn new(name: &'static str, config: &CircuitBreakerConfig) -> Result<Self, InvalidSettings> {
        Self::with_parts(name, config, default_clock(), noop())
    }

    /// A closed breaker reading time from `clock` and reporting to `observer`, which is told of
    /// its creation at once.
    ///
    /// # Errors
    /// When a setting is out of range.
    pub fn with_parts(
        name: &'static str,
        config: &CircuitBreakerConfig,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn Observer>,
    ) -> Result<Self, InvalidSettings> {
        let settings = Settings::try_from(config)?;
        let epoch = clock.now();
        observer.breaker_created(name, BreakerState::Closed);
        Ok(Self {
            name,
            settings,
            word: AtomicU64::new(pack(BreakerState::Closed, 0)),
            open_until: AtomicU64::new(0),
            steady: AtomicBool::new(false),
            epoch,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                generation: 0,
                window: Window::new(settings.window_size),
                consecutive_failures: 0,
                opens: 0,
                probes: Vec::with_capacity(settings.half_open_probes.min(64) as usize),
                probes_succeeded: 0,
                next_probe_id: 0,
            }),
            clock,
            observer,
        })
    }

    /// The breaker's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The current state, without moving an expired open breaker to half-open.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_bits(self.word.load(Ordering::Acquire))
    }

    /// Asks to make one call. The returned [`Permit`] must report the call's outcome; dropping
    /// it unreported counts as [`Verdict::Ignored`] (a cancelled call).
    ///
    /// # Errors
    /// [`Rejected`] while open, and while half-open once every probe permit is taken.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let word = self.word.load(Ordering::Acquire);
        match BreakerState::from_bits(word) {
            BreakerState::Closed => Ok(Permit::new(self, word >> 2, PermitKind::Closed)),
            BreakerState::Open => {
                let now = self.clock.now();
                let until = self.open_until.load(Ordering::Acquire);
                let elapsed = self.nanos_since_epoch(now);
                if elapsed < until {
                    Err(self
                        .reject(BreakerState::Open, Some(Duration::from_nanos(until - elapsed))))
                } else {
                    self.acquire_slow(now)
                }
            }
            BreakerState::HalfOpen => self.acquire_slow(self.clock.now()),
        }
    }

    /// Runs `call` if the breaker admits it, and records its outcome: success for `Ok`, the
    /// error's [`ClassifyFailure::verdict`] for `Err`. If the returned future is dropped before
    /// the call finishes, the call counts as ignored.
    ///
    /// # Errors
    /// [`BreakerError::Rejected`] when the breaker refuses the call (which is then never
    /// started), [`BreakerError::Inner`] with the call's own error.
    pub async fn call<T, E, F, Fut>(&self, call: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: ClassifyFailure,
    {
        let permit = self.try_acquire().map_err(BreakerError::Rejected)?;
        let result = call().await;
        match &result {
            Ok(_) => permit.record(Verdict::Success),
            Err(error) => permit.record(error.verdict()),
        }
        result.map_err(BreakerError::Inner)
    }

    /// A point-in-time view of the breaker.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = self.clock.now();
        let inner = self.lock();
        let time_until_half_open = (inner.state == BreakerState::Open).then(|| {
            let until = self.open_until.load(Ordering::Acquire);
            Duration::from_nanos(until.saturating_sub(self.nanos_since_epoch(now)))
        });
        let half_open = inner.state == BreakerState::HalfOpen;
        BreakerSnapshot {
            state: inner.state,
            failure_rate: inner.window.failure_rate(),
            calls_in_window: u32::try_from(inner.window.len).unwrap_or(u32::MAX),
            failures_in_window: u32::try_from(inner.window.failures).unwrap_or(u32::MAX),
            consecutive_failures: inner.consecutive_failures,
            time_until_half_open,
            probes_in_flight: if half_open {
                u32::try_from(inner.probes.len()).unwrap_or(u32::MAX)
            } else {
                0
            },
            probes_succeeded: if half_open { inner.probes_succeeded } else { 0 },
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update of `Inner` completes before code that could panic runs (observers are
        // called last), so the state is consistent even after a panic elsewhere.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn nanos_since_epoch(&self, now: Instant) -> u64 {
        duration_nanos(now.saturating_duration_since(self.epoch))
    }

    fn reject(&self, state: BreakerState, retry_after: Option<Duration>) -> Rejected {
        self.observer.breaker_rejected(self.name, state);
        Rejected { breaker: self.name, state, retry_after }
    }

    /// Admission through the lock: an open breaker whose time is up, or a half-open one.
    fn acquire_slow(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => Ok(Permit::new(self, inner.generation, PermitKind::Closed)),
            BreakerState::Open => {
                let until = self.open_until.load(Ordering::Acquire);
                let elapsed = self.nanos_since_epoch(now);
                if elapsed < until {
                    drop(inner);
                    return Err(self
                        .reject(BreakerState::Open, Some(Duration::from_nanos(until - elapsed))));
                }
                self.transition(&mut inner, BreakerState::HalfOpen, now);
                Ok(self.admit_probe(&mut inner, now))
            }
            BreakerState::HalfOpen => {
                let max_wait = self.settings.max_half_open_wait;
                inner
                    .probes
                    .retain(|probe| now.saturating_duration_since(probe.admitted) < max_wait);
                let taken = inner.probes.len() as u64 + u64::from(inner.probes_succeeded);
                if taken < u64::from(self.settings.half_open_probes) {
                    Ok(self.admit_probe(&mut inner, now))
                } else {
                    drop(inner);
                    Err(self.reject(BreakerState::HalfOpen, None))
                }
            }
        }
    }

    fn admit_probe(&self, inner: &mut Inner, now: Instant) -> Permit<'_> {
        let id = inner.next_probe_id;
        inner.next_probe_id += 1;
        inner.probes.push(Probe { id, admitted: now });
        Permit::new(self, inner.generation, PermitKind::Probe(id))
    }

    /// Records the outcome of a call admitted in `generation`.
    fn on_outcome(&self, generation: u64, kind: PermitKind, verdict: Verdict) {
        if kind == PermitKind::Closed
            && (verdict == Verdict::Ignored
                || (verdict == Verdict::Success && self.steady.load(Ordering::Acquire)))
        {
            // Ignored, or a success that would push a success out of a window of successes:
            // no count changes. A transition or failure recorded meanwhile by another call is
            // ordered after this one.
            return;
        }
        let mut inner = self.lock();
        if inner.generation != generation {
            // Admitted before a transition: says nothing about the current state.
            return;
        }
        match kind {
            PermitKind::Closed => {
                let failure = verdict == Verdict::Failure;
                inner.window.push(failure);
                inner.consecutive_failures =
                    if failure { inner.consecutive_failures.saturating_add(1) } else { 0 };
                self.set_steady(&inner);
                // Checked after successes too: the call that brings the window to
                // `minimum_calls` may be a success while the rate is already too high.
                if self.should_open(&inner) {
                    let now = self.clock.now();
                    self.transition(&mut inner, BreakerState::Open, now);
                }
            }
            PermitKind::Probe(id) => {
                let Some(index) = inner.probes.iter().position(|probe| probe.id == id) else {
                    // The probe outlived `max_half_open_wait` and its permit went to another.
                    return;
                };
                inner.probes.swap_remove(index);
                match verdict {
                    Verdict::Success => {
                        inner.probes_succeeded += 1;
                        if inner.probes_succeeded >= self.settings.half_open_probes {
                            let now = self.clock.now();
                            self.transition(&mut inner, BreakerState::Closed, now);
                        }
                    }
                    Verdict::Failure => {
                        let now = self.clock.now();
                        self.transition(&mut inner, BreakerState::Open, now);
                    }
                    Verdict::Ignored => {}
                }
            }
        }
    }

    /// Publishes whether a success would change nothing (see `steady`).
    fn set_steady(&self, inner: &Inner) {
        let w = &inner.window;
        let steady = inner.state == BreakerState::Closed
            && w.len == w.outcomes.len()
            && w.failures == 0
            && inner.consecutive_failures == 0;
        if self.steady.load(Ordering::Relaxed) != steady {
            self.steady.store(steady, Ordering::Release);
        }
    }

    fn should_open(&self, inner: &Inner) -> bool {
        let s = &self.settings;
        if s.consecutive_failures.is_some_and(|n| inner.consecutive_failures >= n) {
            return true;
        }
        let window = &inner.window;
        window.len >= s.minimum_calls as usize
            && window.failures as u64 * PPM >= s.threshold_ppm * window.len as u64
    }

    /// Moves to `to` under the lock, publishes the new state word, and tells the observer.
    fn transition(&self, inner: &mut Inner, to: BreakerState, now: Instant) {
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.probes.clear();
        inner.probes_succeeded = 0;
        match to {
            BreakerState::Open => {
                inner.opens = inner.opens.saturating_add(1);
                let duration = self.settings.open_duration(inner.opens);
                let until = self.nanos_since_epoch(now).saturating_add(duration_nanos(duration));
                // Published before the state word, which readers load first with Acquire.
                self.open_until.store(until, Ordering::Release);
            }
            BreakerState::HalfOpen => {}
            BreakerState::Closed => {
                inner.window.clear();
                inner.consecutive_failures = 0;
                inner.opens = 0;
            }
        }
        self.set_steady(inner);
        self.word.store(pack(to, inner.generation), Ordering::Release);
        self.observer.breaker_transition(self.name, from, to);
    }
}

/// Permission to make one call through a [`CircuitBreaker`]; report the outcome with
/// [`Permit::record`] (or its shorthands). Dropping it unreported counts as ignored.
#[derive(Debug)]
#[must_use = "a permit must report the call's outcome"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    kind: PermitKind,
    reported: bool,
}

impl<'a> Permit<'a> {
    fn new(breaker: &'a CircuitBreaker, generation: u64, kind: PermitKind) -> Self {
        Self { breaker, generation, kind, reported: false }
    }

    /// Whether this permit is one of the half-open probes.
    pub fn is_probe(&self) -> bool {
        matches!(self.kind, PermitKind::Probe(_))
    }

    /// Reports the call's outcome.
    pub fn record(mut self, verdict: Verdict) {
        self.reported = true;
        self.breaker.on_outcome(self.generation, self.kind, verdict);
    }

    /// Reports a success.
    pub fn success(self) {
        self.record(Verdict::Success);
    }

    /// Reports a failure of the dependency.
    pub fn failure(self) {
        self.record(Verdict::Failure);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.on_outcome(self.generation, self.kind, Verdict::Ignored);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::clock::ManualClock;
    use crate::observe::recording::{Event, Recorder};

    use BreakerState::{Closed, HalfOpen, Open};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_rate_threshold: 0.5,
            minimum_calls: 4,
            window_size: 10,
            consecutive_failures: None,
            open_duration: ms(1_000),
            max_open_duration: None,
            half_open_probes: 2,
            max_half_open_wait: ms(5_000),
            ..CircuitBreakerConfig::default()
        }
    }

    struct Fixture {
        breaker: CircuitBreaker,
        clock: ManualClock,
        recorder: Arc<Recorder>,
    }

    fn fixture(config: &CircuitBreakerConfig) -> Fixture {
        let clock = ManualClock::new();
        let recorder = Arc::new(Recorder::default());
        let breaker =
            CircuitBreaker::with_parts("test", config, Arc::new(clock.clone()), recorder.clone())
                .unwrap();
        Fixture { breaker, clock, recorder }
    }

    impl Fixture {
        fn calls(&self, verdicts: &[Verdict]) {
            for verdict in verdicts {
                self.breaker.try_acquire().unwrap().record(*verdict);
            }
        }

        fn transitions(&self) -> Vec<(BreakerState, BreakerState)> {
            self.recorder
                .events()
                .into_iter()
                .filter_map(|e| match e {
                    Event::Transition(_, from, to) => Some((from, to)),
                    _ => None,
                })
                .collect()
        }

        fn open(&self) {
            self.calls(&[F; 4]);
            assert_eq!(self.breaker.state(), Open);
        }

        fn half_open(&self) {
            self.open();
            self.clock.advance(ms(1_000));
        }
    }

    const S: Verdict = Verdict::Success;
    const F: Verdict = Verdict::Failure;
    const I: Verdict = Verdict::Ignored;

    #[test]
    fn opens_when_the_failure_rate_reaches_the_threshold_after_minimum_calls() {
        let f = fixture(&config());
        assert_eq!(f.recorder.events(), [Event::Created("test", Closed)]);
        f.calls(&[F, F, F]);
        assert_eq!(f.breaker.state(), Closed, "below minimum_calls the rate does not count");
        f.calls(&[S]);
        // 3 failures in 4 calls: 75%.
        assert_eq!(f.breaker.state(), Open);
        let snapshot = f.breaker.snapshot();
        assert_eq!((snapshot.calls_in_window, snapshot.failures_in_window), (4, 3));
        assert_eq!(snapshot.failure_rate, 0.75);
        assert_eq!(snapshot.time_until_half_open, Some(ms(1_000)));
        assert_eq!(f.transitions(), [(Closed, Open)]);
    }

    #[test]
    fn a_rate_exactly_at_the_threshold_opens() {
        let f = fixture(&CircuitBreakerConfig {
            failure_rate_threshold: 0.1,
            minimum_calls: 30,
            window_size: 30,
            ..config()
        });
        let mut verdicts = vec![S; 27];
        verdicts.extend([F; 2]);
        f.calls(&verdicts);
        f.calls(&[F]);
        assert_eq!(f.breaker.state(), Open, "3 failures in 30 calls is exactly 10%");
    }

    /// Successes into a full window of successes skip the lock; the counts stay exact around
    /// them.
    #[test]
    fn successes_into_a_window_of_successes_change_nothing() {
        let f = fixture(&CircuitBreakerConfig {
            window_size: 4,
            minimum_calls: 4,
            failure_rate_threshold: 0.9,
            consecutive_failures: Some(2),
            ..config()
        });
        let counts = |f: &Fixture| {
            let s = f.breaker.snapshot();
            (s.calls_in_window, s.failures_in_window, s.consecutive_failures)
        };
        f.calls(&[S; 3]);
        assert!(!f.breaker.steady.load(Ordering::Relaxed), "the window is not full yet");
        f.calls(&[S]);
        assert!(f.breaker.steady.load(Ordering::Relaxed));
        f.calls(&[S; 10]);
        assert_eq!(counts(&f), (4, 0, 0));
        f.calls(&[F]);
        assert!(!f.breaker.steady.load(Ordering::Relaxed));
        assert_eq!(counts(&f), (4, 1, 1));
        // The success after a failure resets the run of failures, so a second failure later
        // does not open the breaker.
        f.calls(&[S, F]);
        assert_eq!((counts(&f), f.breaker.state()), ((4, 2, 1), Closed));
        f.calls(&[S, S, S]);
        assert_eq!(counts(&f), (4, 1, 0), "the first failure has left the window");
        f.calls(&[S]);
        assert_eq!(counts(&f), (4, 0, 0));
        assert!(f.breaker.steady.load(Ordering::Relaxed));
        f.calls(&[F, F]);
        assert_eq!(f.breaker.state(), Open, "two failures in a row");
        assert!(!f.breaker.steady.load(Ordering::Relaxed));
    }

    #[test]
    fn the_window_slides_over_the_last_calls() {
        let f = fixture(&CircuitBreakerConfig { window_size: 4, minimum_calls: 4, ..config() });
        f.calls(&[F, S, S, S, S]);
        let snapshot = f.breaker.snapshot();
        assert_eq!((snapshot.calls_in_window, snapshot.failures_in_window), (4, 0));
        f.calls(&[F]);
        assert_eq!(f.breaker.state(), Closed);
        f.calls(&[F]);
        assert_eq!(f.breaker.state(), Open, "2 failures in the last 4 calls is 50%");
    }

    #[test]
    fn consecutive_failures_open_whatever_the_rate() {
        let f = fixture(&CircuitBreakerConfig {
            consecutive_failures: Some(3),
            minimum_calls: 100,
            window_size: 100,
            ..config()
        });
        f.calls(&[F, F, S, F, F, I]);
        assert_eq!(f.breaker.state(), Closed, "a success resets the run, an ignored call does not");
        assert_eq!(f.breaker.snapshot().consecutive_failures, 2);
        f.calls(&[F]);
        assert_eq!(f.breaker.state(), Open);
    }

    #[test]
    fn open_rejects_until_the_open_duration_has_passed() {
        let f = fixture(&config());
        f.open();
        f.clock.advance(ms(400));
        let rejected = f.breaker.try_acquire().unwrap_err();
        assert_eq!(rejected.state(), Open);
        assert_eq!(rejected.retry_after(), Some(ms(600)));
        assert_eq!(rejected.to_string(), "circuit breaker test is open, probes allowed in 600ms");
        assert_eq!(rejected.retry_class(), RetryClass::Permanent);
        f.clock.advance(ms(600));
        let probe = f.breaker.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert_eq!(f.breaker.state(), HalfOpen);
        assert_eq!(f.transitions(), [(Closed, Open), (Open, HalfOpen)]);
        assert!(f.recorder.events().contains(&Event::Rejected("test", Open)));
        drop(probe);
    }

    #[test]
    fn half_open_admits_exactly_the_configured_probes_and_closes_when_they_succeed() {
        let f = fixture(&CircuitBreakerConfig { half_open_probes: 3, ..config() });
        f.half_open();
        let probes: Vec<_> = (0..3).map(|_| f.breaker.try_acquire().unwrap()).collect();
        for _ in 0..5 {
            let rejected = f.breaker.try_acquire().unwrap_err();
            assert_eq!(rejected.state(), HalfOpen);
            assert_eq!(rejected.retry_after(), None);
        }
        assert_eq!(
            f.breaker.try_acquire().unwrap_err().to_string(),
            "circuit breaker test is half-open and all probe permits are taken"
        );
        let mut probes = probes.into_iter();
        probes.next().unwrap().success();
        probes.next().unwrap().success();
        assert_eq!(f.breaker.snapshot().probes_succeeded, 2);
        assert!(f.breaker.try_acquire().is_err(), "a succeeded probe keeps its permit");
        probes.next().unwrap().success();
        assert_eq!(f.breaker.state(), Closed);
        let snapshot = f.breaker.snapshot();
        assert_eq!(
            (snapshot.calls_in_window, snapshot.consecutive_failures),
            (0, 0),
            "closing empties the window"
        );
        assert_eq!(f.transitions(), [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]);
    }

    #[test]
    fn a_failed_probe_reopens() {
        let f = fixture(&config());
        f.half_open();
        let first = f.breaker.try_acquire().unwrap();
        let second = f.breaker.try_acquire().unwrap();
        first.success();
        second.failure();
        assert_eq!(f.breaker.state(), Open);
        assert_eq!(f.breaker.snapshot().time_until_half_open, Some(ms(1_000)));
        assert_eq!(f.transitions(), [(Closed, Open), (Open, HalfOpen), (HalfOpen, Open)]);
    }

    #[test]
    fn open_duration_doubles_on_reopening_up_to_the_cap_and_resets_on_close() {
        let f = fixture(&CircuitBreakerConfig {
            max_open_duration: Some(ms(5_000)),
            half_open_probes: 1,
            ..config()
        });
        f.open();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let wait = f.breaker.snapshot().time_until_half_open.unwrap();
            seen.push(wait);
            f.clock.advance(wait);
            f.breaker.try_acquire().unwrap().failure();
        }
        assert_eq!(seen, [ms(1_000), ms(2_000), ms(4_000), ms(5_000), ms(5_000)]);
        f.clock.advance(ms(5_000));
        f.breaker.try_acquire().unwrap().success();
        assert_eq!(f.breaker.state(), Closed);
        f.open();
        assert_eq!(f.breaker.snapshot().time_until_half_open, Some(ms(1_000)));
    }

    #[test]
    fn a_probe_that_never_returns_releases_its_permit_after_the_max_half_open_wait() {
        let f = fixture(&config());
        f.half_open();
        let stuck_a = f.breaker.try_acquire().unwrap();
        f.clock.advance(ms(1_000));
        let stuck_b = f.breaker.try_acquire().unwrap();
        assert!(f.breaker.try_acquire().is_err());
        f.clock.advance(ms(4_000));
        // stuck_a has waited 5s: its permit is released; stuck_b has waited 4s.
        let fresh = f.breaker.try_acquire().unwrap();
        assert!(f.breaker.try_acquire().is_err());
        assert_eq!(f.breaker.snapshot().probes_in_flight, 2);
        // The late outcome of a released probe is ignored, even a failure.
        stuck_a.failure();
        assert_eq!(f.breaker.state(), HalfOpen);
        fresh.success();
        stuck_b.success();
        assert_eq!(f.breaker.state(), Closed);
    }

    #[test]
    fn ignored_outcomes_count_as_neither() {
        let f = fixture(&config());
        f.calls(&[I; 50]);
        f.calls(&[F, F, F]);
        f.calls(&[I; 50]);
        let snapshot = f.breaker.snapshot();
        assert_eq!(
            (snapshot.calls_in_window, snapshot.failures_in_window, snapshot.consecutive_failures),
            (3, 3, 3)
        );
        assert_eq!(f.breaker.state(), Closed);
        // An ignored probe gives its permit back without closing or reopening.
        f.calls(&[F]);
        f.clock.advance(ms(1_000));
        for _ in 0..10 {
            f.breaker.try_acquire().unwrap().record(I);
        }
        assert_eq!(f.breaker.state(), HalfOpen);
        f.calls(&[S, S]);
        assert_eq!(f.breaker.state(), Closed);
    }

    #[test]
    fn a_dropped_permit_counts_as_ignored() {
        let f = fixture(&config());
        for _ in 0..10 {
            drop(f.breaker.try_acquire().unwrap());
        }
        assert_eq!(f.breaker.snapshot().calls_in_window, 0);
        f.half_open();
        for _ in 0..10 {
            drop(f.breaker.try_acquire().unwrap());
        }
        assert_eq!(f.breaker.snapshot().probes_in_flight, 0);
    }

    #[test]
    fn outcomes_from_before_a_transition_are_ignored() {
        let f = fixture(&config());
        let early = f.breaker.try_acquire().unwrap();
        f.open();
        f.clock.advance(ms(1_000));
        let probe = f.breaker.try_acquire().unwrap();
        early.failure();
        assert_eq!(
            f.breaker.state(),
            HalfOpen,
            "a closed-state failure does not reopen a half-open breaker"
        );
        probe.success();
        f.calls(&[S]);
        assert_eq!(f.breaker.state(), Closed);
    }

    #[derive(Debug, PartialEq)]
    enum CallError {
        Down,
        BadInput,
    }

    impl ClassifyRetry for CallError {
        fn retry_class(&self) -> RetryClass {
            RetryClass::Temporary
        }
    }

    impl ClassifyFailure for CallError {
        fn verdict(&self) -> Verdict {
            match self {
                Self::Down => Verdict::Failure,
                Self::BadInput => Verdict::Ignored,
            }
        }
    }

    #[tokio::test]
    async fn call_records_outcomes_and_skips_the_call_when_rejected() {
        let f = fixture(&config());
        let ran = AtomicUsize::new(0);
        let run = |result: Result<u8, CallError>| {
            ran.fetch_add(1, Ordering::Relaxed);
            async move { result }
        };
        assert_eq!(f.breaker.call(|| run(Ok(1))).await.unwrap(), 1);
        for _ in 0..10 {
            let error = f.breaker.call(|| run(Err(CallError::BadInput))).await.unwrap_err();
            assert!(matches!(error, BreakerError::Inner(CallError::BadInput)));
        }
        for _ in 0..3 {
            let _ = f.breaker.call(|| run(Err(CallError::Down))).await;
        }
        assert_eq!(f.breaker.state(), Open);
        assert_eq!(ran.load(Ordering::Relaxed), 14);
        let error = f.breaker.call(|| run(Ok(2))).await.unwrap_err();
        assert_eq!(ran.load(Ordering::Relaxed), 14, "a rejected call never runs");
        assert_eq!(error.retry_class(), RetryClass::Permanent);
        assert!(error.into_inner().is_none());
    }

    #[test]
    fn settings_are_checked() {
        let bad = |c: CircuitBreakerConfig| CircuitBreaker::new("x", &c).unwrap_err().setting();
        assert_eq!(
            bad(CircuitBreakerConfig { failure_rate_threshold: 0.0, ..config() }),
            "failure_rate_threshold"
        );
        assert_eq!(
            bad(CircuitBreakerConfig { failure_rate_threshold: f64::NAN, ..config() }),
            "failure_rate_threshold"
        );
        assert_eq!(bad(CircuitBreakerConfig { window_size: 0, ..config() }), "window_size");
        assert_eq!(bad(CircuitBreakerConfig { minimum_calls: 11, ..config() }), "minimum_calls");
        assert_eq!(
            bad(CircuitBreakerConfig { consecutive_failures: Some(0), ..config() }),
            "consecutive_failures"
        );
        assert_eq!(
            bad(CircuitBreakerConfig { open_duration: Duration::ZERO, ..config() }),
            "open_duration"
        );
        assert_eq!(
            bad(CircuitBreakerConfig { max_open_duration: Some(ms(1)), ..config() }),
            "max_open_duration"
        );
        assert_eq!(
            bad(CircuitBreakerConfig { half_open_probes: 0, ..config() }),
            "half_open_probes"
        );
        assert_eq!(
            bad(CircuitBreakerConfig { max_half_open_wait: Duration::ZERO, ..config() }),
            "max_half_open_wait"
        );
        assert!(CircuitBreaker::new("x", &CircuitBreakerConfig::default()).is_ok());
    }

    #[test]
    fn open_duration_growth_never_overflows() {
        let settings = Settings::try_from(&CircuitBreakerConfig {
            open_duration: Duration::from_secs(u64::MAX / 4),
            max_open_duration: Some(Duration::MAX),
            ..config()
        })
        .unwrap();
        assert_eq!(settings.open_duration(1), Duration::from_secs(u64::MAX / 4));
        assert_eq!(settings.open_duration(3), Duration::from_secs(u64::MAX / 4 * 4));
        assert_eq!(settings.open_duration(4), Duration::MAX);
        assert_eq!(settings.open_duration(u32::MAX), Duration::MAX);
    }

    /// Many threads record outcomes at once: no outcome is lost or counted twice.
    #[test]
    fn concurrent_outcomes_are_all_counted() {
        const THREADS: usize = 8;
        const CALLS: usize = 5_000;
        let f = fixture(&CircuitBreakerConfig {
            window_size: 100_000,
            // Each thread alternates failures with successes, so at most 8 failures can come in
            // a row: a window of 100 or more calls never reaches a 100% failure rate.
            minimum_calls: 100,
            failure_rate_threshold: 1.0,
            ..config()
        });
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for i in 0..CALLS {
                        let verdict = match i % 4 {
                            0 => F,
                            1 => I,
                            _ => S,
                        };
                        f.breaker.try_acquire().unwrap().record(verdict);
                    }
                });
            }
        });
        let snapshot = f.breaker.snapshot();
        assert_eq!(snapshot.state, Closed);
        assert_eq!(snapshot.calls_in_window as usize, THREADS * CALLS * 3 / 4);
        assert_eq!(snapshot.failures_in_window as usize, THREADS * CALLS / 4);
    }

    /// Many threads race for half-open probe permits: exactly the configured number win, and
    /// permits given back by dropped calls are never lost.
    #[test]
    fn concurrent_probes_get_exactly_the_configured_permits() {
        const THREADS: usize = 16;
        let f = fixture(&CircuitBreakerConfig { half_open_probes: 5, ..config() });
        f.half_open();
        for round in 0..20 {
            let barrier = Barrier::new(THREADS);
            let admitted = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for _ in 0..THREADS {
                    scope.spawn(|| {
                        let permit = f.breaker.try_acquire();
                        if permit.is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                        // Everyone holds what they got until everyone has tried.
                        barrier.wait();
                        drop(permit);
                    });
                }
            });
            assert_eq!(admitted.load(Ordering::Relaxed), 5, "round {round}");
            assert_eq!(f.breaker.snapshot().probes_in_flight, 0, "round {round}");
        }
        let probes: Vec<_> = (0..5).map(|_| f.breaker.try_acquire().unwrap()).collect();
        assert!(f.breaker.try_acquire().is_err());
        std::thread::scope(|scope| {
            for probe in probes {
                scope.spawn(move || probe.success());
            }
        });
        assert_eq!(f.breaker.state(), Closed);
    }
}
