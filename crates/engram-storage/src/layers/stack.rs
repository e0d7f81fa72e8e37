//! The path of a call through the layers: the four policies applied, in the documented
//! order, by one hand-written future per call.
//!
//! [`Chain`] holds the policies that are present. A call runs `metrics` (in-flight gauge,
//! span, timing), then the retry loop, whose every attempt is the breaker's admission, the
//! call under the timeout, and the breaker's record. A policy that is absent is skipped.
//!
//! The clock is read twice per call, at its start and at its end, and only when a policy
//! needs it: the metrics time the call, and the retry budget counts the call at its start
//! (one read for both, on the retrier's clock). An attempt that needs a timer of ours (the
//! backend does not end it in time itself) reads it again to arm it.
//!
//! A call is one future, [`CallFuture`] or [`BatchFuture`], holding the policies' state
//! (span, in-flight gauge, retry loop, permit, timer) beside the backend's future. Written as
//! `async fn`s nested one per step, the same steps cost about a thousand instructions per
//! call in moves between their states and in polls through each level (measured with
//! callgrind, see `benches/layers.rs`), more than the policies' own work. The timer is boxed
//! and armed only when the backend does not end the call itself, since tokio's is a few
//! hundred bytes; a batch's rounds of retries, which few batches need, are an `async fn` in
//! a box of their own.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::mem;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use engram_resilience::{Operation as RetryOperation, Permit, RetryLoop, Sleep as Wait, Verdict};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};
use tracing::{Instrument, Span};

use super::breaker::BreakerPolicy;
use super::metrics::{InFlight, MetricsPolicy, batch_outcome, record_error};
use super::retry::{
    RetryPolicy, length_mismatch, merge, operation, persist, retry_error, retryable,
};
use super::timeout::TimeoutPolicy;
use crate::backend::{BatchReport, ItemOutcome};
use crate::error::{ErrorKind, Operation, StorageError};

/// A batch whose first attempt left items to retry.
struct Retrying<'a, 'r, I: Clone, T> {
    /// Every item of the batch.
    items: Cow<'a, [I]>,
    retries: RetryLoop<'r>,
    /// Every item's outcome so far.
    out: Vec<ItemOutcome<T>>,
    /// The positions of the items to send again, in order.
    pending: Vec<usize>,
    /// The error the retry loop decides on.
    error: StorageError,
}

impl<'a, 'r, I: Clone, T> Retrying<'a, 'r, I, T> {
    /// After the first attempt of a batch of `items`: its report when no item needs a retry,
    /// else the state of the rounds to come.
    fn after_first(
        op: Operation,
        rop: RetryOperation,
        items: Cow<'a, [I]>,
        retries: RetryLoop<'r>,
        report: BatchReport<T>,
    ) -> Result<BatchReport<T>, Box<Self>> {
        let n = items.len();
        let (out, pending, error) = if report.items.len() == n {
            let Some(at) = report.items.iter().position(|o| retryable(rop, o)) else {
                return Ok(report);
            };
            let error = retry_error(op, &report.items[at]);
            let pending = (at..n).filter(|&i| retryable(rop, &report.items[i])).collect();
            (report.items, pending, error)
        } else {
            let e = length_mismatch(op, report.items.len(), n);
            let out = (0..n).map(|_| ItemOutcome::Failed(e.duplicate())).collect();
            (out, (0..n).collect(), e)
        };
        Err(Box::new(Self { items, retries, out, pending, error }))
    }
}

/// The policies a call goes through, outermost first; `None` for a layer that is absent.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Chain<'p> {
    pub(super) metrics: Option<&'p MetricsPolicy>,
    pub(super) retry: Option<&'p RetryPolicy>,
    pub(super) breaker: Option<&'p BreakerPolicy>,
    pub(super) timeout: Option<&'p TimeoutPolicy>,
    /// How long the backend lets this call wait before it ends it itself
    /// ([`crate::StorageBackend::call_limit`]); the timeout arms no timer within it.
    pub(super) own_limit: Option<Duration>,
}

/// The timer of an attempt, boxed so that a call's future stays small when none is armed.
type Timer = Option<Pin<Box<Sleep>>>;

/// Polls an attempt's `call`: its output, or `timed_out()` once `timer` (when there is one)
/// fires. Either way the call and its timer are then dropped.
fn poll_call<Fut: Future>(
    mut call: Pin<&mut Option<Fut>>,
    timer: &mut Timer,
    cx: &mut Context<'_>,
    timed_out: impl FnOnce() -> Fut::Output,
) -> Poll<Fut::Output> {
    let Some(running) = call.as_mut().as_pin_mut() else {
        unreachable!("an attempt's call is polled only while it runs")
    };
    let out = match running.poll(cx) {
        Poll::Ready(out) => out,
        Poll::Pending if timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready()) => {
            timed_out()
        }
        Poll::Pending => return Poll::Pending,
    };
    call.set(None);
    if timer.is_some() {
        *timer = None;
    }
    Poll::Ready(out)
}

impl<'p> Chain<'p> {
    /// Runs a single call (`f` is called once per attempt).
    pub(super) fn call<T, F, Fut>(self, op: Operation, f: F) -> CallFuture<'p, T, F, Fut>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        CallFuture {
            run: Run::new(self, op),
            f,
            stage: Stage::Start,
            permit: None,
            timer: None,
            call: None,
            wait: None,
            out: PhantomData,
        }
    }

    /// Runs a batch; `f` receives the items to send and reports one outcome per item.
    pub(super) fn batch<'a, I, T, F, Fut>(
        self,
        op: Operation,
        items: Cow<'a, [I]>,
        f: F,
    ) -> BatchFuture<'a, I, T, F, Fut>
    where
        'p: 'a,
        I: Clone,
        F: Fn(Cow<'a, [I]>) -> Fut,
        Fut: Future<Output = BatchReport<T>>,
    {
        BatchFuture {
            run: Run::new(self, op),
            n: items.len(),
            items,
            f: Some(f),
            stage: Stage::Start,
            permit: None,
            timer: None,
            call: None,
            rounds: None,
        }
    }

    /// An attempt of `op` on `items` items, starting now: the breaker's permit (none without a
    /// breaker) and the timer (none without a timeout, or when the backend's own limit is
    /// within it).
    fn attempt(
        &self,
        op: Operation,
        items: usize,
    ) -> Result<(Option<Permit<'p>>, Timer), StorageError> {
        let permit = self.breaker.map(|b| b.admit(op)).transpose()?;
        let timer = self
            .timeout
            .and_then(|t| t.timer(items, self.own_limit))
            .map(|limit| Box::pin(sleep(limit)));
        Ok((permit, timer))
    }

    /// The time on the retrier's clock (which its budget expects), else on tokio's.
    fn now(&self) -> Instant {
        match self.retry {
            Some(r) => r.retrier().now(),
            None => Instant::now(),
        }
    }

    /// The error of an attempt of `op` on `items` items whose timer fired.
    fn elapsed(&self, op: Operation, items: usize) -> StorageError {
        match self.timeout {
            Some(t) => t.elapsed(op, items),
            None => StorageError::new(ErrorKind::Timeout, op, "no answer in time"),
        }
    }

    /// The rounds of a batch after the first attempt left items to retry.
    async fn retry_batch<'a, I, T, F, Fut>(
        self,
        op: Operation,
        retrying: Box<Retrying<'a, 'p, I, T>>,
        f: F,
    ) -> BatchReport<T>
    where
        I: Clone,
        F: Fn(Cow<'a, [I]>) -> Fut,
        Fut: Future<Output = BatchReport<T>>,
    {
        let Retrying { items, mut retries, mut out, mut pending, mut error } = *retrying;
        let rop = operation(op);
        let n = items.len();
        loop {
            match retries.after_error(error) {
                Ok(delay) => retries.wait(delay).await,
                Err(gave_up) => {
                    if gave_up.is_persistent() {
                        for &i in &pending {
                            if let ItemOutcome::Failed(e) =
                                std::mem::replace(&mut out[i], ItemOutcome::NotAttempted)
                            {
                                out[i] = ItemOutcome::Failed(e.into_persistent());
                            }
                        }
                    }
                    return BatchReport::new(out);
                }
            }
            let send = if pending.len() == n {
                items.clone()
            } else {
                Cow::Owned(pending.iter().map(|&i| items[i].clone()).collect())
            };
            let report = self.attempt_batch(op, send, &f).await;
            if report.items.len() != pending.len() {
                let e = length_mismatch(op, report.items.len(), pending.len());
                for &i in &pending {
                    out[i] = ItemOutcome::Failed(e.duplicate());
                }
                error = e;
                continue;
            }
            let (again, first) = merge(op, rop, &mut out, &pending, report);
            pending = again;
            match first {
                Some(e) => error = e,
                None => return BatchReport::new(out),
            }
        }
    }

    /// One attempt of a batch: admission, the call under the timeout (unless the backend's
    /// own limit is within it), the record. A batch is one call for the breaker.
    async fn attempt_batch<'a, I, T, F, Fut>(
        &self,
        op: Operation,
        items: Cow<'a, [I]>,
        f: &F,
    ) -> BatchReport<T>
    where
        I: Clone,
        F: Fn(Cow<'a, [I]>) -> Fut,
        Fut: Future<Output = BatchReport<T>>,
    {
        let n = items.len();
        let (permit, mut timer) = match self.attempt(op, n) {
            Ok(attempt) => attempt,
            Err(rejected) => return BatchReport::all_failed(n, &rejected),
        };
        let mut call = pin!(Some(f(items)));
        let report = poll_fn(|cx| {
            poll_call(call.as_mut(), &mut timer, cx, || {
                BatchReport::all_failed(n, &self.elapsed(op, n))
            })
        })
        .await;
        if let Some(p) = permit {
            BreakerPolicy::settle_batch(p, &report);
        }
        report
    }
}

/// Where a call's future is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not polled yet.
    Start,
    /// To make the next attempt.
    Attempt,
    /// An attempt's call is running.
    Calling,
    /// Waiting before the next attempt (single calls) or running the rounds of retries
    /// (batches).
    Retrying,
    /// Ended.
    Done,
}

/// What a call does before its first attempt and after its last (metrics, the retry loop):
/// the same for single calls and batches.
struct Run<'p> {
    chain: Chain<'p>,
    op: Operation,
    /// The span of the call (disabled when nothing listens at debug level).
    span: Span,
    /// Counts the call in flight until the call ends.
    in_flight: Option<InFlight>,
    /// When the call started (its first poll), if a policy reads the clock.
    start: Option<Instant>,
    retries: Option<RetryLoop<'p>>,
}

impl<'p> Run<'p> {
    fn new(chain: Chain<'p>, op: Operation) -> Self {
        Self { chain, op, span: Span::none(), in_flight: None, start: None, retries: None }
    }

    /// Starts the call on `keys` keys, at its first poll: the span, the in-flight gauge, the
    /// clock, the retry loop (which deposits the call into the retry budget at that time).
    fn begin(&mut self, keys: usize) {
        let (chain, op) = (self.chain, self.op);
        if let Some(m) = chain.metrics {
            self.span = m.span(op, keys);
            self.in_flight = Some(InFlight::start(op));
        }
        if chain.metrics.is_some() || chain.retry.is_some() {
            let now = chain.now();
            self.start = Some(now);
            self.retries = chain.retry.map(|r| r.retrier().start_at(operation(op), now));
        }
    }

    /// Records the end of the call on `keys` keys, whose error kind is `kind`.
    fn finish(&self, kind: Option<ErrorKind>, keys: usize, batch: bool) {
        self.finish_with(kind, keys, batch, None);
    }

    /// As [`Run::finish`], with the hits and misses of a read by id.
    fn finish_with(
        &self,
        kind: Option<ErrorKind>,
        keys: usize,
        batch: bool,
        reads: Option<(usize, usize)>,
    ) {
        if let (Some(m), Some(start)) = (self.chain.metrics, self.start) {
            let elapsed = self.chain.now().saturating_duration_since(start);
            m.finish(self.op, kind, elapsed, keys, batch, reads, &self.span);
        }
    }
}

pin_project! {
    /// A single call through a [`Chain`], from [`Chain::call`].
    pub(super) struct CallFuture<'p, T, F, Fut> {
        run: Run<'p>,
        f: F,
        stage: Stage,
        // The current attempt's permit and timer.
        permit: Option<Permit<'p>>,
        timer: Timer,
        // The current attempt's call, while it runs.
        #[pin]
        call: Option<Fut>,
        // The wait before the next attempt.
        wait: Option<Wait>,
        out: PhantomData<fn() -> T>,
    }
}

impl<T, F, Fut> Future for CallFuture<'_, T, F, Fut>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    type Output = Result<T, StorageError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let run = this.run;
        if *this.stage == Stage::Start {
            run.begin(1);
            *this.stage = Stage::Attempt;
        }
        let (chain, op) = (run.chain, run.op);
        let _entered = run.span.enter();
        loop {
            let result = match *this.stage {
                Stage::Attempt => match chain.attempt(op, 0) {
                    Ok((permit, timer)) => {
                        *this.permit = permit;
                        *this.timer = timer;
                        this.call.set(Some((this.f)()));
                        *this.stage = Stage::Calling;
                        continue;
                    }
                    Err(rejected) => Err(rejected),
                },
                Stage::Calling => ready!(poll_call(this.call.as_mut(), this.timer, cx, || {
                    Err(chain.elapsed(op, 0))
                })),
                Stage::Retrying => {
                    if let Some(wait) = this.wait {
                        ready!(wait.as_mut().poll(cx));
                    }
                    *this.wait = None;
                    *this.stage = Stage::Attempt;
                    continue;
                }
                Stage::Start | Stage::Done => panic!("a call's future was polled after it ended"),
            };
            if let Some(p) = this.permit.take() {
                BreakerPolicy::settle(p, &result);
            }
            let result = match (&mut run.retries, result) {
                (Some(retries), Err(error)) => match retries.after_error(error) {
                    Ok(delay) => {
                        *this.wait = retries.sleep(delay);
                        *this.stage = Stage::Retrying;
                        continue;
                    }
                    Err(gave_up) => Err(persist(gave_up)),
                },
                (_, result) => result,
            };
            *this.stage = Stage::Done;
            run.finish(result.as_ref().err().map(StorageError::kind), 1, false);
            if let (Some(_), Err(e)) = (chain.metrics, &result) {
                record_error(op, e.kind().as_str());
            }
            run.in_flight = None;
            return Poll::Ready(result);
        }
    }
}

/// The rounds of retries of a batch, boxed.
type Rounds<'a, T> = Pin<Box<dyn Future<Output = BatchReport<T>> + Send + 'a>>;

pin_project! {
    /// A batch through a [`Chain`], from [`Chain::batch`].
    pub(super) struct BatchFuture<'a, I, T, F, Fut>
    where
        I: Clone,
    {
        run: Run<'a>,
        // The number of items.
        n: usize,
        items: Cow<'a, [I]>,
        // Taken by the rounds of retries, if any.
        f: Option<F>,
        stage: Stage,
        permit: Option<Permit<'a>>,
        timer: Timer,
        // The first attempt's call, while it runs.
        #[pin]
        call: Option<Fut>,
        // The rounds of retries, if the first attempt left items to retry.
        rounds: Option<Rounds<'a, T>>,
    }
}

impl<'a, I, T, F, Fut> Future for BatchFuture<'a, I, T, F, Fut>
where
    I: Clone + Send + Sync + 'a,
    T: Send + 'a,
    F: Fn(Cow<'a, [I]>) -> Fut + Send + Sync + 'a,
    Fut: Future<Output = BatchReport<T>> + Send + 'a,
{
    type Output = BatchReport<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let (run, n) = (this.run, *this.n);
        let (chain, op) = (run.chain, run.op);
        if *this.stage == Stage::Start {
            run.begin(n);
            *this.stage = Stage::Attempt;
        }
        let _entered = run.span.enter();
        let report = loop {
            let report = match *this.stage {
                // The first attempt, as `attempt_batch` makes the others.
                Stage::Attempt => {
                    match chain.attempt(op, n) {
                        Ok((permit, timer)) => {
                            *this.permit = permit;
                            *this.timer = timer;
                            // An owned batch is copied if a retry may need it again.
                            let send = if run.retries.is_some() {
                                this.items.clone()
                            } else {
                                mem::take(this.items)
                            };
                            let Some(f) = this.f.as_ref() else { unreachable!("f is kept") };
                            this.call.set(Some(f(send)));
                            *this.stage = Stage::Calling;
                            continue;
                        }
                        Err(rejected) => BatchReport::all_failed(n, &rejected),
                    }
                }
                Stage::Calling => ready!(poll_call(this.call.as_mut(), this.timer, cx, || {
                    BatchReport::all_failed(n, &chain.elapsed(op, n))
                })),
                Stage::Retrying => {
                    let Some(rounds) = this.rounds else { unreachable!("rounds run") };
                    break ready!(rounds.as_mut().poll(cx));
                }
                Stage::Start | Stage::Done => panic!("a batch's future was polled after it ended"),
            };
            let items = mem::take(this.items);
            match first_attempt_ended(op, n, this.permit.take(), run.retries.take(), items, report)
            {
                Ok(report) => break report,
                Err(retrying) => {
                    let Some(f) = this.f.take() else { unreachable!("f is kept") };
                    *this.rounds = Some(Box::pin(chain.retry_batch(op, retrying, f)));
                    *this.stage = Stage::Retrying;
                }
            }
        };
        *this.stage = Stage::Done;
        if chain.metrics.is_some() {
            run.finish(batch_outcome(op, &report), n, true);
        }
        run.in_flight = None;
        Poll::Ready(report)
    }
}

/// A batch begun on the inline path of the fused stack (`Chain::inline`): the policies'
/// state around the first attempt, which the caller awaits in its own future rather than
/// through a `BatchFuture` and a closure of its own.
///
/// Opaque outside this module: a [`super::Layer`] begins it ([`super::Policy::inline`]),
/// asks for admission (`Inline::admit`), awaits the backend, and ends the first attempt
/// with its report (`Inline::after_first`), which hands the rounds of retries, if any, to
/// the general path; the batch's end is recorded last (`Ending::record`).
pub struct Inline<'p> {
    run: Run<'p>,
    permit: Option<Permit<'p>>,
    keys: usize,
}

impl std::fmt::Debug for Inline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inline").field("op", &self.run.op).field("keys", &self.keys).finish()
    }
}

/// The rounds of retries of a batch begun inline, once its first attempt left items to retry.
pub(super) struct Rest<'a, 'p, I: Clone, T> {
    ending: Ending<'p>,
    retrying: Box<Retrying<'a, 'p, I, T>>,
}

/// A batch begun inline whose report is known, to be recorded (`Ending::record`).
pub(super) struct Ending<'p> {
    run: Run<'p>,
    keys: usize,
    kind: Option<ErrorKind>,
}

impl<'p> Chain<'p> {
    /// Begins a batch of `op` on `keys` keys inline, when its first attempt needs no timer of
    /// ours (the backend's own limit is within the timeout, or there is no timeout); `None`
    /// for the general path ([`Chain::batch`]).
    pub(super) fn inline(self, op: Operation, keys: usize) -> Option<Inline<'p>> {
        if self.timeout.is_some_and(|t| t.timer(keys, self.own_limit).is_some()) {
            return None;
        }
        let mut run = Run::new(self, op);
        run.begin(keys);
        Some(Inline { run, permit: None, keys })
    }
}

impl<'p> Inline<'p> {
    /// Asks the breaker for the first attempt: the span to run it in (`None` when nothing
    /// listens to it), or the report of a refused batch (every item failed with
    /// [`ErrorKind::CircuitOpen`]), which then goes to [`Inline::after_first`] without
    /// calling the backend.
    pub(super) fn admit<T>(&mut self) -> Result<Option<Span>, BatchReport<T>> {
        match self.run.chain.breaker.map(|b| b.admit(self.run.op)).transpose() {
            Ok(permit) => {
                self.permit = permit;
                Ok((!self.run.span.is_disabled()).then(|| self.run.span.clone()))
            }
            Err(rejected) => Err(BatchReport::all_failed(self.keys, &rejected)),
        }
    }

    /// Ends the first attempt with its `report` on `items`: the batch's report and its end to
    /// record, or the rounds of retries still to run.
    // Both variants carry the call's state (`Ending`), so the error is no larger than the
    // success; it is moved once, on the way to the retries.
    #[allow(clippy::type_complexity, clippy::result_large_err)]
    pub(super) fn after_first<'a, I: Clone, T>(
        mut self,
        items: Cow<'a, [I]>,
        report: BatchReport<T>,
    ) -> Result<(BatchReport<T>, Ending<'p>), Rest<'a, 'p, I, T>> {
        let (op, n) = (self.run.op, self.keys);
        let (permit, retries) = (self.permit.take(), self.run.retries.take());
        let mut ending = Ending { run: self.run, keys: n, kind: None };
        match first_attempt_ended(op, n, permit, retries, items, report) {
            Ok(report) => {
                ending.kind = batch_outcome_if(ending.run.chain.metrics.is_some(), op, &report);
                Ok((report, ending))
            }
            Err(retrying) => Err(Rest { ending, retrying }),
        }
    }
}

/// The end of a batch's first attempt of `n` items, the same on both paths: the breaker is
/// told, and the batch's report comes back (nothing to retry, or no retry loop), or the state
/// of the rounds of retries to run. The common case, every item through, takes one scan.
fn first_attempt_ended<'a, 'p, I: Clone, T>(
    op: Operation,
    n: usize,
    permit: Option<Permit<'p>>,
    retries: Option<RetryLoop<'p>>,
    items: Cow<'a, [I]>,
    report: BatchReport<T>,
) -> Result<BatchReport<T>, Box<Retrying<'a, 'p, I, T>>> {
    if report.items.len() == n
        && report.items.iter().all(|o| matches!(o, ItemOutcome::Succeeded(_)))
    {
        if let Some(p) = permit {
            p.record(if n > 0 { Verdict::Success } else { Verdict::Ignored });
        }
        return Ok(report);
    }
    if let Some(p) = permit {
        BreakerPolicy::settle_batch(p, &report);
    }
    match retries {
        None => Ok(report),
        Some(retries) => Retrying::after_first(op, operation(op), items, retries, report),
    }
}

/// The error kind of a batch's report (counting its failed items), when metrics record it.
fn batch_outcome_if<T>(metrics: bool, op: Operation, report: &BatchReport<T>) -> Option<ErrorKind> {
    if metrics { batch_outcome(op, report) } else { None }
}

impl<'a, 'p: 'a, I: Clone, T> Rest<'a, 'p, I, T> {
    /// Runs the rounds of retries, `f` sending the items of each: the batch's report and its
    /// end to record.
    pub(super) async fn run<F, Fut>(self, f: F) -> (BatchReport<T>, Ending<'p>)
    where
        F: Fn(Cow<'a, [I]>) -> Fut,
        Fut: Future<Output = BatchReport<T>>,
    {
        let Rest { mut ending, retrying } = self;
        let (chain, op) = (ending.run.chain, ending.run.op);
        let report = chain.retry_batch(op, retrying, f).instrument(ending.run.span.clone()).await;
        ending.kind = batch_outcome_if(chain.metrics.is_some(), op, &report);
        (report, ending)
    }
}

impl Ending<'_> {
    /// Records the end of the batch, with `reads` (hits and misses of a read by id) when the
    /// caller counted them: one look-up of the metrics recorder for all of it.
    pub(super) fn record(self, reads: Option<(usize, usize)>) {
        self.run.finish_with(self.kind, self.keys, true, reads);
    }
}
