//! Output for people (aligned tables, short lines) and for scripts (`--json`: one JSON document
//! on stdout per command).

use std::io::IsTerminal;
use std::time::Duration;

use engram_memory::{MemoryEntry, MetadataValue, ScoredMemory, Timestamp};
use serde_json::{Value, json};

/// Whether stdout is a terminal (progress bars are drawn only then).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds
/// (`2024-05-01T12:00:00.000Z`).
pub fn rfc3339(t: Timestamp) -> String {
    let ms = t.as_millis();
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

/// A duration for people: `850µs`, `12.3ms`, `4.2s`, `3h 10m`, `12d 4h`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 0.001 {
        format!("{}µs", d.as_micros())
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1}s")
    } else if s < 7200.0 {
        format!("{}m {}s", d.as_secs() / 60, d.as_secs() % 60)
    } else if s < 172_800.0 {
        format!("{}h {}m", d.as_secs() / 3600, (d.as_secs() / 60) % 60)
    } else {
        format!("{}d {}h", d.as_secs() / 86_400, (d.as_secs() / 3600) % 24)
    }
}

/// When `t` is, relative to `now`: `in 4h 0m`, `3.0s ago`.
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    if t.as_millis().abs_diff(now.as_millis()) < 1000 {
        "just now".to_owned()
    } else if t.as_millis() >= now.as_millis() {
        format!("in {}", human_duration(Duration::from_millis(t.as_millis() - now.as_millis())))
    } else {
        format!("{} ago", human_duration(Duration::from_millis(now.as_millis() - t.as_millis())))
    }
}

fn metadata_json(v: &MetadataValue) -> Value {
    match v {
        MetadataValue::Null => Value::Null,
        MetadataValue::Bool(b) => json!(b),
        MetadataValue::Int(i) => json!(i),
        MetadataValue::Float(f) => json!(f),
        MetadataValue::Text(t) => json!(t),
        MetadataValue::List(l) => Value::Array(l.iter().map(metadata_json).collect()),
        MetadataValue::Map(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), metadata_json(v))).collect())
        }
    }
}

/// Converts JSON into a metadata value (numbers with a fraction become floats).
pub fn json_to_metadata(v: &Value) -> MetadataValue {
    match v {
        Value::Null => MetadataValue::Null,
        Value::Bool(b) => MetadataValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => MetadataValue::Int(i),
            None => MetadataValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => MetadataValue::Text(s.clone()),
        Value::Array(a) => MetadataValue::List(a.iter().map(json_to_metadata).collect()),
        Value::Object(o) => {
            MetadataValue::Map(o.iter().map(|(k, v)| (k.clone(), json_to_metadata(v))).collect())
        }
    }
}

fn time_json(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(rfc3339(t)))
}

/// An entry as JSON. The embedding is left out unless `with_embedding` (its dimension is
/// always given).
pub fn entry_json(e: &MemoryEntry, with_embedding: bool) -> Value {
    let mut v = json!({
        "id": e.id.as_str(),
        "namespace": e.namespace.as_str(),
        "content": e.content,
        "memory_type": e.memory_type.as_str(),
        "importance": e.importance,
        "tags": e.tags,
        "metadata": Value::Object(
            e.metadata.iter().map(|(k, v)| (k.clone(), metadata_json(v))).collect()
        ),
        "created_at": rfc3339(e.created_at),
        "updated_at": rfc3339(e.updated_at),
        "last_accessed": time_json(e.last_accessed),
        "access_count": e.access_count,
        "expires_at": time_json(e.expires_at),
        "version": e.version,
        "embedding_dimension": e.embedding.as_ref().map(Vec::len),
    });
    if with_embedding && let Some(obj) = v.as_object_mut() {
        obj.insert("embedding".into(), json!(e.embedding));
    }
    v
}

/// A query result as JSON.
pub fn scored_json(s: &ScoredMemory) -> Value {
    json!({
        "score": s.score,
        "similarity": s.similarity,
        "distance": s.distance,
        "entry": entry_json(&s.entry, false),
    })
}

/// Cuts `s` to at most `max` characters, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// A table with a header row, columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(header: I) -> Self {
        Self { header: header.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    /// Adds a row.
    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, each line indented by `indent` spaces.
    pub fn render(&self, indent: usize) -> String {
        let cols = self.header.len();
        let mut widths = vec![0; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let pad = " ".repeat(indent);
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = pad.clone();
            for (i, c) in row.iter().enumerate().take(cols) {
                line.push_str(c);
                if i + 1 < cols {
                    line.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(Timestamp(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(Timestamp(1_714_564_800_000)), "2024-05-01T12:00:00.000Z");
    }

    #[test]
    fn tables_align_and_truncate_cuts_on_characters() {
        let mut t = Table::new(["id", "content"]);
        t.row(["a", "x"]);
        t.row(["long-id", "é"]);
        assert_eq!(t.render(0), "id       content\na        x\nlong-id  é\n");
        assert_eq!(truncate("héllo wörld", 6), "héllo…");
        assert_eq!(truncate("a\nb", 10), "a b");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(Duration::from_micros(850)), "850µs");
        assert_eq!(human_duration(Duration::from_millis(12)), "12.0ms");
        assert_eq!(human_duration(Duration::from_secs(4 * 3600)), "4h 0m");
        assert_eq!(relative(Timestamp(1000), Timestamp(4000)), "3.0s ago");
        assert_eq!(relative(Timestamp(4000), Timestamp(4200)), "just now");
    }
}
