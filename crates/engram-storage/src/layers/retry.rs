//! The retry layer: retries temporary failures within the policy and the retry budget.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use engram_resilience::{
    ClassifyRetry, Operation as RetryOperation, Retrier, RetryClass, RetryError,
};

use super::Policy;
use super::stack::Chain;
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

    /// The retrier.
    pub fn retrier(&self) -> &Arc<Retrier> {
        &self.retrier
    }
}

/// The operation as the retrier sees it: its name and idempotency.
pub(super) fn operation(op: Operation) -> RetryOperation {
    if op.is_idempotent() {
        RetryOperation::idempotent(op.as_str())
    } else {
        RetryOperation::non_idempotent(op.as_str())
    }
}

/// The error that ended the retry loop: persistent when it was retryable but retries ran
/// out.
pub(super) fn persist(e: RetryError<StorageError>) -> StorageError {
    let persistent = e.is_persistent();
    let error = e.into_error();
    if persistent { error.into_persistent() } else { error }
}

/// Whether an item's outcome calls for sending it again.
pub(super) fn retryable<T>(rop: RetryOperation, outcome: &ItemOutcome<T>) -> bool {
    match outcome {
        ItemOutcome::Failed(e) => rop.may_retry(e.retry_class()),
        ItemOutcome::NotAttempted => rop.may_retry(RetryClass::Temporary),
        ItemOutcome::Succeeded(_) => false,
    }
}

/// The error the retry loop sees for a retryable item.
pub(super) fn retry_error<T>(op: Operation, outcome: &ItemOutcome<T>) -> StorageError {
    match outcome {
        ItemOutcome::Failed(e) => e.duplicate(),
        _ => StorageError::new(ErrorKind::Unavailable, op, "items were not attempted"),
    }
}

/// Merges the outcomes of the items at positions `idx` into `out`; returns the positions
/// to send again and the error of the first of them.
pub(super) fn merge<T>(
    op: Operation,
    rop: RetryOperation,
    out: &mut [ItemOutcome<T>],
    idx: &[usize],
    report: BatchReport<T>,
) -> (Vec<usize>, Option<StorageError>) {
    let mut again = Vec::new();
    let mut first = None;
    for (&i, outcome) in idx.iter().zip(report.items) {
        if retryable(rop, &outcome) {
            again.push(i);
            if first.is_none() {
                first = Some(retry_error(op, &outcome));
            }
        }
        out[i] = outcome;
    }
    (again, first)
}

/// A backend that answered for another number of items than it was given.
pub(super) fn length_mismatch(op: Operation, got: usize, sent: usize) -> StorageError {
    StorageError::new(
        ErrorKind::Protocol,
        op,
        format!("the backend reported {got} outcomes for {sent} items"),
    )
}

impl Policy for RetryPolicy {
    run_through_chain!(this => Chain { retry: Some(this), ..Chain::default() });
}
