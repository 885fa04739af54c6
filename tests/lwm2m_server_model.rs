//! The LwM2M server under random traffic (sans-IO): three devices register, update,
//! de-register and answer from four addresses in any order (NAT rebinding, a port given
//! to another device, answers from the wrong address), the hub reads them, time moves.
//! Devices may be in queue mode, the server may send up to 3 requests at once
//! (`nstart`), and an answer may refuse the format (4.06, the server falls back).
//! Whatever happens, every operation ends exactly once (an answer, a failure or a
//! time-out) within a bounded time, is reported `Sent` at most once, and never after it
//! ended.

#![cfg(feature = "lwm2m")]

use proptest::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
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
    /// The hub reads device `dev`.
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

    /// Delivers `m` from `from`, then takes what the server sends and reports.
    fn send(&mut self, from: SocketAddr, m: &Message) -> Vec<(SocketAddr, Message)> {
        self.server
            .handle_datagram(self.now, from, &m.to_bytes().expect("encodes"));
        self.drain()
    }

    fn drain(&mut self) -> Vec<(SocketAddr, Message)> {
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
        while let Some(e) = self.server.poll_event() {
            self.events.push(e);
        }
        out
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
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
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
        };
        let mut submitted: Vec<OpId> = Vec::new();
        for op in ops {
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
                    for (to, answer) in w.send(addr(a), &m) {
                        if to == addr(a) && answer.message_id == mid && answer.code == Code::CREATED {
                            let location = answer.location_path().collect::<Vec<_>>().join("/");
                            w.locations.insert(dev, location);
                        }
                    }
                }
                Op::Update { dev, addr: a } => {
                    if let Some(location) = w.locations.get(&dev).cloned() {
                        let m = w.con(Code::POST, &format!("/{location}"));
                        w.send(addr(a), &m);
                    }
                }
                Op::Deregister { dev, addr: a } => {
                    if let Some(location) = w.locations.get(&dev).cloned() {
                        let m = w.con(Code::DELETE, &format!("/{location}"));
                        w.send(addr(a), &m);
                    }
                }
                Op::Read { dev } => {
                    let id = OpId(submitted.len() as u64 + 1);
                    submitted.push(id);
                    w.server.submit(w.now, DeviceOp {
                        id,
                        device: DeviceId::new(&format!("e{dev}")).unwrap(),
                        request: DeviceRequest::Read { path: Lwm2mPath::resource(3, 0, 9) },
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
                    let from = elsewhere.map_or(to, addr);
                    w.send(from, &answer);
                }
                Op::Advance { secs } => w.advance(Duration::from_secs(u64::from(secs))),
            }
        }
        // Long enough for every queue time-out (600 s), CoAP give-up (93 s) and
        // registration expiry (120 s + grace) to pass, several times over.
        for _ in 0..8 {
            w.advance(Duration::from_secs(700));
        }
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
