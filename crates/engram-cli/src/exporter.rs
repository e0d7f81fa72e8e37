//! The Prometheus exporter of the CLI (`serve-metrics`, and the demo's endpoint).
//!
//! Libraries only emit through the `metrics` facade; this binary installs the recorder:
//! `metrics-exporter-prometheus` with its HTTP listener only, explicit buckets for every
//! histogram (without them the exporter writes summaries, which cannot be aggregated across
//! instances), bound to `observability.metrics_address` (loopback by default), with the
//! metric descriptions registered after installing (descriptions given before are lost).

use std::net::SocketAddr;
use std::time::Duration;

use engram_memory::MemoryStore;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde_json::json;

use crate::cli::ServeMetricsArgs;
use crate::commands::{Context, Outcome};
use crate::error::{CliError, CliResult};

/// Documents in the index, labelled `index` (from `FT.INFO`).
pub const INDEX_DOCUMENTS: &str = "engram_index_documents";
/// Documents the server refused to index, labelled `index`.
pub const INDEX_INDEXING_FAILURES: &str = "engram_index_indexing_failures";
/// Always 1, labelled `version`.
pub const BUILD_INFO: &str = "engram_build_info";

/// Latency buckets in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Buckets of counts (batch sizes, hits per search).
const COUNT_BUCKETS: [f64; 14] =
    [0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0];

/// The exporter's configuration: explicit buckets for every histogram.
fn builder() -> CliResult<PrometheusBuilder> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full("engram_batch_size".into()), &COUNT_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full("engram_search_results".into()), &COUNT_BUCKETS)
        })
        .map_err(|e| CliError::other(format!("cannot configure the metrics exporter: {e}")))
}

/// Installs the exporter with its HTTP listener on `address` and registers every metric's
/// description. Call once per process, inside a tokio runtime.
///
/// # Errors
/// Exit code 2 when the address cannot be bound or a recorder is already installed.
pub fn install(address: SocketAddr) -> CliResult<()> {
    builder()?
        .with_http_listener(address)
        .install()
        .map_err(|e| CliError::bad_input(format!("cannot serve metrics on {address}: {e}")))?;
    describe();
    Ok(())
}

/// Installs the exporter as [`install`] does, without its HTTP listener: the metrics are
/// recorded, with the same buckets, and drained every 5 seconds as the listener's upkeep
/// would. For `engram bench`, to measure what recording costs. Call inside a tokio runtime.
///
/// # Errors
/// When a recorder is already installed.
pub fn install_without_listener() -> CliResult<()> {
    let handle = builder()?
        .install_recorder()
        .map_err(|e| CliError::other(format!("cannot install the metrics recorder: {e}")))?;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            handle.run_upkeep();
        }
    });
    describe();
    Ok(())
}

/// Registers every metric's description (after installing: descriptions given before are
/// lost).
fn describe() {
    engram_storage::layers::describe_metrics();
    engram_resilience::MetricsObserver::describe();
    metrics::describe_gauge!(INDEX_DOCUMENTS, "Documents in the index (from FT.INFO)");
    metrics::describe_gauge!(INDEX_INDEXING_FAILURES, "Documents the server refused to index");
    metrics::describe_gauge!(BUILD_INFO, "Always 1; the version is a label");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Reads the index statistics and sets the index gauges.
pub async fn update_index_gauges(store: &MemoryStore) {
    if let Ok(info) = store.get_health_status().await.backend
        && let Some(stats) = info.index
    {
        let index = store.schema().name.clone();
        metrics::gauge!(INDEX_DOCUMENTS, "index" => index.clone()).set(stats.documents as f64);
        metrics::gauge!(INDEX_INDEXING_FAILURES, "index" => index)
            .set(stats.indexing_failures as f64);
    }
}

/// Keeps the index gauges fresh every `interval` until `until` passes (or for ever), or until
/// Ctrl-C.
pub async fn serve_until(store: &MemoryStore, interval: Duration, until: Option<Duration>) {
    let stop = async {
        match until {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let refresh = async {
        loop {
            update_index_gauges(store).await;
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        () = stop => {}
        () = refresh => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `serve-metrics`.
///
/// # Errors
/// Exit code 2 when the address cannot be bound, 3 when the server is unusable.
pub async fn serve_metrics(ctx: &Context, a: ServeMetricsArgs) -> CliResult<Outcome> {
    let config = ctx.config()?;
    let address = a.address.unwrap_or(config.observability.metrics_address);
    install(address)?;
    let interval = config.health.interval;
    let store = ctx.connect(config, true).await?;
    if !ctx.json {
        eprintln!("serving metrics on http://{address}/metrics (Ctrl-C stops)");
    }
    serve_until(&store, interval, a.seconds.map(Duration::from_secs)).await;
    Ok(Outcome::ok(
        json!({"address": address.to_string(), "stopped": true}),
        "stopped serving metrics\n",
    ))
}
