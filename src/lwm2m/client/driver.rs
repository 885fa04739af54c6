//! [`DeviceThread`]: runs one [`Lwm2mClient`] on a std UDP socket in a thread of its own.
//!
//! The thread blocks in `recv_from` with a read timeout set to the client's next deadline,
//! so an idle device costs no CPU. The application reaches the client through
//! [`DeviceThread::with`], which locks it, runs a closure (e.g. `set_value`) and wakes the
//! thread with a zero-length datagram to its own socket so new deadlines take effect.
//!
//! Many devices in one process: spawn one `DeviceThread` each. Threads are started with a
//! small stack ([`DriverOptions::stack_size`], 128 KiB by default; the loop needs far less)
//! and sleep in the kernel when idle; see the crate's `examples/device.rs` and the
//! `lwm2m_client` bench for measured per-device memory.
//!
//! **DTLS.** When the client's config has PSK credentials ([`ClientConfig::with_psk`],
//! feature `dtls`), everything to and from the LWM2M server goes through a
//! [`DtlsClient`](crate::dtls::DtlsClient): the first datagram starts the handshake, and a
//! registration attempt the server did not answer (it lost the session, or a NAT
//! rebinding gave the device a new source port the server has no session for) throws the
//! session away, so the next attempt handshakes again. Datagrams to other addresses (a
//! firmware package server) stay plain CoAP.
//!
//! [`ClientConfig::with_psk`]: super::ClientConfig::with_psk
//!
//! **Bootstrap.** A client configured with a bootstrap server talks to it first (plain
//! CoAP, or DTLS with its bootstrap PSK); at Bootstrap-Finish the thread switches to the
//! provisioned server, over DTLS when the bootstrap server gave a PSK. When the client
//! goes back to its bootstrap server (5 Registers refused or lost in a row), the thread
//! switches back before the Bootstrap-Request goes out: the session with the provisioned
//! server ends with a close_notify and a new one is made with the bootstrap credentials
//! (the request went out in plain CoAP, which a DTLS bootstrap server drops).
//!
//! **Ending a session.** When the thread stops ([`DeviceThread::shutdown`], or the handle
//! dropped) and when it leaves the bootstrap server for the provisioned one, it closes
//! its DTLS session with a close_notify ([`DtlsClient::close`](crate::dtls::DtlsClient::close)),
//! so the server drops the session at once instead of keeping it until its idle timeout.
//! The alert is sent once; if it is lost the server's idle timeout ends the session as
//! before. When the server ends the session (its close_notify: it restarted or stopped,
//! evicted the session, or withdrew the key), a registered device handshakes again and
//! sends a registration Update at once, so the server can reach it again (a server can
//! send only over a session the device made); if the server is not back yet, the
//! Update fails and the device registers anew with its retry backoff.
//!
//! Leaving a bootstrap server at another address, the thread keeps its session open for
//! MAX_TRANSMIT_SPAN (RFC 7252 §4.8.2, from the client's `ack_timeout` and
//! `max_retransmit`: 45 s by default; at most EXCHANGE_LIFETIME, 247 s, which is how long
//! the client remembers its answers) before the close_notify: if the answer to
//! Bootstrap-Finish was lost, the bootstrap server retransmits the Finish over that
//! session until then, and the client answers the copy from its duplicate cache (it
//! serves nothing else of the bootstrap server's any more), so the server sees the
//! bootstrap finish rather than time out. A thread that stops sooner closes it at once.
//!
//! To run the client under another runtime (tokio, an embedded loop), do what
//! [`DeviceThread`] does: feed datagrams to `handle_datagram`, send `poll_transmit`,
//! sleep until `poll_timeout` and call `handle_timeout`.

use super::engine::{ClientEvent, Lwm2mClient};
#[cfg(feature = "dtls")]
use crate::dtls::DtlsClient;
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The smallest stack a device thread gets when it speaks DTLS: the handshake's state
/// machine (the `dimpl` crate) needs more than the plain loop. Only the pages touched
/// become resident.
#[cfg(feature = "dtls")]
pub const MIN_DTLS_STACK: usize = 512 * 1024;

/// How a [`DeviceThread`] is started.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// The thread's stack size in bytes (at least `MIN_DTLS_STACK` over DTLS).
    pub stack_size: usize,
    /// Events kept for the application in [`DeviceThread::events`]. When it is full the
    /// thread holds up to [`HELD_EVENTS`] more, oldest first, and hands them over as the
    /// application takes events (within a second); past that it drops the oldest it holds, counted in
    /// [`DeviceThread::events_dropped`]. Nothing is dropped while the application keeps
    /// up.
    pub event_capacity: usize,
    /// The longest the thread sleeps without a deadline (it re-checks then).
    pub max_sleep: Duration,
    /// The thread's name.
    pub name: String,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            stack_size: 128 * 1024,
            event_capacity: 64,
            max_sleep: Duration::from_secs(60),
            name: "lwm2m-device".to_string(),
        }
    }
}

/// Events a [`DeviceThread`] holds beyond [`DriverOptions::event_capacity`] while the
/// application does not take them; past this the oldest held is dropped (and counted).
pub const HELD_EVENTS: usize = 256;

/// How soon a thread holding events it could not hand over tries again: first after
/// `HELD_RETRY`, doubling while the application takes none, up to `HELD_RETRY_MAX`, so
/// that an application that never reads costs a wake-up a second, not fifty.
const HELD_RETRY: Duration = Duration::from_millis(20);
const HELD_RETRY_MAX: Duration = Duration::from_secs(1);

/// A client running on its own socket and thread.
///
/// ```no_run
/// use twinhub::lwm2m::client::{ClientConfig, DeviceThread, Lwm2mClient, ObjectTree, objects};
/// let mut tree = ObjectTree::new();
/// tree.add(objects::server(1, 300, "U"));
/// tree.add(objects::device("Contoso", "M1", "SN-1", "1.0"));
/// let config = ClientConfig::new("dev-1", "127.0.0.1:5683".parse().unwrap());
/// let client = Lwm2mClient::new(std::time::Instant::now(), config, tree);
/// let device = DeviceThread::spawn(client, "0.0.0.0:0".parse().unwrap()).unwrap();
/// device.with(|c| c.set_value(&"/3/0/9".parse().unwrap(), twinhub::ResourceValue::Integer(80)))
///     .unwrap();
/// device.shutdown(std::time::Duration::from_secs(5)).unwrap();
/// ```
pub struct DeviceThread {
    client: Arc<Mutex<Lwm2mClient>>,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    events: Receiver<ClientEvent>,
    handshakes: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl std::fmt::Debug for DeviceThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceThread")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl DeviceThread {
    /// Binds `bind` (use port 0 for an ephemeral port) and starts the client with the
    /// default options.
    pub fn spawn(client: Lwm2mClient, bind: SocketAddr) -> io::Result<DeviceThread> {
        DeviceThread::spawn_on(client, UdpSocket::bind(bind)?, DriverOptions::default())
    }

    /// Starts the client on an existing socket.
    pub fn spawn_on(
        client: Lwm2mClient,
        socket: UdpSocket,
        options: DriverOptions,
    ) -> io::Result<DeviceThread> {
        let local = socket.local_addr()?;
        // One socket, shared: the thread receives on it and the handle sends its wake-up
        // datagrams from it, so a device costs one file descriptor.
        let socket = Arc::new(socket);
        let client = Arc::new(Mutex::new(client));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = sync_channel(options.event_capacity.max(1));
        // A client that bootstraps talks to its bootstrap server first (over DTLS with the
        // bootstrap credentials, if any); the LWM2M server comes at Bootstrap-Finish.
        let (server, bootstrapping) = {
            let c = lock(&client);
            match c.config().bootstrap {
                Some(bs) => (bs, true),
                None => (c.config().server, false),
            }
        };
        #[cfg(feature = "dtls")]
        let dtls = {
            let c = lock(&client);
            let creds = if bootstrapping {
                c.config().bootstrap_psk.clone()
            } else {
                c.config().psk.clone()
            };
            creds.map(|creds| DtlsClient::new(Instant::now(), creds))
        };
        #[cfg(not(feature = "dtls"))]
        let _ = bootstrapping;
        let handshakes = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            server,
            #[cfg(feature = "dtls")]
            dtls,
            #[cfg(feature = "dtls")]
            lingering: None,
            #[cfg(feature = "dtls")]
            at_bootstrap: bootstrapping,
            handshakes: handshakes.clone(),
            client: client.clone(),
            socket: socket.clone(),
            local,
            stop: stop.clone(),
            events: tx,
            held: VecDeque::new(),
            held_retry: HELD_RETRY,
            dropped: dropped.clone(),
            max_sleep: options.max_sleep,
        };
        // A device that bootstraps may be given a PSK: it needs the DTLS stack too.
        #[cfg(feature = "dtls")]
        let min_stack = if worker.dtls.is_some() || lock(&client).config().bootstrap.is_some() {
            MIN_DTLS_STACK
        } else {
            32 * 1024
        };
        #[cfg(not(feature = "dtls"))]
        let min_stack = 32 * 1024;
        let thread = std::thread::Builder::new()
            .name(options.name)
            .stack_size(options.stack_size.max(min_stack))
            .spawn(move || worker.run())?;
        Ok(DeviceThread {
            client,
            socket,
            local,
            stop,
            events,
            handshakes,
            dropped,
            thread: Some(thread),
        })
    }

    /// The device's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs `f` on the client (locked), then wakes the thread so that anything `f` queued
    /// (notifications, an update) goes out now.
    ///
    /// The objects' callbacks (`on_read`, `on_write`, `on_execute`, a package or update
    /// callback) run on the device thread with the client locked: calling `with` from one
    /// of them deadlocks, and a slow one holds up every exchange of the device. Keep them
    /// short, and do the work the event asks for (a reboot, an install) on a thread of
    /// your own, reporting back through `with`.
    pub fn with<R>(&self, f: impl FnOnce(&mut Lwm2mClient) -> R) -> R {
        let r = f(&mut lock(&self.client));
        self.wake();
        r
    }

    /// Events dropped because the application did not take them: more than
    /// [`DriverOptions::event_capacity`] waiting in [`DeviceThread::events`] and
    /// [`HELD_EVENTS`] more held by the thread (see there). 0 while the application keeps
    /// up.
    pub fn events_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// DTLS handshakes the device completed with the server (0 over plain CoAP).
    pub fn dtls_handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// The client's events (registered, reboot, executed, ...).
    pub fn events(&self) -> &Receiver<ClientEvent> {
        &self.events
    }

    fn wake(&self) {
        let _ = self.socket.send_to(&[], self.local);
    }

    /// De-registers, waits up to `timeout` for the server's answer, and stops the thread.
    ///
    /// The events not yet taken from [`DeviceThread::events`] are dropped with the
    /// handle: take them first. Once the De-register is out the client serves no more
    /// requests (the server gets 5.03, see [`Lwm2mClient::deregister`]), so no Write or
    /// Execute is acknowledged while the thread waits whose event would be lost.
    pub fn shutdown(mut self, timeout: Duration) -> io::Result<()> {
        self.with(|c| c.deregister(Instant::now()));
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ClientEvent::Deregistered) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("device thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

fn lock(c: &Mutex<Lwm2mClient>) -> MutexGuard<'_, Lwm2mClient> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

struct Worker {
    #[cfg_attr(not(feature = "dtls"), allow(dead_code))]
    server: SocketAddr,
    #[cfg(feature = "dtls")]
    dtls: Option<DtlsClient>,
    /// The bootstrap server's session after Bootstrap-Finish, its address, and when it
    /// closes: kept for the server's retransmitted Finish (see the module docs).
    #[cfg(feature = "dtls")]
    lingering: Option<(SocketAddr, DtlsClient, Instant)>,
    /// Whether `server` (and `dtls`) are the bootstrap server's.
    #[cfg(feature = "dtls")]
    at_bootstrap: bool,
    #[cfg_attr(not(feature = "dtls"), allow(dead_code))]
    handshakes: Arc<AtomicU64>,
    client: Arc<Mutex<Lwm2mClient>>,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    events: SyncSender<ClientEvent>,
    /// Events the application's full queue did not take yet, oldest first (at most
    /// [`HELD_EVENTS`]).
    held: VecDeque<ClientEvent>,
    /// How soon to try handing held events over again.
    held_retry: Duration,
    dropped: Arc<AtomicU64>,
    max_sleep: Duration,
}

impl Worker {
    fn run(mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 2048];
        while !self.stop.load(Ordering::SeqCst) {
            let deadline = {
                let client = self.client.clone();
                let mut c = lock(&client);
                let now = Instant::now();
                c.handle_timeout(now);
                self.flush(&mut c);
                let own = self.dtls_timeout(now);
                match (c.poll_timeout(), own) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            let now = Instant::now();
            // Events held for a full queue: try again soon, as the application takes some.
            let max_sleep = if self.held.is_empty() {
                self.max_sleep
            } else {
                self.max_sleep.min(self.held_retry)
            };
            let sleep = deadline
                .map_or(max_sleep, |d| d.saturating_duration_since(now))
                .clamp(Duration::from_millis(1), max_sleep);
            self.socket.set_read_timeout(Some(sleep))?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if n == 0 && from == self.local {
                        continue;
                    }
                    let client = self.client.clone();
                    let mut c = lock(&client);
                    self.receive(&mut c, from, &buf[..n]);
                    self.flush(&mut c);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        // Stopped: end the DTLS session so the server drops it at once.
        self.close_dtls();
        Ok(())
    }

    /// Ends the DTLS sessions, with the current server and a lingering bootstrap
    /// server's, if they are up: their close_notify goes out now (once: RFC 6347 does not
    /// retransmit alerts).
    #[cfg(feature = "dtls")]
    fn close_dtls(&mut self) {
        self.close_lingering();
        if let Some(d) = self.dtls.as_mut() {
            close_session(&self.socket, d, self.server);
        }
    }

    /// Ends the bootstrap server's lingering session, if any.
    #[cfg(feature = "dtls")]
    fn close_lingering(&mut self) {
        if let Some((to, mut d, _)) = self.lingering.take() {
            close_session(&self.socket, &mut d, to);
        }
    }

    #[cfg(not(feature = "dtls"))]
    fn close_dtls(&mut self) {}

    /// Runs the DTLS handshake's retransmissions and ends a lingering bootstrap session
    /// whose time is up; returns the next deadline of either.
    #[cfg(feature = "dtls")]
    fn dtls_timeout(&mut self, now: Instant) -> Option<Instant> {
        if self
            .lingering
            .as_ref()
            .is_some_and(|(_, _, until)| *until <= now)
        {
            self.close_lingering();
        }
        let lingering = self.lingering.as_ref().map(|(_, _, until)| *until);
        let own = self.dtls.as_mut().and_then(|d| {
            d.handle_timeout(now);
            while let Some(record) = d.poll_transmit() {
                let _ = self.socket.send_to(&record, self.server);
            }
            d.poll_timeout()
        });
        match (own, lingering) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    #[cfg(not(feature = "dtls"))]
    fn dtls_timeout(&mut self, _now: Instant) -> Option<Instant> {
        None
    }

    fn receive(&mut self, c: &mut Lwm2mClient, from: SocketAddr, bytes: &[u8]) {
        let now = Instant::now();
        #[cfg(feature = "dtls")]
        if let Some((to, d, _)) = self.lingering.as_mut()
            && from == *to
        {
            d.handle_datagram(now, bytes);
            while let Some(plain) = d.poll_plaintext() {
                c.handle_datagram(now, from, &plain);
            }
            return;
        }
        #[cfg(feature = "dtls")]
        if let Some(d) = self.dtls.as_mut()
            && from == self.server
        {
            let was_connected = d.is_connected();
            d.handle_datagram(now, bytes);
            self.handshakes.store(d.handshakes(), Ordering::Relaxed);
            while let Some(plain) = d.poll_plaintext() {
                c.handle_datagram(now, from, &plain);
            }
            // The server ended the session (a close_notify: it restarted, evicted the
            // session or withdrew the key): it can reach a registered device only over a
            // new one, so handshake and Update now rather than at the next scheduled
            // Update (which may be most of a lifetime away).
            if was_connected && !d.is_connected() && c.is_registered() {
                c.trigger_update();
            }
            return;
        }
        c.handle_datagram(now, from, bytes);
    }

    /// Switches to the provisioned server at `server`. The bootstrap server's session
    /// (the answer to Bootstrap-Finish already went out over it) ends with a close_notify,
    /// now if the provisioned server has the same address (the new session replaces it
    /// there), else after MAX_TRANSMIT_SPAN (see the module docs), not when the
    /// bootstrap server's idle timer runs out.
    #[cfg(feature = "dtls")]
    fn leave_bootstrap_server(&mut self, c: &Lwm2mClient, server: SocketAddr) {
        self.at_bootstrap = false;
        self.close_lingering();
        let old = std::mem::replace(
            &mut self.dtls,
            c.config()
                .psk
                .clone()
                .map(|creds| DtlsClient::new(Instant::now(), creds)),
        );
        let bootstrap = std::mem::replace(&mut self.server, server);
        if let Some(mut d) = old {
            if bootstrap == server {
                close_session(&self.socket, &mut d, bootstrap);
            } else {
                let config = c.config();
                let span = max_transmit_span(config.ack_timeout, config.max_retransmit);
                // A copy arriving later finds no answer in the client's duplicate cache.
                let span = span.min(super::engine::EXCHANGE_LIFETIME);
                self.lingering = Some((bootstrap, d, Instant::now() + span));
            }
        }
    }

    #[cfg(not(feature = "dtls"))]
    fn leave_bootstrap_server(&mut self, _c: &Lwm2mClient, server: SocketAddr) {
        self.server = server;
    }

    /// The client went back to its bootstrap server (its Bootstrap-Request is about to
    /// go out): the provisioned server's session ends with a close_notify, and the
    /// bootstrap server's is made with the bootstrap credentials (see the module docs).
    #[cfg(feature = "dtls")]
    fn return_to_bootstrap_server(&mut self, c: &Lwm2mClient) {
        let Some(bootstrap) = c.config().bootstrap else {
            return;
        };
        self.close_dtls();
        self.server = bootstrap;
        self.dtls = c
            .config()
            .bootstrap_psk
            .clone()
            .map(|creds| DtlsClient::new(Instant::now(), creds));
        self.at_bootstrap = true;
    }

    fn flush(&mut self, c: &mut Lwm2mClient) {
        #[cfg(feature = "dtls")]
        let now = Instant::now();
        #[cfg(feature = "dtls")]
        if !self.at_bootstrap && c.is_bootstrapping() {
            self.return_to_bootstrap_server(c);
        }
        while let Some(t) = c.poll_transmit() {
            #[cfg(feature = "dtls")]
            if let Some(d) = self.dtls.as_mut()
                && t.destination == self.server
            {
                d.send(now, &t.payload);
                continue;
            }
            #[cfg(feature = "dtls")]
            if let Some((to, d, _)) = self.lingering.as_mut()
                && t.destination == *to
            {
                d.send(now, &t.payload);
                continue;
            }
            // A send error (e.g. no route) is like a lost datagram: CoAP retransmits.
            let _ = self.socket.send_to(&t.payload, t.destination);
        }
        #[cfg(feature = "dtls")]
        if let Some(d) = self.dtls.as_mut() {
            while let Some(record) = d.poll_transmit() {
                let _ = self.socket.send_to(&record, self.server);
            }
        }
        #[cfg(feature = "dtls")]
        if let Some((to, d, _)) = self.lingering.as_mut() {
            while let Some(record) = d.poll_transmit() {
                let _ = self.socket.send_to(&record, *to);
            }
        }
        while let Some(e) = c.poll_event() {
            // Bootstrapped: the server (and its credentials) are the provisioned ones.
            if let ClientEvent::Bootstrapped { server, .. } = e {
                self.leave_bootstrap_server(c, server);
            }
            // Unanswered: the server may have lost our session (restart, NAT rebinding):
            // handshake again for the next attempt.
            #[cfg(feature = "dtls")]
            if let ClientEvent::RegistrationFailed { code: None, .. } = e
                && let Some(d) = self.dtls.as_mut()
            {
                d.restart(now);
            }
            if self.held.len() == HELD_EVENTS {
                self.held.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            self.held.push_back(e);
        }
        self.hand_over();
    }

    /// Moves held events into the application's queue, oldest first, while it has room.
    fn hand_over(&mut self) {
        let before = self.held.len();
        while let Some(e) = self.held.pop_front() {
            match self.events.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Full(e)) => {
                    self.held.push_front(e);
                    self.held_retry = if self.held.len() < before {
                        HELD_RETRY
                    } else {
                        (self.held_retry * 2).min(HELD_RETRY_MAX)
                    };
                    return;
                }
                // Nobody listens any more (the handle is gone).
                Err(TrySendError::Disconnected(_)) => {
                    self.held.clear();
                    return;
                }
            }
        }
        self.held_retry = HELD_RETRY;
    }
}

/// Sends `d`'s close_notify to `to`, if its session is up.
#[cfg(feature = "dtls")]
fn close_session(socket: &UdpSocket, d: &mut DtlsClient, to: SocketAddr) {
    if d.close(Instant::now()) {
        while let Some(record) = d.poll_transmit() {
            let _ = socket.send_to(&record, to);
        }
    }
}

/// RFC 7252 §4.8.2 MAX_TRANSMIT_SPAN: ACK_TIMEOUT x (2^MAX_RETRANSMIT - 1) x
/// ACK_RANDOM_FACTOR (1.5), the longest a sender goes on retransmitting one message
/// (45 s with the defaults).
#[cfg(feature = "dtls")]
fn max_transmit_span(ack_timeout: Duration, max_retransmit: u8) -> Duration {
    let factor = (1u32 << u32::from(max_retransmit.min(16))) - 1;
    let span = ack_timeout.saturating_mul(factor);
    span.saturating_add(span / 2)
}

#[cfg(all(test, feature = "dtls"))]
mod tests {
    use super::*;

    #[test]
    fn max_transmit_span_is_rfc_7252_s() {
        assert_eq!(
            max_transmit_span(Duration::from_secs(2), 4),
            Duration::from_secs(45)
        );
        assert_eq!(
            max_transmit_span(Duration::from_millis(500), 2),
            Duration::from_millis(2250)
        );
    }
}
