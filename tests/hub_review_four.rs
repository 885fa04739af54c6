//! A fourth review of the failing-store path (findings of a review helper after
//! 2d797cf, 3cfcca3, 4026939): a plain Update to a twin that holds no registration is no
//! registration (it completed a reboot); a reboot whose Execute answer is inside the
//! failed batch still succeeds on it, once. Each has a control; each finding's test
//! failed before its fix.
#![cfg(all(feature = "fuzzing", feature = "memory-fleet"))]

mod hub_support;

use hub_support::*;
use std::time::Duration;
use twinhub::DeviceId;
use twinhub::hub::HubConfig;
use twinhub::job::{EngineConfig, JobId, JobStatistics};
use twinhub::transport::DeviceEvent;
use twinhub::twin::Twin;

/// The device's Update of the registration it holds (`r1`, as [`registered_v`]).
fn update_r1(device: &DeviceId) -> DeviceEvent {
    let DeviceEvent::Registered { registration, .. } = registered_v(device, "1.0") else {
        unreachable!()
    };
    DeviceEvent::RegistrationUpdated {
        device: device.clone(),
        registration,
    }
}

// ---------------------------------------------------------------------------------
// Finding 1: `renewed_registration` (src/hub/mod.rs) takes an Update for a
// registration when the twin holds *no* registration. A twin removed and created again
// while its device stays registered (remove_device leaves the LWM2M registration in
// place; the in-memory fleet registers devices without twins alike) holds none: the
// device's next ordinary Update is applied as a Registered. A reboot job whose Execute
// went out counts it as the reboot (succeeded; the device never rebooted), and a
// Registered is counted and published.

fn reboot_then_plain_update(recreate: bool) -> (JobStatistics, u64) {
    let pump = DeviceId::new("pump").unwrap();
    let config = HubConfig {
        sync: None,
        jobs: EngineConfig {
            reboot_wait: Duration::from_secs(30),
            ..EngineConfig::default()
        },
        ..HubConfig::default()
    };
    let (hub, store, script, _dir) = durable_hub(&[&pump], config);
    register(&hub, &script, &pump);
    wait_committed(&hub, &store, "the registration");
    if recreate {
        // The service resets the twin; the device stays registered (its LWM2M
        // registration, r1, lives on in the server).
        hub.remove_device("pump").unwrap();
        hub.create_device(Twin::new(pump.clone())).unwrap();
    }
    let job = JobId::new("rb").unwrap();
    start_reboot_job(&hub, &job, &pump, true);
    wait_until("the Execute", || job_ops(&script).iter().any(is_exec));
    let exec = job_ops(&script).into_iter().find(is_exec).unwrap();
    answer_done(&script, &pump, &exec);
    std::thread::sleep(Duration::from_millis(200));
    let registrations = hub.stats().registrations;
    // The device's periodic Update of its registration: no reboot.
    push(&script, update_r1(&pump));
    std::thread::sleep(Duration::from_millis(300));
    let s = stats(&hub, &job);
    let extra = hub.stats().registrations - registrations;
    hub.stop();
    (s, extra)
}

#[test]
fn control_a_plain_update_does_not_complete_a_reboot() {
    let (s, extra) = reboot_then_plain_update(false);
    assert_eq!((s.succeeded, s.running, extra), (0, 1, 0), "{s:?}");
}

#[test]
fn a_plain_update_to_a_re_created_twin_does_not_complete_a_reboot() {
    let (s, extra) = reboot_then_plain_update(true);
    assert_eq!(
        (s.succeeded, s.running, extra),
        (0, 1, 0),
        "the device only updated its registration (no reboot): {s:?}, {extra} extra \
         Registered counted"
    );
}

// ---------------------------------------------------------------------------------
// Finding 2: `adopt_executes` (src/job/engine.rs) reads `earlier`, the engine *after*
// the failed batch was applied. When the Execute's Done answer is in the failed batch
// itself, the old engine already took it (op removed, child succeeded), so nothing is
// adopted; the rebuilt engine restores the child as "executed, wait for the
// registration" and ignores the re-applied answer: the reboot ends timedOut after
// `reboot_wait`, and with a retry rule the Execute goes a second time.

fn reboot_answered_in_a_failed_batch(fail: bool, retry: bool) -> (JobStatistics, usize) {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, job) = reboot_in_flight(&pump, retry);
    if fail {
        // The batch holding the answer fails to commit.
        store.lock().fail_next_commit();
    }
    let exec = job_ops(&script).into_iter().find(is_exec).unwrap();
    let events_before = hub.stats().events;
    answer_done(&script, &pump, &exec);
    wait_until("the answer taken", || hub.stats().events > events_before);
    wait_committed(&hub, &store, "the answer's commit");
    // Past reboot_wait (and a retry's backoff); the device does not register again.
    std::thread::sleep(Duration::from_millis(1500));
    // The child ends (or its Execute goes again) once the hub's thread has run.
    let executes = || job_ops(&script).into_iter().filter(is_exec).count();
    wait_until("the reboot's end or a second Execute", || {
        stats(&hub, &job).running == 0 || executes() > 1
    });
    let s = stats(&hub, &job);
    let executes = executes();
    hub.stop();
    (s, executes)
}

#[test]
fn control_a_reboot_answered_done_in_a_committed_batch_succeeds() {
    let (s, executes) = reboot_answered_in_a_failed_batch(false, false);
    assert_eq!((s.succeeded, s.failed, executes), (1, 0, 1), "{s:?}");
}

#[test]
fn a_reboot_answered_done_in_a_failed_batch_succeeds() {
    let (s, executes) = reboot_answered_in_a_failed_batch(true, false);
    assert_eq!(
        (s.succeeded, s.failed, executes),
        (1, 0, 1),
        "the Done answer was in the batch whose commit failed: {s:?}"
    );
}

#[test]
fn a_retried_reboot_answered_done_in_a_failed_batch_is_executed_once() {
    let (s, executes) = reboot_answered_in_a_failed_batch(true, true);
    assert_eq!(
        (s.succeeded, executes),
        (1, 1),
        "the device answered the Execute Done once (in a failed batch): {executes} \
         Executes, {s:?}"
    );
}
