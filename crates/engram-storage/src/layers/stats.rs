//! In-process operation statistics, fed by the metrics layer at the same point as the
//! Prometheus metrics, so that a library caller can read totals, success rates and latency
//! percentiles without scraping anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engram_resilience::Observer;

use crate::error::{ErrorKind, Operation};

/// Upper bounds of the latency buckets: 10 µs doubling up to about 84 s.
const BUCKETS: usize = 24;
const FIRST_BUCKET_NANOS: u64 = 10_000;

/// The counters of one operation. Each is updated on its own (relaxed atomics, no lock): a
/// snapshot taken while calls end may see one call in some counters and not yet in others.
#[derive(Debug, Default)]
struct OpStats {
    total: AtomicU64,
    errors: AtomicU64,
    rejected: AtomicU64,
    /// Wraps after about 584 years of summed latency.
    sum_nanos: AtomicU64,
    buckets: [AtomicU64; BUCKETS + 1],
    retries: AtomicU64,
}

/// The bucket of a latency of `nanos`: the first whose upper bound (10 µs doubling) is at
/// least `nanos`, the last for anything above them all.
fn bucket(nanos: u64) -> usize {
    if nanos <= FIRST_BUCKET_NANOS {
        return 0;
    }
    // Bucket i holds (10 µs * 2^(i-1), 10 µs * 2^i]: i is the bit length of (nanos-1)/10 µs.
    let q = (nanos - 1) / FIRST_BUCKET_NANOS;
    ((u64::BITS - q.leading_zeros()) as usize).min(BUCKETS)
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
///
/// Recording a call is a few relaxed atomic additions on the operation's own counters: no
/// lock and no look-up, since it is called on every call through the layers.
#[derive(Debug, Default)]
pub struct OperationStats {
    ops: [OpStats; Operation::ALL.len()],
    budget_refusals: AtomicU64,
}

impl OperationStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one call of `operation` as the caller saw it: `failed` is the kind of its
    /// error, `None` when it succeeded (a [`ErrorKind::CircuitOpen`] error counts as rejected).
    pub fn record(&self, operation: Operation, failed: Option<ErrorKind>, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let s = &self.ops[operation as usize];
        s.total.fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = failed {
            s.errors.fetch_add(1, Ordering::Relaxed);
            if kind == ErrorKind::CircuitOpen {
                s.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        s.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        s.buckets[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// Retries refused by the retry budget so far.
    pub fn budget_refusals(&self) -> u64 {
        self.budget_refusals.load(Ordering::Relaxed)
    }

    /// A summary per operation that was called, sorted by name.
    pub fn snapshot(&self) -> Vec<OperationSummary> {
        let mut out: Vec<OperationSummary> = Operation::ALL
            .iter()
            .zip(&self.ops)
            .filter_map(|(op, s)| {
                let total = s.total.load(Ordering::Relaxed);
                if total == 0 {
                    return None;
                }
                let buckets: Vec<u64> =
                    s.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
                // From the buckets' own count, which a call ending meanwhile may not have
                // reached yet.
                let counted: u64 = buckets.iter().sum();
                let target = (counted * 99).div_ceil(100);
                let mut seen = 0;
                let mut p99 = Duration::ZERO;
                for (i, n) in buckets.iter().enumerate() {
                    seen += n;
                    if seen >= target && counted > 0 {
                        p99 = bucket_bound(i);
                        break;
                    }
                }
                let errors = s.errors.load(Ordering::Relaxed).min(total);
                Some(OperationSummary {
                    operation: op.as_str(),
                    total,
                    errors,
                    rejected: s.rejected.load(Ordering::Relaxed).min(errors),
                    success_rate: (total - errors) as f64 / total as f64,
                    mean: Duration::from_nanos(s.sum_nanos.load(Ordering::Relaxed) / total),
                    p99,
                    retries: s.retries.load(Ordering::Relaxed),
                })
            })
            .collect();
        out.sort_by_key(|s| s.operation);
        out
    }
}

impl Observer for OperationStats {
    /// Counts a retry of a storage operation (by its name; any other name is not counted).
    fn retry(&self, operation: &'static str, _attempt: u32, _delay: Duration) {
        if let Some(at) = Operation::ALL.iter().position(|op| op.as_str() == operation) {
            self.ops[at].retries.fetch_add(1, Ordering::Relaxed);
        }
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
            stats.record(Operation::Get, None, Duration::from_micros(50));
        }
        stats.record(Operation::Get, Some(ErrorKind::Timeout), Duration::from_millis(30));
        stats.record(Operation::Get, Some(ErrorKind::CircuitOpen), Duration::from_micros(1));
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

    #[test]
    fn buckets_double_from_ten_microseconds() {
        fn by_loop(nanos: u64) -> usize {
            let mut bound = FIRST_BUCKET_NANOS;
            for i in 0..BUCKETS {
                if nanos <= bound {
                    return i;
                }
                bound = bound.saturating_mul(2);
            }
            BUCKETS
        }
        let mut probes = vec![0, 1, u64::MAX, u64::MAX - 1];
        for i in 0..=BUCKETS + 2 {
            let bound = FIRST_BUCKET_NANOS.saturating_mul(1 << i);
            probes.extend([bound - 1, bound, bound + 1]);
        }
        for nanos in probes {
            assert_eq!(bucket(nanos), by_loop(nanos), "{nanos} ns");
        }
    }

    #[test]
    fn operations_are_listed_by_name_and_retries_by_operation() {
        let stats = OperationStats::new();
        stats.record(Operation::Search, None, Duration::from_micros(5));
        stats.record(Operation::CompareAndSet, None, Duration::from_micros(5));
        stats.retry("search", 1, Duration::ZERO);
        stats.retry("not an operation", 1, Duration::ZERO);
        stats.retry_budget_exhausted("search");
        let names: Vec<_> = stats.snapshot().iter().map(|s| (s.operation, s.retries)).collect();
        assert_eq!(names, [("compare_and_set", 0), ("search", 1)]);
        assert_eq!(stats.budget_refusals(), 1);
    }

    #[test]
    fn operation_positions_match_their_order() {
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?}");
        }
    }
}
