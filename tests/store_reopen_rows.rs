//! Reopening a store parses each twin's head into a borrowed row rather than a `Twin`
//! (a twin that rows cannot hold, such as one with an object-valued service property, is
//! decoded whole). These tests check that the twins come back exactly as committed,
//! whichever way each took: random twins with every field set or not, strings that need
//! escaping in JSON (quotes, backslashes, non-ASCII) in every place a string goes,
//! registrations, configurations, PSK keys, nested service values, and device-property
//! changes still in the store's log (reports and removals) on top of the records.

use proptest::prelude::*;
use std::collections::BTreeMap;
use twinhub::registry::Registry;
use twinhub::store::{Store, StoreConfig};
use twinhub::twin::{
    Authentication, ConnectionState, DeviceStatus, PskKey, RegistrationInfo, Scalar, ServiceValue,
    Twin,
};
use twinhub::{DeviceId, Lwm2mPath, Timestamp};

/// Text with characters JSON escapes (`"`, `\`, a control-free tab is not allowed
/// everywhere, so none) and non-ASCII ones.
fn text() -> impl Strategy<Value = String> {
    "[a-z\"\\\\é✓ ]{1,6}"
}

#[derive(Clone, Debug)]
struct Spec {
    disabled: Option<String>,
    connected: bool,
    times: Option<u64>,
    managed: bool,
    psk: Option<(String, Vec<u8>)>,
    registration: bool,
    configuration: Option<String>,
    firmware: Option<String>,
    battery: Option<i64>,
    temperature: Option<f64>,
    service: Vec<(String, u8, String)>,
    nested: bool,
    tags: Vec<String>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        (
            proptest::option::of(text()),
            any::<bool>(),
            proptest::option::of(0u64..1 << 40),
            any::<bool>(),
            proptest::option::of((text(), proptest::collection::vec(any::<u8>(), 1..8))),
            any::<bool>(),
            proptest::option::of(text()),
        ),
        (
            proptest::option::of(text()),
            proptest::option::of(0i64..=100),
            proptest::option::of(-40.0f64..80.0),
            proptest::collection::vec(("[a-zA-Zü\"\\\\]{1,5}", 0u8..4, text()), 0..4),
            prop::bool::weighted(0.2),
            proptest::collection::vec("[a-z\"\\\\ü ]{1,5}", 0..4),
        ),
    )
        .prop_map(
            |(
                (disabled, connected, times, managed, psk, registration, configuration),
                (firmware, battery, temperature, service, nested, tags),
            )| Spec {
                disabled,
                connected,
                times,
                managed,
                psk,
                registration,
                configuration,
                firmware,
                battery,
                temperature,
                service,
                nested,
                tags,
            },
        )
}

fn twin(i: usize, s: &Spec) -> Twin {
    let id = DeviceId::new(&format!("dev'{i}$@")).unwrap();
    let mut t = Twin::new(id.clone());
    if let Some(reason) = &s.disabled {
        t.status = DeviceStatus::Disabled;
        t.status_reason = Some(reason.clone());
    }
    if s.connected {
        t.connection_state = ConnectionState::Connected;
    }
    if let Some(ms) = s.times {
        t.status_updated_time = Some(Timestamp::from_millis(ms));
        t.connection_state_updated_time = Some(Timestamp::from_millis(ms + 1));
        t.last_activity_time = Some(Timestamp::from_millis(ms + 2));
    }
    t.is_managed = s.managed;
    if let Some((identity, key)) = &s.psk {
        t.authentication = Authentication {
            psk_identity: Some(identity.clone()),
            psk_key: Some(PskKey::new(key.clone())),
        };
    }
    if s.registration {
        t.registration = Some(RegistrationInfo {
            endpoint: id.to_string(),
            registration_id: format!("r\"{i}"),
            lifetime: 300,
            lwm2m_version: "1.1".into(),
            binding: "U".into(),
            queue_mode: i.is_multiple_of(2),
            objects: vec![Lwm2mPath::instance(3, 0)],
            address: Some("127.0.0.1:5683".parse().unwrap()),
            psk_identity: None,
        });
    }
    t.configuration = s.configuration.clone();
    let at = Timestamp::from_millis(1_461_931_200_000 + i as u64);
    if let Some(v) = &s.firmware {
        t = t.with_device_property("FirmwareVersion", Scalar::from(v.as_str()), at);
    }
    if let Some(v) = s.battery {
        t = t.with_device_property("BatteryLevel", Scalar::from(v), at);
    }
    if let Some(v) = s.temperature {
        t = t.with_device_property("/3303/0/5700", Scalar::from(v), at);
    }
    for (name, kind, v) in &s.service {
        let value = match kind {
            0 => ServiceValue::from(v.as_str()),
            1 => ServiceValue::from(v.len() as i64),
            2 => ServiceValue::from(v.len().is_multiple_of(2)),
            _ => ServiceValue::from(v.len() as f64 / 3.0),
        };
        t.service_properties.properties.insert(name.clone(), value);
    }
    if s.nested {
        let value: ServiceValue = serde_json::from_str(r#"{"a": {"b": "c\"d"}, "n": 1}"#).unwrap();
        t.service_properties
            .properties
            .insert("nested".into(), value);
    }
    for tag in &s.tags {
        t = t.with_tag(tag.as_str());
    }
    t
}

fn snapshot(reg: &Registry) -> BTreeMap<String, Twin> {
    reg.iter()
        .map(|t| (t.device_id().to_string(), t.to_twin()))
        .collect()
}

/// Later changes, so that reopening applies log entries over the records: a report or a
/// removal of a device property, per twin.
#[derive(Clone, Debug)]
enum Later {
    Report(usize, String),
    RemoveFirmware(usize),
}

fn later() -> impl Strategy<Value = Later> {
    prop_oneof![
        (0usize..64, text()).prop_map(|(i, v)| Later::Report(i, v)),
        (0usize..64).prop_map(Later::RemoveFirmware),
    ]
}

fn check(specs: &[Spec], later: &[Later], log_limit: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::default();
    config.property_log_limit = log_limit;
    let (mut store, mut reg) = Store::open(dir.path(), config.clone()).unwrap();
    for (i, s) in specs.iter().enumerate() {
        reg.create(twin(i, s)).unwrap();
    }
    store.commit_all(&reg).unwrap();
    for (n, change) in later.iter().enumerate() {
        let id = |i: usize| format!("dev'{}$@", i % specs.len());
        match change {
            Later::Report(i, v) => {
                let at = Timestamp::from_millis(1_500_000_000_000 + n as u64);
                reg.report_device_property(
                    &id(*i),
                    "FirmwareVersion",
                    Scalar::from(v.as_str()),
                    at,
                )
                .unwrap();
            }
            Later::RemoveFirmware(i) => {
                let _ = reg.remove_device_property(&id(*i), "FirmwareVersion");
            }
        }
        if n % 3 == 2 {
            store.commit(&reg).unwrap();
        }
    }
    store.commit(&reg).unwrap();
    let want = snapshot(&reg);
    let last = reg.last_seq();
    drop((store, reg));
    let (_store, reg) = Store::open(dir.path(), config).unwrap();
    prop_assert_eq!(snapshot(&reg), want);
    prop_assert!(reg.last_seq() > last);
    reg.validate().map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every twin comes back exactly, with its log entries applied (a log limit of 2^20
    /// keeps them logged; 1 folds them at once).
    #[test]
    fn reopened_twins_are_the_committed_ones(
        specs in proptest::collection::vec(spec(), 1..40),
        later in proptest::collection::vec(later(), 0..24),
        folded in any::<bool>(),
    ) {
        check(&specs, &later, if folded { 1 } else { 1 << 20 })?;
    }
}

/// More twins than one batch of the reader (1,024), some decoded whole between rows.
#[test]
fn batches_of_rows_and_whole_twins_keep_every_twin() {
    let specs: Vec<Spec> = (0..2_500usize)
        .map(|i| Spec {
            disabled: (i.is_multiple_of(50)).then(|| "off \"now\"".to_string()),
            connected: i.is_multiple_of(3),
            times: Some(i as u64 * 1000),
            managed: true,
            psk: (i.is_multiple_of(7)).then(|| (format!("id-{i}"), vec![i as u8, 1, 2])),
            registration: i.is_multiple_of(11),
            configuration: (i.is_multiple_of(13)).then(|| "c\\fg".to_string()),
            firmware: Some(format!("1.{}", i % 20)),
            battery: Some(i as i64 % 101),
            temperature: (i.is_multiple_of(4)).then_some(20.5),
            service: vec![("region".into(), 0, format!("eu-{}", i % 5))],
            nested: i.is_multiple_of(97),
            tags: vec![format!("t{}", i % 9)],
        })
        .collect();
    let later: Vec<Later> = (0..300usize)
        .map(|n| {
            if n.is_multiple_of(5) {
                Later::RemoveFirmware(n * 7)
            } else {
                Later::Report(n * 13, format!("2.{n}"))
            }
        })
        .collect();
    check(&specs, &later, 1 << 20).unwrap();
}
