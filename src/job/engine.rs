//! The sans-IO job engine: parents, children, rollout, timers.

use super::history::{HistoryIndex, JobRecord};
use super::spec::{FailureKind, FailureReason, JobId, JobKind, JobSpec, JobType, SpecError};
use super::state::{
    CHILD_TRANSITIONS, ChildEvent, ChildState, JobStatus, ParentEvent, ParentState,
};
use crate::resource::{
    Content, DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, Lwm2mPath, OpId,
    ResourceValue, WriteMode,
};
use crate::time::{MAX_CONFIG_DURATION, Timestamp};
use crate::twin::DeviceId;
use rustc_hash::{FxHashMap, FxHashSet};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod persist;
mod progress;
mod retention;
mod slots;
#[cfg(test)]
mod tests;
#[doc(hidden)]
pub use persist::fuzz_decode_job_row;
pub use persist::{JobRow, JobRowError};
pub use progress::JobProgress;
use slots::Slots;

/// The first [`OpId`] the engine allocates by default: ids at or above `2^63` are the job
/// engine's, ids below are free for the hub's own operations.
pub const JOB_OP_ID_BASE: u64 = 1 << 63;

/// Engine-wide settings.
///
/// The defaults that decide how an attempt survives lost messages and restarts:
///
/// | setting | default | what happens at it |
/// |---|---|---|
/// | `poll_min` .. `poll_interval` | 1 s .. 30 s | while a firmware download or install runs (a deferred update too), `/5/0` is read 1 s after the step began, then after 2, 4, 8, 16 s, then every 30 s: a lost (non-confirmable) notification costs at most that wait. The reads back the child's observation of `/5/0` (its own, or the host's: see `host_observes`), which carries State and Update Result; they are no replacement for it. One read at a time (none while the last is unanswered); a wait step lasting `T` ≥ 31 s reads at most 5 + ⌊(T − 31 s) / 30 s⌋ times (23 in 10 min, 63 in the default 30-min device timeout), and no step outlasts the attempt's per-device timeout: at it the attempt fails as `timedOut` (`deferred` when the device deferred the update) and the retry rules decide |
/// | `max_resends` | 4 | an operation whose answer the transport gave up on is sent again, up to this many times in a row; the next time-out fails the attempt as `timedOut` (then the job's retry rules decide) |
/// | `reboot_wait` | 5 min | a reboot or factory-reset Execute whose answer was lost (the transport timed it out, or the registration ended before it came: `RegistrationEnded`, as a NAT rebinding does) is never sent again; the device's next registration counts as the reboot, and without one within this time from the loss the attempt fails as `timedOut` (the per-device timeout, running since the Execute left, applies too: whichever comes first) |
/// | `max_object_sets` | 4,096 | distinct sets of announced objects remembered; a device whose set is new beyond it counts as "announcements unknown" (its steps are sent and the device's own answer decides) |
/// | `retain_jobs` | 10,000 | jobs kept in the history; creating one more drops the oldest finished jobs (parent and children) from memory, the history and the store |
/// | `retain_children` | 5,000,000 | child records kept in the history (about 100 bytes of memory and 40 on disk each); beyond it, creating a job drops the oldest finished jobs the same way |
/// | `retain_for` | none | with a duration, jobs that ended longer ago are dropped the same way (checked at each creation and timer run) |
///
/// Retention drops whole jobs from the oldest end only: the newest job is always kept,
/// and a job that has not finished keeps itself and every job created after it.
///
/// The engine also keeps one small entry per device that registered or went offline
/// (offline or not, its announced objects, whether it takes composite operations), until
/// [`JobEngine::forget_device`]; the hub passes it the registrations of the devices its
/// registry holds only, and has it forget every removed twin it reads in the registry's
/// removal log (at its next event or 20 ms tick), so these entries number at most the
/// twins plus those removed since
/// ([`HubMetrics::job_device_states`](crate::hub::HubMetrics::job_device_states)).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineConfig {
    /// While waiting for a firmware download or install, the engine reads `/5/0` at most
    /// this far apart, in case a notification was lost (default 30 s). Above zero and at
    /// most [`MAX_CONFIG_DURATION`] ([`EngineConfig::validate`]).
    #[serde(with = "crate::time::millis", rename = "pollIntervalMs")]
    pub poll_interval: Duration,
    /// The first such read comes this long after the step began; the wait doubles up to
    /// `poll_interval` (default 1 s). Above zero (with zero the device is read again as
    /// soon as it answers, for as long as the download takes) and at most
    /// [`MAX_CONFIG_DURATION`].
    #[serde(with = "crate::time::millis", rename = "pollMinMs")]
    pub poll_min: Duration,
    /// How many times in a row an operation is sent again after the transport timed it
    /// out (default 4; the count starts again at every answer the device gives). Sent again: reads, observes, writes (they replace the same
    /// values), the configuration apply, and the firmware Update execute (only after a
    /// read shows the device is still Downloaded). Never sent again: reboot and factory
    /// reset.
    pub max_resends: u8,
    /// How long a reboot or factory reset whose Execute answer was lost (timed out, or
    /// failed with `RegistrationEnded`: sent, outcome unknown) waits for the device's
    /// registration before the attempt fails as `timedOut` (default 5 min; zero: it
    /// fails at once). At most [`MAX_CONFIG_DURATION`].
    #[serde(with = "crate::time::millis", rename = "rebootWaitMs")]
    pub reboot_wait: Duration,
    /// Paths the host (the hub's property sync) observes on every device that announced
    /// them. A firmware job does not observe `/5/0` itself when a path here covers it: it
    /// reads `/5/0` and follows the notifications of the host's observation (which the
    /// host passes to [`JobEngine::handle_event`] like every event). A device that keeps
    /// one observation per path then never loses the host's token. Default: none (the
    /// engine observes `/5/0` itself and cancels that observation when the child ends).
    pub host_observes: Vec<Lwm2mPath>,
    /// Most distinct sets of announced objects the engine remembers (default 4,096).
    /// Devices share a set when they announce the same objects.
    pub max_object_sets: usize,
    /// The first operation id the engine allocates ([`JOB_OP_ID_BASE`] by default); it
    /// counts up from there.
    pub op_id_base: u64,
    /// How devices number Firmware Update State (`/5/0/3`).
    pub firmware_states: FirmwareStates,
    /// Most jobs kept in the history (default 10,000). When a job is created beyond it,
    /// the oldest jobs that have finished are dropped with their children, from memory,
    /// the history and the store; the newest job is always kept, and an unfinished job
    /// keeps itself and every newer job until it finishes.
    pub retain_jobs: usize,
    /// Most child records kept in the history (default 5,000,000), enforced the same way
    /// as `retain_jobs`.
    pub retain_children: u64,
    /// Jobs that ended longer ago than this are dropped the same way (default: kept
    /// regardless of age). Checked when a job is created and when the engine's timers
    /// run, so a job may outlive it until then. Any length is taken (no
    /// [`MAX_CONFIG_DURATION`] bound: see [`EngineConfig::validate`]); `Duration::MAX`
    /// keeps jobs regardless of age.
    #[serde(with = "crate::time::millis_opt", rename = "retainForMs")]
    pub retain_for: Option<Duration>,
    /// Whether the transport emits [`DeviceEvent::Sent`] when an operation leaves for
    /// its device (default `false`; see [`JobEngine::set_transport_reports_sent`] for
    /// what it changes). Not a setting of the configuration file: the hub sets it from
    /// its transport; set it yourself when you drive the engine over a transport that
    /// reports `Sent`. Given here so that a restored engine knows it before it resumes
    /// its jobs.
    #[serde(skip)]
    pub transport_reports_sent: bool,
}

/// Why [`EngineConfig::validate`] refused a configuration. Each names the setting by its
/// JSON member (`pollIntervalMs`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EngineConfigError {
    /// A duration is zero that must be above it.
    ZeroDuration(&'static str),
    /// A duration is longer than [`MAX_CONFIG_DURATION`].
    TooLong(&'static str),
}

impl std::fmt::Display for EngineConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineConfigError::ZeroDuration(what) => write!(f, "{what} must be above zero"),
            EngineConfigError::TooLong(what) => write!(
                f,
                "{what} must be at most {} ms (a year)",
                MAX_CONFIG_DURATION.as_millis()
            ),
        }
    }
}

impl std::error::Error for EngineConfigError {}

impl EngineConfig {
    /// Checks the durations the engine adds to its clock: `pollIntervalMs` and
    /// `pollMinMs` above zero (with zero a firmware job reads `/5/0` again as soon as the
    /// device answers), and those two and `rebootWaitMs` at most [`MAX_CONFIG_DURATION`]
    /// (a longer one, such as [`Duration::MAX`] set from Rust, overflowed the clock: a
    /// panic on the hub's thread at the first firmware poll or lost reboot answer).
    /// `retainForMs` may be any length, a year or more: it is only ever added to the
    /// wall-clock time a job ended, saturating at [`Timestamp::MAX`] (so one that reaches
    /// past it keeps jobs regardless of age, as none does), never to the engine's clock,
    /// and no timer is set from it. The first setting found wrong is reported.
    ///
    /// The hub's builder and its `bind_udp` and `bind_dtls` call it (through
    /// `HubConfig::validate`) and start nothing on a refusal; [`JobEngine::new`] and the
    /// hub's infallible constructors do not: there a duration past the bound is taken as
    /// [`MAX_CONFIG_DURATION`], never a panic.
    ///
    /// ```
    /// use std::time::Duration;
    /// use twinhub::job::{EngineConfig, EngineConfigError};
    /// assert_eq!(EngineConfig::default().validate(), Ok(()));
    /// let c = EngineConfig { reboot_wait: Duration::MAX, ..EngineConfig::default() };
    /// assert_eq!(c.validate(), Err(EngineConfigError::TooLong("rebootWaitMs")));
    /// ```
    pub fn validate(&self) -> Result<(), EngineConfigError> {
        // (name, value, must be above zero)
        let durations = [
            ("pollIntervalMs", self.poll_interval, true),
            ("pollMinMs", self.poll_min, true),
            ("rebootWaitMs", self.reboot_wait, false),
        ];
        for (what, d, positive) in durations {
            if positive && d.is_zero() {
                return Err(EngineConfigError::ZeroDuration(what));
            }
            if d > MAX_CONFIG_DURATION {
                return Err(EngineConfigError::TooLong(what));
            }
        }
        Ok(())
    }
}

/// `now + d`, `d` taken as at most [`MAX_CONFIG_DURATION`]: an engine built with a
/// configuration [`EngineConfig::validate`] refuses does not panic on its clock.
pub(super) fn later(now: Instant, d: Duration) -> Instant {
    let d = d.min(MAX_CONFIG_DURATION);
    now.checked_add(d).unwrap_or(now)
}

/// The two numberings of Firmware Update State (`/5/0/3`) found in the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FirmwareStates {
    /// LWM2M 1.0.1 and later: 0 Idle, 1 Downloading, 2 Downloaded, 3 Updating.
    #[default]
    Lwm2m,
    /// The 2016 preview's device library (an LWM2M 1.0 draft): 1 Idle, 2 Downloading,
    /// 3 Downloaded; no Updating state.
    Preview2016,
}

impl FirmwareStates {
    /// The LWM2M 1.0.1+ state for a raw `/5/0/3` value, or `None` if out of range.
    pub fn normalise(self, raw: i64) -> Option<i64> {
        match self {
            FirmwareStates::Lwm2m => (0..=3).contains(&raw).then_some(raw),
            FirmwareStates::Preview2016 => (1..=3).contains(&raw).then_some(raw - 1),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            poll_interval: Duration::from_secs(30),
            poll_min: Duration::from_secs(1),
            max_resends: 4,
            reboot_wait: Duration::from_secs(300),
            host_observes: Vec::new(),
            max_object_sets: 4096,
            op_id_base: JOB_OP_ID_BASE,
            firmware_states: FirmwareStates::default(),
            retain_jobs: 10_000,
            retain_children: 5_000_000,
            retain_for: None,
            transport_reports_sent: false,
        }
    }
}

/// Values read from a device by a job: the hub applies them to the twin's device
/// properties.
#[derive(Clone, Debug, PartialEq)]
pub struct TwinUpdate {
    /// The device.
    pub device: DeviceId,
    /// The values read, by path.
    pub content: Content,
    /// When they were read (wall clock).
    pub at: Timestamp,
}

/// How [`JobEngine::cancel`] treats children that are in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelMode {
    /// Every unfinished child becomes Cancelled at once. Operations already sent are
    /// abandoned: their answers are ignored and nothing is undone on the device (a
    /// download that started keeps going there).
    Abandon,
    /// Children not in flight are cancelled; children in flight run to their end (the
    /// parent shows `running` meanwhile, then `cancelled`). In flight: in progress, or
    /// waiting for a device that went offline after the attempt reached it (it may go on
    /// with the step, a firmware update above all, and its child waits for it as it would
    /// have without the cancel, until the job's maximum execution time). Not in flight:
    /// children not started, waiting for a retry, or whose attempt never reached their
    /// offline device. Cancelling again with [`CancelMode::Abandon`] stops the wait.
    FinishInFlight,
}

/// Per-job counts of children by state; they always add up to `device_count` (`removed`
/// is a part of `failed`, not a state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatistics {
    /// Children (targets).
    pub device_count: u64,
    /// Not started.
    pub pending: u64,
    /// Operations running on the device.
    pub running: u64,
    /// Started, waiting for the device to come online.
    pub waiting_for_device: u64,
    /// Waiting for a retry.
    pub retrying: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Of `failed`, those failed as `deviceRemoved` (their twin was removed): no failure
    /// of the job, which leaves them out of its outcome and its abort rules.
    pub removed: u64,
}

impl JobStatistics {
    fn slot(&mut self, s: ChildState) -> &mut u64 {
        match s {
            ChildState::Pending => &mut self.pending,
            ChildState::WaitingForDevice => &mut self.waiting_for_device,
            ChildState::InProgress => &mut self.running,
            ChildState::RetryWait => &mut self.retrying,
            ChildState::Succeeded => &mut self.succeeded,
            ChildState::Failed => &mut self.failed,
            ChildState::Cancelled => &mut self.cancelled,
        }
    }

    /// Children in a terminal state.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }

    /// Sum over every state (equals `device_count`).
    pub fn total(&self) -> u64 {
        self.pending
            + self.running
            + self.waiting_for_device
            + self.retrying
            + self.succeeded
            + self.failed
            + self.cancelled
    }
}

/// Why a parent ended early.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ending {
    Aborted {
        rule: usize,
        matching: u64,
        finished: u64,
    },
    Expired,
    Cancelled,
}

pub(crate) struct Parent {
    pub(crate) id: JobId,
    pub(crate) spec: Arc<JobSpec>,
    pub(crate) state: ParentState,
    pub(crate) first: u32,
    pub(crate) end: u32,
    cursor: u32,
    requeued: VecDeque<u32>,
    /// Children ready to go on (a retry came due, a device came back) while
    /// `max_in_flight` children were in progress: [`JobEngine::pump`] resumes them before
    /// it starts new ones. A child is in it at most once (`Child::held`).
    held: VecDeque<u32>,
    pub(crate) stats: JobStatistics,
    /// Failed children by [`FailureKind`], for abort rules (removed devices not counted).
    failures: [u64; FailureKind::ALL.len()],
    pub(crate) started: Option<Timestamp>,
    pub(crate) ended: Option<Timestamp>,
    window: VecDeque<Instant>,
    wake_at: Option<Instant>,
    deadlines: VecDeque<(Instant, u32, u8)>,
    ending: Option<Ending>,
}

impl Parent {
    fn rate(&self) -> Option<usize> {
        let r = &self.spec.rollout;
        let ramp = r.ramp.map(|ramp| {
            let steps = (self.stats.succeeded / ramp.every_succeeded as u64).min(64) as i32;
            let rate = ramp.base_per_minute as f64 * ramp.increment_factor.powi(steps);
            rate.min(u32::MAX as f64) as usize
        });
        match (r.max_per_minute.map(|m| m as usize), ramp) {
            (Some(m), Some(x)) => Some(m.min(x)),
            (m, x) => m.or(x),
        }
    }

    pub(crate) fn kind(&self) -> JobKind {
        self.spec.job.kind()
    }

    pub(crate) fn status_message(&self) -> String {
        let s = &self.stats;
        let n = s.device_count;
        let count = |n: u64| {
            if n == 1 {
                "1 device".to_owned()
            } else {
                format!("{n} devices")
            }
        };
        let devices = count(n);
        let verb = self.kind().done_verb();
        let removed = if s.removed > 0 {
            format!(" ({} removed)", s.removed)
        } else {
            String::new()
        };
        let tally = format!(
            "{} succeeded, {} failed{removed}, {} cancelled",
            s.succeeded, s.failed, s.cancelled
        );
        match (self.state, self.ending) {
            (ParentState::Scheduled, _) => format!("scheduled; {devices}"),
            (ParentState::Running, _) => format!(
                "{} of {n} devices in progress, {} waiting for the device, {} retrying, {} pending; {tally}",
                s.running, s.waiting_for_device, s.retrying, s.pending
            ),
            (ParentState::Cancelling, _) => {
                format!(
                    "cancelling: {} devices still in progress; {tally}",
                    s.running
                )
            }
            (ParentState::Completed, _) if self.stats.removed > 0 => format!(
                "{} {verb}, all succeeded; {} removed",
                count(n - self.stats.removed),
                count(self.stats.removed)
            ),
            (ParentState::Completed, _) => format!("{devices} {verb}, all succeeded"),
            (
                _,
                Some(Ending::Aborted {
                    rule,
                    matching,
                    finished,
                }),
            ) => {
                let r = &self.spec.abort_rules[rule];
                format!(
                    "aborted: {matching} of {finished} finished devices failed ({:.1}% >= {}%); {tally}",
                    matching as f64 * 100.0 / finished.max(1) as f64,
                    r.threshold_percent
                )
            }
            (_, Some(Ending::Expired)) => {
                format!("maximum execution time reached; {tally}")
            }
            (ParentState::Cancelled, _) => format!("cancelled; {tally}"),
            _ => format!(
                "{devices}: {} {verb}, {} failed{removed}, {} cancelled",
                s.succeeded, s.failed, s.cancelled
            ),
        }
    }
}

const FW_OBSERVE: u8 = 0;
const FW_WRITE_URI: u8 = 1;
const FW_AWAIT_DOWNLOAD: u8 = 2;
const FW_EXECUTE: u8 = 3;
const FW_AWAIT_UPDATE: u8 = 4;
const FW_VERIFY: u8 = 5;
/// Read `/5/0` to learn where the device is (instead of observing it).
const FW_SYNC: u8 = 6;
/// Write an empty Package URI: the device holds a download or a package that is not the
/// job's, and object 5 takes a new URI only in Idle (4.05 otherwise).
const FW_RESET: u8 = 7;

/// Firmware Update Result 11 (LwM2M 1.1): the device deferred the update.
const UPDATE_DEFERRED: i64 = 11;

const FLAG_URI_WRITTEN: u8 = 1;
const FLAG_EXECUTED: u8 = 2;
const FLAG_OBSERVING: u8 = 4;
/// The device answered at least once in this attempt.
const FLAG_TOUCHED: u8 = 8;
/// The Execute of this attempt (firmware Update, reboot, factory reset) was sent: its
/// [`DeviceEvent::Sent`] or its answer came (or, with a transport that does not report
/// `Sent`, it was handed over; see [`JobEngine::set_transport_reports_sent`]).
const FLAG_EXECUTE_SENT: u8 = 16;
/// The package URI may have reached the device without its answer reaching us (written
/// before the device registered again, or the Write's answer was lost): a download or
/// package the device then holds is followed, not reset.
const FLAG_URI_BEFORE_RESTART: u8 = 32;
/// This attempt reads all its paths with one Read-Composite.
const FLAG_COMPOSITE: u8 = 64;
/// The device deferred the firmware update (Update Result 11) and has not applied it
/// since: the attempt's time running out fails it as deferred, not timed out.
const FLAG_DEFERRED: u8 = 128;

pub(crate) struct Child {
    pub(crate) device: DeviceId,
    pub(crate) parent: u32,
    pub(crate) state: ChildState,
    pub(crate) attempt: u8,
    step: u8,
    flags: u8,
    /// Times the current operation was sent again (see [`EngineConfig::max_resends`]);
    /// back to 0 at every answer.
    resends: u8,
    /// Polls since the current step began (the poll wait doubles with each).
    polls: u8,
    /// In its parent's `held` queue, with the state it was held in.
    held: Option<ChildState>,
    /// The device registered while this attempt's firmware Execute of Update still waited
    /// in the transport's queue: it may have restarted and lost its package. The
    /// device's refusal of that Execute (4.05, not Downloaded) then re-synchronises the
    /// child from `/5/0` instead of failing it, once (see `resync_after_refused_execute`).
    /// Not stored: a restored child re-synchronises anyway.
    execute_after_restart: bool,
    /// This attempt's firmware Execute of Update was handed over and neither its `Sent`
    /// nor its answer reached the engine (the `Sent` not committed before a restart, or
    /// still held by the hub, its store failing, when it stopped; the answer lost): it
    /// may have been
    /// carried out. The device's State decides (see `firmware_content`): Updating, or
    /// Idle with Update Result 1, is the update under way or done, never a reason to
    /// write the package again. Not stored: a restored child sets it again from its step.
    execute_unconfirmed: bool,
    op: Option<OpId>,
    deadline: Option<Instant>,
    next_poll: Option<Instant>,
    pub(crate) started: Option<Timestamp>,
    pub(crate) ended: Option<Timestamp>,
    pub(crate) failure: Option<Box<FailureReason>>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Timer {
    JobStart(u32),
    JobExpire(u32),
    RolloutWake(u32),
    Retry(u32, u8),
}

/// An operation of a step an engine rebuilt after a failed commit takes over (see
/// `JobEngine::settled`).
#[derive(Clone, Copy, Debug)]
struct Settled {
    op: OpId,
    child: u32,
    attempt: u8,
    step: u8,
    /// The child's `execute_after_restart` when the operation was answered or given up.
    execute_after_restart: bool,
    /// Still queued at the transport (no `Sent` nor answer came) when it was given up:
    /// the engine that takes it over waits for its `Sent`.
    queued: bool,
    /// Given up while queued, its `Sent` then came outside any batch
    /// ([`JobEngine::handle_sent_for_good`]): nothing applies that `Sent` again, so the
    /// engine that takes the operation over counts it as sent (an Execute as carried
    /// out) instead of waiting for it.
    left: bool,
}

/// What the job engine knows of one device's registration.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct DeviceState {
    /// De-registered, expired, or answered "not registered": its children wait for it.
    offline: bool,
    /// The objects it announced, as an index into `object_sets` (`None`: not known).
    objects: Option<u32>,
    /// It speaks LWM2M 1.1 (Read-Composite) and has not refused it.
    composite: bool,
}

/// The sans-IO job engine. See the [module docs](super) for the driving order.
pub struct JobEngine {
    config: EngineConfig,
    anchor: Instant,
    anchor_wall: Timestamp,
    pub(crate) parents: Slots<Parent>,
    by_id: FxHashMap<JobId, u32>,
    pub(crate) children: Slots<Child>,
    ops: FxHashMap<OpId, u32>,
    next_op: u64,
    holders: FxHashMap<DeviceId, u32>,
    blocked: FxHashMap<DeviceId, VecDeque<u32>>,
    /// What the engine knows of each device's registration; a device with nothing to
    /// know has no entry.
    devices: FxHashMap<DeviceId, DeviceState>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    polls: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Children whose step addresses an object their device did not announce:
    /// `(child, attempt, object)`, failed before the current input returns.
    refused: VecDeque<(u32, u8, u16)>,
    object_sets: Vec<Box<[u16]>>,
    object_set_ids: FxHashMap<Box<[u16]>, u32>,
    active: BTreeSet<u32>,
    outbox: VecDeque<DeviceOp>,
    twin_updates: VecDeque<TwinUpdate>,
    pub(crate) index: HistoryIndex,
    edge_hits: Vec<u64>,
    /// What changed since the store last took it (see `persist`); `None`: not kept.
    journal: Option<persist::Journal>,
    /// What changed since progress was last taken (see `progress`); `None`: not kept.
    watch: Option<persist::Journal>,
    /// What changed since the history view last took it (see `history_query`); `None`:
    /// no view is kept.
    pub(crate) view_marks: Option<persist::Journal>,
    /// Jobs dropped by history retention (see `retention`).
    dropped_jobs: u64,
    /// Children of an engine rebuilt after a failed commit whose step goes out only once
    /// the failed batch is applied again (see [`JobEngine::carry_devices_from`]).
    deferred: Vec<u32>,
    /// Executes of reboots and factory resets, and firmware Package URI Writes and
    /// Executes of Update, answered or given up by a cancellation since the last commit
    /// that succeeded (journal on only). An
    /// engine rebuilt after a failed commit takes them over, so an answer applied again
    /// counts (see `adopt_executes`). Kept only by an engine the hub rebuilds that way
    /// (see [`JobEngine::keep_for_rebuild`]): one driven without the hub keeps none. One
    /// given up while still queued at the transport
    /// is awaited (its `Sent` held by the hub, see [`JobEngine::awaits_sent`]) for that
    /// engine. Cleared by [`JobEngine::committed`]: one entry per answer or cancellation
    /// taken since that commit.
    settled: Vec<Settled>,
    /// Operations of the steps `adopt_executes` takes over (see `settled`) whose
    /// [`DeviceEvent::Sent`] this engine took since the last commit that succeeded,
    /// from a batch of the hub's events (journal on only). Should that commit fail, the
    /// hub applies the batch again, this `Sent` in its place among the events: an engine
    /// rebuilt then takes the operation over as still queued at the transport (not as
    /// sent) and waits for that `Sent` again, so an event that came before it (a
    /// registration: no proof of a reboot) is applied before it, as here. A `Sent` the hub
    /// hands over outside any batch ([`JobEngine::handle_sent_for_good`]) is not kept
    /// here. Cleared by [`JobEngine::committed`]: one entry per such `Sent` taken since
    /// that commit (at most one per operation). Kept only by an engine the hub rebuilds
    /// after a failed commit, like `settled`.
    sent_again: Vec<Settled>,
    /// Whether a hub rebuilds this engine from its store after a failed commit (see
    /// [`JobEngine::keep_for_rebuild`]): only then are `settled` and `sent_again` kept.
    keeps_for_rebuild: bool,
    /// Operations numbered below this were made before the last commit that succeeded
    /// (or this engine's start), so they went out; later ones may belong to a batch whose
    /// commit fails, and were never sent then.
    sent_below: u64,
    /// Operations in `ops` handed to a transport that reports `Sent` whose `Sent` (or
    /// answer) has not come: still queued for their device. Always a subset of `ops`.
    unsent: FxHashSet<OpId>,
    /// While a job expires: the job and the wall-clock time its time ran out, which its
    /// records take as their end time (the timer may run later than it was due, or
    /// after a restart).
    ending_at: Option<(u32, Timestamp)>,
    /// While a child's attempt times out: the child and the wall-clock time of its
    /// deadline, which its record takes as its end time if it fails for good.
    timing_out: Option<(u32, Timestamp)>,
}

impl std::fmt::Debug for JobEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEngine")
            .field("jobs", &self.parents.count())
            .field("children", &self.children.count())
            .field("ops_in_flight", &self.ops.len())
            .finish()
    }
}

impl JobEngine {
    /// An engine whose wall clock is `anchor_wall` at the instant `anchor`: every
    /// `now: Instant` maps to `anchor_wall + (now - anchor)` for job history times, and a
    /// job's wall-clock `start_at` maps back the same way.
    pub fn new(config: EngineConfig, anchor: Instant, anchor_wall: Timestamp) -> Self {
        let sent_below = config.op_id_base;
        JobEngine {
            next_op: config.op_id_base,
            config,
            anchor,
            anchor_wall,
            parents: Slots::default(),
            by_id: FxHashMap::default(),
            children: Slots::default(),
            ops: FxHashMap::default(),
            holders: FxHashMap::default(),
            blocked: FxHashMap::default(),
            devices: FxHashMap::default(),
            timers: BinaryHeap::new(),
            polls: BinaryHeap::new(),
            refused: VecDeque::new(),
            object_sets: Vec::new(),
            object_set_ids: FxHashMap::default(),
            active: BTreeSet::new(),
            outbox: VecDeque::new(),
            twin_updates: VecDeque::new(),
            index: HistoryIndex::default(),
            edge_hits: vec![0; CHILD_TRANSITIONS.len()],
            journal: None,
            watch: None,
            view_marks: None,
            dropped_jobs: 0,
            deferred: Vec::new(),
            settled: Vec::new(),
            sent_again: Vec::new(),
            keeps_for_rebuild: false,
            sent_below,
            unsent: FxHashSet::default(),
            ending_at: None,
            timing_out: None,
        }
    }

    /// The wall-clock time of `now`.
    pub fn wall(&self, now: Instant) -> Timestamp {
        if now >= self.anchor {
            self.anchor_wall.saturating_add(now - self.anchor)
        } else {
            let back = (self.anchor - now).as_millis() as u64;
            Timestamp::from_millis(self.anchor_wall.as_millis().saturating_sub(back))
        }
    }

    fn instant_of(&self, t: Timestamp) -> Instant {
        if t >= self.anchor_wall {
            self.anchor + t.since(self.anchor_wall)
        } else {
            self.anchor
                .checked_sub(self.anchor_wall.since(t))
                .unwrap_or(self.anchor)
        }
    }

    // ---- getters ----

    /// Validates a spec and returns the frozen target set a job would get (duplicates are
    /// an error), without creating anything.
    pub fn dry_run<'a>(&self, spec: &'a JobSpec) -> Result<&'a [DeviceId], SpecError> {
        spec.validate()?;
        if self.by_id.contains_key(&spec.id) {
            return Err(SpecError::DuplicateJob(spec.id.clone()));
        }
        let mut seen = FxHashSet::with_capacity_and_hasher(spec.targets.len(), Default::default());
        for d in &spec.targets {
            if !seen.insert(d.as_str()) {
                return Err(SpecError::DuplicateTarget(d.clone()));
            }
        }
        // Every record (parent or child) has a u32 position in the history.
        let total = self.children.end() as u64 + spec.targets.len() as u64;
        if total + self.parents.end() as u64 + 1 >= u32::MAX as u64 {
            return Err(SpecError::TooManyTargets { total });
        }
        Ok(&spec.targets)
    }

    /// A job's parent record (the preview's JobResponse), or `None`.
    pub fn job(&self, id: &JobId) -> Option<JobRecord> {
        self.by_id.get(id).map(|&p| self.parent_record(p))
    }

    /// Parent jobs created and not yet finished (scheduled ones included).
    pub fn unfinished_jobs(&self) -> usize {
        self.active.len()
    }

    /// Operations the engine sent to devices that have not been answered yet.
    pub fn operations_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// A job's statistics.
    pub fn statistics(&self, id: &JobId) -> Option<JobStatistics> {
        self.by_id.get(id).map(|&p| self.parents[p as usize].stats)
    }

    /// A job's parent state.
    pub fn job_state(&self, id: &JobId) -> Option<ParentState> {
        self.by_id.get(id).map(|&p| self.parents[p as usize].state)
    }

    /// The child records of a job, in target order.
    pub fn children(&self, id: &JobId) -> impl Iterator<Item = JobRecord> + '_ {
        let range = self
            .by_id
            .get(id)
            .map(|&p| self.parents[p as usize].first..self.parents[p as usize].end)
            .unwrap_or(0..0);
        range.map(|c| self.child_record(c))
    }

    /// The child of a job for one device: its state and failure reason.
    pub fn child_state(
        &self,
        id: &JobId,
        device: &DeviceId,
    ) -> Option<(ChildState, Option<&FailureReason>)> {
        let &p = self.by_id.get(id)?;
        let p = &self.parents[p as usize];
        (p.first..p.end)
            .map(|c| &self.children[c as usize])
            .find(|c| c.device == *device)
            .map(|c| (c.state, c.failure.as_deref()))
    }

    /// Ids of every job, in creation order.
    pub fn job_ids(&self) -> impl Iterator<Item = &JobId> + '_ {
        self.parents.iter().map(|p| &p.id)
    }

    /// Every record (each parent followed by its children), serializable in the preview's
    /// JobResponse shape.
    pub fn records(&self) -> impl Iterator<Item = JobRecord> + '_ {
        self.parents.range().flat_map(move |p| {
            let par = &self.parents[p as usize];
            std::iter::once(self.parent_record(p))
                .chain((par.first..par.end).map(move |c| self.child_record(c)))
        })
    }

    /// How often each edge of [`CHILD_TRANSITIONS`] was taken (same order).
    #[doc(hidden)]
    pub fn child_edge_hits(&self) -> &[u64] {
        &self.edge_hits
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The id the next operation will get (ids grow from [`EngineConfig::op_id_base`]).
    pub fn next_op_id(&self) -> u64 {
        self.next_op
    }

    /// Operations submitted and not yet answered.
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    // ---- handle_* ----

    /// Creates a job from a spec. It starts at once (children start as the rollout allows)
    /// unless its `start_at` lies in the future.
    pub fn create(&mut self, now: Instant, mut spec: JobSpec) -> Result<(), SpecError> {
        self.dry_run(&spec)?;
        let targets = std::mem::take(&mut spec.targets);
        let p = self.parents.end();
        let first = self.children.end();
        self.children.reserve(targets.len());
        for device in targets {
            self.children.push(Child {
                device,
                parent: p,
                state: ChildState::Pending,
                attempt: 0,
                step: 0,
                flags: 0,
                resends: 0,
                polls: 0,
                held: None,
                execute_after_restart: false,
                execute_unconfirmed: false,
                op: None,
                deadline: None,
                next_poll: None,
                started: None,
                ended: None,
                failure: None,
            });
        }
        let end = self.children.end();
        let start_at = match spec.start_at {
            Some(t) => self.instant_of(t).max(now),
            None => now,
        };
        self.index.add_children(first, end, spec.job.kind());
        if let Some(j) = &mut self.journal {
            j.mark_range(p, first..end);
        }
        if let Some(v) = &mut self.view_marks {
            v.mark_range(p, first..end);
        }
        self.by_id.insert(spec.id.clone(), p);
        let n = (end - first) as u64;
        self.parents.push(Parent {
            id: spec.id.clone(),
            spec: Arc::new(spec),
            state: ParentState::Scheduled,
            first,
            end,
            cursor: first,
            requeued: VecDeque::new(),
            held: VecDeque::new(),
            stats: JobStatistics {
                device_count: n,
                pending: n,
                ..JobStatistics::default()
            },
            failures: [0; FailureKind::ALL.len()],
            started: None,
            ended: None,
            window: VecDeque::new(),
            wake_at: None,
            deadlines: VecDeque::new(),
            ending: None,
        });
        self.active.insert(p);
        if start_at <= now {
            self.start_parent(now, p);
        } else {
            self.timers.push(Reverse((start_at, Timer::JobStart(p))));
        }
        self.fail_refused(now);
        self.apply_retention(self.wall(now));
        Ok(())
    }

    /// Cancels a job. Returns its status afterwards; a finished job is left as it is.
    pub fn cancel(
        &mut self,
        now: Instant,
        id: &JobId,
        mode: CancelMode,
    ) -> Result<JobStatus, SpecError> {
        let p = *self
            .by_id
            .get(id)
            .ok_or_else(|| SpecError::UnknownJob(id.clone()))?;
        let state = self.parents[p as usize].state;
        match (state, mode) {
            (ParentState::Running, CancelMode::FinishInFlight) => {
                self.parent_transition(now, p, ParentEvent::CancelGraceful);
                self.parents[p as usize].ending = Some(Ending::Cancelled);
                let par = &self.parents[p as usize];
                for c in par.first..par.end {
                    let s = self.children[c as usize].state;
                    if !s.is_terminal() && !self.in_flight(c) {
                        self.child_apply(now, c, ChildEvent::Cancel);
                    }
                }
                // In-flight children whose devices came back while `max_in_flight` held
                // them go on as slots open (nothing new starts; the bound still holds).
                self.pump(now, p);
                self.check_drained(now, p);
            }
            (ParentState::Scheduled | ParentState::Running | ParentState::Cancelling, _) => {
                self.parent_transition(now, p, ParentEvent::Cancel);
                self.parents[p as usize].ending = Some(Ending::Cancelled);
                self.cancel_unfinished(now, p);
            }
            _ => {}
        }
        Ok(self.parents[p as usize].state.status())
    }

    /// Feeds a transport event. Responses to operations the engine did not submit, and
    /// events about devices no running child targets, are ignored, so the hub can pass
    /// every event through.
    pub fn handle_event(&mut self, now: Instant, event: &DeviceEvent) {
        match event {
            DeviceEvent::Sent { op, .. } => {
                if self.unsent.remove(op)
                    && let Some(&c) = self.ops.get(op)
                {
                    self.note_sent_again(*op, c);
                    self.on_sent(now, c);
                }
            }
            DeviceEvent::Response { op, result, .. } => {
                if let Some(c) = self.ops.remove(op) {
                    // An answer without its `Sent`: the transport's own refusals never
                    // left; anything else did (the answer is the proof). `BadPayload` is a
                    // refusal here: a transport that reports `Sent` does so before the
                    // device can answer, so an undecodable answer of the device comes
                    // after it, and one before it is the transport's own (its encoder
                    // refused the value, or it could not send the request).
                    if self.unsent.remove(op)
                        && !matches!(
                            result,
                            Err(DeviceError::NotRegistered
                                | DeviceError::QueueFull
                                | DeviceError::BadPayload(_))
                        )
                    {
                        self.on_sent(now, c);
                    }
                    self.note_settled(*op, c, false);
                    self.children[c as usize].op = None;
                    self.on_response(now, c, result);
                }
            }
            DeviceEvent::TimedOut { op, .. } => {
                if let Some(c) = self.ops.remove(op) {
                    // Timed out in the transport's queue: it never left.
                    let never_sent = self.unsent.remove(op);
                    self.note_settled(*op, c, false);
                    self.children[c as usize].op = None;
                    self.on_op_timeout(now, c, never_sent);
                }
            }
            DeviceEvent::Registered {
                device,
                registration,
            } => {
                self.device_mut(device).offline = false;
                self.remember_objects(device, &registration.objects);
                self.remember_version(device, registration.speaks_1_1());
                if let Some(&c) = self.holders.get(device) {
                    self.on_registered(now, c);
                }
            }
            DeviceEvent::RegistrationUpdated {
                device,
                registration,
            } => {
                let was_offline = std::mem::take(&mut self.device_mut(device).offline);
                self.remember_objects(device, &registration.objects);
                self.remember_version(device, registration.speaks_1_1());
                if was_offline
                    && let Some(&c) = self.holders.get(device)
                    && self.children[c as usize].state == ChildState::WaitingForDevice
                {
                    self.on_registered(now, c);
                }
            }
            DeviceEvent::AddressChanged { device, .. } => {
                // The device's registration lives and moved without an Update (its
                // notification from a new address, or from the one it was displaced
                // from): it is reachable again, as after an Update. A step the move
                // failed (`RegistrationEnded` at the address left) goes again now, not
                // at the device's next Update.
                let was_offline = self
                    .devices
                    .get_mut(device)
                    .is_some_and(|d| std::mem::take(&mut d.offline));
                if was_offline
                    && let Some(&c) = self.holders.get(device)
                    && self.children[c as usize].state == ChildState::WaitingForDevice
                {
                    self.on_registered(now, c);
                }
            }
            DeviceEvent::Deregistered { device } | DeviceEvent::Expired { device } => {
                *self.device_mut(device) = DeviceState {
                    offline: true,
                    ..DeviceState::default()
                };
                if let Some(&c) = self.holders.get(device) {
                    self.on_offline(now, c);
                }
            }
            DeviceEvent::Notification {
                device, content, ..
            } => {
                if let Some(&c) = self.holders.get(device) {
                    self.on_notification(now, c, content);
                }
            }
            _ => {}
        }
        self.fail_refused(now);
    }

    /// Runs every timer due at `now`: scheduled starts, per-device timeouts, retries,
    /// firmware polls, rollout wake-ups and job expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.on_timer(now, timer);
        }
        while let Some(&Reverse((at, c))) = self.polls.peek() {
            if at > now {
                break;
            }
            self.polls.pop();
            self.on_poll(now, c, at);
        }
        let active: Vec<u32> = self.active.iter().copied().collect();
        for p in active {
            while let Some(&(at, c, attempt)) = self.parents[p as usize].deadlines.front() {
                if at > now {
                    break;
                }
                self.parents[p as usize].deadlines.pop_front();
                self.on_deadline(now, c, attempt, at);
            }
        }
        self.fail_refused(now);
        if self.config.retain_for.is_some() {
            self.apply_retention(self.wall(now));
        }
    }

    /// Remembers the objects a device announced (shared sets, at most
    /// [`EngineConfig::max_object_sets`] distinct ones; past that the device's
    /// announcements count as unknown).
    fn remember_objects(&mut self, device: &DeviceId, objects: &[Lwm2mPath]) {
        let mut ids: Vec<u16> = objects.iter().filter_map(|p| p.object_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        let set = match self.object_set_ids.get(ids.as_slice()) {
            Some(&i) => i,
            None if self.object_sets.len() < self.config.max_object_sets => {
                let i = self.object_sets.len() as u32;
                let ids: Box<[u16]> = ids.into();
                self.object_sets.push(ids.clone());
                self.object_set_ids.insert(ids, i);
                i
            }
            None => {
                self.device_mut(device).objects = None;
                self.tidy(device);
                return;
            }
        };
        self.device_mut(device).objects = Some(set);
    }

    /// Remembers whether a (re-)registered device takes the composite operations.
    fn remember_version(&mut self, device: &DeviceId, speaks_1_1: bool) {
        if speaks_1_1 {
            self.device_mut(device).composite = true;
        } else if let Some(s) = self.devices.get_mut(device) {
            s.composite = false;
            self.tidy(device);
        }
    }

    /// The device's entry, made when it has none.
    fn device_mut(&mut self, device: &DeviceId) -> &mut DeviceState {
        if !self.devices.contains_key(device) {
            self.devices.insert(device.clone(), DeviceState::default());
        }
        self.devices.get_mut(device).expect("inserted above")
    }

    /// Drops the device's entry when there is nothing left in it.
    fn tidy(&mut self, device: &DeviceId) {
        if self.devices.get(device) == Some(&DeviceState::default()) {
            self.devices.remove(device);
        }
    }

    /// Whether the device announced `object` in its registration: `false` only when its
    /// announcements are known and lack the object.
    fn may_have(&self, device: &DeviceId, object: u16) -> bool {
        self.devices
            .get(device)
            .and_then(|s| s.objects)
            .is_none_or(|s| self.object_sets[s as usize].binary_search(&object).is_ok())
    }

    /// Distinct sets of announced objects the engine holds (at most
    /// [`EngineConfig::max_object_sets`]).
    pub fn object_set_count(&self) -> usize {
        self.object_sets.len()
    }

    /// Devices whose registration the engine keeps track of (offline, the objects they
    /// announced, whether they take composite operations): one entry a device with any
    /// of these known, until [`JobEngine::forget_device`].
    pub fn device_states(&self) -> usize {
        self.devices.len()
    }

    /// The device's twin is gone (removed from the registry): forgets its registration
    /// state, which would otherwise stay for as long as the engine (a device that went
    /// offline is remembered as offline until it registers again), and fails the children
    /// that hold or wait for the device with [`FailureReason::DeviceRemoved`] (an operation
    /// in flight is abandoned; its answer is ignored). Returns how many children failed.
    ///
    /// A child that has not reached its turn yet is not looked for (that would take a scan
    /// of every job): the hub checks each operation's device before sending it and calls
    /// this again for one whose twin is gone, which fails that child as it starts. A
    /// standalone engine's owner does the same. A child failed that way, as it starts (at
    /// the same `now`), gives its start back to its job's rate limit (`max_per_minute`).
    pub fn forget_device(&mut self, now: Instant, device: &DeviceId) -> usize {
        self.devices.remove(device);
        // The blocked queue first: failing the holder would hand the device to it.
        let mut doomed: Vec<u32> = self
            .blocked
            .remove(device)
            .map(Vec::from)
            .unwrap_or_default();
        if let Some(&c) = self.holders.get(device) {
            doomed.insert(0, c);
        }
        let mut failed = 0;
        for c in doomed {
            let child = &self.children[c as usize];
            if child.state.is_terminal() {
                continue;
            }
            let par = &mut self.parents[child.parent as usize];
            if child.state == ChildState::InProgress
                && child.attempt <= 1
                && child.flags & FLAG_TOUCHED == 0
                && par.rate().is_some()
                && par.window.back() == Some(&now)
            {
                // It started at this instant and its device never answered (the hub fails
                // it as it starts, before anything is sent): its start goes back to the
                // rollout's rate window, so removed devices do not slow the others.
                par.window.pop_back();
            }
            self.children[c as usize].failure = Some(Box::new(FailureReason::DeviceRemoved));
            if self.child_apply(now, c, ChildEvent::Fail) {
                failed += 1;
            }
        }
        self.fail_refused(now);
        failed
    }

    /// [`JobEngine::forget_device`] for every device the engine holds state of (registration
    /// state, a child holding or waiting for it) that `keep` refuses; returns how many
    /// children failed. For when the removals themselves are not known (the hub runs it
    /// after a restart, and when its removal log lost track).
    pub fn retain_devices(&mut self, now: Instant, keep: impl Fn(&DeviceId) -> bool) -> usize {
        let gone: FxHashSet<DeviceId> = self
            .devices
            .keys()
            .chain(self.holders.keys())
            .chain(self.blocked.keys())
            .filter(|d| !keep(d))
            .cloned()
            .collect();
        gone.iter().map(|d| self.forget_device(now, d)).sum()
    }

    /// After `JobEngine::restore_after` inside a running hub (its store refused a commit and
    /// memory was rebuilt from the disk; not a restart): takes what `earlier`, the engine
    /// this one replaces, knew of each device (online or not, the objects it announced,
    /// LWM2M 1.1), and resumes every child the restore set waiting for a device that
    /// `earlier` knew online: the devices never left, but this engine does not recognise
    /// the answers to `earlier`'s operations; without this, those jobs would wait for
    /// their devices to register again (up to a lifetime).
    ///
    /// A step safe to repeat (configuration update, write and read properties) is sent
    /// again at once. A reboot, factory reset or firmware update is resumed only by
    /// [`JobEngine::resume_deferred`], once the failed batch has been applied again: a
    /// registration in that batch must not count as the reboot of an Execute sent before
    /// it (it resumes the child the ordinary way). A firmware update whose Execute of
    /// Update went out unanswered (and is not taken back, see below) waits for the
    /// registration, as after a restart: it is never executed twice; one whose Execute
    /// was answered re-synchronises from `/5/0` like the others.
    ///
    /// Operations of `earlier` still in flight: the steps that must not be carried out
    /// twice (a reboot's or factory reset's Execute, a firmware update's Package URI
    /// Write and Execute of Update) take `earlier`'s operation back (`adopt_executes`),
    /// so its `Sent` and answer count when they come (one whose `Sent` `earlier` took
    /// from the failed batch itself is taken back as still queued at the transport, and
    /// counts as sent only once that `Sent` is applied again, in its place: a
    /// registration that came before it in the batch is no proof of a reboot, and leaves
    /// a firmware step waiting for its answer, as it did in `earlier`); every other step
    /// (reads, writes,
    /// the configuration apply, the firmware Observe, Reads and the empty-URI reset) is
    /// sent again under a new operation id, and the answer to `earlier`'s operation,
    /// which this engine does not know, is ignored: each step's answer counts once, and
    /// the device may carry such a step out once more per rebuild, which these steps
    /// allow (they read, or write the same values again).
    pub(crate) fn carry_devices_from(&mut self, now: Instant, earlier: &JobEngine) {
        self.devices = earlier.devices.clone();
        self.object_sets = earlier.object_sets.clone();
        self.object_set_ids = earlier.object_set_ids.clone();
        self.adopt_executes(now, earlier);
        let mut waiting: Vec<u32> = Vec::new();
        self.deferred.clear();
        for (d, &c) in &self.holders {
            let child = &self.children[c as usize];
            if child.state != ChildState::WaitingForDevice || is_offline(&self.devices, d) {
                continue;
            }
            match self.parents[child.parent as usize].kind() {
                JobKind::UpdateDeviceConfiguration
                | JobKind::WriteDeviceProperties
                | JobKind::ReadDeviceProperties => waiting.push(c),
                JobKind::RebootDevice | JobKind::FactoryResetDevice => self.deferred.push(c),
                JobKind::FirmwareUpdate => {
                    // An Execute of Update that went out unanswered, and that was not
                    // taken back, waits for the registration of the new image. One
                    // answered re-synchronises: the State and Update Result decide (an
                    // update that failed or was deferred without a reboot would
                    // otherwise wait for a registration that never comes), and Update is
                    // never executed again once answered.
                    if child.flags & FLAG_EXECUTE_SENT == 0 || child.flags & FLAG_EXECUTED != 0 {
                        self.deferred.push(c);
                    }
                }
            }
        }
        waiting.sort_unstable();
        self.deferred.sort_unstable();
        for c in waiting {
            self.on_registered(now, c);
        }
        self.fail_refused(now);
    }

    /// Remembers that `op`, of a step `adopt_executes` takes over, was answered or given
    /// up (see `settled`); `queued`: given up while still queued at the transport.
    fn note_settled(&mut self, op: OpId, c: u32, queued: bool) {
        let child = &self.children[c as usize];
        if self.keeps_for_rebuild && self.journal.is_some() && self.adoptable(c, child.step) {
            self.settled.push(Settled {
                op,
                child: c,
                attempt: child.attempt,
                step: child.step,
                execute_after_restart: child.execute_after_restart,
                queued,
                left: false,
            });
        }
    }

    /// Remembers that the `Sent` of `op`, child `c`'s operation, came in a batch the hub
    /// applies again should its commit fail (see `sent_again`); before `on_sent`, so the
    /// step is the operation's.
    fn note_sent_again(&mut self, op: OpId, c: u32) {
        let child = &self.children[c as usize];
        if self.keeps_for_rebuild
            && self.journal.is_some()
            && child.state == ChildState::InProgress
            && self.adoptable(c, child.step)
        {
            self.sent_again.push(Settled {
                op,
                child: c,
                attempt: child.attempt,
                step: child.step,
                execute_after_restart: child.execute_after_restart,
                queued: true,
                left: false,
            });
        }
    }

    /// Whether an engine rebuilt after a failed commit takes over the operation of step
    /// `step` of child `c` (see `adopt_executes`): a reboot's or factory reset's Execute,
    /// a firmware update's Package URI Write or Execute of Update: the steps that must
    /// not be carried out twice, nor be taken as not done when they were.
    fn adoptable(&self, c: u32, step: u8) -> bool {
        match self.parents[self.children[c as usize].parent as usize].kind() {
            JobKind::RebootDevice | JobKind::FactoryResetDevice => step == 0,
            JobKind::FirmwareUpdate => matches!(step, FW_WRITE_URI | FW_EXECUTE),
            _ => false,
        }
    }

    /// Whether step `step` of child `c` is an Execute whose `Sent` sets
    /// `FLAG_EXECUTE_SENT` (see `on_sent`).
    fn executes_at(&self, c: u32, step: u8) -> bool {
        match self.parents[self.children[c as usize].parent as usize].kind() {
            JobKind::RebootDevice | JobKind::FactoryResetDevice => step == 0,
            JobKind::FirmwareUpdate => step == FW_EXECUTE,
            _ => false,
        }
    }

    /// Has the engine keep what an engine rebuilt from the store after a failed commit
    /// takes over (`settled`, `sent_again`; see `adopt_executes`), from now until
    /// [`JobEngine::committed`] says the commit succeeded. The hub calls it on an engine
    /// over a store; an engine rebuilt after a failed commit keeps doing it. An engine
    /// driven without the hub ([`JobEngine::restore`], [`JobEngine::take_journal`]) is
    /// never rebuilt that way and keeps none of it: nothing there would clear it.
    pub(crate) fn keep_for_rebuild(&mut self) {
        self.keeps_for_rebuild = true;
    }

    /// Everything the engine did is durable: the answers it took can no longer be
    /// applied again (see `settled`).
    pub(crate) fn committed(&mut self) {
        self.settled.clear();
        self.sent_again.clear();
        self.sent_below = self.next_op;
    }

    /// A reboot or factory reset whose Execute `earlier` sent, and which `earlier` still
    /// waits on or whose answer it took since the last commit that succeeded, is restored
    /// as if its answer were lost (the next registration is the reboot, within
    /// `reboot_wait`); a firmware update whose Package URI Write or Execute of Update is
    /// in the same case is restored waiting for its device. But the answer may be in the
    /// failed batch,
    /// applied again soon. The child takes `earlier`'s operation back, so that answer
    /// counts (without it a reboot ended `timedOut`, or a retry executed it twice; a
    /// refused Write went unseen and a package the device already held could be
    /// installed; an Execute of Update still queued at the transport went out behind the
    /// rebuilt engine's Read of `/5/0`, which then took the update under way for a
    /// download and, once the device rebooted into the new image, wrote the package again
    /// and installed it twice); the per-device timeout starts again.
    ///
    /// What the child takes over is what is durable plus what the failed batch, applied
    /// again, brings: an operation whose `Sent` came in that batch (`sent_again`) is taken
    /// back as still queued, whatever followed it in the batch (its answer, a
    /// cancellation), and `FLAG_EXECUTE_SENT` is not carried for it, so the hub holds
    /// that `Sent` with the batch ([`JobEngine::awaits_sent`]) and the batch's events
    /// reach the child in the order they came. Should the child not be taken back (its
    /// device went offline in the batch), the flag is carried: no engine waits for that
    /// `Sent` then, and the Execute is never sent twice.
    fn adopt_executes(&mut self, now: Instant, earlier: &JobEngine) {
        // A `Sent` (or answer) the earlier engine took is the transport's fact, whether or
        // not the batch that carried it committed: the same attempt keeps it, so an
        // Execute that left is never sent again. Only with a transport that reports
        // `Sent`: otherwise the flag was set at the handover, and an Execute handed over
        // in the failed batch never went out.
        //
        // Except a `Sent` taken from the failed batch itself (`sent_again`): that batch is
        // applied again, this `Sent` in its place, so the Execute is taken over as still
        // queued (below) and counts as sent only once its `Sent` is applied again, after
        // the events that came before it (a registration before it is no proof of the
        // reboot). Carried ahead, the flag would let those events see an Execute that had
        // not left yet. Such a child not taken over after all (its device went offline
        // in the batch, say) gets the flag after all, below: no engine waits for its
        // `Sent` then, and the Execute must not go out twice.
        let sent_in_batch: Vec<u32> = earlier
            .sent_again
            .iter()
            .filter(|s| {
                earlier.children.range().contains(&s.child)
                    && earlier.executes_at(s.child, s.step)
                    && earlier.children[s.child as usize].attempt == s.attempt
            })
            .map(|s| s.child)
            .collect();
        if earlier.config.transport_reports_sent {
            for c in self.children.range() {
                if !sent_in_batch.contains(&c) {
                    self.carry_execute_sent(earlier, c);
                }
            }
        }
        // An Execute given up while queued whose `Sent` came for good (see `Settled::left`)
        // left: the child of the same attempt counts it as sent, like one whose flag the
        // earlier engine set.
        for s in earlier.settled.iter().filter(|s| s.left) {
            let c = s.child;
            if !earlier.children.range().contains(&c)
                || !self.children.range().contains(&c)
                || !earlier.executes_at(c, s.step)
            {
                continue;
            }
            let new = &self.children[c as usize];
            if new.attempt == s.attempt
                && new.device == earlier.children[c as usize].device
                && !new.state.is_terminal()
                && new.flags & FLAG_EXECUTE_SENT == 0
            {
                self.children[c as usize].flags |= FLAG_EXECUTE_SENT;
                self.mark_child(c);
            }
        }
        // Only operations that went out: one made in the failed batch was never sent
        // (its answer would never come, and a refusal of the one before it would be lost).
        let outstanding = earlier.ops.iter().filter_map(|(&op, &c)| {
            let old = &earlier.children[c as usize];
            (op.0 < earlier.sent_below
                && old.op == Some(op)
                && old.state == ChildState::InProgress
                && earlier.adoptable(c, old.step))
            .then_some(Settled {
                op,
                child: c,
                attempt: old.attempt,
                step: old.step,
                execute_after_restart: old.execute_after_restart,
                queued: earlier.unsent.contains(&op),
                left: false,
            })
        });
        // Those whose `Sent` came in the failed batch first: still queued, whatever came
        // after it in that batch (its answer, a cancellation), since the batch is applied
        // again (its `Sent` is never dropped: the hub holds it outside its bounds, and
        // hands it over once every event before it is gone).
        let mut adopted: Vec<Settled> = earlier
            .sent_again
            .iter()
            .copied()
            .chain(earlier.settled.iter().copied())
            .chain(outstanding)
            .filter(|s| {
                let (op, c, attempt) = (s.op, s.child, s.attempt);
                if op.0 >= earlier.sent_below || !self.children.range().contains(&c) {
                    return false;
                }
                let new = &self.children[c as usize];
                if new.attempt != attempt || new.op.is_some() {
                    return false;
                }
                match self.parents[new.parent as usize].kind() {
                    // Restored as executed, waiting for the registration; or restored
                    // waiting for its device with the Execute still in the transport's
                    // queue (no `Sent` yet): it takes that one back rather than send a
                    // second.
                    JobKind::RebootDevice | JobKind::FactoryResetDevice => {
                        (new.state == ChildState::InProgress && new.flags & FLAG_EXECUTE_SENT != 0)
                            || (new.state == ChildState::WaitingForDevice
                                && new.step == 0
                                && (s.queued || new.flags & FLAG_EXECUTE_SENT != 0)
                                && !is_offline(&self.devices, &new.device))
                    }
                    // Restored waiting for its device at the step of the operation: the
                    // Write not known answered, or the Execute of Update not known
                    // answered (queued, sent, or answered in the failed batch).
                    JobKind::FirmwareUpdate => {
                        new.state == ChildState::WaitingForDevice
                            && new.step == s.step
                            && !is_offline(&self.devices, &new.device)
                            && match s.step {
                                FW_WRITE_URI => {
                                    new.flags & (FLAG_URI_WRITTEN | FLAG_EXECUTE_SENT) == 0
                                }
                                _ => new.flags & FLAG_EXECUTED == 0,
                            }
                    }
                    _ => false,
                }
            })
            .collect();
        // One operation a child: one sent in the failed batch, then an answered one, then
        // an outstanding one (a stable sort).
        adopted.sort_by_key(|s| s.child);
        adopted.dedup_by_key(|s| s.child);
        let mut taken_back_queued: Vec<u32> = Vec::new();
        for s in adopted {
            let (op, c) = (s.op, s.child);
            if self.children[c as usize].state == ChildState::WaitingForDevice
                && !self.child_apply(now, c, ChildEvent::DeviceOnline)
            {
                continue;
            }
            if s.queued {
                taken_back_queued.push(c);
            }
            let child = &mut self.children[c as usize];
            child.step = s.step;
            child.execute_after_restart = s.execute_after_restart;
            child.op = Some(op);
            // The restore's wait for a registration no longer applies.
            child.next_poll = None;
            self.ops.insert(op, c);
            if s.queued {
                // Still queued at the transport: its `Sent` starts the timeout.
                self.unsent.insert(op);
            } else {
                self.arm_deadline(now, c);
            }
            self.mark_child(c);
        }
        // The children whose Execute's `Sent` came in the failed batch and that were not
        // taken back waiting for it: it left, so it counts (see above).
        for c in sent_in_batch {
            if !taken_back_queued.contains(&c) {
                self.carry_execute_sent(earlier, c);
            }
        }
    }

    /// Sets `FLAG_EXECUTE_SENT` on child `c` when `earlier` (the engine this one replaces
    /// after a failed commit, with a transport that reports `Sent`) counts the Execute of
    /// the same attempt as sent and this one does not (see `adopt_executes`).
    fn carry_execute_sent(&mut self, earlier: &JobEngine, c: u32) {
        if !earlier.config.transport_reports_sent
            || !earlier.children.range().contains(&c)
            || !self.children.range().contains(&c)
        {
            return;
        }
        let old = &earlier.children[c as usize];
        let new = &self.children[c as usize];
        if old.flags & FLAG_EXECUTE_SENT != 0
            && new.flags & FLAG_EXECUTE_SENT == 0
            && old.attempt == new.attempt
            && old.device == new.device
            && !new.state.is_terminal()
        {
            self.children[c as usize].flags |= FLAG_EXECUTE_SENT;
            self.mark_child(c);
        }
    }

    /// Resumes the children [`JobEngine::carry_devices_from`] kept back, whose devices
    /// are still online and who still wait for them (a registration since resumed them
    /// the ordinary way). The hub calls it once the batch whose commit failed has been
    /// applied again; the steps go out with that batch's commit.
    pub(crate) fn resume_deferred(&mut self, now: Instant) {
        if self.deferred.is_empty() {
            return;
        }
        for c in std::mem::take(&mut self.deferred) {
            if !self.children.range().contains(&c) {
                continue; // dropped by history retention
            }
            let child = &self.children[c as usize];
            if child.state != ChildState::WaitingForDevice
                || self.holders.get(&child.device) != Some(&c)
                || is_offline(&self.devices, &child.device)
            {
                continue;
            }
            if self.parents[child.parent as usize].kind() != JobKind::FirmwareUpdate {
                self.on_registered(now, c);
            } else if self.child_apply(now, c, ChildEvent::DeviceOnline) {
                // Not a registration: the device kept its download and the observation
                // of `/5/0` (whose notifications reach this engine by device). Read the
                // state again, keeping the observation, which the child's end cancels.
                // One that may have gone out unanswered counts as made.
                self.arm_deadline(now, c);
                let observed = !self.host_observes_firmware();
                let child = &mut self.children[c as usize];
                if observed && (child.step == FW_OBSERVE || child.flags & FLAG_OBSERVING != 0) {
                    child.flags |= FLAG_OBSERVING;
                }
                child.step = FW_SYNC;
                child.next_poll = None;
                child.polls = 0;
                self.drive(now, c);
            }
        }
        self.fail_refused(now);
    }

    /// Tells the engine whether its transport emits [`DeviceEvent::Sent`] when an
    /// operation leaves for its device (the transport's `reports_sent`; default `false`).
    /// The hub sets it from its transport; set it before the first operation when you
    /// drive the engine yourself.
    ///
    /// With `true`, a reboot's, factory reset's or firmware update's Execute counts as
    /// possibly carried out only once its `Sent` (or its answer) came, a registration
    /// while the child's operation is still queued proves nothing and leaves the
    /// operation to go to the new registration, an operation that times out before its
    /// `Sent` is sent again (within [`EngineConfig::max_resends`]: it never reached the
    /// device), and an attempt's per-device timeout starts at its first `Sent`. With
    /// `false`, an operation counts as sent once [`JobEngine::poll_op`] gave it out, and
    /// the timeout starts with the attempt. Operations already given out keep the rule
    /// they were given out under, except that turning it off counts every one still
    /// waiting for its `Sent` as sent at `now` (an Execute among them as carried out, and
    /// its attempt's timeout starts then).
    pub fn set_transport_reports_sent(&mut self, now: Instant, reports: bool) {
        self.config.transport_reports_sent = reports;
        if !reports {
            let mut unsent: Vec<(OpId, u32)> = self
                .unsent
                .drain()
                .filter_map(|op| self.ops.get(&op).map(|&c| (op, c)))
                .collect();
            // In submission order, so the outcome does not depend on the set's order.
            unsent.sort_unstable_by_key(|&(op, _)| op.0);
            for (_, c) in unsent {
                self.on_sent(now, c);
            }
        }
    }

    /// Whether the engine waits for [`DeviceEvent::Sent`] (see
    /// [`JobEngine::set_transport_reports_sent`]).
    pub fn transport_reports_sent(&self) -> bool {
        self.config.transport_reports_sent
    }

    /// Whether the engine still waits for the answer to `op`: false once its child
    /// ended (cancelled, aborted, failed) or moved on, and for the fire-and-forget
    /// operations it never waits for (a cancelled observation).
    pub fn is_outstanding(&self, op: OpId) -> bool {
        self.ops.contains_key(&op)
    }

    /// Whether the engine waits for the [`DeviceEvent::Sent`] of `op` (an operation of a
    /// child in progress, handed to a transport that reports `Sent`, neither its `Sent`
    /// nor its answer taken yet). At most one such operation per child in progress. An
    /// engine rebuilt after a failed commit waits only for what the one it replaced
    /// waited for (it takes those waits over), so a `Sent` no engine waits for changes
    /// nothing, now or later.
    ///
    /// It also waits for the `Sent` of an operation whose `Sent` it took from a batch
    /// whose commit has not succeeded yet (see `sent_again`): that batch is applied again
    /// to an engine rebuilt from the store, which takes the operation over as still
    /// queued and needs the `Sent` in its place (the hub keeps the batch's events, this
    /// `Sent` among them, while the store refuses it, even when memory could not be
    /// rebuilt yet).
    ///
    /// And for the `Sent` of an operation given up while still queued at the transport
    /// since that commit (a child cancelled, see `settled`): should the commit fail, the
    /// engine rebuilt from the store (where the child is still in progress) takes the
    /// operation over as still queued and waits for its `Sent`. While the store stays
    /// poisoned this engine stays, and the hub must hold that `Sent` for the one rebuilt
    /// later: dropped, the rebuilt engine would wait for a `Sent` that never comes, and
    /// take the transport's time-out for a request that never left (an Execute sent
    /// twice).
    pub(crate) fn awaits_sent(&self, op: OpId) -> bool {
        self.unsent.contains(&op)
            || self.sent_again.iter().any(|s| s.op == op)
            || self.settled.iter().any(|s| s.op == op && s.queued)
    }

    /// [`JobEngine::handle_event`] for a [`DeviceEvent::Sent`] the hub hands over outside
    /// any batch (held through the hub's bound of failed commits, every event before it
    /// dropped): nothing applies it again, so it counts as
    /// taken for good. An engine rebuilt after a later failed commit takes its operation
    /// over as sent (an Execute as carried out), as this one counts it, instead of
    /// waiting for a `Sent` that never comes again. Any other event is handled as by
    /// `handle_event`.
    ///
    /// An operation given up while still queued (see `awaits_sent`) is then noted as
    /// left: the engine rebuilt after a later failed commit takes it over as sent.
    pub(crate) fn handle_sent_for_good(&mut self, now: Instant, event: &DeviceEvent) {
        self.handle_event(now, event);
        if let DeviceEvent::Sent { op, .. } = event {
            self.sent_again.retain(|s| s.op != *op);
            for s in self.settled.iter_mut().filter(|s| s.op == *op && s.queued) {
                s.queued = false;
                s.left = true;
            }
        }
    }

    // ---- poll_* ----

    /// The next operation to submit to the transport. Every one must go out, even one
    /// whose child has ended since: drain this after every call, as the hub does under
    /// its lock (a job created and cancelled before a drain still sends its first
    /// operations).
    ///
    /// When an operation counts as having reached the device depends on the transport
    /// (see [`JobEngine::set_transport_reports_sent`]). With one that reports
    /// [`DeviceEvent::Sent`], a reboot's, factory reset's or firmware update's Execute (or
    /// a Package URI Write) counts only once its `Sent` or its answer came: a registration
    /// before that proves nothing (the request is still queued for a sleeping device, and
    /// goes to the new registration), and the attempt's per-device timeout starts at the
    /// first `Sent`. With one that does not, the engine counts an operation as sent once
    /// it is taken from here: a registration after a reboot's Execute was taken is the
    /// reboot's proof, and the timeout starts at once.
    pub fn poll_op(&mut self) -> Option<DeviceOp> {
        self.outbox.pop_front()
    }

    /// The next batch of values read from a device, for the twin.
    pub fn poll_twin_update(&mut self) -> Option<TwinUpdate> {
        self.twin_updates.pop_front()
    }

    /// When [`JobEngine::handle_timeout`] should next run. Drain [`JobEngine::poll_op`]
    /// first: queued operations are not reflected here.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut best = self.timers.peek().map(|Reverse((at, _))| *at);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        consider(self.polls.peek().map(|Reverse((at, _))| *at));
        for &p in &self.active {
            consider(
                self.parents[p as usize]
                    .deadlines
                    .front()
                    .map(|(at, _, _)| *at),
            );
        }
        best
    }

    // ---- internals: parents ----

    /// The wall-clock end time of a record of job `p` that ends at `now`: `now`, or while
    /// the job expires the time its time ran out (never before the record's `started`).
    fn end_wall(&self, now: Instant, p: u32, started: Option<Timestamp>) -> Timestamp {
        match self.ending_at {
            Some((q, due)) if q == p => due.max(started.unwrap_or_default()),
            _ => self.wall(now),
        }
    }

    fn parent_transition(&mut self, now: Instant, p: u32, ev: ParentEvent) -> bool {
        self.mark_parent(p);
        let wall = self.wall(now);
        let end_wall = self.end_wall(now, p, self.parents[p as usize].started);
        let par = &mut self.parents[p as usize];
        let Some(to) = par.state.next(ev) else {
            return false;
        };
        par.state = to;
        if to == ParentState::Running {
            par.started = Some(wall);
        }
        if to.is_terminal() {
            // Only the start sets the start time: a job cancelled while enqueued never
            // started and keeps none, as its children do. A job that expires ends at its
            // expiry, but never before a child that ended (its answer applied before the
            // expiry timer ran).
            let end_wall = if self.ending_at.is_some_and(|(q, _)| q == p) {
                let (first, end) = (par.first, par.end);
                (first..end)
                    .filter_map(|c| self.children[c as usize].ended)
                    .fold(end_wall, Timestamp::max)
            } else {
                end_wall
            };
            let par = &mut self.parents[p as usize];
            par.ended = Some(end_wall);
            par.deadlines.clear();
            self.active.remove(&p);
        }
        true
    }

    fn start_parent(&mut self, now: Instant, p: u32) {
        if !self.parent_transition(now, p, ParentEvent::Start) {
            return;
        }
        if let Some(max) = self.parents[p as usize].spec.max_execution_time {
            self.timers.push(Reverse((now + max, Timer::JobExpire(p))));
        }
        self.pump(now, p);
        self.check_complete(now, p);
    }

    fn cancel_unfinished(&mut self, now: Instant, p: u32) {
        let par = &self.parents[p as usize];
        for c in par.first..par.end {
            if !self.children[c as usize].state.is_terminal() {
                self.child_apply(now, c, ChildEvent::Cancel);
            }
        }
    }

    fn check_complete(&mut self, now: Instant, p: u32) {
        let par = &self.parents[p as usize];
        if par.state != ParentState::Running || par.stats.finished() != par.stats.device_count {
            return;
        }
        // A removed device's child fails (`deviceRemoved`) but is no failure of the job:
        // a job whose other children all succeeded completes.
        let ev = if par.stats.failed == par.stats.removed && par.stats.cancelled == 0 {
            ParentEvent::AllSucceeded
        } else {
            ParentEvent::SomeFailed
        };
        self.parent_transition(now, p, ev);
    }

    fn check_drained(&mut self, now: Instant, p: u32) {
        let par = &self.parents[p as usize];
        if par.state == ParentState::Cancelling && par.stats.finished() == par.stats.device_count {
            self.parent_transition(now, p, ParentEvent::Drained);
        }
    }

    fn check_abort(&mut self, now: Instant, p: u32) -> bool {
        let par = &self.parents[p as usize];
        if par.state != ParentState::Running {
            return false;
        }
        // A removed device's child is neither a failure of the rollout nor a finished one.
        let failed = par.stats.failed - par.stats.removed;
        let finished = par.stats.succeeded + failed;
        let hit = par.spec.abort_rules.iter().enumerate().find_map(|(i, r)| {
            let matching = match r.on {
                None => failed,
                Some(k) => par.failures[k as usize],
            };
            (matching > 0
                && finished >= r.min_finished as u64
                && matching as f64 * 100.0 >= r.threshold_percent * finished as f64)
                .then_some((i, matching))
        });
        let Some((rule, matching)) = hit else {
            return false;
        };
        self.parent_transition(now, p, ParentEvent::Abort);
        self.parents[p as usize].ending = Some(Ending::Aborted {
            rule,
            matching,
            finished,
        });
        self.cancel_unfinished(now, p);
        true
    }

    /// Starts as many children as the rollout limits allow. Under a graceful cancel
    /// nothing new starts, but held in-flight children still go on as slots open.
    fn pump(&mut self, now: Instant, p: u32) {
        loop {
            let par = &mut self.parents[p as usize];
            let cancelling = par.state == ParentState::Cancelling;
            if par.state != ParentState::Running && !cancelling {
                return;
            }
            if let Some(max) = par.spec.rollout.max_in_flight
                && par.stats.running >= max as u64
            {
                return;
            }
            // Children already started go on before new ones start (no rate applies).
            if let Some(c) = par.held.pop_front() {
                self.resume_held(now, c);
                continue;
            }
            if cancelling {
                return;
            }
            let rate = par.rate();
            if let Some(rate) = rate {
                while par
                    .window
                    .front()
                    .is_some_and(|&t| t + Duration::from_secs(60) <= now)
                {
                    par.window.pop_front();
                }
                if par.window.len() >= rate {
                    let wake = par.window[par.window.len() - rate] + Duration::from_secs(60);
                    if par.wake_at.is_none_or(|w| w > wake) {
                        par.wake_at = Some(wake);
                        self.timers.push(Reverse((wake, Timer::RolloutWake(p))));
                    }
                    return;
                }
            }
            let next = loop {
                if let Some(c) = par.requeued.pop_front() {
                    if self.children[c as usize].state == ChildState::Pending {
                        break Some(c);
                    }
                    continue;
                }
                if par.cursor >= par.end {
                    break None;
                }
                let c = par.cursor;
                par.cursor += 1;
                if self.children[c as usize].state == ChildState::Pending {
                    break Some(c);
                }
            };
            let Some(c) = next else {
                return;
            };
            let device = &self.children[c as usize].device;
            if self.holders.contains_key(device) {
                self.blocked.entry(device.clone()).or_default().push_back(c);
                continue;
            }
            if rate.is_some() {
                par.window.push_back(now);
            }
            self.start_child(now, c);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::JobStart(p) => self.start_parent(now, p),
            Timer::RolloutWake(p) => {
                let par = &mut self.parents[p as usize];
                if par.wake_at.is_some_and(|w| w <= now) {
                    par.wake_at = None;
                }
                self.pump(now, p);
            }
            Timer::JobExpire(p) => {
                // The job ended when its time ran out, not when the timer ran.
                let par = &self.parents[p as usize];
                let wall = self.wall(now);
                let due = match (par.started, par.spec.max_execution_time) {
                    (Some(started), Some(max)) => started.saturating_add(max).min(wall),
                    _ => wall,
                };
                self.ending_at = Some((p, due));
                self.expire(now, p);
                self.ending_at = None;
            }
            Timer::Retry(c, attempt) => {
                self.mark_child(c);
                let child = &self.children[c as usize];
                if child.state != ChildState::RetryWait || child.attempt != attempt {
                    return;
                }
                if !is_offline(&self.devices, &child.device) && self.hold_if_full(c) {
                    return;
                }
                self.retry_due(now, c);
            }
        }
    }

    /// Whether the child's parent has `max_in_flight` children in progress; then the
    /// child is queued to go on when one of them ends (see `Parent::held`).
    fn hold_if_full(&mut self, c: u32) -> bool {
        let child = &mut self.children[c as usize];
        let par = &mut self.parents[child.parent as usize];
        // Under a graceful cancel nothing new starts, but the bound still holds for
        // in-flight children that come back: they wait for a slot as before.
        let full = matches!(par.state, ParentState::Running | ParentState::Cancelling)
            && par
                .spec
                .rollout
                .max_in_flight
                .is_some_and(|max| par.stats.running >= max as u64);
        if full && child.held.is_none() {
            child.held = Some(child.state);
            par.held.push_back(c);
            // A device that came back is not offline: its timeout starts when the child
            // goes on (`resume` arms it), not while the child waits for a slot.
            if child.state == ChildState::WaitingForDevice {
                child.deadline = None;
            }
        }
        full
    }

    /// A held child goes on, if it still waits for what it was held at.
    fn resume_held(&mut self, now: Instant, c: u32) {
        let child = &mut self.children[c as usize];
        let held_as = child.held.take();
        let online = !is_offline(&self.devices, &child.device);
        let state = child.state;
        if held_as != Some(state) {
            return;
        }
        match state {
            ChildState::RetryWait => self.retry_due(now, c),
            ChildState::WaitingForDevice
                if online && self.child_apply(now, c, ChildEvent::DeviceOnline) =>
            {
                self.resume(now, c);
            }
            _ => {}
        }
    }

    /// A child's retry came due: its next attempt starts (or waits for its device).
    fn retry_due(&mut self, now: Instant, c: u32) {
        let child = &mut self.children[c as usize];
        child.attempt = child.attempt.saturating_add(1);
        child.step = 0;
        child.execute_after_restart = false;
        child.execute_unconfirmed = false;
        // An observation of /5/0 the last attempt opened goes on serving this one (a
        // second would be left on the device: only the newest is cancelled at the end).
        child.flags &= FLAG_OBSERVING;
        child.resends = 0;
        child.polls = 0;
        if is_offline(&self.devices, &child.device) {
            self.child_apply(now, c, ChildEvent::RetryDueOffline);
        } else if self.child_apply(now, c, ChildEvent::RetryDue) {
            self.arm_deadline(now, c);
            self.drive(now, c);
        }
    }

    fn expire(&mut self, now: Instant, p: u32) {
        if !self.parent_transition(now, p, ParentEvent::Expire) {
            return;
        }
        self.parents[p as usize]
            .ending
            .get_or_insert(Ending::Expired);
        let par = &self.parents[p as usize];
        for c in par.first..par.end {
            let child = &mut self.children[c as usize];
            match child.state {
                ChildState::Pending => {
                    self.child_apply(now, c, ChildEvent::Cancel);
                }
                ChildState::WaitingForDevice => {
                    child.failure = Some(Box::new(FailureReason::DeviceOffline));
                    self.child_apply(now, c, ChildEvent::Fail);
                }
                ChildState::InProgress => {
                    child.failure = Some(Box::new(if child.flags & FLAG_DEFERRED != 0 {
                        FailureReason::FirmwareUpdateDeferred
                    } else {
                        FailureReason::TimedOut
                    }));
                    self.child_apply(now, c, ChildEvent::Fail);
                }
                ChildState::RetryWait => {
                    child
                        .failure
                        .get_or_insert(Box::new(FailureReason::TimedOut));
                    self.child_apply(now, c, ChildEvent::Fail);
                }
                _ => {}
            }
        }
    }

    // ---- internals: children ----

    /// Whether a child's attempt is in flight, which a graceful cancel lets run to its
    /// end: in progress, or waiting for its device that went offline after the attempt
    /// reached it (the device may go on with it, a firmware update above all). An attempt
    /// that never reached its device, or a retry not yet begun, is not.
    fn in_flight(&self, c: u32) -> bool {
        let child = &self.children[c as usize];
        match child.state {
            ChildState::InProgress => true,
            ChildState::WaitingForDevice => child.flags & FLAG_TOUCHED != 0,
            _ => false,
        }
    }

    /// A child's transition, and under a graceful cancel the cancellation of a child that
    /// is not (or no longer) in flight: nothing new starts there.
    fn child_apply(&mut self, now: Instant, c: u32, ev: ChildEvent) -> bool {
        if !self.child_move(now, c, ev) {
            return false;
        }
        let child = &self.children[c as usize];
        if !child.state.is_terminal()
            && !self.in_flight(c)
            && par_state(&self.parents, child.parent) == ParentState::Cancelling
        {
            self.child_apply(now, c, ChildEvent::Cancel);
        }
        true
    }

    /// The single place child states change: the table, statistics, the history index,
    /// and what follows a terminal state. Only a restore calls it directly (a restart is
    /// no reason to cancel what was in progress); everything else goes through
    /// [`JobEngine::child_apply`].
    fn child_move(&mut self, now: Instant, c: u32, ev: ChildEvent) -> bool {
        self.mark_child(c);
        let child = &mut self.children[c as usize];
        let from = child.state;
        let Some((edge, to)) = from.edge(ev) else {
            return false;
        };
        child.state = to;
        self.edge_hits[edge] += 1;
        let p = child.parent;
        let par = &mut self.parents[p as usize];
        *par.stats.slot(from) -= 1;
        *par.stats.slot(to) += 1;
        if from.status() != to.status() {
            self.index.set_status(c, from.status(), to.status());
        }
        if to != ChildState::InProgress {
            if let Some(op) = self.children[c as usize].op.take() {
                self.ops.remove(&op);
                let queued = self.unsent.remove(&op);
                // Its answer may still come in a batch applied again (a cancellation
                // whose commit failed): a rebuilt engine takes it over, still waiting
                // for its `Sent` if it was queued at the transport.
                self.note_settled(op, c, queued);
            }
            self.children[c as usize].next_poll = None;
        }
        if to.is_terminal() {
            self.on_child_terminal(now, c, to);
        }
        if from == ChildState::InProgress {
            // A slot for max_in_flight may have opened.
            if par_state(&self.parents, p) == ParentState::Running && !to.is_terminal() {
                self.pump(now, p);
            }
        }
        true
    }

    fn on_child_terminal(&mut self, now: Instant, c: u32, to: ChildState) {
        let child = &self.children[c as usize];
        let wall = match self.timing_out {
            Some((t, due)) if t == c => due.max(child.started.unwrap_or_default()),
            _ => self.end_wall(now, child.parent, child.started),
        };
        let child = &mut self.children[c as usize];
        child.ended = Some(wall);
        child.deadline = None;
        if to == ChildState::Succeeded {
            child.failure = None;
        }
        let p = child.parent;
        if to == ChildState::Failed
            && let Some(f) = &child.failure
        {
            let par = &mut self.parents[p as usize];
            match **f {
                FailureReason::DeviceRemoved => par.stats.removed += 1,
                _ => par.failures[f.kind() as usize] += 1,
            }
        }
        if child.flags & FLAG_OBSERVING != 0 {
            child.flags &= !FLAG_OBSERVING;
            if !is_offline(&self.devices, &child.device) {
                // Fire and forget: the answer carries an id the engine does not track.
                let op = DeviceOp {
                    id: OpId(self.next_op),
                    device: child.device.clone(),
                    request: DeviceRequest::CancelObserve {
                        path: Lwm2mPath::instance(5, 0),
                    },
                };
                self.next_op += 1;
                self.outbox.push_back(op);
            }
        }
        // Release the device; the next job's child waiting for it may start.
        let device = self.children[c as usize].device.clone();
        if self.holders.get(&device) == Some(&c) {
            self.holders.remove(&device);
            let mut unblocked = None;
            if self.blocked.is_empty() {
                // Fast path: no child anywhere waits for a busy device.
            } else if let Some(q) = self.blocked.get_mut(&device) {
                while let Some(b) = q.pop_front() {
                    if self.children[b as usize].state == ChildState::Pending {
                        unblocked = Some(b);
                        break;
                    }
                }
                if q.is_empty() {
                    self.blocked.remove(&device);
                }
            }
            if let Some(b) = unblocked {
                let bp = self.children[b as usize].parent;
                self.parents[bp as usize].requeued.push_back(b);
                if bp != p {
                    self.pump(now, bp);
                }
            }
        }
        let state = self.parents[p as usize].state;
        match state {
            ParentState::Running if !self.check_abort(now, p) => {
                self.pump(now, p);
                self.check_complete(now, p);
            }
            ParentState::Cancelling => {
                self.pump(now, p);
                self.check_drained(now, p);
            }
            _ => {}
        }
    }

    fn start_child(&mut self, now: Instant, c: u32) {
        self.mark_child(c);
        let wall = self.wall(now);
        let child = &mut self.children[c as usize];
        self.holders.insert(child.device.clone(), c);
        child.started = Some(wall);
        child.attempt = 1;
        child.step = 0;
        child.flags = 0;
        child.execute_after_restart = false;
        child.execute_unconfirmed = false;
        child.resends = 0;
        child.polls = 0;
        if is_offline(&self.devices, &child.device) {
            self.child_apply(now, c, ChildEvent::StartOffline);
        } else if self.child_apply(now, c, ChildEvent::Start) {
            self.arm_deadline_unless_sent_reported(now, c);
            self.drive(now, c);
        }
    }

    fn arm_deadline(&mut self, now: Instant, c: u32) {
        let child = &mut self.children[c as usize];
        if child.deadline.is_some() {
            return;
        }
        let par = &mut self.parents[child.parent as usize];
        let at = now + par.spec.device_timeout;
        child.deadline = Some(at);
        par.deadlines.push_back((at, c, child.attempt));
    }

    fn on_deadline(&mut self, now: Instant, c: u32, attempt: u8, at: Instant) {
        self.mark_child(c);
        let child = &self.children[c as usize];
        if child.attempt != attempt || child.deadline != Some(at) {
            return;
        }
        let reason = match child.state {
            ChildState::InProgress if child.flags & FLAG_DEFERRED != 0 => {
                FailureReason::FirmwareUpdateDeferred
            }
            ChildState::InProgress => FailureReason::TimedOut,
            ChildState::WaitingForDevice => FailureReason::DeviceOffline,
            _ => return,
        };
        // The attempt ended at its deadline, not when the timer ran.
        self.timing_out = Some((c, self.wall(at.min(now))));
        self.fail_attempt(now, c, reason);
        self.timing_out = None;
    }

    fn fail_attempt(&mut self, now: Instant, c: u32, reason: FailureReason) {
        self.mark_child(c);
        let child = &self.children[c as usize];
        let spec = &self.parents[child.parent as usize].spec;
        let kind = reason.kind();
        let retries_used = child.attempt.saturating_sub(1) as u32;
        let retry = spec
            .retries
            .iter()
            .find(|r| r.on.is_none_or(|k| k == kind))
            .filter(|r| retries_used < r.max_retries)
            .map(|r| r.backoff(retries_used + 1));
        let child = &mut self.children[c as usize];
        child.failure = Some(Box::new(reason));
        match retry {
            Some(wait) => {
                let attempt = child.attempt;
                child.deadline = None;
                if self.child_apply(now, c, ChildEvent::Retry) {
                    self.timers
                        .push(Reverse((now + wait, Timer::Retry(c, attempt))));
                }
            }
            None => {
                crate::trace_event!(
                    info,
                    job = %self.parents[child.parent as usize].id,
                    device = child.device.as_str(),
                    reason = %child.failure.as_deref().map_or_else(String::new, |f| f.to_string()),
                    "child job failed"
                );
                self.child_apply(now, c, ChildEvent::Fail);
            }
        }
    }

    fn succeed(&mut self, now: Instant, c: u32) {
        self.child_apply(now, c, ChildEvent::Succeed);
    }

    fn submit(&mut self, c: u32, request: DeviceRequest) {
        let id = OpId(self.next_op);
        self.next_op += 1;
        let child = &mut self.children[c as usize];
        if let Some(old) = child.op.replace(id) {
            self.ops.remove(&old);
            self.unsent.remove(&old);
        }
        self.ops.insert(id, c);
        if self.config.transport_reports_sent {
            self.unsent.insert(id);
        }
        self.outbox.push_back(DeviceOp {
            id,
            device: child.device.clone(),
            request,
        });
    }

    fn schedule_poll(&mut self, now: Instant, c: u32) {
        let child = &mut self.children[c as usize];
        if child.next_poll.is_none() {
            let wait = self
                .config
                .poll_min
                .saturating_mul(1 << child.polls.min(20))
                .min(self.config.poll_interval);
            child.polls = child.polls.saturating_add(1);
            let at = later(now, wait);
            child.next_poll = Some(at);
            self.polls.push(Reverse((at, c)));
        }
    }

    fn on_poll(&mut self, now: Instant, c: u32, at: Instant) {
        self.mark_child(c);
        let child = &mut self.children[c as usize];
        if child.next_poll != Some(at) {
            return;
        }
        child.next_poll = None;
        if child.state != ChildState::InProgress {
            return;
        }
        let kind = self.parents[child.parent as usize].kind();
        if matches!(kind, JobKind::RebootDevice | JobKind::FactoryResetDevice) {
            // reboot_wait ran out with no registration after a lost Execute answer.
            return self.fail_attempt(now, c, FailureReason::TimedOut);
        }
        if !matches!(child.step, FW_AWAIT_DOWNLOAD | FW_AWAIT_UPDATE) {
            return;
        }
        if child.op.is_none() {
            self.submit(
                c,
                DeviceRequest::Read {
                    path: Lwm2mPath::instance(5, 0),
                },
            );
        }
        self.schedule_poll(now, c);
    }

    /// Submits the operation of the child's current step (nothing for waiting steps).
    fn drive(&mut self, now: Instant, c: u32) {
        self.mark_child(c);
        let child = &self.children[c as usize];
        let spec = Arc::clone(&self.parents[child.parent as usize].spec);
        let step = child.step;
        let request = match &spec.job {
            JobType::Reboot { .. } | JobType::FactoryReset { .. } => {
                if step > 0 {
                    return;
                }
                let rid = if matches!(spec.job, JobType::Reboot { .. }) {
                    4
                } else {
                    5
                };
                DeviceRequest::Execute {
                    path: Lwm2mPath::resource(3, 0, rid),
                    args: None,
                }
            }
            JobType::ConfigurationUpdate { name, value } => match step {
                0 => DeviceRequest::Write {
                    path: Lwm2mPath::instance(10241, 0),
                    mode: WriteMode::PartialUpdate,
                    content: Content {
                        values: vec![
                            (
                                Lwm2mPath::resource(10241, 0, 1),
                                ResourceValue::String(name.clone()),
                            ),
                            (
                                Lwm2mPath::resource(10241, 0, 2),
                                ResourceValue::String(value.clone()),
                            ),
                        ],
                    },
                },
                _ => DeviceRequest::Execute {
                    path: Lwm2mPath::resource(10241, 0, 3),
                    args: None,
                },
            },
            // Several paths of an LWM2M 1.1 device: one Read-Composite for them all.
            JobType::ReadDeviceProperties { paths }
                if step == 0
                    && paths.len() > 1
                    && self.devices.get(&child.device).is_some_and(|s| s.composite)
                    && paths.iter().all(|p| {
                        p.object_id()
                            .is_none_or(|o| self.may_have(&child.device, o))
                    }) =>
            {
                self.children[c as usize].flags |= FLAG_COMPOSITE;
                DeviceRequest::ReadComposite {
                    paths: paths.clone(),
                }
            }
            JobType::ReadDeviceProperties { paths } => {
                // Path by path (the flag may come from a restored or refused attempt).
                self.children[c as usize].flags &= !FLAG_COMPOSITE;
                DeviceRequest::Read {
                    path: paths[step as usize],
                }
            }
            JobType::WriteDeviceProperties { values } => {
                let (path, value) = &values[step as usize];
                DeviceRequest::Write {
                    path: *path,
                    mode: WriteMode::Replace,
                    content: Content::single(*path, value.clone()),
                }
            }
            JobType::FirmwareUpdate { package_uri, .. } => match step {
                FW_OBSERVE
                    if !self.host_observes_firmware()
                        && self.children[c as usize].flags & FLAG_OBSERVING == 0 =>
                {
                    DeviceRequest::Observe {
                        path: Lwm2mPath::instance(5, 0),
                    }
                }
                FW_OBSERVE | FW_SYNC => DeviceRequest::Read {
                    path: Lwm2mPath::instance(5, 0),
                },
                FW_WRITE_URI => DeviceRequest::Write {
                    path: Lwm2mPath::resource(5, 0, 1),
                    mode: WriteMode::Replace,
                    content: Content::single(
                        Lwm2mPath::resource(5, 0, 1),
                        ResourceValue::String(package_uri.clone()),
                    ),
                },
                FW_RESET => DeviceRequest::Write {
                    path: Lwm2mPath::resource(5, 0, 1),
                    mode: WriteMode::Replace,
                    content: Content::single(
                        Lwm2mPath::resource(5, 0, 1),
                        ResourceValue::String(String::new()),
                    ),
                },
                FW_EXECUTE => DeviceRequest::Execute {
                    path: Lwm2mPath::resource(5, 0, 2),
                    args: None,
                },
                FW_VERIFY => DeviceRequest::Read {
                    path: Lwm2mPath::resource(3, 0, 3),
                },
                _ => {
                    self.schedule_poll(now, c);
                    return;
                }
            },
        };
        if let Some(object) = request.path().object_id()
            && !self.may_have(&self.children[c as usize].device, object)
        {
            // Failed by `fail_refused` before the caller's call returns (a queue, so a
            // rollout over many such devices does not recurse once per child).
            let attempt = self.children[c as usize].attempt;
            self.refused.push_back((c, attempt, object));
            return;
        }
        if matches!(request, DeviceRequest::Execute { .. }) && !self.config.transport_reports_sent {
            // No `Sent` will say when it leaves: handed over counts as sent.
            self.children[c as usize].flags |= FLAG_EXECUTE_SENT;
        }
        self.submit(c, request);
    }

    /// Fails the children `drive` found addressing an object their device did not
    /// announce (in a loop: failing one may start the next, which may be refused too).
    fn fail_refused(&mut self, now: Instant) {
        while let Some((c, attempt, object)) = self.refused.pop_front() {
            let child = &self.children[c as usize];
            if child.state == ChildState::InProgress && child.attempt == attempt {
                self.fail_attempt(now, c, FailureReason::NotAnnounced { object });
            }
        }
    }

    /// Whether the host observes `/5/0` for every device that announced it.
    fn host_observes_firmware(&self) -> bool {
        let fw = Lwm2mPath::instance(5, 0);
        self.config.host_observes.iter().any(|p| p.contains(&fw))
    }

    fn on_response(&mut self, now: Instant, c: u32, result: &Result<DeviceReply, DeviceError>) {
        self.mark_child(c);
        if self.children[c as usize].state != ChildState::InProgress {
            return;
        }
        match result {
            Err(DeviceError::NotRegistered) => {
                let kind = self.parents[self.children[c as usize].parent as usize].kind();
                let child = &mut self.children[c as usize];
                if child.flags & FLAG_TOUCHED == 0 {
                    // The attempt never reached the device: its timeout starts only once
                    // the device is back.
                    child.deadline = None;
                }
                if matches!(kind, JobKind::RebootDevice | JobKind::FactoryResetDevice)
                    && child.step == 0
                {
                    // The transport refused the Execute (it was never sent, as the
                    // reboot's Execute is sent once): the device's next registration is
                    // no proof of a reboot, and the Execute goes once it is back.
                    child.flags &= !FLAG_EXECUTE_SENT;
                }
                let device = child.device.clone();
                self.device_mut(&device).offline = true;
                self.child_apply(now, c, ChildEvent::DeviceOffline);
            }
            Err(DeviceError::RegistrationEnded) => {
                // Sent, but the registration ended before the answer: the device went
                // away (its Deregistered or Expired follows) or registered anew, and
                // may or may not have carried the step out. Like any device that goes
                // offline mid-step: a reboot whose Execute went waits for the
                // registration that proves it, every other job picks its step up again
                // (see `redo_step`) once the device is back.
                // The request went out, so the attempt may have reached the device: a
                // graceful cancel lets it finish (`in_flight`).
                let child = &mut self.children[c as usize];
                child.flags |= FLAG_TOUCHED;
                let kind = self.parents[child.parent as usize].kind();
                if matches!(kind, JobKind::RebootDevice | JobKind::FactoryResetDevice)
                    && child.step == 0
                    && child.flags & FLAG_EXECUTE_SENT != 0
                {
                    // The Execute's answer is lost, as when it times out: `reboot_wait`
                    // bounds the wait for the registration that proves the reboot.
                    self.await_reboot(now, c);
                }
                let device = self.children[c as usize].device.clone();
                self.device_mut(&device).offline = true;
                self.on_offline(now, c);
            }
            // A device that refuses Read-Composite is read path by path from now on.
            Err(
                DeviceError::MethodNotAllowed
                | DeviceError::BadRequest
                | DeviceError::NotAcceptable
                | DeviceError::UnsupportedContentFormat
                | DeviceError::Code(4, _),
            ) if self.children[c as usize].flags & FLAG_COMPOSITE != 0 => {
                let child = &mut self.children[c as usize];
                child.flags &= !FLAG_COMPOSITE;
                let device = child.device.clone();
                self.remember_version(&device, false);
                self.drive(now, c);
            }
            Err(DeviceError::MethodNotAllowed)
                if self.children[c as usize].execute_after_restart
                    && self.children[c as usize].step == FW_EXECUTE =>
            {
                self.resync_after_refused_execute(now, c);
            }
            Err(e) => self.fail_attempt(now, c, FailureReason::Rejected(e.clone())),
            Ok(reply) => {
                let child = &mut self.children[c as usize];
                child.flags |= FLAG_TOUCHED;
                child.resends = 0;
                child.execute_after_restart = false;
                self.advance(now, c, reply)
            }
        }
    }

    /// The transport gave up on the child's operation; `never_sent`: it timed out in the
    /// transport's queue (no [`DeviceEvent::Sent`] came), so it never reached the device
    /// and is sent again like any other (within `max_resends`), a reboot's Execute too.
    fn on_op_timeout(&mut self, now: Instant, c: u32, never_sent: bool) {
        self.mark_child(c);
        let child = &mut self.children[c as usize];
        if child.state != ChildState::InProgress {
            return;
        }
        let kind = self.parents[child.parent as usize].kind();
        match kind {
            JobKind::RebootDevice | JobKind::FactoryResetDevice if never_sent => {}
            JobKind::RebootDevice | JobKind::FactoryResetDevice => {
                // Never sent twice: wait for the registration that proves the reboot.
                return self.await_reboot(now, c);
            }
            JobKind::FirmwareUpdate
                if matches!(child.step, FW_AWAIT_DOWNLOAD | FW_AWAIT_UPDATE) =>
            {
                // The poll chain sends the next read.
                return;
            }
            _ => {}
        }
        if child.resends >= self.config.max_resends {
            return self.fail_attempt(now, c, FailureReason::TimedOut);
        }
        child.resends += 1;
        if kind == JobKind::FirmwareUpdate && child.step == FW_EXECUTE {
            // Did the Execute arrive? The device's State tells (see firmware_content).
            if child.flags & (FLAG_EXECUTE_SENT | FLAG_EXECUTED) == 0 && !never_sent {
                child.execute_unconfirmed = true;
            }
            child.step = FW_SYNC;
        }
        if kind == JobKind::FirmwareUpdate && child.step == FW_WRITE_URI && !never_sent {
            // Did the URI arrive? A second one in Downloading would be refused (4.05).
            child.flags |= FLAG_URI_BEFORE_RESTART;
            child.step = FW_SYNC;
        }
        self.drive(now, c);
    }

    /// The device refused (4.05) the firmware Execute of Update that waited in the
    /// transport's queue while it registered again: it is not Downloaded any more, most
    /// likely because it restarted and lost the package (LwM2M's Update is executable in
    /// Downloaded only). The Execute was not carried out. As for any device that registers
    /// again mid-update, the child re-synchronises from `/5/0` (observing it again: the
    /// registration dropped the observation) and the State decides: Idle writes the
    /// package URI again (a new download), Downloaded executes again, a download under
    /// way is followed. Once per such registration: a second refusal without a new
    /// registration fails the attempt as `rejected:4.05`, and the attempt's per-device
    /// timeout (running since its first `Sent`) bounds the new download.
    fn resync_after_refused_execute(&mut self, now: Instant, c: u32) {
        let child = &mut self.children[c as usize];
        child.execute_after_restart = false;
        child.flags &= !FLAG_EXECUTE_SENT;
        child.flags |= FLAG_TOUCHED;
        child.step = FW_OBSERVE;
        child.polls = 0;
        child.next_poll = None;
        self.drive(now, c);
    }

    /// A reboot's or factory reset's Execute left and its answer is lost (the transport
    /// timed it out, or the registration ended before it came): it is never sent again.
    /// The device's next registration counts as the reboot; without one within
    /// [`EngineConfig::reboot_wait`] from now, the attempt fails as `timedOut` (and the
    /// per-device timeout, running since the Execute left, still applies if it comes
    /// first).
    fn await_reboot(&mut self, now: Instant, c: u32) {
        let child = &mut self.children[c as usize];
        child.step = 1;
        let at = later(now, self.config.reboot_wait);
        child.next_poll = Some(at);
        self.polls.push(Reverse((at, c)));
    }

    fn advance(&mut self, now: Instant, c: u32, reply: &DeviceReply) {
        let child = &self.children[c as usize];
        let spec = Arc::clone(&self.parents[child.parent as usize].spec);
        let step = child.step;
        let device = child.device.clone();
        match &spec.job {
            JobType::Reboot {
                wait_for_registration,
            }
            | JobType::FactoryReset {
                wait_for_registration,
            } => {
                if *wait_for_registration {
                    self.children[c as usize].step = 1;
                } else {
                    self.succeed(now, c);
                }
            }
            JobType::ConfigurationUpdate { .. } => {
                if step == 0 {
                    self.children[c as usize].step = 1;
                    self.drive(now, c);
                } else {
                    self.succeed(now, c);
                }
            }
            JobType::ReadDeviceProperties { paths } => {
                let DeviceReply::Content(content) = reply else {
                    return self.bad_payload(now, c, "read answered without content");
                };
                let at = self.wall(now);
                self.twin_updates.push_back(TwinUpdate {
                    device,
                    content: content.clone(),
                    at,
                });
                // A NaN or infinity cannot refresh the property (the twin refuses it and
                // keeps what it had; JSON has no such number): the read did not do what
                // it was for. The child fails, naming the path; what the device answered
                // still goes to the twin, which counts the refusal. Only at a path the
                // step asked for: a value the device added unasked is no part of the job.
                let composite = self.children[c as usize].flags & FLAG_COMPOSITE != 0;
                let asked = |p: &Lwm2mPath| {
                    if composite {
                        paths.iter().any(|a| a.contains(p))
                    } else {
                        paths.get(step as usize).is_some_and(|a| a.contains(p))
                    }
                };
                if let Some((path, x)) = content.values.iter().find_map(|(p, v)| match v {
                    ResourceValue::Float(x) if !x.is_finite() && asked(p) => Some((p, *x)),
                    _ => None,
                }) {
                    let why = format!("{path} is {x}, which a twin cannot hold");
                    return self.bad_payload(now, c, &why);
                }
                if self.children[c as usize].flags & FLAG_COMPOSITE != 0 {
                    self.succeed(now, c);
                } else {
                    self.next_step_or_succeed(now, c, paths.len());
                }
            }
            JobType::WriteDeviceProperties { values } => {
                self.next_step_or_succeed(now, c, values.len());
            }
            JobType::FirmwareUpdate {
                expected_version, ..
            } => match step {
                FW_OBSERVE | FW_SYNC | FW_AWAIT_DOWNLOAD | FW_AWAIT_UPDATE => {
                    let DeviceReply::Content(content) = reply else {
                        return self.bad_payload(now, c, "observe answered without content");
                    };
                    if step == FW_OBSERVE && !self.host_observes_firmware() {
                        self.children[c as usize].flags |= FLAG_OBSERVING;
                    }
                    self.firmware_content(now, c, content);
                }
                FW_RESET => {
                    self.children[c as usize].step = FW_WRITE_URI;
                    self.drive(now, c);
                }
                FW_WRITE_URI => {
                    let child = &mut self.children[c as usize];
                    child.flags |= FLAG_URI_WRITTEN;
                    child.step = FW_AWAIT_DOWNLOAD;
                    child.polls = 0;
                    child.next_poll = None;
                    self.schedule_poll(now, c);
                }
                FW_EXECUTE => {
                    let child = &mut self.children[c as usize];
                    child.flags |= FLAG_EXECUTED;
                    child.step = FW_AWAIT_UPDATE;
                    child.polls = 0;
                    child.next_poll = None;
                    self.schedule_poll(now, c);
                }
                _ => {
                    let DeviceReply::Content(content) = reply else {
                        return self.bad_payload(now, c, "read answered without content");
                    };
                    let at = self.wall(now);
                    self.twin_updates.push_back(TwinUpdate {
                        device,
                        content: content.clone(),
                        at,
                    });
                    let actual = match content.get(&Lwm2mPath::resource(3, 0, 3)) {
                        Some(ResourceValue::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => String::new(),
                    };
                    match expected_version {
                        Some(expected) if *expected != actual => self.fail_attempt(
                            now,
                            c,
                            FailureReason::UnexpectedVersion {
                                expected: expected.clone(),
                                actual,
                            },
                        ),
                        _ => self.succeed(now, c),
                    }
                }
            },
        }
    }

    fn bad_payload(&mut self, now: Instant, c: u32, why: &str) {
        self.fail_attempt(
            now,
            c,
            FailureReason::Rejected(DeviceError::BadPayload(why.to_owned())),
        );
    }

    fn next_step_or_succeed(&mut self, now: Instant, c: u32, len: usize) {
        let child = &mut self.children[c as usize];
        child.step += 1;
        if child.step as usize >= len {
            self.succeed(now, c);
        } else {
            self.drive(now, c);
        }
    }

    /// Decides the next firmware step from the device's State and Update Result.
    fn firmware_content(&mut self, now: Instant, c: u32, content: &Content) {
        let int = |r| match content.get(&Lwm2mPath::resource(5, 0, r)) {
            Some(ResourceValue::Integer(v)) => Some(*v),
            Some(ResourceValue::UnsignedInteger(v)) => Some(*v as i64),
            _ => None,
        };
        let Some(state) = int(3).and_then(|s| self.config.firmware_states.normalise(s)) else {
            return;
        };
        let result = int(5);
        if result.is_some_and(|r| r != UPDATE_DEFERRED) {
            // Another result: the deferral is over.
            self.children[c as usize].flags &= !FLAG_DEFERRED;
        }
        let flags = self.children[c as usize].flags;
        let written = flags & FLAG_URI_WRITTEN != 0;
        let executed = flags & FLAG_EXECUTED != 0;
        let failed = result.filter(|r| (2..=255).contains(r));
        let unconfirmed = self.children[c as usize].execute_unconfirmed;
        let next = if executed || flags & FLAG_EXECUTE_SENT != 0 {
            match (state, result) {
                (0, Some(1)) => FW_VERIFY,
                // Deferred (LwM2M 1.1): the device took the Execute and postponed the
                // update; it keeps the package and may apply it later. The child keeps
                // waiting for State Idle with result 1, within its per-device timeout (then
                // it fails as deferred), and does not send the Execute again.
                (_, Some(UPDATE_DEFERRED)) => {
                    self.children[c as usize].flags |= FLAG_DEFERRED | FLAG_EXECUTED;
                    FW_AWAIT_UPDATE
                }
                (_, Some(r)) if failed.is_some() => {
                    return self.fail_attempt(
                        now,
                        c,
                        FailureReason::FirmwareUpdateFailed { result: r as u8 },
                    );
                }
                // The Execute was sent but its answer never came, and the device is
                // still Downloaded: the Execute did not arrive. Send it again.
                (2, _) if !executed => FW_EXECUTE,
                (3, _) => {
                    self.children[c as usize].flags |= FLAG_EXECUTED;
                    FW_AWAIT_UPDATE
                }
                // The Execute left unanswered and the device is Idle with Update Result 0:
                // it lost its package (a restart) and installed nothing (an update under
                // way is Updating, one carried out ends with result 1, a failed one with
                // its failure). Download again, within the attempt's per-device timeout.
                (0, Some(0)) if !executed => {
                    let child = &mut self.children[c as usize];
                    child.flags &=
                        !(FLAG_EXECUTE_SENT | FLAG_URI_WRITTEN | FLAG_URI_BEFORE_RESTART);
                    child.execute_unconfirmed = false;
                    FW_WRITE_URI
                }
                (0, None) => {
                    // A State-only notification: read the whole instance to see the result.
                    if self.children[c as usize].op.is_none() {
                        self.submit(
                            c,
                            DeviceRequest::Read {
                                path: Lwm2mPath::instance(5, 0),
                            },
                        );
                    }
                    FW_AWAIT_UPDATE
                }
                _ => FW_AWAIT_UPDATE,
            }
        } else if written {
            match (state, result) {
                (2, _) => FW_EXECUTE,
                // Only an Execute of Update moves a device to Updating: ours arrived,
                // its `Sent` and answer lost. Never a download to follow (which, once
                // the device is Idle in its new image, would write the package again).
                (3, _) => {
                    self.children[c as usize].flags |= FLAG_EXECUTED;
                    FW_AWAIT_UPDATE
                }
                (0, Some(1)) if unconfirmed => {
                    self.children[c as usize].flags |= FLAG_EXECUTED;
                    FW_VERIFY
                }
                (0, Some(r)) if failed.is_some() => {
                    return self.fail_attempt(
                        now,
                        c,
                        FailureReason::FirmwareUpdateFailed { result: r as u8 },
                    );
                }
                _ => FW_AWAIT_DOWNLOAD,
            }
        } else if matches!(state, 1 | 2) {
            // The device holds a download or a package. Ours (the URI may have reached it:
            // it registered again after the Write, or the Write's answer was lost; or its
            // Package URI is the job's): follow it rather than restart it. Another (left
            // by a cancelled or timed-out job, or pushed): reset the object first, as a
            // new URI is refused outside Idle.
            let package_uri = match &self.parents[self.children[c as usize].parent as usize]
                .spec
                .job
            {
                JobType::FirmwareUpdate { package_uri, .. } => Some(package_uri.as_str()),
                _ => None,
            };
            let same_uri = matches!(
                (content.get(&Lwm2mPath::resource(5, 0, 1)), package_uri),
                (Some(ResourceValue::String(u)), Some(p)) if u == p
            );
            if flags & FLAG_URI_BEFORE_RESTART != 0 || same_uri {
                self.children[c as usize].flags |= FLAG_URI_WRITTEN;
                if state == 2 {
                    FW_EXECUTE
                } else {
                    FW_AWAIT_DOWNLOAD
                }
            } else {
                FW_RESET
            }
        } else if unconfirmed && (state == 3 || (state, result) == (0, Some(1))) {
            // Our Execute of Update may have left unseen (see the field), and the device
            // is updating, or Idle with Update Result 1: a new download resets the result
            // to 0 (LwM2M 1.1, E.6), so after the package we wrote and Downloaded, 1 is
            // our update done. Follow it, and check the version; never write the package
            // again, which would install it twice.
            self.children[c as usize].flags |= FLAG_EXECUTED;
            if state == 3 {
                FW_AWAIT_UPDATE
            } else {
                FW_VERIFY
            }
        } else {
            FW_WRITE_URI
        };
        let child = &mut self.children[c as usize];
        let before = child.step;
        child.step = next;
        if before != next {
            child.polls = 0;
            child.next_poll = None;
        }
        match next {
            FW_AWAIT_DOWNLOAD | FW_AWAIT_UPDATE => self.schedule_poll(now, c),
            _ if before != next || self.children[c as usize].op.is_none() => self.drive(now, c),
            _ => {}
        }
    }

    fn on_notification(&mut self, now: Instant, c: u32, content: &Content) {
        self.mark_child(c);
        let child = &self.children[c as usize];
        if child.state != ChildState::InProgress
            || !matches!(child.step, FW_AWAIT_DOWNLOAD | FW_AWAIT_UPDATE)
            || self.parents[child.parent as usize].kind() != JobKind::FirmwareUpdate
        {
            return;
        }
        self.firmware_content(now, c, content);
    }

    fn on_registered(&mut self, now: Instant, c: u32) {
        self.mark_child(c);
        let state = self.children[c as usize].state;
        match state {
            ChildState::WaitingForDevice if self.hold_if_full(c) => {}
            ChildState::WaitingForDevice if self.child_apply(now, c, ChildEvent::DeviceOnline) => {
                self.resume(now, c);
            }
            ChildState::InProgress if self.op_queued(c) => self.registered_while_queued(c),
            ChildState::InProgress => self.redo_step(now, c),
            // The registration dropped the device's observations (kept across retries).
            ChildState::RetryWait => self.children[c as usize].flags &= !FLAG_OBSERVING,
            _ => {}
        }
    }

    fn resume(&mut self, now: Instant, c: u32) {
        self.arm_deadline_unless_sent_reported(now, c);
        self.redo_step(now, c);
    }

    /// Whether the child's operation is still queued at the transport (handed over, no
    /// [`DeviceEvent::Sent`] nor answer yet).
    fn op_queued(&self, c: u32) -> bool {
        self.children[c as usize]
            .op
            .is_some_and(|op| self.unsent.contains(&op))
    }

    /// The child's operation left for the device ([`DeviceEvent::Sent`], or an answer
    /// that came without one): an Execute of the attempt may now have been carried out,
    /// and the attempt's per-device timeout runs from here.
    fn on_sent(&mut self, now: Instant, c: u32) {
        let child = &self.children[c as usize];
        if child.state != ChildState::InProgress {
            return;
        }
        if self.executes_at(c, child.step) && child.flags & FLAG_EXECUTE_SENT == 0 {
            self.mark_child(c);
            self.children[c as usize].flags |= FLAG_EXECUTE_SENT;
        }
        self.arm_deadline(now, c);
    }

    /// Starts the attempt's per-device timeout now, or, with a transport that reports
    /// [`DeviceEvent::Sent`], at the first `Sent` of the attempt (a sleeping device's
    /// queued request has not reached it: its time does not count).
    fn arm_deadline_unless_sent_reported(&mut self, now: Instant, c: u32) {
        if !self.config.transport_reports_sent {
            self.arm_deadline(now, c);
        }
    }

    /// The device registered while the child's operation still waits in the transport's
    /// queue: the registration is no proof of anything (the operation has not reached the
    /// device) and the operation goes to the new registration, so the child keeps waiting
    /// for it instead of starting the step again (which would send it twice). Only what
    /// the registration did to the device's state is taken in: its observations are gone,
    /// and a Package URI written before may have been lost with a restart.
    fn registered_while_queued(&mut self, c: u32) {
        self.mark_child(c);
        let child = &mut self.children[c as usize];
        if self.parents[child.parent as usize].kind() == JobKind::FirmwareUpdate {
            child.flags &= !FLAG_OBSERVING;
            if child.flags & (FLAG_EXECUTE_SENT | FLAG_URI_WRITTEN) == FLAG_URI_WRITTEN {
                child.flags &= !FLAG_URI_WRITTEN;
                child.flags |= FLAG_URI_BEFORE_RESTART;
            }
            if child.step == FW_EXECUTE && child.flags & FLAG_EXECUTE_SENT == 0 {
                // The queued Execute of Update reaches a device that may have lost its
                // package with the restart: its refusal is not final (see the field).
                child.execute_after_restart = true;
            }
        }
    }

    /// The device registered (again) while the child waited on it: it may have restarted
    /// and lost what it was doing, and the operation in flight may be lost with it. Per
    /// job type:
    ///
    /// - reboot / factory reset: once the Execute was sent, the registration is the proof
    ///   that the device rebooted: success, never a second Execute;
    /// - firmware update: re-synchronise from `/5/0`. Before Update was executed, a
    ///   download the device lost (State Idle) starts again: the package URI is written
    ///   again; a package that survived (State Downloaded) is installed; a download the
    ///   device resumed by itself (State Downloading) is followed. After Update was
    ///   executed, the registration is the expected reboot into the new image;
    /// - configuration update and write properties: start again from the first write
    ///   (both are idempotent, and a restart may have lost earlier writes);
    /// - read properties: read the current path again.
    fn redo_step(&mut self, now: Instant, c: u32) {
        let child = &mut self.children[c as usize];
        let kind = self.parents[child.parent as usize].kind();
        match kind {
            JobKind::RebootDevice | JobKind::FactoryResetDevice => {
                if child.step == 1 || child.flags & FLAG_EXECUTE_SENT != 0 {
                    self.succeed(now, c);
                } else {
                    self.drive(now, c);
                }
            }
            JobKind::FirmwareUpdate => {
                // A new registration drops observations: observe (or read) again.
                child.flags &= !FLAG_OBSERVING;
                if child.step == FW_EXECUTE
                    && child.flags & (FLAG_EXECUTE_SENT | FLAG_EXECUTED) == 0
                {
                    // The Execute of Update may have left unseen (see the field).
                    child.execute_unconfirmed = true;
                }
                if child.flags & (FLAG_EXECUTE_SENT | FLAG_URI_WRITTEN) == FLAG_URI_WRITTEN {
                    child.flags &= !FLAG_URI_WRITTEN;
                    child.flags |= FLAG_URI_BEFORE_RESTART;
                }
                child.step = FW_OBSERVE;
                child.next_poll = None;
                child.polls = 0;
                self.drive(now, c);
            }
            JobKind::UpdateDeviceConfiguration | JobKind::WriteDeviceProperties => {
                child.step = 0;
                self.drive(now, c);
            }
            JobKind::ReadDeviceProperties => self.drive(now, c),
        }
    }

    fn on_offline(&mut self, now: Instant, c: u32) {
        self.mark_child(c);
        let child = &self.children[c as usize];
        if child.state != ChildState::InProgress {
            return;
        }
        let kind = self.parents[child.parent as usize].kind();
        if matches!(kind, JobKind::RebootDevice | JobKind::FactoryResetDevice)
            && (child.step == 1 || child.flags & FLAG_EXECUTE_SENT != 0)
        {
            // Expected: the device is rebooting; we wait for it to register.
            return;
        }
        self.child_apply(now, c, ChildEvent::DeviceOffline);
    }

    /// Checks internal consistency: statistics add up and match the children, no terminal
    /// child holds a device or an operation, the history index agrees with the children.
    #[doc(hidden)]
    pub fn validate(&self) -> Result<(), String> {
        for par in self.parents.iter() {
            let mut counted = JobStatistics {
                device_count: (par.end - par.first) as u64,
                ..JobStatistics::default()
            };
            for c in par.first..par.end {
                let child = &self.children[c as usize];
                *counted.slot(child.state) += 1;
                if child.state == ChildState::Failed
                    && child
                        .failure
                        .as_deref()
                        .is_some_and(|f| *f == FailureReason::DeviceRemoved)
                {
                    counted.removed += 1;
                }
            }
            if counted != par.stats {
                return Err(format!(
                    "job {}: statistics {:?} but children say {:?}",
                    par.id, par.stats, counted
                ));
            }
            if par.stats.total() != par.stats.device_count {
                return Err(format!("job {}: statistics do not add up", par.id));
            }
            if let Some(max) = par.spec.rollout.max_in_flight
                && par.stats.running > max as u64
            {
                return Err(format!(
                    "job {}: {} children in progress, max_in_flight {max}",
                    par.id, par.stats.running
                ));
            }
            if par.state.is_terminal() && par.stats.finished() != par.stats.device_count {
                return Err(format!(
                    "job {} is {:?} with unfinished children",
                    par.id, par.state
                ));
            }
        }
        if let Some(op) = self.unsent.iter().find(|op| !self.ops.contains_key(op)) {
            return Err(format!("op {op:?} counted unsent but not outstanding"));
        }
        for (&op, &c) in &self.ops {
            let child = &self.children[c as usize];
            if child.op != Some(op) || child.state != ChildState::InProgress {
                return Err(format!("op {op:?} maps to child {c} in {:?}", child.state));
            }
        }
        for (d, &c) in &self.holders {
            let child = &self.children[c as usize];
            if child.state.is_terminal() || child.state == ChildState::Pending || child.device != *d
            {
                return Err(format!("device {d} held by child {c} in {:?}", child.state));
            }
        }
        for (c, child) in self.children.enumerate() {
            if !self.index.has_status(c, child.state.status()) {
                return Err(format!("history index disagrees on child {c}"));
            }
            if child.state.is_terminal() && child.ended.is_none() {
                return Err(format!("terminal child {c} has no end time"));
            }
        }
        Ok(())
    }

    pub(crate) fn parent_record(&self, p: u32) -> JobRecord {
        let par = &self.parents[p as usize];
        JobRecord {
            job_id: par.id.to_string(),
            parent_job_id: String::new(),
            device_id: None,
            kind: par.kind(),
            status: par.state.status(),
            start_time_utc: par.started,
            end_time_utc: par.ended,
            failure_reason: None,
            status_message: par.status_message(),
        }
    }

    pub(crate) fn child_record(&self, c: u32) -> JobRecord {
        let child = &self.children[c as usize];
        let par = &self.parents[child.parent as usize];
        let failure = child.failure.as_deref();
        let status_message = match child.state {
            ChildState::Pending => "waiting to start".to_owned(),
            ChildState::WaitingForDevice => "waiting for the device to come online".to_owned(),
            ChildState::InProgress => format!("in progress (attempt {})", child.attempt),
            ChildState::RetryWait => format!(
                "attempt {} failed ({}); retrying",
                child.attempt,
                failure.map_or_else(String::new, |f| f.to_string())
            ),
            ChildState::Succeeded if child.attempt > 1 => {
                format!("succeeded after {} attempts", child.attempt)
            }
            ChildState::Succeeded => "succeeded".to_owned(),
            ChildState::Failed => failure.map_or_else(|| "failed".to_owned(), |f| f.to_string()),
            ChildState::Cancelled => match par.ending {
                Some(Ending::Aborted { .. }) => "cancelled: the job was aborted".to_owned(),
                Some(Ending::Expired) => "cancelled: the job ran out of time".to_owned(),
                _ => "cancelled".to_owned(),
            },
        };
        JobRecord {
            job_id: format!("{}:{}", par.id, child.device),
            parent_job_id: par.id.to_string(),
            device_id: Some(child.device.clone()),
            kind: par.kind(),
            status: child.state.status(),
            start_time_utc: child.started,
            end_time_utc: child.ended,
            failure_reason: (child.state == ChildState::Failed)
                .then(|| failure.map(FailureReason::code))
                .flatten(),
            status_message,
        }
    }

    /// The history position of parent `p`'s record: parents before it plus their
    /// children.
    pub(crate) fn parent_position(&self, p: u32) -> u32 {
        p + self.parents[p as usize].first
    }

    /// The history position of child `c`'s record.
    pub(crate) fn child_position(&self, c: u32) -> u32 {
        self.children[c as usize].parent + 1 + c
    }

    /// The history position of the oldest record kept.
    pub(crate) fn record_start(&self) -> u32 {
        self.parents.start() + self.children.start()
    }

    pub(crate) fn parent_of_job(&self, id: &JobId) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// Failed children of a job, counted by failure class (those failed as
    /// [`FailureReason::DeviceRemoved`] are in no class).
    pub fn failures_by_kind(&self, id: &JobId) -> Option<Vec<(FailureKind, u64)>> {
        let &p = self.by_id.get(id)?;
        let f = &self.parents[p as usize].failures;
        Some(
            FailureKind::ALL
                .into_iter()
                .map(|k| (k, f[k as usize]))
                .collect(),
        )
    }
}

/// Whether the device is known to be offline (a free function: callers hold a child).
fn is_offline(devices: &FxHashMap<DeviceId, DeviceState>, device: &DeviceId) -> bool {
    devices.get(device).is_some_and(|s| s.offline)
}

fn par_state(parents: &Slots<Parent>, p: u32) -> ParentState {
    parents[p as usize].state
}
