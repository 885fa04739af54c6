//! A subscription resumed after a number the registry handed out but the store never
//! committed (a write made straight through `Hub::registry`), when the commit of that
//! number fails and the hub rebuilds the registry from the store: the consumer neither
//! misses a later change nor gets one twice (the rebuilt registry numbers after the
//! store's reserve, past every number handed out before), and resuming after the lost
//! number is a gap from then on. The live subscription is not told that the number it
//! resumed after was rolled back (see src/hub/subscribe.rs, `SubscribeOptions::after`).

#![cfg(all(feature = "memory-fleet", feature = "fuzzing"))]

use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::hub::{Hub, HubConfig, HubEvent, SubscribeOptions};
use twinhub::store::{SharedStore, Store, StoreConfig};
use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
use twinhub::twin::Twin;

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_subscription_resumed_after_a_number_lost_in_a_rebuild_misses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let store = SharedStore::new(store);
    let config = HubConfig {
        store: Some(store.clone()),
        ..HubConfig::default()
    };
    let hub = Hub::with_transport(
        MemoryTransport::new(MemoryConfig::default()),
        registry,
        config,
    );
    hub.create_device(Twin::new(id("d0"))).unwrap();
    let committed = store.lock().committed_seq();
    // A write straight through the registry, read by a consumer before the hub thread
    // commits it; its commits fail, and so do the rebuilds at first (memory keeps it,
    // the consumer subscribes after it), then the rebuild drops it.
    let lost = {
        let mut store = store.lock();
        store.fail_commits(1000);
        store.fail_reloads(1000);
        let mut reg = hub.registry().write();
        reg.create(Twin::new(id("phantom"))).unwrap();
        reg.last_seq()
    };
    assert_eq!(lost, committed + 1);
    wait_until("a failed commit", || store.lock().is_poisoned());
    let sub = hub
        .subscribe(SubscribeOptions::twins_only().after(lost))
        .unwrap();
    {
        let mut store = store.lock();
        store.fail_commits(0);
        store.fail_reloads(0);
    }
    wait_until("the rebuild", || !hub.registry().read().contains("phantom"));
    assert!(
        hub.registry().read().last_seq() > lost,
        "numbers go on past it"
    );
    // Later changes reach the subscription, each once.
    for name in ["d1", "d2"] {
        hub.create_device(Twin::new(id(name))).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        match sub.recv_timeout(Duration::from_secs(5)) {
            Ok(HubEvent::Twin(c)) => got.push((c.seq, c.device.to_string())),
            other => panic!("{other:?} after {got:?}"),
        }
    }
    assert_eq!(
        got.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>(),
        ["d1", "d2"]
    );
    assert!(got.iter().all(|&(seq, _)| seq > lost), "{got:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(sub.try_recv().is_err(), "nothing repeated");
    // A consumer resuming after the lost number now is told of a gap, by the hub and the
    // store alike.
    let again = hub.subscribe(SubscribeOptions::twins_only().after(lost));
    assert!(again.is_err(), "resuming after the lost number");
    assert!(matches!(store.lock().changes_after(lost, 10), Ok(Err(_))));
    hub.stop();
}
