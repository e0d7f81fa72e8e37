//! Connection settings for the Redis Stack server.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration;
use crate::problems::Collector;
use crate::secret::{REDACTED, Secret};

/// Where and how to connect to Redis Stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server URL: `redis://host:port/db`, `rediss://host:port/db` (TLS) or `unix:///path/to.sock`.
    /// Credentials in the URL are accepted and redacted whenever the URL is shown.
    /// When neither the file nor `ENGRAM__REDIS__URL` sets it, `REDIS_URL` is used.
    /// Default: `redis://127.0.0.1:6379`.
    pub url: RedisUrl,
    /// ACL user name. Default: none (the URL's, else the `default` user).
    #[serde(with = "crate::lenient::opt_string", skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (secret; never shown). Default: none (the URL's, else no `AUTH`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Logical database. RediSearch creates indexes only in database 0, so 0 is the only value
    /// that validates; the key exists so that a URL's `/n` path is checked instead of ignored.
    /// Default: none (the URL's, else 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<u32>,
    /// TLS settings. A `rediss://` URL turns TLS on whatever `tls.enabled` says.
    pub tls: TlsConfig,
    /// Number of connections in the client pool. One connection already pipelines concurrent
    /// commands; more help only when the server has cores to spare. Default: `1`.
    pub pool_size: u32,
    /// Time allowed to open a connection (TCP, TLS and `AUTH`). Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for one command before it fails with a timeout. Always set: without it a
    /// command to a stopped server waits for ever. Default: `2s`.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How the client reconnects after losing its connection.
    pub reconnect: ReconnectConfig,
    /// What an acknowledged write means: `none` (the server applied it; whether it survives
    /// a crash depends on the server's `appendonly`/`appendfsync`) or `waitaof` (engram also
    /// waits, with `WAITAOF 1 0`, until the server has written it to its append-only file on
    /// disk; needs `appendonly yes`). Default: `none`.
    pub durability: Durability,
    /// How long one write batch waits for the append-only file under `durability = "waitaof"`;
    /// must then be below `command_timeout`. Default: `1s`.
    #[serde(with = "humantime_serde")]
    pub durability_timeout: Duration,
}

/// What an acknowledged write means (see `redis.durability` in docs/configuration.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// A write is acknowledged once the server applied it in memory.
    #[default]
    None,
    /// A write is acknowledged once the server also fsynced it to its append-only file
    /// (`WAITAOF 1 0 <durability_timeout>` after each write batch).
    #[serde(rename = "waitaof")]
    WaitAof,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: RedisUrl::default(),
            username: None,
            password: None,
            database: None,
            tls: TlsConfig::default(),
            pool_size: 1,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(2),
            reconnect: ReconnectConfig::default(),
            durability: Durability::None,
            durability_timeout: Duration::from_secs(1),
        }
    }
}

/// TLS settings for the Redis connection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Use TLS even with a `redis://` URL. Default: `false`.
    pub enabled: bool,
    /// PEM file with the certificate authorities to trust, in place of the system roots.
    /// Default: none (system roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_path: Option<PathBuf>,
}

/// Reconnection after a lost connection: unlimited attempts with capped, jittered exponential
/// backoff. A limited number of attempts would leave the client disconnected for good once
/// exhausted; the circuit breaker sheds load meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconnectConfig {
    /// Delay before the first reconnection attempt. Default: `100ms`.
    #[serde(with = "humantime_serde")]
    pub min_delay: Duration,
    /// Longest delay between attempts. Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Random delay added to each attempt, up to this much, so that many clients do not
    /// reconnect in step. Default: `100ms`.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            jitter: Duration::from_millis(100),
        }
    }
}

/// The URL schemes accepted for [`RedisUrl`].
pub const URL_SCHEMES: [&str; 4] = ["redis", "rediss", "unix", "redis+unix"];

/// A Redis server URL. `Debug` and `Display` redact the password; a URL that does not parse is
/// never shown at all, since its credentials could not be located.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl Default for RedisUrl {
    fn default() -> Self {
        Self("redis://127.0.0.1:6379".to_owned())
    }
}

impl RedisUrl {
    /// Wraps a URL without checking it; [`crate::Config::validate`] checks it.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL as given, credentials included. Call this only to connect.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The parsed URL, or why it does not parse (without echoing the URL).
    pub fn parse(&self) -> Result<url::Url, String> {
        let parsed = url::Url::parse(&self.0).map_err(|e| format!("is not a valid URL ({e})"))?;
        if !URL_SCHEMES.contains(&parsed.scheme()) {
            return Err(format!(
                "has the unsupported scheme `{}` (expected one of {})",
                parsed.scheme(),
                URL_SCHEMES.join(", ")
            ));
        }
        Ok(parsed)
    }

    /// Whether the scheme asks for TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.parse().map(|u| u.scheme() == "rediss").unwrap_or(false)
    }

    /// Whether the URL names a Unix socket.
    pub fn is_unix(&self) -> bool {
        self.parse().map(|u| u.scheme().ends_with("unix")).unwrap_or(false)
    }

    /// The password inside the URL, if any.
    pub fn password(&self) -> Option<Secret> {
        let url = self.parse().ok()?;
        url.password().map(|p| Secret::new(percent_decode(p)))
    }

    /// The user name inside the URL, if any.
    pub fn username(&self) -> Option<String> {
        let url = self.parse().ok()?;
        let user = url.username();
        (!user.is_empty()).then(|| percent_decode(user))
    }

    /// The database number from the URL path (`redis://host/3`), if any.
    pub fn database(&self) -> Option<Result<u32, String>> {
        let url = self.parse().ok()?;
        if url.scheme().ends_with("unix") {
            return url.query_pairs().find(|(k, _)| k == "db").map(|(_, v)| {
                v.parse::<u32>().map_err(|_| format!("database `{v}` is not a number"))
            });
        }
        let path = url.path().trim_start_matches('/');
        (!path.is_empty())
            .then(|| path.parse::<u32>().map_err(|_| format!("database `{path}` is not a number")))
    }

    /// The URL with its password replaced by [`REDACTED`]; safe to print.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                // The url crate would percent-encode the brackets of REDACTED, so a plain
                // placeholder goes in and is swapped afterwards.
                const PLACEHOLDER: &str = "engram-redacted-password";
                if url.password().is_some() && url.set_password(Some(PLACEHOLDER)).is_ok() {
                    return url.to_string().replacen(PLACEHOLDER, REDACTED, 1);
                }
                url.to_string()
            }
            Err(_) => "<unparseable redis url>".to_owned(),
        }
    }
}

fn percent_decode(s: &str) -> String {
    // The url crate keeps user info percent-encoded; the server wants the raw text.
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({:?})", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

impl RedisConfig {
    /// Whether the connection uses TLS (a `rediss://` URL or `tls.enabled`).
    pub fn tls_enabled(&self) -> bool {
        self.tls.enabled || self.url.is_tls()
    }

    /// The password to send: the `password` key, else the URL's.
    pub fn effective_password(&self) -> Option<Secret> {
        self.password.clone().or_else(|| self.url.password())
    }

    /// The user name to send: the `username` key, else the URL's.
    pub fn effective_username(&self) -> Option<String> {
        self.username.clone().or_else(|| self.url.username())
    }

    pub(crate) fn validate(&self, c: &mut Collector) {
        match self.url.parse() {
            Err(why) => c.push("redis.url", why),
            Ok(url) => {
                if url.scheme().ends_with("unix") {
                    c.check(!url.path().is_empty() && url.path() != "/", "redis.url", || {
                        "names no socket path (expected unix:///path/to/redis.sock)".to_owned()
                    });
                    c.check(!self.tls.enabled, "redis.tls.enabled", || {
                        "is true but the URL is a Unix socket, which does not use TLS".to_owned()
                    });
                } else {
                    c.check(url.host_str().is_some_and(|h| !h.is_empty()), "redis.url", || {
                        "names no host".to_owned()
                    });
                }
                if url.password().is_some() && self.password.is_some() {
                    c.push(
                        "redis.password",
                        "is set and the URL carries a password too; keep one of them",
                    );
                }
                if let Some(Err(why)) = self.url.database() {
                    c.push("redis.url", why);
                }
            }
        }
        let database = self.database.or_else(|| self.url.database().and_then(Result::ok));
        if let Some(db) = database.filter(|db| *db != 0) {
            c.push(
                "redis.database",
                format!("({db}) must be 0: RediSearch creates indexes only in database 0"),
            );
        }
        if self.password.as_ref().is_some_and(Secret::is_empty) {
            c.push("redis.password", "is empty; remove the key for no password");
        }
        if let Some(ca) = &self.tls.ca_path {
            if !self.tls_enabled() {
                c.push(
                    "redis.tls.ca_path",
                    "is set but TLS is off (use a rediss:// URL or set redis.tls.enabled)",
                );
            } else if !ca.is_file() {
                c.push("redis.tls.ca_path", format!("({}) is not a readable file", ca.display()));
            }
        }
        c.check((1..=64).contains(&self.pool_size), "redis.pool_size", || {
            format!("({}) must be between 1 and 64", self.pool_size)
        });
        c.nonzero(self.connect_timeout, "redis.connect_timeout");
        c.nonzero(self.command_timeout, "redis.command_timeout");
        c.nonzero(self.durability_timeout, "redis.durability_timeout");
        let fits =
            self.durability == Durability::None || self.durability_timeout < self.command_timeout;
        c.check(fits, "redis.durability_timeout", || {
            format!(
                "({}) must be below redis.command_timeout ({}), which bounds the whole write batch",
                duration::format(self.durability_timeout),
                duration::format(self.command_timeout)
            )
        });
        let r = &self.reconnect;
        c.nonzero(r.min_delay, "redis.reconnect.min_delay");
        c.check(r.max_delay >= r.min_delay, "redis.reconnect.max_delay", || {
            format!(
                "({}) is below redis.reconnect.min_delay ({})",
                duration::format(r.max_delay),
                duration::format(r.min_delay)
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_password_is_redacted_in_debug_and_display() {
        let url = RedisUrl::new("redis://alice:s3cr3t-pw@localhost:6380/0");
        for shown in [format!("{url}"), format!("{url:?}")] {
            assert!(!shown.contains("s3cr3t-pw"), "{shown}");
            assert!(shown.contains(REDACTED) && shown.contains("alice"), "{shown}");
        }
        assert_eq!(url.password().unwrap().expose(), "s3cr3t-pw");
        assert_eq!(url.username().as_deref(), Some("alice"));
    }

    #[test]
    fn durability_parses_and_its_timeout_must_fit_the_command_timeout() {
        let c: RedisConfig = toml::from_str("durability = \"waitaof\"").unwrap();
        assert_eq!(c.durability, Durability::WaitAof);
        let c: RedisConfig = toml::from_str("durability = \"none\"").unwrap();
        assert_eq!(c.durability, Durability::None);
        assert!(toml::from_str::<RedisConfig>("durability = \"always\"").is_err());
        let mut c =
            RedisConfig { durability_timeout: Duration::from_secs(3), ..Default::default() };
        let mut problems = Collector::default();
        c.validate(&mut problems);
        assert!(problems.finish().is_ok(), "only checked under waitaof");
        c.durability = Durability::WaitAof;
        let mut problems = Collector::default();
        c.validate(&mut problems);
        let found = problems.finish().unwrap_err().to_string();
        assert!(found.contains("redis.durability_timeout") && found.contains("below"), "{found}");
        c.durability_timeout = Duration::from_millis(500);
        let mut problems = Collector::default();
        c.validate(&mut problems);
        assert!(problems.finish().is_ok());
    }

    #[test]
    fn unparseable_url_is_never_echoed() {
        let url = RedisUrl::new("redis://user:pa ss word@@::nonsense");
        assert!(!format!("{url} {url:?}").contains("pa ss"));
    }

    #[test]
    fn percent_encoded_credentials_are_decoded() {
        let url = RedisUrl::new("redis://bob:p%40ss%3Aw@localhost");
        assert_eq!(url.password().unwrap().expose(), "p@ss:w");
    }

    #[test]
    fn database_from_url_path_and_unix_query() {
        assert_eq!(RedisUrl::new("redis://h:1/3").database(), Some(Ok(3)));
        assert_eq!(RedisUrl::new("redis://h:1").database(), None);
        assert_eq!(RedisUrl::new("unix:///tmp/r.sock?db=2").database(), Some(Ok(2)));
        assert!(RedisUrl::new("redis://h/x").database().unwrap().is_err());
    }
}
