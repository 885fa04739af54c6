//! The query front end: the preview's example expressions parse to the expected AST, the
//! builder builds the same AST, error messages are exact (golden), and the canonical
//! `Display` round-trips (proptest).

#![cfg(feature = "fuzzing")]

mod seed;

use proptest::prelude::*;
use seed::SEED_FIRMWARE_QUERY;
use twinhub::fuzzing::query::{ExpressionSource, Vocabulary};
use twinhub::query::{
    AggregateOperator, Aggregation, ComparisonOperator, ComparisonValue, Expected, Filter,
    InvalidExpression, Literal, ParseErrorKind, Projection, QueryExpression, QueryLimits,
    QueryProperty, SortKey, parse, parse_with_limits,
};

#[test]
fn seed_firmware_query_parses_to_an_eq_comparison() {
    let q = parse(SEED_FIRMWARE_QUERY).unwrap();
    let expected =
        QueryExpression::new().filter(QueryProperty::device("FirmwareVersion").eq("1.0"));
    assert_eq!(q, expected);
    let Some(Filter::Comparison(c)) = &q.filter else {
        panic!("not a comparison: {q:?}")
    };
    assert_eq!(c.operator, ComparisonOperator::Eq);
    assert_eq!(
        c.value,
        ComparisonValue::Scalar(Literal::String("1.0".into()))
    );
    // Spans point into the text.
    let span = c.property.origin.0.unwrap();
    assert!(SEED_FIRMWARE_QUERY[span.start..span.end].contains("FirmwareVersion"));
    assert_eq!(
        q.to_string(),
        r#"{"filter":{"type":"comparison","property":{"name":"FirmwareVersion","type":"device"},"comparisonOperator":"eq","value":"1.0"}}"#
    );
}

#[test]
fn tags_all_query() {
    let q = parse(
        r#"{"filter": {"type": "comparison", "comparisonOperator": "all",
            "property": {"type": "default", "name": "tags"}, "value": ["building-7", "floor-2"]}}"#,
    )
    .unwrap();
    assert_eq!(
        q,
        QueryExpression::new().filter(QueryProperty::tags().all(["building-7", "floor-2"]))
    );
}

#[test]
fn aggregate_with_keys_and_sort_on_a_column() {
    let q = parse(
        r#"{"aggregate": {
              "keys": [{"name": "FirmwareVersion", "type": "device"}],
              "properties": [
                {"operator": "count", "property": null, "columnName": "devices"},
                {"operator": "avg", "property": {"name": "BatteryLevel", "type": "device"},
                 "columnName": "battery"}]},
            "sort": [{"property": {"name": "devices", "type": "aggregated"}, "order": "desc"}]}"#,
    )
    .unwrap();
    let built = QueryExpression::new()
        .aggregate(
            Aggregation::by([QueryProperty::device("FirmwareVersion")])
                .column(AggregateOperator::Count, None, "devices")
                .column(
                    AggregateOperator::Avg,
                    Some(QueryProperty::device("BatteryLevel")),
                    "battery",
                ),
        )
        .sort(SortKey::desc(QueryProperty::aggregated("devices")));
    assert_eq!(q, built);
}

#[test]
fn multi_key_sort_with_default_order() {
    let q = parse(
        r#"{"sort": [{"property": {"name": "BatteryLevel", "type": "device"}, "order": "desc"},
                     {"property": {"name": "region", "type": "service"}}]}"#,
    )
    .unwrap();
    assert_eq!(
        q,
        QueryExpression::new()
            .sort(SortKey::desc(QueryProperty::device("BatteryLevel")))
            .sort(SortKey::asc(QueryProperty::service("region")))
    );
}

#[test]
fn nested_logicals_numbers_escapes_and_projection() {
    let q = parse(
        r#"{"project": {"properties": [{"name": "FirmwareVersion", "type": "device"}], "all": false},
            "filter": {"type": "logical", "logicalOperator": "or", "filters": [
              {"type": "comparison", "comparisonOperator": "gte", "value": -1.5e2,
               "property": {"name": "BatteryLevel", "type": "device"}},
              {"type": "logical", "logicalOperator": "not", "filters": [
                {"type": "comparison", "comparisonOperator": "ne", "value": null,
                 "property": {"name": "/4/0/2", "type": "custom"}}]},
              {"type": "comparison", "comparisonOperator": "nin", "value": ["a\"b", "\u00e9\ud83d\ude00", true, 0],
               "property": {"name": "re\\gion", "type": "service"}}]}}"#,
    )
    .unwrap();
    let built = QueryExpression::new()
        .filter(Filter::any_of([
            QueryProperty::device("BatteryLevel").gte(-150.0),
            !QueryProperty::custom("/4/0/2").exists(),
            QueryProperty::service("re\\gion").not_in([
                Literal::from("a\"b"),
                Literal::from("\u{e9}\u{1F600}"),
                Literal::from(true),
                Literal::from(0),
            ]),
        ]))
        .project(Projection::properties([QueryProperty::device(
            "FirmwareVersion",
        )]));
    assert_eq!(q, built);
    assert_eq!(parse(&q.to_string()).unwrap(), q);
}

/// Renders the error for `text` (which must fail).
fn error(text: &str) -> String {
    match parse(text) {
        Ok(q) => panic!("parsed: {q}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn golden_error_unknown_operator_points_at_it() {
    let text = "{\n  \"filter\": {\n    \"type\": \"comparison\",\n    \"comparisonOperator\": \"eq2\"\n  }\n}";
    assert_eq!(
        error(text),
        "unknown comparison operator `eq2`, expected one of `eq`, `ne`, `gt`, `gte`, `lt`, \
         `lte`, `in`, `nin`, `all` at line 4, column 27\n    \"comparisonOperator\": \"eq2\"\n                          ^^^^^"
    );
}

#[test]
fn golden_error_duplicate_and_unknown_keys() {
    assert_eq!(
        error(r#"{"filter": null, "filter": null}"#),
        "duplicate key `filter` at line 1, column 18\n{\"filter\": null, \"filter\": null}\n                 ^^^^^^^^"
    );
    assert_eq!(
        error(r#"{"filtre": null}"#),
        "unknown key `filtre` in a query expression, expected one of `filter`, `project`, \
         `aggregate`, `sort` at line 1, column 2\n{\"filtre\": null}\n ^^^^^^^^"
    );
}

#[test]
fn golden_error_syntax() {
    assert_eq!(
        error(r#"{"filter": {"type": "comparison"  "value": 1}}"#),
        "expected `,` or `}`, found `\"` at line 1, column 35\n{\"filter\": {\"type\": \"comparison\"  \"value\": 1}}\n                                  ^"
    );
    assert_eq!(
        error(r#"{"sort": []} x"#),
        "expected the end of the input, found `x` at line 1, column 14\n{\"sort\": []} x\n             ^"
    );
    assert_eq!(
        error(r#"{"filter": {"value": 1.}}"#),
        "expected a digit, found `}` at line 1, column 24\n{\"filter\": {\"value\": 1.}}\n                       ^"
    );
    assert_eq!(
        error(""),
        "expected `{` opening a query expression, found the end of the input at line 1, column 1\n\n^"
    );
    assert_eq!(
        error(r#"{"filter": {"value": "\q"}}"#),
        "invalid escape sequence at line 1, column 23\n{\"filter\": {\"value\": \"\\q\"}}\n                      ^^"
    );
}

#[test]
fn golden_error_rules() {
    assert_eq!(
        error(
            r#"{"filter": {"type": "comparison", "property": {"name": "x", "type": "device"}, "comparisonOperator": "in", "value": "a"}}"#
        ),
        "`in` needs a list value at line 1, column 117\nx\", \"type\": \"device\"}, \"comparisonOperator\": \"in\", \"value\": \"a\"}}\n                                                            ^^^"
    );
    assert_eq!(
        error(r#"{"filter": {"type": "logical", "logicalOperator": "not", "filters": []}}"#),
        "`not` takes exactly one filter, found 0 at line 1, column 12\n{\"filter\": {\"type\": \"logical\", \"logicalOperator\": \"not\", \"filters\": []}}\n           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^"
    );
    assert_eq!(
        error(r#"{"filter": {"type": "comparison", "value": 1}}"#),
        "missing key `property` in a comparison at line 1, column 12\n{\"filter\": {\"type\": \"comparison\", \"value\": 1}}\n           ^"
    );
    assert_eq!(
        error(r#"{"filter": {"type": "comparison", "filters": [], "value": 1}}"#),
        "key `filters` does not belong in a comparison filter at line 1, column 35\n{\"filter\": {\"type\": \"comparison\", \"filters\": [], \"value\": 1}}\n                                  ^^^^^^^^^"
    );
}

/// The kind of the error for `text` (which must fail).
fn kind(text: &str) -> ParseErrorKind {
    parse(text).unwrap_err().kind
}

fn invalid(text: &str) -> InvalidExpression {
    match kind(text) {
        ParseErrorKind::Invalid(i) => i,
        other => panic!("not a rule violation: {other:?}"),
    }
}

const P: &str = r#"{"name": "x", "type": "device"}"#;
const TAGS: &str = r#"{"name": "tags", "type": "default"}"#;

fn cmp(property: &str, op: &str, value: &str) -> String {
    format!(
        r#"{{"filter": {{"type": "comparison", "property": {property}, "comparisonOperator": "{op}", "value": {value}}}}}"#
    )
}

#[test]
fn every_rule_is_enforced() {
    use InvalidExpression::*;
    assert_eq!(
        invalid(&cmp(TAGS, "eq", "\"a\"")),
        TagsNeedAll { operator: "eq" }
    );
    assert_eq!(invalid(&cmp(P, "all", "[\"a\"]")), AllNeedsTags);
    assert_eq!(invalid(&cmp(TAGS, "all", "[1]")), TagNotString);
    assert_eq!(
        invalid(&cmp(P, "nin", "1")),
        ListRequired { operator: "nin" }
    );
    assert_eq!(
        invalid(&cmp(P, "in", "null")),
        ListRequired { operator: "in" }
    );
    assert_eq!(
        invalid(&cmp(P, "gt", "[1]")),
        ListNotAllowed { operator: "gt" }
    );
    assert_eq!(
        invalid(&cmp(P, "lte", "null")),
        NullNotAllowed { operator: "lte" }
    );
    assert_eq!(
        invalid(r#"{"filter": {"type": "logical", "logicalOperator": "or", "filters": []}}"#),
        EmptyLogical { operator: "or" }
    );
    assert_eq!(
        invalid(r#"{"project": {"all": false, "properties": []}}"#),
        EmptyProjection
    );
    let agg = |keys: &str, props: &str| {
        format!(r#"{{"aggregate": {{"keys": {keys}, "properties": {props}}}}}"#)
    };
    assert_eq!(
        invalid(&agg("[]", r#"[{"operator": "count", "columnName": "n"}]"#)),
        EmptyAggregateKeys
    );
    assert_eq!(
        invalid(&agg(&format!("[{P}]"), "[]")),
        EmptyAggregateColumns
    );
    assert_eq!(
        invalid(&agg(
            &format!("[{P}]"),
            r#"[{"operator": "sum", "columnName": "n"}]"#
        )),
        PropertyRequired { operator: "sum" }
    );
    assert_eq!(
        invalid(&agg(
            &format!("[{P}]"),
            r#"[{"operator": "count", "columnName": "a$b"}]"#
        )),
        DollarInColumnName { name: "a$b".into() }
    );
    assert_eq!(
        invalid(&agg(
            &format!("[{P}]"),
            r#"[{"operator": "count", "columnName": ""}]"#
        )),
        EmptyColumnName
    );
    assert_eq!(
        invalid(&agg(
            &format!("[{P}]"),
            r#"[{"operator": "count", "columnName": "n"}, {"operator": "count", "columnName": "n"}]"#
        )),
        DuplicateColumnName { name: "n".into() }
    );
    assert_eq!(
        invalid(&agg(
            &format!("[{TAGS}]"),
            r#"[{"operator": "count", "columnName": "n"}]"#
        )),
        TagsNotAllowed { place: "aggregate" }
    );
    assert_eq!(
        invalid(&format!(
            r#"{{"project": {{"all": true}}, "aggregate": {{"keys": [{P}], "properties": [{{"operator": "count", "columnName": "n"}}]}}}}"#
        )),
        ProjectAndAggregate
    );
    assert_eq!(
        invalid(&format!(r#"{{"sort": [{{"property": {TAGS}}}]}}"#)),
        TagsNotAllowed { place: "sort" }
    );
    assert_eq!(
        invalid(r#"{"sort": [{"property": {"name": "n", "type": "aggregated"}}]}"#),
        AggregatedNotAllowed
    );
    assert_eq!(
        invalid(&format!(
            r#"{{"aggregate": {{"keys": [{P}], "properties": [{{"operator": "count", "columnName": "n"}}]}}, "sort": [{{"property": {{"name": "m", "type": "aggregated"}}}}]}}"#
        )),
        UnknownColumn { name: "m".into() }
    );
    assert_eq!(
        invalid(&format!(
            r#"{{"aggregate": {{"keys": [{P}], "properties": [{{"operator": "count", "columnName": "n"}}]}}, "sort": [{{"property": {{"name": "y", "type": "device"}}}}]}}"#
        )),
        SortKeyNotInAggregate { name: "y".into() }
    );
    assert_eq!(
        invalid(&cmp(r#"{"name": "", "type": "device"}"#, "eq", "1")),
        EmptyPropertyName
    );
}

#[test]
fn syntax_errors_say_what_was_expected() {
    assert!(matches!(
        kind(&cmp(P, "eq", "{}")),
        ParseErrorKind::Expected {
            expected: Expected::ComparisonValue,
            found: Some('{')
        }
    ));
    assert_eq!(
        kind(r#"{"filter": {"value": "\ud800"}}"#),
        ParseErrorKind::InvalidUnicodeEscape
    );
    assert_eq!(
        kind("{\"filter\": {\"value\": \"a\u{1}\"}}"),
        ParseErrorKind::ControlCharacter
    );
    assert_eq!(
        kind(r#"{"filter": {"value": 1e999}}"#),
        ParseErrorKind::NumberOutOfRange
    );
    assert!(matches!(
        kind(r#"{"filter": {"value": 01}}"#),
        ParseErrorKind::Expected {
            expected: Expected::CommaOrObjectEnd,
            ..
        }
    ));
    assert!(matches!(
        kind(r#"{"filter": {"value": +1}}"#),
        ParseErrorKind::Expected {
            expected: Expected::ComparisonValue,
            ..
        }
    ));
    assert!(matches!(
        kind(r#"{"project": {"all": 1}}"#),
        ParseErrorKind::Expected {
            expected: Expected::Bool,
            ..
        }
    ));
    assert!(matches!(
        kind(r#"{"sort": {}}"#),
        ParseErrorKind::Expected {
            expected: Expected::Array(_),
            ..
        }
    ));
    assert!(matches!(
        kind(r#"{"filter": {"type": "comparison",}}"#),
        ParseErrorKind::Expected {
            expected: Expected::Key,
            ..
        }
    ));
    assert!(matches!(
        kind(r#"{"filter": {"type" "comparison"}}"#),
        ParseErrorKind::Expected {
            expected: Expected::Colon,
            ..
        }
    ));
    assert!(matches!(
        kind(r#"{"filter": {"value": [1 2]}}"#),
        ParseErrorKind::Expected {
            expected: Expected::CommaOrArrayEnd,
            ..
        }
    ));
    assert!(matches!(
        kind(r#"{"filter": {"type": "compare"}}"#),
        ParseErrorKind::UnknownKeyword {
            field: "filter type",
            ..
        }
    ));
    assert!(matches!(
        kind(r#"{"filter": {"type": "logical", "filters": [{"type": "logical"}]}}"#),
        ParseErrorKind::MissingKey {
            key: "logicalOperator",
            ..
        }
    ));
}

#[test]
fn names_and_keywords_are_case_sensitive() {
    assert!(matches!(
        kind(r#"{"Filter": null}"#),
        ParseErrorKind::UnknownKey { .. }
    ));
    assert!(matches!(
        kind(&cmp(P, "EQ", "1")),
        ParseErrorKind::UnknownKeyword { .. }
    ));
    // "Tags" is an ordinary default field, so `all` on it is a rule violation.
    assert_eq!(
        invalid(&cmp(
            r#"{"name": "Tags", "type": "default"}"#,
            "all",
            "[\"a\"]"
        )),
        InvalidExpression::AllNeedsTags
    );
}

#[test]
fn limits_bound_size_depth_and_counts() {
    let deep = format!(
        "{{\"filter\":{}{}}}",
        r#"{"type":"logical","logicalOperator":"not","filters":["#.repeat(40),
        "]}".repeat(40)
    );
    assert_eq!(invalid(&deep), InvalidExpression::TooDeep { max: 32 });
    // A very deep input fails cleanly without exhausting the stack.
    let deeper = format!(
        "{{\"filter\":{}}}",
        r#"{"type":"logical","logicalOperator":"not","filters":["#.repeat(5000)
    );
    assert!(matches!(
        kind(&deeper),
        ParseErrorKind::InputTooLarge { .. }
    ));
    let limits = QueryLimits {
        max_input_bytes: 1 << 20,
        ..QueryLimits::DEFAULT
    };
    assert_eq!(
        match parse_with_limits(&deeper, &limits).unwrap_err().kind {
            ParseErrorKind::Invalid(i) => i,
            other => panic!("{other:?}"),
        },
        InvalidExpression::TooDeep { max: 32 }
    );
    let list = format!("[{}]", vec!["1"; 1025].join(","));
    assert_eq!(
        invalid(&cmp(P, "in", &list)),
        InvalidExpression::TooMany {
            what: "list items",
            max: 1024
        }
    );
    let big = format!("{{\"filter\": {{\"value\": \"{}\"}}}}", "a".repeat(70_000));
    assert_eq!(
        kind(&big),
        ParseErrorKind::InputTooLarge {
            max: 65536,
            actual: big.len()
        }
    );
}

#[test]
fn builder_validation_matches_the_parser() {
    let q = QueryExpression::new()
        .filter(QueryProperty::device("x").all(["a"]))
        .sort(SortKey::asc(QueryProperty::device("y")));
    assert_eq!(q.validate(), Err(InvalidExpression::AllNeedsTags));
    assert_eq!(
        kind(&q.to_string()),
        ParseErrorKind::Invalid(InvalidExpression::AllNeedsTags)
    );
    let nan =
        QueryExpression::new().filter(Filter::Comparison(match QueryProperty::device("x").eq(1) {
            Filter::Comparison(mut c) => {
                c.value = ComparisonValue::Scalar(Literal::Number(f64::NAN));
                c
            }
            other => panic!("{other:?}"),
        }));
    assert_eq!(nan.validate(), Err(InvalidExpression::NotFinite));
}

#[test]
fn error_source_chain_and_line_column_for_multibyte_text() {
    let e = parse("{\n \"sort\": [{\"property\": {\"name\": \"\u{e9}\u{e9}\", \"type\": \"x\"}}]}")
        .unwrap_err();
    // Columns count characters, not bytes (`é` is two bytes).
    assert_eq!((e.line, e.column), (2, 47));
    assert!(std::error::Error::source(&e).is_none());
    let e = parse(&cmp(P, "all", "[\"a\"]")).unwrap_err();
    assert!(std::error::Error::source(&e).is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// parse(display(q)) == q for generated expressions; invalid ones fail with the
    /// validator's own error.
    #[test]
    fn canonical_display_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        twinhub::fuzzing::query::query_roundtrip(&bytes);
        let q = ExpressionSource::new(&bytes, Vocabulary::WIDE).expression();
        if q.validate().is_ok() {
            let text = q.to_string();
            prop_assert_eq!(parse(&text).unwrap().to_string(), text);
        }
    }

    /// Arbitrary text never panics or yields an internal error kind.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        twinhub::fuzzing::query::query_parse(text.as_bytes());
    }

    /// Mutations of valid query texts (truncations, byte flips) fail cleanly.
    #[test]
    fn mutated_queries_fail_cleanly(
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
        cut in 0usize..400,
        flip in 0usize..400,
        with in any::<u8>(),
    ) {
        let q = ExpressionSource::new(&bytes, Vocabulary::WIDE).expression();
        let mut text = q.to_string().into_bytes();
        if !text.is_empty() {
            let at = flip % text.len();
            text[at] = with;
            text.truncate(cut.max(1).min(text.len()));
        }
        twinhub::fuzzing::query::query_parse(&text);
    }
}

/// Nested `not` filters `depth` deep around one comparison.
fn nested(depth: usize) -> String {
    let mut s = String::new();
    for _ in 0..depth {
        s.push_str(r#"{"type": "logical", "logicalOperator": "not", "filters": ["#);
    }
    s.push_str(r#"{"type": "comparison", "comparisonOperator": "eq", "property": {"name": "a", "type": "service"}, "value": 1}"#);
    for _ in 0..depth {
        s.push_str("]}");
    }
    format!(r#"{{"filter": {}}}"#, s)
}

/// Issue #19: raised limits used to let a 2,000-deep expression overflow the stack and
/// abort the process. Now the depth is capped at MAX_QUERY_DEPTH whatever the limits say,
/// and the deepest accepted expression parses, prints, compares, runs and drops within
/// a 2 MiB thread stack.
#[test]
fn no_limit_setting_lets_a_deep_expression_overflow_the_stack() {
    use twinhub::query::{MAX_QUERY_DEPTH, QueryLimits, parse_with_limits};
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let limits = QueryLimits {
                max_depth: usize::MAX,
                max_filters: usize::MAX,
                max_input_bytes: usize::MAX,
                ..QueryLimits::DEFAULT
            };
            let err = parse_with_limits(&nested(2_000), &limits).unwrap_err();
            assert!(err.to_string().contains("deep"), "{err}");
            // The deepest accepted: MAX_QUERY_DEPTH logicals plus the comparison.
            let text = nested(MAX_QUERY_DEPTH - 1);
            let expr = parse_with_limits(&text, &limits).unwrap();
            let again = twinhub::query::parse_with_limits(&expr.to_string(), &limits).unwrap();
            assert_eq!(expr, again);
            let mut reg = twinhub::registry::Registry::new();
            reg.create(twinhub::twin::Twin::new(
                twinhub::DeviceId::new("d").unwrap(),
            ))
            .unwrap();
            // Execution checks the default limits: deeper than those is a typed error,
            // within them it runs.
            assert!(twinhub::query::count(&reg, &expr).is_err());
            let within = twinhub::query::parse(&nested(31)).unwrap();
            // An odd number of `not`s around a comparison no twin matches: the twin.
            assert_eq!(twinhub::query::count(&reg, &within).unwrap(), 1);
            drop(expr);
        })
        .unwrap();
    handle
        .join()
        .expect("the deep expression overflowed a 2 MiB stack");
}

#[test]
fn a_query_expression_round_trips_through_serde_inside_a_body() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Body {
        name: String,
        query: twinhub::query::QueryExpression,
    }
    for text in [
        "{}",
        r#"{"filter": {"type": "logical", "logicalOperator": "not", "filters": [
            {"type": "comparison", "comparisonOperator": "in",
             "property": {"name": "FirmwareVersion", "type": "device"}, "value": ["1.0", 2, true]}]},
           "project": {"properties": [{"name": "BatteryLevel", "type": "device"}]},
           "sort": [{"property": {"name": "BatteryLevel", "type": "device"}, "order": "desc"}]}"#,
        r#"{"aggregate": {"keys": [{"name": "FirmwareVersion", "type": "device"}],
            "properties": [{"operator": "sum", "property": {"name": "n", "type": "service"}, "columnName": "total"}]}}"#,
    ] {
        let query = twinhub::query::parse(text).unwrap();
        let body = Body {
            name: "b".into(),
            query: query.clone(),
        };
        let json = serde_json::to_string(&body).unwrap();
        let back: Body = serde_json::from_str(&json).unwrap();
        assert_eq!(back, body, "{json}");
        let direct: twinhub::query::QueryExpression = serde_json::from_str(text).unwrap();
        assert_eq!(direct, query);
    }
    // The parser's error, with where it is inside the expression.
    let err = serde_json::from_str::<Body>(
        r#"{"name": "b", "query": {"filter": {"type": "comparisn"}}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("comparisn") && err.contains("column"), "{err}");
}

/// Issue #19: a filter built in Rust nested 100,000 deep (alternating `and`, `or` and
/// `not`, which no flattening removes) is dropped, printed, compared, hashed, cloned
/// and debug-printed within a 2 MiB thread stack, and evaluating it is a typed error; same-operator chains built
/// in a loop stay flat.
#[test]
fn a_builder_made_filter_of_any_depth_does_not_overflow_the_stack() {
    use std::hash::{BuildHasher, RandomState};
    use twinhub::query::{Filter, QueryExpression, QueryProperty};
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let deep = |n: usize| {
                let mut f = QueryProperty::service("a").eq(1);
                for i in 0..n {
                    let other = QueryProperty::service("b").eq(i as i64);
                    f = match i % 3 {
                        0 => Filter::all_of([f, other]),
                        1 => Filter::any_of([f, other]),
                        _ => !f,
                    };
                }
                f
            };
            let (a, b) = (deep(100_000), deep(100_000));
            assert!(a == b);
            let cloned = a.clone();
            assert!(cloned == a);
            let debug = format!("{cloned:?}");
            assert!(debug.starts_with("Filter({") && debug.len() > 100_000 * 40);
            drop(cloned);
            let c = deep(99_999);
            assert!(a != c);
            let hasher = RandomState::new();
            assert_eq!(hasher.hash_one(&a), hasher.hash_one(&b));
            let text = a.to_string();
            assert!(text.len() > 100_000 * 40 && text.ends_with("]}"));
            let expr = QueryExpression::new().filter(a);
            let reg = twinhub::registry::Registry::new();
            let err = twinhub::query::count(&reg, &expr).unwrap_err();
            assert!(err.to_string().contains("deep"), "{err}");
            drop((expr, b, c));

            // Chains of one operator built in a loop are one operator with many operands.
            let mut chain = QueryProperty::service("a").eq(0);
            for i in 1..10_000 {
                chain = Filter::all_of([chain, QueryProperty::service("a").eq(i as i64)]);
            }
            let Filter::Logical(l) = &chain else {
                panic!("an and")
            };
            assert_eq!(l.filters.len(), 10_000);
            assert!(l.filters.iter().all(|f| matches!(f, Filter::Comparison(_))));
            let twice = !!QueryProperty::service("a").eq(1);
            assert_eq!(twice, QueryProperty::service("a").eq(1));
        })
        .unwrap();
    handle.join().expect("no stack overflow");
}
