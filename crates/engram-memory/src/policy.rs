//! Per-type policies: expiry with jitter, refresh on read, decay half-life.

use std::sync::Mutex;
use std::time::Duration;

use engram_config::{MemoryPolicies, MemoryPolicy};
use engram_resilience::{RandomSource, Rng};
use engram_storage::Timestamp;

use crate::entry::MemoryType;

/// The policy of every memory type, with the random source of the TTL jitter.
#[derive(Debug)]
pub struct Policies {
    table: MemoryPolicies,
    rng: Mutex<Rng>,
}

impl Policies {
    /// Policies from configuration, with jitter from process entropy.
    pub fn new(table: MemoryPolicies) -> Self {
        Self { table, rng: Mutex::new(Rng::from_entropy()) }
    }

    /// Policies with seeded jitter, for reproducible tests.
    pub fn seeded(table: MemoryPolicies, seed: u64) -> Self {
        Self { table, rng: Mutex::new(Rng::seeded(seed)) }
    }

    /// The policy of a type.
    pub fn get(&self, t: MemoryType) -> &MemoryPolicy {
        match t {
            MemoryType::ShortTerm => &self.table.short_term,
            MemoryType::LongTerm => &self.table.long_term,
            MemoryType::Working => &self.table.working,
            MemoryType::Episodic => &self.table.episodic,
            MemoryType::Semantic => &self.table.semantic,
        }
    }

    /// The TTL for an entry of type `t` written now: the type's TTL scaled by a uniform factor
    /// in `[1 - ratio, 1 + ratio]`, so entries written together expire spread out. `None` when
    /// the type keeps entries for ever.
    pub fn ttl(&self, t: MemoryType) -> Option<Duration> {
        let p = self.get(t);
        let ttl = p.ttl?;
        if p.ttl_jitter_ratio == 0.0 {
            return Some(ttl);
        }
        let u = {
            let mut rng = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // 53 random bits give a uniform float in [0, 1).
            (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        };
        let factor = 1.0 + p.ttl_jitter_ratio * (2.0 * u - 1.0);
        Some(ttl.mul_f64(factor).max(Duration::from_millis(1)))
    }

    /// The expiry of an entry of type `t` written at `now`.
    pub fn expiry(&self, t: MemoryType, now: Timestamp) -> Option<Timestamp> {
        self.ttl(t).map(|ttl| now.plus(ttl))
    }

    /// The TTL a read should restore, when the type refreshes on read.
    pub fn refresh_ttl(&self, t: MemoryType) -> Option<Duration> {
        if self.get(t).refresh_on_read { self.ttl(t) } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_within_bounds_and_defaults_hold() {
        let p = Policies::seeded(MemoryPolicies::default(), 7);
        let base = Duration::from_secs(4 * 3600).as_secs_f64();
        let ttls: Vec<f64> =
            (0..2000).map(|_| p.ttl(MemoryType::ShortTerm).expect("ttl").as_secs_f64()).collect();
        assert!(ttls.iter().all(|t| *t >= base * 0.9 - 1e-6 && *t <= base * 1.1 + 1e-6));
        let (min, max) = ttls.iter().fold((f64::MAX, f64::MIN), |(a, b), t| (a.min(*t), b.max(*t)));
        assert!(
            max - min > base * 0.15,
            "entries written together must not expire together: spread {}",
            max - min
        );
        assert_eq!(p.refresh_ttl(MemoryType::Episodic), None, "episodic does not refresh on read");
        assert!(p.refresh_ttl(MemoryType::Working).is_some());
        let mut table = MemoryPolicies::default();
        table.semantic.ttl = None;
        assert_eq!(Policies::new(table).ttl(MemoryType::Semantic), None);
    }
}
