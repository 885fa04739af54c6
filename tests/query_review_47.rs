//! Hostile review of the query engine (`src/query/`, `src/registry/`) against issue #19,
//! day 47: numbers at the ends of the exact range through every write path and every
//! index, tampered continuation tokens, deep expressions on a small stack, tags with odd
//! characters, projections of missing, nested and repeated paths, and every bound at and
//! past its count. Each test states the promise it checks; all of them held on the code
//! as reviewed (the differential proptest in `tests/query_exec.rs` gained the generators
//! they suggested: extreme numbers, rewrites in another written form, deep nesting,
//! projected tags).

#![cfg(feature = "fuzzing")]

use base64::Engine;
use twinhub::query::{
    self, AggregateOperator, Aggregation, Filter, InvalidExpression, Literal, ParseErrorKind,
    Projection, QueryError, QueryExpression, QueryOptions, QueryProperty, SortKey, Strategy,
    TagQuery, naive,
};
use twinhub::registry::Registry;
use twinhub::twin::{Scalar, ServiceValue, Twin};
use twinhub::{DeviceId, Timestamp};

const STRATEGIES: [Strategy; 4] = [
    Strategy::Auto,
    Strategy::Bitmaps,
    Strategy::Scans,
    Strategy::Columns,
];

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// Every page of `expr` (following each side's tokens from `first`) under every strategy
/// equals the naive evaluator's page, and errors are the same error; returns the pages of
/// the first strategy as JSON.
fn same_everywhere(
    reg: &Registry,
    expr: &QueryExpression,
    page_size: usize,
    first: Option<String>,
) -> Vec<serde_json::Value> {
    let twins: Vec<Twin> = reg.iter().map(|t| t.to_twin()).collect();
    let mut out = Vec::new();
    for strategy in STRATEGIES {
        let (mut ours_token, mut naive_token) = (first.clone(), first.clone());
        let mut pages = Vec::new();
        for _ in 0..100 {
            let options = |continuation: &Option<String>| QueryOptions {
                page_size,
                continuation: continuation.clone(),
                strategy,
            };
            let ours = query::execute(reg, expr, &options(&ours_token))
                .map(|p| p.map_documents(|t| t.to_twin()));
            let theirs = naive::execute(&twins, expr, &options(&naive_token));
            match (ours, theirs) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(ours.result, theirs.result, "{strategy:?} {expr}");
                    assert_eq!(
                        ours.aggregate_result, theirs.aggregate_result,
                        "{strategy:?} {expr}"
                    );
                    pages.push(serde_json::to_value(&ours).unwrap());
                    assert_eq!(ours.continuation.is_some(), theirs.continuation.is_some());
                    (ours_token, naive_token) = (ours.continuation, theirs.continuation);
                    if ours_token.is_none() {
                        break;
                    }
                }
                (Err(ours), Err(theirs)) => {
                    assert_eq!(ours, theirs, "{strategy:?} {expr}");
                    pages.push(serde_json::json!(ours.to_string()));
                    break;
                }
                (ours, theirs) => panic!("{strategy:?} {expr}: {ours:?} against {theirs:?}"),
            }
        }
        if out.is_empty() {
            out = pages;
        }
    }
    out
}

fn page_ids(page: &serde_json::Value) -> Vec<String> {
    page["Result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["deviceId"].as_str().unwrap().to_owned())
        .collect()
}

/// One twin a value, the same value as a device property and a service property; `m` has
/// neither.
fn numbers_fleet() -> Registry {
    let mut reg = Registry::new();
    let values: [(&str, Scalar); 12] = [
        ("a", Scalar::from(1)),
        ("b", Scalar::from(1.0)),
        ("c", Scalar::from(1)),
        ("d", Scalar::from(i64::MIN)),
        ("e", Scalar::from(i64::MIN)),
        ("f", Scalar::from(u64::MAX)),
        ("g", Scalar::from(-0.0)),
        ("h", Scalar::from(1e300)),
        ("i", Scalar::from(9_007_199_254_740_993i64)),
        ("j", Scalar::from(9_007_199_254_740_992.0)),
        ("k", Scalar::from("1")),
        ("l", Scalar::from(true)),
    ];
    for (n, v) in values {
        reg.create(
            Twin::new(id(n))
                .with_device_property("/9/0/1", v.clone(), ts(0))
                .with_service_property("s", v),
        )
        .unwrap();
    }
    reg.create(Twin::new(id("m"))).unwrap();
    reg
}

/// Module docs, "Numbers", "Types", "Sort", "Aggregates": integers from `i64::MIN` to
/// `u64::MAX` are exact, `1 eq 1.0`, the order is `false < true <` numbers `<` strings,
/// missing values last both ways, an integer sum is exact and beyond the `u64` range the
/// nearest float. Checked with an integer and its equal float in different twins, at the
/// ends of the exact range, on a device and a service property, paging one row at a time
/// (so every row is resumed from a token), under every strategy against the naive
/// evaluator.
#[test]
fn integers_and_equal_floats_sort_filter_and_group_alike_on_every_path() {
    let reg = numbers_fleet();
    for p in [QueryProperty::device("/9/0/1"), QueryProperty::service("s")] {
        let order = |key: SortKey| -> Vec<String> {
            let pages = same_everywhere(&reg, &QueryExpression::new().sort(key), 1, None);
            pages.iter().flat_map(page_ids).collect()
        };
        assert_eq!(
            order(SortKey::asc(p.clone())).concat(),
            "ldegabcjifhkm",
            "{p}"
        );
        assert_eq!(
            order(SortKey::desc(p.clone())).concat(),
            "khfijabcgdelm",
            "{p}"
        );
        let matching = |f: Filter| -> String {
            let pages = same_everywhere(&reg, &QueryExpression::new().filter(f), 2, None);
            pages.iter().flat_map(page_ids).collect::<Vec<_>>().concat()
        };
        assert_eq!(matching(p.clone().eq(1.0)), "abc");
        assert_eq!(matching(p.clone().eq(1)), "abc");
        assert_eq!(matching(p.clone().is_in([Literal::Number(1.0)])), "abc");
        assert_eq!(matching(p.clone().eq(0)), "g");
        assert_eq!(matching(p.clone().eq(i64::MIN)), "de");
        assert_eq!(matching(p.clone().lt(-9.3e18)), "");
        assert_eq!(matching(p.clone().lte(-9_223_372_036_854_775_808.0)), "de");
        assert_eq!(matching(p.clone().gt(u64::MAX)), "h");
        assert_eq!(matching(p.clone().eq(9_007_199_254_740_992i64)), "j");
        assert_eq!(matching(p.clone().ne(1)), "defghijkl");
        assert_eq!(matching(p.clone().not_in([1, 0])), "defhijkl");
        assert_eq!(matching(!p.clone().eq(1)), "defghijklm");

        let by_value = QueryExpression::new().aggregate(
            Aggregation::by([p.clone()])
                .column(AggregateOperator::Count, None, "n")
                .column(AggregateOperator::Sum, Some(p.clone()), "sum"),
        );
        let rows = &same_everywhere(&reg, &by_value, 10, None)[0]["AggregateResult"];
        // 1, 1.0 and 1 are one group.
        let ones: Vec<&serde_json::Value> = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["n"] == 3)
            .collect();
        assert_eq!(ones.len(), 1, "{rows}");
        assert_eq!(ones[0]["sum"], 3);
        let mins = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[&p.name] == serde_json::json!(i64::MIN))
            .unwrap();
        // 2 * i64::MIN is below the i64 range: the nearest float, not a wrap or null.
        assert_eq!(mins["sum"].as_f64(), Some(-18_446_744_073_709_551_616.0));
        let whole = QueryExpression::new().aggregate(
            Aggregation::by([QueryProperty::default_field("status")])
                .column(AggregateOperator::Avg, Some(p.clone()), "avg")
                .column(AggregateOperator::Min, Some(p.clone()), "min")
                .column(AggregateOperator::Max, Some(p.clone()), "max"),
        );
        let row = &same_everywhere(&reg, &whole, 10, None)[0]["AggregateResult"][0];
        assert_eq!(row["min"], true);
        assert_eq!(row["max"], "1");
        assert_eq!(row["avg"].as_f64(), Some(1e299), "{row}");
    }
}

/// Issue #19's paths: an extreme number created with a twin, written after (device report,
/// service-property write), imported from NDJSON and restored from the store reads back
/// as written (`-0.0` as `0.0`, as `Number` documents) and is found by an equality of the
/// same value.
#[test]
fn extreme_numbers_written_through_every_path_read_back_and_match() {
    use twinhub::store::{Store, StoreConfig};
    let values: [(&str, Scalar, &str); 9] = [
        (
            "9007199254740993",
            Scalar::from(9_007_199_254_740_993i64),
            "9007199254740993",
        ),
        (
            "9007199254740992",
            Scalar::from(9_007_199_254_740_992i64),
            "9007199254740992",
        ),
        (
            "18446744073709551615",
            Scalar::from(u64::MAX),
            "18446744073709551615",
        ),
        (
            "-9223372036854775808",
            Scalar::from(i64::MIN),
            "-9223372036854775808",
        ),
        ("1e300", Scalar::from(1e300), "1e+300"),
        ("-0.0", Scalar::from(-0.0), "0.0"),
        ("1.0", Scalar::from(1.0), "1.0"),
        ("1", Scalar::from(1), "1"),
        (
            "9223372036854775808.0",
            Scalar::from(9_223_372_036_854_775_808.0),
            "9.223372036854776e+18",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let mut lines = String::new();
    for (n, (text, v, _)) in values.iter().enumerate() {
        reg.create(
            Twin::new(id(&format!("c{n}")))
                .with_device_property("/9/0/1", v.clone(), ts(0))
                .with_service_property("s", v.clone()),
        )
        .unwrap();
        let w = format!("w{n}");
        reg.create(Twin::new(id(&w))).unwrap();
        reg.report_device_property(&w, "/9/0/1", v.clone(), ts(0))
            .unwrap();
        reg.set_service_property(&w, "s", Some(ServiceValue::Scalar(v.clone())), None)
            .unwrap();
        lines.push_str(
            &format!(
                r#"{{"deviceId": "n{n}", "deviceProperties": {{"/9/0/1": {{"value": {text},
            "lastUpdatedTime": "1970-01-01T00:00:00.000Z"}}}},
            "serviceProperties": {{"properties": {{"s": {text}}}, "tags": []}}}}"#
            )
            .replace('\n', " "),
        );
        lines.push('\n');
    }
    reg.import_ndjson(lines.as_bytes()).unwrap();
    store.commit(&reg).unwrap();
    let before: Vec<String> = reg
        .iter()
        .map(|t| serde_json::to_string(&t).unwrap())
        .collect();
    drop((store, reg));
    let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let after: Vec<String> = reg
        .iter()
        .map(|t| serde_json::to_string(&t).unwrap())
        .collect();
    assert_eq!(before, after);
    for (n, (_, v, shown)) in values.iter().enumerate() {
        for path in ["c", "w", "n"] {
            let twin = serde_json::to_value(reg.get(&format!("{path}{n}")).unwrap()).unwrap();
            assert_eq!(
                twin["deviceProperties"]["/9/0/1"]["value"].to_string(),
                *shown
            );
            assert_eq!(
                twin["serviceProperties"]["properties"]["s"].to_string(),
                *shown
            );
        }
        let number = v.as_number().unwrap();
        let literal = match (number.is_integer(), number.as_i64(), number.as_u64()) {
            (true, Some(i), _) => Literal::Integer(i),
            (true, None, Some(u)) => Literal::Unsigned(u),
            _ => Literal::Number(number.as_f64()),
        };
        for p in [QueryProperty::device("/9/0/1"), QueryProperty::service("s")] {
            let e = QueryExpression::new().filter(p.eq(literal.clone()));
            let found = page_ids(&same_everywhere(&reg, &e, 100, None)[0]);
            let expected: Vec<String> = if *shown == "1.0" || *shown == "1" {
                ["c6", "c7", "n6", "n7", "w6", "w7"]
                    .map(String::from)
                    .to_vec()
            } else {
                ["c", "n", "w"].map(|p| format!("{p}{n}")).to_vec()
            };
            assert_eq!(found, expected, "{e}");
        }
    }
}

fn tamper(token: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut v: serde_json::Value = serde_json::from_slice(&engine.decode(token).unwrap()).unwrap();
    f(&mut v);
    engine.encode(v.to_string())
}

/// Result docs: a token is checked (`BadContinuation`, `ContinuationMismatch`). A token
/// is not signed, so a hand-edited one that still decodes names some position: the page
/// after it is exactly the naive evaluator's page after that position (a sort value of
/// another type, `null`, an id that does not exist or disagrees with the value), under
/// every strategy; anything else is a typed error, never a panic.
#[test]
fn tampered_tokens_resume_where_they_say_or_fail_typed() {
    let reg = numbers_fleet();
    for e in [
        QueryExpression::new().sort(SortKey::asc(QueryProperty::device("/9/0/1"))),
        QueryExpression::new().sort(SortKey::desc(QueryProperty::service("s"))),
        QueryExpression::new().sort(SortKey::desc(QueryProperty::default_field("deviceId"))),
        QueryExpression::new(),
        QueryExpression::new().filter(QueryProperty::device("/9/0/1").exists()),
    ] {
        let page = query::execute(&reg, &e, &QueryOptions::page(2)).unwrap();
        let token = page.continuation.unwrap();
        let mut edited = vec![
            tamper(&token, |v| v[2] = "zzz".into()),
            tamper(&token, |v| v[2] = "".into()),
            tamper(&token, |v| v[2] = "\u{10FFFF}".into()),
        ];
        if !e.sort.is_empty() {
            for key in [
                serde_json::json!(null),
                serde_json::json!("1"),
                serde_json::json!(true),
                serde_json::json!(1.5),
                serde_json::json!(u64::MAX),
                serde_json::json!(i64::MIN),
                serde_json::json!(1e308),
            ] {
                edited.push(tamper(&token, |v| v[1][0] = key));
            }
        }
        for t in edited {
            let pages = same_everywhere(&reg, &e, 3, Some(t));
            assert!(!pages.is_empty());
        }
        let bad = [
            (
                tamper(&token, |v| v[1] = serde_json::json!([{"a": 1}])),
                QueryError::BadContinuation,
            ),
            (
                tamper(&token, |v| v[1] = serde_json::json!([[1]])),
                QueryError::BadContinuation,
            ),
            (
                tamper(&token, |v| v[0] = serde_json::json!(1)),
                QueryError::BadContinuation,
            ),
            (
                tamper(&token, |v| v[0] = serde_json::json!("99")),
                QueryError::ContinuationMismatch,
            ),
            (
                tamper(&token, |v| *v = serde_json::json!({})),
                QueryError::BadContinuation,
            ),
            (
                tamper(&token, |v| v[1] = serde_json::json!([1, 2])),
                QueryError::ContinuationMismatch,
            ),
            (
                tamper(&token, |v| v.as_array_mut().unwrap().push(1.into())),
                QueryError::BadContinuation,
            ),
            (
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("[\"1\", [1e999], \"a\"]"),
                QueryError::BadContinuation,
            ),
            (format!("{token}="), QueryError::BadContinuation),
            (format!("{token} "), QueryError::BadContinuation),
        ];
        for (t, expected) in bad {
            for strategy in STRATEGIES {
                let options = QueryOptions {
                    strategy,
                    ..QueryOptions::page(3).after(t.clone())
                };
                assert_eq!(
                    query::execute(&reg, &e, &options).unwrap_err(),
                    expected,
                    "{e}"
                );
            }
        }
    }
}

/// `depth` logicals (cycling `not`, `and`, `or`) around one comparison, as text.
fn nested(depth: usize) -> String {
    let mut s = String::new();
    for i in 0..depth {
        let op = ["not", "and", "or"][i % 3];
        s.push_str(&format!(
            r#"{{"type": "logical", "logicalOperator": "{op}", "filters": ["#
        ));
    }
    s.push_str(r#"{"type": "comparison", "comparisonOperator": "eq", "property": {"name": "a", "type": "service"}, "value": 1}"#);
    s.push_str(&"]}".repeat(depth));
    format!(r#"{{"filter": {s}}}"#)
}

/// `MAX_QUERY_DEPTH`'s promise ("parsing, dropping, printing, comparing and running a
/// parsed expression stay within a 2 MiB thread stack") with a quarter of that: the
/// deepest parse any limits allow goes through parse, Display, Debug, clone, ==, serde
/// and drop; the deepest that runs (the default 32) through execute under every strategy,
/// count, matching_slots and the naive evaluator. (The test profile needs 256 KiB; 128
/// KiB overflows.)
#[test]
fn the_deepest_expressions_run_every_operation_on_a_512_kib_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(512 << 10)
        .spawn(|| {
            use twinhub::query::{MAX_QUERY_DEPTH, QueryLimits, parse_with_limits};
            let limits = QueryLimits {
                max_depth: usize::MAX,
                max_filters: usize::MAX,
                max_input_bytes: usize::MAX,
                ..QueryLimits::DEFAULT
            };
            let expr = parse_with_limits(&nested(MAX_QUERY_DEPTH - 1), &limits).unwrap();
            let copy = expr.clone();
            assert!(copy == expr);
            assert!(format!("{copy:?}").len() > MAX_QUERY_DEPTH * 50);
            let json = serde_json::to_string(&copy).unwrap();
            assert_eq!(parse_with_limits(&json, &limits).unwrap(), expr);
            drop(copy);
            assert!(matches!(
                parse_with_limits(&nested(5_000), &limits).unwrap_err().kind,
                ParseErrorKind::Invalid(InvalidExpression::TooDeep { max: 128 })
            ));
            let mut reg = Registry::new();
            reg.create(Twin::new(id("d")).with_service_property("a", 1))
                .unwrap();
            reg.create(Twin::new(id("e")).with_service_property("a", 2))
                .unwrap();
            assert_eq!(
                query::count(&reg, &expr).unwrap_err(),
                QueryError::Invalid(InvalidExpression::TooDeep { max: 32 })
            );
            let within = query::parse(&nested(31)).unwrap();
            // 11 `not`s around `a eq 1`: `e`.
            assert_eq!(query::count(&reg, &within).unwrap(), 1);
            assert_eq!(query::matching_slots(&reg, &within).unwrap().len(), 1);
            let pages = same_everywhere(&reg, &within, 1, None);
            assert_eq!(page_ids(&pages[0]), ["e"]);
        })
        .unwrap();
    handle.join().expect("no stack overflow on 512 KiB");
}

/// Tags are any UTF-8 without controls or commas (`validate_tag`): each odd one is found by
/// `all` written with JSON escapes and by a tag query. Projections of nested, missing,
/// repeated and aliased paths (`/3/0/9` is `BatteryLevel`), of tags twice, of names with
/// empty segments, written straight from the views, equal the naive evaluator's projection
/// of the owned twin, sorted by a nested member and by an object (no scalar: last).
#[test]
fn odd_tags_and_odd_projections_agree_with_the_naive_evaluator() {
    let mut reg = Registry::new();
    let odd = [
        "tags",
        "a b",
        "q\"uote",
        "back\\slash",
        "\u{e9}",
        "\u{1F600}",
        "x/y",
        "*",
        "%2C",
        "null",
        "\u{2028}",
    ];
    for (i, tag) in odd.iter().enumerate() {
        let mut t = Twin::new(id(&format!("t{i:02}")))
            .with_tag(*tag)
            .with_tag("every")
            .with_device_property("BatteryLevel", (i % 4) as i64, ts(0));
        if i % 2 == 0 {
            let mut inner = std::collections::BTreeMap::new();
            inner.insert("z".to_owned(), ServiceValue::from((i % 3) as i64));
            let mut cfg = std::collections::BTreeMap::new();
            cfg.insert("mode".to_owned(), ServiceValue::from("eco"));
            cfg.insert("deep".to_owned(), ServiceValue::Object(inner));
            t = t.with_service_property("cfg", ServiceValue::Object(cfg));
        }
        reg.create(t).unwrap();
    }
    for (i, tag) in odd.iter().enumerate() {
        let text = format!(
            r#"{{"filter": {{"type": "comparison", "comparisonOperator": "all",
            "property": {{"name": "tags", "type": "default"}},
            "value": [{}, "every"]}}}}"#,
            serde_json::to_string(tag)
                .unwrap()
                .replace('\u{2028}', "\\u2028")
        );
        let e = query::parse(&text).unwrap();
        assert_eq!(
            page_ids(&same_everywhere(&reg, &e, 5, None)[0]),
            [format!("t{i:02}")]
        );
        let page = query::tag_query(
            &reg,
            &TagQuery {
                tags: vec![tag.to_string(), "every".into()],
                top: 5,
            },
        )
        .unwrap();
        assert_eq!(page.result.len(), 1, "{tag}");
    }
    let props = [
        QueryProperty::service("cfg.mode"),
        QueryProperty::service("cfg"),
        QueryProperty::service("cfg.deep.z"),
        QueryProperty::service("cfg.deep"),
        QueryProperty::service("cfg.mode.x"),
        QueryProperty::service("cfg.mode"),
        QueryProperty::tags(),
        QueryProperty::tags(),
        QueryProperty::device("/3/0/9"),
        QueryProperty::device("BatteryLevel"),
        QueryProperty::custom("/3/0/9"),
        QueryProperty::default_field("deviceId"),
        QueryProperty::default_field("nope"),
        QueryProperty::service("cfg."),
        QueryProperty::service(".cfg"),
        QueryProperty::service("cfg..mode"),
    ];
    let twins: Vec<Twin> = reg.iter().map(|t| t.to_twin()).collect();
    for n in 0..props.len() {
        let projection = || Projection::properties(props[n..].iter().cloned());
        let e = QueryExpression::new().project(projection());
        let ours = query::execute(&reg, &e, &QueryOptions::default()).unwrap();
        let text = serde_json::to_string(&ours).unwrap();
        let theirs = naive::execute(&twins, &e, &QueryOptions::default()).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            serde_json::to_value(&theirs).unwrap(),
            "{e}"
        );
        if n == 0 {
            assert!(text.contains(r#""cfg.deep.z":0"#) && text.contains(r#""cfg":{"#));
        }
        for key in [
            SortKey::asc(QueryProperty::service("cfg.deep.z")),
            SortKey::desc(QueryProperty::service("cfg")),
        ] {
            let sorted = QueryExpression::new().project(projection()).sort(key);
            assert_eq!(same_everywhere(&reg, &sorted, 3, None).len(), 4);
        }
    }
}

/// `QueryLimits`: "every bound is a count": each one holds exactly at its count and is a
/// typed error one past it; the same for the page size, a tag query's `top`, and the
/// text's length in bytes.
#[test]
fn every_bound_holds_at_its_count_and_fails_typed_past_it() {
    use twinhub::query::{MAX_PAGE_SIZE, QueryLimits};
    let l = QueryLimits::DEFAULT;
    let cmp = |i: usize| QueryProperty::service(format!("p{i}")).eq(i as i64);
    let too_many = |what: &'static str, max: usize| Err(InvalidExpression::TooMany { what, max });
    // Depth: a lone comparison is 1.
    let deep = |logicals: usize| {
        let mut f = cmp(0);
        for i in 0..logicals {
            f = match i % 3 {
                0 => !f,
                1 => Filter::all_of([f]),
                _ => Filter::any_of([f]),
            };
        }
        QueryExpression::new().filter(f)
    };
    assert_eq!(deep(l.max_depth - 1).validate(), Ok(()));
    assert_eq!(
        deep(l.max_depth).validate(),
        Err(InvalidExpression::TooDeep { max: 32 })
    );
    // Filters: the `or` itself is one.
    let wide = |n: usize| QueryExpression::new().filter(Filter::any_of((0..n).map(cmp)));
    assert_eq!(wide(l.max_filters - 1).validate(), Ok(()));
    assert_eq!(wide(l.max_filters).validate(), too_many("filters", 1024));
    let list =
        |n: usize| QueryExpression::new().filter(QueryProperty::service("x").is_in(0..n as i64));
    assert_eq!(list(l.max_list_items).validate(), Ok(()));
    assert_eq!(
        list(l.max_list_items + 1).validate(),
        too_many("list items", 1024)
    );
    let project = |n: usize| {
        QueryExpression::new().project(Projection::properties(
            (0..n).map(|i| QueryProperty::service(format!("p{i}"))),
        ))
    };
    assert_eq!(project(l.max_projection).validate(), Ok(()));
    assert_eq!(
        project(l.max_projection + 1).validate(),
        too_many("projected properties", 256)
    );
    let keys = |n: usize| {
        QueryExpression::new().aggregate(
            Aggregation::by((0..n).map(|i| QueryProperty::service(format!("p{i}")))).column(
                AggregateOperator::Count,
                None,
                "n",
            ),
        )
    };
    assert_eq!(keys(l.max_aggregate_keys).validate(), Ok(()));
    assert_eq!(
        keys(l.max_aggregate_keys + 1).validate(),
        too_many("aggregate keys", 8)
    );
    let columns = |n: usize| {
        let mut a = Aggregation::by([QueryProperty::service("k")]);
        for i in 0..n {
            a = a.column(AggregateOperator::Count, None, format!("c{i}"));
        }
        QueryExpression::new().aggregate(a)
    };
    assert_eq!(columns(l.max_aggregate_columns).validate(), Ok(()));
    assert_eq!(
        columns(l.max_aggregate_columns + 1).validate(),
        too_many("aggregate columns", 32)
    );
    let sorted = |n: usize| {
        (0..n).fold(QueryExpression::new(), |q, i| {
            q.sort(SortKey::asc(QueryProperty::service(format!("p{i}"))))
        })
    };
    assert_eq!(sorted(l.max_sort_keys).validate(), Ok(()));
    assert_eq!(
        sorted(l.max_sort_keys + 1).validate(),
        too_many("sort keys", 8)
    );
    // Text: bytes, whitespace included.
    let padded = |len: usize| format!("{{}}{}", " ".repeat(len - 2));
    assert!(query::parse(&padded(l.max_input_bytes)).is_ok());
    assert_eq!(
        query::parse(&padded(l.max_input_bytes + 1))
            .unwrap_err()
            .kind,
        ParseErrorKind::InputTooLarge {
            max: 65_536,
            actual: 65_537
        }
    );
    // Pages and tag queries.
    let reg = numbers_fleet();
    let all = QueryExpression::new();
    assert!(query::execute(&reg, &all, &QueryOptions::page(MAX_PAGE_SIZE)).is_ok());
    assert_eq!(
        query::execute(&reg, &all, &QueryOptions::page(MAX_PAGE_SIZE + 1)).unwrap_err(),
        QueryError::PageSize {
            requested: 1001,
            max: 1000
        }
    );
    let tags = |top: usize| TagQuery {
        tags: vec!["x".into()],
        top,
    };
    assert!(query::tag_query(&reg, &tags(MAX_PAGE_SIZE)).is_ok());
    assert_eq!(
        query::tag_query(&reg, &tags(MAX_PAGE_SIZE + 1)).unwrap_err(),
        QueryError::BadTagQuery
    );
}

/// Module docs, "Paging": "a twin whose sort key does not change between two pages is
/// never skipped or repeated". Over 4,000 twins registered out of id order (so a first
/// page in id order is found chunk by chunk), under every strategy, with pages of 7 and
/// 333: between pages some twins change their sort key or their match, lose the key, are
/// removed, or are created. Every twin untouched throughout is seen exactly once if it
/// matches, never if it does not.
#[test]
fn paging_skips_and_repeats_no_unchanged_twin_on_any_path() {
    let n = 4000u32;
    let build = || {
        let mut reg = Registry::new();
        for k in 0..n {
            let i = (k * 2357) % n;
            reg.create(
                Twin::new(id(&format!("p{i:05}")))
                    .with_device_property("BatteryLevel", (i % 7) as i64 * 10, ts(0))
                    .with_device_property("MemoryFree", (i % 2) as i64, ts(0)),
            )
            .unwrap();
        }
        reg
    };
    let filt = QueryProperty::device("MemoryFree").eq(1);
    for expr in [
        QueryExpression::new().filter(filt.clone()),
        QueryExpression::new(),
        QueryExpression::new()
            .filter(filt.clone())
            .sort(SortKey::desc(QueryProperty::device("BatteryLevel"))),
        QueryExpression::new().sort(SortKey::asc(QueryProperty::device("BatteryLevel"))),
        QueryExpression::new()
            .filter(QueryProperty::device("BatteryLevel").gte(30))
            .sort(SortKey::asc(QueryProperty::device("BatteryLevel")))
            .sort(SortKey::desc(QueryProperty::default_field("deviceId"))),
        QueryExpression::new()
            .filter(QueryProperty::device("BatteryLevel").eq(30))
            .sort(SortKey::asc(QueryProperty::device("BatteryLevel"))),
    ] {
        for strategy in STRATEGIES {
            for page_size in [7usize, 333] {
                let mut reg = build();
                let mut seen = std::collections::BTreeMap::<String, u32>::new();
                let mut changed = std::collections::BTreeSet::<String>::new();
                let mut token = None;
                let mut round = 0u32;
                loop {
                    let options = QueryOptions {
                        page_size,
                        continuation: token.clone(),
                        strategy,
                    };
                    let page = query::execute(&reg, &expr, &options).unwrap();
                    let v = serde_json::to_value(&page).unwrap();
                    for d in page_ids(&v) {
                        *seen.entry(d).or_default() += 1;
                    }
                    token = page.continuation;
                    if token.is_none() {
                        break;
                    }
                    round += 1;
                    for j in 0..5u32 {
                        let victim = format!("p{:05}", (round * 7919 + j * 131) % n);
                        changed.insert(victim.clone());
                        match j {
                            0 => {
                                let _ = reg.report_device_property(
                                    &victim,
                                    "BatteryLevel",
                                    Scalar::from(((round % 5) * 20) as i64),
                                    ts(1),
                                );
                            }
                            1 => {
                                let _ = reg.report_device_property(
                                    &victim,
                                    "MemoryFree",
                                    Scalar::from((round % 2) as i64),
                                    ts(1),
                                );
                            }
                            2 => {
                                let _ = reg.remove(&victim);
                            }
                            3 => {
                                let _ = reg.remove_device_property(&victim, "BatteryLevel");
                            }
                            _ => {
                                let _ = reg.create(Twin::new(id(&format!("p{:05}x", round))));
                            }
                        }
                    }
                }
                let twins_now: std::collections::BTreeSet<String> =
                    reg.iter().map(|t| t.device_id().to_string()).collect();
                let matches_now = naive::execute(
                    &reg.iter().map(|t| t.to_twin()).collect::<Vec<_>>(),
                    &expr.clone(),
                    &QueryOptions::page(1000),
                )
                .unwrap();
                let _ = matches_now;
                let twins: Vec<Twin> = build().iter().map(|t| t.to_twin()).collect();
                for t in &twins {
                    let d = t.device_id.to_string();
                    if changed.contains(&d) || !twins_now.contains(&d) {
                        continue;
                    }
                    let m = expr.filter.as_ref().is_none_or(|f| naive::matches(t, f));
                    assert_eq!(
                        seen.get(&d).copied().unwrap_or(0),
                        m as u32,
                        "{d} {expr} {strategy:?} {page_size}"
                    );
                }
                assert!(round > 0, "{expr} {page_size}");
            }
        }
    }
}

/// A service property object of `entries`.
fn object(entries: Vec<(&str, ServiceValue)>) -> ServiceValue {
    ServiceValue::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

/// Service property members: a dotted or empty member name is refused (`outer.inner`
/// names nested members in queries, so a dot inside a name would be ambiguous); an empty
/// object and a nested member project, sort and filter as the naive evaluator says.
#[test]
fn nested_service_members_are_unambiguous_and_agree_with_the_naive_evaluator() {
    let mut reg = Registry::new();
    for member in ["a.b", ""] {
        let twin = Twin::new(id("x"))
            .with_service_property("cfg", object(vec![(member, ServiceValue::from(1))]));
        assert!(reg.create(twin).is_err(), "{member:?}");
    }
    let nested = object(vec![("a", object(vec![("b", ServiceValue::from(2))]))]);
    reg.create(Twin::new(id("z")).with_service_property("cfg", nested))
        .unwrap();
    let empty = object(vec![("a", object(vec![]))]);
    reg.create(Twin::new(id("w")).with_service_property("cfg", empty))
        .unwrap();
    let e = QueryExpression::new()
        .project(Projection::properties([
            QueryProperty::service("cfg"),
            QueryProperty::service("cfg.a"),
            QueryProperty::service("cfg.a.b"),
        ]))
        .sort(SortKey::asc(QueryProperty::service("cfg.a.b")));
    let page = &same_everywhere(&reg, &e, 10, None)[0];
    assert_eq!(page_ids(page), ["z", "w"]);
    assert_eq!(
        page["Result"][1]["serviceProperties"]["properties"],
        serde_json::json!({"cfg": {"a": {}}, "cfg.a": {}})
    );
    let e = QueryExpression::new().filter(QueryProperty::service("cfg.a").exists());
    assert_eq!(
        page_ids(&same_everywhere(&reg, &e, 10, None)[0]),
        ["w", "z"]
    );
}

/// `Literal`: "a literal made with `From<f64>` from [NaN or infinity] is refused when the
/// expression is validated or run" (issue #19 item 1: such a literal used to mean 0).
/// Its text and its JSON must not carry a different, valid meaning either: the canonical
/// text wrote a non-finite float as `null`, so `eq(NaN)` printed, sent as JSON (the
/// `Serialize` impl) and parsed back became `eq null` ("the property is missing") and
/// `ne(inf)` became `ne null` ("it exists"), both valid queries matching twins.
#[test]
fn a_non_finite_literal_never_prints_as_a_valid_query() {
    let mut reg = Registry::new();
    reg.create(Twin::new(id("has")).with_device_property("/9/0/1", 1, ts(0)))
        .unwrap();
    reg.create(Twin::new(id("lacks"))).unwrap();
    let p = || QueryProperty::device("/9/0/1");
    for (expr, name) in [
        (QueryExpression::new().filter(p().eq(f64::NAN)), "eq NaN"),
        (
            QueryExpression::new().filter(p().ne(f64::INFINITY)),
            "ne inf",
        ),
        (
            QueryExpression::new().filter(p().eq(f64::NEG_INFINITY)),
            "eq -inf",
        ),
        (
            QueryExpression::new().filter(Filter::all_of([p().exists(), p().ne(f64::NAN)])),
            "and",
        ),
    ] {
        assert_eq!(expr.validate(), Err(InvalidExpression::NotFinite), "{name}");
        assert!(query::execute(&reg, &expr, &QueryOptions::default()).is_err());
        let text = expr.to_string();
        assert!(
            query::parse(&text).is_err(),
            "{name}: the text of an invalid expression parses: {text}"
        );
        assert!(
            serde_json::to_string(&expr).is_err(),
            "{name}: an invalid expression serialises"
        );
        // Debug still shows what was built.
        let debug = format!("{expr:?}").to_lowercase();
        assert!(debug.contains("inf") || debug.contains("nan"), "{debug}");
    }
}

/// `QueryExpression`: "Build one in Rust or parse one from text; both give the same value,
/// and its `Display` is the canonical JSON text that parses back to it." A
/// `Literal::Unsigned` at or below `i64::MAX` (a public variant anyone can build) prints as
/// the integer and parses back as `Literal::Integer`, which compared unequal (and hashed
/// apart) though it means and prints the same.
#[test]
fn an_unsigned_literal_in_the_i64_range_equals_the_integer_it_prints_as() {
    use std::hash::{BuildHasher, RandomState};
    for (unsigned, integer) in [(5u64, 5i64), (0, 0), (i64::MAX as u64, i64::MAX)] {
        assert_eq!(Literal::Unsigned(unsigned), Literal::Integer(integer));
        assert_eq!(Literal::Integer(integer), Literal::Unsigned(unsigned));
        let hasher = RandomState::new();
        assert_eq!(
            hasher.hash_one(Literal::Unsigned(unsigned)),
            hasher.hash_one(Literal::Integer(integer))
        );
        let q = QueryExpression::new()
            .filter(QueryProperty::device("x").eq(Literal::Unsigned(unsigned)));
        assert_eq!(query::parse(&q.to_string()).unwrap(), q);
    }
    assert_ne!(Literal::Unsigned(u64::MAX), Literal::Integer(-1));
    assert_ne!(Literal::Unsigned(1 << 63), Literal::Integer(i64::MIN));
    assert_ne!(Literal::Integer(1), Literal::Number(1.0));
}

/// Full twins and projections are written from the registry's borrowed values (no owned
/// map of a row's service properties, no cloned scalar): the text of every page and of
/// every view equals, byte for byte, the owned twin's text and the naive evaluator's, on
/// odd shapes: empty objects, objects 3 deep, member names that share prefixes and sort
/// around the `.` that joins nested names (`a`, `a-b`, `a!`, `ab`, `a"q`: `-`, `!` and `"`
/// sort below `.`), and projected paths naming an object, a scalar's member, a missing
/// member or empty segments.
mod borrowed_rows {
    use super::{
        Projection, QueryExpression, QueryOptions, QueryProperty, Registry, ServiceValue, Twin, id,
        naive, query, ts,
    };
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const MEMBERS: &[&str] = &["a", "a-b", "a!", "ab", "a\"q", "b", "\u{e9}", "~"];

    fn value() -> impl Strategy<Value = ServiceValue> {
        let leaf = prop_oneof![
            (-3i64..3).prop_map(ServiceValue::from),
            Just(ServiceValue::from(0.5)),
            Just(ServiceValue::from("s")),
            Just(ServiceValue::from(true)),
            Just(ServiceValue::Object(BTreeMap::new())),
        ];
        // At most 3 levels of objects under a top-level property (the limit is 4).
        leaf.prop_recursive(3, 24, 4, |inner| {
            proptest::collection::btree_map(
                proptest::sample::select(MEMBERS).prop_map(str::to_owned),
                inner,
                0..4,
            )
            .prop_map(ServiceValue::Object)
        })
    }

    fn properties() -> impl Strategy<Value = BTreeMap<String, ServiceValue>> {
        proptest::collection::btree_map(
            proptest::sample::select(MEMBERS).prop_map(str::to_owned),
            value(),
            0..5,
        )
    }

    /// Every path of 1 to 4 segments over the member names, with empty segments too.
    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![8 => proptest::sample::select(MEMBERS), 1 => Just("")],
            1..5,
        )
        .prop_map(|parts| parts.join("."))
    }

    fn check(reg: &Registry, originals: &BTreeMap<String, BTreeMap<String, ServiceValue>>) {
        for view in reg.iter() {
            let owned = view.to_twin();
            assert_eq!(
                Some(&owned.service_properties.properties),
                originals.get(owned.device_id.as_str())
            );
            assert_eq!(
                serde_json::to_string(&view).unwrap(),
                serde_json::to_string(&owned).unwrap()
            );
        }
    }

    fn same_text(reg: &Registry, twins: &[Twin], e: &QueryExpression) {
        let ours = query::execute(reg, e, &QueryOptions::page(50));
        let theirs = naive::execute(twins, e, &QueryOptions::page(50));
        match (ours, theirs) {
            (Ok(ours), Ok(theirs)) => assert_eq!(
                serde_json::to_string(&ours).unwrap(),
                serde_json::to_string(&theirs).unwrap(),
                "{e}"
            ),
            // An empty name is refused by both.
            (Err(ours), Err(theirs)) => assert_eq!(ours, theirs, "{e}"),
            (ours, theirs) => panic!("{e}: {:?} against {:?}", ours.is_ok(), theirs.is_ok()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
        ))]

        #[test]
        fn borrowed_rows_write_the_owned_twins_text(
            twins in proptest::collection::vec(properties(), 1..6),
            updates in proptest::collection::vec(
                (0usize..6, proptest::sample::select(MEMBERS), proptest::option::of(value())),
                0..4,
            ),
            paths in proptest::collection::vec(path(), 1..6),
        ) {
            let mut reg = Registry::new();
            let mut originals = BTreeMap::new();
            for (i, props) in twins.iter().enumerate() {
                let mut t = Twin::new(id(&format!("t{i}")))
                    .with_device_property("BatteryLevel", i as i64, ts(i as u64))
                    .with_tag("x");
                for (name, v) in props {
                    t = t.with_service_property(name, v.clone());
                }
                reg.create(t).unwrap();
                originals.insert(format!("t{i}"), props.clone());
            }
            // Updates insert and remove nodes after creation (another order of leaves).
            for (i, name, v) in &updates {
                let device = format!("t{}", i % twins.len());
                reg.set_service_property(&device, name, v.clone(), None).unwrap();
                let props = originals.get_mut(&device).unwrap();
                match v {
                    Some(v) => props.insert((*name).to_owned(), v.clone()),
                    None => props.remove(*name),
                };
            }
            check(&reg, &originals);
            let owned: Vec<Twin> = reg.iter().map(|t| t.to_twin()).collect();
            same_text(&reg, &owned, &QueryExpression::new());
            // The naive evaluator's projection is a `serde_json::Value`, whose objects sort
            // their keys: service objects are `BTreeMap`s, sorted alike, but a device
            // property's `value` comes before `lastUpdatedTime` (the struct's order) in
            // both the owned twin's text and ours; so device properties are compared
            // with the owned twin's `DeviceProperty` text below.
            let mut props: Vec<QueryProperty> =
                paths.iter().map(QueryProperty::service).collect();
            props.push(QueryProperty::tags());
            for n in 0..props.len() {
                let e = QueryExpression::new()
                    .project(Projection::properties(props[n..].iter().cloned()));
                same_text(&reg, &owned, &e);
            }
            let e = QueryExpression::new().project(Projection::properties([
                QueryProperty::device("/3/0/8"),
                QueryProperty::device("/3/0/9"),
            ]));
            let ours = query::execute(&reg, &e, &QueryOptions::page(50)).unwrap();
            let expected: Vec<String> = owned
                .iter()
                .map(|t| {
                    format!(
                        r#"{{"deviceId":{},"deviceProperties":{{"BatteryLevel":{}}}}}"#,
                        serde_json::to_string(&t.device_id).unwrap(),
                        serde_json::to_string(&t.device_properties["BatteryLevel"]).unwrap()
                    )
                })
                .collect();
            assert_eq!(
                serde_json::to_string(&ours.result).unwrap(),
                format!("[{}]", expected.join(","))
            );
        }
    }

    /// The shapes the proptest may miss, spelled out: the expected text is written here.
    #[test]
    fn odd_shapes_are_written_as_the_owned_twin_writes_them() {
        let object = super::object;
        let deep = object(vec![
            ("a", object(vec![("b", object(vec![("c", 1.into())]))])),
            ("a-b", object(vec![])),
            ("a!", 2.into()),
            ("ab", object(vec![("x", object(vec![]))])),
        ]);
        let mut reg = Registry::new();
        // `a.b` is created before `a-b` and `a` (another order of property ids).
        reg.create(
            Twin::new(id("first"))
                .with_service_property("a", object(vec![("b", 0.into())]))
                .with_service_property("ab", 0),
        )
        .unwrap();
        reg.create(
            Twin::new(id("t"))
                .with_service_property("a-b", 3)
                .with_service_property("a", deep.clone())
                .with_service_property("a!", object(vec![]))
                .with_service_property("ab", "z"),
        )
        .unwrap();
        let view = reg.get("t").unwrap();
        let text = serde_json::to_string(&view).unwrap();
        assert_eq!(text, serde_json::to_string(&view.to_twin()).unwrap());
        assert!(
            text.contains(
                r#""properties":{"a":{"a":{"b":{"c":1}},"a!":2,"a-b":{},"ab":{"x":{}}},"a!":{},"a-b":3,"ab":"z"}"#
            ),
            "{text}"
        );
        let e = QueryExpression::new()
            .filter(QueryProperty::default_field("deviceId").eq("t"))
            .project(Projection::properties([
                QueryProperty::service("a.a"),
                QueryProperty::service("a.ab.x"),
                QueryProperty::service("a.a-b"),
                QueryProperty::service("a.a!.x"),
                QueryProperty::service("a.missing"),
                QueryProperty::service("a.a.b.c"),
                QueryProperty::service("a!"),
            ]));
        let page = query::execute(&reg, &e, &QueryOptions::default()).unwrap();
        let text = serde_json::to_string(&page.result).unwrap();
        assert_eq!(
            text,
            r#"[{"deviceId":"t","serviceProperties":{"properties":{"a!":{},"a.a":{"b":{"c":1}},"a.a-b":{},"a.a.b.c":1,"a.ab.x":{}}}}]"#
        );
        let twins: Vec<Twin> = reg.iter().map(|t| t.to_twin()).collect();
        same_text(&reg, &twins, &e);
    }
}
