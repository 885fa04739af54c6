//! `job_events`: the job engine under arbitrary event orders.
//!
//! The bytes pick a job (type, targets, limits, retry and abort rules), then a script of
//! events in any order: answers (right or wrong shape, errors) to outstanding or already
//! answered operations, time-outs, registrations, de-registrations, expiries, firmware
//! notifications with any State / Update Result, time jumps, cancels and a second job on
//! the same devices. After every event the engine must be consistent (`validate`), no
//! record may leave a terminal status, and at the end, with time run forward past the
//! maximum execution time, every job must have ended.

use crate::Timestamp;
use crate::job::{
    AbortRule, CancelMode, EngineConfig, JobEngine, JobId, JobSpec, JobStatus, JobType, RetryRule,
};
use crate::lwm2m::{Content, Lwm2mPath, ResourceValue};
use crate::transport::{
    DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, RegistrationInfo,
};
use crate::twin::DeviceId;
use std::time::{Duration, Instant};

fn registration(d: &DeviceId) -> RegistrationInfo {
    RegistrationInfo {
        endpoint: d.to_string(),
        registration_id: "r".into(),
        lifetime: 60,
        lwm2m_version: "1.1".into(),
        binding: "U".into(),
        queue_mode: false,
        objects: Vec::new(),
        address: None,
        psk_identity: None,
    }
}

fn job_type(b: u8) -> JobType {
    match b % 6 {
        0 => JobType::FirmwareUpdate {
            package_uri: "coap://fw/2.0".into(),
            expected_version: (b & 0x80 != 0).then(|| "2.0".to_owned()),
        },
        1 => JobType::Reboot {
            wait_for_registration: b & 0x80 != 0,
        },
        2 => JobType::FactoryReset {
            wait_for_registration: b & 0x80 != 0,
        },
        3 => JobType::ConfigurationUpdate {
            name: "n".into(),
            value: "v".into(),
        },
        4 => JobType::ReadDeviceProperties {
            paths: vec![Lwm2mPath::resource(3, 0, 9), Lwm2mPath::resource(3, 0, 3)],
        },
        _ => JobType::WriteDeviceProperties {
            values: vec![(
                Lwm2mPath::resource(3, 0, 15),
                ResourceValue::String("x".into()),
            )],
        },
    }
}

fn firmware_content(b: u8) -> Content {
    Content {
        values: vec![
            (
                Lwm2mPath::resource(5, 0, 3),
                ResourceValue::Integer((b % 4) as i64),
            ),
            (
                Lwm2mPath::resource(5, 0, 5),
                ResourceValue::Integer((b / 4 % 12) as i64),
            ),
        ],
    }
}

fn reply_for(op: &DeviceOp, b: u8) -> DeviceReply {
    match &op.request {
        DeviceRequest::Read { path } | DeviceRequest::Observe { path } => {
            if b & 0x40 != 0 {
                return DeviceReply::Done; // wrong shape
            }
            if path.object_id() == Some(5) {
                DeviceReply::Content(firmware_content(b))
            } else {
                let v = if b & 1 == 0 { "2.0" } else { "1.0" };
                DeviceReply::Content(Content::single(*path, ResourceValue::String(v.into())))
            }
        }
        _ => DeviceReply::Done,
    }
}

fn error_for(b: u8) -> DeviceError {
    match b % 6 {
        0 => DeviceError::NotRegistered,
        1 => DeviceError::MethodNotAllowed,
        2 => DeviceError::NotFound,
        3 => DeviceError::Code(5, 0),
        4 => DeviceError::RegistrationEnded,
        _ => DeviceError::BadRequest,
    }
}

/// The fuzz body; see the module docs.
pub fn job_events(data: &[u8]) {
    let mut it = data.iter().copied();
    let mut next = || it.next().unwrap_or(0);
    let t0 = Instant::now();
    let mut now = t0;
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let (kind, n, limits, rules) = (next(), next() % 6 + 1, next(), next());
    let devices: Vec<DeviceId> = (0..n)
        .map(|i| DeviceId::new(&format!("d{i}")).expect("valid id"))
        .collect();
    let mut spec = JobSpec::new(
        JobId::new("j1").expect("valid id"),
        job_type(kind),
        devices.clone(),
    )
    .device_timeout(Duration::from_secs(60 + limits as u64 * 10))
    .max_execution_time(Some(Duration::from_secs(3600)));
    if limits & 1 != 0 {
        spec = spec.max_in_flight((limits >> 1) as u32 % 3 + 1);
    }
    if limits & 0x10 != 0 {
        spec = spec.max_per_minute((limits >> 5) as u32 + 1);
    }
    if rules & 1 != 0 {
        spec = spec.retry(RetryRule::new(None, (rules >> 1) as u32 % 4));
    }
    if rules & 0x10 != 0 {
        spec = spec.abort_rule(AbortRule {
            on: None,
            threshold_percent: (rules >> 5) as f64 * 12.5,
            min_finished: 1,
        });
    }
    engine.create(now, spec).expect("a valid spec");
    let mut outstanding: Vec<DeviceOp> = Vec::new();
    let mut answered: Vec<DeviceOp> = Vec::new();
    let mut terminal: Vec<Option<JobStatus>> = Vec::new();
    let mut second_job = false;

    let check = |engine: &JobEngine, terminal: &mut Vec<Option<JobStatus>>| {
        if let Err(e) = engine.validate() {
            panic!("engine inconsistent: {e}");
        }
        for (i, r) in engine.records().enumerate() {
            if terminal.len() <= i {
                terminal.resize(i + 1, None);
            }
            match terminal[i] {
                Some(s) => assert_eq!(s, r.status, "{} left a terminal status", r.job_id),
                None if r.status.is_terminal() => terminal[i] = Some(r.status),
                None => {}
            }
        }
    };

    for _ in 0..data.len() / 3 {
        while let Some(op) = engine.poll_op() {
            outstanding.push(op);
        }
        while engine.poll_twin_update().is_some() {}
        let (a, b, c) = (next(), next(), next());
        let dev = devices[b as usize % devices.len()].clone();
        match a % 10 {
            0..=2 if !outstanding.is_empty() || !answered.is_empty() => {
                // Mostly outstanding ops; sometimes replay an answered one.
                let replay = c & 0x80 != 0 && !answered.is_empty();
                let op = if replay {
                    answered[b as usize % answered.len()].clone()
                } else if !outstanding.is_empty() {
                    let op = outstanding.swap_remove(b as usize % outstanding.len());
                    answered.push(op.clone());
                    op
                } else {
                    continue;
                };
                let event = match a % 10 {
                    0 => DeviceEvent::Response {
                        op: op.id,
                        device: op.device.clone(),
                        result: Ok(reply_for(&op, c)),
                    },
                    1 => DeviceEvent::Response {
                        op: op.id,
                        device: op.device.clone(),
                        result: Err(error_for(c)),
                    },
                    _ => DeviceEvent::TimedOut {
                        op: op.id,
                        device: op.device.clone(),
                    },
                };
                engine.handle_event(now, &event);
            }
            3 => engine.handle_event(
                now,
                &DeviceEvent::Registered {
                    registration: registration(&dev),
                    device: dev,
                },
            ),
            4 => engine.handle_event(now, &DeviceEvent::Deregistered { device: dev }),
            5 => engine.handle_event(now, &DeviceEvent::Expired { device: dev }),
            6 => engine.handle_event(
                now,
                &DeviceEvent::Notification {
                    device: dev,
                    registration_id: "r1".into(),
                    path: Lwm2mPath::instance(5, 0),
                    content: firmware_content(c),
                },
            ),
            7 => {
                now += Duration::from_secs(c as u64 * (b as u64 % 8 + 1));
                engine.handle_timeout(now);
            }
            8 if c < 24 => {
                let mode = if c & 1 == 0 {
                    CancelMode::Abandon
                } else {
                    CancelMode::FinishInFlight
                };
                let id = JobId::new(if b & 1 == 0 || !second_job {
                    "j1"
                } else {
                    "j2"
                })
                .expect("valid id");
                engine.cancel(now, &id, mode).expect("the job exists");
            }
            9 if !second_job => {
                second_job = true;
                let targets = devices.iter().take(b as usize % devices.len() + 1).cloned();
                let spec = JobSpec::new(
                    JobId::new("j2").expect("valid id"),
                    job_type(c),
                    targets.collect(),
                );
                engine.create(now, spec).expect("a valid spec");
            }
            _ => {
                if let Some(t) = engine.poll_timeout() {
                    now = now.max(t);
                    engine.handle_timeout(now);
                }
            }
        }
        check(&engine, &mut terminal);
    }
    // Run time forward: every job must end by its maximum execution time.
    for _ in 0..10_000 {
        while engine.poll_op().is_some() {}
        match engine.poll_timeout() {
            Some(t) => {
                now = now.max(t);
                engine.handle_timeout(now);
            }
            None => break,
        }
    }
    check(&engine, &mut terminal);
    for r in engine.records() {
        if r.parent_job_id.is_empty() {
            assert!(
                r.status.is_terminal(),
                "job {} never ended: {r:?}",
                r.job_id
            );
        }
    }
}
