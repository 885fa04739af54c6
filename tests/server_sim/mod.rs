//! The sans-IO LwM2M server driven by hand: addresses, CoAP requests from a device, and
//! Register / Update with their answers checked. Shared by the server review tests (each
//! test file is its own crate; each uses a part).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::coap::{Code, Message, MessageType};
use twinhub::lwm2m::server::Lwm2mServer;
use twinhub::resource::DeviceError;
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, OpId, Transport};

/// A device's address (10.0.0.7, `port`).
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 7], port))
}

/// The server's datagrams, decoded, with their destinations.
pub fn out(s: &mut Lwm2mServer) -> Vec<(SocketAddr, Message)> {
    std::iter::from_fn(|| s.poll_transmit())
        .map(|t| (t.destination, Message::decode(&t.payload).unwrap()))
        .collect()
}

/// The server's events.
pub fn events(s: &mut Lwm2mServer) -> Vec<DeviceEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Hands the server `m` from `from`.
pub fn send(s: &mut Lwm2mServer, now: Instant, from: SocketAddr, m: &Message) {
    s.handle_datagram(now, from, &m.to_bytes().unwrap());
}

/// A confirmable request, its token made of its message id.
pub fn con(code: Code, path: &str, mid: u16) -> Message {
    let mut m = Message::request(code, path);
    m.mtype = MessageType::Confirmable;
    m.message_id = mid;
    m.set_token(&mid.to_be_bytes());
    m
}

/// Registers `ep` from `from`; returns its location and what else the server sent.
pub fn register_with(
    s: &mut Lwm2mServer,
    now: Instant,
    from: SocketAddr,
    ep: &str,
    mid: u16,
    extra: &[&str],
) -> (String, Vec<(SocketAddr, Message)>) {
    let mut m = con(Code::POST, "/rd", mid);
    m.add_uri_query(&format!("ep={ep}"));
    m.add_uri_query("lt=3000");
    for q in extra {
        m.add_uri_query(q);
    }
    m.payload = b"</3/0>".to_vec();
    send(s, now, from, &m);
    let sent = out(s);
    let answer = sent
        .iter()
        .find(|(to, a)| *to == from && a.message_id == mid && a.code.class() == 2)
        .unwrap_or_else(|| panic!("an answer to Register: {sent:?}"))
        .1
        .clone();
    assert_eq!(answer.code, Code::CREATED);
    (answer.location_path().collect::<Vec<_>>().join("/"), sent)
}

pub fn register(s: &mut Lwm2mServer, now: Instant, from: SocketAddr, ep: &str, mid: u16) -> String {
    register_with(s, now, from, ep, mid, &[]).0
}

/// Updates the registration at `location` from `from`; checks the 2.04.
pub fn update(s: &mut Lwm2mServer, now: Instant, from: SocketAddr, location: &str, mid: u16) {
    send(s, now, from, &con(Code::POST, &format!("/{location}"), mid));
    let answers = out(s);
    assert!(
        answers
            .iter()
            .any(|(to, a)| *to == from && a.message_id == mid && a.code == Code::CHANGED),
        "{answers:?}"
    );
}

/// A `text/plain` notification of `observe` (its token) carrying `value`, Observe `seq`:
/// the first, piggybacked on the acknowledgement, is `Acknowledgement` with the Observe's
/// message id; later ones `NonConfirmable` (or `Confirmable`) with a message id `mid` of
/// their own.
pub fn notification(
    observe: &Message,
    kind: MessageType,
    mid: u16,
    seq: u32,
    value: &[u8],
) -> Message {
    let mut m = Message::new(kind, Code::CONTENT, mid);
    m.with_token(observe.token());
    m.set_observe(seq);
    m.set_content_format(twinhub::coap::ContentFormat::TEXT_PLAIN);
    m.payload = value.to_vec();
    m
}

/// A server that lets any endpoint register (`auto_provision`), its tokens and
/// locations from seed 44.
pub fn server() -> Lwm2mServer {
    Lwm2mServer::with_seed(
        twinhub::lwm2m::server::ServerConfig {
            auto_provision: true,
            ..twinhub::lwm2m::server::ServerConfig::default()
        },
        44,
    )
}

/// Submits an Observe of `device`'s `/3/0/9` (op `op`); returns the Observe request the
/// server sent to `to`.
pub fn observe_battery(
    s: &mut Lwm2mServer,
    now: Instant,
    op: u64,
    device: &str,
    to: SocketAddr,
) -> Message {
    use twinhub::transport::{DeviceOp, DeviceRequest, OpId};
    s.submit(
        now,
        DeviceOp {
            id: OpId(op),
            device: twinhub::DeviceId::new(device).unwrap(),
            request: DeviceRequest::Observe {
                path: twinhub::Lwm2mPath::resource(3, 0, 9),
            },
        },
    );
    let sent = out(s);
    sent.iter()
        .find(|(at, m)| *at == to && m.observe() == Some(0))
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("the Observe to {to}: {sent:?}"))
}

/// The device's piggybacked answer to `observe` that establishes the observation
/// (Observe 2, `80`).
pub fn established(observe: &Message) -> Message {
    notification(
        observe,
        MessageType::Acknowledgement,
        observe.message_id,
        2,
        b"80",
    )
}

/// Whether `m` is a takeover probe (`GET /1`).
pub fn is_probe(m: &Message) -> bool {
    m.code == Code::GET && m.uri_path_string() == "1"
}

/// Runs the clock for `secs` seconds from `from` in one-second steps; returns what the
/// server sent to `to` meanwhile.
pub fn run(s: &mut Lwm2mServer, from: Instant, secs: u64, to: SocketAddr) -> Vec<Message> {
    let mut got = Vec::new();
    for step in 1..=secs {
        s.handle_timeout(from + Duration::from_secs(step));
        got.extend(
            out(s)
                .into_iter()
                .filter(|(dest, _)| *dest == to)
                .map(|(_, m)| m),
        );
    }
    got
}

/// The takeover probes (see [`is_probe`]) the server sends to `to` while [`run`] runs the
/// clock for `secs` seconds from `from`.
pub fn probes_within(
    s: &mut Lwm2mServer,
    from: Instant,
    secs: u64,
    to: SocketAddr,
) -> Vec<Message> {
    run(s, from, secs, to)
        .into_iter()
        .filter(is_probe)
        .collect()
}

/// A device `pump` registered on `s` (LWM2M 1.1, announcing the content formats `ct`).
pub fn registered_pump(mut s: Lwm2mServer, ct: &str) -> (Lwm2mServer, Instant) {
    let now = Instant::now();
    register_with(&mut s, now, addr(5683), "pump", 1, &["lwm2m=1.1", ct]);
    events(&mut s);
    (s, now)
}

/// Submits `request` for `pump`: the write the device got (a PUT, POST or iPATCH), if
/// any, and the op's result if the server gave one at once.
#[allow(clippy::type_complexity)]
pub fn submit_write(
    s: &mut Lwm2mServer,
    now: Instant,
    request: DeviceRequest,
) -> (Option<Message>, Option<Result<(), DeviceError>>) {
    s.submit(
        now,
        DeviceOp {
            id: OpId(7),
            device: DeviceId::new("pump").unwrap(),
            request,
        },
    );
    let sent = out(s)
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| matches!(m.code, Code::PUT | Code::POST | Code::IPATCH));
    let result = events(s).into_iter().find_map(|e| match e {
        DeviceEvent::Response {
            op: OpId(7),
            result,
            ..
        } => Some(result.map(|_| ())),
        _ => None,
    });
    (sent, result)
}
