//! Memory entries: what an agent remembers.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use engram_resilience::{RandomSource, Rng};
use engram_storage::{MAX_TAGS, Namespace, RecordId, Timestamp, check_tag};
use serde::{Deserialize, Serialize};

use crate::error::MemoryError;

/// Longest content, in bytes (1 MiB).
pub const MAX_CONTENT_LEN: usize = 1 << 20;
/// Most metadata keys of one entry.
pub const MAX_METADATA_KEYS: usize = 256;

/// The id of a memory: 1 to 128 of ASCII letters, digits, `_`, `-`, `.`, `:`.
pub type MemoryId = RecordId;

/// Makes a fresh id: `m` + milliseconds since the epoch + 64 random bits, in hex. Ids made
/// later sort later (to the millisecond).
pub fn new_id(now: Timestamp) -> MemoryId {
    let random = Rng::from_entropy().next_u64();
    // The format only produces valid characters, so this cannot fail.
    RecordId::new(format!("m{:012x}{random:016x}", now.as_millis()))
        .unwrap_or_else(|_| unreachable!("generated ids are valid"))
}

/// The kind of a memory, which decides its policy (TTL, refresh on read, decay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryType {
    /// What the agent noticed recently.
    ShortTerm,
    /// What the agent should keep.
    LongTerm,
    /// Scratch state of the task at hand.
    Working,
    /// What happened, in order.
    Episodic,
    /// Facts and knowledge.
    Semantic,
}

impl MemoryType {
    /// Every type.
    pub const ALL: [MemoryType; 5] = [
        MemoryType::ShortTerm,
        MemoryType::LongTerm,
        MemoryType::Working,
        MemoryType::Episodic,
        MemoryType::Semantic,
    ];

    /// The stable name (`short_term`, ...), as in configuration and in the index.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryType::ShortTerm => "short_term",
            MemoryType::LongTerm => "long_term",
            MemoryType::Working => "working",
            MemoryType::Episodic => "episodic",
            MemoryType::Semantic => "semantic",
        }
    }
}

impl fmt::Display for MemoryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MemoryType {
    type Err = MemoryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        MemoryType::ALL.into_iter().find(|t| t.as_str() == norm).ok_or_else(|| {
            MemoryError::invalid(
                "memory_type",
                format!("{s:?} is not one of short_term, long_term, working, episodic, semantic"),
            )
        })
    }
}

/// A metadata value: anything MessagePack can carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetadataValue {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
    /// A list.
    List(Vec<MetadataValue>),
    /// A map with text keys.
    Map(BTreeMap<String, MetadataValue>),
}

impl From<&str> for MetadataValue {
    fn from(v: &str) -> Self {
        MetadataValue::Text(v.to_owned())
    }
}
impl From<String> for MetadataValue {
    fn from(v: String) -> Self {
        MetadataValue::Text(v)
    }
}
impl From<i64> for MetadataValue {
    fn from(v: i64) -> Self {
        MetadataValue::Int(v)
    }
}
impl From<f64> for MetadataValue {
    fn from(v: f64) -> Self {
        MetadataValue::Float(v)
    }
}
impl From<bool> for MetadataValue {
    fn from(v: bool) -> Self {
        MetadataValue::Bool(v)
    }
}

/// One memory.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEntry {
    /// Id, unique within the namespace.
    pub id: MemoryId,
    /// The namespace (an agent, a user, a tenant): nothing crosses namespaces.
    pub namespace: Namespace,
    /// What is remembered; not empty.
    pub content: String,
    /// Kind of memory.
    pub memory_type: MemoryType,
    /// Importance in `[0, 1]`.
    pub importance: f32,
    /// Embedding of the content, with the index's dimension.
    pub embedding: Option<Vec<f32>>,
    /// Labels, matched exactly by queries.
    pub tags: Vec<String>,
    /// Free-form data, stored with the entry.
    pub metadata: BTreeMap<String, MetadataValue>,
    /// When the entry was first stored.
    pub created_at: Timestamp,
    /// When it was last written.
    pub updated_at: Timestamp,
    /// When it was last read with `get`.
    pub last_accessed: Option<Timestamp>,
    /// How many times it was read with `get`.
    pub access_count: u64,
    /// When it expires, if ever.
    pub expires_at: Option<Timestamp>,
    /// Version, for optimistic updates: 1 when first stored, +1 per update.
    pub version: u64,
}

impl MemoryEntry {
    /// Starts an entry of `content` in `namespace`; see [`MemoryEntryBuilder`] for defaults.
    pub fn builder(namespace: &str, content: impl Into<String>) -> MemoryEntryBuilder {
        MemoryEntryBuilder {
            namespace: namespace.to_owned(),
            id: None,
            content: content.into(),
            memory_type: MemoryType::ShortTerm,
            importance: 0.5,
            embedding: None,
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            expires_at: None,
        }
    }

    /// Checks the rules that need no index: content not empty and at most 1 MiB, importance
    /// finite in `[0, 1]`, embedding elements finite and not all zero, tags valid (1 to 256
    /// bytes, no control characters, at most 256), metadata keys 1 to 128 bytes.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), MemoryError> {
        if self.content.trim().is_empty() {
            return Err(MemoryError::invalid("content", "is empty"));
        }
        if self.content.len() > MAX_CONTENT_LEN {
            return Err(MemoryError::invalid(
                "content",
                format!("is {} bytes, at most {MAX_CONTENT_LEN} allowed", self.content.len()),
            ));
        }
        if !(self.importance.is_finite() && (0.0..=1.0).contains(&self.importance)) {
            return Err(MemoryError::invalid(
                "importance",
                format!("is {}, expected 0 to 1", self.importance),
            ));
        }
        if let Some(e) = &self.embedding {
            if e.is_empty() {
                return Err(MemoryError::invalid("embedding", "is empty"));
            }
            if let Some(i) = e.iter().position(|x| !x.is_finite()) {
                return Err(MemoryError::invalid(
                    "embedding",
                    format!("element {i} is {}, elements must be finite", e[i]),
                ));
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(MemoryError::invalid(
                "tags",
                format!("has {} tags, at most {MAX_TAGS} allowed", self.tags.len()),
            ));
        }
        for t in &self.tags {
            check_tag(t).map_err(|m| MemoryError::invalid("tags", m))?;
        }
        if self.metadata.len() > MAX_METADATA_KEYS {
            return Err(MemoryError::invalid(
                "metadata",
                format!("has {} keys, at most {MAX_METADATA_KEYS}", self.metadata.len()),
            ));
        }
        if let Some(k) = self.metadata.keys().find(|k| k.is_empty() || k.len() > 128) {
            return Err(MemoryError::invalid(
                "metadata",
                format!("key of {} bytes, expected 1 to 128", k.len()),
            ));
        }
        Ok(())
    }
}

/// Builds a [`MemoryEntry`]. Defaults: a fresh id, type short-term, importance 0.5, no
/// embedding, tags or metadata, expiry from the type's policy.
#[derive(Debug, Clone)]
pub struct MemoryEntryBuilder {
    namespace: String,
    id: Option<String>,
    content: String,
    memory_type: MemoryType,
    importance: f32,
    embedding: Option<Vec<f32>>,
    tags: Vec<String>,
    metadata: BTreeMap<String, MetadataValue>,
    expires_at: Option<Timestamp>,
}

impl MemoryEntryBuilder {
    /// Uses this id instead of a fresh one.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Sets the type.
    pub fn memory_type(mut self, t: MemoryType) -> Self {
        self.memory_type = t;
        self
    }
    /// Sets the importance (0 to 1).
    pub fn importance(mut self, importance: f32) -> Self {
        self.importance = importance;
        self
    }
    /// Sets the embedding.
    pub fn embedding(mut self, embedding: Vec<f32>) -> Self {
        self.embedding = Some(embedding);
        self
    }
    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
    /// Adds tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }
    /// Sets a metadata value.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<MetadataValue>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    /// Sets an explicit expiry instead of the type's TTL.
    pub fn expires_at(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Builds and validates the entry (timestamps are set when it is stored).
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] for a bad namespace, id or field.
    pub fn build(self) -> Result<MemoryEntry, MemoryError> {
        let namespace = Namespace::new(self.namespace)
            .map_err(|e| MemoryError::invalid("namespace", e.message().to_owned()))?;
        if namespace.as_str().starts_with("__") {
            return Err(MemoryError::invalid(
                "namespace",
                "names starting with `__` are reserved for engram",
            ));
        }
        let now = Timestamp::now();
        let id = match self.id {
            Some(id) => {
                RecordId::new(id).map_err(|e| MemoryError::invalid("id", e.message().to_owned()))?
            }
            None => new_id(now),
        };
        let entry = MemoryEntry {
            id,
            namespace,
            content: self.content,
            memory_type: self.memory_type,
            importance: self.importance,
            embedding: self.embedding,
            tags: self.tags,
            metadata: self.metadata,
            created_at: now,
            updated_at: now,
            last_accessed: None,
            access_count: 0,
            expires_at: self.expires_at,
            version: 1,
        };
        entry.validate()?;
        Ok(entry)
    }
}

/// Parses a namespace given by a caller.
///
/// # Errors
/// [`MemoryError::Invalid`] for a bad or reserved namespace.
pub fn namespace(s: &str) -> Result<Namespace, MemoryError> {
    let ns =
        Namespace::new(s).map_err(|e| MemoryError::invalid("namespace", e.message().to_owned()))?;
    if ns.as_str().starts_with("__") {
        return Err(MemoryError::invalid(
            "namespace",
            "names starting with `__` are reserved for engram",
        ));
    }
    Ok(ns)
}

/// Parses an id given by a caller.
///
/// # Errors
/// [`MemoryError::Invalid`] for a bad id.
pub fn memory_id(s: &str) -> Result<MemoryId, MemoryError> {
    RecordId::new(s).map_err(|e| MemoryError::invalid("id", e.message().to_owned()))
}
