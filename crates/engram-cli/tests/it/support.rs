//! Running the binary against a test index, and cleaning up.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use engram_config::RedisUrl;
use serde_json::Value;

/// A test's own index on the test server; dropped with its documents on drop.
pub(crate) struct TestIndex {
    pub(crate) url: RedisUrl,
    pub(crate) name: String,
    pub(crate) dimension: u32,
}

impl TestIndex {
    /// A fresh index for `test`, or `None` (after printing why) when no server is configured.
    pub(crate) fn new(test: &str) -> Option<Self> {
        let url = engram_config::test_support::require_server(test)?;
        let name = format!("engram-cli-test-{}", engram_storage::testkit_token());
        Some(Self { url, name, dimension: 384 })
    }

    /// The binary with this index's environment.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = engram(args);
        c.env("REDIS_URL", self.url.expose())
            .env("ENGRAM__INDEX__NAME", &self.name)
            .env("ENGRAM__INDEX__KEY_PREFIX", format!("{}:", self.name))
            .env("ENGRAM__INDEX__DIMENSION", self.dimension.to_string());
        c
    }

    /// Runs the binary with this index.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        run(self.cmd(args))
    }

    /// Runs with `--json` and parses stdout.
    pub(crate) fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        (code(&out), parse(&out))
    }
}

impl Drop for TestIndex {
    fn drop(&mut self) {
        let url = self.url.clone();
        let (name, dimension) = (self.name.clone(), self.dimension);
        let dropped = std::thread::spawn(move || drop_index(url, &name, dimension)).join();
        if let Ok(Err(e)) | Err(e) = dropped.map_err(|_| "panicked".to_owned()) {
            eprintln!("cleanup: cannot drop index {}: {e}", self.name);
        }
    }
}

fn drop_index(url: RedisUrl, name: &str, dimension: u32) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut config = engram_config::Config::default();
        config.redis.url = url;
        config.index.name = name.to_owned();
        config.index.key_prefix = format!("{name}:");
        config.index.dimension = dimension;
        config.health.enabled = false;
        // The store knows the index's schema; the backend drops it with its documents.
        let store =
            engram_memory::MemoryStore::connect(config.clone()).await.map_err(|e| e.to_string())?;
        let backend = engram_storage::redis::RedisBackend::connect(
            &config.redis,
            engram_storage::redis::RedisBackendOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        use engram_storage::StorageBackend;
        backend.ensure_index(store.schema()).await.map_err(|e| e.to_string())?;
        backend.drop_index(true).await.map_err(|e| e.to_string())
    })
}

/// The binary with a clean environment (no configuration file, no URL).
pub(crate) fn engram(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_engram"));
    c.args(args)
        .env_remove("ENGRAM_CONFIG")
        .env_remove("REDIS_URL")
        .stdin(Stdio::null())
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ENGRAM__") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs a command and returns its output.
pub(crate) fn run(mut c: Command) -> Output {
    match c.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run the engram binary: {e}"),
    }
}

/// The exit code (-1 when killed by a signal).
pub(crate) fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Stdout parsed as JSON.
pub(crate) fn parse(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A loopback port nobody listens on.
pub(crate) fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}
