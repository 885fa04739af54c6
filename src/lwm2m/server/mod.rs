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
//! # What it does
//!
//! - **Registration** (`POST /rd`, `POST /rd/{id}`, `DELETE /rd/{id}`): Register answers
//!   2.01 with Location-Path `rd/{id}` after the authorization hook accepted; an Update
//!   refreshes the lifetime, applies what it carries and follows an address change (NAT
//!   rebinding); De-register answers 2.02. A registration expires `lifetime +
//!   lifetime_grace` after the device last registered or updated; its observations go with
//!   it. Each becomes a [`DeviceEvent`].
//! - **Who may register**: the [`Authorizer`] given to [`Lwm2mServer::with_authorizer`];
//!   without one, only [`ServerConfig::auto_provision`] lets anyone in. A refused device gets
//!   4.03 and a [`DeviceEvent::Rejected`]; nothing else changes.
//! - **Device management**: every [`DeviceRequest`] becomes one confirmable CoAP request
//!   (Read GET, Discover GET Accept 40, Write PUT/POST, Write-Attributes PUT with only
//!   Uri-Query, Execute POST, Create POST `/oid`, Delete DELETE, Observe GET Observe=0,
//!   Cancel GET Observe=1 on the observation's token); answers and errors map to
//!   [`DeviceReply`] and [`DeviceError`]. Notifications become
//!   [`DeviceEvent::Notification`] with decoded [`Content`].
//! - **Payload choice**: writes of one resource go as text (opaque as 42) — the one
//!   format every LWM2M 1.0 client speaks, including lwm2m-node-lib; several values go as
//!   SenML JSON to 1.1 devices and TLV to 1.0 devices, unless the device's registration
//!   announced formats (`ct`), which then decide. Reads carry an Accept only when the
//!   device announced a format we decode.
//! - **Queue mode and NSTART**: each device has a bounded queue; at most
//!   [`ServerConfig::nstart`] requests are in flight per device. A queue-mode device's
//!   requests wait until it talks (register, update, notification, any datagram) and go out
//!   during its awake window. Full queue: [`DeviceError::QueueFull`]; waiting longer than
//!   [`ServerConfig::queue_timeout`]: [`DeviceEvent::TimedOut`].
//!
//! # Memory
//!
//! Per registered device: one registration record (its [`RegistrationInfo`] strings,
//! the object list, an empty queue) and one entry in each of three hash indexes
//! (endpoint, address, registration id). `benches/lwm2m_server.rs` measures it.
//!
//! # Not yet
//!
//! Block-wise transfer (RFC 7959), DTLS, Bootstrap, Send (`/dp`), composite operations.

mod config;
mod registration;
mod udp;
mod wire;

pub use config::{Authorizer, Decision, ServerConfig};
pub use registration::{
    DEFAULT_LIFETIME, MAX_ENDPOINT, MAX_LINK_PAYLOAD, MAX_OBJECTS, MAX_QUERIES, RdMessage,
    RdMethod, RegistrationError, RegistrationRequest, UpdateRequest, queries_as_str,
};
pub use udp::{UdpServer, UdpServerHandle};

use crate::lwm2m::content::{self, ContentFormat, standard_resource_type};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue};
use crate::transport::{
    DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, OpId, RegistrationInfo,
    RejectReason, Transport, WriteMode,
};
use crate::twin::DeviceId;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use wire::{MsgType, Packet, code};

/// A datagram to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The CoAP message.
    pub payload: Vec<u8>,
}

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
    alternate_path: Option<Box<str>>,
    awake_until: Option<Instant>,
    in_flight: usize,
}

/// An operation waiting for its turn.
struct Queued {
    op: DeviceOp,
    deadline: Instant,
}

/// A request sent and not yet answered.
struct Outstanding {
    op: OpId,
    device: DeviceId,
    slot: u32,
    generation: u64,
    request: DeviceRequest,
    peer: SocketAddr,
    mid: u16,
    bytes: Vec<u8>,
    attempts: u8,
    /// When to retransmit (before the ACK) or give up (after an empty ACK).
    deadline: Instant,
    backoff: Duration,
    acked: bool,
}

/// An established observation.
struct Observation {
    slot: u32,
    generation: u64,
    device: DeviceId,
    path: Lwm2mPath,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Timer {
    Expiry { slot: u32, generation: u64 },
    Queue { slot: u32, generation: u64 },
    Request { token: u64 },
    Dedup,
}

/// The bundled LWM2M server (sans-IO). See the module docs for the driving order.
pub struct Lwm2mServer {
    config: ServerConfig,
    authorizer: Option<Authorizer>,
    types: TypeResolver,
    slots: Vec<Option<Registration>>,
    queues: Vec<VecDeque<Queued>>,
    free: Vec<u32>,
    by_endpoint: HashMap<DeviceId, u32>,
    by_addr: HashMap<SocketAddr, u32>,
    by_reg_id: HashMap<u64, u32>,
    next_reg_id: u64,
    next_generation: u64,
    outstanding: HashMap<u64, Outstanding>,
    by_mid: HashMap<u16, u64>,
    observations: HashMap<u64, Observation>,
    dedup: HashMap<(SocketAddr, u16), Vec<u8>>,
    dedup_order: VecDeque<(Instant, SocketAddr, u16)>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<DeviceEvent>,
    next_mid: u16,
    token_counter: u64,
    token_key: u64,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn token_u64(t: &[u8]) -> Option<u64> {
    (t.len() == 8).then(|| u64::from_be_bytes(t.try_into().unwrap_or([0; 8])))
}

impl Lwm2mServer {
    /// A server with these settings, no authorization hook, the standard resource types,
    /// and token / message-id seeds from the OS CSPRNG.
    ///
    /// ```
    /// use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
    /// let server = Lwm2mServer::new(ServerConfig::default());
    /// assert_eq!(server.registered_count(), 0);
    /// ```
    pub fn new(config: ServerConfig) -> Self {
        let mut seed = [0u8; 16];
        // Without OS randomness tokens stay unique (a counter) but become guessable.
        let _ = getrandom::fill(&mut seed);
        Self::with_seed(config, seed)
    }

    /// Like [`Lwm2mServer::new`] with fixed seeds, for deterministic tests.
    pub fn with_seed(config: ServerConfig, seed: [u8; 16]) -> Self {
        let key = u64::from_be_bytes(seed[..8].try_into().unwrap_or([0; 8]));
        let mid = u16::from_be_bytes([seed[8], seed[9]]);
        Lwm2mServer {
            config,
            authorizer: None,
            types: Box::new(standard_resource_type),
            slots: Vec::new(),
            queues: Vec::new(),
            free: Vec::new(),
            by_endpoint: HashMap::new(),
            by_addr: HashMap::new(),
            by_reg_id: HashMap::new(),
            next_reg_id: 1,
            next_generation: 1,
            outstanding: HashMap::new(),
            by_mid: HashMap::new(),
            observations: HashMap::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_mid: mid,
            token_counter: 0,
            token_key: key,
        }
    }

    /// Installs the hook that decides who may register.
    ///
    /// ```
    /// use twinhub::lwm2m::server::{Decision, Lwm2mServer, ServerConfig};
    /// use twinhub::transport::RejectReason;
    /// let server = Lwm2mServer::new(ServerConfig::default()).with_authorizer(Box::new(|r| {
    ///     if r.endpoint.starts_with("dev-") { Decision::Accept } else { Decision::Reject(RejectReason::UnknownDevice) }
    /// }));
    /// # let _ = server;
    /// ```
    pub fn with_authorizer(mut self, authorizer: Authorizer) -> Self {
        self.authorizer = Some(authorizer);
        self
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

    /// A registered device's registration.
    pub fn registration(&self, device: &DeviceId) -> Option<&RegistrationInfo> {
        let slot = *self.by_endpoint.get(device)?;
        self.slot(slot).map(|r| &r.info)
    }

    /// How many observations are established (all devices).
    pub fn observation_count(&self) -> usize {
        self.observations.len()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    fn slot(&self, slot: u32) -> Option<&Registration> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut Registration> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    fn next_mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    fn next_token(&mut self) -> u64 {
        self.token_counter += 1;
        // A bijection of a counter: unique while the counter does not wrap, unpredictable
        // without the key.
        splitmix(self.token_counter ^ self.token_key)
    }

    fn send(&mut self, destination: SocketAddr, p: &Packet) {
        self.transmits.push_back(Transmit {
            destination,
            payload: p.encode(),
        });
    }

    // ---------------------------------------------------------------- datagrams in

    /// Handles one received datagram. Malformed datagrams are dropped silently, as
    /// RFC 7252 §4.2 asks.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let Some(p) = Packet::decode(bytes) else {
            return;
        };
        if let Some(&slot) = self.by_addr.get(&peer) {
            self.device_talked(now, slot);
        }
        match p.mtype {
            MsgType::Con | MsgType::Non if p.is_request() => self.handle_request(now, peer, &p),
            MsgType::Con if p.code == 0 => {
                // CoAP ping.
                self.send(peer, &Packet::new(MsgType::Rst, 0, p.mid, &[]));
            }
            MsgType::Ack | MsgType::Rst => self.handle_ack(now, peer, &p),
            MsgType::Con | MsgType::Non if p.is_response() => {
                self.handle_response(now, peer, &p);
            }
            _ => {}
        }
    }

    fn handle_request(&mut self, now: Instant, peer: SocketAddr, p: &Packet) {
        if p.mtype == MsgType::Con
            && let Some(cached) = self.dedup.get(&(peer, p.mid))
        {
            let payload = cached.clone();
            self.transmits.push_back(Transmit {
                destination: peer,
                payload,
            });
            return;
        }
        let (rcode, location) = self.registration_interface(now, peer, p);
        let mtype = if p.mtype == MsgType::Con {
            MsgType::Ack
        } else {
            MsgType::Non
        };
        let mid = if p.mtype == MsgType::Con {
            p.mid
        } else {
            self.next_mid()
        };
        let mut r = Packet::new(mtype, rcode, mid, &p.token);
        if let Some(id) = location {
            r.add(wire::LOCATION_PATH, b"rd");
            r.add(wire::LOCATION_PATH, id.as_bytes());
        }
        let bytes = r.encode();
        if p.mtype == MsgType::Con {
            self.remember(now, peer, p.mid, bytes.clone());
        }
        self.transmits.push_back(Transmit {
            destination: peer,
            payload: bytes,
        });
    }

    fn remember(&mut self, now: Instant, peer: SocketAddr, mid: u16, bytes: Vec<u8>) {
        while self.dedup.len() >= self.config.dedup_capacity {
            match self.dedup_order.pop_front() {
                Some((_, a, m)) => {
                    self.dedup.remove(&(a, m));
                }
                None => break,
            }
        }
        if self.dedup.insert((peer, mid), bytes).is_none() {
            let at = now + self.config.exchange_lifetime;
            if self.dedup_order.is_empty() {
                self.timers.push(Reverse((at, Timer::Dedup)));
            }
            self.dedup_order.push_back((at, peer, mid));
        }
    }

    /// Runs a registration-interface request; returns the response code and, for a
    /// Register, the new registration id.
    fn registration_interface(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        p: &Packet,
    ) -> (u8, Option<String>) {
        let method = match p.code {
            wire::POST => RdMethod::Post,
            wire::DELETE => RdMethod::Delete,
            _ => RdMethod::Other,
        };
        let path: Option<Vec<&str>> = p
            .opts(wire::URI_PATH)
            .map(|s| std::str::from_utf8(s).ok())
            .collect();
        let raw: Vec<&[u8]> = p.opts(wire::URI_QUERY).collect();
        let (Some(path), Ok(queries)) = (path, queries_as_str(&raw)) else {
            return (code(4, 0), None);
        };
        match RdMessage::parse(method, &path, &queries, &p.payload) {
            Ok(RdMessage::Register(r)) => self.register(now, peer, r),
            Ok(RdMessage::Update { id, update }) => (self.update(now, peer, &id, update), None),
            Ok(RdMessage::Deregister { id }) => (self.deregister(&id), None),
            Err(RegistrationError::NotRegistrationInterface) => {
                let code = if path.first() == Some(&"rd") {
                    code(4, 5)
                } else {
                    code(4, 4)
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
                    });
                }
                (code(4, 0), None)
            }
        }
    }

    fn register(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        r: RegistrationRequest,
    ) -> (u8, Option<String>) {
        let device = match DeviceId::new(&r.endpoint) {
            Ok(d) => d,
            Err(e) => {
                self.events.push_back(DeviceEvent::Rejected {
                    endpoint: r.endpoint,
                    reason: RejectReason::Malformed(e.to_string()),
                });
                return (code(4, 0), None);
            }
        };
        let decision = match &self.authorizer {
            Some(hook) => hook(&r),
            None if self.config.auto_provision => Decision::Accept,
            None => Decision::Reject(RejectReason::UnknownDevice),
        };
        if let Decision::Reject(reason) = decision {
            self.events.push_back(DeviceEvent::Rejected {
                endpoint: r.endpoint,
                reason,
            });
            return (code(4, 3), None);
        }
        // A re-registration replaces the old one (and its observations), keeps the queue.
        let slot = match self.by_endpoint.get(&device) {
            Some(&slot) => {
                self.unlink(slot);
                slot
            }
            None => {
                if self.by_endpoint.len() >= self.config.max_registrations {
                    return (code(5, 3), None);
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
        let reg_id = self.next_reg_id;
        self.next_reg_id += 1;
        let generation = self.next_generation;
        self.next_generation += 1;
        let expires = now + Duration::from_secs(r.lifetime as u64) + self.config.lifetime_grace;
        let info = RegistrationInfo {
            endpoint: r.endpoint,
            registration_id: reg_id.to_string(),
            lifetime: r.lifetime,
            lwm2m_version: r.lwm2m_version,
            binding: r.binding,
            queue_mode: r.queue_mode,
            objects: r.objects,
            address: Some(peer),
        };
        self.slots[slot as usize] = Some(Registration {
            device: device.clone(),
            info: info.clone(),
            generation,
            reg_id,
            addr: peer,
            expires,
            content_formats: r.content_formats,
            alternate_path: r.alternate_path.map(String::into_boxed_str),
            awake_until: Some(now + self.config.awake_window),
            in_flight: 0,
        });
        self.by_endpoint.insert(device.clone(), slot);
        self.by_addr.insert(peer, slot);
        self.by_reg_id.insert(reg_id, slot);
        self.timers
            .push(Reverse((expires, Timer::Expiry { slot, generation })));
        self.events.push_back(DeviceEvent::Registered {
            device,
            registration: info,
        });
        self.pump(now, slot);
        (code(2, 1), Some(reg_id.to_string()))
    }

    fn update(&mut self, now: Instant, peer: SocketAddr, id: &str, u: UpdateRequest) -> u8 {
        let Some(&slot) = id.parse::<u64>().ok().and_then(|n| self.by_reg_id.get(&n)) else {
            return code(4, 4);
        };
        let grace = self.config.lifetime_grace;
        let awake = now + self.config.awake_window;
        let Some(reg) = self.slot_mut(slot) else {
            return code(4, 4);
        };
        if let Some(lt) = u.lifetime {
            reg.info.lifetime = lt;
        }
        if let Some(b) = u.binding {
            reg.info.binding = b;
        }
        if let Some(q) = u.queue_mode {
            reg.info.queue_mode = q;
        }
        if let Some(objects) = u.objects {
            reg.info.objects = objects;
        }
        if let Some(cts) = u.content_formats {
            reg.content_formats = cts;
        }
        let old_addr = reg.addr;
        reg.addr = peer;
        reg.info.address = Some(peer);
        reg.expires = now + Duration::from_secs(reg.info.lifetime as u64) + grace;
        reg.awake_until = Some(awake);
        let (expires, generation) = (reg.expires, reg.generation);
        let event = DeviceEvent::RegistrationUpdated {
            device: reg.device.clone(),
            registration: reg.info.clone(),
        };
        if old_addr != peer {
            // NAT rebinding (or a client that updates from a fresh port): follow it.
            if self.by_addr.get(&old_addr) == Some(&slot) {
                self.by_addr.remove(&old_addr);
            }
            self.by_addr.insert(peer, slot);
            for o in self.outstanding.values_mut() {
                if o.slot == slot && o.generation == generation {
                    o.peer = peer;
                }
            }
        }
        self.timers
            .push(Reverse((expires, Timer::Expiry { slot, generation })));
        self.events.push_back(event);
        self.pump(now, slot);
        code(2, 4)
    }

    fn deregister(&mut self, id: &str) -> u8 {
        let Some(&slot) = id.parse::<u64>().ok().and_then(|n| self.by_reg_id.get(&n)) else {
            return code(4, 4);
        };
        if let Some(device) = self.remove(slot) {
            self.events.push_back(DeviceEvent::Deregistered { device });
        }
        code(2, 2)
    }

    /// Drops a registration's indexes and observations; keeps the slot and queue.
    fn unlink(&mut self, slot: u32) {
        let Some(reg) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.by_endpoint.remove(&reg.device);
        if self.by_addr.get(&reg.addr) == Some(&slot) {
            self.by_addr.remove(&reg.addr);
        }
        self.by_reg_id.remove(&reg.reg_id);
        self.observations
            .retain(|_, o| !(o.slot == slot && o.generation == reg.generation));
    }

    /// Removes a registration entirely; its queued operations fail with NotRegistered.
    fn remove(&mut self, slot: u32) -> Option<DeviceId> {
        let device = self.slot(slot)?.device.clone();
        self.unlink(slot);
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

    fn device_talked(&mut self, now: Instant, slot: u32) {
        let window = self.config.awake_window;
        if let Some(reg) = self.slot_mut(slot) {
            reg.awake_until = Some(now + window);
        }
        self.pump(now, slot);
    }

    fn handle_ack(&mut self, now: Instant, peer: SocketAddr, p: &Packet) {
        let Some(&token) = self.by_mid.get(&p.mid) else {
            return;
        };
        let Some(o) = self.outstanding.get_mut(&token) else {
            self.by_mid.remove(&p.mid);
            return;
        };
        if o.peer != peer {
            return;
        }
        self.by_mid.remove(&p.mid);
        if p.mtype == MsgType::Rst {
            let o = self.finish(now, token);
            if let Some(o) = o {
                self.events.push_back(DeviceEvent::Response {
                    op: o.op,
                    device: o.device,
                    result: Err(DeviceError::Code(0, 0)),
                });
            }
            return;
        }
        if p.code == 0 {
            // Empty ACK: a separate response follows.
            o.acked = true;
            o.deadline = now + self.config.response_timeout;
            let d = o.deadline;
            self.timers.push(Reverse((d, Timer::Request { token })));
            return;
        }
        if p.token.as_slice() == token.to_be_bytes() {
            self.complete(now, token, p);
        }
    }

    fn handle_response(&mut self, now: Instant, peer: SocketAddr, p: &Packet) {
        let token = token_u64(&p.token);
        let known = token.is_some_and(|t| {
            self.outstanding.contains_key(&t) || self.observations.contains_key(&t)
        });
        if !known {
            // Unknown exchange (e.g. a notification after a cancel): reject it, which also
            // ends the observation on the device (RFC 7641 §3.6).
            if p.mtype == MsgType::Con {
                self.send(peer, &Packet::new(MsgType::Rst, 0, p.mid, &[]));
            }
            return;
        }
        if p.mtype == MsgType::Con {
            self.send(peer, &Packet::new(MsgType::Ack, 0, p.mid, &[]));
        }
        let token = token.unwrap_or(0);
        if self.outstanding.contains_key(&token) {
            self.complete(now, token, p);
        } else if let Some(obs) = self.observations.get(&token) {
            if p.code >> 5 != 2 {
                self.observations.remove(&token);
                return;
            }
            let (device, path) = (obs.device.clone(), obs.path);
            // A notification we cannot decode carries nothing the hub can use.
            if let Ok(content) = self.decode(p, &path) {
                self.events.push_back(DeviceEvent::Notification {
                    device,
                    path,
                    content,
                });
            }
        }
    }

    fn decode(&self, p: &Packet, path: &Lwm2mPath) -> Result<Content, DeviceError> {
        // No Content-Format: plain text (lwm2m-node-lib answers so).
        let cf = match p.uint(wire::CONTENT_FORMAT) {
            None => ContentFormat::Text,
            Some(n) => u16::try_from(n)
                .ok()
                .and_then(ContentFormat::from_code)
                .ok_or(DeviceError::UnsupportedContentFormat)?,
        };
        if p.payload.is_empty() && cf.canonical() != ContentFormat::Opaque {
            return Ok(Content::default());
        }
        content::decode(cf, &p.payload, path, &*self.types)
            .map_err(|e| DeviceError::BadPayload(e.to_string()))
    }

    /// A response for an outstanding request: emit its outcome.
    fn complete(&mut self, now: Instant, token: u64, p: &Packet) {
        let Some(o) = self.finish(now, token) else {
            return;
        };
        let (class, detail) = (p.code >> 5, p.code & 31);
        let result = if class == 2 {
            self.reply(&o, p, token)
        } else {
            Err(match (class, detail) {
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

    fn reply(
        &mut self,
        o: &Outstanding,
        p: &Packet,
        token: u64,
    ) -> Result<DeviceReply, DeviceError> {
        match &o.request {
            DeviceRequest::Read { path } => self.decode(p, path).map(DeviceReply::Content),
            DeviceRequest::Observe { path } => {
                let content = self.decode(p, path)?;
                // No Observe option in the answer: the device declined to observe.
                if p.uint(wire::OBSERVE).is_some() {
                    self.observations.insert(
                        token,
                        Observation {
                            slot: o.slot,
                            generation: o.generation,
                            device: o.device.clone(),
                            path: *path,
                        },
                    );
                }
                Ok(DeviceReply::Content(content))
            }
            DeviceRequest::Discover { .. } => Ok(DeviceReply::Links(
                String::from_utf8(p.payload.clone())
                    .map_err(|_| DeviceError::BadPayload("discover answer is not utf-8".into()))?,
            )),
            DeviceRequest::Create { path, content } => {
                let loc: Vec<&[u8]> = p.opts(wire::LOCATION_PATH).collect();
                let from_location = loc
                    .iter()
                    .map(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok())
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
    fn finish(&mut self, now: Instant, token: u64) -> Option<Outstanding> {
        let o = self.outstanding.remove(&token)?;
        self.by_mid.remove(&o.mid);
        let live = self
            .slot_mut(o.slot)
            .filter(|r| r.generation == o.generation)
            .map(|r| r.in_flight = r.in_flight.saturating_sub(1))
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
            let reachable = !reg.info.queue_mode || reg.awake_until.is_some_and(|t| t > now);
            if !reachable || reg.in_flight >= nstart {
                return;
            }
            let Some(q) = self.queues[slot as usize].pop_front() else {
                return;
            };
            self.dispatch(now, slot, q.op);
        }
    }

    fn dispatch(&mut self, now: Instant, slot: u32, op: DeviceOp) {
        let Some(reg) = self.slot(slot) else { return };
        let (peer, generation) = (reg.addr, reg.generation);
        let fresh = self.next_token();
        let mid = self.next_mid();
        let packet = match self.build_request(slot, &op.request, fresh, mid) {
            Ok(p) => p,
            Err(e) => {
                self.events.push_back(DeviceEvent::Response {
                    op: op.id,
                    device: op.device,
                    result: Err(e),
                });
                return;
            }
        };
        if let DeviceRequest::CancelObserve { path } = &op.request {
            let path = *path;
            self.observations
                .retain(|_, o| !(o.slot == slot && o.generation == generation && o.path == path));
        }
        // A cancel reuses the observation's token.
        let token = token_u64(&packet.token).unwrap_or(fresh);
        let bytes = packet.encode();
        // The first retransmission waits ACK_TIMEOUT times a factor in [1, 1.5).
        let jitter = 1.0 + (splitmix(token) % 500) as f64 / 1000.0;
        let backoff = self.config.ack_timeout.mul_f64(jitter);
        let deadline = now + backoff;
        self.transmits.push_back(Transmit {
            destination: peer,
            payload: bytes.clone(),
        });
        self.outstanding.insert(
            token,
            Outstanding {
                op: op.id,
                device: op.device,
                slot,
                generation,
                request: op.request,
                peer,
                mid,
                bytes,
                attempts: 0,
                deadline,
                backoff,
                acked: false,
            },
        );
        self.by_mid.insert(mid, token);
        self.timers
            .push(Reverse((deadline, Timer::Request { token })));
        if let Some(reg) = self.slot_mut(slot) {
            reg.in_flight += 1;
        }
    }

    /// The content format for a write of `content` at `path` to this device.
    fn write_format(reg: &Registration, path: &Lwm2mPath, content: &Content) -> ContentFormat {
        if let [(p, v)] = content.values.as_slice()
            && p == path
        {
            return match v {
                ResourceValue::Opaque(_) => ContentFormat::Opaque,
                _ => ContentFormat::Text,
            };
        }
        let announced = |f: ContentFormat| reg.content_formats.contains(&f.code());
        if announced(ContentFormat::SenmlJson) {
            ContentFormat::SenmlJson
        } else if announced(ContentFormat::Tlv) {
            ContentFormat::Tlv
        } else if announced(ContentFormat::OldTlv) {
            ContentFormat::OldTlv
        } else if reg.info.lwm2m_version.as_str() >= "1.1" {
            ContentFormat::SenmlJson
        } else {
            ContentFormat::Tlv
        }
    }

    fn build_request(
        &self,
        slot: u32,
        request: &DeviceRequest,
        token: u64,
        mid: u16,
    ) -> Result<Packet, DeviceError> {
        let reg = self.slot(slot).ok_or(DeviceError::NotRegistered)?;
        let mut p = Packet::new(MsgType::Con, wire::GET, mid, &token.to_be_bytes());
        let mut path = *request.path();
        let read_accept = || {
            [
                ContentFormat::SenmlJson,
                ContentFormat::Tlv,
                ContentFormat::OldTlv,
            ]
            .into_iter()
            .find(|f| reg.content_formats.contains(&f.code()))
        };
        let encoded = |base: &Lwm2mPath, content: &Content, f: ContentFormat| {
            content::encode(f, base, content).map_err(|e| DeviceError::BadPayload(e.to_string()))
        };
        match request {
            DeviceRequest::Read { .. } => {
                if let Some(f) = read_accept() {
                    p.add_uint(wire::ACCEPT, f.code() as u32);
                }
            }
            DeviceRequest::Observe { .. } => {
                p.add_uint(wire::OBSERVE, 0);
                if let Some(f) = read_accept() {
                    p.add_uint(wire::ACCEPT, f.code() as u32);
                }
            }
            DeviceRequest::CancelObserve { path: target } => {
                p.add_uint(wire::OBSERVE, 1);
                // RFC 7641 §3.6: cancel on the observation's own token.
                if let Some((&t, _)) = self.observations.iter().find(|(_, o)| {
                    o.slot == slot && o.generation == reg.generation && o.path == *target
                }) {
                    p.token = t.to_be_bytes().to_vec();
                }
            }
            DeviceRequest::Discover { .. } => {
                p.add_uint(wire::ACCEPT, ContentFormat::LinkFormat.code() as u32);
            }
            DeviceRequest::Write {
                path: target,
                mode,
                content,
            } => {
                p.code = match mode {
                    WriteMode::Replace => wire::PUT,
                    WriteMode::PartialUpdate => wire::POST,
                };
                let f = Self::write_format(reg, target, content);
                p.add_uint(wire::CONTENT_FORMAT, f.code() as u32);
                p.payload = encoded(target, content, f)?;
            }
            DeviceRequest::WriteAttributes { attributes, .. } => {
                p.code = wire::PUT;
                let a = attributes;
                let mut q = Vec::new();
                if let Some(v) = a.pmin {
                    q.push(format!("pmin={v}"));
                }
                if let Some(v) = a.pmax {
                    q.push(format!("pmax={v}"));
                }
                for (k, v) in [("gt", a.gt), ("lt", a.lt), ("st", a.st)] {
                    if let Some(v) = v {
                        if !v.is_finite() {
                            return Err(DeviceError::BadRequest);
                        }
                        q.push(format!("{k}={v}"));
                    }
                }
                for s in q {
                    p.add(wire::URI_QUERY, s.as_bytes());
                }
            }
            DeviceRequest::Execute { args, .. } => {
                p.code = wire::POST;
                if let Some(a) = args {
                    p.add_uint(wire::CONTENT_FORMAT, 0);
                    p.payload = a.as_bytes().to_vec();
                }
            }
            DeviceRequest::Create {
                path: target,
                content,
            } => {
                p.code = wire::POST;
                let object = Lwm2mPath::object(target.object_id().ok_or(DeviceError::BadRequest)?);
                // Never text: a new instance goes as TLV or SenML even with one value.
                let f = Self::write_format(reg, &Lwm2mPath::ROOT, content);
                p.add_uint(wire::CONTENT_FORMAT, f.code() as u32);
                p.payload = encoded(&object, content, f)?;
                path = object;
            }
            DeviceRequest::Delete { .. } => p.code = wire::DELETE,
        }
        if let Some(alt) = &reg.alternate_path {
            for seg in alt.split('/').filter(|s| !s.is_empty()) {
                p.add(wire::URI_PATH, seg.as_bytes());
            }
        }
        for id in path.ids() {
            p.add(wire::URI_PATH, id.to_string().as_bytes());
        }
        Ok(p)
    }

    // ---------------------------------------------------------------- timers

    fn on_timer(&mut self, now: Instant, at: Instant, timer: Timer) {
        match timer {
            Timer::Expiry { slot, generation } => {
                let due = self
                    .slot(slot)
                    .is_some_and(|r| r.generation == generation && r.expires <= now);
                if due && let Some(device) = self.remove(slot) {
                    self.events.push_back(DeviceEvent::Expired { device });
                }
            }
            Timer::Queue { slot, generation } => {
                if self.slot(slot).is_none_or(|r| r.generation != generation) {
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
            Timer::Request { token } => self.request_timer(now, at, token),
            Timer::Dedup => {
                while let Some(&(t, a, m)) = self.dedup_order.front() {
                    if t > now {
                        self.timers.push(Reverse((t, Timer::Dedup)));
                        break;
                    }
                    self.dedup_order.pop_front();
                    self.dedup.remove(&(a, m));
                }
            }
        }
    }

    fn request_timer(&mut self, now: Instant, at: Instant, token: u64) {
        let max = self.config.max_retransmit;
        let Some(o) = self.outstanding.get_mut(&token) else {
            return;
        };
        if o.deadline != at || o.deadline > now {
            return; // a stale timer entry
        }
        if !o.acked && o.attempts < max {
            o.attempts += 1;
            o.backoff *= 2;
            o.deadline = now + o.backoff;
            let (d, t) = (
                o.deadline,
                Transmit {
                    destination: o.peer,
                    payload: o.bytes.clone(),
                },
            );
            self.transmits.push_back(t);
            self.timers.push(Reverse((d, Timer::Request { token })));
            return;
        }
        if let Some(o) = self.finish(now, token) {
            self.events.push_back(DeviceEvent::TimedOut {
                op: o.op,
                device: o.device,
            });
        }
    }
}

impl Transport for Lwm2mServer {
    fn submit(&mut self, now: Instant, op: DeviceOp) {
        let Some(&slot) = self.by_endpoint.get(&op.device) else {
            self.events.push_back(DeviceEvent::Response {
                op: op.id,
                device: op.device,
                result: Err(DeviceError::NotRegistered),
            });
            return;
        };
        let q = &mut self.queues[slot as usize];
        if q.len() >= self.config.queue_capacity {
            self.events.push_back(DeviceEvent::Response {
                op: op.id,
                device: op.device,
                result: Err(DeviceError::QueueFull),
            });
            return;
        }
        let deadline = now + self.config.queue_timeout;
        q.push_back(Queued { op, deadline });
        let generation = self.slot(slot).map_or(0, |r| r.generation);
        self.timers
            .push(Reverse((deadline, Timer::Queue { slot, generation })));
        self.pump(now, slot);
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
            self.on_timer(now, at, timer);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests;
