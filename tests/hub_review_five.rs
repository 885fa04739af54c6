//! A fifth review of the failing-store path (findings of a review helper after 123c951
//! and 2d797cf): a rebuilt engine adopts only reboot Executes that went out (one made in
//! the failed batch let a reboot succeed on an Execute never sent); an Execute given up
//! by a cancellation whose commit failed is adopted too; a firmware URI Write answered in
//! a failed batch is not written again. Each finding has a control without the failure
//! injection; each finding's test failed before its fix.
#![cfg(all(feature = "fuzzing", feature = "memory-fleet"))]

mod hub_support;

use hub_support::*;
use std::time::{Duration, Instant};
use twinhub::hub::HubConfig;
use twinhub::job::{CancelMode, EngineConfig, JobId, JobStatistics};
use twinhub::transport::{DeviceError, DeviceEvent, DeviceReply, DeviceRequest};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

// ---------------------------------------------------------------------------------
// Finding 1: `adopt_executes` (src/job/engine.rs) adopts every operation of the old
// engine that is outstanding for a reboot child at step 0, including one the old engine
// created *inside the failed batch* and never sent (the hub drops the failed batch's
// operations). The transport refuses the durable Execute A (`NotRegistered`: the child
// clears FLAG_EXECUTE_SENT and waits), the device registers in the same batch, and the
// old engine queues Execute B (same attempt). The commit fails: the rebuilt engine's
// child (on disk: Execute sent, attempt 1) matches both (B, outstanding) and (A,
// settled); the dedup keeps B, which never went out. The replayed refusal of A is then
// ignored (A is unknown), and the replayed registration is taken for the reboot: the job
// succeeds though the device was never told to reboot. (A backoff holds the two events,
// so that they reach the engine in one batch.)

fn reboot_refused_then_registered(fail: bool) -> (JobStatistics, usize) {
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
    let job = JobId::new("rb").unwrap();
    start_reboot_job(&hub, &job, &pump, true);
    wait_until("the Execute", || job_ops(&script).iter().any(is_exec));
    wait_committed(&hub, &store, "the Execute is durable");
    std::thread::sleep(Duration::from_millis(100));
    if fail {
        // Two failed commits of an unrelated notification start a backoff, so that the
        // next two events are held and applied in one batch, whose commit fails too.
        store.lock().fail_commits(3);
        push(&script, battery_level(&pump, 3));
        wait_until("the backoff", || hub.metrics().failed_commits >= 2);
    }
    let exec = job_ops(&script).into_iter().find(is_exec).unwrap();
    {
        // One batch: the transport refused the Execute (the device was not registered
        // any more), then the device registers.
        let mut s = script.lock().unwrap();
        s.events.push_back(DeviceEvent::Response {
            op: exec.id,
            device: pump.clone(),
            result: Err(DeviceError::NotRegistered),
        });
        s.events.push_back(registered_v(&pump, "1.0"));
    }
    std::thread::sleep(Duration::from_millis(300));
    wait_until("the two events taken", || {
        script.lock().unwrap().events.is_empty()
    });
    wait_held_applied(&hub, &store);
    std::thread::sleep(Duration::from_millis(300));
    // However slow the hub's thread: the Execute sent again, or the job's (wrong) end.
    wait_until("a second Execute or the reboot's end", || {
        job_ops(&script).into_iter().filter(is_exec).count() >= 2 || stats(&hub, &job).running == 0
    });
    let s = stats(&hub, &job);
    let executes = job_ops(&script).into_iter().filter(is_exec).count();
    hub.stop();
    (s, executes)
}

#[test]
fn control_a_refused_reboot_execute_is_sent_again_at_the_registration() {
    let (s, executes) = reboot_refused_then_registered(false);
    assert_eq!((s.succeeded, s.running, executes), (0, 1, 2), "{s:?}");
}

#[test]
fn a_refused_reboot_execute_in_a_failed_batch_does_not_succeed_unsent() {
    let (s, executes) = reboot_refused_then_registered(true);
    assert_eq!(
        (s.succeeded, s.running, executes),
        (0, 1, 2),
        "the only Execute sent was refused (NotRegistered); the registration after it is \
         no reboot: {executes} Executes, {s:?}"
    );
}

// ---------------------------------------------------------------------------------
// Finding 2: `resume_deferred` (src/job/engine.rs) resumes a firmware child kept back
// after a failed commit from FW_SYNC ("the device kept its download") but keeps only the
// durable flags. When the Package URI Write's Done answer is inside the failed batch, the
// durable child is still at FW_WRITE_URI without FLAG_URI_WRITTEN: the FW_SYNC Read sees
// State Downloaded and the engine writes the URI again (a second download) instead of
// executing the package the device holds.

/// `fail`: 0 none; 1 the batch with the URI Write's answer; 2 (a check, not a finding)
/// the batch with the Downloaded notification, after the Write's answer was committed.
fn firmware_uri_answered_in_a_failed_batch(fail: u8) -> (JobStatistics, usize, usize) {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, job) = firmware_job_started(&pump);
    let fw_path = Lwm2mPath::instance(5, 0);
    let uri_path = Lwm2mPath::resource(5, 0, 1);
    let mut answered = std::collections::HashSet::new();
    let (mut state, mut result) = (0i64, 0i64);
    let mut first_write = true;
    let mut download_pending = false;
    // Generous (it ends at the job's success, in well under a second unloaded).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && stats(&hub, &job).succeeded == 0 {
        if download_pending {
            download_pending = false;
            wait_committed(&hub, &store, "the Write's answer is durable");
            std::thread::sleep(Duration::from_millis(100));
            store.lock().fail_next_commit();
            state = 2;
            push(
                &script,
                DeviceEvent::Notification {
                    device: pump.clone(),
                    registration_id: "r1".into(),
                    path: fw_path,
                    content: firmware_state(state, result),
                },
            );
        }
        for op in job_ops(&script) {
            if !answered.insert(op.id) {
                continue;
            }
            let done = |result| DeviceEvent::Response {
                op: op.id,
                device: pump.clone(),
                result: Ok(result),
            };
            let note = |state, result| DeviceEvent::Notification {
                device: pump.clone(),
                registration_id: "r1".into(),
                path: fw_path,
                content: firmware_state(state, result),
            };
            match &op.request {
                DeviceRequest::Observe { path } | DeviceRequest::Read { path }
                    if *path == fw_path =>
                {
                    push(
                        &script,
                        done(DeviceReply::Content(firmware_state(state, result))),
                    );
                }
                DeviceRequest::Read { .. } => push(
                    &script,
                    done(DeviceReply::Content(Content::single(
                        Lwm2mPath::resource(3, 0, 3),
                        ResourceValue::String("2.0".into()),
                    ))),
                ),
                DeviceRequest::Write { path, .. } if *path == uri_path => {
                    if fail == 2 && first_write {
                        first_write = false;
                        state = 1;
                        download_pending = true;
                        push(&script, done(DeviceReply::Done));
                        continue;
                    }
                    if fail == 1 && first_write {
                        wait_committed(&hub, &store, "the Write is durable");
                        std::thread::sleep(Duration::from_millis(100));
                        store.lock().fail_next_commit();
                    }
                    first_write = false;
                    // The package is small: downloaded at once.
                    state = 2;
                    let mut s = script.lock().unwrap();
                    s.events.push_back(done(DeviceReply::Done));
                    s.events.push_back(note(state, result));
                }
                DeviceRequest::Execute { .. } => {
                    (state, result) = (0, 1);
                    let mut s = script.lock().unwrap();
                    s.events.push_back(done(DeviceReply::Done));
                    s.events.push_back(note(state, result));
                }
                _ => push(&script, done(DeviceReply::Done)),
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let s = stats(&hub, &job);
    let ops = job_ops(&script);
    let writes = ops
        .iter()
        .filter(|o| matches!(&o.request, DeviceRequest::Write { path, .. } if *path == uri_path))
        .count();
    let executes = ops.iter().filter(|o| is_exec(o)).count();
    hub.stop();
    (s, writes, executes)
}

#[test]
fn control_a_firmware_download_done_at_once_is_written_and_executed_once() {
    let (s, writes, executes) = firmware_uri_answered_in_a_failed_batch(0);
    assert_eq!((s.succeeded, writes, executes), (1, 1, 1), "{s:?}");
}

#[test]
fn a_uri_write_answered_in_a_failed_batch_is_not_written_again() {
    let (s, writes, executes) = firmware_uri_answered_in_a_failed_batch(1);
    assert_eq!(
        (s.succeeded, writes, executes),
        (1, 1, 1),
        "the device answered the URI Write and holds the package (Downloaded): {writes} \
         URI Writes, {executes} Executes, {s:?}"
    );
}

#[test]
fn check_a_downloaded_notification_in_a_failed_batch_is_executed_once() {
    let (s, writes, executes) = firmware_uri_answered_in_a_failed_batch(2);
    assert_eq!((s.succeeded, writes, executes), (1, 1, 1), "{s:?}");
}

// ---------------------------------------------------------------------------------
// Finding 3: `adopt_executes` (src/job/engine.rs) only looks at `earlier.ops` and
// `earlier.settled`. When the commit that fails is the one of a service call that ended
// the reboot child in the old engine (`cancel_job` with `Abandon`: `child_apply` drops
// the child's op), the rebuilt engine, in which the cancel never happened, finds nothing
// to adopt: the device's Done answer, arriving after, is ignored; the child waits out
// `reboot_wait` and, with a retry rule, the Execute goes a second time.

fn reboot_after_a_refused_cancel(cancel: bool) -> (JobStatistics, usize) {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, job) = reboot_in_flight(&pump, true);
    store.lock().fail_next_commit();
    if cancel {
        // The cancel is refused (not durable): the job goes on as if never cancelled.
        assert!(hub.cancel_job(&job, CancelMode::Abandon).is_err());
    } else {
        // An unrelated service write is refused instead.
        assert!(hub.add_tags("pump", &["x"], None).is_err());
    }
    std::thread::sleep(Duration::from_millis(50));
    let exec = job_ops(&script).into_iter().find(is_exec).unwrap();
    answer_done(&script, &pump, &exec);
    wait_until("the answer taken", || {
        script.lock().unwrap().events.is_empty()
    });
    wait_held_applied(&hub, &store);
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
fn control_a_reboot_answered_done_after_a_refused_service_write_succeeds_once() {
    let (s, executes) = reboot_after_a_refused_cancel(false);
    assert_eq!((s.succeeded, s.cancelled, executes), (1, 0, 1), "{s:?}");
}

#[test]
fn a_reboot_answered_done_after_a_refused_cancel_succeeds_once() {
    let (s, executes) = reboot_after_a_refused_cancel(true);
    assert_eq!(
        (s.succeeded, s.cancelled, executes),
        (1, 0, 1),
        "the cancel was refused, then the device answered the Execute Done: {executes} \
         Executes, {s:?}"
    );
}

// ---------------------------------------------------------------------------------
// Checks (no finding): a reboot Execute answered with an error inside a failed batch
// ends like without the failure (the adopted op takes the error: one retry, one more
// Execute), also through two failed commits in a row.

fn reboot_rejected_in_failed_batches(failures: u32) -> (JobStatistics, usize) {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, job) = reboot_in_flight(&pump, true);
    store.lock().fail_commits(failures);
    let exec = job_ops(&script).into_iter().find(is_exec).unwrap();
    push(
        &script,
        DeviceEvent::Response {
            op: exec.id,
            device: pump.clone(),
            result: Err(DeviceError::MethodNotAllowed),
        },
    );
    wait_held_applied(&hub, &store);
    wait_until("the retry's Execute", || {
        job_ops(&script).into_iter().filter(is_exec).count() >= 2
    });
    let second = job_ops(&script).into_iter().filter(is_exec).nth(1).unwrap();
    answer_done(&script, &pump, &second);
    std::thread::sleep(Duration::from_millis(1200));
    wait_until("the reboot's end or a third Execute", || {
        stats(&hub, &job).running == 0 || job_ops(&script).into_iter().filter(is_exec).count() > 2
    });
    let s = stats(&hub, &job);
    let executes = job_ops(&script).into_iter().filter(is_exec).count();
    hub.stop();
    (s, executes)
}

#[test]
fn check_a_rejected_reboot_execute_is_retried_once_without_failure() {
    let (s, executes) = reboot_rejected_in_failed_batches(0);
    assert_eq!((s.succeeded, executes), (1, 2), "{s:?}");
}

#[test]
fn check_a_rejected_reboot_execute_in_two_failed_batches_is_retried_once() {
    let (s, executes) = reboot_rejected_in_failed_batches(2);
    assert_eq!((s.succeeded, executes), (1, 2), "{s:?}");
}
