//! A hostile review of stop 39's change (jobs, LwM2M server and hub, DTLS, device library),
//! where two fixes met. Each test states what should hold; each failed on the change as
//! it stood, and each is fixed since.

mod hub_support;

use std::time::{Duration, Instant};
use twinhub::job::{CancelMode, ChildState, EngineConfig, JobEngine, JobId, JobSpec, JobType};
use twinhub::transport::{DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue, Timestamp};

mod job_support;
use job_support::{drain, registered_under as registered};

fn respond(
    engine: &mut JobEngine,
    now: Instant,
    op: &DeviceOp,
    result: Result<DeviceReply, DeviceError>,
) {
    engine.handle_event(
        now,
        &DeviceEvent::Response {
            op: op.id,
            device: op.device.clone(),
            result,
        },
    );
}

fn write_job(id: &JobId, devices: Vec<DeviceId>) -> JobSpec {
    JobSpec::new(
        id.clone(),
        JobType::WriteDeviceProperties {
            values: vec![(
                Lwm2mPath::resource(3, 0, 14),
                ResourceValue::String("+02".into()),
            )],
        },
        devices,
    )
}

// Failed on the change as reviewed (fixed since): `DeviceError::RegistrationEnded` means "sent, outcome unknown" (the
// LwM2M server's docs, `resource/op.rs`), unlike `NotRegistered` ("never reached the
// device"). But the job engine's `in_flight` (src/job/engine.rs, `fn in_flight`) judges
// "the attempt reached the device" by FLAG_TOUCHED, which only an *answer* sets
// (`on_response`'s Ok arm), and the RegistrationEnded arm of `on_response` does not set
// it. So an attempt whose first request (here the Write) went out and whose
// registration then ended is "never reached its device": a graceful cancel
// (FinishInFlight) cancels it at once, though the Write may well have been carried out,
// while the same attempt one answer further on would run to its end. Whether the cancel
// comes before the registration ends or after, the child ends `cancelled` for a device
// that may hold the new value.
#[test]
fn a_graceful_cancel_lets_an_attempt_whose_request_was_sent_before_its_registration_ended_finish() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    engine.handle_event(t0, &registered(&dev, "r1"));
    let id = JobId::new("w").unwrap();
    engine
        .create(t0, write_job(&id, vec![dev.clone()]))
        .unwrap();
    let ops = drain(&mut engine);
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(
        matches!(ops[0].request, DeviceRequest::Write { .. }),
        "{ops:?}"
    );
    // The graceful cancel: the Write is in flight, so the child runs to its end.
    engine.cancel(t0, &id, CancelMode::FinishInFlight).unwrap();
    assert_eq!(
        engine.child_state(&id, &dev).unwrap().0,
        ChildState::InProgress
    );
    // The device registers anew (the server ends the old registration, failing the
    // Write in flight with RegistrationEnded): the Write was sent, maybe carried out.
    respond(
        &mut engine,
        t0,
        &ops[0],
        Err(DeviceError::RegistrationEnded),
    );
    assert_ne!(
        engine.child_state(&id, &dev).unwrap().0,
        ChildState::Cancelled,
        "a sent request whose registration ended is an attempt that (maybe) reached its device"
    );
}

// Failed on the change as reviewed (fixed since): the expiry end time (`end_wall`, src/job/engine.rs, with `ending_at`
// set in `on_timer`'s JobExpire arm) is the instant the job's time ran out even when the
// engine handled later events of the job first: a caller (the hub itself: it applies a
// batch's events, then `handle_timeout`; and after a store back-off it applies held
// events, then the timers) that runs the timer late records a child ending *after* its
// job ended. The history then shows a job that ended before one of its children.
#[test]
fn an_expired_job_does_not_end_before_its_children() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(
        EngineConfig::default(),
        t0,
        Timestamp::from_millis(1_000_000),
    );
    let a = DeviceId::new("a").unwrap();
    let b = DeviceId::new("b").unwrap();
    engine.handle_event(t0, &registered(&a, "ra"));
    engine.handle_event(t0, &DeviceEvent::Deregistered { device: b.clone() });
    let id = JobId::new("w").unwrap();
    let max = Duration::from_secs(60);
    engine
        .create(
            t0,
            write_job(&id, vec![a.clone(), b.clone()])
                .max_execution_time(Some(max))
                .device_timeout(Duration::from_secs(600)),
        )
        .unwrap();
    let ops = drain(&mut engine);
    let write = ops.iter().find(|o| o.device == a).expect("a's write");
    // `a` answers 5 s after the job's time ran out, and the timer runs after that.
    let late = t0 + max + Duration::from_secs(5);
    respond(&mut engine, late, write, Ok(DeviceReply::Done));
    engine.handle_timeout(late);
    let parent = engine.job(&id).unwrap();
    let parent_end = parent.end_time_utc.expect("the job ended");
    for record in engine.children(&id) {
        if let Some(end) = record.end_time_utc {
            assert!(
                end <= parent_end,
                "child {:?} ended at {end:?}, after its job ({parent_end:?})",
                record.device_id
            );
        }
    }
}

// ---- the hub's remembered ends ----

/// Every event pushed before this one was applied: `marker` de-registers and registers.
fn applied_so_far(
    hub: &twinhub::hub::Hub,
    script: &std::sync::Mutex<hub_support::Script>,
    marker: &DeviceId,
) {
    use twinhub::twin::ConnectionState;
    hub_support::push(
        script,
        DeviceEvent::Deregistered {
            device: marker.clone(),
        },
    );
    hub_support::wait_until("the marker's de-registration", || {
        hub.twin(marker.as_str()).unwrap().connection_state == ConnectionState::Disconnected
    });
    hub_support::register(hub, script, marker);
}

// Failed on the change as reviewed (fixed since): `SentEnds` (src/hub/mod.rs) remembers every (device, registration id)
// the hub ended, and `Inner::stale_update` drops every later Update under that pair, for
// as long as the entry lives (until 4,096 newer ends). Its docs justify this with "the
// bundled server never reuses registration ids (random 64-bit)", but the hub runs over
// any `Transport` (`Hub::with_transport`), and nothing in `RegistrationInfo` or the
// `Transport` docs asks a transport for ids that are never reused; this crate's own
// scripted test transport (tests/hub_support) gives every registration the id `r1`. A
// device whose twin was removed, created again, and that registered anew under the same
// id has every Update of its new registration ignored: the twin keeps the first
// registration's data, is not marked connected again after a lapse, and no `Updated`
// lifecycle event is published. A Registered under the pair should at least clear the
// entry (the registration it names is then the device's current one).
#[test]
fn an_update_of_a_new_registration_is_applied_even_when_its_id_was_ended_before() {
    use twinhub::hub::{Hub, HubConfig};
    use twinhub::registry::Registry;
    use twinhub::twin::Twin;
    let d = DeviceId::new("reborn").unwrap();
    let marker = DeviceId::new("marker").unwrap();
    let mut registry = Registry::new();
    registry.create(Twin::new(d.clone())).unwrap();
    registry.create(Twin::new(marker.clone())).unwrap();
    let script = std::sync::Arc::new(std::sync::Mutex::new(hub_support::Script::default()));
    let hub = Hub::with_transport(
        hub_support::Scripted(script.clone()),
        registry,
        HubConfig::default(),
    );
    hub_support::register(&hub, &script, &d);
    hub_support::register(&hub, &script, &marker);
    hub.remove_device("reborn").unwrap();
    let ends = || {
        hub_support::submitted_where(&script, |op| {
            matches!(op.request, DeviceRequest::EndRegistration { .. })
        })
    };
    hub_support::wait_until("the end", || ends().len() == 1);
    let end = ends().remove(0);
    hub_support::answer_done(&script, &d, &end);
    // The twin comes back and the device registers anew (the transport's id: `r1`).
    hub.create_device(Twin::new(d.clone())).unwrap();
    hub_support::register(&hub, &script, &d);
    // Its Update under that new registration, with a new lifetime.
    let update = match hub_support::registered_v(&d, "1.0") {
        DeviceEvent::Registered {
            device,
            mut registration,
        } => {
            registration.lifetime = 600;
            DeviceEvent::RegistrationUpdated {
                device,
                registration,
            }
        }
        _ => unreachable!(),
    };
    hub_support::push(&script, update);
    applied_so_far(&hub, &script, &marker);
    let twin = hub.twin("reborn").unwrap();
    assert_eq!(
        twin.registration.as_ref().map(|r| r.lifetime),
        Some(600),
        "the Update of the device's current registration was dropped as stale"
    );
    hub.stop();
}

// ---- max_in_flight under a graceful cancel ----

// Failed on the change as reviewed (fixed since): `Rollout::max_in_flight` promises "at most this many children in
// progress at once", and `JobEngine::validate` (which job_props, job_sim and the job fuzz
// target assert) checks exactly that. The graceful-cancel change made `hold_if_full`
// (src/job/engine.rs) hold nothing unless the job is Running, and `cancel` resume every
// held child: under `CancelMode::FinishInFlight` a child whose device comes back runs
// beside the ones holding every slot, so two children are in progress under
// `max_in_flight(1)` and the engine's own consistency check fails. The resumed child
// should wait for a slot as before (nothing new starts, but a slot still frees as the
// others end), or the bound and `validate` should say otherwise.
#[test]
fn a_graceful_cancel_keeps_max_in_flight() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let d = DeviceId::new("d").unwrap();
    let e = DeviceId::new("e").unwrap();
    engine.handle_event(t0, &registered(&d, "rd"));
    engine.handle_event(t0, &registered(&e, "re"));
    let id = JobId::new("fw").unwrap();
    let job = JobType::FirmwareUpdate {
        package_uri: "coap://fw/2.0.bin".into(),
        expected_version: None,
    };
    engine
        .create(
            t0,
            JobSpec::new(id.clone(), job, vec![d.clone(), e.clone()]).max_in_flight(1),
        )
        .unwrap();
    // `d`'s attempt reaches the device (its observation is answered).
    let observe = drain(&mut engine).remove(0);
    assert_eq!(observe.device, d);
    let state = twinhub::Content {
        values: vec![
            (Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(0)),
            (Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(0)),
        ],
    };
    respond(&mut engine, t0, &observe, Ok(DeviceReply::Content(state)));
    drain(&mut engine);
    // `d` goes offline mid-attempt: its slot goes to `e`.
    engine.handle_event(t0, &DeviceEvent::Expired { device: d.clone() });
    assert_eq!(
        engine.child_state(&id, &e).unwrap().0,
        ChildState::InProgress
    );
    drain(&mut engine);
    engine.cancel(t0, &id, CancelMode::FinishInFlight).unwrap();
    // `d` comes back while `e` holds the only slot.
    engine.handle_event(t0, &registered(&d, "rd2"));
    // The engine's own consistency check (job_props, job_sim, the job fuzz target).
    if let Err(why) = engine.validate() {
        panic!("JobEngine::validate: {why}");
    }
    let in_progress = [&d, &e]
        .into_iter()
        .filter(|x| engine.child_state(&id, x).unwrap().0 == ChildState::InProgress)
        .count();
    assert!(
        in_progress <= 1,
        "{in_progress} children in progress under max_in_flight(1)"
    );
}
