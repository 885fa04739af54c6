//! The endpoint's NAT rebinding support, client role: `observation_elsewhere` finds a
//! registered observation by token from another address (fresh notifications only), and
//! `move_request` re-keys a request to a new peer (an observation's notifications, a plain
//! request in flight sent again there, nothing more to the old address).

#![cfg(feature = "lwm2m")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Endpoint, EndpointConfig, Event, Message, MessageType};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn sent(ep: &mut Endpoint) -> Vec<(SocketAddr, Message)> {
    std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| (t.destination, Message::decode(&t.payload).unwrap()))
        .collect()
}

/// A CON response to `req` (separate, so that it is matched by token).
fn separate(req: &Message, mid: u16, observe: Option<u32>) -> Vec<u8> {
    let mut r = Message::response(Code::CONTENT);
    r.mtype = MessageType::Confirmable;
    r.message_id = mid;
    r.with_token(req.token());
    if let Some(seq) = observe {
        r.set_observe(seq);
    }
    r.payload = b"1".to_vec();
    r.to_bytes().unwrap()
}

#[test]
fn an_observation_moves_and_stale_notifications_do_not_find_it() {
    let mut ep = Endpoint::new_seeded(EndpointConfig::default(), 3);
    let now = Instant::now();
    let (a, b) = (addr(7000), addr(7001));
    let mut get = Message::request(Code::GET, "/3/0/9");
    get.set_observe(0);
    let id = ep.send_request(now, a, get).unwrap();
    let req = sent(&mut ep).remove(0).1;
    // A plain request is not an observation: never found from elsewhere.
    let plain = ep
        .send_request(now, addr(7002), Message::request(Code::GET, "/3/0/0"))
        .unwrap();
    let plain_req = sent(&mut ep).remove(0).1;
    assert_eq!(
        ep.observation_elsewhere(now, b, &separate(&plain_req, 1, None)),
        None
    );
    // Not registered yet: not found either.
    assert_eq!(
        ep.observation_elsewhere(now, b, &separate(&req, 1, Some(5))),
        None
    );
    ep.handle_datagram(now, a, &separate(&req, 2, Some(5)));
    assert!(matches!(ep.poll_event(), Some(Event::Response { id: got, .. }) if got == id));
    sent(&mut ep);
    // From its own peer it is matched as usual: nothing to move.
    assert_eq!(
        ep.observation_elsewhere(now, a, &separate(&req, 3, Some(6))),
        None
    );
    // From elsewhere: found when fresh, not when older than the last one taken.
    assert_eq!(
        ep.observation_elsewhere(now, b, &separate(&req, 3, Some(6))),
        Some(id)
    );
    assert_eq!(
        ep.observation_elsewhere(now, b, &separate(&req, 3, Some(4))),
        None
    );
    assert!(ep.move_request(now, id, b));
    ep.handle_datagram(now, b, &separate(&req, 4, Some(6)));
    assert!(matches!(ep.poll_event(), Some(Event::Notification { id: got, .. }) if got == id));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].0, out[0].1.mtype),
        (b, MessageType::Acknowledgement)
    );
    // The old address's notifications are unknown now.
    ep.handle_datagram(now, a, &separate(&req, 5, Some(7)));
    assert!(ep.poll_event().is_none());
    let out = sent(&mut ep);
    assert_eq!((out[0].0, out[0].1.mtype), (a, MessageType::Reset));
    // The cancel goes to the new peer.
    assert!(ep.cancel_observation(now, id));
    let out = sent(&mut ep);
    assert_eq!((out[0].0, out[0].1.token()), (b, req.token()));
    let _ = plain;
}

#[test]
fn a_plain_request_in_flight_is_sent_again_to_the_new_peer_only() {
    let mut ep = Endpoint::new_seeded(EndpointConfig::default(), 4);
    let mut now = Instant::now();
    let (a, b) = (addr(7010), addr(7011));
    let id = ep
        .send_request(now, a, Message::request(Code::GET, "/3/0/0"))
        .unwrap();
    let first = sent(&mut ep).remove(0).1;
    assert!(ep.move_request(now, id, b));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0, out[0].1.token()), (b, first.token()));
    assert_ne!(out[0].1.message_id, first.message_id);
    // Retransmissions go to the new peer only.
    let end = now + Duration::from_secs(10);
    while let Some(t) = ep.poll_timeout().filter(|t| *t <= end) {
        now = now.max(t);
        ep.handle_timeout(now);
        assert!(sent(&mut ep).iter().all(|(to, _)| *to == b));
    }
    ep.handle_datagram(now, b, &separate(&first, 9, None));
    assert!(matches!(ep.poll_event(), Some(Event::Response { id: got, .. }) if got == id));
    assert_eq!(ep.outstanding_requests(), 0);
    assert!(!ep.move_request(now, id, a), "no longer in progress");
}

/// NSTART holds at the new peer: a plain CON request in flight moved to a peer that
/// already has one in flight waits in that peer's queue, and goes out once the peer's
/// request is answered. Before, it was sent again at once: two CON requests in flight
/// to one peer with NSTART 1 (RFC 7252 §4.7).
#[test]
fn a_request_moved_to_a_busy_peer_waits_for_nstart() {
    let mut ep = Endpoint::new_seeded(EndpointConfig::default(), 5);
    let now = Instant::now();
    let (a, b) = (addr(7020), addr(7021));
    let at_b = ep
        .send_request(now, b, Message::request(Code::GET, "/3/0/1"))
        .unwrap();
    let b_req = sent(&mut ep).remove(0).1;
    let moving = ep
        .send_request(now, a, Message::request(Code::GET, "/3/0/2"))
        .unwrap();
    let first = sent(&mut ep).remove(0).1;
    assert!(ep.move_request(now, moving, b));
    assert!(
        sent(&mut ep).is_empty(),
        "sent to a peer with a CON in flight"
    );
    // Nothing is retransmitted to the old address either.
    let mut t = now;
    while let Some(due) = ep
        .poll_timeout()
        .filter(|d| *d <= now + Duration::from_secs(10))
    {
        t = t.max(due);
        ep.handle_timeout(t);
        assert!(sent(&mut ep).iter().all(|(to, _)| *to == b));
    }
    // The peer's request is answered: the moved one goes out (same token, new id).
    let mut ack = Message::response(Code::CONTENT);
    ack.mtype = MessageType::Acknowledgement;
    ack.message_id = b_req.message_id;
    ack.with_token(b_req.token());
    ep.handle_datagram(t, b, &ack.to_bytes().unwrap());
    assert!(matches!(ep.poll_event(), Some(Event::Response { id, .. }) if id == at_b));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0, out[0].1.token()), (b, first.token()));
    assert_ne!(out[0].1.message_id, first.message_id);
}

/// A request that would have to wait at a peer whose queue is full is not moved: false,
/// and it carries on at its old address (answered there).
#[test]
fn a_request_is_not_moved_into_a_full_queue() {
    let config = EndpointConfig {
        max_queued_per_peer: 1,
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new_seeded(config, 6);
    let now = Instant::now();
    let (a, b) = (addr(7030), addr(7031));
    ep.send_request(now, b, Message::request(Code::GET, "/3/0/1"))
        .unwrap();
    ep.send_request(now, b, Message::request(Code::GET, "/3/0/3"))
        .unwrap();
    sent(&mut ep);
    let id = ep
        .send_request(now, a, Message::request(Code::GET, "/3/0/2"))
        .unwrap();
    let req = sent(&mut ep).remove(0).1;
    assert!(!ep.move_request(now, id, b));
    assert!(sent(&mut ep).is_empty());
    let mut ack = Message::response(Code::CONTENT);
    ack.mtype = MessageType::Acknowledgement;
    ack.message_id = req.message_id;
    ack.with_token(req.token());
    ep.handle_datagram(now, a, &ack.to_bytes().unwrap());
    assert!(matches!(ep.poll_event(), Some(Event::Response { id: got, .. }) if got == id));
}

/// A notification of a moved observation that arrives late from the old address, older
/// than the one that moved it (reordered across the NAT rebinding), is acknowledged (CON)
/// or ignored (NON), and not delivered. Before, it got RST, on which the device drops
/// the observation (RFC 7641 §4.5) although it works at the new address. A fresh one from
/// the old address (the application did not move the observation back) still gets RST.
#[test]
fn a_stale_notification_from_the_old_address_is_not_reset() {
    let mut ep = Endpoint::new_seeded(EndpointConfig::default(), 7);
    let now = Instant::now();
    let (a, b) = (addr(7040), addr(7041));
    let mut get = Message::request(Code::GET, "/3/0/9");
    get.set_observe(0);
    let id = ep.send_request(now, a, get).unwrap();
    let req = sent(&mut ep).remove(0).1;
    ep.handle_datagram(now, a, &separate(&req, 2, Some(5)));
    assert!(matches!(ep.poll_event(), Some(Event::Response { .. })));
    sent(&mut ep);
    assert_eq!(
        ep.observation_elsewhere(now, b, &separate(&req, 3, Some(6))),
        Some(id)
    );
    assert!(ep.move_request(now, id, b));
    ep.handle_datagram(now, b, &separate(&req, 3, Some(6)));
    assert!(matches!(ep.poll_event(), Some(Event::Notification { .. })));
    sent(&mut ep);
    // Seq 5 (sent before the move, reordered) from the old address: ACK, nothing delivered.
    let stale = separate(&req, 4, Some(5));
    ep.handle_datagram(now, a, &stale);
    assert!(ep.poll_event().is_none());
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].0, out[0].1.mtype, out[0].1.message_id),
        (a, MessageType::Acknowledgement, 4)
    );
    // Its retransmission: the same ACK.
    ep.handle_datagram(now, a, &stale);
    assert!(ep.poll_event().is_none());
    let out = sent(&mut ep);
    assert_eq!(
        (out.len(), out[0].1.mtype),
        (1, MessageType::Acknowledgement)
    );
    // A NON one: nothing at all.
    let mut non = Message::decode(&separate(&req, 5, Some(4))).unwrap();
    non.mtype = MessageType::NonConfirmable;
    ep.handle_datagram(now, a, &non.to_bytes().unwrap());
    assert!(ep.poll_event().is_none());
    assert!(sent(&mut ep).is_empty());
    // A fresh one from the old address: RST, as before.
    ep.handle_datagram(now, a, &separate(&req, 6, Some(7)));
    assert!(ep.poll_event().is_none());
    let out = sent(&mut ep);
    assert_eq!((out[0].0, out[0].1.mtype), (a, MessageType::Reset));
    // The observation lives on at the new address.
    ep.handle_datagram(now, b, &separate(&req, 7, Some(8)));
    assert!(matches!(ep.poll_event(), Some(Event::Notification { id: got, .. }) if got == id));
}
