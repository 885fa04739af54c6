//! The job engine driven by hand, event by event: exact operations and decisions.

use std::time::{Duration, Instant};
use twinhub::job::{
    EngineConfig, FailureReason, FirmwareStates, JOB_OP_ID_BASE, JobEngine, JobId, JobSpec,
    JobStatus, JobType,
};
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceReply, DeviceRequest};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue, Timestamp};

fn fw_state(state: i64, result: i64) -> Content {
    Content {
        values: vec![
            (Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(state)),
            (Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(result)),
        ],
    }
}

fn answer(engine: &mut JobEngine, now: Instant, op: &DeviceOp, reply: DeviceReply) {
    engine.handle_event(
        now,
        &DeviceEvent::Response {
            op: op.id,
            device: op.device.clone(),
            result: Ok(reply),
        },
    );
}

fn one_op(engine: &mut JobEngine) -> DeviceOp {
    let op = engine.poll_op().expect("an operation");
    assert!(engine.poll_op().is_none(), "more than one operation");
    op
}

/// Runs a firmware update through its steps with the given State numbering.
fn firmware_steps(encoding: FirmwareStates, idle: i64, downloading: i64, downloaded: i64) {
    let t0 = Instant::now();
    let config = EngineConfig {
        firmware_states: encoding,
        ..EngineConfig::default()
    };
    let mut engine = JobEngine::new(config, t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    let job = JobId::new("fw").unwrap();
    let spec = JobSpec::new(
        job.clone(),
        JobType::FirmwareUpdate {
            package_uri: "coap://x/2.0".into(),
            expected_version: Some("2.0".into()),
        },
        vec![dev.clone()],
    );
    engine.create(t0, spec).unwrap();
    let now = t0 + Duration::from_secs(1);
    let observe = one_op(&mut engine);
    assert!(observe.id.0 >= JOB_OP_ID_BASE);
    assert_eq!(
        observe.request,
        DeviceRequest::Observe {
            path: Lwm2mPath::instance(5, 0)
        }
    );
    answer(
        &mut engine,
        now,
        &observe,
        DeviceReply::Content(fw_state(idle, 0)),
    );
    let write = one_op(&mut engine);
    assert!(
        matches!(&write.request, DeviceRequest::Write { path, .. } if *path == Lwm2mPath::resource(5, 0, 1))
    );
    answer(&mut engine, now, &write, DeviceReply::Done);
    assert!(engine.poll_op().is_none());
    let notify = |engine: &mut JobEngine, content| {
        engine.handle_event(
            now,
            &DeviceEvent::Notification {
                device: dev.clone(),
                path: Lwm2mPath::instance(5, 0),
                content,
            },
        )
    };
    notify(&mut engine, fw_state(downloading, 0));
    assert!(engine.poll_op().is_none(), "still downloading");
    notify(&mut engine, fw_state(downloaded, 0));
    let execute = one_op(&mut engine);
    assert_eq!(
        execute.request,
        DeviceRequest::Execute {
            path: Lwm2mPath::resource(5, 0, 2),
            args: None
        }
    );
    answer(&mut engine, now, &execute, DeviceReply::Done);
    notify(&mut engine, fw_state(idle, 1));
    let verify = one_op(&mut engine);
    answer(
        &mut engine,
        now,
        &verify,
        DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 3),
            ResourceValue::String("2.0".into()),
        )),
    );
    // The child is done: the engine cancels its observation.
    let cancel = one_op(&mut engine);
    assert!(matches!(
        cancel.request,
        DeviceRequest::CancelObserve { .. }
    ));
    assert_eq!(engine.job(&job).unwrap().status, JobStatus::Completed);
    let update = engine.poll_twin_update().unwrap();
    assert_eq!(update.device, dev);
    engine.validate().unwrap();
}

#[test]
fn firmware_steps_with_lwm2m_state_numbers() {
    firmware_steps(FirmwareStates::Lwm2m, 0, 1, 2);
}

#[test]
fn firmware_steps_with_the_preview_state_numbers() {
    firmware_steps(FirmwareStates::Preview2016, 1, 2, 3);
}

#[test]
fn update_result_codes_become_failure_reasons() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    let job = JobId::new("fw").unwrap();
    let fw = JobType::FirmwareUpdate {
        package_uri: "coap://x/2.0".into(),
        expected_version: None,
    };
    engine
        .create(t0, JobSpec::new(job.clone(), fw, vec![dev.clone()]))
        .unwrap();
    let observe = one_op(&mut engine);
    answer(
        &mut engine,
        t0,
        &observe,
        DeviceReply::Content(fw_state(0, 0)),
    );
    let write = one_op(&mut engine);
    answer(&mut engine, t0, &write, DeviceReply::Done);
    engine.handle_event(
        t0,
        &DeviceEvent::Notification {
            device: dev.clone(),
            path: Lwm2mPath::instance(5, 0),
            content: fw_state(0, 7),
        },
    );
    let (_, reason) = engine.child_state(&job, &dev).unwrap();
    assert_eq!(
        reason,
        Some(&FailureReason::FirmwareUpdateFailed { result: 7 })
    );
    let record = engine.children(&job).next().unwrap();
    assert_eq!(record.failure_reason.as_deref(), Some("deviceError:7"));
    assert_eq!(
        record.status_message,
        "firmware update failed: invalid URI (update result 7)"
    );
    assert_eq!(engine.job(&job).unwrap().status, JobStatus::Failed);
    assert_eq!(
        engine.job(&job).unwrap().status_message,
        "1 device: 0 updated, 1 failed, 0 cancelled"
    );
}

#[test]
fn property_names_resolve_to_paths() {
    let job =
        JobType::write_properties(&[("Timezone", ResourceValue::String("UTC".into()))]).unwrap();
    assert_eq!(
        job,
        JobType::WriteDeviceProperties {
            values: vec![(
                Lwm2mPath::resource(3, 0, 15),
                ResourceValue::String("UTC".into())
            )]
        }
    );
    assert!(JobType::read_properties(&["NoSuchProperty"]).is_err());
}

#[test]
fn dry_run_returns_the_frozen_targets_and_rejects_duplicates() {
    let t0 = Instant::now();
    let engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let a = DeviceId::new("a").unwrap();
    let b = DeviceId::new("b").unwrap();
    let reboot = JobType::Reboot {
        wait_for_registration: false,
    };
    let spec = JobSpec::new(
        JobId::new("r").unwrap(),
        reboot.clone(),
        vec![a.clone(), b.clone()],
    );
    assert_eq!(engine.dry_run(&spec).unwrap(), &[a.clone(), b][..]);
    let dup = JobSpec::new(JobId::new("r").unwrap(), reboot, vec![a.clone(), a.clone()]);
    assert_eq!(
        engine.dry_run(&dup),
        Err(twinhub::job::SpecError::DuplicateTarget(a))
    );
}
