//! The message layer under a simulated clock: piggybacked and separate responses,
//! retransmission timing, duplicate detection, RST rules, bounds, and a seeded lossy
//! network (drop, duplicate, reorder) where every CON exchange completes or times out and
//! nothing reaches the application twice.

#![cfg(feature = "lwm2m")]

mod coap_sim;

use coap_sim::{Faults, Sim, addr};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use twinhub::coap::{Code, EndpointConfig, Event, Message, MessageType, RequestError, RequestId};

fn cfg() -> EndpointConfig {
    EndpointConfig::default()
}

fn ok_response(req: &Message) -> Message {
    let mut r = Message::response(Code::CONTENT);
    r.payload = [b"ok:".as_slice(), &req.payload].concat();
    r
}

#[test]
fn piggybacked_response_in_one_round_trip() {
    let mut sim = Sim::new(1, Faults::NONE, &[cfg(), cfg()]);
    let server = sim.addr(1);
    let now = sim.now;
    let mut req = Message::request(Code::PUT, "/3/0/14");
    req.payload = b"+02".to_vec();
    let id = sim.ep(0).send_request(now, server, req).unwrap();
    let mut got = None;
    sim.run(Duration::from_secs(5), |sim, node, e| match (node, e) {
        (1, Event::Request { id, request, .. }) => {
            let now = sim.now;
            sim.ep(1).respond(now, id, ok_response(&request)).unwrap();
        }
        (0, Event::Response { id: rid, response }) => {
            assert_eq!(rid, id);
            got = Some(response);
        }
        other => panic!("unexpected {other:?}"),
    });
    let resp = got.expect("response");
    assert_eq!(resp.payload, b"ok:+02");
    assert_eq!(resp.mtype, MessageType::Acknowledgement);
    // Exactly two datagrams: the CON request and the ACK carrying the response.
    assert_eq!(sim.sent_log.len(), 2);
    assert_eq!(sim.ep(0).outstanding_requests(), 0);
    assert_eq!(sim.ep(1).pending_requests(), 0);
}

#[test]
fn slow_application_gets_empty_ack_then_separate_con_response() {
    let mut sim = Sim::new(2, Faults::NONE, &[cfg(), cfg()]);
    let server = sim.addr(1);
    let now = sim.now;
    let id = sim
        .ep(0)
        .send_request(now, server, Message::request(Code::GET, "/slow"))
        .unwrap();
    let mut pending = None;
    sim.run(Duration::from_secs(3), |_, node, e| match (node, e) {
        (1, Event::Request { id, .. }) => pending = Some(id),
        other => panic!("unexpected {other:?}"),
    });
    // The piggyback window (1 s) closed: an empty ACK went out; the client did not resend.
    let acks: Vec<_> = sim
        .sent_log
        .iter()
        .filter(|(_, from, _, b)| *from == server && b.len() == 4 && b[0] >> 4 == 0x6)
        .collect();
    assert_eq!(acks.len(), 1);
    assert_eq!(
        sim.sent_log.len(),
        2,
        "no retransmission after the empty ACK"
    );
    let now = sim.now;
    let mut r = Message::response(Code::CONTENT);
    r.payload = b"late".to_vec();
    sim.ep(1).respond(now, pending.unwrap(), r).unwrap();
    let mut got = Vec::new();
    sim.run(Duration::from_secs(5), |_, node, e| match (node, e) {
        (0, Event::Response { id: rid, response }) => {
            assert_eq!(rid, id);
            got.push(response);
        }
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mtype, MessageType::Confirmable);
    assert_eq!(got[0].payload, b"late");
    // The client acknowledged the separate response, so the server stops retransmitting.
    sim.run(Duration::from_secs(100), |_, _, e| {
        panic!("unexpected {e:?}")
    });
    let from_server = sim.sent_log.iter().filter(|l| l.1 == server).count();
    assert_eq!(from_server, 2, "empty ACK + one CON response");
}

#[test]
fn retransmission_follows_rfc_timing_then_times_out() {
    // The server does not exist: every datagram is lost.
    let mut sim = Sim::new(3, Faults::NONE, &[cfg()]);
    let nowhere = addr(9);
    let start = sim.now;
    let id = sim
        .ep(0)
        .send_request(start, nowhere, Message::request(Code::GET, "/x"))
        .unwrap();
    let mut failed = None;
    sim.run(Duration::from_secs(200), |sim, _, e| match e {
        Event::RequestFailed { id: fid, error } => {
            assert_eq!(fid, id);
            failed = Some((sim.elapsed(), error));
        }
        other => panic!("unexpected {other:?}"),
    });
    let times: Vec<Duration> = sim.sent_log.iter().map(|l| l.0 - start).collect();
    assert_eq!(times.len(), 5, "1 transmission + MAX_RETRANSMIT 4");
    let first = times[1];
    assert!(
        first >= Duration::from_secs(2) && first <= Duration::from_secs(3),
        "{first:?}"
    );
    for k in 1..4 {
        let gap = times[k + 1] - times[k];
        let expect = first * (1 << k);
        assert!(
            gap.abs_diff(expect) < Duration::from_millis(1),
            "{gap:?} vs {expect:?}"
        );
    }
    let (at, error) = failed.expect("timed out");
    assert_eq!(error, RequestError::TimedOut);
    // Gives up after the last timeout: 31 × the initial timeout, 62..93 s.
    assert!(at.abs_diff(first * 31) < Duration::from_millis(1), "{at:?}");
    assert_eq!(sim.ep(0).outstanding_requests(), 0);
    assert_eq!(sim.ep(0).poll_timeout(), None);
}

#[test]
fn duplicate_con_request_replays_cached_response_once_delivered() {
    let mut sim = Sim::new(4, Faults::NONE, &[cfg(), cfg()]);
    let (client, server) = (sim.addr(0), sim.addr(1));
    let now = sim.now;
    let mut req = Message::new(MessageType::Confirmable, Code::POST, 0x1111);
    req.set_token(&[1, 2, 3]).unwrap();
    req.set_uri_path("/a");
    let bytes = req.to_bytes().unwrap();
    sim.ep(1).handle_datagram(now, client, &bytes);
    let Some(Event::Request { id, .. }) = sim.ep(1).poll_event() else {
        panic!("no request")
    };
    sim.ep(1)
        .respond(now, id, Message::response(Code::CHANGED))
        .unwrap();
    let first = sim.ep(1).poll_transmit().unwrap();
    sim.ep(1)
        .handle_datagram(now + Duration::from_secs(3), client, &bytes);
    assert_eq!(sim.ep(1).poll_event(), None, "a duplicate is not delivered");
    let again = sim.ep(1).poll_transmit().unwrap();
    assert_eq!(again.payload, first.payload);
    let ack = Message::decode(&again.payload).unwrap();
    assert_eq!(
        (ack.mtype, ack.code, ack.message_id),
        (MessageType::Acknowledgement, Code::CHANGED, 0x1111)
    );
    // Same message id, different token: a new exchange (peer wrapped its ids).
    req.set_token(&[9]).unwrap();
    sim.ep(1).handle_datagram(
        now + Duration::from_secs(4),
        client,
        &req.to_bytes().unwrap(),
    );
    assert!(matches!(
        sim.ep(1).poll_event(),
        Some(Event::Request { .. })
    ));
    // After EXCHANGE_LIFETIME the first exchange is forgotten and would be new again.
    let later = now + Duration::from_secs(300);
    sim.ep(1).handle_timeout(later);
    let _ = server;
}

#[test]
fn ping_unknown_response_and_bad_critical_option() {
    let mut sim = Sim::new(5, Faults::NONE, &[cfg()]);
    let peer = addr(7);
    let now = sim.now;
    // Empty CON = ping -> RST with the same message id.
    sim.ep(0)
        .handle_datagram(now, peer, &[0x40, 0x00, 0xab, 0xcd]);
    let t = sim.ep(0).poll_transmit().unwrap();
    assert_eq!(t.payload, [0x70, 0x00, 0xab, 0xcd]);
    // A CON response nobody asked for -> RST.
    let mut resp = Message::new(MessageType::Confirmable, Code::CONTENT, 7);
    resp.set_token(&[5; 4]).unwrap();
    sim.ep(0)
        .handle_datagram(now, peer, &resp.to_bytes().unwrap());
    let t = sim.ep(0).poll_transmit().unwrap();
    assert_eq!(t.payload, [0x70, 0x00, 0x00, 0x07]);
    // An unknown ACK is ignored.
    sim.ep(0)
        .handle_datagram(now, peer, &[0x60, 0x00, 0x00, 0x09]);
    assert_eq!(sim.ep(0).poll_transmit(), None);
    // A CON with a format error -> RST; a NON with one is ignored.
    sim.ep(0)
        .handle_datagram(now, peer, &[0x40, 0x01, 0x00, 0x0a, 0xf1]);
    assert_eq!(
        sim.ep(0).poll_transmit().unwrap().payload,
        [0x70, 0, 0, 0x0a]
    );
    sim.ep(0)
        .handle_datagram(now, peer, &[0x50, 0x01, 0x00, 0x0b, 0xf1]);
    assert_eq!(sim.ep(0).poll_transmit(), None);
    // An unknown critical option -> 4.02 piggybacked; the application never sees it.
    let mut req = Message::new(MessageType::Confirmable, Code::GET, 12);
    req.add_option(twinhub::coap::OptionNumber(2049), b"?");
    sim.ep(0)
        .handle_datagram(now, peer, &req.to_bytes().unwrap());
    let r = Message::decode(&sim.ep(0).poll_transmit().unwrap().payload).unwrap();
    assert_eq!(
        (r.mtype, r.code, r.message_id),
        (MessageType::Acknowledgement, Code::BAD_OPTION, 12)
    );
    assert_eq!(sim.ep(0).poll_event(), None);
}

#[test]
fn nstart_queues_requests_to_one_peer() {
    let mut sim = Sim::new(6, Faults::NONE, &[cfg(), cfg()]);
    let server = sim.addr(1);
    let now = sim.now;
    let ids: Vec<RequestId> = (0..5)
        .map(|i| {
            let mut r = Message::request(Code::GET, "/n");
            r.payload = vec![i];
            sim.ep(0).send_request(now, server, r).unwrap()
        })
        .collect();
    // `would_send_now` says a further request would wait; another peer is free.
    assert!(!sim.ep(0).would_send_now(server));
    let other = sim.addr(0);
    assert!(sim.ep(0).would_send_now(other));
    sim.flush();
    assert_eq!(sim.sent_log.len(), 1, "NSTART = 1: one CON in flight");
    let mut done = Vec::new();
    sim.run(Duration::from_secs(5), |sim, node, e| match (node, e) {
        (1, Event::Request { id, request, .. }) => {
            let now = sim.now;
            sim.ep(1).respond(now, id, ok_response(&request)).unwrap();
        }
        (0, Event::Response { id, .. }) => done.push(id),
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(done, ids, "queued requests go out in order");
    assert!(
        sim.ep(0).would_send_now(server),
        "all answered: the peer is free"
    );
}

#[test]
fn pending_request_bound_answers_5_03() {
    let mut c = cfg();
    c.max_pending_requests = 3;
    let mut sim = Sim::new(7, Faults::NONE, &[c]);
    let now = sim.now;
    let mut codes = Vec::new();
    for i in 0..5u16 {
        let mut req = Message::new(MessageType::Confirmable, Code::GET, i);
        req.set_token(&i.to_be_bytes()).unwrap();
        sim.ep(0)
            .handle_datagram(now, addr(100 + i), &req.to_bytes().unwrap());
        if let Some(t) = sim.ep(0).poll_transmit() {
            codes.push(Message::decode(&t.payload).unwrap().code);
        }
    }
    assert_eq!(
        codes,
        [Code::SERVICE_UNAVAILABLE, Code::SERVICE_UNAVAILABLE]
    );
    assert_eq!(sim.ep(0).pending_requests(), 3);
}

#[test]
fn flood_from_many_peers_stays_bounded() {
    let mut c = cfg();
    c.max_peers = 100;
    c.max_dedup_entries = 500;
    c.max_dedup_entries_per_peer = 8;
    c.max_pending_requests = 50;
    let mut sim = Sim::new(8, Faults::NONE, &[c]);
    let now = sim.now;
    for i in 0..20_000u32 {
        let mut req = Message::new(MessageType::NonConfirmable, Code::POST, i as u16);
        req.set_token(&i.to_be_bytes()).unwrap();
        req.payload = vec![0; 100];
        let peer = addr(1000 + (i % 300) as u16);
        sim.ep(0)
            .handle_datagram(now, peer, &req.to_bytes().unwrap());
        while sim.ep(0).poll_transmit().is_some() {}
        while sim.ep(0).poll_event().is_some() {}
        assert!(sim.ep(0).peers() <= 100);
        assert!(sim.ep(0).dedup_entries() <= 500);
        assert!(sim.ep(0).pending_requests() <= 50);
    }
    // Everything is forgotten once the lifetimes pass.
    sim.ep(0).handle_timeout(now + Duration::from_secs(400));
    assert_eq!(sim.ep(0).dedup_entries(), 0);
    assert_eq!(sim.ep(0).pending_requests(), 0);
    assert_eq!(sim.ep(0).peers(), 0);
}

/// Issue #16 finding 3: answered CON requests from one peer, far more than every bound,
/// at one instant (the worst rate). The per-peer deduplication bound evicts entries long
/// before they expire and every request is answered at once, so without the queue sweep
/// the timer queues would hold one entry per message for their whole lifetime.
#[test]
fn answered_flood_from_one_peer_keeps_timer_queues_bounded() {
    let mut c = cfg();
    c.max_dedup_entries_per_peer = 16;
    let per_peer = c.max_dedup_entries_per_peer;
    let mut sim = Sim::new(9, Faults::NONE, &[c]);
    let now = sim.now;
    let peer = addr(4000);
    let mut worst = 0;
    for i in 0..50_000u32 {
        let mut req = Message::new(MessageType::Confirmable, Code::GET, i as u16);
        req.set_token(&i.to_be_bytes()).unwrap();
        sim.ep(0)
            .handle_datagram(now, peer, &req.to_bytes().unwrap());
        while let Some(ev) = sim.ep(0).poll_event() {
            if let Event::Request { id, .. } = ev {
                sim.ep(0)
                    .respond(now, id, Message::response(Code::CONTENT))
                    .unwrap();
            }
        }
        while sim.ep(0).poll_transmit().is_some() {}
        assert!(sim.ep(0).dedup_entries() <= per_peer);
        worst = worst.max(sim.ep(0).timer_queue_entries());
    }
    // Seven queues, each under twice its live state plus 64 (live: 16 dedup entries, no
    // pending request, no transfer).
    assert!(
        worst <= 7 * 64 + 2 * per_peer + 7,
        "timer queues held {worst} entries"
    );
    assert_eq!(sim.ep(0).pending_requests(), 0);
}

/// Runs `n` CON requests through a lossy network; checks the RFC outcome rules.
fn lossy_run(seed: u64, faults: Faults, n: usize, slow_every: usize) {
    let mut c = cfg();
    c.nstart = 4;
    let mut sim = Sim::new(seed, faults, &[c.clone(), c]);
    let server = sim.addr(1);
    let start = sim.now;
    let mut sent_at: HashMap<RequestId, (u32, std::time::Instant)> = HashMap::new();
    for i in 0..n as u32 {
        let mut r = Message::request(Code::POST, "/echo");
        r.payload = i.to_be_bytes().to_vec();
        let id = sim.ep(0).send_request(start, server, r).unwrap();
        sent_at.insert(id, (i, start));
    }
    let mut seen_by_server: HashSet<u32> = HashSet::new();
    let mut failed_at = Vec::new();
    let mut outcome: HashMap<RequestId, Result<u32, RequestError>> = HashMap::new();
    let mut slow: Vec<(
        std::time::Instant,
        twinhub::coap::IncomingRequestId,
        Message,
    )> = Vec::new();
    let limit = Duration::from_secs(600);
    let end = start + limit;
    while let Some(events) = sim.step(end) {
        for (node, e) in events {
            match (node, e) {
                (1, Event::Request { id, request, .. }) => {
                    let k = u32::from_be_bytes(request.payload[..4].try_into().unwrap());
                    assert!(seen_by_server.insert(k), "request {k} delivered twice");
                    if slow_every > 0 && (k as usize).is_multiple_of(slow_every) {
                        slow.push((
                            sim.now + Duration::from_millis(1500),
                            id,
                            ok_response(&request),
                        ));
                    } else {
                        let now = sim.now;
                        sim.ep(1).respond(now, id, ok_response(&request)).unwrap();
                    }
                }
                (0, Event::Response { id, response }) => {
                    let k = u32::from_be_bytes(response.payload[3..7].try_into().unwrap());
                    assert_eq!(sent_at[&id].0, k, "response matched to the wrong request");
                    assert!(
                        outcome.insert(id, Ok(k)).is_none(),
                        "two outcomes for {id:?}"
                    );
                }
                (0, Event::RequestFailed { id, error }) => {
                    assert!(
                        outcome.insert(id, Err(error)).is_none(),
                        "two outcomes for {id:?}"
                    );
                    failed_at.push((sent_at[&id].0, sim.now));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Answer slow requests when their time comes (separate responses).
        let now = sim.now;
        let due: Vec<_> = slow.iter().filter(|s| s.0 <= now).cloned().collect();
        slow.retain(|s| s.0 > now);
        for (_, id, resp) in due {
            // The request may have expired meanwhile; that is fine.
            let _ = sim.ep(1).respond(now, id, resp);
        }
    }
    assert_eq!(outcome.len(), n, "every request ends exactly once");
    // RFC timing: once transmitted, a CON request gives up after MAX_RETRANSMIT
    // retransmissions (at most MAX_TRANSMIT_WAIT, 93 s) or at the 93 s response timeout,
    // never later and never before the back-off (2+4+8+16+32 s at least) ran out; one
    // still queued behind NSTART gives up 93 s after send_request.
    let client = sim.addr(0);
    for (k, at) in failed_at {
        let first_tx = sim
            .sent_log
            .iter()
            .filter(|l| l.1 == client)
            .filter_map(|l| Message::decode(&l.3).ok().map(|m| (l.0, m)))
            .find(|(_, m)| m.code == Code::POST && m.payload == k.to_be_bytes())
            .map(|(t, _)| t);
        let waited = at - first_tx.unwrap_or(start);
        assert!(
            waited <= Duration::from_secs(93),
            "request {k} failed after {waited:?}"
        );
        assert!(
            waited >= Duration::from_secs(62),
            "request {k} failed after {waited:?}"
        );
    }
    for (id, o) in &outcome {
        if let Err(e) = o {
            assert!(
                matches!(e, RequestError::TimedOut),
                "request {id:?} failed with {e}"
            );
        }
    }
    let ok = outcome.values().filter(|o| o.is_ok()).count();
    assert!(
        ok * 10 >= n * 7,
        "too few completed: {ok}/{n} (seed {seed})"
    );
    assert_eq!(sim.ep(0).outstanding_requests(), 0);
}

#[test]
fn lossy_network_every_exchange_completes_or_times_out_once() {
    let faults = Faults {
        drop: 0.2,
        duplicate: 0.15,
        max_extra_delay: Duration::from_millis(800),
    };
    for seed in 0..12 {
        lossy_run(seed, faults, 60, 0);
    }
}

#[test]
fn lossy_network_with_separate_responses() {
    let faults = Faults {
        drop: 0.15,
        duplicate: 0.2,
        max_extra_delay: Duration::from_millis(1500),
    };
    for seed in 100..108 {
        lossy_run(seed, faults, 40, 3);
    }
}

#[test]
fn total_loss_times_out_every_request() {
    let faults = Faults {
        drop: 1.0,
        duplicate: 0.0,
        max_extra_delay: Duration::ZERO,
    };
    let mut c = cfg();
    c.nstart = 3;
    let mut sim = Sim::new(9, faults, &[c.clone(), c]);
    let server = sim.addr(1);
    let now = sim.now;
    for _ in 0..3 {
        sim.ep(0)
            .send_request(now, server, Message::request(Code::GET, "/x"))
            .unwrap();
    }
    let mut failed = 0;
    sim.run(Duration::from_secs(400), |_, _, e| match e {
        Event::RequestFailed {
            error: RequestError::TimedOut,
            ..
        } => failed += 1,
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(failed, 3);
    assert_eq!(sim.sent_log.len(), 15, "3 requests × 5 transmissions");
}

#[test]
fn separate_response_with_unrecognized_critical_option_is_reset() {
    let mut sim = Sim::new(10, Faults::NONE, &[cfg()]);
    let server = addr(9);
    let now = sim.now;
    let id = sim
        .ep(0)
        .send_request(now, server, Message::request(Code::GET, "/x"))
        .unwrap();
    let req = Message::decode(&sim.ep(0).poll_transmit().unwrap().payload).unwrap();
    // Empty ACK first, then a separate CON response carrying an unknown critical option.
    sim.ep(0).handle_datagram(
        now,
        server,
        &Message::empty(MessageType::Acknowledgement, req.message_id)
            .to_bytes()
            .unwrap(),
    );
    let mut resp = Message::new(MessageType::Confirmable, Code::CONTENT, 500);
    resp.with_token(req.token());
    resp.add_option(twinhub::coap::OptionNumber(2049), b"?");
    sim.ep(0)
        .handle_datagram(now, server, &resp.to_bytes().unwrap());
    assert_eq!(
        sim.ep(0).poll_transmit().unwrap().payload,
        [0x70, 0, 0x01, 0xf4]
    );
    assert_eq!(sim.ep(0).poll_event(), None);
    // The request is still waiting; a good separate response completes it.
    resp.remove_option(twinhub::coap::OptionNumber(2049));
    resp.message_id = 501;
    sim.ep(0)
        .handle_datagram(now, server, &resp.to_bytes().unwrap());
    assert!(matches!(sim.ep(0).poll_event(), Some(Event::Response { id: rid, .. }) if rid == id));
}

#[test]
fn global_dedup_eviction_of_the_senders_own_entries_keeps_accounting() {
    let mut c = cfg();
    c.max_dedup_entries = 1;
    let mut sim = Sim::new(11, Faults::NONE, &[c]);
    let peer = addr(8);
    let now = sim.now;
    for mid in 0..5u16 {
        // Unknown CON responses: each is remembered (with its RST) and evicts the last.
        let mut resp = Message::new(MessageType::Confirmable, Code::CONTENT, mid);
        resp.set_token(&[mid as u8; 2]).unwrap();
        sim.ep(0)
            .handle_datagram(now, peer, &resp.to_bytes().unwrap());
        assert_eq!(sim.ep(0).poll_transmit().unwrap().payload[0], 0x70);
        assert_eq!(sim.ep(0).dedup_entries(), 1);
        assert_eq!(sim.ep(0).peers(), 1);
    }
    sim.ep(0).handle_timeout(now + Duration::from_secs(300));
    assert_eq!((sim.ep(0).dedup_entries(), sim.ep(0).peers()), (0, 0));
}

#[test]
fn non_request_gets_non_response_and_duplicates_are_replayed() {
    let mut sim = Sim::new(12, Faults::NONE, &[cfg(), cfg()]);
    let server = sim.addr(1);
    let now = sim.now;
    let mut req = Message::request(Code::GET, "/n");
    req.mtype = MessageType::NonConfirmable;
    let id = sim.ep(0).send_request(now, server, req).unwrap();
    let wire = sim.ep(0).poll_transmit().unwrap();
    let sent = Message::decode(&wire.payload).unwrap();
    assert_eq!(sent.mtype, MessageType::NonConfirmable);
    let client = sim.addr(0);
    sim.ep(1).handle_datagram(now, client, &wire.payload);
    let Some(Event::Request { id: inc, .. }) = sim.ep(1).poll_event() else {
        panic!("no request")
    };
    sim.ep(1)
        .respond(now, inc, Message::response(Code::CONTENT))
        .unwrap();
    let resp = sim.ep(1).poll_transmit().unwrap();
    let m = Message::decode(&resp.payload).unwrap();
    assert_eq!(m.mtype, MessageType::NonConfirmable);
    assert_eq!(m.token(), sent.token());
    assert_ne!(m.message_id, sent.message_id);
    // A duplicate of the NON request gets the same NON response, not a second event.
    sim.ep(1).handle_datagram(now, client, &wire.payload);
    assert_eq!(sim.ep(1).poll_event(), None);
    assert_eq!(sim.ep(1).poll_transmit().unwrap().payload, resp.payload);
    // The client takes the response once; the duplicate is filtered.
    sim.ep(0).handle_datagram(now, server, &resp.payload);
    sim.ep(0).handle_datagram(now, server, &resp.payload);
    assert!(matches!(sim.ep(0).poll_event(), Some(Event::Response { id: rid, .. }) if rid == id));
    assert_eq!(sim.ep(0).poll_event(), None);
    assert_eq!(sim.ep(0).outstanding_requests(), 0);
}
