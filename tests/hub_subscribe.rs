//! Issue #17: subscriptions. Twin changes carry their values and leave out re-reports,
//! registrations (rejections included, with endpoint, reason and address) and job
//! progress are pushed, a slow consumer gets a lag signal and resumes from the feed
//! without a gap or a repeat, the future form wakes, and stopping the hub ends them.

#![cfg(all(feature = "device", feature = "lwm2m", feature = "memory-fleet"))]

mod e2e_support;
mod hub_support;

use e2e_support::{start, wait_for};
use hub_support::block_on;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};
use twinhub::hub::{
    Hub, HubConfig, HubEvent, LifecycleKind, RecvTimeoutError, SubscribeOptions, Subscription,
};
use twinhub::job::{JobId, JobStatus};
use twinhub::registry::{ChangeKind, Registry};
use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
use twinhub::twin::{Scalar, Twin};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue, Timestamp};

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn memory_hub(registry: Registry) -> Hub {
    Hub::with_transport(
        MemoryTransport::new(MemoryConfig::default()),
        registry,
        HubConfig::default(),
    )
}

/// Every event until `done` says stop (or 10 s pass: a failure).
fn collect(sub: &Subscription, mut done: impl FnMut(&[HubEvent]) -> bool) -> Vec<HubEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.recv_timeout(left) {
            Ok(e) => seen.push(e),
            Err(e) => panic!("{e} after {seen:#?}"),
        }
    }
    seen
}

fn twin_seqs(events: &[HubEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            HubEvent::Twin(c) => Some(c.seq),
            _ => None,
        })
        .collect()
}

#[test]
fn property_changes_carry_values_and_rereports_are_left_out_unless_asked() {
    let mut registry = Registry::new();
    registry.create(Twin::new(id("d1"))).unwrap();
    let hub = memory_hub(registry);
    let quiet = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    let all = hub
        .subscribe(SubscribeOptions {
            rereports: true,
            ..SubscribeOptions::twins_only()
        })
        .unwrap();
    for (battery, ms) in [(80, 1), (80, 2), (79, 3)] {
        hub.registry()
            .write()
            .report_device_property(
                "d1",
                "BatteryLevel",
                battery.into(),
                Timestamp::from_millis(ms),
            )
            .unwrap();
    }
    let props = |events: &[HubEvent]| -> Vec<(Scalar, Option<Scalar>)> {
        events
            .iter()
            .filter_map(|e| match e {
                HubEvent::Twin(c) => match &c.kind {
                    ChangeKind::DeviceProperty {
                        name,
                        value,
                        previous,
                    } if &**name == "BatteryLevel" => Some((value.clone(), previous.clone())),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    };
    // Written straight into the registry: the hub thread publishes them on its next pass.
    let got = collect(&quiet, |s| s.len() == 2);
    assert_eq!(
        props(&got),
        [
            (Scalar::from(80), None),
            (Scalar::from(79), Some(Scalar::from(80)))
        ]
    );
    let got = collect(&all, |s| s.len() == 3);
    assert_eq!(
        props(&got),
        [
            (Scalar::from(80), None),
            (Scalar::from(80), Some(Scalar::from(80))),
            (Scalar::from(79), Some(Scalar::from(80)))
        ]
    );
    // On the wire: the values travel with the change.
    let HubEvent::Twin(c) = &got[2] else {
        unreachable!()
    };
    let json = serde_json::to_value(&got[2]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"type": "twin", "seq": c.seq, "device": "d1",
            "kind": "deviceProperty", "name": "BatteryLevel", "value": 79, "previous": 80})
    );
    assert!(quiet.try_recv().is_err() && all.try_recv().is_err());
}

#[test]
fn a_slow_consumer_gets_a_lag_signal_and_resumes_without_gap_or_repeat() {
    let mut registry = Registry::new();
    registry.create(Twin::new(id("d1"))).unwrap();
    let hub = memory_hub(registry);
    let slow = hub
        .subscribe(SubscribeOptions {
            capacity: 3,
            ..SubscribeOptions::twins_only()
        })
        .unwrap();
    let start = hub.registry().read().last_seq();
    for i in 0..10 {
        // Each call publishes before it returns: nothing waits for the hub thread.
        hub.add_tags("d1", &[&format!("t{i}")], None).unwrap();
    }
    let written: Vec<u64> = (start + 1..=start + 10).collect();
    assert_eq!(slow.len(), 4, "three queued, and the lag signal waiting");
    let first = collect(&slow, |s| s.len() == 4);
    assert_eq!(twin_seqs(&first), written[..3]);
    let HubEvent::Lagged {
        missed,
        resume_after,
    } = first[3]
    else {
        panic!("expected a lag signal, got {:?}", first[3]);
    };
    assert_eq!((missed, resume_after), (7, written[2]));
    assert_eq!(slow.resume_after(), written[2]);
    // After the signal the subscription is live again.
    hub.add_tags("d1", &["live"], None).unwrap();
    let live = collect(&slow, |s| !s.is_empty());
    assert_eq!(twin_seqs(&live), [start + 11]);
    // A new subscription from the lag point replays the missed seven, then continues
    // live: every change exactly once.
    let resumed = hub
        .subscribe(SubscribeOptions::twins_only().after(resume_after))
        .unwrap();
    hub.add_tags("d1", &["after"], None).unwrap();
    let got = collect(&resumed, |s| s.len() == 9);
    let expected: Vec<u64> = (start + 4..=start + 12).collect();
    assert_eq!(twin_seqs(&got), expected);
    assert_eq!(
        resumed.recv_timeout(Duration::from_millis(100)),
        Err(RecvTimeoutError::Timeout)
    );
}

#[test]
fn resuming_from_changes_the_feed_dropped_is_a_gap_and_a_bulk_load_past_the_feed_lags() {
    let hub = memory_hub(Registry::with_feed_capacity(4));
    // Where the hub's numbers start (from the clock: a hub has no store here).
    let start = hub.registry().read().last_seq();
    let sub = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    for i in 0..6 {
        hub.create_device(Twin::new(id(&format!("d{i}")))).unwrap();
    }
    let gap = hub
        .subscribe(SubscribeOptions::twins_only().after(start))
        .unwrap_err();
    assert_eq!(gap.resume_after(), start + 2);
    // Published after each write: the live subscriber saw all six.
    assert_eq!(
        twin_seqs(&collect(&sub, |s| s.len() == 6)),
        (start + 1..=start + 6).collect::<Vec<_>>()
    );
    // A write straight into the registry larger than the feed, published later: the
    // subscriber is told how many it missed and gets what the feed still holds.
    {
        let mut reg = hub.registry().write();
        for i in 0..10 {
            reg.create(Twin::new(id(&format!("bulk{i}")))).unwrap();
        }
    }
    let got = collect(&sub, |s| s.len() == 5);
    assert_eq!(
        got[0],
        HubEvent::Lagged {
            missed: 6,
            resume_after: start + 6
        }
    );
    assert_eq!(
        twin_seqs(&got[1..]),
        (start + 13..=start + 16).collect::<Vec<_>>()
    );
    // Resuming inside what the feed dropped is a gap, not a silent skip.
    assert!(
        hub.subscribe(SubscribeOptions::twins_only().after(start + 6))
            .is_err()
    );
}

#[test]
fn job_progress_is_pushed_until_the_parent_completes() {
    let mut registry = Registry::new();
    let mut fleet = MemoryTransport::new(MemoryConfig::default());
    for n in ["m1", "m2"] {
        registry.create(Twin::new(id(n))).unwrap();
        fleet
            .add_device(
                Instant::now(),
                twinhub::transport::memory::DeviceSpec::new(id(n)),
            )
            .unwrap();
    }
    let hub = Hub::with_transport(fleet, registry, HubConfig::default());
    let sub = hub
        .subscribe(SubscribeOptions {
            twins: false,
            lifecycle: true,
            jobs: true,
            ..SubscribeOptions::default()
        })
        .unwrap();
    let registered = collect(&sub, |s| {
        s.iter()
            .filter(|e| matches!(e, HubEvent::Lifecycle(l) if l.event == LifecycleKind::Registered))
            .count()
            == 2
    });
    assert!(registered.iter().all(|e| !matches!(e, HubEvent::Twin(_))));
    let spec = hub_support::reboot_spec(
        JobId::new("reboot-1").unwrap(),
        false,
        vec![id("m1"), id("m2")],
    );
    hub.create_job(spec).unwrap();
    let got = collect(&sub, |s| {
        s.iter().any(|e| {
            matches!(e, HubEvent::Job(p) if p.record.parent_job_id.is_empty()
                && p.record.status == JobStatus::Completed)
        })
    });
    let jobs: Vec<_> = got
        .iter()
        .filter_map(|e| match e {
            HubEvent::Job(p) => Some(p),
            _ => None,
        })
        .collect();
    // The parent was reported with its counts; each child ended completed.
    let last = jobs.last().unwrap();
    assert_eq!(last.record.job_id, "reboot-1");
    let stats = last.statistics.unwrap();
    assert_eq!((stats.device_count, stats.succeeded), (2, 2));
    for d in ["m1", "m2"] {
        assert!(
            jobs.iter().any(|p| p.record.device_id == Some(id(d))
                && p.record.status == JobStatus::Completed
                && p.statistics.is_none()),
            "child of {d} completed: {jobs:#?}"
        );
    }
    let json = serde_json::to_value(HubEvent::Job((*last).clone())).unwrap();
    assert_eq!(json["type"], "job");
    assert_eq!(json["record"]["jobId"], "reboot-1");
    assert_eq!(json["statistics"]["deviceCount"], 2);
}

#[test]
fn registrations_and_rejections_over_udp_carry_endpoint_reason_and_address() {
    let mut registry = Registry::new();
    registry.create(Twin::new(id("sub-1"))).unwrap();
    let hub = Hub::bind_udp("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    let sub = hub.subscribe(SubscribeOptions::default()).unwrap();
    let server = hub.local_addr().unwrap();
    let mut devices = vec![
        start("sub-1", server, false),
        start("stranger", server, false),
    ];
    let mut seen = Vec::new();
    let has = |seen: &[HubEvent], kind: LifecycleKind, who: &str| {
        seen.iter()
            .any(|e| matches!(e, HubEvent::Lifecycle(l) if l.event == kind && l.device == who))
    };
    wait_for(
        &mut devices,
        "the registration, the filled twin and the rejection",
        || {
            while let Ok(e) = sub.try_recv() {
                seen.push(e);
            }
            let filled = seen.iter().any(|e| {
                matches!(e, HubEvent::Twin(c) if matches!(&c.kind,
            ChangeKind::DeviceProperty { name, .. } if &**name == "BatteryLevel"))
            });
            filled
                && has(&seen, LifecycleKind::Registered, "sub-1")
                && has(&seen, LifecycleKind::Rejected, "stranger")
        },
    );
    let rejected = seen
        .iter()
        .find_map(|e| match e {
            HubEvent::Lifecycle(l) if l.event == LifecycleKind::Rejected => Some(l.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(rejected.reason.as_deref(), Some("unknown device"));
    let stranger_addr = devices[1].thread.as_ref().unwrap().local_addr();
    assert_eq!(
        rejected.address.map(|a| a.port()),
        Some(stranger_addr.port())
    );
    let registered = seen
        .iter()
        .find_map(|e| match e {
            HubEvent::Lifecycle(l) if l.event == LifecycleKind::Registered => Some(l.clone()),
            _ => None,
        })
        .unwrap();
    assert!(registered.address.is_some());
    let json = serde_json::to_value(HubEvent::Lifecycle(rejected)).unwrap();
    assert_eq!(json["type"], "lifecycle");
    assert_eq!(json["event"], "rejected");
    assert_eq!(json["device"], "stranger");

    // A battery change on the device arrives as one change with old and new values.
    devices[0]
        .thread
        .as_ref()
        .unwrap()
        .with(|c| c.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(12)))
        .unwrap();
    let mut battery = Vec::new();
    wait_for(&mut devices, "the battery change", || {
        while let Ok(e) = sub.try_recv() {
            if let HubEvent::Twin(c) = e
                && let ChangeKind::DeviceProperty {
                    name,
                    value,
                    previous,
                } = c.kind
                && &*name == "BatteryLevel"
            {
                battery.push((value, previous));
            }
        }
        battery.iter().any(|(v, _)| *v == Scalar::from(12))
    });
    assert_eq!(
        battery.last().unwrap(),
        &(Scalar::from(12), Some(Scalar::from(80)))
    );
    // The device de-registers.
    devices[0]
        .thread
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(30))
        .unwrap();
    let got = collect(&sub, |s| has(s, LifecycleKind::Deregistered, "sub-1"));
    assert!(!got.is_empty());
}

#[test]
fn the_future_is_woken_by_the_hub_and_stopping_the_hub_ends_every_subscription() {
    let hub = memory_hub(Registry::new());
    let mut sub = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    let writer = hub.clone();
    // The writer starts its 50 ms only once the subscription was seen empty (a loaded
    // machine may not run this thread for 50 ms).
    let (go, start) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        start.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        writer.create_device(Twin::new(id("late"))).unwrap();
    });
    // Nothing is queued when the future is first polled: only the wake-up completes it.
    assert!(sub.is_empty());
    go.send(()).unwrap();
    match block_on(sub.recv_async()) {
        Some(HubEvent::Twin(c)) => {
            assert_eq!(c.device.as_str(), "late");
            assert_eq!(c.kind, ChangeKind::Created);
        }
        other => panic!("{other:?}"),
    }
    t.join().unwrap();
    hub.create_device(Twin::new(id("queued"))).unwrap();
    hub.stop();
    // What was queued is still delivered; then the stream ends.
    assert!(matches!(sub.recv(), Some(HubEvent::Twin(c)) if c.device.as_str() == "queued"));
    assert_eq!(sub.recv(), None);
    assert_eq!(block_on(sub.recv_async()), None);
    assert_eq!(
        sub.recv_timeout(Duration::from_millis(10)),
        Err(RecvTimeoutError::Closed)
    );
}

/// A waker that calls the hub when woken (an executor polling the task at once) does not
/// deadlock the publication that wakes it: wakers run with no hub lock held.
#[test]
fn a_waker_that_calls_the_hub_does_not_deadlock_it() {
    struct Resubscribe(Hub, std::sync::mpsc::Sender<bool>);
    impl Wake for Resubscribe {
        fn wake(self: Arc<Self>) {
            let _ = self
                .1
                .send(self.0.subscribe(SubscribeOptions::default()).is_ok());
        }
    }
    let hub = memory_hub(Registry::new());
    let mut sub = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    let (woken, wakes) = std::sync::mpsc::channel();
    let waker = Arc::new(Resubscribe(hub.clone(), woken)).into();
    let mut cx = Context::from_waker(&waker);
    let mut recv = sub.recv_async();
    assert!(std::pin::Pin::new(&mut recv).poll(&mut cx).is_pending());
    let writer = hub.clone();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(writer.create_device(Twin::new(id("d1"))).is_ok());
    });
    assert_eq!(
        wakes.recv_timeout(Duration::from_secs(30)),
        Ok(true),
        "the waker's own subscribe returned"
    );
    assert_eq!(finished.recv_timeout(Duration::from_secs(30)), Ok(true));
    assert!(matches!(
        std::pin::Pin::new(&mut recv).poll(&mut cx),
        Poll::Ready(Some(HubEvent::Twin(_)))
    ));
}

/// A subscription starts at the newest change whoever listened before: one dropped
/// before a write that nobody has published yet (a write straight through the registry)
/// does not hand that write to the next subscriber. A number the feed never reached is a
/// gap, and a subscription made after the hub stopped is closed and not counted.
#[test]
fn a_subscription_starts_now_and_one_made_after_stop_is_closed() {
    let hub = memory_hub(Registry::new());
    hub.create_device(Twin::new(id("before"))).unwrap();
    drop(hub.subscribe(SubscribeOptions::twins_only()).unwrap());
    hub.registry()
        .write()
        .create(Twin::new(id("unpublished")))
        .unwrap();
    let sub = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    hub.create_device(Twin::new(id("after"))).unwrap();
    let seen = collect(&sub, |seen| !seen.is_empty());
    assert!(
        matches!(&seen[0], HubEvent::Twin(c) if c.device.as_str() == "after"),
        "{seen:?}"
    );
    let newest = hub.registry().read().last_seq();
    let ahead = SubscribeOptions {
        after: Some(newest + 100),
        ..SubscribeOptions::twins_only()
    };
    let gap = hub.subscribe(ahead).err().unwrap();
    assert_eq!(gap.resume_after(), newest);
    assert!(hub.changes_after(newest + 1).is_err());
    hub.stop();
    let late = hub.subscribe(SubscribeOptions::default()).unwrap();
    assert_eq!(late.recv(), None);
    assert_eq!(hub.metrics().subscribers, 0, "closed at birth, not counted");
}

#[test]
fn metrics_count_devices_requests_subscribers_and_latencies() {
    let mut registry = Registry::new();
    let mut fleet = MemoryTransport::new(MemoryConfig::default());
    for n in ["q1", "q2"] {
        registry.create(Twin::new(id(n))).unwrap();
        fleet
            .add_device(
                Instant::now(),
                twinhub::transport::memory::DeviceSpec::new(id(n)),
            )
            .unwrap();
    }
    let hub = Hub::with_transport(fleet, registry, HubConfig::default());
    let sub = hub.subscribe(SubscribeOptions::default()).unwrap();
    collect(&sub, |s| {
        s.iter()
            .filter(|e| matches!(e, HubEvent::Lifecycle(l) if l.event == LifecycleKind::Registered))
            .count()
            == 2
    });
    for _ in 0..3 {
        let read = twinhub::transport::DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 9),
        };
        hub.request(&id("q1"), read)
            .wait(Duration::from_secs(10))
            .unwrap();
    }
    // A job's operations and the sync's observations are timed too.
    let reboot = hub_support::reboot_spec(JobId::new("r").unwrap(), false, vec![id("q2")]);
    hub.create_job(reboot).unwrap();
    collect(&sub, |s| {
        s.iter().any(|e| {
            matches!(e, HubEvent::Job(p) if p.record.parent_job_id.is_empty()
                && p.record.status.is_terminal())
        })
    });
    let m = hub.metrics();
    assert_eq!((m.devices, m.connected), (2, 2));
    assert_eq!(
        (m.waiting_requests, m.unfinished_jobs, m.kept_jobs),
        (0, 0, 1)
    );
    assert_eq!(m.subscribers, 1);
    assert_eq!(m.request_latency.count, 3, "requests are not counted twice");
    assert_eq!(m.job_operation_latency.count, 1, "the reboot's Execute");
    assert!(
        m.sync_latency.count >= 2,
        "one observation per device at least"
    );
    assert_eq!(m.untimed_operations, 0);
    assert!(m.request_latency.quantile_bound_ms(0.5).is_some());
    assert!(m.counters.registrations >= 2);
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["requestLatency"]["count"], 3);
    assert_eq!(json["connected"], 2);
    drop(sub);
    assert_eq!(hub.metrics().subscribers, 0);
}

#[test]
fn configs_read_from_json_with_milliseconds_and_defaults_for_what_is_left_out() {
    use twinhub::lwm2m::server::Takeover;
    let default = serde_json::to_value(HubConfig::default()).unwrap();
    let back: HubConfig = serde_json::from_value(default.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), default);
    assert_eq!(default["autoProvisionExpiryMs"], 86_400_000);
    assert_eq!(default["server"]["takeover"]["policy"], "probeOldAddress");
    let config: HubConfig = serde_json::from_str(
        r#"{"autoProvision": true,
            "jobs": {"rebootWaitMs": 1000, "firmwareStates": "preview2016"},
            "sync": {"paths": ["/3/0"], "attributes": {"pmin": 5}},
            "server": {"takeover": {"policy": "replace"}, "coap": {"ackTimeoutMs": 500}}}"#,
    )
    .unwrap();
    assert!(config.auto_provision);
    assert_eq!(config.jobs.reboot_wait, Duration::from_millis(1000));
    assert_eq!(config.server.takeover, Takeover::Replace);
    assert_eq!(config.server.coap.ack_timeout, Duration::from_millis(500));
    let sync = config.sync.unwrap();
    assert_eq!(sync.paths, [Lwm2mPath::instance(3, 0)]);
    assert_eq!(sync.attributes.pmin, Some(5));
    assert_eq!(
        config.auto_provision_limit,
        HubConfig::default().auto_provision_limit
    );
    // A misspelt setting is an error, not silently the default.
    let err = serde_json::from_str::<HubConfig>(r#"{"autoProvison": true}"#).unwrap_err();
    assert!(err.to_string().contains("autoProvison"), "{err}");
}
