//! Day 46's hostile review of the service-facing API (`Hub::subscribe`, `Hub::request`,
//! service writes): what a Rust service embedding the hub sees. Each test that pins a
//! fix failed on the code it was written against; see each one's docs.

use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};
use twinhub::hub::{
    DeviceLink, Hub, HubConfig, HubEvent, RecvTimeoutError, RequestError, SubscribeOptions,
};
use twinhub::registry::Registry;
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest};
use twinhub::twin::Twin;
use twinhub::{DeviceId, Lwm2mPath};

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// A transport of the test's: it keeps what the hub submits and answers nothing.
struct Silent(Mutex<Vec<DeviceOp>>);

impl DeviceLink for Silent {
    fn submit(&self, op: DeviceOp) {
        self.0.lock().unwrap().push(op);
    }
    fn stop(&self) {}
}

/// A hub over [`Silent`], and the sending end of its event channel (dropping it is the
/// transport ending).
fn silent_hub() -> (Hub, Sender<DeviceEvent>) {
    let (events, rx) = mpsc::channel();
    let mut registry = Registry::new();
    registry.create(Twin::new(id("pump"))).unwrap();
    let hub = Hub::start(
        registry,
        Box::new(Silent(Mutex::new(Vec::new()))),
        rx,
        HubConfig::default(),
    );
    (hub, events)
}

fn read() -> DeviceRequest {
    DeviceRequest::Read {
        path: Lwm2mPath::resource(3, 0, 9),
    }
}

/// When the transport ends on its own (its thread panicked or returned, so the hub's
/// event channel closed), the hub's thread ends too: nothing will ever answer a request
/// or publish an event again. The hub was a zombie: a request waiting for its answer
/// was never failed (`Reply::wait` ran out its whole timeout, an `.await` never
/// resolved), a new request was submitted into the void, and every subscription stayed
/// open, its `recv` blocking for ever, although `RequestError::HubStopped` and
/// `Subscription` promise an end "after the hub stops". Now the hub thread's end fails
/// the waiting requests, refuses new ones and closes the subscriptions, as `Hub::stop`
/// does.
#[test]
fn a_transport_that_ends_fails_the_requests_and_closes_the_subscriptions() {
    let (hub, events) = silent_hub();
    let sub = hub.subscribe(SubscribeOptions::default()).unwrap();
    let waiting = hub.request(&id("pump"), read());
    drop(events);
    let started = Instant::now();
    assert_eq!(
        waiting.wait(Duration::from_secs(60)),
        Err(RequestError::HubStopped),
        "the request waiting when the transport ended"
    );
    // Failed when the hub's thread ended, not after running out its timeout (generous
    // bound: a loaded machine may not run the hub's thread for a while).
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        hub.request(&id("pump"), read())
            .wait(Duration::from_secs(5)),
        Err(RequestError::HubStopped),
        "a request made after the transport ended"
    );
    assert_eq!(
        sub.recv_timeout(Duration::from_secs(5)),
        Err(RecvTimeoutError::Closed)
    );
    assert_eq!(hub.metrics().waiting_requests, 0);
    // Reads still answer.
    assert!(hub.twin("pump").is_some());
}

/// Pinned (held up): a `Reply` dropped before its answer (a caller's own timeout, an
/// `.await` abandoned) leaves no entry behind, and an answer arriving later is ignored.
#[test]
fn an_abandoned_reply_leaves_no_waiting_entry() {
    let (hub, events) = silent_hub();
    let reply = hub.request(&id("pump"), read());
    let op = reply.op();
    assert_eq!(hub.metrics().waiting_requests, 1);
    assert_eq!(
        reply.wait(Duration::from_millis(10)),
        Err(RequestError::TimedOut)
    );
    assert_eq!(hub.metrics().waiting_requests, 0);
    let dropped = hub.request(&id("pump"), read());
    drop(dropped);
    assert_eq!(hub.metrics().waiting_requests, 0);
    // The late answer is taken without a waiter.
    events
        .send(DeviceEvent::TimedOut {
            device: id("pump"),
            op,
        })
        .unwrap();
    let next = hub.request(&id("pump"), read());
    events
        .send(DeviceEvent::TimedOut {
            device: id("pump"),
            op: next.op(),
        })
        .unwrap();
    assert_eq!(
        next.wait(Duration::from_secs(30)),
        Err(RequestError::TransportTimedOut)
    );
    assert_eq!(hub.metrics().waiting_requests, 0);
}

/// Pinned (held up): a subscription that lags is told once, with the last change it
/// got as the resume point, and resuming there replays exactly what it missed.
#[test]
fn a_lagged_subscription_resumes_with_exactly_what_it_missed() {
    let (hub, _events) = silent_hub();
    let options = SubscribeOptions {
        capacity: 2,
        ..SubscribeOptions::twins_only()
    };
    let sub = hub.subscribe(options).unwrap();
    let start = hub.registry().read().last_seq();
    for i in 0..6 {
        hub.create_device(Twin::new(id(&format!("d{i}")))).unwrap();
    }
    let mut got = Vec::new();
    let mut resume = None;
    while let Ok(e) = sub.try_recv() {
        match e {
            HubEvent::Twin(c) => got.push(c.seq),
            HubEvent::Lagged {
                missed,
                resume_after,
            } => {
                assert_eq!(missed, 4);
                resume = Some(resume_after);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, [start + 1, start + 2]);
    let resume = resume.expect("a Lagged");
    assert_eq!(resume, start + 2);
    let again = hub
        .subscribe(SubscribeOptions::twins_only().after(resume))
        .unwrap();
    let replayed: Vec<u64> = std::iter::from_fn(|| match again.try_recv() {
        Ok(HubEvent::Twin(c)) => Some(c.seq),
        _ => None,
    })
    .collect();
    assert_eq!(replayed, (start + 3..=start + 6).collect::<Vec<_>>());
}

/// A hub on a store, over [`Silent`].
fn durable_silent_hub(dir: &std::path::Path) -> (Hub, Sender<DeviceEvent>) {
    use twinhub::store::{SharedStore, Store, StoreConfig};
    let (store, registry) = Store::open(dir, StoreConfig::default()).unwrap();
    let (events, rx) = mpsc::channel();
    let config = HubConfig {
        store: Some(SharedStore::new(store)),
        ..HubConfig::default()
    };
    let hub = Hub::start(
        registry,
        Box::new(Silent(Mutex::new(Vec::new()))),
        rx,
        config,
    );
    (hub, events)
}

/// Pinned (held up): where a subscription stands (`Subscription::resume_after`) is a
/// point a new subscription can resume from, also on a hub reopened from its store
/// that has made no change yet (the store reserved numbers ahead at the opening, which
/// no change used), and across a restart that made changes.
#[test]
fn a_subscriptions_resume_point_resumes_on_a_reopened_store() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, _events) = durable_silent_hub(dir.path());
    hub.create_device(Twin::new(id("pump"))).unwrap();
    let before = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    let point = before.resume_after();
    drop(before);
    hub.stop();
    drop(hub);
    let (hub, _events) = durable_silent_hub(dir.path());
    let sub = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    let fresh = sub.resume_after();
    assert!(
        hub.subscribe(SubscribeOptions::twins_only().after(fresh))
            .is_ok(),
        "resuming where a subscription of the reopened hub stands ({fresh})"
    );
    hub.create_device(Twin::new(id("pump-2"))).unwrap();
    let resumed = hub
        .subscribe(SubscribeOptions::twins_only().after(point))
        .unwrap();
    let seen: Vec<String> = std::iter::from_fn(|| match resumed.try_recv() {
        Ok(HubEvent::Twin(c)) => Some(c.device.to_string()),
        _ => None,
    })
    .collect();
    assert_eq!(seen, ["pump-2"], "after the point before the restart");
    match sub.recv_timeout(Duration::from_secs(5)) {
        Ok(HubEvent::Twin(c)) => assert_eq!(c.device.as_str(), "pump-2"),
        other => panic!("{other:?}"),
    }
}

/// `Subscription::starts_after` (new) is where a subscription's twin changes start and
/// does not move with what is queued (`resume_after` does): the point an event stream
/// hands a client that has taken nothing yet.
#[test]
fn a_subscriptions_start_does_not_move_with_what_is_queued() {
    let (hub, _events) = silent_hub();
    let start = hub.registry().read().last_seq();
    let sub = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    hub.create_device(Twin::new(id("d1"))).unwrap();
    assert_eq!(sub.starts_after(), start);
    assert_eq!(sub.resume_after(), start + 1);
    let resumed = hub
        .subscribe(SubscribeOptions::twins_only().after(start))
        .unwrap();
    assert_eq!(resumed.starts_after(), start);
    assert_eq!(resumed.resume_after(), start + 1, "the replay is queued");
}

/// `Hub::remove_device` fails the removed device's job children (`deviceRemoved`) before
/// it returns, and a service write through the hub publishes what it changed before it
/// returns (the `Subscription` docs): but the children's failure was made after the
/// write's commit and publication, so a job subscriber got it only at the hub thread's
/// next pass (and, with a store, it was committed only then). It is committed and
/// published before the call returns now.
#[test]
fn a_removal_publishes_the_failed_children_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let durable = durable_silent_hub(dir.path());
    durable.0.create_device(Twin::new(id("pump"))).unwrap();
    // The event channels stay open: a hub whose transport ended has stopped.
    for (hub, _events) in [silent_hub(), durable] {
        removal_publishes_the_failed_children(&hub);
    }
}

fn removal_publishes_the_failed_children(hub: &Hub) {
    use twinhub::job::{JobId, JobSpec, JobType};
    let job = JobSpec::new(
        JobId::new("reboot").unwrap(),
        JobType::Reboot {
            wait_for_registration: false,
        },
        vec![id("pump")],
    );
    hub.create_job(job).unwrap();
    let sub = hub
        .subscribe(SubscribeOptions {
            twins: false,
            lifecycle: false,
            ..SubscribeOptions::default()
        })
        .unwrap();
    hub.remove_device("pump").unwrap();
    let queued: Vec<HubEvent> = std::iter::from_fn(|| sub.try_recv().ok()).collect();
    assert!(
        queued.iter().any(|e| matches!(e,
            HubEvent::Job(p) if p.record.device_id == Some(id("pump")))),
        "{queued:?}"
    );
}
