//! A hash table from values to value ids that stores only ids.
//!
//! A property's distinct values live once, in its value list; this table finds a value's
//! id by hash without storing the value again. Each bucket is one `u64`: the upper 32
//! bits of the value's hash and the id plus one (0 is an empty bucket). Linear probing
//! with backward-shift deletion (no tombstones); the bucket index comes from the stored
//! hash bits, so growing never rehashes a value. A lookup compares the stored hash bits
//! first and touches the value only when they match.
//!
//! Beside the buckets, one bit each says whether a bucket is taken: 1/64 of the table's
//! size, so it stays in cache when the buckets (a million ids: 16 MiB) do not. Most
//! lookups of an absent key (every new device id, every new value of a unique property)
//! end on that bit without reading a bucket, and most inserts then write their bucket
//! without reading it: a store, which the processor does not wait for, instead of a
//! cache miss it does wait for.

/// Buckets from which a table is large: 256 KiB of them.
const LARGE: usize = 1 << 15;

/// Value id -> bucket, keyed by the caller's 32-bit hash of the value.
#[derive(Debug, Default)]
pub(crate) struct VidTable {
    buckets: Vec<u64>,
    /// Bit `i % 64` of word `i / 64`: bucket `i` is taken.
    taken: Vec<u64>,
    len: usize,
}

fn pack(hash: u32, id: u32) -> u64 {
    (u64::from(hash) << 32) | (u64::from(id) + 1)
}

impl VidTable {
    /// How many ids are stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    fn is_taken(&self, i: usize) -> bool {
        self.taken[i / 64] & (1 << (i % 64)) != 0
    }

    fn set_taken(&mut self, i: usize, taken: bool) {
        let (word, bit) = (&mut self.taken[i / 64], 1u64 << (i % 64));
        if taken {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    /// The id whose hash is `hash` and for which `is_it(id)` holds.
    pub(crate) fn find(&self, hash: u32, mut is_it: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        while self.is_taken(i) {
            let b = self.buckets[i];
            if (b >> 32) as u32 == hash {
                let id = (b as u32) - 1;
                if is_it(id) {
                    return Some(id);
                }
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Whether the buckets are too many to stay in the caches (so that a batch of
    /// lookups is better warmed first, see [`VidTable::warm`]).
    pub(crate) fn is_large(&self) -> bool {
        self.buckets.len() >= LARGE
    }

    /// Reads the home bucket of each hash that is taken, and through `touch` what the
    /// caller keeps for an id found there under the same hash, and discards them. The
    /// reads are independent, so the processor has many cache misses in flight at once,
    /// where the lookups that follow would take them one after another (each waits on
    /// its bucket to decide what to do): run over a chunk of hashes first, it leaves
    /// their buckets and values in cache. Worth it for a large table
    /// ([`VidTable::is_large`]); a small one is warm already.
    pub(crate) fn warm(&self, hashes: &[u32], touch: impl Fn(u32) -> u64) {
        debug_assert!(self.is_large(), "the caller warms large tables only");
        let mask = self.mask();
        let mut seen = 0u64;
        for &h in hashes {
            let i = h as usize & mask;
            if self.is_taken(i) {
                let b = self.buckets[i];
                seen |= b;
                if (b >> 32) as u32 == h {
                    seen |= touch((b as u32) - 1);
                }
            }
        }
        std::hint::black_box(seen);
    }

    /// Adds `id` under `hash` (the caller knows it is absent). `id` is below `u32::MAX`.
    pub(crate) fn insert(&mut self, hash: u32, id: u32) {
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow();
        }
        self.place(pack(hash, id));
        self.len += 1;
    }

    fn place(&mut self, bucket: u64) {
        let mask = self.mask();
        let mut i = (bucket >> 32) as usize & mask;
        while self.is_taken(i) {
            i = (i + 1) & mask;
        }
        self.buckets[i] = bucket;
        self.set_taken(i, true);
    }

    /// Makes room for `total` ids in all, so that inserting up to that many does not
    /// grow the table again. A hint: when the memory cannot be had, nothing changes.
    pub(crate) fn reserve(&mut self, total: usize) {
        let Some(cap) = total
            .checked_mul(4)
            .and_then(|t| (t / 3 + 1).checked_next_power_of_two())
        else {
            return;
        };
        if cap <= self.buckets.len() {
            return;
        }
        // Not `vec![0; cap]`, which aborts when the memory cannot be had.
        #[allow(clippy::slow_vector_initialization)]
        let mut buckets = Vec::new();
        if buckets.try_reserve_exact(cap).is_ok() {
            buckets.resize(cap, 0);
            self.rehash_into(buckets);
        }
    }

    fn grow(&mut self) {
        self.rehash_into(vec![0; (self.buckets.len() * 2).max(8)]);
    }

    /// Moves every id into `buckets` (empty, a power of two, larger than now).
    fn rehash_into(&mut self, buckets: Vec<u64>) {
        self.taken = vec![0; buckets.len().div_ceil(64)];
        let old = std::mem::replace(&mut self.buckets, buckets);
        for b in old.into_iter().filter(|&b| b != 0) {
            self.place(b);
        }
    }

    /// Removes `id` (stored under `hash`); returns whether it was there.
    pub(crate) fn remove(&mut self, hash: u32, id: u32) -> bool {
        if self.buckets.is_empty() {
            return false;
        }
        let mask = self.mask();
        let want = pack(hash, id);
        let mut hole = hash as usize & mask;
        loop {
            if !self.is_taken(hole) {
                return false;
            }
            if self.buckets[hole] == want {
                break;
            }
            hole = (hole + 1) & mask;
        }
        // Backward shift: pull later entries of the probe run into the hole when the hole
        // lies between their home bucket and where they sit.
        let mut j = (hole + 1) & mask;
        while self.is_taken(j) {
            let b = self.buckets[j];
            let home = (b >> 32) as usize & mask;
            if (hole.wrapping_sub(home) & mask) < (j.wrapping_sub(home) & mask) {
                self.buckets[hole] = b;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.buckets[hole] = 0;
        self.set_taken(hole, false);
        self.len -= 1;
        true
    }

    /// Every stored `(hash, id)`, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.buckets
            .iter()
            .filter(|&&b| b != 0)
            .map(|&b| ((b >> 32) as u32, (b as u32) - 1))
    }

    /// Whether the taken bits say what the buckets hold (for `validate`).
    pub(crate) fn bits_consistent(&self) -> bool {
        self.taken.len() == self.buckets.len().div_ceil(64)
            && self
                .buckets
                .iter()
                .enumerate()
                .all(|(i, &b)| (b != 0) == self.is_taken(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Random inserts and removes with few distinct hashes (long probe runs, wrap-around)
        /// agree with a HashMap.
        #[test]
        fn agrees_with_a_map(ops in proptest::collection::vec((any::<bool>(), 0u32..200, 0u32..6), 0..400)) {
            let mut t = VidTable::default();
            let mut model: HashMap<u32, u32> = HashMap::new(); // id -> hash
            for (add, id, h) in ops {
                // Hashes near the top of the low bits force wrap-around in small tables.
                let hash = h.wrapping_sub(3);
                if add {
                    if let std::collections::hash_map::Entry::Vacant(e) = model.entry(id) {
                        e.insert(hash);
                        t.insert(hash, id);
                    }
                } else if let Some(hash) = model.remove(&id) {
                    prop_assert!(t.remove(hash, id));
                } else {
                    prop_assert!(!t.remove(hash, id));
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert!(t.bits_consistent());
                for (&id, &hash) in &model {
                    prop_assert_eq!(t.find(hash, |x| x == id), Some(id));
                }
            }
            let mut stored: Vec<(u32, u32)> = t.iter().map(|(h, id)| (id, h)).collect();
            stored.sort_unstable();
            let mut expected: Vec<(u32, u32)> = model.into_iter().collect();
            expected.sort_unstable();
            prop_assert_eq!(stored, expected);
        }
    }
}
