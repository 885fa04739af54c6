//! Encryption at rest of the PSK keys the store keeps.
//!
//! With [`StoreConfig::sealing_key`](super::StoreConfig::sealing_key) set, each twin's
//! PSK key is written into its head as `"sealedPsk"`: XChaCha20-Poly1305 (the
//! `chacha20poly1305` crate) under the service's 32-byte key, a fresh random 24-byte
//! nonce per write (from the OS, `getrandom`), and the device id as associated data, so a
//! sealed key moved into another twin's head does not open. The hex text holds a format
//! byte (1), the nonce, then the ciphertext and its 16-byte tag.
//!
//! Without a sealing key the head holds the key as plain hex (`"psk"`), as before. A
//! store opened with a key reads both, and rewrites the heads that hold a plain key
//! sealed before [`Store::open`](super::Store::open) returns (as its last step: an
//! opening that fails leaves them as they were). Keys sealed under one of
//! [`StoreConfig::retired_sealing_keys`](super::StoreConfig::retired_sealing_keys) open
//! too, and their heads are rewritten the same way: sealed under the sealing key, or
//! plain if there is none (how the key is changed, or sealing turned off). A store
//! holding a sealed key refuses to open without any key
//! ([`StoreError::SealingKeyMissing`]) or when none of its keys opens it
//! ([`StoreError::Unsealing`]).
//!
//! Sealing keeps keys secret, not the file unchanged: a plain key written into a head is
//! accepted (and sealed), unless the store is opened with
//! [`StoreConfig::refuse_plain_keys`](super::StoreConfig::refuse_plain_keys), which makes
//! it [`StoreError::PlainKey`].

use super::StoreError;
use crate::twin::PskKey;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use std::fmt;

/// The key that seals the PSK keys a store keeps (see
/// [`StoreConfig::sealing_key`](super::StoreConfig::sealing_key)): 32 bytes the service
/// keeps apart from the store's directory (in a secrets manager, an environment
/// variable, a file with other permissions). `Debug` never shows it, and its bytes are
/// overwritten with zeros when it is dropped.
///
/// ```
/// use twinhub::store::SealingKey;
///
/// let key = SealingKey::from_hex(&"ab".repeat(32)).unwrap();
/// assert_eq!(format!("{key:?}"), "SealingKey(<redacted>)");
/// assert!(SealingKey::from_hex("abcd").is_none());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SealingKey([u8; 32]);

impl Drop for SealingKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl SealingKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        SealingKey(bytes)
    }

    /// A key from 64 hex digits; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        // Decoded in place: a decoded `Vec` (grown as it fills, then consumed by
        // `try_into`) freed copies of the key unzeroed.
        let mut bytes = [0u8; 32];
        let decoded = hex::decode_to_slice(text.trim(), &mut bytes).is_ok();
        let key = SealingKey(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        decoded.then_some(key)
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

/// The format byte that starts a sealed key.
const FORMAT: u8 = 1;
/// Nonce and tag lengths of XChaCha20-Poly1305.
const NONCE: usize = 24;
const TAG: usize = 16;
/// Prefixed to the device id in the associated data, so that nothing else sealed under
/// the same key opens as a PSK key.
const DOMAIN: &[u8] = b"twinhub sealed psk\0";

/// Seals PSK keys under the store's [`SealingKey`], if it has one, and opens them under
/// it or a retired one.
pub(crate) struct Sealer {
    current: Option<XChaCha20Poly1305>,
    retired: Vec<XChaCha20Poly1305>,
    /// A plain key on disk is an error, not one to seal
    /// ([`StoreConfig::refuse_plain_keys`](super::StoreConfig::refuse_plain_keys), with a
    /// sealing key).
    refuse_plain: bool,
}

fn cipher(key: &SealingKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&key.0.into())
}

impl Sealer {
    /// A sealer that seals under `key` and opens only what `key` sealed.
    pub(crate) fn new(key: &SealingKey) -> Self {
        Sealer {
            current: Some(cipher(key)),
            retired: Vec::new(),
            refuse_plain: false,
        }
    }

    /// The sealer of a store's settings: `None` if they name no key at all.
    pub(crate) fn from_config(config: &super::StoreConfig) -> Option<Self> {
        let current = config.sealing_key.as_ref().map(cipher);
        let retired: Vec<_> = config.retired_sealing_keys.iter().map(cipher).collect();
        let refuse_plain = config.refuse_plain_keys && current.is_some();
        (current.is_some() || !retired.is_empty()).then_some(Sealer {
            current,
            retired,
            refuse_plain,
        })
    }

    /// Whether a PSK key held plain on disk fails the opening (see
    /// [`StoreConfig::refuse_plain_keys`](super::StoreConfig::refuse_plain_keys)).
    pub(crate) fn refuses_plain(&self) -> bool {
        self.refuse_plain
    }

    /// Whether it seals what the store writes (it has a sealing key, not only retired
    /// ones): then a plain key on disk is one to rewrite.
    pub(crate) fn seals(&self) -> bool {
        self.current.is_some()
    }

    /// `device`'s PSK key sealed, as hex; `None` without a sealing key (the key is
    /// written plain).
    pub(crate) fn seal(&self, device: &str, key: &PskKey) -> Option<String> {
        let cipher = self.current.as_ref()?;
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let aad = associated_data(device);
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: key.expose(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any key a twin holds");
        let mut bytes = Vec::with_capacity(1 + NONCE + sealed.len());
        bytes.push(FORMAT);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Some(hex::encode(bytes))
    }

    /// Opens what [`Sealer::seal`] sealed for `device`, with the sealing key or a retired
    /// one; also tells whether a retired one opened it (its head is to be rewritten).
    /// `None` if it is not hex in the format, was sealed for another device, under
    /// another key, or was changed.
    pub(crate) fn open(&self, device: &str, sealed: &str) -> Option<(PskKey, bool)> {
        let bytes = hex::decode(sealed).ok()?;
        let (&format, rest) = bytes.split_first()?;
        if format != FORMAT || rest.len() < NONCE + TAG {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce.try_into().ok()?;
        let aad = associated_data(device);
        let nonce = XNonce::from(nonce);
        let payload = || Payload {
            msg: sealed,
            aad: &aad,
        };
        let (i, key) = self
            .current
            .iter()
            .chain(&self.retired)
            .enumerate()
            .find_map(|(i, c)| Some((i, c.decrypt(&nonce, payload()).ok()?)))?;
        let retired = self.current.is_none() || i > 0;
        // Copied, not moved: turning the opened `Vec` into the key's box may reallocate
        // and free the old buffer unzeroed; this one is zeroed when it drops.
        let key = zeroize::Zeroizing::new(key);
        Some((PskKey::new(&key[..]), retired))
    }

    /// [`Sealer::open`], with the store's error for a key that does not open.
    pub(crate) fn open_or_err(
        &self,
        device: &str,
        sealed: &str,
    ) -> Result<(PskKey, bool), StoreError> {
        self.open(device, sealed)
            .ok_or_else(|| StoreError::Unsealing {
                key: device.chars().take(128).collect(),
            })
    }
}

fn associated_data(device: &str) -> Vec<u8> {
    [DOMAIN, device.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&SealingKey::new([byte; 32]))
    }

    #[test]
    fn a_sealed_key_opens_for_its_device_under_its_key_only() {
        let key = PskKey::new(vec![0x5a; 16]);
        let s = sealer(1);
        let sealed = s.seal("d1", &key).unwrap();
        assert_eq!(s.open("d1", &sealed), Some((key.clone(), false)));
        // Neither the key's bytes nor their hex are in the sealed text.
        assert!(!sealed.contains(&hex::encode(key.expose())));
        // Another device, another key, a changed byte, a cut text: none opens.
        assert_eq!(s.open("d2", &sealed), None);
        assert_eq!(sealer(2).open("d1", &sealed), None);
        let mut changed = hex::decode(&sealed).unwrap();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(s.open("d1", &hex::encode(&changed)), None);
        assert_eq!(s.open("d1", &sealed[..sealed.len() - 2]), None);
        assert_eq!(s.open("d1", "zz"), None);
        assert_eq!(s.open("d1", ""), None);
        // Each seal draws a fresh nonce.
        assert_ne!(s.seal("d1", &key).unwrap(), sealed);
        assert!(matches!(
            s.open_or_err("d2", &sealed),
            Err(StoreError::Unsealing { key }) if key == "d2"
        ));
    }

    #[test]
    fn retired_keys_open_and_say_so() {
        let key = PskKey::new(vec![3; 16]);
        let by = |current: Option<u8>, retired: &[u8]| {
            Sealer::from_config(&crate::store::StoreConfig {
                sealing_key: current.map(|b| SealingKey::new([b; 32])),
                retired_sealing_keys: retired.iter().map(|&b| SealingKey::new([b; 32])).collect(),
                ..Default::default()
            })
        };
        assert!(by(None, &[]).is_none());
        let old = sealer(1).seal("d", &key).unwrap();
        let new = sealer(2).seal("d", &key).unwrap();
        let rotated = by(Some(2), &[1]).unwrap();
        assert!(rotated.seals());
        assert_eq!(rotated.open("d", &new), Some((key.clone(), false)));
        assert_eq!(rotated.open("d", &old), Some((key.clone(), true)));
        assert_eq!(rotated.open("e", &old), None);
        // Only retired keys: everything opens as retired, and nothing is sealed.
        let off = by(None, &[1, 2]).unwrap();
        assert!(!off.seals());
        assert_eq!(off.seal("d", &key), None);
        assert_eq!(off.open("d", &old), Some((key.clone(), true)));
        assert_eq!(off.open("d", &new), Some((key.clone(), true)));
        assert_eq!(by(Some(3), &[]).unwrap().open("d", &old), None);
    }

    #[test]
    fn a_sealing_key_is_64_hex_digits() {
        assert!(SealingKey::from_hex(&"0f".repeat(32)).is_some());
        assert!(SealingKey::from_hex(&"0f".repeat(31)).is_none());
        assert!(SealingKey::from_hex(&"0f".repeat(33)).is_none());
        assert!(SealingKey::from_hex(&"zz".repeat(32)).is_none());
    }
}
