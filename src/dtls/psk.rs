//! Pre-shared keys: the key type (never printed), a device's credentials and the store the
//! DTLS server resolves identities in.

use crate::twin::DeviceId;
pub use crate::twin::PskKey;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Longest PSK identity accepted, in bytes (RFC 4279 §5.3 allows 2^16 - 1; LWM2M
/// identities are short names).
pub const MAX_IDENTITY: usize = 128;
/// Longest key accepted, in bytes (RFC 4279 §5.3 asks implementations to support 64).
pub const MAX_KEY: usize = 64;

/// Parses a key written in hexadecimal (as `coap-client -k` and the examples take it:
/// pairs of hex digits, no separators), 1 to [`MAX_KEY`] bytes.
///
/// ```
/// use twinhub::dtls::key_from_hex;
/// let key = key_from_hex("00112233445566778899aabbccddeeff").unwrap();
/// assert_eq!(key.expose().len(), 16);
/// assert_eq!(format!("{key:?}"), "PskKey(<redacted>)");
/// assert!(key_from_hex("abc").is_err());
/// ```
pub fn key_from_hex(text: &str) -> Result<PskKey, CredentialsError> {
    let key = PskKey::from_hex_digits(text.trim()).ok_or(CredentialsError::KeyNotHex)?;
    check_key(key.expose())?;
    Ok(key)
}

fn check_key(bytes: &[u8]) -> Result<(), CredentialsError> {
    if bytes.is_empty() || bytes.len() > MAX_KEY {
        return Err(CredentialsError::KeyLength { len: bytes.len() });
    }
    Ok(())
}

/// A device's PSK credentials: the identity it presents in the handshake and the key.
/// `Debug` shows the identity, never the key.
///
/// ```
/// use twinhub::dtls::{PskCredentials, PskKey};
/// let c = PskCredentials::new("pump-7-id", PskKey::new(b"secret-secret-16".to_vec())).unwrap();
/// assert_eq!(c.identity(), "pump-7-id");
/// assert!(!format!("{c:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PskCredentials {
    identity: Arc<str>,
    key: PskKey,
}

impl PskCredentials {
    /// Credentials from an identity (1 to [`MAX_IDENTITY`] bytes of UTF-8) and a key (1 to
    /// [`MAX_KEY`] bytes).
    pub fn new(identity: &str, key: PskKey) -> Result<Self, CredentialsError> {
        check_key(key.expose())?;
        if identity.is_empty() || identity.len() > MAX_IDENTITY {
            return Err(CredentialsError::IdentityLength {
                len: identity.len(),
            });
        }
        Ok(PskCredentials {
            identity: identity.into(),
            key,
        })
    }

    /// Parses `IDENTITY:HEXKEY` (the examples' `--psk`).
    pub fn parse(text: &str) -> Result<Self, CredentialsError> {
        let (identity, key) = text.rsplit_once(':').ok_or(CredentialsError::KeyNotHex)?;
        Self::new(identity, key_from_hex(key)?)
    }

    /// The PSK identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The key.
    pub fn key(&self) -> &PskKey {
        &self.key
    }
}

/// Why credentials were refused. Messages never contain key bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The key is empty or longer than [`MAX_KEY`].
    KeyLength {
        /// Its length in bytes.
        len: usize,
    },
    /// The key text is not pairs of hex digits.
    KeyNotHex,
    /// The identity is empty or longer than [`MAX_IDENTITY`].
    IdentityLength {
        /// Its length in bytes.
        len: usize,
    },
    /// The identity already belongs to another device.
    IdentityTaken {
        /// The device that holds it.
        device: DeviceId,
    },
    /// No such device in the registry.
    UnknownDevice {
        /// The id asked for.
        device: String,
    },
    /// The hub's durable store could not make the change durable. For `set_psk` nothing
    /// changed (the twin was rebuilt from the store, the key store put back); for
    /// `remove_psk` the key is out of the live key store but the twin still holds it.
    NotDurable {
        /// The store's error, as text.
        detail: String,
    },
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsError::KeyLength { len } => {
                write!(f, "a psk key has 1 to {MAX_KEY} bytes, not {len}")
            }
            CredentialsError::KeyNotHex => f.write_str("a psk key is written as hex digit pairs"),
            CredentialsError::IdentityLength { len } => {
                write!(f, "a psk identity has 1 to {MAX_IDENTITY} bytes, not {len}")
            }
            CredentialsError::IdentityTaken { device } => {
                write!(f, "the psk identity already belongs to device {device}")
            }
            CredentialsError::UnknownDevice { device } => write!(f, "no device {device}"),
            CredentialsError::NotDurable { detail } => {
                write!(f, "the credentials could not be made durable: {detail}")
            }
        }
    }
}

impl std::error::Error for CredentialsError {}

/// One identity's entry.
#[derive(Clone)]
pub(crate) struct PskEntry {
    pub(crate) key: PskKey,
    pub(crate) device: Option<DeviceId>,
    /// Bumped when the key changes; a session keyed with an older revision is closed.
    pub(crate) revision: u64,
    /// True while this entry (this revision) is the identity's: cleared, under the
    /// table's write lock, when the entry is replaced or removed; an entry set again
    /// unchanged keeps it. A session reads it per record instead of looking the identity
    /// up in the table (a lock and a hash of the identity) to compare revisions.
    pub(crate) live: Arc<AtomicBool>,
}

impl PskEntry {
    /// The entry left the table (the table's write lock held).
    fn retire(&self) {
        self.live.store(false, Ordering::Release);
    }
}

#[derive(Default)]
struct Tables {
    by_identity: HashMap<Arc<str>, PskEntry>,
    by_device: HashMap<DeviceId, Arc<str>>,
    next_revision: u64,
}

/// Identity -> key (and the device it belongs to), shared between the hub's API and the
/// DTLS server: cheap to clone, every clone sees the same table. A device has at most one
/// identity; setting a new one replaces (rotates) the old one. From the change on, the DTLS
/// server refuses the records of sessions made with a replaced or removed key, and it
/// closes them (with a close_notify) at its next [`DtlsServer::handle_timeout`]
/// (the hub's driver calls it at least every quarter second) or at their next datagram,
/// whichever comes first.
///
/// [`DtlsServer::handle_timeout`]: super::DtlsServer::handle_timeout
///
/// ```
/// use twinhub::dtls::{PskCredentials, PskKey, PskStore};
/// use twinhub::DeviceId;
/// let store = PskStore::new();
/// let id = DeviceId::new("pump-7").unwrap();
/// let creds = PskCredentials::new("pump-7", PskKey::new(vec![7; 16])).unwrap();
/// store.set(Some(id.clone()), creds).unwrap();
/// assert_eq!(store.device_of("pump-7"), Some(id.clone()));
/// assert_eq!(store.identity_of(&id).as_deref(), Some("pump-7"));
/// assert!(store.remove_device(&id));
/// assert!(store.is_empty());
/// ```
#[derive(Clone, Default)]
pub struct PskStore {
    tables: Arc<RwLock<Tables>>,
    /// Held by every change from its checks to its end, so that a change can be made
    /// durable in between ([`PskStore::set_with`]) with no other change interleaved and
    /// no reader kept waiting.
    writer: Arc<Mutex<()>>,
    /// Keys withdrawn so far (an identity's key replaced or removed), bumped after the
    /// table changed: a DTLS server that sees it move closes the sessions it holds under
    /// withdrawn keys.
    withdrawals: Arc<AtomicU64>,
}

impl fmt::Debug for PskStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskStore")
            .field("identities", &self.len())
            .finish()
    }
}

impl PskStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets credentials, for a device (`Some`) or for a peer that belongs to no device
    /// (`None`: e.g. a plain CoAP client allowed on the coaps endpoint). A device's earlier
    /// identity is removed (rotation); an identity held by another device is refused.
    pub fn set(
        &self,
        device: Option<DeviceId>,
        credentials: PskCredentials,
    ) -> Result<(), CredentialsError> {
        self.set_with(device, credentials, || Ok::<(), CredentialsError>(()))?
    }

    /// [`PskStore::set`], running `durable` (a store's write) after the checks and before
    /// the change, with other changes held off: the new key is usable only once `durable`
    /// succeeded, and an error of `durable` (the inner one) changes nothing.
    pub(crate) fn set_with<E>(
        &self,
        device: Option<DeviceId>,
        credentials: PskCredentials,
        durable: impl FnOnce() -> Result<(), E>,
    ) -> Result<Result<(), E>, CredentialsError> {
        let _writer = self.writer();
        if let Some(existing) = self.read().by_identity.get(&credentials.identity)
            && let Some(owner) = &existing.device
            && Some(owner) != device.as_ref()
        {
            return Err(CredentialsError::IdentityTaken {
                device: owner.clone(),
            });
        }
        if let Err(e) = durable() {
            return Ok(Err(e));
        }
        let mut t = self.write();
        let replaced = t.by_identity.contains_key(&credentials.identity)
            || device.as_ref().is_some_and(|d| t.by_device.contains_key(d));
        // The same key for the same owner again (a retried or repeated `set_psk`) keeps
        // its revision: the key did not change, so its sessions stay.
        let unchanged = t
            .by_identity
            .get(&credentials.identity)
            .filter(|e| e.key == credentials.key && e.device == device)
            .map(|e| (e.revision, e.live.clone()));
        let changed = unchanged.is_none();
        if let Some(old) = device.as_ref().and_then(|d| t.by_device.remove(d))
            && let Some(entry) = t.by_identity.remove(&old)
            && changed
        {
            // Unchanged, this was the entry set again (the device's identity is the one
            // being set): it keeps its flag.
            entry.retire();
        }
        let (revision, live) = match unchanged {
            Some(kept) => kept,
            None => {
                t.next_revision += 1;
                (t.next_revision, Arc::new(AtomicBool::new(true)))
            }
        };
        if let Some(d) = &device {
            t.by_device.insert(d.clone(), credentials.identity.clone());
        }
        // What is left under the identity belongs to no device (another device's entry
        // was refused above, this device's removed with its identity): it is replaced.
        let previous = t.by_identity.insert(
            credentials.identity,
            PskEntry {
                key: credentials.key,
                device,
                revision,
                live: live.clone(),
            },
        );
        if let Some(previous) = previous
            && !Arc::ptr_eq(&previous.live, &live)
        {
            previous.retire();
        }
        drop(t);
        // Unchanged, the entry under the identity was this device's own with the same
        // key: nothing was withdrawn.
        if replaced && changed {
            self.withdrawn();
        }
        Ok(Ok(()))
    }

    /// Removes an identity; true if it was there.
    pub fn remove_identity(&self, identity: &str) -> bool {
        let _writer = self.writer();
        let mut t = self.write();
        match t.by_identity.remove(identity) {
            Some(entry) => {
                entry.retire();
                if let Some(d) = entry.device {
                    t.by_device.remove(&d);
                }
                drop(t);
                self.withdrawn();
                true
            }
            None => false,
        }
    }

    /// Removes a device's credentials; true if it had some.
    pub fn remove_device(&self, device: &DeviceId) -> bool {
        let _writer = self.writer();
        let mut t = self.write();
        match t.by_device.remove(device) {
            Some(identity) => {
                if let Some(entry) = t.by_identity.remove(&identity) {
                    entry.retire();
                }
                drop(t);
                self.withdrawn();
                true
            }
            None => false,
        }
    }

    /// The device an identity belongs to.
    pub fn device_of(&self, identity: &str) -> Option<DeviceId> {
        self.read().by_identity.get(identity)?.device.clone()
    }

    /// A device's identity.
    pub fn identity_of(&self, device: &DeviceId) -> Option<Arc<str>> {
        self.read().by_device.get(device).cloned()
    }

    /// Whether the device has credentials (then it may only register over DTLS).
    pub fn has_device(&self, device: &DeviceId) -> bool {
        self.read().by_device.contains_key(device)
    }

    /// How many identities the store holds.
    pub fn len(&self) -> usize {
        self.read().by_identity.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A read-only view of this store (every clone sees the same table).
    pub fn view(&self) -> PskStoreView {
        PskStoreView(self.clone())
    }

    /// The entry of an identity (key, device, revision).
    pub(crate) fn entry(&self, identity: &str) -> Option<PskEntry> {
        self.read().by_identity.get(identity).cloned()
    }

    /// The entry of an identity, with the store's shared copy of the identity.
    pub(crate) fn keyed_entry(&self, identity: &str) -> Option<(Arc<str>, PskEntry)> {
        let t = self.read();
        let (key, entry) = t.by_identity.get_key_value(identity)?;
        Some((key.clone(), entry.clone()))
    }

    /// Counts a withdrawn key (after the tables changed; the writer lock held).
    fn withdrawn(&self) {
        self.withdrawals.fetch_add(1, Ordering::Release);
    }

    /// How many keys were withdrawn (replaced or removed) so far: when it moved, sessions
    /// under a withdrawn key may exist.
    pub(crate) fn withdrawals(&self) -> u64 {
        self.withdrawals.load(Ordering::Acquire)
    }

    /// The current revision of an identity's key, if it still exists (what a session's
    /// `PskEntry::live` flag stands for; tests compare the two).
    #[cfg(test)]
    pub(crate) fn revision(&self, identity: &str) -> Option<u64> {
        self.read().by_identity.get(identity).map(|e| e.revision)
    }
}

/// A read-only view of a [`PskStore`]: which device holds which identity, and nothing to
/// change. The hub hands out this rather than its key store: a device's credentials live
/// in its twin (durable with the hub's store) and in the key store together, so they
/// change only through the hub's credential calls (`set_psk`, `remove_psk`,
/// `create_device`, `remove_device`). A write to the key store alone bypassed the twin and
/// the disk and was lost at the next restart.
///
/// ```
/// use twinhub::dtls::{PskCredentials, PskKey, PskStore};
/// use twinhub::DeviceId;
/// let store = PskStore::new();
/// let view = store.view();
/// let id = DeviceId::new("pump-7").unwrap();
/// store
///     .set(Some(id.clone()), PskCredentials::new("pump-7", PskKey::new(vec![7; 16])).unwrap())
///     .unwrap();
/// assert_eq!(view.device_of("pump-7"), Some(id));
/// assert_eq!(view.len(), 1);
/// ```
#[derive(Clone)]
pub struct PskStoreView(PskStore);

impl fmt::Debug for PskStoreView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PskStoreView {
    /// The device an identity belongs to.
    pub fn device_of(&self, identity: &str) -> Option<DeviceId> {
        self.0.device_of(identity)
    }

    /// A device's identity.
    pub fn identity_of(&self, device: &DeviceId) -> Option<Arc<str>> {
        self.0.identity_of(device)
    }

    /// Whether the device has credentials (then it may only register over DTLS).
    pub fn has_device(&self, device: &DeviceId) -> bool {
        self.0.has_device(device)
    }

    /// How many identities the store holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
