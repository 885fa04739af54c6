//! How the hub reaches a transport that runs on threads of its own.

#[cfg(feature = "lwm2m")]
use crate::lwm2m::server::UdpServerHandle;
use crate::transport::{DeviceEvent, DeviceOp, Transport};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The hub's handle on a running transport: it hands operations over and can stop it.
/// Events come back on a channel given to [`Hub::start`](super::Hub::start).
pub trait DeviceLink: Send + Sync {
    /// Hands an operation to the transport's thread. An operation for a stopped transport
    /// is dropped (the hub is stopping too).
    fn submit(&self, op: DeviceOp);
    /// Asks the transport to stop; returns at once.
    fn stop(&self);
    /// Whether the transport emits [`DeviceEvent::Sent`] (see
    /// [`Transport::reports_sent`]); the hub tells its job engine. Default: no.
    fn reports_sent(&self) -> bool {
        false
    }
}

#[cfg(feature = "lwm2m")]
impl DeviceLink for UdpServerHandle {
    fn submit(&self, op: DeviceOp) {
        let _ = UdpServerHandle::submit(self, op);
    }
    fn stop(&self) {
        UdpServerHandle::stop(self);
    }
    fn reports_sent(&self) -> bool {
        true
    }
}

/// Runs any sans-IO [`Transport`] on a thread of its own, on the real clock: the in-memory
/// simulated fleet, or a transport of yours.
///
#[cfg_attr(feature = "memory-fleet", doc = "```")]
#[cfg_attr(not(feature = "memory-fleet"), doc = "```ignore")]
/// use twinhub::hub::{DeviceLink, TransportThread};
/// use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
/// let (thread, events) = TransportThread::spawn(MemoryTransport::new(MemoryConfig::default()));
/// assert!(events.try_recv().is_err()); // an empty fleet says nothing
/// thread.stop();
/// ```
pub struct TransportThread {
    ops: Sender<DeviceOp>,
    reports_sent: bool,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TransportThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportThread")
            .field("running", &self.thread.is_some())
            .finish_non_exhaustive()
    }
}

/// The longest the thread sleeps before it looks at its stop flag again.
const MAX_SLEEP: Duration = Duration::from_millis(50);

impl TransportThread {
    /// Starts the thread; returns it and the receiving end of its event channel.
    pub fn spawn<T: Transport + Send + 'static>(mut transport: T) -> (Self, Receiver<DeviceEvent>) {
        let reports_sent = transport.reports_sent();
        let (ops_tx, ops_rx) = mpsc::channel::<DeviceOp>();
        let (events_tx, events_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("twinhub-transport".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    let now = Instant::now();
                    let wait = transport
                        .poll_timeout()
                        .map_or(MAX_SLEEP, |t| t.saturating_duration_since(now))
                        .min(MAX_SLEEP);
                    match ops_rx.recv_timeout(wait) {
                        Ok(op) => {
                            let now = Instant::now();
                            transport.submit(now, op);
                            for op in ops_rx.try_iter() {
                                transport.submit(now, op);
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    transport.handle_timeout(Instant::now());
                    while let Some(event) = transport.poll_event() {
                        if events_tx.send(event).is_err() {
                            return;
                        }
                    }
                }
            })
            .expect("spawning the transport thread");
        (
            TransportThread {
                ops: ops_tx,
                reports_sent,
                stop,
                thread: Some(thread),
            },
            events_rx,
        )
    }
}

impl DeviceLink for TransportThread {
    fn submit(&self, op: DeviceOp) {
        let _ = self.ops.send(op);
    }
    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
    fn reports_sent(&self) -> bool {
        self.reports_sent
    }
}

impl Drop for TransportThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
