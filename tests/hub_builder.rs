//! Issue #17: `HubBuilder`. Object types of a custom object decode typed (the same TLV
//! value is opaque without them), the service's authorizer refuses after the hub's own
//! checks pass, the registry is shared with the caller, and `build` reports mistakes.

#![cfg(all(feature = "lwm2m", feature = "memory-fleet"))]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use twinhub::coap::{Code, Message, MessageType};
use twinhub::hub::{BuildError, Hub, HubEvent, LifecycleKind, SubscribeOptions};
use twinhub::lwm2m::content::{ContentFormat, encode};
use twinhub::lwm2m::server::Decision;
use twinhub::registry::{Registry, SharedRegistry};
use twinhub::transport::memory::{MemoryConfig, MemoryTransport};
use twinhub::transport::{DeviceReply, DeviceRequest, RejectReason};
use twinhub::twin::Twin;
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceType, ResourceValue};

static NEXT_ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);

const SENSOR: Lwm2mPath = Lwm2mPath::resource(3303, 0, 5700);

/// A device on a raw socket: registers as LWM2M 1.0 with `</3303/0>` and answers one read
/// of the sensor value with TLV (which carries no types).
struct RawDevice {
    socket: UdpSocket,
    hub: SocketAddr,
}

impl RawDevice {
    fn new(hub: SocketAddr) -> RawDevice {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawDevice { socket, hub }
    }

    fn recv(&self) -> Message {
        let mut buf = [0u8; 2048];
        let (n, _) = self
            .socket
            .recv_from(&mut buf)
            .expect("a datagram from the hub");
        Message::decode(&buf[..n]).unwrap()
    }

    /// Registers; returns the response code.
    fn register(&self, endpoint: &str) -> Code {
        let mut m = Message::request(Code::POST, "rd");
        m.mtype = MessageType::Confirmable;
        // A new message id per Register: a repeated one is a retransmission.
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        m.message_id = id;
        m.set_token(&[1, 2, 3, 4]).unwrap();
        for q in [
            format!("ep={endpoint}"),
            "lt=300".into(),
            "lwm2m=1.0".into(),
            "b=U".into(),
        ] {
            m.add_uri_query(&q);
        }
        m.payload = b"</3303/0>".to_vec();
        self.socket
            .send_to(&m.to_bytes().unwrap(), self.hub)
            .unwrap();
        loop {
            let r = self.recv();
            if r.message_id == id {
                return r.code;
            }
        }
    }

    /// Answers the hub's read of the sensor with `21.5` in TLV.
    fn answer_read(&self) {
        let request = loop {
            let m = self.recv();
            if m.code == Code::GET {
                break m;
            }
        };
        assert_eq!(request.uri_path_string(), "3303/0/5700");
        let mut response = Message::response(Code::CONTENT);
        response.mtype = MessageType::Acknowledgement;
        response.message_id = request.message_id;
        response.with_token(request.token());
        response.set_content_format(twinhub::coap::ContentFormat(ContentFormat::Tlv.code()));
        response.payload = encode(
            ContentFormat::Tlv,
            &SENSOR,
            &Content::single(SENSOR, ResourceValue::Float(21.5)),
        )
        .unwrap();
        self.socket
            .send_to(&response.to_bytes().unwrap(), self.hub)
            .unwrap();
    }
}

/// Registers `sensor-1` on `hub` and reads its sensor value through `Hub::request`.
fn read_sensor(hub: &Hub) -> ResourceValue {
    let device = RawDevice::new(hub.local_addr().unwrap());
    assert_eq!(device.register("sensor-1"), Code::CREATED);
    let reply = hub.request(
        &DeviceId::new("sensor-1").unwrap(),
        DeviceRequest::Read { path: SENSOR },
    );
    device.answer_read();
    match reply.wait(Duration::from_secs(10)) {
        Ok(DeviceReply::Content(c)) => c.values[0].1.clone(),
        other => panic!("{other:?}"),
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    for id in ["sensor-1", "blocked-1"] {
        registry
            .create(Twin::new(DeviceId::new(id).unwrap()))
            .unwrap();
    }
    registry
}

#[test]
fn custom_object_types_decode_typed_and_the_authorizer_runs_after_the_hubs_checks() {
    let shared = SharedRegistry::new(registry());
    let hub = Hub::builder()
        .shared_registry(shared.clone())
        .object_types(|p| {
            (p.object_id() == Some(3303) && p.resource_id() == Some(5700))
                .then_some(ResourceType::Float)
        })
        .authorizer(|request, _| {
            if request.endpoint.starts_with("blocked-") {
                Decision::Reject(RejectReason::Disabled)
            } else {
                Decision::Accept
            }
        })
        .udp("127.0.0.1:0")
        .build()
        .unwrap();
    let events = hub.subscribe(SubscribeOptions::default()).unwrap();
    assert_eq!(read_sensor(&hub), ResourceValue::Float(21.5));

    // The service's check refuses a device the hub's own checks let through ...
    let blocked = RawDevice::new(hub.local_addr().unwrap());
    assert_eq!(blocked.register("blocked-1"), Code::FORBIDDEN);
    // ... and never sees one they refuse (unknown to the registry).
    assert_eq!(blocked.register("stranger"), Code::FORBIDDEN);
    let mut reasons = Vec::new();
    while reasons.len() < 2 {
        if let HubEvent::Lifecycle(l) = events.recv_timeout(Duration::from_secs(10)).unwrap()
            && l.event == LifecycleKind::Rejected
        {
            reasons.push((l.device, l.reason.unwrap()));
        }
    }
    assert_eq!(
        reasons,
        [
            ("blocked-1".to_string(), "device disabled".to_string()),
            ("stranger".to_string(), "unknown device".to_string())
        ]
    );

    // The registry is the caller's too.
    shared
        .write()
        .create(Twin::new(DeviceId::new("added-aside").unwrap()))
        .unwrap();
    assert!(hub.twin("added-aside").is_some());
}

#[test]
fn without_object_types_the_same_value_is_opaque() {
    let hub = Hub::bind_udp("127.0.0.1:0", registry(), Default::default()).unwrap();
    let value = read_sensor(&hub);
    assert!(
        !matches!(value, ResourceValue::Float(_)),
        "an untyped TLV value cannot be a float: {value:?}"
    );
}

#[test]
fn build_reports_what_is_wrong() {
    assert!(matches!(
        Hub::builder().build(),
        Err(BuildError::NoTransport)
    ));
    let err = Hub::builder()
        .transport(MemoryTransport::new(MemoryConfig::default()))
        .authorizer(|_, _| Decision::Accept)
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::NotForTransport(_)), "{err}");
    assert!(matches!(
        Hub::builder().udp("no-such-host.invalid:5683").build(),
        Err(BuildError::Address(_))
    ));
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(matches!(
        Hub::builder().udp(taken.local_addr().unwrap()).build(),
        Err(BuildError::Bind(_))
    ));
    // A custom transport with a shared registry works.
    let hub = Hub::builder()
        .registry(registry())
        .transport(MemoryTransport::new(MemoryConfig::default()))
        .build()
        .unwrap();
    assert_eq!(hub.registry().read().len(), 2);
}

/// Day 45, item 2. Before: a server configuration with `nstart: 0` (or any setting that
/// leaves the server inert) started a hub that never sent a request, without a word.
/// Now `build`, `Hub::bind_udp` and `UdpServer::bind` refuse it with the typed error,
/// and bind nothing; a custom transport does not use the server's settings and is not
/// refused for them.
#[test]
fn build_refuses_an_inert_server_configuration() {
    use twinhub::hub::{HubConfig, HubConfigError};
    use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig, ServerConfigError, UdpServer};
    let inert = HubConfig {
        server: ServerConfig {
            nstart: 0,
            ..ServerConfig::default()
        },
        ..HubConfig::default()
    };
    let err = Hub::builder()
        .config(inert.clone())
        .udp("127.0.0.1:0")
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Config(HubConfigError::Server(ServerConfigError::Zero("nstart")))
        ),
        "{err}"
    );
    let err = Hub::bind_udp("127.0.0.1:0", Registry::new(), inert.clone()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<HubConfigError>()),
        Some(&HubConfigError::Server(ServerConfigError::Zero("nstart"))),
        "{err}"
    );
    let err = UdpServer::bind("127.0.0.1:0", Lwm2mServer::new(inert.server.clone())).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    // The server's settings are not a custom transport's.
    let hub = Hub::builder()
        .config(inert)
        .transport(MemoryTransport::new(MemoryConfig::default()))
        .build()
        .unwrap();
    hub.stop();
}

/// Day 46, item 4: the job engine's settings are the hub's, whatever its transport. A
/// duration set from Rust past the clock's range (`Duration::MAX`) was taken, and the
/// hub's thread panicked at the first firmware poll or lost reboot answer; `build` and
/// `bind_udp` now refuse it, named as in JSON (`jobs: rebootWaitMs ...`), before
/// anything starts.
#[test]
fn build_refuses_job_engine_durations_past_the_clock() {
    use twinhub::hub::{HubConfig, HubConfigError};
    use twinhub::job::{EngineConfig, EngineConfigError};
    let overflowing = HubConfig {
        jobs: EngineConfig {
            reboot_wait: Duration::MAX,
            ..EngineConfig::default()
        },
        ..HubConfig::default()
    };
    let refused = HubConfigError::Jobs(EngineConfigError::TooLong("rebootWaitMs"));
    assert_eq!(overflowing.validate(), Err(refused));
    assert!(
        refused.to_string().starts_with("jobs: rebootWaitMs"),
        "{refused}"
    );
    let err = Hub::builder()
        .config(overflowing.clone())
        .transport(MemoryTransport::new(MemoryConfig::default()))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Config(e) if e == refused),
        "{err}"
    );
    let err = Hub::bind_udp("127.0.0.1:0", Registry::new(), overflowing).unwrap_err();
    assert_eq!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<HubConfigError>()),
        Some(&refused),
        "{err}"
    );
}

/// Day 46, item 4: `dtls.maxSessions: 0` (and the other DTLS bounds at 0) was documented
/// as refusing every session, and taken: a `coaps` hub no device could ever reach, with
/// no word. It is a mistake, not a mode (withdraw keys to keep devices out):
/// `Hub::bind_dtls` and `build` now refuse it, named as in JSON; a hub over plain UDP
/// does not use the DTLS settings and is not refused for them.
#[cfg(feature = "dtls")]
#[test]
fn bind_dtls_refuses_a_dtls_bound_of_zero() {
    use twinhub::dtls::{DtlsConfigError, DtlsServerConfig};
    use twinhub::hub::{HubConfig, HubConfigError};
    let closed = HubConfig {
        dtls: DtlsServerConfig {
            max_sessions: 0,
            ..DtlsServerConfig::default()
        },
        ..HubConfig::default()
    };
    let refused = HubConfigError::Dtls(DtlsConfigError::Zero("maxSessions"));
    let err = Hub::bind_dtls("127.0.0.1:0", Registry::new(), closed.clone()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<HubConfigError>()),
        Some(&refused),
        "{err}"
    );
    let err = Hub::builder()
        .config(closed.clone())
        .dtls("127.0.0.1:0")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::Config(e) if e == refused),
        "{err}"
    );
    // The bundled server on its own, too.
    let dtls = twinhub::dtls::DtlsServer::new(closed.dtls.clone(), twinhub::dtls::PskStore::new());
    let server = twinhub::lwm2m::server::Lwm2mServer::new(closed.server.clone());
    let Err(err) = twinhub::lwm2m::server::UdpServer::bind_secure("127.0.0.1:0", server, dtls)
    else {
        panic!("bound with maxSessions 0");
    };
    assert_eq!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<DtlsConfigError>()),
        Some(&DtlsConfigError::Zero("maxSessions")),
        "{err}"
    );
    let hub = Hub::bind_udp("127.0.0.1:0", Registry::new(), closed).unwrap();
    hub.stop();
}
