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
