//! The Redis Stack backend, on `fred`: the only module of the workspace that names it.
//!
//! [`RedisConnection::connect`] builds a client pool from [`engram_config::RedisConfig`]:
//! connect and command timeouts always set (fred has none by default, and a command to a
//! stopped server would wait for ever), unlimited reconnection with capped, jittered
//! exponential backoff (a limited count would leave the client disconnected for good), RESP2
//! (fred's default, chosen deliberately: RediSearch replies keep their field order as flat
//! arrays, where RESP3 maps lose it; the price is that RESP2 carries no timeout warning, see
//! [`OnTimeoutPolicy`]). It then checks that the server has the modules engram needs, and fails
//! with [`ErrorKind::Unsupported`] naming what is missing.
//!
//! [`RedisBackend`] implements [`crate::StorageBackend`] on one RediSearch index: records as
//! hashes (layout in `codec`), writes and compare-and-set through one Lua script per key,
//! pipelined in chunks; searches as `FT.SEARCH` with `DIALECT 2`, scoped to one namespace and
//! to live records by server-side clauses (`query`).
//!
//! Every fred error is classified by one private function, `classify`, which with
//! `read_server_reply` is the only code that reads error text.

use std::fmt;
use std::time::{Duration, Instant};

use engram_config::{Durability, RedisConfig};
use fred::prelude::{
    ClientLike, Config as FredConfig, ConnectionConfig, Error as FredError, ErrorKind as FredKind,
    PerformanceConfig, Pool, ReconnectPolicy,
};
use fred::types::{RespVersion, Value};

use crate::error::{ErrorKind, Operation, StorageError};

mod backend;
mod codec;
mod index;
mod query;
mod scripts;

pub use backend::{
    DEFAULT_BATCH_SIZE, DEFAULT_BRUTE_FORCE_BELOW, DEFAULT_PLAN_ESTIMATE_TTL, DEFAULT_WRITE_CHUNK,
    OnTimeoutPolicy, RedisBackend, RedisBackendOptions,
};

/// Lowest RediSearch version engram supports (2.10.0, encoded as the server reports it).
pub const MIN_SEARCH_VERSION: u32 = 2_10_00;

/// A loaded server module and its version, as `MODULE LIST` reports it (2.10.5 is 21005).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Module name, for example `search` or `ReJSON`.
    pub name: String,
    /// Version as the server encodes it: `major × 10000 + minor × 100 + patch`.
    pub version: u32,
}

impl ModuleInfo {
    /// The version as `major.minor.patch`.
    pub fn version_string(&self) -> String {
        format_module_version(self.version)
    }
}

impl fmt::Display for ModuleInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version_string())
    }
}

/// Formats an encoded module version (`21005`) as `2.10.5`.
pub fn format_module_version(v: u32) -> String {
    format!("{}.{}.{}", v / 10_000, (v / 100) % 100, v % 100)
}

/// What the server is: its version and loaded modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `redis_version` from `INFO server`.
    pub version: String,
    /// Modules from `MODULE LIST`.
    pub modules: Vec<ModuleInfo>,
}

impl ServerInfo {
    /// The module with this name, if loaded.
    pub fn module(&self, name: &str) -> Option<&ModuleInfo> {
        self.modules.iter().find(|m| m.name == name)
    }

    /// Checks that the server has RediSearch 2.10 or newer.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] naming the missing module or the version found.
    pub fn check_requirements(&self) -> Result<(), StorageError> {
        match self.module("search") {
            None => Err(StorageError::new(
                ErrorKind::Unsupported,
                Operation::Connect,
                format!(
                    "the server (redis {}) has no `search` module; engram needs Redis Stack with RediSearch {} or newer (loaded: {})",
                    self.version,
                    format_module_version(MIN_SEARCH_VERSION),
                    self.module_list()
                ),
            )),
            Some(m) if m.version < MIN_SEARCH_VERSION => Err(StorageError::new(
                ErrorKind::Unsupported,
                Operation::Connect,
                format!(
                    "the server's `search` module is {}, engram needs {} or newer (vector search with KNN and DIALECT 2)",
                    m.version_string(),
                    format_module_version(MIN_SEARCH_VERSION)
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    fn module_list(&self) -> String {
        if self.modules.is_empty() {
            "none".to_owned()
        } else {
            self.modules.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        }
    }
}

/// A connected, checked client pool to Redis Stack.
pub struct RedisConnection {
    pool: Pool,
    command_timeout: Duration,
    durability: Durability,
    durability_timeout: Duration,
    server: ServerInfo,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // fred's own Config prints the password; show only what is safe.
        f.debug_struct("RedisConnection")
            .field("server_version", &self.server.version)
            .field("command_timeout", &self.command_timeout)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// Connects, then checks the server's modules.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for a URL fred cannot use or an unreadable
    /// `redis.tls.ca_path`, [`ErrorKind::Unsupported`] when the server lacks RediSearch 2.10,
    /// [`ErrorKind::Auth`] for refused credentials, [`ErrorKind::Unavailable`] when the server
    /// cannot be reached or the TLS handshake fails (an unknown CA, for example), and
    /// [`ErrorKind::Timeout`] when it does not answer within `connect_timeout`.
    pub async fn connect(config: &RedisConfig) -> Result<Self, StorageError> {
        let pool = build_pool(config)?;
        // `init` waits for the first connection; fail_fast (fred's default) makes a refused
        // connection an error instead of a reconnection loop. Bound it by the connect timeout
        // in case the server accepts TCP but never answers.
        let connected = tokio::time::timeout(config.connect_timeout, pool.init()).await;
        match connected {
            Err(_) => {
                let _ = pool.quit().await;
                return Err(StorageError::new(
                    ErrorKind::Timeout,
                    Operation::Connect,
                    format!("no answer from {} within {:?}", config.url, config.connect_timeout),
                ));
            }
            Ok(Err(e)) => {
                let _ = pool.quit().await;
                return Err(classify(Operation::Connect, e));
            }
            Ok(Ok(_handle)) => {}
        }
        let mut this = Self {
            pool,
            command_timeout: config.command_timeout,
            durability: config.durability,
            durability_timeout: config.durability_timeout,
            server: ServerInfo { version: String::new(), modules: Vec::new() },
        };
        let checked = async {
            this.server = this.fetch_server_info().await?;
            this.server.check_requirements()
        }
        .await;
        if let Err(e) = checked {
            this.disconnect().await;
            return Err(e);
        }
        Ok(this)
    }

    /// The server's version and modules, as read at connection time.
    pub fn server(&self) -> &ServerInfo {
        &self.server
    }

    /// How long the client waits for the reply to any one command (`redis.command_timeout`)
    /// before it fails that command with [`ErrorKind::Timeout`].
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// What an acknowledged write means (`redis.durability`), and how long a write batch
    /// waits for the append-only file under [`Durability::WaitAof`].
    pub fn durability(&self) -> (Durability, Duration) {
        (self.durability, self.durability_timeout)
    }

    /// Commands buffered in the client and not yet written to the server, summed over the
    /// pool's connections (they pile up while the server is unreachable; the command timeout
    /// and the circuit breaker bound them).
    pub fn queued_commands(&self) -> usize {
        use fred::interfaces::MetricsInterface;
        self.pool.clients().iter().map(MetricsInterface::command_queue_len).sum()
    }

    /// Commands the client sent again because their connection closed while they waited for a
    /// reply, summed over the pool's connections.
    pub fn redeliveries(&self) -> usize {
        use fred::interfaces::MetricsInterface;
        self.pool.clients().iter().map(MetricsInterface::read_redelivery_count).sum()
    }

    /// Sends `PING` and returns the round-trip time.
    ///
    /// # Errors
    /// The classified fred error (see [`RedisConnection::connect`]).
    pub async fn ping(&self) -> Result<Duration, StorageError> {
        let start = Instant::now();
        let _: String = self.pool.ping(None).await.map_err(|e| classify(Operation::Ping, e))?;
        Ok(start.elapsed())
    }

    /// Reads the server's version (`INFO server`) and modules (`MODULE LIST`).
    ///
    /// # Errors
    /// The classified fred error, or [`ErrorKind::Protocol`] for a reply of an unknown shape.
    pub async fn fetch_server_info(&self) -> Result<ServerInfo, StorageError> {
        let op = Operation::Describe;
        let info: String = self
            .pool
            .info(Some(fred::types::InfoKind::Server))
            .await
            .map_err(|e| classify(op, e))?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| protocol(op, "INFO server has no redis_version"))?;
        let reply: Value = self
            .pool
            .next()
            .custom(fred::cmd!("MODULE"), vec!["LIST"])
            .await
            .map_err(|e| classify(op, e))?;
        Ok(ServerInfo { version, modules: parse_module_list(reply)? })
    }

    /// Closes every connection of the pool.
    pub async fn disconnect(self) {
        let _ = self.pool.quit().await;
    }

    /// The client pool, for the backend's commands.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Sends one command given as raw arguments and returns its reply, for tests and
    /// benchmarks that must reach under the backend (write a key of another type, flush the
    /// script cache, drop an index, read a TTL).
    ///
    /// # Errors
    /// The classified fred error.
    #[cfg(feature = "testkit")]
    pub async fn raw_command(
        &self,
        name: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<RawReply, StorageError> {
        let args: Vec<Value> =
            args.into_iter().map(|a| Value::Bytes(fred::bytes::Bytes::from(a))).collect();
        let cmd = fred::types::CustomCommand::new(
            name.to_owned(),
            fred::types::ClusterHash::FirstKey,
            false,
        );
        let reply: Value = self
            .pool
            .next()
            .custom(cmd, args)
            .await
            .map_err(|e| classify(Operation::Describe, e))?;
        Ok(RawReply::from_value(reply))
    }
}

/// A reply of [`RedisConnection::raw_command`], without fred types.
#[cfg(feature = "testkit")]
#[derive(Debug, Clone, PartialEq)]
pub enum RawReply {
    /// Nil.
    Nil,
    /// An integer.
    Integer(i64),
    /// A string or bulk string (status replies too).
    Bytes(Vec<u8>),
    /// An array (RESP2 maps arrive as arrays).
    Array(Vec<RawReply>),
}

#[cfg(feature = "testkit")]
impl RawReply {
    fn from_value(v: Value) -> Self {
        match v {
            Value::Null => RawReply::Nil,
            Value::Integer(i) => RawReply::Integer(i),
            Value::Array(items) => {
                RawReply::Array(items.into_iter().map(Self::from_value).collect())
            }
            Value::Map(_) => {
                RawReply::Array(v.into_array().into_iter().map(Self::from_value).collect())
            }
            other => RawReply::Bytes(other.into_bytes().map(|b| b.to_vec()).unwrap_or_default()),
        }
    }

    /// The integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            RawReply::Integer(i) => Some(*i),
            RawReply::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The text, if it is a UTF-8 string.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            RawReply::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

fn protocol(op: Operation, message: impl Into<String>) -> StorageError {
    StorageError::new(ErrorKind::Protocol, op, message)
}

/// Parses `MODULE LIST`: an array of flat `[name, n, ver, v, ...]` arrays (RESP2).
fn parse_module_list(reply: Value) -> Result<Vec<ModuleInfo>, StorageError> {
    let op = Operation::Describe;
    let Value::Array(entries) = reply else {
        return Err(protocol(op, "MODULE LIST did not return an array"));
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(fields) = entry else {
                return Err(protocol(op, "MODULE LIST entry is not an array"));
            };
            let mut name = None;
            let mut version = None;
            for pair in fields.chunks(2) {
                match (pair[0].as_str().as_deref(), pair.get(1)) {
                    (Some("name"), Some(v)) => name = v.as_string(),
                    (Some("ver"), Some(v)) => {
                        version = v.as_u64().and_then(|v| u32::try_from(v).ok())
                    }
                    _ => {}
                }
            }
            match (name, version) {
                (Some(name), Some(version)) => Ok(ModuleInfo { name, version }),
                _ => Err(protocol(op, "MODULE LIST entry lacks name or ver")),
            }
        })
        .collect()
}

fn build_pool(config: &RedisConfig) -> Result<Pool, StorageError> {
    let op = Operation::Connect;
    // fred spells Unix sockets `redis+unix://`; engram also accepts `unix://`.
    let url = match config.url.expose().strip_prefix("unix://") {
        Some(rest) => format!("redis+unix://{rest}"),
        None => config.url.expose().to_owned(),
    };
    // fred turns TLS on for rediss:// itself; `redis.tls.enabled` asks for it on redis://.
    let url = match url.strip_prefix("redis://") {
        Some(rest) if config.tls.enabled => format!("rediss://{rest}"),
        _ => url,
    };
    let mut fred_config = FredConfig::from_url(&url).map_err(|e| {
        // fred's message may quote the URL; never pass it on.
        StorageError::new(
            ErrorKind::InvalidInput,
            op,
            format!("fred cannot use redis.url: {:?}", e.kind()),
        )
    })?;
    fred_config.version = RespVersion::RESP2;
    if config.tls_enabled() {
        fred_config.tls = Some(tls_connector(config)?.into());
    }
    if let Some(user) = config.effective_username() {
        fred_config.username = Some(user);
    }
    if let Some(password) = config.effective_password() {
        fred_config.password = Some(password.expose().to_owned());
    }
    fred_config.database = Some(0);

    let connection = ConnectionConfig {
        connection_timeout: config.connect_timeout,
        internal_command_timeout: config.command_timeout,
        // One attempt per command: retries belong to engram's retry layer, which knows the
        // operation's idempotency and the retry budget.
        max_command_attempts: 1,
        ..ConnectionConfig::default()
    };
    let performance = PerformanceConfig {
        default_command_timeout: config.command_timeout,
        ..PerformanceConfig::default()
    };
    let r = &config.reconnect;
    let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    let mut policy =
        ReconnectPolicy::new_exponential(0, millis(r.min_delay), millis(r.max_delay), 2);
    policy.set_jitter(millis(r.jitter));

    fred::types::Builder::from_config(fred_config)
        .set_connection_config(connection)
        .set_performance_config(performance)
        .set_policy(policy)
        .build_pool(config.pool_size as usize)
        .map_err(|e| classify(op, e))
}

/// A rustls connector (ring provider) trusting `redis.tls.ca_path` when set, else the
/// system's roots.
fn tls_connector(config: &RedisConfig) -> Result<fred::types::config::TlsConnector, StorageError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let op = Operation::Connect;
    let Some(ca) = &config.tls.ca_path else {
        return fred::types::config::TlsConnector::default_rustls().map_err(|e| classify(op, e));
    };
    let bad_ca = |why: String| {
        StorageError::new(
            ErrorKind::InvalidInput,
            op,
            format!("redis.tls.ca_path ({}): {why}", ca.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| bad_ca(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_ca(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad_ca("holds no PEM certificate".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| bad_ca(e.to_string()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad_ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(client.into())
}

/// Classifies a fred error. fred reports most server errors with a catch-all kind, so the
/// server's error prefix decides; this and [`read_server_reply`] are the only code that reads
/// error text.
fn classify(op: Operation, error: FredError) -> StorageError {
    let details = error.details().to_owned();
    let kind = match error.kind() {
        FredKind::IO | FredKind::Canceled => ErrorKind::Unavailable,
        FredKind::Timeout => ErrorKind::Timeout,
        FredKind::Backpressure => ErrorKind::Backpressure,
        FredKind::Auth => ErrorKind::Auth,
        // A handshake or certificate failure: the connection could not be made.
        FredKind::Tls => ErrorKind::Unavailable,
        FredKind::Protocol | FredKind::Parse => ErrorKind::Protocol,
        FredKind::Url | FredKind::Config => ErrorKind::InvalidInput,
        FredKind::NotFound => ErrorKind::NotFound,
        // fred gives these kinds to server replies too (`WRONGTYPE`, `Invalid argument`), so
        // the reply decides when it is a known one.
        FredKind::InvalidArgument | FredKind::InvalidCommand => match read_server_reply(&details) {
            ServerReply::Other => ErrorKind::InvalidInput,
            reply => reply.kind(),
        },
        _ => read_server_reply(&details).kind(),
    };
    let message = match error.kind() {
        // Configuration errors may quote the URL with its credentials.
        FredKind::Url | FredKind::Config => {
            format!("invalid client configuration ({:?})", error.kind())
        }
        // fred writes an I/O error with `Debug`: `Os { code: 111, kind: ConnectionRefused,
        // message: "Connection refused" }`. Say it as `io::Error`'s `Display` would.
        FredKind::IO => readable_io_error(&details),
        // A query syntax error quotes the query near the offset, which may hold caller values.
        _ => match details.find(" near ") {
            Some(i) if read_server_reply(&details) == ServerReply::QuerySyntax => {
                format!("the server refused the query: {}", &details[..i])
            }
            _ => details,
        },
    };
    StorageError::new(kind, op, message).with_source(SourceError(format!("{:?}", error.kind())))
}

/// `Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }` (the `Debug` of
/// an OS error) as `Connection refused (os error 111)`; other texts as they are.
fn readable_io_error(details: &str) -> String {
    let field = |name: &str| {
        let start = details.find(name)? + name.len();
        let rest = &details[start..];
        Some(rest[..rest.find([',', '}', '"'])?].trim())
    };
    match (details.trim_start().starts_with("Os {"), field("message: \""), field("code: ")) {
        (true, Some(message), Some(code)) => format!("{message} (os error {code})"),
        _ => details.to_owned(),
    }
}

/// What a server error reply is, read from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerReply {
    /// A reply whose kind is known by its prefix or wording.
    Kind(ErrorKind),
    /// `NOSCRIPT`: `EVALSHA` of a script the server does not have; nothing ran.
    NoScript,
    /// `FT.CREATE` of an index that exists (another process created it first).
    IndexExists,
    /// A RediSearch query syntax error.
    QuerySyntax,
    /// Anything else.
    Other,
}

impl ServerReply {
    fn kind(self) -> ErrorKind {
        match self {
            ServerReply::Kind(k) => k,
            ServerReply::QuerySyntax => ErrorKind::InvalidInput,
            ServerReply::NoScript | ServerReply::IndexExists | ServerReply::Other => {
                ErrorKind::Unexpected
            }
        }
    }
}

/// Reads a server error reply: by its prefix, then by RediSearch's wording (RediSearch
/// replies have no prefix).
fn read_server_reply(details: &str) -> ServerReply {
    let upper = details.trim_start().to_ascii_uppercase();
    let prefix = upper.split_whitespace().next().unwrap_or("");
    match prefix {
        "OOM" => ServerReply::Kind(ErrorKind::OutOfMemory),
        "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" => {
            ServerReply::Kind(ErrorKind::Unavailable)
        }
        "READONLY" | "NOPERM" => ServerReply::Kind(ErrorKind::PermissionDenied),
        "WRONGPASS" | "NOAUTH" => ServerReply::Kind(ErrorKind::Auth),
        "NOSCRIPT" => ServerReply::NoScript,
        // A key of the record's name holds another type: not the caller's input, not worth a
        // retry.
        "WRONGTYPE" => ServerReply::Kind(ErrorKind::Unexpected),
        _ if upper.contains("UNKNOWN INDEX NAME") || upper.contains("NO SUCH INDEX") => {
            ServerReply::Kind(ErrorKind::IndexMissing)
        }
        _ if upper.contains("INDEX ALREADY EXISTS") => ServerReply::IndexExists,
        _ if upper.contains("TIMEOUT LIMIT WAS REACHED") => ServerReply::Kind(ErrorKind::Timeout),
        _ if upper.starts_with("SYNTAX ERROR") || upper.contains("PARSING ERROR") => {
            ServerReply::QuerySyntax
        }
        _ if upper.starts_with("UNKNOWN ARGUMENT")
            || upper.starts_with("BAD ARGUMENTS")
            || upper.starts_with("INVALID FIELD TYPE")
            || upper.starts_with("EXPECTED") =>
        {
            // Arguments engram built that the server did not understand.
            ServerReply::Kind(ErrorKind::Protocol)
        }
        _ => ServerReply::Other,
    }
}

/// Classifies a server error reply by its prefix.
#[cfg(test)]
fn classify_server_reply(details: &str) -> ErrorKind {
    read_server_reply(details).kind()
}

/// Whether a fred error is a `NOSCRIPT` reply.
fn is_noscript(error: &FredError) -> bool {
    read_server_reply(error.details()) == ServerReply::NoScript
}

/// Whether a fred error says the index exists already.
fn is_index_exists(error: &FredError) -> bool {
    read_server_reply(error.details()) == ServerReply::IndexExists
}

/// The fred error kind kept as the source, without fred's details (which may quote input).
#[derive(Debug)]
struct SourceError(String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fred error kind {}", self.0)
    }
}

impl std::error::Error for SourceError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(modules: &[(&str, u32)]) -> ServerInfo {
        ServerInfo {
            version: "7.4.1".into(),
            modules: modules
                .iter()
                .map(|(n, v)| ModuleInfo { name: (*n).into(), version: *v })
                .collect(),
        }
    }

    #[test]
    fn io_errors_read_like_io_errors() {
        let os = r#"Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }"#;
        assert_eq!(readable_io_error(os), "Connection refused (os error 111)");
        let e = classify(Operation::Connect, FredError::new(FredKind::IO, os));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.message(), "Connection refused (os error 111)");
        assert_eq!(readable_io_error("Connection reset"), "Connection reset");
        assert_eq!(readable_io_error("Os { broken"), "Os { broken");
    }

    #[test]
    fn requirements_name_what_is_missing() {
        assert!(server(&[("search", 21005), ("ReJSON", 20803)]).check_requirements().is_ok());
        let e = server(&[("ReJSON", 20803)]).check_requirements().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(
            e.message().contains("no `search` module") && e.message().contains("ReJSON 2.8.3"),
            "{e}"
        );
        let e = server(&[("search", 20806)]).check_requirements().unwrap_err();
        assert!(e.message().contains("2.8.6") && e.message().contains("2.10.0"), "{e}");
    }

    #[test]
    fn server_replies_are_classified_by_prefix() {
        let cases = [
            ("OOM command not allowed when used memory > 'maxmemory'.", ErrorKind::OutOfMemory),
            ("LOADING Redis is loading the dataset in memory", ErrorKind::Unavailable),
            ("BUSY Redis is busy running a script.", ErrorKind::Unavailable),
            ("READONLY You can't write against a read only replica.", ErrorKind::PermissionDenied),
            (
                "NOPERM User bob has no permissions to run the 'hset' command",
                ErrorKind::PermissionDenied,
            ),
            ("WRONGPASS invalid username-password pair or user is disabled.", ErrorKind::Auth),
            ("NOAUTH Authentication required.", ErrorKind::Auth),
            ("Unknown index name", ErrorKind::IndexMissing),
            ("idx: no such index", ErrorKind::IndexMissing),
            ("Syntax error at offset 3 near foo", ErrorKind::InvalidInput),
            ("Timeout limit was reached", ErrorKind::Timeout),
            (
                "WRONGTYPE Operation against a key holding the wrong kind of value",
                ErrorKind::Unexpected,
            ),
            ("Unknown argument `FOO` at position 3 for <main>", ErrorKind::Protocol),
            ("NOSCRIPT No matching script. Please use EVAL.", ErrorKind::Unexpected),
            ("Index already exists", ErrorKind::Unexpected),
            ("ERR something else", ErrorKind::Unexpected),
        ];
        for (reply, kind) in cases {
            assert_eq!(classify_server_reply(reply), kind, "{reply}");
        }
    }

    #[test]
    fn fred_kinds_are_classified() {
        let cases = [
            (FredKind::IO, ErrorKind::Unavailable),
            (FredKind::Canceled, ErrorKind::Unavailable),
            (FredKind::Timeout, ErrorKind::Timeout),
            (FredKind::Backpressure, ErrorKind::Backpressure),
            (FredKind::Auth, ErrorKind::Auth),
            (FredKind::Unknown, ErrorKind::Unexpected),
        ];
        for (fred_kind, kind) in cases {
            let e = classify(Operation::Get, FredError::new(fred_kind.clone(), "x"));
            assert_eq!(e.kind(), kind, "{fred_kind:?}");
        }
        let oom =
            classify(Operation::Put, FredError::new(FredKind::Unknown, "OOM command not allowed"));
        assert_eq!(oom.kind(), ErrorKind::OutOfMemory);
        assert!(!oom.is_temporary());
    }

    #[test]
    fn script_and_index_replies_are_recognised() {
        let noscript = FredError::new(FredKind::Unknown, "NOSCRIPT No matching script.");
        assert!(is_noscript(&noscript));
        assert!(!is_noscript(&FredError::new(FredKind::Unknown, "ERR other")));
        assert!(is_index_exists(&FredError::new(FredKind::Unknown, "Index already exists")));
        let wrongtype = classify(
            Operation::Put,
            FredError::new(FredKind::InvalidArgument, "WRONGTYPE Operation against a key"),
        );
        assert_eq!(wrongtype.kind(), ErrorKind::Unexpected);
        let fred_side = classify(Operation::Put, FredError::new(FredKind::InvalidArgument, "x"));
        assert_eq!(fred_side.kind(), ErrorKind::InvalidInput);
        let timeout = classify(
            Operation::Search,
            FredError::new(FredKind::Unknown, "Timeout limit was reached"),
        );
        assert_eq!(timeout.kind(), ErrorKind::Timeout);
        assert!(timeout.is_temporary());
    }

    #[test]
    fn syntax_errors_do_not_quote_the_query() {
        let e = classify(
            Operation::Search,
            FredError::new(FredKind::Unknown, "Syntax error at offset 12 near secret-tag"),
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(!e.message().contains("secret-tag"), "{e}");
        assert!(e.message().contains("offset 12"), "{e}");
    }

    #[test]
    fn url_errors_never_quote_the_url() {
        let e = classify(
            Operation::Connect,
            FredError::new(FredKind::Url, "bad url redis://u:secret@h"),
        );
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn module_versions_format() {
        assert_eq!(format_module_version(21005), "2.10.5");
        assert_eq!(format_module_version(20803), "2.8.3");
    }
}
