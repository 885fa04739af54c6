//! Driving a [`JobEngine`] by hand, for the job tests that play the transport: the test
//! hands the engine device events and answers the operations it polls.
//! Shared by the `job_*` and review test files (each is its own crate; each uses a part).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Instant;
use twinhub::job::{ChildState, EngineConfig, JobEngine, JobId, JobRow, JobSpec, JobType};
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, RegistrationInfo};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue, Timestamp};

/// The objects a device announces in [`registered`]: Server, Device, Firmware Update and
/// the preview's Config.
pub fn all_objects() -> Vec<Lwm2mPath> {
    vec![
        Lwm2mPath::instance(1, 0),
        Lwm2mPath::instance(3, 0),
        Lwm2mPath::instance(5, 0),
        Lwm2mPath::instance(10241, 0),
    ]
}

/// `device` registered (LwM2M 1.1, UDP) announcing `objects`.
pub fn registered_with(device: &DeviceId, objects: &[Lwm2mPath]) -> DeviceEvent {
    registration(device, "0123456789abcdef", objects)
}

/// `device` registered under `registration_id`, announcing [`all_objects`].
pub fn registered_under(device: &DeviceId, registration_id: &str) -> DeviceEvent {
    registration(device, registration_id, &all_objects())
}

fn registration(device: &DeviceId, registration_id: &str, objects: &[Lwm2mPath]) -> DeviceEvent {
    DeviceEvent::Registered {
        device: device.clone(),
        registration: RegistrationInfo {
            endpoint: device.to_string(),
            registration_id: registration_id.into(),
            lifetime: 300,
            lwm2m_version: "1.1".into(),
            binding: "U".into(),
            queue_mode: false,
            objects: objects.to_vec(),
            address: None,
            psk_identity: None,
        },
    }
}

/// `device` registered announcing [`all_objects`].
pub fn registered(device: &DeviceId) -> DeviceEvent {
    registered_with(device, &all_objects())
}

/// Firmware Update `/5/0` with State `state` and Update Result `result`.
pub fn fw_state(state: i64, result: i64) -> Content {
    Content {
        values: vec![
            (Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(state)),
            (Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(result)),
        ],
    }
}

/// The device answers `op` with `reply`.
pub fn answer(engine: &mut JobEngine, now: Instant, op: &DeviceOp, reply: DeviceReply) {
    engine.handle_event(
        now,
        &DeviceEvent::Response {
            op: op.id,
            device: op.device.clone(),
            result: Ok(reply),
        },
    );
}

/// `op` got no answer in time.
pub fn timed_out(engine: &mut JobEngine, now: Instant, op: &DeviceOp) {
    engine.handle_event(
        now,
        &DeviceEvent::TimedOut {
            op: op.id,
            device: op.device.clone(),
        },
    );
}

/// `device` notifies `content` for its `/5/0` observation.
pub fn notify_firmware(engine: &mut JobEngine, now: Instant, device: &DeviceId, content: Content) {
    engine.handle_event(
        now,
        &DeviceEvent::Notification {
            device: device.clone(),
            registration_id: "r1".into(),
            path: Lwm2mPath::instance(5, 0),
            content,
        },
    );
}

/// Every operation the engine has to send now.
pub fn drain(engine: &mut JobEngine) -> Vec<DeviceOp> {
    std::iter::from_fn(|| engine.poll_op()).collect()
}

/// The only operation the engine has to send now.
pub fn one_op(engine: &mut JobEngine) -> DeviceOp {
    let ops = drain(engine);
    assert_eq!(ops.len(), 1, "{ops:?}");
    ops.into_iter().next().unwrap()
}

/// Whether `op` writes `path`.
pub fn is_write_of(op: &DeviceOp, path: Lwm2mPath) -> bool {
    matches!(&op.request, DeviceRequest::Write { path: p, .. } if *p == path)
}

/// An engine configuration whose transport reports when a request leaves
/// (`DeviceEvent::Sent`).
pub fn reports_sent() -> EngineConfig {
    EngineConfig {
        transport_reports_sent: true,
        ..EngineConfig::default()
    }
}

/// An engine with one registered device `d` and one job `j` of `job` on it.
pub fn one_child(config: EngineConfig, job: JobType) -> (JobEngine, Instant, DeviceId, JobId) {
    one_child_with(config, job, false)
}

/// As [`one_child`], the engine journalling from its start (the job's creation is in
/// its journal).
pub fn one_child_journalled(
    config: EngineConfig,
    job: JobType,
) -> (JobEngine, Instant, DeviceId, JobId) {
    one_child_with(config, job, true)
}

fn one_child_with(
    config: EngineConfig,
    job: JobType,
    journal: bool,
) -> (JobEngine, Instant, DeviceId, JobId) {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(config, t0, Timestamp::from_millis(0));
    if journal {
        engine.enable_journal();
    }
    let dev = DeviceId::new("d").unwrap();
    engine.handle_event(t0, &registered(&dev));
    let id = JobId::new("j").unwrap();
    engine
        .create(t0, JobSpec::new(id.clone(), job, vec![dev.clone()]))
        .unwrap();
    (engine, t0, dev, id)
}

/// A Reboot job, waiting for the registration after it or not.
pub fn reboot(wait_for_registration: bool) -> JobType {
    JobType::Reboot {
        wait_for_registration,
    }
}

/// The transport reports that `op` left.
pub fn sent(engine: &mut JobEngine, now: Instant, op: &DeviceOp) {
    engine.handle_event(
        now,
        &DeviceEvent::Sent {
            op: op.id,
            device: op.device.clone(),
        },
    );
}

/// The state of `dev`'s child of job `id`, with its failure reason's code.
pub fn state(engine: &JobEngine, id: &JobId, dev: &DeviceId) -> (ChildState, Option<String>) {
    let (state, reason) = engine.child_state(id, dev).unwrap();
    (state, reason.map(|r| r.code()))
}

/// The Execute of Firmware Update's Update `/5/0/2`.
pub fn update_execute() -> DeviceRequest {
    DeviceRequest::Execute {
        path: Lwm2mPath::resource(5, 0, 2),
        args: None,
    }
}

/// A firmware job over `d` (reports `Sent`) driven to its Execute of Update, which is
/// handed to the transport (not sent yet); the Observe, the Write and the download went
/// as planned.
pub fn firmware_at_execute() -> (JobEngine, Instant, DeviceId, JobId, DeviceOp) {
    let job = JobType::FirmwareUpdate {
        package_uri: "coap://x/2.0".into(),
        expected_version: Some("2.0".into()),
    };
    let (mut engine, t0, dev, id) = one_child(reports_sent(), job);
    let write = observe_idle_and_write_sent(&mut engine, t0);
    assert!(is_write_of(&write, Lwm2mPath::resource(5, 0, 1)));
    notify_firmware(&mut engine, t0, &dev, fw_state(2, 0));
    let execute = one_op(&mut engine);
    assert_eq!(execute.request, update_execute());
    (engine, t0, dev, id, execute)
}

/// A firmware job's first steps as planned: the Observe of `/5/0` answered Idle, then the
/// Write of the Package URI answered Done (each the only operation to send).
pub fn observe_idle_and_write(engine: &mut JobEngine, now: Instant) {
    let observe = one_op(engine);
    answer(engine, now, &observe, DeviceReply::Content(fw_state(0, 0)));
    let write = one_op(engine);
    answer(engine, now, &write, DeviceReply::Done);
}

/// As [`observe_idle_and_write`] over a transport that reports `Sent`: the Observe of
/// `/5/0` and the Write of the Package URI each leave (`Sent`) before their answers
/// (Idle, Done). Returns the Write.
pub fn observe_idle_and_write_sent(engine: &mut JobEngine, now: Instant) -> DeviceOp {
    let observe = one_op(engine);
    sent(engine, now, &observe);
    answer(engine, now, &observe, DeviceReply::Content(fw_state(0, 0)));
    let write = one_op(engine);
    sent(engine, now, &write);
    answer(engine, now, &write, DeviceReply::Done);
    write
}

/// What a store would hold of a journalling engine's rows: the newest row per key, minus
/// the dropped ones.
#[derive(Default)]
pub struct Rows {
    /// Parent rows by key.
    pub parents: BTreeMap<u32, Vec<u8>>,
    /// Child rows by key.
    pub children: BTreeMap<u32, Vec<u8>>,
}

impl Rows {
    /// Takes in `rows` (from [`JobEngine::take_journal`]) as a store would.
    pub fn apply(&mut self, rows: Vec<JobRow>) {
        for r in rows {
            match r {
                JobRow::Parent(p, b) => {
                    self.parents.insert(p, b);
                }
                JobRow::Child(c, b) => {
                    self.children.insert(c, b);
                }
                JobRow::DropBefore { parents, children } => {
                    self.parents = self.parents.split_off(&parents);
                    self.children = self.children.split_off(&children);
                }
            }
        }
    }

    /// An engine restored from the rows with the default configuration (checked
    /// consistent).
    pub fn restore(&self, now: Instant) -> JobEngine {
        self.restore_with(now, EngineConfig::default())
    }

    /// An engine restored from the rows with `config` (checked consistent).
    pub fn restore_with(&self, now: Instant, config: EngineConfig) -> JobEngine {
        let e = JobEngine::restore(
            config,
            now,
            Timestamp::now(),
            self.parents.clone(),
            self.children.clone(),
        )
        .expect("the rows restore");
        e.validate().expect("a restored engine is consistent");
        e
    }
}

/// Answers every operation the engine has to send now with Done.
pub fn answer_all(engine: &mut JobEngine, now: Instant) {
    for op in drain(engine) {
        answer(engine, now, &op, DeviceReply::Done);
    }
}

/// A Reboot job `id` (no wait for the registration) over `n` devices of its own,
/// `{id}-d0` to `{id}-d{n-1}` (no device is shared between jobs).
pub fn reboot_over_own_devices(id: &str, n: usize) -> JobSpec {
    let targets = (0..n)
        .map(|i| DeviceId::new(&format!("{id}-d{i}")).unwrap())
        .collect();
    JobSpec::new(JobId::new(id).unwrap(), reboot(false), targets)
}

/// The parent and child rows of the engine's journal, the newest per key (drops
/// ignored).
pub fn journal_maps(engine: &mut JobEngine) -> (BTreeMap<u32, Vec<u8>>, BTreeMap<u32, Vec<u8>>) {
    let mut parents = BTreeMap::new();
    let mut children = BTreeMap::new();
    for row in engine.take_journal() {
        match row {
            JobRow::Parent(p, b) => parents.insert(p, b),
            JobRow::Child(c, b) => children.insert(c, b),
            JobRow::DropBefore { .. } => None,
        };
    }
    (parents, children)
}

/// Every parent and child row of the engine's journal, in order (drops ignored).
#[allow(clippy::type_complexity)]
pub fn journal_lists(engine: &mut JobEngine) -> (Vec<(u32, Vec<u8>)>, Vec<(u32, Vec<u8>)>) {
    let (mut parents, mut children) = (Vec::new(), Vec::new());
    for row in engine.take_journal() {
        match row {
            JobRow::Parent(p, b) => parents.push((p, b)),
            JobRow::Child(c, b) => children.push((c, b)),
            JobRow::DropBefore { .. } => {}
        }
    }
    (parents, children)
}
