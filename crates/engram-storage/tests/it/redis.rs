//! The Redis Stack backend: the conformance suite, then what only a real server shows (index
//! mismatch, rejected input leaving no trace, hostile tag values, TTLs, per-item pipeline
//! failures, script reloads, the timeout policy). Every test uses its own index and key
//! prefix and removes them afterwards (`FT.DROPINDEX ... DD` and `SCAN`/`DEL` of the prefix).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use engram_config::test_support::require_server;
use engram_config::{RedisConfig, RedisUrl};
use engram_storage::redis::{
    DEFAULT_BATCH_SIZE, RawReply, RedisBackend, RedisBackendOptions, RedisConnection,
};
use engram_storage::testkit::conformance::record;
use engram_storage::testkit::{BackendFactory, random_namespace, suite_schema};
use engram_storage::{
    Algorithm, ErrorKind, FieldValue, Filter, HnswParams, IndexSchema, Namespace, QueryPlan,
    Record, RecordId, StorageBackend, StorageBackendExt, Timestamp, VectorQuery,
};

fn config(url: RedisUrl) -> RedisConfig {
    RedisConfig { url, connect_timeout: Duration::from_secs(3), ..RedisConfig::default() }
}

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Drops the index with its documents and deletes any key left under its prefix.
async fn remove_all(conn: &RedisConnection, schema: &IndexSchema) -> Result<()> {
    // The index may never have been created; anything else is a real failure.
    if let Err(e) = conn.raw_command("FT.DROPINDEX", vec![b(&schema.name), b("DD")]).await {
        ensure!(e.kind() == ErrorKind::IndexMissing, "FT.DROPINDEX: {e}");
    }
    let pattern = format!("{}*", schema.key_prefix);
    let mut cursor = "0".to_owned();
    loop {
        let reply = conn
            .raw_command("SCAN", vec![b(&cursor), b("MATCH"), b(&pattern), b("COUNT"), b("1000")])
            .await?;
        let RawReply::Array(parts) = reply else { anyhow::bail!("SCAN reply {reply:?}") };
        let next = parts.first().and_then(RawReply::as_text).context("SCAN cursor")?.to_owned();
        if let Some(RawReply::Array(keys)) = parts.get(1)
            && !keys.is_empty()
        {
            let keys = keys.iter().filter_map(|k| k.as_text().map(b)).collect();
            conn.raw_command("DEL", keys).await?;
        }
        if next == "0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// Redis backends, bare or behind the full layer stack.
struct RedisFactory {
    through_the_stack: bool,
}

#[async_trait]
impl BackendFactory for RedisFactory {
    fn available(&self, behaviour: &str) -> bool {
        require_server(behaviour).is_some()
    }

    async fn create(&self, _schema: &IndexSchema) -> Result<Arc<dyn StorageBackend>> {
        let url = require_server("redis conformance").context("no server")?;
        let backend =
            Arc::new(RedisBackend::connect(&config(url), RedisBackendOptions::default()).await?);
        Ok(if self.through_the_stack {
            engram_storage::testkit::full_stack(backend)
        } else {
            backend
        })
    }

    async fn cleanup(&self, _backend: Arc<dyn StorageBackend>, schema: &IndexSchema) -> Result<()> {
        let url = require_server("redis conformance cleanup").context("no server")?;
        let conn = RedisConnection::connect(&config(url)).await?;
        let result = remove_all(&conn, schema).await;
        conn.disconnect().await;
        result
    }
}

engram_storage::conformance_tests!(RedisFactory { through_the_stack: false });

/// The same suite through the full layer stack around the Redis backend, whose reads the stack
/// holds unboxed.
mod through_the_stack {
    use super::RedisFactory;

    engram_storage::conformance_tests!(RedisFactory { through_the_stack: true });
}

/// What a Redis-specific test gets: a backend with the suite's index ensured.
#[derive(Clone)]
struct Ctx {
    backend: Arc<RedisBackend>,
    schema: IndexSchema,
    ns: Namespace,
    other: Namespace,
}

impl Ctx {
    async fn raw(&self, name: &str, args: Vec<Vec<u8>>) -> Result<RawReply> {
        Ok(self.backend.connection().raw_command(name, args).await?)
    }

    fn key(&self, ns: &Namespace, id: &str) -> String {
        format!("{}{}:{}", self.schema.key_prefix, ns, id)
    }

    async fn failures(&self) -> Result<u64> {
        let info = self.backend.describe().await?;
        Ok(info.index.context("no index stats")?.indexing_failures)
    }
}

/// Runs `body` on a fresh backend and index, then removes both, also when `body` fails.
async fn with_backend<F, Fut>(name: &str, options: RedisBackendOptions, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let Some(url) = require_server(name) else {
        return;
    };
    let backend = Arc::new(
        RedisBackend::connect(&config(url), options).await.expect("connects to the test server"),
    );
    let schema = suite_schema();
    let ctx = Ctx { backend, schema, ns: random_namespace(), other: random_namespace() };
    let outcome = async {
        ctx.backend.ensure_index(&ctx.schema).await.context("ensure_index")?;
        body(ctx.clone()).await
    }
    .await;
    let cleaned = remove_all(ctx.backend.connection(), &ctx.schema).await;
    if let Err(e) = outcome {
        panic!("{name} failed: {e:#}");
    }
    cleaned.expect("cleanup");
}

fn id(s: &str) -> RecordId {
    RecordId::new(s).expect("valid id")
}

#[tokio::test]
async fn an_existing_index_with_another_dimension_is_a_schema_mismatch() {
    with_backend(
        "an_existing_index_with_another_dimension_is_a_schema_mismatch",
        Default::default(),
        |c| async move {
            c.backend.put(record(&c.ns, "kept", [1.0, 0.0, 0.0, 0.0])).await?;
            let url = require_server("mismatch").context("server")?;
            let second =
                RedisBackend::connect(&config(url), RedisBackendOptions::default()).await?;
            let mut other = c.schema.clone();
            other.vector.dimension = 8;
            let e = second.ensure_index(&other).await.err().context("dimension 8 accepted")?;
            ensure!(e.kind() == ErrorKind::SchemaMismatch, "{e}");
            ensure!(e.message().contains("dimension: wanted 8, index has 4"), "{e}");
            // The same schema from another process is accepted, and nothing was dropped.
            ensure!(
                second.ensure_index(&c.schema).await? == engram_storage::IndexStatus::Existing,
                "same schema"
            );
            ensure!(second.get(&c.ns, &id("kept")).await?.is_some(), "data lost");
            ensure!(c.backend.count(&c.ns).await? == 1, "count after mismatch");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_wrong_size_vector_is_rejected_before_sending() {
    with_backend(
        "a_wrong_size_vector_is_rejected_before_sending",
        Default::default(),
        |c| async move {
            let mut bad = record(&c.ns, "bad", [1.0, 0.0, 0.0, 0.0]);
            bad.vector = Some(vec![1.0; 5]);
            let report = c.backend.put_batch(vec![bad]).await;
            let e = report.items[0].err().context("wrong size accepted")?;
            ensure!(e.kind() == ErrorKind::DimensionMismatch, "{e}");
            let exists = c.raw("EXISTS", vec![b(&c.key(&c.ns, "bad"))]).await?;
            ensure!(exists.as_i64() == Some(0), "a rejected record reached the server");
            ensure!(c.failures().await? == 0, "indexing failures after a rejected put");

            // What validation prevents: a blob of the wrong size written directly is stored but
            // not indexed, and only hash_indexing_failures (reported by describe) shows it.
            let key = c.key(&c.ns, "raw");
            c.raw(
                "HSET",
                vec![
                    b(&key),
                    b("__ns"),
                    b(c.ns.as_str()),
                    b("__exp"),
                    b("inf"),
                    b("__ver"),
                    b("1"),
                    b("__vec"),
                    vec![0u8; 7],
                ],
            )
            .await?;
            ensure!(c.failures().await? == 1, "describe does not report the indexing failure");
            ensure!(c.backend.count(&c.ns).await? == 0, "an unindexed hash was counted");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn hostile_tag_values_match_only_themselves_in_the_callers_namespace() {
    with_backend(
        "hostile_tag_values_match_only_themselves_in_the_callers_namespace",
        Default::default(),
        |c| async move {
            let hostile = [
                "}",
                "|",
                ")",
                "(",
                "@",
                "*",
                "=>",
                "-",
                "x} | @__ns:{*",
                "a b",
                "-neg",
                "$p",
                "\\",
                "\"q\"",
                "'",
                "{}",
                "%x%",
                "~x",
                "a,b",
                "a.b",
                "@__ns:{ns}",
                "*}=>[KNN 10 @__vec $BLOB]",
                "été",
                "日本 語",
                "a\u{a0}b",
                "in side",
            ];
            let mut mine = Vec::new();
            for (i, tag) in hostile.iter().enumerate() {
                mine.push(
                    record(&c.ns, &format!("m{i:02}"), [1.0, i as f32, 0.0, 0.0])
                        .with_field("kind", FieldValue::Tags(vec![(*tag).to_owned()])),
                );
            }
            let mut theirs = Vec::new();
            for (i, tag) in hostile.iter().enumerate() {
                theirs.push(
                    record(&c.other, &format!("t{i:02}"), [1.0, i as f32, 0.0, 0.0])
                        .with_field("kind", FieldValue::Tags(vec![(*tag).to_owned()])),
                );
            }
            let report = c.backend.put_batch(mine.into_iter().chain(theirs).collect()).await;
            ensure!(report.all_succeeded(), "{:?}", report.failures().collect::<Vec<_>>());
            let mut wrong = Vec::new();
            for (i, tag) in hostile.iter().enumerate() {
                let q = VectorQuery::new(c.ns.clone(), vec![1.0, 0.0, 0.0, 0.0], 100)
                    .with_filter(Filter::tag_eq("kind", *tag));
                let hits = c.backend.search(&q).await.with_context(|| format!("search {tag:?}"))?;
                let ids: Vec<&str> = hits.iter().map(|h| h.record.id.as_str()).collect();
                let want = format!("m{i:02}");
                if ids != [want.as_str()] {
                    wrong.push(format!("search {tag:?} matched {ids:?}"));
                }
                let found = c.backend.find(&c.ns, &Filter::tag_eq("kind", *tag), 100).await?;
                let ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
                if ids != [want.as_str()] {
                    wrong.push(format!("find {tag:?} matched {ids:?}"));
                }
            }
            ensure!(wrong.is_empty(), "{wrong:#?}");
            // RediSearch trims tags when it indexes them: such tags are refused, not lost.
            for tag in [" ", " lead", "trail "] {
                let r = record(&c.ns, "ws", [1.0; 4])
                    .with_field("kind", FieldValue::Tags(vec![tag.to_owned()]));
                let report = c.backend.put_batch(vec![r]).await;
                let e = report.items[0].err().with_context(|| format!("tag {tag:?} accepted"))?;
                ensure!(e.kind() == ErrorKind::InvalidInput, "{e}");
            }
            // Text keeps only its words: operators around them are dropped, not obeyed.
            let q = VectorQuery::new(c.ns.clone(), vec![1.0; 4], 100)
                .with_filter(Filter::text("body", "(fox)|{*}=>[ -@{"));
            let hits = c.backend.search(&q).await.context("text with operators")?;
            ensure!(
                hits.len() == hostile.len() && hits.iter().all(|h| h.record.namespace == c.ns),
                "text with operators gave {} hits",
                hits.len()
            );
            let q = VectorQuery::new(c.ns.clone(), vec![1.0; 4], 10)
                .with_filter(Filter::text("body", "}) | @{*} =>"));
            let e = c.backend.search(&q).await.err().context("a wordless text clause was sent")?;
            ensure!(e.kind() == ErrorKind::InvalidInput, "{e}");
            // Namespaces with query syntax cannot even be made.
            for bad in ["a}", "a|b", "a)", "@a", "*", "a=>b", "a b"] {
                ensure!(Namespace::new(bad).is_err(), "namespace {bad:?} accepted");
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_hash_past_its_expiry_is_hidden_before_redis_deletes_it() {
    with_backend(
        "a_hash_past_its_expiry_is_hidden_before_redis_deletes_it",
        Default::default(),
        |c| async move {
            c.backend.put(record(&c.ns, "live", [0.9, 0.1, 0.0, 0.0])).await?;
            // As a record looks between its expiry time and Redis deleting it: __exp in the past,
            // the key still there.
            let past = Timestamp::now().as_millis() - 1_000;
            let key = c.key(&c.ns, "stale");
            c.raw(
                "HSET",
                vec![
                    b(&key),
                    b("__ns"),
                    b(c.ns.as_str()),
                    b("__exp"),
                    b(&past.to_string()),
                    b("__ver"),
                    b("1"),
                    b("__vec"),
                    [1.0f32, 0.0, 0.0, 0.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
                ],
            )
            .await?;
            ensure!(c.backend.get(&c.ns, &id("stale")).await?.is_none(), "get returned it");
            let hits = c
                .backend
                .search(&VectorQuery::new(c.ns.clone(), vec![1.0, 0.0, 0.0, 0.0], 10))
                .await?;
            ensure!(hits.len() == 1 && hits[0].record.id.as_str() == "live", "search returned it");
            // The stale record is the nearest: a search for one neighbour first gets it alone
            // (no expiry clause), drops it, and must ask again to find the live one.
            let hits = c
                .backend
                .search(&VectorQuery::new(c.ns.clone(), vec![1.0, 0.0, 0.0, 0.0], 1))
                .await?;
            ensure!(
                hits.len() == 1 && hits[0].record.id.as_str() == "live",
                "a search for one neighbour returned {hits:?}"
            );
            ensure!(c.backend.count(&c.ns).await? == 1, "count included it");
            ensure!(
                c.backend.touch(&c.ns, &id("stale"), Timestamp::now(), None).await?.is_none(),
                "touch found it"
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn touch_refreshes_the_server_ttl() {
    with_backend("touch_refreshes_the_server_ttl", Default::default(), |c| async move {
        let now = Timestamp::now();
        let r =
            record(&c.ns, "t", [1.0, 0.0, 0.0, 0.0]).with_expiry(now.plus(Duration::from_secs(5)));
        c.backend.put(r).await?;
        let key = c.key(&c.ns, "t");
        let pttl = c.raw("PTTL", vec![b(&key)]).await?.as_i64().context("PTTL")?;
        ensure!((1..=5_000).contains(&pttl), "PTTL after put {pttl}");
        let t = c
            .backend
            .touch(&c.ns, &id("t"), Timestamp::now(), Some(Duration::from_secs(600)))
            .await?;
        ensure!(t.is_some(), "touch found nothing");
        let pttl = c.raw("PTTL", vec![b(&key)]).await?.as_i64().context("PTTL")?;
        ensure!(pttl > 590_000, "PTTL after touch {pttl}");
        // A record without expiry stays without one; a touch with a TTL gives it one.
        c.backend.put(record(&c.ns, "forever", [1.0; 4])).await?;
        let key = c.key(&c.ns, "forever");
        ensure!(
            c.raw("PTTL", vec![b(&key)]).await?.as_i64() == Some(-1),
            "expiry on a record without one"
        );
        c.backend
            .touch(&c.ns, &id("forever"), Timestamp::now(), Some(Duration::from_secs(60)))
            .await?;
        let pttl = c.raw("PTTL", vec![b(&key)]).await?.as_i64().context("PTTL")?;
        ensure!(pttl > 50_000, "PTTL after touch {pttl}");
        // Touching a missing record creates nothing.
        ensure!(
            c.backend
                .touch(&c.ns, &id("nope"), Timestamp::now(), Some(Duration::from_secs(60)))
                .await?
                .is_none(),
            "touch of nothing"
        );
        let exists = c.raw("EXISTS", vec![b(&c.key(&c.ns, "nope"))]).await?;
        ensure!(exists.as_i64() == Some(0), "touch created a key");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn compare_and_set_refuses_a_stale_version_under_concurrency() {
    with_backend(
        "compare_and_set_refuses_a_stale_version_under_concurrency",
        Default::default(),
        |c| async move {
            let r = record(&c.ns, "c", [1.0, 0.0, 0.0, 0.0]).with_version(1);
            c.backend.compare_and_set(r.clone(), None).await?;
            let attempts = (0..8).map(|i| {
                let backend = c.backend.clone();
                let mut next = r.clone().with_version(2);
                next.payload = format!("writer {i}").into_bytes();
                tokio::spawn(async move { backend.compare_and_set(next, Some(1)).await })
            });
            let mut won = 0;
            for a in attempts {
                match a.await? {
                    Ok(()) => won += 1,
                    Err(e) => ensure!(e.kind() == ErrorKind::Conflict, "{e}"),
                }
            }
            ensure!(won == 1, "{won} writers won the same version");
            let e = c
                .backend
                .compare_and_set(r.clone().with_version(5), Some(1))
                .await
                .err()
                .context("stale accepted")?;
            ensure!(e.kind() == ErrorKind::Conflict && e.message().contains("version 2"), "{e}");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_partial_pipeline_failure_is_reported_per_item() {
    with_backend(
        "a_partial_pipeline_failure_is_reported_per_item",
        RedisBackendOptions { batch_chunk: 2, ..Default::default() },
        |c| async move {
            // A key of another type where record "b" would go: its write fails, the others not.
            let key_b = c.key(&c.ns, "b");
            c.raw("SET", vec![b(&key_b), b("not a hash")]).await?;
            let records: Vec<Record> = ["a", "b", "c", "d", "e"]
                .iter()
                .map(|n| record(&c.ns, n, [1.0, 0.5, 0.0, 0.0]))
                .collect();
            let report = c.backend.put_batch(records).await;
            let ok: Vec<bool> = report.items.iter().map(|o| o.ok().is_some()).collect();
            ensure!(ok == [true, false, true, true, true], "outcomes {:?}", report.items);
            let e = report.items[1].err().context("b should fail")?;
            ensure!(e.kind() == ErrorKind::Unexpected && e.message().contains("WRONGTYPE"), "{e}");
            for n in ["a", "c", "d", "e"] {
                ensure!(c.backend.get(&c.ns, &id(n)).await?.is_some(), "{n} missing");
            }
            let kept = c.raw("GET", vec![b(&key_b)]).await?;
            ensure!(kept.as_text() == Some("not a hash"), "the foreign key was overwritten");
            let gets = c.backend.get_batch(&c.ns, &[id("a"), id("b")]).await;
            ensure!(gets.items[0].ok().is_some_and(Option::is_some), "get a");
            ensure!(
                gets.items[1].err().is_some(),
                "get of a string key should fail alone: {:?}",
                gets.items[1]
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_overwrite_leaves_no_old_field_and_no_old_expiry_on_the_server() {
    with_backend(
        "an_overwrite_leaves_no_old_field_and_no_old_expiry_on_the_server",
        Default::default(),
        |c| async move {
            let mut full = record(&c.ns, "o", [1.0, 0.0, 0.0, 0.0])
                .with_expiry(Timestamp::now().plus(Duration::from_secs(600)));
            full.access.last_access = Some(Timestamp(1_700_000_000_000));
            c.backend.put(full).await?;
            let key = c.key(&c.ns, "o");
            let pttl = c.raw("PTTL", vec![b(&key)]).await?.as_i64().context("PTTL")?;
            ensure!(pttl > 590_000, "PTTL after the first put {pttl}");
            // In one batch with others, so that the write goes through the pipelined path.
            let bare = Record::new(c.ns.clone(), id("o"), b"bare".to_vec());
            let report =
                c.backend.put_batch(vec![record(&c.ns, "p", [1.0; 4]), bare.clone()]).await;
            ensure!(report.all_succeeded(), "{:?}", report.items);
            let names: Vec<String> = match c.raw("HKEYS", vec![b(&key)]).await? {
                RawReply::Array(items) => {
                    items.iter().filter_map(|v| v.as_text().map(str::to_owned)).collect()
                }
                other => anyhow::bail!("HKEYS gave {other:?}"),
            };
            for gone in ["kind", "score", "created", "body", "__vec"] {
                ensure!(
                    !names.iter().any(|n| n == gone),
                    "{gone} survived the overwrite: {names:?}"
                );
            }
            // Never touched: written empty.
            let acc_t = c.raw("HGET", vec![b(&key), b("__acc_t")]).await?;
            ensure!(acc_t.as_text() == Some(""), "__acc_t survived the overwrite: {acc_t:?}");
            let pttl = c.raw("PTTL", vec![b(&key)]).await?.as_i64();
            ensure!(pttl == Some(-1), "the old expiry survived the overwrite: PTTL {pttl:?}");
            ensure!(c.backend.get(&c.ns, &id("o")).await? == Some(bare), "get after overwrite");
            ensure!(c.failures().await? == 0, "indexing failures");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn scripts_are_reloaded_after_script_flush() {
    with_backend("scripts_are_reloaded_after_script_flush", Default::default(), |c| async move {
        c.backend.put(record(&c.ns, "s", [1.0, 0.0, 0.0, 0.0])).await?;
        c.raw("SCRIPT", vec![b("FLUSH")]).await?;
        let t = c.backend.touch(&c.ns, &id("s"), Timestamp::now(), None).await?;
        ensure!(t.map(|t| t.access.count) == Some(1), "touch after SCRIPT FLUSH: {t:?}");
        c.raw("SCRIPT", vec![b("FLUSH")]).await?;
        let report = c
            .backend
            .put_batch(vec![record(&c.ns, "s2", [1.0; 4]), record(&c.ns, "s3", [1.0; 4])])
            .await;
        ensure!(report.all_succeeded(), "put after SCRIPT FLUSH: {:?}", report.items);
        c.raw("SCRIPT", vec![b("FLUSH")]).await?;
        c.backend
            .compare_and_set(record(&c.ns, "s4", [1.0; 4]), None)
            .await
            .context("cas after SCRIPT FLUSH")?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn ensure_index_makes_query_timeouts_errors_and_describe_reports_the_server() {
    with_backend(
        "ensure_index_makes_query_timeouts_errors_and_describe_reports_the_server",
        Default::default(),
        |c| async move {
            let reply = c.raw("FT.CONFIG", vec![b("GET"), b("ON_TIMEOUT")]).await?;
            let policy = match &reply {
                RawReply::Array(pairs) => match pairs.first() {
                    Some(RawReply::Array(kv)) => kv.get(1).and_then(RawReply::as_text),
                    _ => None,
                },
                _ => None,
            };
            ensure!(policy == Some("fail"), "ON_TIMEOUT {reply:?}");
            let info = c.backend.describe().await?;
            ensure!(info.backend == "redis", "{info:?}");
            ensure!(info.server_version.as_deref().is_some_and(|v| !v.is_empty()), "{info:?}");
            for key in ["modules", "used_memory", "connected_clients"] {
                ensure!(
                    info.details.iter().any(|(k, _)| k == key),
                    "details lack {key}: {:?}",
                    info.details
                );
            }
            let index = info.index.context("no index stats")?;
            ensure!(index.percent_indexed > 0.99, "{index:?}");
            Ok(())
        },
    )
    .await;
}

/// Every plan on an HNSW index returns the exact neighbours of a small filtered set, and `Auto`
/// picks brute force below the threshold, batches for a small share of the index above it,
/// and the server's plan when most of the index passes.
#[tokio::test]
async fn every_plan_finds_the_filtered_neighbours_and_auto_picks_by_size() {
    let Some(url) =
        require_server("every_plan_finds_the_filtered_neighbours_and_auto_picks_by_size")
    else {
        return;
    };
    let mut schema = suite_schema();
    schema.vector.algorithm =
        Algorithm::Hnsw(HnswParams { m: 16, ef_construction: 200, ef_runtime: 50 });
    let ns = random_namespace();
    let options = RedisBackendOptions { brute_force_below: 10, ..Default::default() };
    let backend = RedisBackend::connect(&config(url), options).await.expect("connects");
    let outcome = async {
        backend.ensure_index(&schema).await?;
        // 60 records on a circle, so that every distance differs: 6 tagged `tiny`, 18 `rare`.
        let records: Vec<Record> = (0..60u16)
            .map(|i| {
                let a = f32::from(i) * 0.1;
                let kind = match (i % 10, i % 3) {
                    (0, _) => "tiny",
                    (_, 0) => "rare",
                    _ => "common",
                };
                record(&ns, &format!("r{i:02}"), [a.cos(), a.sin(), 0.3, 0.1])
                    .with_field("kind", FieldValue::Tags(vec![kind.into()]))
            })
            .collect();
        let report = backend.put_batch(records.clone()).await;
        ensure!(report.all_succeeded(), "put: {:?}", report.failures().collect::<Vec<_>>());
        let probe = vec![1.0, 0.2, 0.3, 0.1];
        let exact = |kind: Option<&str>| {
            let mut d: Vec<(f64, String)> = records
                .iter()
                .filter(|r| {
                    kind.is_none_or(|k| {
                        r.fields.get("kind") == Some(&FieldValue::Tags(vec![k.into()]))
                    })
                })
                .map(|r| {
                    let v = r.vector.as_ref().expect("vector");
                    let d = engram_storage::vector::distance(schema.vector.metric, &probe, v);
                    (f64::from(d), r.id.as_str().to_owned())
                })
                .collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            d.into_iter().take(5).map(|(_, id)| id).collect::<Vec<_>>()
        };
        for (kind, n) in [(Some("tiny"), 6), (Some("rare"), 18), (None, 60)] {
            let want = exact(kind);
            for plan in [
                QueryPlan::Auto,
                QueryPlan::Server,
                QueryPlan::BruteForce,
                QueryPlan::Batches { size: 5 },
            ] {
                let mut q = VectorQuery::new(ns.clone(), probe.clone(), 5).with_plan(plan);
                if let Some(k) = kind {
                    q = q.with_filter(Filter::tag_eq("kind", k));
                }
                let got: Vec<String> = backend
                    .search(&q)
                    .await?
                    .into_iter()
                    .map(|h| h.record.id.as_str().to_owned())
                    .collect();
                ensure!(got == want, "{plan:?} over {n} records: {got:?}, want {want:?}");
                let cmd = backend.search_command(&q).await?;
                let text = String::from_utf8_lossy(&cmd[1]).into_owned();
                // The plan, and the EF_RUNTIME sent (the index's is 50).
                let (expected, ef) = match (plan, n) {
                    (QueryPlan::Server, _) => (String::new(), Some(50)),
                    (QueryPlan::BruteForce, _) | (QueryPlan::Auto, 6) => {
                        ("HYBRID_POLICY ADHOC_BF".to_owned(), None)
                    }
                    // At least k: a batch of 5 for k 5, searched with an EF_RUNTIME of 5.
                    (QueryPlan::Batches { .. }, _) => {
                        ("HYBRID_POLICY BATCHES BATCH_SIZE 5 ".to_owned(), Some(5))
                    }
                    // 18 of 60 pass: batches of the default size.
                    (QueryPlan::Auto, 18) => (
                        format!("HYBRID_POLICY BATCHES BATCH_SIZE {DEFAULT_BATCH_SIZE} "),
                        Some(DEFAULT_BATCH_SIZE.min(50)),
                    ),
                    // The whole index passes: the server's plan.
                    (QueryPlan::Auto, _) => (String::new(), Some(50)),
                };
                ensure!(text.contains(&expected), "{plan:?} over {n} records sent {text}");
                let sent_ef = cmd
                    .iter()
                    .position(|a| a.as_slice() == b"EF")
                    .and_then(|i| cmd.get(i + 1))
                    .map(|v| String::from_utf8_lossy(v).parse::<u32>())
                    .transpose()?;
                ensure!(sent_ef == ef, "{plan:?} over {n} records sent EF_RUNTIME {sent_ef:?}");
                ensure!(
                    !text.contains("__exp"),
                    "the first search leaves expiry to the client: {text}"
                );
                if plan == QueryPlan::Server || (plan == QueryPlan::Auto && n == 60) {
                    ensure!(!text.contains("HYBRID_POLICY"), "the server's plan sent {text}");
                }
            }
        }
        let bad = VectorQuery::new(ns.clone(), probe.clone(), 5)
            .with_plan(QueryPlan::Batches { size: 0 });
        let e = backend.search(&bad).await.expect_err("a batch size of 0");
        ensure!(e.kind() == ErrorKind::InvalidInput, "{e}");
        Ok(())
    }
    .await;
    let cleaned = remove_all(backend.connection(), &schema).await;
    if let Err(e) = outcome {
        panic!("every_plan_finds_the_filtered_neighbours_and_auto_picks_by_size: {e:#}");
    }
    cleaned.expect("cleanup");
}
