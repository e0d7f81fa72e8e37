//! The error type of the memory domain.

use engram_config::ConfigError;
use engram_resilience::{HealthError, InvalidSettings};
use engram_storage::{ErrorKind, StorageError};

/// Why a memory operation failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A field of an entry or query breaks a rule; nothing was stored or sent.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field (`content`, `importance`, `tags`, ...).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An embedding has another dimension than the index.
    #[error("embedding has {found} dimensions, the index expects {expected}")]
    DimensionMismatch {
        /// The index's dimension.
        expected: u32,
        /// The embedding's.
        found: usize,
    },
    /// The embedding model named does not match the index's.
    #[error("embedding model {found:?} does not match the index's model {expected:?}")]
    ModelMismatch {
        /// The index's model (empty when the index records none).
        expected: String,
        /// The model named.
        found: String,
    },
    /// A query filters by words of the content, but the store's index does not index the
    /// content as text (`index.full_text` is off); nothing was sent.
    #[error(
        "query has a text filter, but index {index:?} has no full-text field: set index.full_text = true (ENGRAM__INDEX__FULL_TEXT=true) and use an index created with it (a new index.name, or drop and rebuild the index)"
    )]
    FullTextDisabled {
        /// The index name.
        index: String,
    },
    /// The entry changed since it was read (optimistic concurrency).
    #[error("memory {id} was changed concurrently: {message}")]
    Conflict {
        /// The entry's id.
        id: String,
        /// What the store found.
        message: String,
    },
    /// No entry has this id in this namespace.
    #[error("memory {id} not found in namespace {namespace}")]
    NotFound {
        /// The namespace.
        namespace: String,
        /// The id.
        id: String,
    },
    /// A stored payload could not be decoded.
    #[error("memory {id} cannot be decoded: {message}")]
    Corrupt {
        /// The entry's id.
        id: String,
        /// The decoder's complaint.
        message: String,
    },
    /// The storage layer failed (see [`StorageError::kind`]).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A resilience setting is out of range.
    #[error(transparent)]
    Settings(#[from] InvalidSettings),
    /// The health checker could not start.
    #[error(transparent)]
    Health(#[from] HealthError),
}

impl MemoryError {
    /// The storage error kind, when the storage layer failed.
    pub fn storage_kind(&self) -> Option<ErrorKind> {
        match self {
            MemoryError::Storage(e) => Some(e.kind()),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        MemoryError::Invalid { field, message: message.into() }
    }
}

/// Storage errors about input are re-raised as domain errors with their field.
pub(crate) fn from_storage_input(field: &'static str, e: StorageError) -> MemoryError {
    match e.kind() {
        ErrorKind::InvalidInput => MemoryError::invalid(field, e.message().to_owned()),
        _ => MemoryError::Storage(e),
    }
}
