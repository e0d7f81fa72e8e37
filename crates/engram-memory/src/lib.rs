//! engram's memory domain: what agent runtimes link against to remember, recall and forget.
//!
//! A [`MemoryEntry`] is something an agent remembers: content, a [`MemoryType`]
//! (short-term, long-term, working, episodic, semantic), an importance in `[0, 1]`, an
//! optional embedding, tags and metadata, with timestamps, access statistics, an expiry and a
//! version. A [`MemoryStore`] keeps entries in a namespace per agent (or user, or tenant):
//! nothing is ever returned, counted or changed across namespaces.
//!
//! The store sits on a layered storage stack built from [`engram_config::Config`]: metrics,
//! retries with a retry budget, a circuit breaker and per-attempt timeouts, over Redis Stack
//! ([`MemoryStore::connect`]) or the in-process backend ([`MemoryStore::in_memory`]). Each
//! memory type has a policy (TTL with jitter, refresh on read, decay half-life); query results
//! are ranked by similarity, importance and recency ([`ranking`]).
//!
//! Queries filter by type, tags, importance and creation time on indexed fields. Filtering by
//! the words of the content ([`MemoryQuery::text()`]) needs `index.full_text = true`: the
//! content is indexed as text only then, since that costs server time on every write;
//! otherwise such a query fails with [`MemoryError::FullTextDisabled`]. With exact
//! deduplication on (the default), [`MemoryStore::add_batch`] looks duplicates up with one
//! search per namespace (and per 256 distinct contents) of the batch, not one per entry.
//!
//! ```no_run
//! use engram_memory::{MemoryEntry, MemoryQuery, MemoryStore, MemoryType};
//!
//! # async fn run() -> Result<(), engram_memory::MemoryError> {
//! let config = engram_config::Config::load_from_env()?;
//! let store = MemoryStore::connect(config).await?;
//!
//! // Remember an observation with its embedding (from your model; 384 dimensions here).
//! let embedding = vec![0.1_f32; 384];
//! let entry = MemoryEntry::builder("agent-7", "the user prefers short answers")
//!     .memory_type(MemoryType::Semantic)
//!     .importance(0.8)
//!     .embedding(embedding.clone())
//!     .tag("preference")
//!     .build()?;
//! let id = store.add(entry).await?;
//!
//! // Recall the five nearest semantic memories.
//! let query = MemoryQuery::new("agent-7", embedding)?.k(5).types([MemoryType::Semantic]);
//! for hit in store.query(query).await? {
//!     println!("{:.3} {}", hit.score, hit.entry.content);
//! }
//!
//! // Raise its importance, then forget it.
//! store.update_with("agent-7", id.as_str(), |e| e.importance = 1.0).await?;
//! store.delete("agent-7", id.as_str()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Without an async runtime, use [`blocking::MemoryStore`].
//!
//! This crate never sees a `fred` type: Redis lives behind `engram-storage`.

pub mod blocking;
mod codec;
mod entry;
mod error;
mod lexical;
mod policy;
mod query;
pub mod ranking;
mod store;

pub use engram_storage::{Namespace, Timestamp};
pub use entry::{
    MAX_CONTENT_LEN, MAX_METADATA_KEYS, MemoryEntry, MemoryEntryBuilder, MemoryId, MemoryType,
    MetadataValue, memory_id, namespace, new_id,
};
pub use error::MemoryError;
pub use lexical::LexicalEmbedder;
pub use policy::Policies;
pub use query::{MAX_QUERY_K, MemoryQuery, ScoredMemory};
pub use store::{
    HealthStatusReport, ListPage, MAX_UPDATE_ATTEMPTS, MemoryStore, StoreLayers, StoreMetrics,
    StoreOptions,
};
