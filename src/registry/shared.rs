//! Sharing a registry across threads.

use super::Registry;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A [`Registry`] shared across threads: many concurrent readers, one writer at a time.
///
/// Cloning shares the same registry. A write holds the lock for its whole duration, so a
/// reader sees each write entirely or not at all; a reader that takes the lock after a
/// write returned sees it. Hold guards briefly: a long read (say, a full scan) delays
/// writers. If a thread panicked while holding the write lock, the registry stays usable
/// (writes validate before they mutate, so a panic does not leave a half-applied write
/// unless it is a bug, which [`Registry::validate`] would reveal).
///
/// ```
/// use twinhub::registry::SharedRegistry;
/// use twinhub::{twin::Twin, DeviceId};
/// let shared = SharedRegistry::default();
/// let writer = shared.clone();
/// std::thread::spawn(move || {
///     writer.write().create(Twin::new(DeviceId::new("d1").unwrap())).unwrap();
/// })
/// .join()
/// .unwrap();
/// assert!(shared.read().get("d1").is_some());
/// ```
#[derive(Clone, Debug, Default)]
pub struct SharedRegistry(Arc<RwLock<Registry>>);

impl SharedRegistry {
    /// Shares `registry`.
    pub fn new(registry: Registry) -> Self {
        SharedRegistry(Arc::new(RwLock::new(registry)))
    }

    /// A read guard: any number may be held at once.
    pub fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A read guard if no writer holds the lock now (`None` otherwise: it does not wait).
    pub(crate) fn try_read(&self) -> Option<RwLockReadGuard<'_, Registry>> {
        match self.0.try_read() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The write guard: exclusive.
    pub fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}
