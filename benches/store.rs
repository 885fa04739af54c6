//! Durable store benchmarks on the shared seeded corpus (`benches/corpus/mod.rs`: twins
//! with 20 device properties, 5 service properties and 3 tags each, from `corpus::SEED`).
//! `TWINHUB_BENCH_STORE_TWINS=N` sets the fleet (default 100,000);
//! `TWINHUB_BENCH_STORE_LOG_LIMIT` and `TWINHUB_BENCH_STORE_FEED_RETENTION` set the
//! store's `property_log_limit` and `feed_retention` for the commits measured. The store lives in a
//! temporary directory on the machine's disk; every commit is redb's
//! `Durability::Immediate` (fsync).
//!
//! What is measured:
//! - Printed, one run each (median of three for the two loads): the disk bytes per twin
//!   (file size / twins, before and after compaction) against the registry's in-memory
//!   size; the time to reopen the directory (rebuilding every index through the bulk-load
//!   path) against `Registry::load` of the same twins in memory (generated before, untimed).
//!   Both are of the file the import (`commit_all`) wrote: its property log and feed are
//!   empty, so nothing is replayed and neither takes space.
//! - Printed, one run: an online backup of that file (`Store::snapshot` and
//!   `StoreSnapshot::write_to` a new directory on the same disk) and its bytes per twin.
//! - Printed: p50 and p99 of one acknowledged service write (`set_service_property` plus
//!   its commit), 200 writes.
//! - `store/service_write_durable`: the same, criterion's statistics.
//! - `store/device_batch_4096`: 4,096 device-property reports on random devices and their
//!   one commit (what the hub does per event batch); throughput in updates.
//! - Printed after it (when it ran): the time to reopen the directory with the log the
//!   batches left (its size printed), and the file's bytes per twin then.
//! - With `TWINHUB_BENCH_STORE_PSK=1` every twin also gets a 16-byte PSK key, and
//!   printed before the commits: the median of three reopenings with the keys plain, the
//!   one opening with a `sealing_key` that rewrites every head sealed, and the median of
//!   three reopenings with the keys sealed (what sealing costs an opening).

mod corpus;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use twinhub::Registry;
use twinhub::store::{Store, StoreConfig};
use twinhub::twin::{Scalar, ServiceValue};
use twinhub::{Timestamp, twin::Twin};

fn fleet() -> usize {
    std::env::var("TWINHUB_BENCH_STORE_TWINS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn benches(c: &mut Criterion) {
    let n = fleet();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let with_psk = std::env::var("TWINHUB_BENCH_STORE_PSK").is_ok_and(|v| v == "1");
    let twins: Vec<Twin> = corpus::twins(n)
        .map(|mut t| {
            if with_psk {
                let seed = t.device_id.as_str().len() as u8;
                t.authentication.psk_identity = Some(format!("{}-id", t.device_id));
                t.authentication.psk_key = Some(twinhub::twin::PskKey::new(vec![seed; 16]));
            }
            t
        })
        .collect();

    // In-memory bulk load of the same twins (clones made untimed).
    let mut loads = Vec::new();
    let mut mem_bytes = 0;
    for _ in 0..3 {
        let batch = twins.clone();
        let before = rss_kib();
        let t = Instant::now();
        let mut reg = Registry::with_feed_capacity(1 << 16);
        reg.load(batch).expect("the corpus is valid");
        loads.push(t.elapsed());
        if mem_bytes == 0 {
            // The first load runs on a fresh heap; later ones reuse its pages.
            mem_bytes = (rss_kib().saturating_sub(before)) * 1024;
        }
        drop(reg);
    }
    let mut reg = Registry::with_feed_capacity(1 << 16);
    reg.load(twins.clone()).expect("the corpus is valid");
    drop(twins);

    let (mut store, _empty) = Store::open(dir.path(), StoreConfig::default()).expect("open");
    let t = Instant::now();
    store.commit_all(&reg).expect("import");
    let import = t.elapsed();
    let size = std::fs::metadata(store.path()).expect("file").len();
    store.compact().expect("compact");
    let compacted = std::fs::metadata(store.path()).expect("file").len();
    drop((store, reg));

    let mut reopens = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let (store, reg) = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
        reopens.push(t.elapsed());
        assert_eq!(reg.len(), n);
        drop((store, reg));
    }
    let (load, reopen) = (median(loads), median(reopens));
    println!(
        "store: {n} twins: import (one commit) {import:.2?}; file {:.0} B/twin, {:.0} B/twin compacted; registry in memory ~{:.0} B/twin (RSS growth)",
        size as f64 / n as f64,
        compacted as f64 / n as f64,
        mem_bytes as f64 / n as f64,
    );
    println!(
        "store: reopen {reopen:.2?} vs in-memory bulk load {load:.2?} ({:.1}x), median of 3",
        reopen.as_secs_f64() / load.as_secs_f64()
    );

    // An online backup of that file (`Store::snapshot`, then `write_to` a new directory).
    {
        let (store, reg) = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
        let target = dir.path().join("backup");
        let t = Instant::now();
        let backup = store
            .snapshot()
            .and_then(|s| s.write_to(&target))
            .expect("a backup");
        let took = t.elapsed();
        assert_eq!(backup.twins, n as u64);
        println!(
            "store: online backup (snapshot, copy into a new store) {took:.2?}: {:.0} B/twin",
            std::fs::metadata(&backup.path).expect("file").len() as f64 / n as f64
        );
        drop((store, reg));
        std::fs::remove_dir_all(&target).expect("remove the backup");
    }

    // What sealing the keys costs an opening: plain, the opening that seals every head,
    // then sealed.
    let mut sealed_config = StoreConfig::default();
    if with_psk {
        sealed_config.sealing_key = Some(twinhub::store::SealingKey::new([7; 32]));
        let reopen = |config: &StoreConfig| {
            let t = Instant::now();
            let (store, reg) = Store::open(dir.path(), config.clone()).expect("reopen");
            let took = t.elapsed();
            assert_eq!(reg.len(), n);
            drop((store, reg));
            took
        };
        let plain = median((0..3).map(|_| reopen(&StoreConfig::default())).collect());
        let sealing = reopen(&sealed_config);
        let sealed = median((0..3).map(|_| reopen(&sealed_config)).collect());
        println!(
            "store: PSK keys: reopen plain {plain:.2?}, the opening that seals every head {sealing:.2?}, reopen sealed {sealed:.2?} ({:.2}x plain), median of 3",
            sealed.as_secs_f64() / plain.as_secs_f64()
        );
    }

    // What the commits below run with (defaults unless set, to see what each part costs).
    let mut config = if with_psk {
        sealed_config
    } else {
        StoreConfig::default()
    };
    let env = |name: &str| std::env::var(name).ok().and_then(|n| n.parse().ok());
    if let Some(n) = env("TWINHUB_BENCH_STORE_LOG_LIMIT") {
        config.property_log_limit = n;
    }
    if let Some(n) = env("TWINHUB_BENCH_STORE_FEED_RETENTION") {
        config.feed_retention = n;
    }
    let (mut store, mut reg) = Store::open(dir.path(), config).expect("reopen");
    let mut i: u64 = 0;
    let mut write = |store: &mut Store, reg: &mut Registry| {
        let id = corpus::device_id((i as usize * 7919) % n);
        reg.set_service_property(&id, "bench", Some(ServiceValue::from(i as i64)), None)
            .expect("a write");
        store.commit(reg).expect("a commit");
        i += 1;
    };
    let mut lat: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            write(&mut store, &mut reg);
            t.elapsed()
        })
        .collect();
    lat.sort();
    println!(
        "store: acknowledged service write p50 {:.2?}, p99 {:.2?} (200 writes)",
        lat[100], lat[198]
    );

    let mut g = c.benchmark_group("store");
    g.sample_size(20);
    g.bench_function("service_write_durable", |b| {
        b.iter(|| write(&mut store, &mut reg))
    });
    let mut rng = corpus::Rng::for_device(99);
    g.throughput(Throughput::Elements(4096));
    g.bench_function("device_batch_4096", |b| {
        b.iter(|| {
            for _ in 0..4096 {
                let d = rng.below(n as u64) as usize;
                let v = rng.below(101) as i64;
                reg.report_device_property(
                    &corpus::device_id(d),
                    "BatteryLevel",
                    Scalar::from(v),
                    Timestamp::from_millis(corpus::EPOCH_MS + v as u64),
                )
                .expect("a report");
            }
            store.commit(&reg).expect("a commit");
        })
    });
    g.finish();

    // Reopening once the batches above have filled the log (when they ran): every logged
    // change is applied over its twin's record.
    let logged = store.logged_changes();
    if logged > 0 {
        let size = std::fs::metadata(store.path()).expect("file").len();
        drop((store, reg));
        let t = Instant::now();
        let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).expect("reopen");
        println!(
            "store: reopen with {logged} logged changes: {:.2?}; file {:.0} B/twin",
            t.elapsed(),
            size as f64 / reg.len() as f64
        );
    }
}

criterion_group!(store, benches);
criterion_main!(store);
