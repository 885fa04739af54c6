//! The LwM2M server under random traffic (sans-IO): three devices register, update,
//! de-register and answer from four addresses in any order (NAT rebinding, a port given
//! to another device, answers from the wrong address), the hub reads them, time moves.
//! Devices may be in queue mode, the server may send up to 3 requests at once
//! (`nstart`), and an answer may refuse the format (4.06, the server falls back).
//! Whatever happens, every operation ends exactly once (an answer, a failure or a
//! time-out) within a bounded time, is reported `Sent` at most once, and never after it
//! ended. The hub also observes, and devices notify (confirmable or not) from any of the
//! addresses. And every request for a device goes where that device last spoke from in a
//! message the server took (a Register answered 2.01, an Update answered 2.04, a
//! notification it reported as the device's), never to an address another device took
//! since in such a message; a device's operations first go out in the order they were
//! submitted, and one reported `Sent` left then (its request is among the datagrams the
//! server gives out with the event). A takeover probe (GET /1) likewise goes only to the address its
//! registration's device last spoke from, while no other device took it since (a probe
//! left running after the device moved kept being retransmitted to the address left).
//! A notification a device's registration reports from the address it was displaced from
//! (another device's Register or Update, or its notification, took the address; or a
//! Register of another registration's device, even refused, spoke from it) takes the
//! address back exactly when no live registration holds it now (the holder expired,
//! de-registered, moved on, or was displaced in turn), reported as `AddressChanged`; while
//! one does, it may be late, so the server takes its values and moves nothing: the device
//! stays displaced and nothing is sent to it. The model predicts which (each registration's
//! expiry, its takeover contest, who holds each address), and checks that a registration
//! moves (`AddressChanged`) exactly when it predicts a move. It also predicts whether a
//! notification is taken at all (reported as the device's): exactly when its observation is
//! live (the server took the Observe's answer, or the notification itself as its separate
//! response, under the registration that lives now) and it does not come from an address
//! the registration left less than `LEFT_ADDRESS_MEMORY` ago, one of the last
//! `MAX_LEFT_ADDRESSES` (sent before a NAT rebinding, arrived late), and it is fresh (RFC
//! 7641 §3.4: devices also repeat their last notification or the one before, duplicated or
//! reordered). A registration expires only once its time is up, or while a takeover probe
//! may be out. A confirmable notification on a live observation is answered (ACK or RST),
//! taken or not. And after every step no request of a device that is not in queue mode
//! waits while it could go (its registration holds an address, fewer of its requests than
//! NSTART are out, the CoAP endpoint would send there at once).

#![cfg(feature = "lwm2m")]

#[path = "../src/lwm2m/server/model_rules.rs"]
mod model_rules;
mod server_sim;

use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType, OBSERVE_FRESHNESS};
use twinhub::lwm2m::server::{LEFT_ADDRESS_MEMORY, Lwm2mServer, MAX_LEFT_ADDRESSES, ServerConfig};
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, OpId, Transport};
use twinhub::{DeviceId, Lwm2mPath};

#[derive(Clone, Debug)]
enum Op {
    /// `queue`: in queue mode (`b=UQ`: the device sleeps between its messages).
    Register {
        dev: u8,
        addr: u8,
        queue: bool,
    },
    Update {
        dev: u8,
        addr: u8,
    },
    Deregister {
        dev: u8,
        addr: u8,
    },
    /// The hub reads device `dev` (resource `/3/0/(9 + dev)`, so that each request
    /// names its device).
    Read {
        dev: u8,
    },
    /// The request the server sent `k`-th (modulo those unanswered) is answered 2.05
    /// (or, `refuse`, 4.06 Not Acceptable: the server falls back to another format), from
    /// its destination or (`elsewhere`) from another address.
    Answer {
        k: u8,
        elsewhere: Option<u8>,
        refuse: bool,
    },
    Advance {
        secs: u16,
    },
    /// The hub observes device `dev`'s resource `/3/0/(9 + dev)`; an answer to it
    /// (`Answer`) starts the observation.
    Observe {
        dev: u8,
    },
    /// The device of the `k`-th observation answered (modulo their number) notifies,
    /// confirmable or not, from address `from` (its own, or another: NAT rebinding, or a
    /// port another device had), with the next Observe number (`back` 0), or again with
    /// the last one it sent (1) or the one before (2): duplicated or reordered.
    Notify {
        k: u8,
        from: u8,
        con: bool,
        back: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 0u8..4, any::<bool>()).prop_map(|(dev, addr, queue)| Op::Register { dev, addr, queue }),
        3 => (0u8..3, 0u8..4).prop_map(|(dev, addr)| Op::Update { dev, addr }),
        1 => (0u8..3, 0u8..4).prop_map(|(dev, addr)| Op::Deregister { dev, addr }),
        4 => (0u8..3).prop_map(|dev| Op::Read { dev }),
        4 => (any::<u8>(), proptest::option::of(0u8..4), proptest::bool::weighted(0.2))
            .prop_map(|(k, elsewhere, refuse)| Op::Answer { k, elsewhere, refuse }),
        2 => (1u16..200).prop_map(|secs| Op::Advance { secs }),
        2 => (0u8..3).prop_map(|dev| Op::Observe { dev }),
        3 => (any::<u8>(), 0u8..4, any::<bool>(), prop_oneof![6 => Just(0u8), 1 => 1u8..3])
            .prop_map(|(k, from, con, back)| Op::Notify { k, from, con, back }),
    ]
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 9], 5000 + u16::from(n)))
}

struct World {
    server: Lwm2mServer,
    now: Instant,
    mid: u16,
    /// Each device's location, once a Register was answered 2.01.
    locations: HashMap<u8, String>,
    /// GETs the server sent and nobody answered yet: (destination, message).
    requests: Vec<(SocketAddr, Message)>,
    events: Vec<DeviceEvent>,
    /// Messages the server took (by their answer), numbered in order: each device's
    /// latest, and each address's latest (whose device, which number).
    taken: u64,
    device_at: HashMap<u8, (SocketAddr, u64)>,
    address_of: HashMap<SocketAddr, (u8, u64)>,
    /// Requests sent to the wrong device or address, with the world's state then.
    misrouted: Vec<String>,
    /// Observes answered 2.05 (the server may have taken the answer or not).
    observations: Vec<Obs>,
    /// Takeover probes seen going out (by token), and the device each one probes.
    probes: HashMap<Vec<u8>, u8>,
    /// Each device's live registration as the model predicts it.
    regs: HashMap<u8, Reg>,
    /// Registers accepted (`Reg::generation`).
    generation: u64,
    /// Each operation's device, and the operations reported `Sent` and those ended
    /// (`Response` or `TimedOut`).
    device_of: HashMap<u64, u8>,
    sent: HashSet<u64>,
    ended: HashSet<u64>,
    /// Registrations' moves (`AddressChanged`) seen, and those the model predicted.
    moves_seen: usize,
    moves_predicted: usize,
    /// Operations (by number) seen going out, and each device's latest first sent.
    first_sent: HashSet<u16>,
    last_first_sent: HashMap<u8, u16>,
}

/// Stands for no device in `World::address_of`: a Register of a registration's device
/// from an address another registration held displaced that one, and was refused
/// (takeover), so nobody holds the address.
const NOBODY: u8 = u8::MAX;

/// The registration lifetimes the model's devices ask for, and the server's grace after.
const LIFETIME: Duration = Duration::from_secs(120);
const LONG_LIFETIME: Duration = Duration::from_secs(86_400);
const GRACE: Duration = Duration::from_secs(30);

/// The model's view of a device's live registration.
type Reg = model_rules::Reg<SocketAddr>;

/// An Observe answered 2.05 by its device.
#[derive(Clone)]
struct Obs {
    token: Vec<u8>,
    dev: u8,
    /// Its Observe operation's number.
    op: u64,
    /// The highest Observe number its device sent (the answer's 2, then one up with
    /// each new notification).
    seq: u32,
    /// The Observe number of the last notification taken (or of the answer), and when.
    last: (u32, Instant),
    /// The registration it was made under (`Reg::generation`), when the server took the
    /// answer (`Response` Ok): it goes with that registration.
    generation: Option<u64>,
}

/// Who sent a message the model delivers, and how to tell whether the server took it.
#[derive(Clone, Copy)]
enum Speaker {
    /// Not a device's own message, or one whose taking the model does not follow.
    Other,
    /// Device `dev`'s Register or Update: taken when answered 2.01 or 2.04.
    Registration(u8),
    /// Device `dev`'s notification: taken when the server reports it as `dev`'s (the
    /// token is the proof); the registration is then where it came from.
    Notification(u8),
}

impl World {
    fn con(&mut self, code: Code, path: &str) -> Message {
        self.mid = self.mid.wrapping_add(1);
        let mut m = Message::request(code, path);
        m.mtype = MessageType::Confirmable;
        m.message_id = self.mid;
        m.set_token(&self.mid.to_be_bytes());
        m
    }

    /// Delivers `m` from `from` (sent by device `dev`, if a device's own message), then
    /// takes what the server sends and reports, noting whether it took the message.
    fn send(
        &mut self,
        from: SocketAddr,
        m: &Message,
        speaker: Speaker,
    ) -> Vec<(SocketAddr, Message)> {
        let events_before = self.events.len();
        self.server
            .handle_datagram(self.now, from, &m.to_bytes().expect("encodes"));
        let out = self.take();
        let mut taken = match speaker {
            Speaker::Other => None,
            Speaker::Registration(dev) => out
                .iter()
                .any(|(to, a)| {
                    *to == from
                        && a.message_id == m.message_id
                        && a.mtype == MessageType::Acknowledgement
                        && (a.code == Code::CREATED || a.code == Code::CHANGED)
                })
                .then_some(dev),
            Speaker::Notification(dev) => {
                let name = format!("e{dev}");
                self.events[events_before..]
                    .iter()
                    .any(|e| matches!(e, DeviceEvent::Notification { device, .. } if device.as_str() == name))
                    .then_some(dev)
            }
        };
        // Whether the message moves its device's registration (`AddressChanged`): only a
        // notification taken from another address than the registration's, or from the
        // one it was displaced from while no live registration holds that address.
        let mut moves = None;
        if let (Speaker::Notification(dev), Some(_)) = (speaker, taken) {
            let at = self.device_at.get(&dev).map(|&(a, _)| a);
            let holder = self.address_of.get(&from).map(|&(d, _)| d);
            let displaced_from_here = at == Some(from) && holder != Some(dev);
            let held = holder.filter(|&h| self.holds(h, from));
            moves =
                Some(dev).filter(|_| at != Some(from) || (displaced_from_here && held.is_none()));
            if displaced_from_here && held.is_some() {
                // From the address the registration was displaced from, which another
                // live registration holds: it may have been sent before, and arrived
                // late. The server takes its values and moves nothing: the device stays
                // displaced, and nothing may be sent to it.
                taken = None;
            }
        }
        self.check_moves(events_before, moves);
        if let Some(dev) = taken {
            self.taken += 1;
            self.device_at.insert(dev, (from, self.taken));
            self.address_of.insert(from, (dev, self.taken));
        }
        self.check_routing(&out);
        out
    }

    /// Whether device `h`'s registration holds `addr` in the server: it lives, it last
    /// spoke from `addr`, and nobody took the address since.
    fn holds(&self, h: u8, addr: SocketAddr) -> bool {
        self.live(h)
            && self.device_at.get(&h).map(|&(a, _)| a) == Some(addr)
            && self.address_of.get(&addr).map(|&(d, _)| d) == Some(h)
    }

    /// Whether device `dev` has a live registration (the model's prediction).
    fn live(&self, dev: u8) -> bool {
        self.regs.get(&dev).is_some_and(|r| self.now < r.expires)
    }

    /// The registration moves (`AddressChanged`) the server reported since `from`
    /// events: exactly `dev`'s, once, if the model predicts a move of `dev`, else none.
    fn check_moves(&mut self, from: usize, dev: Option<u8>) {
        let moved: Vec<String> = self.events[from..]
            .iter()
            .filter_map(|e| match e {
                DeviceEvent::AddressChanged { device, .. } => Some(device.as_str().to_owned()),
                _ => None,
            })
            .collect();
        self.moves_seen += moved.len();
        let expected: Vec<String> = dev.iter().map(|d| format!("e{d}")).collect();
        self.moves_predicted += expected.len();
        if moved != expected {
            self.misrouted.push(format!(
                "at {:?} the server moved {moved:?}, the model predicted {expected:?} \
                 (devices at {:?}, addresses of {:?}, registrations {:?})",
                self.now, self.device_at, self.address_of, self.regs
            ));
        }
    }

    /// What the server sends and reports on its own (a submission, time passing): it
    /// moves no registration.
    fn drain(&mut self) -> Vec<(SocketAddr, Message)> {
        let events_before = self.events.len();
        let out = self.take();
        self.check_moves(events_before, None);
        self.check_routing(&out);
        out
    }

    /// Each Read of device `d` (`/3/0/(9 + d)`) must go to the address `d` last spoke
    /// from in a message the server took, and no other device may have spoken from
    /// there since in one.
    fn check_routing(&mut self, out: &[(SocketAddr, Message)]) {
        for (to, m) in out {
            if m.code != Code::GET {
                continue;
            }
            if m.uri_path_string() == "1" {
                self.check_probe(*to, m);
                continue;
            }
            let path: Vec<String> = m.uri_path().map(str::to_owned).collect();
            let [o, i, r, n] = &path[..] else { continue };
            let Some(d) = (o == "3" && i == "0")
                .then(|| r.parse::<u8>().ok())
                .flatten()
                .and_then(|r| r.checked_sub(9))
            else {
                continue;
            };
            // Order: a device's operations first go out in the order they were submitted.
            let n: u16 = n.parse().expect("the operation's number");
            if self.first_sent.insert(n) {
                let last = self.last_first_sent.entry(d).or_insert(0);
                if n < *last {
                    self.misrouted.push(format!(
                        "e{d}'s operation {n} first went out after its operation {last}"
                    ));
                }
                *last = (*last).max(n);
            }
            let at = self.device_at.get(&d).map(|&(a, _)| a);
            let holder = self.address_of.get(to).map(|&(dev, _)| dev);
            if at != Some(*to) || holder != Some(d) {
                self.misrouted.push(format!(
                    "a read of e{d} went to {to}: e{d} last spoke from {at:?}, {to} last \
                     spoke for {holder:?}"
                ));
            }
        }
    }

    /// A takeover probe (GET /1) asks whether a registration's device is still at the
    /// registration's address: it goes where its device last spoke from in a message the
    /// server took, and only while no other device spoke from there since. Its device is
    /// the one at its destination when it first goes out; a retransmission is checked
    /// against the same device (one that moved since must not be probed at the address
    /// it left, nor the device there now asked for it).
    fn check_probe(&mut self, to: SocketAddr, m: &Message) {
        let token = m.token().as_bytes().to_vec();
        let dev = match self.probes.get(&token) {
            Some(&dev) => dev,
            None => {
                let Some(&(dev, _)) = self.address_of.get(&to) else {
                    self.misrouted.push(format!(
                        "a takeover probe went to {to}, where no device spoke"
                    ));
                    return;
                };
                self.probes.insert(token, dev);
                dev
            }
        };
        let at = self.device_at.get(&dev).map(|&(a, _)| a);
        let holder = self.address_of.get(&to).map(|&(d, _)| d);
        if at != Some(to) || holder != Some(dev) {
            self.misrouted.push(format!(
                "a takeover probe of e{dev} went to {to}: e{dev} last spoke from {at:?}, \
                 {to} last spoke for {holder:?}"
            ));
        }
    }

    fn take(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut out = Vec::new();
        while let Some(t) = self.server.poll_transmit() {
            let m = Message::decode(&t.payload).expect("the server's datagrams decode");
            if m.code == Code::GET && m.mtype == MessageType::Confirmable {
                // Retransmissions replace the copy kept (same message id).
                self.requests
                    .retain(|(_, r)| r.message_id != m.message_id || r.token() != m.token());
                self.requests.push((t.destination, m.clone()));
            }
            out.push((t.destination, m));
        }
        // `Sent` says the operation's first transmission left: its request is among the
        // datagrams out now (or went before).
        let on_wire: Vec<u16> = out
            .iter()
            .filter(|(_, m)| m.code == Code::GET)
            .filter_map(|(_, m)| m.uri_path().nth(3).and_then(|n| n.parse().ok()))
            .collect();
        while let Some(e) = self.server.poll_event() {
            if let DeviceEvent::Sent { op, .. } = &e {
                let n = op.0 as u16;
                if !on_wire.contains(&n) && !self.first_sent.contains(&n) {
                    self.misrouted.push(format!(
                        "operation {n} was reported Sent, and did not leave"
                    ));
                }
            }
            match &e {
                DeviceEvent::Sent { op, .. } => {
                    self.sent.insert(op.0);
                }
                DeviceEvent::Response { op, .. } | DeviceEvent::TimedOut { op, .. } => {
                    self.ended.insert(op.0);
                }
                _ => {}
            }
            if let DeviceEvent::Expired { device } = &e {
                // Only once its time is up, or while a takeover probe may be out.
                let dev: u8 = device.as_str()[1..].parse().expect("e<n>");
                match self.regs.get(&dev) {
                    Some(r) if r.expires <= self.now || r.contested => {
                        self.regs.remove(&dev);
                    }
                    r => self.misrouted.push(format!(
                        "e{dev}'s registration expired at {:?}: {r:?}",
                        self.now
                    )),
                }
            }
            self.events.push(e);
        }
        out
    }

    /// No request of an awake device waits while it could go: its registration holds an
    /// address (not displaced), fewer of its requests than NSTART (the server's and the
    /// CoAP endpoint's) are out, and the endpoint would send to the address at once.
    /// (Queue-mode devices are left out: when they are awake is not followed.)
    fn check_waiting(&mut self) {
        let nstart = self
            .server
            .config()
            .nstart
            .min(self.server.config().coap.nstart);
        for dev in 0..3u8 {
            let device = DeviceId::new(&format!("e{dev}")).unwrap();
            let Some(info) = self.server.registration(&device) else {
                continue;
            };
            let (Some(a), false) = (info.address, info.queue_mode) else {
                continue;
            };
            let (waiting, in_flight) =
                model_rules::queue_counts(&self.device_of, &self.sent, &self.ended, dev);
            if waiting > 0 && in_flight < nstart && self.server.endpoint().would_send_now(a) {
                self.misrouted.push(format!(
                    "e{dev}'s {waiting} request(s) wait at {a}, which is free (at {:?})",
                    self.now
                ));
            }
        }
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

proptest! {
    // 256 cases unless `PROPTEST_CASES` says otherwise (a long run: `PROPTEST_CASES=20000`).
    #![proptest_config(ProptestConfig::default())]
    #[test]
    fn every_operation_ends_once_and_is_sent_at_most_once(
        ops in proptest::collection::vec(op(), 1..60),
        seed in any::<u64>(),
        nstart in 1usize..4,
        long_lived in any::<bool>(),
    ) {
        let mut w = World {
            server: Lwm2mServer::with_seed(
                ServerConfig { auto_provision: true, nstart, ..ServerConfig::default() },
                seed,
            ),
            now: Instant::now(),
            mid: 0,
            locations: HashMap::new(),
            requests: Vec::new(),
            events: Vec::new(),
            taken: 0,
            device_at: HashMap::new(),
            address_of: HashMap::new(),
            misrouted: Vec::new(),
            observations: Vec::new(),
            probes: HashMap::new(),
            regs: HashMap::new(),
            generation: 0,
            device_of: HashMap::new(),
            sent: Default::default(),
            ended: Default::default(),
            moves_seen: 0,
            moves_predicted: 0,
            first_sent: Default::default(),
            last_first_sent: HashMap::new(),
        };
        let lifetime = if long_lived { LONG_LIFETIME } else { LIFETIME };
        let mut submitted: Vec<OpId> = Vec::new();
        for op in ops {
            // After the previous step.
            w.check_waiting();
            if let Op::Read { dev } | Op::Observe { dev } = op {
                w.device_of.insert(submitted.len() as u64 + 1, dev);
            }
            match op {
                Op::Register { dev, addr: a, queue } => {
                    let mut m = w.con(Code::POST, "/rd");
                    m.add_uri_query(&format!("ep=e{dev}"));
                    // Long-lived registrations outlast the run: their requests must
                    // end by their own time-outs, not by the registration's end.
                    m.add_uri_query(if long_lived { "lt=86400" } else { "lt=120" });
                    if queue {
                        m.add_uri_query("b=UQ");
                    }
                    m.payload = b"</3/0>".to_vec();
                    let mid = m.message_id;
                    let mut created = false;
                    for (to, answer) in w.send(addr(a), &m, Speaker::Registration(dev)) {
                        if to == addr(a) && answer.message_id == mid && answer.code == Code::CREATED {
                            let location = answer.location_path().collect::<Vec<_>>().join("/");
                            w.locations.insert(dev, location);
                            created = true;
                        }
                    }
                    if created {
                        w.generation += 1;
                        let reg = Reg::new(w.generation, addr(a), w.now + lifetime + GRACE);
                        w.regs.insert(dev, reg);
                    } else {
                        // Refused (takeover: the device's registration lives at another
                        // address, probed). Its device spoke from here all the same: the
                        // registration that held the address is displaced.
                        if let Some(r) = w.regs.get_mut(&dev) {
                            r.contested = true;
                        }
                        w.taken += 1;
                        let taken = w.taken;
                        w.address_of.insert(addr(a), (NOBODY, taken));
                    }
                }
                Op::Update { dev, addr: a } => {
                    if let Some(location) = w.locations.get(&dev).cloned() {
                        let m = w.con(Code::POST, &format!("/{location}"));
                        let mid = m.message_id;
                        let out = w.send(addr(a), &m, Speaker::Registration(dev));
                        let now = w.now;
                        if out.iter().any(|(_, r)| r.message_id == mid && r.code == Code::CHANGED)
                            && let Some(r) = w.regs.get_mut(&dev)
                        {
                            r.expires = now + lifetime + GRACE;
                            r.follow(addr(a), now);
                        }
                    }
                }
                Op::Deregister { dev, addr: a } => {
                    if let Some(location) = w.locations.get(&dev).cloned() {
                        let m = w.con(Code::DELETE, &format!("/{location}"));
                        let mid = m.message_id;
                        let out = w.send(addr(a), &m, Speaker::Other);
                        if out.iter().any(|(_, r)| r.message_id == mid && r.code == Code::DELETED) {
                            w.regs.remove(&dev);
                        }
                    }
                }
                Op::Read { dev } => {
                    let id = OpId(submitted.len() as u64 + 1);
                    submitted.push(id);
                    w.server.submit(w.now, DeviceOp {
                        id,
                        device: DeviceId::new(&format!("e{dev}")).unwrap(),
                        request: DeviceRequest::Read { path: Lwm2mPath::resource_instance(3, 0, 9 + u16::from(dev), id.0 as u16) },
                    });
                    w.drain();
                }
                Op::Answer { k, elsewhere, refuse } => {
                    if w.requests.is_empty() {
                        continue;
                    }
                    let (to, request) = w.requests.remove(usize::from(k) % w.requests.len());
                    let code = if refuse { Code::NOT_ACCEPTABLE } else { Code::CONTENT };
                    let mut answer = Message::new(MessageType::Acknowledgement, code, request.message_id);
                    answer.with_token(request.token());
                    answer.payload = b"80".to_vec();
                    let observe = request.observe() == Some(0) && !refuse;
                    if observe {
                        answer.set_observe(2);
                    }
                    let from = elsewhere.map_or(to, addr);
                    let events = w.events.len();
                    w.send(from, &answer, Speaker::Other);
                    // The Observe's device and operation, by its path `/3/0/(9 + d)/n`.
                    let path: Vec<&str> = request.uri_path().collect();
                    let op = match path[..] {
                        [_, _, r, n] => r.parse::<u8>().ok().and_then(|r| r.checked_sub(9)).zip(n.parse::<u64>().ok()),
                        _ => None,
                    };
                    if let (true, Some((dev, n))) = (observe, op) {
                        let started = w.events[events..].iter().any(|e| {
                            matches!(e, DeviceEvent::Response { op, result: Ok(_), .. } if op.0 == n)
                        });
                        let generation = w.regs.get(&dev).filter(|_| started).map(|r| r.generation);
                        let token = request.token().as_bytes().to_vec();
                        // A retransmitted Observe answered again is the same observation.
                        match w.observations.iter_mut().find(|o| o.token == token) {
                            Some(o) => {
                                if started {
                                    o.generation = generation;
                                    o.last = (2, w.now);
                                }
                            }
                            None => w.observations.push(Obs { token, dev, op: n, seq: 2, last: (2, w.now), generation }),
                        }
                    }
                }
                Op::Advance { secs } => w.advance(Duration::from_secs(u64::from(secs))),
                Op::Observe { dev } => {
                    let id = OpId(submitted.len() as u64 + 1);
                    submitted.push(id);
                    w.server.submit(w.now, DeviceOp {
                        id,
                        device: DeviceId::new(&format!("e{dev}")).unwrap(),
                        request: DeviceRequest::Observe { path: Lwm2mPath::resource_instance(3, 0, 9 + u16::from(dev), id.0 as u16) },
                    });
                    w.drain();
                }
                Op::Notify { k, from, con, back } => {
                    if w.observations.is_empty() {
                        continue;
                    }
                    let at = usize::from(k) % w.observations.len();
                    let seq = model_rules::observe_number(&mut w.observations[at].seq, back);
                    let Obs { token, dev, op, last, generation, .. } = w.observations[at].clone();
                    // Taken exactly when its observation is live (the server took the
                    // Observe's answer, under the registration that lives now), it is
                    // fresh (RFC 7641 §3.4, against the last taken) and it does not come
                    // from an address the registration left lately (sent before a NAT
                    // rebinding, arrived late).
                    let reg = w.regs.get(&dev).filter(|r| w.now < r.expires);
                    let live = reg.is_some_and(|r| Some(r.generation) == generation);
                    let late = reg.is_some_and(|r| r.left_lately(addr(from), w.now));
                    let current = reg.map(|r| r.generation);
                    let is_fresh = model_rules::fresh(last, seq, w.now);
                    let expected = live && is_fresh && !late;
                    let events = w.events.len();
                    w.mid = w.mid.wrapping_add(1);
                    let mtype = if con { MessageType::Confirmable } else { MessageType::NonConfirmable };
                    let mut m = Message::new(mtype, Code::CONTENT, w.mid);
                    m.set_token(&token);
                    m.set_observe(seq);
                    m.payload = b"81".to_vec();
                    let out = w.send(addr(from), &m, Speaker::Notification(dev));
                    // A confirmable one on a live observation is answered, taken or not:
                    // unanswered, the device would drop the observation (RFC 7641 §4.5).
                    let answered = out.iter().any(|(to, a)| {
                        *to == addr(from)
                            && a.message_id == m.message_id
                            && matches!(a.mtype, MessageType::Acknowledgement | MessageType::Reset)
                    });
                    if con && live && !answered {
                        w.misrouted.push(format!(
                            "e{dev}'s confirmable notification {seq} from {} got no ACK or RST",
                            addr(from)
                        ));
                    }
                    let device = format!("e{dev}");
                    let taken = w.events[events..].iter().any(|e| {
                        matches!(e, DeviceEvent::Notification { device: d, .. } if d.as_str() == device)
                    });
                    // From the Observe's destination while its answer is awaited (the
                    // model's answer went elsewhere): its separate response, which starts
                    // the observation.
                    let started = w.events[events..].iter().any(|e| {
                        matches!(e, DeviceEvent::Response { op: o, result: Ok(_), .. } if o.0 == op)
                    });
                    if started {
                        w.observations[at].generation = current;
                        w.observations[at].last = (seq, w.now);
                    }
                    if taken {
                        w.observations[at].last = (seq, w.now);
                    }
                    if taken != expected {
                        w.misrouted.push(format!(
                            "e{dev}'s notification {seq} from {} was taken: {taken} (expected \
                             {expected}: observation live {live}, fresh {is_fresh} against {}, \
                             from an address left lately {late}; the model's registration: {:?})",
                            addr(from),
                            last.0,
                            w.regs.get(&dev)
                        ));
                    }
                    let now = w.now;
                    if let Some(r) = w.regs.get_mut(&dev).filter(|r| taken && r.addr != addr(from)) {
                        // From a new address: the registration moved there.
                        r.follow(addr(from), now);
                    }
                }
            }
        }
        w.check_waiting();
        // Long enough for every queue time-out (600 s), CoAP give-up (93 s) and
        // registration expiry (120 s + grace) to pass, several times over.
        for _ in 0..8 {
            w.advance(Duration::from_secs(700));
        }
        prop_assert!(w.misrouted.is_empty(), "misrouted: {:#?}", w.misrouted);
        prop_assert_eq!(w.moves_seen, w.moves_predicted);
        for id in &submitted {
            let mut ended = 0;
            let mut sent = 0;
            for e in &w.events {
                match e {
                    DeviceEvent::Sent { op, .. } if op == id => {
                        prop_assert_eq!(ended, 0, "{:?} reported Sent after it ended: {:?}", id, w.events);
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
        if !long_lived {
            prop_assert_eq!(w.server.registered_count(), 0, "every registration expired");
        }
    }
}

/// e0 registered from port 1, then registers again from port 2 (its old address is
/// probed, 5.03 meanwhile), and the hub reads it: the Read waits behind the probe
/// (NSTART 1 per address), in the server's queue, not reported `Sent` (before, it waited
/// in the CoAP layer, reported `Sent`).
fn read_behind_a_takeover_probe() -> (Lwm2mServer, Instant) {
    use server_sim::{addr, con, out, register, send};
    let mut s = Lwm2mServer::with_seed(
        ServerConfig {
            auto_provision: true,
            nstart: 1,
            ..ServerConfig::default()
        },
        0,
    );
    let now = Instant::now();
    register(&mut s, now, addr(1), "e0", 1);
    let mut again = con(Code::POST, "/rd", 2);
    again.add_uri_query("ep=e0");
    again.payload = b"</3/0>".to_vec();
    send(&mut s, now, addr(2), &again);
    let probed = out(&mut s);
    assert!(
        probed
            .iter()
            .any(|(to, m)| *to == addr(1) && m.code == Code::GET),
        "{probed:?}"
    );
    s.submit(
        now,
        DeviceOp {
            id: OpId(1),
            device: DeviceId::new("e0").unwrap(),
            request: DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        },
    );
    assert_eq!(out(&mut s), vec![], "the Read waits behind the probe");
    let evs = server_sim::events(&mut s);
    assert!(
        !evs.iter()
            .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(1), .. })),
        "{evs:?}"
    );
    (s, now)
}

/// The model's first finding, as a plain test: a Read queued in the CoAP endpoint behind a
/// takeover probe of the device's old address was started when the probe was forgotten,
/// at the moment another device's Register took that address, and so reached that other
/// device, although the server failed the Read as `RegistrationEnded` in the same stroke.
/// Since the server keeps a request until the CoAP layer sends it at once, the Read waits
/// in the server's queue instead: never sent, it stays queued for e0 while e0 is
/// displaced, and goes to e0's device when it registers from where it is now.
#[test]
fn a_read_queued_behind_a_takeover_probe_never_reaches_the_device_that_took_the_address() {
    use server_sim::{addr, con, events, out, register_with, send};
    let (mut s, now) = read_behind_a_takeover_probe();
    // Another device registers from e0's address: e0 is displaced there.
    let mut other = con(Code::POST, "/rd", 3);
    other.add_uri_query("ep=e1");
    other.payload = b"</3/0>".to_vec();
    send(&mut s, now, addr(1), &other);
    let sent = out(&mut s);
    assert!(
        sent.iter().any(|(_, m)| m.code == Code::CREATED),
        "{sent:?}"
    );
    assert!(
        !sent.iter().any(|(_, m)| m.code == Code::GET),
        "e0's Read went to the device that took its address: {sent:?}"
    );
    let evs = events(&mut s);
    assert!(
        !evs.iter().any(|e| matches!(
            e,
            DeviceEvent::Sent { op: OpId(1), .. } | DeviceEvent::Response { op: OpId(1), .. }
        )),
        "the Read, never sent, waits for e0: {evs:?}"
    );
    // e0's device registers from port 2, where it is: the Read goes there.
    let (_, sent) = register_with(&mut s, now, addr(2), "e0", 4, &[]);
    assert!(
        sent.iter()
            .any(|(to, m)| *to == addr(2) && m.uri_path_string() == "3/0/9"),
        "{sent:?}"
    );
    let evs = events(&mut s);
    assert!(
        evs.iter()
            .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(1), .. })),
        "{evs:?}"
    );
}

/// A takeover probe that is not answered ends the old registration: the Read queued
/// behind it fails, and is not sent to the silent address first.
#[test]
fn a_read_queued_behind_an_unanswered_probe_is_not_sent_when_the_registration_goes() {
    use server_sim::{events, out};
    let (mut s, now) = read_behind_a_takeover_probe();
    // Run the clock past the probe's time-out (retransmissions of the probe go to
    // the old address; nothing else may).
    let mut t = now;
    let mut reads = Vec::new();
    for _ in 0..200 {
        let Some(at) = s.poll_timeout() else { break };
        if at > now + Duration::from_secs(60) {
            break;
        }
        t = t.max(at);
        s.handle_timeout(t);
        reads.extend(
            out(&mut s)
                .into_iter()
                .filter(|(_, m)| m.uri_path().collect::<Vec<_>>() == ["3", "0", "9"]),
        );
    }
    let evs = events(&mut s);
    assert!(
        evs.iter().any(|e| matches!(e, DeviceEvent::Expired { .. })),
        "the old registration went: {evs:?}"
    );
    assert!(
        evs.iter().any(|e| matches!(
            e,
            DeviceEvent::Response {
                op: OpId(1),
                result: Err(_),
                ..
            }
        )),
        "{evs:?}"
    );
    assert_eq!(reads, vec![], "the Read was sent to the silent address");
}
