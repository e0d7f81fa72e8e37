//! Errors of the CLI and the exit codes they map to.
//!
//! Every failure ends in one [`CliError`] with an [`ExitKind`]; `main` prints its message (or a
//! JSON object with `--json`) and exits with the kind's code. The codes are documented in
//! `docs/cli.md`:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | ok (`health`: healthy) |
//! | 1 | any other failure (`health`: degraded) |
//! | 2 | bad input or configuration (`health`: unhealthy) |
//! | 3 | server unreachable, module missing or too old, index schema mismatch |

use std::fmt;

use engram_memory::MemoryError;
use engram_storage::ErrorKind;

/// The class of a failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Anything not covered below: exit code 1.
    Other,
    /// Bad command-line input, input file or configuration: exit code 2.
    BadInput,
    /// The server cannot be reached, lacks a module, or its index does not match: exit code 3.
    Unavailable,
}

impl ExitKind {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitKind::Other => 1,
            ExitKind::BadInput => 2,
            ExitKind::Unavailable => 3,
        }
    }

    /// A stable lowercase name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitKind::Other => "other",
            ExitKind::BadInput => "bad_input",
            ExitKind::Unavailable => "unavailable",
        }
    }
}

/// A failure of a command: what to print and how to exit.
#[derive(Debug)]
pub struct CliError {
    /// The class of the failure.
    pub kind: ExitKind,
    /// The message, lowercase, saying what was expected and what was found.
    pub message: String,
    /// The storage error kind, when the storage layer failed (for `--json`).
    pub storage_kind: Option<ErrorKind>,
}

impl CliError {
    /// A failure of class `kind`.
    pub fn new(kind: ExitKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), storage_kind: None }
    }

    /// Bad input (exit code 2).
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ExitKind::BadInput, message)
    }

    /// Any other failure (exit code 1).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Other, message)
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// A failure while connecting to the server and opening the index: everything but bad
    /// configuration and credentials means the server is unusable (exit code 3).
    pub fn from_connect(e: MemoryError) -> Self {
        let kind = match &e {
            MemoryError::Config(_) | MemoryError::Settings(_) | MemoryError::Invalid { .. } => {
                ExitKind::BadInput
            }
            MemoryError::Storage(s) => match s.kind() {
                ErrorKind::InvalidInput | ErrorKind::Auth | ErrorKind::PermissionDenied => {
                    ExitKind::BadInput
                }
                _ => ExitKind::Unavailable,
            },
            // The index records another dimension or model than the configuration names.
            MemoryError::DimensionMismatch { .. } | MemoryError::ModelMismatch { .. } => {
                ExitKind::Unavailable
            }
            _ => ExitKind::Unavailable,
        };
        let hint = match kind {
            ExitKind::Unavailable => match e.storage_kind() {
                Some(ErrorKind::Unsupported) => {
                    "; engram needs Redis Stack (RediSearch 2.10 or newer), for example `cargo xtask stack up`"
                }
                Some(ErrorKind::Unavailable | ErrorKind::Timeout) | None => {
                    "; is Redis Stack running at redis.url? (`cargo xtask stack up` starts one)"
                }
                _ => "",
            },
            _ => "",
        };
        Self { kind, storage_kind: e.storage_kind(), message: format!("{e}{hint}") }
    }
}

impl From<MemoryError> for CliError {
    /// A failure of an operation on an open store.
    fn from(e: MemoryError) -> Self {
        let kind = match &e {
            MemoryError::Invalid { .. }
            | MemoryError::DimensionMismatch { .. }
            | MemoryError::ModelMismatch { .. }
            | MemoryError::FullTextDisabled { .. }
            | MemoryError::Config(_)
            | MemoryError::Settings(_) => ExitKind::BadInput,
            MemoryError::Storage(s) => match s.kind() {
                ErrorKind::InvalidInput | ErrorKind::DimensionMismatch => ExitKind::BadInput,
                ErrorKind::Unavailable
                | ErrorKind::Timeout
                | ErrorKind::CircuitOpen
                | ErrorKind::Unsupported
                | ErrorKind::SchemaMismatch
                | ErrorKind::IndexMissing => ExitKind::Unavailable,
                _ => ExitKind::Other,
            },
            _ => ExitKind::Other,
        };
        Self { kind, storage_kind: e.storage_kind(), message: e.to_string() }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The result of a command.
pub type CliResult<T> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;
    use engram_storage::{Operation, StorageError};

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let storage = |k| MemoryError::Storage(StorageError::new(k, Operation::Get, "x"));
        assert_eq!(CliError::from(MemoryError::invalid_for_tests()).kind.code(), 2);
        assert_eq!(CliError::from(storage(ErrorKind::Unavailable)).kind.code(), 3);
        assert_eq!(CliError::from(storage(ErrorKind::CircuitOpen)).kind.code(), 3);
        assert_eq!(CliError::from(storage(ErrorKind::Protocol)).kind.code(), 1);
        assert_eq!(CliError::from_connect(storage(ErrorKind::Unavailable)).kind.code(), 3);
        assert_eq!(CliError::from_connect(storage(ErrorKind::SchemaMismatch)).kind.code(), 3);
        assert_eq!(CliError::from_connect(storage(ErrorKind::Unsupported)).kind.code(), 3);
        assert_eq!(CliError::from_connect(storage(ErrorKind::Auth)).kind.code(), 2);
        let down = CliError::from_connect(storage(ErrorKind::Unavailable));
        assert!(down.message.contains("cargo xtask stack up"), "{}", down.message);
        let dim = MemoryError::DimensionMismatch { expected: 384, found: 3 };
        assert_eq!(CliError::from(dim).kind.code(), 2, "a user's vector of the wrong size");
        let text = MemoryError::FullTextDisabled { index: "engram-idx".into() };
        assert_eq!(CliError::from(text).kind.code(), 2, "--text without index.full_text");
        let dim = MemoryError::DimensionMismatch { expected: 384, found: 3 };
        assert_eq!(CliError::from_connect(dim).kind.code(), 3, "the index holds another size");
    }

    trait InvalidForTests {
        fn invalid_for_tests() -> MemoryError;
    }
    impl InvalidForTests for MemoryError {
        fn invalid_for_tests() -> MemoryError {
            match engram_memory::MemoryEntry::builder("ns", "").build() {
                Err(e) => e,
                Ok(_) => unreachable!("empty content is invalid"),
            }
        }
    }
}
