//! Slots in device id order: what paging and id-ordered results walk.
//!
//! Kept as [`SortedRuns`] of `(first 16 id bytes, slot)` entries: a walk in id order reads
//! 16-byte entries in sequence (a tree walk costs several times more per step), and a
//! bulk load adds its ids as one sorted run. In a large registry a removed device's entry
//! stays until a merge drops it; until then its id is kept here (the order still compares
//! it) and its slot is not reused.

use super::Entry;
use super::hash::FastMap;
use super::sorted::{RunOrder, SortKey, SortedRuns};
use crate::DeviceId;
use std::cmp::Ordering;
use std::ops::Bound;

/// The id order of the registry's slots.
#[derive(Debug, Default)]
pub(crate) struct IdOrder {
    runs: SortedRuns<u128>,
    /// Removed devices still in `runs`, by slot.
    removed: FastMap<u32, DeviceId>,
}

/// Below this many devices a removal merges the order at once.
const SMALL: usize = 4096;

/// The first 16 bytes of an id, big-endian: ids order as their prefixes do, or tie (only
/// ids longer than 16 bytes can tie, and only with a common 16-byte start).
fn prefix(id: &str) -> u128 {
    let mut first = [0u8; 16];
    let n = id.len().min(16);
    first[..n].copy_from_slice(&id.as_bytes()[..n]);
    u128::from_be_bytes(first)
}

/// The id's bytes 16 to 19, big-endian (zero-padded): what follows [`prefix`].
fn more(id: &str) -> u32 {
    let mut next = [0u8; 4];
    let rest = id.as_bytes().get(16..).unwrap_or_default();
    let n = rest.len().min(4);
    next[..n].copy_from_slice(&rest[..n]);
    u32::from_be_bytes(next)
}

/// Slots ordered by their devices' ids; a slot without a live entry is a removal still
/// in the order (its id kept in `removed`), no longer wanted.
#[derive(Clone, Copy)]
struct ById<'a> {
    slots: &'a [Option<Entry>],
    removed: &'a FastMap<u32, DeviceId>,
}

impl<'a> ById<'a> {
    fn id(self, slot: u32) -> &'a DeviceId {
        match &self.slots[slot as usize] {
            Some(e) => &e.id,
            None => self
                .removed
                .get(&slot)
                .expect("an ordered slot is live or removed-pending"),
        }
    }

    fn key(self, slot: u32) -> SortKey<u128> {
        let id = self.id(slot).as_str();
        SortKey {
            prefix: prefix(id),
            more: more(id),
            id: slot,
        }
    }
}

impl RunOrder for ById<'_> {
    fn cmp(&self, a: u32, b: u32) -> Ordering {
        self.id(a).cmp(self.id(b))
    }

    fn alive(&self, slot: u32) -> bool {
        self.slots[slot as usize].is_some()
    }
}

impl IdOrder {
    fn by<'a>(&'a self, slots: &'a [Option<Entry>]) -> ById<'a> {
        ById {
            slots,
            removed: &self.removed,
        }
    }

    /// Adds live slots (one, or a bulk load's batch). Slots whose removal a merge
    /// completes are pushed to `free`.
    pub(crate) fn insert(&mut self, slots: &[Option<Entry>], new: &[u32], free: &mut Vec<u32>) {
        let by = ById {
            slots,
            removed: &self.removed,
        };
        let mut dropped = Vec::new();
        match new {
            [] => {}
            [slot] => self.runs.insert(by.key(*slot), &by, &mut dropped),
            _ => {
                let keys = new.iter().map(|&s| by.key(s)).collect();
                self.runs.insert_batch(keys, &by, &mut dropped)
            }
        }
        self.release(dropped, free);
    }

    /// Adds a bulk load's batch of live slots as one run, without merging (see
    /// [`IdOrder::settle`]).
    pub(crate) fn push_batch(&mut self, slots: &[Option<Entry>], new: &[u32]) {
        let by = ById {
            slots,
            removed: &self.removed,
        };
        let keys = new.iter().map(|&s| by.key(s)).collect();
        self.runs.push_run(keys, &by);
    }

    /// Merges the runs bulk loads pushed; slots whose removal a merge completes are
    /// pushed to `free`.
    pub(crate) fn settle(&mut self, slots: &[Option<Entry>], free: &mut Vec<u32>) {
        let mut dropped = Vec::new();
        let by = ById {
            slots,
            removed: &self.removed,
        };
        self.runs.settle_all(&by, &mut dropped);
        self.release(dropped, free);
    }

    /// Records that `slot` (holding `id`) was removed; its slot reaches `free` once a
    /// merge drops its entry.
    pub(crate) fn remove(
        &mut self,
        slots: &[Option<Entry>],
        slot: u32,
        id: DeviceId,
        live: usize,
        free: &mut Vec<u32>,
    ) {
        self.removed.insert(slot, id);
        // A small order merges at once (cheap), so small registries reuse slots at once.
        if live < SMALL || (self.removed.len() > 32 && self.removed.len() * 4 > live) {
            let by = ById {
                slots,
                removed: &self.removed,
            };
            let mut dropped = Vec::new();
            self.runs.compact(&by, &mut dropped);
            self.release(dropped, free);
        }
    }

    fn release(&mut self, dropped: Vec<u32>, free: &mut Vec<u32>) {
        for slot in dropped {
            self.removed.remove(&slot);
            free.push(slot);
        }
    }

    /// Up to `n` live slots in id order from `start` on, appended to `out`: a batch of
    /// [`range`](Self::range), copied straight from the order's entries when they are one
    /// run with no removal pending (a loaded fleet), which is several times cheaper per
    /// slot than the merge.
    pub(crate) fn fill(
        &self,
        slots: &[Option<Entry>],
        start: Bound<&str>,
        n: usize,
        out: &mut Vec<u32>,
    ) {
        if self.removed.is_empty()
            && let Some(run) = self.runs.single_run()
        {
            let by = self.by(slots);
            let from = run.partition_point(|k| before(by, start, *k));
            out.extend(run[from..].iter().take(n).map(|k| k.id));
            return;
        }
        out.extend(self.range(slots, start).take(n));
    }

    /// Live slots in id order, from `start` on.
    pub(crate) fn range<'a>(
        &'a self,
        slots: &'a [Option<Entry>],
        start: Bound<&str>,
    ) -> impl Iterator<Item = u32> + 'a {
        let by = self.by(slots);
        self.runs
            .range(move |k| before(by, start, k), |_| true, by)
            // With no removal pending every ordered slot is live: skip touching entries.
            .filter(move |&s| self.removed.is_empty() || slots[s as usize].is_some())
    }

    /// Removed slots still waiting for a merge (for `validate`).
    pub(crate) fn pending_removals(&self) -> impl Iterator<Item = u32> + '_ {
        self.removed.keys().copied()
    }

    /// Every ordered slot, removed or not, in id order (for `validate`).
    pub(crate) fn all<'a>(&'a self, slots: &'a [Option<Entry>]) -> impl Iterator<Item = u32> + 'a {
        self.runs.range(|_| false, |_| true, self.by(slots))
    }
}

/// Whether an entry of the order comes before `start`.
fn before(by: ById<'_>, start: Bound<&str>, k: SortKey<u128>) -> bool {
    match start {
        Bound::Unbounded => false,
        Bound::Included(s) | Bound::Excluded(s) => {
            let o = k
                .prefix
                .cmp(&prefix(s))
                .then(k.more.cmp(&more(s)))
                .then_with(|| by.id(k.id).as_str().cmp(s));
            o == Ordering::Less || (o == Ordering::Equal && matches!(start, Bound::Excluded(_)))
        }
    }
}
