//! A [`DeviceEvent::Sent`] the job engine waits for, while the hub holds device events
//! (its store failing): it must reach the engine, in its place among the device's
//! events, whatever the bound on held events ([`MAX_HELD_EVENTS`]). Before, it was
//! dropped at that bound like any event: the engine kept the reboot's Execute for one
//! still queued at the transport, and when the transport then timed the Execute out (its
//! answer lost), the engine sent it again: a second reboot. And an Execute still queued
//! at the transport when a failed commit rebuilds the engine is taken back, never sent
//! a second time beside it.
//!
//! [`MAX_HELD_EVENTS`]: twinhub::hub::backoff::MAX_HELD_EVENTS
#![cfg(all(feature = "fuzzing", feature = "memory-fleet"))]

mod hub_support;

use hub_support::*;
use std::time::Duration;
use twinhub::DeviceId;
use twinhub::job::JobId;
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, OpId};

fn is_execute(op: &DeviceOp) -> bool {
    matches!(op.request, DeviceRequest::Execute { .. })
}

/// The transport gives up on `execute` (its answer lost): once the time-out is applied
/// and durable, and the hub had time to send what follows it, the Executes the hub sent.
fn execute_timed_out(
    hub: &twinhub::hub::Hub,
    store: &twinhub::store::SharedStore,
    script: &std::sync::Mutex<Script>,
    execute: &DeviceOp,
) -> usize {
    let events_before = hub.stats().events;
    push(
        script,
        DeviceEvent::TimedOut {
            op: execute.id,
            device: execute.device.clone(),
        },
    );
    wait_until("the time-out applied", || {
        hub.stats().events > events_before
    });
    wait_committed(hub, store, "the time-out's commit");
    std::thread::sleep(Duration::from_millis(200));
    job_ops(script).iter().filter(|o| is_execute(o)).count()
}

/// The Execute leaves (`Sent`) while the hub backs off from a failing store with `fill`
/// other events held before it; the store recovers; the Execute's answer is lost and the
/// transport times it out. Returns the Executes the hub sent and the events it dropped.
fn reboot_sent_while_held(fill: usize) -> (usize, u64) {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, execute, _) = reboot_handed_over(&pump, false);
    store.lock().fail_commits(u32::MAX);
    push(&script, battery_level(&pump, 1));
    wait_until("the backoff", || hub.metrics().failed_commits >= 2);
    {
        // Answers the transport gave up on, for a device the hub does not know: held
        // like any event (nothing repeats them).
        let ghost = DeviceId::new("ghost").unwrap();
        let mut s = script.lock().unwrap();
        s.events.extend((0..fill).map(|i| DeviceEvent::TimedOut {
            device: ghost.clone(),
            op: OpId(1_000_000 + i as u64),
        }));
        s.events.push_back(DeviceEvent::Sent {
            op: execute.id,
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
    // The Execute's answer is lost: the transport gives up on it.
    let executes = execute_timed_out(&hub, &store, &script, &execute);
    hub.stop();
    (executes, dropped)
}

#[test]
fn control_a_reboot_execute_sent_while_few_events_are_held_is_never_sent_twice() {
    assert_eq!(reboot_sent_while_held(10), (1, 0));
}

#[test]
fn a_reboot_execute_sent_at_the_held_events_bound_is_never_sent_twice() {
    let (executes, dropped) = reboot_sent_while_held(twinhub::hub::backoff::MAX_HELD_EVENTS);
    assert_eq!(
        executes,
        1,
        "the Execute's Sent came while {} events were held ({dropped} dropped): the \
         Execute was sent again after its time-out, a second reboot",
        twinhub::hub::backoff::MAX_HELD_EVENTS
    );
    assert_eq!(dropped, 0, "no event was past a bound but the Sent");
}

/// A reboot whose Execute is still queued at the transport (no `Sent` yet) is cancelled
/// (`Abandon`), and the cancellation's commit fails: the job engine is rebuilt from the
/// store, where the child is still in progress. The rebuilt engine must take the queued
/// Execute back (its `Sent` and answer count when they come) rather than send a second
/// one beside it: both would reach the device, two reboots. Before, the cancellation had
/// forgotten that the Execute was queued, so the rebuilt engine took it for one that left
/// unanswered, did not take it back, and resumed the child with a new Execute.
#[test]
fn a_queued_reboot_execute_whose_cancellation_failed_to_commit_is_not_sent_twice() {
    use twinhub::job::{CancelMode, SpecError};
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, execute, _) = reboot_handed_over(&pump, false);
    let job = JobId::new("rb").unwrap();
    store.lock().fail_next_commit();
    assert!(matches!(
        hub.cancel_job(&job, CancelMode::Abandon),
        Err(SpecError::NotDurable { .. })
    ));
    // The rebuilt engine resumes what it resumes with the hub's next batch.
    push(&script, battery_level(&pump, 1));
    wait_committed(&hub, &store, "the notification's commit");
    std::thread::sleep(Duration::from_millis(200));
    let executes = || job_ops(&script).iter().filter(|o| is_execute(o)).count();
    assert_eq!(
        executes(),
        1,
        "a second Execute was sent beside the one still queued"
    );
    // The queued Execute leaves and is answered: the job completes on it.
    push(
        &script,
        DeviceEvent::Sent {
            op: execute.id,
            device: pump.clone(),
        },
    );
    answer_done(&script, &pump, &execute);
    wait_until("the job's end", || {
        hub.job_statistics(&job).unwrap().succeeded == 1
    });
    assert_eq!(executes(), 1);
    hub.stop();
}

/// A reboot whose Execute is still queued at the transport is cancelled; the
/// cancellation's commit fails and so do the rebuilds after it, twice: the store stays
/// poisoned, memory keeps the cancelled child, and the hub backs off. The Execute leaves
/// meanwhile (`Sent`). Once the store reads again, the engine rebuilt from it (the child
/// in progress: the cancellation never reached the disk) takes the queued Execute back
/// and waits for its `Sent`, so the hub must have held it. Before, no engine waited for
/// it when it came (the cancelled child had let go of its Execute): the hub dropped it,
/// the rebuilt engine waited for a `Sent` that never came, and when the transport then
/// timed the Execute out (its answer lost) the engine took it for one that never left and
/// sent it again: a second reboot.
#[test]
fn a_queued_reboot_execute_whose_cancellation_left_the_store_poisoned_is_not_sent_twice() {
    use twinhub::job::{CancelMode, SpecError};
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, execute, _) = reboot_handed_over(&pump, false);
    let job = JobId::new("rb").unwrap();
    {
        let mut store = store.lock();
        store.fail_next_commit();
        store.fail_reloads(2);
    }
    assert!(matches!(
        hub.cancel_job(&job, CancelMode::Abandon),
        Err(SpecError::NotDurable { .. })
    ));
    // The hub's next try at the poisoned store rebuilds in vain: it backs off, memory
    // still holding the cancellation.
    wait_until("the backoff", || hub.metrics().failed_commits >= 2);
    push(
        &script,
        DeviceEvent::Sent {
            op: execute.id,
            device: pump.clone(),
        },
    );
    wait_until("the Sent taken", || {
        script.lock().unwrap().events.is_empty()
    });
    std::thread::sleep(Duration::from_millis(100));
    wait_held_applied(&hub, &store);
    assert_eq!(hub.job_statistics(&job).unwrap().running, 1);
    // The Execute's answer is lost: the transport gives up on it.
    let executes = execute_timed_out(&hub, &store, &script, &execute);
    assert_eq!(
        executes, 1,
        "the rebuilt engine took the Execute for one that never left, and sent it again"
    );
    // It left: the child waits for the registration that proves the reboot.
    assert_eq!(hub.job_statistics(&job).unwrap().running, 1);
    hub.stop();
}
