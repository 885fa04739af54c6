//! Day 49: the job history's schema is fixed and every field holds a string (or nothing),
//! so a literal of another type (`StartTimeUtc gt 1461931200000`, `Status eq true`) is a
//! typed error, `QueryError::LiteralType`, instead of an empty result; a `sum`/`avg` over a
//! field is `QueryError::AggregateType` instead of a `null` column. `null` stays allowed
//! (a missing EndTimeUtc is a real case). Twins (an open schema) are unchanged: a literal
//! of a type no twin holds matches nothing. Before day 49 every refused query here
//! returned `Ok` (an empty page, a count of 0, a null column).

use std::sync::Mutex;
use std::time::Instant;

use twinhub::job::{
    EngineConfig, HistorySnapshot, JobEngine, JobId, JobSpec, JobType, LiveHistory,
};
use twinhub::query::{
    AggregateOperator, Aggregation, PropertyType, QueryError, QueryExpression, QueryOptions,
    QueryProperty, ScalarType, SortKey, count, execute, parse, plan,
};
use twinhub::registry::Registry;
use twinhub::twin::Twin;
use twinhub::{DeviceId, Timestamp};

mod query_text;
use query_text::{cmp, logical};

const WALL0: u64 = 1_461_931_200_000; // 2016-04-29T12:00:00.000Z

const FIELDS: [&str; 10] = [
    "JobId",
    "ParentJobId",
    "DeviceId",
    "Type",
    "Status",
    "StartTimeUtc",
    "EndTimeUtc",
    "FailureReason",
    "endTimeUtc",
    "jobType",
];

/// Two reboot jobs: `r1` over three devices (its children running), `r2` cancelled
/// (ended), so EndTimeUtc is both missing and present.
fn engine() -> JobEngine {
    let t0 = Instant::now();
    let mut e = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(WALL0));
    let reboot = || JobType::Reboot {
        wait_for_registration: false,
    };
    let ids = |ds: &[&str]| ds.iter().map(|d| DeviceId::new(d).unwrap()).collect();
    e.create(
        t0,
        JobSpec::new(JobId::new("r1").unwrap(), reboot(), ids(&["a", "b", "c"])),
    )
    .unwrap();
    e.create(
        t0,
        JobSpec::new(JobId::new("r2").unwrap(), reboot(), ids(&["d"])),
    )
    .unwrap();
    e.cancel(
        t0,
        &JobId::new("r2").unwrap(),
        twinhub::job::CancelMode::Abandon,
    )
    .unwrap();
    e
}

fn literal_type(name: &str, literal: ScalarType) -> QueryError {
    QueryError::LiteralType {
        name: name.to_owned(),
        kind: PropertyType::Default,
        holds: ScalarType::String,
        literal,
        // Origins never take part in equality.
        origin: Default::default(),
    }
}

/// Asserts that `text` is refused with `want` by every entry point: `execute` (first
/// page, pages of 1 in id order and sorted), `count`, `plan` and a `LiveHistory`.
fn refused_everywhere(
    s: &HistorySnapshot,
    live: (&LiveHistory, &Mutex<JobEngine>),
    text: &str,
    want: &QueryError,
) {
    let q = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(
        execute(s, &q, &QueryOptions::default()).err().as_ref(),
        Some(want),
        "{text}"
    );
    assert_eq!(
        execute(s, &q, &QueryOptions::page(1)).err().as_ref(),
        Some(want),
        "{text}"
    );
    if q.aggregate.is_none() {
        let sorted = q
            .clone()
            .sort(SortKey::desc(QueryProperty::default_field("StartTimeUtc")));
        assert_eq!(
            execute(s, &sorted, &QueryOptions::page(1)).err().as_ref(),
            Some(want),
            "{text} sorted"
        );
    }
    assert_eq!(count(s, &q).err().as_ref(), Some(want), "{text}");
    assert_eq!(plan(s, &q).err().as_ref(), Some(want), "{text}");
    assert_eq!(
        live.0
            .query(live.1, &q, &QueryOptions::page(1))
            .err()
            .as_ref(),
        Some(want),
        "{text}"
    );
}

// Promise: a number or boolean literal compared with any job history field, under every
// operator, is QueryError::LiteralType naming the field (as written), what it holds and the
// literal's type. Failed before day 49 (an empty page, or every record for `ne`).
#[test]
fn every_operator_refuses_a_number_or_boolean_on_every_field() {
    let e = engine();
    let s = e.history_snapshot();
    let jobs = Mutex::new(engine());
    let live = LiveHistory::new();
    let literals = [
        ("1461931200000", ScalarType::Number),
        ("18446744073709551615", ScalarType::Number),
        ("-9223372036854775808", ScalarType::Number),
        ("1.5", ScalarType::Number),
        ("0", ScalarType::Number),
        ("true", ScalarType::Bool),
        ("false", ScalarType::Bool),
    ];
    for name in FIELDS {
        for (lit, ty) in literals {
            for op in ["eq", "ne", "gt", "gte", "lt", "lte"] {
                let text = format!(r#"{{"filter": {}}}"#, cmp(op, name, lit));
                refused_everywhere(&s, (&live, &jobs), &text, &literal_type(name, ty));
            }
            for op in ["in", "nin"] {
                // Alone, after strings (time literals included), or before them.
                for list in [
                    format!("[{lit}]"),
                    format!(r#"["failed", "2016-04-29T12:00:00Z", {lit}]"#),
                    format!(r#"[{lit}, "failed"]"#),
                ] {
                    let text = format!(r#"{{"filter": {}}}"#, cmp(op, name, &list));
                    refused_everywhere(&s, (&live, &jobs), &text, &literal_type(name, ty));
                }
            }
        }
    }
}

// Promise: the refusal holds at any depth of and/or/not, whatever the other branches
// (ones that match, ones that are empty, contradictions the planner would fold away), and
// names the first offending comparison in the text's order. Failed before day 49.
#[test]
fn nested_comparisons_are_refused_at_any_depth() {
    let e = engine();
    let s = e.history_snapshot();
    let jobs = Mutex::new(engine());
    let live = LiveHistory::new();
    let bad = cmp("gt", "StartTimeUtc", "1461931200000");
    let ok = cmp("eq", "Status", r#""running""#);
    let mut texts = vec![
        logical("not", std::slice::from_ref(&bad)),
        logical("and", &[ok.clone(), bad.clone()]),
        logical("or", &[ok.clone(), bad.clone()]),
        // `x and not x` and `or` with everything: the planner folds these to Empty/All.
        logical(
            "and",
            &[
                ok.clone(),
                logical("not", std::slice::from_ref(&ok)),
                bad.clone(),
            ],
        ),
        logical(
            "or",
            &[
                cmp("ne", "JobId", "null"),
                cmp("eq", "JobId", "null"),
                bad.clone(),
            ],
        ),
    ];
    // Thirty levels of alternating not/and/or around the bad comparison.
    let mut deep = bad.clone();
    for i in 0..30 {
        deep = match i % 3 {
            0 => logical("not", &[deep]),
            1 => logical("and", &[ok.clone(), deep]),
            _ => logical("or", &[deep, ok.clone()]),
        };
    }
    texts.push(deep);
    for f in &texts {
        let text = format!(r#"{{"filter": {f}}}"#);
        let want = literal_type("StartTimeUtc", ScalarType::Number);
        refused_everywhere(&s, (&live, &jobs), &text, &want);
    }
    // Two mistakes: the first in the text's order is named.
    let text = format!(
        r#"{{"filter": {}}}"#,
        logical(
            "or",
            &[
                logical("not", &[cmp("eq", "Status", "true")]),
                cmp("in", "DeviceId", "[1]"),
            ]
        )
    );
    refused_everywhere(
        &s,
        (&live, &jobs),
        &text,
        &literal_type("Status", ScalarType::Bool),
    );
}

// Promise: the error says where the literal was written (the comparison's value) and its
// message names the property, what it holds and the literal's type.
#[test]
fn the_error_points_at_the_value_and_says_what_is_wrong() {
    let s = engine().history_snapshot();
    let text = format!(
        r#"{{"filter": {}}}"#,
        logical(
            "and",
            &[
                cmp("eq", "Status", r#""running""#),
                cmp("gt", "StartTimeUtc", "1461931200000")
            ]
        )
    );
    let q = parse(&text).unwrap();
    let err = execute(&s, &q, &QueryOptions::default()).unwrap_err();
    let QueryError::LiteralType { origin, .. } = &err else {
        panic!("{err:?}");
    };
    let span = origin.0.expect("a parsed query has origins");
    assert_eq!(&text[span.start..span.end], "1461931200000");
    assert_eq!(
        err.to_string(),
        format!(
            r#"property "StartTimeUtc" (type "default") holds string values only; a number literal at bytes {}..{} never matches it"#,
            span.start, span.end
        )
    );
    // In a list, the origin is the whole list's.
    let text = format!(
        r#"{{"filter": {}}}"#,
        cmp("nin", "status", r#"["failed", true]"#)
    );
    let err = count(&s, &parse(&text).unwrap()).unwrap_err();
    let QueryError::LiteralType { origin, .. } = &err else {
        panic!("{err:?}");
    };
    let span = origin.0.unwrap();
    assert_eq!(&text[span.start..span.end], r#"["failed", true]"#);
    assert!(
        err.to_string().starts_with(
            r#"property "status" (type "default") holds string values only; a boolean literal at bytes"#
        ),
        "{err}"
    );
    // A built expression (no origin) is refused the same way.
    let built = QueryExpression::new().filter(QueryProperty::default_field("EndTimeUtc").lte(5));
    let err = count(&s, &built).unwrap_err();
    assert_eq!(err, literal_type("EndTimeUtc", ScalarType::Number));
    assert_eq!(
        err.to_string(),
        r#"property "EndTimeUtc" (type "default") holds string values only; a number literal never matches it"#
    );
}

// Promise (task 2): UnknownProperty says which clause names the property and, for a parsed
// query, where the property object was written; a built expression says the clause only.
// Failed before day 49 (the error had the name and type only).
#[test]
fn an_unknown_property_names_its_clause_and_position() {
    let s = engine().history_snapshot();
    let p = r#"{"name": "Statuss", "type": "default"}"#;
    let k = r#"{"name": "Status", "type": "default"}"#;
    let cases = [
        (
            format!(r#"{{"filter": {}}}"#, cmp("eq", "Statuss", r#""x""#)),
            "filter",
        ),
        (
            format!(r#"{{"project": {{"properties": [{k}, {p}]}}}}"#),
            "projection",
        ),
        (format!(r#"{{"sort": [{{"property": {p}}}]}}"#), "sort"),
        (
            format!(
                r#"{{"aggregate": {{"keys": [{k}, {p}],
                "properties": [{{"operator": "count", "columnName": "n"}}]}}}}"#
            ),
            "aggregate key",
        ),
        (
            format!(
                r#"{{"aggregate": {{"keys": [{k}],
                "properties": [{{"operator": "min", "property": {p}, "columnName": "m"}}]}}}}"#
            ),
            "aggregate column",
        ),
    ];
    for (text, want_place) in cases {
        let err = execute(&s, &parse(&text).unwrap(), &QueryOptions::default()).unwrap_err();
        let QueryError::UnknownProperty { place, origin, .. } = &err else {
            panic!("{text}: {err:?}");
        };
        assert_eq!(*place, want_place, "{text}");
        let span = origin.0.expect("a parsed query has origins");
        assert_eq!(
            &text[span.start..span.end].replace(char::is_whitespace, ""),
            &p.replace(char::is_whitespace, ""),
            "{text}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                r#"unknown property "Statuss" (type "default") for this source ({want_place} at bytes {}..{})"#,
                span.start, span.end
            )
        );
    }
    let built = QueryExpression::new().sort(SortKey::asc(QueryProperty::device("Status")));
    assert_eq!(
        count(&s, &built).unwrap_err().to_string(),
        r#"unknown property "Status" (type "device") for this source (sort)"#
    );
}

// Promise: `null` is no type: `eq null`/`ne null` are accepted on every field (a missing
// EndTimeUtc is an unfinished job), also beside refused-type checks' neighbours, and
// string literals (times or not) compare as before.
#[test]
fn null_and_string_literals_are_still_accepted() {
    let e = engine();
    let s = e.history_snapshot();
    let ids = |text: &str| -> Vec<String> {
        let q = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let page = execute(&s, &q, &QueryOptions::default()).unwrap();
        let n = count(&s, &q).unwrap();
        let v = serde_json::to_value(&page).unwrap();
        let ids: Vec<String> = v["Result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["jobId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids.len() as u64, n, "{text}");
        ids
    };
    // r1's three children run, r2 and its child are cancelled (ended).
    let unfinished = ids(&format!(
        r#"{{"filter": {}}}"#,
        cmp("eq", "EndTimeUtc", "null")
    ));
    let finished = ids(&format!(
        r#"{{"filter": {}}}"#,
        cmp("ne", "EndTimeUtc", "null")
    ));
    assert!(!unfinished.is_empty() && !finished.is_empty());
    assert_eq!(unfinished.len() + finished.len(), s.len());
    for name in FIELDS {
        for op in ["eq", "ne"] {
            ids(&format!(r#"{{"filter": {}}}"#, cmp(op, name, "null")));
        }
        for op in ["eq", "ne", "gt", "gte", "lt", "lte"] {
            ids(&format!(r#"{{"filter": {}}}"#, cmp(op, name, r#""2016""#)));
        }
        ids(&format!(
            r#"{{"filter": {}}}"#,
            cmp("nin", name, r#"["x", "2016-04-29T12:00:00Z"]"#)
        ));
    }
    let text = format!(
        r#"{{"filter": {}}}"#,
        logical(
            "and",
            &[
                cmp("eq", "EndTimeUtc", "null"),
                logical(
                    "not",
                    &[cmp("lt", "StartTimeUtc", r#""2016-04-29T12:00:00Z""#)]
                ),
            ]
        )
    );
    assert_eq!(ids(&text), unfinished);
}

// Promise: aggregates and sorts take no literals; sorting, grouping, count, min and max
// work on any field, while `sum`/`avg` over a field (strings only: always null) is
// QueryError::AggregateType naming the column, the operator and the field. Failed before
// day 49 (a null column).
#[test]
fn sum_and_avg_over_a_field_are_refused_the_rest_of_an_aggregate_is_not() {
    let e = engine();
    let s = e.history_snapshot();
    let jobs = Mutex::new(engine());
    let live = LiveHistory::new();
    for name in FIELDS {
        let p = QueryProperty::default_field(name);
        let fine = QueryExpression::new().aggregate(
            Aggregation::by([QueryProperty::default_field(if name == "Status" {
                "JobId"
            } else {
                "Status"
            })])
            .column(AggregateOperator::Count, None, "n")
            .column(AggregateOperator::Count, Some(p.clone()), "c")
            .column(AggregateOperator::Min, Some(p.clone()), "lo")
            .column(AggregateOperator::Max, Some(p.clone()), "hi"),
        );
        execute(&s, &fine, &QueryOptions::default()).unwrap();
        let sorted = QueryExpression::new().sort(SortKey::asc(p.clone()));
        execute(&s, &sorted, &QueryOptions::page(1)).unwrap();
        for op in [AggregateOperator::Sum, AggregateOperator::Avg] {
            let q = QueryExpression::new().aggregate(
                Aggregation::by([QueryProperty::default_field("ParentJobId")])
                    .column(AggregateOperator::Count, None, "n")
                    .column(op, Some(p.clone()), "bad"),
            );
            let want = QueryError::AggregateType {
                column: "bad".into(),
                operator: op,
                name: name.into(),
                kind: PropertyType::Default,
                holds: ScalarType::String,
            };
            refused_everywhere(&s, (&live, &jobs), &q.to_string(), &want);
        }
    }
    let q = parse(
        r#"{"aggregate": {"keys": [{"name": "Status", "type": "default"}],
            "properties": [{"operator": "avg", "property": {"name": "StartTimeUtc",
            "type": "default"}, "columnName": "meanStart"}]}}"#,
    )
    .unwrap();
    assert_eq!(
        execute(&s, &q, &QueryOptions::default())
            .unwrap_err()
            .to_string(),
        r#"aggregate column "meanStart": avg takes numbers, but property "StartTimeUtc" (type "default") holds string values only"#
    );
}

// Promise: a misspelt property is still UnknownProperty, checked before the literal's type
// of the same comparison.
#[test]
fn an_unknown_property_is_named_before_a_literal_type() {
    let s = engine().history_snapshot();
    let q = parse(&format!(r#"{{"filter": {}}}"#, cmp("gt", "StartTime", "5"))).unwrap();
    assert_eq!(
        count(&s, &q).err(),
        Some(QueryError::UnknownProperty {
            name: "StartTime".into(),
            kind: PropertyType::Default,
            place: "filter",
            origin: Default::default(),
        })
    );
}

// Promise: twins (an open schema) are unchanged: a literal of a type no twin holds parses,
// runs and matches nothing (`ne`/`nin` every twin having the property), and a sum over
// strings is null.
#[test]
fn twin_queries_with_literals_of_another_type_still_match_nothing() {
    let mut reg = Registry::new();
    for (id, fw) in [("a", "1.0"), ("b", "2.0"), ("c", "5")] {
        reg.create(Twin::new(DeviceId::new(id).unwrap()).with_device_property(
            "FirmwareVersion",
            fw,
            Timestamp::from_millis(0),
        ))
        .unwrap();
    }
    reg.create(Twin::new(DeviceId::new("d").unwrap())).unwrap();
    let ids = |text: &str| -> Vec<String> {
        let q = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let page = execute(&reg, &q, &QueryOptions::page(1000)).unwrap();
        assert_eq!(count(&reg, &q).unwrap(), page.result.len() as u64, "{text}");
        let v = serde_json::to_value(&page).unwrap();
        v["Result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["deviceId"].as_str().unwrap().to_owned())
            .collect()
    };
    let fw = |op: &str, v: &str| {
        format!(
            r#"{{"filter": {{"type": "comparison", "comparisonOperator": "{op}",
                "property": {{"name": "FirmwareVersion", "type": "device"}}, "value": {v}}}}}"#
        )
    };
    for op in ["eq", "gt", "gte", "lt", "lte"] {
        assert!(ids(&fw(op, "5")).is_empty(), "{op} 5");
        assert!(ids(&fw(op, "true")).is_empty(), "{op} true");
    }
    assert_eq!(ids(&fw("ne", "5")), ["a", "b", "c"]);
    assert_eq!(ids(&fw("in", r#"["5", 5, true]"#)), ["c"]);
    assert_eq!(ids(&fw("nin", r#"[5, "1.0"]"#)), ["b", "c"]);
    let not = r#"{"filter": {"type": "logical", "logicalOperator": "not", "filters": [
        {"type": "comparison", "comparisonOperator": "gt",
         "property": {"name": "FirmwareVersion", "type": "device"}, "value": 5}]}}"#;
    assert_eq!(ids(not), ["a", "b", "c", "d"]);
    let q = QueryExpression::new().aggregate(
        Aggregation::by([QueryProperty::device("FirmwareVersion")]).column(
            AggregateOperator::Sum,
            Some(QueryProperty::device("FirmwareVersion")),
            "s",
        ),
    );
    let r = execute(&reg, &q, &QueryOptions::default()).unwrap();
    assert!(
        r.aggregate_result.iter().all(|row| row.0["s"].is_none()),
        "{r:?}"
    );
}
