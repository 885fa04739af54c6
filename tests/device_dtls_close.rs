//! The device library's [`DeviceThread`] ends its DTLS session with a close_notify when it
//! stops (shut down, or its handle dropped), so the hub drops the session at once instead
//! of keeping it until its idle timeout (25 h by default). The registration outlives the
//! session, as with a raw `DtlsClient::close` (tests/dtls_close_registration.rs). Over
//! real UDP on loopback. (The switch from the bootstrap server to the provisioned one is
//! in tests/lwm2m_bootstrap.rs.)
#![cfg(all(feature = "device", feature = "dtls"))]

use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::dtls::{PskCredentials, PskKey};
use twinhub::hub::{Hub, HubConfig};
use twinhub::lwm2m::client::{ClientConfig, DeviceThread, Lwm2mClient, ObjectTree, objects};
use twinhub::registry::Registry;
use twinhub::twin::{ConnectionState, Twin};

fn creds() -> PskCredentials {
    PskCredentials::new("close-1-id", PskKey::new(vec![6; 16])).unwrap()
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hub() -> Hub {
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("close-1").unwrap()))
        .unwrap();
    let hub = Hub::bind_dtls("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    hub.set_psk("close-1", creds()).unwrap();
    hub
}

fn device(hub: &Hub) -> DeviceThread {
    let server = hub.local_addr().unwrap();
    let mut tree = ObjectTree::new();
    tree.add(objects::security(&format!("coaps://{server}"), 1));
    tree.add(objects::server(1, 300, "U"));
    tree.add(objects::device("twinhub", "close", "close-1", "1.0"));
    let config = ClientConfig::new("close-1", server).with_psk(creds());
    let client = Lwm2mClient::new(Instant::now(), config, tree);
    let thread = DeviceThread::spawn(client, "127.0.0.1:0".parse().unwrap()).unwrap();
    until("the registration", || {
        state(hub) == ConnectionState::Connected
    });
    assert_eq!(hub.dtls_stats().unwrap().sessions, 1);
    thread
}

fn state(hub: &Hub) -> ConnectionState {
    hub.registry()
        .read()
        .get("close-1")
        .unwrap()
        .connection_state()
}

fn sessions(hub: &Hub) -> u64 {
    hub.dtls_stats().unwrap().sessions
}

#[test]
fn a_shut_down_device_closes_its_session() {
    let hub = hub();
    let thread = device(&hub);
    thread.shutdown(Duration::from_secs(30)).unwrap();
    until("the session to close", || sessions(&hub) == 0);
    // The hub's thread applies the De-register a moment after the transport's thread
    // took it (and then the close_notify): however slow it is.
    until("de-registered", || {
        state(&hub) == ConnectionState::Disconnected
    });
    assert_eq!(hub.dtls_stats().unwrap().evicted_idle, 0);
    hub.stop();
}

#[test]
fn a_dropped_device_closes_its_session_and_its_registration_outlives_it() {
    let hub = hub();
    let thread = device(&hub);
    drop(thread);
    until("the session to close", || sessions(&hub) == 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        state(&hub),
        ConnectionState::Connected,
        "the registration did not outlive the session"
    );
    hub.stop();
}
