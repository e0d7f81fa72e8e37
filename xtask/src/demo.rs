//! `cargo xtask demo`: start the local Redis Stack if needed, then run `engram demo` (the
//! scripted agent session of `crates/engram-cli/src/demo/`) against it.
//!
//! The demo is a debug build of the `engram` binary: on a fresh machine that builds faster
//! than a release build, and the session itself takes a few seconds either way.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use crate::stack::{Stack, UpOptions};

/// Seconds the metrics endpoint stays up at the end: none in CI, long enough to look at it
/// otherwise.
fn default_metrics_seconds() -> u64 {
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if ci { 0 } else { 15 }
}

/// Runs the demo; `args` are the options after `demo`.
pub(crate) fn run(root: &Path, stack: &Stack, args: &[&str]) -> Result<ExitCode> {
    let mut metrics_seconds = default_metrics_seconds();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--metrics-seconds" => {
                let v = it.next().context("--metrics-seconds needs a number of seconds")?;
                metrics_seconds = v.parse().with_context(|| {
                    format!("--metrics-seconds: expected a number of seconds, found {v:?}")
                })?;
            }
            other => bail!("unknown option `{other}` (known: --metrics-seconds N)"),
        }
    }
    let running = stack.up(UpOptions::default())?;
    eprintln!(
        "xtask: Redis Stack at {} (redis {}, modules: {}){}",
        running.url,
        running.facts.version,
        running.facts.describe_modules(),
        if running.started { ", started for the demo" } else { "" }
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["run", "--quiet", "-p", "engram-cli", "--", "demo"])
        .args(["--metrics-seconds", &metrics_seconds.to_string()])
        .env("REDIS_URL", &running.url)
        .current_dir(root)
        .status()
        .context("cannot run cargo")?;
    if !running.external {
        eprintln!(
            "xtask: the server keeps running for more commands, for example\n  REDIS_URL={} cargo run -q -p engram-cli -- recall -n demo-coder \"flaky tests\"\nstop it with `cargo xtask stack down`",
            running.url
        );
    }
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
