//! Issue #16 finding 4: auto-provisioning is bounded by a count of twins, and a twin it
//! created that the service never adopted goes some time after its registration ended.
//! Over real UDP on loopback, with registrations sent as raw CoAP.

#![cfg(feature = "lwm2m")]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;

/// Sends one CON request and returns the answer (sending it again every 300 ms, as on
/// loss, for up to 30 s: a loaded machine may not run the hub's threads for a while).
fn exchange(sock: &UdpSocket, hub: SocketAddr, mut m: Message, mid: u16) -> Message {
    m.message_id = mid;
    m.set_token(&mid.to_be_bytes()).unwrap();
    let bytes = m.to_bytes().unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..100 {
        sock.send_to(&bytes, hub).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let r = Message::decode(&buf[..n]).unwrap();
            if r.message_id == mid {
                return r;
            }
        }
    }
    panic!("no answer from the hub to message {mid}");
}

fn register(sock: &UdpSocket, hub: SocketAddr, ep: &str, mid: u16) -> Message {
    let mut m = Message::new(MessageType::Confirmable, Code::POST, 0);
    m.set_uri_path("/rd");
    m.add_uri_query(&format!("ep={ep}"));
    m.add_uri_query("lt=300");
    m.payload = b"</3/0>".to_vec();
    exchange(sock, hub, m, mid)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UDP hub that auto-provisions at most `limit` twins, expiring unadopted ones after
/// `expiry`; and a socket to talk to it from.
fn auto_hub(limit: usize, expiry: Duration) -> (Hub, SocketAddr, UdpSocket) {
    let config = HubConfig {
        auto_provision: true,
        auto_provision_limit: limit,
        auto_provision_expiry: expiry,
        sync: None,
        ..HubConfig::default()
    };
    let hub = Hub::bind_udp("127.0.0.1:0", Registry::new(), config).unwrap();
    let addr = hub.local_addr().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    (hub, addr, sock)
}

#[test]
fn auto_provisioned_twins_are_capped_and_expire_unless_adopted() {
    let (hub, addr, sock) = auto_hub(3, Duration::from_millis(500));

    let mut locations = Vec::new();
    for (i, ep) in ["auto-0", "auto-1", "auto-2"].iter().enumerate() {
        let r = register(&sock, addr, ep, 10 + i as u16);
        assert_eq!(r.code, Code::CREATED, "{ep}");
        locations.push(r.location_path().map(str::to_owned).collect::<Vec<_>>());
    }
    // Ten times the bound of made-up names: every one refused, no twin created.
    for i in 0..30u16 {
        let r = register(&sock, addr, &format!("made-up-{i}"), 100 + i);
        assert_eq!(r.code, Code::FORBIDDEN);
    }
    wait_until("three twins", || hub.registry().read().len() == 3);
    assert_eq!(hub.auto_provisioned_count(), 3);
    // A held name registers again without taking another place.
    let again = register(&sock, addr, "auto-1", 200);
    assert_eq!(again.code, Code::CREATED);
    assert_eq!(hub.auto_provisioned_count(), 3);
    locations[1] = again.location_path().map(str::to_owned).collect();

    // The service adopts auto-1 (a tag); both auto-0 and auto-1 de-register.
    hub.add_tags("auto-1", &["kept"], None).unwrap();
    for (i, loc) in locations.iter().take(2).enumerate() {
        let mut m = Message::new(MessageType::Confirmable, Code::DELETE, 0);
        m.set_uri_path(&format!("/{}", loc.join("/")));
        let r = exchange(&sock, addr, m, 300 + i as u16);
        assert_eq!(r.code, Code::DELETED);
    }
    // auto-0's twin goes after the expiry; auto-1's stays (adopted), auto-2's stays
    // (still registered). auto-0's place is free again.
    wait_until("auto-0 removed", || hub.twin("auto-0").is_none());
    assert!(hub.twin("auto-1").is_some());
    assert!(hub.twin("auto-2").is_some());
    // The job engine forgot auto-0 with its twin (it reads removals from the registry's
    // feed at its next event or tick): it keeps auto-1 (offline) and auto-2 (its
    // announced objects) only, so churning names cannot grow it.
    wait_until("auto-0 forgotten", || hub.metrics().job_device_states == 2);
    wait_until("a free place", || hub.auto_provisioned_count() < 3);
    assert_eq!(register(&sock, addr, "auto-3", 400).code, Code::CREATED);
    wait_until("auto-3's twin", || hub.twin("auto-3").is_some());
    wait_until("auto-3 tracked", || hub.metrics().job_device_states == 3);
    // A twin the service removes is forgotten too, registered (auto-2) or not (auto-1),
    // through the hub or straight through the registry, and its registration ends with
    // it: the device's De-register finds none (4.04) and brings nothing back.
    let events = hub.stats().events;
    hub.remove_device("auto-1").unwrap();
    hub.registry().write().remove("auto-2").unwrap();
    wait_until("auto-1 and auto-2 forgotten", || {
        hub.metrics().job_device_states == 1
    });
    // The hub ends the registration in the same step as it forgets the device (sent
    // right after it; auto-1, disconnected, holds none to end); the transport answers
    // the end once it took it, an event for the hub.
    wait_until("the end answered", || hub.stats().events > events);
    std::thread::sleep(Duration::from_millis(100));
    let mut m = Message::new(MessageType::Confirmable, Code::DELETE, 0);
    m.set_uri_path(&format!("/{}", locations[2].join("/")));
    assert_eq!(exchange(&sock, addr, m, 500).code, Code::NOT_FOUND);
    std::thread::sleep(Duration::from_millis(50));
    assert!(hub.twin("auto-2").is_none());
    assert_eq!(hub.metrics().job_device_states, 1);
    hub.stop();
}

/// A name stops counting against the limit as soon as the service adopts its twin (a tag,
/// a service property) or removes it, through the hub at once, or through the registry at
/// the hub's next sweep: the place goes to the next unknown device.
#[test]
fn a_twin_the_service_adopts_or_removes_gives_its_place_to_the_next_device() {
    let (hub, addr, sock) = auto_hub(1, Duration::from_secs(3600));
    let mut mid = 1;
    let mut next = |ep: &str| {
        mid += 1;
        let code = register(&sock, addr, ep, mid).code;
        if code == Code::CREATED {
            wait_until(ep, || hub.twin(ep).is_some());
        }
        code
    };
    assert_eq!(next("auto-0"), Code::CREATED);
    assert_eq!(next("auto-1"), Code::FORBIDDEN, "the limit is one");
    // Each way of adopting or removing frees the one place; the write through the hub
    // before it returns.
    hub.add_tags("auto-0", &["kept"], None).unwrap();
    assert_eq!(hub.auto_provisioned_count(), 0);
    assert_eq!(next("auto-1"), Code::CREATED);
    hub.set_service_property("auto-1", "site", Some("north".into()), None)
        .unwrap();
    assert_eq!(hub.auto_provisioned_count(), 0);
    assert_eq!(next("auto-2"), Code::CREATED);
    hub.remove_device("auto-2").unwrap();
    assert_eq!(hub.auto_provisioned_count(), 0);
    assert_eq!(next("auto-3"), Code::CREATED);
    hub.registry()
        .write()
        .add_tags("auto-3", &["kept"], None)
        .unwrap();
    wait_until("auto-3 adopted", || hub.auto_provisioned_count() == 0);
    assert_eq!(next("auto-4"), Code::CREATED);
    hub.registry().write().remove("auto-4").unwrap();
    wait_until("auto-4 removed", || hub.auto_provisioned_count() == 0);
    assert_eq!(next("auto-5"), Code::CREATED);
    assert_eq!(next("auto-6"), Code::FORBIDDEN, "the place is taken again");
    // The adopted twins are kept; the removed ones stay removed.
    for (ep, kept) in [("auto-0", true), ("auto-1", true), ("auto-2", false)] {
        assert_eq!(hub.twin(ep).is_some(), kept, "{ep}");
    }
    hub.stop();
}
