//! How long the hub leaves its store alone after failed commits.
//!
//! A failed commit rebuilds memory from the disk (README, Durability), which reads
//! every twin: seconds at a million twins, with the registry's write lock
//! held. A disk that keeps refusing writes (full, say) would have the hub rebuild on
//! every batch of device events and every service write, and readers would wait behind
//! one rebuild after another. So the first failure is retried at once (one transient
//! error costs one rebuild), and from the second failure in a row the hub *backs off*:
//! for 1 s, then 2, 4, 8, 16 and at most 30 s, it tries no commit. Service writes fail at
//! once with [`StoreError::BackingOff`](crate::store::StoreError::BackingOff) and touch
//! nothing; device events are held unapplied (see [`MAX_HELD_EVENTS`]) and applied in
//! one batch when the time is up; jobs make no progress. A commit that succeeds ends it.
//!
//! The device events of a batch whose commit failed are held too, and applied again at
//! the next try: a disk that fails for a while loses none of them, up to
//! [`MAX_TRIES`] failed commits (about a minute of failures with the waits above).

use std::time::{Duration, Instant};

/// Device events the hub holds, unapplied, while it backs off; an event arriving at the
/// bound is dropped (and counted in [`HubStats::dropped_events`](super::HubStats)): a
/// dropped notification is reported again at the device's next change, a dropped
/// registration at its next Update.
pub const MAX_HELD_EVENTS: usize = 65_536;

/// Failed commits a held device event goes through before it is dropped (and counted
/// in [`HubStats::dropped_events`](super::HubStats)): the first try and seven more, the
/// last one about a minute after the first (0 + 0 + 1 + 2 + 4 + 8 + 16 + 30 s of waits).
/// A bound of tries, so that an event whose commit could never succeed does not hold
/// the hub's events for good.
pub const MAX_TRIES: u32 = 8;

/// The longest wait between two tries of a failing store.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Failed commits in a row and when the store may be tried again.
#[derive(Debug, Default)]
pub(crate) struct StoreBackoff {
    failures: u32,
    until: Option<Instant>,
}

impl StoreBackoff {
    /// How long the hub still waits before its next commit, if it waits.
    pub(crate) fn remaining(&self, now: Instant) -> Option<Duration> {
        self.until
            .map(|t| t.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// A commit (or the rebuild after one) failed at `now`.
    pub(crate) fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.until = (self.failures >= 2).then(|| {
            let doublings = (self.failures - 2).min(5);
            now + Duration::from_secs(1u64 << doublings).min(MAX_BACKOFF)
        });
    }

    /// A commit succeeded: the next failure is retried at once again.
    pub(crate) fn succeeded(&mut self) {
        *self = StoreBackoff::default();
    }

    /// Failed commits in a row.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_retried_at_once_and_later_ones_wait_longer_up_to_the_cap() {
        let now = Instant::now();
        let mut b = StoreBackoff::default();
        b.failed(now);
        assert_eq!(b.remaining(now), None);
        let waits: Vec<u64> = (0..8)
            .map(|_| {
                b.failed(now);
                b.remaining(now).unwrap().as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.remaining(now + Duration::from_secs(30)), None);
        b.succeeded();
        assert_eq!((b.failures(), b.remaining(now)), (0, None));
        b.failed(now);
        assert_eq!(b.remaining(now), None);
    }
}
