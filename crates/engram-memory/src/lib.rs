//! The engram memory domain: what agent runtimes link against.
//!
//! This crate will own `MemoryEntry` (content, memory type, importance, embedding, tags,
//! metadata, timestamps, expiry, version), `MemoryQuery` and `ScoredMemory`, the per-type
//! policies (TTL with jitter, refresh on read, decay), ranking, the MessagePack payload codec,
//! and `MemoryStore`, which builds the layered storage stack from `engram-config`. It never
//! sees a `fred` type.
//!
//! It is empty until the memory domain issue lands.
