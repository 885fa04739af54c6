//! Over DTLS, what the identity a device registered with legitimately sends is taken
//! (the liveness side of `answer_from_stranger` and of the layer's `may_send` gate):
//! findings of the identity model's liveness oracle
//! (`src/lwm2m/server/identity_model.rs`), as plain tests. Two devices that swapped ports
//! behind a NAT each speak, through their own identity, from the address the other
//! registered at.

#![cfg(feature = "lwm2m")]

mod server_sim;

use server_sim::{addr, con, events, out};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use twinhub::DeviceId;
use twinhub::Lwm2mPath;
use twinhub::coap::{Code, Message, Transmit};
use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
use twinhub::transport::{DeviceOp, DeviceRequest, OpId, PeerIdentity, Transport};

fn server() -> Lwm2mServer {
    Lwm2mServer::with_seed(
        ServerConfig {
            auto_provision: true,
            ..ServerConfig::default()
        },
        45,
    )
    .require_identity()
}

/// Device `ep`'s own PSK identity, `i-ep`.
fn identity(ep: &str) -> PeerIdentity {
    PeerIdentity {
        psk_identity: Arc::from(format!("i-{ep}")),
        device: Some(DeviceId::new(ep).unwrap()),
    }
}

/// Hands the server `m` from `from` through a session of `ep`'s identity.
fn send_as(s: &mut Lwm2mServer, now: Instant, from: SocketAddr, ep: &str, m: &Message) {
    s.handle_datagram_from(now, from, Some(&identity(ep)), &m.to_bytes().unwrap());
}

/// Registers `ep` from `from` through its own identity; returns its location.
fn register_as(s: &mut Lwm2mServer, now: Instant, from: SocketAddr, ep: &str, mid: u16) -> String {
    let mut m = con(Code::POST, "/rd", mid);
    m.add_uri_query(&format!("ep={ep}"));
    m.add_uri_query("lt=3000");
    m.payload = b"</3/0>".to_vec();
    send_as(s, now, from, ep, &m);
    let sent = out(s);
    let (_, created) = sent
        .iter()
        .find(|(to, a)| *to == from && a.message_id == mid && a.code == Code::CREATED)
        .unwrap_or_else(|| panic!("{sent:?}"));
    created.location_path().collect::<Vec<_>>().join("/")
}

/// Everything the server hands the driver now, undecoded.
fn transmits(s: &mut Lwm2mServer) -> Vec<Transmit> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

/// Finding 1 (fixed): `a` registered at port 1 and `b` at port 2; behind a NAT `a`'s
/// device now has port 2 (a session of `i-a` there) and de-registers. The server takes
/// the De-register, but the DTLS layer let a datagram out only through a session of the
/// identity of the registration at its destination (`b`'s), answers included: the 2.02
/// never left, and the device retransmitted its De-register into silence until CoAP gave
/// up. An ACK or RST answers what just came through the session at its destination, and
/// goes back through it; a request for `b` still does not go through `i-a`'s session.
#[test]
fn a_deregister_from_an_address_another_registration_holds_gets_its_answer() {
    let mut s = server();
    let t0 = Instant::now();
    let location = register_as(&mut s, t0, addr(1), "a", 10);
    register_as(&mut s, t0, addr(2), "b", 11);
    events(&mut s);
    send_as(&mut s, t0, addr(2), "a", &con(Code::DELETE, &format!("/{location}"), 12));
    let sent = transmits(&mut s);
    let deleted = sent
        .iter()
        .find(|t| {
            t.destination == addr(2)
                && Message::decode(&t.payload)
                    .is_ok_and(|m| m.message_id == 12 && m.code == Code::DELETED)
        })
        .unwrap_or_else(|| panic!("the 2.02: {sent:?}"));
    assert!(
        s.registration(&DeviceId::new("a").unwrap()).is_none(),
        "a de-registered"
    );
    assert!(
        s.may_send(deleted, Some(&identity("a"))),
        "the 2.02 goes back through the session of a's identity it answers"
    );
    // The control: a request for `b`, at port 2, does not go through `i-a`'s session.
    s.submit(
        t0,
        DeviceOp {
            id: OpId(1),
            device: DeviceId::new("b").unwrap(),
            request: DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        },
    );
    let read = transmits(&mut s)
        .into_iter()
        .find(|t| t.destination == addr(2))
        .expect("b's Read");
    assert!(!s.may_send(&read, Some(&identity("a"))));
    assert!(s.may_send(&read, Some(&identity("b"))));
}
