//! Issue #20's findings, over loopback UDP: a scripted LWM2M 1.1 client that announces no
//! `ct` in its registration and answers every read and notification in SenML CBOR (what
//! a widely used C client does in its default build). The hub must ask for CBOR, decode
//! it, keep its observations (a CBOR notification is acknowledged, not reset), run a
//! firmware job (which writes `/5/0/1`) and a multi-instance resource read, and observe
//! again on the next Update what failed or what the device ended. A client registering as LWM2M 1.2 gets 4.12 and
//! registers again as 1.1. The client is built without the composite operations (it
//! answers FETCH with 4.05): the hub's Observe-Composite is refused once and the hub
//! observes path by path instead.

#![cfg(feature = "lwm2m")]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use twinhub::coap::{Code, ContentFormat, Message, MessageType};
use twinhub::hub::{Hub, HubConfig};
use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
use twinhub::lwm2m::content::{self, ContentFormat as Cf};
use twinhub::registry::Registry;
use twinhub::twin::Scalar;
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

const SENML_CBOR: u16 = 112;

/// The scripted client: a resource table, its observations and a log of what it got.
struct Scripted {
    sock: UdpSocket,
    hub: SocketAddr,
    mid: u16,
    location: String,
    values: BTreeMap<Lwm2mPath, ResourceValue>,
    /// `(token, path)` of every observation the hub holds.
    observations: Vec<(Vec<u8>, Lwm2mPath)>,
    seq: u32,
    /// Refuse the next Observe of `/1/0` with 4.05 (a failed observation the hub needs).
    refuse_server_observe: bool,
    /// Every request the hub sent: method, path, Accept, Observe.
    log: Vec<(Code, String, Option<u16>, Option<u32>)>,
    /// Resets the hub sent (to our notifications).
    resets: usize,
    /// Acknowledgements the hub sent to our confirmable notifications.
    acks: usize,
}

fn path_of(m: &Message) -> String {
    m.uri_path().map(|s| format!("/{s}")).collect()
}

impl Scripted {
    fn new(hub: SocketAddr) -> Scripted {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let r = |rid| Lwm2mPath::resource(3, 0, rid);
        let mut values = BTreeMap::new();
        values.insert(r(0), ResourceValue::String("Scripted Co".into()));
        values.insert(r(1), ResourceValue::String("CBOR-1".into()));
        values.insert(r(3), ResourceValue::String("1.0".into()));
        for (i, mv) in [3300i64, 5000].into_iter().enumerate() {
            values.insert(
                Lwm2mPath::resource_instance(3, 0, 7, i as u16),
                ResourceValue::Integer(mv),
            );
        }
        values.insert(r(9), ResourceValue::Integer(77));
        values.insert(r(16), ResourceValue::String("U".into()));
        values.insert(Lwm2mPath::resource(1, 0, 0), ResourceValue::Integer(1));
        values.insert(Lwm2mPath::resource(1, 0, 1), ResourceValue::Integer(300));
        values.insert(
            Lwm2mPath::resource(5, 0, 1),
            ResourceValue::String(String::new()),
        );
        values.insert(Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(0));
        values.insert(Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(0));
        Scripted {
            sock,
            hub,
            mid: 0x4000,
            location: String::new(),
            values,
            observations: Vec::new(),
            seq: 1,
            refuse_server_observe: true,
            log: Vec::new(),
            resets: 0,
            acks: 0,
        }
    }

    fn send(&mut self, m: &Message) {
        self.sock.send_to(&m.to_bytes().unwrap(), self.hub).unwrap();
    }

    fn next_mid(&mut self) -> u16 {
        self.mid = self.mid.wrapping_add(1);
        self.mid
    }

    /// Sends a registration-interface request and waits for its piggybacked answer,
    /// serving whatever else arrives meanwhile.
    fn rd(&mut self, code: Code, path: &str, queries: &[&str], payload: &[u8]) -> Message {
        let mut m = Message::new(MessageType::Confirmable, code, self.next_mid());
        m.set_token(&[0xAB, self.mid as u8]).unwrap();
        m.set_uri_path(path);
        for q in queries {
            m.add_uri_query(q);
        }
        if !payload.is_empty() {
            m.set_content_format(ContentFormat(40));
            m.payload = payload.to_vec();
        }
        let mid = m.message_id;
        // Sent again every 2 s, as on loss (the hub answers a duplicate from its cache),
        // for up to 30 s: a loaded machine may not run the hub's threads for a while.
        for _attempt in 0..15 {
            self.send(&m);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Some(r) = self.receive()
                    && r.mtype == MessageType::Acknowledgement
                    && r.message_id == mid
                {
                    return r;
                }
            }
        }
        panic!("no answer to {code:?} {path}");
    }

    fn register(&mut self, version: &str) -> Message {
        let v = format!("lwm2m={version}");
        // No `ct`: the hub has to choose from the version alone.
        let r = self.rd(
            Code::POST,
            "/rd",
            &["ep=cbor-1", "lt=60", &v, "b=U"],
            b"</1/0>,</3/0>,</5/0>",
        );
        if r.code == Code::CREATED {
            self.location = r.location_path().collect::<Vec<_>>().join("/");
        }
        r
    }

    fn update(&mut self) {
        let loc = format!("/{}", self.location);
        let r = self.rd(Code::POST, &loc, &[], b"");
        assert_eq!(r.code, Code::CHANGED);
    }

    /// Receives one datagram; serves a request, counts an ACK or RST. Returns any other
    /// response (for [`Self::rd`]).
    fn receive(&mut self) -> Option<Message> {
        let mut buf = [0u8; 2048];
        let (n, from) = self.sock.recv_from(&mut buf).ok()?;
        assert_eq!(from, self.hub);
        let m = twinhub::coap::Message::decode(&buf[..n]).ok()?;
        match (m.mtype, m.code.is_request()) {
            (MessageType::Reset, _) => {
                self.resets += 1;
                None
            }
            (MessageType::Confirmable | MessageType::NonConfirmable, true) => {
                self.serve(&m);
                None
            }
            (MessageType::Acknowledgement, _) if m.code == Code::EMPTY => {
                self.acks += 1;
                None
            }
            _ => Some(m),
        }
    }

    fn cbor(&self, base: &Lwm2mPath) -> Option<Vec<u8>> {
        let values: Vec<_> = self
            .values
            .iter()
            .filter(|(p, _)| base.contains(p))
            .map(|(p, v)| (*p, v.clone()))
            .collect();
        if values.is_empty() {
            return None;
        }
        Some(content::encode(Cf::SenmlCbor, base, &Content { values }).unwrap())
    }

    fn serve(&mut self, req: &Message) {
        // No Uri-Path (a composite FETCH): the root.
        let path: Lwm2mPath = path_of(req).parse().unwrap_or(Lwm2mPath::ROOT);
        self.log.push((
            req.code,
            path.to_string(),
            req.accept().map(|a| a.0),
            req.observe(),
        ));
        let mut r = Message::new(MessageType::Acknowledgement, Code::CHANGED, req.message_id);
        r.with_token(req.token());
        let mut after: Vec<(Lwm2mPath, ResourceValue)> = Vec::new();
        match req.code {
            Code::GET => {
                let refuse = path == Lwm2mPath::instance(1, 0)
                    && req.observe() == Some(0)
                    && std::mem::take(&mut self.refuse_server_observe);
                match self.cbor(&path) {
                    _ if refuse => r.code = Code::METHOD_NOT_ALLOWED,
                    // SenML CBOR whatever the Accept says (or when there is none).
                    Some(body) => {
                        r.code = Code::CONTENT;
                        r.set_content_format(ContentFormat(SENML_CBOR));
                        r.payload = body;
                        if req.observe() == Some(0) {
                            self.observations
                                .retain(|(t, _)| t.as_slice() != req.token().as_bytes());
                            self.observations
                                .push((req.token().as_bytes().to_vec(), path));
                            self.seq += 1;
                            r.set_observe(self.seq);
                        }
                    }
                    None => r.code = Code::NOT_FOUND,
                }
            }
            // Write-Attributes (only Uri-Query) and writes.
            Code::PUT if req.payload.is_empty() => {}
            Code::PUT => {
                let cf = req.content_format().map_or(0, |c| c.0);
                let c = content::decode(
                    Cf::from_code(cf).unwrap(),
                    &req.payload,
                    &path,
                    &content::standard_resource_type,
                )
                .unwrap();
                for (p, v) in c.values {
                    self.values.insert(p, v);
                }
                if path == Lwm2mPath::resource(5, 0, 1) {
                    // Downloading, then Downloaded.
                    after.push((Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(1)));
                    after.push((Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(2)));
                }
            }
            Code::POST if path == Lwm2mPath::resource(5, 0, 2) => {
                // Updating, then Idle with Update Result 1 and the new version.
                after.push((Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(3)));
                after.push((
                    Lwm2mPath::resource(3, 0, 3),
                    ResourceValue::String("2.0".into()),
                ));
                after.push((Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(1)));
                after.push((Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(0)));
            }
            _ => r.code = Code::METHOD_NOT_ALLOWED,
        }
        self.send(&r);
        for (p, v) in after {
            self.set(p, v);
        }
    }

    /// Changes a value and notifies every observation of a path above it, confirmable,
    /// in SenML CBOR.
    fn set(&mut self, path: Lwm2mPath, value: ResourceValue) {
        self.values.insert(path, value);
        let observers: Vec<_> = self
            .observations
            .iter()
            .filter(|(_, p)| p.contains(&path))
            .cloned()
            .collect();
        for (token, p) in observers {
            let body = self.cbor(&p).unwrap();
            let mut n = Message::new(MessageType::Confirmable, Code::CONTENT, self.next_mid());
            n.set_token(&token).unwrap();
            self.seq += 1;
            n.set_observe(self.seq);
            n.set_content_format(ContentFormat(SENML_CBOR));
            n.payload = body;
            self.send(&n);
        }
    }

    /// Serves until `done` holds (at most 20 s).
    fn serve_until(&mut self, what: &str, mut done: impl FnMut(&mut Scripted) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.receive();
        }
    }
}

fn prop(hub: &Hub, name: &str) -> Option<Scalar> {
    hub.registry()
        .read()
        .get("cbor-1")?
        .device_property(name)
        .map(|(v, _)| v.clone())
}

fn observes(s: &Scripted, path: &str) -> usize {
    s.log
        .iter()
        .filter(|(c, p, _, o)| *c == Code::GET && p == path && *o == Some(0))
        .count()
}

#[test]
fn a_cbor_only_client_without_ct_syncs_runs_jobs_and_is_observed_again() {
    let hub = Hub::bind_udp(
        "127.0.0.1:0",
        Registry::new(),
        HubConfig {
            auto_provision: true,
            ..HubConfig::default()
        },
    )
    .unwrap();
    let mut dev = Scripted::new(hub.local_addr().unwrap());

    // LWM2M 1.2 is refused with 4.12 (so the client can fall back); 1.1 is taken.
    assert_eq!(dev.register("1.2").code, Code::PRECONDITION_FAILED);
    assert_eq!(dev.register("..").code, Code::BAD_REQUEST);
    assert_eq!(dev.register("1.1").code, Code::CREATED);

    // The twin's device properties fill from SenML CBOR answers.
    dev.serve_until("the twin's device properties", |_| {
        prop(&hub, "Manufacturer").is_some() && prop(&hub, "BatteryLevel").is_some()
    });
    assert_eq!(
        prop(&hub, "Manufacturer"),
        Some(Scalar::from("Scripted Co"))
    );
    assert_eq!(prop(&hub, "FirmwareVersion"), Some(Scalar::from("1.0")));
    // The hub first tried one Observe-Composite of the synced instances; refused, it
    // observes them one by one.
    let composites: Vec<_> = dev.log.iter().filter(|(c, ..)| *c == Code::FETCH).collect();
    assert_eq!(
        composites,
        [&(Code::FETCH, "/".to_owned(), Some(SENML_CBOR), Some(0))]
    );
    // Every read and observe asked for SenML CBOR: the best a 1.1 client may speak.
    let gets: Vec<_> = dev.log.iter().filter(|(c, ..)| *c == Code::GET).collect();
    assert!(!gets.is_empty());
    assert!(
        gets.iter().all(|(_, _, a, _)| *a == Some(SENML_CBOR)),
        "{gets:?}"
    );

    // A confirmable SenML CBOR notification is acknowledged (not reset) and applied.
    dev.serve_until("the /3/0 observation", |d| {
        d.observations
            .iter()
            .any(|(_, p)| *p == Lwm2mPath::instance(3, 0))
    });
    let acks = dev.acks;
    dev.set(Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(55));
    dev.serve_until("the notification's effect", |_| {
        prop(&hub, "BatteryLevel") == Some(Scalar::from(55i64))
    });
    dev.serve_until("the notification's ACK", |d| d.acks > acks);
    assert_eq!(dev.resets, 0, "no notification was reset");

    // The refused observation of /1/0 is established again on the next Update.
    dev.serve_until("the refused /1/0 observe", |d| observes(d, "/1/0") == 1);
    assert!(
        !dev.observations
            .iter()
            .any(|(_, p)| *p == Lwm2mPath::instance(1, 0))
    );
    dev.update();
    dev.serve_until("/1/0 observed again", |d| {
        d.observations
            .iter()
            .any(|(_, p)| *p == Lwm2mPath::instance(1, 0))
    });
    assert_eq!(observes(&dev, "/1/0"), 2);
    // Those that held are not observed twice.
    assert_eq!(observes(&dev, "/3/0"), 1);

    // The device ends the /3/0 observation (an error notification): observed again on
    // the next Update.
    let (token, _) = dev
        .observations
        .iter()
        .find(|(_, p)| *p == Lwm2mPath::instance(3, 0))
        .cloned()
        .unwrap();
    dev.observations.retain(|(t, _)| *t != token);
    let mut end = Message::new(MessageType::Confirmable, Code::NOT_FOUND, dev.next_mid());
    end.set_token(&token).unwrap();
    dev.send(&end);
    let acks = dev.acks;
    dev.serve_until("the error notification's ACK", |d| d.acks > acks);
    dev.update();
    dev.serve_until("/3/0 observed again", |d| observes(d, "/3/0") == 2);
    dev.serve_until("the new /3/0 observation", |d| {
        d.observations
            .iter()
            .any(|(_, p)| *p == Lwm2mPath::instance(3, 0))
    });

    // A multi-instance resource read.
    let read = JobId::new("read-voltage").unwrap();
    hub.create_job(JobSpec::new(
        read.clone(),
        JobType::read_properties(&["/3/0/7"]).unwrap(),
        vec![DeviceId::new("cbor-1").unwrap()],
    ))
    .unwrap();
    dev.serve_until("the read job", |_| {
        hub.job(&read).unwrap().status.is_terminal()
    });
    assert_eq!(hub.job(&read).unwrap().status, JobStatus::Completed);

    // A firmware job: writes /5/0/1, follows the CBOR notifications, executes, verifies.
    let fw = JobId::new("fw-cbor").unwrap();
    hub.create_job(JobSpec::new(
        fw.clone(),
        JobType::FirmwareUpdate {
            package_uri: "coap://127.0.0.1:5683/fw.bin".into(),
            expected_version: Some("2.0".into()),
        },
        vec![DeviceId::new("cbor-1").unwrap()],
    ))
    .unwrap();
    dev.serve_until("the firmware job", |_| {
        hub.job(&fw).unwrap().status.is_terminal()
    });
    assert_eq!(
        dev.values.get(&Lwm2mPath::resource(5, 0, 1)),
        Some(&ResourceValue::String(
            "coap://127.0.0.1:5683/fw.bin".into()
        ))
    );
    assert_eq!(
        hub.job(&fw).unwrap().status,
        JobStatus::Completed,
        "{:?}",
        hub.job_children(&fw)
    );
    assert_eq!(dev.resets, 0);
    hub.stop();
}
