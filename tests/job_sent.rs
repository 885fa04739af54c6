//! The job engine over a transport that reports when a request leaves
//! (`DeviceEvent::Sent`), played by hand: a sleeping (queue-mode) device's requests wait
//! in the transport's queue, and a registration seen before they left proves nothing.

use std::time::{Duration, Instant};
use twinhub::job::{ChildState, EngineConfig, JobEngine, JobId, JobSpec, JobType};
use twinhub::transport::{DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue, Timestamp};

mod job_support;
use job_support::{
    answer, drain, firmware_at_execute, fw_state, is_write_of, journal_maps, notify_firmware,
    observe_idle_and_write_sent, one_child, one_child_journalled, one_op, reboot, registered,
    reports_sent, sent, state, timed_out, update_execute,
};

/// The bug: the Execute waits in the queue of a sleeping device; the device registers
/// (it restarted for a reason of its own); the job took that for the reboot and reported
/// success, then the Execute went out and the device rebooted after the job was done.
#[test]
fn a_registration_before_the_queued_reboot_execute_left_proves_nothing() {
    for kind in [reboot(false), reboot(true)] {
        let (mut engine, t0, dev, id) = one_child(reports_sent(), kind.clone());
        let execute = one_op(&mut engine);
        assert!(matches!(execute.request, DeviceRequest::Execute { .. }));
        let t1 = t0 + Duration::from_secs(600);
        engine.handle_event(t1, &registered(&dev));
        assert_eq!(
            state(&engine, &id, &dev),
            (ChildState::InProgress, None),
            "{kind:?}: the registration came before the Execute left"
        );
        assert!(
            drain(&mut engine).is_empty(),
            "{kind:?}: the queued Execute goes to the new registration; no second one"
        );
        // Now it leaves, and the device answers before rebooting.
        sent(&mut engine, t1, &execute);
        answer(&mut engine, t1, &execute, DeviceReply::Done);
        if kind == reboot(true) {
            assert_eq!(state(&engine, &id, &dev).0, ChildState::InProgress);
            engine.handle_event(t1 + Duration::from_secs(20), &registered(&dev));
        }
        assert_eq!(state(&engine, &id, &dev), (ChildState::Succeeded, None));
        assert!(drain(&mut engine).is_empty(), "executed once");
        engine.validate().unwrap();
    }
}

/// Once the Execute left, a registration is the reboot's proof, as before (the answer
/// may be lost with the reboot).
#[test]
fn a_registration_after_the_execute_left_is_the_reboot() {
    let (mut engine, t0, dev, id) = one_child(reports_sent(), reboot(true));
    let execute = one_op(&mut engine);
    sent(&mut engine, t0, &execute);
    engine.handle_event(t0 + Duration::from_secs(30), &registered(&dev));
    assert_eq!(state(&engine, &id, &dev), (ChildState::Succeeded, None));
    assert!(drain(&mut engine).is_empty());
    engine.validate().unwrap();
}

/// An Execute that timed out in the transport's queue never reached the device: it is
/// sent again (a registration would otherwise count as a reboot that never happened).
#[test]
fn an_execute_that_timed_out_in_the_queue_is_sent_again() {
    let (mut engine, t0, dev, id) = one_child(reports_sent(), reboot(false));
    let execute = one_op(&mut engine);
    let t1 = t0 + Duration::from_secs(600);
    timed_out(&mut engine, t1, &execute);
    let again = one_op(&mut engine);
    assert_eq!(again.request, execute.request, "sent again");
    engine.handle_event(t1, &registered(&dev));
    assert_eq!(state(&engine, &id, &dev).0, ChildState::InProgress);
    sent(&mut engine, t1, &again);
    // Its answer is lost this time: the registration that follows is the reboot.
    timed_out(&mut engine, t1 + Duration::from_secs(93), &again);
    assert!(
        drain(&mut engine).is_empty(),
        "never sent twice once it left"
    );
    engine.handle_event(t1 + Duration::from_secs(120), &registered(&dev));
    assert_eq!(state(&engine, &id, &dev), (ChildState::Succeeded, None));
    engine.validate().unwrap();
}

/// The per-device timeout runs from when the request left, not from when it was queued
/// for a device that sleeps.
#[test]
fn the_device_timeout_runs_from_the_first_sent() {
    let timeout = Duration::from_secs(60);
    let t0 = Instant::now();
    let mut engine = JobEngine::new(reports_sent(), t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    engine.handle_event(t0, &registered(&dev));
    let id = JobId::new("j").unwrap();
    engine
        .create(
            t0,
            JobSpec::new(id.clone(), reboot(true), vec![dev.clone()]).device_timeout(timeout),
        )
        .unwrap();
    let execute = one_op(&mut engine);
    let woke = t0 + Duration::from_secs(100);
    engine.handle_timeout(woke);
    assert_eq!(
        state(&engine, &id, &dev),
        (ChildState::InProgress, None),
        "asleep past the timeout: its time has not started"
    );
    sent(&mut engine, woke, &execute);
    answer(&mut engine, woke, &execute, DeviceReply::Done);
    assert_eq!(engine.poll_timeout(), Some(woke + timeout));
    engine.handle_timeout(woke + timeout);
    assert_eq!(
        state(&engine, &id, &dev),
        (ChildState::Failed, Some("timedOut".into())),
        "no registration within the timeout after the Execute left"
    );
    engine.validate().unwrap();
}

/// Without `Sent` (a transport that does not report it) an operation counts as sent when
/// it is handed over: the engine keeps working as before.
#[test]
fn without_sent_a_handed_over_execute_counts_as_sent() {
    let (mut engine, t0, dev, id) = one_child(EngineConfig::default(), reboot(true));
    assert!(!engine.transport_reports_sent());
    let _execute = one_op(&mut engine);
    engine.handle_event(t0 + Duration::from_secs(30), &registered(&dev));
    assert_eq!(state(&engine, &id, &dev), (ChildState::Succeeded, None));
    engine.validate().unwrap();
}

/// A firmware update's Execute of Update waits in the queue when the device registers:
/// it is not executed a second time (the first would follow it to the device).
#[test]
fn a_queued_firmware_execute_is_not_sent_twice_on_a_registration() {
    let job = JobType::FirmwareUpdate {
        package_uri: "coap://x/2.0".into(),
        expected_version: None,
    };
    let (mut engine, t0, dev, id) = one_child(reports_sent(), job);
    observe_idle_and_write_sent(&mut engine, t0);
    notify_firmware(&mut engine, t0, &dev, fw_state(2, 0));
    let execute = one_op(&mut engine);
    assert_eq!(
        execute.request,
        DeviceRequest::Execute {
            path: Lwm2mPath::resource(5, 0, 2),
            args: None
        }
    );
    let t1 = t0 + Duration::from_secs(600);
    engine.handle_event(t1, &registered(&dev));
    assert!(
        drain(&mut engine).is_empty(),
        "the queued Execute goes to the new registration; nothing else"
    );
    sent(&mut engine, t1, &execute);
    answer(&mut engine, t1, &execute, DeviceReply::Done);
    notify_firmware(&mut engine, t1, &dev, fw_state(3, 0));
    assert!(drain(&mut engine).is_empty());
    assert_eq!(state(&engine, &id, &dev).0, ChildState::InProgress);
    engine.validate().unwrap();
}

/// A restored engine cannot know whether an Execute handed over before the restart left
/// (its `Sent` was never recorded): the transport's queue did not survive the restart, so
/// it counts as not sent, and the device's next registration brings a new Execute rather
/// than a success.
#[test]
fn a_restored_engine_sends_an_execute_whose_sent_was_not_recorded() {
    let (mut engine, t0, dev, id) = one_child_journalled(reports_sent(), reboot(true));
    let _execute = one_op(&mut engine);
    let (parents, children) = journal_maps(&mut engine);
    let t1 = t0 + Duration::from_secs(60);
    let mut restored = JobEngine::restore(
        reports_sent(),
        t1,
        Timestamp::from_millis(60_000),
        parents,
        children,
    )
    .unwrap();
    assert!(drain(&mut restored).is_empty());
    restored.handle_event(t1, &registered(&dev));
    let again = one_op(&mut restored);
    assert!(matches!(again.request, DeviceRequest::Execute { .. }));
    assert_eq!(state(&restored, &id, &dev).0, ChildState::InProgress);
    restored.validate().unwrap();
}

/// NAT rebinding: the Execute left, then the device's Update from a new address failed it
/// with `RegistrationEnded` (sent, outcome unknown) before the `RegistrationUpdated`. An
/// Update is not a reboot: the child keeps waiting for the Register that proves it (and
/// never executes twice); without one, it times out.
#[test]
fn an_update_after_a_rebinding_failed_the_execute_is_not_the_reboot() {
    for with_register in [true, false] {
        let (mut engine, t0, dev, id) = one_child(reports_sent(), reboot(true));
        let execute = one_op(&mut engine);
        sent(&mut engine, t0, &execute);
        let t1 = t0 + Duration::from_secs(2);
        engine.handle_event(
            t1,
            &DeviceEvent::Response {
                op: execute.id,
                device: dev.clone(),
                result: Err(DeviceError::RegistrationEnded),
            },
        );
        let DeviceEvent::Registered { registration, .. } = registered(&dev) else {
            unreachable!()
        };
        engine.handle_event(
            t1,
            &DeviceEvent::RegistrationUpdated {
                device: dev.clone(),
                registration,
            },
        );
        assert_eq!(
            state(&engine, &id, &dev),
            (ChildState::InProgress, None),
            "an Update proves no reboot"
        );
        assert!(drain(&mut engine).is_empty(), "never executed twice");
        if with_register {
            engine.handle_event(t1 + Duration::from_secs(10), &registered(&dev));
            assert_eq!(state(&engine, &id, &dev), (ChildState::Succeeded, None));
        } else {
            let end = t0 + Duration::from_secs(31 * 60);
            engine.handle_timeout(end);
            assert_eq!(
                state(&engine, &id, &dev),
                (ChildState::Failed, Some("timedOut".into()))
            );
            assert!(drain(&mut engine).is_empty(), "never executed twice");
        }
        engine.validate().unwrap();
    }
}

/// The device refuses `op` with `error` (after its `Sent`).
fn refused(engine: &mut JobEngine, now: Instant, op: &DeviceOp, error: DeviceError) {
    engine.handle_event(
        now,
        &DeviceEvent::Response {
            op: op.id,
            device: op.device.clone(),
            result: Err(error),
        },
    );
}

/// The Execute of Update waits in the queue of a sleeping device, which restarts and
/// loses its downloaded package meanwhile (it registers again, Idle). The queued Execute
/// reaches it in Idle and is refused (4.05, Update is executable in Downloaded only): the
/// child does not fail but re-synchronises, as it does for a registration while nothing
/// was queued: it observes `/5/0` again (the registration dropped the observation),
/// finds the device Idle and writes the package URI again. Once per registration: a
/// second refusal with no registration in between fails the attempt as `rejected:4.05`.
/// (Before the fix the first refusal failed the child as `rejected:4.05`.)
#[test]
fn a_queued_firmware_execute_refused_after_a_restart_downloads_again() {
    for refused_again in [false, true] {
        let (mut engine, t0, dev, id, execute) = firmware_at_execute();
        let t1 = t0 + Duration::from_secs(600);
        engine.handle_event(t1, &registered(&dev));
        assert!(drain(&mut engine).is_empty(), "the Execute stays queued");
        sent(&mut engine, t1, &execute);
        refused(&mut engine, t1, &execute, DeviceError::MethodNotAllowed);
        assert_eq!(
            state(&engine, &id, &dev),
            (ChildState::InProgress, None),
            "the device lost its package: not a refusal of the update"
        );
        let observe = one_op(&mut engine);
        assert_eq!(
            observe.request,
            DeviceRequest::Observe {
                path: Lwm2mPath::instance(5, 0)
            },
            "observed again after the registration"
        );
        sent(&mut engine, t1, &observe);
        answer(
            &mut engine,
            t1,
            &observe,
            DeviceReply::Content(fw_state(0, 0)),
        );
        let write = one_op(&mut engine);
        assert!(
            is_write_of(&write, Lwm2mPath::resource(5, 0, 1)),
            "Idle: the package URI is written again, {write:?}"
        );
        sent(&mut engine, t1, &write);
        answer(&mut engine, t1, &write, DeviceReply::Done);
        notify_firmware(&mut engine, t1, &dev, fw_state(2, 0));
        let again = one_op(&mut engine);
        assert_eq!(again.request, update_execute());
        sent(&mut engine, t1, &again);
        if refused_again {
            refused(&mut engine, t1, &again, DeviceError::MethodNotAllowed);
            assert_eq!(
                state(&engine, &id, &dev),
                (ChildState::Failed, Some("rejected:4.05".into())),
                "no registration since: the refusal is final"
            );
        } else {
            answer(&mut engine, t1, &again, DeviceReply::Done);
            notify_firmware(&mut engine, t1, &dev, fw_state(0, 1));
            let verify = one_op(&mut engine);
            sent(&mut engine, t1, &verify);
            answer(
                &mut engine,
                t1,
                &verify,
                DeviceReply::Content(Content::single(
                    Lwm2mPath::resource(3, 0, 3),
                    ResourceValue::String("2.0".into()),
                )),
            );
            assert_eq!(state(&engine, &id, &dev), (ChildState::Succeeded, None));
        }
        engine.validate().unwrap();
    }
}

/// Control: a refusal of an Execute of Update that was not queued across a registration
/// is the device's answer: the attempt fails as `rejected:4.05` at once.
#[test]
fn a_firmware_execute_refused_without_a_registration_is_rejected() {
    let (mut engine, t0, dev, id, execute) = firmware_at_execute();
    sent(&mut engine, t0, &execute);
    refused(&mut engine, t0, &execute, DeviceError::MethodNotAllowed);
    assert_eq!(
        state(&engine, &id, &dev),
        (ChildState::Failed, Some("rejected:4.05".into()))
    );
    engine.validate().unwrap();
}

/// NAT rebinding failed the reboot's Execute with `RegistrationEnded` after it left: its
/// answer is lost, as when it times out, so `reboot_wait` (5 min) bounds the wait for the
/// Register that proves the reboot, not the per-device timeout (30 min). Before the fix
/// the child waited the device timeout.
#[test]
fn a_reboot_whose_execute_ended_with_the_registration_waits_reboot_wait() {
    let (mut engine, t0, dev, id) = one_child(reports_sent(), reboot(true));
    let reboot_wait = engine.config().reboot_wait;
    let execute = one_op(&mut engine);
    sent(&mut engine, t0, &execute);
    let t1 = t0 + Duration::from_secs(2);
    refused(&mut engine, t1, &execute, DeviceError::RegistrationEnded);
    assert_eq!(engine.poll_timeout(), Some(t1 + reboot_wait));
    engine.handle_timeout(t1 + reboot_wait - Duration::from_millis(1));
    assert_eq!(state(&engine, &id, &dev), (ChildState::InProgress, None));
    engine.handle_timeout(t1 + reboot_wait);
    assert_eq!(
        state(&engine, &id, &dev),
        (ChildState::Failed, Some("timedOut".into())),
        "no Register within reboot_wait after the answer was lost"
    );
    assert!(drain(&mut engine).is_empty(), "never executed twice");
    engine.validate().unwrap();
}

/// The mark a registration leaves on a queued Execute of Update belongs to that Execute
/// only: when it times out in the queue (never sent), the child reads `/5/0`, finds the
/// package kept (Downloaded) and executes again; the device's refusal of that new
/// Execute, with no registration since, is final.
#[test]
fn a_refusal_of_a_later_execute_after_the_queued_one_timed_out_is_final() {
    let (mut engine, t0, dev, id, execute) = firmware_at_execute();
    let t1 = t0 + Duration::from_secs(600);
    engine.handle_event(t1, &registered(&dev));
    timed_out(&mut engine, t1, &execute);
    let read = one_op(&mut engine);
    assert_eq!(
        read.request,
        DeviceRequest::Read {
            path: Lwm2mPath::instance(5, 0)
        }
    );
    sent(&mut engine, t1, &read);
    answer(&mut engine, t1, &read, DeviceReply::Content(fw_state(2, 0)));
    let again = one_op(&mut engine);
    assert_eq!(again.request, update_execute());
    sent(&mut engine, t1, &again);
    refused(&mut engine, t1, &again, DeviceError::MethodNotAllowed);
    assert_eq!(
        state(&engine, &id, &dev),
        (ChildState::Failed, Some("rejected:4.05".into()))
    );
    engine.validate().unwrap();
}
