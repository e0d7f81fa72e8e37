//! The store's behaviour, run on any backend through `Rig`.

use std::sync::Arc;
use std::time::Duration;

use engram_config::Config;
use engram_memory::{
    MemoryEntry, MemoryError, MemoryQuery, MemoryStore, MemoryType, StoreOptions, Timestamp,
};
use engram_storage::clock::ManualClock;
use engram_storage::redis::{RedisBackend, RedisBackendOptions};
use engram_storage::{ErrorKind, InProcessBackend, StorageBackend};

const DIM: u32 = 4;

fn config() -> Config {
    let mut c = Config::default();
    c.index.dimension = DIM;
    c.index.name = format!("engram-mem-test-{}", engram_storage::testkit_token());
    c.index.key_prefix = format!("{}:", c.index.name);
    c.health.enabled = false;
    c
}

/// Where a portable case runs: the in-process backend on a manual clock, or Redis Stack.
pub(crate) enum Rig {
    InProcess(ManualClock),
    Redis(engram_config::RedisUrl, tokio::sync::Mutex<Vec<Arc<RedisBackend>>>),
}

impl Rig {
    fn in_process() -> Self {
        Rig::InProcess(ManualClock::new(Timestamp::now()))
    }

    fn redis(test: &str) -> Option<Self> {
        engram_config::test_support::require_server(test)
            .map(|url| Rig::Redis(url, tokio::sync::Mutex::new(Vec::new())))
    }

    /// A fresh store with its own index.
    async fn store(&self, config: Config) -> MemoryStore {
        self.try_store(config).await.expect("store")
    }

    /// A store on the index that `config` names, which may exist already (the same
    /// in-process backend is reused per index name).
    async fn try_store(&self, mut config: Config) -> Result<MemoryStore, MemoryError> {
        match self {
            Rig::InProcess(clock) => {
                let backend = shared_backend(&config.index.name, clock);
                let options = StoreOptions {
                    clock: Arc::new(clock.clone()),
                    seed: Some(42),
                    ..StoreOptions::default()
                };
                MemoryStore::with_backend(config, backend, options).await
            }
            Rig::Redis(url, backends) => {
                config.redis.url = url.clone();
                let backend = Arc::new(
                    RedisBackend::connect(&config.redis, RedisBackendOptions::default()).await?,
                );
                backends.lock().await.push(backend.clone());
                MemoryStore::with_backend(config, backend, StoreOptions::default()).await
            }
        }
    }

    /// Lets time pass between two writes: the manual clock moves 10 s, Redis waits 300 ms.
    async fn step(&self) {
        match self {
            Rig::InProcess(clock) => clock.advance(Duration::from_millis(self.step_ms())),
            Rig::Redis(..) => tokio::time::sleep(Duration::from_millis(self.step_ms())).await,
        }
    }

    fn step_ms(&self) -> u64 {
        match self {
            Rig::InProcess(_) => 10_000,
            Rig::Redis(..) => 300,
        }
    }

    /// Drops the indexes (and their documents) that the case made on Redis.
    async fn cleanup(&self) {
        if let Rig::Redis(_, backends) = self {
            for b in backends.lock().await.drain(..) {
                // Several stores of one case may share an index: the first drop removes it.
                match b.drop_index(true).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::IndexMissing => {}
                    Err(e) => panic!("drop the test index: {e}"),
                }
            }
        }
    }
}

/// One in-process backend per index name, so that two stores of a case can share an index.
fn shared_backend(index: &str, clock: &ManualClock) -> Arc<dyn StorageBackend> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BACKENDS: OnceLock<Mutex<HashMap<String, Arc<dyn StorageBackend>>>> = OnceLock::new();
    let mut map = BACKENDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(index.to_owned())
        .or_insert_with(|| Arc::new(InProcessBackend::with_clock(Arc::new(clock.clone()))))
        .clone()
}

/// Runs each portable case on the in-process backend and on Redis Stack.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod in_process_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Rig::in_process()).await;
                }
            )*
        }
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(rig) = super::Rig::redis(stringify!($name)) else { return };
                    super::$name(&rig).await;
                    rig.cleanup().await;
                }
            )*
        }
    };
}

on_both_backends!(
    add_get_update_delete,
    batches_report_per_item_and_list_pages,
    validation_errors_are_typed_and_store_nothing,
    ranking_orders_constructed_cases,
    query_filters_by_type_tags_importance_time_and_text,
    text_filters_need_full_text_and_content_is_still_returned,
    a_full_text_setting_other_than_the_index_s_is_a_schema_mismatch,
    dedup_returns_the_existing_id,
    add_batch_looks_up_duplicates_once_per_namespace,
    a_dedup_lookup_cut_at_its_limit_falls_back_per_entry,
    concurrent_updates_lose_nothing,
    jitter_spreads_expiry_of_entries_written_together,
    the_embedding_guard_refuses_another_model_or_dimension,
    ttl_is_set_per_type_and_refreshed_on_read,
);

pub(crate) async fn ttl_is_set_per_type_and_refreshed_on_read(rig: &Rig) {
    let mut c = config();
    for p in [&mut c.memory.working, &mut c.memory.episodic] {
        p.ttl = Some(Duration::from_secs(60));
        p.ttl_jitter_ratio = 0.0;
    }
    c.memory.episodic.refresh_on_read = false;
    c.memory.semantic.ttl = None;
    let store = rig.store(c).await;
    let add = |t: MemoryType, text: &str| {
        MemoryEntry::builder("ttl", text).memory_type(t).build().expect("valid")
    };
    let w = store.add(add(MemoryType::Working, "working note")).await.expect("add");
    let ep = store.add(add(MemoryType::Episodic, "an episode")).await.expect("add");
    let sem = store.add(add(MemoryType::Semantic, "a fact")).await.expect("add");
    let expiry = |e: Option<MemoryEntry>| e.expect("found").expires_at;
    let before = store.get_batch("ttl", &[w.as_str(), ep.as_str(), sem.as_str()]).await;
    let before: Vec<Option<Timestamp>> =
        before.into_iter().map(|r| expiry(r.expect("ok"))).collect();
    let (w0, ep0) = (before[0].expect("working has a ttl"), before[1].expect("episodic has a ttl"));
    assert_eq!(before[2], None, "semantic keeps for ever here");
    let created = store
        .get_batch("ttl", &[w.as_str()])
        .await
        .remove(0)
        .expect("ok")
        .expect("found")
        .created_at;
    assert!(
        w0.as_millis().abs_diff(created.plus(Duration::from_secs(60)).as_millis()) < 2_000,
        "ttl of 60 s"
    );

    rig.step().await;
    let w1 = expiry(store.get("ttl", w.as_str()).await.expect("get")).expect("ttl");
    let ep1 = expiry(store.get("ttl", ep.as_str()).await.expect("get")).expect("ttl");
    assert!(
        w1.as_millis() >= w0.as_millis() + rig.step_ms() / 2,
        "working refreshes on read: {w0:?} -> {w1:?}"
    );
    assert_eq!(ep1, ep0, "episodic does not refresh on read");
}

async fn in_memory(config: Config) -> (MemoryStore, ManualClock) {
    let clock = ManualClock::new(Timestamp::now());
    let options =
        StoreOptions { clock: Arc::new(clock.clone()), seed: Some(42), ..StoreOptions::default() };
    let backend: Arc<dyn StorageBackend> =
        Arc::new(InProcessBackend::with_clock(Arc::new(clock.clone())));
    (MemoryStore::with_backend(config, backend, options).await.expect("store"), clock)
}

fn entry(ns: &str, content: &str, v: [f32; 4]) -> MemoryEntry {
    MemoryEntry::builder(ns, content).embedding(v.to_vec()).build().expect("valid entry")
}

pub(crate) async fn add_get_update_delete(rig: &Rig) {
    let store = rig.store(config()).await;
    let e = MemoryEntry::builder("agent-1", "the sky is blue")
        .memory_type(MemoryType::Semantic)
        .importance(0.7)
        .embedding(vec![1.0, 0.0, 0.0, 0.0])
        .tags(["fact", "color"])
        .metadata("source", "observation")
        .metadata("turn", 3i64)
        .build()
        .expect("valid");
    let id = store.add(e.clone()).await.expect("add");
    assert_eq!(id, e.id);
    assert!(store.exists("agent-1", id.as_str()).await.expect("exists"));
    let got = store.get("agent-1", id.as_str()).await.expect("get").expect("found");
    assert_eq!(
        (got.content.as_str(), got.memory_type, got.importance),
        ("the sky is blue", MemoryType::Semantic, 0.7)
    );
    assert_eq!(got.tags, ["fact", "color"]);
    assert_eq!(got.metadata.get("turn"), Some(&engram_memory::MetadataValue::Int(3)));
    assert_eq!((got.access_count, got.version), (1, 1), "get counts an access");
    assert!(got.last_accessed.is_some());

    let updated =
        store.update_with("agent-1", id.as_str(), |e| e.importance = 1.0).await.expect("update");
    assert_eq!((updated.version, updated.importance), (2, 1.0));
    let stale = MemoryEntry { importance: 0.1, ..got.clone() };
    match store.update(stale).await {
        Err(MemoryError::Conflict { .. }) => {}
        other => panic!("a stale update must conflict, got {other:?}"),
    }
    assert_eq!(store.count("agent-1").await.expect("count"), 1);
    assert!(store.delete("agent-1", id.as_str()).await.expect("delete"));
    assert!(store.get("agent-1", id.as_str()).await.expect("get").is_none());
    assert!(!store.delete("agent-1", id.as_str()).await.expect("delete again"));
    match store.update_with("agent-1", id.as_str(), |_| {}).await {
        Err(MemoryError::NotFound { .. }) => {}
        other => panic!("update of a deleted entry: {other:?}"),
    }
}

pub(crate) async fn batches_report_per_item_and_list_pages(rig: &Rig) {
    let store = rig.store(config()).await;
    let mut entries: Vec<MemoryEntry> = (0..12)
        .map(|i| entry("agent-2", &format!("memory {i}"), [1.0, i as f32, 0.0, 0.0]))
        .collect();
    let mut bad = entry("agent-2", "bad", [1.0; 4]);
    bad.embedding = Some(vec![1.0; 7]);
    entries.insert(3, bad);
    let results = store.add_batch(entries).await;
    assert_eq!(results.len(), 13);
    assert!(
        matches!(results[3], Err(MemoryError::DimensionMismatch { expected: 4, found: 7 })),
        "{:?}",
        results[3]
    );
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 12);
    let ids: Vec<String> =
        results.iter().filter_map(|r| r.as_ref().ok().map(|id| id.to_string())).collect();
    let id_refs: Vec<&str> =
        ids.iter().map(String::as_str).take(3).chain(["missing", "bad id*"]).collect();
    let got = store.get_batch("agent-2", &id_refs).await;
    assert!(got[..3].iter().all(|r| matches!(r, Ok(Some(_)))));
    assert!(matches!(got[3], Ok(None)));
    assert!(matches!(got[4], Err(MemoryError::Invalid { field: "id", .. })));

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list("agent-2", cursor, 5).await.expect("list");
        assert!(page.entries.len() <= 5);
        seen.extend(page.entries.into_iter().map(|e| e.id.to_string()));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);
    let deleted = store.delete_batch("agent-2", &[ids[0].as_str(), "missing"]).await;
    assert!(matches!(deleted[..], [Ok(true), Ok(false)]), "{deleted:?}");
}

pub(crate) async fn validation_errors_are_typed_and_store_nothing(rig: &Rig) {
    let store = rig.store(config()).await;
    assert!(matches!(
        MemoryEntry::builder("a", "  ").build(),
        Err(MemoryError::Invalid { field: "content", .. })
    ));
    assert!(matches!(
        MemoryEntry::builder("a", "x").importance(1.5).build(),
        Err(MemoryError::Invalid { field: "importance", .. })
    ));
    assert!(matches!(
        MemoryEntry::builder("a", "x").importance(f32::NAN).build(),
        Err(MemoryError::Invalid { field: "importance", .. })
    ));
    assert!(matches!(
        MemoryEntry::builder("a", "x").embedding(vec![f32::NAN; 4]).build(),
        Err(MemoryError::Invalid { field: "embedding", .. })
    ));
    assert!(matches!(
        MemoryEntry::builder("a", "x").tag("").build(),
        Err(MemoryError::Invalid { field: "tags", .. })
    ));
    assert!(matches!(
        MemoryEntry::builder("a", "x").id("x".repeat(129)).build(),
        Err(MemoryError::Invalid { field: "id", .. })
    ));
    assert!(matches!(
        MemoryEntry::builder("a:b", "x").build(),
        Err(MemoryError::Invalid { field: "namespace", .. })
    ));
    assert!(matches!(
        MemoryEntry::builder("__engram", "x").build(),
        Err(MemoryError::Invalid { field: "namespace", .. })
    ));
    let wrong_dim = MemoryEntry::builder("a", "x")
        .embedding(vec![1.0; 3])
        .build()
        .expect("valid without index");
    assert!(matches!(
        store.add(wrong_dim).await,
        Err(MemoryError::DimensionMismatch { expected: 4, found: 3 })
    ));
    let zero = MemoryEntry::builder("a", "x")
        .embedding(vec![0.0; 4])
        .build()
        .expect("valid without index");
    assert!(matches!(store.add(zero).await, Err(MemoryError::Invalid { field: "embedding", .. })));
    assert_eq!(store.count("a").await.expect("count"), 0);
    let q = MemoryQuery::new("a", vec![1.0; 3]).expect("query");
    assert!(matches!(store.query(q).await, Err(MemoryError::DimensionMismatch { .. })));
    let q = MemoryQuery::new("a", vec![1.0; 4]).expect("query").k(0);
    assert!(matches!(store.query(q).await, Err(MemoryError::Invalid { field: "k", .. })));
}

#[tokio::test]
async fn policies_set_ttl_per_type_refresh_on_read_and_expire() {
    let mut c = config();
    c.memory.working.ttl = Some(Duration::from_secs(60));
    c.memory.working.ttl_jitter_ratio = 0.0;
    c.memory.episodic.ttl = Some(Duration::from_secs(60));
    c.memory.episodic.ttl_jitter_ratio = 0.0;
    c.memory.episodic.refresh_on_read = false;
    c.memory.semantic.ttl = None;
    let (store, clock) = in_memory(c).await;
    let t0 = clock_now(&clock);
    let w = store
        .add(
            MemoryEntry::builder("p", "working note")
                .memory_type(MemoryType::Working)
                .build()
                .expect("valid"),
        )
        .await
        .expect("add");
    let ep = store
        .add(
            MemoryEntry::builder("p", "an episode")
                .memory_type(MemoryType::Episodic)
                .build()
                .expect("valid"),
        )
        .await
        .expect("add");
    let sem = store
        .add(
            MemoryEntry::builder("p", "a fact")
                .memory_type(MemoryType::Semantic)
                .build()
                .expect("valid"),
        )
        .await
        .expect("add");
    let stored = store.get_batch("p", &[w.as_str(), ep.as_str(), sem.as_str()]).await;
    let expiry = |i: usize| stored[i].as_ref().expect("ok").as_ref().expect("found").expires_at;
    assert_eq!(expiry(0), Some(t0.plus(Duration::from_secs(60))));
    assert_eq!(expiry(1), Some(t0.plus(Duration::from_secs(60))));
    assert_eq!(expiry(2), None, "semantic keeps for ever here");

    clock.advance(Duration::from_secs(50));
    let refreshed = store.get("p", w.as_str()).await.expect("get").expect("found");
    assert_eq!(
        refreshed.expires_at,
        Some(t0.plus(Duration::from_secs(110))),
        "working refreshes on read"
    );
    let not_refreshed = store.get("p", ep.as_str()).await.expect("get").expect("found");
    assert_eq!(
        not_refreshed.expires_at,
        Some(t0.plus(Duration::from_secs(60))),
        "episodic does not"
    );

    clock.advance(Duration::from_secs(20));
    assert!(store.get("p", ep.as_str()).await.expect("get").is_none(), "the episode expired");
    assert!(store.get("p", w.as_str()).await.expect("get").is_some(), "the refreshed note lives");
    assert!(store.get("p", sem.as_str()).await.expect("get").is_some());
}

fn clock_now(clock: &ManualClock) -> Timestamp {
    engram_storage::clock::WallClock::now(clock)
}

pub(crate) async fn jitter_spreads_expiry_of_entries_written_together(rig: &Rig) {
    let store = rig.store(config()).await;
    let entries: Vec<MemoryEntry> = (0..200)
        .map(|i| MemoryEntry::builder("j", format!("note {i}")).build().expect("valid"))
        .collect();
    let ids: Vec<String> =
        store.add_batch(entries).await.into_iter().map(|r| r.expect("added").to_string()).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let expiries: Vec<u64> = store
        .get_batch("j", &refs)
        .await
        .into_iter()
        .map(|r| r.expect("ok").expect("found").expires_at.expect("ttl").as_millis())
        .collect();
    let (min, max) =
        (expiries.iter().min().copied().unwrap_or(0), expiries.iter().max().copied().unwrap_or(0));
    let ttl = 4 * 3600 * 1000;
    assert!(max - min > ttl / 10, "spread {} ms is too small", max - min);
    let first = expiries[0];
    assert!(expiries.iter().all(|e| e.abs_diff(first) <= ttl / 5 + 1), "within ±10% of the TTL");
}

pub(crate) async fn ranking_orders_constructed_cases(rig: &Rig) {
    let mut c = config();
    c.memory.ranking.similarity = 1.0;
    c.memory.ranking.importance = 1.0;
    let store = rig.store(c).await;
    let near_unimportant = MemoryEntry::builder("r", "near")
        .embedding(vec![1.0, 0.0, 0.0, 0.0])
        .importance(0.0)
        .build()
        .expect("valid");
    let far_important = MemoryEntry::builder("r", "far")
        .embedding(vec![0.8, 0.6, 0.0, 0.0])
        .importance(1.0)
        .build()
        .expect("valid");
    let farther = MemoryEntry::builder("r", "farther")
        .embedding(vec![0.0, 1.0, 0.0, 0.0])
        .importance(0.5)
        .build()
        .expect("valid");
    for e in [near_unimportant, far_important, farther] {
        store.add(e).await.expect("add");
    }
    let q = MemoryQuery::new("r", vec![1.0, 0.0, 0.0, 0.0]).expect("query").k(3);
    let hits = store.query(q.clone()).await.expect("query");
    let order: Vec<&str> = hits.iter().map(|h| h.entry.content.as_str()).collect();
    assert_eq!(
        order,
        ["far", "near", "farther"],
        "importance lifts the farther but important memory"
    );
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    let again = store.query(q).await.expect("query");
    assert_eq!(hits, again, "deterministic for equal inputs");

    let pure = rig.store(config()).await;
    for (content, v) in
        [("b", [1.0, 0.1, 0.0, 0.0]), ("a", [1.0, 0.1, 0.0, 0.0]), ("c", [0.0, 1.0, 0.0, 0.0])]
    {
        pure.add(
            MemoryEntry::builder("r", content)
                .id(content)
                .embedding(v.to_vec())
                .build()
                .expect("valid"),
        )
        .await
        .expect("add");
    }
    let hits = pure
        .query(MemoryQuery::new("r", vec![1.0, 0.0, 0.0, 0.0]).expect("q").k(3))
        .await
        .expect("query");
    let order: Vec<&str> = hits.iter().map(|h| h.entry.id.as_str()).collect();
    assert_eq!(order, ["a", "b", "c"], "pure similarity: by distance, ties by id");
    assert!((hits[0].score - hits[0].similarity).abs() < 1e-12);
}

/// A configuration with full-text indexing on.
fn full_text_config() -> Config {
    let mut c = config();
    c.index.full_text = true;
    c
}

/// How many calls of `operation` the store's metrics counted.
fn calls(store: &MemoryStore, operation: &str) -> u64 {
    store.get_metrics().operations.iter().find(|o| o.operation == operation).map_or(0, |o| o.total)
}

pub(crate) async fn query_filters_by_type_tags_importance_time_and_text(rig: &Rig) {
    let store = rig.store(full_text_config()).await;
    let t0 = match rig {
        Rig::InProcess(clock) => clock_now(clock),
        Rig::Redis(..) => Timestamp::now(),
    };
    let mk = |content: &str, t: MemoryType, tag: &str, importance: f32| {
        MemoryEntry::builder("f", content)
            .memory_type(t)
            .tag(tag)
            .importance(importance)
            .embedding(vec![1.0, 0.2, 0.0, 0.0])
            .build()
            .expect("valid")
    };
    store.add(mk("alpha beta", MemoryType::Episodic, "x", 0.9)).await.expect("add");
    rig.step().await;
    store.add(mk("beta gamma", MemoryType::Semantic, "y", 0.2)).await.expect("add");
    let q = || MemoryQuery::new("f", vec![1.0, 0.0, 0.0, 0.0]).expect("q");
    let contents = |hits: Vec<engram_memory::ScoredMemory>| {
        hits.into_iter().map(|h| h.entry.content).collect::<Vec<_>>()
    };
    assert_eq!(
        contents(store.query(q().types([MemoryType::Semantic])).await.expect("q")),
        ["beta gamma"]
    );
    assert_eq!(contents(store.query(q().tags(["x"])).await.expect("q")), ["alpha beta"]);
    assert_eq!(contents(store.query(q().min_importance(0.5)).await.expect("q")), ["alpha beta"]);
    assert_eq!(
        contents(
            store
                .query(
                    q().created_between(
                        Some(t0.plus(Duration::from_millis(rig.step_ms() / 2))),
                        None
                    )
                )
                .await
                .expect("q")
        ),
        ["beta gamma"]
    );
    assert_eq!(contents(store.query(q().text("GAMMA")).await.expect("q")), ["beta gamma"]);
    assert_eq!(store.query(q().text("beta")).await.expect("q").len(), 2);
    assert!(
        store
            .query(MemoryQuery::new("other", vec![1.0; 4]).expect("q"))
            .await
            .expect("q")
            .is_empty(),
        "namespaces are separate"
    );
}

pub(crate) async fn text_filters_need_full_text_and_content_is_still_returned(rig: &Rig) {
    let c = config();
    let index = c.index.name.clone();
    let store = rig.store(c).await;
    assert!(
        store.schema().fields.iter().all(|f| f.kind != engram_storage::FieldKind::Text),
        "no TEXT field by default: {:?}",
        store.schema().fields
    );
    let id = store.add(entry("t", "alpha beta", [1.0, 0.0, 0.0, 0.0])).await.expect("add");
    let searches = calls(&store, "search");
    let q = MemoryQuery::new("t", vec![1.0, 0.0, 0.0, 0.0]).expect("q");
    match store.query(q.clone().text("alpha")).await {
        Err(e @ MemoryError::FullTextDisabled { .. }) => {
            let message = e.to_string();
            assert!(message.contains("index.full_text"), "{message}");
            assert!(message.contains(&index), "{message}");
        }
        other => panic!("a text filter without full text must be refused: {other:?}"),
    }
    assert_eq!(calls(&store, "search"), searches, "refused before any I/O");
    let hits = store.query(q).await.expect("query without a text filter");
    assert_eq!(hits[0].entry.content, "alpha beta", "the content is still in the payload");
    let got = store.get("t", id.as_str()).await.expect("get").expect("found");
    assert_eq!(got.content, "alpha beta");
    // A page may come back short (even empty) on Redis, where SCAN walks the whole keyspace.
    let mut listed = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list("t", cursor, 10).await.expect("list");
        listed.extend(page.entries.into_iter().map(|e| e.content));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(listed, ["alpha beta"]);
    let updated =
        store.update_with("t", id.as_str(), |e| e.content = "gamma".into()).await.expect("update");
    assert_eq!(updated.content, "gamma");
}

pub(crate) async fn a_full_text_setting_other_than_the_index_s_is_a_schema_mismatch(rig: &Rig) {
    for created_with in [false, true] {
        let mut c = config();
        c.index.full_text = created_with;
        let store = rig.store(c.clone()).await;
        let id = store.add(entry("s", "kept as it was", [1.0; 4])).await.expect("add");
        let mut other = c.clone();
        other.index.full_text = !created_with;
        match rig.try_store(other).await {
            Err(MemoryError::Storage(e)) => {
                assert_eq!(e.kind(), ErrorKind::SchemaMismatch, "{e}");
                assert!(e.message().contains("field \"content\""), "names the field: {e}");
                assert!(e.message().contains("index.full_text"), "names the setting: {e}");
            }
            other => panic!("full_text {} on an index without it: {other:?}", !created_with),
        }
        let again = rig.try_store(c).await.expect("the index is untouched");
        assert_eq!(again.schema(), store.schema());
        let got = again.get("s", id.as_str()).await.expect("get").expect("still there");
        assert_eq!(got.content, "kept as it was");
    }
}

pub(crate) async fn dedup_returns_the_existing_id(rig: &Rig) {
    let store = rig.store(config()).await;
    let first =
        store.add(entry("d", "remember the milk", [1.0, 0.0, 0.0, 0.0])).await.expect("add");
    let second =
        store.add(entry("d", "remember the milk", [0.0, 1.0, 0.0, 0.0])).await.expect("add");
    assert_eq!(first, second, "identical content returns the existing id");
    let other_ns = store.add(entry("e", "remember the milk", [1.0; 4])).await.expect("add");
    assert_ne!(other_ns, first, "namespaces do not dedup each other");
    let batch =
        store.add_batch(vec![entry("d", "twice", [1.0; 4]), entry("d", "twice", [1.0; 4])]).await;
    assert_eq!(
        batch[0].as_ref().expect("ok"),
        batch[1].as_ref().expect("ok"),
        "duplicates within a batch"
    );
    assert_eq!(store.count("d").await.expect("count"), 2);

    let mut c = config();
    c.memory.dedup.near_distance = Some(0.01);
    let near = rig.store(c).await;
    let a = near.add(entry("n", "the cat sat", [1.0, 0.0, 0.0, 0.0])).await.expect("add");
    let b = near.add(entry("n", "a cat was sitting", [1.0, 0.001, 0.0, 0.0])).await.expect("add");
    let c2 = near.add(entry("n", "dogs bark", [0.0, 1.0, 0.0, 0.0])).await.expect("add");
    assert_eq!(a, b, "a near duplicate returns the existing id");
    assert_ne!(a, c2);
}

pub(crate) async fn add_batch_looks_up_duplicates_once_per_namespace(rig: &Rig) {
    let store = rig.store(config()).await;
    let stored_one = store.add(entry("bd", "stored one", [1.0; 4])).await.expect("add");
    let stored_two = store.add(entry("be", "stored two", [1.0; 4])).await.expect("add");
    // Stored entries whose content comes again in the big batch below.
    let mut stored_fresh = Vec::new();
    for n in 0..20 {
        let e = entry("bd", &format!("fresh {n}"), [1.0; 4]);
        stored_fresh.push(store.add(e).await.expect("add"));
    }
    let (finds, searches, puts) =
        (calls(&store, "find"), calls(&store, "search"), calls(&store, "put"));

    // Each call makes entries with fresh ids.
    let make_batch = || {
        vec![
            entry("bd", "stored one", [0.0, 1.0, 0.0, 0.0]),
            entry("bd", "new a", [1.0; 4]),
            entry("bd", "new a", [0.0, 0.0, 1.0, 0.0]),
            entry("be", "stored two", [1.0; 4]),
            entry("be", "new a", [1.0; 4]),
            MemoryEntry { content: String::new(), ..entry("bd", "x", [1.0; 4]) },
            entry("bd", "new b", [1.0; 4]),
            entry("be", "new a", [1.0; 4]),
        ]
    };
    let batch = make_batch();
    let r = store.add_batch(batch.clone()).await;
    let ok = |i: usize| r[i].as_ref().unwrap_or_else(|e| panic!("item {i}: {e}")).clone();
    assert_eq!(ok(0), stored_one, "duplicate of a stored entry");
    assert_eq!(ok(1), batch[1].id, "new content is stored under its own id");
    assert_eq!(ok(2), ok(1), "duplicate of an earlier entry of the batch");
    assert_eq!(ok(3), stored_two, "duplicate of a stored entry of another namespace");
    assert_eq!(ok(4), batch[4].id, "namespaces do not dedup each other");
    assert_eq!(ok(7), ok(4));
    assert!(matches!(r[5], Err(MemoryError::Invalid { field: "content", .. })), "{:?}", r[5]);
    assert_eq!(ok(6), batch[6].id);
    assert_eq!(calls(&store, "find") - finds, 2, "one dedup lookup per namespace");
    assert_eq!(calls(&store, "search") - searches, 0, "near dedup is off");
    assert_eq!(calls(&store, "put") - puts, 1, "one write batch");
    assert_eq!(store.count("bd").await.expect("count"), 23);
    assert_eq!(store.count("be").await.expect("count"), 2);

    // The same contents again under new ids: every valid entry is a duplicate of a stored
    // one, nothing is written.
    let finds = calls(&store, "find");
    let again = store.add_batch(make_batch()).await;
    for i in [0, 1, 2, 3, 4, 6, 7] {
        assert_eq!(again[i].as_ref().expect("duplicate"), &ok(i), "item {i}");
    }
    assert_eq!(calls(&store, "find") - finds, 2);
    assert_eq!(calls(&store, "put") - puts, 1, "nothing left to write");

    // 300 distinct contents: two lookups of at most 256 hashes each.
    let finds = calls(&store, "find");
    let big: Vec<MemoryEntry> =
        (0..300).map(|n| entry("bd", &format!("fresh {n}"), [1.0; 4])).collect();
    let r = store.add_batch(big.clone()).await;
    for (n, (result, e)) in r.iter().zip(&big).enumerate() {
        let id = result.as_ref().unwrap_or_else(|err| panic!("item {n}: {err}"));
        let want = stored_fresh.get(n).unwrap_or(&e.id);
        assert_eq!(id, want, "item {n}");
    }
    assert_eq!(calls(&store, "find") - finds, 2, "one lookup per 256 distinct contents");
    assert_eq!(store.count("bd").await.expect("count"), 23 + 280);
}

pub(crate) async fn a_dedup_lookup_cut_at_its_limit_falls_back_per_entry(rig: &Rig) {
    // Forty copies of one content, stored while deduplication was off.
    let mut c = config();
    c.memory.dedup.exact = false;
    let loose = rig.store(c.clone()).await;
    let copies: Vec<MemoryEntry> = (0..40)
        .map(|n| {
            let mut e = entry("cut", "said forty times", [1.0; 4]);
            e.id = engram_memory::memory_id(&format!("a-{n:02}")).expect("id");
            e
        })
        .collect();
    assert!(loose.add_batch(copies).await.iter().all(Result::is_ok));
    let mut last = entry("cut", "said once", [1.0; 4]);
    last.id = engram_memory::memory_id("b-0").expect("id");
    loose.add(last).await.expect("add");

    c.memory.dedup.exact = true;
    let store = rig.try_store(c).await.expect("same index");
    let finds = calls(&store, "find");
    // The batched lookup of both hashes is cut at 2 × 16 records, all copies of the first
    // content (their ids sort first); the second content is then looked up alone.
    let r = store
        .add_batch(vec![
            entry("cut", "said forty times", [1.0; 4]),
            entry("cut", "said once", [1.0; 4]),
        ])
        .await;
    assert_eq!(r[0].as_ref().expect("dup").as_str(), "a-00", "the smallest id wins");
    assert_eq!(r[1].as_ref().expect("dup").as_str(), "b-0");
    assert_eq!(calls(&store, "find") - finds, 2);
    assert_eq!(store.count("cut").await.expect("count"), 41);
}

pub(crate) async fn concurrent_updates_lose_nothing(rig: &Rig) {
    let store = rig.store(config()).await;
    let id = store
        .add(MemoryEntry::builder("c", "counter").metadata("n", 0i64).build().expect("valid"))
        .await
        .expect("add");
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (store, id) = (store.clone(), id.to_string());
            tokio::spawn(async move {
                for _ in 0..25 {
                    store
                        .update_with("c", &id, |e| {
                            let n = match e.metadata.get("n") {
                                Some(engram_memory::MetadataValue::Int(n)) => *n,
                                _ => 0,
                            };
                            e.metadata.insert("n".into(), (n + 1).into());
                        })
                        .await
                        .expect("update");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let e = store.get("c", id.as_str()).await.expect("get").expect("found");
    assert_eq!(e.metadata.get("n"), Some(&engram_memory::MetadataValue::Int(50)), "no lost update");
    assert_eq!(e.version, 51);
}

pub(crate) async fn the_embedding_guard_refuses_another_model_or_dimension(rig: &Rig) {
    let mut c = config();
    c.index.embedding_model = Some("model-a".into());
    let store = rig.store(c.clone()).await;
    assert_eq!(store.embedding_model(), Some("model-a"));
    let q = MemoryQuery::new("g", vec![1.0; 4]).expect("q").model("model-b");
    assert!(matches!(store.query(q).await, Err(MemoryError::ModelMismatch { .. })));
    let q = MemoryQuery::new("g", vec![1.0; 4]).expect("q").model("model-a");
    assert!(store.query(q).await.is_ok());

    // A second store on the same index, with another model or dimension.
    let mut other = c.clone();
    other.index.embedding_model = Some("model-b".into());
    match rig.try_store(other).await {
        Err(MemoryError::ModelMismatch { expected, found }) => {
            assert_eq!((expected.as_str(), found.as_str()), ("model-a", "model-b"))
        }
        other => panic!("another model must be refused: {other:?}"),
    }
    let mut no_model = c.clone();
    no_model.index.embedding_model = None;
    let adopted = rig.try_store(no_model).await.expect("a store naming no model takes the index's");
    assert_eq!(adopted.embedding_model(), Some("model-a"));
    let mut dim = c;
    dim.index.dimension = 8;
    match rig.try_store(dim).await {
        Err(MemoryError::Storage(e)) => assert_eq!(e.kind(), ErrorKind::SchemaMismatch),
        other => panic!("another dimension must be refused: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_and_health_come_from_the_stack() {
    let mut c = config();
    c.health.enabled = true;
    c.health.interval = Duration::from_millis(50);
    c.health.timeout = Duration::from_millis(50);
    let (store, _) = in_memory(c).await;
    let id = store.add(entry("m", "x", [1.0; 4])).await.expect("add");
    let gets = |m: &engram_memory::StoreMetrics| {
        m.operations.iter().find(|o| o.operation == "get").map_or(0, |o| o.total)
    };
    let before = gets(&store.get_metrics());
    for _ in 0..3 {
        store.get("m", id.as_str()).await.expect("get");
    }
    let metrics = store.get_metrics();
    let get = metrics.operations.iter().find(|o| o.operation == "get").expect("get measured");
    assert_eq!((get.total - before, get.errors), (3, 0));
    let touch = metrics.operations.iter().find(|o| o.operation == "touch").expect("touch measured");
    assert_eq!(touch.total, 3, "each get records one access");
    assert_eq!(get.success_rate, 1.0);
    assert!(get.p99 >= get.mean.min(get.p99));
    assert!(metrics.breaker.is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let health = store.get_health_status().await;
    let report = health.health.expect("health enabled");
    assert_eq!(report.status, engram_resilience::HealthStatus::Healthy, "{report:?}");
    assert_eq!(health.backend.expect("describe").backend, "in-process");
}

#[test]
fn the_blocking_facade_works_without_a_runtime() {
    let store =
        engram_memory::blocking::MemoryStore::with_config_in_memory(config()).expect("store");
    let id = store.add(entry("b", "blocking works", [1.0, 0.0, 0.0, 0.0])).expect("add");
    let hits = store
        .query(MemoryQuery::new("b", vec![1.0, 0.0, 0.0, 0.0]).expect("q").k(1))
        .expect("query");
    assert_eq!(hits[0].entry.id, id);
    assert!(store.delete("b", id.as_str()).expect("delete"));
}
