//! A registration displaced from its address (another device's Register, Update or
//! notification came from there: a NAT gave that device the port) is told to the hub
//! ([`DeviceEvent::Displaced`]): the twin's registration no longer shows the address,
//! which is another device's now; its connection state and `lastActivityTime` stay (the
//! registration lives; its device said nothing). Its device's next Update (or a fresh
//! notification from the address, once free) brings the address back. Before, the hub
//! was not told, and the twin showed the other device's address until its device talked.
#![cfg(feature = "lwm2m")]

mod hub_support;
mod server_sim;

use server_sim::{addr, events, notification, out, register, send, update};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::coap::{Code, Message, MessageType};
use twinhub::hub::{Hub, HubConfig};
use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
use twinhub::registry::Registry;
use twinhub::transport::DeviceEvent;
use twinhub::twin::ConnectionState;

fn displaced(evs: &[DeviceEvent]) -> Vec<(String, String)> {
    evs.iter()
        .filter_map(|e| match e {
            DeviceEvent::Displaced {
                device,
                registration_id,
            } => Some((device.to_string(), registration_id.clone())),
            _ => None,
        })
        .collect()
}

fn registration_id(evs: &[DeviceEvent], device: &str) -> String {
    evs.iter()
        .find_map(|e| match e {
            DeviceEvent::Registered {
                device: d,
                registration,
            } if d.as_str() == device => Some(registration.registration_id.clone()),
            _ => None,
        })
        .expect("the registration")
}

#[test]
fn a_register_from_a_held_address_reports_the_holder_displaced_once() {
    let mut s = Lwm2mServer::with_seed(
        ServerConfig {
            auto_provision: true,
            ..ServerConfig::default()
        },
        7,
    );
    let t0 = Instant::now();
    register(&mut s, t0, addr(1), "d", 10);
    let d_reg = registration_id(&events(&mut s), "d");
    // e's device got d's port from the NAT.
    let e_loc = register(&mut s, t0, addr(1), "e", 11);
    let evs = events(&mut s);
    assert_eq!(
        displaced(&evs),
        vec![("d".to_owned(), d_reg.clone())],
        "{evs:?}"
    );
    // e updates from there: d is displaced already, nothing more to say.
    update(&mut s, t0, addr(1), &e_loc, 13);
    assert!(displaced(&events(&mut s)).is_empty());
}

/// A raw CoAP device on a loopback socket.
struct RawDevice {
    socket: UdpSocket,
    hub: SocketAddr,
    mid: u16,
}

impl RawDevice {
    /// A device on `socket` whose message ids start after `mid` (another device's ids
    /// from the same address would be taken for duplicates).
    fn on(socket: UdpSocket, hub: SocketAddr, mid: u16) -> RawDevice {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        RawDevice { socket, hub, mid }
    }

    /// Sends `m` (CON, a fresh message id) and returns the server's piggybacked answer.
    fn exchange(&mut self, mut m: Message) -> Message {
        self.mid += 1;
        m.message_id = self.mid;
        m.set_token(&self.mid.to_be_bytes()).unwrap();
        let mut bytes = Vec::new();
        m.encode(&mut bytes).unwrap();
        for _ in 0..50 {
            self.socket.send_to(&bytes, self.hub).unwrap();
            let mut buf = [0u8; 1500];
            let deadline = Instant::now() + Duration::from_millis(200);
            while Instant::now() < deadline {
                if let Ok((n, _)) = self.socket.recv_from(&mut buf)
                    && let Ok(a) = Message::decode(&buf[..n])
                    && a.message_id == self.mid
                    && a.mtype == MessageType::Acknowledgement
                {
                    return a;
                }
            }
        }
        panic!("no answer from the hub");
    }

    /// Registers as `ep`; returns the registration's location.
    fn register(&mut self, ep: &str) -> String {
        let mut m = Message::request(Code::POST, "/rd");
        m.add_uri_query(&format!("ep={ep}"));
        m.add_uri_query("lt=300");
        m.payload = b"</3/0>".to_vec();
        let answer = self.exchange(m);
        assert_eq!(answer.code, Code::CREATED);
        answer.location_path().collect::<Vec<_>>().join("/")
    }

    fn update(&mut self, location: &str) {
        assert_eq!(self.update_answer(location), Code::CHANGED);
    }

    /// Sends an Update to `location`; returns the server's answer code.
    fn update_answer(&mut self, location: &str) -> Code {
        let m = Message::request(Code::POST, &format!("/{location}"));
        self.exchange(m).code
    }

    /// Waits for the hub's Observe and answers it (piggybacked, Observe 1, `text/plain`
    /// `value`); returns the Observe.
    fn answer_observe(&mut self, value: &[u8]) -> Message {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 1500];
        let observe = loop {
            assert!(Instant::now() < deadline, "no Observe from the hub");
            if let Ok((n, _)) = self.socket.recv_from(&mut buf)
                && let Ok(m) = Message::decode(&buf[..n])
                && m.code == Code::GET
                && m.observe() == Some(0)
            {
                break m;
            }
        };
        let answer = notification(
            &observe,
            MessageType::Acknowledgement,
            observe.message_id,
            1,
            value,
        );
        self.socket
            .send_to(&answer.to_bytes().unwrap(), self.hub)
            .unwrap();
        observe
    }

    /// Notifies `observe` (non-confirmable, Observe `seq`, `text/plain` `value`).
    fn notify(&self, observe: &Message, seq: u32, value: &[u8]) {
        let m = notification(
            observe,
            MessageType::NonConfirmable,
            self.mid + 1,
            seq,
            value,
        );
        self.socket
            .send_to(&m.to_bytes().unwrap(), self.hub)
            .unwrap();
    }
}

/// A hub on loopback (port 0) that lets any device register, with property sync off.
fn open_hub() -> Hub {
    let config = HubConfig {
        auto_provision: true,
        sync: None,
        ..HubConfig::default()
    };
    Hub::bind_udp("127.0.0.1:0", Registry::new(), config).unwrap()
}

/// The port of the address `id`'s twin shows for its registration.
fn port_of(hub: &Hub, id: &str) -> Option<u16> {
    hub.twin(id)
        .and_then(|t| t.registration)
        .and_then(|r| r.address)
        .map(|a| a.port())
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_displaced_registration_shows_no_address_until_its_device_talks() {
    let hub = open_hub();
    let hub_addr = hub.local_addr().unwrap();
    let mut d = RawDevice::on(UdpSocket::bind("127.0.0.1:0").unwrap(), hub_addr, 100);
    let port = d.socket.local_addr().unwrap().port();
    let d_loc = d.register("d");
    wait_until("d's twin", || port_of(&hub, "d") == Some(port));
    let before = hub.twin("d").unwrap();
    drop(d);
    // The NAT gives d's port to e's device, which registers from it.
    let mut e = RawDevice::on(UdpSocket::bind(("127.0.0.1", port)).unwrap(), hub_addr, 200);
    e.register("e");
    wait_until("e's twin", || port_of(&hub, "e") == Some(port));
    wait_until("d's address cleared", || port_of(&hub, "d").is_none());
    let after = hub.twin("d").unwrap();
    assert_eq!(after.connection_state, ConnectionState::Connected);
    assert_eq!(after.last_activity_time, before.last_activity_time);
    assert_eq!(
        after.registration.as_ref().map(|r| &r.registration_id),
        before.registration.as_ref().map(|r| &r.registration_id),
        "the same registration"
    );
    // d's device talks from its new mapping: the address is back.
    let mut d = RawDevice::on(UdpSocket::bind("127.0.0.1:0").unwrap(), hub_addr, 300);
    let new_port = d.socket.local_addr().unwrap().port();
    d.update(&d_loc);
    wait_until("d's new address", || port_of(&hub, "d") == Some(new_port));
    assert_eq!(port_of(&hub, "e"), Some(port));
    hub.stop();
}

/// The device of a displaced registration notifies afresh from the address it lost, once
/// the device that took it moved on: the registration takes it back, and says so
/// (`AddressChanged` with the address, not an Update: the device sent none), so the twin
/// shows it again.
#[test]
fn a_registration_that_takes_its_address_back_reports_it() {
    use twinhub::Lwm2mPath;
    use twinhub::transport::{DeviceOp, DeviceRequest, OpId, Transport};
    let mut s = Lwm2mServer::with_seed(
        ServerConfig {
            auto_provision: true,
            ..ServerConfig::default()
        },
        7,
    );
    let t0 = Instant::now();
    let d = DeviceId::new("d").unwrap();
    register(&mut s, t0, addr(1), "d", 10);
    events(&mut s);
    s.submit(
        t0,
        DeviceOp {
            id: OpId(1),
            device: d.clone(),
            request: DeviceRequest::Observe {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        },
    );
    let (_, observe) = out(&mut s)
        .into_iter()
        .find(|(_, m)| m.code == Code::GET)
        .expect("the Observe");
    send(
        &mut s,
        t0,
        addr(1),
        &notification(
            &observe,
            MessageType::Acknowledgement,
            observe.message_id,
            1,
            b"75",
        ),
    );
    out(&mut s);
    events(&mut s);
    // e takes d's address, then moves on.
    let e_loc = register(&mut s, t0, addr(1), "e", 11);
    assert_eq!(displaced(&events(&mut s)).len(), 1);
    update(&mut s, t0, addr(2), &e_loc, 12);
    events(&mut s);
    // d's device notifies afresh from its old address.
    send(
        &mut s,
        t0,
        addr(1),
        &notification(&observe, MessageType::NonConfirmable, 40, 2, b"76"),
    );
    let evs = events(&mut s);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            DeviceEvent::AddressChanged { device, registration }
                if *device == d && registration.address == Some(addr(1))
        )),
        "{evs:?}"
    );
    assert!(
        !evs.iter()
            .any(|e| matches!(e, DeviceEvent::RegistrationUpdated { .. })),
        "no Update came: {evs:?}"
    );
}

/// A subscription to the hub's lifecycle events only.
fn lifecycle_events(hub: &Hub) -> twinhub::hub::Subscription {
    hub.subscribe(twinhub::hub::SubscribeOptions {
        twins: false,
        jobs: false,
        ..twinhub::hub::SubscribeOptions::default()
    })
    .unwrap()
}

/// What `lifecycle` saw, by device, once the hub had 200 ms to publish.
fn lifecycle_seen(
    lifecycle: &twinhub::hub::Subscription,
) -> Vec<(String, twinhub::hub::LifecycleKind)> {
    std::thread::sleep(Duration::from_millis(200));
    std::iter::from_fn(|| lifecycle.try_recv().ok())
        .filter_map(|e| match e {
            twinhub::hub::HubEvent::Lifecycle(l) => Some((l.device, l.event)),
            _ => None,
        })
        .collect()
}

/// Waits until `id`'s twin shows the battery level `level` (`/3/0/9`).
fn wait_battery(hub: &Hub, id: &str, level: i64) {
    wait_until("the notification", || {
        hub.twin(id).and_then(|t| {
            t.device_properties
                .get("BatteryLevel")
                .map(|p| p.value.clone())
        }) == Some(twinhub::twin::Scalar::from(level))
    });
}

/// Device `d` registers from a fresh port, and the service observes its battery level
/// (answered: 75). Returns the device, its port and the Observe.
fn d_observed(hub: &Hub) -> (RawDevice, u16, Message) {
    let hub_addr = hub.local_addr().unwrap();
    let mut d = RawDevice::on(UdpSocket::bind("127.0.0.1:0").unwrap(), hub_addr, 100);
    let port = d.socket.local_addr().unwrap().port();
    d.register("d");
    wait_until("d's twin", || port_of(hub, "d") == Some(port));
    let reply = hub.request(
        &DeviceId::new("d").unwrap(),
        twinhub::transport::DeviceRequest::Observe {
            path: twinhub::Lwm2mPath::resource(3, 0, 9),
        },
    );
    let observe = d.answer_observe(b"75");
    reply.wait(Duration::from_secs(10)).unwrap();
    (d, port, observe)
}

/// The same over UDP, through the hub: the twin of a displaced registration shows its
/// address again when its device notifies afresh from there, and subscribers see that
/// as a twin change only. Before, the server reported it as a registration Update and
/// the hub published a lifecycle `updated` event for an Update the device never sent.
#[test]
fn a_registration_that_takes_its_address_back_is_no_lifecycle_update() {
    use twinhub::hub::LifecycleKind;
    let hub = open_hub();
    let lifecycle = lifecycle_events(&hub);
    let hub_addr = hub.local_addr().unwrap();
    let (d, port, observe) = d_observed(&hub);
    drop(d);
    // e's device gets d's port, then moves on to another one.
    let mut e = RawDevice::on(UdpSocket::bind(("127.0.0.1", port)).unwrap(), hub_addr, 200);
    let e_loc = e.register("e");
    wait_until("d's address cleared", || port_of(&hub, "d").is_none());
    let mut e_moved = RawDevice::on(UdpSocket::bind("127.0.0.1:0").unwrap(), hub_addr, 300);
    e_moved.update(&e_loc);
    wait_until("e moved on", || {
        port_of(&hub, "e").is_some_and(|p| p != port)
    });
    drop(e);
    // d's device notifies afresh from its old address.
    let d = RawDevice::on(UdpSocket::bind(("127.0.0.1", port)).unwrap(), hub_addr, 400);
    d.notify(&observe, 2, b"76");
    wait_until("d's address back", || port_of(&hub, "d") == Some(port));
    wait_battery(&hub, "d", 76);
    let seen = lifecycle_seen(&lifecycle);
    let of_d: Vec<_> = seen.iter().filter(|(d, _)| d == "d").collect();
    assert_eq!(
        of_d,
        vec![&("d".to_owned(), LifecycleKind::Registered)],
        "d sent no Update: {seen:?}"
    );
    hub.stop();
}

/// A hub restarted on its store takes back the registrations it can reach, and only
/// those: a displaced registration (its twin shows no address) is not taken back, since
/// no address is known to reach its device at. Its twin is marked disconnected, as one
/// whose lifetime ran out while the hub was down; its device's next Update is answered
/// 4.04 (its location is unknown to the restarted server) and it registers again, as
/// LWM2M clients do. The registration that displaced it is taken back and keeps working
/// at its location.
#[test]
fn a_restart_does_not_take_a_displaced_registration_back() {
    use twinhub::store::{SharedStore, Store, StoreConfig};
    let dir = tempfile::tempdir().unwrap();
    let start = |addr: &str| {
        let (store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let store = SharedStore::new(store);
        let config = HubConfig {
            auto_provision: true,
            sync: None,
            store: Some(store.clone()),
            ..HubConfig::default()
        };
        (Hub::bind_udp(addr, registry, config).unwrap(), store)
    };
    let (hub, store) = start("127.0.0.1:0");
    let hub_addr = hub.local_addr().unwrap();
    let mut d = RawDevice::on(UdpSocket::bind("127.0.0.1:0").unwrap(), hub_addr, 100);
    let port = d.socket.local_addr().unwrap().port();
    let d_loc = d.register("d");
    wait_until("d's twin", || port_of(&hub, "d") == Some(port));
    drop(d);
    let mut e = RawDevice::on(UdpSocket::bind(("127.0.0.1", port)).unwrap(), hub_addr, 200);
    let e_loc = e.register("e");
    wait_until("d displaced", || port_of(&hub, "d").is_none());
    wait_until("all durable", || {
        store.lock().committed_seq() == hub.registry().read().last_seq()
    });
    hub.stop();
    drop(hub);
    drop(store);

    let (hub, _store) = start(&hub_addr.to_string());
    let e_twin = hub.twin("e").unwrap();
    assert_eq!(e_twin.connection_state, ConnectionState::Connected);
    assert_eq!(port_of(&hub, "e"), Some(port), "taken back");
    let d_twin = hub.twin("d").unwrap();
    assert_eq!(
        d_twin.connection_state,
        ConnectionState::Disconnected,
        "no address to reach d's device at"
    );
    assert!(d_twin.registration.is_some_and(|r| r.address.is_none()));
    // e's registration works at its location; d's is unknown to the restarted server.
    e.update(&e_loc);
    let mut d = RawDevice::on(UdpSocket::bind("127.0.0.1:0").unwrap(), hub_addr, 300);
    let new_port = d.socket.local_addr().unwrap().port();
    assert_eq!(d.update_answer(&d_loc), Code::NOT_FOUND);
    // So d's device registers again, from where it is.
    d.register("d");
    wait_until("d back", || {
        hub.twin("d").unwrap().connection_state == ConnectionState::Connected
            && port_of(&hub, "d") == Some(new_port)
    });
    hub.stop();
}

/// Day 45, item 1, through the hub over UDP: a device whose NAT mapping changed
/// notifies from its new port before any Update. The twin follows the address, and
/// subscribers see that as a twin change only. Before, the server reported the move as a
/// registration Update and the hub published a lifecycle `updated` event for an Update
/// the device never sent.
#[test]
fn a_notification_from_a_new_address_is_no_lifecycle_update() {
    use twinhub::hub::LifecycleKind;
    let hub = open_hub();
    let lifecycle = lifecycle_events(&hub);
    let (_d, _, observe) = d_observed(&hub);
    // The NAT gives d's device a new port; its first word from there is a notification.
    let moved = RawDevice::on(
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        hub.local_addr().unwrap(),
        400,
    );
    let new_port = moved.socket.local_addr().unwrap().port();
    moved.notify(&observe, 2, b"76");
    wait_until("d's new address", || port_of(&hub, "d") == Some(new_port));
    wait_battery(&hub, "d", 76);
    assert_eq!(
        lifecycle_seen(&lifecycle),
        vec![("d".to_owned(), LifecycleKind::Registered)],
        "d sent no Update"
    );
    hub.stop();
}

/// `device`'s registration `r1` (the scripted transport's) moved to `port` without an
/// Update.
fn address_changed(device: &DeviceId, port: u16) -> DeviceEvent {
    moved_under(device, "r1", port)
}

/// A hub (`config`) over a scripted transport where device `d`, in its registry,
/// registered (`r1`).
fn d_registered_over_a_script(
    config: HubConfig,
) -> (
    Hub,
    std::sync::Arc<std::sync::Mutex<hub_support::Script>>,
    DeviceId,
) {
    let device = DeviceId::new("d").unwrap();
    let mut registry = Registry::new();
    registry
        .create(twinhub::twin::Twin::new(device.clone()))
        .unwrap();
    let script = std::sync::Arc::new(std::sync::Mutex::new(hub_support::Script::default()));
    let hub = Hub::with_transport(hub_support::Scripted(script.clone()), registry, config);
    hub_support::register(&hub, &script, &device);
    (hub, script, device)
}

/// A hub (property sync off) over a scripted transport where device `d` registered
/// (`r1`), running the job `id` of type `job_type` over `d`: returns once the job's
/// first operation (`what`) went out, with that operation and the job's id.
#[allow(clippy::type_complexity)]
fn d_running_a_job(
    id: &str,
    job_type: twinhub::job::JobType,
    what: &str,
) -> (
    Hub,
    std::sync::Arc<std::sync::Mutex<hub_support::Script>>,
    DeviceId,
    twinhub::job::JobId,
    twinhub::transport::DeviceOp,
) {
    use hub_support::job_ops;
    use twinhub::job::{JobId, JobSpec};
    let (hub, script, device) = d_registered_over_a_script(HubConfig {
        sync: None,
        ..HubConfig::default()
    });
    let job = JobId::new(id).unwrap();
    hub.create_job(JobSpec::new(job.clone(), job_type, vec![device.clone()]))
        .unwrap();
    wait_until(what, || job_ops(&script).len() == 1);
    let first = job_ops(&script).remove(0);
    (hub, script, device, job, first)
}

/// Day 45, item 1, what the hub did on the `RegistrationUpdated` it no longer gets for
/// a move without an Update: a sync observation whose Observe was in flight to the
/// address left failed (`RegistrationEnded`, as the server fails what is stranded there)
/// and is observed again at once, now that the device is reachable where it moved to,
/// not at its next Update (up to its lifetime later). Before the fix, this hub never
/// re-observed on `AddressChanged` (a displaced registration taking its address back was
/// left without the observation the displacement failed).
#[test]
fn a_sync_observation_failed_by_a_move_is_observed_again_at_the_new_address() {
    use hub_support::{observes, push};
    use twinhub::transport::{DeviceError, DeviceReply};
    let (hub, script, device) = d_registered_over_a_script(HubConfig::default());
    wait_until("the sync Observes", || observes(&script).len() == 2);
    let sync = observes(&script);
    // The first is answered; the second was in flight when the device moved.
    push(
        &script,
        DeviceEvent::Response {
            op: sync[0].id,
            device: device.clone(),
            result: Ok(DeviceReply::Content(twinhub::Content {
                values: Vec::new(),
            })),
        },
    );
    push(
        &script,
        DeviceEvent::Response {
            op: sync[1].id,
            device: device.clone(),
            result: Err(DeviceError::RegistrationEnded),
        },
    );
    push(&script, address_changed(&device, 9));
    wait_until("the lost path observed again", || {
        observes(&script).len() == 3
    });
    let again = observes(&script).remove(2);
    assert_eq!(again.request, sync[1].request);
    assert_eq!(port_of(&hub, "d"), Some(9));
    hub.stop();
}

/// Day 45, item 1, the job engine's side: a job's step in flight to the address its
/// device left failed with `RegistrationEnded` (sent, outcome unknown), so the engine took
/// the device for gone and the child waits for it. A move without an Update
/// (`AddressChanged`) says it is registered and reachable: the step goes again at once.
/// Before, only a registration Update or a Register brought the child back, so after a
/// move by notification (or a displaced registration taking its address back) the job
/// waited for the device's next Update, up to its lifetime, or timed out.
#[test]
fn a_job_step_failed_by_a_move_goes_again_at_the_new_address() {
    use hub_support::{job_ops, push};
    use twinhub::transport::DeviceError;
    let config = twinhub::job::JobType::ConfigurationUpdate {
        name: "a".into(),
        value: "1".into(),
    };
    let (hub, script, device, job, write) = d_running_a_job("cfg", config, "the Write");
    push(
        &script,
        DeviceEvent::Response {
            op: write.id,
            device: device.clone(),
            result: Err(DeviceError::RegistrationEnded),
        },
    );
    wait_until("the child waits for its device", || {
        hub.job_statistics(&job).unwrap().waiting_for_device == 1
    });
    push(&script, address_changed(&device, 9));
    wait_until("the Write again", || job_ops(&script).len() == 2);
    assert_eq!(job_ops(&script)[1].request, write.request);
    hub.stop();
}

/// `device`'s registration `id`, which the hub never saw (its `Registered` was dropped),
/// moved to `port` without an Update.
fn moved_under(device: &DeviceId, id: &str, port: u16) -> DeviceEvent {
    let DeviceEvent::Registered {
        device,
        mut registration,
    } = hub_support::registered_v(device, "1.0")
    else {
        unreachable!()
    };
    registration.registration_id = id.into();
    registration.address = Some(SocketAddr::from(([10, 0, 0, 7], port)));
    DeviceEvent::AddressChanged {
        device,
        registration,
    }
}

/// Day 46, item 1: the device registered again (`r2`: its observations went with `r1`)
/// and the hub never applied that registration (its `Registered` dropped at
/// [`MAX_HELD_EVENTS`](twinhub::hub::backoff::MAX_HELD_EVENTS)); then the device moved,
/// and its first word from the new address was a notification (`AddressChanged`). The
/// move is applied as the registration the hub missed, as an Update under an unknown
/// registration id is: the twin shows `r2` at the new address, the device is observed
/// afresh, and the registration is counted. Before, `AddressChanged` carried only the
/// id and address, and a move under an id the twin does not hold changed nothing: the
/// twin kept `r1` and its old address (another device's, maybe) and the device stayed
/// unobserved until its next Update.
#[test]
fn a_move_under_a_registration_the_hub_never_saw_is_applied_as_that_registration() {
    use hub_support::{observes, push};
    let (hub, script, device) = d_registered_over_a_script(HubConfig::default());
    wait_until("the sync Observes", || observes(&script).len() == 2);
    let registrations = hub.stats().registrations;
    push(&script, moved_under(&device, "r2", 9));
    wait_until("the twin to hold r2", || {
        hub.twin("d")
            .and_then(|t| t.registration)
            .is_some_and(|r| r.registration_id == "r2")
    });
    assert_eq!(port_of(&hub, "d"), Some(9));
    wait_until("the device observed afresh", || {
        observes(&script).len() == 4
    });
    assert_eq!(hub.stats().registrations, registrations + 1);
    hub.stop();
}

/// Day 46, item 1, the job engine's side: a reboot job's Execute was answered, and the
/// child waits for the device to register again. It did (`r2`), but the hub never got
/// that `Registered`; the device's move under `r2` is that registration: the reboot is
/// done. (Before, the move changed nothing and the child waited until the device's next
/// Update, or timed out.)
#[test]
fn a_move_under_a_registration_the_hub_never_saw_completes_a_reboot() {
    use hub_support::{answer_done, push};
    use twinhub::job::JobType;
    use twinhub::transport::DeviceRequest;
    let reboot = JobType::Reboot {
        wait_for_registration: true,
    };
    let (hub, script, device, job, exec) = d_running_a_job("rb", reboot, "the Execute");
    assert!(matches!(exec.request, DeviceRequest::Execute { .. }));
    answer_done(&script, &device, &exec);
    push(&script, moved_under(&device, "r2", 9));
    wait_until("the reboot done", || {
        hub.job_statistics(&job).unwrap().succeeded == 1
    });
    hub.stop();
}

/// Day 46, item 1: a twin that holds no registration (created after its device
/// registered) takes the registration a move carries, as it takes an Update's: it shows
/// the device connected at its new address, and the device is observed. (Before, the
/// move changed nothing: the twin showed no registration until the device's next
/// Update.)
#[test]
fn a_twin_without_a_registration_takes_the_one_a_move_carries() {
    use hub_support::{observes, push};
    let device = DeviceId::new("d").unwrap();
    let mut registry = Registry::new();
    registry
        .create(twinhub::twin::Twin::new(device.clone()))
        .unwrap();
    let script = std::sync::Arc::new(std::sync::Mutex::new(hub_support::Script::default()));
    let hub = Hub::with_transport(
        hub_support::Scripted(script.clone()),
        registry,
        HubConfig::default(),
    );
    push(&script, address_changed(&device, 9));
    wait_until("the twin to hold r1", || port_of(&hub, "d") == Some(9));
    assert_eq!(
        hub.twin("d").unwrap().connection_state,
        ConnectionState::Connected
    );
    wait_until("the device observed", || observes(&script).len() == 2);
    hub.stop();
}
