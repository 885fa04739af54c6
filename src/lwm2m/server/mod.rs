//! The bundled LWM2M server endpoint: the registration interface, device management and
//! observation, as the hub's [`Transport`].
//!
//! [`Lwm2mServer`] is a sans-IO state machine. Drive it like any [`Transport`], plus
//! datagrams:
//!
//! 1. feed every received datagram to [`Lwm2mServer::handle_datagram`];
//! 2. [`Transport::submit`] operations as the hub produces them;
//! 3. send everything [`Lwm2mServer::poll_transmit`] yields;
//! 4. drain [`Transport::poll_event`];
//! 5. sleep until [`Transport::poll_timeout`] or the next datagram, call
//!    [`Transport::handle_timeout`], and go to 3.
//!
//! [`UdpServer`] does exactly that on a std `UdpSocket` and a thread.
//!
//! Underneath, one [`crate::coap::Endpoint`] does the CoAP message layer:
//! retransmission, duplicate detection, piggybacked and separate responses, observe
//! freshness and block-wise transfers (a large read answer or write body travels in
//! blocks without the server noticing).
//!
//! # What it does
//!
//! - **Registration** (`POST /rd`, `POST /rd/{id}`, `DELETE /rd/{id}`): Register answers
//!   2.01 with Location-Path `rd/{id}` after the authorization hook accepted, 4.12
//!   Precondition Failed to an LWM2M version other than 1.0 and 1.1 (the client may retry
//!   with an older one) and 4.00 to a malformed one; `{id}` is 16 hex digits of a random
//!   64-bit number from the OS CSPRNG, so locations are unique across restarts and cannot
//!   be guessed. An Update or De-register for a location the server does not know gets
//!   4.04, and the device registers again (LWM2M §6.2.2); no other registration is
//!   touched. An Update refreshes the lifetime, applies what it carries and follows an
//!   address change (NAT rebinding): knowing the location is the proof, since only the
//!   device and the server have it (over plain CoAP an on-path observer sees it too; only
//!   DTLS closes that). The registration's requests in flight to the old address then
//!   fail at once with [`DeviceError::RegistrationEnded`] (sent, outcome unknown), reported
//!   before the Update, and queued ones go to the new address: as Leshan cancels a
//!   registration's ongoing requests when an Update changes its address. Retransmitting
//!   them to the new address is not done: a CoAP exchange is bound to its peer (message
//!   id, token, duplicate detection), and the old address may be someone else's by now.
//!   The registration's observations follow it: their notifications are taken from the
//!   new address only, and their cancels go there. From the old address a fresh one gets
//!   RST; an older one (RFC 7641 §3.4: reordered across the move) is acknowledged if CON
//!   and dropped, since RST would make the device drop an observation that works at its
//!   new address (RFC 7641 §4.5). A device's
//!   first message after a rebinding may well be a notification: a fresh notification
//!   (RFC 7641 freshness; an error response too) from a new address, carrying the token
//!   of one of a registration's observations, moves the registration there as an Update
//!   would (requests in flight to the old address failed first), without refreshing its
//!   lifetime, which only an Update does. It is reported as
//!   [`DeviceEvent::AddressChanged`] with the registration at its new address (the
//!   whole registration, so that a host that missed its Register can apply it from the
//!   move), not as an Update: nothing the
//!   device announced changed, and Leshan, too, tells its registration listeners of an
//!   update only for a registration Update (before, it was reported as
//!   [`DeviceEvent::RegistrationUpdated`], and the hub published a lifecycle `updated`
//!   event for an Update the device never sent). The token is the proof, as the
//!   location is for an Update: a random 64-bit number from the OS CSPRNG that only the
//!   device and the server know (over plain CoAP an on-path observer sees it too); over
//!   DTLS the datagram must also come through a session of the identity the device
//!   registered with, still bound to it, and from any other identity (or none) it is
//!   dropped unseen and changes nothing. This is what Leshan
//!   does over DTLS (notifications are matched by the session's identity, not the
//!   address) and offers for plain CoAP as an option (update the registration on a
//!   notification); Californium's strict address matching would drop the observation
//!   with nobody told. A notification from an address another registration holds moves
//!   the registration there too, and displaces that one (below: its device is no longer
//!   at the address, as after two devices swapped ports); before, it got RST and the
//!   other registration kept the address, so its requests went to this device. An older
//!   one than the last taken (reordered across the move) gets RST and changes nothing. A notification
//!   that arrives late from an address the registration left (sent before the
//!   rebinding, received after the move) does not move it back, however fresh its
//!   Observe number: the last [`MAX_LEFT_ADDRESSES`] addresses left are remembered for
//!   [`LEFT_ADDRESS_MEMORY`] after each move, and a notification from one is
//!   acknowledged if CON and dropped (an error response ends its observation); an
//!   Update or Register from it still moves the registration (that is the device
//!   speaking). Before, such a notification moved the registration back to the dead
//!   address until the device's next message. A Register or Update from an address
//!   another live registration holds (a NAT gave the port to another device) takes it
//!   from that one: its requests in flight there fail at once
//!   ([`DeviceError::RegistrationEnded`]) and nothing more is sent to it, its requests
//!   waiting in its queue, until its device talks from where it is now (an Update or a
//!   notification from a new address moves it; a fresh notification from the address it
//!   was displaced from, once no registration holds that address, takes it back,
//!   [`DeviceEvent::AddressChanged`]; a
//!   Register replaces it with no takeover probe, which would ask the other device).
//!   Meanwhile its [`RegistrationInfo::address`] ([`Lwm2mServer::registration`]) is
//!   `None`, as the hub's twin shows it: the address is the other device's (before, the
//!   server's own view kept showing it). Before, its requests kept going to the
//!   address, to the other device (over DTLS too, through that device's session), and
//!   its device's new Register was refused while the other device answered the probe.
//!   De-register answers 2.02. A registration expires `lifetime +
//!   lifetime_grace` after the device last registered or updated; its observations go with
//!   it. Each becomes a [`DeviceEvent`].
//! - **Who may register**: the [`Authorizer`] given to [`Lwm2mServer::with_authorizer`];
//!   without one, only [`ServerConfig::auto_provision`] lets anyone in. A refused device gets
//!   4.03 and a [`DeviceEvent::Rejected`]; nothing else changes.
//! - **Takeover**: a Register for an endpoint whose live registration another address
//!   holds follows [`ServerConfig::takeover`]. By default ([`Takeover::ProbeOldAddress`])
//!   the old address is asked first: while it answers, the newcomer gets 5.03 and then
//!   4.03 ([`RejectReason::AddressInUse`]); a device that really moved (a restart behind a
//!   NAT, a new port) is accepted once its old address stayed silent for the probe time.
//!   The probe's answer proves the old registration's device is there only while no other
//!   device speaks from that address: a Register (even one its own probe then holds off)
//!   or an Update of another endpoint from it displaces the old registration (as above), which ends its
//!   probe, and its device's Register is then let in without one. So two devices that
//!   swapped ports behind a NAT both get back in (each one's probe would be answered by
//!   the other), while a newcomer at a new address still cannot take over a registration
//!   whose device answers at its own. Over DTLS the registration's identity decides: the
//!   same identity replaces it at once.
//! - **Device management**: every [`DeviceRequest`] becomes one confirmable CoAP request
//!   (Read GET, Discover GET Accept 40, Write PUT/POST, Write-Attributes PUT with only
//!   Uri-Query, Execute POST, Create POST `/oid`, Delete DELETE, Observe GET Observe=0,
//!   Cancel GET Observe=1 on the observation's token; the LWM2M 1.1 composite operations
//!   on the root: Read-Composite FETCH and Observe-Composite FETCH Observe=0 with the path
//!   list as body, Write-Composite iPATCH, and the composite's cancel repeating its FETCH,
//!   body and token with Observe=1, as RFC 8132 asks); answers and errors map to
//!   [`DeviceReply`] and [`DeviceError`]. Notifications become
//!   [`DeviceEvent::Notification`] with decoded [`Content`] (at `/` for a composite, whose
//!   values are kept only at or below its paths). A composite body and its answer are
//!   SenML CBOR or SenML JSON (those the device announced, else both), CBOR first,
//!   falling back on 4.06 / 4.15 like any other format.
//! - **Values written**: a Write, Create or Write-Composite is checked against the
//!   resources' types ([`Lwm2mServer::with_types`], default [`standard_resource_type`])
//!   before it is encoded, by [`content::fit_to_types`]: a value that does not fit (`-1`
//!   for an Unsigned Integer, a float for an Integer, a NaN anywhere) is answered at once
//!   with [`DeviceError::BadPayload`] naming the path, and nothing is sent. A resource
//!   whose type the resolver does not know takes any finite value as given.
//! - **Payload choice and negotiation**: writes of one resource go as text (opaque as
//!   42), the one format every client speaks, including lwm2m-node-lib. Reads, observes
//!   and writes of several values use the best format the device takes: of those it
//!   announced (`ct`), SenML CBOR, LwM2M CBOR, SenML JSON, TLV, LwM2M JSON in that
//!   order; with no `ct`, SenML CBOR, SenML JSON, TLV for an LWM2M 1.1 device and TLV for
//!   a 1.0 one
//!   (a 1.0 device's resource reads carry no Accept). A device that refuses a format
//!   (4.06 to an Accept, 4.15 to a body) gets the same request again with the next one,
//!   and is not asked for the refused one again until it registers anew or announces
//!   its formats in an Update. Every answer and notification decodes by its own
//!   Content-Format, whatever was asked. An observation that ends without a cancel
//!   through the server becomes [`DeviceEvent::ObservationEnded`], whose `cause` says
//!   who ended it ([`ObservationEndCause`]): the device (it declined the Observe,
//!   answered with an error code or a final response, or sent RST) or the server (a
//!   Cancel-Observe of the same path submitted to it, no answer in time to a
//!   follow-up, or an observation it could not keep: a failed block-wise download of a
//!   notification, a NAT rebinding it could not follow for its CoAP peer bound).
//! - **Queue mode and NSTART**: each device has a bounded queue; at most
//!   [`ServerConfig::nstart`] requests are in flight per device, and a request leaves the
//!   queue only when the CoAP endpoint transmits it at once: never while the device's
//!   address has as many requests unacknowledged as the endpoint's own NSTART
//!   (`coap.nstart`) allows, nor one waiting there (a takeover probe of the address, a
//!   notification's block-wise follow-up). So with `nstart` above `coap.nstart` the
//!   lower of the two holds (a documented rule, not an error: both are valid on their
//!   own), and the rest wait in the device's queue, as behind a probe. Before, they waited
//!   inside the CoAP endpoint, already reported [`DeviceEvent::Sent`]. A queue-mode device's
//!   requests wait until it talks (register, update, notification, any datagram) and go out
//!   during its awake window. Full queue: [`DeviceError::QueueFull`]; waiting longer than
//!   [`ServerConfig::queue_timeout`]: [`DeviceEvent::TimedOut`].
//! - **When a registration ends** (De-register, expiry, the hub's
//!   [`DeviceRequest::EndRegistration`], a takeover, or a new Register of the same
//!   endpoint replacing it): its requests in flight fail at once with
//!   [`DeviceError::RegistrationEnded`] (sent, outcome unknown) and are no longer
//!   retransmitted, as Leshan cancels a registration's ongoing requests; waiting for the
//!   CoAP exchange to give up would hold the caller up to 93 s and, after a new Register,
//!   put a second request in flight to the device beside the new registration's. Queued
//!   requests (never sent) fail with [`DeviceError::NotRegistered`] when the device is
//!   gone, and stay queued for the new registration when a Register replaced the old one.
//! - **Sent**: a request's first transmission (at once, or from the queue when a
//!   queue-mode device wakes or the address is free) is reported as
//!   [`DeviceEvent::Sent`], with the datagram given out by [`Lwm2mServer::poll_transmit`]
//!   (the request left), before its answer;
//!   one answered by the server itself (not registered, queue full, unencodable) and an
//!   `EndRegistration` have none, and a request sent again in another content format
//!   is not reported again. The job engine needs it to tell an Execute that reached a
//!   sleeping device from one still queued.
//!
//! # Memory
//!
//! Per registered device: one registration record (its [`RegistrationInfo`] strings,
//! the object list, an empty queue) and one entry in each of three hash indexes
//! (endpoint, address, registration id), plus the CoAP endpoint's per-peer state while an
//! exchange with the device is remembered (EXCHANGE_LIFETIME). `benches/lwm2m_server.rs`
//! measures it.
//!
//! # Who is who (DTLS)
//!
//! Behind a DTLS layer (`UdpServer::bind_secure`, feature `dtls`) every datagram
//! arrives with the session's authenticated [`PeerIdentity`]
//! ([`Lwm2mServer::handle_datagram_from`]) and the server is built with
//! [`Lwm2mServer::require_identity`]: a Register is accepted only when the identity
//! belongs to the endpoint it names (`ep` may be omitted; it is then the identity's
//! device, as LWM2M 1.1 allows), and an Update or De-register only from the identity the
//! device registered with, while that identity still belongs to the device (a name
//! moved to another device owns nothing of the old one); anything else gets 4.03 and
//! changes nothing. Responses are matched by address and a random token, notifications
//! too, or by token from a new address through a session of the registration's identity
//! (NAT rebinding, see above). A response or notification counts only through a session
//! of the identity the registration it answers for was made with (a notification from
//! another address than its observation's, too: two devices that swapped ports behind a
//! NAT each notify from the other's address, through their own identities), and an empty ACK or RST
//! only through one of the identity of the registration at its address: from another
//! identity (a session that took the device's address since, or a token known to another
//! device) it is dropped unseen and changes nothing (`identity_model.rs` checks these
//! rules over random traffic). A response or notification whose token is no request's
//! or observation's of the server's (a notification of an observation that ended) answers
//! for nobody: it gets RST through whichever session it came, and changes nothing (RFC
//! 7641 §3.6: the device stops sending it; before, one through another identity than
//! that of the registration at its address was dropped unseen, and the device kept
//! notifying). Nor does a datagram through another identity's session wake a queue-mode
//! registration at its address: it is not that device talking. The driver sends requests to a device only through a session of the
//! identity it registered with ([`Lwm2mServer::may_send_to`]), and an answer (ACK or RST,
//! or the NON response to a NON request) through the session it answers, whatever
//! registration holds the address ([`Lwm2mServer::may_send`]: before, a device's
//! De-register from an address another registration held was taken, and its 2.02 never
//! left, nor a NON one's NON 2.02). Over plain CoAP (`UdpServer::bind`) nothing is
//! authenticated: anyone who can reach the port can claim any endpoint the authorizer
//! lets in; use it on trusted networks and in tests only.
//!
//! # Also
//!
//! - **Send** (`POST /dp`, LWM2M 1.1): values a registered device pushes become a
//!   [`DeviceEvent::Notification`] at `/`.
//! - **Bootstrap** (`POST /bs`, with [`Lwm2mServer::with_bootstrap`]): see [`bootstrap`].

pub mod bootstrap;
mod config;
mod packages;
mod registration;
#[cfg(feature = "dtls")]
mod secure;
mod udp;
/// A registration id as its location shows it (`/rd/{id}`): 16 lower-case hex digits.
/// Keeps only the values at or below one of `scope`; returns how many went.
fn keep_within(content: &mut Content, scope: &[Lwm2mPath]) -> u64 {
    let before = content.values.len();
    content
        .values
        .retain(|(p, _)| scope.iter().any(|s| s.contains(p)));
    (before - content.values.len()) as u64
}

fn location_id(id: u64) -> String {
    format!("{id:016x}")
}

/// The registration id of a location segment; `None` for anything [`location_id`] does
/// not produce (the device then gets 4.04).
fn parse_location_id(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod wire;

pub use bootstrap::{
    AccountSecurity, BootstrapPlan, BootstrapRequest, Bootstrapper, MAX_BOOTSTRAP_SESSIONS,
    ServerAccount,
};
pub use config::{
    Authorizer, Decision, MAX_CONFIG_DURATION, ServerConfig, ServerConfigError, Takeover,
};
pub use packages::{
    MAX_PACKAGE_BYTES, MAX_PACKAGE_NAME, PACKAGE_PATH, PackageError, PackageLimits,
    PackageNameError, Packages,
};
pub use registration::{
    DEFAULT_LIFETIME, MAX_ENDPOINT, MAX_LIFETIME, MAX_LINK_PAYLOAD, MAX_OBJECTS, MAX_QUERIES,
    RdMessage, RdMethod, RegistrationError, RegistrationRequest, SUPPORTED_VERSIONS, UpdateRequest,
    parse_version, queries_as_str,
};
pub use udp::{Stopped, UdpServer, UdpServerHandle};

use crate::coap::endpoint::rng::Rng;
use crate::coap::{
    self, Code, Endpoint, Event, IncomingRequestId, Message, MessageType, RequestError, RequestId,
    SendError,
};
use crate::lwm2m::content::{self, ContentFormat, standard_resource_type};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue};
use crate::transport::{
    DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, ObservationEndCause, OpId,
    PeerIdentity, RegistrationInfo, RejectReason, Transport, WriteMode,
};
use crate::twin::DeviceId;
use std::cmp::Reverse;
// Registration tables hash with foldhash, seeded per process (see src/registry/hash.rs).
use foldhash::{HashMap, HashMapExt};
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A datagram to send (the CoAP endpoint's).
pub use crate::coap::Transmit;

/// Resolves resource types where a payload does not carry them (TLV, text).
pub type TypeResolver = Box<dyn Fn(&Lwm2mPath) -> Option<ResourceType> + Send>;

/// One registered device.
struct Registration {
    device: DeviceId,
    info: RegistrationInfo,
    generation: u64,
    reg_id: u64,
    addr: SocketAddr,
    expires: Instant,
    content_formats: Vec<u16>,
    /// Formats the device refused (4.06 to an Accept, 4.15 to a write) since it
    /// registered or last announced its formats: never asked for again.
    refused: Vec<ContentFormat>,
    alternate_path: Option<Box<str>>,
    awake_until: Option<Instant>,
    /// The requests sent under it and not yet answered, oldest first (at most
    /// [`ServerConfig::nstart`]): failed at once when the registration ends.
    in_flight: Vec<RequestId>,
    /// The PSK identity it registered with (none over plain CoAP).
    identity: Option<Arc<str>>,
    /// Where a takeover check of this registration stands ([`Takeover`]).
    probe: Probe,
    /// The addresses it left (NAT rebinding) and when, oldest first: at most
    /// [`MAX_LEFT_ADDRESSES`], each for [`LEFT_ADDRESS_MEMORY`]. A notification from one
    /// of them does not move it back.
    left: VecDeque<(SocketAddr, Instant)>,
    /// Another registration took its address (a Register or Update from there: that
    /// device is there now). Nothing is sent to it until its device talks from where it
    /// is now (see [`Lwm2mServer::displace_holder`]).
    displaced: bool,
}

/// How many addresses a registration remembers having left after a NAT rebinding (see
/// [`LEFT_ADDRESS_MEMORY`]). At the bound, a further move forgets the oldest: a
/// notification from it may then move the registration back, as from any new address.
pub const MAX_LEFT_ADDRESSES: usize = 4;

/// How long a registration remembers an address it left after a NAT rebinding. Until
/// then, a notification from that address, however fresh its Observe number, does not
/// move the registration back there: the device sent it before the rebinding and it
/// arrived late (RFC 7252 takes MAX_LATENCY, 100 s, as the longest a datagram travels;
/// this is RFC 7641's 128 s freshness window), while requests would then go to a dead
/// address until the device's next message. It is acknowledged if CON and dropped (an
/// error response among them ends its observation, [`DeviceEvent::ObservationEnded`]).
/// An Update or Register from the address moves it there at any time: that is the device
/// speaking. Past this span, a notification from the address moves the registration as
/// from any new address: the device is there again (a network it left and came back to).
pub const LEFT_ADDRESS_MEMORY: Duration = Duration::from_secs(128);

/// How long a registration whose address answered a takeover probe refuses Registers
/// from other addresses before it is probed again.
pub const TAKEOVER_REFUSAL: Duration = Duration::from_secs(60);

/// A takeover check of a registration ([`Takeover::ProbeOldAddress`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Probe {
    /// Not being checked.
    Idle,
    /// A probe to the registration's address is in flight.
    InFlight(RequestId),
    /// The address answered: Registers from elsewhere are refused until then.
    Answered { until: Instant },
}

/// An operation waiting for its turn.
struct Queued {
    op: DeviceOp,
    /// Set once, when the operation was submitted: a request taken back into the queue
    /// ([`Lwm2mServer::not_sent`], [`Lwm2mServer::fall_back`]) keeps it.
    deadline: Instant,
    /// Submission order: a request taken back into the queue goes before those
    /// submitted after it, however many are taken back and in whatever order.
    seq: u64,
    /// Sent before (queued again by [`Lwm2mServer::fall_back`] with another format): its
    /// [`DeviceEvent::Sent`] was already reported.
    resent: bool,
}

/// A request handed to the CoAP endpoint and not yet answered.
struct Outstanding {
    op: OpId,
    device: DeviceId,
    slot: u32,
    generation: u64,
    request: DeviceRequest,
    /// The Accept (read, observe) or Content-Format (multi-value write, create) the
    /// request carried, when it was our choice and another could be tried.
    format: Option<ContentFormat>,
    /// Its queue deadline and submission order ([`Queued`]), kept should it be queued
    /// again.
    deadline: Instant,
    seq: u64,
}

/// An established observation (keyed by the Observe request's id).
struct Observation {
    slot: u32,
    generation: u64,
    device: DeviceId,
    /// The observed path; the root for an Observe-Composite.
    path: Lwm2mPath,
    /// An Observe-Composite's paths: notifications keep only values at or below one.
    composite: Option<Vec<Lwm2mPath>>,
    op: OpId,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Timer {
    Expiry {
        slot: u32,
        generation: u64,
    },
    Probe {
        slot: u32,
        generation: u64,
    },
    /// A queued item may be due (each item carries its own deadline).
    Queue {
        slot: u32,
    },
}

/// The bundled LWM2M server (sans-IO). See the module docs for the driving order.
pub struct Lwm2mServer {
    config: ServerConfig,
    authorizer: Option<Authorizer>,
    types: TypeResolver,
    endpoint: Endpoint,
    /// The endpoint's next deadline, cached after every call into it
    /// ([`Transport::poll_timeout`] takes `&self`).
    endpoint_timeout: Option<Instant>,
    slots: Vec<Option<Registration>>,
    queues: Vec<VecDeque<Queued>>,
    free: Vec<u32>,
    by_endpoint: HashMap<DeviceId, u32>,
    by_addr: HashMap<SocketAddr, u32>,
    by_reg_id: HashMap<u64, u32>,
    /// Draws registration ids: random 64-bit numbers from the OS CSPRNG, so a location is
    /// unique across restarts and cannot be guessed.
    location_rng: Rng,
    values_outside_path: u64,
    /// Takeover probes in flight: the probed registration.
    probes: HashMap<RequestId, (u32, u64)>,
    next_generation: u64,
    /// The next operation's submission order ([`Queued::seq`]).
    next_seq: u64,
    outstanding: HashMap<RequestId, Outstanding>,
    observations: HashMap<RequestId, Observation>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    events: VecDeque<DeviceEvent>,
    /// Every registration-interface request must carry an authenticated identity.
    require_identity: bool,
    /// The identity of the datagram being handled.
    current_identity: Option<PeerIdentity>,
    /// Behind a DTLS layer ([`UdpServer::bind_secure`]): the addresses with an
    /// established session and the session's identity, as the layer reports them
    /// (`None`: not tracked; every registration's address counts as reachable). A
    /// request for a registration whose address has no session of the registration's
    /// identity (none at all, or another device's that took the address) waits in its
    /// queue, as a sleeping device's does: handed to the endpoint it would be dropped by
    /// the layer (see [`Self::may_send_to`]), yet reported [`DeviceEvent::Sent`] (a
    /// reboot job then took the device's next Register for the reboot). At most one
    /// entry per DTLS session (`DtlsServerConfig::max_sessions`).
    sessions: Option<HashMap<SocketAddr, PeerIdentity>>,
    /// The bootstrap interface: its plan maker and running sessions.
    bootstraps: bootstrap::Bootstraps,
    /// The packages registered devices may download (see [`packages`]).
    packages: Option<Packages>,
}

impl std::fmt::Debug for Lwm2mServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lwm2mServer")
            .field("registered", &self.by_endpoint.len())
            .finish_non_exhaustive()
    }
}

impl Lwm2mServer {
    /// A server with these settings, no authorization hook and the standard resource
    /// types. Tokens and message ids come from the OS CSPRNG (through the CoAP endpoint).
    /// The settings are taken as they are: check them with [`ServerConfig::validate`]
    /// first ([`UdpServer::bind`] refuses what it refuses; a server with `nstart: 0`, say,
    /// never sends a request).
    ///
    /// ```
    /// use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
    /// let server = Lwm2mServer::new(ServerConfig::default());
    /// assert_eq!(server.registered_count(), 0);
    /// ```
    pub fn new(config: ServerConfig) -> Self {
        let endpoint = Endpoint::new(config.coap.clone());
        Self::with_endpoint(config, endpoint, Rng::os())
    }

    /// Like [`Lwm2mServer::new`] with a seeded token / message-id generator, for
    /// deterministic tests.
    pub fn with_seed(config: ServerConfig, seed: u64) -> Self {
        let endpoint = Endpoint::new_seeded(config.coap.clone(), seed);
        Self::with_endpoint(config, endpoint, Rng::Seeded(!seed))
    }

    fn with_endpoint(config: ServerConfig, endpoint: Endpoint, location_rng: Rng) -> Self {
        Lwm2mServer {
            config,
            authorizer: None,
            types: Box::new(standard_resource_type),
            endpoint,
            endpoint_timeout: None,
            slots: Vec::new(),
            queues: Vec::new(),
            free: Vec::new(),
            by_endpoint: HashMap::new(),
            by_addr: HashMap::new(),
            by_reg_id: HashMap::new(),
            location_rng,
            values_outside_path: 0,
            probes: HashMap::new(),
            next_generation: 1,
            next_seq: 0,
            outstanding: HashMap::new(),
            observations: HashMap::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            require_identity: false,
            current_identity: None,
            sessions: None,
            packages: None,
            bootstraps: bootstrap::Bootstraps::default(),
        }
    }

    /// Installs the hook that decides who may register.
    ///
    /// ```
    /// use twinhub::lwm2m::server::{Decision, Lwm2mServer, ServerConfig};
    /// use twinhub::transport::RejectReason;
    /// let server = Lwm2mServer::new(ServerConfig::default()).with_authorizer(Box::new(|r, _identity| {
    ///     if r.endpoint.starts_with("dev-") { Decision::Accept } else { Decision::Reject(RejectReason::UnknownDevice) }
    /// }));
    /// # let _ = server;
    /// ```
    pub fn with_authorizer(mut self, authorizer: Authorizer) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// Serves `packages` to registered devices at `/pkg/<name>`, over the connection
    /// they registered on (see [`Packages`]).
    pub fn with_packages(mut self, packages: Packages) -> Self {
        self.packages = Some(packages);
        self
    }

    /// Refuses every registration-interface request that comes without an authenticated
    /// identity ([`RejectReason::CredentialsRequired`], 4.03): for a server behind DTLS.
    ///
    /// ```
    /// use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
    /// let server = Lwm2mServer::new(ServerConfig::default()).require_identity();
    /// # let _ = server;
    /// ```
    pub fn require_identity(mut self) -> Self {
        self.require_identity = true;
        self
    }

    /// Tracks which addresses have a DTLS session (see [`Self::session_changed`]):
    /// requests for a registration whose address has none wait in its queue.
    #[cfg(feature = "dtls")]
    pub(crate) fn track_sessions(mut self) -> Self {
        self.sessions = Some(HashMap::new());
        self
    }

    /// The DTLS layer's word that `peer` has a session of `identity` (`None`: no
    /// session any more). A session that comes up sends the requests queued for the
    /// registration at that address, when it is of the registration's identity.
    #[cfg(feature = "dtls")]
    pub(crate) fn session_changed(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        identity: Option<&PeerIdentity>,
    ) {
        let Some(sessions) = &mut self.sessions else {
            return;
        };
        let Some(identity) = identity else {
            sessions.remove(&peer);
            return;
        };
        // A session of another identity than the one the address had (or after none):
        // CoAP's duplicate detection, keyed by address, must not take its messages for
        // the previous identity's retransmissions and replay their replies to it (a
        // cached answer to another device's Register, say, with its location).
        if sessions.insert(peer, identity.clone()).as_ref() != Some(identity) {
            self.endpoint.forget_duplicates(peer);
        }
        if let Some(&slot) = self.by_addr.get(&peer) {
            self.pump(now, slot);
            self.drain_endpoint(now);
        }
    }

    /// The DTLS layer could not send `t`: there is no session at its destination (it
    /// closed since the layer last reported, say its key was withdrawn on another
    /// thread after the request was handed out). The address no longer counts as having
    /// a session. When `t` is the first transmission of a device request whose
    /// [`DeviceEvent::Sent`] has not been handed out yet (the driver hands events out
    /// after sending: `udp.rs`), the request is taken back: nothing reached the device,
    /// so its `Sent` is withdrawn, the CoAP exchange forgotten, and the request waits in
    /// the device's queue, before those submitted after it (several taken back, with
    /// [`ServerConfig::nstart`] above 1, keep their order), with the deadline it got when
    /// first queued ([`ServerConfig::queue_timeout`] after submission: a session that
    /// keeps coming and going cannot keep it alive longer; one past it times out now), for
    /// a session to the registration's address, as any request does while there is none
    /// (reported `Sent` when it goes); should the queue have filled up behind it
    /// meanwhile ([`ServerConfig::queue_capacity`]), it fails with
    /// [`DeviceError::QueueFull`] instead, as at submission. Anything else (a
    /// retransmission, a request already reported sent) is left to CoAP, which times it
    /// out. `session`: the session the layer has at the destination now (none, or one the
    /// registration's identity does not own): the server's table takes it.
    #[cfg(feature = "dtls")]
    pub(crate) fn not_sent(&mut self, now: Instant, t: &Transmit, session: Option<&PeerIdentity>) {
        if let Some(sessions) = &mut self.sessions {
            match session {
                Some(identity) => sessions.insert(t.destination, identity.clone()),
                None => sessions.remove(&t.destination),
            };
        }
        let Some(id) = self.endpoint.request_of(t.destination, &t.payload) else {
            return;
        };
        let Some(op) = self.outstanding.get(&id).map(|o| o.op) else {
            return;
        };
        let Some(at) = self
            .events
            .iter()
            .position(|e| matches!(e, DeviceEvent::Sent { op: sent, .. } if *sent == op))
        else {
            return;
        };
        self.events.remove(at);
        let Some(o) = self.outstanding.remove(&id) else {
            return;
        };
        self.endpoint.forget_request(now, id);
        let op = DeviceOp {
            id: o.op,
            device: o.device,
            request: o.request,
        };
        let Some(reg) = self
            .slot_mut(o.slot)
            .filter(|r| r.generation == o.generation)
        else {
            return self.fail(op, DeviceError::NotRegistered);
        };
        reg.in_flight.retain(|&sent| sent != id);
        self.endpoint_timeout = self.endpoint.poll_timeout();
        if o.deadline <= now {
            // Its time in the queue is up (a session that kept coming and going).
            return self.events.push_back(DeviceEvent::TimedOut {
                op: op.id,
                device: op.device,
            });
        }
        if self.queues[o.slot as usize].len() >= self.config.queue_capacity {
            // Others were queued behind it meanwhile: the bound holds, and nothing left.
            return self.fail(op, DeviceError::QueueFull);
        }
        self.requeue(
            o.slot,
            Queued {
                op,
                deadline: o.deadline,
                seq: o.seq,
                resent: false,
            },
        );
    }

    /// Puts a request taken back from the endpoint into its device's queue, before those
    /// submitted after it, with its own deadline.
    fn requeue(&mut self, slot: u32, q: Queued) {
        let queue = &mut self.queues[slot as usize];
        let at = queue
            .iter()
            .position(|w| w.seq > q.seq)
            .unwrap_or(queue.len());
        let deadline = q.deadline;
        queue.insert(at, q);
        self.timers.push(Reverse((deadline, Timer::Queue { slot })));
    }

    /// Where the registration at `addr` expects its requests to go: `None` when no
    /// registration is at that address, `Some(None)` for a plain-CoAP registration,
    /// `Some(Some(identity))` for one made over DTLS. A DTLS driver sends a datagram to
    /// `addr` only through a session of that identity.
    pub fn identity_at(&self, addr: SocketAddr) -> Option<Option<&str>> {
        let slot = *self.by_addr.get(&addr)?;
        self.slot(slot).map(|r| r.identity.as_deref())
    }

    /// Whether a datagram for the registration at `addr` may go through a session of
    /// `session` (none: plain CoAP): true when no registration is at that address, or when
    /// the session's identity is the one the registration was made with and is still
    /// bound to the registration's device. A DTLS driver sends only when this holds.
    pub fn may_send_to(&self, addr: SocketAddr, session: Option<&PeerIdentity>) -> bool {
        match self.by_addr.get(&addr).and_then(|&slot| self.slot(slot)) {
            None => true,
            Some(reg) => identity_owns(reg, session),
        }
    }

    /// Whether the datagram `t` may leave through a session of `session` (none: plain
    /// CoAP), the session at its destination: an ACK or RST (a piggybacked answer, an
    /// empty ACK) always, since CoAP sends one only in reply to a message that just came
    /// from its destination, here through that session (a device that de-registers from
    /// an address another registration holds, a NAT having given it that port, gets its
    /// 2.02, and an identity refused there its 4.03); so is a NON response, the answer to
    /// a NON request (RFC 7252 §5.2.3), which the server sends at once, while it handles
    /// the request (it serves no observations, whose notifications would be NON responses
    /// sent later): before, it was judged by the registration at its destination, and a
    /// device's NON De-register from an address another identity's registration holds
    /// never got its 2.02; a bootstrap session's request only
    /// through a session of the identity that asked for the bootstrap, whatever
    /// registration holds the address (it carries the LWM2M servers' keys; a device
    /// bootstraps again from where it registered through its bootstrap identity); any
    /// other request only as [`Self::may_send_to`] says for the address. A DTLS driver
    /// sends only when this holds.
    ///
    /// A separate response (a CON message with a response code) falls under that last
    /// rule, the registration at its destination. The server sends none: every request
    /// it takes (registration interface, Bootstrap-Request, Send, a package download) is
    /// answered in the [`handle_datagram_from`](Self::handle_datagram_from) call that
    /// brought it, while its piggyback window is open, and block-wise follow-ups are
    /// answered by the CoAP endpoint as they come (the identity model and the
    /// `server_traffic` fuzz target fail on a separate response). Were one sent, it would
    /// go out a piggyback window after its request, when the session at its destination
    /// may be another identity's (a NAT gave the port away), and nothing here remembers
    /// which identity asked: judged as an ACK is, it could hand one device's answer to
    /// another; the registration gate errs the safe way (held back, the answer is lost as
    /// a lost datagram is: each retransmission is judged again until CoAP gives up).
    pub fn may_send(&self, t: &Transmit, session: Option<&PeerIdentity>) -> bool {
        // Type bits: 2 ACK, 3 RST; or 1 NON with a response code (classes 2 to 5).
        let answer = match (t.payload.first(), t.payload.get(1)) {
            (Some(&b), _) if (b >> 4) & 3 >= 2 => true,
            (Some(&b), Some(&code)) => (b >> 4) & 3 == 1 && (2..=5).contains(&(code >> 5)),
            _ => false,
        };
        if answer {
            return true;
        }
        if let Some(asked) = self
            .endpoint
            .request_of(t.destination, &t.payload)
            .and_then(|id| self.bootstraps.identity_of(id))
        {
            return asked == session;
        }
        self.may_send_to(t.destination, session)
    }

    /// Replaces the resource-type resolver used to decode TLV and text (default:
    /// [`standard_resource_type`]).
    pub fn with_types(mut self, types: TypeResolver) -> Self {
        self.types = types;
        self
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// How many devices are registered.
    pub fn registered_count(&self) -> usize {
        self.by_endpoint.len()
    }

    /// A registered device's registration. Its [`address`](RegistrationInfo::address) is
    /// where the server sends the device's requests, and `None` while the registration is
    /// displaced ([`DeviceEvent::Displaced`]: another device spoke from its address, which
    /// is that device's now, and nothing is sent to this one until its device talks from
    /// where it is), as the hub's twin shows it; the device's next Update brings an
    /// address back ([`DeviceEvent::RegistrationUpdated`]), and so does its fresh
    /// notification from a new address, or from the one it lost once that is free
    /// ([`DeviceEvent::AddressChanged`]).
    pub fn registration(&self, device: &DeviceId) -> Option<&RegistrationInfo> {
        let slot = *self.by_endpoint.get(device)?;
        self.slot(slot).map(|r| &r.info)
    }

    /// Takes back a registration a previous run of the server accepted (the hub restores
    /// them from the twins after a restart), so the device's Updates to its location,
    /// its De-register and the operations to it keep working without a new Register.
    /// `remaining` is what is left of its lifetime (grace included); the registration
    /// expires then unless the device updates it. No event is emitted (the twin already
    /// holds it). Refused (`false`) when the id is not one this server hands out, the
    /// device, the location or the address is already taken, the table is full, or no
    /// address is known. A queue-mode device counts as asleep until it speaks. Content
    /// formats the device announced are not kept: the version's defaults are asked for
    /// until it announces them again (a Register, or an Update that carries `ct`).
    pub fn restore_registration(
        &mut self,
        now: Instant,
        info: RegistrationInfo,
        remaining: Duration,
    ) -> bool {
        let (Ok(device), Some(reg_id), Some(addr)) = (
            DeviceId::new(&info.endpoint),
            parse_location_id(&info.registration_id),
            info.address,
        ) else {
            return false;
        };
        if self.by_endpoint.contains_key(&device)
            || self.by_reg_id.contains_key(&reg_id)
            || self.by_addr.contains_key(&addr)
            || self.by_endpoint.len() >= self.config.max_registrations
        {
            return false;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.queues.push(VecDeque::new());
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        let expires = now + remaining;
        let identity = info.psk_identity.as_deref().map(Arc::<str>::from);
        self.slots[slot as usize] = Some(Registration {
            device: device.clone(),
            info,
            generation,
            reg_id,
            addr,
            expires,
            content_formats: Vec::new(),
            refused: Vec::new(),
            alternate_path: None,
            awake_until: None,
            in_flight: Vec::new(),
            probe: Probe::Idle,
            left: VecDeque::new(),
            displaced: false,
            identity,
        });
        self.by_endpoint.insert(device, slot);
        self.by_addr.insert(addr, slot);
        self.by_reg_id.insert(reg_id, slot);
        self.timers
            .push(Reverse((expires, Timer::Expiry { slot, generation })));
        true
    }

    /// How many observations are established (all devices).
    pub fn observation_count(&self) -> usize {
        self.observations.len()
    }

    /// Values a device sent outside the path it was asked for (a notification of `/3/0`
    /// carrying `/1/0/1`, a read answer with other objects' records): dropped, never
    /// handed on, and counted here.
    pub fn values_outside_path(&self) -> u64 {
        self.values_outside_path
    }

    /// The CoAP endpoint underneath (for its counters).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.endpoint.poll_transmit()
    }

    fn slot(&self, slot: u32) -> Option<&Registration> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut Registration> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// Runs the endpoint's events through the LWM2M layer and refreshes its deadline.
    fn drain_endpoint(&mut self, now: Instant) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::Request { id, peer, request } => {
                    self.handle_request(now, id, peer, &request)
                }
                Event::Response { id, .. } if self.probes.contains_key(&id) => {
                    self.probe_answered(now, id)
                }
                Event::RequestFailed {
                    id,
                    error: RequestError::Reset,
                } if self.probes.contains_key(&id) => self.probe_answered(now, id),
                Event::RequestFailed { id, .. } if self.probes.contains_key(&id) => {
                    // No answer before the endpoint gave up: the probe timer decides.
                    // The address is free for the registration's requests meanwhile.
                    if let Some((slot, _)) = self.probes.remove(&id) {
                        self.pump(now, slot);
                    }
                }
                Event::Response { id, response } if self.bootstraps.owns(id) => {
                    self.bootstrap_answered(now, id, Ok(&response))
                }
                Event::RequestFailed { id, error } if self.bootstraps.owns(id) => {
                    let peer = self.bootstraps.peer_of(id);
                    self.bootstrap_answered(now, id, Err(error));
                    // The address is free for the requests of a registration there, held
                    // behind the bootstrap request (a device that bootstraps again from
                    // where it registered): no datagram of its device pumps them now.
                    if let Some(&slot) = peer.and_then(|p| self.by_addr.get(&p)) {
                        self.pump(now, slot);
                    }
                }
                Event::Response { id, response } => self.handle_response(now, id, &response),
                Event::Notification { id, response } => self.handle_notification(id, &response),
                Event::RequestFailed { id, error } => self.handle_failure(now, id, error),
                // Server-role observations: the LWM2M server observes nobody's resources.
                _ => {}
            }
        }
        self.endpoint_timeout = self.endpoint.poll_timeout();
    }

    // ---------------------------------------------------------------- datagrams in

    /// Handles one received datagram. Malformed datagrams are dropped silently, as
    /// RFC 7252 §4.2 asks.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        self.handle_datagram_from(now, peer, None, bytes);
    }

    /// Handles one datagram that arrived with an authenticated identity (the plaintext of
    /// a DTLS record), or none (plain CoAP). The identity decides who may register,
    /// update and de-register (see the module docs).
    pub fn handle_datagram_from(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        identity: Option<&PeerIdentity>,
        bytes: &[u8],
    ) {
        self.current_identity = identity.cloned();
        if self.answer_from_stranger(peer, bytes) {
            // Not the device's: dropped unseen (no ACK, no RST), nothing changes.
            self.current_identity = None;
            return;
        }
        if !self.rebinding_notification(now, peer, bytes) {
            self.endpoint.handle_datagram(now, peer, bytes);
        }
        self.drain_endpoint(now);
        // Queued operations go out once the datagram was handled: a device that woke to
        // de-register gets none of them (they fail with NotRegistered instead). Only the
        // registration's own identity wakes it (over DTLS): a datagram through another
        // identity's session at its address (answered, or refused) is not its device
        // talking, and what it woke would be refused through that session anyway.
        let talked = self.by_addr.get(&peer).copied().filter(|&slot| {
            self.slot(slot)
                .is_some_and(|reg| identity_owns(reg, self.current_identity.as_ref()))
        });
        self.current_identity = None;
        if let Some(slot) = talked {
            self.device_talked(now, slot);
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        peer: SocketAddr,
        request: &Message,
    ) {
        if request.uri_path().eq(["bs"]) {
            return self.bootstrap_request(now, id, peer, request);
        }
        if request.uri_path().eq(["dp"]) {
            let code = self.send_interface(peer, request);
            let _ = self.endpoint.respond(now, id, Message::response(code));
            return;
        }
        if self.packages.is_some() && request.uri_path().next() == Some(PACKAGE_PATH) {
            let _ = match self.package_request(peer, request) {
                Ok((body, etag)) => {
                    let mut head = Message::response(Code::CONTENT);
                    head.set_content_format(coap::ContentFormat::OCTET_STREAM);
                    head.add_etag(&etag);
                    self.endpoint.respond_shared(now, id, head, body)
                }
                Err(code) => self.endpoint.respond(now, id, Message::response(code)),
            };
            return;
        }
        let (rcode, location) = self.registration_interface(now, peer, request);
        let mut r = Message::response(rcode);
        if let Some(id) = location {
            r.add_location_path("rd");
            r.add_location_path(&id);
        }
        // Only fails for an unknown id or a non-response code, neither of which can happen
        // here; a lost answer is retried by the device.
        let _ = self.endpoint.respond(now, id, r);
    }

    /// LWM2M 1.1 Send (information reporting, `POST /dp`): values a registered device
    /// pushes unasked, in SenML JSON, SenML CBOR or LwM2M CBOR. They become a
    /// [`DeviceEvent::Notification`] for the root path `/`, so the hub applies them as it
    /// applies notifications. 2.04 when taken; 4.04 from an address no registration holds
    /// (the device registers again), 4.03 from another identity than the registration's,
    /// 4.05 for another method, 4.15 for another format, 4.00 for a payload that does not
    /// decode.
    fn send_interface(&mut self, peer: SocketAddr, m: &Message) -> Code {
        if m.code != Code::POST {
            return Code::METHOD_NOT_ALLOWED;
        }
        let Some(&slot) = self.by_addr.get(&peer) else {
            return Code::NOT_FOUND;
        };
        if !self.owns(slot, peer) {
            return Code::FORBIDDEN;
        }
        let format = m
            .content_format()
            .and_then(|c| ContentFormat::from_code(c.0));
        if !matches!(
            format.map(ContentFormat::canonical),
            Some(ContentFormat::SenmlJson | ContentFormat::SenmlCbor | ContentFormat::Lwm2mCbor)
        ) {
            return Code::UNSUPPORTED_CONTENT_FORMAT;
        }
        let Ok(content) = self.decode(m, &Lwm2mPath::ROOT) else {
            return Code::BAD_REQUEST;
        };
        let Some((device, registration_id)) = self
            .slot(slot)
            .map(|r| (r.device.clone(), r.info.registration_id.clone()))
        else {
            return Code::NOT_FOUND;
        };
        self.events.push_back(DeviceEvent::Notification {
            device,
            registration_id,
            path: Lwm2mPath::ROOT,
            content,
        });
        Code::CHANGED
    }

    /// A package download (`GET /pkg/<name>`, see [`packages`]): the body to answer 2.05
    /// with (shared with the endpoint, which slices it into blocks) and its ETag, or 4.04 from an
    /// address no registration holds or for an unknown name, 4.03 from another identity
    /// than the registration's, 4.05 for another method.
    fn package_request(
        &mut self,
        peer: SocketAddr,
        m: &Message,
    ) -> Result<(Arc<Vec<u8>>, [u8; 8]), Code> {
        if m.code != Code::GET {
            return Err(Code::METHOD_NOT_ALLOWED);
        }
        let &slot = self.by_addr.get(&peer).ok_or(Code::NOT_FOUND)?;
        if !self.owns(slot, peer) {
            return Err(Code::FORBIDDEN);
        }
        let name = m.uri_path().skip(1).collect::<Vec<_>>().join("/");
        let packages = self.packages.as_ref().ok_or(Code::NOT_FOUND)?;
        let tagged = packages.get_tagged(&name).ok_or(Code::NOT_FOUND)?;
        if m.block2().is_none_or(|b| b.num == 0) {
            packages.count_download();
        }
        Ok(tagged)
    }

    /// Runs a registration-interface request; returns the response code and, for a
    /// Register, the new registration id.
    fn registration_interface(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        m: &Message,
    ) -> (Code, Option<String>) {
        let method = match m.code {
            Code::POST => RdMethod::Post,
            Code::DELETE => RdMethod::Delete,
            _ => RdMethod::Other,
        };
        let path: Vec<&str> = m.uri_path().collect();
        let raw: Vec<&[u8]> = m.option_values(coap::OptionNumber::URI_QUERY).collect();
        let Ok(mut queries) = queries_as_str(&raw) else {
            return (Code::BAD_REQUEST, None);
        };
        if self.require_identity && self.current_identity.is_none() && path.first() == Some(&"rd") {
            self.events.push_back(DeviceEvent::Rejected {
                endpoint: String::new(),
                reason: RejectReason::CredentialsRequired,
                address: Some(peer),
            });
            return (Code::FORBIDDEN, None);
        }
        // LWM2M 1.1: a client with credentials may leave out `ep`; it is the identity's.
        let inferred;
        if method == RdMethod::Post
            && path == ["rd"]
            && !queries.iter().any(|q| q.starts_with("ep="))
            && let Some(device) = self
                .current_identity
                .as_ref()
                .and_then(|i| i.device.as_ref())
        {
            inferred = format!("ep={device}");
            queries.push(&inferred);
        }
        match RdMessage::parse(method, &path, &queries, &m.payload) {
            Ok(RdMessage::Register(r)) => self.register(now, peer, r),
            Ok(RdMessage::Update { id, update }) => (self.update(now, peer, &id, update), None),
            Ok(RdMessage::Deregister { id }) => (self.deregister(now, peer, &id), None),
            Err(RegistrationError::NotRegistrationInterface) => {
                let code = if path.first() == Some(&"rd") {
                    Code::METHOD_NOT_ALLOWED
                } else {
                    Code::NOT_FOUND
                };
                (code, None)
            }
            Err(e) => {
                if method == RdMethod::Post && path == ["rd"] {
                    let endpoint = queries
                        .iter()
                        .find_map(|q| q.strip_prefix("ep="))
                        .unwrap_or("")
                        .chars()
                        .take(MAX_ENDPOINT)
                        .collect();
                    self.events.push_back(DeviceEvent::Rejected {
                        endpoint,
                        reason: RejectReason::Malformed(e.to_string()),
                        address: Some(peer),
                    });
                }
                (Code::BAD_REQUEST, None)
            }
        }
    }

    fn register(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        r: RegistrationRequest,
    ) -> (Code, Option<String>) {
        let device = match DeviceId::new(&r.endpoint) {
            Ok(d) => d,
            Err(e) => {
                self.events.push_back(DeviceEvent::Rejected {
                    endpoint: r.endpoint,
                    reason: RejectReason::Malformed(e.to_string()),
                    address: Some(peer),
                });
                return (Code::BAD_REQUEST, None);
            }
        };
        if parse_version(&r.lwm2m_version).is_none_or(|v| !SUPPORTED_VERSIONS.contains(&v)) {
            self.events.push_back(DeviceEvent::Rejected {
                endpoint: r.endpoint,
                reason: RejectReason::UnsupportedVersion(r.lwm2m_version),
                address: Some(peer),
            });
            return (Code::PRECONDITION_FAILED, None);
        }
        let identity = self.current_identity.clone();
        if let Some(i) = &identity
            && i.device.as_ref() != Some(&device)
        {
            self.events.push_back(DeviceEvent::Rejected {
                endpoint: r.endpoint,
                reason: RejectReason::IdentityMismatch,
                address: Some(peer),
            });
            return (Code::FORBIDDEN, None);
        }
        let decision = match &self.authorizer {
            Some(hook) => hook(&r, identity.as_ref()),
            None if self.config.auto_provision => Decision::Accept,
            None => Decision::Reject(RejectReason::UnknownDevice),
        };
        if let Decision::Reject(reason) = decision {
            self.events.push_back(DeviceEvent::Rejected {
                endpoint: r.endpoint,
                reason,
                address: Some(peer),
            });
            return (Code::FORBIDDEN, None);
        }
        if let Some(&slot) = self.by_endpoint.get(&device) {
            // The device speaks from `peer`: another registration there lost the
            // address, even should this Register be refused. A takeover probe of that
            // registration's address would ask this device (two devices that swapped
            // ports behind a NAT would each be refused while the other answered): it
            // ends, and that registration's device is let in when it registers from where
            // it is now.
            self.displace_holder(now, peer, slot);
            if let Some(refusal) = self.contest(now, slot, peer) {
                return (refusal, None);
            }
        }
        // A re-registration replaces the old one (and its observations), keeps the queue.
        let slot = match self.by_endpoint.get(&device) {
            Some(&slot) => {
                self.unlink(now, slot);
                slot
            }
            None => {
                if self.by_endpoint.len() >= self.config.max_registrations {
                    return (Code::SERVICE_UNAVAILABLE, None);
                }
                match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.slots.push(None);
                        self.queues.push(VecDeque::new());
                        (self.slots.len() - 1) as u32
                    }
                }
            }
        };
        let reg_id = loop {
            let id = self.location_rng.next_u64();
            if !self.by_reg_id.contains_key(&id) {
                break id;
            }
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        let expires = now + Duration::from_secs(r.lifetime as u64) + self.config.lifetime_grace;
        let info = RegistrationInfo {
            endpoint: r.endpoint,
            registration_id: location_id(reg_id),
            lifetime: r.lifetime,
            lwm2m_version: r.lwm2m_version,
            binding: r.binding,
            queue_mode: r.queue_mode,
            objects: r.objects,
            address: Some(peer),
            psk_identity: identity.as_ref().map(|i| i.psk_identity.to_string()),
        };
        self.slots[slot as usize] = Some(Registration {
            device: device.clone(),
            info: info.clone(),
            generation,
            reg_id,
            addr: peer,
            expires,
            content_formats: r.content_formats,
            refused: Vec::new(),
            alternate_path: r.alternate_path.map(String::into_boxed_str),
            awake_until: Some(now + self.config.awake_window),
            in_flight: Vec::new(),
            probe: Probe::Idle,
            left: VecDeque::new(),
            displaced: false,
            identity: identity.map(|i| i.psk_identity),
        });
        self.by_endpoint.insert(device.clone(), slot);
        self.displace_holder(now, peer, slot);
        self.by_addr.insert(peer, slot);
        self.by_reg_id.insert(reg_id, slot);
        self.timers
            .push(Reverse((expires, Timer::Expiry { slot, generation })));
        let finished_at = self.bootstrap_registered(now, &info.endpoint);
        self.events.push_back(DeviceEvent::Registered {
            device,
            registration: info,
        });
        self.pump(now, slot);
        // The bootstrap session's Finish, forgotten, held the CoAP NSTART of its address:
        // another registration there may have requests waiting behind it, and no
        // datagram of its device pumps them now (as when a bootstrap request fails).
        if let Some(&other) = finished_at.and_then(|p| self.by_addr.get(&p))
            && other != slot
        {
            self.pump(now, other);
        }
        (Code::CREATED, Some(location_id(reg_id)))
    }

    /// Applies the [`Takeover`] policy to a Register for the live registration in `slot`
    /// from `peer`; `Some(code)` refuses it.
    fn contest(&mut self, now: Instant, slot: u32, peer: SocketAddr) -> Option<Code> {
        let Takeover::ProbeOldAddress { probe_timeout } = self.config.takeover else {
            return None;
        };
        let reg = self.slot(slot)?;
        // Displaced: another device holds its address, and probing it would ask that one.
        if reg.addr == peer || reg.displaced {
            return None;
        }
        // Over DTLS the identity the registration was made with is the proof: the same
        // identity from a new session replaces it at once.
        let same_identity = self.current_identity.as_ref().is_some_and(|i| {
            reg.identity
                .as_deref()
                .is_some_and(|own| own == &*i.psk_identity)
        });
        if same_identity {
            return None;
        }
        let (old, generation, endpoint) = (reg.addr, reg.generation, reg.info.endpoint.clone());
        match reg.probe {
            Probe::InFlight(_) => Some(Code::SERVICE_UNAVAILABLE),
            Probe::Answered { until } if now < until => {
                self.events.push_back(DeviceEvent::Rejected {
                    endpoint,
                    reason: RejectReason::AddressInUse,
                    address: Some(peer),
                });
                Some(Code::FORBIDDEN)
            }
            _ => {
                // Any request does: a live LWM2M client answers it (4.04 or 4.05 at worst).
                let probe = Message::request(Code::GET, "/1");
                let Ok(id) = self.endpoint.send_request(now, old, probe) else {
                    return Some(Code::SERVICE_UNAVAILABLE);
                };
                self.probes.insert(id, (slot, generation));
                if let Some(r) = self.slot_mut(slot) {
                    r.probe = Probe::InFlight(id);
                }
                self.timers.push(Reverse((
                    now + probe_timeout,
                    Timer::Probe { slot, generation },
                )));
                Some(Code::SERVICE_UNAVAILABLE)
            }
        }
    }

    /// The old address answered a takeover probe (a response or an RST), or the
    /// registration's owner sent an Update meanwhile.
    fn probe_answered(&mut self, now: Instant, id: RequestId) {
        let Some((slot, generation)) = self.probes.remove(&id) else {
            return;
        };
        if let Some(r) = self.slot_mut(slot).filter(|r| r.generation == generation) {
            r.probe = Probe::Answered {
                until: now + TAKEOVER_REFUSAL,
            };
        }
    }

    /// The registration in `slot`'s device spoke (an Update, a notification of its own):
    /// a takeover probe of it under way is answered, as if the old address had answered
    /// it. Returns the probe, whose CoAP exchange the caller forgets (with whatever else
    /// must go in the same stroke: see [`Self::fail_in_flight_with`]).
    fn probe_settled(&mut self, now: Instant, slot: u32) -> Option<RequestId> {
        let reg = self.slot_mut(slot)?;
        let Probe::InFlight(id) = reg.probe else {
            return None;
        };
        // Also when the CoAP exchange gave up first (a probe time-out longer than it):
        // the probe timer must not end a registration whose device just spoke.
        reg.probe = Probe::Answered {
            until: now + TAKEOVER_REFUSAL,
        };
        self.probes.remove(&id);
        Some(id)
    }

    fn update(&mut self, now: Instant, peer: SocketAddr, id: &str, u: UpdateRequest) -> Code {
        let Some(&slot) = parse_location_id(id).and_then(|n| self.by_reg_id.get(&n)) else {
            return Code::NOT_FOUND;
        };
        if !self.owns(slot, peer) {
            return Code::FORBIDDEN;
        }
        let grace = self.config.lifetime_grace;
        let awake = now + self.config.awake_window;
        let Some(reg) = self.slot_mut(slot) else {
            return Code::NOT_FOUND;
        };
        if let Some(lt) = u.lifetime {
            reg.info.lifetime = lt;
        }
        if let Some(b) = u.binding {
            reg.info.binding = b;
        }
        // LwM2M 1.0 says queue mode in the binding (`UQ`), so an Update's binding sets
        // it either way; 1.1 says it with the Register's `Q` flag and has no `Q` binding,
        // so a 1.1 Update's `b=U` leaves it on.
        if let Some(q) = u.queue_mode
            && (q || reg.info.lwm2m_version.starts_with("1.0"))
        {
            reg.info.queue_mode = q;
        }
        if let Some(objects) = u.objects {
            reg.info.objects = objects;
        }
        if let Some(cts) = u.content_formats {
            reg.content_formats = cts;
            reg.refused.clear();
        }
        reg.expires = now + Duration::from_secs(reg.info.lifetime as u64) + grace;
        reg.awake_until = Some(awake);
        let (expires, generation) = (reg.expires, reg.generation);
        // NAT rebinding (or a client that updates from a fresh port): follow it. The
        // registration's owner is alive: a takeover probe under way is answered.
        self.follow_address(now, slot, peer);
        let Some(reg) = self.slot(slot) else {
            return Code::NOT_FOUND;
        };
        let event = DeviceEvent::RegistrationUpdated {
            device: reg.device.clone(),
            registration: reg.info.clone(),
        };
        self.timers
            .push(Reverse((expires, Timer::Expiry { slot, generation })));
        self.events.push_back(event);
        self.pump(now, slot);
        Code::CHANGED
    }

    /// Moves the registration in `slot` to `peer` (NAT rebinding: an Update, or a
    /// notification of one of its observations, from a new address). Requests in flight
    /// to the old address fail now ([`DeviceError::RegistrationEnded`]), before the move
    /// is reported, as at the registration's end (see the module docs): retransmitted
    /// there they would reach nobody, or whoever holds the address now, for up to 93 s
    /// while the queue waits behind them (NSTART). Its observations follow it: their
    /// notifications are taken from `peer` only, and their cancels go there (only
    /// registered observations are moved: an observe request not answered yet is in
    /// flight, and fails with the others). An observation the CoAP endpoint cannot move
    /// (its peer table is full) ends ([`DeviceEvent::ObservationEnded`], the hub
    /// observes again).
    ///
    /// The device spoke (its Update, or a notification the token proves its own), from
    /// wherever: a takeover probe of the registration under way is answered
    /// ([`TAKEOVER_REFUSAL`]), and its CoAP exchange ends with it, in the same stroke as
    /// the requests stranded at the old address. Left to run, it was retransmitted to
    /// the address left for the whole exchange (about 45 s), to whichever device has that
    /// address next, and held the CoAP NSTART slot there, so that device's first request,
    /// reported [`DeviceEvent::Sent`], waited behind it; at the same address, the
    /// registration's own requests waited behind it the same way.
    fn follow_address(&mut self, now: Instant, slot: u32, peer: SocketAddr) {
        let probe = self.probe_settled(now, slot);
        let Some(reg) = self.slot(slot) else {
            return;
        };
        let (old, displaced) = (reg.addr, reg.displaced);
        if old == peer && !displaced {
            // The device is where the probe went: nothing else of it is to be left.
            self.endpoint.forget_requests(now, probe);
            return;
        }
        self.displace_holder(now, peer, slot);
        let Some(reg) = self.slot_mut(slot) else {
            return;
        };
        reg.displaced = false;
        if old == peer {
            // Back at the address it was displaced from: the device speaks from it.
            reg.info.address = Some(peer);
            self.by_addr.insert(peer, slot);
            self.endpoint.forget_requests(now, probe);
            return;
        }
        let stranded = std::mem::take(&mut reg.in_flight);
        reg.addr = peer;
        // Remember the address left (not the one come back to: the device speaks from
        // it), within the bounds.
        reg.left.retain(|&(a, at)| {
            a != peer && a != old && now.saturating_duration_since(at) < LEFT_ADDRESS_MEMORY
        });
        if reg.left.len() >= MAX_LEFT_ADDRESSES {
            reg.left.pop_front();
        }
        reg.left.push_back((old, now));
        reg.info.address = Some(peer);
        let generation = reg.generation;
        if self.by_addr.get(&old) == Some(&slot) {
            self.by_addr.remove(&old);
        }
        self.by_addr.insert(peer, slot);
        // Together: forgetting the requests alone would start a probe queued behind them
        // (NSTART), to the address left.
        self.fail_in_flight_with(now, stranded, probe.into_iter().collect());
        let mut moving: Vec<RequestId> = self
            .observations
            .iter()
            .filter(|(_, o)| o.slot == slot && o.generation == generation)
            .map(|(id, _)| *id)
            .collect();
        // Oldest first, so that what the hub sees does not depend on hash order.
        moving.sort_unstable();
        let mut lost = Vec::new();
        for id in moving {
            if !self.endpoint.move_request(now, id, peer) {
                lost.push(id);
            }
        }
        // Forgotten once all that can move has moved: forgetting starts what waits in the
        // old address's queue, which must not be one of these.
        self.endpoint.forget_requests(now, lost.iter().copied());
        for id in lost {
            self.observation_ended(id, ObservationEndCause::Dropped);
        }
    }

    /// `peer` is now the registration in `slot`'s (a Register or an Update from it: its
    /// device is there). Another live registration that held the address loses it (a
    /// NAT gave the port to another device, or a device restarted there as another
    /// endpoint): its requests in flight there fail now
    /// ([`DeviceError::RegistrationEnded`]; retransmitted, they would reach the device
    /// now at the address), and nothing more is sent to it (its requests wait in its
    /// queue, [`ServerConfig::queue_timeout`]) until its device talks from where it is
    /// now: an Update or a notification from a new address moves it there, a fresh
    /// notification from this address once no one holds it takes it back
    /// ([`Self::reclaim_address`]), a Register replaces it without a takeover probe
    /// (which would ask the other device).
    fn displace_holder(&mut self, now: Instant, peer: SocketAddr, slot: u32) {
        let Some(&other) = self.by_addr.get(&peer) else {
            return;
        };
        if other == slot {
            return;
        }
        self.by_addr.remove(&peer);
        let Some(reg) = self.slot_mut(other).filter(|r| r.addr == peer) else {
            return;
        };
        reg.displaced = true;
        // Its view says so too: the address is the other device's now (the server keeps
        // it as `reg.addr`, to take it back should its device talk from there again).
        reg.info.address = None;
        // A takeover probe of the address would now ask the other device: it ends, and
        // the registration's own device is let in when it registers from where it is.
        let probe = std::mem::replace(&mut reg.probe, Probe::Idle);
        let stranded = std::mem::take(&mut reg.in_flight);
        let displaced = DeviceEvent::Displaced {
            device: reg.device.clone(),
            registration_id: reg.info.registration_id.clone(),
        };
        self.events.push_back(displaced);
        let mut also = Vec::new();
        if let Probe::InFlight(id) = probe {
            self.probes.remove(&id);
            also.push(id);
        }
        // Together: forgetting the probe alone would start the registration's request
        // queued behind it, to the device that took the address.
        self.fail_in_flight_with(now, stranded, also);
    }

    /// A fresh notification of the registration in `slot` came from its own address (the
    /// endpoint matched it to the observation made there, and took it as newer than the
    /// last): when the registration was displaced from that address and no registration
    /// holds it now, its device is talking from there again, so it takes the address back
    /// and its queued requests go (over DTLS only from the registration's identity).
    fn reclaim_address(&mut self, slot: u32) {
        let Some(reg) = self.slot(slot) else {
            return;
        };
        if !reg.displaced
            || self.by_addr.contains_key(&reg.addr)
            || !identity_owns(reg, self.current_identity.as_ref())
        {
            return;
        }
        let addr = reg.addr;
        if let Some(reg) = self.slot_mut(slot) {
            reg.displaced = false;
            // The address is the registration's again (it lost it with `Displaced`); no
            // Update: nothing else the registration holds changed.
            reg.info.address = Some(addr);
            let back = DeviceEvent::AddressChanged {
                device: reg.device.clone(),
                registration: reg.info.clone(),
            };
            self.events.push_back(back);
        }
        self.by_addr.insert(addr, slot);
    }

    /// Whether the datagram being handled answers for a registration made under another
    /// identity than the one it came with (over DTLS: a session of another identity now
    /// at the device's address, or a token known to another device). A response or
    /// notification is matched to its request by token, and must come from the identity
    /// of the registration the request went to (a CON or NON one whose token is no
    /// request's or observation's of the server's answers for nobody: the endpoint
    /// rejects it with RST, whoever sent it); an empty ACK or RST (matched by message
    /// id) from that of the registration at the address; an answer, empty ACK or RST of a
    /// bootstrap session's request from the identity that asked for the bootstrap (a
    /// device that bootstraps again from where it registered, through its bootstrap
    /// identity: an LwM2M 1.0 client resets Bootstrap-Discover). Requests are the registration
    /// interface's, which checks its sender itself. A notification of an observation
    /// made at another address (NAT rebinding, [`Self::rebinding_notification`]) is
    /// judged by that observation's registration, not by the one at the address it came
    /// from: two devices that swapped ports behind a NAT notify, each through its own
    /// identity, from the address the other registered at. So is a stale one (a
    /// retransmission from the new address of a notification taken at the old one, its
    /// ACK lost): the endpoint acknowledges it, else the device would drop the
    /// observation when its retransmissions time out (RFC 7641 §4.5). Over plain CoAP
    /// every registration is of no identity, and every datagram comes with none: nothing
    /// is refused here.
    fn answer_from_stranger(&self, peer: SocketAddr, bytes: &[u8]) -> bool {
        let (Some(&first), Some(&code)) = (bytes.first(), bytes.get(1)) else {
            return false;
        };
        if first >> 6 != 1 || (code >> 5 == 0 && code != 0) {
            return false;
        }
        let answered = self
            .endpoint
            .answered_request(peer, bytes)
            .or_else(|| self.endpoint.observed_elsewhere(peer, bytes));
        // A bootstrap session's request (answered, or an empty ACK or RST of it) counts
        // only through a session of the identity that asked, as it leaves only through one
        // (`may_send`). Before, any session's answer moved the bootstrap on.
        let bootstrap = answered
            .or_else(|| self.endpoint.acknowledged_request(peer, bytes))
            .filter(|&id| self.bootstraps.owns(id));
        if let Some(id) = bootstrap {
            return self.bootstraps.identity_of(id) != Some(self.current_identity.as_ref());
        }
        let slot = match answered {
            Some(id) => {
                let of = self
                    .outstanding
                    .get(&id)
                    .map(|o| (o.slot, o.generation))
                    .or_else(|| self.observations.get(&id).map(|o| (o.slot, o.generation)))
                    .or_else(|| self.probes.get(&id).copied());
                of.and_then(|(slot, generation)| {
                    self.slot(slot)
                        .filter(|r| r.generation == generation)
                        .map(|_| slot)
                })
            }
            // A CON or NON response that answers nothing of the server's (no request or
            // observation carries its token, at this address or another): nobody's
            // answer, whatever registration holds the address. The endpoint rejects it
            // with RST, back through the session it came by (RFC 7641 §3.6: a
            // notification the client has no interest in, of an observation that ended,
            // so that the device stops sending it), and nothing else changes. Before, it
            // was judged by the registration at the address, and one through another
            // identity's session was dropped unseen: the device kept notifying.
            None if (first >> 4) & 3 <= 1 && code != 0 => return false,
            // An empty ACK or RST (matched by message id): the registration at the
            // address's.
            None => self.by_addr.get(&peer).copied(),
        };
        slot.and_then(|slot| self.slot(slot))
            .is_some_and(|reg| !identity_owns(reg, self.current_identity.as_ref()))
    }

    /// NAT rebinding seen first in a notification (RFC 7641 notifications may come
    /// before any Update): a datagram from `peer` that notifies an observation of a
    /// registration at another address. It moves the
    /// registration there as an Update from the new address would (without refreshing
    /// its lifetime, which only an Update does), when it comes from the registration's
    /// identity (DTLS) or from none for a plain registration: the observation's token,
    /// a random 64-bit number only the device and the server know, is the proof, as the
    /// location is for an Update. From an address another registration holds, that one
    /// is displaced, as by an Update from there (its device is no longer at the
    /// address: NAT gave the port away, or two devices swapped). From another identity,
    /// nothing changes (it never gets here: `answer_from_stranger` drops it unseen). From
    /// an address the registration left less than
    /// [`LEFT_ADDRESS_MEMORY`] ago, nothing moves: the device sent it before the
    /// rebinding and it arrived late; it is acknowledged if CON and dropped (an error
    /// response ends the observation). Called before the endpoint sees the datagram;
    /// true when it took the datagram (the endpoint must not see it).
    fn rebinding_notification(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) -> bool {
        let Some(id) = self.endpoint.observation_elsewhere(now, peer, bytes) else {
            return false;
        };
        let Some(&Observation {
            slot, generation, ..
        }) = self.observations.get(&id)
        else {
            return false;
        };
        let Some(reg) = self.slot(slot).filter(|r| r.generation == generation) else {
            return false;
        };
        if !identity_owns(reg, self.current_identity.as_ref()) {
            return false;
        }
        let left_lately = reg
            .left
            .iter()
            .any(|&(a, at)| a == peer && now.saturating_duration_since(at) < LEFT_ADDRESS_MEMORY);
        if left_lately {
            // Sent before the rebinding, arrived late: moving back would send the
            // device's requests to an address it left. Not RST either (the device
            // would drop an observation that works at its new address).
            if Message::decode(bytes).is_ok_and(|m| !m.code.is_success()) {
                // The device ended the observation (before it moved): so be it.
                self.endpoint.forget_request(now, id);
                self.observation_ended(id, ObservationEndCause::EndedByDevice);
            }
            self.endpoint.acknowledge_and_drop(now, peer, bytes);
            return true;
        }
        // From an address another registration holds: the token (and over DTLS the
        // identity) says this device is there now, so that registration's device is not
        // (NAT gave its port away, or the two swapped): it is displaced, as by an Update
        // from there (`follow_address`), and nothing of it goes to this device.
        // The registration's owner is alive: a takeover probe under way is answered
        // (`follow_address`).
        self.follow_address(now, slot, peer);
        // No Update: the lifetime is not refreshed and nothing the device announced
        // changed, so it is reported as a move, as a displaced registration's taking its
        // address back is (`reclaim_address`). Reported as an Update, the hub published a
        // lifecycle `updated` event for an Update the device never sent.
        if let Some(reg) = self.slot(slot) {
            self.events.push_back(DeviceEvent::AddressChanged {
                device: reg.device.clone(),
                registration: reg.info.clone(),
            });
        }
        false
    }

    /// Whether the datagram being handled comes from the identity the registration in
    /// `slot` was made with, still bound to the registration's device (plain
    /// registrations: from no identity). An identity name moved to another device since
    /// does not own the registration. Emits a rejection if not.
    fn owns(&mut self, slot: u32, peer: SocketAddr) -> bool {
        let Some(reg) = self.slot(slot) else {
            return false;
        };
        if identity_owns(reg, self.current_identity.as_ref()) {
            return true;
        }
        let endpoint = reg.info.endpoint.clone();
        self.events.push_back(DeviceEvent::Rejected {
            endpoint,
            reason: RejectReason::IdentityMismatch,
            address: Some(peer),
        });
        false
    }

    fn deregister(&mut self, now: Instant, peer: SocketAddr, id: &str) -> Code {
        let Some(&slot) = parse_location_id(id).and_then(|n| self.by_reg_id.get(&n)) else {
            return Code::NOT_FOUND;
        };
        if !self.owns(slot, peer) {
            return Code::FORBIDDEN;
        }
        if let Some(device) = self.remove(now, slot) {
            self.events.push_back(DeviceEvent::Deregistered { device });
        }
        Code::DELETED
    }

    /// Drops a registration's indexes and observations, and fails its requests in
    /// flight ([`DeviceError::RegistrationEnded`]); keeps the slot and queue.
    fn unlink(&mut self, now: Instant, slot: u32) {
        let Some(reg) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.by_endpoint.remove(&reg.device);
        if self.by_addr.get(&reg.addr) == Some(&slot) {
            self.by_addr.remove(&reg.addr);
        }
        self.by_reg_id.remove(&reg.reg_id);
        let gone: Vec<RequestId> = self
            .observations
            .iter()
            .filter(|(_, o)| o.slot == slot && o.generation == reg.generation)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            // The next notification gets RST, which ends it on the device too.
            self.observations.remove(id);
        }
        // A takeover probe still out goes too: left to run, it would keep retransmitting
        // to the old address, ahead of the requests of the next device there.
        let mut gone = gone;
        if let Probe::InFlight(id) = reg.probe {
            self.probes.remove(&id);
            gone.push(id);
        }
        // Requests in flight under the registration fail now, not when the CoAP exchange
        // gives up (up to 93 s later), and are not retransmitted: the device that gets a
        // late retransmission may be another one behind the old address, and a new
        // registration's requests go one at a time (NSTART) from here. Oldest first; the
        // registration's own list, not a scan of every request outstanding. All are
        // forgotten at once, so that none waiting in the endpoint's queue is sent first.
        self.fail_in_flight_with(now, reg.in_flight, gone);
    }

    /// Fails requests sent and not yet answered with
    /// [`DeviceError::RegistrationEnded`] (oldest first) and stops their retransmission,
    /// forgetting `also` (observations, a takeover probe) in the same stroke: forgetting one request starts the next in the endpoint's queue for
    /// its peer, which could be another of these (sent to an address being left, perhaps
    /// to another device) before it was forgotten in turn.
    fn fail_in_flight_with(
        &mut self,
        now: Instant,
        in_flight: Vec<RequestId>,
        mut also: Vec<RequestId>,
    ) {
        for id in in_flight {
            let Some(o) = self.outstanding.remove(&id) else {
                continue;
            };
            also.push(id);
            self.events.push_back(DeviceEvent::Response {
                op: o.op,
                device: o.device,
                result: Err(DeviceError::RegistrationEnded),
            });
        }
        self.endpoint.forget_requests(now, also);
    }

    /// Removes a registration entirely; its requests in flight fail with
    /// RegistrationEnded (see [`Self::unlink`]), its queued operations (never sent) with
    /// NotRegistered.
    fn remove(&mut self, now: Instant, slot: u32) -> Option<DeviceId> {
        let device = self.slot(slot)?.device.clone();
        self.unlink(now, slot);
        let queued: Vec<Queued> = self.queues[slot as usize].drain(..).collect();
        for q in queued {
            self.events.push_back(DeviceEvent::Response {
                op: q.op.id,
                device: q.op.device,
                result: Err(DeviceError::NotRegistered),
            });
        }
        self.free.push(slot);
        Some(device)
    }

    /// [`DeviceRequest::EndRegistration`]: the registration in `slot` ends if it is the one
    /// named (the device's Updates then get 4.04 and it registers again).
    fn end_registration(&mut self, now: Instant, slot: u32, op: DeviceOp, registration_id: &str) {
        let held = self
            .slot(slot)
            .is_some_and(|r| r.info.registration_id == registration_id);
        if !held {
            return self.fail(op, DeviceError::NotRegistered);
        }
        self.remove(now, slot);
        self.drain_endpoint(now);
        self.events.push_back(DeviceEvent::Response {
            op: op.id,
            device: op.device,
            result: Ok(DeviceReply::Done),
        });
    }

    fn device_talked(&mut self, now: Instant, slot: u32) {
        let window = self.config.awake_window;
        if let Some(reg) = self.slot_mut(slot) {
            reg.awake_until = Some(now + window);
        }
        self.pump(now, slot);
    }

    /// Forgets an observation that ended on its own and tells whoever established it
    /// who ended it (`cause`).
    fn observation_ended(&mut self, id: RequestId, cause: ObservationEndCause) -> bool {
        let Some(o) = self.observations.remove(&id) else {
            return false;
        };
        self.events.push_back(DeviceEvent::ObservationEnded {
            device: o.device,
            path: o.path,
            op: o.op,
            cause,
        });
        true
    }

    fn handle_notification(&mut self, id: RequestId, m: &Message) {
        let Some(obs) = self.observations.get(&id) else {
            return;
        };
        if m.code.class() != 2 {
            // An error ends the observation (RFC 7641 §3.2).
            self.observation_ended(id, ObservationEndCause::EndedByDevice);
            return;
        }
        let (device, path, slot) = (obs.device.clone(), obs.path, obs.slot);
        // An observation goes with its registration: the one it was made under is live.
        let Some(registration_id) = self
            .slot(slot)
            .filter(|r| r.generation == obs.generation)
            .map(|r| r.info.registration_id.clone())
        else {
            return;
        };
        self.reclaim_address(slot);
        // A notification we cannot decode carries nothing the hub can use.
        let Ok(mut content) = self.decode(m, &path) else {
            return;
        };
        let scope = self
            .observations
            .get(&id)
            .and_then(|o| o.composite.as_deref())
            .unwrap_or(std::slice::from_ref(&path));
        self.values_outside_path += keep_within(&mut content, scope);
        self.events.push_back(DeviceEvent::Notification {
            device,
            registration_id,
            path,
            content,
        });
    }

    /// Decodes an answer to a request for `path` and keeps only the values at or below
    /// one of `scope` (the path itself, or a composite request's paths): a device may
    /// write only where it was asked (counted in
    /// [`values_outside_path`](Self::values_outside_path)).
    fn decode_within(
        &mut self,
        m: &Message,
        path: &Lwm2mPath,
        scope: &[Lwm2mPath],
    ) -> Result<Content, DeviceError> {
        let mut content = self.decode(m, path)?;
        self.values_outside_path += keep_within(&mut content, scope);
        Ok(content)
    }

    fn decode(&self, m: &Message, path: &Lwm2mPath) -> Result<Content, DeviceError> {
        // No Content-Format: plain text (lwm2m-node-lib answers so).
        let cf = match m.content_format() {
            None => ContentFormat::Text,
            Some(n) => {
                ContentFormat::from_code(n.0).ok_or(DeviceError::UnsupportedContentFormat)?
            }
        };
        if m.payload.is_empty() && cf.canonical() != ContentFormat::Opaque {
            // Text that says it is text, for one resource, is a value even when empty: a
            // string resource's "" (an opaque one's no bytes); types that have no empty
            // text form (numbers, booleans, links) still decode to nothing.
            if m.content_format().is_some()
                && cf.canonical() == ContentFormat::Text
                && path.depth() >= 3
                && let Ok(c) = content::decode(cf, &m.payload, path, &*self.types)
            {
                return Ok(c);
            }
            return Ok(Content::default());
        }
        content::decode(cf, &m.payload, path, &*self.types)
            .map_err(|e| DeviceError::BadPayload(e.to_string()))
    }

    /// The (final) response to a request we sent: emit its outcome.
    fn handle_response(&mut self, now: Instant, id: RequestId, m: &Message) {
        if self.observation_ended(id, ObservationEndCause::EndedByDevice) {
            // The final answer of an observation (an error, or one without Observe).
            return;
        }
        let Some(o) = self.finish(now, id) else {
            return;
        };
        let refused = matches!(
            (m.code.class(), m.code.detail(), &o.request),
            (
                4,
                6,
                DeviceRequest::Read { .. } | DeviceRequest::Observe { .. }
            ) | (
                4,
                15,
                DeviceRequest::Write { .. } | DeviceRequest::Create { .. }
            ) | (
                4,
                6 | 15,
                DeviceRequest::ReadComposite { .. }
                    | DeviceRequest::ObserveComposite { .. }
                    | DeviceRequest::WriteComposite { .. }
            )
        );
        if refused && self.fall_back(now, &o) {
            return;
        }
        // 2.31 Continue is no outcome (RFC 7959 §2.9.1): the endpoint takes it inside a
        // Block1 upload; one reaching here is an answer that says nothing was done.
        let result = if m.code.class() == 2 && m.code != Code::CONTINUE {
            self.reply(now, &o, m, id)
        } else {
            Err(match (m.code.class(), m.code.detail()) {
                (4, 0) => DeviceError::BadRequest,
                (4, 1) => DeviceError::Unauthorized,
                (4, 4) => DeviceError::NotFound,
                (4, 5) => DeviceError::MethodNotAllowed,
                (4, 6) => DeviceError::NotAcceptable,
                (4, 15) => DeviceError::UnsupportedContentFormat,
                (c, d) => DeviceError::Code(c, d),
            })
        };
        self.events.push_back(DeviceEvent::Response {
            op: o.op,
            device: o.device,
            result,
        });
    }

    fn handle_failure(&mut self, now: Instant, id: RequestId, error: RequestError) {
        let cause = match error {
            RequestError::Reset => ObservationEndCause::Reset,
            RequestError::TimedOut => ObservationEndCause::TimedOut,
            _ => ObservationEndCause::Dropped,
        };
        let observed = self.observations.get(&id).map(|o| o.slot);
        if self.observation_ended(id, cause) {
            // A notification's block-wise follow-up failed: the address is free for the
            // registration's requests.
            if let Some(slot) = observed {
                self.pump(now, slot);
            }
            return;
        }
        let Some(o) = self.finish(now, id) else {
            return;
        };
        let event = match error {
            RequestError::TimedOut => DeviceEvent::TimedOut {
                op: o.op,
                device: o.device,
            },
            other => DeviceEvent::Response {
                op: o.op,
                device: o.device,
                result: Err(match other {
                    // The device rejected the message outright (RST).
                    RequestError::Reset => DeviceError::Reset,
                    e => DeviceError::BadPayload(e.to_string()),
                }),
            },
        };
        self.events.push_back(event);
    }

    fn reply(
        &mut self,
        now: Instant,
        o: &Outstanding,
        m: &Message,
        id: RequestId,
    ) -> Result<DeviceReply, DeviceError> {
        match &o.request {
            DeviceRequest::Read { path } => self
                .decode_within(m, path, &[*path])
                .map(DeviceReply::Content),
            DeviceRequest::ReadComposite { paths } => self
                .decode_within(m, &Lwm2mPath::ROOT, paths)
                .map(DeviceReply::Content),
            DeviceRequest::Observe { .. } | DeviceRequest::ObserveComposite { .. } => {
                let path = o.request.path();
                let composite = match &o.request {
                    DeviceRequest::ObserveComposite { paths } => Some(paths.clone()),
                    _ => None,
                };
                let scope = composite.clone().unwrap_or_else(|| vec![*path]);
                let content = self.decode_within(m, path, &scope);
                // No Observe option in the answer: the device declined to observe.
                if m.observe().is_some() {
                    if content.is_ok() {
                        self.observations.insert(
                            id,
                            Observation {
                                slot: o.slot,
                                generation: o.generation,
                                device: o.device.clone(),
                                path: *path,
                                composite,
                                op: o.op,
                            },
                        );
                    } else {
                        self.endpoint.forget_request(now, id);
                    }
                } else if content.is_ok() {
                    // Declined: the values are there, the observation is not.
                    self.events.push_back(DeviceEvent::ObservationEnded {
                        device: o.device.clone(),
                        path: *path,
                        op: o.op,
                        cause: ObservationEndCause::Declined,
                    });
                }
                content.map(DeviceReply::Content)
            }
            DeviceRequest::Discover { .. } => Ok(DeviceReply::Links(
                String::from_utf8(m.payload.clone())
                    .map_err(|_| DeviceError::BadPayload("discover answer is not utf-8".into()))?,
            )),
            DeviceRequest::Create { path, content } => {
                let from_location = m
                    .location_path()
                    .map(|s| s.parse::<u16>().ok())
                    .collect::<Option<Vec<u16>>>()
                    .and_then(|ids| Lwm2mPath::from_ids(&ids).ok())
                    .filter(|p| p.depth() == 2);
                let guess = if path.depth() >= 2 {
                    Lwm2mPath::from_ids(&path.ids()[..2]).ok()
                } else {
                    content
                        .values
                        .first()
                        .and_then(|(p, _)| Lwm2mPath::from_ids(&p.ids()[..2]).ok())
                };
                Ok(DeviceReply::Created(
                    from_location.or(guess).unwrap_or(*path),
                ))
            }
            _ => Ok(DeviceReply::Done),
        }
    }

    /// Forgets an outstanding request and lets the device's next operation go.
    fn finish(&mut self, now: Instant, id: RequestId) -> Option<Outstanding> {
        let o = self.outstanding.remove(&id)?;
        let live = self
            .slot_mut(o.slot)
            .filter(|r| r.generation == o.generation)
            .map(|r| r.in_flight.retain(|&sent| sent != id))
            .is_some();
        if live {
            self.pump(now, o.slot);
        }
        Some(o)
    }

    // ---------------------------------------------------------------- operations out

    /// Sends queued operations while the device is reachable and below NSTART.
    fn pump(&mut self, now: Instant, slot: u32) {
        loop {
            let nstart = self.config.nstart;
            let Some(reg) = self.slot(slot) else { return };
            let awake = !reg.info.queue_mode || reg.awake_until.is_some_and(|t| t > now);
            // Behind DTLS, only through a session of the registration's identity (the
            // layer would drop anything else): another device's session at the address
            // is none for this one.
            let session = self.sessions.as_ref().is_none_or(|s| {
                s.get(&reg.addr)
                    .is_some_and(|identity| identity_owns(reg, Some(identity)))
            });
            // Only what the CoAP endpoint sends at once, so that `Sent` means the request
            // left: not while the address has a request of the endpoint's waiting or
            // unacknowledged beyond its own NSTART (a takeover probe of the address, a
            // notification's block-wise follow-up, or this registration's requests when
            // `nstart` is above the endpoint's). Whatever ends that (an answer from the
            // address, the probe's, follow-up's or a bootstrap request's failure) pumps
            // again.
            if !awake
                || !session
                || reg.displaced
                || reg.in_flight.len() >= nstart
                || !self.endpoint.would_send_now(reg.addr)
            {
                return;
            }
            let Some(q) = self.queues[slot as usize].pop_front() else {
                return;
            };
            self.dispatch(now, slot, q);
        }
    }

    /// Reports that `op` left for its device.
    fn sent(&mut self, op: &DeviceOp) {
        self.events.push_back(DeviceEvent::Sent {
            op: op.id,
            device: op.device.clone(),
        });
    }

    fn fail(&mut self, op: DeviceOp, error: DeviceError) {
        self.events.push_back(DeviceEvent::Response {
            op: op.id,
            device: op.device,
            result: Err(error),
        });
    }

    /// Hands `op` to the CoAP endpoint, which transmits it (within the peer's CoAP NSTART;
    /// the server's own per-device NSTART keeps that bound). `first`: its first
    /// transmission (not `resent`), reported as [`DeviceEvent::Sent`].
    fn dispatch(&mut self, now: Instant, slot: u32, q: Queued) {
        let Queued {
            op,
            deadline,
            seq,
            resent,
        } = q;
        let first = !resent;
        let queued = (deadline, seq);
        let Some(reg) = self.slot(slot) else { return };
        let (peer, generation) = (reg.addr, reg.generation);
        let cancels: Option<(Lwm2mPath, Option<&[Lwm2mPath]>)> = match &op.request {
            DeviceRequest::CancelObserve { path } => Some((*path, None)),
            DeviceRequest::CancelObserveComposite { paths } => {
                Some((Lwm2mPath::ROOT, Some(paths.as_slice())))
            }
            _ => None,
        };
        if let Some((path, composite)) = cancels {
            let same_paths = |o: &Observation| match (composite, &o.composite) {
                (None, None) => true,
                (Some(want), Some(have)) => {
                    want.iter().all(|p| have.contains(p)) && have.iter().all(|p| want.contains(p))
                }
                _ => false,
            };
            // The newest observation of the path: whoever observed it last (a job, over
            // the hub's own sync observation) is the one that cancels.
            let observed = self
                .observations
                .iter()
                .filter(|(_, o)| {
                    o.slot == slot && o.generation == generation && o.path == path && same_paths(o)
                })
                .map(|(id, _)| *id)
                .max();
            if let Some(id) = observed {
                // RFC 7641 §3.6: GET Observe=1 on the observation's own token; its answer
                // is the final response of that request, which now belongs to the cancel.
                // Whoever established it hears that it ended (a job cancelling its own
                // observation of a path the hub also observes may end the hub's).
                self.observation_ended(id, ObservationEndCause::Cancelled);
                if self.endpoint.cancel_observation(now, id) {
                    if first {
                        self.sent(&op);
                    }
                    self.track(slot, generation, id, op, None, queued);
                    return;
                }
            }
        }
        let (message, format) = match self.build_request(slot, &op.request) {
            Ok(m) => m,
            Err(e) => return self.fail(op, e),
        };
        match self.endpoint.send_request(now, peer, message) {
            Ok(id) => {
                if first {
                    self.sent(&op);
                }
                self.track(slot, generation, id, op, format, queued)
            }
            // The CoAP layer is at one of its bounds: the request cannot wait anywhere.
            Err(
                SendError::TooManyRequests | SendError::PeerQueueFull | SendError::TooManyPeers,
            ) => self.fail(op, DeviceError::QueueFull),
            Err(e) => self.fail(op, DeviceError::BadPayload(e.to_string())),
        }
    }

    fn track(
        &mut self,
        slot: u32,
        generation: u64,
        id: RequestId,
        op: DeviceOp,
        format: Option<ContentFormat>,
        (deadline, seq): (Instant, u64),
    ) {
        self.outstanding.insert(
            id,
            Outstanding {
                op: op.id,
                device: op.device,
                slot,
                generation,
                request: op.request,
                format,
                deadline,
                seq,
            },
        );
        if let Some(reg) = self.slot_mut(slot)
            && reg.generation == generation
        {
            reg.in_flight.push(id);
        }
    }

    /// The content format for a write of `content` at `path` to this device: text (or
    /// opaque) for one value at the path itself, which every client speaks; otherwise
    /// the best multi-value format the device takes ([`Self::formats`]). When it has
    /// refused them all, the last one again (its refusal then reaches the caller).
    fn write_format(reg: &Registration, path: &Lwm2mPath, content: &Content) -> ContentFormat {
        if let [(p, v)] = content.values.as_slice()
            && p == path
        {
            return match v {
                ResourceValue::Opaque(_) => ContentFormat::Opaque,
                _ => ContentFormat::Text,
            };
        }
        let mut all = Self::formats(reg);
        all.iter()
            .copied()
            .find(|f| !reg.refused.contains(f))
            .or_else(|| all.pop())
            .unwrap_or(ContentFormat::Tlv)
    }

    /// The Accept of a read or observe of `path`: the best format the device takes and has
    /// not refused. `None` (the device chooses) when it refused them all, and for a
    /// resource read on an LWM2M 1.0 device that announced nothing: such a device
    /// answers one value in text and several in TLV on its own, and some (lwm2m-node-lib)
    /// drop a request whose Accept they do not know.
    fn read_accept(reg: &Registration, path: &Lwm2mPath) -> Option<ContentFormat> {
        if reg.content_formats.is_empty() && !Self::is_1_1(reg) && path.depth() >= 3 {
            return None;
        }
        Self::formats(reg)
            .into_iter()
            .find(|f| !reg.refused.contains(f))
    }

    /// The formats of a composite request's body and answer, best first: SenML CBOR and
    /// SenML JSON (LWM2M 1.1 §5.4.5 allows these two for the path list), those the device
    /// announced when it announced any of them, else both.
    fn composite_formats(reg: &Registration) -> Vec<ContentFormat> {
        const SENML: [ContentFormat; 2] = [ContentFormat::SenmlCbor, ContentFormat::SenmlJson];
        let announced: Vec<ContentFormat> = SENML
            .into_iter()
            .filter(|f| reg.content_formats.contains(&f.code()))
            .collect();
        if announced.is_empty() {
            SENML.to_vec()
        } else {
            announced
        }
    }

    /// The composite format to use now: the best not refused, else the last (its refusal
    /// then reaches the caller).
    fn composite_format(reg: &Registration) -> ContentFormat {
        let mut all = Self::composite_formats(reg);
        all.iter()
            .copied()
            .find(|f| !reg.refused.contains(f))
            .or_else(|| all.pop())
            .unwrap_or(ContentFormat::SenmlJson)
    }

    fn is_1_1(reg: &Registration) -> bool {
        reg.info.lwm2m_version.as_str() >= "1.1"
    }

    /// The multi-value formats this device takes, best first.
    ///
    /// Our order of preference: SenML CBOR (112), LwM2M CBOR (11544), SenML JSON (110),
    /// TLV (11542, then the pre-standard 1542), LwM2M JSON (11543, then 1543): compact and
    /// typed first.
    ///
    /// - The device announced formats (`ct`): those of them we decode, in our order; an
    ///   LWM2M 1.0 device also takes TLV, which 1.0 makes mandatory.
    /// - It announced nothing, LWM2M 1.1: SenML CBOR, SenML JSON, TLV. 1.1 makes none of
    ///   them mandatory on its own (a client needs at least one of them, and plain text
    ///   and opaque for single values), so the hub asks for the best and falls back on
    ///   4.06 Not Acceptable / 4.15 Unsupported Content-Format to the next.
    /// - It announced nothing, LWM2M 1.0: TLV.
    fn formats(reg: &Registration) -> Vec<ContentFormat> {
        const ORDER: [ContentFormat; 7] = [
            ContentFormat::SenmlCbor,
            ContentFormat::Lwm2mCbor,
            ContentFormat::SenmlJson,
            ContentFormat::Tlv,
            ContentFormat::OldTlv,
            ContentFormat::Lwm2mJson,
            ContentFormat::OldJson,
        ];
        let one_one = Self::is_1_1(reg);
        if reg.content_formats.is_empty() {
            return if one_one {
                vec![
                    ContentFormat::SenmlCbor,
                    ContentFormat::SenmlJson,
                    ContentFormat::Tlv,
                ]
            } else {
                vec![ContentFormat::Tlv]
            };
        }
        let mut out: Vec<ContentFormat> = ORDER
            .into_iter()
            .filter(|f| reg.content_formats.contains(&f.code()))
            .collect();
        if !one_one && !out.contains(&ContentFormat::Tlv) && !out.contains(&ContentFormat::OldTlv) {
            out.push(ContentFormat::Tlv);
        }
        out
    }

    /// A device refused the format `o` carried (4.06 to its Accept, 4.15 to its body):
    /// remember that and send the same operation again, first in the device's queue (with
    /// the queue deadline it got at submission), with the next format. `false` when there was no format of ours to give up (then the
    /// refusal is the answer). Each retry gives up one more of at most seven formats.
    fn fall_back(&mut self, now: Instant, o: &Outstanding) -> bool {
        let Some(format) = o.format else {
            return false;
        };
        let Some(reg) = self
            .slot_mut(o.slot)
            .filter(|r| r.generation == o.generation)
        else {
            return false;
        };
        if reg.refused.contains(&format) {
            return false;
        }
        reg.refused.push(format);
        // A read can always go again without an Accept; a write needs a format left, and
        // so does a composite request (its body is in the format).
        let is_read = matches!(
            o.request,
            DeviceRequest::Read { .. } | DeviceRequest::Observe { .. }
        );
        let is_composite = matches!(
            o.request,
            DeviceRequest::ReadComposite { .. }
                | DeviceRequest::ObserveComposite { .. }
                | DeviceRequest::WriteComposite { .. }
        );
        let left = if is_composite {
            Self::composite_formats(reg)
        } else {
            Self::formats(reg)
        };
        if !is_read && left.iter().all(|f| reg.refused.contains(f)) {
            return false;
        }
        self.requeue(
            o.slot,
            Queued {
                op: DeviceOp {
                    id: o.op,
                    device: o.device.clone(),
                    request: o.request.clone(),
                },
                deadline: o.deadline,
                seq: o.seq,
                resent: true,
            },
        );
        self.pump(now, o.slot);
        true
    }

    /// The CoAP request for an operation, and the format it carries by our choice (see
    /// [`Self::fall_back`]).
    fn build_request(
        &self,
        slot: u32,
        request: &DeviceRequest,
    ) -> Result<(Message, Option<ContentFormat>), DeviceError> {
        let reg = self.slot(slot).ok_or(DeviceError::NotRegistered)?;
        let mut m = Message::new(MessageType::Confirmable, Code::GET, 0);
        let mut path = *request.path();
        let mut chosen = None;
        let multi = |f: ContentFormat| {
            (!matches!(f, ContentFormat::Text | ContentFormat::Opaque)).then_some(f)
        };
        // Every value is checked against its resource's type first, the same for every
        // format (`content::fit_to_types`): nothing leaves that would mean something else
        // on the device.
        let encoded = |base: &Lwm2mPath, content: &Content, f: ContentFormat| {
            content::fit_to_types(content, &*self.types)
                .and_then(|c| content::encode(f, base, &c))
                .map_err(|e| DeviceError::BadPayload(e.to_string()))
        };
        let cf = |f: ContentFormat| coap::ContentFormat(f.code());
        match request {
            DeviceRequest::Read { path } | DeviceRequest::Observe { path } => {
                if matches!(request, DeviceRequest::Observe { .. }) {
                    m.set_observe(0);
                }
                if let Some(f) = Self::read_accept(reg, path) {
                    m.set_accept(cf(f));
                    chosen = Some(f);
                }
            }
            // Reached only when no observation is known (e.g. after a restart): a plain
            // deregistration request on a fresh token.
            DeviceRequest::CancelObserve { .. } => m.set_observe(1),
            DeviceRequest::Discover { .. } => m.set_accept(cf(ContentFormat::LinkFormat)),
            DeviceRequest::Write {
                path: target,
                mode,
                content,
            } => {
                // A partial update goes as a POST, which at an object is a Create and
                // at a single resource an Execute (with the value as its arguments).
                if request.is_another_operation_by_path() {
                    return Err(DeviceError::BadRequest);
                }
                m.code = match mode {
                    WriteMode::Replace => Code::PUT,
                    WriteMode::PartialUpdate => Code::POST,
                };
                let f = Self::write_format(reg, target, content);
                m.set_content_format(cf(f));
                m.payload = encoded(target, content, f)?;
                chosen = multi(f);
            }
            DeviceRequest::WriteAttributes { attributes: a, .. } => {
                m.code = Code::PUT;
                if let Some(v) = a.pmin {
                    m.add_uri_query(&format!("pmin={v}"));
                }
                if let Some(v) = a.pmax {
                    m.add_uri_query(&format!("pmax={v}"));
                }
                for (k, v) in [("gt", a.gt), ("lt", a.lt), ("st", a.st)] {
                    if let Some(v) = v {
                        if !v.is_finite() {
                            return Err(DeviceError::BadRequest);
                        }
                        // A plain decimal (no exponent, as in text), exact; a Uri-Query
                        // item is at most 255 bytes (RFC 7252 §5.10), which holds every
                        // threshold of up to about 250 digits but not 1e300 or 5e-324:
                        // refused rather than sent as an option a device may drop.
                        let item = format!("{k}={v}");
                        if item.len() > 255 {
                            return Err(DeviceError::BadRequest);
                        }
                        m.add_uri_query(&item);
                    }
                }
            }
            DeviceRequest::Execute { args, .. } => {
                // Only a resource executes: a POST to an instance is a partial Write, to
                // an object a Create.
                if request.is_another_operation_by_path() {
                    return Err(DeviceError::BadRequest);
                }
                m.code = Code::POST;
                if let Some(a) = args {
                    m.set_content_format(cf(ContentFormat::Text));
                    m.payload = a.as_bytes().to_vec();
                }
            }
            DeviceRequest::Create {
                path: target,
                content,
            } => {
                m.code = Code::POST;
                let object = Lwm2mPath::object(target.object_id().ok_or(DeviceError::BadRequest)?);
                // A Create is a POST to the object: the new instance's id travels with its
                // values, so an instance path is honoured only through them (a value under
                // another instance, or none at all, would let the device pick another id),
                // and a resource path names no instance to create.
                match target.depth() {
                    1 => {}
                    2 => {
                        if let Some((p, _)) =
                            content.values.iter().find(|(p, _)| !target.contains(p))
                        {
                            return Err(DeviceError::BadPayload(format!(
                                "path {p} is not a resource under {target}"
                            )));
                        }
                        if content.values.is_empty() {
                            return Err(DeviceError::BadPayload(format!(
                                "a Create at {target} carries no value to name the instance by"
                            )));
                        }
                    }
                    _ => return Err(DeviceError::BadRequest),
                }
                // Never text: a new instance goes as TLV or SenML even with one value.
                let f = Self::write_format(reg, &Lwm2mPath::ROOT, content);
                m.set_content_format(cf(f));
                m.payload = encoded(&object, content, f)?;
                chosen = multi(f);
                path = object;
            }
            DeviceRequest::Delete { .. } => m.code = Code::DELETE,
            DeviceRequest::ReadComposite { paths }
            | DeviceRequest::ObserveComposite { paths }
            | DeviceRequest::CancelObserveComposite { paths } => {
                // FETCH on the root with the path list as body (RFC 8132); the answer in
                // the same format. A cancel reaches here only when no observation is known.
                m.code = Code::FETCH;
                match request {
                    DeviceRequest::ObserveComposite { .. } => m.set_observe(0),
                    DeviceRequest::CancelObserveComposite { .. } => m.set_observe(1),
                    _ => {}
                }
                let f = Self::composite_format(reg);
                m.set_content_format(cf(f));
                m.set_accept(cf(f));
                m.payload = content::encode_paths(f, paths)
                    .map_err(|e| DeviceError::BadPayload(e.to_string()))?;
                chosen = Some(f);
            }
            DeviceRequest::WriteComposite { content } => {
                m.code = Code::IPATCH;
                let f = Self::composite_format(reg);
                m.set_content_format(cf(f));
                m.payload = encoded(&Lwm2mPath::ROOT, content, f)?;
                chosen = Some(f);
            }
            // Taken by `submit`: nothing goes to the device.
            DeviceRequest::EndRegistration { .. } => return Err(DeviceError::BadRequest),
        }
        if let Some(alt) = &reg.alternate_path {
            for seg in alt.split('/').filter(|s| !s.is_empty()) {
                m.add_uri_path(seg);
            }
        }
        for id in path.ids() {
            m.add_uri_path(&id.to_string());
        }
        Ok((m, chosen))
    }

    // ---------------------------------------------------------------- timers

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Expiry { slot, generation } => {
                let due = self
                    .slot(slot)
                    .is_some_and(|r| r.generation == generation && r.expires <= now);
                if due && let Some(device) = self.remove(now, slot) {
                    self.events.push_back(DeviceEvent::Expired { device });
                }
            }
            Timer::Probe { slot, generation } => {
                let Some(Probe::InFlight(id)) = self
                    .slot(slot)
                    .filter(|r| r.generation == generation)
                    .map(|r| r.probe)
                else {
                    return;
                };
                // The old address did not answer in time: the registration is gone. Its
                // requests first, then the probe, so that forgetting the probe does not
                // start one queued behind it.
                self.probes.remove(&id);
                if let Some(device) = self.remove(now, slot) {
                    self.events.push_back(DeviceEvent::Expired { device });
                }
                self.endpoint.forget_request(now, id);
            }
            Timer::Queue { slot } => {
                // Whatever the generation: a re-registration keeps the queue, and each
                // item carries its own deadline (a freed slot's queue is empty).
                if self.slot(slot).is_none() {
                    return;
                }
                let q = &mut self.queues[slot as usize];
                let mut kept = VecDeque::with_capacity(q.len());
                let mut expired = Vec::new();
                for item in q.drain(..) {
                    if item.deadline <= now {
                        expired.push(item);
                    } else {
                        kept.push_back(item);
                    }
                }
                *q = kept;
                for item in expired {
                    self.events.push_back(DeviceEvent::TimedOut {
                        op: item.op.id,
                        device: item.op.device,
                    });
                }
            }
        }
    }
}

impl Transport for Lwm2mServer {
    fn submit(&mut self, now: Instant, op: DeviceOp) {
        let Some(&slot) = self.by_endpoint.get(&op.device) else {
            return self.fail(op, DeviceError::NotRegistered);
        };
        if let DeviceRequest::EndRegistration { registration_id } = &op.request {
            let registration_id = registration_id.clone();
            return self.end_registration(now, slot, op, &registration_id);
        }
        if self.queues[slot as usize].len() >= self.config.queue_capacity {
            return self.fail(op, DeviceError::QueueFull);
        }
        let deadline = now + self.config.queue_timeout;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queues[slot as usize].push_back(Queued {
            op,
            deadline,
            seq,
            resent: false,
        });
        self.timers.push(Reverse((deadline, Timer::Queue { slot })));
        self.pump(now, slot);
        self.drain_endpoint(now);
    }

    fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.on_timer(now, timer);
        }
        if self.endpoint_timeout.is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.drain_endpoint(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let ours = self.timers.peek().map(|Reverse((at, _))| *at);
        match (ours, self.endpoint_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Yes: every request's first transmission is reported as [`DeviceEvent::Sent`]
    /// (at once for an awake device, when it wakes for a queue-mode one).
    fn reports_sent(&self) -> bool {
        true
    }
}

#[cfg(all(test, feature = "dtls"))]
mod identity_model;
#[cfg(test)]
mod tests;

/// Whether `identity` (none: plain CoAP) is the one `reg` was made with, still bound to its
/// device: the name alone is not enough, as an identity may be moved to another device.
fn identity_owns(reg: &Registration, identity: Option<&PeerIdentity>) -> bool {
    match (reg.identity.as_deref(), identity) {
        (None, None) => true,
        (Some(expected), Some(i)) => {
            *i.psk_identity == *expected
                && i.device.as_ref().map(DeviceId::as_str) == Some(reg.info.endpoint.as_str())
        }
        _ => false,
    }
}
