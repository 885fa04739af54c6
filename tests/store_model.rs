//! Model test of the durable store: random operation sequences on a registry opened from
//! a store, with commits, clean reopens and "crashes" (the store and registry dropped
//! without a commit) at random points. The model is the acknowledged state: the twins as
//! they were at the last commit that returned. After every reopen the registry holds
//! exactly those twins (etags, generation ids and PSK keys included), its indexes pass
//! `validate()`, and every sequence number handed out afterwards is larger than any
//! handed out before the crash.

use proptest::prelude::*;
use std::collections::BTreeMap;
use twinhub::registry::{Change, Registry};
use twinhub::store::{SealingKey, Store, StoreConfig};
use twinhub::twin::{DeviceStatus, PskKey, Scalar, ServiceValue, Twin};
use twinhub::{DeviceId, Timestamp};

const IDS: &[&str] = &["d0", "d1", "d2", "d3"];
const PROPS: &[&str] = &["FirmwareVersion", "BatteryLevel", "/3303/0/5700", "/9/0/1"];
const SERVICE: &[&str] = &["region", "cfg"];
const TAGS: &[&str] = &["t0", "t1", "t2"];

#[derive(Clone, Debug)]
enum Op {
    Create(usize, Vec<usize>),
    Remove(usize),
    Report(usize, usize, i64, u64),
    RemoveProp(usize, usize),
    Service(usize, usize, Option<i64>),
    Nested(usize, usize, i64),
    AddTag(usize, usize),
    RemoveTag(usize, usize),
    Status(usize, bool),
    Psk(usize, Vec<u8>),
    Commit,
    Crash,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS.len();
    prop_oneof![
        3 => (id.clone(), proptest::collection::vec(0..TAGS.len(), 0..3)).prop_map(|(i, t)| Op::Create(i, t)),
        1 => id.clone().prop_map(Op::Remove),
        6 => (id.clone(), 0..PROPS.len(), 0i64..100, 0u64..1_000_000).prop_map(|(i, p, v, t)| Op::Report(i, p, v, t)),
        1 => (id.clone(), 0..PROPS.len()).prop_map(|(i, p)| Op::RemoveProp(i, p)),
        2 => (id.clone(), 0..SERVICE.len(), proptest::option::of(0i64..5)).prop_map(|(i, s, v)| Op::Service(i, s, v)),
        1 => (id.clone(), 0..SERVICE.len(), 0i64..5).prop_map(|(i, s, v)| Op::Nested(i, s, v)),
        2 => (id.clone(), 0..TAGS.len()).prop_map(|(i, t)| Op::AddTag(i, t)),
        1 => (id.clone(), 0..TAGS.len()).prop_map(|(i, t)| Op::RemoveTag(i, t)),
        1 => (id.clone(), any::<bool>()).prop_map(|(i, e)| Op::Status(i, e)),
        1 => (id, proptest::collection::vec(any::<u8>(), 1..4)).prop_map(|(i, k)| Op::Psk(i, k)),
        3 => Just(Op::Commit),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

/// Applies one registry operation; errors (a missing device, a removed property) are
/// part of the sequence and change nothing.
fn apply(reg: &mut Registry, op: &Op) {
    match op {
        Op::Create(i, tags) => {
            let mut t = Twin::new(DeviceId::new(IDS[*i]).unwrap());
            for &tag in tags {
                t = t.with_tag(TAGS[tag]);
            }
            let _ = reg.create(t);
        }
        Op::Remove(i) => {
            let _ = reg.remove(IDS[*i]);
        }
        Op::Report(i, p, v, t) => {
            let value = match PROPS[*p] {
                "FirmwareVersion" => Scalar::from(format!("1.{v}")),
                "BatteryLevel" => Scalar::from(*v),
                _ => Scalar::from(*v as f64 / 4.0),
            };
            let _ =
                reg.report_device_property(IDS[*i], PROPS[*p], value, Timestamp::from_millis(*t));
        }
        Op::RemoveProp(i, p) => {
            let _ = reg.remove_device_property(IDS[*i], PROPS[*p]);
        }
        Op::Service(i, s, v) => {
            let _ = reg.set_service_property(IDS[*i], SERVICE[*s], v.map(ServiceValue::from), None);
        }
        Op::Nested(i, s, v) => {
            let value: ServiceValue =
                serde_json::from_str(&format!(r#"{{"a":{v},"b":"x"}}"#)).unwrap();
            let _ = reg.set_service_property(IDS[*i], SERVICE[*s], Some(value), None);
        }
        Op::AddTag(i, t) => {
            let _ = reg.add_tags(IDS[*i], &[TAGS[*t]], None);
        }
        Op::RemoveTag(i, t) => {
            let _ = reg.remove_tags(IDS[*i], &[TAGS[*t]], None);
        }
        Op::Status(i, enabled) => {
            let status = if *enabled {
                DeviceStatus::Enabled
            } else {
                DeviceStatus::Disabled
            };
            let _ = reg.set_status(
                IDS[*i],
                status,
                Some("model".into()),
                Timestamp::from_millis(1),
            );
        }
        Op::Psk(i, key) => {
            let auth = twinhub::twin::Authentication {
                psk_identity: Some(format!("psk-{i}")),
                psk_key: Some(PskKey::new(key.clone())),
            };
            let _ = reg.set_authentication(IDS[*i], auth);
        }
        Op::Commit | Op::Crash | Op::Reopen => unreachable!("handled by the runner"),
    }
}

fn snapshot(reg: &Registry) -> BTreeMap<String, Twin> {
    reg.iter()
        .map(|t| (t.device_id().to_string(), t.to_twin()))
        .collect()
}

/// The acknowledged state: the twins and the change feed as the last commit left them.
#[derive(Default)]
struct Model {
    acked: BTreeMap<String, Twin>,
    acked_seq: u64,
    log: Vec<Change>,
    log_dropped: u64,
}

impl Model {
    fn ack(&mut self, reg: &Registry) {
        match reg.changes_after(self.acked_seq) {
            Ok(changes) => self.log.extend(changes.cloned()),
            Err(_) => {
                self.log.clear();
                self.log_dropped = reg.last_seq();
            }
        }
        self.acked = snapshot(reg);
        self.acked_seq = reg.last_seq();
    }
}

/// Whether the store seals PSK keys: never, from the start, from the first reopening on
/// (a store written without a sealing key, opened with one), or from the start with the
/// key changed, or sealing turned off, at the first reopening (the old key retired).
#[derive(Clone, Copy, Debug)]
enum Sealing {
    Never,
    Always,
    FromReopen,
    ChangedAtReopen,
    OffAtReopen,
}

fn run(
    ops: &[Op],
    feed_capacity: usize,
    log_limit: usize,
    sealing: Sealing,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::default();
    config.feed_capacity = feed_capacity;
    config.property_log_limit = log_limit;
    let (key, next) = (SealingKey::new([0x42; 32]), SealingKey::new([0x43; 32]));
    if !matches!(sealing, Sealing::Never | Sealing::FromReopen) {
        config.sealing_key = Some(key.clone());
    }
    let (mut store, mut reg) = Store::open(dir.path(), config.clone()).unwrap();
    let mut m = Model::default();
    // The largest sequence number the registry ever handed out (seen or not).
    let mut handed_out = 0;
    for op in ops {
        match op {
            Op::Commit => {
                store.commit(&reg).unwrap();
                m.ack(&reg);
            }
            Op::Crash | Op::Reopen => {
                if matches!(op, Op::Reopen) {
                    store.commit(&reg).unwrap();
                    m.ack(&reg);
                }
                handed_out = handed_out.max(reg.last_seq());
                drop((store, reg));
                match sealing {
                    Sealing::Never | Sealing::Always => {}
                    Sealing::FromReopen => config.sealing_key = Some(key.clone()),
                    Sealing::ChangedAtReopen => {
                        config.sealing_key = Some(next.clone());
                        config.retired_sealing_keys = vec![key.clone()];
                    }
                    Sealing::OffAtReopen => {
                        config.sealing_key = None;
                        config.retired_sealing_keys = vec![key.clone()];
                    }
                }
                (store, reg) = Store::open(dir.path(), config.clone()).unwrap();
                prop_assert_eq!(&snapshot(&reg), &m.acked);
                prop_assert!(reg.validate().is_ok(), "{:?}", reg.validate());
                prop_assert!(reg.last_seq() >= handed_out, "the sequence went back");
                prop_assert!(store.committed_seq() >= m.acked_seq);
                // Resuming after the acknowledged sequence is no gap.
                prop_assert!(reg.changes_after(store.committed_seq()).is_ok());
                // The store serves the acknowledged feed; the registry's ring its tail.
                let on_disk = store.changes_after(m.log_dropped, usize::MAX).unwrap();
                prop_assert_eq!(on_disk.as_ref(), Ok(&m.log));
                if m.log_dropped > 0 {
                    prop_assert!(store.changes_after(m.log_dropped - 1, 1).unwrap().is_err());
                }
                let (log, tail) = (&m.log, m.log.len().min(reg.feed_capacity()));
                if tail > 0 {
                    let from = log[log.len() - tail].seq - 1;
                    let ring: Vec<Change> = reg.changes_after(from).unwrap().cloned().collect();
                    prop_assert_eq!(&ring[..], &log[log.len() - tail..]);
                }
            }
            _ => {
                let before = reg.last_seq();
                apply(&mut reg, op);
                if reg.last_seq() > before {
                    prop_assert!(reg.last_seq() > handed_out, "a sequence number repeated");
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reopened_store_holds_exactly_the_acknowledged_twins(
        ops in proptest::collection::vec(op(), 1..60),
        small_feed in any::<bool>(),
        log_limit in prop_oneof![Just(1usize), Just(2), Just(5), Just(1 << 20)],
        sealing in prop_oneof![
            Just(Sealing::Never),
            Just(Sealing::Always),
            Just(Sealing::FromReopen),
            Just(Sealing::ChangedAtReopen),
            Just(Sealing::OffAtReopen),
        ],
    ) {
        // A 3-change feed makes most commits rewrite every twin (the feed gap path).
        // A log of 1 to 5 changes folds every commit, partly or wholly; the default
        // folds one twin a commit, so most changes are read back from the log.
        // Sealed keys read back equal (the snapshot compares each twin's key).
        run(&ops, if small_feed { 3 } else { 1024 }, log_limit, sealing)?;
    }
}

#[test]
fn a_fresh_directory_opens_empty_and_a_second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(reg.is_empty());
    let err = Store::open(dir.path(), StoreConfig::default()).unwrap_err();
    assert!(
        matches!(err, twinhub::store::StoreError::InUse { .. }),
        "{err}"
    );
    drop(store);
    assert!(Store::open(dir.path(), StoreConfig::default()).is_ok());
}

#[test]
fn commit_all_imports_a_registry_built_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut mem = Registry::new();
    for i in 0..50 {
        let t = Twin::new(DeviceId::new(&format!("dev-{i}")).unwrap())
            .with_tag("fleet")
            .with_device_property("BatteryLevel", i, Timestamp::from_millis(i as u64));
        mem.create(t).unwrap();
    }
    let (mut store, _empty) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let done = store.commit_all(&mem).unwrap();
    assert!(done.full);
    assert_eq!((done.heads, done.properties), (50, 50));
    drop(store);
    let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(snapshot(&reg), snapshot(&mem));
    reg.validate().unwrap();
}

#[test]
fn the_store_keeps_the_newest_changes_up_to_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::default();
    config.feed_retention = 10;
    let (mut store, mut reg) = Store::open(dir.path(), config.clone()).unwrap();
    reg.create(Twin::new(DeviceId::new("d").unwrap())).unwrap();
    for i in 0..49 {
        reg.report_device_property("d", "BatteryLevel", Scalar::from(i % 100), Timestamp::EPOCH)
            .unwrap();
        if i % 7 == 0 {
            store.commit(&reg).unwrap();
        }
    }
    store.commit(&reg).unwrap();
    let last = reg.last_seq();
    drop((store, reg));
    // At the bound: exactly the 10 newest changes, older ones are a gap.
    let (store, reg) = Store::open(dir.path(), config).unwrap();
    let gap = store.changes_after(0, usize::MAX).unwrap().unwrap_err();
    assert_eq!(gap.resume_after(), last - 10);
    let kept = store
        .changes_after(gap.resume_after(), usize::MAX)
        .unwrap()
        .unwrap();
    let seqs: Vec<u64> = kept.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (last - 9..=last).collect::<Vec<_>>());
    assert_eq!(store.changes_after(last - 3, 2).unwrap().unwrap().len(), 2);
    // The reopened registry's feed resumes there too, and new changes follow.
    assert_eq!(reg.changes_after(last - 10).unwrap().count(), 10);
    assert!(reg.changes_after(last - 11).is_err());
}
