//! The bad-input suite, against a Redis Stack of its own so that the server's command counters
//! are this suite's alone: every hostile id, namespace, tag, embedding, k, TTL, importance,
//! size and range is refused with a typed error before any command is sent (`INFO
//! commandstats` unchanged), nothing is stored (`DBSIZE`, `num_docs` and
//! `hash_indexing_failures` unchanged) and nothing panics. Valid but hostile tag values round
//! trip and match exactly, and fuzzed tags and namespaces never let a result cross a namespace.

mod support;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use anyhow::{Result, ensure};
use engram_memory::{MemoryEntry, MemoryError, MemoryQuery, MemoryStore, MetadataValue, Timestamp};
use proptest::prelude::*;
use support::{Admin, OwnServer, ServerOptions, figure, index_name};

const DIM: usize = 8;

fn unit(i: usize) -> Vec<f32> {
    (0..DIM).map(|d| if d == i % DIM { 1.0 } else { 0.1 }).collect()
}

/// A store on a server of the test's own, with its admin connection.
struct Fixture {
    server: OwnServer,
    store: MemoryStore,
    index: String,
}

async fn fixture(test: &str) -> Result<Option<Fixture>> {
    let Some(server) = OwnServer::start(test, ServerOptions::default())? else {
        return Ok(None);
    };
    let index = index_name(test);
    let config = server.config(&index, DIM as u32);
    let store = MemoryStore::connect(config).await?;
    Ok(Some(Fixture { server, store, index }))
}

/// What the server holds and has done, for the zero-command oracle.
#[derive(Debug, PartialEq)]
struct Footprint {
    commands: u64,
    keys: i64,
    docs: String,
    failures: String,
}

fn footprint(admin: &mut Admin, index: &str) -> Result<Footprint> {
    // Read the counters first: the other reads are commands too (`dbsize`, `ft.info`).
    let commands = admin.commandstats()?.total_except(&["info", "dbsize", "ft.info"]);
    Ok(Footprint {
        commands,
        keys: admin.dbsize()?,
        docs: admin.ft_info(index, "num_docs")?,
        failures: admin.ft_info(index, "hash_indexing_failures")?,
    })
}

type Call = Pin<Box<dyn Future<Output = Result<(), MemoryError>> + Send>>;

/// Which error a case expects.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// `MemoryError::Invalid` naming this field.
    Invalid(&'static str),
    /// `MemoryError::DimensionMismatch`.
    Dimension,
}

fn matches(want: Want, e: &MemoryError) -> bool {
    match (want, e) {
        (Want::Invalid(f), MemoryError::Invalid { field, .. }) => *field == f,
        (Want::Dimension, MemoryError::DimensionMismatch { .. }) => true,
        _ => false,
    }
}

fn hostile_strings() -> Vec<(&'static str, String)> {
    vec![
        ("colon", "a:b".into()),
        ("star", "a*".into()),
        ("open brace", "{a".into()),
        ("close brace", "a}".into()),
        ("pipe", "a|b".into()),
        ("at", "@a".into()),
        ("space", "a b".into()),
        ("double quote", "a\"b".into()),
        ("single quote", "a'b".into()),
        ("backslash", "a\\b".into()),
        ("newline", "a\nb".into()),
        ("unicode", "mémoire".into()),
        ("empty", String::new()),
        ("1 MiB", "x".repeat(1 << 20)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_before_any_command_and_stores_nothing() -> Result<()> {
    let test = "bad_input_refused";
    let Some(f) = fixture(test).await? else {
        return Ok(());
    };
    let store = f.store.clone();
    let ns = "bad-input";
    let ok = || MemoryEntry::builder(ns, "a valid memory").embedding(unit(0));
    // One valid entry, so that reads and queries have something they could have found.
    store.add(ok().id("valid-1").build()?).await?;
    let mut cases: Vec<(String, Want, Call)> = Vec::new();
    let mut push = |name: String, want: Want, call: Call| cases.push((name, want, call));

    for (what, s) in hostile_strings() {
        // `:` is valid in ids (but not in namespaces).
        if what != "colon" {
            let st = store.clone();
            let id = s.clone();
            push(
                format!("add with id {what}"),
                Want::Invalid("id"),
                Box::pin(async move {
                    let e = MemoryEntry::builder(ns, "x").id(id).embedding(unit(0)).build()?;
                    st.add(e).await.map(drop)
                }),
            );
            let (st, id) = (store.clone(), s.clone());
            push(
                format!("get id {what}"),
                Want::Invalid("id"),
                Box::pin(async move { st.get(ns, &id).await.map(drop) }),
            );
            let (st, id) = (store.clone(), s.clone());
            push(
                format!("delete id {what}"),
                Want::Invalid("id"),
                Box::pin(async move { st.delete(ns, &id).await.map(drop) }),
            );
        }
        let (st, n) = (store.clone(), s.clone());
        push(
            format!("add to namespace {what}"),
            Want::Invalid("namespace"),
            Box::pin(async move {
                let e = MemoryEntry::builder(&n, "x").embedding(unit(0)).build()?;
                st.add(e).await.map(drop)
            }),
        );
        let (st, n) = (store.clone(), s.clone());
        push(
            format!("count namespace {what}"),
            Want::Invalid("namespace"),
            Box::pin(async move { st.count(&n).await.map(drop) }),
        );
        let (st, n) = (store.clone(), s.clone());
        push(
            format!("query namespace {what}"),
            Want::Invalid("namespace"),
            Box::pin(async move { st.query(MemoryQuery::new(&n, unit(0))?).await.map(drop) }),
        );
    }
    let reserved = store.clone();
    push(
        "add to the reserved namespace".into(),
        Want::Invalid("namespace"),
        Box::pin(async move {
            reserved.add(MemoryEntry::builder("__engram", "x").build()?).await.map(drop)
        }),
    );
    // Tags that are refused: empty, too long, control characters, edge whitespace.
    for (what, tag) in [
        ("empty", String::new()),
        ("1 MiB", "t".repeat(1 << 20)),
        ("newline", "a\nb".into()),
        ("leading space", " a".into()),
    ] {
        let st = store.clone();
        push(
            format!("add with tag {what}"),
            Want::Invalid("tags"),
            Box::pin(async move { st.add(ok().tag(tag).build()?).await.map(drop) }),
        );
    }
    let st = store.clone();
    push(
        "add with 257 tags".into(),
        Want::Invalid("tags"),
        Box::pin(async move {
            st.add(ok().tags((0..257).map(|i| format!("t{i}"))).build()?).await.map(drop)
        }),
    );
    // Embeddings.
    let bad_vectors: Vec<(&str, Vec<f32>, Want)> = vec![
        (
            "NaN",
            {
                let mut v = unit(0);
                v[3] = f32::NAN;
                v
            },
            Want::Invalid("embedding"),
        ),
        (
            "infinity",
            {
                let mut v = unit(0);
                v[1] = f32::INFINITY;
                v
            },
            Want::Invalid("embedding"),
        ),
        (
            "minus infinity",
            {
                let mut v = unit(0);
                v[1] = f32::NEG_INFINITY;
                v
            },
            Want::Invalid("embedding"),
        ),
        ("zero vector under COSINE", vec![0.0; DIM], Want::Invalid("embedding")),
        ("wrong dimension", vec![1.0; DIM - 1], Want::Dimension),
        ("empty", Vec::new(), Want::Invalid("embedding")),
    ];
    for (what, v, want) in bad_vectors {
        let (st, v2) = (store.clone(), v.clone());
        push(
            format!("add embedding {what}"),
            want,
            Box::pin(async move {
                st.add(MemoryEntry::builder(ns, "x").embedding(v2).build()?).await.map(drop)
            }),
        );
        let st = store.clone();
        push(
            format!("query embedding {what}"),
            want,
            Box::pin(async move { st.query(MemoryQuery::new(ns, v)?).await.map(drop) }),
        );
    }
    for k in [0usize, 1_000_000_000] {
        let st = store.clone();
        push(
            format!("query k {k}"),
            Want::Invalid("k"),
            Box::pin(async move { st.query(MemoryQuery::new(ns, unit(0))?.k(k)).await.map(drop) }),
        );
    }
    let now = Timestamp::now().as_millis();
    for (what, at) in
        [("negative TTL", now.saturating_sub(60_000)), ("zero TTL", now), ("epoch", 0)]
    {
        let st = store.clone();
        push(
            format!("add with {what}"),
            Want::Invalid("expires_at"),
            Box::pin(
                async move { st.add(ok().expires_at(Timestamp(at)).build()?).await.map(drop) },
            ),
        );
    }
    for imp in [-0.1f32, 1.5, f32::NAN, f32::INFINITY] {
        let st = store.clone();
        push(
            format!("add importance {imp}"),
            Want::Invalid("importance"),
            Box::pin(async move { st.add(ok().importance(imp).build()?).await.map(drop) }),
        );
        let st = store.clone();
        push(
            format!("query min importance {imp}"),
            Want::Invalid("importance"),
            Box::pin(async move {
                st.query(MemoryQuery::new(ns, unit(0))?.min_importance(imp)).await.map(drop)
            }),
        );
    }
    for (what, content) in [
        ("oversize content", "c".repeat((1 << 20) + 1)),
        ("empty content", String::new()),
        ("blank content", " \n\t".into()),
    ] {
        let st = store.clone();
        push(
            format!("add {what}"),
            Want::Invalid("content"),
            Box::pin(async move {
                st.add(MemoryEntry::builder(ns, content).embedding(unit(0)).build()?)
                    .await
                    .map(drop)
            }),
        );
    }
    let st = store.clone();
    push(
        "add 257 metadata keys".into(),
        Want::Invalid("metadata"),
        Box::pin(async move {
            let mut b = ok();
            for i in 0..257 {
                b = b.metadata(format!("k{i}"), MetadataValue::Int(i));
            }
            st.add(b.build()?).await.map(drop)
        }),
    );
    for (what, key) in
        [("empty metadata key", String::new()), ("129-byte metadata key", "k".repeat(129))]
    {
        let st = store.clone();
        push(
            format!("add {what}"),
            Want::Invalid("metadata"),
            Box::pin(async move { st.add(ok().metadata(key, "v").build()?).await.map(drop) }),
        );
    }
    let st = store.clone();
    push(
        "query importance 0.9..=0.1".into(),
        Want::Invalid("query"),
        Box::pin(async move {
            let q = MemoryQuery::new(ns, unit(0))?.min_importance(0.9).max_importance(0.1);
            st.query(q).await.map(drop)
        }),
    );
    let st = store.clone();
    push(
        "query created from after before".into(),
        Want::Invalid("query"),
        Box::pin(async move {
            let q = MemoryQuery::new(ns, unit(0))?
                .created_between(Some(Timestamp(2_000_000)), Some(Timestamp(1_000_000)));
            st.query(q).await.map(drop)
        }),
    );
    let st = store.clone();
    push(
        "query with an empty tag".into(),
        Want::Invalid("query"),
        Box::pin(
            async move { st.query(MemoryQuery::new(ns, unit(0))?.tags([""])).await.map(drop) },
        ),
    );

    let mut admin = f.server.admin()?;
    let tried = cases.len();
    let mut wrong: Vec<String> = Vec::new();
    let mut by_error: BTreeMap<String, usize> = BTreeMap::new();
    for (name, want, call) in cases {
        let before = footprint(&mut admin, &f.index)?;
        let outcome = tokio::spawn(call).await;
        let after = footprint(&mut admin, &f.index)?;
        match outcome {
            Err(panic) => wrong.push(format!("{name}: panicked ({panic})")),
            Ok(Ok(())) => wrong.push(format!("{name}: accepted")),
            Ok(Err(e)) if !matches(want, &e) => {
                wrong.push(format!("{name}: expected {want:?}, found {e}"))
            }
            Ok(Err(e)) => {
                let kind = match &e {
                    MemoryError::Invalid { field, .. } => format!("invalid {field}"),
                    other => format!("{other:?}").split([' ', '{']).next().unwrap_or("").to_owned(),
                };
                *by_error.entry(kind).or_default() += 1;
                if e.to_string().len() > 400 {
                    wrong.push(format!(
                        "{name}: the message echoes the input ({} bytes)",
                        e.to_string().len()
                    ));
                }
            }
        }
        if before != after {
            wrong.push(format!("{name}: the server changed: {before:?} -> {after:?}"));
        }
    }
    figure(test, "bad_inputs_tried", tried, "cases");
    figure(test, "bad_inputs_rejected_before_io", tried - wrong.len(), "cases");
    figure(test, "rejections_by_error", format!("{by_error:?}"), "cases");
    ensure!(wrong.is_empty(), "{} of {tried} cases went wrong:\n{}", wrong.len(), wrong.join("\n"));
    Ok(())
}

/// Tag values that are valid, however hostile to RediSearch's query syntax.
fn hostile_tags() -> Vec<String> {
    [
        "a:b",
        "a*",
        "*",
        "{a}",
        "a|b",
        "|",
        "@a",
        "a-b",
        "-",
        "a b",
        "\"q\"",
        "'s'",
        "a\\b",
        "mémoire",
        "日本語",
        "emoji 🙂",
        "$x",
        "a,b",
        "(a)",
        "[a]",
        "~a",
        "%",
        "a.b",
        "-1",
        "1e9",
    ]
    .into_iter()
    .map(String::from)
    .chain(std::iter::once("x".repeat(256)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tag_values_round_trip_and_match_only_themselves() -> Result<()> {
    let test = "hostile_tags";
    let Some(f) = fixture(test).await? else {
        return Ok(());
    };
    let ns = "tags";
    let tags = hostile_tags();
    let entries: Vec<MemoryEntry> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| {
            MemoryEntry::builder(ns, format!("entry {i}"))
                .id(format!("t{i}"))
                .tag(t.clone())
                .embedding(unit(i))
                .build()
        })
        .collect::<Result<_, _>>()?;
    for r in f.store.add_batch(entries).await {
        r?;
    }
    let mut wrong = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        let stored = f.store.get(ns, &format!("t{i}")).await?;
        if stored.as_ref().map(|e| e.tags.clone()) != Some(vec![t.clone()]) {
            wrong.push(format!("{t:?} did not round-trip: {:?}", stored.map(|e| e.tags)));
        }
        let hits = f.store.query(MemoryQuery::new(ns, unit(i))?.k(50).tags([t.clone()])).await?;
        let ids: Vec<String> = hits.iter().map(|h| h.entry.id.to_string()).collect();
        if ids != vec![format!("t{i}")] {
            wrong.push(format!("tag {t:?} matched {ids:?}"));
        }
    }
    figure(test, "hostile_tags_tried", tags.len(), "tags");
    figure(test, "hostile_tags_wrong", wrong.len(), "tags");
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

#[test]
fn fuzzed_tags_and_namespaces_never_return_a_record_of_another_namespace() -> Result<()> {
    let test = "fuzz_namespaces";
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let Some(f) = rt.block_on(fixture(test))? else {
        return Ok(());
    };
    let admin = RefCell::new(f.server.admin()?);
    let prefix = format!("{}:", f.index);
    let checked = Cell::new(0usize);
    let case = Cell::new(0usize);
    let config =
        ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let tag = "[a-zA-Z0-9:*{}|@\\-\"'\\\\ é日🙂.,$~]{1,24}"
        .prop_filter("no edge whitespace", |t| t.trim() == t);
    let ns = "[A-Za-z0-9_-]{1,12}".prop_filter("not reserved", |n| !n.starts_with("__"));
    let result = runner.run(&(tag, ns.clone(), ns), |(tag, a, b)| {
        prop_assume!(a != b);
        // Unique content per case: identical content would be deduplicated to an entry of an
        // earlier case (with other tags).
        case.set(case.get() + 1);
        let n = case.get();
        let store = f.store.clone();
        let hits = rt.block_on(async move {
            for (ns, content) in [(&a, format!("in {a} #{n}")), (&b, format!("in {b} #{n}"))] {
                let e = MemoryEntry::builder(ns, content)
                    .tag(tag.clone())
                    .embedding(unit(3))
                    .build()?;
                store.add(e).await?;
            }
            let hits =
                store.query(MemoryQuery::new(&a, unit(3))?.k(100).tags([tag.clone()])).await?;
            Ok::<_, MemoryError>((a, hits))
        });
        let (a, hits) = hits.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!hits.is_empty(), "the entry of {} was not found by its tag", a);
        for h in &hits {
            // The raw key must be in the queried namespace, and hold that namespace's entry.
            let key = format!("{prefix}{}:{}", h.entry.namespace, h.entry.id);
            prop_assert!(key.starts_with(&format!("{prefix}{a}:")), "{} is not in {}", key, a);
            let exists = admin
                .borrow_mut()
                .ok(&["EXISTS", &key])
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(exists.int(), Some(1), "{} does not exist", key);
            prop_assert!(
                h.entry.content.starts_with(&format!("in {a} #")),
                "{} holds {:?}",
                key,
                h.entry.content
            );
            checked.set(checked.get() + 1);
        }
        Ok(())
    });
    figure(test, "results_checked_by_raw_key", checked.get(), "results");
    result.map_err(|e| anyhow::anyhow!("{e}"))
}
