//! The sans-IO CoAP message layer: reliability, deduplication, request/response matching,
//! observe (RFC 7641) and block-wise transfers (RFC 7959), in both roles.

mod config;
pub(crate) mod rng;
#[cfg(test)]
mod tests;
mod types;

pub use config::{EndpointConfig, EndpointConfigError};
pub use types::{
    Event, IncomingRequestId, ObservationEndReason, ObservationId, RequestError, RequestId,
    RespondError, SendError, Transmit,
};

use crate::coap::observe::notification_is_fresh;
use crate::coap::{BlockOption, Code, Message, MessageType, OptionNumber, Token};
use rng::Rng;
use std::cmp::Reverse;
// The tables keyed by what peers choose (addresses, message ids, tokens) hash with
// foldhash, seeded per process (as the registry's: src/registry/hash.rs): the standard
// SipHash was about a tenth of a request's CPU over DTLS.
use foldhash::{HashMap, HashMapExt};
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CoAP endpoint, client and server in one sans-IO state machine (RFC 7252, 7641, 7959).
///
/// It owns no socket, no thread and no clock: every input carries `now`, every output is
/// polled. A driver (the std UDP driver, a test harness with a simulated clock, or your
/// own async task) runs this loop:
///
/// 1. feed input: [`handle_datagram`](Endpoint::handle_datagram) for every received
///    datagram, and the application's calls ([`send_request`](Endpoint::send_request),
///    [`respond`](Endpoint::respond), [`notify`](Endpoint::notify), ...);
/// 2. drain [`poll_transmit`](Endpoint::poll_transmit) until `None`, sending each datagram;
/// 3. drain [`poll_event`](Endpoint::poll_event) until `None`, handing events to the
///    application (which may call back into step 1; then repeat step 2);
/// 4. wait for the next datagram or until [`poll_timeout`](Endpoint::poll_timeout),
///    whichever comes first; at that deadline call
///    [`handle_timeout`](Endpoint::handle_timeout) and go to 2.
///
/// # Behaviour
///
/// - **Reliability**: CON messages we send (requests, separate responses, CON
///   notifications) are retransmitted with exponential back-off from a random timeout in
///   `[ACK_TIMEOUT, ACK_TIMEOUT × ACK_RANDOM_FACTOR]`, at most MAX_RETRANSMIT times.
/// - **Deduplication**: every CON/NON message received is remembered by (peer, message id)
///   for EXCHANGE_LIFETIME (CON) or NON_LIFETIME (NON); a duplicate gets the cached reply
///   again (the piggybacked response, the empty ACK, the RST) and never reaches the
///   application twice. A message that reuses a remembered message id with a *different
///   token* is taken as a new exchange (a peer that wraps its 16-bit ids faster than
///   EXCHANGE_LIFETIME, as a load generator does, would otherwise be answered with stale
///   replies).
/// - **Responses** to requests we received: if the application answers within
///   `piggyback_window` of a CON request, the response is piggybacked on the ACK;
///   otherwise an empty ACK goes out when the window closes and the response later
///   travels as a separate CON response (retransmitted). NON requests get NON responses.
/// - **Matching**: responses match our requests by (peer, token); tokens are 8 random bytes
///   from the OS CSPRNG (`getrandom`), as is the first message id. An unknown response
///   gets RST; an empty CON (ping) gets RST. A peer whose address changed (NAT rebinding)
///   is followed only when the application says so: it asks
///   [`observation_elsewhere`](Endpoint::observation_elsewhere) whether a datagram is a
///   notification of an observation registered with another address, and moves the
///   request there with [`move_request`](Endpoint::move_request) before handing the
///   datagram in (the endpoint itself cannot tell the device from whoever holds the
///   address now). A notification of an observation from an address other than the
///   observation's, older (RFC 7641 §3.4) than the last one taken (one reordered
///   across a move, arriving late from the address the observation left), is not
///   answered with RST, which would make the device drop an observation that works at
///   its new address (RFC 7641 §4.5): it is acknowledged if CON, and dropped.
/// - **Bounds** (all in [`EndpointConfig`]): peers, duplicate-detection entries (the
///   oldest are forgotten), pending incoming requests (excess CON requests get 5.03
///   Service Unavailable with Max-Age 1, excess NON requests are dropped), outstanding
///   requests (`send_request` fails; the token index behind
///   [`observation_elsewhere`](Endpoint::observation_elsewhere) holds one entry per
///   registered observation among them, freed when the observation ends), block-wise
///   transfers (oldest dropped), observers
///   (excess registrations are answered as plain responses). A flood cannot grow memory
///   past these: the timer queues behind them are swept so that each holds at most twice
///   its live entries plus 64, whatever the message rate
///   ([`timer_queue_entries`](Endpoint::timer_queue_entries)).
/// - **Observe**, client role: send a GET with Observe=0 through `send_request`; the first
///   response arrives as [`Event::Response`]; if it carries Observe, fresh notifications
///   follow as [`Event::Notification`] (stale or reordered ones are dropped by the RFC 7641
///   freshness rule). Cancel with [`cancel_observation`](Endpoint::cancel_observation)
///   (GET Observe=1) or [`forget_request`](Endpoint::forget_request) (the next
///   notification gets RST). Server role: answer an Observe=0 request with
///   [`respond_and_observe`](Endpoint::respond_and_observe), then
///   [`notify`](Endpoint::notify); sequence numbers are added, a notification goes out CON
///   when the application marks it CON or when the last CON one is older than 24 h, and a
///   newer CON notification takes over the retransmission of an unacknowledged one. An RST,
///   an unacknowledged CON notification or a GET Observe=1 ends the relation
///   ([`Event::ObservationEnded`]).
/// - **Block-wise**: a response body larger than the block size is sliced (Block2, with
///   Size2) and kept for the peer's follow-up requests, which the endpoint answers itself; a
///   request body larger than the block size is sent in Block1 blocks (each acknowledged by
///   2.31 Continue, following the server's smaller block size if it asks for one, and
///   retried block-wise after a 4.13 that names a block size). Incoming Block1 requests are
///   reassembled (2.31 per block, 4.08 for a block out of sequence, 4.13 with Size1 when too
///   large) and reach the application whole; Block2 responses we receive are downloaded
///   block by block and reach the application whole. Reassembly buffers are bounded by
///   `max_body_size` and expire after `block_transfer_lifetime`.
///
/// # Example
///
/// Two endpoints wired back to back, with a made-up clock:
///
/// ```
/// use std::time::Instant;
/// use twinhub::coap::{Code, Endpoint, EndpointConfig, Event, Message};
///
/// let (a, b) = ("127.0.0.1:5683".parse().unwrap(), "127.0.0.1:5684".parse().unwrap());
/// let mut client = Endpoint::new(EndpointConfig::default());
/// let mut server = Endpoint::new(EndpointConfig::default());
/// let now = Instant::now();
///
/// let id = client.send_request(now, b, Message::request(Code::GET, "/3/0/9")).unwrap();
/// let t = client.poll_transmit().unwrap();
/// server.handle_datagram(now, a, &t.payload);
/// let Some(Event::Request { id: incoming, request, .. }) = server.poll_event() else { panic!() };
/// assert_eq!(request.uri_path_string(), "3/0/9");
/// let mut resp = Message::response(Code::CONTENT);
/// resp.payload = b"87".to_vec();
/// server.respond(now, incoming, resp).unwrap();
/// let t = server.poll_transmit().unwrap(); // piggybacked on the ACK
/// client.handle_datagram(now, b, &t.payload);
/// match client.poll_event() {
///     Some(Event::Response { id: got, response }) => {
///         assert_eq!(got, id);
///         assert_eq!(response.payload, b"87");
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
pub struct Endpoint {
    config: EndpointConfig,
    rng: Rng,
    next_mid: u16,
    next_id: u64,
    next_stamp: u64,
    peers: HashMap<SocketAddr, PeerState>,
    // client role
    requests: HashMap<RequestId, OutRequest>,
    by_token: HashMap<(SocketAddr, Token), RequestId>,
    /// Registered observations by token alone: a notification from another address
    /// ([`Endpoint::observation_elsewhere`], NAT rebinding). One entry per registered
    /// observation, so bounded by `max_outstanding_requests`.
    observe_by_token: HashMap<Token, RequestId>,
    request_deadlines: VecDeque<(Instant, RequestId, u64)>,
    // messages we sent that an ACK or RST may refer to
    sent: HashMap<(SocketAddr, u16), Sent>,
    retransmit_timers: BinaryHeap<Reverse<(Instant, SocketAddr, u16)>>,
    // server role
    incoming: HashMap<IncomingRequestId, Incoming>,
    piggyback_deadlines: VecDeque<(Instant, IncomingRequestId)>,
    incoming_expiry: VecDeque<(Instant, IncomingRequestId)>,
    dedup: HashMap<(SocketAddr, u16), Dedup>,
    dedup_expiry_con: VecDeque<(Instant, SocketAddr, u16, u64)>,
    dedup_expiry_non: VecDeque<(Instant, SocketAddr, u16, u64)>,
    dedup_len: usize,
    observers: HashMap<ObservationId, Observer>,
    observer_by_token: HashMap<(SocketAddr, Token), ObservationId>,
    blocks: HashMap<(SocketAddr, Vec<u8>), BlockTransfer>,
    block_expiry: VecDeque<(Instant, SocketAddr, Vec<u8>, u64)>,
    // outputs
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

/// Stale entries a timer queue may hold beyond twice its live state before it is swept.
const QUEUE_SLACK: usize = 64;

/// The kinds of timer an endpoint keeps. Retransmissions have per-message random
/// timeouts and live in a heap; every other kind has a constant duration, so its
/// deadlines are created in order and live in a FIFO (stale entries are skipped).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TimerKind {
    /// Retransmit a CON message or give up on it.
    Retransmit,
    /// A request we sent has waited `response_timeout`.
    ResponseTimeout,
    /// An incoming CON request's piggyback window closed: send an empty ACK.
    Piggyback,
    /// An unanswered incoming request is forgotten.
    IncomingExpiry,
    /// A duplicate-detection entry expires.
    DedupExpiry,
    /// An idle block-wise transfer is dropped.
    BlockExpiry,
}

#[derive(Default)]
struct PeerState {
    dedup: VecDeque<(u16, u64)>,
    dedup_count: usize,
    pending: usize,
    con_in_flight: usize,
    queue: VecDeque<RequestId>,
    refs: usize,
}

impl PeerState {
    fn is_idle(&self) -> bool {
        self.dedup_count == 0
            && self.pending == 0
            && self.con_in_flight == 0
            && self.queue.is_empty()
            && self.refs == 0
    }
}

enum Reply {
    /// Nothing to replay (yet): the application has the request, or a NON needs none.
    Nothing,
    /// We acknowledged with an empty ACK.
    EmptyAck,
    /// This exact datagram answered it.
    Bytes(Vec<u8>),
}

struct Dedup {
    token: Token,
    stamp: u64,
    reply: Reply,
}

struct Retx {
    bytes: Vec<u8>,
    attempts: u32,
    timeout: Duration,
    next_at: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Owner {
    Request(RequestId),
    Response,
    Notification(ObservationId),
}

struct Sent {
    owner: Owner,
    retx: Option<Retx>,
}

struct ObserveClient {
    registered: bool,
    last: Option<(u32, Instant)>,
}

struct Block1Out {
    offset: usize,
    len: usize,
    szx: u8,
}

struct Block2In {
    head: Message,
    body: Vec<u8>,
    sub_token: Token,
    notification: bool,
}

struct OutRequest {
    peer: SocketAddr,
    head: Message,
    body: Vec<u8>,
    token: Token,
    con: bool,
    in_flight: Option<(u16, Token)>,
    deadline_gen: u64,
    observe: Option<ObserveClient>,
    block1: Option<Block1Out>,
    block2: Option<Block2In>,
    retried_blockwise: bool,
}

struct Incoming {
    peer: SocketAddr,
    mid: u16,
    token: Token,
    con: bool,
    acked: bool,
    block1_echo: Option<BlockOption>,
    block2: Option<BlockOption>,
    block2_key: Vec<u8>,
    observe: Option<u32>,
}

struct Observer {
    peer: SocketAddr,
    token: Token,
    seq: u32,
    last_con: Instant,
    con_mid: Option<u16>,
    /// The message ids of the last [`NON_NOTIFICATIONS_KEPT`] NON notifications, newest
    /// last: an RST to any of them ends the relation (RFC 7641 §3.6), not only one to the
    /// newest (which may be the one lost).
    non_mids: [Option<u16>; NON_NOTIFICATIONS_KEPT],
    block2_key: Vec<u8>,
    szx: u8,
}

/// How many recent NON notifications of one observation an RST still matches.
const NON_NOTIFICATIONS_KEPT: usize = 4;

enum BlockTransfer {
    /// A Block1 request body being received.
    Upload { body: Vec<u8>, stamp: u64 },
    /// A sliced response body served to Block2 follow-up requests (shared: the downloads
    /// of one [`Endpoint::respond_shared`] body hold it once).
    Download {
        head: Message,
        body: Arc<Vec<u8>>,
        szx: u8,
        stamp: u64,
    },
}

impl BlockTransfer {
    fn stamp(&self) -> u64 {
        match self {
            BlockTransfer::Upload { stamp, .. } | BlockTransfer::Download { stamp, .. } => *stamp,
        }
    }
}

/// The options that name a resource for block-wise transfers: `tag` separates uploads
/// from downloads; Block, Size, Observe and No-Response options are not part of it.
fn resource_key(tag: u8, code: Option<Code>, msg: &Message) -> Vec<u8> {
    let mut k = vec![tag, code.map_or(0, |c| c.0)];
    for (n, v) in msg.options() {
        if matches!(
            n,
            OptionNumber::URI_HOST
                | OptionNumber::URI_PORT
                | OptionNumber::URI_PATH
                | OptionNumber::URI_QUERY
                | OptionNumber::ACCEPT
        ) {
            k.extend_from_slice(&n.0.to_be_bytes());
            k.extend_from_slice(&(v.len() as u16).to_be_bytes());
            k.extend_from_slice(v);
        }
    }
    k
}

/// Block `num` of `body` as a response built on `head`; `None` past the end.
fn slice_block(head: &Message, body: &[u8], num: u32, szx: u8) -> Option<Message> {
    let size = 1usize << (szx + 4);
    let offset = num as usize * size;
    if offset >= body.len() && !(offset == 0 && body.is_empty()) {
        return None;
    }
    let end = (offset + size).min(body.len());
    let mut m = head.clone();
    m.payload = body[offset..end].to_vec();
    m.set_block2(BlockOption {
        num,
        more: end < body.len(),
        szx,
    });
    m.set_size2(body.len() as u32);
    Some(m)
}

impl Endpoint {
    /// An endpoint drawing tokens and message ids from the OS CSPRNG.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails (never on ordinary
    /// systems); tokens cannot be made safely without it.
    pub fn new(config: EndpointConfig) -> Endpoint {
        Endpoint::with_rng(config, Rng::os())
    }

    /// An endpoint whose tokens, message ids and retransmission jitter come from a seeded
    /// generator: deterministic, for tests and simulations only (tokens are guessable).
    pub fn new_seeded(config: EndpointConfig, seed: u64) -> Endpoint {
        Endpoint::with_rng(config, Rng::Seeded(seed))
    }

    fn with_rng(config: EndpointConfig, mut rng: Rng) -> Endpoint {
        let next_mid = rng.next_u64() as u16;
        Endpoint {
            config,
            rng,
            next_mid,
            next_id: 1,
            next_stamp: 1,
            peers: HashMap::new(),
            requests: HashMap::new(),
            by_token: HashMap::new(),
            observe_by_token: HashMap::new(),
            request_deadlines: VecDeque::new(),
            sent: HashMap::new(),
            retransmit_timers: BinaryHeap::new(),
            incoming: HashMap::new(),
            piggyback_deadlines: VecDeque::new(),
            incoming_expiry: VecDeque::new(),
            dedup: HashMap::new(),
            dedup_expiry_con: VecDeque::new(),
            dedup_expiry_non: VecDeque::new(),
            dedup_len: 0,
            observers: HashMap::new(),
            observer_by_token: HashMap::new(),
            blocks: HashMap::new(),
            block_expiry: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ------------------------------------------------------------------ getters

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Requests we sent that are not finished (in flight, queued or observing).
    pub fn outstanding_requests(&self) -> usize {
        self.requests.len()
    }

    /// Incoming requests waiting for `respond`.
    pub fn pending_requests(&self) -> usize {
        self.incoming.len()
    }

    /// Observer relations served.
    pub fn observers(&self) -> usize {
        self.observers.len()
    }

    /// Peers with state.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// Duplicate-detection entries held.
    pub fn dedup_entries(&self) -> usize {
        self.dedup_len
    }

    /// Block-wise transfers held.
    pub fn block_transfers(&self) -> usize {
        self.blocks.len()
    }

    // ------------------------------------------------------------------ poll_*

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Endpoint::handle_timeout) must be called next (the earliest
    /// of every timer kind), or `None` when nothing is scheduled.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.drop_stale_timers();
        [
            self.next_deadline(TimerKind::Retransmit),
            self.next_deadline(TimerKind::ResponseTimeout),
            self.next_deadline(TimerKind::Piggyback),
            self.next_deadline(TimerKind::IncomingExpiry),
            self.next_deadline(TimerKind::DedupExpiry),
            self.next_deadline(TimerKind::BlockExpiry),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn next_deadline(&self, kind: TimerKind) -> Option<Instant> {
        match kind {
            TimerKind::Retransmit => self.retransmit_timers.peek().map(|r| r.0.0),
            TimerKind::ResponseTimeout => self.request_deadlines.front().map(|t| t.0),
            TimerKind::Piggyback => self.piggyback_deadlines.front().map(|t| t.0),
            TimerKind::IncomingExpiry => self.incoming_expiry.front().map(|t| t.0),
            TimerKind::DedupExpiry => [
                self.dedup_expiry_con.front().map(|t| t.0),
                self.dedup_expiry_non.front().map(|t| t.0),
            ]
            .into_iter()
            .flatten()
            .min(),
            TimerKind::BlockExpiry => self.block_expiry.front().map(|t| t.0),
        }
    }

    fn drop_stale_timers(&mut self) {
        while let Some(Reverse((at, peer, mid))) = self.retransmit_timers.peek() {
            let live = self
                .sent
                .get(&(*peer, *mid))
                .and_then(|s| s.retx.as_ref())
                .is_some_and(|r| r.next_at == *at);
            if live {
                break;
            }
            self.retransmit_timers.pop();
        }
        while let Some((_, id, generation)) = self.request_deadlines.front() {
            if self
                .requests
                .get(id)
                .is_some_and(|r| r.deadline_gen == *generation)
            {
                break;
            }
            self.request_deadlines.pop_front();
        }
        while let Some((_, id)) = self.piggyback_deadlines.front() {
            if self.incoming.get(id).is_some_and(|i| i.con && !i.acked) {
                break;
            }
            self.piggyback_deadlines.pop_front();
        }
        while let Some((_, id)) = self.incoming_expiry.front() {
            if self.incoming.contains_key(id) {
                break;
            }
            self.incoming_expiry.pop_front();
        }
        for fifo in [&mut self.dedup_expiry_con, &mut self.dedup_expiry_non] {
            while let Some((_, peer, mid, stamp)) = fifo.front() {
                if self
                    .dedup
                    .get(&(*peer, *mid))
                    .is_some_and(|d| d.stamp == *stamp)
                {
                    break;
                }
                fifo.pop_front();
            }
        }
        while let Some((_, peer, key, stamp)) = self.block_expiry.front() {
            if self
                .blocks
                .get(&(*peer, key.clone()))
                .is_some_and(|b| b.stamp() == *stamp)
            {
                break;
            }
            self.block_expiry.pop_front();
        }
    }

    // ------------------------------------------------------------------ handle_timeout

    /// Runs every timer due at `now`: retransmissions and give-ups, response timeouts,
    /// closing piggyback windows (empty ACKs), and expiry of remembered state.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Retransmissions.
        while let Some(Reverse((at, peer, mid))) = self.retransmit_timers.peek().copied() {
            if at > now {
                break;
            }
            self.retransmit_timers.pop();
            let key = (peer, mid);
            let max = self.config.max_retransmit;
            let Some(sent) = self.sent.get_mut(&key) else {
                continue;
            };
            let Some(rx) = sent.retx.as_mut() else {
                continue;
            };
            if rx.next_at != at {
                continue;
            }
            if rx.attempts >= max {
                let owner = sent.owner;
                self.remove_sent(key);
                match owner {
                    Owner::Request(id) => self.fail_request(now, id, RequestError::TimedOut),
                    Owner::Notification(obs) => {
                        self.end_observation(obs, ObservationEndReason::TimedOut)
                    }
                    Owner::Response => {}
                }
                continue;
            }
            rx.attempts += 1;
            rx.timeout *= 2;
            rx.next_at = now + rx.timeout;
            let (next_at, bytes) = (rx.next_at, rx.bytes.clone());
            self.retransmit_timers.push(Reverse((next_at, peer, mid)));
            self.transmits.push_back(Transmit {
                destination: peer,
                payload: bytes,
            });
        }
        // Response timeouts.
        while let Some(&(at, id, generation)) = self.request_deadlines.front() {
            if at > now {
                break;
            }
            self.request_deadlines.pop_front();
            if self
                .requests
                .get(&id)
                .is_some_and(|r| r.deadline_gen == generation)
            {
                self.fail_request(now, id, RequestError::TimedOut);
            }
        }
        // Piggyback windows: acknowledge now, respond separately later.
        while let Some(&(at, id)) = self.piggyback_deadlines.front() {
            if at > now {
                break;
            }
            self.piggyback_deadlines.pop_front();
            if let Some(inc) = self.incoming.get_mut(&id)
                && inc.con
                && !inc.acked
            {
                inc.acked = true;
                let (peer, mid) = (inc.peer, inc.mid);
                self.send_empty(peer, MessageType::Acknowledgement, mid);
                if let Some(d) = self.dedup.get_mut(&(peer, mid)) {
                    d.reply = Reply::EmptyAck;
                }
            }
        }
        self.expire(now);
    }

    /// Forgets remembered state whose time is up (cheap; runs on every input).
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.incoming_expiry.front() {
            if at > now {
                break;
            }
            self.incoming_expiry.pop_front();
            if let Some(inc) = self.incoming.remove(&id) {
                self.peer_pending_done(inc.peer);
            }
        }
        for non in [false, true] {
            loop {
                let fifo = if non {
                    &mut self.dedup_expiry_non
                } else {
                    &mut self.dedup_expiry_con
                };
                let Some(&(at, peer, mid, stamp)) = fifo.front() else {
                    break;
                };
                if at > now {
                    break;
                }
                fifo.pop_front();
                self.remove_dedup(peer, mid, stamp);
            }
        }
        while let Some((at, _, _, _)) = self.block_expiry.front() {
            if *at > now {
                break;
            }
            let (_, peer, key, stamp) = self.block_expiry.pop_front().expect("front exists");
            let k = (peer, key);
            if self.blocks.get(&k).is_some_and(|b| b.stamp() == stamp) {
                self.blocks.remove(&k);
            }
        }
        self.compact_timer_queues();
    }

    /// Drops the entries of forgotten state from the timer queues once they outnumber the
    /// live ones. A queue entry outlives its state when the state goes early (a response
    /// answered, a duplicate-detection entry evicted by a bound, a block transfer
    /// refreshed), so without this a queue's length would be the message rate times the
    /// timer's duration instead of a count. Each queue is kept under twice its live state
    /// plus [`QUEUE_SLACK`]; a sweep costs its length and runs only after that many
    /// entries went stale, so it is amortised O(1) per message.
    fn compact_timer_queues(&mut self) {
        fn over(len: usize, live: usize) -> bool {
            len > 2 * live + QUEUE_SLACK
        }
        if over(self.incoming_expiry.len(), self.incoming.len()) {
            let incoming = &self.incoming;
            self.incoming_expiry
                .retain(|(_, id)| incoming.contains_key(id));
        }
        if over(self.piggyback_deadlines.len(), self.incoming.len()) {
            let incoming = &self.incoming;
            self.piggyback_deadlines
                .retain(|(_, id)| incoming.get(id).is_some_and(|i| i.con && !i.acked));
        }
        for fifo in [&mut self.dedup_expiry_con, &mut self.dedup_expiry_non] {
            if over(fifo.len(), self.dedup_len) {
                let dedup = &self.dedup;
                fifo.retain(|(_, peer, mid, stamp)| {
                    dedup.get(&(*peer, *mid)).is_some_and(|d| d.stamp == *stamp)
                });
            }
        }
        if over(self.block_expiry.len(), self.blocks.len()) {
            let blocks = &self.blocks;
            self.block_expiry.retain(|(_, peer, key, stamp)| {
                blocks
                    .get(&(*peer, key.clone()))
                    .is_some_and(|b| b.stamp() == *stamp)
            });
        }
        if over(self.request_deadlines.len(), self.requests.len()) {
            let requests = &self.requests;
            self.request_deadlines.retain(|(_, id, generation)| {
                requests
                    .get(id)
                    .is_some_and(|r| r.deadline_gen == *generation)
            });
        }
        if over(self.retransmit_timers.len(), self.sent.len()) {
            let sent = &self.sent;
            self.retransmit_timers.retain(|Reverse((at, peer, mid))| {
                sent.get(&(*peer, *mid))
                    .and_then(|s| s.retx.as_ref())
                    .is_some_and(|r| r.next_at == *at)
            });
        }
    }

    /// Entries in the endpoint's timer queues, live or stale: at most twice the live state
    /// plus a small constant per queue, whatever the message rate (see the module docs).
    pub fn timer_queue_entries(&self) -> usize {
        self.incoming_expiry.len()
            + self.piggyback_deadlines.len()
            + self.dedup_expiry_con.len()
            + self.dedup_expiry_non.len()
            + self.block_expiry.len()
            + self.request_deadlines.len()
            + self.retransmit_timers.len()
    }

    // ------------------------------------------------------------------ handle_datagram

    /// Takes one received datagram from `peer`.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        self.expire(now);
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(_) => {
                // RFC 7252 §4.2: a CON with a format error is rejected with RST when its
                // header can be read; anything else is silently ignored.
                if bytes.len() >= 4 && bytes[0] >> 6 == 1 && (bytes[0] >> 4) & 3 == 0 {
                    let mid = u16::from_be_bytes([bytes[2], bytes[3]]);
                    self.send_empty(peer, MessageType::Reset, mid);
                }
                return;
            }
        };
        match msg.mtype {
            MessageType::Acknowledgement | MessageType::Reset => {
                self.handle_ack_or_reset(now, peer, msg)
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                let con = msg.mtype == MessageType::Confirmable;
                if msg.code.is_empty() || msg.code.is_reserved() {
                    if con {
                        // A ping (or a message we cannot process): RST.
                        self.send_empty(peer, MessageType::Reset, msg.message_id);
                    }
                    return;
                }
                if !self.admit_peer(peer) {
                    return;
                }
                if self.replay_duplicate(peer, &msg) {
                    return;
                }
                self.insert_dedup(now, peer, msg.message_id, msg.token(), con);
                if msg.code.is_request() {
                    self.handle_request(now, peer, msg);
                } else {
                    self.handle_separate_response(now, peer, msg);
                }
            }
        }
        self.gc_peer(peer);
    }

    fn handle_ack_or_reset(&mut self, now: Instant, peer: SocketAddr, msg: Message) {
        let key = (peer, msg.message_id);
        let Some(owner) = self.sent.get(&key).map(|s| s.owner) else {
            return;
        };
        let reset = msg.mtype == MessageType::Reset;
        match owner {
            Owner::Request(id) => {
                // A piggybacked response must carry the token of the message it answers.
                let expected = self.requests.get(&id).and_then(|r| r.in_flight);
                if !reset && !msg.code.is_empty() && expected.is_some_and(|(_, t)| t != msg.token())
                {
                    return;
                }
                self.remove_sent(key);
                if let Some(r) = self.requests.get_mut(&id)
                    && r.in_flight.is_some_and(|(m, _)| m == key.1)
                {
                    r.in_flight = None;
                }
                if reset {
                    self.fail_request(now, id, RequestError::Reset);
                } else if !msg.code.is_empty() {
                    self.process_response(now, id, msg);
                }
                self.pump_queue(now, peer);
            }
            Owner::Response => {
                self.remove_sent(key);
            }
            Owner::Notification(obs) => {
                let is_con = self.sent.get(&key).is_some_and(|s| s.retx.is_some());
                self.remove_sent(key);
                if let Some(o) = self.observers.get_mut(&obs) {
                    if is_con && o.con_mid == Some(key.1) {
                        o.con_mid = None;
                    }
                    if !is_con {
                        for m in o.non_mids.iter_mut().filter(|m| **m == Some(key.1)) {
                            *m = None;
                        }
                    }
                }
                if reset {
                    self.end_observation(obs, ObservationEndReason::Reset);
                }
            }
        }
        self.gc_peer(peer);
    }

    fn handle_separate_response(&mut self, now: Instant, peer: SocketAddr, msg: Message) {
        let con = msg.mtype == MessageType::Confirmable;
        let known = self.by_token.get(&(peer, msg.token())).copied();
        if known.is_none() && self.stale_notification_elsewhere(now, peer, &msg) {
            // A notification older than the observation's last one, from an address the
            // observation left (reordered across a NAT rebinding): RST would end an
            // observation alive at the new address (RFC 7641 §3.6, §4.5); it is
            // acknowledged (a CON; the device stops retransmitting it) and dropped.
            if con {
                self.send_empty(peer, MessageType::Acknowledgement, msg.message_id);
                self.set_dedup_reply(peer, msg.message_id, Reply::EmptyAck);
            }
            return;
        }
        let Some(id) = known.filter(|_| msg.unrecognized_critical_option().is_none()) else {
            // Unknown response (or a notification we no longer want, or one with an
            // unrecognized critical option, RFC 7252 §5.4.1): reject.
            self.send_empty(peer, MessageType::Reset, msg.message_id);
            self.set_dedup_reply(
                peer,
                msg.message_id,
                Reply::Bytes(rst_bytes(msg.message_id)),
            );
            return;
        };
        if con {
            self.send_empty(peer, MessageType::Acknowledgement, msg.message_id);
            self.set_dedup_reply(peer, msg.message_id, Reply::EmptyAck);
        }
        // A response implies our request arrived: stop retransmitting it.
        if let Some((mid, token)) = self.requests.get(&id).and_then(|r| r.in_flight)
            && token == msg.token()
        {
            self.remove_sent((peer, mid));
            if let Some(r) = self.requests.get_mut(&id) {
                r.in_flight = None;
            }
        }
        self.process_response(now, id, msg);
        self.pump_queue(now, peer);
    }

    // ------------------------------------------------------------------ client role

    /// Sends a request to `peer` (client role) and returns its id; the outcome arrives as
    /// [`Event::Response`] (and [`Event::Notification`]s for an observe request) or
    /// [`Event::RequestFailed`].
    ///
    /// The message's code, options, payload and type (CON or NON; ACK/RST count as CON)
    /// are used; the token and message id are the endpoint's. A body larger than the block
    /// size goes out block-wise (Block1). With Observe=0 the request registers an
    /// observation. CON requests beyond NSTART to the same peer wait in a queue.
    pub fn send_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mut request: Message,
    ) -> Result<RequestId, SendError> {
        if !request.code.is_request() {
            return Err(SendError::NotARequest(request.code));
        }
        if self.requests.len() >= self.config.max_outstanding_requests {
            return Err(SendError::TooManyRequests);
        }
        if request.payload.len() > self.config.max_body_size {
            return Err(SendError::BodyTooLarge {
                len: request.payload.len(),
            });
        }
        let con = request.mtype != MessageType::NonConfirmable;
        if !self.admit_peer(peer) {
            return Err(SendError::TooManyPeers);
        }
        let queue_it = {
            let p = self.peers.get(&peer).expect("admitted");
            con && p.con_in_flight >= self.config.nstart
        };
        if queue_it
            && self.peers.get(&peer).expect("admitted").queue.len()
                >= self.config.max_queued_per_peer
        {
            return Err(SendError::PeerQueueFull);
        }
        let body = std::mem::take(&mut request.payload);
        // Check that the head encodes before taking the request on.
        request.check_encodable().map_err(SendError::Encode)?;
        let token = self.new_token();
        let id = RequestId(self.new_id());
        let observe = (request.observe() == Some(0)).then_some(ObserveClient {
            registered: false,
            last: None,
        });
        self.requests.insert(
            id,
            OutRequest {
                peer,
                head: request,
                body,
                token,
                con,
                in_flight: None,
                deadline_gen: 0,
                observe,
                block1: None,
                block2: None,
                retried_blockwise: false,
            },
        );
        self.by_token.insert((peer, token), id);
        let p = self.peers.get_mut(&peer).expect("admitted");
        p.refs += 1;
        if queue_it {
            p.queue.push_back(id);
            self.restart_deadline(now, id);
        } else {
            self.start_request(now, id);
        }
        Ok(id)
    }

    /// Whether a confirmable request to `peer` given to
    /// [`send_request`](Endpoint::send_request) now would be transmitted at once: the
    /// peer has fewer than [`EndpointConfig::nstart`] CON requests unacknowledged and
    /// none waiting in its queue (a peer with no state: yes). When false, the request
    /// would wait in the peer's queue; an application that reports a request as sent
    /// when it leaves (the LWM2M server's `Sent`) keeps it until this holds.
    pub fn would_send_now(&self, peer: SocketAddr) -> bool {
        self.peers
            .get(&peer)
            .is_none_or(|p| p.con_in_flight < self.config.nstart && p.queue.is_empty())
    }

    /// Cancels an observation we registered by sending GET with Observe=1 (RFC 7641 §3.6);
    /// its response arrives as the final [`Event::Response`]. Returns false if `id` is not
    /// an observation in progress.
    pub fn cancel_observation(&mut self, now: Instant, id: RequestId) -> bool {
        let Some(r) = self.requests.get_mut(&id) else {
            return false;
        };
        if r.observe.is_none() {
            return false;
        }
        r.observe = None;
        if self.observe_by_token.get(&r.token) == Some(&id) {
            self.observe_by_token.remove(&r.token);
        }
        r.head.set_observe(1);
        r.block2 = None;
        r.block1 = None;
        // A FETCH's body names what is observed (RFC 8132 §2.4): the cancel repeats it.
        if r.head.code != Code::FETCH {
            r.body.clear();
        }
        self.start_request(now, id);
        true
    }

    /// Forgets a request (and stops retransmitting it). For an observation this is the
    /// reactive cancel: the next notification is answered with RST. No event follows.
    pub fn forget_request(&mut self, now: Instant, id: RequestId) -> bool {
        match self.finish_request(id) {
            Some(r) => {
                self.pump_queue(now, r.peer);
                true
            }
            None => false,
        }
    }

    /// Forgets several requests, then starts what waits in their peers' queues: forgetting
    /// them one at a time could first start (send) a queued one among them, to a peer the
    /// caller is leaving (a registration that ended, or whose address another device took).
    /// Returns how many it forgot.
    pub fn forget_requests(
        &mut self,
        now: Instant,
        ids: impl IntoIterator<Item = RequestId>,
    ) -> usize {
        let mut peers: Vec<SocketAddr> = Vec::new();
        let mut forgot = 0;
        for id in ids {
            let Some(r) = self.finish_request(id) else {
                continue;
            };
            forgot += 1;
            if !peers.contains(&r.peer) {
                peers.push(r.peer);
            }
        }
        for peer in peers {
            self.pump_queue(now, peer);
        }
        forgot
    }

    /// The registered observation (client role) that the datagram `bytes` from `peer`
    /// is a notification of, when the observation was registered with *another* peer:
    /// the device may have moved (NAT rebinding). `None` for anything else: not a CON or
    /// NON response, a token this endpoint does not observe with, one it already
    /// matches from `peer`, or a notification that is not fresh (RFC 7641 §3.4: older
    /// than the last one taken, so a datagram reordered across the move cannot move the
    /// observation back); an error response (the device ending the observation) counts.
    /// The header and token are read first; the datagram is decoded only when its token
    /// is an observation's. Handed in as is, a datagram found here gets RST (one left
    /// out for not being fresh is acknowledged if CON, and dropped: see "Matching" on
    /// [`Endpoint`]). An application that knows the new address is the device's calls
    /// [`move_request`](Endpoint::move_request) first.
    pub fn observation_elsewhere(
        &self,
        now: Instant,
        peer: SocketAddr,
        bytes: &[u8],
    ) -> Option<RequestId> {
        let id = self.observed_elsewhere(peer, bytes)?;
        let r = self.requests.get(&id)?;
        let msg = Message::decode(bytes).ok()?;
        if !msg.code.is_success() {
            return Some(id);
        }
        let seq = msg.observe()?;
        match r.observe.as_ref()?.last {
            Some((v1, t1)) if !notification_is_fresh(v1, t1, seq, now) => None,
            _ => Some(id),
        }
    }

    /// The registered observation (client role) whose token the CON or NON response
    /// `bytes` from `peer` carries, when the observation was registered with *another*
    /// peer, fresh or not: for an application that judges who sent a notification before
    /// the endpoint takes it (the LWM2M server behind DTLS judges it by the observation's
    /// device, also when it is stale and only to be acknowledged).
    /// [`observation_elsewhere`](Endpoint::observation_elsewhere) is this, for fresh
    /// notifications and error responses only. `None` for anything else: not a CON or NON
    /// response, a token this endpoint does not observe with, or one it already matches
    /// from `peer`. Reads the header and token only.
    pub fn observed_elsewhere(&self, peer: SocketAddr, bytes: &[u8]) -> Option<RequestId> {
        let (&first, rest) = bytes.split_first()?;
        let (&code, rest) = rest.split_first()?;
        let tkl = usize::from(first & 0x0f);
        // Version 1, CON (0) or NON (1), a response code (classes 2 to 5).
        if first >> 6 != 1 || (first >> 4) & 3 > 1 || !(2..=5).contains(&(code >> 5)) {
            return None;
        }
        let token = Token::from_slice(rest.get(2..2 + tkl)?)?;
        if self.by_token.contains_key(&(peer, token)) {
            return None;
        }
        let id = *self.observe_by_token.get(&token)?;
        self.requests
            .get(&id)
            .filter(|r| r.peer != peer)
            .map(|_| id)
    }

    /// The request of ours (client role) that the datagram `bytes`, which this endpoint
    /// gave out for `peer`, carries: for a driver whose layer could not send it (a DTLS
    /// session gone), so that the application can take the request back. `None` for
    /// anything else (a response, an ACK, a request no longer in progress).
    pub fn request_of(&self, peer: SocketAddr, bytes: &[u8]) -> Option<RequestId> {
        let (&first, rest) = bytes.split_first()?;
        let (&code, rest) = rest.split_first()?;
        let tkl = usize::from(first & 0x0f);
        // Version 1, CON or NON, a request code (class 0, not empty).
        if first >> 6 != 1 || (first >> 4) & 3 > 1 || code >> 5 != 0 || code == 0 {
            return None;
        }
        let token = Token::from_slice(rest.get(2..2 + tkl)?)?;
        self.by_token.get(&(peer, token)).copied()
    }

    /// The request of ours (client role) that the response or notification `bytes` from
    /// `peer` answers, by its token: for an application that checks who answers before
    /// the endpoint takes the answer (the LWM2M server behind DTLS: only the identity a
    /// device registered with answers for it). `None` for anything else (a request, an
    /// empty ACK or RST, an unknown token).
    pub fn answered_request(&self, peer: SocketAddr, bytes: &[u8]) -> Option<RequestId> {
        let (&first, rest) = bytes.split_first()?;
        let (&code, rest) = rest.split_first()?;
        let tkl = usize::from(first & 0x0f);
        // Version 1, any type, a response code (classes 2 to 5).
        if first >> 6 != 1 || !(2..=5).contains(&(code >> 5)) {
            return None;
        }
        let token = Token::from_slice(rest.get(2..2 + tkl)?)?;
        self.by_token.get(&(peer, token)).copied()
    }

    /// The request of ours (client role) that the empty ACK or RST `bytes` from `peer`
    /// acknowledges or resets, by its message id: for the same check as
    /// [`answered_request`](Endpoint::answered_request). `None` for anything else.
    pub(crate) fn acknowledged_request(&self, peer: SocketAddr, bytes: &[u8]) -> Option<RequestId> {
        let (&first, rest) = bytes.split_first()?;
        let (&code, rest) = rest.split_first()?;
        // Version 1, ACK (2) or RST (3), empty.
        if first >> 6 != 1 || (first >> 4) & 3 < 2 || code != 0 {
            return None;
        }
        let mid = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
        match self.sent.get(&(peer, mid))?.owner {
            Owner::Request(id) => Some(id),
            _ => None,
        }
    }

    /// Takes a datagram from `peer` that the application chose not to process: a
    /// notification [`observation_elsewhere`](Endpoint::observation_elsewhere) found
    /// from an address the application does not trust for it (the LWM2M server: one the
    /// device's registration left, the datagram late across a NAT rebinding). A CON
    /// message is acknowledged (an empty ACK, remembered for its duplicates like any
    /// CON's reply; a duplicate of one already answered gets that answer again) so that
    /// its sender stops retransmitting it; anything else is dropped. No RST (on which
    /// the device would drop the observation, RFC 7641 §3.6) and no event.
    pub fn acknowledge_and_drop(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        self.expire(now);
        let Ok(msg) = Message::decode(bytes) else {
            return;
        };
        if msg.mtype != MessageType::Confirmable || msg.code.is_empty() {
            return;
        }
        if !self.admit_peer(peer) {
            return;
        }
        if self.replay_duplicate(peer, &msg) {
            self.gc_peer(peer);
            return;
        }
        self.insert_dedup(now, peer, msg.message_id, msg.token(), true);
        self.send_empty(peer, MessageType::Acknowledgement, msg.message_id);
        self.set_dedup_reply(peer, msg.message_id, Reply::EmptyAck);
        self.gc_peer(peer);
    }

    /// Duplicate detection for a CON or NON message from `peer` (RFC 7252 §4.5): when
    /// its message id and token are remembered, the remembered reply (if any) goes again
    /// and `true` says it was a duplicate. A remembered entry of the same message id with
    /// another token (the peer reused the id for a new message) is forgotten; `false`
    /// then, and the caller takes the message as new.
    fn replay_duplicate(&mut self, peer: SocketAddr, msg: &Message) -> bool {
        let key = (peer, msg.message_id);
        let Some(d) = self.dedup.get(&key) else {
            return false;
        };
        if d.token != msg.token() {
            let stamp = d.stamp;
            self.remove_dedup(peer, msg.message_id, stamp);
            return false;
        }
        match &d.reply {
            Reply::Nothing => {}
            Reply::EmptyAck => self.send_empty(peer, MessageType::Acknowledgement, key.1),
            Reply::Bytes(b) => {
                let payload = b.clone();
                self.transmits.push_back(Transmit {
                    destination: peer,
                    payload,
                });
            }
        }
        true
    }

    /// Whether `msg` from `peer` is a notification of a registered observation now
    /// matched from another address, and not fresh (RFC 7641 §3.4) against the last
    /// notification that observation took.
    fn stale_notification_elsewhere(&self, now: Instant, peer: SocketAddr, msg: &Message) -> bool {
        let Some(r) = self
            .observe_by_token
            .get(&msg.token())
            .and_then(|id| self.requests.get(id))
        else {
            return false;
        };
        let Some(seq) = msg.observe().filter(|_| msg.code.is_success()) else {
            return false;
        };
        r.peer != peer
            && r.observe.as_ref().is_some_and(|o| {
                o.registered
                    && o.last
                        .is_some_and(|(v1, t1)| !notification_is_fresh(v1, t1, seq, now))
            })
    }

    /// Moves a request we sent (client role) to another peer: its responses and
    /// notifications are matched from `peer` from now on, not from the old address,
    /// and anything sent for it later (a cancel, a Block2 follow-up) goes there. For an
    /// observation whose device changed address (NAT rebinding). A registered
    /// observation's message still unacknowledged at the old address (a Block2
    /// follow-up of a notification) is no longer retransmitted and that download is
    /// dropped: the device's next notification brings the value again. Any other request
    /// with a message in flight (an observe request not answered yet, a plain request)
    /// is sent again to `peer` (a new message id, the same token, from its first block),
    /// within NSTART: when `peer` already has [`EndpointConfig::nstart`] CON requests in
    /// flight, it joins the back of `peer`'s queue instead, as does one that was still
    /// queued at the old address. False, and nothing changed, when `id` is not a request
    /// in progress, when `peer` is new and the peer table is full (`max_peers`), or when
    /// the request would have to wait and `peer`'s queue is full
    /// ([`EndpointConfig::max_queued_per_peer`]).
    pub fn move_request(&mut self, now: Instant, id: RequestId, peer: SocketAddr) -> bool {
        let Some(r) = self.requests.get(&id) else {
            return false;
        };
        let old = r.peer;
        if old == peer {
            return true;
        }
        let observing = r.observe.as_ref().is_some_and(|o| o.registered);
        let restart = r.in_flight.is_some() && !observing;
        let was_queued = self.peers.get(&old).is_some_and(|p| p.queue.contains(&id));
        let con = r.con;
        if !self.admit_peer(peer) {
            return false;
        }
        let target = self.peers.get(&peer).expect("admitted");
        let wait = was_queued || (restart && con && target.con_in_flight >= self.config.nstart);
        if wait && target.queue.len() >= self.config.max_queued_per_peer {
            self.gc_peer(peer);
            return false;
        }
        let r = self.requests.get_mut(&id).expect("checked above");
        let in_flight = r.in_flight.take();
        let sub_token = r.block2.take().map(|b2| b2.sub_token);
        if observing {
            // Nothing of it is awaited any more: no response deadline.
            r.deadline_gen = 0;
        } else if let Some(b1) = r.block1.as_mut() {
            b1.offset = 0;
            b1.len = 0;
        }
        let token = r.token;
        r.peer = peer;
        if let Some((mid, _)) = in_flight {
            self.remove_sent((old, mid));
        }
        if let Some(t) = sub_token {
            self.by_token.remove(&(old, t));
        }
        self.by_token.remove(&(old, token));
        self.by_token.insert((peer, token), id);
        if let Some(p) = self.peers.get_mut(&old) {
            p.refs = p.refs.saturating_sub(1);
            p.queue.retain(|q| *q != id);
        }
        let p = self.peers.get_mut(&peer).expect("admitted");
        p.refs += 1;
        if wait {
            p.queue.push_back(id);
        }
        self.gc_peer(old);
        if restart && !wait {
            self.start_request(now, id);
        }
        self.pump_queue(now, old);
        self.pump_queue(now, peer);
        true
    }

    fn start_request(&mut self, now: Instant, id: RequestId) {
        let block_size = 1usize << (self.config.block_szx + 4);
        let Some(r) = self.requests.get_mut(&id) else {
            return;
        };
        if r.body.len() > block_size && r.block1.is_none() {
            r.block1 = Some(Block1Out {
                offset: 0,
                len: 0,
                szx: self.config.block_szx,
            });
        }
        let token = r.token;
        let msg = if let Some(b1) = r.block1.as_mut() {
            let mut msg = r.head.clone();
            let size = 1usize << (b1.szx + 4);
            let end = (b1.offset + size).min(r.body.len());
            b1.len = end - b1.offset;
            msg.payload = r.body[b1.offset..end].to_vec();
            msg.set_block1(BlockOption {
                num: (b1.offset / size) as u32,
                more: end < r.body.len(),
                szx: b1.szx,
            });
            if b1.offset == 0 {
                msg.set_size1(r.body.len() as u32);
            }
            Some(msg)
        } else {
            None
        };
        self.transmit_request(now, id, msg, token);
    }

    /// Sends `msg`, or (for `None`) the request's own head with its whole body, which
    /// spares a copy of the head on the common path.
    fn transmit_request(
        &mut self,
        now: Instant,
        id: RequestId,
        msg: Option<Message>,
        token: Token,
    ) {
        let Some(r) = self.requests.get(&id) else {
            return;
        };
        let (peer, con, old) = (r.peer, r.con, r.in_flight);
        if let Some((mid, _)) = old {
            self.remove_sent((peer, mid));
        }
        let mid = self.new_mid();
        let mtype = if con {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let encoded = match msg {
            Some(mut msg) => {
                msg.mtype = mtype;
                msg.message_id = mid;
                msg.with_token(token);
                msg.to_bytes()
            }
            None => {
                let r = self.requests.get_mut(&id).expect("checked above");
                r.head.mtype = mtype;
                r.head.message_id = mid;
                r.head.with_token(token);
                std::mem::swap(&mut r.head.payload, &mut r.body);
                let encoded = r.head.to_bytes();
                std::mem::swap(&mut r.head.payload, &mut r.body);
                encoded
            }
        };
        let bytes = match encoded {
            Ok(b) => b,
            Err(e) => {
                self.fail_request(now, id, RequestError::Encode(e));
                return;
            }
        };
        let retx = con.then(|| self.new_retx(now, bytes.clone()));
        if let Some(rx) = &retx {
            self.retransmit_timers
                .push(Reverse((rx.next_at, peer, mid)));
            if let Some(p) = self.peers.get_mut(&peer) {
                p.con_in_flight += 1;
            }
        }
        self.sent.insert(
            (peer, mid),
            Sent {
                owner: Owner::Request(id),
                retx,
            },
        );
        if let Some(r) = self.requests.get_mut(&id) {
            r.in_flight = Some((mid, token));
        }
        self.restart_deadline(now, id);
        self.transmits.push_back(Transmit {
            destination: peer,
            payload: bytes,
        });
    }

    fn restart_deadline(&mut self, now: Instant, id: RequestId) {
        let generation = self.new_stamp();
        if let Some(r) = self.requests.get_mut(&id) {
            r.deadline_gen = generation;
            self.request_deadlines
                .push_back((now + self.config.response_timeout, id, generation));
        }
    }

    fn process_response(&mut self, now: Instant, id: RequestId, resp: Message) {
        let max_body = self.config.max_body_size;
        let Some(r) = self.requests.get_mut(&id) else {
            return;
        };
        let peer = r.peer;
        // A block of a Block2 download.
        if let Some(b2) = r.block2.as_mut()
            && resp.token() == b2.sub_token
            && resp.token() != r.token
        {
            let Some(blk) = resp.block2() else {
                self.fail_request(now, id, RequestError::BlockMismatch);
                return;
            };
            // Every block of one representation (RFC 7959 §2.4): a block whose ETag is not
            // the first block's comes from another one, and is not spliced in.
            if !resp.code.is_success()
                || blk.offset() != b2.body.len()
                || resp.etag() != b2.head.etag()
            {
                self.fail_request(now, id, RequestError::BlockMismatch);
                return;
            }
            if b2.body.len() + resp.payload.len() > max_body {
                self.fail_request(now, id, RequestError::BodyTooLarge { limit: max_body });
                return;
            }
            b2.body.extend_from_slice(&resp.payload);
            if blk.more {
                let next = b2.body.len() / blk.size();
                self.request_block2(now, id, next as u32, blk.szx);
            } else {
                let b2 = r.block2.take().expect("present");
                self.by_token.remove(&(peer, b2.sub_token));
                let mut whole = b2.head;
                whole.payload = b2.body;
                whole.remove_option(OptionNumber::BLOCK2);
                self.deliver(id, whole, b2.notification);
            }
            return;
        }
        // Block1 upload: 2.31 Continue asks for the next block.
        if let Some(b1) = r.block1.as_mut() {
            if resp.code == Code::CONTINUE {
                let next = b1.offset + b1.len;
                if next < r.body.len() {
                    let szx = resp.block1().map_or(b1.szx, |b| b.szx.min(b1.szx));
                    b1.offset = next;
                    b1.szx = szx;
                    if next % (1usize << (szx + 4)) != 0 {
                        self.fail_request(now, id, RequestError::BlockNegotiationFailed);
                        return;
                    }
                    self.start_request(now, id);
                    return;
                }
            }
        } else if resp.code == Code::REQUEST_ENTITY_TOO_LARGE
            && !r.retried_blockwise
            && !r.body.is_empty()
        {
            // RFC 7959 §2.9.3: the server names the block size it wants; retry block-wise.
            let szx = resp
                .block1()
                .map(|b| b.szx)
                .or_else(|| resp.size1().map(|s| BlockOption::szx_for_size(s as usize)));
            if let Some(szx) = szx {
                let szx = szx.min(self.config.block_szx);
                if r.body.len() > (1usize << (szx + 4)) {
                    r.retried_blockwise = true;
                    r.block1 = Some(Block1Out {
                        offset: 0,
                        len: 0,
                        szx,
                    });
                    self.start_request(now, id);
                    return;
                }
            }
        }
        // Observe bookkeeping.
        let mut notification = false;
        if let Some(obs) = r.observe.as_mut() {
            let seq = resp.observe().filter(|_| resp.code.is_success());
            match (obs.registered, seq) {
                (true, Some(seq)) => {
                    if let Some((v1, t1)) = obs.last
                        && !notification_is_fresh(v1, t1, seq, now)
                    {
                        return; // stale or reordered
                    }
                    obs.last = Some((seq, now));
                    notification = true;
                }
                (false, Some(seq)) => {
                    obs.registered = true;
                    obs.last = Some((seq, now));
                    r.deadline_gen = 0; // an observation has no response timeout
                    // Tokens are random 64-bit numbers: two registered observations
                    // sharing one is not expected; the first keeps it.
                    self.observe_by_token.entry(r.token).or_insert(id);
                }
                (_, None) => {
                    r.observe = None; // a final response ends the observation
                }
            }
        }
        // A Block2 response: fetch the rest before delivering.
        if let Some(blk) = resp.block2()
            && blk.more
            && blk.num == 0
        {
            if resp.size2().is_some_and(|s| s as usize > max_body) || resp.payload.len() > max_body
            {
                self.fail_request(now, id, RequestError::BodyTooLarge { limit: max_body });
                return;
            }
            let sub_token = self.new_token();
            let r = self.requests.get_mut(&id).expect("present");
            if let Some(old) = r.block2.take() {
                self.by_token.remove(&(peer, old.sub_token));
            }
            let mut head = resp;
            let body = std::mem::take(&mut head.payload);
            r.block2 = Some(Block2In {
                head,
                body,
                sub_token,
                notification,
            });
            self.by_token.insert((peer, sub_token), id);
            self.request_block2(now, id, 1, blk.szx);
            return;
        }
        self.deliver(id, resp, notification);
    }

    fn request_block2(&mut self, now: Instant, id: RequestId, num: u32, szx: u8) {
        let Some(r) = self.requests.get(&id) else {
            return;
        };
        let Some(b2) = r.block2.as_ref() else {
            return;
        };
        let mut msg = r.head.clone();
        msg.remove_option(OptionNumber::OBSERVE);
        msg.remove_option(OptionNumber::BLOCK1);
        msg.remove_option(OptionNumber::SIZE1);
        // A FETCH's body says what is fetched (RFC 8132 §2.3.2): each follow-up repeats it
        // when it fits one datagram (a body sent block-wise is not sent again).
        if msg.code == Code::FETCH && r.block1.is_none() && r.body.len() <= 1024 {
            msg.payload = r.body.clone();
        }
        msg.set_block2(BlockOption {
            num,
            more: false,
            szx,
        });
        let token = b2.sub_token;
        self.transmit_request(now, id, Some(msg), token);
    }

    fn deliver(&mut self, id: RequestId, response: Message, notification: bool) {
        let observing = self
            .requests
            .get(&id)
            .is_some_and(|r| r.observe.as_ref().is_some_and(|o| o.registered));
        if notification {
            self.events.push_back(Event::Notification { id, response });
        } else {
            self.events.push_back(Event::Response { id, response });
        }
        if observing {
            // A registered observation waits for notifications without a deadline (a
            // Block2 download of a notification restarted it).
            if let Some(r) = self.requests.get_mut(&id) {
                r.deadline_gen = 0;
            }
        } else {
            self.finish_request(id);
        }
    }

    fn fail_request(&mut self, now: Instant, id: RequestId, error: RequestError) {
        if let Some(r) = self.finish_request(id) {
            self.events.push_back(Event::RequestFailed { id, error });
            self.pump_queue(now, r.peer);
        }
    }

    fn finish_request(&mut self, id: RequestId) -> Option<OutRequest> {
        let r = self.requests.remove(&id)?;
        self.by_token.remove(&(r.peer, r.token));
        if self.observe_by_token.get(&r.token) == Some(&id) {
            self.observe_by_token.remove(&r.token);
        }
        if let Some(b2) = &r.block2 {
            self.by_token.remove(&(r.peer, b2.sub_token));
        }
        if let Some((mid, _)) = r.in_flight {
            self.remove_sent((r.peer, mid));
        }
        if let Some(p) = self.peers.get_mut(&r.peer) {
            p.refs = p.refs.saturating_sub(1);
            if let Some(pos) = p.queue.iter().position(|q| *q == id) {
                p.queue.remove(pos);
            }
        }
        self.gc_peer(r.peer);
        Some(r)
    }

    fn pump_queue(&mut self, now: Instant, peer: SocketAddr) {
        loop {
            let Some(p) = self.peers.get_mut(&peer) else {
                return;
            };
            if p.con_in_flight >= self.config.nstart {
                return;
            }
            let Some(id) = p.queue.pop_front() else {
                return;
            };
            self.start_request(now, id);
        }
    }

    // ------------------------------------------------------------------ server role

    fn handle_request(&mut self, now: Instant, peer: SocketAddr, mut msg: Message) {
        let con = msg.mtype == MessageType::Confirmable;
        let (mid, token) = (msg.message_id, msg.token());
        if msg.unrecognized_critical_option().is_some() {
            self.reply_direct(peer, mid, token, con, Message::response(Code::BAD_OPTION));
            return;
        }
        // GET with Observe=1 deregisters (RFC 7641 §3.6); the request is still answered.
        if msg.observe() == Some(1)
            && let Some(&obs) = self.observer_by_token.get(&(peer, token))
        {
            self.end_observation(obs, ObservationEndReason::Cancelled);
        }
        // Block2 follow-up served from a sliced body.
        let block2 = msg.block2();
        // The method is part of the key, and a FETCH's body (what it fetches, repeated by
        // each follow-up, RFC 8132): a GET's follow-up is never served from a POST's body,
        // nor one FETCH's from another's.
        let mut block2_key = resource_key(b'2', Some(msg.code), &msg);
        if msg.code == Code::FETCH {
            block2_key.extend_from_slice(&msg.payload);
        }
        if let Some(b2) = block2
            && b2.num > 0
            && msg.observe().is_none()
        {
            let stamp = self.new_stamp();
            let lifetime = self.config.block_transfer_lifetime;
            if let Some(BlockTransfer::Download {
                head,
                body,
                szx,
                stamp: s,
            }) = self.blocks.get_mut(&(peer, block2_key.clone()))
            {
                let szx = b2.szx.min(*szx);
                let num = (b2.offset() / (1usize << (szx + 4))) as u32;
                let reply = slice_block(head, body, num, szx)
                    .unwrap_or_else(|| Message::response(Code::BAD_OPTION));
                *s = stamp;
                self.block_expiry
                    .push_back((now + lifetime, peer, block2_key, stamp));
                self.reply_direct(peer, mid, token, con, reply);
                return;
            }
        }
        // Block1 reassembly.
        let mut block1_echo = None;
        if let Some(b1) = msg.block1() {
            match self.receive_block1(now, peer, &msg, b1) {
                Err(reply) => {
                    self.reply_direct(peer, mid, token, con, reply);
                    return;
                }
                Ok(body) => {
                    msg.payload = body;
                    msg.remove_option(OptionNumber::BLOCK1);
                    block1_echo = Some(BlockOption { more: false, ..b1 });
                }
            }
        }
        // Bounds on requests waiting for the application.
        let per_peer = self.peers.get(&peer).map_or(0, |p| p.pending);
        if self.incoming.len() >= self.config.max_pending_requests
            || per_peer >= self.config.max_pending_requests_per_peer
        {
            if con {
                let mut busy = Message::response(Code::SERVICE_UNAVAILABLE);
                busy.set_max_age(1);
                self.reply_direct(peer, mid, token, con, busy);
            }
            return;
        }
        let id = IncomingRequestId(self.new_id());
        self.incoming.insert(
            id,
            Incoming {
                peer,
                mid,
                token,
                con,
                acked: false,
                block1_echo,
                block2,
                block2_key,
                observe: msg.observe(),
            },
        );
        self.peers.entry(peer).or_default().pending += 1;
        if con {
            self.piggyback_deadlines
                .push_back((now + self.config.piggyback_window, id));
        }
        self.incoming_expiry
            .push_back((now + self.config.pending_request_lifetime, id));
        self.events.push_back(Event::Request {
            id,
            peer,
            request: msg,
        });
    }

    /// Adds a Block1 block to its reassembly; `Ok(body)` when the last block completed it,
    /// `Err(reply)` with the 2.31 / 4.08 / 4.13 / 4.00 to send otherwise.
    fn receive_block1(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        msg: &Message,
        b1: BlockOption,
    ) -> Result<Vec<u8>, Message> {
        let max = self.block1_limit(msg);
        let too_large = || {
            let mut m = Message::response(Code::REQUEST_ENTITY_TOO_LARGE);
            m.set_size1(max as u32);
            m
        };
        let key = (peer, resource_key(b'1', Some(msg.code), msg));
        if msg.size1().is_some_and(|s| s as usize > max) {
            self.blocks.remove(&key);
            return Err(too_large());
        }
        if b1.more && msg.payload.len() != b1.size() {
            self.blocks.remove(&key);
            return Err(Message::response(Code::BAD_REQUEST));
        }
        let stamp = self.new_stamp();
        if b1.num == 0 {
            self.make_room_for_block_transfer();
            self.blocks.insert(
                key.clone(),
                BlockTransfer::Upload {
                    body: Vec::new(),
                    stamp,
                },
            );
        }
        let Some(BlockTransfer::Upload { body, stamp: _ }) = self.blocks.get_mut(&key) else {
            return Err(Message::response(Code::REQUEST_ENTITY_INCOMPLETE));
        };
        if b1.offset() != body.len() {
            return Err(Message::response(Code::REQUEST_ENTITY_INCOMPLETE));
        }
        if body.len() + msg.payload.len() > max {
            self.blocks.remove(&key);
            return Err(too_large());
        }
        let (peer_bytes, all_bytes) = self.block1_bytes(peer);
        let grow = msg.payload.len();
        if peer_bytes + grow > self.config.max_block1_bytes_per_peer {
            self.blocks.remove(&key);
            let mut m = Message::response(Code::REQUEST_ENTITY_TOO_LARGE);
            m.set_size1(self.config.max_block1_bytes_per_peer as u32);
            return Err(m);
        }
        if all_bytes + grow > self.config.max_block1_bytes {
            self.blocks.remove(&key);
            let mut m = Message::response(Code::SERVICE_UNAVAILABLE);
            m.set_max_age(1);
            return Err(m);
        }
        let Some(BlockTransfer::Upload { body, stamp: s }) = self.blocks.get_mut(&key) else {
            return Err(Message::response(Code::REQUEST_ENTITY_INCOMPLETE));
        };
        body.extend_from_slice(&msg.payload);
        if b1.more {
            *s = stamp;
            self.block_expiry.push_back((
                now + self.config.block_transfer_lifetime,
                key.0,
                key.1,
                stamp,
            ));
            let mut cont = Message::response(Code::CONTINUE);
            cont.set_block1(BlockOption {
                num: b1.num,
                more: true,
                szx: b1.szx.min(self.config.block_szx),
            });
            return Err(cont);
        }
        match self.blocks.remove(&key) {
            Some(BlockTransfer::Upload { body, .. }) => Ok(body),
            _ => Err(Message::response(Code::REQUEST_ENTITY_INCOMPLETE)),
        }
    }

    /// The largest Block1 body `msg` may carry: the first matching path limit, else
    /// `max_body_size`.
    fn block1_limit(&self, msg: &Message) -> usize {
        let limit = self.config.block1_path_limits.iter().find(|(prefix, _)| {
            let mut path = msg.uri_path();
            prefix.iter().all(|seg| path.next() == Some(seg.as_str()))
        });
        limit.map_or(self.config.max_body_size, |(_, max)| {
            (*max).min(self.config.max_body_size)
        })
    }

    /// Bytes held in unfinished Block1 reassemblies: `(peer's, everyone's)`. A scan of at
    /// most `max_block_transfers` entries, cheaper than keeping counters in step with
    /// every way a transfer ends.
    fn block1_bytes(&self, peer: SocketAddr) -> (usize, usize) {
        let mut mine = 0;
        let mut all = 0;
        for ((p, _), t) in &self.blocks {
            if let BlockTransfer::Upload { body, .. } = t {
                all += body.len();
                if *p == peer {
                    mine += body.len();
                }
            }
        }
        (mine, all)
    }

    fn make_room_for_block_transfer(&mut self) {
        while self.blocks.len() >= self.config.max_block_transfers {
            let Some((_, peer, key, stamp)) = self.block_expiry.pop_front() else {
                // Transfers without a pending expiry entry cannot exist; drop any one.
                let k = self.blocks.keys().next().cloned();
                if let Some(k) = k {
                    self.blocks.remove(&k);
                }
                continue;
            };
            let k = (peer, key);
            if self.blocks.get(&k).is_some_and(|b| b.stamp() == stamp) {
                self.blocks.remove(&k);
            }
        }
    }

    /// Answers a request the endpoint handles itself (errors, 2.31, cached blocks):
    /// piggybacked on the ACK for CON, as NON otherwise; cached for duplicates.
    fn reply_direct(
        &mut self,
        peer: SocketAddr,
        mid: u16,
        token: Token,
        con: bool,
        mut reply: Message,
    ) {
        reply.with_token(token);
        if con {
            reply.mtype = MessageType::Acknowledgement;
            reply.message_id = mid;
        } else {
            reply.mtype = MessageType::NonConfirmable;
            reply.message_id = self.new_mid();
        }
        let Ok(bytes) = reply.to_bytes() else {
            return;
        };
        self.set_dedup_reply(peer, mid, Reply::Bytes(bytes.clone()));
        self.transmits.push_back(Transmit {
            destination: peer,
            payload: bytes,
        });
    }

    /// Answers an incoming request (server role): piggybacked on the ACK while the
    /// piggyback window is open, as a separate CON response after it, NON for a NON request.
    /// The token, message id and type are the endpoint's; a body larger than the block size
    /// (or than the block size the client asked for) is sent block-wise (Block2), and the
    /// endpoint serves the client's follow-up block requests itself.
    pub fn respond(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        response: Message,
    ) -> Result<(), RespondError> {
        self.respond_with(now, id, response, None)
    }

    /// [`Endpoint::respond`] with the body shared instead of in `response.payload` (which
    /// is ignored): a block-wise transfer keeps a reference, not a copy, so any number of
    /// downloads of one body (a firmware image) hold it once.
    pub fn respond_shared(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        response: Message,
        body: Arc<Vec<u8>>,
    ) -> Result<(), RespondError> {
        self.respond_with(now, id, response, Some(body))
    }

    fn respond_with(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        response: Message,
        shared: Option<Arc<Vec<u8>>>,
    ) -> Result<(), RespondError> {
        if !response.code.is_response() {
            return Err(RespondError::NotAResponse(response.code));
        }
        let inc = self
            .incoming
            .remove(&id)
            .ok_or(RespondError::UnknownRequest(id))?;
        let result = self.send_response(now, &inc, response, None, shared);
        if result.is_err() {
            self.incoming.insert(id, inc);
            return result;
        }
        self.peer_pending_done(inc.peer);
        result
    }

    /// Answers an Observe=0 request and registers the observer (RFC 7641) when the
    /// response is a success; returns the relation to [`notify`](Endpoint::notify). Falls
    /// back to a plain [`respond`](Endpoint::respond) (returning `None`) when the request
    /// did not ask to observe, the response is an error, or `max_observers` is reached.
    pub fn respond_and_observe(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        response: Message,
    ) -> Result<Option<ObservationId>, RespondError> {
        let Some(inc) = self.incoming.get(&id) else {
            return Err(RespondError::UnknownRequest(id));
        };
        if inc.observe != Some(0)
            || !response.code.is_success()
            || self.observers.len() >= self.config.max_observers
        {
            return self.respond(now, id, response).map(|()| None);
        }
        let (peer, token) = (inc.peer, inc.token);
        // A registration again with the same token goes on from the old sequence number:
        // restarting at 0 would make the peer take every notification for stale (RFC 7641
        // §3.4) for up to 128 s.
        let mut seq = 0;
        if let Some(&old) = self.observer_by_token.get(&(peer, token)) {
            if let Some(o) = self.observers.get(&old) {
                seq = (o.seq + 1) & 0xff_ffff;
            }
            self.end_observation(old, ObservationEndReason::Replaced);
        }
        let inc = self.incoming.remove(&id).expect("checked above");
        let obs = ObservationId(self.new_id());
        if let Err(e) = self.send_response(now, &inc, response, Some(seq), None) {
            self.incoming.insert(id, inc);
            return Err(e);
        }
        self.peer_pending_done(peer);
        self.observers.insert(
            obs,
            Observer {
                peer,
                token,
                seq,
                last_con: now,
                con_mid: None,
                non_mids: [None; NON_NOTIFICATIONS_KEPT],
                block2_key: inc.block2_key.clone(),
                szx: inc
                    .block2
                    .map_or(self.config.block_szx, |b| b.szx.min(self.config.block_szx)),
            },
        );
        self.observer_by_token.insert((peer, token), obs);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.refs += 1;
        }
        Ok(Some(obs))
    }

    fn send_response(
        &mut self,
        now: Instant,
        inc: &Incoming,
        mut resp: Message,
        observe_seq: Option<u32>,
        shared: Option<Arc<Vec<u8>>>,
    ) -> Result<(), RespondError> {
        resp.with_token(inc.token);
        if let Some(b1) = inc.block1_echo {
            resp.set_block1(b1);
        }
        if let Some(seq) = observe_seq {
            resp.set_observe(seq);
        }
        let szx = inc
            .block2
            .map_or(self.config.block_szx, |b| b.szx.min(self.config.block_szx));
        let num = inc.block2.map_or(0, |b| (b.offset() >> (szx + 4)) as u32);
        let len = shared.as_ref().map_or(resp.payload.len(), |b| b.len());
        if len <= (1usize << (szx + 4)) && num == 0 {
            if let Some(body) = shared {
                resp.payload = body.to_vec();
            }
        } else {
            let body = match shared {
                Some(body) => body,
                None => Arc::new(std::mem::take(&mut resp.payload)),
            };
            resp.payload.clear();
            let mut head = resp.clone();
            head.remove_option(OptionNumber::OBSERVE);
            resp = match slice_block(&resp, &body, num, szx) {
                Some(m) => m,
                None => {
                    let mut m = Message::response(Code::BAD_OPTION);
                    m.with_token(inc.token);
                    m
                }
            };
            self.store_download(now, inc.peer, inc.block2_key.clone(), head, body, szx);
        }
        let (mtype, mid) = if inc.con && !inc.acked {
            (MessageType::Acknowledgement, inc.mid)
        } else if inc.con {
            (MessageType::Confirmable, self.new_mid())
        } else {
            (MessageType::NonConfirmable, self.new_mid())
        };
        resp.mtype = mtype;
        resp.message_id = mid;
        let bytes = resp.to_bytes().map_err(RespondError::Encode)?;
        match mtype {
            MessageType::Confirmable => {
                let rx = self.new_retx(now, bytes.clone());
                self.retransmit_timers
                    .push(Reverse((rx.next_at, inc.peer, mid)));
                self.sent.insert(
                    (inc.peer, mid),
                    Sent {
                        owner: Owner::Response,
                        retx: Some(rx),
                    },
                );
            }
            _ => {
                if self
                    .dedup
                    .get(&(inc.peer, inc.mid))
                    .is_some_and(|d| d.token == inc.token)
                {
                    self.set_dedup_reply(inc.peer, inc.mid, Reply::Bytes(bytes.clone()));
                }
            }
        }
        self.transmits.push_back(Transmit {
            destination: inc.peer,
            payload: bytes,
        });
        Ok(())
    }

    fn store_download(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        key: Vec<u8>,
        head: Message,
        body: Arc<Vec<u8>>,
        szx: u8,
    ) {
        let k = (peer, key);
        if !self.blocks.contains_key(&k) {
            self.make_room_for_block_transfer();
        }
        let stamp = self.new_stamp();
        self.block_expiry.push_back((
            now + self.config.block_transfer_lifetime,
            peer,
            k.1.clone(),
            stamp,
        ));
        self.blocks.insert(
            k,
            BlockTransfer::Download {
                head,
                body,
                szx,
                stamp,
            },
        );
    }

    /// Sends a notification to an observer (server role). The sequence number and token
    /// are added; the notification goes out CON if `response.mtype` is
    /// [`MessageType::Confirmable`] or the last CON notification to this observer is older
    /// than `con_notification_interval`, NON otherwise. An error response (or any non-2.xx)
    /// is sent without Observe and ends the relation.
    pub fn notify(
        &mut self,
        now: Instant,
        id: ObservationId,
        mut response: Message,
    ) -> Result<(), RespondError> {
        if !response.code.is_response() {
            return Err(RespondError::NotAResponse(response.code));
        }
        let interval = self.config.con_notification_interval;
        let Some(o) = self.observers.get_mut(&id) else {
            return Err(RespondError::UnknownObservation(id));
        };
        let last = !response.code.is_success();
        let (peer, token, szx) = (o.peer, o.token, o.szx);
        let seq = (o.seq + 1) & 0xff_ffff;
        response.with_token(token);
        if last {
            response.remove_option(OptionNumber::OBSERVE);
        } else {
            response.set_observe(seq);
        }
        let con = response.mtype == MessageType::Confirmable
            || now.saturating_duration_since(o.last_con) >= interval;
        let mid = self.new_mid();
        response.mtype = if con {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        response.message_id = mid;
        let mut sliced = None;
        if response.payload.len() > (1usize << (szx + 4)) {
            let body = std::mem::take(&mut response.payload);
            let mut head = response.clone();
            head.remove_option(OptionNumber::OBSERVE);
            head.mtype = MessageType::Acknowledgement;
            response = slice_block(&response, &body, 0, szx).expect("block 0 exists");
            sliced = Some((head, body));
        }
        let bytes = response.to_bytes().map_err(RespondError::Encode)?;
        let o = self.observers.get_mut(&id).expect("checked above");
        o.seq = seq;
        let old_con = o.con_mid;
        let mut old_non = None;
        if con {
            o.con_mid = Some(mid);
            o.last_con = now;
        } else {
            old_non = o.non_mids[0];
            o.non_mids.rotate_left(1);
            o.non_mids[NON_NOTIFICATIONS_KEPT - 1] = Some(mid);
        }
        let block2_key = o.block2_key.clone();
        if let Some((head, body)) = sliced {
            self.store_download(now, peer, block2_key, head, Arc::new(body), szx);
        }
        if con {
            // RFC 7641 §4.5.2: a newer CON notification takes over the retransmission
            // state of one still unacknowledged.
            let carried = old_con
                .and_then(|m| self.sent.remove(&(peer, m)))
                .and_then(|s| s.retx);
            let rx = match carried {
                Some(old) => Retx {
                    bytes: bytes.clone(),
                    ..old
                },
                None => self.new_retx(now, bytes.clone()),
            };
            self.retransmit_timers
                .push(Reverse((rx.next_at, peer, mid)));
            self.sent.insert(
                (peer, mid),
                Sent {
                    owner: Owner::Notification(id),
                    retx: Some(rx),
                },
            );
        } else {
            if let Some(m) = old_non {
                self.sent.remove(&(peer, m));
            }
            self.sent.insert(
                (peer, mid),
                Sent {
                    owner: Owner::Notification(id),
                    retx: None,
                },
            );
        }
        self.transmits.push_back(Transmit {
            destination: peer,
            payload: bytes,
        });
        if last {
            self.end_observation(id, ObservationEndReason::FinalResponse);
        }
        Ok(())
    }

    /// Drops an observer relation without telling the observer (its next notification
    /// is never sent; the observer's own freshness timeout notices). Returns false if the
    /// relation did not exist. No event follows.
    pub fn remove_observer(&mut self, id: ObservationId) -> bool {
        let existed = self.observers.contains_key(&id);
        self.drop_observer(id);
        existed
    }

    fn end_observation(&mut self, id: ObservationId, reason: ObservationEndReason) {
        if self.drop_observer(id) {
            self.events
                .push_back(Event::ObservationEnded { id, reason });
        }
    }

    fn drop_observer(&mut self, id: ObservationId) -> bool {
        let Some(o) = self.observers.remove(&id) else {
            return false;
        };
        self.observer_by_token.remove(&(o.peer, o.token));
        for m in o.non_mids.into_iter().flatten() {
            self.sent.remove(&(o.peer, m));
        }
        if let Some(p) = self.peers.get_mut(&o.peer) {
            p.refs = p.refs.saturating_sub(1);
        }
        self.gc_peer(o.peer);
        true
    }

    // ------------------------------------------------------------------ bookkeeping

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn new_stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    fn new_mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    fn new_token(&mut self) -> Token {
        Token::from_slice(&self.rng.next_u64().to_le_bytes()).expect("8 bytes")
    }

    fn new_retx(&mut self, now: Instant, bytes: Vec<u8>) -> Retx {
        let factor = 1.0 + self.rng.next_f64() * (self.config.ack_random_factor - 1.0).max(0.0);
        let timeout = self.config.ack_timeout.mul_f64(factor);
        Retx {
            bytes,
            attempts: 0,
            timeout,
            next_at: now + timeout,
        }
    }

    fn send_empty(&mut self, peer: SocketAddr, mtype: MessageType, mid: u16) {
        let b = mid.to_be_bytes();
        self.transmits.push_back(Transmit {
            destination: peer,
            payload: vec![0x40 | (mtype.bits() << 4), 0, b[0], b[1]],
        });
    }

    fn remove_sent(&mut self, key: (SocketAddr, u16)) -> Option<Sent> {
        let s = self.sent.remove(&key)?;
        if s.retx.is_some()
            && matches!(s.owner, Owner::Request(_))
            && let Some(p) = self.peers.get_mut(&key.0)
        {
            p.con_in_flight = p.con_in_flight.saturating_sub(1);
        }
        Some(s)
    }

    fn admit_peer(&mut self, peer: SocketAddr) -> bool {
        if self.peers.contains_key(&peer) {
            return true;
        }
        if self.peers.len() >= self.config.max_peers {
            return false;
        }
        self.peers.insert(peer, PeerState::default());
        true
    }

    /// Forgets what duplicate detection remembers of `peer`'s messages (their ids,
    /// tokens and the replies to replay): the next message from it is taken as new
    /// whatever its id and token. For a DTLS server whose session at `peer` now speaks
    /// for another identity: that identity's messages are no retransmissions of the
    /// previous one's, and a remembered reply (a response the previous identity was
    /// sent) must not be replayed to it.
    #[cfg(feature = "dtls")]
    pub(crate) fn forget_duplicates(&mut self, peer: SocketAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let entries = std::mem::take(&mut p.dedup);
        p.dedup_count = 0;
        for (mid, stamp) in entries {
            if self
                .dedup
                .get(&(peer, mid))
                .is_some_and(|d| d.stamp == stamp)
            {
                self.dedup.remove(&(peer, mid));
                self.dedup_len -= 1;
            }
        }
        self.gc_peer(peer);
    }

    fn gc_peer(&mut self, peer: SocketAddr) {
        if self.peers.get(&peer).is_some_and(PeerState::is_idle) {
            self.peers.remove(&peer);
        }
    }

    fn peer_pending_done(&mut self, peer: SocketAddr) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.pending = p.pending.saturating_sub(1);
        }
        self.gc_peer(peer);
    }

    fn insert_dedup(&mut self, now: Instant, peer: SocketAddr, mid: u16, token: Token, con: bool) {
        // Per-peer bound: forget this peer's oldest entries.
        loop {
            let Some(p) = self.peers.get_mut(&peer) else {
                return;
            };
            if p.dedup_count < self.config.max_dedup_entries_per_peer {
                break;
            }
            let Some((old_mid, stamp)) = p.dedup.pop_front() else {
                break;
            };
            self.remove_dedup(peer, old_mid, stamp);
        }
        // Global bound: forget the oldest entries (CON and NON queues alike).
        while self.dedup_len >= self.config.max_dedup_entries {
            let con_front = self.dedup_expiry_con.front().map(|e| e.0);
            let non_front = self.dedup_expiry_non.front().map(|e| e.0);
            let entry = match (con_front, non_front) {
                (Some(c), Some(n)) if n < c => self.dedup_expiry_non.pop_front(),
                (Some(_), _) => self.dedup_expiry_con.pop_front(),
                (None, Some(_)) => self.dedup_expiry_non.pop_front(),
                (None, None) => break,
            };
            if let Some((_, p, m, s)) = entry {
                self.remove_dedup(p, m, s);
            }
        }
        let stamp = self.new_stamp();
        self.dedup.insert(
            (peer, mid),
            Dedup {
                token,
                stamp,
                reply: Reply::Nothing,
            },
        );
        self.dedup_len += 1;
        let (fifo, life) = if con {
            (&mut self.dedup_expiry_con, self.config.exchange_lifetime)
        } else {
            (&mut self.dedup_expiry_non, self.config.non_lifetime)
        };
        fifo.push_back((now + life, peer, mid, stamp));
        // Evicting this peer's own last entries above may have dropped its (idle) state;
        // it comes back here, so the peer count never exceeds what admitted it.
        let p = self.peers.entry(peer).or_default();
        p.dedup.push_back((mid, stamp));
        p.dedup_count += 1;
    }

    fn remove_dedup(&mut self, peer: SocketAddr, mid: u16, stamp: u64) {
        let key = (peer, mid);
        if self.dedup.get(&key).is_none_or(|d| d.stamp != stamp) {
            return;
        }
        self.dedup.remove(&key);
        self.dedup_len -= 1;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.dedup_count = p.dedup_count.saturating_sub(1);
            if p.dedup.front() == Some(&(mid, stamp)) {
                p.dedup.pop_front();
            }
            // Drop entries already forgotten from the front, keep the deque short.
            while let Some(&(m, s)) = p.dedup.front() {
                if self.dedup.get(&(peer, m)).is_some_and(|d| d.stamp == s) {
                    break;
                }
                p.dedup.pop_front();
            }
            if p.dedup.len() > 2 * p.dedup_count + 64 {
                let dedup = &self.dedup;
                p.dedup
                    .retain(|(m, s)| dedup.get(&(peer, *m)).is_some_and(|d| d.stamp == *s));
            }
        }
        self.gc_peer(peer);
    }

    fn set_dedup_reply(&mut self, peer: SocketAddr, mid: u16, reply: Reply) {
        if let Some(d) = self.dedup.get_mut(&(peer, mid)) {
            d.reply = reply;
        }
    }
}

fn rst_bytes(mid: u16) -> Vec<u8> {
    let b = mid.to_be_bytes();
    vec![0x70, 0, b[0], b[1]]
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("peers", &self.peers.len())
            .field("outstanding_requests", &self.requests.len())
            .field("pending_requests", &self.incoming.len())
            .field("observers", &self.observers.len())
            .field("dedup_entries", &self.dedup_len)
            .field("block_transfers", &self.blocks.len())
            .finish()
    }
}
