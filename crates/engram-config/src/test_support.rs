//! Finding the Redis Stack server that integration tests run against.
//!
//! `cargo xtask ci` starts a server and exports its URL as `ENGRAM_TEST_REDIS_URL`. A test that
//! needs Redis and finds no URL skips with a message on a developer's machine, and fails under
//! `CI=true`, so that CI can never pass by skipping.

use crate::RedisUrl;

/// Environment variable with the URL of the Redis Stack server for tests.
pub const TEST_REDIS_URL_VAR: &str = "ENGRAM_TEST_REDIS_URL";

/// What a test that needs Redis should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestServer {
    /// Run against this server.
    Available(RedisUrl),
    /// Skip, printing this reason (never under `CI=true`).
    Skip(String),
}

/// Reads `ENGRAM_TEST_REDIS_URL` and `CI`.
///
/// # Errors
/// A message saying why the test cannot run, when `CI` is `true` or `1` and no URL is set.
pub fn test_server() -> Result<TestServer, String> {
    let url = std::env::var(TEST_REDIS_URL_VAR).ok().filter(|u| !u.trim().is_empty());
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    Ok(match (url, ci) {
        (Some(url), _) => TestServer::Available(RedisUrl::new(url)),
        (None, true) => {
            return Err(format!(
                "{TEST_REDIS_URL_VAR} is not set and CI=true: tests that need Redis Stack must not skip in CI; run them through `cargo xtask ci`"
            ));
        }
        (None, false) => TestServer::Skip(format!(
            "{TEST_REDIS_URL_VAR} is not set; start a server with `cargo xtask stack up` and export its URL, or run `cargo xtask ci`"
        )),
    })
}

/// The URL tests should use, or `None` after printing why the test skips.
///
/// # Panics
/// Under `CI=true` with no `ENGRAM_TEST_REDIS_URL`: CI must not pass by skipping.
pub fn require_server(test: &str) -> Option<RedisUrl> {
    match test_server() {
        Ok(TestServer::Available(url)) => Some(url),
        Ok(TestServer::Skip(why)) => {
            eprintln!("skipping {test}: {why}");
            None
        }
        Err(why) => panic!("{test}: {why}"),
    }
}

/// Environment variable with the path of a `redis-server` binary (with the Redis Stack
/// modules beside it in `../lib/`), for tests that start servers of their own (TLS, faults).
/// `cargo xtask ci` sets it.
pub const TEST_REDIS_SERVER_VAR: &str = "ENGRAM_TEST_REDIS_SERVER";

/// The `redis-server` binary for tests that start their own server, or `None` after printing
/// why the test skips.
///
/// # Panics
/// Under `CI=true` when the variable is unset or names no file: CI must not pass by skipping.
pub fn require_server_binary(test: &str) -> Option<std::path::PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    match std::env::var_os(TEST_REDIS_SERVER_VAR).map(std::path::PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        other => {
            let why = match other {
                Some(p) => {
                    format!("{TEST_REDIS_SERVER_VAR} names {}, which is not a file", p.display())
                }
                None => format!(
                    "{TEST_REDIS_SERVER_VAR} is not set; run the test through `cargo xtask ci`"
                ),
            };
            if ci {
                panic!("{test}: {why}");
            }
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}
