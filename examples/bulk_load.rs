//! Loads a fleet from NDJSON (one twin a line, in the preview's JSON shape) the way a
//! service restoring an export would: `Registry::import_ndjson` parses chunks of lines on
//! every core into borrowed rows and adds them to a `BulkLoad` in input order; no `Twin`
//! is built. Then it prints what the indexes hold and answers a query.
//!
//! ```text
//! cargo run --release --example bulk_load                  # 100,000 devices
//! cargo run --release --example bulk_load -- --devices 1000000
//! cargo run --release --example bulk_load -- --file twins.ndjson   # an export on disk
//! ```
//!
//! With `--file` the export is streamed (a few chunks of lines in memory at a time) and the report
//! gives the load's time and the process's resident memory before, after and at peak
//! (from `/proc/self/status`, so Linux only; elsewhere it reads 0).

use std::time::Instant;
use twinhub::query::{self, Filter, QueryExpression, QueryProperty};
use twinhub::registry::Registry;
use twinhub::twin::{ConnectionState, Twin};
use twinhub::{DeviceId, Timestamp};

#[path = "support/ndjson.rs"]
mod ndjson;

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
    let file = match args.iter().position(|a| a == "--file") {
        Some(i) => Some(args.get(i + 1).ok_or("--file needs a path")?.clone()),
        None => None,
    };

    let mut registry = Registry::new();
    let rss_before = ndjson::status_mib("VmRSS:");
    let (loaded, elapsed) = if let Some(path) = file {
        let reader = std::fs::File::open(&path)?;
        let t = Instant::now();
        let loaded = registry.import_ndjson(reader)?;
        (loaded, t.elapsed())
    } else {
        let t = Instant::now();
        let mut text = String::new();
        for i in 0..devices {
            text.push_str(&serde_json::to_string(&twin(i))?);
            text.push('\n');
        }
        println!(
            "export: {devices} twins, {:.1} MB of NDJSON, written in {:.2?}",
            text.len() as f64 / 1e6,
            t.elapsed()
        );
        let t = Instant::now();
        let loaded = registry.import_ndjson(text.as_bytes())?;
        (loaded, t.elapsed())
    };
    let (rss, peak) = (ndjson::status_mib("VmRSS:"), ndjson::status_mib("VmHWM:"));
    println!(
        "parsed and loaded {loaded} devices in {elapsed:.2?} ({:.0} devices/s)",
        loaded as f64 / elapsed.as_secs_f64()
    );
    println!(
        "memory: {rss:.0} MiB resident after the load ({:.0} MiB more than before it, \
         {:.0} bytes per twin), peak {peak:.0} MiB",
        rss - rss_before,
        (rss - rss_before) * 1048576.0 / loaded.max(1) as f64
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
