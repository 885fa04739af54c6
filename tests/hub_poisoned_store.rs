//! A service write after a failed commit whose rebuild failed too (the store is left
//! poisoned and memory still holds the refused write) is checked against what is
//! durable: the hub rebuilds memory from the store first. Before, a retry of a refused
//! removal said "not found", a retried job was a "duplicate" of one that then vanished,
//! a retried `remove_psk` returned Ok with the key still on disk, and a `set_psk` rolled
//! the live key store back to refused credentials. (Findings of a review helper.)

#![cfg(feature = "fuzzing")]

mod hub_support;

use hub_support::durable_store;
use twinhub::DeviceId;
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::store::{SharedStore, Store, StoreConfig};

/// A store in a fresh directory whose registry holds the twin `pump`, and a hub
/// configuration that writes to it.
fn store_with_pump() -> (SharedStore, Registry, HubConfig, tempfile::TempDir) {
    durable_store(&[&DeviceId::new("pump").unwrap()], HubConfig::default())
}

/// A durable hub over a store in a fresh directory holding the twin `pump`, with no
/// devices talking: these tests are about service writes.
fn durable_hub() -> (Hub, SharedStore, tempfile::TempDir) {
    let (hub, store, _script, dir) =
        hub_support::durable_hub(&[&DeviceId::new("pump").unwrap()], HubConfig::default());
    (hub, store, dir)
}

/// The next commit and the rebuild after it fail: the store is left poisoned.
fn poison_next_write(store: &SharedStore) {
    let mut store = store.lock();
    store.fail_next_commit();
    store.fail_next_reload();
}

#[test]
fn a_retried_removal_and_a_retried_job_go_through_after_a_failed_rebuild() {
    use twinhub::job::{JobId, JobSpec, JobType, SpecError};
    use twinhub::registry::RegistryError;
    let (hub, store, dir) = durable_hub();
    let spec = || {
        JobSpec::new(
            JobId::new("cfg").unwrap(),
            JobType::ConfigurationUpdate {
                name: "a".into(),
                value: "1".into(),
            },
            vec![DeviceId::new("pump").unwrap()],
        )
    };
    poison_next_write(&store);
    assert!(matches!(
        hub.create_job(spec()),
        Err(SpecError::NotDurable { .. })
    ));
    // The retry finds no trace of the refused job, and creates it.
    hub.create_job(spec()).unwrap();
    poison_next_write(&store);
    assert!(matches!(
        hub.remove_device("pump"),
        Err(RegistryError::NotDurable { .. })
    ));
    // The retry finds the twin the disk still has, and removes it.
    hub.remove_device("pump").unwrap();
    assert!(hub.job(&JobId::new("cfg").unwrap()).is_some());
    hub.stop();
    drop(hub);
    drop(store);
    let (_store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(!registry.contains("pump"), "the removal is durable");
}

#[cfg(feature = "dtls")]
#[test]
fn credentials_written_after_a_failed_rebuild_agree_in_twin_key_store_and_disk() {
    use twinhub::dtls::{CredentialsError, PskCredentials, PskKey};
    let (store, registry, config, dir) = store_with_pump();
    let hub = Hub::bind_dtls("127.0.0.1:0", registry, config).unwrap();
    let pump = DeviceId::new("pump").unwrap();
    let creds = |n: u8| PskCredentials::new(&format!("id-{n}"), PskKey::new(vec![n; 16])).unwrap();
    let identities = |hub: &Hub| {
        (
            hub.twin("pump").unwrap().authentication.psk_identity,
            hub.psk_store()
                .unwrap()
                .identity_of(&pump)
                .map(|i| i.to_string()),
        )
    };
    hub.set_psk("pump", creds(1)).unwrap();
    poison_next_write(&store);
    assert!(matches!(
        hub.set_psk("pump", creds(2)),
        Err(CredentialsError::NotDurable { .. })
    ));
    // The next rotation starts from what is durable (id-1), not from the refused id-2.
    hub.set_psk("pump", creds(3)).unwrap();
    assert_eq!(
        identities(&hub),
        (Some("id-3".to_owned()), Some("id-3".to_owned()))
    );
    // A refused removal, then its retry: done, in memory and on disk.
    poison_next_write(&store);
    assert!(matches!(
        hub.remove_psk("pump"),
        Err(CredentialsError::NotDurable { .. })
    ));
    assert_eq!(hub.remove_psk("pump"), Ok(true));
    assert_eq!(identities(&hub), (None, None));
    hub.stop();
    drop(hub);
    drop(store);
    let (_store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(
        registry
            .get("pump")
            .unwrap()
            .authentication()
            .psk_identity
            .is_none(),
        "the removal is durable"
    );
}

/// A batch of device events whose commit fails, and whose rebuilds of memory fail too
/// (the store stays poisoned through the next try), is applied once, to the job engine
/// rebuilt from the store: never again to the engine that took it first. A rollout of
/// one device at a time over three: the answer that ends the first child lands in such a
/// batch. The first child is reported done once, each next child starts once (one Write
/// and one Execute each), and the disk agrees. The batch is never applied twice to one
/// engine (checked for a note that said so): the hub rebuilds memory before it applies a
/// batch over a poisoned store (`Inner::ready_to_write` in `Inner::process`), and a
/// poisoned store refuses every commit until a rebuild replaced the engine, so an engine
/// that took a batch whose commit failed never commits, nor sends, nor reports. This
/// test failed on something else: the rebuilt engine started every child of the rollout
/// at once (any restored engine did: see `a_restored_rollout_keeps_max_in_flight` in the
/// job engine's tests), so `d2` and `d3` were written out of turn, then again.
#[test]
fn a_batch_whose_commit_and_rebuilds_fail_is_applied_once_to_the_rebuilt_engine() {
    use hub_support::{answer_done, job_ops, register, wait_committed, wait_until};
    use std::collections::HashSet;
    use std::time::{Duration, Instant};
    use twinhub::hub::{HubEvent, SubscribeOptions};
    use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
    use twinhub::transport::DeviceRequest;
    let devices: Vec<DeviceId> = ["d1", "d2", "d3"]
        .iter()
        .map(|d| DeviceId::new(d).unwrap())
        .collect();
    let config = HubConfig {
        sync: None,
        ..HubConfig::default()
    };
    let (hub, store, script, dir) =
        hub_support::durable_hub(&devices.iter().collect::<Vec<_>>(), config);
    for device in &devices {
        register(&hub, &script, device);
    }
    let progress = hub
        .subscribe(SubscribeOptions {
            twins: false,
            lifecycle: false,
            jobs: true,
            ..SubscribeOptions::default()
        })
        .unwrap();
    let job = JobId::new("cfg").unwrap();
    let spec = JobSpec::new(
        job.clone(),
        JobType::ConfigurationUpdate {
            name: "a".into(),
            value: "1".into(),
        },
        devices.clone(),
    )
    .max_in_flight(1);
    hub.create_job(spec).unwrap();
    let ops_to = |d: &DeviceId| {
        job_ops(&script)
            .into_iter()
            .filter(|o| &o.device == d)
            .collect::<Vec<_>>()
    };
    let d1 = &devices[0];
    // The first step (the Write) is answered and committed normally.
    wait_until("d1's Write", || ops_to(d1).len() == 1);
    answer_done(&script, d1, &ops_to(d1)[0]);
    wait_until("d1's read-back", || ops_to(d1).len() == 2);
    wait_committed(&hub, &store, "the read-back is durable");
    std::thread::sleep(Duration::from_millis(100));
    // The answer that ends d1's child: its batch's commit fails, the rebuild after it
    // fails, and so does the rebuild the hub tries before it applies the batch again.
    {
        let mut store = store.lock();
        store.fail_next_commit();
        store.fail_reloads(2);
    }
    answer_done(&script, d1, &ops_to(d1)[1]);
    wait_until("the backoff", || hub.metrics().failed_commits >= 2);
    // From here every operation is answered (once), whatever engine sent it.
    let mut answered: HashSet<_> = ops_to(d1).iter().map(|o| o.id).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while hub.job_statistics(&job).unwrap().succeeded < 3 {
        assert!(Instant::now() < deadline, "the rollout never ended");
        for op in job_ops(&script) {
            if answered.insert(op.id) {
                answer_done(&script, &op.device, &op);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_committed(&hub, &store, "the rollout is durable");
    std::thread::sleep(Duration::from_millis(200));
    let stats = hub.job_statistics(&job).unwrap();
    assert_eq!(
        (stats.device_count, stats.succeeded, stats.failed),
        (3, 3, 0),
        "{stats:?}"
    );
    // One child at a time: each Write is followed by its device's Execute before another
    // device's Write. The first child is written again (the rebuilt engine resumes it from
    // its Write, see the README), the others once.
    let ops = job_ops(&script);
    for pair in ops.chunks(2) {
        assert!(
            matches!(
                (&pair[0].request, &pair.get(1).map(|o| &o.request)),
                (
                    DeviceRequest::Write { .. },
                    Some(DeviceRequest::Execute { .. })
                )
            ) && pair[0].device == pair[1].device,
            "one child at a time: {ops:?}"
        );
    }
    for device in &devices[1..] {
        assert_eq!(ops_to(device).len(), 2, "{device} started once: {ops:?}");
    }
    let mut done: Vec<String> = std::iter::from_fn(|| progress.try_recv().ok())
        .filter_map(|e| match e {
            HubEvent::Job(p) if p.record.status == JobStatus::Completed => Some(
                p.record
                    .device_id
                    .as_ref()
                    .map_or_else(|| p.record.job_id.clone(), |d| d.to_string()),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        done.pop().as_deref(),
        Some("cfg"),
        "the job is reported done last"
    );
    done.sort();
    assert_eq!(
        done,
        vec!["d1", "d2", "d3"],
        "each child reported done once"
    );
    hub.stop();
    drop(hub);
    drop(store);
    let (store, _registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let engine = store
        .load_jobs(
            twinhub::job::EngineConfig::default(),
            Instant::now(),
            twinhub::Timestamp::now(),
        )
        .unwrap();
    assert_eq!(engine.statistics(&job), Some(stats), "the disk agrees");
}
