//! Over DTLS, what the identity a device registered with legitimately sends is taken
//! (the liveness side of `answer_from_stranger` and of the layer's `may_send` gate):
//! findings of the identity model's liveness oracle
//! (`src/lwm2m/server/identity_model.rs`), as plain tests. Two devices that swapped ports
//! behind a NAT each speak, through their own identity, from the address the other
//! registered at.

#![cfg(feature = "lwm2m")]

mod server_sim;

use server_sim::{addr, con, events, notification, out};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use twinhub::DeviceId;
use twinhub::Lwm2mPath;
use twinhub::coap::{Code, Message, MessageType, Transmit};
use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, OpId, PeerIdentity, Transport};

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
/// Asserts that the server acknowledged message `mid` to `to` and reported an event
/// `reported` accepts.
fn acked_and_reported(
    s: &mut Lwm2mServer,
    to: SocketAddr,
    mid: u16,
    reported: impl Fn(&DeviceEvent) -> bool,
) {
    assert!(out(s).iter().any(|(at, m)| *at == to
        && m.mtype == MessageType::Acknowledgement
        && m.message_id == mid));
    let evs = events(s);
    assert!(evs.iter().any(reported), "{evs:?}");
}

fn transmits(s: &mut Lwm2mServer) -> Vec<Transmit> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

/// `a` registers at port 1 and `b` at port 2; behind a NAT `a`'s device now has port 2
/// (a session of `i-a` there) and de-registers (message 12, of type `mtype`). Asserts
/// that the server took the De-register and answered 2.02 to port 2 (`answer` tells the
/// answer: piggybacked, or NON); returns the server and that answer.
fn a_deregisters_from_bs_address(
    t0: Instant,
    mtype: MessageType,
    answer: impl Fn(&Message) -> bool,
) -> (Lwm2mServer, Transmit) {
    let mut s = server();
    let location = register_as(&mut s, t0, addr(1), "a", 10);
    register_as(&mut s, t0, addr(2), "b", 11);
    events(&mut s);
    let mut delete = con(Code::DELETE, &format!("/{location}"), 12);
    delete.mtype = mtype;
    send_as(&mut s, t0, addr(2), "a", &delete);
    let sent = transmits(&mut s);
    let deleted = sent
        .iter()
        .find(|t| {
            t.destination == addr(2)
                && Message::decode(&t.payload).is_ok_and(|m| m.code == Code::DELETED && answer(&m))
        })
        .unwrap_or_else(|| panic!("the 2.02: {sent:?}"))
        .clone();
    assert!(
        s.registration(&DeviceId::new("a").unwrap()).is_none(),
        "a de-registered"
    );
    (s, deleted)
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
    let t0 = Instant::now();
    let (mut s, deleted) =
        a_deregisters_from_bs_address(t0, MessageType::Confirmable, |m| m.message_id == 12);
    assert!(
        s.may_send(&deleted, Some(&identity("a"))),
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

/// Finding 2 (fixed): `a` (port 1) is observed and notifies, confirmable, Observe 3: taken.
/// Its ACK is lost, and behind a NAT `a`'s device now has port 2, where `b` is registered:
/// it retransmits the notification from there, through `i-a`. Not fresh (that number was
/// taken), it moves nothing and is not taken again, but it must be acknowledged:
/// unanswered, the device retransmits until CoAP gives up and then drops the observation
/// (RFC 7641 §4.5) while the hub still counts on it. It was dropped unseen, judged by the
/// identity of the registration at port 2 (`b`'s): the token's observation was looked
/// for among fresh notifications only. The same from `b`'s identity (a stranger to the
/// token) is still dropped unseen.
#[test]
fn a_stale_confirmable_notification_from_another_registrations_address_is_acknowledged() {
    let mut s = server();
    let t0 = Instant::now();
    register_as(&mut s, t0, addr(1), "a", 10);
    register_as(&mut s, t0, addr(2), "b", 11);
    events(&mut s);
    s.submit(
        t0,
        DeviceOp {
            id: OpId(1),
            device: DeviceId::new("a").unwrap(),
            request: DeviceRequest::Observe {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        },
    );
    let (_, observe) = out(&mut s)
        .into_iter()
        .find(|(to, m)| *to == addr(1) && m.observe() == Some(0))
        .expect("the Observe");
    let first = notification(
        &observe,
        MessageType::Acknowledgement,
        observe.message_id,
        2,
        b"80",
    );
    send_as(&mut s, t0, addr(1), "a", &first);
    out(&mut s);
    let third = notification(&observe, MessageType::Confirmable, 600, 3, b"81");
    send_as(&mut s, t0, addr(1), "a", &third);
    acked_and_reported(&mut s, addr(1), 600, |e| {
        matches!(e, DeviceEvent::Notification { .. })
    });
    // The same notification again, from port 2 through a's identity.
    send_as(&mut s, t0, addr(2), "a", &third);
    let sent = out(&mut s);
    assert!(
        sent.iter().any(|(to, m)| *to == addr(2)
            && m.mtype == MessageType::Acknowledgement
            && m.message_id == 600),
        "acknowledged: {sent:?}"
    );
    let evs = events(&mut s);
    assert!(
        !evs.iter()
            .any(|e| matches!(e, DeviceEvent::Notification { .. })),
        "not taken again: {evs:?}"
    );
    let address_of = |s: &Lwm2mServer, ep: &str| {
        s.registration(&DeviceId::new(ep).unwrap())
            .and_then(|r| r.address)
    };
    assert_eq!(address_of(&s, "a"), Some(addr(1)), "nothing moved: {evs:?}");
    assert_eq!(address_of(&s, "b"), Some(addr(2)), "nothing moved: {evs:?}");
    // From b's identity: not a's, dropped unseen.
    let stranger = notification(&observe, MessageType::Confirmable, 601, 3, b"81");
    send_as(&mut s, t0, addr(2), "b", &stranger);
    assert_eq!(out(&mut s), vec![], "no ACK, no RST to a stranger");
}

/// `ep`'s bootstrap identity (`ep-bs`), of the same device.
fn bootstrap_identity(ep: &str) -> PeerIdentity {
    PeerIdentity {
        psk_identity: Arc::from(format!("{ep}-bs")),
        device: Some(DeviceId::new(ep).unwrap()),
    }
}

/// Finding 3 (fixed): the DTLS layer judged a bootstrap request (Discover, Delete, the
/// Writes that carry the LWM2M server's PSK, Finish) by the registration at its
/// destination, as a device's request. So, over DTLS: `a`, registered at port 1 through
/// `i-a`, bootstraps again from port 1 through its bootstrap identity `a-bs` (one CoAP
/// endpoint for both servers, as Leshan's client has): the Discover was refused through
/// the session of `a-bs`, retransmitted into nothing, and the bootstrap failed after
/// about 93 s. And a bootstrap at an address no registration holds went through whatever
/// session was at the address, another identity's too (the next Writes with the keys).
/// Now a bootstrap request goes only through a session of the identity that asked for
/// the bootstrap (none over plain CoAP).
#[test]
fn a_bootstrap_request_goes_through_the_bootstrap_sessions_identity_only() {
    let mut s = server().with_bootstrap(Box::new(|_| {
        Some(twinhub::lwm2m::server::BootstrapPlan::new(Vec::new()))
    }));
    let t0 = Instant::now();
    register_as(&mut s, t0, addr(1), "a", 10);
    events(&mut s);
    let ask = |s: &mut Lwm2mServer, from: SocketAddr, mid: u16| {
        let mut bs = con(Code::POST, "/bs", mid);
        bs.add_uri_query("ep=a");
        s.handle_datagram_from(
            t0,
            from,
            Some(&bootstrap_identity("a")),
            &bs.to_bytes().unwrap(),
        );
        let sent = transmits(s);
        let decoded = |t: &Transmit| Message::decode(&t.payload).unwrap();
        let changed = sent
            .iter()
            .find(|t| decoded(t).message_id == mid)
            .cloned()
            .unwrap_or_else(|| panic!("the 2.04: {sent:?}"));
        assert_eq!(decoded(&changed).code, Code::CHANGED);
        let discover = sent
            .iter()
            .find(|t| decoded(t).code == Code::GET)
            .cloned()
            .unwrap_or_else(|| panic!("the Discover: {sent:?}"));
        (changed, discover)
    };
    // At the registration's address.
    let (changed, discover) = ask(&mut s, addr(1), 20);
    assert!(s.may_send(&changed, Some(&bootstrap_identity("a"))));
    assert!(
        s.may_send(&discover, Some(&bootstrap_identity("a"))),
        "the Discover goes through the bootstrap session"
    );
    assert!(!s.may_send(&discover, Some(&identity("a"))));
    // At an address no registration holds: not through another identity's session.
    let (_, discover) = ask(&mut s, addr(3), 21);
    assert!(s.may_send(&discover, Some(&bootstrap_identity("a"))));
    assert!(
        !s.may_send(&discover, Some(&identity("b"))),
        "a bootstrap request through another identity's session"
    );
    assert!(!s.may_send(&discover, None));
}

/// `a` (port 1) observed (op 1), its observation then ended by its device (a 4.04
/// notification, taken and acknowledged): the server no longer wants the token's
/// notifications. `b` registered at port 2 (queue mode when `b_queued`). Returns the
/// server and the Observe.
fn dead_observation_of_a(b_queued: bool) -> (Lwm2mServer, Message) {
    let mut s = server();
    let t0 = Instant::now();
    register_as(&mut s, t0, addr(1), "a", 10);
    let mut b = con(Code::POST, "/rd", 11);
    b.add_uri_query("ep=b");
    b.add_uri_query("lt=3000");
    if b_queued {
        b.add_uri_query("b=UQ");
    }
    b.payload = b"</3/0>".to_vec();
    send_as(&mut s, t0, addr(2), "b", &b);
    assert!(
        out(&mut s)
            .iter()
            .any(|(to, m)| *to == addr(2) && m.code == Code::CREATED)
    );
    let observe = server_sim::observe_battery(&mut s, t0, 1, "a", addr(1));
    send_as(&mut s, t0, addr(1), "a", &server_sim::established(&observe));
    let mut end = Message::new(MessageType::Confirmable, Code::NOT_FOUND, 600);
    end.with_token(observe.token());
    send_as(&mut s, t0, addr(1), "a", &end);
    acked_and_reported(&mut s, addr(1), 600, |e| {
        matches!(e, DeviceEvent::ObservationEnded { .. })
    });
    (s, observe)
}

/// Day 46, item 2: `a`'s observation is dead (its device ended it), and behind a NAT
/// `a`'s device now has port 2, where `b` is registered; it keeps notifying under the
/// dead token, through its own identity `i-a`. RFC 7641 §3.6: a notification the client
/// has no interest in is rejected with RST, so that the device stops sending it. It was
/// dropped unseen: no request or observation of the server's carries the token, so the
/// datagram was judged by the registration at port 2 (`b`'s, another identity), and the
/// device was never told (a non-confirmable one would go on for good). A response that
/// answers nothing of the server's is nobody's answer: it now gets RST, back through
/// the session it came by, and changes nothing.
#[test]
fn a_notification_of_a_dead_observation_from_another_registrations_address_gets_rst() {
    let (mut s, observe) = dead_observation_of_a(false);
    let t1 = Instant::now();
    let late = notification(&observe, MessageType::NonConfirmable, 601, 4, b"82");
    send_as(&mut s, t1, addr(2), "a", &late);
    let sent = transmits(&mut s);
    let rst = sent
        .iter()
        .find(|t| {
            t.destination == addr(2)
                && Message::decode(&t.payload)
                    .is_ok_and(|m| m.mtype == MessageType::Reset && m.message_id == 601)
        })
        .unwrap_or_else(|| panic!("the RST: {sent:?}"));
    assert!(s.may_send(rst, Some(&identity("a"))));
    assert_eq!(events(&mut s), vec![], "nothing taken");
    let address_of = |s: &Lwm2mServer, ep: &str| {
        s.registration(&DeviceId::new(ep).unwrap())
            .and_then(|r| r.address)
    };
    assert_eq!(address_of(&s, "a"), Some(addr(1)), "nothing moved");
    assert_eq!(address_of(&s, "b"), Some(addr(2)), "nothing moved");
}

/// Day 46, item 2, the registration at the address: a datagram through another
/// identity's session (here `a`'s dead notification, now answered with RST) is not `b`'s
/// device talking, so it does not wake `b` (queue mode): `b`'s queued Read stays queued
/// (it would go to port 2, to be refused by the DTLS layer through `i-a`'s session, and
/// the server would count `b` awake for its awake window).
#[test]
fn a_strangers_datagram_does_not_wake_the_queued_registration_at_its_address() {
    let (mut s, observe) = dead_observation_of_a(true);
    let t1 = Instant::now() + std::time::Duration::from_secs(120);
    s.handle_timeout(t1);
    s.submit(
        t1,
        DeviceOp {
            id: OpId(2),
            device: DeviceId::new("b").unwrap(),
            request: DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        },
    );
    assert!(
        out(&mut s).iter().all(|(_, m)| m.code != Code::GET),
        "b sleeps: its Read waits"
    );
    let late = notification(&observe, MessageType::NonConfirmable, 601, 4, b"82");
    send_as(&mut s, t1, addr(2), "a", &late);
    let sent = out(&mut s);
    assert!(
        sent.iter().all(|(_, m)| m.code != Code::GET),
        "a's datagram woke b: {sent:?}"
    );
    // The control: b's own datagram (an Update) wakes it.
    let location = s
        .registration(&DeviceId::new("b").unwrap())
        .map(|r| format!("rd/{}", r.registration_id))
        .unwrap();
    send_as(
        &mut s,
        t1,
        addr(2),
        "b",
        &con(Code::POST, &format!("/{location}"), 12),
    );
    assert!(
        out(&mut s)
            .iter()
            .any(|(to, m)| *to == addr(2) && m.code == Code::GET),
        "b's Update wakes it"
    );
}

/// Day 46, item 3: as finding 1, with a non-confirmable De-register. `a`'s device, behind
/// a NAT at port 2 where `b` is registered, de-registers with a NON request through its
/// identity; the server answers NON (RFC 7252 §5.2.3). The DTLS layer judged that answer
/// by the registration at its destination (`b`'s), as a request of the server's: the
/// 2.02 never left (a NON request is not retransmitted by CoAP: the device waited for an
/// answer that never came). A NON response, like an ACK, answers what just came through
/// the session at its destination, and goes back through it.
#[test]
fn a_non_confirmable_deregister_from_an_address_another_registration_holds_gets_its_answer() {
    let (s, deleted) =
        a_deregisters_from_bs_address(Instant::now(), MessageType::NonConfirmable, |m| {
            // (`con` gives message 12 the token 12.)
            m.mtype == MessageType::NonConfirmable && m.token().as_bytes() == 12u16.to_be_bytes()
        });
    assert!(
        s.may_send(&deleted, Some(&identity("a"))),
        "the NON 2.02 goes back through the session of a's identity it answers"
    );
}
