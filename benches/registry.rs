//! Registry benchmarks on the shared seeded corpus (`benches/corpus/mod.rs`: 1,000,000
//! twins with 20 device properties, 5 service properties and 3 tags each, from
//! `corpus::SEED`; set `TWINHUB_BENCH_DEVICES=N` for a quicker, smaller run).
//!
//! What is measured:
//! - Bulk load of the whole fleet (printed, one run each), two ways:
//!   - *rows*: the fleet as a flat table of borrowed rows (`corpus::Rows`: the way a
//!     loader holds a parsed file; built untimed), fed to one `BulkLoad`. This runs
//!     first, on a fresh heap, as at a service's start; its registry is the one the
//!     memory figure and the later benches use;
//!   - *twins, streamed*: `Registry::load` over the lazy generator of owned twins, minus
//!     the time the same generator takes alone (measured just before, in the same
//!     process).
//!
//!   Wall clock and the CPU time of all the process's threads (the load indexes on
//!   helper threads). Target < 2 s for 1M.
//! - `registry/bulk_load_100k` and `registry/bulk_load_rows_100k`: criterion's
//!   statistics for loading 100k twins (or rows) into an empty registry (generation
//!   untimed).
//! - `registry/report_by_id` and `registry/report_at_slot`: device-property updates
//!   (`BatteryLevel` or `MemoryFree` of a random device to a random value, with index
//!   maintenance and a change-feed event), 1,000 per iteration, on the full fleet.
//!   Target >= 1M updates/s.
//! - `registry/get_by_id_view`: a borrowed view by device id, reading its etag (the
//!   lookup and the twin's fixed fields). Target p50 < 1 us (criterion's median).
//! - `registry/get_by_id`: a borrowed view by device id, reading one property through
//!   it, on the full fleet. Target p50 < 1 us (criterion's median).
//! - Memory (printed): resident memory before and after loading the fleet (as rows), and the same
//!   fleet estimated as one `serde_json::Value` per twin (measured on a 10,000-twin
//!   sample and scaled), with the ratio. Target <= 1 GiB for 1M twins.
//!
//! The printed lines also give thread CPU time next to wall time: on a shared machine
//! wall-clock numbers grow with the load, CPU time much less. The first line measures the
//! machine's random memory read latency, which the lookups at 1M twins are bound by and
//! which moves with the host's other tenants.

mod corpus;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Instant;
use twinhub::registry::{Registry, Slot};
use twinhub::{Scalar, Timestamp};

/// Twins per criterion bulk-load sample.
const LOAD_CHUNK: usize = 100_000;

fn print_memory(n: usize) -> Registry {
    // The same twins as serde_json::Value, on a sample, scaled to the fleet. Measured
    // first, on a fresh heap, and kept until the registry is measured, so that neither
    // takes memory the other freed.
    let sample = n.min(10_000);
    let before_json = corpus::resident_bytes();
    let mut json_bytes = 0usize;
    let values: Vec<serde_json::Value> = (0..sample)
        .map(|i| {
            let text = serde_json::to_string(&corpus::twin(i)).unwrap();
            json_bytes += text.len();
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    let per_value = corpus::resident_bytes().saturating_sub(before_json) as f64 / sample as f64;
    black_box(&values);

    // Rows first, while the heap is fresh (as at a service's start): a load into a heap
    // that an earlier load and its freed twins left behind runs slower. The rows table is
    // built untimed and resident before the load, so the load's growth is the registry.
    let rows = corpus::rows(n);
    let before = corpus::resident_bytes();
    let mut reg = Registry::with_feed_capacity(1 << 16);
    let (t, cpu0) = (Instant::now(), corpus::process_cpu_seconds());
    let mut bulk = reg.bulk_load();
    rows.add_to(&mut bulk);
    let loaded = bulk.finish();
    let (wall, cpu) = (t.elapsed(), corpus::process_cpu_seconds() - cpu0);
    let after = corpus::resident_bytes();
    assert_eq!(loaded, n);
    let registry_bytes = after.saturating_sub(before);
    drop(rows);
    eprintln!(
        "registry bulk load, rows: {n} twins in {wall:.2?} wall, {cpu:.2} s CPU ({:.0} twins/s)",
        n as f64 / wall.as_secs_f64()
    );

    // Owned twins streamed from the lazy generator, minus the generator alone.
    let (t, cpu0) = (Instant::now(), corpus::process_cpu_seconds());
    for twin in corpus::twins(n) {
        black_box(twin);
    }
    let (wall_gen, cpu_gen) = (t.elapsed(), corpus::process_cpu_seconds() - cpu0);
    let mut streamed = Registry::with_feed_capacity(1 << 16);
    let (t, cpu0) = (Instant::now(), corpus::process_cpu_seconds());
    streamed.load(corpus::twins(n)).unwrap();
    let (wall_all, cpu_all) = (t.elapsed(), corpus::process_cpu_seconds() - cpu0);
    drop(streamed);
    let cpu_streamed = (cpu_all - cpu_gen).max(0.01);
    eprintln!(
        "registry bulk load, twins streamed: {n} twins in {:.2?} wall, {cpu_streamed:.2} s CPU \
         = generation and load {wall_all:.2?} ({cpu_all:.2} s CPU) - generation alone \
         {wall_gen:.2?} ({cpu_gen:.2} s CPU)",
        wall_all.saturating_sub(wall_gen),
    );

    drop(values);

    let mib = |b: f64| b / (1024.0 * 1024.0);
    let value_total = per_value * n as f64;
    eprintln!(
        "registry memory: {n} twins; resident {:.1} MiB -> {:.1} MiB: {:.1} MiB for the registry ({:.0} B/twin)",
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
    reg
}

fn benches(c: &mut Criterion) {
    let n = corpus::fleet_size();
    eprintln!(
        "machine: random memory read {:.0} ns (pointer chase over 256 MiB; lookups at 1M twins \
         cost a few of these)",
        corpus::random_read_ns()
    );
    let mut reg = print_memory(n);

    let small = n.min(LOAD_CHUNK);
    let mut g = c.benchmark_group("registry");
    g.sample_size(10);
    g.throughput(Throughput::Elements(small as u64));
    g.bench_function("bulk_load_100k", |b| {
        b.iter_batched(
            || (0..small).map(corpus::twin).collect::<Vec<_>>(),
            |twins| {
                let mut reg = Registry::with_feed_capacity(1 << 16);
                reg.load(twins).unwrap();
                reg
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("bulk_load_rows_100k", |b| {
        b.iter_batched(
            || corpus::rows(small),
            |rows| {
                let mut reg = Registry::with_feed_capacity(1 << 16);
                let mut bulk = reg.bulk_load();
                rows.add_to(&mut bulk);
                bulk.finish();
                reg
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

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
    let (t, cpu0) = (Instant::now(), corpus::thread_cpu_seconds());
    for (_, slot, name, value) in updates.iter().cycle().take(1_000_000) {
        reg.report_at(*slot, name, value.clone(), now).unwrap();
    }
    let cpu = corpus::thread_cpu_seconds() - cpu0;
    eprintln!(
        "registry updates: 1M report_at in {:.2?} wall, {cpu:.2} s thread CPU ({:.0} updates/s by CPU)",
        t.elapsed(),
        1e6 / cpu.max(0.01)
    );

    // As many random ids as twins: the lookups' working set is the whole registry, as
    // for a fleet's traffic, not a few thousand twins that stay in cache.
    let ids: Vec<String> = (0..n)
        .map(|_| corpus::device_id(rng.below(n as u64) as usize))
        .collect();
    let mut g = c.benchmark_group("registry");
    let mut i = 0usize;
    g.bench_function("get_by_id_view", |b| {
        b.iter_batched(
            || {
                i += 1;
                &ids[i % ids.len()]
            },
            |id| black_box(reg.get(id).unwrap().etag()),
            BatchSize::SmallInput,
        )
    });
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
    let (t, cpu0) = (Instant::now(), corpus::thread_cpu_seconds());
    let mut found = 0u64;
    for id in ids.iter().cycle().take(1_000_000) {
        let view = reg.get(id).unwrap();
        found += u64::from(view.device_property("FirmwareVersion").is_some());
    }
    let cpu = corpus::thread_cpu_seconds() - cpu0;
    eprintln!(
        "registry gets: {found} get_by_id in {:.2?} wall, {cpu:.2} s thread CPU ({:.0} ns/get by CPU)",
        t.elapsed(),
        cpu * 1e9 / 1e6
    );
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
