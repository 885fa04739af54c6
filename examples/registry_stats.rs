//! Loads a seeded fleet into a registry and prints its index statistics: devices per
//! firmware version, per tag, per region, connection states, and memory.
//!
//! ```sh
//! cargo run --release --example registry_stats -- --devices 100000
//! ```
//!
//! The fleet is the benchmark corpus (`benches/corpus/mod.rs`), so the numbers match what
//! the benches measure.

#[path = "../benches/corpus/mod.rs"]
mod corpus;

use std::time::Instant;
use twinhub::Scalar;
use twinhub::twin::{ConnectionState, DeviceStatus, PropertyKind};

fn main() {
    let mut devices = 100_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--devices" => {
                devices = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage("--devices needs a number"));
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }

    let before = corpus::resident_bytes();
    let start = Instant::now();
    let reg = corpus::registry(devices);
    let took = start.elapsed();
    let after = corpus::resident_bytes();
    println!(
        "loaded {} twins in {took:.2?} (generation included); resident memory +{:.1} MiB ({:.0} B/twin)",
        reg.len(),
        after.saturating_sub(before) as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / devices.max(1) as f64
    );
    println!(
        "{} connected, {} disabled, {} managed; {} properties and {} tags indexed",
        reg.connection_bitmap(ConnectionState::Connected).len(),
        reg.status_bitmap(DeviceStatus::Disabled).len(),
        reg.managed_bitmap(true).len(),
        reg.properties().count(),
        reg.tag_bitmaps().count()
    );

    println!("\ndevices per FirmwareVersion (from the value index, in value order):");
    if let Some(fw) = reg.property_id(PropertyKind::Device, "FirmwareVersion") {
        for (version, slots) in
            reg.values_in_range(fw, std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
        {
            println!(
                "  {:>6}  {:>8}",
                version.as_str().unwrap_or("?"),
                slots.len()
            );
        }
    }

    println!("\nthe 10 most common tags:");
    let mut tags: Vec<(&str, u64)> = reg.tag_bitmaps().map(|(t, b)| (t, b.len())).collect();
    tags.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (tag, n) in tags.iter().take(10) {
        println!("  {tag:>12}  {n:>8}");
    }

    println!("\nconnected devices on firmware 4.4 per region (bitmap intersections, top 5):");
    let fw = reg.property_id(PropertyKind::Device, "FirmwareVersion");
    let latest = fw.and_then(|p| reg.value_slots(p, &Scalar::from("4.4")));
    if let (Some(latest), Some(region)) = (latest, reg.property_id(PropertyKind::Service, "region"))
    {
        let mut base = latest.to_bitmap().into_owned();
        base &= reg.connection_bitmap(ConnectionState::Connected);
        let mut rows: Vec<(String, u64)> = reg
            .values_in_range(
                region,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
            )
            .map(|(v, s)| (v.to_string(), s.to_bitmap().intersection_len(&base)))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1));
        for (r, n) in rows.iter().take(5) {
            println!("  {r:>14}  {n:>8}");
        }
    }

    let first = corpus::device_id(0);
    if let Some(t) = reg.get(&first) {
        println!("\nthe first twin, as the preview's JSON:");
        println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!("usage: registry_stats [--devices N]   (default 100000)");
    std::process::exit(2)
}
