//! Hostile review of device credentials and the DTLS listener as a service and devices
//! see them: the hub's live key store kept in step with the twins, identities owned by
//! one device across a restart, removal racing re-provisioning.

#![cfg(all(feature = "dtls", feature = "device", feature = "lwm2m"))]

use std::sync::Arc;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::dtls::{PskCredentials, PskKey};
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::twin::{Authentication, Twin};

mod hub_support;
use hub_support::open_dtls_hub;

fn dev(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn creds(identity: &str, seed: u8) -> PskCredentials {
    PskCredentials::new(identity, PskKey::new(vec![seed; 16])).unwrap()
}

fn twin_with_credentials(device: &str, identity: &str, seed: u8) -> Twin {
    let mut twin = Twin::new(dev(device));
    twin.authentication = Authentication {
        psk_identity: Some(identity.to_owned()),
        psk_key: Some(PskKey::new(vec![seed; 16])),
    };
    twin
}

/// credentials.rs module docs: "the twin's [`Authentication`] holds the identity and the
/// key ... The DTLS layer reads keys from a [`PskStore`] ..., which the hub keeps in step
/// with the twins". A twin created through the hub with its credentials must be able to
/// handshake; otherwise it is locked out (plain CoAP is refused for a twin with a key, and
/// this is a coaps-only hub) until the next restart loads the key.
#[test]
fn a_twin_created_with_credentials_is_in_the_live_key_store() {
    let hub = Hub::bind_dtls("127.0.0.1:0", Registry::new(), HubConfig::default()).unwrap();
    hub.create_device(twin_with_credentials("born-keyed", "born-keyed-id", 3))
        .unwrap();
    let store = hub.psk_store().unwrap();
    let in_twin = hub
        .twin("born-keyed")
        .unwrap()
        .authentication
        .psk_key
        .is_some();
    assert!(in_twin);
    assert_eq!(
        store.device_of("born-keyed-id"),
        Some(dev("born-keyed")),
        "the twin holds credentials the live key store does not know"
    );
    hub.stop();
}

/// `Hub::set_psk`: "Fails for an unknown device or an identity another device holds";
/// `PskStore`: "an identity held by another device is refused"; README: a device
/// "registers only over a session whose PSK identity belongs to it". Creating a twin that
/// claims an identity a live device holds must not hand that identity (and so the right
/// to register as the intruder with the owner's identity) to the intruder at restart.
#[test]
fn a_created_twin_cannot_take_another_devices_identity_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || open_dtls_hub(dir.path());
    let hub = open();
    hub.create_device(Twin::new(dev("zzz-owner"))).unwrap();
    hub.set_psk("zzz-owner", creds("shared-id", 1)).unwrap();
    let created = hub.create_device(twin_with_credentials("aaa-intruder", "shared-id", 9));
    let live_before = hub.psk_store().unwrap().device_of("shared-id");
    hub.stop();
    drop(hub);

    let hub = open();
    let live_after = hub.psk_store().unwrap().device_of("shared-id");
    hub.stop();
    assert_eq!(live_before, Some(dev("zzz-owner")));
    assert_eq!(
        live_after,
        Some(dev("zzz-owner")),
        "create_device of a twin claiming the identity returned {created:?}; after a \
         restart the identity belongs to the intruder"
    );
}

/// `Hub::remove_device`: "Its credentials go with it"; module docs: "[`Hub::set_psk`]
/// writes both [twin and key store], ... [`Hub::remove_device`] clear[s] both". A removal
/// racing a re-creation and `set_psk` of the same id must not leave a twin holding
/// credentials the live key store has lost (the device locked out until a restart).
#[test]
fn remove_device_racing_recreate_and_set_psk_keeps_twin_and_key_store_in_step() {
    let hub =
        Arc::new(Hub::bind_dtls("127.0.0.1:0", Registry::new(), HubConfig::default()).unwrap());
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut trials = 0;
    let mut out_of_step = None;
    while Instant::now() < deadline && trials < 2000 && out_of_step.is_none() {
        trials += 1;
        hub.create_device(Twin::new(dev("racer"))).unwrap();
        hub.set_psk("racer", creds("racer-id", 1)).unwrap();
        let h = hub.clone();
        let remover = std::thread::spawn(move || h.remove_device("racer").is_ok());
        // As soon as the twin is gone, provision the device again.
        let spin_until = Instant::now() + Duration::from_millis(200);
        let mut created = false;
        while !created && Instant::now() < spin_until {
            created = hub.create_device(Twin::new(dev("racer"))).is_ok();
        }
        let recreated = created && hub.set_psk("racer", creds("racer-id", 2)).is_ok();
        remover.join().unwrap();
        let twin_has = hub
            .twin("racer")
            .is_some_and(|t| t.authentication.psk_key.is_some());
        let store_has = hub.psk_store().unwrap().has_device(&dev("racer"));
        if recreated && twin_has != store_has {
            out_of_step = Some((trials, twin_has, store_has));
        }
        let _ = hub.remove_device("racer");
    }
    hub.stop();
    assert_eq!(
        out_of_step, None,
        "(trial, twin holds a key, key store holds one) after {trials} trials"
    );
}

/// Credentials module docs: `bind_dtls` "fills the store from the twins it starts with".
/// An identity two twins claim (written around the hub) was given to the first by id
/// order, so one device could be let in under another's identity after a restart; now
/// it is loaded for neither, and the hub still refuses a third claim.
#[test]
fn an_identity_two_twins_claim_is_loaded_for_neither() {
    let mut registry = Registry::new();
    registry
        .create(twin_with_credentials("aaa", "twice", 1))
        .unwrap();
    registry
        .create(twin_with_credentials("bbb", "twice", 2))
        .unwrap();
    registry
        .create(twin_with_credentials("ccc", "once", 3))
        .unwrap();
    let hub = Hub::bind_dtls("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    let store = hub.psk_store().unwrap();
    assert_eq!(store.device_of("twice"), None);
    assert_eq!(store.device_of("once"), Some(dev("ccc")));
    assert!(
        hub.create_device(twin_with_credentials("ddd", "once", 4))
            .is_err()
    );
    hub.stop();
}
