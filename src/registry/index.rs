//! Value indexes: one per property, mapping each distinct value to the slots holding it.

use crate::twin::{PropertyKind, Scalar, WellKnownProperty};
use roaring::RoaringBitmap;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

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

/// Set in a stored value id when that slot's number is written as a float (`1.0`).
pub(crate) const FLOAT_BIT: u32 = 1 << 31;

/// [`FLOAT_BIT`] if `v` is a number written as a float, else 0.
pub(crate) fn float_flag(v: &Scalar) -> u32 {
    match v {
        Scalar::Number(n) if !n.is_integer() => FLOAT_BIT,
        _ => 0,
    }
}

/// Equal and written alike (`1` and `1.0` are equal but not the same).
pub(crate) fn same_repr(a: &Scalar, b: &Scalar) -> bool {
    a == b && float_flag(a) == float_flag(b)
}

/// One property's index: its distinct values (by value id), their order, and which slots
/// have the property at all.
#[derive(Debug)]
pub(crate) struct PropertyIndex {
    pub(crate) kind: PropertyKind,
    pub(crate) name: Arc<str>,
    /// For well-known device properties: the table row (type checks).
    pub(crate) well_known: Option<&'static WellKnownProperty>,
    pub(crate) values: Vec<ValueEntry>,
    free: Vec<u32>,
    pub(crate) order: BTreeMap<Scalar, u32>,
    /// By value id: the same number in the other representation (`1` vs `1.0`), once
    /// some slot holds it that way (numbers are one index key but serialise as written).
    /// Rare, so kept out of [`ValueEntry`].
    others: HashMap<u32, Scalar>,
    pub(crate) exists: RoaringBitmap,
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
            order: BTreeMap::new(),
            others: HashMap::new(),
            exists: RoaringBitmap::new(),
        }
    }

    /// Adds `slot` under `value`; returns the stored value id (with [`FLOAT_BIT`] set
    /// when `value` is written as a float).
    pub(crate) fn insert(&mut self, value: &Scalar, slot: u32) -> u32 {
        add(&mut self.exists, slot);
        // One descent of the ordered map whether the value is new or not.
        let vid = match self.order.entry(value.clone()) {
            std::collections::btree_map::Entry::Occupied(o) => {
                let vid = *o.get();
                let entry = &self.values[vid as usize];
                if float_flag(&entry.value) != float_flag(value) {
                    self.others.entry(vid).or_insert_with(|| value.clone());
                }
                vid
            }
            std::collections::btree_map::Entry::Vacant(slot_in_order) => {
                let entry = ValueEntry {
                    value: value.clone(),
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
                slot_in_order.insert(vid);
                vid
            }
        };
        self.values[vid as usize].slots.insert(slot);
        vid | float_flag(value)
    }

    /// Marks `slot` as having the property with an object value (no value entry).
    pub(crate) fn insert_object(&mut self, slot: u32) {
        add(&mut self.exists, slot);
    }

    /// Removes `slot` from value `vid` (or from the object node) and from `exists`.
    pub(crate) fn remove(&mut self, vid: u32, slot: u32) {
        self.exists.remove(slot);
        if vid == OBJECT_NODE {
            return;
        }
        let vid = vid & !FLOAT_BIT;
        let entry = &mut self.values[vid as usize];
        if entry.slots.remove(slot) {
            self.order.remove(&entry.value);
            entry.value = Scalar::Bool(false);
            self.others.remove(&vid);
            self.free.push(vid);
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
        let vid = *self.order.get(value)?;
        self.values[vid as usize].slots.as_set()
    }

    pub(crate) fn range<'a>(
        &'a self,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
    ) -> impl DoubleEndedIterator<Item = (&'a Scalar, SlotSet<'a>)> + use<'a> {
        // BTreeMap::range panics on an inverted or empty-excluded range; answer empty.
        let valid = match (lo, hi) {
            (Bound::Included(a), Bound::Included(b)) => a <= b,
            (Bound::Included(a), Bound::Excluded(b))
            | (Bound::Excluded(a), Bound::Included(b))
            | (Bound::Excluded(a), Bound::Excluded(b)) => a < b,
            _ => true,
        };
        let range = valid.then(|| self.order.range::<Scalar, _>((lo, hi)));
        range
            .into_iter()
            .flatten()
            .filter_map(move |(value, &vid)| {
                self.values[vid as usize]
                    .slots
                    .as_set()
                    .map(|set| (value, set))
            })
    }

    pub(crate) fn free_ids(&self) -> &[u32] {
        &self.free
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
        assert_eq!(p.free_ids(), &[a]);
        let c = p.insert(&Scalar::from("s"), 1);
        assert_eq!(c, a, "value ids are reused");
        assert!(p.exists.contains(1) && p.exists.len() == 1);
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
