//! The `engram` command-line tool, as a library so that tests can run its commands in process.
//!
//! Commands (see `docs/cli.md`): `remember`, `recall`, `get`, `forget`, `list`, `stats`,
//! `health`, `serve-metrics`, `index ensure|describe`, `import`, `config check`, and the
//! tools `demo` (a scripted agent session on a built-in corpus) and `bench` (the end-to-end
//! benchmark). Every command prints text for people, or one JSON document with `--json`, and
//! exits with a documented code ([`error::ExitKind`]). Business logic stays in the library
//! crates: this crate parses, calls `engram_memory::MemoryStore`, and prints.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod error;
pub mod exporter;
pub mod import;
pub mod output;

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;
use serde_json::json;

use cli::{Cli, Command};
use commands::{Context, Outcome};
use error::{CliError, CliResult};

/// Runs one parsed command line.
///
/// # Errors
/// The command's failure, with its exit class.
pub async fn execute(ctx: &Context, command: Command) -> CliResult<Outcome> {
    match command {
        Command::Remember(a) => commands::remember(ctx, a).await,
        Command::Recall(a) => commands::recall(ctx, a).await,
        Command::Get(a) => commands::get(ctx, a).await,
        Command::Forget(a) => commands::forget(ctx, a).await,
        Command::List(a) => commands::list(ctx, a).await,
        Command::Stats(a) => commands::stats(ctx, a).await,
        Command::Health(a) => commands::health(ctx, a).await,
        Command::ServeMetrics(a) => exporter::serve_metrics(ctx, a).await,
        Command::Index { action } => commands::index(ctx, action).await,
        Command::Import(a) => import::import(ctx, a).await,
        Command::Config { action } => commands::config_check(ctx, action),
        Command::Demo(a) => demo::run(ctx, a).await,
        Command::Bench(a) => bench::run(ctx, a).await,
    }
}

/// Prints an outcome (JSON or text) and returns its exit code.
pub fn print_outcome(json: bool, outcome: &Outcome) -> u8 {
    let mut out = std::io::stdout().lock();
    let _ = if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&outcome.json).unwrap_or_default())
    } else if outcome.text.is_empty() {
        Ok(())
    } else {
        let newline = if outcome.text.ends_with('\n') { "" } else { "\n" };
        write!(out, "{}{newline}", outcome.text)
    };
    outcome.code
}

/// Prints a failure (a JSON object on stdout with `--json`, else a line on stderr) and returns
/// its exit code.
pub fn print_error(json: bool, e: &CliError) -> u8 {
    if json {
        let doc = json!({"error": {
            "exit_code": e.kind.code(),
            "class": e.kind.as_str(),
            "storage_kind": e.storage_kind.map(|k| k.as_str()),
            "message": e.message,
        }});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        eprintln!("engram: error: {}", e.message);
    }
    e.kind.code()
}

/// Worker threads of the CLI's runtime unless `TOKIO_WORKER_THREADS` says otherwise.
///
/// One: the CLI waits on the server far more than it computes, and a second worker mostly adds
/// wake-ups across threads. Measured with `engram bench` on 2 cores shared with the server,
/// get by id with 16 callers ran at 91.5k/s with one worker and 67.5k/s with two (see
/// docs/performance.md).
pub const DEFAULT_WORKER_THREADS: usize = 1;

/// The CLI's runtime: multi-threaded (blocking work has its own pool), with
/// [`DEFAULT_WORKER_THREADS`] workers unless `TOKIO_WORKER_THREADS` is set, which tokio reads.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(DEFAULT_WORKER_THREADS);
    }
    builder.enable_all().build()
}

/// Parses `args` (program name first), runs the command on a new tokio runtime, prints, and
/// returns the exit code.
pub fn main_with_args<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with exit code 0; usage errors are bad input.
            let _ = e.print();
            return if e.use_stderr() { error::ExitKind::BadInput.code() } else { 0 };
        }
    };
    let ctx = Context { config_path: cli.config.clone(), json: cli.json };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            return print_error(cli.json, &CliError::other(format!("cannot start tokio: {e}")));
        }
    };
    // The command runs as a task on the worker, beside fred's connection tasks: run by
    // `block_on` on this thread, every reply would wake it from the worker (measured: FLAT
    // ingest 60k/s that way, see docs/performance.md).
    let command = cli.command;
    let result = runtime.block_on(async move {
        match tokio::spawn(async move { execute(&ctx, command).await }).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(CliError::other(format!("the command was cancelled: {e}"))),
        }
    });
    match result {
        Ok(outcome) => print_outcome(cli.json, &outcome),
        Err(e) => print_error(cli.json, &e),
    }
}
