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
        let rebuilt = JobEngine::restore_after(
            e,
            now,
            wall,
            self.parents.clone(),
            self.children.clone(),
        )
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
    let dev = DeviceId::new("d").unwrap();
    e.handle_event(t0, &registered(&dev));
    let id = JobId::new("j").unwrap();
    e.create(t0, JobSpec::new(id.clone(), job, vec![dev.clone()]))
        .unwrap();
    (e, dev, id)
}

fn answer(op: &DeviceOp, result: Result<DeviceReply, DeviceError>) -> DeviceEvent {
    DeviceEvent::Response {
        op: op.id,
        device: op.device.clone(),
        result,
    }
}

fn one_op(e: &mut JobEngine) -> DeviceOp {
    let ops: Vec<DeviceOp> = std::iter::from_fn(|| e.poll_op()).collect();
    assert_eq!(ops.len(), 1, "{ops:?}");
    ops.into_iter().next().unwrap()
}

fn child(e: &JobEngine, id: &JobId, dev: &DeviceId) -> (ChildState, Option<String>) {
    let (state, reason) = e.child_state(id, dev).unwrap();
    (state, reason.map(FailureReason::code))
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
