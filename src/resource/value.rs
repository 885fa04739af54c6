//! Resource values and the typed content that travels between hub and device.

use super::Lwm2mPath;
use std::fmt;

/// The data type of an LWM2M resource (LWM2M 1.1 §C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ResourceType {
    /// UTF-8 string.
    String,
    /// Signed 64-bit integer.
    Integer,
    /// Unsigned 64-bit integer (LWM2M 1.1).
    UnsignedInteger,
    /// IEEE 754 double.
    Float,
    /// Boolean.
    Boolean,
    /// Raw bytes.
    Opaque,
    /// Seconds since the Unix epoch.
    Time,
    /// Object link `oid:iid`.
    ObjectLink,
    /// Resource with no value (executable).
    None,
}

/// One resource (or resource instance) value, typed.
///
/// JSON: `{"type": "string", "value": "x"}`, `{"type": "integer", "value": 5}`,
/// `{"type": "unsignedInteger", ...}`, `float`, `boolean`, `opaque` (an array of byte
/// values), `time` (seconds), `objectLink` (`[object, instance]`). A NaN or infinite
/// `float` does not serialise (an error, never `null`): JSON has no such number.
///
/// Any other key is refused (`invalid value: string "valeu", expected "type" or "value"`),
/// so a misspelt key fails to parse rather than being ignored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(
    tag = "type",
    content = "value",
    rename_all = "camelCase",
    deny_unknown_fields
)]
#[non_exhaustive]
pub enum ResourceValue {
    /// UTF-8 string.
    String(String),
    /// Signed integer.
    Integer(i64),
    /// Unsigned integer.
    UnsignedInteger(u64),
    /// Floating point. Serialising a NaN or infinite one fails (JSON has no such number,
    /// and serde_json would write `null`, which reads back as no float at all).
    Float(#[serde(serialize_with = "finite_float")] f64),
    /// Boolean.
    Boolean(bool),
    /// Raw bytes.
    Opaque(Vec<u8>),
    /// Seconds since the Unix epoch.
    Time(i64),
    /// Object link: object id and instance id.
    ObjectLink(u16, u16),
}

impl ResourceValue {
    /// The type of this value.
    pub fn resource_type(&self) -> ResourceType {
        match self {
            ResourceValue::String(_) => ResourceType::String,
            ResourceValue::Integer(_) => ResourceType::Integer,
            ResourceValue::UnsignedInteger(_) => ResourceType::UnsignedInteger,
            ResourceValue::Float(_) => ResourceType::Float,
            ResourceValue::Boolean(_) => ResourceType::Boolean,
            ResourceValue::Opaque(_) => ResourceType::Opaque,
            ResourceValue::Time(_) => ResourceType::Time,
            ResourceValue::ObjectLink(..) => ResourceType::ObjectLink,
        }
    }

    /// The value as a JSON scalar, the shape a twin's device property stores.
    /// Opaque bytes become a base64 string (standard alphabet, padded).
    ///
    /// `None` for a NaN or infinite float, which JSON cannot carry: the hub refuses such a
    /// value from a device (counted in `HubStats::property_errors`, the twin keeps what it
    /// had), rather than storing `null`, which would read as "no value".
    ///
    /// ```
    /// use twinhub::ResourceValue;
    /// assert_eq!(ResourceValue::Float(21.5).to_json(), Some(serde_json::json!(21.5)));
    /// assert_eq!(ResourceValue::Float(f64::NAN).to_json(), None);
    /// ```
    pub fn to_json(&self) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        Some(match self {
            ResourceValue::String(s) => J::String(s.clone()),
            ResourceValue::Integer(i) | ResourceValue::Time(i) => J::from(*i),
            ResourceValue::UnsignedInteger(u) => J::from(*u),
            ResourceValue::Float(f) => J::Number(serde_json::Number::from_f64(*f)?),
            ResourceValue::Boolean(b) => J::Bool(*b),
            ResourceValue::Opaque(b) => J::String(base64_encode(b)),
            ResourceValue::ObjectLink(o, i) => J::String(format!("{o}:{i}")),
        })
    }
}

/// Serialises a float only when it is finite: a NaN or infinity is an error, not the
/// `null` serde_json would write.
fn finite_float<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    if x.is_finite() {
        s.serialize_f64(*x)
    } else {
        Err(serde::ser::Error::custom(format_args!(
            "a float must be finite, not {x}"
        )))
    }
}

impl fmt::Display for ResourceValue {
    /// The LWM2M plain-text rendering (content format 0).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceValue::String(s) => f.write_str(s),
            ResourceValue::Integer(i) | ResourceValue::Time(i) => write!(f, "{i}"),
            ResourceValue::UnsignedInteger(u) => write!(f, "{u}"),
            ResourceValue::Float(x) => write!(f, "{x}"),
            ResourceValue::Boolean(b) => f.write_str(if *b { "1" } else { "0" }),
            ResourceValue::Opaque(b) => f.write_str(&base64_encode(b)),
            ResourceValue::ObjectLink(o, i) => write!(f, "{o}:{i}"),
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), for opaque values in JSON and text.
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decoded content: resource values addressed by full paths, in the order they came.
///
/// Every payload format (text, opaque, TLV, SenML) decodes to this shape, so the hub never
/// looks at a wire format. A single-resource read yields one entry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Content {
    /// `(path, value)` pairs; paths are resource or resource-instance paths.
    pub values: Vec<(Lwm2mPath, ResourceValue)>,
}

impl Content {
    /// Content holding one value.
    pub fn single(path: Lwm2mPath, value: ResourceValue) -> Self {
        Content {
            values: vec![(path, value)],
        }
    }

    /// The value at exactly `path`, if present.
    pub fn get(&self, path: &Lwm2mPath) -> Option<&ResourceValue> {
        self.values.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(i.as_bytes()), o);
        }
    }

    #[test]
    fn json_form_refuses_unknown_keys() {
        // Every form accepted before still parses.
        for (text, value) in [
            (
                r#"{"type":"string","value":"x"}"#,
                ResourceValue::String("x".into()),
            ),
            (r#"{"value":5,"type":"integer"}"#, ResourceValue::Integer(5)),
            (
                r#"{"type":"unsignedInteger","value":7}"#,
                ResourceValue::UnsignedInteger(7),
            ),
            (r#"{"type":"float","value":2.5}"#, ResourceValue::Float(2.5)),
            (
                r#"{"type":"boolean","value":true}"#,
                ResourceValue::Boolean(true),
            ),
            (
                r#"{"type":"opaque","value":[1,2]}"#,
                ResourceValue::Opaque(vec![1, 2]),
            ),
            (r#"{"type":"time","value":9}"#, ResourceValue::Time(9)),
            (
                r#"{"type":"objectLink","value":[3,0]}"#,
                ResourceValue::ObjectLink(3, 0),
            ),
        ] {
            let parsed: ResourceValue = serde_json::from_str(text).unwrap();
            assert_eq!(parsed, value, "{text}");
            let again = serde_json::to_string(&parsed).unwrap();
            assert_eq!(
                serde_json::from_str::<ResourceValue>(&again).unwrap(),
                value
            );
        }
        // The error names the key and the two keys there may be.
        for (text, key) in [
            (r#"{"type":"integer","value":5,"unit":"s"}"#, "unit"),
            (r#"{"type":"integer","valeu":5}"#, "valeu"),
            (r#"{"typ":"integer","value":5}"#, "typ"),
        ] {
            let err = serde_json::from_str::<ResourceValue>(text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("\"{key}\""))
                    && err.contains(r#"expected "type" or "value""#),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn text_rendering() {
        assert_eq!(ResourceValue::Boolean(true).to_string(), "1");
        assert_eq!(ResourceValue::ObjectLink(3, 0).to_string(), "3:0");
        assert_eq!(
            ResourceValue::Integer(-5).to_json(),
            Some(serde_json::json!(-5))
        );
    }
}
