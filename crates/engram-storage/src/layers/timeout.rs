//! The timeout layer: bounds each attempt.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use super::Policy;
use super::stack::Chain;
use crate::backend::BatchReport;
use crate::error::{ErrorKind, Operation, StorageError};

/// Bounds each attempt by `per_call` plus `per_item` for every item of a batch. Its error is
/// [`ErrorKind::Timeout`]: temporary, with an unknown outcome (the command may have run).
///
/// A call the backend bounds itself within that limit ([`StorageBackend::call_limit`]: a
/// Redis read of a few ids, which the client ends at `redis.command_timeout`) gets no timer
/// of its own: it ends in time either way, with the backend's [`ErrorKind::Timeout`].
///
/// [`StorageBackend::call_limit`]: crate::StorageBackend::call_limit
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

    /// How long an attempt of `items` items may take before this policy ends it; `None` when
    /// the backend's own limit for the call (`own_limit`, [`StorageBackend::call_limit`]) is
    /// within it, so that no timer of ours is needed.
    ///
    /// [`StorageBackend::call_limit`]: crate::StorageBackend::call_limit
    pub(super) fn timer(&self, items: usize, own_limit: Option<Duration>) -> Option<Duration> {
        // The limit is at least `per_call`: compared with that first, the common case (the
        // backend's own limit within it) costs no arithmetic on durations.
        if own_limit.is_some_and(|own| own <= self.per_call) {
            return None;
        }
        let limit = self.limit(items);
        if own_limit.is_some_and(|own| own <= limit) {
            return None;
        }
        Some(limit)
    }

    /// The error of an attempt of `items` items that did not answer in time.
    pub(super) fn elapsed(&self, op: Operation, items: usize) -> StorageError {
        StorageError::new(
            ErrorKind::Timeout,
            op,
            format!("no answer within {:?}", self.limit(items)),
        )
    }
}

impl Policy for TimeoutPolicy {
    run_through_chain!(this => Chain { timeout: Some(this), ..Chain::default() });
}
