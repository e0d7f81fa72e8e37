//! The randomness seam: a small, seedable source of random numbers for jitter.
//!
//! Jitter needs neither cryptographic strength nor a large crate: [`Rng`] is SplitMix64, which
//! passes BigCrush, is a few instructions per number, and gives the same sequence for the same
//! seed on every platform, so tests can assert exact delays.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A source of uniformly distributed 64-bit numbers.
///
/// Implement it to script the randomness of a backoff in tests (for example always `0` or
/// always `u64::MAX` to reach the bounds of a jitter).
pub trait RandomSource {
    /// The next number, uniform over all `u64` values.
    fn next_u64(&mut self) -> u64;
}

impl<R: RandomSource + ?Sized> RandomSource for &mut R {
    fn next_u64(&mut self) -> u64 {
        (**self).next_u64()
    }
}

/// The SplitMix64 generator: seeded, fast, and identical on every platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator that always yields the same sequence for the same `seed`.
    pub const fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from the process's hash randomness (no system call per number, no
    /// environment variable), for production use.
    pub fn from_entropy() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        Self::seeded(hasher.finish())
    }
}

/// One SplitMix64 step: advances `state` and returns a well-mixed output.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RandomSource for Rng {
    fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.state)
    }
}

/// A duration drawn uniformly from `[low, high]`, both ends included (`low` when `high < low`).
///
/// Uses the multiply-shift reduction (Lemire), whose bias is below 2^-64 per value: irrelevant
/// for jitter, and free of the retry loop that exact rejection sampling needs.
pub(crate) fn uniform_between(
    rng: &mut impl RandomSource,
    low: Duration,
    high: Duration,
) -> Duration {
    if high <= low {
        return low;
    }
    let low_nanos = duration_nanos(low);
    let span = duration_nanos(high) - low_nanos;
    let width = u128::from(span) + 1;
    let offset = (u128::from(rng.next_u64()) * width) >> 64;
    // offset <= span, so the sum cannot exceed `high`, which fits in u64 nanoseconds.
    let offset = u64::try_from(offset).unwrap_or(span);
    Duration::from_nanos(low_nanos.saturating_add(offset))
}

/// The duration in nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Constant(u64);

    impl RandomSource for Constant {
        fn next_u64(&mut self) -> u64 {
            self.0
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::seeded(42);
        let mut b = Rng::seeded(42);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::seeded(43).next_u64(), xs[0]);
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0, as published with the reference code.
        let mut rng = Rng::seeded(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn uniform_reaches_both_ends() {
        let low = Duration::from_millis(10);
        let high = Duration::from_millis(30);
        assert_eq!(uniform_between(&mut Constant(0), low, high), low);
        assert_eq!(uniform_between(&mut Constant(u64::MAX), low, high), high);
        assert_eq!(uniform_between(&mut Constant(u64::MAX), high, low), high);
        let max = Duration::MAX;
        assert!(uniform_between(&mut Constant(u64::MAX), Duration::ZERO, max) <= max);
    }

    #[test]
    fn entropy_seeds_differ() {
        // Two RandomState instances get different keys within one process.
        assert_ne!(Rng::from_entropy(), Rng::from_entropy());
    }
}
