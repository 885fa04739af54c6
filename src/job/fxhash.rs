//! A small, fast, non-cryptographic hasher (the Fx hash of rustc and Firefox, with a final
//! fold so the low bits depend on the whole key) for the
//! engine's internal maps keyed by operation ids and device ids.
//!
//! Keys come from the service (targets) and from our own counter (op ids), not from the
//! network, so hash flooding is not a concern here; SipHash cost a third of the time of a
//! child transition.

use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
        // Zero padding alone would make "a" and "a\0" collide.
        self.add(bytes.len() as u64);
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply only carries entropy upwards; hashbrown picks buckets from the low
        // bits, so fold the high half down (as rustc-hash 2 does with a rotate).
        let h = self.hash;
        (h ^ (h >> 32)).wrapping_mul(SEED) ^ (h >> 29)
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;
pub(crate) type FxHashSet<K> = std::collections::HashSet<K, FxBuild>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    #[test]
    fn distinguishes_lengths_and_contents() {
        let h = |s: &str| {
            let mut f = FxHasher::default();
            s.hash(&mut f);
            f.finish()
        };
        assert_ne!(h("dev-1"), h("dev-2"));
        assert_ne!(h("a"), h("a\0"));
        assert_eq!(h("same"), h("same"));
    }
}
