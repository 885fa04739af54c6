//! The endpoint's private tables at their bounds.

use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A CON response to `req` with `code` (separate, so that it is matched by token), and
/// Observe `seq` if given.
fn separate(req: &Message, mid: u16, code: Code, observe: Option<u32>) -> Vec<u8> {
    let mut r = Message::response(code);
    r.mtype = MessageType::Confirmable;
    r.message_id = mid;
    r.with_token(req.token());
    if let Some(seq) = observe {
        r.set_observe(seq);
    }
    r.to_bytes().unwrap()
}

/// Sends an observe GET to `peer` and registers it (the device answers with Observe 1);
/// its request id and the request as sent.
fn observe(ep: &mut Endpoint, now: Instant, peer: SocketAddr, mid: u16) -> (RequestId, Message) {
    let mut get = Message::request(Code::GET, "/3/0/9");
    get.set_observe(0);
    let id = ep.send_request(now, peer, get).unwrap();
    let req = Message::decode(&ep.poll_transmit().unwrap().payload).unwrap();
    ep.handle_datagram(now, peer, &separate(&req, mid, Code::CONTENT, Some(1)));
    while ep.poll_transmit().is_some() {}
    while ep.poll_event().is_some() {}
    (id, req)
}

/// The token-only observation index (`observe_by_token`, behind `observation_elsewhere`
/// for NAT rebinding) holds one entry per registered observation, so it is bounded by
/// `max_outstanding_requests`: at the bound no further request (observation or not) is
/// taken (`SendError::TooManyRequests`), and every way an observation ends frees its
/// entry, so registering and ending observations many times past the bound never grows
/// it beyond the observations alive.
#[test]
fn the_observation_index_holds_one_entry_per_live_observation_within_the_request_bound() {
    const BOUND: usize = 4;
    let config = EndpointConfig {
        max_outstanding_requests: BOUND,
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new_seeded(config, 11);
    let now = Instant::now();
    let mut live: Vec<(RequestId, Message, SocketAddr)> = Vec::new();
    let mut port = 8000;
    let mut mid = 1000;
    for _ in 0..BOUND {
        port += 1;
        mid += 1;
        let (id, req) = observe(&mut ep, now, addr(port), mid);
        live.push((id, req, addr(port)));
    }
    assert_eq!(ep.observe_by_token.len(), BOUND);
    // At the bound: nothing more is taken, the index does not grow.
    let mut get = Message::request(Code::GET, "/3/0/0");
    get.set_observe(0);
    assert_eq!(
        ep.send_request(now, addr(9999), get),
        Err(SendError::TooManyRequests)
    );
    assert_eq!(ep.observe_by_token.len(), BOUND);
    // Each live observation is found from elsewhere by its token.
    for (id, req, _) in &live {
        let n = separate(req, 1, Code::CONTENT, Some(2));
        assert_eq!(ep.observation_elsewhere(now, addr(1), &n), Some(*id));
    }
    // Past the bound: end an observation each way there is, register a new one in its
    // place, many times over.
    for round in 0..5 * BOUND {
        let (id, req, peer) = live.remove(0);
        mid += 1;
        match round % 5 {
            // The application forgets it (the reactive cancel).
            0 => assert!(ep.forget_request(now, id)),
            // The application cancels it (GET Observe=1) and the device answers.
            1 => {
                assert!(ep.cancel_observation(now, id));
                let cancel = Message::decode(&ep.poll_transmit().unwrap().payload).unwrap();
                let mut ack = Message::response(Code::CONTENT);
                ack.mtype = MessageType::Acknowledgement;
                ack.message_id = cancel.message_id;
                ack.with_token(cancel.token());
                ep.handle_datagram(now, peer, &ack.to_bytes().unwrap());
            }
            // The device ends it with an error notification.
            2 => ep.handle_datagram(now, peer, &separate(&req, mid, Code::NOT_FOUND, None)),
            // The device ends it with a response without Observe.
            3 => ep.handle_datagram(now, peer, &separate(&req, mid, Code::CONTENT, None)),
            // The observation moved (NAT rebinding), then ends at its new address.
            _ => {
                let moved = addr(port + 500);
                assert!(ep.move_request(now, id, moved));
                ep.handle_datagram(now, moved, &separate(&req, mid, Code::NOT_FOUND, None));
            }
        }
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
        assert!(
            !ep.observe_by_token.values().any(|v| *v == id),
            "round {round}: the ended observation's entry stayed"
        );
        assert_eq!(ep.observe_by_token.len(), BOUND - 1, "round {round}");
        port += 1;
        mid += 1;
        let (id, req) = observe(&mut ep, now, addr(port), mid);
        live.push((id, req, addr(port)));
        assert_eq!(ep.observe_by_token.len(), BOUND, "round {round}");
        assert_eq!(ep.outstanding_requests(), BOUND);
    }
    for (id, req, _) in &live {
        let n = separate(req, 1, Code::CONTENT, Some(2));
        assert_eq!(ep.observation_elsewhere(now, addr(1), &n), Some(*id));
    }
}
