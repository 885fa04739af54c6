//! Review of the changes of day 44 (a hostile second pass): the LwM2M server's check that
//! over DTLS only the registration's identity answers or notifies for it
//! (`answer_from_stranger`), against the NAT-rebinding path it sits in front of; and
//! `Sent` means on the wire (a request held in the device's queue until the CoAP
//! endpoint would send it at once), against the ways the address frees.

#![cfg(feature = "lwm2m")]

mod server_sim;

use server_sim::{addr, con, established, events, notification, observe_battery, out, server};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::lwm2m::server::{BootstrapPlan, Lwm2mServer};
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, OpId, PeerIdentity, Transport};
use twinhub::{DeviceId, Lwm2mPath};

/// Device `ep`'s own PSK identity (`i-ep`), or none over plain CoAP.
fn identity(ep: &str, dtls: bool) -> Option<PeerIdentity> {
    dtls.then(|| PeerIdentity {
        psk_identity: Arc::from(format!("i-{ep}")),
        device: Some(DeviceId::new(ep).unwrap()),
    })
}

/// Hands the server `m` from `from` through a session of `ep`'s identity (or none).
fn send_as(s: &mut Lwm2mServer, now: Instant, from: SocketAddr, ep: &str, dtls: bool, m: &Message) {
    let who = identity(ep, dtls);
    s.handle_datagram_from(now, from, who.as_ref(), &m.to_bytes().unwrap());
}

/// Registers `ep` from `from` through its own identity; checks the 2.01.
fn register_as(
    s: &mut Lwm2mServer,
    now: Instant,
    from: SocketAddr,
    ep: &str,
    dtls: bool,
    mid: u16,
) {
    let mut m = con(Code::POST, "/rd", mid);
    m.add_uri_query(&format!("ep={ep}"));
    m.add_uri_query("lt=3000");
    m.payload = b"</3/0>".to_vec();
    send_as(s, now, from, ep, dtls, &m);
    let sent = out(s);
    assert!(
        sent.iter()
            .any(|(to, a)| *to == from && a.message_id == mid && a.code == Code::CREATED),
        "{sent:?}"
    );
}

fn address_of(s: &Lwm2mServer, device: &str) -> Option<SocketAddr> {
    s.registration(&DeviceId::new(device).unwrap())
        .expect("registered")
        .address
}

/// `a` at port 1 and `b` at port 2, each through its own identity (or none over plain
/// CoAP); `a`'s `/3/0/9` is observed (op 1), answered with Observe 2 through `a`'s
/// identity. Returns the server, the Observe, the time and the events of the answer.
fn a_observed_beside_b(dtls: bool) -> (Lwm2mServer, Message, Instant, Vec<DeviceEvent>) {
    let mut s = server();
    let t0 = Instant::now();
    register_as(&mut s, t0, addr(1), "a", dtls, 10);
    register_as(&mut s, t0, addr(2), "b", dtls, 11);
    events(&mut s);
    let observe = observe_battery(&mut s, t0, 1, "a", addr(1));
    send_as(&mut s, t0, addr(1), "a", dtls, &established(&observe));
    out(&mut s);
    let evs = events(&mut s);
    (s, observe, t0, evs)
}

/// [`a_observed_beside_b`]; then the two swap ports behind a NAT and `a`'s device
/// notifies from port 2, through a session of its own identity. Returns the events of
/// that notification.
fn swapped_notification(dtls: bool) -> (Lwm2mServer, Vec<DeviceEvent>) {
    let (mut s, observe, t0, evs) = a_observed_beside_b(dtls);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            DeviceEvent::Response {
                op: OpId(1),
                result: Ok(_),
                ..
            }
        )),
        "the Observe's answer counts: {evs:?}"
    );
    // The NAT swapped them: `a`'s device is at port 2 now, and notifies from there.
    let moved = notification(&observe, MessageType::NonConfirmable, 600, 3, b"81");
    send_as(&mut s, t0, addr(2), "a", dtls, &moved);
    out(&mut s);
    let evs = events(&mut s);
    (s, evs)
}

fn check_swapped(s: &Lwm2mServer, evs: &[DeviceEvent]) {
    assert!(
        evs.iter().any(
            |e| matches!(e, DeviceEvent::Notification { device, .. } if device.as_str() == "a")
        ),
        "a's own notification from its new address counts: {evs:?}"
    );
    assert_eq!(address_of(s, "a"), Some(addr(2)), "a moved: {evs:?}");
    assert_eq!(address_of(s, "b"), None, "b lost the address: {evs:?}");
    assert!(
        evs.iter()
            .any(|e| matches!(e, DeviceEvent::Displaced { device, .. } if device.as_str() == "b")),
        "{evs:?}"
    );
}

/// Over plain CoAP the token says the notification is `a`'s: `a` moves to port 2 and `b`,
/// whose address that was, is displaced (the module docs' "the two swapped"). Pins it.
#[test]
fn swapped_ports_notification_moves_the_registration_plain_coap() {
    let (s, evs) = swapped_notification(false);
    check_swapped(&s, &evs);
}

/// Finding 1 (fixed): over DTLS the same notification, through a session of `a`'s own
/// identity, was dropped unseen: `answer_from_stranger` found no request of `(port 2,
/// token)` and fell back to the registration at port 2 (`b`), whose identity it is not,
/// judging a notification by the address it came from as it does an empty ACK or RST, in
/// front of `rebinding_notification`, which checks the token's registration's identity
/// itself. The notification was lost, and `a` stayed at the address it left (its
/// requests went to port 1, to `b`'s device, which the driver does not let through `b`'s
/// session) and `b` kept port 2, until `a`'s next Update. Now a notification of an
/// observation made elsewhere is judged by that observation's registration.
#[test]

fn swapped_ports_notification_moves_the_registration_over_dtls() {
    let (s, evs) = swapped_notification(true);
    check_swapped(&s, &evs);
}

/// Finding 2 (fixed): a device registered at port 1 bootstraps again from the same port (one
/// CoAP endpoint for both, as Leshan's client does); the bootstrap server's Discover holds
/// the address's CoAP NSTART, so the hub's Read of the device waits in its queue (not
/// `Sent`, rightly). The device never answers the Discover: the endpoint gives up on it
/// (about 93 s), the bootstrap session fails, and the address is free. Before: nothing
/// pumped the registration then (`bootstrap_answered` ends the session without it), so
/// the Read stayed in the queue until the device next talked or `queue_timeout` (600 s)
/// failed it, although it could have gone out at once. Now the bootstrap request's
/// failure pumps the registration at its address.
#[test]
fn read_held_behind_a_bootstrap_request_goes_out_when_it_fails() {
    let mut s = server().with_bootstrap(Box::new(|_| Some(BootstrapPlan::new(Vec::new()))));
    let t0 = Instant::now();
    register_as(&mut s, t0, addr(1), "a", false, 10);
    events(&mut s);
    let mut bs = con(Code::POST, "/bs", 20);
    bs.add_uri_query("ep=a");
    send_as(&mut s, t0, addr(1), "a", false, &bs);
    let sent = out(&mut s);
    assert!(
        sent.iter().any(|(to, m)| *to == addr(1)
            && m.code == Code::GET
            && m.mtype == MessageType::Confirmable),
        "the Discover: {sent:?}"
    );
    s.submit(
        t0,
        DeviceOp {
            id: OpId(1),
            device: DeviceId::new("a").unwrap(),
            request: DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        },
    );
    let is_read = |m: &Message| m.code == Code::GET && m.uri_path_string() == "3/0/9";
    let is_sent = |e: &DeviceEvent| matches!(e, DeviceEvent::Sent { op: OpId(1), .. });
    assert!(
        !out(&mut s).iter().any(|(_, m)| is_read(m)),
        "held behind the Discover"
    );
    assert!(!events(&mut s).iter().any(is_sent), "not Sent while held");
    // The device keeps silent; time runs until the bootstrap session fails.
    let mut now = t0;
    let mut failed_at = None;
    for _ in 0..200 {
        let Some(next) = s.poll_timeout() else { break };
        if next > t0 + Duration::from_secs(300) {
            break;
        }
        now = next.max(now);
        s.handle_timeout(now);
        let evs = events(&mut s);
        let reads = out(&mut s).into_iter().filter(|(_, m)| is_read(m)).count();
        if evs
            .iter()
            .any(|e| matches!(e, DeviceEvent::Bootstrap { .. }))
        {
            failed_at = Some(now);
            assert!(
                reads == 1 && evs.iter().any(is_sent),
                "the address is free once the Discover failed: the Read goes out (Sent): {evs:?}"
            );
            break;
        }
        assert_eq!(
            reads, 0,
            "the Read waits while the Discover holds the address"
        );
    }
    assert!(
        failed_at.is_some(),
        "the bootstrap session failed within 300 s"
    );
}

/// The other side of finding 1's fix: `b`'s identity, at port 2, sends a notification on
/// `a`'s token (known to it somehow). It is not `a`'s: dropped unseen (no RST, no ACK),
/// `a` stays at port 1 and `b` at port 2. (Before the fix it was refused too, but
/// answered with RST by the CoAP endpoint.)
#[test]
fn notification_on_anothers_token_from_another_address_is_dropped_unseen() {
    let (mut s, observe, t0, _) = a_observed_beside_b(true);
    let forged = notification(&observe, MessageType::Confirmable, 600, 3, b"99");
    send_as(&mut s, t0, addr(2), "b", true, &forged);
    let sent = out(&mut s);
    let evs = events(&mut s);
    assert!(sent.is_empty(), "dropped unseen: {sent:?}");
    assert!(
        !evs.iter()
            .any(|e| matches!(e, DeviceEvent::Notification { .. })),
        "{evs:?}"
    );
    assert_eq!(address_of(&s, "a"), Some(addr(1)));
    assert_eq!(address_of(&s, "b"), Some(addr(2)));
    // `a`'s own next notification, from where it is, still counts.
    let next = notification(&observe, MessageType::NonConfirmable, 601, 4, b"82");
    send_as(&mut s, t0, addr(1), "a", true, &next);
    out(&mut s);
    let evs = events(&mut s);
    assert!(
        evs.iter().any(
            |e| matches!(e, DeviceEvent::Notification { device, .. } if device.as_str() == "a")
        ),
        "{evs:?}"
    );
}

/// Finding 3 (fixed): over DTLS, `a` registered at port 1 through its identity
/// `i-a`; its device bootstraps again from port 1 through a bootstrap identity of its own
/// (`a-bs`, the session at port 1 now). It is an LwM2M 1.0 client and resets the
/// Bootstrap-Discover, which the server takes as "go on" (Bootstrap-Delete next). But an
/// RST was judged by the identity of the registration at its address (`i-a`), not by
/// the request it answers (the bootstrap session's): it was dropped unseen, the Discover
/// retransmitted until the exchange gave up, and the bootstrap session failed. (The same
/// dropped an empty ACK before a separate response to a bootstrap request: that only
/// cost retransmissions.) Now an empty ACK or RST of a bootstrap request (found by its
/// message id) is the session's own matter.
#[test]

fn reset_of_a_bootstrap_discover_through_the_bootstrap_identity_goes_on() {
    let mut s = server().with_bootstrap(Box::new(|_| Some(BootstrapPlan::new(Vec::new()))));
    let t0 = Instant::now();
    register_as(&mut s, t0, addr(1), "a", true, 10);
    events(&mut s);
    let bootstrap_identity = PeerIdentity {
        psk_identity: Arc::from("a-bs"),
        device: Some(DeviceId::new("a").unwrap()),
    };
    let from_bs = |s: &mut Lwm2mServer, m: &Message| {
        s.handle_datagram_from(
            t0,
            addr(1),
            Some(&bootstrap_identity),
            &m.to_bytes().unwrap(),
        )
    };
    let mut bs = con(Code::POST, "/bs", 20);
    bs.add_uri_query("ep=a");
    from_bs(&mut s, &bs);
    let sent = out(&mut s);
    let (_, discover) = sent
        .iter()
        .find(|(to, m)| *to == addr(1) && m.code == Code::GET)
        .unwrap_or_else(|| panic!("the Discover: {sent:?}"));
    let reset = Message::new(MessageType::Reset, Code::EMPTY, discover.message_id);
    from_bs(&mut s, &reset);
    let next = out(&mut s);
    assert!(
        next.iter()
            .any(|(to, m)| *to == addr(1) && m.code == Code::DELETE),
        "Bootstrap-Delete follows the reset Discover: {next:?}"
    );
}

/// The control of finding 3: the same device bootstrapping through the identity it
/// registered with (`i-a`) resets the Discover, and the session goes on with
/// Bootstrap-Delete. Pins it.
#[test]
fn reset_of_a_bootstrap_discover_through_the_registrations_identity_goes_on() {
    let mut s = server().with_bootstrap(Box::new(|_| Some(BootstrapPlan::new(Vec::new()))));
    let t0 = Instant::now();
    register_as(&mut s, t0, addr(1), "a", true, 10);
    events(&mut s);
    let mut bs = con(Code::POST, "/bs", 20);
    bs.add_uri_query("ep=a");
    send_as(&mut s, t0, addr(1), "a", true, &bs);
    let sent = out(&mut s);
    let (_, discover) = sent
        .iter()
        .find(|(to, m)| *to == addr(1) && m.code == Code::GET)
        .unwrap_or_else(|| panic!("the Discover: {sent:?}"));
    let reset = Message::new(MessageType::Reset, Code::EMPTY, discover.message_id);
    send_as(&mut s, t0, addr(1), "a", true, &reset);
    let next = out(&mut s);
    assert!(
        next.iter()
            .any(|(to, m)| *to == addr(1) && m.code == Code::DELETE),
        "Bootstrap-Delete follows the reset Discover: {next:?}"
    );
}
