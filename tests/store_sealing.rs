//! The PSK keys a store keeps, sealed with `StoreConfig::sealing_key`: never on disk in
//! the clear, opened only with their key and only for their twin; a store written
//! without a key is sealed when it opens with one.

use redb::{Database, ReadableTable, TableDefinition};
use twinhub::store::{FILE_NAME, FORMAT, SealingKey, Store, StoreConfig, StoreError};
use twinhub::twin::{Authentication, PskKey, Twin};
use twinhub::{DeviceId, Registry};

/// The store's tables of twin heads and of settings (their names are the file format's).
const TWINS: TableDefinition<&str, &[u8]> = TableDefinition::new("twins");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn config(key: Option<u8>) -> StoreConfig {
    let mut config = StoreConfig::default();
    config.sealing_key = key.map(|k| SealingKey::new([k; 32]));
    config
}

fn keyed(id: &str, seed: u8) -> Twin {
    let mut twin = Twin::new(DeviceId::new(id).unwrap());
    twin.authentication = Authentication {
        psk_identity: Some(format!("{id}-identity")),
        psk_key: Some(PskKey::new(vec![seed; 16])),
    };
    twin
}

fn key_of(reg: &Registry, id: &str) -> Option<Vec<u8>> {
    let twin = reg.get(id).unwrap().to_twin();
    twin.authentication.psk_key.map(|k| k.expose().to_vec())
}

/// Every head of the store in `dir`, as text, read with redb directly.
fn heads(dir: &std::path::Path) -> Vec<(String, String)> {
    let db = Database::open(dir.join(FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(TWINS).unwrap();
    table
        .iter()
        .unwrap()
        .map(|row| {
            let (k, v) = row.unwrap();
            let text = String::from_utf8(v.value().to_vec()).unwrap();
            (k.value().to_string(), text)
        })
        .collect()
}

fn open_err(dir: &std::path::Path, key: Option<u8>) -> StoreError {
    Store::open(dir, config(key)).map(|_| ()).unwrap_err()
}

#[test]
fn psk_keys_are_sealed_on_disk_and_open_only_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), config(Some(1))).unwrap();
    reg.create(keyed("a", 0x11)).unwrap();
    reg.create(Twin::new(DeviceId::new("b").unwrap())).unwrap();
    store.commit(&reg).unwrap();
    // A key set after creation, and a rotation: each head rewrite seals again.
    reg.create(keyed("c", 0x22)).unwrap();
    store.commit(&reg).unwrap();
    reg.set_authentication("c", keyed("c", 0x33).authentication)
        .unwrap();
    store.commit(&reg).unwrap();
    drop((store, reg));

    // Nowhere in the file (free pages included): not the keys' bytes, not their hex.
    let file = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
    for seed in [0x11u8, 0x22, 0x33] {
        let key = [seed; 16];
        assert!(
            !file.windows(16).any(|w| w == key),
            "key {seed:#x} in the clear"
        );
        let hex: String = std::iter::repeat_n(format!("{seed:02x}"), 16).collect();
        assert!(
            !file.windows(32).any(|w| w == hex.as_bytes()),
            "key {seed:#x} as hex"
        );
    }
    let heads = heads(dir.path());
    assert!(heads.iter().all(|(_, h)| !h.contains("\"psk\"")));
    assert_eq!(
        heads
            .iter()
            .filter(|(_, h)| h.contains("\"sealedPsk\""))
            .count(),
        2
    );

    // Without the key, or with another, the store does not open, and nothing changes.
    assert!(
        matches!(open_err(dir.path(), None), StoreError::SealingKeyMissing { key } if key == "a")
    );
    assert!(matches!(open_err(dir.path(), Some(2)), StoreError::Unsealing { key } if key == "a"));
    let (_store, reg) = Store::open(dir.path(), config(Some(1))).unwrap();
    assert_eq!(key_of(&reg, "a"), Some(vec![0x11; 16]));
    assert_eq!(key_of(&reg, "b"), None);
    assert_eq!(key_of(&reg, "c"), Some(vec![0x33; 16]));
    let c = reg.get("c").unwrap().to_twin();
    assert_eq!(c.authentication.psk_identity.as_deref(), Some("c-identity"));
}

#[test]
fn opening_with_a_sealing_key_seals_the_plain_keys_a_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), config(None)).unwrap();
    for (i, id) in ["p", "q", "r"].iter().enumerate() {
        reg.create(keyed(id, 0x40 + i as u8)).unwrap();
    }
    reg.create(Twin::new(DeviceId::new("s").unwrap())).unwrap();
    store.commit(&reg).unwrap();
    drop((store, reg));
    let plain = heads(dir.path());
    assert_eq!(
        plain.iter().filter(|(_, h)| h.contains("\"psk\"")).count(),
        3
    );

    let (_store, reg) = Store::open(dir.path(), config(Some(9))).unwrap();
    assert_eq!(key_of(&reg, "q"), Some(vec![0x41; 16]));
    drop((_store, reg));
    let sealed = heads(dir.path());
    for ((id, before), (_, after)) in plain.iter().zip(&sealed) {
        assert!(!after.contains("\"psk\""), "{id}: {after}");
        assert_eq!(
            after.contains("\"sealedPsk\""),
            before.contains("\"psk\""),
            "{id}: {after}"
        );
        // Only the key changed its form.
        let strip = |h: &str| {
            let mut v: serde_json::Value = serde_json::from_str(h).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| k == "twin");
            v
        };
        assert_eq!(strip(before), strip(after), "{id}");
    }
    // From now on the key is needed.
    assert!(
        matches!(open_err(dir.path(), None), StoreError::SealingKeyMissing { key } if key == "p")
    );
    let (_store, reg) = Store::open(dir.path(), config(Some(9))).unwrap();
    for (i, id) in ["p", "q", "r"].iter().enumerate() {
        assert_eq!(key_of(&reg, id), Some(vec![0x40 + i as u8; 16]));
    }
}

#[test]
fn a_sealed_key_moved_into_another_twins_head_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), config(Some(5))).unwrap();
    reg.create(keyed("x", 1)).unwrap();
    reg.create(keyed("y", 2)).unwrap();
    store.commit(&reg).unwrap();
    drop((store, reg));
    let heads = heads(dir.path());
    let sealed_of = |id: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&heads.iter().find(|(k, _)| k == id).unwrap().1).unwrap();
        v["sealedPsk"].clone()
    };
    let mut y: serde_json::Value =
        serde_json::from_str(&heads.iter().find(|(k, _)| k == "y").unwrap().1).unwrap();
    y["sealedPsk"] = sealed_of("x");
    let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(TWINS)
        .unwrap()
        .insert("y", y.to_string().as_bytes())
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    assert!(matches!(open_err(dir.path(), Some(5)), StoreError::Unsealing { key } if key == "y"));
}

#[test]
fn a_format_3_file_opens_as_format_4() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), config(None)).unwrap();
    reg.create(keyed("f", 7)).unwrap();
    store.commit(&reg).unwrap();
    drop((store, reg));
    let format = |db: &Database| {
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get("format").unwrap().map(|v| v.value())
    };
    let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(format(&db), Some(4));
    assert_eq!(FORMAT, 4);
    let txn = db.begin_write().unwrap();
    txn.open_table(META).unwrap().insert("format", 3).unwrap();
    txn.commit().unwrap();
    drop(db);
    let (_store, reg) = Store::open(dir.path(), config(None)).unwrap();
    assert_eq!(key_of(&reg, "f"), Some(vec![7; 16]));
    drop((_store, reg));
    let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(format(&db), Some(4));
}

#[test]
fn the_sealing_key_changes_and_sealing_turns_off_through_retired_keys() {
    let dir = tempfile::tempdir().unwrap();
    let with = |current: Option<u8>, retired: &[u8]| {
        let mut config = config(current);
        config.retired_sealing_keys = retired.iter().map(|&b| SealingKey::new([b; 32])).collect();
        config
    };
    let (mut store, mut reg) = Store::open(dir.path(), with(Some(1), &[])).unwrap();
    reg.create(keyed("m", 0x61)).unwrap();
    reg.create(keyed("n", 0x62)).unwrap();
    store.commit(&reg).unwrap();
    drop((store, reg));
    let sealed_by_1 = heads(dir.path());

    // Key 1 -> key 2: opening with 2 (1 retired) rewrites every sealed head under 2.
    let (_store, reg) = Store::open(dir.path(), with(Some(2), &[1])).unwrap();
    assert_eq!(key_of(&reg, "n"), Some(vec![0x62; 16]));
    drop((_store, reg));
    let sealed_by_2 = heads(dir.path());
    for ((id, old), (_, new)) in sealed_by_1.iter().zip(&sealed_by_2) {
        assert_ne!(old, new, "{id} was not sealed again");
        assert!(
            new.contains("\"sealedPsk\"") && !new.contains("\"psk\""),
            "{new}"
        );
    }
    // Key 1 alone opens nothing now; key 2 alone opens everything.
    assert!(matches!(open_err(dir.path(), Some(1)), StoreError::Unsealing { key } if key == "m"));
    let (_store, reg) = Store::open(dir.path(), with(Some(2), &[])).unwrap();
    assert_eq!(key_of(&reg, "m"), Some(vec![0x61; 16]));
    drop((_store, reg));
    assert_eq!(heads(dir.path()), sealed_by_2, "nothing to rewrite");

    // Sealing off: no sealing key, key 2 retired: the keys are written plain again.
    let (_store, reg) = Store::open(dir.path(), with(None, &[2])).unwrap();
    assert_eq!(key_of(&reg, "m"), Some(vec![0x61; 16]));
    drop((_store, reg));
    for (id, head) in heads(dir.path()) {
        assert!(
            head.contains("\"psk\"") && !head.contains("\"sealedPsk\""),
            "{id}: {head}"
        );
    }
    let (_store, reg) = Store::open(dir.path(), config(None)).unwrap();
    assert_eq!(key_of(&reg, "n"), Some(vec![0x62; 16]));
}

/// An opening with a sealing key that fails after reading the twins (here on a damaged job
/// row) leaves the heads as they were: the failed opening did not seal the plain keys, so
/// going back to no key (the configuration that worked) still opens the store.
#[test]
fn a_failed_opening_with_a_key_does_not_seal_the_plain_keys() {
    const JOB_PARENTS: TableDefinition<u32, &[u8]> = TableDefinition::new("job_parents");
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), config(None)).unwrap();
    reg.create(keyed("k", 0x61)).unwrap();
    store.commit(&reg).unwrap();
    drop((store, reg));
    let before = heads(dir.path());
    let edit_jobs = |damage: bool| {
        let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut parents = txn.open_table(JOB_PARENTS).unwrap();
            if damage {
                parents.insert(0, b"{not json".as_slice()).unwrap();
            } else {
                parents.remove(0).unwrap();
            }
        }
        txn.commit().unwrap();
    };
    edit_jobs(true);
    assert!(matches!(
        open_err(dir.path(), Some(3)),
        StoreError::BadRecord {
            table: "job_parents",
            ..
        }
    ));
    assert_eq!(
        heads(dir.path()),
        before,
        "a failed opening sealed the heads"
    );
    edit_jobs(false);
    let (_store, reg) = Store::open(dir.path(), config(None)).unwrap();
    assert_eq!(key_of(&reg, "k"), Some(vec![0x61; 16]));
}

/// `refuse_plain_keys`: a store whose keys are sealed refuses a plain key in a head (a
/// key planted by whoever can write the file), on either of the two ways opening reads a
/// head (a row, or a whole twin for a twin rows cannot hold: here one with an object
/// service property), and changes nothing; without it the planted key is taken and
/// sealed (the migration of a store written without a key, which the setting refuses
/// too until turned off for one opening).
#[test]
fn refuse_plain_keys_refuses_a_key_planted_plain_in_a_sealed_store() {
    use std::collections::BTreeMap;
    use twinhub::twin::ServiceValue;
    let refusing = |key: u8| {
        let mut config = config(Some(key));
        config.refuse_plain_keys = true;
        config
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), config(None)).unwrap();
    reg.create(keyed("p", 0x51)).unwrap();
    let mut nested = keyed("q", 0x52);
    let inner = BTreeMap::from([("floor".to_string(), ServiceValue::from(3))]);
    nested
        .service_properties
        .properties
        .insert("site".into(), ServiceValue::Object(inner));
    reg.create(nested).unwrap();
    store.commit(&reg).unwrap();
    drop((store, reg));
    let plain = heads(dir.path());

    // The store written without a key: refused while the setting is on, nothing sealed.
    let err = Store::open(dir.path(), refusing(4))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::PlainKey { key } if key == "p"),
        "{err}"
    );
    assert!(err.to_string().contains("refuse_plain_keys"), "{err}");
    assert_eq!(heads(dir.path()), plain);
    // One opening without it seals them; from then on the setting opens the store.
    drop(Store::open(dir.path(), config(Some(4))).unwrap());
    let (_store, reg) = Store::open(dir.path(), refusing(4)).unwrap();
    assert_eq!(key_of(&reg, "q"), Some(vec![0x52; 16]));
    drop((_store, reg));

    // A key planted plain into each head in turn (its sealed one taken out).
    let sealed = heads(dir.path());
    for id in ["p", "q"] {
        let mut head: serde_json::Value =
            serde_json::from_str(&sealed.iter().find(|(k, _)| k == id).unwrap().1).unwrap();
        let head = head.as_object_mut().unwrap();
        assert!(head.remove("sealedPsk").is_some(), "{id} was not sealed");
        head.insert("psk".into(), "ee".repeat(16).into());
        let db = Database::open(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TWINS)
            .unwrap()
            .insert(id, serde_json::to_string(head).unwrap().as_bytes())
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let planted = heads(dir.path());
        let err = Store::open(dir.path(), refusing(4))
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::PlainKey { key } if key == id),
            "{err}"
        );
        assert_eq!(heads(dir.path()), planted, "a refused opening wrote");
        // Without the setting the planted key is what the hub would get.
        let (_store, reg) = Store::open(dir.path(), config(Some(4))).unwrap();
        assert_eq!(key_of(&reg, id), Some(vec![0xee; 16]));
    }
}
