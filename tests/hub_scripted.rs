//! The hub over a transport the test scripts event by event: orderings the simulated
//! fleet does not produce on demand (two registrations of one device in one batch; a
//! batch whose commit fails after it queued a job's next operation; a store that keeps failing).

mod hub_support;

use hub_support::{Script, Scripted, start_reboot_job, wait_until};
use std::sync::{Arc, Mutex};
#[cfg(feature = "fuzzing")]
use std::time::{Duration, Instant};
use twinhub::hub::{Hub, HubConfig};
use twinhub::job::JobId;
use twinhub::registry::Registry;
use twinhub::transport::{DeviceEvent, DeviceRequest, RegistrationInfo};
use twinhub::twin::Twin;
use twinhub::{DeviceId, Lwm2mPath};

/// `device` registers (LWM2M 1.0) with `/3/0` alone.
fn registered(device: &DeviceId) -> DeviceEvent {
    DeviceEvent::Registered {
        device: device.clone(),
        registration: RegistrationInfo {
            endpoint: device.as_str().into(),
            registration_id: "r1".into(),
            lifetime: 300,
            lwm2m_version: "1.0".into(),
            binding: "U".into(),
            queue_mode: false,
            objects: vec![Lwm2mPath::instance(3, 0)],
            address: None,
            psk_identity: None,
        },
    }
}

fn executes(script: &Mutex<Script>) -> usize {
    execute_targets(script).len()
}

/// The devices the Executes went to, in order.
fn execute_targets(script: &Mutex<Script>) -> Vec<DeviceId> {
    script
        .lock()
        .unwrap()
        .submitted
        .iter()
        .filter(|op| matches!(op.request, DeviceRequest::Execute { .. }))
        .map(|op| op.device.clone())
        .collect()
}

#[test]
fn a_reboot_completed_by_a_second_registration_in_the_batch_still_sends_its_execute() {
    let device = DeviceId::new("dev-1").unwrap();
    let mut registry = Registry::new();
    registry.create(Twin::new(device.clone())).unwrap();
    let script = Arc::new(Mutex::new(Script {
        away: true,
        ..Script::default()
    }));
    let hub = Hub::with_transport(Scripted(script.clone()), registry, HubConfig::default());
    let job = JobId::new("reboot").unwrap();
    start_reboot_job(&hub, &job, &device, true);
    // The first Execute finds the device away: the child waits for it.
    wait_until("the child to wait for its device", || {
        hub.job_statistics(&job).unwrap().waiting_for_device == 1
    });
    assert_eq!(executes(&script), 1);
    // The device registers twice in quick succession (one batch, most likely): the
    // first registration queues the Execute, the second completes the child (a
    // registration after an Execute is the reboot's proof). The Execute still goes.
    {
        let mut s = script.lock().unwrap();
        s.away = false;
        s.events.push_back(registered(&device));
        s.events.push_back(registered(&device));
    }
    wait_until("the second Execute", || executes(&script) == 2);
    wait_until("the job to end", || {
        hub.job_statistics(&job).unwrap().succeeded == 1
    });
}

/// [`Scripted`] as a transport that queues requests for sleeping devices and reports
/// when each leaves ([`DeviceEvent::Sent`], pushed by the test).
struct SentScripted(Scripted);

impl twinhub::transport::Transport for SentScripted {
    fn submit(&mut self, now: std::time::Instant, op: twinhub::transport::DeviceOp) {
        self.0.submit(now, op);
    }
    fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.0.poll_event()
    }
    fn handle_timeout(&mut self, now: std::time::Instant) {
        self.0.handle_timeout(now);
    }
    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.0.poll_timeout()
    }
    fn reports_sent(&self) -> bool {
        true
    }
}

/// The hub tells its job engine that the transport reports `Sent`: a registration that
/// comes while a reboot's Execute is still queued for the sleeping device is no proof of
/// the reboot (the job reported success, and the Execute rebooted the device after).
#[test]
fn a_registration_before_the_queued_execute_left_does_not_complete_a_reboot() {
    use twinhub::transport::Transport as _;
    let device = DeviceId::new("dev-1").unwrap();
    let mut registry = Registry::new();
    registry.create(Twin::new(device.clone())).unwrap();
    let script = Arc::new(Mutex::new(Script::default()));
    script.lock().unwrap().events.push_back(registered(&device));
    let transport = SentScripted(Scripted(script.clone()));
    assert!(transport.reports_sent());
    let hub = Hub::with_transport(transport, registry, HubConfig::default());
    wait_until("the registration", || {
        hub.twin(device.as_str()).unwrap().connection_state
            == twinhub::twin::ConnectionState::Connected
    });
    let job = JobId::new("reboot").unwrap();
    start_reboot_job(&hub, &job, &device, true);
    wait_until("the Execute", || executes(&script) == 1);
    // The device wakes by registering: the Execute is still queued.
    script.lock().unwrap().events.push_back(registered(&device));
    wait_until("the hub to take the registration", || {
        script.lock().unwrap().events.is_empty()
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let stats = hub.job_statistics(&job).unwrap();
    assert_eq!(
        (stats.running, stats.succeeded),
        (1, 0),
        "no proof of a reboot yet: {stats:?}"
    );
    // It leaves, the device answers, reboots and registers: that is the reboot.
    let execute = script
        .lock()
        .unwrap()
        .submitted
        .iter()
        .find(|op| matches!(op.request, DeviceRequest::Execute { .. }))
        .cloned()
        .unwrap();
    {
        let mut s = script.lock().unwrap();
        s.events.push_back(DeviceEvent::Sent {
            op: execute.id,
            device: device.clone(),
        });
        s.events.push_back(DeviceEvent::Response {
            op: execute.id,
            device: device.clone(),
            result: Ok(twinhub::transport::DeviceReply::Done),
        });
        s.events.push_back(registered(&device));
    }
    wait_until("the job to end", || {
        hub.job_statistics(&job).unwrap().succeeded == 1
    });
    assert_eq!(executes(&script), 1, "executed once");
}

#[cfg(feature = "fuzzing")]
#[test]
fn a_batch_whose_commit_fails_sends_and_publishes_nothing_and_is_applied_again() {
    let (a, b) = (
        DeviceId::new("dev-a").unwrap(),
        DeviceId::new("dev-b").unwrap(),
    );
    let (hub, store, script, _dir) = hub_support::durable_hub(&[&a, &b], HubConfig::default());
    script
        .lock()
        .unwrap()
        .events
        .extend([registered(&a), registered(&b)]);
    wait_until("both registrations", || {
        [&a, &b].iter().all(|d| {
            hub.twin(d.as_str()).unwrap().connection_state
                == twinhub::twin::ConnectionState::Connected
        })
    });
    // One device at a time: b's Execute is queued in the batch that completes a's child.
    let job = JobId::new("reboot").unwrap();
    hub.create_job(
        hub_support::reboot_spec(job.clone(), true, vec![a.clone(), b.clone()]).max_in_flight(1),
    )
    .unwrap();
    wait_until("a's Execute", || executes(&script) == 1);
    let first = script
        .lock()
        .unwrap()
        .submitted
        .iter()
        .find(|op| matches!(op.request, DeviceRequest::Execute { .. }))
        .cloned()
        .unwrap();
    assert_eq!(first.device, a);
    let events_before = hub.stats().events;
    hub_support::push(
        &script,
        DeviceEvent::Response {
            op: first.id,
            device: a.clone(),
            result: Ok(twinhub::transport::DeviceReply::Done),
        },
    );
    wait_until("the hub to take the answer", || {
        script.lock().unwrap().events.is_empty() && hub.stats().events > events_before
    });
    // Its batch commits (a's child now waits for the reboot's registration).
    hub_support::wait_committed(&hub, &store, "the answer's batch");
    std::thread::sleep(Duration::from_millis(200));
    // a comes back (its reboot's proof): its child succeeds and b's starts, in a batch
    // whose commit fails, and so does its next try at once: the hub backs off for a
    // second. Memory goes back to the store; b's Execute is not sent meanwhile.
    let lifecycle = hub
        .subscribe(twinhub::hub::SubscribeOptions {
            twins: false,
            jobs: false,
            ..Default::default()
        })
        .unwrap();
    store.lock().fail_next_commit();
    store.lock().fail_next_commit();
    script.lock().unwrap().events.push_back(registered(&a));
    // (Or b's Execute already: a loaded machine may not look within the second's
    // backoff, and a committed try resets the count.)
    wait_until("the second failed commit", || {
        hub.metrics().failed_commits == 2 || executes(&script) == 2
    });
    // (Read before the failure count: while it is still 2, no try has committed, and a
    // committed try is the only one that may send.)
    let sent = executes(&script);
    assert!(
        sent == 1 || hub.metrics().failed_commits == 0,
        "an Execute of a batch whose commit failed was sent"
    );
    // Once the backoff is over, a's registration, held meanwhile, is applied again:
    // a's child succeeds, and b's Execute goes.
    wait_until("b's Execute", || executes(&script) == 2);
    assert_eq!(execute_targets(&script), [a, b]);
    assert_eq!(hub.job_statistics(&job).unwrap().succeeded, 1);
    // Three tries of the registration, one lifecycle event: the committed try's (published
    // after its commit: however slow the hub's thread).
    let mut registrations = 0;
    hub_support::eventually(|| {
        registrations += std::iter::from_fn(|| lifecycle.try_recv().ok())
            .filter(|e| matches!(e, twinhub::hub::HubEvent::Lifecycle(l) if l.device == "dev-a"))
            .count();
        registrations > 0
    });
    registrations += std::iter::from_fn(|| lifecycle.try_recv().ok())
        .filter(|e| matches!(e, twinhub::hub::HubEvent::Lifecycle(l) if l.device == "dev-a"))
        .count();
    assert_eq!(registrations, 1);
}

#[cfg(feature = "fuzzing")]
#[test]
fn a_store_failing_twice_in_a_row_is_left_alone_for_a_while_and_the_events_held_meanwhile_land_after()
 {
    use twinhub::registry::RegistryError;
    use twinhub::store::StoreError;
    use twinhub::twin::ConnectionState;
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir) = hub_support::durable_hub(&[&pump], HubConfig::default());
    let backing_off = |r: Result<_, RegistryError>| match r {
        Err(RegistryError::NotDurable { error }) => error
            .error()
            .downcast_ref::<StoreError>()
            .is_some_and(|e| matches!(e, StoreError::BackingOff { .. })),
        _ => false,
    };
    // The first failure is retried at once; the second in a row starts the backoff.
    store.lock().fail_next_commit();
    store.lock().fail_next_commit();
    for _ in 0..2 {
        let r = hub.add_tags("pump", &["lost"], None);
        assert!(matches!(r, Err(RegistryError::NotDurable { .. })) && !backing_off(r));
    }
    let backoff_started = Instant::now();
    assert_eq!(hub.metrics().failed_commits, 2);
    // Backing off, a write is refused at once and changes nothing.
    let committed = store.lock().committed_seq();
    assert!(backing_off(hub.add_tags("pump", &["refused"], None)));
    assert!(hub.twin("pump").unwrap().service_properties.tags.is_empty());
    // A device's events are held, unapplied, and a request is still answered.
    let reply = hub.request(
        &pump,
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 0),
        },
    );
    script.lock().unwrap().events.extend([
        registered(&pump),
        DeviceEvent::Response {
            op: reply.op(),
            device: pump.clone(),
            result: Ok(twinhub::transport::DeviceReply::Done),
        },
    ]);
    assert!(reply.wait(Duration::from_secs(10)).is_ok());
    // (Checked only within the backoff's first second: a slow machine may be past it.)
    let held = hub.twin("pump").unwrap().connection_state == ConnectionState::Disconnected
        && store.lock().committed_seq() == committed;
    assert!(
        held || backoff_started.elapsed() >= Duration::from_millis(900),
        "an event was applied while the hub backed off"
    );
    // Once the backoff is over (1 s), the held registration lands and is committed.
    wait_until("the held registration", || {
        hub.twin("pump").unwrap().connection_state == ConnectionState::Connected
    });
    wait_until("its commit", || store.lock().committed_seq() > committed);
    assert_eq!(hub.metrics().failed_commits, 0);
    hub.add_tags("pump", &["kept"], None).unwrap();
    assert_eq!(hub.stats().dropped_events, 0);
}

#[cfg(feature = "fuzzing")]
#[test]
fn a_disk_failing_for_a_while_costs_a_few_rebuilds_and_loses_no_notification() {
    use twinhub::registry::ChangeKind;
    use twinhub::{Content, ResourceValue, Scalar};
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir) = hub_support::durable_hub(&[&pump], HubConfig::default());
    let before = store.lock().committed_seq();
    let battery = Lwm2mPath::resource(3, 0, 9);
    // Every write fails for 1.5 s while the device notifies every 10 ms.
    store.lock().fail_commits(u32::MAX);
    let until = Instant::now() + Duration::from_millis(1500);
    let mut sent = 0;
    while Instant::now() < until {
        hub_support::push(
            &script,
            DeviceEvent::Notification {
                device: pump.clone(),
                registration_id: "r1".into(),
                path: battery,
                content: Content::single(battery, ResourceValue::Integer(sent)),
            },
        );
        sent += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    // One failure, one retried at once, then one after the first second's backoff (a
    // rebuild each); without the backoff, one a batch.
    let metrics = hub.metrics();
    let failures = metrics.failed_commits;
    assert!(failures <= 4, "{failures} failed commits in 1.5 s");
    // From the second failure, the hub backs off holding the failed try's events.
    assert!(failures < 2 || metrics.held_events > 0);
    store.lock().fail_commits(0);
    wait_until("every notification committed", || {
        hub.twin("pump")
            .unwrap()
            .device_properties
            .get("BatteryLevel")
            .map(|p| p.value.clone())
            == Some(Scalar::from(sent - 1))
            && {
                // One lock at a time: the hub takes the registry before the store.
                let last = hub.registry().read().last_seq();
                store.lock().committed_seq() == last
            }
    });
    let values: Vec<i64> = hub
        .changes_after(before)
        .unwrap()
        .into_iter()
        .filter_map(|c| match c.kind {
            ChangeKind::DeviceProperty {
                value: Scalar::Number(n),
                ..
            } => n.as_i64(),
            _ => None,
        })
        .collect();
    assert_eq!(
        values,
        (0..sent).collect::<Vec<_>>(),
        "a notification was lost"
    );
    wait_until("nothing held", || hub.metrics().held_events == 0);
    assert_eq!(hub.stats().dropped_events, 0);
}

/// An Update that announces a synced object the device did not have at its registration
/// (a firmware object after an install) gets it observed; one that drops it forgets that
/// observation, and announcing it again observes it anew.
#[test]
fn an_update_announcing_a_synced_object_gets_it_observed() {
    let script = Arc::new(Mutex::new(Script::default()));
    let mut registry = Registry::new();
    let dev = DeviceId::new("grower").unwrap();
    registry.create(Twin::new(dev.clone())).unwrap();
    let hub = Hub::with_transport(Scripted(script.clone()), registry, HubConfig::default());
    hub_support::push(&script, registered(&dev));
    let observed = |path: Lwm2mPath| {
        hub_support::observes(&script)
            .iter()
            .filter(|op| op.request == DeviceRequest::Observe { path })
            .count()
    };
    wait_until("the Device object observed", || {
        observed(Lwm2mPath::instance(3, 0)) == 1
    });
    let update = |objects: Vec<Lwm2mPath>| {
        let DeviceEvent::Registered {
            device,
            mut registration,
        } = registered(&dev)
        else {
            unreachable!()
        };
        registration.objects = objects;
        DeviceEvent::RegistrationUpdated {
            device,
            registration,
        }
    };
    let (device, firmware) = (Lwm2mPath::instance(3, 0), Lwm2mPath::instance(5, 0));
    hub_support::push(&script, update(vec![device, firmware]));
    wait_until("the firmware object observed", || observed(firmware) == 1);
    hub_support::push(&script, update(vec![device]));
    hub_support::push(&script, update(vec![device, firmware]));
    wait_until("the firmware object observed again", || {
        observed(firmware) == 2
    });
    assert_eq!(
        observed(device),
        1,
        "the Device object's observation stands"
    );
    hub.stop();
}
