//! An agent loop against Redis Stack: remember observations with embeddings, recall the top 5
//! for a new observation, raise the importance of what helped, and forget.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p engram-memory --example agent_loop
//! ```
//!
//! Configuration comes from `ENGRAM_CONFIG` / `ENGRAM__...` / `REDIS_URL` as usual; unless
//! set, the example uses its own index (`engram-example`) with 256-dimensional vectors from
//! the built-in lexical embedder. It removes what it stored before it exits.

use engram_memory::{LexicalEmbedder, MemoryEntry, MemoryQuery, MemoryStore, MemoryType};

const OBSERVATIONS: &[(&str, MemoryType, f32)] = &[
    ("the user prefers short answers without preamble", MemoryType::Semantic, 0.8),
    ("the user's build runs on a 2-core machine with no GPU", MemoryType::Semantic, 0.6),
    (
        "yesterday the integration tests failed because redis was not running",
        MemoryType::Episodic,
        0.5,
    ),
    ("the user asked to pin every dependency version", MemoryType::LongTerm, 0.7),
    ("currently refactoring the storage layer of the project", MemoryType::Working, 0.4),
    ("the user dislikes long explanations in answers", MemoryType::Semantic, 0.6),
    ("the deployment uses kubernetes with a statefulset for redis", MemoryType::LongTerm, 0.5),
    ("lunch was at noon", MemoryType::ShortTerm, 0.1),
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = engram_config::Config::load_from_env()?;
    if config.index.name == engram_config::IndexConfig::default().name {
        config.index.name = "engram-example".into();
        config.index.key_prefix = "engram-example:".into();
        config.index.dimension = 256;
    }
    let embedder = LexicalEmbedder::new(config.index.dimension as usize);
    let store = MemoryStore::connect(config).await?;
    let agent = format!("agent-{}", std::process::id());

    // 1. Remember.
    let entries = OBSERVATIONS
        .iter()
        .map(|(text, t, importance)| {
            MemoryEntry::builder(&agent, *text)
                .memory_type(*t)
                .importance(*importance)
                .embedding(embedder.embed(text))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ids = store.add_batch(entries).await.into_iter().collect::<Result<Vec<_>, _>>()?;
    println!("remembered {} observations for {agent}", ids.len());

    // 2. Recall the top 5 for a new observation.
    let observation = "keep the answer short, the user does not like long answers";
    let hits = store.query(MemoryQuery::new(&agent, embedder.embed(observation))?.k(5)).await?;
    println!("\nrecall for {observation:?}:");
    for h in &hits {
        println!("  {:.3}  [{}] {}", h.similarity, h.entry.memory_type, h.entry.content);
    }
    let best = hits.first().ok_or("nothing recalled")?;
    assert!(best.entry.content.contains("answers"), "the best match should be about answers");

    // 3. What helped becomes more important (optimistic update, retried on conflict).
    let updated = store
        .update_with(&agent, best.entry.id.as_str(), |e| {
            e.importance = (e.importance + 0.2).min(1.0)
        })
        .await?;
    println!(
        "\nimportance of {:?} is now {:.1} (version {})",
        updated.content, updated.importance, updated.version
    );

    // 4. Forget: the short-term noise first, then everything this run stored.
    let noise = store
        .query(
            MemoryQuery::new(&agent, embedder.embed("lunch"))?.k(1).types([MemoryType::ShortTerm]),
        )
        .await?;
    for h in noise {
        store.delete(&agent, h.entry.id.as_str()).await?;
        println!("forgot {:?}", h.entry.content);
    }
    let id_refs: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
    let forgotten = store
        .delete_batch(&agent, &id_refs)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    println!("forgot the remaining {forgotten}; {} left in {agent}", store.count(&agent).await?);
    let m = store.get_metrics();
    for op in m.operations.iter().filter(|o| o.total > 0) {
        println!(
            "  {:<16} calls {:>3}  ok {:>5.1}%  mean {:>8.2?}  p99 <= {:?}",
            op.operation,
            op.total,
            op.success_rate * 100.0,
            op.mean,
            op.p99
        );
    }
    Ok(())
}
