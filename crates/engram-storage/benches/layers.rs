//! Per-call overhead of the full layer stack (metrics, retry with budget, breaker, timeout)
//! over the in-process backend, on the closed-breaker, first-try path.
//!
//! Groups, each comparing the bare backend with the stack built from the default config:
//!
//! - `stack`: one call at a time on a current-thread runtime; the backend answers at once,
//!   so the timeout's timer is never armed.
//! - `stack_yield`: the same, but the backend yields once before answering, as a network
//!   backend does, so the timeout's timer is armed and cleared on every call.
//! - `stack_recorder`: `stack_yield` with a metrics recorder of the Prometheus exporter's
//!   shape (a sharded registry of atomics), so every metric update looks up its handle.
//! - `stack_mt16`: 16 tasks calling concurrently on a 2-worker multi-thread runtime, backend
//!   yielding once; the time is per call.
//!
//! Against Redis: `ENGRAM_BENCH_REDIS=<url>` skips criterion, stores 20,000 small records and
//! alternates runs of 16 concurrent callers reading one record each by id through the raw
//! backend and through the stack (`ENGRAM_BENCH_ROUNDS` rounds of `ENGRAM_BENCH_OPS` gets
//! each, default 5 and 40,000), printing per run the rate, the process CPU time per get
//! (user + system, from `/proc/self/stat`, so others' load on the machine matters less than
//! for the rate) and the p50/p99 latency, then the medians over rounds of the stack's rate
//! relative to the raw backend's and of what it adds in CPU time and p99 latency. Rounds
//! alternate which of the two runs first. The stack is built around the `RedisBackend` itself,
//! as the memory store builds it, so it holds the backend's reads unboxed
//! ([`engram_storage::UnboxedBackend`]); `ENGRAM_BENCH_DYN=1` builds it around the trait
//! object instead, every read then boxed twice.
//!
//! For instruction counts, `ENGRAM_BENCH_CASE=<case> ENGRAM_BENCH_CALLS=<n>` skips criterion
//! and makes `n` calls of one case on a current-thread runtime (cases: `get_bare`,
//! `get_layered`, `get_bare_yield`, `get_layered_yield`, `get_bare_limit`, `get_layered_limit`
//! (yielding, but the backend ends single gets itself as the Redis backend does, so no timer
//! is armed), `get_layered_recorder`, `count_bare`, `count_layered`). Run it under `valgrind --tool=callgrind` with two values
//! of `n`: the difference of the totals divided by the difference of `n` is the cost of one
//! call, without the setup.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group};
use engram_config::Config;
use engram_resilience::{NoopObserver, TokioClock};
use engram_storage::layers::StackBuilder;
use engram_storage::testkit::conformance::record;
use engram_storage::testkit::suite_schema;
use engram_storage::{
    BackendInfo, BatchReport, Filter, InProcessBackend, IndexSchema, IndexStatus, Namespace,
    Record, RecordId, ScanCursor, ScanPage, SearchHit, StorageBackend, StorageBackendExt,
    StorageError, Timestamp, Touched, UnboxedBackend, VectorQuery,
};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_util::registry::{Registry, Storage};
use tokio::runtime::Runtime;

/// Forwards to the in-process backend, yielding once first, as a network backend does: the
/// first poll is pending, so the layers' timers are armed, unless the backend claims its own
/// limit for single gets (the second field), as the Redis backend does.
#[derive(Debug)]
struct Yielding(Arc<dyn StorageBackend>, Option<Duration>);

#[async_trait]
impl StorageBackend for Yielding {
    async fn ensure_index(&self, schema: &IndexSchema) -> Result<IndexStatus, StorageError> {
        self.0.ensure_index(schema).await
    }
    async fn put_batch(&self, records: Vec<Record>) -> BatchReport<()> {
        tokio::task::yield_now().await;
        self.0.put_batch(records).await
    }
    async fn get_batch(
        &self,
        namespace: &Namespace,
        ids: &[RecordId],
    ) -> BatchReport<Option<Record>> {
        tokio::task::yield_now().await;
        self.0.get_batch(namespace, ids).await
    }
    async fn delete_batch(&self, namespace: &Namespace, ids: &[RecordId]) -> BatchReport<bool> {
        tokio::task::yield_now().await;
        self.0.delete_batch(namespace, ids).await
    }
    async fn search(&self, query: &VectorQuery) -> Result<Vec<SearchHit>, StorageError> {
        tokio::task::yield_now().await;
        self.0.search(query).await
    }
    async fn find(
        &self,
        namespace: &Namespace,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        self.0.find(namespace, filter, limit).await
    }
    async fn count(&self, namespace: &Namespace) -> Result<u64, StorageError> {
        tokio::task::yield_now().await;
        self.0.count(namespace).await
    }
    async fn scan(
        &self,
        namespace: &Namespace,
        cursor: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, StorageError> {
        self.0.scan(namespace, cursor, limit).await
    }
    async fn touch(
        &self,
        namespace: &Namespace,
        id: &RecordId,
        now: Timestamp,
        ttl: Option<Duration>,
    ) -> Result<Option<Touched>, StorageError> {
        self.0.touch(namespace, id, now, ttl).await
    }
    async fn compare_and_set(
        &self,
        record: Record,
        expected: Option<u64>,
    ) -> Result<(), StorageError> {
        self.0.compare_and_set(record, expected).await
    }
    async fn ping(&self) -> Result<Duration, StorageError> {
        self.0.ping().await
    }
    async fn describe(&self) -> Result<BackendInfo, StorageError> {
        self.0.describe().await
    }
    fn call_limit(&self, op: engram_storage::Operation, items: usize) -> Option<Duration> {
        self.1.filter(|_| op == engram_storage::Operation::Get && items == 1)
    }
}

/// A histogram that keeps a count and a sum: recording costs about what the exporter's
/// atomic bucket push costs, and memory stays flat however long the bench runs.
#[derive(Debug, Default)]
struct SumHistogram {
    count: AtomicU64,
    sum_bits: AtomicU64,
}

impl HistogramFn for SumHistogram {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self.sum_bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            Some((f64::from_bits(b) + value).to_bits())
        });
    }
}

/// Storage of the bench recorder: atomics behind `Arc`s, as in the Prometheus exporter.
#[derive(Debug, Default)]
struct BenchStorage;

impl Storage<Key> for BenchStorage {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<SumHistogram>;

    fn counter(&self, _: &Key) -> Self::Counter {
        Arc::default()
    }
    fn gauge(&self, _: &Key) -> Self::Gauge {
        Arc::default()
    }
    fn histogram(&self, _: &Key) -> Self::Histogram {
        Arc::default()
    }
}

/// A recorder with the Prometheus exporter's lookup path: a sharded registry keyed by
/// `Key`, returning shared atomics.
struct BenchRecorder(Registry<Key, BenchStorage>);

impl BenchRecorder {
    fn new() -> Self {
        Self(Registry::new(BenchStorage))
    }
}

impl Recorder for BenchRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0.get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0.get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0.get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

struct Fixture {
    ns: Namespace,
    id: RecordId,
    bare: Arc<dyn StorageBackend>,
    stack: Arc<dyn StorageBackend>,
    bare_yield: Arc<dyn StorageBackend>,
    stack_yield: Arc<dyn StorageBackend>,
    /// Yielding, ending single gets itself as the Redis backend does (no timer armed).
    bare_limit: Arc<dyn StorageBackend>,
    stack_limit: Arc<dyn StorageBackend>,
}

fn stack<B: UnboxedBackend + ?Sized + 'static>(backend: Arc<B>) -> Arc<dyn StorageBackend> {
    StackBuilder::from_config(
        backend,
        &Config::default(),
        "bench",
        Arc::new(TokioClock),
        Arc::new(NoopObserver),
    )
    .expect("stack")
    .build()
}

fn fixture(rt: &Runtime) -> Fixture {
    let schema = suite_schema();
    let bare: Arc<dyn StorageBackend> = Arc::new(InProcessBackend::new());
    rt.block_on(bare.ensure_index(&schema)).expect("index");
    let ns = Namespace::new("bench").expect("ns");
    rt.block_on(bare.put(record(&ns, "r1", [1.0, 0.5, 0.0, 0.0]))).expect("put");
    let bare_yield: Arc<dyn StorageBackend> = Arc::new(Yielding(bare.clone(), None));
    let bare_limit: Arc<dyn StorageBackend> =
        Arc::new(Yielding(bare.clone(), Some(Duration::from_secs(1))));
    Fixture {
        ns,
        id: RecordId::new("r1").expect("id"),
        stack: stack(bare.clone()),
        stack_yield: stack(bare_yield.clone()),
        stack_limit: stack(bare_limit.clone()),
        bare_limit,
        bare,
        bare_yield,
    }
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime")
}

fn layers(c: &mut Criterion) {
    let rt = current_thread();
    let f = fixture(&rt);
    let (ns, id) = (&f.ns, &f.id);

    let mut group = c.benchmark_group("stack");
    group.bench_function("count_bare", |b| b.iter(|| rt.block_on(f.bare.count(black_box(ns)))));
    group.bench_function("count_layered", |b| b.iter(|| rt.block_on(f.stack.count(black_box(ns)))));
    group.bench_function("get_bare", |b| b.iter(|| rt.block_on(f.bare.get(black_box(ns), id))));
    group.bench_function("get_layered", |b| b.iter(|| rt.block_on(f.stack.get(black_box(ns), id))));
    group.finish();

    let mut group = c.benchmark_group("stack_yield");
    group.bench_function("get_bare", |b| {
        b.iter(|| rt.block_on(f.bare_yield.get(black_box(ns), id)))
    });
    group.bench_function("get_layered", |b| {
        b.iter(|| rt.block_on(f.stack_yield.get(black_box(ns), id)))
    });
    group.finish();

    let recorder = BenchRecorder::new();
    let mut group = c.benchmark_group("stack_recorder");
    group.bench_function("get_bare", |b| {
        metrics::with_local_recorder(&recorder, || {
            b.iter(|| rt.block_on(f.bare_yield.get(black_box(ns), id)))
        })
    });
    group.bench_function("get_layered", |b| {
        metrics::with_local_recorder(&recorder, || {
            b.iter(|| rt.block_on(f.stack_yield.get(black_box(ns), id)))
        })
    });
    group.finish();
}

const TASKS: u64 = 16;

/// `iters` gets spread over 16 tasks on a 2-worker runtime; returns the wall time.
fn concurrent(
    rt: &Runtime,
    backend: &Arc<dyn StorageBackend>,
    f: &Fixture,
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let (b, ns, id) = (backend.clone(), f.ns.clone(), f.id.clone());
                let n = iters / TASKS + u64::from(t < iters % TASKS);
                tokio::spawn(async move {
                    for _ in 0..n {
                        let _ = black_box(b.get(&ns, &id).await);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        start.elapsed()
    })
}

fn layers_concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let f = fixture(&rt);
    let mut group = c.benchmark_group("stack_mt16");
    group.bench_function("get_bare", |b| {
        b.iter_custom(|iters| concurrent(&rt, &f.bare_yield, &f, iters))
    });
    group.bench_function("get_layered", |b| {
        b.iter_custom(|iters| concurrent(&rt, &f.stack_yield, &f, iters))
    });
    group.finish();
}

/// `ENGRAM_BENCH_CALLS` calls of `ENGRAM_BENCH_CASE`, for instruction counts.
fn counted(case: &str, calls: u64) {
    let rt = current_thread();
    let f = fixture(&rt);
    let recorder = BenchRecorder::new();
    let (ns, id) = (&f.ns, &f.id);
    rt.block_on(async {
        for _ in 0..calls {
            match case {
                "get_bare" => drop(black_box(f.bare.get(ns, id).await)),
                "get_layered" => drop(black_box(f.stack.get(ns, id).await)),
                "get_bare_yield" => drop(black_box(f.bare_yield.get(ns, id).await)),
                "get_layered_yield" => drop(black_box(f.stack_yield.get(ns, id).await)),
                "get_bare_limit" => drop(black_box(f.bare_limit.get(ns, id).await)),
                "get_layered_limit" => drop(black_box(f.stack_limit.get(ns, id).await)),
                "get_layered_recorder" => {
                    let call = f.stack_yield.get(ns, id);
                    // The future is polled with the recorder in place on every poll.
                    let mut call = std::pin::pin!(call);
                    let out = std::future::poll_fn(|cx| {
                        metrics::with_local_recorder(&recorder, || call.as_mut().poll(cx))
                    })
                    .await;
                    drop(black_box(out));
                }
                "count_bare" => drop(black_box(f.bare.count(ns).await)),
                "count_layered" => drop(black_box(f.stack.count(ns).await)),
                other => panic!("unknown case {other}"),
            }
        }
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = layers, layers_concurrent
}

/// Raw backend against the stack on a real Redis server; see the module docs.
#[cfg(feature = "redis")]
fn redis_overhead(url: &str) {
    use engram_config::RedisUrl;
    use engram_storage::redis::{RedisBackend, RedisBackendOptions};

    fn env_or(name: &str, default: u64) -> u64 {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    }
    /// User + system CPU time of this process, in clock ticks of 10 ms.
    fn cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
        let after = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of proc(5), counted from the state (field 3) here.
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }
    const RECORDS: usize = 20_000;
    let (rounds, ops) = (env_or("ENGRAM_BENCH_ROUNDS", 5), env_or("ENGRAM_BENCH_OPS", 40_000));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = Config::default();
    config.redis.url = RedisUrl::new(url);
    let raw = Arc::new(
        rt.block_on(RedisBackend::connect(&config.redis, RedisBackendOptions::default()))
            .expect("connect"),
    );
    let schema = suite_schema();
    rt.block_on(raw.ensure_index(&schema)).expect("index");
    let ns = Namespace::new("bench").expect("ns");
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(1_000) {
        let records = chunk.iter().map(|i| record(&ns, &format!("r{i}"), [1.0, 0.5, 0.0, 0.0]));
        let report = rt.block_on(raw.put_batch(records.collect()));
        assert!(report.all_succeeded(), "ingest failed");
    }
    let raw_dyn: Arc<dyn StorageBackend> = raw.clone();
    // `ENGRAM_BENCH_CONTROL=1` puts the raw backend in the stack's place: the medians then
    // show the noise of the comparison itself.
    let layered = if std::env::var_os("ENGRAM_BENCH_CONTROL").is_some() {
        raw_dyn.clone()
    } else if std::env::var_os("ENGRAM_BENCH_DYN").is_some() {
        stack(raw_dyn.clone())
    } else {
        stack(raw.clone())
    };
    println!("redis {url}: {RECORDS} records, {TASKS} callers, {ops} gets per run");
    println!("round  backend  gets/s    cpu us/get  p50 us  p99 us");
    let (mut ratios, mut cpu_added, mut p99_added) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Odd rounds run the raw backend first, even rounds the stack, so that neither
        // profits from going second.
        let mut order = [("raw", &raw_dyn), ("stack", &layered)];
        if round % 2 == 0 {
            order.reverse();
        }
        let mut figures = [(0.0, 0.0, 0); 2];
        for (name, backend) in order {
            let cpu = cpu_ticks();
            let start = Instant::now();
            let mut latencies = rt.block_on(async {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|t| {
                        let (b, ns) = (backend.clone(), ns.clone());
                        tokio::spawn(async move {
                            let mut lat = Vec::new();
                            for i in (t..ops).step_by(TASKS as usize) {
                                let id = RecordId::new(format!("r{}", (i * 7919) % RECORDS as u64))
                                    .expect("id");
                                let t0 = Instant::now();
                                let report = b.get_batch(&ns, std::slice::from_ref(&id)).await;
                                lat.push(t0.elapsed());
                                assert!(report.all_succeeded(), "get failed");
                            }
                            lat
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.expect("task"));
                }
                all
            });
            let wall = start.elapsed();
            let ticks = cpu_ticks() - cpu;
            latencies.sort();
            let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_micros();
            let (rate, cpu) =
                (ops as f64 / wall.as_secs_f64(), ticks as f64 * 10_000.0 / ops as f64);
            println!(
                "{round:<5}  {name:<7}  {rate:<8.0}  {cpu:<10.2}  {:<6}  {}",
                at(0.5),
                at(0.99)
            );
            figures[usize::from(name == "stack")] = (rate, cpu, at(0.99));
        }
        let [(raw_rate, raw_cpu, raw_p99), (rate, cpu, p99)] = figures;
        ratios.push(rate / raw_rate);
        cpu_added.push(cpu - raw_cpu);
        p99_added.push(p99 as f64 - raw_p99 as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median of {rounds} rounds: stack/raw rate {:.3}, cpu {:+.2} us/get, p99 {:+.0} us",
        median(&mut ratios),
        median(&mut cpu_added),
        median(&mut p99_added)
    );
    rt.block_on(raw.drop_index(true)).expect("drop index");
}

fn main() {
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("ENGRAM_BENCH_REDIS") {
        redis_overhead(&url);
        return;
    }
    if let (Ok(case), Ok(calls)) =
        (std::env::var("ENGRAM_BENCH_CASE"), std::env::var("ENGRAM_BENCH_CALLS"))
    {
        counted(&case, calls.parse().expect("ENGRAM_BENCH_CALLS is a number"));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
