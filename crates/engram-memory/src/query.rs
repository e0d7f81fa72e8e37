//! Queries: the nearest memories to an embedding, with filters.

use std::ops::Bound;

use engram_storage::{Filter, Namespace, Timestamp};

use crate::codec::{F_CONTENT, F_CREATED, F_IMPORTANCE, F_TAGS, F_TYPE};
use crate::entry::{MemoryEntry, MemoryType, namespace};
use crate::error::MemoryError;

/// A k-nearest-neighbour query within one namespace. Defaults: k = 10, no filter.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryQuery {
    /// The only namespace searched.
    pub namespace: Namespace,
    /// The query embedding.
    pub embedding: Vec<f32>,
    /// How many results, 1 to 1000.
    pub k: usize,
    /// Only these types (any of them); empty for all.
    pub memory_types: Vec<MemoryType>,
    /// Only entries with at least one of these tags; empty for all.
    pub tags: Vec<String>,
    /// Lower bound of importance.
    pub min_importance: Bound<f32>,
    /// Upper bound of importance.
    pub max_importance: Bound<f32>,
    /// Only entries created at or after this time.
    pub created_from: Option<Timestamp>,
    /// Only entries created before this time.
    pub created_before: Option<Timestamp>,
    /// Only entries whose content has every word of this text. Needs full-text indexing
    /// (`index.full_text`); without it the store refuses the query with
    /// [`MemoryError::FullTextDisabled`].
    pub text: Option<String>,
    /// Only results at this distance or closer.
    pub max_distance: Option<f32>,
    /// HNSW candidate list size for this query (default: the index's).
    pub ef_runtime: Option<u32>,
    /// The embedding model of `embedding`; refused when it differs from the index's.
    pub model: Option<String>,
}

/// Largest k of a memory query.
pub const MAX_QUERY_K: usize = 1000;

impl MemoryQuery {
    /// The 10 nearest memories of `namespace` to `embedding`.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] for a bad namespace.
    pub fn new(namespace_name: &str, embedding: Vec<f32>) -> Result<Self, MemoryError> {
        Ok(Self {
            namespace: namespace(namespace_name)?,
            embedding,
            k: 10,
            memory_types: Vec::new(),
            tags: Vec::new(),
            min_importance: Bound::Unbounded,
            max_importance: Bound::Unbounded,
            created_from: None,
            created_before: None,
            text: None,
            max_distance: None,
            ef_runtime: None,
            model: None,
        })
    }

    /// Sets k.
    pub fn k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }
    /// Only these types.
    pub fn types(mut self, types: impl IntoIterator<Item = MemoryType>) -> Self {
        self.memory_types = types.into_iter().collect();
        self
    }
    /// Only entries with one of these tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }
    /// Only entries at least this important.
    pub fn min_importance(mut self, min: f32) -> Self {
        self.min_importance = Bound::Included(min);
        self
    }
    /// Only entries at most this important.
    pub fn max_importance(mut self, max: f32) -> Self {
        self.max_importance = Bound::Included(max);
        self
    }
    /// Only entries created in `[from, before)`.
    pub fn created_between(mut self, from: Option<Timestamp>, before: Option<Timestamp>) -> Self {
        self.created_from = from;
        self.created_before = before;
        self
    }
    /// Only entries whose content has every word of `text` (case-insensitive, whole words).
    /// Needs `index.full_text = true`; without it the store refuses the query with
    /// [`MemoryError::FullTextDisabled`].
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    /// Only results at this distance or closer.
    pub fn max_distance(mut self, d: f32) -> Self {
        self.max_distance = Some(d);
        self
    }
    /// HNSW candidate list size.
    pub fn ef_runtime(mut self, ef: u32) -> Self {
        self.ef_runtime = Some(ef);
        self
    }
    /// Names the embedding model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Checks k and the bounds.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), MemoryError> {
        if self.k == 0 || self.k > MAX_QUERY_K {
            return Err(MemoryError::invalid(
                "k",
                format!("is {}, expected 1 to {MAX_QUERY_K}", self.k),
            ));
        }
        for b in [self.min_importance, self.max_importance] {
            if let Bound::Included(x) | Bound::Excluded(x) = b
                && !(x.is_finite() && (0.0..=1.0).contains(&x))
            {
                return Err(MemoryError::invalid(
                    "importance",
                    format!("bound {x} is not between 0 and 1"),
                ));
            }
        }
        if self.embedding.is_empty() {
            return Err(MemoryError::invalid("embedding", "is empty"));
        }
        Ok(())
    }

    /// The storage filter for the query's conditions (`None` when there are none).
    pub(crate) fn filter(&self) -> Option<Filter> {
        let mut all = Vec::new();
        if !self.memory_types.is_empty() {
            all.push(Filter::tag_in(F_TYPE, self.memory_types.iter().map(|t| t.as_str())));
        }
        if !self.tags.is_empty() {
            all.push(Filter::tag_in(F_TAGS, self.tags.clone()));
        }
        let widen = |b: Bound<f32>| match b {
            Bound::Included(x) => Bound::Included(f64::from(x)),
            Bound::Excluded(x) => Bound::Excluded(f64::from(x)),
            Bound::Unbounded => Bound::Unbounded,
        };
        if self.min_importance != Bound::Unbounded || self.max_importance != Bound::Unbounded {
            all.push(Filter::range(
                F_IMPORTANCE,
                widen(self.min_importance),
                widen(self.max_importance),
            ));
        }
        if self.created_from.is_some() || self.created_before.is_some() {
            all.push(Filter::time_range(
                F_CREATED,
                self.created_from.map_or(Bound::Unbounded, Bound::Included),
                self.created_before.map_or(Bound::Unbounded, Bound::Excluded),
            ));
        }
        if let Some(text) = &self.text {
            all.push(Filter::text(F_CONTENT, text.clone()));
        }
        match all.len() {
            0 => None,
            1 => all.pop(),
            _ => Some(Filter::And(all)),
        }
    }
}

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredMemory {
    /// The memory.
    pub entry: MemoryEntry,
    /// Its distance to the query embedding, as the index reports it.
    pub distance: f32,
    /// Similarity in `[0, 1]` derived from the distance (see [`crate::ranking::similarity`]).
    pub similarity: f64,
    /// The final score used for ordering (see [`crate::ranking`]).
    pub score: f64,
}
