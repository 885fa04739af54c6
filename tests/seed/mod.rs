//! The seed document's example queries, shared by the query tests.

/// The seed document's example, verbatim (including its indentation and key order).
pub const SEED_FIRMWARE_QUERY: &str = r#"{
      "filter": {
        "property": {
          "name": "FirmwareVersion",
          "type": "device"
        },
        "value": "1.0",
        "comparisonOperator": "eq",
        "type": "comparison"
      },
      "project": null,
      "aggregate": null,
      "sort": null
  }"#;
