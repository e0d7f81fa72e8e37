//! Logs: a full run with every log line captured, searched for secrets and content.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engram_config::{Config, RedisUrl, Secret};
use engram_memory::{MemoryEntry, MemoryQuery, MemoryStore, StoreOptions};
use engram_storage::InProcessBackend;

const PASSWORD: &str = "pw-LEAK-CHECK-4f1d9";
const CONTENT: &str = "CONTENT-MARKER-81c2 the agent's private note";
/// A component of the embeddings, with digits that no timing figure in a log line repeats by
/// chance (a plain `0.75` once matched `duration_ms=0.750799`).
const EMBEDDING_MARKER: f32 = 0.314_159_27;

/// A writer that appends to a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn full_run(store: &MemoryStore, ns: &str) {
    let e = MemoryEntry::builder(ns, CONTENT)
        .embedding(vec![0.25, 0.5, EMBEDDING_MARKER, 1.0])
        .tag("secret-tag-value")
        .build()
        .expect("valid");
    let id = store.add(e).await.expect("add");
    let _ = store.get(ns, id.as_str()).await.expect("get");
    let _ = store
        .query(
            MemoryQuery::new(ns, vec![0.25, 0.5, EMBEDDING_MARKER, 1.0])
                .expect("q")
                .text("private"),
        )
        .await
        .expect("query");
    let _ = store.update_with(ns, id.as_str(), |e| e.importance = 0.9).await.expect("update");
    let bad = MemoryEntry::builder(ns, CONTENT)
        .embedding(vec![1.0; 3])
        .build()
        .expect("valid without index");
    assert!(store.add(bad).await.is_err());
    let _ = store.list(ns, None, 10).await.expect("list");
    assert!(store.delete(ns, id.as_str()).await.expect("delete"));
    let _ = store.get_health_status().await;
}

fn config() -> Config {
    let mut c = Config::default();
    c.index.dimension = 4;
    c.index.name = format!("engram-logs-{}", engram_storage::testkit_token());
    c.index.key_prefix = format!("{}:", c.index.name);
    // The run filters by text, so the content is indexed (and must still stay out of logs).
    c.index.full_text = true;
    c.health.interval = Duration::from_millis(20);
    c.health.timeout = Duration::from_millis(20);
    // Every operation is "slow", so that every one logs its WARN line.
    c.observability.slow_operation_threshold = Duration::from_nanos(1);
    c
}

#[test]
fn no_secret_or_content_in_any_log_line() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // tracing-core caches each callsite's interest. While only one dispatcher exists it
    // asks the *registering thread's* default, so a span callsite first reached by a test
    // running in parallel (with no subscriber) would be cached as "never" and this
    // subscriber would see no spans. A second live dispatcher makes tracing-core combine
    // the interest of every registered dispatcher instead, this one included; its creation
    // also rebuilds the interest of every callsite registered before.
    let dispatch = tracing::Dispatch::new(subscriber);
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::dispatcher::with_default(&dispatch, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            // In-process, with credentials configured (never used, never shown).
            let mut c = config();
            c.redis.url = RedisUrl::new(format!("redis://app:{PASSWORD}@127.0.0.1:1"));
            let store = MemoryStore::with_backend(
                c.clone(),
                Arc::new(InProcessBackend::new()),
                StoreOptions::default(),
            )
            .await
            .expect("store");
            full_run(&store, "logs-a").await;
            tokio::time::sleep(Duration::from_millis(60)).await;
            let shown = format!("{c:?} {:?}", store.get_health_status().await);
            assert!(!shown.contains(PASSWORD), "Debug shows the password");

            // Redis, when the test server is there: a full run, and a refused login.
            if let Some(url) =
                engram_config::test_support::require_server("no_secret_or_content_in_any_log_line")
            {
                let mut c = config();
                c.redis.url = url.clone();
                let store = MemoryStore::connect(c.clone()).await.expect("connect");
                full_run(&store, "logs-b").await;
                let mut wrong = c;
                wrong.redis.username = Some("engram-nobody".into());
                wrong.redis.password = Some(Secret::new(PASSWORD));
                let e = MemoryStore::connect(wrong).await.expect_err("unknown user");
                assert!(!format!("{e} {e:?}").contains(PASSWORD), "the error shows the password");
            }
        });
    });
    let text = String::from_utf8_lossy(
        &capture.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(text.contains("slow storage operation"), "nothing was captured:\n{text}");
    assert!(
        text.contains("db.operation.name") && text.contains("db.system.name"),
        "spans carry OpenTelemetry fields:\n{text}"
    );
    for needle in [PASSWORD, "CONTENT-MARKER", "private note", "secret-tag-value", "0.3141592"] {
        assert!(!text.contains(needle), "`{needle}` appears in the logs:\n{text}");
    }
}
