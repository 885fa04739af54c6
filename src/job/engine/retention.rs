//! History retention: how the job history stays bounded.
//!
//! Jobs are dropped whole (the parent and every child) and only from the oldest end, so
//! positions stay contiguous and a history cursor stays meaningful. When a job is
//! created (and when an engine is restored), the oldest jobs are dropped while more
//! than [`EngineConfig::retain_jobs`](super::EngineConfig::retain_jobs) jobs or
//! [`EngineConfig::retain_children`](super::EngineConfig::retain_children) child
//! records are kept, or while the oldest ended longer than
//! [`EngineConfig::retain_for`](super::EngineConfig::retain_for) ago (also checked when
//! timers run), as long as the oldest job has finished. Two consequences, both
//! documented on the settings: the newest job is always kept, however many children it
//! has; and a job that has not finished keeps itself and every job created after it
//! (dropping resumes at the next creation after it finishes). Counts only grow when a
//! job is created, so checking there is enough to hold the bound.
//!
//! The journal carries the drop to the store ([`JobRow::DropBefore`](super::JobRow)),
//! which deletes the rows in the same transaction as the new job's.

use super::{JobEngine, Timer};
use crate::time::Timestamp;
use std::cmp::Reverse;

impl JobEngine {
    /// Drops the oldest finished jobs beyond the retention counts (see the module docs).
    pub(super) fn apply_retention(&mut self, wall: Timestamp) {
        let mut dropped = 0u64;
        while self.parents.count() > 1 {
            let Some(front) = self.parents.front() else {
                break;
            };
            let too_many = self.parents.count() > self.config.retain_jobs
                || self.children.count() as u64 > self.config.retain_children;
            let too_old = self.config.retain_for.is_some_and(|keep| {
                front
                    .ended
                    .is_some_and(|ended| ended.saturating_add(keep) < wall)
            });
            if !(too_many || too_old) || !front.state.is_terminal() {
                break;
            }
            let end = front.end;
            self.by_id.remove(&front.id);
            self.parents.pop_front();
            self.children.drop_before(end);
            dropped += 1;
        }
        if dropped == 0 {
            return;
        }
        self.dropped_jobs += dropped;
        let (p0, c0) = (self.parents.start(), self.children.start());
        // Nothing may point at a dropped position. A finished child holds no device and
        // no operation; what can remain are timers that outlived their job (an expiry
        // after completion, a start after a cancel), polls, and queue entries of
        // children that were cancelled while they waited for a busy device.
        self.index.drop_children_before(c0);
        self.timers.retain(|Reverse((_, t))| match *t {
            Timer::JobStart(p) | Timer::JobExpire(p) | Timer::RolloutWake(p) => p >= p0,
            Timer::Retry(c, _) => c >= c0,
        });
        self.polls.retain(|Reverse((_, c))| *c >= c0);
        self.blocked.retain(|_, q| {
            q.retain(|&c| c >= c0);
            !q.is_empty()
        });
        for j in self
            .journal
            .iter_mut()
            .chain(self.watch.iter_mut())
            .chain(self.view_marks.iter_mut())
        {
            j.parents = j.parents.split_off(&p0);
            j.children.remove_range(..c0);
        }
        for j in self.journal.iter_mut().chain(self.view_marks.iter_mut()) {
            j.dropped_before = Some((p0, c0));
        }
    }

    /// Jobs dropped from the history by retention since this engine was made (or
    /// restored).
    pub fn dropped_jobs(&self) -> u64 {
        self.dropped_jobs
    }

    /// Jobs kept in the history (finished or not).
    pub fn kept_jobs(&self) -> usize {
        self.parents.count()
    }

    /// Child records kept in the history.
    pub fn kept_children(&self) -> usize {
        self.children.count()
    }
}
