//! Job progress for subscribers: which parents and children an input changed, as
//! records.
//!
//! Off until [`JobEngine::enable_progress`]; then every input that marks a record for
//! the journal (see `persist`) also marks it here, and [`JobEngine::take_progress`]
//! turns the marks into [`JobProgress`] values: each changed child's record, then each
//! affected parent's record with its statistics. A record marked several times between
//! two takes is reported once, as it is at the take.

use super::JobEngine;
use super::persist::Journal;
use crate::job::{JobRecord, JobStatistics};
use std::collections::BTreeSet;

/// A job or child job that changed: its record now and, for a parent, its counts.
///
/// JSON: `{"record": {...JobResponse...}, "statistics": {...}}` (`statistics` only for
/// a parent).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct JobProgress {
    /// The record (the preview's JobResponse shape).
    pub record: JobRecord,
    /// The parent's child counts; `None` for a child.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistics: Option<JobStatistics>,
}

impl JobEngine {
    /// Starts keeping progress marks for [`JobEngine::take_progress`]. Whoever turns it on
    /// must take (or [`JobEngine::clear_progress`]) regularly: marks accumulate, at most
    /// one per parent and child.
    pub fn enable_progress(&mut self) {
        self.watch.get_or_insert_with(Journal::default);
    }

    /// Forgets the marks without building records (nobody is listening).
    pub fn clear_progress(&mut self) {
        if let Some(w) = &mut self.watch {
            *w = Journal::default();
        }
    }

    /// The records of every child and parent changed since the last take: children in
    /// position order, then their parents (and parents changed on their own) in
    /// position order. Empty with progress off.
    pub fn take_progress(&mut self) -> Vec<JobProgress> {
        let Some(w) = self.watch.as_mut() else {
            return Vec::new();
        };
        let mut parents: BTreeSet<u32> = std::mem::take(&mut w.parents);
        let children = std::mem::take(&mut w.children);
        let mut out = Vec::with_capacity(children.len() as usize + parents.len() + 1);
        for c in &children {
            parents.insert(self.children[c as usize].parent);
            out.push(JobProgress {
                record: self.child_record(c),
                statistics: None,
            });
        }
        for p in parents {
            out.push(JobProgress {
                record: self.parent_record(p),
                statistics: Some(self.parents[p as usize].stats),
            });
        }
        out
    }
}
