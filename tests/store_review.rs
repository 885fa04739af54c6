//! Hostile review of what survives a restart of the durable store (`src/store/`).
//! Each test quotes the promise it checks; each failed on the code as reviewed (the
//! comments say what happened then, and what holds now).

use twinhub::registry::Registry;
use twinhub::store::{Store, StoreConfig};
use twinhub::twin::{DeviceStatus, Twin};
use twinhub::{DeviceId, Timestamp};

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// Year 10000, 00:00:00 UTC: a valid `Timestamp` the registry accepts.
const YEAR_10000_MS: u64 = 253_402_300_800_000;

// Promise (src/store/mod.rs, "Acknowledgement"/"What a crash can lose"): "It cannot lose
// anything acknowledged: a commit that returned is on disk"; and (README, Durability)
// "a crash loses at most the batch being committed ..., never anything acknowledged".
// Here the registry accepted a `lastActivityTime` (and a `statusUpdatedTime`) past year
// 9999, the commit returned Ok, and the directory could no longer be opened at all: every
// twin in it was lost behind a `BadRecord` (the year did not parse back). Now a time past
// 9999 is `Timestamp::MAX`, the last instant RFC 3339 writes, and it reads back.
#[test]
fn a_head_timestamp_past_year_9999_is_kept_as_its_end_and_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    reg.create(Twin::new(id("other")).with_tag("keep")).unwrap();
    reg.create(Twin::new(id("d"))).unwrap();
    reg.set_last_activity("d", Timestamp::from_millis(YEAR_10000_MS))
        .unwrap();
    reg.set_status(
        "d",
        DeviceStatus::Disabled,
        None,
        Timestamp::from_millis(YEAR_10000_MS),
    )
    .unwrap();
    store.commit(&reg).expect("the commit is acknowledged");
    let before = reg.get("d").unwrap().to_twin();
    drop((store, reg));
    let (_store, reg) = Store::open(dir.path(), StoreConfig::default())
        .expect("a directory holding only acknowledged commits opens");
    assert_eq!(reg.get("d").unwrap().to_twin(), before);
    assert!(reg.get("other").unwrap().has_tag("keep"));
}

// Promise (Store::changes_after): "Changes the store no longer keeps ... are a
// [`FeedGap`]"; brief/README: the change feed resumes "within its retention ... or returns
// a gap error" (never a silent skip). `commit_all` of a registry built in memory replaces
// every twin, drops every feed row and records the import's own (small) sequence number as
// `feed_dropped_through`; a consumer whose cursor was past that number resumed with no
// gap and never learned that every twin was replaced. Now a number past the committed
// sequence is a gap (`Store::adopt` is the import that renumbers).
#[test]
fn a_consumer_resuming_across_a_commit_all_import_gets_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        reg.create(Twin::new(id("old"))).unwrap();
        store.commit(&reg).unwrap();
    }
    // After a reopen the numbers continue past the reserve (about 2^20).
    let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    reg.create(Twin::new(id("old2"))).unwrap();
    store.commit(&reg).unwrap();
    let cursor = store.committed_seq();
    // The consumer is up to date.
    assert!(
        store
            .changes_after(cursor, 100)
            .unwrap()
            .unwrap()
            .is_empty()
    );

    // An import of a registry built in memory (the documented use of commit_all).
    let mut mem = Registry::new();
    for i in 0..5 {
        mem.create(Twin::new(id(&format!("new-{i}")))).unwrap();
    }
    store.commit_all(&mem).unwrap();
    drop((store, reg));

    let (store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(reg.get("old").is_none() && reg.get("new-0").is_some());
    // The twins all changed since `cursor`: the consumer must be told (a gap) or be
    // given the changes; an empty Ok is a silent skip.
    match store.changes_after(cursor, 100).unwrap() {
        Err(_gap) => {}
        Ok(changes) => assert!(
            !changes.is_empty(),
            "every twin was replaced after seq {cursor}, yet changes_after({cursor}) \
             returned Ok(empty): a silent skip"
        ),
    }
}

// Promise (Store::adopt): "A registry built elsewhere is imported: its twins replace what
// the directory held, its sequence first moves past every number the directory ever
// handed out (so no etag repeats)"; README: "Etags and change-feed sequence numbers never
// repeat across restarts". `adopt` only moves the registry's *next* number: the imported
// twins keep the etags and generation ids they had in the foreign registry, which are
// numbers the directory already handed out to other content. Now they are renumbered
// past every number the directory handed out.
#[test]
fn adopt_gives_the_imported_twins_etags_the_directory_never_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let (old_etag, old_gen) = {
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        reg.create(Twin::new(id("d")).with_tag("old-content"))
            .unwrap();
        store.commit(&reg).unwrap();
        let t = reg.get("d").unwrap();
        (t.etag(), t.generation_id())
    };
    let (mut store, _reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let mut mem = Registry::new();
    mem.create(Twin::new(id("d")).with_tag("new-content"))
        .unwrap();
    store.adopt(&mut mem).unwrap();
    drop((store, mem));
    let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let t = reg.get("d").unwrap();
    assert!(t.has_tag("new-content"));
    assert_ne!(
        t.etag(),
        old_etag,
        "the adopted twin carries an etag the directory already gave other content"
    );
    assert_ne!(
        t.generation_id(),
        old_gen,
        "the adopted twin carries a generation id the directory already used"
    );
}

// Promise (src/store/mod.rs, "What is durable"): "every job: its spec, parent and child
// states ... so the whole job history comes back"; and "a commit that returned is on
// disk". A job whose `start_at` lies past year 9999 is accepted by the engine and
// committed; its parent row (JSON, `Timestamp` as RFC 3339 text) could then not be read,
// and `Store::open` refused the whole directory (twins included). Now the time is
// `Timestamp::MAX` and the job comes back.
#[test]
fn a_job_scheduled_past_year_9999_is_kept_as_its_end_and_the_store_reopens() {
    use std::time::Instant;
    use twinhub::job::{EngineConfig, JobId, JobSpec};
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    reg.create(Twin::new(id("d")).with_tag("keep")).unwrap();
    let mut jobs = store
        .load_jobs(EngineConfig::default(), Instant::now(), Timestamp::now())
        .unwrap();
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "id": "later",
        "job": {"type": "rebootDevice"},
        "targets": ["d"],
    }))
    .unwrap();
    let spec = spec.start_at(Timestamp::from_millis(YEAR_10000_MS));
    jobs.create(Instant::now(), spec)
        .expect("the engine accepts the job");
    store
        .commit_with_jobs(&reg, &mut jobs)
        .expect("the commit is acknowledged");
    drop((store, reg, jobs));
    let (store, reg) = Store::open(dir.path(), StoreConfig::default())
        .expect("a directory holding only acknowledged commits opens");
    assert!(reg.get("d").unwrap().has_tag("keep"));
    let jobs = store
        .load_jobs(EngineConfig::default(), Instant::now(), Timestamp::now())
        .unwrap();
    assert!(jobs.job(&JobId::new("later").unwrap()).is_some());
}

// Promise (README, Durability): "A service write (create, remove, tags, service
// properties) returns only after its commit ... never anything acknowledged or read" is
// lost. `Hub::create_device` of a twin whose `lastActivityTime` lies past year 9999
// returned Ok; after the restart the directory could not be opened at all. Now it can.
#[cfg(feature = "memory-fleet")]
#[test]
fn a_hub_create_device_with_a_time_past_9999_leaves_a_store_that_reopens() {
    use twinhub::hub::{Hub, HubConfig};
    use twinhub::store::SharedStore;
    use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let config = HubConfig {
            store: Some(SharedStore::new(store)),
            ..HubConfig::default()
        };
        let hub = Hub::with_transport(
            MemoryTransport::new(MemoryConfig::with_seed(1)),
            registry,
            config,
        );
        hub.create_device(Twin::new(id("pump-1")).with_tag("pumps"))
            .unwrap();
        let mut t = Twin::new(id("pump-2"));
        t.last_activity_time = Some(Timestamp::from_millis(YEAR_10000_MS));
        hub.create_device(t)
            .expect("the service write is acknowledged");
        hub.stop();
    }
    let (_store, reg) = Store::open(dir.path(), StoreConfig::default())
        .expect("a restarted hub's store opens with every acknowledged twin");
    assert!(reg.get("pump-1").unwrap().has_tag("pumps"));
    assert!(reg.get("pump-2").is_some());
}
