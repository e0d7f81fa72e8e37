//! `engram`: the command-line tool for people and scripts.
//!
//! It will own the commands `remember`, `recall`, `get`, `forget`, `list`, `stats`, `health`,
//! `serve-metrics`, `index` and `import`, with `--json` output for scripts, and the Prometheus
//! exporter. Business logic stays in the library crates.
//!
//! Until the CLI issue lands it does one real thing: `engram config check [FILE]` loads the
//! configuration (file, `ENGRAM__...` environment, `REDIS_URL`) and prints every problem, or the
//! effective configuration with secrets redacted.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: engram config check [FILE]

Loads the configuration (defaults < FILE or $ENGRAM_CONFIG < ENGRAM__SECTION__KEY
environment variables < REDIS_URL) and reports every problem.
The other commands arrive with the CLI issue.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["config", "check", rest @ ..] if rest.len() <= 1 => {
            let loaded = match rest.first() {
                Some(file) => engram_config::Config::load(Some(&PathBuf::from(file))),
                None => engram_config::Config::load_from_env(),
            };
            match loaded {
                Ok(config) => {
                    println!("configuration is valid\n{config:#?}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(64)
        }
    }
}
