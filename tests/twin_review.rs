//! Hostile review of the twin model and the registry's write API: each test asserts a
//! documented promise the code as reviewed broke (fixed since; each test says how).

use twinhub::registry::Registry;
use twinhub::twin::{MAX_DEVICE_PROPERTIES, PropertyKind, Scalar, Twin};
use twinhub::{DeviceId, Timestamp};

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn t0() -> Timestamp {
    Timestamp::from_millis(1_461_931_200_000)
}

fn zero() -> Scalar {
    Scalar::float(0.0).unwrap()
}

fn neg_zero() -> Scalar {
    Scalar::float(-0.0).unwrap()
}

/// `Number`: "each serialises as it was written (`1` and `1.0`)"; `TwinRef`: "It
/// serialises to exactly the JSON of the equivalent [`Twin`]". A twin created with the
/// service property `x = -0.0` read back as `0.0` from the registry (which keeps one
/// spelling of equal floats) while the owned twin wrote `-0.0`; a device's `-0.0` report
/// after `0.0` left `0.0` in the twin but `-0.0` in the feed. Now `-0.0` is `0.0` from the
/// start (`Number::from_f64`), so every view agrees.
#[test]
fn negative_zero_is_zero_in_every_view() {
    assert_eq!(serde_json::to_string(&neg_zero()).unwrap(), "0.0");
    let mut reg = Registry::new();
    reg.create(Twin::new(id("a")).with_service_property("x", zero()))
        .unwrap();
    let b = Twin::new(id("b")).with_service_property("x", neg_zero());
    let props = |json: String| {
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["serviceProperties"]["properties"].to_string()
    };
    let owned = serde_json::to_string(&b).unwrap();
    assert_eq!(props(owned.clone()), r#"{"x":0.0}"#);
    reg.create(b).unwrap();
    assert_eq!(
        props(serde_json::to_string(&reg.get("b").unwrap()).unwrap()),
        r#"{"x":0.0}"#
    );
    let parsed: Twin = serde_json::from_str(&owned.replace("0.0", "-0.0")).unwrap();
    assert_eq!(serde_json::to_string(&parsed).unwrap(), owned);
    reg.report_device_property("a", "/3303/0/5700", zero(), t0())
        .unwrap();
    let seq = reg.last_seq();
    reg.report_device_property("a", "/3303/0/5700", neg_zero(), t0())
        .unwrap();
    let view = serde_json::to_string(&reg.get("a").unwrap()).unwrap();
    assert!(view.contains(r#""value":0.0"#), "{view}");
    let reported = reg.changes_after(seq).unwrap().next().unwrap().clone();
    assert!(
        serde_json::to_string(&reported)
            .unwrap()
            .contains(r#""value":0.0"#),
        "{reported:?}"
    );
}

/// Module docs: "Every write validates its input first, then updates the twin and every
/// index, then returns ... A failed write changes nothing." `Registry::property_id`:
/// "The interned id of a property, if any device ever had it." A report refused for
/// `TooManyDeviceProperties` must leave no property behind that no device ever had.
#[test]
fn a_report_refused_at_the_device_property_bound_interns_nothing() {
    let mut reg = Registry::new();
    let mut t = Twin::new(id("full"));
    for i in 0..MAX_DEVICE_PROPERTIES {
        t = t.with_device_property(format!("/9/0/{i}"), 1, t0());
    }
    reg.create(t).unwrap();
    let before: Vec<_> = reg
        .properties()
        .map(|(p, k, n)| (p, k, n.to_string()))
        .collect();
    let seq = reg.last_seq();
    assert!(
        reg.report_device_property("full", "/9/0/5000", Scalar::from(1), t0())
            .is_err()
    );
    assert_eq!(reg.last_seq(), seq);
    assert_eq!(
        reg.property_id(PropertyKind::Device, "/9/0/5000"),
        None,
        "no device ever had /9/0/5000, yet a refused write interned it"
    );
    let after: Vec<_> = reg
        .properties()
        .map(|(p, k, n)| (p, k, n.to_string()))
        .collect();
    assert_eq!(after, before);
}
