//! The server against scripted devices under a simulated clock.

use super::wire::{self, MsgType, Packet, code};
use super::*;
use crate::transport::{BootstrapOutcome, NotificationAttributes};

struct Sim {
    server: Lwm2mServer,
    now: Instant,
    mid: u16,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn dev(name: &str) -> DeviceId {
    DeviceId::new(name).unwrap()
}

impl Sim {
    fn new(config: ServerConfig) -> Sim {
        Sim {
            server: Lwm2mServer::with_seed(config, 7),
            now: Instant::now(),
            mid: 100,
        }
    }

    fn open() -> Sim {
        Sim::new(ServerConfig {
            auto_provision: true,
            ..ServerConfig::default()
        })
    }

    fn send(&mut self, from: SocketAddr, p: &Packet) {
        self.server.handle_datagram(self.now, from, &p.encode());
    }

    fn out(&mut self) -> Vec<(SocketAddr, Packet)> {
        std::iter::from_fn(|| self.server.poll_transmit())
            .map(|t| (t.destination, Packet::decode(&t.payload).unwrap()))
            .collect()
    }

    fn events(&mut self) -> Vec<DeviceEvent> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.server.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.server.handle_timeout(self.now);
        }
        self.now = end;
        self.server.handle_timeout(self.now);
    }

    fn request(&mut self, c: u8, path: &[&str], queries: &[&str], payload: &[u8]) -> Packet {
        self.mid += 1;
        let mut p = Packet::new(MsgType::Con, c, self.mid, &[1, 2]);
        for s in path {
            p.add(wire::URI_PATH, s.as_bytes());
        }
        for q in queries {
            p.add(wire::URI_QUERY, q.as_bytes());
        }
        p.payload = payload.to_vec();
        p
    }

    /// Registers `name` from `from`; returns the registration id.
    fn register(&mut self, from: SocketAddr, queries: &[&str]) -> String {
        let p = self.request(wire::POST, &["rd"], queries, b"</1/0>,</3/0>,</5/0>");
        self.send(from, &p);
        let out = self.out();
        assert_eq!(out.len(), 1);
        let (to, r) = &out[0];
        assert_eq!(*to, from);
        assert_eq!(r.code, code(2, 1), "register answered {:?}", r);
        assert_eq!(
            (r.mtype, r.mid, r.token.as_slice()),
            (MsgType::Ack, p.mid, &[1u8, 2][..])
        );
        let loc: Vec<&[u8]> = r.opts(wire::LOCATION_PATH).collect();
        assert_eq!(loc[0], b"rd");
        String::from_utf8(loc[1].to_vec()).unwrap()
    }

    fn submit(&mut self, id: u64, device: &str, request: DeviceRequest) {
        let op = DeviceOp {
            id: OpId(id),
            device: dev(device),
            request,
        };
        self.server.submit(self.now, op);
    }

    /// Answers `req` with a piggybacked response.
    fn answer(&mut self, from: SocketAddr, req: &Packet, c: u8, cf: Option<u16>, payload: &[u8]) {
        let mut r = Packet::new(MsgType::Ack, c, req.mid, &req.token);
        if let Some(cf) = cf {
            r.add_uint(wire::CONTENT_FORMAT, cf as u32);
        }
        r.payload = payload.to_vec();
        self.send(from, &r);
    }
}

fn path_of(p: &Packet) -> String {
    p.opts(wire::URI_PATH)
        .map(|s| format!("/{}", std::str::from_utf8(s).unwrap()))
        .collect()
}

fn response(events: &[DeviceEvent], id: u64) -> &Result<DeviceReply, DeviceError> {
    events
        .iter()
        .find_map(|e| match e {
            DeviceEvent::Response { op, result, .. } if *op == OpId(id) => Some(result),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no response for op {id} in {events:?}"))
}

#[test]
fn register_is_refused_without_hook_or_auto_provisioning() {
    let mut sim = Sim::new(ServerConfig::default());
    let p = sim.request(wire::POST, &["rd"], &["ep=dev-1"], b"</3/0>");
    sim.send(addr(9000), &p);
    let out = sim.out();
    assert_eq!(out[0].1.code, code(4, 3));
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::Rejected {
            endpoint: "dev-1".into(),
            reason: RejectReason::UnknownDevice,
            address: Some(addr(9000)),
        }]
    );
    assert_eq!(sim.server.registered_count(), 0);
}

#[test]
fn authorizer_decides() {
    let mut sim = Sim::new(ServerConfig::default());
    sim.server =
        Lwm2mServer::with_seed(ServerConfig::default(), 1).with_authorizer(Box::new(|r, _| {
            if r.endpoint == "known" {
                Decision::Accept
            } else {
                Decision::Reject(RejectReason::Disabled)
            }
        }));
    sim.register(addr(9000), &["ep=known", "lt=60"]);
    let p = sim.request(wire::POST, &["rd"], &["ep=other"], b"");
    sim.send(addr(9001), &p);
    assert_eq!(sim.out()[0].1.code, code(4, 3));
    let ev = sim.events();
    assert!(
        matches!(&ev[0], DeviceEvent::Registered { device, registration }
        if device.as_str() == "known" && registration.lifetime == 60
            && registration.address == Some(addr(9000))
            && registration.objects.len() == 3)
    );
    assert!(
        matches!(&ev[1], DeviceEvent::Rejected { endpoint, reason: RejectReason::Disabled, .. } if endpoint == "other")
    );
    assert_eq!(sim.server.registered_count(), 1);
}

#[test]
fn malformed_register_and_bad_endpoint_are_rejected_with_4_00() {
    let mut sim = Sim::open();
    for q in [&["lt=5"][..], &["ep=has space"][..], &["ep=a", "lt=0"][..]] {
        let p = sim.request(wire::POST, &["rd"], q, b"");
        sim.send(addr(9000), &p);
        assert_eq!(sim.out()[0].1.code, code(4, 0), "{q:?}");
        assert!(matches!(
            sim.events().as_slice(),
            [DeviceEvent::Rejected {
                reason: RejectReason::Malformed(_),
                ..
            }]
        ));
    }
    // Not the registration interface.
    let p = sim.request(wire::GET, &["rd"], &[], b"");
    sim.send(addr(9000), &p);
    assert_eq!(sim.out()[0].1.code, code(4, 5));
    let p = sim.request(wire::POST, &["bs"], &["ep=a"], b"");
    sim.send(addr(9000), &p);
    assert_eq!(sim.out()[0].1.code, code(4, 4));
    assert!(sim.events().is_empty());
}

#[test]
fn duplicate_register_is_answered_from_cache_once() {
    let mut sim = Sim::open();
    let p = sim.request(wire::POST, &["rd"], &["ep=d"], b"");
    sim.send(addr(9000), &p);
    let first = sim.out();
    sim.send(addr(9000), &p);
    let second = sim.out();
    assert_eq!(first, second);
    assert_eq!(sim.events().len(), 1);
}

#[test]
fn read_write_execute_map_to_coap() {
    let mut sim = Sim::open();
    let a = addr(9000);
    sim.register(a, &["ep=d", "lwm2m=1.0"]);
    sim.events();
    sim.submit(
        1,
        "d",
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 9),
        },
    );
    let out = sim.out();
    let (to, req) = &out[0];
    assert_eq!((*to, req.code, req.mtype), (a, wire::GET, MsgType::Con));
    assert_eq!(path_of(req), "/3/0/9");
    assert_eq!(req.token.len(), 8);
    assert_eq!(req.uint(wire::ACCEPT), None);
    // lwm2m-node-lib style: plain text with no Content-Format.
    sim.answer(a, req, code(2, 5), None, b"87");
    assert_eq!(
        response(&sim.events(), 1),
        &Ok(DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 9),
            ResourceValue::Integer(87)
        )))
    );

    // A single-resource write goes as text; several values to a 1.0 device as TLV.
    let p = Lwm2mPath::resource(1, 0, 1);
    sim.submit(
        2,
        "d",
        DeviceRequest::Write {
            path: p,
            mode: WriteMode::Replace,
            content: Content::single(p, ResourceValue::Integer(300)),
        },
    );
    let out = sim.out();
    let req = &out[0].1;
    assert_eq!(
        (req.code, req.uint(wire::CONTENT_FORMAT)),
        (wire::PUT, Some(0))
    );
    assert_eq!(req.payload, b"300");
    sim.answer(a, req, code(2, 4), None, b"");
    assert_eq!(response(&sim.events(), 2), &Ok(DeviceReply::Done));

    let inst = Lwm2mPath::instance(1, 0);
    let two = Content {
        values: vec![
            (Lwm2mPath::resource(1, 0, 2), ResourceValue::Integer(5)),
            (Lwm2mPath::resource(1, 0, 3), ResourceValue::Integer(60)),
        ],
    };
    sim.submit(
        3,
        "d",
        DeviceRequest::Write {
            path: inst,
            mode: WriteMode::PartialUpdate,
            content: two.clone(),
        },
    );
    let out = sim.out();
    let req = &out[0].1;
    assert_eq!(
        (req.code, req.uint(wire::CONTENT_FORMAT)),
        (wire::POST, Some(11542))
    );
    assert_eq!(
        content::decode(
            ContentFormat::Tlv,
            &req.payload,
            &inst,
            &standard_resource_type
        )
        .unwrap(),
        two
    );
    sim.answer(a, req, code(4, 5), None, b"");
    assert_eq!(
        response(&sim.events(), 3),
        &Err(DeviceError::MethodNotAllowed)
    );

    sim.submit(
        4,
        "d",
        DeviceRequest::Execute {
            path: Lwm2mPath::resource(3, 0, 4),
            args: Some("0='x'".into()),
        },
    );
    let out = sim.out();
    let req = &out[0].1;
    assert_eq!(
        (req.code, req.payload.as_slice()),
        (wire::POST, &b"0='x'"[..])
    );
    assert_eq!(path_of(req), "/3/0/4");
    sim.answer(a, req, code(4, 4), None, b"");
    assert_eq!(response(&sim.events(), 4), &Err(DeviceError::NotFound));
}

#[test]
fn lwm2m_1_1_device_gets_senml_and_announced_formats_decide() {
    let mut sim = Sim::open();
    let a = addr(9000);
    let p = sim.request(
        wire::POST,
        &["rd"],
        &["ep=d", "lwm2m=1.1"],
        b"</>;rt=\"oma.lwm2m\";ct=\"110 11542\",</3/0>",
    );
    sim.send(a, &p);
    sim.out();
    let c = Content {
        values: vec![
            (
                Lwm2mPath::resource(3, 0, 14),
                ResourceValue::String("+01".into()),
            ),
            (
                Lwm2mPath::resource(3, 0, 15),
                ResourceValue::String("Europe/Berlin".into()),
            ),
        ],
    };
    sim.submit(
        1,
        "d",
        DeviceRequest::Write {
            path: Lwm2mPath::instance(3, 0),
            mode: WriteMode::PartialUpdate,
            content: c,
        },
    );
    sim.submit(
        2,
        "d",
        DeviceRequest::Read {
            path: Lwm2mPath::instance(3, 0),
        },
    );
    let out = sim.out();
    assert_eq!(out.len(), 1, "NSTART 1: the read waits for the write");
    assert_eq!(out[0].1.uint(wire::CONTENT_FORMAT), Some(110));
    let w = out[0].1.clone();
    sim.answer(a, &w, code(2, 4), None, b"");
    let out = sim.out();
    assert_eq!(out[0].1.uint(wire::ACCEPT), Some(110));
    let r = out[0].1.clone();
    sim.answer(
        a,
        &r,
        code(2, 5),
        Some(110),
        br#"[{"bn":"/3/0/","n":"9","v":50}]"#,
    );
    let ev = sim.events();
    assert_eq!(response(&ev, 1), &Ok(DeviceReply::Done));
    assert_eq!(
        response(&ev, 2),
        &Ok(DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 9),
            ResourceValue::Integer(50)
        )))
    );
}

#[test]
fn write_attributes_discover_create_delete() {
    let mut sim = Sim::open();
    let a = addr(9000);
    sim.register(a, &["ep=d"]);
    sim.submit(
        1,
        "d",
        DeviceRequest::WriteAttributes {
            path: Lwm2mPath::resource(3, 0, 9),
            attributes: NotificationAttributes {
                pmin: Some(5),
                pmax: Some(60),
                st: Some(2.5),
                ..Default::default()
            },
        },
    );
    let req = sim.out()[0].1.clone();
    assert_eq!(req.code, wire::PUT);
    assert!(req.payload.is_empty());
    let q: Vec<&[u8]> = req.opts(wire::URI_QUERY).collect();
    assert_eq!(q, vec![&b"pmin=5"[..], b"pmax=60", b"st=2.5"]);
    sim.answer(a, &req, code(2, 4), None, b"");

    sim.submit(
        2,
        "d",
        DeviceRequest::Discover {
            path: Lwm2mPath::instance(3, 0),
        },
    );
    let req = sim.out()[0].1.clone();
    assert_eq!((req.code, req.uint(wire::ACCEPT)), (wire::GET, Some(40)));
    sim.answer(a, &req, code(2, 5), Some(40), b"</3/0>,</3/0/9>;pmin=5");

    let c = Content::single(
        Lwm2mPath::resource(3303, 4, 5700),
        ResourceValue::Float(21.5),
    );
    sim.submit(
        3,
        "d",
        DeviceRequest::Create {
            path: Lwm2mPath::object(3303),
            content: c.clone(),
        },
    );
    let req = sim.out()[0].1.clone();
    assert_eq!((req.code, path_of(&req)), (wire::POST, "/3303".to_string()));
    let resolver = |_: &Lwm2mPath| Some(ResourceType::Float);
    assert_eq!(
        content::decode(
            ContentFormat::Tlv,
            &req.payload,
            &Lwm2mPath::object(3303),
            &resolver
        )
        .unwrap(),
        c
    );
    let mut r = Packet::new(MsgType::Ack, code(2, 1), req.mid, &req.token);
    r.add(wire::LOCATION_PATH, b"3303");
    r.add(wire::LOCATION_PATH, b"4");
    sim.send(a, &r);

    sim.submit(
        4,
        "d",
        DeviceRequest::Delete {
            path: Lwm2mPath::instance(3303, 4),
        },
    );
    let req = sim.out()[0].1.clone();
    assert_eq!(
        (req.code, path_of(&req)),
        (wire::DELETE, "/3303/4".to_string())
    );
    sim.answer(a, &req, code(2, 2), None, b"");

    let ev = sim.events();
    assert_eq!(response(&ev, 1), &Ok(DeviceReply::Done));
    assert_eq!(
        response(&ev, 2),
        &Ok(DeviceReply::Links("</3/0>,</3/0/9>;pmin=5".into()))
    );
    assert_eq!(
        response(&ev, 3),
        &Ok(DeviceReply::Created(Lwm2mPath::instance(3303, 4)))
    );
    assert_eq!(response(&ev, 4), &Ok(DeviceReply::Done));
}

#[test]
fn observe_notify_cancel() {
    let mut sim = Sim::open();
    let a = addr(9000);
    let location = sim.register(a, &["ep=d"]);
    sim.events();
    let bat = Lwm2mPath::resource(3, 0, 9);
    sim.submit(1, "d", DeviceRequest::Observe { path: bat });
    let req = sim.out()[0].1.clone();
    assert_eq!(req.uint(wire::OBSERVE), Some(0));
    let mut r = Packet::new(MsgType::Ack, code(2, 5), req.mid, &req.token);
    r.add_uint(wire::OBSERVE, 1);
    r.payload = b"80".to_vec();
    sim.send(a, &r);
    assert_eq!(
        response(&sim.events(), 1),
        &Ok(DeviceReply::Content(Content::single(
            bat,
            ResourceValue::Integer(80)
        )))
    );
    assert_eq!(sim.server.observation_count(), 1);
    // A confirmable notification in TLV: acknowledged and decoded.
    let mut n = Packet::new(MsgType::Con, code(2, 5), 4000, &req.token);
    n.add_uint(wire::OBSERVE, 2);
    n.add_uint(wire::CONTENT_FORMAT, 11542);
    n.payload = vec![0xC1, 0x09, 75];
    sim.send(a, &n);
    let out = sim.out();
    assert_eq!(
        (out[0].1.mtype, out[0].1.mid, out[0].1.code),
        (MsgType::Ack, 4000, 0)
    );
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::Notification {
            device: dev("d"),
            registration_id: location.clone(),
            path: bat,
            content: Content::single(bat, ResourceValue::Integer(75)),
        }]
    );
    // Cancel: GET Observe=1 on the observation's token.
    sim.submit(2, "d", DeviceRequest::CancelObserve { path: bat });
    let c = sim.out()[0].1.clone();
    assert_eq!((c.uint(wire::OBSERVE), &c.token), (Some(1), &req.token));
    assert_eq!(sim.server.observation_count(), 0);
    sim.answer(a, &c, code(2, 5), None, b"75");
    assert_eq!(response(&sim.events(), 2), &Ok(DeviceReply::Done));
    // A late notification is reset.
    n.mid = 4001;
    sim.send(a, &n);
    let out = sim.out();
    assert_eq!((out[0].1.mtype, out[0].1.mid), (MsgType::Rst, 4001));
    assert!(sim.events().is_empty());
}

#[test]
fn cancel_ends_the_newest_observation_of_a_path() {
    let mut sim = Sim::open();
    let a = addr(9000);
    let location = sim.register(a, &["ep=d"]);
    sim.events();
    let fw = Lwm2mPath::instance(5, 0);
    let mut tokens = Vec::new();
    for op in [1, 2] {
        // The hub's sync observation first, then a job's.
        sim.submit(op, "d", DeviceRequest::Observe { path: fw });
        let req = sim.out()[0].1.clone();
        let mut r = Packet::new(MsgType::Ack, code(2, 5), req.mid, &req.token);
        r.add_uint(wire::OBSERVE, 1);
        r.add_uint(wire::CONTENT_FORMAT, 11542);
        r.payload = vec![0xC1, 0x03, 1];
        sim.send(a, &r);
        assert!(response(&sim.events(), op).is_ok());
        tokens.push(req.token);
    }
    assert_eq!(sim.server.observation_count(), 2);
    sim.submit(3, "d", DeviceRequest::CancelObserve { path: fw });
    let c = sim.out()[0].1.clone();
    assert_eq!((c.uint(wire::OBSERVE), &c.token), (Some(1), &tokens[1]));
    sim.answer(a, &c, code(2, 5), None, b"1");
    assert_eq!(response(&sim.events(), 3), &Ok(DeviceReply::Done));
    // The older observation still delivers.
    let mut n = Packet::new(MsgType::Non, code(2, 5), 4100, &tokens[0]);
    n.add_uint(wire::OBSERVE, 5);
    n.add_uint(wire::CONTENT_FORMAT, 11542);
    n.payload = vec![0xC1, 0x03, 2];
    sim.send(a, &n);
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::Notification {
            device: dev("d"),
            registration_id: location.clone(),
            path: fw,
            content: Content::single(Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(2)),
        }]
    );
}

#[test]
fn a_reset_answer_is_its_own_error() {
    let mut sim = Sim::open();
    let a = addr(9000);
    sim.register(a, &["ep=d"]);
    sim.events();
    sim.submit(
        1,
        "d",
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 0),
        },
    );
    let req = sim.out()[0].1.clone();
    sim.send(a, &Packet::new(MsgType::Rst, 0, req.mid, &[]));
    assert_eq!(response(&sim.events(), 1), &Err(DeviceError::Reset));
}

#[test]
fn separate_response_after_empty_ack() {
    let mut sim = Sim::open();
    let a = addr(9000);
    sim.register(a, &["ep=d"]);
    sim.submit(
        1,
        "d",
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 0),
        },
    );
    let req = sim.out()[0].1.clone();
    sim.send(a, &Packet::new(MsgType::Ack, 0, req.mid, &[]));
    sim.advance(Duration::from_secs(30));
    assert!(sim.out().is_empty(), "no retransmission after the ACK");
    let mut r = Packet::new(MsgType::Con, code(2, 5), 77, &req.token);
    r.payload = b"ACME".to_vec();
    sim.send(a, &r);
    let out = sim.out();
    assert_eq!((out[0].1.mtype, out[0].1.mid), (MsgType::Ack, 77));
    assert_eq!(
        response(&sim.events(), 1),
        &Ok(DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 0),
            ResourceValue::String("ACME".into())
        )))
    );
}

#[test]
fn unreachable_device_times_out_after_retransmissions() {
    let mut sim = Sim::open();
    let a = addr(9000);
    sim.register(a, &["ep=d", "lt=86400"]);
    sim.events();
    let start = sim.now;
    sim.submit(
        1,
        "d",
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 0),
        },
    );
    let first = sim.out();
    assert_eq!(first.len(), 1);
    let mut sends = 1;
    let mut timed_out_at = None;
    for _ in 0..200 {
        sim.advance(Duration::from_millis(500));
        let out = sim.out();
        for (_, p) in &out {
            assert_eq!(
                p.mid, first[0].1.mid,
                "retransmissions reuse the message id"
            );
        }
        sends += out.len();
        if sim
            .events()
            .iter()
            .any(|e| matches!(e, DeviceEvent::TimedOut { op: OpId(1), .. }))
        {
            timed_out_at = Some(sim.now - start);
            break;
        }
    }
    assert_eq!(
        sends, 5,
        "one transmission and MAX_RETRANSMIT=4 retransmissions"
    );
    let t = timed_out_at.expect("timed out");
    // ACK_TIMEOUT 2 s * [1, 1.5) * (1+2+4+8+16) = 62 s .. 93 s.
    assert!(
        t >= Duration::from_secs(62) && t <= Duration::from_secs(94),
        "{t:?}"
    );
}

#[test]
fn update_follows_address_and_keepalive_extends_lifetime() {
    let mut sim = Sim::open();
    let (a, b) = (addr(9000), addr(9555));
    let id = sim.register(a, &["ep=d", "lt=100"]);
    sim.events();
    sim.advance(Duration::from_secs(90));
    // Keep-alive from a new port (NAT rebinding).
    let p = sim.request(wire::POST, &["rd", &id], &[], b"");
    sim.send(b, &p);
    assert_eq!(sim.out()[0].1.code, code(2, 4));
    let ev = sim.events();
    assert!(
        matches!(&ev[..], [DeviceEvent::RegistrationUpdated { registration, .. }]
        if registration.address == Some(b) && registration.lifetime == 100)
    );
    sim.submit(
        1,
        "d",
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 0),
        },
    );
    assert_eq!(sim.out()[0].0, b, "requests follow the new address");
    // Update with a new lifetime and objects.
    let p = sim.request(wire::POST, &["rd", &id], &["lt=500", "b=U"], b"</3/0>");
    sim.send(b, &p);
    sim.out();
    let info = sim.server.registration(&dev("d")).unwrap().clone();
    assert_eq!((info.lifetime, info.objects.len()), (500, 1));
    // Unknown registration id.
    let p = sim.request(wire::POST, &["rd", "999"], &[], b"");
    sim.send(b, &p);
    assert_eq!(sim.out()[0].1.code, code(4, 4));
    // Still registered well past the original lifetime.
    sim.advance(Duration::from_secs(200));
    assert_eq!(sim.server.registered_count(), 1);
}

#[test]
fn lifetime_expiry_drops_registration_and_observations() {
    let mut sim = Sim::open();
    let a = addr(9000);
    sim.register(a, &["ep=d", "lt=60"]);
    sim.submit(
        1,
        "d",
        DeviceRequest::Observe {
            path: Lwm2mPath::resource(3, 0, 9),
        },
    );
    let req = sim.out()[0].1.clone();
    let mut r = Packet::new(MsgType::Ack, code(2, 5), req.mid, &req.token);
    r.add_uint(wire::OBSERVE, 1);
    r.payload = b"1".to_vec();
    sim.send(a, &r);
    sim.events();
    assert_eq!(sim.server.observation_count(), 1);
    sim.advance(Duration::from_secs(60 + 29));
    assert!(sim.events().is_empty(), "grace period (30 s) not over yet");
    sim.advance(Duration::from_secs(2));
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::Expired { device: dev("d") }]
    );
    assert_eq!(
        (
            sim.server.registered_count(),
            sim.server.observation_count()
        ),
        (0, 0)
    );
    sim.submit(
        2,
        "d",
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 9),
        },
    );
    assert_eq!(response(&sim.events(), 2), &Err(DeviceError::NotRegistered));
}

#[test]
fn deregister() {
    let mut sim = Sim::open();
    let a = addr(9000);
    let id = sim.register(a, &["ep=d"]);
    sim.events();
    let p = sim.request(wire::DELETE, &["rd", &id], &[], b"");
    sim.send(addr(9999), &p);
    assert_eq!(sim.out()[0].1.code, code(2, 2));
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::Deregistered { device: dev("d") }]
    );
    assert_eq!(sim.server.registered_count(), 0);
    let p = sim.request(wire::DELETE, &["rd", &id], &[], b"");
    sim.send(a, &p);
    assert_eq!(sim.out()[0].1.code, code(4, 4));
    // The slot is reused by the next registration.
    sim.register(addr(9001), &["ep=e"]);
    assert_eq!(sim.server.slots.len(), 1);
}

#[test]
fn queue_mode_holds_requests_until_the_device_talks() {
    let mut sim = Sim::new(ServerConfig {
        auto_provision: true,
        queue_capacity: 2,
        ..ServerConfig::default()
    });
    let a = addr(9000);
    let id = sim.register(a, &["ep=q", "b=UQ", "lt=3600"]);
    sim.events();
    sim.advance(Duration::from_secs(100)); // past the awake window
    for i in 1..=3 {
        sim.submit(
            i,
            "q",
            DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        );
    }
    assert!(sim.out().is_empty(), "the device sleeps");
    assert_eq!(response(&sim.events(), 3), &Err(DeviceError::QueueFull));
    // It wakes up with an update: the first request goes, the second after the answer.
    let p = sim.request(wire::POST, &["rd", &id], &[], b"");
    sim.send(a, &p);
    let out = sim.out();
    assert_eq!(
        out.len(),
        2,
        "update answer + first queued request: {out:?}"
    );
    let req = out
        .iter()
        .find(|(_, p)| p.mtype == MsgType::Con)
        .unwrap()
        .1
        .clone();
    sim.answer(a, &req, code(2, 5), None, b"5");
    let out = sim.out();
    assert_eq!(out.len(), 1);
    let req = out[0].1.clone();
    sim.answer(a, &req, code(2, 5), None, b"6");
    let ev = sim.events();
    assert!(response(&ev, 1).is_ok() && response(&ev, 2).is_ok());
    // Waiting too long times out.
    sim.advance(Duration::from_secs(100));
    sim.submit(
        9,
        "q",
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 9),
        },
    );
    sim.advance(Duration::from_secs(601));
    assert!(
        sim.events()
            .iter()
            .any(|e| matches!(e, DeviceEvent::TimedOut { op: OpId(9), .. }))
    );
    assert!(sim.out().is_empty());
}

/// LwM2M 1.1 says queue mode with the Register's `Q` flag; its bindings carry no `Q`, so an
/// Update's `b=U` from a 1.1 device leaves queue mode on. From a 1.0 device (`b=UQ` at
/// Register) `b=U` ends it.
#[test]
fn a_binding_without_q_ends_queue_mode_for_1_0_devices_only() {
    let mut sim = Sim::new(ServerConfig {
        auto_provision: true,
        ..ServerConfig::default()
    });
    let (a, b) = (addr(9000), addr(9001));
    let new = sim.register(a, &["ep=new", "lwm2m=1.1", "b=U", "Q", "lt=3600"]);
    let old = sim.register(b, &["ep=old", "lwm2m=1.0", "b=UQ", "lt=3600"]);
    sim.events();
    for (peer, id) in [(a, &new), (b, &old)] {
        let p = sim.request(wire::POST, &["rd", id], &["b=U"], b"");
        sim.send(peer, &p);
    }
    let queue_mode = |events: &[DeviceEvent], who: &str| {
        events.iter().find_map(|e| match e {
            DeviceEvent::RegistrationUpdated {
                device,
                registration,
            } if device.as_str() == who => Some(registration.queue_mode),
            _ => None,
        })
    };
    let events = sim.events();
    assert_eq!(queue_mode(&events, "new"), Some(true));
    assert_eq!(queue_mode(&events, "old"), Some(false));
}

#[test]
fn reregistration_replaces_and_drops_observations() {
    // From another address: with the policy that lets it replace at once.
    let mut sim = Sim::new(ServerConfig {
        auto_provision: true,
        takeover: Takeover::Replace,
        ..ServerConfig::default()
    });
    let a = addr(9000);
    let first = sim.register(a, &["ep=d"]);
    sim.submit(
        1,
        "d",
        DeviceRequest::Observe {
            path: Lwm2mPath::resource(3, 0, 9),
        },
    );
    let req = sim.out()[0].1.clone();
    let mut r = Packet::new(MsgType::Ack, code(2, 5), req.mid, &req.token);
    r.add_uint(wire::OBSERVE, 1);
    r.payload = b"1".to_vec();
    sim.send(a, &r);
    sim.events();
    let second = sim.register(addr(9001), &["ep=d"]);
    assert_ne!(first, second);
    assert_eq!(sim.server.observation_count(), 0);
    assert!(matches!(
        sim.events().as_slice(),
        [DeviceEvent::Registered { .. }]
    ));
    // The old registration id is gone.
    let p = sim.request(wire::POST, &["rd", &first], &[], b"");
    sim.send(a, &p);
    assert_eq!(sim.out()[0].1.code, code(4, 4));
}

#[test]
fn garbage_never_panics() {
    let mut sim = Sim::open();
    let mut x = 1u64;
    for _ in 0..20_000 {
        x = splitmix(x);
        let len = (x % 40) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|i| (splitmix(x + i as u64) & 0xff) as u8)
            .collect();
        let mut b = bytes;
        if let Some(first) = b.first_mut() {
            *first = 0x40 | (*first & 0x3f);
        }
        sim.server.handle_datagram(sim.now, addr(9000), &b);
    }
    sim.out();
    sim.events();
}

#[test]
fn large_read_arrives_block_wise() {
    // Manufacturer and Model of the TS's Device-instance TLV (48 bytes), served in
    // 16-byte Block2 blocks; the CoAP endpoint fetches the rest and hands over the whole.
    let hex = "C800144F70656E204D6F62696C6520416C6C69616E6365\
               C801164C69676874776569676874204D324D20436C69656E74";
    let hex: String = hex.split_whitespace().collect();
    let tlv: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(tlv.len(), 48);
    let mut sim = Sim::open();
    let a = addr(9000);
    sim.register(a, &["ep=d"]);
    sim.events();
    let inst = Lwm2mPath::instance(3, 0);
    sim.submit(1, "d", DeviceRequest::Read { path: inst });
    let mut blocks = 0;
    for _ in 0..64 {
        let out = sim.out();
        let Some((_, req)) = out.into_iter().find(|(_, p)| p.mtype == MsgType::Con) else {
            break;
        };
        assert_eq!(path_of(&req), "/3/0");
        let num = req.uint(23).map_or(0, |v| v >> 4) as usize;
        let chunk: Vec<u8> = tlv.chunks(16).nth(num).unwrap().to_vec();
        let more = (num + 1) * 16 < tlv.len();
        let mut r = Packet::new(MsgType::Ack, code(2, 5), req.mid, &req.token);
        r.add_uint(wire::CONTENT_FORMAT, 11542);
        r.add_uint(23, (num as u32) << 4 | (more as u32) << 3);
        r.payload = chunk;
        sim.send(a, &r);
        blocks += 1;
    }
    assert_eq!(blocks, 3);
    let Ok(DeviceReply::Content(c)) = response(&sim.events(), 1).clone() else {
        panic!("block-wise read failed");
    };
    assert_eq!(
        c.values,
        vec![
            (
                Lwm2mPath::resource(3, 0, 0),
                ResourceValue::String("Open Mobile Alliance".into())
            ),
            (
                Lwm2mPath::resource(3, 0, 1),
                ResourceValue::String("Lightweight M2M Client".into())
            ),
        ]
    );
}

/// Issue #16 finding 1: after a restart (a second server on the same address), a device
/// that still holds its old location gets 4.04 for its Update and registers again; the
/// device registered on the new server meanwhile is not touched.
#[test]
fn update_for_a_location_from_before_a_restart_gets_not_found() {
    let mut before = Sim::open();
    let a = addr(5001);
    let old_location = before.register(a, &["ep=dev-a", "lt=300"]);
    assert_eq!(old_location.len(), 16, "16 hex digits: {old_location}");

    // The restarted hub: fresh state, its own random ids (a seed the first did not use).
    let mut after = Sim::open();
    after.server = Lwm2mServer::with_seed(
        ServerConfig {
            auto_provision: true,
            ..ServerConfig::default()
        },
        8,
    );
    let b = addr(5002);
    let b_location = after.register(b, &["ep=dev-b", "lt=300"]);
    assert_ne!(b_location, old_location);
    after.events();

    let update = after.request(wire::POST, &["rd", &old_location], &[], b"");
    after.send(a, &update);
    let out = after.out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.code, code(4, 4));
    assert!(
        after.events().is_empty(),
        "nothing happened to any registration"
    );
    let reg = after
        .server
        .registration(&dev("dev-b"))
        .expect("dev-b still registered");
    assert_eq!(reg.address, Some(b));
    assert!(after.server.registration(&dev("dev-a")).is_none());
    // So are guesses, and what sequential ids would have produced.
    for guess in ["1", "0000000000000001", "xyz", &b_location.to_uppercase()] {
        let del = after.request(wire::DELETE, &["rd", guess], &[], b"");
        after.send(addr(6666), &del);
        assert_eq!(after.out()[0].1.code, code(4, 4), "{guess}");
    }
    assert!(after.server.registration(&dev("dev-b")).is_some());
    // The device registers again and gets a new location.
    let again = after.register(a, &["ep=dev-a", "lt=300"]);
    assert_ne!(again, old_location);
}

/// Issue #16 finding 5: a notification (or read answer) carrying values outside the
/// observed (read) path has them dropped and counted; only the values under the path go on.
#[test]
fn values_outside_the_requested_path_are_dropped_and_counted() {
    let mut sim = Sim::open();
    let a = addr(9100);
    let location = sim.register(a, &["ep=d", "lwm2m=1.1"]);
    sim.events();
    let dev3 = Lwm2mPath::instance(3, 0);
    sim.submit(1, "d", DeviceRequest::Observe { path: dev3 });
    let req = sim.out()[0].1.clone();
    let senml = br#"[{"bn":"/3/0/","n":"9","v":80},{"bn":"/1/0/","n":"1","v":5},{"bn":"/4/0/","n":"2","v":7}]"#;
    let mut r = Packet::new(MsgType::Ack, code(2, 5), req.mid, &req.token);
    r.add_uint(wire::OBSERVE, 1);
    r.add_uint(wire::CONTENT_FORMAT, 110);
    r.payload = senml.to_vec();
    sim.send(a, &r);
    let bat = Lwm2mPath::resource(3, 0, 9);
    assert_eq!(
        response(&sim.events(), 1),
        &Ok(DeviceReply::Content(Content::single(
            bat,
            ResourceValue::Integer(80)
        )))
    );
    assert_eq!(sim.server.values_outside_path(), 2);
    let mut n = Packet::new(MsgType::Non, code(2, 5), 4100, &req.token);
    n.add_uint(wire::OBSERVE, 2);
    n.add_uint(wire::CONTENT_FORMAT, 110);
    n.payload = br#"[{"bn":"/1/0/","n":"1","v":1}]"#.to_vec();
    sim.send(a, &n);
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::Notification {
            device: dev("d"),
            registration_id: location.clone(),
            path: dev3,
            content: Content::default(),
        }]
    );
    assert_eq!(sim.server.values_outside_path(), 3);
}

/// Issue #16 finding 2: a second address registering under a live endpoint name does not
/// take the registration over while the old address answers; a device that really moved
/// (its old address silent) is accepted after the probe time; `Takeover::Replace` keeps
/// the old behaviour.
#[test]
fn takeover_needs_the_old_address_to_be_silent() {
    let mut sim = Sim::open();
    let (owner, attacker) = (addr(9200), addr(9300));
    let location = sim.register(owner, &["ep=victim", "lt=300"]);
    sim.events();

    // The attacker registers: 5.03, and the owner's address is probed.
    let p = sim.request(wire::POST, &["rd"], &["ep=victim"], b"</3/0>");
    sim.send(attacker, &p);
    let out = sim.out();
    let answer = out.iter().find(|(to, _)| *to == attacker).unwrap();
    assert_eq!(answer.1.code, code(5, 3));
    let probe = out
        .iter()
        .find(|(to, _)| *to == owner)
        .expect("a probe to the owner");
    assert_eq!(probe.1.mtype, MsgType::Con);
    // The owner's client answers (4.04 is an answer).
    sim.answer(owner, &probe.1.clone(), code(4, 4), None, b"");
    sim.out();
    // Now the attacker is refused with 4.03, however often it tries, and nothing changed.
    for _ in 0..20 {
        let p = sim.request(wire::POST, &["rd"], &["ep=victim"], b"</3/0>");
        sim.send(attacker, &p);
        let out = sim.out();
        assert_eq!(out.len(), 1, "no further probes while the refusal lasts");
        assert_eq!(out[0].1.code, code(4, 3));
    }
    let events = sim.events();
    assert_eq!(events.len(), 20);
    assert!(events.iter().all(|e| matches!(
        e,
        DeviceEvent::Rejected {
            reason: RejectReason::AddressInUse,
            ..
        }
    )));
    assert_eq!(
        sim.server.registration(&dev("victim")).unwrap().address,
        Some(owner)
    );
    // The owner's Update still works.
    let up = sim.request(wire::POST, &["rd", &location], &[], b"");
    sim.send(owner, &up);
    assert_eq!(sim.out()[0].1.code, code(2, 4));
    sim.events();

    // After the refusal period the owner is gone (silent): the next attempt probes again,
    // the probe times out, the registration ends and the newcomer gets in.
    sim.advance(TAKEOVER_REFUSAL);
    sim.out();
    let p = sim.request(wire::POST, &["rd"], &["ep=victim"], b"</3/0>");
    sim.send(attacker, &p);
    assert!(
        sim.out()
            .iter()
            .any(|(to, m)| *to == attacker && m.code == code(5, 3))
    );
    sim.advance(Duration::from_secs(6));
    sim.out();
    assert!(
        sim.events()
            .iter()
            .any(|e| matches!(e, DeviceEvent::Expired { device } if device == &dev("victim")))
    );
    let moved = sim.register(attacker, &["ep=victim", "lt=300"]);
    assert_ne!(moved, location);

    // Takeover::Replace: the old behaviour, at once.
    let mut open = Sim::new(ServerConfig {
        auto_provision: true,
        takeover: Takeover::Replace,
        ..ServerConfig::default()
    });
    open.register(owner, &["ep=d"]);
    open.register(attacker, &["ep=d"]);
    assert_eq!(
        open.server.registration(&dev("d")).unwrap().address,
        Some(attacker)
    );
}

/// A payload in `format` holding `content` at `base` (our own encoder).
fn payload(format: ContentFormat, base: &Lwm2mPath, content: &Content) -> Vec<u8> {
    content::encode(format, base, content).unwrap()
}

#[test]
fn a_1_1_device_without_ct_is_asked_for_cbor_and_falls_back() {
    let mut sim = Sim::open();
    let a = addr(9000);
    sim.register(a, &["ep=d", "lwm2m=1.1"]);
    sim.events();
    let inst = Lwm2mPath::instance(3, 0);
    sim.submit(1, "d", DeviceRequest::Read { path: inst });
    assert_eq!(
        sim.events(),
        [DeviceEvent::Sent {
            op: OpId(1),
            device: dev("d")
        }]
    );
    // Best first: SenML CBOR, then SenML JSON, then TLV, each after a 4.06 (the request
    // sent again in another format is not reported `Sent` again).
    for accept in [112u32, 110] {
        let req = sim.out()[0].1.clone();
        assert_eq!(req.uint(wire::ACCEPT), Some(accept));
        sim.answer(a, &req, code(4, 6), None, b"");
        assert!(sim.events().is_empty(), "a refusal is not the answer yet");
    }
    let req = sim.out()[0].1.clone();
    assert_eq!(req.uint(wire::ACCEPT), Some(11542));
    let c = Content::single(Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(7));
    sim.answer(
        a,
        &req,
        code(2, 5),
        Some(11542),
        &payload(ContentFormat::Tlv, &inst, &c),
    );
    assert_eq!(
        response(&sim.events(), 1),
        &Ok(DeviceReply::Content(c.clone()))
    );
    // Remembered for the registration: the next read asks for TLV at once, and a write of
    // several values goes as TLV.
    sim.submit(2, "d", DeviceRequest::Read { path: inst });
    let req = sim.out()[0].1.clone();
    assert_eq!(req.uint(wire::ACCEPT), Some(11542));
    // Whatever a device answers decodes, whatever was asked: SenML CBOR here.
    sim.answer(
        a,
        &req,
        code(2, 5),
        Some(112),
        &payload(ContentFormat::SenmlCbor, &inst, &c),
    );
    assert_eq!(
        response(&sim.events(), 2),
        &Ok(DeviceReply::Content(c.clone()))
    );
    let two = Content {
        values: vec![
            (Lwm2mPath::resource(3, 0, 13), ResourceValue::Time(5)),
            (
                Lwm2mPath::resource(3, 0, 14),
                ResourceValue::String("+01".into()),
            ),
        ],
    };
    sim.submit(
        3,
        "d",
        DeviceRequest::Write {
            path: inst,
            mode: WriteMode::PartialUpdate,
            content: two.clone(),
        },
    );
    let w = sim.out()[0].1.clone();
    assert_eq!(w.uint(wire::CONTENT_FORMAT), Some(11542));
    // Refused (4.15) and nothing left to try: the refusal is the answer.
    sim.answer(a, &w, code(4, 15), None, b"");
    assert_eq!(
        response(&sim.events(), 3),
        &Err(DeviceError::UnsupportedContentFormat)
    );
    assert!(sim.out().is_empty());
    // A new registration starts afresh.
    sim.register(a, &["ep=d", "lwm2m=1.1"]);
    sim.events();
    sim.submit(
        4,
        "d",
        DeviceRequest::Write {
            path: inst,
            mode: WriteMode::Replace,
            content: two,
        },
    );
    let w = sim.out()[0].1.clone();
    assert_eq!(w.uint(wire::CONTENT_FORMAT), Some(112));
    sim.answer(a, &w, code(4, 15), None, b"");
    let w = sim.out()[0].1.clone();
    assert_eq!(w.uint(wire::CONTENT_FORMAT), Some(110));
    sim.answer(a, &w, code(2, 4), None, b"");
    assert_eq!(response(&sim.events(), 4), &Ok(DeviceReply::Done));
}

#[test]
fn accept_follows_the_announced_formats_and_the_version() {
    let mut sim = Sim::open();
    let (a, b, c) = (addr(9000), addr(9001), addr(9002));
    // Announced: the best of them we decode.
    let p = sim.request(
        wire::POST,
        &["rd"],
        &["ep=ann", "lwm2m=1.1"],
        br#"</>;rt="oma.lwm2m";ct="110 112 11542",</3/0>"#,
    );
    sim.send(a, &p);
    sim.out();
    sim.register(b, &["ep=old", "lwm2m=1.0"]);
    sim.register(c, &["ep=new", "lwm2m=1.1"]);
    sim.events();
    let inst = Lwm2mPath::instance(3, 0);
    let res = Lwm2mPath::resource(3, 0, 7);
    let accept = |sim: &mut Sim, dev: &str, path: Lwm2mPath| {
        sim.submit(9, dev, DeviceRequest::Read { path });
        let req = sim.out()[0].1.clone();
        let from = match dev {
            "ann" => a,
            "old" => b,
            _ => c,
        };
        sim.answer(from, &req, code(4, 4), None, b"");
        sim.events();
        req.uint(wire::ACCEPT)
    };
    assert_eq!(accept(&mut sim, "ann", inst), Some(112));
    assert_eq!(accept(&mut sim, "ann", res), Some(112));
    // 1.0 without ct: TLV (mandatory in 1.0) for several values; a resource read leaves
    // the choice to the device (text for one value, TLV for instances).
    assert_eq!(accept(&mut sim, "old", inst), Some(11542));
    assert_eq!(accept(&mut sim, "old", res), None);
    // 1.1 without ct: SenML CBOR, for a multi-instance resource too.
    assert_eq!(accept(&mut sim, "new", res), Some(112));
}

#[test]
fn observations_that_end_on_their_own_are_reported() {
    let mut sim = Sim::open();
    let a = addr(9000);
    sim.register(a, &["ep=d", "lwm2m=1.1"]);
    sim.events();
    let inst = Lwm2mPath::instance(3, 0);
    let c = Content::single(Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(7));
    let cbor = payload(ContentFormat::SenmlCbor, &inst, &c);
    sim.submit(1, "d", DeviceRequest::Observe { path: inst });
    let req = sim.out()[0].1.clone();
    assert_eq!(req.uint(wire::ACCEPT), Some(112));
    let mut r = Packet::new(MsgType::Ack, code(2, 5), req.mid, &req.token);
    r.add_uint(wire::OBSERVE, 1);
    r.add_uint(wire::CONTENT_FORMAT, 112);
    r.payload = cbor.clone();
    sim.send(a, &r);
    assert_eq!(
        response(&sim.events(), 1),
        &Ok(DeviceReply::Content(c.clone()))
    );
    assert_eq!(sim.server.observation_count(), 1);
    // A SenML CBOR notification is acknowledged and decoded, not reset.
    let mut n = Packet::new(MsgType::Con, code(2, 5), 4000, &req.token);
    n.add_uint(wire::OBSERVE, 2);
    n.add_uint(wire::CONTENT_FORMAT, 112);
    n.payload = cbor.clone();
    sim.send(a, &n);
    assert_eq!(sim.out()[0].1.mtype, MsgType::Ack);
    assert!(
        matches!(&sim.events()[..], [DeviceEvent::Notification { content, .. }] if *content == c)
    );
    // An error notification ends it: reported with the op that established it.
    let mut n = Packet::new(MsgType::Con, code(4, 4), 4001, &req.token);
    n.add_uint(wire::OBSERVE, 3);
    sim.send(a, &n);
    sim.out();
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::ObservationEnded {
            device: dev("d"),
            path: inst,
            op: OpId(1),
            cause: ObservationEndCause::EndedByDevice,
        }]
    );
    assert_eq!(sim.server.observation_count(), 0);
    // A device that answers without Observe declined: the values count, the observation
    // is reported ended at once.
    sim.submit(2, "d", DeviceRequest::Observe { path: inst });
    let req = sim.out()[0].1.clone();
    sim.answer(a, &req, code(2, 5), Some(112), &cbor);
    let ev = sim.events();
    assert_eq!(response(&ev, 2), &Ok(DeviceReply::Content(c)));
    assert!(ev.contains(&DeviceEvent::ObservationEnded {
        device: dev("d"),
        path: inst,
        op: OpId(2),
        cause: ObservationEndCause::Declined,
    }));
    assert_eq!(sim.server.observation_count(), 0);
}

#[test]
fn unsupported_and_malformed_versions_are_refused() {
    let mut sim = Sim::open();
    let a = addr(9000);
    for (version, expect) in [
        ("1.2", code(4, 12)),
        ("2.0", code(4, 12)),
        ("1.10", code(4, 12)),
        ("..", code(4, 0)),
        ("1.", code(4, 0)),
        ("1.0.2", code(4, 0)),
        ("1.1", code(2, 1)),
        ("1.0", code(2, 1)),
    ] {
        let q = format!("lwm2m={version}");
        let p = sim.request(wire::POST, &["rd"], &["ep=d", &q], b"</3/0>");
        sim.send(a, &p);
        let out = sim.out();
        assert_eq!(out[0].1.code, expect, "lwm2m={version}");
        let ev = sim.events();
        if expect == code(4, 12) {
            assert_eq!(
                ev,
                vec![DeviceEvent::Rejected {
                    endpoint: "d".into(),
                    reason: RejectReason::UnsupportedVersion(version.into()),
                    address: Some(a),
                }]
            );
        }
    }
    assert_eq!(sim.server.registered_count(), 1);
}

#[test]
fn send_is_taken_from_a_registered_device_only_in_senml_or_lwm2m_cbor() {
    let mut sim = Sim::open();
    let from = addr(9300);
    let location = sim.register(from, &["ep=sender", "lwm2m=1.1"]);
    sim.events();
    let senml = br#"[{"bn":"/3/0/","n":"9","v":42},{"n":"15","vs":"UTC"}]"#;
    let send = |sim: &mut Sim, at: SocketAddr, method: u8, cf: Option<u16>, body: &[u8]| {
        let mut p = sim.request(method, &["dp"], &[], body);
        if let Some(cf) = cf {
            p.add(wire::CONTENT_FORMAT, &cf.to_be_bytes());
        }
        sim.send(at, &p);
        let out = sim.out();
        assert_eq!(out.len(), 1);
        out[0].1.code
    };
    assert_eq!(
        send(&mut sim, from, wire::POST, Some(110), senml),
        code(2, 4)
    );
    let events = sim.events();
    let [
        DeviceEvent::Notification {
            device,
            registration_id,
            path,
            content,
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}");
    };
    assert_eq!((device, path), (&dev("sender"), &Lwm2mPath::ROOT));
    assert_eq!(registration_id, &location);
    assert_eq!(
        content.values,
        [
            (Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(42)),
            (
                Lwm2mPath::resource(3, 0, 15),
                ResourceValue::String("UTC".into())
            )
        ]
    );
    // Refusals change nothing.
    assert_eq!(
        send(&mut sim, addr(9301), wire::POST, Some(110), senml),
        code(4, 4)
    );
    assert_eq!(
        send(&mut sim, from, wire::PUT, Some(110), senml),
        code(4, 5)
    );
    assert_eq!(
        send(&mut sim, from, wire::POST, Some(11542), senml),
        code(4, 15)
    );
    assert_eq!(send(&mut sim, from, wire::POST, None, senml), code(4, 15));
    assert_eq!(
        send(&mut sim, from, wire::POST, Some(110), b"[{"),
        code(4, 0)
    );
    assert!(sim.events().is_empty());
}

#[test]
fn composite_operations_on_the_wire() {
    let mut sim = Sim::open();
    let a = addr(9000);
    let location = sim.register(a, &["ep=d", "lwm2m=1.1"]);
    sim.events();
    let battery = Lwm2mPath::resource(3, 0, 9);
    let paths = vec![battery, Lwm2mPath::instance(5, 0)];
    let cbor = ContentFormat::SenmlCbor.code() as u32;
    let json = ContentFormat::SenmlJson.code() as u32;

    // Read-Composite: FETCH on the root, the path list in SenML CBOR, the answer asked
    // for in the same format; a value outside the paths is dropped and counted.
    sim.submit(
        1,
        "d",
        DeviceRequest::ReadComposite {
            paths: paths.clone(),
        },
    );
    let req = sim.out()[0].1.clone();
    assert_eq!((req.code, path_of(&req)), (code(0, 5), String::new()));
    assert_eq!(req.uint(wire::CONTENT_FORMAT), Some(cbor));
    assert_eq!(req.uint(wire::ACCEPT), Some(cbor));
    assert_eq!(
        content::decode_paths(ContentFormat::SenmlCbor, &req.payload).unwrap(),
        paths
    );
    let inside = Content {
        values: vec![
            (battery, ResourceValue::Integer(80)),
            (Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(0)),
        ],
    };
    let mut answer = inside.clone();
    answer.values.push((
        Lwm2mPath::resource(3, 0, 0),
        ResourceValue::String("x".into()),
    ));
    let body = payload(ContentFormat::SenmlCbor, &Lwm2mPath::ROOT, &answer);
    sim.answer(a, &req, code(2, 5), Some(cbor as u16), &body);
    assert_eq!(
        response(&sim.events(), 1),
        &Ok(DeviceReply::Content(inside.clone()))
    );
    assert_eq!(sim.server.values_outside_path(), 1);

    // A device that refuses CBOR (4.15) gets the same request again in SenML JSON.
    sim.submit(
        2,
        "d",
        DeviceRequest::ReadComposite {
            paths: paths.clone(),
        },
    );
    let req = sim.out()[0].1.clone();
    sim.answer(a, &req, code(4, 15), None, b"");
    let again = sim.out()[0].1.clone();
    assert_eq!(again.code, code(0, 5));
    assert_eq!(again.uint(wire::CONTENT_FORMAT), Some(json));
    assert_eq!(again.uint(wire::ACCEPT), Some(json));
    assert_eq!(
        content::decode_paths(ContentFormat::SenmlJson, &again.payload).unwrap(),
        paths
    );
    let body = payload(ContentFormat::SenmlJson, &Lwm2mPath::ROOT, &inside);
    sim.answer(a, &again, code(2, 5), Some(json as u16), &body);
    assert_eq!(
        response(&sim.events(), 2),
        &Ok(DeviceReply::Content(inside.clone()))
    );

    // Write-Composite: iPATCH on the root, values of two objects in one body (SenML JSON
    // now: the device refused CBOR).
    let written = Content {
        values: vec![
            (Lwm2mPath::resource(1, 0, 3), ResourceValue::Integer(60)),
            (
                Lwm2mPath::resource(3, 0, 15),
                ResourceValue::String("Europe/Paris".into()),
            ),
        ],
    };
    sim.submit(
        3,
        "d",
        DeviceRequest::WriteComposite {
            content: written.clone(),
        },
    );
    let req = sim.out()[0].1.clone();
    assert_eq!((req.code, path_of(&req)), (code(0, 7), String::new()));
    assert_eq!(req.uint(wire::CONTENT_FORMAT), Some(json));
    let sent = content::decode(
        ContentFormat::SenmlJson,
        &req.payload,
        &Lwm2mPath::ROOT,
        &content::standard_resource_type,
    )
    .unwrap();
    assert_eq!(sent, written);
    sim.answer(a, &req, code(2, 4), None, b"");
    assert_eq!(response(&sim.events(), 3), &Ok(DeviceReply::Done));

    // Observe-Composite: FETCH with Observe 0; its notifications arrive at the root with
    // the values of every observed path.
    sim.submit(
        4,
        "d",
        DeviceRequest::ObserveComposite {
            paths: paths.clone(),
        },
    );
    let req = sim.out()[0].1.clone();
    assert_eq!((req.code, req.uint(wire::OBSERVE)), (code(0, 5), Some(0)));
    let mut r = Packet::new(MsgType::Ack, code(2, 5), req.mid, &req.token);
    r.add_uint(wire::OBSERVE, 1);
    r.add_uint(wire::CONTENT_FORMAT, json);
    r.payload = payload(ContentFormat::SenmlJson, &Lwm2mPath::ROOT, &inside);
    sim.send(a, &r);
    assert_eq!(
        response(&sim.events(), 4),
        &Ok(DeviceReply::Content(inside.clone()))
    );
    assert_eq!(sim.server.observation_count(), 1);
    let changed = Content::single(battery, ResourceValue::Integer(79));
    let mut n = Packet::new(MsgType::Non, code(2, 5), 4200, &req.token);
    n.add_uint(wire::OBSERVE, 2);
    n.add_uint(wire::CONTENT_FORMAT, json);
    n.payload = payload(ContentFormat::SenmlJson, &Lwm2mPath::ROOT, &changed);
    sim.send(a, &n);
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::Notification {
            device: dev("d"),
            registration_id: location.clone(),
            path: Lwm2mPath::ROOT,
            content: changed,
        }]
    );

    // A plain Cancel-Observe of one of the paths does not end the composite; the
    // composite's cancel (paths in any order) repeats the FETCH, its body and its token
    // with Observe 1 (RFC 8132 §2.4).
    sim.submit(5, "d", DeviceRequest::CancelObserve { path: battery });
    let plain = sim.out()[0].1.clone();
    assert_ne!(plain.token, req.token);
    assert_eq!(sim.server.observation_count(), 1);
    sim.answer(a, &plain, code(2, 5), None, b"79");
    sim.events();
    let reversed: Vec<Lwm2mPath> = paths.iter().rev().copied().collect();
    sim.submit(
        6,
        "d",
        DeviceRequest::CancelObserveComposite { paths: reversed },
    );
    let c = sim.out()[0].1.clone();
    assert_eq!(
        (c.code, c.uint(wire::OBSERVE), &c.token, &c.payload),
        (code(0, 5), Some(1), &req.token, &req.payload)
    );
    assert_eq!(sim.server.observation_count(), 0);
    sim.answer(a, &c, code(2, 5), Some(json as u16), &r.payload);
    assert_eq!(response(&sim.events(), 6), &Ok(DeviceReply::Done));
}

#[test]
fn bootstrap_provisions_accounts_step_by_step() {
    let mut sim = Sim::open();
    sim.server = Lwm2mServer::with_seed(ServerConfig::default(), 7).with_bootstrap(Box::new(
        |r: &BootstrapRequest| {
            (r.endpoint == "dev").then(|| {
                BootstrapPlan::new(vec![
                    ServerAccount::new(9, "coaps://192.0.2.1:5684")
                        .with_psk("dev-id", vec![1, 2, 3]),
                ])
            })
        },
    ));
    let a = addr(9100);
    let tlv = |p: &Packet, base: &Lwm2mPath| {
        content::decode(
            ContentFormat::Tlv,
            &p.payload,
            base,
            &content::standard_resource_type,
        )
        .unwrap()
    };

    // Bootstrap-Request: 2.04, then Bootstrap-Discover (GET / Accept 40).
    let req = sim.request(wire::POST, &["bs"], &["ep=dev"], b"");
    sim.send(a, &req);
    let out = sim.out();
    assert_eq!((out[0].1.code, out[0].1.mid), (code(2, 4), req.mid));
    let discover = &out[1].1;
    assert_eq!(
        (
            discover.code,
            path_of(discover),
            discover.uint(wire::ACCEPT)
        ),
        (code(0, 1), String::new(), Some(40))
    );
    assert_eq!(sim.server.bootstrap_sessions(), 1);
    // A 1.0 client that does not know Discover: the session goes on.
    sim.answer(a, discover, code(4, 5), None, b"");
    let delete = sim.out()[0].1.clone();
    assert_eq!((delete.code, path_of(&delete)), (code(0, 4), String::new()));
    sim.answer(a, &delete, code(2, 2), None, b"");

    // Bootstrap-Write of the Security instance, then the Server instance, in TLV.
    let security = sim.out()[0].1.clone();
    assert_eq!(
        (security.code, path_of(&security)),
        (code(0, 3), "/0/1".to_owned())
    );
    assert_eq!(security.uint(wire::CONTENT_FORMAT), Some(11542));
    let r = |rid| Lwm2mPath::resource(0, 1, rid);
    assert_eq!(
        tlv(&security, &Lwm2mPath::instance(0, 1)).values,
        vec![
            (r(0), ResourceValue::String("coaps://192.0.2.1:5684".into())),
            (r(1), ResourceValue::Boolean(false)),
            (r(2), ResourceValue::Integer(0)),
            (r(3), ResourceValue::Opaque(b"dev-id".to_vec())),
            (r(5), ResourceValue::Opaque(vec![1, 2, 3])),
            (r(10), ResourceValue::Integer(9)),
        ]
    );
    sim.answer(a, &security, code(2, 4), None, b"");
    let server = sim.out()[0].1.clone();
    assert_eq!(
        (server.code, path_of(&server)),
        (code(0, 3), "/1/0".to_owned())
    );
    let s = |rid| Lwm2mPath::resource(1, 0, rid);
    assert_eq!(
        tlv(&server, &Lwm2mPath::instance(1, 0)).values,
        vec![
            (s(0), ResourceValue::Integer(9)),
            (s(1), ResourceValue::Integer(300)),
            (s(6), ResourceValue::Boolean(false)),
            (s(7), ResourceValue::String("U".into())),
        ]
    );
    sim.answer(a, &server, code(2, 4), None, b"");

    // Bootstrap-Finish (POST /bs), acknowledged: the session ends as finished.
    let finish = sim.out()[0].1.clone();
    assert_eq!(
        (finish.code, path_of(&finish)),
        (code(0, 2), "/bs".to_owned())
    );
    assert!(sim.events().is_empty());
    sim.answer(a, &finish, code(2, 4), None, b"");
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::Bootstrap {
            endpoint: "dev".into(),
            address: Some(a),
            outcome: BootstrapOutcome::Finished,
        }]
    );
    assert_eq!(sim.server.bootstrap_sessions(), 0);

    // A write the device refuses ends the session as failed, with the step and code.
    let req = sim.request(wire::POST, &["bs"], &["ep=dev"], b"");
    sim.send(a, &req);
    for answer in [code(2, 5), code(2, 2)] {
        let step = sim.out().pop().unwrap().1;
        sim.answer(a, &step, answer, None, b"");
    }
    let security = sim.out()[0].1.clone();
    sim.answer(a, &security, code(4, 0), None, b"");
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::Bootstrap {
            endpoint: "dev".into(),
            address: Some(a),
            outcome: BootstrapOutcome::Failed("write /0/1: answered 4.00".into()),
        }]
    );
    assert!(sim.out().is_empty(), "nothing more is sent");

    // No plan for the endpoint: 4.00 and a refusal; no `ep`: 4.00.
    for (query, refused) in [(&["ep=other"][..], true), (&[][..], false)] {
        let req = sim.request(wire::POST, &["bs"], query, b"");
        sim.send(a, &req);
        let out = sim.out();
        assert_eq!((out.len(), out[0].1.code), (1, code(4, 0)));
        assert_eq!(!sim.events().is_empty(), refused);
    }
    // A device that never answers: the session fails when the request times out.
    let req = sim.request(wire::POST, &["bs"], &["ep=dev"], b"");
    sim.send(a, &req);
    sim.out();
    sim.advance(Duration::from_secs(300));
    match sim.events().as_slice() {
        [
            DeviceEvent::Bootstrap {
                outcome: BootstrapOutcome::Failed(why),
                ..
            },
        ] => assert!(why.starts_with("discover: "), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.server.bootstrap_sessions(), 0);
    // A second Bootstrap-Request from the address mid-session replaces the session, and
    // the first one ends with an outcome too.
    for _ in 0..2 {
        let req = sim.request(wire::POST, &["bs"], &["ep=dev"], b"");
        sim.send(a, &req);
    }
    sim.out();
    match sim.events().as_slice() {
        [
            DeviceEvent::Bootstrap {
                outcome: BootstrapOutcome::Failed(why),
                ..
            },
        ] => assert_eq!(why, "replaced by a new Bootstrap-Request"),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.server.bootstrap_sessions(), 1);
}

#[test]
fn without_a_bootstrapper_bs_is_not_found_and_sessions_are_bounded() {
    let mut sim = Sim::open();
    let req = sim.request(wire::POST, &["bs"], &["ep=dev"], b"");
    sim.send(addr(9200), &req);
    assert_eq!(sim.out()[0].1.code, code(4, 4));

    sim.server = Lwm2mServer::with_seed(ServerConfig::default(), 7).with_bootstrap(Box::new(
        |_: &BootstrapRequest| Some(BootstrapPlan::new(vec![])),
    ));
    for i in 0..MAX_BOOTSTRAP_SESSIONS as u16 {
        let req = sim.request(wire::POST, &["bs"], &["ep=dev"], b"");
        sim.send(addr(10_000 + i), &req);
        assert_eq!(sim.out()[0].1.code, code(2, 4));
    }
    assert_eq!(sim.server.bootstrap_sessions(), MAX_BOOTSTRAP_SESSIONS);
    // One more device: 5.03, nothing started; the same device again replaces its session.
    let req = sim.request(wire::POST, &["bs"], &["ep=dev"], b"");
    sim.send(addr(9300), &req);
    let out = sim.out();
    assert_eq!((out.len(), out[0].1.code), (1, code(5, 3)));
    let req = sim.request(wire::POST, &["bs"], &["ep=dev"], b"");
    sim.send(addr(10_000), &req);
    assert_eq!(sim.out()[0].1.code, code(2, 4));
    assert_eq!(sim.server.bootstrap_sessions(), MAX_BOOTSTRAP_SESSIONS);
}

#[test]
fn an_identity_moved_to_another_device_does_not_own_the_old_registration() {
    let mut sim = Sim::open();
    let a = addr(9100);
    let ident = |device: &str| PeerIdentity {
        psk_identity: "shared-name".into(),
        device: Some(dev(device)),
    };
    let send_as = |sim: &mut Sim, who: &PeerIdentity, p: &Packet| {
        sim.server
            .handle_datagram_from(sim.now, a, Some(who), &p.encode());
    };
    // "pump" registers over the identity "shared-name".
    let p = sim.request(wire::POST, &["rd"], &["ep=pump"], b"</3/0>");
    send_as(&mut sim, &ident("pump"), &p);
    let out = sim.out();
    assert_eq!(out[0].1.code, code(2, 1), "{out:?}");
    let loc: Vec<&[u8]> = out[0].1.opts(wire::LOCATION_PATH).collect();
    let id = String::from_utf8(loc[1].to_vec()).unwrap();
    sim.events();
    assert!(sim.server.may_send_to(a, Some(&ident("pump"))));
    // The name now belongs to "valve": it may neither update pump's registration nor
    // receive pump's requests.
    let p = sim.request(wire::POST, &["rd", &id], &[], b"");
    send_as(&mut sim, &ident("valve"), &p);
    assert_eq!(sim.out()[0].1.code, code(4, 3));
    assert!(matches!(
        &sim.events()[..],
        [DeviceEvent::Rejected {
            reason: RejectReason::IdentityMismatch,
            ..
        }]
    ));
    assert!(!sim.server.may_send_to(a, Some(&ident("valve"))));
    assert!(!sim.server.may_send_to(a, None));
    // The device itself still may.
    let p = sim.request(wire::POST, &["rd", &id], &[], b"");
    send_as(&mut sim, &ident("pump"), &p);
    assert_eq!(sim.out()[0].1.code, code(2, 4));
    assert!(
        sim.server.may_send_to(addr(9999), None),
        "no registration there"
    );
}

#[test]
fn packages_go_to_the_registered_peer_with_its_identity_only() {
    const BLOCK2: u16 = 23;
    let packages = Packages::default();
    let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    packages.publish("fw/2.0.bin", body.clone()).unwrap();
    let mut sim = Sim::open();
    let server = std::mem::replace(&mut sim.server, Lwm2mServer::new(ServerConfig::default()));
    sim.server = server.with_packages(packages.clone());
    let (a, b) = (addr(9400), addr(9401));
    let ident = |device: &str| PeerIdentity {
        psk_identity: format!("{device}-id").into(),
        device: Some(dev(device)),
    };
    let get = |sim: &mut Sim,
               from: SocketAddr,
               who: Option<&PeerIdentity>,
               method: u8,
               name: &str,
               block: Option<u32>| {
        let mut p = sim.request(method, &["pkg", "fw", name], &[], b"");
        if let Some(num) = block {
            p.add_uint(BLOCK2, (num << 4) | 6);
        }
        sim.server
            .handle_datagram_from(sim.now, from, who, &p.encode());
        let out = sim.out();
        assert_eq!(out.len(), 1, "{out:?}");
        out.into_iter().next().unwrap().1
    };
    // Before the device registers, nobody gets it.
    let pump = ident("pump");
    assert_eq!(
        get(&mut sim, a, Some(&pump), wire::GET, "2.0.bin", None).code,
        code(4, 4)
    );
    let p = sim.request(wire::POST, &["rd"], &["ep=pump"], b"</5/0>");
    sim.server
        .handle_datagram_from(sim.now, a, Some(&pump), &p.encode());
    assert_eq!(sim.out()[0].1.code, code(2, 1));
    sim.events();
    // The registered peer: block 0, then block 1 from the endpoint's transfer.
    let first = get(&mut sim, a, Some(&pump), wire::GET, "2.0.bin", None);
    assert_eq!(first.code, code(2, 5));
    assert_eq!(first.payload, body[..1024]);
    assert_eq!(first.uint(BLOCK2), Some((1 << 3) | 6), "block 0, more");
    let second = get(&mut sim, a, Some(&pump), wire::GET, "2.0.bin", Some(1));
    assert_eq!(second.payload, body[1024..2048]);
    assert_eq!(
        packages.downloads(),
        1,
        "a download counts at its first block"
    );
    // Another identity at that address, another address, another method, another name.
    assert_eq!(
        get(
            &mut sim,
            a,
            Some(&ident("valve")),
            wire::GET,
            "2.0.bin",
            None
        )
        .code,
        code(4, 3)
    );
    assert!(matches!(
        &sim.events()[..],
        [DeviceEvent::Rejected {
            reason: RejectReason::IdentityMismatch,
            ..
        }]
    ));
    assert_eq!(
        get(&mut sim, b, None, wire::GET, "2.0.bin", None).code,
        code(4, 4)
    );
    assert_eq!(
        get(&mut sim, a, Some(&pump), wire::PUT, "2.0.bin", None).code,
        code(4, 5)
    );
    assert_eq!(
        get(&mut sim, a, Some(&pump), wire::GET, "3.0.bin", None).code,
        code(4, 4)
    );
    assert_eq!(packages.downloads(), 1);
    // A server without packages knows no /pkg.
    let mut plain = Sim::open();
    plain.register(a, &["ep=pump"]);
    assert_eq!(
        get(&mut plain, a, None, wire::GET, "2.0.bin", None).code,
        code(4, 4)
    );
}

/// A scripted server with `d` registered at `a` (and `lt=lifetime`), a Read of
/// `/3/0/0` (op 1) sent and unanswered, and a Read of `/3/0/9` (op 2) waiting behind it
/// (NSTART 1). Returns the location and op 1's request.
fn one_in_flight_one_queued(sim: &mut Sim, a: SocketAddr, queries: &[&str]) -> (String, Packet) {
    let location = sim.register(a, queries);
    sim.events();
    for (op, res) in [(1, 0), (2, 9)] {
        sim.submit(
            op,
            "d",
            DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, res),
            },
        );
    }
    let out = sim.out();
    assert_eq!(
        out.len(),
        1,
        "NSTART 1: one request goes, one waits: {out:?}"
    );
    assert_eq!(path_of(&out[0].1), "/3/0/0");
    assert_eq!(
        sim.events(),
        [DeviceEvent::Sent {
            op: OpId(1),
            device: dev("d")
        }],
        "only the request that went is reported sent"
    );
    (location, out[0].1.clone())
}

/// Retransmissions (or any datagram) the server sends over `d` in the next 100 s.
fn sent_in_100_s(sim: &mut Sim) -> Vec<(SocketAddr, Packet)> {
    let mut sent = Vec::new();
    for _ in 0..50 {
        sim.advance(Duration::from_secs(2));
        sent.extend(sim.out());
    }
    sent
}

/// A request sent to a device whose registration then ends (De-register, expiry, the hub
/// ending it, a new Register replacing it) fails at once with
/// [`DeviceError::RegistrationEnded`], and is not retransmitted any further; a request
/// still waiting in the queue (never sent) fails with [`DeviceError::NotRegistered`], or,
/// when a new Register replaced the registration, goes to the new one.
#[test]
fn requests_in_flight_fail_at_once_when_the_registration_ends() {
    // De-register.
    let mut sim = Sim::open();
    let a = addr(9000);
    let (location, _) = one_in_flight_one_queued(&mut sim, a, &["ep=d", "lt=300"]);
    let p = sim.request(wire::DELETE, &["rd", &location], &[], b"");
    sim.send(a, &p);
    assert_eq!(sim.out()[0].1.code, code(2, 2));
    let ev = sim.events();
    assert_eq!(response(&ev, 1), &Err(DeviceError::RegistrationEnded));
    assert_eq!(response(&ev, 2), &Err(DeviceError::NotRegistered));
    assert!(ev.contains(&DeviceEvent::Deregistered { device: dev("d") }));
    assert!(sent_in_100_s(&mut sim).is_empty(), "nothing retransmitted");
    assert!(sim.events().is_empty(), "no late TimedOut for op 1");
    assert_eq!(sim.server.endpoint().outstanding_requests(), 0);

    // Expiry (lt=20 + 30 s grace: long before the 93 s exchange would give up).
    let mut sim = Sim::open();
    one_in_flight_one_queued(&mut sim, a, &["ep=d", "lt=20"]);
    let start = sim.now;
    let mut ended = None;
    for _ in 0..60 {
        sim.advance(Duration::from_secs(1));
        sim.out();
        let ev = sim.events();
        if ev.iter().any(|e| matches!(e, DeviceEvent::Expired { .. })) {
            ended = Some((sim.now - start, ev));
            break;
        }
    }
    let (after, ev) = ended.expect("expired");
    assert!(after <= Duration::from_secs(51), "{after:?}");
    assert_eq!(response(&ev, 1), &Err(DeviceError::RegistrationEnded));
    assert_eq!(response(&ev, 2), &Err(DeviceError::NotRegistered));
    assert!(sent_in_100_s(&mut sim).is_empty());
    assert!(sim.events().is_empty());

    // Ended by the hub (a removed twin).
    let mut sim = Sim::open();
    let (location, _) = one_in_flight_one_queued(&mut sim, a, &["ep=d", "lt=300"]);
    sim.submit(
        3,
        "d",
        DeviceRequest::EndRegistration {
            registration_id: location,
        },
    );
    let ev = sim.events();
    assert_eq!(response(&ev, 3), &Ok(DeviceReply::Done));
    assert_eq!(response(&ev, 1), &Err(DeviceError::RegistrationEnded));
    assert_eq!(response(&ev, 2), &Err(DeviceError::NotRegistered));
    assert!(sent_in_100_s(&mut sim).is_empty());
    assert!(sim.events().is_empty());
}

/// NSTART holds across a new Register: the old registration's request in flight (to the
/// old address) fails at once as [`DeviceError::RegistrationEnded`] and is not
/// retransmitted, so the queued request that goes to the new registration is the only
/// one in flight to the device.
#[test]
fn a_new_register_leaves_one_request_in_flight() {
    for queue_mode in [false, true] {
        let mut sim = Sim::new(ServerConfig {
            auto_provision: true,
            takeover: Takeover::Replace,
            ..ServerConfig::default()
        });
        let (a, b) = (addr(9000), addr(9001));
        let q: &[&str] = if queue_mode {
            &["ep=d", "lt=300", "b=UQ"]
        } else {
            &["ep=d", "lt=300"]
        };
        one_in_flight_one_queued(&mut sim, a, q);
        // The device restarts behind a NAT (a new port) and registers anew.
        let p = sim.request(wire::POST, &["rd"], q, b"</3/0>");
        sim.send(b, &p);
        let out = sim.out();
        let ev = sim.events();
        assert_eq!(
            response(&ev, 1),
            &Err(DeviceError::RegistrationEnded),
            "queue mode {queue_mode}"
        );
        let requests: Vec<_> = out
            .iter()
            .filter(|(_, m)| m.mtype == MsgType::Con)
            .collect();
        assert_eq!(requests.len(), 1, "{out:?}");
        assert_eq!(requests[0].0, b);
        assert_eq!(path_of(&requests[0].1), "/3/0/9");
        let req = requests[0].1.clone();
        // Until op 2 is answered nothing else goes to either address.
        sim.advance(Duration::from_secs(1));
        assert!(sim.out().is_empty());
        sim.answer(b, &req, code(2, 5), None, b"7");
        assert!(response(&sim.events(), 2).is_ok());
        let later = sent_in_100_s(&mut sim);
        assert!(
            later.iter().all(|(to, _)| *to != a),
            "nothing more to the old address: {later:?}"
        );
    }
}

/// NAT rebinding: an Update from a new address moves the registration there, and its
/// request in flight to the old address fails at once as
/// [`DeviceError::RegistrationEnded`] (sent, outcome unknown), before the
/// [`DeviceEvent::RegistrationUpdated`] (a job engine sees the device go and come
/// back, and redoes the step), as Leshan cancels a registration's ongoing requests when
/// an Update changes its address. It is not retransmitted to the old address, and the
/// queued request goes to the new one at once instead of waiting up to 93 s behind it
/// (NSTART 1).
#[test]
fn an_update_from_a_new_address_fails_the_request_in_flight_to_the_old_one() {
    for queue_mode in [false, true] {
        let mut sim = Sim::open();
        let (a, b) = (addr(9000), addr(9001));
        let q: &[&str] = if queue_mode {
            &["ep=d", "lt=300", "b=UQ"]
        } else {
            &["ep=d", "lt=300"]
        };
        let (location, _) = one_in_flight_one_queued(&mut sim, a, q);
        let p = sim.request(wire::POST, &["rd", &location], &[], b"");
        sim.send(b, &p);
        let out = sim.out();
        let ev = sim.events();
        let ended = ev.iter().position(|e| {
            matches!(
                e,
                DeviceEvent::Response {
                    op: OpId(1),
                    result: Err(DeviceError::RegistrationEnded),
                    ..
                }
            )
        });
        let updated = ev
            .iter()
            .position(|e| matches!(e, DeviceEvent::RegistrationUpdated { .. }));
        assert!(
            ended.is_some() && ended < updated,
            "op 1 fails before the Update is reported (queue mode {queue_mode}): {ev:?}"
        );
        let requests: Vec<_> = out
            .iter()
            .filter(|(_, m)| m.mtype == MsgType::Con)
            .collect();
        assert_eq!(requests.len(), 1, "{out:?}");
        assert_eq!(requests[0].0, b);
        assert_eq!(path_of(&requests[0].1), "/3/0/9");
        let req = requests[0].1.clone();
        sim.answer(b, &req, code(2, 5), None, b"7");
        assert!(response(&sim.events(), 2).is_ok());
        let later = sent_in_100_s(&mut sim);
        assert!(
            later.iter().all(|(to, _)| *to != a),
            "nothing more to the old address: {later:?}"
        );
        assert!(
            sim.events()
                .iter()
                .all(|e| !matches!(e, DeviceEvent::TimedOut { .. })),
            "no late TimedOut for op 1"
        );
        assert_eq!(sim.server.endpoint().outstanding_requests(), 0);
    }
}

/// A queue-mode device's queued request is reported [`DeviceEvent::Sent`] only when it
/// leaves (the device woke), after the `Registered` of the registration that woke it; a
/// reboot job over the server then does not take that registration for its reboot (it
/// did, and reported success before its Execute reached the device).
#[test]
fn a_queued_reboot_execute_leaves_after_the_registration_that_woke_the_device() {
    use crate::job::{ChildState, EngineConfig, JobEngine, JobId, JobSpec, JobType};
    let mut sim = Sim::open();
    let a = addr(9100);
    let q: &[&str] = &["ep=q", "b=UQ", "lt=3600"];
    sim.register(a, q);
    assert!(sim.server.reports_sent());
    let config = EngineConfig {
        transport_reports_sent: sim.server.reports_sent(),
        ..EngineConfig::default()
    };
    let mut engine = JobEngine::new(config, sim.now, crate::time::Timestamp::from_millis(0));
    // Hands the server's events to the engine and the engine's operations to the server.
    let feed = |sim: &mut Sim, engine: &mut JobEngine| -> Vec<DeviceEvent> {
        let events = sim.events();
        for e in &events {
            engine.handle_event(sim.now, e);
        }
        let ops: Vec<DeviceOp> = std::iter::from_fn(|| engine.poll_op()).collect();
        for op in ops {
            sim.server.submit(sim.now, op);
        }
        events
    };
    feed(&mut sim, &mut engine);
    sim.advance(Duration::from_secs(100)); // past the awake window: asleep
    let id = JobId::new("r").unwrap();
    engine
        .create(
            sim.now,
            JobSpec::new(
                id.clone(),
                JobType::Reboot {
                    wait_for_registration: true,
                },
                vec![dev("q")],
            ),
        )
        .unwrap();
    feed(&mut sim, &mut engine);
    assert!(
        sim.out().is_empty(),
        "asleep: the Execute waits in the queue"
    );
    let ev = feed(&mut sim, &mut engine);
    assert!(
        !ev.iter().any(|e| matches!(e, DeviceEvent::Sent { .. })),
        "not sent while asleep: {ev:?}"
    );
    // The device restarts on its own and registers anew: the queued Execute goes to the
    // new registration.
    let p = sim.request(wire::POST, &["rd"], q, b"</1/0>,</3/0>,</5/0>");
    sim.send(a, &p);
    let out = sim.out();
    let execute = out
        .iter()
        .find(|(_, m)| m.mtype == MsgType::Con)
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("the Execute went out: {out:?}"));
    assert_eq!(path_of(&execute), "/3/0/4");
    let ev = feed(&mut sim, &mut engine);
    let registered = ev
        .iter()
        .position(|e| matches!(e, DeviceEvent::Registered { .. }))
        .expect("registered");
    let sent = ev
        .iter()
        .position(|e| matches!(e, DeviceEvent::Sent { .. }))
        .unwrap_or_else(|| panic!("the Execute is reported sent: {ev:?}"));
    assert!(registered < sent, "{ev:?}");
    assert_eq!(
        engine.child_state(&id, &dev("q")).unwrap().0,
        ChildState::InProgress,
        "the registration came before the Execute left: no proof of the reboot"
    );
    // The device answers, reboots and registers: that is the reboot.
    sim.answer(a, &execute, code(2, 4), None, b"");
    feed(&mut sim, &mut engine);
    assert_eq!(
        engine.child_state(&id, &dev("q")).unwrap().0,
        ChildState::InProgress
    );
    sim.advance(Duration::from_secs(5));
    let p = sim.request(wire::POST, &["rd"], q, b"</1/0>,</3/0>,</5/0>");
    sim.send(a, &p);
    sim.out();
    feed(&mut sim, &mut engine);
    assert_eq!(
        engine.child_state(&id, &dev("q")).unwrap().0,
        ChildState::Succeeded
    );
    assert!(sim.out().is_empty(), "one Execute only");
    engine.validate().unwrap();
}

/// Establishes an observation of `path` (op `op`) with the device at `at`; returns its
/// token.
fn observe_at(sim: &mut Sim, at: SocketAddr, op: u64, device: &str, path: Lwm2mPath) -> Vec<u8> {
    sim.submit(op, device, DeviceRequest::Observe { path });
    let out = sim.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, at);
    let req = out[0].1.clone();
    let mut r = Packet::new(MsgType::Ack, code(2, 5), req.mid, &req.token);
    r.add_uint(wire::OBSERVE, 1);
    r.payload = b"80".to_vec();
    sim.send(at, &r);
    assert!(response(&sim.events(), op).is_ok());
    req.token
}

/// A CON notification of `/3/0/9` carrying `value` in TLV.
fn battery_notification(mid: u16, token: &[u8], seq: u32, value: u8) -> Packet {
    let mut n = Packet::new(MsgType::Con, code(2, 5), mid, token);
    n.add_uint(wire::OBSERVE, seq);
    n.add_uint(wire::CONTENT_FORMAT, 11542);
    n.payload = vec![0xC1, 0x09, value];
    n
}

/// NAT rebinding: after an Update from a new address, the registration's observations
/// follow it. A notification from the new address is delivered (and acknowledged there),
/// not answered with RST (which makes the device cancel the observation without the hub
/// knowing), and the cancel goes to the new address.
#[test]
fn observations_follow_an_update_from_a_new_address() {
    let mut sim = Sim::open();
    let (a, b) = (addr(9500), addr(9501));
    let location = sim.register(a, &["ep=d", "lt=300"]);
    sim.events();
    let bat = Lwm2mPath::resource(3, 0, 9);
    let token = observe_at(&mut sim, a, 1, "d", bat);
    let p = sim.request(wire::POST, &["rd", &location], &[], b"");
    sim.send(b, &p);
    assert_eq!(sim.out()[0].1.code, code(2, 4));
    sim.events();
    sim.send(b, &battery_notification(4000, &token, 2, 75));
    let out = sim.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].0, out[0].1.mtype, out[0].1.mid),
        (b, MsgType::Ack, 4000),
        "acknowledged at the new address, not reset"
    );
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::Notification {
            device: dev("d"),
            registration_id: location.clone(),
            path: bat,
            content: Content::single(bat, ResourceValue::Integer(75)),
        }]
    );
    // A notification older than the one taken, from the old address (reordered across
    // the rebinding), moves nothing back and is not delivered. It is acknowledged, not
    // reset: RST makes the device drop the observation (RFC 7641 §4.5), which works at
    // the new address (before, it was reset, and the hub's sync of the value stopped).
    sim.send(a, &battery_notification(3999, &token, 1, 74));
    let out = sim.out();
    assert_eq!(
        out.iter()
            .map(|(to, m)| (*to, m.mtype, m.mid))
            .collect::<Vec<_>>(),
        vec![(a, MsgType::Ack, 3999)],
        "acknowledged at the old address, not reset"
    );
    assert!(sim.events().is_empty());
    assert_eq!(sim.server.registration(&dev("d")).unwrap().address, Some(b));
    // Its retransmission (a duplicate) is acknowledged again, still not delivered; a NON
    // one gets nothing.
    sim.send(a, &battery_notification(3999, &token, 1, 74));
    assert_eq!(sim.out().len(), 1);
    let mut non = battery_notification(3998, &token, 1, 74);
    non.mtype = MsgType::Non;
    sim.send(a, &non);
    assert!(sim.out().is_empty());
    assert!(sim.events().is_empty());
    // Still notified at the new address.
    sim.send(b, &battery_notification(4001, &token, 3, 76));
    assert_eq!(sim.out()[0].1.mtype, MsgType::Ack);
    assert_eq!(sim.events().len(), 1);
    // The cancel goes to where the device is.
    sim.submit(2, "d", DeviceRequest::CancelObserve { path: bat });
    let out = sim.out();
    assert_eq!(out[0].0, b);
    assert_eq!(
        (out[0].1.uint(wire::OBSERVE), &out[0].1.token),
        (Some(1), &token)
    );
}

/// NAT rebinding, then a late notification: the device sent it from its old address
/// before the rebinding, and it arrives after the Update from the new address moved the
/// registration. It is fresh (newer than the last one taken) but moves nothing back:
/// the registration left that address less than `LEFT_ADDRESS_MEMORY` ago. It is
/// acknowledged (not reset: the observation works at the new address) and dropped, and
/// requests keep going to the new address. Before, it moved the registration back to the
/// dead address until the device's next message. An Update from the old address still
/// moves it back (the device speaking), and past the memory a notification does too.
#[test]
fn a_late_notification_from_the_address_left_does_not_move_the_registration_back() {
    let mut sim = Sim::open();
    let (a, b) = (addr(9505), addr(9506));
    let location = sim.register(a, &["ep=d", "lt=3000"]);
    sim.events();
    let bat = Lwm2mPath::resource(3, 0, 9);
    let token = observe_at(&mut sim, a, 1, "d", bat);
    let update = sim.request(wire::POST, &["rd", &location], &[], b"");
    sim.send(b, &update);
    assert_eq!(sim.out()[0].1.code, code(2, 4));
    sim.events();
    sim.advance(Duration::from_secs(2));
    sim.out();
    // Sent from `a` before the rebinding (seq 2 > 1, the last taken), arriving now.
    sim.send(a, &battery_notification(4100, &token, 2, 75));
    assert_eq!(
        sim.out()
            .iter()
            .map(|(to, m)| (*to, m.mtype, m.mid))
            .collect::<Vec<_>>(),
        vec![(a, MsgType::Ack, 4100)],
        "acknowledged at the old address, not reset"
    );
    assert_eq!(sim.events(), vec![], "no move, no delivery");
    assert_eq!(sim.server.registration(&dev("d")).unwrap().address, Some(b));
    // Its retransmission is acknowledged again.
    sim.send(a, &battery_notification(4100, &token, 2, 75));
    assert_eq!(sim.out().len(), 1);
    assert!(sim.events().is_empty());
    // Requests go to the new address; the observation still works there.
    sim.submit(2, "d", DeviceRequest::Read { path: bat });
    let out = sim.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, b);
    sim.send(b, &battery_notification(4101, &token, 3, 76));
    assert!(
        sim.out()
            .iter()
            .all(|(to, m)| *to == b && m.mtype == MsgType::Ack)
    );
    assert!(
        sim.events()
            .iter()
            .any(|e| matches!(e, DeviceEvent::Notification { .. }))
    );
    // A late error response from the old address (the device ended the observation
    // before it moved) ends the observation, acknowledged, without a move.
    let mut gone = battery_notification(4102, &token, 4, 0);
    gone.code = code(4, 4);
    gone.options.retain(|(n, _)| *n != wire::OBSERVE);
    gone.payload.clear();
    sim.send(a, &gone);
    assert_eq!(
        sim.out()
            .iter()
            .map(|(to, m)| (*to, m.mtype))
            .collect::<Vec<_>>(),
        vec![(a, MsgType::Ack)]
    );
    assert_eq!(
        sim.events(),
        vec![DeviceEvent::ObservationEnded {
            device: dev("d"),
            path: bat,
            op: OpId(1),
            cause: ObservationEndCause::EndedByDevice,
        }]
    );
    assert_eq!(sim.server.registration(&dev("d")).unwrap().address, Some(b));
    // An Update from the old address moves it back at any time: the device speaks.
    sim.send(a, &update);
    assert_eq!(sim.out()[0].1.code, code(2, 4));
    assert_eq!(sim.server.registration(&dev("d")).unwrap().address, Some(a));
}

/// Past `LEFT_ADDRESS_MEMORY` (no datagram travels that long), a fresh notification
/// from an address the registration left moves it back: the device is there again. And
/// at most `MAX_LEFT_ADDRESSES` are remembered: the oldest goes first.
#[test]
fn the_addresses_left_are_remembered_for_a_while_and_a_few_at_a_time() {
    let mut sim = Sim::open();
    let addrs: Vec<SocketAddr> = (0..=MAX_LEFT_ADDRESSES as u16 + 1)
        .map(|i| addr(9530 + i))
        .collect();
    let location = sim.register(addrs[0], &["ep=d", "lt=3000"]);
    sim.events();
    let bat = Lwm2mPath::resource(3, 0, 9);
    let token = observe_at(&mut sim, addrs[0], 1, "d", bat);
    let update = sim.request(wire::POST, &["rd", &location], &[], b"");
    sim.send(addrs[1], &update);
    sim.out();
    sim.events();
    sim.advance(LEFT_ADDRESS_MEMORY - Duration::from_secs(1));
    sim.out();
    sim.send(addrs[0], &battery_notification(4200, &token, 2, 75));
    assert_eq!(sim.out()[0].1.mtype, MsgType::Ack);
    assert!(sim.events().is_empty());
    assert_eq!(
        sim.server.registration(&dev("d")).unwrap().address,
        Some(addrs[1])
    );
    sim.advance(Duration::from_secs(1));
    sim.out();
    sim.send(addrs[0], &battery_notification(4201, &token, 3, 76));
    assert_eq!(
        sim.server.registration(&dev("d")).unwrap().address,
        Some(addrs[0]),
        "moved back past the memory"
    );
    sim.events();
    sim.out();
    // Moves through all the others, one Update each: addrs[0] is left first, and
    // forgotten when a fifth address is left.
    for (i, a) in addrs.iter().enumerate().skip(1) {
        // A new message id each: the first Update's from addrs[1] is a duplicate.
        let update = sim.request(wire::POST, &["rd", &location], &[], b"");
        sim.send(*a, &update);
        assert_eq!(sim.out()[0].1.code, code(2, 4), "{i}");
    }
    sim.events();
    let last = *addrs.last().unwrap();
    assert_eq!(
        sim.server.registration(&dev("d")).unwrap().address,
        Some(last)
    );
    // Remembered: the last MAX_LEFT_ADDRESSES left (addrs[1..=MAX]): no move.
    let mut seq = 10;
    let mut mid = 4300;
    for a in &addrs[1..addrs.len() - 1] {
        seq += 1;
        mid += 1;
        sim.send(*a, &battery_notification(mid, &token, seq, 1));
        sim.out();
        assert_eq!(
            sim.server.registration(&dev("d")).unwrap().address,
            Some(last),
            "{a}"
        );
    }
    // addrs[0]: forgotten, so its fresh notification moves the registration.
    sim.send(addrs[0], &battery_notification(mid + 1, &token, seq + 1, 1));
    assert_eq!(
        sim.server.registration(&dev("d")).unwrap().address,
        Some(addrs[0])
    );
}

/// A NAT gives a registration's address to another device, which Updates its own
/// registration from there. The displaced registration's request in flight fails at
/// once (its retransmissions would reach the other device) and its next requests wait,
/// sent to nobody, until its device Updates from where it is now. Before, they all went
/// to the address, to the other device.
#[test]
fn an_update_from_another_registrations_address_displaces_it() {
    let mut sim = Sim::open();
    let (a, b, c) = (addr(9540), addr(9541), addr(9542));
    let d_location = sim.register(a, &["ep=d", "lt=3000"]);
    let e_location = sim.register(b, &["ep=e", "lt=3000"]);
    sim.events();
    let bat = Lwm2mPath::resource(3, 0, 9);
    sim.submit(1, "e", DeviceRequest::Read { path: bat });
    assert_eq!(sim.out()[0].0, b);
    // d's device now has b.
    let update = sim.request(wire::POST, &["rd", &d_location], &[], b"");
    sim.send(b, &update);
    assert_eq!(sim.out()[0].1.code, code(2, 4));
    let ev = sim.events();
    assert_eq!(response(&ev, 1), &Err(DeviceError::RegistrationEnded));
    assert_eq!(sim.server.registration(&dev("d")).unwrap().address, Some(b));
    assert!(
        sim.server.registration(&dev("e")).is_some(),
        "e stays registered"
    );
    // Nothing of e's goes to b: not the read's retransmissions, not a new request.
    sim.submit(2, "e", DeviceRequest::Read { path: bat });
    for _ in 0..10 {
        sim.advance(Duration::from_secs(10));
        let out = sim.out();
        assert!(out.is_empty(), "{out:?}");
    }
    assert!(
        !sim.events()
            .iter()
            .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(2), .. }))
    );
    // d's requests go to b.
    sim.submit(3, "d", DeviceRequest::Read { path: bat });
    assert_eq!(sim.out()[0].0, b);
    // e's device Updates from c: its read goes there.
    let update = sim.request(wire::POST, &["rd", &e_location], &[], b"");
    sim.send(c, &update);
    let out = sim.out();
    assert!(
        out.iter().any(|(to, m)| *to == c && m.code == code(2, 4)),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|(to, m)| *to == c && m.code == wire::GET && m.mtype == MsgType::Con),
        "{out:?}"
    );
    assert!(
        sim.events()
            .iter()
            .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(2), .. }))
    );
}

/// A new device registers from a registration's address: the displaced registration's
/// device re-registers from its new address and is accepted at once, without a takeover
/// probe of the old address (which the new device would answer, and the real device be
/// refused as AddressInUse).
#[test]
fn a_register_from_another_registrations_address_displaces_it() {
    let mut sim = Sim::open();
    let (b, c) = (addr(9545), addr(9546));
    sim.register(b, &["ep=e", "lt=3000"]);
    sim.register(b, &["ep=f", "lt=3000"]);
    sim.events();
    sim.submit(
        1,
        "e",
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 9),
        },
    );
    assert!(sim.out().is_empty(), "nothing of e's to f's device");
    // e's device comes back from c: accepted at once, and the read goes there.
    let p = sim.request(wire::POST, &["rd"], &["ep=e", "lt=3000"], b"</3/0>");
    sim.send(c, &p);
    let out = sim.out();
    assert!(
        out.iter().any(|(to, m)| *to == c && m.code == code(2, 1)),
        "{out:?}"
    );
    assert!(
        out.iter().any(|(to, m)| *to == c && m.code == wire::GET),
        "{out:?}"
    );
    assert_eq!(sim.server.registration(&dev("e")).unwrap().address, Some(c));
    assert_eq!(sim.server.registration(&dev("f")).unwrap().address, Some(b));
}

/// NAT rebinding seen first in a notification (before any Update): the token of one of the
/// registration's observations proves the device, as the location does for an Update.
/// The registration follows the new address (reported as [`DeviceEvent::AddressChanged`],
/// not as an Update: no lifetime refresh, nothing announced changed), the notification
/// is delivered, requests in flight to the old address fail
/// with RegistrationEnded and the next ones go to the new address.
#[test]
fn a_notification_from_a_new_address_moves_the_registration() {
    let mut sim = Sim::open();
    let (a, b) = (addr(9510), addr(9511));
    let location = sim.register(a, &["ep=d", "lt=300"]);
    sim.events();
    let bat = Lwm2mPath::resource(3, 0, 9);
    let token = observe_at(&mut sim, a, 1, "d", bat);
    sim.advance(Duration::from_secs(100));
    sim.out();
    sim.events();
    // A read to the old address, unanswered.
    sim.submit(2, "d", DeviceRequest::Read { path: bat });
    let out = sim.out();
    assert_eq!(out[0].0, a);
    sim.events();
    sim.send(b, &battery_notification(4000, &token, 2, 75));
    let out = sim.out();
    assert!(
        out.iter()
            .any(|(to, m)| *to == b && m.mtype == MsgType::Ack && m.mid == 4000),
        "acknowledged at the new address: {out:?}"
    );
    assert!(
        out.iter().all(|(_, m)| m.mtype != MsgType::Rst),
        "not reset: {out:?}"
    );
    let ev = sim.events();
    let ended = ev.iter().position(|e| {
        matches!(
            e,
            DeviceEvent::Response {
                op: OpId(2),
                result: Err(DeviceError::RegistrationEnded),
                ..
            }
        )
    });
    let updated = ev.iter().position(|e| {
        matches!(e, DeviceEvent::AddressChanged { registration, .. }
            if registration.address == Some(b) && registration.registration_id == location)
    });
    assert!(
        !ev.iter()
            .any(|e| matches!(e, DeviceEvent::RegistrationUpdated { .. })),
        "no Update came: {ev:?}"
    );
    let notified = ev.iter().position(|e| {
        *e == DeviceEvent::Notification {
            device: dev("d"),
            registration_id: location.clone(),
            path: bat,
            content: Content::single(bat, ResourceValue::Integer(75)),
        }
    });
    assert!(
        ended.is_some() && ended < updated && updated < notified,
        "{ev:?}"
    );
    assert_eq!(sim.server.registration(&dev("d")).unwrap().address, Some(b));
    // The next request goes to the new address.
    sim.submit(3, "d", DeviceRequest::Read { path: bat });
    let out = sim.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, b);
    // No lifetime refresh: the registration still expires 300 s + grace after the
    // Register (100 s ago), as without the notification.
    let grace = sim.server.config().lifetime_grace;
    sim.advance(Duration::from_secs(200) + grace - Duration::from_secs(1));
    assert!(sim.server.registration(&dev("d")).is_some());
    sim.advance(Duration::from_secs(2));
    assert!(sim.server.registration(&dev("d")).is_none());
}

/// A notification with a registration's token from an address another registration
/// holds moves the registration there (the token is the proof its device is there) and
/// displaces the holder, whose device is not there any more (NAT gave its port away, or
/// the two swapped): nothing of the holder's goes to the address until its device talks.
/// (Before, it got RST and ended the observation, and the holder kept the address, so its
/// requests went to this device: tests/change_review_42b.rs.)
#[test]
fn a_notification_from_another_registrations_address_moves_it_and_displaces_the_holder() {
    let mut sim = Sim::open();
    let (a, b) = (addr(9520), addr(9521));
    let location = sim.register(a, &["ep=d", "lt=300"]);
    sim.register(b, &["ep=e", "lt=300"]);
    sim.events();
    let bat = Lwm2mPath::resource(3, 0, 9);
    let token = observe_at(&mut sim, a, 1, "d", bat);
    sim.send(b, &battery_notification(4000, &token, 2, 75));
    let out = sim.out();
    assert!(out.iter().all(|(_, m)| m.mtype != MsgType::Rst), "{out:?}");
    let events = sim.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DeviceEvent::Notification { device, .. } if *device == dev("d"))),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DeviceEvent::ObservationEnded { .. })),
        "{events:?}"
    );
    assert_eq!(sim.server.observation_count(), 1);
    assert_eq!(sim.server.registration(&dev("d")).unwrap().address, Some(b));
    // e is displaced: a read of it waits (nothing goes to b, where d's device is).
    sim.submit(2, "e", DeviceRequest::Read { path: bat });
    let out = sim.out();
    assert!(out.is_empty(), "{out:?}");
    // d's requests go to b.
    sim.submit(3, "d", DeviceRequest::Read { path: bat });
    let out = sim.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, b);
    let _ = location;
}

/// Over DTLS the token is not enough: a notification from a new address follows the
/// registration only through a session of the identity it registered with. Another
/// identity (or none) is dropped unseen (as every answer through a stranger's session;
/// before `answer_from_stranger` judged it by the observation's registration, the CoAP
/// endpoint answered it with RST) and changes nothing: the device's observation at its
/// own address goes on.
#[test]
fn a_notification_from_a_new_address_over_dtls_needs_the_registrations_identity() {
    let mut sim = Sim::open();
    let (a, b, c) = (addr(9530), addr(9531), addr(9532));
    let ident = |device: &str| PeerIdentity {
        psk_identity: format!("{device}-id").into(),
        device: Some(dev(device)),
    };
    let d = ident("d");
    let p = sim.request(wire::POST, &["rd"], &["ep=d", "lt=300"], b"</3/0>");
    sim.server
        .handle_datagram_from(sim.now, a, Some(&d), &p.encode());
    assert_eq!(sim.out()[0].1.code, code(2, 1));
    sim.events();
    let bat = Lwm2mPath::resource(3, 0, 9);
    sim.submit(1, "d", DeviceRequest::Observe { path: bat });
    let req = sim.out()[0].1.clone();
    let mut r = Packet::new(MsgType::Ack, code(2, 5), req.mid, &req.token);
    r.add_uint(wire::OBSERVE, 1);
    r.payload = b"80".to_vec();
    sim.server
        .handle_datagram_from(sim.now, a, Some(&d), &r.encode());
    assert!(response(&sim.events(), 1).is_ok());
    for (who, mid) in [(Some(ident("e")), 4000), (None, 4001)] {
        let n = battery_notification(mid, &req.token, 2, 75);
        sim.server
            .handle_datagram_from(sim.now, b, who.as_ref(), &n.encode());
        let out = sim.out();
        assert!(out.is_empty(), "dropped unseen: {out:?}");
        assert!(sim.events().is_empty(), "{who:?}");
        assert_eq!(sim.server.observation_count(), 1);
        assert_eq!(sim.server.registration(&dev("d")).unwrap().address, Some(a));
    }
    // The registration's identity from a new session at a new address: followed.
    let n = battery_notification(4002, &req.token, 3, 74);
    sim.server
        .handle_datagram_from(sim.now, c, Some(&d), &n.encode());
    let out = sim.out();
    assert_eq!((out[0].0, out[0].1.mtype), (c, MsgType::Ack), "{out:?}");
    let ev = sim.events();
    assert!(
        ev.iter()
            .any(|e| matches!(e, DeviceEvent::Notification { .. })),
        "{ev:?}"
    );
    assert_eq!(sim.server.registration(&dev("d")).unwrap().address, Some(c));
    assert!(sim.server.may_send_to(c, Some(&d)));
}

/// Behind DTLS with NSTART 3: three requests (a Write, an Execute, a Read) go out at once
/// to a registration whose session the server believes up; the layer finds none and hands
/// each back (`Lwm2mServer::not_sent`), in the order they went. They wait in the queue in
/// their submission order (the Write still before the Execute) and go in that order when
/// a session comes up. Taken back again 500 s later (the session flapped), they keep the
/// deadline they got when first queued: they time out `queue_timeout` after submission,
/// not 500 s later. Before, each take-back pushed to the queue's head (the three came back
/// reversed) with a fresh `queue_timeout` (a flapping session kept a request alive
/// without limit).
#[cfg(feature = "dtls")]
#[test]
fn requests_taken_back_keep_their_order_and_their_first_deadline() {
    let config = ServerConfig {
        auto_provision: true,
        nstart: 3,
        coap: crate::coap::EndpointConfig {
            nstart: 3,
            ..ServerConfig::default().coap
        },
        ..ServerConfig::default()
    };
    let mut sim = Sim::new(config);
    sim.server = Lwm2mServer::with_seed(sim.server.config().clone(), 7).track_sessions();
    let a = addr(9200);
    let ident = PeerIdentity {
        psk_identity: "id-d".into(),
        device: Some(dev("d")),
    };
    let p = sim.request(wire::POST, &["rd"], &["ep=d"], b"</3/0>");
    sim.server
        .handle_datagram_from(sim.now, a, Some(&ident), &p.encode());
    assert_eq!(sim.out()[0].1.code, code(2, 1));
    sim.events();
    sim.server.session_changed(sim.now, a, Some(&ident));
    let t0 = sim.now;
    sim.submit(
        1,
        "d",
        DeviceRequest::Write {
            path: Lwm2mPath::resource(3, 0, 15),
            mode: WriteMode::Replace,
            content: Content::single(
                Lwm2mPath::resource(3, 0, 15),
                ResourceValue::String("Europe/Berlin".into()),
            ),
        },
    );
    sim.submit(
        2,
        "d",
        DeviceRequest::Execute {
            path: Lwm2mPath::resource(3, 0, 4),
            args: None,
        },
    );
    sim.submit(
        3,
        "d",
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 9),
        },
    );
    // The layer has no session: every first transmission comes back, in order.
    let take_back = |sim: &mut Sim| {
        let ts: Vec<Transmit> = std::iter::from_fn(|| sim.server.poll_transmit()).collect();
        assert_eq!(ts.len(), 3, "all three went at once (NSTART 3)");
        for t in &ts {
            sim.server.not_sent(sim.now, t, None);
        }
        let events = sim.events();
        assert!(events.is_empty(), "nothing reported sent: {events:?}");
    };
    take_back(&mut sim);
    // The session comes up 500 s later: the three go, in submission order.
    sim.advance(Duration::from_secs(500));
    sim.server.session_changed(sim.now, a, Some(&ident));
    let ts: Vec<Transmit> = std::iter::from_fn(|| sim.server.poll_transmit()).collect();
    let codes: Vec<u8> = ts
        .iter()
        .map(|t| Packet::decode(&t.payload).unwrap().code)
        .collect();
    assert_eq!(
        codes,
        [wire::PUT, wire::POST, wire::GET],
        "submission order"
    );
    // ... and it is gone again before they leave: taken back once more.
    for t in &ts {
        sim.server.not_sent(sim.now, t, None);
    }
    assert!(sim.events().is_empty());
    // Their deadline is still the one set at submission.
    let at = t0 + sim.server.config().queue_timeout + Duration::from_secs(1);
    sim.advance(at - sim.now);
    let timed_out: Vec<u64> = sim
        .events()
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::TimedOut { op, .. } => Some(op.0),
            _ => None,
        })
        .collect();
    assert_eq!(timed_out, [1, 2, 3]);
}

/// Two devices behind a NAT swap ports (`a` registered from `pa`, `b` from `pb`; now `a`
/// is at `pb` and `b` at `pa`) and both Register again under the default
/// `Takeover::ProbeOldAddress`. Each one's probe of its old address would be answered by
/// the other device; but a Register of another endpoint from the probed address shows the
/// address is no longer the old registration's: that registration is displaced, and its
/// device's Register is let in without a probe. Both get in, each at its new address.
/// Before, both were refused (5.03, then `AddressInUse`) while the other answered the
/// probe, until their registrations expired.
#[test]
fn two_devices_that_swapped_ports_both_register_again() {
    let mut sim = Sim::open();
    let (pa, pb) = (addr(9400), addr(9401));
    sim.register(pa, &["ep=a", "lt=300"]);
    sim.register(pb, &["ep=b", "lt=300"]);
    sim.events();
    // `a` registers from `pb`: `b`'s registration at `pb` is displaced, `a`'s old
    // address `pa` probed.
    let p = sim.request(wire::POST, &["rd"], &["ep=a"], b"</3/0>");
    sim.send(pb, &p);
    let out = sim.out();
    let answer = out.iter().find(|(to, _)| *to == pb).unwrap();
    assert_eq!(answer.1.code, code(5, 3));
    let probe = out.iter().find(|(to, _)| *to == pa).expect("a probe of pa");
    // `b`'s device, now at `pa`, answers the probe (any answer is one).
    sim.answer(pa, &probe.1.clone(), code(4, 4), None, b"");
    sim.out();
    // `b` registers from `pa`: let in at once (its old address is `a`'s now).
    sim.register(pa, &["ep=b", "lt=300"]);
    // `a` tries again from `pb`: let in, although `pa` answered its probe (`b` did).
    sim.register(pb, &["ep=a", "lt=300"]);
    assert_eq!(
        sim.server.registration(&dev("a")).unwrap().address,
        Some(pb)
    );
    assert_eq!(
        sim.server.registration(&dev("b")).unwrap().address,
        Some(pa)
    );
    let refused: Vec<DeviceEvent> = sim
        .events()
        .into_iter()
        .filter(|e| matches!(e, DeviceEvent::Rejected { .. }))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    // The impostor protection stays: a third party claiming `a` from a new address is
    // refused while `a`'s device answers at `pb`.
    let p = sim.request(wire::POST, &["rd"], &["ep=a"], b"</3/0>");
    sim.send(addr(9402), &p);
    let out = sim.out();
    assert_eq!(
        out.iter().find(|(to, _)| *to == addr(9402)).unwrap().1.code,
        code(5, 3)
    );
    let probe = out.iter().find(|(to, _)| *to == pb).expect("a probe of pb");
    sim.answer(pb, &probe.1.clone(), code(4, 4), None, b"");
    let p = sim.request(wire::POST, &["rd"], &["ep=a"], b"</3/0>");
    sim.send(addr(9402), &p);
    assert_eq!(sim.out()[0].1.code, code(4, 3));
    assert_eq!(
        sim.server.registration(&dev("a")).unwrap().address,
        Some(pb)
    );
}
