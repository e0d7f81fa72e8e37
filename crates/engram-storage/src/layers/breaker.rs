//! The circuit-breaker layer: sheds calls while the server is failing.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use engram_resilience::{CircuitBreaker, ClassifyFailure, Permit, Rejected, Verdict};

use super::Policy;
use super::classify::is_dependency_failure;
use super::stack::Chain;
use crate::backend::{BatchReport, ItemOutcome};
use crate::error::{ErrorKind, Operation, RetryStatus, StorageError};

/// Admits calls through a shared [`CircuitBreaker`]. A rejection is
/// [`ErrorKind::CircuitOpen`], permanent, and touches no network. A batch is one call: it
/// counts as a failure when any item failed for the server's fault.
#[derive(Debug, Clone)]
pub struct BreakerPolicy {
    breaker: Arc<CircuitBreaker>,
}

impl BreakerPolicy {
    /// Wraps a (possibly shared) breaker.
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self { breaker }
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }
}

fn rejected(op: Operation, r: &Rejected) -> StorageError {
    StorageError::new(ErrorKind::CircuitOpen, op, r.to_string()).with_status(RetryStatus::Permanent)
}

impl BreakerPolicy {
    /// Asks the breaker for one attempt: a lock-free atomic load while closed.
    ///
    /// # Errors
    /// [`ErrorKind::CircuitOpen`] when the breaker refuses the attempt.
    pub(super) fn admit(&self, op: Operation) -> Result<Permit<'_>, StorageError> {
        self.breaker.try_acquire().map_err(|r| rejected(op, &r))
    }

    /// Reports a call's result: success, or what its error means for the breaker.
    pub(super) fn settle<T>(permit: Permit<'_>, result: &Result<T, StorageError>) {
        permit.record(match result {
            Ok(_) => Verdict::Success,
            Err(e) => e.verdict(),
        });
    }

    /// Reports a batch as one call: a failure when any item failed for the server's fault,
    /// a success when any item went through, else ignored.
    pub(super) fn settle_batch<T>(permit: Permit<'_>, report: &BatchReport<T>) {
        let (mut failed, mut ran) = (false, false);
        for o in &report.items {
            match o {
                ItemOutcome::Succeeded(_) => ran = true,
                ItemOutcome::Failed(e) => failed |= is_dependency_failure(e),
                ItemOutcome::NotAttempted => {}
            }
        }
        permit.record(if failed {
            Verdict::Failure
        } else if ran {
            Verdict::Success
        } else {
            Verdict::Ignored
        });
    }
}

impl Policy for BreakerPolicy {
    run_through_chain!(this => Chain { breaker: Some(this), ..Chain::default() });
}
