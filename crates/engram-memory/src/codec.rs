//! How a memory becomes a storage record and back: indexed fields for filters, the embedding
//! as the vector, and the rest as a MessagePack payload (rmp-serde, named fields, versioned).

use std::collections::BTreeMap;

use engram_storage::{FieldKind, FieldSpec, FieldValue, Record, Timestamp};
use serde::{Deserialize, Serialize};

use crate::entry::{MemoryEntry, MemoryType, MetadataValue};
use crate::error::MemoryError;

/// Indexed field: the memory type.
pub(crate) const F_TYPE: &str = "mtype";
/// Indexed field: the tags.
pub(crate) const F_TAGS: &str = "tags";
/// Indexed field: importance.
pub(crate) const F_IMPORTANCE: &str = "importance";
/// Indexed field: creation time (ms).
pub(crate) const F_CREATED: &str = "created";
/// Indexed field: last write time (ms).
pub(crate) const F_UPDATED: &str = "updated";
/// Indexed field: the content, for text matches; only with full-text indexing on
/// (`index.full_text`).
pub(crate) const F_CONTENT: &str = "content";
/// Indexed field: the content hash, for exact deduplication.
pub(crate) const F_HASH: &str = "chash";

/// The indexed fields of a memory index; the content is a TEXT field only when `full_text`
/// is on, since indexing it costs server time on every write.
pub(crate) fn fields(full_text: bool) -> Vec<FieldSpec> {
    let mut fields = vec![
        FieldSpec::new(F_TYPE, FieldKind::Tag),
        FieldSpec::new(F_TAGS, FieldKind::Tag),
        FieldSpec::new(F_IMPORTANCE, FieldKind::Numeric),
        FieldSpec::new(F_CREATED, FieldKind::Numeric),
        FieldSpec::new(F_UPDATED, FieldKind::Numeric),
    ];
    if full_text {
        fields.push(FieldSpec::new(F_CONTENT, FieldKind::Text));
    }
    fields.push(FieldSpec::new(F_HASH, FieldKind::Tag));
    fields
}

const PAYLOAD_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Payload {
    v: u8,
    content: String,
    memory_type: MemoryType,
    importance: f32,
    tags: Vec<String>,
    metadata: BTreeMap<String, MetadataValue>,
    created_at: u64,
    updated_at: u64,
}

/// A stable 64-bit FNV-1a hash of the content, in hex. Collisions are harmless: a candidate
/// found by hash is compared by content before it counts as a duplicate.
pub(crate) fn content_hash(content: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in content.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Encodes an entry; the content becomes an indexed TEXT field only when `full_text` is on
/// (it is always in the payload).
///
/// # Errors
/// [`MemoryError::Invalid`] when the payload cannot be encoded.
pub(crate) fn to_record(entry: &MemoryEntry, full_text: bool) -> Result<Record, MemoryError> {
    let payload = Payload {
        v: PAYLOAD_VERSION,
        content: entry.content.clone(),
        memory_type: entry.memory_type,
        importance: entry.importance,
        tags: entry.tags.clone(),
        metadata: entry.metadata.clone(),
        created_at: entry.created_at.as_millis(),
        updated_at: entry.updated_at.as_millis(),
    };
    let bytes = rmp_serde::to_vec_named(&payload).map_err(|e| {
        MemoryError::invalid("metadata", format!("cannot be encoded as MessagePack: {e}"))
    })?;
    let mut record = Record::new(entry.namespace.clone(), entry.id.clone(), bytes)
        .with_field(F_TYPE, FieldValue::Tags(vec![entry.memory_type.as_str().to_owned()]))
        .with_field(F_IMPORTANCE, FieldValue::Numeric(f64::from(entry.importance)))
        .with_field(F_CREATED, FieldValue::Numeric(entry.created_at.as_millis() as f64))
        .with_field(F_UPDATED, FieldValue::Numeric(entry.updated_at.as_millis() as f64))
        .with_field(F_HASH, FieldValue::Tags(vec![content_hash(&entry.content)]))
        .with_version(entry.version);
    if full_text {
        record = record.with_field(F_CONTENT, FieldValue::Text(entry.content.clone()));
    }
    if !entry.tags.is_empty() {
        record = record.with_field(F_TAGS, FieldValue::Tags(entry.tags.clone()));
    }
    record.vector = entry.embedding.clone();
    record.expires_at = entry.expires_at;
    record.access.count = entry.access_count;
    record.access.last_access = entry.last_accessed;
    Ok(record)
}

/// Decodes an entry.
///
/// # Errors
/// [`MemoryError::Corrupt`] when the payload is not a memory.
pub(crate) fn from_record(record: Record) -> Result<MemoryEntry, MemoryError> {
    let corrupt = |message: String| MemoryError::Corrupt { id: record.id.to_string(), message };
    let p: Payload = rmp_serde::from_slice(&record.payload).map_err(|e| corrupt(e.to_string()))?;
    if p.v != PAYLOAD_VERSION {
        return Err(corrupt(format!(
            "payload version {} is not supported (expected {PAYLOAD_VERSION})",
            p.v
        )));
    }
    Ok(MemoryEntry {
        id: record.id,
        namespace: record.namespace,
        content: p.content,
        memory_type: p.memory_type,
        importance: p.importance,
        embedding: record.vector,
        tags: p.tags,
        metadata: p.metadata,
        created_at: Timestamp(p.created_at),
        updated_at: Timestamp(p.updated_at),
        last_accessed: record.access.last_access,
        access_count: record.access.count,
        expires_at: record.expires_at,
        version: record.version,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::entry::MemoryEntry;

    fn arb_meta() -> impl Strategy<Value = MetadataValue> {
        let leaf = prop_oneof![
            Just(MetadataValue::Null),
            any::<bool>().prop_map(MetadataValue::Bool),
            any::<i64>().prop_map(MetadataValue::Int),
            (-1e12f64..1e12).prop_map(MetadataValue::Float),
            ".{0,20}".prop_map(MetadataValue::Text),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(MetadataValue::List),
                proptest::collection::btree_map("[a-z]{1,8}", inner, 0..4)
                    .prop_map(MetadataValue::Map),
            ]
        })
    }

    prop_compose! {
        fn arb_entry()(
            content in "\\PC{1,200}".prop_filter("not blank", |s| !s.trim().is_empty()),
            t in 0usize..5,
            importance in 0.0f32..=1.0,
            embedding in proptest::option::of(proptest::collection::vec(-1.0f32..1.0, 1..16)),
            tags in proptest::collection::vec("[a-zA-Z0-9|{}()@*=>-]([a-zA-Z0-9 |{}()@*=>-]{0,18}[a-zA-Z0-9|{}()@*=>-])?", 0..5),
            metadata in proptest::collection::btree_map("[a-z_]{1,12}", arb_meta(), 0..5),
            created in 0u64..4_000_000_000_000,
            age in 0u64..1_000_000,
            version in 1u64..1000,
            accesses in 0u64..100,
            expires in proptest::option::of(0u64..5_000_000_000_000),
        ) -> MemoryEntry {
            let mut e = MemoryEntry::builder("ns-1", content).build().expect("valid");
            e.memory_type = MemoryType::ALL[t];
            e.importance = importance;
            e.embedding = embedding;
            e.tags = tags;
            e.metadata = metadata;
            e.created_at = Timestamp(created);
            e.updated_at = Timestamp(created + age);
            e.last_accessed = (accesses > 0).then_some(Timestamp(created + age));
            e.access_count = accesses;
            e.expires_at = expires.map(Timestamp);
            e.version = version;
            e
        }
    }

    proptest! {
        #[test]
        fn any_valid_entry_round_trips(entry in arb_entry(), full_text in any::<bool>()) {
            prop_assert!(entry.validate().is_ok());
            let record = to_record(&entry, full_text).expect("encodes");
            prop_assert_eq!(record.fields.contains_key(F_CONTENT), full_text);
            let back = from_record(record).expect("decodes");
            prop_assert_eq!(back, entry);
        }
    }

    #[test]
    fn garbage_payload_is_corrupt_not_a_panic() {
        let mut r = to_record(&MemoryEntry::builder("n", "x").build().expect("valid"), false)
            .expect("encodes");
        r.payload = vec![0xc1, 0xff, 0x00];
        assert!(matches!(from_record(r), Err(MemoryError::Corrupt { .. })));
    }

    #[test]
    fn the_content_is_a_text_field_only_with_full_text() {
        let kinds =
            |full_text| fields(full_text).into_iter().map(|f| (f.name, f.kind)).collect::<Vec<_>>();
        assert!(!kinds(false).iter().any(|(_, k)| *k == FieldKind::Text), "no TEXT field");
        let with: Vec<_> = kinds(true).into_iter().filter(|(_, k)| *k == FieldKind::Text).collect();
        assert_eq!(with, [(F_CONTENT.to_owned(), FieldKind::Text)]);
        let entry = MemoryEntry::builder("n", "some words").build().expect("valid");
        let schema = engram_storage::IndexSchema::from_config(
            &engram_config::IndexConfig::default(),
            fields(false),
        );
        to_record(&entry, false).expect("encodes").validate(&schema).expect("fits the schema");
    }

    #[test]
    fn content_hash_is_stable() {
        assert_eq!(content_hash(""), "cbf29ce484222325");
        assert_eq!(content_hash("a"), "af63dc4c8601ec8c");
    }
}
