//! A fast seeded hasher for the registry's in-memory tables.
//!
//! The standard library's SipHash costs more than the rest of a table probe for the short
//! keys the registry hashes millions of times (device ids, property names, values). This
//! is a folded-multiply hash, in the family of wyhash and foldhash: a few multiplications
//! per 8 bytes. It is keyed with a per-process random seed, so an attacker who picks
//! device ids cannot aim for collisions without learning the seed; it is not a
//! cryptographic MAC and is never used as one.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;

fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// The per-process seed (OS randomness, drawn once; a fixed value if that fails).
fn process_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        match getrandom::fill(&mut b) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => 0x9e37_79b9_7f4a_7c15,
        }
    })
}

/// Builds [`FastHasher`]s keyed with the process seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastState {
    seed: u64,
}

impl Default for FastState {
    fn default() -> Self {
        FastState {
            seed: process_seed(),
        }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher { state: self.seed }
    }
}

/// The hasher [`FastState`] builds.
#[derive(Clone, Debug)]
pub(crate) struct FastHasher {
    state: u64,
}

impl FastHasher {
    fn mix(&mut self, word: u64) {
        self.state = fold_mul(self.state ^ word, K0);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().expect("8-byte chunk")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.mix(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    fn write_i64(&mut self, i: i64) {
        self.mix(i as u64);
    }

    fn finish(&self) -> u64 {
        fold_mul(self.state, K1)
    }
}

/// A hash map keyed with [`FastState`].
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, FastState>;

/// A cheap key of a short string for a direct-mapped memo (its length and outer 8
/// bytes; a memo verifies its hits by comparing the strings).
pub(crate) fn memo_key(s: &[u8]) -> u64 {
    let n = s.len();
    let word = |at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let bits = match n {
        0..8 => s.iter().fold(n as u64, |w, &c| (w << 8) | u64::from(c)),
        _ => word(0) ^ word(n - 8).rotate_left(29) ^ n as u64,
    };
    bits.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// `a == b`, for short strings (names, tags, common values): compared a word (8 bytes)
/// at a time, the last word overlapping, without a call.
pub(crate) fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let mut at = 0;
    while at + 8 < n {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_short_keys_hash_apart() {
        let s = FastState::default();
        let mut seen = HashSet::new();
        for i in 0..100_000u32 {
            assert!(seen.insert(s.hash_one(format!("dev-{i:07}"))));
        }
        // Trailing zero bytes and lengths matter.
        assert_ne!(s.hash_one(b"ab" as &[u8]), s.hash_one(b"ab\0" as &[u8]));
        assert_eq!(s.hash_one("same"), s.hash_one("same"));
    }

    #[test]
    fn low_bits_spread() {
        // A table indexes with the low bits: sequential ids must not cluster there.
        let s = FastState::default();
        let mut buckets = [0u32; 64];
        for i in 0..64_000u32 {
            buckets[(s.hash_one(format!("dev-{i:07}")) & 63) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }

    proptest::proptest! {
        /// `same_str` is string equality, also for strings that differ in one byte
        /// anywhere (the words it compares overlap at the end).
        #[test]
        fn same_str_is_equality(a in "[ab]{0,40}", flip in 0usize..40, len_cut in 0usize..3) {
            proptest::prop_assert!(same_str(&a, &a.clone()));
            let mut b = a.clone().into_bytes();
            if let Some(c) = b.get_mut(flip) {
                *c = if *c == b'a' { b'b' } else { b'a' };
            }
            let b = String::from_utf8(b).unwrap_or_default();
            proptest::prop_assert_eq!(same_str(&a, &b), a == b);
            let cut = &a[..a.len().saturating_sub(len_cut)];
            proptest::prop_assert_eq!(same_str(&a, cut), a == cut);
        }
    }
}
