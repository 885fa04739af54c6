//! The executor against the naive evaluator (differential proptest over random twins,
//! expressions and updates, under every physical strategy), golden results for the
//! preview's example queries, optimizer rewrites, paging under concurrent writes, and
//! read-your-writes.

#![cfg(feature = "fuzzing")]

mod seed;

use proptest::prelude::*;
use seed::SEED_FIRMWARE_QUERY;
use twinhub::fuzzing::query::{ExpressionSource, Vocabulary};
use twinhub::query::{
    self, AggregateOperator, Aggregation, Filter, Literal, Plan, Projection, QueryError,
    QueryExpression, QueryOptions, QueryProperty, ResultItem, SortKey, Strategy, TagQuery, naive,
};
use twinhub::registry::{Registry, SharedRegistry};
use twinhub::twin::{ConnectionState, DeviceStatus, Scalar, ServiceValue, Twin};
use twinhub::{DeviceId, Timestamp};

const TAGS: &[&str] = &["a", "b", "c", "lab"];
const FIRMWARE: &[&str] = &["1.0", "1.1", "2.0"];
const REGIONS: &[&str] = &["eu", "us", "ap"];

/// The names and values the generated twins use, so expressions hit them.
const VOCABULARY: Vocabulary = Vocabulary {
    device: &[
        "FirmwareVersion",
        "BatteryLevel",
        "/3303/0/5700",
        "MemoryFree",
        "/3/0/9",
        "/10/0/1",
    ],
    service: &["region", "level", "cfg", "cfg.mode", "missing"],
    fields: &[
        "deviceId",
        "status",
        "connectionState",
        "isManaged",
        "statusReason",
        "nope",
        "etag",
        "generationId",
        "lastActivityTime",
        "configuration",
        "statusUpdatedTime",
    ],
    custom: &["/3303/0/5700", "/3/0/9"],
    strings: &[
        "1.0",
        "2.0",
        "eu",
        "us",
        "eco",
        "a",
        "b",
        "lab",
        "d03",
        "enabled",
        "Connected",
    ],
    numbers: &[
        Literal::Number(0.0),
        Literal::Integer(1),
        Literal::Number(2.0),
        Literal::Number(2.5),
        Literal::Integer(50),
        Literal::Number(99.0),
        Literal::Integer(-1),
        // Exact integers an f64 cannot tell apart (`/10/0/1` holds them).
        Literal::Integer(9_007_199_254_740_993),
        Literal::Unsigned(9_223_372_036_854_775_809),
        Literal::Number(9_223_372_036_854_775_808.0),
        Literal::Unsigned(u64::MAX),
        // The ends of the exact range and floats beyond it (`/10/0/1` holds them too).
        Literal::Integer(i64::MIN),
        Literal::Number(-0.0),
        Literal::Number(1e300),
        Literal::Number(0.5),
    ],
    invalid: false,
};

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// A twin from generated choices.
fn twin(n: u8, bytes: &[u8; 10]) -> Twin {
    let mut t = Twin::new(DeviceId::new(&format!("d{n:02}")).unwrap());
    if !bytes[0].is_multiple_of(4) {
        t = t.with_device_property("FirmwareVersion", FIRMWARE[bytes[1] as usize % 3], ts(1));
    }
    if !bytes[2].is_multiple_of(3) {
        t = t.with_device_property("BatteryLevel", (bytes[3] % 6) as i64 * 20, ts(2));
    }
    // Integers beside the floats nearest them, and floats written like integers.
    let memory: Option<Scalar> = match (bytes[1] / 3) % 14 {
        0 => Some(Scalar::from(9_007_199_254_740_992i64)),
        1 => Some(Scalar::from(9_007_199_254_740_993i64)),
        2 => Some(Scalar::from(9_007_199_254_740_992.0)),
        3 => Some(Scalar::from(1u64 << 63)),
        4 => Some(Scalar::from((1u64 << 63) + 1)),
        5 => Some(Scalar::from(9_223_372_036_854_775_808.0)),
        6 => Some(Scalar::from(u64::MAX)),
        7 => Some(Scalar::from(2.0)),
        8 => Some(Scalar::from(-1)),
        // Sums that leave the i64 range downwards, integral floats beyond u64 (a float
        // sum), a fraction beside big integers, and -0.0 beside 0.
        9 => Some(Scalar::from(i64::MIN)),
        10 => Some(Scalar::from(1e300)),
        11 => Some(Scalar::from(0.5)),
        12 => Some(Scalar::from(-0.0)),
        _ => None,
    };
    if let Some(v) = memory {
        t = t.with_device_property("/10/0/1", v, ts(2));
    }
    match bytes[4] % 4 {
        0 => {}
        1 => t = t.with_device_property("/3303/0/5700", (bytes[5] % 4) as f64 * 1.25, ts(3)),
        2 => t = t.with_device_property("/3303/0/5700", "hot", ts(3)),
        _ => t = t.with_device_property("/3303/0/5700", bytes[5].is_multiple_of(2), ts(3)),
    }
    if !bytes[5].is_multiple_of(3) {
        t = t.with_service_property("region", REGIONS[bytes[6] as usize % 3]);
    }
    match bytes[6] % 5 {
        0 => t = t.with_service_property("level", (bytes[7] % 3) as i64),
        1 => t = t.with_service_property("level", "high"),
        2 => t = t.with_service_property("level", bytes[7].is_multiple_of(2)),
        3 => {
            let mut m = std::collections::BTreeMap::new();
            m.insert(
                "mode".to_owned(),
                ServiceValue::from(if bytes[7].is_multiple_of(2) {
                    "eco"
                } else {
                    "max"
                }),
            );
            t = t.with_service_property("cfg", ServiceValue::Object(m));
        }
        _ => {}
    }
    for (i, tag) in TAGS.iter().enumerate() {
        if bytes[8] & (1 << i) != 0 {
            t = t.with_tag(*tag);
        }
    }
    if bytes[9].is_multiple_of(3) {
        t.status = DeviceStatus::Disabled;
        t.status_reason = Some(
            if bytes[9].is_multiple_of(2) {
                "lost"
            } else {
                "stolen"
            }
            .into(),
        );
    }
    if bytes[9] % 4 == 1 {
        t.connection_state = ConnectionState::Connected;
    }
    t.is_managed = bytes[9] % 5 < 2;
    if bytes[7] % 3 == 1 {
        t.last_activity_time = Some(ts(u64::from(bytes[7] % 7)));
        t.connection_state_updated_time = Some(ts(u64::from(bytes[6] % 5)));
        t.configuration = Some(format!("cfg-{}", bytes[6] % 3));
    }
    t
}

/// One random write, applied to the registry (rejected writes change nothing).
fn update(reg: &mut Registry, op: &[u8; 4]) {
    let id = format!("d{:02}", op[1] % 24);
    let _ = match op[0] % 10 {
        0 => reg
            .report_device_property(
                &id,
                "BatteryLevel",
                Scalar::from((op[2] % 6) as i64 * 20),
                ts(9),
            )
            .map(|_| ()),
        1 => reg
            .report_device_property(
                &id,
                "FirmwareVersion",
                Scalar::from(FIRMWARE[op[2] as usize % 3]),
                ts(9),
            )
            .map(|_| ()),
        2 => reg.remove_device_property(&id, "BatteryLevel").map(|_| ()),
        3 => reg
            .set_service_property(
                &id,
                "region",
                Some(ServiceValue::from(REGIONS[op[2] as usize % 3])),
                None,
            )
            .map(|_| ()),
        4 => reg
            .set_service_property(&id, "level", None, None)
            .map(|_| ()),
        5 => reg
            .add_tags(&id, &[TAGS[op[2] as usize % 4]], None)
            .map(|_| ()),
        6 => reg
            .remove_tags(&id, &[TAGS[op[2] as usize % 4]], None)
            .map(|_| ()),
        7 => reg.remove(&id).map(|_| ()),
        // One value in another written form (`2` for `2.0`), or an extreme.
        8 => reg
            .report_device_property(
                &id,
                "/10/0/1",
                [
                    Scalar::from(2),
                    Scalar::from(2.0),
                    Scalar::from(i64::MIN),
                    Scalar::from(u64::MAX),
                    Scalar::from(9_007_199_254_740_992.0),
                    Scalar::from(0.0),
                ][op[2] as usize % 6]
                    .clone(),
                ts(9),
            )
            .map(|_| ()),
        _ => reg
            .create(twin(
                op[1] % 24,
                &[op[2], op[3], op[2] ^ op[3], 1, 2, 3, op[3], 5, op[2], op[3]],
            ))
            .map(|_| ()),
    };
}

fn snapshot(reg: &Registry) -> Vec<Twin> {
    reg.iter().map(|t| t.to_twin()).collect()
}

/// Every page of `expr` from the executor under `strategy` equals the naive evaluator's,
/// each side following its own continuation tokens. The tokens themselves may differ in
/// how a sort key is written (`1` or `1.0`: the index keeps one written form per value),
/// never in what they resume.
fn assert_same(
    reg: &Registry,
    twins: &[Twin],
    expr: &QueryExpression,
    strategy: Strategy,
    page_size: usize,
) {
    let (mut ours_token, mut theirs_token): (Option<String>, Option<String>) = (None, None);
    for _ in 0..100 {
        let options = |continuation: &Option<String>| QueryOptions {
            page_size,
            continuation: continuation.clone(),
            strategy,
        };
        let ours = query::execute(reg, expr, &options(&ours_token))
            .unwrap()
            .map_documents(|t| t.to_twin());
        let theirs = naive::execute(twins, expr, &options(&theirs_token)).unwrap();
        let context = format!("strategy {strategy:?}, query {expr}");
        assert_eq!(ours.result, theirs.result, "{context}");
        assert_eq!(ours.aggregate_result, theirs.aggregate_result, "{context}");
        assert_eq!(
            ours.continuation.is_some(),
            theirs.continuation.is_some(),
            "{context}"
        );
        (ours_token, theirs_token) = (ours.continuation, theirs.continuation);
        if ours_token.is_none() {
            return;
        }
    }
    panic!("more than 100 pages");
}

fn check_all(reg: &Registry, exprs: &[QueryExpression]) {
    reg.validate().unwrap();
    let twins = snapshot(reg);
    for expr in exprs {
        if expr.validate().is_err() {
            continue;
        }
        assert_eq!(
            query::count(reg, expr).unwrap(),
            naive::count(&twins, expr).unwrap(),
            "count of {expr}"
        );
        for strategy in [
            Strategy::Auto,
            Strategy::Bitmaps,
            Strategy::Scans,
            Strategy::Columns,
        ] {
            assert_eq!(
                query::count_with(reg, expr, strategy).unwrap(),
                naive::count(&twins, expr).unwrap(),
                "count of {expr}, strategy {strategy:?}"
            );
            assert_same(reg, &twins, expr, strategy, 4);
        }
        assert_same(reg, &twins, expr, Strategy::Auto, 1000);
    }
}

/// `filter` under `layers` more levels of alternating `and`, `not` and `or` (one operand
/// each, so no flattening or double negation removes them): the same set of twins,
/// nested as deep as the limits allow.
fn nest(mut filter: Filter, layers: usize) -> Filter {
    for n in 0..layers {
        filter = match n % 4 {
            0 => Filter::all_of([filter]),
            1 | 3 => !filter,
            _ => Filter::any_of([filter]),
        };
    }
    filter
}

/// 160 cases unless `PROPTEST_CASES` says otherwise.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(160)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn executor_equals_naive_evaluator(
        devices in proptest::collection::btree_map(0u8..24, any::<[u8; 10]>(), 0..24),
        queries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..48), 1..6),
        updates in proptest::collection::vec(any::<[u8; 4]>(), 0..16),
        layers in prop_oneof![3 => Just(0usize), 1 => 0usize..=28],
    ) {
        let mut reg = Registry::new();
        for (n, bytes) in &devices {
            reg.create(twin(*n, bytes)).unwrap();
        }
        // Generated filters nest at most 4 deep; `layers` takes some to the limit (32).
        let exprs: Vec<QueryExpression> = queries
            .iter()
            .map(|q| {
                let mut e = ExpressionSource::new(q, VOCABULARY).expression();
                e.filter = e.filter.map(|f| nest(f, layers));
                e
            })
            .collect();
        check_all(&reg, &exprs);
        for op in &updates {
            update(&mut reg, op);
        }
        check_all(&reg, &exprs);
    }
}

// ---- golden results ------------------------------------------------------------------

/// Six devices with known values.
fn fleet() -> Registry {
    let mut reg = Registry::new();
    let rows: &[(&str, &str, i64, &str, &[&str])] = &[
        ("dev-1", "1.0", 90, "eu", &["lab", "building-7"]),
        ("dev-2", "1.0", 15, "us", &["building-7"]),
        ("dev-3", "2.0", 55, "eu", &["lab", "building-7"]),
        ("dev-4", "1.0", 40, "eu", &["lab"]),
        ("dev-5", "2.0", 15, "ap", &[]),
        ("dev-6", "1.1", 70, "us", &["lab", "building-7"]),
    ];
    for (id, fw, battery, region, tags) in rows {
        let mut t = Twin::new(DeviceId::new(id).unwrap())
            .with_device_property("FirmwareVersion", *fw, ts(0))
            .with_device_property("BatteryLevel", *battery, ts(0))
            .with_service_property("region", *region);
        for tag in *tags {
            t = t.with_tag(*tag);
        }
        reg.create(t).unwrap();
    }
    reg
}

fn ids(
    result: &query::QueryResult<twinhub::registry::TwinRef<'_>, query::TwinProjection<'_>>,
) -> Vec<String> {
    result
        .result
        .iter()
        .map(|r| match r {
            ResultItem::Document(t) => t.device_id().to_string(),
            ResultItem::Projected(v) => v.device_id().to_owned(),
        })
        .collect()
}

#[test]
fn golden_seed_firmware_query() {
    let reg = fleet();
    let page = query::execute_text(&reg, SEED_FIRMWARE_QUERY, &QueryOptions::default()).unwrap();
    assert_eq!(ids(&page), ["dev-1", "dev-2", "dev-4"]);
    assert_eq!(page.continuation, None);
    let json = serde_json::to_value(&page).unwrap();
    assert_eq!(
        json["Result"][0]["deviceProperties"]["FirmwareVersion"]["value"],
        "1.0"
    );
    assert_eq!(json["AggregateResult"], serde_json::json!([]));
    assert_eq!(
        query::count(&reg, &query::parse(SEED_FIRMWARE_QUERY).unwrap()).unwrap(),
        3
    );
}

#[test]
fn golden_tags_all_and_tag_query() {
    let reg = fleet();
    let expr = QueryExpression::new().filter(QueryProperty::tags().all(["lab", "building-7"]));
    let page = query::execute(&reg, &expr, &QueryOptions::default()).unwrap();
    assert_eq!(ids(&page), ["dev-1", "dev-3", "dev-6"]);
    let top2 = query::tag_query(
        &reg,
        &TagQuery {
            tags: vec!["lab".into(), "building-7".into()],
            top: 2,
        },
    )
    .unwrap();
    assert_eq!(ids(&top2), ["dev-1", "dev-3"]);
    assert!(top2.continuation.is_some());
    assert_eq!(
        query::tag_query(
            &reg,
            &TagQuery {
                tags: vec![],
                top: 2
            }
        )
        .unwrap_err(),
        QueryError::BadTagQuery
    );
    assert_eq!(
        query::tag_query(
            &reg,
            &TagQuery {
                tags: vec!["lab".into()],
                top: 1001
            }
        )
        .unwrap_err(),
        QueryError::BadTagQuery
    );
}

#[test]
fn golden_aggregate_with_keys() {
    let reg = fleet();
    let expr = QueryExpression::new()
        .aggregate(
            Aggregation::by([QueryProperty::device("FirmwareVersion")])
                .column(AggregateOperator::Count, None, "devices")
                .column(
                    AggregateOperator::Avg,
                    Some(QueryProperty::device("BatteryLevel")),
                    "battery",
                )
                .column(
                    AggregateOperator::Min,
                    Some(QueryProperty::device("BatteryLevel")),
                    "low",
                )
                .column(
                    AggregateOperator::Sum,
                    Some(QueryProperty::device("BatteryLevel")),
                    "total",
                ),
        )
        .sort(SortKey::desc(QueryProperty::aggregated("devices")));
    let page = query::execute(&reg, &expr, &QueryOptions::default()).unwrap();
    assert_eq!(
        serde_json::to_value(&page.aggregate_result).unwrap(),
        serde_json::json!([
            {"FirmwareVersion": "1.0", "devices": 3, "battery": 48.333333333333336, "low": 15, "total": 145},
            {"FirmwareVersion": "2.0", "devices": 2, "battery": 35.0, "low": 15, "total": 70},
            {"FirmwareVersion": "1.1", "devices": 1, "battery": 70.0, "low": 70, "total": 70},
        ])
    );
    assert!(page.result.is_empty());
}

#[test]
fn golden_multi_key_sort_with_id_tiebreak() {
    let reg = fleet();
    let expr = QueryExpression::new()
        .sort(SortKey::asc(QueryProperty::service("region")))
        .sort(SortKey::desc(QueryProperty::device("BatteryLevel")))
        .project(Projection::properties([QueryProperty::device(
            "BatteryLevel",
        )]));
    let page = query::execute(&reg, &expr, &QueryOptions::default()).unwrap();
    assert_eq!(
        ids(&page),
        ["dev-5", "dev-1", "dev-3", "dev-4", "dev-6", "dev-2"]
    );
    let ResultItem::Projected(first) = &page.result[0] else {
        panic!("not projected")
    };
    assert_eq!(
        serde_json::to_value(first).unwrap(),
        serde_json::json!({"deviceId": "dev-5", "deviceProperties": {"BatteryLevel": {"value": 15, "lastUpdatedTime": "1970-01-01T00:00:00.000Z"}}})
    );
    // Equal batteries (15) tie-break on device id.
    let expr = QueryExpression::new().sort(SortKey::asc(QueryProperty::device("BatteryLevel")));
    let page = query::execute(&reg, &expr, &QueryOptions::page(2)).unwrap();
    assert_eq!(ids(&page), ["dev-2", "dev-5"]);
}

// ---- optimizer -------------------------------------------------------------------------

fn plan_of(reg: &Registry, filter: Filter) -> Plan<twinhub::query::TwinProperty> {
    query::plan(reg, &QueryExpression::new().filter(filter)).unwrap()
}

#[test]
fn contradictions_become_empty_without_data() {
    let reg = fleet();
    let fw = || QueryProperty::device("FirmwareVersion");
    let battery = || QueryProperty::device("BatteryLevel");
    assert_eq!(
        plan_of(&reg, Filter::all_of([fw().eq("1.0"), fw().eq("2.0")])),
        Plan::Empty
    );
    assert_eq!(
        plan_of(&reg, Filter::all_of([battery().gt(50), battery().lt(40)])),
        Plan::Empty
    );
    assert_eq!(
        plan_of(&reg, Filter::all_of([battery().gt(50), battery().lt("z")])),
        Plan::Empty
    );
    assert_eq!(
        plan_of(&reg, Filter::all_of([fw().eq("1.0"), !fw().eq("1.0")])),
        Plan::Empty
    );
    assert_eq!(
        plan_of(&reg, Filter::all_of([fw().eq("1.0"), fw().missing()])),
        Plan::Empty
    );
    assert_eq!(
        plan_of(&reg, Filter::any_of([fw().exists(), !fw().exists()])),
        Plan::All
    );
    // A property nobody has: only "missing" holds.
    assert_eq!(
        plan_of(&reg, QueryProperty::device("MemoryFree").gt(1)),
        Plan::Empty
    );
    assert_eq!(
        plan_of(&reg, QueryProperty::device("MemoryFree").missing()),
        Plan::All
    );
}

#[test]
fn ranges_merge_in_becomes_union_and_not_is_pushed_down() {
    let reg = fleet();
    let battery = || QueryProperty::device("BatteryLevel");
    let fw = || QueryProperty::device("FirmwareVersion");
    let p = reg
        .property_id(twinhub::twin::PropertyKind::Device, "BatteryLevel")
        .unwrap();
    let b = twinhub::query::TwinProperty::Indexed(p);
    use std::ops::Bound::*;
    assert_eq!(
        plan_of(
            &reg,
            Filter::all_of([battery().gt(10), battery().lte(50), battery().gte(20)])
        ),
        Plan::Range(b, Included(Scalar::from(20)), Included(Scalar::from(50)))
    );
    assert_eq!(
        plan_of(&reg, Filter::all_of([battery().gte(15), battery().lte(15)])),
        Plan::Eq(b, Scalar::from(15))
    );
    assert_eq!(
        plan_of(
            &reg,
            Filter::any_of([
                battery().eq(15),
                battery().eq(90),
                battery().is_in([15, 40])
            ])
        ),
        Plan::In(
            b,
            vec![Scalar::from(15), Scalar::from(40), Scalar::from(90)]
        )
    );
    assert_eq!(
        plan_of(
            &reg,
            Filter::all_of([battery().is_in([15, 40, 90]), battery().gt(20)])
        ),
        Plan::In(b, vec![Scalar::from(40), Scalar::from(90)])
    );
    // not (a or b) = (not a) and (not b); not not a = a; nested ANDs flatten.
    let f = fw();
    let f_id = twinhub::query::TwinProperty::Indexed(
        reg.property_id(twinhub::twin::PropertyKind::Device, "FirmwareVersion")
            .unwrap(),
    );
    assert_eq!(
        plan_of(
            &reg,
            !Filter::any_of([f.clone().eq("1.0"), !!battery().eq(15)])
        ),
        Plan::And(vec![
            Plan::Not(Box::new(Plan::Eq(f_id, Scalar::from("1.0")))),
            Plan::Not(Box::new(Plan::Eq(b, Scalar::from(15)))),
        ])
    );
    assert_eq!(
        plan_of(
            &reg,
            Filter::all_of([
                Filter::all_of([f.clone().eq("1.0"), QueryProperty::tags().all(["lab"])]),
                QueryProperty::tags().all(["building-7"])
            ])
        ),
        Plan::And(vec![
            Plan::Tags(vec!["building-7".into(), "lab".into()]),
            Plan::Eq(f_id, Scalar::from("1.0")),
        ])
    );
}

// ---- paging and consistency ------------------------------------------------------------

#[test]
fn paging_never_duplicates_or_skips_unchanged_twins() {
    let build = || {
        let mut reg = Registry::new();
        for n in 0..200u32 {
            reg.create(
                Twin::new(DeviceId::new(&format!("p{n:03}")).unwrap()).with_device_property(
                    "BatteryLevel",
                    (n % 7) as i64 * 10,
                    ts(0),
                ),
            )
            .unwrap();
        }
        reg
    };
    for expr in [
        QueryExpression::new(),
        QueryExpression::new().sort(SortKey::desc(QueryProperty::device("BatteryLevel"))),
        QueryExpression::new().sort(SortKey::asc(QueryProperty::device("BatteryLevel"))),
    ] {
        for strategy in [Strategy::Bitmaps, Strategy::Scans] {
            let mut reg = build();
            let mut seen = std::collections::BTreeMap::<String, u32>::new();
            let mut token = None;
            let mut round = 0u32;
            loop {
                let options = QueryOptions {
                    page_size: 9,
                    continuation: token.clone(),
                    strategy,
                };
                let page = query::execute(&reg, &expr, &options).unwrap();
                for id in ids(&page) {
                    *seen.entry(id).or_default() += 1;
                }
                token = page.continuation;
                if token.is_none() {
                    break;
                }
                // Between pages some devices change value, are removed, or appear.
                round += 1;
                let victim = format!("p{:03}", (round * 14) % 200);
                let _ = reg.report_device_property(
                    &victim,
                    "BatteryLevel",
                    Scalar::from(((round % 5) * 20) as i64),
                    ts(1),
                );
                let _ = reg.remove(&format!("p{:03}", (round * 6) % 200));
                let _ = reg.create(Twin::new(DeviceId::new(&format!("q{round:03}")).unwrap()));
            }
            let changed: std::collections::BTreeSet<String> = (1..=round)
                .flat_map(|k| {
                    [
                        format!("p{:03}", (k * 14) % 200),
                        format!("p{:03}", (k * 6) % 200),
                    ]
                })
                .collect();
            for n in 0..200u32 {
                let id = format!("p{n:03}");
                if !changed.contains(&id) {
                    assert_eq!(seen.get(&id), Some(&1), "{id} in {expr} under {strategy:?}");
                }
            }
            assert!(round > 10);
        }
    }
}

#[test]
fn continuation_tokens_are_checked() {
    let reg = fleet();
    let expr = QueryExpression::new().sort(SortKey::asc(QueryProperty::device("BatteryLevel")));
    let page = query::execute(&reg, &expr, &QueryOptions::page(2)).unwrap();
    let token = page.continuation.unwrap();
    let other = QueryExpression::new();
    assert_eq!(
        query::execute(&reg, &other, &QueryOptions::page(2).after(token.clone())).unwrap_err(),
        QueryError::ContinuationMismatch
    );
    for bad in ["", "zz", "7b7d", &"a".repeat(40_000)] {
        assert_eq!(
            query::execute(&reg, &expr, &QueryOptions::page(2).after(bad)).unwrap_err(),
            QueryError::BadContinuation,
            "{bad:.20}"
        );
    }
    assert!(matches!(
        query::execute(&reg, &expr, &QueryOptions::page(0)).unwrap_err(),
        QueryError::PageSize {
            requested: 0,
            max: 1000
        }
    ));
    let next = query::execute(&reg, &expr, &QueryOptions::page(2).after(token)).unwrap();
    assert_eq!(ids(&next), ["dev-4", "dev-3"]);
}

#[test]
fn queries_read_their_writes_across_threads() {
    let shared = SharedRegistry::new(fleet());
    let expr = QueryExpression::new().filter(QueryProperty::device("FirmwareVersion").eq("3.0"));
    assert_eq!(query::count(&*shared.read(), &expr).unwrap(), 0);
    let writer = shared.clone();
    std::thread::spawn(move || {
        for n in 1..=6 {
            writer
                .write()
                .report_device_property(
                    &format!("dev-{n}"),
                    "FirmwareVersion",
                    Scalar::from("3.0"),
                    ts(5),
                )
                .unwrap();
        }
    })
    .join()
    .unwrap();
    // The write returned before this query started, so the query sees all of it.
    assert_eq!(query::count(&*shared.read(), &expr).unwrap(), 6);
    let mut w = shared.write();
    w.report_device_property("dev-1", "FirmwareVersion", Scalar::from("1.0"), ts(6))
        .unwrap();
    assert_eq!(query::count(&*w, &expr).unwrap(), 5);
}

/// Issue #19 item 2: integer sums are exact (2^53 + 1 plus 2^53 used to round), a float
/// sum beyond the f64 range is a typed error (two 1e308 used to give a silent null), and
/// averages do not overflow.
#[test]
fn aggregate_sums_are_exact_or_a_typed_error() {
    let run = |values: &[Scalar]| {
        let mut reg = Registry::new();
        for (i, v) in values.iter().enumerate() {
            reg.create(Twin::new(DeviceId::new(&format!("d{i}")).unwrap()))
                .unwrap();
            reg.report_device_property(
                &format!("d{i}"),
                "/3303/0/5700",
                v.clone(),
                Timestamp::EPOCH,
            )
            .unwrap();
        }
        let expr = QueryExpression::new().aggregate(
            Aggregation::by([QueryProperty::default_field("status")])
                .column(
                    AggregateOperator::Sum,
                    Some(QueryProperty::device("/3303/0/5700")),
                    "sum",
                )
                .column(
                    AggregateOperator::Avg,
                    Some(QueryProperty::device("/3303/0/5700")),
                    "avg",
                ),
        );
        let ours = query::execute(&reg, &expr, &QueryOptions::default());
        let twins: Vec<Twin> = reg.iter().map(|t| t.to_twin()).collect();
        let model = naive::execute(&twins, &expr, &QueryOptions::default());
        assert_eq!(ours.is_ok(), model.is_ok());
        ours.map(|p| serde_json::to_value(&p.aggregate_result).unwrap())
    };
    let big = 1i64 << 53;
    assert_eq!(
        run(&[Scalar::from(big + 1), Scalar::from(big)]).unwrap()[0]["sum"],
        serde_json::json!(2 * big + 1)
    );
    // Beyond i64 and up to u64::MAX: still exact.
    let v = run(&[Scalar::from(i64::MAX), Scalar::from(i64::MAX)]).unwrap();
    assert_eq!(v[0]["sum"].as_u64(), Some(2 * i64::MAX as u64));
    assert_eq!(v[0]["avg"].as_f64(), Some(i64::MAX as f64));
    let v = run(&[
        Scalar::from(u64::MAX - 1),
        Scalar::from(1),
        Scalar::from(-5),
    ])
    .unwrap();
    assert_eq!(v[0]["sum"].as_u64(), Some(u64::MAX - 5));
    // Beyond u64: the nearest float, not a wrap.
    let v = run(&[Scalar::from(u64::MAX), Scalar::from(u64::MAX)]).unwrap();
    assert_eq!(v[0]["sum"].as_f64(), Some(2.0 * u64::MAX as f64));
    assert_eq!(v[0]["avg"].as_f64(), Some(u64::MAX as f64));
    let floats = [
        Scalar::float(1e308).unwrap(),
        Scalar::float(1.5e308).unwrap(),
    ];
    match run(&floats) {
        Err(QueryError::AggregateOverflow { column }) => assert_eq!(column, "sum"),
        other => panic!("expected an overflow error, got {other:?}"),
    }
}

/// Issue #19 item 2: a column named like a key, and a key given twice, are refused.
#[test]
fn aggregate_names_that_would_collide_are_refused() {
    let reg = fleet();
    let collide = QueryExpression::new().aggregate(
        Aggregation::by([QueryProperty::device("FirmwareVersion")]).column(
            AggregateOperator::Count,
            None,
            "FirmwareVersion",
        ),
    );
    let err = query::execute(&reg, &collide, &QueryOptions::default()).unwrap_err();
    assert!(err.to_string().contains("also an aggregate key"), "{err}");
    let twice = QueryExpression::new().aggregate(
        Aggregation::by([
            QueryProperty::device("FirmwareVersion"),
            QueryProperty::device("FirmwareVersion"),
        ])
        .column(AggregateOperator::Count, None, "n"),
    );
    let err = query::execute(&reg, &twice, &QueryOptions::default()).unwrap_err();
    assert!(err.to_string().contains("given twice"), "{err}");
    let text = r#"{"aggregate": {"keys": [{"name": "FirmwareVersion", "type": "device"}],
        "properties": [{"operator": "count", "columnName": "FirmwareVersion"}]}}"#;
    assert!(query::parse(text).is_err());
}

/// Issue #19 item 1: integer literals are exact. `big eq 9007199254740993` matched the
/// twin holding ...992 (the literal was an f64); the builder's `From<i64>` rounded the same
/// way; NaN and infinity from `From<f64>` silently meant 0.
#[test]
fn integer_literals_are_exact_and_non_finite_floats_are_refused() {
    let mut reg = Registry::new();
    for (id, v) in [
        ("a", Scalar::from(9_007_199_254_740_992i64)),
        ("b", Scalar::from(9_007_199_254_740_993i64)),
        ("c", Scalar::from(1u64 << 63)),
        ("d", Scalar::from((1u64 << 63) + 1)),
        ("e", Scalar::from(u64::MAX)),
    ] {
        reg.create(Twin::new(DeviceId::new(id).unwrap())).unwrap();
        reg.report_device_property(id, "/3303/0/5700", v, Timestamp::EPOCH)
            .unwrap();
    }
    let twins: Vec<Twin> = reg.iter().map(|t| t.to_twin()).collect();
    let ids = |expr: &QueryExpression| -> Vec<String> {
        let page = query::execute(&reg, expr, &QueryOptions::default()).unwrap();
        let model = naive::execute(&twins, expr, &QueryOptions::default()).unwrap();
        let names = |v: serde_json::Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| r["deviceId"].as_str().unwrap().to_owned())
                .collect()
        };
        let ours = names(serde_json::to_value(&page.result).unwrap());
        assert_eq!(ours, names(serde_json::to_value(&model.result).unwrap()));
        ours
    };
    let text = r#"{"filter": {"type": "comparison", "comparisonOperator": "eq",
        "property": {"name": "/3303/0/5700", "type": "device"}, "value": 9007199254740993}}"#;
    assert_eq!(ids(&query::parse(text).unwrap()), ["b"]);
    let built = QueryExpression::new()
        .filter(QueryProperty::device("/3303/0/5700").eq(9_007_199_254_740_993i64));
    assert_eq!(ids(&built), ["b"]);
    let gt = QueryExpression::new()
        .filter(QueryProperty::device("/3303/0/5700").gt(9_007_199_254_740_992i64));
    assert_eq!(ids(&gt), ["b", "c", "d", "e"]);
    // Above i64::MAX, up to u64::MAX: exact too (each used to round to 2^63 or 2^64).
    let text = r#"{"filter": {"type": "comparison", "comparisonOperator": "eq",
        "property": {"name": "/3303/0/5700", "type": "device"}, "value": 9223372036854775809}}"#;
    assert_eq!(ids(&query::parse(text).unwrap()), ["d"]);
    let unsigned =
        QueryExpression::new().filter(QueryProperty::device("/3303/0/5700").gt(1u64 << 63));
    assert_eq!(ids(&unsigned), ["d", "e"]);
    let float = QueryExpression::new()
        .filter(QueryProperty::device("/3303/0/5700").eq(9_223_372_036_854_775_808.0));
    assert_eq!(ids(&float), ["c"]);
    let max = QueryExpression::new().filter(QueryProperty::device("/3303/0/5700").eq(u64::MAX));
    assert_eq!(ids(&max), ["e"]);
    // Beyond u64::MAX an integer literal is the nearest float (2^64: above every twin).
    let text = r#"{"filter": {"type": "comparison", "comparisonOperator": "lt",
        "property": {"name": "/3303/0/5700", "type": "device"}, "value": 18446744073709551616}}"#;
    assert_eq!(ids(&query::parse(text).unwrap()), ["a", "b", "c", "d", "e"]);
    // Printing and parsing give back the same literal, integer or float.
    for expr in [
        built,
        unsigned,
        max,
        QueryExpression::new().filter(QueryProperty::device("x").eq(1.0)),
    ] {
        assert_eq!(query::parse(&expr.to_string()).unwrap(), expr);
    }
    for bad in [f64::NAN, f64::INFINITY] {
        let expr = QueryExpression::new().filter(QueryProperty::device("/3303/0/5700").lt(bad));
        assert!(
            query::execute(&reg, &expr, &QueryOptions::default()).is_err(),
            "lt({bad}) must be refused, not read as 0"
        );
    }
}

/// Issue #19 item 4: every statement of the query module's "Semantics" section, checked
/// (here and against the naive evaluator).
#[test]
fn the_documented_semantics_hold() {
    let mut reg = Registry::new();
    // x: a number, a string, a boolean, missing.
    for (id, v) in [
        ("n1", Some(Scalar::from(1))),
        ("n5", Some(Scalar::from(5))),
        ("s", Some(Scalar::from("10"))),
        ("b", Some(Scalar::Bool(true))),
        ("none", None),
    ] {
        let mut t = Twin::new(DeviceId::new(id).unwrap());
        if let Some(v) = v {
            t = t.with_device_property("/9/0/1", v, ts(0));
        }
        reg.create(t).unwrap();
    }
    let twins: Vec<Twin> = reg.iter().map(|t| t.to_twin()).collect();
    let run = |text: &str| -> Vec<String> {
        let expr = query::parse(text).unwrap();
        let page = query::execute(&reg, &expr, &QueryOptions::default()).unwrap();
        let model = naive::execute(&twins, &expr, &QueryOptions::default()).unwrap();
        let mine = ids(&page);
        let theirs: Vec<String> = model
            .result
            .iter()
            .map(|r| match r {
                ResultItem::Document(t) => t.device_id.to_string(),
                ResultItem::Projected(v) => v["deviceId"].as_str().unwrap().to_owned(),
            })
            .collect();
        assert_eq!(mine, theirs, "{text}");
        mine
    };
    let cmp = |op: &str, v: &str| {
        format!(
            r#"{{"filter": {{"type": "comparison", "comparisonOperator": "{op}",
            "property": {{"name": "/9/0/1", "type": "device"}}, "value": {v}}}}}"#
        )
    };
    // Range comparisons stay within the literal's type: a string or boolean is never
    // greater than a number.
    assert_eq!(run(&cmp("gt", "0")), ["n1", "n5"]);
    assert_eq!(run(&cmp("gte", "\"\"")), ["s"]);
    // `ne` matches twins that have the property with another value (not missing ones);
    // `ne null` means "exists", `eq null` "missing".
    assert_eq!(run(&cmp("ne", "1")), ["b", "n5", "s"]);
    assert_eq!(run(&cmp("eq", "null")), ["none"]);
    assert_eq!(run(&cmp("ne", "null")), ["b", "n1", "n5", "s"]);
    // `not` is taken over all twins: it matches twins lacking the property.
    let not = format!(
        r#"{{"filter": {{"type": "logical", "logicalOperator": "not", "filters": [{}]}}}}"#,
        &cmp("eq", "1")[11..cmp("eq", "1").len() - 1]
    );
    assert_eq!(run(&not), ["b", "n5", "none", "s"]);
    // `nin` is like `ne`: twins that have the property with a value outside the list
    // (unlike `not in`, which also matches twins lacking it).
    assert_eq!(run(&cmp("nin", "[1, 5]")), ["b", "s"]);
    // Sorting: booleans < numbers < strings; missing values last in both directions.
    let sort = |order: &str| {
        format!(
            r#"{{"sort": [{{"property": {{"name": "/9/0/1", "type": "device"}}, "order": "{order}"}}]}}"#
        )
    };
    assert_eq!(run(&sort("asc")), ["b", "n1", "n5", "s", "none"]);
    assert_eq!(run(&sort("desc")), ["s", "n5", "n1", "b", "none"]);
    // count(prop) counts twins that have it; sum/avg take numbers only; a sum over no
    // numbers is null; min/max use the same order.
    let agg = query::parse(
        r#"{"aggregate": {"keys": [{"name": "status", "type": "default"}], "properties": [
        {"operator": "count", "columnName": "all"},
        {"operator": "count", "property": {"name": "/9/0/1", "type": "device"}, "columnName": "has"},
        {"operator": "sum", "property": {"name": "/9/0/1", "type": "device"}, "columnName": "sum"},
        {"operator": "avg", "property": {"name": "/9/0/1", "type": "device"}, "columnName": "avg"},
        {"operator": "min", "property": {"name": "/9/0/1", "type": "device"}, "columnName": "min"},
        {"operator": "max", "property": {"name": "/9/0/1", "type": "device"}, "columnName": "max"},
        {"operator": "sum", "property": {"name": "/9/9/9", "type": "device"}, "columnName": "nothing"}]}}"#,
    )
    .unwrap();
    let page = query::execute(&reg, &agg, &QueryOptions::default()).unwrap();
    assert_eq!(
        serde_json::to_value(&page.aggregate_result).unwrap(),
        serde_json::json!([{"status": "enabled", "all": 5, "has": 4, "sum": 6, "avg": 3.0,
            "min": true, "max": "10", "nothing": null}])
    );
}

/// Projected rows come from the registry's views without building the twin: every kind of
/// property (fields, device properties, nested service properties, tags, missing ones)
/// projects exactly as the naive evaluator projects the owned twin.
#[test]
fn projections_from_views_equal_projections_of_owned_twins() {
    let reg = fleet();
    let twins = snapshot(&reg);
    let props = [
        QueryProperty::default_field("deviceId"),
        QueryProperty::default_field("etag"),
        QueryProperty::default_field("status"),
        QueryProperty::default_field("lastActivityTime"),
        QueryProperty::device("FirmwareVersion"),
        QueryProperty::device("BatteryLevel"),
        QueryProperty::device("/9/9/9"),
        QueryProperty::service("region"),
        QueryProperty::service("nope.deeper"),
        QueryProperty::tags(),
        QueryProperty::default_field("statusReason"),
        QueryProperty::default_field("connectionState"),
        QueryProperty::device("BatteryLevel"),
        QueryProperty::default_field("isManaged"),
        QueryProperty::default_field("generationId"),
        QueryProperty::service("region"),
        QueryProperty::default_field("configuration"),
        QueryProperty::default_field("connectionStateUpdatedTime"),
    ];
    for n in 0..props.len() {
        let window: Vec<QueryProperty> = props.iter().skip(n).take(3).cloned().collect();
        let with_tags = window.iter().any(QueryProperty::is_tags);
        let expr = QueryExpression::new().project(Projection::properties(window));
        let options = QueryOptions::default();
        let page = query::execute(&reg, &expr, &options).unwrap();
        let theirs = naive::execute(&twins, &expr, &options).unwrap();
        // Written straight from the views: the same JSON (a device property keeps the
        // twin's own member order, value first, where a `Value` sorts its keys).
        let text = serde_json::to_string(&page).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::to_value(&theirs).unwrap(),
            "{expr}: {text}"
        );
        let ours = page.map_documents(|t| t.to_twin());
        assert_eq!(ours, theirs, "{expr}");
        if with_tags {
            let json = serde_json::to_value(&ours).unwrap();
            assert!(
                json.to_string().contains("building-7"),
                "tags are projected: {json}"
            );
        }
    }
}

/// A first page in id order is found chunk by chunk along the id order (not from the whole
/// fleet's filter): over a fleet registered in shuffled id order, with removals still
/// pending in the id order, every page of selective, dense and deceptive filters (an AND
/// whose estimate promises many matches and finds few, so the walk doubles its chunk
/// several times) equals the naive evaluator's.
#[test]
fn id_ordered_pages_found_chunk_by_chunk_equal_the_naive_evaluator() {
    let n = 6_000u64;
    let mut reg = Registry::new();
    // A full cycle through 0..n in a scrambled order: slots are not in id order.
    for k in 0..n {
        let i = (k * 2_357) % n;
        let mut t = Twin::new(DeviceId::new(&format!("c{i:05}")).unwrap())
            .with_device_property("BatteryLevel", (i % 3) as i64, ts(0))
            .with_device_property("MemoryFree", (i % 50) as i64, ts(0))
            .with_device_property(
                "/3303/0/5700",
                if i.is_multiple_of(2) { i as i64 } else { -1 },
                ts(0),
            );
        if i.is_multiple_of(4) {
            t = t.with_tag("even-ish");
        }
        reg.create(t).unwrap();
    }
    for i in (0..n).step_by(7) {
        reg.remove(&format!("c{i:05}")).unwrap();
    }
    reg.validate().unwrap();
    let twins = snapshot(&reg);
    let eq = |p: &str, v: i64| QueryProperty::device(p).eq(v);
    let exprs = [
        QueryExpression::new(),
        QueryExpression::new().filter(eq("BatteryLevel", 1)),
        QueryExpression::new().filter(eq("MemoryFree", 7)),
        QueryExpression::new().filter(Filter::all_of([
            QueryProperty::tags().all(["even-ish"]),
            QueryProperty::device("/3303/0/5700").gte(1_000),
        ])),
        // BatteryLevel = 0 and /3303/0/5700 = -1 both hold for half or a third of the fleet, but together only
        // for odd multiples of 3: the estimate (the smaller side) is far too hopeful.
        QueryExpression::new().filter(Filter::all_of([
            eq("BatteryLevel", 0),
            eq("/3303/0/5700", -1),
            eq("MemoryFree", 3),
        ])),
        QueryExpression::new().filter(Filter::all_of([
            eq("BatteryLevel", 1),
            eq("BatteryLevel", 2),
        ])),
    ];
    for expr in &exprs {
        for (page_size, pages) in [(1, 3), (10, 8), (100, 8), (1000, 8)] {
            for strategy in [Strategy::Auto, Strategy::Columns] {
                let mut token: Option<String> = None;
                for _ in 0..pages {
                    let options = QueryOptions {
                        page_size,
                        continuation: token.clone(),
                        strategy,
                    };
                    let ours = query::execute(&reg, expr, &options)
                        .unwrap()
                        .map_documents(|t| t.to_twin());
                    let theirs = naive::execute(&twins, expr, &options).unwrap();
                    assert_eq!(ours, theirs, "{strategy:?}, page size {page_size}: {expr}");
                    token = ours.continuation;
                    if token.is_none() {
                        break;
                    }
                }
            }
        }
    }
}
