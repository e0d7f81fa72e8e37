//! Storage layer of engram.
//!
//! Generic [`Record`]s (id, namespace, indexed fields, optional vector, opaque payload,
//! expiry, version) are stored by a [`StorageBackend`] in one index described by an
//! [`IndexSchema`]. Searches are k-nearest-neighbour queries scoped to one namespace, with an
//! optional typed [`Filter`]. Every error is a [`StorageError`] with a kind and a retry status.
//!
//! Backends: [`InProcessBackend`] (in memory, exact KNN) and, behind the `redis` feature (on by
//! default), the connection to Redis Stack. The `testkit` feature holds the conformance suite
//! every backend runs.
//!
//! Only the `redis` module of this crate names `fred`.

mod backend;
pub mod clock;
mod error;
pub mod filter;
mod ids;
mod in_process;
pub mod layers;
mod record;
#[cfg(feature = "redis")]
pub mod redis;
pub mod schema;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod vector;

/// A short random token for unique test names (index names, namespaces).
pub fn testkit_token() -> String {
    ids::random_token()
}

pub use backend::{
    BackendInfo, BatchReport, Capabilities, IndexStats, IndexStatus, ItemOutcome, MAX_BATCH, MAX_K,
    MAX_SCAN_PAGE, QueryPlan, ScanCursor, ScanPage, SearchHit, StorageBackend, StorageBackendExt,
    Touched, UnboxedBackend, VectorQuery, check_batch_len, check_find_limit, check_scan_limit,
};
pub use error::{ErrorKind, Operation, RetryStatus, StorageError};
pub use filter::Filter;
pub use ids::{KeyCodec, MAX_ID_LEN, MAX_NAMESPACE_LEN, Namespace, RecordId};
pub use in_process::{InProcessBackend, cas_conflict, check_cas_version};
pub use record::{
    AccessStats, FieldValue, MAX_PAYLOAD_LEN, MAX_TAG_LEN, MAX_TAGS, Record, Timestamp, check_tag,
};
pub use schema::{Algorithm, FieldKind, FieldSpec, HnswParams, IndexSchema, VectorSpec};
