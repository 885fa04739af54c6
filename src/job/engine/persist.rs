//! The engine's journal and its restore: how jobs survive a restart.
//!
//! With the journal on, every input that changes a parent or a child marks it; the
//! store takes the marked records as rows ([`JobEngine::take_journal`]) and commits them
//! in the transaction of the batch that changed them. A parent's row is its spec (targets
//! left out: the children hold them), its state, times and how it ended; a child's row
//! is its state, attempt, step, step flags, times, device and failure reason. Rows are
//! keyed by position (parent `p`, child `c`): both only grow, so a key never changes
//! meaning. History retention (see `retention`) deletes the oldest rows; a restore
//! starts at the oldest row kept.
//!
//! **Restore** ([`JobEngine::restore`]) rebuilds the parents, children, statistics and
//! history index from the rows, then resumes. A restarted hub has seen no registration,
//! so every device a started, unfinished child targets counts as offline until it
//! registers again, and what the child was doing when the process stopped is decided
//! per job type when it does (the rules of a device that registers again, see the
//! [module docs](crate::job)):
//!
//! - a reboot or factory reset whose Execute was sent is never sent again: the device's
//!   next registration counts as the reboot, and without one within `reboot_wait` the
//!   attempt fails as `timedOut` (meanwhile it stays in progress and keeps its rollout
//!   slot, `max_in_flight`); one whose Execute was not sent sends it. With a
//!   transport that reports `DeviceEvent::Sent`, "sent" means its `Sent` (or answer) was
//!   recorded: an Execute handed over whose `Sent` was not is sent again, since the
//!   transport's queue (where a sleeping device's request waits, maybe for hours) did not
//!   survive the restart, and only a restart between its transmission and the commit of
//!   its `Sent` makes that a second reboot (a moment, or as long as the hub's store
//!   failed and the hub held its events) (the other choice, counting it as sent, would
//!   report a reboot that never happened);
//! - a firmware update re-synchronises from the device's `/5/0` (State and Update
//!   Result) and, once the update ran, checks the version in `/3/0/3`: a download is
//!   written again only if the device lost it, Update is executed only on a Downloaded
//!   package;
//! - configuration updates and property writes start again from the first write, reads
//!   read again (all idempotent);
//! - a child waiting for a retry retries once its device is back;
//! - pending children start as the rollout allows (its per-minute window starts empty
//!   after a restart; an engine rebuilt in a running hub keeps the one it replaces).
//!
//! A scheduled job starts at its wall-clock start time; a running job's maximum
//! execution time still counts from its wall-clock start. The per-device timeout of an
//! attempt in flight starts again when the device is back.

use super::{Child, Ending, JobEngine, Parent, Timer};
use crate::job::spec::{FailureKind, FailureReason, JobSpec};
use crate::job::state::{ChildEvent, ChildState, ParentState};
use crate::job::{EngineConfig, JobKind, JobStatistics};
use crate::time::Timestamp;
use crate::twin::DeviceId;
use roaring::RoaringBitmap;
use std::cmp::Reverse;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Parents and children changed since the journal was last taken.
#[derive(Default, Debug)]
pub(crate) struct Journal {
    pub(crate) parents: BTreeSet<u32>,
    pub(crate) children: RoaringBitmap,
    /// History retention dropped every parent and child before these positions.
    pub(crate) dropped_before: Option<(u32, u32)>,
}

/// One row of the journal: a parent or a child record, encoded, or the end of the
/// records history retention dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRow {
    /// Parent `p`'s record.
    Parent(u32, Vec<u8>),
    /// Child `c`'s record.
    Child(u32, Vec<u8>),
    /// Every parent before `parents` and every child before `children` was dropped by
    /// history retention: delete their rows. Comes first in a journal.
    DropBefore {
        /// The oldest parent position kept.
        parents: u32,
        /// The oldest child position kept.
        children: u32,
    },
}

/// A stored job record that could not be decoded or does not fit with the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRowError {
    /// `"job_parents"` or `"job_children"`.
    pub table: &'static str,
    /// The row's key.
    pub key: u32,
    /// What is wrong.
    pub detail: String,
}

impl std::fmt::Display for JobRowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}: {}", self.table, self.key, self.detail)
    }
}

impl std::error::Error for JobRowError {}

const ROW_VERSION: u8 = 1;
/// Child rows: version, state, attempt, step, flags, started, ended, id length.
const CHILD_HEAD: usize = 5 + 8 + 8 + 2;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ParentRow {
    v: u8,
    spec: JobSpec,
    state: u8,
    first: u32,
    end: u32,
    started: Option<Timestamp>,
    ended: Option<Timestamp>,
    ending: Option<EndingRow>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
enum EndingRow {
    Aborted {
        rule: usize,
        matching: u64,
        finished: u64,
    },
    Expired,
    Cancelled,
}

fn ts_code(t: Option<Timestamp>) -> u64 {
    t.map_or(0, |t| t.as_millis().saturating_add(1))
}

fn ts_decode(v: u64) -> Option<Timestamp> {
    v.checked_sub(1).map(Timestamp::from_millis)
}

fn state_code(s: ChildState) -> u8 {
    ChildState::ALL.iter().position(|&x| x == s).unwrap_or(0) as u8
}

fn parent_state_code(s: ParentState) -> u8 {
    ParentState::ALL.iter().position(|&x| x == s).unwrap_or(0) as u8
}

/// Encodes a child's record.
fn encode_child(child: &Child, out: &mut Vec<u8>) {
    out.clear();
    out.push(ROW_VERSION);
    out.push(state_code(child.state));
    out.push(child.attempt);
    out.push(child.step);
    out.push(child.flags);
    out.extend_from_slice(&ts_code(child.started).to_le_bytes());
    out.extend_from_slice(&ts_code(child.ended).to_le_bytes());
    let id = child.device.as_str().as_bytes();
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id);
    if let Some(f) = &child.failure {
        serde_json::to_writer(&mut *out, &**f).expect("a failure reason always serialises");
    }
}

/// A decoded child row.
pub(crate) struct ChildRow {
    state: ChildState,
    attempt: u8,
    step: u8,
    flags: u8,
    started: Option<Timestamp>,
    ended: Option<Timestamp>,
    device: DeviceId,
    failure: Option<FailureReason>,
}

impl ChildRow {
    /// The child this row describes, under parent `parent`, with nothing in flight.
    fn into_child(self, parent: u32) -> Child {
        Child {
            device: self.device,
            parent,
            state: self.state,
            attempt: self.attempt,
            step: self.step,
            flags: self.flags,
            resends: 0,
            polls: 0,
            held: None,
            execute_after_restart: false,
            execute_unconfirmed: false,
            op: None,
            deadline: None,
            next_poll: None,
            started: self.started,
            ended: self.ended,
            failure: self.failure.map(Box::new),
        }
    }
}

/// Decodes a child row (bounded by the row: nothing is read past its end).
pub(crate) fn decode_child(c: u32, row: &[u8]) -> Result<ChildRow, JobRowError> {
    let bad = |detail: String| JobRowError {
        table: "job_children",
        key: c,
        detail,
    };
    if row.len() < CHILD_HEAD {
        return Err(bad(format!("{} bytes, shorter than a record", row.len())));
    }
    if row[0] != ROW_VERSION {
        return Err(bad(format!("record version {}", row[0])));
    }
    let state = *ChildState::ALL
        .get(row[1] as usize)
        .ok_or_else(|| bad(format!("state code {}", row[1])))?;
    let u64_at = |i: usize| u64::from_le_bytes(row[i..i + 8].try_into().expect("8 bytes"));
    let id_len = u16::from_le_bytes([row[21], row[22]]) as usize;
    let id_end = CHILD_HEAD + id_len;
    let id = row
        .get(CHILD_HEAD..id_end)
        .ok_or_else(|| bad("device id runs past the record".into()))?;
    let id = std::str::from_utf8(id).map_err(|_| bad("device id is not UTF-8".into()))?;
    let device = DeviceId::new(id).map_err(|e| bad(e.to_string()))?;
    let failure = match &row[id_end..] {
        [] => None,
        json => Some(
            serde_json::from_slice::<FailureReason>(json)
                .map_err(|e| bad(format!("failure reason: {e}")))?,
        ),
    };
    Ok(ChildRow {
        state,
        attempt: row[2],
        step: row[3],
        flags: row[4],
        started: ts_decode(u64_at(5)),
        ended: ts_decode(u64_at(13)),
        device,
        failure,
    })
}

/// A decoded parent row.
pub(crate) struct ParentRowDecoded {
    spec: JobSpec,
    state: ParentState,
    first: u32,
    end: u32,
    started: Option<Timestamp>,
    ended: Option<Timestamp>,
    ending: Option<Ending>,
}

/// Decodes a parent row.
pub(crate) fn decode_parent(p: u32, row: &[u8]) -> Result<ParentRowDecoded, JobRowError> {
    let bad = |detail: String| JobRowError {
        table: "job_parents",
        key: p,
        detail,
    };
    let mut r: ParentRow = serde_json::from_slice(row).map_err(|e| bad(e.to_string()))?;
    // Creation refuses a retry rule whose initial backoff exceeds its longest; a job made
    // before it did keeps its rule at the longest, which is the backoff it always waited.
    for rule in &mut r.spec.retries {
        rule.initial_backoff = rule.initial_backoff.min(rule.max_backoff);
    }
    if r.v != ROW_VERSION {
        return Err(bad(format!("record version {}", r.v)));
    }
    let state = *ParentState::ALL
        .get(r.state as usize)
        .ok_or_else(|| bad(format!("state code {}", r.state)))?;
    if r.first > r.end {
        return Err(bad(format!("children {}..{}", r.first, r.end)));
    }
    // The parameters only: the values' types were checked when the job was created, and
    // a job an older build stored (before that check, or before a table change) must still
    // load; a value that does not fit fails its child at run time, as it always did.
    r.spec
        .validate_parameters()
        .map_err(|e| bad(e.to_string()))?;
    let ending = r.ending.map(|e| match e {
        EndingRow::Aborted {
            rule,
            matching,
            finished,
        } => Ending::Aborted {
            rule,
            matching,
            finished,
        },
        EndingRow::Expired => Ending::Expired,
        EndingRow::Cancelled => Ending::Cancelled,
    });
    if let Some(Ending::Aborted { rule, .. }) = ending
        && rule >= r.spec.abort_rules.len()
    {
        return Err(bad(format!(
            "aborted by rule {rule}, which the job does not have"
        )));
    }
    Ok(ParentRowDecoded {
        spec: r.spec,
        state,
        first: r.first,
        end: r.end,
        started: r.started,
        ended: r.ended,
        ending,
    })
}

fn encode_parent(par: &Parent) -> Vec<u8> {
    let ending = par.ending.map(|e| match e {
        Ending::Aborted {
            rule,
            matching,
            finished,
        } => EndingRow::Aborted {
            rule,
            matching,
            finished,
        },
        Ending::Expired => EndingRow::Expired,
        Ending::Cancelled => EndingRow::Cancelled,
    });
    let row = ParentRow {
        v: ROW_VERSION,
        spec: (*par.spec).clone(),
        state: parent_state_code(par.state),
        first: par.first,
        end: par.end,
        started: par.started,
        ended: par.ended,
        ending,
    };
    serde_json::to_vec(&row).expect("a parent record always serialises")
}

impl Journal {
    /// Marks a new parent and its children.
    pub(super) fn mark_range(&mut self, p: u32, children: std::ops::Range<u32>) {
        self.parents.insert(p);
        self.children.insert_range(children);
    }
}

impl JobEngine {
    /// Turns the journal on: from now on every changed parent and child is kept for
    /// [`JobEngine::take_journal`]. Off by default (an engine without a store would
    /// only grow it).
    pub fn enable_journal(&mut self) {
        self.journal.get_or_insert_with(Journal::default);
    }

    pub(super) fn mark_child(&mut self, c: u32) {
        if let Some(j) = &mut self.journal {
            j.children.insert(c);
        }
        if let Some(w) = &mut self.watch {
            w.children.insert(c);
        }
        if let Some(v) = &mut self.view_marks {
            v.children.insert(c);
        }
    }

    pub(super) fn mark_parent(&mut self, p: u32) {
        if let Some(j) = &mut self.journal {
            j.parents.insert(p);
        }
        if let Some(w) = &mut self.watch {
            w.parents.insert(p);
        }
        if let Some(v) = &mut self.view_marks {
            v.parents.insert(p);
        }
    }

    /// Whether anything changed since the journal was last taken.
    pub fn journal_is_empty(&self) -> bool {
        self.journal.as_ref().is_none_or(|j| {
            j.parents.is_empty() && j.children.is_empty() && j.dropped_before.is_none()
        })
    }

    /// The rows of every parent and child changed since the last call (empty with the
    /// journal off), parents first; the journal is empty afterwards.
    pub fn take_journal(&mut self) -> Vec<JobRow> {
        let Some(j) = self.journal.as_mut() else {
            return Vec::new();
        };
        let parents = std::mem::take(&mut j.parents);
        let children = std::mem::take(&mut j.children);
        let mut rows = Vec::with_capacity(parents.len() + children.len() as usize + 1);
        if let Some((parents, children)) = j.dropped_before.take() {
            rows.push(JobRow::DropBefore { parents, children });
        }
        for p in parents {
            rows.push(JobRow::Parent(p, encode_parent(&self.parents[p as usize])));
        }
        for c in children {
            let mut out = Vec::with_capacity(CHILD_HEAD + 32);
            encode_child(&self.children[c as usize], &mut out);
            rows.push(JobRow::Child(c, out));
        }
        rows
    }

    /// Rebuilds an engine from stored rows (parents `0..m` and children `0..n`, each in
    /// key order) and resumes its jobs at `now`, with the journal on. See the module docs
    /// of `persist` (in [`crate::job`]'s docs: restarts) for what happens to work in flight.
    pub fn restore(
        config: EngineConfig,
        now: Instant,
        wall: Timestamp,
        parents: impl IntoIterator<Item = (u32, Vec<u8>)>,
        children: impl IntoIterator<Item = (u32, Vec<u8>)>,
    ) -> Result<JobEngine, JobRowError> {
        Self::restore_seeded(config, now, wall, parents, children, None)
    }

    /// [`JobEngine::restore`] inside a running hub, to replace `earlier` (its store
    /// refused a commit and memory is rebuilt from the disk; not a restart). The new
    /// engine numbers its operations after `earlier`'s, so answers to operations already
    /// sent are never taken for new ones; each rollout keeps its per-minute window (a
    /// failed commit must not let more children start: a start that did not reach the
    /// disk still counts, so the window errs on the slow side); and
    /// [`JobEngine::carry_devices_from`] takes over what `earlier` knew of the devices.
    pub(crate) fn restore_after(
        earlier: &JobEngine,
        now: Instant,
        wall: Timestamp,
        parents: impl IntoIterator<Item = (u32, Vec<u8>)>,
        children: impl IntoIterator<Item = (u32, Vec<u8>)>,
    ) -> Result<JobEngine, JobRowError> {
        let mut config = earlier.config().clone();
        config.op_id_base = earlier.next_op_id();
        let mut e = Self::restore_seeded(config, now, wall, parents, children, Some(earlier))?;
        e.keeps_for_rebuild = earlier.keeps_for_rebuild;
        e.carry_devices_from(now, earlier);
        Ok(e)
    }

    fn restore_seeded(
        config: EngineConfig,
        now: Instant,
        wall: Timestamp,
        parents: impl IntoIterator<Item = (u32, Vec<u8>)>,
        children: impl IntoIterator<Item = (u32, Vec<u8>)>,
        earlier: Option<&JobEngine>,
    ) -> Result<JobEngine, JobRowError> {
        let mut e = JobEngine::new(config, now, wall);
        e.enable_journal();
        for (c, row) in children {
            if e.children.is_empty() {
                // The oldest children kept (history retention drops from the front).
                e.children.set_base(c);
            }
            if c != e.children.end() {
                return Err(JobRowError {
                    table: "job_children",
                    key: c,
                    detail: format!("expected child {}", e.children.end()),
                });
            }
            e.children.push(decode_child(c, &row)?.into_child(u32::MAX));
        }
        let mut next_child = e.children.start();
        for (p, row) in parents {
            let bad = |detail: String| JobRowError {
                table: "job_parents",
                key: p,
                detail,
            };
            if e.parents.is_empty() {
                e.parents.set_base(p);
            }
            if p != e.parents.end() {
                return Err(bad(format!("expected parent {}", e.parents.end())));
            }
            let r = decode_parent(p, &row)?;
            if r.first != next_child || r.end > e.children.end() {
                return Err(bad(format!(
                    "children {}..{} do not follow {next_child} within {}",
                    r.first,
                    r.end,
                    e.children.end()
                )));
            }
            if e.by_id.contains_key(&r.spec.id) {
                return Err(bad(format!("job id {} twice", r.spec.id)));
            }
            next_child = r.end;
            let kind = r.spec.job.kind();
            let mut stats = JobStatistics {
                device_count: (r.end - r.first) as u64,
                ..JobStatistics::default()
            };
            let mut failures = [0u64; FailureKind::ALL.len()];
            e.index.add_children(r.first, r.end, kind);
            for c in r.first..r.end {
                let child = &mut e.children[c as usize];
                child.parent = p;
                *stats.slot(child.state) += 1;
                if child.state == ChildState::Failed
                    && let Some(f) = &child.failure
                {
                    match **f {
                        FailureReason::DeviceRemoved => stats.removed += 1,
                        _ => failures[f.kind() as usize] += 1,
                    }
                }
                let status = child.state.status();
                let pending = ChildState::Pending.status();
                if status != pending {
                    e.index.set_status(c, pending, status);
                }
            }
            e.by_id.insert(r.spec.id.clone(), p);
            e.parents.push(Parent {
                id: r.spec.id.clone(),
                spec: Arc::new(r.spec),
                state: r.state,
                first: r.first,
                end: r.end,
                cursor: r.first,
                requeued: VecDeque::new(),
                held: VecDeque::new(),
                stats,
                failures,
                started: r.started,
                ended: r.ended,
                window: VecDeque::new(),
                wake_at: None,
                deadlines: VecDeque::new(),
                ending: r.ending,
            });
        }
        if next_child != e.children.end() {
            return Err(JobRowError {
                table: "job_children",
                key: next_child,
                detail: "no parent holds this child".into(),
            });
        }
        if let Some(earlier) = earlier {
            for p in e.parents.range() {
                let par = &mut e.parents[p as usize];
                if let Some(&q) = earlier.by_id.get(&par.id) {
                    par.window = earlier.parents[q as usize].window.clone();
                }
            }
        }
        e.resume_after_restore(now);
        // Retention settings may have shrunk since the rows were written.
        e.apply_retention(wall);
        Ok(e)
    }

    /// Timers, device holders and work in flight after [`JobEngine::restore`].
    fn resume_after_restore(&mut self, now: Instant) {
        for p in self.parents.range() {
            let par = &self.parents[p as usize];
            if par.state.is_terminal() {
                continue;
            }
            self.active.insert(p);
            match par.state {
                ParentState::Scheduled => {
                    let at = par
                        .spec
                        .start_at
                        .map_or(now, |t| self.instant_of(t).max(now));
                    self.timers.push(Reverse((at, Timer::JobStart(p))));
                }
                _ => {
                    if let (Some(max), Some(started)) = (par.spec.max_execution_time, par.started) {
                        let at = self.instant_of(started.saturating_add(max)).max(now);
                        self.timers.push(Reverse((at, Timer::JobExpire(p))));
                    }
                }
            }
        }
        // Every started, unfinished child holds its device, which counts as offline until
        // it registers again.
        for c in self.children.range() {
            let child = &self.children[c as usize];
            if child.state == ChildState::Pending || child.state.is_terminal() {
                continue;
            }
            let device = child.device.clone();
            self.holders.insert(device.clone(), c);
            self.devices.entry(device).or_default().offline = true;
        }
        // The children the rows left in progress or waiting for a retry, taken before any
        // moves: a restored child that stops counting as in progress frees a slot of its
        // rollout (`max_in_flight`), and the child started in it is this engine's own,
        // its operation already queued, not one to send back to wait for its device.
        // (Before, the loop met it further on and did so: every child of the rollout
        // started, and its operation went out, one after the other, whatever the bound.)
        let restored: Vec<u32> = self
            .children
            .range()
            .filter(|&c| {
                matches!(
                    self.children[c as usize].state,
                    ChildState::InProgress | ChildState::RetryWait
                )
            })
            .collect();
        for c in restored {
            let child = &mut self.children[c as usize];
            let kind = self.parents[child.parent as usize].kind();
            match child.state {
                ChildState::InProgress => {
                    let executed = child.step == 1 || child.flags & super::FLAG_EXECUTE_SENT != 0;
                    if matches!(kind, JobKind::RebootDevice | JobKind::FactoryResetDevice)
                        && executed
                    {
                        // Never executed twice: the next registration is the reboot.
                        child.step = 1;
                        let at = super::later(now, self.config.reboot_wait);
                        child.next_poll = Some(at);
                        self.polls.push(Reverse((at, c)));
                    } else {
                        // Under a graceful cancel too: the child still waits for its
                        // device's next registration and finishes, as it would have
                        // without the restart.
                        self.mark_child(c);
                        self.child_move(now, c, ChildEvent::DeviceOffline);
                    }
                }
                ChildState::RetryWait => {
                    let attempt = child.attempt;
                    self.timers.push(Reverse((now, Timer::Retry(c, attempt))));
                }
                _ => {}
            }
        }
        for p in self.parents.range() {
            match self.parents[p as usize].state {
                ParentState::Running => {
                    self.pump(now, p);
                    self.check_complete(now, p);
                }
                ParentState::Cancelling => self.check_drained(now, p),
                _ => {}
            }
        }
        self.fail_refused(now);
    }
}

/// The fuzz body for job rows: decodes `row` as a child (`which` even) or a parent row;
/// a decoded child re-encodes to the same bytes.
#[doc(hidden)]
pub fn fuzz_decode_job_row(which: u8, row: &[u8]) {
    if which.is_multiple_of(2) {
        if let Ok(r) = decode_child(0, row) {
            let child = r.into_child(0);
            let mut out = Vec::new();
            encode_child(&child, &mut out);
            if out != row {
                // Only the failure's JSON may be spelled differently (spacing, key order).
                assert_eq!(
                    out[..CHILD_HEAD],
                    row[..CHILD_HEAD],
                    "a child row's head did not round-trip"
                );
            }
        }
    } else {
        let _ = decode_parent(0, row);
    }
}
