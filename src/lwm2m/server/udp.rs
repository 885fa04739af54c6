//! A std driver: one thread owns a `UdpSocket` and an [`Lwm2mServer`], takes operations
//! through a [`UdpServerHandle`] and hands [`DeviceEvent`]s out through a channel.

use super::{Lwm2mServer, Transmit};
use crate::transport::{DeviceEvent, DeviceOp, Transport};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest the driver sleeps before it looks at its stop flag again.
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// The server running on a UDP socket and a thread of its own.
///
/// ```no_run
/// use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig, UdpServer};
/// let server = Lwm2mServer::new(ServerConfig { auto_provision: true, ..ServerConfig::default() });
/// let (udp, events) = UdpServer::bind("0.0.0.0:5683", server).unwrap();
/// let handle = udp.handle(); // Clone + Send: submit DeviceOps from anywhere
/// for event in events.iter().take(1) {
///     println!("{event:?}");
/// }
/// # drop(handle);
/// let server = udp.stop(); // the state machine comes back
/// # let _ = server;
/// ```
pub struct UdpServer {
    local_addr: SocketAddr,
    handle: UdpServerHandle,
    thread: Option<JoinHandle<Lwm2mServer>>,
}

impl std::fmt::Debug for UdpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for UdpServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpServerHandle")
            .field("server", &self.wake_to)
            .finish_non_exhaustive()
    }
}

/// Submits operations to a running [`UdpServer`]; cheap to clone.
#[derive(Clone)]
pub struct UdpServerHandle {
    ops: Sender<DeviceOp>,
    stop: Arc<AtomicBool>,
    waker: Arc<UdpSocket>,
    wake_to: SocketAddr,
}

/// The driver has stopped; the operation was not taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Stopped(pub DeviceOp);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the lwm2m udp server has stopped")
    }
}

impl std::error::Error for Stopped {}

impl UdpServerHandle {
    /// Hands an operation to the driver thread; its outcome arrives on the event channel.
    pub fn submit(&self, op: DeviceOp) -> Result<(), Stopped> {
        self.ops.send(op).map_err(|e| Stopped(e.0))?;
        self.wake();
        Ok(())
    }

    /// Asks the driver to stop (it finishes within a quarter second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        // An empty datagram is not CoAP; the server drops it, but the receive returns.
        let _ = self.waker.send_to(&[], self.wake_to);
    }
}

impl UdpServer {
    /// Binds the socket and starts the driver thread. Returns the driver and the receiving
    /// end of its event channel (events queue up unbounded while nobody reads them).
    /// Server settings that [`ServerConfig::validate`](super::ServerConfig::validate)
    /// refuses are an [`InvalidInput`](io::ErrorKind::InvalidInput) error carrying the
    /// [`ServerConfigError`](super::ServerConfigError) (`get_ref`), and nothing is bound.
    pub fn bind(
        addr: impl ToSocketAddrs,
        server: Lwm2mServer,
    ) -> io::Result<(UdpServer, Receiver<DeviceEvent>)> {
        Self::bind_layer(addr, server, Plain)
    }

    /// Binds the socket and starts the driver with a datagram layer between the socket and
    /// the server (plain, or DTLS in `secure.rs`).
    pub(super) fn bind_layer<L: DatagramLayer>(
        addr: impl ToSocketAddrs,
        server: Lwm2mServer,
        layer: L,
    ) -> io::Result<(UdpServer, Receiver<DeviceEvent>)> {
        server
            .config()
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let socket = UdpSocket::bind(addr)?;
        let local_addr = socket.local_addr()?;
        let wake_to = match local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local_addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local_addr.port())
            }
            _ => local_addr,
        };
        let waker_bind: SocketAddr = if wake_to.is_ipv4() {
            (Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (Ipv6Addr::LOCALHOST, 0).into()
        };
        let waker = Arc::new(UdpSocket::bind(waker_bind)?);
        let (ops_tx, ops_rx) = mpsc::channel();
        let (events_tx, events_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lwm2m-udp".into())
            .spawn(move || run(socket, server, layer, ops_rx, events_tx, flag))?;
        Ok((
            UdpServer {
                local_addr,
                handle: UdpServerHandle {
                    ops: ops_tx,
                    stop,
                    waker,
                    wake_to,
                },
                thread: Some(thread),
            },
            events_rx,
        ))
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to submit operations with.
    pub fn handle(&self) -> UdpServerHandle {
        self.handle.clone()
    }

    /// Stops the driver and returns the server state machine (registrations and all).
    pub fn stop(mut self) -> Lwm2mServer {
        self.handle.stop();
        let thread = self.thread.take();
        match thread.map(JoinHandle::join) {
            Some(Ok(server)) => server,
            // The driver thread panicked: a bug; surface it in the caller's thread.
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => unreachable_stopped(),
        }
    }
}

fn unreachable_stopped() -> Lwm2mServer {
    // `stop` consumes the driver and `Drop` runs only after it, so the thread is always
    // still there; keep a well-defined answer anyway.
    Lwm2mServer::new(super::ServerConfig::default())
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.stop();
            let _ = t.join();
        }
    }
}

/// What sits between the socket and the server: nothing ([`Plain`]) or a DTLS server.
/// Sans-IO except for the socket it is handed to send on.
pub(super) trait DatagramLayer: Send + 'static {
    /// A datagram arrived: pass what it carries to the server.
    fn receive(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8], server: &mut Lwm2mServer);
    /// The server wants `t` sent. A layer that cannot send it (DTLS: no session) tells
    /// the server, which may take the request back (`Lwm2mServer::not_sent`).
    fn transmit(&mut self, now: Instant, t: Transmit, server: &mut Lwm2mServer, socket: &UdpSocket);
    /// Sends what the layer itself produced (handshake records, retransmissions).
    fn flush(&mut self, _socket: &UdpSocket) {}
    /// Runs the layer's timers.
    fn handle_timeout(&mut self, _now: Instant, _server: &mut Lwm2mServer) {}
    /// The layer's next deadline.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// The driver is stopping: send what the layer owes its peers now (DTLS: one
    /// close_notify per session). Runs once, after the last datagram was handled.
    fn shutdown(&mut self, _socket: &UdpSocket) {}
}

/// Plain CoAP: datagrams go straight through.
pub(super) struct Plain;

impl DatagramLayer for Plain {
    fn receive(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8], server: &mut Lwm2mServer) {
        server.handle_datagram(now, peer, bytes);
    }

    fn transmit(
        &mut self,
        _now: Instant,
        t: Transmit,
        _server: &mut Lwm2mServer,
        socket: &UdpSocket,
    ) {
        // A send error (unreachable peer, full buffer) is a lost datagram; CoAP
        // retransmission covers it.
        let _ = socket.send_to(&t.payload, t.destination);
    }
}

fn run<L: DatagramLayer>(
    socket: UdpSocket,
    mut server: Lwm2mServer,
    mut layer: L,
    ops: Receiver<DeviceOp>,
    events: Sender<DeviceEvent>,
    stop: Arc<AtomicBool>,
) -> Lwm2mServer {
    let mut buf = vec![0u8; 65_536];
    let mut current_sleep = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while let Ok(op) = ops.try_recv() {
            server.submit(now, op);
        }
        server.handle_timeout(now);
        layer.handle_timeout(now, &mut server);
        while let Some(t) = server.poll_transmit() {
            layer.transmit(now, t, &mut server, &socket);
        }
        layer.flush(&socket);
        // Events after the datagrams: a request the layer could not send takes its
        // `Sent` back (`Lwm2mServer::not_sent`).
        while let Some(e) = server.poll_event() {
            let _ = events.send(e);
        }
        let next = match (server.poll_timeout(), layer.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = next
            .map_or(MAX_SLEEP, |t| t.saturating_duration_since(now))
            .clamp(Duration::from_millis(1), MAX_SLEEP);
        // One syscall saved per datagram: under load the next deadline is usually far
        // away and the sleep stays at MAX_SLEEP.
        if sleep != current_sleep {
            if socket.set_read_timeout(Some(sleep)).is_err() {
                break;
            }
            current_sleep = sleep;
        }
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => layer.receive(Instant::now(), peer, &buf[..n], &mut server),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // ICMP port unreachable surfaces as ConnectionReset on some systems: ignore.
            Err(_) => {}
        }
    }
    layer.shutdown(&socket);
    server
}
