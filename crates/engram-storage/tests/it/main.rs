//! Integration tests of engram-storage: the conformance suite on every backend, the layers,
//! and the Redis Stack connection (`ENGRAM_TEST_REDIS_URL`, exported by `cargo xtask ci`).

#[cfg(feature = "redis")]
mod connection;
mod in_process;
mod layers;
mod model;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod tls;
