//! Driving a [`JobEngine`] by hand, for the job tests that play the transport: the test
//! hands the engine device events and answers the operations it polls.
//! Shared by the `job_*` and review test files (each is its own crate; each uses a part).
#![allow(dead_code)]

use std::time::Instant;
use twinhub::job::JobEngine;
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, RegistrationInfo};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

/// The objects a device announces in [`registered`]: Server, Device, Firmware Update and
/// the preview's Config.
pub fn all_objects() -> Vec<Lwm2mPath> {
    vec![
        Lwm2mPath::instance(1, 0),
        Lwm2mPath::instance(3, 0),
        Lwm2mPath::instance(5, 0),
        Lwm2mPath::instance(10241, 0),
    ]
}

/// `device` registered (LwM2M 1.1, UDP) announcing `objects`.
pub fn registered_with(device: &DeviceId, objects: &[Lwm2mPath]) -> DeviceEvent {
    registration(device, "0123456789abcdef", objects)
}

/// `device` registered under `registration_id`, announcing [`all_objects`].
pub fn registered_under(device: &DeviceId, registration_id: &str) -> DeviceEvent {
    registration(device, registration_id, &all_objects())
}

fn registration(device: &DeviceId, registration_id: &str, objects: &[Lwm2mPath]) -> DeviceEvent {
    DeviceEvent::Registered {
        device: device.clone(),
        registration: RegistrationInfo {
            endpoint: device.to_string(),
            registration_id: registration_id.into(),
            lifetime: 300,
            lwm2m_version: "1.1".into(),
            binding: "U".into(),
            queue_mode: false,
            objects: objects.to_vec(),
            address: None,
            psk_identity: None,
        },
    }
}

/// `device` registered announcing [`all_objects`].
pub fn registered(device: &DeviceId) -> DeviceEvent {
    registered_with(device, &all_objects())
}

/// Firmware Update `/5/0` with State `state` and Update Result `result`.
pub fn fw_state(state: i64, result: i64) -> Content {
    Content {
        values: vec![
            (Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(state)),
            (Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(result)),
        ],
    }
}

/// The device answers `op` with `reply`.
pub fn answer(engine: &mut JobEngine, now: Instant, op: &DeviceOp, reply: DeviceReply) {
    engine.handle_event(
        now,
        &DeviceEvent::Response {
            op: op.id,
            device: op.device.clone(),
            result: Ok(reply),
        },
    );
}

/// `op` got no answer in time.
pub fn timed_out(engine: &mut JobEngine, now: Instant, op: &DeviceOp) {
    engine.handle_event(
        now,
        &DeviceEvent::TimedOut {
            op: op.id,
            device: op.device.clone(),
        },
    );
}

/// `device` notifies `content` for its `/5/0` observation.
pub fn notify_firmware(engine: &mut JobEngine, now: Instant, device: &DeviceId, content: Content) {
    engine.handle_event(
        now,
        &DeviceEvent::Notification {
            device: device.clone(),
            registration_id: "r1".into(),
            path: Lwm2mPath::instance(5, 0),
            content,
        },
    );
}

/// Every operation the engine has to send now.
pub fn drain(engine: &mut JobEngine) -> Vec<DeviceOp> {
    std::iter::from_fn(|| engine.poll_op()).collect()
}

/// The only operation the engine has to send now.
pub fn one_op(engine: &mut JobEngine) -> DeviceOp {
    let ops = drain(engine);
    assert_eq!(ops.len(), 1, "{ops:?}");
    ops.into_iter().next().unwrap()
}

/// Whether `op` writes `path`.
pub fn is_write_of(op: &DeviceOp, path: Lwm2mPath) -> bool {
    matches!(&op.request, DeviceRequest::Write { path: p, .. } if *p == path)
}
