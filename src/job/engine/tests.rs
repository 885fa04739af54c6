//! An engine rebuilt after a failed commit (`JobEngine::restore_after`, which the crate's
//! own tests reach only through a hub over a failing store, in real time): what becomes
//! of the operations the engine it replaces had in flight. The test plays the store
//! (rows committed or not), the hub's order (a batch's events, then `resume_deferred`,
//! then its operations go out only if its commit succeeds) and the transport.

use super::*;
use crate::job::{JobId, JobSpec, JobType};
use crate::twin::RegistrationInfo;
use std::collections::BTreeMap;

/// The rows that reached the disk.
#[derive(Default)]
struct Disk {
    parents: BTreeMap<u32, Vec<u8>>,
    children: BTreeMap<u32, Vec<u8>>,
}

impl Disk {
    /// What `e` did since the last commit reaches the disk.
    fn commit(&mut self, e: &mut JobEngine) {
        for row in e.take_journal() {
            match row {
                JobRow::Parent(p, b) => {
                    self.parents.insert(p, b);
                }
                JobRow::Child(c, b) => {
                    self.children.insert(c, b);
                }
                JobRow::DropBefore { .. } => {}
            }
        }
        e.committed();
    }

    /// The commit of what `e` did since the last one fails: its rows are lost, the
    /// operations it made since are never sent (returned, to be dropped), and an engine
    /// rebuilt from the disk replaces it, as the hub does.
    fn fail(&self, e: &mut JobEngine, now: Instant) -> Vec<DeviceOp> {
        let dropped: Vec<DeviceOp> = std::iter::from_fn(|| e.poll_op()).collect();
        let _ = e.take_journal();
        let wall = e.wall(now);
        let rebuilt =
            JobEngine::restore_after(e, now, wall, self.parents.clone(), self.children.clone())
                .expect("the rows decode");
        *e = rebuilt;
        dropped
    }
}

fn sent_config() -> EngineConfig {
    EngineConfig {
        transport_reports_sent: true,
        ..EngineConfig::default()
    }
}

fn registered(device: &DeviceId) -> DeviceEvent {
    DeviceEvent::Registered {
        device: device.clone(),
        registration: RegistrationInfo {
            endpoint: device.to_string(),
            registration_id: "r1".into(),
            lifetime: 300,
            lwm2m_version: "1.1".into(),
            binding: "U".into(),
            queue_mode: true,
            objects: vec![
                Lwm2mPath::instance(1, 0),
                Lwm2mPath::instance(3, 0),
                Lwm2mPath::instance(5, 0),
            ],
            address: None,
            psk_identity: None,
        },
    }
}

/// An engine (journal on) where `d` registered, running job `j` of `job` over it.
fn engine_with(config: EngineConfig, job: JobType, t0: Instant) -> (JobEngine, DeviceId, JobId) {
    let mut e = JobEngine::new(config, t0, Timestamp::from_millis(1_000_000));
    e.enable_journal();
    // As the hub over a store.
    e.keep_for_rebuild();
    let dev = DeviceId::new("d").unwrap();
    e.handle_event(t0, &registered(&dev));
    let id = JobId::new("j").unwrap();
    e.create(t0, JobSpec::new(id.clone(), job, vec![dev.clone()]))
        .unwrap();
    (e, dev, id)
}

fn firmware() -> JobType {
    JobType::FirmwareUpdate {
        package_uri: "coap://fw.example/2.0".into(),
        expected_version: Some("2.0".into()),
    }
}

fn sent(op: &DeviceOp) -> DeviceEvent {
    DeviceEvent::Sent {
        op: op.id,
        device: op.device.clone(),
    }
}

fn answer(op: &DeviceOp, result: Result<DeviceReply, DeviceError>) -> DeviceEvent {
    DeviceEvent::Response {
        op: op.id,
        device: op.device.clone(),
        result,
    }
}

fn fw(state: i64, result: i64) -> Content {
    Content {
        values: vec![
            (Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(state)),
            (Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(result)),
        ],
    }
}

fn one_op(e: &mut JobEngine) -> DeviceOp {
    let ops: Vec<DeviceOp> = std::iter::from_fn(|| e.poll_op()).collect();
    assert_eq!(ops.len(), 1, "{ops:?}");
    ops.into_iter().next().unwrap()
}

fn is_update_execute(op: &DeviceOp) -> bool {
    op.request
        == DeviceRequest::Execute {
            path: Lwm2mPath::resource(5, 0, 2),
            args: None,
        }
}

fn child(e: &JobEngine, id: &JobId, dev: &DeviceId) -> (ChildState, Option<String>) {
    let (state, reason) = e.child_state(id, dev).unwrap();
    (state, reason.map(FailureReason::code))
}

/// A sleeping device behind a transport that queues its requests: when it wakes it takes
/// them in order, reporting each `Sent`; it downloads a package at once and installs it
/// at once, then reboots and registers again (the requests still queued go to the new
/// registration).
#[derive(Default)]
struct Device {
    queue: VecDeque<DeviceOp>,
    state: i64,
    result: i64,
    version: &'static str,
    uri_writes: usize,
    executes: usize,
}

impl Device {
    /// Queues what the engine has to send.
    fn take(&mut self, e: &mut JobEngine) {
        self.queue.extend(std::iter::from_fn(|| e.poll_op()));
    }

    /// Wakes, and carries out what is queued (and what the answers bring) until the
    /// engine has nothing more to send now.
    fn wake(&mut self, e: &mut JobEngine, now: Instant) {
        self.take(e);
        while let Some(op) = self.queue.pop_front() {
            e.handle_event(now, &sent(&op));
            let fw_path = Lwm2mPath::instance(5, 0);
            let (result, rebooted) = match &op.request {
                DeviceRequest::Observe { path } | DeviceRequest::Read { path }
                    if *path == fw_path =>
                {
                    (Ok(DeviceReply::Content(fw(self.state, self.result))), false)
                }
                DeviceRequest::Read { path } if *path == Lwm2mPath::resource(3, 0, 3) => (
                    Ok(DeviceReply::Content(Content::single(
                        *path,
                        ResourceValue::String(self.version.into()),
                    ))),
                    false,
                ),
                DeviceRequest::Write { content, .. } => {
                    let uri = content.values.first().map(|(_, v)| v.to_string());
                    if uri.as_deref().is_some_and(|u| !u.is_empty()) {
                        self.uri_writes += 1;
                        (self.state, self.result) = (2, 0);
                    } else {
                        (self.state, self.result) = (0, 0);
                    }
                    (Ok(DeviceReply::Done), false)
                }
                DeviceRequest::Execute { .. } if self.state == 2 => {
                    self.executes += 1;
                    (self.state, self.result) = (0, 1);
                    self.version = "2.0";
                    (Ok(DeviceReply::Done), true)
                }
                DeviceRequest::Execute { .. } => (Err(DeviceError::MethodNotAllowed), false),
                _ => (Ok(DeviceReply::Done), false),
            };
            e.handle_event(now, &answer(&op, result));
            if rebooted {
                e.handle_event(now, &registered(&op.device));
            }
            self.take(e);
        }
    }
}

/// Runs `device` and the engine's timers (firmware polls) for up to an hour.
fn run(e: &mut JobEngine, device: &mut Device, mut now: Instant, id: &JobId) {
    let end = now + Duration::from_secs(3600);
    while now < end && !e.job(id).unwrap().status.is_terminal() {
        device.wake(e, now);
        let Some(next) = e.poll_timeout() else { break };
        now = next.max(now);
        e.handle_timeout(now);
    }
}

/// Item 6 of the review (firmware Execute of Update): the Execute waits in the
/// transport's queue for a sleeping device when a later commit fails. The rebuilt engine
/// did not take it back: it re-synchronised with a Read of `/5/0` queued behind it, took
/// the update under way (then Idle with result 1, before the device rebooted) for its
/// lost download, wrote the package URI again after the registration of the new image
/// and installed it a second time. Now it takes the queued Execute back: its `Sent` and
/// answer count, the update is verified, once.
#[test]
fn a_queued_firmware_execute_is_taken_back_by_a_rebuilt_engine() {
    for fail in [false, true] {
        let t0 = Instant::now();
        let (mut e, dev, id) = engine_with(sent_config(), firmware(), t0);
        let mut disk = Disk::default();
        let mut device = Device {
            version: "1.0",
            ..Device::default()
        };
        // Awake until the package is downloaded (it notifies so); the device sleeps,
        // and the Execute of Update waits in the transport's queue.
        device.wake(&mut e, t0);
        assert_eq!((device.state, device.uri_writes), (2, 1));
        e.handle_event(
            t0,
            &DeviceEvent::Notification {
                device: dev.clone(),
                registration_id: "r1".into(),
                path: Lwm2mPath::instance(5, 0),
                content: fw(2, 0),
            },
        );
        let execute = one_op(&mut e);
        assert!(is_update_execute(&execute), "{execute:?}");
        device.queue.push_back(execute);
        disk.commit(&mut e);
        let t1 = t0 + Duration::from_secs(60);
        if fail {
            // A batch (of another device, say) whose commit fails.
            assert!(disk.fail(&mut e, t1).is_empty());
        }
        e.resume_deferred(t1);
        if fail {
            assert_eq!(
                e.poll_op(),
                None,
                "nothing new: the queued Execute is taken back"
            );
        }
        run(&mut e, &mut device, t1 + Duration::from_secs(600), &id);
        assert_eq!(
            child(&e, &id, &dev),
            (ChildState::Succeeded, None),
            "fail {fail}"
        );
        assert_eq!(
            (device.uri_writes, device.executes),
            (1, 1),
            "downloaded and installed once (fail {fail})"
        );
        e.validate().unwrap();
    }
}

/// Item 6 (firmware Execute answered before the failed commit): the device took the
/// Execute of Update (its answer committed) and then reported that the update failed
/// (Update Result 8, no reboot) in a batch whose commit failed. The rebuilt engine waited
/// for a registration of a new image that never comes (until the job's maximum
/// execution time: `deviceOffline`); now it re-synchronises from `/5/0` like the other
/// firmware children, and the failure counts. Update is not executed again.
#[test]
fn a_rebuilt_engine_resynchronises_an_executed_firmware_update() {
    let t0 = Instant::now();
    let (mut e, dev, id) = engine_with(sent_config(), firmware(), t0);
    let mut disk = Disk::default();
    let observe = one_op(&mut e);
    e.handle_event(t0, &sent(&observe));
    e.handle_event(t0, &answer(&observe, Ok(DeviceReply::Content(fw(0, 0)))));
    let write = one_op(&mut e);
    e.handle_event(t0, &sent(&write));
    e.handle_event(t0, &answer(&write, Ok(DeviceReply::Done)));
    let downloaded = DeviceEvent::Notification {
        device: dev.clone(),
        registration_id: "r1".into(),
        path: Lwm2mPath::instance(5, 0),
        content: fw(2, 0),
    };
    e.handle_event(t0, &downloaded);
    let execute = one_op(&mut e);
    assert!(is_update_execute(&execute));
    e.handle_event(t0, &sent(&execute));
    e.handle_event(t0, &answer(&execute, Ok(DeviceReply::Done)));
    disk.commit(&mut e);
    // The update fails on the device (Downloaded again, result 8): a batch whose commit
    // fails, applied again to the rebuilt engine.
    let t1 = t0 + Duration::from_secs(30);
    let failed = DeviceEvent::Notification {
        device: dev.clone(),
        registration_id: "r1".into(),
        path: Lwm2mPath::instance(5, 0),
        content: fw(2, 8),
    };
    e.handle_event(t1, &failed);
    assert_eq!(
        child(&e, &id, &dev),
        (ChildState::Failed, Some("deviceError:8".into()))
    );
    disk.fail(&mut e, t1);
    e.handle_event(t1, &failed);
    e.resume_deferred(t1);
    let read = one_op(&mut e);
    assert_eq!(
        read.request,
        DeviceRequest::Read {
            path: Lwm2mPath::instance(5, 0)
        },
        "re-synchronised"
    );
    e.handle_event(t1, &sent(&read));
    e.handle_event(t1, &answer(&read, Ok(DeviceReply::Content(fw(2, 8)))));
    assert_eq!(
        child(&e, &id, &dev),
        (ChildState::Failed, Some("deviceError:8".into())),
        "the failed update counts"
    );
    let cancels: Vec<DeviceOp> = std::iter::from_fn(|| e.poll_op()).collect();
    assert!(
        cancels.iter().all(|o| !is_update_execute(o)),
        "never executed again: {cancels:?}"
    );
    e.validate().unwrap();
}

/// Item 6 (other operations): a read of the earlier engine whose answer is in the failed
/// batch. The rebuilt engine reads again under a new id and ignores the old answer when
/// the batch is applied again: the value reaches the twin once (from the new read), the
/// child succeeds once.
#[test]
fn a_rebuilt_engine_reads_again_and_ignores_the_old_answer() {
    let t0 = Instant::now();
    let path = Lwm2mPath::resource(3, 0, 9);
    let job = JobType::ReadDeviceProperties { paths: vec![path] };
    let (mut e, dev, id) = engine_with(sent_config(), job, t0);
    let mut disk = Disk::default();
    let read = one_op(&mut e);
    disk.commit(&mut e);
    let value = |v| {
        Ok(DeviceReply::Content(Content::single(
            path,
            ResourceValue::Integer(v),
        )))
    };
    let batch = [sent(&read), answer(&read, value(40))];
    for ev in &batch {
        e.handle_event(t0, ev);
    }
    assert_eq!(child(&e, &id, &dev).0, ChildState::Succeeded);
    disk.fail(&mut e, t0);
    // The rebuilt engine reads again at once (a read is safe to repeat).
    let again = one_op(&mut e);
    assert_ne!(again.id, read.id);
    assert_eq!(again.request, read.request);
    for ev in &batch {
        e.handle_event(t0, ev);
    }
    e.resume_deferred(t0);
    assert_eq!(e.poll_twin_update(), None, "the old answer is not taken");
    assert_eq!(child(&e, &id, &dev).0, ChildState::InProgress);
    e.handle_event(t0, &sent(&again));
    e.handle_event(t0, &answer(&again, value(41)));
    assert_eq!(child(&e, &id, &dev).0, ChildState::Succeeded);
    let update = e.poll_twin_update().expect("the new read's value");
    assert_eq!(update.content.get(&path), Some(&ResourceValue::Integer(41)));
    assert_eq!(e.poll_twin_update(), None, "once");
    e.validate().unwrap();
}

/// Item 4 of the review: the transport refused a reboot's Execute itself, before sending
/// it (`BadPayload` with no `Sent`), in a batch whose commit failed. The engine counted
/// the refused Execute as sent; the rebuilt engine took that over, and once the replayed
/// refusal was lost (a held event dropped past its tries), the device's next
/// registration was taken for the reboot: success, with no Execute ever sent. Now the
/// refusal is no `Sent`, and the rebuilt engine sends the Execute again.
#[test]
fn an_execute_the_transport_refused_unsent_is_no_reboot_after_a_rebuild() {
    let t0 = Instant::now();
    let job = JobType::Reboot {
        wait_for_registration: true,
    };
    let (mut e, dev, id) = engine_with(sent_config(), job, t0);
    let mut disk = Disk::default();
    let execute = one_op(&mut e);
    disk.commit(&mut e);
    e.handle_event(
        t0,
        &answer(&execute, Err(DeviceError::BadPayload("too large".into()))),
    );
    assert_eq!(
        child(&e, &id, &dev),
        (ChildState::Failed, Some("rejected:badPayload".into()))
    );
    let t1 = t0 + Duration::from_secs(1);
    disk.fail(&mut e, t1);
    // The replayed refusal never comes (dropped); the steps kept back go on.
    e.resume_deferred(t1);
    let again = one_op(&mut e);
    assert_eq!(again.request, execute.request, "the Execute never went out");
    e.handle_event(t1, &registered(&dev));
    assert_eq!(
        child(&e, &id, &dev),
        (ChildState::InProgress, None),
        "a registration before any Execute left is no reboot"
    );
    e.validate().unwrap();
}

/// Applies `batch` again to an engine rebuilt after its commit failed, as the hub does:
/// a `Sent` only if the engine waits for it (the hub holds no other), the rest in order.
fn apply_again(e: &mut JobEngine, now: Instant, batch: &[DeviceEvent]) {
    for ev in batch {
        if let DeviceEvent::Sent { op, .. } = ev
            && !e.awaits_sent(*op)
        {
            continue;
        }
        e.handle_event(now, ev);
    }
    e.resume_deferred(now);
}

fn reboot() -> JobType {
    JobType::Reboot {
        wait_for_registration: true,
    }
}

/// Review 42: a reboot's Execute waits in the transport's queue; the device registers
/// again, then the Execute leaves (`Sent`), in a batch whose commit fails. The rebuilt
/// engine took over the batch's `Sent` (FLAG_EXECUTE_SENT carried, the Execute adopted as
/// left) and the hub dropped the `Sent` (no engine waited for it): applied again, the
/// registration that came before the `Sent` counted as the reboot. Now the rebuilt engine
/// takes the Execute over as still queued and waits for that `Sent` in its place.
#[test]
fn a_registration_before_an_executes_sent_in_a_failed_batch_is_no_reboot() {
    let t0 = Instant::now();
    let (mut e, dev, id) = engine_with(sent_config(), reboot(), t0);
    let mut disk = Disk::default();
    let execute = one_op(&mut e);
    disk.commit(&mut e);
    let batch = [registered(&dev), sent(&execute)];
    for ev in &batch {
        e.handle_event(t0, ev);
    }
    assert_eq!(child(&e, &id, &dev), (ChildState::InProgress, None));
    // The hub holds the batch's `Sent` with its events, also while the store could not
    // be rebuilt yet (this engine stays until it is).
    assert!(e.awaits_sent(execute.id));
    let t1 = t0 + Duration::from_secs(1);
    disk.fail(&mut e, t1);
    assert!(e.awaits_sent(execute.id), "taken over as still queued");
    apply_again(&mut e, t1, &batch);
    assert_eq!(
        child(&e, &id, &dev),
        (ChildState::InProgress, None),
        "no reboot before the Execute left"
    );
    assert_eq!(e.poll_op(), None, "the Execute is not sent again");
    // The device takes it, answers, and reboots.
    e.handle_event(t1, &answer(&execute, Ok(DeviceReply::Done)));
    assert_eq!(child(&e, &id, &dev), (ChildState::InProgress, None));
    e.handle_event(t1, &registered(&dev));
    assert_eq!(child(&e, &id, &dev), (ChildState::Succeeded, None));
    e.validate().unwrap();
}

/// The same `Sent`, held by the hub through its bound of failed commits and handed over
/// outside any batch: nothing applies it again, so an engine rebuilt after a later failed
/// commit counts the Execute as sent (a registration is then the reboot) instead of
/// waiting for a `Sent` that never comes, and never sends it again.
#[test]
fn an_executes_sent_handed_over_for_good_counts_after_a_later_failed_commit() {
    let t0 = Instant::now();
    let (mut e, dev, id) = engine_with(sent_config(), reboot(), t0);
    let mut disk = Disk::default();
    let execute = one_op(&mut e);
    disk.commit(&mut e);
    e.handle_event(t0, &sent(&execute));
    disk.fail(&mut e, t0);
    assert!(e.awaits_sent(execute.id));
    e.handle_sent_for_good(t0, &sent(&execute));
    assert!(!e.awaits_sent(execute.id));
    let t1 = t0 + Duration::from_secs(1);
    // The next batch's commit fails too.
    assert!(disk.fail(&mut e, t1).is_empty());
    e.resume_deferred(t1);
    assert!(!e.awaits_sent(execute.id), "no `Sent` to wait for");
    assert_eq!(e.poll_op(), None, "never sent twice");
    e.handle_event(t1, &registered(&dev));
    assert_eq!(child(&e, &id, &dev), (ChildState::Succeeded, None));
    e.validate().unwrap();
}

/// A reboot's Execute leaves and the device de-registers (rebooting), in a batch whose
/// commit fails. The rebuilt engine cannot take the Execute back (its device is offline:
/// no engine waits for the `Sent`, which the hub then drops), so it counts the Execute as
/// sent, as the earlier engine did: the next registration is the reboot, with no second
/// Execute.
#[test]
fn an_executes_sent_in_a_failed_batch_whose_device_left_is_not_sent_twice() {
    let t0 = Instant::now();
    let (mut e, dev, id) = engine_with(sent_config(), reboot(), t0);
    let mut disk = Disk::default();
    let execute = one_op(&mut e);
    disk.commit(&mut e);
    let batch = [
        sent(&execute),
        DeviceEvent::Deregistered {
            device: dev.clone(),
        },
    ];
    for ev in &batch {
        e.handle_event(t0, ev);
    }
    disk.fail(&mut e, t0);
    apply_again(&mut e, t0, &batch);
    assert_eq!(e.poll_op(), None);
    e.handle_event(t0, &registered(&dev));
    assert_eq!(e.poll_op(), None, "never sent twice");
    assert_eq!(child(&e, &id, &dev), (ChildState::Succeeded, None));
    e.validate().unwrap();
}

/// The firmware steps taken over the same way: the Package URI Write, and the Execute of
/// Update, each waiting in the transport's queue while the device registers again, then
/// leaving, in a batch whose commit fails. Applied again to the rebuilt engine, the batch
/// must leave the child where it leaves an engine whose commit succeeded: still waiting
/// for the operation's answer (the registration came before it left, so it restarted
/// nothing the step did), not re-synchronising from `/5/0` as if the registration came
/// after (which lost the Write's answer, or took an Execute that had not reached the
/// device yet for one carried out).
#[test]
fn a_registration_before_a_firmware_steps_sent_in_a_failed_batch_changes_nothing_more() {
    for execute_step in [false, true] {
        for fail in [false, true] {
            let t0 = Instant::now();
            let (mut e, dev, id) = engine_with(sent_config(), firmware(), t0);
            let mut disk = Disk::default();
            let observe = one_op(&mut e);
            e.handle_event(t0, &sent(&observe));
            e.handle_event(t0, &answer(&observe, Ok(DeviceReply::Content(fw(0, 0)))));
            let mut op = one_op(&mut e);
            if execute_step {
                e.handle_event(t0, &sent(&op));
                e.handle_event(t0, &answer(&op, Ok(DeviceReply::Done)));
                let downloaded = DeviceEvent::Notification {
                    device: dev.clone(),
                    registration_id: "r1".into(),
                    path: Lwm2mPath::instance(5, 0),
                    content: fw(2, 0),
                };
                e.handle_event(t0, &downloaded);
                op = one_op(&mut e);
                assert!(is_update_execute(&op), "{op:?}");
            }
            disk.commit(&mut e);
            let batch = [registered(&dev), sent(&op)];
            for ev in &batch {
                e.handle_event(t0, ev);
            }
            if fail {
                disk.fail(&mut e, t0);
                apply_again(&mut e, t0, &batch);
            }
            let case = format!("execute {execute_step}, fail {fail}");
            assert_eq!(e.poll_op(), None, "{case}: waits for the answer");
            assert_eq!(
                child(&e, &id, &dev),
                (ChildState::InProgress, None),
                "{case}"
            );
            assert!(e.is_outstanding(op.id), "{case}: its answer counts");
            e.validate().unwrap();
        }
    }
}

/// A reboot's Execute waits in the transport's queue (no `Sent`) when its job is
/// cancelled, and the cancellation's commit fails while memory cannot be rebuilt yet (the
/// store stays poisoned): this engine stays, and the Execute leaves meanwhile. The engine
/// rebuilt later (the child still in progress on the disk) takes the Execute back as
/// queued, so this one must wait for that `Sent` (the hub holds only what an engine waits
/// for). Before, it did not: the hub dropped the `Sent`, the rebuilt engine waited for it
/// in vain and took the transport's time-out for a request that never left: a second
/// Execute.
/// A reboot job whose Execute is durable and still queued at the transport (no `Sent`),
/// cancelled (`Abandon`) since: the engine, its device and job, the disk (where the child
/// is still in progress), the Execute and the time.
fn cancelled_while_execute_queued() -> (JobEngine, DeviceId, JobId, Disk, DeviceOp, Instant) {
    use crate::job::CancelMode;
    let t0 = Instant::now();
    let (mut e, dev, id) = engine_with(sent_config(), reboot(), t0);
    let mut disk = Disk::default();
    let execute = one_op(&mut e);
    disk.commit(&mut e);
    e.cancel(t0, &id, CancelMode::Abandon).unwrap();
    (e, dev, id, disk, execute, t0)
}

/// The Execute left and its answer is lost (the transport gives up on it): `e` sends no
/// second Execute, and the device's registration completes the reboot.
fn execute_lost_after_it_left(
    e: &mut JobEngine,
    t: Instant,
    dev: &DeviceId,
    id: &JobId,
    execute: &DeviceOp,
) {
    e.handle_event(
        t,
        &DeviceEvent::TimedOut {
            op: execute.id,
            device: dev.clone(),
        },
    );
    assert_eq!(e.poll_op(), None, "never sent twice");
    e.handle_event(t, &registered(dev));
    assert_eq!(child(e, id, dev), (ChildState::Succeeded, None));
    e.validate().unwrap();
}

#[test]
fn a_cancelled_childs_queued_execute_is_awaited_while_the_store_stays_poisoned() {
    let (mut e, dev, id, disk, execute, t0) = cancelled_while_execute_queued();
    assert_eq!(child(&e, &id, &dev).0, ChildState::Cancelled);
    assert!(
        e.awaits_sent(execute.id),
        "the hub holds the Sent for the engine rebuilt later"
    );
    let t1 = t0 + Duration::from_secs(1);
    disk.fail(&mut e, t1);
    assert!(e.awaits_sent(execute.id), "taken back as still queued");
    apply_again(&mut e, t1, &[sent(&execute)]);
    assert_eq!(e.poll_op(), None, "the Execute is not sent again");
    // Its answer is lost: the transport gives up on it. It left: no second Execute.
    execute_lost_after_it_left(&mut e, t1, &dev, &id, &execute);
}

/// The same `Sent`, held through the hub's bound of failed commits and handed over
/// outside any batch: the engine rebuilt after a later failed commit counts the Execute
/// as sent (nothing applies that `Sent` again), neither waits for it nor sends it again.
#[test]
fn a_cancelled_childs_execute_sent_for_good_counts_after_a_later_rebuild() {
    let (mut e, dev, id, disk, execute, t0) = cancelled_while_execute_queued();
    e.handle_sent_for_good(t0, &sent(&execute));
    assert!(!e.awaits_sent(execute.id));
    let t1 = t0 + Duration::from_secs(1);
    assert!(disk.fail(&mut e, t1).is_empty());
    e.resume_deferred(t1);
    assert!(!e.awaits_sent(execute.id), "no `Sent` to wait for");
    assert_eq!(e.poll_op(), None, "never sent twice");
    execute_lost_after_it_left(&mut e, t1, &dev, &id, &execute);
}

/// An engine driven without the hub (`restore`, then `take_journal` after each change, as
/// the job module's docs describe) is never rebuilt after a failed commit: it keeps
/// nothing for that. Before, every answer to a reboot's Execute and every `Sent` of one
/// was kept until a `committed` that only the hub calls: without bound.
#[test]
fn an_engine_driven_without_the_hub_keeps_nothing_for_a_rebuild() {
    let t0 = Instant::now();
    let config = sent_config();
    let empty = || std::iter::empty::<(u32, Vec<u8>)>();
    let mut e = JobEngine::restore(
        config,
        t0,
        Timestamp::from_millis(1_000_000),
        empty(),
        empty(),
    )
    .unwrap();
    let dev = DeviceId::new("d").unwrap();
    e.handle_event(t0, &registered(&dev));
    for i in 0..50 {
        let id = JobId::new(&format!("rb-{i}")).unwrap();
        e.create(t0, JobSpec::new(id.clone(), reboot(), vec![dev.clone()]))
            .unwrap();
        let execute = one_op(&mut e);
        e.handle_event(t0, &sent(&execute));
        e.handle_event(t0, &answer(&execute, Ok(DeviceReply::Done)));
        e.handle_event(t0, &registered(&dev));
        assert_eq!(child(&e, &id, &dev), (ChildState::Succeeded, None));
        assert!(!e.take_journal().is_empty());
    }
    assert_eq!((e.settled.len(), e.sent_again.len()), (0, 0));
}

/// Devices `d1`, `d2`, `d3` registered (with `/10241/0`), running configuration job `j`
/// over them one at a time (`max_in_flight(1)`): `d1`'s Write answered, its Execute
/// (returned) out, all of it on `disk`.
fn rollout_of_three(t0: Instant, disk: &mut Disk) -> (JobEngine, Vec<DeviceId>, JobId, DeviceOp) {
    let mut e = JobEngine::new(
        EngineConfig::default(),
        t0,
        Timestamp::from_millis(1_000_000),
    );
    e.enable_journal();
    e.keep_for_rebuild();
    let devices: Vec<DeviceId> = ["d1", "d2", "d3"]
        .iter()
        .map(|d| DeviceId::new(d).unwrap())
        .collect();
    for d in &devices {
        let mut registration = registered(d);
        if let DeviceEvent::Registered { registration, .. } = &mut registration {
            registration.objects.push(Lwm2mPath::instance(10241, 0));
        }
        e.handle_event(t0, &registration);
    }
    let id = JobId::new("j").unwrap();
    let job = JobType::ConfigurationUpdate {
        name: "a".into(),
        value: "1".into(),
    };
    e.create(
        t0,
        JobSpec::new(id.clone(), job, devices.clone()).max_in_flight(1),
    )
    .unwrap();
    let write = one_op(&mut e);
    e.handle_event(t0, &answer(&write, Ok(DeviceReply::Done)));
    let execute = one_op(&mut e);
    assert_eq!(execute.device, devices[0]);
    disk.commit(&mut e);
    (e, devices, id, execute)
}

/// A rollout of one child at a time whose first child was in progress when its rows were
/// written: the restored engine (after a restart, or rebuilt after a failed commit whose
/// batch held that child's last answer) sends that child back to wait for its device and
/// starts the next one in the slot it freed: that one is in progress, its Write the only
/// operation out; the third waits its turn. Before, the restore met the child it had
/// just started further on and sent it back to wait too, which started the third: every
/// child's Write went out at once, against `max_in_flight`, and each was written again
/// when its turn came.
#[test]
fn a_restored_rollout_keeps_max_in_flight() {
    for rebuilt in [false, true] {
        let t0 = Instant::now();
        let mut disk = Disk::default();
        let (mut e, devices, id, execute) = rollout_of_three(t0, &mut disk);
        let t1 = t0 + Duration::from_secs(1);
        if rebuilt {
            let batch = [answer(&execute, Ok(DeviceReply::Done))];
            for ev in &batch {
                e.handle_event(t0, ev);
            }
            disk.fail(&mut e, t1);
            apply_again(&mut e, t1, &batch);
        } else {
            e = JobEngine::restore(
                EngineConfig::default(),
                t1,
                Timestamp::from_millis(1_001_000),
                disk.parents.clone(),
                disk.children.clone(),
            )
            .unwrap();
        }
        e.handle_timeout(t1);
        let ops: Vec<DeviceOp> = std::iter::from_fn(|| e.poll_op()).collect();
        let case = if rebuilt { "rebuilt" } else { "restarted" };
        assert_eq!(
            ops.iter().map(|o| o.device.as_str()).collect::<Vec<_>>(),
            vec!["d2"],
            "{case}: one child at a time: {ops:?}"
        );
        assert!(
            matches!(ops[0].request, DeviceRequest::Write { .. }),
            "{case}"
        );
        let stats = e.statistics(&id).unwrap();
        assert_eq!(
            (stats.running, stats.waiting_for_device, stats.pending),
            (1, 1, 1),
            "{case}: {stats:?}"
        );
        assert_eq!(
            child(&e, &id, &devices[1]).0,
            ChildState::InProgress,
            "{case}"
        );
        e.validate().unwrap();
    }
}

/// Issue #48: a read job whose device answers a NaN (or infinity) did not refresh the
/// property (the twin refuses the value and keeps what it had): the child fails as
/// `rejected:badPayload`, naming the path, rather than succeed with nothing refreshed.
/// What the device answered still goes to the twin (which counts the refusal).
#[test]
fn a_read_job_answered_with_nan_fails_naming_the_path() {
    let t0 = Instant::now();
    let temp = Lwm2mPath::resource(3303, 0, 5700);
    for x in [f64::NAN, f64::INFINITY] {
        let job = JobType::ReadDeviceProperties { paths: vec![temp] };
        let mut e = JobEngine::new(sent_config(), t0, Timestamp::from_millis(1_000_000));
        let dev = DeviceId::new("d").unwrap();
        let mut with_sensor = registered(&dev);
        if let DeviceEvent::Registered { registration, .. } = &mut with_sensor {
            registration.objects.push(Lwm2mPath::instance(3303, 0));
        }
        e.handle_event(t0, &with_sensor);
        let id = JobId::new("j").unwrap();
        e.create(t0, JobSpec::new(id.clone(), job, vec![dev.clone()]))
            .unwrap();
        let read = one_op(&mut e);
        // A device may answer a resource read with more than asked; what it sent goes on.
        let content = Content {
            values: vec![
                (temp, ResourceValue::Float(x)),
                (
                    Lwm2mPath::resource(3303, 0, 5701),
                    ResourceValue::String("Cel".into()),
                ),
            ],
        };
        e.handle_event(t0, &sent(&read));
        e.handle_event(
            t0,
            &answer(&read, Ok(DeviceReply::Content(content.clone()))),
        );
        assert_eq!(
            child(&e, &id, &dev),
            (ChildState::Failed, Some("rejected:badPayload".into())),
            "{x}"
        );
        let (_, reason) = e.child_state(&id, &dev).unwrap();
        assert!(
            matches!(reason, Some(FailureReason::Rejected(DeviceError::BadPayload(why))) if why.contains("/3303/0/5700")),
            "{reason:?}"
        );
        let update = e.poll_twin_update().expect("the values read");
        assert_eq!(update.content.values.len(), 2);
        assert!(
            matches!(update.content.get(&temp), Some(ResourceValue::Float(y)) if y.to_bits() == x.to_bits())
        );
        assert_eq!(update.content.values[1], content.values[1]);
        e.validate().unwrap();
    }
}
