//! Job history: every parent and child job as a preview JobResponse, with bitmap indexes
//! and a typed filter.
//!
//! Records are numbered in creation order: each parent, then its children. That order is
//! stable as jobs are added, so a [`HistoryCursor`] pages through a result without
//! duplicates or gaps. Child records are indexed by status and by job type (roaring
//! bitmaps over child slots; a job's children are one contiguous slot range, so "children of
//! job X" is a range); a device index is built on first use and kept up to date after.
//!
//! [`HistoryFilter`] covers type, status, parent job, device and start/end time, with
//! paging and a group-by-failure-reason count. For the JSON query expressions (filter,
//! project, aggregate, sort, paging) over the same records, take a
//! [`HistorySnapshot`](super::HistorySnapshot) ([`JobEngine::history_snapshot`]; see
//! [`history_query`](super::history_query)).

use super::engine::JobEngine;
use super::spec::{JobId, JobKind};
use super::state::JobStatus;
use crate::time::Timestamp;
use crate::twin::DeviceId;
use roaring::RoaringBitmap;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// One job or child job in the preview's JobResponse shape:
/// `{jobId, parentJobId, deviceId, type, status, startTimeUtc, endTimeUtc, failureReason,
/// statusMessage}`. A parent's `parentJobId` is `""`; a child's `jobId` is
/// `<parentJobId>:<deviceId>`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// The job's id.
    pub job_id: String,
    /// The parent's id, `""` for a parent.
    pub parent_job_id: String,
    /// The device, for a child.
    pub device_id: Option<DeviceId>,
    /// The job type.
    #[serde(rename = "type")]
    pub kind: JobKind,
    /// The status.
    pub status: JobStatus,
    /// When it started.
    pub start_time_utc: Option<Timestamp>,
    /// When it ended.
    pub end_time_utc: Option<Timestamp>,
    /// Why it failed (children only): `timedOut`, `deviceOffline`,
    /// `rejected:<CoAP code or cause>`, `objectNotAnnounced:<object id>`,
    /// `deviceError:<Update Result>`, `deferred`, `unexpectedVersion` (see
    /// [`FailureReason::code`](super::FailureReason::code)); the status message spells it
    /// out.
    pub failure_reason: Option<String>,
    /// A human summary ("6 devices updated, all succeeded").
    pub status_message: String,
}

/// Bitmap indexes over child slots.
#[derive(Default)]
pub(crate) struct HistoryIndex {
    by_status: [RoaringBitmap; 5],
    by_kind: [RoaringBitmap; 6],
    by_device: RefCell<Option<DeviceIndex>>,
}

/// Child slots by device, built on first use.
#[derive(Default)]
struct DeviceIndex {
    map: HashMap<DeviceId, RoaringBitmap>,
    /// Children before this position are in `map`.
    indexed_end: u32,
}

impl HistoryIndex {
    pub(crate) fn add_children(&mut self, first: u32, end: u32, kind: JobKind) {
        self.by_status[JobStatus::Enqueued as usize].insert_range(first..end);
        self.by_kind[kind as usize].insert_range(first..end);
        // The device index, if built, is extended lazily (see `device_bitmap`).
    }

    pub(crate) fn set_status(&mut self, c: u32, from: JobStatus, to: JobStatus) {
        self.by_status[from as usize].remove(c);
        self.by_status[to as usize].insert(c);
    }

    pub(crate) fn has_status(&self, c: u32, s: JobStatus) -> bool {
        self.by_status[s as usize].contains(c)
    }

    /// Forgets every child slot before `pos` (history retention).
    pub(crate) fn drop_children_before(&mut self, pos: u32) {
        for b in self.by_status.iter_mut().chain(self.by_kind.iter_mut()) {
            b.remove_range(..pos);
        }
        if let Some(d) = self.by_device.get_mut() {
            d.map.retain(|_, b| {
                b.remove_range(..pos);
                !b.is_empty()
            });
        }
    }
}

/// Which records a history query returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RecordScope {
    /// Parents and children.
    #[default]
    All,
    /// Parent jobs only.
    Parents,
    /// Child jobs only.
    Children,
}

/// A typed filter over the job history. Every set field must match.
///
/// ```
/// use twinhub::job::{HistoryFilter, JobId, JobStatus, RecordScope};
/// let failed_children = HistoryFilter {
///     parent: Some(JobId::new("fw-2-0").unwrap()),
///     status: Some(JobStatus::Failed),
///     scope: RecordScope::Children,
///     ..HistoryFilter::default()
/// };
/// # let _ = failed_children;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistoryFilter {
    /// Parents, children or both.
    pub scope: RecordScope,
    /// Children of this job (and, unless the scope excludes it, the job itself).
    pub parent: Option<JobId>,
    /// Children for this device.
    pub device: Option<DeviceId>,
    /// Job type.
    pub kind: Option<JobKind>,
    /// Status.
    pub status: Option<JobStatus>,
    /// Started at or after.
    pub started_from: Option<Timestamp>,
    /// Started before.
    pub started_before: Option<Timestamp>,
    /// Ended at or after.
    pub ended_from: Option<Timestamp>,
    /// Ended before.
    pub ended_before: Option<Timestamp>,
}

/// Where the next page of a history query starts: the position of the first record not yet
/// returned, in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HistoryCursor(pub u64);

/// One page of history records.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryPage {
    /// The records, in creation order.
    pub records: Vec<JobRecord>,
    /// Where the next page starts, or `None` at the end.
    pub next: Option<HistoryCursor>,
}

/// Why [`JobEngine::history`] answered no page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistoryError {
    /// The page size was 0; it must be at least 1 (a page of no records cannot move the
    /// cursor on, so paging would never end).
    ZeroLimit,
}

impl std::fmt::Display for HistoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistoryError::ZeroLimit => {
                f.write_str("a history page must hold at least 1 record; the limit was 0")
            }
        }
    }
}

impl std::error::Error for HistoryError {}

fn in_range(t: Option<Timestamp>, from: Option<Timestamp>, before: Option<Timestamp>) -> bool {
    if from.is_none() && before.is_none() {
        return true;
    }
    t.is_some_and(|t| from.is_none_or(|f| t >= f) && before.is_none_or(|b| t < b))
}

impl JobEngine {
    fn device_bitmap(&self, device: &DeviceId) -> RoaringBitmap {
        let mut guard = self.index.by_device.borrow_mut();
        let index = guard.get_or_insert_with(DeviceIndex::default);
        // Extend the index with children created since it was last brought up to date.
        for c in index.indexed_end.max(self.children.start())..self.children.end() {
            index
                .map
                .entry(self.children[c as usize].device.clone())
                .or_default()
                .insert(c);
        }
        index.indexed_end = self.children.end();
        index.map.get(device).cloned().unwrap_or_default()
    }

    /// The child slots matching the filter's indexed fields (status, type, parent, device).
    fn candidate_children(&self, f: &HistoryFilter) -> RoaringBitmap {
        let mut set = match f.status {
            Some(s) => self.index.by_status[s as usize].clone(),
            None => {
                let mut all = RoaringBitmap::new();
                all.insert_range(self.children.range());
                all
            }
        };
        if let Some(k) = f.kind {
            set &= &self.index.by_kind[k as usize];
        }
        if let Some(id) = &f.parent {
            let mut range = RoaringBitmap::new();
            if let Some(p) = self.parent_of_job(id) {
                let par = &self.parents[p as usize];
                range.insert_range(par.first..par.end);
            }
            set &= range;
        }
        if let Some(d) = &f.device
            && !set.is_empty()
        {
            set &= self.device_bitmap(d);
        }
        set
    }

    fn parent_matches(&self, p: u32, f: &HistoryFilter) -> bool {
        let par = &self.parents[p as usize];
        f.device.is_none()
            && f.parent.as_ref().is_none_or(|id| *id == par.id)
            && f.kind.is_none_or(|k| k == par.kind())
            && f.status.is_none_or(|s| s == par.state.status())
            && in_range(par.started, f.started_from, f.started_before)
            && in_range(par.ended, f.ended_from, f.ended_before)
    }

    fn child_times_match(&self, c: u32, f: &HistoryFilter) -> bool {
        let child = &self.children[c as usize];
        in_range(child.started, f.started_from, f.started_before)
            && in_range(child.ended, f.ended_from, f.ended_before)
    }

    /// Visits matching records in creation order from `from`, as (position, record slot):
    /// `Err(p)` a parent, `Ok(c)` a child. Stops when `visit` returns false.
    fn scan(
        &self,
        f: &HistoryFilter,
        from: HistoryCursor,
        mut visit: impl FnMut(u64, Result<u32, u32>) -> bool,
    ) {
        let children = (f.scope != RecordScope::Parents).then(|| self.candidate_children(f));
        for p in self.parents.range() {
            let par = &self.parents[p as usize];
            // Position of the parent record: parents before it plus their children.
            let pos = p as u64 + par.first as u64;
            let after = pos + 1 + (par.end - par.first) as u64;
            if after <= from.0 {
                continue;
            }
            if pos >= from.0
                && f.scope != RecordScope::Children
                && self.parent_matches(p, f)
                && !visit(pos, Err(p))
            {
                return;
            }
            if let Some(set) = &children {
                let lo = par
                    .first
                    .max(from.0.saturating_sub(p as u64 + 1).min(u32::MAX as u64) as u32);
                let mut range = RoaringBitmap::new();
                if lo < par.end {
                    range.insert_range(lo..par.end);
                }
                range &= set;
                for c in range.iter() {
                    if self.child_times_match(c, f) && !visit(p as u64 + 1 + c as u64, Ok(c)) {
                        return;
                    }
                }
            }
        }
    }

    /// Up to `limit` records matching `filter`, starting at `from` (use
    /// [`HistoryCursor::default`] for the first page).
    ///
    /// A `limit` of 0 is refused ([`HistoryError::ZeroLimit`]): a page of no records could
    /// only hand back the cursor it was given, and a caller paging until `next` is `None`
    /// would never end. With a `limit` of 1 or more, every page holds at least one record
    /// and its `next` lies past them, so such a loop ends. `limit` bounds the records one
    /// page holds, not the records scanned to find them.
    pub fn history(
        &self,
        filter: &HistoryFilter,
        from: HistoryCursor,
        limit: usize,
    ) -> Result<HistoryPage, HistoryError> {
        if limit == 0 {
            return Err(HistoryError::ZeroLimit);
        }
        let mut records = Vec::new();
        let mut next = None;
        self.scan(filter, from, |pos, slot| {
            if records.len() == limit {
                next = Some(HistoryCursor(pos));
                return false;
            }
            records.push(match slot {
                Err(p) => self.parent_record(p),
                Ok(c) => self.child_record(c),
            });
            true
        });
        Ok(HistoryPage { records, next })
    }

    /// Number of records matching `filter`; child statuses, types and parents are counted
    /// from bitmap cardinalities when no time bound is set.
    pub fn history_count(&self, filter: &HistoryFilter) -> u64 {
        let timeless = filter.started_from.is_none()
            && filter.started_before.is_none()
            && filter.ended_from.is_none()
            && filter.ended_before.is_none();
        if timeless && filter.scope == RecordScope::Children {
            return self.candidate_children(filter).len();
        }
        let mut n = 0;
        self.scan(filter, HistoryCursor::default(), |_, _| {
            n += 1;
            true
        });
        n
    }

    /// Failed child records matching `filter`, counted by `failureReason`: for example the
    /// failed children of one job grouped by reason.
    pub fn failure_reasons(&self, filter: &HistoryFilter) -> BTreeMap<String, u64> {
        let f = HistoryFilter {
            status: Some(JobStatus::Failed),
            scope: RecordScope::Children,
            ..filter.clone()
        };
        let mut out = BTreeMap::new();
        self.scan(&f, HistoryCursor::default(), |_, slot| {
            if let Ok(c) = slot
                && let Some(reason) = &self.children[c as usize].failure
            {
                *out.entry(reason.code()).or_insert(0) += 1;
            }
            true
        });
        out
    }

    /// Records matching `filter` counted by status (bitmap cardinalities for children).
    pub fn status_counts(&self, filter: &HistoryFilter) -> BTreeMap<JobStatus, u64> {
        JobStatus::ALL
            .iter()
            .map(|&s| {
                let f = HistoryFilter {
                    status: Some(s),
                    ..filter.clone()
                };
                (s, self.history_count(&f))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
