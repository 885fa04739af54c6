//! A simulated clock and a seeded lossy network between sans-IO CoAP endpoints.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{Endpoint, EndpointConfig, Event};

/// splitmix64: a seeded generator for network faults.
pub struct SimRng(pub u64);

impl SimRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Network faults.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    /// Each datagram is delayed by 1 ms plus up to this much (so datagrams reorder).
    pub max_extra_delay: Duration,
}

impl Faults {
    pub const NONE: Faults = Faults {
        drop: 0.0,
        duplicate: 0.0,
        max_extra_delay: Duration::ZERO,
    };
}

pub struct Datagram {
    pub at: Instant,
    pub seq: u64,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<(SocketAddr, Endpoint)>,
    pub wire: Vec<Datagram>,
    pub rng: SimRng,
    pub faults: Faults,
    seq: u64,
    /// Every datagram an endpoint emitted: (time, from, to, bytes).
    pub sent_log: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Sim {
    pub fn new(seed: u64, faults: Faults, configs: &[EndpointConfig]) -> Sim {
        let start = Instant::now();
        let nodes = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    addr(5000 + i as u16),
                    Endpoint::new_seeded(c.clone(), seed.wrapping_mul(31).wrapping_add(i as u64)),
                )
            })
            .collect();
        Sim {
            start,
            now: start,
            nodes,
            wire: Vec::new(),
            rng: SimRng(seed),
            faults,
            seq: 0,
            sent_log: Vec::new(),
        }
    }

    pub fn addr(&self, node: usize) -> SocketAddr {
        self.nodes[node].0
    }

    pub fn ep(&mut self, node: usize) -> &mut Endpoint {
        &mut self.nodes[node].1
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Moves every pending transmit onto the wire, applying the faults.
    pub fn flush(&mut self) {
        for i in 0..self.nodes.len() {
            let from = self.nodes[i].0;
            while let Some(t) = self.nodes[i].1.poll_transmit() {
                self.sent_log
                    .push((self.now, from, t.destination, t.payload.clone()));
                let copies = if self.rng.chance(self.faults.duplicate) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    if self.rng.chance(self.faults.drop) {
                        continue;
                    }
                    let extra = self
                        .rng
                        .below(self.faults.max_extra_delay.as_micros() as u64);
                    self.seq += 1;
                    self.wire.push(Datagram {
                        at: self.now + Duration::from_millis(1) + Duration::from_micros(extra),
                        seq: self.seq,
                        from,
                        to: t.destination,
                        bytes: t.payload.clone(),
                    });
                }
            }
        }
    }

    /// Advances to the next datagram arrival or timer (not past `limit`), handles it, and
    /// returns the events the endpoints produced as (node, event). `None` when nothing is
    /// left to do before `limit`.
    pub fn step(&mut self, limit: Instant) -> Option<Vec<(usize, Event)>> {
        self.flush();
        let next_wire = self
            .wire
            .iter()
            .enumerate()
            .min_by_key(|(_, d)| (d.at, d.seq))
            .map(|(i, d)| (i, d.at));
        let mut next_timer: Option<(usize, Instant)> = None;
        for i in 0..self.nodes.len() {
            if let Some(t) = self.nodes[i].1.poll_timeout()
                && next_timer.is_none_or(|(_, best)| t < best)
            {
                next_timer = Some((i, t));
            }
        }
        let wire_first = match (next_wire, next_timer) {
            (Some((_, w)), Some((_, t))) => w <= t,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if wire_first {
            let (i, at) = next_wire.unwrap();
            if at > limit {
                return None;
            }
            let d = self.wire.swap_remove(i);
            self.now = self.now.max(d.at);
            let now = self.now;
            if let Some(node) = self.nodes.iter_mut().find(|(a, _)| *a == d.to) {
                node.1.handle_datagram(now, d.from, &d.bytes);
            }
        } else {
            let (i, at) = next_timer.unwrap();
            if at > limit {
                return None;
            }
            self.now = self.now.max(at);
            let now = self.now;
            self.nodes[i].1.handle_timeout(now);
        }
        let mut events = Vec::new();
        for i in 0..self.nodes.len() {
            while let Some(e) = self.nodes[i].1.poll_event() {
                events.push((i, e));
            }
        }
        Some(events)
    }

    /// Runs until `limit` (relative to now), handing every event to `app`.
    pub fn run(&mut self, duration: Duration, mut app: impl FnMut(&mut Sim, usize, Event)) {
        let limit = self.now + duration;
        let mut steps = 0u64;
        while let Some(events) = self.step(limit) {
            for (node, e) in events {
                app(self, node, e);
            }
            steps += 1;
            assert!(steps < 5_000_000, "simulation does not settle");
        }
        self.now = self.now.max(limit);
    }
}
