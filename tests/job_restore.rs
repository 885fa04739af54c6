//! Jobs across a restart: the engine's journal rows restore an engine that resumes each
//! job type as its rules say (never a second reboot Execute, a firmware update that
//! re-synchronises from the device's state, idempotent writes sent again), and a whole
//! fleet's jobs finish after crashes at many points.

#![cfg(feature = "memory-fleet")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use twinhub::job::{
    ChildState, EngineConfig, JobEngine, JobId, JobSpec, JobStatus, JobType, RetryRule,
};
use twinhub::transport::memory::{DeviceSpec, MemoryConfig, MemoryTransport};
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, Transport};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue, Timestamp};

mod job_support;
use job_support::{Rows, answer, drain as ops, reboot, registered_under};

/// `device` registered under the id `r1`.
fn registered(device: &DeviceId) -> DeviceEvent {
    registered_under(device, "r1")
}

fn engine(now: Instant) -> JobEngine {
    let mut e = JobEngine::new(EngineConfig::default(), now, Timestamp::now());
    e.enable_journal();
    e
}

fn one_job(kind: JobType) -> (JobEngine, Rows, JobId, DeviceId, Instant) {
    let t0 = Instant::now();
    let mut e = engine(t0);
    let dev = DeviceId::new("d1").unwrap();
    let job = JobId::new("j").unwrap();
    e.create(t0, JobSpec::new(job.clone(), kind, vec![dev.clone()]))
        .unwrap();
    let mut rows = Rows::default();
    rows.apply(e.take_journal());
    (e, rows, job, dev, t0)
}

#[test]
fn a_reboot_whose_execute_was_sent_is_not_executed_again_after_a_restart() {
    let (mut e, mut rows, job, dev, t0) = one_job(reboot(false));
    let sent = ops(&mut e);
    assert!(matches!(
        sent[..],
        [DeviceOp {
            request: DeviceRequest::Execute { .. },
            ..
        }]
    ));
    rows.apply(e.take_journal());
    drop(e); // the crash: the Execute's answer never arrives

    let later = t0 + Duration::from_secs(5);
    let mut e = rows.restore(later);
    assert!(
        ops(&mut e).is_empty(),
        "nothing is sent before the device is back"
    );
    assert_eq!(
        e.child_state(&job, &dev).map(|(s, _)| s),
        Some(ChildState::InProgress),
        "the reboot waits for its registration"
    );
    e.handle_event(later, &registered(&dev));
    assert!(ops(&mut e).is_empty(), "a second Execute was sent");
    assert_eq!(e.job(&job).unwrap().status, JobStatus::Completed);
    e.validate().unwrap();
}

#[test]
fn a_reboot_with_no_registration_after_a_restart_times_out_without_a_second_execute() {
    let (mut e, mut rows, job, _dev, t0) = one_job(JobType::FactoryReset {
        wait_for_registration: true,
    });
    assert_eq!(ops(&mut e).len(), 1);
    rows.apply(e.take_journal());
    let mut e = rows.restore(t0);
    let late = t0 + EngineConfig::default().reboot_wait + Duration::from_secs(1);
    e.handle_timeout(late);
    assert!(ops(&mut e).is_empty());
    let record = e.job(&job).unwrap();
    assert_eq!(record.status, JobStatus::Failed, "{record:?}");
}

#[test]
fn a_reboot_not_yet_sent_at_the_crash_is_sent_once_the_device_is_back() {
    let t0 = Instant::now();
    let mut e = engine(t0);
    let dev = DeviceId::new("d1").unwrap();
    let job = JobId::new("j").unwrap();
    // Scheduled an hour ahead: nothing sent before the crash.
    let spec = JobSpec::new(job.clone(), reboot(false), vec![dev.clone()])
        .start_at(Timestamp::now().saturating_add(Duration::from_secs(3600)));
    e.create(t0, spec).unwrap();
    let mut rows = Rows::default();
    rows.apply(e.take_journal());
    let mut e = rows.restore(t0);
    assert_eq!(e.job(&job).unwrap().status, JobStatus::Enqueued);
    assert!(ops(&mut e).is_empty());
    let start = t0 + Duration::from_secs(3601);
    e.handle_timeout(start);
    let sent = ops(&mut e);
    assert!(matches!(
        sent[..],
        [DeviceOp {
            request: DeviceRequest::Execute { .. },
            ..
        }]
    ));
    answer(&mut e, start, &sent[0], DeviceReply::Done);
    assert_eq!(e.job(&job).unwrap().status, JobStatus::Completed);
}

#[test]
fn a_firmware_update_resynchronises_from_the_device_state_after_a_restart() {
    let (mut e, mut rows, job, dev, t0) = one_job(JobType::FirmwareUpdate {
        package_uri: "coap://fw/2.0".into(),
        expected_version: Some("2.0".into()),
    });
    let now = t0 + Duration::from_secs(1);
    let observe = ops(&mut e).remove(0);
    let state = |s: i64, r: i64| {
        DeviceReply::Content(Content {
            values: vec![
                (Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(s)),
                (Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(r)),
            ],
        })
    };
    answer(&mut e, now, &observe, state(0, 0));
    let write = ops(&mut e).remove(0);
    assert!(matches!(write.request, DeviceRequest::Write { .. }));
    answer(&mut e, now, &write, DeviceReply::Done);
    rows.apply(e.take_journal());
    drop(e); // crash while the device downloads

    let mut e = rows.restore(now);
    e.handle_event(now, &registered(&dev));
    let sent = ops(&mut e);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        matches!(sent[0].request, DeviceRequest::Observe { path } | DeviceRequest::Read { path } if path == Lwm2mPath::instance(5, 0)),
        "the first step after the restart reads the device's state, not a blind write: {sent:?}"
    );
    // The device kept its download: Downloaded (2) -> the engine executes Update.
    answer(&mut e, now, &sent[0], state(2, 0));
    let exec = ops(&mut e);
    assert!(
        matches!(exec[..], [DeviceOp { request: DeviceRequest::Execute { path, .. }, .. }] if path == Lwm2mPath::resource(5, 0, 2)),
        "{exec:?}"
    );
    rows.apply(e.take_journal());
    drop(e); // crash again, after Update was sent

    let mut e = rows.restore(now);
    e.handle_event(now, &registered(&dev));
    let sync = ops(&mut e);
    assert!(
        !sync.iter().any(|op| matches!(
            op.request,
            DeviceRequest::Execute { .. } | DeviceRequest::Write { .. }
        )),
        "nothing is executed or written blindly after an Update: {sync:?}"
    );
    answer(&mut e, now, &sync[0], state(0, 1));
    let verify = ops(&mut e);
    assert!(
        matches!(verify[..], [DeviceOp { request: DeviceRequest::Read { path }, .. }] if path == Lwm2mPath::resource(3, 0, 3)),
        "{verify:?}"
    );
    answer(
        &mut e,
        now,
        &verify[0],
        DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 3),
            ResourceValue::String("2.0".into()),
        )),
    );
    assert_eq!(e.job(&job).unwrap().status, JobStatus::Completed);
    e.validate().unwrap();
}

#[test]
fn a_property_write_is_sent_again_from_the_first_path_after_a_restart() {
    let values = vec![
        (
            Lwm2mPath::resource(3, 0, 14),
            ResourceValue::String("+01".into()),
        ),
        (
            Lwm2mPath::resource(3, 0, 15),
            ResourceValue::String("Europe/Paris".into()),
        ),
    ];
    let (mut e, mut rows, job, dev, t0) = one_job(JobType::WriteDeviceProperties {
        values: values.clone(),
    });
    let first = ops(&mut e).remove(0);
    answer(&mut e, t0, &first, DeviceReply::Done);
    let second = ops(&mut e).remove(0);
    assert!(matches!(second.request, DeviceRequest::Write { path, .. } if path == values[1].0));
    rows.apply(e.take_journal());

    let mut e = rows.restore(t0);
    e.handle_event(t0, &registered(&dev));
    let again = ops(&mut e);
    assert!(
        matches!(again[..], [DeviceOp { request: DeviceRequest::Write { path, .. }, .. }] if path == values[0].0),
        "{again:?}"
    );
    answer(&mut e, t0, &again[0], DeviceReply::Done);
    let next = ops(&mut e).remove(0);
    answer(&mut e, t0, &next, DeviceReply::Done);
    assert_eq!(e.job(&job).unwrap().status, JobStatus::Completed);
}

/// A graceful cancel survives restarts: the child that was in progress waits for its
/// device's next registration (through a second restart too), then finishes, and only
/// then does the job end `cancelled` (tests/job_history_review.rs has the first half).
#[test]
fn a_child_in_progress_under_a_graceful_cancel_finishes_after_restarts() {
    use twinhub::job::CancelMode;
    let path = Lwm2mPath::resource(3, 0, 0);
    let (mut e, mut rows, job, dev, t0) =
        one_job(JobType::ReadDeviceProperties { paths: vec![path] });
    assert_eq!(ops(&mut e).len(), 1);
    e.cancel(t0, &job, CancelMode::FinishInFlight).unwrap();
    rows.apply(e.take_journal());
    for _ in 0..2 {
        let mut e = rows.restore(t0);
        assert_eq!(
            e.child_state(&job, &dev).map(|(s, _)| s),
            Some(ChildState::WaitingForDevice)
        );
        assert_eq!(e.job(&job).unwrap().status, JobStatus::Running);
        rows.apply(e.take_journal());
    }
    let mut e = rows.restore(t0);
    e.handle_event(t0, &registered(&dev));
    let again = ops(&mut e);
    assert!(
        matches!(again[..], [DeviceOp { request: DeviceRequest::Read { path: p }, .. }] if p == path),
        "{again:?}"
    );
    let content = Content::single(path, ResourceValue::String("acme".into()));
    answer(&mut e, t0, &again[0], DeviceReply::Content(content));
    assert_eq!(
        e.child_state(&job, &dev).map(|(s, _)| s),
        Some(ChildState::Succeeded)
    );
    assert_eq!(e.job(&job).unwrap().status, JobStatus::Cancelled);
    e.validate().unwrap();
}

#[test]
fn finished_jobs_and_their_history_come_back_unchanged() {
    let (mut e, mut rows, job, _dev, t0) = one_job(reboot(false));
    let exec = ops(&mut e).remove(0);
    e.handle_event(
        t0,
        &DeviceEvent::Response {
            op: exec.id,
            device: exec.device.clone(),
            result: Err(twinhub::transport::DeviceError::NotFound),
        },
    );
    let before: Vec<_> = e.records().collect();
    assert_eq!(e.job(&job).unwrap().status, JobStatus::Failed);
    rows.apply(e.take_journal());
    let e = rows.restore(t0 + Duration::from_secs(60));
    let after: Vec<_> = e.records().collect();
    assert_eq!(before, after);
    assert!(
        e.journal_is_empty(),
        "restoring a finished job changes nothing"
    );
}

#[test]
fn rows_that_do_not_fit_are_typed_errors() {
    let (mut e, mut rows, _job, _dev, _t0) = one_job(reboot(false));
    rows.apply(e.take_journal());
    let restore = |parents: BTreeMap<u32, Vec<u8>>, children: BTreeMap<u32, Vec<u8>>| {
        JobEngine::restore(
            EngineConfig::default(),
            Instant::now(),
            Timestamp::now(),
            parents,
            children,
        )
    };
    // A child no parent holds.
    let err = restore(BTreeMap::new(), rows.children.clone()).unwrap_err();
    assert_eq!(err.table, "job_children");
    // A truncated child row.
    let mut children = rows.children.clone();
    children.get_mut(&0).unwrap().truncate(10);
    let err = restore(rows.parents.clone(), children).unwrap_err();
    assert!(err.detail.contains("shorter"), "{err}");
    // A parent row that is not JSON.
    let mut parents = rows.parents.clone();
    parents.insert(0, b"{not json".to_vec());
    assert_eq!(
        restore(parents, rows.children.clone()).unwrap_err().table,
        "job_parents"
    );
}

/// A fleet of 24 devices runs a firmware update, a configuration update and a read with a
/// retry rule; the engine "crashes" every `every` inputs (rows restored, transport kept:
/// the devices keep their state, as real devices would), and every job still finishes with
/// every child succeeded.
#[test]
fn a_fleet_finishes_its_jobs_across_many_crashes() {
    // (A crash every few inputs starves the fleet: each restart sends every child in
    // progress back to its step's start, so progress needs a few inputs per child.)
    for every in [30usize, 60, 120] {
        let t0 = Instant::now();
        let mut fleet = MemoryTransport::new(MemoryConfig::with_seed(every as u64));
        let ids: Vec<DeviceId> = (0..24)
            .map(|i| DeviceId::new(&format!("dev-{i}")).unwrap())
            .collect();
        for id in &ids {
            fleet.add_device(t0, DeviceSpec::new(id.clone())).unwrap();
        }
        let mut e = engine(t0);
        let mut rows = Rows::default();
        let jobs = [
            (
                "fw",
                JobType::FirmwareUpdate {
                    package_uri: "coap://fw.example/2.0.bin".into(),
                    expected_version: None,
                },
            ),
            (
                "cfg",
                JobType::ConfigurationUpdate {
                    name: "mode".into(),
                    value: "eco".into(),
                },
            ),
            ("read", JobType::read_properties(&["BatteryLevel"]).unwrap()),
        ];
        for (id, kind) in jobs.iter().cloned() {
            let spec = JobSpec::new(JobId::new(id).unwrap(), kind, ids.clone())
                .max_in_flight(5)
                .retry(RetryRule::new(None, 3));
            e.create(t0, spec).unwrap();
        }
        rows.apply(e.take_journal());
        let mut now = t0;
        let mut inputs = 0usize;
        let mut crashes = 0;
        let done = |e: &JobEngine| {
            jobs.iter().all(|(id, _)| {
                e.job(&JobId::new(id).unwrap())
                    .unwrap()
                    .status
                    .is_terminal()
            })
        };
        for _ in 0..200_000 {
            if done(&e) {
                break;
            }
            while let Some(op) = e.poll_op() {
                fleet.submit(now, op);
            }
            while let Some(ev) = fleet.poll_event() {
                e.handle_event(now, &ev);
                inputs += 1;
                if inputs.is_multiple_of(every) {
                    rows.apply(e.take_journal());
                    crashes += 1;
                    // A restarted hub has a new transport, whose answers never match
                    // the old one's operations; this fleet outlives the engine, so the
                    // restarted engine numbers its operations apart.
                    let config = EngineConfig {
                        op_id_base: twinhub::job::JOB_OP_ID_BASE + ((crashes as u64) << 40),
                        ..EngineConfig::default()
                    };
                    e = rows.restore_with(now, config);
                    // The restarted hub hears from each device again (its next update
                    // is answered "not registered", and it registers).
                    for id in &ids {
                        e.handle_event(now, &registered(id));
                    }
                } else {
                    rows.apply(e.take_journal());
                }
            }
            while let Some(op) = e.poll_op() {
                fleet.submit(now, op);
            }
            let next = [fleet.poll_timeout(), e.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { break };
            now = next.max(now);
            fleet.handle_timeout(now);
            e.handle_timeout(now);
        }
        assert!(crashes >= 3, "every {every}: only {crashes} crashes");
        for (id, _) in &jobs {
            let r = e.job(&JobId::new(id).unwrap()).unwrap();
            assert_eq!(
                r.status,
                JobStatus::Completed,
                "every {every}, {crashes} crashes: job {id}: {}",
                r.status_message
            );
        }
        e.validate().unwrap();
    }
}
