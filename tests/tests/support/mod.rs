//! What the fault, bad-input and security suites share: a Redis Stack server of their own
//! (killed, paused and restarted at will), a minimal admin client that reads the server's own
//! counters (`INFO commandstats`) without going through engram, and the figures report.
//!
//! A suite that kills or pauses a server, or counts its commands, never touches the shared
//! test server: it starts its own on a free loopback port, as a child process killed on drop.
//! A watchdog shell kills the server too if the test process dies without dropping it.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use engram_config::test_support::require_server_binary;
use engram_config::{Config, RedisUrl};
use engram_storage::testkit::random_token;

/// How to start a server of one's own.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `appendfsync` policy with AOF on (`always`, `everysec`, `no`), or `None` for AOF off.
    pub aof: Option<&'static str>,
    /// `requirepass` for the default user.
    pub password: Option<String>,
    /// More `--name value` arguments.
    pub extra: Vec<String>,
}

/// A `redis-server` child with the search and JSON modules, on a free loopback port.
pub struct OwnServer {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    options: ServerOptions,
    stopped: bool,
}

/// Path of the figures report that `cargo xtask chaos` prints.
pub fn report_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/chaos/figures.tsv")
}

/// Records one measured figure: printed now, and appended to the report.
pub fn figure(test: &str, name: &str, value: impl std::fmt::Display, unit: &str) {
    let line = format!("{test}\t{name}\t{value}\t{unit}\n");
    eprint!("FIGURE {line}");
    let path = report_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = f.write_all(line.as_bytes());
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status()?;
    ensure!(status.success(), "kill {sig} {pid} failed");
    Ok(())
}

impl OwnServer {
    /// Starts a server, or returns `None` after printing why the test skips (no binary; only
    /// outside CI).
    pub fn start(test: &str, options: ServerOptions) -> Result<Option<OwnServer>> {
        let Some(bin) = require_server_binary(test) else {
            return Ok(None);
        };
        let dir = std::env::temp_dir().join(format!("engram-chaos-{}", random_token()));
        std::fs::create_dir_all(&dir)?;
        let mut server =
            OwnServer { bin, child: None, port: free_port()?, dir, options, stopped: false };
        server.spawn()?;
        Ok(Some(server))
    }

    fn spawn(&mut self) -> Result<()> {
        let lib = self.bin.parent().and_then(Path::parent).context("server layout")?.join("lib");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--loadmodule")
            .arg(lib.join("redisearch.so"))
            .arg("--loadmodule")
            .arg(lib.join("rejson.so"));
        match self.options.aof {
            Some(fsync) => cmd.args(["--appendonly", "yes", "--appendfsync", fsync]),
            None => cmd.args(["--appendonly", "no"]),
        };
        if let Some(pw) = &self.options.password {
            cmd.args(["--requirepass", pw]);
        }
        cmd.args(&self.options.extra);
        let log = std::fs::File::create(self.dir.join("server.log"))?;
        let child = cmd.stdout(log).stderr(Stdio::null()).spawn().context("start redis-server")?;
        // If this process dies without dropping the server, the watchdog kills it and
        // removes its folder (only then: after a kill for a restart the folder is needed).
        let watchdog = format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             if ! kill -0 {me} 2>/dev/null; then kill -9 {pid} 2>/dev/null; rm -rf '{dir}'; fi",
            me = std::process::id(),
            pid = child.id(),
            dir = self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        self.child = Some(child);
        self.stopped = false;
        self.wait_ready(Duration::from_secs(20))
    }

    /// Waits until the server answers `PING` (not `LOADING`).
    pub fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            match self.admin().and_then(|mut a| a.cmd(&["PING"])) {
                Ok(Reply::Status(s)) if s == "PONG" => return Ok(()),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => bail!("the server on port {} is not ready: {other:?}", self.port),
            }
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Result<u32> {
        self.child.as_ref().map(Child::id).context("the server is not running")
    }

    /// The URL, with the password when the server has one.
    pub fn url(&self) -> RedisUrl {
        match &self.options.password {
            Some(pw) => RedisUrl::new(format!("redis://default:{pw}@127.0.0.1:{}", self.port)),
            None => RedisUrl::new(format!("redis://127.0.0.1:{}", self.port)),
        }
    }

    /// A configuration for this server: its URL, short timeouts, health checks off (their
    /// pings would count as commands).
    pub fn config(&self, index: &str, dimension: u32) -> Config {
        let mut c = Config::default();
        c.redis.url = self.url();
        c.redis.connect_timeout = Duration::from_secs(3);
        c.redis.command_timeout = Duration::from_secs(2);
        c.redis.reconnect.min_delay = Duration::from_millis(50);
        c.redis.reconnect.max_delay = Duration::from_millis(500);
        c.index.name = index.to_owned();
        c.index.key_prefix = format!("{index}:");
        c.index.dimension = dimension;
        c.health.enabled = false;
        c
    }

    /// An admin connection (authenticated when the server has a password).
    pub fn admin(&self) -> Result<Admin> {
        let mut a = Admin::connect(self.port)?;
        if let Some(pw) = &self.options.password {
            a.cmd(&["AUTH", pw])?;
        }
        Ok(a)
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            if self.stopped {
                let _ = signal(child.id(), "-CONT");
            }
            signal(child.id(), "-9")?;
            child.wait()?;
        }
        self.stopped = false;
        Ok(())
    }

    /// Starts the server again on the same port and data folder (it loads its AOF, if any).
    pub fn restart(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "the server is still running");
        self.spawn()
    }

    /// Deletes the data folder's content (AOF and RDB), for a restart with empty data.
    pub fn wipe_data(&self) -> Result<()> {
        ensure!(self.child.is_none(), "the server is still running");
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n == "server.log") {
                continue;
            }
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// SIGSTOP: the process stops; its sockets stay open and buffer what clients send.
    pub fn pause(&mut self) -> Result<()> {
        signal(self.pid()?, "-STOP")?;
        self.stopped = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&mut self) -> Result<()> {
        signal(self.pid()?, "-CONT")?;
        self.stopped = false;
        Ok(())
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    /// `:1`.
    Int(i64),
    /// A bulk string (`None` for nil).
    Bulk(Option<Vec<u8>>),
    /// An array (`None` for nil).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a status or bulk reply.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The integer of an integer or numeric text reply.
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            other => other.text()?.parse().ok(),
        }
    }

    /// The items of an array reply.
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }
}

/// A minimal RESP2 client on a plain TCP socket, outside engram, for reading the server's
/// counters and changing its settings. Its own commands show in `INFO commandstats` only as
/// the commands it sends (`info`, `auth`, ...).
pub struct Admin {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Admin {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> Result<Admin> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Admin { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Sends one command and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd_bytes(&args)
    }

    /// Sends one command of binary arguments and reads its reply.
    pub fn cmd_bytes(&mut self, args: &[&[u8]]) -> Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)?;
        self.read()
    }

    fn read(&mut self) -> Result<Reply> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at_checked(1).context("empty reply")?;
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(rest.parse()?),
            "$" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0; usize::try_from(n)? + 2];
                    std::io::Read::read_exact(&mut self.reader, &mut buf)?;
                    buf.truncate(buf.len() - 2);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(self.read()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            other => bail!("unknown reply type {other:?}"),
        })
    }

    /// Sends a command and fails on an error reply.
    pub fn ok(&mut self, args: &[&str]) -> Result<Reply> {
        match self.cmd(args)? {
            Reply::Error(e) => bail!("{} failed: {e}", args.first().copied().unwrap_or("")),
            r => Ok(r),
        }
    }

    /// One field of `INFO <section>`.
    pub fn info_field(&mut self, section: &str, field: &str) -> Result<String> {
        let text = self.ok(&["INFO", section])?.text().context("INFO reply")?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("INFO {section} has no {field}"))
    }

    /// `INFO commandstats` as command → counters.
    pub fn commandstats(&mut self) -> Result<CommandStats> {
        let text = self.ok(&["INFO", "commandstats"])?.text().context("INFO reply")?;
        let mut stats = BTreeMap::new();
        for line in text.lines() {
            let Some((name, values)) =
                line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let mut c = Counters::default();
            for pair in values.split(',') {
                match pair.split_once('=') {
                    Some(("calls", v)) => c.calls = v.parse()?,
                    Some(("rejected_calls", v)) => c.rejected = v.parse()?,
                    Some(("failed_calls", v)) => c.failed = v.parse()?,
                    _ => {}
                }
            }
            // Module commands show in upper case (`FT.CREATE`), core ones in lower case.
            stats.insert(name.to_ascii_lowercase(), c);
        }
        Ok(CommandStats(stats))
    }

    /// Number of keys (`DBSIZE`).
    pub fn dbsize(&mut self) -> Result<i64> {
        self.ok(&["DBSIZE"])?.int().context("DBSIZE reply")
    }

    /// Keys matching a pattern, by `SCAN`.
    pub fn keys(&mut self, pattern: &str) -> Result<Vec<String>> {
        let mut cursor = "0".to_owned();
        let mut keys = Vec::new();
        loop {
            let reply = self.ok(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])?;
            let parts = reply.items();
            cursor = parts.first().and_then(Reply::text).context("SCAN cursor")?;
            keys.extend(
                parts.get(1).map(Reply::items).unwrap_or(&[]).iter().filter_map(Reply::text),
            );
            if cursor == "0" {
                return Ok(keys);
            }
        }
    }

    /// A field of `FT.INFO <index>` as text.
    pub fn ft_info(&mut self, index: &str, field: &str) -> Result<String> {
        let reply = self.ok(&["FT.INFO", index])?;
        let items = reply.items();
        items
            .chunks(2)
            .find(|kv| kv[0].text().as_deref() == Some(field))
            .and_then(|kv| match kv.get(1)? {
                Reply::Int(i) => Some(i.to_string()),
                other => other.text(),
            })
            .with_context(|| format!("FT.INFO has no {field}"))
    }
}

/// Counters of one command in `INFO commandstats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Calls the server executed (failed ones included).
    pub calls: u64,
    /// Calls refused before running (ACL, OOM, arity, ...).
    pub rejected: u64,
    /// Calls that ran and failed.
    pub failed: u64,
}

/// `INFO commandstats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats(pub BTreeMap<String, Counters>);

impl CommandStats {
    /// The counters of one command, by its lower-case name (zero when it never ran).
    pub fn get(&self, name: &str) -> Counters {
        self.0.get(&name.to_ascii_lowercase()).copied().unwrap_or_default()
    }

    /// Every attempt the server saw of one command: executed plus refused.
    pub fn attempts(&self, name: &str) -> u64 {
        let c = self.get(name);
        c.calls + c.rejected
    }

    /// Attempts of every command except the ones named (the observer's own).
    pub fn total_except(&self, except: &[&str]) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| !except.contains(&k.as_str()))
            .map(|(_, c)| c.calls + c.rejected)
            .sum()
    }

    /// What changed since `before`: command → attempts added.
    pub fn since(&self, before: &CommandStats) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .filter_map(|(k, c)| {
                let b = before.get(k);
                let d = (c.calls + c.rejected).saturating_sub(b.calls + b.rejected);
                (d > 0).then(|| (k.clone(), d))
            })
            .collect()
    }
}

/// Resident memory of this process, in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A fresh index name for a test.
pub fn index_name(test: &str) -> String {
    format!("chaos-{test}-{}", random_token())
}
