//! Hashing for the registry's in-memory tables.
//!
//! The standard library's SipHash costs more than the rest of a table probe for the short
//! keys the registry hashes millions of times (device ids, property names, values), so the
//! tables use foldhash: a folded-multiply hash keyed with per-process random state, so a
//! device or a service that picks ids cannot aim for collisions without learning the seed.
//! It is not a cryptographic MAC and is never used as one.

/// Builds the registry's hashers (foldhash, randomly seeded).
pub(crate) type FastState = foldhash::fast::RandomState;

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
