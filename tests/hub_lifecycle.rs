//! Issue #17: dropping the last `Hub` stops its threads and closes its socket.

#![cfg(feature = "lwm2m")]

use std::net::UdpSocket;
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;

#[test]
fn dropping_the_last_hub_closes_its_port() {
    let hub = Hub::bind_udp("127.0.0.1:0", Registry::new(), HubConfig::default()).unwrap();
    let addr = hub.local_addr().unwrap();
    let clone = hub.clone();
    drop(hub);
    // A clone still holds the hub: the port is still bound and reads still work.
    assert!(
        UdpSocket::bind(addr).is_err(),
        "the port is still the hub's"
    );
    assert_eq!(clone.registry().read().len(), 0);
    drop(clone);
    // The last clone is gone: the hub stopped and its port can be bound again.
    UdpSocket::bind(addr).expect("the hub's port is free after its last handle dropped");
}

#[test]
fn stop_then_drop_is_fine() {
    let hub = Hub::bind_udp("127.0.0.1:0", Registry::new(), HubConfig::default()).unwrap();
    let addr = hub.local_addr().unwrap();
    hub.stop();
    UdpSocket::bind(addr).expect("stopped: the port is free");
    drop(hub);
}
