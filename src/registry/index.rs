//! Value indexes: one per property, mapping each distinct value to the slots holding it.

use super::column::{IdBits, ValueColumn};
use super::hash::{FastMap, FastState, memo_key, same_str};
use super::sorted::{RunOrder, SortKey, SortedRuns};
use super::vid_table::VidTable;
use crate::twin::{Number, PropertyKind, Scalar, ScalarRef, WellKnownProperty};
use roaring::RoaringBitmap;
use std::borrow::Cow;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::sync::{Arc, OnceLock};

/// The slots holding one value: a single slot (most values of unique-per-device
/// properties like `SerialNumber`, stored without a bitmap to save memory) or a bitmap.
///
/// ```
/// use roaring::RoaringBitmap;
/// use twinhub::registry::SlotSet;
/// let mut acc: RoaringBitmap = (0..10).collect();
/// SlotSet::One(3).intersect_into(&mut acc);
/// assert_eq!(acc.iter().collect::<Vec<_>>(), [3]);
/// ```
#[derive(Clone, Copy, Debug)]
pub enum SlotSet<'a> {
    /// Exactly one slot.
    One(u32),
    /// A bitmap of slots (never empty).
    Bitmap(&'a RoaringBitmap),
}

impl<'a> SlotSet<'a> {
    /// How many slots.
    pub fn len(&self) -> u64 {
        match self {
            SlotSet::One(_) => 1,
            SlotSet::Bitmap(b) => b.len(),
        }
    }

    /// Whether there are none (never true for sets the registry hands out).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `slot` is in the set.
    pub fn contains(&self, slot: u32) -> bool {
        match self {
            SlotSet::One(s) => *s == slot,
            SlotSet::Bitmap(b) => b.contains(slot),
        }
    }

    /// The slots in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        let (one, bitmap) = match *self {
            SlotSet::One(s) => (Some(s), None),
            SlotSet::Bitmap(b) => (None, Some(b)),
        };
        one.into_iter()
            .chain(bitmap.into_iter().flat_map(|b| b.iter()))
    }

    /// The set as a bitmap: borrowed when it is one, built when it is a single slot.
    pub fn to_bitmap(&self) -> Cow<'a, RoaringBitmap> {
        match *self {
            SlotSet::One(s) => Cow::Owned(std::iter::once(s).collect()),
            SlotSet::Bitmap(b) => Cow::Borrowed(b),
        }
    }

    /// `acc &= self`, without building a bitmap for a single slot.
    pub fn intersect_into(&self, acc: &mut RoaringBitmap) {
        match *self {
            SlotSet::One(s) => {
                let keep = acc.contains(s);
                acc.clear();
                if keep {
                    acc.insert(s);
                }
            }
            SlotSet::Bitmap(b) => *acc &= b,
        }
    }

    /// `acc |= self`.
    pub fn union_into(&self, acc: &mut RoaringBitmap) {
        match *self {
            SlotSet::One(s) => {
                acc.insert(s);
            }
            SlotSet::Bitmap(b) => *acc |= b,
        }
    }
}

/// Inserts `slot`, cheaply when it is above the current maximum (bulk loads, new slots).
///
/// A sparse bitmap's last container is an array, where appending (`try_push`) is O(1)
/// and `insert` binary-searches; a dense one's is a bitmap, where `insert` is O(1) but
/// `try_push` scans for the maximum. Density decides (more than 1 in 16 of the slots
/// below `slot` set: roaring's array/bitmap threshold).
pub(crate) fn add(b: &mut RoaringBitmap, slot: u32) {
    if b.len() * 16 > u64::from(slot) || b.try_push(slot).is_err() {
        b.insert(slot);
    }
}

/// Inserts ascending `slots`: appended in one pass while they lie past the bitmap's
/// end (a bulk load's batch), the rest one by one.
pub(crate) fn add_sorted(b: &mut RoaringBitmap, slots: &[u32]) {
    debug_assert!(slots.windows(2).all(|w| w[0] < w[1]), "strictly ascending");
    // Ascending and as many as they span: one range (a property every twin of a
    // batch has; a value they all share), added a container at a time.
    if let (Some(&first), Some(&last)) = (slots.first(), slots.last())
        && (last - first) as usize + 1 == slots.len()
    {
        b.insert_range(first..=last);
        return;
    }
    let appended = match b.append(slots.iter().copied()) {
        Ok(n) => n,
        Err(e) => e.valid_until(),
    };
    for &slot in &slots[appended as usize..] {
        add(b, slot);
    }
}

/// `(value id, slot)` pairs grouped by value id, slots in their order within a group:
/// counted into place when the ids are few (one pass), sorted otherwise.
fn group_by_value(mut pairs: Vec<(u32, u32)>, ids: usize) -> Vec<(u32, u32)> {
    if pairs.len() < 2 {
        return pairs;
    }
    if ids > 4 * pairs.len() {
        pairs.sort_unstable();
        return pairs;
    }
    let mut at = vec![0u32; ids + 1];
    for &(vid, _) in &pairs {
        at[vid as usize + 1] += 1;
    }
    for i in 1..at.len() {
        at[i] += at[i - 1];
    }
    let mut grouped = vec![(0, 0); pairs.len()];
    for &(vid, slot) in &pairs {
        let to = &mut at[vid as usize];
        grouped[*to as usize] = (vid, slot);
        *to += 1;
    }
    grouped
}

/// The slots of one value, as stored.
#[derive(Debug)]
pub(crate) enum Posting {
    /// The value entry is free (its id is on the free list).
    Empty,
    One(u32),
    Many(RoaringBitmap),
}

impl Posting {
    pub(crate) fn as_set(&self) -> Option<SlotSet<'_>> {
        match self {
            Posting::Empty => None,
            Posting::One(s) => Some(SlotSet::One(*s)),
            Posting::Many(b) => Some(SlotSet::Bitmap(b)),
        }
    }

    fn insert(&mut self, slot: u32) {
        match self {
            Posting::Empty => *self = Posting::One(slot),
            Posting::One(s) => {
                if *s != slot {
                    let b: RoaringBitmap = [*s, slot].into_iter().collect();
                    *self = Posting::Many(b);
                }
            }
            Posting::Many(b) => add(b, slot),
        }
    }

    /// Adds ascending `slots` (at least one).
    fn extend(&mut self, slots: &[u32]) {
        match self {
            Posting::Empty if slots.len() == 1 => *self = Posting::One(slots[0]),
            Posting::Empty => {
                let mut b = RoaringBitmap::new();
                add_sorted(&mut b, slots);
                *self = Posting::Many(b);
            }
            Posting::One(s) => {
                let mut b = RoaringBitmap::new();
                b.insert(*s);
                add_sorted(&mut b, slots);
                *self = Posting::Many(b);
            }
            Posting::Many(b) => add_sorted(b, slots),
        }
    }

    /// Removes `slot`; returns whether the posting is now empty.
    fn remove(&mut self, slot: u32) -> bool {
        match self {
            Posting::Empty => true,
            Posting::One(s) => {
                if *s == slot {
                    *self = Posting::Empty;
                }
                matches!(self, Posting::Empty)
            }
            Posting::Many(b) => {
                b.remove(slot);
                match b.len() {
                    0 => {
                        *self = Posting::Empty;
                        true
                    }
                    1 => {
                        let only = b.min().unwrap_or(slot);
                        *self = Posting::One(only);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct ValueEntry {
    /// The value as first inserted (the index key).
    pub(crate) value: Scalar,
    pub(crate) slots: Posting,
}

/// Value id marking a service object node: the member exists, its value is an object.
pub(crate) const OBJECT_NODE: u32 = u32::MAX;

/// One value a bulk load stages for [`PropertyIndex::load`], in 16 bytes: its slot and
/// the value (a string as a range of the stage's text buffer, so staging allocates
/// nothing per value), which the load replaces by the stored value id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StagedValue {
    /// The value's bits (a string: `start << 32 | len`), or, once loaded, the value id.
    payload: u64,
    pub(crate) slot: u32,
    kind: StagedKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StagedKind {
    /// A service object node (no value).
    Object,
    Bool,
    Int,
    /// An integer above `i64::MAX`.
    UInt,
    Float,
    Text,
    /// Loaded: the payload is the value id.
    Loaded,
}

impl StagedValue {
    /// Stages `value` (`None`: a service object node) of `slot`; a string is appended to
    /// `text`.
    pub(crate) fn new(value: Option<ScalarRef<'_>>, slot: u32, text: &mut String) -> Self {
        let (kind, payload) = match value {
            None => (StagedKind::Object, 0),
            Some(ScalarRef::Bool(b)) => (StagedKind::Bool, u64::from(b)),
            Some(ScalarRef::Number(n)) => match (n.is_integer(), n.as_i64(), n.as_u64()) {
                (true, Some(i), _) => (StagedKind::Int, i as u64),
                (true, None, Some(u)) => (StagedKind::UInt, u),
                _ => (StagedKind::Float, n.as_f64().to_bits()),
            },
            Some(ScalarRef::String(s)) => {
                let start = text.len() as u64;
                text.push_str(s);
                (StagedKind::Text, (start << 32) | s.len() as u64)
            }
        };
        StagedValue {
            payload,
            slot,
            kind,
        }
    }

    fn value<'t>(&self, text: &'t str) -> Option<ScalarRef<'t>> {
        let p = self.payload;
        Some(match self.kind {
            StagedKind::Object | StagedKind::Loaded => return None,
            StagedKind::Bool => ScalarRef::Bool(p != 0),
            StagedKind::Int => ScalarRef::Number(Number::from(p as i64)),
            StagedKind::UInt => ScalarRef::Number(Number::from(p)),
            StagedKind::Float => ScalarRef::Number(Number::from_f64(f64::from_bits(p))?),
            StagedKind::Text => ScalarRef::String(self.text(text)),
        })
    }

    /// A staged string (of [`StagedKind::Text`]).
    fn text<'t>(&self, text: &'t str) -> &'t str {
        let (start, len) = (
            (self.payload >> 32) as usize,
            (self.payload & 0xffff_ffff) as usize,
        );
        &text[start..start + len]
    }

    fn set_vid(&mut self, vid: u32) {
        self.payload = u64::from(vid);
        self.kind = StagedKind::Loaded;
    }

    /// The stored value id, once [`PropertyIndex::load`] has run.
    pub(crate) fn vid(&self) -> u32 {
        debug_assert_eq!(self.kind, StagedKind::Loaded);
        self.payload as u32
    }
}

/// The stored value ids of a few values a load met last, direct-mapped by the staged
/// value's bits: a property with few distinct values (most are) finds nearly every value
/// here, without hashing it or probing its table. A miss only costs the lookup it saves.
struct Recent {
    entries: [Option<(StagedValue, u32)>; Recent::SIZE],
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            entries: [None; Recent::SIZE],
        }
    }
}

impl Recent {
    const SIZE: usize = 64;

    /// Where `v` goes: from its bits, or a string's [`memo_key`].
    fn at(v: &StagedValue, text: &str) -> usize {
        let bits = match v.kind {
            StagedKind::Text => return (memo_key(v.text(text).as_bytes()) >> 58) as usize,
            kind => v.payload ^ kind as u64,
        };
        (bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize
    }

    /// The value id stored for a value equal to `v` and written alike.
    fn get(&self, v: &StagedValue, text: &str) -> Option<u32> {
        let (seen, vid) = self.entries[Self::at(v, text)]?;
        let same = seen.kind == v.kind
            && match v.kind {
                StagedKind::Text => same_str(seen.text(text), v.text(text)),
                _ => seen.payload == v.payload,
            };
        same.then_some(vid)
    }

    fn put(&mut self, v: StagedValue, vid: u32, text: &str) {
        self.entries[Self::at(&v, text)] = Some((v, vid));
    }
}

/// Set in a stored value id when that slot's number is written as a float (`1.0`).
pub(crate) const FLOAT_BIT: u32 = 1 << 31;

/// [`FLOAT_BIT`] if `v` is a number written as a float, else 0.
pub(crate) fn float_flag(v: &Scalar) -> u32 {
    float_bit(v.borrowed())
}

fn float_bit(v: ScalarRef<'_>) -> u32 {
    match v {
        ScalarRef::Number(n) if !n.is_integer() => FLOAT_BIT,
        _ => 0,
    }
}

/// Equal and written alike (`1` and `1.0` are equal but not the same).
pub(crate) fn same_repr(a: &Scalar, b: &Scalar) -> bool {
    a == b && float_flag(a) == float_flag(b)
}

/// An order-preserving 96-bit prefix of a value, as 64 bits and 32 more: `a < b`
/// implies `prefix(a) <= prefix(b)` and equal values have equal prefixes. Two bits of
/// type rank (booleans, numbers, strings: [`Scalar`]'s order), then the value: a number's
/// order-preserving `f64` bits, a string's first 11 bytes.
pub(crate) fn sort_prefix(v: &Scalar) -> (u64, u32) {
    let first = match v {
        Scalar::Bool(b) => u64::from(*b),
        Scalar::Number(n) => {
            // -0.0 == 0.0 in Scalar order: one prefix for both.
            let f = n.as_f64();
            let bits = if f == 0.0 { 0 } else { f.to_bits() };
            let ordered = if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            };
            (1 << 62) | (ordered >> 2)
        }
        Scalar::String(s) => {
            let mut first = [0u8; 8];
            let n = s.len().min(7);
            first[1..=n].copy_from_slice(&s.as_bytes()[..n]);
            (2 << 62) | (u64::from_be_bytes(first) << 6)
        }
    };
    let more = match v {
        Scalar::String(s) if s.len() > 7 => {
            let mut next = [0u8; 4];
            let n = (s.len() - 7).min(4);
            next[..n].copy_from_slice(&s.as_bytes()[7..7 + n]);
            u32::from_be_bytes(next)
        }
        _ => 0,
    };
    (first, more)
}

/// `id`'s entry in the value order.
fn sort_key(v: &Scalar, id: u32) -> SortKey {
    let (prefix, more) = sort_prefix(v);
    SortKey { prefix, more, id }
}

/// A property's value ids ordered by their values; the ids without slots are dead.
#[derive(Clone, Copy)]
struct ByValue<'a> {
    values: &'a [ValueEntry],
    /// No value is dead: a merge need not look (a cache miss an entry, in a merge of
    /// unique values, which are in no useful memory order).
    all_alive: bool,
}

impl<'a> ByValue<'a> {
    fn of(values: &'a [ValueEntry], dead: usize) -> Self {
        ByValue {
            values,
            all_alive: dead == 0,
        }
    }
}

impl RunOrder for ByValue<'_> {
    fn cmp(&self, a: u32, b: u32) -> std::cmp::Ordering {
        self.values[a as usize]
            .value
            .cmp(&self.values[b as usize].value)
    }

    fn alive(&self, id: u32) -> bool {
        self.all_alive || !matches!(self.values[id as usize].slots, Posting::Empty)
    }
}

/// One property's index: its distinct values (by value id), their order, and which slots
/// have the property at all.
///
/// Each distinct value is stored once, in `values`; [`VidTable`] finds it by hash and
/// [`SortedRuns`] keeps the ids in value order. A value whose last slot leaves is *dead*:
/// it leaves the hash table at once (so an equal value coming back gets a new id) and
/// stays in the order until a merge drops it and frees its id.
#[derive(Debug)]
pub(crate) struct PropertyIndex {
    pub(crate) kind: PropertyKind,
    pub(crate) name: Arc<str>,
    /// For well-known device properties: the table row (type checks).
    pub(crate) well_known: Option<&'static WellKnownProperty>,
    pub(crate) values: Vec<ValueEntry>,
    free: Vec<u32>,
    lookup: VidTable,
    order: SortedRuns,
    /// Values with slots (or, during a bulk load, about to get them).
    live: usize,
    /// Values without slots still in `order`.
    dead: usize,
    hasher: FastState,
    /// By value id: the same number in the other representation (`1` vs `1.0`), once
    /// some slot holds it that way (numbers are one index key but serialise as written).
    /// Rare, so kept out of [`ValueEntry`].
    others: FastMap<u32, Scalar>,
    pub(crate) exists: RoaringBitmap,
    /// Slot -> value id, built on the first [`PropertyIndex::filter_range`] and kept
    /// current by every write after it: 1 to 4 bytes a slot, only for the properties
    /// ranges are asked of.
    column: OnceLock<ValueColumn>,
}

impl PropertyIndex {
    pub(crate) fn new(
        kind: PropertyKind,
        name: Arc<str>,
        well_known: Option<&'static WellKnownProperty>,
    ) -> Self {
        PropertyIndex {
            kind,
            name,
            well_known,
            values: Vec::new(),
            free: Vec::new(),
            lookup: VidTable::default(),
            order: SortedRuns::default(),
            live: 0,
            dead: 0,
            hasher: FastState::default(),
            others: FastMap::default(),
            exists: RoaringBitmap::new(),
            column: OnceLock::new(),
        }
    }

    /// An empty index with the same name: what stands in the registry for an index a
    /// bulk load has moved to another thread (admission reads only the name).
    pub(crate) fn stand_in(&self) -> Self {
        PropertyIndex::new(self.kind, self.name.clone(), self.well_known)
    }

    /// Records `slot`'s value id (or [`OBJECT_NODE`]: none) in the column, if it is built.
    fn set_column(&mut self, slot: u32, vid: u32) {
        if let Some(column) = self.column.get_mut() {
            column.set(slot, (vid != OBJECT_NODE).then_some(vid & !FLOAT_BIT));
        }
    }

    fn build_column(&self) -> ValueColumn {
        let len = self.exists.max().map_or(0, |m| m as usize + 1);
        let mut column = ValueColumn::new(len, self.values.len().saturating_sub(1) as u32);
        for (vid, entry) in self.values.iter().enumerate() {
            if let Some(set) = entry.slots.as_set() {
                for slot in set.iter() {
                    column.set(slot, Some(vid as u32));
                }
            }
        }
        column
    }

    /// The ids of the values within the bounds, as a set to look column ids up in.
    fn wanted_ids(&self, lo: Bound<&Scalar>, hi: Bound<&Scalar>) -> IdBits {
        let mut wanted = IdBits::with_capacity(self.values.len());
        for id in self.range_ids(lo, hi) {
            wanted.insert(id);
        }
        wanted
    }

    /// The slots of `within` whose value lies within the bounds, found by looking each
    /// one up in the column (a few ns a slot) instead of intersecting every value's bitmap
    /// with `within`: the better plan when `within` is much smaller than the range.
    pub(crate) fn filter_range(
        &self,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
        within: &RoaringBitmap,
    ) -> RoaringBitmap {
        let column = self.column.get_or_init(|| self.build_column());
        let mut hits = Vec::new();
        column.select(within, &self.wanted_ids(lo, hi), &mut hits);
        RoaringBitmap::from_sorted_iter(hits).expect("a bitmap iterates in order")
    }

    /// `rows` grouped by value, in value order (rows without a scalar value left out),
    /// through the column: one lookup per row instead of one intersection per value.
    pub(crate) fn group_rows(&self, rows: &RoaringBitmap) -> Vec<(&Scalar, RoaringBitmap)> {
        let column = self.column.get_or_init(|| self.build_column());
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        column.ids(rows, |slot, vid| pairs.push((vid, slot)));
        // Stable: slots stay ascending within a value.
        pairs.sort_by_key(|&(vid, _)| vid);
        let mut groups: Vec<(&Scalar, RoaringBitmap)> = pairs
            .chunk_by(|a, b| a.0 == b.0)
            .map(|run| {
                let slots = RoaringBitmap::from_sorted_iter(run.iter().map(|&(_, s)| s))
                    .expect("slots ascend within a value");
                (&self.values[run[0].0 as usize].value, slots)
            })
            .collect();
        groups.sort_by(|a, b| a.0.cmp(b.0));
        groups
    }

    /// How many slots [`PropertyIndex::filter_range`] would return.
    pub(crate) fn count_range(
        &self,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
        within: &RoaringBitmap,
    ) -> u64 {
        let column = self.column.get_or_init(|| self.build_column());
        column.count(within, &self.wanted_ids(lo, hi))
    }

    fn hash32(&self, value: ScalarRef<'_>) -> u32 {
        (self.hasher.hash_one(value) >> 32) as u32
    }

    /// The id of a live value.
    fn find(&self, value: ScalarRef<'_>) -> Option<u32> {
        let values = &self.values;
        self.lookup.find(self.hash32(value), |id| {
            values[id as usize].value.borrowed() == value
        })
    }

    /// The value's id, allocated (with no slots yet, the value from `owned`) if the value
    /// is new; and whether it is new. Records `value`'s other representation when it
    /// differs.
    fn intern(&mut self, value: ScalarRef<'_>, owned: impl FnOnce() -> Scalar) -> (u32, bool) {
        self.intern_hashed(self.hash32(value), value, owned)
    }

    /// [`PropertyIndex::intern`] with the value's hash already taken.
    fn intern_hashed(
        &mut self,
        hash: u32,
        value: ScalarRef<'_>,
        owned: impl FnOnce() -> Scalar,
    ) -> (u32, bool) {
        let values = &self.values;
        if let Some(vid) = self
            .lookup
            .find(hash, |id| values[id as usize].value.borrowed() == value)
        {
            if float_flag(&self.values[vid as usize].value) != float_bit(value) {
                self.others.entry(vid).or_insert_with(owned);
            }
            return (vid, false);
        }
        let entry = ValueEntry {
            value: owned(),
            slots: Posting::Empty,
        };
        let vid = match self.free.pop() {
            Some(vid) => {
                self.values[vid as usize] = entry;
                vid
            }
            None => {
                self.values.push(entry);
                (self.values.len() - 1) as u32
            }
        };
        self.lookup.insert(hash, vid);
        self.live += 1;
        (vid, true)
    }

    /// Adds `slot` under `value`; returns the stored value id (with [`FLOAT_BIT`] set
    /// when `value` is written as a float).
    pub(crate) fn insert(&mut self, value: &Scalar, slot: u32) -> u32 {
        self.insert_with(value.borrowed(), || value.clone(), slot)
    }

    /// [`PropertyIndex::insert`] for a borrowed value (copied if it is new).
    pub(crate) fn insert_ref(&mut self, value: ScalarRef<'_>, slot: u32) -> u32 {
        self.insert_with(value, || value.to_scalar(), slot)
    }

    fn insert_with(
        &mut self,
        value: ScalarRef<'_>,
        owned: impl FnOnce() -> Scalar,
        slot: u32,
    ) -> u32 {
        add(&mut self.exists, slot);
        let (vid, new) = self.intern(value, owned);
        self.values[vid as usize].slots.insert(slot);
        self.set_column(slot, vid);
        if new {
            self.order_id(vid);
        }
        vid | float_bit(value)
    }

    /// Indexes a bulk load's staged values (see [`StagedValue`]): interns them all, then
    /// adds their slots, then puts the new values in order as one sorted run. One property's
    /// work touches only its own structures, so loads run properties on several threads.
    pub(crate) fn load(&mut self, staged: &mut [StagedValue], text: &str) {
        let mut new_ids = Vec::new();
        let mut recent = Recent::default();
        for s in staged.iter_mut() {
            let Some(value) = s.value(text) else {
                s.set_vid(OBJECT_NODE);
                continue;
            };
            let vid = match recent.get(s, text) {
                Some(vid) => vid,
                None => {
                    let (vid, new) = self.intern(value, || value.to_scalar());
                    if new {
                        new_ids.push(vid);
                    }
                    let vid = vid | float_bit(value);
                    recent.put(*s, vid, text);
                    vid
                }
            };
            s.set_vid(vid);
        }
        // Slots ascend within a batch (unless removed slots are reused), so they are
        // appended: `exists` in one pass; a value new to the index takes its first slot
        // as is; the other slots are grouped by value and appended value by value.
        let mut slots: Vec<u32> = staged.iter().map(|s| s.slot).collect();
        let ascending = slots.is_sorted();
        if !ascending {
            slots.sort_unstable();
        }
        add_sorted(&mut self.exists, &slots);
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for s in staged.iter().filter(|s| s.vid() != OBJECT_NODE) {
            let vid = s.vid() & !FLOAT_BIT;
            let posting = &mut self.values[vid as usize].slots;
            match posting {
                Posting::Empty => *posting = Posting::One(s.slot),
                _ => pairs.push((vid, s.slot)),
            }
        }
        let pairs = group_by_value(pairs, self.values.len());
        for group in pairs.chunk_by(|a, b| a.0 == b.0) {
            slots.clear();
            slots.extend(group.iter().map(|&(_, slot)| slot));
            // A group keeps the batch's order, which reused slots can break.
            if !ascending {
                slots.sort_unstable();
            }
            self.values[group[0].0 as usize].slots.extend(&slots);
        }
        if self.column.get().is_some() {
            for s in staged.iter() {
                self.set_column(s.slot, s.vid());
            }
        }
        if !new_ids.is_empty() {
            // Merged as they come (on the indexing thread): the memory each merge frees
            // is taken again by the rest of the load, where one merge at the end would
            // leave it all unused.
            let keys = self.sort_keys(new_ids);
            let mut dropped = Vec::new();
            let by = ByValue::of(&self.values, self.dead);
            self.order.insert_batch(keys, &by, &mut dropped);
            self.release(dropped);
        }
    }

    fn sort_keys(&self, ids: Vec<u32>) -> Vec<SortKey> {
        ids.into_iter()
            .map(|id| sort_key(&self.values[id as usize].value, id))
            .collect()
    }

    fn order_id(&mut self, id: u32) {
        let by = ByValue::of(&self.values, self.dead);
        let key = sort_key(&self.values[id as usize].value, id);
        let mut dropped = Vec::new();
        self.order.insert(key, &by, &mut dropped);
        self.release(dropped);
    }

    /// Frees the ids of dead values a merge dropped from the order.
    fn release(&mut self, dropped: Vec<u32>) {
        for id in dropped {
            self.values[id as usize].value = Scalar::Bool(false);
            self.free.push(id);
            self.dead -= 1;
        }
    }

    /// Marks `slot` as having the property with an object value (no value entry).
    pub(crate) fn insert_object(&mut self, slot: u32) {
        add(&mut self.exists, slot);
    }

    /// Removes `slot` from value `vid` (or from the object node) and from `exists`.
    pub(crate) fn remove(&mut self, vid: u32, slot: u32) {
        self.exists.remove(slot);
        self.set_column(slot, OBJECT_NODE);
        if vid == OBJECT_NODE {
            return;
        }
        let vid = vid & !FLOAT_BIT;
        if self.values[vid as usize].slots.remove(slot) {
            let hash = self.hash32(self.values[vid as usize].value.borrowed());
            self.lookup.remove(hash, vid);
            self.others.remove(&vid);
            self.live -= 1;
            self.dead += 1;
            if self.dead > 32 && self.dead * 4 > self.live {
                let mut dropped = Vec::new();
                let by = ByValue::of(&self.values, self.dead);
                self.order.compact(&by, &mut dropped);
                self.release(dropped);
            }
        }
    }

    /// The value behind a stored value id, written as that slot wrote it.
    pub(crate) fn value(&self, vid: u32) -> &Scalar {
        let entry = &self.values[(vid & !FLOAT_BIT) as usize];
        if float_flag(&entry.value) == vid & FLOAT_BIT {
            &entry.value
        } else {
            self.others.get(&(vid & !FLOAT_BIT)).unwrap_or(&entry.value)
        }
    }

    pub(crate) fn slots_of(&self, value: &Scalar) -> Option<SlotSet<'_>> {
        let vid = self.find(value.borrowed())?;
        self.values[vid as usize].slots.as_set()
    }

    /// How many distinct values have slots.
    pub(crate) fn distinct(&self) -> usize {
        self.live
    }

    pub(crate) fn range<'a>(
        &'a self,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
    ) -> impl DoubleEndedIterator<Item = (&'a Scalar, SlotSet<'a>)> + use<'a> {
        let values = &self.values;
        self.range_ids(lo, hi).map(move |id| {
            let entry = &values[id as usize];
            let set = entry.slots.as_set().expect("range_ids yields live values");
            (&entry.value, set)
        })
    }

    /// The ids of the live values within the bounds, in value order.
    fn range_ids<'a>(
        &'a self,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
    ) -> impl DoubleEndedIterator<Item = u32> + use<'a> {
        let values = &self.values;
        // `k < v` and `k <= v`, deciding on the prefix when it differs.
        let below = |k: SortKey, v: &Scalar, p: (u64, u32), or_equal: bool| match (k.prefix, k.more)
            .cmp(&p)
        {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => {
                let o = values[k.id as usize].value.cmp(v);
                o.is_lt() || (or_equal && o.is_eq())
            }
        };
        let bound = |b: Bound<&Scalar>| match b {
            Bound::Included(v) => Some((v.clone(), sort_prefix(v), true)),
            Bound::Excluded(v) => Some((v.clone(), sort_prefix(v), false)),
            Bound::Unbounded => None,
        };
        let (lo, hi) = (bound(lo), bound(hi));
        let merge = self.order.range(
            |k| {
                lo.as_ref()
                    .is_some_and(|(v, p, incl)| below(k, v, *p, !incl))
            },
            |k| {
                hi.as_ref()
                    .is_none_or(|(v, p, incl)| below(k, v, *p, *incl))
            },
            ByValue {
                values,
                all_alive: false,
            },
        );
        merge.filter(move |&id| !matches!(values[id as usize].slots, Posting::Empty))
    }

    pub(crate) fn free_ids(&self) -> &[u32] {
        &self.free
    }

    /// Every id in the order (dead ones too), in value order.
    pub(crate) fn ordered_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.order
            .range(|_| false, |_| true, ByValue::of(&self.values, self.dead))
    }

    /// How many values the hash table holds, and whether it finds every live value at
    /// its own id (for `validate`).
    pub(crate) fn lookup_consistent(&self) -> Result<usize, String> {
        for (hash, id) in self.lookup.iter() {
            let entry = self
                .values
                .get(id as usize)
                .ok_or_else(|| format!("hash table holds unknown value id {id}"))?;
            if hash != self.hash32(entry.value.borrowed())
                || self.find(entry.value.borrowed()) != Some(id)
            {
                return Err(format!("hash table misplaces value {}", entry.value));
            }
        }
        Ok(self.lookup.len())
    }

    /// How many dead values wait in the order.
    pub(crate) fn dead(&self) -> usize {
        self.dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postings_grow_and_shrink() {
        let mut p = PropertyIndex::new(PropertyKind::Service, Arc::from("x"), None);
        let a = p.insert(&Scalar::from(1), 5);
        let b = p.insert(&Scalar::from(1.0), 7);
        assert_eq!(a, b & !FLOAT_BIT);
        assert_eq!(b & FLOAT_BIT, FLOAT_BIT);
        assert_eq!(serde_json::to_string(p.value(a)).unwrap(), "1");
        assert_eq!(serde_json::to_string(p.value(b)).unwrap(), "1.0");
        assert_eq!(p.slots_of(&Scalar::from(1)).unwrap().len(), 2);
        p.remove(a, 5);
        assert!(matches!(
            p.slots_of(&Scalar::from(1)),
            Some(SlotSet::One(7))
        ));
        p.remove(a, 7);
        assert!(p.slots_of(&Scalar::from(1)).is_none());
        assert_eq!(
            (p.distinct(), p.dead()),
            (0, 1),
            "dead until a merge drops it"
        );
        assert_eq!(p.range(Bound::Unbounded, Bound::Unbounded).count(), 0);
        // An equal value coming back is a new value.
        let c = p.insert(&Scalar::from(1), 1);
        assert_ne!(c, a);
        assert!(p.exists.contains(1) && p.exists.len() == 1);
        // Enough dead values compact the order and free their ids for reuse.
        for i in 0..100u32 {
            let vid = p.insert(&Scalar::from(format!("v{i}").as_str()), 100 + i);
            p.remove(vid, 100 + i);
        }
        assert!(p.dead() * 4 <= p.distinct() + 32 * 4, "compacted");
        assert!(!p.free_ids().is_empty());
        let reused = p.insert(&Scalar::from("again"), 2);
        assert!(p.free_ids().len() < 100 && reused < 102, "ids are reused");
        assert_eq!(p.ordered_ids().count(), p.distinct() + p.dead());
    }

    /// A batch whose slots do not ascend (removed slots reused) adds each value's slots in
    /// order: `[1, 5, 2, 4]` is not the range 1..=4 (found by `index_agrees_with_a_model`).
    #[test]
    fn a_batch_of_reused_slots_out_of_order_is_indexed_exactly() {
        for batch in [vec![10, 1], vec![1, 5, 2, 4], vec![9, 8, 7]] {
            let mut p = PropertyIndex::new(PropertyKind::Service, Arc::from("x"), None);
            let value = Scalar::from("v19");
            p.insert(&value, 0);
            let mut text = String::new();
            let mut staged: Vec<StagedValue> = batch
                .iter()
                .map(|&slot| StagedValue::new(Some(value.borrowed()), slot, &mut text))
                .collect();
            p.load(&mut staged, &text);
            let mut want = batch.clone();
            want.push(0);
            want.sort_unstable();
            let got: Vec<u32> = p.slots_of(&value).unwrap().iter().collect();
            assert_eq!(got, want, "batch {batch:?}");
        }
    }

    proptest::proptest! {
        /// Random single and batched inserts and removals over many distinct values (so
        /// values die, runs merge and the order compacts) agree with a map of slot -> value.
        #[test]
        fn index_agrees_with_a_model(
            ops in proptest::collection::vec(
                (0u8..3, 0u32..60, 0i64..300, proptest::bool::ANY), 1..400)
        ) {
            use std::collections::BTreeMap;
            let mut p = PropertyIndex::new(PropertyKind::Service, Arc::from("x"), None);
            let mut stored: BTreeMap<u32, u32> = BTreeMap::new(); // slot -> vid
            let mut model: BTreeMap<u32, Scalar> = BTreeMap::new(); // slot -> value
            let mut pending: Vec<StagedValue> = Vec::new();
            let mut text = String::new();
            let load = |p: &mut PropertyIndex, pending: &mut Vec<StagedValue>,
                        text: &mut String, stored: &mut BTreeMap<u32, u32>| {
                p.load(pending, text);
                for s in pending.drain(..) {
                    stored.insert(s.slot, s.vid());
                }
                text.clear();
            };
            for (kind, slot, n, as_string) in ops {
                let value = if as_string {
                    Scalar::from(format!("v{n}").as_str())
                } else {
                    Scalar::from(n)
                };
                let busy = model.contains_key(&slot);
                match kind {
                    0 if !busy => {
                        load(&mut p, &mut pending, &mut text, &mut stored);
                        stored.insert(slot, p.insert(&value, slot));
                        model.insert(slot, value);
                    }
                    1 if !busy => {
                        pending.push(StagedValue::new(Some(value.borrowed()), slot, &mut text));
                        model.insert(slot, value);
                    }
                    _ => {
                        load(&mut p, &mut pending, &mut text, &mut stored);
                        if let Some(vid) = stored.remove(&slot) {
                            p.remove(vid, slot);
                            model.remove(&slot);
                        }
                    }
                }
            }
            load(&mut p, &mut pending, &mut text, &mut stored);
            let mut want: BTreeMap<Scalar, Vec<u32>> = BTreeMap::new();
            for (slot, v) in &model {
                want.entry(v.clone()).or_default().push(*slot);
            }
            let got: Vec<(Scalar, Vec<u32>)> = p
                .range(Bound::Unbounded, Bound::Unbounded)
                .map(|(v, s)| (v.clone(), s.iter().collect()))
                .collect();
            let want: Vec<(Scalar, Vec<u32>)> = want.into_iter().collect();
            proptest::prop_assert_eq!(&got, &want);
            for (v, slots) in &want {
                let set = p.slots_of(v).map(|s| s.iter().collect::<Vec<_>>());
                proptest::prop_assert_eq!(set.as_ref(), Some(slots));
            }
            for (slot, vid) in &stored {
                proptest::prop_assert_eq!(p.value(*vid), &model[slot]);
            }
            proptest::prop_assert_eq!(p.distinct(), want.len());
            proptest::prop_assert_eq!(p.lookup_consistent(), Ok(want.len()));
            proptest::prop_assert_eq!(p.ordered_ids().count(), p.distinct() + p.dead());
            proptest::prop_assert!(p.dead() <= 32 || p.dead() * 4 <= p.distinct());
            let mut exists: Vec<u32> = model.keys().copied().collect();
            exists.sort_unstable();
            proptest::prop_assert_eq!(p.exists.iter().collect::<Vec<_>>(), exists);
        }
    }

    #[test]
    fn prefixes_keep_the_order() {
        let mut vals: Vec<Scalar> = vec![
            Scalar::from(false),
            Scalar::from(true),
            Scalar::from(-1.5),
            Scalar::from(-0.0),
            Scalar::from(0),
            Scalar::from(1),
            Scalar::from(1.0),
            Scalar::from(9_007_199_254_740_993i64),
            Scalar::from(9_007_199_254_740_992.0),
            Scalar::from(i64::MAX),
            Scalar::from(""),
            Scalar::from("a"),
            Scalar::from("a\0"),
            Scalar::from("abcdefg"),
            Scalar::from("abcdefgh"),
            Scalar::from("abcdefgi"),
            Scalar::from("abcdefgh\0"),
            Scalar::from("abcdefghijk"),
            Scalar::from("abcdefghijkl"),
            Scalar::from("abcdefghijl"),
            Scalar::from("2016-04-29"),
            Scalar::from("2016-04-30"),
            Scalar::from("\u{ff}"),
        ];
        vals.sort();
        for a in &vals {
            for b in &vals {
                let (pa, pb) = (sort_prefix(a), sort_prefix(b));
                match a.cmp(b) {
                    std::cmp::Ordering::Less => assert!(pa <= pb, "{a} < {b}"),
                    std::cmp::Ordering::Equal => assert_eq!(pa, pb, "{a} == {b}"),
                    std::cmp::Ordering::Greater => assert!(pa >= pb, "{a} > {b}"),
                }
            }
        }
    }

    #[test]
    fn inverted_ranges_are_empty() {
        let mut p = PropertyIndex::new(PropertyKind::Service, Arc::from("x"), None);
        for i in 0..5 {
            p.insert(&Scalar::from(i), i as u32);
        }
        let two = Scalar::from(2);
        let one = Scalar::from(1);
        assert_eq!(
            p.range(Bound::Excluded(&two), Bound::Excluded(&two))
                .count(),
            0
        );
        assert_eq!(
            p.range(Bound::Included(&two), Bound::Included(&one))
                .count(),
            0
        );
        let got: Vec<_> = p
            .range(Bound::Excluded(&one), Bound::Unbounded)
            .map(|(v, _)| v.clone())
            .collect();
        assert_eq!(got, [2, 3, 4].map(Scalar::from));
    }
}
