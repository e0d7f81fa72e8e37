//! The server's own ceiling, measured with its C clients on the same server in the same run:
//! `redis-benchmark` (HSET of the same payload size, HGETALL and HMGET) and `redis-cli --pipe`
//! (the same HSET or FT.SEARCH commands as engram sends, as raw RESP).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engram_config::RedisConfig;

use crate::error::{CliError, CliResult};

/// The C clients and where the server is.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `redis-benchmark`.
    pub benchmark: PathBuf,
    /// `redis-cli`.
    pub cli: PathBuf,
    host: String,
    port: u16,
    /// The password, passed through `REDISCLI_AUTH`, never on the command line.
    auth: Option<String>,
}

impl Tools {
    /// The tools in `bin_dir` for the server of `redis`; `None` when they are missing or the
    /// server is not a TCP URL without TLS.
    pub fn find(bin_dir: Option<&Path>, redis: &RedisConfig) -> Option<Self> {
        let dir = bin_dir?;
        let (benchmark, cli) = (dir.join("redis-benchmark"), dir.join("redis-cli"));
        if !benchmark.is_file() || !cli.is_file() || redis.tls_enabled() {
            return None;
        }
        let url = redis.url.parse().ok()?;
        if url.scheme() != "redis" {
            return None;
        }
        Some(Self {
            benchmark,
            cli,
            host: url.host_str()?.to_owned(),
            port: url.port().unwrap_or(6379),
            auth: redis.effective_password().map(|p| p.expose().to_owned()),
        })
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.args(["-h", &self.host, "-p", &self.port.to_string()]);
        if let Some(a) = &self.auth {
            c.env("REDISCLI_AUTH", a);
        }
        c
    }

    /// `redis-benchmark -n n -c clients -P pipeline -r keyspace <command...>`; requests/s.
    ///
    /// # Errors
    /// Exit code 1 when it cannot run or prints no rate.
    pub fn benchmark(
        &self,
        n: usize,
        clients: usize,
        pipeline: usize,
        keyspace: usize,
        command: &[Vec<u8>],
    ) -> CliResult<f64> {
        let mut c = self.command(&self.benchmark);
        c.args(["-q", "-n", &n.to_string(), "-c", &clients.to_string()]).args([
            "-P",
            &pipeline.to_string(),
            "-r",
            &keyspace.to_string(),
        ]);
        for a in command {
            c.arg(std::ffi::OsStr::new(&*String::from_utf8_lossy(a)));
        }
        let out = c.output().map_err(|e| {
            CliError::other(format!("cannot run {}: {e}", self.benchmark.display()))
        })?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(['\r', '\n'])
            .rfind(|l| l.contains("requests per second"))
            .and_then(|l| {
                let before = &l[..l.rfind("requests per second")?];
                before.split_whitespace().last()?.parse().ok()
            })
            .ok_or_else(|| {
                let tail: String = text
                    .trim()
                    .chars()
                    .rev()
                    .take(300)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                CliError::other(format!(
                    "redis-benchmark printed no rate: ...{tail} {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            })
    }

    /// Sends `commands` (raw RESP) with `redis-cli --pipe`; returns the wall time.
    ///
    /// # Errors
    /// Exit code 1 when it cannot run or reports errors.
    pub fn pipe(&self, commands: &[u8], expected_replies: usize) -> CliResult<Duration> {
        let mut c = self.command(&self.cli);
        c.arg("--pipe").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child =
            c.spawn().map_err(|e| CliError::other(format!("cannot run redis-cli: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(commands)
                .map_err(|e| CliError::other(format!("cannot feed redis-cli --pipe: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| CliError::other(format!("redis-cli --pipe failed: {e}")))?;
        let took = started.elapsed();
        let text = String::from_utf8_lossy(&out.stdout);
        let ok =
            text.contains("errors: 0") && text.contains(&format!("replies: {expected_replies}"));
        if !ok {
            return Err(CliError::other(format!(
                "redis-cli --pipe: expected {expected_replies} replies and 0 errors, found {}",
                text.trim()
            )));
        }
        Ok(took)
    }

    /// Deletes every key starting with `prefix` (SCAN through `redis-cli --scan`, then DEL).
    ///
    /// # Errors
    /// Exit code 1 when redis-cli fails.
    pub fn delete_prefix(&self, prefix: &str) -> CliResult<usize> {
        let out = self
            .command(&self.cli)
            .args(["--scan", "--pattern", &format!("{prefix}*"), "--count", "1000"])
            .output()
            .map_err(|e| CliError::other(format!("cannot run redis-cli --scan: {e}")))?;
        let keys: Vec<&[u8]> =
            out.stdout.split(|b| *b == b'\n').filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let mut buf = Vec::new();
        for chunk in keys.chunks(500) {
            let mut cmd: Vec<&[u8]> = vec![b"DEL"];
            cmd.extend(chunk.iter().copied());
            resp(&mut buf, &cmd);
        }
        self.pipe(&buf, keys.len().div_ceil(500))?;
        Ok(keys.len())
    }
}

/// Appends one command as a RESP array of bulk strings.
pub fn resp(buf: &mut Vec<u8>, args: &[&[u8]]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_encodes_binary_safe_bulk_strings() {
        let mut b = Vec::new();
        resp(&mut b, &[b"HSET", b"k", b"f", &[0, 13, 10]]);
        assert_eq!(b, b"*4\r\n$4\r\nHSET\r\n$1\r\nk\r\n$1\r\nf\r\n$3\r\n\x00\r\n\r\n".to_vec());
    }
}
