//! Device jobs: a sans-IO engine for parent and child jobs, rollouts and job history.
//!
//! A job is created from a [`JobSpec`]: a type with its parameters ([`JobType`]: the
//! preview's firmware update, reboot, factory reset, configuration update, read and write
//! device properties), the target devices (frozen at creation; the hub resolves a query to
//! ids, and [`JobEngine::dry_run`] returns the set without creating anything), a start
//! time, a maximum execution time, a per-device timeout, rollout limits (devices started
//! per minute, optionally ramping up exponentially, and devices in flight), abort rules and
//! retry rules. The parent holds one child per device.
//!
//! # Driving the engine
//!
//! [`JobEngine`] owns no thread, socket or clock. Its caller (the hub, or a test harness on
//! a simulated clock) loops:
//!
//! 1. [`JobEngine::create`] / [`JobEngine::cancel`] as the service asks;
//! 2. [`JobEngine::handle_event`] for every [`DeviceEvent`](crate::resource::DeviceEvent)
//!    the transport yields (responses, time-outs, registrations, notifications; the engine
//!    ignores what is not its own);
//! 3. drain [`JobEngine::poll_op`] into the transport's `submit`
//!    and [`JobEngine::poll_twin_update`] into the registry;
//! 4. at [`JobEngine::poll_timeout`], call [`JobEngine::handle_timeout`] and go to 2.
//!
//! Time: every input takes `now: Instant` (the transport's clock). Job history needs wall
//! time (`startTimeUtc`, ...), so the engine is built with one anchor pair
//! `(Instant, Timestamp)` and maps `now` to `anchor_wall + (now - anchor)`; a spec's
//! wall-clock `start_at` maps back the same way.
//!
//! Operation ids: the engine numbers its [`OpId`](crate::resource::OpId)s from
//! [`EngineConfig::op_id_base`] ([`JOB_OP_ID_BASE`] = 2^63 by default) upwards; the hub
//! keeps its own ids below that, so the two never collide.
//!
//! # Child jobs
//!
//! The states and their transitions are the table in [`state`] ([`CHILD_TRANSITIONS`]).
//! A child starts when the rollout admits it: at most `max_per_minute` starts in any
//! sliding minute (or the ramped rate), at most `max_in_flight` children in progress (a
//! retry come due or a device come back waits for a slot too, ahead of new starts), and
//! at most one child per device across all jobs (a child whose device is busy with
//! another job waits its turn, still `enqueued`). A child whose device is offline waits
//! (`running`, "waiting for the device") until the device registers again or the job's
//! time runs out; the per-device timeout counts only once the device is online. What each
//! job type does on the device:
//!
//! | type | operations | success |
//! |---|---|---|
//! | firmware update | observe `/5/0` (or read it, when the host observes it: [`EngineConfig::host_observes`]); write `/5/0/1`; wait for State 2 (notifications, and reads 1, 2, 4, ... up to `poll_interval` s apart); execute `/5/0/2`; wait for State 0 with Update Result 1; read `/3/0/3` | the read version equals `expected_version` (when given) |
//! | reboot | execute `/3/0/4` | the answer, or a registration after the Execute was sent (with `wait_for_registration`: the next registration) |
//! | factory reset | execute `/3/0/5` | as reboot |
//! | configuration update | write `/10241/0/1,2` (partial update); execute `/10241/0/3` | the execute's answer |
//! | read device properties | read each path; each answer is a [`TwinUpdate`] | all read |
//! | write device properties | write each path (replace) | all written |
//!
//! Before anything is sent, a step's object is checked against the objects the device
//! announced in its registration (when the engine saw it): a step for an object it did
//! not announce fails at once as `objectNotAnnounced:<object>`, with nothing sent.
//!
//! Failures ([`FailureReason`], each child record's `failureReason` and status message):
//! an error answer is `rejected:<CoAP code>` (`rejected:4.04`, ...); an Update Result
//! 2..=10 is `deviceError:<code>` (kind `deviceError`, but 10, an update cancelled on the
//! device, is of kind `rejected`: the engine never cancels an update, so the device, its
//! user or another server declined it); no answer before the per-device timeout is `timedOut`;
//! a device offline when time runs out is `deviceOffline`; a device whose twin was
//! removed ([`JobEngine::forget_device`], which the hub calls for every removal) is
//! `deviceRemoved`, whether its child was in progress, waiting, or not started yet (the
//! hub fails a child as its turn comes when its device's twin is gone, and sends it
//! nothing). Update Result 11 (LwM2M 1.1: the device deferred the update after our
//! Execute; it keeps the package and may apply it within its Maximum Defer Period
//! `/5/0/13`) is no failure: the child keeps waiting for State Idle with result 1, and does
//! not send the Execute again; if the per-device timeout (or the job's time) runs out
//! first, it fails as `deferred` (kind [`FailureKind::Deferred`]), which a retry rule can
//! select to ask the device again (the retry finds the package and executes Update
//! again). A device timeout at least the devices' Maximum Defer Period waits a deferral
//! out. A matching [`RetryRule`] starts a new attempt after its backoff (the firmware
//! sequence re-synchronises from the device's State, so a retried download is not
//! repeated blindly); `deviceRemoved` is never retried, and abort rules leave it out
//! (neither failed nor finished there).
//!
//! Lost messages and restarts, with no retry rule needed (defaults in [`EngineConfig`]):
//! an operation whose answer the transport gave up on is sent again, up to
//! `max_resends` (4) times in a row, when sending it twice is harmless (reads,
//! observes, writes, the configuration apply, a firmware Execute after a read shows the
//! device still Downloaded); a reboot or factory reset is never executed twice: a
//! registration after its Execute was sent counts as the reboot, and without one the
//! attempt fails `reboot_wait` (5 min) after the Execute's answer was lost (timed out, or
//! the registration ended before it came, as a NAT rebinding does). A device that
//! registers again while its child waits on it gets the step again: a firmware download
//! it lost starts again (the package URI is written again), configuration and property
//! writes are sent again from the first, a read is sent again.
//!
//! # When an operation counts as sent
//!
//! A transport may hold a request back: the bundled LWM2M server queues requests for a
//! sleeping (queue-mode) device until it talks, and a request queued when the device
//! registers anew goes to the new registration. Such a transport reports each request's
//! first transmission as [`DeviceEvent::Sent`](crate::resource::DeviceEvent::Sent) and
//! says so (the transport's `reports_sent`; the hub copies it into
//! [`EngineConfig::transport_reports_sent`], and
//! [`JobEngine::set_transport_reports_sent`] sets it when you drive the engine yourself).
//! The engine then counts a reboot's, factory reset's or firmware update's Execute (and a
//! Package URI Write) as possibly carried out only once its `Sent` or its answer came:
//!
//! - a registration while the child's operation is still queued proves nothing: the
//!   child keeps waiting for that operation (which follows the device to its new
//!   registration) and sends nothing again; without this, a reboot job on a sleeping
//!   device that woke by registering reported success, and the Execute then rebooted the
//!   device after the job said it was done. A firmware update's Execute of Update that
//!   waited across such a registration may reach a device that restarted and lost its
//!   package: its refusal (4.05, the device is not Downloaded) does not fail the attempt
//!   but re-synchronises it from `/5/0` (observed again), as for any device that
//!   registers again mid-update, so a lost download starts again (the package URI is
//!   written again) within the attempt's per-device timeout. Once per such registration:
//!   a second refusal fails the attempt as `rejected:4.05`;
//! - an operation that times out in the transport's queue (no `Sent`) never reached the
//!   device: it is sent again within `max_resends`, a reboot's Execute too, and then
//!   fails as `timedOut`;
//! - an operation the transport answers itself before any `Sent` never reached the
//!   device either: `NotRegistered` and `QueueFull`, and `BadPayload` (the transport
//!   could not encode or send the request; a device's undecodable answer comes after
//!   the request's `Sent`). A refused Execute counts as not carried out, and the refusal
//!   does not start the per-device timeout;
//! - the per-device timeout of an attempt runs from its first `Sent`, not from when its
//!   first request was queued: a sleeping device's time in the queue does not count, as
//!   the preview's firmware `Timeout` is the time the device has to carry the update out
//!   (and as Azure IoT Hub separates waiting for a device to connect from its response
//!   timeout). A device that never wakes is bounded by the transport's queue timeout
//!   (sent again up to `max_resends` times) and the job's maximum execution time.
//!
//! With a transport that does not report `Sent` (a third-party transport that keeps the
//! trait's default), the engine cannot tell a queued request from one that
//! left: it counts an operation as sent once [`JobEngine::poll_op`] gave it out (right for
//! a transport that transmits at once), and the per-device timeout starts with the
//! attempt.
//!
//! # Parent jobs, abort and cancel
//!
//! A parent ([`PARENT_TRANSITIONS`]) is `enqueued` until its start time, then `running`;
//! it ends only after every child has: `completed` if all succeeded, `failed` if any
//! failed (a child failed as `deviceRemoved`, its twin removed from the registry, is no
//! failure of the job: like abort rules, the outcome leaves it out, and the status message
//! and [`JobStatistics::removed`] count it: `"3 devices updated, all succeeded; 1 device
//! removed"`), an [`AbortRule`] tripped (the remaining children are cancelled) or the maximum
//! execution time ran out (pending children are cancelled, waiting ones fail as
//! `deviceOffline`, in-progress ones as `timedOut`, or `deferred` when their device
//! deferred the update; the job and these children record the expiry instant as their
//! end time, however late [`JobEngine::handle_timeout`] runs, even after a restart). [`JobEngine::cancel`] with
//! [`CancelMode::Abandon`] cancels every unfinished child at once and ignores the answers of
//! operations already sent (nothing is undone on the device); with
//! [`CancelMode::FinishInFlight`] children in flight run to their end first (in progress,
//! or waiting for a device that went offline after their attempt reached it; see
//! [`CancelMode`]).
//!
//! # Restarts
//!
//! With its journal on ([`JobEngine::enable_journal`]), the engine keeps which parents
//! and children changed; [`JobEngine::take_journal`] hands them over as rows for a store
//! (the hub's [`Store`](crate::store::Store) commits them with each batch of events, and
//! before [`Hub::create_job`](crate::hub::Hub::create_job) or `cancel_job` returns).
//! Driven that way without the hub, the engine keeps nothing beside the journal (whose
//! marks are at most one per parent and child): what the hub's engine keeps between a
//! batch and its commit, for an engine rebuilt from the store should that commit fail,
//! is kept only inside the hub.
//! [`JobEngine::restore`] rebuilds an engine from the rows and resumes: a restarted hub
//! has seen no registration, so every started, unfinished child waits for its device's
//! next registration and then takes the rules above for a device that registers again: a
//! reboot or factory reset whose Execute was sent is not sent again (the registration
//! counts as the reboot; none within `reboot_wait` fails the attempt as `timedOut`); one
//! whose Execute was handed to a transport that reports `Sent`, but whose `Sent` was not
//! recorded, counts as not sent and is sent again (the transport's queue did not survive
//! the restart; only a restart between the transmission and the commit of its `Sent`
//! makes this a second reboot), a
//! firmware update re-synchronises from `/5/0` and `/3/0/3`, writes and configuration
//! updates start again from the first write, reads read again, and a child waiting for
//! a retry retries. A rollout's `max_in_flight` bounds the children in progress: those
//! waiting for their devices do not count, so the next children start in their slots
//! (never more than the bound at once), and one whose device comes back while the slots
//! are taken waits for a slot. A reboot or factory reset whose Execute was sent is not
//! one of those: it stays in progress (`running` in [`JobStatistics`]) and keeps its
//! slot until the Register that proves the reboot (an Update under a registration the
//! hub restored does not count) or until `reboot_wait` fails it, so a rollout whose
//! slots all hold such children starts no other child for up to `reboot_wait` (5 min)
//! after a restart. Scheduled starts and maximum execution times keep their
//! wall-clock times; the rollout's per-minute window and an attempt's per-device timeout
//! start again.
//!
//! # History
//!
//! Every parent and child is a [`JobRecord`] in the preview's JobResponse shape. Two ways
//! to ask: [`JobEngine::history_snapshot`] gives a [`HistorySnapshot`] that the query
//! engine runs the JSON query expressions over (filter, project, aggregate, sort, paging;
//! see [`history_query`]); [`history`] has a typed filter answered from live bitmap
//! indexes, with cursor paging (a page of at least one record: a limit of 0 is
//! [`HistoryError::ZeroLimit`], so paging until `next` is `None` always ends) and
//! group-by-failure-reason counts.
//!
//! The history is bounded by counts, [`EngineConfig::retain_jobs`] jobs and
//! [`EngineConfig::retain_children`] child records, and optionally by age,
//! [`EngineConfig::retain_for`]. Creating a job beyond either count (or restoring an
//! engine) drops the oldest finished jobs whole, and so does a job that ended longer
//! than `retain_for` ago, at the next creation or timer run; always from the oldest end
//! only (the newest job is always kept; an unfinished job keeps itself and every newer
//! one until it finishes). A cursor from before a drop continues at the oldest job kept.
//!
#![cfg_attr(feature = "memory-fleet", doc = "```")]
#![cfg_attr(not(feature = "memory-fleet"), doc = "```ignore")]
//! use std::time::{Duration, Instant};
//! use twinhub::job::{EngineConfig, JobEngine, JobId, JobSpec, JobStatus, JobType};
//! use twinhub::transport::memory::{DeviceSpec, MemoryConfig, MemoryTransport};
//! use twinhub::transport::Transport;
//! use twinhub::{DeviceId, Timestamp};
//!
//! let t0 = Instant::now();
//! let mut fleet = MemoryTransport::new(MemoryConfig::with_seed(1));
//! let ids: Vec<DeviceId> = (0..6).map(|i| DeviceId::new(&format!("dev-{i}")).unwrap()).collect();
//! for id in &ids {
//!     fleet.add_device(t0, DeviceSpec::new(id.clone())).unwrap();
//! }
//! let mut jobs = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(1_461_931_200_000));
//! let job = JobId::new("fw-2-0").unwrap();
//! let fw = JobType::FirmwareUpdate {
//!     package_uri: "coap://fw.example/pkg/2.0.bin".into(),
//!     expected_version: Some("2.0".into()),
//! };
//! jobs.create(t0, JobSpec::new(job.clone(), fw, ids)).unwrap();
//!
//! // The driver loop, on a simulated clock.
//! let mut now = t0;
//! while !jobs.job(&job).unwrap().status.is_terminal() {
//!     while let Some(op) = jobs.poll_op() {
//!         fleet.submit(now, op);
//!     }
//!     while let Some(ev) = fleet.poll_event() {
//!         jobs.handle_event(now, &ev);
//!     }
//!     if jobs.poll_op().map(|op| fleet.submit(now, op)).is_some() {
//!         continue;
//!     }
//!     now = [fleet.poll_timeout(), jobs.poll_timeout()].into_iter().flatten().min().unwrap();
//!     fleet.handle_timeout(now);
//!     jobs.handle_timeout(now);
//! }
//! let record = jobs.job(&job).unwrap();
//! assert_eq!(record.status, JobStatus::Completed);
//! assert_eq!(record.status_message, "6 devices updated, all succeeded");
//! ```

mod engine;
pub mod history;
pub mod history_query;
mod spec;
pub mod state;

#[doc(hidden)]
pub use engine::fuzz_decode_job_row;
pub use engine::{
    CancelMode, EngineConfig, EngineConfigError, FirmwareStates, JOB_OP_ID_BASE, JobEngine,
    JobProgress, JobRow, JobRowError, JobStatistics, TwinUpdate,
};
pub use history::{
    HistoryCursor, HistoryError, HistoryFilter, HistoryPage, JobRecord, RecordScope,
};
pub use history_query::{HistoryChanges, HistoryProperty, HistorySnapshot, LiveHistory};
pub use spec::{
    AbortRule, ExponentialRamp, FailureKind, FailureReason, JobId, JobIdError, JobKind, JobSpec,
    JobType, MAX_JOB_DURATION, MAX_JOB_ID_LEN, MAX_JOB_PROPERTIES, MAX_PACKAGE_URI_LEN, Misfit,
    RetryRule, Rollout, SpecError, update_result_text,
};
pub use state::{
    CHILD_TRANSITIONS, ChildEvent, ChildState, JobStatus, PARENT_TRANSITIONS, ParentEvent,
    ParentState,
};
