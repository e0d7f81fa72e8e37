//! A minimal RESP2 client: enough to ping, list modules, read `INFO` and shut a server down.
//!
//! xtask checks servers before any crate of the workspace is built, so it cannot use the
//! project's own client; a few dozen lines of protocol keep it free of dependencies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text, for simple strings, bulk strings and integers.
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Where a server listens and how to log in, parsed from a `redis://` or `unix://` URL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    pub(crate) address: Address,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Address {
    Tcp(String),
    Unix(String),
}

impl Target {
    /// Parses `redis://[user[:password]@]host[:port][/db]` or `unix:///path` (also
    /// `redis+unix://`). TLS URLs cannot be checked without a TLS stack and are refused.
    pub(crate) fn parse(url: &str) -> Result<Target> {
        if let Some(path) =
            url.strip_prefix("unix://").or_else(|| url.strip_prefix("redis+unix://"))
        {
            let path = path.split('?').next().unwrap_or(path);
            return Ok(Target {
                address: Address::Unix(path.to_owned()),
                username: None,
                password: None,
            });
        }
        if url.starts_with("rediss://") {
            bail!(
                "xtask cannot check a TLS (rediss://) server; point ENGRAM_TEST_REDIS_URL at a redis:// URL"
            );
        }
        let Some(rest) = url.strip_prefix("redis://") else {
            bail!("the URL must start with redis://, unix:// or redis+unix://");
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => {
                    ((!user.is_empty()).then(|| user.to_owned()), Some(pass.to_owned()))
                }
                None => (Some(u.to_owned()), None),
            },
        };
        let host = if host.is_empty() { "127.0.0.1:6379".to_owned() } else { host.to_owned() };
        let host = if host.contains(':') { host } else { format!("{host}:6379") };
        Ok(Target { address: Address::Tcp(host), username, password })
    }
}

/// One connection to a server.
pub(crate) struct Conn {
    reader: BufReader<Box<dyn Stream>>,
}

impl Conn {
    /// Connects with a short timeout and logs in when the target has credentials.
    pub(crate) fn open(target: &Target, timeout: Duration) -> Result<Conn> {
        let stream: Box<dyn Stream> = match &target.address {
            Address::Tcp(addr) => {
                let sock = addr
                    .parse()
                    .or_else(|_| {
                        std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())?
                            .next()
                            .ok_or_else(|| std::io::Error::other("no address"))
                    })
                    .with_context(|| format!("cannot resolve {addr}"))?;
                let s = TcpStream::connect_timeout(&sock, timeout)
                    .with_context(|| format!("cannot connect to {addr}"))?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Box::new(s)
            }
            Address::Unix(path) => {
                let s = UnixStream::connect(path)
                    .with_context(|| format!("cannot connect to {path}"))?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Box::new(s)
            }
        };
        let mut conn = Conn { reader: BufReader::new(stream) };
        if let Some(password) = &target.password {
            let reply = match &target.username {
                Some(user) => conn.call(&["AUTH", user, password])?,
                None => conn.call(&["AUTH", password])?,
            };
            if let Reply::Error(e) = reply {
                // The server's message never contains the password; ours must not either.
                bail!("the server refused the credentials: {e}");
            }
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply.
    pub(crate) fn call(&mut self, args: &[&str]) -> Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out)?;
        self.reader.get_mut().flush()?;
        read_reply(&mut self.reader)
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("connection closed by the server");
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply> {
    let line = read_line(r)?;
    let (kind, body) = line.split_at(1.min(line.len()));
    Ok(match kind {
        "+" => Reply::Simple(body.to_owned()),
        "-" => Reply::Error(body.to_owned()),
        ":" => Reply::Int(body.parse().context("bad integer reply")?),
        "$" => {
            let len: i64 = body.parse().context("bad bulk length")?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; usize::try_from(len)? + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(buf.len() - 2);
                Reply::Bulk(Some(buf))
            }
        }
        "*" => {
            let len: i64 = body.parse().context("bad array length")?;
            if len < 0 {
                Reply::Array(None)
            } else {
                let items = (0..len).map(|_| read_reply(r)).collect::<Result<Vec<_>>>()?;
                Reply::Array(Some(items))
            }
        }
        _ => bail!("unexpected reply from the server: {line:?}"),
    })
}

/// A server's version and modules.
#[derive(Debug, Clone)]
pub(crate) struct ServerFacts {
    pub(crate) version: String,
    /// (name, encoded version such as 21005)
    pub(crate) modules: Vec<(String, i64)>,
}

impl ServerFacts {
    pub(crate) fn module(&self, name: &str) -> Option<i64> {
        self.modules.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    pub(crate) fn describe_modules(&self) -> String {
        if self.modules.is_empty() {
            return "none".to_owned();
        }
        self.modules
            .iter()
            .map(|(n, v)| format!("{n} {}.{}.{}", v / 10_000, (v / 100) % 100, v % 100))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads `INFO server` and `MODULE LIST`.
pub(crate) fn server_facts(conn: &mut Conn) -> Result<ServerFacts> {
    let info = conn.call(&["INFO", "server"])?;
    if let Reply::Error(e) = &info {
        bail!("INFO failed: {e}");
    }
    let info = info.text().unwrap_or_default();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let mut modules = Vec::new();
    match conn.call(&["MODULE", "LIST"])? {
        Reply::Array(Some(entries)) => {
            for entry in entries {
                let Reply::Array(Some(fields)) = entry else {
                    continue;
                };
                let mut name = None;
                let mut ver = None;
                for pair in fields.chunks(2) {
                    match (pair[0].text().as_deref(), pair.get(1)) {
                        (Some("name"), Some(v)) => name = v.text(),
                        (Some("ver"), Some(Reply::Int(v))) => ver = Some(*v),
                        _ => {}
                    }
                }
                if let (Some(n), Some(v)) = (name, ver) {
                    modules.push((n, v));
                }
            }
        }
        Reply::Error(e) => bail!("MODULE LIST failed: {e}"),
        other => bail!("unexpected MODULE LIST reply: {other:?}"),
    }
    Ok(ServerFacts { version, modules })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("redis://u:p%w@h:7000/0").unwrap();
        assert_eq!(t.address, Address::Tcp("h:7000".into()));
        assert_eq!((t.username.as_deref(), t.password.as_deref()), (Some("u"), Some("p%w")));
        let t = Target::parse("redis://:pw@localhost").unwrap();
        assert_eq!(t.address, Address::Tcp("localhost:6379".into()));
        assert_eq!((t.username, t.password.as_deref()), (None, Some("pw")));
        assert_eq!(
            Target::parse("unix:///tmp/r.sock?db=0").unwrap().address,
            Address::Unix("/tmp/r.sock".into())
        );
        assert!(Target::parse("rediss://h").is_err());
        assert!(Target::parse("http://h").is_err());
    }

    #[test]
    fn reads_nested_replies() {
        let raw = b"*2\r\n$4\r\nname\r\n*2\r\n:7\r\n$-1\r\n";
        let reply = read_reply(&mut &raw[..]).unwrap();
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"name".to_vec())),
                Reply::Array(Some(vec![Reply::Int(7), Reply::Bulk(None)]))
            ]))
        );
    }
}
