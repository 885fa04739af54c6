//! The device side: one `dimpl` client state machine toward one server.

use super::psk::PskCredentials;
use super::psk_config;
use dimpl::{Dtls, Output, PskResolver};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Plaintexts queued while the handshake runs; at the bound the oldest is dropped (CoAP
/// retransmits what matters).
pub const MAX_QUEUED_PLAINTEXT: usize = 16;

struct OwnKey(PskCredentials);

impl PskResolver for OwnKey {
    fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
        (identity == self.0.identity().as_bytes()).then(|| self.0.key().expose().to_vec())
    }
}

/// A DTLS 1.2 PSK client (sans-IO) for a device: plaintext in, records out, and back.
///
/// Driving order: [`DtlsClient::send`] plaintext (queued until the handshake completes;
/// the first send starts it), feed every datagram from the server to
/// [`DtlsClient::handle_datagram`], send what [`DtlsClient::poll_transmit`] yields, read
/// [`DtlsClient::poll_plaintext`], and call [`DtlsClient::handle_timeout`] at
/// [`DtlsClient::poll_timeout`]. [`DtlsClient::restart`] throws the session away and
/// handshakes again (after the server lost it, or after a NAT rebinding);
/// [`DtlsClient::close`] ends it politely (close_notify). A close_notify from the server
/// (it evicted the session, or the key changed) ends the session too: the next send
/// handshakes again.
///
/// ```
/// use twinhub::dtls::{DtlsClient, PskCredentials, PskKey};
/// use std::time::Instant;
/// let creds = PskCredentials::new("dev-1", PskKey::new(vec![1; 16])).unwrap();
/// let mut client = DtlsClient::new(Instant::now(), creds);
/// client.send(Instant::now(), b"coap bytes");
/// let hello = client.poll_transmit().unwrap(); // the ClientHello
/// assert_eq!(hello[0], 22); // a handshake record
/// assert!(!client.is_connected());
/// ```
pub struct DtlsClient {
    config: Arc<dimpl::Config>,
    dtls: Dtls,
    started: bool,
    connected: bool,
    failed: bool,
    queued: VecDeque<Vec<u8>>,
    transmits: VecDeque<Vec<u8>>,
    received: VecDeque<Vec<u8>>,
    timer: Option<Instant>,
    handshakes: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for DtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsClient")
            .field("connected", &self.connected)
            .field("handshakes", &self.handshakes)
            .finish_non_exhaustive()
    }
}

impl DtlsClient {
    /// A client that will present these credentials.
    pub fn new(now: Instant, credentials: PskCredentials) -> Self {
        let identity = credentials.identity().as_bytes().to_vec();
        let config = psk_config(
            dimpl::Config::builder().with_psk_client(identity, Arc::new(OwnKey(credentials))),
            1280,
            Duration::from_secs(30),
        );
        let dtls = Self::fresh(&config, now);
        DtlsClient {
            config,
            dtls,
            started: false,
            connected: false,
            failed: false,
            queued: VecDeque::new(),
            transmits: VecDeque::new(),
            received: VecDeque::new(),
            timer: None,
            handshakes: 0,
            buf: vec![0; 2048],
        }
    }

    fn fresh(config: &Arc<dimpl::Config>, now: Instant) -> Dtls {
        let mut dtls = Dtls::new_12_psk(config.clone(), now);
        dtls.set_active(true);
        dtls
    }

    /// Whether the handshake has completed and the session is usable.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Handshakes completed since creation.
    pub fn handshakes(&self) -> u64 {
        self.handshakes
    }

    /// Whether the last handshake failed (wrong key, no answer): the next
    /// [`DtlsClient::send`] starts a new one.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Forgets the session and starts a new handshake at the next send (or now, if
    /// plaintext is queued).
    pub fn restart(&mut self, now: Instant) {
        self.dtls = Self::fresh(&self.config, now);
        self.started = false;
        self.connected = false;
        self.failed = false;
        self.timer = None;
        if !self.queued.is_empty() {
            self.start(now);
        }
    }

    /// Ends the session: when it is established, a close_notify alert is queued for the
    /// server ([`DtlsClient::poll_transmit`]; sent once, not retransmitted: RFC 6347
    /// §4.2.7); a handshake in progress is abandoned without one. Plaintext still queued
    /// for the handshake is dropped. Afterwards the client is as new: the next
    /// [`DtlsClient::send`] handshakes again. Returns whether a close_notify was queued.
    ///
    /// The server drops its session at once (the hub's answers to this session's address
    /// stop); what else ends is the server's business: the hub keeps the device's LWM2M
    /// registration, which outlives the session, so the device can handshake again and
    /// Update it. A close_notify the server sends back may arrive after the next
    /// handshake began; it belongs to the old session and is discarded.
    pub fn close(&mut self, now: Instant) -> bool {
        let mut sent = false;
        if self.connected && self.dtls.handle_timeout(now).is_ok() {
            self.drain();
            if self.connected && self.dtls.close().is_ok() {
                let before = self.transmits.len();
                self.drain();
                sent = self.transmits.len() > before;
            }
        }
        self.queued.clear();
        self.dtls = Self::fresh(&self.config, now);
        self.started = false;
        self.connected = false;
        self.failed = false;
        self.timer = None;
        sent
    }

    fn start(&mut self, now: Instant) {
        self.started = true;
        let _ = self.dtls.handle_timeout(now);
        self.drain();
    }

    /// Encrypts and queues `data` for the server; before the handshake completes it waits
    /// (at most [`MAX_QUEUED_PLAINTEXT`] datagrams).
    pub fn send(&mut self, now: Instant, data: &[u8]) {
        if self.connected {
            // The time first, and what it produced polled (see `handle_datagram`).
            if self.dtls.handle_timeout(now).is_err() {
                self.fail();
            } else {
                self.drain();
            }
        }
        if self.failed {
            self.restart(now);
        }
        if !self.connected {
            if self.queued.len() >= MAX_QUEUED_PLAINTEXT {
                self.queued.pop_front();
            }
            self.queued.push_back(data.to_vec());
            if !self.started {
                self.start(now);
            }
            return;
        }
        if self.dtls.send_application_data(data).is_err() {
            self.fail();
            return;
        }
        self.drain();
    }

    /// Handles a datagram from the server.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        if !self.started {
            return;
        }
        // The time first, and what it produced (a due retransmission) polled before the
        // datagram: `dimpl` wants its output polled after each step. Fed right after a
        // retransmission with nothing polled in between, a server flight (itself a
        // retransmission) was not answered, and the handshake stalled for a timeout.
        if self.dtls.handle_timeout(now).is_err() {
            self.fail();
            return;
        }
        self.drain();
        if self.failed {
            return;
        }
        if self.dtls.handle_packet(bytes).is_err() {
            self.fail();
            return;
        }
        self.drain();
    }

    fn fail(&mut self) {
        self.failed = true;
        self.connected = false;
        self.timer = None;
    }

    fn drain(&mut self) {
        for _ in 0..4096 {
            match self.dtls.poll_output(&mut self.buf) {
                Output::Packet(p) => self.transmits.push_back(p.to_vec()),
                Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                Output::Timeout(t) => {
                    self.timer = Some(t);
                    break;
                }
                Output::Connected => {
                    self.connected = true;
                    self.handshakes += 1;
                }
                Output::ApplicationData(d) => self.received.push_back(d.to_vec()),
                Output::CloseNotify => {
                    // The server closed the session (idle, its key rotated or removed,
                    // evicted, superseded by a newer session of the identity): the next
                    // send handshakes again.
                    self.fail();
                    return;
                }
                _ => {}
            }
        }
        if self.connected && !self.queued.is_empty() {
            while let Some(q) = self.queued.pop_front() {
                if self.dtls.send_application_data(&q).is_err() {
                    self.fail();
                    return;
                }
            }
            // Collect the records those sends produced (the queue is empty now).
            self.drain();
        }
    }

    /// Runs retransmissions of the handshake.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.started || self.failed || self.timer.is_none_or(|t| t > now) {
            return;
        }
        if self.dtls.handle_timeout(now).is_err() {
            self.fail();
            return;
        }
        self.drain();
    }

    /// When [`DtlsClient::handle_timeout`] wants to run (only while handshaking).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.connected || self.failed || !self.started {
            None
        } else {
            self.timer
        }
    }

    /// The next datagram to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next decrypted datagram from the server.
    pub fn poll_plaintext(&mut self) -> Option<Vec<u8>> {
        self.received.pop_front()
    }
}
