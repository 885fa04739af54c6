//! The server behind DTLS under random traffic (sans-IO, the DTLS layer emulated): three
//! devices, each with its PSK identity, and a fourth identity that belongs to no device,
//! open and close sessions at four addresses; devices register (naming themselves or no
//! endpoint), update, de-register, answer and notify (in order or not, confirmable or
//! not), each now and then through another identity's session (an impostor); the key
//! store moves identities between devices (which ends their sessions); and the hub reads
//! and observes the devices while time moves; a device now and then bootstraps again
//! through its bootstrap identity (`b<d>`), from its own address or another's, and
//! answers the bootstrap server's requests. The layer is what `SecureLayer` does: a
//! datagram arrives with the identity of the session at its address, and a datagram goes
//! out only when [`Lwm2mServer::may_send`] allows it through that session (else
//! [`Lwm2mServer::not_sent`] takes it back).
//!
//! Whatever happens (safety):
//! - a Register is accepted only from an identity that belongs to the device it names (or,
//!   naming none, from one that belongs to a device), and an Update or De-register only
//!   from the identity the registration was made with, while it still belongs to the
//!   device: no identity registers, moves or ends another device's registration;
//! - a request for a device leaves only through a session of that identity, and a
//!   bootstrap request (its Writes carry keys) only through one of the identity that
//!   asked for the bootstrap;
//! - an answer or a notification on a device's token through another identity's session
//!   is neither taken as the device's nor moves its registration; an answer to a
//!   bootstrap request through another identity's session than the one that asked is
//!   not the device's either (its exchange goes on: a session has one request out at a
//!   time, and the next leaves only once the one out was answered through the asking
//!   identity, timed out or its session was replaced);
//! - every operation ends exactly once within a bounded time, is reported `Sent` at most
//!   once, never after it ended, and only once a datagram of it left.
//!
//! And what the owning identity (the one the registration was made with, still the
//! device's) legitimately sends is taken (liveness), the model predicting the server's
//! state (each registration's address, the addresses it left and when, its expiry; each
//! observation's last Observe number taken):
//! - a notification on a live observation (its registration the one it was made under,
//!   not expired, not replaced) reaches the hub exactly unless it is stale (RFC 7641
//!   §3.4: its number not above the last taken, and that one taken less than
//!   `OBSERVE_FRESHNESS`, 128 s, ago) or comes from an address the registration left less
//!   than `LEFT_ADDRESS_MEMORY` (128 s) ago, one of the last `MAX_LEFT_ADDRESSES` (sent
//!   before a NAT rebinding, arrived late): these two are the only drops, from its own
//!   address, a new one or one another registration holds alike; one from a new address
//!   moves the registration there. A confirmable one gets an ACK (or RST) whether taken or
//!   not: unanswered, the device would drop the observation (RFC 7641 §4.5);
//! - an answer to a request reported `Sent` and not ended ends it (`Response` Ok), and an
//!   Observe's answer starts its observation;
//! - an Update or De-register of a live registration is answered 2.04 / 2.02 (the answer
//!   leaves through the session, whatever registration holds the address);
//! - a Register is accepted when the device has no live registration, or one made with
//!   the same identity or at the same address (the takeover probe is for another
//!   identity at another address);
//! - a Bootstrap-Request is answered 2.04, and the Discover leaves through the asking
//!   identity's session at once when nothing else holds the address's CoAP NSTART,
//!   whatever registration holds the address; a bootstrap request answered through that
//!   session is followed by the next (same proviso) or, the Finish answered, by
//!   `Finished` (an implication: the model does not follow the endpoint's queues);
//! - a bootstrap request that is not answered times out exactly when its CoAP exchange
//!   gives up, predicted from the server's CoAP configuration and the request's first
//!   retransmission (its random initial time-out `T`: `T * (2^(MAX_RETRANSMIT + 1) - 1)`
//!   after it first left, whether the layer let it through or not): its session then
//!   ends `Failed` (the model's answers are all successes, so a `Failed` that is not a
//!   replacement is a time-out, and comes at that time only), a late answer to it changes
//!   nothing, and a registration at the address whose requests waited behind it sends
//!   them at once;
//! - no device request waits while it could go (after every step): its registration
//!   holds an address with a session of its identity there, fewer of its requests than
//!   NSTART are out, and the CoAP endpoint would send to the address at once;
//! - a registration ends only when its time is up, by De-register or a new Register, or,
//!   once a Register through another identity of its device was refused (a takeover probe
//!   may be out), by `Expired`; an observation only with its registration.
//!
//! The model's devices send no error notification (which ends an observation) and its
//! four addresses never fill the CoAP endpoint's peer table (a registration's move would
//! then drop its observations), so neither drop is predicted. Not modelled: a
//! notification on a dead observation (its registration replaced) from an address
//! another identity's registration holds is dropped unseen, not reset (the device ends it
//! when its confirmable notifications time out).

use super::*;
use crate::coap::{Code, Message, MessageType, OBSERVE_FRESHNESS};
use crate::transport::{DeviceOp, DeviceRequest, OpId, Transport};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

#[path = "model_rules.rs"]
mod model_rules;

/// Devices `e0..e2` (identities `i0..i2`); identity `i3` belongs to no device.
const DEVICES: u8 = 3;
const IDENTITIES: u8 = 4;
const ADDRESSES: u8 = 4;
/// Device `d`'s bootstrap identity is number `BOOTSTRAP + d` (`b<d>`, of `e<d>`; the key
/// store never moves it).
const BOOTSTRAP: u8 = 10;

#[derive(Clone, Debug)]
enum Op {
    /// A session of identity `ident` comes up at `addr` (replacing any there).
    Connect {
        addr: u8,
        ident: u8,
    },
    /// The session at `addr` ends.
    Close {
        addr: u8,
    },
    /// Device `dev` registers from `addr`, naming itself (or, `!name`, no endpoint),
    /// through a session of its identity, or of `impostor`'s (a session opened first if
    /// another is there).
    Register {
        addr: u8,
        dev: u8,
        name: bool,
        impostor: Option<u8>,
    },
    /// An Update of device `dev`'s registration (its location), as `Register` sends.
    Update {
        addr: u8,
        dev: u8,
        impostor: Option<u8>,
    },
    /// A De-register of device `dev`'s registration, as `Register` sends.
    Deregister {
        addr: u8,
        dev: u8,
        impostor: Option<u8>,
    },
    /// The hub reads device `dev` (`/3/0/(9 + dev)/<op number>`).
    Read {
        dev: u8,
    },
    /// The `k`-th request that left (modulo those unanswered) is answered 2.05 through
    /// the session at its destination, if there still is one.
    Answer {
        k: u8,
    },
    Advance {
        secs: u16,
    },
    /// The key store moves identity `ident` to device `to` (none: to no device), as the
    /// hub's `set_psk` does with a name already in use; the DTLS server ends the
    /// identity's sessions.
    Rebind {
        ident: u8,
        to: Option<u8>,
    },
    /// The hub observes device `dev`'s `/3/0/(9 + dev)/<op number>`; an answer to it
    /// starts the observation.
    Observe {
        dev: u8,
    },
    /// The device of the `k`-th observation (modulo their number) notifies from `addr`,
    /// through a session of its identity (the one its registration was made with) or of
    /// `impostor`'s (a stolen token), with the next Observe number (`back` 0), or again
    /// with the last one it sent (1) or the one before (2): reordered or duplicated;
    /// confirmable (`con`) or not.
    Notify {
        k: u8,
        addr: u8,
        impostor: Option<u8>,
        back: u8,
        con: bool,
    },
    /// Device `dev` asks for a bootstrap (`POST /bs`) from `addr` through its bootstrap
    /// identity (its session opened there first): an address it may be registered at,
    /// or another device. `Answer` answers the bootstrap server's requests.
    Bootstrap {
        addr: u8,
        dev: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let impostor = || proptest::option::weighted(0.25, 0..IDENTITIES);
    prop_oneof![
        2 => (0..ADDRESSES, 0..IDENTITIES).prop_map(|(addr, ident)| Op::Connect { addr, ident }),
        1 => (0..ADDRESSES).prop_map(|addr| Op::Close { addr }),
        2 => (0..ADDRESSES, 0..DEVICES, proptest::bool::weighted(0.8), impostor())
            .prop_map(|(addr, dev, name, impostor)| Op::Register { addr, dev, name, impostor }),
        3 => (0..ADDRESSES, 0..DEVICES, impostor())
            .prop_map(|(addr, dev, impostor)| Op::Update { addr, dev, impostor }),
        1 => (0..ADDRESSES, 0..DEVICES, impostor())
            .prop_map(|(addr, dev, impostor)| Op::Deregister { addr, dev, impostor }),
        3 => (0..DEVICES).prop_map(|dev| Op::Read { dev }),
        5 => any::<u8>().prop_map(|k| Op::Answer { k }),
        // Mostly short: a registration lives 150 s without an Update; now and then past
        // the 128 s of freshness and of an address left.
        2 => prop_oneof![3 => 1u16..30, 1 => 30u16..200].prop_map(|secs| Op::Advance { secs }),
        3 => (0..DEVICES).prop_map(|dev| Op::Observe { dev }),
        1 => (0..IDENTITIES, proptest::option::of(0..DEVICES))
            .prop_map(|(ident, to)| Op::Rebind { ident, to }),
        5 => (
            any::<u8>(),
            0..ADDRESSES,
            impostor(),
            prop_oneof![6 => Just(0u8), 1 => 1u8..3],
            any::<bool>(),
        )
            .prop_map(|(k, addr, impostor, back, con)| Op::Notify { k, addr, impostor, back, con }),
        1 => (0..ADDRESSES, 0..DEVICES).prop_map(|(addr, dev)| Op::Bootstrap { addr, dev }),
    ]
}

fn address(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 7], 6000 + u16::from(n)))
}

/// The model's view of a device's live registration.
type Reg = model_rules::Reg<u8>;

/// An observation the server accepted (its Observe answered, `Response` Ok).
#[derive(Debug)]
struct Obs {
    token: Vec<u8>,
    dev: u8,
    /// Its Observe operation's number.
    op: u64,
    /// The registration it was made under (`Reg::generation`): it goes with it.
    generation: u64,
    /// The highest Observe number its device sent.
    sent: u32,
    /// The Observe number of the last notification taken (the answer's first), and when.
    last: (u32, Instant),
}

/// A bootstrap session's request out: its message id, token, and whether it is the
/// Finish.
type BootstrapOut = (u16, Vec<u8>, bool);

/// A bootstrap session's request as the CoAP endpoint sent it (whether the layer let it
/// through or not): its message id, its first transmission, and the time from there to
/// its first retransmission (the random initial time-out, RFC 7252 §4.2), once seen.
#[derive(Clone, Copy, Debug)]
struct Clock {
    mid: u16,
    first: Instant,
    timeout: Option<Duration>,
}

impl Clock {
    /// When the exchange gives up: the initial time-out doubles with each of the
    /// `max_retransmit` retransmissions, and the last one is waited for too, so
    /// `first + timeout * (2^(max_retransmit + 1) - 1)` (93 s at most with the defaults).
    fn gives_up(&self, coap: &crate::coap::EndpointConfig) -> Option<Instant> {
        let factor = (1u32 << (coap.max_retransmit + 1)) - 1;
        self.timeout.map(|t| self.first + t * factor)
    }
}

struct World {
    server: Lwm2mServer,
    now: Instant,
    mid: u16,
    /// Each identity's device (the key store), by identity number.
    owner: [Option<u8>; IDENTITIES as usize],
    /// The identity each device's registration was made with (its last Register
    /// answered 2.01).
    registered_with: HashMap<u8, u8>,
    /// The identity whose Register is being handled, and the requests that left through
    /// its session meanwhile (identity, device, what is wrong if it is refused).
    registering: Option<u8>,
    provisional: Vec<(u8, u8, String)>,
    /// The layer's sessions: address -> identity number.
    sessions: HashMap<SocketAddr, u8>,
    /// Each device's location, from its last Register answered 2.01.
    locations: HashMap<u8, String>,
    /// Requests that left and nobody answered yet: (destination, message).
    requests: Vec<(SocketAddr, Message)>,
    events: Vec<DeviceEvent>,
    /// Observations the server accepted, live or not (see `observation_live`).
    observations: Vec<Obs>,
    /// Operations (by number) of which a datagram left.
    left: HashSet<u64>,
    /// Operations reported `Sent`, and those ended (`Response` or `TimedOut`).
    sent: HashSet<u64>,
    ended: HashSet<u64>,
    /// Live registrations as the model predicts them, by device; `generation` numbers
    /// the Registers accepted.
    regs: HashMap<u8, Reg>,
    generation: u64,
    /// Bootstrap sessions (one per address, as the server keeps them): the identity that
    /// asked, and its request out now (message id, token, Bootstrap-Finish or not).
    bootstraps: HashMap<SocketAddr, (u8, Option<BootstrapOut>)>,
    /// The timing of each session's request (by its address), to predict its time-out.
    clocks: HashMap<SocketAddr, Clock>,
    /// Bootstrap requests that timed out (address, message id): a late answer to one
    /// changes nothing.
    timed_out: HashSet<(SocketAddr, u16)>,
    /// The address whose bootstrap session a new Bootstrap-Request is replacing (its
    /// `Failed` is no time-out).
    replacing: Option<SocketAddr>,
    /// Each operation's device.
    device_of: HashMap<u64, u8>,
    /// Events checked by `audit` so far.
    audited: usize,
    violations: Vec<String>,
}

impl World {
    fn identity(&self, n: u8) -> PeerIdentity {
        if let Some(d) = n.checked_sub(BOOTSTRAP) {
            return PeerIdentity {
                psk_identity: format!("b{d}").into(),
                device: Some(DeviceId::new(&format!("e{d}")).unwrap()),
            };
        }
        PeerIdentity {
            psk_identity: format!("i{n}").into(),
            device: self.owner[usize::from(n)].map(|d| DeviceId::new(&format!("e{d}")).unwrap()),
        }
    }

    /// Whether identity `ident` may act for device `dev`: the device's registration was
    /// made with it, and it still belongs to the device.
    fn acts_for(&self, ident: u8, dev: u8) -> bool {
        self.registered_with.get(&dev) == Some(&ident)
            && self.owner[usize::from(ident)] == Some(dev)
    }

    fn rebind(&mut self, ident: u8, to: Option<u8>) {
        self.owner[usize::from(ident)] = to;
        let ended: Vec<SocketAddr> = self
            .sessions
            .iter()
            .filter(|&(_, &i)| i == ident)
            .map(|(&a, _)| a)
            .collect();
        for addr in ended {
            self.close(addr);
        }
    }

    fn connect(&mut self, addr: SocketAddr, ident: u8) {
        self.sessions.insert(addr, ident);
        self.server
            .session_changed(self.now, addr, Some(&self.identity(ident)));
        self.drain();
    }

    fn close(&mut self, addr: SocketAddr) {
        self.sessions.remove(&addr);
        self.server.session_changed(self.now, addr, None);
        self.drain();
    }

    fn con(&mut self, code: Code, path: &str) -> Message {
        self.mid = self.mid.wrapping_add(1);
        let mut m = Message::request(code, path);
        m.mtype = MessageType::Confirmable;
        m.message_id = self.mid;
        m.set_token(&self.mid.to_be_bytes());
        m
    }

    /// Sends `m` from `addr` through the session there (of `ident`, opened first if
    /// another is there) and returns the answer to it, if any.
    fn send(&mut self, addr: SocketAddr, ident: u8, m: &Message) -> Option<Message> {
        self.deliver(addr, ident, m)
            .into_iter()
            .find(|(to, a)| *to == addr && a.message_id == m.message_id && a.token() == m.token())
            .map(|(_, a)| a)
    }

    /// Sends `m` as [`Self::send`] does; returns the reply to its message id, if any (an
    /// ACK or RST, empty or not).
    fn send_for_reply(&mut self, addr: SocketAddr, ident: u8, m: &Message) -> Option<Message> {
        self.deliver(addr, ident, m)
            .into_iter()
            .find(|(to, a)| {
                *to == addr
                    && a.message_id == m.message_id
                    && matches!(a.mtype, MessageType::Acknowledgement | MessageType::Reset)
            })
            .map(|(_, a)| a)
    }

    /// Hands the server `m` from `addr` through a session of `ident` (opened first if
    /// another is there); returns what the layer lets out then.
    fn deliver(&mut self, addr: SocketAddr, ident: u8, m: &Message) -> Vec<(SocketAddr, Message)> {
        if self.sessions.get(&addr) != Some(&ident) {
            self.connect(addr, ident);
        }
        let bytes = m.to_bytes().expect("encodes");
        let identity = self.identity(ident);
        self.server
            .handle_datagram_from(self.now, addr, Some(&identity), &bytes);
        self.drain()
    }

    /// What the layer lets out (each request checked against the session it leaves
    /// through), and the events after it.
    fn drain(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut out = Vec::new();
        let mut bootstrap_ended = Vec::new();
        while let Some(t) = self.server.poll_transmit() {
            self.clock(&t);
            // `may_send` gates a separate (CON) response by the registration at its
            // destination; the server sends none (see there).
            if let Ok(m) = Message::decode(&t.payload)
                && m.mtype == MessageType::Confirmable
                && m.code.is_response()
            {
                self.violations.push(format!(
                    "a separate CON response left for {}: {m:?}",
                    t.destination
                ));
            }
            let session = self.sessions.get(&t.destination).copied();
            let through = session.map(|i| self.identity(i));
            if session.is_none() || !self.server.may_send(&t, through.as_ref()) {
                self.server.not_sent(self.now, &t, through.as_ref());
                continue;
            }
            let m = Message::decode(&t.payload).expect("the server's datagrams decode");
            // The bootstrap server's requests: Discover (`GET /`), Delete, Write, Finish
            // (the hub's are GETs of `/3/0/...`, a takeover probe's of `/1`).
            let request = m.code.class() == 0 && m.code != Code::EMPTY;
            if request && (m.code != Code::GET || m.uri_path().next().is_none()) {
                match self.bootstraps.get_mut(&t.destination) {
                    Some((asked, current)) if session == Some(*asked) => {
                        let finish = m.code == Code::POST;
                        *current = Some((m.message_id, m.token().as_bytes().to_vec(), finish));
                    }
                    other => self.violations.push(format!(
                        "bootstrap request {} {:?} left for {} through the session of \
                         {session:?} (the session asked through {other:?})",
                        m.code,
                        m.uri_path_string(),
                        t.destination
                    )),
                }
                if m.mtype == MessageType::Confirmable {
                    self.requests
                        .retain(|(_, r)| r.message_id != m.message_id || r.token() != m.token());
                    self.requests.push((t.destination, m.clone()));
                }
            } else if m.code == Code::GET {
                self.check_request(t.destination, session, &m);
                if m.mtype == MessageType::Confirmable {
                    self.requests
                        .retain(|(_, r)| r.message_id != m.message_id || r.token() != m.token());
                    self.requests.push((t.destination, m.clone()));
                }
            }
            out.push((t.destination, m));
        }
        while let Some(e) = self.server.poll_event() {
            if let DeviceEvent::Sent { op, .. } = &e
                && !self.left.contains(&op.0)
            {
                self.violations.push(format!(
                    "{op:?} reported Sent before any datagram of it left"
                ));
            }
            match &e {
                DeviceEvent::Sent { op, .. } => {
                    self.sent.insert(op.0);
                }
                DeviceEvent::Response { op, .. } | DeviceEvent::TimedOut { op, .. } => {
                    self.ended.insert(op.0);
                }
                DeviceEvent::Bootstrap {
                    address: Some(a),
                    outcome: crate::transport::BootstrapOutcome::Failed(_),
                    ..
                } if self.replacing != Some(*a) => bootstrap_ended.push(*a),
                _ => {}
            }
            self.events.push(e);
        }
        for a in bootstrap_ended {
            self.bootstrap_timed_out(a);
        }
        out
    }

    /// Notes the timing of a bootstrap session's request the endpoint sent (see
    /// [`Clock`]): a new message id starts a clock, the first retransmission gives its
    /// time-out.
    fn clock(&mut self, t: &Transmit) {
        let m = Message::decode(&t.payload).expect("the server's datagrams decode");
        let request = m.code.class() == 0 && m.code != Code::EMPTY;
        if !request
            || (m.code == Code::GET && m.uri_path().next().is_some())
            || !self.bootstraps.contains_key(&t.destination)
        {
            return;
        }
        match self.clocks.get_mut(&t.destination) {
            Some(c) if c.mid == m.message_id => {
                if c.timeout.is_none() {
                    c.timeout = Some(self.now - c.first);
                }
            }
            Some(c) => {
                // One request at a time: the one out was answered (through the asking
                // identity), timed out or replaced first, which stops its clock.
                self.violations.push(format!(
                    "bootstrap request {} left for {} while {c:?} was out",
                    m.message_id, t.destination
                ));
                let clock = Clock {
                    mid: m.message_id,
                    first: self.now,
                    timeout: None,
                };
                self.clocks.insert(t.destination, clock);
            }
            None => {
                let clock = Clock {
                    mid: m.message_id,
                    first: self.now,
                    timeout: None,
                };
                self.clocks.insert(t.destination, clock);
            }
        }
    }

    /// The bootstrap session at `a` ended `Failed`, not replaced: the model's answers
    /// are all successes, so only its request's time-out ends it, exactly when the CoAP
    /// exchange gives up. Then the address is free: a registration there whose requests
    /// waited behind the bootstrap request (CoAP NSTART) sends them now.
    fn bootstrap_timed_out(&mut self, a: SocketAddr) {
        let clock = self.clocks.remove(&a);
        let due = clock.and_then(|c| c.gives_up(&self.server.config().coap));
        if due != Some(self.now) {
            self.violations.push(format!(
                "the bootstrap session at {a} failed at {:?}; its request's exchange gives \
                 up at {due:?} ({clock:?})",
                self.now
            ));
        }
        if let Some(c) = clock {
            self.timed_out.insert((a, c.mid));
        }
        self.check_waiting(Some(a), "since its bootstrap request timed out");
    }

    /// Liveness of the device queues: no request waits while it could go, that is while
    /// its device's registration holds an address (`at`: this one only) with a session of
    /// its identity there, fewer of its requests than NSTART (the server's and the CoAP
    /// endpoint's) are out, and the endpoint would send to the address at once.
    fn check_waiting(&mut self, at: Option<SocketAddr>, when: &str) {
        let nstart = self
            .server
            .config()
            .nstart
            .min(self.server.config().coap.nstart);
        for dev in 0..DEVICES {
            let device = DeviceId::new(&format!("e{dev}")).unwrap();
            let Some(a) = self.server.registration(&device).and_then(|r| r.address) else {
                continue;
            };
            let through = self
                .sessions
                .get(&a)
                .is_some_and(|&i| self.acts_for(i, dev));
            let (waiting, in_flight) =
                model_rules::queue_counts(&self.device_of, &self.sent, &self.ended, dev);
            if at.is_none_or(|at| at == a)
                && through
                && waiting > 0
                && in_flight < nstart
                && self.server.endpoint().would_send_now(a)
            {
                self.violations.push(format!(
                    "e{dev}'s {waiting} request(s) wait at {a}, free {when} (at {:?})",
                    self.now
                ));
            }
        }
    }

    /// Liveness of the time-outs: no bootstrap request is out past the time its exchange
    /// gives up, nor past its first retransmission's latest time unretransmitted.
    fn check_clocks(&mut self) {
        let coap = self.server.config().coap.clone();
        let latest_first = coap.ack_timeout.mul_f64(coap.ack_random_factor);
        for (a, c) in &self.clocks {
            let overdue = match c.gives_up(&coap) {
                Some(at) => at <= self.now,
                None => c.first + latest_first < self.now,
            };
            if overdue {
                self.violations.push(format!(
                    "the bootstrap request at {a} ({c:?}) is still out at {:?}",
                    self.now
                ));
            }
        }
    }

    /// Device `dev`'s registration, while it lives (before its expiry).
    fn live_reg(&self, dev: u8) -> Option<&Reg> {
        self.regs.get(&dev).filter(|r| self.now < r.expires)
    }

    /// Whether the observation is live: its registration is (no Register replaced it,
    /// none ended it) and the server has no reason to end it (the model's devices send
    /// no error notification, and their observations never need moving where the
    /// endpoint's peer table is full).
    fn observation_live(&self, o: &Obs) -> bool {
        self.live_reg(o.dev)
            .is_some_and(|r| r.generation == o.generation)
    }

    /// The identity device `dev` speaks through: the one its registration was made with
    /// (its own, `i<dev>`, before any).
    fn own_identity(&self, dev: u8) -> u8 {
        self.registered_with.get(&dev).copied().unwrap_or(dev)
    }

    /// Checks the events not audited yet that end things the model keeps: a registration
    /// expires only once its time is up or while contested (a takeover probe may have
    /// ended it); an observation ends only with its registration.
    fn audit(&mut self) {
        let from = std::mem::replace(&mut self.audited, self.events.len());
        for i in from..self.events.len() {
            match &self.events[i] {
                DeviceEvent::Expired { device } => {
                    let dev = device.as_str()[1..].parse::<u8>().expect("e<n>");
                    match self.regs.get(&dev) {
                        Some(r) if r.expires <= self.now || r.contested => {
                            self.regs.remove(&dev);
                        }
                        r => self.violations.push(format!(
                            "e{dev}'s registration expired at {:?}: {r:?}",
                            self.now
                        )),
                    }
                }
                DeviceEvent::Bootstrap {
                    address: Some(a), ..
                } => {
                    self.bootstraps.remove(a);
                    if self.replacing != Some(*a) {
                        self.clocks.remove(a);
                    }
                }
                DeviceEvent::ObservationEnded { op, cause, .. } => {
                    if let Some(o) = self.observations.iter().find(|o| o.op == op.0)
                        && self.observation_live(o)
                    {
                        self.violations.push(format!(
                            "the live observation {} of e{} ended: {cause:?}",
                            o.op, o.dev
                        ));
                    }
                }
                _ => {}
            }
        }
    }

    /// A read of device `d` (`/3/0/(9 + d)/n`) leaves only through a session of the
    /// identity `d` registered with, while it belongs to `d`.
    fn check_request(&mut self, to: SocketAddr, session: Option<u8>, m: &Message) {
        let path: Vec<&str> = m.uri_path().collect();
        let [o, i, r, n] = path[..] else { return };
        let (Some(d), Ok(n)) = (
            (o == "3" && i == "0")
                .then(|| r.parse::<u8>().ok())
                .flatten()
                .and_then(|r| r.checked_sub(9)),
            n.parse::<u64>(),
        ) else {
            return;
        };
        self.left.insert(n);
        if session.is_some_and(|i| self.acts_for(i, d)) {
            return;
        }
        if let Some(i) = session
            && self.registering == Some(i)
            && self.owner[usize::from(i)] == Some(d)
        {
            // Queued requests go to a registration as it is made: right if the
            // Register being handled is accepted for `d` (checked once it is answered).
            self.provisional.push((
                i,
                d,
                format!("read {n} of e{d} left for {to} through i{i}, whose Register was refused"),
            ));
            return;
        }
        self.violations.push(format!(
            "read {n} of e{d} left for {to} through the session of {session:?}"
        ));
    }

    /// Sends `code` (an Update or a De-register) to device `dev`'s location from `addr`,
    /// through its identity or `impostor`'s. Answered `success` exactly when the identity
    /// acts for the device and its registration lives (liveness: the owner is never
    /// refused; safety: nobody else is taken); an Update then moves the registration to
    /// `addr` and renews it, a De-register ends it.
    fn send_to_location(
        &mut self,
        addr: u8,
        dev: u8,
        impostor: Option<u8>,
        code: Code,
        success: Code,
        what: &str,
    ) {
        let Some(location) = self.locations.get(&dev).cloned() else {
            return;
        };
        let ident = impostor.unwrap_or_else(|| self.own_identity(dev));
        let expected = self.acts_for(ident, dev) && self.live_reg(dev).is_some();
        let m = self.con(code, &format!("/{location}"));
        let answer = self.send(address(addr), ident, &m);
        let done = answer.as_ref().is_some_and(|a| a.code == success);
        if done && !self.acts_for(ident, dev) {
            self.violations
                .push(format!("i{ident} {what} e{dev}'s registration"));
        } else if done != expected {
            self.violations.push(format!(
                "i{ident}, e{dev}'s own identity, got {:?} for its {code:?} from {} \
                 (expected {what}: {expected}; the model's registration: {:?})",
                answer.map(|a| a.code),
                address(addr),
                self.regs.get(&dev)
            ));
        }
        if !done {
            return;
        }
        let (now, lifetime) = (
            self.now,
            Duration::from_secs(120) + self.server.config().lifetime_grace,
        );
        if code == Code::DELETE {
            self.regs.remove(&dev);
        } else if let Some(r) = self.regs.get_mut(&dev) {
            r.expires = now + lifetime;
            r.follow(addr, now);
        }
    }

    /// The hub submits `request` of `/3/0/(9 + dev)/<its number>` for device `dev`.
    fn submit(
        &mut self,
        submitted: &mut Vec<OpId>,
        dev: u8,
        request: fn(Lwm2mPath) -> DeviceRequest,
    ) {
        let id = OpId(submitted.len() as u64 + 1);
        submitted.push(id);
        self.device_of.insert(id.0, dev);
        let path = Lwm2mPath::resource_instance(3, 0, 9 + u16::from(dev), id.0 as u16);
        let device = DeviceId::new(&format!("e{dev}")).unwrap();
        let request = request(path);
        self.server.submit(
            self.now,
            DeviceOp {
                id,
                device,
                request,
            },
        );
        self.drain();
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(at) = self.server.poll_timeout().filter(|&at| at <= end) {
            self.now = self.now.max(at);
            self.server.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
        self.server.handle_timeout(self.now);
        self.drain();
    }
}

/// Runs `ops` against a server behind the emulated layer; fails on the first broken rule.
fn run(ops: Vec<Op>, seed: u64, nstart: usize) -> Result<(), TestCaseError> {
    let config = ServerConfig {
        auto_provision: true,
        nstart,
        ..ServerConfig::default()
    };
    let mut w = World {
        server: Lwm2mServer::with_seed(config, seed)
            .require_identity()
            .track_sessions()
            .with_bootstrap(Box::new(|r| {
                let account = ServerAccount::new(1, "coaps://hub.example:5684")
                    .with_psk(r.endpoint.clone(), vec![7; 16]);
                Some(BootstrapPlan::new(vec![account]))
            })),
        now: Instant::now(),
        mid: 0,
        owner: [Some(0), Some(1), Some(2), None],
        registered_with: HashMap::new(),
        registering: None,
        provisional: Vec::new(),
        sessions: HashMap::new(),
        locations: HashMap::new(),
        requests: Vec::new(),
        events: Vec::new(),
        observations: Vec::new(),
        left: HashSet::new(),
        sent: HashSet::new(),
        ended: HashSet::new(),
        regs: HashMap::new(),
        generation: 0,
        bootstraps: HashMap::new(),
        clocks: HashMap::new(),
        timed_out: HashSet::new(),
        replacing: None,
        device_of: HashMap::new(),
        audited: 0,
        violations: Vec::new(),
    };
    let mut submitted = Vec::new();
    for op in ops {
        step(&mut w, &mut submitted, op);
        w.audit();
        w.check_clocks();
        w.check_waiting(None, "after the step");
    }
    // Past every queue time-out (600 s), CoAP give-up and registration expiry.
    for _ in 0..8 {
        w.advance(Duration::from_secs(700));
        w.audit();
        w.check_clocks();
    }
    prop_assert!(w.violations.is_empty(), "{:#?}", w.violations);
    for id in &submitted {
        let mut ended = 0;
        let mut sent = 0;
        for e in &w.events {
            match e {
                DeviceEvent::Sent { op, .. } if op == id => {
                    prop_assert_eq!(ended, 0, "{:?} reported Sent after it ended", id);
                    sent += 1;
                }
                DeviceEvent::Response { op, .. } | DeviceEvent::TimedOut { op, .. } if op == id => {
                    ended += 1;
                }
                _ => {}
            }
        }
        prop_assert_eq!(ended, 1, "{:?} ended {} times: {:?}", id, ended, w.events);
        prop_assert!(sent <= 1, "{:?} Sent {} times", id, sent);
    }
    prop_assert_eq!(w.server.registered_count(), 0, "every registration expired");
    Ok(())
}

/// Runs one operation of the traffic, noting what breaks a rule in `w.violations`.
fn step(w: &mut World, submitted: &mut Vec<OpId>, op: Op) {
    match op {
        Op::Connect { addr, ident } => w.connect(address(addr), ident),
        Op::Close { addr } => w.close(address(addr)),
        Op::Register {
            addr,
            dev,
            name,
            impostor,
        } => register(w, addr, dev, name, impostor),
        Op::Update {
            addr,
            dev,
            impostor,
        } => w.send_to_location(addr, dev, impostor, Code::POST, Code::CHANGED, "updated"),
        Op::Deregister {
            addr,
            dev,
            impostor,
        } => w.send_to_location(
            addr,
            dev,
            impostor,
            Code::DELETE,
            Code::DELETED,
            "de-registered",
        ),
        Op::Read { dev } => {
            w.submit(submitted, dev, |path| DeviceRequest::Read { path });
        }
        Op::Answer { k } => answer(w, k),
        Op::Observe { dev } => {
            w.submit(submitted, dev, |path| DeviceRequest::Observe { path });
        }
        Op::Notify {
            k,
            addr,
            impostor,
            back,
            con,
        } => notify(w, k, addr, impostor, back, con),
        Op::Advance { secs } => w.advance(Duration::from_secs(u64::from(secs))),
        Op::Rebind { ident, to } => w.rebind(ident, to),
        Op::Bootstrap { addr, dev } => bootstrap(w, addr, dev),
    }
}

/// Device `dev` asks for a bootstrap from `addr` through its bootstrap identity (see
/// [`Op::Bootstrap`]). Liveness: answered 2.04; the Discover leaves at once when the
/// endpoint would send a request to the address at once (nothing else in flight there),
/// whatever registration holds the address. Safety (in `drain`): every bootstrap request
/// leaves only through a session of the identity that asked.
fn bootstrap(w: &mut World, addr: u8, dev: u8) {
    let ident = BOOTSTRAP + dev;
    let to = address(addr);
    // The session first, so that a request it lets out (`session_changed`) is not the
    // bootstrap's business.
    if w.sessions.get(&to) != Some(&ident) {
        w.connect(to, ident);
    }
    // A session there now is replaced: its request, forgotten, frees the address.
    let replaced = w.bootstraps.get(&to).is_some_and(|(_, c)| c.is_some());
    let free = w.server.endpoint().would_send_now(to);
    let mut m = w.con(Code::POST, "/bs");
    m.add_uri_query(&format!("ep=e{dev}"));
    w.bootstraps.insert(to, (ident, None));
    // The replaced session's request is forgotten: its clock stops.
    w.clocks.remove(&to);
    w.replacing = Some(to);
    let answer = w.send(to, ident, &m);
    // The session replaced there ends (`Failed`): audited now, not to end the new one.
    let new = w.bootstraps.get(&to).cloned();
    w.audit();
    w.replacing = None;
    if let Some(new) = new {
        w.bootstraps.insert(to, new);
    }
    if answer.as_ref().map(|a| a.code) != Some(Code::CHANGED) {
        w.violations.push(format!(
            "b{dev}'s Bootstrap-Request from {to} got {:?}",
            answer.map(|a| a.code)
        ));
    }
    let discover = w.bootstraps.get(&to).is_some_and(|(_, c)| c.is_some());
    if free && !replaced && !discover {
        w.violations.push(format!(
            "b{dev}'s bootstrap at {to}: no Discover left through its session (the \
             registration there: {:?})",
            w.server.identity_at(to)
        ));
    }
}

/// Whether `request` at `to` is the request out of the bootstrap session there, and the
/// session at `to` is of the identity that asked: `Some(finish)` (whether it is the
/// Finish) if so.
fn bootstrap_request_out(w: &World, to: SocketAddr, request: &Message) -> Option<bool> {
    let (asked, Some((mid, token, finish))) = w.bootstraps.get(&to)? else {
        return None;
    };
    (w.sessions.get(&to) == Some(asked)
        && *mid == request.message_id
        && token[..] == *request.token().as_bytes())
    .then_some(*finish)
}

/// The answer to the bootstrap server's request out at `to` (`finish`: the Finish, see
/// [`bootstrap_request_out`]) went through the session of the identity that asked: the
/// session goes on (its next request leaves, when the endpoint would send one to the
/// address at once) or, the Finish answered, ends `Finished`.
fn bootstrap_answered(
    w: &mut World,
    to: SocketAddr,
    request: &Message,
    finish: bool,
    events: usize,
) {
    let mid = request.message_id;
    let outcome = w.events[events..].iter().find_map(|e| match e {
        DeviceEvent::Bootstrap {
            address: Some(a),
            outcome,
            ..
        } if *a == to => Some(outcome.clone()),
        _ => None,
    });
    let next = w
        .bootstraps
        .get(&to)
        .and_then(|(_, c)| c.as_ref())
        .is_some_and(|(m, _, _)| *m != mid);
    let ok = match outcome {
        Some(crate::transport::BootstrapOutcome::Finished) => finish,
        Some(_) => false,
        None => !finish && (next || !w.server.endpoint().would_send_now(to)),
    };
    if !ok {
        w.violations.push(format!(
            "the bootstrap at {to}, its {} answered through the asking identity's session, \
             did not go on: {:?}",
            request.code,
            &w.events[events..]
        ));
    }
}

/// Device `dev` registers from `addr` (see [`Op::Register`]). Safety: only through an
/// identity of the device it names. Liveness: through one, it is accepted when the device
/// has no live registration, or one made with that identity or at that address (the
/// takeover probe is for another identity at another address only).
fn register(w: &mut World, addr: u8, dev: u8, name: bool, impostor: Option<u8>) {
    let ident = impostor.unwrap_or(dev);
    let owner = w.owner[usize::from(ident)];
    let named = if name { Some(dev) } else { owner };
    // The identity belongs to the device named (none named: it names its own).
    let its_own = named.filter(|&n| owner == Some(n));
    let must_accept = its_own.is_some_and(|n| {
        w.live_reg(n)
            .is_none_or(|r| w.registered_with.get(&n) == Some(&ident) || r.addr == addr)
    });
    let mut m = w.con(Code::POST, "/rd");
    if name {
        m.add_uri_query(&format!("ep=e{dev}"));
    }
    m.add_uri_query("lt=120");
    m.payload = b"</3/0>".to_vec();
    w.registering = Some(ident);
    let answer = w.send(address(addr), ident, &m);
    w.registering = None;
    let accepted = answer.as_ref().is_some_and(|a| a.code == Code::CREATED);
    for (i, d, wrong) in std::mem::take(&mut w.provisional) {
        if !(accepted && named == Some(d) && i == ident) {
            w.violations.push(wrong);
        }
    }
    if must_accept && !accepted {
        w.violations.push(format!(
            "i{ident}'s Register of e{} from {} got {:?} (the model's registration: {:?})",
            named.unwrap_or(dev),
            address(addr),
            answer.as_ref().map(|a| a.code),
            named.and_then(|n| w.regs.get(&n))
        ));
    }
    let Some(a) = answer.filter(|a| a.code == Code::CREATED) else {
        // Refused through an identity of the device, with a registration live: the
        // takeover check (a probe of its address may end it).
        if let Some(r) = its_own.and_then(|n| w.regs.get_mut(&n)) {
            r.contested = true;
        }
        return;
    };
    // No endpoint named: the identity's device.
    let Some(named) = named else {
        w.violations
            .push(format!("i{ident}, of no device, registered unnamed"));
        return;
    };
    if owner != Some(named) {
        w.violations.push(format!("i{ident} registered e{named}"));
    }
    let location = a.location_path().collect::<Vec<_>>().join("/");
    w.locations.insert(named, location);
    w.registered_with.insert(named, ident);
    w.generation += 1;
    let expires = w.now + Duration::from_secs(120) + w.server.config().lifetime_grace;
    w.regs.insert(named, Reg::new(w.generation, addr, expires));
}

/// The `k`-th request that left (see [`Op::Answer`]) is answered 2.05 through the session
/// at its destination. Safety: taken only from an identity that acts for its device.
/// Liveness: from one that does, an operation reported `Sent` and not ended ends with it
/// (`Response` Ok); an Observe's starts an observation.
fn answer(w: &mut World, k: u8) {
    if w.requests.is_empty() {
        return;
    }
    let (to, request) = w.requests.remove(usize::from(k) % w.requests.len());
    let Some(&ident) = w.sessions.get(&to) else {
        return;
    };
    let code = match request.code {
        Code::GET => Code::CONTENT,
        Code::DELETE => Code::DELETED,
        _ => Code::CHANGED,
    };
    let mut answer = Message::new(MessageType::Acknowledgement, code, request.message_id);
    answer.with_token(request.token());
    answer.payload = b"80".to_vec();
    let observe = request.observe() == Some(0);
    if observe {
        answer.set_observe(2);
    }
    // The operation, by its path `/3/0/(9 + d)/n` (none for a takeover probe's `/1`).
    let path: Vec<&str> = request.uri_path().collect();
    let op = match path[..] {
        [_, _, r, n] => r
            .parse::<u8>()
            .ok()
            .and_then(|r| r.checked_sub(9))
            .zip(n.parse::<u64>().ok()),
        _ => None,
    };
    let expected = op
        .is_some_and(|(d, n)| w.acts_for(ident, d) && w.sent.contains(&n) && !w.ended.contains(&n));
    let events = w.events.len();
    let bootstrap = bootstrap_request_out(w, to, &request);
    // A bootstrap request that timed out (its session failed): a late answer changes
    // nothing (the session, or a new one at the address, goes on as it was).
    let late = w.timed_out.contains(&(to, request.message_id))
        && (request.code != Code::GET || request.uri_path().next().is_none());
    let session = w.bootstraps.get(&to).cloned();
    // An answer to the bootstrap request out through the asking identity's session ends
    // its exchange: no time-out (the next request's clock starts when it leaves).
    // Through another identity's, it is not the device's: the exchange goes on.
    let asked = w
        .bootstraps
        .get(&to)
        .is_some_and(|&(asked, _)| asked == ident);
    if asked
        && w.clocks
            .get(&to)
            .is_some_and(|c| c.mid == request.message_id)
    {
        w.clocks.remove(&to);
    }
    w.send(to, ident, &answer);
    if let Some(finish) = bootstrap {
        bootstrap_answered(w, to, &request, finish, events);
    }
    if late {
        let ended = w.events[events..]
            .iter()
            .any(|e| matches!(e, DeviceEvent::Bootstrap { address: Some(a), .. } if *a == to));
        if ended || w.bootstraps.get(&to) != session.as_ref() {
            w.violations.push(format!(
                "a late answer to the bootstrap request {} at {to}, timed out, was taken: \
                 {session:?} -> {:?}, {:?}",
                request.message_id,
                w.bootstraps.get(&to),
                &w.events[events..]
            ));
        }
    }
    let Some((d, n)) = op else {
        return;
    };
    let done = w.events[events..]
        .iter()
        .any(|e| matches!(e, DeviceEvent::Response { op, result: Ok(_), .. } if op.0 == n));
    if done && !w.acts_for(ident, d) {
        w.violations
            .push(format!("i{ident} answered operation {n} for e{d}"));
    } else if done != expected {
        w.violations.push(format!(
            "i{ident}'s answer to operation {n} of e{d} at {to} was taken: {done} (expected \
             {expected}: Sent {}, ended {})",
            w.sent.contains(&n),
            w.ended.contains(&n)
        ));
    }
    if done
        && observe
        && let Some(generation) = w.regs.get(&d).map(|r| r.generation)
    {
        w.observations.push(Obs {
            token: request.token().as_bytes().to_vec(),
            dev: d,
            op: n,
            generation,
            sent: 2,
            last: (2, w.now),
        });
    }
}

/// The device of the `k`-th observation notifies (see [`Op::Notify`]). Safety: through
/// an identity that does not act for the device, it is neither taken nor moves the
/// registration. Liveness: through one that does, on a live observation, it is taken
/// (reaches the hub as a notification) exactly unless it is stale (RFC 7641 §3.4
/// against the last taken) or comes from an address the registration left less than
/// `LEFT_ADDRESS_MEMORY` ago (late across a NAT rebinding); from a new address, taken,
/// it moves the registration there.
fn notify(w: &mut World, k: u8, addr: u8, impostor: Option<u8>, back: u8, con: bool) {
    if w.observations.is_empty() {
        return;
    }
    let at = usize::from(k) % w.observations.len();
    let o = &mut w.observations[at];
    let seq = model_rules::observe_number(&mut o.sent, back);
    let (token, dev, last) = (o.token.clone(), o.dev, o.last);
    let ident = impostor.unwrap_or_else(|| w.own_identity(dev));
    let owner = w.acts_for(ident, dev);
    let live = w.observation_live(&w.observations[at]);
    let is_fresh = model_rules::fresh(last, seq, w.now);
    let left_lately = w.live_reg(dev).is_some_and(|r| r.left_lately(addr, w.now));
    let expected = owner && live && is_fresh && !left_lately;
    let device = DeviceId::new(&format!("e{dev}")).unwrap();
    let was = w.server.registration(&device).and_then(|r| r.address);
    w.mid = w.mid.wrapping_add(1);
    let mtype = if con {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    };
    let mut m = Message::new(mtype, Code::CONTENT, w.mid);
    m.set_token(&token);
    m.set_observe(seq);
    m.payload = b"81".to_vec();
    let events = w.events.len();
    let reply = w.send_for_reply(address(addr), ident, &m);
    let taken = w.events[events..]
        .iter()
        .any(|e| matches!(e, DeviceEvent::Notification { device: d, .. } if *d == device));
    if !owner {
        let now = w.server.registration(&device).and_then(|r| r.address);
        if taken || (now != was && now == Some(address(addr))) {
            w.violations.push(format!(
                "i{ident}'s notification on e{dev}'s token from {} was taken \
                 ({taken}) or moved e{dev} there ({was:?} -> {now:?})",
                address(addr)
            ));
        }
        return;
    }
    if con && live && reply.is_none() {
        w.violations.push(format!(
            "e{dev}'s confirmable notification {seq} through i{ident} from {} got no ACK \
             or RST (live {live}, fresh {is_fresh}, left lately {left_lately}, {:?})",
            address(addr),
            w.regs.get(&dev)
        ));
    }
    if taken != expected {
        w.violations.push(format!(
            "e{dev}'s notification {seq} through i{ident} from {} was taken: {taken} \
             (expected {expected}: observation live {live}, fresh {is_fresh} against {}, \
             from an address left lately {left_lately}; the model's registration: {:?})",
            address(addr),
            last.0,
            w.regs.get(&dev)
        ));
    }
    if taken {
        w.observations[at].last = (seq, w.now);
        let now = w.now;
        if let Some(r) = w.regs.get_mut(&dev).filter(|r| r.addr != addr) {
            r.follow(addr, now);
        }
    }
}

/// Device `dev` registers from `addr` through its own identity, naming no endpoint.
fn register_op(addr: u8, dev: u8) -> Op {
    Op::Register {
        addr,
        dev,
        name: false,
        impostor: None,
    }
}

proptest! {
    // 256 cases unless `PROPTEST_CASES` says otherwise (a long run: `PROPTEST_CASES=20000`).
    #![proptest_config(ProptestConfig::default())]
    #[test]
    fn no_identity_acts_for_another_device_and_every_operation_ends_once(
        ops in proptest::collection::vec(op(), 1..60),
        seed in any::<u64>(),
        nstart in 1usize..4,
    ) {
        run(ops, seed, nstart)?;
    }
}

/// The model's first finding, as a plain test: e2 moved to a new address (its
/// notification came from there), then a session of another device's identity took that
/// address and notified on e2's token. The server took the values as e2's: a
/// notification from the registration's own address was never checked against the
/// identity (only one from a new address was).
#[test]
fn a_notification_through_another_identitys_session_is_not_the_devices() {
    let ops = vec![
        register_op(0, 2),
        Op::Observe { dev: 2 },
        Op::Answer { k: 0 },
        Op::Notify {
            k: 0,
            addr: 2,
            impostor: None,
            back: 0,
            con: false,
        },
        Op::Notify {
            k: 0,
            addr: 2,
            impostor: Some(0),
            back: 0,
            con: false,
        },
    ];
    run(ops, 0, 1).unwrap();
}

/// Likewise for an answer: a Read of e1 left through e1's session; a session of the
/// identity of no device then took e1's address and answered it. Before, the server
/// took the answer as e1's.
#[test]
fn an_answer_through_another_identitys_session_is_not_the_devices() {
    let ops = vec![
        Op::Register {
            addr: 1,
            dev: 1,
            name: true,
            impostor: None,
        },
        Op::Read { dev: 1 },
        Op::Connect { addr: 1, ident: 3 },
        Op::Answer { k: 0 },
    ];
    run(ops, 0, 1).unwrap();
}

/// The liveness oracle's first finding: e1 registered at port 1 and e0 at port 0; behind
/// a NAT e0's device now has port 1 (a session of its own identity there) and
/// de-registers. The server took the De-register (e0's registration ended) but its 2.02
/// never left: the layer let a datagram out only through a session of the identity of
/// the registration at its destination (e1's), answers included, so the device
/// retransmitted its De-register into silence until CoAP gave up. An answer (ACK or RST)
/// goes back through the session it answers now.
#[test]
fn a_deregister_from_an_address_another_registration_holds_is_answered() {
    let ops = vec![
        register_op(1, 1),
        register_op(0, 0),
        Op::Deregister {
            addr: 1,
            dev: 0,
            impostor: None,
        },
    ];
    run(ops, 0, 1).unwrap();
}

/// The liveness oracle's second finding: e0 (port 0) is observed and notifies, confirmable,
/// Observe 3, taken; its ACK is lost and behind a NAT e0's device now has port 1, where
/// e1 is registered, and retransmits the notification from there, through its own
/// identity. Not fresh (the number was taken), it moves nothing, but it must be
/// acknowledged: unanswered, the device retransmits until CoAP gives up and then drops
/// the observation (RFC 7641 §4.5) while the hub still counts on it. It was dropped
/// unseen, judged by the identity of the registration at port 1 (e1's): the observation
/// of the token was looked for among fresh notifications only. It is judged by its
/// observation's registration, as a fresh one is, and acknowledged.
#[test]
fn a_stale_confirmable_notification_from_another_registrations_address_is_acknowledged() {
    let ops = vec![
        register_op(1, 1),
        register_op(0, 0),
        Op::Observe { dev: 0 },
        Op::Answer { k: 0 },
        Op::Notify {
            k: 0,
            addr: 0,
            impostor: None,
            back: 0,
            con: true,
        },
        Op::Notify {
            k: 0,
            addr: 1,
            impostor: None,
            back: 1,
            con: true,
        },
    ];
    run(ops, 0, 1).unwrap();
}

/// e0 registered at port 0 bootstraps again from there (its bootstrap identity's session
/// takes the port, and the Discover goes out through it); its own identity's session
/// comes back and the hub reads it: the Read waits behind the Discover (CoAP NSTART),
/// which the layer no longer lets out (the session is not the asking identity's). When
/// the Discover's exchange gives up (the model predicts when, from its first
/// retransmission), the session fails and the Read goes; a late answer to the Discover
/// then changes nothing.
#[test]
fn a_bootstrap_request_that_times_out_fails_its_session_and_frees_the_address() {
    let ops = vec![
        register_op(0, 0),
        Op::Bootstrap { addr: 0, dev: 0 },
        Op::Connect { addr: 0, ident: 0 },
        Op::Read { dev: 0 },
        Op::Advance { secs: 100 },
        // The Discover (late), then the Read.
        Op::Answer { k: 0 },
        Op::Answer { k: 0 },
    ];
    run(ops, 0, 1).unwrap();
}

/// The time-out check's finding: e0 bootstraps through `b0` at port 0 (the Discover goes
/// out through its session); a session of `i0` then takes the port and answers the
/// Discover. The server took the answer as the bootstrap's and sent the next request (a
/// Write, with keys, held back by the layer) while the Discover's answer had come from
/// another identity than the one that asked: an answer through any session moved a
/// bootstrap on, the Finish's too (reported `Finished`). A bootstrap request's answer
/// counts only through a session of the identity that asked, as its requests leave only
/// through one.
#[test]
fn a_bootstrap_requests_answer_through_another_identitys_session_is_not_taken() {
    let ops = vec![
        Op::Bootstrap { addr: 0, dev: 0 },
        Op::Connect { addr: 0, ident: 0 },
        Op::Answer { k: 0 },
    ];
    run(ops, 0, 1).unwrap();
}

/// CoAP's duplicate detection is keyed by address: `a` registered through its session at
/// port 1; a session of `b` then took the port (a NAT gave it to `b`'s device) and
/// `b`'s first Register happened to carry the message id and token of `a`'s. It was
/// taken for `a`'s retransmission and answered with the 2.01 `a` was sent (`a`'s
/// location), `b` unregistered. A session of another identity at an address starts with
/// nothing remembered, so `b`'s Register is taken.
#[test]
fn another_identitys_session_at_an_address_is_not_answered_from_the_previous_ones_replies() {
    let mut server = Lwm2mServer::with_seed(
        ServerConfig {
            auto_provision: true,
            ..ServerConfig::default()
        },
        7,
    )
    .require_identity()
    .track_sessions();
    let now = Instant::now();
    let port = SocketAddr::from(([127, 0, 0, 1], 1));
    let id = |ep: &str| PeerIdentity {
        psk_identity: std::sync::Arc::from(format!("i-{ep}")),
        device: Some(DeviceId::new(ep).unwrap()),
    };
    let register = |ep: &str| {
        let mut m = Message::new(MessageType::Confirmable, Code::POST, 10);
        m.set_token(&[1, 2, 3, 4]).unwrap();
        m.add_uri_path("rd");
        m.add_uri_query(&format!("ep={ep}"));
        m.payload = b"</3/0>".to_vec();
        m.to_bytes().unwrap()
    };
    let created = |server: &mut Lwm2mServer| {
        let answers: Vec<Message> = std::iter::from_fn(|| server.poll_transmit())
            .map(|t| Message::decode(&t.payload).unwrap())
            .collect();
        let [answer] = answers.as_slice() else {
            panic!("one answer: {answers:?}");
        };
        assert_eq!(answer.code, Code::CREATED, "{answer:?}");
        answer.location_path().collect::<Vec<_>>().join("/")
    };
    server.session_changed(now, port, Some(&id("a")));
    server.handle_datagram_from(now, port, Some(&id("a")), &register("a"));
    let a = created(&mut server);
    server.session_changed(now, port, Some(&id("b")));
    server.handle_datagram_from(now, port, Some(&id("b")), &register("b"));
    let b = created(&mut server);
    assert_ne!(a, b, "b was sent a's registration");
    assert!(server.registration(&DeviceId::new("b").unwrap()).is_some());
}
