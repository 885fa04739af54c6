//! The same device queries three ways, in one process, on the same seeded corpus
//! (benches/corpus; 200,000 twins by default so that three copies of the fleet fit in
//! memory on a shared machine, `TWINHUB_COMPARE_DEVICES=n` to change it):
//!
//! - **ours**: the bitmap executor over the registry's indexes;
//! - **naive**: the naive evaluator over a `Vec<Twin>` (a full scan per query; the
//!   semantic oracle of the tests);
//! - **sqlite**: SQLite in memory (rusqlite, bundled), twins stored as JSON text, queried
//!   with `json_extract`, with expression indexes on the queried paths and a `(tag, id)`
//!   side table for tags (JSON arrays cannot be indexed directly).
//!
//! Queries: `count` of tag `batch-0` AND FirmwareVersion = "4.4" AND
//! 20 <= BatteryLevel < 60; the `first 100` matching twins in id order (ours and naive
//! return owned twins, SQLite returns the JSON text); a `group count` per
//! FirmwareVersion over the whole fleet. Criterion measures each; then the bench prints
//! a table of medians and ratios (naive / ours, sqlite / ours) measured in the same run.

use criterion::{Criterion, criterion_group, criterion_main};
use rusqlite::Connection;
use std::hint::black_box;
use std::time::{Duration, Instant};
use twinhub::query::{self, QueryExpression, QueryOptions, naive};
use twinhub::registry::Registry;
use twinhub::twin::Twin;

mod corpus;
use corpus::{GROUP_BY_FIRMWARE, TAG_EQ_RANGE};

const SQL_WHERE: &str = "json_extract(doc, '$.deviceProperties.FirmwareVersion.value') = '4.4' \
    AND json_extract(doc, '$.deviceProperties.BatteryLevel.value') >= 20 \
    AND json_extract(doc, '$.deviceProperties.BatteryLevel.value') < 60 \
    AND id IN (SELECT id FROM tags WHERE tag = 'batch-0')";

struct Fixture {
    reg: Registry,
    twins: Vec<Twin>,
    db: Connection,
    filter: QueryExpression,
    group: QueryExpression,
}

fn fixture() -> Fixture {
    let n = std::env::var("TWINHUB_COMPARE_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let reg = corpus::registry(n);
    // The naive evaluator gets the registry's own twins (same etags, same values).
    let twins: Vec<Twin> = reg.iter().map(|t| t.to_twin()).collect();
    let db = Connection::open_in_memory().unwrap();
    db.execute_batch(
        "CREATE TABLE twins (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
         CREATE TABLE tags (tag TEXT NOT NULL, id TEXT NOT NULL);",
    )
    .unwrap();
    {
        let tx = db.unchecked_transaction().unwrap();
        {
            let mut put = tx.prepare("INSERT INTO twins VALUES (?1, ?2)").unwrap();
            let mut tag = tx.prepare("INSERT INTO tags VALUES (?1, ?2)").unwrap();
            for t in &twins {
                let id = t.device_id.as_str();
                put.execute((id, serde_json::to_string(t).unwrap()))
                    .unwrap();
                for g in &t.service_properties.tags {
                    tag.execute((g, id)).unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }
    db.execute_batch(
        "CREATE INDEX tags_by_tag ON tags (tag, id);
         CREATE INDEX twins_fw ON twins (json_extract(doc, '$.deviceProperties.FirmwareVersion.value'));
         CREATE INDEX twins_battery ON twins (json_extract(doc, '$.deviceProperties.BatteryLevel.value'));
         ANALYZE;",
    )
    .unwrap();
    let filter = query::parse(TAG_EQ_RANGE).unwrap();
    let group = query::parse(GROUP_BY_FIRMWARE).unwrap();
    eprintln!("query_compare: {n} twins, three copies (registry, Vec<Twin>, SQLite)");
    Fixture {
        reg,
        twins,
        db,
        filter,
        group,
    }
}

impl Fixture {
    fn ours_count(&self) -> u64 {
        query::count(&self.reg, &self.filter).unwrap()
    }
    fn naive_count(&self) -> u64 {
        naive::count(&self.twins, &self.filter).unwrap()
    }
    fn sqlite_count(&self) -> u64 {
        self.db
            .prepare_cached(&format!("SELECT count(*) FROM twins WHERE {SQL_WHERE}"))
            .unwrap()
            .query_row([], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    }
    fn ours_first(&self) -> usize {
        query::execute(&self.reg, &self.filter, &QueryOptions::page(100))
            .unwrap()
            .result
            .len()
    }
    fn naive_first(&self) -> usize {
        naive::execute(&self.twins, &self.filter, &QueryOptions::page(100))
            .unwrap()
            .result
            .len()
    }
    fn sqlite_first(&self) -> usize {
        let mut stmt = self
            .db
            .prepare_cached(&format!(
                "SELECT doc FROM twins WHERE {SQL_WHERE} ORDER BY id LIMIT 100"
            ))
            .unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(|r| r.unwrap().len()).filter(|&l| l > 0).count()
    }
    fn ours_group(&self) -> usize {
        query::execute(&self.reg, &self.group, &QueryOptions::default())
            .unwrap()
            .aggregate_result
            .len()
    }
    fn naive_group(&self) -> usize {
        naive::execute(&self.twins, &self.group, &QueryOptions::default())
            .unwrap()
            .aggregate_result
            .len()
    }
    fn sqlite_group(&self) -> usize {
        let mut stmt = self
            .db
            .prepare_cached(
                "SELECT json_extract(doc, '$.deviceProperties.FirmwareVersion.value') AS v, count(*) \
                 FROM twins GROUP BY v",
            )
            .unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, i64>(1)).unwrap();
        rows.count()
    }
}

/// Median wall time of `f` over `runs` runs.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn benches(c: &mut Criterion) {
    let fx = fixture();
    // The three agree before anything is timed.
    assert_eq!(fx.ours_count(), fx.naive_count());
    assert_eq!(fx.ours_count(), fx.sqlite_count());
    assert_eq!(fx.ours_first(), fx.naive_first());
    assert_eq!(fx.ours_first(), fx.sqlite_first());
    assert_eq!(fx.ours_group(), fx.naive_group());
    assert_eq!(fx.ours_group(), fx.sqlite_group());

    let mut g = c.benchmark_group("compare");
    g.sample_size(10);
    g.bench_function("count/ours", |b| b.iter(|| black_box(fx.ours_count())));
    g.bench_function("count/naive", |b| b.iter(|| black_box(fx.naive_count())));
    g.bench_function("count/sqlite", |b| b.iter(|| black_box(fx.sqlite_count())));
    g.bench_function("first100/ours", |b| b.iter(|| black_box(fx.ours_first())));
    g.bench_function("first100/naive", |b| b.iter(|| black_box(fx.naive_first())));
    g.bench_function("first100/sqlite", |b| {
        b.iter(|| black_box(fx.sqlite_first()))
    });
    g.bench_function("group_count/ours", |b| {
        b.iter(|| black_box(fx.ours_group()))
    });
    g.bench_function("group_count/naive", |b| {
        b.iter(|| black_box(fx.naive_group()))
    });
    g.bench_function("group_count/sqlite", |b| {
        b.iter(|| black_box(fx.sqlite_group()))
    });
    g.finish();

    // Ratios from medians measured here, back to back, on the same data.
    eprintln!(
        "\n{:<12} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "query", "ours", "naive", "sqlite", "naive/ours", "sqlite/ours"
    );
    type Run<'a> = (
        &'a str,
        Box<dyn Fn() + 'a>,
        Box<dyn Fn() + 'a>,
        Box<dyn Fn() + 'a>,
    );
    let runs: Vec<Run<'_>> = vec![
        (
            "count",
            Box::new(|| {
                black_box(fx.ours_count());
            }),
            Box::new(|| {
                black_box(fx.naive_count());
            }),
            Box::new(|| {
                black_box(fx.sqlite_count());
            }),
        ),
        (
            "first100",
            Box::new(|| {
                black_box(fx.ours_first());
            }),
            Box::new(|| {
                black_box(fx.naive_first());
            }),
            Box::new(|| {
                black_box(fx.sqlite_first());
            }),
        ),
        (
            "group_count",
            Box::new(|| {
                black_box(fx.ours_group());
            }),
            Box::new(|| {
                black_box(fx.naive_group());
            }),
            Box::new(|| {
                black_box(fx.sqlite_group());
            }),
        ),
    ];
    for (name, ours, naive, sqlite) in &runs {
        let o = median(201, ours);
        let n = median(5, naive);
        let s = median(11, sqlite);
        eprintln!(
            "{:<12} {:>12.1?} {:>12.1?} {:>12.1?} {:>9.0}x {:>9.0}x",
            name,
            o,
            n,
            s,
            n.as_secs_f64() / o.as_secs_f64(),
            s.as_secs_f64() / o.as_secs_f64()
        );
    }
}

criterion_group!(compare_benches, benches);
criterion_main!(compare_benches);
