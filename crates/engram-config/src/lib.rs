//! Typed configuration for engram.
//!
//! A [`Config`] holds every setting of a memory store: the Redis connection, retries and the
//! retry budget, the circuit breaker, the health checker, the vector index, the per-type memory
//! policies and observability. Every field has a documented default, so an empty file is a
//! valid configuration.
//!
//! Sources, later ones winning:
//! 1. the defaults;
//! 2. a TOML file (durations written as `"250ms"`, `"4h"`, `"7days"`);
//! 3. environment variables `ENGRAM__SECTION__KEY` (for example `ENGRAM__RETRY__MAX_ATTEMPTS=5`,
//!    `ENGRAM__MEMORY__SHORT_TERM__TTL=none`);
//! 4. `REDIS_URL`, for `redis.url` only, when neither the file nor the environment set it.
//!
//! Loading then runs [`Config::validate`], which reports every problem at once with the path of
//! its field. Secrets (the password, and credentials inside the URL) never appear in `Debug`,
//! `Display` or error messages.
//!
//! This is the only crate of the workspace that reads environment variables.
//!
//! ```
//! let config = engram_config::Config::default();
//! assert!(config.validate().is_ok());
//! assert_eq!(config.index.dimension, 384);
//! ```

mod duration;
mod index;
mod lenient;
mod memory;
mod observability;
mod problems;
mod redis;
mod resilience;
mod secret;
pub mod test_support;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use duration::{NONE as DURATION_NONE, format as format_duration};
pub use index::{DistanceMetric, IndexConfig, VectorAlgorithm, VectorType, is_safe_identifier};
pub use memory::{DedupConfig, MemoryPolicies, MemoryPolicy, RankingConfig};
pub use observability::ObservabilityConfig;
pub use problems::{Problem, Problems};
pub use redis::{Durability, ReconnectConfig, RedisConfig, RedisUrl, TlsConfig, URL_SCHEMES};
pub use resilience::{
    BackoffStrategy, CircuitBreakerConfig, HealthConfig, Jitter, RetryBudgetConfig, RetryConfig,
};
pub use secret::{REDACTED, Secret};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "ENGRAM__";
/// Separator between the sections of an environment variable's name.
pub const ENV_SEPARATOR: &str = "__";
/// Environment variable read for `redis.url` when no other source sets it.
pub const REDIS_URL_VAR: &str = "REDIS_URL";
/// Environment variable naming a configuration file, used by [`Config::load_from_env`].
pub const CONFIG_FILE_VAR: &str = "ENGRAM_CONFIG";

/// The whole configuration of an engram memory store. See the crate docs for the sources.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Connection to Redis Stack.
    pub redis: RedisConfig,
    /// Retries of failed operations.
    pub retry: RetryConfig,
    /// Circuit breaker in front of the server.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Background health checks.
    pub health: HealthConfig,
    /// The vector index.
    pub index: IndexConfig,
    /// Policies per memory type.
    pub memory: MemoryPolicies,
    /// Metrics and logging.
    pub observability: ObservabilityConfig,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file named could not be read.
    #[error("cannot read configuration file {}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A source holds a value of the wrong type, an unknown key, or a malformed file.
    #[error("cannot parse configuration: {0}")]
    Parse(Problems),
    /// The values parsed but break a rule (see [`Config::validate`]).
    #[error("invalid configuration: {0}")]
    Invalid(Problems),
}

impl ConfigError {
    /// The problems found, each with its field path (empty for a file that cannot be read).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::File { .. } => &[],
            ConfigError::Parse(p) | ConfigError::Invalid(p) => &p.0,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (when given; it must exist), then `ENGRAM__...` environment
    /// variables, then `REDIS_URL` when nothing else set `redis.url`, and validates the result.
    ///
    /// # Errors
    /// [`ConfigError::File`] when the file cannot be read, [`ConfigError::Parse`] for values of
    /// the wrong type or unknown keys, [`ConfigError::Invalid`] with every broken rule.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut sources = Figment::new();
        if let Some(path) = file {
            // figment ignores a missing file; a file that was named must exist.
            std::fs::metadata(path)
                .map_err(|e| ConfigError::File { path: path.to_owned(), message: e.to_string() })?;
            sources = sources.merge(Toml::file(path));
        }
        sources = sources.merge(Env::prefixed(ENV_PREFIX).split(ENV_SEPARATOR));
        if !sources.contains("redis.url") {
            sources = sources.merge(Env::raw().only(&[REDIS_URL_VAR]).map(|_| "redis.url".into()));
        }
        Config::extract(sources)
    }

    /// Merges `sources` over the defaults (key by key, so a table that sets one key keeps the
    /// defaults of the others), deserialises and validates.
    fn extract(sources: Figment) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(sources)
            .extract()
            .map_err(|e| ConfigError::Parse(render(e)))?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// [`Config::load`] with the file named by `ENGRAM_CONFIG`, if that variable is set.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_from_env() -> Result<Config, ConfigError> {
        let file = std::env::var_os(CONFIG_FILE_VAR).map(PathBuf::from);
        Config::load(file.as_deref())
    }

    /// Parses a TOML document over the defaults, without environment variables, and validates.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`], as [`Config::load`].
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::extract(Figment::from(Toml::string(text)))
    }

    /// Checks every rule and returns every problem found, in field order.
    ///
    /// # Errors
    /// [`Problems`] listing each broken rule with its field path, for example
    /// `retry.max_delay (50ms) is below retry.base_delay (100ms)`.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut c = problems::Collector::default();
        self.redis.validate(&mut c);
        self.retry.validate(&mut c);
        self.circuit_breaker.validate(self.redis.command_timeout, &mut c);
        self.health.validate(&mut c);
        self.index.validate(&mut c);
        self.memory.validate(&mut c);
        self.observability.validate(&mut c);
        c.finish()
    }
}

/// Keys whose values must never be echoed in an error message.
const SENSITIVE_KEYS: [&str; 2] = ["redis.password", "redis.url"];

/// Turns figment's errors into problems with a field path and the source that set the value,
/// hiding the offending value for sensitive keys.
fn render(error: figment::Error) -> Problems {
    Problems(
        error
            .into_iter()
            .map(|e| {
                let path = e.path.join(".");
                let source = e.metadata.as_ref().map(|m| match &m.source {
                    Some(figment::Source::File(file)) => format!(" (from {})", file.display()),
                    _ if m.name.contains(ENV_PREFIX) => {
                        format!(" (from {ENV_PREFIX}{})", e.path.join(ENV_SEPARATOR).to_uppercase())
                    }
                    _ if m.name.contains(REDIS_URL_VAR) => format!(" (from {REDIS_URL_VAR})"),
                    _ => format!(" (from {})", m.name),
                });
                let source = source.unwrap_or_default();
                let message = if SENSITIVE_KEYS.iter().any(|k| path == *k) {
                    "has a value of the wrong type (value hidden)".to_owned()
                } else {
                    e.kind.to_string()
                };
                let path = if path.is_empty() { "<root>".to_owned() } else { path };
                Problem { path, message: format!("{message}{source}") }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
