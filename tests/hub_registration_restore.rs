//! Issue #15: registrations survive a restart. A hub restarted on its store (on the same
//! UDP address) takes back the registrations its twins hold: it reaches the device
//! without the device registering again, follows its values through a fresh sync
//! observation, and takes its Updates and De-register at the old location. A twin whose
//! registration ran out while the hub was down is marked disconnected.

#![cfg(all(feature = "device", feature = "lwm2m"))]

mod e2e_support;

use e2e_support::{prop, start, wait_for};
use std::time::Duration;
use twinhub::hub::{Hub, HubConfig, HubEvent, LifecycleKind, SubscribeOptions};
use twinhub::store::{SharedStore, Store, StoreConfig};
use twinhub::transport::{DeviceReply, DeviceRequest};
use twinhub::twin::{ConnectionState, Scalar, Twin};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue, Timestamp};

fn durable(dir: &std::path::Path, addr: &str) -> Hub {
    let (store, registry) = Store::open(dir, StoreConfig::default()).unwrap();
    let config = HubConfig {
        store: Some(SharedStore::new(store)),
        ..HubConfig::default()
    };
    Hub::bind_udp(addr, registry, config).unwrap()
}

#[test]
fn a_restarted_hub_reaches_its_devices_without_a_new_registration() {
    let dir = tempfile::tempdir().unwrap();
    let hub = durable(dir.path(), "127.0.0.1:0");
    let addr = hub.local_addr().unwrap();
    hub.create_device(Twin::new(DeviceId::new("kept").unwrap()))
        .unwrap();
    // A twin whose registration ran out an hour ago: connected, 60 s lifetime.
    hub.create_device(Twin::new(DeviceId::new("lapsed").unwrap()))
        .unwrap();
    let mut devices = vec![start("kept", addr, false)];
    wait_for(&mut devices, "the twin to fill", || {
        prop(&hub, "kept", "BatteryLevel").is_some()
    });
    {
        let mut reg = hub.registry().write();
        let mut info = reg.get("kept").unwrap().registration().unwrap().clone();
        info.endpoint = "lapsed".into();
        info.registration_id = "00000000000000aa".into();
        info.lifetime = 60;
        info.address = Some("127.0.0.1:9".parse().unwrap());
        let hour_ago = Timestamp::from_millis(Timestamp::now().as_millis() - 3_600_000);
        reg.set_registration("lapsed", Some(info)).unwrap();
        reg.set_connection_state("lapsed", ConnectionState::Connected, hour_ago)
            .unwrap();
        reg.set_last_activity("lapsed", hour_ago).unwrap();
    }
    // Committed with the next service write.
    hub.add_tags("kept", &["a"], None).unwrap();
    hub.stop();
    drop(hub);

    let hub = durable(dir.path(), &addr.to_string());
    let events = hub.subscribe(SubscribeOptions::default()).unwrap();
    let kept = hub.twin("kept").unwrap();
    assert_eq!(kept.connection_state, ConnectionState::Connected);
    assert_eq!(
        hub.twin("lapsed").unwrap().connection_state,
        ConnectionState::Disconnected,
        "a registration that ran out while the hub was down"
    );
    // The hub reaches the device at once: the registration is back.
    let id = DeviceId::new("kept").unwrap();
    let read = hub
        .request(
            &id,
            DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        )
        .wait(Duration::from_secs(10))
        .expect("the restored registration reaches the device");
    assert!(matches!(read, DeviceReply::Content(_)), "{read:?}");
    // A change on the device arrives through the fresh sync observation.
    devices[0]
        .thread
        .as_ref()
        .unwrap()
        .with(|c| c.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(33)))
        .unwrap();
    wait_for(&mut devices, "the notification after the restart", || {
        prop(&hub, "kept", "BatteryLevel") == Some(Scalar::from(33))
    });
    // An Update at the old location is accepted (no 4.04, no new Register).
    devices[0]
        .thread
        .as_ref()
        .unwrap()
        .with(|c| c.trigger_update());
    let mut seen = Vec::new();
    wait_for(&mut devices, "the Update", || {
        while let Ok(HubEvent::Lifecycle(l)) = events.try_recv() {
            seen.push(l.event);
        }
        seen.contains(&LifecycleKind::Updated)
    });
    assert!(
        !seen.contains(&LifecycleKind::Registered),
        "the device never registered again: {seen:?}"
    );
    // De-register at the old location.
    devices[0]
        .thread
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(30))
        .unwrap();
    wait_for(&mut devices, "the de-registration", || {
        hub.twin("kept").unwrap().connection_state == ConnectionState::Disconnected
    });
}

/// Packages the hub serves are durable with its store: a restarted hub serves what was
/// published and not withdrawn, and a device pulls it in a firmware job; a publish the
/// store refuses publishes nothing (and counts for the store's backoff).
#[cfg(feature = "fuzzing")]
#[test]
fn published_packages_survive_a_restart() {
    use twinhub::hub::PublishError;
    use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
    let dir = tempfile::tempdir().unwrap();
    let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    let store = SharedStore::new(store);
    let config = HubConfig {
        store: Some(store.clone()),
        ..HubConfig::default()
    };
    let hub = Hub::bind_udp("127.0.0.1:0", registry, config).unwrap();
    let image: Vec<u8> = (0..4000u32).map(|i| (i % 253) as u8).collect();
    hub.publish_package("fw/2.0.bin", image.clone()).unwrap();
    hub.publish_package("fw/old.bin", vec![1; 100]).unwrap();
    assert_eq!(hub.withdraw_package("fw/old.bin"), Ok(true));
    store.lock().fail_next_commit();
    assert!(matches!(
        hub.publish_package("fw/lost.bin", vec![2; 100]),
        Err(PublishError::NotDurable { .. })
    ));
    assert_eq!(hub.packages(), ["fw/2.0.bin"]);
    // A package write counts for the store's backoff like a commit: a failure is one
    // in a row, a success ends the count.
    assert_eq!(hub.metrics().failed_commits, 1);
    hub.publish_package("fw/2.0.bin", image.clone()).unwrap();
    assert_eq!(hub.metrics().failed_commits, 0);
    hub.create_device(Twin::new(DeviceId::new("pulls").unwrap()))
        .unwrap();
    hub.stop();
    drop(hub);
    drop(store);

    let hub = durable(dir.path(), "127.0.0.1:0");
    assert_eq!(hub.packages(), ["fw/2.0.bin"]);
    let addr = hub.local_addr().unwrap();
    let mut devices = vec![start("pulls", addr, false)];
    wait_for(&mut devices, "the twin to fill", || {
        prop(&hub, "pulls", "BatteryLevel").is_some()
    });
    let spec = JobSpec::new(
        JobId::new("fw-after-restart").unwrap(),
        JobType::FirmwareUpdate {
            package_uri: format!("coap://{addr}/pkg/fw/2.0.bin"),
            expected_version: Some("2.0".into()),
        },
        vec![DeviceId::new("pulls").unwrap()],
    );
    assert_eq!(
        e2e_support::run_job(&hub, &mut devices, spec),
        JobStatus::Completed
    );
    assert_eq!(
        devices[0].package.lock().unwrap().as_deref(),
        Some(&image[..])
    );
    for d in devices.iter_mut() {
        drop(d.thread.take());
    }
    hub.stop();
}

/// The packages are bounded by a count and a total of bytes: a publication past either
/// is refused and reaches neither memory nor the store; a replacement counts its new
/// body instead of the old one. A hub restarted with lower limits keeps every package
/// its store held and refuses new ones until enough are withdrawn.
#[test]
fn packages_past_their_limits_are_refused_and_a_restart_under_lower_limits_keeps_them() {
    use twinhub::hub::PublishError;
    use twinhub::lwm2m::server::{PackageError, PackageLimits};
    let dir = tempfile::tempdir().unwrap();
    let bind = |limits: PackageLimits| {
        let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let config = HubConfig {
            store: Some(SharedStore::new(store)),
            package_limits: limits,
            ..HubConfig::default()
        };
        Hub::bind_udp("127.0.0.1:0", registry, config).unwrap()
    };
    let full = |r: Result<String, PublishError>| {
        matches!(r, Err(PublishError::Package(PackageError::Full { .. })))
    };
    let hub = bind(PackageLimits {
        max_packages: 2,
        max_total_bytes: 1000,
    });
    hub.publish_package("a", vec![1; 400]).unwrap();
    hub.publish_package("b", vec![2; 400]).unwrap();
    assert!(
        full(hub.publish_package("c", vec![3; 1])),
        "a third package"
    );
    assert!(full(hub.publish_package("b", vec![2; 601])), "1,001 bytes");
    // Replacing `b` with 600 bytes makes 1,000: allowed.
    hub.publish_package("b", vec![2; 600]).unwrap();
    assert_eq!(hub.packages(), ["a", "b"]);
    hub.stop();
    drop(hub);

    let hub = bind(PackageLimits {
        max_packages: 1,
        max_total_bytes: 100,
    });
    assert_eq!(
        hub.packages(),
        ["a", "b"],
        "the store's packages are all kept"
    );
    assert!(full(hub.publish_package("a", vec![1; 10])));
    assert_eq!(hub.withdraw_package("b"), Ok(true));
    assert!(full(hub.publish_package("a", vec![1; 101])));
    hub.publish_package("a", vec![1; 100]).unwrap();
    hub.stop();
    drop(hub);

    let hub = durable(dir.path(), "127.0.0.1:0");
    assert_eq!(
        hub.packages(),
        ["a"],
        "the refused publications never reached the store"
    );
    hub.stop();
}
