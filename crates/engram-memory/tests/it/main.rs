//! Integration tests of engram-memory: every operation on the in-process backend, and on
//! Redis Stack when `ENGRAM_TEST_REDIS_URL` is set (always under `cargo xtask ci`).

mod logs;
mod store;
