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
//! sealed before [`Store::open`](super::Store::open) returns. A store holding a sealed
//! key refuses to open without a key ([`StoreError::SealingKeyMissing`]) or with another
//! one ([`StoreError::Unsealing`]).

use super::StoreError;
use crate::twin::PskKey;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use std::fmt;

/// The key that seals the PSK keys a store keeps (see
/// [`StoreConfig::sealing_key`](super::StoreConfig::sealing_key)): 32 bytes the service
/// keeps apart from the store's directory (in a secrets manager, an environment
/// variable, a file with other permissions). `Debug` never shows it.
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

impl SealingKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        SealingKey(bytes)
    }

    /// A key from 64 hex digits; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(SealingKey(bytes.try_into().ok()?))
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

/// Seals and opens PSK keys under a [`SealingKey`].
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub(crate) fn new(key: &SealingKey) -> Self {
        Sealer {
            cipher: XChaCha20Poly1305::new(&key.0.into()),
        }
    }

    /// `device`'s PSK key sealed, as hex.
    pub(crate) fn seal(&self, device: &str, key: &PskKey) -> String {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let aad = associated_data(device);
        let sealed = self
            .cipher
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
        hex::encode(bytes)
    }

    /// Opens what [`Sealer::seal`] sealed for `device`: `None` if it is not hex in the
    /// format, was sealed for another device, under another key, or was changed.
    pub(crate) fn open(&self, device: &str, sealed: &str) -> Option<PskKey> {
        let bytes = hex::decode(sealed).ok()?;
        let (&format, rest) = bytes.split_first()?;
        if format != FORMAT || rest.len() < NONCE + TAG {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce.try_into().ok()?;
        let aad = associated_data(device);
        let key = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .ok()?;
        Some(PskKey::new(key))
    }

    /// [`Sealer::open`], with the store's error for a key that does not open.
    pub(crate) fn open_or_err(&self, device: &str, sealed: &str) -> Result<PskKey, StoreError> {
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
        let sealed = s.seal("d1", &key);
        assert_eq!(s.open("d1", &sealed), Some(key.clone()));
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
        assert_ne!(s.seal("d1", &key), sealed);
        assert!(matches!(
            s.open_or_err("d2", &sealed),
            Err(StoreError::Unsealing { key }) if key == "d2"
        ));
    }

    #[test]
    fn a_sealing_key_is_64_hex_digits() {
        assert!(SealingKey::from_hex(&"0f".repeat(32)).is_some());
        assert!(SealingKey::from_hex(&"0f".repeat(31)).is_none());
        assert!(SealingKey::from_hex(&"0f".repeat(33)).is_none());
        assert!(SealingKey::from_hex(&"zz".repeat(32)).is_none());
    }
}
