//! Integration tests of engram-storage against a real Redis Stack (`ENGRAM_TEST_REDIS_URL`,
//! exported by `cargo xtask ci`).

mod connection;
