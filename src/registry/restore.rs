//! Restoring a registry from a durable store: what a bulk load cannot set.
//!
//! A bulk load assigns fresh sequence numbers (generation ids, etags) and emits a
//! `Created` change per device. A registry rebuilt from disk must instead carry the
//! numbers it had and continue after the last one ever handed out, and its change feed
//! must hold what was persisted, not the load's changes. The store calls these two
//! hooks right after its bulk load; nothing else does.

use super::{Change, Registry, Slot};

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

    /// Continues the sequence after `seq` (the highest number possibly handed out before
    /// the restart) and replaces the change feed with `changes` (increasing), everything
    /// through `dropped_through` counting as dropped.
    pub(crate) fn restore_feed(&mut self, seq: u64, dropped_through: u64, changes: Vec<Change>) {
        self.seq = seq;
        self.feed.restore(dropped_through, changes);
    }
}
