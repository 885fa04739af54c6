//! # twinhub
//!
//! Embeddable IoT device management for Rust services: device twins, indexed device
//! queries, device jobs, and a CoAP/LWM2M transport with a device-side client library.
//!
#![cfg_attr(feature = "memory-fleet", doc = "```")]
#![cfg_attr(not(feature = "memory-fleet"), doc = "```ignore")]
//! use std::time::{Duration, Instant};
//! use twinhub::hub::{Hub, HubConfig};
//! use twinhub::job::{JobId, JobSpec, JobType};
//! use twinhub::query::{QueryExpression, QueryProperty};
//! use twinhub::registry::Registry;
//! use twinhub::transport::memory::{DeviceSpec, MemoryConfig, MemoryTransport};
//! use twinhub::twin::Twin;
//! use twinhub::DeviceId;
//!
//! // Twins for two devices, and a transport. Here a simulated fleet; in production
//! // `Hub::bind_udp("0.0.0.0:5683", ..)` runs the bundled LWM2M server instead.
//! let mut registry = Registry::new();
//! let mut fleet = MemoryTransport::new(MemoryConfig::default());
//! for (id, version) in [("pump-1", "1.0"), ("pump-2", "1.1")] {
//!     let id = DeviceId::new(id)?;
//!     registry.create(Twin::new(id.clone()).with_tag("pumps"))?;
//!     fleet.add_device(Instant::now(), DeviceSpec::new(id).firmware_version(version))?;
//! }
//! let hub = Hub::with_transport(fleet, registry, HubConfig::default());
//!
//! // The devices register; property sync fills their twins.
//! let on_1_0 = QueryExpression::new().filter(QueryProperty::device("FirmwareVersion").eq("1.0"));
//! while hub.resolve_targets(&on_1_0)?.is_empty() {
//!     std::thread::sleep(Duration::from_millis(5));
//! }
//! // A job over the devices a query selects (the target set is frozen now).
//! let job = JobId::new("reboot-old")?;
//! let targets = hub.resolve_targets(&on_1_0)?;
//! assert_eq!(targets, [DeviceId::new("pump-1")?]);
//! hub.create_job(JobSpec::new(job.clone(), JobType::Reboot { wait_for_registration: false }, targets))?;
//! while !hub.job(&job).unwrap().status.is_terminal() {
//!     std::thread::sleep(Duration::from_millis(5));
//! }
//! assert_eq!(hub.job(&job).unwrap().status_message, "1 device rebooted, all succeeded");
//! hub.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crate is layered from the bottom up; every layer below the hub is a sans-IO state
//! machine (inputs are `handle_*(now, ...)`, outputs are `poll_*`), driven by small std
//! drivers:
//!
//! | module | what lives there |
//! |---|---|
//! | [`twin`] | the twin model: device fields, device properties, service properties, tags |
//! | [`registry`] | twins in dense `u32` slots with roaring-bitmap indexes and a change feed |
//! | [`query`] | the JSON query expression: nom parser, optimizer, bitmap executor |
//! | [`resource`] | the device vocabulary: LWM2M paths and values, device operations and events |
#![cfg_attr(
    feature = "dtls",
    doc = "| [`dtls`] | DTLS 1.2 PSK (`coaps`) between the UDP drivers and CoAP (cargo feature `dtls`, on by default) |"
)]
#![cfg_attr(
    not(feature = "dtls"),
    doc = "| `dtls` | DTLS 1.2 PSK (`coaps`) between the UDP drivers and CoAP (cargo feature `dtls`, on by default) |"
)]
#![cfg_attr(
    feature = "lwm2m",
    doc = "| [`coap`] | RFC 7252 codec and message layer, observe (RFC 7641), block-wise (RFC 7959) |"
)]
#![cfg_attr(
    not(feature = "lwm2m"),
    doc = "| `coap` | RFC 7252 codec and message layer, observe (RFC 7641), block-wise (RFC 7959) (feature `lwm2m`) |"
)]
//! | [`lwm2m`] | payload formats, the server endpoint and the device library |
//! | [`transport`] | the [`Transport`](transport::Transport) port between hub and devices |
//! | [`store`] | durability: the registry's changes committed to an embedded redb file |
//! | [`job`] | the job engine: parent and child jobs, rollouts, history |
//! | [`hub`] | the facade: registry + jobs + a transport, and the event routing between them |
//!
//! **From the example to a service.** The example's devices are simulated. A service
//! binds the bundled LWM2M server ([`HubBuilder::udp`](hub::HubBuilder), or `dtls` for
//! `coaps`) and keeps its twins in a [`store`], opened first so that the registry it
//! returns is the hub's:
//!
#![cfg_attr(feature = "lwm2m", doc = "```")]
#![cfg_attr(not(feature = "lwm2m"), doc = "```ignore")]
//! use twinhub::hub::Hub;
//! use twinhub::store::{SharedStore, Store, StoreConfig};
//! use twinhub::twin::Twin;
//! use twinhub::DeviceId;
//!
//! # let dir = std::env::temp_dir().join(format!("twinhub-crate-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let (store, registry) = Store::open(&dir, StoreConfig::default())?;
//! let hub = Hub::builder()
//!     .registry(registry)
//!     .store(SharedStore::new(store))
//!     .udp("127.0.0.1:0") // "0.0.0.0:5683" in production
//!     .build()?;
//! // Only devices with a twin may register (unless `HubConfig::auto_provision` is set).
//! hub.create_device(Twin::new(DeviceId::new("pump-1")?).with_tag("pumps"))?; // durable now
//! println!("LWM2M devices register at coap://{}", hub.local_addr().unwrap());
//! hub.stop();
//! # drop(hub);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! From there: [`Hub::subscribe`](hub::Hub::subscribe) for twin changes and device
//! lifecycle events, [`Hub::request`](hub::Hub::request) for one operation on one device,
//! the [`query`] grammar for what `Hub::query` and `Hub::resolve_targets` take, the [`job`]
//! module for what each job type does on a device, and `lwm2m::client` for the device
//! side (feature `device`). `examples/hub.rs`, `examples/device.rs` and `examples/console`
//! (a REST service over the hub) run them end to end; the README walks through each
//! concept.
//!
//! **Observability.** With the cargo feature `tracing` (on by default) the hub and the job
//! engine emit events through the [`tracing`](https://docs.rs/tracing) facade, target
//! `twinhub`, for whatever subscriber the service installs: `warn` a refused registration
//! (endpoint, reason, address), a bad payload (device, operation, error: a device answer
//! that could not be decoded, or a request's content refused before sending) and a twin's
//! PSK credentials not loaded into the DTLS key store (device: its identity claimed by
//! another twin too, or out of bounds), a DTLS handshake that failed (address, and the
//! PSK identity if the key store holds it: most often a device given another key than
//! its twin's; the device itself is sent no alert); `info` a device that de-registered or expired, an
//! operation that got no answer (device, operation: retransmissions exhausted), a child
//! job that failed (job, device, reason), a registration displaced from its address or
//! moved without an Update (device), a bootstrap that ended (endpoint, outcome); `debug`
//! a registration or update, a device property value the twin refused.
//! Counters are in [`hub::HubStats`]. Without the feature nothing is emitted.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(missing_debug_implementations)]

/// An event through `tracing` when the `tracing` feature is on; nothing otherwise. The
/// arguments are `tracing`'s (`level, field = value, ..., "message"`).
macro_rules! trace_event {
    ($level:ident, $($arg:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            tracing::$level!(target: "twinhub", $($arg)*);
        }
    };
}
pub(crate) use trace_event;

mod time;

#[cfg(feature = "lwm2m")]
pub mod coap;
#[cfg(feature = "dtls")]
pub mod dtls;
pub mod hub;
pub mod job;
pub mod lwm2m;
pub mod query;
pub mod registry;
pub mod resource;
pub mod store;
pub mod transport;
pub mod twin;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

/// The README's Rust snippets, compiled (and run, where not `no_run`) as doctests (they
/// run devices: the default features).
#[cfg(all(
    doctest,
    feature = "lwm2m",
    feature = "device",
    feature = "memory-fleet"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use registry::{Registry, SharedRegistry};
pub use resource::{Content, Lwm2mPath, ResourceType, ResourceValue};
pub use time::{MAX_CONFIG_DURATION, Timestamp, TimestampParseError};
pub use twin::{DeviceId, DeviceIdError, Scalar, Twin};
