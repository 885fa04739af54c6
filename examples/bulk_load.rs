//! Loads a fleet from NDJSON (one twin a line, in the preview's JSON shape) the way a
//! service restoring an export would: each line is parsed into borrowed fields (strings
//! point into the line) and handed to a `BulkLoad` as a `NewDevice` row; no `Twin` is
//! built. Then it prints what the indexes hold and answers a query.
//!
//! ```text
//! cargo run --release --example bulk_load                  # 100,000 devices
//! cargo run --release --example bulk_load -- --devices 1000000
//! ```

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::time::Instant;
use twinhub::query::{self, Filter, QueryExpression, QueryProperty};
use twinhub::registry::{NewDevice, Registry};
use twinhub::twin::{ConnectionState, DeviceStatus, Number, ScalarRef, Twin};
use twinhub::{DeviceId, Timestamp};

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

/// Twin `i` of a small seeded fleet (what an export would hold).
fn twin(i: u64) -> Twin {
    let r = |k: u64| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (k * 7)) % 1000;
    let at = Timestamp::from_millis(1_461_931_200_000 + r(1) * 60_000);
    let mut t = Twin::new(DeviceId::new(&format!("meter-{i:07}")).expect("valid id"))
        .with_device_property(
            "Manufacturer",
            ["Contoso", "Fabrikam", "Northwind"][(r(2) % 3) as usize],
            at,
        )
        .with_device_property(
            "SerialNumber",
            format!("SN{:010X}", i.wrapping_mul(2_654_435_761)),
            at,
        )
        .with_device_property(
            "FirmwareVersion",
            ["1.0", "1.1", "2.0", "2.1"][(r(3) % 4) as usize],
            at,
        )
        .with_device_property("BatteryLevel", (r(4) % 101) as i64, at)
        .with_device_property("MemoryFree", (r(5) * 4) as i64, at)
        .with_service_property(
            "region",
            ["eu-west", "us-east", "ap-south"][(r(6) % 3) as usize],
        )
        .with_service_property("floor", (r(7) % 12) as i64)
        .with_tag(["pilot", "production", "lab"][(r(8) % 3) as usize]);
    if r(9) % 4 == 0 {
        t = t.with_device_property("/3303/0/5700", (r(10) % 400) as f64 / 10.0, at);
    }
    if r(11) % 10 < 7 {
        t.connection_state = ConnectionState::Connected;
        t.connection_state_updated_time = Some(at);
    }
    t.is_managed = true;
    t.last_activity_time = Some(at);
    t
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let devices: u64 = match args.iter().position(|a| a == "--devices") {
        Some(i) => args.get(i + 1).ok_or("--devices needs a number")?.parse()?,
        None => 100_000,
    };

    let t = Instant::now();
    let mut ndjson = String::new();
    for i in 0..devices {
        ndjson.push_str(&serde_json::to_string(&twin(i))?);
        ndjson.push('\n');
    }
    println!(
        "export: {devices} twins, {:.1} MB of NDJSON, written in {:.2?}",
        ndjson.len() as f64 / 1e6,
        t.elapsed()
    );

    let mut registry = Registry::new();
    let t = Instant::now();
    let mut bulk = registry.bulk_load();
    for (n, text) in ndjson.lines().enumerate() {
        let line: Line = serde_json::from_str(text).map_err(|e| format!("line {}: {e}", n + 1))?;
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
        })
        .map_err(|e| format!("line {}: {e}", n + 1))?;
    }
    let loaded = bulk.finish();
    let elapsed = t.elapsed();
    println!(
        "parsed and loaded {loaded} devices in {elapsed:.2?} ({:.0} devices/s)",
        loaded as f64 / elapsed.as_secs_f64()
    );
    let t = Instant::now();
    registry.validate()?;
    println!(
        "every index checked against a full scan in {:.2?}",
        t.elapsed()
    );

    println!("\nproperties (distinct values):");
    for (id, kind, name) in registry.properties() {
        println!("  {kind:?} {name}: {}", registry.distinct_values(id));
    }
    println!("tags:");
    for (tag, slots) in registry.tag_bitmaps() {
        println!("  {tag}: {} devices", slots.len());
    }
    let q = QueryExpression::new().filter(Filter::all_of([
        QueryProperty::tags().all(["pilot"]),
        QueryProperty::device("FirmwareVersion").eq("2.0"),
        QueryProperty::device("BatteryLevel").lt(20),
    ]));
    let t = Instant::now();
    let n = query::count(&registry, &q)?;
    println!(
        "\npilot devices on firmware 2.0 with battery under 20: {n} (counted in {:.0?})",
        t.elapsed()
    );
    Ok(())
}
