//! Device events whose commit fails, and the state outside the store that the hub's
//! rebuild from the store does not restore: each test injects a failed commit (and
//! sometimes a failed rebuild too) where a device event or a service write lands, and
//! checks that nothing is lost, stalled or reported that is not durable. Each has a
//! control without the failure where the difference is not obvious. (Findings of a
//! review helper; every test failed before its fix.)
#![cfg(all(feature = "fuzzing", feature = "memory-fleet"))]

mod hub_support;

use hub_support::*;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::hub::HubConfig;
use twinhub::transport::{DeviceError, DeviceEvent, DeviceOp, DeviceRequest};

/// A refused Observe-Composite is replaced at once by one Observe per path, also when
/// the batch carrying the refusal fails to commit: the retry must find the composite's
/// entry in the sync table (the first try took it out, and nothing put it back), or the
/// device would stay unobserved until its next Update.
fn composite_refusal(fail: bool) -> usize {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir) = durable_hub(&[&pump], HubConfig::default());
    push(&script, registered_v(&pump, "1.1"));
    wait_until("the composite observe", || !observes(&script).is_empty());
    let composite = observes(&script).remove(0);
    assert!(matches!(
        composite.request,
        DeviceRequest::ObserveComposite { .. }
    ));
    // Let the registration's batch commit.
    wait_committed(&hub, &store, "the registration's commit");
    std::thread::sleep(Duration::from_millis(100));
    if fail {
        store.lock().fail_next_commit();
    }
    push(
        &script,
        DeviceEvent::Response {
            op: composite.id,
            device: pump.clone(),
            result: Err(DeviceError::MethodNotAllowed),
        },
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && observes(&script).len() < 3 {
        std::thread::sleep(Duration::from_millis(10));
    }
    if fail {
        assert_eq!(hub.metrics().failed_commits, 0, "the retry committed");
    }
    let n = observes(&script).len() - 1;
    hub.stop();
    n
}

#[test]
fn control_a_refused_composite_is_replaced_by_per_path_observes() {
    assert_eq!(composite_refusal(false), 2);
}

#[test]
fn a_refused_composite_in_a_batch_whose_commit_failed_is_still_replaced_by_per_path_observes() {
    assert_eq!(
        composite_refusal(true),
        2,
        "after the failed commit and its successful retry, no per-path Observe was sent"
    );
}

/// A configuration-update job's Write is answered in a batch whose commit fails. The
/// rebuilt job engine does not know the Write's op id, so it sends the step again to the
/// device it knew online (it used to take the device for offline and wait for its next
/// registration): the job completes.
fn job_answer_in_failed_batch(fail: bool) -> twinhub::job::JobStatistics {
    use twinhub::job::JobId;
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir) = durable_hub(&[&pump], HubConfig::default());
    register(&hub, &script, &pump);
    let job = JobId::new("cfg").unwrap();
    start_config_job(&hub, &job, &pump);
    wait_until("the job's Write", || !job_ops(&script).is_empty());
    wait_committed(&hub, &store, "everything committed");
    std::thread::sleep(Duration::from_millis(100));
    if fail {
        store.lock().fail_next_commit();
    }
    // The device answers every job operation.
    let mut answered = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for op in job_ops(&script) {
            if answered.insert(op.id) {
                answer_done(&script, &pump, &op);
            }
        }
        if hub.job_statistics(&job).unwrap().succeeded == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if fail {
        assert_eq!(hub.metrics().failed_commits, 0, "the retry committed");
    }
    let stats = hub.job_statistics(&job).unwrap();
    hub.stop();
    stats
}

#[test]
fn control_a_job_whose_device_answers_succeeds() {
    assert_eq!(job_answer_in_failed_batch(false).succeeded, 1);
}

#[test]
fn a_job_answer_in_a_batch_whose_commit_failed_is_applied_again_and_the_job_completes() {
    let stats = job_answer_in_failed_batch(true);
    assert_eq!(
        stats.succeeded, 1,
        "the device answered every operation, the retry committed, yet the job did not \
         complete: {stats:?}"
    );
}

/// An auto-provisioned twin whose expiry removal lands in a batch whose commit fails is
/// brought back by the rebuild and must be swept again (the sweep used to forget its name
/// first: the twin stayed for good, and no longer counted against the limit).
fn expiry_sweep(fail: bool) -> (bool, usize) {
    let cam = DeviceId::new("cam").unwrap();
    let (hub, store, script, _dir) = durable_hub(
        &[],
        HubConfig {
            auto_provision: true,
            auto_provision_expiry: Duration::from_millis(300),
            sync: None,
            ..HubConfig::default()
        },
    );
    push(&script, registered_v(&cam, "1.0"));
    wait_until("the auto-provisioned twin", || hub.twin("cam").is_some());
    push(
        &script,
        DeviceEvent::Deregistered {
            device: cam.clone(),
        },
    );
    wait_until("the de-registration", || {
        hub.twin("cam").unwrap().connection_state == twinhub::twin::ConnectionState::Disconnected
    });
    wait_committed(&hub, &store, "its commit");
    assert_eq!(hub.auto_provisioned_count(), 1);
    if fail {
        // The next commit that writes is the sweep's removal.
        store.lock().fail_next_commit();
        wait_until("the failed commit", || hub.metrics().failed_commits > 0);
    }
    // The expiry is 300 ms and the sweep runs every second (gone in about 1.3 s
    // unloaded; generous for a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && hub.twin("cam").is_some() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = (hub.twin("cam").is_some(), hub.auto_provisioned_count());
    hub.stop();
    out
}

#[test]
fn control_an_unadopted_auto_provisioned_twin_expires() {
    assert_eq!(expiry_sweep(false), (false, 0));
}

#[test]
fn an_expiry_sweep_whose_commit_failed_still_removes_the_twin_later() {
    let (present, counted) = expiry_sweep(true);
    assert!(
        !present,
        "the expired twin is still there 30 s later (counted as auto-provisioned: {counted})"
    );
}

/// "A batch whose commit failed publishes nothing", also when the rebuild after the
/// failed commit fails too and memory keeps the batch's twin changes: they wait until
/// the rebuild replaces them (subscribers used to get the change of a batch that never
/// reached the disk, then the same notification again once it was committed).
#[test]
fn a_batch_whose_commit_and_rebuild_failed_publishes_no_twin_change() {
    use twinhub::Scalar;
    use twinhub::hub::{HubEvent, SubscribeOptions};
    use twinhub::registry::ChangeKind;
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir) = durable_hub(&[&pump], HubConfig::default());
    let events = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let committed = store.lock().committed_seq();
    store.lock().fail_next_commit();
    store.lock().fail_next_reload();
    push(&script, battery_level(&pump, 42));
    wait_until("the notification committed", || {
        store.lock().committed_seq() > committed
            && hub
                .twin("pump")
                .unwrap()
                .device_properties
                .get("BatteryLevel")
                .is_some_and(|p| p.value == Scalar::from(42))
    });
    let mut seen: Vec<u64> = Vec::new();
    let mut take = || {
        seen.extend(
            std::iter::from_fn(|| events.try_recv().ok()).filter_map(|e| match e {
                HubEvent::Twin(c) if matches!(c.kind, ChangeKind::DeviceProperty { .. }) => {
                    Some(c.seq)
                }
                _ => None,
            }),
        );
        !seen.is_empty()
    };
    // The committed change is published however slow the hub's thread; then any second
    // publication of it would follow within the 200 ms.
    eventually(&mut take);
    std::thread::sleep(Duration::from_millis(200));
    take();
    hub.stop();
    assert_eq!(
        seen.len(),
        1,
        "one notification, committed once, published as these changes: {seen:?}"
    );
}

/// Job progress of a batch whose commit and rebuild failed is not reported: the next try
/// rebuilds the engine from the store, where the child never finished (subscribers used
/// to be told the job completed, and it had not).
#[test]
fn a_job_completion_in_a_batch_whose_commit_and_rebuild_failed_is_not_reported() {
    use twinhub::hub::{HubEvent, SubscribeOptions};
    use twinhub::job::{JobId, JobStatus};
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir) = durable_hub(&[&pump], HubConfig::default());
    register(&hub, &script, &pump);
    let progress = hub
        .subscribe(SubscribeOptions {
            twins: false,
            lifecycle: false,
            jobs: true,
            ..Default::default()
        })
        .unwrap();
    let job = JobId::new("cfg").unwrap();
    start_config_job(&hub, &job, &pump);
    let answer = |op: &DeviceOp| answer_done(&script, &pump, op);
    // Step 0 (the Write) is answered and committed normally.
    wait_until("the Write", || job_ops(&script).len() == 1);
    answer(&job_ops(&script)[0]);
    wait_until("the second step's operation", || {
        job_ops(&script).len() == 2
    });
    wait_committed(&hub, &store, "everything committed");
    std::thread::sleep(Duration::from_millis(100));
    std::iter::from_fn(|| progress.try_recv().ok()).for_each(drop);
    // The last answer lands in a batch whose commit and rebuild fail.
    store.lock().fail_next_commit();
    store.lock().fail_next_reload();
    answer(&job_ops(&script)[1]);
    std::thread::sleep(Duration::from_millis(1000));
    let completed: Vec<String> = std::iter::from_fn(|| progress.try_recv().ok())
        .filter_map(|e| match e {
            HubEvent::Job(p) if p.record.status == JobStatus::Completed => {
                Some(p.record.job_id.clone())
            }
            _ => None,
        })
        .collect();
    let stats = hub.job_statistics(&job).unwrap();
    hub.stop();
    assert!(
        completed.is_empty() || stats.succeeded == 1,
        "subscribers were told {completed:?} completed; the job, rebuilt from the store, \
         has {stats:?}"
    );
}

/// Notifications and other events have bounds of their own while held: a fleet's
/// chatter filling [`MAX_HELD_NOTIFICATIONS`](twinhub::hub::backoff::MAX_HELD_NOTIFICATIONS)
/// never crowds out a De-register, which nothing would repeat (the twin stayed
/// `connected` for good for a device that left).
#[test]
fn a_deregistration_arriving_at_the_held_bound_is_not_lost_for_good() {
    use twinhub::twin::ConnectionState;
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir) = durable_hub(
        &[&pump],
        HubConfig {
            sync: None,
            ..HubConfig::default()
        },
    );
    register(&hub, &script, &pump);
    wait_committed(&hub, &store, "its commit");
    let note = |v: i64| battery_level(&pump, v);
    store.lock().fail_commits(u32::MAX);
    script.lock().unwrap().events.push_back(note(-1));
    wait_until("the backoff", || hub.metrics().failed_commits >= 2);
    {
        let mut s = script.lock().unwrap();
        s.events
            .extend((0..twinhub::hub::backoff::MAX_HELD_NOTIFICATIONS as i64).map(note));
        s.events.push_back(DeviceEvent::Deregistered {
            device: pump.clone(),
        });
    }
    wait_until("everything taken", || {
        script.lock().unwrap().events.is_empty() && hub.stats().dropped_events > 0
    });
    store.lock().fail_commits(0);
    wait_held_applied(&hub, &store);
    let state = hub.twin("pump").unwrap().connection_state;
    let dropped = hub.stats().dropped_events;
    hub.stop();
    assert_eq!(
        state,
        ConnectionState::Disconnected,
        "the device de-registered; {dropped} events dropped, the De-register among them"
    );
}

#[cfg(all(feature = "dtls", feature = "device"))]
mod e2e_support;

/// What fails while a device holds a DTLS session with credentials the hub set.
#[cfg(all(feature = "dtls", feature = "device"))]
#[derive(PartialEq)]
enum Failure {
    Nothing,
    /// A rotation of its credentials cannot be made durable.
    Rotation,
    /// Another service write to its twin cannot be made durable.
    OtherWrite,
}

/// A `set_psk` whose commit fails leaves the earlier credentials in force, revision
/// included, so the device's live session made with them stays open (the rollback used
/// to set them again under a new revision, and the DTLS server closed the session).
#[cfg(all(feature = "dtls", feature = "device"))]
fn failed_rotation_session(fail: Failure) -> (bool, u64, u64) {
    use twinhub::dtls::{PskCredentials, PskKey};
    use twinhub::transport::DeviceReply;
    let pump = DeviceId::new("pump").unwrap();
    let (store, registry, config, _dir) = durable_store(
        &[&pump],
        HubConfig {
            // No sync observations: no notifications whose batches would take the
            // injected failure instead of the call under test.
            sync: None,
            ..HubConfig::default()
        },
    );
    let hub = twinhub::hub::Hub::bind_dtls("127.0.0.1:0", registry, config).unwrap();
    let creds = |n: u8| PskCredentials::new(&format!("id-{n}"), PskKey::new(vec![n; 16])).unwrap();
    hub.set_psk("pump", creds(1)).unwrap();
    let mut device =
        e2e_support::start_with("pump", hub.local_addr().unwrap(), false, Some(creds(1)));
    wait_until("the registration", || {
        hub.twin("pump").unwrap().connection_state == twinhub::twin::ConnectionState::Connected
    });
    std::thread::sleep(Duration::from_millis(300));
    let read = || {
        hub.request(
            &pump,
            DeviceRequest::Read {
                path: twinhub::Lwm2mPath::resource(3, 0, 9),
            },
        )
        .wait(Duration::from_secs(30))
    };
    assert!(matches!(read(), Ok(DeviceReply::Content(_))));
    let before = hub.dtls_stats().unwrap().handshakes;
    // The read's answer is committed by the hub's loop before the failure is injected.
    wait_committed(&hub, &store, "the answer's commit");
    std::thread::sleep(Duration::from_millis(100));
    if fail == Failure::Rotation {
        store.lock().fail_next_commit();
        assert!(hub.set_psk("pump", creds(2)).is_err());
    }
    if fail == Failure::OtherWrite {
        // Another service write fails its commit (and memory is rebuilt): the session is
        // not affected by that.
        store.lock().fail_next_commit();
        assert!(hub.add_tags("pump", &["t"], None).is_err());
    }
    assert_eq!(
        hub.psk_store().unwrap().identity_of(&pump).as_deref(),
        Some("id-1")
    );
    let ok = matches!(read(), Ok(DeviceReply::Content(_)));
    std::thread::sleep(Duration::from_millis(500));
    let after = hub.dtls_stats().unwrap().handshakes;
    hub.stop();
    if let Some(t) = device.thread.take() {
        drop(t);
    }
    (ok, before, after)
}

#[cfg(all(feature = "dtls", feature = "device"))]
#[test]
fn control_a_session_serves_requests_without_a_new_handshake() {
    let (ok, before, after) = failed_rotation_session(Failure::Nothing);
    assert!(ok && before == after, "{ok} {before} {after}");
}

#[cfg(all(feature = "dtls", feature = "device"))]
#[test]
fn control_a_failed_commit_of_another_write_leaves_the_session_alone() {
    let (ok, before, after) = failed_rotation_session(Failure::OtherWrite);
    assert!(ok && before == after, "{ok} {before} {after}");
}

#[cfg(all(feature = "dtls", feature = "device"))]
#[test]
fn a_failed_set_psk_leaves_the_devices_session_with_the_unchanged_key_alone() {
    let (ok, before, after) = failed_rotation_session(Failure::Rotation);
    assert!(
        ok && before == after,
        "after a set_psk that changed nothing: read answered: {ok}, handshakes {before} -> {after}"
    );
}

/// A notification held while the hub backs off is stamped with the time it arrived, not
/// the time it was applied (a second or more later).
#[test]
fn a_held_notification_keeps_the_time_it_arrived() {
    use twinhub::{Scalar, Timestamp};
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir) = durable_hub(&[&pump], HubConfig::default());
    std::thread::sleep(Duration::from_millis(100));
    // Two failed commits in a row: the hub backs off for a second.
    store.lock().fail_commits(2);
    let sent = Timestamp::now();
    push(&script, battery_level(&pump, 42));
    wait_until("the notification applied and committed", || {
        hub.twin("pump")
            .unwrap()
            .device_properties
            .get("BatteryLevel")
            .is_some_and(|p| p.value == Scalar::from(42))
    });
    let applied = Timestamp::now();
    let stamped = hub.twin("pump").unwrap().device_properties["BatteryLevel"].last_updated_time;
    hub.stop();
    assert!(
        applied.since(sent) >= Duration::from_millis(900),
        "the hub backed off"
    );
    // Stamped when it arrived: at least half the backoff before it was applied (the hub's
    // own backoff sets that gap, whatever the load; a stamp taken at the application would
    // be within milliseconds of `applied`).
    assert!(
        stamped >= sent && applied.since(stamped) >= Duration::from_millis(500),
        "stamped {} ms after it was sent, applied {} ms after",
        stamped.since(sent).as_millis(),
        applied.since(sent).as_millis()
    );
}

/// A firmware update is downloading (its package URI written, the device says
/// Downloading) when the commit of an unrelated notification fails. The rebuilt engine
/// restored the child as waiting for its device; the device never left, so nothing but a
/// full registration would have resumed it (an Update does not: the engine knows the
/// device online). It resumes once the failed batch is applied again: `/5/0` is read
/// or observed anew, and the package the device then reports downloaded is installed,
/// with one Execute.
fn firmware_download_across_a_failed_commit(fail: bool) -> (twinhub::job::JobStatistics, usize) {
    use twinhub::Lwm2mPath;
    use twinhub::transport::DeviceReply;
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, job) = firmware_job_started(&pump);
    let fw = |state: i64| firmware_state(state, 0);
    let is_exec = |o: &DeviceOp| matches!(o.request, DeviceRequest::Execute { path, .. } if path == Lwm2mPath::resource(5, 0, 2));
    let mut answered = std::collections::HashSet::new();
    // 0: idle; 1: downloading (after the URI is written); 2: downloaded (once the commit
    // failed, or at once without a failure).
    let mut state = 0;
    let mut failed = false;
    // Four seconds for the job (and for a second Execute, were one sent), or longer on a
    // loaded machine until the first Execute went out (at most 30 s).
    let started = Instant::now();
    let (window, deadline) = (
        started + Duration::from_secs(4),
        started + Duration::from_secs(30),
    );
    while Instant::now() < deadline
        && (Instant::now() < window || !job_ops(&script).iter().any(is_exec))
    {
        if state == 1 && !failed {
            wait_committed(&hub, &store, "the download's start");
            std::thread::sleep(Duration::from_millis(100));
            if fail {
                store.lock().fail_next_commit();
                push(&script, battery_level(&pump, 7));
                wait_until("the failed commit", || hub.metrics().failed_commits >= 1);
                std::thread::sleep(Duration::from_millis(200));
            }
            failed = true;
            state = 2;
            if !fail {
                push(
                    &script,
                    DeviceEvent::Notification {
                        device: pump.clone(),
                        registration_id: "r1".into(),
                        path: Lwm2mPath::instance(5, 0),
                        content: fw(2),
                    },
                );
            }
        }
        for op in job_ops(&script) {
            if !answered.insert(op.id) {
                continue;
            }
            let reply = match &op.request {
                DeviceRequest::Observe { .. } | DeviceRequest::Read { .. } => {
                    DeviceReply::Content(fw(state))
                }
                DeviceRequest::Write { .. } => {
                    state = 1;
                    DeviceReply::Done
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
    let executes = job_ops(&script).iter().filter(|o| is_exec(o)).count();
    let stats = hub.job_statistics(&job).unwrap();
    hub.stop();
    (stats, executes)
}

#[test]
fn control_a_downloaded_firmware_is_installed() {
    let (stats, executes) = firmware_download_across_a_failed_commit(false);
    assert_eq!((stats.waiting_for_device, executes), (0, 1), "{stats:?}");
}

#[test]
fn a_firmware_download_across_a_failed_commit_goes_on_without_a_registration() {
    let (stats, executes) = firmware_download_across_a_failed_commit(true);
    assert_eq!(
        (stats.waiting_for_device, executes),
        (0, 1),
        "the device never left, yet after one failed commit: {stats:?}, {executes} Executes"
    );
}

/// A de-registration arriving when [`MAX_HELD_EVENTS`](twinhub::hub::backoff::MAX_HELD_EVENTS)
/// other events are held is kept (the newest per device) and applied after them: the
/// twin of a device that left ends `disconnected` (it stayed `connected` for good).
#[test]
fn a_deregistration_past_the_held_events_bound_is_applied_once_the_store_recovers() {
    use twinhub::twin::ConnectionState;
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir) = durable_hub(
        &[&pump],
        HubConfig {
            sync: None,
            ..HubConfig::default()
        },
    );
    register(&hub, &script, &pump);
    wait_committed(&hub, &store, "its commit");
    store.lock().fail_commits(u32::MAX);
    push(&script, battery_level(&pump, 1));
    wait_until("the backoff", || hub.metrics().failed_commits >= 2);
    {
        let ghost = DeviceId::new("ghost").unwrap();
        let mut s = script.lock().unwrap();
        s.events
            .extend((0..twinhub::hub::backoff::MAX_HELD_EVENTS).map(|_| {
                DeviceEvent::Deregistered {
                    device: ghost.clone(),
                }
            }));
        s.events.push_back(DeviceEvent::Deregistered {
            device: pump.clone(),
        });
    }
    wait_until("everything taken", || {
        script.lock().unwrap().events.is_empty()
    });
    std::thread::sleep(Duration::from_millis(100));
    let dropped = hub.stats().dropped_events;
    store.lock().fail_commits(0);
    wait_held_applied(&hub, &store);
    let state = hub.twin("pump").unwrap().connection_state;
    hub.stop();
    assert_eq!(dropped, 0, "the De-register past the bound was dropped");
    assert_eq!(state, ConnectionState::Disconnected);
}
