//! Review of subscriptions and the change feed (src/hub/subscribe.rs, src/registry/feed.rs,
//! src/store/feed.rs). Each test quotes the promise it checks.

#![cfg(all(feature = "memory-fleet", feature = "fuzzing"))]

mod hub_support;

use hub_support::{Script, Scripted};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::hub::{Hub, HubConfig, HubEvent, SubscribeOptions, Subscription};
use twinhub::registry::{ChangeKind, Registry};
use twinhub::store::{SharedStore, Store, StoreConfig};
use twinhub::twin::Twin;

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn scripted_hub(registry: Registry, config: HubConfig) -> Hub {
    let script = Arc::new(Mutex::new(Script::default()));
    Hub::with_transport(Scripted(script), registry, config)
}

/// Up to `want` events, waiting at most 30 s in all (generous: a loaded machine may not
/// run the hub's thread for a while).
fn drain(sub: &Subscription, want: usize) -> Vec<HubEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.recv_timeout(left) {
            Ok(e) => out.push(e),
            Err(_) => break,
        }
    }
    out
}

/// subscribe.rs (Subscription docs): "The hub publishes after it applied (and, with a
/// store, committed) a batch"; hub/mod.rs (`Inner::publish`): "subscribers never see a
/// change that did not reach the disk".
///
/// A durable hub with no subscriber yet; a write straight through `Hub::registry` (the
/// hub thread commits it on its next pass, and that commit fails, so the rebuild from the
/// store takes it away). A subscription resumed with `after` in that window replays the
/// uncommitted change: the service is told of a device that never reached the disk.
#[test]
fn a_resumed_subscription_on_a_durable_hub_never_replays_an_uncommitted_change() {
    for _attempt in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let store = SharedStore::new(store);
        let hub = scripted_hub(
            registry,
            HubConfig {
                store: Some(store.clone()),
                ..HubConfig::default()
            },
        );
        hub.create_device(Twin::new(id("durable"))).unwrap();
        let seen = hub.registry().read().last_seq();
        store.lock().fail_next_commit();
        hub.registry()
            .write()
            .create(Twin::new(id("phantom")))
            .unwrap();
        let sub = hub
            .subscribe(SubscribeOptions::twins_only().after(seen))
            .unwrap();
        // The hub thread's next pass (within 20 ms) tries the commit, fails, rebuilds
        // (generous deadline: a loaded machine may not run the hub's thread for a while).
        let deadline = Instant::now() + Duration::from_secs(30);
        while hub.twin("phantom").is_some() {
            assert!(Instant::now() < deadline, "the failed commit never rebuilt");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A durable write after the rebuild (refused while the hub backs off from the
        // failure): it must be the first thing the subscription gets.
        while let Err(e) = hub.create_device(Twin::new(id("after"))) {
            assert!(
                Instant::now() < deadline,
                "the hub never took a write again: {e}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = drain(&sub, 1);
        match got.first() {
            Some(HubEvent::Twin(c)) if c.device.as_str() == "after" => {}
            _ => panic!(
                "the subscription replayed a change that never reached the disk: {got:?} \
                 (committed through {})",
                store.lock().committed_seq()
            ),
        }
    }
}

/// subscribe.rs (`HubEvent::Lagged`): "Events were dropped ... Every event before this one
/// was delivered; `missed` events at this point were not." and (`Subscription`):
/// "`SubscribeOptions::after` replays the twin changes after a sequence number from the
/// registry's change feed, then continues live, without a gap or a repeat".
///
/// A subscription resumed after a point the feed still holds, while changes written
/// straight into the registry (more than the feed holds) wait for the hub thread's next
/// pass: the publication's gap is counted against every twin subscriber, this one too,
/// although it asked to start after the dropped range. It gets a `Lagged` saying it
/// missed six changes it never wanted, with a `resume_after` that makes the README's
/// recipe ("Missed some: replay the twin changes from the feed") deliver the rest twice.
#[test]
fn a_subscription_resumed_past_a_feed_gap_is_not_told_it_missed_the_gap() {
    for _attempt in 0..10 {
        let hub = scripted_hub(Registry::with_feed_capacity(4), HubConfig::default());
        // Where the hub's numbers start (from the clock: a hub has no store here).
        let start = hub.registry().read().last_seq();
        let _other = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
        for i in 0..2 {
            hub.create_device(Twin::new(id(&format!("d{i}")))).unwrap();
        }
        {
            let mut reg = hub.registry().write();
            for i in 0..10 {
                reg.create(Twin::new(id(&format!("bulk{i}")))).unwrap();
            }
        }
        // Seq 3..=12 (after `start`) written; the feed holds 9..=12. Resume after 10:
        // held by the feed.
        let sub = hub
            .subscribe(SubscribeOptions::twins_only().after(start + 10))
            .unwrap();
        if !sub.is_empty() {
            // The hub thread published the bulk before the subscription: try again.
            continue;
        }
        let got = drain(&sub, 2);
        let twins: Vec<u64> = got
            .iter()
            .filter_map(|e| match e {
                HubEvent::Twin(c) => Some(c.seq),
                _ => None,
            })
            .collect();
        assert_eq!(twins, [start + 11, start + 12]);
        assert!(
            !got.iter().any(|e| matches!(e, HubEvent::Lagged { .. })),
            "nothing after 10 was missed, yet: {got:?}"
        );
        return;
    }
    panic!("never made the subscription before the hub thread's pass");
}

/// subscribe.rs: "`recv_timeout`: The next event, waiting at most `timeout`." An event is
/// queued, so it must come back at once whatever the timeout; `Instant::now() + timeout`
/// panics on overflow for a long timeout (src/hub/subscribe.rs, `recv_timeout`).
#[test]
fn recv_timeout_with_a_long_timeout_returns_a_queued_event() {
    let hub = scripted_hub(Registry::new(), HubConfig::default());
    let sub = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    hub.create_device(Twin::new(id("d1"))).unwrap();
    assert_eq!(sub.len(), 1, "published before create_device returned");
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sub.recv_timeout(Duration::MAX)
    }));
    match got {
        Ok(Ok(HubEvent::Twin(c))) => assert_eq!(c.kind, ChangeKind::Created),
        Ok(other) => panic!("{other:?}"),
        Err(_) => panic!("recv_timeout(Duration::MAX) panicked with an event queued"),
    }
}

/// subscribe.rs (`SubscribeOptions::after`): "A number the feed dropped, or one beyond its
/// newest change (from another history), makes `Hub::subscribe` fail with a `FeedGap`";
/// registry/feed.rs (`FeedGap`): "Answering \"nothing yet\" would silently skip every
/// change until the count caught up with `after`, so it is a gap too".
///
/// A durable hub whose newest change is 5, restarted: its registry's sequence now starts
/// at the store's reserve mark (about a million), so a consumer holding 500 from another
/// history is answered "nothing yet" and silently skips changes 1..=5 of this one.
#[test]
fn a_restarted_durable_hub_refuses_a_resume_point_beyond_its_newest_change() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let config = HubConfig {
            store: Some(SharedStore::new(store)),
            ..HubConfig::default()
        };
        scripted_hub(registry, config)
    };
    let hub = open();
    for i in 0..5 {
        hub.create_device(Twin::new(id(&format!("d{i}")))).unwrap();
    }
    // Before the restart the promise holds.
    assert!(
        hub.subscribe(SubscribeOptions::twins_only().after(500))
            .is_err()
    );
    hub.stop();
    drop(hub);
    let hub = open();
    let newest = hub.changes_after(0).unwrap().last().unwrap().seq;
    assert_eq!(newest, 5, "the feed came back from the store");
    match hub.subscribe(SubscribeOptions::twins_only().after(500)) {
        Err(gap) => assert!(gap.resume_after() >= newest),
        Ok(_) => panic!(
            "after(500) accepted on a hub whose newest change is {newest} (last_seq {})",
            hub.registry().read().last_seq()
        ),
    }
}

/// subscribe.rs (`SubscribeOptions`): "`Default`: everything from now on"; and the intent
/// tests/hub_subscribe.rs (`a_subscription_starts_now_and_one_made_after_stop_is_closed`)
/// records: "A subscription starts at the newest change whoever listened before".
///
/// With nobody listening, a write made straight through `Hub::registry` before the
/// subscription is left out (that test). With another subscriber listening, the same
/// write is handed to the new subscription: where a subscription starts depends on who
/// else listens (`Publisher::subscribe` starts it at `through`, the last *published*
/// number, unless the list is empty).
#[test]
fn a_subscription_starts_at_the_newest_change_whoever_listens() {
    for _attempt in 0..10 {
        let hub = scripted_hub(Registry::new(), HubConfig::default());
        hub.create_device(Twin::new(id("before"))).unwrap();
        let other = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
        hub.registry()
            .write()
            .create(Twin::new(id("unpublished")))
            .unwrap();
        let sub = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
        if !other.is_empty() {
            // The hub thread published the write before the subscription: try again.
            continue;
        }
        hub.create_device(Twin::new(id("after"))).unwrap();
        let first = drain(&sub, 1);
        assert!(
            matches!(&first[..], [HubEvent::Twin(c)] if c.device.as_str() == "after"),
            "a write made before the subscription came first: {first:?}"
        );
        return;
    }
    panic!("never made the subscription before the hub thread's pass");
}
