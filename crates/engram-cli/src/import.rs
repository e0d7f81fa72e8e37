//! `import`: memories from JSON lines or from the benchmark dataset format, in batches, with a
//! progress bar on a terminal and a report of every item that failed.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use engram_memory::{MemoryEntry, MemoryType, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::{ImportArgs, ImportFormat};
use crate::commands::{Context, Outcome, parse_duration};
use crate::error::{CliError, CliResult, ExitKind};
use crate::output::{human_duration, json_to_metadata};

/// One line of a JSON-lines import.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    content: String,
    namespace: Option<String>,
    #[serde(rename = "type", alias = "memory_type")]
    memory_type: Option<String>,
    importance: Option<f32>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
    id: Option<String>,
    embedding: Option<Vec<f32>>,
    expires_in: Option<String>,
}

/// One line of the dataset's `entries.jsonl` (other keys are ignored).
#[derive(Debug, Deserialize)]
struct DatasetLine {
    id: u64,
    text: String,
    section: Option<String>,
    package: Option<String>,
}

/// An item that could not be imported.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemError {
    /// Line number in the input (1-based).
    pub line: usize,
    /// Why.
    pub message: String,
}

/// Builds an entry from a JSON line.
///
/// # Errors
/// A message saying what is wrong with the line.
pub fn entry_from_line(
    text: &str,
    default_ns: &str,
    default_type: MemoryType,
    embed: &dyn Fn(&str) -> Vec<f32>,
) -> Result<MemoryEntry, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("invalid line: {e}"))?;
    let memory_type = match &line.memory_type {
        Some(t) => t.parse::<MemoryType>().map_err(|e| e.to_string())?,
        None => default_type,
    };
    let embedding = line.embedding.clone().unwrap_or_else(|| embed(&line.content));
    let mut b = MemoryEntry::builder(line.namespace.as_deref().unwrap_or(default_ns), line.content)
        .memory_type(memory_type)
        .importance(line.importance.unwrap_or(0.5))
        .tags(line.tags)
        .embedding(embedding);
    if let Some(id) = line.id {
        b = b.id(id);
    }
    for (k, v) in &line.metadata {
        b = b.metadata(k.clone(), json_to_metadata(v));
    }
    if let Some(d) = &line.expires_in {
        let d = parse_duration("expires_in", d).map_err(|e| e.message)?;
        b = b.expires_at(Timestamp::now().plus(d));
    }
    b.build().map_err(|e| e.to_string())
}

/// Reads the rows of a little-endian f32 matrix of `dim` columns.
///
/// # Errors
/// Exit code 2 when the file is missing or its size is not a multiple of a row.
pub fn read_f32_rows(path: &Path, dim: usize) -> CliResult<Vec<f32>> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::bad_input(format!("cannot read {}: {e}", path.display())))?;
    if dim == 0 || bytes.len() % (dim * 4) != 0 {
        return Err(CliError::bad_input(format!(
            "{}: expected rows of {dim} float32 values ({} bytes each), found {} bytes",
            path.display(),
            dim * 4,
            bytes.len()
        )));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn progress(total: Option<u64>, enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} importing {pos}/{len} [{bar:30}] {per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}

/// `import`.
///
/// # Errors
/// Exit code 2 for unreadable input, 3 when the server is unusable. Items that fail are
/// reported, not fatal: the exit code is then 2 when every failure was bad input, else 1.
pub async fn import(ctx: &Context, a: ImportArgs) -> CliResult<Outcome> {
    if a.batch == 0 || a.batch > engram_storage::MAX_BATCH {
        return Err(CliError::bad_input(format!(
            "--batch: expected 1 to {}, found {}",
            engram_storage::MAX_BATCH,
            a.batch
        )));
    }
    let mut config = ctx.config()?;
    if a.no_dedup {
        config.memory.dedup.exact = false;
        config.memory.dedup.near_distance = None;
    }
    let dim = config.index.dimension as usize;
    let format = a.format.unwrap_or(if a.path.is_dir() {
        ImportFormat::Dataset
    } else {
        ImportFormat::Jsonl
    });
    let default_type = MemoryType::from(a.memory_type);
    let embedder = engram_memory::LexicalEmbedder::new(dim);
    let embed = |t: &str| embedder.embed(t);

    // Items as (line, entry or error); read fully first so that the progress bar has a total.
    let mut items: Vec<(usize, Result<MemoryEntry, String>)> = Vec::new();
    let limit = a.limit.unwrap_or(usize::MAX);
    match format {
        ImportFormat::Jsonl => {
            let reader: Box<dyn BufRead> = if a.path.as_os_str() == "-" {
                Box::new(std::io::BufReader::new(std::io::stdin()))
            } else {
                let f = std::fs::File::open(&a.path).map_err(|e| {
                    CliError::bad_input(format!("cannot read {}: {e}", a.path.display()))
                })?;
                Box::new(std::io::BufReader::new(f))
            };
            for (i, line) in reader.lines().enumerate() {
                if items.len() >= limit {
                    break;
                }
                let line = line.map_err(|e| {
                    CliError::bad_input(format!("{}: line {}: {e}", a.path.display(), i + 1))
                })?;
                if line.trim().is_empty() {
                    continue;
                }
                items.push((i + 1, entry_from_line(&line, &a.namespace, default_type, &embed)));
            }
        }
        ImportFormat::Dataset => {
            let vectors = read_f32_rows(&a.path.join("entries.f32"), dim)?;
            let rows = vectors.len() / dim;
            let jsonl = a.path.join("entries.jsonl");
            let f = std::fs::File::open(&jsonl).map_err(|e| {
                CliError::bad_input(format!("cannot read {}: {e}", jsonl.display()))
            })?;
            for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
                if items.len() >= limit {
                    break;
                }
                let line = line.map_err(|e| {
                    CliError::bad_input(format!("{}: line {}: {e}", jsonl.display(), i + 1))
                })?;
                let item = serde_json::from_str::<DatasetLine>(&line)
                    .map_err(|e| format!("invalid line: {e}"))
                    .and_then(|d| {
                        let row = usize::try_from(d.id).unwrap_or(usize::MAX);
                        if row >= rows {
                            return Err(format!(
                                "id {} has no vector: entries.f32 has {rows} rows",
                                d.id
                            ));
                        }
                        let mut b = MemoryEntry::builder(&a.namespace, d.text)
                            .id(format!("e{}", d.id))
                            .memory_type(default_type)
                            .embedding(vectors[row * dim..(row + 1) * dim].to_vec());
                        if let Some(s) = d.section {
                            b = b.tag(s);
                        }
                        if let Some(p) = d.package {
                            b = b.metadata("package", p);
                        }
                        b.build().map_err(|e| e.to_string())
                    });
                items.push((i + 1, item));
            }
        }
    }

    let store = ctx.connect(config, false).await?;
    let bar = progress(Some(items.len() as u64), !ctx.json && crate::output::stdout_is_terminal());
    let started = Instant::now();
    let mut errors: Vec<ItemError> = Vec::new();
    let mut all_bad_input = true;
    let mut imported = 0usize;
    let mut batch_lines = Vec::with_capacity(a.batch);
    let mut batch = Vec::with_capacity(a.batch);
    let total = items.len();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        batch_lines.clear();
        batch.clear();
        for (line, item) in it.by_ref().take(a.batch) {
            match item {
                Ok(e) => {
                    batch_lines.push(line);
                    batch.push(e);
                }
                Err(message) => errors.push(ItemError { line, message }),
            }
        }
        let n = batch.len();
        let results = store.add_batch(std::mem::take(&mut batch)).await;
        for (line, r) in batch_lines.iter().zip(results) {
            match r {
                Ok(_) => imported += 1,
                Err(e) => {
                    let e = CliError::from(e);
                    all_bad_input &= e.kind == ExitKind::BadInput;
                    errors.push(ItemError { line: *line, message: e.message });
                }
            }
        }
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    errors.sort_by_key(|e| e.line);
    let took = started.elapsed();
    let code = match (errors.is_empty(), all_bad_input) {
        (true, _) => 0,
        (false, true) => ExitKind::BadInput.code(),
        (false, false) => ExitKind::Other.code(),
    };
    let mut text = format!(
        "imported {imported} of {total} in {} ({:.0}/s) into {}\n",
        human_duration(took),
        imported as f64 / took.as_secs_f64().max(1e-9),
        a.namespace
    );
    for e in errors.iter().take(20) {
        text.push_str(&format!("  line {}: {}\n", e.line, e.message));
    }
    if errors.len() > 20 {
        text.push_str(&format!("  ... and {} more failures (see --json)\n", errors.len() - 20));
    }
    Ok(Outcome {
        json: json!({
            "imported": imported,
            "total": total,
            "failed": errors.len(),
            "seconds": took.as_secs_f64(),
            "errors": errors.iter().map(|e| json!({"line": e.line, "message": e.message})).collect::<Vec<_>>(),
        }),
        text,
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embed(_: &str) -> Vec<f32> {
        vec![1.0, 0.0, 0.0]
    }

    #[test]
    fn lines_become_entries_or_say_what_is_wrong() {
        let e = entry_from_line(
            r#"{"content":"the user likes tea","type":"semantic","importance":0.9,"tags":["pref"],"metadata":{"n":1}}"#,
            "agent-1",
            MemoryType::ShortTerm,
            &embed,
        )
        .unwrap();
        assert_eq!(e.namespace.as_str(), "agent-1");
        assert_eq!(e.memory_type, MemoryType::Semantic);
        assert_eq!(e.tags, vec!["pref".to_owned()]);
        assert_eq!(e.embedding, Some(vec![1.0, 0.0, 0.0]));
        let err =
            entry_from_line(r#"{"content":"x","colour":1}"#, "a", MemoryType::ShortTerm, &embed)
                .unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
        let err = entry_from_line(
            r#"{"content":"x","type":"daily"}"#,
            "a",
            MemoryType::ShortTerm,
            &embed,
        )
        .unwrap_err();
        assert!(err.contains("not one of short_term"), "{err}");
        let err = entry_from_line(
            r#"{"content":"x","importance":3}"#,
            "a",
            MemoryType::ShortTerm,
            &embed,
        )
        .unwrap_err();
        assert!(err.contains("importance"), "{err}");
    }

    #[test]
    fn f32_rows_must_fill_whole_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.f32");
        std::fs::write(&p, [0u8; 12]).unwrap();
        assert_eq!(read_f32_rows(&p, 3).unwrap().len(), 3);
        let err = read_f32_rows(&p, 2).unwrap_err();
        assert!(err.message.contains("expected rows of 2 float32 values"), "{}", err.message);
    }
}
