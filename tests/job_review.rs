//! Hostile review of the job engine and the hub's job methods: each test asserts a
//! documented promise that the current code breaks.

#![cfg(feature = "memory-fleet")]

use std::time::{Duration, Instant};
use twinhub::job::{
    ChildState, EngineConfig, FailureKind, JobEngine, JobId, JobSpec, JobType, MAX_JOB_DURATION,
    RetryRule, SpecError,
};
use twinhub::transport::{DeviceError, DeviceEvent, DeviceOp, RegistrationInfo};
use twinhub::{DeviceId, Lwm2mPath, Timestamp};

fn registered(device: &DeviceId) -> DeviceEvent {
    DeviceEvent::Registered {
        device: device.clone(),
        registration: RegistrationInfo {
            endpoint: device.to_string(),
            registration_id: "0123456789abcdef".into(),
            lifetime: 300,
            lwm2m_version: "1.1".into(),
            binding: "U".into(),
            queue_mode: false,
            objects: vec![
                Lwm2mPath::instance(1, 0),
                Lwm2mPath::instance(3, 0),
                Lwm2mPath::instance(5, 0),
                Lwm2mPath::instance(10241, 0),
            ],
            address: None,
            psk_identity: None,
        },
    }
}

fn reboot() -> JobType {
    JobType::Reboot {
        wait_for_registration: false,
    }
}

fn drain(engine: &mut JobEngine) -> Vec<DeviceOp> {
    std::iter::from_fn(|| engine.poll_op()).collect()
}

fn in_progress(engine: &JobEngine, id: &JobId) -> u64 {
    engine.statistics(id).unwrap().running
}

// Promise (src/job/spec.rs, `Rollout::max_in_flight`): "At most this many children in
// progress at once (waiting for an offline device or for a retry does not count)." and
// src/job/mod.rs: "at most `max_in_flight` children in progress".
//
// A child waiting for its retry does not count, so the rollout starts the next device in
// its place; when the retry came due, the first child went back in progress without any
// check, and two children were in progress under `max_in_flight(1)`. Now it waits for
// the slot, and takes it when b ends.
#[test]
fn a_retry_coming_due_waits_for_a_slot_under_max_in_flight() {
    let t0 = Instant::now();
    let mut e = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let a = DeviceId::new("a").unwrap();
    let b = DeviceId::new("b").unwrap();
    e.handle_event(t0, &registered(&a));
    e.handle_event(t0, &registered(&b));
    let id = JobId::new("j").unwrap();
    let mut retry = RetryRule::new(Some(FailureKind::Rejected), 1);
    retry.initial_backoff = Duration::from_secs(1);
    e.create(
        t0,
        JobSpec::new(id.clone(), reboot(), vec![a.clone(), b.clone()])
            .max_in_flight(1)
            .retry(retry),
    )
    .unwrap();
    let ops = drain(&mut e);
    assert_eq!(ops.len(), 1, "max_in_flight(1): one Execute at first");
    assert_eq!(ops[0].device, a);
    // a's device refuses: a waits for its retry, b starts in its place.
    e.handle_event(
        t0,
        &DeviceEvent::Response {
            op: ops[0].id,
            device: a.clone(),
            result: Err(DeviceError::Code(5, 0)),
        },
    );
    assert_eq!(e.child_state(&id, &a).unwrap().0, ChildState::RetryWait);
    let ops = drain(&mut e);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].device, b);
    assert_eq!(in_progress(&e, &id), 1);
    let b_execute = ops[0].id;
    // b's Execute is still unanswered when a's retry comes due.
    let t1 = t0 + Duration::from_secs(2);
    e.handle_timeout(t1);
    let sent = drain(&mut e);
    assert!(
        in_progress(&e, &id) <= 1,
        "max_in_flight(1) but {} children in progress (a retried while b runs; sent {:?})",
        in_progress(&e, &id),
        sent.iter().map(|o| o.device.as_str()).collect::<Vec<_>>()
    );
    // b reboots (its Execute answered, then its registration): a's retry goes out.
    e.handle_event(
        t1,
        &DeviceEvent::Response {
            op: b_execute,
            device: b.clone(),
            result: Ok(twinhub::resource::DeviceReply::Done),
        },
    );
    e.handle_event(t1, &registered(&b));
    assert_eq!(e.child_state(&id, &b).unwrap().0, ChildState::Succeeded);
    let ops = drain(&mut e);
    assert_eq!(
        ops.iter().map(|o| o.device.as_str()).collect::<Vec<_>>(),
        ["a"],
        "a's second attempt takes the slot"
    );
    assert_eq!(e.child_state(&id, &a).unwrap().0, ChildState::InProgress);
}

// Same promise. A child whose device went offline waits (not counted), the rollout
// starts the next device; when the first device registered again its child resumed in
// progress on top of the one that took its place. Now it waits for the slot.
#[test]
fn a_device_coming_back_waits_for_a_slot_under_max_in_flight() {
    let t0 = Instant::now();
    let mut e = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let a = DeviceId::new("a").unwrap();
    let b = DeviceId::new("b").unwrap();
    e.handle_event(t0, &registered(&a));
    e.handle_event(t0, &registered(&b));
    let id = JobId::new("j").unwrap();
    e.create(
        t0,
        JobSpec::new(
            id.clone(),
            JobType::WriteDeviceProperties {
                values: vec![(
                    Lwm2mPath::resource(3, 0, 14),
                    twinhub::ResourceValue::String("+02:00".into()),
                )],
            },
            vec![a.clone(), b.clone()],
        )
        .max_in_flight(1),
    )
    .unwrap();
    let ops = drain(&mut e);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].device, a);
    e.handle_event(t0, &DeviceEvent::Deregistered { device: a.clone() });
    assert_eq!(
        e.child_state(&id, &a).unwrap().0,
        ChildState::WaitingForDevice
    );
    let ops = drain(&mut e);
    assert!(ops.iter().any(|o| o.device == b), "b starts in a's place");
    assert_eq!(in_progress(&e, &id), 1);
    let b_write = ops.iter().find(|o| o.device == b).unwrap().id;
    let t1 = t0 + Duration::from_secs(1);
    e.handle_event(t1, &registered(&a));
    assert!(drain(&mut e).is_empty(), "nothing for a while b runs");
    assert!(
        in_progress(&e, &id) <= 1,
        "max_in_flight(1) but {} children in progress after a registered again",
        in_progress(&e, &id)
    );
    // b's write is done: a goes on, writing again from the start.
    e.handle_event(
        t1,
        &DeviceEvent::Response {
            op: b_write,
            device: b.clone(),
            result: Ok(twinhub::resource::DeviceReply::Done),
        },
    );
    assert_eq!(e.child_state(&id, &b).unwrap().0, ChildState::Succeeded);
    let ops = drain(&mut e);
    assert_eq!(
        ops.iter().map(|o| o.device.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(in_progress(&e, &id), 1);
}

// Promise (src/job/spec.rs, `JobSpec::validate`): "Checks every parameter; returns the
// first problem", and `Hub::create_job` returns `Result<JobRecord, SpecError>`.
// `RetryRule::backoff`: "The wait before retry number `retry`", at most `max_backoff`.
//
// A retry rule read from JSON (initial backoff 1e14 ms, multiplier 1e9, max 1 s) passed
// validation and made the engine panic at its second retry: `backoff` multiplied before
// it capped, and `Duration::mul_f64` panics on overflow (on a hub, on the hub thread).
// Now `validate` refuses backoffs past `MAX_JOB_DURATION` and infinite multipliers, and
// `backoff` itself is total: past what it can compute, it is `max_backoff`.
#[test]
fn a_retry_rule_past_the_bounds_is_refused_and_backoff_never_panics() {
    let spec: JobSpec = serde_json::from_str(
        r#"{
            "id": "r",
            "job": {"type": "rebootDevice"},
            "targets": ["a"],
            "retries": [{"on": "rejected", "maxRetries": 3, "initialBackoffMs": 100000000000000,
                         "multiplier": 1000000000.0, "maxBackoffMs": 1000}]
        }"#,
    )
    .unwrap();
    assert!(matches!(
        spec.validate(),
        Err(SpecError::InvalidParameter {
            name: "retries",
            ..
        })
    ));
    let t0 = Instant::now();
    let mut e = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    assert!(matches!(
        e.create(t0, spec.clone()),
        Err(SpecError::InvalidParameter {
            name: "retries",
            ..
        })
    ));
    let rule = &spec.retries[0];
    assert_eq!(rule.backoff(1), Duration::from_secs(1));
    assert_eq!(rule.backoff(3), Duration::from_secs(1));
    let mut extreme = *rule;
    extreme.initial_backoff = Duration::MAX;
    extreme.max_backoff = Duration::MAX;
    extreme.multiplier = f64::INFINITY;
    assert_eq!(extreme.backoff(2), Duration::MAX);
    extreme.multiplier = 3.0;
    extreme.initial_backoff = Duration::from_secs(2);
    assert_eq!(extreme.backoff(3), Duration::from_secs(18));
}

// Same promise: a per-device timeout of `Duration::MAX` passed validation and
// `create_job` panicked (`Instant + Duration` overflowed when the first child's deadline
// was armed), in the caller's thread, with the job half made in the engine. Now it is a
// typed error and the hub holds no job.
#[test]
fn create_job_with_a_huge_device_timeout_is_a_typed_error() {
    use twinhub::hub::{Hub, HubConfig};
    use twinhub::registry::Registry;
    use twinhub::transport::memory::{DeviceSpec, MemoryConfig, MemoryTransport};
    use twinhub::twin::Twin;
    let now = Instant::now();
    let mut transport = MemoryTransport::new(MemoryConfig::with_seed(3));
    let mut registry = Registry::new();
    let a = DeviceId::new("a").unwrap();
    transport
        .add_device(now, DeviceSpec::new(a.clone()))
        .unwrap();
    registry.create(Twin::new(a.clone())).unwrap();
    let hub = Hub::with_transport(transport, registry, HubConfig::default());
    let id = JobId::new("huge").unwrap();
    let spec = JobSpec::new(id.clone(), reboot(), vec![a.clone()]).device_timeout(Duration::MAX);
    assert!(matches!(
        hub.create_job(spec.clone()),
        Err(SpecError::InvalidParameter {
            name: "deviceTimeout",
            ..
        })
    ));
    let spec = spec
        .device_timeout(MAX_JOB_DURATION)
        .max_execution_time(Some(Duration::MAX));
    assert!(matches!(
        hub.create_job(spec.clone()),
        Err(SpecError::InvalidParameter {
            name: "maxExecutionTime",
            ..
        })
    ));
    // At the bound, the job is made.
    hub.create_job(spec.max_execution_time(Some(MAX_JOB_DURATION)))
        .unwrap();
    assert!(hub.job(&id).is_some());
    hub.stop();
}
