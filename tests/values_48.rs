//! What the hub writes must mean on the device what the service asked (stop 48).
//!
//! A write's values are checked against the target resources' types before anything is
//! sent, the same in every format: `-1` for an Unsigned Integer resource went out over TLV
//! as one byte the device read as 255; a float in an Integer resource as 8 bytes the
//! device read as an integer; an integer in a Float resource as 1 byte the device could
//! not read; a NaN went out in TLV and CBOR and was refused in text and JSON. And JSON
//! never stands `null` for a NaN. Sans-IO: the LwM2M server driven by hand.
#![cfg(feature = "lwm2m")]

mod server_sim;

use server_sim::{registered_pump, submit_write};
use std::time::Instant;
use twinhub::lwm2m::content::{ContentFormat as F, decode, standard_resource_type};
use twinhub::lwm2m::server::Lwm2mServer;
use twinhub::transport::{DeviceError, DeviceRequest, WriteMode};
use twinhub::{Content, Lwm2mPath, ResourceType as T, ResourceValue as V};

const INT: Lwm2mPath = Lwm2mPath::resource(1000, 0, 1);
const UINT: Lwm2mPath = Lwm2mPath::resource(1000, 0, 2);
const FLOAT: Lwm2mPath = Lwm2mPath::resource(1000, 0, 3);
const TIME: Lwm2mPath = Lwm2mPath::resource(1000, 0, 4);
const OPAQUE: Lwm2mPath = Lwm2mPath::resource(1000, 0, 5);
const STRING: Lwm2mPath = Lwm2mPath::resource(1000, 0, 6);
const EXEC: Lwm2mPath = Lwm2mPath::resource(1000, 0, 7);
const BOOL: Lwm2mPath = Lwm2mPath::resource(1000, 0, 8);

/// Object 1000's types, then the standard objects'.
fn types(p: &Lwm2mPath) -> Option<T> {
    match p.ids() {
        [1000, _, 1, ..] => Some(T::Integer),
        [1000, _, 2, ..] => Some(T::UnsignedInteger),
        [1000, _, 3, ..] => Some(T::Float),
        [1000, _, 4, ..] => Some(T::Time),
        [1000, _, 5, ..] => Some(T::Opaque),
        [1000, _, 6, ..] => Some(T::String),
        [1000, _, 7, ..] => Some(T::None),
        [1000, _, 8, ..] => Some(T::Boolean),
        _ => standard_resource_type(p),
    }
}

/// The formats of a several-value write, with the `ct` a device announces for each.
const MULTI: [(F, &str); 4] = [
    (F::Tlv, "ct=11542"),
    (F::SenmlJson, "ct=110"),
    (F::SenmlCbor, "ct=112"),
    (F::Lwm2mCbor, "ct=11544"),
];

/// A server with object 1000's types and a device `pump` that announced `ct`.
fn registered(ct: &str) -> (Lwm2mServer, Instant) {
    registered_pump(server_sim::server().with_types(Box::new(types)), ct)
}

fn instance_write(content: Content) -> DeviceRequest {
    DeviceRequest::Write {
        path: Lwm2mPath::instance(1000, 0),
        mode: WriteMode::PartialUpdate,
        content,
    }
}

/// What the device reads from the write `m` (decoded with the same types).
fn device_reads(m: &twinhub::coap::Message, base: &Lwm2mPath) -> Content {
    let f = F::from_code(m.content_format().unwrap().0).unwrap();
    decode(f, &m.payload, base, &types).unwrap()
}

fn refused(result: Option<Result<(), DeviceError>>, what: &str) -> String {
    match result {
        Some(Err(DeviceError::BadPayload(why))) => {
            assert!(why.contains(what), "{why}");
            why
        }
        other => panic!("refused with {what}: {other:?}"),
    }
}

/// Values of a numeric kind that their resource's type cannot hold are refused before
/// anything is sent, in every several-value format and in text; before the fix TLV sent
/// `-1` for an unsigned resource as the byte 0xff, which the device read as 255.
#[test]
fn out_of_range_writes_are_refused_before_anything_is_sent() {
    let base = Lwm2mPath::instance(1000, 0);
    let cases = [
        (UINT, V::Integer(-1), "out of range"),
        (UINT, V::Time(-1), "out of range"),
        (INT, V::UnsignedInteger(i64::MAX as u64 + 1), "out of range"),
        (TIME, V::UnsignedInteger(u64::MAX), "out of range"),
        (FLOAT, V::Integer((1 << 53) + 1), "out of range"),
        (INT, V::Float(2.0), "does not match"),
        (INT, V::Float(2.5), "does not match"),
        (UINT, V::Boolean(true), "does not match"),
        (OPAQUE, V::String("aGk=".into()), "does not match"),
        (STRING, V::Opaque(b"hi".to_vec()), "does not match"),
        (EXEC, V::Integer(1), "does not match"),
        (BOOL, V::Integer(2), "does not match"),
        (BOOL, V::String("1".into()), "does not match"),
        (STRING, V::Boolean(true), "does not match"),
    ];
    for (format, ct) in MULTI {
        for (path, value, what) in &cases {
            let (mut s, now) = registered(ct);
            // With a good value beside it: the whole write is refused.
            let content = Content {
                values: vec![(STRING, V::String("ok".into())), (*path, value.clone())],
            };
            let (sent, result) = submit_write(&mut s, now, instance_write(content));
            let why = refused(result, what);
            assert!(
                sent.is_none(),
                "{format:?} {path} {value:?} ({why}) went out as {:?}",
                sent.map(|m| device_reads(&m, &base))
            );
        }
    }
    // One value at the resource goes as text: refused there too.
    for (path, value, what) in &cases {
        let (mut s, now) = registered("ct=11542");
        let (sent, result) = submit_write(
            &mut s,
            now,
            DeviceRequest::Write {
                path: *path,
                mode: WriteMode::Replace,
                content: Content::single(*path, value.clone()),
            },
        );
        refused(result, what);
        assert!(sent.is_none(), "{path} {value:?}: {sent:?}");
    }
}

/// Values that fit go out in the resource's type, and the device reads what was asked:
/// an integer in an unsigned, time or float resource, a time in an integer one.
#[test]
fn values_that_fit_reach_the_device_in_the_resource_type() {
    let base = Lwm2mPath::instance(1000, 0);
    let content = Content {
        values: vec![
            (INT, V::Time(-7)),
            (UINT, V::Integer(255)),
            (FLOAT, V::Integer(-(1 << 53))),
            (TIME, V::UnsignedInteger(1_700_000_000)),
            (STRING, V::UnsignedInteger(u64::MAX)),
            (BOOL, V::Integer(1)),
        ],
    };
    let expected = Content {
        values: vec![
            (INT, V::Integer(-7)),
            (UINT, V::UnsignedInteger(255)),
            (FLOAT, V::Float(-9_007_199_254_740_992.0)),
            (TIME, V::Time(1_700_000_000)),
            (STRING, V::String("18446744073709551615".into())),
            (BOOL, V::Boolean(true)),
        ],
    };
    for (format, ct) in MULTI {
        let (mut s, now) = registered(ct);
        let (sent, result) = submit_write(&mut s, now, instance_write(content.clone()));
        assert_eq!(result, None, "{format:?}: answered before the device");
        let m = sent.unwrap_or_else(|| panic!("{format:?}: nothing sent"));
        let mut got = device_reads(&m, &base);
        got.values.sort_by_key(|(p, _)| *p);
        assert_eq!(got, expected, "{format:?}");
    }
}

/// A NaN or infinity in a write is refused before anything is sent, the same in every
/// format (TLV and the CBOR formats used to send it, text and JSON refused it).
#[test]
fn non_finite_floats_are_refused_in_every_format() {
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for (format, ct) in MULTI {
            let (mut s, now) = registered(ct);
            let content = Content {
                values: vec![(INT, V::Integer(1)), (FLOAT, V::Float(x))],
            };
            let (sent, result) = submit_write(&mut s, now, instance_write(content));
            refused(result, "cannot be encoded");
            assert!(sent.is_none(), "{format:?} {x}");
            // Composite write (SenML), and a resource whose type nobody knows.
            let (mut s, now) = registered(ct);
            let unknown = Lwm2mPath::resource(3303, 0, 5700);
            let (sent, result) = submit_write(
                &mut s,
                now,
                DeviceRequest::WriteComposite {
                    content: Content::single(unknown, V::Float(x)),
                },
            );
            refused(result, "cannot be encoded");
            assert!(sent.is_none(), "composite {format:?} {x}");
        }
    }
}

/// JSON has no NaN: a value's JSON form refuses it rather than writing `null` (which read
/// back as no float at all, or as "no value" in a twin).
#[test]
fn json_never_stands_null_for_a_nan() {
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = serde_json::to_string(&V::Float(x)).unwrap_err().to_string();
        assert!(err.contains("finite"), "{err}");
        assert_eq!(V::Float(x).to_json(), None);
    }
    assert_eq!(
        serde_json::to_string(&V::Float(-0.0)).unwrap(),
        r#"{"type":"float","value":-0.0}"#
    );
    assert_eq!(V::Float(1e300).to_json(), Some(serde_json::json!(1e300)));
}

/// LWM2M text gives a Float as a decimal number (OMA TS 1.1 Core, Appendix C): the server
/// writes one without an exponent (Rust's shortest round-trip digits, at most about 330
/// characters: `1e300` is 301 digits, `5e-324` a 0.000… of 326 characters), and the
/// device, decoding as the device library does, reads back the same bits. An exponent
/// (`1.0E300`, as Leshan's `Double.toString` writes) is read too. Passed before #48: it
/// pins the choice.
#[test]
fn text_floats_are_plain_decimals_that_keep_their_bits() {
    for x in [
        1e300,
        -1e300,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        -0.0,
        0.1,
        2.0,
    ] {
        let (mut s, now) = registered("ct=11542");
        let (sent, result) = submit_write(
            &mut s,
            now,
            DeviceRequest::Write {
                path: FLOAT,
                mode: WriteMode::Replace,
                content: Content::single(FLOAT, V::Float(x)),
            },
        );
        assert_eq!(result, None, "{x}");
        let m = sent.unwrap();
        assert_eq!(m.content_format().map(|f| f.0), Some(0), "{x}: text");
        let text = std::str::from_utf8(&m.payload).unwrap();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-'),
            "{x}: {text}"
        );
        assert!(text.len() <= 330, "{x}: {} characters", text.len());
        match device_reads(&m, &FLOAT).values.as_slice() {
            [(p, V::Float(y))] if *p == FLOAT => assert_eq!(y.to_bits(), x.to_bits(), "{text}"),
            other => panic!("{x}: {other:?}"),
        }
    }
    for (text, x) in [
        ("1.0E300", 1e300),
        ("-2.5e-3", -0.0025),
        ("4.9E-324", 5e-324),
    ] {
        let c = decode(F::Text, text.as_bytes(), &FLOAT, &types).unwrap();
        assert_eq!(c.values, vec![(FLOAT, V::Float(x))], "{text}");
    }
}

/// Hostile pass: a threshold attribute is a plain decimal in a Uri-Query item, which RFC
/// 7252 §5.10 bounds at 255 bytes; `gt=1e300` was sent as an item of 304 bytes. Now
/// refused (4.00-like `BadRequest`, nothing sent); thresholds that fit go exactly.
#[test]
fn threshold_attributes_that_do_not_fit_a_uri_query_are_refused() {
    use twinhub::transport::NotificationAttributes;
    let attrs = |gt: f64| DeviceRequest::WriteAttributes {
        path: FLOAT,
        attributes: NotificationAttributes {
            gt: Some(gt),
            ..NotificationAttributes::default()
        },
    };
    for gt in [1e300, -1e300, 5e-324] {
        let (mut s, now) = registered("ct=11542");
        let (sent, result) = submit_write(&mut s, now, attrs(gt));
        assert_eq!(result, Some(Err(DeviceError::BadRequest)), "{gt}");
        assert!(sent.is_none(), "{gt}: {sent:?}");
    }
    for gt in [1e200, 0.1, -21.5] {
        let (mut s, now) = registered("ct=11542");
        let (sent, result) = submit_write(&mut s, now, attrs(gt));
        assert_eq!(result, None, "{gt}");
        let m = sent.unwrap_or_else(|| panic!("{gt}: nothing sent"));
        let q: Vec<&str> = m.uri_query().collect();
        let [item] = q.as_slice() else {
            panic!("{q:?}")
        };
        let v = item.strip_prefix("gt=").unwrap();
        assert!(!v.contains(['e', 'E']), "{v}");
        assert_eq!(v.parse::<f64>().unwrap().to_bits(), gt.to_bits());
    }
}
