//! Device queries on the 1M-twin corpus (benches/corpus: seeded, 20 device properties,
//! 5 service properties and 3 tags per twin; `TWINHUB_BENCH_DEVICES=n` for a smaller
//! fleet). Measures, on the registry's bitmap indexes:
//!
//! - `parse_optimize`: parse a typical 3-predicate expression from JSON text and lower it
//!   to a normalised plan (target < 5 us);
//! - `count_one_eq`: count of FirmwareVersion = "4.4" over the whole fleet: one bitmap's
//!   length (target < 5 us at 1M, not growing with the fleet);
//! - `count_tag_eq_range`: count of tag `batch-0` AND FirmwareVersion = "4.4" AND
//!   20 <= BatteryLevel < 60, from bitmap intersections (target p50 < 100 us);
//! - `first_100_tag_eq_range`: the same query's first 100 twins in device-id order,
//!   materialised as owned twins (target < 300 us);
//! - `group_count_firmware` / `group_count_region`: count per FirmwareVersion (20 values)
//!   and per region (50 values) over the whole fleet, from intersection lengths
//!   (target < 1 ms);
//! - `sorted_page_battery_desc`: the filtered query's first 100 twins sorted by
//!   BatteryLevel descending (an ordered index walk);
//! - `first_100_views_to_json` / `first_100_device_id_to_json`: the first page serialised
//!   to JSON as full twins and projected to `deviceId` (projected rows are built from the
//!   registry's views, so the narrow page costs less than the full one);
//! - `first_100_service_leaf_to_json`: the same page projected to one service property
//!   (`region`) and one device property (`BatteryLevel`), written from borrowed values;
//! - `query_tags_top100/<tag>` / `query_tags_sort_all/<tag>`: `Hub::query_tags`'s first
//!   100 ids carrying a common and a rarer tag, against collecting and sorting every
//!   match's id (what it did before).
//!
//! benches/query_compare.rs runs the same queries on the naive evaluator and SQLite.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use twinhub::query::{self, QueryExpression, QueryOptions};

mod corpus;
use corpus::TAG_EQ_RANGE;

fn group_count(name: &str, kind: &str) -> QueryExpression {
    query::parse(&format!(
        r#"{{"aggregate": {{"keys": [{{"name": "{name}", "type": "{kind}"}}],
            "properties": [{{"operator": "count", "property": null, "columnName": "n"}}]}}}}"#
    ))
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let n = corpus::fleet_size();
    let reg = corpus::registry(n);
    let expr = query::parse(TAG_EQ_RANGE).unwrap();
    eprintln!(
        "query bench: {n} twins; the tag/eq/range query matches {}; random memory read {:.0} ns \
         (the host's memory traffic moves the results at 1M twins)",
        query::count(&reg, &expr).unwrap(),
        corpus::random_read_ns()
    );

    let mut g = c.benchmark_group("query");
    g.bench_function("parse_optimize", |b| {
        b.iter(|| {
            let e = query::parse(black_box(TAG_EQ_RANGE)).unwrap();
            query::plan(&reg, &e).unwrap()
        })
    });
    let one_eq = query::parse(
        r#"{"filter": {"type": "comparison", "comparisonOperator": "eq",
            "property": {"name": "FirmwareVersion", "type": "device"}, "value": "4.4"}}"#,
    )
    .unwrap();
    g.bench_function("count_one_eq", |b| {
        b.iter(|| query::count(&reg, black_box(&one_eq)).unwrap())
    });
    g.bench_function("count_tag_eq_range", |b| {
        b.iter(|| query::count(&reg, black_box(&expr)).unwrap())
    });
    g.bench_function("first_100_tag_eq_range", |b| {
        b.iter(|| query::execute(&reg, black_box(&expr), &QueryOptions::page(100)).unwrap())
    });
    let firmware = group_count("FirmwareVersion", "device");
    g.bench_function("group_count_firmware", |b| {
        b.iter(|| query::execute(&reg, black_box(&firmware), &QueryOptions::default()).unwrap())
    });
    let region = group_count("region", "service");
    g.bench_function("group_count_region", |b| {
        b.iter(|| query::execute(&reg, black_box(&region), &QueryOptions::default()).unwrap())
    });
    let sorted = expr.clone().sort(twinhub::query::SortKey::desc(
        twinhub::query::QueryProperty::device("BatteryLevel"),
    ));
    g.bench_function("sorted_page_battery_desc", |b| {
        b.iter(|| query::execute(&reg, black_box(&sorted), &QueryOptions::page(100)).unwrap())
    });
    // What a service pays for a page it sends on: the page serialised to JSON, as full
    // views and projected to `deviceId` alone (asking for less must not cost more).
    g.bench_function("first_100_views_to_json", |b| {
        b.iter(|| {
            let page = query::execute(&reg, black_box(&expr), &QueryOptions::page(100)).unwrap();
            serde_json::to_vec(&page).unwrap().len()
        })
    });
    let projected = expr
        .clone()
        .project(twinhub::query::Projection::properties([
            twinhub::query::QueryProperty::default_field("deviceId"),
        ]));
    g.bench_function("first_100_device_id_to_json", |b| {
        b.iter(|| {
            let page =
                query::execute(&reg, black_box(&projected), &QueryOptions::page(100)).unwrap();
            serde_json::to_vec(&page).unwrap().len()
        })
    });
    // One service leaf and one device property per row: written from the views' borrowed
    // values (no owned map of the row's service properties, no cloned scalar).
    let leaves = expr
        .clone()
        .project(twinhub::query::Projection::properties([
            twinhub::query::QueryProperty::service("region"),
            twinhub::query::QueryProperty::device("BatteryLevel"),
        ]));
    g.bench_function("first_100_service_leaf_to_json", |b| {
        b.iter(|| {
            let page = query::execute(&reg, black_box(&leaves), &QueryOptions::page(100)).unwrap();
            serde_json::to_vec(&page).unwrap().len()
        })
    });
    g.finish();
    #[cfg(feature = "memory-fleet")]
    query_tags(c, reg);
}

/// `Hub::query_tags` (the first 100 ids carrying a tag, in id order) against what it did
/// before: every match's id collected and sorted (`query_tags_sort_all`).
#[cfg(feature = "memory-fleet")]
fn query_tags(c: &mut Criterion, reg: twinhub::registry::Registry) {
    use twinhub::hub::{Hub, HubConfig};
    use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
    let hub = Hub::with_transport(
        MemoryTransport::new(MemoryConfig::default()),
        reg,
        HubConfig::default(),
    );
    let common = corpus::tag(0);
    let rarer = corpus::tag(37);
    let mut g = c.benchmark_group("query");
    for tag in [&common, &rarer] {
        let matches = hub.registry().read().tag_bitmap(tag).map_or(0, |b| b.len());
        eprintln!("query bench: tag {tag} is on {matches} twins");
        g.bench_function(format!("query_tags_top100/{tag}"), |b| {
            b.iter(|| hub.query_tags(&[black_box(tag.as_str())], 100).len())
        });
        g.bench_function(format!("query_tags_sort_all/{tag}"), |b| {
            b.iter(|| {
                let reg = hub.registry().read();
                let slots = reg.tag_bitmap(black_box(tag)).unwrap();
                let mut ids: Vec<twinhub::DeviceId> = slots
                    .iter()
                    .filter_map(|s| {
                        reg.twin_at(twinhub::registry::Slot(s))
                            .map(|t| t.device_id().clone())
                    })
                    .collect();
                ids.sort();
                ids.truncate(100);
                ids.len()
            })
        });
    }
    g.finish();
    hub.stop();
}

criterion_group!(query_benches, benches);
criterion_main!(query_benches);
