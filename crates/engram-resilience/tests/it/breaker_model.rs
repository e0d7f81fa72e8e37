//! The circuit breaker checked against a tiny reference model with `proptest-state-machine`.
//!
//! The model keeps the window as a `VecDeque`, time as whole milliseconds and the threshold as
//! a whole percentage; random sequences of calls, held permits, outcomes, drops and clock
//! advances must leave the breaker and the model agreeing on every observable.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use engram_config::CircuitBreakerConfig;
use engram_resilience::{BreakerState, CircuitBreaker, ManualClock, NoopObserver, Permit, Verdict};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

const OPEN_MS: u64 = 100;
const MAX_OPEN_MS: u64 = 400;
const MAX_WAIT_MS: u64 = 250;

#[derive(Debug, Clone, Copy)]
struct Params {
    window: usize,
    minimum_calls: usize,
    threshold_percent: usize,
    consecutive: Option<u32>,
    probes: usize,
    growing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Closed,
    Probe(u64),
}

#[derive(Debug, Clone)]
struct Model {
    params: Params,
    now: u64,
    state: BreakerState,
    generation: u64,
    window: VecDeque<bool>,
    consecutive: u32,
    opens: u32,
    open_until: u64,
    probes: Vec<(u64, u64)>,
    probes_succeeded: usize,
    next_probe: u64,
    /// Permits held by the test, in acquisition order: (generation, kind).
    held: Vec<(u64, Kind)>,
    /// The result of the last acquisition: `Ok(is_probe)` or `Err(state)`.
    last: Option<Result<bool, BreakerState>>,
}

#[derive(Debug, Clone)]
enum Step {
    /// Acquire, and report at once.
    Call(Verdict),
    /// Acquire and hold the permit.
    Acquire,
    /// Report the outcome of the held permit at this index (modulo the number held).
    Finish(usize, Verdict),
    /// Drop the held permit at this index unreported.
    Drop(usize),
    /// Move the clock forward.
    Advance(u64),
}

impl Model {
    fn transition(&mut self, to: BreakerState) {
        self.state = to;
        self.generation += 1;
        self.probes.clear();
        self.probes_succeeded = 0;
        match to {
            BreakerState::Open => {
                self.opens += 1;
                let duration = if self.params.growing {
                    (OPEN_MS << (self.opens - 1).min(20)).min(MAX_OPEN_MS)
                } else {
                    OPEN_MS
                };
                self.open_until = self.now + duration;
            }
            BreakerState::HalfOpen => {}
            BreakerState::Closed => {
                self.window.clear();
                self.consecutive = 0;
                self.opens = 0;
            }
        }
    }

    fn acquire(&mut self) -> Option<(u64, Kind)> {
        if self.state == BreakerState::Open {
            if self.now < self.open_until {
                self.last = Some(Err(BreakerState::Open));
                return None;
            }
            self.transition(BreakerState::HalfOpen);
        } else if self.state == BreakerState::HalfOpen {
            let now = self.now;
            self.probes.retain(|(_, admitted)| now - admitted < MAX_WAIT_MS);
            if self.probes.len() + self.probes_succeeded >= self.params.probes {
                self.last = Some(Err(BreakerState::HalfOpen));
                return None;
            }
        }
        let kind = if self.state == BreakerState::Closed {
            Kind::Closed
        } else {
            let id = self.next_probe;
            self.next_probe += 1;
            self.probes.push((id, self.now));
            Kind::Probe(id)
        };
        self.last = Some(Ok(kind != Kind::Closed));
        Some((self.generation, kind))
    }

    fn report(&mut self, (generation, kind): (u64, Kind), verdict: Verdict) {
        if generation != self.generation {
            return;
        }
        match kind {
            Kind::Closed => {
                if verdict == Verdict::Ignored {
                    return;
                }
                let failure = verdict == Verdict::Failure;
                if self.window.len() == self.params.window {
                    self.window.pop_front();
                }
                self.window.push_back(failure);
                self.consecutive = if failure { self.consecutive + 1 } else { 0 };
                let failures = self.window.iter().filter(|f| **f).count();
                let by_rate = self.window.len() >= self.params.minimum_calls
                    && failures * 100 >= self.params.threshold_percent * self.window.len();
                let by_run = self.params.consecutive.is_some_and(|n| self.consecutive >= n);
                if by_rate || by_run {
                    self.transition(BreakerState::Open);
                }
            }
            Kind::Probe(id) => {
                let Some(index) = self.probes.iter().position(|(p, _)| *p == id) else {
                    return;
                };
                self.probes.remove(index);
                match verdict {
                    Verdict::Success => {
                        self.probes_succeeded += 1;
                        if self.probes_succeeded >= self.params.probes {
                            self.transition(BreakerState::Closed);
                        }
                    }
                    Verdict::Failure => self.transition(BreakerState::Open),
                    Verdict::Ignored => {}
                }
            }
        }
    }
}

fn verdicts() -> impl Strategy<Value = Verdict> {
    prop_oneof![
        3 => Just(Verdict::Success),
        3 => Just(Verdict::Failure),
        1 => Just(Verdict::Ignored),
    ]
}

struct BreakerModel;

impl ReferenceStateMachine for BreakerModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        (
            1usize..8,
            prop_oneof![Just(20usize), Just(50), Just(100)],
            proptest::option::of(1u32..4),
            1usize..4,
            any::<bool>(),
        )
            .prop_flat_map(|(window, threshold_percent, consecutive, probes, growing)| {
                (1..=window).prop_map(move |minimum_calls| Params {
                    window,
                    minimum_calls,
                    threshold_percent,
                    consecutive,
                    probes,
                    growing,
                })
            })
            .prop_map(|params| Model {
                params,
                now: 0,
                state: BreakerState::Closed,
                generation: 0,
                window: VecDeque::new(),
                consecutive: 0,
                opens: 0,
                open_until: 0,
                probes: Vec::new(),
                probes_succeeded: 0,
                next_probe: 0,
                held: Vec::new(),
                last: None,
            })
            .boxed()
    }

    fn transitions(_state: &Model) -> BoxedStrategy<Step> {
        prop_oneof![
            6 => verdicts().prop_map(Step::Call),
            2 => Just(Step::Acquire),
            2 => (any::<usize>(), verdicts()).prop_map(|(i, v)| Step::Finish(i, v)),
            1 => any::<usize>().prop_map(Step::Drop),
            2 => prop_oneof![Just(OPEN_MS), Just(MAX_WAIT_MS), 0u64..300].prop_map(Step::Advance),
        ]
        .boxed()
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        match step {
            Step::Finish(..) | Step::Drop(_) => !state.held.is_empty(),
            _ => true,
        }
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        state.last = None;
        match step {
            Step::Call(verdict) => {
                if let Some(permit) = state.acquire() {
                    state.report(permit, *verdict);
                }
            }
            Step::Acquire => {
                if let Some(permit) = state.acquire() {
                    state.held.push(permit);
                }
            }
            Step::Finish(index, verdict) => {
                let permit = state.held.remove(index % state.held.len());
                state.report(permit, *verdict);
            }
            Step::Drop(index) => {
                let permit = state.held.remove(index % state.held.len());
                state.report(permit, Verdict::Ignored);
            }
            Step::Advance(ms) => state.now += ms,
        }
        state
    }
}

struct System {
    breaker: &'static CircuitBreaker,
    clock: ManualClock,
    held: Vec<Permit<'static>>,
    last: Option<Result<bool, BreakerState>>,
}

struct BreakerTest;

impl StateMachineTest for BreakerTest {
    type SystemUnderTest = System;
    type Reference = BreakerModel;

    fn init_test(model: &Model) -> System {
        let p = model.params;
        let config = CircuitBreakerConfig {
            failure_rate_threshold: p.threshold_percent as f64 / 100.0,
            minimum_calls: p.minimum_calls as u32,
            window_size: p.window as u32,
            consecutive_failures: p.consecutive,
            open_duration: Duration::from_millis(OPEN_MS),
            max_open_duration: p.growing.then_some(Duration::from_millis(MAX_OPEN_MS)),
            half_open_probes: p.probes as u32,
            max_half_open_wait: Duration::from_millis(MAX_WAIT_MS),
            ..CircuitBreakerConfig::default()
        };
        let clock = ManualClock::new();
        let breaker = CircuitBreaker::with_parts(
            "model",
            &config,
            Arc::new(clock.clone()),
            Arc::new(NoopObserver),
        )
        .expect("model settings are valid");
        // Held permits borrow the breaker for the whole case; leaking one small breaker per
        // case is the simplest way to give them a 'static lifetime in a test.
        System { breaker: Box::leak(Box::new(breaker)), clock, held: Vec::new(), last: None }
    }

    fn apply(mut system: System, _model: &Model, step: Step) -> System {
        system.last = None;
        match step {
            Step::Call(verdict) => {
                system.last = Some(match system.breaker.try_acquire() {
                    Ok(permit) => {
                        let probe = permit.is_probe();
                        permit.record(verdict);
                        Ok(probe)
                    }
                    Err(rejected) => Err(rejected.state()),
                });
            }
            Step::Acquire => {
                system.last = Some(match system.breaker.try_acquire() {
                    Ok(permit) => {
                        let probe = permit.is_probe();
                        system.held.push(permit);
                        Ok(probe)
                    }
                    Err(rejected) => Err(rejected.state()),
                });
            }
            Step::Finish(index, verdict) => {
                let len = system.held.len();
                system.held.remove(index % len).record(verdict);
            }
            Step::Drop(index) => {
                let len = system.held.len();
                drop(system.held.remove(index % len));
            }
            Step::Advance(ms) => system.clock.advance(Duration::from_millis(ms)),
        }
        system
    }

    fn check_invariants(system: &System, model: &Model) {
        let snapshot = system.breaker.snapshot();
        assert_eq!(system.last, model.last, "acquisition result");
        assert_eq!(snapshot.state, model.state, "state");
        assert_eq!(snapshot.calls_in_window as usize, model.window.len(), "calls in window");
        let failures = model.window.iter().filter(|f| **f).count();
        assert_eq!(snapshot.failures_in_window as usize, failures, "failures in window");
        assert_eq!(snapshot.consecutive_failures, model.consecutive, "consecutive failures");
        if model.state == BreakerState::HalfOpen {
            assert_eq!(
                snapshot.probes_succeeded as usize, model.probes_succeeded,
                "probes succeeded"
            );
            // The breaker releases expired probes lazily, on the next acquisition.
            assert_eq!(snapshot.probes_in_flight as usize, model.probes.len(), "probes in flight");
        }
        let until_half_open = (model.state == BreakerState::Open)
            .then(|| Duration::from_millis(model.open_until.saturating_sub(model.now)));
        assert_eq!(snapshot.time_until_half_open, until_half_open, "time until half-open");
        assert_eq!(system.held.len(), model.held.len());
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x00e1_9a3b),
        .. ProptestConfig::default()
    })]

    #[test]
    fn breaker_matches_the_reference_model(sequential 1..60 => BreakerTest);
}
