//! A hub over a scripted transport, for the hub tests that drive device events by hand:
//! the test pushes the events the hub will read and looks at the operations it sent.
//! Shared by the `hub_*` test files (each is its own crate; each uses a part).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::store::{SharedStore, Store, StoreConfig};
use twinhub::transport::{
    DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, RegistrationInfo, Transport,
};
use twinhub::twin::{ConnectionState, Twin};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

/// What the transport hands the hub next, and what the hub sent.
#[derive(Default)]
pub struct Script {
    /// Device events, read by the hub in order.
    pub events: VecDeque<DeviceEvent>,
    /// Every operation the hub submitted, in order.
    pub submitted: Vec<DeviceOp>,
    /// Every operation is answered at once with `NotRegistered` (the device went away).
    pub away: bool,
    /// The transport says it reports [`DeviceEvent::Sent`] (read once, as the hub
    /// starts): the test pushes each `Sent` itself.
    pub reports_sent: bool,
}

/// The transport over a shared [`Script`].
pub struct Scripted(pub Arc<Mutex<Script>>);

impl Transport for Scripted {
    fn submit(&mut self, _: Instant, op: DeviceOp) {
        let mut s = self.0.lock().unwrap();
        if s.away {
            s.events.push_back(DeviceEvent::Response {
                op: op.id,
                device: op.device.clone(),
                result: Err(DeviceError::NotRegistered),
            });
        }
        s.submitted.push(op);
    }
    fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.0.lock().unwrap().events.pop_front()
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn reports_sent(&self) -> bool {
        self.0.lock().unwrap().reports_sent
    }
}

/// Queues `event` for the hub.
pub fn push(script: &Mutex<Script>, event: DeviceEvent) {
    script.lock().unwrap().events.push_back(event);
}

/// `device` registers speaking LWM2M `version`, with `/3/0`, `/1/0` and `/10241/0`.
pub fn registered_v(device: &DeviceId, version: &str) -> DeviceEvent {
    DeviceEvent::Registered {
        device: device.clone(),
        registration: RegistrationInfo {
            endpoint: device.as_str().into(),
            registration_id: "r1".into(),
            lifetime: 300,
            lwm2m_version: version.into(),
            binding: "U".into(),
            queue_mode: false,
            objects: vec![
                Lwm2mPath::instance(3, 0),
                Lwm2mPath::instance(1, 0),
                Lwm2mPath::instance(10241, 0),
            ],
            address: None,
            psk_identity: None,
        },
    }
}

/// Polls a future to completion on this thread, parking between wake-ups (a waker that
/// unparks it: any executor would do); fails the test after 30 s.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "the future never completed");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Polls `cond` every 5 ms; fails the test after 90 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `cond` every 5 ms until it holds (true) or 30 s passed (false): for an outcome a
/// slow hub thread may not have reached yet, which the caller then asserts with its own
/// message (a wrong outcome that never changes costs the 30 s).
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A store in a fresh directory whose registry holds `devices`, and `config` writing to
/// it.
pub fn durable_store(
    devices: &[&DeviceId],
    config: HubConfig,
) -> (SharedStore, Registry, HubConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    for device in devices {
        registry.create(Twin::new((*device).clone())).unwrap();
    }
    let store = SharedStore::new(store);
    let config = HubConfig {
        store: Some(store.clone()),
        ..config
    };
    (store, registry, config, dir)
}

/// A hub over [`durable_store`] whose devices are scripted.
pub fn durable_hub(
    devices: &[&DeviceId],
    config: HubConfig,
) -> (Hub, SharedStore, Arc<Mutex<Script>>, tempfile::TempDir) {
    let (store, registry, config, dir) = durable_store(devices, config);
    let script = Arc::new(Mutex::new(Script::default()));
    let hub = Hub::with_transport(Scripted(script.clone()), registry, config);
    (hub, store, script, dir)
}

/// `device` reports its battery level (`/3/0/9`).
pub fn battery_level(device: &DeviceId, level: i64) -> DeviceEvent {
    let battery = Lwm2mPath::resource(3, 0, 9);
    DeviceEvent::Notification {
        device: device.clone(),
        registration_id: "r1".into(),
        path: battery,
        content: Content::single(battery, ResourceValue::Integer(level)),
    }
}

/// `device` answers `op`: done.
pub fn answer_done(script: &Mutex<Script>, device: &DeviceId, op: &DeviceOp) {
    push(
        script,
        DeviceEvent::Response {
            op: op.id,
            device: device.clone(),
            result: Ok(DeviceReply::Done),
        },
    );
}

/// Waits until everything the hub applied is durable. (The store's lock is released
/// before the registry's is taken: the hub takes the registry's first.)
pub fn wait_committed(hub: &Hub, store: &SharedStore, what: &str) {
    wait_until(what, || {
        let c = store.lock().committed_seq();
        c == hub.registry().read().last_seq()
    });
}

/// `device` registers (LWM2M 1.0) and its twin says so.
pub fn register(hub: &Hub, script: &Mutex<Script>, device: &DeviceId) {
    push(script, registered_v(device, "1.0"));
    wait_until("the registration", || {
        hub.twin(device.as_str()).unwrap().connection_state == ConnectionState::Connected
    });
}

/// A configuration-update job `job` over `device` (one Write, then a read-back).
pub fn start_config_job(hub: &Hub, job: &twinhub::job::JobId, device: &DeviceId) {
    use twinhub::job::{JobSpec, JobType};
    hub.create_job(JobSpec::new(
        job.clone(),
        JobType::ConfigurationUpdate {
            name: "a".into(),
            value: "1".into(),
        },
        vec![device.clone()],
    ))
    .unwrap();
}

/// The Observes and Observe-Composites the hub sent.
pub fn observes(script: &Mutex<Script>) -> Vec<DeviceOp> {
    submitted_where(script, |op| {
        matches!(
            op.request,
            DeviceRequest::Observe { .. } | DeviceRequest::ObserveComposite { .. }
        )
    })
}

/// The operations the job engine sent (numbered from its `op_id_base`).
pub fn job_ops(script: &Mutex<Script>) -> Vec<DeviceOp> {
    let base = twinhub::job::EngineConfig::default().op_id_base;
    submitted_where(script, |op| op.id.0 >= base)
}

/// The operations the hub sent that match `keep`.
pub fn submitted_where(script: &Mutex<Script>, keep: impl Fn(&DeviceOp) -> bool) -> Vec<DeviceOp> {
    let s = script.lock().unwrap();
    s.submitted.iter().filter(|op| keep(op)).cloned().collect()
}

/// `device` registers (LWM2M 1.0) with `/5/0` (firmware update) beside
/// [`registered_v`]'s objects, and its twin says so.
pub fn register_with_firmware(hub: &Hub, script: &Mutex<Script>, device: &DeviceId) {
    let mut reg = registered_v(device, "1.0");
    if let DeviceEvent::Registered { registration, .. } = &mut reg {
        registration.objects.push(Lwm2mPath::instance(5, 0));
    }
    push(script, reg);
    wait_until("the registration", || {
        hub.twin(device.as_str()).unwrap().connection_state == ConnectionState::Connected
    });
}

/// `/5/0` holding State `state` and Update Result `result`.
pub fn firmware_state(state: i64, result: i64) -> Content {
    Content {
        values: vec![
            (Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(state)),
            (Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(result)),
        ],
    }
}

/// The statistics of job `job`.
pub fn stats(hub: &Hub, job: &twinhub::job::JobId) -> twinhub::job::JobStatistics {
    hub.job_statistics(job).unwrap()
}

/// Whether `o` is an Execute.
pub fn is_exec(o: &DeviceOp) -> bool {
    matches!(o.request, DeviceRequest::Execute { .. })
}

/// A Reboot job `job` over `targets`, waiting for the registration after the reboot or
/// not.
pub fn reboot_spec(
    job: twinhub::job::JobId,
    wait_for_registration: bool,
    targets: Vec<DeviceId>,
) -> twinhub::job::JobSpec {
    twinhub::job::JobSpec::new(
        job,
        twinhub::job::JobType::Reboot {
            wait_for_registration,
        },
        targets,
    )
}

/// A reboot job `job` over `device`, waiting for the registration after the reboot or
/// not.
pub fn start_reboot_job(
    hub: &Hub,
    job: &twinhub::job::JobId,
    device: &DeviceId,
    wait_for_registration: bool,
) {
    hub.create_job(reboot_spec(
        job.clone(),
        wait_for_registration,
        vec![device.clone()],
    ))
    .unwrap();
}

/// A firmware-update job `job` over `device`, from a package URI elsewhere, no version
/// check.
pub fn start_firmware_job(hub: &Hub, job: &twinhub::job::JobId, device: &DeviceId) {
    use twinhub::job::{JobSpec, JobType};
    hub.create_job(JobSpec::new(
        job.clone(),
        JobType::FirmwareUpdate {
            package_uri: "coap://example/fw.bin".into(),
            expected_version: None,
        },
        vec![device.clone()],
    ))
    .unwrap();
}

/// Waits until the store takes commits again and every event the hub held is applied
/// and durable.
pub fn wait_held_applied(hub: &Hub, store: &SharedStore) {
    wait_until("the held events applied", || {
        hub.metrics().held_events == 0 && hub.metrics().failed_commits == 0 && {
            let c = store.lock().committed_seq();
            c == hub.registry().read().last_seq()
        }
    });
}

/// A durable hub (sync off, `reboot_wait` 700 ms) where `device` registered, running the
/// reboot job `rb` over it (success is the Execute's answer; with `retry`, one retry
/// 100 ms after a failed attempt). Returns once the job's Execute went out and is
/// durable.
#[allow(clippy::type_complexity)]
pub fn reboot_in_flight(
    device: &DeviceId,
    retry: bool,
) -> (
    Hub,
    SharedStore,
    Arc<Mutex<Script>>,
    tempfile::TempDir,
    twinhub::job::JobId,
) {
    use twinhub::job::{EngineConfig, JobId, RetryRule};
    let config = HubConfig {
        sync: None,
        jobs: EngineConfig {
            reboot_wait: Duration::from_millis(700),
            ..EngineConfig::default()
        },
        ..HubConfig::default()
    };
    let (hub, store, script, dir) = durable_hub(&[device], config);
    register(&hub, &script, device);
    let job = JobId::new("rb").unwrap();
    let mut spec = reboot_spec(job.clone(), false, vec![device.clone()]);
    if retry {
        spec = spec.retry(RetryRule {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(100),
            ..RetryRule::new(None, 1)
        });
    }
    hub.create_job(spec).unwrap();
    let is_exec = |o: &DeviceOp| matches!(o.request, DeviceRequest::Execute { .. });
    wait_until("the Execute", || job_ops(&script).iter().any(is_exec));
    wait_committed(&hub, &store, "the Execute is durable");
    std::thread::sleep(Duration::from_millis(100));
    (hub, store, script, dir, job)
}

/// A durable hub (sync off: the job observes `/5/0` itself) where `device` registered
/// with `/5/0`, running the firmware job `fw` over it ([`start_firmware_job`]).
#[allow(clippy::type_complexity)]
pub fn firmware_job_started(
    device: &DeviceId,
) -> (
    Hub,
    SharedStore,
    Arc<Mutex<Script>>,
    tempfile::TempDir,
    twinhub::job::JobId,
) {
    let config = HubConfig {
        sync: None,
        ..HubConfig::default()
    };
    let (hub, store, script, dir) = durable_hub(&[device], config);
    register_with_firmware(&hub, &script, device);
    let job = twinhub::job::JobId::new("fw").unwrap();
    start_firmware_job(&hub, &job, device);
    (hub, store, script, dir, job)
}

/// A hub behind DTLS on loopback (port 0) over the store in `dir`: opened afresh, a
/// restart when a hub ran on it before (the earlier one stopped and dropped first).
#[cfg(feature = "dtls")]
pub fn open_dtls_hub(dir: &std::path::Path) -> Hub {
    let (store, registry) = Store::open(dir, StoreConfig::default()).unwrap();
    let config = HubConfig {
        store: Some(SharedStore::new(store)),
        ..HubConfig::default()
    };
    Hub::bind_dtls("127.0.0.1:0", registry, config).unwrap()
}

/// A durable hub (sync off, `reboot_wait` 600 s: longer than any test, so the wait for
/// the reboot's registration never ends it) over a scripted transport that reports
/// `Sent`, where `device` registered and the reboot job `rb` (with
/// `wait_for_registration`) handed its Execute over; the Execute is durable, still queued
/// at the transport (its `Sent` not pushed yet). Returns it and the job's id.
#[allow(clippy::type_complexity)]
pub fn reboot_handed_over(
    device: &DeviceId,
    wait_for_registration: bool,
) -> (
    Hub,
    SharedStore,
    Arc<Mutex<Script>>,
    tempfile::TempDir,
    DeviceOp,
    twinhub::job::JobId,
) {
    use twinhub::job::{EngineConfig, JobId};
    let config = HubConfig {
        sync: None,
        jobs: EngineConfig {
            reboot_wait: Duration::from_secs(600),
            ..EngineConfig::default()
        },
        ..HubConfig::default()
    };
    let (store, registry, config, dir) = durable_store(&[device], config);
    let script = Arc::new(Mutex::new(Script {
        reports_sent: true,
        ..Script::default()
    }));
    let hub = Hub::with_transport(Scripted(script.clone()), registry, config);
    register(&hub, &script, device);
    let job = JobId::new("rb").unwrap();
    start_reboot_job(&hub, &job, device, wait_for_registration);
    let is_execute = |o: &DeviceOp| matches!(o.request, DeviceRequest::Execute { .. });
    wait_until("the Execute", || job_ops(&script).iter().any(is_execute));
    wait_committed(&hub, &store, "the Execute is durable");
    std::thread::sleep(Duration::from_millis(100));
    let execute = job_ops(&script).into_iter().find(is_execute).unwrap();
    (hub, store, script, dir, execute, job)
}
