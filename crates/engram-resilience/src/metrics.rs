//! An [`Observer`] that records the resilience metrics of the observability guide through the
//! `metrics` facade. Like every library of the workspace it never installs a recorder: the
//! binary does, then calls [`MetricsObserver::describe`].
//!
//! | name | type | labels |
//! |---|---|---|
//! | `engram_retries_total` | counter | `operation` |
//! | `engram_retry_budget_exhausted_total` | counter | none |
//! | `engram_circuit_breaker_state` | gauge, 0 or 1 per state | `breaker`, `state` (closed, open, half_open) |
//! | `engram_circuit_breaker_transitions_total` | counter | `breaker`, `to` |
//! | `engram_circuit_breaker_rejected_total` | counter | `breaker` |
//! | `engram_health_status` | gauge, 0 or 1 per status | `status` (healthy, degraded, unhealthy) |
//! | `engram_health_check_duration_seconds` | histogram | none |
//!
//! Label values are the static names given to operations and breakers and the fixed state
//! names, so their number is bounded.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::breaker::BreakerState;
use crate::health::HealthStatus;
use crate::observe::Observer;

/// Retries made, by operation.
pub const RETRIES_TOTAL: &str = "engram_retries_total";
/// Retries refused by the retry budget.
pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "engram_retry_budget_exhausted_total";
/// 1 for the breaker's current state, 0 for the others.
pub const CIRCUIT_BREAKER_STATE: &str = "engram_circuit_breaker_state";
/// Breaker transitions, by breaker and target state.
pub const CIRCUIT_BREAKER_TRANSITIONS_TOTAL: &str = "engram_circuit_breaker_transitions_total";
/// Calls rejected by a breaker.
pub const CIRCUIT_BREAKER_REJECTED_TOTAL: &str = "engram_circuit_breaker_rejected_total";
/// 1 for the current health status, 0 for the others.
pub const HEALTH_STATUS: &str = "engram_health_status";
/// Duration of health probes.
pub const HEALTH_CHECK_DURATION_SECONDS: &str = "engram_health_check_duration_seconds";

/// Records resilience events as the metrics listed in the [`metrics`](crate::metrics) module.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsObserver;

impl MetricsObserver {
    /// Registers the descriptions and units of the metrics with the installed recorder. Call it
    /// after installing the recorder: descriptions given before are lost.
    pub fn describe() {
        describe_counter!(RETRIES_TOTAL, Unit::Count, "Retries made, by operation");
        describe_counter!(
            RETRY_BUDGET_EXHAUSTED_TOTAL,
            Unit::Count,
            "Retries refused by the retry budget"
        );
        describe_gauge!(
            CIRCUIT_BREAKER_STATE,
            "1 for the circuit breaker's current state, 0 for the others"
        );
        describe_counter!(
            CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
            Unit::Count,
            "Circuit breaker transitions, by target state"
        );
        describe_counter!(
            CIRCUIT_BREAKER_REJECTED_TOTAL,
            Unit::Count,
            "Calls rejected by an open or half-open circuit breaker"
        );
        describe_gauge!(HEALTH_STATUS, "1 for the current health status, 0 for the others");
        describe_histogram!(
            HEALTH_CHECK_DURATION_SECONDS,
            Unit::Seconds,
            "Duration of health probes"
        );
    }

    fn set_breaker_state(breaker: &'static str, current: BreakerState) {
        for state in BreakerState::ALL {
            let value = if state == current { 1.0 } else { 0.0 };
            gauge!(CIRCUIT_BREAKER_STATE, "breaker" => breaker, "state" => state.as_str())
                .set(value);
        }
    }
}

impl Observer for MetricsObserver {
    fn retry(&self, operation: &'static str, _attempt: u32, _delay: Duration) {
        counter!(RETRIES_TOTAL, "operation" => operation).increment(1);
    }

    fn retry_budget_exhausted(&self, _operation: &'static str) {
        counter!(RETRY_BUDGET_EXHAUSTED_TOTAL).increment(1);
    }

    fn breaker_created(&self, breaker: &'static str, state: BreakerState) {
        Self::set_breaker_state(breaker, state);
    }

    fn breaker_transition(&self, breaker: &'static str, _from: BreakerState, to: BreakerState) {
        counter!(CIRCUIT_BREAKER_TRANSITIONS_TOTAL, "breaker" => breaker, "to" => to.as_str())
            .increment(1);
        Self::set_breaker_state(breaker, to);
    }

    fn breaker_rejected(&self, breaker: &'static str, _state: BreakerState) {
        counter!(CIRCUIT_BREAKER_REJECTED_TOTAL, "breaker" => breaker).increment(1);
    }

    fn health_check(&self, duration: Duration, _healthy: bool) {
        histogram!(HEALTH_CHECK_DURATION_SECONDS).record(duration.as_secs_f64());
    }

    fn health_status(&self, _from: Option<HealthStatus>, to: HealthStatus) {
        for status in HealthStatus::ALL {
            let value = if status == to { 1.0 } else { 0.0 };
            gauge!(HEALTH_STATUS, "status" => status.as_str()).set(value);
        }
    }
}
