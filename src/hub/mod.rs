//! The hub: one facade over the registry, the job engine and a transport.
//!
//! A [`Hub`] owns a [`SharedRegistry`], a [`JobEngine`] and a running transport (the
//! bundled LWM2M server on UDP, or any [`Transport`] on a [`TransportThread`]). One hub
//! thread takes the transport's [`DeviceEvent`]s in batches and routes each one, in one
//! pass, into
//!
//! 1. the twin (registration, connection state, `isManaged`, `lastActivityTime`, device
//!    properties from notifications and reads), under one registry write lock per batch,
//!    so indexes and the change feed move with it;
//! 2. the job engine, whose operations go straight back to the transport.
//!
//! **`lastActivityTime`** moves only with what the device itself sent (its last sign of
//! life): a registration or update, a notification or LwM2M Send, an answer to an
//! operation (an error code and a CoAP Reset included), a bootstrap it saw through
//! (Bootstrap-Finish acknowledged, under its endpoint name). Not with a failure the
//! transport reports without hearing from the device: not registered, queue full,
//! registration ended, a time-out, nor a payload refused ([`DeviceError::BadPayload`])
//! before the request left (the transport could not encode or send it). Nor with a
//! refused or failed bootstrap (refused like a registration; a failed step may be a
//! time-out), a displaced registration (another device spoke), or an observation's end the
//! transport made ([`DeviceEvent::ObservationEnded`] with a cause that is not
//! [`by_device`](crate::transport::ObservationEndCause::by_device): a cancel, a time-out,
//! an observation it could not keep); one the device made (its error notification, its
//! CoAP Reset, its refusal) counts. With a transport that
//! reports [`DeviceEvent::Sent`] a `BadPayload` after the operation's `Sent` is the
//! device's undecodable answer and counts (or the transport could not encode the request
//! again in another format after the device refused the first, 4.06 or 4.15: that
//! refusal was the device heard from, just before); with one that does not, the hub cannot tell
//! the two apart and counts neither.
//!
//! **A displaced registration.** When the transport reports that a live registration
//! lost its address to another device ([`DeviceEvent::Displaced`]: that device's
//! Register, Update or notification came from it, a NAT having given it the port), the
//! twin's registration keeps its id but shows no address (`address: null`), since the
//! address is the other device's now; the connection state and `lastActivityTime` stay
//! (the registration lives, its device is probably alive behind a new mapping, and it
//! said nothing). Subscribers see it as a twin change (the registration). The device's
//! next Update brings the address back (a lifecycle `updated` event, with it); so does
//! its fresh notification from a new address, or from the address it lost once no other
//! registration holds it ([`DeviceEvent::AddressChanged`]), as a twin change only (the
//! address, and `lastActivityTime`: the device was heard from): that is no registration
//! Update (the lifetime is not refreshed, nothing announced changed),
//! and Leshan, too, fires `updated` for an Update only. The same holds for any
//! registration whose device's first word from a new address (NAT rebinding) is a
//! notification. Either way the device is reachable again: sync observations the move
//! failed are observed again at once, and a job step it failed goes again, as after an
//! Update. A move under a registration id the twin does not hold is the registration the
//! hub missed (its [`DeviceEvent::Registered`] dropped at
//! [`backoff::MAX_HELD_EVENTS`]): the event carries the whole registration, and it is
//! applied as that registration (a lifecycle `registered` event, the device observed
//! afresh, a reboot job waiting for it done), as an Update under an unknown id is; a twin
//! that holds no registration (created after its device registered) takes it as its
//! own. A twin that kept showing the old address would
//! point at the other device. A restarted hub does not take a displaced registration
//! back (`Hub::bind_udp` takes back the registrations it can reach, and no address is
//! known to reach this one's device at): its twin is marked disconnected, as one whose
//! lifetime ran out while the hub was down, and its device's next Update is answered
//! 4.04, so it registers again, as LWM2M clients do after a refused Update (a round
//! trip more for the device). Taking it back would need the server to hold a
//! registration without an address until its device talks; Leshan, restarted on a
//! persistent store, keeps every registration with its last address, which here is
//! another device's.
//!
//! **Property sync.** When a device registers, the hub sets notification attributes
//! (`pmin`/`pmax`) on the object instances in [`PropertySync::paths`] that the device
//! announced, and observes them (an LWM2M 1.1 device with one Observe-Composite of them
//! all unless [`PropertySync::composite`] is off, path by path if it refuses that); the
//! first answer and every notification become device property updates. A device that
//! registers again is observed again. A sync observation
//! that fails (an error or no answer to the Observe) or ends (the device declines it,
//! cancels it, answers a notification with an error) is observed again on the device's
//! next registration Update, or when its registration moves without one
//! ([`DeviceEvent::AddressChanged`]).
//!
//! **Numbers without a store.** A hub without a store starts its registry's change feed,
//! and so its etags and generation ids, after a number from the clock, 1,000 per
//! millisecond since the Unix epoch ([`seq_start_at`](crate::registry::seq_start_at)),
//! and past the numbers of any such hub that stopped in this process; every twin the
//! registry already held takes that number as its etags (see
//! [`Registry::continue_after`]). So a restarted hub hands out none of its earlier run's
//! numbers (unless that run averaged more than 1,000 a millisecond, or the clock went
//! back): a consumer resuming after one of them gets a [`FeedGap`] (the console: 409
//! `feedGap`), and an `If-Match` with an etag of the earlier run fails. This happens once
//! per registry: a second hub on the same registry keeps its numbers. With a store, the
//! store numbers past every restart instead.
//!
//! **Threads.** A `Hub` is `Clone + Send + Sync`: call it from as many threads as you like.
//! Reads take the registry's read lock; a write returns once the twin and every index
//! agree, so a query that starts after it sees it (read-your-writes).
//!
//! # Threads, locks and async
//!
//! The hub runs one thread of its own (event routing; the bundled server adds its UDP
//! driver thread) and no async runtime. What each call costs and whether it can block:
//!
//! | call | takes | cost |
//! |---|---|---|
//! | [`Hub::twin`], [`Hub::query`], [`Hub::query_page`], [`Hub::count`], [`Hub::query_tags`], [`Hub::resolve_targets`], [`Hub::changes_after`] | registry read lock | microseconds to a few milliseconds (a page of results, bitmap counts); waits only while a writer holds the lock |
//! | [`Hub::create_device`], [`Hub::remove_device`], [`Hub::add_tags`], [`Hub::set_service_property`] | registry write lock; with a store, the job engine lock first, then the store's commit (of the jobs' changes too) | microseconds in memory; with a store, one durable redb commit (an fsync: milliseconds) |
//! | [`Hub::create_job`], [`Hub::cancel_job`] | job engine lock (+ registry and store with a store) | proportional to the targets (validation, one child each); plus a commit with a store |
//! | [`Hub::job`], [`Hub::job_statistics`], [`Hub::stats`] | job engine lock / atomics | microseconds |
//! | [`Hub::job_children`], [`Hub::job_records`] | job engine lock while the records are copied | proportional to the children: about 26 ms under the lock at 100,000 children |
//! | [`Hub::query_jobs`] | job engine lock while it takes the records changed since the previous query; then the history's own read lock (see [`LiveHistory`](crate::job::LiveHistory)) | the first call builds the indexes (about 0.5 s at 100,000 children); after that, proportional to what changed: 0.36 ms for a page of 100 at 100,000 children, 0.65 ms (median) while events are routed (`cargo bench --bench job_history`) |
//! | [`Hub::request`] | nothing (queues the operation) | returns at once; [`Reply::wait`] blocks until the device answers, `.await` does not |
//! | [`Hub::subscribe`] | publisher and registry read lock | proportional to the replay ([`SubscribeOptions::after`]); [`Subscription::recv`] blocks, [`Subscription::recv_async`] does not |
//! | `Hub::publish_package`, `Hub::withdraw_package` (feature `lwm2m`) | the packages' write lock; with a store, the store first (a transaction of its own) | microseconds in memory (the body moves in; downloads under way keep theirs); with a store, one redb commit of the body |
//! | [`Hub::stop`], dropping the last clone | joins the hub's threads | milliseconds (the hub thread finishes its batch) |
//!
//! The hub thread applies up to 4,096 device events under one registry write lock, so
//! a read may wait for one batch (typically well under a millisecond per hundred events);
//! it holds the job engine lock and that write lock from the batch's first change through
//! its commit, so on a durable hub a read, a job call or a service write waits for the
//! batch and its commit (an fsync: milliseconds), and no reader sees a device's change
//! before it is durable.
//! A failed commit rebuilds memory from the store under those locks (seconds at a
//! million twins); a store that keeps failing is left alone for a while ([`backoff`]),
//! so the rebuilds do not follow one another.
//!
//! **With tokio** (or any executor): call the read-lock calls directly from async code;
//! `.await` a [`Reply`] and [`Subscription::recv_async`] (both are woken through the
//! task's waker); put service writes on a durable hub, job creation over many targets and
//! `query_jobs` at scale in `spawn_blocking`, since they take milliseconds (the first
//! `query_jobs` builds the history's indexes).
//! `examples/console` is a complete axum service built this way: REST handlers over the
//! hub, server-sent events from a subscription.
//!
#![cfg_attr(feature = "memory-fleet", doc = "```")]
#![cfg_attr(not(feature = "memory-fleet"), doc = "```ignore")]
//! use twinhub::hub::{Hub, HubConfig};
//! use twinhub::registry::Registry;
//! use twinhub::transport::memory::{DeviceSpec, MemoryConfig, MemoryTransport};
//! use twinhub::twin::Twin;
//! use twinhub::DeviceId;
//! use std::time::{Duration, Instant};
//!
//! let id = DeviceId::new("pump-7").unwrap();
//! let mut fleet = MemoryTransport::new(MemoryConfig::default());
//! fleet.add_device(Instant::now(), DeviceSpec::new(id.clone()).firmware_version("1.0"));
//! let mut registry = Registry::new();
//! registry.create(Twin::new(id.clone()).with_tag("pumps")).unwrap();
//!
//! let hub = Hub::with_transport(fleet, registry, HubConfig::default());
//! let deadline = Instant::now() + Duration::from_secs(10);
//! while hub.twin("pump-7").and_then(|t| t.device_properties.get("FirmwareVersion").cloned()).is_none() {
//!     assert!(Instant::now() < deadline, "the twin never filled in");
//!     std::thread::sleep(Duration::from_millis(10));
//! }
//! hub.stop();
//! ```

pub mod backoff;
mod builder;
#[cfg(feature = "dtls")]
mod credentials;
mod driver;
mod metrics;
#[cfg(feature = "lwm2m")]
mod package;
mod provisioning;
mod request;
mod subscribe;
#[cfg(feature = "lwm2m")]
mod udp;

pub use builder::{BuildError, HubBuilder};
pub use driver::{DeviceLink, TransportThread};
use metrics::OpClass;
pub use metrics::{HubMetrics, LATENCY_BOUNDS_MS, LatencyHistogram, MAX_TIMED_OPS};
#[cfg(feature = "lwm2m")]
pub use package::PackageServer;
pub use request::{MAX_WAITING, Reply, RequestError, RequestResult};
pub use subscribe::{
    HubEvent, LifecycleEvent, LifecycleKind, RecvFuture, RecvTimeoutError, SubscribeOptions,
    Subscription, TryRecvError,
};
#[cfg(feature = "lwm2m")]
pub use udp::PublishError;

use crate::job::{
    CancelMode, EngineConfig, JobEngine, JobId, JobRecord, JobSpec, JobStatistics, JobStatus,
    SpecError,
};
#[cfg(feature = "lwm2m")]
use crate::lwm2m::server::{ServerConfig, UdpServer};
use crate::lwm2m::{Content, Lwm2mPath, ResourceValue};
use crate::query::{QueryError, QueryExpression, QueryOptions, QueryResult};
use crate::registry::{Change, FeedGap, Registry, RegistryError, SharedRegistry, StoreFailure};
use crate::store::SharedStore;
use crate::transport::{
    DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, NotificationAttributes, OpId,
    Transport,
};
use crate::twin::{ConnectionState, RegistrationInfo, Scalar, Twin};
use crate::{DeviceId, Timestamp};
use provisioning::{AutoProvisioned, Verdict};
use request::Waiting;
use rustc_hash::FxHashSet;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use subscribe::Publisher;

/// Which device properties the hub keeps in sync, and how eagerly.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PropertySync {
    /// What to observe when a device registers (only what lies in an object instance it
    /// announces). Default: `/3/0` (Device), `/1/0` (Server), `/5/0` (Firmware Update):
    /// every preview device property lives there. Jobs never observe a path listed here
    /// a second time: a firmware-update job reads `/5/0` and follows the sync
    /// observation's notifications ([`EngineConfig::host_observes`]), so a device that
    /// keeps one observation per path keeps the hub's.
    pub paths: Vec<Lwm2mPath>,
    /// Attributes written before observing. The preview used pmin 5 min and pmax 6 h;
    /// the default here is pmin 1 s and pmax 1 h, because a twin that lags minutes behind
    /// its device was the preview's most common complaint. `None` fields are not written.
    pub attributes: NotificationAttributes,
    /// Observe an LWM2M 1.1 device's synced paths with one Observe-Composite instead of
    /// one observation per path (default on): one notification carries every changed
    /// value, and the device keeps one observation. LWM2M 1.0 devices are always observed
    /// path by path. A device that refuses the composite (4.05 or any error) is observed
    /// path by path from then on.
    pub composite: bool,
}

impl Default for PropertySync {
    fn default() -> Self {
        PropertySync {
            paths: vec![
                Lwm2mPath::instance(3, 0),
                Lwm2mPath::instance(1, 0),
                Lwm2mPath::instance(5, 0),
            ],
            attributes: NotificationAttributes {
                pmin: Some(1),
                pmax: Some(3600),
                ..NotificationAttributes::default()
            },
            composite: true,
        }
    }
}

/// The most [`DeviceRequest::EndRegistration`]s the hub remembers (the newest, answered
/// or not; see [`SentEnds`]). About 100 bytes each.
const MAX_ENDS_REMEMBERED: usize = 4096;

/// The [`DeviceRequest::EndRegistration`]s the hub sent most recently, at most
/// [`MAX_ENDS_REMEMBERED`] (the oldest is forgotten first):
///
/// - their answers are the transport's, not the device being heard from;
/// - an Update or a notification under a registration being ended (or ended) is not
///   the device's current registration: the transport took it before the end reached
///   it. It is not applied, so a twin created again under the id meanwhile does not
///   adopt a registration (or its data) that is about to end; nor is the registration
///   ended a second time.
///
/// Registration ids are never reused by the bundled server (random 64-bit), so an entry
/// stays true after the answer; a transport that reuses them makes the registration
/// current again with its Register (the entry is dropped then). One forgotten at the bound
/// costs at most what the hub did before it kept them (the Update or notification
/// applied, or one end more).
#[derive(Default)]
struct SentEnds {
    order: VecDeque<OpId>,
    ops: HashMap<OpId, (DeviceId, String)>,
    registrations: HashMap<(DeviceId, String), OpId>,
}

impl SentEnds {
    fn note(&mut self, op: &DeviceOp) {
        let DeviceRequest::EndRegistration { registration_id } = &op.request else {
            return;
        };
        if self.order.len() == MAX_ENDS_REMEMBERED
            && let Some(old) = self.order.pop_front()
            && let Some(key) = self.ops.remove(&old)
            && self.registrations.get(&key) == Some(&old)
        {
            self.registrations.remove(&key);
        }
        let key = (op.device.clone(), registration_id.clone());
        self.order.push_back(op.id);
        self.ops.insert(op.id, key.clone());
        self.registrations.insert(key, op.id);
    }

    fn is_end(&self, op: OpId) -> bool {
        self.ops.contains_key(&op)
    }

    fn ending(&self, device: &DeviceId, registration_id: &str) -> bool {
        self.registrations
            .contains_key(&(device.clone(), registration_id.to_owned()))
    }

    /// A Register under `registration_id` names the device's current registration: a
    /// transport that reuses ids (the bundled server does not) made it anew, and its
    /// Updates apply again. The end's answer stays recognised.
    fn registered(&mut self, device: &DeviceId, registration_id: &str) {
        self.registrations
            .remove(&(device.clone(), registration_id.to_owned()));
    }
}

/// Settings of a [`Hub`]. `Default` has property sync on and auto-provisioning off.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HubConfig {
    /// Property sync on registration; `None` turns it off.
    pub sync: Option<PropertySync>,
    /// The job engine's settings (refused by [`HubConfig::validate`] as
    /// [`EngineConfig::validate`] refuses them).
    pub jobs: EngineConfig,
    /// Let unknown devices register and create their twins (off: only devices that exist
    /// in the registry and are enabled may register).
    pub auto_provision: bool,
    /// Most twins auto-provisioning holds at once; an unknown device beyond it is refused
    /// (4.03) until one goes. Twins the service created are not counted, 10,000.
    pub auto_provision_limit: usize,
    /// How long after its registration ended an auto-provisioned twin that the service
    /// never adopted (no tags, no service properties, no credentials) is removed, 24 h.
    #[serde(with = "crate::time::millis", rename = "autoProvisionExpiryMs")]
    pub auto_provision_expiry: Duration,
    /// The bundled LWM2M server's settings (used by `Hub::bind_udp` and `Hub::bind_dtls`,
    /// which refuse what [`ServerConfig::validate`] refuses).
    #[cfg(feature = "lwm2m")]
    pub server: ServerConfig,
    /// The DTLS layer's bounds (used by `Hub::bind_dtls`, which refuses what
    /// `DtlsServerConfig::validate` refuses: a bound of 0 would refuse every device).
    #[cfg(feature = "dtls")]
    pub dtls: crate::dtls::DtlsServerConfig,
    /// The `host:port` devices reach the hub at, for the URIs `Hub::publish_package`
    /// returns (`"192.0.2.7:5684"`, `"[2001:db8::7]:5684"`); `None`: the listener's
    /// address, which is `0.0.0.0` on a hub bound to every interface.
    #[cfg(feature = "lwm2m")]
    pub package_authority: Option<String>,
    /// How many packages, of how many bytes together, `Hub::publish_package` keeps in
    /// memory (default 1,024 and 2 GiB); past them it refuses with
    /// `PublishError::Package(PackageError::Full)`.
    #[cfg(feature = "lwm2m")]
    pub package_limits: crate::lwm2m::server::PackageLimits,
    /// A durable store (see [`crate::store`]); `None` keeps everything in memory only
    /// (the change feed's numbers and etags then start from the clock: see the module
    /// docs, Numbers without a store).
    /// Start the hub with the registry [`Store::open`](crate::store::Store::open)
    /// returned (see the [`store`](crate::store) module's example of a hub with a store).
    /// Another registry is imported into the store ([`Store::adopt`]) only while the
    /// directory holds no twin; over one that does, it is refused
    /// ([`StoreError::WouldReplace`](crate::store::StoreError::WouldReplace)) rather than
    /// replacing the directory's twins: a hub started on `Registry::new()` over a store
    /// cannot empty it. To replace them on purpose, call [`Store::adopt`] with the other
    /// registry before starting the hub. [`HubBuilder::build`] reports a refused or
    /// failed import ([`BuildError::Store`]), `bind_udp` and `bind_dtls` a refused one
    /// (`InvalidInput`, nothing bound), while [`Hub::start`] leaves the store poisoned,
    /// and the first commit then rebuilds memory from the directory (the imported twins
    /// are gone) and fails. With a store, a service write returns after it is durable,
    /// and every batch of device events is committed in one transaction.
    ///
    /// [`Store::adopt`]: crate::store::Store::adopt
    #[serde(skip)]
    pub store: Option<SharedStore>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            sync: Some(PropertySync::default()),
            jobs: EngineConfig::default(),
            auto_provision: false,
            auto_provision_limit: 10_000,
            auto_provision_expiry: Duration::from_secs(24 * 3600),
            #[cfg(feature = "lwm2m")]
            server: ServerConfig::default(),
            #[cfg(feature = "dtls")]
            dtls: crate::dtls::DtlsServerConfig::default(),
            #[cfg(feature = "lwm2m")]
            package_authority: None,
            #[cfg(feature = "lwm2m")]
            package_limits: crate::lwm2m::server::PackageLimits::default(),
            store: None,
        }
    }
}

/// Why [`HubConfig::validate`] refused a hub's settings: the member it is in, and the
/// setting, named as in JSON (`jobs: pollMinMs must be above zero`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum HubConfigError {
    /// `server` ([`ServerConfig::validate`]).
    #[cfg(feature = "lwm2m")]
    Server(crate::lwm2m::server::ServerConfigError),
    /// `dtls` ([`DtlsServerConfig::validate`](crate::dtls::DtlsServerConfig::validate)).
    #[cfg(feature = "dtls")]
    Dtls(crate::dtls::DtlsConfigError),
    /// `jobs` ([`EngineConfig::validate`]).
    Jobs(crate::job::EngineConfigError),
}

impl std::fmt::Display for HubConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            #[cfg(feature = "lwm2m")]
            HubConfigError::Server(e) => write!(f, "server: {e}"),
            #[cfg(feature = "dtls")]
            HubConfigError::Dtls(e) => write!(f, "dtls: {e}"),
            HubConfigError::Jobs(e) => write!(f, "jobs: {e}"),
        }
    }
}

impl std::error::Error for HubConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "lwm2m")]
            HubConfigError::Server(e) => Some(e),
            #[cfg(feature = "dtls")]
            HubConfigError::Dtls(e) => Some(e),
            HubConfigError::Jobs(e) => Some(e),
        }
    }
}

impl HubConfig {
    /// Checks the settings that would leave the hub inert or panic its threads: `jobs`
    /// ([`EngineConfig::validate`]), `server` (`ServerConfig::validate`, feature
    /// `lwm2m`) and `dtls` (`DtlsServerConfig::validate`, feature `dtls`), in that order;
    /// the first setting found wrong is reported.
    ///
    /// [`HubBuilder::build`] ([`BuildError::Config`]), `Hub::bind_udp` and
    /// `Hub::bind_dtls` (an [`InvalidInput`](std::io::ErrorKind::InvalidInput) error with
    /// the [`HubConfigError`] inside) check the parts their transport uses (a hub over a
    /// transport of its own: `jobs` only; over UDP: `server` too; over DTLS: all three)
    /// and start nothing on a refusal. [`Hub::start`] and [`Hub::with_transport`] cannot
    /// fail: call this first; there a job engine duration past the bound is taken as
    /// [`MAX_CONFIG_DURATION`](crate::MAX_CONFIG_DURATION), never a panic.
    pub fn validate(&self) -> Result<(), HubConfigError> {
        self.check(true, true)
    }

    /// [`Self::validate`] of `jobs`, and of `server` and `dtls` when asked.
    pub(crate) fn check(&self, server: bool, dtls: bool) -> Result<(), HubConfigError> {
        // (Without the transport features there is neither to check.)
        let _ = (server, dtls);
        self.jobs.validate().map_err(HubConfigError::Jobs)?;
        #[cfg(feature = "lwm2m")]
        if server {
            self.server.validate().map_err(HubConfigError::Server)?;
        }
        #[cfg(feature = "dtls")]
        if dtls {
            self.dtls.validate().map_err(HubConfigError::Dtls)?;
        }
        Ok(())
    }
}

/// Counters of what the hub thread did, for reports and tests (JSON: camelCase fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubStats {
    /// Transport events processed.
    pub events: u64,
    /// Registrations accepted (first and repeated).
    pub registrations: u64,
    /// Registrations the transport refused.
    pub rejected: u64,
    /// Notifications received.
    pub notifications: u64,
    /// Device property values written into twins.
    pub property_updates: u64,
    /// Device property values the twin refused (wrong type for a well-known property,
    /// a value too large, ...).
    pub property_errors: u64,
    /// Operations sent to devices (sync and jobs).
    pub ops_sent: u64,
    /// Device events dropped unapplied: they arrived while the hub held as many of their
    /// kind as it may ([`backoff::MAX_HELD_NOTIFICATIONS`], [`backoff::MAX_HELD_EVENTS`]),
    /// went through [`backoff::MAX_TRIES`] failed commits, or were held when the hub
    /// stopped.
    /// The counters above count an event at each try.
    pub dropped_events: u64,
}

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    registrations: AtomicU64,
    rejected: AtomicU64,
    notifications: AtomicU64,
    property_updates: AtomicU64,
    property_errors: AtomicU64,
    ops_sent: AtomicU64,
    dropped_events: AtomicU64,
    /// Device events the hub's loop holds right now (a gauge, see `HubMetrics`).
    held_events: AtomicU64,
}

struct Inner {
    registry: SharedRegistry,
    jobs: Mutex<JobEngine>,
    /// The job history indexed for `query_jobs`, brought up to date by each query.
    history: crate::job::LiveHistory,
    /// Submit times of job and sync operations, for their latency histograms.
    op_times: metrics::OpTimes,
    link: Box<dyn DeviceLink>,
    config: HubConfig,
    next_op: AtomicU64,
    stop: AtomicBool,
    counters: Counters,
    local_addr: Option<SocketAddr>,
    thread: Mutex<Option<JoinHandle<()>>>,
    #[cfg_attr(not(feature = "lwm2m"), allow(dead_code))]
    udp: Mutex<Option<UdpSlot>>,
    provisioned: Arc<AutoProvisioned>,
    last_sweep: Mutex<Instant>,
    /// Failed commits in a row, and how long the hub leaves the store alone after them
    /// (a rebuild reads the whole store).
    backoff: Mutex<backoff::StoreBackoff>,
    /// Where in the registry's removal log the job engine last heard of removals
    /// (`None`: not yet; see `forget_removed`).
    engine_heard: Mutex<Option<(u64, u64)>>,
    /// The [`DeviceRequest::EndRegistration`]s sent lately (see [`SentEnds`]).
    ends_sent: Mutex<SentEnds>,
    /// With a transport that reports [`DeviceEvent::Sent`]: the operations whose `Sent`
    /// came (noted as it arrives: the transport's fact, whatever becomes of the batch)
    /// and whose answer or time-out is not yet applied in a committed batch, nor dropped.
    /// A [`DeviceError::BadPayload`] answer to one of them is the device's (it answered,
    /// undecodably); one to any other is the transport's own (it could not encode or
    /// send the request, which never left): only the first is activity (see `apply`).
    /// One entry per operation that left and is not yet answered: at most the operations
    /// the transport holds in flight (each transport bounds them, the LWM2M server at
    /// 65,536 requests), plus those whose answer the hub holds while its store fails.
    left: Mutex<FxHashSet<OpId>>,
    /// Requests of [`Hub::request`] waiting for their answers.
    waiting: Arc<Waiting>,
    /// The hub's own sync observations (only the hub thread touches it).
    synced: Mutex<HashMap<DeviceId, Vec<SyncObservation>>>,
    /// The coaps listener's key store and counters (set by `Hub::bind_dtls`).
    #[cfg(feature = "dtls")]
    secure: std::sync::OnceLock<credentials::Secure>,
    /// The packages the bundled server hands the hub's devices (set by the UDP binds).
    #[cfg(feature = "lwm2m")]
    packages: std::sync::OnceLock<crate::lwm2m::server::Packages>,
    /// Subscribers and how far the change feed was published to them.
    publisher: Publisher,
}

/// One sync observation of a registered device: the Observe operation that established
/// (or is establishing) it, and whether it is known to be gone. One entry per synced
/// path per registered device; a device's entries go when it de-registers or expires.
#[derive(Clone)]
struct SyncObservation {
    /// The path observed, or the paths of an Observe-Composite.
    paths: SyncPaths,
    op: OpId,
    lost: bool,
}

/// What one sync observation covers.
#[derive(Clone)]
enum SyncPaths {
    One(Lwm2mPath),
    Composite(Vec<Lwm2mPath>),
}

impl SyncObservation {
    /// The paths it observes.
    fn paths(&self) -> &[Lwm2mPath] {
        match &self.paths {
            SyncPaths::One(path) => std::slice::from_ref(path),
            SyncPaths::Composite(paths) => paths,
        }
    }

    fn request(&self) -> DeviceRequest {
        match &self.paths {
            SyncPaths::One(path) => DeviceRequest::Observe { path: *path },
            SyncPaths::Composite(paths) => DeviceRequest::ObserveComposite {
                paths: paths.clone(),
            },
        }
    }
}

/// The service-side facade. See the [module docs](self).
///
/// Clones share one hub. Dropping the last clone stops it as [`Hub::stop`] does: its
/// threads end and its sockets close.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
    /// Shared by the clones only (never by the hub's own threads), so its drop marks the
    /// last clone.
    _last: Arc<StopOnDrop>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("local_addr", &self.inner.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The bundled UDP server a hub owns (none without the `lwm2m` feature).
#[cfg(feature = "lwm2m")]
type UdpSlot = UdpServer;
#[cfg(not(feature = "lwm2m"))]
type UdpSlot = std::convert::Infallible;

/// Stops the hub when the last [`Hub`] clone goes.
struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// What became of a batch of device events ([`Inner::process`]).
enum Outcome {
    /// Applied, and durable (or no store).
    Committed,
    /// Applied, but the commit failed (or the rebuild of memory it needed): memory is
    /// what is durable, and the batch is applied again at the next try.
    Failed,
    /// Not applied: the hub backs off from a failing store.
    NotTried,
}

/// The sync table entries of some devices (`None`: the device had none), to put back.
type SyncSnapshot = Vec<(DeviceId, Option<Vec<SyncObservation>>)>;

/// Longest the hub thread waits for an event before it runs the job timers.
const TICK: Duration = Duration::from_millis(20);
/// Most events applied under one registry write lock.
const MAX_BATCH: usize = 4096;

impl Hub {
    /// Starts a hub over a running transport: `link` takes operations, `events` yields
    /// what the devices do. `Hub::bind_udp` (feature `lwm2m`) and [`Hub::with_transport`]
    /// call this.
    /// Without a store, `registry`'s change feed goes on after a number from the clock
    /// first, its twins taking that number as their etags (see the module docs, Numbers
    /// without a store).
    pub fn start(
        registry: Registry,
        link: Box<dyn DeviceLink>,
        events: Receiver<DeviceEvent>,
        config: HubConfig,
    ) -> Hub {
        Self::start_shared_registry(SharedRegistry::new(registry), link, events, config)
    }

    /// [`Hub::start`] on a registry shared with the caller (the builder's path).
    fn start_shared_registry(
        registry: SharedRegistry,
        link: Box<dyn DeviceLink>,
        events: Receiver<DeviceEvent>,
        config: HubConfig,
    ) -> Hub {
        let provisioned = AutoProvisioned::for_config(&config);
        Self::start_shared(registry, link, events, config, (None, None), provisioned)
    }

    fn start_shared(
        registry: SharedRegistry,
        link: Box<dyn DeviceLink>,
        events: Receiver<DeviceEvent>,
        config: HubConfig,
        (local_addr, udp): (Option<SocketAddr>, Option<UdpSlot>),
        provisioned: Arc<AutoProvisioned>,
    ) -> Hub {
        match &config.store {
            // A failure poisons the store: every later service write reports it. A
            // registry that would replace the directory's twins is refused, and the
            // store poisoned too: the first write then rebuilds the registry from the
            // directory (and fails), so nothing the directory held is lost.
            Some(store) => {
                let mut store = store.lock();
                if store.adopt_unless_replacing(&mut registry.write()).is_err() {
                    store.poison();
                }
            }
            // Without a store, the numbers start from the clock (see the registry's module
            // docs, Numbers across restarts), past those of hubs stopped in this process.
            None => registry.write().continue_after_clock(
                Timestamp::now(),
                STOPPED_THROUGH.load(Ordering::Acquire).saturating_add(1),
            ),
        }
        // The job engine follows the sync observations instead of observing the same
        // paths a second time (a device may keep one observation per path).
        let mut jobs_config = config.jobs.clone();
        // The engine counts a reboot's Execute as sent at the transport's `Sent` when
        // the transport reports it (a sleeping device's queued request has not left).
        jobs_config.transport_reports_sent = link.reports_sent();
        if let Some(sync) = &config.sync {
            for path in &sync.paths {
                if !jobs_config.host_observes.contains(path) {
                    jobs_config.host_observes.push(*path);
                }
            }
        }
        let jobs = match &config.store {
            // Opening the store checked its job rows; should reading them fail now (an
            // I/O error), the store is poisoned: jobs run in memory only and every
            // service write, job creation included, reports the store's failure.
            Some(store) => {
                let mut store = store.lock();
                match store.load_jobs(jobs_config.clone(), Instant::now(), Timestamp::now()) {
                    Ok(jobs) => jobs,
                    Err(_) => {
                        store.poison();
                        JobEngine::new(jobs_config, Instant::now(), Timestamp::now())
                    }
                }
            }
            None => JobEngine::new(jobs_config, Instant::now(), Timestamp::now()),
        };
        let mut jobs = jobs;
        jobs.enable_progress();
        if config.store.is_some() {
            // Rebuilt from the store after a failed commit (`Inner::recover`), it hands
            // the rebuilt engine what only it held.
            jobs.keep_for_rebuild();
        }
        let inner = Arc::new(Inner {
            registry,
            jobs: Mutex::new(jobs),
            history: crate::job::LiveHistory::new(),
            op_times: metrics::OpTimes::default(),
            link,
            config,
            next_op: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            local_addr,
            thread: Mutex::new(None),
            udp: Mutex::new(udp),
            provisioned,
            last_sweep: Mutex::new(Instant::now()),
            backoff: Mutex::default(),
            engine_heard: Mutex::new(None),
            ends_sent: Mutex::default(),
            left: Mutex::default(),
            waiting: Arc::default(),
            synced: Mutex::new(HashMap::new()),
            #[cfg(feature = "dtls")]
            secure: std::sync::OnceLock::new(),
            #[cfg(feature = "lwm2m")]
            packages: std::sync::OnceLock::new(),
            publisher: Publisher::default(),
        });
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name("twinhub-hub".into())
            .spawn(move || worker.run(events))
            .expect("spawning the hub thread");
        *lock(&inner.thread) = Some(thread);
        Hub {
            _last: Arc::new(StopOnDrop(inner.clone())),
            inner,
        }
    }

    /// Starts a hub over any sans-IO [`Transport`] (for example the in-memory simulated
    /// fleet), driven on a thread of its own on the real clock.
    pub fn with_transport<T: Transport + Send + 'static>(
        transport: T,
        registry: Registry,
        config: HubConfig,
    ) -> Hub {
        let (thread, events) = TransportThread::spawn(transport);
        Self::start(registry, Box::new(thread), events, config)
    }

    /// Sends one LWM2M operation to one device and returns its answer to come: wait for
    /// it with [`Reply::wait`] or `.await` it. Any [`DeviceRequest`] goes: read, discover,
    /// write, write-attributes, execute, create, delete, observe, cancel-observe. A read's
    /// (or observe's) values also go into the twin, as the hub's own reads do; an
    /// observation's later notifications update the twin.
    ///
    /// Does not block: the operation is queued for the device and the call returns.
    ///
    #[cfg_attr(feature = "lwm2m", doc = "```no_run")]
    #[cfg_attr(not(feature = "lwm2m"), doc = "```ignore")]
    /// use std::time::Duration;
    /// use twinhub::hub::{Hub, HubConfig};
    /// use twinhub::registry::Registry;
    /// use twinhub::transport::{DeviceReply, DeviceRequest};
    /// use twinhub::{DeviceId, Lwm2mPath};
    /// let hub = Hub::bind_udp("127.0.0.1:0", Registry::new(), HubConfig::default())?;
    /// let device = DeviceId::new("device-1")?;
    /// let read = DeviceRequest::Read { path: Lwm2mPath::resource(3, 0, 9) };
    /// match hub.request(&device, read).wait(Duration::from_secs(10)) {
    ///     Ok(DeviceReply::Content(values)) => println!("battery: {values:?}"),
    ///     Ok(other) => println!("{other:?}"),
    ///     Err(e) => println!("no answer: {e}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn request(&self, device: &DeviceId, request: DeviceRequest) -> Reply {
        let op = self.inner.next_op_id();
        if self.inner.stop.load(Ordering::Acquire) {
            return self.inner.waiting.failed(op, RequestError::HubStopped);
        }
        let Some(reply) = self.inner.waiting.register(op) else {
            let full = RequestError::Device(DeviceError::QueueFull);
            return self.inner.waiting.failed(op, full);
        };
        // The hub may have stopped since the check above, after it failed every waiting
        // request: this one would otherwise wait out its whole time-out.
        if self.inner.stop.load(Ordering::Acquire) {
            self.inner
                .waiting
                .complete(op, Err(RequestError::HubStopped));
            return reply;
        }
        self.inner.send(vec![DeviceOp {
            id: op,
            device: device.clone(),
            request,
        }]);
        reply
    }

    /// Turns LWM2M 1.1 Send on (`muted: false`) or off for one device: writes its Mute
    /// Send resource (`/1/0/23`), which the device honours. Values a device Sends (`POST
    /// /dp`) are applied to its twin like notifications. The answer is the device's.
    pub fn mute_send(&self, device: &DeviceId, muted: bool) -> Reply {
        let path = Lwm2mPath::resource(1, 0, 23);
        self.request(
            device,
            DeviceRequest::Write {
                path,
                mode: crate::transport::WriteMode::Replace,
                content: Content::single(path, ResourceValue::Boolean(muted)),
            },
        )
    }

    /// Twins auto-provisioning holds now (created for unknown devices that registered,
    /// not yet expired or forgotten); at most [`HubConfig::auto_provision_limit`].
    pub fn auto_provisioned_count(&self) -> usize {
        self.inner.provisioned.len()
    }

    /// The UDP address the bundled LWM2M server listens on, if the hub runs one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// The registry: read twins and indexes through `read()`, change them through
    /// `write()`. Prefer the hub's own methods, which say what they do.
    ///
    /// Do not call the hub while holding one of the registry's guards: the hub takes its
    /// locks in the order jobs, registry, store (its loop does so every 20 ms), so a job
    /// call (`create_job`, `job`, `query_jobs`, ...) made with a registry guard held can
    /// deadlock. Take what you need, drop the guard, then call the hub.
    ///
    /// Change the registry's contents, never the registry itself: the hub moves its
    /// numbers past an earlier run's only when it starts, so a registry swapped in
    /// through the guard (`*hub.registry().write() = Registry::new()`) numbers its changes
    /// and etags from 1 again; with a store, the next commit refuses it
    /// ([`StoreError::ForeignRegistry`](crate::store::StoreError::ForeignRegistry)) and
    /// the hub puts the store's registry back, dropping what the swapped-in one held. To
    /// start over, stop the hub and start one on the new registry.
    pub fn registry(&self) -> &SharedRegistry {
        &self.inner.registry
    }

    /// Subscribes to twin changes, registrations and job progress (see
    /// [`Subscription`] for when events come, the lag signal and resuming). Fails only when
    /// [`SubscribeOptions::after`] names changes the feed no longer holds, or a number
    /// this history never handed out (see [`FeedGap`]).
    ///
    #[cfg_attr(feature = "memory-fleet", doc = "```")]
    #[cfg_attr(not(feature = "memory-fleet"), doc = "```ignore")]
    /// use std::time::Duration;
    /// use twinhub::hub::{Hub, HubConfig, HubEvent, SubscribeOptions};
    /// use twinhub::registry::Registry;
    /// use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
    /// use twinhub::twin::Twin;
    /// use twinhub::DeviceId;
    ///
    /// let hub = Hub::with_transport(
    ///     MemoryTransport::new(MemoryConfig::default()),
    ///     Registry::new(),
    ///     HubConfig::default(),
    /// );
    /// let events = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    /// hub.create_device(Twin::new(DeviceId::new("pump-7")?)).unwrap();
    /// match events.recv_timeout(Duration::from_secs(5)) {
    ///     Ok(HubEvent::Twin(change)) => assert_eq!(change.device.as_str(), "pump-7"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, FeedGap> {
        self.inner
            .publisher
            .subscribe(&self.inner.registry, options, |reg| {
                self.inner.publishable(reg)
            })
    }

    /// Creates a device twin. On a hub with a `coaps` listener, PSK credentials in the
    /// twin's authentication are checked and taken as `Hub::set_psk` takes them (an
    /// identity another device holds is refused, [`TwinError::PskIdentityTaken`]; the
    /// key is usable once the twin is durable).
    ///
    /// [`TwinError::PskIdentityTaken`]: crate::twin::TwinError::PskIdentityTaken
    pub fn create_device(&self, twin: Twin) -> Result<(), RegistryError> {
        #[cfg(feature = "dtls")]
        if self.takes_psk(&twin) {
            return self.create_with_psk(twin);
        }
        self.inner.write_durably(|reg| reg.create(twin).map(|_| ()))
    }

    /// Removes a device; returns its last twin. Its credentials go with it (its DTLS
    /// sessions close when next used). Its jobs' children that hold or wait for the
    /// device fail as `deviceRemoved` before this returns, those that have not reached
    /// their turn when it comes, so a twin created again under the same id is a new
    /// device to the jobs. (The job engine reads removals from the registry, so a removal
    /// through [`Hub::registry`] counts too, at the hub's next event or tick: a twin
    /// removed and created again through it within that tick, 20 ms at most, is taken
    /// for the same device.)
    pub fn remove_device(&self, id: &str) -> Result<Twin, RegistryError> {
        // The key goes with the twin, under the registry's lock: a twin created again
        // and given credentials right after keeps them. (If the removal cannot be made
        // durable, the key is out of the live key store anyway: the safe direction, as
        // with `remove_psk`.)
        let twin = self.inner.write_durably(|reg| {
            let twin = reg.remove(id)?;
            #[cfg(feature = "dtls")]
            if let Some(secure) = self.inner.secure.get() {
                secure.store.remove_device(&twin.device_id);
            }
            Ok(twin)
        })?;
        self.inner.provisioned.forget(&twin.device_id);
        // The engine hears of it now, not at the next tick: a twin created again under
        // the same id before then would be taken for the same device.
        self.inner.forget_removed_now();
        Ok(twin)
    }

    /// A copy of a device's twin.
    pub fn twin(&self, id: &str) -> Option<Twin> {
        self.inner.registry.read().get(id).map(|t| t.to_twin())
    }

    /// Adds tags (If-Match on the service-properties etag when given); returns the new etag.
    pub fn add_tags(
        &self,
        id: &str,
        tags: &[&str],
        if_match: Option<crate::twin::Etag>,
    ) -> Result<crate::twin::Etag, RegistryError> {
        let etag = self
            .inner
            .write_durably(|reg| reg.add_tags(id, tags, if_match))?;
        self.inner.note_adoption(id);
        Ok(etag)
    }

    /// Sets (or with `None` removes) a service property, If-Match on the etag when given;
    /// returns the new etag.
    pub fn set_service_property(
        &self,
        id: &str,
        name: &str,
        value: Option<crate::twin::ServiceValue>,
        if_match: Option<crate::twin::Etag>,
    ) -> Result<crate::twin::Etag, RegistryError> {
        let etag = self
            .inner
            .write_durably(|reg| reg.set_service_property(id, name, value, if_match))?;
        self.inner.note_adoption(id);
        Ok(etag)
    }

    /// Runs a JSON query expression (the preview's format) on the twins: the first page.
    /// Sees every write that returned before it started.
    pub fn query(&self, text: &str) -> Result<QueryResult<Twin>, QueryError> {
        self.query_page(text, &QueryOptions::default())
    }

    /// Runs a JSON query expression with a page size and a continuation token: the
    /// first page with `options.continuation` `None`, then each next page with the
    /// [`QueryResult::continuation`] the page before returned (the same expression).
    /// [`QueryOptions::default`] asks for the first page of
    /// [`DEFAULT_PAGE_SIZE`](crate::query::DEFAULT_PAGE_SIZE) results; a page size
    /// outside 1..=[`MAX_PAGE_SIZE`](crate::query::MAX_PAGE_SIZE) is refused.
    pub fn query_page(
        &self,
        text: &str,
        options: &QueryOptions,
    ) -> Result<QueryResult<Twin>, QueryError> {
        let expr = crate::query::parse(text)?;
        self.query_expr(&expr, options)
    }

    /// Runs a query expression built in Rust (see [`QueryExpression`]'s builder).
    pub fn query_expr(
        &self,
        expr: &QueryExpression,
        options: &QueryOptions,
    ) -> Result<QueryResult<Twin>, QueryError> {
        let reg = self.inner.registry.read();
        Ok(crate::query::execute(&*reg, expr, options)?.map_documents(|t| t.to_twin()))
    }

    /// How many twins match, without materialising any (bitmap intersection lengths).
    pub fn count(&self, expr: &QueryExpression) -> Result<u64, QueryError> {
        crate::query::count(&*self.inner.registry.read(), expr)
    }

    /// The ids of devices that carry all `tags`, at most `top`, in device id order (no
    /// tags: none). The cost follows the answer, not the fleet: the tags' bitmaps are
    /// intersected, then a small match is sorted, and a large one (over 16 times `top`
    /// and over 4,096) is read in the registry's id order until `top` are found (about
    /// `top` times fleet / matches steps).
    pub fn query_tags(&self, tags: &[&str], top: usize) -> Vec<DeviceId> {
        let reg = self.inner.registry.read();
        let mut bitmaps = Vec::with_capacity(tags.len());
        for tag in tags {
            match reg.tag_bitmap(tag) {
                Some(b) => bitmaps.push(b),
                None => return Vec::new(),
            }
        }
        // Smallest first: the intersection never grows.
        bitmaps.sort_by_key(|b| b.len());
        let Some((first, rest)) = bitmaps.split_first() else {
            return Vec::new();
        };
        let mut all = (*first).clone();
        for b in rest {
            all &= *b;
        }
        if top == 0 || all.is_empty() {
            return Vec::new();
        }
        if all.len() <= (top as u64).saturating_mul(16).max(4096) {
            let mut ids: Vec<DeviceId> = all
                .iter()
                .filter_map(|s| {
                    reg.twin_at(crate::registry::Slot(s))
                        .map(|t| t.device_id().clone())
                })
                .collect();
            ids.sort();
            ids.truncate(top);
            return ids;
        }
        reg.device_ids(std::ops::Bound::Unbounded)
            .filter(|(_, slot)| all.contains(slot.0))
            .map(|(id, _)| id.clone())
            .take(top)
            .collect()
    }

    /// The device ids a query's filter selects (every match, in device id order): what a
    /// job's targets are frozen to.
    pub fn resolve_targets(&self, expr: &QueryExpression) -> Result<Vec<DeviceId>, QueryError> {
        let reg = self.inner.registry.read();
        let slots = crate::query::matching_slots(&*reg, expr)?;
        let mut ids: Vec<DeviceId> = slots
            .iter()
            .filter_map(|s| {
                reg.twin_at(crate::registry::Slot(s))
                    .map(|t| t.device_id().clone())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Changes after sequence number `after` (0 for all that the feed still holds); a
    /// [`FeedGap`] when the feed dropped some of them or never handed `after` out (past
    /// the newest; or skipped, as the numbers below where a hub without a store starts:
    /// see the module docs, Numbers without a store).
    pub fn changes_after(&self, after: u64) -> Result<Vec<Change>, FeedGap> {
        let reg = self.inner.registry.read();
        reg.changes_after(after).map(|c| c.cloned().collect())
    }

    /// Creates and starts (or schedules) a job and returns its record. Its targets are
    /// frozen now and must all exist in the registry ([`SpecError::UnknownDevice`]
    /// otherwise, and nothing is created). With a store, returns once the job is durable
    /// (nothing is sent to a device before).
    ///
    /// The spec is checked as [`JobSpec::validate`] checks it (in every build): each value
    /// of a [`WriteDeviceProperties`](crate::job::JobType::WriteDeviceProperties) job
    /// against its resource's type in the standard objects' table, as the bundled server
    /// checks it before sending: one that can never fit (`-1` for an Unsigned Integer, a
    /// float or a string for an Integer) is [`SpecError::ValueDoesNotFit`], and nothing is
    /// created. A value the server converts (an integer for a Float resource) passes, and
    /// so does any value at a resource the table does not know (the types a service gives
    /// `HubBuilder::object_types` are not asked here).
    pub fn create_job(&self, spec: JobSpec) -> Result<JobRecord, SpecError> {
        {
            let reg = self.inner.registry.read();
            if let Some(d) = spec.targets.iter().find(|d| !reg.contains(d.as_str())) {
                return Err(SpecError::UnknownDevice(d.clone()));
            }
        }
        #[cfg(feature = "lwm2m")]
        if let crate::job::JobType::FirmwareUpdate { package_uri, .. } = &spec.job {
            self.check_own_package(package_uri)?;
        }
        let now = Instant::now();
        let id = spec.id.clone();
        let (record, ops) = {
            let mut jobs = lock(&self.inner.jobs);
            self.inner
                .ready_to_write(&mut jobs, &mut self.inner.registry.write())
                .map_err(spec_not_durable)?;
            jobs.create(now, spec)?;
            // Drained before the commit: failing a child whose twin went meanwhile may
            // start another, and nothing is sent before it is durable.
            let ops = self
                .inner
                .drain_job_ops(&self.inner.registry.read(), now, &mut jobs);
            self.inner.commit_jobs(&mut jobs)?;
            let record = jobs
                .job(&id)
                .ok_or_else(|| SpecError::UnknownJob(id.clone()))?;
            (record, ops)
        };
        self.inner.publish_jobs();
        self.inner.send_job_ops(ops);
        Ok(record)
    }

    /// Cancels a job; returns its status afterwards. With a store, returns once the
    /// cancellation is durable.
    pub fn cancel_job(&self, id: &JobId, mode: CancelMode) -> Result<JobStatus, SpecError> {
        let now = Instant::now();
        let (status, ops) = {
            let mut jobs = lock(&self.inner.jobs);
            self.inner
                .ready_to_write(&mut jobs, &mut self.inner.registry.write())
                .map_err(spec_not_durable)?;
            let status = jobs.cancel(now, id, mode)?;
            let ops = self
                .inner
                .drain_job_ops(&self.inner.registry.read(), now, &mut jobs);
            self.inner.commit_jobs(&mut jobs)?;
            (status, ops)
        };
        self.inner.publish_jobs();
        self.inner.send_job_ops(ops);
        Ok(status)
    }

    /// A job's record (the preview's JobResponse shape).
    pub fn job(&self, id: &JobId) -> Option<JobRecord> {
        lock(&self.inner.jobs).job(id)
    }

    /// A job's child counts by state.
    pub fn job_statistics(&self, id: &JobId) -> Option<JobStatistics> {
        lock(&self.inner.jobs).statistics(id)
    }

    /// A job's child records.
    pub fn job_children(&self, id: &JobId) -> Vec<JobRecord> {
        lock(&self.inner.jobs).children(id).collect()
    }

    /// Every job record, parents and children.
    pub fn job_records(&self) -> Vec<JobRecord> {
        lock(&self.inner.jobs).records().collect()
    }

    /// Runs a JSON query expression over job history (parents and children): the
    /// preview's job query, e.g. the failed children of a job grouped by failure reason.
    /// Properties are `type: "default"`: `JobId`, `ParentJobId`, `DeviceId`, `Type`,
    /// `Status`, `StartTimeUtc`, `EndTimeUtc`, `FailureReason`, all strings (or missing):
    /// another name is [`QueryError::UnknownProperty`], a number or boolean literal
    /// [`QueryError::LiteralType`] (see [`history_query`](crate::job::history_query)).
    pub fn query_jobs(
        &self,
        text: &str,
        options: &QueryOptions,
    ) -> Result<QueryResult<JobRecord>, QueryError> {
        let expr = crate::query::parse(text)?;
        self.inner.history.query(&self.inner.jobs, &expr, options)
    }

    /// What the hub thread has done so far.
    pub fn stats(&self) -> HubStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HubStats {
            events: get(&c.events),
            registrations: get(&c.registrations),
            rejected: get(&c.rejected),
            notifications: get(&c.notifications),
            property_updates: get(&c.property_updates),
            property_errors: get(&c.property_errors),
            ops_sent: get(&c.ops_sent),
            dropped_events: get(&c.dropped_events),
        }
    }

    /// A snapshot of what the hub holds and how fast devices answer ([`HubMetrics`]):
    /// counters, devices and connected devices, waiting requests, unfinished jobs and
    /// their operations in flight, subscribers and their lag, request latencies. Takes
    /// the registry's read lock and the job engine's lock briefly.
    pub fn metrics(&self) -> HubMetrics {
        let (devices, connected, feed_seq) = {
            let reg = self.inner.registry.read();
            (
                reg.len() as u64,
                reg.connection_bitmap(ConnectionState::Connected).len(),
                reg.last_seq(),
            )
        };
        let (unfinished_jobs, job_operations_in_flight, kept_jobs, dropped_jobs, job_device_states) = {
            let jobs = lock(&self.inner.jobs);
            (
                jobs.unfinished_jobs(),
                jobs.operations_in_flight(),
                jobs.kept_jobs(),
                jobs.dropped_jobs(),
                jobs.device_states(),
            )
        };
        let (subscribers, published) = self.inner.publisher.status();
        HubMetrics {
            counters: self.stats(),
            devices,
            connected,
            waiting_requests: self.inner.waiting.len(),
            unfinished_jobs,
            job_operations_in_flight,
            kept_jobs,
            dropped_jobs,
            job_device_states,
            subscribers,
            feed_seq,
            publish_lag: if subscribers == 0 {
                0
            } else {
                feed_seq.saturating_sub(published)
            },
            request_latency: self.inner.waiting.latency.snapshot(),
            job_operation_latency: self.inner.op_times.jobs.snapshot(),
            sync_latency: self.inner.op_times.sync.snapshot(),
            untimed_operations: self.inner.op_times.untimed.load(Ordering::Relaxed),
            failed_commits: lock(&self.inner.backoff).failures(),
            held_events: self.inner.counters.held_events.load(Ordering::Relaxed),
        }
    }

    /// Stops the hub thread and the transport. Other clones of the hub keep answering
    /// reads but no longer hear from devices. Blocks until the hub thread has finished the
    /// batch of events it is applying (it looks for the stop every 20 ms at least) and the
    /// transport's threads have ended (the UDP driver is woken at once, and looks at least
    /// every 250 ms): typically milliseconds. Dropping the last clone does the same. A hub
    /// behind DTLS sends each session one close_notify as its UDP driver ends (at most
    /// `HubConfig::dtls.max_sessions` datagrams), so devices learn at once.
    ///
    /// With a store ([`HubConfig::store`]), `stop` does not close it: the hub holds it until
    /// its last clone is dropped, and until then opening its directory
    /// again ([`Store::open`](crate::store::Store::open), a restart within the process)
    /// fails with [`StoreError::InUse`](crate::store::StoreError::InUse). Drop every clone
    /// (subscriptions may stay) before opening it again.
    pub fn stop(&self) {
        self.inner.stop();
    }
}

/// The newest sequence number a hub without a store had handed out when it stopped, the
/// highest in this process: the next such hub's numbers start past it even when the clock
/// has not moved on enough ([`Registry::continue_after_clock`]).
static STOPPED_THROUGH: AtomicU64 = AtomicU64::new(0);

impl Inner {
    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.link.stop();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        if self.config.store.is_none() {
            // Not waiting for the lock: the thread dropping the hub may hold it. What was
            // published is then the newest number but for the last few writes.
            let newest = match self.registry.try_read() {
                Some(reg) => reg.last_seq(),
                None => self.publisher.status().1,
            };
            STOPPED_THROUGH.fetch_max(newest, Ordering::AcqRel);
        }
        #[cfg(feature = "lwm2m")]
        if let Some(udp) = lock(&self.udp).take() {
            udp.stop();
        }
        self.waiting.fail_all();
        self.publisher.close();
    }

    /// Observes the synced paths of registrations restored at start (their old
    /// observations' tokens are not kept: the device's notifications on them are
    /// refused, and these replace them).
    #[cfg_attr(not(feature = "lwm2m"), allow(dead_code))]
    fn resume_sync(&self, restored: Vec<(DeviceId, RegistrationInfo)>) {
        let mut ops = Vec::new();
        {
            // The hub's thread already runs: the registry's lock keeps it from applying
            // an event meanwhile, and a device whose Update (or registration) it applied
            // since has its observations already.
            let _applying = self.registry.write();
            for (device, info) in restored {
                if lock(&self.synced).contains_key(&device) {
                    continue;
                }
                self.sync_ops(&device, &info.objects, info.speaks_1_1(), &mut ops);
            }
        }
        self.send_sync_ops(ops);
    }

    /// Publishes the job progress (and any twin change) not yet published.
    fn publish_jobs(&self) {
        let progress = self.job_progress(&mut lock(&self.jobs));
        self.publish(progress);
    }

    /// Publishes the registry's new changes, then `others`. With a store, only the
    /// committed changes go out: a change not yet committed waits for its commit, and one
    /// whose commit failed is replaced by the rebuild, so subscribers never see (nor
    /// replay, with `after`) a change that did not reach the disk.
    fn publish(&self, others: Vec<HubEvent>) {
        self.publisher
            .publish(&self.registry, others, |reg| self.publishable(reg));
    }

    /// The newest change subscribers may see: the store's committed one, or without a
    /// store the registry's newest.
    fn publishable(&self, reg: &Registry) -> u64 {
        match &self.config.store {
            Some(store) => store.lock().committed_seq().min(reg.last_seq()),
            None => reg.last_seq(),
        }
    }

    /// Whether a failed commit whose rebuild failed too left the store poisoned (memory
    /// holds what the store refused).
    fn store_poisoned(&self) -> bool {
        self.config
            .store
            .as_ref()
            .is_some_and(|s| s.lock().is_poisoned())
    }

    /// The engine's progress as events if anyone listens for them (else forgotten).
    fn job_progress(&self, jobs: &mut JobEngine) -> Vec<HubEvent> {
        if self.publisher.has_job_subscribers() {
            jobs.take_progress()
                .into_iter()
                .map(HubEvent::Job)
                .collect()
        } else {
            jobs.clear_progress();
            Vec::new()
        }
    }
}

/// Whether the service adopted a twin: gave it tags, a service property or credentials
/// (see [`provisioning`]).
fn adopted(twin: &crate::registry::TwinRef<'_>) -> bool {
    twin.tags().len() > 0
        || !twin.service_properties().is_empty()
        || !twin.authentication().is_empty()
}

fn spec_not_durable(error: crate::store::StoreError) -> SpecError {
    SpecError::NotDurable {
        error: StoreFailure::new(error),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn drain_ops(jobs: &mut JobEngine) -> Vec<DeviceOp> {
    std::iter::from_fn(|| jobs.poll_op()).collect()
}

/// A device property value as the twin stores it.
fn to_scalar(value: &ResourceValue) -> Option<Scalar> {
    Some(match value {
        ResourceValue::String(s) => Scalar::from(s.as_str()),
        ResourceValue::Integer(i) | ResourceValue::Time(i) => Scalar::from(*i),
        ResourceValue::UnsignedInteger(u) => Scalar::from(*u),
        ResourceValue::Float(f) => Scalar::float(*f)?,
        ResourceValue::Boolean(b) => Scalar::from(*b),
        ResourceValue::ObjectLink(..) | ResourceValue::Opaque(_) => Scalar::from(value.to_string()),
    })
}

/// Sets the address `device`'s twin shows for its registration `registration_id` (`None`:
/// unknown, the registration was displaced); true when it changed. Only the registration
/// the twin holds: one ended (or a twin created again) keeps what it has.
fn set_registration_address(
    reg: &mut Registry,
    device: &DeviceId,
    registration_id: &str,
    address: Option<SocketAddr>,
) -> bool {
    let held = reg
        .get(device.as_str())
        .and_then(|t| t.registration().cloned())
        .filter(|r| r.registration_id == registration_id && r.address != address);
    let Some(mut registration) = held else {
        return false;
    };
    registration.address = address;
    reg.set_registration(device.as_str(), Some(registration))
        .is_ok()
}

/// `event` as a [`DeviceEvent::Registered`] when it is an Update, or a move without one
/// ([`DeviceEvent::AddressChanged`]), under a registration id other than the one the
/// device's twin holds: the device registered again and the hub never applied that
/// registration (see [`backoff::MAX_HELD_EVENTS`]). The device's observations ended with
/// it. A twin that holds no registration (created after its device registered, or
/// re-created) takes the Update as an Update, and the move as a move: nothing says its
/// device registered again.
fn renewed_registration(reg: &Registry, event: &DeviceEvent) -> Option<DeviceEvent> {
    let (DeviceEvent::RegistrationUpdated {
        device,
        registration,
    }
    | DeviceEvent::AddressChanged {
        device,
        registration,
    }) = event
    else {
        return None;
    };
    let twin = reg.get(device.as_str())?;
    let known = twin.registration()?.registration_id.as_str();
    (known != registration.registration_id).then(|| DeviceEvent::Registered {
        device: device.clone(),
        registration: registration.clone(),
    })
}

/// Ends the hub when its thread ends, whatever ended it: [`Hub::stop`], the transport's
/// event channel closing (its thread returned or panicked: nothing will be heard from a
/// device again), or a panic of the hub thread. Requests waiting for an answer fail with
/// [`RequestError::HubStopped`], new ones fail at once, and every subscription is closed
/// (its queued events are still delivered), as after [`Hub::stop`]; reads go on.
struct ThreadEnd<'a>(&'a Inner);

impl Drop for ThreadEnd<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
        self.0.link.stop();
        self.0.waiting.fail_all();
        self.0.publisher.close();
    }
}

impl Inner {
    fn run(self: Arc<Self>, events: Receiver<DeviceEvent>) {
        let _end = ThreadEnd(&self);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Device events kept unapplied while the hub backs off from a failing store, or
        // because their batch's commit failed, with the failed commits of each.
        let mut held = backoff::HeldEvents::default();
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            // Backing off, the jobs wait too: their time-outs are not looked at.
            let wait = if self.backing_off().is_err() {
                TICK
            } else {
                lock(&self.jobs)
                    .poll_timeout()
                    .map_or(TICK, |t| t.saturating_duration_since(now))
                    .min(TICK)
            };
            match events.recv_timeout(wait) {
                Ok(event) => {
                    batch.push(event);
                    batch.extend(events.try_iter().take(MAX_BATCH - 1));
                    self.note_left(&batch);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let arrived = Timestamp::now();
            if self.backing_off().is_err() {
                for event in batch.drain(..) {
                    let mark = backoff::HeldMark { tries: 0, arrived };
                    self.hold(&mut held, event, mark);
                }
            } else {
                // The events held go first, in the order they came.
                let marks = held.take_before(&mut batch, arrived);
                let failed = match self.process(Instant::now(), &batch, &marks) {
                    Outcome::Committed => None,
                    Outcome::Failed => Some(1),
                    Outcome::NotTried => Some(0),
                };
                if let Some(failed) = failed {
                    // Memory went back to what is durable: the events are applied again
                    // at the next try, up to a bound of tries and of events held.
                    for (event, mark) in batch.drain(..).zip(marks) {
                        let mark = backoff::HeldMark {
                            tries: mark.tries + failed,
                            ..mark
                        };
                        self.hold(&mut held, event, mark);
                    }
                }
                batch.clear();
                batch.shrink_to(MAX_BATCH);
            }
            self.counters
                .held_events
                .store(held.len() as u64, Ordering::Relaxed);
        }
        // Stopped while backing off: what was held is never applied.
        for event in held.take_all().into_iter().chain(batch.drain(..)) {
            self.dropped(&event);
        }
        self.counters.held_events.store(0, Ordering::Relaxed);
    }

    /// Keeps a device event for the hub's next try at committing it (after a failed
    /// commit, or once it stops backing off), within the bounds of [`backoff`] (past them
    /// it is [`dropped`](Self::dropped)). An answer to a [`Hub::request`] is handed over
    /// now: it needs no commit. A [`DeviceEvent::Sent`] is held only when the job engine
    /// waits for it, and then outside the bound on events (see
    /// [`backoff::MAX_HELD_EVENTS`]); past [`backoff::MAX_TRIES`] it goes to the engine
    /// for good (no batch applies it again, so an engine rebuilt after a later failed
    /// commit counts it as taken, see `JobEngine::handle_sent_for_good`).
    fn hold(&self, held: &mut backoff::HeldEvents, event: DeviceEvent, mark: backoff::HeldMark) {
        if let DeviceEvent::Sent { op, .. } = &event {
            let mut jobs = lock(&self.jobs);
            if jobs.awaits_sent(*op)
                && let Some(sent) = held.hold_awaited_sent(event, mark)
            {
                // Every event held before it went through as many failed commits and was
                // dropped: it is next in line, and no batch applies it again.
                jobs.handle_sent_for_good(Instant::now(), &sent);
            }
            return;
        }
        match &event {
            DeviceEvent::Response { op, result, .. } => {
                self.op_times.finished(op.0);
                if self.waiting.is_waiting(*op) {
                    let answer = result.clone().map_err(RequestError::Device);
                    self.waiting.complete(*op, answer);
                }
            }
            DeviceEvent::TimedOut { op, .. } => {
                self.op_times.finished(op.0);
                self.waiting
                    .complete(*op, Err(RequestError::TransportTimedOut));
            }
            _ => {}
        }
        if let Some(event) = held.hold(event, mark) {
            self.dropped(&event);
        }
    }

    /// Notes the operations whose [`DeviceEvent::Sent`] is in `batch`, just received
    /// (see `Inner::left`).
    fn note_left(&self, batch: &[DeviceEvent]) {
        if !self.link.reports_sent() {
            return;
        }
        let mut sent = batch.iter().filter_map(|e| match e {
            DeviceEvent::Sent { op, .. } => Some(*op),
            _ => None,
        });
        if let Some(first) = sent.next() {
            let mut left = lock(&self.left);
            left.insert(first);
            left.extend(sent);
        }
    }

    /// Forgets the operations answered (or timed out) in `batch`, now committed or
    /// dropped (see `Inner::left`).
    fn forget_left<'a>(&self, batch: impl IntoIterator<Item = &'a DeviceEvent>) {
        let mut left = lock(&self.left);
        if left.is_empty() {
            return;
        }
        for event in batch {
            if let DeviceEvent::Response { op, .. } | DeviceEvent::TimedOut { op, .. } = event {
                left.remove(op);
            }
        }
    }

    /// Counts a device event dropped unapplied; a sync observation it answered counts as
    /// gone (observed again at the device's next Update).
    fn dropped(&self, event: &DeviceEvent) {
        self.counters.dropped_events.fetch_add(1, Ordering::Relaxed);
        self.forget_left([event]);
        if let DeviceEvent::Response { device, op, .. }
        | DeviceEvent::TimedOut { device, op }
        | DeviceEvent::ObservationEnded { device, op, .. } = event
        {
            self.sync_lost(device, *op);
        }
    }

    /// Applies a service-side write and, with a store, returns only once it is durable.
    /// If the commit fails, the registry (and the jobs) are rebuilt from the store before
    /// the locks are released ([`Inner::commit_locked`]), so no reader sees a write that
    /// is not durable.
    fn write_durably<T>(
        &self,
        write: impl FnOnce(&mut Registry) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let not_durable = |error| RegistryError::NotDurable {
            error: StoreFailure::new(error),
        };
        let out = if self.config.store.is_some() {
            let mut jobs = lock(&self.jobs);
            let mut reg = self.registry.write();
            self.ready_to_write(&mut jobs, &mut reg)
                .map_err(not_durable)?;
            let out = write(&mut reg)?;
            self.commit_locked(&mut jobs, &mut reg)
                .map_err(not_durable)?;
            out
        } else {
            write(&mut self.registry.write())?
        };
        self.publish(Vec::new());
        Ok(out)
    }

    /// Commits the registry's changes and the job engine's journal in one transaction:
    /// the one way the hub writes to its store. The caller holds the jobs lock and the
    /// registry's write lock (the order is jobs, then the registry, then the store,
    /// everywhere), so no other change, and no rebuild, lands between its change and
    /// the commit.
    ///
    /// On failure (of this write, or of an earlier one that left the store poisoned)
    /// memory is rebuilt from the store ([`Inner::recover`]): the caller's change is gone,
    /// as in a crash, and the error says so.
    fn commit_locked(
        &self,
        jobs: &mut JobEngine,
        reg: &mut Registry,
    ) -> Result<(), crate::store::StoreError> {
        let Some(store) = &self.config.store else {
            return Ok(());
        };
        let mut store = store.lock();
        // Only a commit that writes tells that the disk works again.
        let writes = reg.last_seq() != store.committed_seq() || !jobs.journal_is_empty();
        let outcome = store.commit_with_jobs(reg, jobs).map(drop);
        match &outcome {
            Ok(()) if writes => {
                jobs.committed();
                lock(&self.backoff).succeeded();
            }
            Ok(()) => jobs.committed(),
            Err(error) => {
                self.recover(jobs, reg, &mut store);
                // A commit refused only because an earlier failure poisoned the store,
                // whose rebuild now succeeded, says nothing new about the disk.
                let refused_only = matches!(error, crate::store::StoreError::Poisoned);
                if !refused_only || store.is_poisoned() {
                    lock(&self.backoff).failed(Instant::now());
                }
            }
        }
        outcome
    }

    /// Whether a service write may go ahead, checked with the jobs lock and the registry's
    /// write lock held: not while the hub backs off from a failing store, and not on
    /// memory that still holds a refused write. A store left poisoned by a failed commit
    /// whose rebuild failed too is rebuilt first ([`Inner::recover`]), so the write is
    /// checked against what is durable (a retry of a refused removal must find the twin
    /// the disk still has); if the rebuild fails again, the write is refused
    /// ([`StoreError::Poisoned`](crate::store::StoreError::Poisoned)) and counts as a
    /// failure for the backoff.
    fn ready_to_write(
        &self,
        jobs: &mut JobEngine,
        reg: &mut Registry,
    ) -> Result<(), crate::store::StoreError> {
        self.backing_off()?;
        let Some(store) = &self.config.store else {
            return Ok(());
        };
        let mut store = store.lock();
        if !store.is_poisoned() {
            return Ok(());
        }
        self.recover(jobs, reg, &mut store);
        if store.is_poisoned() {
            lock(&self.backoff).failed(Instant::now());
            return Err(crate::store::StoreError::Poisoned);
        }
        Ok(())
    }

    /// A write of the store outside the registry and the jobs (the packages), which
    /// counts for the backoff like a commit: refused while the hub backs off, a failure
    /// is one more in a row, a success ends the count. Nothing in memory depends on it,
    /// so nothing is rebuilt.
    #[cfg(feature = "lwm2m")]
    pub(crate) fn write_store<T>(
        &self,
        write: impl FnOnce(&mut crate::store::Store) -> Result<T, crate::store::StoreError>,
    ) -> Result<T, crate::store::StoreError> {
        self.backing_off()?;
        let Some(store) = &self.config.store else {
            return Err(crate::store::StoreError::Poisoned);
        };
        let out = write(&mut store.lock());
        match &out {
            Ok(_) => lock(&self.backoff).succeeded(),
            Err(crate::store::StoreError::Poisoned) => {}
            Err(_) => lock(&self.backoff).failed(Instant::now()),
        }
        out
    }

    /// [`StoreError::BackingOff`](crate::store::StoreError::BackingOff) while the hub
    /// leaves a failing store alone ([`backoff`]): the caller changes nothing.
    fn backing_off(&self) -> Result<(), crate::store::StoreError> {
        if self.config.store.is_none() {
            return Ok(());
        }
        match lock(&self.backoff).remaining(Instant::now()) {
            Some(retry_in) => Err(crate::store::StoreError::BackingOff { retry_in }),
            None => Ok(()),
        }
    }

    /// Commits what the event batch changed in the twins and the jobs; the caller holds
    /// the jobs lock, taken before the batch touched anything. A failure rebuilds both
    /// from the store, and the hub's loop applies the batch's events again later.
    ///
    /// Returns false when the commit failed: the operations and events the batch queued
    /// belong to a state that is gone, and are not sent (the batch's next try queues
    /// them again).
    ///
    /// A store left poisoned by a failure whose rebuild failed too is rebuilt from here
    /// even with nothing to commit (when the hub is not backing off, see [`backoff`]), so
    /// memory does not keep a write that was refused for longer than the disk refuses.
    fn commit_events(&self, jobs: &mut JobEngine, reg: &mut Registry) -> bool {
        let Some(store) = &self.config.store else {
            return true;
        };
        let (committed, poisoned) = {
            let store = store.lock();
            (store.committed_seq(), store.is_poisoned())
        };
        let idle = jobs.journal_is_empty() && reg.last_seq() == committed;
        if idle && (!poisoned || self.backing_off().is_err()) {
            return true;
        }
        self.commit_locked(jobs, reg).is_ok()
    }

    /// Commits the job engine's changes (with whatever the registry holds uncommitted)
    /// before a job call returns. On failure the jobs and the registry are rebuilt from
    /// the store, so the change is not in memory either.
    fn commit_jobs(&self, jobs: &mut JobEngine) -> Result<(), SpecError> {
        self.commit_locked(jobs, &mut self.registry.write())
            .map_err(spec_not_durable)
    }

    /// Rebuilds the registry and the jobs from the store after a failed commit: both or
    /// neither. An engine that did not come from the store must never commit (the failed
    /// write took its journal's rows: a later commit would write children whose job never
    /// reached the disk, and the store would refuse to open), nor may a registry rebuilt
    /// alone drop twin changes the engine's progress rests on. When either rebuild fails
    /// the store stays poisoned, memory keeps what it had (readers still see the failed
    /// write, whose caller was told), and the next commit tries again.
    ///
    /// The rebuilt engine takes over what only the old one held (see
    /// `JobEngine::restore_after`).
    fn recover(&self, jobs: &mut JobEngine, reg: &mut Registry, store: &mut crate::store::Store) {
        let Ok(durable) = store.reload() else {
            return;
        };
        let now = Instant::now();
        match store.reload_jobs(jobs, now, Timestamp::now()) {
            Ok(mut restored) => {
                // Operations of the old engine still in the outbox are dropped with it;
                // the steps they belong to are sent again by the new one, to the devices
                // the old one knew online. The new engine reports progress to subscribers
                // like the old one did (from here: the children it resumes at once never
                // stopped in their view).
                restored.enable_progress();
                restored.retain_devices(now, |d| durable.contains(d.as_str()));
                *jobs = restored;
                *reg = durable;
            }
            Err(_) => store.poison(),
        }
    }

    /// After a service write to a twin: an auto-provisioned twin it adopted (or removed)
    /// no longer counts against the limit, nor expires (see [`provisioning`]).
    fn note_adoption(&self, id: &str) {
        let Ok(device) = DeviceId::new(id) else {
            return;
        };
        let keep = self.registry.read().get(id).is_some_and(|t| !adopted(&t));
        if !keep {
            self.provisioned.forget(&device);
        }
    }

    /// [`Inner::forget_removed`] from outside the hub's loop (no lock held by the caller);
    /// sends the registrations to end at once (the removal is durable). The children it
    /// fails (`deviceRemoved`) are committed, with a store, and published before it
    /// returns, as a service write's changes are; should that commit fail, memory is
    /// rebuilt from the store (whose engine forgets the removed devices again) and the
    /// hub's next pass commits and publishes them.
    fn forget_removed_now(&self) {
        let mut ends = Vec::new();
        let committed = {
            let mut jobs = lock(&self.jobs);
            self.forget_removed(&self.registry.read(), Instant::now(), &mut jobs, &mut ends);
            self.commit_jobs(&mut jobs).is_ok()
        };
        if committed {
            self.publish_jobs();
        }
        self.send_ends(ends);
    }

    /// Sends [`DeviceRequest::EndRegistration`]s, noting them (see [`SentEnds`]).
    fn send_ends(&self, ends: Vec<DeviceOp>) {
        if ends.is_empty() {
            return;
        }
        {
            let mut sent = lock(&self.ends_sent);
            for op in &ends {
                sent.note(op);
            }
        }
        self.send(ends);
    }

    /// Whether `op` is an [`DeviceRequest::EndRegistration`] the hub sent (now answered).
    /// Kept after the answer: a batch whose commit failed is applied again.
    fn end_answered(&self, op: OpId) -> bool {
        lock(&self.ends_sent).is_end(op)
    }

    /// What an Update, a move or a notification (`event`) says about ending its registration,
    /// applied to `reg` as it is when the event's turn comes: `true` when it comes under
    /// a registration the hub is ending (or ended), not to be applied. One of a
    /// registration whose twin is gone, and that no end names yet, adds an end to
    /// `ends`: its removal's end was lost (more removals than the registry's removal log
    /// holds between two of the hub's looks, a replaced registry), and the device would
    /// otherwise stay registered to a twin that does not exist until its lifetime ran
    /// out, its Updates and notifications answered and its data dropped. A device that
    /// only notifies (or Sends, which arrives as a notification) is ended like one that
    /// updates. One end per event at most, and none while the end sent is remembered
    /// (see [`SentEnds`]); it goes once the batch is durable, like the removals' ends. A
    /// Register makes its registration current again.
    fn stale_update(&self, reg: &Registry, event: &DeviceEvent, ends: &mut Vec<DeviceOp>) -> bool {
        let (device, id) = match event {
            DeviceEvent::RegistrationUpdated {
                device,
                registration,
            } => (device, &registration.registration_id),
            DeviceEvent::Notification {
                device,
                registration_id,
                ..
            } => (device, registration_id),
            DeviceEvent::AddressChanged {
                device,
                registration,
            } => (device, &registration.registration_id),
            DeviceEvent::Registered {
                device,
                registration,
            } => {
                lock(&self.ends_sent).registered(device, &registration.registration_id);
                return false;
            }
            _ => return false,
        };
        if lock(&self.ends_sent).ending(device, id) {
            return true;
        }
        let named = |op: &DeviceOp| {
            &op.device == device
                && matches!(&op.request, DeviceRequest::EndRegistration { registration_id }
                    if registration_id == id)
        };
        if !reg.contains(device.as_str()) && !ends.iter().any(named) {
            ends.push(DeviceOp {
                id: self.next_op_id(),
                device: device.clone(),
                request: DeviceRequest::EndRegistration {
                    registration_id: id.clone(),
                },
            });
        }
        false
    }

    /// Tells the job engine of the twins removed since it last heard: it forgets their
    /// registration state and fails their unfinished children (`deviceRemoved`). The
    /// removals are read from the registry's removal log, so a removal through
    /// [`Hub::registry`] or the auto-provisioning sweep counts like
    /// [`Hub::remove_device`]; when the log no longer holds every removal since (more than
    /// 4,096 of them), the registry was replaced, and at the first call (after a restart),
    /// every device the engine knows is checked against the registry instead. Called with
    /// the jobs lock held (the order is jobs, then registry), after the engine took its
    /// events, so a registration it took just before a removal is forgotten too.
    ///
    /// Adds to `ends` an [`DeviceRequest::EndRegistration`] for every removed twin that was
    /// connected, for the caller to send once the removal is durable: a removed device's
    /// Updates were answered 2.04 until its registration expired, and a twin created again
    /// under its id inherited it. (Registrations of removals the log no longer holds are
    /// ended at the device's next Update or notification instead: see [`Inner::stale_update`].)
    fn forget_removed(
        &self,
        reg: &Registry,
        now: Instant,
        jobs: &mut JobEngine,
        ends: &mut Vec<DeviceOp>,
    ) {
        let mut heard = lock(&self.engine_heard);
        let mark = reg.removals.mark();
        if *heard == Some(mark) {
            return;
        }
        let gone: Option<Vec<DeviceId>> = heard.and_then(|h| {
            let removals = reg.removals.since(h)?;
            let sent = lock(&self.ends_sent);
            // The ends Updates and notifications of this batch asked for (`stale_update`);
            // the removals' own are one per registration already.
            let asked = ends.len();
            let mut gone = Vec::new();
            for removal in removals {
                // One end per registration: an Update of the same batch may have asked
                // for it already, or an earlier batch sent it.
                if let Some(registration_id) = &removal.registration_id
                    && !sent.ending(&removal.id, registration_id)
                    && !ends[..asked].iter().any(|op| {
                        op.device == removal.id
                            && matches!(&op.request, DeviceRequest::EndRegistration { registration_id: r }
                                if r == registration_id)
                    })
                {
                    ends.push(DeviceOp {
                        id: self.next_op_id(),
                        device: removal.id.clone(),
                        request: DeviceRequest::EndRegistration {
                            registration_id: registration_id.clone(),
                        },
                    });
                }
                if !reg.contains(removal.id.as_str()) {
                    gone.push(removal.id.clone());
                }
            }
            Some(gone)
        });
        match gone {
            Some(gone) => {
                for device in &gone {
                    jobs.forget_device(now, device);
                }
            }
            None => {
                jobs.retain_devices(now, |d| reg.contains(d.as_str()));
            }
        }
        *heard = Some(mark);
    }

    /// The engine's operations to send, once each device is checked against the registry
    /// (with the jobs lock held): a child whose device's twin is gone fails as
    /// `deviceRemoved` as it starts (the removal may not have reached the engine yet, or
    /// the child had not reached its turn when it did), and its operation is not sent.
    fn drain_job_ops(&self, reg: &Registry, now: Instant, jobs: &mut JobEngine) -> Vec<DeviceOp> {
        let mut out: Vec<DeviceOp> = Vec::new();
        loop {
            let ops = drain_ops(jobs);
            if ops.is_empty() {
                return out;
            }
            let gone: Vec<DeviceId> = {
                let (known, unknown): (Vec<_>, Vec<_>) = ops
                    .into_iter()
                    .partition(|op| reg.contains(op.device.as_str()));
                out.extend(known);
                unknown.into_iter().map(|op| op.device).collect()
            };
            if gone.is_empty() {
                continue;
            }
            // Failing those children may start others and queue their operations: the
            // loop ends as every child fails at most once and starts at most once a turn.
            // It may also trip an abort rule that ends siblings whose operations are
            // already in `out`: the engine no longer waits for those, so they are not sent
            // (cancelled observations are fire-and-forget and go). Only those: an
            // operation the engine had stopped waiting for before (a reboot's Execute
            // whose child a second registration in the same batch completed) goes, as
            // it always did.
            let waited: FxHashSet<OpId> = out
                .iter()
                .map(|op| op.id)
                .filter(|&id| jobs.is_outstanding(id))
                .collect();
            for device in &gone {
                jobs.forget_device(now, device);
            }
            out.retain(|op| {
                !waited.contains(&op.id)
                    || jobs.is_outstanding(op.id)
                    || matches!(op.request, DeviceRequest::CancelObserve { .. })
            });
        }
    }

    fn next_op_id(&self) -> OpId {
        OpId(self.next_op.fetch_add(1, Ordering::Relaxed))
    }

    fn send(&self, ops: Vec<DeviceOp>) {
        self.counters
            .ops_sent
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        for op in ops {
            self.link.submit(op);
        }
    }

    /// [`send`](Self::send)s the hub's own operations, timing all but requests (which
    /// their waiting entries time).
    fn send_sync_ops(&self, ops: Vec<DeviceOp>) {
        let timed = ops
            .iter()
            .filter(|o| !self.waiting.is_waiting(o.id))
            .map(|o| o.id.0);
        self.op_times.sent(timed, OpClass::Sync);
        self.send(ops);
    }

    /// [`send`](Self::send)s the job engine's operations, timed.
    fn send_job_ops(&self, ops: Vec<DeviceOp>) {
        self.op_times.sent(ops.iter().map(|o| o.id.0), OpClass::Job);
        self.send(ops);
    }

    /// Routes one batch of events into twins, then into the job engine, and commits.
    /// `marks` say when each event arrived (its changes are stamped with that time, also
    /// when it was held for a while).
    fn process(&self, now: Instant, batch: &[DeviceEvent], marks: &[backoff::HeldMark]) -> Outcome {
        debug_assert_eq!(batch.len(), marks.len());
        let mut ops = Vec::new();
        let mut published = Vec::new();
        // Registrations to end once the batch is durable.
        let mut ends = Vec::new();
        // Both held through the commit (jobs before the registry, as everywhere): no
        // service write commits, or rebuilds memory from the store, between the batch's
        // changes and their commit, and no reader sees a change before it is durable.
        let mut jobs = lock(&self.jobs);
        let mut reg = self.registry.write();
        // Memory holding a write the store refused is rebuilt first, so the batch is
        // applied once, to what is durable.
        match self.ready_to_write(&mut jobs, &mut reg) {
            Ok(()) => {}
            Err(crate::store::StoreError::BackingOff { .. }) => return Outcome::NotTried,
            Err(_) => return Outcome::Failed,
        }
        // The sync table is no part of the store: what the batch changes in it is put
        // back by hand if the commit fails.
        let sync_before = self
            .config
            .store
            .is_some()
            .then(|| self.sync_snapshot(batch));
        if !batch.is_empty() {
            self.counters
                .events
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for event in batch.iter() {
                if let DeviceEvent::Response { op, .. } | DeviceEvent::TimedOut { op, .. } = event {
                    self.op_times.finished(op.0);
                }
            }
            // An Update under a registration the twin does not hold is a registration
            // the hub never applied (dropped at the held-events bound): it is applied as
            // one, by the registry and the jobs alike.
            let mut renewed: Vec<Option<DeviceEvent>> = Vec::new();
            // Updates and notifications under a registration being ended: applied neither
            // to the registry nor to the jobs (see `stale_update`).
            let mut stale: Vec<bool> = Vec::new();
            for (i, (event, mark)) in batch.iter().zip(marks).enumerate() {
                if self.stale_update(&reg, event, &mut ends) {
                    stale.resize(i + 1, false);
                    stale[i] = true;
                    continue;
                }
                if let Some(registered) = renewed_registration(&reg, event) {
                    renewed.resize(i + 1, None);
                    renewed[i] = Some(registered);
                }
                let event = renewed.get(i).and_then(Option::as_ref).unwrap_or(event);
                self.apply(&mut reg, event, mark.arrived, &mut ops, &mut published);
            }
            // The engine keeps the registration state of the devices the registry holds
            // only: a name without a twin (the in-memory fleet registers any; a twin
            // removed while its device was registered) would stay in it for good.
            for (i, event) in batch.iter().enumerate() {
                if stale.get(i).copied().unwrap_or(false) {
                    continue;
                }
                let event = renewed.get(i).and_then(Option::as_ref).unwrap_or(event);
                let twin_less = match event {
                    DeviceEvent::Registered { device, .. }
                    | DeviceEvent::RegistrationUpdated { device, .. }
                    | DeviceEvent::Deregistered { device }
                    | DeviceEvent::Expired { device } => !reg.contains(device.as_str()),
                    _ => false,
                };
                if !twin_less {
                    jobs.handle_event(now, event);
                }
            }
        }
        // Every event held through a failed commit went first in this batch: the steps
        // a rebuilt engine kept back (reboots and the like) go out now.
        jobs.resume_deferred(now);
        jobs.handle_timeout(now);
        // Registrations of twins removed through `Hub::registry`, ended once the batch
        // is durable.
        self.forget_removed(&reg, now, &mut jobs, &mut ends);
        let mut job_ops = self.drain_job_ops(&reg, now, &mut jobs);
        while let Some(u) = jobs.poll_twin_update() {
            self.apply_content(&mut reg, &u.device, &u.content, u.at);
        }
        let swept = self.sweep_auto_provisioned(now, &mut jobs, &mut reg, &mut ends);
        let committed = self.commit_events(&mut jobs, &mut reg);
        if committed {
            // Applied for good: a failed commit would have them applied again, and a
            // `BadPayload` among them would still have to find its `Sent`.
            self.forget_left(batch);
            // Before readers see the removals: a twin gone no longer counts.
            for device in &swept {
                self.provisioned.forget(device);
            }
        }
        drop(reg);
        if !committed {
            // The batch is applied again: what it did is not reported, nor sent, now,
            // and the swept names are swept again at the next sweep.
            job_ops.clear();
            published.clear();
            ops.clear();
            ends.clear();
            if let Some(before) = sync_before {
                self.restore_sync(before);
            }
            if self.store_poisoned() {
                // Not rebuilt either: the engine's progress is the failed batch's.
                jobs.clear_progress();
            }
        }
        // After the commit: progress that a failed commit rebuilt away is not reported.
        published.extend(self.job_progress(&mut jobs));
        drop(jobs);
        self.publish(published);
        self.send_sync_ops(ops);
        self.send_job_ops(job_ops);
        self.send_ends(ends);
        if committed {
            Outcome::Committed
        } else {
            Outcome::Failed
        }
    }

    /// The sync table entries of the devices whose events in `batch` may change them.
    fn sync_snapshot(&self, batch: &[DeviceEvent]) -> SyncSnapshot {
        let synced = lock(&self.synced);
        let mut out: SyncSnapshot = Vec::new();
        for event in batch {
            let device = match event {
                // (`AddressChanged` observes again what its device's observations lost.)
                DeviceEvent::Registered { device, .. }
                | DeviceEvent::RegistrationUpdated { device, .. }
                | DeviceEvent::AddressChanged { device, .. }
                | DeviceEvent::Deregistered { device }
                | DeviceEvent::Expired { device }
                | DeviceEvent::TimedOut { device, .. }
                | DeviceEvent::ObservationEnded { device, .. } => device,
                DeviceEvent::Response {
                    device,
                    op,
                    result: Err(_),
                } if op.0 < self.config.jobs.op_id_base => device,
                _ => continue,
            };
            if !out.iter().any(|(d, _)| d == device) {
                out.push((device.clone(), synced.get(device).cloned()));
            }
        }
        out
    }

    /// Puts back the sync table entries of a [`Inner::sync_snapshot`].
    fn restore_sync(&self, before: SyncSnapshot) {
        let mut synced = lock(&self.synced);
        for (device, entries) in before {
            match entries {
                Some(entries) => synced.insert(device, entries),
                None => synced.remove(&device),
            };
        }
    }

    /// Removes the auto-provisioned twins whose time is up (see [`provisioning`]); at most
    /// once a second. Returns the names to forget once the removals are durable (when
    /// the commit fails, the rebuild brings the twins back, and the next sweep removes
    /// them again).
    fn sweep_auto_provisioned(
        &self,
        now: Instant,
        jobs: &mut JobEngine,
        reg: &mut Registry,
        ends: &mut Vec<DeviceOp>,
    ) -> Vec<DeviceId> {
        {
            let mut last = lock(&self.last_sweep);
            if now.saturating_duration_since(*last) < Duration::from_secs(1) {
                return Vec::new();
            }
            *last = now;
        }
        // Adopted or removed through `Hub::registry`: the name no longer counts.
        self.provisioned
            .retain(|d| reg.get(d.as_str()).is_some_and(|t| !adopted(&t)));
        let due = self.provisioned.due(now);
        if due.is_empty() {
            return Vec::new();
        }
        // The job engine hears of these removals from the registry's removal log.
        let mut swept = Vec::with_capacity(due.len());
        for (device, verdict) in due {
            if verdict == Verdict::Expired {
                let unadopted = reg.get(device.as_str()).is_some_and(|t| {
                    !adopted(&t) && t.connection_state() == ConnectionState::Disconnected
                });
                if unadopted {
                    let _ = reg.remove(device.as_str());
                }
            }
            swept.push(device);
        }
        // Before the next batch: a registration in it would create the twin again.
        self.forget_removed(reg, now, jobs, ends);
        swept
    }

    fn apply(
        &self,
        reg: &mut Registry,
        event: &DeviceEvent,
        at: Timestamp,
        ops: &mut Vec<DeviceOp>,
        published: &mut Vec<HubEvent>,
    ) {
        let lifecycle =
            |device: &DeviceId, kind| HubEvent::Lifecycle(LifecycleEvent::new(device, kind, at));
        match event {
            DeviceEvent::Registered {
                device,
                registration,
            } => {
                self.counters.registrations.fetch_add(1, Ordering::Relaxed);
                if !reg.contains(device.as_str()) && self.config.auto_provision {
                    // A transport without the registration gate (the in-memory fleet)
                    // cannot refuse the device; past the limit it just gets no twin.
                    if self.provisioned.admit(device, Instant::now())
                        && reg.create(Twin::new(device.clone())).is_err()
                    {
                        self.provisioned.forget(device);
                    }
                }
                self.provisioned.connected(device);
                let _ = reg.set_registration(device.as_str(), Some(registration.clone()));
                let _ = reg.set_connection_state(device.as_str(), ConnectionState::Connected, at);
                let _ = reg.set_managed(device.as_str(), true);
                let _ = reg.set_last_activity(device.as_str(), at);
                self.sync_ops(
                    device,
                    &registration.objects,
                    registration.speaks_1_1(),
                    ops,
                );
                crate::trace_event!(
                    debug,
                    device = device.as_str(),
                    address = ?registration.address,
                    lwm2m = %registration.lwm2m_version,
                    "registered"
                );
                let mut e = LifecycleEvent::new(device, LifecycleKind::Registered, at);
                e.address = registration.address;
                published.push(HubEvent::Lifecycle(e));
            }
            DeviceEvent::ObservationEnded {
                device, op, cause, ..
            } => {
                // The device's own end (its error notification, its Reset) is the device
                // heard from; the transport's (a cancel, a time-out) is not.
                if cause.by_device() {
                    let _ = reg.set_last_activity(device.as_str(), at);
                }
                self.sync_lost(device, *op)
            }
            DeviceEvent::Displaced {
                device,
                registration_id,
            } => {
                // Another device holds the address now: the twin's registration no
                // longer says where its device is (its next Update or notification from
                // where it is now brings the address). Connection state and
                // `lastActivityTime` stay: the registration lives, and the device itself
                // said nothing.
                if set_registration_address(reg, device, registration_id, None) {
                    crate::trace_event!(
                        info,
                        device = device.as_str(),
                        "registration displaced from its address"
                    );
                }
            }
            DeviceEvent::AddressChanged {
                device,
                registration,
            } => {
                // No Update (no lifecycle event): the twin's registration shows where its
                // device is now, a twin change. The device was heard from (a fresh
                // notification of one of its observations came from there): that is
                // activity, also when the notification cannot be decoded and none
                // follows. The device is reachable there: the sync observations a move
                // failed (an Observe in flight to the address left, or to the one it was
                // displaced from, fails with `RegistrationEnded`) are observed again
                // now, as after an Update, not at its next Update (up to its lifetime
                // later). (A move under a registration id other than the twin's came
                // here as the registration the hub missed: `renewed_registration`.)
                let held = reg
                    .get(device.as_str())
                    .map(|t| (t.registration().is_some(), t.connection_state()));
                let moved = match held {
                    None => false,
                    Some((true, _)) => set_registration_address(
                        reg,
                        device,
                        &registration.registration_id,
                        registration.address,
                    ),
                    Some((false, state)) => {
                        // A twin that holds no registration (created after its device
                        // registered) takes this one, as it takes an Update's.
                        if state != ConnectionState::Connected {
                            let _ = reg.set_connection_state(
                                device.as_str(),
                                ConnectionState::Connected,
                                at,
                            );
                        }
                        reg.set_registration(device.as_str(), Some(registration.clone()))
                            .is_ok()
                    }
                };
                if moved {
                    let _ = reg.set_last_activity(device.as_str(), at);
                    crate::trace_event!(
                        info,
                        device = device.as_str(),
                        address = ?registration.address,
                        "registration moved without an Update"
                    );
                    self.resync_or_observe(device, registration, ops);
                }
            }
            DeviceEvent::TimedOut { device, op } => {
                crate::trace_event!(info, device = device.as_str(), op = op.0, "no answer");
                self.waiting
                    .complete(*op, Err(RequestError::TransportTimedOut));
                self.sync_lost(device, *op);
            }
            DeviceEvent::RegistrationUpdated {
                device,
                registration,
            } => {
                let _ = reg.set_registration(device.as_str(), Some(registration.clone()));
                let connected = reg
                    .get(device.as_str())
                    .is_some_and(|t| t.connection_state() == ConnectionState::Connected);
                if !connected {
                    let _ =
                        reg.set_connection_state(device.as_str(), ConnectionState::Connected, at);
                }
                let _ = reg.set_last_activity(device.as_str(), at);
                if self.resync_or_observe(device, registration, ops) {
                    self.sync_objects_changed(device, &registration.objects, ops);
                }
                crate::trace_event!(debug, device = device.as_str(), "registration updated");
                let mut e = LifecycleEvent::new(device, LifecycleKind::Updated, at);
                e.address = registration.address;
                published.push(HubEvent::Lifecycle(e));
            }
            DeviceEvent::Deregistered { device } | DeviceEvent::Expired { device } => {
                let _ =
                    reg.set_connection_state(device.as_str(), ConnectionState::Disconnected, at);
                self.provisioned.disconnected(device, Instant::now());
                lock(&self.synced).remove(device);
                let kind = match event {
                    DeviceEvent::Expired { .. } => LifecycleKind::Expired,
                    _ => LifecycleKind::Deregistered,
                };
                crate::trace_event!(info, device = device.as_str(), event = ?kind, "offline");
                published.push(lifecycle(device, kind));
            }
            DeviceEvent::Rejected {
                endpoint,
                reason,
                address,
            } => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                crate::trace_event!(
                    warn,
                    endpoint = endpoint.as_str(),
                    %reason,
                    address = ?address,
                    "registration refused"
                );
                published.push(HubEvent::Lifecycle(LifecycleEvent::rejected(
                    endpoint, reason, *address, at,
                )));
            }
            DeviceEvent::Notification {
                device, content, ..
            } => {
                self.counters.notifications.fetch_add(1, Ordering::Relaxed);
                self.apply_content(reg, device, content, at);
                let _ = reg.set_last_activity(device.as_str(), at);
            }
            DeviceEvent::Bootstrap {
                endpoint,
                address,
                outcome,
            } => {
                crate::trace_event!(
                    info,
                    endpoint = endpoint.as_str(),
                    outcome = ?outcome,
                    "bootstrap ended"
                );
                // A bootstrap the device saw through (it acknowledged Bootstrap-Finish) is
                // the device heard from, under its endpoint name. Not a refused one (like
                // a refused registration, the server did not take the endpoint for anyone)
                // nor a failed one (a step may have failed for want of any answer).
                if matches!(outcome, crate::transport::BootstrapOutcome::Finished)
                    && reg.contains(endpoint)
                {
                    let _ = reg.set_last_activity(endpoint, at);
                }
                published.push(HubEvent::Lifecycle(LifecycleEvent::bootstrap(
                    endpoint, outcome, *address, at,
                )));
            }
            // For the job engine only (when a queued request left): no change of the
            // twin, nothing published to change feeds or subscriptions, and no sign of
            // life from the device (nothing was heard from it).
            DeviceEvent::Sent { .. } => {}
            DeviceEvent::Response { op, device, result } => {
                // The transport's answer to ending a removed twin's registration: nothing
                // of the device's (a twin created again under the id was not heard from).
                if self.end_answered(*op) {
                    return;
                }
                #[cfg(feature = "tracing")]
                if let Err(DeviceError::BadPayload(why)) = result {
                    crate::trace_event!(
                        warn,
                        device = device.as_str(),
                        op = op.0,
                        error = why.as_str(),
                        "bad payload (an undecodable answer, or content refused before sending)"
                    );
                }
                if self.waiting.is_waiting(*op) {
                    let answer = result.clone().map_err(RequestError::Device);
                    self.waiting.complete(*op, answer);
                }
                // The hub's own operations (ids below the job engine's range) are the
                // sync observations and reads: their values go into the twin. The job
                // engine hands its reads over as TwinUpdates instead.
                if op.0 < self.config.jobs.op_id_base {
                    match result {
                        Ok(DeviceReply::Content(content)) => {
                            self.apply_content(reg, device, content, at)
                        }
                        Ok(_) => {}
                        Err(e) => self.sync_failed(device, *op, e, ops),
                    }
                }
                // A failure the transport made up (not registered, queue full, the
                // registration ended) is not the device being heard from; nor is a
                // payload refused before the request left (the transport could not
                // encode or send it): with a transport that reports `Sent`, one after it
                // is the device's answer; with one that does not, the hub cannot tell,
                // and counts only what is surely the device's.
                let heard = match result {
                    Err(
                        DeviceError::NotRegistered
                        | DeviceError::QueueFull
                        | DeviceError::RegistrationEnded,
                    ) => false,
                    Err(DeviceError::BadPayload(_)) => lock(&self.left).contains(op),
                    _ => true,
                };
                if heard {
                    let _ = reg.set_last_activity(device.as_str(), at);
                }
            }
        }
    }

    fn apply_content(
        &self,
        reg: &mut Registry,
        device: &DeviceId,
        content: &Content,
        at: Timestamp,
    ) {
        let Some(slot) = reg.slot_of(device.as_str()) else {
            return;
        };
        let mut name = String::new();
        for (path, value) in &content.values {
            use std::fmt::Write;
            name.clear();
            let _ = write!(name, "{path}");
            let ok = to_scalar(value).is_some_and(|v| reg.report_at(slot, &name, v, at).is_ok());
            let counter = if ok {
                &self.counters.property_updates
            } else {
                crate::trace_event!(
                    debug,
                    device = device.as_str(),
                    property = name.as_str(),
                    "value refused by the twin"
                );
                &self.counters.property_errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A sync observation `op` (if it is one) was answered with an error. A refused
    /// Observe-Composite (the device does not take it, or its answer could not be read)
    /// is replaced at once by one Observe per path; anything else is marked gone and
    /// observed again at the device's next Update.
    fn sync_failed(
        &self,
        device: &DeviceId,
        op: OpId,
        error: &DeviceError,
        ops: &mut Vec<DeviceOp>,
    ) {
        let refused = matches!(
            error,
            DeviceError::BadRequest
                | DeviceError::NotFound
                | DeviceError::MethodNotAllowed
                | DeviceError::NotAcceptable
                | DeviceError::UnsupportedContentFormat
                | DeviceError::BadPayload(_)
                | DeviceError::Reset
                | DeviceError::Code(4, _)
        );
        let mut synced = lock(&self.synced);
        let Some(entries) = synced.get_mut(device) else {
            return;
        };
        let Some(at) = entries.iter().position(|e| e.op == op) else {
            return;
        };
        match &entries[at].paths {
            SyncPaths::Composite(paths) if refused => {
                let paths = paths.clone();
                entries.remove(at);
                for path in paths {
                    let e = SyncObservation {
                        paths: SyncPaths::One(path),
                        op: self.next_op_id(),
                        lost: false,
                    };
                    ops.push(DeviceOp {
                        id: e.op,
                        device: device.clone(),
                        request: e.request(),
                    });
                    entries.push(e);
                }
            }
            _ => entries[at].lost = true,
        }
    }

    /// Marks the sync observation `op` established (if it is one) as gone.
    fn sync_lost(&self, device: &DeviceId, op: OpId) {
        if let Some(entries) = lock(&self.synced).get_mut(device)
            && let Some(e) = entries.iter_mut().find(|e| e.op == op)
        {
            e.lost = true;
        }
    }

    /// After an Update or a move of `device`'s `registration`: its lost sync observations
    /// are observed again ([`Inner::resync`]; true), or, with no sync table entry, it is
    /// observed afresh (false): the registration that makes one never reached this hub
    /// (dropped at the held-events bound, or made before a hub over a transport of its
    /// own started), so no observation of the hub's lives on the device.
    fn resync_or_observe(
        &self,
        device: &DeviceId,
        registration: &RegistrationInfo,
        ops: &mut Vec<DeviceOp>,
    ) -> bool {
        if lock(&self.synced).contains_key(device) {
            self.resync(device, ops);
            true
        } else {
            self.sync_ops(
                device,
                &registration.objects,
                registration.speaks_1_1(),
                ops,
            );
            false
        }
    }

    /// Observes again every sync path of `device` whose observation is gone.
    fn resync(&self, device: &DeviceId, ops: &mut Vec<DeviceOp>) {
        let mut synced = lock(&self.synced);
        let Some(entries) = synced.get_mut(device) else {
            return;
        };
        for e in entries.iter_mut().filter(|e| e.lost) {
            e.op = self.next_op_id();
            e.lost = false;
            ops.push(DeviceOp {
                id: e.op,
                device: device.clone(),
                request: e.request(),
            });
        }
    }

    /// The Write-Attributes that goes before a sync observation of `path`, when the sync
    /// settings name attributes.
    fn write_sync_attributes(
        &self,
        sync: &PropertySync,
        device: &DeviceId,
        path: &Lwm2mPath,
        ops: &mut Vec<DeviceOp>,
    ) {
        if sync.attributes != NotificationAttributes::default() {
            ops.push(DeviceOp {
                id: self.next_op_id(),
                device: device.clone(),
                request: DeviceRequest::WriteAttributes {
                    path: *path,
                    attributes: sync.attributes,
                },
            });
        }
    }

    /// After an Update: observes the synced paths the device announces now and no
    /// observation covers (an object it added since it registered: a firmware object after
    /// an install, say), path by path; forgets the observations of paths it no longer
    /// announces (the device ended them with the instances).
    fn sync_objects_changed(
        &self,
        device: &DeviceId,
        objects: &[Lwm2mPath],
        ops: &mut Vec<DeviceOp>,
    ) {
        let Some(sync) = &self.config.sync else {
            return;
        };
        let mut synced = lock(&self.synced);
        let Some(entries) = synced.get_mut(device) else {
            return;
        };
        let announced = |p: &Lwm2mPath| objects.iter().any(|o| o.contains(p));
        entries.retain(|e| e.paths().iter().any(announced));
        for path in sync.paths.iter().filter(|p| announced(p)) {
            if entries.iter().any(|e| e.paths().contains(path)) {
                continue;
            }
            self.write_sync_attributes(sync, device, path, ops);
            let entry = SyncObservation {
                paths: SyncPaths::One(*path),
                op: self.next_op_id(),
                lost: false,
            };
            ops.push(DeviceOp {
                id: entry.op,
                device: device.clone(),
                request: entry.request(),
            });
            entries.push(entry);
        }
    }

    /// Write-Attributes and Observe for the synced instances the device announced: one
    /// Observe-Composite of them all when `composite` (an LWM2M 1.1 device, and the
    /// config allows it), else one Observe per path.
    fn sync_ops(
        &self,
        device: &DeviceId,
        objects: &[Lwm2mPath],
        composite: bool,
        ops: &mut Vec<DeviceOp>,
    ) {
        let Some(sync) = &self.config.sync else {
            return;
        };
        let composite = composite && sync.composite;
        let mut entries = Vec::with_capacity(sync.paths.len());
        let mut together = Vec::new();
        for path in &sync.paths {
            if !objects.iter().any(|o| o.contains(path)) {
                continue;
            }
            self.write_sync_attributes(sync, device, path, ops);
            if composite {
                together.push(*path);
            } else {
                entries.push(SyncObservation {
                    paths: SyncPaths::One(*path),
                    op: self.next_op_id(),
                    lost: false,
                });
            }
        }
        if !together.is_empty() {
            entries.push(SyncObservation {
                paths: SyncPaths::Composite(together),
                op: self.next_op_id(),
                lost: false,
            });
        }
        ops.extend(entries.iter().map(|e| DeviceOp {
            id: e.op,
            device: device.clone(),
            request: e.request(),
        }));
        lock(&self.synced).insert(device.clone(), entries);
    }
}
