//! `client_requests`: arbitrary CoAP requests to a registered client with the standard
//! objects. It must never panic, every datagram it sends must decode, and the object tree
//! must keep its invariants (checked after every step).
//!
//! Input: a sequence of steps, each `[kind, len_hi, len_lo, bytes[len]]`. `kind` even: the
//! bytes are one raw datagram from the server. `kind` odd: the bytes describe a request
//! built from small tables of methods, paths, formats, options and payloads, so the fuzzer
//! reaches the DM logic instead of the CoAP decoder. `kind % 16 == 15`: advance the clock
//! and let the application change a value.

use crate::coap::{BlockOption, Code, ContentFormat, Message, MessageType};
use crate::lwm2m::client::{Access, ObjectDef, ResourceDef};
use crate::lwm2m::client::{
    ClientConfig, FirmwareUpdate, Lwm2mClient, ObjectTree, ResourceData, ValueObject, objects,
};
use crate::{Lwm2mPath, ResourceType, ResourceValue};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const IDS: [u16; 12] = [0, 1, 3, 5, 10241, 3303, 2, 4, 9, 11, 0, 65534];
const FORMATS: [Option<u16>; 10] = [
    None,
    Some(0),
    Some(42),
    Some(110),
    Some(11542),
    Some(1541),
    Some(1543),
    Some(40),
    Some(60),
    Some(11543),
];

fn tree() -> ObjectTree {
    let mut t = ObjectTree::new();
    t.add(objects::security("coap://127.0.0.1:5683", 1));
    t.add(objects::server(1, 300, "U"));
    t.add(objects::device("f", "m", "s", "1").with_value(0, 9, ResourceValue::Integer(50)));
    t.set_firmware(FirmwareUpdate::new().max_package(64 * 1024));
    t.add(objects::config().on_validate(2, |_, d| match d {
        ResourceData::Single(ResourceValue::String(s)) if s.len() < 100 => Ok(()),
        _ => Err(crate::lwm2m::client::ObjectError::Rejected),
    }));
    t.add(
        ValueObject::new(ObjectDef::new(
            3303,
            "t",
            true,
            vec![
                ResourceDef::new(5700, "v", ResourceType::Float, Access::Read),
                ResourceDef::multiple(11, "l", ResourceType::Integer, Access::ReadWrite),
                ResourceDef::new(4, "o", ResourceType::ObjectLink, Access::ReadWrite),
            ],
        ))
        .creatable(true, 8)
        .with_value(0, 5700, ResourceValue::Float(1.5)),
    );
    t
}

fn structured(b: &[u8], mid: u16) -> Message {
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let code = [
        Code::GET,
        Code::PUT,
        Code::POST,
        Code::DELETE,
        Code::FETCH,
        Code::IPATCH,
    ][at(0) as usize % 6];
    let mtype = if at(1) & 0x80 != 0 {
        MessageType::NonConfirmable
    } else {
        MessageType::Confirmable
    };
    let mut m = Message::new(mtype, code, mid);
    m.set_token(&[at(1) & 0x0f, at(2)]);
    let depth = at(1) as usize % 5;
    for i in 0..depth {
        let v = at(3 + i);
        let id = if v & 0x80 != 0 {
            (v & 0x7f) as u16
        } else {
            IDS[v as usize % IDS.len()]
        };
        let id = if i == 2 && v & 0x40 != 0 { 5700 } else { id };
        m.add_uri_path(&id.to_string());
    }
    let opts = at(8);
    if let Some(cf) = FORMATS[at(9) as usize % FORMATS.len()] {
        if opts & 1 != 0 {
            m.set_accept(ContentFormat(cf));
        } else {
            m.set_content_format(ContentFormat(cf));
        }
    }
    if opts & 2 != 0 {
        m.set_observe((opts >> 2) as u32 & 1);
    }
    if opts & 8 != 0
        && let Some(b1) = BlockOption::new(at(10) as u32 % 4, at(10) & 0x10 != 0, at(11) % 7)
    {
        m.set_block1(b1);
    }
    if opts & 16 != 0
        && let Some(b2) = BlockOption::new(at(10) as u32 % 4, false, at(11) % 7)
    {
        m.set_block2(b2);
    }
    if opts & 32 != 0 {
        let q = [
            "pmin=1", "pmax=5", "gt=3", "lt=1", "st=0.5", "pmin", "x=1", "epmin=2",
        ];
        m.add_uri_query(q[at(12) as usize % q.len()]);
        m.add_uri_query(q[at(13) as usize % q.len()]);
    }
    m.payload = b.get(14..).unwrap_or(&[]).to_vec();
    m
}

/// The fuzz body.
pub fn client_requests(data: &[u8]) {
    let server: SocketAddr = "127.0.0.1:5683".parse().expect("literal address");
    let mut now = Instant::now();
    let mut config = ClientConfig::new("fuzz", server);
    config.max_body = 64 * 1024;
    // Half the inputs notify confirmably (retransmitted until acknowledged).
    config.confirmable_notifications = data.first().is_some_and(|b| b & 0x80 != 0);
    let mut client = Lwm2mClient::new(now, config, tree());
    client.handle_timeout(now);
    // Register.
    let reg = client.poll_transmit().expect("register goes out");
    let reg = Message::decode(&reg.payload).expect("register decodes");
    let mut ok = Message::new(MessageType::Acknowledgement, Code::CREATED, reg.message_id);
    ok.with_token(reg.token());
    ok.add_location_path("rd");
    ok.add_location_path("1");
    client.handle_datagram(now, server, &ok.to_bytes().expect("encodes"));
    assert!(client.is_registered());

    let mut rest = data;
    let mut mid = 1u16;
    let mut steps = 0;
    while rest.len() >= 3 && steps < 64 {
        steps += 1;
        let kind = rest[0];
        let len = (u16::from_be_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        mid = mid.wrapping_add(1);
        if kind % 16 == 15 {
            now += Duration::from_secs(bytes.first().copied().unwrap_or(1) as u64);
            let v = bytes.get(1).copied().unwrap_or(0) as i64;
            let _ = client.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(v));
            let _ = client.set_value(
                &Lwm2mPath::resource(3303, 0, 5700),
                ResourceValue::Float(v as f64),
            );
            client.handle_timeout(now);
        } else if kind.is_multiple_of(2) {
            client.handle_datagram(now, server, bytes);
        } else {
            let m = structured(bytes, mid);
            if let Ok(wire) = m.to_bytes() {
                client.handle_datagram(now, server, &wire);
            }
        }
        while let Some(t) = client.poll_transmit() {
            assert!(
                Message::decode(&t.payload).is_ok(),
                "the client sent an undecodable datagram"
            );
        }
        while client.poll_event().is_some() {}
        if let Err(e) = client.objects_mut().check_invariants() {
            panic!("object tree corrupted: {e}");
        }
        assert!(client.observation_count() <= client.config().max_observations);
        // One an observation, plus the final notifications of ended ones (bounded too).
        assert!(
            client.unacknowledged_notifications()
                <= client.observation_count() + client.config().max_observations
        );
        assert!(client.attributes().len() <= crate::lwm2m::client::MAX_ATTRIBUTE_PATHS);
        // One confirmable notification outstanding at most (RFC 7641 §4.5.1), and one
        // whenever any waits for its turn: a waiting one is never stranded.
        let (on_wire, waiting) = client.notification_queue();
        assert!(on_wire <= 1, "{on_wire} notifications outstanding");
        assert!(
            waiting == 0 || on_wire == 1,
            "{waiting} wait with none outstanding"
        );
    }
}
