//! What the hub does when a commit to its store fails (forced with the store's hidden
//! `fail_next_commit`, as a failed write would): the caller is told, memory goes back to
//! what is durable, and the hub keeps working.

#![cfg(all(feature = "memory-fleet", feature = "fuzzing", feature = "dtls"))]

use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::dtls::{CredentialsError, PskCredentials, PskKey};
use twinhub::hub::{Hub, HubConfig, HubEvent, SubscribeOptions};
use twinhub::job::{JobId, JobSpec, JobType, SpecError};
use twinhub::store::{SharedStore, Store, StoreConfig};
use twinhub::transport::memory::{DeviceSpec, FaultProfile, MemoryConfig, MemoryTransport};
use twinhub::twin::Twin;

fn durable_hub(dir: &std::path::Path, id: &DeviceId) -> (Hub, SharedStore) {
    let (store, registry) = Store::open(dir, StoreConfig::default()).unwrap();
    let store = SharedStore::new(store);
    let mut transport = MemoryTransport::new(MemoryConfig::with_seed(5));
    let faults = FaultProfile {
        min_latency: Duration::from_millis(1),
        max_latency: Duration::from_millis(3),
        ..FaultProfile::default()
    };
    transport
        .add_device(Instant::now(), DeviceSpec::new(id.clone()).faults(faults))
        .unwrap();
    let config = HubConfig {
        store: Some(store.clone()),
        ..HubConfig::default()
    };
    (Hub::with_transport(transport, registry, config), store)
}

#[test]
fn a_psk_removal_that_is_not_durable_says_so_and_a_retry_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let id = DeviceId::new("pump").unwrap();
    {
        let (hub, store) = durable_hub(dir.path(), &id);
        hub.create_device(Twin::new(id.clone())).unwrap();
        let creds = PskCredentials::new("pump-id", PskKey::new(vec![7; 16])).unwrap();
        hub.set_psk("pump", creds).unwrap();
        store.lock().fail_next_commit();
        assert!(matches!(
            hub.remove_psk("pump"),
            Err(CredentialsError::NotDurable { .. })
        ));
        // Memory is what is durable: the twin still holds the key.
        let held = |hub: &Hub| hub.twin("pump").unwrap().authentication.psk_identity;
        assert_eq!(held(&hub).as_deref(), Some("pump-id"));
        assert_eq!(hub.remove_psk("pump"), Ok(true));
        assert_eq!(held(&hub), None);
        hub.stop();
    }
    let (_store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(registry.get("pump").unwrap().authentication().is_empty());
}

#[test]
fn after_a_job_commit_fails_subscribers_still_hear_job_progress() {
    let dir = tempfile::tempdir().unwrap();
    let id = DeviceId::new("pump").unwrap();
    let (hub, store) = durable_hub(dir.path(), &id);
    hub.create_device(Twin::new(id.clone())).unwrap();
    let events = hub
        .subscribe(SubscribeOptions {
            twins: false,
            lifecycle: false,
            ..SubscribeOptions::default()
        })
        .unwrap();
    let spec = |name: &str| {
        JobSpec::new(
            JobId::new(name).unwrap(),
            JobType::ConfigurationUpdate {
                name: "a".into(),
                value: "1".into(),
            },
            vec![id.clone()],
        )
    };
    store.lock().fail_next_commit();
    assert!(matches!(
        hub.create_job(spec("lost")),
        Err(SpecError::NotDurable { .. })
    ));
    assert!(hub.job(&JobId::new("lost").unwrap()).is_none());
    // The engine rebuilt from the store reports the next job's progress.
    hub.create_job(spec("kept")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let heard = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(HubEvent::Job(p)) if p.record.job_id.as_str() == "kept" => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    assert!(
        heard,
        "no progress of the job created after the failed commit"
    );
    hub.stop();
}
