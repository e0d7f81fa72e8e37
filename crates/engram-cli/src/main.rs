//! `engram`: the command-line tool for people and scripts (see `docs/cli.md`, or
//! `engram --help`). The commands live in the `engram_cli` library.

use std::process::ExitCode;

/// mimalloc rather than the system allocator: a write of a record allocates and frees tens of
/// small buffers and a vector-sized one, and with glibc's allocator that was a fifth of the
/// client's time in FLAT ingest (measured in docs/performance.md). A program that links
/// engram as a library chooses its own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ExitCode::from(engram_cli::main_with_args(std::env::args_os()))
}
