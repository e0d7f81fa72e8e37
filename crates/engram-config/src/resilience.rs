//! Settings for retries, the retry budget, the circuit breaker and the health checker.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::{self, format};
use crate::problems::Collector;

/// How the delay between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffStrategy {
    /// The same delay (`base_delay`) before every retry.
    Fixed,
    /// `base_delay × n` before retry n.
    Linear,
    /// `base_delay × multiplier^(n-1)` before retry n.
    Exponential,
}

/// How randomness spreads retries out (the AWS "exponential backoff and jitter" variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// The computed delay as it is.
    None,
    /// A uniform delay in `[0, computed]`.
    Full,
    /// Half the computed delay plus a uniform part in `[0, computed / 2]`.
    Equal,
    /// A uniform delay in `[base_delay, previous × 3]`, capped (ignores the strategy's growth).
    Decorrelated,
}

/// Retries of failed storage operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// How delays grow. Default: `exponential`.
    pub strategy: BackoffStrategy,
    /// Randomisation of delays. Default: `full`.
    pub jitter: Jitter,
    /// First delay, and the unit of growth. Default: `50ms`.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Longest single delay. Default: `2s`.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Growth factor of the exponential strategy. Default: `2.0`.
    pub multiplier: f64,
    /// Attempts in all, the first included (1 = never retry). Default: `3`.
    pub max_attempts: u32,
    /// Upper bound on the sum of delays of one operation, or `"none"`. Default: `5s`.
    #[serde(with = "duration::optional")]
    pub max_total_delay: Option<Duration>,
    /// The retry budget shared by all operations of a store.
    pub budget: RetryBudgetConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            strategy: BackoffStrategy::Exponential,
            jitter: Jitter::Full,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            multiplier: 2.0,
            max_attempts: 3,
            max_total_delay: Some(Duration::from_secs(5)),
            budget: RetryBudgetConfig::default(),
        }
    }
}

/// A token bucket that allows retries up to a ratio of recent calls plus a small floor, so that
/// a fleet of clients cannot multiply its load on a server that is already failing
/// (the design of tower's and gRPC's retry budgets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Whether retries are limited by the budget. Default: `true`.
    pub enabled: bool,
    /// Retries allowed per call made within the window (0.1 = one retry per ten calls).
    /// Default: `0.1`.
    pub ratio: f64,
    /// Retries always allowed per second, whatever the traffic. Default: `10`.
    pub min_per_second: u32,
    /// How long a call counts towards the budget. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self { enabled: true, ratio: 0.1, min_per_second: 10, window: Duration::from_secs(10) }
    }
}

impl RetryConfig {
    pub(crate) fn validate(&self, c: &mut Collector) {
        c.nonzero(self.base_delay, "retry.base_delay");
        c.check(self.max_delay >= self.base_delay, "retry.max_delay", || {
            format!(
                "({}) is below retry.base_delay ({})",
                format(self.max_delay),
                format(self.base_delay)
            )
        });
        c.check(self.multiplier.is_finite() && self.multiplier >= 1.0, "retry.multiplier", || {
            format!("({}) must be a finite number of at least 1.0", self.multiplier)
        });
        c.check((1..=100).contains(&self.max_attempts), "retry.max_attempts", || {
            format!("({}) must be between 1 and 100", self.max_attempts)
        });
        if let Some(total) = self.max_total_delay {
            c.check(total >= self.base_delay, "retry.max_total_delay", || {
                format!(
                    "({}) is below retry.base_delay ({}), so no retry could ever wait; use \"none\" or retry.max_attempts = 1 to turn retries off",
                    format(total),
                    format(self.base_delay)
                )
            });
        }
        let b = &self.budget;
        c.ratio(b.ratio, 0.0, 10.0, "retry.budget.ratio");
        c.check(
            b.window >= Duration::from_secs(1) && b.window <= Duration::from_secs(60),
            "retry.budget.window",
            || format!("({}) must be between 1s and 60s", format(b.window)),
        );
    }
}

/// The circuit breaker in front of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Whether calls go through the breaker. Default: `true`.
    pub enabled: bool,
    /// Failure rate over the window at which the breaker opens, in `(0, 1]`. Default: `0.5`.
    pub failure_rate_threshold: f64,
    /// Calls the window must hold before the failure rate counts. Default: `20`.
    pub minimum_calls: u32,
    /// Number of most recent calls in the sliding window. Default: `100`.
    pub window_size: u32,
    /// Consecutive failures that open the breaker whatever the rate, or absent for none.
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// How long the breaker stays open before it lets probes through. Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// When set, each reopening without a close in between doubles the open duration,
    /// up to this cap. Default: `"none"` (constant).
    #[serde(with = "duration::optional")]
    pub max_open_duration: Option<Duration>,
    /// Probe calls admitted while half-open; all must succeed to close. Default: `3`.
    pub half_open_probes: u32,
    /// How long a half-open probe may hold its permit before the permit is released, so a
    /// probe that never returns cannot keep the breaker half-open for ever. Must be at least
    /// `redis.command_timeout`. Default: `10s`.
    #[serde(with = "humantime_serde")]
    pub max_half_open_wait: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_rate_threshold: 0.5,
            minimum_calls: 20,
            window_size: 100,
            consecutive_failures: None,
            open_duration: Duration::from_secs(5),
            max_open_duration: None,
            half_open_probes: 3,
            max_half_open_wait: Duration::from_secs(10),
        }
    }
}

impl CircuitBreakerConfig {
    pub(crate) fn validate(&self, command_timeout: Duration, c: &mut Collector) {
        let rate = self.failure_rate_threshold;
        c.check(
            rate.is_finite() && rate > 0.0 && rate <= 1.0,
            "circuit_breaker.failure_rate_threshold",
            || format!("({rate}) must be above 0 and at most 1"),
        );
        c.check((1..=10_000).contains(&self.window_size), "circuit_breaker.window_size", || {
            format!("({}) must be between 1 and 10000", self.window_size)
        });
        c.check(
            self.minimum_calls >= 1 && self.minimum_calls <= self.window_size,
            "circuit_breaker.minimum_calls",
            || {
                format!(
                    "({}) must be between 1 and circuit_breaker.window_size ({})",
                    self.minimum_calls, self.window_size
                )
            },
        );
        if let Some(n) = self.consecutive_failures {
            c.at_least(n.into(), 1, "circuit_breaker.consecutive_failures");
        }
        c.nonzero(self.open_duration, "circuit_breaker.open_duration");
        if let Some(max) = self.max_open_duration {
            c.check(max >= self.open_duration, "circuit_breaker.max_open_duration", || {
                format!(
                    "({}) is below circuit_breaker.open_duration ({})",
                    format(max),
                    format(self.open_duration)
                )
            });
        }
        c.at_least(self.half_open_probes.into(), 1, "circuit_breaker.half_open_probes");
        c.check(self.max_half_open_wait >= command_timeout, "circuit_breaker.max_half_open_wait", || {
            format!(
                "({}) is below redis.command_timeout ({}), so a slow but live probe would lose its permit",
                format(self.max_half_open_wait),
                format(command_timeout)
            )
        });
    }
}

/// The background health checker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Whether the checker runs. Default: `true`.
    pub enabled: bool,
    /// Time between probes. Default: `5s`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time one probe may take before it counts as failed; at most `interval`. Default: `1s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes that make the status healthy again. Default: `2`.
    pub healthy_threshold: u32,
    /// Consecutive failures that make the status unhealthy (fewer give degraded). Default: `3`.
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

impl HealthConfig {
    pub(crate) fn validate(&self, c: &mut Collector) {
        c.nonzero(self.interval, "health.interval");
        c.nonzero(self.timeout, "health.timeout");
        c.check(self.timeout <= self.interval, "health.timeout", || {
            format!(
                "({}) is above health.interval ({})",
                format(self.timeout),
                format(self.interval)
            )
        });
        c.at_least(self.healthy_threshold.into(), 1, "health.healthy_threshold");
        c.at_least(self.unhealthy_threshold.into(), 1, "health.unhealthy_threshold");
    }
}
