//! The retry policy and the async retry loop.
//!
//! The details are in the documentation of [`Retrier`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engram_config::RetryConfig;
use tokio::time::Instant;

use crate::backoff::{Backoff, Delays};
use crate::budget::RetryBudget;
use crate::clock::{Clock, default_clock};
use crate::error::{InvalidSettings, ensure};
use crate::observe::{Observer, noop};
use crate::random::{RandomSource, Rng, splitmix64};

/// How the retry loop treats an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryClass {
    /// Retrying cannot help (invalid input, missing permission, open circuit breaker).
    Permanent,
    /// The operation did not take effect and may succeed later (connection refused, server
    /// loading, backpressure).
    Temporary,
    /// The operation may or may not have taken effect (a timeout after the request was sent):
    /// retried only when the operation is idempotent.
    OutcomeUnknown,
}

/// Classifies an error for the retry loop. Implement it for the error type of the operations
/// that [`Retrier::retry`] runs.
pub trait ClassifyRetry {
    /// How the retry loop treats this error.
    fn retry_class(&self) -> RetryClass;
}

impl<E: ClassifyRetry + ?Sized> ClassifyRetry for &E {
    fn retry_class(&self) -> RetryClass {
        (**self).retry_class()
    }
}

impl<E: ClassifyRetry + ?Sized> ClassifyRetry for Box<E> {
    fn retry_class(&self) -> RetryClass {
        (**self).retry_class()
    }
}

/// What is being retried: a bounded name (the `operation` label of metrics) and whether running
/// it twice has the same effect as running it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operation {
    name: &'static str,
    idempotent: bool,
}

impl Operation {
    /// An operation that may safely run more than once (reads, puts of whole records, deletes).
    pub const fn idempotent(name: &'static str) -> Self {
        Self { name, idempotent: true }
    }

    /// An operation that must not run twice (increments, appends): not retried after an error
    /// whose outcome is unknown.
    pub const fn non_idempotent(name: &'static str) -> Self {
        Self { name, idempotent: false }
    }

    /// The operation's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the operation may safely run more than once.
    pub const fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    /// Whether an error of class `class` may be retried for this operation.
    pub const fn may_retry(&self, class: RetryClass) -> bool {
        match class {
            RetryClass::Permanent => false,
            RetryClass::Temporary => true,
            RetryClass::OutcomeUnknown => self.idempotent,
        }
    }
}

/// How many attempts an operation gets and how long it may wait in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    backoff: Backoff,
    max_attempts: u32,
    max_total_delay: Option<Duration>,
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts in all (the first included), waiting as `backoff` says,
    /// without a cap on the total delay.
    ///
    /// # Errors
    /// When `max_attempts` is zero.
    pub fn new(backoff: Backoff, max_attempts: u32) -> Result<Self, InvalidSettings> {
        ensure(max_attempts >= 1, "max_attempts", || {
            "(0) must be at least 1, the first attempt".to_owned()
        })?;
        Ok(Self { backoff, max_attempts, max_total_delay: None })
    }

    /// A policy that makes one attempt and never retries.
    pub fn never() -> Self {
        Self { backoff: Backoff::fixed(Duration::ZERO), max_attempts: 1, max_total_delay: None }
    }

    /// The same policy, giving up before the sum of delays of one operation would exceed `cap`
    /// (`None`: no cap).
    #[must_use]
    pub fn with_max_total_delay(mut self, cap: Option<Duration>) -> Self {
        self.max_total_delay = cap;
        self
    }

    /// The backoff between attempts.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The cap on the sum of delays of one operation.
    pub fn max_total_delay(&self) -> Option<Duration> {
        self.max_total_delay
    }
}

impl TryFrom<&RetryConfig> for RetryPolicy {
    type Error = InvalidSettings;

    /// Builds the policy from its settings; the budget is built separately
    /// ([`RetryBudget::try_from`]) because it is shared by all operations of a store.
    fn try_from(config: &RetryConfig) -> Result<Self, Self::Error> {
        Ok(Self::new(Backoff::try_from(config)?, config.max_attempts)?
            .with_max_total_delay(config.max_total_delay))
    }
}

/// Why [`Retrier::retry`] gave up, with the last error and the number of attempts made.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    /// The error was permanent, or its outcome unknown for a non-idempotent operation.
    #[error("not retried after attempt {attempts}")]
    NotRetryable {
        /// The last error.
        #[source]
        error: E,
        /// Attempts made, the first included.
        attempts: u32,
    },
    /// The error was retryable but `max_attempts` attempts were made.
    #[error("gave up after {attempts} attempts")]
    AttemptsExhausted {
        /// The last error.
        #[source]
        error: E,
        /// Attempts made, the first included.
        attempts: u32,
    },
    /// The error was retryable but the next delay would exceed the total-delay cap.
    #[error("gave up after {attempts} attempts: the next delay would exceed the total delay cap")]
    DelayExhausted {
        /// The last error.
        #[source]
        error: E,
        /// Attempts made, the first included.
        attempts: u32,
    },
    /// The error was retryable but the retry budget refused the retry.
    #[error("gave up after {attempts} attempts: the retry budget is exhausted")]
    BudgetExhausted {
        /// The last error.
        #[source]
        error: E,
        /// Attempts made, the first included.
        attempts: u32,
    },
}

impl<E> RetryError<E> {
    /// The last error.
    pub fn error(&self) -> &E {
        match self {
            Self::NotRetryable { error, .. }
            | Self::AttemptsExhausted { error, .. }
            | Self::DelayExhausted { error, .. }
            | Self::BudgetExhausted { error, .. } => error,
        }
    }

    /// The last error, by value.
    pub fn into_error(self) -> E {
        match self {
            Self::NotRetryable { error, .. }
            | Self::AttemptsExhausted { error, .. }
            | Self::DelayExhausted { error, .. }
            | Self::BudgetExhausted { error, .. } => error,
        }
    }

    /// Attempts made, the first included.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::NotRetryable { attempts, .. }
            | Self::AttemptsExhausted { attempts, .. }
            | Self::DelayExhausted { attempts, .. }
            | Self::BudgetExhausted { attempts, .. } => *attempts,
        }
    }

    /// Whether the error was retryable but retries ran out (attempts, delay or budget): the
    /// caller should report it as persistent rather than temporary.
    pub fn is_persistent(&self) -> bool {
        !matches!(self, Self::NotRetryable { .. })
    }
}

/// Runs operations with retries: a [`RetryPolicy`], an optional shared [`RetryBudget`], a
/// clock to sleep on, an observer, and a seed for the jitter.
///
/// Whether an error may be retried is a property of the error ([`ClassifyRetry`]) and of the
/// operation ([`Operation::is_idempotent`]), never of its message:
///
/// | [`RetryClass`] | idempotent operation | non-idempotent operation |
/// |---|---|---|
/// | `Temporary` (nothing was done, e.g. connection refused) | retried | retried |
/// | `OutcomeUnknown` (e.g. a timeout after the command was sent) | retried | not retried |
/// | `Permanent` (bad input, open breaker, ...) | not retried | not retried |
///
/// [`Retrier::retry`] runs an operation until it succeeds or one of these stops it, in this
/// order: the error is not retryable; `max_attempts` attempts were made; the next delay would
/// take the sum of delays past `max_total_delay`; the [`RetryBudget`] refuses. The returned
/// [`RetryError`] says which, so the caller can mark an error that was retryable but ran out of
/// retries as persistent.
#[derive(Debug)]
pub struct Retrier {
    policy: RetryPolicy,
    budget: Option<Arc<RetryBudget>>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn Observer>,
    seed: AtomicU64,
}

impl Retrier {
    /// A retrier without budget, sleeping on the tokio clock, with jitter seeded from process
    /// entropy and no observer.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            budget: None,
            clock: default_clock(),
            observer: noop(),
            seed: AtomicU64::new(Rng::from_entropy().next_u64()),
        }
    }

    /// A retrier built from its settings, with the budget when `config.budget.enabled`, both
    /// reading time from `clock`.
    ///
    /// # Errors
    /// When a setting is out of range.
    pub fn from_config(
        config: &RetryConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, InvalidSettings> {
        let retrier = Self::new(RetryPolicy::try_from(config)?).with_clock(Arc::clone(&clock));
        Ok(if config.budget.enabled {
            let budget = RetryBudget::try_from(&config.budget)?.with_clock(clock);
            retrier.with_budget(Arc::new(budget))
        } else {
            retrier
        })
    }

    /// The same retrier limited by `budget`, which may be shared with other retriers.
    #[must_use]
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The same retrier sleeping on `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same retrier reporting retries and budget refusals to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The same retrier with jitter seeded from `seed`: the n-th operation that needs a delay
    /// draws the same delays on every run.
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        self.seed.store(seed, Ordering::Relaxed);
        self
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The budget, when there is one.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
    }

    /// Runs `attempt` (given the attempt number, 1 for the first) until it succeeds or retrying
    /// stops, sleeping between attempts on the retrier's clock.
    ///
    /// Each call deposits into the budget once; each retry withdraws from it. Each retry and
    /// each refusal by the budget is reported to the observer.
    ///
    /// # Errors
    /// The last error, wrapped in a [`RetryError`] saying why retrying stopped.
    pub async fn retry<T, E, F, Fut>(
        &self,
        operation: Operation,
        mut attempt: F,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: ClassifyRetry,
    {
        let mut retries = self.start(operation);
        loop {
            match attempt(retries.attempt()).await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    let delay = retries.after_error(error)?;
                    retries.wait(delay).await;
                }
            }
        }
    }

    /// Starts one operation for a caller that drives the retry loop itself (to keep state
    /// between attempts without sharing it with a closure): the same decisions as
    /// [`Retrier::retry`], made one failed attempt at a time by [`RetryLoop::after_error`].
    ///
    /// Deposits into the budget, as every call does.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use engram_resilience::{ClassifyRetry, Operation, Retrier, RetryClass, RetryPolicy};
    /// # #[derive(Debug)] struct Busy;
    /// # impl ClassifyRetry for Busy { fn retry_class(&self) -> RetryClass { RetryClass::Temporary } }
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let retrier = Retrier::new(RetryPolicy::never());
    /// let mut retries = retrier.start(Operation::idempotent("get"));
    /// let outcome = loop {
    ///     let result: Result<u8, Busy> = Err(Busy); // one attempt
    ///     match result {
    ///         Ok(value) => break Ok(value),
    ///         Err(error) => match retries.after_error(error) {
    ///             Ok(delay) => retries.wait(delay).await,
    ///             Err(gave_up) => break Err(gave_up),
    ///         },
    ///     }
    /// };
    /// assert_eq!(outcome.unwrap_err().attempts(), 1);
    /// # }
    /// ```
    pub fn start(&self, operation: Operation) -> RetryLoop<'_> {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        self.first_attempt(operation)
    }

    /// Starts `operation` at `now`, a time read from [`Retrier::now`]: as [`Retrier::start`],
    /// without reading the clock again, for a caller that reads it anyway (to time the call).
    pub fn start_at(&self, operation: Operation, now: Instant) -> RetryLoop<'_> {
        if let Some(budget) = &self.budget {
            budget.deposit_at(now);
        }
        self.first_attempt(operation)
    }

    /// The time that [`Retrier::start_at`] expects: on the budget's clock when there is a
    /// budget, else on the retrier's own.
    pub fn now(&self) -> Instant {
        match &self.budget {
            Some(budget) => budget.now(),
            None => self.clock.now(),
        }
    }

    fn first_attempt(&self, operation: Operation) -> RetryLoop<'_> {
        RetryLoop { retrier: self, operation, attempts: 1, delays: None, slept: Duration::ZERO }
    }

    /// A generator for one operation's jitter, from the shared seed sequence.
    fn next_rng(&self) -> Rng {
        let mut state = self.seed.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        Rng::seeded(splitmix64(&mut state))
    }
}

/// One operation's way through the retry loop of a [`Retrier`], from [`Retrier::start`].
///
/// After each failed attempt, [`RetryLoop::after_error`] says whether to try again and after
/// which delay, with the same checks in the same order as [`Retrier::retry`]; the caller
/// waits ([`RetryLoop::wait`]) and makes the next attempt.
#[derive(Debug)]
pub struct RetryLoop<'r> {
    retrier: &'r Retrier,
    operation: Operation,
    attempts: u32,
    /// Built on the first failure only, so that a first-try success costs no randomness; boxed
    /// so that the loop's state, held by every call's future, stays small.
    delays: Option<Box<Delays<Rng>>>,
    slept: Duration,
}

impl RetryLoop<'_> {
    /// The number of the attempt to make now: 1 for the first.
    pub fn attempt(&self) -> u32 {
        self.attempts
    }

    /// Decides after attempt [`RetryLoop::attempt`] failed with `error`: `Ok(delay)` to wait
    /// `delay` and make the next attempt (the retry is then withdrawn from the budget and
    /// reported to the observer), or the [`RetryError`] that ends the operation.
    ///
    /// # Errors
    /// The error, wrapped in a [`RetryError`] saying why retrying stops.
    pub fn after_error<E: ClassifyRetry>(&mut self, error: E) -> Result<Duration, RetryError<E>> {
        let (retrier, operation, attempts) = (self.retrier, self.operation, self.attempts);
        if !operation.may_retry(error.retry_class()) {
            return Err(RetryError::NotRetryable { error, attempts });
        }
        let policy = &retrier.policy;
        if attempts >= policy.max_attempts {
            return Err(RetryError::AttemptsExhausted { error, attempts });
        }
        let delay = self
            .delays
            .get_or_insert_with(|| Box::new(policy.backoff.delays_with(retrier.next_rng())))
            .next()
            .unwrap_or(policy.backoff.max());
        let total = self.slept.saturating_add(delay);
        if policy.max_total_delay.is_some_and(|cap| total > cap) {
            return Err(RetryError::DelayExhausted { error, attempts });
        }
        if let Some(budget) = &retrier.budget
            && !budget.try_withdraw()
        {
            retrier.observer.retry_budget_exhausted(operation.name);
            return Err(RetryError::BudgetExhausted { error, attempts });
        }
        drop(error);
        self.attempts += 1;
        retrier.observer.retry(operation.name, self.attempts, delay);
        self.slept = total;
        Ok(delay)
    }

    /// Waits `delay` on the retrier's clock (at once for a zero delay).
    pub async fn wait(&self, delay: Duration) {
        if let Some(sleep) = self.sleep(delay) {
            sleep.await;
        }
    }

    /// The wait of `delay` on the retrier's clock, as a future that borrows nothing (for a
    /// caller that keeps it beside this loop); `None` for a zero delay.
    pub fn sleep(&self, delay: Duration) -> Option<crate::Sleep> {
        (!delay.is_zero()).then(|| self.retrier.clock.sleep(delay))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::backoff::Jitter;
    use crate::observe::recording::{Event, Recorder};

    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    enum TestError {
        #[error("temporary")]
        Temporary,
        #[error("timed out")]
        Timeout,
        #[error("bad input")]
        BadInput,
    }

    impl ClassifyRetry for TestError {
        fn retry_class(&self) -> RetryClass {
            match self {
                Self::Temporary => RetryClass::Temporary,
                Self::Timeout => RetryClass::OutcomeUnknown,
                Self::BadInput => RetryClass::Permanent,
            }
        }
    }

    impl crate::ClassifyFailure for TestError {
        fn verdict(&self) -> crate::Verdict {
            match self {
                Self::Temporary | Self::Timeout => crate::Verdict::Failure,
                Self::BadInput => crate::Verdict::Ignored,
            }
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn retrier(max_attempts: u32) -> (Retrier, Arc<Recorder>) {
        let backoff = Backoff::exponential(ms(100), ms(1_000), 2.0).unwrap();
        let recorder = Arc::new(Recorder::default());
        let retrier = Retrier::new(RetryPolicy::new(backoff, max_attempts).unwrap())
            .with_observer(recorder.clone());
        (retrier, recorder)
    }

    /// Runs `op` failing with the scripted errors in order, then succeeding; returns the result
    /// and the number of attempts.
    async fn scripted(
        retrier: &Retrier,
        op: Operation,
        script: &[TestError],
    ) -> (Result<u32, RetryError<TestError>>, u32) {
        let calls = Mutex::new(0u32);
        let result = retrier
            .retry(op, |n| {
                *calls.lock().unwrap() += 1;
                let outcome = script.get(n as usize - 1).copied();
                async move { outcome.map_or(Ok(n), Err) }
            })
            .await;
        let calls = *calls.lock().unwrap();
        (result, calls)
    }

    const READ: Operation = Operation::idempotent("get");
    const INCR: Operation = Operation::non_idempotent("incr");

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_sleeping_exact_delays() {
        let (retrier, recorder) = retrier(5);
        let start = tokio::time::Instant::now();
        let (result, calls) = scripted(&retrier, READ, &[TestError::Temporary; 3]).await;
        assert_eq!(result.unwrap(), 4);
        assert_eq!(calls, 4);
        assert_eq!(start.elapsed(), ms(100 + 200 + 400));
        assert_eq!(
            recorder.events(),
            [
                Event::Retry("get", 2, ms(100)),
                Event::Retry("get", 3, ms(200)),
                Event::Retry("get", 4, ms(400))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_attempts() {
        let (retrier, _) = retrier(3);
        let (result, calls) = scripted(&retrier, READ, &[TestError::Temporary; 10]).await;
        let error = result.unwrap_err();
        assert!(matches!(
            error,
            RetryError::AttemptsExhausted { attempts: 3, error: TestError::Temporary }
        ));
        assert!(error.is_persistent());
        assert_eq!(error.to_string(), "gave up after 3 attempts");
        assert_eq!(calls, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_total_delay_cap() {
        let (retrier, recorder) = retrier(10);
        let retrier =
            Retrier { policy: retrier.policy.with_max_total_delay(Some(ms(750))), ..retrier };
        let start = tokio::time::Instant::now();
        let (result, calls) = scripted(&retrier, READ, &[TestError::Temporary; 10]).await;
        // 100 + 200 + 400 = 700 fits; the next delay (800) would reach 1500.
        assert!(matches!(result, Err(RetryError::DelayExhausted { attempts: 4, .. })));
        assert_eq!(calls, 4);
        assert_eq!(start.elapsed(), ms(700));
        assert_eq!(recorder.events().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let (retrier, recorder) = retrier(5);
        let (result, calls) =
            scripted(&retrier, READ, &[TestError::Temporary, TestError::BadInput]).await;
        let error = result.unwrap_err();
        assert!(matches!(
            error,
            RetryError::NotRetryable { attempts: 2, error: TestError::BadInput }
        ));
        assert!(!error.is_persistent());
        assert_eq!(calls, 2);
        assert_eq!(recorder.events(), [Event::Retry("get", 2, ms(100))]);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_outcome_is_retried_only_when_idempotent() {
        let (retrier, _) = retrier(5);
        let (result, calls) = scripted(&retrier, READ, &[TestError::Timeout]).await;
        assert_eq!((result.unwrap(), calls), (2, 2));
        let (result, calls) = scripted(&retrier, INCR, &[TestError::Timeout]).await;
        assert!(matches!(
            result,
            Err(RetryError::NotRetryable { attempts: 1, error: TestError::Timeout })
        ));
        assert_eq!(calls, 1);
        // A temporary error means the command never ran: safe to retry even when not idempotent.
        let (result, _) = scripted(&retrier, INCR, &[TestError::Temporary]).await;
        assert_eq!(result.unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn never_policy_makes_one_attempt() {
        let retrier = Retrier::new(RetryPolicy::never());
        let (result, calls) = scripted(&retrier, READ, &[TestError::Temporary]).await;
        assert!(matches!(result, Err(RetryError::AttemptsExhausted { attempts: 1, .. })));
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn seeded_jitter_is_reproducible() {
        let backoff =
            Backoff::exponential(ms(100), ms(1_000), 2.0).unwrap().with_jitter(Jitter::Full);
        let delays = |seed| async move {
            let recorder = Arc::new(Recorder::default());
            let retrier = Retrier::new(RetryPolicy::new(backoff, 4).unwrap())
                .with_seed(seed)
                .with_observer(recorder.clone());
            let _ = scripted(&retrier, READ, &[TestError::Temporary; 4]).await;
            let _ = scripted(&retrier, READ, &[TestError::Temporary; 4]).await;
            recorder.events()
        };
        let first = delays(7).await;
        assert_eq!(first.len(), 6);
        assert_eq!(first, delays(7).await);
        assert_ne!(first, delays(8).await);
        // Two operations of one retrier draw different jitter.
        assert_ne!(
            first[..3].iter().map(delay_of).collect::<Vec<_>>(),
            first[3..].iter().map(delay_of).collect::<Vec<_>>()
        );
    }

    fn delay_of(event: &Event) -> Option<Duration> {
        match event {
            Event::Retry(_, _, delay) => Some(*delay),
            _ => None,
        }
    }

    /// A call started at a time read from the retrier deposits into the budget at that time,
    /// on the budget's clock, whatever the retrier's own clock.
    #[test]
    fn a_call_started_at_a_time_deposits_then() {
        let budget_clock = crate::ManualClock::new();
        let budget = Arc::new(
            RetryBudget::new(1.0, 0, Duration::from_secs(10))
                .unwrap()
                .with_clock(Arc::new(budget_clock.clone())),
        );
        let retrier = Retrier::new(RetryPolicy::new(Backoff::fixed(ms(1)), 3).unwrap())
            .with_budget(budget.clone());
        let at = retrier.now();
        assert_eq!(at, budget_clock.now());
        budget_clock.advance(Duration::from_secs(5));
        assert_eq!(retrier.start_at(READ, at).attempt(), 1);
        assert_eq!(budget.available(), 1);
        budget_clock.advance(Duration::from_millis(5_500));
        assert_eq!(budget.available(), 0, "the deposit counts from `at`, 10.5 s ago");
    }

    /// An outage: every attempt of 1,000 logical calls fails with a temporary error. Without a
    /// budget each call makes 3 attempts; with a budget of 10% plus 10 per second over 10s, the
    /// retries are bounded by 0.1 × 1,000 + 100.
    #[tokio::test(start_paused = true)]
    async fn budget_bounds_amplification_during_an_outage() {
        let policy = RetryPolicy::new(Backoff::fixed(ms(1)), 3).unwrap();
        let recorder = Arc::new(Recorder::default());
        let budget = Arc::new(RetryBudget::new(0.1, 10, Duration::from_secs(10)).unwrap());
        let retrier = Retrier::new(policy).with_budget(budget).with_observer(recorder.clone());
        let start = tokio::time::Instant::now();
        let mut attempts = 0u32;
        let mut refused = 0u32;
        for _ in 0..1_000 {
            let (result, calls) = scripted(&retrier, READ, &[TestError::Temporary; 3]).await;
            attempts += calls;
            if matches!(result, Err(RetryError::BudgetExhausted { .. })) {
                refused += 1;
            }
        }
        // The whole outage fits in one budget window, so nothing expires.
        assert!(start.elapsed() < Duration::from_secs(10));
        let retries = attempts - 1_000;
        // The reserve (10 per second over the 10s window) plus one retry per ten calls.
        assert_eq!(retries, 100 + 1_000 / 10);
        let amplification = f64::from(attempts) / 1_000.0;
        assert!(amplification <= 1.2, "amplification {amplification}");
        let events = recorder.events();
        let exhausted =
            events.iter().filter(|e| matches!(e, Event::BudgetExhausted("get"))).count();
        assert_eq!(exhausted as u32, refused);
        assert_eq!(events.len() as u32 - refused, retries);
        // Without the budget the same outage triples the load.
        let unbudgeted = Retrier::new(RetryPolicy::new(Backoff::fixed(ms(1)), 3).unwrap());
        let mut attempts = 0u32;
        for _ in 0..1_000 {
            attempts += scripted(&unbudgeted, READ, &[TestError::Temporary; 3]).await.1;
        }
        assert_eq!(attempts, 3_000);
    }

    /// The storage layers box these futures as `Send`; so must they be.
    #[test]
    fn shared_types_and_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Retrier>();
        assert_send_sync::<RetryBudget>();
        assert_send_sync::<crate::CircuitBreaker>();
        assert_send_sync::<crate::HealthChecker>();
        let retrier = Retrier::new(RetryPolicy::never());
        let future = retrier.retry(READ, |_| async { Ok::<u8, TestError>(1) });
        assert_send(&future);
        let breaker =
            crate::CircuitBreaker::new("send", &engram_config::CircuitBreakerConfig::default())
                .unwrap();
        let future = breaker.call(|| async { Ok::<u8, TestError>(1) });
        assert_send(&future);
    }

    #[test]
    fn policy_from_config() {
        let policy = RetryPolicy::try_from(&RetryConfig::default()).unwrap();
        assert_eq!(policy.max_attempts(), 3);
        assert_eq!(policy.max_total_delay(), Some(Duration::from_secs(5)));
        let bad = RetryConfig { max_attempts: 0, ..RetryConfig::default() };
        assert_eq!(RetryPolicy::try_from(&bad).unwrap_err().setting(), "max_attempts");
        let retrier = Retrier::from_config(&RetryConfig::default(), default_clock()).unwrap();
        assert!(retrier.budget().is_some());
    }
}
