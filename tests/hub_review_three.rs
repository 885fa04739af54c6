//! A third review of the failing-store path (findings of a review helper after 540a9ba
//! and 3cfcca3): an Update under a registration the hub never applied counts as the
//! registration; a reboot whose Execute answer lands in a failed batch still succeeds on
//! it; a firmware download resumed after a failed commit keeps its observation of
//! `/5/0`. Each has a control without the failure injection; each finding's test failed
//! before its fix.
#![cfg(all(feature = "fuzzing", feature = "memory-fleet"))]

mod hub_support;

use hub_support::*;
use std::time::{Duration, Instant};
use twinhub::hub::HubConfig;
use twinhub::job::JobStatistics;
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceReply, DeviceRequest};
use twinhub::twin::ConnectionState;
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

fn with_registration_id(event: DeviceEvent, id: &str) -> DeviceEvent {
    match event {
        DeviceEvent::Registered {
            device,
            mut registration,
        } => {
            registration.registration_id = id.into();
            DeviceEvent::Registered {
                device,
                registration,
            }
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------------
// Finding A (fix 3 is keyed on the wrong condition): a device that was registered and
// observed before re-registers (new registration id: its observations are gone) while
// the disk fails; the Registered is dropped at the held-events bound. The old sync
// table entry (from the first registration, not `lost`) is still there, so the next
// Update takes the `resync` branch, which re-observes only `lost` entries: nothing.

fn re_registration_dropped_then_update(fill: bool) -> usize {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir) = durable_hub(&[&pump], HubConfig::default());
    register(&hub, &script, &pump);
    wait_committed(&hub, &store, "the first registration");
    wait_until("the first registration's Observes", || {
        !observes(&script).is_empty()
    });
    std::thread::sleep(Duration::from_millis(100));
    store.lock().fail_commits(u32::MAX);
    push(&script, battery_level(&pump, 1));
    wait_until("the backoff", || hub.metrics().failed_commits >= 2);
    {
        let mut s = script.lock().unwrap();
        if fill {
            let ghost = DeviceId::new("ghost").unwrap();
            s.events
                .extend((0..twinhub::hub::backoff::MAX_HELD_EVENTS).map(|_| {
                    DeviceEvent::Deregistered {
                        device: ghost.clone(),
                    }
                }));
        }
        // The device rebooted and registered again: a new registration.
        s.events
            .push_back(with_registration_id(registered_v(&pump, "1.0"), "r2"));
    }
    wait_until("everything taken", || {
        script.lock().unwrap().events.is_empty() && (!fill || hub.stats().dropped_events > 0)
    });
    store.lock().fail_commits(0);
    wait_held_applied(&hub, &store);
    std::thread::sleep(Duration::from_millis(200));
    let before = observes(&script).len();
    // The device's next Update, in its new registration.
    let DeviceEvent::Registered { registration, .. } =
        with_registration_id(registered_v(&pump, "1.0"), "r2")
    else {
        unreachable!()
    };
    let events_before = hub.stats().events;
    push(
        &script,
        DeviceEvent::RegistrationUpdated {
            device: pump.clone(),
            registration,
        },
    );
    wait_until("the update", || {
        hub.stats().events > events_before
            && hub.twin("pump").unwrap().connection_state == ConnectionState::Connected
    });
    std::thread::sleep(Duration::from_millis(300));
    let after = || {
        observes(&script)[before..]
            .iter()
            .filter(|o| o.device == pump)
            .count()
    };
    if fill {
        // The Observes follow the Update's batch: however slow the hub's thread.
        eventually(|| after() > 0);
    }
    let after = after();
    hub.stop();
    after
}

#[test]
fn control_a_held_re_registration_observes_afresh_and_the_update_adds_nothing() {
    // The re-registration, applied late, observes; the Update then has nothing lost.
    assert_eq!(re_registration_dropped_then_update(false), 0);
}

#[test]
fn a_dropped_re_registration_of_an_observed_device_is_made_good_at_the_next_update() {
    let observed = re_registration_dropped_then_update(true);
    assert!(
        observed > 0,
        "the device registered again (its observations are gone) and the Registered was \
         dropped at the bound; its next Update observed nothing ({observed} Observes)"
    );
}

// ---------------------------------------------------------------------------------
// Finding B (suspicion iii): a reboot without wait-for-registration (success is the
// Execute's answer). The Execute went out and is durable; an unrelated commit fails
// before the answer arrives. The rebuilt engine restores the child as "executed, wait
// for the registration" (persist.rs resume_after_restore) and does not know the old
// engine's op id, so the Done answer is ignored: the child times out after
// `reboot_wait`, and with a retry rule the Execute goes a second time.

fn reboot_answered_after_rebuild(fail: bool, retry: bool) -> (JobStatistics, usize) {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, job) = reboot_in_flight(&pump, retry);
    let is_exec = |o: &DeviceOp| matches!(o.request, DeviceRequest::Execute { .. });
    if fail {
        store.lock().fail_next_commit();
        let events_before = hub.stats().events;
        push(&script, battery_level(&pump, 7));
        wait_until("the notification taken", || {
            hub.stats().events > events_before
        });
        std::thread::sleep(Duration::from_millis(200));
        wait_committed(&hub, &store, "the notification's retry");
    }
    let exec = job_ops(&script).into_iter().find(is_exec).unwrap();
    answer_done(&script, &pump, &exec);
    // Past reboot_wait (and a retry's backoff); the device does not register again.
    std::thread::sleep(Duration::from_millis(1500));
    wait_until("the reboot's end or a second Execute", || {
        stats(&hub, &job).running == 0 || job_ops(&script).into_iter().filter(is_exec).count() > 1
    });
    let s = stats(&hub, &job);
    let executes = job_ops(&script).into_iter().filter(is_exec).count();
    hub.stop();
    (s, executes)
}

#[test]
fn control_a_reboot_answered_done_succeeds() {
    let (s, executes) = reboot_answered_after_rebuild(false, false);
    assert_eq!((s.succeeded, s.failed, executes), (1, 0, 1), "{s:?}");
}

#[test]
fn a_reboot_answered_done_after_a_failed_commit_succeeds() {
    let (s, executes) = reboot_answered_after_rebuild(true, false);
    assert_eq!(
        (s.succeeded, s.failed, executes),
        (1, 0, 1),
        "the device answered the Execute Done; after an unrelated failed commit: {s:?}"
    );
}

#[test]
fn control_a_retried_reboot_answered_done_is_executed_once() {
    let (s, executes) = reboot_answered_after_rebuild(false, true);
    assert_eq!((s.succeeded, executes), (1, 1), "{s:?}");
}

#[test]
fn a_reboot_answered_done_after_a_failed_commit_is_not_executed_again() {
    let (s, executes) = reboot_answered_after_rebuild(true, true);
    assert_eq!(
        (s.succeeded, executes),
        (1, 1),
        "the device answered the reboot's Execute Done once; Executes sent: {executes}, {s:?}"
    );
}

// ---------------------------------------------------------------------------------
// Finding C (suspicion i): a firmware update observes /5/0 itself (no sync of /5/0).
// A commit fails while the download runs: the rebuilt engine resumes the child from
// FW_OBSERVE and observes /5/0 again, while the old engine's observation still lives
// on the device (no registration in between, no CancelObserve). At the end the job
// cancels one observation: the other keeps notifying for good.

fn firmware_observations(fail: bool) -> (JobStatistics, usize, usize) {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, job) = firmware_job_started(&pump);
    let fw = firmware_state;
    let fw_path = Lwm2mPath::instance(5, 0);
    let mut answered = std::collections::HashSet::new();
    let (mut state, mut result) = (0i64, 0i64);
    let mut download_pending = false;
    // Generous (it ends at the job's success, in well under a second unloaded).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && stats(&hub, &job).succeeded == 0 {
        if download_pending {
            download_pending = false;
            wait_committed(&hub, &store, "the URI's answer");
            std::thread::sleep(Duration::from_millis(100));
            if fail {
                store.lock().fail_next_commit();
                let events_before = hub.stats().events;
                push(&script, battery_level(&pump, 3));
                wait_until("the notification taken", || {
                    hub.stats().events > events_before
                });
                std::thread::sleep(Duration::from_millis(300));
                wait_committed(&hub, &store, "the notification's retry");
            }
            state = 2;
            push(
                &script,
                DeviceEvent::Notification {
                    device: pump.clone(),
                    registration_id: "r1".into(),
                    path: fw_path,
                    content: fw(state, result),
                },
            );
        }
        for op in job_ops(&script) {
            if !answered.insert(op.id) {
                continue;
            }
            let reply = match &op.request {
                DeviceRequest::Observe { .. } | DeviceRequest::Read { .. }
                    if path_of(&op) == fw_path =>
                {
                    DeviceReply::Content(fw(state, result))
                }
                DeviceRequest::Read { .. } => DeviceReply::Content(Content::single(
                    Lwm2mPath::resource(3, 0, 3),
                    ResourceValue::String("2.0".into()),
                )),
                DeviceRequest::Write { .. } => {
                    state = 1;
                    download_pending = true;
                    DeviceReply::Done
                }
                DeviceRequest::Execute { .. } => {
                    (state, result) = (0, 1);
                    push(
                        &script,
                        DeviceEvent::Response {
                            op: op.id,
                            device: pump.clone(),
                            result: Ok(DeviceReply::Done),
                        },
                    );
                    push(
                        &script,
                        DeviceEvent::Notification {
                            device: pump.clone(),
                            registration_id: "r1".into(),
                            path: fw_path,
                            content: fw(state, result),
                        },
                    );
                    continue;
                }
                _ => DeviceReply::Done,
            };
            push(
                &script,
                DeviceEvent::Response {
                    op: op.id,
                    device: pump.clone(),
                    result: Ok(reply),
                },
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    // The job's end cancels its observation: however slow the hub's thread.
    let cancel_observe = DeviceRequest::CancelObserve { path: fw_path };
    eventually(|| job_ops(&script).iter().any(|o| o.request == cancel_observe));
    let s = stats(&hub, &job);
    let ops = job_ops(&script);
    let observe = ops
        .iter()
        .filter(|o| o.request == DeviceRequest::Observe { path: fw_path })
        .count();
    let cancel = ops
        .iter()
        .filter(|o| o.request == DeviceRequest::CancelObserve { path: fw_path })
        .count();
    hub.stop();
    (s, observe, cancel)
}

fn path_of(op: &DeviceOp) -> Lwm2mPath {
    match &op.request {
        DeviceRequest::Observe { path } | DeviceRequest::Read { path } => *path,
        _ => Lwm2mPath::instance(0, 0),
    }
}

#[test]
fn control_a_firmware_update_cancels_the_observation_it_made() {
    let (s, observe, cancel) = firmware_observations(false);
    assert_eq!((s.succeeded, observe, cancel), (1, 1, 1), "{s:?}");
}

#[test]
fn a_failed_commit_during_a_download_leaves_no_observation_of_5_0_behind() {
    let (s, observe, cancel) = firmware_observations(true);
    assert_eq!(s.succeeded, 1, "{s:?}");
    assert_eq!(
        observe, cancel,
        "no registration in between: Observes of /5/0 sent {observe}, cancelled {cancel}"
    );
}
