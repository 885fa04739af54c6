//! Hostile review of the CoAP endpoint's protocol behaviour: a hand-driven raw peer
//! against the sans-IO `Endpoint` under a made-up clock. Every test asserts a promise of
//! the crate docs or of RFC 7252 / 7641 / 7959; each failed on the code as reviewed
//! (fixed since).

#![cfg(feature = "lwm2m")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{
    BlockOption, Code, Endpoint, EndpointConfig, Event, IncomingRequestId, Message, MessageType,
    ObservationId, notification_is_fresh,
};

fn peer() -> SocketAddr {
    "127.0.0.1:40001".parse().unwrap()
}

fn server_addr() -> SocketAddr {
    "127.0.0.1:5683".parse().unwrap()
}

fn drain(ep: &mut Endpoint) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        out.push(Message::decode(&t.payload).expect("endpoint sends valid CoAP"));
    }
    out
}

fn raw(mtype: MessageType, code: Code, mid: u16, token: &[u8], path: &str) -> Message {
    let mut m = Message::request(code, path);
    m.mtype = mtype;
    m.message_id = mid;
    m.set_token(token).unwrap();
    m
}

fn send(ep: &mut Endpoint, now: Instant, m: &Message) {
    ep.handle_datagram(now, peer(), &m.to_bytes().unwrap());
}

fn next_request(ep: &mut Endpoint) -> (IncomingRequestId, Message) {
    loop {
        match ep.poll_event() {
            Some(Event::Request { id, request, .. }) => return (id, request),
            Some(_) => continue,
            None => panic!("no request event"),
        }
    }
}

fn body(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// RFC 7641 §3.3.1 / §4.1: a client may re-register with the *same token*; the server
/// "MUST NOT add a new entry but MUST replace or update the existing one", and the
/// response to the re-registration is, for the client, just the next notification of
/// the same relation (same token), so it is judged by the §3.4 freshness rule against
/// the notifications already seen. §4.4: the Observe value is "a strictly increasing
/// sequence number" per observer. The crate's doc promises "sequence numbers are added".
/// If the server restarts the sequence at 0 after a re-registration, a conformant client
/// drops the re-registration response and every following notification as stale
/// (for up to 128 s).
#[test]
fn reregistration_with_same_token_keeps_observe_sequence_fresh() {
    let mut ep = Endpoint::new_seeded(EndpointConfig::default(), 7);
    let t0 = Instant::now();
    let token = [0xAB, 0xCD];
    let mut reg = raw(MessageType::Confirmable, Code::GET, 100, &token, "/3/0/9");
    reg.set_observe(0);
    send(&mut ep, t0, &reg);
    let (id, _) = next_request(&mut ep);
    let mut r = Message::response(Code::CONTENT);
    r.payload = b"1".to_vec();
    let obs: ObservationId = ep
        .respond_and_observe(t0, id, r)
        .unwrap()
        .expect("observed");
    let first = drain(&mut ep);
    let mut last_seq = first[0]
        .observe()
        .expect("registration response carries Observe");

    // Five NON notifications.
    for i in 0..5u8 {
        let mut n = Message::response(Code::CONTENT);
        n.mtype = MessageType::NonConfirmable;
        n.payload = vec![b'a' + i];
        ep.notify(t0, obs, n).unwrap();
        for m in drain(&mut ep) {
            let s = m.observe().unwrap();
            assert!(notification_is_fresh(last_seq, t0, s, t0));
            last_seq = s;
        }
    }

    // Re-registration with the same token, one second later.
    let t1 = t0 + Duration::from_secs(1);
    let mut rereg = raw(MessageType::Confirmable, Code::GET, 101, &token, "/3/0/9");
    rereg.set_observe(0);
    send(&mut ep, t1, &rereg);
    let (id2, _) = next_request(&mut ep);
    let mut r = Message::response(Code::CONTENT);
    r.payload = b"2".to_vec();
    let obs2 = ep
        .respond_and_observe(t1, id2, r)
        .unwrap()
        .expect("observed again");
    let resp = drain(&mut ep);
    let seq = resp[0]
        .observe()
        .expect("Observe in the re-registration response");
    assert!(
        notification_is_fresh(last_seq, t0, seq, t1),
        "re-registration response Observe={seq} is stale after notification {last_seq}: \
         the client drops it"
    );
    let mut n = Message::response(Code::CONTENT);
    n.mtype = MessageType::NonConfirmable;
    ep.notify(t1, obs2, n).unwrap();
    let s = drain(&mut ep)[0].observe().unwrap();
    assert!(
        notification_is_fresh(last_seq, t0, s, t1),
        "notification Observe={s} after re-registration is stale against {last_seq}"
    );
}

/// RFC 7959 §2.4: a block-wise GET reassembles blocks "of the same representation"; the
/// ETag is how the client tells that the resource changed between blocks, and blocks of
/// two representations must not be concatenated. The crate promises "Block2 responses we
/// receive are downloaded block by block and reach the application whole" and fails a
/// download "when a block did not continue the body" (`RequestError::BlockMismatch`).
/// A peer whose resource changed between block 0 (ETag A) and block 1 (ETag B) must not
/// produce one spliced 2.05 for the application.
#[test]
fn block2_download_does_not_splice_blocks_with_different_etags() {
    let mut client = Endpoint::new_seeded(EndpointConfig::default(), 9);
    let t0 = Instant::now();
    let srv = server_addr();
    let id = client
        .send_request(t0, srv, Message::request(Code::GET, "/fw"))
        .unwrap();
    let req = Message::decode(&client.poll_transmit().unwrap().payload).unwrap();

    let old = body(1500, 1);
    let new = body(1500, 2);
    // Block 0 of the old representation, piggybacked.
    let mut b0 = Message::response(Code::CONTENT);
    b0.mtype = MessageType::Acknowledgement;
    b0.message_id = req.message_id;
    b0.with_token(req.token());
    b0.add_etag(b"A");
    b0.set_block2(BlockOption::new(0, true, 6).unwrap());
    b0.set_size2(1500);
    b0.payload = old[..1024].to_vec();
    client.handle_datagram(t0, srv, &b0.to_bytes().unwrap());
    let req1 = Message::decode(&client.poll_transmit().expect("asks for block 1").payload).unwrap();
    assert_eq!(req1.block2().unwrap().num, 1);

    // Block 1 of the new representation.
    let mut b1 = Message::response(Code::CONTENT);
    b1.mtype = MessageType::Acknowledgement;
    b1.message_id = req1.message_id;
    b1.with_token(req1.token());
    b1.add_etag(b"B");
    b1.set_block2(BlockOption::new(1, false, 6).unwrap());
    b1.set_size2(1500);
    b1.payload = new[1024..].to_vec();
    client.handle_datagram(t0, srv, &b1.to_bytes().unwrap());

    let mut events = Vec::new();
    while let Some(e) = client.poll_event() {
        events.push(e);
    }
    for e in &events {
        if let Event::Response { id: rid, response } = e {
            assert_eq!(*rid, id);
            assert!(
                response.payload != [&old[..1024], &new[1024..]].concat(),
                "the application got a body spliced from two representations \
                 (ETag A block 0 + ETag B block 1)"
            );
        }
    }
    // Either a fresh download (a new block-0 request) or `RequestFailed` is acceptable.
}

/// RFC 7959 §2.4 / §3: the follow-up requests of a block-wise transfer are requests
/// "with the same options as the initial request" — and the same method; the blocks of a
/// GET response and of a POST response to the same URI are blocks of different
/// representations. The crate: "a response body larger than the block size is sliced
/// (Block2, with Size2) and kept for the peer's follow-up requests, which the endpoint
/// answers itself". A GET download interleaved with a POST to the same URI from the same
/// peer must keep serving the GET's body.
#[test]
fn block2_follow_up_of_get_is_not_served_from_a_post_response() {
    let mut ep = Endpoint::new_seeded(EndpointConfig::default(), 11);
    let t0 = Instant::now();
    let get_body = body(3000, 3);
    let post_body = body(3000, 4);

    // GET /obj: block 0 of the GET's representation.
    send(
        &mut ep,
        t0,
        &raw(MessageType::Confirmable, Code::GET, 1, &[1], "/obj"),
    );
    let (id, _) = next_request(&mut ep);
    let mut r = Message::response(Code::CONTENT);
    r.payload = get_body.clone();
    ep.respond(t0, id, r).unwrap();
    let b0 = drain(&mut ep);
    assert_eq!(b0[0].payload, get_body[..1024]);

    // POST /obj (an action whose large result is block-wise too).
    send(
        &mut ep,
        t0,
        &raw(MessageType::Confirmable, Code::POST, 2, &[2], "/obj"),
    );
    let (id, _) = next_request(&mut ep);
    let mut r = Message::response(Code::CHANGED);
    r.payload = post_body.clone();
    ep.respond(t0, id, r).unwrap();
    drain(&mut ep);

    // The GET download goes on: GET /obj Block2 num 1.
    let mut g1 = raw(MessageType::Confirmable, Code::GET, 3, &[3], "/obj");
    g1.set_block2(BlockOption::new(1, false, 6).unwrap());
    send(&mut ep, t0, &g1);
    let mut got = drain(&mut ep);
    if got.is_empty() {
        // Handed to the application instead: answer with the GET representation again.
        let (id, _) = next_request(&mut ep);
        let mut r = Message::response(Code::CONTENT);
        r.payload = get_body.clone();
        ep.respond(t0, id, r).unwrap();
        got = drain(&mut ep);
    }
    let blk = &got[0];
    assert_eq!(
        blk.code,
        Code::CONTENT,
        "block 1 of a GET answered with {}",
        blk.code
    );
    assert_eq!(
        blk.payload,
        get_body[1024..2048],
        "block 1 of GET /obj came from the POST's response body"
    );
}

/// RFC 7641 §3.6 / §4.5: an observer that rejects a notification with RST is removed
/// ("the server ... MUST remove the associated entry from the list of observers" when a
/// notification is answered with RST). The crate: "An RST ... ends the relation
/// (`Event::ObservationEnded`)". RFC 7252 §4.3: an RST matches a NON message by its
/// message id. A client that RSTs a NON notification after the server already sent the
/// next one (ordinary for back-to-back notifications) must still end the relation.
#[test]
fn rst_to_an_earlier_non_notification_ends_the_relation() {
    let mut ep = Endpoint::new_seeded(EndpointConfig::default(), 13);
    let t0 = Instant::now();
    let mut reg = raw(MessageType::Confirmable, Code::GET, 200, &[9, 9], "/3/0/9");
    reg.set_observe(0);
    send(&mut ep, t0, &reg);
    let (id, _) = next_request(&mut ep);
    let obs = ep
        .respond_and_observe(t0, id, Message::response(Code::CONTENT))
        .unwrap()
        .expect("observed");
    drain(&mut ep);
    let mut mids = Vec::new();
    for _ in 0..2 {
        let mut n = Message::response(Code::CONTENT);
        n.mtype = MessageType::NonConfirmable;
        ep.notify(t0, obs, n).unwrap();
        mids.push(drain(&mut ep)[0].message_id);
    }
    // The client RSTs the first notification (the second is still in the network).
    send(&mut ep, t0, &Message::empty(MessageType::Reset, mids[0]));
    let mut ended = false;
    while let Some(e) = ep.poll_event() {
        if let Event::ObservationEnded { id, .. } = e {
            ended |= id == obs;
        }
    }
    assert!(
        ended && ep.observers() == 0,
        "RST to NON notification mid {} was ignored; observer still held",
        mids[0]
    );
}
