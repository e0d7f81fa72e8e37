//! The index schema a backend creates and checks: indexed fields and the vector field.

use std::fmt;

pub use engram_config::{DistanceMetric, VectorType};
use engram_config::{IndexConfig, VectorAlgorithm, is_safe_identifier};

use crate::error::{ErrorKind, Operation, StorageError};

/// Kind of an indexed field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// Exact-match labels; a record holds a set of them. Case-sensitive.
    Tag,
    /// A finite number, filtered by ranges (timestamps are numeric milliseconds).
    Numeric,
    /// Free text, matched by words (case-insensitive, no stemming, no stop words).
    Text,
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldKind::Tag => "TAG",
            FieldKind::Numeric => "NUMERIC",
            FieldKind::Text => "TEXT",
        })
    }
}

/// One indexed field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldSpec {
    /// Field name: a letter, then letters, digits or `_`; at most 64. Names starting with `__`
    /// are reserved for the backend's own fields.
    pub name: String,
    /// What the field holds.
    pub kind: FieldKind,
}

impl FieldSpec {
    /// A field of this name and kind.
    pub fn new(name: impl Into<String>, kind: FieldKind) -> Self {
        Self { name: name.into(), kind }
    }
}

/// HNSW graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HnswParams {
    /// Edges per node.
    pub m: u32,
    /// Candidate list size while building.
    pub ef_construction: u32,
    /// Default candidate list size while searching.
    pub ef_runtime: u32,
}

/// Vector index algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Exact brute force.
    Flat,
    /// Approximate graph search.
    Hnsw(HnswParams),
}

/// The vector field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VectorSpec {
    /// Number of elements of every vector.
    pub dimension: u32,
    /// Distance between vectors.
    pub metric: DistanceMetric,
    /// Element type stored.
    pub vector_type: VectorType,
    /// Index algorithm.
    pub algorithm: Algorithm,
}

/// Everything a backend needs to create or check an index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexSchema {
    /// Index name.
    pub name: String,
    /// Prefix of every key the index covers.
    pub key_prefix: String,
    /// Indexed fields, besides the namespace, which every schema has.
    pub fields: Vec<FieldSpec>,
    /// The vector field.
    pub vector: VectorSpec,
}

impl IndexSchema {
    /// A schema with the index settings of `config` and these fields.
    pub fn from_config(config: &IndexConfig, fields: Vec<FieldSpec>) -> Self {
        let algorithm = match config.algorithm {
            VectorAlgorithm::Flat => Algorithm::Flat,
            VectorAlgorithm::Hnsw => Algorithm::Hnsw(HnswParams {
                m: config.m,
                ef_construction: config.ef_construction,
                ef_runtime: config.ef_runtime,
            }),
        };
        Self {
            name: config.name.clone(),
            key_prefix: config.key_prefix.clone(),
            fields,
            vector: VectorSpec {
                dimension: config.dimension,
                metric: config.distance_metric,
                vector_type: config.vector_type,
                algorithm,
            },
        }
    }

    /// The field of this name.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks names, duplicates and vector parameters.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] listing every problem.
    pub fn validate(&self) -> Result<(), StorageError> {
        let mut problems = Vec::new();
        if !is_safe_identifier(&self.name) {
            problems.push(format!("index name {:?} is not 1 to 64 of [A-Za-z0-9_.:-]", self.name));
        }
        if !is_safe_identifier(&self.key_prefix) {
            problems.push(format!(
                "key prefix {:?} is not 1 to 64 of [A-Za-z0-9_.:-]",
                self.key_prefix
            ));
        }
        for (i, f) in self.fields.iter().enumerate() {
            if !is_field_name(&f.name) {
                problems.push(format!(
                    "field name {:?} must start with a letter, hold only letters, digits and `_`, have at most 64 characters and not start with `__`",
                    f.name
                ));
            }
            if self.fields[..i].iter().any(|g| g.name == f.name) {
                problems.push(format!("field {:?} is declared twice", f.name));
            }
        }
        if !(1..=32_768).contains(&self.vector.dimension) {
            problems.push(format!(
                "vector dimension {} is not between 1 and 32768",
                self.vector.dimension
            ));
        }
        if let Algorithm::Hnsw(p) = self.vector.algorithm
            && (p.m < 2 || p.ef_construction == 0 || p.ef_runtime == 0)
        {
            problems.push(format!("HNSW parameters {p:?} need m >= 2 and ef values >= 1"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StorageError::new(
                ErrorKind::InvalidInput,
                Operation::EnsureIndex,
                problems.join("; "),
            ))
        }
    }

    /// Every difference between this (wanted) schema and `existing`, worded for a
    /// schema-mismatch error. Empty when they match. The default `ef_runtime` is not compared:
    /// it can be given per query, so an index built with another one still serves.
    pub fn differences(&self, existing: &IndexSchema) -> Vec<String> {
        let mut out = Vec::new();
        if self.key_prefix != existing.key_prefix {
            out.push(format!(
                "key prefix: wanted {:?}, index has {:?}",
                self.key_prefix, existing.key_prefix
            ));
        }
        for f in &self.fields {
            match existing.field(&f.name) {
                None => out.push(format!("field {:?}: wanted {}, index lacks it", f.name, f.kind)),
                Some(e) if e.kind != f.kind => {
                    out.push(format!("field {:?}: wanted {}, index has {}", f.name, f.kind, e.kind))
                }
                Some(_) => {}
            }
        }
        for e in &existing.fields {
            if self.field(&e.name).is_none() {
                out.push(format!(
                    "field {:?}: index has {} that the schema does not declare",
                    e.name, e.kind
                ));
            }
        }
        let (w, h) = (&self.vector, &existing.vector);
        if w.dimension != h.dimension {
            out.push(format!(
                "vector dimension: wanted {}, index has {}",
                w.dimension, h.dimension
            ));
        }
        if w.metric != h.metric {
            out.push(format!("distance metric: wanted {:?}, index has {:?}", w.metric, h.metric));
        }
        if w.vector_type != h.vector_type {
            out.push(format!(
                "vector type: wanted {:?}, index has {:?}",
                w.vector_type, h.vector_type
            ));
        }
        match (w.algorithm, h.algorithm) {
            (Algorithm::Flat, Algorithm::Flat) => {}
            (Algorithm::Hnsw(a), Algorithm::Hnsw(b)) => {
                if a.m != b.m || a.ef_construction != b.ef_construction {
                    out.push(format!(
                        "HNSW parameters: wanted M {} EF_CONSTRUCTION {}, index has M {} EF_CONSTRUCTION {}",
                        a.m, a.ef_construction, b.m, b.ef_construction
                    ));
                }
            }
            (a, b) => {
                out.push(format!("algorithm: wanted {}, index has {}", algo_name(a), algo_name(b)))
            }
        }
        out
    }

    /// The schema-mismatch error for these differences.
    pub fn mismatch_error(&self, differences: &[String]) -> StorageError {
        StorageError::new(
            ErrorKind::SchemaMismatch,
            Operation::EnsureIndex,
            format!(
                "index {:?} exists with another schema ({}); engram never drops or rewrites an index: drop it yourself or choose another index name",
                self.name,
                differences.join("; ")
            ),
        )
    }
}

fn algo_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Flat => "FLAT",
        Algorithm::Hnsw(_) => "HNSW",
    }
}

/// Whether `name` is a valid field name (see [`FieldSpec::name`]).
pub fn is_field_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 64
        && !name.starts_with("__")
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> IndexSchema {
        IndexSchema::from_config(
            &IndexConfig::default(),
            vec![
                FieldSpec::new("kind", FieldKind::Tag),
                FieldSpec::new("score", FieldKind::Numeric),
            ],
        )
    }

    #[test]
    fn default_config_schema_is_valid() {
        schema().validate().unwrap();
    }

    #[test]
    fn invalid_names_are_all_reported() {
        let mut s = schema();
        s.fields.push(FieldSpec::new("__ns", FieldKind::Tag));
        s.fields.push(FieldSpec::new("kind", FieldKind::Text));
        s.vector.dimension = 0;
        let e = s.validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let m = e.message();
        assert!(
            m.contains("\"__ns\"") && m.contains("declared twice") && m.contains("dimension 0"),
            "{m}"
        );
    }

    #[test]
    fn differences_name_each_mismatch() {
        let wanted = schema();
        assert!(wanted.differences(&wanted).is_empty());
        let mut other = schema();
        other.vector.dimension = 768;
        other.fields[1].kind = FieldKind::Tag;
        other.vector.algorithm = Algorithm::Flat;
        let d = wanted.differences(&other);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d.iter().any(|x| x.contains("dimension: wanted 384, index has 768")), "{d:?}");
        let mut ef = schema();
        if let Algorithm::Hnsw(p) = &mut ef.vector.algorithm {
            p.ef_runtime = 999;
        }
        assert!(wanted.differences(&ef).is_empty(), "ef_runtime is per query");
    }
}
