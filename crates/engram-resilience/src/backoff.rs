//! Backoff: how long to wait before each retry.
//!
//! The details are in the documentation of [`Backoff`].

use std::time::Duration;

use engram_config::RetryConfig;
pub use engram_config::{BackoffStrategy, Jitter};

use crate::error::{InvalidSettings, ensure};
use crate::random::{RandomSource, Rng, duration_nanos, uniform_between};

/// A backoff schedule: growth strategy, jitter, first delay, cap and multiplier.
///
/// A [`Backoff`] combines a growth strategy (fixed, linear or exponential, from
/// [`BackoffStrategy`]) with a [`Jitter`] (none, full, equal or decorrelated, the variants of
/// the AWS Architecture Blog's "Exponential Backoff and Jitter"), and caps every delay at
/// `max_delay`. Arithmetic saturates: retry 10,000 of an exponential backoff waits exactly the
/// cap. [`Backoff::delays`] yields the delays as an endless iterator; the retry policy decides
/// when to stop.
///
/// ```
/// use std::time::Duration;
/// use engram_resilience::{Backoff, Rng};
///
/// let backoff = Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2), 2.0)?;
/// let delays: Vec<_> = backoff.delays_with(Rng::seeded(7)).take(7).collect();
/// let ms = |n| Duration::from_millis(n);
/// assert_eq!(delays, [ms(50), ms(100), ms(200), ms(400), ms(800), ms(1600), ms(2000)]);
/// # Ok::<(), engram_resilience::InvalidSettings>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    strategy: BackoffStrategy,
    jitter: Jitter,
    base: Duration,
    max: Duration,
    multiplier: f64,
}

impl Backoff {
    /// The same `delay` before every retry, without jitter.
    pub fn fixed(delay: Duration) -> Self {
        Self {
            strategy: BackoffStrategy::Fixed,
            jitter: Jitter::None,
            base: delay,
            max: delay,
            multiplier: 1.0,
        }
    }

    /// `base × n` before retry `n`, capped at `max`, without jitter.
    ///
    /// # Errors
    /// When `max` is below `base`.
    pub fn linear(base: Duration, max: Duration) -> Result<Self, InvalidSettings> {
        Self::new(BackoffStrategy::Linear, base, max, 1.0)
    }

    /// `base × multiplier^(n-1)` before retry `n`, capped at `max`, without jitter.
    ///
    /// # Errors
    /// When `max` is below `base`, or `multiplier` is not a finite number of at least 1.
    pub fn exponential(
        base: Duration,
        max: Duration,
        multiplier: f64,
    ) -> Result<Self, InvalidSettings> {
        Self::new(BackoffStrategy::Exponential, base, max, multiplier)
    }

    /// A backoff of any strategy, without jitter; `multiplier` matters only for the exponential
    /// strategy but is checked for all.
    ///
    /// # Errors
    /// When `max` is below `base`, or `multiplier` is not a finite number of at least 1.
    pub fn new(
        strategy: BackoffStrategy,
        base: Duration,
        max: Duration,
        multiplier: f64,
    ) -> Result<Self, InvalidSettings> {
        ensure(max >= base, "max_delay", || format!("({max:?}) is below base_delay ({base:?})"))?;
        ensure(multiplier.is_finite() && multiplier >= 1.0, "multiplier", || {
            format!("({multiplier}) must be a finite number of at least 1.0")
        })?;
        Ok(Self { strategy, jitter: Jitter::None, base, max, multiplier })
    }

    /// The same schedule with another jitter.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The growth strategy.
    pub fn strategy(&self) -> BackoffStrategy {
        self.strategy
    }

    /// The jitter.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The first delay, and the unit of growth.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest single delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before retry `retry` (1 for the first retry; 0 counts as 1) before jitter,
    /// capped at [`Backoff::max`].
    pub fn base_delay(&self, retry: u32) -> Duration {
        let n = retry.max(1);
        let delay = match self.strategy {
            BackoffStrategy::Fixed => self.base,
            BackoffStrategy::Linear => self.base.saturating_mul(n),
            BackoffStrategy::Exponential => {
                let exponent = i32::try_from(n - 1).unwrap_or(i32::MAX);
                // Nanoseconds in f64 are exact below 2^53 ns (104 days), far above any cap.
                let nanos = duration_nanos(self.base) as f64 * self.multiplier.powi(exponent);
                let cap = duration_nanos(self.max) as f64;
                if nanos < cap {
                    // `as` saturates, and nanos is in [0, cap) here.
                    Duration::from_nanos(nanos.round() as u64)
                } else {
                    self.max
                }
            }
        };
        delay.min(self.max)
    }

    /// The delays before retries 1, 2, 3, ... with randomness from a generator seeded from
    /// process entropy. The iterator never ends.
    pub fn delays(&self) -> Delays<Rng> {
        self.delays_with(Rng::from_entropy())
    }

    /// The delays before retries 1, 2, 3, ... with randomness from `rng`. The iterator never
    /// ends.
    pub fn delays_with<R: RandomSource>(&self, rng: R) -> Delays<R> {
        Delays { backoff: *self, rng, retry: 0, previous: self.base }
    }
}

impl TryFrom<&RetryConfig> for Backoff {
    type Error = InvalidSettings;

    fn try_from(config: &RetryConfig) -> Result<Self, Self::Error> {
        Ok(Self::new(config.strategy, config.base_delay, config.max_delay, config.multiplier)?
            .with_jitter(config.jitter))
    }
}

/// The endless iterator of delays returned by [`Backoff::delays_with`].
#[derive(Debug, Clone)]
pub struct Delays<R> {
    backoff: Backoff,
    rng: R,
    retry: u32,
    previous: Duration,
}

impl<R> Delays<R> {
    /// How many delays the iterator has yielded.
    pub fn retries(&self) -> u32 {
        self.retry
    }
}

impl<R: RandomSource> Iterator for Delays<R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.retry = self.retry.saturating_add(1);
        let b = &self.backoff;
        let delay = match b.jitter {
            Jitter::None => b.base_delay(self.retry),
            Jitter::Full => {
                uniform_between(&mut self.rng, Duration::ZERO, b.base_delay(self.retry))
            }
            Jitter::Equal => {
                let computed = b.base_delay(self.retry);
                let half = computed / 2;
                uniform_between(&mut self.rng, computed - half, computed)
            }
            Jitter::Decorrelated => {
                let high = self.previous.saturating_mul(3).min(b.max);
                uniform_between(&mut self.rng, b.base, high).min(b.max)
            }
        };
        self.previous = delay;
        Some(delay)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use super::*;
    use crate::random::Rng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn first(backoff: Backoff, n: usize) -> Vec<Duration> {
        backoff.delays_with(Rng::seeded(1)).take(n).collect()
    }

    /// A random source that replays a script, then repeats its last value.
    struct Scripted(Vec<u64>, usize);

    impl RandomSource for Scripted {
        fn next_u64(&mut self) -> u64 {
            let value = self.0.get(self.1).or(self.0.last()).copied().unwrap_or(0);
            self.1 += 1;
            value
        }
    }

    #[test]
    fn fixed_sequence() {
        assert_eq!(first(Backoff::fixed(ms(100)), 4), [ms(100); 4]);
    }

    #[test]
    fn linear_sequence_is_capped() {
        let backoff = Backoff::linear(ms(100), ms(350)).unwrap();
        assert_eq!(first(backoff, 5), [ms(100), ms(200), ms(300), ms(350), ms(350)]);
    }

    #[test]
    fn exponential_sequence_with_fractional_multiplier() {
        let backoff = Backoff::exponential(ms(100), ms(1000), 1.5).unwrap();
        assert_eq!(
            first(backoff, 7),
            [
                ms(100),
                ms(150),
                ms(225),
                Duration::from_micros(337_500),
                Duration::from_micros(506_250),
                Duration::from_micros(759_375),
                ms(1000)
            ]
        );
    }

    #[test]
    fn attempt_ten_thousand_returns_the_cap() {
        let cap = Duration::from_secs(30);
        for strategy in [BackoffStrategy::Linear, BackoffStrategy::Exponential] {
            let backoff = Backoff::new(strategy, ms(50), cap, 10.0).unwrap();
            assert_eq!(backoff.base_delay(10_000), cap);
            assert_eq!(backoff.base_delay(u32::MAX), cap);
            assert_eq!(backoff.delays_with(Rng::seeded(3)).nth(9_999), Some(cap));
        }
        let huge = Backoff::exponential(Duration::MAX, Duration::MAX, 2.0).unwrap();
        assert_eq!(huge.base_delay(10_000), Duration::MAX);
        assert_eq!(huge.base_delay(1), Duration::MAX);
        let linear = Backoff::linear(Duration::MAX / 2, Duration::MAX).unwrap();
        assert_eq!(linear.base_delay(3), Duration::MAX);
    }

    #[test]
    fn full_jitter_seeded_sequence_is_reproducible() {
        let backoff =
            Backoff::exponential(ms(50), ms(2000), 2.0).unwrap().with_jitter(Jitter::Full);
        let a: Vec<_> = backoff.delays_with(Rng::seeded(99)).take(10).collect();
        let b: Vec<_> = backoff.delays_with(Rng::seeded(99)).take(10).collect();
        assert_eq!(a, b);
        assert!(a.iter().zip(1..).all(|(d, n)| *d <= backoff.base_delay(n)));
    }

    #[test]
    fn jitter_bounds_with_extreme_randomness() {
        let backoff = Backoff::exponential(ms(100), ms(1000), 2.0).unwrap();
        let low = |j| {
            backoff.with_jitter(j).delays_with(Scripted(vec![0], 0)).take(3).collect::<Vec<_>>()
        };
        let high = |j| {
            backoff
                .with_jitter(j)
                .delays_with(Scripted(vec![u64::MAX], 0))
                .take(6)
                .collect::<Vec<_>>()
        };
        assert_eq!(low(Jitter::Full), [Duration::ZERO; 3]);
        assert_eq!(low(Jitter::Equal), [ms(50), ms(100), ms(200)]);
        assert_eq!(low(Jitter::Decorrelated), [ms(100); 3]);
        assert_eq!(high(Jitter::Full), [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        assert_eq!(high(Jitter::Equal), [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        // Decorrelated jitter ignores the strategy: at most three times the previous delay.
        assert_eq!(
            high(Jitter::Decorrelated),
            [ms(300), ms(900), ms(1000), ms(1000), ms(1000), ms(1000)]
        );
    }

    #[test]
    fn from_config_matches_defaults() {
        let config = RetryConfig::default();
        let backoff = Backoff::try_from(&config).unwrap();
        assert_eq!(backoff.strategy(), BackoffStrategy::Exponential);
        assert_eq!(backoff.jitter(), Jitter::Full);
        assert_eq!(backoff.base(), ms(50));
        assert_eq!(backoff.max(), Duration::from_secs(2));
    }

    #[test]
    fn invalid_settings_are_typed_errors() {
        let err = Backoff::linear(ms(200), ms(100)).unwrap_err();
        assert_eq!(err.setting(), "max_delay");
        assert_eq!(err.to_string(), "invalid max_delay: (100ms) is below base_delay (200ms)");
        for bad in [0.5, f64::NAN, f64::INFINITY] {
            let err = Backoff::exponential(ms(1), ms(2), bad).unwrap_err();
            assert_eq!(err.setting(), "multiplier");
        }
    }

    fn strategies() -> impl Strategy<Value = BackoffStrategy> {
        prop_oneof![
            Just(BackoffStrategy::Fixed),
            Just(BackoffStrategy::Linear),
            Just(BackoffStrategy::Exponential)
        ]
    }

    fn jitters() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated)
        ]
    }

    proptest! {
        // A fixed seed keeps the run deterministic; failures still shrink to a minimal case.
        #![proptest_config(ProptestConfig {
            rng_seed: RngSeed::Fixed(0x0bac_c0ff),
            ..ProptestConfig::default()
        })]

        #[test]
        fn jittered_delays_stay_within_bounds(
            strategy in strategies(),
            jitter in jitters(),
            base_ms in 0u64..10_000,
            extra_ms in 0u64..100_000,
            multiplier in 1.0f64..10.0,
            randomness in proptest::collection::vec(any::<u64>(), 1..64),
        ) {
            let base = ms(base_ms);
            let max = ms(base_ms + extra_ms);
            let backoff = Backoff::new(strategy, base, max, multiplier).unwrap().with_jitter(jitter);
            let mut previous = base;
            let delays = backoff.delays_with(Scripted(randomness, 0));
            for (delay, n) in delays.take(80).zip(1u32..) {
                let computed = backoff.base_delay(n);
                prop_assert!(delay <= max);
                prop_assert!(computed <= max);
                match jitter {
                    Jitter::None => prop_assert_eq!(delay, computed),
                    Jitter::Full => prop_assert!(delay <= computed),
                    Jitter::Equal => prop_assert!(delay >= computed / 2 && delay <= computed),
                    Jitter::Decorrelated => {
                        prop_assert!(delay >= base);
                        prop_assert!(delay <= previous.saturating_mul(3));
                    }
                }
                previous = delay;
            }
        }

        #[test]
        fn unjittered_delays_never_shrink(
            strategy in strategies(),
            base_ms in 0u64..1_000,
            extra_ms in 0u64..100_000,
            multiplier in 1.0f64..4.0,
            n in 1u32..200,
        ) {
            let backoff = Backoff::new(strategy, ms(base_ms), ms(base_ms + extra_ms), multiplier).unwrap();
            prop_assert!(backoff.base_delay(n) <= backoff.base_delay(n + 1));
        }
    }
}
