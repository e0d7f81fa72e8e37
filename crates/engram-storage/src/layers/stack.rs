//! The path of a call through the layers: the four policies applied, in the documented
//! order, by one async function per step.
//!
//! [`Chain`] holds the policies that are present. A call runs `metrics` (in-flight gauge,
//! span, timing), then the retry loop, whose every attempt is the breaker's admission, the
//! call under the timeout, and the breaker's record. A policy that is absent is skipped.
//!
//! The clock is read once at the start of a call, for the metrics and for the deadline of
//! the first attempt (the steps in between take well under a microsecond); each retry reads
//! it again for its own deadline.
//!
//! The steps call one another with small arguments (references, the items), never with a
//! future: a future passed by value into an `async fn` is stored in its caller's state and
//! again in the callee's, so nesting four policies that each took the next one's future made
//! the future of one `get` several kilobytes, copied on every move and allocated on every
//! call.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use engram_resilience::RetryLoop;
use tokio::time::Instant;
use tracing::Instrument;

use super::breaker::BreakerPolicy;
use super::metrics::{InFlight, MetricsPolicy, batch_outcome, record_batch_size, record_error};
use super::retry::{
    RetryPolicy, length_mismatch, merge, operation, persist, retry_error, retryable,
};
use super::timeout::TimeoutPolicy;
use crate::backend::{BatchReport, ItemOutcome};
use crate::error::{Operation, StorageError};

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

impl Chain<'_> {
    /// Runs a single call (`f` is called once per attempt).
    pub(super) async fn call<T, F, Fut>(&self, op: Operation, f: &F) -> Result<T, StorageError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let Some(m) = self.metrics else {
            return self.retried(op, f, Instant::now()).await;
        };
        let _in_flight = InFlight::start(op);
        let span = m.span(op, 1);
        let traced = !span.is_disabled();
        let run = async {
            let start = Instant::now();
            let result = self.retried(op, f, start).await;
            m.finish(op, result.as_ref().err().map(StorageError::kind), start, 1, traced);
            result
        };
        // A disabled span is not entered and left on every poll.
        let result = if traced { run.instrument(span).await } else { run.await };
        result.inspect_err(|e| record_error(op, e.kind().as_str()))
    }

    /// The retry loop around attempts of a single call that started at `start`.
    async fn retried<T, F, Fut>(
        &self,
        op: Operation,
        f: &F,
        start: Instant,
    ) -> Result<T, StorageError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let Some(r) = self.retry else {
            return self.attempt(op, f, start).await;
        };
        let mut retries = r.retrier().start(operation(op));
        let mut started = start;
        loop {
            match self.attempt(op, f, started).await {
                Ok(value) => return Ok(value),
                Err(error) => match retries.after_error(error) {
                    Ok(delay) => retries.wait(delay).await,
                    Err(gave_up) => return Err(persist(gave_up)),
                },
            }
            started = Instant::now();
        }
    }

    /// One attempt of a single call, started at `started`: admission, the call under the
    /// timeout (unless the backend's own limit is within it), the record.
    async fn attempt<T, F, Fut>(
        &self,
        op: Operation,
        f: &F,
        started: Instant,
    ) -> Result<T, StorageError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let permit = match self.breaker {
            Some(b) => Some(b.admit(op)?),
            None => None,
        };
        let result =
            match self.timeout.and_then(|t| Some((t, t.deadline(started, 0, self.own_limit)?))) {
                Some((t, deadline)) => tokio::time::timeout_at(deadline, f())
                    .await
                    .unwrap_or_else(|_| Err(t.elapsed(op, 0))),
                None => f().await,
            };
        if let Some(p) = permit {
            BreakerPolicy::settle(p, &result);
        }
        result
    }

    /// Runs a batch; `f` receives the items to send and reports one outcome per item.
    pub(super) async fn batch<'a, I, T, F, Fut>(
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
        let Some(m) = self.metrics else {
            return self.retried_batch(op, items, f, Instant::now()).await;
        };
        let n = items.len();
        let _in_flight = InFlight::start(op);
        record_batch_size(op, n);
        let span = m.span(op, n);
        let traced = !span.is_disabled();
        let run = async {
            let start = Instant::now();
            let report = self.retried_batch(op, items, f, start).await;
            m.finish(op, batch_outcome(op, &report), start, n, traced);
            report
        };
        if traced { run.instrument(span).await } else { run.await }
    }

    /// The retry loop of a batch: each round re-sends only the items that failed with a
    /// retryable error (or were not attempted); the whole batch is one call for the budget.
    ///
    /// The first attempt sends the items as given (borrowed items are lent, not copied) and,
    /// when no item needs a retry, its report is returned as it is: per-item bookkeeping
    /// starts only once an attempt leaves items to retry.
    async fn retried_batch<'a, I, T, F, Fut>(
        &self,
        op: Operation,
        items: Cow<'a, [I]>,
        f: &F,
        start: Instant,
    ) -> BatchReport<T>
    where
        I: Clone,
        F: Fn(Cow<'a, [I]>) -> Fut,
        Fut: Future<Output = BatchReport<T>>,
    {
        let Some(r) = self.retry else {
            return self.attempt_batch(op, items, f, start).await;
        };
        let rop = operation(op);
        let n = items.len();
        let retries = r.retrier().start(rop);
        // An owned batch is copied, since a retry may need it again.
        let report = self.attempt_batch(op, items.clone(), f, start).await;
        let (out, pending, error) = if report.items.len() == n {
            let Some(at) = report.items.iter().position(|o| retryable(rop, o)) else {
                return report;
            };
            let error = retry_error(op, &report.items[at]);
            let pending = (at..n).filter(|&i| retryable(rop, &report.items[i])).collect();
            (report.items, pending, error)
        } else {
            let e = length_mismatch(op, report.items.len(), n);
            let out = (0..n).map(|_| ItemOutcome::Failed(e.duplicate())).collect();
            (out, (0..n).collect(), e)
        };
        // Retrying is the rare path: its state lives in a box of its own, so that the future
        // of every call stays small.
        let retrying = Retrying { items, retries, out, pending, error };
        Box::pin(self.retry_batch(op, retrying, f)).await
    }

    /// The rounds of a batch after the first attempt left items to retry.
    async fn retry_batch<'a, I, T, F, Fut>(
        &self,
        op: Operation,
        retrying: Retrying<'a, '_, I, T>,
        f: &F,
    ) -> BatchReport<T>
    where
        I: Clone,
        F: Fn(Cow<'a, [I]>) -> Fut,
        Fut: Future<Output = BatchReport<T>>,
    {
        let Retrying { items, mut retries, mut out, mut pending, mut error } = retrying;
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
            let report = self.attempt_batch(op, send, f, Instant::now()).await;
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

    /// One attempt of a batch, started at `started`: admission, the call under the timeout
    /// (unless the backend's own limit is within it), the record. A batch is one call for
    /// the breaker.
    async fn attempt_batch<'a, I, T, F, Fut>(
        &self,
        op: Operation,
        items: Cow<'a, [I]>,
        f: &F,
        started: Instant,
    ) -> BatchReport<T>
    where
        I: Clone,
        F: Fn(Cow<'a, [I]>) -> Fut,
        Fut: Future<Output = BatchReport<T>>,
    {
        let n = items.len();
        let permit = match self.breaker.map(|b| b.admit(op)) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => return BatchReport::all_failed(n, &e),
            None => None,
        };
        let report =
            match self.timeout.and_then(|t| Some((t, t.deadline(started, n, self.own_limit)?))) {
                Some((t, deadline)) => tokio::time::timeout_at(deadline, f(items))
                    .await
                    .unwrap_or_else(|_| BatchReport::all_failed(n, &t.elapsed(op, n))),
                None => f(items).await,
            };
        if let Some(p) = permit {
            BreakerPolicy::settle_batch(p, &report);
        }
        report
    }
}
