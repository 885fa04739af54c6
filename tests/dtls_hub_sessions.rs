//! What a device's DTLS session sees of the hub's credential changes and of the hub
//! stopping, over real UDP on loopback (the device a raw CoAP peer on a `DtlsClient`,
//! `dtls_support::RawDtlsDevice`):
//! a rotated or revoked key (`Hub::set_psk`, `Hub::remove_psk`, `Hub::remove_device`)
//! closes its sessions at once, with a close_notify, and their records are refused from
//! the change on; a hub that stops sends every session a close_notify.
#![cfg(feature = "dtls")]

mod dtls_support;

use dtls_support::RawDtlsDevice;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::coap::{Code, Message};
use twinhub::dtls::{PskCredentials, PskKey};
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::twin::Twin;

fn creds(identity: &str, seed: u8) -> PskCredentials {
    PskCredentials::new(identity, PskKey::new(vec![seed; 16])).unwrap()
}

fn update(location: &str, lifetime: u32) -> Message {
    let mut m = Message::request(Code::POST, location);
    m.add_uri_query(&format!("lt={lifetime}"));
    m
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A DTLS hub on loopback where each of `devices` has credentials `<device>-id`, keys 1, 2, ...
fn hub_with(devices: &[&str]) -> Hub {
    let mut registry = Registry::new();
    for d in devices {
        registry
            .create(Twin::new(DeviceId::new(d).unwrap()))
            .unwrap();
    }
    // No property sync: the hub sends the devices nothing of its own (its Observes, unanswered
    // here, would be retransmitted over the session and close it by the way).
    let config = HubConfig {
        sync: None,
        ..HubConfig::default()
    };
    let hub = Hub::bind_dtls("127.0.0.1:0", registry, config).unwrap();
    for (i, d) in devices.iter().enumerate() {
        hub.set_psk(d, creds(&format!("{d}-id"), i as u8 + 1))
            .unwrap();
    }
    hub
}

/// The lifetime of the registration `device`'s twin holds.
fn lifetime(hub: &Hub, device: &str) -> Option<u32> {
    hub.twin(device)
        .and_then(|t| t.registration.map(|r| r.lifetime))
}

/// `kr-1` registers over DTLS and Updates once (lifetime 400: the Update is seen in the
/// twin); an Update (lifetime 600) is encrypted under the session and held back; `change`
/// withdraws the key. The session must be closed with a close_notify well before the
/// DTLS server's sweep (a minute), with nothing sent by the device, and the held Update,
/// sent after the change, must reach no session.
///
/// Before the fix, the sessions of a withdrawn key were closed only at their next
/// datagram or at the sweep (up to 60 s later): the device kept a session the hub would
/// no longer honour and learnt of it only when it next sent (its records were refused
/// from the change on already: the held Update checks that this stays so).
fn withdrawn_key_closes_the_session_at_once(what: &str, change: impl FnOnce(&Hub)) {
    let hub = hub_with(&["kr-1"]);
    let mut peer = RawDtlsDevice::new(hub.local_addr().unwrap(), creds("kr-1-id", 1));
    let location = peer.register("kr-1");
    let answer = peer
        .exchange(update(&location, 400))
        .expect("an Update answer");
    assert_eq!(answer.code, Code::CHANGED);
    wait("the Update in the twin", || {
        lifetime(&hub, "kr-1") == Some(400)
    });
    assert_eq!(hub.dtls_stats().unwrap().sessions, 1);

    let held = peer.encode(update(&location, 600));
    peer.dtls.send(Instant::now(), &held);
    let held: Vec<Vec<u8>> = std::iter::from_fn(|| peer.dtls.poll_transmit()).collect();
    assert_eq!(held.len(), 1, "{what}: one record for the held Update");

    change(&hub);
    assert!(
        peer.sees_close_within(Duration::from_secs(30)),
        "{what}: no close_notify within 30 s of the change"
    );
    assert_eq!(hub.dtls_stats().unwrap().sessions, 0, "{what}");

    let dropped = hub.dtls_stats().unwrap().dropped_no_session;
    peer.socket.send_to(&held[0], peer.server).unwrap();
    wait("the held Update handled", || {
        hub.dtls_stats().unwrap().dropped_no_session > dropped
    });
    assert_eq!(
        hub.dtls_stats().unwrap().dropped_no_session,
        dropped + 1,
        "{what}: the held Update reached a session"
    );
    std::thread::sleep(Duration::from_millis(200));
    if hub.twin("kr-1").is_some() {
        assert_eq!(
            lifetime(&hub, "kr-1"),
            Some(400),
            "{what}: the Update under the withdrawn key was applied"
        );
    }
    hub.stop();
}

#[test]
fn a_rotated_key_closes_its_session_at_once() {
    withdrawn_key_closes_the_session_at_once("set_psk (same identity, new key)", |hub| {
        hub.set_psk("kr-1", creds("kr-1-id", 9)).unwrap()
    });
}

#[test]
fn a_key_moved_to_a_new_identity_closes_the_old_identitys_session_at_once() {
    withdrawn_key_closes_the_session_at_once("set_psk (new identity)", |hub| {
        hub.set_psk("kr-1", creds("kr-1-new", 9)).unwrap()
    });
}

#[test]
fn a_removed_key_closes_its_session_at_once() {
    withdrawn_key_closes_the_session_at_once("remove_psk", |hub| {
        assert!(hub.remove_psk("kr-1").unwrap())
    });
}

#[test]
fn a_removed_device_closes_its_session_at_once() {
    withdrawn_key_closes_the_session_at_once("remove_device", |hub| {
        hub.remove_device("kr-1").unwrap();
    });
}

/// Setting the very same credentials again (a retried `set_psk`) withdraws nothing: the
/// session stays and carries the next Update.
#[test]
fn the_same_credentials_again_keep_the_session() {
    let hub = hub_with(&["kr-1"]);
    let mut peer = RawDtlsDevice::new(hub.local_addr().unwrap(), creds("kr-1-id", 1));
    let location = peer.register("kr-1");
    hub.set_psk("kr-1", creds("kr-1-id", 1)).unwrap();
    assert!(
        !peer.sees_close_within(Duration::from_millis(600)),
        "the same credentials again closed the session"
    );
    let answer = peer
        .exchange(update(&location, 400))
        .expect("an Update answer");
    assert_eq!(answer.code, Code::CHANGED);
    assert_eq!(peer.dtls.handshakes(), 1);
    hub.stop();
}

/// Two devices with sessions; the hub stops (`Hub::stop`), or its last handle is dropped.
/// Each device must get a close_notify. Before the fix the UDP driver's thread just ended:
/// the devices kept sessions to a hub that was gone until their own requests timed out.
fn stopping_sends_close_notify(stop: impl FnOnce(Hub)) {
    let hub = hub_with(&["sd-1", "sd-2"]);
    let mut peers: Vec<RawDtlsDevice> = ["sd-1", "sd-2"]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut peer = RawDtlsDevice::new(
                hub.local_addr().unwrap(),
                creds(&format!("{d}-id"), i as u8 + 1),
            );
            peer.register(d);
            peer
        })
        .collect();
    assert_eq!(hub.dtls_stats().unwrap().sessions, 2);
    stop(hub);
    for (i, peer) in peers.iter_mut().enumerate() {
        assert!(
            peer.sees_close_within(Duration::from_secs(30)),
            "device {i} got no close_notify from the stopped hub"
        );
    }
}

#[test]
fn a_stopped_hub_closes_every_session_with_close_notify() {
    stopping_sends_close_notify(|hub| hub.stop());
}

#[test]
fn a_dropped_hub_closes_every_session_with_close_notify() {
    stopping_sends_close_notify(drop);
}
