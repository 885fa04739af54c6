//! The change feed: an ordered, bounded, resumable log of what changed.

use crate::twin::{ConnectionState, DeviceStatus, Scalar};
use crate::{DeviceId, Timestamp};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// What changed on a device.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ChangeKind {
    /// The device was created (also by a bulk load).
    Created,
    /// The device was removed.
    Removed,
    /// The device reported a property value. The value may equal the previous one (a
    /// device re-reports every resource of an observed instance): the property's
    /// `lastUpdatedTime` still moved; [`ChangeKind::is_rereport`] tells them apart.
    DeviceProperty {
        /// The canonical property name.
        name: Arc<str>,
        /// The value reported.
        value: Scalar,
        /// The value before, `None` if the twin did not have the property.
        previous: Option<Scalar>,
    },
    /// A device property was removed.
    DevicePropertyRemoved {
        /// The canonical property name.
        name: Arc<str>,
    },
    /// Service properties changed.
    ServiceProperties,
    /// Tags changed.
    Tags,
    /// The connection state was set.
    ConnectionState(ConnectionState),
    /// The status (or its reason) was set.
    Status(DeviceStatus),
    /// `isManaged` was set.
    Managed(bool),
    /// The registration was set or cleared.
    Registration,
    /// `lastActivityTime` was set.
    LastActivity,
    /// The configuration string was set or cleared.
    Configuration,
    /// The authentication material was replaced.
    Authentication,
}

/// One change: its sequence number, the device, and what changed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Change {
    /// Strictly increasing across the registry: from 1 in a new registry, or from the
    /// number after the one it continues after ([`Registry::continue_after`]; a hub
    /// without a store starts there from the clock, see [`seq_start_at`]).
    ///
    /// [`Registry::continue_after`]: super::Registry::continue_after
    pub seq: u64,
    /// The device.
    pub device: DeviceId,
    /// What changed.
    pub kind: ChangeKind,
}

impl ChangeKind {
    /// Whether this is a device property reported again with the value it already had
    /// (only its `lastUpdatedTime` moved).
    pub fn is_rereport(&self) -> bool {
        matches!(self, ChangeKind::DeviceProperty { value, previous: Some(p), .. } if p == value)
    }

    /// The kind's name in JSON: `created`, `removed`, `deviceProperty`,
    /// `devicePropertyRemoved`, `serviceProperties`, `tags`, `connectionState`, `status`,
    /// `managed`, `registration`, `lastActivity`, `configuration`, `authentication`.
    pub fn name(&self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Removed => "removed",
            ChangeKind::DeviceProperty { .. } => "deviceProperty",
            ChangeKind::DevicePropertyRemoved { .. } => "devicePropertyRemoved",
            ChangeKind::ServiceProperties => "serviceProperties",
            ChangeKind::Tags => "tags",
            ChangeKind::ConnectionState(_) => "connectionState",
            ChangeKind::Status(_) => "status",
            ChangeKind::Managed(_) => "managed",
            ChangeKind::Registration => "registration",
            ChangeKind::LastActivity => "lastActivity",
            ChangeKind::Configuration => "configuration",
            ChangeKind::Authentication => "authentication",
        }
    }
}

/// JSON: `{"seq": 7, "device": "pump-1", "kind": "deviceProperty", "name": "BatteryLevel"}`;
/// `connectionState`, `status` and `managed` carry the new `value`
/// (`"Connected"`, `"disabled"`, `true`).
///
/// ```
/// use twinhub::registry::Registry;
/// use twinhub::twin::Twin;
/// use twinhub::DeviceId;
/// let mut reg = Registry::new();
/// reg.create(Twin::new(DeviceId::new("pump-1")?))?;
/// let change = reg.changes_after(0).unwrap().next().unwrap();
/// assert_eq!(
///     serde_json::to_string(change)?,
///     r#"{"seq":1,"device":"pump-1","kind":"created"}"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl serde::Serialize for Change {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("seq", &self.seq)?;
        m.serialize_entry("device", &self.device)?;
        m.serialize_entry("kind", self.kind.name())?;
        match &self.kind {
            ChangeKind::DeviceProperty {
                name,
                value,
                previous,
            } => {
                m.serialize_entry("name", &**name)?;
                m.serialize_entry("value", value)?;
                m.serialize_entry("previous", previous)?;
            }
            ChangeKind::DevicePropertyRemoved { name } => m.serialize_entry("name", &**name)?,
            ChangeKind::ConnectionState(v) => m.serialize_entry("value", v)?,
            ChangeKind::Status(v) => m.serialize_entry("value", v)?,
            ChangeKind::Managed(v) => m.serialize_entry("value", v)?,
            _ => {}
        }
        m.end()
    }
}

/// A consumer asked for changes that the bounded feed has already dropped, or for
/// changes after a sequence number this feed never reached.
///
/// The consumer missed changes `after + 1 ..= dropped_through`; it must resynchronise
/// (re-read the twins it cares about) and resume from [`FeedGap::resume_after`].
///
/// A number beyond the newest change (`after > dropped_through`) comes from another
/// history: a registry used alone (no hub, no store) that a program built afresh, say,
/// and counts from 1 again.
/// Answering "nothing yet" would silently skip every change until the count caught up
/// with `after`, so it is a gap too, with `dropped_through` the newest change: the
/// consumer resynchronises the same way. So is a number the registry skipped (a store's
/// reserved and unused numbers, or those below where
/// [`Registry::continue_after`](super::Registry::continue_after) moved it on, as a hub
/// without a store does when it starts), with `dropped_through` the newest number before
/// them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FeedGap {
    /// The sequence the consumer asked to read after.
    pub after: u64,
    /// The newest sequence number that was dropped.
    pub dropped_through: u64,
}

impl FeedGap {
    /// Where to resume reading after resynchronising.
    pub fn resume_after(&self) -> u64 {
        self.dropped_through
    }
}

impl fmt::Display for FeedGap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.after > self.dropped_through {
            // Past the newest number, or skipped (then more numbers follow): either way
            // `dropped_through` is the newest number before `after`.
            return write!(
                f,
                "change feed gap: sequence {} was never handed out by this history (the \
                 newest number before it is {}); it comes from another history",
                self.after, self.dropped_through
            );
        }
        write!(
            f,
            "change feed gap: changes {}..={} were dropped before they were read",
            self.after + 1,
            self.dropped_through
        )
    }
}

impl std::error::Error for FeedGap {}

/// The highest number a registry continues after ([`Registry::continue_after`],
/// [`seq_start_at`]): 2^52, so that the numbers of a history started there stay below
/// 2^53, which a JSON number read as a double (JavaScript's `Number`, the console's page)
/// carries exactly, for 2^52 more changes (142 years at a million changes a second).
///
/// [`Registry::continue_after`]: super::Registry::continue_after
pub const MAX_SEQ_START: u64 = 1 << 52;

/// How many sequence numbers [`seq_start_at`] gives each millisecond since the Unix
/// epoch: 1,000.
pub const SEQ_PER_MILLI: u64 = 1_000;

/// Where a history that starts at `now` continues after (what a hub without a store
/// passes to [`Registry::continue_after`]): 1,000 numbers
/// per millisecond since the Unix epoch ([`SEQ_PER_MILLI`]), at most [`MAX_SEQ_START`]
/// (reached in 2112: every later start is `MAX_SEQ_START`, and numbers may repeat
/// across restarts again).
///
/// A run started at `t2` hands out no number of a run started earlier at `t1` if the
/// earlier one handed out fewer than 1,000 numbers per millisecond between `t1` and
/// `t2` (changes, and the etags they make: a hub's sustained rate is far below that),
/// and the clock did not go back between them.
///
/// ```
/// use twinhub::registry::{seq_start_at, MAX_SEQ_START};
/// use twinhub::Timestamp;
/// // 2026-01-01T00:00:00Z.
/// let t = Timestamp::from_millis(1_767_225_600_000);
/// assert_eq!(seq_start_at(t), 1_767_225_600_000_000);
/// assert!(seq_start_at(t) < 1 << 53);
/// assert_eq!(seq_start_at(Timestamp::from_millis(t.as_millis() + 1)), seq_start_at(t) + 1_000);
/// assert_eq!(seq_start_at(Timestamp::MAX), MAX_SEQ_START);
/// ```
///
/// [`Registry::continue_after`]: super::Registry::continue_after
pub fn seq_start_at(now: Timestamp) -> u64 {
    now.as_millis()
        .saturating_mul(SEQ_PER_MILLI)
        .min(MAX_SEQ_START)
}

/// Why [`Registry::continue_after`] refused to move a history on; nothing changed.
///
/// [`Registry::continue_after`]: super::Registry::continue_after
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SeqStartError {
    /// The number asked for is above [`MAX_SEQ_START`].
    TooHigh {
        /// The number asked for.
        requested: u64,
    },
    /// The registry is a store's (rebuilt or adopted by one): its numbers are the store's
    /// to hand out, and it already continues past every number the store handed out.
    StoreBacked,
}

impl fmt::Display for SeqStartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeqStartError::TooHigh { requested } => write!(
                f,
                "cannot continue the change feed after {requested}: the most is \
                 {MAX_SEQ_START} (2^52), so that its numbers stay below 2^53"
            ),
            SeqStartError::StoreBacked => f.write_str(
                "cannot continue a store's registry after another number: the store \
                 numbers it past every restart",
            ),
        }
    }
}

impl std::error::Error for SeqStartError {}

/// The bounded ring of recent changes.
#[derive(Debug)]
pub(crate) struct ChangeFeed {
    ring: VecDeque<Change>,
    capacity: usize,
    dropped_through: u64,
    /// Whether the ring was restored after a restart, or its registry continued after a
    /// higher number (then it may jump over numbers that were reserved, or skipped, but
    /// never used).
    restored: bool,
}

impl ChangeFeed {
    pub(crate) fn new(capacity: usize) -> Self {
        ChangeFeed {
            ring: VecDeque::with_capacity(capacity.min(1 << 20)),
            capacity,
            dropped_through: 0,
            restored: false,
        }
    }

    pub(crate) fn push(&mut self, change: Change) {
        if self.capacity == 0 {
            self.dropped_through = change.seq;
            return;
        }
        if self.ring.len() == self.capacity
            && let Some(old) = self.ring.pop_front()
        {
            self.dropped_through = old.seq;
        }
        self.ring.push_back(change);
    }

    pub(crate) fn after(&self, after: u64) -> Result<impl Iterator<Item = &Change>, FeedGap> {
        if after < self.dropped_through {
            return Err(FeedGap {
                after,
                dropped_through: self.dropped_through,
            });
        }
        // Sequence numbers in the ring increase; they are consecutive except across a
        // restart (numbers reserved before a crash are never used), so the start is an
        // offset when the ring has no jump and a binary search when it has one.
        let start = match (self.ring.front(), self.ring.back()) {
            (Some(first), Some(last)) if last.seq - first.seq + 1 == self.ring.len() as u64 => {
                (after + 1).saturating_sub(first.seq) as usize
            }
            _ => self.ring.partition_point(|c| c.seq <= after),
        };
        Ok(self.ring.range(start.min(self.ring.len())..))
    }

    /// Replaces the ring after a restart: `changes` (increasing, at most `capacity` of
    /// the newest are kept) and everything up to `dropped_through` counts as dropped.
    pub(crate) fn restore(&mut self, dropped_through: u64, changes: Vec<Change>) {
        self.ring.clear();
        self.dropped_through = dropped_through;
        self.restored = true;
        for c in changes {
            self.push(c);
        }
    }

    /// From now on the numbers may jump (a registry continued after a higher number).
    pub(crate) fn allow_jumps(&mut self) {
        self.restored = true;
    }

    pub(crate) fn dropped_through(&self) -> u64 {
        self.dropped_through
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Checks the ring: at most `capacity` changes, strictly increasing sequence numbers
    /// after the dropped ones and at most `last_seq`; consecutive unless the registry was
    /// restored (numbers reserved before a restart are skipped).
    pub(crate) fn check(&self, last_seq: u64) -> Result<(), String> {
        if self.ring.len() > self.capacity {
            return Err("change feed holds more than its capacity".into());
        }
        let mut prev = self.dropped_through;
        for c in &self.ring {
            if c.seq <= prev || (!self.restored && c.seq != prev + 1) {
                return Err(format!("change feed has seq {} after {prev}", c.seq));
            }
            prev = c.seq;
        }
        if prev > last_seq || (!self.restored && prev != last_seq) {
            return Err(format!(
                "change feed ends at {prev} but the last seq is {last_seq}"
            ));
        }
        Ok(())
    }
}
