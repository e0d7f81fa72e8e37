//! Settings of the RediSearch index that holds the memories.

use serde::{Deserialize, Serialize};

use crate::problems::Collector;

/// Vector index algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum VectorAlgorithm {
    /// Exact brute-force search: recall 1.0, cost linear in the number of vectors.
    Flat,
    /// Hierarchical navigable small world graph: approximate, sub-linear.
    Hnsw,
}

/// Distance between vectors, with RediSearch's definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DistanceMetric {
    /// `1 - cosine similarity`; zero vectors are rejected.
    Cosine,
    /// Squared Euclidean distance.
    L2,
    /// `1 - dot product`.
    Ip,
}

/// Element type of stored vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum VectorType {
    /// 32-bit IEEE floats.
    Float32,
    /// 16-bit IEEE floats: half the memory, a little less precision.
    Float16,
}

/// The RediSearch index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Index name (letters, digits, `_`, `-`, `.`, `:`; at most 64). Default: `engram-idx`.
    pub name: String,
    /// Prefix of every key the index covers (letters, digits, `_`, `-`, `.`, `:`; at most 64).
    /// Default: `engram:`.
    pub key_prefix: String,
    /// Vector algorithm. Default: `HNSW`.
    pub algorithm: VectorAlgorithm,
    /// HNSW: edges per node. Default: `16`.
    pub m: u32,
    /// HNSW: candidate list size while building. Default: `200`.
    pub ef_construction: u32,
    /// HNSW: candidate list size while searching; higher gives better recall and fewer
    /// queries per second. Measured on 50k real 384-dimensional embeddings: recall@10 0.863 at
    /// RediSearch's own default of 10, 0.956 at 50, 0.979 at 100 (docs/performance.md).
    /// Default: `100`.
    pub ef_runtime: u32,
    /// Vector dimension; every embedding must have exactly this many elements.
    /// Default: `384` (all-MiniLM-L6-v2).
    pub dimension: u32,
    /// Distance metric. Default: `COSINE`.
    pub distance_metric: DistanceMetric,
    /// Element type of stored vectors. Default: `FLOAT32`.
    pub vector_type: VectorType,
    /// Whether the content of each memory is also indexed as a TEXT field, so that queries
    /// can filter by the words it contains (`MemoryQuery::text`, `engram recall --text`).
    /// Off, the content is kept only in the payload: reads return it, but a query with a text
    /// filter is refused before anything is sent. The TEXT field costs server CPU and memory
    /// on every write: ingest into a FLAT index measured 26.6k entries/s with it and 31.3k/s
    /// without (docs/performance.md). It is part of the index schema, so an existing index
    /// built with the other setting is reported as a schema mismatch on field `content`, never
    /// rewritten. Default: `false`.
    pub full_text: bool,
    /// Name of the embedding model whose vectors the index holds. When set, it is recorded
    /// with the index, and a store opened with another model name, or a query naming another
    /// model, is refused. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            name: "engram-idx".to_owned(),
            key_prefix: "engram:".to_owned(),
            algorithm: VectorAlgorithm::Hnsw,
            m: 16,
            ef_construction: 200,
            ef_runtime: 100,
            dimension: 384,
            distance_metric: DistanceMetric::Cosine,
            vector_type: VectorType::Float32,
            full_text: false,
            embedding_model: None,
        }
    }
}

/// Whether `s` is a valid index name or key prefix: 1 to 64 characters of `[A-Za-z0-9_.:-]`.
/// Glob characters (`*?[]`), braces and spaces are excluded because keys are matched with
/// `SCAN MATCH` and hashed by `{...}` tags on a cluster.
pub fn is_safe_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

impl IndexConfig {
    pub(crate) fn validate(&self, c: &mut Collector) {
        let charset = "1 to 64 characters of letters, digits, `_`, `-`, `.` and `:`";
        c.check(is_safe_identifier(&self.name), "index.name", || {
            format!("({:?}) must be {charset}", self.name)
        });
        c.check(is_safe_identifier(&self.key_prefix), "index.key_prefix", || {
            format!("({:?}) must be {charset}", self.key_prefix)
        });
        c.check((1..=32_768).contains(&self.dimension), "index.dimension", || {
            format!("({}) must be between 1 and 32768", self.dimension)
        });
        c.check((2..=512).contains(&self.m), "index.m", || {
            format!("({}) must be between 2 and 512", self.m)
        });
        c.check((1..=4096).contains(&self.ef_construction), "index.ef_construction", || {
            format!("({}) must be between 1 and 4096", self.ef_construction)
        });
        if let Some(model) = &self.embedding_model {
            c.check(
                !model.is_empty() && model.len() <= 128 && !model.chars().any(char::is_control),
                "index.embedding_model",
                || "must be 1 to 128 characters without control characters".to_owned(),
            );
        }
        c.check((1..=4096).contains(&self.ef_runtime), "index.ef_runtime", || {
            format!("({}) must be between 1 and 4096", self.ef_runtime)
        });
    }
}
