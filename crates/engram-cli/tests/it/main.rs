//! Integration tests of the `engram` binary: each runs the built binary as a user would, with
//! its own index (and namespaces) on the server named by `ENGRAM_TEST_REDIS_URL`, and drops
//! that index with its documents at the end. Tests that need no server run everywhere.

mod commands;
mod support;
