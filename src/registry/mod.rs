//! The registry: twins in dense `u32` slots, roaring-bitmap indexes and a change feed.
//!
//! A [`Registry`] holds every twin of a fleet in memory. Each device gets a dense
//! [`Slot`] (reused after the device is removed), and every index is a
//! [`RoaringBitmap`] of slots:
//!
//! - **tags**: tag -> slots;
//! - **properties**: for every (kind, name) — interned once to a [`PropertyId`] — each
//!   distinct [`Scalar`] value stored once with its slots, found by hash (equality) and
//!   kept in value order as a few sorted runs of 16-byte entries (ranges, ordered
//!   iteration), and an "exists" bitmap. Nested service property members are indexed as
//!   `outer.inner` (the object node itself only in "exists");
//! - **fields**: status, connection state, `isManaged`;
//! - the **universe** of live slots, and device id -> slot (hashed and ordered).
//!
//! **Consistency.** Every write validates its input first, then updates the twin and
//! every index, then returns: a reader that starts after a write returns sees all of it
//! (read-your-writes). A failed write changes nothing.
//!
//! **Concurrency.** `Registry` is a plain single-writer structure: writes take
//! `&mut self`, reads `&self`. To share it across threads wrap it in a
//! [`SharedRegistry`] (an `Arc<RwLock<Registry>>`): many readers at once, one writer at a
//! time, and a reader never sees a half-applied write because a write holds the lock for
//! its whole duration.
//!
//! **Bulk loads.** [`Registry::load`] (owned twins) and [`Registry::bulk_load`] (owned
//! twins or borrowed rows, [`NewDevice`]) admit devices on the calling thread and index
//! them, a batch at a time, on up to three helper threads meanwhile; every helper has
//! ended when the load ends. See [`BulkLoad`].
//!
//! **Storage.** A twin is stored as its fixed fields plus three small sorted vectors
//! (device properties as `(property id, value id, lastUpdatedTime)`, service leaves as
//! `(property id, value id)`, tag ids). Each distinct value is stored once, in its
//! property's index; property names and tags are interned. [`Registry::get`] returns a
//! borrowed [`TwinRef`] view that serialises to the preview's JSON and converts to an
//! owned [`Twin`].
//!
//! **Change feed.** Every change gets a strictly increasing sequence number (which also
//! becomes the etags it touches) and goes into a bounded ring; see
//! [`Registry::changes_after`].
//!
//! **Numbers across restarts.** A new registry numbers from 1, so the same program run
//! twice hands out the same numbers: deterministic, for tests and tools that use a
//! registry alone. A service that outlives its numbers (a consumer resuming the feed
//! after a number, an `If-Match` with an etag) must not meet them again in another
//! history. A registry rebuilt by a store continues after every number the store ever
//! handed out. Without a store, [`Registry::continue_after`] moves a registry's history
//! on to start after a given number: the numbers skipped are never handed out (resuming
//! after one is a [`FeedGap`]) and every twin takes that number as its generation id and
//! etags (an `If-Match` with an etag from before fails). A hub without a store does this
//! once, when it starts, with a number from the clock, [`seq_start_at`]: 1,000 numbers
//! per millisecond since the Unix epoch (about 1.8 * 10^15 in 2026, below 2^53, which
//! JSON readers that use doubles carry exactly). So a restarted hub's numbers lie above
//! those of its earlier run, unless that run handed out more than 1,000 numbers a
//! millisecond on average or the clock went back: a consumer's number from the earlier run
//! is then below the new run's first, a gap, and an etag from it matches no twin.
//!
//! **Index access** (what the query engine reads; every answer is borrowed or cheap):
//! [`universe`](Registry::universe), [`slot_of`](Registry::slot_of),
//! [`twin_at`](Registry::twin_at), [`tag_bitmap`](Registry::tag_bitmap),
//! [`property_id`](Registry::property_id), [`value_slots`](Registry::value_slots)
//! (a [`SlotSet`]: one slot or a bitmap), [`values_in_range`](Registry::values_in_range)
//! (ordered, reversible), [`range_bitmap`](Registry::range_bitmap),
//! [`exists_bitmap`](Registry::exists_bitmap), [`value_of`](Registry::value_of),
//! [`status_bitmap`](Registry::status_bitmap),
//! [`connection_bitmap`](Registry::connection_bitmap),
//! [`managed_bitmap`](Registry::managed_bitmap) and [`device_ids`](Registry::device_ids)
//! (id order, resumable for paging).
//!
//! ```
//! use twinhub::registry::Registry;
//! use twinhub::twin::{PropertyKind, Scalar, Twin};
//! use twinhub::{DeviceId, Timestamp};
//!
//! let mut reg = Registry::new();
//! let now = Timestamp::from_millis(1_461_931_200_000);
//! reg.create(Twin::new(DeviceId::new("thermo-1").unwrap()).with_tag("lab")).unwrap();
//! reg.report_device_property("thermo-1", "/3/0/3", Scalar::from("1.0"), now).unwrap();
//!
//! let twin = reg.get("thermo-1").unwrap();
//! assert_eq!(twin.device_property("FirmwareVersion").unwrap().0, &Scalar::from("1.0"));
//! let fw = reg.property_id(PropertyKind::Device, "FirmwareVersion").unwrap();
//! let slots = reg.value_slots(fw, &Scalar::from("1.0")).unwrap();
//! assert!(slots.contains(twin.slot().0));
//! assert_eq!(reg.tag_bitmap("lab").unwrap().len(), 1);
//! reg.validate().unwrap();
//! ```

mod bulk;
mod check;
mod column;
mod feed;
mod hash;
mod id_order;
mod index;
mod lists;
mod load;
pub mod ndjson;
mod restore;
mod shared;
mod sorted;
mod vid_table;
pub(crate) mod view;

pub use bulk::{BulkLoad, NewDevice};
pub(crate) use column::IdBits;
pub use feed::{
    Change, ChangeKind, FeedGap, MAX_SEQ_START, SEQ_PER_MILLI, SeqStartError, seq_start_at,
};
pub use index::SlotSet;
pub use restore::StoreFailure;
pub use shared::SharedRegistry;
pub use view::TwinRef;

use crate::twin::RegistrationInfo;
use crate::twin::{
    Authentication, ConnectionState, DevicePropertyName, DeviceStatus, Etag, MAX_DEVICE_PROPERTIES,
    MAX_FIELD_LEN, MAX_SERVICE_PROPERTIES, MAX_TAGS, PropertyKind, Scalar, ScalarRef,
    ServiceProperties, ServiceValue, Twin, TwinError, validate_property_name, validate_tag,
};
use crate::{DeviceId, Timestamp};
use feed::ChangeFeed;
use hash::{FastMap, FastState};
use id_order::IdOrder;
use index::{OBJECT_NODE, PropertyIndex};
use lists::TwinLists;
use load::{Direct, Place, index_value};
use roaring::RoaringBitmap;
use std::collections::BTreeSet;
use std::fmt;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::Arc;
use vid_table::VidTable;

/// A device's dense position in the registry; every index is a bitmap of slots.
///
/// A slot is reused after its device is removed (at once in a registry of a few thousand
/// devices, after the id order's next merge in a larger one), so hold a [`DeviceId`] (or
/// check the generation id) across removals.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Slot(pub u32);

/// An interned (kind, name) property: the key of a value index.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PropertyId(pub u32);

/// How many changes the feed keeps by default.
pub const DEFAULT_FEED_CAPACITY: usize = 1 << 16;

/// Why a registry operation failed. A failed operation changed nothing.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RegistryError {
    /// A device with this id already exists.
    DeviceExists {
        /// The id.
        id: DeviceId,
    },
    /// No device has this id.
    DeviceNotFound {
        /// The id asked for (truncated to 128 bytes).
        id: String,
    },
    /// The `If-Match` etag given to a service-side write (service properties, tags) is
    /// not the twin's current service etag ([`TwinRef::service_etag`]): another writer
    /// changed the service properties or tags since the caller read them. Nothing was
    /// written. Read the twin again, apply the change to what it holds now, and retry
    /// with its etag (`actual`); or pass no etag to overwrite unconditionally. An etag
    /// from before a hub restart without a store never matches (see the module docs,
    /// Numbers across restarts). `examples/console` answers it with 412.
    PreconditionFailed {
        /// The device.
        id: DeviceId,
        /// The etag the caller expected.
        expected: Etag,
        /// The current etag.
        actual: Etag,
    },
    /// The input breaks a twin rule.
    Invalid {
        /// The device.
        id: String,
        /// What is wrong.
        error: TwinError,
    },
    /// The registry already holds `u32::MAX` (about 4.3 billion) devices, the most its
    /// dense `u32` slots can number; nothing was added. Remove devices (their slots are
    /// reused) before adding more. Memory runs out long before this in practice.
    Full,
    /// The write was applied but could not be made durable, so it was undone (the
    /// registry was rebuilt from what is durable): see [`crate::store`]. Rarely, a failure
    /// in a commit's last step leaves the write on disk anyway; the rebuilt registry then
    /// holds it, so read it back before retrying a create (which would find the device).
    /// Should the rebuild fail too, the write stays in memory until the next commit
    /// rebuilds it away (README, Durability).
    NotDurable {
        /// Why the store failed.
        error: StoreFailure,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::DeviceExists { id } => write!(f, "device {id} already exists"),
            RegistryError::DeviceNotFound { id } => write!(f, "device {id:?} not found"),
            RegistryError::PreconditionFailed {
                id,
                expected,
                actual,
            } => write!(
                f,
                "precondition failed for device {id}: etag is {actual}, not {expected}"
            ),
            RegistryError::Invalid { id, error } => write!(f, "device {id}: {error}"),
            RegistryError::Full => f.write_str("registry is full: every u32 slot is in use"),
            RegistryError::NotDurable { .. } => f.write_str("the write could not be made durable"),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::Invalid { error, .. } => Some(error),
            RegistryError::NotDurable { error } => Some(error.error()),
            _ => None,
        }
    }
}

/// A device property as stored: interned name, interned value, report time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeviceValue {
    pub(crate) pid: u32,
    pub(crate) vid: u32,
    pub(crate) ts: Timestamp,
}

/// A service property leaf (or object node) as stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceLeaf {
    pub(crate) pid: u32,
    pub(crate) vid: u32,
}

/// A new device's fields, apart from its values and tags.
pub(crate) struct NewFields {
    pub(crate) id: DeviceId,
    /// The id's hash, taken once for the existence check and the insert.
    pub(crate) id_hash: u32,
    pub(crate) status: DeviceStatus,
    pub(crate) status_updated: Option<Timestamp>,
    pub(crate) connection: ConnectionState,
    pub(crate) connection_updated: Option<Timestamp>,
    pub(crate) last_activity: Option<Timestamp>,
    pub(crate) managed: bool,
    /// Boxed, and only when not empty: a bulk load moves new fields around per row.
    pub(crate) extra: Option<Box<Extra>>,
}

/// Rarely set fields, boxed to keep the common entry small.
#[derive(Debug, Default, Clone)]
pub(crate) struct Extra {
    pub(crate) status_reason: Option<String>,
    pub(crate) authentication: Authentication,
    pub(crate) registration: Option<RegistrationInfo>,
    pub(crate) configuration: Option<String>,
}

impl Extra {
    /// `extra` boxed, or `None` when it holds nothing.
    pub(crate) fn boxed(extra: Extra) -> Option<Box<Extra>> {
        (!extra.is_empty()).then(|| Box::new(extra))
    }

    fn is_empty(&self) -> bool {
        self.status_reason.is_none()
            && self.authentication.is_empty()
            && self.registration.is_none()
            && self.configuration.is_none()
    }
}

/// An optional timestamp in 8 bytes (`u64::MAX` ms is "none"; a timestamp that large,
/// half a billion years out, is stored as one millisecond less).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OptTime(u64);

impl OptTime {
    pub(crate) fn get(self) -> Option<Timestamp> {
        (self.0 != u64::MAX).then_some(Timestamp::from_millis(self.0))
    }
}

impl From<Option<Timestamp>> for OptTime {
    fn from(t: Option<Timestamp>) -> Self {
        OptTime(t.map_or(u64::MAX, |t| t.as_millis().min(u64::MAX - 1)))
    }
}

/// One twin as stored.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: DeviceId,
    pub(crate) generation: u64,
    pub(crate) etag: u64,
    pub(crate) service_etag: u64,
    pub(crate) status_updated: OptTime,
    pub(crate) connection_updated: OptTime,
    pub(crate) last_activity: OptTime,
    pub(crate) status: DeviceStatus,
    pub(crate) connection: ConnectionState,
    pub(crate) managed: bool,
    /// Device values, service leaves and tag ids, each sorted by id.
    pub(crate) lists: TwinLists,
    pub(crate) extra: Option<Box<Extra>>,
}

#[derive(Debug)]
pub(crate) struct TagIndex {
    pub(crate) name: Arc<str>,
    pub(crate) slots: RoaringBitmap,
}

/// Twins in dense slots with bitmap indexes and a change feed. See the [module
/// docs](self) for the model.
#[derive(Debug)]
pub struct Registry {
    pub(crate) slots: Vec<Option<Entry>>,
    pub(crate) free_slots: Vec<u32>,
    /// Device id -> slot: the id's hash and the slot, compared against the entry's id.
    pub(crate) by_id_hash: VidTable,
    id_hasher: FastState,
    pub(crate) id_order: IdOrder,
    pub(crate) universe: RoaringBitmap,
    pub(crate) enabled: RoaringBitmap,
    pub(crate) disabled: RoaringBitmap,
    pub(crate) connected: RoaringBitmap,
    pub(crate) disconnected: RoaringBitmap,
    pub(crate) managed: RoaringBitmap,
    pub(crate) unmanaged: RoaringBitmap,
    pub(crate) props: Vec<PropertyIndex>,
    pub(crate) device_prop_ids: FastMap<Box<str>, u32>,
    pub(crate) service_prop_ids: FastMap<Box<str>, u32>,
    pub(crate) tags: Vec<TagIndex>,
    pub(crate) tag_ids: FastMap<Arc<str>, u32>,
    pub(crate) feed: ChangeFeed,
    pub(crate) seq: u64,
    /// Ranges `(below, above)` (increasing, disjoint) of sequence numbers, strictly
    /// between the two, that a store reserved but no change that survived a restart used,
    /// one per restart the store remembers: no consumer of this history holds one.
    pub(crate) unused: Vec<(u64, u64)>,
    /// Which store opening rebuilt this registry (0: none); see `restore.rs`.
    pub(crate) origin: u64,
    /// Whether a hub without a store already moved this registry on to a number from the
    /// clock ([`Registry::continue_after_clock`]): a second hub on it keeps its numbers.
    pub(crate) clock_started: bool,
    /// The latest removals, for the hub's job engine (see [`RemovalLog`]).
    pub(crate) removals: RemovalLog,
}

/// How many removals [`RemovalLog`] keeps: a consumer more than this many removals behind
/// checks everything it holds against the registry instead.
pub(crate) const REMOVAL_LOG_CAPACITY: usize = 4096;

/// The last [`REMOVAL_LOG_CAPACITY`] removed twins, numbered, apart from the change feed:
/// a consumer that only needs removals (the hub: its job engine, and the transport's
/// registrations to end) reads these few instead of every change, and a burst of property
/// changes cannot push them out.
#[derive(Debug)]
pub(crate) struct RemovalLog {
    /// Tells this registry from one that replaced it (a reload, an assignment through
    /// `Hub::registry().write()`): unique in the process.
    instance: u64,
    /// Removals so far; the newest in `recent` is number `count`.
    count: u64,
    recent: std::collections::VecDeque<Removal>,
}

/// One removed twin, as [`RemovalLog`] keeps it.
#[derive(Debug)]
pub(crate) struct Removal {
    /// The removed twin's id.
    pub(crate) id: crate::twin::DeviceId,
    /// The registration id the twin held while connected (none when it was not).
    pub(crate) registration_id: Option<String>,
}

impl RemovalLog {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        RemovalLog {
            instance: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            count: 0,
            recent: std::collections::VecDeque::new(),
        }
    }

    fn push(&mut self, removal: Removal) {
        if self.recent.len() == REMOVAL_LOG_CAPACITY {
            self.recent.pop_front();
        }
        self.recent.push_back(removal);
        self.count += 1;
    }

    /// Where the log is: (this registry's instance, removals so far).
    pub(crate) fn mark(&self) -> (u64, u64) {
        (self.instance, self.count)
    }

    /// The removals after `mark` (taken from this same registry), oldest first; `None`
    /// when the log no longer holds them all, or `mark` is another registry's.
    pub(crate) fn since(&self, mark: (u64, u64)) -> Option<impl Iterator<Item = &Removal>> {
        let (instance, count) = mark;
        let behind = self.count.checked_sub(count)?;
        if instance != self.instance || behind > self.recent.len() as u64 {
            return None;
        }
        Some(self.recent.range(self.recent.len() - behind as usize..))
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

fn truncated(id: &str) -> String {
    crate::twin::DeviceId::validate(id)
        .map(|_| id.to_string())
        .unwrap_or_else(|_| id.chars().take(128).collect())
}

fn flatten(prefix: &str, v: &ServiceValue, out: &mut Vec<(String, Option<Scalar>)>) {
    match v {
        ServiceValue::Scalar(s) => out.push((prefix.to_string(), Some(s.clone()))),
        ServiceValue::Object(m) => {
            out.push((prefix.to_string(), None));
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
    }
}

impl Registry {
    /// An empty registry with the default feed capacity ([`DEFAULT_FEED_CAPACITY`]).
    pub fn new() -> Self {
        Registry::with_feed_capacity(DEFAULT_FEED_CAPACITY)
    }

    /// An empty registry whose change feed keeps the last `capacity` changes (each a
    /// [`Change`]: the twin's id and what changed). A reader that falls further behind
    /// than that gets a [`FeedGap`] from [`Registry::changes_after`] and must re-read the
    /// twins it follows (a query) before reading the feed again.
    pub fn with_feed_capacity(capacity: usize) -> Self {
        Registry {
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id_hash: VidTable::default(),
            id_hasher: FastState::default(),
            id_order: IdOrder::default(),
            universe: RoaringBitmap::new(),
            enabled: RoaringBitmap::new(),
            disabled: RoaringBitmap::new(),
            connected: RoaringBitmap::new(),
            disconnected: RoaringBitmap::new(),
            managed: RoaringBitmap::new(),
            unmanaged: RoaringBitmap::new(),
            props: Vec::new(),
            device_prop_ids: FastMap::default(),
            service_prop_ids: FastMap::default(),
            tags: Vec::new(),
            tag_ids: FastMap::default(),
            feed: ChangeFeed::new(capacity),
            seq: 0,
            origin: 0,
            clock_started: false,
            removals: RemovalLog::new(),
            unused: Vec::new(),
        }
    }

    // ---- reads -------------------------------------------------------------------------

    /// How many devices there are.
    pub fn len(&self) -> usize {
        self.by_id_hash.len()
    }

    /// Whether there are no devices.
    pub fn is_empty(&self) -> bool {
        self.by_id_hash.len() == 0
    }

    /// A borrowed view of a device's twin (nothing is cloned).
    pub fn get(&self, id: &str) -> Option<TwinRef<'_>> {
        let slot = self.find_slot(id)?;
        self.twin_at(Slot(slot))
    }

    /// Whether a device with this id exists.
    pub fn contains(&self, id: &str) -> bool {
        self.find_slot(id).is_some()
    }

    /// Every twin, in device id order.
    pub fn iter(&self) -> impl Iterator<Item = TwinRef<'_>> + '_ {
        self.id_order
            .range(&self.slots, Bound::Unbounded)
            .filter_map(|s| self.twin_at(Slot(s)))
    }

    /// The sequence number of the newest change (0 before any change).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// The changes after sequence `after`, oldest first (`after = 0` reads from the
    /// start). A consumer resumes by passing the last `seq` it processed. If the bounded
    /// feed already dropped changes the consumer has not seen, or `after` is a number
    /// this history never handed out (beyond [`Registry::last_seq`]; or, in a registry a
    /// store rebuilt, one of the numbers the store reserved before the restart that no
    /// surviving change used), it comes from another history and this is a [`FeedGap`]
    /// error rather than a silent skip.
    ///
    /// ```
    /// use twinhub::registry::{ChangeKind, Registry};
    /// use twinhub::{twin::Twin, DeviceId};
    /// let mut reg = Registry::with_feed_capacity(2);
    /// for id in ["a", "b", "c"] {
    ///     reg.create(Twin::new(DeviceId::new(id).unwrap())).unwrap();
    /// }
    /// let seen: Vec<u64> = reg.changes_after(1).unwrap().map(|c| c.seq).collect();
    /// assert_eq!(seen, [2, 3]);
    /// let gap = reg.changes_after(0).err().unwrap();
    /// assert_eq!(gap.resume_after(), 1);
    /// ```
    pub fn changes_after(&self, after: u64) -> Result<impl Iterator<Item = &Change>, FeedGap> {
        if after > self.seq {
            return Err(FeedGap {
                after,
                dropped_through: self.seq,
            });
        }
        // The ranges increase and are disjoint: the one that may hold `after` is the
        // last starting below it.
        let i = self.unused.partition_point(|&(below, _)| below < after);
        if let Some(&(below, above)) = i.checked_sub(1).map(|i| &self.unused[i])
            && after < above
        {
            return Err(FeedGap {
                after,
                dropped_through: below,
            });
        }
        self.feed.after(after)
    }

    /// Continues this registry's history after sequence number `seq` (see the [module
    /// docs](self), Numbers across restarts): the next change is numbered `seq + 1`, and
    /// [`Registry::last_seq`] is `seq`. The numbers strictly between the newest one before
    /// and `seq` are never handed out: [`Registry::changes_after`] answers them with a
    /// [`FeedGap`] whose [`resume_after`](FeedGap::resume_after) is the newest number
    /// before (the changes the feed holds stay readable, after 0 too). Every twin takes
    /// `seq` as its generation id, twin etag and service etag, so an `If-Match` with an
    /// etag handed out before fails. No change is emitted.
    ///
    /// Returns whether the history moved: a `seq` at or below [`Registry::last_seq`]
    /// changes nothing (a history never goes back). A `seq` above [`MAX_SEQ_START`]
    /// (2^52) is refused ([`SeqStartError::TooHigh`]), and so is a registry a store rebuilt
    /// or adopted ([`SeqStartError::StoreBacked`]: the store numbers it past every restart
    /// already, and would not keep the twins' new etags); nothing changes.
    ///
    /// Each call that moves keeps one range of skipped numbers (16 bytes), merged with the
    /// previous one when no change came between, and dropped once the feed has dropped
    /// past it (a number below the feed's oldest is a gap anyway): at most the feed's
    /// capacity + 1 ranges.
    ///
    /// ```
    /// use twinhub::registry::{Registry, SeqStartError, MAX_SEQ_START};
    /// use twinhub::{twin::Twin, DeviceId};
    /// let mut reg = Registry::new();
    /// reg.create(Twin::new(DeviceId::new("a")?))?;
    /// assert_eq!(reg.get("a").unwrap().etag().0, 1);
    /// assert!(reg.continue_after(1_000)?);
    /// assert_eq!(reg.get("a").unwrap().etag().0, 1_000);
    /// reg.create(Twin::new(DeviceId::new("b")?))?;
    /// assert_eq!(reg.last_seq(), 1_001);
    /// // Before the move, and after it, resume; a number skipped is a gap.
    /// assert_eq!(reg.changes_after(0)?.map(|c| c.seq).collect::<Vec<_>>(), [1, 1_001]);
    /// assert_eq!(reg.changes_after(1_000)?.count(), 1);
    /// assert_eq!(reg.changes_after(500).err().unwrap().resume_after(), 1);
    /// assert!(!reg.continue_after(7)?);
    /// assert_eq!(
    ///     reg.continue_after(MAX_SEQ_START + 1),
    ///     Err(SeqStartError::TooHigh { requested: MAX_SEQ_START + 1 })
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn continue_after(&mut self, seq: u64) -> Result<bool, SeqStartError> {
        if seq > MAX_SEQ_START {
            return Err(SeqStartError::TooHigh { requested: seq });
        }
        if self.origin != 0 {
            return Err(SeqStartError::StoreBacked);
        }
        if seq <= self.seq {
            return Ok(false);
        }
        // A range the feed dropped past answers with a gap through the feed.
        let dropped = self.feed.dropped_through();
        self.unused.retain(|&(_, above)| above > dropped);
        match self.unused.last_mut() {
            // No change since the last move: one range (its start is skipped too).
            Some((_, above)) if *above == self.seq => *above = seq,
            _ if seq - self.seq >= 2 => self.unused.push((self.seq, seq)),
            _ => {}
        }
        self.seq = seq;
        self.feed.allow_jumps();
        for e in self.slots.iter_mut().flatten() {
            e.generation = seq;
            e.etag = seq;
            e.service_etag = seq;
        }
        Ok(true)
    }

    /// What a hub without a store does as it starts: continues after
    /// [`seq_start_at`]`(now)`, or after `floor` (past the numbers of hubs that stopped in
    /// this process) if that is higher, at most [`MAX_SEQ_START`]; once per registry (a
    /// hub started later on the same registry, or beside the first, keeps its numbers:
    /// they are one history already).
    pub(crate) fn continue_after_clock(&mut self, now: Timestamp, floor: u64) {
        if std::mem::replace(&mut self.clock_started, true) {
            return;
        }
        let start = seq_start_at(now).max(floor).min(MAX_SEQ_START);
        // Below the bound, so this cannot be refused.
        let _ = self.continue_after(start);
    }

    /// How many changes the feed keeps.
    pub fn feed_capacity(&self) -> usize {
        self.feed.capacity()
    }

    // ---- index access: what the query engine reads -----------------------------------

    /// Every live slot.
    pub fn universe(&self) -> &RoaringBitmap {
        &self.universe
    }

    /// The slot of a device.
    pub fn slot_of(&self, id: &str) -> Option<Slot> {
        self.find_slot(id).map(Slot)
    }

    /// The twin in a slot, if the slot is live.
    pub fn twin_at(&self, slot: Slot) -> Option<TwinRef<'_>> {
        let entry = self.slots.get(slot.0 as usize)?.as_ref()?;
        Some(TwinRef::new(self, slot.0, entry))
    }

    /// The slots carrying a tag (`None` if no device ever had it, or an empty bitmap).
    pub fn tag_bitmap(&self, tag: &str) -> Option<&RoaringBitmap> {
        let &t = self.tag_ids.get(tag)?;
        Some(&self.tags[t as usize].slots)
    }

    /// Every tag ever seen with its slots (possibly empty now), in no particular order.
    pub fn tag_bitmaps(&self) -> impl Iterator<Item = (&str, &RoaringBitmap)> + '_ {
        self.tags.iter().map(|t| (&*t.name, &t.slots))
    }

    /// The interned id of a property, if any device ever had it. Device property names
    /// are canonical ([`DevicePropertyName`]); nested service members are `outer.inner`.
    pub fn property_id(&self, kind: PropertyKind, name: &str) -> Option<PropertyId> {
        let map = match kind {
            PropertyKind::Device => &self.device_prop_ids,
            PropertyKind::Service => &self.service_prop_ids,
        };
        map.get(name).map(|&p| PropertyId(p))
    }

    /// A property's kind and name.
    pub fn property_name(&self, id: PropertyId) -> Option<(PropertyKind, &str)> {
        self.props.get(id.0 as usize).map(|p| (p.kind, &*p.name))
    }

    /// Every interned property.
    pub fn properties(&self) -> impl Iterator<Item = (PropertyId, PropertyKind, &str)> + '_ {
        self.props
            .iter()
            .enumerate()
            .map(|(i, p)| (PropertyId(i as u32), p.kind, &*p.name))
    }

    /// The slots where property `id` equals `value` (numbers compare numerically, so `1`
    /// finds `1.0`).
    pub fn value_slots(&self, id: PropertyId, value: &Scalar) -> Option<SlotSet<'_>> {
        self.props.get(id.0 as usize)?.slots_of(value)
    }

    /// The distinct values of a property within bounds, in [`Scalar`] order, each with
    /// its slots. Reverse it for descending order. Inverted bounds give nothing.
    pub fn values_in_range<'a>(
        &'a self,
        id: PropertyId,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
    ) -> impl DoubleEndedIterator<Item = (&'a Scalar, SlotSet<'a>)> + use<'a> {
        self.props
            .get(id.0 as usize)
            .map(|p| p.range(lo, hi))
            .into_iter()
            .flatten()
    }

    /// The union of [`Registry::values_in_range`]'s slots.
    pub fn range_bitmap(
        &self,
        id: PropertyId,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
    ) -> RoaringBitmap {
        let mut singles = Vec::new();
        let mut bitmaps = Vec::new();
        for (_, set) in self.values_in_range(id, lo, hi) {
            match set {
                SlotSet::One(s) => singles.push(s),
                SlotSet::Bitmap(b) => bitmaps.push(b),
            }
        }
        singles.sort_unstable();
        let mut acc = RoaringBitmap::from_sorted_iter(singles).unwrap_or_default();
        for b in bitmaps {
            acc |= b;
        }
        acc
    }

    /// The slots of `within` whose value of property `id` lies within the bounds, found
    /// by looking each slot up in the property's value-id column (built on first use, 1
    /// to 4 bytes a slot, then maintained by every write) rather than by intersecting every
    /// value's bitmap in the range with `within`. The query executor asks this when
    /// `within` is much smaller than the range.
    pub(crate) fn filter_range(
        &self,
        id: PropertyId,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
        within: &RoaringBitmap,
    ) -> RoaringBitmap {
        self.props
            .get(id.0 as usize)
            .map_or_else(RoaringBitmap::new, |p| p.filter_range(lo, hi, within))
    }

    /// `rows` grouped by their value of property `id`, in value order (rows without a
    /// scalar value left out), through the property's value-id column (see
    /// [`Registry::filter_range`]). The executor's sorted pages use it when the rows are
    /// few.
    pub(crate) fn group_rows(
        &self,
        id: PropertyId,
        rows: &RoaringBitmap,
    ) -> Vec<(&Scalar, RoaringBitmap)> {
        self.props
            .get(id.0 as usize)
            .map_or_else(Vec::new, |p| p.group_rows(rows))
    }

    /// How many slots [`Registry::filter_range`] would return, without building them.
    pub(crate) fn count_range(
        &self,
        id: PropertyId,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
        within: &RoaringBitmap,
    ) -> u64 {
        self.props
            .get(id.0 as usize)
            .map_or(0, |p| p.count_range(lo, hi, within))
    }

    /// How many distinct values a property has.
    pub fn distinct_values(&self, id: PropertyId) -> usize {
        self.props
            .get(id.0 as usize)
            .map_or(0, PropertyIndex::distinct)
    }

    /// The slots that have a property (for a service object, the object or any member).
    pub fn exists_bitmap(&self, id: PropertyId) -> Option<&RoaringBitmap> {
        self.props.get(id.0 as usize).map(|p| &p.exists)
    }

    /// A slot's value of a property (`None` if absent, or if it is an object).
    pub fn value_of(&self, slot: Slot, id: PropertyId) -> Option<&Scalar> {
        let entry = self.slots.get(slot.0 as usize)?.as_ref()?;
        let prop = self.props.get(id.0 as usize)?;
        let vid = match prop.kind {
            PropertyKind::Device => {
                let i = entry.lists.find_device(id.0).ok()?;
                entry.lists.device_at(i).vid
            }
            PropertyKind::Service => {
                let i = entry.lists.find_service(id.0).ok()?;
                entry.lists.service_at(i).vid
            }
        };
        (vid != OBJECT_NODE).then(|| prop.value(vid))
    }

    /// The slots with this status.
    pub fn status_bitmap(&self, status: DeviceStatus) -> &RoaringBitmap {
        match status {
            DeviceStatus::Enabled => &self.enabled,
            DeviceStatus::Disabled => &self.disabled,
        }
    }

    /// The slots in this connection state.
    pub fn connection_bitmap(&self, state: ConnectionState) -> &RoaringBitmap {
        match state {
            ConnectionState::Connected => &self.connected,
            ConnectionState::Disconnected => &self.disconnected,
        }
    }

    /// The slots whose `isManaged` is `managed`.
    pub fn managed_bitmap(&self, managed: bool) -> &RoaringBitmap {
        if managed {
            &self.managed
        } else {
            &self.unmanaged
        }
    }

    /// Device ids with their slots in id order, from `start` on (paging resumes with
    /// `Bound::Excluded(last_id)`).
    pub fn device_ids(&self, start: Bound<&str>) -> impl Iterator<Item = (&DeviceId, Slot)> + '_ {
        self.id_order.range(&self.slots, start).map(|s| {
            let entry = self.slots[s as usize]
                .as_ref()
                .expect("ordered slots are live");
            (&entry.id, Slot(s))
        })
    }

    /// Makes room for `additional` more devices in the slot list and the id table (a
    /// hint: when the memory cannot be had, nothing changes).
    fn reserve(&mut self, additional: usize) {
        let new_slots = additional.saturating_sub(self.free_slots.len());
        if self.slots.try_reserve(new_slots).is_ok() {
            self.by_id_hash
                .reserve(self.len().saturating_add(additional));
        }
    }

    fn id_hash(&self, id: &str) -> u32 {
        (self.id_hasher.hash_one(id) >> 32) as u32
    }

    /// The slot of a device, through the id hash table.
    fn find_slot(&self, id: &str) -> Option<u32> {
        self.find_slot_hashed(self.id_hash(id), id)
    }

    /// [`Registry::find_slot`] with the id's hash already taken.
    fn find_slot_hashed(&self, hash: u32, id: &str) -> Option<u32> {
        let slots = &self.slots;
        self.by_id_hash.find(hash, |slot| {
            slots[slot as usize].as_ref().is_some_and(|e| e.id.is(id))
        })
    }

    // ---- writes ------------------------------------------------------------------------

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn emit(&mut self, seq: u64, device: DeviceId, kind: ChangeKind) {
        self.feed.push(Change { seq, device, kind });
    }

    fn slot_for(&self, id: &str) -> Result<u32, RegistryError> {
        self.find_slot(id)
            .ok_or_else(|| RegistryError::DeviceNotFound { id: truncated(id) })
    }

    fn entry_mut(&mut self, slot: u32) -> &mut Entry {
        self.slots[slot as usize]
            .as_mut()
            .expect("registry maps ids only to live slots")
    }

    fn entry(&self, slot: u32) -> &Entry {
        self.slots[slot as usize]
            .as_ref()
            .expect("registry maps ids only to live slots")
    }

    /// Checks a value against an interned (hence canonical) device property.
    fn check_device_value(&self, pid: u32, value: ScalarRef<'_>) -> Result<(), TwinError> {
        let p = &self.props[pid as usize];
        match p.well_known {
            Some(wk) => DevicePropertyName::WellKnown(wk).check_value_ref(value),
            None => crate::twin::validate_string_ref(&p.name, value),
        }
    }

    fn intern_property(&mut self, kind: PropertyKind, name: &str) -> u32 {
        let map = match kind {
            PropertyKind::Device => &mut self.device_prop_ids,
            PropertyKind::Service => &mut self.service_prop_ids,
        };
        if let Some(&p) = map.get(name) {
            return p;
        }
        let pid = self.props.len() as u32;
        map.insert(name.into(), pid);
        let well_known = match kind {
            PropertyKind::Device => crate::twin::well_known_by_name(name),
            PropertyKind::Service => None,
        };
        self.props
            .push(PropertyIndex::new(kind, Arc::from(name), well_known));
        pid
    }

    fn intern_tag(&mut self, tag: &str) -> u32 {
        if let Some(&t) = self.tag_ids.get(tag) {
            return t;
        }
        let name: Arc<str> = Arc::from(tag);
        let t = self.tags.len() as u32;
        self.tags.push(TagIndex {
            name: name.clone(),
            slots: RoaringBitmap::new(),
        });
        self.tag_ids.insert(name, t);
        t
    }

    fn set_field_bits(
        &mut self,
        slot: u32,
        status: DeviceStatus,
        conn: ConnectionState,
        managed: bool,
        fresh: bool,
    ) {
        // A fresh slot is in no field bitmap yet (removal clears it from all of them).
        let remove = |b: &mut RoaringBitmap| {
            if !fresh {
                b.remove(slot);
            }
        };
        let (on, off) = match status {
            DeviceStatus::Enabled => (&mut self.enabled, &mut self.disabled),
            DeviceStatus::Disabled => (&mut self.disabled, &mut self.enabled),
        };
        index::add(on, slot);
        remove(off);
        let (on, off) = match conn {
            ConnectionState::Connected => (&mut self.connected, &mut self.disconnected),
            ConnectionState::Disconnected => (&mut self.disconnected, &mut self.connected),
        };
        index::add(on, slot);
        remove(off);
        let (on, off) = if managed {
            (&mut self.managed, &mut self.unmanaged)
        } else {
            (&mut self.unmanaged, &mut self.managed)
        };
        index::add(on, slot);
        remove(off);
    }

    /// Creates a device from a twin (validated first). The registry assigns the
    /// generation id and both etags; the twin's own are ignored. Emits
    /// [`ChangeKind::Created`].
    ///
    /// ```
    /// use twinhub::registry::{Registry, RegistryError};
    /// use twinhub::{twin::Twin, DeviceId};
    /// let mut reg = Registry::new();
    /// let id = DeviceId::new("d1").unwrap();
    /// reg.create(Twin::new(id.clone())).unwrap();
    /// assert!(matches!(reg.create(Twin::new(id)), Err(RegistryError::DeviceExists { .. })));
    /// ```
    pub fn create(&mut self, twin: Twin) -> Result<Slot, RegistryError> {
        self.admit(twin, &mut Direct::default())
    }

    /// Validates a new twin and admits it (see [`Registry::admit_with`]).
    fn admit(&mut self, twin: Twin, place: &mut impl Place) -> Result<Slot, RegistryError> {
        let id_hash = self.id_hash(twin.device_id.as_str());
        if self
            .find_slot_hashed(id_hash, twin.device_id.as_str())
            .is_some()
        {
            return Err(RegistryError::DeviceExists { id: twin.device_id });
        }
        // Validation resolves known names to property ids; keep them for the insert below.
        let known_pids = std::cell::RefCell::new(Vec::with_capacity(twin.device_properties.len()));
        twin.validate_with(|name, value| {
            let &pid = self.device_prop_ids.get(name)?;
            known_pids.borrow_mut().push(pid);
            Some(self.check_device_value(pid, value.borrowed()))
        })
        .map_err(|error| RegistryError::Invalid {
            id: twin.device_id.to_string(),
            error,
        })?;
        let known_pids = known_pids.into_inner();
        let Twin {
            device_id,
            status,
            status_reason,
            status_updated_time,
            connection_state,
            connection_state_updated_time,
            last_activity_time,
            is_managed,
            authentication,
            registration,
            configuration,
            device_properties,
            service_properties,
            ..
        } = twin;
        let fields = NewFields {
            id: device_id,
            id_hash,
            status,
            status_updated: status_updated_time,
            connection: connection_state,
            connection_updated: connection_state_updated_time,
            last_activity: last_activity_time,
            managed: is_managed,
            extra: Extra::boxed(Extra {
                status_reason,
                authentication,
                registration,
                configuration,
            }),
        };
        self.admit_with(fields, place, |reg, place, slot| {
            let all_known = known_pids.len() == device_properties.len();
            for (i, (name, p)) in device_properties.iter().enumerate() {
                let pid = if all_known {
                    known_pids[i]
                } else {
                    reg.intern_property(PropertyKind::Device, name)
                };
                place.device(reg, pid, p.value.borrowed(), p.last_updated_time, slot);
            }
            let mut leaves = Vec::new();
            for (name, v) in &service_properties.properties {
                match v {
                    ServiceValue::Scalar(s) => {
                        let pid = reg.intern_property(PropertyKind::Service, name);
                        place.service(reg, pid, Some(s.borrowed()), slot);
                    }
                    ServiceValue::Object(_) => flatten(name, v, &mut leaves),
                }
            }
            for (name, value) in &leaves {
                let pid = reg.intern_property(PropertyKind::Service, name);
                place.service(reg, pid, value.as_ref().map(Scalar::borrowed), slot);
            }
            for t in &service_properties.tags {
                let tid = reg.intern_tag(t);
                place.tag(reg, tid, slot);
            }
        })
    }

    /// Gives a validated new device (whose id is known to be free) a slot and an entry.
    /// `values` hands the device's values and tags to `place` (each tag once).
    fn admit_with<P: Place>(
        &mut self,
        fields: NewFields,
        place: &mut P,
        values: impl FnOnce(&mut Registry, &mut P, u32),
    ) -> Result<Slot, RegistryError> {
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                if self.slots.len() >= u32::MAX as usize {
                    return Err(RegistryError::Full);
                }
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        let seq = self.next_seq();
        values(self, place, slot);
        let lists = place.lists();
        let NewFields {
            id,
            id_hash,
            status,
            status_updated,
            connection,
            connection_updated,
            last_activity,
            managed,
            extra,
        } = fields;
        place.fields(self, slot, status, connection, managed);
        self.by_id_hash.insert(id_hash, slot);
        self.slots[slot as usize] = Some(Entry {
            id: id.clone(),
            generation: seq,
            etag: seq,
            service_etag: seq,
            status_updated: status_updated.into(),
            connection_updated: connection_updated.into(),
            last_activity: last_activity.into(),
            status,
            connection,
            managed,
            lists,
            extra,
        });
        place.created(self, slot);
        self.emit(seq, id, ChangeKind::Created);
        Ok(Slot(slot))
    }

    fn insert_leaf(&mut self, slot: u32, name: &str, value: Option<&Scalar>) -> ServiceLeaf {
        let pid = self.intern_property(PropertyKind::Service, name);
        let vid = index_value(self, pid, value.map(Scalar::borrowed), slot);
        ServiceLeaf { pid, vid }
    }

    /// Creates many devices; stops at the first error (the twins before it stay loaded,
    /// consistently indexed). Returns how many were created.
    ///
    /// Much faster than calling [`Registry::create`] in a loop: this is a
    /// [`BulkLoad`] (batches, indexed by several threads) fed with
    /// [`BulkLoad::add_twin`]. Every thread has ended when this returns, and the registry
    /// is consistent even if `twins` panics. Borrowed rows ([`BulkLoad::add`]) load
    /// faster still: no twin is built or freed.
    pub fn load(&mut self, twins: impl IntoIterator<Item = Twin>) -> Result<usize, RegistryError> {
        let twins = twins.into_iter();
        let mut bulk = self.bulk_load();
        bulk.reserve(twins.size_hint().0);
        for twin in twins {
            bulk.add_twin(twin)?;
        }
        Ok(bulk.finish())
    }

    /// Removes a device and returns its twin. Its slot is reused later. Emits
    /// [`ChangeKind::Removed`].
    pub fn remove(&mut self, id: &str) -> Result<Twin, RegistryError> {
        let slot = self.slot_for(id)?;
        let twin = self.twin_at(Slot(slot)).map(|t| t.to_twin());
        let entry = self.slots[slot as usize]
            .take()
            .expect("registry maps ids only to live slots");
        for d in entry.lists.device() {
            self.props[d.pid as usize].remove(d.vid, slot);
        }
        for l in entry.lists.service() {
            self.props[l.pid as usize].remove(l.vid, slot);
        }
        for &t in entry.lists.tags() {
            self.tags[t as usize].slots.remove(slot);
        }
        self.universe.remove(slot);
        for b in self.field_bitmaps_mut() {
            b.remove(slot);
        }
        self.by_id_hash.remove(self.id_hash(id), slot);
        let live = self.by_id_hash.len();
        self.id_order.remove(
            &self.slots,
            slot,
            entry.id.clone(),
            live,
            &mut self.free_slots,
        );
        let seq = self.next_seq();
        let registration_id = twin
            .as_ref()
            .filter(|t| t.connection_state == crate::twin::ConnectionState::Connected)
            .and_then(|t| t.registration.as_ref())
            .map(|r| r.registration_id.clone());
        self.removals.push(Removal {
            id: entry.id.clone(),
            registration_id,
        });
        self.emit(seq, entry.id.clone(), ChangeKind::Removed);
        Ok(twin.expect("the slot was live"))
    }

    /// Applies a device-property report, as the transport feeds them: `name` is a
    /// well-known name or an LWM2M resource path (`/3/0/9` is `BatteryLevel`). The value
    /// must fit the property's type. Emits [`ChangeKind::DeviceProperty`].
    pub fn report_device_property(
        &mut self,
        id: &str,
        name: &str,
        value: Scalar,
        at: Timestamp,
    ) -> Result<(), RegistryError> {
        let slot = self.slot_for(id)?;
        self.report_at(Slot(slot), name, value, at)
    }

    /// [`Registry::report_device_property`] for a device already resolved to its slot
    /// (what a transport that caches slots calls).
    pub fn report_at(
        &mut self,
        slot: Slot,
        name: &str,
        value: Scalar,
        at: Timestamp,
    ) -> Result<(), RegistryError> {
        let slot = slot.0;
        let Some(Some(entry)) = self.slots.get(slot as usize) else {
            return Err(RegistryError::DeviceNotFound {
                id: format!("slot {slot}"),
            });
        };
        let invalid = |error| RegistryError::Invalid {
            id: entry.id.to_string(),
            error,
        };
        // Fast path: an already interned canonical name.
        let pid = match self.device_prop_ids.get(name) {
            Some(&pid) => {
                self.check_device_value(pid, value.borrowed())
                    .map_err(invalid)?;
                pid
            }
            None => {
                let parsed = DevicePropertyName::parse(name).map_err(invalid)?;
                parsed.check_value(&value).map_err(invalid)?;
                // A name no device had yet is new to this twin too: the bound is checked
                // before the name is interned, so a refused report leaves nothing behind.
                let entry = self.slots[slot as usize].as_ref().expect("checked above");
                if entry.lists.device_len() >= MAX_DEVICE_PROPERTIES {
                    return Err(RegistryError::Invalid {
                        id: entry.id.to_string(),
                        error: TwinError::TooManyDeviceProperties {
                            count: entry.lists.device_len() + 1,
                        },
                    });
                }
                self.intern_property(PropertyKind::Device, parsed.as_str())
            }
        };
        let entry = self.slots[slot as usize].as_ref().expect("checked above");
        let pos = entry.lists.find_device(pid);
        if pos.is_err() && entry.lists.device_len() >= MAX_DEVICE_PROPERTIES {
            return Err(RegistryError::Invalid {
                id: entry.id.to_string(),
                error: TwinError::TooManyDeviceProperties {
                    count: entry.lists.device_len() + 1,
                },
            });
        }
        let seq = self.next_seq();
        let index = &mut self.props[pid as usize];
        let entry = self.slots[slot as usize].as_mut().expect("checked above");
        let previous = match pos {
            Ok(i) => {
                let mut vid = entry.lists.device_at(i).vid;
                let previous = index.value(vid).clone();
                if !index::same_repr(index.value(vid), &value) {
                    index.remove(vid, slot);
                    vid = index.insert(&value, slot);
                }
                entry.lists.set_device_at(i, vid, at);
                Some(previous)
            }
            Err(i) => {
                let vid = index.insert(&value, slot);
                entry
                    .lists
                    .insert_device(i, DeviceValue { pid, vid, ts: at });
                None
            }
        };
        entry.etag = seq;
        let device = entry.id.clone();
        let name = index.name.clone();
        self.emit(
            seq,
            device,
            ChangeKind::DeviceProperty {
                name,
                value,
                previous,
            },
        );
        Ok(())
    }

    /// Removes a device property (e.g. the device deleted the object instance). Returns
    /// whether it was there; emits [`ChangeKind::DevicePropertyRemoved`] if it was.
    pub fn remove_device_property(&mut self, id: &str, name: &str) -> Result<bool, RegistryError> {
        let slot = self.slot_for(id)?;
        let parsed = DevicePropertyName::parse(name).map_err(|error| RegistryError::Invalid {
            id: truncated(id),
            error,
        })?;
        let Some(&pid) = self.device_prop_ids.get(parsed.as_str()) else {
            return Ok(false);
        };
        let entry = self.entry_mut(slot);
        let Ok(i) = entry.lists.find_device(pid) else {
            return Ok(false);
        };
        let d = entry.lists.remove_device(i);
        self.props[pid as usize].remove(d.vid, slot);
        let seq = self.next_seq();
        let entry = self.entry_mut(slot);
        entry.etag = seq;
        let device = entry.id.clone();
        let name = self.props[pid as usize].name.clone();
        self.emit(seq, device, ChangeKind::DevicePropertyRemoved { name });
        Ok(true)
    }

    fn check_etag(&self, slot: u32, if_match: Option<Etag>) -> Result<(), RegistryError> {
        let entry = self.entry(slot);
        match if_match {
            Some(expected) if expected.0 != entry.service_etag => {
                Err(RegistryError::PreconditionFailed {
                    id: entry.id.clone(),
                    expected,
                    actual: Etag(entry.service_etag),
                })
            }
            _ => Ok(()),
        }
    }

    /// Removes every service leaf of `slot` whose name is `name` or lies under it.
    fn remove_service_subtree(&mut self, slot: u32, name: Option<&str>) {
        let entry = self.slots[slot as usize].as_mut().expect("live slot");
        let props = &mut self.props;
        entry.lists.retain_service(|l| {
            let p = &mut props[l.pid as usize];
            let hit = match name {
                None => true,
                Some(n) => {
                    let full: &str = &p.name;
                    full == n
                        || (full.starts_with(n) && full.as_bytes().get(n.len()) == Some(&b'.'))
                }
            };
            if hit {
                p.remove(l.vid, slot);
            }
            !hit
        });
    }

    fn insert_service_value(&mut self, slot: u32, name: &str, value: &ServiceValue) {
        let mut leaves = Vec::new();
        flatten(name, value, &mut leaves);
        for (n, v) in &leaves {
            let leaf = self.insert_leaf(slot, n, v.as_ref());
            let entry = self.slots[slot as usize].as_mut().expect("live slot");
            entry.lists.insert_service(leaf);
        }
    }

    fn finish_service_change(&mut self, slot: u32, kind: ChangeKind) -> Etag {
        let seq = self.next_seq();
        let entry = self.entry_mut(slot);
        entry.etag = seq;
        entry.service_etag = seq;
        let device = entry.id.clone();
        self.emit(seq, device, kind);
        Etag(seq)
    }

    fn top_level_service_count(&self, slot: u32) -> usize {
        self.entry(slot)
            .lists
            .service()
            .filter(|l| !self.props[l.pid as usize].name.contains('.'))
            .count()
    }

    /// Sets (`Some`) or removes (`None`) one service property, if `if_match` is `None` or
    /// equals the current service etag. Returns the new service etag. Emits
    /// [`ChangeKind::ServiceProperties`].
    ///
    /// ```
    /// use twinhub::registry::{Registry, RegistryError};
    /// use twinhub::{twin::{Etag, Twin}, DeviceId};
    /// let mut reg = Registry::new();
    /// reg.create(Twin::new(DeviceId::new("d1").unwrap())).unwrap();
    /// let e = reg.set_service_property("d1", "region", Some("eu".into()), None).unwrap();
    /// let stale = Etag(e.0 - 1);
    /// let err = reg.set_service_property("d1", "region", None, Some(stale)).unwrap_err();
    /// assert!(matches!(err, RegistryError::PreconditionFailed { .. }));
    /// assert!(reg.get("d1").unwrap().service_property("region").is_some());
    /// ```
    pub fn set_service_property(
        &mut self,
        id: &str,
        name: &str,
        value: Option<ServiceValue>,
        if_match: Option<Etag>,
    ) -> Result<Etag, RegistryError> {
        let slot = self.slot_for(id)?;
        let invalid = |error| RegistryError::Invalid {
            id: id.to_string(),
            error,
        };
        validate_property_name(name).map_err(invalid)?;
        if let Some(v) = &value {
            v.validate(name).map_err(invalid)?;
        }
        self.check_etag(slot, if_match)?;
        let exists = self
            .service_prop_ids
            .get(name)
            .is_some_and(|&pid| self.props[pid as usize].exists.contains(slot));
        if value.is_some() && !exists {
            let count = self.top_level_service_count(slot) + 1;
            if count > MAX_SERVICE_PROPERTIES {
                return Err(invalid(TwinError::TooManyServiceProperties { count }));
            }
        }
        self.remove_service_subtree(slot, Some(name));
        if let Some(v) = &value {
            self.insert_service_value(slot, name, v);
        }
        Ok(self.finish_service_change(slot, ChangeKind::ServiceProperties))
    }

    /// Replaces all service properties and tags (the preview's
    /// `PUT /devices/{id}/serviceProperties`), if `if_match` is `None` or equals the
    /// current service etag. `properties.etag` is ignored. Emits
    /// [`ChangeKind::ServiceProperties`].
    pub fn replace_service_properties(
        &mut self,
        id: &str,
        properties: &ServiceProperties,
        if_match: Option<Etag>,
    ) -> Result<Etag, RegistryError> {
        let slot = self.slot_for(id)?;
        let mut probe = Twin::new(self.entry(slot).id.clone());
        probe.service_properties = properties.clone();
        probe.validate().map_err(|error| RegistryError::Invalid {
            id: id.to_string(),
            error,
        })?;
        self.check_etag(slot, if_match)?;
        self.remove_service_subtree(slot, None);
        for (name, v) in &properties.properties {
            self.insert_service_value(slot, name, v);
        }
        self.set_tags(slot, &properties.tags);
        Ok(self.finish_service_change(slot, ChangeKind::ServiceProperties))
    }

    fn set_tags(&mut self, slot: u32, tags: &BTreeSet<String>) {
        let old = self.entry(slot).lists.tags().to_vec();
        for t in old {
            self.tags[t as usize].slots.remove(slot);
        }
        let mut ids: Vec<u32> = tags
            .iter()
            .map(|t| {
                let tid = self.intern_tag(t);
                index::add(&mut self.tags[tid as usize].slots, slot);
                tid
            })
            .collect();
        ids.sort_unstable();
        self.entry_mut(slot).lists.set_tags(&ids);
    }

    fn current_tags(&self, slot: u32) -> BTreeSet<String> {
        self.entry(slot)
            .lists
            .tags()
            .iter()
            .map(|&t| self.tags[t as usize].name.to_string())
            .collect()
    }

    fn change_tags(
        &mut self,
        id: &str,
        if_match: Option<Etag>,
        new_tags: impl FnOnce(BTreeSet<String>) -> BTreeSet<String>,
        given: &[&str],
    ) -> Result<Etag, RegistryError> {
        let slot = self.slot_for(id)?;
        for t in given {
            validate_tag(t).map_err(|error| RegistryError::Invalid {
                id: id.to_string(),
                error,
            })?;
        }
        self.check_etag(slot, if_match)?;
        let tags = new_tags(self.current_tags(slot));
        if tags.len() > MAX_TAGS {
            return Err(RegistryError::Invalid {
                id: id.to_string(),
                error: TwinError::TooManyTags { count: tags.len() },
            });
        }
        self.set_tags(slot, &tags);
        Ok(self.finish_service_change(slot, ChangeKind::Tags))
    }

    /// Adds tags (already present ones are kept). Returns the new service etag. Emits
    /// [`ChangeKind::Tags`].
    pub fn add_tags(
        &mut self,
        id: &str,
        tags: &[&str],
        if_match: Option<Etag>,
    ) -> Result<Etag, RegistryError> {
        self.change_tags(
            id,
            if_match,
            |mut cur| {
                cur.extend(tags.iter().map(|t| t.to_string()));
                cur
            },
            tags,
        )
    }

    /// Removes tags (absent ones are ignored). Returns the new service etag. Emits
    /// [`ChangeKind::Tags`].
    pub fn remove_tags(
        &mut self,
        id: &str,
        tags: &[&str],
        if_match: Option<Etag>,
    ) -> Result<Etag, RegistryError> {
        self.change_tags(
            id,
            if_match,
            |mut cur| {
                for t in tags {
                    cur.remove(*t);
                }
                cur
            },
            tags,
        )
    }

    /// Replaces all tags. Returns the new service etag. Emits [`ChangeKind::Tags`].
    pub fn replace_tags(
        &mut self,
        id: &str,
        tags: &[&str],
        if_match: Option<Etag>,
    ) -> Result<Etag, RegistryError> {
        self.change_tags(
            id,
            if_match,
            |_| tags.iter().map(|t| t.to_string()).collect(),
            tags,
        )
    }

    fn finish_field_change(&mut self, slot: u32, kind: ChangeKind) {
        let seq = self.next_seq();
        let entry = self.entry_mut(slot);
        entry.etag = seq;
        let device = entry.id.clone();
        self.emit(seq, device, kind);
    }

    fn extra_mut(&mut self, slot: u32) -> &mut Extra {
        self.entry_mut(slot)
            .extra
            .get_or_insert_with(Default::default)
    }

    fn tidy_extra(&mut self, slot: u32) {
        let entry = self.entry_mut(slot);
        if entry.extra.as_ref().is_some_and(|e| e.is_empty()) {
            entry.extra = None;
        }
    }

    /// Sets the connection state and when it changed. Emits
    /// [`ChangeKind::ConnectionState`].
    pub fn set_connection_state(
        &mut self,
        id: &str,
        state: ConnectionState,
        at: Timestamp,
    ) -> Result<(), RegistryError> {
        let slot = self.slot_for(id)?;
        let e = self.entry_mut(slot);
        e.connection = state;
        e.connection_updated = Some(at).into();
        let (status, managed) = (e.status, e.managed);
        self.set_field_bits(slot, status, state, managed, false);
        self.finish_field_change(slot, ChangeKind::ConnectionState(state));
        Ok(())
    }

    /// Sets the status, its reason and when it changed. Emits [`ChangeKind::Status`].
    pub fn set_status(
        &mut self,
        id: &str,
        status: DeviceStatus,
        reason: Option<String>,
        at: Timestamp,
    ) -> Result<(), RegistryError> {
        let slot = self.slot_for(id)?;
        if let Some(r) = &reason
            && r.len() > MAX_FIELD_LEN
        {
            return Err(RegistryError::Invalid {
                id: id.to_string(),
                error: TwinError::FieldTooLong {
                    field: "statusReason",
                    len: r.len(),
                },
            });
        }
        let e = self.entry_mut(slot);
        e.status = status;
        e.status_updated = Some(at).into();
        let (conn, managed) = (e.connection, e.managed);
        self.extra_mut(slot).status_reason = reason;
        self.tidy_extra(slot);
        self.set_field_bits(slot, status, conn, managed, false);
        self.finish_field_change(slot, ChangeKind::Status(status));
        Ok(())
    }

    /// Sets `isManaged`. Emits [`ChangeKind::Managed`].
    pub fn set_managed(&mut self, id: &str, managed: bool) -> Result<(), RegistryError> {
        let slot = self.slot_for(id)?;
        let e = self.entry_mut(slot);
        e.managed = managed;
        let (status, conn) = (e.status, e.connection);
        self.set_field_bits(slot, status, conn, managed, false);
        self.finish_field_change(slot, ChangeKind::Managed(managed));
        Ok(())
    }

    /// Sets or clears the LWM2M registration. Emits [`ChangeKind::Registration`].
    pub fn set_registration(
        &mut self,
        id: &str,
        registration: Option<RegistrationInfo>,
    ) -> Result<(), RegistryError> {
        let slot = self.slot_for(id)?;
        self.extra_mut(slot).registration = registration;
        self.tidy_extra(slot);
        self.finish_field_change(slot, ChangeKind::Registration);
        Ok(())
    }

    /// Sets `lastActivityTime`. Emits [`ChangeKind::LastActivity`].
    pub fn set_last_activity(&mut self, id: &str, at: Timestamp) -> Result<(), RegistryError> {
        let slot = self.slot_for(id)?;
        self.entry_mut(slot).last_activity = Some(at).into();
        self.finish_field_change(slot, ChangeKind::LastActivity);
        Ok(())
    }

    /// Sets or clears the configuration string (what `updateDeviceConfiguration` jobs
    /// write). Emits [`ChangeKind::Configuration`].
    pub fn set_configuration(
        &mut self,
        id: &str,
        configuration: Option<String>,
    ) -> Result<(), RegistryError> {
        let slot = self.slot_for(id)?;
        if let Some(c) = &configuration
            && c.len() > MAX_FIELD_LEN
        {
            return Err(RegistryError::Invalid {
                id: id.to_string(),
                error: TwinError::FieldTooLong {
                    field: "configuration",
                    len: c.len(),
                },
            });
        }
        self.extra_mut(slot).configuration = configuration;
        self.tidy_extra(slot);
        self.finish_field_change(slot, ChangeKind::Configuration);
        Ok(())
    }

    /// Replaces the authentication material. Emits [`ChangeKind::Authentication`].
    pub fn set_authentication(
        &mut self,
        id: &str,
        authentication: Authentication,
    ) -> Result<(), RegistryError> {
        let slot = self.slot_for(id)?;
        if let Some(i) = &authentication.psk_identity
            && i.len() > MAX_FIELD_LEN
        {
            return Err(RegistryError::Invalid {
                id: id.to_string(),
                error: TwinError::FieldTooLong {
                    field: "authentication.pskIdentity",
                    len: i.len(),
                },
            });
        }
        self.extra_mut(slot).authentication = authentication;
        self.tidy_extra(slot);
        self.finish_field_change(slot, ChangeKind::Authentication);
        Ok(())
    }
}

#[cfg(test)]
mod removal_log_tests {
    use super::*;

    #[test]
    fn the_removal_log_keeps_its_capacity_and_knows_its_registry() {
        let mut log = RemovalLog::new();
        let start = log.mark();
        let id = |i: usize| crate::twin::DeviceId::new(&format!("d{i}")).unwrap();
        let removal = |i: usize| Removal {
            id: id(i),
            registration_id: None,
        };
        log.push(removal(0));
        let one = log.mark();
        let ids = |mark| {
            log.since(mark)
                .unwrap()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(start), vec![id(0)]);
        assert_eq!(log.since(one).unwrap().count(), 0);
        for i in 1..=REMOVAL_LOG_CAPACITY {
            log.push(removal(i));
        }
        // `one` is exactly the capacity behind: still whole; `start` is one more: gone.
        assert_eq!(log.since(one).unwrap().count(), REMOVAL_LOG_CAPACITY);
        assert_eq!(log.since(one).unwrap().next().map(|r| &r.id), Some(&id(1)));
        assert!(log.since(start).is_none());
        assert_eq!(log.recent.len(), REMOVAL_LOG_CAPACITY);
        // Another registry's mark, or one from the future, is refused.
        assert!(RemovalLog::new().since(one).is_none());
        assert!(log.since((one.0, log.count + 1)).is_none());
    }
}
