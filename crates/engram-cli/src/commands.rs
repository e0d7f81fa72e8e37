//! The data commands: remember, recall, get, forget, list, stats, health, index, config.
//!
//! Each returns an [`Outcome`]: a JSON document for `--json`, text for people, and the exit
//! code. Nothing here prints, so tests can run the commands in process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_config::Config;
use engram_memory::{
    LexicalEmbedder, MemoryEntry, MemoryError, MemoryQuery, MemoryStore, MemoryType, StoreMetrics,
    StoreOptions, Timestamp,
};
use engram_resilience::HealthStatus;
use serde_json::{Value, json};

use crate::cli::{ConfigAction, ForgetArgs, GetArgs, HealthArgs, IndexAction, ListArgs};
use crate::cli::{RecallArgs, RememberArgs, StatsArgs};
use crate::error::{CliError, CliResult, ExitKind};
use crate::output::{Table, entry_json, human_duration, relative, rfc3339, scored_json, truncate};

/// What a command produced.
#[derive(Debug)]
pub struct Outcome {
    /// The `--json` document.
    pub json: Value,
    /// The text for people.
    pub text: String,
    /// The exit code (0 unless the command says otherwise, as `health` does).
    pub code: u8,
}

impl Outcome {
    /// A successful outcome.
    pub fn ok(json: Value, text: impl Into<String>) -> Self {
        Self { json, text: text.into(), code: 0 }
    }
}

/// Global options every command needs.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `--config`.
    pub config_path: Option<PathBuf>,
    /// `--json`.
    pub json: bool,
}

impl Context {
    /// Loads the configuration: `--config`, else `$ENGRAM_CONFIG`, then the environment.
    ///
    /// # Errors
    /// Exit code 2 with every problem of the configuration.
    pub fn config(&self) -> CliResult<Config> {
        let loaded = match &self.config_path {
            Some(p) => Config::load(Some(p)),
            None => Config::load_from_env(),
        };
        loaded.map_err(|e| CliError::bad_input(e.to_string()))
    }

    /// Connects to Redis Stack and opens the index. One-shot commands run no background
    /// health checker unless `keep_health` is set.
    ///
    /// # Errors
    /// Exit code 2 for bad configuration or credentials, 3 when the server is unusable.
    pub async fn connect(&self, mut config: Config, keep_health: bool) -> CliResult<MemoryStore> {
        if !keep_health {
            config.health.enabled = false;
        }
        let url = config.redis.url.to_string();
        MemoryStore::connect(config).await.map_err(|e| cannot_open(&url, e))
    }
}

/// The error of a store that could not be opened at `url`, with its exit code.
fn cannot_open(url: &str, e: MemoryError) -> CliError {
    CliError::from_connect(e).context(format!("cannot open {url}"))
}

/// Parses a duration like `90s`, `250ms`, `4h`.
///
/// # Errors
/// Exit code 2 naming the option.
pub fn parse_duration(option: &str, s: &str) -> CliResult<Duration> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        CliError::bad_input(format!(
            "{option}: expected a duration like 90s or 4h, found {s:?} ({e})"
        ))
    })
}

/// Reads a vector given as a JSON array of numbers from `path` (`-` for stdin).
///
/// # Errors
/// Exit code 2 when the file cannot be read or holds something else.
pub fn read_vector(option: &str, path: &Path) -> CliResult<Vec<f32>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::bad_input(format!("{option}: cannot read stdin: {e}")))?
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            CliError::bad_input(format!("{option}: cannot read {}: {e}", path.display()))
        })?
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        CliError::bad_input(format!(
            "{option}: expected a JSON array of numbers, found invalid JSON ({e})"
        ))
    })?;
    vector_from_json(option, &value)
}

/// A vector from a JSON array of numbers.
///
/// # Errors
/// Exit code 2 naming the first element that is not a finite number.
pub fn vector_from_json(what: &str, value: &Value) -> CliResult<Vec<f32>> {
    let Value::Array(items) = value else {
        return Err(CliError::bad_input(format!(
            "{what}: expected a JSON array of numbers, found {}",
            json_type(value)
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64().map(|f| f as f32).filter(|f| f.is_finite()).ok_or_else(|| {
                CliError::bad_input(format!(
                    "{what}: element {i} should be a finite number, found {}",
                    json_type(x)
                ))
            })
        })
        .collect()
}

/// The JSON type of a value, for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses `KEY=VALUE` metadata; VALUE is JSON when it parses, else text.
///
/// # Errors
/// Exit code 2 without `=`.
pub fn parse_meta(kv: &str) -> CliResult<(String, engram_memory::MetadataValue)> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| CliError::bad_input(format!("--meta: expected KEY=VALUE, found {kv:?}")))?;
    let value = serde_json::from_str::<Value>(v)
        .map(|j| crate::output::json_to_metadata(&j))
        .unwrap_or_else(|_| engram_memory::MetadataValue::Text(v.to_owned()));
    Ok((k.to_owned(), value))
}

fn embedder(config: &Config) -> LexicalEmbedder {
    LexicalEmbedder::new(config.index.dimension as usize)
}

/// `remember`.
///
/// # Errors
/// Bad input (2) before any I/O, or the store's error.
pub async fn remember(ctx: &Context, a: RememberArgs) -> CliResult<Outcome> {
    let config = ctx.config()?;
    let embedding = match &a.embedding_file {
        Some(p) => read_vector("--embedding-file", p)?,
        None => embedder(&config).embed(&a.content),
    };
    let mut b = MemoryEntry::builder(&a.namespace, a.content.clone())
        .memory_type(a.memory_type.into())
        .importance(a.importance)
        .embedding(embedding)
        .tags(a.tags.clone());
    if let Some(id) = &a.id {
        b = b.id(id.clone());
    }
    for kv in &a.metadata {
        let (k, v) = parse_meta(kv)?;
        b = b.metadata(k, v);
    }
    if let Some(d) = &a.expires_in {
        b = b.expires_at(Timestamp::now().plus(parse_duration("--expires-in", d)?));
    }
    let entry = b.build()?;
    let store = ctx.connect(config, false).await?;
    let id = store.add(entry).await?;
    Ok(Outcome::ok(
        json!({"id": id.as_str(), "namespace": a.namespace}),
        format!("remembered {} in {}", id.as_str(), a.namespace),
    ))
}

/// Builds the memory query of `recall`.
///
/// # Errors
/// Bad input (2).
pub fn recall_query(config: &Config, a: &RecallArgs) -> CliResult<MemoryQuery> {
    let vector = match (&a.vector_file, &a.query) {
        (Some(p), _) => read_vector("--vector-file", p)?,
        (None, Some(q)) => embedder(config).embed(q),
        (None, None) => {
            return Err(CliError::bad_input("recall: expected a query text or --vector-file"));
        }
    };
    let mut q = MemoryQuery::new(&a.namespace, vector)?.k(a.k);
    if !a.types.is_empty() {
        q = q.types(a.types.iter().map(|t| MemoryType::from(*t)));
    }
    if !a.tags.is_empty() {
        q = q.tags(a.tags.clone());
    }
    if let Some(x) = a.min_importance {
        q = q.min_importance(x);
    }
    if let Some(x) = a.max_importance {
        q = q.max_importance(x);
    }
    if let Some(t) = &a.text {
        q = q.text(t.clone());
    }
    if let Some(d) = a.max_distance {
        q = q.max_distance(d);
    }
    if let Some(ef) = a.ef_runtime {
        q = q.ef_runtime(ef);
    }
    q.validate()?;
    Ok(q)
}

/// The recall results as a table.
pub fn recall_table(hits: &[engram_memory::ScoredMemory]) -> String {
    if hits.is_empty() {
        return "  (nothing recalled)\n".to_owned();
    }
    let mut t = Table::new(["#", "score", "type", "imp", "id", "content"]);
    for (i, h) in hits.iter().enumerate() {
        t.row([
            (i + 1).to_string(),
            format!("{:.3}", h.score),
            h.entry.memory_type.to_string(),
            format!("{:.2}", h.entry.importance),
            h.entry.id.to_string(),
            truncate(&h.entry.content, 70),
        ]);
    }
    t.render(2)
}

/// `recall`.
///
/// # Errors
/// Bad input (2) before any I/O, or the store's error.
pub async fn recall(ctx: &Context, a: RecallArgs) -> CliResult<Outcome> {
    let config = ctx.config()?;
    let query = recall_query(&config, &a)?;
    let store = ctx.connect(config, false).await?;
    let started = Instant::now();
    let hits = store.query(query).await?;
    let took = started.elapsed();
    Ok(Outcome::ok(
        json!({
            "namespace": a.namespace,
            "took_ms": took.as_secs_f64() * 1000.0,
            "results": hits.iter().map(scored_json).collect::<Vec<_>>(),
        }),
        format!("{} result(s) in {}\n{}", hits.len(), human_duration(took), recall_table(&hits)),
    ))
}

/// One entry for people.
pub fn entry_text(e: &MemoryEntry) -> String {
    let now = Timestamp::now();
    let mut t = Table::new(["field", "value"]);
    t.row(["id", e.id.as_str()]);
    t.row(["namespace", e.namespace.as_str()]);
    t.row(["content", &e.content]);
    t.row(["type", e.memory_type.as_str()]);
    t.row(["importance", &format!("{:.2}", e.importance)]);
    t.row(["tags", &e.tags.join(", ")]);
    if !e.metadata.is_empty() {
        let m = entry_json(e, false)["metadata"].to_string();
        t.row(["metadata".to_owned(), m]);
    }
    t.row(["created", &format!("{} ({})", rfc3339(e.created_at), relative(e.created_at, now))]);
    t.row(["updated", &rfc3339(e.updated_at)]);
    t.row([
        "accessed".to_owned(),
        match e.last_accessed {
            Some(a) => format!("{} times, last {}", e.access_count, relative(a, now)),
            None => format!("{} times", e.access_count),
        },
    ]);
    t.row([
        "expires".to_owned(),
        e.expires_at.map_or_else(
            || "never".to_owned(),
            |x| format!("{} ({})", rfc3339(x), relative(x, now)),
        ),
    ]);
    t.row(["version", &e.version.to_string()]);
    t.row([
        "embedding".to_owned(),
        e.embedding
            .as_ref()
            .map_or_else(|| "none".to_owned(), |v| format!("{} dimensions", v.len())),
    ]);
    t.render(2)
}

/// `get`.
///
/// # Errors
/// Exit code 1 when the id is not in the namespace, else as other commands.
pub async fn get(ctx: &Context, a: GetArgs) -> CliResult<Outcome> {
    let store = ctx.connect(ctx.config()?, false).await?;
    let found = if a.peek {
        store.get_batch(&a.namespace, &[a.id.as_str()]).await.pop().unwrap_or(Ok(None))?
    } else {
        store.get(&a.namespace, &a.id).await?
    };
    match found {
        Some(e) => Ok(Outcome::ok(entry_json(&e, a.with_embedding), entry_text(&e))),
        None => {
            Err(CliError::other(format!("memory {} not found in namespace {}", a.id, a.namespace)))
        }
    }
}

/// `forget`.
///
/// # Errors
/// Exit code 1 when some id did not exist, else as other commands.
pub async fn forget(ctx: &Context, a: ForgetArgs) -> CliResult<Outcome> {
    // Check the ids before connecting, so a typo costs no round trip.
    for id in &a.ids {
        engram_memory::memory_id(id)?;
    }
    engram_memory::namespace(&a.namespace)?;
    let store = ctx.connect(ctx.config()?, false).await?;
    let ids: Vec<&str> = a.ids.iter().map(String::as_str).collect();
    let results = store.delete_batch(&a.namespace, &ids).await;
    let mut items = Vec::new();
    let mut text = String::new();
    let (mut deleted, mut missing) = (0, 0);
    for (id, r) in a.ids.iter().zip(results) {
        match r? {
            true => {
                deleted += 1;
                text.push_str(&format!("forgot {id}\n"));
                items.push(json!({"id": id, "deleted": true}));
            }
            false => {
                missing += 1;
                text.push_str(&format!("{id}: not found in {}\n", a.namespace));
                items.push(json!({"id": id, "deleted": false}));
            }
        }
    }
    let json =
        json!({"namespace": a.namespace, "deleted": deleted, "missing": missing, "items": items});
    Ok(Outcome { json, text, code: if missing > 0 { ExitKind::Other.code() } else { 0 } })
}

/// `list`.
///
/// # Errors
/// As other commands.
pub async fn list(ctx: &Context, a: ListArgs) -> CliResult<Outcome> {
    if a.limit == 0 || a.limit > engram_storage::MAX_SCAN_PAGE {
        return Err(CliError::bad_input(format!(
            "--limit: expected 1 to {}, found {}",
            engram_storage::MAX_SCAN_PAGE,
            a.limit
        )));
    }
    let store = ctx.connect(ctx.config()?, false).await?;
    let mut entries = Vec::new();
    let mut cursor = a.cursor.clone();
    loop {
        let page = store.list(&a.namespace, cursor, a.limit).await?;
        entries.extend(page.entries);
        cursor = page.next;
        if !a.all || cursor.is_none() {
            break;
        }
    }
    entries.sort_by(|x, y| x.created_at.cmp(&y.created_at).then_with(|| x.id.cmp(&y.id)));
    let mut t = Table::new(["id", "type", "imp", "created", "content"]);
    let now = Timestamp::now();
    for e in &entries {
        t.row([
            e.id.to_string(),
            e.memory_type.to_string(),
            format!("{:.2}", e.importance),
            relative(e.created_at, now),
            truncate(&e.content, 60),
        ]);
    }
    let mut text = if t.is_empty() { "  (no memories)\n".to_owned() } else { t.render(2) };
    if let Some(c) = &cursor {
        text.push_str(&format!("more: --cursor {c}\n"));
    }
    Ok(Outcome::ok(
        json!({
            "namespace": a.namespace,
            "entries": entries.iter().map(|e| entry_json(e, false)).collect::<Vec<_>>(),
            "next_cursor": cursor,
        }),
        text,
    ))
}

/// The operation statistics as JSON.
pub fn metrics_json(m: &StoreMetrics) -> Value {
    json!({
        "operations": m.operations.iter().map(|o| json!({
            "operation": o.operation,
            "total": o.total,
            "errors": o.errors,
            "rejected": o.rejected,
            "success_rate": o.success_rate,
            "mean_us": o.mean.as_secs_f64() * 1e6,
            "p99_us_upper_bound": o.p99.as_secs_f64() * 1e6,
            "retries": o.retries,
        })).collect::<Vec<_>>(),
        "retries": m.retries,
        "budget_refusals": m.budget_refusals,
        "breaker": m.breaker.as_ref().map(|b| json!({
            "state": b.state.as_str(),
            "failure_rate": b.failure_rate,
            "calls_in_window": b.calls_in_window,
            "consecutive_failures": b.consecutive_failures,
        })),
    })
}

/// The operation statistics as a table.
pub fn metrics_text(m: &StoreMetrics) -> String {
    let mut t = Table::new(["operation", "calls", "errors", "ok %", "mean", "p99 ≤", "retries"]);
    for o in m.operations.iter().filter(|o| o.total > 0) {
        t.row([
            o.operation.to_owned(),
            o.total.to_string(),
            o.errors.to_string(),
            format!("{:.1}", o.success_rate * 100.0),
            human_duration(o.mean),
            human_duration(o.p99),
            o.retries.to_string(),
        ]);
    }
    let mut s = t.render(2);
    s.push_str(&format!(
        "  retries {}, refused by the retry budget {}, circuit breaker {}\n",
        m.retries,
        m.budget_refusals,
        m.breaker.as_ref().map_or("disabled", |b| b.state.as_str())
    ));
    s
}

async fn index_facts(store: &MemoryStore) -> (Value, String) {
    let report = store.get_health_status().await;
    match report.backend {
        Ok(info) => {
            let idx = info.index.clone().unwrap_or_default();
            let json = json!({
                "backend": info.backend,
                "server_version": info.server_version,
                "index": store.schema().name,
                "documents": idx.documents,
                "indexing_failures": idx.indexing_failures,
                "percent_indexed": idx.percent_indexed,
                "details": info.details.iter().map(|(k, v)| json!({k: v})).collect::<Vec<_>>(),
            });
            let mut text = format!(
                "  index {}: {} documents, {} indexing failures, {:.0}% indexed\n  server: {} {}\n",
                store.schema().name,
                idx.documents,
                idx.indexing_failures,
                idx.percent_indexed * 100.0,
                info.backend,
                info.server_version.as_deref().unwrap_or("?"),
            );
            for (k, v) in &info.details {
                text.push_str(&format!("  {k}: {v}\n"));
            }
            (json, text)
        }
        Err(e) => (json!({"error": e}), format!("  index: cannot describe: {e}\n")),
    }
}

/// `stats`: operation counts and latencies of this process (the commands it ran), the
/// breaker, and the index's documents.
///
/// # Errors
/// As other commands.
pub async fn stats(ctx: &Context, a: StatsArgs) -> CliResult<Outcome> {
    let store = ctx.connect(ctx.config()?, false).await?;
    let count = match &a.namespace {
        Some(ns) => Some(store.count(ns).await?),
        None => None,
    };
    let (index_json, index_text) = index_facts(&store).await;
    let m = store.get_metrics();
    let mut text = String::from("operations of this process:\n");
    text.push_str(&metrics_text(&m));
    text.push_str(&index_text);
    if let (Some(ns), Some(n)) = (&a.namespace, count) {
        text.push_str(&format!("  namespace {ns}: {n} memories\n"));
    }
    Ok(Outcome::ok(
        json!({"metrics": metrics_json(&m), "index": index_json, "namespace": a.namespace, "namespace_count": count}),
        text,
    ))
}

/// The health decision of `health`: the checker's status, made degraded when the index is
/// still indexing or has indexing failures, or cannot be described.
pub fn health_status(
    checker: HealthStatus,
    index: Option<&engram_storage::IndexStats>,
    describe_ok: bool,
) -> HealthStatus {
    match checker {
        HealthStatus::Healthy
            if !describe_ok
                || index.is_some_and(|i| i.percent_indexed < 1.0 || i.indexing_failures > 0) =>
        {
            HealthStatus::Degraded
        }
        s => s,
    }
}

/// `health`: connects (unhealthy when that fails), lets the health checker probe the server
/// until it has decided (`health.healthy_threshold` successes or
/// `health.unhealthy_threshold` failures), then checks the index. Exit code 0 healthy, 1
/// degraded, 2 unhealthy.
///
/// # Errors
/// Only bad configuration (2); an unusable server is reported as unhealthy.
pub async fn health(ctx: &Context, a: HealthArgs) -> CliResult<Outcome> {
    let mut config = ctx.config()?;
    let interval = parse_duration("--probe-interval", &a.probe_interval)?;
    if interval.is_zero() {
        return Err(CliError::bad_input("--probe-interval: expected more than 0, found 0"));
    }
    config.health.enabled = true;
    config.health.interval = config.health.interval.min(interval);
    config.health.timeout = config.health.timeout.min(config.health.interval);
    let unhealthy = |why: String| Outcome {
        json: json!({"status": "unhealthy", "reason": why}),
        text: format!("unhealthy: {why}\n"),
        code: 2,
    };
    let store = match ctx.connect(config.clone(), true).await {
        Ok(s) => s,
        Err(e) if e.kind == ExitKind::BadInput && e.storage_kind.is_none() => return Err(e),
        Err(e) => return Ok(unhealthy(e.message)),
    };
    let h = &config.health;
    let needed = u64::from(h.healthy_threshold.max(h.unhealthy_threshold));
    let deadline = Instant::now() + h.interval * (needed as u32 + 2) + h.timeout;
    let mut rx = store.subscribe_health();
    loop {
        let report = store.get_health_status().await;
        let decided = report
            .health
            .as_ref()
            .is_none_or(|r| r.status != HealthStatus::Degraded || r.checks_run >= needed);
        if decided || Instant::now() >= deadline {
            break;
        }
        match rx.as_mut() {
            Some(rx) => {
                let _ = tokio::time::timeout(h.interval, rx.changed()).await;
            }
            None => break,
        }
    }
    let report = store.get_health_status().await;
    let checker = report.health.as_ref().map_or(HealthStatus::Healthy, |r| r.status);
    let index = report.backend.as_ref().ok().and_then(|b| b.index.clone());
    let status = health_status(checker, index.as_ref(), report.backend.is_ok());
    let code = match status {
        HealthStatus::Healthy => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Unhealthy => 2,
    };
    let probe = report.health.as_ref();
    let json = json!({
        "status": status.as_str(),
        "checker": {
            "status": checker.as_str(),
            "checks_run": probe.map(|r| r.checks_run),
            "last_latency_us": probe.and_then(|r| r.last_latency).map(|d| d.as_secs_f64() * 1e6),
            "last_error": probe.and_then(|r| r.last_error.clone()),
        },
        "breaker": report.breaker.as_ref().map(|b| b.state.as_str()),
        "index": index.as_ref().map(|i| json!({
            "documents": i.documents,
            "indexing_failures": i.indexing_failures,
            "percent_indexed": i.percent_indexed,
        })),
        "describe_error": report.backend.as_ref().err(),
    });
    let mut text = format!("{}\n", status.as_str());
    if let Some(r) = probe {
        text.push_str(&format!(
            "  probes: {} run, last latency {}{}\n",
            r.checks_run,
            r.last_latency.map_or_else(|| "-".to_owned(), human_duration),
            r.last_error.as_ref().map_or_else(String::new, |e| format!(", last error: {e}"))
        ));
    }
    if let Some(b) = &report.breaker {
        text.push_str(&format!("  circuit breaker: {}\n", b.state.as_str()));
    }
    match (&index, &report.backend) {
        (Some(i), _) => text.push_str(&format!(
            "  index {}: {} documents, {} indexing failures, {:.0}% indexed\n",
            store.schema().name,
            i.documents,
            i.indexing_failures,
            i.percent_indexed * 100.0
        )),
        (None, Err(e)) => text.push_str(&format!("  index: cannot describe: {e}\n")),
        (None, Ok(_)) => {}
    }
    Ok(Outcome { json, text, code })
}

/// `index ensure|describe`.
///
/// # Errors
/// Exit code 3 for a schema mismatch, as other commands otherwise.
pub async fn index(ctx: &Context, action: IndexAction) -> CliResult<Outcome> {
    let mut config = ctx.config()?;
    let store = match action {
        IndexAction::Ensure => ctx.connect(config, false).await?,
        IndexAction::Describe => {
            // Describing must not create the index, as opening a store does: the index is
            // looked up first, then the store opened over the same connection.
            config.health.enabled = false;
            let url = config.redis.url.to_string();
            let backend = engram_storage::redis::RedisBackend::connect(
                &config.redis,
                engram_storage::redis::RedisBackendOptions::default(),
            )
            .await
            .map_err(|e| cannot_open(&url, e.into()))?;
            if !backend
                .index_exists(&config.index.name)
                .await
                .map_err(|e| cannot_open(&url, e.into()))?
            {
                return Err(CliError::new(
                    ExitKind::Unavailable,
                    format!(
                        "index {:?} does not exist on {url}; `engram index ensure` creates it",
                        config.index.name
                    ),
                ));
            }
            MemoryStore::with_backend(config, Arc::new(backend), StoreOptions::default())
                .await
                .map_err(|e| cannot_open(&url, e))?
        }
    };
    let s = store.schema();
    let algorithm = match s.vector.algorithm {
        engram_storage::Algorithm::Flat => json!({"name": "FLAT"}),
        engram_storage::Algorithm::Hnsw(p) => json!({
            "name": "HNSW", "m": p.m, "ef_construction": p.ef_construction, "ef_runtime": p.ef_runtime,
        }),
    };
    let schema_json = json!({
        "name": s.name,
        "key_prefix": s.key_prefix,
        "fields": s.fields.iter().map(|f| json!({"name": f.name, "kind": f.kind.to_string()})).collect::<Vec<_>>(),
        "vector": {
            "dimension": s.vector.dimension,
            "metric": format!("{:?}", s.vector.metric).to_uppercase(),
            "type": format!("{:?}", s.vector.vector_type).to_uppercase(),
            "algorithm": algorithm,
        },
        "embedding_model": store.embedding_model(),
    });
    match action {
        IndexAction::Ensure => Ok(Outcome::ok(
            json!({"index": s.name, "status": "ok", "schema": schema_json}),
            format!("index {} matches the configuration (created if it was missing)\n", s.name),
        )),
        IndexAction::Describe => {
            let (facts_json, facts_text) = index_facts(&store).await;
            let mut t = Table::new(["field", "kind"]);
            for f in &s.fields {
                t.row([f.name.clone(), f.kind.to_string()]);
            }
            let text = format!(
                "index {} (keys {}*)\n  vector: {} dimensions, {}, {}, {}\n  model: {}\n{}{}",
                s.name,
                s.key_prefix,
                s.vector.dimension,
                schema_json["vector"]["metric"].as_str().unwrap_or("?"),
                schema_json["vector"]["type"].as_str().unwrap_or("?"),
                match s.vector.algorithm {
                    engram_storage::Algorithm::Flat => "FLAT".to_owned(),
                    engram_storage::Algorithm::Hnsw(p) => format!(
                        "HNSW (M {}, EF_CONSTRUCTION {}, EF_RUNTIME {})",
                        p.m, p.ef_construction, p.ef_runtime
                    ),
                },
                store.embedding_model().unwrap_or("none recorded"),
                t.render(2),
                facts_text
            );
            Ok(Outcome::ok(json!({"schema": schema_json, "stats": facts_json}), text))
        }
    }
}

/// `config check`.
///
/// # Errors
/// Exit code 2 with every problem.
pub fn config_check(ctx: &Context, action: ConfigAction) -> CliResult<Outcome> {
    let ConfigAction::Check { file } = action;
    let ctx = Context { config_path: file.or_else(|| ctx.config_path.clone()), ..ctx.clone() };
    let config = ctx.config()?;
    // `Serialize` writes secrets in clear (a configuration must survive a round trip), so
    // the URL and the password are replaced by their redacted forms here.
    let mut effective = serde_json::to_value(&config).unwrap_or(Value::Null);
    if let Some(redis) = effective.get_mut("redis").and_then(Value::as_object_mut) {
        redis.insert("url".into(), json!(config.redis.url.redacted()));
        if config.redis.password.is_some() {
            redis.insert("password".into(), json!(engram_config::REDACTED));
        }
    }
    Ok(Outcome::ok(
        json!({"valid": true, "config": effective}),
        format!("configuration is valid\n{config:#?}\n"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use engram_storage::IndexStats;

    #[test]
    fn vectors_parse_or_say_what_was_found() {
        assert_eq!(vector_from_json("v", &json!([1, 0.5, -2])).unwrap(), vec![1.0, 0.5, -2.0]);
        let e = vector_from_json("v", &json!({"a": 1})).unwrap_err();
        assert_eq!(e.kind, ExitKind::BadInput);
        assert_eq!(e.message, "v: expected a JSON array of numbers, found an object");
        let e = vector_from_json("v", &json!([1, "x"])).unwrap_err();
        assert!(e.message.contains("element 1 should be a finite number, found a string"));
    }

    #[test]
    fn metadata_values_are_json_when_they_parse() {
        let (k, v) = parse_meta("n=3").unwrap();
        assert_eq!((k.as_str(), v), ("n", engram_memory::MetadataValue::Int(3)));
        let (_, v) = parse_meta("who=the user").unwrap();
        assert_eq!(v, engram_memory::MetadataValue::Text("the user".into()));
        assert_eq!(parse_meta("novalue").unwrap_err().kind, ExitKind::BadInput);
    }

    #[test]
    fn health_degrades_on_index_trouble_only_when_otherwise_healthy() {
        let full = IndexStats { documents: 3, indexing_failures: 0, percent_indexed: 1.0 };
        let failing = IndexStats { indexing_failures: 2, ..full.clone() };
        let busy = IndexStats { percent_indexed: 0.5, ..full.clone() };
        assert_eq!(health_status(HealthStatus::Healthy, Some(&full), true), HealthStatus::Healthy);
        assert_eq!(
            health_status(HealthStatus::Healthy, Some(&failing), true),
            HealthStatus::Degraded
        );
        assert_eq!(health_status(HealthStatus::Healthy, Some(&busy), true), HealthStatus::Degraded);
        assert_eq!(health_status(HealthStatus::Healthy, None, false), HealthStatus::Degraded);
        assert_eq!(
            health_status(HealthStatus::Unhealthy, Some(&full), true),
            HealthStatus::Unhealthy
        );
    }

    #[test]
    fn recall_queries_carry_every_filter() {
        let config = Config::default();
        let a = RecallArgs {
            query: Some("short answers".into()),
            namespace: "agent-1".into(),
            k: 5,
            vector_file: None,
            types: vec![crate::cli::TypeArg::Semantic],
            tags: vec!["pref".into()],
            min_importance: Some(0.5),
            max_importance: None,
            text: None,
            max_distance: None,
            ef_runtime: Some(100),
        };
        let q = recall_query(&config, &a).unwrap();
        assert_eq!(q.k, 5);
        assert_eq!(q.embedding.len(), 384);
        assert_eq!(q.memory_types, vec![MemoryType::Semantic]);
        assert_eq!(q.tags, vec!["pref".to_owned()]);
        assert_eq!(q.ef_runtime, Some(100));
        let bad = RecallArgs { k: 0, ..a };
        assert_eq!(recall_query(&config, &bad).unwrap_err().kind, ExitKind::BadInput);
    }
}
