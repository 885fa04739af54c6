//! The job engine driven by hand, event by event: exact operations and decisions.

use std::time::{Duration, Instant};
use twinhub::job::{
    ChildState, EngineConfig, FailureKind, FailureReason, FirmwareStates, JOB_OP_ID_BASE,
    JobEngine, JobId, JobSpec, JobStatus, JobType, RetryRule, SpecError,
};
use twinhub::transport::{DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue, Timestamp};

mod job_support;
use job_support::{
    answer, drain, fw_state, is_write_of, observe_idle_and_write, one_child, one_op, reboot,
    registered, registered_with, state as child_status, timed_out,
};

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
                registration_id: "r1".into(),
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
    observe_idle_and_write(&mut engine, t0);
    engine.handle_event(
        t0,
        &DeviceEvent::Notification {
            device: dev.clone(),
            registration_id: "r1".into(),
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
    let reboot = reboot(false);
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

// ---- Issue #16 findings 7, 8 and 9: restarts, lost messages, shared observations and
// objects a device did not announce. ----

fn fw_job() -> JobType {
    JobType::FirmwareUpdate {
        package_uri: "coap://x/2.0".into(),
        expected_version: None,
    }
}

fn reboot_job() -> JobType {
    reboot(false)
}

#[test]
fn a_device_that_restarts_mid_download_gets_the_package_uri_again() {
    let (mut engine, t0, dev, id) = one_child(EngineConfig::default(), fw_job());
    let observe = one_op(&mut engine);
    answer(
        &mut engine,
        t0,
        &observe,
        DeviceReply::Content(fw_state(0, 0)),
    );
    let write = one_op(&mut engine);
    assert!(is_write_of(&write, Lwm2mPath::resource(5, 0, 1)));
    answer(&mut engine, t0, &write, DeviceReply::Done);
    engine.handle_event(
        t0,
        &DeviceEvent::Notification {
            device: dev.clone(),
            registration_id: "r1".into(),
            path: Lwm2mPath::instance(5, 0),
            content: fw_state(1, 0),
        },
    );
    // The device restarts: it registers again and has forgotten the download.
    let t1 = t0 + Duration::from_secs(3);
    engine.handle_event(t1, &registered(&dev));
    let resync = one_op(&mut engine);
    assert_eq!(*resync.request.path(), Lwm2mPath::instance(5, 0));
    answer(
        &mut engine,
        t1,
        &resync,
        DeviceReply::Content(fw_state(0, 0)),
    );
    let again = one_op(&mut engine);
    assert!(
        is_write_of(&again, Lwm2mPath::resource(5, 0, 1)),
        "the package URI is written again, not {again:?}"
    );
    answer(&mut engine, t1, &again, DeviceReply::Done);
    assert_eq!(
        child_status(&engine, &id, &dev),
        (ChildState::InProgress, None)
    );
    engine.validate().unwrap();
}

#[test]
fn a_restart_that_kept_the_downloaded_package_goes_on_to_install_it() {
    let (mut engine, t0, dev, _) = one_child(EngineConfig::default(), fw_job());
    observe_idle_and_write(&mut engine, t0);
    engine.handle_event(t0, &registered(&dev));
    let resync = one_op(&mut engine);
    answer(
        &mut engine,
        t0,
        &resync,
        DeviceReply::Content(fw_state(2, 0)),
    );
    let execute = one_op(&mut engine);
    assert_eq!(
        execute.request,
        DeviceRequest::Execute {
            path: Lwm2mPath::resource(5, 0, 2),
            args: None
        }
    );
}

#[test]
fn a_registration_after_the_reboot_execute_counts_as_the_reboot() {
    let (mut engine, t0, dev, id) = one_child(EngineConfig::default(), reboot_job());
    let execute = one_op(&mut engine);
    assert!(matches!(execute.request, DeviceRequest::Execute { .. }));
    // No answer (the device rebooted before answering); it registers again.
    engine.handle_event(t0 + Duration::from_secs(5), &registered(&dev));
    assert!(engine.poll_op().is_none(), "the reboot is not repeated");
    assert_eq!(
        child_status(&engine, &id, &dev),
        (ChildState::Succeeded, None)
    );
    assert_eq!(engine.job(&id).unwrap().status, JobStatus::Completed);
    engine.validate().unwrap();
}

#[test]
fn a_lost_reboot_answer_waits_for_the_registration_and_never_executes_twice() {
    let config = EngineConfig::default();
    let wait = config.reboot_wait;
    let (mut engine, t0, dev, id) = one_child(config.clone(), reboot_job());
    let execute = one_op(&mut engine);
    let t1 = t0 + Duration::from_secs(93);
    timed_out(&mut engine, t1, &execute);
    assert!(engine.poll_op().is_none());
    engine.handle_event(t1 + Duration::from_secs(30), &registered(&dev));
    assert_eq!(child_status(&engine, &id, &dev).0, ChildState::Succeeded);

    // Without a registration the attempt fails after reboot_wait, well before the
    // 30-minute device timeout.
    let (mut engine, t0, dev, id) = one_child(config, reboot_job());
    let execute = one_op(&mut engine);
    timed_out(&mut engine, t0 + Duration::from_secs(93), &execute);
    let at = engine.poll_timeout().unwrap();
    assert_eq!(at, t0 + Duration::from_secs(93) + wait);
    engine.handle_timeout(at);
    assert!(engine.poll_op().is_none());
    assert_eq!(
        child_status(&engine, &id, &dev),
        (ChildState::Failed, Some("timedOut".into()))
    );
}

#[test]
fn steps_in_flight_are_sent_again_when_the_device_registers_again() {
    let config_job = JobType::ConfigurationUpdate {
        name: "n".into(),
        value: "v".into(),
    };
    let (mut engine, t0, dev, id) = one_child(EngineConfig::default(), config_job);
    let write = one_op(&mut engine);
    assert!(is_write_of(&write, Lwm2mPath::instance(10241, 0)));
    answer(&mut engine, t0, &write, DeviceReply::Done);
    let _execute = one_op(&mut engine);
    // A restart while the apply is in flight: the configuration is written again.
    engine.handle_event(t0, &registered(&dev));
    let write2 = one_op(&mut engine);
    assert!(is_write_of(&write2, Lwm2mPath::instance(10241, 0)));
    answer(&mut engine, t0, &write2, DeviceReply::Done);
    let execute2 = one_op(&mut engine);
    answer(&mut engine, t0, &execute2, DeviceReply::Done);
    assert_eq!(child_status(&engine, &id, &dev).0, ChildState::Succeeded);

    let read_job = JobType::ReadDeviceProperties {
        paths: vec![Lwm2mPath::resource(3, 0, 9)],
    };
    let (mut engine, t0, dev, id) = one_child(EngineConfig::default(), read_job);
    let read = one_op(&mut engine);
    engine.handle_event(t0, &registered(&dev));
    let read2 = one_op(&mut engine);
    assert_eq!(read2.request, read.request);
    // The old operation's late answer is ignored; the new one completes the child.
    answer(&mut engine, t0, &read, DeviceReply::Done);
    assert_eq!(child_status(&engine, &id, &dev).0, ChildState::InProgress);
    answer(
        &mut engine,
        t0,
        &read2,
        DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 9),
            ResourceValue::Integer(50),
        )),
    );
    assert_eq!(child_status(&engine, &id, &dev).0, ChildState::Succeeded);
}

#[test]
fn lost_answers_to_idempotent_operations_are_resent_up_to_max_resends() {
    let config = EngineConfig::default();
    let max = config.max_resends;
    let write_job = JobType::WriteDeviceProperties {
        values: vec![(
            Lwm2mPath::resource(3, 0, 15),
            ResourceValue::String("UTC".into()),
        )],
    };
    let (mut engine, t0, dev, id) = one_child(config, write_job);
    let mut op = one_op(&mut engine);
    for i in 0..max {
        timed_out(&mut engine, t0 + Duration::from_secs(10 * i as u64), &op);
        let again = one_op(&mut engine);
        assert_eq!(again.request, op.request, "resend {i}");
        op = again;
    }
    // At the bound: the next time-out fails the attempt.
    timed_out(&mut engine, t0 + Duration::from_secs(100), &op);
    assert!(engine.poll_op().is_none());
    assert_eq!(
        child_status(&engine, &id, &dev),
        (ChildState::Failed, Some("timedOut".into()))
    );
    let record = engine.children(&id).next().unwrap();
    assert_eq!(record.failure_reason.as_deref(), Some("timedOut"));
}

#[test]
fn a_lost_firmware_execute_answer_is_checked_before_it_is_sent_again() {
    let (mut engine, t0, _dev, _) = one_child(EngineConfig::default(), fw_job());
    observe_idle_and_write(&mut engine, t0);
    let poll_at = engine.poll_timeout().unwrap();
    assert_eq!(
        poll_at,
        t0 + Duration::from_secs(1),
        "the first poll comes after 1 s"
    );
    engine.handle_timeout(poll_at);
    let poll = one_op(&mut engine);
    answer(
        &mut engine,
        poll_at,
        &poll,
        DeviceReply::Content(fw_state(2, 0)),
    );
    let execute = one_op(&mut engine);
    assert!(matches!(execute.request, DeviceRequest::Execute { .. }));
    timed_out(&mut engine, poll_at, &execute);
    let check = one_op(&mut engine);
    assert_eq!(
        check.request,
        DeviceRequest::Read {
            path: Lwm2mPath::instance(5, 0)
        }
    );
    // Still Downloaded: the Execute never arrived, send it again.
    answer(
        &mut engine,
        poll_at,
        &check,
        DeviceReply::Content(fw_state(2, 0)),
    );
    let execute2 = one_op(&mut engine);
    assert!(matches!(execute2.request, DeviceRequest::Execute { .. }));
    // Lost again, but this time the device is Updating: wait, do not execute twice.
    timed_out(&mut engine, poll_at, &execute2);
    let check2 = one_op(&mut engine);
    answer(
        &mut engine,
        poll_at,
        &check2,
        DeviceReply::Content(fw_state(3, 0)),
    );
    assert!(engine.poll_op().is_none());
}

#[test]
fn polls_back_off_from_poll_min_to_poll_interval() {
    let (mut engine, t0, _dev, _) = one_child(EngineConfig::default(), fw_job());
    observe_idle_and_write(&mut engine, t0);
    let mut gaps = Vec::new();
    let mut last = t0;
    for _ in 0..7 {
        let at = engine.poll_timeout().unwrap();
        gaps.push((at - last).as_secs());
        last = at;
        engine.handle_timeout(at);
        let read = one_op(&mut engine);
        answer(&mut engine, at, &read, DeviceReply::Content(fw_state(1, 0)));
    }
    assert_eq!(gaps, vec![1, 2, 4, 8, 16, 30, 30]);
}

#[test]
fn a_firmware_job_follows_the_hosts_observation_instead_of_observing_again() {
    let config = EngineConfig {
        host_observes: vec![Lwm2mPath::instance(3, 0), Lwm2mPath::instance(5, 0)],
        ..EngineConfig::default()
    };
    let (mut engine, t0, dev, id) = one_child(config, fw_job());
    let mut sent = Vec::new();
    let first = one_op(&mut engine);
    assert_eq!(
        first.request,
        DeviceRequest::Read {
            path: Lwm2mPath::instance(5, 0)
        }
    );
    sent.push(first.request.clone());
    answer(
        &mut engine,
        t0,
        &first,
        DeviceReply::Content(fw_state(0, 0)),
    );
    let write = one_op(&mut engine);
    sent.push(write.request.clone());
    answer(&mut engine, t0, &write, DeviceReply::Done);
    // The host's observation notifies; the engine follows it.
    let notify = |engine: &mut JobEngine, content| {
        engine.handle_event(
            t0,
            &DeviceEvent::Notification {
                device: dev.clone(),
                registration_id: "r1".into(),
                path: Lwm2mPath::instance(5, 0),
                content,
            },
        )
    };
    notify(&mut engine, fw_state(2, 0));
    let execute = one_op(&mut engine);
    sent.push(execute.request.clone());
    answer(&mut engine, t0, &execute, DeviceReply::Done);
    notify(&mut engine, fw_state(0, 1));
    let verify = one_op(&mut engine);
    sent.push(verify.request.clone());
    answer(
        &mut engine,
        t0,
        &verify,
        DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 3),
            ResourceValue::String("2.0".into()),
        )),
    );
    assert_eq!(engine.job(&id).unwrap().status, JobStatus::Completed);
    sent.extend(std::iter::from_fn(|| engine.poll_op()).map(|op| op.request));
    assert!(
        !sent.iter().any(|r| matches!(
            r,
            DeviceRequest::Observe { .. } | DeviceRequest::CancelObserve { .. }
        )),
        "the job neither observes nor cancels: {sent:?}"
    );
}

#[test]
fn a_step_for_an_object_the_device_did_not_announce_fails_at_once() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let plain = DeviceId::new("plain").unwrap();
    let unknown = DeviceId::new("never-registered").unwrap();
    engine.handle_event(
        t0,
        &registered_with(
            &plain,
            &[Lwm2mPath::instance(1, 0), Lwm2mPath::instance(3, 0)],
        ),
    );
    let id = JobId::new("cfg").unwrap();
    let job = JobType::ConfigurationUpdate {
        name: "n".into(),
        value: "v".into(),
    };
    engine
        .create(
            t0,
            JobSpec::new(id.clone(), job, vec![plain.clone(), unknown.clone()]),
        )
        .unwrap();
    // Nothing is sent to `plain`; the device whose announcements are unknown gets the write.
    let op = one_op(&mut engine);
    assert_eq!(op.device, unknown);
    assert_eq!(
        child_status(&engine, &id, &plain),
        (ChildState::Failed, Some("objectNotAnnounced:10241".into()))
    );
    let record = engine
        .children(&id)
        .find(|r| r.device_id.as_ref() == Some(&plain))
        .unwrap();
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("objectNotAnnounced:10241")
    );
    assert!(
        record.status_message.contains("/10241 not announced"),
        "{}",
        record.status_message
    );
    // A firmware job on it fails the same way, for /5.
    let fw = JobId::new("fw").unwrap();
    engine
        .create(t0, JobSpec::new(fw.clone(), fw_job(), vec![plain.clone()]))
        .unwrap();
    assert_eq!(
        child_status(&engine, &fw, &plain),
        (ChildState::Failed, Some("objectNotAnnounced:5".into()))
    );
    // The device's own refusal carries its CoAP code.
    engine.handle_event(
        t0,
        &DeviceEvent::Response {
            op: op.id,
            device: unknown.clone(),
            result: Err(DeviceError::NotFound),
        },
    );
    assert_eq!(
        child_status(&engine, &id, &unknown),
        (ChildState::Failed, Some("rejected:4.04".into()))
    );
    engine.validate().unwrap();
}

#[test]
fn many_devices_without_the_object_fail_without_deep_recursion() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let devices: Vec<DeviceId> = (0..20_000)
        .map(|i| DeviceId::new(&format!("d{i}")).unwrap())
        .collect();
    for d in &devices {
        engine.handle_event(t0, &registered_with(d, &[Lwm2mPath::instance(3, 0)]));
    }
    let id = JobId::new("cfg").unwrap();
    let job = JobType::ConfigurationUpdate {
        name: "n".into(),
        value: "v".into(),
    };
    engine
        .create(t0, JobSpec::new(id.clone(), job, devices))
        .unwrap();
    assert!(engine.poll_op().is_none());
    let stats = engine.statistics(&id).unwrap();
    assert_eq!(stats.failed, 20_000);
    assert_eq!(engine.job(&id).unwrap().status, JobStatus::Failed);
}

#[test]
fn announced_object_sets_are_shared_and_bounded() {
    let t0 = Instant::now();
    let config = EngineConfig {
        max_object_sets: 2,
        ..EngineConfig::default()
    };
    let mut engine = JobEngine::new(config, t0, Timestamp::from_millis(0));
    let sets: [&[Lwm2mPath]; 3] = [
        &[Lwm2mPath::instance(3, 0)],
        &[Lwm2mPath::instance(3, 0), Lwm2mPath::instance(4, 0)],
        &[Lwm2mPath::instance(3, 0), Lwm2mPath::instance(6, 0)],
    ];
    for i in 0..100 {
        let d = DeviceId::new(&format!("a{i}")).unwrap();
        engine.handle_event(t0, &registered_with(&d, sets[i % 2]));
    }
    assert_eq!(engine.object_set_count(), 2);
    // A third distinct set is past the bound: that device counts as unknown, so its
    // step is sent and the device's answer decides.
    let third = DeviceId::new("third").unwrap();
    engine.handle_event(t0, &registered_with(&third, sets[2]));
    assert_eq!(engine.object_set_count(), 2);
    let id = JobId::new("cfg").unwrap();
    let job = JobType::ConfigurationUpdate {
        name: "n".into(),
        value: "v".into(),
    };
    engine
        .create(t0, JobSpec::new(id.clone(), job, vec![third.clone()]))
        .unwrap();
    assert_eq!(one_op(&mut engine).device, third);
}

fn read_job() -> JobType {
    JobType::ReadDeviceProperties {
        paths: vec![Lwm2mPath::resource(3, 0, 9), Lwm2mPath::resource(1, 0, 1)],
    }
}

#[test]
fn an_lwm2m_1_1_device_is_read_with_one_read_composite() {
    let (mut engine, t0, dev, id) = one_child(EngineConfig::default(), read_job());
    let op = one_op(&mut engine);
    assert_eq!(
        op.request,
        DeviceRequest::ReadComposite {
            paths: vec![Lwm2mPath::resource(3, 0, 9), Lwm2mPath::resource(1, 0, 1)]
        }
    );
    let values = Content {
        values: vec![
            (Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(77)),
            (Lwm2mPath::resource(1, 0, 1), ResourceValue::Integer(300)),
        ],
    };
    answer(&mut engine, t0, &op, DeviceReply::Content(values.clone()));
    assert!(engine.poll_op().is_none());
    assert_eq!(engine.job(&id).unwrap().status, JobStatus::Completed);
    let update = engine.poll_twin_update().unwrap();
    assert_eq!((update.device, update.content), (dev, values));
}

#[test]
fn an_lwm2m_1_0_device_is_read_path_by_path() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("old").unwrap();
    let DeviceEvent::Registered {
        device,
        mut registration,
    } = registered(&dev)
    else {
        unreachable!()
    };
    registration.lwm2m_version = "1.0".into();
    engine.handle_event(
        t0,
        &DeviceEvent::Registered {
            device,
            registration,
        },
    );
    let id = JobId::new("r").unwrap();
    engine
        .create(t0, JobSpec::new(id.clone(), read_job(), vec![dev]))
        .unwrap();
    for path in [Lwm2mPath::resource(3, 0, 9), Lwm2mPath::resource(1, 0, 1)] {
        let op = one_op(&mut engine);
        assert_eq!(op.request, DeviceRequest::Read { path });
        let value = Content::single(path, ResourceValue::Integer(1));
        answer(&mut engine, t0, &op, DeviceReply::Content(value));
    }
    assert_eq!(engine.job(&id).unwrap().status, JobStatus::Completed);
}

#[test]
fn a_refused_read_composite_falls_back_to_one_read_per_path() {
    let (mut engine, t0, dev, id) = one_child(EngineConfig::default(), read_job());
    let op = one_op(&mut engine);
    assert!(matches!(op.request, DeviceRequest::ReadComposite { .. }));
    engine.handle_event(
        t0,
        &DeviceEvent::Response {
            op: op.id,
            device: dev.clone(),
            result: Err(DeviceError::MethodNotAllowed),
        },
    );
    for path in [Lwm2mPath::resource(3, 0, 9), Lwm2mPath::resource(1, 0, 1)] {
        let op = one_op(&mut engine);
        assert_eq!(op.request, DeviceRequest::Read { path });
        let value = Content::single(path, ResourceValue::Integer(1));
        answer(&mut engine, t0, &op, DeviceReply::Content(value));
    }
    assert_eq!(engine.job(&id).unwrap().status, JobStatus::Completed);
    // The next read job on the device goes path by path at once.
    let next = JobId::new("r2").unwrap();
    engine
        .create(t0, JobSpec::new(next, read_job(), vec![dev]))
        .unwrap();
    assert!(matches!(
        one_op(&mut engine).request,
        DeviceRequest::Read { .. }
    ));
}

// ---- A review of the rollout limits and spec bounds (findings fixed; each test says
// what happened before). ----

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
        JobSpec::new(id.clone(), reboot_job(), vec![a.clone(), b.clone()])
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
#[cfg(feature = "memory-fleet")]
#[test]
fn create_job_with_a_huge_device_timeout_is_a_typed_error() {
    use twinhub::hub::{Hub, HubConfig};
    use twinhub::job::MAX_JOB_DURATION;
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
    let spec =
        JobSpec::new(id.clone(), reboot_job(), vec![a.clone()]).device_timeout(Duration::MAX);
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

/// The transport says the registration ended while an operation was in flight
/// (`RegistrationEnded`: sent, outcome unknown), in the server's order: the failure,
/// then the Deregistered, or, for a new Register replacing the registration, the
/// Registered. A reboot whose Execute went is never executed again and succeeds at the
/// registration; a configuration update waits for the device and writes again; neither
/// fails as rejected.
#[test]
fn a_registration_ended_mid_step_is_the_device_going_offline() {
    let ended = |engine: &mut JobEngine, now: Instant, op: &DeviceOp| {
        engine.handle_event(
            now,
            &DeviceEvent::Response {
                op: op.id,
                device: op.device.clone(),
                result: Err(DeviceError::RegistrationEnded),
            },
        );
    };
    // A reboot: the device de-registers before answering, then comes back.
    let (mut engine, t0, dev, id) = one_child(EngineConfig::default(), reboot_job());
    let execute = one_op(&mut engine);
    let t1 = t0 + Duration::from_secs(1);
    ended(&mut engine, t1, &execute);
    engine.handle_event(
        t1,
        &DeviceEvent::Deregistered {
            device: dev.clone(),
        },
    );
    assert!(engine.poll_op().is_none());
    assert_eq!(child_status(&engine, &id, &dev).0, ChildState::InProgress);
    engine.handle_event(t1 + Duration::from_secs(20), &registered(&dev));
    assert!(engine.poll_op().is_none(), "the reboot is not repeated");
    assert_eq!(
        child_status(&engine, &id, &dev),
        (ChildState::Succeeded, None)
    );
    engine.validate().unwrap();

    // A configuration update: a new Register replaces the registration mid-write.
    let config_job = JobType::ConfigurationUpdate {
        name: "n".into(),
        value: "v".into(),
    };
    let (mut engine, t0, dev, id) = one_child(EngineConfig::default(), config_job);
    let write = one_op(&mut engine);
    ended(&mut engine, t0, &write);
    assert!(engine.poll_op().is_none());
    assert_eq!(
        child_status(&engine, &id, &dev).0,
        ChildState::WaitingForDevice
    );
    engine.handle_event(t0, &registered(&dev));
    let again = one_op(&mut engine);
    assert!(is_write_of(&again, Lwm2mPath::instance(10241, 0)));
    answer(&mut engine, t0, &again, DeviceReply::Done);
    assert_ne!(child_status(&engine, &id, &dev).0, ChildState::Failed);
    engine.validate().unwrap();
}

/// Day 46, item 4: `EngineConfig` durations set from Rust past the clock's range. A
/// reboot whose Execute timed out waits `reboot_wait` for the device's registration:
/// with `Duration::MAX` the engine added it to its clock and panicked (on the hub's
/// thread, in a hub). `EngineConfig::validate` refuses it, named as in JSON; an engine
/// built with it anyway (`JobEngine::new` cannot fail) takes it as the bound, a year:
/// the child waits, and no panic.
#[test]
fn an_engine_duration_past_the_clock_is_refused_and_never_panics() {
    use twinhub::MAX_CONFIG_DURATION;
    use twinhub::job::EngineConfigError;
    let config = EngineConfig {
        reboot_wait: Duration::MAX,
        poll_min: Duration::MAX,
        ..EngineConfig::default()
    };
    assert_eq!(
        config.validate(),
        Err(EngineConfigError::TooLong("pollMinMs"))
    );
    let zero = EngineConfig {
        poll_interval: Duration::ZERO,
        ..EngineConfig::default()
    };
    assert_eq!(
        zero.validate(),
        Err(EngineConfigError::ZeroDuration("pollIntervalMs"))
    );
    assert!(
        EngineConfigError::TooLong("rebootWaitMs")
            .to_string()
            .contains("rebootWaitMs")
    );
    let edge = EngineConfig {
        reboot_wait: MAX_CONFIG_DURATION,
        poll_interval: MAX_CONFIG_DURATION,
        ..EngineConfig::default()
    };
    assert_eq!(edge.validate(), Ok(()));
    let t0 = Instant::now();
    let mut engine = JobEngine::new(config, t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    engine.handle_event(t0, &registered(&dev));
    let job = JobId::new("rb").unwrap();
    engine
        .create(
            t0,
            JobSpec::new(job.clone(), reboot(true), vec![dev.clone()]),
        )
        .unwrap();
    let exec = one_op(&mut engine);
    assert!(matches!(exec.request, DeviceRequest::Execute { .. }));
    timed_out(&mut engine, t0, &exec);
    engine.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(
        engine.child_state(&job, &dev).map(|(s, _)| s),
        Some(ChildState::InProgress),
        "waits for the registration"
    );
}
