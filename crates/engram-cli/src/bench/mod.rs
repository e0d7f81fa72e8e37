//! `engram bench`: the end-to-end benchmark against Redis Stack, what `cargo xtask bench` runs.
//!
//! Workloads, each measured `--runs` times (median, min, max; latency percentiles from an
//! HDR histogram):
//! - **ingest**: records written through the full layer stack in batches, into a fresh FLAT
//!   index with and without a TEXT field on the content, and a fresh HNSW index;
//! - **get by id**: one caller, then `--concurrency` callers;
//! - **KNN top-10** on HNSW: one caller and `--concurrency` callers, an EF_RUNTIME sweep with
//!   recall@10, with and without a tag filter on the section;
//! - **layer overhead**: get by id and KNN through the raw backend and through the full
//!   layer stack as the memory store builds it (metrics with statistics, retry, circuit
//!   breaker, timeout), interleaved; gets without a metrics recorder, then gets and KNN with
//!   the Prometheus exporter's recorder installed.
//!
//! The ceiling is the server's own C clients on the same server in the same run:
//! `redis-cli --pipe` of the same HSET and FT.SEARCH commands, and `redis-benchmark` HSET of
//! the same sizes and HGETALL of the same keys (with, for reference, HMGET of the fields
//! engram reads); each figure is reported with its ratio to its ceiling. Data: clustered
//! vectors generated here by default, or `--dataset DIR` in the format of
//! `shared/bench-data/README.md` (recall against its ground truth). Every index and key the
//! benchmark creates is removed at the end.

pub mod ceiling;
pub mod data;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use engram_config::Config;
use engram_memory::{StoreLayers, StoreOptions};
use engram_storage::redis::{RedisBackend, RedisBackendOptions};
use engram_storage::schema::{DistanceMetric, VectorType};
use engram_storage::{
    Algorithm, FieldKind, FieldSpec, FieldValue, Filter, HnswParams, IndexSchema, Namespace,
    QueryPlan, Record, RecordId, StorageBackend, VectorQuery, VectorSpec,
};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use crate::commands::{Context, Outcome};
use crate::error::{CliError, CliResult};
use crate::output::Table;
use ceiling::{Tools, resp};
use data::BenchData;

/// Options of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// CI size: 2,000 entries, 100 queries, 2 runs; checks that every workload produced a
    /// number (it does not assert speed).
    #[arg(long)]
    pub quick: bool,
    /// A dataset directory (`entries.f32`, `queries.f32`, `gt_top10*.i32`, `*.jsonl`);
    /// default: clustered vectors generated here.
    #[arg(long, value_name = "DIR")]
    pub dataset: Option<PathBuf>,
    /// Entries to ingest (default: 20,000 generated, or the whole dataset; 2,000 with --quick).
    #[arg(long)]
    pub entries: Option<usize>,
    /// Queries (at most 500 from a dataset).
    #[arg(long)]
    pub queries: Option<usize>,
    /// Runs per figure (default 3, 2 with --quick).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Concurrent callers of the concurrent workloads.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Records per put_batch call of the ingest workloads (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub batch_sizes: Vec<usize>,
    /// EF_RUNTIME values of the sweep (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,20,50,100,200")]
    pub ef_sweep: Vec<u32>,
    /// Vector dimension of generated data.
    #[arg(long, default_value_t = 384)]
    pub dimension: usize,
    /// Folder with `redis-benchmark` and `redis-cli` for the ceiling (skipped without it).
    #[arg(long, value_name = "DIR")]
    pub redis_bin: Option<PathBuf>,
    /// Seed of generated data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Workloads to measure (comma-separated, from `ingest`, `get`, `knn`, `overhead`). The
    /// indexes the others need are still loaded, once and unmeasured.
    #[arg(long, value_delimiter = ',', default_value = "ingest,get,knn,overhead")]
    pub workloads: Vec<String>,
}

/// The workloads `--workloads` knows.
const WORKLOADS: [&str; 4] = ["ingest", "get", "knn", "overhead"];

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Workload (`ingest`, `get`, `knn`, `overhead`).
    pub workload: String,
    /// What varies (index, callers, EF_RUNTIME, filter).
    pub variant: String,
    /// Unit of the runs (`ops/s`).
    pub unit: &'static str,
    /// One value per run.
    pub runs: Vec<f64>,
    /// Median, min and max of the runs.
    pub median: f64,
    /// Smallest run.
    pub min: f64,
    /// Largest run.
    pub max: f64,
    /// Median latency of one call, µs (all runs pooled).
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    pub p99_us: Option<f64>,
    /// recall@10 against the exact top-10.
    pub recall_at_10: Option<f64>,
    /// What the ceiling is.
    pub ceiling: Option<String>,
    /// The ceiling's median over the same runs.
    pub ceiling_median: Option<f64>,
    /// `median / ceiling_median`.
    pub ratio: Option<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

impl Figure {
    fn new(workload: &str, variant: impl Into<String>, runs: Vec<f64>) -> Self {
        let (min, max) = runs.iter().fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
        Self {
            workload: workload.into(),
            variant: variant.into(),
            unit: "ops/s",
            median: median(&runs),
            min,
            max,
            runs,
            p50_us: None,
            p99_us: None,
            recall_at_10: None,
            ceiling: None,
            ceiling_median: None,
            ratio: None,
        }
    }
    fn latency(mut self, h: &Histogram<u64>) -> Self {
        if !h.is_empty() {
            self.p50_us = Some(h.value_at_quantile(0.5) as f64);
            self.p99_us = Some(h.value_at_quantile(0.99) as f64);
        }
        self
    }
    fn ceiling(mut self, what: impl Into<String>, runs: &[f64]) -> Self {
        if !runs.is_empty() {
            let m = median(runs);
            self.ceiling = Some(what.into());
            self.ceiling_median = Some(m);
            self.ratio = Some(self.median / m);
        }
        self
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

const NS: &str = "bench";

/// Least pairs of runs (raw backend, layer stack) of the overhead workload.
const OVERHEAD_PAIRS: usize = 21;

/// Most gets per run of the overhead workload: many short pairs rather than a few long ones.
/// With 7 pairs of 50,000 gets the median of the paired ratios moved between 0.94 and 0.98
/// from one invocation to the next; with 21 pairs of 20,000, between 0.93 and 0.95 (three
/// invocations, same build), in about the same time.
const OVERHEAD_GETS: usize = 20_000;

struct Bench {
    config: Config,
    data: Arc<BenchData>,
    runs: usize,
    concurrency: usize,
    tools: Option<Tools>,
    ns: Namespace,
    figures: Vec<Figure>,
    bar: indicatif::ProgressBar,
    /// Indexes to drop at the end, with their backends.
    cleanup: Vec<Arc<RedisBackend>>,
    raw_prefixes: Vec<String>,
    /// Whether the Prometheus recorder is installed (by the overhead workload).
    recorder: bool,
}

fn schema(kind: &str, algorithm: Algorithm, dim: usize, text: bool) -> IndexSchema {
    let name = format!("engram-bench-{kind}-{}", engram_storage::testkit_token());
    let mut fields = vec![
        FieldSpec::new("section", FieldKind::Tag),
        FieldSpec::new("created", FieldKind::Numeric),
    ];
    if text {
        fields.push(FieldSpec::new("content", FieldKind::Text));
    }
    IndexSchema {
        key_prefix: format!("{name}:"),
        name,
        fields,
        vector: VectorSpec {
            dimension: dim as u32,
            metric: DistanceMetric::Cosine,
            vector_type: VectorType::Float32,
            algorithm,
        },
    }
}

const WORDS: &[&str] = &[
    "agent", "memory", "user", "prefers", "short", "answers", "build", "failed", "redis", "index",
    "vector", "search", "query", "tests", "deploy", "budget", "hotel", "ticket", "login", "refund",
    "cluster", "latency", "cache", "schema", "review", "release",
];

/// The content text of entry `i`: about 195 bytes of words, like the dataset's.
fn content(i: usize) -> String {
    let mut s = String::new();
    let mut k = i.wrapping_mul(2_654_435_761);
    while s.len() < 190 {
        k = k.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        s.push_str(WORDS[(k >> 33) % WORDS.len()]);
        s.push(' ');
    }
    s.truncate(195);
    s
}

fn record_id(i: usize) -> String {
    // 12 digits, as redis-benchmark's __rand_int__ writes them, so that its HGETALL hits
    // the same keys.
    format!("{i:012}")
}

/// Query `i` of the data as engram's search: top 10, optionally filtered on its section.
fn knn_query(
    data: &BenchData,
    ns: &Namespace,
    i: usize,
    ef: Option<u32>,
    filtered: bool,
    plan: QueryPlan,
) -> VectorQuery {
    let mut vq = VectorQuery::new(ns.clone(), data.query(i).to_vec(), 10).with_plan(plan);
    vq.ef_runtime = ef;
    if filtered {
        vq.filter = Some(Filter::tag_eq("section", data.query_sections[i].clone()));
    }
    vq
}

/// `put_batch` calls of an ingest in flight at once: the next batch is on its way while the
/// server finishes the one before, as a loader does that keeps one batch queued. (One at a
/// time, each batch starts and ends with only one side at work: see docs/performance.md.)
const BATCHES_IN_FLIGHT: usize = 2;

/// The payload: 200 bytes, about a short memory's MessagePack.
const PAYLOAD_LEN: usize = 200;

fn record(ns: &Namespace, d: &BenchData, i: usize, text: bool) -> CliResult<Record> {
    let id = RecordId::new(record_id(i)).map_err(|e| CliError::other(e.to_string()))?;
    let mut r = Record::new(ns.clone(), id, vec![b'p'; PAYLOAD_LEN])
        .with_vector(d.entry(i).to_vec())
        .with_field("section", FieldValue::Tags(vec![d.entry_sections[i].clone()]))
        .with_field("created", FieldValue::Numeric(1_700_000_000_000.0 + i as f64));
    if text {
        r = r.with_field("content", FieldValue::Text(content(i)));
    }
    Ok(r)
}

/// The HSET the backend's write amounts to, with the same fields and bytes (see the layout in
/// `engram_storage`'s Redis codec: `__ns`, `__exp`, `__ver`, `__payload`, `__acc_n`, `__vec`,
/// then the indexed fields). The backend also writes `__acc_t` empty and sends its `HSET`s
/// in transactions with a `PERSIST` each; the ceiling leaves those out. Through the pipe they
/// cost nothing beyond the spread (same series: 72-75k/s with them, 69-72k/s without).
fn hset(buf: &mut Vec<u8>, prefix: &str, d: &BenchData, i: usize, text: bool) {
    let key = format!("{prefix}{NS}:{}", record_id(i));
    let vec: Vec<u8> = d.entry(i).iter().flat_map(|x| x.to_le_bytes()).collect();
    let created = (1_700_000_000_000u64 + i as u64).to_string();
    let payload = vec![b'p'; PAYLOAD_LEN];
    let c = content(i);
    let mut args: Vec<&[u8]> = vec![
        b"HSET",
        key.as_bytes(),
        b"__ns",
        NS.as_bytes(),
        b"__exp",
        b"inf",
        b"__ver",
        b"1",
        b"__payload",
        &payload,
        b"__acc_n",
        b"0",
        b"__vec",
        &vec,
        b"section",
        d.entry_sections[i].as_bytes(),
        b"created",
        created.as_bytes(),
    ];
    if text {
        args.extend([b"content".as_slice(), c.as_bytes()]);
    }
    resp(buf, &args);
}

/// Escapes a tag value for a RediSearch query the way the backend does: every ASCII character
/// other than letters, digits and `_` gets a backslash.
fn escape_tag(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for c in value.chars() {
        if c.is_ascii() && !(c.is_ascii_alphanumeric() || c == '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A ceiling that could not be measured is reported, not fatal: our own figure still stands.
fn warn_ceiling<T: Default>(what: &str, r: CliResult<T>) -> T {
    r.unwrap_or_else(|e| {
        eprintln!("bench: no ceiling for {what}: {e}");
        T::default()
    })
}

fn backend_err(e: engram_storage::StorageError) -> CliError {
    CliError::from(engram_memory::MemoryError::from(e))
}

impl Bench {
    async fn open(
        &mut self,
        s: &IndexSchema,
    ) -> CliResult<(Arc<RedisBackend>, Arc<dyn StorageBackend>)> {
        let raw = Arc::new(
            RedisBackend::connect(&self.config.redis, RedisBackendOptions::default())
                .await
                .map_err(|e| CliError::from_connect(e.into()))?,
        );
        raw.ensure_index(s).await.map_err(backend_err)?;
        // The stack exactly as the memory store builds it, statistics included.
        let options = StoreOptions { breaker_name: "bench", ..StoreOptions::default() };
        let stack = StoreLayers::build(raw.clone(), &self.config, &options)?.backend;
        Ok((raw, stack))
    }

    fn status(&self, msg: impl Into<String>) {
        let msg = msg.into();
        self.bar.set_message(msg.clone());
        if self.bar.is_hidden() && !crate::output::stdout_is_terminal() {
            eprintln!("bench: {msg}");
        }
    }

    /// Ingests every entry into a fresh index per run; keeps the last run's index when `keep`.
    /// Unless `measure`, loads the index once for the other workloads and records no figure.
    async fn ingest(
        &mut self,
        kind: &str,
        algorithm: Algorithm,
        text: bool,
        batch: usize,
        keep: bool,
        measure: bool,
    ) -> CliResult<Option<(Arc<RedisBackend>, Arc<dyn StorageBackend>, IndexSchema)>> {
        let variant = format!(
            "{kind}{}, batch {batch} x {BATCHES_IN_FLIGHT} in flight",
            if text { " + TEXT content" } else { "" }
        );
        let n = self.data.len();
        let mut runs = Vec::new();
        let mut kept = None;
        let total = if measure { self.runs } else { 1 };
        for run in 0..total {
            if measure {
                self.status(format!("ingest {variant}: run {}/{}", run + 1, self.runs));
            } else {
                self.status(format!("loading the {kind} index (not measured)"));
            }
            let s = schema(kind, algorithm, self.data.dim, text);
            let (raw, stack) = self.open(&s).await?;
            let records: Vec<Record> =
                (0..n).map(|i| record(&self.ns, &self.data, i, text)).collect::<CliResult<_>>()?;
            let mut batches = Vec::with_capacity(n.div_ceil(batch));
            let mut rest = records;
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(batch));
                batches.push(rest);
                rest = tail;
            }
            let started = Instant::now();
            let mut reports = futures::stream::iter(batches)
                .map(|b| stack.put_batch(b))
                .buffered(BATCHES_IN_FLIGHT);
            while let Some(report) = reports.next().await {
                if let Some((_, e)) = report.failures().next() {
                    return Err(backend_err(e.duplicate()).context("ingest"));
                }
            }
            drop(reports);
            runs.push(n as f64 / started.elapsed().as_secs_f64());
            if keep && run + 1 == total {
                self.cleanup.push(raw.clone());
                kept = Some((raw, stack, s));
            } else {
                raw.drop_index(true).await.map_err(backend_err)?;
            }
        }
        if !measure {
            return Ok(kept);
        }
        // The ceiling: the same HSETs through redis-cli --pipe into the same kind of index.
        let mut ceiling = Vec::new();
        if let Some(tools) = self.tools.clone() {
            for run in 0..self.runs {
                self.status(format!(
                    "ingest {variant}: redis-cli --pipe run {}/{}",
                    run + 1,
                    self.runs
                ));
                let s = schema(&format!("pipe-{kind}"), algorithm, self.data.dim, text);
                let raw = Arc::new(
                    RedisBackend::connect(&self.config.redis, RedisBackendOptions::default())
                        .await
                        .map_err(|e| CliError::from_connect(e.into()))?,
                );
                raw.ensure_index(&s).await.map_err(backend_err)?;
                // Same bytes, under this run's prefix.
                let mut run_buf = Vec::new();
                for i in 0..n {
                    hset(&mut run_buf, &s.key_prefix, &self.data, i, text);
                }
                if let Some(took) = warn_ceiling(&variant, tools.pipe(&run_buf, n).map(Some)) {
                    ceiling.push(n as f64 / took.as_secs_f64());
                }
                raw.drop_index(true).await.map_err(backend_err)?;
            }
        }
        let mut f = Figure::new("ingest", variant, runs);
        f = f.ceiling("redis-cli --pipe, same HSETs, same index", &ceiling);
        self.figures.push(f);
        Ok(kept)
    }

    /// Raw HSET ceilings without an index: redis-cli --pipe and redis-benchmark.
    fn ingest_no_index(&mut self) -> CliResult<()> {
        let Some(tools) = self.tools.clone() else { return Ok(()) };
        let n = self.data.len();
        let mut pipe = Vec::new();
        let mut bench = Vec::new();
        for run in 0..self.runs {
            self.status(format!("ingest without index: run {}/{}", run + 1, self.runs));
            let prefix = format!("engram-bench-raw-{}:", engram_storage::testkit_token());
            self.raw_prefixes.push(prefix.clone());
            let mut buf = Vec::new();
            for i in 0..n {
                hset(&mut buf, &prefix, &self.data, i, true);
            }
            pipe.push(n as f64 / tools.pipe(&buf, n)?.as_secs_f64());
            tools.delete_prefix(&prefix)?;
            let vec = "A".repeat(self.data.dim * 4);
            let key = format!("{prefix}{NS}:__rand_int__");
            let cmd: Vec<Vec<u8>> = [
                "HSET",
                &key,
                "__ns",
                NS,
                "__exp",
                "inf",
                "__ver",
                "1",
                "__payload",
                &"p".repeat(PAYLOAD_LEN),
                "__acc_n",
                "0",
                "__vec",
                &vec,
                "section",
                "s1",
                "created",
                "1700000000000",
                "content",
                &content(1),
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
            bench.push(tools.benchmark(n, self.concurrency, 64, 1_000_000_000, &cmd)?);
            tools.delete_prefix(&prefix)?;
        }
        self.figures.push(Figure::new("ceiling", "redis-cli --pipe HSET, no index", pipe));
        self.figures.push(Figure::new(
            "ceiling",
            format!("redis-benchmark HSET, no index, {} conns, pipeline 64", self.concurrency),
            bench,
        ));
        Ok(())
    }

    /// Runs `ops` calls of `f` with `callers` concurrent callers; returns ops/s and latencies.
    async fn drive<F, Fut>(ops: usize, callers: usize, f: F) -> CliResult<(f64, Histogram<u64>)>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = CliResult<()>> + Send,
    {
        let f = Arc::new(f);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..callers {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                let mut h = histogram();
                for i in (w..ops).step_by(callers) {
                    let t = Instant::now();
                    f(i).await?;
                    let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                }
                Ok::<_, CliError>(h)
            }));
        }
        let mut all = histogram();
        for t in tasks {
            let h = t.await.map_err(|e| CliError::other(format!("a caller panicked: {e}")))??;
            let _ = all.add(&h);
        }
        Ok((ops as f64 / started.elapsed().as_secs_f64(), all))
    }

    async fn get_by_id(
        &mut self,
        backend: Arc<dyn StorageBackend>,
        prefix: &str,
        label: &str,
        read_fields: &[String],
    ) -> CliResult<()> {
        let n = self.data.len();
        let ops = n.min(20_000);
        for callers in [1, self.concurrency] {
            let mut runs = Vec::new();
            let mut h = histogram();
            for run in 0..self.runs {
                self.status(format!("get by id, {callers} callers: run {}/{}", run + 1, self.runs));
                let (b, ns) = (backend.clone(), self.ns.clone());
                let (rate, hist) = Self::drive(ops, callers, move |i| {
                    let (b, ns) = (b.clone(), ns.clone());
                    async move {
                        let id = RecordId::new(record_id((i * 7919) % n))
                            .map_err(|e| CliError::other(e.to_string()))?;
                        let r = b.get_batch(&ns, &[id]).await;
                        match r.items.first().and_then(|o| o.ok()) {
                            Some(Some(_)) => Ok(()),
                            _ => Err(CliError::other("get by id missed a record that was written")),
                        }
                    }
                })
                .await?;
                runs.push(rate);
                let _ = h.add(&hist);
            }
            // The target's ceiling is HGETALL; engram reads with an HMGET of the record's
            // fields (no names in the reply), so that command's rate is reported beside it.
            let (mut ceiling, mut hmget) = (Vec::new(), Vec::new());
            if let Some(tools) = self.tools.clone() {
                let key = format!("{prefix}{NS}:__rand_int__").into_bytes();
                let same_read: Vec<Vec<u8>> = [b"HMGET".to_vec(), key.clone()]
                    .into_iter()
                    .chain(read_fields.iter().map(|f| f.clone().into_bytes()))
                    .collect();
                for _ in 0..self.runs {
                    let cmd = vec![b"HGETALL".to_vec(), key.clone()];
                    ceiling.push(tools.benchmark(ops, callers, 1, n, &cmd)?);
                    hmget.push(tools.benchmark(ops, callers, 1, n, &same_read)?);
                }
            }
            let f = Figure::new("get", format!("{label}, {}", callers_label(callers)), runs)
                .latency(&h)
                .ceiling(format!("redis-benchmark HGETALL, {callers} conns"), &ceiling);
            self.figures.push(f);
            if !hmget.is_empty() {
                self.figures.push(
                    Figure::new(
                        "ceiling",
                        format!("redis-benchmark HMGET of engram's read fields, {callers} conns"),
                        hmget,
                    )
                    .ceiling(format!("redis-benchmark HGETALL, {callers} conns"), &ceiling),
                );
            }
        }
        Ok(())
    }

    /// One pass of every query; returns ops/s, latencies and recall@10.
    async fn knn_pass(
        &self,
        backend: Arc<dyn StorageBackend>,
        callers: usize,
        ef: Option<u32>,
        filtered: bool,
        plan: QueryPlan,
    ) -> CliResult<(f64, Histogram<u64>, f64)> {
        let data = self.data.clone();
        let q = data.query_count();
        let found: Arc<std::sync::Mutex<Vec<Vec<i32>>>> =
            Arc::new(std::sync::Mutex::new(vec![Vec::new(); q]));
        let (ns, out) = (self.ns.clone(), found.clone());
        let (rate, h) = Self::drive(q, callers, move |i| {
            let (b, ns, data, out) = (backend.clone(), ns.clone(), data.clone(), out.clone());
            async move {
                let vq = knn_query(&data, &ns, i, ef, filtered, plan);
                let hits = b.search(&vq).await.map_err(backend_err)?;
                let ids = hits.iter().filter_map(|h| h.record.id.as_str().parse().ok()).collect();
                out.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = ids;
                Ok(())
            }
        })
        .await?;
        let found = found.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let truth = if filtered { &self.data.truth_section } else { &self.data.truth };
        Ok((rate, h, data::recall(&found, truth)))
    }

    /// The FT.SEARCH engram sent for a filtered query before it chose plans per query, as
    /// RESP: the expiry clause in the pre-filter and the server's plan. The reference of the
    /// filtered-KNN target ("3x the default plan").
    fn ft_search_before_plans(&self, buf: &mut Vec<u8>, s: &IndexSchema, i: usize, ef: u32) {
        let now = engram_storage::Timestamp::now().as_millis();
        let sec = escape_tag(&self.data.query_sections[i]);
        let q = format!(
            "(@__ns:{{{NS}}} @__exp:[({now} +inf] @section:{{{sec}}})=>[KNN 10 @__vec $BLOB EF_RUNTIME $EF AS __dist]"
        );
        let blob: Vec<u8> = self.data.query(i).iter().flat_map(|x| x.to_le_bytes()).collect();
        let ef = ef.to_string();
        let mut args: Vec<&[u8]> =
            vec![b"FT.SEARCH", s.name.as_bytes(), q.as_bytes(), b"LIMIT", b"0", b"10"];
        args.extend([b"PARAMS".as_slice(), b"4", b"BLOB", &blob, b"EF", ef.as_bytes()]);
        args.extend([b"SORTBY".as_slice(), b"__dist", b"ASC", b"VERBATIM", b"RETURN"]);
        let mut ret: Vec<&[u8]> =
            vec![b"__exp", b"__ver", b"__payload", b"__acc_n", b"__acc_t", b"__vec"];
        ret.extend(s.fields.iter().map(|f| f.name.as_bytes()));
        ret.push(b"__dist");
        let count = ret.len().to_string();
        args.push(count.as_bytes());
        args.extend(ret);
        args.extend([b"DIALECT".as_slice(), b"2"]);
        resp(buf, &args);
    }

    /// Every query through `redis-cli --pipe`, once per run: queries/s per run (none without
    /// the server's tools). `commands` writes query `i` as RESP.
    fn pipe_queries(
        &self,
        mut commands: impl FnMut(&mut Vec<u8>, usize) -> CliResult<()>,
    ) -> CliResult<Vec<f64>> {
        let Some(tools) = &self.tools else { return Ok(Vec::new()) };
        let q = self.data.query_count();
        let mut out = Vec::new();
        for _ in 0..self.runs {
            // Written anew per run: the reference query carries the time.
            let mut buf = Vec::new();
            for i in 0..q {
                commands(&mut buf, i)?;
            }
            out.push(q as f64 / tools.pipe(&buf, q)?.as_secs_f64());
        }
        Ok(out)
    }

    /// The exact FT.SEARCH commands the backend sends for every query with `plan`, as RESP.
    async fn engram_commands(
        &self,
        raw: &RedisBackend,
        filtered: bool,
        plan: QueryPlan,
    ) -> CliResult<Vec<Vec<u8>>> {
        let mut out = Vec::with_capacity(self.data.query_count());
        for i in 0..self.data.query_count() {
            let vq = knn_query(&self.data, &self.ns, i, None, filtered, plan);
            let args = raw.search_command(&vq).await.map_err(backend_err)?;
            let mut all: Vec<&[u8]> = vec![b"FT.SEARCH"];
            all.extend(args.iter().map(Vec::as_slice));
            let mut buf = Vec::new();
            resp(&mut buf, &all);
            out.push(buf);
        }
        Ok(out)
    }

    async fn knn(
        &mut self,
        raw: Arc<RedisBackend>,
        backend: Arc<dyn StorageBackend>,
        s: &IndexSchema,
        sweep: &[u32],
    ) -> CliResult<()> {
        let default_ef = self.config.index.ef_runtime;
        // The sweep, one caller: latency and recall per EF_RUNTIME.
        for &ef in sweep {
            let (mut runs, mut h, mut recall) = (Vec::new(), histogram(), 0.0);
            for run in 0..self.runs {
                self.status(format!(
                    "knn EF_RUNTIME {ef}, 1 caller: run {}/{}",
                    run + 1,
                    self.runs
                ));
                let (rate, hist, r) =
                    self.knn_pass(backend.clone(), 1, Some(ef), false, QueryPlan::Auto).await?;
                runs.push(rate);
                let _ = h.add(&hist);
                recall = r;
            }
            let mut f =
                Figure::new("knn", format!("top-10, EF_RUNTIME {ef}, 1 caller"), runs).latency(&h);
            f.recall_at_10 = Some(recall);
            self.figures.push(f);
        }
        // Default EF_RUNTIME, one caller and concurrent callers, unfiltered and filtered, with
        // engram's plan; filtered also with the server's plan. The concurrent figures against
        // the same commands through redis-cli --pipe.
        let variants = [
            (false, QueryPlan::Auto, "no filter"),
            (true, QueryPlan::Auto, "tag filter on section, engram's plan"),
            (true, QueryPlan::Server, "tag filter on section, the server's plan"),
        ];
        let mut pipes = Vec::new();
        for (filtered, plan, label) in variants {
            let callers_list: &[usize] = if plan == QueryPlan::Server {
                &[self.concurrency]
            } else {
                &[1, self.concurrency]
            };
            for &callers in callers_list {
                let (mut runs, mut h, mut recall) = (Vec::new(), histogram(), 0.0);
                for run in 0..self.runs {
                    self.status(format!(
                        "knn {label}, {callers} callers: run {}/{}",
                        run + 1,
                        self.runs
                    ));
                    let (rate, hist, r) =
                        self.knn_pass(backend.clone(), callers, None, filtered, plan).await?;
                    runs.push(rate);
                    let _ = h.add(&hist);
                    recall = r;
                }
                let mut f = Figure::new(
                    "knn",
                    format!("top-10, {label}, EF_RUNTIME {default_ef}, {}", callers_label(callers)),
                    runs,
                )
                .latency(&h);
                f.recall_at_10 = Some(recall);
                if callers > 1 {
                    self.status(format!("knn {label}: redis-cli --pipe"));
                    let commands = self.engram_commands(&raw, filtered, plan).await?;
                    let ceiling = warn_ceiling(
                        label,
                        self.pipe_queries(|buf, i| {
                            buf.extend_from_slice(&commands[i]);
                            Ok(())
                        }),
                    );
                    f = f.ceiling("redis-cli --pipe, the same FT.SEARCH commands", &ceiling);
                    pipes.push((filtered, plan, ceiling));
                }
                self.figures.push(f);
            }
        }
        // The filtered target: engram's plan against the query engram sent before it chose
        // plans (expiry clause, the server's plan), both through redis-cli --pipe.
        self.status("knn: the filtered query before per-query plans, redis-cli --pipe");
        let before = warn_ceiling(
            "the filtered query before per-query plans",
            self.pipe_queries(|buf, i| {
                self.ft_search_before_plans(buf, s, i, default_ef);
                Ok(())
            }),
        );
        for (filtered, plan, runs) in pipes {
            if filtered && !runs.is_empty() {
                let which =
                    if plan == QueryPlan::Auto { "engram's plan" } else { "the server's plan" };
                self.figures.push(
                    Figure::new(
                        "ceiling",
                        format!("redis-cli --pipe FT.SEARCH, tag filter, {which}"),
                        runs,
                    )
                    .ceiling(
                        "the filtered query before per-query plans (expiry clause, server's plan)",
                        &before,
                    ),
                );
            }
        }
        Ok(())
    }

    /// The same calls through the raw backend and the full stack, interleaved run by run.
    async fn overhead(
        &mut self,
        raw: Arc<dyn StorageBackend>,
        stack: Arc<dyn StorageBackend>,
    ) -> CliResult<()> {
        let n = self.data.len();
        let ops = n.min(OVERHEAD_GETS);
        let callers = self.concurrency;
        // A difference of a few percent needs more runs than the other figures: pairs of runs,
        // the order inside a pair alternating so that drift (the server's allocator, the
        // machine) favours neither side, and the ratio taken pair by pair.
        let pairs = self.runs.max(OVERHEAD_PAIRS);
        // Gets first without a metrics recorder (the layers' own cost), then with the
        // Prometheus exporter's recorder installed as `serve-metrics` installs it (what a
        // deployment that serves metrics pays); KNN with it. A global recorder cannot be
        // removed, so the series without one comes first.
        let series = [("get", false), ("get", true), ("knn", true)];
        for (what, recorder) in series {
            if recorder && !self.recorder {
                crate::exporter::install_without_listener()?;
                self.recorder = true;
            }
            let (raw_label, stack_label) = match (what, recorder) {
                ("get", true) => (
                    "raw backend (series with the recorder)",
                    "full layer stack, Prometheus recorder",
                ),
                (_, true) => ("raw backend", "full layer stack, Prometheus recorder"),
                _ => ("raw backend", "full layer stack, no recorder"),
            };
            let mut rates = [Vec::new(), Vec::new()];
            let mut hists = [histogram(), histogram()];
            for run in 0..pairs {
                let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
                for k in order {
                    let b = [raw.clone(), stack.clone()][k].clone();
                    self.status(format!(
                        "overhead {what}, {} : run {}/{pairs}",
                        [raw_label, stack_label][k],
                        run + 1,
                    ));
                    let (rate, h) = if what == "get" {
                        let ns = self.ns.clone();
                        Self::drive(ops, callers, move |i| {
                            let (b, ns) = (b.clone(), ns.clone());
                            async move {
                                let id = RecordId::new(record_id((i * 7919) % n))
                                    .map_err(|e| CliError::other(e.to_string()))?;
                                b.get_batch(&ns, &[id]).await;
                                Ok(())
                            }
                        })
                        .await?
                    } else {
                        let (rate, h, _) =
                            self.knn_pass(b, callers, None, false, QueryPlan::Auto).await?;
                        (rate, h)
                    };
                    rates[k].push(rate);
                    let _ = hists[k].add(&h);
                }
            }
            let [raw_rates, stack_rates] = rates;
            let paired: Vec<f64> = stack_rates.iter().zip(&raw_rates).map(|(s, r)| s / r).collect();
            let raw_fig = Figure::new(
                "overhead",
                format!("{what}, {raw_label}, {callers} callers"),
                raw_rates.clone(),
            )
            .latency(&hists[0]);
            let mut stack_fig = Figure::new(
                "overhead",
                format!("{what}, {stack_label}, {callers} callers"),
                stack_rates,
            )
            .latency(&hists[1])
            .ceiling("the raw backend (ratio: median of paired runs)", &raw_rates);
            stack_fig.ratio = Some(median(&paired));
            self.figures.push(raw_fig);
            self.figures.push(stack_fig);
        }
        Ok(())
    }

    async fn finish(&mut self) {
        for b in std::mem::take(&mut self.cleanup) {
            let _ = b.drop_index(true).await;
        }
        if let Some(tools) = &self.tools {
            for p in std::mem::take(&mut self.raw_prefixes) {
                let _ = tools.delete_prefix(&p);
            }
        }
    }
}

fn callers_label(n: usize) -> String {
    if n == 1 { "1 caller".to_owned() } else { format!("{n} callers") }
}

fn fmt_rate(x: f64) -> String {
    if x >= 100.0 { format!("{x:.0}") } else { format!("{x:.1}") }
}

/// The figures as a table.
pub fn table(figures: &[Figure]) -> String {
    let mut t = Table::new([
        "workload",
        "variant",
        "median ops/s",
        "min–max",
        "p50 µs",
        "p99 µs",
        "recall@10",
        "ceiling ops/s",
        "ratio",
    ]);
    for f in figures {
        t.row([
            f.workload.clone(),
            f.variant.clone(),
            fmt_rate(f.median),
            format!("{}–{}", fmt_rate(f.min), fmt_rate(f.max)),
            f.p50_us.map_or_else(|| "-".into(), |x| format!("{x:.0}")),
            f.p99_us.map_or_else(|| "-".into(), |x| format!("{x:.0}")),
            f.recall_at_10.map_or_else(|| "-".into(), |x| format!("{x:.3}")),
            f.ceiling_median.map_or_else(|| "-".into(), fmt_rate),
            f.ratio.map_or_else(|| "-".into(), |x| format!("{x:.2}×")),
        ]);
    }
    t.render(0)
}

/// Runs the benchmark.
///
/// # Errors
/// Exit code 2 for bad options or data, 3 when the server is unusable, 1 when a workload
/// fails or (with `--quick`) produced no number.
pub async fn run(ctx: &Context, a: BenchArgs) -> CliResult<Outcome> {
    let started = Instant::now();
    let mut config = ctx.config()?;
    // Long pipelines into HNSW take a while on the server; the bench measures, it does not
    // test timeouts.
    config.redis.command_timeout = config.redis.command_timeout.max(Duration::from_secs(30));
    config.health.enabled = false;
    if a.concurrency == 0 || a.batch_sizes.contains(&0) {
        return Err(CliError::bad_input("--concurrency and --batch-sizes must be at least 1"));
    }
    if let Some(w) = a.workloads.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
        return Err(CliError::bad_input(format!(
            "unknown workload `{w}` in --workloads, expected some of {}",
            WORKLOADS.join(", ")
        )));
    }
    let runs = a.runs.unwrap_or(if a.quick { 2 } else { 3 }).max(1);
    let data = match &a.dataset {
        Some(dir) => data::load(
            dir,
            config.index.dimension as usize,
            a.entries.or(a.quick.then_some(2000)),
            a.queries.unwrap_or(if a.quick { 100 } else { 500 }),
        )?,
        None => data::generate(
            a.entries.unwrap_or(if a.quick { 2000 } else { 20_000 }),
            a.queries.unwrap_or(if a.quick { 100 } else { 500 }),
            a.dimension,
            a.seed,
        ),
    };
    if data.is_empty() || data.query_count() == 0 {
        return Err(CliError::bad_input("the benchmark needs at least one entry and one query"));
    }
    let tools = Tools::find(a.redis_bin.as_deref(), &config.redis);
    let show = !ctx.json && crate::output::stdout_is_terminal();
    let bar = if show {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let ns = Namespace::new(NS).map_err(|e| CliError::other(e.to_string()))?;
    let hnsw = Algorithm::Hnsw(HnswParams {
        m: config.index.m,
        ef_construction: config.index.ef_construction,
        ef_runtime: config.index.ef_runtime,
    });
    let mut b = Bench {
        config: config.clone(),
        data: Arc::new(data),
        runs,
        concurrency: a.concurrency,
        tools,
        ns,
        figures: Vec::new(),
        bar,
        cleanup: Vec::new(),
        raw_prefixes: Vec::new(),
        recorder: false,
    };
    let want = |w: &str| a.workloads.iter().any(|x| x == w);
    let result = async {
        let batch = *a.batch_sizes.last().unwrap_or(&1000);
        let ingest = want("ingest");
        let mut flat = None;
        if ingest || want("get") {
            for &bs in &a.batch_sizes {
                if ingest || bs == batch {
                    let kept =
                        b.ingest("flat", Algorithm::Flat, true, bs, bs == batch, ingest).await?;
                    flat = flat.or(kept);
                }
            }
        }
        if ingest {
            b.ingest("flat", Algorithm::Flat, false, batch, false, true).await?;
        }
        let hnsw_kept = if ingest || want("knn") || want("overhead") {
            b.ingest("hnsw", hnsw, false, batch, true, ingest).await?
        } else {
            None
        };
        if ingest {
            b.ingest_no_index()?;
        }
        if let Some((raw, stack, s)) = &flat
            && want("get")
        {
            let fields = raw.read_fields().unwrap_or_default();
            b.get_by_id(stack.clone(), &s.key_prefix, "FLAT index", &fields).await?;
        }
        if let Some((raw, stack, s)) = hnsw_kept {
            if want("knn") {
                b.knn(raw.clone(), stack.clone(), &s, &a.ef_sweep).await?;
            }
            if want("overhead") {
                let raw: Arc<dyn StorageBackend> = raw;
                b.overhead(raw, stack).await?;
            }
        }
        Ok::<_, CliError>(())
    }
    .await;
    b.bar.finish_and_clear();
    b.finish().await;
    result?;

    let missing: Vec<String> = b
        .figures
        .iter()
        .filter(|f| f.runs.is_empty() || !f.median.is_finite() || f.median <= 0.0)
        .map(|f| format!("{} {}", f.workload, f.variant))
        .collect();
    let command: Vec<String> = std::env::args().collect();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let json = json!({
        "command": command.join(" "),
        "configuration": {
            "data": b.data.source,
            "entries": b.data.len(),
            "queries": b.data.query_count(),
            "dimension": b.data.dim,
            "runs": runs,
            "concurrency": a.concurrency,
            "runtime_workers": workers,
            "batch_sizes": a.batch_sizes,
            "index": {"m": config.index.m, "ef_construction": config.index.ef_construction, "ef_runtime": config.index.ef_runtime},
            "redis_url": config.redis.url.to_string(),
            "ceiling_tools": b.tools.as_ref().map(|t| t.benchmark.parent().map(|p| p.display().to_string())),
            "quick": a.quick,
        },
        "figures": b.figures,
        "missing": missing,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let mut text = format!(
        "engram bench: {} entries x {} ({}), {} queries, {runs} runs per figure, {} callers, {workers} runtime worker(s), {:.0} s\n\n{}",
        b.data.len(),
        b.data.dim,
        b.data.source,
        b.data.query_count(),
        a.concurrency,
        started.elapsed().as_secs_f64(),
        table(&b.figures)
    );
    if b.tools.is_none() {
        text.push_str("\n(no ceiling: give --redis-bin DIR with redis-benchmark and redis-cli)\n");
    }
    let code = if missing.is_empty() {
        0
    } else {
        text.push_str(&format!("\nworkloads without a number: {}\n", missing.join(", ")));
        1
    };
    Ok(Outcome { json, text, code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_escaped_like_the_backend_does() {
        assert_eq!(escape_tag("non-free/libs"), "non\\-free\\/libs");
        assert_eq!(escape_tag("s_1"), "s_1");
    }

    #[test]
    fn figures_take_the_median_and_the_ratio_to_their_ceiling() {
        let f = Figure::new("get", "x", vec![3.0, 1.0, 2.0]).ceiling("c", &[4.0, 4.0]);
        assert_eq!((f.median, f.min, f.max), (2.0, 1.0, 3.0));
        assert_eq!(f.ratio, Some(0.5));
        assert!(Figure::new("get", "x", vec![]).ceiling("c", &[]).ratio.is_none());
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), 2.5);
    }

    #[test]
    fn hset_mirrors_the_backend_layout() {
        let d = data::generate(3, 1, 4, 1);
        let mut buf = Vec::new();
        hset(&mut buf, "p:", &d, 2, false);
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("*18\r\n$4\r\nHSET\r\n$20\r\np:bench:000000000002\r\n"), "{text}");
        for field in
            ["__ns", "__exp", "__ver", "__payload", "__acc_n", "__vec", "section", "created"]
        {
            assert!(text.contains(&format!("\r\n{field}\r\n")), "{field}");
        }
    }
}
