//! Registry benchmarks on the shared seeded corpus (`benches/corpus/mod.rs`: 1,000,000
//! twins with 20 device properties, 5 service properties and 3 tags each, from
//! `corpus::SEED`; set `TWINHUB_BENCH_DEVICES=N` for a quicker, smaller run).
//!
//! What is measured:
//! - `registry/bulk_load`: loading the whole fleet into an empty registry with every
//!   index (the twins are generated in untimed chunks of 100k, so only `Registry::load`
//!   is timed). Target < 2 s for 1M.
//! - `registry/report_by_id` and `registry/report_at_slot`: device-property updates
//!   (`BatteryLevel` or `MemoryFree` of a random device to a random value, with index
//!   maintenance and a change-feed event), 1,000 per iteration. Target >= 1M updates/s.
//! - `registry/get_by_id`: a borrowed view by device id, reading one property through
//!   it. Target p50 < 1 us (criterion's median).
//! - Memory (printed, not timed): resident memory before and after loading the fleet,
//!   and the same fleet estimated as one `serde_json::Value` per twin (measured on a
//!   10,000-twin sample and scaled), with the ratio. Target <= 1 GiB for 1M twins.

mod corpus;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use twinhub::registry::{Registry, Slot};
use twinhub::{Scalar, Timestamp};

const LOAD_CHUNK: usize = 100_000;

fn print_memory(n: usize) {
    let before = corpus::resident_bytes();
    let t = Instant::now();
    let reg = corpus::registry(n);
    let elapsed = t.elapsed();
    let after = corpus::resident_bytes();
    let registry_bytes = after.saturating_sub(before);

    // The same twins as serde_json::Value, on a sample, scaled to the fleet.
    let sample = n.min(10_000);
    let before_json = corpus::resident_bytes();
    let mut json_bytes = 0usize;
    let values: Vec<serde_json::Value> = (0..sample)
        .map(|i| {
            let text = serde_json::to_string(&reg.get(&corpus::device_id(i)).unwrap()).unwrap();
            json_bytes += text.len();
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    let per_value = corpus::resident_bytes().saturating_sub(before_json) as f64 / sample as f64;
    black_box(&values);
    drop(values);

    let mib = |b: f64| b / (1024.0 * 1024.0);
    let value_total = per_value * n as f64;
    eprintln!(
        "registry memory: {n} twins loaded (untimed-generation included) in {elapsed:.2?}; \
         resident {:.1} MiB -> {:.1} MiB: {:.1} MiB for the registry ({:.0} B/twin)",
        mib(before as f64),
        mib(after as f64),
        mib(registry_bytes as f64),
        registry_bytes as f64 / n as f64
    );
    eprintln!(
        "registry memory: as serde_json::Value ~{per_value:.0} B/twin (JSON text {} B/twin) -> \
         ~{:.1} MiB for {n}; the registry uses {:.2}x less",
        json_bytes / sample,
        mib(value_total),
        value_total / registry_bytes.max(1) as f64
    );
    let fw = reg
        .property_id(twinhub::twin::PropertyKind::Device, "FirmwareVersion")
        .unwrap();
    let sn = reg
        .property_id(twinhub::twin::PropertyKind::Device, "SerialNumber")
        .unwrap();
    eprintln!(
        "registry memory: {} properties, {} tags, {} firmware versions, {} serial numbers",
        reg.properties().count(),
        reg.tag_bitmaps().count(),
        reg.distinct_values(fw),
        reg.distinct_values(sn)
    );
}

fn benches(c: &mut Criterion) {
    let n = corpus::fleet_size();
    print_memory(n);

    let mut g = c.benchmark_group("registry");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("bulk_load", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut reg = Registry::with_feed_capacity(1 << 16);
                let mut start = 0;
                while start < n {
                    let end = (start + LOAD_CHUNK).min(n);
                    let chunk: Vec<_> = (start..end).map(corpus::twin).collect();
                    let t = Instant::now();
                    reg.load(chunk).unwrap();
                    total += t.elapsed();
                    start = end;
                }
                // Dropping the registry is not part of the load (and is not timed).
                drop(black_box(reg));
            }
            total
        })
    });
    g.finish();

    let mut reg = corpus::registry(n);
    let mut rng = corpus::Rng::for_device(usize::MAX);
    let updates: Vec<(String, Slot, &str, Scalar)> = (0..100_000)
        .map(|_| {
            let id = corpus::device_id(rng.below(n as u64) as usize);
            let slot = reg.slot_of(&id).unwrap();
            if rng.chance(0.5) {
                (
                    id,
                    slot,
                    "BatteryLevel",
                    Scalar::from(rng.below(101) as i64),
                )
            } else {
                (
                    id,
                    slot,
                    "MemoryFree",
                    Scalar::from((rng.below(1024) * 4) as i64),
                )
            }
        })
        .collect();
    let now = Timestamp::from_millis(corpus::EPOCH_MS + 40 * 86_400_000);

    let mut g = c.benchmark_group("registry");
    g.throughput(Throughput::Elements(1000));
    let mut next = 0usize;
    g.bench_function("report_by_id", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                let (id, _, name, value) = &updates[next % updates.len()];
                next += 1;
                reg.report_device_property(id, name, value.clone(), now)
                    .unwrap();
            }
        })
    });
    g.bench_function("report_at_slot", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                let (_, slot, name, value) = &updates[next % updates.len()];
                next += 1;
                reg.report_at(*slot, name, value.clone(), now).unwrap();
            }
        })
    });
    g.finish();
    reg.validate_sample();

    let ids: Vec<String> = (0..10_000)
        .map(|_| corpus::device_id(rng.below(n as u64) as usize))
        .collect();
    let mut g = c.benchmark_group("registry");
    let mut i = 0usize;
    g.bench_function("get_by_id", |b| {
        b.iter_batched(
            || {
                i += 1;
                &ids[i % ids.len()]
            },
            |id| {
                let view = reg.get(id).unwrap();
                black_box(view.device_property("FirmwareVersion").map(|p| p.1))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A cheap consistency probe after the update benches (a full `validate()` over 1M twins
/// takes too long to run inside a bench).
trait ValidateSample {
    fn validate_sample(&self);
}

impl ValidateSample for Registry {
    fn validate_sample(&self) {
        let bl = self
            .property_id(twinhub::twin::PropertyKind::Device, "BatteryLevel")
            .unwrap();
        let indexed: u64 = self
            .values_in_range(bl, std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            .map(|(_, s)| s.len())
            .sum();
        assert_eq!(
            indexed,
            self.len() as u64,
            "every twin is indexed once under BatteryLevel"
        );
    }
}

criterion_group!(registry, benches);
criterion_main!(registry);
