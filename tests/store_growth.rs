//! The store does not grow without bound under a steady stream of device-property
//! updates: reports go to the property log, kept bounded by folding them into each twin's
//! properties record, the persisted feed is trimmed to its retention, and redb reuses
//! the pages an earlier commit freed. The test measures the file after a warm-up and
//! after many more updates (120,000 in all, with the default `property_log_limit`: the
//! log stays below half of it, bounded by the folds' rounds, never by the limit).

use twinhub::store::{Store, StoreConfig};
use twinhub::twin::{Scalar, Twin};
use twinhub::{DeviceId, Timestamp};

const DEVICES: usize = 100;
const PROPS: [&str; 5] = [
    "BatteryLevel",
    "/3303/0/5700",
    "/3303/0/5601",
    "/9/0/1",
    "/9/0/2",
];
/// Updates per commit (a hub-sized batch is up to 4,096 events).
const BATCH: usize = 500;

fn file_len(store: &Store) -> u64 {
    std::fs::metadata(store.path()).unwrap().len()
}

#[test]
fn a_steady_stream_of_updates_keeps_the_file_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::default();
    config.feed_retention = 2_000;
    let (mut store, mut reg) = Store::open(dir.path(), config).unwrap();
    for d in 0..DEVICES {
        reg.create(Twin::new(DeviceId::new(&format!("dev-{d}")).unwrap()).with_tag("fleet"))
            .unwrap();
    }
    store.commit(&reg).unwrap();
    let mut n: u64 = 0;
    let mut run = |commits: usize, store: &mut Store, reg: &mut twinhub::Registry| {
        for _ in 0..commits {
            for _ in 0..BATCH {
                let d = (n as usize * 7) % DEVICES;
                let p = PROPS[(n as usize) % PROPS.len()];
                let value = match p {
                    "BatteryLevel" => Scalar::from((n % 101) as i64),
                    _ => Scalar::from(n as f64 / 3.0),
                };
                reg.report_device_property(
                    &format!("dev-{d}"),
                    p,
                    value,
                    Timestamp::from_millis(n),
                )
                .unwrap();
                n += 1;
            }
            store.commit(reg).unwrap();
        }
    };
    run(40, &mut store, &mut reg);
    let warm = file_len(&store);
    run(200, &mut store, &mut reg);
    let after = file_len(&store);
    eprintln!("store growth: {warm} bytes after 20,000 updates, {after} after 120,000");
    assert!(
        after <= warm + warm / 2,
        "the file grew from {warm} to {after} bytes under a steady update stream"
    );
    // Compaction gives free pages back; it never grows the file.
    store.compact().unwrap();
    let compacted = file_len(&store);
    eprintln!("store growth: {compacted} bytes after compaction");
    assert!(compacted <= after);
    // Everything is still there.
    let last = reg.last_seq();
    drop((store, reg));
    let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert_eq!(reg.len(), DEVICES);
    assert!(reg.last_seq() > last);
    reg.validate().unwrap();
}
