//! Job history through the query engine: JSON query expressions over a simulated fleet's
//! job records, checked against plain scans of the same records.

#![cfg(feature = "memory-fleet")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use twinhub::job::{
    EngineConfig, HistoryFilter, JobEngine, JobId, JobRecord, JobSpec, JobType, RecordScope,
};
use twinhub::query::{QueryOptions, count, execute, parse};
use twinhub::transport::Transport;
use twinhub::transport::memory::{DeviceSpec, FaultProfile, MemoryConfig, MemoryTransport};
use twinhub::{DeviceId, Timestamp};

fn run_fleet() -> JobEngine {
    let t0 = Instant::now();
    let mut fleet = MemoryTransport::new(MemoryConfig::with_seed(31));
    let mut jobs = JobEngine::new(
        EngineConfig::default(),
        t0,
        Timestamp::from_millis(1_461_931_200_000),
    );
    let ids: Vec<DeviceId> = (0..300)
        .map(|i| DeviceId::new(&format!("dev-{i:03}")).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let faults = FaultProfile {
            download_result: match i % 10 {
                0 => Some(5),
                1 => Some(7),
                _ => None,
            },
            unresponsive: i % 17 == 0,
            ..FaultProfile::default()
        };
        fleet
            .add_device(t0, DeviceSpec::new(id.clone()).faults(faults))
            .unwrap();
    }
    let fw = JobType::FirmwareUpdate {
        package_uri: "coap://fw/2.0".into(),
        expected_version: Some("2.0".into()),
    };
    let mut now = t0 + Duration::from_secs(1);
    fleet.handle_timeout(now);
    while let Some(e) = fleet.poll_event() {
        jobs.handle_event(now, &e);
    }
    jobs.create(
        now,
        JobSpec::new(JobId::new("fw-x").unwrap(), fw, ids.clone())
            .device_timeout(Duration::from_secs(600)),
    )
    .unwrap();
    let reboot = JobType::Reboot {
        wait_for_registration: false,
    };
    jobs.create(
        now,
        JobSpec::new(JobId::new("reboot-y").unwrap(), reboot, ids[..50].to_vec()),
    )
    .unwrap();
    let until = t0 + Duration::from_secs(6 * 3600);
    loop {
        while let Some(op) = jobs.poll_op() {
            fleet.submit(now, op);
        }
        while let Some(e) = fleet.poll_event() {
            jobs.handle_event(now, &e);
        }
        if jobs
            .job_ids()
            .all(|id| jobs.job(id).unwrap().status.is_terminal())
        {
            break;
        }
        let next = [fleet.poll_timeout(), jobs.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        assert!(next <= until);
        now = now.max(next);
        fleet.handle_timeout(now);
        jobs.handle_timeout(now);
    }
    jobs
}

#[test]
fn failed_children_grouped_by_failure_reason() {
    let jobs = run_fleet();
    let snapshot = jobs.history_snapshot();
    let q = parse(
        r#"{"filter": {"type": "logical", "logicalOperator": "and", "filters": [
              {"type": "comparison", "comparisonOperator": "eq",
               "property": {"name": "ParentJobId", "type": "default"}, "value": "fw-x"},
              {"type": "comparison", "comparisonOperator": "eq",
               "property": {"name": "Status", "type": "default"}, "value": "failed"}]},
            "aggregate": {"keys": [{"name": "FailureReason", "type": "default"}],
              "properties": [{"operator": "count", "columnName": "devices"}]},
            "sort": [{"property": {"name": "devices", "type": "aggregated"}, "order": "desc"}]}"#,
    )
    .unwrap();
    let result = execute(&snapshot, &q, &QueryOptions::default()).unwrap();
    let json = serde_json::to_value(&result).unwrap();
    let rows = json["AggregateResult"].as_array().unwrap();
    let got: BTreeMap<String, u64> = rows
        .iter()
        .map(|r| {
            (
                r["FailureReason"].as_str().unwrap().to_owned(),
                r["devices"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = jobs.failure_reasons(&HistoryFilter {
        parent: Some(JobId::new("fw-x").unwrap()),
        scope: RecordScope::Children,
        ..HistoryFilter::default()
    });
    assert_eq!(got, expected);
    assert_eq!(got["deviceError:5"], 28, "{got:?}"); // i % 10 == 0, minus the mute ones
    assert!(got.contains_key("timedOut"));
    // Sorted by count, descending.
    let counts: Vec<u64> = rows
        .iter()
        .map(|r| r["devices"].as_u64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn filters_sort_project_and_page_like_a_scan() {
    let jobs = run_fleet();
    let records: Vec<JobRecord> = jobs.records().collect();
    let snapshot = jobs.history_snapshot();
    // Children of the firmware job that started in the first 30 minutes, latest end first.
    let cut = Timestamp::from_millis(1_461_931_200_000 + 30 * 60_000).to_string();
    let text = format!(
        r#"{{"filter": {{"type": "logical", "logicalOperator": "and", "filters": [
              {{"type": "comparison", "comparisonOperator": "eq",
               "property": {{"name": "type", "type": "default"}}, "value": "firmwareUpdate"}},
              {{"type": "comparison", "comparisonOperator": "ne",
               "property": {{"name": "deviceId", "type": "default"}}, "value": null}},
              {{"type": "comparison", "comparisonOperator": "lt",
               "property": {{"name": "StartTimeUtc", "type": "default"}}, "value": "{cut}"}}]}},
            "project": {{"all": false, "properties": [
               {{"name": "Status", "type": "default"}}, {{"name": "EndTimeUtc", "type": "default"}}]}},
            "sort": [{{"property": {{"name": "EndTimeUtc", "type": "default"}}, "order": "desc"}}]}}"#
    );
    let q = parse(&text).unwrap();
    let mut expected: Vec<&JobRecord> = records
        .iter()
        .filter(|r| {
            r.kind.as_str() == "firmwareUpdate"
                && r.device_id.is_some()
                && r.start_time_utc.is_some_and(|t| t.to_string() < cut)
        })
        .collect();
    // Latest end first, ties by job id.
    expected.sort_by(|a, b| {
        b.end_time_utc
            .cmp(&a.end_time_utc)
            .then(a.job_id.cmp(&b.job_id))
    });
    assert_eq!(count(&snapshot, &q).unwrap(), expected.len() as u64);
    let mut got = Vec::new();
    let mut options = QueryOptions::page(37);
    loop {
        let page = execute(&snapshot, &q, &options).unwrap();
        let json = serde_json::to_value(&page).unwrap();
        for item in json["Result"].as_array().unwrap() {
            assert_eq!(item.as_object().unwrap().len(), 3, "{item}");
            got.push(item["jobId"].as_str().unwrap().to_owned());
        }
        match page.continuation {
            Some(token) => options = QueryOptions::page(37).after(token),
            None => break,
        }
    }
    let expected_ids: Vec<&str> = expected.iter().map(|r| r.job_id.as_str()).collect();
    assert_eq!(got, expected_ids);
    assert!(got.len() > 100);
}

/// A `LiveHistory` brought up to date query by query answers exactly what a snapshot
/// built from scratch answers, while jobs run, finish, and are dropped by retention.
#[test]
fn a_live_history_agrees_with_a_fresh_snapshot_at_every_step() {
    use std::sync::Mutex;
    use twinhub::job::LiveHistory;
    let t0 = Instant::now();
    let mut fleet = MemoryTransport::new(MemoryConfig::with_seed(7));
    let config = EngineConfig {
        retain_jobs: 3,
        ..EngineConfig::default()
    };
    let jobs = Mutex::new(JobEngine::new(
        config,
        t0,
        Timestamp::from_millis(1_461_931_200_000),
    ));
    let ids: Vec<DeviceId> = (0..40)
        .map(|i| DeviceId::new(&format!("dev-{i:03}")).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let faults = FaultProfile {
            download_result: (i % 7 == 0).then_some(5),
            unresponsive: i % 13 == 0,
            ..FaultProfile::default()
        };
        fleet
            .add_device(t0, DeviceSpec::new(id.clone()).faults(faults))
            .unwrap();
    }
    let queries: Vec<_> = [
        r#"{"filter": {"type": "comparison", "comparisonOperator": "eq",
            "property": {"name": "Status", "type": "default"}, "value": "completed"}}"#,
        r#"{"aggregate": {"keys": [{"name": "Status", "type": "default"},
            {"name": "FailureReason", "type": "default"}],
            "properties": [{"operator": "count", "columnName": "n"}]}}"#,
        r#"{"sort": [{"property": {"name": "EndTimeUtc", "type": "default"}, "order": "desc"}],
            "project": {"properties": [{"name": "Status", "type": "default"}]}}"#,
        r#"{"filter": {"type": "comparison", "comparisonOperator": "gte",
            "property": {"name": "JobId", "type": "default"}, "value": "job-2"}}"#,
        "{}",
    ]
    .iter()
    .map(|q| parse(q).unwrap())
    .collect();
    let live = LiveHistory::new();
    let mut now = t0 + Duration::from_secs(1);
    let mut created = 0;
    let mut compared = 0;
    for step in 0..4_000 {
        {
            let mut e = jobs.lock().unwrap();
            if step % 400 == 0 {
                let kind = if created % 2 == 0 {
                    JobType::FirmwareUpdate {
                        package_uri: "coap://fw/2.0".into(),
                        expected_version: Some("2.0".into()),
                    }
                } else {
                    JobType::Reboot {
                        wait_for_registration: false,
                    }
                };
                let targets = ids[(created * 7) % 20..][..20].to_vec();
                let spec = JobSpec::new(
                    JobId::new(&format!("job-{created}")).unwrap(),
                    kind,
                    targets,
                )
                .device_timeout(Duration::from_secs(120));
                // A target still held by an unfinished job waits for it.
                e.create(now, spec).unwrap();
                created += 1;
            }
            while let Some(op) = e.poll_op() {
                fleet.submit(now, op);
            }
            while let Some(ev) = fleet.poll_event() {
                e.handle_event(now, &ev);
            }
            let next = [fleet.poll_timeout(), e.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            now = next
                .map_or(now, |n| n.max(now))
                .max(now + Duration::from_millis(10));
            fleet.handle_timeout(now);
            e.handle_timeout(now);
        }
        if step % 37 == 0 {
            let opts = QueryOptions::page(1_000);
            for q in &queries {
                let got = live.query(&jobs, q, &opts).unwrap();
                let fresh = jobs.lock().unwrap().history_snapshot();
                let want = execute(&fresh, q, &opts).unwrap();
                assert_eq!(
                    serde_json::to_value(&got).unwrap(),
                    serde_json::to_value(&want).unwrap(),
                    "step {step}"
                );
            }
            compared += 1;
        }
    }
    let e = jobs.lock().unwrap();
    assert!(created >= 10 && compared > 100);
    assert!(e.dropped_jobs() > 0, "retention never dropped a job");
    e.validate().unwrap();
}

/// Model check of the live snapshot: over random scripts (jobs created now or scheduled,
/// sharing devices, answered, cancelled either way, time run forward, retention by count
/// and by age), a snapshot brought up to date with `take_history_changes`/`apply` at
/// random points equals a fresh `history_snapshot`: same start and length, same answers.
/// Takes between which retention drops jobs created since the last take are what the
/// review (tests/job_history_review.rs) found broken.
mod live_snapshot_model {
    use proptest::prelude::*;
    use std::time::{Duration, Instant};
    use twinhub::job::{
        CancelMode, EngineConfig, HistorySnapshot, JobEngine, JobId, JobSpec, JobType,
    };
    use twinhub::query::{QueryOptions, execute, parse};
    use twinhub::transport::{DeviceEvent, DeviceReply};
    use twinhub::{DeviceId, Timestamp};

    #[derive(Clone, Debug)]
    enum Step {
        Create { devices: u8, later: bool },
        Answer,
        Cancel { job: u8, graceful: bool },
        Advance { secs: u16 },
        Take,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..3, any::<bool>()).prop_map(|(devices, later)| Step::Create { devices, later }),
            Just(Step::Answer),
            (any::<u8>(), any::<bool>()).prop_map(|(job, graceful)| Step::Cancel { job, graceful }),
            (0u16..150).prop_map(|secs| Step::Advance { secs }),
            Just(Step::Take),
        ]
    }

    fn assert_agree(live: &HistorySnapshot, fresh: &HistorySnapshot) {
        // The Debug form shows the first slot and the length.
        assert_eq!(format!("{live:?}"), format!("{fresh:?}"));
        for q in [
            "{}",
            r#"{"filter": {"type": "comparison", "comparisonOperator": "ne",
                "property": {"name": "StartTimeUtc", "type": "default"}, "value": null}}"#,
            r#"{"aggregate": {"keys": [{"name": "Status", "type": "default"},
                {"name": "ParentJobId", "type": "default"}],
                "properties": [{"operator": "count", "columnName": "n"}]}}"#,
        ] {
            let q = parse(q).unwrap();
            let opts = QueryOptions::page(1_000);
            assert_eq!(
                serde_json::to_value(execute(live, &q, &opts).unwrap()).unwrap(),
                serde_json::to_value(execute(fresh, &q, &opts).unwrap()).unwrap()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn a_live_snapshot_equals_a_fresh_one_under_retention(
            retain_jobs in 1usize..4,
            by_age in any::<bool>(),
            script in proptest::collection::vec(step(), 0..40),
        ) {
            let t0 = Instant::now();
            let wall0 = 1_700_000_000_000;
            let config = EngineConfig {
                retain_jobs,
                retain_for: by_age.then_some(Duration::from_secs(60)),
                ..EngineConfig::default()
            };
            let mut e = JobEngine::new(config, t0, Timestamp::from_millis(wall0));
            let mut live = e.track_history();
            let mut now = t0;
            let mut created = 0u32;
            for s in script {
                match s {
                    Step::Create { devices, later } => {
                        let targets = (0..devices)
                            .map(|i| DeviceId::new(&format!("d{}", (created + i as u32) % 3)).unwrap())
                            .collect();
                        let mut spec = JobSpec::new(
                            JobId::new(&format!("j{created}")).unwrap(),
                            JobType::Reboot { wait_for_registration: false },
                            targets,
                        );
                        if later {
                            spec = spec.start_at(e.wall(now + Duration::from_secs(90)));
                        }
                        e.create(now, spec).unwrap();
                        created += 1;
                    }
                    Step::Answer => {
                        let sent: Vec<_> = std::iter::from_fn(|| e.poll_op()).collect();
                        for op in sent {
                            e.handle_event(now, &DeviceEvent::Response {
                                op: op.id,
                                device: op.device.clone(),
                                result: Ok(DeviceReply::Done),
                            });
                        }
                    }
                    Step::Cancel { job, graceful } if created > 0 => {
                        let id = JobId::new(&format!("j{}", job as u32 % created)).unwrap();
                        let mode = if graceful {
                            CancelMode::FinishInFlight
                        } else {
                            CancelMode::Abandon
                        };
                        // A job retention dropped is unknown by now.
                        let _ = e.cancel(now, &id, mode);
                    }
                    Step::Cancel { .. } => {}
                    Step::Advance { secs } => {
                        now += Duration::from_secs(secs as u64);
                        e.handle_timeout(now);
                    }
                    Step::Take => {
                        live.apply(e.take_history_changes().unwrap());
                        assert_agree(&live, &e.history_snapshot());
                    }
                }
            }
            live.apply(e.take_history_changes().unwrap());
            assert_agree(&live, &e.history_snapshot());
            e.validate().unwrap();
        }
    }
}
