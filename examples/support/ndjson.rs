//! NDJSON twins (one twin a line, in the preview's JSON shape) loaded the way a service
//! restoring an export would: each line is parsed into borrowed fields (strings point
//! into the line) and handed to a `BulkLoad` as a `NewDevice` row; no `Twin` is built.
//! Shared by the `bulk_load` example and the `query_file` bench.

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::io::{BufRead, Read};
use std::marker::PhantomData;
use twinhub::Timestamp;
use twinhub::registry::{NewDevice, Registry};
use twinhub::twin::{ConnectionState, DeviceStatus, Number, ScalarRef};

/// Lines longer than this are refused (an export line is a few KiB).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Loads every line of `reader` into `registry` (empty lines skipped), one line in memory
/// at a time; returns how many devices were loaded. The first bad line ends the load with
/// its number; the lines before it stay loaded.
pub fn load(mut reader: impl BufRead, registry: &mut Registry) -> Result<usize, String> {
    let mut bulk = registry.bulk_load();
    let mut text = String::new();
    let mut n = 0usize;
    loop {
        text.clear();
        let read = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_line(&mut text)
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        if read == 0 {
            break;
        }
        n += 1;
        if text.len() > MAX_LINE_BYTES {
            return Err(format!("line {n}: longer than {MAX_LINE_BYTES} bytes"));
        }
        let trimmed = text.trim_end();
        if trimmed.is_empty() {
            continue;
        }
        add_line(&mut bulk, trimmed).map_err(|e| format!("line {n}: {e}"))?;
    }
    Ok(bulk.finish())
}

/// Parses one line and adds it to the load.
pub fn add_line(
    bulk: &mut twinhub::registry::BulkLoad<'_>,
    text: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let line: Line = serde_json::from_str(text)?;
    let device: Vec<_> = line
        .device_properties
        .iter()
        .map(|(name, p)| (&**name, p.value.as_scalar(), p.at))
        .collect();
    let service: Vec<_> = line
        .service_properties
        .properties
        .iter()
        .map(|(name, v)| (&**name, v.as_scalar()))
        .collect();
    let tags: Vec<&str> = line.service_properties.tags.iter().map(|t| &**t).collect();
    bulk.add(&NewDevice {
        status: line.status,
        connection_state: line.connection_state,
        connection_state_updated_time: line.connection_state_updated_time,
        last_activity_time: line.last_activity_time,
        is_managed: line.is_managed,
        device_properties: &device,
        service_properties: &service,
        tags: &tags,
        ..NewDevice::new(&line.device_id)
    })?;
    Ok(())
}

/// One NDJSON line, borrowed from the line's text where it can be.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    #[serde(borrow)]
    device_id: Cow<'a, str>,
    #[serde(default)]
    status: DeviceStatus,
    #[serde(default)]
    connection_state: ConnectionState,
    #[serde(default)]
    connection_state_updated_time: Option<Timestamp>,
    #[serde(default)]
    last_activity_time: Option<Timestamp>,
    #[serde(default)]
    is_managed: bool,
    #[serde(borrow, default, deserialize_with = "pairs")]
    device_properties: Vec<(Cow<'a, str>, Reported<'a>)>,
    #[serde(borrow, default)]
    service_properties: Service<'a>,
}

#[derive(Deserialize)]
struct Reported<'a> {
    #[serde(borrow)]
    value: Raw<'a>,
    #[serde(rename = "lastUpdatedTime")]
    at: Timestamp,
}

#[derive(Deserialize, Default)]
struct Service<'a> {
    #[serde(borrow, default, deserialize_with = "pairs")]
    properties: Vec<(Cow<'a, str>, Raw<'a>)>,
    #[serde(borrow, default)]
    tags: Vec<Cow<'a, str>>,
}

/// A JSON scalar, a string borrowed unless it has escapes.
enum Raw<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for RawVisitor<'a> {
            type Value = Raw<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean, number or string")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Raw<'a>, E> {
                Ok(Raw::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Raw<'a>, E> {
                Ok(Raw::Int(i))
            }
            fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Raw<'a>, E> {
                Ok(i64::try_from(u).map_or(Raw::Float(u as f64), Raw::Int))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Raw<'a>, E> {
                Ok(Raw::Float(f))
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Raw<'a>, E> {
                Ok(Raw::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Raw<'a>, E> {
                Ok(Raw::Str(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_any(RawVisitor(PhantomData))
    }
}

impl Raw<'_> {
    fn as_scalar(&self) -> ScalarRef<'_> {
        match self {
            Raw::Bool(b) => ScalarRef::Bool(*b),
            Raw::Int(i) => ScalarRef::from(*i),
            Raw::Float(f) => ScalarRef::Number(Number::from_f64(*f).expect("JSON has no NaN")),
            Raw::Str(s) => ScalarRef::String(s),
        }
    }
}

/// A JSON object as a list of its members, in order (no map built per line).
fn pairs<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
    d: D,
) -> Result<Vec<(Cow<'de, str>, V)>, D::Error> {
    struct Pairs<V>(PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Pairs<V> {
        type Value = Vec<(Cow<'de, str>, V)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
            while let Some((k, v)) = map.next_entry::<Cow<'de, str>, V>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Pairs(PhantomData))
}

/// A line of `/proc/self/status` in MiB (`VmRSS:` resident now, `VmHWM:` its peak; 0
/// where there is no such file: Linux only).
pub fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
