//! Human-readable durations (`"250ms"`, `"4h"`, `"7days"`) and durations that may be `"none"`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// The word that turns an optional duration off, in files and environment variables.
pub const NONE: &str = "none";

/// Formats a duration the way configuration files write it (`"250ms"`, `"4h"`).
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Serde for `Option<Duration>` written as a human-readable duration or `"none"`.
///
/// Unlike `Option`'s default, "off" is spelled out, so a file can turn off a setting whose
/// default is on (for example `ttl = "none"` for a memory type that should never expire).
pub(crate) mod optional {
    use super::*;

    /// Writes `"none"` for `None`, a human-readable duration otherwise.
    pub(crate) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&format(*d)),
            None => s.serialize_str(NONE),
        }
    }

    /// Reads `"none"` (any case, also `"off"`) as `None`, a human-readable duration otherwise.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case(NONE) || trimmed.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        humantime::parse_duration(trimmed).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{trimmed}`: {e} (write for example \"250ms\", \"4h\", \"7days\" or \"none\")"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "optional")]
        ttl: Option<Duration>,
    }

    #[test]
    fn optional_duration_round_trips_and_accepts_none() {
        let on: T = toml::from_str(r#"ttl = "4h""#).unwrap();
        assert_eq!(on.ttl, Some(Duration::from_secs(4 * 3600)));
        let off: T = toml::from_str(r#"ttl = "None""#).unwrap();
        assert_eq!(off.ttl, None);
        for v in [on, off] {
            let text = toml::to_string(&v).unwrap();
            assert_eq!(toml::from_str::<T>(&text).unwrap(), v);
        }
    }

    #[test]
    fn bad_duration_says_what_was_expected() {
        let err = toml::from_str::<T>(r#"ttl = "soon""#).unwrap_err().to_string();
        assert!(err.contains("invalid duration `soon`"), "{err}");
    }
}
