//! The typed filter AST: built from typed values, validated against the schema, evaluated over
//! records by the in-process backend and rendered to a query by the Redis backend.
//!
//! Values never become query syntax: a tag, number or word is data in every form the filter
//! takes, so no value can change the structure of the query it is rendered into.

use std::ops::Bound;

use crate::error::{ErrorKind, Operation, StorageError};
use crate::record::{FieldValue, Record, Timestamp, check_tag};
use crate::schema::{FieldKind, IndexSchema};

/// Deepest nesting of `And`, `Or` and `Not` accepted.
pub const MAX_DEPTH: usize = 16;
/// Most nodes one filter may have.
pub const MAX_NODES: usize = 256;

/// A filter over a record's indexed fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// The TAG field holds at least one of `values` (one value: equality).
    Tag {
        /// Field name.
        field: String,
        /// Accepted values, matched exactly and case-sensitively.
        values: Vec<String>,
    },
    /// The NUMERIC field lies within the bounds.
    Range {
        /// Field name.
        field: String,
        /// Lower bound.
        lower: Bound<f64>,
        /// Upper bound.
        upper: Bound<f64>,
    },
    /// The TEXT field contains every word of `text` (case-insensitive, whole words).
    Text {
        /// Field name.
        field: String,
        /// Words to find, split as the index splits text.
        text: String,
    },
    /// Every filter matches.
    And(Vec<Filter>),
    /// At least one filter matches.
    Or(Vec<Filter>),
    /// The filter does not match.
    Not(Box<Filter>),
}

impl Filter {
    /// `field` holds the tag `value`.
    pub fn tag_eq(field: impl Into<String>, value: impl Into<String>) -> Self {
        Filter::Tag { field: field.into(), values: vec![value.into()] }
    }

    /// `field` holds at least one of `values`.
    pub fn tag_in<I, S>(field: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Filter::Tag { field: field.into(), values: values.into_iter().map(Into::into).collect() }
    }

    /// `field` lies within `lower` and `upper`.
    pub fn range(field: impl Into<String>, lower: Bound<f64>, upper: Bound<f64>) -> Self {
        Filter::Range { field: field.into(), lower, upper }
    }

    /// The timestamp in `field` (milliseconds) lies within `from` and `to`.
    pub fn time_range(
        field: impl Into<String>,
        from: Bound<Timestamp>,
        to: Bound<Timestamp>,
    ) -> Self {
        let ms = |b: Bound<Timestamp>| match b {
            Bound::Included(t) => Bound::Included(t.as_millis() as f64),
            Bound::Excluded(t) => Bound::Excluded(t.as_millis() as f64),
            Bound::Unbounded => Bound::Unbounded,
        };
        Filter::Range { field: field.into(), lower: ms(from), upper: ms(to) }
    }

    /// `field` contains every word of `text`.
    pub fn text(field: impl Into<String>, text: impl Into<String>) -> Self {
        Filter::Text { field: field.into(), text: text.into() }
    }

    /// All of `filters`.
    pub fn and(filters: impl IntoIterator<Item = Filter>) -> Self {
        Filter::And(filters.into_iter().collect())
    }

    /// Any of `filters`.
    pub fn or(filters: impl IntoIterator<Item = Filter>) -> Self {
        Filter::Or(filters.into_iter().collect())
    }

    /// Not `filter`.
    #[allow(clippy::should_implement_trait)]
    pub fn not(filter: Filter) -> Self {
        Filter::Not(Box::new(filter))
    }

    /// Checks the filter against the schema: fields declared with the right kind, tag values
    /// valid and at least one per clause, bounds not NaN and not empty, text with at least one
    /// word, `And`/`Or` not empty, depth and size bounded.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the offending clause.
    pub fn validate(&self, schema: &IndexSchema) -> Result<(), StorageError> {
        let mut nodes = 0;
        self.check(schema, 0, &mut nodes).map_err(|m| {
            StorageError::new(ErrorKind::InvalidInput, Operation::Validate, format!("filter: {m}"))
        })
    }

    fn check(&self, schema: &IndexSchema, depth: usize, nodes: &mut usize) -> Result<(), String> {
        *nodes += 1;
        if *nodes > MAX_NODES {
            return Err(format!("more than {MAX_NODES} clauses"));
        }
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        let kind_of = |field: &str, want: FieldKind| match schema.field(field) {
            None => Err(format!("field {field:?} is not in the index schema")),
            Some(f) if f.kind != want => {
                Err(format!("field {field:?} is {}, the clause needs {want}", f.kind))
            }
            Some(_) => Ok(()),
        };
        match self {
            Filter::Tag { field, values } => {
                kind_of(field, FieldKind::Tag)?;
                if values.is_empty() {
                    return Err(format!("tag clause on {field:?} has no values"));
                }
                values
                    .iter()
                    .try_for_each(|v| check_tag(v))
                    .map_err(|e| format!("tag clause on {field:?}: {e}"))
            }
            Filter::Range { field, lower, upper } => {
                kind_of(field, FieldKind::Numeric)?;
                let value = |b: &Bound<f64>| match b {
                    Bound::Included(x) | Bound::Excluded(x) => Some(*x),
                    Bound::Unbounded => None,
                };
                if [value(lower), value(upper)].iter().flatten().any(|x| x.is_nan()) {
                    return Err(format!("range on {field:?} has a NaN bound"));
                }
                if let (Some(lo), Some(hi)) = (value(lower), value(upper)) {
                    let both_inclusive =
                        matches!((lower, upper), (Bound::Included(_), Bound::Included(_)));
                    if lo > hi || (lo == hi && !both_inclusive) {
                        return Err(format!(
                            "range on {field:?} is empty ({lower:?} to {upper:?})"
                        ));
                    }
                }
                Ok(())
            }
            Filter::Text { field, text } => {
                kind_of(field, FieldKind::Text)?;
                if tokenize(text).is_empty() {
                    return Err(format!("text clause on {field:?} has no words"));
                }
                Ok(())
            }
            Filter::And(fs) | Filter::Or(fs) => {
                if fs.is_empty() {
                    return Err("an empty AND or OR has no meaning".into());
                }
                fs.iter().try_for_each(|f| f.check(schema, depth + 1, nodes))
            }
            Filter::Not(f) => f.check(schema, depth + 1, nodes),
        }
    }

    /// Whether `record` matches. A clause on a field the record lacks does not match (so
    /// `Not` of it does), as in RediSearch.
    pub fn matches(&self, record: &Record) -> bool {
        match self {
            Filter::Tag { field, values } => match record.fields.get(field) {
                Some(FieldValue::Tags(tags)) => tags.iter().any(|t| values.contains(t)),
                _ => false,
            },
            Filter::Range { field, lower, upper } => match record.fields.get(field) {
                Some(FieldValue::Numeric(x)) => {
                    let above = match lower {
                        Bound::Included(lo) => x >= lo,
                        Bound::Excluded(lo) => x > lo,
                        Bound::Unbounded => true,
                    };
                    let below = match upper {
                        Bound::Included(hi) => x <= hi,
                        Bound::Excluded(hi) => x < hi,
                        Bound::Unbounded => true,
                    };
                    above && below
                }
                _ => false,
            },
            Filter::Text { field, text } => match record.fields.get(field) {
                Some(FieldValue::Text(body)) => {
                    let words = tokenize(body);
                    tokenize(text).iter().all(|w| words.contains(w))
                }
                _ => false,
            },
            Filter::And(fs) => fs.iter().all(|f| f.matches(record)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(record)),
            Filter::Not(f) => !f.matches(record),
        }
    }
}

/// Splits text into lowercase words the way the index does: runs of letters, digits and `_`.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Namespace, RecordId};
    use crate::schema::FieldSpec;

    fn schema() -> IndexSchema {
        IndexSchema::from_config(
            &engram_config::IndexConfig::default(),
            vec![
                FieldSpec::new("kind", FieldKind::Tag),
                FieldSpec::new("score", FieldKind::Numeric),
                FieldSpec::new("body", FieldKind::Text),
            ],
        )
    }

    fn record() -> Record {
        Record::new(Namespace::new("n").unwrap(), RecordId::new("r").unwrap(), vec![])
            .with_field("kind", FieldValue::Tags(vec!["a|b".into(), "Fact".into()]))
            .with_field("score", FieldValue::Numeric(0.5))
            .with_field("body", FieldValue::Text("The quick_brown fox, jumped!".into()))
    }

    #[test]
    fn evaluates_every_operator() {
        let r = record();
        assert!(Filter::tag_eq("kind", "a|b").matches(&r));
        assert!(!Filter::tag_eq("kind", "fact").matches(&r), "tags are case-sensitive");
        assert!(Filter::tag_in("kind", ["x", "Fact"]).matches(&r));
        assert!(Filter::range("score", Bound::Included(0.5), Bound::Unbounded).matches(&r));
        assert!(!Filter::range("score", Bound::Excluded(0.5), Bound::Unbounded).matches(&r));
        assert!(!Filter::range("score", Bound::Unbounded, Bound::Excluded(0.5)).matches(&r));
        assert!(Filter::text("body", "FOX quick_brown").matches(&r));
        assert!(!Filter::text("body", "quick").matches(&r), "`_` joins words");
        assert!(
            Filter::and([Filter::tag_eq("kind", "Fact"), Filter::text("body", "the")]).matches(&r)
        );
        assert!(
            Filter::or([Filter::tag_eq("kind", "x"), Filter::text("body", "jumped")]).matches(&r)
        );
        assert!(Filter::not(Filter::tag_eq("kind", "x")).matches(&r));
        let bare = Record::new(Namespace::new("n").unwrap(), RecordId::new("s").unwrap(), vec![]);
        assert!(!Filter::tag_eq("kind", "a").matches(&bare));
        assert!(Filter::not(Filter::tag_eq("kind", "a")).matches(&bare));
    }

    #[test]
    fn time_range_is_a_millisecond_range() {
        let f = Filter::time_range("score", Bound::Included(Timestamp(1000)), Bound::Unbounded);
        assert_eq!(f, Filter::range("score", Bound::Included(1000.0), Bound::Unbounded));
    }

    #[test]
    fn validation_rejects_malformed_filters() {
        let s = schema();
        let bad = [
            Filter::tag_eq("nope", "x"),
            Filter::tag_eq("score", "x"),
            Filter::tag_in("kind", Vec::<String>::new()),
            Filter::tag_eq("kind", ""),
            Filter::range("score", Bound::Included(f64::NAN), Bound::Unbounded),
            Filter::range("score", Bound::Included(2.0), Bound::Included(1.0)),
            Filter::range("score", Bound::Included(1.0), Bound::Excluded(1.0)),
            Filter::text("body", " ,.! "),
            Filter::And(vec![]),
            Filter::Or(vec![]),
        ];
        for f in bad {
            let e = f.validate(&s).expect_err(&format!("{f:?} should be invalid"));
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        let mut deep = Filter::tag_eq("kind", "x");
        for _ in 0..=MAX_DEPTH {
            deep = Filter::not(deep);
        }
        assert!(deep.validate(&s).is_err());
        assert!(
            Filter::range("score", Bound::Included(1.0), Bound::Included(1.0)).validate(&s).is_ok()
        );
    }
}
