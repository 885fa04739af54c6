//! A device closes its DTLS session (close_notify): its LWM2M registration outlives the
//! session, as in Leshan; the device handshakes again and Updates the registration.
//! Over real UDP on loopback, the device side a raw CoAP peer on a `DtlsClient`
//! (`dtls_support::RawDtlsDevice`).
#![cfg(feature = "dtls")]

mod dtls_support;

use dtls_support::RawDtlsDevice;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::coap::{Code, Message};
use twinhub::dtls::{PskCredentials, PskKey};
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::twin::{ConnectionState, Twin};

fn creds() -> PskCredentials {
    PskCredentials::new("cl-1-id", PskKey::new(vec![5; 16])).unwrap()
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (connection state, registration id) of the twin.
fn registration(hub: &Hub) -> (ConnectionState, Option<String>) {
    let reg = hub.registry().read();
    let twin = reg.get("cl-1").unwrap();
    (
        twin.connection_state(),
        twin.registration().map(|r| r.registration_id.clone()),
    )
}

#[test]
fn a_registration_outlives_a_closed_dtls_session_and_is_updated_over_a_new_one() {
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("cl-1").unwrap()))
        .unwrap();
    let hub = Hub::bind_dtls("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    hub.set_psk("cl-1", creds()).unwrap();
    let mut peer = RawDtlsDevice::new(hub.local_addr().unwrap(), creds());
    let mut register = Message::request(Code::POST, "/rd");
    register.add_uri_query("ep=cl-1");
    register.add_uri_query("lt=300");
    register.payload = b"</3/0>".to_vec();
    let answer = peer.exchange(register).expect("an answer to Register");
    assert_eq!(answer.code, Code::CREATED);
    let location: Vec<String> = answer.location_path().map(str::to_owned).collect();
    wait("the registration", || {
        registration(&hub).0 == ConnectionState::Connected
    });
    let (_, id) = registration(&hub);
    assert_eq!(location.last(), id.as_ref());
    assert_eq!(hub.dtls_stats().unwrap().sessions, 1);

    // The device closes its session: the hub drops it, and keeps the registration.
    assert!(peer.dtls.close(Instant::now()));
    peer.flush();
    wait("the session to close", || {
        hub.dtls_stats().unwrap().sessions == 0
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        registration(&hub),
        (ConnectionState::Connected, id.clone()),
        "the registration did not outlive the session"
    );

    // A new session (a new handshake from the same address) Updates it.
    let mut update = Message::request(Code::POST, &location.join("/"));
    update.add_uri_query("lt=300");
    let answer = peer.exchange(update).expect("an answer to Update");
    assert_eq!(answer.code, Code::CHANGED);
    assert_eq!(peer.dtls.handshakes(), 2);
    assert_eq!(hub.dtls_stats().unwrap().sessions, 1);
    assert_eq!(registration(&hub), (ConnectionState::Connected, id));
    hub.stop();
}
