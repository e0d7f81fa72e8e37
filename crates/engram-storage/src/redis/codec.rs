//! How a [`Record`] is laid out in a Redis HASH, both ways.
//!
//! User fields keep their names (which can never start with `__`); the backend's own fields
//! start with `__`:
//!
//! | field | content | indexed as |
//! |---|---|---|
//! | `__ns` | the namespace | TAG CASESENSITIVE (filtered in every search) |
//! | `__exp` | expiry, ms since the epoch, or `inf` for none | NUMERIC (filtered in every search) |
//! | `__vec` | the vector, FLOAT32 little-endian (absent without a vector) | VECTOR |
//! | `__payload` | the payload bytes | not indexed |
//! | `__ver` | the version, decimal | not indexed |
//! | `__acc_n`, `__acc_t` | access count and last access (ms; empty or absent when never touched) | not indexed |
//!
//! Tags are joined with [`TAG_SEPARATOR`] (`\x1f`, a control character, which tags can never
//! contain); numbers are written in Rust's shortest round-trip decimal form, which RediSearch
//! parses to the same `f64`.

use std::collections::BTreeMap;

use crate::error::{ErrorKind, Operation, StorageError};
use crate::ids::{Namespace, RecordId};
use crate::record::{FieldValue, Record, Timestamp};
use crate::schema::{FieldKind, IndexSchema};
use crate::vector;

/// Namespace field.
pub(crate) const NS: &str = "__ns";
/// Expiry field.
pub(crate) const EXP: &str = "__exp";
/// Vector field.
pub(crate) const VEC: &str = "__vec";
/// Payload field.
pub(crate) const PAYLOAD: &str = "__payload";
/// Version field.
pub(crate) const VER: &str = "__ver";
/// Access count field.
pub(crate) const ACC_N: &str = "__acc_n";
/// Last access field.
pub(crate) const ACC_T: &str = "__acc_t";
/// The distance alias of a search.
pub(crate) const DIST: &str = "__dist";
/// Value of `__exp` for a record that never expires (RediSearch parses it as +infinity).
pub(crate) const NO_EXPIRY: &str = "inf";
/// Separator of the values of a TAG field; tags cannot contain control characters.
pub(crate) const TAG_SEPARATOR: char = '\x1f';
/// Latest expiry sent to the server as `PEXPIREAT` (9999-12-31T23:59:59.999Z); a later one
/// is kept in `__exp` (so reads and searches honour it) without a server-side expiry, since
/// Redis refuses expiry times near the end of its 64-bit range.
pub(crate) const MAX_SERVER_EXPIRY: u64 = 253_402_300_799_999;

/// The fields of a record, as name/value pairs in a fixed order, ready for `HSET`.
pub(crate) fn encode(record: &Record) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::with_capacity(record.fields.len() + 7);
    out.push((NS.into(), record.namespace.as_str().as_bytes().to_vec()));
    out.push((EXP.into(), encode_expiry(record.expires_at).into_bytes()));
    out.push((VER.into(), record.version.to_string().into_bytes()));
    out.push((PAYLOAD.into(), record.payload.clone()));
    out.push((ACC_N.into(), record.access.count.to_string().into_bytes()));
    // Always written (empty for never), so that a rewrite needs no `HDEL` of it.
    out.push((
        ACC_T.into(),
        record
            .access
            .last_access
            .map(|t| t.as_millis().to_string())
            .unwrap_or_default()
            .into_bytes(),
    ));
    if let Some(v) = &record.vector {
        out.push((VEC.into(), vector::to_le_bytes(v)));
    }
    for (name, value) in &record.fields {
        let bytes = match value {
            FieldValue::Tags(tags) => join_tags(tags).into_bytes(),
            FieldValue::Numeric(x) => format_number(*x).into_bytes(),
            FieldValue::Text(t) => t.clone().into_bytes(),
        };
        out.push((name.clone(), bytes));
    }
    out
}

/// The fields a hash written by [`encode`] for another record of this schema may hold and
/// this record lacks: `__vec` without a vector, and the schema's fields the record does not
/// set. A rewrite deletes them, so no field of an older version survives.
pub(crate) fn absent_fields(schema: &IndexSchema, record: &Record) -> Vec<String> {
    let mut out = Vec::new();
    if record.vector.is_none() {
        out.push(VEC.to_owned());
    }
    out.extend(
        schema
            .fields
            .iter()
            .filter(|f| !record.fields.contains_key(&f.name))
            .map(|f| f.name.clone()),
    );
    out
}

/// `__exp` for an expiry.
pub(crate) fn encode_expiry(at: Option<Timestamp>) -> String {
    at.map_or_else(|| NO_EXPIRY.to_owned(), |t| t.as_millis().to_string())
}

/// The `PEXPIREAT` argument for an expiry, or `None` when the key is kept without one.
pub(crate) fn server_expiry(at: Option<Timestamp>) -> Option<u64> {
    at.map(Timestamp::as_millis).filter(|ms| *ms <= MAX_SERVER_EXPIRY)
}

/// Formats a finite number so that parsing it gives the same `f64` (infinities as `+inf` and
/// `-inf`, which RediSearch accepts in ranges).
pub(crate) fn format_number(x: f64) -> String {
    if x == f64::INFINITY {
        "+inf".to_owned()
    } else if x == f64::NEG_INFINITY {
        "-inf".to_owned()
    } else {
        format!("{x}")
    }
}

fn join_tags(tags: &[String]) -> String {
    let mut s = String::new();
    for (i, t) in tags.iter().enumerate() {
        if i > 0 {
            s.push(TAG_SEPARATOR);
        }
        s.push_str(t);
    }
    s
}

fn split_tags(s: &str) -> Vec<String> {
    if s.is_empty() { Vec::new() } else { s.split(TAG_SEPARATOR).map(str::to_owned).collect() }
}

/// The hash fields [`decode`] rebuilds a record from, besides the namespace (which a search
/// checks on the key instead): engram's own, then the schema's.
pub(crate) fn record_fields(schema: &IndexSchema) -> impl Iterator<Item = String> + '_ {
    [EXP, VER, PAYLOAD, ACC_N, ACC_T, VEC]
        .into_iter()
        .map(str::to_owned)
        .chain(schema.fields.iter().map(|f| f.name.clone()))
}

/// The hash fields a read by id asks for (`HMGET`), in this order: the namespace, then
/// [`record_fields`]. Reading them by name rather than with `HGETALL` leaves the names out of
/// the reply, and the client builds no map of it.
pub(crate) fn read_fields(schema: &IndexSchema) -> Vec<String> {
    std::iter::once(NS.to_owned()).chain(record_fields(schema)).collect()
}

/// Rebuilds a record from its hash fields. Fields the schema does not declare are ignored.
///
/// # Errors
/// [`ErrorKind::Protocol`] when a field of the backend's own cannot be decoded (a hash not
/// written by engram, or damaged), naming the field but never its content.
pub(crate) fn decode<N: AsRef<str> + Into<String>>(
    schema: &IndexSchema,
    namespace: &Namespace,
    id: &RecordId,
    fields: impl IntoIterator<Item = (N, Vec<u8>)>,
    op: Operation,
) -> Result<Record, StorageError> {
    let bad = |field: &str, why: &str| {
        StorageError::new(
            ErrorKind::Protocol,
            op,
            format!("record {id}: stored field {field:?} {why}"),
        )
    };
    let text = |field: &str, b: Vec<u8>| {
        String::from_utf8(b).map_err(|_| bad(field, "is not valid UTF-8"))
    };
    let mut record = Record::new(namespace.clone(), id.clone(), Vec::new());
    record.version = 0;
    let mut fields_out = BTreeMap::new();
    let mut saw_version = false;
    for (name, value) in fields {
        match name.as_ref() {
            NS => {
                if value != namespace.as_str().as_bytes() {
                    return Err(bad(NS, "names another namespace than the key"));
                }
            }
            EXP => {
                let s = text(EXP, value)?;
                record.expires_at = if s == NO_EXPIRY {
                    None
                } else {
                    Some(Timestamp(s.parse().map_err(|_| bad(EXP, "is not a time in ms"))?))
                };
            }
            VER => {
                record.version =
                    text(VER, value)?.parse().map_err(|_| bad(VER, "is not a version"))?;
                saw_version = true;
            }
            PAYLOAD => record.payload = value,
            ACC_N => {
                record.access.count =
                    text(ACC_N, value)?.parse().map_err(|_| bad(ACC_N, "is not a count"))?;
            }
            ACC_T if value.is_empty() => record.access.last_access = None,
            ACC_T => {
                record.access.last_access = Some(Timestamp(
                    text(ACC_T, value)?.parse().map_err(|_| bad(ACC_T, "is not a time in ms"))?,
                ));
            }
            VEC => {
                let v = vector::from_le_bytes(&value)
                    .ok_or_else(|| bad(VEC, "is not a whole number of FLOAT32 elements"))?;
                record.vector = Some(v);
            }
            other => {
                let Some(spec) = schema.field(other) else { continue };
                let v = match spec.kind {
                    FieldKind::Tag => FieldValue::Tags(split_tags(&text(other, value)?)),
                    FieldKind::Numeric => FieldValue::Numeric(
                        text(other, value)?.parse().map_err(|_| bad(other, "is not a number"))?,
                    ),
                    FieldKind::Text => FieldValue::Text(text(other, value)?),
                };
                fields_out.insert(name.into(), v);
            }
        }
    }
    if !saw_version {
        return Err(bad(VER, "is missing (the hash was not written by engram)"));
    }
    record.fields = fields_out;
    Ok(record)
}

/// Whether a record stored with this `__exp` is expired at `now`.
pub(crate) fn is_expired(expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    expires_at.is_some_and(|at| at <= now)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::record::AccessStats;
    use crate::schema::FieldSpec;

    fn schema() -> IndexSchema {
        IndexSchema::from_config(
            &engram_config::IndexConfig { dimension: 3, ..Default::default() },
            vec![
                FieldSpec::new("kind", FieldKind::Tag),
                FieldSpec::new("score", FieldKind::Numeric),
                FieldSpec::new("body", FieldKind::Text),
            ],
        )
    }

    fn round_trip(r: &Record) -> Record {
        decode(&schema(), &r.namespace, &r.id, encode(r), Operation::Get).unwrap()
    }

    #[test]
    fn records_round_trip_through_hash_fields() {
        let ns = Namespace::new("n").unwrap();
        let mut r = Record::new(ns, RecordId::new("a:b").unwrap(), vec![0, 255, 1])
            .with_vector(vec![0.0, -1.5, 3.25])
            .with_field("kind", FieldValue::Tags(vec!["a|b c".into(), "{x}".into()]))
            .with_field("score", FieldValue::Numeric(-0.1))
            .with_field("body", FieldValue::Text("Hello, world".into()))
            .with_expiry(Timestamp(1_700_000_000_123))
            .with_version(7);
        r.access = AccessStats { count: 3, last_access: Some(Timestamp(5)) };
        assert_eq!(round_trip(&r), r);
        let bare = Record::new(r.namespace.clone(), r.id.clone(), vec![])
            .with_field("kind", FieldValue::Tags(vec![]));
        assert_eq!(round_trip(&bare), bare);
    }

    #[test]
    fn undeclared_fields_are_ignored_and_damage_is_a_protocol_error() {
        let ns = Namespace::new("n").unwrap();
        let id = RecordId::new("x").unwrap();
        let mut fields = encode(&Record::new(ns.clone(), id.clone(), vec![]));
        fields.push(("other".into(), b"zz".to_vec()));
        assert!(decode(&schema(), &ns, &id, fields.clone(), Operation::Get).is_ok());
        fields.push((VEC.into(), vec![1, 2, 3]));
        let e = decode(&schema(), &ns, &id, fields, Operation::Get).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.message().contains("__vec"), "{e}");
        let e = decode(&schema(), &ns, &id, Vec::<(String, Vec<u8>)>::new(), Operation::Get)
            .unwrap_err();
        assert!(e.message().contains("__ver"), "{e}");
    }

    #[test]
    fn a_rewrite_knows_the_fields_an_older_version_may_have_left() {
        let ns = Namespace::new("n").unwrap();
        let id = RecordId::new("x").unwrap();
        let bare = Record::new(ns.clone(), id.clone(), vec![])
            .with_field("kind", FieldValue::Tags(vec!["a".into()]));
        assert_eq!(absent_fields(&schema(), &bare), ["__vec", "score", "body"]);
        let full = bare
            .clone()
            .with_vector(vec![1.0, 0.0, 0.0])
            .with_field("score", FieldValue::Numeric(1.0));
        assert_eq!(
            absent_fields(&schema(), &full.with_field("body", FieldValue::Text("t".into()))),
            Vec::<String>::new()
        );
        // Never touched: `__acc_t` is written empty, and read back (empty or absent) as none.
        let fields = encode(&bare);
        assert!(fields.iter().any(|(n, v)| n == ACC_T && v.is_empty()));
        let without: Vec<_> = fields.into_iter().filter(|(n, _)| n != ACC_T).collect();
        let r = decode(&schema(), &ns, &id, without, Operation::Get).unwrap();
        assert_eq!(r.access.last_access, None);
    }

    #[test]
    fn numbers_are_formatted_exactly() {
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(-0.0), "-0");
        assert_eq!(format_number(1e21), "1000000000000000000000");
        assert_eq!(format_number(f64::INFINITY), "+inf");
        assert_eq!(format_number(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn far_expiries_are_not_sent_to_the_server() {
        assert_eq!(server_expiry(None), None);
        assert_eq!(server_expiry(Some(Timestamp(5))), Some(5));
        assert_eq!(server_expiry(Some(Timestamp(u64::MAX))), None);
        assert_eq!(encode_expiry(None), "inf");
    }

    proptest! {
        #[test]
        fn finite_numbers_round_trip(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
            prop_assert_eq!(format_number(x).parse::<f64>().unwrap().to_bits(), x.to_bits());
        }

        #[test]
        fn tags_round_trip(tags in proptest::collection::vec("[^\\x00-\\x1f\\x7f]{1,12}", 0..5)) {
            prop_assert_eq!(split_tags(&join_tags(&tags)), tags);
        }
    }
}
