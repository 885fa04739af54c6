//! Model-based test: random operation sequences applied to the registry and to a naive
//! model (a `BTreeMap` of owned twins). After every operation the twins agree; after
//! every sequence every index answers exactly what a scan of the model answers, the
//! change feed holds the model's log, and `validate()` passes.

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use twinhub::registry::{ChangeKind, NewDevice, Registry, RegistryError, Slot};
use twinhub::twin::{
    ConnectionState, DeviceProperty, DevicePropertyName, DeviceStatus, Etag, PropertyKind, Scalar,
    ScalarRef, ServiceProperties, ServiceValue, Twin, TwinError,
};
use twinhub::{DeviceId, Timestamp};

const IDS: &[&str] = &["d0", "d1", "d2", "d3", "d4", "d5"];
const DEVICE_NAMES: &[&str] = &[
    "FirmwareVersion",
    "/3/0/3",
    "BatteryLevel",
    "/3/0/9",
    "/3303/0/5700",
    "/3/0/6/1",
    "RebootDevice",
    "Bogus",
];
const SERVICE_NAMES: &[&str] = &["region", "cfg", "n", "bad name"];
const TAGS: &[&str] = &["t0", "t1", "t2", "t3", "bad,tag"];

fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        (0i64..4).prop_map(Scalar::from),
        prop_oneof![Just(0.5), Just(1.0), Just(2.0), Just(-0.0)].prop_map(Scalar::from),
        prop_oneof![Just("1.0"), Just("2.0"), Just("eu"), Just("")].prop_map(Scalar::from),
        any::<bool>().prop_map(Scalar::from),
    ]
}

fn service_value() -> BoxedStrategy<ServiceValue> {
    let leaf = scalar().prop_map(ServiceValue::Scalar);
    leaf.prop_recursive(2, 8, 3, |inner| {
        proptest::collection::btree_map(
            prop_oneof![
                Just("a".to_string()),
                Just("b".to_string()),
                Just("$x".to_string())
            ],
            inner,
            0..3,
        )
        .prop_map(ServiceValue::Object)
    })
    .boxed()
}

#[derive(Clone, Debug)]
enum EtagChoice {
    None,
    Current,
    Stale,
}

fn etag_choice() -> impl Strategy<Value = EtagChoice> {
    prop_oneof![
        3 => Just(EtagChoice::None),
        2 => Just(EtagChoice::Current),
        1 => Just(EtagChoice::Stale),
    ]
}

/// A new device, by index into the name tables.
#[derive(Clone, Debug)]
struct Create {
    id: usize,
    props: Vec<(usize, Scalar)>,
    service: Vec<(usize, ServiceValue)>,
    tags: Vec<usize>,
    connected: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Create(Create),
    /// `Registry::load` of several creates (the batched path).
    Load(Vec<Create>),
    /// A `BulkLoad` of several creates as borrowed rows (scalar service properties
    /// only; repeated names kept, so some rows are rejected and the load goes on).
    BulkRows(Vec<Create>),
    Remove(usize),
    Report(usize, usize, Scalar, u64),
    RemoveDeviceProperty(usize, usize),
    SetService(usize, usize, Option<ServiceValue>, EtagChoice),
    ReplaceService(usize, Vec<(usize, ServiceValue)>, Vec<usize>, EtagChoice),
    AddTags(usize, Vec<usize>, EtagChoice),
    RemoveTags(usize, Vec<usize>, EtagChoice),
    ReplaceTags(usize, Vec<usize>, EtagChoice),
    Connection(usize, bool, u64),
    Status(usize, bool, Option<String>, u64),
    Managed(usize, bool),
    Configuration(usize, Option<String>),
    LastActivity(usize, u64),
}

fn create() -> impl Strategy<Value = Create> {
    let tags = proptest::collection::vec(0..TAGS.len(), 0..3);
    let service = proptest::collection::vec((0..SERVICE_NAMES.len(), service_value()), 0..3);
    (
        0..IDS.len(),
        proptest::collection::vec((0..DEVICE_NAMES.len(), scalar()), 0..4),
        service,
        tags,
        any::<bool>(),
    )
        .prop_map(|(id, props, service, tags, connected)| Create {
            id,
            props,
            service,
            tags,
            connected,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS.len();
    let tags = proptest::collection::vec(0..TAGS.len(), 0..3);
    let service = proptest::collection::vec((0..SERVICE_NAMES.len(), service_value()), 0..3);
    prop_oneof![
        4 => create().prop_map(Op::Create),
        1 => proptest::collection::vec(create(), 0..6).prop_map(Op::Load),
        1 => proptest::collection::vec(create(), 0..6).prop_map(Op::BulkRows),
        1 => id.clone().prop_map(Op::Remove),
        6 => (id.clone(), 0..DEVICE_NAMES.len(), scalar(), 0u64..5)
            .prop_map(|(i, n, v, t)| Op::Report(i, n, v, t)),
        1 => (id.clone(), 0..DEVICE_NAMES.len()).prop_map(|(i, n)| Op::RemoveDeviceProperty(i, n)),
        3 => (
            id.clone(),
            0..SERVICE_NAMES.len(),
            proptest::option::of(service_value()),
            etag_choice()
        )
            .prop_map(|(i, n, v, e)| Op::SetService(i, n, v, e)),
        1 => (id.clone(), service, tags.clone(), etag_choice())
            .prop_map(|(i, s, t, e)| Op::ReplaceService(i, s, t, e)),
        2 => (id.clone(), tags.clone(), etag_choice()).prop_map(|(i, t, e)| Op::AddTags(i, t, e)),
        1 => (id.clone(), tags.clone(), etag_choice())
            .prop_map(|(i, t, e)| Op::RemoveTags(i, t, e)),
        1 => (id.clone(), tags, etag_choice()).prop_map(|(i, t, e)| Op::ReplaceTags(i, t, e)),
        1 => (id.clone(), any::<bool>(), 0u64..5).prop_map(|(i, c, t)| Op::Connection(i, c, t)),
        1 => (
            id.clone(),
            any::<bool>(),
            proptest::option::of("[a-z]{0,3}"),
            0u64..5
        )
            .prop_map(|(i, e, r, t)| Op::Status(i, e, r, t)),
        1 => (id.clone(), any::<bool>()).prop_map(|(i, m)| Op::Managed(i, m)),
        1 => (id.clone(), proptest::option::of("[a-z]{0,3}"))
            .prop_map(|(i, c)| Op::Configuration(i, c)),
        1 => (id, 0u64..5).prop_map(|(i, t)| Op::LastActivity(i, t)),
    ]
}

/// The naive model: owned twins, a sequence counter and the log of changes.
#[derive(Default)]
struct Model {
    twins: BTreeMap<String, Twin>,
    seq: u64,
    log: Vec<(u64, String, ChangeKind)>,
}

fn ts(t: u64) -> Timestamp {
    Timestamp::from_millis(1_461_931_200_000 + t)
}

impl Model {
    fn bump(&mut self, id: &str, kind: ChangeKind, service: bool) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        self.log.push((seq, id.to_string(), kind));
        if let Some(t) = self.twins.get_mut(id) {
            t.etag = Etag(seq);
            if service {
                t.service_properties.etag = Etag(seq);
            }
        }
        seq
    }

    fn etag_for(&self, id: &str, choice: &EtagChoice) -> Option<Etag> {
        let cur = self
            .twins
            .get(id)
            .map_or(Etag(0), |t| t.service_properties.etag);
        match choice {
            EtagChoice::None => None,
            EtagChoice::Current => Some(cur),
            EtagChoice::Stale => Some(Etag(cur.0 + 1000)),
        }
    }
}

fn tags_of(ix: &[usize]) -> Vec<&'static str> {
    ix.iter().map(|&i| TAGS[i]).collect()
}

/// The twin a create describes.
fn twin_of(c: &Create) -> Twin {
    twin_with(c, true)
}

/// [`twin_of`], leaving out object service values unless `objects`.
fn twin_with(c: &Create, objects: bool) -> Twin {
    let Create {
        id,
        props,
        service,
        tags,
        connected,
    } = c;
    let mut t = Twin::new(DeviceId::new(IDS[*id]).unwrap());
    for (n, v) in props {
        t = t.with_device_property(DEVICE_NAMES[*n], v.clone(), ts(0));
    }
    for (n, v) in service {
        if objects || matches!(v, ServiceValue::Scalar(_)) {
            t = t.with_service_property(SERVICE_NAMES[*n], v.clone());
        }
    }
    for &i in tags {
        t = t.with_tag(TAGS[i]);
    }
    if *connected {
        t.connection_state = ConnectionState::Connected;
    }
    t
}

/// `BulkLoad::add` of a create as a borrowed row; checks the outcome against the
/// model's prediction (a repeated name is invalid; otherwise as creating the twin).
fn add_row(
    bulk: &mut twinhub::registry::BulkLoad<'_>,
    model: &mut Model,
    c: &Create,
) -> Result<bool, TestCaseError> {
    let device: Vec<(&str, ScalarRef<'_>, Timestamp)> = c
        .props
        .iter()
        .map(|(n, v)| (DEVICE_NAMES[*n], v.borrowed(), ts(0)))
        .collect();
    let service: Vec<(&str, ScalarRef<'_>)> = c
        .service
        .iter()
        .filter_map(|(n, v)| match v {
            ServiceValue::Scalar(s) => Some((SERVICE_NAMES[*n], s.borrowed())),
            ServiceValue::Object(_) => None,
        })
        .collect();
    let tags: Vec<&str> = c.tags.iter().map(|&i| TAGS[i]).collect();
    let row = NewDevice {
        connection_state: if c.connected {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        },
        device_properties: &device,
        service_properties: &service,
        tags: &tags,
        ..NewDevice::new(IDS[c.id])
    };
    let got = bulk.add(&row).map(|_| ());
    let repeats = |names: Vec<&str>| names.iter().collect::<BTreeSet<_>>().len() < names.len();
    let t = twin_with(c, false);
    let exists = model.twins.contains_key(IDS[c.id]);
    if !exists
        && (repeats(device.iter().map(|d| d.0).collect())
            || repeats(service.iter().map(|s| s.0).collect()))
    {
        // Rejected (for the repeat, or for a name or value checked before it).
        prop_assert!(
            matches!(got, Err(RegistryError::Invalid { .. })),
            "{:?}",
            got
        );
        return Ok(false);
    }
    let admitted = got.is_ok();
    match (got, model_create(model, t)) {
        (Ok(()), Ok(())) => {}
        // Which of several faults is named first may differ from a twin's order.
        (Err(RegistryError::Invalid { id: a, .. }), Err(RegistryError::Invalid { id: b, .. })) => {
            prop_assert_eq!(a, b)
        }
        (got, want) => prop_assert_eq!(got, want),
    }
    Ok(admitted)
}

/// What creating `t` does to the model: `Err` (model untouched) as the registry must fail.
fn model_create(model: &mut Model, mut t: Twin) -> Result<(), RegistryError> {
    let id = t.device_id.to_string();
    if model.twins.contains_key(&id) {
        return Err(RegistryError::DeviceExists { id: t.device_id });
    }
    t.validate().map_err(|error| RegistryError::Invalid {
        id: id.clone(),
        error,
    })?;
    let seq = model.seq + 1;
    t.generation_id = Etag(seq);
    t.etag = Etag(seq);
    t.service_properties.etag = Etag(seq);
    model.twins.insert(id.clone(), t);
    model.bump(&id, ChangeKind::Created, true);
    Ok(())
}

/// Applies `op` to both; checks the outcome agrees with the model's prediction.
fn apply(reg: &mut Registry, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Load(creates) => {
            let twins: Vec<Twin> = creates.iter().map(twin_of).collect();
            let got = reg.load(twins.clone());
            let mut expected = Ok(0);
            for t in twins {
                match model_create(model, t) {
                    Ok(()) => expected = expected.map(|n| n + 1),
                    Err(e) => {
                        expected = Err(e);
                        break;
                    }
                }
            }
            prop_assert_eq!(got, expected);
        }
        Op::BulkRows(creates) => {
            let mut bulk = reg.bulk_load();
            let mut added = 0;
            for create in creates {
                added += usize::from(add_row(&mut bulk, model, create)?);
            }
            prop_assert_eq!(bulk.finish(), added);
        }
        Op::Create(c) => {
            let t = twin_of(c);
            let got = reg.create(t.clone()).map(|_| ());
            prop_assert_eq!(got, model_create(model, t));
        }
        Op::Remove(id) => {
            let got = reg.remove(IDS[*id]);
            match model.twins.remove(IDS[*id]) {
                Some(t) => {
                    prop_assert_eq!(got, Ok(t));
                    model.bump(IDS[*id], ChangeKind::Removed, false);
                }
                None => prop_assert!(
                    matches!(got, Err(RegistryError::DeviceNotFound { .. })),
                    "{:?}",
                    got
                ),
            }
        }
        Op::Report(id, n, v, t) => {
            let got = reg.report_device_property(IDS[*id], DEVICE_NAMES[*n], v.clone(), ts(*t));
            if !model.twins.contains_key(IDS[*id]) {
                prop_assert!(
                    matches!(got, Err(RegistryError::DeviceNotFound { .. })),
                    "{:?}",
                    got
                );
                return Ok(());
            }
            let checked = DevicePropertyName::parse(DEVICE_NAMES[*n])
                .and_then(|name| name.check_value(v).map(|_| name));
            match checked {
                Err(e) => prop_assert_eq!(
                    got,
                    Err(RegistryError::Invalid {
                        id: IDS[*id].into(),
                        error: e
                    })
                ),
                Ok(name) => {
                    prop_assert_eq!(got, Ok(()));
                    let previous = model
                        .twins
                        .get_mut(IDS[*id])
                        .unwrap()
                        .device_properties
                        .insert(
                            name.as_str().to_string(),
                            DeviceProperty {
                                value: v.clone(),
                                last_updated_time: ts(*t),
                            },
                        );
                    let name = name.as_str().into();
                    let kind = ChangeKind::DeviceProperty {
                        name,
                        value: v.clone(),
                        previous: previous.map(|p| p.value),
                    };
                    model.bump(IDS[*id], kind, false);
                }
            }
        }
        Op::RemoveDeviceProperty(id, n) => {
            let got = reg.remove_device_property(IDS[*id], DEVICE_NAMES[*n]);
            let Some(t) = model.twins.get_mut(IDS[*id]) else {
                prop_assert!(
                    matches!(got, Err(RegistryError::DeviceNotFound { .. })),
                    "{:?}",
                    got
                );
                return Ok(());
            };
            match DevicePropertyName::parse(DEVICE_NAMES[*n]) {
                Err(e) => prop_assert!(
                    matches!(got, Err(RegistryError::Invalid { ref error, .. }) if *error == e),
                    "{:?}",
                    got
                ),
                Ok(name) => {
                    let removed = t.device_properties.remove(name.as_str()).is_some();
                    prop_assert_eq!(got, Ok(removed));
                    if removed {
                        let name = name.as_str().into();
                        model.bump(IDS[*id], ChangeKind::DevicePropertyRemoved { name }, false);
                    }
                }
            }
        }
        Op::SetService(id, n, v, e) => {
            let if_match = model.etag_for(IDS[*id], e);
            let got = reg.set_service_property(IDS[*id], SERVICE_NAMES[*n], v.clone(), if_match);
            let Some(t) = model.twins.get(IDS[*id]) else {
                prop_assert!(
                    matches!(got, Err(RegistryError::DeviceNotFound { .. })),
                    "{:?}",
                    got
                );
                return Ok(());
            };
            let mut next = t.clone();
            match v {
                Some(v) => {
                    next.service_properties
                        .properties
                        .insert(SERVICE_NAMES[*n].into(), v.clone());
                }
                None => {
                    next.service_properties.properties.remove(SERVICE_NAMES[*n]);
                }
            }
            let invalid = twinhub::twin::validate_property_name(SERVICE_NAMES[*n])
                .and_then(|_| next.validate());
            expect_service_outcome(
                model,
                IDS[*id],
                got,
                invalid,
                if_match,
                next,
                ChangeKind::ServiceProperties,
            )?;
        }
        Op::ReplaceService(id, s, tags, e) => {
            let if_match = model.etag_for(IDS[*id], e);
            let props = ServiceProperties {
                etag: Etag(0),
                properties: s
                    .iter()
                    .map(|(n, v)| (SERVICE_NAMES[*n].to_string(), v.clone()))
                    .collect(),
                tags: tags_of(tags).into_iter().map(String::from).collect(),
            };
            let got = reg.replace_service_properties(IDS[*id], &props, if_match);
            let Some(t) = model.twins.get(IDS[*id]) else {
                prop_assert!(
                    matches!(got, Err(RegistryError::DeviceNotFound { .. })),
                    "{:?}",
                    got
                );
                return Ok(());
            };
            let mut next = t.clone();
            next.service_properties.properties = props.properties.clone();
            next.service_properties.tags = props.tags.clone();
            let invalid = next.validate();
            expect_service_outcome(
                model,
                IDS[*id],
                got,
                invalid,
                if_match,
                next,
                ChangeKind::ServiceProperties,
            )?;
        }
        Op::AddTags(id, tags, e) | Op::RemoveTags(id, tags, e) | Op::ReplaceTags(id, tags, e) => {
            let if_match = model.etag_for(IDS[*id], e);
            let given = tags_of(tags);
            let got = match op {
                Op::AddTags(..) => reg.add_tags(IDS[*id], &given, if_match),
                Op::RemoveTags(..) => reg.remove_tags(IDS[*id], &given, if_match),
                _ => reg.replace_tags(IDS[*id], &given, if_match),
            };
            let Some(t) = model.twins.get(IDS[*id]) else {
                prop_assert!(
                    matches!(got, Err(RegistryError::DeviceNotFound { .. })),
                    "{:?}",
                    got
                );
                return Ok(());
            };
            let mut next = t.clone();
            let cur = &mut next.service_properties.tags;
            match op {
                Op::AddTags(..) => cur.extend(given.iter().map(|s| s.to_string())),
                Op::RemoveTags(..) => given.iter().for_each(|g| {
                    cur.remove(*g);
                }),
                _ => *cur = given.iter().map(|s| s.to_string()).collect(),
            }
            let invalid = given
                .iter()
                .try_for_each(|g| twinhub::twin::validate_tag(g))
                .and_then(|_| next.validate());
            expect_service_outcome(
                model,
                IDS[*id],
                got,
                invalid,
                if_match,
                next,
                ChangeKind::Tags,
            )?;
        }
        Op::Connection(id, c, t) => {
            let state = if *c {
                ConnectionState::Connected
            } else {
                ConnectionState::Disconnected
            };
            let got = reg.set_connection_state(IDS[*id], state, ts(*t));
            field_outcome(
                model,
                IDS[*id],
                got,
                ChangeKind::ConnectionState(state),
                |tw| {
                    tw.connection_state = state;
                    tw.connection_state_updated_time = Some(ts(*t));
                },
            )?;
        }
        Op::Status(id, e, r, t) => {
            let status = if *e {
                DeviceStatus::Enabled
            } else {
                DeviceStatus::Disabled
            };
            let got = reg.set_status(IDS[*id], status, r.clone(), ts(*t));
            field_outcome(model, IDS[*id], got, ChangeKind::Status(status), |tw| {
                tw.status = status;
                tw.status_reason = r.clone();
                tw.status_updated_time = Some(ts(*t));
            })?;
        }
        Op::Managed(id, m) => {
            let got = reg.set_managed(IDS[*id], *m);
            field_outcome(model, IDS[*id], got, ChangeKind::Managed(*m), |tw| {
                tw.is_managed = *m
            })?;
        }
        Op::Configuration(id, c) => {
            let got = reg.set_configuration(IDS[*id], c.clone());
            field_outcome(model, IDS[*id], got, ChangeKind::Configuration, |tw| {
                tw.configuration = c.clone()
            })?;
        }
        Op::LastActivity(id, t) => {
            let got = reg.set_last_activity(IDS[*id], ts(*t));
            field_outcome(model, IDS[*id], got, ChangeKind::LastActivity, |tw| {
                tw.last_activity_time = Some(ts(*t))
            })?;
        }
    }
    Ok(())
}

fn field_outcome(
    model: &mut Model,
    id: &str,
    got: Result<(), RegistryError>,
    kind: ChangeKind,
    change: impl FnOnce(&mut Twin),
) -> Result<(), TestCaseError> {
    match model.twins.get_mut(id) {
        None => prop_assert!(
            matches!(got, Err(RegistryError::DeviceNotFound { .. })),
            "{:?}",
            got
        ),
        Some(t) => {
            prop_assert_eq!(got, Ok(()));
            change(t);
            model.bump(id, kind, false);
        }
    }
    Ok(())
}

fn expect_service_outcome(
    model: &mut Model,
    id: &str,
    got: Result<Etag, RegistryError>,
    invalid: Result<(), TwinError>,
    if_match: Option<Etag>,
    next: Twin,
    kind: ChangeKind,
) -> Result<(), TestCaseError> {
    let cur = model.twins[id].service_properties.etag;
    if let Err(error) = invalid {
        prop_assert_eq!(
            got,
            Err(RegistryError::Invalid {
                id: id.into(),
                error
            })
        );
    } else if let Some(expected) = if_match.filter(|e| *e != cur) {
        prop_assert_eq!(
            got,
            Err(RegistryError::PreconditionFailed {
                id: DeviceId::new(id).unwrap(),
                expected,
                actual: cur
            })
        );
    } else {
        model.twins.insert(id.to_string(), next);
        let seq = model.bump(id, kind, true);
        prop_assert_eq!(got, Ok(Etag(seq)));
    }
    Ok(())
}

fn ids_of(reg: &Registry, slots: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    slots
        .into_iter()
        .map(|s| reg.twin_at(Slot(s)).unwrap().device_id().to_string())
        .collect()
}

/// Every twin and every index answer against the model.
fn check_all(reg: &Registry, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(reg.validate(), Ok(()));
    prop_assert_eq!(reg.len(), model.twins.len());
    for (id, t) in &model.twins {
        let view = reg.get(id).unwrap();
        prop_assert_eq!(&view.to_twin(), t);
        prop_assert_eq!(
            serde_json::to_string(&view).unwrap(),
            serde_json::to_string(t).unwrap()
        );
    }
    let iter_ids: Vec<String> = reg.iter().map(|t| t.device_id().to_string()).collect();
    let model_ids: Vec<String> = model.twins.keys().cloned().collect();
    prop_assert_eq!(&iter_ids, &model_ids);
    let ordered: Vec<String> = reg
        .device_ids(Bound::Unbounded)
        .map(|(id, _)| id.to_string())
        .collect();
    prop_assert_eq!(&ordered, &model_ids);
    prop_assert_eq!(
        ids_of(reg, reg.universe().iter()),
        model.twins.keys().cloned().collect::<BTreeSet<_>>()
    );

    let scan = |f: &dyn Fn(&Twin) -> bool| -> BTreeSet<String> {
        model
            .twins
            .iter()
            .filter(|(_, t)| f(t))
            .map(|(id, _)| id.clone())
            .collect()
    };
    for tag in TAGS {
        let got = reg
            .tag_bitmap(tag)
            .map_or_else(BTreeSet::new, |b| ids_of(reg, b.iter()));
        prop_assert_eq!(got, scan(&|t| t.service_properties.tags.contains(*tag)));
    }
    for st in [DeviceStatus::Enabled, DeviceStatus::Disabled] {
        prop_assert_eq!(
            ids_of(reg, reg.status_bitmap(st).iter()),
            scan(&|t| t.status == st)
        );
    }
    for c in [ConnectionState::Connected, ConnectionState::Disconnected] {
        prop_assert_eq!(
            ids_of(reg, reg.connection_bitmap(c).iter()),
            scan(&|t| t.connection_state == c)
        );
    }
    for m in [true, false] {
        prop_assert_eq!(
            ids_of(reg, reg.managed_bitmap(m).iter()),
            scan(&|t| t.is_managed == m)
        );
    }

    // Every property the model has, plus the queried ones: exists, equality and ranges.
    let mut device_names: BTreeSet<String> = model
        .twins
        .values()
        .flat_map(|t| t.device_properties.keys().cloned())
        .collect();
    device_names.insert("FirmwareVersion".into());
    let probes: Vec<Scalar> = vec![
        Scalar::from(false),
        Scalar::from(true),
        Scalar::from(0),
        Scalar::from(1),
        Scalar::from(1.0),
        Scalar::from(0.5),
        Scalar::from(2),
        Scalar::from(3),
        Scalar::from(""),
        Scalar::from("1.0"),
        Scalar::from("eu"),
    ];
    for name in &device_names {
        let value_of = |t: &Twin| t.device_properties.get(name).map(|p| p.value.clone());
        check_property(reg, PropertyKind::Device, name, &scan, &value_of, &probes)?;
    }
    let mut service_names = BTreeSet::new();
    for t in model.twins.values() {
        for (n, v) in &t.service_properties.properties {
            leaf_names(n, v, &mut service_names);
        }
    }
    for name in &service_names {
        let value_of = |t: &Twin| service_leaf(t, name);
        check_property(reg, PropertyKind::Service, name, &scan, &value_of, &probes)?;
        let exists = reg
            .property_id(PropertyKind::Service, name)
            .and_then(|p| reg.exists_bitmap(p))
            .map_or_else(BTreeSet::new, |b| ids_of(reg, b.iter()));
        prop_assert_eq!(
            exists,
            scan(&|t| service_node_exists(t, name)),
            "exists {}",
            name
        );
    }

    // The change feed is the model's log.
    let feed: Vec<(u64, String, ChangeKind)> = reg
        .changes_after(0)
        .unwrap()
        .map(|c| (c.seq, c.device.to_string(), c.kind.clone()))
        .collect();
    prop_assert_eq!(&feed, &model.log);
    prop_assert_eq!(reg.last_seq(), model.seq);
    let half = model.seq / 2;
    prop_assert_eq!(
        reg.changes_after(half).unwrap().count() as u64,
        model.seq - half
    );
    Ok(())
}

fn leaf_names(prefix: &str, v: &ServiceValue, out: &mut BTreeSet<String>) {
    out.insert(prefix.to_string());
    if let ServiceValue::Object(m) = v {
        for (k, v) in m {
            leaf_names(&format!("{prefix}.{k}"), v, out);
        }
    }
}

fn service_node<'a>(t: &'a Twin, path: &str) -> Option<&'a ServiceValue> {
    let mut parts = path.split('.');
    let mut cur = t.service_properties.properties.get(parts.next()?)?;
    for p in parts {
        match cur {
            ServiceValue::Object(m) => cur = m.get(p)?,
            ServiceValue::Scalar(_) => return None,
        }
    }
    Some(cur)
}

fn service_leaf(t: &Twin, path: &str) -> Option<Scalar> {
    service_node(t, path).and_then(|v| v.as_scalar().cloned())
}

fn service_node_exists(t: &Twin, path: &str) -> bool {
    service_node(t, path).is_some()
}

/// Ids of the model twins that satisfy a predicate.
type Scan<'a> = dyn Fn(&dyn Fn(&Twin) -> bool) -> BTreeSet<String> + 'a;

fn check_property(
    reg: &Registry,
    kind: PropertyKind,
    name: &str,
    scan: &Scan,
    value_of: &dyn Fn(&Twin) -> Option<Scalar>,
    probes: &[Scalar],
) -> Result<(), TestCaseError> {
    let pid = reg.property_id(kind, name);
    if kind == PropertyKind::Device {
        let exists = pid
            .and_then(|p| reg.exists_bitmap(p))
            .map_or_else(BTreeSet::new, |b| ids_of(reg, b.iter()));
        prop_assert_eq!(exists, scan(&|t| value_of(t).is_some()), "exists {}", name);
    }
    for v in probes {
        let got = pid
            .and_then(|p| reg.value_slots(p, v))
            .map_or_else(BTreeSet::new, |s| ids_of(reg, s.iter()));
        prop_assert_eq!(
            got,
            scan(&|t| value_of(t).as_ref() == Some(v)),
            "{} = {}",
            name,
            v
        );
        for w in probes {
            let (lo, hi) = (Bound::Included(v), Bound::Excluded(w));
            let got = pid.map_or_else(BTreeSet::new, |p| {
                ids_of(reg, reg.range_bitmap(p, lo, hi).iter())
            });
            let expected = scan(&|t| value_of(t).is_some_and(|x| &x >= v && &x < w));
            prop_assert_eq!(got, expected, "{} in [{}, {})", name, v, w);
        }
    }
    if let Some(p) = pid {
        let values: Vec<Scalar> = reg
            .values_in_range(p, Bound::Unbounded, Bound::Unbounded)
            .map(|(v, _)| v.clone())
            .collect();
        let mut expected: Vec<Scalar> = Vec::new();
        for t in reg.iter() {
            if let Some(v) = reg.value_of(t.slot(), p) {
                expected.push(v.clone());
            }
        }
        expected.sort();
        expected.dedup();
        prop_assert_eq!(&values, &expected, "ordered values of {}", name);
        let reversed: Vec<Scalar> = reg
            .values_in_range(p, Bound::Unbounded, Bound::Unbounded)
            .rev()
            .map(|(v, _)| v.clone())
            .collect();
        prop_assert!(reversed.iter().eq(values.iter().rev()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn registry_matches_naive_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut reg = Registry::with_feed_capacity(1000);
        let mut model = Model::default();
        for op in &ops {
            apply(&mut reg, &mut model, op)?;
            for (id, t) in &model.twins {
                prop_assert_eq!(&reg.get(id).unwrap().to_twin(), t);
            }
        }
        check_all(&reg, &model)?;
    }
}
