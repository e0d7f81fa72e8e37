//! Tests of loading, validation, redaction and documentation of the configuration.

// figment::Jail fixes the closure type; its error type is large by figment's design.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use figment::Jail;
use proptest::prelude::*;

use super::*;

fn problems_of(config: &Config) -> Vec<String> {
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that `config` breaks exactly the rule on `path`, with a message containing `needle`.
#[track_caller]
fn assert_one_problem(config: &Config, path: &str, needle: &str) {
    let problems = config.validate().expect_err("config should be invalid");
    assert_eq!(problems.0.len(), 1, "expected one problem, got {problems}");
    assert_eq!(problems.0[0].path, path, "{problems}");
    assert!(problems.0[0].message.contains(needle), "`{needle}` not in {problems}");
}

fn with(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    f(&mut c);
    c
}

#[test]
fn defaults_are_valid_and_documented_values() {
    let c = Config::default();
    assert_eq!(problems_of(&c), Vec::<String>::new());
    assert_eq!(c.redis.url.expose(), "redis://127.0.0.1:6379");
    assert_eq!(c.memory.short_term.ttl, Some(Duration::from_secs(4 * 3600)));
    assert_eq!(c.memory.working.ttl, Some(Duration::from_secs(3600)));
    assert_eq!(c.memory.episodic.ttl, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(c.memory.long_term.ttl, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(c.memory.semantic.ttl, Some(Duration::from_secs(30 * 86_400)));
    assert!(c.observability.metrics_address.ip().is_loopback());
    assert!(!c.index.full_text, "full-text indexing is opt-in");
}

#[test]
fn full_text_is_set_by_file_and_env() {
    Jail::expect_with(|jail| {
        jail.create_file("engram.toml", "[index]\nfull_text = true\n")?;
        let c = Config::load(Some("engram.toml".as_ref())).map_err(|e| e.to_string())?;
        assert!(c.index.full_text);
        jail.set_env("ENGRAM__INDEX__FULL_TEXT", "false");
        let c = Config::load(Some("engram.toml".as_ref())).map_err(|e| e.to_string())?;
        assert!(!c.index.full_text, "env beats file");
        Ok(())
    });
    let err = Config::from_toml_str("[index]\nfull_text = \"yes\"").unwrap_err();
    assert!(err.to_string().contains("index.full_text"), "{err}");
}

#[test]
fn example_message_from_the_issue() {
    let c = with(|c| {
        c.retry.base_delay = Duration::from_millis(100);
        c.retry.max_delay = Duration::from_millis(50);
    });
    assert_eq!(problems_of(&c), vec!["retry.max_delay (50ms) is below retry.base_delay (100ms)"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let c = with(|c| {
        c.redis.pool_size = 0;
        c.retry.max_attempts = 0;
        c.circuit_breaker.failure_rate_threshold = 1.5;
        c.health.timeout = Duration::from_secs(60);
        c.index.dimension = 0;
        c.memory.working.ttl_jitter_ratio = 1.0;
        c.observability.slow_operation_threshold = Duration::ZERO;
    });
    let problems = c.validate().unwrap_err();
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "redis.pool_size",
            "retry.max_attempts",
            "circuit_breaker.failure_rate_threshold",
            "health.timeout",
            "index.dimension",
            "memory.working.ttl_jitter_ratio",
            "observability.slow_operation_threshold",
        ]
    );
    assert!(problems.to_string().starts_with("7 configuration problems:"));
}

#[test]
fn redis_rules() {
    assert_one_problem(
        &with(|c| c.redis.url = RedisUrl::new("http://x:1")),
        "redis.url",
        "unsupported scheme `http`",
    );
    assert_one_problem(
        &with(|c| c.redis.url = RedisUrl::new("not a url")),
        "redis.url",
        "not a valid URL",
    );
    assert_one_problem(
        &with(|c| c.redis.url = RedisUrl::new("unix://")),
        "redis.url",
        "no socket path",
    );
    assert_one_problem(
        &with(|c| c.redis.url = RedisUrl::new("redis://h:1/x")),
        "redis.url",
        "not a number",
    );
    assert_one_problem(
        &with(|c| c.redis.url = RedisUrl::new("redis://h:1/2")),
        "redis.database",
        "must be 0",
    );
    assert_one_problem(&with(|c| c.redis.database = Some(1)), "redis.database", "RediSearch");
    assert_one_problem(
        &with(|c| {
            c.redis.url = RedisUrl::new("redis://:pw@h:1");
            c.redis.password = Some("other".into());
        }),
        "redis.password",
        "URL carries a password",
    );
    assert_one_problem(&with(|c| c.redis.password = Some("".into())), "redis.password", "is empty");
    assert_one_problem(
        &with(|c| {
            c.redis.url = RedisUrl::new("unix:///tmp/r.sock");
            c.redis.tls.enabled = true;
        }),
        "redis.tls.enabled",
        "Unix socket",
    );
    assert_one_problem(
        &with(|c| c.redis.tls.ca_path = Some("/etc/hosts".into())),
        "redis.tls.ca_path",
        "TLS is off",
    );
    assert_one_problem(
        &with(|c| {
            c.redis.url = RedisUrl::new("rediss://h:1");
            c.redis.tls.ca_path = Some("/nonexistent/ca.pem".into());
        }),
        "redis.tls.ca_path",
        "not a readable file",
    );
    assert_one_problem(&with(|c| c.redis.pool_size = 65), "redis.pool_size", "between 1 and 64");
    assert_one_problem(
        &with(|c| c.redis.connect_timeout = Duration::ZERO),
        "redis.connect_timeout",
        "greater than zero",
    );
    assert_one_problem(
        &with(|c| {
            c.redis.command_timeout = Duration::ZERO;
            c.circuit_breaker.max_half_open_wait = Duration::from_secs(1);
        }),
        "redis.command_timeout",
        "greater than zero",
    );
    assert_one_problem(
        &with(|c| c.redis.reconnect.min_delay = Duration::ZERO),
        "redis.reconnect.min_delay",
        "greater than zero",
    );
    assert_one_problem(
        &with(|c| c.redis.reconnect.max_delay = Duration::from_millis(1)),
        "redis.reconnect.max_delay",
        "below redis.reconnect.min_delay",
    );
}

#[test]
fn redis_url_forms_that_are_valid() {
    for url in [
        "redis://localhost",
        "rediss://u:p@h:6380/0",
        "unix:///run/redis.sock",
        "redis+unix:///r.sock?db=0",
    ] {
        let c = with(|c| c.redis.url = RedisUrl::new(url));
        assert_eq!(problems_of(&c), Vec::<String>::new(), "{url}");
    }
    let tls = with(|c| c.redis.url = RedisUrl::new("rediss://h"));
    assert!(tls.redis.tls_enabled());
    let url_creds = with(|c| c.redis.url = RedisUrl::new("redis://me:pw@h"));
    assert_eq!(url_creds.redis.effective_username().as_deref(), Some("me"));
    assert_eq!(url_creds.redis.effective_password().unwrap().expose(), "pw");
}

#[test]
fn retry_rules() {
    assert_one_problem(
        &with(|c| c.retry.base_delay = Duration::ZERO),
        "retry.base_delay",
        "greater than zero",
    );
    assert_one_problem(&with(|c| c.retry.multiplier = 0.5), "retry.multiplier", "at least 1.0");
    assert_one_problem(&with(|c| c.retry.multiplier = f64::NAN), "retry.multiplier", "finite");
    assert_one_problem(
        &with(|c| c.retry.max_attempts = 101),
        "retry.max_attempts",
        "between 1 and 100",
    );
    assert_one_problem(
        &with(|c| c.retry.max_total_delay = Some(Duration::from_millis(1))),
        "retry.max_total_delay",
        "below retry.base_delay",
    );
    assert_one_problem(
        &with(|c| c.retry.budget.ratio = -0.1),
        "retry.budget.ratio",
        "between 0 and 10",
    );
    assert_one_problem(
        &with(|c| c.retry.budget.window = Duration::from_secs(61)),
        "retry.budget.window",
        "between 1s and 60s",
    );
    assert_eq!(problems_of(&with(|c| c.retry.max_total_delay = None)), Vec::<String>::new());
}

#[test]
fn circuit_breaker_rules() {
    assert_one_problem(
        &with(|c| c.circuit_breaker.failure_rate_threshold = 0.0),
        "circuit_breaker.failure_rate_threshold",
        "above 0",
    );
    assert_one_problem(
        &with(|c| c.circuit_breaker.window_size = 10_001),
        "circuit_breaker.window_size",
        "between 1 and 10000",
    );
    assert_one_problem(
        &with(|c| c.circuit_breaker.minimum_calls = 101),
        "circuit_breaker.minimum_calls",
        "window_size (100)",
    );
    assert_one_problem(
        &with(|c| c.circuit_breaker.consecutive_failures = Some(0)),
        "circuit_breaker.consecutive_failures",
        "at least 1",
    );
    assert_one_problem(
        &with(|c| c.circuit_breaker.open_duration = Duration::ZERO),
        "circuit_breaker.open_duration",
        "greater than zero",
    );
    assert_one_problem(
        &with(|c| c.circuit_breaker.max_open_duration = Some(Duration::from_secs(1))),
        "circuit_breaker.max_open_duration",
        "below circuit_breaker.open_duration",
    );
    assert_one_problem(
        &with(|c| c.circuit_breaker.half_open_probes = 0),
        "circuit_breaker.half_open_probes",
        "at least 1",
    );
    assert_one_problem(
        &with(|c| c.circuit_breaker.max_half_open_wait = Duration::from_secs(1)),
        "circuit_breaker.max_half_open_wait",
        "below redis.command_timeout (2s)",
    );
}

#[test]
fn health_rules() {
    assert_one_problem(
        &with(|c| c.health.timeout = Duration::ZERO),
        "health.timeout",
        "greater than zero",
    );
    assert_one_problem(
        &with(|c| c.health.timeout = Duration::from_secs(6)),
        "health.timeout",
        "above health.interval (5s)",
    );
    assert_one_problem(
        &with(|c| c.health.healthy_threshold = 0),
        "health.healthy_threshold",
        "at least 1",
    );
    assert_one_problem(
        &with(|c| c.health.unhealthy_threshold = 0),
        "health.unhealthy_threshold",
        "at least 1",
    );
    let c = with(|c| c.health.interval = Duration::ZERO);
    let paths: Vec<_> = c.validate().unwrap_err().iter().map(|p| p.path.clone()).collect();
    assert_eq!(paths, ["health.interval", "health.timeout"]);
}

#[test]
fn index_rules() {
    assert_one_problem(
        &with(|c| c.index.name = "bad name".into()),
        "index.name",
        "letters, digits",
    );
    assert_one_problem(&with(|c| c.index.name = String::new()), "index.name", "1 to 64");
    assert_one_problem(
        &with(|c| c.index.key_prefix = "mem*".into()),
        "index.key_prefix",
        "letters, digits",
    );
    assert_one_problem(
        &with(|c| c.index.key_prefix = "{tag}:".into()),
        "index.key_prefix",
        "letters, digits",
    );
    assert_one_problem(
        &with(|c| c.index.dimension = 40_000),
        "index.dimension",
        "between 1 and 32768",
    );
    assert_one_problem(&with(|c| c.index.m = 1), "index.m", "between 2 and 512");
    assert_one_problem(
        &with(|c| c.index.ef_construction = 0),
        "index.ef_construction",
        "between 1 and 4096",
    );
    assert_one_problem(
        &with(|c| c.index.ef_runtime = 5000),
        "index.ef_runtime",
        "between 1 and 4096",
    );
}

#[test]
fn memory_rules() {
    assert_one_problem(
        &with(|c| c.memory.episodic.ttl = Some(Duration::ZERO)),
        "memory.episodic.ttl",
        "at least 1ms",
    );
    assert_one_problem(
        &with(|c| c.memory.semantic.ttl_jitter_ratio = f64::INFINITY),
        "memory.semantic.ttl_jitter_ratio",
        "below 1",
    );
    assert_one_problem(
        &with(|c| c.memory.long_term.decay_half_life = Duration::ZERO),
        "memory.long_term.decay_half_life",
        "greater than zero",
    );
    assert_eq!(problems_of(&with(|c| c.memory.long_term.ttl = None)), Vec::<String>::new());
    assert_one_problem(
        &with(|c| c.memory.dedup.near_distance = Some(-1.0)),
        "memory.dedup.near_distance",
        "at least 0",
    );
    assert_one_problem(
        &with(|c| c.memory.ranking.importance = -0.5),
        "memory.ranking.importance",
        "between 0 and 1000",
    );
    assert_one_problem(
        &with(|c| {
            c.memory.ranking.similarity = 0.0;
        }),
        "memory.ranking",
        "at least one weight",
    );
    assert_one_problem(
        &with(|c| c.memory.ranking.candidate_factor = 0),
        "memory.ranking.candidate_factor",
        "between 1 and 100",
    );
    assert_one_problem(
        &with(|c| c.index.embedding_model = Some(String::new())),
        "index.embedding_model",
        "1 to 128",
    );
}

#[test]
fn password_never_appears_in_debug_or_errors() {
    let secret = "pw-3f9a1c-do-not-print";
    let c = with(|c| {
        c.redis.url = RedisUrl::new(format!("redis://admin:{secret}@localhost:6379"));
        c.redis.username = Some("admin".into());
    });
    let c2 = with(|c| c.redis.password = Some(Secret::new(secret)));
    for config in [&c, &c2] {
        for shown in [format!("{config:?}"), format!("{config:#?}"), format!("{:?}", config.redis)]
        {
            assert!(!shown.contains(secret), "secret leaked: {shown}");
        }
    }
    assert!(format!("{c:?}").contains(REDACTED));
    // Also when the configuration is invalid: the messages name the field, not the value.
    let bad = with(|c| {
        c.redis.url = RedisUrl::new(format!("redis://admin:{secret}@localhost:6379/9"));
        c.redis.password = Some(Secret::new(secret));
    });
    let text = bad.validate().unwrap_err().to_string();
    assert!(!text.contains(secret), "{text}");
}

#[test]
fn loading_order_defaults_file_env_redis_url() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "engram.toml",
            r#"
            [redis]
            url = "redis://from-file:6379"
            command_timeout = "250ms"
            [retry]
            max_attempts = 4
            base_delay = "20ms"
            [memory.working]
            ttl = "none"
            ttl_jitter_ratio = 0.2
            refresh_on_read = false
            decay_half_life = "10m"
            "#,
        )?;
        jail.set_env("ENGRAM__RETRY__MAX_ATTEMPTS", "6");
        jail.set_env("ENGRAM__MEMORY__SHORT_TERM__TTL", "none");
        jail.set_env("REDIS_URL", "redis://from-redis-url:6379");
        let c = Config::load(Some("engram.toml".as_ref())).map_err(|e| e.to_string())?;
        assert_eq!(c.redis.url.expose(), "redis://from-file:6379", "file beats REDIS_URL");
        assert_eq!(c.redis.command_timeout, Duration::from_millis(250));
        assert_eq!(c.retry.max_attempts, 6, "env beats file");
        assert_eq!(c.retry.base_delay, Duration::from_millis(20));
        assert_eq!(c.retry.max_delay, Duration::from_secs(2), "untouched keys keep defaults");
        assert_eq!(c.memory.working.ttl, None);
        assert_eq!(c.memory.short_term.ttl, None);
        assert_eq!(c.memory.episodic, Config::default().memory.episodic);

        jail.set_env("ENGRAM__REDIS__URL", "redis://from-env:6379");
        let c = Config::load(Some("engram.toml".as_ref())).map_err(|e| e.to_string())?;
        assert_eq!(c.redis.url.expose(), "redis://from-env:6379", "env beats file");
        Ok(())
    });
}

#[test]
fn redis_url_is_used_only_when_nothing_else_sets_the_url() {
    Jail::expect_with(|jail| {
        jail.set_env("REDIS_URL", "redis://fallback:7000");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.redis.url.expose(), "redis://fallback:7000");
        Ok(())
    });
}

#[test]
fn numeric_looking_secrets_from_env_stay_text() {
    Jail::expect_with(|jail| {
        jail.set_env("ENGRAM__REDIS__PASSWORD", "0012345");
        jail.set_env("ENGRAM__REDIS__USERNAME", "42");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.redis.username.as_deref(), Some("42"));
        // figment reads 0012345 as the integer 12345; the leading zeros are what a
        // user would lose, so check that the digits at least arrive as text.
        assert!(c.redis.password.as_ref().is_some_and(|p| p.expose().ends_with("12345")));
        // Quoted, as docs/configuration.md advises, the value keeps its leading zeros.
        jail.set_env("ENGRAM__REDIS__PASSWORD", "\"0012345\"");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.redis.password.as_ref().map(Secret::expose), Some("0012345"));
        Ok(())
    });
}

#[test]
fn wrong_types_and_unknown_keys_name_the_field_and_source() {
    Jail::expect_with(|jail| {
        jail.set_env("ENGRAM__REDIS__POOL_SIZE", "many");
        let err = Config::load(None).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(p.path, "redis.pool_size");
        assert!(p.message.contains("ENGRAM__REDIS__POOL_SIZE"), "{p}");
        Ok(())
    });
    let err = Config::from_toml_str("[retry]\nmax_atempts = 3").unwrap_err();
    assert!(matches!(err, ConfigError::Parse(_)));
    assert!(err.to_string().contains("max_atempts"), "{err}");
    let err = Config::from_toml_str("[retry]\nbase_delay = \"soon\"").unwrap_err();
    assert!(
        err.to_string().contains("retry.base_delay")
            && err.to_string().contains("expected a duration"),
        "{err}"
    );
}

#[test]
fn load_fails_with_every_rule_broken() {
    Jail::expect_with(|jail| {
        jail.set_env("ENGRAM__HEALTH__HEALTHY_THRESHOLD", "0");
        jail.set_env("ENGRAM__INDEX__DIMENSION", "0");
        match Config::load(None) {
            Err(ConfigError::Invalid(p)) => {
                assert!(
                    p.mentions("health.healthy_threshold") && p.mentions("index.dimension"),
                    "{p}"
                );
            }
            other => panic!("expected invalid, got {other:?}"),
        }
        Ok(())
    });
}

#[test]
fn missing_file_is_a_file_error() {
    let err = Config::load(Some("/nonexistent/engram.toml".as_ref())).unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/engram.toml"));
}

#[test]
fn password_in_a_wrongly_typed_value_is_not_echoed() {
    let err = Config::from_toml_str("[redis]\npassword = [\"pw-in-array-77\"]").unwrap_err();
    assert!(!err.to_string().contains("pw-in-array-77"), "{err}");
    assert!(err.to_string().contains("redis.password"), "{err}");
}

/// A configuration with every optional key set, so that serialisation shows every key.
fn everything_set() -> Config {
    with(|c| {
        c.redis.url = RedisUrl::new("rediss://h:6380");
        c.redis.username = Some("u".into());
        c.redis.password = Some("p".into());
        c.redis.database = Some(0);
        c.redis.tls.ca_path = Some(env!("CARGO_MANIFEST_DIR").into());
        c.circuit_breaker.consecutive_failures = Some(5);
        c.circuit_breaker.max_open_duration = Some(Duration::from_secs(60));
        c.index.embedding_model = Some("all-MiniLM-L6-v2".into());
        c.memory.dedup.near_distance = Some(0.05);
    })
}

/// Every leaf key of a serialised configuration, dotted.
fn leaf_keys(config: &Config) -> Vec<String> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&path, v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let value = toml::Value::try_from(config).expect("config serialises");
    let mut out = Vec::new();
    walk("", &value, &mut out);
    out
}

#[test]
fn every_key_is_documented_with_its_env_name() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/configuration.md exists");
    let keys = leaf_keys(&everything_set());
    assert!(keys.len() > 50, "only {} keys found", keys.len());
    let mut missing = Vec::new();
    for key in &keys {
        let env = format!("{ENV_PREFIX}{}", key.replace('.', ENV_SEPARATOR).to_uppercase());
        if !doc.contains(&format!("`{key}`")) || !doc.contains(&format!("`{env}`")) {
            missing.push(key.clone());
        }
    }
    assert!(missing.is_empty(), "keys missing from docs/configuration.md: {missing:?}");
    // And the reverse: no documented key that the configuration does not have.
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let stale: Vec<_> = documented.iter().filter(|k| !keys.iter().any(|x| x == *k)).collect();
    assert!(stale.is_empty(), "documented keys that do not exist: {stale:?}");
}

fn arb_duration() -> impl Strategy<Value = Duration> {
    // Whole milliseconds: the human-readable form is exact at that resolution.
    (1u64..10_000_000).prop_map(Duration::from_millis)
}

prop_compose! {
    fn arb_config()(
        strategy in prop_oneof![Just(BackoffStrategy::Fixed), Just(BackoffStrategy::Linear), Just(BackoffStrategy::Exponential)],
        jitter in prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::Decorrelated)],
        base in arb_duration(),
        extra in arb_duration(),
        attempts in 1u32..=100,
        total in proptest::option::of(arb_duration()),
        ratio in 0.0f64..10.0,
        pool in 1u32..=64,
        password in proptest::option::of("[ -~]{1,40}"),
        window in 1u32..=10_000,
        min_calls_frac in 0.0f64..1.0,
        rate in 0.01f64..=1.0,
        dim in 1u32..=32_768,
        algo in prop_oneof![Just(VectorAlgorithm::Flat), Just(VectorAlgorithm::Hnsw)],
        metric in prop_oneof![Just(DistanceMetric::Cosine), Just(DistanceMetric::L2), Just(DistanceMetric::Ip)],
        name in "[A-Za-z0-9_.:-]{1,64}",
        ttl in proptest::option::of(arb_duration()),
        jitter_ratio in 0.0f64..1.0,
        refresh in any::<bool>(),
        full_text in any::<bool>(),
        port in 1u16..,
    ) -> Config {
        let mut c = Config::default();
        c.retry.strategy = strategy;
        c.retry.jitter = jitter;
        c.retry.base_delay = base;
        c.retry.max_delay = base + extra;
        c.retry.max_attempts = attempts;
        c.retry.max_total_delay = total.map(|t| t + base);
        c.retry.budget.ratio = ratio;
        c.redis.pool_size = pool;
        c.redis.password = password.map(Secret::new);
        c.circuit_breaker.window_size = window;
        c.circuit_breaker.minimum_calls = 1 + (f64::from(window - 1) * min_calls_frac) as u32;
        c.circuit_breaker.failure_rate_threshold = rate;
        c.index.dimension = dim;
        c.index.algorithm = algo;
        c.index.distance_metric = metric;
        c.index.name = name;
        c.index.full_text = full_text;
        c.memory.episodic.ttl = ttl;
        c.memory.episodic.ttl_jitter_ratio = jitter_ratio;
        c.memory.episodic.refresh_on_read = refresh;
        c.observability.metrics_address.set_port(port);
        c
    }
}

proptest! {
    #[test]
    fn any_valid_config_survives_a_toml_round_trip(config in arb_config()) {
        prop_assert!(config.validate().is_ok(), "generator made an invalid config: {:?}", config.validate());
        let text = toml::to_string(&config).expect("serialises");
        let back = Config::from_toml_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back, config);
    }
}
