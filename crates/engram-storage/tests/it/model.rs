//! Model test: the in-process backend against a `BTreeMap` reference, on a manual clock.
//!
//! Random sequences of puts, deletes, compare-and-sets, touches, clock advances, gets, counts
//! and scans over two namespaces and a few ids; after every step each key and each count of the
//! backend must equal the model's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use engram_storage::clock::{ManualClock, WallClock};
use engram_storage::testkit::conformance::record;
use engram_storage::testkit::suite_schema;
use engram_storage::{
    ErrorKind, InProcessBackend, Namespace, RecordId, StorageBackend, StorageBackendExt, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

const NAMESPACES: [&str; 2] = ["a", "b"];
const IDS: [&str; 4] = ["r0", "r1", "r2", "r3"];

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    version: u64,
    payload: u8,
    expires_at: Option<u64>,
    accesses: u64,
}

#[derive(Debug, Clone, Default)]
struct Model {
    now: u64,
    map: BTreeMap<(usize, usize), Entry>,
}

impl Model {
    fn live(&self, key: (usize, usize)) -> Option<&Entry> {
        self.map.get(&key).filter(|e| e.expires_at.is_none_or(|at| at > self.now))
    }
}

#[derive(Debug, Clone)]
enum Step {
    Put { ns: usize, id: usize, version: u64, payload: u8, ttl: Option<u64> },
    Delete { ns: usize, id: usize },
    Cas { ns: usize, id: usize, expected: Option<u64>, version: u64, payload: u8 },
    Touch { ns: usize, id: usize, ttl: Option<u64> },
    Advance(u64),
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model { now: 1_000_000, map: BTreeMap::new() }).boxed()
    }

    fn transitions(_state: &Model) -> BoxedStrategy<Step> {
        let key = (0..NAMESPACES.len(), 0..IDS.len());
        let ttl = proptest::option::of(1u64..500);
        prop_oneof![
            4 => (key.clone(), 1u64..6, any::<u8>(), ttl.clone())
                .prop_map(|((ns, id), version, payload, ttl)| Step::Put { ns, id, version, payload, ttl }),
            2 => key.clone().prop_map(|(ns, id)| Step::Delete { ns, id }),
            3 => (key.clone(), proptest::option::of(0u64..6), 1u64..7, any::<u8>())
                .prop_map(|((ns, id), expected, version, payload)| Step::Cas { ns, id, expected, version, payload }),
            2 => (key, ttl).prop_map(|((ns, id), ttl)| Step::Touch { ns, id, ttl }),
            1 => (1u64..400).prop_map(Step::Advance),
        ]
        .boxed()
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        let now = state.now;
        match *step {
            Step::Put { ns, id, version, payload, ttl } => {
                let entry =
                    Entry { version, payload, expires_at: ttl.map(|t| now + t), accesses: 0 };
                state.map.insert((ns, id), entry);
            }
            Step::Delete { ns, id } => {
                state.map.remove(&(ns, id));
            }
            Step::Cas { ns, id, expected, version, payload } => {
                let current = state.live((ns, id)).map(|e| e.version);
                if version > expected.unwrap_or(0) && current == expected {
                    state.map.insert(
                        (ns, id),
                        Entry { version, payload, expires_at: None, accesses: 0 },
                    );
                }
            }
            Step::Touch { ns, id, ttl } => {
                if state.live((ns, id)).is_some()
                    && let Some(e) = state.map.get_mut(&(ns, id))
                {
                    e.accesses += 1;
                    if let Some(t) = ttl {
                        e.expires_at = Some(now + t);
                    }
                }
            }
            Step::Advance(ms) => state.now += ms,
        }
        state
    }
}

struct System {
    rt: tokio::runtime::Runtime,
    clock: ManualClock,
    backend: Arc<InProcessBackend>,
}

fn ns(i: usize) -> Namespace {
    Namespace::new(NAMESPACES[i]).expect("namespace")
}

fn rid(i: usize) -> RecordId {
    RecordId::new(IDS[i]).expect("id")
}

fn make(ns_i: usize, id_i: usize, version: u64, payload: u8) -> engram_storage::Record {
    let mut r = record(&ns(ns_i), IDS[id_i], [1.0, 0.0, 0.0, 0.0]).with_version(version);
    r.payload = vec![payload];
    r
}

struct BackendTest;

impl StateMachineTest for BackendTest {
    type SystemUnderTest = System;
    type Reference = Reference;

    fn init_test(model: &Model) -> System {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let clock = ManualClock::new(Timestamp(model.now));
        let backend = Arc::new(InProcessBackend::with_clock(Arc::new(clock.clone())));
        rt.block_on(backend.ensure_index(&suite_schema())).expect("index");
        System { rt, clock, backend }
    }

    fn apply(system: System, model: &Model, step: Step) -> System {
        let b = system.backend.clone();
        let now = system.clock.now();
        system.rt.block_on(async {
            match step {
                Step::Put { ns, id, version, payload, ttl } => {
                    let mut r = make(ns, id, version, payload);
                    r.expires_at = ttl.map(|t| now.plus(Duration::from_millis(t)));
                    b.put(r).await.expect("valid put");
                }
                Step::Delete { ns: n, id } => {
                    b.delete(&ns(n), &rid(id)).await.expect("delete");
                }
                Step::Cas { ns: n, id, expected, version, payload } => {
                    // `model` is the reference state after this step.
                    let result = b.compare_and_set(make(n, id, version, payload), expected).await;
                    let after = model.live((n, id)).map(|e| (e.version, e.payload));
                    match result {
                        Ok(()) => assert_eq!(
                            after,
                            Some((version, payload)),
                            "cas succeeded, model disagrees"
                        ),
                        Err(e) if version <= expected.unwrap_or(0) => {
                            assert_eq!(e.kind(), ErrorKind::InvalidInput)
                        }
                        Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict),
                    }
                }
                Step::Touch { ns: n, id, ttl } => {
                    let touched = b
                        .touch(&ns(n), &rid(id), now, ttl.map(Duration::from_millis))
                        .await
                        .expect("touch");
                    assert_eq!(touched.is_some(), model.live((n, id)).is_some(), "touch hit");
                }
                Step::Advance(ms) => system.clock.advance(Duration::from_millis(ms)),
            }
        });
        system
    }

    fn check_invariants(system: &System, model: &Model) {
        let b = system.backend.clone();
        system.rt.block_on(async {
            for (n, _) in NAMESPACES.iter().enumerate() {
                for (i, _) in IDS.iter().enumerate() {
                    let got = b.get(&ns(n), &rid(i)).await.expect("get");
                    let want = model.live((n, i));
                    match (got, want) {
                        (None, None) => {}
                        (Some(r), Some(e)) => {
                            assert_eq!(
                                (r.version, r.payload.as_slice()),
                                (e.version, &[e.payload][..]),
                                "{n}/{i}"
                            );
                            assert_eq!(
                                r.expires_at.map(|t| t.as_millis()),
                                e.expires_at,
                                "expiry {n}/{i}"
                            );
                            assert_eq!(r.access.count, e.accesses, "accesses {n}/{i}");
                        }
                        (got, want) => panic!("{n}/{i}: backend {got:?}, model {want:?}"),
                    }
                }
                let live = (0..IDS.len()).filter(|i| model.live((n, *i)).is_some()).count() as u64;
                assert_eq!(b.count(&ns(n)).await.expect("count"), live, "count of {n}");
                assert_eq!(
                    b.scan_all(&ns(n), 3).await.expect("scan").len() as u64,
                    live,
                    "scan of {n}"
                );
            }
        });
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn in_process_backend_matches_a_btreemap(sequential 1..40 => BackendTest);
}
