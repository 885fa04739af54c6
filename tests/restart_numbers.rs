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
    // Beyond the newest, as before.
    assert!(reg.changes_after(start + 3).is_err());
    // A history never goes back; past the bound is refused and changes nothing.
    assert_eq!(reg.continue_after(start), Ok(false));
    assert_eq!(reg.continue_after(5), Ok(false));
    assert_eq!(
        reg.continue_after(MAX_SEQ_START + 1),
        Err(SeqStartError {
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
