//! Validated namespaces and record ids, and the one place that turns them into Redis keys.
//!
//! A key is `{prefix}{namespace}:{id}`. Namespaces cannot contain `:`, so the key of one
//! namespace can never start with the key prefix of another (`team:` is not a prefix of
//! `team-b:...`), which matters because RediSearch's `PREFIX` and `SCAN MATCH` compare raw
//! strings. Neither part may contain glob characters (`*?[]\`), braces (cluster hash tags),
//! spaces or control characters.

use std::fmt;

use crate::error::{ErrorKind, Operation, StorageError};

/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest record id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A namespace: 1 to 64 characters of ASCII letters, digits, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(String);

/// A record id: 1 to 128 characters of ASCII letters, digits, `_`, `-`, `.` and `:`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(String);

fn invalid(what: &str, value: &str, rule: &str) -> StorageError {
    // Echo at most a short, sanitised prefix of the value: it is caller input.
    let shown: String =
        value.chars().take(32).map(|c| if c.is_control() { '?' } else { c }).collect();
    let more = if value.chars().count() > 32 { "…" } else { "" };
    StorageError::new(
        ErrorKind::InvalidInput,
        Operation::Validate,
        format!("{what} {shown:?}{more} is invalid: {rule}"),
    )
}

impl Namespace {
    /// Validates a namespace.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the rule broken.
    pub fn new(value: impl Into<String>) -> Result<Self, StorageError> {
        let value = value.into();
        let rule = "expected 1 to 64 characters of ASCII letters, digits, `_` and `-`";
        if value.is_empty() || value.len() > MAX_NAMESPACE_LEN {
            return Err(invalid("namespace", &value, rule));
        }
        if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(invalid("namespace", &value, rule));
        }
        Ok(Self(value))
    }

    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl RecordId {
    /// Validates a record id.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] naming the rule broken.
    pub fn new(value: impl Into<String>) -> Result<Self, StorageError> {
        let value = value.into();
        let rule = "expected 1 to 128 characters of ASCII letters, digits, `_`, `-`, `.` and `:`";
        if value.is_empty() || value.len() > MAX_ID_LEN {
            return Err(invalid("record id", &value, rule));
        }
        let ok = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if !ok {
            return Err(invalid("record id", &value, rule));
        }
        Ok(Self(value))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for Namespace {
    type Error = StorageError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Namespace::new(value)
    }
}

impl TryFrom<&str> for RecordId {
    type Error = StorageError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        RecordId::new(value)
    }
}

/// A short random token: process id, time and a counter, hashed.
pub(crate) fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Builds and parses the keys of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCodec {
    prefix: String,
}

impl KeyCodec {
    /// A codec for keys under `prefix` (already validated by the index schema).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The key of a record.
    pub fn key(&self, namespace: &Namespace, id: &RecordId) -> String {
        format!("{}{}:{}", self.prefix, namespace.0, id.0)
    }

    /// The prefix shared by every key of a namespace (ends with `:`).
    pub fn namespace_prefix(&self, namespace: &Namespace) -> String {
        format!("{}{}:", self.prefix, namespace.0)
    }

    /// Splits a key back into namespace and id; `None` for a key of another prefix or shape.
    pub fn parse(&self, key: &str) -> Option<(Namespace, RecordId)> {
        let rest = key.strip_prefix(&self.prefix)?;
        let (ns, id) = rest.split_once(':')?;
        Some((Namespace::new(ns).ok()?, RecordId::new(id).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rejects_what_could_break_keys_or_globs() {
        for bad in ["", "a:b", "a b", "a*", "a?", "[a]", "{a}", "a\\b", "é", &"n".repeat(65)] {
            let e = Namespace::new(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        for bad in ["", "a b", "a*", "{x}", "a\nb", &"i".repeat(129)] {
            assert!(RecordId::new(bad).is_err(), "{bad:?}");
        }
        assert!(RecordId::new("mem:2026-11-21.v1").is_ok());
    }

    #[test]
    fn error_never_echoes_a_long_value() {
        let e = RecordId::new(format!("{}\u{7}", "x".repeat(500))).unwrap_err();
        assert!(e.message().len() < 200, "{e}");
    }

    proptest! {
        #[test]
        fn keys_round_trip(ns in "[A-Za-z0-9_-]{1,64}", id in "[A-Za-z0-9_.:-]{1,128}") {
            let codec = KeyCodec::new("engram:");
            let (ns, id) = (Namespace::new(ns).unwrap(), RecordId::new(id).unwrap());
            prop_assert_eq!(codec.parse(&codec.key(&ns, &id)), Some((ns, id)));
        }

        #[test]
        fn no_namespace_prefix_matches_another_namespace(a in "[A-Za-z0-9_-]{1,8}", b in "[A-Za-z0-9_-]{1,8}", id in "[A-Za-z0-9_.:-]{1,16}") {
            prop_assume!(a != b);
            let codec = KeyCodec::new("p:");
            let (na, nb) = (Namespace::new(a).unwrap(), Namespace::new(b).unwrap());
            let key_b = codec.key(&nb, &RecordId::new(id).unwrap());
            prop_assert!(!key_b.starts_with(&codec.namespace_prefix(&na)));
        }
    }
}
