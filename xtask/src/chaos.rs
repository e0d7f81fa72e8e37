//! `cargo xtask chaos`: the fault, bad-input and security suites of `tests/` (feature
//! `tests/chaos`), then a summary of every figure they measured.
//!
//! The suites start Redis Stack servers of their own from the installed wheel
//! (`ENGRAM_TEST_REDIS_SERVER`), so this needs no running stack. They are built with
//! `--workspace` and the same features as `cargo xtask ci`'s test step, so that after it only
//! the `tests` crate compiles again; `cargo test --workspace` without the feature does not
//! build them, so nothing runs twice in CI. They are linted here too, since `ci`'s clippy
//! step does not enable the feature.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::stack::Stack;

/// The suites, as `--test` targets of the `tests` package.
const SUITES: [&str; 3] = ["faults", "bad_input", "security"];

/// `cargo xtask chaos`: [`suites`] as an exit code.
pub(crate) fn run(root: &Path, stack: &Stack) -> Result<ExitCode> {
    Ok(if suites(root, stack)? { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs clippy on the suites, then the suites, then prints the figures they reported; `true`
/// when both passed (the step `cargo xtask ci` calls).
pub(crate) fn suites(root: &Path, stack: &Stack) -> Result<bool> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let started = Instant::now();
    stack.install()?;
    let bin = stack.server_binary();
    let report = root.join("target").join("chaos").join("figures.tsv");
    if report.exists() {
        std::fs::remove_file(&report)
            .with_context(|| format!("cannot remove {}", report.display()))?;
    }
    let mut clippy = vec!["clippy", "--workspace", "--locked", "--features", "tests/chaos"];
    for s in SUITES {
        clippy.extend(["--test", s]);
    }
    clippy.extend(["--", "-D", "warnings"]);
    eprintln!("xtask chaos: ── cargo {}", clippy.join(" "));
    let linted = Command::new(&cargo).args(&clippy).current_dir(root).status()?.success();

    let mut test = vec!["test", "--workspace", "--locked", "--features", "tests/chaos"];
    for s in SUITES {
        test.extend(["--test", s]);
    }
    eprintln!("xtask chaos: ── cargo {}", test.join(" "));
    let passed = Command::new(&cargo)
        .args(&test)
        .env("ENGRAM_TEST_REDIS_SERVER", &bin)
        // Under CI a suite that cannot find the server binary fails instead of skipping.
        .env("CI", std::env::var("CI").unwrap_or_else(|_| "true".to_owned()))
        .env("RUST_BACKTRACE", "0")
        .current_dir(root)
        .status()?
        .success();

    print_figures(&report);
    eprintln!(
        "xtask chaos: clippy {}, suites {} in {:.1}s",
        if linted { "ok" } else { "FAILED" },
        if passed { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    Ok(linted && passed)
}

/// Prints `test<TAB>name<TAB>value<TAB>unit` lines grouped by test.
fn print_figures(report: &Path) {
    let Ok(text) = std::fs::read_to_string(report) else {
        eprintln!("xtask chaos: no figures were reported ({} is missing)", report.display());
        return;
    };
    let mut by_test: BTreeMap<&str, Vec<(&str, &str, &str)>> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, '\t');
        if let (Some(t), Some(n), Some(v), Some(u)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            by_test.entry(t).or_default().push((n, v, u));
        }
    }
    println!("\nxtask chaos: measured figures");
    for (test, figures) in by_test {
        println!("  {test}");
        for (name, value, unit) in figures {
            println!("    {name:<44} {value} {unit}");
        }
    }
}
