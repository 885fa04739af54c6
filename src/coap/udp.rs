//! A std UDP driver: runs an [`Endpoint`] on a [`UdpSocket`] in its own thread.
//!
//! The application talks to it through a cloneable [`DriverHandle`]: send a request and
//! wait for its response ([`DriverHandle::request`]), observe a resource
//! ([`DriverHandle::observe`]), take incoming requests from [`UdpDriver::next_event`] and
//! answer them ([`DriverHandle::respond`], [`DriverHandle::respond_and_observe`],
//! [`DriverHandle::notify`]), and [`UdpDriver::stop`].
//!
//! # How the thread waits
//!
//! The thread blocks in `recv_from` with a read timeout of
//! `min(Endpoint::poll_timeout() - now, 100 ms)`, so it never spins. Commands from the
//! handle travel over an `mpsc` channel, and each command is followed by an empty
//! datagram sent *to the driver's own socket* from a loopback "wake" socket owned by the
//! handle; the driver recognises that source address and drains the channel. Commands
//! therefore take effect at once instead of waiting for the read timeout. (The 100 ms cap
//! only bounds how late the thread notices a stop if a wake datagram were lost.)
//!
//! # Plugging the endpoint into another runtime
//!
//! [`Endpoint`] is sans-IO, so an async runtime needs only the same loop. A tokio task
//! would look like this (a sketch, tokio is not a dependency of this crate):
//!
//! ```text
//! let socket = tokio::net::UdpSocket::bind(addr).await?;
//! let mut ep = Endpoint::new(EndpointConfig::default());
//! let mut buf = vec![0u8; 1500];
//! loop {
//!     while let Some(t) = ep.poll_transmit() {
//!         socket.send_to(&t.payload, t.destination).await?;
//!     }
//!     while let Some(event) = ep.poll_event() {
//!         app.handle(event, &mut ep); // may call ep.respond(Instant::now(), ..)
//!     }
//!     let deadline = ep.poll_timeout();
//!     tokio::select! {
//!         r = socket.recv_from(&mut buf) => {
//!             let (n, peer) = r?;
//!             ep.handle_datagram(Instant::now(), peer, &buf[..n]);
//!         }
//!         cmd = commands.recv() => app.apply(cmd, &mut ep),   // send_request, respond, ...
//!         _ = sleep_until_opt(deadline) => ep.handle_timeout(Instant::now()),
//!     }
//! }
//! ```
//!
//! The rules are the ones on [`Endpoint`]: feed every datagram and every timeout with the
//! current time, then drain transmits and events before waiting again.

use crate::coap::{
    Endpoint, EndpointConfig, Event, IncomingRequestId, Message, ObservationEndReason,
    ObservationId, RequestError, RequestId, RespondError, SendError,
};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest the driver thread sleeps in one `recv_from`.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// What the driver hands the application (server role).
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A request to answer with [`DriverHandle::respond`].
    Request {
        /// The id to respond to.
        id: IncomingRequestId,
        /// Who sent it.
        peer: SocketAddr,
        /// The request.
        request: Message,
    },
    /// An observer relation ended.
    ObservationEnded {
        /// The relation.
        id: ObservationId,
        /// Why.
        reason: ObservationEndReason,
    },
}

/// What a request we sent produced (client role).
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The response (for an observation, the first one).
    Response(Message),
    /// A notification of an observation.
    Notification(Message),
    /// The request failed.
    Failed(RequestError),
}

/// Why a driver call failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum DriverError {
    /// The driver thread has stopped (the driver was stopped or dropped, or its thread
    /// ended on a socket error): make a new driver; calls on this one keep failing.
    Stopped,
    /// No response within the caller's timeout (the request is forgotten: a late answer
    /// is dropped). The peer may be down, or slower than the timeout; retrying is safe
    /// for a GET, and for other methods only if the request is idempotent.
    Timeout,
    /// The endpoint refused the request.
    Send(SendError),
    /// The endpoint refused the response or notification.
    Respond(RespondError),
    /// The request failed in the endpoint.
    Request(RequestError),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Stopped => f.write_str("coap driver stopped"),
            DriverError::Timeout => f.write_str("no response in time"),
            DriverError::Send(e) => write!(f, "{e}"),
            DriverError::Respond(e) => write!(f, "{e}"),
            DriverError::Request(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DriverError {}

/// How a [`Command::Respond`] answers.
enum Answer {
    Plain,
    Observe,
    Shared(std::sync::Arc<Vec<u8>>),
}

enum Command {
    Send {
        peer: SocketAddr,
        request: Message,
        events: Sender<ClientEvent>,
        reply: Sender<Result<RequestId, SendError>>,
    },
    Forget(RequestId),
    CancelObservation(RequestId),
    Respond {
        id: IncomingRequestId,
        response: Message,
        /// Observe (no shared body then), or answer with this shared body.
        how: Answer,
        reply: Sender<Result<Option<ObservationId>, RespondError>>,
    },
    Notify {
        id: ObservationId,
        response: Message,
        reply: Sender<Result<(), RespondError>>,
    },
    Stop,
}

/// A cloneable, thread-safe handle to a running [`UdpDriver`].
#[derive(Clone)]
pub struct DriverHandle {
    commands: Sender<Command>,
    wake: Arc<UdpSocket>,
    target: SocketAddr,
}

impl std::fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverHandle").finish_non_exhaustive()
    }
}

/// An observation registered through [`DriverHandle::observe`].
pub struct Observation {
    id: RequestId,
    handle: DriverHandle,
    /// The first response (it carries Observe when the server accepted the observation).
    pub first: Message,
    events: Receiver<ClientEvent>,
}

impl std::fmt::Debug for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observation")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Observation {
    /// Waits up to `timeout` for the next notification; `Ok(None)` on timeout. A
    /// notification without Observe (the final one) is returned and ends the stream.
    pub fn next_notification(&self, timeout: Duration) -> Result<Option<Message>, DriverError> {
        match self.events.recv_timeout(timeout) {
            Ok(ClientEvent::Notification(m)) | Ok(ClientEvent::Response(m)) => Ok(Some(m)),
            Ok(ClientEvent::Failed(e)) => Err(DriverError::Request(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(DriverError::Stopped),
        }
    }

    /// Cancels with GET Observe=1 (RFC 7641 §3.6).
    pub fn cancel(&self) -> Result<(), DriverError> {
        self.handle.command(Command::CancelObservation(self.id))
    }

    /// Forgets the observation: the next notification is answered with RST.
    pub fn forget(&self) -> Result<(), DriverError> {
        self.handle.command(Command::Forget(self.id))
    }
}

impl DriverHandle {
    fn command(&self, c: Command) -> Result<(), DriverError> {
        self.commands.send(c).map_err(|_| DriverError::Stopped)?;
        // Wake the driver thread out of recv_from; if this datagram is lost the thread
        // still sees the command within MAX_WAIT.
        let _ = self.wake.send_to(&[], self.target);
        Ok(())
    }

    /// Sends a request; its outcome arrives on the returned receiver.
    pub fn send_request(
        &self,
        peer: SocketAddr,
        request: Message,
    ) -> Result<(RequestId, Receiver<ClientEvent>), DriverError> {
        let (events, rx) = mpsc::channel();
        let (reply, reply_rx) = mpsc::channel();
        self.command(Command::Send {
            peer,
            request,
            events,
            reply,
        })?;
        let id = reply_rx
            .recv()
            .map_err(|_| DriverError::Stopped)?
            .map_err(DriverError::Send)?;
        Ok((id, rx))
    }

    /// Sends a request and waits up to `timeout` for its response.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use twinhub::coap::{Code, EndpointConfig, Message, UdpDriver};
    /// let driver = UdpDriver::bind("127.0.0.1:0", EndpointConfig::default())?;
    /// let peer = "127.0.0.1:5683".parse()?;
    /// let resp = driver
    ///     .handle()
    ///     .request(peer, Message::request(Code::GET, "/3/0/0"), Duration::from_secs(5))?;
    /// println!("{} {:?}", resp.code, String::from_utf8_lossy(&resp.payload));
    /// driver.stop();
    /// # Ok(()) }
    /// ```
    pub fn request(
        &self,
        peer: SocketAddr,
        request: Message,
        timeout: Duration,
    ) -> Result<Message, DriverError> {
        let (id, rx) = self.send_request(peer, request)?;
        match rx.recv_timeout(timeout) {
            Ok(ClientEvent::Response(m)) | Ok(ClientEvent::Notification(m)) => Ok(m),
            Ok(ClientEvent::Failed(e)) => Err(DriverError::Request(e)),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.command(Command::Forget(id));
                Err(DriverError::Timeout)
            }
            Err(RecvTimeoutError::Disconnected) => Err(DriverError::Stopped),
        }
    }

    /// Registers an observation (the request gets Observe=0) and waits up to `timeout`
    /// for the first response.
    pub fn observe(
        &self,
        peer: SocketAddr,
        mut request: Message,
        timeout: Duration,
    ) -> Result<Observation, DriverError> {
        request.set_observe(0);
        let (id, events) = self.send_request(peer, request)?;
        match events.recv_timeout(timeout) {
            Ok(ClientEvent::Response(first)) | Ok(ClientEvent::Notification(first)) => {
                Ok(Observation {
                    id,
                    handle: self.clone(),
                    first,
                    events,
                })
            }
            Ok(ClientEvent::Failed(e)) => Err(DriverError::Request(e)),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.command(Command::Forget(id));
                Err(DriverError::Timeout)
            }
            Err(RecvTimeoutError::Disconnected) => Err(DriverError::Stopped),
        }
    }

    /// Answers an incoming request.
    pub fn respond(&self, id: IncomingRequestId, response: Message) -> Result<(), DriverError> {
        self.respond_inner(id, response, Answer::Plain).map(|_| ())
    }

    /// Answers an incoming request with a shared body (see
    /// [`Endpoint::respond_shared`]): downloads of one body hold it once.
    pub fn respond_shared(
        &self,
        id: IncomingRequestId,
        response: Message,
        body: std::sync::Arc<Vec<u8>>,
    ) -> Result<(), DriverError> {
        self.respond_inner(id, response, Answer::Shared(body))
            .map(|_| ())
    }

    /// Answers an Observe=0 request and registers the observer (see
    /// [`Endpoint::respond_and_observe`]).
    pub fn respond_and_observe(
        &self,
        id: IncomingRequestId,
        response: Message,
    ) -> Result<Option<ObservationId>, DriverError> {
        self.respond_inner(id, response, Answer::Observe)
    }

    fn respond_inner(
        &self,
        id: IncomingRequestId,
        response: Message,
        how: Answer,
    ) -> Result<Option<ObservationId>, DriverError> {
        let (reply, rx) = mpsc::channel();
        self.command(Command::Respond {
            id,
            response,
            how,
            reply,
        })?;
        rx.recv()
            .map_err(|_| DriverError::Stopped)?
            .map_err(DriverError::Respond)
    }

    /// Sends a notification to an observer (see [`Endpoint::notify`]).
    pub fn notify(&self, id: ObservationId, response: Message) -> Result<(), DriverError> {
        let (reply, rx) = mpsc::channel();
        self.command(Command::Notify {
            id,
            response,
            reply,
        })?;
        rx.recv()
            .map_err(|_| DriverError::Stopped)?
            .map_err(DriverError::Respond)
    }
}

/// An [`Endpoint`] running on a UDP socket in its own thread.
pub struct UdpDriver {
    handle: DriverHandle,
    local_addr: SocketAddr,
    server_events: Mutex<Receiver<ServerEvent>>,
    thread: Option<JoinHandle<()>>,
}

impl UdpDriver {
    /// Binds a socket and starts the driver. A `config` that
    /// [`EndpointConfig::validate`] refuses is refused
    /// ([`io::ErrorKind::InvalidInput`], the [`EndpointConfigError`](crate::coap::EndpointConfigError)
    /// inside), before anything is bound.
    pub fn bind(addr: impl ToSocketAddrs, config: EndpointConfig) -> io::Result<UdpDriver> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        UdpDriver::spawn(UdpSocket::bind(addr)?, Endpoint::new(config))
    }

    /// Starts the driver on an existing socket and endpoint.
    pub fn spawn(socket: UdpSocket, endpoint: Endpoint) -> io::Result<UdpDriver> {
        UdpDriver::spawn_wire(socket, endpoint, Wire::Plain)
    }

    /// Starts a `coaps` server: the endpoint behind a
    /// [`DtlsServer`](crate::dtls::DtlsServer) (DTLS 1.2 PSK). Requests arrive only from
    /// peers with a session; everything the endpoint sends goes through the session at the
    /// destination (datagrams to an address without one are dropped, never sent in
    /// clear). The driver does not report identities: use the LWM2M server for that.
    ///
    /// ```no_run
    /// use twinhub::coap::{Endpoint, EndpointConfig, UdpDriver};
    /// use twinhub::dtls::{DtlsServer, DtlsServerConfig, PskStore};
    /// let dtls = DtlsServer::new(DtlsServerConfig::default(), PskStore::new());
    /// let socket = std::net::UdpSocket::bind("0.0.0.0:5684").unwrap();
    /// let driver = UdpDriver::spawn_secure(socket, Endpoint::new(EndpointConfig::default()), dtls).unwrap();
    /// # drop(driver);
    /// ```
    #[cfg(feature = "dtls")]
    pub fn spawn_secure(
        socket: UdpSocket,
        endpoint: Endpoint,
        dtls: crate::dtls::DtlsServer,
    ) -> io::Result<UdpDriver> {
        UdpDriver::spawn_wire(socket, endpoint, Wire::Dtls(Box::new(dtls)))
    }

    fn spawn_wire(socket: UdpSocket, endpoint: Endpoint, wire: Wire) -> io::Result<UdpDriver> {
        let local_addr = socket.local_addr()?;
        let target = match local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local_addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local_addr.port())
            }
            _ => local_addr,
        };
        let wake_bind: SocketAddr = if target.is_ipv4() {
            (Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (Ipv6Addr::LOCALHOST, 0).into()
        };
        let wake = UdpSocket::bind(wake_bind)?;
        let wake_addr = wake.local_addr()?;
        let (commands, command_rx) = mpsc::channel();
        let (server_tx, server_events) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("coap-udp-{}", local_addr.port()))
            .spawn(move || run(socket, endpoint, wire, command_rx, server_tx, wake_addr))?;
        Ok(UdpDriver {
            handle: DriverHandle {
                commands,
                wake: Arc::new(wake),
                target,
            },
            local_addr,
            server_events: Mutex::new(server_events),
            thread: Some(thread),
        })
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for sending requests and responses (cloneable, `Send`).
    pub fn handle(&self) -> DriverHandle {
        self.handle.clone()
    }

    /// Waits up to `timeout` for the next incoming request or observer event. (Several
    /// threads may wait at once; each event goes to one of them.)
    pub fn next_event(&self, timeout: Duration) -> Option<ServerEvent> {
        let rx = self
            .server_events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        rx.recv_timeout(timeout).ok()
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.handle.command(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for UdpDriver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for UdpDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpDriver")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// What the datagrams cross between the socket and the endpoint.
enum Wire {
    Plain,
    #[cfg(feature = "dtls")]
    Dtls(Box<crate::dtls::DtlsServer>),
}

impl Wire {
    fn send(&mut self, socket: &UdpSocket, t: crate::coap::Transmit) {
        match self {
            // A send error (e.g. an unreachable peer) is the same as a lost datagram.
            Wire::Plain => {
                let _ = socket.send_to(&t.payload, t.destination);
            }
            #[cfg(feature = "dtls")]
            Wire::Dtls(d) => {
                // No session: dropped; nothing goes out in clear.
                let _ = d.send(Instant::now(), t.destination, &t.payload);
                Self::flush(d, socket);
            }
        }
    }

    #[cfg(feature = "dtls")]
    fn flush(d: &mut crate::dtls::DtlsServer, socket: &UdpSocket) {
        while let Some((to, record)) = d.poll_transmit() {
            let _ = socket.send_to(&record, to);
        }
    }

    fn receive(&mut self, socket: &UdpSocket, ep: &mut Endpoint, from: SocketAddr, bytes: &[u8]) {
        let now = Instant::now();
        match self {
            Wire::Plain => ep.handle_datagram(now, from, bytes),
            #[cfg(feature = "dtls")]
            Wire::Dtls(d) => {
                d.handle_datagram(now, from, bytes);
                Self::deliver(d, socket, ep, now);
            }
        }
        let _ = socket;
    }

    #[cfg(feature = "dtls")]
    fn deliver(
        d: &mut crate::dtls::DtlsServer,
        socket: &UdpSocket,
        ep: &mut Endpoint,
        now: Instant,
    ) {
        while let Some(event) = d.poll_event() {
            if let crate::dtls::DtlsEvent::Plaintext { peer, data, .. } = event {
                ep.handle_datagram(now, peer, &data);
            }
        }
        Self::flush(d, socket);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Wire::Plain => None,
            #[cfg(feature = "dtls")]
            Wire::Dtls(d) => d.poll_timeout(),
        }
    }

    fn handle_timeout(&mut self, socket: &UdpSocket, ep: &mut Endpoint, now: Instant) {
        match self {
            Wire::Plain => {}
            #[cfg(feature = "dtls")]
            Wire::Dtls(d) => {
                d.handle_timeout(now);
                Self::deliver(d, socket, ep, now);
            }
        }
        let _ = (socket, ep, now);
    }
}

fn run(
    socket: UdpSocket,
    mut ep: Endpoint,
    mut wire: Wire,
    commands: Receiver<Command>,
    server: Sender<ServerEvent>,
    wake_addr: SocketAddr,
) {
    let mut buf = vec![0u8; 65_536];
    let mut clients: HashMap<RequestId, Sender<ClientEvent>> = HashMap::new();
    let mut current_wait = None;
    loop {
        // 1. Commands from the application.
        loop {
            let now = Instant::now();
            match commands.try_recv() {
                Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => break,
                Ok(Command::Send {
                    peer,
                    request,
                    events,
                    reply,
                }) => {
                    let r = ep.send_request(now, peer, request);
                    if let Ok(id) = r {
                        clients.insert(id, events);
                    }
                    let _ = reply.send(r);
                }
                Ok(Command::Forget(id)) => {
                    ep.forget_request(now, id);
                    clients.remove(&id);
                }
                Ok(Command::CancelObservation(id)) => {
                    ep.cancel_observation(now, id);
                }
                Ok(Command::Respond {
                    id,
                    response,
                    how,
                    reply,
                }) => {
                    let r = match how {
                        Answer::Observe => ep.respond_and_observe(now, id, response),
                        Answer::Plain => ep.respond(now, id, response).map(|()| None),
                        Answer::Shared(body) => {
                            ep.respond_shared(now, id, response, body).map(|()| None)
                        }
                    };
                    let _ = reply.send(r);
                }
                Ok(Command::Notify {
                    id,
                    response,
                    reply,
                }) => {
                    let _ = reply.send(ep.notify(now, id, response));
                }
            }
        }
        // 2. Transmits.
        while let Some(t) = ep.poll_transmit() {
            wire.send(&socket, t);
        }
        // 3. Events.
        while let Some(e) = ep.poll_event() {
            match e {
                Event::Request { id, peer, request } => {
                    let _ = server.send(ServerEvent::Request { id, peer, request });
                }
                Event::ObservationEnded { id, reason } => {
                    let _ = server.send(ServerEvent::ObservationEnded { id, reason });
                }
                Event::Response { id, response } => {
                    let more = response.observe().is_some();
                    let gone = match clients.get(&id) {
                        Some(tx) => tx.send(ClientEvent::Response(response)).is_err(),
                        None => false,
                    };
                    if !more || gone {
                        clients.remove(&id);
                    }
                    if gone {
                        ep.forget_request(Instant::now(), id);
                    }
                }
                Event::Notification { id, response } => {
                    let gone = match clients.get(&id) {
                        Some(tx) => tx.send(ClientEvent::Notification(response)).is_err(),
                        None => true,
                    };
                    if gone {
                        // Nobody listens any more: stop observing (next one gets RST).
                        clients.remove(&id);
                        ep.forget_request(Instant::now(), id);
                    }
                }
                Event::RequestFailed { id, error } => {
                    if let Some(tx) = clients.remove(&id) {
                        let _ = tx.send(ClientEvent::Failed(error));
                    }
                }
            }
        }
        // Events may have produced transmits (forget) — send them before sleeping.
        while let Some(t) = ep.poll_transmit() {
            wire.send(&socket, t);
        }
        // 4. Wait for a datagram, a wake-up or the next timer.
        let now = Instant::now();
        let next = match (ep.poll_timeout(), wire.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait = next
            .map_or(MAX_WAIT, |t| t.saturating_duration_since(now))
            .clamp(Duration::from_millis(1), MAX_WAIT);
        if current_wait != Some(wait) {
            if socket.set_read_timeout(Some(wait)).is_err() {
                return;
            }
            current_wait = Some(wait);
        }
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if from != wake_addr {
                    wire.receive(&socket, &mut ep, from, &buf[..n]);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(_) => return,
        }
        let now = Instant::now();
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        if wire.poll_timeout().is_some_and(|t| t <= now) {
            wire.handle_timeout(&socket, &mut ep, now);
        }
    }
}
