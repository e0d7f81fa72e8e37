//! Deserialisation helpers for values that arrive through environment variables.
//!
//! figment parses an environment value such as `12345` or `true` as a number or a boolean
//! before serde sees it. A password or a user name made of digits is still text, so the
//! string fields that may look like numbers accept scalars and keep their textual form.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// A string that also accepts integers, floats and booleans, converted to text.
pub(crate) struct LenientString(pub(crate) String);

impl<'de> serde::Deserialize<'de> for LenientString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LenientString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(LenientString(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
            fn visit_char<E: de::Error>(self, v: char) -> Result<Self::Value, E> {
                Ok(LenientString(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `Option<String>` that accepts scalars as text (see the module docs).
pub(crate) mod opt_string {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Option::<super::LenientString>::deserialize(d).map(|o| o.map(|s| s.0))
    }
}
