//! The hub over the in-memory simulated fleet: registration fills twins, property sync
//! keeps them current, and each job type runs to completion through the hub's routing.

#![cfg(feature = "memory-fleet")]

mod hub_support;

use hub_support::block_on;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::hub::{Hub, HubConfig};
use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
use twinhub::lwm2m::{Lwm2mPath, ResourceValue};
use twinhub::registry::Registry;
use twinhub::transport::memory::{DeviceSpec, FaultProfile, MemoryConfig, MemoryTransport};
use twinhub::twin::{ConnectionState, Scalar, Twin};

fn quick_faults() -> FaultProfile {
    FaultProfile {
        min_latency: Duration::from_millis(1),
        max_latency: Duration::from_millis(5),
        download_time: Duration::from_millis(100),
        update_time: Duration::from_millis(50),
        reboot_time: Duration::from_millis(50),
        ..FaultProfile::default()
    }
}

/// A hub over `n` simulated devices `dev-0..n`, all on firmware 1.0; device `dev-0` fails
/// its firmware download with Update Result 5 (integrity check failure).
fn fleet(n: usize) -> (Hub, Vec<DeviceId>) {
    let mut transport = MemoryTransport::new(MemoryConfig::with_seed(7));
    let mut registry = Registry::new();
    let now = Instant::now();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = DeviceId::new(&format!("dev-{i}")).unwrap();
        let mut faults = quick_faults();
        if i == 0 {
            faults.download_result = Some(5);
        }
        transport
            .add_device(
                now,
                DeviceSpec::new(id.clone())
                    .firmware_version("1.0")
                    .faults(faults),
            )
            .unwrap();
        registry
            .create(Twin::new(id.clone()).with_tag(if i % 2 == 0 { "even" } else { "odd" }))
            .unwrap();
        ids.push(id);
    }
    (
        Hub::with_transport(transport, registry, HubConfig::default()),
        ids,
    )
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn device_property(hub: &Hub, id: &str, name: &str) -> Option<Scalar> {
    hub.registry()
        .read()
        .get(id)
        .and_then(|t| t.device_property(name).map(|(v, _)| v.clone()))
}

fn run_job(hub: &Hub, id: &str, job: JobType, targets: Vec<DeviceId>) -> JobStatus {
    let job_id = JobId::new(id).unwrap();
    hub.create_job(JobSpec::new(job_id.clone(), job, targets))
        .unwrap();
    let mut status = JobStatus::Enqueued;
    wait_until(&format!("job {id} to end"), || {
        status = hub.job(&job_id).unwrap().status;
        matches!(
            status,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    });
    let stats = hub.job_statistics(&job_id).unwrap();
    assert_eq!(stats.total(), stats.device_count, "statistics add up");
    assert_eq!(stats.finished(), stats.device_count, "every child ended");
    status
}

#[test]
fn registration_fills_twins_and_every_job_type_runs() {
    let (hub, ids) = fleet(20);
    wait_until("all twins to fill in", || {
        ids.iter()
            .all(|id| device_property(&hub, id.as_str(), "FirmwareVersion").is_some())
    });
    {
        let reg = hub.registry().read();
        let twin = reg.get("dev-3").unwrap();
        assert_eq!(twin.connection_state(), ConnectionState::Connected);
        assert!(twin.is_managed());
        assert!(twin.registration().is_some());
        assert_eq!(
            twin.device_property("BatteryLevel").unwrap().0,
            &Scalar::from(100)
        );
    }

    // Firmware update: 19 succeed, dev-0 fails its download with result 5, so the parent
    // ends failed (it completes only when every child succeeded).
    let status = run_job(
        &hub,
        "fw-1",
        JobType::FirmwareUpdate {
            package_uri: "coap://fw.example/pkg/2.0.bin".into(),
            expected_version: Some("2.0".into()),
        },
        ids.clone(),
    );
    assert_eq!(status, JobStatus::Failed);
    let fw = JobId::new("fw-1").unwrap();
    let stats = hub.job_statistics(&fw).unwrap();
    assert_eq!((stats.succeeded, stats.failed), (19, 1));
    let failed: Vec<_> = hub
        .job_children(&fw)
        .into_iter()
        .filter(|c| c.status == JobStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].device_id.as_ref().unwrap().as_str(), "dev-0");
    assert_eq!(failed[0].failure_reason.as_deref(), Some("deviceError:5"));
    // Job history answers the preview's job queries: failed children of fw-1 by reason.
    let by_reason = hub
        .query_jobs(
            r#"{"filter": {"type": "logical", "logicalOperator": "and", "filters": [
                 {"type": "comparison", "comparisonOperator": "eq",
                  "property": {"name": "ParentJobId", "type": "default"}, "value": "fw-1"},
                 {"type": "comparison", "comparisonOperator": "eq",
                  "property": {"name": "Status", "type": "default"}, "value": "failed"}]},
                "aggregate": {"keys": [{"name": "FailureReason", "type": "default"}],
                  "properties": [{"operator": "count", "columnName": "children"}]}}"#,
            &twinhub::query::QueryOptions::default(),
        )
        .unwrap();
    assert_eq!(
        serde_json::to_value(&by_reason.aggregate_result).unwrap(),
        serde_json::json!([{"FailureReason": "deviceError:5", "children": 1}])
    );
    // The new version reached the twins through notifications/reads.
    wait_until("twins to show firmware 2.0", || {
        ids[1..].iter().all(|id| {
            device_property(&hub, id.as_str(), "FirmwareVersion") == Some(Scalar::from("2.0"))
        })
    });
    assert_eq!(
        device_property(&hub, "dev-0", "FirmwareVersion"),
        Some(Scalar::from("1.0"))
    );

    // Queries see the new versions at once (read-your-writes).
    let by_version = hub
        .query(
            r#"{"aggregate": {"keys": [{"name": "FirmwareVersion", "type": "device"}],
                "properties": [{"operator": "count", "columnName": "devices"}]}}"#,
        )
        .unwrap();
    let rows = serde_json::to_value(&by_version.aggregate_result).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([
            {"FirmwareVersion": "1.0", "devices": 1},
            {"FirmwareVersion": "2.0", "devices": 19}
        ])
    );
    let old = hub
        .query(
            r#"{"filter": {"type": "comparison", "comparisonOperator": "eq",
                "property": {"name": "FirmwareVersion", "type": "device"}, "value": "1.0"}}"#,
        )
        .unwrap();
    assert_eq!(old.result.len(), 1);
    let even_on_2: Vec<_> = {
        let expr = twinhub::query::parse(
            r#"{"filter": {"type": "logical", "logicalOperator": "and", "filters": [
                {"type": "comparison", "comparisonOperator": "all",
                 "property": {"name": "tags", "type": "default"}, "value": ["even"]},
                {"type": "comparison", "comparisonOperator": "eq",
                 "property": {"name": "FirmwareVersion", "type": "device"}, "value": "2.0"}]}}"#,
        )
        .unwrap();
        hub.resolve_targets(&expr).unwrap()
    };
    assert_eq!(even_on_2.len(), 9, "dev-2, dev-4, ..., dev-18");
    assert!(even_on_2.iter().all(|id| id.as_str() != "dev-0"));
    assert_eq!(hub.query_tags(&["odd"], 100).len(), 10);

    let some: Vec<_> = ids[1..6].to_vec();
    assert_eq!(
        run_job(
            &hub,
            "reboot-1",
            JobType::Reboot {
                wait_for_registration: true
            },
            some.clone()
        ),
        JobStatus::Completed
    );
    assert_eq!(
        run_job(
            &hub,
            "reset-1",
            JobType::FactoryReset {
                wait_for_registration: true
            },
            some.clone()
        ),
        JobStatus::Completed
    );
    assert_eq!(
        run_job(
            &hub,
            "config-1",
            JobType::ConfigurationUpdate {
                name: "mode".into(),
                value: "eco".into()
            },
            some.clone()
        ),
        JobStatus::Completed
    );
    assert_eq!(
        run_job(
            &hub,
            "write-1",
            JobType::WriteDeviceProperties {
                values: vec![(
                    Lwm2mPath::resource(3, 0, 15),
                    ResourceValue::String("Europe/Paris".into())
                )],
            },
            some.clone()
        ),
        JobStatus::Completed
    );
    assert_eq!(
        run_job(
            &hub,
            "read-1",
            JobType::ReadDeviceProperties {
                paths: vec![Lwm2mPath::resource(3, 0, 15)]
            },
            some.clone()
        ),
        JobStatus::Completed
    );
    for id in &some {
        assert_eq!(
            device_property(&hub, id.as_str(), "Timezone"),
            Some(Scalar::from("Europe/Paris")),
            "the read job refreshed the twin of {id}"
        );
    }
    let records = hub.job_records();
    assert_eq!(
        records
            .iter()
            .filter(|r| r.parent_job_id.is_empty())
            .count(),
        6
    );
    let stats = hub.stats();
    assert!(stats.registrations >= 20 && stats.notifications > 0 && stats.property_updates > 0);
    hub.stop();
}

/// Issue #17: request/response with one device, blocking and async, over the in-memory
/// fleet.
#[test]
fn request_response_with_one_device() {
    use twinhub::hub::RequestError;
    use twinhub::transport::{DeviceError, DeviceReply, DeviceRequest};
    let (hub, ids) = fleet(3);
    wait_until("registration", || {
        device_property(&hub, "dev-1", "FirmwareVersion").is_some()
    });
    let battery = Lwm2mPath::resource(3, 0, 9);
    let read = DeviceRequest::Read { path: battery };
    match hub
        .request(&ids[1], read.clone())
        .wait(Duration::from_secs(30))
    {
        Ok(DeviceReply::Content(c)) => {
            assert_eq!(c.values, vec![(battery, ResourceValue::Integer(100))])
        }
        other => panic!("{other:?}"),
    }
    // The same from async code.
    match block_on(hub.request(&ids[2], read)) {
        Ok(DeviceReply::Content(c)) => assert_eq!(c.values.len(), 1),
        other => panic!("{other:?}"),
    }
    // An execute, and a device error with its code.
    let reboot = DeviceRequest::Execute {
        path: Lwm2mPath::resource(3, 0, 4),
        args: None,
    };
    assert_eq!(
        hub.request(&ids[0], reboot).wait(Duration::from_secs(30)),
        Ok(DeviceReply::Done)
    );
    let missing = DeviceRequest::Read {
        path: Lwm2mPath::instance(3303, 0),
    };
    // (dev-2: dev-0 is rebooting now and answers once it registered again.)
    let err = hub.request(&ids[2], missing).wait(Duration::from_secs(30));
    assert!(matches!(err, Err(RequestError::Device(_))), "{err:?}");
    let nobody = DeviceId::new("nobody").unwrap();
    let err = hub
        .request(&nobody, DeviceRequest::Read { path: battery })
        .wait(Duration::from_secs(30));
    assert_eq!(err, Err(RequestError::Device(DeviceError::NotRegistered)));
    // A stopped hub answers at once.
    hub.stop();
    let err = hub
        .request(&ids[1], DeviceRequest::Read { path: battery })
        .wait(Duration::from_secs(1));
    assert_eq!(err, Err(RequestError::HubStopped));
}

/// A twin removed while jobs target its device: the child holding the device, one waiting
/// behind it in another job, and one that had not reached its turn all fail as
/// `deviceRemoved`, and nothing more is sent to the device; the other devices finish.
#[test]
fn a_removed_twins_children_fail_as_device_removed() {
    let mut transport = MemoryTransport::new(MemoryConfig::with_seed(11));
    let mut registry = Registry::new();
    let now = Instant::now();
    let ids: Vec<DeviceId> = ["mute", "later", "fine"]
        .iter()
        .map(|s| DeviceId::new(s).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let mut faults = quick_faults();
        // "mute" never answers: its child stays in progress until the twin goes.
        faults.unresponsive = i == 0;
        transport
            .add_device(now, DeviceSpec::new(id.clone()).faults(faults))
            .unwrap();
        registry.create(Twin::new(id.clone())).unwrap();
    }
    let hub = Hub::with_transport(transport, registry, HubConfig::default());
    wait_until("registrations", || {
        ids.iter().all(|id| {
            hub.twin(id.as_str())
                .is_some_and(|t| t.connection_state == ConnectionState::Connected)
        })
    });
    let config = |name: &str| JobType::ConfigurationUpdate {
        name: name.into(),
        value: "1".into(),
    };
    // One child at a time, in target order: "mute" holds the rollout.
    let rollout = JobId::new("rollout").unwrap();
    hub.create_job(JobSpec::new(rollout.clone(), config("a"), ids.clone()).max_in_flight(1))
        .unwrap();
    let behind = JobId::new("behind").unwrap();
    hub.create_job(JobSpec::new(
        behind.clone(),
        config("b"),
        vec![ids[0].clone()],
    ))
    .unwrap();
    wait_until("mute in progress", || {
        hub.job_statistics(&rollout).unwrap().running == 1
    });
    assert_eq!(hub.job_statistics(&rollout).unwrap().pending, 2);
    assert_eq!(hub.job_statistics(&behind).unwrap().pending, 1);

    // "later" goes while it waits for its turn, "mute" while it holds both jobs.
    hub.remove_device("later").unwrap();
    hub.remove_device("mute").unwrap();
    for job in [&rollout, &behind] {
        wait_until(&format!("{job} to end"), || {
            hub.job(job).unwrap().status == JobStatus::Completed
        });
    }
    let reason = |job: &JobId, device: &str| {
        hub.job_children(job)
            .into_iter()
            .find(|r| r.device_id.as_ref().is_some_and(|d| d.as_str() == device))
            .map(|r| (r.status, r.failure_reason))
            .unwrap()
    };
    let removed = (JobStatus::Failed, Some("deviceRemoved".to_string()));
    assert_eq!(reason(&rollout, "mute"), removed);
    assert_eq!(reason(&rollout, "later"), removed);
    assert_eq!(reason(&behind, "mute"), removed);
    assert_eq!(reason(&rollout, "fine").0, JobStatus::Completed);
    // The job engine keeps registration state of the remaining twin only.
    wait_until("the engine forgot both", || {
        hub.metrics().job_device_states == 1
    });
    // A registry replaced wholesale (no removal in its log) is checked in full.
    *hub.registry().write() = Registry::new();
    wait_until("the engine forgot the last", || {
        hub.metrics().job_device_states == 0
    });
    hub.stop();
}

#[test]
fn a_twin_removed_and_created_again_at_once_fails_the_old_child() {
    let mut transport = MemoryTransport::new(MemoryConfig::with_seed(12));
    let mut registry = Registry::new();
    let id = DeviceId::new("mute").unwrap();
    let mut faults = quick_faults();
    faults.unresponsive = true;
    transport
        .add_device(Instant::now(), DeviceSpec::new(id.clone()).faults(faults))
        .unwrap();
    registry.create(Twin::new(id.clone())).unwrap();
    let hub = Hub::with_transport(transport, registry, HubConfig::default());
    wait_until("registration", || {
        hub.twin("mute")
            .is_some_and(|t| t.connection_state == ConnectionState::Connected)
    });
    let job = JobId::new("held").unwrap();
    hub.create_job(JobSpec::new(
        job.clone(),
        JobType::ConfigurationUpdate {
            name: "a".into(),
            value: "1".into(),
        },
        vec![id.clone()],
    ))
    .unwrap();
    wait_until("the child in progress", || {
        hub.job_statistics(&job).unwrap().running == 1
    });
    // Removed, then a new twin under the same id before the hub's next tick: the old
    // job's child still fails as deviceRemoved (it was for the device that went).
    hub.remove_device("mute").unwrap();
    hub.create_device(Twin::new(id.clone())).unwrap();
    wait_until("the job to end", || {
        hub.job(&job).unwrap().status == JobStatus::Completed
    });
    let child = hub.job_children(&job).pop().unwrap();
    assert_eq!(child.failure_reason.as_deref(), Some("deviceRemoved"));
    hub.stop();
}
