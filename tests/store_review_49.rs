//! Review of the format 3 store (session 49): the property log and its folds, the feed
//! kept as one record per commit, failed commits and reloads, `commit_all`, and small
//! limits. Every acknowledged commit must come back exactly from a reopen or a reload.
//! Needs the `fuzzing` feature (on by default) for the store's failure hooks.
#![cfg(feature = "fuzzing")]

use proptest::prelude::*;
use std::collections::BTreeMap;
use twinhub::registry::{Change, Registry};
use twinhub::store::{Store, StoreConfig, StoreError};
use twinhub::twin::{Scalar, Twin};
use twinhub::{DeviceId, Timestamp};

const IDS: &[&str] = &["a", "b", "c", "d", "e", "f"];
const PROPS: &[&str] = &["BatteryLevel", "/3303/0/5700", "FirmwareVersion"];

#[derive(Clone, Debug)]
enum Op {
    /// Creates a twin with device properties already in it.
    Create(usize, Vec<(usize, i64)>),
    Remove(usize),
    Report(usize, usize, i64, u64),
    RemoveProp(usize, usize),
    Tag(usize),
    Commit,
    /// A commit whose write fails, then `Store::reload`.
    FailCommit,
    /// `Store::reload` without a commit.
    Reload,
    /// Drops store and registry without a commit and opens again.
    Crash,
    /// `Store::commit_all` of the store's own registry.
    CommitAll,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS.len();
    prop_oneof![
        2 => (id.clone(), proptest::collection::vec((0..PROPS.len(), 0i64..50), 0..3))
            .prop_map(|(i, p)| Op::Create(i, p)),
        1 => id.clone().prop_map(Op::Remove),
        8 => (id.clone(), 0..PROPS.len(), 0i64..50, 0u64..1_000).prop_map(|(i, p, v, t)| Op::Report(i, p, v, t)),
        2 => (id.clone(), 0..PROPS.len()).prop_map(|(i, p)| Op::RemoveProp(i, p)),
        1 => id.prop_map(Op::Tag),
        4 => Just(Op::Commit),
        1 => Just(Op::FailCommit),
        1 => Just(Op::Reload),
        1 => Just(Op::Crash),
        1 => Just(Op::CommitAll),
    ]
}

fn value(p: usize, v: i64) -> Scalar {
    match PROPS[p] {
        "FirmwareVersion" => Scalar::from(format!("1.{v}")),
        "BatteryLevel" => Scalar::from(v),
        _ => Scalar::from(v as f64 / 4.0),
    }
}

fn apply(reg: &mut Registry, op: &Op) {
    match op {
        Op::Create(i, props) => {
            let mut t = Twin::new(DeviceId::new(IDS[*i]).unwrap());
            for &(p, v) in props {
                t = t.with_device_property(PROPS[p], value(p, v), Timestamp::from_millis(7));
            }
            let _ = reg.create(t);
        }
        Op::Remove(i) => {
            let _ = reg.remove(IDS[*i]);
        }
        Op::Report(i, p, v, t) => {
            let _ = reg.report_device_property(
                IDS[*i],
                PROPS[*p],
                value(*p, *v),
                Timestamp::from_millis(*t),
            );
        }
        Op::RemoveProp(i, p) => {
            let _ = reg.remove_device_property(IDS[*i], PROPS[*p]);
        }
        Op::Tag(i) => {
            let _ = reg.add_tags(IDS[*i], &["x"], None);
        }
        _ => unreachable!("handled by the runner"),
    }
}

fn snapshot(reg: &Registry) -> BTreeMap<String, Twin> {
    reg.iter()
        .map(|t| (t.device_id().to_string(), t.to_twin()))
        .collect()
}

/// The acknowledged twins and the feed the store must keep of them.
struct Model {
    retention: usize,
    acked: BTreeMap<String, Twin>,
    acked_seq: u64,
    feed: Vec<Change>,
    dropped: u64,
}

impl Model {
    fn ack(&mut self, reg: &Registry, whole: bool) {
        match reg.changes_after(self.acked_seq) {
            Ok(changes) if !whole && self.retention > 0 => {
                self.feed.extend(changes.cloned());
                let excess = self.feed.len().saturating_sub(self.retention);
                if excess > 0 {
                    self.dropped = self.feed[excess - 1].seq;
                    self.feed.drain(..excess);
                }
            }
            _ => {
                self.feed.clear();
                self.dropped = reg.last_seq();
            }
        }
        self.acked = snapshot(reg);
        self.acked_seq = reg.last_seq();
    }

    /// What a reopened or reloaded store and registry must show.
    fn check(&self, store: &Store, reg: &Registry, capacity: usize) -> Result<(), TestCaseError> {
        prop_assert_eq!(&snapshot(reg), &self.acked);
        prop_assert!(reg.validate().is_ok(), "{:?}", reg.validate());
        prop_assert_eq!(store.committed_seq(), self.acked_seq);
        let all = store.changes_after(self.dropped, usize::MAX).unwrap();
        prop_assert_eq!(all.as_ref(), Ok(&self.feed));
        if self.dropped > 0 {
            let gap = store.changes_after(self.dropped - 1, 1).unwrap();
            prop_assert_eq!(gap.map_err(|g| g.resume_after()), Err(self.dropped));
        }
        for (i, c) in self.feed.iter().enumerate() {
            let after = store.changes_after(c.seq, usize::MAX).unwrap();
            prop_assert_eq!(after.as_ref().map(|v| &v[..]), Ok(&self.feed[i + 1..]));
        }
        // The registry's ring holds the newest of them.
        let tail = self.feed.len().min(capacity);
        if tail > 0 {
            let from = self.feed[self.feed.len() - tail].seq - 1;
            let ring: Vec<Change> = reg.changes_after(from).unwrap().cloned().collect();
            prop_assert_eq!(&ring[..], &self.feed[self.feed.len() - tail..]);
        }
        prop_assert!(reg.changes_after(self.acked_seq).is_ok());
        Ok(())
    }
}

fn run(ops: &[Op], config: StoreConfig) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let capacity = config.feed_capacity;
    let (mut store, mut reg) = Store::open(dir.path(), config.clone()).unwrap();
    let mut m = Model {
        retention: config.feed_retention,
        acked: BTreeMap::new(),
        acked_seq: 0,
        feed: Vec::new(),
        dropped: 0,
    };
    for op in ops {
        match op {
            Op::Commit => {
                store.commit(&reg).unwrap();
                m.ack(&reg, false);
            }
            Op::CommitAll => {
                store.commit_all(&reg).unwrap();
                m.ack(&reg, true);
            }
            Op::FailCommit => {
                if reg.last_seq() > store.committed_seq() {
                    store.fail_next_commit();
                    prop_assert!(store.commit(&reg).is_err());
                }
                reg = store.reload().unwrap();
                m.check(&store, &reg, capacity)?;
            }
            Op::Reload => {
                reg = store.reload().unwrap();
                m.check(&store, &reg, capacity)?;
            }
            Op::Crash => {
                drop((store, reg));
                (store, reg) = Store::open(dir.path(), config.clone()).unwrap();
                m.check(&store, &reg, capacity)?;
            }
            _ => apply(&mut reg, op),
        }
    }
    store.commit(&reg).unwrap();
    m.ack(&reg, false);
    drop((store, reg));
    let (store, reg) = Store::open(dir.path(), config).unwrap();
    m.check(&store, &reg, capacity)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_twins_and_feed_survive_failures_reloads_and_small_limits(
        ops in proptest::collection::vec(op(), 1..80),
        capacity in prop_oneof![Just(3usize), Just(1024)],
        retention in prop_oneof![Just(0usize), Just(1), Just(4), Just(1 << 16)],
        log_limit in prop_oneof![Just(1usize), Just(2), Just(3), Just(1 << 20)],
    ) {
        let mut config = StoreConfig::default();
        config.feed_capacity = capacity;
        config.feed_retention = retention;
        config.property_log_limit = log_limit;
        run(&ops, config)?;
    }
}

/// A registry built elsewhere, adopted (every twin rewritten, renumbered), then reported
/// to over several commits that log and fold: a reopen gives back exactly its twins, and
/// the store's feed resumes after the adoption.
#[test]
fn an_adopted_registry_and_its_logged_reports_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::default();
    config.property_log_limit = 8;
    let (mut store, mut own) = Store::open(dir.path(), config.clone()).unwrap();
    for id in ["a", "b"] {
        let t = Twin::new(DeviceId::new(id).unwrap()).with_device_property(
            "BatteryLevel",
            1,
            Timestamp::from_millis(1),
        );
        own.create(t).unwrap();
    }
    store.commit(&own).unwrap();
    own.report_device_property("a", "BatteryLevel", 2.into(), Timestamp::from_millis(2))
        .unwrap();
    store.commit(&own).unwrap();
    let before = own.last_seq();
    drop(own);

    let mut mem = Registry::new();
    for id in ["a", "x", "y"] {
        let t = Twin::new(DeviceId::new(id).unwrap()).with_device_property(
            "FirmwareVersion",
            "0.1",
            Timestamp::from_millis(3),
        );
        mem.create(t).unwrap();
    }
    let done = store.adopt(&mut mem).unwrap();
    assert!(done.full);
    let adopted = store.committed_seq();
    assert!(adopted > before);
    for round in 0..12u64 {
        for (i, id) in ["a", "x", "y"].iter().enumerate() {
            if !(round + i as u64).is_multiple_of(3) {
                mem.report_device_property(
                    id,
                    "BatteryLevel",
                    Scalar::from(round as i64),
                    Timestamp::from_millis(10 + round),
                )
                .unwrap();
            }
        }
        if round == 5 {
            mem.remove_device_property("x", "FirmwareVersion").unwrap();
        }
        store.commit(&mem).unwrap();
    }
    let want = snapshot(&mem);
    let feed: Vec<Change> = mem.changes_after(adopted).unwrap().cloned().collect();
    drop((store, mem));
    let (store, reg) = Store::open(dir.path(), config).unwrap();
    assert_eq!(snapshot(&reg), want);
    reg.validate().unwrap();
    assert_eq!(
        store.changes_after(adopted, usize::MAX).unwrap().unwrap(),
        feed
    );
    assert!(store.changes_after(before, 1).unwrap().is_err());
}

/// One commit of 36,000 changes (300 twins, 120 reports each, 3 names): the feed keeps
/// exactly its newest 100 (the commit's own record cut), the log stays in its bound, and
/// a reopen gives back every twin.
#[test]
fn a_huge_commit_comes_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::default();
    config.feed_retention = 100;
    config.property_log_limit = 500;
    let (mut store, mut reg) = Store::open(dir.path(), config.clone()).unwrap();
    for i in 0..300 {
        reg.create(Twin::new(DeviceId::new(&format!("dev-{i:03}")).unwrap()))
            .unwrap();
    }
    store.commit(&reg).unwrap();
    for r in 0..120i64 {
        for i in 0..300 {
            let p = (r as usize + i) % PROPS.len();
            reg.report_device_property(
                &format!("dev-{i:03}"),
                PROPS[p],
                value(p, r % 50),
                Timestamp::from_millis(r as u64),
            )
            .unwrap();
        }
    }
    let last = reg.last_seq();
    let done = store.commit(&reg).unwrap();
    assert!(!done.full);
    let want = snapshot(&reg);
    let tail: Vec<Change> = reg.changes_after(last - 100).unwrap().cloned().collect();
    drop((store, reg));
    let (store, reg) = Store::open(dir.path(), config).unwrap();
    assert_eq!(snapshot(&reg), want);
    assert_eq!(
        store
            .changes_after(last - 100, usize::MAX)
            .unwrap()
            .unwrap(),
        tail
    );
    assert_eq!(
        store
            .changes_after(last - 101, 1)
            .unwrap()
            .unwrap_err()
            .resume_after(),
        last - 100
    );
}

/// Settings changed between openings: a smaller feed retention cuts the feed to it at
/// the next commit, and a smaller log limit folds every logged twin then; the twins and
/// the kept feed come back exactly.
#[test]
fn smaller_limits_at_a_later_opening_apply_at_its_first_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::default();
    config.feed_retention = 1000;
    let (mut store, mut reg) = Store::open(dir.path(), config.clone()).unwrap();
    for id in IDS {
        reg.create(Twin::new(DeviceId::new(id).unwrap())).unwrap();
    }
    for r in 0..20u64 {
        for (i, id) in IDS.iter().enumerate() {
            let p = (r as usize + i) % PROPS.len();
            reg.report_device_property(id, PROPS[p], value(p, r as i64), Timestamp::from_millis(r))
                .unwrap();
        }
        store.commit(&reg).unwrap();
    }
    let mut tail: Vec<Change> = reg
        .changes_after(reg.last_seq() - 2)
        .unwrap()
        .cloned()
        .collect();
    drop((store, reg));
    config.feed_retention = 3;
    config.property_log_limit = 1;
    let (mut store, mut reg) = Store::open(dir.path(), config.clone()).unwrap();
    reg.report_device_property("c", "BatteryLevel", 1.into(), Timestamp::from_millis(99))
        .unwrap();
    store.commit(&reg).unwrap();
    let last = reg.last_seq();
    let want = snapshot(&reg);
    tail.extend(reg.changes_after(last - 1).unwrap().cloned());
    assert_eq!(tail.len(), 3);
    drop((store, reg));
    let (store, reg) = Store::open(dir.path(), config).unwrap();
    assert_eq!(snapshot(&reg), want);
    let from = tail[0].seq - 1;
    assert_eq!(
        store.changes_after(from, usize::MAX).unwrap().unwrap(),
        tail
    );
    assert!(store.changes_after(from - 1, 1).unwrap().is_err());
}

/// A registry imported with `commit_all` replaces what the disk held; the registry the
/// store returned before is refused from then on (its next commit would have written its
/// recent changes over the import, leaving on disk a mix of the two) until a reload,
/// which returns exactly the import.
#[test]
fn after_commit_all_of_another_registry_the_old_one_is_refused_until_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut own) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    own.create(Twin::new(DeviceId::new("old").unwrap()))
        .unwrap();
    store.commit(&own).unwrap();
    let mut import = Registry::new();
    import
        .create(Twin::new(DeviceId::new("new").unwrap()))
        .unwrap();
    store.commit_all(&import).unwrap();
    own.report_device_property("old", "BatteryLevel", 5.into(), Timestamp::EPOCH)
        .unwrap();
    let err = store.commit(&own).unwrap_err();
    assert!(matches!(err, StoreError::ForeignRegistry), "{err}");
    let reloaded = store.reload().unwrap();
    let ids: Vec<String> = reloaded.iter().map(|t| t.device_id().to_string()).collect();
    assert_eq!(ids, vec!["new".to_string()]);
    drop((store, reloaded));
    let (_store, reopened) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(reopened.get("old").is_none() && reopened.get("new").is_some());
}
