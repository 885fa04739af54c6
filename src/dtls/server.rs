//! The server side: many peers, each a `dimpl` state machine, in three bounded tables.

use super::psk::PskStore;
use super::record;
use super::{PeerIdentity, psk_config};
use dimpl::{Dtls, Output, PskResolver};
// Peer tables hash with foldhash, seeded per process (see src/registry/hash.rs).
use foldhash::{HashMap, HashMapExt};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bounds and timers of a [`DtlsServer`]. Every bound is a count; what happens at it is
/// said on each field.
///
/// ```
/// use twinhub::dtls::DtlsServerConfig;
/// let c = DtlsServerConfig::default();
/// assert_eq!((c.max_unverified, c.max_handshakes, c.max_sessions), (1024, 256, 100_000));
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct DtlsServerConfig {
    /// Peers that sent a ClientHello and were answered with a HelloVerifyRequest but have
    /// not echoed the cookie yet. `dimpl` keeps its cookie secret per instance, so the
    /// cookie exchange is *bounded* rather than stateless: each such peer holds one small
    /// state machine. At the bound, the oldest unverified peer is dropped to make room
    /// for the new one ([`DtlsStats::evicted_unverified`]); should its cookie come back
    /// later, it is dropped too (no state is made for it), and the device starts its
    /// handshake again once its retransmissions time out. A flood of spoofed ClientHellos fills only this table, and delays a real device
    /// only when more than this many arrive within the device's round trip (1,024 in
    /// 200 ms: over 5,000 a second). At least 1 ([`DtlsServerConfig::validate`]): with 0
    /// every ClientHello is dropped.
    pub max_unverified: usize,
    /// How long an unverified peer is kept (a span past the clock's range: for ever,
    /// evicted only by newcomers at [`Self::max_unverified`]). It is sent one
    /// HelloVerifyRequest per ClientHello, never one on a timer.
    #[serde(with = "crate::time::millis", rename = "unverifiedTimeoutMs")]
    pub unverified_timeout: Duration,
    /// Handshakes past the cookie exchange and not finished. At the bound, a peer that
    /// proves its address (echoes the cookie) is dropped before the ServerHello goes out.
    /// At least 1 ([`DtlsServerConfig::validate`]): with 0 every handshake is dropped.
    pub max_handshakes: usize,
    /// How long a handshake may take from its ServerHello; then it is dropped (a span past
    /// the clock's range: never; in effect at most ten years, `dimpl`'s limit).
    #[serde(with = "crate::time::millis", rename = "handshakeTimeoutMs")]
    pub handshake_timeout: Duration,
    /// Established sessions. At the bound, sessions idle longer than
    /// [`Self::session_idle_timeout`] are evicted, and so are those whose key was rotated
    /// or removed since they were made; if none is, the new session is refused
    /// (its peer's handshake completes on its side; no close_notify is sent, its first
    /// record is dropped and it handshakes again later). Existing devices are never pushed
    /// out by newcomers; an evicted session's peer is sent close_notify. At least 1
    /// ([`DtlsServerConfig::validate`]): with 0 every session is refused, a server no
    /// device can reach (to keep devices out, withdraw their keys instead).
    pub max_sessions: usize,
    /// Sessions per PSK identity (a device that re-handshakes from a new port after a NAT
    /// rebinding has two for a while). At the bound, the identity's least recently
    /// active session is closed to make room. At least 1
    /// ([`DtlsServerConfig::validate`]; a server built with 0 anyway takes it as 1).
    pub max_sessions_per_identity: usize,
    /// A session with no authenticated record for this long is evicted, with a
    /// close_notify to its peer (at the sweep, every quarter of this and at least once a
    /// minute, or when a full table makes room). Longer than the
    /// default LWM2M lifetime (24 h) so a device that only updates daily keeps its session.
    #[serde(with = "crate::time::millis", rename = "sessionIdleTimeoutMs")]
    pub session_idle_timeout: Duration,
    /// Largest datagram the DTLS layer produces (handshake messages are fragmented to fit;
    /// a value below 64 is taken as 64).
    pub mtu: usize,
}

/// Why [`DtlsServerConfig::validate`] refused a configuration. Names the setting by its
/// JSON member (`maxSessions`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum DtlsConfigError {
    /// A bound is 0 that must be at least 1: with it no device could ever connect.
    Zero(&'static str),
}

impl std::fmt::Display for DtlsConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DtlsConfigError::Zero(what) => write!(f, "{what} must be at least 1"),
        }
    }
}

impl std::error::Error for DtlsConfigError {}

impl DtlsServerConfig {
    /// Checks the bounds that would leave the server unreachable: `maxUnverified`,
    /// `maxHandshakes`, `maxSessions` and `maxSessionsPerIdentity` at least 1. With 0 the
    /// first three refuse every device (its ClientHello, its handshake, its session), a
    /// `coaps` listener nobody can use, which is what a mistyped or zeroed member most
    /// likely means. To keep devices out, withdraw their keys (or stop the listener). The durations need no
    /// check: one past the clock's range means for ever (see each).
    ///
    /// The hub's builder and `Hub::bind_dtls` (through `HubConfig::validate`), and
    /// `UdpServer::bind_secure`, call it and start nothing on a refusal;
    /// [`DtlsServer::new`] does not (it cannot fail): a sans-IO user calls it first.
    ///
    /// ```
    /// use twinhub::dtls::{DtlsConfigError, DtlsServerConfig};
    /// assert_eq!(DtlsServerConfig::default().validate(), Ok(()));
    /// let c = DtlsServerConfig { max_sessions: 0, ..DtlsServerConfig::default() };
    /// assert_eq!(c.validate(), Err(DtlsConfigError::Zero("maxSessions")));
    /// ```
    pub fn validate(&self) -> Result<(), DtlsConfigError> {
        let counts = [
            ("maxUnverified", self.max_unverified),
            ("maxHandshakes", self.max_handshakes),
            ("maxSessions", self.max_sessions),
            ("maxSessionsPerIdentity", self.max_sessions_per_identity),
        ];
        match counts.iter().find(|(_, n)| *n == 0) {
            Some((what, _)) => Err(DtlsConfigError::Zero(what)),
            None => Ok(()),
        }
    }
}

impl Default for DtlsServerConfig {
    fn default() -> Self {
        DtlsServerConfig {
            max_unverified: 1024,
            unverified_timeout: Duration::from_secs(5),
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(10),
            max_sessions: 100_000,
            max_sessions_per_identity: 2,
            session_idle_timeout: Duration::from_secs(25 * 3600),
            mtu: 1280,
        }
    }
}

/// What the server tells its driver (more kinds may come: match with a wildcard).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtlsEvent {
    /// A handshake completed: `peer` now speaks as `identity`.
    Connected {
        /// The peer's address.
        peer: SocketAddr,
        /// Who it proved to be.
        identity: PeerIdentity,
    },
    /// Authenticated, decrypted application data (a CoAP message).
    Plaintext {
        /// The peer's address.
        peer: SocketAddr,
        /// The session's identity.
        identity: PeerIdentity,
        /// The plaintext.
        data: Vec<u8>,
    },
    /// A handshake failed (counted in [`DtlsStats::handshake_failures`]): a wrong key
    /// for a known identity, an unknown identity, a protocol error, a handshake that
    /// timed out, or one that completed on a key rotated or removed meanwhile. The peer
    /// is not told (no alert is sent): a device with a wrong key waits out its own
    /// retransmissions, so this is where an operator sees the mistake.
    HandshakeFailed {
        /// The peer's address.
        peer: SocketAddr,
        /// The identity whose key the handshake was given, if the peer named one the
        /// key store holds (with the wrong key, most likely); `None` for an identity it
        /// does not hold, or a handshake that failed before naming one.
        identity: Option<Arc<str>>,
    },
    /// A session ended.
    Closed {
        /// The peer's address.
        peer: SocketAddr,
        /// The session's identity.
        identity: PeerIdentity,
        /// Why.
        reason: CloseReason,
    },
}

/// Why a session ended (and whether the peer was sent close_notify: see the module docs'
/// table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer sent close_notify (`dimpl` answers with its own).
    PeerClosed,
    /// The identity's key was rotated or removed (close_notify sent).
    CredentialsChanged,
    /// Idle longer than the idle timeout (close_notify sent).
    Idle,
    /// The same identity opened more sessions than allowed; this was the oldest
    /// (close_notify sent to its address).
    Superseded,
    /// A new handshake from the same address completed (close_notify sent under the old
    /// keys; the new session's client discards it).
    Replaced,
    /// A fatal DTLS error (no close_notify).
    Error,
    /// Closed by the application ([`DtlsServer::close_identity`]; close_notify sent).
    Local,
    /// The server is shutting down ([`DtlsServer::close_all`]; close_notify sent).
    Shutdown,
}

/// Counters and table sizes of a [`DtlsServer`].
///
/// Every session that ended is counted once, under its [`CloseReason`]: once a call into
/// the server has returned, `handshakes` equals `sessions` plus `evicted_idle`, `closed_key_withdrawn`, `closed_shutdown`,
/// `closed_local`, `closed_by_peer`, `superseded`, `replaced` and `session_errors`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DtlsStats {
    /// Handshakes completed.
    pub handshakes: u64,
    /// Handshakes that failed (bad key, unknown identity, protocol error) or timed out.
    pub handshake_failures: u64,
    /// Unverified peers dropped, the oldest first, to make room for a newer ClientHello
    /// at [`DtlsServerConfig::max_unverified`] (with a bound of 0: ClientHellos dropped).
    pub evicted_unverified: u64,
    /// Cookie-verified peers dropped because the handshake table was full.
    pub refused_handshakes: u64,
    /// Completed handshakes refused because the session table was full.
    pub refused_sessions: u64,
    /// Sessions evicted for idleness ([`CloseReason::Idle`]).
    pub evicted_idle: u64,
    /// Sessions closed because their key was rotated or removed
    /// ([`CloseReason::CredentialsChanged`]), whether met by the sweep after the change or
    /// at the session's own next datagram or send.
    pub closed_key_withdrawn: u64,
    /// Sessions closed by [`DtlsServer::close_all`] ([`CloseReason::Shutdown`]: the
    /// hub's UDP driver stopping).
    pub closed_shutdown: u64,
    /// Sessions closed by [`DtlsServer::close_identity`] ([`CloseReason::Local`]).
    pub closed_local: u64,
    /// Sessions their peer closed with close_notify ([`CloseReason::PeerClosed`]).
    pub closed_by_peer: u64,
    /// Sessions closed to keep an identity within
    /// [`DtlsServerConfig::max_sessions_per_identity`] ([`CloseReason::Superseded`]).
    pub superseded: u64,
    /// Sessions replaced by a new handshake from the same address
    /// ([`CloseReason::Replaced`]).
    pub replaced: u64,
    /// Sessions ended by a fatal DTLS error ([`CloseReason::Error`]).
    pub session_errors: u64,
    /// Datagrams from addresses with no session that were not a ClientHello.
    pub dropped_no_session: u64,
    /// Peers in the unverified table now.
    pub unverified: u64,
    /// Handshakes in progress now.
    pub in_handshake: u64,
    /// Sessions now.
    pub sessions: u64,
}

#[derive(Default)]
struct Counters {
    handshakes: AtomicU64,
    handshake_failures: AtomicU64,
    evicted_unverified: AtomicU64,
    refused_handshakes: AtomicU64,
    refused_sessions: AtomicU64,
    evicted_idle: AtomicU64,
    closed_key_withdrawn: AtomicU64,
    closed_shutdown: AtomicU64,
    closed_local: AtomicU64,
    closed_by_peer: AtomicU64,
    superseded: AtomicU64,
    replaced: AtomicU64,
    session_errors: AtomicU64,
    dropped_no_session: AtomicU64,
    unverified: AtomicU64,
    in_handshake: AtomicU64,
    sessions: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Reads a [`DtlsServer`]'s counters from any thread.
#[derive(Clone)]
pub struct DtlsStatsHandle(Arc<Counters>);

impl std::fmt::Debug for DtlsStatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl DtlsStatsHandle {
    /// The counters now.
    pub fn snapshot(&self) -> DtlsStats {
        let c = &self.0;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DtlsStats {
            handshakes: l(&c.handshakes),
            handshake_failures: l(&c.handshake_failures),
            evicted_unverified: l(&c.evicted_unverified),
            refused_handshakes: l(&c.refused_handshakes),
            refused_sessions: l(&c.refused_sessions),
            evicted_idle: l(&c.evicted_idle),
            closed_key_withdrawn: l(&c.closed_key_withdrawn),
            closed_shutdown: l(&c.closed_shutdown),
            closed_local: l(&c.closed_local),
            closed_by_peer: l(&c.closed_by_peer),
            superseded: l(&c.superseded),
            replaced: l(&c.replaced),
            session_errors: l(&c.session_errors),
            dropped_no_session: l(&c.dropped_no_session),
            unverified: l(&c.unverified),
            in_handshake: l(&c.in_handshake),
            sessions: l(&c.sessions),
        }
    }
}

/// Resolves identities in the store and remembers the last one it resolved: `dimpl` does
/// not report the client's identity, and it resolves synchronously inside
/// `handle_packet`, so the driver reads it right after.
pub(crate) struct RecordingResolver {
    store: PskStore,
    /// The identity resolved last and the revision of the key handed out.
    last: Mutex<Option<(Arc<str>, u64)>>,
}

impl PskResolver for RecordingResolver {
    fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let identity = std::str::from_utf8(identity).ok()?;
        // The store's own copy of the identity: sessions share it, none allocates one.
        let (identity, entry) = self.store.keyed_entry(identity)?;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((identity, entry.revision));
        Some(entry.key.expose().to_vec())
    }
}

impl RecordingResolver {
    fn take(&self) -> Option<(Arc<str>, u64)> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Unverified,
    Handshaking,
}

struct Pending {
    dtls: Dtls,
    phase: Phase,
    since: Instant,
    /// The state machine's clock while unverified: the last instant it was given, which
    /// moves only when a new flight is about to go out (see `feed_pending`).
    clock: Instant,
    /// The identity the handshake resolved, and the revision of the key it got.
    identity: Option<(Arc<str>, u64)>,
    timer: Option<Instant>,
}

impl Pending {
    /// When the handshake is given up; a limit past the clock's range is never.
    fn expires(&self, config: &DtlsServerConfig) -> Option<Instant> {
        self.since.checked_add(match self.phase {
            Phase::Unverified => config.unverified_timeout,
            Phase::Handshaking => config.handshake_timeout,
        })
    }
}

/// The earlier of two optional instants (`None`: never).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An established session. Kept boxed in the table (see `DtlsServer::sessions`).
struct Session {
    dtls: Dtls,
    identity: PeerIdentity,
    /// The key's entry is still in the store (see `PskEntry::live`).
    key_live: Arc<AtomicBool>,
    last: Instant,
}

/// Whether the session's key is still the one it was made with: one atomic load (the
/// store clears the flag under its write lock when the key is replaced or removed).
fn key_current(s: &Session) -> bool {
    s.key_live.load(Ordering::Acquire)
}

/// What one drain of a `dimpl` instance produced.
#[derive(Default)]
struct Drained {
    connected: bool,
    closed: bool,
    server_hello: bool,
    timer: Option<Instant>,
    packets: Vec<Vec<u8>>,
    data: Vec<Vec<u8>>,
}

/// Whether the state machine holds a record to send, without taking it: asked for output
/// into an empty buffer, `dimpl` answers `BufferTooSmall` and leaves the record queued and
/// its flight's timer unarmed (only a polled record arms it). Only for a peer that has not
/// passed the cookie: there is no application data, close_notify or local event to take
/// then (those would be consumed here).
fn has_queued_packet(dtls: &mut Dtls) -> bool {
    matches!(dtls.poll_output(&mut []), Output::BufferTooSmall { .. })
}

impl Drained {
    /// Adds what a later drain of the same state machine produced.
    fn absorb(&mut self, later: Drained) {
        self.connected |= later.connected;
        self.closed |= later.closed;
        self.server_hello |= later.server_hello;
        self.timer = later.timer;
        self.packets.extend(later.packets);
        self.data.extend(later.data);
    }
}

/// Where a session's output goes: straight into the server's queues, with no
/// intermediate collection (the per-record path allocates only the datagram and the
/// plaintext it hands out).
struct SessionSink<'a> {
    peer: SocketAddr,
    /// Plaintext is delivered under this identity; `None` drops it (what `send` and
    /// `close_session` always did with plaintext met on their way).
    identity: Option<&'a PeerIdentity>,
    transmits: &'a mut VecDeque<(SocketAddr, Vec<u8>)>,
    events: &'a mut VecDeque<DtlsEvent>,
}

/// What a session's drains reported besides the records and plaintext they queued.
#[derive(Default, Clone, Copy)]
struct SessionOut {
    /// Plaintext came out (delivered or dropped).
    data: bool,
    /// The peer's close_notify came out.
    closed: bool,
}

/// Gives a session's state machine the time, takes what that produced (a due
/// retransmission), then gives it `input` and takes what that produced, all into `sink`.
/// `dimpl` wants its output polled after each step: a datagram handled right after a
/// retransmission, with nothing polled in between, was not answered (the handshake
/// stalled until the next timeout). On an error nothing of the step stays queued.
fn step_session(
    dtls: &mut Dtls,
    buf: &mut Vec<u8>,
    now: Instant,
    sink: &mut SessionSink<'_>,
    input: impl FnOnce(&mut Dtls) -> Result<(), dimpl::Error>,
) -> Result<SessionOut, dimpl::Error> {
    let (transmits, events) = (sink.transmits.len(), sink.events.len());
    let result = dtls.handle_timeout(now).and_then(|()| {
        let first = drain_session(dtls, buf, sink);
        input(dtls)?;
        let second = drain_session(dtls, buf, sink);
        Ok(SessionOut {
            data: first.data || second.data,
            closed: first.closed || second.closed,
        })
    });
    if result.is_err() {
        sink.transmits.truncate(transmits);
        sink.events.truncate(events);
    }
    result
}

/// Takes a session's output into `sink` until `dimpl` reports its next timeout.
fn drain_session(dtls: &mut Dtls, buf: &mut Vec<u8>, sink: &mut SessionSink<'_>) -> SessionOut {
    let mut out = SessionOut::default();
    // As in `drain`: `Timeout` is always last; the bound guards against a crate bug.
    for _ in 0..4096 {
        match dtls.poll_output(buf) {
            Output::Packet(p) => sink.transmits.push_back((sink.peer, p.to_vec())),
            Output::BufferTooSmall { needed } => buf.resize(needed, 0),
            Output::Timeout(_) => break,
            Output::ApplicationData(data) => {
                out.data = true;
                if let Some(identity) = sink.identity {
                    sink.events.push_back(DtlsEvent::Plaintext {
                        peer: sink.peer,
                        identity: identity.clone(),
                        data: data.to_vec(),
                    });
                }
            }
            Output::CloseNotify => out.closed = true,
            _ => {}
        }
    }
    out
}

fn drain(dtls: &mut Dtls, buf: &mut Vec<u8>) -> Drained {
    let mut d = Drained::default();
    // Each call yields one output; `Timeout` is always last. The bound only guards
    // against a bug in the crate looping forever.
    for _ in 0..4096 {
        match dtls.poll_output(buf) {
            Output::Packet(p) => {
                d.server_hello |= record::has_server_hello(p);
                d.packets.push(p.to_vec());
            }
            Output::BufferTooSmall { needed } => buf.resize(needed, 0),
            Output::Timeout(t) => {
                d.timer = Some(t);
                break;
            }
            Output::Connected => d.connected = true,
            Output::ApplicationData(data) => d.data.push(data.to_vec()),
            Output::CloseNotify => d.closed = true,
            _ => {}
        }
    }
    d
}

/// The DTLS 1.2 PSK server (sans-IO): datagrams in, plaintext with the peer's
/// authenticated identity out, records out.
///
/// Driving order: [`DtlsServer::handle_datagram`] for every received datagram,
/// [`DtlsServer::send`] for every plaintext to a peer, then send everything
/// [`DtlsServer::poll_transmit`] yields, drain [`DtlsServer::poll_event`], and call
/// [`DtlsServer::handle_timeout`] at [`DtlsServer::poll_timeout`].
///
/// **Withdrawn keys.** A key rotated or removed in the server's [`PskStore`] (from any
/// thread, through a clone of it) is met at the server's next [`DtlsServer::handle_datagram`]
/// (from any peer), [`DtlsServer::send`] or [`DtlsServer::handle_timeout`]: one comparison
/// of the store's withdrawal count, and one pass over the session table when it moved.
/// The key's sessions are then closed, each with a close_notify
/// ([`CloseReason::CredentialsChanged`], counted in [`DtlsStats::closed_key_withdrawn`]).
/// Their records are refused from the change on either way, so a session closed late
/// only holds its place in the table and leaves its device unaware for longer. A driver
/// that sleeps until [`DtlsServer::poll_timeout`] between datagrams meets a change on an
/// otherwise quiet server at the next idle sweep (every quarter of
/// [`DtlsServerConfig::session_idle_timeout`], at most a minute): `poll_timeout` does
/// not move for a change made elsewhere. To close such sessions sooner, call
/// `handle_timeout` right after changing keys on the driver's thread, or wake the
/// driver at least as often as the delay you accept (the hub's driver wakes every
/// quarter second).
///
/// Only `TLS_PSK_WITH_AES_128_CCM_8` is offered (RFC 7925). A datagram from an address
/// without a session creates state only if it is a ClientHello, and then only in the
/// bounded unverified table (see [`DtlsServerConfig`]). Replayed records are dropped by
/// the per-session replay window of `dimpl`.
///
/// ```
/// use twinhub::dtls::{DtlsServer, DtlsServerConfig, PskStore};
/// use std::time::Instant;
/// let mut server = DtlsServer::new(DtlsServerConfig::default(), PskStore::new());
/// // Not a ClientHello: dropped, no state kept.
/// server.handle_datagram(Instant::now(), "127.0.0.1:5684".parse().unwrap(), b"hello");
/// assert_eq!(server.stats().unverified, 0);
/// assert!(server.poll_transmit().is_none());
/// ```
pub struct DtlsServer {
    config: DtlsServerConfig,
    store: PskStore,
    resolver: Arc<RecordingResolver>,
    dimpl: Arc<dimpl::Config>,
    pending: HashMap<SocketAddr, Pending>,
    /// Unverified peers oldest first, as (address, since): who goes when the table is
    /// full. Entries whose peer moved on (verified, dropped, back with a new
    /// ClientHello) are skipped when met, and swept once the queue holds more than
    /// twice the table.
    unverified_order: VecDeque<(SocketAddr, Instant)>,
    in_handshake: usize,
    /// Boxed: a `dimpl::Dtls` is 3,360 bytes (`dimpl` 0.9 sizes it for its largest,
    /// DTLS 1.3, state machine), and a table of them in place holds that much for every
    /// free slot too (a hash table is 1/8 to 9/16 empty): about 2.2 KB more per session at
    /// 10,000 sessions than boxed, where a slot is 40 bytes.
    sessions: HashMap<SocketAddr, Box<Session>>,
    /// Each identity's session addresses (usually one: a list is made for one).
    by_identity: HashMap<Arc<str>, Vec<SocketAddr>>,
    next_pending_check: Option<Instant>,
    next_idle_sweep: Option<Instant>,
    /// The store's count of withdrawn keys when its sessions were last checked against it.
    seen_withdrawals: u64,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<DtlsEvent>,
    counters: Arc<Counters>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for DtlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsServer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// [`DtlsServer::send`] found no session for the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSession(pub SocketAddr);

impl std::fmt::Display for NoSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no dtls session with {}", self.0)
    }
}

impl std::error::Error for NoSession {}

impl DtlsServer {
    /// A server resolving identities in `store`.
    pub fn new(config: DtlsServerConfig, store: PskStore) -> Self {
        let resolver = Arc::new(RecordingResolver {
            store: store.clone(),
            last: Mutex::new(None),
        });
        let dimpl = psk_config(
            dimpl::Config::builder().with_psk_server(None, resolver.clone()),
            config.mtu,
            // dimpl's clock runs from the first ClientHello, ours from the ServerHello:
            // it gets both spans, so the documented limit (ours) is the one that applies.
            config
                .handshake_timeout
                .saturating_add(config.unverified_timeout),
        );
        let seen_withdrawals = store.withdrawals();
        DtlsServer {
            config,
            store,
            resolver,
            dimpl,
            pending: HashMap::new(),
            unverified_order: VecDeque::new(),
            in_handshake: 0,
            sessions: HashMap::new(),
            by_identity: HashMap::new(),
            next_pending_check: None,
            next_idle_sweep: None,
            seen_withdrawals,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Arc::default(),
            buf: vec![0; 2048],
        }
    }

    /// The store identities resolve in.
    pub fn store(&self) -> &PskStore {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &DtlsServerConfig {
        &self.config
    }

    /// The counters now.
    pub fn stats(&self) -> DtlsStats {
        self.stats_handle().snapshot()
    }

    /// A handle that reads the counters from another thread.
    pub fn stats_handle(&self) -> DtlsStatsHandle {
        DtlsStatsHandle(self.counters.clone())
    }

    /// The identity of the session at `peer`, if one is established.
    pub fn session_identity(&self, peer: SocketAddr) -> Option<&PeerIdentity> {
        self.sessions.get(&peer).map(|s| &s.identity)
    }

    fn sync_gauges(&self) {
        let c = &self.counters;
        let unverified = self.pending.len() - self.in_handshake;
        c.unverified.store(unverified as u64, Ordering::Relaxed);
        c.in_handshake
            .store(self.in_handshake as u64, Ordering::Relaxed);
        c.sessions
            .store(self.sessions.len() as u64, Ordering::Relaxed);
    }

    // ------------------------------------------------------------------ datagrams in

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        self.close_withdrawn_if_any();
        if record::is_session_traffic(bytes) && self.sessions.contains_key(&peer) {
            // The session's records go to it, also while a handshake from its address is
            // in progress: anyone can send a ClientHello from that address, and it must
            // not divert the session's traffic (RFC 6347 §4.2.8).
            self.feed_session(now, peer, bytes);
        } else if self.pending.contains_key(&peer) {
            self.feed_pending(now, peer, bytes);
        } else if record::is_first_client_hello(bytes) {
            // A new handshake, also from an address that has a session (the device lost
            // its session, e.g. it rebooted): the old session stays until this completes.
            if !self.make_room_for_unverified(now) {
                bump(&self.counters.evicted_unverified);
                return;
            }
            self.unverified_order.push_back((peer, now));
            let dtls = Dtls::new_12_psk(self.dimpl.clone(), now);
            self.pending.insert(
                peer,
                Pending {
                    dtls,
                    phase: Phase::Unverified,
                    since: now,
                    clock: now,
                    identity: None,
                    timer: None,
                },
            );
            self.feed_pending(now, peer, bytes);
        } else if self.sessions.contains_key(&peer) {
            self.feed_session(now, peer, bytes);
        } else {
            bump(&self.counters.dropped_no_session);
        }
        self.sync_gauges();
    }

    /// Makes room in the unverified table for one more peer: drops the oldest unverified
    /// peers (expired ones uncounted) while it is full. False only with a bound of 0.
    fn make_room_for_unverified(&mut self, now: Instant) -> bool {
        while self.pending.len() - self.in_handshake >= self.config.max_unverified {
            let Some((peer, since)) = self.unverified_order.pop_front() else {
                return false;
            };
            let expired = match self.pending.get(&peer) {
                Some(p) if p.phase == Phase::Unverified && p.since == since => {
                    p.expires(&self.config).is_some_and(|e| e <= now)
                }
                _ => continue,
            };
            self.drop_pending(peer);
            if !expired {
                bump(&self.counters.evicted_unverified);
            }
        }
        if self.unverified_order.len() > 2 * self.config.max_unverified + 64 {
            let pending = &self.pending;
            self.unverified_order.retain(|(peer, since)| {
                pending
                    .get(peer)
                    .is_some_and(|p| p.phase == Phase::Unverified && p.since == *since)
            });
        }
        true
    }

    #[cfg(test)]
    pub(super) fn unverified_order_len(&self) -> usize {
        self.unverified_order.len()
    }

    /// A pending peer's handshake failed: dropped, counted and reported.
    fn handshake_failed(&mut self, peer: SocketAddr) {
        if let Some(p) = self.drop_pending(peer) {
            bump(&self.counters.handshake_failures);
            let identity = p.identity.map(|(identity, _)| identity);
            self.events
                .push_back(DtlsEvent::HandshakeFailed { peer, identity });
        }
    }

    fn drop_pending(&mut self, peer: SocketAddr) -> Option<Pending> {
        let p = self.pending.remove(&peer)?;
        if p.phase == Phase::Handshaking {
            self.in_handshake -= 1;
        }
        Some(p)
    }

    fn feed_pending(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let Some(p) = self.pending.get_mut(&peer) else {
            return;
        };
        self.resolver.take();
        // An unverified peer's timers are not driven (see `after_pending`): its clock
        // stays where its last flight went out, where nothing is due (driving it on would
        // resend the HelloVerifyRequest, and a resent one has dimpl expect another
        // ClientHello than the cookie's). dimpl needs the call: it draws the server random
        // there.
        let unverified = p.phase == Phase::Unverified;
        let clock = if unverified { p.clock } else { now };
        let mut d = Drained::default();
        let mut result = p.dtls.handle_timeout(clock).and_then(|()| {
            d = drain(&mut p.dtls, &mut self.buf);
            p.dtls.handle_packet(bytes)
        });
        if let Some(identity) = self.resolver.take() {
            p.identity = Some(identity);
        }
        if result.is_ok() && unverified && has_queued_packet(&mut p.dtls) {
            // The datagram began a flight (the ServerHello flight past the cookie, or a
            // HelloVerifyRequest again): its retransmission timer is armed only when its
            // first record is polled, at the clock of that moment. The clock catches up
            // first, so the timer runs from now, and nothing fires on the way (the
            // earlier flight's timer ended when this one began). Caught up after the
            // polling instead, a cookie round trip longer than the first timeout sent the
            // flight twice at once and the next copy only two timeouts later, and a
            // shorter one retransmitted it early, as if sent at the first ClientHello.
            result = p.dtls.handle_timeout(now);
            p.clock = now;
        }
        if result.is_err() {
            self.handshake_failed(peer);
            return;
        }
        d.absorb(drain(&mut p.dtls, &mut self.buf));
        self.after_pending(now, peer, d);
    }

    /// Applies what a pending peer's state machine produced: the cookie-verified step,
    /// packets, completion.
    fn after_pending(&mut self, now: Instant, peer: SocketAddr, d: Drained) {
        let Some(p) = self.pending.get_mut(&peer) else {
            return;
        };
        if d.server_hello && p.phase == Phase::Unverified {
            if self.in_handshake >= self.config.max_handshakes {
                self.drop_pending(peer);
                bump(&self.counters.refused_handshakes);
                return;
            }
            p.phase = Phase::Handshaking;
            p.since = now;
            self.in_handshake += 1;
        }
        // An unverified peer gets one HelloVerifyRequest a ClientHello and nothing on a
        // timer: the cookie exchange answers, it does not retransmit (RFC 6347 §4.2.1; the
        // client's retransmitted ClientHello recovers a lost one). Driving dimpl's timer
        // sent a spoofed address three HelloVerifyRequests for one ClientHello.
        p.timer = match p.phase {
            Phase::Unverified => None,
            Phase::Handshaking => d.timer,
        };
        let due = earliest(p.timer, p.expires(&self.config));
        if let Some(due) = due {
            self.next_pending_check = Some(self.next_pending_check.map_or(due, |n| n.min(due)));
        }
        for packet in d.packets {
            self.transmits.push_back((peer, packet));
        }
        if d.connected {
            self.promote(now, peer, d.data);
        } else if d.closed {
            self.handshake_failed(peer);
        }
    }

    /// A handshake completed: the pending peer becomes a session.
    fn promote(&mut self, now: Instant, peer: SocketAddr, data: Vec<Vec<u8>>) {
        let Some(p) = self.drop_pending(peer) else {
            return;
        };
        let entry = p.identity.as_ref().and_then(|(i, revision)| {
            self.store
                .entry(i)
                .filter(|e| e.revision == *revision)
                .map(|e| (i.clone(), e))
        });
        let Some((psk_identity, entry)) = entry else {
            // Completed with an identity no longer in the store (removed meanwhile), or
            // with a key rotated since it was resolved: no session on a stale key.
            bump(&self.counters.handshake_failures);
            let identity = p.identity.map(|(identity, _)| identity);
            self.events
                .push_back(DtlsEvent::HandshakeFailed { peer, identity });
            return;
        };
        if let Some(old) = self.sessions.contains_key(&peer).then_some(peer) {
            self.close_session(old, CloseReason::Replaced);
        }
        // The identity's own oldest sessions go first: a device handshaking again (its
        // address changed) is not refused for a full table its old session helps fill.
        let cap = self.config.max_sessions_per_identity.max(1);
        while self.by_identity.get(&psk_identity).map_or(0, Vec::len) >= cap {
            let oldest = self.by_identity[&psk_identity]
                .iter()
                .copied()
                .min_by_key(|a| self.sessions.get(a).map(|s| s.last));
            match oldest {
                Some(a) => self.close_session(a, CloseReason::Superseded),
                None => break,
            }
        }
        if self.sessions.len() >= self.config.max_sessions {
            self.sweep_idle(now);
        }
        if self.sessions.len() >= self.config.max_sessions {
            bump(&self.counters.refused_sessions);
            return;
        }
        let identity = PeerIdentity {
            psk_identity: psk_identity.clone(),
            device: entry.device,
        };
        self.sessions.insert(
            peer,
            Box::new(Session {
                dtls: p.dtls,
                identity: identity.clone(),
                key_live: entry.live,
                last: now,
            }),
        );
        // A list for one address (32 bytes; `push` would make room for four): an identity
        // has a second session only for a while (a NAT rebinding).
        self.by_identity
            .entry(psk_identity)
            .or_insert_with(|| Vec::with_capacity(1))
            .push(peer);
        if self.next_idle_sweep.is_none() {
            self.next_idle_sweep = Some(now + self.idle_sweep_interval());
        }
        bump(&self.counters.handshakes);
        self.events.push_back(DtlsEvent::Connected {
            peer,
            identity: identity.clone(),
        });
        for data in data {
            self.events.push_back(DtlsEvent::Plaintext {
                peer,
                identity: identity.clone(),
                data,
            });
        }
    }

    fn idle_sweep_interval(&self) -> Duration {
        (self.config.session_idle_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(60))
    }

    /// Whether the session's key is still the one it was made with.
    fn session_current(&self, s: &Session) -> bool {
        key_current(s)
    }

    fn feed_session(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        if !key_current(s) {
            self.close_session(peer, CloseReason::CredentialsChanged);
            return;
        }
        let mut sink = SessionSink {
            peer,
            identity: Some(&s.identity),
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        let Ok(d) = step_session(&mut s.dtls, &mut self.buf, now, &mut sink, |dtls| {
            dtls.handle_packet(bytes)
        }) else {
            self.remove_session(peer, CloseReason::Error);
            return;
        };
        if d.data {
            s.last = now;
        }
        if d.closed {
            self.remove_session(peer, CloseReason::PeerClosed);
        }
    }

    // ------------------------------------------------------------------ plaintext out

    /// Encrypts `data` for the session at `to`. Fails when there is no session there (or
    /// its key was rotated, which closes it): nothing goes out unencrypted.
    pub fn send(&mut self, now: Instant, to: SocketAddr, data: &[u8]) -> Result<(), NoSession> {
        self.close_withdrawn_if_any();
        let sent = self.send_inner(now, to, data);
        self.sync_gauges();
        sent
    }

    fn send_inner(&mut self, now: Instant, to: SocketAddr, data: &[u8]) -> Result<(), NoSession> {
        let Some(s) = self.sessions.get_mut(&to) else {
            return Err(NoSession(to));
        };
        if !key_current(s) {
            self.close_session(to, CloseReason::CredentialsChanged);
            return Err(NoSession(to));
        }
        let mut sink = SessionSink {
            peer: to,
            identity: None,
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        let sent = step_session(&mut s.dtls, &mut self.buf, now, &mut sink, |dtls| {
            dtls.send_application_data(data).map(drop)
        });
        if sent.is_err() {
            self.remove_session(to, CloseReason::Error);
            return Err(NoSession(to));
        }
        Ok(())
    }

    /// Closes every session of an identity (sending close_notify); returns how many.
    pub fn close_identity(&mut self, identity: &str) -> usize {
        let addrs = self.by_identity.get(identity).cloned().unwrap_or_default();
        for a in &addrs {
            self.close_session(*a, CloseReason::Local);
        }
        self.sync_gauges();
        addrs.len()
    }

    /// Closes every session, each with one close_notify (queued for
    /// [`DtlsServer::poll_transmit`]: at most one datagram per session, so at most
    /// [`DtlsServerConfig::max_sessions`]), and drops the handshakes in progress and the
    /// unverified peers without a word (they never were sessions). Returns how many
    /// sessions were closed. For a server about to stop: the hub's UDP driver calls it
    /// when it stops (the hub stopped or dropped), sends what it queued, and exits, so
    /// devices learn at once instead of keeping a dead session until their requests time
    /// out. The server stays usable: new handshakes are taken as before.
    pub fn close_all(&mut self) -> usize {
        let addrs: Vec<SocketAddr> = self.sessions.keys().copied().collect();
        for a in &addrs {
            self.close_session(*a, CloseReason::Shutdown);
        }
        self.pending.clear();
        self.unverified_order.clear();
        self.in_handshake = 0;
        self.next_pending_check = None;
        self.next_idle_sweep = None;
        self.sync_gauges();
        addrs.len()
    }

    /// Closes a session politely (close_notify goes out) and forgets it.
    fn close_session(&mut self, peer: SocketAddr, reason: CloseReason) {
        if let Some(s) = self.sessions.get_mut(&peer) {
            if s.dtls.close().is_ok() {
                let mut sink = SessionSink {
                    peer,
                    identity: None,
                    transmits: &mut self.transmits,
                    events: &mut self.events,
                };
                drain_session(&mut s.dtls, &mut self.buf, &mut sink);
            }
            self.remove_session(peer, reason);
        }
    }

    fn remove_session(&mut self, peer: SocketAddr, reason: CloseReason) {
        let Some(s) = self.sessions.remove(&peer) else {
            return;
        };
        if let Some(list) = self.by_identity.get_mut(&s.identity.psk_identity) {
            list.retain(|a| *a != peer);
            if list.is_empty() {
                self.by_identity.remove(&s.identity.psk_identity);
            }
        }
        let c = &self.counters;
        bump(match reason {
            CloseReason::Idle => &c.evicted_idle,
            CloseReason::CredentialsChanged => &c.closed_key_withdrawn,
            CloseReason::Shutdown => &c.closed_shutdown,
            CloseReason::Local => &c.closed_local,
            CloseReason::PeerClosed => &c.closed_by_peer,
            CloseReason::Superseded => &c.superseded,
            CloseReason::Replaced => &c.replaced,
            CloseReason::Error => &c.session_errors,
        });
        self.events.push_back(DtlsEvent::Closed {
            peer,
            identity: s.identity,
            reason,
        });
    }

    // ------------------------------------------------------------------ timers

    /// Runs retransmissions and handshake timeouts, evicts idle sessions, and closes the
    /// sessions whose key was rotated or removed since the server last looked (with a
    /// close_notify; their records are refused from the change on either way). Call it
    /// after changing credentials for their sessions to close at once (see "Withdrawn
    /// keys" on [`DtlsServer`]); the hub's driver calls it at least every quarter second.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.close_withdrawn_if_any();
        if self.next_pending_check.is_some_and(|t| t <= now) {
            self.expire_pending(now);
        }
        if self.next_idle_sweep.is_some_and(|t| t <= now) {
            self.sweep_idle(now);
            self.next_idle_sweep =
                (!self.sessions.is_empty()).then(|| now + self.idle_sweep_interval());
        }
        self.sync_gauges();
    }

    /// Drops expired pending peers, runs due retransmissions, recomputes the next check.
    fn expire_pending(&mut self, now: Instant) {
        let expired: Vec<SocketAddr> = self
            .pending
            .iter()
            .filter(|(_, p)| p.expires(&self.config).is_some_and(|e| e <= now))
            .map(|(a, _)| *a)
            .collect();
        for a in expired {
            if self
                .pending
                .get(&a)
                .is_some_and(|p| p.phase == Phase::Handshaking)
            {
                self.handshake_failed(a);
            } else {
                self.drop_pending(a);
            }
        }
        let due: Vec<SocketAddr> = self
            .pending
            .iter()
            .filter(|(_, p)| p.timer.is_some_and(|t| t <= now))
            .map(|(a, _)| *a)
            .collect();
        for a in due {
            let Some(p) = self.pending.get_mut(&a) else {
                continue;
            };
            if p.dtls.handle_timeout(now).is_err() {
                self.handshake_failed(a);
                continue;
            }
            let d = drain(&mut p.dtls, &mut self.buf);
            self.after_pending(now, a, d);
        }
        self.next_pending_check = self
            .pending
            .values()
            .filter_map(|p| earliest(p.timer, p.expires(&self.config)))
            .min();
    }

    /// Closes the sessions of keys withdrawn since the last look: one comparison of the
    /// store's withdrawal count, and a pass over the session table only when it moved
    /// (many changes between two calls cost one pass).
    fn close_withdrawn_if_any(&mut self) {
        let withdrawals = self.store.withdrawals();
        if withdrawals != self.seen_withdrawals {
            // Read before the sweep: a key withdrawn during it is met at the next call.
            self.seen_withdrawals = withdrawals;
            self.close_withdrawn();
        }
    }

    /// Closes (with a close_notify) the sessions whose key was rotated or removed.
    fn close_withdrawn(&mut self) {
        let withdrawn: Vec<SocketAddr> = self
            .sessions
            .iter()
            .filter(|(_, s)| !self.session_current(s))
            .map(|(a, _)| *a)
            .collect();
        for a in withdrawn {
            self.close_session(a, CloseReason::CredentialsChanged);
        }
    }

    /// Closes the sessions idle past the timeout, and those whose key was rotated or
    /// removed since (closed at their next datagram otherwise, they would hold places in
    /// the table until then), each with a close_notify to its peer.
    fn sweep_idle(&mut self, now: Instant) {
        let idle = self.config.session_idle_timeout;
        let old: Vec<(SocketAddr, CloseReason)> = self
            .sessions
            .iter()
            .filter_map(|(a, s)| {
                if !self.session_current(s) {
                    Some((*a, CloseReason::CredentialsChanged))
                } else {
                    (now.saturating_duration_since(s.last) >= idle)
                        .then_some((*a, CloseReason::Idle))
                }
            })
            .collect();
        for (a, reason) in old {
            self.close_session(a, reason);
        }
    }

    // ------------------------------------------------------------------ outputs

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// When [`DtlsServer::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_pending_check, self.next_idle_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a value of `table` takes in each of its slots, free ones included.
    fn slot_size<V>(_: &HashMap<SocketAddr, V>) -> usize {
        std::mem::size_of::<(SocketAddr, V)>()
    }

    #[test]
    fn a_session_table_slot_holds_no_state_machine() {
        let server = DtlsServer::new(DtlsServerConfig::default(), PskStore::new());
        // A `dimpl::Dtls` in place made every slot, used or free, 3,456 bytes.
        assert!(std::mem::size_of::<Dtls>() > 1024);
        assert!(
            slot_size(&server.sessions) <= 64,
            "{}",
            slot_size(&server.sessions)
        );
    }
}
