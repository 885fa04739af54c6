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
//! To run the client under another runtime (tokio, an embedded loop), do what
//! [`DeviceThread`] does: feed datagrams to `handle_datagram`, send `poll_transmit`,
//! sleep until `poll_timeout` and call `handle_timeout`.

use super::engine::{ClientEvent, Lwm2mClient};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a [`DeviceThread`] is started.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// The thread's stack size in bytes.
    pub stack_size: usize,
    /// Events kept for the application; when full, newer events are dropped.
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
    thread: Option<JoinHandle<io::Result<()>>>,
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
        let worker = Worker {
            client: client.clone(),
            socket: socket.clone(),
            local,
            stop: stop.clone(),
            events: tx,
            max_sleep: options.max_sleep,
        };
        let thread = std::thread::Builder::new()
            .name(options.name)
            .stack_size(options.stack_size.max(32 * 1024))
            .spawn(move || worker.run())?;
        Ok(DeviceThread {
            client,
            socket,
            local,
            stop,
            events,
            thread: Some(thread),
        })
    }

    /// The device's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs `f` on the client (locked), then wakes the thread so that anything `f` queued
    /// (notifications, an update) goes out now.
    pub fn with<R>(&self, f: impl FnOnce(&mut Lwm2mClient) -> R) -> R {
        let r = f(&mut lock(&self.client));
        self.wake();
        r
    }

    /// The client's events (registered, reboot, executed, ...).
    pub fn events(&self) -> &Receiver<ClientEvent> {
        &self.events
    }

    fn wake(&self) {
        let _ = self.socket.send_to(&[], self.local);
    }

    /// De-registers, waits up to `timeout` for the server's answer, and stops the thread.
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
    client: Arc<Mutex<Lwm2mClient>>,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    events: SyncSender<ClientEvent>,
    max_sleep: Duration,
}

impl Worker {
    fn run(self) -> io::Result<()> {
        let mut buf = vec![0u8; 2048];
        while !self.stop.load(Ordering::SeqCst) {
            let deadline = {
                let mut c = lock(&self.client);
                c.handle_timeout(Instant::now());
                self.flush(&mut c);
                c.poll_timeout()
            };
            let now = Instant::now();
            let sleep = deadline
                .map_or(self.max_sleep, |d| d.saturating_duration_since(now))
                .clamp(Duration::from_millis(1), self.max_sleep);
            self.socket.set_read_timeout(Some(sleep))?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if n == 0 && from == self.local {
                        continue;
                    }
                    let mut c = lock(&self.client);
                    c.handle_datagram(Instant::now(), from, &buf[..n]);
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
        Ok(())
    }

    fn flush(&self, c: &mut Lwm2mClient) {
        while let Some(t) = c.poll_transmit() {
            // A send error (e.g. no route) is like a lost datagram: CoAP retransmits.
            let _ = self.socket.send_to(&t.payload, t.destination);
        }
        while let Some(e) = c.poll_event() {
            if let Err(TrySendError::Disconnected(_)) = self.events.try_send(e) {
                break;
            }
        }
    }
}
