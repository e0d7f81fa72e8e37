//! What a [`StorageError`] means to the retry loop and to the circuit breaker.
//!
//! Decided by the error's kind and retry status only, never by its message.

use engram_resilience::{ClassifyFailure, ClassifyRetry, RetryClass, Verdict};

use crate::error::{ErrorKind, RetryStatus, StorageError};

impl ClassifyRetry for StorageError {
    fn retry_class(&self) -> RetryClass {
        match (self.status(), self.kind()) {
            (RetryStatus::Permanent | RetryStatus::Persistent, _) => RetryClass::Permanent,
            // A timeout after the command was sent: it may have run.
            (RetryStatus::Temporary, ErrorKind::Timeout) => RetryClass::OutcomeUnknown,
            (RetryStatus::Temporary, _) => RetryClass::Temporary,
        }
    }
}

impl ClassifyFailure for StorageError {
    fn verdict(&self) -> Verdict {
        match self.kind() {
            // The server could not serve: what the breaker exists to notice.
            ErrorKind::Unavailable
            | ErrorKind::Timeout
            | ErrorKind::Backpressure
            | ErrorKind::OutOfMemory
            | ErrorKind::Protocol
            | ErrorKind::Unexpected => Verdict::Failure,
            // The server answered: the dependency did its job.
            ErrorKind::NotFound | ErrorKind::Conflict => Verdict::Success,
            // The caller's input or configuration: says nothing about the server's health,
            // and opening the breaker would not help.
            _ => Verdict::Ignored,
        }
    }
}

/// Whether the error counts against the server for the breaker.
pub(crate) fn is_dependency_failure(e: &StorageError) -> bool {
    e.verdict() == Verdict::Failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Operation;

    #[test]
    fn classification_follows_kind_and_status() {
        let e = |k| StorageError::new(k, Operation::Get, "x");
        assert_eq!(e(ErrorKind::Timeout).retry_class(), RetryClass::OutcomeUnknown);
        assert_eq!(e(ErrorKind::Unavailable).retry_class(), RetryClass::Temporary);
        assert_eq!(e(ErrorKind::Backpressure).retry_class(), RetryClass::Temporary);
        assert_eq!(e(ErrorKind::OutOfMemory).retry_class(), RetryClass::Permanent);
        assert_eq!(e(ErrorKind::Timeout).into_persistent().retry_class(), RetryClass::Permanent);
        assert_eq!(e(ErrorKind::InvalidInput).verdict(), Verdict::Ignored);
        assert_eq!(e(ErrorKind::Conflict).verdict(), Verdict::Success);
        assert_eq!(e(ErrorKind::Timeout).verdict(), Verdict::Failure);
        assert_eq!(e(ErrorKind::Auth).verdict(), Verdict::Ignored);
    }
}
