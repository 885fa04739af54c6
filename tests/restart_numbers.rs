//! Sequence numbers and etags across restarts without a store (src/registry/mod.rs, Numbers
//! across restarts; src/hub/mod.rs, Numbers without a store).
//!
//! A hub without a store numbered its change feed, and so its etags and generation ids,
//! from 1 again when restarted: a consumer resuming after a number of the earlier run
//! that fell inside the new run's range resumed against another history (missing or
//! mis-ordering changes, silently), and an `If-Match` with an etag of the earlier run was
//! accepted against the new run's twin. A hub without a store now starts after a number
//! from the clock ([`seq_start_at`]), past the numbers of hubs stopped in the process.

use twinhub::registry::{
    ChangeKind, MAX_SEQ_START, Registry, RegistryError, SEQ_PER_MILLI, SeqStartError, seq_start_at,
};
use twinhub::twin::{Etag, Twin};
use twinhub::{DeviceId, Timestamp};

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// The rule, on an injected clock: 1,000 numbers a millisecond, below 2^53 for the next
/// centuries, capped at `MAX_SEQ_START`.
#[test]
fn the_clock_start_is_a_thousand_numbers_a_millisecond_below_2_pow_53() {
    assert_eq!(seq_start_at(Timestamp::EPOCH), 0);
    let t = Timestamp::from_millis(1_796_000_000_000); // 2026-12
    assert_eq!(seq_start_at(t), 1_796_000_000_000 * SEQ_PER_MILLI);
    let later = Timestamp::from_millis(t.as_millis() + 1);
    assert_eq!(seq_start_at(later) - seq_start_at(t), 1_000);
    // 2100-01-01: still below 2^52, so a history started then has 2^52 numbers before
    // it leaves what a double carries exactly.
    let y2100 = Timestamp::from_millis(4_102_444_800_000);
    assert!(seq_start_at(y2100) < MAX_SEQ_START);
    assert_eq!(MAX_SEQ_START, 1 << 52);
    assert_eq!(seq_start_at(Timestamp::MAX), MAX_SEQ_START);
    // The last millisecond below the cap, and the first at it.
    let edge = MAX_SEQ_START / SEQ_PER_MILLI;
    assert!(seq_start_at(Timestamp::from_millis(edge)) <= MAX_SEQ_START);
    assert_eq!(
        seq_start_at(Timestamp::from_millis(edge + 1)),
        MAX_SEQ_START
    );
}

/// A registry alone stays deterministic (from 1); `continue_after` moves it on: skipped
/// numbers are gaps, the changes held stay readable, every twin takes the new number as
/// its versions (an etag from before fails), and the registry stays consistent.
#[test]
fn continue_after_skips_numbers_and_renumbers_the_twins() {
    let mut reg = Registry::new();
    reg.create(Twin::new(id("a"))).unwrap();
    reg.create(Twin::new(id("b"))).unwrap();
    let before = reg.get("a").unwrap().etag();
    assert_eq!(before, Etag(1), "a registry alone numbers from 1");
    let start = seq_start_at(Timestamp::from_millis(1_796_000_000_000));
    assert_eq!(reg.continue_after(start), Ok(true));
    assert_eq!(reg.last_seq(), start);
    for d in ["a", "b"] {
        let t = reg.get(d).unwrap();
        assert_eq!(
            (t.generation_id(), t.etag(), t.service_etag()),
            (Etag(start), Etag(start), Etag(start))
        );
    }
    reg.validate().unwrap();
    // An etag of before fails; the current one works.
    assert!(matches!(
        reg.add_tags("a", &["x"], Some(before)),
        Err(RegistryError::PreconditionFailed { .. })
    ));
    assert_eq!(
        reg.add_tags("a", &["x"], Some(Etag(start))).unwrap(),
        Etag(start + 1)
    );
    reg.create(Twin::new(id("c"))).unwrap();
    assert_eq!(reg.get("c").unwrap().generation_id(), Etag(start + 2));
    reg.validate().unwrap();
    // From the start, from before the move and from the move: every change once.
    let seqs = |after| -> Vec<u64> {
        reg.changes_after(after)
            .unwrap()
            .map(|c| c.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(0), [1, 2, start + 1, start + 2]);
    assert_eq!(seqs(2), [start + 1, start + 2]);
    assert_eq!(seqs(start), [start + 1, start + 2]);
    // Skipped: a gap whose resume point is the newest number before.
    for skipped in [3, 1_000, start - 1] {
        let gap = reg.changes_after(skipped).err().unwrap();
        assert_eq!(gap.resume_after(), 2, "{skipped}");
    }
    assert_eq!(
        reg.changes_after(1_000).err().unwrap().to_string(),
        "change feed gap: sequence 1000 was never handed out by this history (the newest \
         number before it is 2); it comes from another history"
    );
    // Beyond the newest, as before.
    assert!(reg.changes_after(start + 3).is_err());
    // A history never goes back; past the bound is refused and changes nothing.
    assert_eq!(reg.continue_after(start), Ok(false));
    assert_eq!(reg.continue_after(5), Ok(false));
    assert_eq!(
        reg.continue_after(MAX_SEQ_START + 1),
        Err(SeqStartError::TooHigh {
            requested: MAX_SEQ_START + 1
        })
    );
    assert_eq!(reg.last_seq(), start + 2);
    assert_eq!(reg.continue_after(MAX_SEQ_START), Ok(true));
    reg.validate().unwrap();
}

/// The skipped ranges are bounded: moves with no change between merge, and a range the
/// feed dropped past goes (its numbers are a gap through the feed anyway).
#[test]
fn skipped_ranges_merge_and_go_once_the_feed_dropped_past_them() {
    let mut reg = Registry::with_feed_capacity(2);
    for n in 1..=5u64 {
        assert!(reg.continue_after(n * 100).unwrap());
    }
    // One range (0, 500): every number below 500 but 0 is a gap.
    for after in [1, 100, 250, 499] {
        assert_eq!(reg.changes_after(after).err().unwrap().resume_after(), 0);
    }
    assert_eq!(reg.changes_after(500).unwrap().count(), 0);
    reg.create(Twin::new(id("a"))).unwrap(); // 501
    reg.continue_after(1_000).unwrap();
    reg.create(Twin::new(id("b"))).unwrap(); // 1001
    assert_eq!(reg.changes_after(700).err().unwrap().resume_after(), 501);
    assert_eq!(reg.changes_after(300).err().unwrap().resume_after(), 0);
    assert_eq!(
        reg.changes_after(501)
            .unwrap()
            .map(|c| c.seq)
            .collect::<Vec<_>>(),
        [1001]
    );
    // Many moves between changes, more than the feed holds: the feed drops past the old
    // ranges, and resuming inside one of them is still a gap.
    let mut start = 1_001;
    for i in 0..100 {
        start += 10;
        reg.continue_after(start).unwrap();
        reg.create(Twin::new(id(&format!("m{i}")))).unwrap();
        start += 1;
    }
    for after in [3, 700, 1_005, start - 5] {
        assert!(reg.changes_after(after).is_err(), "{after}");
    }
    assert_eq!(reg.changes_after(start).unwrap().count(), 0);
    assert_eq!(
        reg.changes_after(start - 1)
            .unwrap()
            .map(|c| c.kind.clone())
            .collect::<Vec<_>>(),
        [ChangeKind::Created]
    );
    reg.validate().unwrap();
}

/// Against a model, over pseudo-random runs of writes and moves with small feeds:
/// resuming after 0 or a change's number the feed still holds gives exactly the changes
/// after it; after a number no change had (skipped by a move, or past the newest) or one
/// the feed dropped, a gap; after a move's start, one or the other (a start swallowed by a
/// later move with no change between is a gap, else the changes after it). Whatever the
/// ranges merged or dropped.
#[test]
fn resuming_around_moves_agrees_with_a_model() {
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for _run in 0..200 {
        let capacity = next(5) as usize;
        let mut reg = Registry::with_feed_capacity(capacity);
        let mut changes: Vec<u64> = Vec::new();
        let mut starts: Vec<u64> = Vec::new();
        for _op in 0..60 {
            let device = format!("d{}", next(6));
            let before = reg.last_seq();
            match next(8) {
                0..=2 => {
                    let _ = reg.create(Twin::new(id(&device)));
                }
                3 => {
                    let _ = reg.remove(&device);
                }
                4 => {
                    let _ = reg.add_tags(&device, &[&format!("t{}", next(3))], None);
                }
                _ => {
                    let to = before + [0, 1, 2, 10, 1_000][next(5) as usize];
                    assert_eq!(reg.continue_after(to), Ok(to > before));
                    if to > before {
                        starts.push(to);
                    }
                    reg.validate().unwrap();
                    continue;
                }
            }
            match reg.last_seq() - before {
                0 => {}
                1 => changes.push(reg.last_seq()),
                n => panic!("one write emitted {n} numbers"),
            }
            reg.validate().unwrap();
        }
        let dropped = match changes.len().checked_sub(capacity + 1) {
            Some(i) => changes[i],
            None => 0,
        };
        let newest = reg.last_seq();
        let mut probes: Vec<u64> = vec![0, 1, newest, newest + 1];
        for &n in changes.iter().chain(&starts) {
            probes.extend([n - 1, n, n + 1]);
        }
        for x in probes {
            let got = reg
                .changes_after(x)
                .map(|c| c.map(|c| c.seq).collect::<Vec<_>>());
            let after: Vec<u64> = changes.iter().copied().filter(|&c| c > x).collect();
            let handed_out = x == 0 || changes.contains(&x);
            if x > newest || x < dropped {
                assert!(got.is_err(), "after {x}: {got:?} (dropped {dropped})");
            } else if handed_out {
                assert_eq!(got, Ok(after), "after {x}, a number handed out");
            } else if starts.contains(&x) {
                assert!(got.is_err() || got == Ok(after), "after start {x}: {got:?}");
            } else {
                assert!(got.is_err(), "after {x}, never handed out: {got:?}");
            }
        }
    }
}

#[cfg(feature = "memory-fleet")]
mod hub {
    use super::id;
    use twinhub::hub::{Hub, SubscribeOptions};
    use twinhub::registry::{Registry, RegistryError, SharedRegistry, seq_start_at};
    use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
    use twinhub::twin::{Etag, ServiceValue, Twin};
    use twinhub::{Scalar, Timestamp};

    fn start(registry: SharedRegistry) -> Hub {
        Hub::builder()
            .shared_registry(registry)
            .transport(MemoryTransport::new(MemoryConfig::default()))
            .build()
            .unwrap()
    }

    /// One run of a service: a twin the program creates before the hub starts, one it
    /// creates through the hub, and a service property set on it. Returns the hub, the
    /// etags a service holds after (the first twin's and the second's service etag) and
    /// the newest number an event stream would have given it.
    fn run() -> (Hub, Etag, Etag, u64) {
        let mut registry = Registry::new();
        registry.create(Twin::new(id("pre"))).unwrap();
        let hub = start(SharedRegistry::new(registry));
        hub.create_device(Twin::new(id("d"))).unwrap();
        let etag_d = hub
            .set_service_property(
                "d",
                "owner",
                Some(ServiceValue::Scalar(Scalar::from("ops"))),
                None,
            )
            .unwrap();
        let etag_pre = hub.twin("pre").unwrap().service_properties.etag;
        let newest = hub.registry().read().last_seq();
        (hub, etag_pre, etag_d, newest)
    }

    /// The same program run twice: the second run refuses the first run's resume point
    /// with a gap and its etags with a failed precondition. Before, both runs numbered
    /// from 1: the second run's `d` had the first run's etag and `after(newest)` resumed
    /// silently against the other history.
    #[test]
    fn a_restarted_hub_refuses_the_first_runs_resume_point_and_etags() {
        let (first, etag_pre, etag_d, newest) = run();
        first.stop();
        drop(first);
        let (second, _, _, _) = run();
        // More changes in the second run than in the first (before, its range covered
        // the first run's numbers).
        for i in 0..3 {
            second.add_tags("d", &[&format!("t{i}")], None).unwrap();
        }
        assert!(second.registry().read().last_seq() > newest);
        let gap = second
            .subscribe(SubscribeOptions::twins_only().after(newest))
            .err()
            .unwrap_or_else(|| panic!("after({newest}) of the first run was accepted"));
        assert!(gap.resume_after() < newest, "{gap}");
        assert!(second.changes_after(newest).is_err());
        // A subscription from the gap's resume point gets the second run's changes.
        let sub = second
            .subscribe(SubscribeOptions::twins_only().after(gap.resume_after()))
            .unwrap();
        assert!(!sub.is_empty());
        for (device, etag) in [("pre", etag_pre), ("d", etag_d)] {
            let got = second.set_service_property(
                device,
                "owner",
                Some(ServiceValue::Scalar(Scalar::from("intruder"))),
                Some(etag),
            );
            assert!(
                matches!(got, Err(RegistryError::PreconditionFailed { .. })),
                "{device}: the first run's etag {etag} was accepted: {got:?}"
            );
            assert!(matches!(
                second.add_tags(device, &["intruder"], Some(etag)),
                Err(RegistryError::PreconditionFailed { .. })
            ));
            let twin = second.twin(device).unwrap();
            assert!(twin.etag.0 > newest && twin.generation_id.0 > newest);
        }
        second.registry().read().validate().unwrap();
    }

    /// The numbers come from the clock when the hub starts: 1,000 a millisecond.
    #[test]
    fn a_hub_without_a_store_numbers_from_the_clock() {
        let before = seq_start_at(Timestamp::now());
        let hub = start(SharedRegistry::default());
        let first = hub.registry().read().last_seq();
        assert!(first >= before, "{first} < {before}");
        assert!(first < 1 << 53);
        hub.create_device(Twin::new(id("a"))).unwrap();
        assert_eq!(hub.changes_after(first).unwrap()[0].seq, first + 1);
    }

    /// Once per registry: a hub started beside (or after) another on the same registry
    /// keeps its numbers, so the first hub's consumers and etags stay valid.
    #[test]
    fn a_second_hub_on_the_same_registry_keeps_its_numbers() {
        let registry = SharedRegistry::default();
        let first = start(registry.clone());
        first.create_device(Twin::new(id("d"))).unwrap();
        let etag = first.twin("d").unwrap().service_properties.etag;
        let newest = registry.read().last_seq();
        let second = start(registry.clone());
        assert_eq!(registry.read().last_seq(), newest);
        assert_eq!(second.twin("d").unwrap().service_properties.etag, etag);
        first.stop();
        drop(first);
        let third = start(registry.clone());
        assert_eq!(registry.read().last_seq(), newest);
        assert!(
            third
                .subscribe(SubscribeOptions::twins_only().after(newest))
                .is_ok()
        );
        third.add_tags("d", &["x"], Some(etag)).unwrap();
        drop(second);
    }

    /// A hub stopped in this process with numbers ahead of the clock (here: a registry
    /// the program moved far ahead) is followed by one that starts past them: within a
    /// process the rule does not depend on the clock.
    #[test]
    fn a_hub_starts_past_the_numbers_of_one_stopped_in_this_process() {
        let ahead = seq_start_at(Timestamp::now()) + 1_000_000_000_000;
        let mut registry = Registry::new();
        registry.continue_after(ahead).unwrap();
        let first = start(SharedRegistry::new(registry));
        first.create_device(Twin::new(id("d"))).unwrap();
        let newest = first.registry().read().last_seq();
        assert_eq!(newest, ahead + 1, "a registry already past the clock stays");
        drop(first);
        let second = start(SharedRegistry::default());
        assert!(second.registry().read().last_seq() > newest);
        assert!(second.changes_after(newest).is_err());
    }
}

/// A store's registry is numbered by the store: moving it on by hand is refused (its
/// twins' new etags would not be committed, and an earlier etag would come back after a
/// restart), whether the store rebuilt it or adopted it.
#[test]
fn a_stores_registry_refuses_to_continue_after_another_number() {
    use twinhub::store::{Store, StoreConfig};
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    reg.create(Twin::new(id("a"))).unwrap();
    store.commit(&reg).unwrap();
    let (etag, last) = (reg.get("a").unwrap().etag(), reg.last_seq());
    assert_eq!(
        reg.continue_after(last + 1_000),
        Err(SeqStartError::StoreBacked)
    );
    assert_eq!(reg.get("a").unwrap().etag(), etag);
    assert_eq!(reg.last_seq(), last);

    let mut other = Registry::new();
    other.create(Twin::new(id("b"))).unwrap();
    store.adopt(&mut other).unwrap();
    assert_eq!(
        other.continue_after(other.last_seq() + 1_000),
        Err(SeqStartError::StoreBacked)
    );
}
