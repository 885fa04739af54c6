//! The device side: an LWM2M client library in which a device exposes objects and
//! resources through read / write / execute callbacks (the preview's C device library, as
//! a Rust module).
//!
//! What lives here, from the bottom:
//!
//! | item | what it is |
//! |---|---|
//! | [`ObjectDef`], [`ResourceDef`], [`Access`] | what an object is: resources with id, type, access (R, W, RW, E), single or multiple |
//! | [`Object`] | the per-object callback interface (read, validate, write, execute, create, delete) |
//! | [`ValueObject`] | an object of plain values plus per-resource closures (`on_read`, `on_write`, `on_validate`, `on_execute`) |
//! | [`objects`] | the standard objects Security /0, Server /1, Device /3, Config /10241 |
//! | [`FirmwareUpdate`] | Firmware Update /5 with the spec's State / Update Result machine |
//! | [`ObjectTree`] | the device's objects by path, with access, type and validate-before-write rules |
//! | [`lwm2m::content`](crate::lwm2m::content) (shared) | text, opaque, plain CBOR, TLV, SenML JSON, SenML CBOR, LwM2M CBOR, LWM2M 1.0 JSON (and the pre-standard 1541-1544 codes) |
//! | [`AttributeTable`], [`NotifyTimer`] | Write-Attributes (pmin, pmax, gt, lt, st) and when a notification is due |
//! | [`Lwm2mClient`] | the sans-IO core: registration engine, request serving, notifications, package download |
//! | [`DeviceThread`] | a std UDP driver: one client on a socket and a thread |
//!
//! # Running a device
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use twinhub::lwm2m::client::{
//!     ClientConfig, ClientEvent, DeviceThread, FirmwareUpdate, Lwm2mClient, ObjectTree, objects,
//! };
//! use twinhub::{Lwm2mPath, ResourceValue};
//!
//! let mut tree = ObjectTree::new();
//! tree.add(objects::security("coap://192.0.2.1:5683", 1));
//! tree.add(objects::server(1, 300, "U"));
//! tree.add(objects::device("Contoso", "MX1", "SN-1", "1.0.0")
//!     .on_execute(objects::device::REBOOT, |_, _| Ok(())));
//! tree.set_firmware(FirmwareUpdate::new().on_package(|bytes| Ok(())));
//! tree.add(objects::config());
//!
//! let config = ClientConfig::new("dev-1", "192.0.2.1:5683".parse().unwrap());
//! let client = Lwm2mClient::new(Instant::now(), config, tree);
//! let device = DeviceThread::spawn(client, "0.0.0.0:0".parse().unwrap()).unwrap();
//! device.with(|c| c.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(87)))
//!     .unwrap();
//! match device.events().recv_timeout(Duration::from_secs(60)) {
//!     Ok(ClientEvent::Reboot) => { /* reboot */ }
//!     // The server executed Update (/5/0/2): the update stays Updating (a firmware
//!     // job waits) until the application says how it went, after installing the
//!     // package and reporting its new version (which the job checks).
//!     Ok(ClientEvent::Executed { path, .. }) if path == Lwm2mPath::resource(5, 0, 2) => {
//!         device.with(|c| {
//!             let version = ResourceValue::String("1.1.0".into());
//!             c.set_value(&Lwm2mPath::resource(3, 0, 3), version).unwrap();
//!             c.firmware_update_finished(Ok(()));
//!         });
//!     }
//!     _ => {}
//! }
//! device.shutdown(Duration::from_secs(5)).unwrap();
//! ```
//!
//! # Design notes
//!
//! - **Sans-IO.** [`Lwm2mClient`] reads no clock and owns no socket; timers (registration
//!   update at `lt - min(120 s, lt/2)`, retransmissions, re-register backoff, pmin / pmax)
//!   are data, and `poll_timeout` is their minimum.
//! - **Its own small CoAP exchange layer** over the crate's codec rather than
//!   [`coap::Endpoint`](crate::coap::Endpoint): a client talks to one server (and, while
//!   downloading, one package server), so a handful of bounded tables suffices (the
//!   duplicate cache below; one Block1 reassembly; the outstanding requests), and an idle
//!   registered client stays near 6 KB (measured in the `lwm2m_client` bench), so 10,000
//!   devices fit in one process.
//! - **The duplicate cache** (RFC 7252 §4.5): the answer to each request served is kept
//!   for EXCHANGE_LIFETIME (247 s), by peer and message id, and a copy of the request
//!   (the server retransmits when the answer is lost) gets that answer again, nothing
//!   served twice, queued like any datagram (at 256 unsent, the oldest is dropped). At most 8 answers a peer: the peer's 9th answer pushes out its own
//!   oldest (a server with NSTART = 1, the CoAP default, retransmits only its latest
//!   request, so the last 8 leave room for 7 more in flight); a copy of a request whose
//!   answer was pushed out is a new request, served afresh (an Execute runs again), or
//!   dropped if it is the bootstrap server's after it finished. At most 16 in all,
//!   reached only with a third peer in the cache (the LWM2M server a re-bootstrap moved
//!   the device away from, whose requests are no longer served): a new answer then
//!   pushes out the oldest of all, that old server's (or an earlier bootstrap's), never
//!   one of the current server or of the last bootstrap.
//! - **Only the server may ask.** Requests from any address but the configured server's
//!   are dropped; Security /0 answers 4.01 and is left out of the registration.
//! - **Notifications are NON** by default, each with a fresh message id, except one CON
//!   at least every 24 hours (RFC 7641 §4.5); with
//!   [`ClientConfig::confirmable_notifications`] every one is CON. A CON notification is
//!   retransmitted until acknowledged (ACK_TIMEOUT x [1, 1.5), doubling, `max_retransmit`
//!   times). While one is unacknowledged, a newer one of the same observation waits: it
//!   replaces the older at its next retransmission (taking its counter and timer), or goes
//!   out as soon as the older is acknowledged (RFC 7641 §4.5.2). And one CON notification
//!   at most is outstanding to the server at a time, whatever the observation (RFC 7641
//!   §4.5.1, NSTART = 1): the others wait their turn, oldest first, each replaced in place
//!   by its observation's newer value (NON notifications do not wait). The client's own
//!   requests (Register, Update, Send) are not held back by notifications, nor these by
//!   them. One never acknowledged raises
//!   [`ClientEvent::NotificationTimedOut`] and a registration Update: accepted, the
//!   current value is notified again; refused or unanswered, the client registers anew.
//!   The error notification that ends an observation whose target the application
//!   deleted is CON too when its notifications are, and retransmitted the same way. A RST
//!   to a notification cancels the observation, as does GET with Observe=1.
//!   Observations end when the client re-registers (the server re-observes, LWM2M §6.2).
//! - **Composite operations** (LWM2M 1.1): Read- and Observe-Composite (`FETCH /` with a
//!   SenML JSON or CBOR path list; paths with nothing to read are left out), and
//!   Write-Composite (`iPATCH /`), validated in full before anything is written
//!   ([`ObjectTree::write_composite`]).
//! - **Bootstrap** ([`ClientConfig::with_bootstrap`]): client-initiated, over plain CoAP
//!   or, with `ClientConfig::with_bootstrap_psk` (feature `dtls`), DTLS.
//!   While it runs, only the bootstrap server's requests are served (Discover, Write and
//!   Delete on any object, Security `/0` included, a whole object or an instance; Finish);
//!   at Finish the client registers with the account it was given. If the answer to
//!   Finish is lost, the bootstrap server's retransmitted Finish is answered again from
//!   the duplicate cache (for EXCHANGE_LIFETIME, 247 s, kept apart from the LWM2M
//!   server's answers so that its first requests cannot push it out; nothing else of the
//!   bootstrap server's is served once it finished), and [`DeviceThread`] keeps a DTLS
//!   bootstrap session open for MAX_TRANSMIT_SPAN (45 s) for it, so the server sees the
//!   bootstrap finish instead of timing out. The first
//!   Bootstrap-Request waits the bootstrap account's Client Hold Off Time (`/0/x/11`);
//!   after 5 Registers refused or lost in a row the client bootstraps again, unless
//!   `/1/0/16` (Bootstrap on Registration Failure) is false.
//! - **Queue mode** only announces itself (`Q`); the client does not yet sleep between
//!   updates.
//! - Payload formats are the crate's [`lwm2m::content`](crate::lwm2m::content) codecs,
//!   shared with the server side; written values are typed by the object definitions.

mod attributes;
mod driver;
mod engine;
mod firmware;
mod formats;
mod model;
pub mod objects;
mod tree;
mod value_object;

pub use attributes::{
    AttributeChange, AttributeError, AttributeTable, MAX_ATTRIBUTE_PATHS, NotifyTimer,
    parse_attributes,
};
#[cfg(feature = "dtls")]
pub use driver::MIN_DTLS_STACK;
pub use driver::{DeviceThread, DriverOptions, HELD_EVENTS};
pub use engine::{
    ClientConfig, ClientError, ClientEvent, ClientVersion, Lwm2mClient, SendError, Transmit,
};
pub use firmware::{
    CoapUri, FIRMWARE_UPDATE, FirmwareUpdate, MAX_URI, PackageFn, PullRequest, UpdateFn,
    UpdateResult, UpdateState, parse_coap_uri,
};
pub use model::{Access, Object, ObjectDef, ObjectError, ResourceData, ResourceDef, coerce};
pub use tree::{MAX_CREATED_INSTANCES, ObjectTree};
pub use value_object::{ExecuteFn, ReadFn, ValueObject, WriteFn};
