//! Arbitrary datagrams (well-formed messages of every type and code, mutated bytes) from a
//! few peers, interleaved with application calls and timeouts: an endpoint never panics,
//! its state stays within the configured bounds, and it forgets everything in the end.

#![cfg(feature = "lwm2m")]

use proptest::prelude::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{
    BlockOption, Code, Endpoint, EndpointConfig, Event, Message, MessageType, OptionNumber,
};

/// Type, code, message id, token length, options, payload.
type MessageParts = (u8, u8, u16, u8, Vec<(u16, Vec<u8>)>, Vec<u8>);

#[derive(Clone, Debug)]
enum Step {
    Datagram {
        peer: u8,
        msg: MessageParts,
        flip: Option<(usize, u8)>,
    },
    Raw {
        peer: u8,
        bytes: Vec<u8>,
    },
    Advance(u16),
    Respond {
        big: bool,
    },
    Send {
        peer: u8,
        observe: bool,
        body: u16,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let opt = (
        prop_oneof![
            Just(6u16),
            Just(11),
            Just(12),
            Just(23),
            Just(27),
            Just(28),
            Just(60),
            0u16..300
        ],
        prop::collection::vec(any::<u8>(), 0..5),
    );
    prop_oneof![
        4 => (
            0u8..4,
            (0u8..4, prop_oneof![Just(1u8), Just(2), Just(3), Just(0x45), Just(0x5f), Just(0x84), Just(0), any::<u8>()], 0u16..8, 0u8..4,
             prop::collection::vec(opt, 0..5), prop::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of((0usize..64, any::<u8>())),
        ).prop_map(|(peer, msg, flip)| Step::Datagram { peer, msg, flip }),
        1 => (0u8..4, prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(peer, bytes)| Step::Raw { peer, bytes }),
        2 => (0u16..5000).prop_map(Step::Advance),
        2 => any::<bool>().prop_map(|big| Step::Respond { big }),
        1 => (0u8..4, any::<bool>(), 0u16..3000).prop_map(|(peer, observe, body)| Step::Send { peer, observe, body }),
    ]
}

fn peer(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6000 + u16::from(i)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn endpoint_survives_arbitrary_input(steps in prop::collection::vec(step(), 1..80)) {
        let cfg = EndpointConfig {
            max_peers: 3,
            max_dedup_entries: 20,
            max_dedup_entries_per_peer: 8,
            max_pending_requests: 5,
            max_pending_requests_per_peer: 3,
            max_outstanding_requests: 6,
            max_block_transfers: 3,
            max_body_size: 4096,
            max_observers: 2,
            ..EndpointConfig::default()
        };
        let mut ep = Endpoint::new_seeded(cfg, 7);
        let start = Instant::now();
        let mut now = start;
        let mut pending = Vec::new();
        for s in steps {
            match s {
                Step::Datagram { peer: p, msg: (t, code, mid, tkl, opts, payload), flip } => {
                    let mut m = Message::new(MessageType::from_bits(t), Code(code), mid);
                    m.set_token(&vec![tkl; tkl as usize]).unwrap();
                    for (n, v) in opts {
                        m.add_option(OptionNumber(n), &v);
                    }
                    if m.block1().is_none() && code == 3 && !payload.is_empty() {
                        m.set_block1(BlockOption::new(u32::from(mid % 3), mid % 2 == 0, 0).unwrap());
                    }
                    m.payload = payload;
                    let Ok(mut bytes) = m.to_bytes() else { continue };
                    if let Some((i, b)) = flip
                        && i < bytes.len() { bytes[i] ^= b; }
                    ep.handle_datagram(now, peer(p), &bytes);
                }
                Step::Raw { peer: p, bytes } => ep.handle_datagram(now, peer(p), &bytes),
                Step::Advance(ms) => {
                    now += Duration::from_millis(u64::from(ms) * 20);
                    ep.handle_timeout(now);
                }
                Step::Respond { big } => {
                    if let Some(id) = pending.pop() {
                        let mut r = Message::response(Code::CONTENT);
                        r.payload = vec![1; if big { 3000 } else { 3 }];
                        let _ = ep.respond_and_observe(now, id, r);
                    }
                }
                Step::Send { peer: p, observe, body } => {
                    let mut r = Message::request(Code::POST, "/x");
                    if observe { r.set_observe(0); }
                    r.payload = vec![2; body as usize];
                    let _ = ep.send_request(now, peer(p), r);
                }
            }
            while ep.poll_transmit().is_some() {}
            while let Some(e) = ep.poll_event() {
                if let Event::Request { id, .. } = e { pending.push(id); }
            }
            prop_assert!(ep.peers() <= 3);
            prop_assert!(ep.dedup_entries() <= 20);
            prop_assert!(ep.pending_requests() <= 5);
            prop_assert!(ep.outstanding_requests() <= 6);
            prop_assert!(ep.block_transfers() <= 3);
            prop_assert!(ep.observers() <= 2);
            if let Some(t) = ep.poll_timeout() {
                prop_assert!(t >= start);
            }
        }
        // Everything times out or expires within a day of simulated time, save observers.
        for _ in 0..200 {
            match ep.poll_timeout() {
                Some(t) => { now = now.max(t); ep.handle_timeout(now); }
                None => break,
            }
            while ep.poll_transmit().is_some() {}
            while ep.poll_event().is_some() {}
        }
        prop_assert_eq!(ep.dedup_entries(), 0);
        prop_assert_eq!(ep.pending_requests(), 0);
        prop_assert_eq!(ep.block_transfers(), 0);
        prop_assert_eq!(ep.outstanding_requests(), 0);
    }
}
