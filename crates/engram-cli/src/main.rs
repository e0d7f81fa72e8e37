//! `engram`: the command-line tool for people and scripts (see `docs/cli.md`, or
//! `engram --help`). The commands live in the `engram_cli` library.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(engram_cli::main_with_args(std::env::args_os()))
}
