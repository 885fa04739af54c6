//! Registry behaviour one case at a time: every error, slot reuse, the change feed's
//! gap, borrowed views, and readers racing a writer.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use twinhub::registry::{ChangeKind, Registry, RegistryError, SharedRegistry, Slot, SlotSet};
use twinhub::twin::{
    Authentication, ConnectionState, DeviceStatus, DeviceValueType, Etag, MAX_TAGS, PropertyKind,
    PskKey, Scalar, ServiceProperties, ServiceValue, Twin, TwinError,
};
use twinhub::{DeviceId, Timestamp};

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn t0() -> Timestamp {
    Timestamp::from_millis(1_461_931_200_000)
}

fn reg_with(ids: &[&str]) -> Registry {
    let mut reg = Registry::new();
    for i in ids {
        reg.create(Twin::new(id(i))).unwrap();
    }
    reg
}

#[test]
fn create_get_remove_and_slot_reuse() {
    let mut reg = reg_with(&["a", "b", "c"]);
    assert_eq!(reg.slot_of("b"), Some(Slot(1)));
    let removed = reg.remove("b").unwrap();
    assert_eq!(removed.device_id, id("b"));
    assert!(reg.get("b").is_none());
    assert_eq!(reg.twin_at(Slot(1)).map(|t| t.device_id().clone()), None);
    let slot = reg.create(Twin::new(id("d"))).unwrap();
    assert_eq!(slot, Slot(1), "the freed slot is reused");
    assert_eq!(reg.universe().iter().collect::<Vec<_>>(), [0, 1, 2]);
    // A new generation id distinguishes the reused slot's device.
    let d = reg.get("d").unwrap();
    assert!(d.generation_id() > reg.get("a").unwrap().generation_id());
    assert_eq!(reg.len(), 3);
    reg.validate().unwrap();
}

#[test]
fn not_found_and_exists_errors() {
    let mut reg = reg_with(&["a"]);
    let nf = |r: Result<_, RegistryError>| matches!(r, Err(RegistryError::DeviceNotFound { ref id }) if id == "zz");
    assert!(nf(reg.remove("zz").map(|_| ())));
    assert!(nf(reg.report_device_property(
        "zz",
        "BatteryLevel",
        1.into(),
        t0()
    )));
    assert!(nf(reg
        .set_service_property("zz", "x", None, None)
        .map(|_| ())));
    assert!(nf(reg.add_tags("zz", &["t"], None).map(|_| ())));
    assert!(nf(reg.set_connection_state(
        "zz",
        ConnectionState::Connected,
        t0()
    )));
    assert!(nf(reg.set_status("zz", DeviceStatus::Disabled, None, t0())));
    assert!(nf(reg.set_managed("zz", true)));
    assert!(nf(reg.set_registration("zz", None)));
    assert!(nf(reg.set_last_activity("zz", t0())));
    assert!(nf(reg.set_configuration("zz", None)));
    assert!(nf(reg.set_authentication("zz", Authentication::default())));
    assert!(nf(reg
        .remove_device_property("zz", "BatteryLevel")
        .map(|_| ())));
    assert!(matches!(
        reg.report_at(Slot(99), "BatteryLevel", 1.into(), t0()),
        Err(RegistryError::DeviceNotFound { .. })
    ));
    let err = reg.create(Twin::new(id("a"))).unwrap_err();
    assert_eq!(err, RegistryError::DeviceExists { id: id("a") });
    assert_eq!(err.to_string(), "device a already exists");
    assert_eq!(reg.last_seq(), 1, "failed writes emit nothing");
    reg.validate().unwrap();
}

#[test]
fn invalid_reports_change_nothing() {
    let mut reg = reg_with(&["a"]);
    reg.report_device_property("a", "BatteryLevel", 50.into(), t0())
        .unwrap();
    let before = serde_json::to_string(&reg.get("a").unwrap()).unwrap();
    let cases: Vec<(&str, Scalar, TwinError)> = vec![
        (
            "BatteryLevel",
            Scalar::from("full"),
            TwinError::WrongValueType {
                name: "BatteryLevel",
                expected: DeviceValueType::Integer,
                found: Scalar::from("full"),
            },
        ),
        (
            "/3/0/4",
            Scalar::from(true),
            TwinError::ExecutableProperty {
                name: "RebootDevice",
            },
        ),
        (
            "Battery",
            Scalar::from(1),
            TwinError::UnknownDeviceProperty {
                name: "Battery".into(),
            },
        ),
        (
            "/3",
            Scalar::from(1),
            TwinError::PropertyPathNotResource { name: "/3".into() },
        ),
    ];
    for (name, value, error) in cases {
        let got = reg.report_device_property("a", name, value, t0());
        assert_eq!(
            got,
            Err(RegistryError::Invalid {
                id: "a".into(),
                error
            }),
            "{name}"
        );
    }
    assert!(matches!(
        reg.report_device_property("a", "/3/x/1", 1.into(), t0()),
        Err(RegistryError::Invalid {
            error: TwinError::BadPropertyPath { .. },
            ..
        })
    ));
    assert_eq!(
        serde_json::to_string(&reg.get("a").unwrap()).unwrap(),
        before
    );
    reg.validate().unwrap();
}

#[test]
fn etag_precondition() {
    let mut reg = reg_with(&["a"]);
    let e1 = reg
        .set_service_property("a", "region", Some("eu".into()), None)
        .unwrap();
    assert_eq!(reg.get("a").unwrap().service_etag(), e1);
    let e2 = reg
        .set_service_property("a", "region", Some("us".into()), Some(e1))
        .unwrap();
    assert!(e2 > e1);
    let err = reg
        .set_service_property("a", "region", Some("ap".into()), Some(e1))
        .unwrap_err();
    assert_eq!(
        err,
        RegistryError::PreconditionFailed {
            id: id("a"),
            expected: e1,
            actual: e2
        }
    );
    assert_eq!(
        err.to_string(),
        format!("precondition failed for device a: etag is {e2}, not {e1}")
    );
    for r in [
        reg.add_tags("a", &["x"], Some(e1)),
        reg.remove_tags("a", &["x"], Some(e1)),
        reg.replace_tags("a", &["x"], Some(e1)),
        reg.replace_service_properties("a", &ServiceProperties::default(), Some(e1)),
    ] {
        assert!(matches!(r, Err(RegistryError::PreconditionFailed { .. })));
    }
    let v = reg.get("a").unwrap();
    assert_eq!(v.service_property("region"), Some(&Scalar::from("us")));
    assert_eq!(v.tags().count(), 0);
    // Device-side changes move the twin etag, not the service etag.
    reg.report_device_property("a", "BatteryLevel", 3.into(), t0())
        .unwrap();
    let v = reg.get("a").unwrap();
    assert_eq!(v.service_etag(), e2);
    assert!(v.etag() > e2);
    reg.validate().unwrap();
}

#[test]
fn service_property_and_tag_validation() {
    let mut reg = reg_with(&["a"]);
    let invalid = |r: Result<Etag, RegistryError>| match r {
        Err(RegistryError::Invalid { error, .. }) => error,
        other => panic!("expected invalid, got {other:?}"),
    };
    assert_eq!(
        invalid(reg.set_service_property("a", "", Some(1.into()), None)),
        TwinError::EmptyName
    );
    assert!(matches!(
        invalid(reg.set_service_property("a", "a.b", Some(1.into()), None)),
        TwinError::InvalidNameChar { ch: '.', .. }
    ));
    let deep: ServiceValue = serde_json::from_str(r#"{"a":{"b":{"c":{"d":{"e":1}}}}}"#).unwrap();
    assert!(matches!(
        invalid(reg.set_service_property("a", "p", Some(deep), None)),
        TwinError::ObjectTooDeep { .. }
    ));
    assert!(matches!(
        invalid(reg.add_tags("a", &["ok", "not,ok"], None)),
        TwinError::InvalidTagChar { ch: ',', .. }
    ));
    let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        invalid(reg.add_tags("a", &many, None)),
        TwinError::TooManyTags {
            count: MAX_TAGS + 1
        }
    );
    assert!(matches!(
        reg.set_configuration("a", Some("x".repeat(5000))),
        Err(RegistryError::Invalid {
            error: TwinError::FieldTooLong {
                field: "configuration",
                ..
            },
            ..
        })
    ));
    assert!(matches!(
        reg.set_status("a", DeviceStatus::Disabled, Some("x".repeat(5000)), t0()),
        Err(RegistryError::Invalid {
            error: TwinError::FieldTooLong { .. },
            ..
        })
    ));
    assert!(matches!(
        reg.create(Twin::new(id("b")).with_service_property("$bad", 1)),
        Err(RegistryError::Invalid { ref id, .. }) if id == "b"
    ));
    assert!(reg.get("a").unwrap().tags().next().is_none());
    assert_eq!(reg.last_seq(), 1);
    reg.validate().unwrap();
}

#[test]
fn nested_service_properties_are_indexed_by_dotted_path() {
    let mut reg = reg_with(&["a", "b"]);
    let cfg: ServiceValue = serde_json::from_str(r#"{"mode":"eco","limits":{"max":5}}"#).unwrap();
    reg.set_service_property("a", "cfg", Some(cfg.clone()), None)
        .unwrap();
    reg.set_service_property("b", "cfg", Some(3.into()), None)
        .unwrap();
    let max = reg
        .property_id(PropertyKind::Service, "cfg.limits.max")
        .unwrap();
    let slot_a = reg.slot_of("a").unwrap();
    assert_eq!(reg.value_of(slot_a, max), Some(&Scalar::from(5)));
    let cfg_id = reg.property_id(PropertyKind::Service, "cfg").unwrap();
    assert_eq!(reg.exists_bitmap(cfg_id).unwrap().len(), 2);
    assert_eq!(
        reg.value_of(slot_a, cfg_id),
        None,
        "an object has no scalar value"
    );
    let view = reg.get("a").unwrap();
    assert_eq!(
        view.service_properties(),
        BTreeMap::from([("cfg".to_string(), cfg)])
    );
    // Replacing the object by a scalar drops its members from the indexes.
    reg.set_service_property("a", "cfg", Some("off".into()), None)
        .unwrap();
    assert!(reg.exists_bitmap(max).unwrap().is_empty());
    assert_eq!(reg.value_of(slot_a, cfg_id), Some(&Scalar::from("off")));
    reg.validate().unwrap();
}

#[test]
fn reports_by_path_and_numbers_keep_their_form() {
    let mut reg = reg_with(&["a", "b"]);
    reg.report_device_property("a", "/3303/0/5700", Scalar::from(2.0), t0())
        .unwrap();
    reg.report_device_property("b", "/3303/0/5700", Scalar::from(2), t0())
        .unwrap();
    let pid = reg
        .property_id(PropertyKind::Device, "/3303/0/5700")
        .unwrap();
    assert_eq!(reg.value_slots(pid, &Scalar::from(2)).unwrap().len(), 2);
    assert_eq!(reg.distinct_values(pid), 1);
    let json_a = serde_json::to_value(reg.get("a").unwrap()).unwrap();
    let json_b = serde_json::to_value(reg.get("b").unwrap()).unwrap();
    assert_eq!(
        json_a["deviceProperties"]["/3303/0/5700"]["value"].to_string(),
        "2.0"
    );
    assert_eq!(
        json_b["deviceProperties"]["/3303/0/5700"]["value"].to_string(),
        "2"
    );
    reg.report_device_property("a", "/3/0/9", 10.into(), t0())
        .unwrap();
    assert_eq!(
        reg.get("a").unwrap().device_property("BatteryLevel"),
        Some((&Scalar::from(10), t0()))
    );
    reg.validate().unwrap();
}

#[test]
fn value_ranges_and_slot_sets() {
    let mut reg = Registry::new();
    for i in 0..10 {
        let t = Twin::new(id(&format!("d{i}")))
            .with_device_property("BatteryLevel", (i * 10) as i64, t0())
            .with_device_property("SerialNumber", format!("SN{i}"), t0());
        reg.create(t).unwrap();
    }
    let bl = reg
        .property_id(PropertyKind::Device, "BatteryLevel")
        .unwrap();
    let got: Vec<i64> = reg
        .values_in_range(
            bl,
            Bound::Included(&Scalar::from(25)),
            Bound::Excluded(&Scalar::from(60)),
        )
        .map(|(v, _)| v.as_number().unwrap().as_i64().unwrap())
        .collect();
    assert_eq!(got, [30, 40, 50]);
    let slots = reg.range_bitmap(bl, Bound::Excluded(&Scalar::from(80)), Bound::Unbounded);
    assert_eq!(slots.iter().collect::<Vec<_>>(), [9]);
    // Strings sort after every number: a number range never picks up a string.
    assert_eq!(
        reg.range_bitmap(bl, Bound::Included(&Scalar::from(0)), Bound::Unbounded)
            .len(),
        10
    );
    let sn = reg
        .property_id(PropertyKind::Device, "SerialNumber")
        .unwrap();
    let set = reg.value_slots(sn, &Scalar::from("SN3")).unwrap();
    assert!(matches!(set, SlotSet::One(3)));
    assert_eq!(set.to_bitmap().iter().collect::<Vec<_>>(), [3]);
    let mut acc = reg.universe().clone();
    set.intersect_into(&mut acc);
    assert_eq!(acc.len(), 1);
    assert!(reg.value_slots(sn, &Scalar::from("nope")).is_none());
    assert!(
        reg.property_id(PropertyKind::Service, "SerialNumber")
            .is_none()
    );
    assert_eq!(
        reg.property_name(sn),
        Some((PropertyKind::Device, "SerialNumber"))
    );
}

#[test]
fn change_feed_is_resumable_and_reports_gaps() {
    let mut reg = Registry::with_feed_capacity(4);
    reg.create(Twin::new(id("a"))).unwrap();
    reg.report_device_property("a", "BatteryLevel", 1.into(), t0())
        .unwrap();
    reg.add_tags("a", &["x"], None).unwrap();
    let all: Vec<_> = reg.changes_after(0).unwrap().cloned().collect();
    assert_eq!(
        all.iter().map(|c| &c.kind).collect::<Vec<_>>(),
        [
            &ChangeKind::Created,
            &ChangeKind::DeviceProperty {
                name: "BatteryLevel".into(),
                value: 1.into(),
                previous: None,
            },
            &ChangeKind::Tags
        ]
    );
    let resume = all[1].seq;
    reg.set_connection_state("a", ConnectionState::Connected, t0())
        .unwrap();
    reg.set_managed("a", true).unwrap();
    let next: Vec<u64> = reg.changes_after(resume).unwrap().map(|c| c.seq).collect();
    assert_eq!(next, [3, 4, 5]);
    // Seq 1 was dropped: a consumer that only saw nothing gets a gap, not a skip.
    let gap = reg.changes_after(0).err().unwrap();
    assert_eq!(gap.dropped_through, 1);
    assert_eq!(
        gap.to_string(),
        "change feed gap: changes 1..=1 were dropped before they were read"
    );
    assert_eq!(reg.changes_after(gap.resume_after()).unwrap().count(), 4);
    assert_eq!(reg.changes_after(5).unwrap().count(), 0, "nothing new yet");
    // A number this feed never reached comes from another history: a gap, not "nothing
    // yet" (which would skip every change until the count caught up).
    let ahead = reg.changes_after(99).err().unwrap();
    assert_eq!(ahead.resume_after(), 5);
    assert_eq!(
        ahead.to_string(),
        "change feed gap: sequence 99 was never handed out by this history (the newest \
         number before it is 5); it comes from another history"
    );
    reg.validate().unwrap();

    let mut none = Registry::with_feed_capacity(0);
    none.create(Twin::new(id("a"))).unwrap();
    assert!(none.changes_after(0).is_err());
    assert_eq!(none.changes_after(1).unwrap().count(), 0);
    none.validate().unwrap();
}

#[test]
fn secrets_stay_out_of_views() {
    let mut reg = reg_with(&["a"]);
    reg.set_authentication(
        "a",
        Authentication {
            psk_identity: Some("a-id".into()),
            psk_key: Some(PskKey::new(b"topsecret".to_vec())),
        },
    )
    .unwrap();
    let view = reg.get("a").unwrap();
    assert_eq!(
        view.authentication().psk_key.as_ref().unwrap().expose(),
        b"topsecret"
    );
    let json = serde_json::to_string(&view).unwrap();
    let debug = format!("{view:?}");
    assert!(json.contains("a-id") && !json.contains("topsecret"));
    assert!(!debug.contains("topsecret") && !debug.contains("116, 111, 112"));
}

#[test]
fn fields_and_their_bitmaps() {
    let mut reg = reg_with(&["a", "b"]);
    reg.set_status("a", DeviceStatus::Disabled, Some("stolen".into()), t0())
        .unwrap();
    reg.set_connection_state("b", ConnectionState::Connected, t0())
        .unwrap();
    reg.set_managed("b", true).unwrap();
    reg.set_configuration("b", Some("cfg-1".into())).unwrap();
    reg.set_last_activity("b", t0()).unwrap();
    let a = reg.slot_of("a").unwrap().0;
    let b = reg.slot_of("b").unwrap().0;
    assert!(reg.status_bitmap(DeviceStatus::Disabled).contains(a));
    assert!(!reg.status_bitmap(DeviceStatus::Enabled).contains(a));
    assert!(
        reg.connection_bitmap(ConnectionState::Connected)
            .contains(b)
    );
    assert!(
        reg.connection_bitmap(ConnectionState::Disconnected)
            .contains(a)
    );
    assert!(reg.managed_bitmap(true).contains(b) && reg.managed_bitmap(false).contains(a));
    let av = reg.get("a").unwrap();
    assert_eq!(av.status_reason(), Some("stolen"));
    let bv = reg.get("b").unwrap();
    assert_eq!(bv.configuration(), Some("cfg-1"));
    assert_eq!(bv.last_activity_time(), Some(t0()));
    reg.set_status("a", DeviceStatus::Enabled, None, t0())
        .unwrap();
    assert_eq!(reg.get("a").unwrap().status_reason(), None);
    reg.validate().unwrap();
}

#[test]
fn readers_never_see_half_applied_writes() {
    // The writer moves every device between two tags in one write each; a reader must
    // always see each device in exactly one of them, and the tag counts sum to the fleet.
    let mut reg = Registry::new();
    for i in 0..200 {
        reg.create(Twin::new(id(&format!("d{i}"))).with_tag("even"))
            .unwrap();
    }
    let shared = SharedRegistry::new(reg);
    let writer = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            for round in 0..20 {
                for i in 0..200 {
                    let (from, to) = if round % 2 == 0 {
                        ("even", "odd")
                    } else {
                        ("odd", "even")
                    };
                    let mut w = shared.write();
                    let cur = w.get(&format!("d{i}")).unwrap().has_tag(from);
                    assert!(cur);
                    w.replace_tags(&format!("d{i}"), &[to], None).unwrap();
                    w.report_device_property(
                        &format!("d{i}"),
                        "BatteryLevel",
                        (round as i64).into(),
                        Timestamp::EPOCH,
                    )
                    .unwrap();
                }
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut reads = 0;
                for _ in 0..300 {
                    let r = shared.read();
                    let even = r.tag_bitmap("even").map_or(0, |b| b.len());
                    let odd = r.tag_bitmap("odd").map_or(0, |b| b.len());
                    assert_eq!(even + odd, 200);
                    if let (Some(e), Some(o)) = (r.tag_bitmap("even"), r.tag_bitmap("odd")) {
                        assert!(e.is_disjoint(o));
                    }
                    let change = r
                        .changes_after(r.last_seq().saturating_sub(1))
                        .map(|c| c.count());
                    assert!(matches!(change, Ok(0) | Ok(1)));
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        assert_eq!(r.join().unwrap(), 300);
    }
    let r = shared.read();
    assert_eq!(r.tag_bitmap("even").unwrap().len(), 200);
    r.validate().unwrap();
}

#[test]
fn load_stops_at_the_first_invalid_twin() {
    let mut reg = Registry::new();
    let twins = vec![
        Twin::new(id("a")),
        Twin::new(id("b")).with_tag(""),
        Twin::new(id("c")),
    ];
    let err = reg.load(twins).unwrap_err();
    assert!(
        matches!(err, RegistryError::Invalid { ref id, error: TwinError::EmptyTag } if id == "b")
    );
    assert!(reg.contains("a") && !reg.contains("b") && !reg.contains("c"));
    assert_eq!(reg.load(vec![Twin::new(id("c"))]), Ok(1));
    reg.validate().unwrap();
}

/// A registry big enough that removals wait for the id order's merges: iteration and
/// paging stay in id order, pending slots are not reused, and every slot comes back.
#[test]
fn large_registry_keeps_id_order_through_churn() {
    let mut reg = Registry::new();
    let name = |i: u64| format!("d{:08x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40);
    let mut live = std::collections::BTreeSet::new();
    reg.load((0..6000).map(|i| Twin::new(id(&name(i)))))
        .unwrap();
    live.extend((0..6000).map(name));
    for round in 0..4u64 {
        for i in (round..6000).step_by(5) {
            if live.remove(&name(i)) {
                reg.remove(&name(i)).unwrap();
            }
        }
        for i in 0..700 {
            let n = name(10_000 + round * 1000 + i);
            reg.create(Twin::new(id(&n))).unwrap();
            live.insert(n);
        }
        reg.validate().unwrap();
        let ids: Vec<String> = reg.iter().map(|t| t.device_id().to_string()).collect();
        assert!(
            ids.iter().eq(live.iter()),
            "round {round}: iteration in id order"
        );
        let middle = live.iter().nth(live.len() / 2).unwrap();
        let after: Vec<&str> = reg
            .device_ids(std::ops::Bound::Excluded(middle))
            .map(|(d, _)| d.as_str())
            .take(3)
            .collect();
        let want: Vec<&str> = live
            .range::<String, _>((
                std::ops::Bound::Excluded(middle),
                std::ops::Bound::Unbounded,
            ))
            .map(String::as_str)
            .take(3)
            .collect();
        assert_eq!(after, want, "paging resumes after {middle}");
    }
    // Slots of removed devices come back: far fewer slots than devices ever created.
    let max_slot = reg.universe().max().unwrap();
    assert!(
        (max_slot as usize) < 6000 + 2 * 700,
        "slots are reused ({max_slot})"
    );
}

/// Twin `i` of a small fleet whose rows differ in shape: an optional property comes and
/// goes (shifting the positions after it), strings and numbers repeat, some values are
/// unique, and a few devices are disabled or connected.
fn fleet_twin(i: usize) -> Twin {
    let at = Timestamp::from_millis(t0().as_millis() + i as u64);
    let mut t = Twin::new(id(&format!("dev-{:05}", (i * 7919) % 100_000)))
        .with_device_property("Manufacturer", ["Contoso", "Fabrikam"][i % 2], t0())
        .with_device_property("SerialNumber", format!("SN{i:08}"), at)
        .with_device_property("BatteryLevel", (i % 101) as i64, at)
        .with_service_property("floor", (i % 7) as i64)
        .with_service_property("region", ["eu", "us", "ap"][i % 3])
        .with_tag(["a", "b", "c"][i % 3])
        .with_tag("fleet");
    if i.is_multiple_of(3) {
        // Sorts before every other name: shifts them all by one.
        t = t.with_device_property("/3303/0/5700", (i % 40) as f64 / 4.0, at);
    }
    if i.is_multiple_of(50) {
        t.status = DeviceStatus::Disabled;
        t.status_reason = Some("retired".into());
    }
    if i % 4 == 1 {
        t.connection_state = ConnectionState::Connected;
        t.connection_state_updated_time = Some(at);
    }
    t.is_managed = !i.is_multiple_of(5);
    t
}

/// Feeds twins to a bulk load as borrowed rows.
fn add_rows(bulk: &mut twinhub::registry::BulkLoad<'_>, twins: &[Twin]) {
    use twinhub::registry::NewDevice;
    use twinhub::twin::ScalarRef;
    for t in twins {
        let device: Vec<(&str, ScalarRef<'_>, Timestamp)> = t
            .device_properties
            .iter()
            .map(|(n, p)| (n.as_str(), p.value.borrowed(), p.last_updated_time))
            .collect();
        let service: Vec<(&str, ScalarRef<'_>)> = t
            .service_properties
            .properties
            .iter()
            .map(|(n, v)| match v {
                ServiceValue::Scalar(s) => (n.as_str(), s.borrowed()),
                ServiceValue::Object(_) => unreachable!("the fleet has scalar service values"),
            })
            .collect();
        let tags: Vec<&str> = t
            .service_properties
            .tags
            .iter()
            .map(String::as_str)
            .collect();
        bulk.add(&NewDevice {
            status: t.status,
            status_reason: t.status_reason.as_deref(),
            connection_state: t.connection_state,
            connection_state_updated_time: t.connection_state_updated_time,
            is_managed: t.is_managed,
            device_properties: &device,
            service_properties: &service,
            tags: &tags,
            ..NewDevice::new(t.device_id.as_str())
        })
        .unwrap();
    }
}

/// Twins created one by one, loaded as owned twins and loaded as borrowed rows (over
/// several batches, so the indexing threads run) make the same registry: the same twins
/// (etags included), the same index answers, the same id order.
#[test]
fn bulk_loads_equal_creating_one_by_one() {
    let twins: Vec<Twin> = (0..20_000).map(fleet_twin).collect();
    let mut created = Registry::new();
    for t in &twins {
        created.create(t.clone()).unwrap();
    }
    let mut loaded = Registry::new();
    assert_eq!(loaded.load(twins.clone()), Ok(twins.len()));
    let mut rows = Registry::new();
    let mut bulk = rows.bulk_load();
    add_rows(&mut bulk, &twins);
    assert_eq!(bulk.finish(), twins.len());
    for reg in [&created, &loaded, &rows] {
        reg.validate().unwrap();
    }
    for other in [&loaded, &rows] {
        for t in &twins {
            let id = t.device_id.as_str();
            assert_eq!(
                other.get(id).unwrap().to_twin(),
                created.get(id).unwrap().to_twin()
            );
        }
        let ids = |r: &Registry| {
            r.device_ids(Bound::Unbounded)
                .map(|(d, _)| d.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(other), ids(&created));
        for (kind, name, value) in [
            (
                PropertyKind::Device,
                "Manufacturer",
                Scalar::from("Fabrikam"),
            ),
            (PropertyKind::Device, "BatteryLevel", Scalar::from(42)),
            (PropertyKind::Device, "/3303/0/5700", Scalar::from(2.5)),
            (
                PropertyKind::Device,
                "SerialNumber",
                Scalar::from("SN00012345"),
            ),
            (PropertyKind::Service, "region", Scalar::from("ap")),
        ] {
            let slots = |r: &Registry| {
                let pid = r.property_id(kind, name).unwrap();
                let slots: Vec<u32> = r.value_slots(pid, &value).unwrap().iter().collect();
                slots
                    .iter()
                    .map(|&s| r.twin_at(Slot(s)).unwrap().device_id().to_string())
                    .collect::<BTreeSet<_>>()
            };
            assert_eq!(slots(other), slots(&created), "{name} = {value}");
        }
        let battery = |r: &Registry| {
            let pid = r.property_id(PropertyKind::Device, "BatteryLevel").unwrap();
            r.values_in_range(
                pid,
                Bound::Included(&Scalar::from(10)),
                Bound::Excluded(&Scalar::from(20)),
            )
            .map(|(v, s)| (v.clone(), s.len()))
            .collect::<Vec<_>>()
        };
        assert_eq!(battery(other), battery(&created));
        assert_eq!(other.tag_bitmap("fleet").unwrap().len(), twins.len() as u64);
    }
}

/// A bad row is refused with a typed error naming what is wrong, changes nothing, and
/// the load goes on.
#[test]
fn bulk_rows_refuse_bad_rows_and_go_on() {
    use twinhub::registry::NewDevice;
    use twinhub::twin::ScalarRef;
    let mut reg = reg_with(&["taken"]);
    let mut bulk = reg.bulk_load();
    let invalid = |r: Result<Slot, RegistryError>| match r {
        Err(RegistryError::Invalid { error, .. }) => error,
        other => panic!("expected an invalid row, got {other:?}"),
    };
    let bad_id = invalid(bulk.add(&NewDevice::new("has space")));
    assert!(matches!(bad_id, TwinError::BadDeviceId(_)), "{bad_id:?}");
    assert!(matches!(
        bulk.add(&NewDevice::new("taken")),
        Err(RegistryError::DeviceExists { .. })
    ));
    let long = "x".repeat(5000);
    let e = invalid(bulk.add(&NewDevice {
        status_reason: Some(&long),
        ..NewDevice::new("d1")
    }));
    assert!(
        matches!(
            e,
            TwinError::FieldTooLong {
                field: "statusReason",
                len: 5000
            }
        ),
        "{e:?}"
    );
    let twice = [
        ("BatteryLevel", ScalarRef::from(1), t0()),
        ("BatteryLevel", ScalarRef::from(2), t0()),
    ];
    let e = invalid(bulk.add(&NewDevice {
        device_properties: &twice,
        ..NewDevice::new("d1")
    }));
    assert_eq!(
        e,
        TwinError::DuplicateProperty {
            name: "BatteryLevel".into()
        }
    );
    let wrong = [("BatteryLevel", ScalarRef::from("full"), t0())];
    let e = invalid(bulk.add(&NewDevice {
        device_properties: &wrong,
        ..NewDevice::new("d1")
    }));
    assert!(
        matches!(
            e,
            TwinError::WrongValueType {
                name: "BatteryLevel",
                ..
            }
        ),
        "{e:?}"
    );
    let by_path = [("/3/0/9", ScalarRef::from(5), t0())];
    let e = invalid(bulk.add(&NewDevice {
        device_properties: &by_path,
        ..NewDevice::new("d1")
    }));
    assert!(
        matches!(
            e,
            TwinError::NotCanonicalName {
                canonical: "BatteryLevel",
                ..
            }
        ),
        "{e:?}"
    );
    let bad_tag = invalid(bulk.add(&NewDevice {
        tags: &["a,b"],
        ..NewDevice::new("d1")
    }));
    assert!(
        matches!(bad_tag, TwinError::InvalidTagChar { .. }),
        "{bad_tag:?}"
    );
    let service_twice = [
        ("region", ScalarRef::from("eu")),
        ("region", ScalarRef::from("us")),
    ];
    let e = invalid(bulk.add(&NewDevice {
        service_properties: &service_twice,
        ..NewDevice::new("d1")
    }));
    assert_eq!(
        e,
        TwinError::DuplicateProperty {
            name: "region".into()
        }
    );
    // The same row, fixed, goes in; a repeated tag counts once.
    let good = [("BatteryLevel", ScalarRef::from(5), t0())];
    bulk.add(&NewDevice {
        device_properties: &good,
        tags: &["x", "x"],
        ..NewDevice::new("d1")
    })
    .unwrap();
    assert_eq!(bulk.finish(), 1);
    reg.validate().unwrap();
    assert_eq!(reg.len(), 2);
    let d1 = reg.get("d1").unwrap().to_twin();
    assert_eq!(d1.device_properties["BatteryLevel"].value, Scalar::from(5));
    assert_eq!(d1.service_properties.tags.len(), 1);
}

/// A panic in the caller's iterator in the middle of a load (with a batch being indexed
/// on another thread) leaves the registry consistent, holding the twins before it.
#[test]
fn a_panicking_load_leaves_the_registry_consistent() {
    let mut reg = Registry::new();
    let twins = (0..12_000).map(|i| {
        assert!(i < 10_000, "the source fails");
        fleet_twin(i)
    });
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reg.load(twins)));
    assert!(outcome.is_err());
    reg.validate().unwrap();
    assert_eq!(reg.len(), 10_000);
    assert_eq!(reg.tag_bitmap("fleet").unwrap().len(), 10_000);
}

/// A load into a registry with freed slots (out of order) reuses them and stays
/// consistent.
#[test]
fn bulk_load_after_removals_reuses_slots() {
    let mut reg = Registry::new();
    reg.load((0..3_000).map(fleet_twin)).unwrap();
    for i in (0..3_000).rev().step_by(3) {
        reg.remove(fleet_twin(i).device_id.as_str()).unwrap();
    }
    let more: Vec<Twin> = (3_000..13_000).map(fleet_twin).collect();
    let mut bulk = reg.bulk_load();
    add_rows(&mut bulk, &more);
    bulk.finish();
    reg.validate().unwrap();
    assert_eq!(reg.len(), 2_000 + 10_000);
    assert!(
        reg.universe().max().unwrap() < 13_000 - 1,
        "freed slots were reused"
    );
}

/// `reserve` is a hint: an impossible one changes nothing, a real one leaves the same
/// registry a load without it builds.
#[test]
fn bulk_load_reserve_is_a_hint() {
    let twins: Vec<Twin> = (0..9_000).map(fleet_twin).collect();
    let mut hinted = Registry::new();
    let mut bulk = hinted.bulk_load();
    bulk.reserve(usize::MAX);
    bulk.reserve(twins.len());
    add_rows(&mut bulk, &twins);
    assert_eq!(bulk.finish(), twins.len());
    hinted.validate().unwrap();
    let mut plain = Registry::new();
    let mut bulk = plain.bulk_load();
    add_rows(&mut bulk, &twins);
    bulk.finish();
    for t in &twins {
        let id = t.device_id.as_str();
        assert_eq!(
            hinted.get(id).unwrap().to_twin(),
            plain.get(id).unwrap().to_twin()
        );
    }
}
