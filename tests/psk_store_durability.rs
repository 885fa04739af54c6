//! Which ways of setting a device's PSK credentials on a hub outlive a restart: all that
//! are left. `Hub::psk_store` hands out the key store read-only (a `set` through it reached
//! neither the twin nor the disk and was gone after a restart; that no longer compiles, see
//! the `compile_fail` example on `Hub::psk_store`).
#![cfg(feature = "dtls")]

use twinhub::DeviceId;
use twinhub::dtls::{PskCredentials, PskKey};
use twinhub::hub::Hub;
use twinhub::twin::{Authentication, Twin};

mod hub_support;
use hub_support::open_dtls_hub;

fn dev(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn creds(identity: &str, seed: u8) -> PskCredentials {
    PskCredentials::new(identity, PskKey::new(vec![seed; 16])).unwrap()
}

/// What the hub's key store and twins say about an identity: (the device holding it in
/// the key store, that device's twin's identity).
fn holder(hub: &Hub, identity: &str) -> (Option<DeviceId>, Option<String>) {
    let device = hub.psk_store().unwrap().device_of(identity);
    let in_twin = device
        .as_ref()
        .and_then(|d| hub.twin(d.as_str()))
        .and_then(|t| t.authentication.psk_identity);
    (device, in_twin)
}

#[test]
fn credentials_set_through_the_hub_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || open_dtls_hub(dir.path());
    let hub = open();
    // set_psk on an existing twin; a rotation; create_device with credentials; a removal.
    hub.create_device(Twin::new(dev("pump"))).unwrap();
    hub.set_psk("pump", creds("pump-id", 1)).unwrap();
    hub.create_device(Twin::new(dev("valve"))).unwrap();
    hub.set_psk("valve", creds("valve-old", 2)).unwrap();
    hub.set_psk("valve", creds("valve-new", 3)).unwrap();
    let mut fan = Twin::new(dev("fan"));
    fan.authentication = Authentication {
        psk_identity: Some("fan-id".into()),
        psk_key: Some(PskKey::new(vec![4; 16])),
    };
    hub.create_device(fan).unwrap();
    hub.create_device(Twin::new(dev("gone"))).unwrap();
    hub.set_psk("gone", creds("gone-id", 5)).unwrap();
    assert!(hub.remove_psk("gone").unwrap());
    let identities = ["pump-id", "valve-old", "valve-new", "fan-id", "gone-id"];
    let before: Vec<_> = identities.iter().map(|i| holder(&hub, i)).collect();
    hub.stop();
    drop(hub);

    let hub = open();
    let after: Vec<_> = identities.iter().map(|i| holder(&hub, i)).collect();
    let len = hub.psk_store().unwrap().len();
    hub.stop();
    let held = |d: &str, i: &str| (Some(dev(d)), Some(i.to_owned()));
    let expected = vec![
        held("pump", "pump-id"),
        (None, None),
        held("valve", "valve-new"),
        held("fan", "fan-id"),
        (None, None),
    ];
    assert_eq!(before, expected, "before the restart");
    assert_eq!(after, expected, "after the restart");
    assert_eq!(len, 3);
}
