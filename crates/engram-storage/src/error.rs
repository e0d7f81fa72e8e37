//! The one error type of the storage layer, with its classification for retries.

use std::fmt;

/// What went wrong, independent of the backend.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The record or index does not exist.
    NotFound,
    /// The caller's input is malformed (bad id, namespace, filter, vector values).
    InvalidInput,
    /// A vector has another dimension than the index.
    DimensionMismatch,
    /// An existing index does not match the schema asked for.
    SchemaMismatch,
    /// The index the operation needs does not exist on the server.
    IndexMissing,
    /// The server lacks a module, version or feature that is needed.
    Unsupported,
    /// The server cannot be reached, or is loading, or the connection was lost.
    Unavailable,
    /// The operation took longer than its timeout; whether it took effect is unknown.
    Timeout,
    /// The client refused the command because too many are queued.
    Backpressure,
    /// The circuit breaker is open and the call was not attempted.
    CircuitOpen,
    /// The server is out of memory and refuses writes.
    OutOfMemory,
    /// The credentials are valid but lack a permission (ACL).
    PermissionDenied,
    /// The credentials were refused.
    Auth,
    /// A compare-and-set found another version than expected.
    Conflict,
    /// The server's reply could not be understood.
    Protocol,
    /// Anything else.
    Unexpected,
}

impl ErrorKind {
    /// The lowercase, stable name of the kind, used in messages and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::DimensionMismatch => "dimension_mismatch",
            ErrorKind::SchemaMismatch => "schema_mismatch",
            ErrorKind::IndexMissing => "index_missing",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Backpressure => "backpressure",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::OutOfMemory => "out_of_memory",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Auth => "auth",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Unexpected => "unexpected",
        }
    }

    /// The retry status an error of this kind has when it is first raised: the kinds that a
    /// later attempt may not meet again are temporary, everything else permanent.
    pub fn default_status(self) -> RetryStatus {
        match self {
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Backpressure => {
                RetryStatus::Temporary
            }
            _ => RetryStatus::Permanent,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether retrying may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryStatus {
    /// Retrying cannot help.
    Permanent,
    /// A later attempt may succeed.
    Temporary,
    /// It was temporary, but the retries are exhausted.
    Persistent,
}

/// The storage operation an error comes from.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Checking caller input before any I/O.
    Validate,
    /// Opening the connection and checking the server.
    Connect,
    /// A round trip to measure latency.
    Ping,
    /// Reading server and index information.
    Describe,
    /// Creating or checking the index.
    EnsureIndex,
    /// Writing records.
    Put,
    /// Reading records by id.
    Get,
    /// Deleting records by id.
    Delete,
    /// A vector search.
    Search,
    /// A search by filter only.
    Find,
    /// Counting a namespace's records.
    Count,
    /// Listing a namespace's records.
    Scan,
    /// Updating access statistics and TTL.
    Touch,
    /// Writing a record only if its version matches.
    CompareAndSet,
}

impl Operation {
    /// Every operation, in declaration order (`op as usize` is its position).
    pub(crate) const ALL: [Operation; 14] = [
        Operation::Validate,
        Operation::Connect,
        Operation::Ping,
        Operation::Describe,
        Operation::EnsureIndex,
        Operation::Put,
        Operation::Get,
        Operation::Delete,
        Operation::Search,
        Operation::Find,
        Operation::Count,
        Operation::Scan,
        Operation::Touch,
        Operation::CompareAndSet,
    ];

    /// The lowercase, stable name of the operation, used in messages and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Validate => "validate",
            Operation::Connect => "connect",
            Operation::Ping => "ping",
            Operation::Describe => "describe",
            Operation::EnsureIndex => "ensure_index",
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::Delete => "delete",
            Operation::Search => "search",
            Operation::Find => "find",
            Operation::Count => "count",
            Operation::Scan => "scan",
            Operation::Touch => "touch",
            Operation::CompareAndSet => "compare_and_set",
        }
    }

    /// Whether running the operation twice has the same effect as once, so that it may be
    /// retried after a timeout whose outcome is unknown. `touch` counts accesses, so a second
    /// run would count one access twice.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Operation::Touch)
    }
}

// `Operation::ALL` lists every variant at its own position (`OperationStats` indexes by it):
// checked at compile time. The match is exhaustive, so a variant added to the enum fails to
// compile here until it is listed, in `ALL` too.
const _: () = {
    match Operation::Validate {
        Operation::Validate
        | Operation::Connect
        | Operation::Ping
        | Operation::Describe
        | Operation::EnsureIndex
        | Operation::Put
        | Operation::Get
        | Operation::Delete
        | Operation::Search
        | Operation::Find
        | Operation::Count
        | Operation::Scan
        | Operation::Touch
        | Operation::CompareAndSet => {}
    }
    assert!(Operation::ALL.len() == Operation::CompareAndSet as usize + 1);
    let mut i = 0;
    while i < Operation::ALL.len() {
        assert!(Operation::ALL[i] as usize == i);
        i += 1;
    }
};

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the storage layer: kind, retry status, operation, message and source.
///
/// Messages never contain record content, vectors or credentials.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({kind}): {message}")]
pub struct StorageError {
    kind: ErrorKind,
    status: RetryStatus,
    operation: Operation,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl StorageError {
    /// A new error with the kind's default retry status.
    pub fn new(kind: ErrorKind, operation: Operation, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: kind.default_status(),
            operation,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Overrides the retry status.
    pub fn with_status(mut self, status: RetryStatus) -> Self {
        self.status = status;
        self
    }

    /// Marks a temporary error persistent, once retries are exhausted.
    pub fn into_persistent(mut self) -> Self {
        if self.status == RetryStatus::Temporary {
            self.status = RetryStatus::Persistent;
        }
        self
    }

    /// A copy of kind, status, operation and message, without the source (which need not be
    /// cloneable); used to report one failure for many items.
    pub fn duplicate(&self) -> Self {
        Self {
            kind: self.kind,
            status: self.status,
            operation: self.operation,
            message: self.message.clone(),
            source: None,
        }
    }

    /// The same error attributed to another operation (input checks run before the
    /// operation is known to the caller).
    pub fn for_operation(mut self, operation: Operation) -> Self {
        self.operation = operation;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying may help.
    pub fn status(&self) -> RetryStatus {
        self.status
    }

    /// Whether the error is temporary (retrying may help).
    pub fn is_temporary(&self) -> bool {
        self.status == RetryStatus::Temporary
    }

    /// The operation that failed.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The message, without the operation and kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_kind_and_message() {
        let e = StorageError::new(ErrorKind::Unsupported, Operation::Connect, "no search module");
        assert_eq!(e.to_string(), "connect failed (unsupported): no search module");
        assert_eq!(e.status(), RetryStatus::Permanent);
    }

    #[test]
    fn temporary_kinds_become_persistent_after_retries() {
        let e = StorageError::new(ErrorKind::Timeout, Operation::Get, "timed out after 2s");
        assert!(e.is_temporary());
        let e = e.into_persistent();
        assert_eq!(e.status(), RetryStatus::Persistent);
        let p = StorageError::new(ErrorKind::Auth, Operation::Get, "x").into_persistent();
        assert_eq!(p.status(), RetryStatus::Permanent, "a permanent error stays permanent");
    }

    #[test]
    fn only_touch_is_not_idempotent() {
        assert!(!Operation::Touch.is_idempotent());
        assert!(Operation::Put.is_idempotent() && Operation::CompareAndSet.is_idempotent());
    }
}
