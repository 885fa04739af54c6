//! The device library sends every value as its resource's declared type, in every content
//! format it speaks, and refuses a value that does not fit: a Write of 3.5 to an Integer
//! resource is 4.00 with nothing written, a value the application sets is refused at set
//! time with a typed error, and a value a read callback hands over that does not fit
//! fails the read (5.00) rather than reach the hub as a Float. Sans-IO, a scripted server.
#![cfg(all(feature = "device", feature = "lwm2m"))]

mod client_support;

use client_support::{Harness, SERVER};
use std::sync::{Arc, Mutex};
use twinhub::coap::{Code, ContentFormat as Cf, Message};
use twinhub::lwm2m::client::{
    Access, ClientError, ObjectDef, ObjectError, ObjectTree, ResourceData, ResourceDef,
    ValueObject, objects,
};
use twinhub::lwm2m::content::{self, ContentFormat};
use twinhub::{Content, Lwm2mPath, ResourceType, ResourceValue as V};

/// The formats the client answers reads in and takes writes in.
const FORMATS: [ContentFormat; 5] = [
    ContentFormat::Text,
    ContentFormat::Tlv,
    ContentFormat::SenmlJson,
    ContentFormat::SenmlCbor,
    ContentFormat::Lwm2mCbor,
];

const COUNT: Lwm2mPath = Lwm2mPath::resource(9001, 0, 0);
const LEVEL: Lwm2mPath = Lwm2mPath::resource(9001, 0, 1);

/// Object 9001: a writable Integer (0) and an Integer read through a callback (1) that
/// hands over whatever `held` holds.
fn registered(held: Arc<Mutex<V>>) -> Harness {
    let mut t = ObjectTree::new();
    t.add(objects::security(&format!("coap://{SERVER}"), 1));
    t.add(objects::server(1, 300, "U"));
    t.add(objects::device("Contoso", "MX1", "SN-42", "1.0.0"));
    t.add(
        ValueObject::new(ObjectDef::new(
            9001,
            "Counter",
            false,
            vec![
                ResourceDef::new(0, "Count", ResourceType::Integer, Access::ReadWrite),
                ResourceDef::new(1, "Level", ResourceType::Integer, Access::Read),
            ],
        ))
        .with_value(0, 0, V::Integer(1))
        .on_read(1, move |_| {
            Ok(ResourceData::Single(held.lock().unwrap().clone()))
        }),
    );
    Harness::registered_with(t)
}

fn read(h: &mut Harness, path: &Lwm2mPath, format: ContentFormat) -> Message {
    h.get(&path.to_string(), Some(format.code()))
}

#[test]
fn a_fractional_write_to_an_integer_resource_is_refused_in_every_typed_format() {
    let mut h = registered(Arc::new(Mutex::new(V::Integer(0))));
    // TLV carries no types: 3.5's eight bytes are an eight-byte integer there, so only the
    // formats that say "this is a float" can be refused.
    for format in [
        ContentFormat::Text,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
        ContentFormat::Lwm2mCbor,
    ] {
        let body = content::encode(format, &COUNT, &Content::single(COUNT, V::Float(3.5))).unwrap();
        let mut m = Message::request(Code::PUT, &COUNT.to_string());
        m.set_content_format(Cf(format.code()));
        m.payload = body;
        let r = h.request(m);
        assert_eq!(r.code, Code::BAD_REQUEST, "{format:?}");
        let now = read(&mut h, &COUNT, ContentFormat::Text);
        assert_eq!(now.payload, b"1", "{format:?}: nothing written");
    }
    // A whole number written as a float fits, and is held as an integer.
    let body = content::encode(
        ContentFormat::SenmlJson,
        &COUNT,
        &Content::single(COUNT, V::Float(4.0)),
    )
    .unwrap();
    let mut m = Message::request(Code::PUT, &COUNT.to_string());
    m.set_content_format(Cf(ContentFormat::SenmlJson.code()));
    m.payload = body;
    assert_eq!(h.request(m).code, Code::CHANGED);
    for format in FORMATS {
        let r = read(&mut h, &COUNT, format);
        let integer = content::encode(format, &COUNT, &Content::single(COUNT, V::Integer(4)));
        assert_eq!(Ok(r.payload), integer, "{format:?}");
    }
}

#[test]
fn an_application_value_is_sent_as_the_declared_type_or_refused() {
    let held = Arc::new(Mutex::new(V::Float(7.0)));
    let mut h = registered(held.clone());
    // Set through the client: refused at set time, with the type it wanted.
    assert!(matches!(
        h.client.set_value(&COUNT, V::Float(3.5)),
        Err(ClientError::Object(ObjectError::TypeMismatch {
            expected: ResourceType::Integer
        }))
    ));
    // A read callback's whole float goes out as an integer in every format.
    for format in FORMATS {
        let r = read(&mut h, &LEVEL, format);
        assert_eq!(r.code, Code::CONTENT, "{format:?}");
        let integer = content::encode(format, &LEVEL, &Content::single(LEVEL, V::Integer(7)));
        assert_eq!(Ok(r.payload), integer, "{format:?}");
    }
    // A fractional one cannot be an Integer: the read fails rather than send a Float,
    // alone and in an instance read.
    *held.lock().unwrap() = V::Float(7.5);
    for format in FORMATS {
        let r = read(&mut h, &LEVEL, format);
        assert_eq!(r.code, Code::INTERNAL_SERVER_ERROR, "{format:?}");
    }
    let r = read(
        &mut h,
        &Lwm2mPath::instance(9001, 0),
        ContentFormat::SenmlJson,
    );
    assert_eq!(r.code, Code::INTERNAL_SERVER_ERROR);
}

const TYPED: u16 = 9002;

/// Object 9002: one writable resource of every LWM2M type (0 Integer, 1 Unsigned Integer,
/// 2 Float, 3 Time, 4 Boolean, 5 String, 6 Opaque, 7 Objlnk), each write callback
/// recording what it was handed.
fn typed_device(seen: Arc<Mutex<Vec<(u16, ResourceData)>>>) -> Harness {
    let kinds = [
        ResourceType::Integer,
        ResourceType::UnsignedInteger,
        ResourceType::Float,
        ResourceType::Time,
        ResourceType::Boolean,
        ResourceType::String,
        ResourceType::Opaque,
        ResourceType::ObjectLink,
    ];
    let defs = kinds
        .iter()
        .enumerate()
        .map(|(rid, k)| ResourceDef::new(rid as u16, "r", *k, Access::ReadWrite))
        .collect();
    let mut object = ValueObject::new(ObjectDef::new(TYPED, "Typed", false, defs)).with_instance(0);
    for rid in 0..kinds.len() as u16 {
        let seen = seen.clone();
        object = object.on_write(rid, move |_, data| {
            seen.lock().unwrap().push((rid, data.clone()));
            Ok(())
        });
    }
    let mut t = ObjectTree::new();
    t.add(objects::security(&format!("coap://{SERVER}"), 1));
    t.add(objects::server(1, 300, "U"));
    t.add(objects::device("Contoso", "MX1", "SN-42", "1.0.0"));
    t.add(object);
    Harness::registered_with(t)
}

fn put(h: &mut Harness, path: &Lwm2mPath, format: u16, body: Vec<u8>) -> Code {
    let mut m = Message::request(Code::PUT, &path.to_string());
    m.set_content_format(Cf(format));
    m.payload = body;
    h.request(m).code
}

/// Checks: the same value written in every content format the client takes (text, TLV,
/// SenML JSON and CBOR, LwM2M CBOR, each as the crate's encoder writes it) reaches the
/// write callback as the same typed value, at the edges of each type's range; the opaque
/// format carries an Opaque resource's bytes.
/// Before the fix: bytes written in text to an Opaque resource reached the callback as
/// the text's own bytes ("AP8H"), not the base64 they are in text (LWM2M 1.1 Appendix C;
/// the crate's own encoder and Leshan write them so), unlike in every other format.
#[test]
fn every_format_hands_a_write_callback_the_same_typed_value() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut h = typed_device(seen.clone());
    let r = |rid| Lwm2mPath::resource(TYPED, 0, rid);
    let good: Vec<(u16, V)> = vec![
        (0, V::Integer(i64::MIN)),
        (0, V::Integer(-1)),
        (0, V::Integer(i64::MAX)),
        (1, V::UnsignedInteger(0)),
        (1, V::UnsignedInteger(255)),
        (1, V::UnsignedInteger(65_535)),
        (1, V::UnsignedInteger(u64::from(u32::MAX))),
        (1, V::UnsignedInteger(u64::MAX)),
        (2, V::Float(-2.5)),
        (2, V::Float(1.0e300)),
        (3, V::Time(-1)),
        (3, V::Time(1_700_000_000)),
        (4, V::Boolean(true)),
        (4, V::Boolean(false)),
        (5, V::String("héllo".into())),
        (6, V::Opaque(vec![0, 0xff, 7])),
        (7, V::ObjectLink(3, 65_535)),
    ];
    let mut wrong = Vec::new();
    for (rid, value) in &good {
        for format in FORMATS {
            let body = content::encode(format, &r(*rid), &Content::single(r(*rid), value.clone()))
                .unwrap();
            let code = put(&mut h, &r(*rid), format.code(), body);
            let got = seen.lock().unwrap().pop();
            if code != Code::CHANGED || got != Some((*rid, ResourceData::Single(value.clone()))) {
                wrong.push(format!("{value:?} as {format:?}: {code:?}, handed {got:?}"));
            }
        }
    }
    // Opaque (42): an Opaque resource's bytes as they are.
    let code = put(&mut h, &r(6), 42, vec![1, 2, 0xff]);
    let got = seen.lock().unwrap().pop();
    if code != Code::CHANGED || got != Some((6, ResourceData::Single(V::Opaque(vec![1, 2, 0xff]))))
    {
        wrong.push(format!("opaque bytes as Opaque: {code:?}, handed {got:?}"));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Checks: what does not fit the declared type is 4.00 in every format that can say so,
/// with the callback not called (TLV carries no types: its bytes of one type are bytes of
/// another, so it is left out), and opaque (42) content is 4.00 for any resource but an
/// Opaque one. (A SenML string is read as the value's text form, as text is: "12" is an
/// Integer in both, "twelve" in neither.)
/// Before the fix: opaque bytes were taken for any resource, read as the TLV encoding of
/// its type (`0x01` became Integer 1, Time 1, Boolean true, the string "\u{1}").
#[test]
fn a_value_that_does_not_fit_is_refused_alike_in_every_format() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut h = typed_device(seen.clone());
    let r = |rid| Lwm2mPath::resource(TYPED, 0, rid);
    let bad: Vec<(u16, V)> = vec![
        (0, V::Float(3.5)),
        (0, V::UnsignedInteger(u64::MAX)),
        (1, V::Integer(-1)),
        (1, V::Float(2.5)),
        (3, V::Float(0.5)),
        (4, V::Integer(2)),
        (7, V::String("3".into())),
        (2, V::String("warm".into())),
        (0, V::String("twelve".into())),
    ];
    let mut wrong = Vec::new();
    for (rid, value) in &bad {
        for format in FORMATS {
            let Ok(body) =
                content::encode(format, &r(*rid), &Content::single(r(*rid), value.clone()))
            else {
                continue;
            };
            if format == ContentFormat::Tlv {
                continue;
            }
            let code = put(&mut h, &r(*rid), format.code(), body);
            let got = seen.lock().unwrap().pop();
            if code != Code::BAD_REQUEST || got.is_some() {
                wrong.push(format!(
                    "{value:?} to /{TYPED}/0/{rid} as {format:?}: {code:?}, handed {got:?}"
                ));
            }
        }
    }
    for rid in [0, 1, 2, 3, 4, 5, 7] {
        let code = put(&mut h, &r(rid), 42, vec![1]);
        let got = seen.lock().unwrap().pop();
        if code != Code::BAD_REQUEST || got.is_some() {
            wrong.push(format!(
                "opaque bytes to /{TYPED}/0/{rid}: {code:?}, handed {got:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
