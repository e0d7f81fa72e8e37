//! The circuit-breaker layer: sheds calls while the server is failing.

use std::future::Future;
use std::sync::Arc;

use engram_resilience::{BreakerError, CircuitBreaker, Rejected, Verdict};

use super::Policy;
use super::classify::is_dependency_failure;
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

impl Policy for BreakerPolicy {
    async fn call<'a, T, F, Fut>(&'a self, op: Operation, f: F) -> Result<T, StorageError>
    where
        T: Send + 'a,
        F: FnMut() -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'a,
    {
        self.breaker.call(f).await.map_err(|e| match e {
            BreakerError::Rejected(r) => rejected(op, &r),
            BreakerError::Inner(e) => e,
        })
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
        let permit = match self.breaker.try_acquire() {
            Ok(p) => p,
            Err(r) => return BatchReport::all_failed(items.len(), &rejected(op, &r)),
        };
        let report = f(items).await;
        let failed = report.items.iter().any(|o| o.err().is_some_and(is_dependency_failure));
        let ran = report.items.iter().any(|o| matches!(o, ItemOutcome::Succeeded(_)));
        permit.record(if failed {
            Verdict::Failure
        } else if ran {
            Verdict::Success
        } else {
            Verdict::Ignored
        });
        report
    }
}
