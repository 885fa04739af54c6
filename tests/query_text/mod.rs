//! Query expression text for tests: a comparison and a logical filter as JSON.

/// A comparison filter on a `default` property; `value` is JSON text.
pub fn cmp(op: &str, name: &str, value: &str) -> String {
    format!(
        r#"{{"type": "comparison", "comparisonOperator": "{op}",
            "property": {{"name": "{name}", "type": "default"}}, "value": {value}}}"#
    )
}

/// A logical filter over filters given as JSON text.
pub fn logical(op: &str, filters: &[String]) -> String {
    format!(
        r#"{{"type": "logical", "logicalOperator": "{op}", "filters": [{}]}}"#,
        filters.join(",")
    )
}
