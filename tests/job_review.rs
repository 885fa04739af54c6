//! A review of the job subsystem: spec JSON that misspells a field, retry and abort rules
//! out of range, history paging with a zero limit, Firmware Update Result 10 and 11, and
//! the recorded end time of an expired job. Each test of a fix failed before it; the
//! others (`the_well_formed_json_parses`, `rules_outside_their_documented_ranges_are_refused`)
//! show what was already right.

use std::time::{Duration, Instant};
use twinhub::job::{
    AbortRule, EngineConfig, FailureKind, FailureReason, HistoryCursor, HistoryError,
    HistoryFilter, JobEngine, JobId, JobSpec, JobStatus, JobType, RetryRule, SpecError,
};
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceReply, DeviceRequest};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue, Timestamp};

mod job_support;
use job_support::{answer, drain, journal_lists, notify_firmware, one_op, reboot, registered};

// ---- 1. unknown fields in a spec's JSON ----

/// A spec's JSON from its parts; `extra_top` goes at the end of the top-level object.
fn spec_json(extra_top: &str, job: &str, rollout: &str, abort: &str, retry: &str) -> String {
    format!(
        r#"{{
            "id": "fw",
            "job": {job},
            "targets": ["a"],
            "deviceTimeoutMs": 60000,
            "rollout": {rollout},
            "abortRules": [{abort}],
            "retries": [{retry}]{extra_top}
        }}"#
    )
}

const JOB: &str = r#"{"type": "firmwareUpdate", "packageUri": "coap://fw/2.0.bin"}"#;
const ROLLOUT: &str = r#"{"maxPerMinute": 10, "maxInFlight": 5, "ramp": {"basePerMinute": 1, "incrementFactor": 2.0, "everySucceeded": 1}}"#;
const ABORT: &str = r#"{"on": "timedOut", "thresholdPercent": 50.0, "minFinished": 10}"#;
const RETRY: &str = r#"{"on": "timedOut", "maxRetries": 3, "initialBackoffMs": 1000, "multiplier": 2.0, "maxBackoffMs": 60000}"#;

fn parse(json: &str) -> Result<JobSpec, String> {
    serde_json::from_str::<JobSpec>(json).map_err(|e| e.to_string())
}

#[test]
fn the_well_formed_json_parses() {
    let spec = parse(&spec_json("", JOB, ROLLOUT, ABORT, RETRY)).unwrap();
    assert_eq!(spec.rollout.max_in_flight, Some(5));
    assert_eq!(spec.retries[0].max_backoff, Duration::from_secs(60));
    spec.validate().unwrap();
}

#[test]
fn a_misspelt_field_anywhere_in_a_spec_is_an_error_naming_it() {
    let cases = [
        spec_json(r#", "maxConcurency": 5"#, JOB, ROLLOUT, ABORT, RETRY),
        spec_json(r#", "deviceTimeoutMS": 5"#, JOB, ROLLOUT, ABORT, RETRY),
        spec_json(
            "",
            r#"{"type": "firmwareUpdate", "packageUri": "coap://fw/2.0.bin", "expectedVerison": "2.0"}"#,
            ROLLOUT,
            ABORT,
            RETRY,
        ),
        spec_json(
            "",
            r#"{"type": "rebootDevice", "waitForRegistation": true}"#,
            ROLLOUT,
            ABORT,
            RETRY,
        ),
        spec_json(
            "",
            JOB,
            r#"{"maxPerMinute": 10, "maxConcurrent": 5}"#,
            ABORT,
            RETRY,
        ),
        spec_json(
            "",
            JOB,
            r#"{"ramp": {"basePerMinute": 1, "incrementFactor": 2.0, "everySucceeded": 1, "maxRate": 9}}"#,
            ABORT,
            RETRY,
        ),
        spec_json(
            "",
            JOB,
            ROLLOUT,
            r#"{"thresholdPercent": 50.0, "minFinished": 10, "minExecuted": 3}"#,
            RETRY,
        ),
        spec_json(
            "",
            JOB,
            ROLLOUT,
            ABORT,
            r#"{"maxRetries": 3, "initialBackoffMs": 1000, "multiplier": 2.0, "maxBackoffMs": 60000, "backoffMs": 9}"#,
        ),
    ];
    let names = [
        "maxConcurency",
        "deviceTimeoutMS",
        "expectedVerison",
        "waitForRegistation",
        "maxConcurrent",
        "maxRate",
        "minExecuted",
        "backoffMs",
    ];
    for (json, name) in cases.iter().zip(names) {
        let err = parse(json).expect_err(name);
        assert!(
            err.contains(&format!("unknown field `{name}`")),
            "{name}: {err}"
        );
    }
}

// ---- 2. rules out of range ----

fn reboot_spec() -> JobSpec {
    JobSpec::new(
        JobId::new("r").unwrap(),
        reboot(false),
        vec![DeviceId::new("a").unwrap()],
    )
}

/// `spec` is refused by `validate`, by `JobEngine::create` (which creates nothing) and
/// names `name`.
fn refused(spec: JobSpec, name: &str) {
    let err = spec.validate().expect_err(name);
    assert!(
        matches!(&err, SpecError::InvalidParameter { name: n, .. } if *n == name),
        "{err:?}"
    );
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    assert_eq!(engine.create(t0, spec.clone()), Err(err));
    assert!(engine.job(&spec.id).is_none());
}

#[test]
fn a_retry_rule_whose_first_backoff_exceeds_its_longest_is_refused() {
    let mut rule = RetryRule::new(Some(FailureKind::TimedOut), 3);
    rule.initial_backoff = Duration::from_secs(601);
    rule.max_backoff = Duration::from_secs(600);
    refused(reboot_spec().retry(rule), "retries");
    // Equal is fine: every retry waits the same.
    rule.initial_backoff = Duration::from_secs(600);
    reboot_spec().retry(rule).validate().unwrap();
    // So is JSON's; the message says which bound was crossed.
    let json = spec_json(
        "",
        JOB,
        ROLLOUT,
        ABORT,
        r#"{"maxRetries": 3, "initialBackoffMs": 70000, "multiplier": 2.0, "maxBackoffMs": 60000}"#,
    );
    let err = parse(&json).unwrap().validate().unwrap_err();
    assert!(err.to_string().contains("initialBackoffMs"), "{err}");
}

// A job created before creation refused such a rule still restores (a store written by
// an earlier version), waiting what it always waited: the longest backoff.
#[test]
fn a_stored_job_with_such_a_rule_still_restores() {
    let t0 = Instant::now();
    let wall = Timestamp::from_millis(0);
    let mut engine = JobEngine::new(EngineConfig::default(), t0, wall);
    engine.enable_journal();
    engine
        .create(t0, reboot_spec().retry(RetryRule::new(None, 2)))
        .unwrap();
    let (mut parents, children) = journal_lists(&mut engine);
    let text = String::from_utf8(parents[0].1.clone()).unwrap();
    let old = text.replace("\"initialBackoffMs\":10000", "\"initialBackoffMs\":700000");
    assert_ne!(old, text);
    parents[0].1 = old.into_bytes();
    let back = JobEngine::restore(EngineConfig::default(), t0, wall, parents, children).unwrap();
    assert_eq!(
        back.job(&JobId::new("r").unwrap()).unwrap().status,
        JobStatus::Running
    );
}

#[test]
fn rules_outside_their_documented_ranges_are_refused() {
    let base = RetryRule::new(None, 3);
    for bad in [
        RetryRule {
            multiplier: 0.5,
            ..base
        },
        RetryRule {
            multiplier: f64::NAN,
            ..base
        },
        RetryRule {
            multiplier: f64::INFINITY,
            ..base
        },
        RetryRule {
            max_retries: 11,
            ..base
        },
    ] {
        refused(reboot_spec().retry(bad), "retries");
    }
    reboot_spec()
        .retry(RetryRule {
            max_retries: 10,
            multiplier: 1.0,
            ..base
        })
        .validate()
        .unwrap();
    let rule = AbortRule {
        on: None,
        threshold_percent: 50.0,
        min_finished: 1,
    };
    for bad in [
        AbortRule {
            threshold_percent: 100.5,
            ..rule
        },
        AbortRule {
            threshold_percent: -1.0,
            ..rule
        },
        AbortRule {
            threshold_percent: f64::NAN,
            ..rule
        },
        AbortRule {
            min_finished: 0,
            ..rule
        },
    ] {
        refused(reboot_spec().abort_rule(bad), "abortRules");
    }
    for ok in [0.0, 100.0] {
        reboot_spec()
            .abort_rule(AbortRule {
                threshold_percent: ok,
                ..rule
            })
            .validate()
            .unwrap();
    }
}

// ---- 3. history paging with limit 0 ----

#[test]
fn a_history_page_of_zero_records_is_refused_and_paging_terminates() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let devices: Vec<DeviceId> = (0..3)
        .map(|i| DeviceId::new(&format!("d{i}")).unwrap())
        .collect();
    engine
        .create(
            t0,
            JobSpec::new(JobId::new("r").unwrap(), reboot(false), devices),
        )
        .unwrap();
    let all = HistoryFilter::default();
    assert_eq!(
        engine.history(&all, HistoryCursor::default(), 0),
        Err(HistoryError::ZeroLimit)
    );
    // Any positive limit makes progress: a loop until `next` is None ends.
    for limit in [1, 2, 3, 4, 100] {
        let mut cursor = HistoryCursor::default();
        let mut seen = 0;
        for _ in 0..10 {
            let page = engine.history(&all, cursor, limit).unwrap();
            assert!(!page.records.is_empty());
            seen += page.records.len();
            match page.next {
                Some(next) => {
                    assert!(next > cursor);
                    cursor = next;
                }
                None => break,
            }
        }
        assert_eq!(seen, 4, "limit {limit}");
    }
}

// ---- 4. Firmware Update Result 11 (deferred) and 10 (cancelled) ----

fn fw_state(state: i64, result: i64) -> Content {
    Content {
        values: vec![
            (
                Lwm2mPath::resource(5, 0, 1),
                ResourceValue::String(URI.into()),
            ),
            (Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(state)),
            (Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(result)),
        ],
    }
}

const URI: &str = "coap://fw/2.0.bin";

fn is_execute(op: &DeviceOp) -> bool {
    op.request
        == DeviceRequest::Execute {
            path: Lwm2mPath::resource(5, 0, 2),
            args: None,
        }
}

/// A firmware job on one registered device, driven up to the answered Execute.
fn fw_executed(spec: impl FnOnce(JobSpec) -> JobSpec) -> (JobEngine, Instant, DeviceId, JobId) {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    engine.handle_event(t0, &registered(&dev));
    let id = JobId::new("fw").unwrap();
    let job = JobType::FirmwareUpdate {
        package_uri: URI.into(),
        expected_version: None,
    };
    engine
        .create(t0, spec(JobSpec::new(id.clone(), job, vec![dev.clone()])))
        .unwrap();
    let observe = one_op(&mut engine);
    answer(
        &mut engine,
        t0,
        &observe,
        DeviceReply::Content(fw_state(0, 0)),
    );
    let write = one_op(&mut engine);
    answer(&mut engine, t0, &write, DeviceReply::Done);
    notify_firmware(&mut engine, t0, &dev, fw_state(2, 0));
    let execute = one_op(&mut engine);
    assert!(is_execute(&execute), "{execute:?}");
    answer(&mut engine, t0, &execute, DeviceReply::Done);
    (engine, t0, dev, id)
}

fn child(
    engine: &JobEngine,
    id: &JobId,
    dev: &DeviceId,
) -> (twinhub::job::ChildState, Option<FailureReason>) {
    let (s, r) = engine.child_state(id, dev).unwrap();
    (s, r.cloned())
}

#[test]
fn a_deferred_update_keeps_the_child_waiting_until_the_device_applies_it() {
    use twinhub::job::ChildState;
    let (mut engine, t0, dev, id) = fw_executed(|s| s);
    // The device defers the update (LwM2M 1.1 Update Result 11): it keeps the package.
    notify_firmware(&mut engine, t0, &dev, fw_state(2, 11));
    assert_eq!(child(&engine, &id, &dev), (ChildState::InProgress, None));
    // Deferred is no lost Execute: the engine does not send it again.
    let later = t0 + Duration::from_secs(120);
    engine.handle_timeout(later);
    assert!(drain(&mut engine).iter().all(|op| !is_execute(op)));
    // Later the device applies it.
    notify_firmware(&mut engine, later, &dev, fw_state(3, 0));
    notify_firmware(&mut engine, later, &dev, fw_state(0, 1));
    let ops = drain(&mut engine);
    let verify = ops
        .iter()
        .find(|op| matches!(&op.request, DeviceRequest::Read { path } if *path == Lwm2mPath::resource(3, 0, 3)))
        .expect("the version read");
    answer(
        &mut engine,
        later,
        verify,
        DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 3),
            ResourceValue::String("2.0".into()),
        )),
    );
    assert_eq!(child(&engine, &id, &dev), (ChildState::Succeeded, None));
    assert_eq!(engine.job(&id).unwrap().status, JobStatus::Completed);
}

#[test]
fn an_update_still_deferred_at_the_device_timeout_fails_as_deferred_and_a_rule_retries_it() {
    use twinhub::job::ChildState;
    let mut rule = RetryRule::new(Some(FailureKind::Deferred), 1);
    rule.initial_backoff = Duration::from_secs(60);
    let timeout = Duration::from_secs(600);
    let (mut engine, t0, dev, id) = fw_executed(|s| s.device_timeout(timeout).retry(rule));
    notify_firmware(&mut engine, t0, &dev, fw_state(2, 11));
    // The device timeout runs out while the device still defers.
    let mut now = t0;
    while now < t0 + timeout {
        now = engine
            .poll_timeout()
            .unwrap()
            .max(now + Duration::from_millis(1));
        engine.handle_timeout(now);
        for op in drain(&mut engine) {
            if matches!(op.request, DeviceRequest::Read { .. }) {
                answer(&mut engine, now, &op, DeviceReply::Content(fw_state(2, 11)));
            }
        }
    }
    let (state, reason) = child(&engine, &id, &dev);
    assert_eq!(state, ChildState::RetryWait);
    let reason = reason.unwrap();
    assert_eq!(reason, FailureReason::FirmwareUpdateDeferred);
    assert_eq!(reason.kind(), FailureKind::Deferred);
    assert_eq!(reason.code(), "deferred");
    // The retry asks the device again: it still holds the job's package, so the engine
    // executes Update again (and does not download again).
    let mut executed = false;
    for _ in 0..20 {
        let Some(next) = engine.poll_timeout() else {
            break;
        };
        now = next.max(now);
        engine.handle_timeout(now);
        // Answers may send more: until the engine has nothing more to send now.
        while let Some(op) = engine.poll_op() {
            match &op.request {
                DeviceRequest::Observe { .. } | DeviceRequest::Read { .. } => {
                    answer(&mut engine, now, &op, DeviceReply::Content(fw_state(2, 11)))
                }
                DeviceRequest::Write { .. } => panic!("downloaded again: {op:?}"),
                _ if is_execute(&op) => {
                    answer(&mut engine, now, &op, DeviceReply::Done);
                    executed = true;
                }
                _ => {}
            }
        }
        if executed {
            break;
        }
    }
    assert!(executed, "the retry executes Update again");
    // Deferred a second time, past the last retry: the child fails as deferred.
    notify_firmware(&mut engine, now, &dev, fw_state(2, 11));
    engine.handle_timeout(now + timeout);
    let (state, reason) = child(&engine, &id, &dev);
    assert_eq!(state, ChildState::Failed);
    assert_eq!(reason, Some(FailureReason::FirmwareUpdateDeferred));
    let record = engine.children(&id).next().unwrap();
    assert_eq!(record.failure_reason.as_deref(), Some("deferred"));
    assert!(
        record.status_message.contains("deferred"),
        "{}",
        record.status_message
    );
}

#[test]
fn an_update_the_device_cancels_unprompted_fails_as_a_refusal() {
    use twinhub::job::ChildState;
    let (mut engine, t0, dev, id) = fw_executed(|s| s);
    notify_firmware(&mut engine, t0, &dev, fw_state(0, 10));
    let (state, reason) = child(&engine, &id, &dev);
    assert_eq!(state, ChildState::Failed);
    let reason = reason.unwrap();
    assert_eq!(reason, FailureReason::FirmwareUpdateFailed { result: 10 });
    assert_eq!(reason.kind(), FailureKind::Rejected);
    assert_eq!(reason.code(), "deviceError:10");
}

// ---- 5a. the end time of an expired job ----

#[test]
fn an_expired_job_ends_at_its_expiry_not_when_the_timer_ran() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(
        EngineConfig::default(),
        t0,
        Timestamp::from_millis(1_000_000),
    );
    let dev = DeviceId::new("d").unwrap();
    // The device never registers: its child waits until the job's time runs out.
    engine.handle_event(
        t0,
        &DeviceEvent::Deregistered {
            device: dev.clone(),
        },
    );
    let id = JobId::new("r").unwrap();
    let max = Duration::from_secs(60);
    engine
        .create(
            t0,
            JobSpec::new(id.clone(), reboot(false), vec![dev.clone()])
                .max_execution_time(Some(max)),
        )
        .unwrap();
    assert_eq!(engine.poll_timeout(), Some(t0 + max));
    // The caller runs the timers 5 s late (a busy hub, or a restart).
    engine.handle_timeout(t0 + max + Duration::from_secs(5));
    let parent = engine.job(&id).unwrap();
    assert_eq!(parent.status, JobStatus::Failed);
    let expiry = Timestamp::from_millis(1_000_000 + 60_000);
    assert_eq!(parent.end_time_utc, Some(expiry));
    let record = engine.children(&id).next().unwrap();
    assert_eq!(record.end_time_utc, Some(expiry));
}

// A child whose attempt timed out (its device timeout) ends at its deadline, not when
// the timer ran (it recorded the later time before).
#[test]
fn a_timed_out_child_ends_at_its_deadline_not_when_the_timer_ran() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(
        EngineConfig::default(),
        t0,
        Timestamp::from_millis(1_000_000),
    );
    let dev = DeviceId::new("d").unwrap();
    engine.handle_event(t0, &registered(&dev));
    let id = JobId::new("r").unwrap();
    let timeout = Duration::from_secs(60);
    engine
        .create(
            t0,
            JobSpec::new(id.clone(), reboot(false), vec![dev.clone()]).device_timeout(timeout),
        )
        .unwrap();
    // The Execute goes out and is never answered.
    let _execute = one_op(&mut engine);
    // The caller runs the timers 5 s late.
    engine.handle_timeout(t0 + timeout + Duration::from_secs(5));
    let record = engine.children(&id).next().unwrap();
    assert_eq!(record.status, twinhub::job::JobStatus::Failed, "{record:?}");
    assert_eq!(
        record.end_time_utc,
        Some(Timestamp::from_millis(1_000_000 + 60_000))
    );
}

// The same after a restart: a job whose time ran out while the hub was down ends at its
// expiry, not at the restart.
#[test]
fn a_job_that_expired_while_the_hub_was_down_ends_at_its_expiry() {
    let t0 = Instant::now();
    let wall0 = 1_000_000;
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(wall0));
    engine.enable_journal();
    let id = JobId::new("r").unwrap();
    let dev = DeviceId::new("d").unwrap();
    engine
        .create(
            t0,
            JobSpec::new(id.clone(), reboot(false), vec![dev])
                .max_execution_time(Some(Duration::from_secs(60))),
        )
        .unwrap();
    let (parents, children) = journal_lists(&mut engine);
    // Back an hour later.
    let t1 = Instant::now();
    let mut back = JobEngine::restore(
        EngineConfig::default(),
        t1,
        Timestamp::from_millis(wall0 + 3_600_000),
        parents,
        children,
    )
    .unwrap();
    back.handle_timeout(t1);
    let parent = back.job(&id).unwrap();
    assert_eq!(parent.status, JobStatus::Failed);
    let expiry = Timestamp::from_millis(wall0 + 60_000);
    assert_eq!(parent.end_time_utc, Some(expiry));
    let record = back.children(&id).next().unwrap();
    assert_eq!(record.end_time_utc, Some(expiry));
}

// ---- 5b. a graceful cancel and a device that goes offline mid-attempt ----

// `CancelMode::FinishInFlight` lets children in progress run to their end. A firmware
// download that reached the device is in flight even while the device is briefly offline
// (it restarts, its registration lapses): it was cancelled at once, though the device went
// on with the update and the history then said "cancelled" for an updated device.
#[test]
fn a_graceful_cancel_lets_an_attempt_whose_device_went_offline_finish() {
    use twinhub::job::{CancelMode, ChildState};
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    let idle = DeviceId::new("e").unwrap();
    engine.handle_event(t0, &registered(&dev));
    let id = JobId::new("fw").unwrap();
    let job = JobType::FirmwareUpdate {
        package_uri: URI.into(),
        expected_version: None,
    };
    // One in flight at a time: `e` waits, not started.
    engine
        .create(
            t0,
            JobSpec::new(id.clone(), job, vec![dev.clone(), idle.clone()]).max_in_flight(1),
        )
        .unwrap();
    let observe = one_op(&mut engine);
    answer(
        &mut engine,
        t0,
        &observe,
        DeviceReply::Content(fw_state(0, 0)),
    );
    let write = one_op(&mut engine);
    answer(&mut engine, t0, &write, DeviceReply::Done);
    notify_firmware(&mut engine, t0, &dev, fw_state(1, 0));
    assert_eq!(
        engine.cancel(t0, &id, CancelMode::FinishInFlight).unwrap(),
        JobStatus::Running
    );
    assert_eq!(child(&engine, &id, &idle).0, ChildState::Cancelled);
    // The device goes offline mid-download, and comes back with the package.
    engine.handle_event(
        t0,
        &DeviceEvent::Expired {
            device: dev.clone(),
        },
    );
    assert_eq!(child(&engine, &id, &dev).0, ChildState::WaitingForDevice);
    assert_eq!(engine.job(&id).unwrap().status, JobStatus::Running);
    let later = t0 + Duration::from_secs(60);
    engine.handle_event(later, &registered(&dev));
    assert_eq!(child(&engine, &id, &dev).0, ChildState::InProgress);
    // It re-synchronises, installs, and the job ends cancelled with the device updated.
    let mut updated = false;
    for _ in 0..20 {
        let Some(op) = engine.poll_op() else { break };
        match &op.request {
            DeviceRequest::Observe { .. } | DeviceRequest::Read { .. } if !updated => answer(
                &mut engine,
                later,
                &op,
                DeviceReply::Content(fw_state(2, 0)),
            ),
            DeviceRequest::Read { path } if *path == Lwm2mPath::resource(3, 0, 3) => answer(
                &mut engine,
                later,
                &op,
                DeviceReply::Content(Content::single(
                    Lwm2mPath::resource(3, 0, 3),
                    ResourceValue::String("2.0".into()),
                )),
            ),
            _ if is_execute(&op) => {
                answer(&mut engine, later, &op, DeviceReply::Done);
                updated = true;
                notify_firmware(&mut engine, later, &dev, fw_state(0, 1));
            }
            _ => {}
        }
    }
    assert!(updated);
    assert_eq!(child(&engine, &id, &dev), (ChildState::Succeeded, None));
    assert_eq!(engine.job(&id).unwrap().status, JobStatus::Cancelled);
}

// An attempt that never reached its device (the device was offline when it started) is
// not in flight: a graceful cancel cancels it at once, as it cancels children not started.
#[test]
fn a_graceful_cancel_cancels_an_attempt_that_never_reached_its_offline_device() {
    use twinhub::job::{CancelMode, ChildState};
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let dev = DeviceId::new("d").unwrap();
    engine.handle_event(
        t0,
        &DeviceEvent::Deregistered {
            device: dev.clone(),
        },
    );
    let id = JobId::new("fw").unwrap();
    let job = JobType::FirmwareUpdate {
        package_uri: URI.into(),
        expected_version: None,
    };
    engine
        .create(t0, JobSpec::new(id.clone(), job, vec![dev.clone()]))
        .unwrap();
    assert_eq!(child(&engine, &id, &dev).0, ChildState::WaitingForDevice);
    assert_eq!(
        engine.cancel(t0, &id, CancelMode::FinishInFlight).unwrap(),
        JobStatus::Cancelled
    );
    assert_eq!(child(&engine, &id, &dev).0, ChildState::Cancelled);
}

// Such a child whose device came back while `max_in_flight` held it for a slot goes on
// under the graceful cancel once a slot opens (the job could stay "cancelling" forever);
// the bound still holds meanwhile (a review of this fix found both children in progress
// under `max_in_flight(1)`; `JobEngine::validate` checks it).
#[test]
fn a_graceful_cancel_resumes_an_in_flight_child_held_for_a_slot() {
    use twinhub::job::{CancelMode, ChildState};
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
    let d = DeviceId::new("d").unwrap();
    let e = DeviceId::new("e").unwrap();
    engine.handle_event(t0, &registered(&d));
    engine.handle_event(t0, &registered(&e));
    let id = JobId::new("fw").unwrap();
    let job = JobType::FirmwareUpdate {
        package_uri: URI.into(),
        expected_version: None,
    };
    engine
        .create(
            t0,
            JobSpec::new(id.clone(), job, vec![d.clone(), e.clone()]).max_in_flight(1),
        )
        .unwrap();
    let observe = one_op(&mut engine);
    answer(
        &mut engine,
        t0,
        &observe,
        DeviceReply::Content(fw_state(0, 0)),
    );
    let _write = one_op(&mut engine);
    // `d` goes offline mid-attempt: its slot goes to `e`.
    engine.handle_event(t0, &DeviceEvent::Expired { device: d.clone() });
    assert_eq!(child(&engine, &id, &e).0, ChildState::InProgress);
    let e_ops = drain(&mut engine);
    // `d` comes back while `e` holds the only slot: it waits for it.
    engine.handle_event(t0, &registered(&d));
    assert_eq!(child(&engine, &id, &d).0, ChildState::WaitingForDevice);
    assert!(engine.poll_op().is_none());
    engine.cancel(t0, &id, CancelMode::FinishInFlight).unwrap();
    assert_eq!(child(&engine, &id, &d).0, ChildState::WaitingForDevice);
    assert_eq!(child(&engine, &id, &e).0, ChildState::InProgress);
    engine.validate().unwrap();
    assert!(engine.poll_op().is_none());
    // `e`'s attempt ends (refused): its slot goes to `d`, which goes on.
    engine.handle_event(
        t0,
        &DeviceEvent::Response {
            op: e_ops[0].id,
            device: e.clone(),
            result: Err(twinhub::transport::DeviceError::Code(4, 4)),
        },
    );
    assert_eq!(child(&engine, &id, &e).0, ChildState::Failed);
    assert_eq!(child(&engine, &id, &d).0, ChildState::InProgress);
    engine.validate().unwrap();
    let resumed = drain(&mut engine);
    assert!(resumed.iter().any(|op| op.device == d), "{resumed:?}");
    assert_eq!(engine.job(&id).unwrap().status, JobStatus::Running);
}

/// Item 2 of a later review: a deferred update is followed by the observation of `/5/0`
/// (State and Update Result, which the engine observes itself here) and backed by reads
/// of `/5/0` that back off to `poll_interval`, a bounded number of times: in a wait
/// step of `T` (here the 10-min device timeout) at most 5 + ⌊(T − 31 s) / 30 s⌋ reads, 23,
/// one at a time, then the attempt fails as `deferred`.
#[test]
fn a_deferred_update_is_polled_a_bounded_number_of_times() {
    use twinhub::job::ChildState;
    let timeout = Duration::from_secs(600);
    let (mut engine, t0, dev, id) = fw_executed(|s| s.device_timeout(timeout));
    notify_firmware(&mut engine, t0, &dev, fw_state(2, 11));
    let mut reads = Vec::new();
    let mut now = t0;
    while let Some(next) = engine.poll_timeout() {
        now = next;
        engine.handle_timeout(now);
        for op in drain(&mut engine) {
            if let DeviceRequest::Read { path } = op.request {
                assert_eq!(path, Lwm2mPath::instance(5, 0));
                reads.push(now - t0);
                answer(&mut engine, now, &op, DeviceReply::Content(fw_state(2, 11)));
            }
        }
        if engine.job(&id).unwrap().status.is_terminal() {
            break;
        }
    }
    let expected = 5 + (timeout.as_secs() - 31) / 30;
    assert_eq!(reads.len() as u64, expected, "{reads:?}");
    assert_eq!(reads[..6], [1, 3, 7, 15, 31, 61].map(Duration::from_secs));
    assert_eq!(now, t0 + timeout);
    assert_eq!(
        child(&engine, &id, &dev),
        (
            ChildState::Failed,
            Some(FailureReason::FirmwareUpdateDeferred)
        )
    );
}
