//! Generic records: what every backend stores.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{ErrorKind, Operation, StorageError};
use crate::ids::{Namespace, RecordId};
use crate::schema::{FieldKind, IndexSchema};
use crate::vector;

/// Largest payload accepted, in bytes (16 MiB).
pub const MAX_PAYLOAD_LEN: usize = 16 << 20;
/// Longest tag value, in bytes.
pub const MAX_TAG_LEN: usize = 256;
/// Most tags one field may hold.
pub const MAX_TAGS: usize = 256;

/// A point in time: milliseconds since the Unix epoch, as stored in numeric fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

/// The value of an indexed field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A set of labels for a TAG field (order kept, duplicates allowed but pointless).
    Tags(Vec<String>),
    /// A finite number for a NUMERIC field.
    Numeric(f64),
    /// Text for a TEXT field.
    Text(String),
}

impl FieldValue {
    fn kind(&self) -> FieldKind {
        match self {
            FieldValue::Tags(_) => FieldKind::Tag,
            FieldValue::Numeric(_) => FieldKind::Numeric,
            FieldValue::Text(_) => FieldKind::Text,
        }
    }
}

/// Access statistics kept by `touch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessStats {
    /// How many times the record was touched.
    pub count: u64,
    /// When it was last touched.
    pub last_access: Option<Timestamp>,
}

/// A record: id, namespace, indexed fields, optional vector, opaque payload, expiry, version.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The namespace; every operation is scoped to one.
    pub namespace: Namespace,
    /// Id, unique within the namespace.
    pub id: RecordId,
    /// Indexed fields by name; each must be declared by the schema with the same kind.
    pub fields: BTreeMap<String, FieldValue>,
    /// Embedding; a record without one is never a KNN result.
    pub vector: Option<Vec<f32>>,
    /// Opaque bytes, returned as stored.
    pub payload: Vec<u8>,
    /// Absolute expiry time, or `None` to keep the record for ever. Absolute so that a
    /// retried write does not extend the life of the record.
    pub expires_at: Option<Timestamp>,
    /// Version, written as given by `put_batch` and checked by `compare_and_set`.
    pub version: u64,
    /// Access statistics: maintained by `touch`, written as given by `put_batch` and
    /// `compare_and_set` (so that a rewrite of a record keeps them when the caller does).
    pub access: AccessStats,
}

impl Record {
    /// A record with no fields, vector or expiry, version 1.
    pub fn new(namespace: Namespace, id: RecordId, payload: Vec<u8>) -> Self {
        Self {
            namespace,
            id,
            fields: BTreeMap::new(),
            vector: None,
            payload,
            expires_at: None,
            version: 1,
            access: AccessStats::default(),
        }
    }

    /// Sets an indexed field.
    pub fn with_field(mut self, name: impl Into<String>, value: FieldValue) -> Self {
        self.fields.insert(name.into(), value);
        self
    }

    /// Sets the vector.
    pub fn with_vector(mut self, vector: Vec<f32>) -> Self {
        self.vector = Some(vector);
        self
    }

    /// Sets the expiry time.
    pub fn with_expiry(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Sets the version.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Checks the record against the schema before any I/O: every field declared with the same
    /// kind, tags non-empty and without control characters, numbers finite, the vector valid,
    /// the payload within [`MAX_PAYLOAD_LEN`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] or [`ErrorKind::DimensionMismatch`], naming the record's id.
    pub fn validate(&self, schema: &IndexSchema) -> Result<(), StorageError> {
        let fail = |kind, msg: String| {
            Err(StorageError::new(kind, Operation::Validate, format!("record {}: {msg}", self.id)))
        };
        for (name, value) in &self.fields {
            let Some(spec) = schema.field(name) else {
                return fail(
                    ErrorKind::InvalidInput,
                    format!("field {name:?} is not in the index schema"),
                );
            };
            if spec.kind != value.kind() {
                return fail(
                    ErrorKind::InvalidInput,
                    format!(
                        "field {name:?} is {} in the schema, the value is {}",
                        spec.kind,
                        value.kind()
                    ),
                );
            }
            match value {
                FieldValue::Tags(tags) => {
                    if tags.len() > MAX_TAGS {
                        return fail(
                            ErrorKind::InvalidInput,
                            format!(
                                "field {name:?} has {} tags, at most {MAX_TAGS} allowed",
                                tags.len()
                            ),
                        );
                    }
                    if let Err(why) = tags.iter().try_for_each(|t| check_tag(t)) {
                        return fail(ErrorKind::InvalidInput, format!("field {name:?}: {why}"));
                    }
                }
                FieldValue::Numeric(n) if !n.is_finite() => {
                    return fail(
                        ErrorKind::InvalidInput,
                        format!("field {name:?} is {n}, numbers must be finite"),
                    );
                }
                FieldValue::Text(t) if t.contains('\0') => {
                    return fail(
                        ErrorKind::InvalidInput,
                        format!("field {name:?} contains a NUL character"),
                    );
                }
                _ => {}
            }
        }
        if let Some(v) = &self.vector {
            vector::validate(v, &schema.vector).map_err(|e| {
                StorageError::new(
                    e.kind(),
                    Operation::Validate,
                    format!("record {}: {}", self.id, e.message()),
                )
            })?;
        }
        if self.payload.len() > MAX_PAYLOAD_LEN {
            return fail(
                ErrorKind::InvalidInput,
                format!(
                    "payload is {} bytes, at most {MAX_PAYLOAD_LEN} allowed",
                    self.payload.len()
                ),
            );
        }
        Ok(())
    }
}

/// Checks one tag value: 1 to 256 bytes, no control characters, no whitespace at either end.
///
/// # Errors
/// The rule broken, as text.
pub fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("an empty tag would match everything or nothing; tags must not be empty".into());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!("a tag is {} bytes, at most {MAX_TAG_LEN} allowed", tag.len()));
    }
    if tag.chars().any(char::is_control) {
        return Err("tags must not contain control characters".into());
    }
    // RediSearch trims TAG values when it indexes them, so such a tag could never be found.
    if tag.starts_with(char::is_whitespace) || tag.ends_with(char::is_whitespace) {
        return Err("tags must not start or end with whitespace".into());
    }
    Ok(())
}
