//! Observe (RFC 7641) and block-wise transfers (RFC 7959) between two sans-IO endpoints
//! under a simulated clock, with and without a lossy network.

#![cfg(feature = "lwm2m")]

mod coap_sim;

use coap_sim::{Faults, Sim, addr};
use std::time::Duration;
use twinhub::coap::{
    BlockOption, Code, EndpointConfig, Event, Message, MessageType, ObservationEndReason,
    ObservationId, RequestError,
};

fn cfg() -> EndpointConfig {
    EndpointConfig::default()
}

fn observe_request(path: &str) -> Message {
    let mut m = Message::request(Code::GET, path);
    m.set_observe(0);
    m
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Registers an observation of /3/0/9 from node 0 on node 1; returns the relation.
fn register(sim: &mut Sim) -> (twinhub::coap::RequestId, ObservationId) {
    let server = sim.addr(1);
    let now = sim.now;
    let id = sim
        .ep(0)
        .send_request(now, server, observe_request("/3/0/9"))
        .unwrap();
    let mut obs = None;
    let mut first = None;
    sim.run(Duration::from_secs(2), |sim, node, e| match (node, e) {
        (1, Event::Request { id, request, .. }) => {
            assert_eq!(request.observe(), Some(0));
            let mut r = Message::response(Code::CONTENT);
            r.payload = b"50".to_vec();
            let now = sim.now;
            obs = sim.ep(1).respond_and_observe(now, id, r).unwrap();
        }
        (0, Event::Response { id: rid, response }) => {
            assert_eq!(rid, id);
            first = Some(response);
        }
        other => panic!("unexpected {other:?}"),
    });
    let first = first.expect("first response");
    assert_eq!(first.payload, b"50");
    assert!(
        first.observe().is_some(),
        "registered: the response carries Observe"
    );
    (id, obs.expect("relation"))
}

fn notification(payload: &[u8], con: bool) -> Message {
    let mut n = Message::response(Code::CONTENT);
    n.mtype = if con {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    };
    n.payload = payload.to_vec();
    n
}

#[test]
fn notifications_arrive_in_order_with_increasing_sequence_numbers() {
    let mut sim = Sim::new(1, Faults::NONE, &[cfg(), cfg()]);
    let (id, obs) = register(&mut sim);
    let mut got = Vec::new();
    for i in 0..5u8 {
        let now = sim.now;
        sim.ep(1)
            .notify(now, obs, notification(&[b'0' + i], i % 2 == 0))
            .unwrap();
        sim.run(Duration::from_secs(1), |_, node, e| match (node, e) {
            (0, Event::Notification { id: nid, response }) => {
                assert_eq!(nid, id);
                got.push((response.observe().unwrap(), response.payload));
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    let seqs: Vec<u32> = got.iter().map(|g| g.0).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(got[4].1, b"4");
    assert_eq!(sim.ep(1).observers(), 1);
    assert_eq!(
        sim.ep(0).outstanding_requests(),
        1,
        "the observation stays open"
    );
}

#[test]
fn reordered_notifications_are_dropped_by_freshness() {
    let mut sim = Sim::new(2, Faults::NONE, &[cfg(), cfg()]);
    let (id, obs) = register(&mut sim);
    // Build two notifications on the server, deliver them to the client in reverse.
    let now = sim.now;
    sim.ep(1)
        .notify(now, obs, notification(b"old", false))
        .unwrap();
    sim.ep(1)
        .notify(now, obs, notification(b"new", false))
        .unwrap();
    let old = sim.ep(1).poll_transmit().unwrap();
    let new = sim.ep(1).poll_transmit().unwrap();
    let server = sim.addr(1);
    sim.ep(0).handle_datagram(now, server, &new.payload);
    sim.ep(0).handle_datagram(now, server, &old.payload);
    let mut got = Vec::new();
    while let Some(e) = sim.ep(0).poll_event() {
        match e {
            Event::Notification { id: nid, response } => {
                assert_eq!(nid, id);
                got.push(response.payload);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, [b"new".to_vec()], "the older notification is stale");
    // After 128 s an older sequence number is accepted again.
    let later = now + Duration::from_secs(130);
    let mut stale = Message::decode(&old.payload).unwrap();
    stale.message_id = stale.message_id.wrapping_add(100);
    sim.ep(0)
        .handle_datagram(later, server, &stale.to_bytes().unwrap());
    assert!(matches!(
        sim.ep(0).poll_event(),
        Some(Event::Notification { .. })
    ));
}

#[test]
fn forgetting_an_observation_resets_the_next_notification() {
    let mut sim = Sim::new(3, Faults::NONE, &[cfg(), cfg()]);
    let (id, obs) = register(&mut sim);
    let now = sim.now;
    assert!(sim.ep(0).forget_request(now, id));
    sim.ep(1)
        .notify(now, obs, notification(b"x", false))
        .unwrap();
    let mut ended = None;
    sim.run(Duration::from_secs(2), |_, node, e| match (node, e) {
        (1, Event::ObservationEnded { id, reason }) => ended = Some((id, reason)),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(ended, Some((obs, ObservationEndReason::Reset)));
    assert_eq!(sim.ep(1).observers(), 0);
}

#[test]
fn cancel_with_observe_1_ends_the_relation_and_is_answered() {
    let mut sim = Sim::new(4, Faults::NONE, &[cfg(), cfg()]);
    let (id, obs) = register(&mut sim);
    let now = sim.now;
    assert!(sim.ep(0).cancel_observation(now, id));
    let mut ended = None;
    let mut last = None;
    sim.run(Duration::from_secs(2), |sim, node, e| match (node, e) {
        (1, Event::ObservationEnded { id, reason }) => ended = Some((id, reason)),
        (1, Event::Request { id, request, .. }) => {
            assert_eq!(request.observe(), Some(1));
            let now = sim.now;
            sim.ep(1)
                .respond(now, id, notification(b"bye", false))
                .unwrap();
        }
        (0, Event::Response { id: rid, response }) => {
            assert_eq!(rid, id);
            last = Some(response.payload);
        }
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(ended, Some((obs, ObservationEndReason::Cancelled)));
    assert_eq!(last, Some(b"bye".to_vec()));
    assert_eq!(sim.ep(0).outstanding_requests(), 0);
    let now = sim.now;
    assert!(
        sim.ep(1)
            .notify(now, obs, notification(b"x", false))
            .is_err()
    );
}

#[test]
fn unacknowledged_con_notification_removes_the_observer() {
    let mut sim = Sim::new(5, Faults::NONE, &[cfg(), cfg()]);
    let (_, obs) = register(&mut sim);
    // The client vanishes: drop everything from now on.
    sim.faults.drop = 1.0;
    let now = sim.now;
    sim.ep(1)
        .notify(now, obs, notification(b"x", true))
        .unwrap();
    let mut ended = None;
    sim.run(Duration::from_secs(120), |_, node, e| match (node, e) {
        (1, Event::ObservationEnded { id, reason }) => ended = Some((id, reason)),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(ended, Some((obs, ObservationEndReason::TimedOut)));
}

#[test]
fn a_con_notification_goes_out_at_least_every_24_hours() {
    let mut sim = Sim::new(6, Faults::NONE, &[cfg(), cfg()]);
    let (_, obs) = register(&mut sim);
    let mut types = Vec::new();
    for hours in [1u64, 12, 25, 26, 50] {
        let at = sim.start + Duration::from_secs(hours * 3600);
        sim.run(at - sim.now, |_, _, _| {});
        let now = sim.now;
        sim.ep(1)
            .notify(now, obs, notification(b"v", false))
            .unwrap();
        let t = sim.ep(1).poll_transmit().unwrap();
        types.push(Message::decode(&t.payload).unwrap().mtype);
        let (client, server) = (sim.addr(0), sim.addr(1));
        sim.ep(0).handle_datagram(now, server, &t.payload);
        while let Some(t) = sim.ep(0).poll_transmit() {
            sim.ep(1).handle_datagram(now, client, &t.payload);
        }
        while sim.ep(0).poll_event().is_some() {}
    }
    use MessageType::{Confirmable as C, NonConfirmable as N};
    assert_eq!(types, [N, N, C, N, C]);
}

#[test]
fn a_newer_con_notification_replaces_the_unacknowledged_one() {
    let mut sim = Sim::new(7, Faults::NONE, &[cfg(), cfg()]);
    let (id, obs) = register(&mut sim);
    let now = sim.now;
    sim.ep(1)
        .notify(now, obs, notification(b"a", true))
        .unwrap();
    let _lost = sim.ep(1).poll_transmit().unwrap();
    sim.ep(1)
        .notify(
            now + Duration::from_millis(500),
            obs,
            notification(b"b", true),
        )
        .unwrap();
    let _lost_too = sim.ep(1).poll_transmit().unwrap();
    // The retransmission (at the first notification's timer) carries "b".
    let mut got = Vec::new();
    sim.run(Duration::from_secs(10), |_, node, e| match (node, e) {
        (0, Event::Notification { id: nid, response }) => {
            assert_eq!(nid, id);
            got.push(response.payload);
        }
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(got, [b"b".to_vec()]);
    let first_retx = sim.sent_log.iter().find(|l| l.1 == sim.addr(1)).unwrap();
    assert!(
        first_retx.0 - now <= Duration::from_secs(3),
        "kept the first timer"
    );
}

#[test]
fn block2_download_of_100_kb_is_reassembled() {
    let mut sim = Sim::new(8, Faults::NONE, &[cfg(), cfg()]);
    let server = sim.addr(1);
    let big = body(100 * 1024);
    let now = sim.now;
    let id = sim
        .ep(0)
        .send_request(now, server, Message::request(Code::GET, "/fw"))
        .unwrap();
    let mut asked = 0;
    let mut got = None;
    sim.run(Duration::from_secs(30), |sim, node, e| match (node, e) {
        (1, Event::Request { id, .. }) => {
            asked += 1;
            let mut r = Message::response(Code::CONTENT);
            r.payload = big.clone();
            let now = sim.now;
            sim.ep(1).respond(now, id, r).unwrap();
        }
        (0, Event::Response { id: rid, response }) => {
            assert_eq!(rid, id);
            got = Some(response);
        }
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(asked, 1, "follow-up blocks are served by the endpoint");
    let got = got.unwrap();
    assert_eq!(got.payload, big);
    assert_eq!(got.block2(), None);
    let blocks_sent = sim.sent_log.iter().filter(|l| l.1 == server).count();
    assert_eq!(blocks_sent, 100);
}

/// `respond_shared`: two downloads of one body are served from one copy (the endpoint's
/// block-wise transfers hold references to it), and both are reassembled whole.
#[test]
fn block2_downloads_of_a_shared_body_hold_it_once() {
    let mut sim = Sim::new(9, Faults::NONE, &[cfg(), cfg(), cfg()]);
    let server = sim.addr(2);
    let shared = std::sync::Arc::new(body(20 * 1024));
    let now = sim.now;
    let ids = [0, 1].map(|node| {
        sim.ep(node)
            .send_request(now, server, Message::request(Code::GET, "/pkg/fw"))
            .unwrap()
    });
    let mut asked = 0;
    let mut got = Vec::new();
    sim.run(Duration::from_secs(30), |sim, node, e| match (node, e) {
        (2, Event::Request { id, .. }) => {
            asked += 1;
            let now = sim.now;
            let head = Message::response(Code::CONTENT);
            sim.ep(2)
                .respond_shared(now, id, head, shared.clone())
                .unwrap();
        }
        (client, Event::Response { id, response }) => {
            assert_eq!(id, ids[client]);
            got.push(response.payload);
        }
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(asked, 2);
    assert_eq!(got, vec![shared.to_vec(), shared.to_vec()]);
    // Ours, and one reference for each transfer the endpoint keeps for follow-ups.
    assert_eq!(std::sync::Arc::strong_count(&shared), 3);
}

#[test]
fn block2_under_loss_completes_or_times_out() {
    let faults = Faults {
        drop: 0.1,
        duplicate: 0.1,
        max_extra_delay: Duration::from_millis(300),
    };
    for seed in 0..6 {
        let mut sim = Sim::new(seed, faults, &[cfg(), cfg()]);
        let server = sim.addr(1);
        let big = body(20 * 1024 + 17);
        let now = sim.now;
        let id = sim
            .ep(0)
            .send_request(now, server, Message::request(Code::GET, "/fw"))
            .unwrap();
        let mut outcome = None;
        sim.run(Duration::from_secs(600), |sim, node, e| match (node, e) {
            (1, Event::Request { id, .. }) => {
                let mut r = Message::response(Code::CONTENT);
                r.payload = big.clone();
                let now = sim.now;
                sim.ep(1).respond(now, id, r).unwrap();
            }
            (0, Event::Response { id: rid, response }) => {
                assert_eq!(rid, id);
                assert!(outcome.is_none());
                outcome = Some(Ok(response.payload));
            }
            (0, Event::RequestFailed { error, .. }) => {
                assert!(outcome.is_none());
                outcome = Some(Err(error));
            }
            other => panic!("unexpected {other:?}"),
        });
        match outcome.expect("an outcome") {
            Ok(p) => assert_eq!(p, big),
            Err(e) => assert_eq!(e, RequestError::TimedOut),
        }
    }
}

#[test]
fn block2_download_larger_than_the_limit_fails() {
    let mut c = cfg();
    c.max_body_size = 4096;
    let mut sim = Sim::new(9, Faults::NONE, &[c, cfg()]);
    let server = sim.addr(1);
    let now = sim.now;
    let id = sim
        .ep(0)
        .send_request(now, server, Message::request(Code::GET, "/big"))
        .unwrap();
    let mut failed = None;
    sim.run(Duration::from_secs(10), |sim, node, e| match (node, e) {
        (1, Event::Request { id, .. }) => {
            let mut r = Message::response(Code::CONTENT);
            r.payload = body(10_000);
            let now = sim.now;
            sim.ep(1).respond(now, id, r).unwrap();
        }
        (0, Event::RequestFailed { id: fid, error }) => failed = Some((fid, error)),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(
        failed,
        Some((id, RequestError::BodyTooLarge { limit: 4096 }))
    );
}

#[test]
fn block1_upload_is_reassembled_and_delivered_once() {
    let faults = Faults {
        drop: 0.1,
        duplicate: 0.2,
        max_extra_delay: Duration::from_millis(200),
    };
    for seed in 0..6 {
        let mut sim = Sim::new(seed, faults, &[cfg(), cfg()]);
        let server = sim.addr(1);
        let payload = body(5000);
        let now = sim.now;
        let mut req = Message::request(Code::PUT, "/5/0/0");
        req.payload = payload.clone();
        let id = sim.ep(0).send_request(now, server, req).unwrap();
        let mut delivered = 0;
        let mut outcome = None;
        sim.run(Duration::from_secs(600), |sim, node, e| match (node, e) {
            (1, Event::Request { id, request, .. }) => {
                delivered += 1;
                assert_eq!(request.payload, payload);
                assert_eq!(request.block1(), None);
                let now = sim.now;
                sim.ep(1)
                    .respond(now, id, Message::response(Code::CHANGED))
                    .unwrap();
            }
            (0, Event::Response { id: rid, response }) => {
                assert_eq!(rid, id);
                outcome = Some(Ok(response));
            }
            (0, Event::RequestFailed { error, .. }) => outcome = Some(Err(error)),
            other => panic!("unexpected {other:?}"),
        });
        assert!(delivered <= 1);
        match outcome.expect("an outcome") {
            Ok(resp) => {
                assert_eq!(delivered, 1);
                assert_eq!(resp.code, Code::CHANGED);
                let b1 = resp.block1().expect("Block1 echoed on the final response");
                assert!(!b1.more);
            }
            Err(e) => assert_eq!(e, RequestError::TimedOut),
        }
    }
}

#[test]
fn block1_server_rules_continue_incomplete_too_large_and_negotiation() {
    let mut c = cfg();
    c.max_body_size = 2048;
    c.block_szx = 4; // server prefers 256-byte blocks
    let mut sim = Sim::new(10, Faults::NONE, &[c]);
    let peer = addr(77);
    let now = sim.now;
    let send =
        |sim: &mut Sim, mid: u16, num: u32, more: bool, szx: u8, len: usize, size1: Option<u32>| {
            let mut m = Message::new(MessageType::Confirmable, Code::PUT, mid);
            m.set_token(&[1]).unwrap();
            m.set_uri_path("/up");
            m.set_block1(BlockOption::new(num, more, szx).unwrap());
            if let Some(s) = size1 {
                m.set_size1(s);
            }
            m.payload = vec![7; len];
            sim.ep(0).handle_datagram(now, peer, &m.to_bytes().unwrap());
            let t = sim.ep(0).poll_transmit();
            t.map_or(Message::response(Code::EMPTY), |t| {
                Message::decode(&t.payload).unwrap()
            })
        };
    // Block 0 of 512 bytes: 2.31, asking for 256-byte blocks.
    let r = send(&mut sim, 1, 0, true, 5, 512, Some(1024));
    assert_eq!(r.code, Code::CONTINUE);
    assert_eq!(r.block1(), BlockOption::new(0, true, 4));
    // Continue at 256-byte blocks: offset 512 = block 2.
    let r = send(&mut sim, 2, 2, true, 4, 256, None);
    assert_eq!(r.code, Code::CONTINUE);
    // Out of sequence (block 5 when 3 is due): 4.08.
    let r = send(&mut sim, 3, 5, true, 4, 256, None);
    assert_eq!(r.code, Code::REQUEST_ENTITY_INCOMPLETE);
    // The last block completes the body (768 + 100 bytes).
    let r = send(&mut sim, 4, 3, false, 4, 100, None);
    assert!(r.code.is_empty(), "nothing yet: the application answers");
    match sim.ep(0).poll_event() {
        Some(Event::Request { id, request, .. }) => {
            assert_eq!(request.payload.len(), 868);
            sim.ep(0)
                .respond(now, id, Message::response(Code::CHANGED))
                .unwrap();
            let r = Message::decode(&sim.ep(0).poll_transmit().unwrap().payload).unwrap();
            assert_eq!(r.code, Code::CHANGED);
            assert_eq!(r.block1(), BlockOption::new(3, false, 4));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Too large announced by Size1: 4.13 with our limit.
    let r = send(&mut sim, 5, 0, true, 4, 256, Some(100_000));
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(r.size1(), Some(2048));
    // Too large discovered while receiving.
    for (i, mid) in (10..19).enumerate() {
        let r = send(&mut sim, mid, i as u32, true, 4, 256, None);
        if i < 8 {
            assert_eq!(r.code, Code::CONTINUE, "block {i}");
        } else {
            assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
        }
    }
    // A block without a start: 4.08.
    let r = send(&mut sim, 30, 3, true, 4, 256, None);
    assert_eq!(r.code, Code::REQUEST_ENTITY_INCOMPLETE);
}

#[test]
fn block1_client_follows_server_block_size() {
    let mut small = cfg();
    small.block_szx = 2; // 64-byte blocks preferred by the server
    let mut sim = Sim::new(11, Faults::NONE, &[cfg(), small]);
    let server = sim.addr(1);
    let payload = body(3000);
    let now = sim.now;
    let mut req = Message::request(Code::POST, "/fw");
    req.payload = payload.clone();
    sim.ep(0).send_request(now, server, req).unwrap();
    let mut got = None;
    sim.run(Duration::from_secs(60), |sim, node, e| match (node, e) {
        (1, Event::Request { id, request, .. }) => {
            got = Some(request.payload);
            let now = sim.now;
            sim.ep(1)
                .respond(now, id, Message::response(Code::CHANGED))
                .unwrap();
        }
        (0, Event::Response { response, .. }) => assert_eq!(response.code, Code::CHANGED),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(got, Some(payload));
    // First block 1024 bytes, then 64-byte blocks: 1 + (3000 - 1024) / 64 rounded up.
    let requests = sim.sent_log.iter().filter(|l| l.1 == sim.addr(0)).count();
    assert_eq!(requests, 1 + (3000 - 1024usize).div_ceil(64));
}

#[test]
fn large_notification_is_sent_block_wise_and_reassembled() {
    let mut sim = Sim::new(12, Faults::NONE, &[cfg(), cfg()]);
    let (id, obs) = register(&mut sim);
    let big = body(3000);
    let now = sim.now;
    sim.ep(1)
        .notify(now, obs, notification(&big, false))
        .unwrap();
    let mut got = None;
    sim.run(Duration::from_secs(10), |_, node, e| match (node, e) {
        (0, Event::Notification { id: nid, response }) => {
            assert_eq!(nid, id);
            got = Some(response);
        }
        other => panic!("unexpected {other:?}"),
    });
    let got = got.expect("notification");
    assert_eq!(got.payload, big);
    assert_eq!(got.observe(), Some(1));
}

#[test]
fn observation_outlives_the_response_timeout_after_a_block_wise_notification() {
    let mut sim = Sim::new(13, Faults::NONE, &[cfg(), cfg()]);
    let (id, obs) = register(&mut sim);
    let now = sim.now;
    sim.ep(1)
        .notify(now, obs, notification(&body(3000), false))
        .unwrap();
    let mut got = 0;
    sim.run(Duration::from_secs(200), |_, node, e| match (node, e) {
        (0, Event::Notification { id: nid, .. }) => {
            assert_eq!(nid, id);
            got += 1;
        }
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(got, 1);
    let now = sim.now;
    sim.ep(1)
        .notify(now, obs, notification(b"still here", false))
        .unwrap();
    let mut last = None;
    sim.run(Duration::from_secs(1), |_, node, e| match (node, e) {
        (0, Event::Notification { response, .. }) => last = Some(response.payload),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(last, Some(b"still here".to_vec()));
}

/// Issue #16 finding 3: unfinished Block1 uploads are bounded in bytes (per peer and in
/// total) and a path's own limit applies while blocks arrive, not after reassembly.
#[test]
fn block1_byte_bounds_hold_while_reassembling() {
    let mut c = cfg();
    c.max_body_size = 1 << 20;
    c.max_block_transfers = 10_000;
    c.max_block1_bytes_per_peer = 4096;
    c.max_block1_bytes = 16 * 1024;
    c.block1_path_limits = vec![(vec!["rd".to_owned()], 2048)];
    let mut sim = Sim::new(11, Faults::NONE, &[c]);
    let now = sim.now;
    let mut mid = 0u16;
    let mut send = |sim: &mut Sim, peer, path: &str, tok: u8, num: u32| {
        mid += 1;
        let mut m = Message::new(MessageType::Confirmable, Code::POST, mid);
        m.set_token(&[tok]).unwrap();
        m.set_uri_path(path);
        m.set_block1(BlockOption::new(num, true, 6).unwrap());
        m.payload = vec![7; 1024];
        sim.ep(0).handle_datagram(now, peer, &m.to_bytes().unwrap());
        Message::decode(&sim.ep(0).poll_transmit().unwrap().payload).unwrap()
    };
    // A registration path: its third KiB passes the path's 2 KiB limit mid-transfer.
    let a = addr(1);
    assert_eq!(send(&mut sim, a, "/rd", 1, 0).code, Code::CONTINUE);
    assert_eq!(send(&mut sim, a, "/rd", 1, 1).code, Code::CONTINUE);
    let r = send(&mut sim, a, "/rd", 1, 2);
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(r.size1(), Some(2048));
    assert_eq!(
        sim.ep(0).block_transfers(),
        0,
        "the refused transfer is dropped"
    );
    // One peer, many transfers to other paths: 4 KiB held at most.
    let mut refused = 0;
    for i in 0..20u8 {
        let r = send(&mut sim, a, &format!("/up/{i}"), 10 + i, 0);
        if r.code == Code::REQUEST_ENTITY_TOO_LARGE {
            assert_eq!(r.size1(), Some(4096));
            refused += 1;
        } else {
            assert_eq!(r.code, Code::CONTINUE);
        }
    }
    assert_eq!(refused, 16, "four 1 KiB blocks fit the peer's 4 KiB");
    // Many peers: 16 KiB held in total, the rest gets 5.03.
    let mut busy = 0;
    for p in 2..40u16 {
        let r = send(&mut sim, addr(p), "/up", 1, 0);
        if r.code == Code::SERVICE_UNAVAILABLE {
            assert_eq!(r.max_age(), Some(1));
            busy += 1;
        }
    }
    assert_eq!(
        busy,
        38 - 12,
        "4 KiB from the first peer and 12 more fit 16 KiB"
    );
}
