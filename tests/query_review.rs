//! Hostile review of the query engine (`src/query/`): promises of the module docs and
//! README that the code as reviewed broke (each fixed since). Each test quotes the
//! promise it checks.

use twinhub::query::{
    self, AggregateOperator, Aggregation, QueryExpression, QueryOptions, QueryProperty, ResultItem,
    SortKey, Strategy,
};
use twinhub::registry::Registry;
use twinhub::twin::{Scalar, Twin};
use twinhub::{DeviceId, Timestamp};

const STRATEGIES: [Strategy; 4] = [
    Strategy::Auto,
    Strategy::Bitmaps,
    Strategy::Scans,
    Strategy::Columns,
];

const P: &str = "/3303/0/5700";

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// Module docs, "Aggregates": "`sum` and `avg` take numbers only (an integer sum is exact,
/// beyond the `u64` range the nearest float; a float sum beyond `f64` is
/// [`QueryError::AggregateOverflow`] ...)"; `aggregate.rs`: "When any value has a fraction
/// the sum is an `f64` (in ascending value order)". Only a sum beyond the `f64` range is an
/// error: 1e308 + 1e308 - 1e308 is 1e308, and even the documented ascending-order sum
/// (-1e308 + 1e308 + 1e308) never leaves the range.
#[test]
fn a_float_sum_inside_the_f64_range_is_not_an_overflow() {
    let mut reg = Registry::new();
    for (i, v) in [1e308, 1e308, -1e308].into_iter().enumerate() {
        reg.create(Twin::new(id(&format!("f{i}"))).with_device_property(
            P,
            Scalar::float(v).unwrap(),
            ts(0),
        ))
        .unwrap();
    }
    let expr = QueryExpression::new().aggregate(
        Aggregation::by([QueryProperty::default_field("status")]).column(
            AggregateOperator::Sum,
            Some(QueryProperty::device(P)),
            "sum",
        ),
    );
    // The naive sum, in the documented ascending order.
    let exact: f64 = -1e308 + 1e308 + 1e308;
    for strategy in STRATEGIES {
        let options = QueryOptions {
            strategy,
            ..QueryOptions::default()
        };
        let page = query::execute(&reg, &expr, &options);
        let got = page.map(|p| serde_json::to_value(&p.aggregate_result).unwrap());
        assert_eq!(
            got,
            Ok(serde_json::json!([{"status": "enabled", "sum": exact}])),
            "{strategy:?}"
        );
    }
}

/// README: "pages carry continuation tokens"; `QueryOptions::after`: "The page after the
/// one that returned `token`". A token the engine hands out must be one it accepts: sort
/// keys are twin values of up to `MAX_STRING_VALUE_LEN` (4096) bytes each, up to 8 keys.
#[test]
fn tokens_for_long_sort_values_are_accepted_back() {
    let mut reg = Registry::new();
    let names = ["k1", "k2", "k3"];
    for i in 0..3 {
        let mut t = Twin::new(id(&format!("L{i}")));
        for n in names {
            // Plain ASCII, the longest value a twin may hold, differing at the end.
            let v = format!("{}{i}", "a".repeat(4095));
            t = t.with_service_property(n, v.as_str());
        }
        // One more key whose quotes double when written as JSON.
        let q = format!("{}{i}", "\"".repeat(4095));
        t = t.with_service_property("quoted", q.as_str());
        reg.create(t).unwrap();
    }
    let multi = names.iter().fold(QueryExpression::new(), |q, n| {
        q.sort(SortKey::asc(QueryProperty::service(*n)))
    });
    let quoted = QueryExpression::new().sort(SortKey::asc(QueryProperty::service("quoted")));
    for expr in [quoted, multi] {
        for strategy in STRATEGIES {
            let mut token = None;
            let mut seen = Vec::new();
            for _ in 0..3 {
                let options = QueryOptions {
                    page_size: 1,
                    continuation: token.clone(),
                    strategy,
                };
                let page = query::execute(&reg, &expr, &options)
                    .unwrap_or_else(|e| panic!("{strategy:?} after {seen:?}: {e:?}"));
                for item in &page.result {
                    if let ResultItem::Document(t) = item {
                        seen.push(t.device_id().to_string());
                    }
                }
                token = page.continuation;
                if token.is_none() {
                    break;
                }
            }
            assert_eq!(seen, ["L0", "L1", "L2"], "{strategy:?} {expr}");
        }
    }
}

/// README: `assert_eq!(query::parse(&q.to_string())?, q); // canonical JSON round-trips`;
/// `QueryExpression`'s `Serialize`: "Serialises as the JSON expression its `Display`
/// prints" and `Deserialize` parses it back. An expression the parser accepted must come
/// back from its own canonical text (a job stores its query that way). A 61 KB input
/// whose canonical text is 229 KB (`9e15` prints as `9000000000000000.0`) was accepted
/// and its text then refused; now the parse refuses it (`CanonicalTooLarge`), and an
/// expression whose canonical text fits comes back from it.
#[test]
fn an_accepted_expression_round_trips_through_its_canonical_text() {
    // 12 comparisons of 1000 short float literals: well under every limit.
    let list = vec!["9e15"; 1000].join(",");
    let cmp = format!(
        r#"{{"type":"comparison","comparisonOperator":"in","property":{{"name":"x","type":"service"}},"value":[{list}]}}"#
    );
    let text = format!(
        r#"{{"filter":{{"type":"logical","logicalOperator":"or","filters":[{}]}}}}"#,
        vec![cmp.clone(); 12].join(",")
    );
    assert!(text.len() <= 64 * 1024, "{}", text.len());
    assert!(matches!(
        query::parse(&text).map_err(|e| e.kind),
        Err(query::ParseErrorKind::CanonicalTooLarge { max: 65536, actual }) if actual > 65536
    ));
    // Three of the twelve fit: accepted, and back from their canonical text.
    let text = format!(
        r#"{{"filter":{{"type":"logical","logicalOperator":"or","filters":[{}]}}}}"#,
        vec![cmp; 3].join(",")
    );
    let q = query::parse(&text).unwrap();
    let canonical = q.to_string();
    assert_eq!(
        query::parse(&canonical).map_err(|e| e.kind),
        Ok(q.clone()),
        "canonical text of {} bytes (input {} bytes)",
        canonical.len(),
        text.len()
    );
    let json = serde_json::to_string(&q).unwrap();
    let back: Result<QueryExpression, _> = serde_json::from_str(&json);
    assert_eq!(back.ok(), Some(q));
}
