//! Storage layer of engram.
//!
//! This crate will own the `StorageBackend` trait (generic records: id, namespace, indexed
//! fields, optional vector, opaque payload, TTL, version), the typed filter AST, the resilience
//! layers (timeout, circuit breaker, retry, metrics), an in-process backend and the conformance
//! test kit. Today it holds [`StorageError`] and, behind the `redis` feature (on by default),
//! the connection to Redis Stack with its startup check of the server's modules.
//!
//! Only the `redis` module of this crate names `fred`.

mod error;
#[cfg(feature = "redis")]
pub mod redis;

pub use error::{ErrorKind, Operation, RetryStatus, StorageError};
