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
