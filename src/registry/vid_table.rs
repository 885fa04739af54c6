//! A hash table from values to value ids that stores only ids.
//!
//! A property's distinct values live once, in its value list; this table finds a value's
//! id by hash without storing the value again. Each bucket is one `u64`: the upper 32
//! bits of the value's hash and the id plus one (0 is an empty bucket). Linear probing
//! with backward-shift deletion (no tombstones); the bucket index comes from the stored
//! hash bits, so growing never rehashes a value. A lookup compares the stored hash bits
//! first and touches the value only when they match.

/// Value id -> bucket, keyed by the caller's 32-bit hash of the value.
#[derive(Debug, Default)]
pub(crate) struct VidTable {
    buckets: Vec<u64>,
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

    /// The id whose hash is `hash` and for which `is_it(id)` holds.
    pub(crate) fn find(&self, hash: u32, mut is_it: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let b = self.buckets[i];
            if b == 0 {
                return None;
            }
            if (b >> 32) as u32 == hash {
                let id = (b as u32) - 1;
                if is_it(id) {
                    return Some(id);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Reads the home bucket of each hash and discards it. The reads are independent,
    /// so the processor has many cache misses in flight at once, where the lookups that
    /// follow would take them one after another (each waits on its bucket to decide
    /// what to do): run over a batch of hashes first, it leaves their buckets in cache.
    pub(crate) fn warm(&self, hashes: &[u32]) {
        // A table that fits in the caches is warm already.
        if self.buckets.len() < 1 << 15 {
            return;
        }
        let mask = self.mask();
        let seen = hashes
            .iter()
            .fold(0u64, |acc, &h| acc | self.buckets[h as usize & mask]);
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
        while self.buckets[i] != 0 {
            i = (i + 1) & mask;
        }
        self.buckets[i] = bucket;
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
            match self.buckets[hole] {
                0 => return false,
                b if b == want => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        // Backward shift: pull later entries of the probe run into the hole when the hole
        // lies between their home bucket and where they sit.
        let mut j = (hole + 1) & mask;
        loop {
            let b = self.buckets[j];
            if b == 0 {
                break;
            }
            let home = (b >> 32) as usize & mask;
            if (hole.wrapping_sub(home) & mask) < (j.wrapping_sub(home) & mask) {
                self.buckets[hole] = b;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.buckets[hole] = 0;
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
