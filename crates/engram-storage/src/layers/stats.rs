//! In-process operation statistics, fed by the metrics layer at the same point as the
//! Prometheus metrics, so that a library caller can read totals, success rates and latency
//! percentiles without scraping anything.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engram_resilience::Observer;

/// Upper bounds of the latency buckets: 10 µs doubling up to about 84 s.
const BUCKETS: usize = 24;
const FIRST_BUCKET_NANOS: u64 = 10_000;

#[derive(Debug, Default, Clone)]
struct OpStats {
    total: u64,
    errors: u64,
    rejected: u64,
    sum_nanos: u128,
    buckets: [u64; BUCKETS + 1],
}

fn bucket(nanos: u64) -> usize {
    let mut bound = FIRST_BUCKET_NANOS;
    for i in 0..BUCKETS {
        if nanos <= bound {
            return i;
        }
        bound = bound.saturating_mul(2);
    }
    BUCKETS
}

fn bucket_bound(i: usize) -> Duration {
    Duration::from_nanos(FIRST_BUCKET_NANOS.saturating_mul(1u64 << i.min(40)))
}

/// Totals of one operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationSummary {
    /// Operation name (`get`, `put`, `search`, ...).
    pub operation: &'static str,
    /// Calls seen by the caller (a retried call counts once).
    pub total: u64,
    /// Calls that failed, rejections by the breaker included.
    pub errors: u64,
    /// Calls the circuit breaker rejected.
    pub rejected: u64,
    /// `(total - errors) / total`, 1 when there were no calls.
    pub success_rate: f64,
    /// Mean latency.
    pub mean: Duration,
    /// 99th percentile latency, as the upper bound of its bucket (buckets double from 10 µs).
    pub p99: Duration,
    /// Retries made for this operation.
    pub retries: u64,
}

/// Statistics per operation; share one behind an `Arc` between the metrics layer (which
/// records calls) and the retrier's observer (which records retries).
#[derive(Debug, Default)]
pub struct OperationStats {
    ops: Mutex<BTreeMap<&'static str, OpStats>>,
    retries: Mutex<BTreeMap<&'static str, u64>>,
    budget_refusals: AtomicU64,
}

impl OperationStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one call as the caller saw it.
    pub fn record(&self, operation: &'static str, outcome: &str, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let mut ops = self.ops.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = ops.entry(operation).or_default();
        s.total += 1;
        if outcome != "ok" {
            s.errors += 1;
        }
        if outcome == "rejected" {
            s.rejected += 1;
        }
        s.sum_nanos += u128::from(nanos);
        s.buckets[bucket(nanos)] += 1;
    }

    /// Retries refused by the retry budget so far.
    pub fn budget_refusals(&self) -> u64 {
        self.budget_refusals.load(Ordering::Relaxed)
    }

    /// A summary per operation, sorted by name.
    pub fn snapshot(&self) -> Vec<OperationSummary> {
        let ops = self.ops.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let retries =
            self.retries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        ops.into_iter()
            .map(|(operation, s)| {
                let target = (s.total * 99).div_ceil(100);
                let mut seen = 0;
                let mut p99 = Duration::ZERO;
                for (i, n) in s.buckets.iter().enumerate() {
                    seen += n;
                    if seen >= target && s.total > 0 {
                        p99 = bucket_bound(i);
                        break;
                    }
                }
                let mean = if s.total == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_nanos(
                        u64::try_from(s.sum_nanos / u128::from(s.total)).unwrap_or(u64::MAX),
                    )
                };
                OperationSummary {
                    operation,
                    total: s.total,
                    errors: s.errors,
                    rejected: s.rejected,
                    success_rate: if s.total == 0 {
                        1.0
                    } else {
                        (s.total - s.errors) as f64 / s.total as f64
                    },
                    mean,
                    p99,
                    retries: retries.get(operation).copied().unwrap_or(0),
                }
            })
            .collect()
    }
}

impl Observer for OperationStats {
    fn retry(&self, operation: &'static str, _attempt: u32, _delay: Duration) {
        *self
            .retries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(operation)
            .or_default() += 1;
    }

    fn retry_budget_exhausted(&self, _operation: &'static str) {
        self.budget_refusals.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_rates_and_percentiles() {
        let stats = OperationStats::new();
        for _ in 0..98 {
            stats.record("get", "ok", Duration::from_micros(50));
        }
        stats.record("get", "error", Duration::from_millis(30));
        stats.record("get", "rejected", Duration::from_micros(1));
        stats.retry("get", 2, Duration::from_millis(1));
        let s = &stats.snapshot()[0];
        assert_eq!((s.operation, s.total, s.errors, s.rejected, s.retries), ("get", 100, 2, 1, 1));
        assert!((s.success_rate - 0.98).abs() < 1e-9);
        assert_eq!(
            s.p99,
            Duration::from_micros(80),
            "99th of 100 falls in the 50 µs bucket (<= 80 µs)"
        );
        assert!(
            s.mean > Duration::from_micros(300) && s.mean < Duration::from_micros(400),
            "{:?}",
            s.mean
        );
    }
}
