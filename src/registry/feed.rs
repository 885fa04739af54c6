//! The change feed: an ordered, bounded, resumable log of what changed.

use crate::DeviceId;
use crate::twin::{ConnectionState, DeviceStatus};
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
    /// The device reported a property value (the value may equal the old one; the
    /// `lastUpdatedTime` changed).
    DeviceProperty {
        /// The canonical property name.
        name: Arc<str>,
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
    /// Strictly increasing across the registry, starting at 1.
    pub seq: u64,
    /// The device.
    pub device: DeviceId,
    /// What changed.
    pub kind: ChangeKind,
}

/// A consumer asked for changes that the bounded feed has already dropped.
///
/// The consumer missed changes `after + 1 ..= dropped_through`; it must resynchronise
/// (re-read the twins it cares about) and resume from [`FeedGap::resume_after`].
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
        write!(
            f,
            "change feed gap: changes {}..={} were dropped before they were read",
            self.after + 1,
            self.dropped_through
        )
    }
}

impl std::error::Error for FeedGap {}

/// The bounded ring of recent changes.
#[derive(Debug)]
pub(crate) struct ChangeFeed {
    ring: VecDeque<Change>,
    capacity: usize,
    dropped_through: u64,
}

impl ChangeFeed {
    pub(crate) fn new(capacity: usize) -> Self {
        ChangeFeed {
            ring: VecDeque::with_capacity(capacity.min(1 << 20)),
            capacity,
            dropped_through: 0,
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
        // Sequence numbers in the ring are consecutive, so the start is an offset.
        let start = match self.ring.front() {
            Some(first) => (after + 1).saturating_sub(first.seq) as usize,
            None => 0,
        };
        Ok(self.ring.range(start.min(self.ring.len())..))
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Checks the ring: at most `capacity` changes, consecutive sequence numbers ending at
    /// `last_seq`, starting right after the dropped ones.
    pub(crate) fn check(&self, last_seq: u64) -> Result<(), String> {
        if self.ring.len() > self.capacity {
            return Err("change feed holds more than its capacity".into());
        }
        let mut expected = self.dropped_through + 1;
        for c in &self.ring {
            if c.seq != expected {
                return Err(format!(
                    "change feed has seq {} where {expected} belongs",
                    c.seq
                ));
            }
            expected += 1;
        }
        if expected - 1 != last_seq {
            return Err(format!(
                "change feed ends at {} but the last seq is {last_seq}",
                expected - 1
            ));
        }
        Ok(())
    }
}
