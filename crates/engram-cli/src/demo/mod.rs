//! `engram demo`: a scripted agent session on a built-in corpus, what `cargo xtask demo` runs.
//!
//! It stores a few hundred memories of three agents (namespaces `demo-coder`,
//! `demo-support`, `demo-travel`; each run first clears them), then walks through what an
//! agent runtime does: recall with and without filters, namespace isolation, raising the
//! importance of what helped, reading (which counts an access and refreshes the TTL),
//! forgetting, and a short-term memory expiring after an explicit two-second TTL. It ends
//! with the operation statistics, the health report, and optionally a Prometheus endpoint
//! left up for `--metrics-seconds`.

pub mod corpus;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use engram_memory::{MemoryEntry, MemoryQuery, MemoryStore, MemoryType, Timestamp};
use serde_json::{Value, json};

use crate::commands::{Context, Outcome, metrics_json, metrics_text, recall_table};
use crate::error::{CliError, CliResult};
use crate::output::{Table, human_duration, relative, rfc3339};

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep a Prometheus endpoint (observability.metrics_address) up this many seconds at the
    /// end; 0 serves none.
    #[arg(long, default_value_t = 0)]
    pub metrics_seconds: u64,
    /// Seconds until the short-term memory of the TTL step expires.
    #[arg(long, default_value_t = 2)]
    pub ttl_seconds: u64,
}

/// Prints as the session goes (unless `--json`) and keeps a log for the JSON summary.
struct Session {
    json: bool,
    steps: Vec<Value>,
}

impl Session {
    fn say(&self, text: impl AsRef<str>) {
        if !self.json {
            println!("{}", text.as_ref());
        }
    }
    fn step(&mut self, title: &str, data: Value) {
        self.steps.push(json!({"step": title, "data": data}));
    }
}

fn ns(agent: &str) -> String {
    format!("demo-{agent}")
}

async fn clear(store: &MemoryStore, namespace: &str) -> CliResult<usize> {
    let mut removed = 0;
    loop {
        let page = store.list(namespace, None, 500).await?;
        if page.entries.is_empty() && page.next.is_none() {
            return Ok(removed);
        }
        let ids: Vec<&str> = page.entries.iter().map(|e| e.id.as_str()).collect();
        for r in store.delete_batch(namespace, &ids).await {
            removed += usize::from(r?);
        }
        if page.next.is_none() {
            return Ok(removed);
        }
    }
}

async fn recall(
    s: &mut Session,
    store: &MemoryStore,
    title: &str,
    text: &str,
    query: MemoryQuery,
) -> CliResult<Vec<engram_memory::ScoredMemory>> {
    let started = Instant::now();
    let hits = store.query(query).await?;
    let took = started.elapsed();
    s.say(format!(
        "\n» recall {title}\n  query: {text:?} ({} hits in {})",
        hits.len(),
        human_duration(took)
    ));
    s.say(recall_table(&hits).trim_end());
    s.step(
        &format!("recall {title}"),
        json!({"query": text, "hits": hits.iter().map(|h| json!({
            "id": h.entry.id.as_str(), "namespace": h.entry.namespace.as_str(), "score": h.score,
            "type": h.entry.memory_type.as_str(), "content": h.entry.content,
        })).collect::<Vec<_>>()}),
    );
    Ok(hits)
}

/// Runs the demo.
///
/// # Errors
/// Exit code 3 when the server is unusable, 1 when a step does not behave as shown.
pub async fn run(ctx: &Context, a: DemoArgs) -> CliResult<Outcome> {
    let started = Instant::now();
    let mut config = ctx.config()?;
    // Probe often enough that the checker has decided before the session ends.
    config.health.interval = config.health.interval.min(Duration::from_secs(1));
    config.health.timeout = config.health.timeout.min(config.health.interval);
    let healthy_after = config.health.healthy_threshold;
    let mut s = Session { json: ctx.json, steps: Vec::new() };
    let metrics_address = config.observability.metrics_address;
    // The recorder must be installed before the store emits anything.
    let serving = if a.metrics_seconds > 0 {
        match crate::exporter::install(metrics_address) {
            Ok(()) => true,
            Err(e) => {
                s.say(format!("(no metrics endpoint: {e})"));
                false
            }
        }
    } else {
        false
    };
    let embed = engram_memory::LexicalEmbedder::new(config.index.dimension as usize);
    let url = config.redis.url.to_string();
    let index = config.index.name.clone();
    let health_interval = config.health.interval;
    let store = ctx.connect(config, true).await?;
    s.say(format!("engram demo: Redis Stack at {url}, index {index}"));
    s.say("(embeddings come from the built-in lexical embedder, a stand-in for a real model)");

    // 1. Remember the corpus.
    let corpus = corpus::corpus();
    let agents = [corpus::CODER, corpus::SUPPORT, corpus::TRAVEL];
    let mut cleared = 0;
    for agent in agents {
        cleared += clear(&store, &ns(agent)).await?;
    }
    let t = Instant::now();
    let entries = corpus
        .iter()
        .map(|m| {
            MemoryEntry::builder(&ns(m.agent), m.content.clone())
                .memory_type(m.memory_type)
                .importance(m.importance)
                .tags(m.tags.iter().copied())
                .embedding(embed.embed(&m.content))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let results = store.add_batch(entries).await;
    let stored = results.iter().filter(|r| r.is_ok()).count();
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(CliError::from(e).context("remembering the corpus"));
    }
    let took = t.elapsed();
    let mut by: BTreeMap<(&str, MemoryType), usize> = BTreeMap::new();
    for m in &corpus {
        *by.entry((m.agent, m.memory_type)).or_default() += 1;
    }
    let mut table =
        Table::new(["namespace", "short_term", "working", "episodic", "long_term", "semantic"]);
    for agent in agents {
        let mut row = vec![ns(agent)];
        for t in [
            MemoryType::ShortTerm,
            MemoryType::Working,
            MemoryType::Episodic,
            MemoryType::LongTerm,
            MemoryType::Semantic,
        ] {
            row.push(by.get(&(agent, t)).copied().unwrap_or(0).to_string());
        }
        table.row(row);
    }
    s.say(format!(
        "\n» remember: {stored} memories of 3 agents in one pipelined batch, {} ({:.0}/s){}",
        human_duration(took),
        stored as f64 / took.as_secs_f64().max(1e-9),
        if cleared > 0 {
            format!("; cleared {cleared} from a previous run")
        } else {
            String::new()
        }
    ));
    s.say(table.render(2).trim_end());
    s.step(
        "remember",
        json!({"stored": stored, "seconds": took.as_secs_f64(), "cleared": cleared}),
    );

    // 2. Recall, with and without filters.
    let coder = ns(corpus::CODER);
    let q = "why did the integration tests fail";
    recall(&mut s, &store, "(coder, no filter)", q, MemoryQuery::new(&coder, embed.embed(q))?.k(5))
        .await?;
    let hits = recall(
        &mut s,
        &store,
        "(coder, only episodic memories with importance >= 0.5)",
        q,
        MemoryQuery::new(&coder, embed.embed(q))?
            .k(5)
            .types([MemoryType::Episodic])
            .min_importance(0.5),
    )
    .await?;
    if hits.iter().any(|h| h.entry.memory_type != MemoryType::Episodic || h.entry.importance < 0.5)
    {
        return Err(CliError::other("the type and importance filters let other memories through"));
    }
    let support = ns(corpus::SUPPORT);
    let q2 = "customer cannot log in";
    recall(
        &mut s,
        &store,
        "(support, tag auth)",
        q2,
        MemoryQuery::new(&support, embed.embed(q2))?.k(5).tags(["auth"]),
    )
    .await?;
    let travel = ns(corpus::TRAVEL);
    let q3 = "what food does the traveller like";
    recall(
        &mut s,
        &store,
        "(travel, semantic or long-term)",
        q3,
        MemoryQuery::new(&travel, embed.embed(q3))?
            .k(3)
            .types([MemoryType::Semantic, MemoryType::LongTerm]),
    )
    .await?;
    let iso = recall(
        &mut s,
        &store,
        "(travel namespace, a coding question: namespaces never mix)",
        q,
        MemoryQuery::new(&travel, embed.embed(q))?.k(3),
    )
    .await?;
    if iso.iter().any(|h| h.entry.namespace.as_str() != travel) {
        return Err(CliError::other("a recall crossed namespaces"));
    }

    // 3. What helped becomes more important.
    let q4 = "give short answers with a code example";
    let hits = store.query(MemoryQuery::new(&coder, embed.embed(q4))?.k(3)).await?;
    let best = hits.first().ok_or_else(|| CliError::other("recall found nothing to update"))?;
    let before = best.entry.importance;
    let updated = store
        .update_with(&coder, best.entry.id.as_str(), |e| {
            e.importance = (e.importance + 0.1).min(1.0)
        })
        .await?;
    s.say(format!(
        "\n» update importance of {:?}: {before:.2} → {:.2} (version {} → {}, optimistic, retried on conflict)",
        updated.content, updated.importance, best.entry.version, updated.version
    ));
    s.step("update", json!({"id": updated.id.as_str(), "from": before, "to": updated.importance, "version": updated.version}));

    // 4. Reading counts an access and restarts the TTL of types that refresh on read.
    let read1 = store
        .get(&coder, updated.id.as_str())
        .await?
        .ok_or_else(|| CliError::other("the updated memory is gone"))?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let read2 = store
        .get(&coder, updated.id.as_str())
        .await?
        .ok_or_else(|| CliError::other("the updated memory is gone"))?;
    let show = |t: Option<Timestamp>| t.map_or_else(|| "never".to_owned(), rfc3339);
    let now = Timestamp::now();
    s.say(format!(
        "\n» touch: read it twice, 1.1 s apart: access count {} → {}, last access {}, expires {} ({} memories restart their TTL, with jitter, on each read)",
        read1.access_count,
        read2.access_count,
        read2.last_accessed.map_or_else(|| "never".to_owned(), |t| relative(t, now)),
        read2.expires_at.map_or_else(|| "never".to_owned(), |t| relative(t, now)),
        read2.memory_type
    ));
    if read2.access_count != read1.access_count + 1 {
        return Err(CliError::other(format!(
            "expected the access count to grow by 1, found {} then {}",
            read1.access_count, read2.access_count
        )));
    }
    s.step("touch", json!({"access_count": [read1.access_count, read2.access_count], "expires_at": [show(read1.expires_at), show(read2.expires_at)]}));

    // 5. Forget.
    let lunch = store
        .query(
            MemoryQuery::new(&coder, embed.embed("back after lunch"))?
                .k(1)
                .types([MemoryType::ShortTerm]),
        )
        .await?;
    if let Some(h) = lunch.first() {
        let deleted = store.delete(&coder, h.entry.id.as_str()).await?;
        let gone = store.get(&coder, h.entry.id.as_str()).await?.is_none();
        s.say(format!(
            "\n» forget {:?}: deleted {deleted}, get afterwards finds nothing: {gone}",
            h.entry.content
        ));
        s.step("forget", json!({"id": h.entry.id.as_str(), "deleted": deleted, "gone": gone}));
    }

    // 6. A short-term memory with an explicit short TTL expires.
    let ttl = Duration::from_secs(a.ttl_seconds.max(1));
    let note = "the user is in a meeting until 3 pm";
    let entry = MemoryEntry::builder(&coder, note)
        .memory_type(MemoryType::ShortTerm)
        .importance(0.3)
        .embedding(embed.embed(note))
        .expires_at(Timestamp::now().plus(ttl))
        .build()?;
    let id = store.add(entry).await?;
    let q5 = "is the user in a meeting";
    let found_before = store
        .query(MemoryQuery::new(&coder, embed.embed(q5))?.k(1))
        .await?
        .iter()
        .any(|h| h.entry.id == id);
    s.say(format!(
        "\n» ttl: remembered {note:?} expiring in {}; recall finds it: {found_before}",
        human_duration(ttl)
    ));
    let t = Instant::now();
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let found_after = store
        .query(MemoryQuery::new(&coder, embed.embed(q5))?.k(1))
        .await?
        .iter()
        .any(|h| h.entry.id == id);
    let get_after = store.exists(&coder, id.as_str()).await?;
    s.say(format!(
        "  {} later: recall finds it: {found_after}, get finds it: {get_after} (expired)",
        human_duration(t.elapsed())
    ));
    if !found_before || found_after || get_after {
        return Err(CliError::other(format!(
            "expected the memory found before its expiry and gone after, found before {found_before}, after {found_after}/{get_after}"
        )));
    }
    s.step("ttl", json!({"ttl_seconds": ttl.as_secs_f64(), "found_before": found_before, "found_after": found_after}));

    // 7. Stats and health.
    let metrics = store.get_metrics();
    s.say("\n» stats (this session, as the metrics layer saw it)");
    s.say(metrics_text(&metrics).trim_end());
    let counts: Vec<(String, u64)> = {
        let mut v = Vec::new();
        for agent in agents {
            v.push((ns(agent), store.count(&ns(agent)).await?));
        }
        v
    };
    s.say(format!(
        "  memories now: {}",
        counts.iter().map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", ")
    ));
    let health = store.get_health_status().await;
    let status = health.health.as_ref().map_or("disabled", |h| h.status.as_str());
    let index_docs =
        health.backend.as_ref().ok().and_then(|b| b.index.as_ref()).map(|i| i.documents);
    s.say(format!(
        "\n» health: checker {status} (a new checker says degraded until {} probes passed), breaker {}, index {} documents",
        healthy_after,
        health.breaker.as_ref().map_or("disabled", |b| b.state.as_str()),
        index_docs.map_or_else(|| "?".to_owned(), |d| d.to_string())
    ));
    s.step("stats", metrics_json(&metrics));
    s.step("health", json!({"checker": status, "index_documents": index_docs}));

    if serving {
        crate::exporter::update_index_gauges(&store).await;
        s.say(format!(
            "\n» metrics: http://{metrics_address}/metrics for {} s (Ctrl-C stops)",
            a.metrics_seconds
        ));
        crate::exporter::serve_until(
            &store,
            health_interval,
            Some(Duration::from_secs(a.metrics_seconds)),
        )
        .await;
    }
    s.say(format!(
        "\ndone in {}. Try: engram recall -n {coder} \"flaky tests\"   |   engram list -n {travel}",
        human_duration(started.elapsed())
    ));
    Ok(Outcome::ok(
        json!({"seconds": started.elapsed().as_secs_f64(), "steps": s.steps}),
        String::new(),
    ))
}
