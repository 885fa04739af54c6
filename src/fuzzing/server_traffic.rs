//! `server_traffic`: the sans-IO LwM2M server under arbitrary traffic from four addresses:
//! raw datagrams, and registrations, updates, de-registrations, answers (any code,
//! format, Observe and Block2 option, payload) and notifications built from small tables,
//! while the hub submits operations of every kind and time moves. It must never panic,
//! every datagram it sends must decode, every operation ends at most once, is reported
//! `Sent` at most once and never after it ended, and once the clock has run far past every
//! time-out, every operation has ended.
//!
//! Input: a sequence of steps, each `[kind, a, b, len, bytes[len]]`; `kind % 8` picks the
//! step (see [`server_traffic`]), `a` and `b` its small choices, `bytes` its payload.

use crate::coap::{BlockOption, Code, ContentFormat, Message, MessageType};
use crate::lwm2m::server::{Lwm2mServer, ServerConfig};
use crate::resource::{Content, DeviceOp, DeviceRequest, OpId, ResourceValue, WriteMode};
use crate::transport::{DeviceEvent, Transport};
use crate::{DeviceId, Lwm2mPath};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const LINKS: [&[u8]; 6] = [
    b"</3/0>,</5/0>",
    b"</>;rt=\"oma.lwm2m\";ct=\"60 110 11542\",</1/0>,</3/0>,</5/0>",
    b"</lwm2m>;rt=\"oma.lwm2m\",</lwm2m/3/0>,</lwm2m/3303/0>",
    b"</3/0>;ver=1.1,</3303>",
    b"",
    b"</1>,</3/0>,</3303/0>,</3303/1>",
];

const PATHS: [Lwm2mPath; 6] = [
    Lwm2mPath::resource(3, 0, 9),
    Lwm2mPath::instance(3, 0),
    Lwm2mPath::object(3303),
    Lwm2mPath::resource(5, 0, 3),
    Lwm2mPath::resource_instance(3303, 0, 11, 2),
    Lwm2mPath::resource(3303, 0, 5700),
];

const CODES: [Code; 8] = [
    Code::CONTENT,
    Code::CHANGED,
    Code::CONTENT,
    Code::NOT_FOUND,
    Code::NOT_ACCEPTABLE,
    Code::UNSUPPORTED_CONTENT_FORMAT,
    Code::INTERNAL_SERVER_ERROR,
    Code::DELETED,
];

const FORMATS: [Option<u16>; 9] = [
    None,
    Some(0),
    Some(42),
    Some(11542),
    Some(11543),
    Some(112),
    Some(110),
    Some(60),
    Some(40),
];

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 9], 5000 + u16::from(n % 4)))
}

struct World {
    server: Lwm2mServer,
    now: Instant,
    mid: u16,
    /// Each device's registration location, from the last 2.01 it got.
    locations: HashMap<u8, String>,
    /// Requests the server sent, not yet answered here: destination and message.
    requests: Vec<(SocketAddr, Message)>,
    /// Observations answered: token and last Observe number.
    observations: Vec<(Vec<u8>, u32)>,
    events: Vec<DeviceEvent>,
}

impl World {
    fn next_mid(&mut self) -> u16 {
        self.mid = self.mid.wrapping_add(1);
        self.mid
    }

    fn deliver(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.server.handle_datagram(self.now, from, bytes);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(t) = self.server.poll_transmit() {
            let m = Message::decode(&t.payload).expect("the server's datagrams decode");
            // Every request the server takes is answered in the call that brought it,
            // piggybacked on the ACK (NON for a NON request): it sends no separate (CON)
            // response, which `Lwm2mServer::may_send` would gate by the registration at
            // its destination (see there).
            assert!(
                !(m.mtype == MessageType::Confirmable && m.code.is_response()),
                "the server sent a separate CON response: {m:?}"
            );
            if m.code.is_request() && m.mtype == MessageType::Confirmable {
                self.requests
                    .retain(|(_, r)| r.message_id != m.message_id || r.token() != m.token());
                if self.requests.len() >= 64 {
                    self.requests.remove(0);
                }
                self.requests.push((t.destination, m.clone()));
            }
            if let Some((to, r)) = self.registration_answer(t.destination, &m) {
                self.locations.insert(to, r);
            }
        }
        while let Some(e) = self.server.poll_event() {
            self.events.push(e);
        }
    }

    /// A 2.01 with a location: the device whose Register it answers is remembered by
    /// the Register's token (its first byte is the device's number).
    fn registration_answer(&self, _to: SocketAddr, m: &Message) -> Option<(u8, String)> {
        if m.code != Code::CREATED || m.mtype != MessageType::Acknowledgement {
            return None;
        }
        let dev = *m.token().as_bytes().first()?;
        let location: Vec<&str> = m.location_path().collect();
        (!location.is_empty()).then(|| (dev, location.join("/")))
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        for _ in 0..10_000 {
            match self.server.poll_timeout() {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.server.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = end;
        self.server.handle_timeout(self.now);
        self.drain();
    }
}

fn request(code: Code, path: &str, mid: u16, dev: u8) -> Message {
    let mut m = Message::request(code, path);
    m.mtype = MessageType::Confirmable;
    m.message_id = mid;
    m.set_token(&[dev, (mid >> 8) as u8, mid as u8]);
    m
}

fn operation(dev: u8, b: u8, bytes: &[u8]) -> DeviceRequest {
    let path = PATHS[usize::from(b / 16) % PATHS.len()];
    let value = || ResourceValue::String(String::from_utf8_lossy(bytes).into_owned());
    match b % 12 {
        0 | 1 => DeviceRequest::Read { path },
        2 => DeviceRequest::Observe { path },
        3 => DeviceRequest::CancelObserve { path },
        4 => DeviceRequest::Write {
            path,
            mode: WriteMode::Replace,
            content: Content::single(path, value()),
        },
        5 => DeviceRequest::Execute {
            path,
            args: (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned()),
        },
        6 => DeviceRequest::Discover { path },
        7 => DeviceRequest::ReadComposite {
            paths: vec![path, PATHS[usize::from(dev) % PATHS.len()]],
        },
        8 => DeviceRequest::ObserveComposite { paths: vec![path] },
        9 => DeviceRequest::Delete { path },
        10 => DeviceRequest::WriteComposite {
            content: Content::single(path, value()),
        },
        _ => DeviceRequest::EndRegistration {
            registration_id: String::from_utf8_lossy(bytes).into_owned(),
        },
    }
}

/// The body: see [the module](self).
pub fn server_traffic(data: &[u8]) {
    let mut w = World {
        server: Lwm2mServer::with_seed(
            ServerConfig {
                auto_provision: true,
                nstart: 1 + usize::from(data.first().copied().unwrap_or(0) % 3),
                ..ServerConfig::default()
            },
            7,
        ),
        now: Instant::now(),
        mid: 0,
        locations: HashMap::new(),
        requests: Vec::new(),
        observations: Vec::new(),
        events: Vec::new(),
    };
    let mut submitted: Vec<OpId> = Vec::new();
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut steps = 0;
    while rest.len() >= 4 && steps < 256 {
        steps += 1;
        let (kind, a, b, len) = (rest[0], rest[1], rest[2], usize::from(rest[3]));
        let end = (4 + len).min(rest.len());
        let bytes = &rest[4..end];
        rest = &rest[end..];
        let dev = a % 3;
        match kind % 8 {
            // A raw datagram.
            0 => w.deliver(addr(b), bytes),
            // Register.
            1 => {
                let mid = w.next_mid();
                let mut m = request(Code::POST, "/rd", mid, dev);
                m.add_uri_query(&format!("ep=e{dev}"));
                m.add_uri_query(if b & 1 == 0 { "lt=120" } else { "lt=86400" });
                if b & 2 != 0 {
                    m.add_uri_query("b=UQ");
                }
                if b & 4 != 0 {
                    m.add_uri_query("lwm2m=1.1");
                }
                m.payload = LINKS[usize::from(b / 8) % LINKS.len()].to_vec();
                if let Ok(bytes) = m.to_bytes() {
                    w.deliver(addr(b / 64), &bytes);
                }
            }
            // Update (or, b & 1, De-register) of a device's registration.
            2 | 3 => {
                let Some(location) = w.locations.get(&dev).cloned() else {
                    continue;
                };
                let mid = w.next_mid();
                let code = if kind % 8 == 3 {
                    Code::DELETE
                } else {
                    Code::POST
                };
                let mut m = request(code, &format!("/{location}"), mid, dev);
                if b & 8 != 0 {
                    m.add_uri_query("lt=60");
                }
                if b & 16 != 0 {
                    m.payload = LINKS[usize::from(b / 32) % LINKS.len()].to_vec();
                }
                if let Ok(bytes) = m.to_bytes() {
                    w.deliver(addr(b), &bytes);
                }
            }
            // The hub submits an operation.
            4 => {
                let id = OpId(submitted.len() as u64 + 1);
                submitted.push(id);
                w.server.submit(
                    w.now,
                    DeviceOp {
                        id,
                        device: DeviceId::new(&format!("e{dev}")).expect("a valid id"),
                        request: operation(dev, b, bytes),
                    },
                );
                w.drain();
            }
            // An answer to a request the server sent.
            5 => {
                if w.requests.is_empty() {
                    continue;
                }
                let (to, req) = w.requests.remove(usize::from(a) % w.requests.len());
                let code = CODES[usize::from(b) % CODES.len()];
                let mut answer = if b & 0x80 != 0 {
                    // Reset instead.
                    Message::new(MessageType::Reset, Code::EMPTY, req.message_id)
                } else {
                    let mut m = Message::new(MessageType::Acknowledgement, code, req.message_id);
                    m.with_token(req.token());
                    if let Some(cf) = FORMATS[usize::from(b / 8) % FORMATS.len()] {
                        m.set_content_format(ContentFormat(cf));
                    }
                    if req.observe() == Some(0) && code == Code::CONTENT && a & 1 == 0 {
                        m.set_observe(2);
                        w.observations.push((req.token().as_bytes().to_vec(), 2));
                    }
                    if a & 2 != 0 {
                        m.set_block2(BlockOption {
                            num: u32::from(a >> 4),
                            more: a & 4 != 0,
                            szx: (a >> 3) & 7,
                        });
                    }
                    m.payload = bytes.to_vec();
                    m
                };
                if answer.mtype == MessageType::Reset {
                    answer.payload.clear();
                }
                let from = if a & 8 != 0 { addr(b) } else { to };
                if let Ok(bytes) = answer.to_bytes() {
                    w.deliver(from, &bytes);
                }
            }
            // A notification of an observation, its Observe number moved by `b` (back
            // too), confirmable or not.
            6 => {
                if w.observations.is_empty() {
                    continue;
                }
                let at = usize::from(a) % w.observations.len();
                let seq = w.observations[at]
                    .1
                    .wrapping_add(u32::from(b % 16))
                    .wrapping_sub(3)
                    & 0x00ff_ffff;
                w.observations[at].1 = seq;
                let token = w.observations[at].0.clone();
                let mid = w.next_mid();
                let mtype = if b & 16 != 0 {
                    MessageType::NonConfirmable
                } else {
                    MessageType::Confirmable
                };
                let code = if b & 32 != 0 {
                    Code::NOT_FOUND
                } else {
                    Code::CONTENT
                };
                let mut m = Message::new(mtype, code, mid);
                m.set_token(&token);
                m.set_observe(seq);
                if let Some(cf) = FORMATS[usize::from(a / 16) % FORMATS.len()] {
                    m.set_content_format(ContentFormat(cf));
                }
                m.payload = bytes.to_vec();
                if let Ok(bytes) = m.to_bytes() {
                    w.deliver(addr(b / 64), &bytes);
                }
            }
            // Time passes.
            _ => w.advance(Duration::from_millis(
                u64::from(a) * 1000 + u64::from(b) * 37,
            )),
        }
        check(&w.events, &submitted, false);
    }
    // Far past every time-out: queue (600 s), CoAP give-up (93 s), lifetimes (86,400 s
    // and grace).
    for _ in 0..4 {
        w.advance(Duration::from_secs(100_000));
    }
    check(&w.events, &submitted, true);
}

/// Each operation ends at most once (exactly once when `all_ended`), is reported `Sent`
/// at most once, and never after it ended.
fn check(events: &[DeviceEvent], submitted: &[OpId], all_ended: bool) {
    let mut state: HashMap<OpId, (u32, u32)> = HashMap::new();
    for e in events {
        match e {
            DeviceEvent::Sent { op, .. } => {
                let s = state.entry(*op).or_default();
                assert_eq!(s.0, 0, "{op:?} reported Sent after it ended");
                s.1 += 1;
                assert!(s.1 <= 1, "{op:?} reported Sent twice");
            }
            DeviceEvent::Response { op, .. } | DeviceEvent::TimedOut { op, .. } => {
                let s = state.entry(*op).or_default();
                s.0 += 1;
                assert!(s.0 <= 1, "{op:?} ended twice");
            }
            _ => {}
        }
    }
    if all_ended {
        for op in submitted {
            assert_eq!(state.get(op).map_or(0, |s| s.0), 1, "{op:?} never ended");
        }
    }
}
