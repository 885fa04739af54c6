//! What dogfooding the device library as a device team found (session 56): each test
//! failed before its fix, and its comment says what happened then. Sans-IO where it can
//! be (a client and a hand-made server), so the file runs in well under a second.
#![cfg(feature = "device")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::lwm2m::client::{ClientConfig, ClientEvent, Lwm2mClient, ObjectTree, objects};

fn server() -> SocketAddr {
    "127.0.0.1:5683".parse().unwrap()
}

fn client(now: Instant, binding: &str) -> Lwm2mClient {
    let mut tree = ObjectTree::new();
    tree.add(objects::security("coap://127.0.0.1:5683", 1));
    tree.add(objects::server(1, 60, binding));
    tree.add(objects::device("Acme", "GW", "SN-1", "1.0"));
    Lwm2mClient::new(now, ClientConfig::new("gw-1", server()), tree)
}

/// The datagrams the client has for the server, decoded.
fn sent(c: &mut Lwm2mClient) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(t) = c.poll_transmit() {
        assert_eq!(t.destination, server());
        out.push(Message::decode(&t.payload).unwrap());
    }
    out
}

/// Registers `c` with the hand-made server (2.01 at `/rd/r1`).
fn register(c: &mut Lwm2mClient, now: Instant) -> Message {
    c.handle_timeout(now);
    let register = sent(c)
        .into_iter()
        .find(|m| m.code == Code::POST && m.uri_path_string() == "rd")
        .expect("a Register");
    let mut created = Message::new(
        MessageType::Acknowledgement,
        Code::CREATED,
        register.message_id,
    );
    created.with_token(register.token());
    created.add_location_path("rd");
    created.add_location_path("r1");
    c.handle_datagram(now, server(), &created.to_bytes().unwrap());
    assert!(c.is_registered());
    register
}

/// A device whose Server object says Binding `UQ` (what `objects::server(.., "UQ")` and
/// its validation offer, and what a bootstrap server may write) is in queue mode. Before
/// the fix the Register carried `b=U` and no `Q` (only `ClientConfig::queue_mode` set it),
/// so the hub held the device for always reachable and sent it requests it would miss
/// once it slept.
#[test]
fn a_uq_binding_registers_in_queue_mode() {
    let now = Instant::now();
    let queries = |binding: &str| -> Vec<String> {
        let mut c = client(now, binding);
        let register = register(&mut c, now);
        register.uri_query().map(str::to_string).collect()
    };
    let uq = queries("UQ");
    assert!(uq.iter().any(|q| q == "Q"), "UQ binding: {uq:?}");
    assert!(uq.iter().any(|q| q == "lt=60"), "{uq:?}");
    let u = queries("U");
    assert!(!u.iter().any(|q| q == "Q"), "U binding: {u:?}");
}

/// A request of the server that crosses the device's De-register (the application is
/// shutting the device down: `DeviceThread::shutdown` then reads and drops every event
/// until `Deregistered`) is refused with 5.03, not carried out. Before the fix it was
/// served: the server got 2.04 for a Reboot (or a Write of a setting) whose event the
/// application never saw, and the job counted it done.
#[test]
fn a_request_crossing_the_deregister_is_refused_not_lost() {
    let now = Instant::now();
    let mut c = client(now, "U");
    register(&mut c, now);
    while c.poll_event().is_some() {}
    c.deregister(now);
    let delete = sent(&mut c)
        .into_iter()
        .find(|m| m.code == Code::DELETE)
        .expect("a De-register");
    assert_eq!(delete.uri_path_string(), "rd/r1");

    // The server's Execute of Reboot, sent before it saw the De-register.
    let mut reboot = Message::new(MessageType::Confirmable, Code::POST, 0x4242);
    reboot.set_token(&[7, 7]).unwrap();
    reboot.set_uri_path("3/0/4");
    c.handle_datagram(now, server(), &reboot.to_bytes().unwrap());
    let answers = sent(&mut c);
    let answer = answers
        .iter()
        .find(|m| m.message_id == 0x4242)
        .expect("an answer to the Execute");
    assert_eq!(answer.code, Code::SERVICE_UNAVAILABLE, "{answer:?}");
    let mut events = Vec::new();
    while let Some(e) = c.poll_event() {
        events.push(e);
    }
    assert!(!events.contains(&ClientEvent::Reboot), "{events:?}");

    // The De-register's answer: stopped, and still refusing.
    let mut deleted = Message::new(
        MessageType::Acknowledgement,
        Code::DELETED,
        delete.message_id,
    );
    deleted.with_token(delete.token());
    c.handle_datagram(now, server(), &deleted.to_bytes().unwrap());
    assert_eq!(c.poll_event(), Some(ClientEvent::Deregistered));
    let mut write = Message::new(MessageType::Confirmable, Code::PUT, 0x4243);
    write.set_uri_path("3/0/14");
    write.set_content_format(twinhub::coap::ContentFormat(0));
    write.payload = b"+01:00".to_vec();
    c.handle_datagram(
        now + Duration::from_millis(1),
        server(),
        &write.to_bytes().unwrap(),
    );
    let answers = sent(&mut c);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].code, Code::SERVICE_UNAVAILABLE);
    assert_eq!(c.poll_event(), None);
}
