//! A sans-IO bootstrap under a simulated clock: the device library's client, the crate's
//! LwM2M server as bootstrap server, and a management server (another `Lwm2mServer`, the
//! bootstrap server itself, or none: the test plays it), on a simulated link that can
//! lose the device's answers to Bootstrap-Finish and, at random, any datagram. Shared by
//! the bootstrap test files (each is its own crate and uses a part).
#![allow(dead_code)]

#[path = "../coap_sim/mod.rs"]
mod coap_sim;

use coap_sim::SimRng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::lwm2m::client::{ClientConfig, ClientEvent, Lwm2mClient, ObjectTree, objects};
use twinhub::lwm2m::server::{BootstrapPlan, Lwm2mServer, ServerAccount, ServerConfig};
use twinhub::transport::{BootstrapOutcome, DeviceEvent, Transport};

/// The device's address.
pub fn dev() -> SocketAddr {
    "127.0.0.1:7000".parse().unwrap()
}

/// The bootstrap server's address.
pub fn bs() -> SocketAddr {
    "127.0.0.1:5783".parse().unwrap()
}

/// The management server's address (unless the bootstrap server hosts it).
pub fn dm() -> SocketAddr {
    "127.0.0.1:5683".parse().unwrap()
}

/// Where the device registers once bootstrapped.
#[derive(Clone, Copy, Debug)]
pub enum Management {
    /// A server of its own at [`dm`] (auto-provisioning), seeded so.
    Server(u64),
    /// [`dm`], played by the test: datagrams to it are dropped.
    Scripted,
    /// The bootstrap server itself (a hub that hosts both), auto-provisioning.
    Bootstrap,
}

/// Which of the device's answers to a Bootstrap-Finish the link loses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FinishLoss {
    /// None (beyond the random loss).
    None,
    /// The first answer to each Finish.
    First,
    /// Every answer.
    All,
}

/// The device, the bootstrap server and the management server on a simulated link.
pub struct BootstrapNet {
    /// The simulated clock.
    pub now: Instant,
    /// The device.
    pub client: Lwm2mClient,
    /// The bootstrap server.
    pub bs: Lwm2mServer,
    /// The management server, when it is one of its own ([`Management::Server`]).
    pub dm: Option<Lwm2mServer>,
    management: Management,
    /// Datagrams in flight: (arrival, sequence, from, to, bytes).
    wire: Vec<(Instant, u64, SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    rng: SimRng,
    /// Chance that any datagram is lost.
    pub loss: f64,
    /// Each datagram arrives 1 ms plus up to 19 ms later at random (so datagrams
    /// reorder), else 5 ms later.
    jitter: bool,
    /// Which answers to Bootstrap-Finish are lost.
    pub lose_finish_answers: FinishLoss,
    /// The Finish message ids whose (first) answer was lost.
    pub finish_answers_lost: Vec<u16>,
    /// Message ids of the Bootstrap-Finish requests the bootstrap server sent.
    pub finish_ids: Vec<u16>,
    /// Bootstrap-Finish transmissions that reached the device.
    pub finishes_delivered: usize,
    /// The device's answers to the latest Finish that reached the bootstrap server.
    pub finish_answers_delivered: usize,
    /// The bootstrap server's outcomes.
    pub outcomes: Vec<BootstrapOutcome>,
    /// Registrations the management server reported.
    pub registered_at_dm: usize,
    /// What the bootstrap server reported, in order: "bootstrap" (an outcome) and, when it
    /// hosts the management server, "registered".
    pub bs_log: Vec<&'static str>,
    /// The device's events.
    pub client_events: Vec<ClientEvent>,
}

impl BootstrapNet {
    /// Device `endpoint`, whose tree knows only its bootstrap account, and a bootstrap
    /// server (seeded `bs_seed`) that gives it one account, at the management server;
    /// on a link that delivers every datagram 5 ms later and loses the first answer to
    /// each Finish.
    pub fn new(endpoint: &str, bs_seed: u64, management: Management) -> BootstrapNet {
        let now = Instant::now();
        let mut tree = ObjectTree::new();
        tree.add(objects::bootstrap_security(&format!("coap://{}", bs())));
        tree.add(objects::unprovisioned_server());
        tree.add(objects::device("Contoso", "MX1", "SN-7", "1.0.0"));
        let config = ClientConfig::new(endpoint, bs()).with_bootstrap(bs());
        let auto_provision = ServerConfig {
            auto_provision: true,
            ..ServerConfig::default()
        };
        let (bs_config, dm_at) = match management {
            Management::Bootstrap => (auto_provision.clone(), bs()),
            _ => (ServerConfig::default(), dm()),
        };
        let uri = format!("coap://{dm_at}");
        let bs_server =
            Lwm2mServer::with_seed(bs_config, bs_seed).with_bootstrap(Box::new(move |_| {
                Some(BootstrapPlan::new(vec![ServerAccount::new(1, uri.clone())]))
            }));
        let dm_server = match management {
            Management::Server(seed) => Some(Lwm2mServer::with_seed(auto_provision, seed)),
            _ => None,
        };
        BootstrapNet {
            now,
            client: Lwm2mClient::new(now, config, tree),
            bs: bs_server,
            dm: dm_server,
            management,
            wire: Vec::new(),
            seq: 0,
            rng: SimRng(0),
            loss: 0.0,
            jitter: false,
            lose_finish_answers: FinishLoss::First,
            finish_answers_lost: Vec::new(),
            finish_ids: Vec::new(),
            finishes_delivered: 0,
            finish_answers_delivered: 0,
            outcomes: Vec::new(),
            registered_at_dm: 0,
            bs_log: Vec::new(),
            client_events: Vec::new(),
        }
    }

    /// The same on a link that loses each datagram with chance `loss` and delays each by
    /// 1 to 20 ms at random (seeded `seed`).
    pub fn lossy(mut self, seed: u64, loss: f64) -> BootstrapNet {
        self.rng = SimRng(seed);
        self.loss = loss;
        self.jitter = true;
        self
    }

    /// The device reported `Bootstrapped`.
    pub fn bootstrapped(&self) -> bool {
        self.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Bootstrapped { .. }))
    }

    fn put(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let msg = Message::decode(&bytes).ok();
        if let Some(m) = &msg {
            if from == bs()
                && m.mtype == MessageType::Confirmable
                && m.uri_path().eq(["bs"])
                && self.finish_ids.last() != Some(&m.message_id)
            {
                self.finish_ids.push(m.message_id);
                self.finish_answers_delivered = 0;
            }
            if from == dev()
                && to == bs()
                && m.mtype == MessageType::Acknowledgement
                && m.code == Code::CHANGED
                && self.finish_ids.contains(&m.message_id)
            {
                let lose = match self.lose_finish_answers {
                    FinishLoss::None => false,
                    FinishLoss::First => !self.finish_answers_lost.contains(&m.message_id),
                    FinishLoss::All => true,
                };
                if lose {
                    if !self.finish_answers_lost.contains(&m.message_id) {
                        self.finish_answers_lost.push(m.message_id);
                    }
                    return;
                }
            }
        }
        if self.rng.chance(self.loss) {
            return;
        }
        if let Some(m) = &msg {
            if from == bs() && m.mtype == MessageType::Confirmable && m.uri_path().eq(["bs"]) {
                self.finishes_delivered += 1;
            }
            if to == bs()
                && m.mtype == MessageType::Acknowledgement
                && self.finish_ids.last() == Some(&m.message_id)
            {
                self.finish_answers_delivered += 1;
            }
        }
        if to == dm() && matches!(self.management, Management::Scripted) {
            return;
        }
        self.seq += 1;
        let delay = if self.jitter {
            Duration::from_millis(1 + self.rng.below(20))
        } else {
            Duration::from_millis(5)
        };
        self.wire
            .push((self.now + delay, self.seq, from, to, bytes));
    }

    /// Puts what everyone sent on the wire and collects the events.
    pub fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            self.put(dev(), t.destination, t.payload);
        }
        while let Some(t) = self.bs.poll_transmit() {
            self.put(bs(), t.destination, t.payload);
        }
        while let Some(t) = self.dm.as_mut().and_then(|d| d.poll_transmit()) {
            self.put(dm(), t.destination, t.payload);
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
        let hosts_dm = matches!(self.management, Management::Bootstrap);
        while let Some(e) = self.bs.poll_event() {
            match e {
                DeviceEvent::Bootstrap { outcome, .. } => {
                    self.outcomes.push(outcome);
                    self.bs_log.push("bootstrap");
                }
                DeviceEvent::Registered { .. } if hosts_dm => {
                    self.registered_at_dm += 1;
                    self.bs_log.push("registered");
                }
                _ => {}
            }
        }
        while let Some(e) = self.dm.as_mut().and_then(|d| d.poll_event()) {
            if let DeviceEvent::Registered { .. } = e {
                self.registered_at_dm += 1;
            }
        }
    }

    /// Runs `duration` of simulated time (bounded in steps).
    pub fn run(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }

    /// Runs until `until` returns true or `duration` passed (bounded in steps).
    pub fn run_until(&mut self, duration: Duration, until: impl Fn(&BootstrapNet) -> bool) {
        let end = self.now + duration;
        self.client.handle_timeout(self.now);
        for _ in 0..200_000 {
            self.flush();
            if until(self) {
                return;
            }
            let next_wire = self
                .wire
                .iter()
                .enumerate()
                .min_by_key(|(_, d)| (d.0, d.1))
                .map(|(i, d)| (i, d.0));
            let timers = [
                self.client.poll_timeout(),
                self.bs.poll_timeout(),
                self.dm.as_ref().and_then(|d| d.poll_timeout()),
            ];
            let next_timer = timers.iter().flatten().min().copied();
            match (next_wire, next_timer) {
                (Some((i, at)), t) if at <= end && t.is_none_or(|t| at <= t) => {
                    let (_, _, from, to, bytes) = self.wire.swap_remove(i);
                    self.now = self.now.max(at);
                    let now = self.now;
                    if to == dev() {
                        self.client.handle_datagram(now, from, &bytes);
                    } else if to == bs() {
                        self.bs.handle_datagram(now, from, &bytes);
                    } else if let (true, Some(d)) = (to == dm(), self.dm.as_mut()) {
                        d.handle_datagram(now, from, &bytes);
                    }
                }
                (_, Some(t)) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.client.handle_timeout(now);
                    self.bs.handle_timeout(now);
                    if let Some(d) = self.dm.as_mut() {
                        d.handle_timeout(now);
                    }
                }
                _ => {
                    self.now = end;
                    self.flush();
                    return;
                }
            }
        }
        panic!("the simulation does not settle");
    }
}
