//! What dogfooding the device library as a device team found (session 56): each test
//! failed before its fix, and its comment says what happened then. Sans-IO where it can
//! be (a client and a hand-made server), so the file runs in well under a second.
#![cfg(feature = "device")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::lwm2m::client::{ClientConfig, ClientEvent, Lwm2mClient, ObjectTree, objects};

fn server() -> SocketAddr {
    "127.0.0.1:5683".parse().unwrap()
}

fn client(now: Instant, binding: &str) -> Lwm2mClient {
    let mut tree = ObjectTree::new();
    tree.add(objects::security("coap://127.0.0.1:5683", 1));
    tree.add(objects::server(1, 60, binding));
    tree.add(objects::device("Acme", "GW", "SN-1", "1.0"));
    Lwm2mClient::new(now, ClientConfig::new("gw-1", server()), tree)
}

/// The datagrams the client has for the server, decoded.
fn sent(c: &mut Lwm2mClient) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(t) = c.poll_transmit() {
        assert_eq!(t.destination, server());
        out.push(Message::decode(&t.payload).unwrap());
    }
    out
}

/// Registers `c` with the hand-made server (2.01 at `/rd/r1`).
fn register(c: &mut Lwm2mClient, now: Instant) -> Message {
    c.handle_timeout(now);
    let register = sent(c)
        .into_iter()
        .find(|m| m.code == Code::POST && m.uri_path_string() == "rd")
        .expect("a Register");
    let mut created = Message::new(
        MessageType::Acknowledgement,
        Code::CREATED,
        register.message_id,
    );
    created.with_token(register.token());
    created.add_location_path("rd");
    created.add_location_path("r1");
    c.handle_datagram(now, server(), &created.to_bytes().unwrap());
    assert!(c.is_registered());
    register
}

/// A device whose Server object says Binding `UQ` (what `objects::server(.., "UQ")` and
/// its validation offer, and what a bootstrap server may write) is in queue mode. Before
/// the fix the Register carried `b=U` and no `Q` (only `ClientConfig::queue_mode` set it),
/// so the hub held the device for always reachable and sent it requests it would miss
/// once it slept.
#[test]
fn a_uq_binding_registers_in_queue_mode() {
    let now = Instant::now();
    let queries = |binding: &str| -> Vec<String> {
        let mut c = client(now, binding);
        let register = register(&mut c, now);
        register.uri_query().map(str::to_string).collect()
    };
    let uq = queries("UQ");
    assert!(uq.iter().any(|q| q == "Q"), "UQ binding: {uq:?}");
    assert!(uq.iter().any(|q| q == "lt=60"), "{uq:?}");
    let u = queries("U");
    assert!(!u.iter().any(|q| q == "Q"), "U binding: {u:?}");
}

/// A request of the server that crosses the device's De-register (the application is
/// shutting the device down: `DeviceThread::shutdown` then reads and drops every event
/// until `Deregistered`) is refused with 5.03, not carried out. Before the fix it was
/// served: the server got 2.04 for a Reboot (or a Write of a setting) whose event the
/// application never saw, and the job counted it done.
#[test]
fn a_request_crossing_the_deregister_is_refused_not_lost() {
    let now = Instant::now();
    let mut c = client(now, "U");
    register(&mut c, now);
    while c.poll_event().is_some() {}
    c.deregister(now);
    let delete = sent(&mut c)
        .into_iter()
        .find(|m| m.code == Code::DELETE)
        .expect("a De-register");
    assert_eq!(delete.uri_path_string(), "rd/r1");

    // The server's Execute of Reboot, sent before it saw the De-register.
    let mut reboot = Message::new(MessageType::Confirmable, Code::POST, 0x4242);
    reboot.set_token(&[7, 7]).unwrap();
    reboot.set_uri_path("3/0/4");
    c.handle_datagram(now, server(), &reboot.to_bytes().unwrap());
    let answers = sent(&mut c);
    let answer = answers
        .iter()
        .find(|m| m.message_id == 0x4242)
        .expect("an answer to the Execute");
    assert_eq!(answer.code, Code::SERVICE_UNAVAILABLE, "{answer:?}");
    let mut events = Vec::new();
    while let Some(e) = c.poll_event() {
        events.push(e);
    }
    assert!(!events.contains(&ClientEvent::Reboot), "{events:?}");

    // The De-register's answer: stopped, and still refusing.
    let mut deleted = Message::new(
        MessageType::Acknowledgement,
        Code::DELETED,
        delete.message_id,
    );
    deleted.with_token(delete.token());
    c.handle_datagram(now, server(), &deleted.to_bytes().unwrap());
    assert_eq!(c.poll_event(), Some(ClientEvent::Deregistered));
    let mut write = Message::new(MessageType::Confirmable, Code::PUT, 0x4243);
    write.set_uri_path("3/0/14");
    write.set_content_format(twinhub::coap::ContentFormat(0));
    write.payload = b"+01:00".to_vec();
    c.handle_datagram(
        now + Duration::from_millis(1),
        server(),
        &write.to_bytes().unwrap(),
    );
    let answers = sent(&mut c);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].code, Code::SERVICE_UNAVAILABLE);
    assert_eq!(c.poll_event(), None);
}

/// A hub restarted on its store (a deploy) closes every DTLS session with a close_notify
/// as it stops: the device learns at once, and handshakes again and Updates its
/// registration then, so the restarted hub can reach it. Before the fix the device only
/// noted the closed session and waited for its next scheduled Update (180 s with a
/// 300 s lifetime, nearly a day with a day's): the twin said Connected while every
/// request and job for the device waited in the hub's queue.
#[cfg(feature = "dtls")]
#[test]
fn a_device_whose_session_a_restarting_hub_closed_is_reachable_again_at_once() {
    use twinhub::dtls::{PskCredentials, PskKey};
    use twinhub::hub::{Hub, HubConfig, HubEvent, LifecycleKind, SubscribeOptions};
    use twinhub::lwm2m::client::DeviceThread;
    use twinhub::store::{SharedStore, Store, StoreConfig};
    use twinhub::transport::{DeviceReply, DeviceRequest};
    use twinhub::twin::Twin;
    use twinhub::{DeviceId, Lwm2mPath, ResourceValue};

    let dir = tempfile::tempdir().unwrap();
    let open = |addr: SocketAddr| {
        let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let config = HubConfig {
            store: Some(SharedStore::new(store)),
            ..HubConfig::default()
        };
        Hub::bind_dtls(addr, registry, config).unwrap()
    };
    let hub = open("127.0.0.1:0".parse().unwrap());
    let addr = hub.local_addr().unwrap();
    let id = DeviceId::new("gw-1").unwrap();
    let creds = || PskCredentials::new("gw-1", PskKey::new(vec![5; 16])).unwrap();
    hub.create_device(Twin::new(id.clone())).unwrap();
    hub.set_psk("gw-1", creds()).unwrap();
    let events = hub
        .subscribe(SubscribeOptions {
            twins: false,
            jobs: false,
            ..SubscribeOptions::default()
        })
        .unwrap();
    let mut tree = ObjectTree::new();
    tree.add(objects::server(1, 300, "U"));
    tree.add(objects::device("Acme", "GW", "SN-1", "1.0").with_value(
        0,
        objects::device::BATTERY_LEVEL,
        ResourceValue::Integer(77),
    ));
    let config = ClientConfig::new("gw-1", addr).with_psk(creds());
    let device = DeviceThread::spawn(
        Lwm2mClient::new(Instant::now(), config, tree),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(HubEvent::Lifecycle(e)) if e.event == LifecycleKind::Registered => break,
            Ok(_) => {}
            Err(e) => panic!("the device did not register: {e:?}"),
        }
    }

    hub.stop();
    drop((events, hub));
    let hub = open(addr);
    let battery = Lwm2mPath::resource(3, 0, objects::device::BATTERY_LEVEL);
    let started = Instant::now();
    let read = hub
        .request(&id, DeviceRequest::Read { path: battery })
        .wait(Duration::from_secs(10));
    match read {
        Ok(DeviceReply::Content(c)) => {
            assert_eq!(c.get(&battery), Some(&ResourceValue::Integer(77)))
        }
        other => panic!(
            "the restarted hub could not reach the device in {:?}: {other:?}",
            started.elapsed()
        ),
    }
    device.shutdown(Duration::from_secs(2)).unwrap();
    hub.stop();
}

/// `ClientConfig::version`: a device registers as LwM2M 1.0 for a server that takes only
/// 1.0 clients (`lwm2m=1.0`, queue mode as binding `UQ`, no `Q`); 1.1 stays the default.
#[test]
fn a_device_registers_as_lwm2m_1_0_when_told() {
    use twinhub::lwm2m::client::ClientVersion;
    let now = Instant::now();
    let queries = |version: ClientVersion, queue: bool| -> Vec<String> {
        let mut tree = ObjectTree::new();
        tree.add(objects::device("Acme", "GW", "SN-1", "1.0"));
        let mut config = ClientConfig::new("gw-1", server());
        config.version = version;
        config.queue_mode = queue;
        let mut c = Lwm2mClient::new(now, config, tree);
        register(&mut c, now)
            .uri_query()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        queries(ClientVersion::V1_0, true)[2..],
        ["lwm2m=1.0", "b=UQ"]
    );
    assert_eq!(
        queries(ClientVersion::V1_0, false)[2..],
        ["lwm2m=1.0", "b=U"]
    );
    assert_eq!(
        queries(ClientVersion::default(), true)[2..],
        ["lwm2m=1.1", "b=U", "Q"]
    );
}

/// A hub on loopback UDP with device `name` created, and that device running on a
/// `DeviceThread` whose event queue holds one event (nothing read yet).
fn hub_and_device_with_one_event_slot(
    name: &str,
) -> (twinhub::hub::Hub, twinhub::lwm2m::client::DeviceThread) {
    use twinhub::hub::{Hub, HubConfig};
    use twinhub::lwm2m::client::{DeviceThread, DriverOptions};
    use twinhub::registry::Registry;
    use twinhub::twin::Twin;

    let hub = Hub::bind_udp("127.0.0.1:0", Registry::new(), HubConfig::default()).unwrap();
    hub.create_device(Twin::new(twinhub::DeviceId::new(name).unwrap()))
        .unwrap();
    let mut tree = ObjectTree::new();
    tree.add(objects::server(1, 300, "U"));
    tree.add(objects::device("Acme", "GW", "SN-1", "1.0"));
    let config = ClientConfig::new(name, hub.local_addr().unwrap());
    let options = DriverOptions {
        event_capacity: 1,
        ..DriverOptions::default()
    };
    let device = DeviceThread::spawn_on(
        Lwm2mClient::new(Instant::now(), config, tree),
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        options,
    )
    .unwrap();
    (hub, device)
}

/// An application that reads its device's events late loses none of them while the
/// thread can hold them: with room for 1 event in `DeviceThread::events`, the
/// registration's events and then a Reboot the hub executes all arrive, in order, once
/// the application reads. Before, a full queue dropped the newest events: the Reboot
/// (whose Execute the hub had seen answered) never reached the application.
#[test]
fn a_full_event_queue_holds_newer_events_instead_of_dropping_them() {
    use twinhub::transport::{DeviceReply, DeviceRequest};
    use twinhub::{DeviceId, Lwm2mPath};

    let (hub, device) = hub_and_device_with_one_event_slot("gw-2");
    let id = DeviceId::new("gw-2").unwrap();
    // Registered fills the queue (nothing is read yet); the Execute's answer comes once
    // the device served it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reboot = loop {
        let reply = hub
            .request(
                &id,
                DeviceRequest::Execute {
                    path: Lwm2mPath::resource(3, 0, 4),
                    args: None,
                },
            )
            .wait(Duration::from_secs(10));
        match reply {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {}
            Err(e) => panic!("the hub could not reach the device: {e:?}"),
        }
    };
    assert!(matches!(reboot, DeviceReply::Done), "{reboot:?}");
    let mut seen = Vec::new();
    while let Ok(e) = device.events().recv_timeout(Duration::from_secs(2)) {
        let reboot = matches!(e, ClientEvent::Reboot);
        seen.push(e);
        if reboot {
            break;
        }
    }
    assert!(
        matches!(seen.first(), Some(ClientEvent::Registered { .. })),
        "{seen:?}"
    );
    assert!(matches!(seen.last(), Some(ClientEvent::Reboot)), "{seen:?}");
    assert_eq!(device.events_dropped(), 0);
    device.shutdown(Duration::from_secs(2)).unwrap();
    hub.stop();
}

/// The bound: past `HELD_EVENTS` held beyond a full queue the thread drops the oldest it
/// holds and counts them; the application then reads the first event, then the newest
/// `HELD_EVENTS` (ending with the last Send's answer), and every event is either read
/// or counted.
#[test]
fn past_held_events_the_oldest_held_are_dropped_and_counted() {
    use twinhub::Lwm2mPath;
    use twinhub::lwm2m::client::HELD_EVENTS;
    use twinhub::twin::ConnectionState;

    let (hub, device) = hub_and_device_with_one_event_slot("gw-3");
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub
        .twin("gw-3")
        .is_none_or(|t| t.connection_state != ConnectionState::Connected)
    {
        assert!(Instant::now() < deadline, "the device did not register");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sends = HELD_EVENTS + 50;
    let manufacturer = Lwm2mPath::resource(3, 0, 0);
    for _ in 0..sends {
        device
            .with(|c| c.send(Instant::now(), &[manufacturer]))
            .unwrap();
    }
    // Each answered Send is an event: wait until the thread dropped what it cannot hold.
    while device.events_dropped() < 50 {
        assert!(
            Instant::now() < deadline,
            "{} dropped",
            device.events_dropped()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen = Vec::new();
    while let Ok(e) = device.events().recv_timeout(Duration::from_secs(3)) {
        seen.push(e);
    }
    assert!(
        matches!(seen[0], ClientEvent::Registered { .. }),
        "{:?}",
        seen[0]
    );
    // The queue's one and the held ones (a few more may have come in while reading:
    // the hub's observation), and every event either read or counted as dropped.
    assert!(seen.len() > HELD_EVENTS, "{} read", seen.len());
    let dropped = device.events_dropped() as usize;
    assert!(
        seen.len() + dropped > sends,
        "{} read, {dropped} dropped",
        seen.len()
    );
    assert!(
        matches!(seen.last(), Some(ClientEvent::Sent)),
        "{:?}",
        seen.last()
    );
    device.shutdown(Duration::from_secs(2)).unwrap();
    hub.stop();
}
