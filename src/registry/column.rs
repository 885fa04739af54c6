//! A property's value ids by slot, as narrow as its ids allow.
//!
//! Range steps over a few slots look each slot's value id up here instead of walking
//! every value in the range. A property with up to 254 value ids (battery level, firmware
//! version, region) fits a byte per slot, so a million slots take 1 MiB and stay in
//! cache; the column widens to 16 or 32 bits the first time an id needs it.

use roaring::RoaringBitmap;

/// A set of ids (slots, value ids) as one bit each up to the largest: membership is
/// one load, where a bitmap searches.
#[derive(Debug, Default)]
pub(crate) struct IdBits(Vec<u64>);

impl IdBits {
    /// An empty set with room for ids below `n`.
    pub(crate) fn with_capacity(n: usize) -> Self {
        IdBits(vec![0; n.div_ceil(64)])
    }

    /// The set of a bitmap's members.
    pub(crate) fn of(bitmap: &RoaringBitmap) -> Self {
        let mut bits = IdBits::with_capacity(bitmap.max().map_or(0, |m| m as usize + 1));
        for id in bitmap {
            bits.insert(id);
        }
        bits
    }

    /// Adds `id`, growing as needed.
    pub(crate) fn insert(&mut self, id: u32) {
        let word = id as usize / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (id % 64);
    }

    /// Whether `id` is in the set.
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.bit(id) != 0
    }

    /// `id`'s bit: 1 when it is in the set, else 0 (no branch on the answer).
    pub(crate) fn bit(&self, id: u32) -> u8 {
        let word = self.0.get(id as usize / 64).copied().unwrap_or(0);
        ((word >> (id % 64)) & 1) as u8
    }
}

/// Slot -> value id, `None` where the slot has no scalar value.
#[derive(Debug)]
pub(crate) enum ValueColumn {
    /// Ids below `u8::MAX` (`u8::MAX` is "none").
    Narrow(Vec<u8>),
    /// Ids below `u16::MAX` (`u16::MAX` is "none").
    Medium(Vec<u16>),
    /// Any id (`u32::MAX` is "none").
    Wide(Vec<u32>),
}

impl ValueColumn {
    /// A column for `len` slots, none of them set, wide enough for ids below `max_id + 1`.
    pub(crate) fn new(len: usize, max_id: u32) -> Self {
        if max_id < u32::from(u8::MAX) {
            ValueColumn::Narrow(vec![u8::MAX; len])
        } else if max_id < u32::from(u16::MAX) {
            ValueColumn::Medium(vec![u16::MAX; len])
        } else {
            ValueColumn::Wide(vec![u32::MAX; len])
        }
    }

    /// The value id of `slot`.
    #[cfg(test)]
    pub(crate) fn get(&self, slot: u32) -> Option<u32> {
        let at = slot as usize;
        match self {
            ValueColumn::Narrow(v) => v.get(at).filter(|&&x| x != u8::MAX).map(|&x| u32::from(x)),
            ValueColumn::Medium(v) => v.get(at).filter(|&&x| x != u16::MAX).map(|&x| u32::from(x)),
            ValueColumn::Wide(v) => v.get(at).copied().filter(|&x| x != u32::MAX),
        }
    }

    /// Sets (or with `None` clears) `slot`'s value id, growing or widening as needed.
    pub(crate) fn set(&mut self, slot: u32, id: Option<u32>) {
        let at = slot as usize;
        let fits = match (&*self, id) {
            (_, None) => true,
            (ValueColumn::Narrow(_), Some(id)) => id < u32::from(u8::MAX),
            (ValueColumn::Medium(_), Some(id)) => id < u32::from(u16::MAX),
            (ValueColumn::Wide(_), Some(id)) => id < u32::MAX,
        };
        if !fits {
            self.widen();
            return self.set(slot, id);
        }
        match self {
            ValueColumn::Narrow(v) => {
                if v.len() <= at {
                    v.resize(at + 1, u8::MAX);
                }
                v[at] = id.map_or(u8::MAX, |id| id as u8);
            }
            ValueColumn::Medium(v) => {
                if v.len() <= at {
                    v.resize(at + 1, u16::MAX);
                }
                v[at] = id.map_or(u16::MAX, |id| id as u16);
            }
            ValueColumn::Wide(v) => {
                if v.len() <= at {
                    v.resize(at + 1, u32::MAX);
                }
                v[at] = id.unwrap_or(u32::MAX);
            }
        }
    }

    fn widen(&mut self) {
        *self = match self {
            ValueColumn::Narrow(v) => ValueColumn::Medium(
                v.iter()
                    .map(|&x| if x == u8::MAX { u16::MAX } else { u16::from(x) })
                    .collect(),
            ),
            ValueColumn::Medium(v) => ValueColumn::Wide(
                v.iter()
                    .map(|&x| {
                        if x == u16::MAX {
                            u32::MAX
                        } else {
                            u32::from(x)
                        }
                    })
                    .collect(),
            ),
            ValueColumn::Wide(_) => unreachable!("a wide column fits every id"),
        };
    }

    /// Calls `each(slot, id)` for every slot of `slots` that has a value id, in slot order.
    pub(crate) fn ids(&self, slots: &RoaringBitmap, mut each: impl FnMut(u32, u32)) {
        self.batches(slots, |batch| match self {
            ValueColumn::Narrow(v) => batch.iter().for_each(|&s| {
                if let Some(&x) = v.get(s as usize).filter(|&&x| x != u8::MAX) {
                    each(s, u32::from(x))
                }
            }),
            ValueColumn::Medium(v) => batch.iter().for_each(|&s| {
                if let Some(&x) = v.get(s as usize).filter(|&&x| x != u16::MAX) {
                    each(s, u32::from(x))
                }
            }),
            ValueColumn::Wide(v) => batch.iter().for_each(|&s| {
                if let Some(&x) = v.get(s as usize).filter(|&&x| x != u32::MAX) {
                    each(s, x)
                }
            }),
        });
    }

    /// How many slots of `slots` have a value id in `wanted`: [`ValueColumn::select`]'s
    /// answer, counted without building it.
    pub(crate) fn count(&self, slots: &RoaringBitmap, wanted: &IdBits) -> u64 {
        let mut n = 0u64;
        self.batches(slots, |batch| {
            n += match self {
                ValueColumn::Narrow(v) => count_in(batch, v, u8::MAX, wanted),
                ValueColumn::Medium(v) => count_in(batch, v, u16::MAX, wanted),
                ValueColumn::Wide(v) => count_in(batch, v, u32::MAX, wanted),
            };
        });
        n
    }

    /// Appends to `out`, in order, each slot of `slots` whose value id is in `wanted`.
    pub(crate) fn select(&self, slots: &RoaringBitmap, wanted: &IdBits, out: &mut Vec<u32>) {
        self.batches(slots, |batch| match self {
            ValueColumn::Narrow(v) => select_in(batch, v, u8::MAX, wanted, out),
            ValueColumn::Medium(v) => select_in(batch, v, u16::MAX, wanted, out),
            ValueColumn::Wide(v) => select_in(batch, v, u32::MAX, wanted, out),
        });
    }

    /// Calls `each` with the slots of `slots` a buffer at a time: far cheaper than one by
    /// one.
    fn batches(&self, slots: &RoaringBitmap, mut each: impl FnMut(&[u32])) {
        let mut buf = [0u32; 256];
        let mut it = slots.iter();
        loop {
            let batch = it.next_many(&mut buf);
            if batch.is_empty() {
                return;
            }
            each(batch);
        }
    }
}

// A range keeps a fair share of the slots it scans, so a branch on each slot's answer
// would be mispredicted often: the two loops below add each slot's bit instead (a count,
// or how far the output moves on). A slot past the column's end, or without a value,
// reads the `none` id, which is never selected.

/// Whether `id` (read from a column whose "no value" id is `none`) is in `wanted`, as 0
/// or 1.
fn selected(id: u32, none: u32, wanted: &IdBits) -> usize {
    usize::from(wanted.bit(id) & u8::from(id != none))
}

/// How many of `slots` hold, in `ids`, an id in `wanted`.
fn count_in<T: Copy + Into<u32>>(slots: &[u32], ids: &[T], none: T, wanted: &IdBits) -> u64 {
    let none: u32 = none.into();
    slots
        .iter()
        .map(|&s| {
            selected(
                ids.get(s as usize).map_or(none, |&x| x.into()),
                none,
                wanted,
            ) as u64
        })
        .sum()
}

/// Appends to `out` those of `slots` whose id in `ids` is in `wanted`.
fn select_in<T: Copy + Into<u32>>(
    slots: &[u32],
    ids: &[T],
    none: T,
    wanted: &IdBits,
    out: &mut Vec<u32>,
) {
    let none: u32 = none.into();
    let mut at = out.len();
    out.resize(at + slots.len(), 0);
    for &s in slots {
        // Written whatever the answer; kept only when `at` moves past it.
        out[at] = s;
        at += selected(
            ids.get(s as usize).map_or(none, |&x| x.into()),
            none,
            wanted,
        );
    }
    out.truncate(at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widens_and_keeps_ids() {
        let mut c = ValueColumn::new(4, 3);
        assert!(matches!(c, ValueColumn::Narrow(_)));
        c.set(1, Some(7));
        c.set(9, Some(254));
        assert_eq!(
            (c.get(1), c.get(9), c.get(0), c.get(100)),
            (Some(7), Some(254), None, None)
        );
        c.set(2, Some(255));
        assert!(matches!(c, ValueColumn::Medium(_)));
        c.set(3, Some(70_000));
        assert!(matches!(c, ValueColumn::Wide(_)));
        assert_eq!(
            (0..10).map(|s| c.get(s)).collect::<Vec<_>>(),
            [
                None,
                Some(7),
                Some(255),
                Some(70_000),
                None,
                None,
                None,
                None,
                None,
                Some(254)
            ]
        );
        c.set(1, None);
        assert_eq!(c.get(1), None);
        let mut hits = Vec::new();
        let mut wanted = IdBits::default();
        for id in [254, 70_000] {
            wanted.insert(id);
        }
        c.select(&(0..20).collect(), &wanted, &mut hits);
        assert_eq!(hits, [3, 9]);
        assert_eq!(c.count(&(0..20).collect(), &wanted), 2);
        // A slot past the column's end, and a "none" id even when `wanted` holds it.
        wanted.insert(u32::from(u16::MAX));
        let mut medium = ValueColumn::new(4, 300);
        medium.set(0, Some(300));
        let past = [0, 1, 2, 3, 4, 100].into_iter().collect();
        wanted.insert(300);
        medium.select(&past, &wanted, &mut hits);
        assert_eq!(hits, [3, 9, 0]);
        assert_eq!(medium.count(&past, &wanted), 1);
    }
}
