//! A registration displaced from its address (another device's Register, Update or
//! notification came from there: a NAT gave that device the port) is told to the hub
//! ([`DeviceEvent::Displaced`]): the twin's registration no longer shows the address,
//! which is another device's now; its connection state and `lastActivityTime` stay (the
//! registration lives; its device said nothing). Its device's next Update (or a fresh
//! notification from the address, once free) brings the address back. Before, the hub
//! was not told, and the twin showed the other device's address until its device talked.
#![cfg(feature = "lwm2m")]

mod server_sim;

use server_sim::{addr, events, out, register, send, update};
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
        let m = Message::request(Code::POST, &format!("/{location}"));
        assert_eq!(self.exchange(m).code, Code::CHANGED);
    }
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
    let config = HubConfig {
        auto_provision: true,
        sync: None,
        ..HubConfig::default()
    };
    let hub = Hub::bind_udp("127.0.0.1:0", Registry::new(), config).unwrap();
    let hub_addr = hub.local_addr().unwrap();
    let port_of = |id: &str| {
        hub.twin(id)
            .and_then(|t| t.registration)
            .and_then(|r| r.address)
            .map(|a| a.port())
    };
    let mut d = RawDevice::on(UdpSocket::bind("127.0.0.1:0").unwrap(), hub_addr, 100);
    let port = d.socket.local_addr().unwrap().port();
    let d_loc = d.register("d");
    wait_until("d's twin", || port_of("d") == Some(port));
    let before = hub.twin("d").unwrap();
    drop(d);
    // The NAT gives d's port to e's device, which registers from it.
    let mut e = RawDevice::on(UdpSocket::bind(("127.0.0.1", port)).unwrap(), hub_addr, 200);
    e.register("e");
    wait_until("e's twin", || port_of("e") == Some(port));
    wait_until("d's address cleared", || port_of("d").is_none());
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
    wait_until("d's new address", || port_of("d") == Some(new_port));
    assert_eq!(port_of("e"), Some(port));
    hub.stop();
}

/// The device of a displaced registration notifies afresh from the address it lost, once
/// the device that took it moved on: the registration takes it back, and says so
/// (`RegistrationUpdated` with the address), so the twin shows it again.
#[test]
fn a_registration_that_takes_its_address_back_reports_it() {
    use twinhub::Lwm2mPath;
    use twinhub::coap::ContentFormat;
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
    let notification = |kind, mid, seq: u32, value: &[u8]| {
        let mut m = Message::new(kind, Code::CONTENT, mid);
        m.with_token(observe.token());
        m.set_observe(seq);
        m.set_content_format(ContentFormat::TEXT_PLAIN);
        m.payload = value.to_vec();
        m
    };
    send(
        &mut s,
        t0,
        addr(1),
        &notification(MessageType::Acknowledgement, observe.message_id, 1, b"75"),
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
        &notification(MessageType::NonConfirmable, 40, 2, b"76"),
    );
    let evs = events(&mut s);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            DeviceEvent::RegistrationUpdated { device, registration }
                if *device == d && registration.address == Some(addr(1))
        )),
        "{evs:?}"
    );
}
