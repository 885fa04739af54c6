//! Queries over a fleet loaded from an NDJSON export on disk: the twinhub side of the
//! comparison with SQLite and DuckDB that `benches/compare_duckdb.py` runs on the same
//! file (run that script rather than this bench alone; it prints the table of ratios).
//!
//! Environment:
//! - `TWINHUB_CORPUS_SHAPE`: `preview` (benches/corpus: 20 device properties sharing
//!   mostly one report time, few distinct values) or `timed` (every property with its own
//!   `lastUpdatedTime`, more distinct values); default `preview`;
//! - `TWINHUB_CORPUS_DEVICES`: how many twins (default 100,000);
//! - `TWINHUB_CORPUS_FILE`: the NDJSON file; written from the corpus when missing
//!   (default `target/compare/<shape>-<devices>.ndjson`);
//! - `TWINHUB_COMPARE_SUMMARY`: where to write the load's figures as JSON (optional).
//!
//! The load is `Registry::import_ndjson` (the `bulk_load` example's): lines parsed into
//! borrowed rows on every core and added to a `BulkLoad` in input order, a few chunks of
//! lines in memory at a time, timed once (wall clock, and the CPU time of every thread
//! of the process), with the resident memory before and after. Then criterion measures, on the tag/eq/range filter of
//! benches/query.rs: `count_one_eq`, `count_filter`, the first 100 matches in id order as
//! views (`first_100_full`) and projected to `deviceId` (`first_100_device_id`), the same
//! two pages serialised to JSON text (`*_json`), and a count per FirmwareVersion
//! (`group_count_firmware`).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;
use twinhub::query::{self, Projection, QueryOptions, QueryProperty};
use twinhub::registry::Registry;

mod corpus;
use corpus::{GROUP_BY_FIRMWARE, TAG_EQ_RANGE};
#[path = "../examples/support/ndjson.rs"]
mod ndjson;

const ONE_EQ: &str = r#"{"filter": {"type": "comparison", "comparisonOperator": "eq",
    "property": {"name": "FirmwareVersion", "type": "device"}, "value": "4.4"}}"#;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

/// Writes twins `0..n` of the shape as NDJSON.
fn export(path: &PathBuf, shape: &str, n: usize) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = path.with_extension("partial");
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&partial)?);
    for i in 0..n {
        let twin = match shape {
            "timed" => corpus::twin_timed(i),
            _ => corpus::twin(i),
        };
        serde_json::to_writer(&mut out, &twin)?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(partial, path)
}

fn load() -> Registry {
    let shape = env_or("TWINHUB_CORPUS_SHAPE", "preview");
    assert!(
        shape == "preview" || shape == "timed",
        "TWINHUB_CORPUS_SHAPE is preview or timed"
    );
    let n: usize = env_or("TWINHUB_CORPUS_DEVICES", "100000")
        .parse()
        .expect("TWINHUB_CORPUS_DEVICES is a number");
    let path = PathBuf::from(env_or(
        "TWINHUB_CORPUS_FILE",
        &format!("target/compare/{shape}-{n}.ndjson"),
    ));
    if !path.exists() {
        let t = Instant::now();
        export(&path, &shape, n).expect("the corpus file is written");
        eprintln!(
            "query_file: wrote {} in {:.1?}",
            path.display(),
            t.elapsed()
        );
    }
    let bytes = std::fs::metadata(&path).expect("the corpus file").len();
    let mut registry = Registry::new();
    let before = ndjson::status_mib("VmRSS:");
    let cpu_before = corpus::process_cpu_seconds();
    let t = Instant::now();
    let file = std::fs::File::open(&path).expect("the corpus file opens");
    let loaded = registry.import_ndjson(file).expect("the corpus file loads");
    let seconds = t.elapsed().as_secs_f64();
    let cpu_seconds = corpus::process_cpu_seconds() - cpu_before;
    let after = ndjson::status_mib("VmRSS:");
    let peak = ndjson::status_mib("VmHWM:");
    eprintln!(
        "query_file: {shape}, {loaded} twins from {:.0} MB in {seconds:.2} s ({cpu_seconds:.2} s of \
         CPU); resident \
         {after:.0} MiB ({:.0} MiB for the fleet, {:.0} bytes a twin), peak {peak:.0} MiB",
        bytes as f64 / 1e6,
        after - before,
        (after - before) * 1048576.0 / loaded.max(1) as f64
    );
    if let Ok(summary) = std::env::var("TWINHUB_COMPARE_SUMMARY") {
        let json = serde_json::json!({
            "shape": shape, "twins": loaded, "file_bytes": bytes, "load_seconds": seconds,
            "load_cpu_seconds": cpu_seconds,
            "resident_mib": after, "fleet_mib": after - before, "peak_mib": peak,
        });
        std::fs::write(summary, json.to_string()).expect("the summary is written");
    }
    registry
}

fn benches(c: &mut Criterion) {
    let reg = load();
    let one_eq = query::parse(ONE_EQ).unwrap();
    let filter = query::parse(TAG_EQ_RANGE).unwrap();
    let projected = filter
        .clone()
        .project(Projection::properties([QueryProperty::default_field(
            "deviceId",
        )]));
    let group = query::parse(GROUP_BY_FIRMWARE).unwrap();
    eprintln!(
        "query_file: FirmwareVersion 4.4 on {}, the tag/eq/range filter matches {}",
        query::count(&reg, &one_eq).unwrap(),
        query::count(&reg, &filter).unwrap()
    );
    let page = QueryOptions::page(100);
    let mut g = c.benchmark_group("query_file");
    g.bench_function("count_one_eq", |b| {
        b.iter(|| query::count(&reg, black_box(&one_eq)).unwrap())
    });
    g.bench_function("count_filter", |b| {
        b.iter(|| query::count(&reg, black_box(&filter)).unwrap())
    });
    g.bench_function("first_100_full", |b| {
        b.iter(|| query::execute(&reg, black_box(&filter), &page).unwrap())
    });
    g.bench_function("first_100_device_id", |b| {
        b.iter(|| query::execute(&reg, black_box(&projected), &page).unwrap())
    });
    g.bench_function("first_100_full_json", |b| {
        b.iter(|| serde_json::to_vec(&query::execute(&reg, black_box(&filter), &page).unwrap()))
    });
    g.bench_function("first_100_device_id_json", |b| {
        b.iter(|| serde_json::to_vec(&query::execute(&reg, black_box(&projected), &page).unwrap()))
    });
    g.bench_function("group_count_firmware", |b| {
        b.iter(|| query::execute(&reg, black_box(&group), &QueryOptions::default()).unwrap())
    });
    g.finish();
}

criterion_group!(query_file_benches, benches);
criterion_main!(query_file_benches);
