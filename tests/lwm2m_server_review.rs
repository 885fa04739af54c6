//! Hostile review of the hub's LWM2M server side as a device sees it: a scripted device on
//! a raw UDP socket, speaking through the crate's own CoAP codec, against
//! `Hub::bind_udp("127.0.0.1:0", ...)`. Each test quotes the promise it checks.

#![cfg(feature = "lwm2m")]

mod hub_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::hub::{Hub, HubConfig, RequestError};
use twinhub::lwm2m::server::Takeover;
use twinhub::registry::Registry;
use twinhub::transport::{DeviceError, DeviceRequest};
use twinhub::twin::{ConnectionState, Twin};
use twinhub::{DeviceId, Lwm2mPath};

/// A scripted LWM2M client: one UDP socket, requests by hand.
struct Device {
    sock: UdpSocket,
    server: SocketAddr,
    mid: u16,
    /// Requests the server sent us while we waited for our own answers.
    inbox: Vec<Message>,
}

impl Device {
    fn new(server: SocketAddr) -> Device {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        Device {
            sock,
            server,
            mid: 0x1000,
            inbox: Vec::new(),
        }
    }

    fn recv(&self, timeout: Duration) -> Option<Message> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 2048];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Message::decode(&buf[..n]).ok(),
            Err(_) => None,
        }
    }

    /// Sends a CON request and returns the server's (piggybacked) answer; server requests
    /// that arrive meanwhile go to `inbox` unanswered.
    fn exchange(&mut self, mut m: Message) -> Message {
        self.mid = self.mid.wrapping_add(1);
        m.mtype = MessageType::Confirmable;
        m.message_id = self.mid;
        let token = self.mid.to_be_bytes();
        m.set_token(&token).unwrap();
        let bytes = m.to_bytes().unwrap();
        // Generous: a loaded machine may not run the hub's thread for seconds.
        let deadline = Instant::now() + Duration::from_secs(30);
        self.sock.send_to(&bytes, self.server).unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no answer to {:?}", m.code);
            let Some(r) = self.recv(left) else { continue };
            if r.mtype == MessageType::Acknowledgement && r.message_id == self.mid {
                if r.code == Code::EMPTY {
                    continue; // separate response follows
                }
                return r;
            }
            if r.code.is_response() && r.token().as_bytes() == token {
                return r;
            }
            if r.code.is_request() {
                self.inbox.push(r);
            }
        }
    }

    fn register(&mut self, queries: &[&str], links: &str) -> (Code, Option<String>) {
        let mut m = Message::request(Code::POST, "/rd");
        for q in queries {
            m.add_uri_query(q);
        }
        m.payload = links.as_bytes().to_vec();
        let r = self.exchange(m);
        let loc: Vec<&str> = r.location_path().collect();
        let id = (loc.len() == 2).then(|| loc[1].to_owned());
        (r.code, id)
    }

    fn update(&mut self, id: &str, queries: &[&str]) -> Code {
        let mut m = Message::request(Code::POST, &format!("/rd/{id}"));
        for q in queries {
            m.add_uri_query(q);
        }
        self.exchange(m).code
    }

    fn deregister(&mut self, id: &str) -> Code {
        self.exchange(Message::request(Code::DELETE, &format!("/rd/{id}")))
            .code
    }
}

fn hub_with(names: &[&str], config: HubConfig) -> Hub {
    let mut registry = Registry::new();
    for n in names {
        registry
            .create(Twin::new(DeviceId::new(n).unwrap()))
            .unwrap();
    }
    Hub::bind_udp("127.0.0.1:0", registry, config).unwrap()
}

/// No property sync: the hub sends the device nothing on its own.
fn quiet_config() -> HubConfig {
    HubConfig {
        sync: None,
        ..HubConfig::default()
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn connection(hub: &Hub, name: &str) -> ConnectionState {
    hub.twin(name).unwrap().connection_state
}

/// Twin docs (src/twin/model.rs, `last_activity_time`): "When the device was last heard
/// from." A request the hub could not even send (the device is not registered) is not
/// something the device said.
#[test]
fn a_request_to_an_unregistered_device_is_not_device_activity() {
    let hub = hub_with(&["ghost"], quiet_config());
    assert_eq!(hub.twin("ghost").unwrap().last_activity_time, None);
    let id = DeviceId::new("ghost").unwrap();
    let answer = hub
        .request(
            &id,
            DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        )
        .wait(Duration::from_secs(2));
    assert_eq!(
        answer,
        Err(RequestError::Device(DeviceError::NotRegistered))
    );
    // The reply is completed inside the batch that applies it; let the batch finish.
    std::thread::sleep(Duration::from_millis(100));
    let twin = hub.twin("ghost").unwrap();
    assert_eq!(
        twin.last_activity_time, None,
        "a device that never talked got a lastActivityTime from a request that never left the hub"
    );
    hub.stop();
}

/// Twin docs (src/twin/model.rs, `registration`) said "The device's current LWM2M
/// registration, while it has one", yet a de-registered twin kept it. The twin keeps it on
/// purpose (the last address and objects, for whoever looks into a device gone quiet);
/// the docs now say so, and this holds them to it.
#[test]
fn a_deregistered_twin_keeps_its_last_registration_and_shows_disconnected() {
    let hub = hub_with(&["leaver"], quiet_config());
    let mut dev = Device::new(hub.local_addr().unwrap());
    let (code, id) = dev.register(&["ep=leaver", "lt=300", "lwm2m=1.1", "b=U"], "</3/0>");
    assert_eq!(code, Code::CREATED);
    let id = id.unwrap();
    wait_until("connected", || {
        connection(&hub, "leaver") == ConnectionState::Connected
    });
    assert!(hub.twin("leaver").unwrap().registration.is_some());
    assert_eq!(dev.deregister(&id), Code::DELETED);
    wait_until("disconnected", || {
        connection(&hub, "leaver") == ConnectionState::Disconnected
    });
    let twin = hub.twin("leaver").unwrap();
    assert_eq!(
        twin.registration.map(|r| r.registration_id),
        Some(id.clone()),
        "the last registration stays with the twin"
    );
    hub.stop();
}

/// Server module docs (src/lwm2m/server/mod.rs): "A queue-mode device's requests wait
/// until it talks (register, update, notification, any datagram)" and (on `remove`)
/// "Removes a registration entirely; its queued operations fail with NotRegistered";
/// LWM2M 1.1 §6.2.3: after De-register the server must not send the client requests.
/// A sleeping device that wakes only to de-register must not get the held request, and
/// the service's `Hub::request` must learn at once that the device is gone.
#[test]
fn a_held_request_fails_when_the_sleeping_device_deregisters() {
    let mut config = quiet_config();
    config.server.awake_window = Duration::from_millis(150);
    let hub = hub_with(&["sleepy"], config);
    let mut dev = Device::new(hub.local_addr().unwrap());
    let (code, id) = dev.register(&["ep=sleepy", "lt=300", "lwm2m=1.0", "b=UQ"], "</3/0>");
    assert_eq!(code, Code::CREATED);
    let id = id.unwrap();
    wait_until("connected", || {
        connection(&hub, "sleepy") == ConnectionState::Connected
    });
    // Past the awake window: the device sleeps, the request is held.
    std::thread::sleep(Duration::from_millis(300));
    let device = DeviceId::new("sleepy").unwrap();
    let reply = hub.request(
        &device,
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 9),
        },
    );
    assert!(
        dev.recv(Duration::from_millis(200)).is_none(),
        "the request went out to a sleeping device"
    );
    // The device wakes up only to leave.
    assert_eq!(dev.deregister(&id), Code::DELETED);
    let got_request_after_leaving = dev.inbox.iter().any(|m| m.code == Code::GET)
        || dev
            .recv(Duration::from_millis(200))
            .is_some_and(|m| m.code == Code::GET);
    // Far below the default queue time-out (600 s) the request would otherwise wait.
    let answer = reply.wait(Duration::from_secs(30));
    assert_eq!(
        answer,
        Err(RequestError::Device(DeviceError::NotRegistered)),
        "the held request was not failed when the device de-registered \
         (request sent to the leaving device: {got_request_after_leaving})"
    );
    assert!(
        !got_request_after_leaving,
        "the hub sent its held request to a device that was de-registering"
    );
    hub.stop();
}

/// README (Reliability, Registrations): "by default the hub probes the old address (a
/// confirmable GET); while it answers, the newcomer gets 5.03 and then 4.03 for 60 s; a
/// device that really moved is accepted once its old address stayed silent for 5 s."
/// (here the probe time is 600 ms). An old address that sends its registration's Update
/// (answered 2.04) during the probe did not stay silent: the registration is live and
/// the newcomer must not take it over.
///
/// The Update must reach the hub inside the probe time, which a loaded machine may not
/// run the test thread for: an attempt where the Update's answer came later than the
/// probe time after the newcomer's Register proves nothing if it fails, and is tried
/// again (a few times, each on a fresh hub).
#[test]
fn an_update_from_the_old_address_during_a_takeover_probe_keeps_the_registration() {
    const PROBE: Duration = Duration::from_millis(600);
    for attempt in 1.. {
        let (outcome, in_time) = takeover_probe_with_an_update();
        if in_time || outcome == (Code::CHANGED, false) || attempt == 5 {
            assert_eq!(
                outcome,
                (Code::CHANGED, false),
                "the live owner lost its registration to the newcomer (owner's Update, \
                 newcomer's Register created; the Update inside the probe time: {in_time})"
            );
            return;
        }
    }

    /// One attempt: the owner's second Update's code and whether the newcomer's second
    /// Register was created; and whether the first Update was surely inside the probe time.
    fn takeover_probe_with_an_update() -> ((Code, bool), bool) {
        let mut config = quiet_config();
        config.server.takeover = Takeover::ProbeOldAddress {
            probe_timeout: PROBE,
        };
        let hub = hub_with(&["contested"], config);
        let server = hub.local_addr().unwrap();
        let mut owner = Device::new(server);
        let mut intruder = Device::new(server);
        let q = ["ep=contested", "lt=300", "lwm2m=1.0", "b=UQ"];
        let (code, id) = owner.register(&q, "</3/0>");
        assert_eq!(code, Code::CREATED);
        let id = id.unwrap();
        wait_until("connected", || {
            connection(&hub, "contested") == ConnectionState::Connected
        });
        // Another address names the same endpoint: the hub probes the owner.
        let probe_start = Instant::now();
        let (code, _) = intruder.register(&q, "</3/0>");
        assert_eq!(code, Code::SERVICE_UNAVAILABLE);
        // The owner (a queue-mode device whose radio was off) misses the probe, then wakes
        // up and updates its registration well inside the probe time.
        let probe = owner.recv(Duration::from_secs(10));
        assert!(probe.is_some_and(|m| m.code == Code::GET), "no probe");
        std::thread::sleep(Duration::from_millis(100));
        let first_update = owner.update(&id, &[]);
        let in_time = probe_start.elapsed() < PROBE;
        if first_update != Code::CHANGED {
            hub.stop();
            return ((first_update, false), in_time);
        }
        // Past the probe time: the owner talked during it, so its registration stands.
        std::thread::sleep(Duration::from_millis(800));
        let (code, _) = intruder.register(&q, "</3/0>");
        let owner_update = owner.update(&id, &[]);
        hub.stop();
        ((owner_update, code == Code::CREATED), in_time)
    }
}

/// Registers `name` (LWM2M 1.0, binding U, `</3/0>`) and returns the device.
fn registered(hub: &Hub, name: &str) -> (Device, String) {
    let mut dev = Device::new(hub.local_addr().unwrap());
    let ep = format!("ep={name}");
    let (code, id) = dev.register(&[&ep, "lt=300", "lwm2m=1.0", "b=U"], "</3/0>");
    assert_eq!(code, Code::CREATED);
    wait_until("connected", || {
        connection(hub, name) == ConnectionState::Connected
    });
    (dev, id.unwrap())
}

/// Waits for the hub's next request to the device.
fn next_request(dev: &mut Device) -> Message {
    if let Some(i) = dev.inbox.iter().position(|m| m.code.is_request()) {
        return dev.inbox.remove(i);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the hub sent the device nothing");
        if let Some(m) = dev.recv(left)
            && m.code.is_request()
        {
            return m;
        }
    }
}

/// RFC 7959 §2.9.1: "2.31 Continue ... indicates that the transfer of this block of the
/// request body was successful ..., but that a final outcome of the whole block-wise
/// request cannot yet be determined." Hub docs (`Hub::request`): it "hands back its
/// answer"; server docs: "answers and errors map to DeviceReply and DeviceError". A
/// device that answers an Execute with 2.31 has not executed it: the service must not be
/// told the operation is done.
#[test]
fn an_execute_answered_2_31_continue_is_not_reported_done() {
    let hub = hub_with(&["half"], quiet_config());
    let (mut dev, _) = registered(&hub, "half");
    let device = DeviceId::new("half").unwrap();
    let reply = hub.request(
        &device,
        DeviceRequest::Execute {
            path: Lwm2mPath::resource(3, 0, 4),
            args: None,
        },
    );
    let req = next_request(&mut dev);
    assert_eq!(req.code, Code::POST);
    let mut ack = Message::new(MessageType::Acknowledgement, Code::CONTINUE, req.message_id);
    ack.with_token(req.token());
    dev.sock
        .send_to(&ack.to_bytes().unwrap(), dev.server)
        .unwrap();
    let answer = reply.wait(Duration::from_secs(2));
    assert!(
        !matches!(answer, Ok(twinhub::transport::DeviceReply::Done)),
        "a 2.31 Continue was reported as a completed Execute: {answer:?}"
    );
    hub.stop();
}

/// Updates until one is answered `want` (the hub ends a removed twin's registration from
/// its own thread, a moment after `remove_device` returns); the codes seen, in order.
fn update_until(dev: &mut Device, id: &str, want: Code) -> Vec<Code> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let code = dev.update(id, &[]);
        seen.push(code);
        if code == want || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `Hub::remove_device` ends the device's registration in the server: the device's next
/// Update gets 4.04 (LWM2M 1.1 §6.2.2: the client registers again). Before, its Updates
/// were answered 2.04 until the registration expired (a day, by default) and its
/// notifications were dropped, there being no twin.
#[test]
fn a_removed_device_s_next_update_is_not_found() {
    let hub = hub_with(&["removed"], quiet_config());
    let (mut dev, id) = registered(&hub, "removed");
    assert_eq!(dev.update(&id, &[]), Code::CHANGED);
    hub.remove_device("removed").unwrap();
    let seen = update_until(&mut dev, &id, Code::NOT_FOUND);
    assert_eq!(
        seen.last(),
        Some(&Code::NOT_FOUND),
        "the removed device's Updates were answered {seen:?}"
    );
    // The device, unknown now, cannot register again (no auto-provisioning).
    let (code, _) = dev.register(&["ep=removed", "lt=300", "lwm2m=1.0", "b=U"], "</3/0>");
    assert_ne!(code, Code::CREATED);
    hub.stop();
}

/// A twin created again under a removed device's id starts without a registration: the
/// old registration's Updates are 4.04, and the device's fresh Register connects it under
/// a new registration id. Before, the old registration's next Update was applied to the
/// new twin as if it were the new twin's registration.
#[test]
fn a_twin_created_again_does_not_inherit_the_removed_registration() {
    let hub = hub_with(&["reborn"], quiet_config());
    let (mut dev, id) = registered(&hub, "reborn");
    hub.remove_device("reborn").unwrap();
    hub.create_device(Twin::new(DeviceId::new("reborn").unwrap()))
        .unwrap();
    let seen = update_until(&mut dev, &id, Code::NOT_FOUND);
    assert_eq!(
        seen.last(),
        Some(&Code::NOT_FOUND),
        "the old registration lived on: its Updates were answered {seen:?}"
    );
    assert_eq!(connection(&hub, "reborn"), ConnectionState::Disconnected);
    let (code, new_id) = dev.register(&["ep=reborn", "lt=300", "lwm2m=1.0", "b=U"], "</3/0>");
    assert_eq!(code, Code::CREATED);
    let new_id = new_id.unwrap();
    assert_ne!(new_id, id);
    wait_until("connected again", || {
        connection(&hub, "reborn") == ConnectionState::Connected
    });
    assert_eq!(
        hub.twin("reborn")
            .unwrap()
            .registration
            .map(|r| r.registration_id),
        Some(new_id)
    );
    hub.stop();
}

/// A request the hub sent and the device had not answered when it de-registered fails at
/// once for the service, with a typed error saying the registration ended (the request
/// may have been carried out), not after the CoAP exchange's 93 s
/// ([`RequestError::TransportTimedOut`]); nothing more goes to the device.
#[test]
fn a_request_in_flight_fails_at_once_when_the_device_deregisters() {
    let hub = hub_with(&["leaving"], quiet_config());
    let (mut dev, id) = registered(&hub, "leaving");
    let device = DeviceId::new("leaving").unwrap();
    let reply = hub.request(
        &device,
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 9),
        },
    );
    // The request arrives; the device leaves without answering it.
    let request = next_request(&mut dev);
    assert_eq!(request.code, Code::GET);
    assert_eq!(dev.deregister(&id), Code::DELETED);
    let asked = Instant::now();
    let answer = reply.wait(Duration::from_secs(10));
    assert_eq!(
        answer,
        Err(RequestError::Device(DeviceError::RegistrationEnded)),
        "after {:?}",
        asked.elapsed()
    );
    // No retransmission of it (the first would come 2-3 s after the request).
    assert!(
        dev.recv(Duration::from_secs(4)).is_none(),
        "the request was retransmitted to the de-registered device"
    );
    hub.stop();
}

fn battery() -> DeviceRequest {
    DeviceRequest::Read {
        path: Lwm2mPath::resource(3, 0, 9),
    }
}

/// `Reply` docs, "What ends it": `.await` has no deadline of its own; a request that was
/// sent ends with `TransportTimedOut` once it got no answer within the CoAP response
/// time-out from its transmission, and "an empty ACK does not stop the clock": a device
/// that acknowledges the Read and never sends its separate response leaves the `Reply`
/// pending only that long (93 s by default; 600 ms here).
#[test]
fn an_awaited_request_acknowledged_but_never_answered_ends_at_the_response_timeout() {
    let mut config = quiet_config();
    config.server.coap.response_timeout = Duration::from_millis(600);
    let hub = hub_with(&["acker"], config);
    let (mut dev, _) = registered(&hub, "acker");
    let started = Instant::now();
    let reply = hub.request(&DeviceId::new("acker").unwrap(), battery());
    let request = next_request(&mut dev);
    let ack = Message::new(
        MessageType::Acknowledgement,
        Code::EMPTY,
        request.message_id,
    );
    dev.sock
        .send_to(&ack.to_bytes().unwrap(), dev.server)
        .unwrap();
    assert_eq!(
        hub_support::block_on(reply),
        Err(RequestError::TransportTimedOut)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(20),
        "ended after {waited:?}"
    );
    // Acknowledged: the Read was not sent again.
    assert!(
        std::iter::from_fn(|| dev.recv(Duration::from_millis(100))).all(|m| m.code != Code::GET),
        "the acknowledged Read was retransmitted"
    );
    hub.stop();
}

/// `Reply` docs, "What ends it": a request that waits in the device's queue ends with
/// `TransportTimedOut` at `ServerConfig::queue_timeout` from its submission, whatever it
/// waits for: a sleeping device (the first case), or a registration displaced from its
/// address (the second: another device registered from there, so nothing goes to the
/// address for this one), where it would otherwise wait until its device speaks again.
#[test]
fn an_awaited_request_waiting_in_the_queue_ends_at_the_queue_timeout() {
    let mut config = quiet_config();
    config.server.awake_window = Duration::from_millis(150);
    config.server.queue_timeout = Duration::from_millis(600);
    let hub = hub_with(&["sleepy", "moved", "other"], config);
    let mut sleepy = Device::new(hub.local_addr().unwrap());
    let (code, _) = sleepy.register(&["ep=sleepy", "lt=300", "lwm2m=1.0", "b=UQ"], "</3/0>");
    assert_eq!(code, Code::CREATED);
    let (mut nat, _) = registered(&hub, "moved");
    // Another device got `moved`'s port from the NAT and registers from there.
    let (code, _) = nat.register(&["ep=other", "lt=300", "lwm2m=1.0", "b=U"], "</3/0>");
    assert_eq!(code, Code::CREATED);
    wait_until("moved displaced", || {
        hub.twin("moved")
            .and_then(|t| t.registration)
            .is_some_and(|r| r.address.is_none())
    });
    // Past the awake window: sleepy sleeps.
    std::thread::sleep(Duration::from_millis(300));
    for (name, dev) in [("sleepy", &sleepy), ("moved", &nat)] {
        let started = Instant::now();
        let reply = hub.request(&DeviceId::new(name).unwrap(), battery());
        assert_eq!(
            hub_support::block_on(reply),
            Err(RequestError::TransportTimedOut),
            "{name}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(600) && waited < Duration::from_secs(20),
            "{name}: ended after {waited:?}"
        );
        assert!(
            dev.recv(Duration::from_millis(100)).is_none(),
            "{name}: the queued request went out"
        );
    }
    hub.stop();
}
