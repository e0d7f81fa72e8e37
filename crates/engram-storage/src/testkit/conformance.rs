//! The conformance suite: one async function per behaviour, each naming its steps.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use super::{BackendFactory, random_namespace, suite_schema};
use crate::backend::{IndexStatus, MAX_K, StorageBackend, StorageBackendExt, VectorQuery};
use crate::error::ErrorKind;
use crate::filter::Filter;
use crate::ids::{Namespace, RecordId};
use crate::record::{FieldValue, Record, Timestamp};
use crate::schema::IndexSchema;

/// What a behaviour gets: a backend with the suite's index ensured, and two namespaces.
pub struct Fixture {
    /// The backend under test.
    pub backend: Arc<dyn StorageBackend>,
    /// The suite's schema (fresh names).
    pub schema: IndexSchema,
    /// The namespace the behaviour works in.
    pub ns: Namespace,
    /// Another namespace, for isolation checks.
    pub other: Namespace,
}

/// A behaviour of the suite.
pub type Behaviour = for<'a> fn(&'a Fixture) -> futures_lite_box::BoxFuture<'a, Result<()>>;

/// Minimal boxed-future alias, to keep the test kit free of extra dependencies.
pub mod futures_lite_box {
    /// A boxed, sendable future.
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// Runs one behaviour on a fresh backend and cleans up; panics with the failing step.
pub async fn run(factory: &dyn BackendFactory, name: &str, behaviour: Behaviour) {
    if !factory.available(name) {
        return;
    }
    let schema = suite_schema();
    let backend = match factory.create(&schema).await {
        Ok(b) => b,
        Err(e) => panic!("{name}: creating the backend failed: {e:#}"),
    };
    let fixture = Fixture {
        backend: backend.clone(),
        schema: schema.clone(),
        ns: random_namespace(),
        other: random_namespace(),
    };
    let outcome = async {
        let status =
            fixture.backend.ensure_index(&schema).await.context("ensure_index on a fresh index")?;
        ensure!(status == IndexStatus::Created, "a fresh index should be created, got {status:?}");
        behaviour(&fixture).await
    }
    .await;
    let cleaned = factory.cleanup(backend, &schema).await;
    if let Err(e) = outcome {
        panic!("{name} failed: {e:#}");
    }
    if let Err(e) = cleaned {
        panic!("{name}: cleanup failed: {e:#}");
    }
}

fn id(s: &str) -> RecordId {
    RecordId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

/// A valid record of the suite's schema.
pub fn record(ns: &Namespace, name: &str, v: [f32; 4]) -> Record {
    Record::new(ns.clone(), id(name), format!("payload of {name}").into_bytes())
        .with_vector(v.to_vec())
        .with_field("kind", FieldValue::Tags(vec!["fact".into()]))
        .with_field("score", FieldValue::Numeric(0.5))
        .with_field("created", FieldValue::Numeric(1_700_000_000_000.0))
        .with_field("body", FieldValue::Text("the quick brown fox".into()))
}

async fn put_all(b: &dyn StorageBackend, records: Vec<Record>) -> Result<()> {
    let n = records.len();
    let report = b.put_batch(records).await;
    ensure!(
        report.all_succeeded(),
        "put of {n} records: {:?}",
        report.failures().collect::<Vec<_>>()
    );
    Ok(())
}

async fn search_ids(b: &dyn StorageBackend, q: VectorQuery) -> Result<Vec<String>> {
    Ok(b.search(&q).await?.into_iter().map(|h| h.record.id.as_str().to_owned()).collect())
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

/// Put, get, overwrite, delete.
pub async fn crud_round_trip(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let r = record(&f.ns, "a", [1.0, 0.0, 0.0, 0.0]);
    b.put(r.clone()).await.context("put")?;
    let got = b.get(&f.ns, &r.id).await.context("get after put")?;
    ensure!(got.as_ref() == Some(&r), "get returned {got:?}, expected the record as written");

    let mut r2 =
        r.clone().with_version(2).with_expiry(Timestamp::now().plus(Duration::from_secs(3600)));
    r2.payload = vec![0, 159, 146, 150, 255];
    r2.fields.insert("kind".into(), FieldValue::Tags(vec!["a|b c".into(), "{x}".into()]));
    r2.access.count = 3;
    r2.access.last_access = Some(Timestamp(1_700_000_000_123));
    b.put(r2.clone()).await.context("overwrite")?;
    let got = b.get(&f.ns, &r.id).await.context("get after overwrite")?;
    ensure!(got.as_ref() == Some(&r2), "overwrite: got {got:?}");

    // An overwrite replaces the whole record: the fields, vector, access time and expiry it
    // does not set are gone, also from the index.
    let r3 = Record::new(f.ns.clone(), r.id.clone(), b"bare".to_vec()).with_version(3);
    b.put(r3.clone()).await.context("overwrite with less")?;
    let got = b.get(&f.ns, &r.id).await.context("get after overwrite with less")?;
    ensure!(got.as_ref() == Some(&r3), "overwrite with less: got {got:?}");
    let found = b.find(&f.ns, &Filter::tag_eq("kind", "a|b c"), 10).await.context("find")?;
    ensure!(found.is_empty(), "a dropped tag still finds the record: {found:?}");

    ensure!(
        b.delete(&f.ns, &r.id).await.context("delete")?,
        "delete of an existing record says false"
    );
    ensure!(
        b.get(&f.ns, &r.id).await.context("get after delete")?.is_none(),
        "deleted record still readable"
    );
    ensure!(!b.delete(&f.ns, &r.id).await.context("second delete")?, "second delete says true");
    Ok(())
}

/// Batches report per item: a bad record fails alone; gets report hits and misses.
pub async fn batch_reports_each_item(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let good1 = record(&f.ns, "good1", [1.0, 0.0, 0.0, 0.0]);
    let mut bad = record(&f.ns, "bad", [1.0, 0.0, 0.0, 0.0]);
    bad.vector = Some(vec![1.0, 2.0]);
    let good2 = record(&f.ns, "good2", [0.0, 1.0, 0.0, 0.0]);
    let report = b.put_batch(vec![good1.clone(), bad, good2.clone()]).await;
    ensure!(report.len() == 3, "report has {} items", report.len());
    ensure!(
        report.items[0].ok().is_some() && report.items[2].ok().is_some(),
        "good items: {:?}",
        report.items
    );
    let err = report.items[1].err().context("the bad item should fail")?;
    ensure!(err.kind() == ErrorKind::DimensionMismatch, "bad item failed with {err}");

    let gets =
        b.get_batch(&f.ns, &[good1.id.clone(), id("bad"), id("missing"), good2.id.clone()]).await;
    let hits: Vec<bool> = gets.items.iter().map(|o| matches!(o.ok(), Some(Some(_)))).collect();
    ensure!(hits == [true, false, false, true], "hit pattern {hits:?}");
    ensure!(b.count(&f.ns).await.context("count")? == 2, "count after partial batch");

    let dels = b.delete_batch(&f.ns, &[good1.id.clone(), id("missing")]).await;
    let existed: Vec<Option<bool>> = dels.items.iter().map(|o| o.ok().copied()).collect();
    ensure!(existed == [Some(true), Some(false)], "delete results {existed:?}");
    let empty = b.put_batch(vec![]).await;
    ensure!(empty.is_empty() && empty.all_succeeded(), "an empty batch is an empty report");
    Ok(())
}

/// An expired record disappears from get, search, count and scan.
pub async fn ttl_expiry(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let now = Timestamp::now();
    let past = record(&f.ns, "past", [1.0, 0.0, 0.0, 0.0])
        .with_expiry(Timestamp(now.0.saturating_sub(1_000)));
    let soon = record(&f.ns, "soon", [1.0, 0.1, 0.0, 0.0])
        .with_expiry(now.plus(Duration::from_millis(700)));
    let keep = record(&f.ns, "keep", [1.0, 0.2, 0.0, 0.0]);
    put_all(b, vec![past, soon.clone(), keep]).await.context("put")?;
    ensure!(
        b.get(&f.ns, &id("past")).await?.is_none(),
        "a record written already expired is readable"
    );
    let got = b.get(&f.ns, &id("soon")).await.context("get before expiry")?;
    ensure!(got.as_ref().and_then(|r| r.expires_at) == soon.expires_at, "expiry not kept: {got:?}");
    let q = VectorQuery::new(f.ns.clone(), vec![1.0, 0.0, 0.0, 0.0], 10);
    ensure!(
        set(&["soon", "keep"]) == search_ids(b, q.clone()).await?.into_iter().collect(),
        "search before expiry"
    );

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    ensure!(
        b.get(&f.ns, &id("soon")).await.context("get after expiry")?.is_none(),
        "expired record readable"
    );
    ensure!(
        search_ids(b, q).await.context("search after expiry")? == ["keep"],
        "expired record in search results"
    );
    ensure!(b.count(&f.ns).await.context("count after expiry")? == 1, "expired record counted");
    ensure!(
        b.scan_all(&f.ns, 10).await.context("scan after expiry")? == [id("keep")],
        "expired record scanned"
    );
    Ok(())
}

/// Touch counts accesses, sets the last access and moves the expiry; a missing record is `None`.
pub async fn touch_counts_and_refreshes(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let now = Timestamp::now();
    let r = record(&f.ns, "t", [1.0, 0.0, 0.0, 0.0]).with_expiry(now.plus(Duration::from_secs(2)));
    b.put(r.clone()).await.context("put")?;
    let t1 = b
        .touch(&f.ns, &r.id, now, None)
        .await
        .context("touch without ttl")?
        .context("touch found nothing")?;
    ensure!(t1.access.count == 1 && t1.access.last_access == Some(now), "first touch {t1:?}");
    ensure!(t1.expires_at == r.expires_at, "touch without ttl changed expiry: {t1:?}");
    let later = now.plus(Duration::from_millis(500));
    let t2 = b
        .touch(&f.ns, &r.id, later, Some(Duration::from_secs(60)))
        .await
        .context("touch with ttl")?
        .context("missing")?;
    ensure!(t2.access.count == 2 && t2.access.last_access == Some(later), "second touch {t2:?}");
    ensure!(t2.expires_at == Some(later.plus(Duration::from_secs(60))), "expiry not moved: {t2:?}");
    let stored = b.get(&f.ns, &r.id).await?.context("record gone after touch")?;
    ensure!(stored.access == t2.access && stored.expires_at == t2.expires_at, "stored {stored:?}");
    ensure!(stored.payload == r.payload && stored.vector == r.vector, "touch changed the data");

    tokio::time::sleep(Duration::from_millis(2_300)).await;
    ensure!(
        b.get(&f.ns, &r.id).await.context("get after old expiry")?.is_some(),
        "refreshed TTL not honoured"
    );
    ensure!(
        b.touch(&f.ns, &id("nope"), now, None).await.context("touch missing")?.is_none(),
        "touch of a missing record"
    );
    ensure!(b.get(&f.ns, &id("nope")).await?.is_none(), "touch created a record");
    Ok(())
}

/// Compare-and-set refuses stale versions and creates only when absent.
pub async fn compare_and_set_versions(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let r1 = record(&f.ns, "c", [1.0, 0.0, 0.0, 0.0]).with_version(1);
    b.compare_and_set(r1.clone(), None).await.context("create when absent")?;
    let e = b
        .compare_and_set(r1.clone(), None)
        .await
        .err()
        .context("create over an existing record succeeded")?;
    ensure!(e.kind() == ErrorKind::Conflict, "create over existing: {e}");
    let mut r2 = r1.clone().with_version(2);
    r2.payload = b"second".to_vec();
    let e = b
        .compare_and_set(r2.clone().with_version(8), Some(7))
        .await
        .err()
        .context("stale version accepted")?;
    ensure!(e.kind() == ErrorKind::Conflict, "stale version: {e}");
    b.compare_and_set(r2.clone(), Some(1)).await.context("update at the right version")?;
    let got = b.get(&f.ns, &r1.id).await?.context("record missing")?;
    ensure!(got.version == 2 && got.payload == b"second", "after update {got:?}");
    let e = b
        .compare_and_set(r2.clone().with_version(2), Some(2))
        .await
        .err()
        .context("version not moving forward accepted")?;
    ensure!(e.kind() == ErrorKind::InvalidInput, "non-increasing version: {e}");
    let e = b
        .compare_and_set(record(&f.ns, "d", [1.0; 4]).with_version(2), Some(1))
        .await
        .err()
        .context("update of a missing record")?;
    ensure!(e.kind() == ErrorKind::Conflict, "missing record: {e}");
    Ok(())
}

/// Every filter operator, through search.
pub async fn filter_operators(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let mk = |name: &str, kind: &[&str], score: f64, created: f64, body: &str| {
        record(&f.ns, name, [1.0, score as f32, 0.0, 0.0])
            .with_field("kind", FieldValue::Tags(kind.iter().map(|s| (*s).to_owned()).collect()))
            .with_field("score", FieldValue::Numeric(score))
            .with_field("created", FieldValue::Numeric(created))
            .with_field("body", FieldValue::Text(body.into()))
    };
    put_all(
        b,
        vec![
            mk("r1", &["fact"], 0.1, 1000.0, "alpha beta"),
            mk("r2", &["event", "a|b c"], 0.5, 2000.0, "beta gamma"),
            mk("r3", &["Fact"], 0.9, 3000.0, "gamma delta"),
            mk("r4", &["{x}-y"], 1.0, 4000.0, "delta alpha"),
        ],
    )
    .await?;
    let q = |filter: Filter| {
        VectorQuery::new(f.ns.clone(), vec![1.0, 0.5, 0.0, 0.0], 10).with_filter(filter)
    };
    let cases: Vec<(&str, Filter, &[&str])> = vec![
        ("tag eq", Filter::tag_eq("kind", "fact"), &["r1"]),
        ("tag case", Filter::tag_eq("kind", "Fact"), &["r3"]),
        ("tag with separators", Filter::tag_eq("kind", "a|b c"), &["r2"]),
        ("tag with braces", Filter::tag_eq("kind", "{x}-y"), &["r4"]),
        ("tag in", Filter::tag_in("kind", ["event", "Fact"]), &["r2", "r3"]),
        (
            "range inclusive",
            Filter::range("score", Bound::Included(0.5), Bound::Included(0.9)),
            &["r2", "r3"],
        ),
        (
            "range exclusive",
            Filter::range("score", Bound::Excluded(0.5), Bound::Excluded(1.0)),
            &["r3"],
        ),
        ("range open low", Filter::range("score", Bound::Unbounded, Bound::Included(0.1)), &["r1"]),
        (
            "range open high",
            Filter::range("score", Bound::Excluded(0.9), Bound::Unbounded),
            &["r4"],
        ),
        (
            "time range",
            Filter::time_range(
                "created",
                Bound::Included(Timestamp(2000)),
                Bound::Excluded(Timestamp(4000)),
            ),
            &["r2", "r3"],
        ),
        ("text", Filter::text("body", "alpha"), &["r1", "r4"]),
        ("text all words", Filter::text("body", "Gamma, BETA"), &["r2"]),
        (
            "and",
            Filter::and([
                Filter::text("body", "gamma"),
                Filter::range("score", Bound::Included(0.6), Bound::Unbounded),
            ]),
            &["r3"],
        ),
        (
            "or",
            Filter::or([Filter::tag_eq("kind", "fact"), Filter::tag_eq("kind", "{x}-y")]),
            &["r1", "r4"],
        ),
        ("not", Filter::not(Filter::text("body", "alpha")), &["r2", "r3"]),
        (
            "not and",
            Filter::and([
                Filter::not(Filter::tag_eq("kind", "fact")),
                Filter::text("body", "delta"),
            ]),
            &["r3", "r4"],
        ),
    ];
    for (name, filter, want) in cases {
        let got: BTreeSet<String> = search_ids(b, q(filter))
            .await
            .with_context(|| format!("search with {name}"))?
            .into_iter()
            .collect();
        ensure!(got == set(want), "{name}: got {got:?}, want {want:?}");
    }
    Ok(())
}

/// Results sorted by distance then id; k bounds.
pub async fn knn_ordering_and_k(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    put_all(
        b,
        vec![
            record(&f.ns, "far", [0.0, 1.0, 0.0, 0.0]),
            record(&f.ns, "near", [1.0, 0.1, 0.0, 0.0]),
            record(&f.ns, "tie-b", [1.0, 0.5, 0.0, 0.0]),
            record(&f.ns, "tie-a", [2.0, 1.0, 0.0, 0.0]),
            record(&f.ns, "exact", [3.0, 0.0, 0.0, 0.0]),
            Record::new(f.ns.clone(), id("novector"), vec![]),
        ],
    )
    .await?;
    let query = vec![1.0, 0.0, 0.0, 0.0];
    let hits = b
        .search(&VectorQuery::new(f.ns.clone(), query.clone(), 10))
        .await
        .context("search k=10")?;
    let ids: Vec<&str> = hits.iter().map(|h| h.record.id.as_str()).collect();
    ensure!(ids == ["exact", "near", "tie-a", "tie-b", "far"], "order {ids:?}");
    ensure!(hits.windows(2).all(|w| w[0].distance <= w[1].distance), "distances not ascending");
    ensure!(hits[0].distance.abs() < 1e-5, "exact match distance {}", hits[0].distance);
    ensure!((hits[4].distance - 1.0).abs() < 1e-5, "orthogonal distance {}", hits[4].distance);
    ensure!(hits[0].record.payload == b"payload of exact", "hit carries the payload");
    let one =
        search_ids(b, VectorQuery::new(f.ns.clone(), query.clone(), 1)).await.context("k=1")?;
    ensure!(one == ["exact"], "k=1 gave {one:?}");
    for k in [0, MAX_K + 1] {
        let e = b
            .search(&VectorQuery::new(f.ns.clone(), query.clone(), k))
            .await
            .err()
            .with_context(|| format!("k={k} accepted"))?;
        ensure!(e.kind() == ErrorKind::InvalidInput, "k={k}: {e}");
    }
    Ok(())
}

/// Only results within the distance threshold.
pub async fn distance_threshold(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    put_all(
        b,
        vec![
            record(&f.ns, "same", [1.0, 0.0, 0.0, 0.0]),
            record(&f.ns, "close", [1.0, 0.2, 0.0, 0.0]),
            record(&f.ns, "orthogonal", [0.0, 1.0, 0.0, 0.0]),
        ],
    )
    .await?;
    let q = VectorQuery::new(f.ns.clone(), vec![1.0, 0.0, 0.0, 0.0], 10);
    let got = search_ids(b, q.clone().with_max_distance(0.1)).await.context("threshold 0.1")?;
    ensure!(got == ["same", "close"], "threshold 0.1 gave {got:?}");
    let got = search_ids(b, q.clone().with_max_distance(0.0001)).await.context("threshold ~0")?;
    ensure!(got == ["same"], "tiny threshold gave {got:?}");
    let e =
        b.search(&q.with_max_distance(-1.0)).await.err().context("negative threshold accepted")?;
    ensure!(e.kind() == ErrorKind::InvalidInput, "negative threshold: {e}");
    Ok(())
}

/// Nothing of one namespace is ever returned, counted, scanned, touched or deleted from another.
pub async fn namespace_isolation(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let mine = record(&f.ns, "shared-id", [1.0, 0.0, 0.0, 0.0]);
    let mut theirs = record(&f.other, "shared-id", [1.0, 0.0, 0.0, 0.0]);
    theirs.payload = b"other tenant".to_vec();
    let theirs_only = record(&f.other, "theirs-only", [1.0, 0.0, 0.0, 0.0]);
    put_all(b, vec![mine.clone(), theirs.clone(), theirs_only.clone()]).await?;

    let got = b.get(&f.ns, &mine.id).await?.context("own record missing")?;
    ensure!(got.payload == mine.payload, "get returned the other namespace's record");
    ensure!(b.get(&f.ns, &theirs_only.id).await?.is_none(), "get crossed namespaces");
    let hits = b.search(&VectorQuery::new(f.ns.clone(), vec![1.0, 0.0, 0.0, 0.0], 10)).await?;
    ensure!(
        hits.len() == 1 && hits[0].record.namespace == f.ns,
        "search crossed namespaces: {hits:?}"
    );
    let with_filter = VectorQuery::new(f.ns.clone(), vec![1.0, 0.0, 0.0, 0.0], 10)
        .with_filter(Filter::tag_eq("kind", "fact"));
    ensure!(b.search(&with_filter).await?.len() == 1, "filtered search crossed namespaces");
    ensure!(
        b.count(&f.ns).await? == 1 && b.count(&f.other).await? == 2,
        "count crossed namespaces"
    );
    ensure!(b.scan_all(&f.ns, 5).await? == [mine.id.clone()], "scan crossed namespaces");
    ensure!(
        b.touch(&f.ns, &theirs_only.id, Timestamp::now(), None).await?.is_none(),
        "touch crossed namespaces"
    );
    ensure!(!b.delete(&f.ns, &theirs_only.id).await?, "delete crossed namespaces");
    ensure!(b.get(&f.other, &theirs_only.id).await?.is_some(), "the other namespace lost a record");
    ensure!(b.delete(&f.ns, &mine.id).await?, "own delete");
    let still = b.get(&f.other, &theirs.id).await?.context("deleting mine deleted theirs")?;
    ensure!(still.payload == b"other tenant", "the other record changed");
    let empty = Namespace::new("unused-ns-zz")?;
    ensure!(
        b.count(&empty).await? == 0 && b.scan_all(&empty, 5).await?.is_empty(),
        "an unused namespace is not empty"
    );
    Ok(())
}

/// An existing index with another schema is reported, with the difference named.
pub async fn schema_mismatch(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let again = b.ensure_index(&f.schema).await.context("ensure_index with the same schema")?;
    ensure!(again == IndexStatus::Existing, "second ensure_index: {again:?}");
    let mut other = f.schema.clone();
    other.vector.dimension = 8;
    let e = b.ensure_index(&other).await.err().context("a different dimension was accepted")?;
    ensure!(e.kind() == ErrorKind::SchemaMismatch, "dimension change: {e}");
    ensure!(
        e.message().contains("dimension: wanted 8, index has 4"),
        "message does not name the difference: {e}"
    );
    let mut other = f.schema.clone();
    other.fields.retain(|x| x.name != "body");
    let e = b.ensure_index(&other).await.err().context("a missing field was accepted")?;
    ensure!(
        e.kind() == ErrorKind::SchemaMismatch && e.message().contains("\"body\""),
        "field change: {e}"
    );
    Ok(())
}

/// Bad ids, vectors, fields and filters are typed errors, and nothing is stored.
pub async fn bad_input_rejected_before_io(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let base = record(&f.ns, "x", [1.0, 0.0, 0.0, 0.0]);
    let with_vec = |v: Vec<f32>| {
        let mut r = base.clone();
        r.vector = Some(v);
        r
    };
    let cases: Vec<(&str, Record, ErrorKind)> = vec![
        ("wrong dimension", with_vec(vec![1.0; 5]), ErrorKind::DimensionMismatch),
        ("empty vector", with_vec(vec![]), ErrorKind::DimensionMismatch),
        ("NaN", with_vec(vec![1.0, f32::NAN, 0.0, 0.0]), ErrorKind::InvalidInput),
        ("infinity", with_vec(vec![f32::INFINITY, 0.0, 0.0, 0.0]), ErrorKind::InvalidInput),
        ("zero vector under COSINE", with_vec(vec![0.0; 4]), ErrorKind::InvalidInput),
        (
            "undeclared field",
            base.clone().with_field("nope", FieldValue::Numeric(1.0)),
            ErrorKind::InvalidInput,
        ),
        (
            "wrong field kind",
            base.clone().with_field("score", FieldValue::Text("x".into())),
            ErrorKind::InvalidInput,
        ),
        (
            "empty tag",
            base.clone().with_field("kind", FieldValue::Tags(vec![String::new()])),
            ErrorKind::InvalidInput,
        ),
        (
            "NaN number",
            base.clone().with_field("score", FieldValue::Numeric(f64::NAN)),
            ErrorKind::InvalidInput,
        ),
    ];
    for (name, r, kind) in cases {
        let report = b.put_batch(vec![r.clone()]).await;
        let e = report.items[0].err().with_context(|| format!("{name} was accepted by put"))?;
        ensure!(e.kind() == kind, "{name}: put failed with {e}");
        let e = b
            .compare_and_set(r, None)
            .await
            .err()
            .with_context(|| format!("{name} was accepted by compare_and_set"))?;
        ensure!(e.kind() == kind, "{name}: compare_and_set failed with {e}");
    }
    ensure!(b.count(&f.ns).await? == 0, "rejected records were stored");
    let q = VectorQuery::new(f.ns.clone(), vec![f32::NAN, 0.0, 0.0, 0.0], 3);
    ensure!(
        b.search(&q).await.err().map(|e| e.kind()) == Some(ErrorKind::InvalidInput),
        "NaN query accepted"
    );
    let q = VectorQuery::new(f.ns.clone(), vec![1.0; 3], 3);
    ensure!(
        b.search(&q).await.err().map(|e| e.kind()) == Some(ErrorKind::DimensionMismatch),
        "short query accepted"
    );
    let q = VectorQuery::new(f.ns.clone(), vec![1.0; 4], 3)
        .with_filter(Filter::tag_in("kind", Vec::<String>::new()));
    ensure!(
        b.search(&q).await.err().map(|e| e.kind()) == Some(ErrorKind::InvalidInput),
        "empty tag clause accepted"
    );
    if let Err(e) = RecordId::new("bad id*") {
        ensure!(e.kind() == ErrorKind::InvalidInput, "{e}");
    } else {
        bail!("an id with a glob character was accepted");
    }
    Ok(())
}

/// Find returns the namespace's records matching a filter, sorted by id, within the limit.
pub async fn find_by_filter(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let tagged = |name: &str, kind: &str| {
        record(&f.ns, name, [1.0; 4]).with_field("kind", FieldValue::Tags(vec![kind.into()]))
    };
    put_all(
        b,
        vec![
            tagged("f3", "x|y"),
            tagged("f1", "x|y"),
            tagged("f2", "other"),
            Record::new(f.ns.clone(), id("f4"), vec![]),
        ],
    )
    .await?;
    put_all(
        b,
        vec![
            record(&f.other, "f1", [1.0; 4])
                .with_field("kind", FieldValue::Tags(vec!["x|y".into()])),
        ],
    )
    .await?;
    let found = b.find(&f.ns, &Filter::tag_eq("kind", "x|y"), 10).await.context("find")?;
    let ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
    ensure!(ids == ["f1", "f3"], "find gave {ids:?}");
    ensure!(found.iter().all(|r| r.namespace == f.ns), "find crossed namespaces");
    let limited = b
        .find(&f.ns, &Filter::tag_in("kind", ["x|y", "other"]), 2)
        .await
        .context("find with limit")?;
    ensure!(limited.len() == 2, "limit 2 gave {}", limited.len());
    let negated =
        b.find(&f.ns, &Filter::not(Filter::tag_eq("kind", "x|y")), 10).await.context("find not")?;
    let ids: Vec<&str> = negated.iter().map(|r| r.id.as_str()).collect();
    ensure!(ids == ["f2", "f4"], "negated find gave {ids:?}");
    let e =
        b.find(&f.ns, &Filter::tag_eq("kind", "x"), 0).await.err().context("limit 0 accepted")?;
    ensure!(e.kind() == ErrorKind::InvalidInput, "limit 0: {e}");
    Ok(())
}

/// Scan returns every id once in bounded pages; count agrees.
pub async fn scan_pages_and_count(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let records: Vec<Record> =
        (0..25).map(|i| record(&f.ns, &format!("s{i:02}"), [1.0, i as f32, 0.0, 0.0])).collect();
    put_all(b, records).await?;
    put_all(b, vec![record(&f.other, "o1", [1.0; 4])]).await?;
    ensure!(b.count(&f.ns).await? == 25, "count");
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = b.scan(&f.ns, cursor, 7).await.with_context(|| format!("scan page {pages}"))?;
        ensure!(page.ids.len() <= 7, "page of {} ids, limit 7", page.ids.len());
        seen.extend(page.ids);
        pages += 1;
        ensure!(pages < 100, "scan does not end");
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    ensure!(unique.len() == 25, "scan saw {} distinct ids", unique.len());
    ensure!(seen.len() == 25, "scan returned duplicates: {} ids", seen.len());
    for limit in [0, crate::backend::MAX_SCAN_PAGE + 1] {
        let e = b
            .scan(&f.ns, None, limit)
            .await
            .err()
            .with_context(|| format!("limit {limit} accepted"))?;
        ensure!(e.kind() == ErrorKind::InvalidInput, "limit {limit}: {e}");
    }
    Ok(())
}

/// Ping answers and describe reports the backend and the index.
pub async fn ping_and_describe(f: &Fixture) -> Result<()> {
    let b = f.backend.as_ref();
    let rtt = b.ping().await.context("ping")?;
    ensure!(rtt < Duration::from_secs(2), "ping took {rtt:?}");
    put_all(b, vec![record(&f.ns, "d1", [1.0; 4]), record(&f.ns, "d2", [1.0, 2.0, 0.0, 0.0])])
        .await?;
    let info = b.describe().await.context("describe")?;
    ensure!(!info.backend.is_empty(), "backend name");
    let index = info.index.context("describe reports no index")?;
    ensure!(index.documents >= 2, "index documents {}", index.documents);
    ensure!(index.indexing_failures == 0, "indexing failures {}", index.indexing_failures);
    Ok(())
}

/// Makes one `#[tokio::test]` per behaviour of the suite for a [`BackendFactory`] expression.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            crud_round_trip, batch_reports_each_item, ttl_expiry, touch_counts_and_refreshes,
            compare_and_set_versions, filter_operators, knn_ordering_and_k, distance_threshold,
            namespace_isolation, schema_mismatch, bad_input_rejected_before_io,
            scan_pages_and_count, ping_and_describe, find_by_filter);
    };
    (@each $factory:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let factory = $factory;
                $crate::testkit::conformance::run(
                    &factory,
                    stringify!($name),
                    |f| Box::pin($crate::testkit::conformance::$name(f)),
                )
                .await;
            }
        )*
    };
}
