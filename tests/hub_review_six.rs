//! A sixth review of the failing-store path (after e24ccdf and 123c951), by a review
//! helper: a firmware Package URI Write refused inside a failed batch installed the
//! package the device already held; the rebuilt engine now takes the Write over, so its
//! answer counts. Each finding has a control without the failure injection; the
//! finding's test failed before its fix.
#![cfg(all(feature = "fuzzing", feature = "memory-fleet"))]

mod hub_support;

use hub_support::*;
use std::time::{Duration, Instant};
use twinhub::job::JobStatistics;
use twinhub::transport::{DeviceError, DeviceEvent, DeviceReply, DeviceRequest};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

// ---------------------------------------------------------------------------------
// Finding: `resume_deferred` (src/job/engine.rs, e24ccdf) sets FLAG_URI_BEFORE_RESTART
// for every firmware child durable at FW_WRITE_URI: "the Write went out, a download
// under way is followed". But the Write's answer in the failed batch may be a refusal.
// A device that holds an older package (State Downloaded, which the engine expects at
// the start: it writes the URI then) refuses the new URI: without the failure the child
// fails `Rejected` and nothing is executed; with the refusal in a failed batch the
// rebuilt engine ignores the replayed refusal (an operation it does not know), reads
// State Downloaded at FW_SYNC, takes it for *its* package and executes it: the old
// package is installed and the job succeeds.
//
// `Device::Lost` is the brief's case (c): the Write is answered Done and the download
// fails at once (Idle, Update Result 7, invalid URI), both in the failed batch. A check,
// not a finding: the child is not stuck (it writes the URI once more, then fails).

#[derive(Clone, Copy, PartialEq)]
enum Device {
    /// Holds an older package (Downloaded); refuses the URI Write (4.00).
    Stale,
    /// Idle; takes the URI Write, whose download fails at once (Idle, result 7).
    Lost,
}

fn firmware_write_answer_in_failed_batch(
    device: Device,
    fail: bool,
) -> (JobStatistics, usize, usize) {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, job) = firmware_job_started(&pump);
    let fw_path = Lwm2mPath::instance(5, 0);
    let uri_path = Lwm2mPath::resource(5, 0, 1);
    let mut answered = std::collections::HashSet::new();
    let (mut state, mut result) = match device {
        Device::Stale => (2i64, 0i64),
        Device::Lost => (0, 0),
    };
    let mut first_write = true;
    // Generous (it ends at the child's end, in well under a second unloaded).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = stats(&hub, &job);
        if Instant::now() >= deadline || s.succeeded + s.failed + s.cancelled > 0 {
            break;
        }
        for op in job_ops(&script) {
            if !answered.insert(op.id) {
                continue;
            }
            let reply = |result: Result<DeviceReply, DeviceError>| DeviceEvent::Response {
                op: op.id,
                device: pump.clone(),
                result,
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
                        reply(Ok(DeviceReply::Content(firmware_state(state, result)))),
                    );
                }
                DeviceRequest::Read { .. } => push(
                    &script,
                    reply(Ok(DeviceReply::Content(Content::single(
                        Lwm2mPath::resource(3, 0, 3),
                        ResourceValue::String("2.0".into()),
                    )))),
                ),
                DeviceRequest::Write { path, .. } if *path == uri_path => {
                    if fail && first_write {
                        wait_committed(&hub, &store, "the Write is durable");
                        std::thread::sleep(Duration::from_millis(100));
                        store.lock().fail_next_commit();
                    }
                    first_write = false;
                    let mut s = script.lock().unwrap();
                    match device {
                        Device::Stale => {
                            s.events.push_back(reply(Err(DeviceError::BadRequest)));
                        }
                        Device::Lost => {
                            (state, result) = (0, 7);
                            s.events.push_back(reply(Ok(DeviceReply::Done)));
                            s.events.push_back(note(state, result));
                        }
                    }
                }
                DeviceRequest::Execute { .. } => {
                    (state, result) = (0, 1);
                    let mut s = script.lock().unwrap();
                    s.events.push_back(reply(Ok(DeviceReply::Done)));
                    s.events.push_back(note(state, result));
                }
                _ => push(&script, reply(Ok(DeviceReply::Done))),
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
    let executes = ops
        .iter()
        .filter(|o| matches!(o.request, DeviceRequest::Execute { .. }))
        .count();
    hub.stop();
    (s, writes, executes)
}

#[test]
fn control_a_refused_uri_write_fails_the_child_without_execute() {
    let (s, writes, executes) = firmware_write_answer_in_failed_batch(Device::Stale, false);
    assert_eq!(
        (s.succeeded, s.failed, writes, executes),
        (0, 1, 1, 0),
        "{s:?}"
    );
}

#[test]
fn a_refused_uri_write_in_a_failed_batch_does_not_execute_the_old_package() {
    let (s, writes, executes) = firmware_write_answer_in_failed_batch(Device::Stale, true);
    assert_eq!(
        (s.succeeded, s.failed, executes),
        (0, 1, 0),
        "the device refused the package URI (it still holds an older package, \
         Downloaded): {writes} URI Writes, {executes} Executes, {s:?}"
    );
}

#[test]
fn control_a_download_lost_at_once_fails_the_child() {
    let (s, writes, executes) = firmware_write_answer_in_failed_batch(Device::Lost, false);
    assert_eq!(
        (s.succeeded, s.failed, writes, executes),
        (0, 1, 1, 0),
        "{s:?}"
    );
}

#[test]
fn check_a_download_lost_in_a_failed_batch_is_not_stuck() {
    let (s, writes, executes) = firmware_write_answer_in_failed_batch(Device::Lost, true);
    // Not stuck, and like the control: the rebuilt engine takes the Write's answer over
    // and the failure notification ends the child (it wrote the URI again, reading Idle,
    // before the Write was adopted).
    assert_eq!(
        (s.succeeded, s.failed, writes, executes),
        (0, 1, 1, 0),
        "{s:?}"
    );
}
