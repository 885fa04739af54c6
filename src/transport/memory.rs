//! An in-process simulated fleet of LWM2M-like devices behind the [`Transport`] trait.
//!
//! [`MemoryTransport`] answers [`DeviceOp`]s the way a fleet of real LWM2M devices behind the
//! bundled server would, without sockets: each simulated device holds an object tree
//! (Server `/1`, Device `/3`, Firmware Update `/5`, the vendor Config object `/10241`), answers
//! after a seeded latency, sends notifications for observed paths, registers, reboots and
//! re-registers, and fails in seeded ways (lost messages, offline periods, failed downloads,
//! devices that never answer).
//!
//! # Determinism
//!
//! Everything random comes from one seeded generator and all time comes from the `now`
//! arguments, so the same seed and the same sequence of calls give the same events, in the
//! same order, at the same instants. Timers live in a binary heap keyed by (deadline,
//! insertion sequence), which keeps ties ordered and handles 10,000+ devices cheaply.
//!
//! # The simulated device
//!
//! | path | resource | access | behaviour |
//! |---|---|---|---|
//! | `/1/0/0` | Short Server ID | R | `1` |
//! | `/1/0/1` | Lifetime | RW | seconds; an offline device's registration expires after it |
//! | `/1/0/2`, `/1/0/3` | default pmin / pmax | RW | stored only |
//! | `/1/0/7` | Binding | RW | `"U"` (or `"UQ"`) |
//! | `/1/0/8` | Registration Update Trigger | E | emits [`DeviceEvent::RegistrationUpdated`] |
//! | `/3/0/0..2` | Manufacturer, Model, Serial | R | serial is the device id |
//! | `/3/0/3` | Firmware Version | R | changes after a successful update |
//! | `/3/0/4` | Reboot | E | answers, goes down for `reboot_time`, registers again |
//! | `/3/0/5` | Factory Reset | E | restores the initial values, then reboots |
//! | `/3/0/9`, `/3/0/10`, `/3/0/20`, `/3/0/21` | battery, memory | R | from the spec |
//! | `/3/0/13..15` | time, UTC offset, timezone | RW | stored only |
//! | `/5/0/0` | Package | W | push: an empty or `\0` package resets, else as a URI write |
//! | `/5/0/1` | Package URI | RW | see the firmware machine below |
//! | `/5/0/2` | Update | E | only in state Downloaded, else 4.05 |
//! | `/5/0/3` | State | R | 0 Idle, 1 Downloading, 2 Downloaded, 3 Updating |
//! | `/5/0/5` | Update Result | R | 0 initial, 1 success, 2..=11 failures (LWM2M 1.1) |
//! | `/5/0/6`, `/5/0/7` | package name / version | R | set from the URI |
//! | `/10241/0/1`, `/2` | ConfigName, ConfigValue | RW | stored |
//! | `/10241/0/3` | ConfigApply | E | records (name, value) as the applied configuration |
//!
//! Firmware machine (LWM2M 1.1 §E.6): writing a non-empty Package URI sets State 1
//! (Downloading) and Update Result 0; after `download_time` (plus up to 50% seeded jitter)
//! State becomes 2 (Downloaded), or State 0 with the profile's `download_result` code if the
//! device fails downloads. Writing an empty URI resets to State 0, Result 0. Executing Update
//! in State 2 sets State 3 (Updating); after `update_time` the device either fails (State 0,
//! the profile's `update_result`, e.g. 8) or succeeds: Firmware Version becomes the package
//! version, State 0, Result 1, and the device reboots and registers again. The package
//! version is the text after the URI's last `/`, without a trailing `.bin`
//! (`coap://fw.example/pkg/2.1.bin` installs version `2.1`).
//!
//! # Faults
//!
//! A [`FaultProfile`] per device: one-way latency drawn uniformly from
//! `[min_latency, max_latency]`; a loss probability (half the losses drop the request, half
//! drop the response after the device acted, so retries must be idempotent; lost requests
//! end as [`DeviceEvent::TimedOut`] after [`MemoryConfig::request_timeout`]; notifications
//! are lost with the same probability); seeded offline periods (the device goes silent, its
//! registration expires after its lifetime, it registers again later); failing downloads or
//! updates; and devices that never answer (they register but every request times out).
//! Requests for a device the server holds no registration for are answered at once with
//! [`DeviceError::NotRegistered`], like the LWM2M server transport does. In every build
//! (with or without the cargo feature `lwm2m`), a Write, Write-Composite or Create is
//! checked as the server checks it before sending (the domain's rule,
//! [`resource::fit_value`](crate::resource::fit_value), with the standard objects' types,
//! which are the simulated device's; a path the table does not know takes any finite value): a
//! value that does not fit its resource's type (`-1` for an Unsigned Integer, a float or
//! a string for an Integer, a NaN) fails the request at once with
//! [`DeviceError::BadPayload`] in the server's words, and nothing reaches the device; one
//! that fits arrives in its resource's type (an integer written to a Float resource is
//! stored as a float). Every other request leaves at once: [`DeviceEvent::Sent`] follows
//! its submission (the simulation has no sleeping devices and queues nothing).
//!
//! When a registration ends (the device de-registers, it expires, the hub's
//! [`DeviceRequest::EndRegistration`], or a Register after a reboot or an offline period
//! replaces it), its requests in flight (submitted, not yet answered) fail at once with
//! [`DeviceError::RegistrationEnded`], before the event that says so, as the LWM2M server
//! fails them; a device that is up still carries out one that reaches it later, but its
//! answer, and a notification still on its way under the old registration, go nowhere.
//! There is no queue (every request is sent at once), so nothing waits for a new
//! registration.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use twinhub::transport::memory::{DeviceSpec, MemoryConfig, MemoryTransport};
//! use twinhub::transport::{DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, OpId, Transport};
//! use twinhub::{DeviceId, Lwm2mPath, ResourceValue};
//!
//! let t0 = Instant::now();
//! let mut fleet = MemoryTransport::new(MemoryConfig::with_seed(7));
//! let id = DeviceId::new("dev-1").unwrap();
//! fleet.add_device(t0, DeviceSpec::new(id.clone()).firmware_version("1.0"));
//! let read = DeviceOp {
//!     id: OpId(1),
//!     device: id.clone(),
//!     request: DeviceRequest::Read { path: Lwm2mPath::resource(3, 0, 3) },
//! };
//! // Drive the simulation until the read is answered.
//! let mut now = t0;
//! let mut submitted = false;
//! let answer = loop {
//!     match fleet.poll_event() {
//!         Some(DeviceEvent::Registered { .. }) if !submitted => {
//!             fleet.submit(now, read.clone());
//!             submitted = true;
//!         }
//!         Some(DeviceEvent::Response { op: OpId(1), result, .. }) => break result,
//!         Some(_) => {}
//!         None => {
//!             now = fleet.poll_timeout().expect("something is pending");
//!             fleet.handle_timeout(now);
//!         }
//!     }
//! };
//! let Ok(DeviceReply::Content(c)) = answer else { panic!("{answer:?}") };
//! assert_eq!(c.get(&Lwm2mPath::resource(3, 0, 3)), Some(&ResourceValue::String("1.0".into())));
//! ```

use super::{
    DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, RegistrationInfo, Transport,
};
use crate::lwm2m::{Content, Lwm2mPath, ResourceValue};
use crate::resource::{Misfit, ResourceType, fit_value, standard_resource_type};
use crate::twin::DeviceId;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Firmware Update State (`/5/0/3`) values, LWM2M 1.1.
pub mod firmware_state {
    /// Idle (before downloading or after a successful update).
    pub const IDLE: i64 = 0;
    /// Downloading the package.
    pub const DOWNLOADING: i64 = 1;
    /// Downloaded and verified; ready for Update.
    pub const DOWNLOADED: i64 = 2;
    /// Installing.
    pub const UPDATING: i64 = 3;
}

/// Transport-wide settings.
#[derive(Clone, Debug)]
pub struct MemoryConfig {
    /// Seeds every random choice (latency, loss, jitter, offline periods).
    pub seed: u64,
    /// When an unanswered request ends as [`DeviceEvent::TimedOut`] (CoAP's
    /// MAX_TRANSMIT_WAIT, 93 s, by default).
    pub request_timeout: Duration,
}

impl MemoryConfig {
    /// Defaults with the given seed.
    pub fn with_seed(seed: u64) -> Self {
        MemoryConfig {
            seed,
            request_timeout: Duration::from_secs(93),
        }
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig::with_seed(0)
    }
}

/// Seeded offline periods: the device alternates between online and offline stretches whose
/// lengths are drawn from exponential distributions with these means.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OfflinePeriods {
    /// Mean time online before dropping off.
    pub mean_online: Duration,
    /// Mean time offline before registering again.
    pub mean_offline: Duration,
}

/// How a simulated device misbehaves. [`FaultProfile::default`] is a well-behaved device with
/// 5-50 ms one-way latency.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultProfile {
    /// Smallest one-way latency.
    pub min_latency: Duration,
    /// Largest one-way latency.
    pub max_latency: Duration,
    /// Probability in `0.0..=1.0` that a message is lost.
    pub loss: f64,
    /// How long a firmware download takes (plus up to 50% seeded jitter).
    pub download_time: Duration,
    /// `Some(code)`: downloads fail with this Update Result (2..=7 or 9).
    pub download_result: Option<u8>,
    /// How long installing takes after Update is executed.
    pub update_time: Duration,
    /// `Some(code)`: updates fail with this Update Result (usually 8).
    pub update_result: Option<u8>,
    /// How long a reboot takes before the device registers again.
    pub reboot_time: Duration,
    /// The device registers but never answers a request.
    pub unresponsive: bool,
    /// Seeded offline periods, if any.
    pub offline_periods: Option<OfflinePeriods>,
    /// `Some(error)`: ConfigApply (`/10241/0/3`) fails with this error.
    pub config_apply_error: Option<DeviceError>,
}

impl Default for FaultProfile {
    fn default() -> Self {
        FaultProfile {
            min_latency: Duration::from_millis(5),
            max_latency: Duration::from_millis(50),
            loss: 0.0,
            download_time: Duration::from_secs(20),
            download_result: None,
            update_time: Duration::from_secs(10),
            update_result: None,
            reboot_time: Duration::from_secs(5),
            unresponsive: false,
            offline_periods: None,
            config_apply_error: None,
        }
    }
}

/// A simulated device to add: its id, initial values and fault profile.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    id: DeviceId,
    values: BTreeMap<Lwm2mPath, ResourceValue>,
    faults: FaultProfile,
    starts_offline: bool,
}

impl DeviceSpec {
    /// A well-behaved device with firmware `1.0`, battery 100%, lifetime 300 s.
    pub fn new(id: DeviceId) -> Self {
        let mut values = BTreeMap::new();
        let s = |v: &str| ResourceValue::String(v.to_owned());
        let i = ResourceValue::Integer;
        for (p, v) in [
            ((1, 0, 0), i(1)),
            ((1, 0, 1), i(300)),
            ((1, 0, 2), i(300)),
            ((1, 0, 3), i(21_600)),
            ((1, 0, 7), s("U")),
            ((3, 0, 0), s("twinhub")),
            ((3, 0, 1), s("sim-1")),
            ((3, 0, 2), s(id.as_str())),
            ((3, 0, 3), s("1.0")),
            ((3, 0, 9), i(100)),
            ((3, 0, 10), i(512)),
            ((3, 0, 11), i(0)),
            ((3, 0, 13), ResourceValue::Time(0)),
            ((3, 0, 14), s("+00:00")),
            ((3, 0, 15), s("UTC")),
            ((3, 0, 16), s("U")),
            ((3, 0, 17), s("simulated")),
            ((3, 0, 18), s("1.0")),
            ((3, 0, 20), i(0)),
            ((3, 0, 21), i(1024)),
            ((5, 0, 1), s("")),
            ((5, 0, 3), i(firmware_state::IDLE)),
            ((5, 0, 5), i(0)),
            ((5, 0, 6), s("")),
            ((5, 0, 7), s("")),
            ((5, 0, 9), i(0)),
            ((10241, 0, 1), s("")),
            ((10241, 0, 2), s("")),
        ] {
            values.insert(Lwm2mPath::resource(p.0, p.1, p.2), v);
        }
        DeviceSpec {
            id,
            values,
            faults: FaultProfile::default(),
            starts_offline: false,
        }
    }

    /// Sets Firmware Version (`/3/0/3`).
    pub fn firmware_version(self, v: &str) -> Self {
        self.value(
            Lwm2mPath::resource(3, 0, 3),
            ResourceValue::String(v.to_owned()),
        )
    }

    /// Sets Battery Level (`/3/0/9`).
    pub fn battery_level(self, percent: i64) -> Self {
        self.value(
            Lwm2mPath::resource(3, 0, 9),
            ResourceValue::Integer(percent),
        )
    }

    /// Sets the registration lifetime (`/1/0/1`) in seconds.
    pub fn lifetime(self, seconds: i64) -> Self {
        self.value(
            Lwm2mPath::resource(1, 0, 1),
            ResourceValue::Integer(seconds),
        )
    }

    /// Sets (or adds) any resource value. Paths outside the built-in table become custom
    /// read-write resources.
    pub fn value(mut self, path: Lwm2mPath, value: ResourceValue) -> Self {
        self.values.insert(path, value);
        self
    }

    /// Sets the fault profile.
    pub fn faults(mut self, faults: FaultProfile) -> Self {
        self.faults = faults;
        self
    }

    /// The device starts offline: it registers only after [`MemoryTransport::bring_online`].
    pub fn starts_offline(mut self) -> Self {
        self.starts_offline = true;
        self
    }

    /// The device id.
    pub fn id(&self) -> &DeviceId {
        &self.id
    }
}

/// How a device leaves in [`MemoryTransport::take_offline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfflineMode {
    /// It de-registers first ([`DeviceEvent::Deregistered`]).
    Deregister,
    /// It goes silent; its registration expires after its lifetime ([`DeviceEvent::Expired`]).
    Silent,
}

/// Why a [`MemoryTransport`] call about a device failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryTransportError {
    /// A device with this id was already added.
    DuplicateDevice(DeviceId),
    /// No device with this id was added.
    UnknownDevice(DeviceId),
}

impl std::fmt::Display for MemoryTransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryTransportError::DuplicateDevice(id) => {
                write!(f, "simulated device {id} already exists")
            }
            MemoryTransportError::UnknownDevice(id) => write!(f, "no simulated device {id}"),
        }
    }
}

impl std::error::Error for MemoryTransportError {}

/// Counters of what the simulation did, for tests and benches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Operations submitted.
    pub submitted: u64,
    /// Operations answered with a [`DeviceEvent::Response`].
    pub answered: u64,
    /// Operations that ended as [`DeviceEvent::TimedOut`].
    pub timed_out: u64,
    /// Messages (requests, responses, notifications) dropped by the loss model.
    pub lost: u64,
    /// Notifications delivered.
    pub notifications: u64,
    /// Registrations (first and repeated).
    pub registrations: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Execute,
}

impl Access {
    fn readable(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }
    fn writable(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// Access of the built-in resources; anything else a spec adds is read-write.
fn builtin_access(path: &Lwm2mPath) -> Option<Access> {
    use Access::*;
    let ids = path.ids();
    if ids.len() != 3 || ids[1] != 0 {
        return None;
    }
    Some(match (ids[0], ids[2]) {
        (1, 0) => Read,
        (1, 1 | 2 | 3 | 7) => ReadWrite,
        (1, 8) => Execute,
        (3, 0 | 1 | 2 | 3 | 9 | 10 | 11 | 16 | 17 | 18 | 20 | 21) => Read,
        (3, 4 | 5) => Execute,
        (3, 13..=15) => ReadWrite,
        (5, 0) => Write,
        (5, 1) => ReadWrite,
        (5, 2) => Execute,
        (5, 3 | 5 | 6 | 7 | 9) => Read,
        (10241, 1 | 2) => ReadWrite,
        (10241, 3) => Execute,
        _ => return None,
    })
}

/// What the LWM2M server does with a write's values before it sends anything, in every
/// build (the domain's rule, [`fit_value`], with the standard objects' types, which are the
/// simulated device's objects): each goes in its resource's type, or the request fails
/// with [`DeviceError::BadPayload`] naming the first value that does not fit, in the
/// server's words ([`misfit_words`]).
fn fit_values(request: &mut DeviceRequest) -> Result<(), DeviceError> {
    if let DeviceRequest::Write { content, .. }
    | DeviceRequest::WriteComposite { content }
    | DeviceRequest::Create { content, .. } = request
    {
        let values = content
            .values
            .iter()
            .map(|(path, value)| {
                let ty = standard_resource_type(path);
                fit_value(value, ty)
                    .map(|v| (*path, v))
                    .map_err(|m| DeviceError::BadPayload(misfit_words(path, ty, m)))
            })
            .collect::<Result<_, _>>()?;
        content.values = values;
    }
    Ok(())
}

/// The LWM2M server's message for a value that does not fit (the `Display` of
/// `lwm2m::content::ContentError`'s `OutOfRange`, `TypeMismatch` and `UnencodableValue`,
/// which a test holds it to), written here so that a build without `lwm2m` says the same.
fn misfit_words(path: &Lwm2mPath, ty: Option<ResourceType>, misfit: Misfit) -> String {
    match (misfit, ty) {
        (Misfit::OutOfRange, Some(ty)) => {
            format!("value at {path} is out of range for type {ty:?}")
        }
        (Misfit::OtherKind, Some(ty)) => format!("value at {path} does not match type {ty:?}"),
        (Misfit::NotFinite, _) | (_, None) => {
            format!("value at {path} cannot be encoded in this format")
        }
    }
}

/// SplitMix64: small, fast, good enough for simulation, and fully reproducible.
#[derive(Clone, Debug)]
struct SimRng(u64);

impl SimRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    fn between(&mut self, min: Duration, max: Duration) -> Duration {
        if max <= min {
            return min;
        }
        let span = (max - min).as_nanos() as u64;
        min + Duration::from_nanos(self.next_u64() % (span + 1))
    }

    fn exponential(&mut self, mean: Duration) -> Duration {
        let u = self.unit();
        mean.mul_f64(-(1.0 - u).ln()).min(mean * 20)
    }
}

struct SimDevice {
    id: DeviceId,
    initial: BTreeMap<Lwm2mPath, ResourceValue>,
    values: BTreeMap<Lwm2mPath, ResourceValue>,
    faults: FaultProfile,
    /// The device is running and reachable.
    up: bool,
    /// The server holds a registration for it.
    registered: bool,
    /// Bumped whenever the device goes down or resets, so stale timers are ignored.
    generation: u32,
    observed: Vec<Lwm2mPath>,
    /// Observe-Composite observations, each with its paths (notified at the root `/`).
    observed_composite: Vec<Vec<Lwm2mPath>>,
    pending_version: Option<String>,
    applied_config: Option<(String, String)>,
    registration_count: u64,
    /// Operations submitted under the current registration and not yet answered
    /// (oldest first): they fail with [`DeviceError::RegistrationEnded`] when it ends.
    in_flight: Vec<crate::transport::OpId>,
}

enum Action {
    /// A request reaches the device.
    Arrive {
        dev: u32,
        op: DeviceOp,
        submitted: Instant,
        drop_response: bool,
    },
    /// A message reaches the server.
    Deliver(DeviceEvent),
    DownloadDone {
        dev: u32,
        generation: u32,
    },
    UpdateDone {
        dev: u32,
        generation: u32,
    },
    Boot {
        dev: u32,
        generation: u32,
    },
    GoOffline {
        dev: u32,
        generation: u32,
    },
    Expire {
        dev: u32,
        generation: u32,
    },
    /// A device whose registration the server ended registers again (its Update got
    /// 4.04).
    Reregister {
        dev: u32,
        generation: u32,
    },
}

struct Scheduled {
    at: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A deterministic simulated fleet implementing [`Transport`]. See the module docs.
pub struct MemoryTransport {
    config: MemoryConfig,
    rng: SimRng,
    devices: Vec<SimDevice>,
    by_id: HashMap<DeviceId, u32>,
    timers: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    events: VecDeque<DeviceEvent>,
    stats: MemoryStats,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("devices", &self.devices.len())
            .field("pending_timers", &self.timers.len())
            .field("queued_events", &self.events.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl MemoryTransport {
    /// An empty fleet.
    pub fn new(config: MemoryConfig) -> Self {
        MemoryTransport {
            rng: SimRng(config.seed ^ 0x0074_7769_6E68_7562),
            config,
            devices: Vec::new(),
            by_id: HashMap::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            events: VecDeque::new(),
            stats: MemoryStats::default(),
        }
    }

    /// Adds a device. Unless its spec says it starts offline, it registers after one
    /// latency (a [`DeviceEvent::Registered`]).
    pub fn add_device(
        &mut self,
        now: Instant,
        spec: DeviceSpec,
    ) -> Result<(), MemoryTransportError> {
        if self.by_id.contains_key(&spec.id) {
            return Err(MemoryTransportError::DuplicateDevice(spec.id));
        }
        let dev = self.devices.len() as u32;
        self.by_id.insert(spec.id.clone(), dev);
        self.devices.push(SimDevice {
            id: spec.id,
            initial: spec.values.clone(),
            values: spec.values,
            faults: spec.faults,
            up: false,
            registered: false,
            generation: 0,
            observed: Vec::new(),
            observed_composite: Vec::new(),
            pending_version: None,
            applied_config: None,
            registration_count: 0,
            in_flight: Vec::new(),
        });
        if !spec.starts_offline {
            let d = self.latency(dev);
            self.schedule(now + d, Action::Boot { dev, generation: 0 });
        }
        Ok(())
    }

    /// Takes a device offline now; with `back_after` it registers again that much later.
    pub fn take_offline(
        &mut self,
        now: Instant,
        id: &DeviceId,
        mode: OfflineMode,
        back_after: Option<Duration>,
    ) -> Result<(), MemoryTransportError> {
        let dev = self.index(id)?;
        if mode == OfflineMode::Deregister && self.devices[dev as usize].registered {
            self.devices[dev as usize].registered = false;
            self.end_in_flight(dev);
            self.events
                .push_back(DeviceEvent::Deregistered { device: id.clone() });
        }
        self.go_down(now, dev);
        if let Some(after) = back_after {
            let generation = self.devices[dev as usize].generation;
            self.schedule(now + after, Action::Boot { dev, generation });
        }
        Ok(())
    }

    /// Brings an offline device back: it registers after one latency. No effect on a device
    /// that is up.
    pub fn bring_online(
        &mut self,
        now: Instant,
        id: &DeviceId,
    ) -> Result<(), MemoryTransportError> {
        let dev = self.index(id)?;
        if !self.devices[dev as usize].up {
            let generation = self.devices[dev as usize].generation;
            let d = self.latency(dev);
            self.schedule(now + d, Action::Boot { dev, generation });
        }
        Ok(())
    }

    /// Changes a value on the device side (e.g. the battery drains); observers are notified.
    pub fn set_value(
        &mut self,
        now: Instant,
        id: &DeviceId,
        path: Lwm2mPath,
        value: ResourceValue,
    ) -> Result<(), MemoryTransportError> {
        let dev = self.index(id)?;
        self.devices[dev as usize].values.insert(path, value);
        self.changed(now, dev, &[path]);
        Ok(())
    }

    /// A device's current value at `path`, as the device holds it.
    pub fn value(&self, id: &DeviceId, path: &Lwm2mPath) -> Option<&ResourceValue> {
        let dev = *self.by_id.get(id)?;
        self.devices[dev as usize].values.get(path)
    }

    /// The configuration a device last applied through ConfigApply: (name, value).
    pub fn applied_config(&self, id: &DeviceId) -> Option<(&str, &str)> {
        let dev = *self.by_id.get(id)?;
        self.devices[dev as usize]
            .applied_config
            .as_ref()
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Whether the server side holds a registration for the device.
    pub fn is_registered(&self, id: &DeviceId) -> bool {
        self.by_id
            .get(id)
            .is_some_and(|&d| self.devices[d as usize].registered)
    }

    /// How many times the device has registered so far.
    pub fn registration_count(&self, id: &DeviceId) -> u64 {
        self.by_id
            .get(id)
            .map_or(0, |&d| self.devices[d as usize].registration_count)
    }

    /// Number of simulated devices.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// What the simulation has done so far.
    pub fn stats(&self) -> MemoryStats {
        self.stats
    }

    fn index(&self, id: &DeviceId) -> Result<u32, MemoryTransportError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| MemoryTransportError::UnknownDevice(id.clone()))
    }

    fn schedule(&mut self, at: Instant, action: Action) {
        self.seq += 1;
        self.timers.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            action,
        }));
    }

    fn latency(&mut self, dev: u32) -> Duration {
        let f = &self.devices[dev as usize].faults;
        let (min, max) = (f.min_latency, f.max_latency);
        self.rng.between(min, max)
    }

    fn lost(&mut self, dev: u32) -> bool {
        let p = self.devices[dev as usize].faults.loss;
        let lost = self.rng.chance(p);
        if lost {
            self.stats.lost += 1;
        }
        lost
    }

    fn time_out(&mut self, at: Instant, op: &DeviceOp) {
        self.schedule(
            at,
            Action::Deliver(DeviceEvent::TimedOut {
                op: op.id,
                device: op.device.clone(),
            }),
        );
    }

    /// The device's registration ended (de-registered, expired, ended by the hub, or
    /// replaced by a new Register): its operations in flight fail now with
    /// [`DeviceError::RegistrationEnded`], oldest first, as the LWM2M server fails them;
    /// their answers (or timeouts) still under way are dropped when they come.
    fn end_in_flight(&mut self, dev: u32) {
        let d = &mut self.devices[dev as usize];
        let ops = std::mem::take(&mut d.in_flight);
        let device = d.id.clone();
        for op in ops {
            self.stats.answered += 1;
            self.events.push_back(DeviceEvent::Response {
                op,
                device: device.clone(),
                result: Err(DeviceError::RegistrationEnded),
            });
        }
    }

    /// Takes `op` out of the device's operations in flight; `false` when it is not
    /// there (its registration ended: it was failed then).
    fn settle(&mut self, device: &DeviceId, op: crate::transport::OpId) -> bool {
        let Some(&dev) = self.by_id.get(device) else {
            return false;
        };
        let in_flight = &mut self.devices[dev as usize].in_flight;
        match in_flight.iter().position(|&o| o == op) {
            Some(at) => {
                in_flight.remove(at);
                true
            }
            None => false,
        }
    }

    /// The id of the device's registration (the newest, when it holds none).
    fn registration_id(&self, dev: u32) -> String {
        format!("sim{dev}.{}", self.devices[dev as usize].registration_count)
    }

    fn registration(&self, dev: u32) -> RegistrationInfo {
        let d = &self.devices[dev as usize];
        let lifetime = match d.values.get(&Lwm2mPath::resource(1, 0, 1)) {
            Some(ResourceValue::Integer(lt)) => (*lt).clamp(1, u32::MAX as i64) as u32,
            _ => 86_400,
        };
        let binding = match d.values.get(&Lwm2mPath::resource(1, 0, 7)) {
            Some(ResourceValue::String(b)) => b.clone(),
            _ => "U".to_owned(),
        };
        RegistrationInfo {
            endpoint: d.id.to_string(),
            registration_id: self.registration_id(dev),
            lifetime,
            lwm2m_version: "1.1".to_owned(),
            queue_mode: binding.contains('Q'),
            binding,
            objects: vec![
                Lwm2mPath::instance(1, 0),
                Lwm2mPath::instance(3, 0),
                Lwm2mPath::instance(5, 0),
                Lwm2mPath::instance(10241, 0),
            ],
            address: None,
            psk_identity: None,
        }
    }

    fn lifetime(&self, dev: u32) -> Duration {
        Duration::from_secs(self.registration(dev).lifetime as u64)
    }

    /// The device stops: pending downloads are interrupted, observations dropped, and (if
    /// registered) its registration expires after its lifetime.
    fn go_down(&mut self, now: Instant, dev: u32) {
        let lifetime = self.lifetime(dev);
        let d = &mut self.devices[dev as usize];
        if !d.up {
            return;
        }
        d.up = false;
        d.generation += 1;
        d.observed.clear();
        d.observed_composite.clear();
        let state = Lwm2mPath::resource(5, 0, 3);
        if d.values.get(&state) == Some(&ResourceValue::Integer(firmware_state::DOWNLOADING)) {
            // The download is lost with the connection: Idle, result 4 (connection lost).
            d.values
                .insert(state, ResourceValue::Integer(firmware_state::IDLE));
            d.values
                .insert(Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(4));
        }
        if d.values.get(&state) == Some(&ResourceValue::Integer(firmware_state::UPDATING)) {
            d.values
                .insert(state, ResourceValue::Integer(firmware_state::DOWNLOADED));
            d.values
                .insert(Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(8));
        }
        let generation = d.generation;
        if d.registered {
            self.schedule(now + lifetime, Action::Expire { dev, generation });
        }
    }

    fn reboot(&mut self, now: Instant, dev: u32) {
        let d = &mut self.devices[dev as usize];
        d.up = false;
        d.generation += 1;
        d.observed.clear();
        d.observed_composite.clear();
        let generation = d.generation;
        let t = d.faults.reboot_time;
        self.schedule(now + t, Action::Boot { dev, generation });
    }

    /// Values under `path` that a read returns.
    fn read(&self, dev: u32, path: &Lwm2mPath) -> Result<Content, DeviceError> {
        let d = &self.devices[dev as usize];
        if path.depth() >= 3 {
            return match d.values.get(path) {
                Some(v) if builtin_access(path).is_none_or(Access::readable) => {
                    Ok(Content::single(*path, v.clone()))
                }
                Some(_) => Err(DeviceError::MethodNotAllowed),
                None if builtin_access(path) == Some(Access::Execute) => {
                    Err(DeviceError::MethodNotAllowed)
                }
                None => Err(DeviceError::NotFound),
            };
        }
        let values: Vec<_> = d
            .values
            .range(*path..)
            .take_while(|(p, _)| path.contains(p))
            .filter(|(p, _)| builtin_access(p).is_none_or(Access::readable))
            .map(|(p, v)| (*p, v.clone()))
            .collect();
        if values.is_empty() {
            Err(DeviceError::NotFound)
        } else {
            Ok(Content { values })
        }
    }

    /// Read-Composite: the values of every path that has some, in the order asked; a path
    /// with nothing to read is left out, and when none has any the answer is 4.04.
    fn read_composite(&self, dev: u32, paths: &[Lwm2mPath]) -> Result<Content, DeviceError> {
        let mut values = Vec::new();
        for path in paths {
            for (p, v) in self.read(dev, path).map_or(Vec::new(), |c| c.values) {
                if !values.iter().any(|(q, _)| *q == p) {
                    values.push((p, v));
                }
            }
        }
        if values.is_empty() {
            Err(DeviceError::NotFound)
        } else {
            Ok(Content { values })
        }
    }

    fn changed(&mut self, now: Instant, dev: u32, paths: &[Lwm2mPath]) {
        let d = &self.devices[dev as usize];
        if !d.up {
            return;
        }
        let mut hits: Vec<Lwm2mPath> = d
            .observed
            .iter()
            .filter(|o| paths.iter().any(|p| o.contains(p) || p.contains(o)))
            .copied()
            .collect();
        // A path observed twice notifies once (its observers share the events).
        hits.sort_unstable();
        hits.dedup();
        let mut composite: Vec<Vec<Lwm2mPath>> = d
            .observed_composite
            .iter()
            .filter(|o| {
                o.iter()
                    .any(|o| paths.iter().any(|p| o.contains(p) || p.contains(o)))
            })
            .cloned()
            .collect();
        composite.sort_unstable();
        composite.dedup();
        let notifications = hits
            .into_iter()
            .map(|path| (path, self.read(dev, &path)))
            .chain(
                composite
                    .iter()
                    .map(|paths| (Lwm2mPath::ROOT, self.read_composite(dev, paths))),
            )
            .collect::<Vec<_>>();
        for (path, content) in notifications {
            let Ok(content) = content else {
                continue;
            };
            if self.lost(dev) {
                continue;
            }
            let d = self.latency(dev);
            let device = self.devices[dev as usize].id.clone();
            let registration_id = self.registration_id(dev);
            self.schedule(
                now + d,
                Action::Deliver(DeviceEvent::Notification {
                    device,
                    registration_id,
                    path,
                    content,
                }),
            );
        }
    }

    fn set(&mut self, dev: u32, path: Lwm2mPath, v: ResourceValue) {
        self.devices[dev as usize].values.insert(path, v);
    }

    fn firmware_start(&mut self, now: Instant, dev: u32, version: String) {
        let d = &mut self.devices[dev as usize];
        d.pending_version = Some(version.clone());
        d.values.insert(
            Lwm2mPath::resource(5, 0, 3),
            ResourceValue::Integer(firmware_state::DOWNLOADING),
        );
        d.values
            .insert(Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(0));
        d.values
            .insert(Lwm2mPath::resource(5, 0, 7), ResourceValue::String(version));
        let base = d.faults.download_time;
        let generation = d.generation;
        let jitter = self.rng.between(Duration::ZERO, base / 2);
        self.schedule(
            now + base + jitter,
            Action::DownloadDone { dev, generation },
        );
    }

    fn firmware_reset(&mut self, dev: u32) {
        self.set(
            dev,
            Lwm2mPath::resource(5, 0, 3),
            ResourceValue::Integer(firmware_state::IDLE),
        );
        self.set(dev, Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(0));
        self.devices[dev as usize].pending_version = None;
    }

    /// The device handles a request that reached it; returns the answer and whether the
    /// device reboots right after answering.
    fn serve(
        &mut self,
        now: Instant,
        dev: u32,
        request: &DeviceRequest,
    ) -> (Result<DeviceReply, DeviceError>, bool) {
        match request {
            DeviceRequest::Read { path } => (self.read(dev, path).map(DeviceReply::Content), false),
            DeviceRequest::Observe { path } => {
                let r = self.read(dev, path);
                if r.is_ok() {
                    // One entry per observation: the hub and a job may observe one path.
                    self.devices[dev as usize].observed.push(*path);
                }
                (r.map(DeviceReply::Content), false)
            }
            DeviceRequest::CancelObserve { path } => {
                // Like the UDP server: the newest observation of the path ends.
                let obs = &mut self.devices[dev as usize].observed;
                if let Some(at) = obs.iter().rposition(|p| p == path) {
                    obs.remove(at);
                }
                (Ok(DeviceReply::Done), false)
            }
            DeviceRequest::Discover { path } => {
                let d = &self.devices[dev as usize];
                let mut links: Vec<String> = d
                    .values
                    .keys()
                    .filter(|p| path.contains(p))
                    .map(|p| format!("<{p}>"))
                    .collect();
                if links.is_empty() {
                    return (Err(DeviceError::NotFound), false);
                }
                links.insert(0, format!("<{path}>"));
                (Ok(DeviceReply::Links(links.join(","))), false)
            }
            DeviceRequest::WriteAttributes { path, .. } => {
                if self.read(dev, path).is_err() {
                    return (Err(DeviceError::NotFound), false);
                }
                (Ok(DeviceReply::Done), false)
            }
            // As the LwM2M server: a request whose path would make it another
            // operation is refused, not reinterpreted.
            request if request.is_another_operation_by_path() => {
                (Err(DeviceError::BadRequest), false)
            }
            DeviceRequest::Write { path, content, .. } => {
                (self.write(now, dev, path, content), false)
            }
            DeviceRequest::Execute { path, .. } => self.execute(now, dev, path),
            DeviceRequest::Create { .. } | DeviceRequest::Delete { .. } => {
                (Err(DeviceError::MethodNotAllowed), false)
            }
            DeviceRequest::ReadComposite { paths } => (
                self.read_composite(dev, paths).map(DeviceReply::Content),
                false,
            ),
            DeviceRequest::ObserveComposite { paths } => {
                let r = self.read_composite(dev, paths);
                if r.is_ok() {
                    self.devices[dev as usize]
                        .observed_composite
                        .push(paths.clone());
                }
                (r.map(DeviceReply::Content), false)
            }
            DeviceRequest::CancelObserveComposite { paths } => {
                let obs = &mut self.devices[dev as usize].observed_composite;
                let same = |o: &Vec<Lwm2mPath>| {
                    o.iter().all(|p| paths.contains(p)) && paths.iter().all(|p| o.contains(p))
                };
                if let Some(at) = obs.iter().rposition(same) {
                    obs.remove(at);
                }
                (Ok(DeviceReply::Done), false)
            }
            DeviceRequest::WriteComposite { content } => {
                (self.write(now, dev, &Lwm2mPath::ROOT, content), false)
            }
            // Taken by `submit`: it never reaches the device.
            DeviceRequest::EndRegistration { .. } => (Err(DeviceError::BadRequest), false),
        }
    }

    /// [`DeviceRequest::EndRegistration`]: the server forgets the registration named (and
    /// the device's observations); the device registers again at its next Update, half its
    /// lifetime later.
    fn end_registration(
        &mut self,
        now: Instant,
        dev: u32,
        op: crate::transport::OpId,
        registration_id: &str,
    ) {
        self.stats.answered += 1;
        let device = self.devices[dev as usize].id.clone();
        if self.registration(dev).registration_id != registration_id {
            self.events.push_back(DeviceEvent::Response {
                op,
                device,
                result: Err(DeviceError::NotRegistered),
            });
            return;
        }
        let half_lifetime = self.lifetime(dev) / 2;
        self.devices[dev as usize].registered = false;
        self.end_in_flight(dev);
        let d = &mut self.devices[dev as usize];
        d.observed.clear();
        d.observed_composite.clear();
        let generation = d.generation;
        self.schedule(now + half_lifetime, Action::Reregister { dev, generation });
        self.events.push_back(DeviceEvent::Response {
            op,
            device,
            result: Ok(DeviceReply::Done),
        });
    }

    fn write(
        &mut self,
        now: Instant,
        dev: u32,
        path: &Lwm2mPath,
        content: &Content,
    ) -> Result<DeviceReply, DeviceError> {
        if content.is_empty() {
            return Err(DeviceError::BadRequest);
        }
        let d = &self.devices[dev as usize];
        for (p, _) in &content.values {
            if !path.contains(p) || p.depth() < 3 {
                return Err(DeviceError::BadRequest);
            }
            match builtin_access(p) {
                Some(a) if !a.writable() => return Err(DeviceError::MethodNotAllowed),
                Some(_) => {}
                None if d.values.contains_key(p) => {}
                None => return Err(DeviceError::NotFound),
            }
        }
        let mut changed = Vec::new();
        for (p, v) in &content.values {
            match (p.object_id(), p.resource_id(), v) {
                (Some(5), Some(1), ResourceValue::String(uri)) => {
                    self.set(dev, *p, v.clone());
                    if uri.is_empty() {
                        self.firmware_reset(dev);
                    } else {
                        let version = uri.rsplit('/').next().unwrap_or(uri);
                        let version = version.strip_suffix(".bin").unwrap_or(version);
                        self.firmware_start(now, dev, version.to_owned());
                    }
                    changed.extend([Lwm2mPath::resource(5, 0, 3), Lwm2mPath::resource(5, 0, 5)]);
                }
                (Some(5), Some(1), _) => return Err(DeviceError::BadRequest),
                (Some(5), Some(0), ResourceValue::Opaque(pkg)) => {
                    if pkg.is_empty() || pkg.as_slice() == [0] {
                        self.firmware_reset(dev);
                    } else {
                        let version = String::from_utf8_lossy(pkg).into_owned();
                        self.firmware_start(now, dev, version);
                    }
                    changed.extend([Lwm2mPath::resource(5, 0, 3), Lwm2mPath::resource(5, 0, 5)]);
                }
                (Some(5), Some(0), _) => return Err(DeviceError::BadRequest),
                _ => {
                    self.set(dev, *p, v.clone());
                    changed.push(*p);
                }
            }
        }
        self.changed(now, dev, &changed);
        Ok(DeviceReply::Done)
    }

    fn execute(
        &mut self,
        now: Instant,
        dev: u32,
        path: &Lwm2mPath,
    ) -> (Result<DeviceReply, DeviceError>, bool) {
        match builtin_access(path) {
            Some(Access::Execute) => {}
            Some(_) => return (Err(DeviceError::MethodNotAllowed), false),
            None if self.devices[dev as usize].values.contains_key(path) => {
                return (Err(DeviceError::MethodNotAllowed), false);
            }
            None => return (Err(DeviceError::NotFound), false),
        }
        let ok = (Ok(DeviceReply::Done), false);
        match (path.object_id(), path.resource_id()) {
            (Some(1), _) => {
                let registration = self.registration(dev);
                let device = self.devices[dev as usize].id.clone();
                let l = self.latency(dev);
                self.schedule(
                    now + l,
                    Action::Deliver(DeviceEvent::RegistrationUpdated {
                        device,
                        registration,
                    }),
                );
                ok
            }
            (Some(3), Some(4)) => (Ok(DeviceReply::Done), true),
            (Some(3), _) => {
                let d = &mut self.devices[dev as usize];
                d.values = d.initial.clone();
                d.applied_config = None;
                d.pending_version = None;
                (Ok(DeviceReply::Done), true)
            }
            (Some(5), _) => {
                let state = Lwm2mPath::resource(5, 0, 3);
                let d = &mut self.devices[dev as usize];
                if d.values.get(&state) != Some(&ResourceValue::Integer(firmware_state::DOWNLOADED))
                {
                    return (Err(DeviceError::MethodNotAllowed), false);
                }
                d.values
                    .insert(state, ResourceValue::Integer(firmware_state::UPDATING));
                d.values
                    .insert(Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(0));
                let generation = d.generation;
                let t = d.faults.update_time;
                self.schedule(now + t, Action::UpdateDone { dev, generation });
                self.changed(now, dev, &[state]);
                ok
            }
            _ => {
                let d = &mut self.devices[dev as usize];
                if let Some(e) = &d.faults.config_apply_error {
                    return (Err(e.clone()), false);
                }
                let get = |r| match d.values.get(&Lwm2mPath::resource(10241, 0, r)) {
                    Some(ResourceValue::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                };
                d.applied_config = Some((get(1), get(2)));
                ok
            }
        }
    }

    fn run(&mut self, now: Instant, action: Action) {
        match action {
            Action::Deliver(event) => {
                if let DeviceEvent::Response { op, device, .. }
                | DeviceEvent::TimedOut { op, device } = &event
                    && !self.settle(device, *op)
                {
                    // Failed with RegistrationEnded when its registration ended.
                    return;
                }
                if let DeviceEvent::Notification {
                    device,
                    registration_id,
                    ..
                } = &event
                    && self.by_id.get(device).is_none_or(|&dev| {
                        !self.devices[dev as usize].registered
                            || self.registration_id(dev) != *registration_id
                    })
                {
                    // Its registration ended while it travelled: the server no longer
                    // holds the observation.
                    return;
                }
                match &event {
                    DeviceEvent::Response { .. } => self.stats.answered += 1,
                    DeviceEvent::TimedOut { .. } => self.stats.timed_out += 1,
                    DeviceEvent::Notification { .. } => self.stats.notifications += 1,
                    _ => {}
                }
                self.events.push_back(event);
            }
            Action::Arrive {
                dev,
                op,
                submitted,
                drop_response,
            } => {
                let timeout_at = submitted + self.config.request_timeout;
                let d = &self.devices[dev as usize];
                // Its registration ended while it travelled (it was failed then): a
                // device that is up still carries it out, its answer goes nowhere.
                let orphan = !d.in_flight.contains(&op.id);
                if !d.up || d.faults.unresponsive {
                    if !orphan {
                        self.time_out(timeout_at, &op);
                    }
                    return;
                }
                let (result, reboot) = self.serve(now, dev, &op.request);
                if orphan {
                    if reboot {
                        self.reboot(now, dev);
                    }
                    return;
                }
                if drop_response {
                    self.time_out(timeout_at.max(now), &op);
                } else {
                    let l = self.latency(dev);
                    let at = (now + l).min(timeout_at);
                    let event = if now + l > timeout_at {
                        DeviceEvent::TimedOut {
                            op: op.id,
                            device: op.device,
                        }
                    } else {
                        DeviceEvent::Response {
                            op: op.id,
                            device: op.device,
                            result,
                        }
                    };
                    self.schedule(at, Action::Deliver(event));
                }
                if reboot {
                    self.reboot(now, dev);
                }
            }
            Action::DownloadDone { dev, generation } => {
                let d = &self.devices[dev as usize];
                if d.generation != generation || !d.up {
                    return;
                }
                let state = Lwm2mPath::resource(5, 0, 3);
                if d.values.get(&state)
                    != Some(&ResourceValue::Integer(firmware_state::DOWNLOADING))
                {
                    return;
                }
                match d.faults.download_result {
                    Some(code) => {
                        self.set(dev, state, ResourceValue::Integer(firmware_state::IDLE));
                        self.set(
                            dev,
                            Lwm2mPath::resource(5, 0, 5),
                            ResourceValue::Integer(code as i64),
                        );
                    }
                    None => self.set(
                        dev,
                        state,
                        ResourceValue::Integer(firmware_state::DOWNLOADED),
                    ),
                }
                self.changed(now, dev, &[state, Lwm2mPath::resource(5, 0, 5)]);
            }
            Action::UpdateDone { dev, generation } => {
                let d = &self.devices[dev as usize];
                if d.generation != generation || !d.up {
                    return;
                }
                let state = Lwm2mPath::resource(5, 0, 3);
                let result = Lwm2mPath::resource(5, 0, 5);
                match d.faults.update_result {
                    Some(code) => {
                        self.set(dev, state, ResourceValue::Integer(firmware_state::IDLE));
                        self.set(dev, result, ResourceValue::Integer(code as i64));
                        self.changed(now, dev, &[state, result]);
                    }
                    None => {
                        let version = self.devices[dev as usize]
                            .pending_version
                            .take()
                            .unwrap_or_default();
                        self.set(
                            dev,
                            Lwm2mPath::resource(3, 0, 3),
                            ResourceValue::String(version),
                        );
                        self.set(dev, state, ResourceValue::Integer(firmware_state::IDLE));
                        self.set(dev, result, ResourceValue::Integer(1));
                        self.changed(now, dev, &[state, result, Lwm2mPath::resource(3, 0, 3)]);
                        self.reboot(now, dev);
                    }
                }
            }
            Action::Boot { dev, generation } => {
                let d = &mut self.devices[dev as usize];
                if d.generation != generation || d.up {
                    return;
                }
                d.up = true;
                d.registered = true;
                d.registration_count += 1;
                d.observed.clear();
                d.observed_composite.clear();
                self.stats.registrations += 1;
                // A new Register replaces the registration it still held (a reboot).
                self.end_in_flight(dev);
                let registration = self.registration(dev);
                let device = self.devices[dev as usize].id.clone();
                self.events.push_back(DeviceEvent::Registered {
                    device,
                    registration,
                });
                if let Some(p) = self.devices[dev as usize].faults.offline_periods {
                    let after = self.rng.exponential(p.mean_online);
                    let generation = self.devices[dev as usize].generation;
                    self.schedule(now + after, Action::GoOffline { dev, generation });
                }
            }
            Action::GoOffline { dev, generation } => {
                let d = &self.devices[dev as usize];
                if d.generation != generation || !d.up {
                    return;
                }
                let Some(p) = d.faults.offline_periods else {
                    return;
                };
                self.go_down(now, dev);
                let back = self.rng.exponential(p.mean_offline);
                let generation = self.devices[dev as usize].generation;
                self.schedule(now + back, Action::Boot { dev, generation });
            }
            Action::Reregister { dev, generation } => {
                let d = &mut self.devices[dev as usize];
                if d.generation != generation || !d.up || d.registered {
                    return;
                }
                d.registered = true;
                d.registration_count += 1;
                self.stats.registrations += 1;
                self.end_in_flight(dev);
                let registration = self.registration(dev);
                let device = self.devices[dev as usize].id.clone();
                self.events.push_back(DeviceEvent::Registered {
                    device,
                    registration,
                });
            }
            Action::Expire { dev, generation } => {
                let d = &mut self.devices[dev as usize];
                if d.generation != generation || d.up || !d.registered {
                    return;
                }
                d.registered = false;
                let device = d.id.clone();
                self.end_in_flight(dev);
                self.events.push_back(DeviceEvent::Expired { device });
            }
        }
    }
}

impl Transport for MemoryTransport {
    fn submit(&mut self, now: Instant, mut op: DeviceOp) {
        self.stats.submitted += 1;
        let Some(&dev) = self.by_id.get(&op.device) else {
            self.stats.answered += 1;
            self.events.push_back(DeviceEvent::Response {
                op: op.id,
                device: op.device,
                result: Err(DeviceError::NotRegistered),
            });
            return;
        };
        if !self.devices[dev as usize].registered {
            self.stats.answered += 1;
            self.events.push_back(DeviceEvent::Response {
                op: op.id,
                device: op.device,
                result: Err(DeviceError::NotRegistered),
            });
            return;
        }
        if let DeviceRequest::EndRegistration { registration_id } = &op.request {
            return self.end_registration(now, dev, op.id, registration_id);
        }
        if let Err(error) = fit_values(&mut op.request) {
            self.stats.answered += 1;
            self.events.push_back(DeviceEvent::Response {
                op: op.id,
                device: op.device,
                result: Err(error),
            });
            return;
        }
        self.devices[dev as usize].in_flight.push(op.id);
        // The simulated server queues nothing: a request leaves at once (and may be lost
        // on the way).
        self.events.push_back(DeviceEvent::Sent {
            op: op.id,
            device: op.device.clone(),
        });
        if self.lost(dev) {
            // Half the losses drop the request, half the response (after the device acted).
            if self.rng.chance(0.5) {
                let at = now + self.config.request_timeout;
                self.time_out(at, &op);
                return;
            }
            let l = self.latency(dev);
            self.schedule(
                now + l,
                Action::Arrive {
                    dev,
                    op,
                    submitted: now,
                    drop_response: true,
                },
            );
            return;
        }
        let l = self.latency(dev);
        self.schedule(
            now + l,
            Action::Arrive {
                dev,
                op,
                submitted: now,
                drop_response: false,
            },
        );
    }

    fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse(top)) = self.timers.peek() {
            if top.at > now {
                break;
            }
            let Some(Reverse(s)) = self.timers.pop() else {
                break;
            };
            self.run(s.at, s.action);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse(s)| s.at)
    }

    /// Yes: [`DeviceEvent::Sent`] follows every request for a registered device at once
    /// (the simulation queues nothing).
    fn reports_sent(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::OpId;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    /// Runs the simulation until `until`, collecting every event with its instant.
    fn drain(t: &mut MemoryTransport, until: Instant) -> Vec<(Instant, DeviceEvent)> {
        let mut out = Vec::new();
        let mut now = None;
        loop {
            while let Some(e) = t.poll_event() {
                out.push((now.unwrap_or(until), e));
            }
            match t.poll_timeout() {
                Some(at) if at <= until => {
                    t.handle_timeout(at);
                    now = Some(at);
                }
                _ => return out,
            }
        }
    }

    fn op(n: u64, dev: &DeviceId, request: DeviceRequest) -> DeviceOp {
        DeviceOp {
            id: OpId(n),
            device: dev.clone(),
            request,
        }
    }

    fn response(
        events: &[(Instant, DeviceEvent)],
        n: u64,
    ) -> Option<&Result<DeviceReply, DeviceError>> {
        events.iter().find_map(|(_, e)| match e {
            DeviceEvent::Response { op, result, .. } if *op == OpId(n) => Some(result),
            _ => None,
        })
    }

    /// Like the LWM2M server, a write's values are fitted to the standard types before
    /// anything leaves: `-1` for an Unsigned Integer resource (Registration Priority
    /// Order `/1/0/13`, added to the device) and a string for an Integer (Lifetime) fail
    /// at once with the server's `BadPayload` and change nothing on the device, while an
    /// integer for a Time (Current Time) or a String resource (Timezone) arrives
    /// converted. Before, the simulated device stored `-1` and the string, and the
    /// integers as integers. In every build: without `lwm2m` too, and in the server's words
    /// (with `lwm2m`, the test holds them to the server's `ContentError`).
    #[test]
    fn writes_are_fitted_to_the_standard_types_as_the_server_fits_them() {
        let t0 = Instant::now();
        let mut t = MemoryTransport::new(MemoryConfig::with_seed(3));
        let d = id("a");
        let order = Lwm2mPath::resource(1, 0, 13);
        let lifetime = Lwm2mPath::resource(1, 0, 1);
        let time = Lwm2mPath::resource(3, 0, 13);
        let timezone = Lwm2mPath::resource(3, 0, 15);
        t.add_device(
            t0,
            DeviceSpec::new(d.clone()).value(order, ResourceValue::UnsignedInteger(1)),
        )
        .unwrap();
        drain(&mut t, t0 + Duration::from_secs(1));
        let before_lifetime = t.value(&d, &lifetime).cloned();
        let now = t0 + Duration::from_secs(1);
        let write = |path: Lwm2mPath, value: ResourceValue| DeviceRequest::Write {
            path,
            mode: crate::transport::WriteMode::Replace,
            content: Content::single(path, value),
        };
        t.submit(now, op(1, &d, write(order, ResourceValue::Integer(-1))));
        t.submit(
            now,
            op(2, &d, write(lifetime, ResourceValue::String("60".into()))),
        );
        t.submit(
            now,
            op(3, &d, write(time, ResourceValue::Integer(1_700_000_000))),
        );
        t.submit(now, op(4, &d, write(timezone, ResourceValue::Integer(7))));
        // The refused ones are answered at once, before anything is sent.
        let first: Vec<_> = std::iter::from_fn(|| t.poll_event()).collect();
        let bad = |words: &str| Err(DeviceError::BadPayload(words.to_owned()));
        assert_eq!(
            first[0],
            DeviceEvent::Response {
                op: OpId(1),
                device: d.clone(),
                result: bad("value at /1/0/13 is out of range for type UnsignedInteger"),
            }
        );
        assert_eq!(
            first[1],
            DeviceEvent::Response {
                op: OpId(2),
                device: d.clone(),
                result: bad("value at /1/0/1 does not match type Integer"),
            }
        );
        assert!(
            !first.iter().any(|e| matches!(
                e,
                DeviceEvent::Sent {
                    op: OpId(1 | 2),
                    ..
                }
            )),
            "{first:?}"
        );
        let ev = drain(&mut t, now + Duration::from_secs(1));
        assert_eq!(response(&ev, 3), Some(&Ok(DeviceReply::Done)));
        assert_eq!(response(&ev, 4), Some(&Ok(DeviceReply::Done)));
        assert_eq!(
            t.value(&d, &order),
            Some(&ResourceValue::UnsignedInteger(1))
        );
        assert_eq!(t.value(&d, &lifetime).cloned(), before_lifetime);
        assert_eq!(
            t.value(&d, &time),
            Some(&ResourceValue::Time(1_700_000_000))
        );
        assert_eq!(
            t.value(&d, &timezone),
            Some(&ResourceValue::String("7".into()))
        );
    }

    /// The fleet's refusals are the LwM2M server's words: `ContentError`'s, as
    /// `fit_to_types` gives them, for each kind of misfit.
    #[cfg(feature = "lwm2m")]
    #[test]
    fn misfit_words_are_the_servers() {
        use crate::lwm2m::content::fit_to_types;
        let cases = [
            (Lwm2mPath::resource(1, 0, 13), ResourceValue::Integer(-1)),
            (
                Lwm2mPath::resource(1, 0, 1),
                ResourceValue::String("60".into()),
            ),
            (Lwm2mPath::resource(1, 0, 1), ResourceValue::Float(f64::NAN)),
            (
                Lwm2mPath::resource(3303, 0, 5700),
                ResourceValue::Float(f64::INFINITY),
            ),
            (
                Lwm2mPath::resource_instance(3, 0, 7, 1),
                ResourceValue::Boolean(true),
            ),
        ];
        for (path, value) in cases {
            let server = fit_to_types(
                &Content::single(path, value.clone()),
                &standard_resource_type,
            )
            .unwrap_err()
            .to_string();
            let mut request = DeviceRequest::WriteComposite {
                content: Content::single(path, value),
            };
            assert_eq!(
                fit_values(&mut request),
                Err(DeviceError::BadPayload(server))
            );
        }
    }

    #[test]
    fn registers_then_answers_reads_and_rejects_bad_access() {
        let t0 = Instant::now();
        let mut t = MemoryTransport::new(MemoryConfig::with_seed(1));
        let d = id("a");
        t.add_device(t0, DeviceSpec::new(d.clone()).battery_level(42))
            .unwrap();
        assert_eq!(
            t.add_device(t0, DeviceSpec::new(d.clone())),
            Err(MemoryTransportError::DuplicateDevice(d.clone()))
        );
        let ev = drain(&mut t, t0 + Duration::from_secs(1));
        assert!(matches!(&ev[0].1, DeviceEvent::Registered { device, .. } if *device == d));
        let now = t0 + Duration::from_secs(1);
        t.submit(
            now,
            op(
                1,
                &d,
                DeviceRequest::Read {
                    path: Lwm2mPath::resource(3, 0, 9),
                },
            ),
        );
        t.submit(
            now,
            op(
                2,
                &d,
                DeviceRequest::Read {
                    path: Lwm2mPath::resource(3, 0, 4),
                },
            ),
        );
        t.submit(
            now,
            op(
                3,
                &d,
                DeviceRequest::Read {
                    path: Lwm2mPath::resource(3, 0, 99),
                },
            ),
        );
        let w = DeviceRequest::Write {
            path: Lwm2mPath::resource(3, 0, 9),
            mode: crate::transport::WriteMode::Replace,
            content: Content::single(Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(1)),
        };
        t.submit(now, op(4, &d, w));
        t.submit(
            now,
            op(
                5,
                &d,
                DeviceRequest::Read {
                    path: Lwm2mPath::instance(5, 0),
                },
            ),
        );
        let ev = drain(&mut t, now + Duration::from_secs(1));
        assert_eq!(
            response(&ev, 1),
            Some(&Ok(DeviceReply::Content(Content::single(
                Lwm2mPath::resource(3, 0, 9),
                ResourceValue::Integer(42)
            ))))
        );
        assert_eq!(response(&ev, 2), Some(&Err(DeviceError::MethodNotAllowed)));
        assert_eq!(response(&ev, 3), Some(&Err(DeviceError::NotFound)));
        assert_eq!(response(&ev, 4), Some(&Err(DeviceError::MethodNotAllowed)));
        let Some(Ok(DeviceReply::Content(c))) = response(&ev, 5) else {
            panic!("instance read failed")
        };
        // The write-only Package is not in an instance read.
        assert!(c.get(&Lwm2mPath::resource(5, 0, 0)).is_none());
        assert_eq!(
            c.get(&Lwm2mPath::resource(5, 0, 3)),
            Some(&ResourceValue::Integer(0))
        );
    }

    #[test]
    fn unknown_and_unregistered_devices_get_not_registered() {
        let t0 = Instant::now();
        let mut t = MemoryTransport::new(MemoryConfig::with_seed(1));
        let d = id("sleepy");
        t.add_device(t0, DeviceSpec::new(d.clone()).starts_offline())
            .unwrap();
        t.submit(
            t0,
            op(
                1,
                &d,
                DeviceRequest::Read {
                    path: Lwm2mPath::object(3),
                },
            ),
        );
        t.submit(
            t0,
            op(
                2,
                &id("ghost"),
                DeviceRequest::Read {
                    path: Lwm2mPath::object(3),
                },
            ),
        );
        let ev = drain(&mut t, t0 + Duration::from_secs(1));
        assert_eq!(response(&ev, 1), Some(&Err(DeviceError::NotRegistered)));
        assert_eq!(response(&ev, 2), Some(&Err(DeviceError::NotRegistered)));
        assert!(!t.is_registered(&d));
        t.bring_online(t0 + Duration::from_secs(1), &d).unwrap();
        drain(&mut t, t0 + Duration::from_secs(2));
        assert!(t.is_registered(&d));
    }

    #[test]
    fn firmware_update_follows_the_state_machine() {
        let t0 = Instant::now();
        let mut t = MemoryTransport::new(MemoryConfig::with_seed(3));
        let d = id("fw");
        t.add_device(t0, DeviceSpec::new(d.clone())).unwrap();
        let mut now = t0 + Duration::from_secs(1);
        drain(&mut t, now);
        t.submit(
            now,
            op(
                1,
                &d,
                DeviceRequest::Observe {
                    path: Lwm2mPath::instance(5, 0),
                },
            ),
        );
        // Update before download: not allowed.
        t.submit(
            now,
            op(
                2,
                &d,
                DeviceRequest::Execute {
                    path: Lwm2mPath::resource(5, 0, 2),
                    args: None,
                },
            ),
        );
        now += Duration::from_secs(1);
        let ev = drain(&mut t, now);
        assert_eq!(response(&ev, 2), Some(&Err(DeviceError::MethodNotAllowed)));
        let uri = Content::single(
            Lwm2mPath::resource(5, 0, 1),
            ResourceValue::String("coap://fw/pkg/2.0.bin".into()),
        );
        t.submit(
            now,
            op(
                3,
                &d,
                DeviceRequest::Write {
                    path: Lwm2mPath::resource(5, 0, 1),
                    mode: crate::transport::WriteMode::Replace,
                    content: uri,
                },
            ),
        );
        now += Duration::from_secs(60);
        let ev = drain(&mut t, now);
        assert_eq!(response(&ev, 3), Some(&Ok(DeviceReply::Done)));
        let states: Vec<i64> = ev
            .iter()
            .filter_map(|(_, e)| match e {
                DeviceEvent::Notification { content, .. } => {
                    match content.get(&Lwm2mPath::resource(5, 0, 3)) {
                        Some(ResourceValue::Integer(s)) => Some(*s),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            states,
            vec![firmware_state::DOWNLOADING, firmware_state::DOWNLOADED]
        );
        t.submit(
            now,
            op(
                4,
                &d,
                DeviceRequest::Execute {
                    path: Lwm2mPath::resource(5, 0, 2),
                    args: None,
                },
            ),
        );
        now += Duration::from_secs(60);
        let ev = drain(&mut t, now);
        assert_eq!(response(&ev, 4), Some(&Ok(DeviceReply::Done)));
        // The device rebooted after installing and registered again.
        assert!(
            ev.iter()
                .any(|(_, e)| matches!(e, DeviceEvent::Registered { .. }))
        );
        assert_eq!(t.registration_count(&d), 2);
        assert_eq!(
            t.value(&d, &Lwm2mPath::resource(3, 0, 3)),
            Some(&ResourceValue::String("2.0".into()))
        );
        assert_eq!(
            t.value(&d, &Lwm2mPath::resource(5, 0, 5)),
            Some(&ResourceValue::Integer(1))
        );
        assert_eq!(
            t.value(&d, &Lwm2mPath::resource(5, 0, 3)),
            Some(&ResourceValue::Integer(firmware_state::IDLE))
        );
    }

    #[test]
    fn failing_downloads_report_their_result_code() {
        let t0 = Instant::now();
        let mut t = MemoryTransport::new(MemoryConfig::with_seed(3));
        let d = id("bad-fw");
        let faults = FaultProfile {
            download_result: Some(5),
            ..FaultProfile::default()
        };
        t.add_device(t0, DeviceSpec::new(d.clone()).faults(faults))
            .unwrap();
        let now = t0 + Duration::from_secs(1);
        drain(&mut t, now);
        let uri = Content::single(
            Lwm2mPath::resource(5, 0, 1),
            ResourceValue::String("coap://x/3.0".into()),
        );
        t.submit(
            now,
            op(
                1,
                &d,
                DeviceRequest::Write {
                    path: Lwm2mPath::resource(5, 0, 1),
                    mode: crate::transport::WriteMode::Replace,
                    content: uri,
                },
            ),
        );
        drain(&mut t, now + Duration::from_secs(60));
        assert_eq!(
            t.value(&d, &Lwm2mPath::resource(5, 0, 5)),
            Some(&ResourceValue::Integer(5))
        );
        assert_eq!(
            t.value(&d, &Lwm2mPath::resource(5, 0, 3)),
            Some(&ResourceValue::Integer(0))
        );
        assert_eq!(
            t.value(&d, &Lwm2mPath::resource(3, 0, 3)),
            Some(&ResourceValue::String("1.0".into()))
        );
    }

    #[test]
    fn unresponsive_devices_time_out_and_silent_devices_expire() {
        let t0 = Instant::now();
        let mut t = MemoryTransport::new(MemoryConfig::with_seed(9));
        let mute = id("mute");
        let gone = id("gone");
        let faults = FaultProfile {
            unresponsive: true,
            ..FaultProfile::default()
        };
        t.add_device(t0, DeviceSpec::new(mute.clone()).faults(faults))
            .unwrap();
        t.add_device(t0, DeviceSpec::new(gone.clone()).lifetime(60))
            .unwrap();
        let now = t0 + Duration::from_secs(1);
        drain(&mut t, now);
        t.submit(
            now,
            op(
                1,
                &mute,
                DeviceRequest::Read {
                    path: Lwm2mPath::object(3),
                },
            ),
        );
        t.take_offline(
            now,
            &gone,
            OfflineMode::Silent,
            Some(Duration::from_secs(120)),
        )
        .unwrap();
        let ev = drain(&mut t, now + Duration::from_secs(200));
        let timed_out_at = ev.iter().find_map(|(at, e)| {
            matches!(e, DeviceEvent::TimedOut { op: OpId(1), .. }).then_some(*at)
        });
        assert_eq!(timed_out_at, Some(now + Duration::from_secs(93)));
        let kinds: Vec<&str> = ev
            .iter()
            .filter_map(|(_, e)| match e {
                DeviceEvent::Expired { device } if *device == gone => Some("expired"),
                DeviceEvent::Registered { device, .. } if *device == gone => Some("registered"),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, vec!["expired", "registered"]);
    }

    #[test]
    fn reboot_and_factory_reset_come_back_registered() {
        let t0 = Instant::now();
        let mut t = MemoryTransport::new(MemoryConfig::with_seed(4));
        let d = id("r");
        t.add_device(t0, DeviceSpec::new(d.clone())).unwrap();
        let now = t0 + Duration::from_secs(1);
        drain(&mut t, now);
        t.set_value(
            now,
            &d,
            Lwm2mPath::resource(3, 0, 9),
            ResourceValue::Integer(3),
        )
        .unwrap();
        t.submit(
            now,
            op(
                1,
                &d,
                DeviceRequest::Execute {
                    path: Lwm2mPath::resource(3, 0, 5),
                    args: None,
                },
            ),
        );
        let ev = drain(&mut t, now + Duration::from_secs(30));
        assert_eq!(response(&ev, 1), Some(&Ok(DeviceReply::Done)));
        assert_eq!(t.registration_count(&d), 2);
        assert_eq!(
            t.value(&d, &Lwm2mPath::resource(3, 0, 9)),
            Some(&ResourceValue::Integer(100))
        );
    }

    #[test]
    fn same_seed_same_events() {
        let run = |seed| {
            let t0 = Instant::now();
            let mut t = MemoryTransport::new(MemoryConfig::with_seed(seed));
            let faults = FaultProfile {
                loss: 0.3,
                offline_periods: Some(OfflinePeriods {
                    mean_online: Duration::from_secs(30),
                    mean_offline: Duration::from_secs(20),
                }),
                ..FaultProfile::default()
            };
            let ids: Vec<_> = (0..50).map(|i| id(&format!("d{i}"))).collect();
            for d in &ids {
                t.add_device(
                    t0,
                    DeviceSpec::new(d.clone())
                        .lifetime(30)
                        .faults(faults.clone()),
                )
                .unwrap();
            }
            let mut log = Vec::new();
            for step in 0..20u64 {
                let now = t0 + Duration::from_secs(step * 10);
                for (i, d) in ids.iter().enumerate() {
                    t.submit(
                        now,
                        op(
                            step * 100 + i as u64,
                            d,
                            DeviceRequest::Read {
                                path: Lwm2mPath::resource(3, 0, 9),
                            },
                        ),
                    );
                }
                for (at, e) in drain(&mut t, now + Duration::from_secs(10)) {
                    log.push(format!("{:?} {e:?}", at - t0));
                }
            }
            log
        };
        let a = run(11);
        assert_eq!(a, run(11));
        assert_ne!(a, run(12));
        assert!(a.iter().any(|l| l.contains("TimedOut")));
        assert!(a.iter().any(|l| l.contains("Expired")));
    }

    /// A request in flight when the registration ends by expiry, or by a new Register
    /// (the device comes back from an offline period), fails at once with
    /// RegistrationEnded, before the event, not with a TimedOut 93 s after it was sent;
    /// nothing more comes for it.
    #[test]
    fn requests_in_flight_fail_when_the_registration_expires_or_is_replaced() {
        for replaced in [false, true] {
            let t0 = Instant::now();
            let mut t = MemoryTransport::new(MemoryConfig::with_seed(3));
            let d = id("d");
            t.add_device(t0, DeviceSpec::new(d.clone()).lifetime(30))
                .unwrap();
            drain(&mut t, t0 + Duration::from_secs(1));
            let now = t0 + Duration::from_secs(1);
            t.take_offline(now, &d, OfflineMode::Silent, None).unwrap();
            t.submit(
                now,
                op(
                    1,
                    &d,
                    DeviceRequest::Read {
                        path: Lwm2mPath::resource(3, 0, 9),
                    },
                ),
            );
            let mut events = drain(&mut t, now + Duration::from_secs(10));
            if replaced {
                t.bring_online(now + Duration::from_secs(10), &d).unwrap();
            }
            events.extend(drain(&mut t, now + Duration::from_secs(200)));
            let ends: Vec<usize> = events
                .iter()
                .enumerate()
                .filter(|(_, (_, e))| {
                    matches!(
                        e,
                        DeviceEvent::Response { op: OpId(1), .. }
                            | DeviceEvent::TimedOut { op: OpId(1), .. }
                    )
                })
                .map(|(i, _)| i)
                .collect();
            assert_eq!(ends.len(), 1, "one outcome: {events:?}");
            let (at, outcome) = &events[ends[0]];
            assert!(
                matches!(
                    outcome,
                    DeviceEvent::Response {
                        result: Err(DeviceError::RegistrationEnded),
                        ..
                    }
                ),
                "{outcome:?}"
            );
            assert!(*at < now + Duration::from_secs(60), "{at:?}");
            let next = &events[ends[0] + 1].1;
            if replaced {
                assert!(matches!(next, DeviceEvent::Registered { .. }), "{next:?}");
            } else {
                assert!(matches!(next, DeviceEvent::Expired { .. }), "{next:?}");
            }
        }
    }
}
