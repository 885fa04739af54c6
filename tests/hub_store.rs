//! The hub with a durable store: service writes and device events survive a restart, and a
//! twin removed while the hub was down fails its restored job child as `deviceRemoved`.

#![cfg(feature = "memory-fleet")]

use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::store::{SharedStore, Store, StoreConfig};
use twinhub::transport::memory::{DeviceSpec, FaultProfile, MemoryConfig, MemoryTransport};
use twinhub::twin::{Scalar, Twin};

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn transport(ids: &[DeviceId]) -> MemoryTransport {
    let mut transport = MemoryTransport::new(MemoryConfig::with_seed(3));
    let faults = FaultProfile {
        min_latency: Duration::from_millis(1),
        max_latency: Duration::from_millis(3),
        download_time: Duration::from_millis(100),
        ..FaultProfile::default()
    };
    for id in ids {
        transport
            .add_device(
                Instant::now(),
                DeviceSpec::new(id.clone())
                    .firmware_version("2.1")
                    .faults(faults.clone()),
            )
            .unwrap();
    }
    transport
}

fn durable_hub(dir: &std::path::Path, ids: &[DeviceId]) -> Hub {
    let (store, registry) = Store::open(dir, StoreConfig::default()).unwrap();
    let config = HubConfig {
        store: Some(SharedStore::new(store)),
        ..HubConfig::default()
    };
    Hub::with_transport(transport(ids), registry, config)
}

#[test]
fn service_writes_and_device_events_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<DeviceId> = (0..3)
        .map(|i| DeviceId::new(&format!("pump-{i}")).unwrap())
        .collect();
    let hub = durable_hub(dir.path(), &ids);
    for id in &ids {
        hub.create_device(Twin::new(id.clone()).with_tag("pumps"))
            .unwrap();
    }
    let etag = hub
        .set_service_property("pump-1", "region", Some("eu".into()), None)
        .unwrap();
    // Service writes are durable when they return: a second store cannot open the
    // directory while the hub has it, so check after the hub stops. Device events
    // (registration, firmware version) arrive and are committed per batch.
    wait_until("every twin synced", || {
        ids.iter().all(|id| {
            hub.twin(id.as_str())
                .is_some_and(|t| t.device_properties.contains_key("FirmwareVersion"))
        })
    });
    let last_seq = hub.registry().read().last_seq();
    hub.stop();
    // Once stopped, the twins are what was committed (each batch commits as it is
    // applied): taken earlier, a notification arriving before the stop would differ.
    let before: Vec<Twin> = ids
        .iter()
        .map(|id| hub.twin(id.as_str()).unwrap())
        .collect();
    drop(hub);

    let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    reg.validate().unwrap();
    assert!(reg.last_seq() > last_seq);
    for t in &before {
        let back = reg.get(t.device_id.as_str()).unwrap().to_twin();
        assert_eq!(&back, t, "{} differs after the restart", t.device_id);
    }
    let t = reg.get("pump-1").unwrap();
    assert_eq!(t.service_property("region"), Some(&Scalar::from("eu")));
    assert_eq!(t.service_etag(), etag);
    assert_eq!(reg.tag_bitmap("pumps").unwrap().len(), 3);
}

#[test]
fn a_registry_built_in_memory_is_imported_and_its_etags_move_past_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    reg.create(Twin::new(DeviceId::new("old").unwrap()))
        .unwrap();
    store.commit(&reg).unwrap();
    let old_seq = reg.last_seq();
    drop(reg);

    let mut mem = Registry::new();
    mem.create(Twin::new(DeviceId::new("new").unwrap()))
        .unwrap();
    // Replacing what the directory holds is asked for explicitly (a hub given `mem`
    // alone refuses it, see below).
    store.adopt(&mut mem).unwrap();
    let config = HubConfig {
        store: Some(SharedStore::new(store)),
        sync: None,
        ..HubConfig::default()
    };
    let hub = Hub::with_transport(transport(&[]), mem, config);
    assert!(hub.twin("old").is_none());
    hub.create_device(Twin::new(DeviceId::new("newer").unwrap()))
        .unwrap();
    let newer = hub.twin("newer").unwrap();
    assert!(newer.etag.0 > old_seq, "an etag repeated after the import");
    hub.stop();
    drop(hub);
    let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let ids: Vec<String> = reg.iter().map(|t| t.device_id().to_string()).collect();
    assert_eq!(ids, ["new", "newer"]);
}

/// A hub started over a store that holds twins, on another registry than `Store::open`
/// returned (a `Registry::new()`, the shape of a first run's code reused on the second),
/// refuses it instead of replacing the directory's twins with it: the builder and
/// `bind_udp` with an error, `with_transport` (which cannot fail) by poisoning the store,
/// whose first write then rebuilds the registry from the directory. Before, each emptied
/// the directory.
#[test]
fn a_hub_refuses_a_registry_that_would_replace_the_directory_s_twins() {
    use twinhub::store::StoreError;
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(dir.path(), &[]);
    hub.create_device(Twin::new(DeviceId::new("kept").unwrap()))
        .unwrap();
    hub.stop();
    drop(hub);
    let store_config = || {
        let (store, _) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        HubConfig {
            store: Some(SharedStore::new(store)),
            sync: None,
            ..HubConfig::default()
        }
    };
    let kept = || {
        let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        reg.iter()
            .map(|t| t.device_id().to_string())
            .collect::<Vec<_>>()
    };

    // The builder.
    let built = Hub::builder()
        .registry(Registry::new())
        .config(store_config())
        .transport(transport(&[]))
        .build();
    assert!(
        matches!(
            built,
            Err(twinhub::hub::BuildError::Store(StoreError::WouldReplace {
                twins: 1
            }))
        ),
        "{:?}",
        built.err()
    );
    assert_eq!(kept(), ["kept"]);

    // bind_udp: refused before anything is bound.
    #[cfg(feature = "lwm2m")]
    {
        let bound = Hub::bind_udp("127.0.0.1:0", Registry::new(), store_config());
        let Err(e) = bound else {
            panic!("bind_udp took a registry that would replace the directory's twins");
        };
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("holds 1 twins"), "{e}");
        assert_eq!(kept(), ["kept"]);
    }

    // with_transport: the store is poisoned; the next commit (this write's, or the hub
    // loop's if it comes first) brings the directory's twins back, and the write lands
    // only in them, or is refused.
    let hub = Hub::with_transport(transport(&[]), Registry::new(), store_config());
    let new = hub.create_device(Twin::new(DeviceId::new("new").unwrap()));
    wait_until("the directory's registry is back", || {
        hub.twin("kept").is_some()
    });
    assert_eq!(hub.twin("new").is_some(), new.is_ok(), "{new:?}");
    hub.create_device(Twin::new(DeviceId::new("later").unwrap()))
        .unwrap();
    hub.stop();
    drop(hub);
    let want: &[&str] = if new.is_ok() {
        &["kept", "later", "new"]
    } else {
        &["kept", "later"]
    };
    assert_eq!(kept(), want);

    // An empty directory takes any registry, as a first start does.
    let empty = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(empty.path(), StoreConfig::default()).unwrap();
    let mut mem = Registry::new();
    mem.create(Twin::new(DeviceId::new("imported").unwrap()))
        .unwrap();
    let config = HubConfig {
        store: Some(SharedStore::new(store)),
        sync: None,
        ..HubConfig::default()
    };
    let hub = Hub::with_transport(transport(&[]), mem, config);
    hub.create_device(Twin::new(DeviceId::new("next").unwrap()))
        .unwrap();
    hub.stop();
    drop(hub);
    let (_store, reg) = Store::open(empty.path(), StoreConfig::default()).unwrap();
    let ids: Vec<String> = reg.iter().map(|t| t.device_id().to_string()).collect();
    assert_eq!(ids, ["imported", "next"]);
}

#[test]
fn a_registry_the_store_did_not_return_is_refused_until_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    reg.create(Twin::new(DeviceId::new("old").unwrap()))
        .unwrap();
    store.commit(&reg).unwrap();
    let mut mem = Registry::new();
    mem.create(Twin::new(DeviceId::new("new").unwrap()))
        .unwrap();
    // Its changes count from another history: committed as a delta they would write the
    // wrong rows. Nothing is written and the store goes on.
    assert!(matches!(
        store.commit(&mem),
        Err(twinhub::store::StoreError::ForeignRegistry)
    ));
    reg.create(Twin::new(DeviceId::new("older").unwrap()))
        .unwrap();
    store.commit(&reg).unwrap();
    store.adopt(&mut mem).unwrap();
    mem.create(Twin::new(DeviceId::new("newer").unwrap()))
        .unwrap();
    store.commit(&mem).unwrap();
    drop(store);
    let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let ids: Vec<String> = reg.iter().map(|t| t.device_id().to_string()).collect();
    assert_eq!(ids, ["new", "newer"]);
}

#[test]
fn a_registry_swapped_in_through_the_guard_is_refused_and_the_stores_put_back() {
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(dir.path(), &[]);
    hub.create_device(Twin::new(DeviceId::new("kept").unwrap()))
        .unwrap();
    let mut swapped = Registry::new();
    swapped
        .create(Twin::new(DeviceId::new("swapped").unwrap()))
        .unwrap();
    *hub.registry().write() = swapped;
    // The next commit (this write's, or the hub loop's if it comes first) refuses the
    // foreign registry, and the hub rebuilds the store's: the write lands only in the
    // store's registry, or is refused.
    let later = hub.create_device(Twin::new(DeviceId::new("later").unwrap()));
    wait_until("the store's registry is back", || {
        hub.twin("kept").is_some()
    });
    assert!(hub.twin("swapped").is_none());
    assert_eq!(hub.twin("later").is_some(), later.is_ok(), "{later:?}");
    hub.stop();
    drop(hub);
    let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let ids: Vec<String> = reg.iter().map(|t| t.device_id().to_string()).collect();
    let want: &[&str] = if later.is_ok() {
        &["kept", "later"]
    } else {
        &["kept"]
    };
    assert_eq!(ids, want);
}

fn job_id(s: &str) -> twinhub::job::JobId {
    twinhub::job::JobId::new(s).unwrap()
}

#[test]
fn jobs_their_history_and_their_work_in_flight_survive_restarts() {
    use twinhub::job::{CancelMode, JobSpec, JobStatus, JobType};
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<DeviceId> = (0..3)
        .map(|i| DeviceId::new(&format!("pump-{i}")).unwrap())
        .collect();
    let asleep = DeviceId::new("asleep").unwrap();

    // First run: a read job finishes; a job scheduled for later waits; a reboot
    // of a device that is offline waits for it.
    let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let mut fleet = transport(&ids);
    fleet
        .add_device(
            Instant::now(),
            DeviceSpec::new(asleep.clone()).starts_offline(),
        )
        .unwrap();
    let config = HubConfig {
        store: Some(SharedStore::new(store)),
        ..HubConfig::default()
    };
    let hub = Hub::with_transport(fleet, registry, config);
    for id in ids.iter().chain([&asleep]) {
        hub.create_device(Twin::new(id.clone())).unwrap();
    }
    let fw = JobType::FirmwareUpdate {
        package_uri: "coap://fw.example/3.0.bin".into(),
        expected_version: None,
    };
    let read = JobType::read_properties(&["FirmwareVersion", "BatteryLevel"]).unwrap();
    hub.create_job(JobSpec::new(job_id("fw"), read, ids.clone()))
        .unwrap();
    // A job over a device the registry does not hold is refused, and nothing is created.
    let ghost = DeviceId::new("ghost").unwrap();
    let reboot_ghost = JobSpec::new(
        job_id("ghost"),
        JobType::Reboot {
            wait_for_registration: false,
        },
        vec![ids[0].clone(), ghost.clone()],
    );
    assert_eq!(
        hub.create_job(reboot_ghost),
        Err(twinhub::job::SpecError::UnknownDevice(ghost))
    );
    assert!(hub.job(&job_id("ghost")).is_none());
    let later = twinhub::Timestamp::now().saturating_add(Duration::from_secs(3600));
    hub.create_job(JobSpec::new(job_id("later"), fw, ids.clone()).start_at(later))
        .unwrap();
    let reboot = JobType::Reboot {
        wait_for_registration: false,
    };
    hub.create_job(JobSpec::new(job_id("wake"), reboot, vec![asleep.clone()]))
        .unwrap();
    wait_until("the read job done", || {
        hub.job(&job_id("fw"))
            .is_some_and(|r| r.status == JobStatus::Completed)
    });
    let fw_children = hub.job_children(&job_id("fw"));
    let fw_record = hub.job(&job_id("fw")).unwrap();
    hub.stop();
    drop(hub);

    // Second run: everything is back; the reboot runs once the device is online.
    let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let mut fleet = transport(&ids);
    fleet
        .add_device(Instant::now(), DeviceSpec::new(asleep.clone()))
        .unwrap();
    let config = HubConfig {
        store: Some(SharedStore::new(store)),
        ..HubConfig::default()
    };
    let hub = Hub::with_transport(fleet, registry, config);
    assert_eq!(hub.job(&job_id("fw")).unwrap(), fw_record);
    assert_eq!(hub.job_children(&job_id("fw")), fw_children);
    assert_eq!(
        hub.job(&job_id("later")).unwrap().status,
        JobStatus::Enqueued
    );
    wait_until("the reboot after the restart", || {
        hub.job(&job_id("wake"))
            .is_some_and(|r| r.status == JobStatus::Completed)
    });
    assert_eq!(
        hub.cancel_job(&job_id("later"), CancelMode::Abandon)
            .unwrap(),
        JobStatus::Cancelled
    );
    let history = hub.job_records().len();
    hub.stop();
    drop(hub);

    // Third run: the cancellation was durable when it returned.
    let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let config = HubConfig {
        store: Some(SharedStore::new(store)),
        ..HubConfig::default()
    };
    let hub = Hub::with_transport(transport(&ids), registry, config);
    assert_eq!(
        hub.job(&job_id("later")).unwrap().status,
        JobStatus::Cancelled
    );
    assert_eq!(
        hub.job(&job_id("wake")).unwrap().status,
        JobStatus::Completed
    );
    assert_eq!(hub.job_records().len(), history);
    hub.stop();
}

/// A twin removed while the hub was down (straight in the store): after the restart, its
/// job child, restored as waiting for the device, fails as `deviceRemoved` (before, it
/// waited for a registration that would never reach the job engine, and kept the job and
/// every later one from retention); the other device's child had finished.
#[test]
fn a_twin_removed_while_the_hub_was_down_fails_its_restored_job_child() {
    use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
    let dir = tempfile::tempdir().unwrap();
    let present = DeviceId::new("pump-present").unwrap();
    let absent = DeviceId::new("pump-absent").unwrap();
    // Only `present` is in the simulated fleet: `absent` never registers.
    let hub = durable_hub(dir.path(), std::slice::from_ref(&present));
    for id in [&present, &absent] {
        hub.create_device(Twin::new(id.clone())).unwrap();
    }
    let job = JobId::new("config").unwrap();
    hub.create_job(JobSpec::new(
        job.clone(),
        JobType::ConfigurationUpdate {
            name: "mode".into(),
            value: "eco".into(),
        },
        vec![present.clone(), absent.clone()],
    ))
    .unwrap();
    wait_until("one done, one waiting", || {
        let s = hub.job_statistics(&job).unwrap();
        s.succeeded == 1 && s.waiting_for_device == 1
    });
    hub.stop();
    drop(hub);

    {
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        reg.remove(absent.as_str()).unwrap();
        store.commit(&reg).unwrap();
    }

    let hub = durable_hub(dir.path(), std::slice::from_ref(&present));
    wait_until("the job to end", || {
        hub.job(&job).unwrap().status == JobStatus::Completed
    });
    let child = hub
        .job_children(&job)
        .into_iter()
        .find(|r| r.device_id.as_ref() == Some(&absent))
        .unwrap();
    assert_eq!(
        (child.status, child.failure_reason.as_deref()),
        (JobStatus::Failed, Some("deviceRemoved"))
    );
    assert_eq!(hub.job_statistics(&job).unwrap().succeeded, 1);
    hub.stop();
}
