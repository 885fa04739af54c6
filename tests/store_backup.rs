//! Online backups (`Store::snapshot`, `StoreSnapshot::write_to`): the copy holds exactly
//! what was committed when the snapshot was taken (twins, sealed keys, device properties
//! still in the log, the kept feed, jobs, packages), while the live store goes on
//! committing; it opens as a store of its own; it never overwrites a store.

use std::time::Instant;
use twinhub::job::{EngineConfig, JobId, JobSpec};
use twinhub::store::{SealingKey, SharedStore, Store, StoreConfig, StoreError};
use twinhub::twin::{Authentication, PskKey, Scalar, Twin};
use twinhub::{DeviceId, Registry, Timestamp};

fn config() -> StoreConfig {
    let mut config = StoreConfig::default();
    config.sealing_key = Some(SealingKey::new([3; 32]));
    config
}

fn twins(reg: &Registry) -> Vec<Twin> {
    reg.iter().map(|t| t.to_twin()).collect()
}

#[test]
fn a_backup_holds_the_snapshot_s_commit_while_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut reg) = Store::open(dir.path().join("live"), config()).unwrap();
    let store = SharedStore::new(store);
    for i in 0..50 {
        let mut twin = Twin::new(DeviceId::new(&format!("d{i}")).unwrap()).with_tag("pilot");
        twin.authentication = Authentication {
            psk_identity: Some(format!("d{i}-id")),
            psk_key: Some(PskKey::new(vec![i as u8; 16])),
        };
        reg.create(twin).unwrap();
    }
    let t = Timestamp::from_millis(1_700_000_000_000);
    for i in 0..50 {
        reg.report_device_property(&format!("d{i}"), "BatteryLevel", Scalar::from(i), t)
            .unwrap();
    }
    let mut jobs = store
        .lock()
        .load_jobs(EngineConfig::default(), Instant::now(), t)
        .unwrap();
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "id": "reboot-1", "job": {"type": "rebootDevice"}, "targets": ["d1", "d2"],
    }))
    .unwrap();
    jobs.create(Instant::now(), spec).unwrap();
    store.lock().commit_with_jobs(&reg, &mut jobs).unwrap();
    store.lock().put_package("fw/1.bin", &[9; 300]).unwrap();
    // A second commit whose device-property changes stay in the log.
    for i in 0..10 {
        reg.report_device_property(&format!("d{i}"), "BatteryLevel", Scalar::from(100 + i), t)
            .unwrap();
    }
    store.lock().commit(&reg).unwrap();
    assert!(store.lock().logged_changes() > 0, "the log holds changes");
    let at_snapshot = twins(&reg);
    let seq = reg.last_seq();
    let feed_live = store.lock().changes_after(0, 1_000).unwrap().unwrap();

    let snapshot = store.lock().snapshot().unwrap();
    assert_eq!(snapshot.committed_seq(), seq);
    // A commit after the snapshot, before the backup is written: not in the backup.
    reg.create(Twin::new(DeviceId::new("after").unwrap()))
        .unwrap();
    store.lock().commit(&reg).unwrap();
    // The store goes on committing, from another thread, while the backup is written.
    let writer = {
        let store = store.clone();
        let mut reg = reg;
        std::thread::spawn(move || {
            for i in 0..20 {
                reg.create(Twin::new(DeviceId::new(&format!("late{i}")).unwrap()))
                    .unwrap();
                reg.report_device_property("d0", "BatteryLevel", Scalar::from(-i), t)
                    .unwrap();
                store.lock().commit(&reg).unwrap();
            }
            store.lock().put_package("fw/2.bin", &[1; 10]).unwrap();
            reg
        })
    };
    let backup = snapshot.write_to(dir.path().join("backup")).unwrap();
    let reg = writer.join().unwrap();
    drop(snapshot);
    assert_eq!(backup.committed, seq);
    assert_eq!(backup.twins, 50);
    assert!(backup.path.ends_with("backup/twinhub.redb"));
    assert_eq!(reg.len(), 71);

    // Without its sealing key the copy does not open: its keys are sealed as they were.
    assert!(matches!(
        Store::open(dir.path().join("backup"), StoreConfig::default()),
        Err(StoreError::SealingKeyMissing { .. })
    ));
    let (copy, restored) = Store::open(dir.path().join("backup"), config()).unwrap();
    assert_eq!(twins(&restored), at_snapshot);
    assert!(!restored.contains("after"));
    // Its feed is the live one's as of the snapshot, and nothing after it.
    assert_eq!(copy.changes_after(0, 1_000).unwrap().unwrap(), feed_live);
    assert_eq!(copy.changes_after(seq, 1_000).unwrap().unwrap(), []);
    let names: Vec<String> = copy.packages().unwrap().into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["fw/1.bin"]);
    let jobs = copy
        .load_jobs(EngineConfig::default(), Instant::now(), t)
        .unwrap();
    assert!(jobs.job(&JobId::new("reboot-1").unwrap()).is_some());
    // The live store kept everything it committed meanwhile.
    drop(copy);
    drop(store);
    let (live_store, live) = Store::open(dir.path().join("live"), config()).unwrap();
    assert_eq!(twins(&live), twins(&reg));
    assert!(
        !live_store
            .changes_after(seq, 1_000)
            .unwrap()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_backup_never_overwrites_a_store_nor_leaves_a_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) =
        Store::open(dir.path().join("live"), StoreConfig::default()).unwrap();
    reg.create(Twin::new(DeviceId::new("a").unwrap())).unwrap();
    store.commit(&reg).unwrap();
    // A store already in the target directory is left alone.
    let (mut other, mut other_reg) =
        Store::open(dir.path().join("other"), StoreConfig::default()).unwrap();
    other_reg
        .create(Twin::new(DeviceId::new("b").unwrap()))
        .unwrap();
    other.commit(&other_reg).unwrap();
    drop((other, other_reg));
    let err = store
        .snapshot()
        .unwrap()
        .write_to(dir.path().join("other"))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Exists { path } if path.ends_with("other/twinhub.redb")),
        "{err}"
    );
    let (_other, other_reg) =
        Store::open(dir.path().join("other"), StoreConfig::default()).unwrap();
    assert!(other_reg.contains("b") && !other_reg.contains("a"));
    // Another file in the directory (here one named like an older partial file) is left
    // alone, and the backup leaves nothing but its store behind.
    let target = dir.path().join("backup");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("twinhub.redb.partial"), b"half a backup").unwrap();
    store.snapshot().unwrap().write_to(&target).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["twinhub.redb", "twinhub.redb.partial"]);
    let (_copy, copy) = Store::open(&target, StoreConfig::default()).unwrap();
    assert!(copy.contains("a"));
    // Two backups at once into one directory: one gets the store, the other `Exists`,
    // and neither leaves a partial file.
    let racing = dir.path().join("racing");
    let snapshots = [store.snapshot().unwrap(), store.snapshot().unwrap()];
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = snapshots
            .iter()
            .map(|snap| s.spawn(|| snap.write_to(&racing)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(StoreError::Exists { .. }))),
        "{results:?}"
    );
    let names: Vec<_> = std::fs::read_dir(&racing).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// A store a failed write poisoned still backs up its last commit (the failed one is not
/// in the copy); after a failed reload it has no file to back up.
#[cfg(feature = "fuzzing")]
#[test]
fn a_poisoned_store_backs_up_its_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) =
        Store::open(dir.path().join("live"), StoreConfig::default()).unwrap();
    reg.create(Twin::new(DeviceId::new("kept").unwrap()))
        .unwrap();
    store.commit(&reg).unwrap();
    reg.create(Twin::new(DeviceId::new("lost").unwrap()))
        .unwrap();
    store.fail_next_commit();
    assert!(store.commit(&reg).is_err());
    assert!(store.is_poisoned());
    let backup = store
        .snapshot()
        .unwrap()
        .write_to(dir.path().join("backup"))
        .unwrap();
    assert_eq!(backup.twins, 1);
    let (_copy, copy) = Store::open(dir.path().join("backup"), StoreConfig::default()).unwrap();
    assert!(copy.contains("kept") && !copy.contains("lost"));
    store.fail_next_reload();
    assert!(store.reload().is_err());
    assert!(matches!(store.snapshot(), Err(StoreError::Poisoned)));
}
