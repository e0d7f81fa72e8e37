//! The retry budget: a token bucket that lets retries through only up to a ratio of recent
//! calls plus a small floor, so a fleet of clients cannot multiply its load on a dependency that
//! is already failing.
//!
//! The details are in the documentation of [`RetryBudget`].

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use engram_config::RetryBudgetConfig;
use tokio::time::Instant;

use crate::clock::{Clock, default_clock};
use crate::error::{InvalidSettings, ensure};
use crate::random::duration_nanos;

/// Tokens are counted in thousandths so that fractional ratios stay exact integers.
const SCALE: i64 = 1_000;
/// The window is divided into this many slots that expire one at a time.
const SLOTS: usize = 10;

/// A shared retry budget.
///
/// This is the design of tower's `TpsBudget` and of gRPC's retry throttling: every call deposits
/// `ratio` tokens, every retry withdraws one, deposits and withdrawals expire after `window`, and
/// a reserve of `min_per_second × window` tokens lets a quiet client still retry. During an
/// outage where every call fails, retries are bounded by `ratio × calls + reserve`, so the
/// amplification (attempts per call) tends to `1 + ratio` instead of `max_attempts`.
///
/// Cheap to share behind an [`Arc`]: a deposit (every call) is one clock read and one atomic
/// addition while its slot is current; moving to the next slot, withdrawals and
/// [`RetryBudget::available`] take a short lock. A deposit that races with the move to the
/// next slot may be counted in the slot next to its own, so it expires up to one slot
/// (a tenth of the window) early or late.
#[derive(Debug)]
pub struct RetryBudget {
    deposit: i64,
    reserve: i64,
    slot_length: Duration,
    clock: Arc<dyn Clock>,
    /// Where `end_nanos` counts from: the clock's time when the budget got its clock.
    epoch: Instant,
    /// Net tokens (deposits minus withdrawals) per slot, in thousandths.
    balance: [AtomicI64; SLOTS],
    /// The current slot; changed under the lock.
    current: AtomicUsize,
    /// When the current slot ends, in nanoseconds after `epoch`; 0 until first use. Changed
    /// under the lock.
    end_nanos: AtomicU64,
    slots: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    /// When the current slot started; `None` until first use.
    current_start: Option<Instant>,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per call made within `window`, plus `min_per_second`
    /// retries per second whatever the traffic. Reads time from the tokio clock.
    ///
    /// # Errors
    /// When `ratio` is not a finite number in `[0, 1000]` or `window` is shorter than 10 ms.
    pub fn new(ratio: f64, min_per_second: u32, window: Duration) -> Result<Self, InvalidSettings> {
        ensure(ratio.is_finite() && (0.0..=1000.0).contains(&ratio), "budget.ratio", || {
            format!("({ratio}) must be a finite number between 0 and 1000")
        })?;
        ensure(window >= Duration::from_millis(10), "budget.window", || {
            format!("({window:?}) must be at least 10ms")
        })?;
        let deposit = (ratio * SCALE as f64).round() as i64;
        let reserve =
            (f64::from(min_per_second) * window.as_secs_f64() * SCALE as f64).round() as i64;
        let clock = default_clock();
        Ok(Self {
            deposit,
            reserve,
            slot_length: window / SLOTS as u32,
            epoch: clock.now(),
            clock,
            balance: Default::default(),
            current: AtomicUsize::new(0),
            end_nanos: AtomicU64::new(0),
            slots: Mutex::new(Slots { current_start: None }),
        })
    }

    /// The same budget reading time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.epoch = clock.now();
        self.clock = clock;
        self
    }

    /// Records one call (not a retry): it earns `ratio` retries for the next `window`.
    pub fn deposit(&self) {
        if self.deposit != 0 {
            self.deposit_at(self.clock.now());
        }
    }

    /// Records one call made at `now`, a time read from this budget's clock
    /// ([`RetryBudget::now`]): as [`RetryBudget::deposit`], for a caller that reads the clock
    /// anyway.
    pub fn deposit_at(&self, now: Instant) {
        if self.deposit == 0 {
            return;
        }
        if self.nanos(now) < self.end_nanos.load(Ordering::Acquire) {
            // The current slot is still current: no need for the lock.
            self.add_to_current(self.deposit);
            return;
        }
        let _slots = self.lock(now);
        self.add_to_current(self.deposit);
    }

    /// The time on this budget's clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Takes one retry from the budget; `false` means the retry must not happen.
    pub fn try_withdraw(&self) -> bool {
        let now = self.clock.now();
        let _slots = self.lock(now);
        if self.balance().saturating_add(self.reserve) >= SCALE {
            self.add_to_current(-SCALE);
            true
        } else {
            false
        }
    }

    /// How many retries the budget would allow right now.
    pub fn available(&self) -> u64 {
        let now = self.clock.now();
        let _slots = self.lock(now);
        u64::try_from(self.balance().saturating_add(self.reserve) / SCALE).unwrap_or(0)
    }

    fn nanos(&self, at: Instant) -> u64 {
        duration_nanos(at.saturating_duration_since(self.epoch))
    }

    fn add_to_current(&self, tokens: i64) {
        // A slot holds the tokens of one slot's length of calls (at most a thousand per call):
        // far from wrapping.
        self.balance[self.current.load(Ordering::Acquire)].fetch_add(tokens, Ordering::AcqRel);
    }

    /// The sum of every slot.
    fn balance(&self) -> i64 {
        self.balance.iter().map(|b| b.load(Ordering::Acquire)).fold(0, i64::saturating_add)
    }

    /// Locks the slots after expiring those older than the window.
    fn lock(&self, now: Instant) -> MutexGuard<'_, Slots> {
        // The slots hold plain values that are valid after any panic, so poisoning is moot.
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(start) = slots.current_start else {
            slots.current_start = Some(now);
            self.publish_end(now);
            return slots;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < self.slot_length {
            return slots;
        }
        let steps = elapsed.as_nanos() / self.slot_length.as_nanos().max(1);
        let start = if steps >= SLOTS as u128 {
            for b in &self.balance {
                b.store(0, Ordering::Release);
            }
            now
        } else {
            let mut current = self.current.load(Ordering::Acquire);
            for _ in 0..steps {
                current = (current + 1) % SLOTS;
                self.balance[current].store(0, Ordering::Release);
            }
            self.current.store(current, Ordering::Release);
            // steps < SLOTS, so the cast and the multiplication are small.
            start + self.slot_length * steps as u32
        };
        slots.current_start = Some(start);
        self.publish_end(start);
        slots
    }

    /// Publishes when the slot that started at `start` ends, for lock-free deposits.
    fn publish_end(&self, start: Instant) {
        let end = self.nanos(start).saturating_add(duration_nanos(self.slot_length));
        self.end_nanos.store(end, Ordering::Release);
    }
}

impl TryFrom<&RetryBudgetConfig> for RetryBudget {
    type Error = InvalidSettings;

    /// Builds the budget from its settings; `enabled` is for the caller to check.
    fn try_from(config: &RetryBudgetConfig) -> Result<Self, Self::Error> {
        Self::new(config.ratio, config.min_per_second, config.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn budget(ratio: f64, min_per_second: u32, window_secs: u64) -> (RetryBudget, ManualClock) {
        let clock = ManualClock::new();
        let budget = RetryBudget::new(ratio, min_per_second, Duration::from_secs(window_secs))
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        (budget, clock)
    }

    #[test]
    fn reserve_alone_allows_min_per_second_times_window() {
        let (budget, _) = budget(0.0, 2, 10);
        assert_eq!(budget.available(), 20);
        assert_eq!((0..25).filter(|_| budget.try_withdraw()).count(), 20);
    }

    #[test]
    fn deposits_earn_ratio_retries() {
        let (budget, _) = budget(0.25, 0, 10);
        assert!(!budget.try_withdraw());
        for _ in 0..8 {
            budget.deposit();
        }
        assert_eq!(budget.available(), 2);
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
    }

    #[test]
    fn withdrawals_and_deposits_expire_with_the_window() {
        let (budget, clock) = budget(0.0, 1, 10);
        assert_eq!((0..20).filter(|_| budget.try_withdraw()).count(), 10);
        clock.advance(Duration::from_secs(5));
        assert!(!budget.try_withdraw());
        clock.advance(Duration::from_secs(5));
        assert_eq!(budget.available(), 10);

        let (budget, clock) = budget_with_deposits();
        clock.advance(Duration::from_secs(11));
        assert_eq!(budget.available(), 0);
    }

    fn budget_with_deposits() -> (RetryBudget, ManualClock) {
        let (budget, clock) = budget(1.0, 0, 10);
        for _ in 0..5 {
            budget.deposit();
        }
        assert_eq!(budget.available(), 5);
        (budget, clock)
    }

    #[test]
    fn slots_expire_one_at_a_time() {
        let (budget, clock) = budget(1.0, 0, 10);
        budget.deposit();
        clock.advance(Duration::from_secs(5));
        budget.deposit();
        assert_eq!(budget.available(), 2);
        clock.advance(Duration::from_millis(5_500));
        assert_eq!(budget.available(), 1);
        clock.advance(Duration::from_secs(5));
        assert_eq!(budget.available(), 0);
    }

    /// A deposit at a time read earlier counts from then, not from when it is made.
    #[test]
    fn a_deposit_counts_from_the_time_given() {
        let (budget, clock) = budget(1.0, 0, 10);
        let earlier = budget.now();
        clock.advance(Duration::from_secs(5));
        budget.deposit_at(earlier);
        budget.deposit();
        assert_eq!(budget.available(), 2);
        clock.advance(Duration::from_millis(5_500));
        // The first was made 10.5 s ago: its slot has expired, the second's has not.
        assert_eq!(budget.available(), 1);
    }

    #[test]
    fn concurrent_deposits_all_count() {
        let (budget, clock) = budget(0.5, 0, 10);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..1_000).for_each(|_| budget.deposit()));
            }
        });
        assert_eq!(budget.available(), 2_000);
        clock.advance(Duration::from_secs(3));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..100).for_each(|_| budget.deposit()));
            }
        });
        assert_eq!(budget.available(), 2_200);
        clock.advance(Duration::from_secs(8));
        assert_eq!(budget.available(), 200, "the first deposits have expired");
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(
            RetryBudget::new(f64::NAN, 1, Duration::from_secs(1)).unwrap_err().setting(),
            "budget.ratio"
        );
        assert_eq!(
            RetryBudget::new(-1.0, 1, Duration::from_secs(1)).unwrap_err().setting(),
            "budget.ratio"
        );
        assert_eq!(
            RetryBudget::new(0.1, 1, Duration::ZERO).unwrap_err().setting(),
            "budget.window"
        );
        let from_config = RetryBudget::try_from(&RetryBudgetConfig::default()).unwrap();
        assert_eq!(from_config.available(), 100);
    }
}
