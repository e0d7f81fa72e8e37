//! Per-call overhead of the full layer stack (metrics, retry with budget, breaker, timeout)
//! over the in-process backend, on the closed-breaker, first-try path.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use engram_config::Config;
use engram_resilience::{NoopObserver, TokioClock};
use engram_storage::layers::StackBuilder;
use engram_storage::testkit::conformance::record;
use engram_storage::testkit::suite_schema;
use engram_storage::{InProcessBackend, Namespace, RecordId, StorageBackend, StorageBackendExt};

fn layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let schema = suite_schema();
    let bare: Arc<dyn StorageBackend> = Arc::new(InProcessBackend::new());
    rt.block_on(bare.ensure_index(&schema)).expect("index");
    let ns = Namespace::new("bench").expect("ns");
    rt.block_on(bare.put(record(&ns, "r1", [1.0, 0.5, 0.0, 0.0]))).expect("put");
    let stack = StackBuilder::from_config(
        bare.clone(),
        &Config::default(),
        "bench",
        Arc::new(TokioClock),
        Arc::new(NoopObserver),
    )
    .expect("stack")
    .build();
    let id = RecordId::new("r1").expect("id");

    let mut group = c.benchmark_group("stack");
    group.bench_function("count_bare", |b| b.iter(|| rt.block_on(bare.count(black_box(&ns)))));
    group.bench_function("count_layered", |b| b.iter(|| rt.block_on(stack.count(black_box(&ns)))));
    group.bench_function("get_bare", |b| b.iter(|| rt.block_on(bare.get(black_box(&ns), &id))));
    group.bench_function("get_layered", |b| b.iter(|| rt.block_on(stack.get(black_box(&ns), &id))));
    group.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
