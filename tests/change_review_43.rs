//! Review of the service API: subscriptions and the change feed across store restarts
//! (src/hub/subscribe.rs, src/registry/feed.rs, src/store) and the request API
//! (src/hub/request.rs). Each test quotes the promise it checks.

#![cfg(feature = "memory-fleet")]

use std::time::Duration;
use twinhub::hub::{Hub, HubConfig, RequestError};
use twinhub::registry::Registry;
use twinhub::store::{Store, StoreConfig};
use twinhub::transport::DeviceRequest;
use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
use twinhub::twin::Twin;
use twinhub::{DeviceId, Lwm2mPath};

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// request.rs (`Reply::wait`): "Blocks until the answer comes or `timeout` passes". The
/// answer is there at once (the hub stopped before the request), so any timeout must
/// hand it back; `Instant::now() + timeout` panicked on overflow for a long one
/// (`Duration::MAX`, "no time-out"), as `Subscription::recv_timeout` did before it was
/// fixed.
#[test]
fn wait_with_a_long_timeout_returns_the_answer() {
    let hub = Hub::with_transport(
        MemoryTransport::new(MemoryConfig::default()),
        Registry::new(),
        HubConfig::default(),
    );
    hub.stop();
    let read = DeviceRequest::Read {
        path: Lwm2mPath::resource(3, 0, 9),
    };
    let reply = hub.request(&id("pump-1"), read);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reply.wait(Duration::MAX)));
    match got {
        Ok(result) => assert_eq!(result, Err(RequestError::HubStopped)),
        Err(_) => panic!("Reply::wait(Duration::MAX) panicked with the answer there"),
    }
}

/// Opens the store in `dir`, writes devices `d0..d4` (changes 1 to 5) and commits them,
/// then makes change 6 (device `lost`) and "crashes" before committing it. Returns 6: a
/// consumer read it (`Hub::changes_after` and the registry hand out uncommitted
/// changes), yet it never happened in the history the disk keeps.
fn crash_after_reading_an_uncommitted_change(dir: &std::path::Path) -> u64 {
    let (mut store, mut registry) = Store::open(dir, StoreConfig::default()).unwrap();
    for i in 0..5 {
        registry.create(Twin::new(id(&format!("d{i}")))).unwrap();
    }
    store.commit(&registry).unwrap();
    registry.create(Twin::new(id("lost"))).unwrap();
    let held = registry.last_seq();
    assert_eq!(held, 6);
    held
}

/// store/mod.rs (`Store::changes_after`): "how a consumer resumes after a restart ... so
/// is a number past `Store::committed_seq` (from another history)"; registry/mod.rs
/// (`Registry::changes_after`) promises a `FeedGap`, "rather than a silent skip", for "one
/// of the numbers the store reserved before the restart that no surviving change used".
///
/// After one restart and one commit, `Store::changes_after(6)` answers with the changes
/// after 6 without a gap (it only checks `after > committed_seq`, and the commit moved
/// `committed_seq` past the reserve), while the registry it rebuilt says gap: the consumer
/// that resumes from the disk keeps device `lost`, which never existed.
#[test]
fn the_store_answers_a_number_lost_in_a_crash_with_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let held = crash_after_reading_an_uncommitted_change(dir.path());
    let (mut store, mut registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(!registry.contains("lost"));
    registry.create(Twin::new(id("after"))).unwrap();
    store.commit(&registry).unwrap();
    assert!(
        registry.changes_after(held).is_err(),
        "control: the registry says gap"
    );
    match store.changes_after(held, 100).unwrap() {
        Err(gap) => assert!(gap.resume_after() >= 5),
        Ok(changes) => panic!(
            "Store::changes_after({held}) answered {:?} without a gap",
            changes.iter().map(|c| c.seq).collect::<Vec<_>>()
        ),
    }
}

/// The same promise of `Registry::changes_after` (and so of `SubscribeOptions::after`:
/// "one this history never handed out (... on a hub restarted from a store one the store
/// reserved that no change used), makes `Hub::subscribe` fail with a `FeedGap`").
///
/// After the first restart, resuming after the lost change 6 is a gap, as promised. After
/// a second restart it is not: the registry only knows the numbers the *last* opening
/// reserved, so 6 is answered with the changes after it (the feed still holds 1 to 5 and
/// the newer ones), and the consumer silently keeps a device that does not exist.
#[test]
fn a_number_lost_in_a_crash_stays_a_gap_after_a_second_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Store::open(dir.path(), StoreConfig::default()).unwrap();
    let held = crash_after_reading_an_uncommitted_change(dir.path());

    let (mut store, mut registry) = open();
    assert!(
        registry.changes_after(held).is_err(),
        "first restart: a gap"
    );
    registry.create(Twin::new(id("after-first"))).unwrap();
    store.commit(&registry).unwrap();
    drop(store);
    drop(registry);

    let (_store, registry) = open();
    assert!(registry.contains("after-first") && !registry.contains("lost"));
    match registry.changes_after(held) {
        Err(gap) => assert!(gap.resume_after() >= 5),
        Ok(changes) => panic!(
            "second restart: after({held}) answered {:?} without a gap",
            changes.map(|c| c.seq).collect::<Vec<_>>()
        ),
    }
}

/// subscribe.rs (`Subscription::resume_after`): "where a new subscription would resume
/// (`SubscribeOptions::after`) to continue this one's twin changes"; (`Subscription`):
/// "A hub started on a store has the feed the store kept ..., so a consumer resumes
/// across restarts too".
///
/// An opening that made no change hands out its starting number as its newest (what an
/// idle subscription's `resume_after` is). Closed without a commit and reopened, that
/// number was counted among the reserved-and-unused ones (everything after the last
/// committed change up to the new start), so the consumer that missed nothing was told
/// of a gap and had to re-read every twin. It is a number this history handed out: no
/// gap. (This pins where the remembered ranges start, which a fix of the test above
/// could widen.)
#[test]
fn the_newest_number_of_an_idle_opening_resumes_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Store::open(dir.path(), StoreConfig::default()).unwrap();
    let (mut store, mut registry) = open();
    for i in 0..5 {
        registry.create(Twin::new(id(&format!("d{i}")))).unwrap();
    }
    store.commit(&registry).unwrap();
    drop(store);
    drop(registry);

    let (store, registry) = open();
    let held = registry.last_seq();
    assert!(held > 5, "the sequence continues past the reserve");
    assert_eq!(registry.changes_after(held).unwrap().count(), 0);
    drop(store);
    drop(registry);

    let (_store, mut registry) = open();
    let changes = registry.changes_after(held).map(|c| c.count());
    assert_eq!(changes, Ok(0), "after({held}) of the last opening");
    registry.create(Twin::new(id("next"))).unwrap();
    let next: Vec<String> = registry
        .changes_after(held)
        .unwrap()
        .map(|c| c.device.to_string())
        .collect();
    assert_eq!(next, ["next"]);
}
