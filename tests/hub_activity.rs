//! What moves a twin's `lastActivityTime` ("when the device was last heard from"): only
//! something the device sent. An undecodable answer (`DeviceError::BadPayload`) is the
//! device's when the request left (its [`DeviceEvent::Sent`] came first); one without a
//! `Sent` is the transport's own (it could not encode or send the request): the device
//! said nothing. Before, both counted as hearing from the device.
#![cfg(all(feature = "fuzzing", feature = "memory-fleet"))]

mod hub_support;

use hub_support::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use twinhub::hub::{Hub, HubConfig, RequestError};
use twinhub::registry::Registry;
use twinhub::transport::{DeviceError, DeviceEvent, DeviceOp, DeviceRequest};
use twinhub::twin::Twin;
use twinhub::{DeviceId, Lwm2mPath, Timestamp};

/// A hub (no store, sync off) over a scripted transport that reports `Sent`, where
/// `pump` registered.
fn hub_with_pump(pump: &DeviceId) -> (Hub, Arc<Mutex<Script>>) {
    let mut registry = Registry::new();
    registry.create(Twin::new(pump.clone())).unwrap();
    let script = Arc::new(Mutex::new(Script {
        reports_sent: true,
        ..Script::default()
    }));
    let config = HubConfig {
        sync: None,
        ..HubConfig::default()
    };
    let hub = Hub::with_transport(Scripted(script.clone()), registry, config);
    register(&hub, &script, pump);
    (hub, script)
}

fn last_activity(hub: &Hub, pump: &DeviceId) -> Option<Timestamp> {
    hub.twin(pump.as_str()).unwrap().last_activity_time
}

/// Reads `/3/0/9` of `pump`; the transport answers `BadPayload`, after a `Sent` when
/// `left`. Returns the twin's `lastActivityTime` before and after.
fn bad_payload_answer(left: bool) -> (Option<Timestamp>, Option<Timestamp>) {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, script) = hub_with_pump(&pump);
    let before = last_activity(&hub, &pump);
    // The clock moves on (milliseconds), so a new activity time would differ.
    std::thread::sleep(Duration::from_millis(30));
    let reply = hub.request(
        &pump,
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 9),
        },
    );
    wait_until("the Read", || !script.lock().unwrap().submitted.is_empty());
    let op: DeviceOp = script.lock().unwrap().submitted[0].clone();
    if left {
        push(
            &script,
            DeviceEvent::Sent {
                op: op.id,
                device: pump.clone(),
            },
        );
    }
    push(
        &script,
        DeviceEvent::Response {
            op: op.id,
            device: pump.clone(),
            result: Err(DeviceError::BadPayload("cannot encode".into())),
        },
    );
    assert!(matches!(
        reply.wait(Duration::from_secs(30)),
        Err(RequestError::Device(DeviceError::BadPayload(_)))
    ));
    // The reply is completed inside the batch that applies it; let the batch finish.
    std::thread::sleep(Duration::from_millis(100));
    let after = last_activity(&hub, &pump);
    hub.stop();
    (before, after)
}

#[test]
fn control_an_undecodable_answer_after_the_request_left_is_device_activity() {
    let (before, after) = bad_payload_answer(true);
    assert!(before.is_some());
    assert!(after > before, "{before:?} -> {after:?}");
}

#[test]
fn a_bad_payload_before_the_request_left_is_not_device_activity() {
    let (before, after) = bad_payload_answer(false);
    assert!(before.is_some());
    assert_eq!(
        after, before,
        "the transport refused the request before sending it, yet the device counts as \
         heard from"
    );
}

/// A bootstrap that `pump`'s device saw through (it acknowledged Bootstrap-Finish) is the
/// device heard from; a refused one (no plan for the endpoint: refused like a
/// registration) and a failed one (a step may have failed for want of an answer) are not.
/// Before, no bootstrap moved `lastActivityTime`.
#[test]
fn a_finished_bootstrap_is_device_activity_a_refused_or_failed_one_is_not() {
    use twinhub::transport::BootstrapOutcome;
    let pump = DeviceId::new("pump").unwrap();
    let (hub, script) = hub_with_pump(&pump);
    let bootstrap = |outcome: BootstrapOutcome| {
        let before = last_activity(&hub, &pump);
        std::thread::sleep(Duration::from_millis(30));
        let events = hub.stats().events;
        push(
            &script,
            DeviceEvent::Bootstrap {
                endpoint: "pump".into(),
                address: None,
                outcome,
            },
        );
        wait_until("the bootstrap applied", || hub.stats().events > events);
        (before, last_activity(&hub, &pump))
    };
    let (before, after) = bootstrap(BootstrapOutcome::Refused);
    assert_eq!(after, before, "refused");
    let (before, after) = bootstrap(BootstrapOutcome::Failed("no answer to Write /0".into()));
    assert_eq!(after, before, "failed");
    let (before, after) = bootstrap(BootstrapOutcome::Finished);
    assert!(after > before, "finished: {before:?} -> {after:?}");
    hub.stop();
}

/// An observation's end that the device made (an error notification, a CoAP Reset) is
/// the device heard from; one the transport made (a time-out, a cancel) is not. Before,
/// neither counted: the event did not say who ended it.
#[test]
fn an_observation_the_device_ended_is_device_activity_one_the_transport_ended_is_not() {
    use twinhub::transport::{ObservationEndCause, OpId};
    let pump = DeviceId::new("pump").unwrap();
    let (hub, script) = hub_with_pump(&pump);
    let ended = |cause: ObservationEndCause| {
        let before = last_activity(&hub, &pump);
        std::thread::sleep(Duration::from_millis(30));
        let events = hub.stats().events;
        push(
            &script,
            DeviceEvent::ObservationEnded {
                device: pump.clone(),
                path: Lwm2mPath::resource(3, 0, 9),
                op: OpId(77),
                cause,
            },
        );
        wait_until("the end applied", || hub.stats().events > events);
        (before, last_activity(&hub, &pump))
    };
    let (before, after) = ended(ObservationEndCause::TimedOut);
    assert_eq!(after, before, "timed out");
    let (before, after) = ended(ObservationEndCause::Cancelled);
    assert_eq!(after, before, "cancelled");
    let (before, after) = ended(ObservationEndCause::EndedByDevice);
    assert!(
        after > before,
        "ended by the device: {before:?} -> {after:?}"
    );
    let (before, after) = ended(ObservationEndCause::Reset);
    assert!(after > before, "reset: {before:?} -> {after:?}");
    hub.stop();
}
