//! The timeout layer: bounds each attempt.

use std::future::Future;
use std::time::Duration;

use super::Policy;
use crate::backend::BatchReport;
use crate::error::{ErrorKind, Operation, StorageError};

/// Bounds each attempt by `per_call` plus `per_item` for every item of a batch. Its error is
/// [`ErrorKind::Timeout`]: temporary, with an unknown outcome (the command may have run).
#[derive(Debug, Clone, Copy)]
pub struct TimeoutPolicy {
    per_call: Duration,
    per_item: Duration,
}

impl TimeoutPolicy {
    /// `per_call` for every call, plus 1 ms per item of a batch.
    pub fn new(per_call: Duration) -> Self {
        Self { per_call, per_item: Duration::from_millis(1) }
    }

    /// Sets the allowance per batch item.
    pub fn with_per_item(mut self, per_item: Duration) -> Self {
        self.per_item = per_item;
        self
    }

    /// The limit for a call with `items` items.
    pub fn limit(&self, items: usize) -> Duration {
        self.per_call
            .saturating_add(self.per_item.saturating_mul(u32::try_from(items).unwrap_or(u32::MAX)))
    }

    fn elapsed(&self, op: Operation, items: usize) -> StorageError {
        StorageError::new(
            ErrorKind::Timeout,
            op,
            format!("no answer within {:?}", self.limit(items)),
        )
    }
}

impl Policy for TimeoutPolicy {
    async fn call<'a, T, F, Fut>(&'a self, op: Operation, mut f: F) -> Result<T, StorageError>
    where
        T: Send + 'a,
        F: FnMut() -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'a,
    {
        tokio::time::timeout(self.limit(0), f()).await.unwrap_or_else(|_| Err(self.elapsed(op, 0)))
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
        let n = items.len();
        match tokio::time::timeout(self.limit(n), f(items)).await {
            Ok(report) => report,
            Err(_) => BatchReport::all_failed(n, &self.elapsed(op, n)),
        }
    }
}
