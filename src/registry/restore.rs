//! Restoring a registry from a durable store: what a bulk load cannot set.
//!
//! A bulk load assigns fresh sequence numbers (generation ids, etags) and emits a
//! `Created` change per device. A registry rebuilt from disk must instead carry the
//! numbers it had and continue after the last one ever handed out, and its change feed
//! must hold what was persisted, not the load's changes. The store calls these two
//! hooks right after its bulk load; nothing else does.

use super::{Change, Registry, Slot};
use std::fmt;
use std::sync::Arc;

/// Why a durable store refused a write ([`RegistryError::NotDurable`](super::RegistryError::NotDurable)):
/// the store's error, shared so that the registry error stays `Clone`. Two failures are
/// equal when they are the same failure.
#[derive(Clone)]
pub struct StoreFailure(Arc<dyn std::error::Error + Send + Sync>);

impl StoreFailure {
    /// Wraps a store's error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreFailure(Arc::new(error))
    }

    /// The store's error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl PartialEq for StoreFailure {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Registry {
    /// Sets a loaded device's generation id, twin etag and service etag.
    pub(crate) fn restore_versions(
        &mut self,
        slot: Slot,
        generation: u64,
        etag: u64,
        service_etag: u64,
    ) {
        if let Some(Some(e)) = self.slots.get_mut(slot.0 as usize) {
            e.generation = generation;
            e.etag = etag;
            e.service_etag = service_etag;
        }
    }

    /// Moves the sequence on to `seq` if it is behind (a registry built elsewhere that a
    /// store adopts must not reuse numbers the store handed out).
    pub(crate) fn advance_seq(&mut self, seq: u64) {
        if self.seq < seq {
            let changes: Vec<Change> = self
                .feed
                .after(0)
                .map(|c| c.cloned().collect())
                .unwrap_or_default();
            let dropped = self.feed.dropped_through();
            self.seq = seq;
            self.feed.restore(dropped, changes);
        }
    }

    /// Gives every twin's generation id and etags one new sequence number, the next: a
    /// registry a store adopts must show no number the store's directory handed out
    /// (a client's `If-Match` with an etag of the content it replaced must fail). Call
    /// after [`Registry::advance_seq`].
    pub(crate) fn renumber_versions(&mut self) {
        self.seq += 1;
        let n = self.seq;
        for e in self.slots.iter_mut().flatten() {
            e.generation = n;
            e.etag = n;
            e.service_etag = n;
        }
    }

    /// Which store opening rebuilt this registry (0: none).
    pub(crate) fn origin(&self) -> u64 {
        self.origin
    }

    /// Marks the registry as `origin`'s and continues the sequence after `seq` (the
    /// highest number possibly handed out before the restart) and replaces the change feed
    /// with `changes` (increasing), everything through `dropped_through` counting as
    /// dropped. `unused` are the ranges `(below, above)` (increasing, disjoint) whose
    /// numbers, strictly between the two, a store reserved before this restart or an
    /// earlier one but no surviving change used, so a consumer resuming after one of them
    /// is told of a gap (see [`Registry::changes_after`]).
    pub(crate) fn restore_feed(
        &mut self,
        origin: u64,
        seq: u64,
        dropped_through: u64,
        changes: Vec<Change>,
        unused: Vec<(u64, u64)>,
    ) {
        self.origin = origin;
        self.seq = seq;
        self.feed.restore(dropped_through, changes);
        self.unused = unused;
    }
}
