//! Settings for metrics and slow-operation logging.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::problems::Collector;

/// Metrics endpoint and logging thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// Address where the Prometheus `/metrics` endpoint listens. Loopback by default so that
    /// nothing is exposed to the network unless asked for. Default: `127.0.0.1:9464`.
    pub metrics_address: SocketAddr,
    /// Operations slower than this are logged at WARN with their name, duration and key
    /// count. Default: `100ms`.
    #[serde(with = "humantime_serde")]
    pub slow_operation_threshold: Duration,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            metrics_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 9464)),
            slow_operation_threshold: Duration::from_millis(100),
        }
    }
}

impl ObservabilityConfig {
    pub(crate) fn validate(&self, c: &mut Collector) {
        c.nonzero(self.slow_operation_threshold, "observability.slow_operation_threshold");
    }
}
