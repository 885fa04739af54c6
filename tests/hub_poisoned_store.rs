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
