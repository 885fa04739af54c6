//! End to end over real UDP with DTLS 1.2 PSK: a hub with a coaps listener and devices
//! built with the crate's device library, each with its own key. Devices register (one
//! with its endpoint name left out), twins fill, every job type runs, observe keeps the
//! twin in step, a firmware package is pulled block-wise, devices de-register. And the
//! refusals: an unknown identity, a wrong key, a right identity claiming another
//! device's endpoint, another session trying to update or de-register a registered
//! device, replayed records; each refused with the twin and the change feed unchanged.

#![cfg(all(feature = "device", feature = "lwm2m"))]

mod e2e_support;

use e2e_support::{
    Device, Nat, device_value, prop, registered_port, run_job, serve, start_with, wait_for,
};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::dtls::{DtlsClient, PskCredentials, PskKey};
use twinhub::hub::{Hub, HubConfig, PackageServer};
use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
use twinhub::registry::Registry;
use twinhub::twin::{ConnectionState, Scalar, Twin};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue};

fn creds(identity: &str, seed: u8) -> PskCredentials {
    PskCredentials::new(identity, PskKey::new(vec![seed; 16])).unwrap()
}

fn hub_with(names: &[&str]) -> Hub {
    let mut registry = Registry::new();
    for n in names {
        registry
            .create(Twin::new(DeviceId::new(n).unwrap()).with_tag("secure"))
            .unwrap();
    }
    let hub = Hub::bind_dtls("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    for (i, n) in names.iter().enumerate() {
        hub.set_psk(n, creds(&format!("{n}-id"), i as u8 + 1))
            .unwrap();
    }
    hub
}

/// Library devices for `names`, over DTLS with the credentials [`hub_with`] gave them
/// (`names` in the same order as there).
fn start_all(names: &[&str], server: SocketAddr) -> Vec<Device> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            start_with(
                n,
                server,
                false,
                Some(creds(&format!("{n}-id"), i as u8 + 1)),
            )
        })
        .collect()
}

#[test]
fn devices_register_over_dtls_and_every_job_type_runs() {
    let names = ["sec-1", "sec-2", "sec-3"];
    let hub = hub_with(&names);
    let server = hub.local_addr().unwrap();
    let packages = PackageServer::bind("127.0.0.1:0").unwrap();
    let uri = packages.publish("fw/2.0.bin", vec![7u8; 5000]).unwrap();
    let mut devices = start_all(&names, server);
    wait_for(&mut devices, "twins to fill", || {
        names
            .iter()
            .all(|n| prop(&hub, n, "BatteryLevel").is_some())
    });
    {
        let reg = hub.registry().read();
        let twin = reg.get("sec-1").unwrap();
        assert_eq!(twin.connection_state(), ConnectionState::Connected);
        let registration = twin.registration().unwrap();
        assert_eq!(registration.psk_identity.as_deref(), Some("sec-1-id"));
        // The key never reaches JSON.
        let json = serde_json::to_string(&twin.to_twin()).unwrap();
        assert!(json.contains("sec-1-id"));
        assert!(!json.contains("pskKey"), "{json}");
    }
    let stats = hub.dtls_stats().unwrap();
    assert!(stats.handshakes >= 3, "{stats:?}");
    assert!(
        devices
            .iter()
            .all(|d| d.thread.as_ref().unwrap().dtls_handshakes() >= 1)
    );

    // Observe: a device-side change arrives by notification over the session.
    devices[0]
        .thread
        .as_ref()
        .unwrap()
        .with(|c| c.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(12)))
        .unwrap();
    wait_for(&mut devices, "the battery notification", || {
        prop(&hub, "sec-1", "BatteryLevel") == Some(Scalar::from(12))
    });

    let ids: Vec<DeviceId> = devices.iter().map(|d| d.id.clone()).collect();
    // Firmware update (the package is pulled block-wise from the package server).
    let spec = JobSpec::new(
        JobId::new("fw").unwrap(),
        JobType::FirmwareUpdate {
            package_uri: uri,
            expected_version: Some("2.0".into()),
        },
        ids.clone(),
    );
    assert_eq!(run_job(&hub, &mut devices, spec), JobStatus::Completed);
    for n in names {
        assert_eq!(prop(&hub, n, "FirmwareVersion"), Some(Scalar::from("2.0")));
    }
    assert!(packages.downloads() >= 3);
    for (id, job) in [
        (
            "reboot",
            JobType::Reboot {
                wait_for_registration: false,
            },
        ),
        (
            "reset",
            JobType::FactoryReset {
                wait_for_registration: false,
            },
        ),
        (
            "config",
            JobType::ConfigurationUpdate {
                name: "sampling".into(),
                value: "10s".into(),
            },
        ),
        (
            "write",
            JobType::WriteDeviceProperties {
                values: vec![(
                    Lwm2mPath::resource(3, 0, 15),
                    ResourceValue::String("Europe/Oslo".into()),
                )],
            },
        ),
        (
            "read",
            JobType::ReadDeviceProperties {
                paths: vec![Lwm2mPath::resource(3, 0, 15)],
            },
        ),
    ] {
        let spec = JobSpec::new(JobId::new(id).unwrap(), job, ids.clone());
        assert_eq!(
            run_job(&hub, &mut devices, spec),
            JobStatus::Completed,
            "{id}"
        );
    }
    for d in &devices {
        assert_eq!(
            device_value(d, Lwm2mPath::resource(10241, 0, 2)),
            Some(ResourceValue::String("10s".into()))
        );
        assert_eq!(
            prop(&hub, d.id.as_str(), "Timezone"),
            Some(Scalar::from("Europe/Oslo"))
        );
    }

    // De-registration over the session.
    let d = devices[2].thread.take().unwrap();
    d.shutdown(Duration::from_secs(30)).unwrap();
    wait_for(&mut devices, "sec-3 to disconnect", || {
        hub.registry()
            .read()
            .get("sec-3")
            .unwrap()
            .connection_state()
            == ConnectionState::Disconnected
    });
    serve(&mut devices);
    for d in devices.iter_mut() {
        if let Some(t) = d.thread.take() {
            let _ = t.shutdown(Duration::from_secs(2));
        }
    }
    hub.stop();
    packages.stop();
}

/// Packages from the hub itself: a firmware job's Package URI is `coaps://` on the hub's
/// own listener, and devices pull it over the session they registered on (no second
/// handshake, no plain-CoAP package server). Only a registered peer gets it.
#[test]
fn a_package_is_pulled_from_the_hub_over_the_devices_own_session() {
    let hub = hub_with(&["pkg-1", "pkg-2", "pkg-raw"]);
    let server = hub.local_addr().unwrap();
    let body: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let uri = hub.publish_package("fw/2.0.bin", body.clone()).unwrap();
    assert_eq!(uri, format!("coaps://{server}/pkg/fw/2.0.bin"));
    assert!(hub.publish_package("../etc", vec![1]).is_err());

    // A peer with good credentials gets nothing before it registers; then block 0.
    let mut raw = RawPeer::new(server, creds("pkg-raw-id", 3));
    let get = |path: &str| Message::request(Code::GET, path);
    assert_eq!(
        raw.exchange(get("/pkg/fw/2.0.bin")).unwrap().code,
        Code::NOT_FOUND
    );
    assert_eq!(raw.exchange(register(None)).unwrap().code, Code::CREATED);
    let first = raw.exchange(get("/pkg/fw/2.0.bin")).unwrap();
    assert_eq!(first.code, Code::CONTENT);
    assert_eq!(first.block2().map(|b| (b.num, b.more)), Some((0, true)));
    assert_eq!(first.payload, body[..first.payload.len()]);
    assert_eq!(
        raw.exchange(get("/pkg/fw/none")).unwrap().code,
        Code::NOT_FOUND
    );
    let put = Message::request(Code::PUT, "/pkg/fw/2.0.bin");
    assert_eq!(raw.exchange(put).unwrap().code, Code::METHOD_NOT_ALLOWED);
    assert_eq!(hub.package_downloads(), 1);

    // Devices built with the crate's library pull it in a firmware job.
    let mut devices = start_all(&["pkg-1", "pkg-2"], server);
    wait_for(&mut devices, "twins to fill", || {
        ["pkg-1", "pkg-2"]
            .iter()
            .all(|n| prop(&hub, n, "BatteryLevel").is_some())
    });
    let ids: Vec<DeviceId> = devices.iter().map(|d| d.id.clone()).collect();
    let spec = JobSpec::new(
        JobId::new("fw-from-hub").unwrap(),
        JobType::FirmwareUpdate {
            package_uri: uri,
            expected_version: Some("2.0".into()),
        },
        ids,
    );
    assert_eq!(run_job(&hub, &mut devices, spec), JobStatus::Completed);
    for d in &devices {
        assert_eq!(
            prop(&hub, d.id.as_str(), "FirmwareVersion"),
            Some(Scalar::from("2.0"))
        );
        assert_eq!(d.package.lock().unwrap().as_deref(), Some(&body[..]));
        assert_eq!(
            d.thread.as_ref().unwrap().dtls_handshakes(),
            1,
            "downloaded over the session it registered on"
        );
    }
    assert_eq!(hub.package_downloads(), 3);
    // Withdrawn, it is gone for a new download.
    assert_eq!(hub.withdraw_package("fw/2.0.bin"), Ok(true));
    assert!(hub.packages().is_empty());
    // A firmware job naming one of the hub's packages that is not published is refused
    // at creation, instead of failing every download.
    let stale = JobSpec::new(
        JobId::new("fw-withdrawn").unwrap(),
        JobType::FirmwareUpdate {
            package_uri: format!("coaps://{server}/pkg/fw/2.0.bin"),
            expected_version: None,
        },
        vec![DeviceId::new("pkg-1").unwrap()],
    );
    assert!(matches!(
        hub.create_job(stale),
        Err(twinhub::job::SpecError::InvalidParameter {
            name: "packageUri",
            ..
        })
    ));
    assert_eq!(
        raw.exchange(get("/pkg/fw/2.0.bin")).unwrap().code,
        Code::NOT_FOUND
    );
    for d in devices.iter_mut() {
        drop(d.thread.take());
    }
    hub.stop();
}

/// A peer speaking CoAP over DTLS by hand, to send what a well-behaved device would not.
struct RawPeer {
    socket: UdpSocket,
    dtls: DtlsClient,
    server: SocketAddr,
    next_mid: u16,
    /// The records the last exchange sent after the handshake (for replays).
    last_records: Vec<Vec<u8>>,
}

impl RawPeer {
    fn new(server: SocketAddr, creds: PskCredentials) -> RawPeer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        RawPeer {
            socket,
            dtls: DtlsClient::new(Instant::now(), creds),
            server,
            next_mid: 100,
            last_records: Vec::new(),
        }
    }

    /// Sends a CON request and waits (at most 30 s: generous for a loaded machine) for
    /// its piggybacked answer.
    fn exchange(&mut self, m: Message) -> Option<Message> {
        self.exchange_within(m, Duration::from_secs(30))
    }

    /// [`RawPeer::exchange`], waiting at most `wait` (for an answer that must not come).
    fn exchange_within(&mut self, mut m: Message, wait: Duration) -> Option<Message> {
        self.next_mid += 1;
        m.message_id = self.next_mid;
        m.set_token(&self.next_mid.to_be_bytes());
        let mut bytes = Vec::new();
        m.encode(&mut bytes).unwrap();
        let was_connected = self.dtls.is_connected();
        self.dtls.send(Instant::now(), &bytes);
        self.last_records.clear();
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            while let Some(r) = self.dtls.poll_transmit() {
                if was_connected {
                    self.last_records.push(r.clone());
                }
                self.socket.send_to(&r, self.server).unwrap();
            }
            if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                self.dtls.handle_datagram(Instant::now(), &buf[..n]);
            }
            self.dtls.handle_timeout(Instant::now());
            while let Some(plain) = self.dtls.poll_plaintext() {
                if let Ok(answer) = Message::decode(&plain)
                    && answer.message_id == self.next_mid
                    && answer.mtype == MessageType::Acknowledgement
                {
                    return Some(answer);
                }
            }
        }
        None
    }
}

fn register(ep: Option<&str>) -> Message {
    let mut m = Message::request(Code::POST, "/rd");
    if let Some(ep) = ep {
        m.add_uri_query(&format!("ep={ep}"));
    }
    m.add_uri_query("lt=300");
    m.payload = b"</3/0>".to_vec();
    m
}

/// The registry's change-feed position once the hub has stopped moving.
fn settled_seq(hub: &Hub) -> u64 {
    let mut last = hub.registry().read().last_seq();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = hub.registry().read().last_seq();
        if now == last {
            return now;
        }
        last = now;
    }
}

fn twin_json(hub: &Hub, id: &str) -> String {
    serde_json::to_string(&hub.twin(id).unwrap()).unwrap()
}

#[test]
fn refusals_leave_the_registry_unchanged() {
    let hub = hub_with(&["ref-a", "ref-b"]);
    let server = hub.local_addr().unwrap();
    let mut devices = vec![start_with(
        "ref-a",
        server,
        false,
        Some(creds("ref-a-id", 1)),
    )];
    wait_for(&mut devices, "ref-a to sync", || {
        prop(&hub, "ref-a", "BatteryLevel").is_some()
    });
    let location: Vec<String> = {
        let reg = hub.registry().read();
        let id = &reg
            .get("ref-a")
            .unwrap()
            .registration()
            .unwrap()
            .registration_id;
        vec!["rd".into(), id.clone()]
    };
    // Every operation the hub sent (the sync's) answered, however slow the threads: what
    // the device sends after that changes nothing while it keeps its values.
    wait_for(&mut devices, "ref-a's sync answered", || {
        let m = hub.metrics();
        m.sync_latency.count
            + m.job_operation_latency.count
            + m.request_latency.count
            + m.untimed_operations
            >= m.counters.ops_sent
    });
    let seq = settled_seq(&hub);
    let (a_before, b_before) = (twin_json(&hub, "ref-a"), twin_json(&hub, "ref-b"));
    let unchanged = |what: &str| {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            hub.registry().read().last_seq(),
            seq,
            "the feed moved: {what}"
        );
        assert_eq!(twin_json(&hub, "ref-a"), a_before, "{what}");
        assert_eq!(twin_json(&hub, "ref-b"), b_before, "{what}");
    };

    // 1. An unknown identity does not get a session.
    let mut stranger = RawPeer::new(server, creds("nobody", 9));
    assert!(
        stranger
            .exchange_within(register(Some("ref-b")), Duration::from_secs(3))
            .is_none()
    );
    assert!(!stranger.dtls.is_connected());
    unchanged("unknown identity");
    // 2. A known identity with the wrong key neither.
    let mut wrong = RawPeer::new(server, creds("ref-b-id", 9));
    assert!(
        wrong
            .exchange_within(register(Some("ref-b")), Duration::from_secs(3))
            .is_none()
    );
    unchanged("wrong key");
    // 3. Plain CoAP to the coaps port is dropped.
    let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bytes = Vec::new();
    register(Some("ref-b")).encode(&mut bytes).unwrap();
    plain.send_to(&bytes, server).unwrap();
    unchanged("plain coap");
    // 4. ref-b's identity claiming ref-a's endpoint: 4.03.
    let mut b = RawPeer::new(server, creds("ref-b-id", 2));
    let answer = b.exchange(register(Some("ref-a"))).expect("an answer");
    assert_eq!(answer.code, Code::FORBIDDEN);
    unchanged("another device's endpoint");
    // 5. ref-b's session updating or de-registering ref-a's registration: 4.03.
    let mut update = Message::request(Code::POST, &location.join("/"));
    update.add_uri_query("lt=60");
    assert_eq!(b.exchange(update).unwrap().code, Code::FORBIDDEN);
    let delete = Message::request(Code::DELETE, &location.join("/"));
    assert_eq!(b.exchange(delete).unwrap().code, Code::FORBIDDEN);
    unchanged("takeover by another session");
    assert!(hub.stats().rejected >= 3);

    // ref-b registers with its endpoint left out: it is the identity's.
    let answer = b.exchange(register(None)).unwrap();
    assert_eq!(answer.code, Code::CREATED);
    let b_location: Vec<String> = answer.location_path().map(str::to_owned).collect();
    wait_for(&mut devices, "ref-b to connect", || {
        hub.registry()
            .read()
            .get("ref-b")
            .unwrap()
            .connection_state()
            == ConnectionState::Connected
    });
    // 6. Replayed records: ref-b de-registers, then registers again; its old De-register
    // record, replayed from its address and from another one, changes nothing.
    let delete = Message::request(Code::DELETE, &b_location.join("/"));
    assert_eq!(b.exchange(delete).unwrap().code, Code::DELETED);
    let replay = b.last_records.clone();
    assert!(!replay.is_empty());
    let answer = b.exchange(register(None)).unwrap();
    assert_eq!(answer.code, Code::CREATED);
    wait_for(&mut devices, "ref-b to connect again", || {
        hub.registry()
            .read()
            .get("ref-b")
            .unwrap()
            .connection_state()
            == ConnectionState::Connected
    });
    let seq = settled_seq(&hub);
    let b_now = twin_json(&hub, "ref-b");
    let elsewhere = UdpSocket::bind("127.0.0.1:0").unwrap();
    for r in &replay {
        b.socket.send_to(r, server).unwrap();
        elsewhere.send_to(r, server).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        hub.registry().read().last_seq(),
        seq,
        "a replay moved the feed"
    );
    assert_eq!(twin_json(&hub, "ref-b"), b_now);
    // The record replayed from elsewhere is dropped (no session there) when the hub's
    // transport thread gets to it: however slow it is.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub.dtls_stats().unwrap().dropped_no_session < 1 {
        assert!(
            Instant::now() < deadline,
            "the replay from another address was not dropped for want of a session"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // The registered device kept working throughout.
    devices[0]
        .thread
        .as_ref()
        .unwrap()
        .with(|c| c.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(33)))
        .unwrap();
    wait_for(&mut devices, "ref-a's notification", || {
        prop(&hub, "ref-a", "BatteryLevel") == Some(Scalar::from(33))
    });
    // Removing ref-a's key: its session closes, its next update cannot get through.
    assert!(hub.remove_psk("ref-a").unwrap());
    assert!(
        hub.psk_store()
            .unwrap()
            .identity_of(&DeviceId::new("ref-a").unwrap())
            .is_none()
    );
    for d in devices.iter_mut() {
        drop(d.thread.take());
    }
    hub.stop();
}

#[test]
fn a_device_handshakes_again_after_a_nat_rebinding_and_after_the_hub_lost_its_session() {
    let hub = hub_with(&["nat-1"]);
    let hub_addr = hub.local_addr().unwrap();
    let nat = Nat::start(hub_addr);
    let mut devices = vec![start_fast("nat-1", nat.front, creds("nat-1-id", 1))];
    wait_for(&mut devices, "nat-1 to register", || {
        registered_port(&hub, "nat-1") == Some(nat.outside_port())
    });
    // One handshake, or more on a loaded machine: the device gives up on a Register
    // unanswered for 900 ms and handshakes again.
    let handshakes = hub.dtls_stats().unwrap().handshakes;
    assert!(handshakes >= 1);

    // The NAT forgets the mapping: the device's records now come from a port the hub has
    // no session for. The unanswered update makes the device handshake again.
    nat.rebind();
    devices[0]
        .thread
        .as_ref()
        .unwrap()
        .with(|c| c.trigger_update());
    wait_for(&mut devices, "nat-1 to come back from its new port", || {
        registered_port(&hub, "nat-1") == Some(nat.outside_port())
    });
    assert!(hub.dtls_stats().unwrap().handshakes > handshakes);
    // Requests reach it through the new session.
    let spec = JobSpec::new(
        JobId::new("read-after-rebind").unwrap(),
        JobType::ReadDeviceProperties {
            paths: vec![Lwm2mPath::resource(3, 0, 9)],
        },
        vec![DeviceId::new("nat-1").unwrap()],
    );
    assert_eq!(run_job(&hub, &mut devices, spec), JobStatus::Completed);

    // The hub restarts on the same port and has no session: the device handshakes again
    // and registers anew.
    hub.stop();
    drop(hub);
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("nat-1").unwrap()))
        .unwrap();
    let hub = Hub::bind_dtls(hub_addr, registry, HubConfig::default()).unwrap();
    hub.set_psk("nat-1", creds("nat-1-id", 1)).unwrap();
    devices[0]
        .thread
        .as_ref()
        .unwrap()
        .with(|c| c.trigger_update());
    wait_for(
        &mut devices,
        "nat-1 to register with the restarted hub",
        || registered_port(&hub, "nat-1").is_some(),
    );
    // (More than one on a loaded machine, as above.)
    assert!(hub.dtls_stats().unwrap().handshakes >= 1);
    assert!(devices[0].thread.as_ref().unwrap().dtls_handshakes() >= 3);
    for d in devices.iter_mut() {
        drop(d.thread.take());
    }
    hub.stop();
}

/// A DTLS device that gives up on an unanswered request quickly.
fn start_fast(id: &str, server: SocketAddr, psk: PskCredentials) -> Device {
    e2e_support::start_configured(id, server, false, Some(psk), |c| {
        c.ack_timeout = Duration::from_millis(300);
        c.max_retransmit = 1;
        c.retry_initial = Duration::from_millis(200);
        c.retry_max = Duration::from_secs(1);
    })
}

#[test]
fn credentials_are_set_rotated_and_removed_through_the_hub_and_never_printed() {
    let hub = hub_with(&["cred-1", "cred-2"]);
    assert!(matches!(
        hub.set_psk("nobody", creds("x", 1)),
        Err(twinhub::dtls::CredentialsError::UnknownDevice { .. })
    ));
    // An identity belongs to one device; the refusal changes nothing.
    assert!(matches!(
        hub.set_psk("cred-2", creds("cred-1-id", 5)),
        Err(twinhub::dtls::CredentialsError::IdentityTaken { .. })
    ));
    let store = hub.psk_store().unwrap();
    assert_eq!(
        store
            .identity_of(&DeviceId::new("cred-2").unwrap())
            .as_deref(),
        Some("cred-2-id")
    );
    // Rotation replaces the identity and the key in the twin and the store, and is
    // published before the call returns, like every service write through the hub.
    let sub = hub
        .subscribe(twinhub::hub::SubscribeOptions::twins_only())
        .unwrap();
    let published = || {
        std::iter::from_fn(|| sub.try_recv().ok())
            .filter_map(|e| match e {
                twinhub::hub::HubEvent::Twin(c) => Some((c.device.to_string(), c.kind)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let authentication =
        |d: &str| vec![(d.to_owned(), twinhub::registry::ChangeKind::Authentication)];
    hub.set_psk("cred-1", creds("cred-1-new", 9)).unwrap();
    assert_eq!(published(), authentication("cred-1"));
    assert_eq!(
        store.device_of("cred-1-new"),
        Some(DeviceId::new("cred-1").unwrap())
    );
    assert!(store.device_of("cred-1-id").is_none());
    let twin = hub.twin("cred-1").unwrap();
    assert_eq!(
        twin.authentication.psk_identity.as_deref(),
        Some("cred-1-new")
    );
    let (json, debug) = (serde_json::to_string(&twin).unwrap(), format!("{twin:?}"));
    for text in [&json, &debug] {
        assert!(
            !text.contains("9, 9, 9") && !text.contains("090909"),
            "{text}"
        );
    }
    assert!(hub.remove_psk("cred-1").unwrap());
    assert_eq!(published(), authentication("cred-1"));
    assert!(!hub.remove_psk("cred-1").unwrap());
    assert_eq!(published(), vec![], "nothing changed, nothing published");
    assert!(hub.twin("cred-1").unwrap().authentication.is_empty());
    hub.remove_device("cred-2").unwrap();
    assert!(store.is_empty());
    hub.stop();
}
