//! The retry layer: retries temporary failures within the policy and the retry budget.

use std::future::Future;
use std::sync::{Arc, Mutex};

use engram_resilience::{
    ClassifyRetry, Operation as RetryOperation, Retrier, RetryClass, RetryError,
};

use super::Policy;
use crate::backend::{BatchReport, ItemOutcome};
use crate::error::{ErrorKind, Operation, StorageError};

/// Retries through a shared [`Retrier`]. The decision comes from the error's classification
/// and the operation's idempotency; once retries run out the error becomes persistent.
///
/// A batch is retried item by item: each round re-sends only the items that failed with a
/// retryable error (or were not attempted), so a partial failure never duplicates the items
/// that succeeded. The whole batch is one call for the retry budget.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    retrier: Arc<Retrier>,
}

impl RetryPolicy {
    /// Wraps a (possibly shared) retrier.
    pub fn new(retrier: Arc<Retrier>) -> Self {
        Self { retrier }
    }
}

fn operation(op: Operation) -> RetryOperation {
    if op.is_idempotent() {
        RetryOperation::idempotent(op.as_str())
    } else {
        RetryOperation::non_idempotent(op.as_str())
    }
}

fn finish(e: RetryError<StorageError>) -> StorageError {
    let persistent = e.is_persistent();
    let error = e.into_error();
    if persistent { error.into_persistent() } else { error }
}

impl Policy for RetryPolicy {
    async fn call<'a, T, F, Fut>(&'a self, op: Operation, mut f: F) -> Result<T, StorageError>
    where
        T: Send + 'a,
        F: FnMut() -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'a,
    {
        self.retrier.retry(operation(op), |_| f()).await.map_err(finish)
    }

    async fn batch<'a, I, T, F, Fut>(
        &'a self,
        op: Operation,
        items: Vec<I>,
        mut f: F,
    ) -> BatchReport<T>
    where
        I: Clone + Send + Sync + 'a,
        T: Send + 'a,
        F: FnMut(Vec<I>) -> Fut + Send + 'a,
        Fut: Future<Output = BatchReport<T>> + Send + 'a,
    {
        let rop = operation(op);
        let n = items.len();
        let outcomes: Mutex<Vec<ItemOutcome<T>>> =
            Mutex::new((0..n).map(|_| ItemOutcome::NotAttempted).collect());
        let pending: Mutex<Vec<usize>> = Mutex::new((0..n).collect());
        let result = self
            .retrier
            .retry(rop, |_| {
                let idx = pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                let send: Vec<I> = idx.iter().map(|&i| items[i].clone()).collect();
                let fut = f(send);
                let (outcomes, pending) = (&outcomes, &pending);
                async move {
                    let report = fut.await;
                    let mut retry_again = Vec::new();
                    let mut first: Option<StorageError> = None;
                    let mut out =
                        outcomes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if report.items.len() != idx.len() {
                        let e = StorageError::new(
                            ErrorKind::Protocol,
                            op,
                            format!(
                                "the backend reported {} outcomes for {} items",
                                report.items.len(),
                                idx.len()
                            ),
                        );
                        for &i in &idx {
                            out[i] = ItemOutcome::Failed(e.duplicate());
                        }
                        return Err(e);
                    }
                    for (&i, outcome) in idx.iter().zip(report.items) {
                        let retryable = match &outcome {
                            ItemOutcome::Failed(e) => rop.may_retry(e.retry_class()),
                            ItemOutcome::NotAttempted => rop.may_retry(RetryClass::Temporary),
                            ItemOutcome::Succeeded(_) => false,
                        };
                        if retryable {
                            retry_again.push(i);
                            if first.is_none() {
                                first = Some(match &outcome {
                                    ItemOutcome::Failed(e) => e.duplicate(),
                                    _ => StorageError::new(
                                        ErrorKind::Unavailable,
                                        op,
                                        "items were not attempted",
                                    ),
                                });
                            }
                        }
                        out[i] = outcome;
                    }
                    *pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        retry_again;
                    match first {
                        None => Ok(()),
                        Some(e) => Err(e),
                    }
                }
            })
            .await;
        let mut out = outcomes.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = result
            && e.is_persistent()
        {
            let left = pending.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
            for i in left {
                if let ItemOutcome::Failed(err) =
                    std::mem::replace(&mut out[i], ItemOutcome::NotAttempted)
                {
                    out[i] = ItemOutcome::Failed(err.into_persistent());
                }
            }
        }
        BatchReport::new(out)
    }
}
