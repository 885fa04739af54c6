//! Subscriptions: what the hub pushes to services instead of being polled (see
//! [`Subscription`]).

use crate::job::JobProgress;
use crate::registry::{Change, FeedGap, Registry, SharedRegistry};
use crate::transport::RejectReason;
use crate::{DeviceId, Timestamp};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// One thing a subscription delivers.
///
/// JSON: internally tagged by `type`: `{"type":"twin","seq":7,"device":"d1",
/// "kind":"deviceProperty","name":"BatteryLevel","value":80,"previous":81}`,
/// `{"type":"lifecycle","device":"d1","event":"registered",...}`,
/// `{"type":"job","record":{...},"statistics":{...}}`,
/// `{"type":"lagged","missed":12,"resumeAfter":7}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
#[non_exhaustive]
pub enum HubEvent {
    /// A twin changed (an entry of the change feed).
    Twin(Change),
    /// A device registered, updated, de-registered, expired or was refused.
    Lifecycle(LifecycleEvent),
    /// A job or child job changed.
    Job(JobProgress),
    /// Events were dropped: the queue was full, or the feed itself dropped twin changes
    /// before they were published (a write of more changes than the feed holds). Every
    /// event before this one was delivered; `missed` events at this point were not (for
    /// changes the feed dropped, all of them, whatever the subscription's filters: which
    /// ones the filters would have kept is no longer known).
    /// Twin changes after `resume_after` can be read again from the feed
    /// ([`SubscribeOptions::after`]) while it still holds them (else that is a
    /// [`FeedGap`]: re-read the twins). Events dropped while a `Lagged` is the last one
    /// queued join its `missed` (they are missed at the same point); once it was taken,
    /// the next `Lagged` may repeat its `resume_after`.
    #[serde(rename_all = "camelCase")]
    Lagged {
        /// How many events were dropped.
        missed: u64,
        /// The sequence number of the last twin change queued before the drop.
        resume_after: u64,
    },
}

/// What happened to a device's registration.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    /// The device; for a rejection, the endpoint name it used, which may not be a valid
    /// device id (or `""` when the request named none).
    pub device: String,
    /// What happened.
    pub event: LifecycleKind,
    /// Why a registration was refused (its display text), `None` otherwise.
    pub reason: Option<String>,
    /// The device's address, when the transport knows it.
    pub address: Option<SocketAddr>,
    /// When the hub applied it.
    pub at: Timestamp,
}

/// The kinds of [`LifecycleEvent`] (JSON: camelCase names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LifecycleKind {
    /// A (first or repeated) registration was accepted.
    Registered,
    /// A registration Update was accepted.
    Updated,
    /// The device de-registered.
    Deregistered,
    /// The registration's lifetime ran out.
    Expired,
    /// A registration (or an Update or De-register) was refused.
    Rejected,
    /// A device was bootstrapped: it was given its server accounts and acknowledged
    /// Bootstrap-Finish (it registers next).
    Bootstrapped,
    /// A bootstrap was refused (no plan for the endpoint) or failed at a step (`reason`
    /// says which).
    BootstrapFailed,
}

impl LifecycleEvent {
    pub(crate) fn new(device: &DeviceId, event: LifecycleKind, at: Timestamp) -> Self {
        LifecycleEvent {
            device: device.to_string(),
            event,
            reason: None,
            address: None,
            at,
        }
    }

    pub(crate) fn bootstrap(
        endpoint: &str,
        outcome: &crate::transport::BootstrapOutcome,
        address: Option<SocketAddr>,
        at: Timestamp,
    ) -> Self {
        use crate::transport::BootstrapOutcome;
        let (event, reason) = match outcome {
            BootstrapOutcome::Finished => (LifecycleKind::Bootstrapped, None),
            BootstrapOutcome::Refused => (LifecycleKind::BootstrapFailed, Some("refused".into())),
            BootstrapOutcome::Failed(why) => (LifecycleKind::BootstrapFailed, Some(why.clone())),
        };
        LifecycleEvent {
            device: endpoint.to_owned(),
            event,
            reason,
            address,
            at,
        }
    }

    pub(crate) fn rejected(
        endpoint: &str,
        reason: &RejectReason,
        address: Option<SocketAddr>,
        at: Timestamp,
    ) -> Self {
        LifecycleEvent {
            device: endpoint.to_owned(),
            event: LifecycleKind::Rejected,
            reason: Some(reason.to_string()),
            address,
            at,
        }
    }
}

/// What a subscription wants. `Default`: everything from now on except re-reports of
/// unchanged values, at most 4,096 queued events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Twin changes (the change feed).
    pub twins: bool,
    /// Also device properties re-reported with the value they had (a device re-reports
    /// every resource of an observed instance when one changes); off by default.
    pub rereports: bool,
    /// Registration lifecycle events.
    pub lifecycle: bool,
    /// Job progress.
    pub jobs: bool,
    /// Most events queued for this subscription; beyond it the hub drops events for it
    /// until the consumer has emptied the queue, then delivers one [`HubEvent::Lagged`],
    /// which waits behind the full queue ([`Subscription::len`] counts it, so it reaches
    /// `capacity + 1`). 0 counts as 1: the hub never waits for a consumer, so the rendezvous
    /// a zero-capacity channel means elsewhere is not on offer, and a queue that holds
    /// nothing would turn every event into a `Lagged`.
    pub capacity: usize,
    /// Replay the twin changes after this sequence number first (`None`: from now on,
    /// that is after the registry's newest change, published yet or not, whoever else
    /// listens). The replay is not bounded by `capacity`, only by what the feed holds;
    /// with a store it replays committed changes only. A number the feed dropped, or one
    /// this history never handed out (from another history: beyond the newest number,
    /// on a hub restarted from a store one the store reserved that no change used, or on
    /// a hub without a store one below where its numbers start, as an earlier run's: see
    /// the hub's module docs), makes [`Hub::subscribe`](super::Hub::subscribe) fail with
    /// a [`FeedGap`].
    ///
    /// A number a store has not committed yet (a write straight through
    /// [`Hub::registry`](super::Hub::registry), or a write whose commit failed while the
    /// rebuild from the store failed too, so memory kept it) may be rolled back by a later
    /// rebuild. A subscription resumed after it then goes on with the changes after the
    /// rebuild, none missed or repeated (the rebuilt registry numbers past every number
    /// handed out before), but it is not told that the change it resumed after is gone;
    /// a new subscription after that number fails with a [`FeedGap`].
    pub after: Option<u64>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            twins: true,
            rereports: false,
            lifecycle: true,
            jobs: true,
            capacity: 4096,
            after: None,
        }
    }
}

impl SubscribeOptions {
    /// Resume the twin changes after `seq` (see [`SubscribeOptions::after`]).
    pub fn after(mut self, seq: u64) -> Self {
        self.after = Some(seq);
        self
    }

    /// Only twin changes.
    pub fn twins_only() -> Self {
        SubscribeOptions {
            lifecycle: false,
            jobs: false,
            ..SubscribeOptions::default()
        }
    }

    fn wants(&self, event: &HubEvent) -> bool {
        match event {
            HubEvent::Twin(c) => self.twins && (self.rereports || !c.kind.is_rereport()),
            HubEvent::Lifecycle(_) => self.lifecycle,
            HubEvent::Job(_) => self.jobs,
            HubEvent::Lagged { .. } => true,
        }
    }
}

/// Why [`Subscription::try_recv`] returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued now.
    Empty,
    /// The hub stopped and everything queued was delivered.
    Closed,
}

/// Why [`Subscription::recv_timeout`] returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// Nothing arrived in time.
    Timeout,
    /// The hub stopped and everything queued was delivered.
    Closed,
}

impl std::fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TryRecvError::Empty => "no event queued",
            TryRecvError::Closed => "the hub stopped",
        })
    }
}

impl std::fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecvTimeoutError::Timeout => "no event in time",
            RecvTimeoutError::Closed => "the hub stopped",
        })
    }
}

impl std::error::Error for TryRecvError {}
impl std::error::Error for RecvTimeoutError {}

/// A subscriber's queue, shared by the hub (which fills it) and the [`Subscription`].
struct Queue {
    options: SubscribeOptions,
    events: VecDeque<HubEvent>,
    /// Events are being dropped until the consumer has emptied the queue.
    lagging: bool,
    missed: u64,
    /// The last twin change queued (or, before any, where the subscription started).
    queued_through: u64,
    /// Twin changes at or below this were replayed (or asked to be skipped).
    skip_through: u64,
    /// Where the subscription's twin changes start: `options.after`, or the newest change
    /// when it was made.
    starts_after: u64,
    closed: bool,
    waker: Option<Waker>,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `event` if the subscriber wants it and has room; returns whether it did.
    fn offer(&self, event: &HubEvent) -> bool {
        let mut q = self.lock();
        if q.closed || !q.options.wants(event) {
            return false;
        }
        if let HubEvent::Twin(c) = event
            && c.seq <= q.skip_through
        {
            return false;
        }
        if q.lagging || q.events.len() >= q.options.capacity {
            Shared::drop_events(&mut q, 1);
            return false;
        }
        if let HubEvent::Twin(c) = event {
            q.queued_through = c.seq;
        }
        q.events.push_back(event.clone());
        true
    }

    /// Counts `n` events dropped for a full queue. When the queue ends with a
    /// [`HubEvent::Lagged`] (a feed gap's) and nothing was queued after it, these drops
    /// happen at the same point: they join its count rather than make a second `Lagged`
    /// right behind it.
    fn drop_events(q: &mut Queue, n: u64) {
        if !q.lagging
            && let Some(HubEvent::Lagged { missed, .. }) = q.events.back_mut()
        {
            *missed += n;
            return;
        }
        q.lagging = true;
        q.missed += n;
    }

    /// Wakes the threads waiting in `recv`; returns the task's waker for the caller to
    /// wake once it holds no lock.
    fn notify(&self) -> Option<Waker> {
        let waker = self.lock().waker.take();
        self.ready.notify_all();
        waker
    }

    fn pop(q: &mut Queue) -> Option<HubEvent> {
        if let Some(e) = q.events.pop_front() {
            return Some(e);
        }
        if q.lagging {
            q.lagging = false;
            let missed = std::mem::take(&mut q.missed);
            return Some(HubEvent::Lagged {
                missed,
                resume_after: q.queued_through,
            });
        }
        None
    }
}

/// What the hub pushes to a service instead of being polled: a bounded queue of
/// [`HubEvent`]s that [`Hub::subscribe`](super::Hub::subscribe) returns and the hub fills:
///
/// - **twin changes**: every entry of the registry's change feed, in sequence order, a
///   reported device property with its value and previous value (re-reports of an
///   unchanged value are left out unless [`SubscribeOptions::rereports`] asks for them);
/// - **registration lifecycle**: registered, updated, de-registered, expired and
///   *rejected* (with the endpoint name, the reason and the address);
/// - **job progress**: each child and parent record a batch changed, a parent with its
///   statistics.
///
/// **When.** The hub publishes after it applied (and, with a store, committed) a batch of
/// device events, and after every service write through the hub, before the call
/// returns; writes made straight through [`Hub::registry`](super::Hub::registry) are
/// published on the hub thread's next pass (within 20 ms). Within one publication twin
/// changes come first, then registrations, then job progress.
///
/// **Bounded, with a lag signal.** A subscription holds at most
/// [`SubscribeOptions::capacity`] events (more only right after a replay,
/// [`SubscribeOptions::after`], which is not bounded by it). When the consumer falls
/// behind and the queue is full, the hub drops events for it (it never waits for a
/// consumer) until the consumer has emptied the queue; it then receives one
/// [`HubEvent::Lagged`] with the number of events it missed and the sequence number to
/// resume the twin changes from. That `Lagged` waits behind the full queue, so
/// [`Subscription::len`] reaches `capacity + 1` while events are being dropped.
///
/// **Resumable.** [`SubscribeOptions::after`] replays the twin changes after a sequence
/// number from the registry's change feed, then continues live, without a gap or a
/// repeat; a sequence number the feed no longer holds is a [`FeedGap`]. A hub started on
/// a store has the feed the store kept (see [`StoreConfig`](crate::store::StoreConfig)'s
/// retention), so a consumer resumes across restarts too. Registrations and job progress are not replayed: re-read the twins'
/// connection state and [`Hub::job`](super::Hub::job) after a gap.
///
/// **Blocking or async.** [`Subscription::recv`], [`Subscription::recv_timeout`] and
/// [`Subscription::try_recv`] for threads; [`Subscription::recv_async`] is a future (woken by
/// the hub through the task's waker, no runtime needed). After the hub stops
/// ([`Hub::stop`](super::Hub::stop), its last clone dropped, or its transport ended), the
/// queued events are still delivered, then `recv` returns `None`.
///
/// Dropping it ends the subscription.
pub struct Subscription {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = self.shared.lock();
        f.debug_struct("Subscription")
            .field("options", &q.options)
            .field("queued", &q.events.len())
            .field("lagging", &q.lagging)
            .field("closed", &q.closed)
            .finish()
    }
}

impl Subscription {
    /// The next event, waiting as long as it takes; `None` once the hub stopped and
    /// every queued event was delivered.
    pub fn recv(&self) -> Option<HubEvent> {
        let mut q = self.shared.lock();
        loop {
            if let Some(e) = Shared::pop(&mut q) {
                return Some(e);
            }
            if q.closed {
                return None;
            }
            q = self.shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<HubEvent, RecvTimeoutError> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            // Longer than the clock can count: as long as it takes.
            return self.recv().ok_or(RecvTimeoutError::Closed);
        };
        let mut q = self.shared.lock();
        loop {
            if let Some(e) = Shared::pop(&mut q) {
                return Ok(e);
            }
            if q.closed {
                return Err(RecvTimeoutError::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            q = self
                .shared
                .ready
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Result<HubEvent, TryRecvError> {
        let mut q = self.shared.lock();
        match Shared::pop(&mut q) {
            Some(e) => Ok(e),
            None if q.closed => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// The next event as a future: `sub.recv_async().await` in any async runtime. Resolves
    /// to `None` once the hub stopped and every queued event was delivered.
    pub fn recv_async(&mut self) -> RecvFuture<'_> {
        RecvFuture { sub: self }
    }

    /// Events queued now, counting a [`HubEvent::Lagged`] waiting to be delivered: at most
    /// [`SubscribeOptions::capacity`] + 1 (a full queue and the lag signal behind it), or
    /// the replay's length + 1 right after a replay ([`SubscribeOptions::after`]) longer
    /// than the capacity.
    pub fn len(&self) -> usize {
        let q = self.shared.lock();
        q.events.len() + usize::from(q.lagging)
    }

    /// Whether no event is queued now (nor a [`HubEvent::Lagged`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sequence number of the last twin change queued: where a new subscription
    /// would resume ([`SubscribeOptions::after`]) to continue this one's twin changes.
    pub fn resume_after(&self) -> u64 {
        self.shared.lock().queued_through
    }

    /// The sequence number this subscription's twin changes start after, which never
    /// changes: [`SubscribeOptions::after`], or the registry's newest change when it was
    /// made. A consumer that has taken no twin change yet resumes from here (unlike
    /// [`Subscription::resume_after`], it does not move with what the hub queues, so
    /// nothing queued and not yet taken lies at or before it).
    pub fn starts_after(&self) -> u64 {
        self.shared.lock().starts_after
    }
}

/// The future of [`Subscription::recv_async`].
#[derive(Debug)]
pub struct RecvFuture<'a> {
    sub: &'a mut Subscription,
}

impl Future for RecvFuture<'_> {
    type Output = Option<HubEvent>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut q = self.sub.shared.lock();
        if let Some(e) = Shared::pop(&mut q) {
            return Poll::Ready(Some(e));
        }
        if q.closed {
            return Poll::Ready(None);
        }
        match &mut q.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The hub's side: every subscriber, and how far the change feed was published.
#[derive(Default)]
pub(crate) struct Publisher {
    state: Mutex<PublisherState>,
}

#[derive(Default)]
struct PublisherState {
    /// The newest feed sequence number fanned out (or skipped with nobody listening).
    /// Never past what the hub says is publishable (with a store, what is committed).
    through: u64,
    subscribers: Vec<Arc<Shared>>,
    closed: bool,
}

impl Publisher {
    fn lock(&self) -> MutexGuard<'_, PublisherState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new subscription; with `options.after`, the feed's changes after it first (those
    /// `publishable` allows: see [`Publisher::publish`]), else everything after the
    /// registry's newest change, published or not.
    pub(crate) fn subscribe(
        &self,
        registry: &SharedRegistry,
        mut options: SubscribeOptions,
        publishable: impl FnOnce(&Registry) -> u64,
    ) -> Result<Subscription, FeedGap> {
        options.capacity = options.capacity.max(1);
        let mut state = self.lock();
        // Dropped subscriptions count as nobody, here as in `publish`.
        state.subscribers.retain(|s| Arc::strong_count(s) > 1);
        let reg = registry.read();
        if state.subscribers.is_empty() {
            // Nothing was fanned out while nobody listened.
            state.through = publishable(&reg);
        }
        // From now on: a change made before this call, even one not published yet, is
        // not this subscription's, whoever else listens.
        let now = reg.last_seq().max(state.through);
        let mut queue = Queue {
            options,
            events: VecDeque::new(),
            lagging: false,
            missed: 0,
            queued_through: now,
            skip_through: now,
            starts_after: now,
            closed: state.closed,
            waker: None,
        };
        if let Some(after) = queue.options.after {
            queue.starts_after = after;
            queue.queued_through = after;
            queue.skip_through = after.max(state.through);
            for c in reg.changes_after(after)? {
                if c.seq > state.through {
                    break;
                }
                let event = HubEvent::Twin(c.clone());
                if queue.options.wants(&event) {
                    queue.events.push_back(event);
                }
                queue.queued_through = c.seq;
            }
        }
        drop(reg);
        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            ready: Condvar::new(),
        });
        // A subscription made after the hub stopped is closed from the start; nothing
        // would ever publish to it or take it out of the list.
        if !state.closed {
            state.subscribers.push(shared.clone());
        }
        Ok(Subscription { shared })
    }

    /// Live subscribers, and the newest feed sequence number published to them.
    pub(crate) fn status(&self) -> (usize, u64) {
        let state = self.lock();
        let live = state
            .subscribers
            .iter()
            .filter(|s| Arc::strong_count(s) > 1)
            .count();
        (live, state.through)
    }

    /// Whether anyone listens (for job progress, the only costly event to build).
    pub(crate) fn has_job_subscribers(&self) -> bool {
        self.lock()
            .subscribers
            .iter()
            .any(|s| Arc::strong_count(s) > 1 && s.lock().options.jobs)
    }

    /// Fans out the registry's new feed entries through the sequence number
    /// `publishable` names, then `others`, to every subscriber. With a store that is the
    /// committed one: a change not yet on the disk waits (a rebuild from the store may
    /// replace it; a later publish sends it). It is asked with the registry's read lock
    /// held, so no write lands between the answer and the fan-out.
    pub(crate) fn publish(
        &self,
        registry: &SharedRegistry,
        others: Vec<HubEvent>,
        publishable: impl FnOnce(&Registry) -> u64,
    ) {
        let mut state = self.lock();
        state.subscribers.retain(|s| Arc::strong_count(s) > 1);
        let reg = registry.read();
        let limit = publishable(&reg).min(reg.last_seq());
        if state.subscribers.is_empty() {
            state.through = limit;
            return;
        }
        let mut woken = vec![false; state.subscribers.len()];
        if limit < state.through {
            // The registry was rebuilt from the store behind what was published.
            state.through = limit;
        }
        let from = state.through;
        let mut through = limit;
        match reg.changes_after(from) {
            Ok(changes) => {
                for c in changes.take_while(|c| c.seq <= limit) {
                    let event = HubEvent::Twin(c.clone());
                    for (i, s) in state.subscribers.iter().enumerate() {
                        woken[i] |= s.offer(&event);
                    }
                }
            }
            Err(gap) => {
                // The feed dropped changes before they were published (a bulk load larger
                // than the feed): every twin subscriber that had not got past them is
                // told, in order, then gets what the feed still holds.
                through = through.max(gap.dropped_through);
                for (i, s) in state.subscribers.iter().enumerate() {
                    let mut q = s.lock();
                    // A subscription resumed (`after`) past some of them missed only the rest.
                    let dropped = gap.dropped_through.saturating_sub(from.max(q.skip_through));
                    if !q.options.twins || q.closed || dropped == 0 {
                        continue;
                    }
                    if q.lagging || q.events.len() >= q.options.capacity {
                        Shared::drop_events(&mut q, dropped);
                    } else {
                        let resume_after = q.queued_through;
                        q.events.push_back(HubEvent::Lagged {
                            missed: dropped,
                            resume_after,
                        });
                    }
                    woken[i] = true;
                }
                if let Ok(changes) = reg.changes_after(gap.dropped_through) {
                    for c in changes.take_while(|c| c.seq <= limit) {
                        let event = HubEvent::Twin(c.clone());
                        for (i, s) in state.subscribers.iter().enumerate() {
                            woken[i] |= s.offer(&event);
                        }
                    }
                }
            }
        }
        state.through = through;
        drop(reg);
        for event in &others {
            for (i, s) in state.subscribers.iter().enumerate() {
                woken[i] |= s.offer(event);
            }
        }
        let wakers: Vec<Waker> = state
            .subscribers
            .iter()
            .enumerate()
            .filter(|(i, s)| woken[*i] || s.lock().lagging)
            .filter_map(|(_, s)| s.notify())
            .collect();
        // Tasks' wakers run with no lock held: one that polls its task at once may call
        // the hub.
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Ends every subscription (the hub stopped): queued events are still delivered.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let wakers: Vec<Waker> = state
            .subscribers
            .drain(..)
            .filter_map(|s| {
                s.lock().closed = true;
                s.notify()
            })
            .collect();
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::{ServiceValue, Twin};
    use std::sync::mpsc;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    /// A subscriber made after the feed dropped unpublished changes (so it missed none of
    /// them) is woken for the changes after it that the same publication queues for it.
    #[test]
    fn a_publication_past_a_feed_gap_wakes_a_subscriber_that_missed_nothing() {
        let registry = SharedRegistry::new(Registry::with_feed_capacity(4));
        let publisher = Publisher::default();
        let newest = |r: &Registry| r.last_seq();
        // Someone listens, so nothing is skipped as unheard: `through` stays at 0.
        let early = publisher
            .subscribe(&registry, SubscribeOptions::twins_only(), newest)
            .unwrap();
        {
            let mut w = registry.write();
            for i in 0..10 {
                w.create(Twin::new(id(&format!("d{i}")))).unwrap();
            }
        }
        let late = publisher
            .subscribe(&registry, SubscribeOptions::twins_only(), newest)
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let event = late.recv();
            tx.send(event).unwrap();
        });
        // Let the waiter block in `recv` before anything is queued for it.
        std::thread::sleep(Duration::from_millis(50));
        registry
            .write()
            .set_service_property("d1", "region", Some(ServiceValue::from("eu")), None)
            .unwrap();
        publisher.publish(&registry, Vec::new(), newest);
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the late subscriber was woken for the change queued for it");
        match got {
            Some(HubEvent::Twin(c)) => assert_eq!(c.device.as_str(), "d1"),
            other => panic!("expected the twin change, got {other:?}"),
        }
        waiter.join().unwrap();
        // The early one missed what the feed dropped (changes 1 to 7 of 11) and was told
        // so first, then got the four the feed held.
        let first = early.try_recv();
        assert!(
            matches!(
                first,
                Ok(HubEvent::Lagged {
                    missed: 7,
                    resume_after: 0
                })
            ),
            "{first:?}"
        );
        let rest: Vec<u64> = std::iter::from_fn(|| match early.try_recv() {
            Ok(HubEvent::Twin(c)) => Some(c.seq),
            _ => None,
        })
        .collect();
        assert_eq!(rest, [8, 9, 10, 11]);
    }

    /// `Subscription::len` counts the `Lagged` that waits behind a full queue: at most
    /// `capacity + 1`, and exactly that while events are being dropped.
    #[test]
    fn len_is_at_most_the_capacity_and_the_lag_signal() {
        let registry = SharedRegistry::new(Registry::new());
        let publisher = Publisher::default();
        let newest = |r: &Registry| r.last_seq();
        let options = SubscribeOptions {
            capacity: 2,
            ..SubscribeOptions::twins_only()
        };
        let sub = publisher.subscribe(&registry, options, newest).unwrap();
        for i in 0..5 {
            registry
                .write()
                .create(Twin::new(id(&format!("d{i}"))))
                .unwrap();
            publisher.publish(&registry, Vec::new(), newest);
            assert!(sub.len() <= 3, "{} queued", sub.len());
        }
        assert_eq!(sub.len(), 3, "two changes and the lag signal");
        assert!(matches!(sub.try_recv(), Ok(HubEvent::Twin(c)) if c.seq == 1));
        assert!(matches!(sub.try_recv(), Ok(HubEvent::Twin(c)) if c.seq == 2));
        assert_eq!(sub.len(), 1);
        let lagged = sub.try_recv();
        assert_eq!(
            lagged,
            Ok(HubEvent::Lagged {
                missed: 3,
                resume_after: 2
            })
        );
        assert!(sub.is_empty());
    }

    /// `SubscribeOptions::capacity` 0 counts as 1 (the hub never waits for a consumer,
    /// so there is no rendezvous): the first change is delivered, not only a `Lagged`.
    #[test]
    fn a_capacity_of_zero_counts_as_one() {
        let registry = SharedRegistry::new(Registry::new());
        let publisher = Publisher::default();
        let newest = |r: &Registry| r.last_seq();
        let options = SubscribeOptions {
            capacity: 0,
            ..SubscribeOptions::twins_only()
        };
        let sub = publisher.subscribe(&registry, options, newest).unwrap();
        for i in 0..3 {
            registry
                .write()
                .create(Twin::new(id(&format!("d{i}"))))
                .unwrap();
        }
        publisher.publish(&registry, Vec::new(), newest);
        assert!(matches!(sub.try_recv(), Ok(HubEvent::Twin(c)) if c.seq == 1));
        let lagged = sub.try_recv();
        assert_eq!(
            lagged,
            Ok(HubEvent::Lagged {
                missed: 2,
                resume_after: 1
            })
        );
        registry.write().create(Twin::new(id("d3"))).unwrap();
        publisher.publish(&registry, Vec::new(), newest);
        assert!(matches!(sub.try_recv(), Ok(HubEvent::Twin(c)) if c.seq == 4));
    }

    mod model {
        //! Random sequences of writes, publications (behind a lagging "committed" mark,
        //! as with a store), subscriptions (live or resumed), receives and drops, checked
        //! against the list of every change made: each subscription's twin changes come
        //! in order, each once, each wanted, and every wanted change it did not get lies
        //! in a window a `Lagged` announced, whose `resume_after` is the last change
        //! delivered before it (or a change it did not want after that one).
        use super::*;
        use crate::twin::{Scalar, Twin};
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Op {
            /// Device `d` reports BatteryLevel `v` (the same value again: a re-report).
            Report { d: u8, v: u8 },
            /// The committed mark moves to `lag` changes behind the newest, then the hub
            /// publishes through it.
            Publish { lag: u8 },
            /// A new subscription; `resume: Some(back)` resumes `back` changes before the
            /// newest.
            Subscribe {
                capacity: u8,
                rereports: bool,
                resume: Option<u8>,
            },
            /// Subscription `i` (modulo those alive) takes up to `n` queued events.
            Recv { i: u8, n: u8 },
            /// Subscription `i` is dropped.
            Drop { i: u8 },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0u8..3, 0u8..3).prop_map(|(d, v)| Op::Report { d, v }),
                2 => (0u8..4).prop_map(|lag| Op::Publish { lag }),
                1 => (1u8..5, any::<bool>(), proptest::option::of(0u8..12)).prop_map(
                    |(capacity, rereports, resume)| Op::Subscribe { capacity, rereports, resume }
                ),
                2 => (any::<u8>(), 1u8..6).prop_map(|(i, n)| Op::Recv { i, n }),
                1 => any::<u8>().prop_map(|i| Op::Drop { i }),
            ]
        }

        struct Sub {
            sub: Subscription,
            rereports: bool,
            /// Changes after this one are the subscription's.
            start: u64,
            got: Vec<HubEvent>,
        }

        fn take(s: &mut Sub, n: usize) {
            for _ in 0..n {
                match s.sub.try_recv() {
                    Ok(e) => s.got.push(e),
                    Err(_) => break,
                }
            }
        }

        /// `published`: the newest change published (the end of what `s` is owed).
        fn check(s: &Sub, rereport: &[bool], published: u64) -> Result<(), TestCaseError> {
            let wanted = |seq: u64| s.rereports || !rereport[seq as usize - 1];
            let mut last = s.start;
            // (resume_after, missed) of a Lagged whose window is still open.
            let mut open: Option<(u64, u64)> = None;
            let close = |open: &mut Option<(u64, u64)>, upto: u64| -> Result<(), TestCaseError> {
                if let Some((from, missed)) = open.take() {
                    let lost = (from + 1..upto).filter(|&q| wanted(q)).count() as u64;
                    prop_assert!(
                        missed >= lost,
                        "Lagged({from}) counts {missed}, lost {lost}"
                    );
                    if s.rereports {
                        prop_assert_eq!(missed, lost, "Lagged({}) before {}", from, upto);
                    }
                }
                Ok(())
            };
            for e in &s.got {
                match e {
                    HubEvent::Twin(c) => {
                        prop_assert!(c.seq > last, "{} after {}", c.seq, last);
                        prop_assert!(wanted(c.seq), "unwanted {}", c.seq);
                        match open {
                            Some(_) => close(&mut open, c.seq)?,
                            None => {
                                for q in last + 1..c.seq {
                                    prop_assert!(!wanted(q), "{} skipped before {}", q, c.seq);
                                }
                            }
                        }
                        last = c.seq;
                    }
                    HubEvent::Lagged {
                        missed,
                        resume_after,
                    } => {
                        // Another `Lagged` before any change: more missed at the same
                        // point (the consumer took the first before the second drop).
                        if let Some((from, before)) = open {
                            prop_assert_eq!(*resume_after, from);
                            open = Some((from, before + missed));
                            continue;
                        }
                        // Where to resume: the last change delivered, or past changes
                        // it did not want after that one.
                        prop_assert!(*resume_after >= last, "resume {} < {}", resume_after, last);
                        for q in last + 1..=*resume_after {
                            prop_assert!(!wanted(q), "{} skipped before Lagged", q);
                        }
                        prop_assert!(*missed > 0);
                        open = Some((*resume_after, *missed));
                    }
                    other => prop_assert!(false, "not asked for: {:?}", other),
                }
            }
            let end = published.max(last) + 1;
            match open {
                Some(_) => close(&mut open, end)?,
                None => {
                    for q in last + 1..end {
                        prop_assert!(!wanted(q), "{} never delivered", q);
                    }
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
            #[test]
            fn subscriptions_deliver_every_wanted_change_once_in_order_or_announce_the_gap(
                ops in proptest::collection::vec(op(), 1..80)
            ) {
                let registry = SharedRegistry::new(Registry::with_feed_capacity(8));
                for d in 0..3 {
                    registry.write().create(Twin::new(id(&format!("d{d}")))).unwrap();
                }
                let publisher = Publisher::default();
                // rereport[seq - 1]: whether change `seq` is a re-report.
                let mut rereport: Vec<bool> = vec![false; 3];
                let mut committed = registry.read().last_seq();
                let mut published = 0;
                let mut subs: Vec<Sub> = Vec::new();
                for op in ops {
                    match op {
                        Op::Report { d, v } => {
                            let mut w = registry.write();
                            w.report_device_property(
                                &format!("d{d}"),
                                "BatteryLevel",
                                Scalar::from(i64::from(v)),
                                Timestamp::from_millis(1 + rereport.len() as u64),
                            )
                            .unwrap();
                            let c = w.changes_after(w.last_seq() - 1).unwrap().next().unwrap();
                            prop_assert_eq!(c.seq as usize, rereport.len() + 1);
                            rereport.push(c.kind.is_rereport());
                        }
                        Op::Publish { lag } => {
                            let newest = registry.read().last_seq();
                            committed = committed.max(newest.saturating_sub(u64::from(lag)));
                            publisher.publish(&registry, Vec::new(), |_| committed);
                            published = committed;
                        }
                        Op::Subscribe { capacity, rereports, resume } => {
                            let newest = registry.read().last_seq();
                            let options = SubscribeOptions {
                                capacity: usize::from(capacity),
                                rereports,
                                after: resume.map(|back| newest.saturating_sub(u64::from(back))),
                                ..SubscribeOptions::twins_only()
                            };
                            let after = options.after;
                            // Nothing publishes between here and the subscription: `start`
                            // is the newest change unless resumed.
                            if let Ok(sub) = publisher.subscribe(&registry, options, |_| committed) {
                                subs.push(Sub {
                                    sub,
                                    rereports,
                                    start: after.unwrap_or(newest),
                                    got: Vec::new(),
                                });
                            }
                        }
                        Op::Recv { i, n } if !subs.is_empty() => {
                            let k = usize::from(i) % subs.len();
                            take(&mut subs[k], usize::from(n));
                        }
                        Op::Drop { i } if !subs.is_empty() => {
                            let k = usize::from(i) % subs.len();
                            // What it still holds counts as delivered: take it first.
                            let mut s = subs.swap_remove(k);
                            take(&mut s, usize::MAX);
                            check(&s, &rereport, published)?;
                        }
                        Op::Recv { .. } | Op::Drop { .. } => {}
                    }
                }
                // Everything committed and published; each drains its queue in turns (a
                // queue holds `capacity` events at most, so one pass may not do).
                committed = registry.read().last_seq();
                publisher.publish(&registry, Vec::new(), |_| committed);
                for s in &mut subs {
                    take(s, usize::MAX);
                    check(s, &rereport, committed)?;
                }
            }
        }
    }
}
