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
//! nothing; device events are held unapplied (see [`MAX_HELD_NOTIFICATIONS`]) and applied
//! in one batch when the time is up; jobs make no progress. A commit that succeeds ends it.
//!
//! The device events of a batch whose commit failed are held too, and applied again at
//! the next try: a disk that fails for a while loses none of them, up to
//! [`MAX_TRIES`] failed commits *of each event* (about a minute of failures with the
//! waits above), and up to the bounds on what is held ([`MAX_HELD_NOTIFICATIONS`],
//! [`MAX_HELD_EVENTS`], [`MAX_HELD_OFFLINE`]).

use crate::time::Timestamp;
use crate::transport::DeviceEvent;
use crate::twin::DeviceId;
use indexmap::IndexMap;
use std::time::{Duration, Instant};

/// Notifications the hub holds, unapplied, while it backs off or after a failed commit;
/// a notification arriving at the bound is dropped (and counted in
/// [`HubStats::dropped_events`](super::HubStats)): the device reports the value again at
/// its next change. A bound of its own, so that a chatty fleet filling it never crowds
/// out the events nothing repeats (below).
pub const MAX_HELD_NOTIFICATIONS: usize = 65_536;

/// Device events other than notifications the hub holds (registrations, updates,
/// de-registrations and expiries, answers to operations and time-outs); one arriving at
/// the bound is dropped and counted like a notification, except a de-registration or an
/// expiry (see [`MAX_HELD_OFFLINE`]) and a [`DeviceEvent::Sent`] (below). What is lost
/// when an event is dropped: a registration or update is made good at the device's next
/// Update (an Update under a registration id the twin does not hold is applied as that
/// registration, and so is a move without one, [`DeviceEvent::AddressChanged`], which
/// carries the registration; a device the hub has no sync observations for is observed
/// afresh); a
/// job's answer lets its child time out and retry; a sync observation's answer is
/// observed again at the next Update.
///
/// A `Sent` carries no twin change but must not be lost: without it the job engine
/// counts its operation as still queued at the transport, and should the transport then
/// time the operation out (its answer lost), the engine takes it for a request that
/// never left and sends it again: a reboot's or factory reset's Execute would be carried
/// out twice. Nor may it be handed to the engine ahead of the events held before it (a
/// registration held before it is no proof of the reboot; after it, it is). So a `Sent`
/// the job engine waits for is held in its place among the events, outside this bound:
/// at most one for each operation the engine waits a `Sent` for, which is one for each
/// job child in progress (each has at most one operation). Should it go through
/// [`MAX_TRIES`] failed commits, every event held before it did too and was dropped, and
/// it is handed to the engine at once instead of being dropped. A `Sent` no one waits
/// for (the hub's own operations, a job child that ended or moved on) is not held at
/// all: applying it would change nothing (nor does an engine rebuilt from the store
/// later wait for it: it only takes over the waits of the engine it replaces), and it is
/// not counted as dropped. A `Sent` the engine already took from a batch whose commit
/// failed is one it waits for: the engine rebuilt from the store takes its operation
/// over as still queued, so the `Sent` is held with the batch and applied again in its
/// place, after the registration that came before it. So is the `Sent` of an operation a
/// job cancellation gave up while it was still queued, until that cancellation is
/// durable: should its commit fail, the engine rebuilt from the store (once the store
/// reads again) takes the operation back as still queued. Held events are lost when the hub stops: a `Sent` among them
/// is then not in the store, and the restarted engine sends the Execute again (see the
/// job engine's restore rules); the window for that is the store's outage, not only
/// the moment between a `Sent` and its commit.
pub const MAX_HELD_EVENTS: usize = 65_536;

/// Devices whose de-registration or expiry arrived with [`MAX_HELD_EVENTS`] reached: the
/// hub keeps the newest for each such device (nothing would repeat it: the twin would
/// stay `connected` for good), to be applied after the events held, and forgets it when
/// a newer registration or update of the device comes. One entry per device, so a
/// million-device fleet leaving during one backoff fits; a device arriving past this
/// bound has its event dropped and counted (the twin stays `connected` until the device
/// registers again or the hub restarts, whose registration check drops it). An entry
/// goes through [`MAX_TRIES`] failed commits like a held event.
pub const MAX_HELD_OFFLINE: usize = 1 << 20;

/// Failed commits a held device event goes through before it is dropped (and counted
/// in [`HubStats::dropped_events`](super::HubStats)): the first try and seven more, the
/// last one about a minute after the first (0 + 0 + 1 + 2 + 4 + 8 + 16 + 30 s of waits).
/// Counted for each event: one that arrives while the hub backs off has its own eight.
/// A bound of tries, so that an event whose commit could never succeed does not hold
/// the hub's events for good.
pub const MAX_TRIES: u32 = 8;

/// Device events held unapplied, oldest first, each with the failed commits it went
/// through and when it arrived.
#[derive(Debug)]
pub(crate) struct HeldEvents {
    /// Notifications, other events, devices kept offline: [`MAX_HELD_NOTIFICATIONS`],
    /// [`MAX_HELD_EVENTS`], [`MAX_HELD_OFFLINE`] (smaller in the model test).
    bounds: (usize, usize, usize),
    events: Vec<DeviceEvent>,
    /// `marks[i]`: what is known of `events[i]`.
    marks: Vec<HeldMark>,
    notifications: usize,
    /// [`DeviceEvent::Sent`]s in `events` held outside the bound on other events (see
    /// [`MAX_HELD_EVENTS`]).
    sents: usize,
    /// The newest de-registration or expiry of each device that arrived past
    /// [`MAX_HELD_EVENTS`] (see [`MAX_HELD_OFFLINE`]); newer than every event of the
    /// device in `events`, so applied after them.
    offline: IndexMap<DeviceId, (DeviceEvent, HeldMark)>,
}

/// What the hub keeps beside a held event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct HeldMark {
    /// Failed commits it went through.
    pub(crate) tries: u32,
    /// When the hub received it: the time its changes are stamped with, however late
    /// they are applied.
    pub(crate) arrived: Timestamp,
}

impl Default for HeldEvents {
    fn default() -> Self {
        HeldEvents {
            bounds: (MAX_HELD_NOTIFICATIONS, MAX_HELD_EVENTS, MAX_HELD_OFFLINE),
            events: Vec::new(),
            marks: Vec::new(),
            notifications: 0,
            sents: 0,
            offline: IndexMap::new(),
        }
    }
}

impl HeldEvents {
    /// How many events are held.
    pub(crate) fn len(&self) -> usize {
        self.events.len() + self.offline.len()
    }

    /// Holds `event` behind those held; gives it back (to be dropped) when it went
    /// through [`MAX_TRIES`] failed commits or its kind's bound is reached.
    #[must_use]
    pub(crate) fn hold(&mut self, event: DeviceEvent, mark: HeldMark) -> Option<DeviceEvent> {
        let note = matches!(event, DeviceEvent::Notification { .. });
        let full = if note {
            self.notifications >= self.bounds.0
        } else {
            self.events.len() - self.notifications - self.sents >= self.bounds.1
        };
        if mark.tries >= MAX_TRIES {
            return Some(event);
        }
        // A lifecycle event of a device supersedes the de-registration kept for it.
        let lifecycle = match &event {
            DeviceEvent::Registered { device, .. }
            | DeviceEvent::RegistrationUpdated { device, .. } => Some((device, false)),
            DeviceEvent::Deregistered { device } | DeviceEvent::Expired { device } => {
                Some((device, true))
            }
            _ => None,
        };
        if let Some((device, _)) = lifecycle {
            self.offline.shift_remove(device);
        }
        if full {
            return match lifecycle {
                Some((device, true)) if self.offline.len() < self.bounds.2 => {
                    self.offline.insert(device.clone(), (event, mark));
                    None
                }
                _ => Some(event),
            };
        }
        self.notifications += usize::from(note);
        self.events.push(event);
        self.marks.push(mark);
        None
    }

    /// Holds `sent`, a [`DeviceEvent::Sent`] the job engine waits for, behind those held
    /// and outside the bound on other events (see [`MAX_HELD_EVENTS`]); gives it back when
    /// it went through [`MAX_TRIES`] failed commits (the caller hands it to the engine).
    #[must_use]
    pub(crate) fn hold_awaited_sent(
        &mut self,
        sent: DeviceEvent,
        mark: HeldMark,
    ) -> Option<DeviceEvent> {
        debug_assert!(matches!(sent, DeviceEvent::Sent { .. }));
        if mark.tries >= MAX_TRIES {
            return Some(sent);
        }
        self.sents += 1;
        self.events.push(sent);
        self.marks.push(mark);
        None
    }

    /// Moves every held event, oldest first, in front of `batch` (the newer events,
    /// never tried, which arrived at `now`), and returns the mark of each event of the
    /// batch.
    pub(crate) fn take_before(
        &mut self,
        batch: &mut Vec<DeviceEvent>,
        now: Timestamp,
    ) -> Vec<HeldMark> {
        let mut marks = std::mem::take(&mut self.marks);
        for (_, (event, mark)) in self.offline.drain(..) {
            self.events.push(event);
            marks.push(mark);
        }
        marks.resize(
            self.events.len() + batch.len(),
            HeldMark {
                tries: 0,
                arrived: now,
            },
        );
        if !self.events.is_empty() {
            self.events.append(batch);
            std::mem::swap(&mut self.events, batch);
        }
        self.notifications = 0;
        self.sents = 0;
        marks
    }

    /// Takes every held event (the hub stops).
    pub(crate) fn take_all(&mut self) -> Vec<DeviceEvent> {
        self.marks.clear();
        self.notifications = 0;
        self.sents = 0;
        let mut events = std::mem::take(&mut self.events);
        events.extend(self.offline.drain(..).map(|(_, (event, _))| event));
        events
    }
}

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

    fn note(v: i64) -> DeviceEvent {
        use crate::{Content, Lwm2mPath, ResourceValue};
        let path = Lwm2mPath::resource(3, 0, 9);
        DeviceEvent::Notification {
            device: crate::DeviceId::new("d").unwrap(),
            registration_id: "r1".into(),
            path,
            content: Content::single(path, ResourceValue::Integer(v)),
        }
    }

    fn gone_of(device: &str) -> DeviceEvent {
        DeviceEvent::Deregistered {
            device: crate::DeviceId::new(device).unwrap(),
        }
    }

    fn gone() -> DeviceEvent {
        gone_of("d")
    }

    /// `device` updates its registration.
    fn updated_of(device: &str) -> DeviceEvent {
        DeviceEvent::RegistrationUpdated {
            device: crate::DeviceId::new(device).unwrap(),
            registration: crate::transport::RegistrationInfo {
                endpoint: device.into(),
                registration_id: "r".into(),
                lifetime: 60,
                lwm2m_version: "1.0".into(),
                binding: "U".into(),
                queue_mode: false,
                objects: Vec::new(),
                address: None,
                psk_identity: None,
            },
        }
    }

    fn fresh() -> HeldMark {
        HeldMark {
            tries: 0,
            arrived: Timestamp::from_millis(1),
        }
    }

    /// Tries are counted per event: one that joins the held events late is not dropped
    /// with the oldest. Each keeps the time it arrived.
    #[test]
    fn each_event_goes_through_its_own_tries_before_it_is_dropped() {
        let mut held = HeldEvents::default();
        let mut dropped = Vec::new();
        // `old` fails seven commits alone; `late` joins before the eighth.
        assert!(held.hold(gone_of("old"), fresh()).is_none());
        for round in 0..MAX_TRIES {
            let mut batch = if round == MAX_TRIES - 1 {
                vec![gone_of("late")]
            } else {
                Vec::new()
            };
            let marks = held.take_before(&mut batch, Timestamp::from_millis(2 + u64::from(round)));
            assert_eq!(marks.len(), batch.len());
            for (event, mark) in batch.into_iter().zip(marks) {
                let failed = HeldMark {
                    tries: mark.tries + 1,
                    ..mark
                };
                if let Some(e) = held.hold(event, failed) {
                    dropped.push(e);
                }
            }
        }
        assert_eq!(dropped.len(), 1);
        assert!(matches!(&dropped[0], DeviceEvent::Deregistered { device }
            if device.as_str() == "old"));
        let mut batch = vec![note(0)];
        let marks = held.take_before(&mut batch, Timestamp::from_millis(100));
        assert!(matches!(&batch[0], DeviceEvent::Deregistered { device }
            if device.as_str() == "late"));
        let arrived = |ms| Timestamp::from_millis(ms);
        assert_eq!(
            marks,
            [
                HeldMark {
                    tries: 1,
                    arrived: arrived(1 + u64::from(MAX_TRIES)),
                },
                HeldMark {
                    tries: 0,
                    arrived: arrived(100),
                },
            ]
        );
    }

    /// Notifications and the other events have bounds of their own: a fleet's chatter
    /// never crowds out a de-registration.
    #[test]
    fn notifications_at_their_bound_leave_room_for_other_events() {
        let mut held = HeldEvents::default();
        for v in 0..MAX_HELD_NOTIFICATIONS as i64 {
            assert!(held.hold(note(v), fresh()).is_none());
        }
        assert!(held.hold(note(-1), fresh()).is_some());
        assert!(held.hold(gone(), fresh()).is_none());
        for _ in 1..MAX_HELD_EVENTS {
            assert!(held.hold(gone(), fresh()).is_none());
        }
        // Past the bound, a de-registration is kept (the newest per device), an answer
        // is dropped.
        let answer = DeviceEvent::TimedOut {
            device: crate::DeviceId::new("d").unwrap(),
            op: crate::transport::OpId(1),
        };
        assert!(held.hold(answer, fresh()).is_some());
        assert!(held.hold(gone(), fresh()).is_none());
        assert_eq!(held.len(), MAX_HELD_NOTIFICATIONS + MAX_HELD_EVENTS + 1);
        let mut batch = vec![note(7)];
        let marks = held.take_before(&mut batch, Timestamp::from_millis(2));
        let all = MAX_HELD_NOTIFICATIONS + MAX_HELD_EVENTS + 2;
        assert_eq!((batch.len(), marks.len(), held.len()), (all, all, 0));
        assert!(marks.iter().all(|m| m.tries == 0));
        assert_eq!(marks[all - 1].arrived, Timestamp::from_millis(2));
        assert!(matches!(
            batch.last(),
            Some(DeviceEvent::Notification { .. })
        ));
        // Taken, the bounds start again.
        assert!(held.hold(note(0), fresh()).is_none());
        assert_eq!(held.take_all().len(), 1);
    }

    /// A `Sent` the job engine waits for is held past [`MAX_HELD_EVENTS`], in its place,
    /// and takes no room from the other events; it is given back (for the engine) only
    /// after [`MAX_TRIES`] failed commits.
    #[test]
    fn an_awaited_sent_is_held_past_the_events_bound_until_its_tries_are_up() {
        let sent = |op| DeviceEvent::Sent {
            device: crate::DeviceId::new("d").unwrap(),
            op: crate::transport::OpId(op),
        };
        let mut held = HeldEvents::default();
        // Held first, it leaves the whole bound to the other events.
        assert!(held.hold_awaited_sent(sent(1), fresh()).is_none());
        for _ in 0..MAX_HELD_EVENTS {
            assert!(held.hold(updated_of("filler"), fresh()).is_none());
        }
        assert!(held.hold(updated_of("filler"), fresh()).is_some());
        // Past the bound, it is held in its place.
        assert!(held.hold_awaited_sent(sent(2), fresh()).is_none());
        assert!(held.hold(note(1), fresh()).is_none());
        let mut batch = Vec::new();
        let marks = held.take_before(&mut batch, Timestamp::from_millis(2));
        assert_eq!(batch.len(), MAX_HELD_EVENTS + 3);
        assert!(matches!(batch[0], DeviceEvent::Sent { op, .. } if op.0 == 1));
        assert!(matches!(batch[MAX_HELD_EVENTS + 1], DeviceEvent::Sent { op, .. } if op.0 == 2));
        assert!(matches!(
            batch[MAX_HELD_EVENTS + 2],
            DeviceEvent::Notification { .. }
        ));
        // Given back only once its tries are up.
        let spent = HeldMark {
            tries: MAX_TRIES,
            ..marks[0]
        };
        assert!(held.hold_awaited_sent(sent(1), spent).is_some());
    }

    /// Past [`MAX_HELD_EVENTS`], the newest de-registration or expiry of each device is
    /// kept and applied after the held events; a newer registration of the device
    /// forgets it; past [`MAX_HELD_OFFLINE`] devices, it is dropped.
    #[test]
    fn offline_events_past_the_bound_are_kept_per_device_until_superseded() {
        let reg = updated_of;
        let mut held = HeldEvents::default();
        for _ in 0..MAX_HELD_EVENTS {
            assert!(held.hold(gone_of("filler"), fresh()).is_none());
        }
        assert!(held.hold(gone_of("a"), fresh()).is_none());
        assert!(held.hold(gone_of("b"), fresh()).is_none());
        assert!(
            held.hold(gone_of("a"), fresh()).is_none(),
            "the newest, once"
        );
        // `b` registers again (dropped at the bound, made good at its next Update):
        // its kept de-registration is forgotten.
        assert!(held.hold(reg("b"), fresh()).is_some());
        assert_eq!(held.len(), MAX_HELD_EVENTS + 1);
        let mut batch = vec![note(1)];
        let _ = held.take_before(&mut batch, Timestamp::from_millis(2));
        assert_eq!(batch.len(), MAX_HELD_EVENTS + 2);
        assert!(
            matches!(&batch[MAX_HELD_EVENTS], DeviceEvent::Deregistered { device }
            if device.as_str() == "a")
        );
        // A kept event goes through its tries like any other.
        let spent = HeldMark {
            tries: MAX_TRIES,
            ..fresh()
        };
        assert!(held.hold(gone_of("a"), spent).is_some());
        // The bound on devices.
        for _ in 0..MAX_HELD_EVENTS {
            assert!(held.hold(gone_of("filler"), fresh()).is_none());
        }
        for i in 0..MAX_HELD_OFFLINE {
            assert!(held.hold(gone_of(&format!("d{i}")), fresh()).is_none());
        }
        assert!(held.hold(gone_of("one-too-many"), fresh()).is_some());
        assert!(
            held.hold(gone_of("d7"), fresh()).is_none(),
            "a device kept already"
        );
        assert_eq!(held.take_all().len(), MAX_HELD_EVENTS + MAX_HELD_OFFLINE);
    }

    /// Random arrivals, failed commits and commits against a naive model, with small
    /// bounds: each device's lifecycle events are applied in the order they arrived,
    /// none twice; every event neither dropped nor superseded is applied; with fewer
    /// failed commits than `MAX_TRIES` (and room for every device past the bound), the
    /// last de-registration of a device is never lost; a `Sent` the job engine waits for
    /// is never dropped at a bound (only after `MAX_TRIES`, when the hub hands it to the
    /// engine) and is applied in its place among the other events.
    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            Arrive(u8, u8),
            Fail,
            Commit,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                5 => (0u8..2, 0u8..5).prop_map(|(d, k)| Op::Arrive(d, k)),
                3 => Just(Op::Fail),
                1 => Just(Op::Commit),
            ]
        }

        fn event(d: u8, kind: u8) -> DeviceEvent {
            let device = crate::DeviceId::new(&format!("d{d}")).unwrap();
            match kind {
                0 => DeviceEvent::Deregistered { device },
                1 => updated_of(device.as_str()),
                2 => DeviceEvent::TimedOut {
                    device,
                    op: crate::transport::OpId(1),
                },
                // A `Sent` the job engine waits for.
                4 => DeviceEvent::Sent {
                    device,
                    op: crate::transport::OpId(2),
                },
                _ => {
                    let path = crate::Lwm2mPath::resource(3, 0, 9);
                    DeviceEvent::Notification {
                        device,
                        registration_id: "r1".into(),
                        path,
                        content: crate::Content::single(path, crate::ResourceValue::Integer(0)),
                    }
                }
            }
        }

        /// Holds `e` as the hub does: a `Sent` (one the engine waits for, here) outside
        /// the bound on events.
        fn hold(held: &mut HeldEvents, e: DeviceEvent, m: HeldMark) -> Option<DeviceEvent> {
            if matches!(e, DeviceEvent::Sent { .. }) {
                held.hold_awaited_sent(e, m)
            } else {
                held.hold(e, m)
            }
        }

        fn is_sent(e: &DeviceEvent) -> bool {
            matches!(e, DeviceEvent::Sent { .. })
        }

        /// `Some(true)`: online, `Some(false)`: offline, `None`: not lifecycle.
        fn lifecycle(e: &DeviceEvent) -> Option<(String, bool)> {
            match e {
                DeviceEvent::RegistrationUpdated { device, .. } => {
                    Some((device.as_str().to_owned(), true))
                }
                DeviceEvent::Deregistered { device } => Some((device.as_str().to_owned(), false)),
                _ => None,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]
            #[test]
            fn held_events_keep_each_devices_lifecycle_in_order(
                ops in proptest::collection::vec(op(), 1..80)
            ) {
                let mut held = HeldEvents {
                    bounds: (2, 2, 3),
                    ..HeldEvents::default()
                };
                let mut arrived: Vec<DeviceEvent> = Vec::new();
                let mut dropped = std::collections::BTreeSet::new();
                let mut applied = std::collections::BTreeSet::new();
                let mut state: std::collections::BTreeMap<String, (u64, bool)> =
                    Default::default();
                let mut failures = 0;
                let ops = ops.into_iter().chain([Op::Commit]);
                for op in ops {
                    match op {
                        Op::Arrive(d, k) => {
                            let idx = arrived.len() as u64;
                            arrived.push(event(d, k));
                            let mark = HeldMark { tries: 0, arrived: Timestamp::from_millis(idx) };
                            if hold(&mut held, event(d, k), mark).is_some() {
                                prop_assert!(k != 4, "a Sent dropped at a bound");
                                dropped.insert(idx);
                            }
                        }
                        Op::Fail => {
                            failures += 1;
                            let mut batch = Vec::new();
                            let marks = held.take_before(&mut batch, Timestamp::from_millis(0));
                            for (e, m) in batch.into_iter().zip(marks) {
                                let m = HeldMark { tries: m.tries + 1, ..m };
                                let sent = is_sent(&e);
                                if hold(&mut held, e, m).is_some() {
                                    prop_assert!(
                                        !sent || m.tries >= MAX_TRIES,
                                        "a Sent dropped before its tries were up"
                                    );
                                    dropped.insert(m.arrived.as_millis());
                                }
                            }
                        }
                        Op::Commit => {
                            let mut batch = Vec::new();
                            let marks = held.take_before(&mut batch, Timestamp::from_millis(0));
                            // A `Sent` is applied in its place: after every event that
                            // arrived before it, except a de-registration kept past the
                            // bound (applied after the events held), and before every
                            // event that arrived after it.
                            let order: Vec<u64> = marks.iter().map(|m| m.arrived.as_millis()).collect();
                            for (j, e) in batch.iter().enumerate() {
                                if !is_sent(e) {
                                    continue;
                                }
                                for (i, other) in batch.iter().enumerate() {
                                    let before = order[i] < order[j];
                                    if i < j {
                                        prop_assert!(before, "event {} applied before the Sent {}", order[i], order[j]);
                                    } else if i > j && before {
                                        prop_assert!(
                                            matches!(other, DeviceEvent::Deregistered { .. }),
                                            "event {} applied after the later Sent {}", order[i], order[j]
                                        );
                                    }
                                }
                            }
                            for (e, m) in batch.iter().zip(marks) {
                                let idx = m.arrived.as_millis();
                                prop_assert!(applied.insert(idx), "event {idx} applied twice");
                                if let Some((d, online)) = lifecycle(e) {
                                    if let Some(&(last, _)) = state.get(&d) {
                                        prop_assert!(idx > last, "{d}: {idx} applied after {last}");
                                    }
                                    state.insert(d, (idx, online));
                                }
                            }
                            prop_assert_eq!(held.len(), 0);
                        }
                    }
                }
                for (i, e) in arrived.iter().enumerate() {
                    let idx = i as u64;
                    prop_assert!(!(applied.contains(&idx) && dropped.contains(&idx)));
                    if applied.contains(&idx) || dropped.contains(&idx) {
                        continue;
                    }
                    // Neither: only a de-registration kept past the bound that a newer
                    // lifecycle event of its device superseded.
                    let (d, _) = lifecycle(e).expect("only lifecycle events are coalesced");
                    prop_assert!(
                        arrived[i + 1..].iter().any(|n| lifecycle(n).is_some_and(|(m, _)| m == d)),
                        "event {idx} lost without a newer lifecycle event of {d}"
                    );
                }
                for d in 0..2u8 {
                    let name = format!("d{d}");
                    let last = arrived.iter().enumerate().rev()
                        .find_map(|(i, e)| lifecycle(e).filter(|(n, _)| *n == name).map(|(_, on)| (i as u64, on)));
                    if let Some((i, false)) = last
                        && failures < MAX_TRIES
                    {
                        prop_assert!(!dropped.contains(&i), "{name}'s last de-registration dropped");
                        prop_assert_eq!(state.get(&name).map(|s| s.1), Some(false));
                    }
                }
            }
        }
    }
}
