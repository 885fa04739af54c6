//! Issue #17: with the `tracing` feature, a refused registration and a failed child job
//! reach the service's subscriber as events of target `twinhub` with their fields.
#![cfg(feature = "tracing")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use twinhub::DeviceId;
use twinhub::hub::{Hub, HubConfig};
use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
use twinhub::registry::Registry;
use twinhub::transport::memory::{DeviceSpec, MemoryConfig, MemoryTransport};
use twinhub::twin::Twin;

/// Every `twinhub` event as `level message field=value ...`.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "twinhub"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(event.metadata().level().to_string());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn refusals_and_failed_children_reach_the_subscriber() {
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(recorder.clone()).unwrap();
    let seen = |what: &[&str]| {
        recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|e| what.iter().all(|w| e.contains(w)))
    };

    // A refused registration, over UDP from a raw socket.
    let hub = Hub::bind_udp("127.0.0.1:0", Registry::new(), HubConfig::default()).unwrap();
    let mut register = twinhub::coap::Message::request(twinhub::coap::Code::POST, "rd");
    register.add_uri_query("ep=stranger");
    register.payload = b"</3/0>".to_vec();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(&register.to_bytes().unwrap(), hub.local_addr().unwrap())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen(&["WARN", "registration refused", "stranger", "unknown device"]) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            recorder.0.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    hub.stop();

    // A child job that fails: a read of a resource the device does not have.
    let id = DeviceId::new("m1").unwrap();
    let mut registry = Registry::new();
    registry.create(Twin::new(id.clone())).unwrap();
    let mut fleet = MemoryTransport::new(MemoryConfig::default());
    fleet
        .add_device(Instant::now(), DeviceSpec::new(id.clone()))
        .unwrap();
    let hub = Hub::with_transport(fleet, registry, HubConfig::default());
    let spec = JobSpec::new(
        JobId::new("bad-write").unwrap(),
        JobType::ReadDeviceProperties {
            paths: vec![twinhub::Lwm2mPath::resource(3, 0, 999)],
        },
        vec![id],
    );
    hub.create_job(spec).unwrap();
    let job = JobId::new("bad-write").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while hub.job(&job).unwrap().status != JobStatus::Failed {
        assert!(Instant::now() < deadline, "the job never failed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The event may come a moment after the status shows (however slow the hub's thread).
    while !seen(&["INFO", "child job failed", "bad-write", "m1", "rejected"]) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            recorder.0.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // A DTLS handshake with the wrong key for a known identity: the device is not told,
    // the operator is (before, only `dtls_stats().handshake_failures` moved).
    #[cfg(feature = "dtls")]
    {
        use twinhub::dtls::{DtlsClient, PskCredentials, PskKey};
        let creds = |seed: u8| PskCredentials::new("sec-id", PskKey::new(vec![seed; 16])).unwrap();
        let mut registry = Registry::new();
        registry
            .create(Twin::new(DeviceId::new("sec").unwrap()))
            .unwrap();
        let hub = Hub::bind_dtls("127.0.0.1:0", registry, HubConfig::default()).unwrap();
        hub.set_psk("sec", creds(1)).unwrap();
        let to = hub.local_addr().unwrap();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut client = DtlsClient::new(Instant::now(), creds(2));
        client.send(Instant::now(), b"hello");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 2048];
        while !seen(&[
            "WARN",
            "DTLS handshake failed",
            "sec-id",
            &socket.local_addr().unwrap().to_string(),
        ]) {
            assert!(
                Instant::now() < deadline,
                "{:?}",
                recorder.0.lock().unwrap()
            );
            while let Some(d) = client.poll_transmit() {
                socket.send_to(&d, to).unwrap();
            }
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                client.handle_datagram(Instant::now(), &buf[..n]);
            }
            client.handle_timeout(Instant::now());
        }
        assert!(!client.is_connected());
        assert!(hub.dtls_stats().unwrap().handshake_failures >= 1);
        hub.stop();
    }
}
