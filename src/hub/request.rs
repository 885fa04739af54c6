//! Request/response with one device: [`Hub::request`](super::Hub::request) sends any
//! LWM2M operation and hands back the device's answer, from a thread (blocking, with a
//! timeout) or from async code ([`Reply`] is a `Future` that needs no particular runtime).
//!
//! The operation travels like the hub's own: through the device's queue (a sleeping
//! queue-mode device gets it when it next talks), with CoAP retransmissions. Its outcome
//! arrives as the transport's event; the hub thread hands it to the waiting caller here.
//! Values a read returns also go into the twin, as the hub's own reads do.

use crate::transport::{DeviceError, DeviceReply, OpId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Why [`Hub::request`](super::Hub::request) got no answer from the device.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RequestError {
    /// The device answered with an error, or the transport could not deliver the request
    /// (not registered, queue full, a payload that would not decode or encode: a device's
    /// answer, or the request's content refused before sending, ...).
    Device(DeviceError),
    /// The transport gave up: the request waited in the device's queue past the queue
    /// time-out (a sleeping device, a displaced registration, ...), or was sent and got
    /// no answer in time (CoAP retransmissions ran out, or the response time-out passed,
    /// an empty ACK notwithstanding). See [`Reply`]'s "What ends it".
    TransportTimedOut,
    /// The caller's own timeout passed first. The request may still reach the device;
    /// its answer is then dropped.
    TimedOut,
    /// The hub stopped before the answer came: [`Hub::stop`](super::Hub::stop), the last
    /// clone dropped, or its transport ended (its event channel closed), after which no
    /// answer can come.
    HubStopped,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Device(e) => write!(f, "device error: {e}"),
            RequestError::TransportTimedOut => f.write_str("the device did not answer"),
            RequestError::TimedOut => f.write_str("no answer within the caller's timeout"),
            RequestError::HubStopped => f.write_str("the hub stopped"),
        }
    }
}

impl std::error::Error for RequestError {}

/// The outcome of a request.
pub type RequestResult = Result<DeviceReply, RequestError>;

#[derive(Default)]
struct Slot {
    result: Option<RequestResult>,
    waker: Option<Waker>,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    /// When the request was submitted (for the latency histogram).
    started: Instant,
}

fn lock(m: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The answer to come to one request: wait for it with [`Reply::wait`] (blocking) or
/// `.await` it (any executor; it is woken by the hub thread).
///
/// Dropping a `Reply` abandons the answer (the request itself is not cancelled).
///
/// # What ends it
///
/// `.await` has no deadline of its own, and needs none: every request ends, with
///
/// - the device's answer: `Ok`, or [`RequestError::Device`] for its error code;
/// - at once, [`RequestError::Device`] when the request cannot go: the device has no
///   registration (`NotRegistered`), its queue is full (`QueueFull`: the bundled
///   server's `ServerConfig::queue_capacity` per device, or [`MAX_WAITING`] requests
///   waiting in the hub), or it cannot be encoded;
/// - when the device's registration ends (De-register, expiry, a new Register, a
///   takeover, the twin removed) or moves to another address (NAT rebinding) while the
///   request is out: `Device(RegistrationEnded)` at once (sent, outcome unknown). When a
///   registration ends while the request waits in the device's queue:
///   `Device(NotRegistered)`, unless a new Register replaced it (the request then waits
///   for the new registration);
/// - [`RequestError::TransportTimedOut`] when the transport gives up: with the bundled
///   server, the request waited in the device's queue (the device asleep, its
///   registration displaced, no DTLS session of its identity, behind the requests in
///   flight) past `ServerConfig::queue_timeout` (10 min) from its submission, or, sent,
///   got no answer within the CoAP response time-out (`coap.response_timeout`, 93 s)
///   from its transmission (retransmissions that run out end it earlier, an empty ACK
///   does not stop the clock, and each block of a block-wise answer has its own);
///   the in-memory fleet times out after `MemoryConfig::request_timeout`;
/// - [`RequestError::HubStopped`] when the hub stops or its transport ends.
///
/// So with the bundled server's defaults an unanswered request waits at most 10 min in
/// the queue and then 93 s for each exchange it takes: one, or one per block of a
/// block-wise answer, or one per content format the device refuses (4.06 / 4.15 send it
/// again in the next format, back through the queue under its first deadline). A
/// transport of your own must end every operation it is handed (see
/// [`Transport::submit`](crate::transport::Transport::submit)), or the `Reply` waits for
/// ever. For a shorter bound, give [`Reply::wait`] a timeout, or wrap the `.await` in
/// your runtime's (`tokio::time::timeout`): [`RequestError::TimedOut`] and a dropped
/// `Reply` leave the request to run its course, its answer dropped.
pub struct Reply {
    shared: Arc<Shared>,
    op: OpId,
    waiting: Arc<Waiting>,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").field("op", &self.op).finish()
    }
}

impl Reply {
    /// Blocks until the answer comes or `timeout` passes
    /// ([`RequestError::TimedOut`]); a timeout longer than the clock can count
    /// (`Duration::MAX`) waits as long as it takes.
    pub fn wait(self, timeout: Duration) -> RequestResult {
        let deadline = Instant::now().checked_add(timeout);
        let mut slot = lock(&self.shared.slot);
        loop {
            if let Some(r) = slot.result.take() {
                return r;
            }
            let Some(deadline) = deadline else {
                slot = self
                    .shared
                    .ready
                    .wait(slot)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RequestError::TimedOut);
            }
            slot = self
                .shared
                .ready
                .wait_timeout(slot, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The operation id the request travels under (it shows in the transport's events).
    pub fn op(&self) -> OpId {
        self.op
    }
}

impl Future for Reply {
    type Output = RequestResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RequestResult> {
        let mut slot = lock(&self.shared.slot);
        match slot.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.waiting.abandon(self.op);
    }
}

/// The requests waiting for their answers, by operation id. Bounded by
/// [`MAX_WAITING`]: a request beyond it fails at once with
/// [`DeviceError::QueueFull`].
#[derive(Default)]
pub(crate) struct Waiting {
    by_op: Mutex<HashMap<OpId, Arc<Shared>>>,
    /// Submit-to-answer times of the requests answered (by the device or the transport;
    /// not those failed because the hub stopped).
    pub(crate) latency: super::metrics::Histogram,
}

/// Most requests waiting for an answer at once, all devices together: one more fails at
/// once with [`RequestError::Device`]`(`[`DeviceError::QueueFull`]`)`, unsent. A request
/// stops waiting when it ends, or when its [`Reply`] is dropped.
pub const MAX_WAITING: usize = 65_536;

impl Waiting {
    fn map(&self) -> MutexGuard<'_, HashMap<OpId, Arc<Shared>>> {
        self.by_op.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting for their answers now.
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }

    /// Registers a request under `op`; `None` when [`MAX_WAITING`] are waiting.
    pub(crate) fn register(self: &Arc<Self>, op: OpId) -> Option<Reply> {
        let mut map = self.map();
        if map.len() >= MAX_WAITING {
            return None;
        }
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::default()),
            ready: Condvar::new(),
            started: Instant::now(),
        });
        map.insert(op, shared.clone());
        Some(Reply {
            shared,
            op,
            waiting: self.clone(),
        })
    }

    /// A reply that fails at once (the request was never sent).
    pub(crate) fn failed(self: &Arc<Self>, op: OpId, error: RequestError) -> Reply {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                result: Some(Err(error)),
                waker: None,
            }),
            ready: Condvar::new(),
            started: Instant::now(),
        });
        Reply {
            shared,
            op,
            waiting: self.clone(),
        }
    }

    /// Whether `op` is a request someone waits for.
    pub(crate) fn is_waiting(&self, op: OpId) -> bool {
        self.map().contains_key(&op)
    }

    /// Hands `op`'s outcome to its caller (if still waiting).
    pub(crate) fn complete(&self, op: OpId, result: RequestResult) {
        let Some(shared) = self.map().remove(&op) else {
            return;
        };
        // The hub stopping is no answer: only the device's or the transport's are timed.
        if !matches!(result, Err(RequestError::HubStopped)) {
            self.latency.record(shared.started.elapsed());
        }
        let waker = {
            let mut slot = lock(&shared.slot);
            slot.result = Some(result);
            slot.waker.take()
        };
        shared.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Fails every waiting request (the hub stopped).
    pub(crate) fn fail_all(&self) {
        let ops: Vec<OpId> = self.map().keys().copied().collect();
        for op in ops {
            self.complete(op, Err(RequestError::HubStopped));
        }
    }

    fn abandon(&self, op: OpId) {
        self.map().remove(&op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `HubMetrics::request_latency` is the "submit-to-answer time" of requests: the
    /// device's answer, its error, or the transport giving up. A request the hub failed
    /// because it stopped got no answer: it is not a latency.
    #[test]
    fn requests_failed_by_the_hub_stopping_are_not_timed() {
        let waiting = Arc::new(Waiting::default());
        let answered = waiting.register(OpId(1)).unwrap();
        let _stopped = waiting.register(OpId(2)).unwrap();
        let _raced = waiting.register(OpId(3)).unwrap();
        waiting.complete(OpId(1), Err(RequestError::TransportTimedOut));
        assert_eq!(
            answered.wait(Duration::ZERO),
            Err(RequestError::TransportTimedOut)
        );
        waiting.complete(OpId(3), Err(RequestError::HubStopped));
        waiting.fail_all();
        assert_eq!(waiting.latency.snapshot().count, 1);
    }
}
