use super::*;
use crate::lwm2m::ResourceValue as V;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

fn std_types(p: &Lwm2mPath) -> Option<ResourceType> {
    standard_resource_type(p)
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The Device object instance example of the LWM2M 1.0 TS (§6.4.3.1, TLV of `/3/0`).
const DEVICE_TLV: &str = "C8 00 14 4F 70 65 6E 20 4D 6F 62 69 6C 65 20 41 6C 6C 69 61 6E 63 65
    C8 01 16 4C 69 67 68 74 77 65 69 67 68 74 20 4D 32 4D 20 43 6C 69 65 6E 74
    C8 02 09 33 34 35 30 30 30 31 32 33
    C3 03 31 2E 30
    86 06 41 00 01 41 01 05
    88 07 08 42 00 0E D8 42 01 13 88
    87 08 41 00 7D 42 01 03 84
    C1 09 64
    C1 0A 0F
    83 0B 41 00 00
    C4 0D 51 82 42 8F
    C6 0E 2B 30 32 3A 30 30
    C1 10 55";

fn device_content() -> Content {
    let r = |rid| Lwm2mPath::resource(3, 0, rid);
    let ri = |rid, riid| Lwm2mPath::resource_instance(3, 0, rid, riid);
    Content {
        values: vec![
            (r(0), V::String("Open Mobile Alliance".into())),
            (r(1), V::String("Lightweight M2M Client".into())),
            (r(2), V::String("345000123".into())),
            (r(3), V::String("1.0".into())),
            (ri(6, 0), V::Integer(1)),
            (ri(6, 1), V::Integer(5)),
            (ri(7, 0), V::Integer(3800)),
            (ri(7, 1), V::Integer(5000)),
            (ri(8, 0), V::Integer(125)),
            (ri(8, 1), V::Integer(900)),
            (r(9), V::Integer(100)),
            (r(10), V::Integer(15)),
            (ri(11, 0), V::Integer(0)),
            (r(13), V::Time(1367491215)),
            (r(14), V::String("+02:00".into())),
            (r(16), V::String("U".into())),
        ],
    }
}

#[test]
fn tlv_spec_device_instance_decodes() {
    let base = Lwm2mPath::instance(3, 0);
    let c = decode(ContentFormat::Tlv, &hex(DEVICE_TLV), &base, &std_types).unwrap();
    assert_eq!(c, device_content());
    // The encoder produces the spec's bytes exactly (shortest integers, sorted ids).
    assert_eq!(
        encode(ContentFormat::Tlv, &base, &c).unwrap(),
        hex(DEVICE_TLV)
    );
}

#[test]
fn tlv_object_level_wraps_instances() {
    let base = Lwm2mPath::object(3);
    let bytes = encode(ContentFormat::OldTlv, &base, &device_content()).unwrap();
    // One object-instance entry (id 0) with an 8-bit length holding the instance body.
    assert_eq!(bytes[0], 0b0000_1000);
    assert_eq!(bytes[1], 0);
    let inner = hex(DEVICE_TLV);
    assert_eq!(bytes[2] as usize, inner.len());
    assert_eq!(&bytes[3..], &inner[..]);
    let back = decode(ContentFormat::OldTlv, &bytes, &base, &std_types).unwrap();
    assert_eq!(back, device_content());
    // An instance read wrapped in its own object-instance entry is tolerated.
    let c = decode(
        ContentFormat::Tlv,
        &bytes,
        &Lwm2mPath::instance(3, 0),
        &std_types,
    )
    .unwrap();
    assert_eq!(c, device_content());
    // ... but not under another instance id.
    let e = decode(
        ContentFormat::Tlv,
        &bytes,
        &Lwm2mPath::instance(3, 1),
        &std_types,
    );
    assert!(
        matches!(e, Err(ContentError::UnexpectedEntry { .. })),
        "{e:?}"
    );
}

#[test]
fn tlv_single_resource_and_instances() {
    let p = Lwm2mPath::resource(3, 0, 9);
    let c = decode(ContentFormat::Tlv, &hex("C1 09 64"), &p, &std_types).unwrap();
    assert_eq!(c, Content::single(p, V::Integer(100)));
    // Wrong resource id for the request path.
    assert!(decode(ContentFormat::Tlv, &hex("C1 0A 64"), &p, &std_types).is_err());
    let p7 = Lwm2mPath::resource(3, 0, 7);
    let multi = hex("88 07 08 42 00 0E D8 42 01 13 88");
    let c = decode(ContentFormat::Tlv, &multi, &p7, &std_types).unwrap();
    assert_eq!(c.values.len(), 2);
    assert_eq!(c.get(&p7.child(1).unwrap()), Some(&V::Integer(5000)));
    // Bare resource instances under a resource path.
    let c2 = decode(
        ContentFormat::Tlv,
        &hex("42 00 0E D8 42 01 13 88"),
        &p7,
        &std_types,
    )
    .unwrap();
    assert_eq!(c, c2);
    // One resource instance.
    let ri = Lwm2mPath::resource_instance(3, 0, 7, 1);
    let c3 = decode(ContentFormat::Tlv, &hex("42 01 13 88"), &ri, &std_types).unwrap();
    assert_eq!(c3, Content::single(ri, V::Integer(5000)));
    assert_eq!(
        encode(ContentFormat::Tlv, &ri, &c3).unwrap(),
        hex("42 01 13 88")
    );
}

#[test]
fn tlv_value_widths_and_types() {
    let ty = |t: ResourceType| move |_: &Lwm2mPath| Some(t);
    let p = Lwm2mPath::resource(9, 0, 1);
    let dec = |bytes: &str, t| {
        decode(ContentFormat::Tlv, &hex(bytes), &p, &ty(t)).map(|c| c.values[0].1.clone())
    };
    assert_eq!(dec("C1 01 FF", ResourceType::Integer), Ok(V::Integer(-1)));
    assert_eq!(
        dec("C2 01 FF FE", ResourceType::Integer),
        Ok(V::Integer(-2))
    );
    assert_eq!(
        dec("C4 01 00 01 00 00", ResourceType::Integer),
        Ok(V::Integer(65536))
    );
    assert_eq!(
        dec("C8 01 08 7F FF FF FF FF FF FF FF", ResourceType::Integer),
        Ok(V::Integer(i64::MAX))
    );
    assert!(matches!(
        dec("C3 01 00 00 01", ResourceType::Integer),
        Err(ContentError::BadValue { .. })
    ));
    assert_eq!(
        dec("C1 01 FF", ResourceType::UnsignedInteger),
        Ok(V::UnsignedInteger(255))
    );
    assert_eq!(
        dec("C4 01 3F C0 00 00", ResourceType::Float),
        Ok(V::Float(1.5))
    );
    assert_eq!(
        dec("C8 01 08 40 09 21 FB 54 44 2D 18", ResourceType::Float),
        Ok(V::Float(std::f64::consts::PI))
    );
    assert_eq!(dec("C1 01 01", ResourceType::Boolean), Ok(V::Boolean(true)));
    assert!(dec("C1 01 02", ResourceType::Boolean).is_err());
    assert_eq!(
        dec("C4 01 00 03 00 01", ResourceType::ObjectLink),
        Ok(V::ObjectLink(3, 1))
    );
    assert_eq!(
        dec("C2 01 AB CD", ResourceType::Opaque),
        Ok(V::Opaque(vec![0xab, 0xcd]))
    );
    assert!(matches!(
        dec("C2 01 C3 28", ResourceType::String),
        Err(ContentError::InvalidUtf8 { .. })
    ));
    // Unknown types come back opaque.
    let unknown = decode(
        ContentFormat::Tlv,
        &hex("C1 01 05"),
        &p,
        &|_: &Lwm2mPath| None,
    )
    .unwrap();
    assert_eq!(unknown.values[0].1, V::Opaque(vec![5]));
    // Encoding picks the shortest integer width.
    for (i, len) in [(0i64, 1), (-128, 1), (128, 2), (-32769, 4), (1 << 31, 8)] {
        let b = encode(ContentFormat::Tlv, &p, &Content::single(p, V::Integer(i))).unwrap();
        // Header byte + id byte (+ a length byte for 8, which does not fit inline).
        let header = if len < 8 { 2 } else { 3 };
        assert_eq!(b.len(), header + len, "{i}");
    }
    // 16-bit ids and 8/16/24-bit lengths.
    let big = Lwm2mPath::resource(9, 0, 300);
    for n in [7usize, 8, 255, 256, 70_000] {
        let c = Content::single(big, V::Opaque(vec![7; n]));
        let b = encode(ContentFormat::Tlv, &big, &c).unwrap();
        assert_eq!(b[0] & 0x20, 0x20);
        let back = decode(ContentFormat::Tlv, &b, &big, &|_: &Lwm2mPath| None).unwrap();
        assert_eq!(back, c, "{n}");
    }
}

#[test]
fn tlv_rejects_malformed() {
    let base = Lwm2mPath::instance(3, 0);
    for bad in [
        "C8",
        "C8 00",
        "C8 00 05 41",
        "D8 00 FF FF",
        "C1",
        "08 00 02 C1 09",
    ] {
        let e = decode(ContentFormat::Tlv, &hex(bad), &base, &std_types);
        assert!(e.is_err(), "{bad} decoded to {e:?}");
    }
    // A resource instance directly under an instance, and a duplicate resource.
    assert!(matches!(
        decode(ContentFormat::Tlv, &hex("41 00 01"), &base, &std_types),
        Err(ContentError::UnexpectedEntry { .. })
    ));
    assert_eq!(
        decode(
            ContentFormat::Tlv,
            &hex("C1 09 01 C1 09 02"),
            &base,
            &std_types
        ),
        Err(ContentError::DuplicatePath(Lwm2mPath::resource(3, 0, 9)))
    );
    // No TLV at the root.
    assert!(decode(ContentFormat::Tlv, &[], &Lwm2mPath::ROOT, &std_types).is_err());
    assert!(encode(ContentFormat::Tlv, &Lwm2mPath::ROOT, &Content::default()).is_err());
}

#[test]
fn text_and_opaque() {
    let p = Lwm2mPath::resource(3, 0, 13);
    let c = decode(ContentFormat::OldText, b"1367491215", &p, &std_types).unwrap();
    assert_eq!(c, Content::single(p, V::Time(1367491215)));
    let s = Lwm2mPath::resource(3, 0, 0);
    assert_eq!(
        decode(ContentFormat::Text, b" ACME ", &s, &std_types).unwrap(),
        Content::single(s, V::String(" ACME ".into()))
    );
    let e = decode(
        ContentFormat::Text,
        b"abc",
        &Lwm2mPath::resource(3, 0, 9),
        &std_types,
    );
    assert_eq!(
        e,
        Err(ContentError::BadValue {
            path: Lwm2mPath::resource(3, 0, 9),
            expected: ResourceType::Integer
        })
    );
    assert!(
        decode(
            ContentFormat::Text,
            b"1",
            &Lwm2mPath::instance(3, 0),
            &std_types
        )
        .is_err()
    );
    let o = Lwm2mPath::resource(5, 0, 0);
    assert_eq!(
        decode(ContentFormat::Opaque, &[0, 255], &o, &std_types).unwrap(),
        Content::single(o, V::Opaque(vec![0, 255]))
    );
    // Opaque as text is base64.
    assert_eq!(
        decode(ContentFormat::Text, b"AP8=", &o, &std_types).unwrap(),
        Content::single(o, V::Opaque(vec![0, 255]))
    );
    assert_eq!(
        encode(
            ContentFormat::Opaque,
            &o,
            &Content::single(o, V::Opaque(vec![1, 2]))
        )
        .unwrap(),
        vec![1, 2]
    );
    assert!(
        encode(
            ContentFormat::Opaque,
            &o,
            &Content::single(o, V::Integer(1))
        )
        .is_err()
    );
    assert!(matches!(
        encode(ContentFormat::Text, &s, &Content::default()),
        Err(ContentError::NeedsSingleValue { count: 0, .. })
    ));
    assert_eq!(
        encode(
            ContentFormat::Text,
            &s,
            &Content::single(s, V::Boolean(true))
        )
        .unwrap(),
        b"1"
    );
    assert!(matches!(
        decode(ContentFormat::LinkFormat, b"", &s, &std_types),
        Err(ContentError::UnsupportedFormat(ContentFormat::LinkFormat))
    ));
}

#[test]
fn senml_json_vectors() {
    // LWM2M 1.1 TS §7.4.5 style: a base name and relative names.
    let doc = br#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"},
        {"n":"9","v":95},{"n":"6/0","v":1},{"n":"13","v":1367491215},
        {"n":"17","vs":"x"},{"bn":"/5/0/","n":"0","vd":"AP8"},{"n":"4","vb":true},
        {"bn":"/3/0/","n":"22/0","vlo":"3:7"},{"n":"21","v":2.5,"t":-5}]"#;
    let c = decode(ContentFormat::SenmlJson, doc, &Lwm2mPath::ROOT, &std_types).unwrap();
    // The record 5 s old comes first: the others, without a time, are now.
    assert_eq!(
        c.values,
        vec![
            // An integer-typed resource with a fractional value keeps the fraction.
            (Lwm2mPath::resource(3, 0, 21), V::Float(2.5)),
            (
                Lwm2mPath::resource(3, 0, 0),
                V::String("Open Mobile Alliance".into())
            ),
            (Lwm2mPath::resource(3, 0, 9), V::Integer(95)),
            (Lwm2mPath::resource_instance(3, 0, 6, 0), V::Integer(1)),
            (Lwm2mPath::resource(3, 0, 13), V::Time(1367491215)),
            (Lwm2mPath::resource(3, 0, 17), V::String("x".into())),
            (Lwm2mPath::resource(5, 0, 0), V::Opaque(vec![0, 255])),
            (Lwm2mPath::resource(5, 0, 4), V::Boolean(true)),
            (
                Lwm2mPath::resource_instance(3, 0, 22, 0),
                V::ObjectLink(3, 7)
            ),
        ]
    );
    // Unknown resources: typed by JSON shape; names relative to the request path.
    let c = decode(
        ContentFormat::SenmlJson,
        br#"[{"n":"5700","v":21.5},{"n":"5701","vs":"C"},{"n":"5702","v":-3}]"#,
        &Lwm2mPath::instance(3303, 0),
        &std_types,
    )
    .unwrap();
    assert_eq!(
        c.get(&Lwm2mPath::resource(3303, 0, 5700)),
        Some(&V::Float(21.5))
    );
    assert_eq!(
        c.get(&Lwm2mPath::resource(3303, 0, 5702)),
        Some(&V::Integer(-3))
    );
}

#[test]
fn senml_json_rejects() {
    type Check = fn(&ContentError) -> bool;
    let cases: &[(&[u8], Check)] = &[
        (b"[", |e| matches!(e, ContentError::Json { .. })),
        (b"{}", |e| matches!(e, ContentError::BadRecord { .. })),
        (br#"[{"n":"/3/0/9"}]"#, |e| {
            matches!(
                e,
                ContentError::BadRecord {
                    problem: RecordProblem::NoValue,
                    ..
                }
            )
        }),
        (br#"[{"n":"/3/0/9","v":1,"vs":"1"}]"#, |e| {
            matches!(
                e,
                ContentError::BadRecord {
                    problem: RecordProblem::SeveralValues,
                    ..
                }
            )
        }),
        (br#"[{"n":"/3/0","v":1}]"#, |e| {
            matches!(
                e,
                ContentError::BadRecord {
                    problem: RecordProblem::NotAResource(_),
                    ..
                }
            )
        }),
        (br#"[{"n":"/3/x/1","v":1}]"#, |e| {
            matches!(
                e,
                ContentError::BadRecord {
                    problem: RecordProblem::BadName(_),
                    ..
                }
            )
        }),
        (br#"[{"n":"/3/0/1","vd":"!!"}]"#, |e| {
            matches!(
                e,
                ContentError::BadRecord {
                    problem: RecordProblem::BadBase64,
                    ..
                }
            )
        }),
        (br#"[{"n":"/3/0/1","vlo":"3"}]"#, |e| {
            matches!(
                e,
                ContentError::BadRecord {
                    problem: RecordProblem::BadObjectLink,
                    ..
                }
            )
        }),
        (br#"[{"n":"/3/0/1","v":1,"x_":1}]"#, |e| {
            matches!(
                e,
                ContentError::BadRecord {
                    problem: RecordProblem::MustUnderstand(_),
                    ..
                }
            )
        }),
        (br#"[{"n":"/3/0/9","vs":"lots"}]"#, |e| {
            matches!(
                e,
                ContentError::BadRecord {
                    problem: RecordProblem::TypeMismatch(_),
                    ..
                }
            )
        }),
        (br#"[{"n":5,"v":1}]"#, |e| {
            matches!(
                e,
                ContentError::BadRecord {
                    problem: RecordProblem::WrongFieldType("n"),
                    ..
                }
            )
        }),
        (
            br#"[{"n":"/3/0/9","v":1},{"n":"/3/0/9","bt":"x","v":1}]"#,
            |e| matches!(e, ContentError::BadRecord { index: 1, .. }),
        ),
    ];
    for (doc, ok) in cases {
        let e = decode(ContentFormat::SenmlJson, doc, &Lwm2mPath::ROOT, &std_types).unwrap_err();
        assert!(ok(&e), "{} -> {e:?}", String::from_utf8_lossy(doc));
    }
}

#[test]
fn lwm2m_json_1_0_tolerant() {
    let doc = br#"{"bn":"/3/0/","e":[{"n":"0","sv":"ACME"},{"n":"9","v":87},
        {"n":"13","v":1.4e9},{"n":"22/0","ov":"5:0"},{"n":"4","bv":false}],"bt":1}"#;
    let c = decode(
        ContentFormat::OldJson,
        doc,
        &Lwm2mPath::instance(3, 0),
        &std_types,
    )
    .unwrap();
    assert_eq!(
        c.get(&Lwm2mPath::resource(3, 0, 0)),
        Some(&V::String("ACME".into()))
    );
    assert_eq!(c.get(&Lwm2mPath::resource(3, 0, 9)), Some(&V::Integer(87)));
    assert_eq!(
        c.get(&Lwm2mPath::resource(3, 0, 13)),
        Some(&V::Time(1_400_000_000))
    );
    assert_eq!(
        c.get(&Lwm2mPath::resource_instance(3, 0, 22, 0)),
        Some(&V::ObjectLink(5, 0))
    );
    // Without bn, names are relative to the request path; SenML arrays are accepted too.
    let c = decode(
        ContentFormat::Lwm2mJson,
        br#"{"e":[{"n":"1","v":300}]}"#,
        &Lwm2mPath::instance(1, 0),
        &std_types,
    )
    .unwrap();
    assert_eq!(
        c,
        Content::single(Lwm2mPath::resource(1, 0, 1), V::Integer(300))
    );
    let c = decode(
        ContentFormat::OldJson,
        br#"[{"n":"/1/0/1","v":300}]"#,
        &Lwm2mPath::ROOT,
        &std_types,
    );
    assert_eq!(
        c.unwrap(),
        Content::single(Lwm2mPath::resource(1, 0, 1), V::Integer(300))
    );
    assert!(
        decode(
            ContentFormat::OldJson,
            br#"{"e":5}"#,
            &Lwm2mPath::ROOT,
            &std_types
        )
        .is_err()
    );
}

#[test]
fn senml_encode_shape() {
    let base = Lwm2mPath::instance(3, 0);
    let c = Content {
        values: vec![
            (Lwm2mPath::resource(3, 0, 9), V::Integer(87)),
            (Lwm2mPath::resource_instance(3, 0, 6, 1), V::Integer(5)),
            (Lwm2mPath::resource(3, 0, 1), V::Opaque(vec![0xfb, 0xff])),
        ],
    };
    let s = String::from_utf8(encode(ContentFormat::SenmlJson, &base, &c).unwrap()).unwrap();
    assert_eq!(
        s,
        r#"[{"bn":"/3/0/","n":"9","v":87},{"n":"6/1","v":5},{"n":"1","vd":"-_8"}]"#
    );
    let one = Lwm2mPath::resource(3, 0, 9);
    let s = encode(
        ContentFormat::SenmlJson,
        &one,
        &Content::single(one, V::Integer(1)),
    )
    .unwrap();
    assert_eq!(s, br#"[{"bn":"/3/0/","n":"9","v":1}]"#);
    assert!(matches!(
        encode(
            ContentFormat::SenmlJson,
            &one,
            &Content::single(one, V::Float(f64::NAN))
        ),
        Err(ContentError::UnencodableValue { .. })
    ));
    assert!(matches!(
        encode(
            ContentFormat::SenmlJson,
            &one,
            &Content::single(Lwm2mPath::resource(3, 0, 8), V::Integer(1))
        ),
        Err(ContentError::PathOutsideBase { .. })
    ));
}

/// LwM2M JSON 1.0 encoding (11543, and 1543 like it): `{"bn","e"}` with the 1.0 field
/// names, opaque as standard base64 in `sv`, and it decodes back to the same content.
#[test]
fn lwm2m_json_encode_shape_and_round_trip() {
    let base = Lwm2mPath::instance(3, 0);
    let c = Content {
        values: vec![
            (Lwm2mPath::resource(3, 0, 0), V::String("ACME".into())),
            (Lwm2mPath::resource(3, 0, 9), V::Integer(87)),
            (Lwm2mPath::resource_instance(3, 0, 6, 1), V::Integer(5)),
            (Lwm2mPath::resource(3, 0, 13), V::Time(1_400_000_000)),
            (
                Lwm2mPath::resource_instance(3, 0, 22, 0),
                V::ObjectLink(5, 0),
            ),
        ],
    };
    let bytes = encode(ContentFormat::Lwm2mJson, &base, &c).unwrap();
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        r#"{"bn":"/3/0/","e":[{"n":"0","sv":"ACME"},{"n":"9","v":87},{"n":"6/1","v":5},{"n":"13","v":1400000000},{"n":"22/0","ov":"5:0"}]}"#
    );
    assert_eq!(
        encode(ContentFormat::OldJson, &base, &c).unwrap(),
        bytes,
        "1543 encodes like 11543"
    );
    for f in [ContentFormat::Lwm2mJson, ContentFormat::OldJson] {
        assert_eq!(decode(f, &bytes, &base, &std_types).unwrap(), c);
    }
    // Opaque and boolean values; a single resource read names itself under its instance.
    let p = Lwm2mPath::resource(5, 0, 0);
    let opaque = Content::single(p, V::Opaque(vec![0xfb, 0xff]));
    let bytes = encode(ContentFormat::Lwm2mJson, &p, &opaque).unwrap();
    assert_eq!(bytes, br#"{"bn":"/5/0/","e":[{"n":"0","sv":"+/8="}]}"#);
    assert_eq!(
        decode(ContentFormat::Lwm2mJson, &bytes, &p, &std_types).unwrap(),
        opaque
    );
    let p = Lwm2mPath::resource(1, 0, 6);
    let b = encode(
        ContentFormat::Lwm2mJson,
        &p,
        &Content::single(p, V::Boolean(true)),
    )
    .unwrap();
    assert_eq!(b, br#"{"bn":"/1/0/","e":[{"bv":true,"n":"6"}]}"#);
    assert!(matches!(
        encode(
            ContentFormat::Lwm2mJson,
            &p,
            &Content::single(p, V::Float(f64::INFINITY))
        ),
        Err(ContentError::UnencodableValue { .. })
    ));
}

#[test]
fn limits() {
    let big = vec![b' '; MAX_PAYLOAD + 1];
    assert!(matches!(
        decode(ContentFormat::SenmlJson, &big, &Lwm2mPath::ROOT, &std_types),
        Err(ContentError::TooLarge { .. })
    ));
    // More TLV values than MAX_VALUES: two multiple resources of 40,000 instances each.
    let mut tlv = Vec::new();
    for rid in 0..2u8 {
        let mut body = Vec::new();
        for riid in 0..40_000u16 {
            body.extend_from_slice(&[0x61, (riid >> 8) as u8, riid as u8, 0x01]);
        }
        let len = (body.len() as u32).to_be_bytes();
        tlv.extend_from_slice(&[0x98, rid, len[1], len[2], len[3]]);
        tlv.extend_from_slice(&body);
    }
    assert_eq!(
        decode(
            ContentFormat::Tlv,
            &tlv,
            &Lwm2mPath::instance(9, 0),
            &std_types
        ),
        Err(ContentError::TooManyValues { max: MAX_VALUES })
    );
    let mut many = String::from("[");
    for i in 0..=MAX_VALUES {
        if i > 0 {
            many.push(',');
        }
        many.push_str(r#"{"n":"/9/0/1","v":1}"#);
    }
    many.push(']');
    assert_eq!(
        decode(
            ContentFormat::SenmlJson,
            many.as_bytes(),
            &Lwm2mPath::ROOT,
            &std_types
        ),
        Err(ContentError::TooManyValues { max: MAX_VALUES })
    );
}

#[test]
fn content_format_codes() {
    for f in ContentFormat::ALL {
        assert_eq!(ContentFormat::from_code(f.code()), Some(f));
    }
    assert_eq!(ContentFormat::from_code(1), None);
    assert_eq!(ContentFormat::OldJson.canonical(), ContentFormat::Lwm2mJson);
    assert_eq!(ContentFormat::OldOpaque.canonical(), ContentFormat::Opaque);
}

// ---- round trips ----

fn value_of(t: ResourceType) -> BoxedStrategy<V> {
    match t {
        ResourceType::String => "[ -~]{0,12}".prop_map(V::String).boxed(),
        ResourceType::Integer => any::<i64>().prop_map(V::Integer).boxed(),
        ResourceType::UnsignedInteger => any::<u64>().prop_map(V::UnsignedInteger).boxed(),
        ResourceType::Float => prop_oneof![
            (-1.0e12f64..1.0e12).prop_map(V::Float),
            any::<i32>().prop_map(|i| V::Float(i as f64 / 8.0)),
        ]
        .boxed(),
        ResourceType::Boolean => any::<bool>().prop_map(V::Boolean).boxed(),
        ResourceType::Time => any::<i64>().prop_map(V::Time).boxed(),
        ResourceType::ObjectLink => (0u16..65535, 0u16..65535)
            .prop_map(|(o, i)| V::ObjectLink(o, i))
            .boxed(),
        _ => prop::collection::vec(any::<u8>(), 0..20)
            .prop_map(V::Opaque)
            .boxed(),
    }
}

fn any_type() -> impl Strategy<Value = ResourceType> {
    prop::sample::select(vec![
        ResourceType::String,
        ResourceType::Integer,
        ResourceType::UnsignedInteger,
        ResourceType::Float,
        ResourceType::Boolean,
        ResourceType::Time,
        ResourceType::ObjectLink,
        ResourceType::Opaque,
    ])
}

/// One resource: its type and either one value or instances.
fn resource() -> impl Strategy<Value = (ResourceType, Result<V, BTreeMap<u16, V>>)> {
    any_type().prop_flat_map(|t| {
        (
            Just(t),
            prop_oneof![
                value_of(t).prop_map(Ok),
                prop::collection::btree_map(0u16..400, value_of(t), 1..4).prop_map(Err),
            ],
        )
    })
}

/// An object's content, in path order, plus its type table.
fn object_content(oid: u16) -> impl Strategy<Value = (Content, HashMap<Lwm2mPath, ResourceType>)> {
    prop::collection::btree_map((0u16..3, 0u16..300), resource(), 0..8).prop_map(move |m| {
        let mut values = Vec::new();
        let mut types = HashMap::new();
        for ((iid, rid), (t, r)) in m {
            let rp = Lwm2mPath::resource(oid, iid, rid);
            types.insert(rp, t);
            match r {
                Ok(v) => values.push((rp, v)),
                Err(insts) => {
                    values.extend(insts.into_iter().map(|(i, v)| (rp.child(i).unwrap(), v)))
                }
            }
        }
        (Content { values }, types)
    })
}

proptest! {
    #[test]
    fn tlv_round_trips((content, types) in object_content(1234)) {
        let resolve = |p: &Lwm2mPath| types.get(p).copied();
        let base = Lwm2mPath::object(1234);
        let bytes = encode(ContentFormat::Tlv, &base, &content).unwrap();
        prop_assert_eq!(decode(ContentFormat::Tlv, &bytes, &base, &resolve).unwrap(), content.clone());
        // The same values addressed per instance decode the same.
        for iid in 0..3 {
            let inst = Lwm2mPath::instance(1234, iid);
            let part = Content { values: content.values.iter().filter(|(p, _)| inst.contains(p)).cloned().collect() };
            let b = encode(ContentFormat::Tlv, &inst, &part).unwrap();
            prop_assert_eq!(decode(ContentFormat::Tlv, &b, &inst, &resolve).unwrap(), part);
        }
    }

    #[test]
    fn senml_round_trips((content, types) in object_content(77)) {
        let resolve = |p: &Lwm2mPath| types.get(p).copied();
        for base in [Lwm2mPath::ROOT, Lwm2mPath::object(77)] {
            let bytes = encode(ContentFormat::SenmlJson, &base, &content).unwrap();
            let back = decode(ContentFormat::SenmlJson, &bytes, &base, &resolve).unwrap();
            prop_assert_eq!(&back, &content);
        }
    }

    #[test]
    fn senml_cbor_round_trips((content, types) in object_content(77)) {
        let resolve = |p: &Lwm2mPath| types.get(p).copied();
        for base in [Lwm2mPath::ROOT, Lwm2mPath::object(77)] {
            let bytes = encode(ContentFormat::SenmlCbor, &base, &content).unwrap();
            let back = decode(ContentFormat::SenmlCbor, &bytes, &base, &resolve).unwrap();
            prop_assert_eq!(&back, &content);
            // Untyped (no resolver): still the same paths, and numbers keep their value.
            let loose = decode(ContentFormat::SenmlCbor, &bytes, &base, &|_: &Lwm2mPath| None).unwrap();
            prop_assert_eq!(loose.values.len(), content.values.len());
        }
        // Every instance on its own, and any float (not only the JSON-safe ones).
        for iid in 0..3 {
            let inst = Lwm2mPath::instance(77, iid);
            let part = Content { values: content.values.iter().filter(|(p, _)| inst.contains(p)).cloned().collect() };
            let b = encode(ContentFormat::SenmlCbor, &inst, &part).unwrap();
            prop_assert_eq!(decode(ContentFormat::SenmlCbor, &b, &inst, &resolve).unwrap(), part);
        }
    }

    #[test]
    fn senml_cbor_floats_exact(x in any::<f64>().prop_filter("not nan", |x| !x.is_nan())) {
        let p = Lwm2mPath::resource(9, 0, 1);
        let c = Content::single(p, V::Float(x));
        let b = encode(ContentFormat::SenmlCbor, &p, &c).unwrap();
        let back = decode(ContentFormat::SenmlCbor, &b, &p, &|_: &Lwm2mPath| Some(ResourceType::Float)).unwrap();
        prop_assert_eq!(back, c);
    }

    #[test]
    fn lwm2m_cbor_round_trips((content, types) in object_content(77)) {
        let resolve = |p: &Lwm2mPath| types.get(p).copied();
        let bytes = encode(ContentFormat::Lwm2mCbor, &Lwm2mPath::object(77), &content).unwrap();
        let back = decode(ContentFormat::Lwm2mCbor, &bytes, &Lwm2mPath::object(77), &resolve).unwrap();
        prop_assert_eq!(&back, &content);
        for iid in 0..3 {
            let inst = Lwm2mPath::instance(77, iid);
            let part = Content { values: content.values.iter().filter(|(p, _)| inst.contains(p)).cloned().collect() };
            let b = encode(ContentFormat::Lwm2mCbor, &inst, &part).unwrap();
            prop_assert_eq!(decode(ContentFormat::Lwm2mCbor, &b, &inst, &resolve).unwrap(), part);
        }
        // Values of several objects: no shared prefix, the root map.
        let mut two = content.clone();
        two.values.push((Lwm2mPath::resource(78, 0, 1), V::Integer(1)));
        let b = encode(ContentFormat::Lwm2mCbor, &Lwm2mPath::ROOT, &two).unwrap();
        let mut types78 = types.clone();
        types78.insert(Lwm2mPath::resource(78, 0, 1), ResourceType::Integer);
        let back = decode(ContentFormat::Lwm2mCbor, &b, &Lwm2mPath::ROOT, &|p: &Lwm2mPath| types78.get(p).copied()).unwrap();
        prop_assert_eq!(back, two);
    }

    #[test]
    fn plain_cbor_round_trips(t in any_type().prop_flat_map(value_of)) {
        let p = Lwm2mPath::resource_instance(9, 1, 2, 3);
        let ty = t.resource_type();
        let c = Content::single(p, t);
        let bytes = encode(ContentFormat::Cbor, &p, &c).unwrap();
        prop_assert_eq!(decode(ContentFormat::Cbor, &bytes, &p, &|_: &Lwm2mPath| Some(ty)).unwrap(), c);
    }

    #[test]
    fn text_round_trips(t in any_type().prop_flat_map(value_of)) {
        let p = Lwm2mPath::resource(9, 1, 2);
        let ty = t.resource_type();
        let c = Content::single(p, t);
        let bytes = encode(ContentFormat::Text, &p, &c).unwrap();
        prop_assert_eq!(decode(ContentFormat::Text, &bytes, &p, &|_: &Lwm2mPath| Some(ty)).unwrap(), c);
    }

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64), depth in 0usize..5) {
        let base = Lwm2mPath::from_ids(&[3, 0, 7, 1][..depth]).unwrap();
        for f in ContentFormat::ALL {
            let _ = decode(f, &bytes, &base, &std_types);
        }
    }
}

// ---- SenML CBOR ----

/// CBOR bytes of a text string (definite length, < 24 bytes), for writing vectors from
/// the specification's diagnostic notation.
fn ctext(s: &str) -> Vec<u8> {
    assert!(s.len() < 24);
    let mut v = vec![0x60 | s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// The Device object instance of LWM2M 1.1 TS Table 7.4.4-2, in SenML CBOR:
/// `[{-2: "/3/0/", 0: "0", 3: "Open Mobile Alliance"}, {0: "1", 3: ..}, ..]`.
fn device_senml_cbor() -> Vec<u8> {
    let mut b = vec![0x90, 0xa3, 0x21];
    b.extend(ctext("/3/0/"));
    let strings = [
        ("0", "Open Mobile Alliance"),
        ("1", "Lightweight M2M Client"),
        ("2", "345000123"),
        ("3", "1.0"),
    ];
    for (i, (n, vs)) in strings.iter().enumerate() {
        if i > 0 {
            b.push(0xa2);
        }
        b.push(0x00);
        b.extend(ctext(n));
        b.push(0x03);
        // "Lightweight M2M Client" is 22 bytes: still a one-byte header.
        b.extend(ctext(vs));
    }
    let ints: [(&str, &str); 11] = [
        ("6/0", "01"),
        ("6/1", "05"),
        ("7/0", "19 0e d8"),
        ("7/1", "19 13 88"),
        ("8/0", "18 7d"),
        ("8/1", "19 03 84"),
        ("9", "18 64"),
        ("10", "0f"),
        ("11/0", "00"),
        ("13", "1a 51 82 42 8f"),
        ("", ""),
    ];
    for (n, v) in ints.iter().take(10) {
        b.extend([0xa2, 0x00]);
        b.extend(ctext(n));
        b.push(0x02);
        b.extend(hex(v));
    }
    for (n, vs) in [("14", "+02:00"), ("16", "U")] {
        b.extend([0xa2, 0x00]);
        b.extend(ctext(n));
        b.push(0x03);
        b.extend(ctext(vs));
    }
    b
}

#[test]
fn senml_cbor_spec_device_instance() {
    let base = Lwm2mPath::instance(3, 0);
    let bytes = device_senml_cbor();
    let c = decode(ContentFormat::SenmlCbor, &bytes, &base, &std_types).unwrap();
    assert_eq!(c, device_content());
    // Our encoder writes the specification's bytes exactly.
    assert_eq!(encode(ContentFormat::SenmlCbor, &base, &c).unwrap(), bytes);
}

#[test]
fn senml_cbor_spec_time_series_and_links() {
    // Table 7.4.4-3: [{-2: "/72/", -3: 25462634, 0: "1/2", 2: 22.4, 6: -5},
    //                 {0: "1/2", 2: 22.9, 6: -30}, {0: "1/2", 2: 24.1, 6: -50}]
    let mut b = vec![0x83, 0xa5, 0x21];
    b.extend(ctext("/72/"));
    b.extend(hex("22 1a 01 84 87 6a 00"));
    b.extend(ctext("1/2"));
    b.extend(hex("02 fb 40 36 66 66 66 66 66 66 06 24 a3 00"));
    b.extend(ctext("1/2"));
    b.extend(hex("02 fb 40 36 e6 66 66 66 66 66 06 38 1d a3 00"));
    b.extend(ctext("1/2"));
    b.extend(hex("02 fb 40 38 19 99 99 99 99 9a 06 38 31"));
    let c = decode(
        ContentFormat::SenmlCbor,
        &b,
        &Lwm2mPath::object(72),
        &|_: &Lwm2mPath| None,
    )
    .unwrap();
    // Oldest first (t -50, -30, -5), so the last value of the path is its latest.
    let p = Lwm2mPath::resource(72, 1, 2);
    assert_eq!(
        c.values,
        vec![
            (p, V::Float(24.1)),
            (p, V::Float(22.9)),
            (p, V::Float(22.4))
        ]
    );
    // Table 7.4.4-4 (part): object links under the text label "vlo", base name "/".
    let mut b = vec![0x82, 0xa3, 0x21];
    b.extend(ctext("/"));
    b.push(0x00);
    b.extend(ctext("65/0/0/0"));
    b.extend(ctext("vlo"));
    b.extend(ctext("66:0"));
    b.extend([0xa2, 0x00]);
    b.extend(ctext("66/1/2"));
    b.extend(ctext("vlo"));
    b.extend(hex("6b"));
    b.extend(b"65535:65535");
    let c = decode(ContentFormat::SenmlCbor, &b, &Lwm2mPath::ROOT, &std_types).unwrap();
    assert_eq!(
        c.values,
        vec![
            (
                Lwm2mPath::resource_instance(65, 0, 0, 0),
                V::ObjectLink(66, 0)
            ),
            (Lwm2mPath::resource(66, 1, 2), V::ObjectLink(65535, 65535)),
        ]
    );
    // Table 7.4.4-8: absolute names, booleans.
    let mut b = vec![0x82, 0xa2, 0x00];
    b.extend(hex("6c"));
    b.extend(b"/3311/0/5850");
    b.extend([0x04, 0xf4, 0xa2, 0x00]);
    b.extend(hex("6c"));
    b.extend(b"/3308/0/5900");
    b.extend([0x02, 0x12]);
    let c = decode(ContentFormat::SenmlCbor, &b, &Lwm2mPath::ROOT, &std_types).unwrap();
    assert_eq!(
        c.values,
        vec![
            (Lwm2mPath::resource(3311, 0, 5850), V::Boolean(false)),
            (Lwm2mPath::resource(3308, 0, 5900), V::Integer(18)),
        ]
    );
}

#[test]
fn senml_cbor_forms_and_types() {
    let p = Lwm2mPath::resource(5, 0, 3);
    let dec = |b: &[u8]| decode(ContentFormat::SenmlCbor, b, &p, &std_types);
    // Indefinite array and map, a half float, a tag in front of the value, an unknown
    // label with a nested value (skipped), and the name left out (the request path).
    let b = hex("9f bf 02 c1 f9 3c 00 18 63 82 01 a1 01 02 ff ff");
    assert_eq!(dec(&b).unwrap(), Content::single(p, V::Integer(1)));
    // Opaque as a byte string, indefinite length.
    let o = Lwm2mPath::resource(5, 0, 0);
    let b = hex("81 a2 00 60 08 5f 42 01 02 41 03 ff");
    assert_eq!(
        decode(ContentFormat::SenmlCbor, &b, &o, &std_types).unwrap(),
        Content::single(o, V::Opaque(vec![1, 2, 3]))
    );
    // A string for a typed resource is parsed as its type.
    let b = hex("81 a1 03 61 32");
    assert_eq!(dec(&b).unwrap(), Content::single(p, V::Integer(2)));
    // Unsigned beyond i64 stays unsigned.
    let b = hex("81 a1 02 1b ff ff ff ff ff ff ff ff");
    assert_eq!(
        decode(ContentFormat::SenmlCbor, &b, &p, &|_: &Lwm2mPath| None).unwrap(),
        Content::single(p, V::UnsignedInteger(u64::MAX))
    );
}

#[test]
fn senml_cbor_rejects() {
    let p = Lwm2mPath::instance(3, 0);
    let dec = |h: &str| decode(ContentFormat::SenmlCbor, &hex(h), &p, &std_types);
    let rec = |r: Result<Content, ContentError>| match r {
        Err(ContentError::BadRecord { problem, .. }) => problem,
        other => panic!("expected a record error, got {other:?}"),
    };
    assert!(matches!(dec("a0"), Err(ContentError::BadRecord { .. })));
    assert!(matches!(dec(""), Err(ContentError::Cbor { .. })));
    assert!(matches!(dec("81"), Err(ContentError::Cbor { .. })));
    // Trailing bytes after the array.
    assert!(matches!(
        dec("80 00"),
        Err(ContentError::Cbor { offset: 1 })
    ));
    assert_eq!(rec(dec("81 01")), RecordProblem::NotAnObject);
    assert_eq!(rec(dec("81 a1 00 61 39")), RecordProblem::NoValue);
    assert_eq!(
        rec(dec("81 a3 00 61 39 02 01 04 f5")),
        RecordProblem::SeveralValues
    );
    assert_eq!(
        rec(dec("81 a2 00 61 39 02 61 31")),
        RecordProblem::WrongFieldType("v")
    );
    assert_eq!(
        rec(dec("81 a2 00 01 02 01")),
        RecordProblem::WrongFieldType("n")
    );
    assert_eq!(
        rec(dec("81 a2 00 61 39 02 3b ff ff ff ff ff ff ff ff")),
        RecordProblem::NumberOutOfRange
    );
    assert_eq!(
        rec(dec("81 a3 00 61 39 02 01 62 78 5f 01")),
        RecordProblem::MustUnderstand("x_".into())
    );
    assert!(matches!(
        rec(dec("81 a2 00 63 61 2f 62 02 01")),
        RecordProblem::BadName(_)
    ));
    assert_eq!(
        rec(dec("81 a2 00 61 39 03 63 61 62 63")),
        RecordProblem::TypeMismatch(ResourceType::Integer)
    );
}

#[test]
fn senml_cbor_limits() {
    let one = hex("a2 00 66 2f 39 2f 30 2f 31 02 01"); // {0: "/9/0/1", 2: 1}
    let records = |count: usize, definite: bool| {
        let mut b = if definite {
            let mut h = vec![0x9a];
            h.extend((count as u32).to_be_bytes());
            h
        } else {
            vec![0x9f]
        };
        for _ in 0..count {
            b.extend_from_slice(&one);
        }
        if !definite {
            b.push(0xff);
        }
        b
    };
    let dec = |b: &[u8]| decode(ContentFormat::SenmlCbor, b, &Lwm2mPath::ROOT, &std_types);
    for definite in [true, false] {
        assert_eq!(
            dec(&records(MAX_VALUES, definite)).unwrap().values.len(),
            MAX_VALUES
        );
        assert_eq!(
            dec(&records(MAX_VALUES + 1, definite)),
            Err(ContentError::TooManyValues { max: MAX_VALUES })
        );
    }
    // A claimed count far beyond the payload is refused before anything is reserved.
    assert_eq!(
        dec(&hex("9b ff ff ff ff ff ff ff ff")),
        Err(ContentError::TooManyValues { max: MAX_VALUES })
    );
    assert!(matches!(
        dec(&hex("9a 00 00 ff ff")),
        Err(ContentError::Cbor { .. })
    ));
    // Nesting: an unknown field's value nested up to the bound is skipped, one deeper is
    // refused. The record map is level 1 and its values start at level 2.
    let nested = |levels: usize| {
        let mut b = hex("81 a2 00 66 2f 39 2f 30 2f 31 02 01");
        b[1] = 0xa3;
        b.extend([0x18, 0x63]); // label 99
        b.extend(std::iter::repeat_n(0x81, levels));
        b.push(0x00);
        b
    };
    assert!(dec(&nested(MAX_CBOR_DEPTH - 2)).is_ok());
    assert!(matches!(
        dec(&nested(MAX_CBOR_DEPTH - 1)),
        Err(ContentError::TooDeep {
            max: MAX_CBOR_DEPTH,
            ..
        })
    ));
    // Names: `bn` + `n` of 64 bytes pass, 65 do not.
    let named = |n: &str| {
        let mut b = vec![0x81, 0xa2, 0x00, 0x78, n.len() as u8];
        b.extend_from_slice(n.as_bytes());
        b.extend([0x02, 0x01]);
        b
    };
    let long = format!("/9/0/1{}", "0".repeat(58)); // 64 bytes, leading zeros
    assert_eq!(long.len(), 64);
    assert!(matches!(
        dec(&named(&long)),
        Ok(_)
            | Err(ContentError::BadRecord {
                problem: RecordProblem::BadName(_),
                ..
            })
    ));
    assert_eq!(
        dec(&named(&format!("{long}0"))),
        Err(ContentError::BadRecord {
            index: 0,
            problem: RecordProblem::TooLong
        })
    );
}

// ---- LwM2M CBOR ----

#[test]
fn lwm2m_cbor_key_shapes() {
    // The same resource /13/26/1 = 42 written every way a key may go (LWM2M 1.2 §7.4.8):
    // one array key, indefinite lengths, one id per level, arrays of one id per level.
    let p = Lwm2mPath::resource(13, 26, 1);
    let want = Content::single(p, V::Integer(42));
    for h in [
        "a1 83 0d 18 1a 01 18 2a",
        "bf 9f 0d 18 1a 01 ff 18 2a ff",
        "a1 0d a1 18 1a a1 01 18 2a",
        "bf 0d bf 18 1a bf 01 18 2a ff ff ff",
        "a1 81 0d a1 81 18 1a a1 81 01 18 2a",
    ] {
        let c = decode(ContentFormat::Lwm2mCbor, &hex(h), &p, &|_: &Lwm2mPath| None);
        assert_eq!(c, Ok(want.clone()), "{h}");
    }
    // Two resources, split in different places.
    let two = Content {
        values: vec![
            (Lwm2mPath::resource(13, 26, 1), V::Integer(42)),
            (Lwm2mPath::resource(13, 26, 2), V::Integer(21)),
        ],
    };
    let inst = Lwm2mPath::instance(13, 26);
    for h in [
        "a1 82 0d 18 1a a2 01 18 2a 02 15",
        "a2 83 0d 18 1a 01 18 2a 83 0d 18 1a 02 15",
        "a2 82 0d 18 1a a1 01 18 2a 83 0d 18 1a 02 15",
    ] {
        let c = decode(
            ContentFormat::Lwm2mCbor,
            &hex(h),
            &inst,
            &|_: &Lwm2mPath| None,
        );
        assert_eq!(c, Ok(two.clone()), "{h}");
    }
    // Our encoder writes the first, shortest form.
    assert_eq!(
        encode(ContentFormat::Lwm2mCbor, &inst, &two).unwrap(),
        hex("a1 82 0d 18 1a a2 01 18 2a 02 15")
    );
    assert_eq!(
        encode(ContentFormat::Lwm2mCbor, &p, &want).unwrap(),
        hex("a1 83 0d 18 1a 01 18 2a")
    );
}

#[test]
fn lwm2m_cbor_values() {
    let ri = Lwm2mPath::resource_instance(13, 26, 1, 2);
    let float = |_: &Lwm2mPath| Some(ResourceType::Float);
    // A decimal fraction 4([-1, 45]) at the deepest nesting.
    let c = decode(
        ContentFormat::Lwm2mCbor,
        &hex("a1 81 0d a1 81 18 1a a1 81 01 a1 81 02 c4 82 20 18 2d"),
        &ri,
        &float,
    );
    assert_eq!(c, Ok(Content::single(ri, V::Float(4.5))));
    // null is no value; bytes, text, booleans, object links, time (tag 1).
    let p = Lwm2mPath::resource(13, 26, 1);
    let c = decode(
        ContentFormat::Lwm2mCbor,
        &hex("a1 83 0d 18 1a 01 a2 02 f6 03 05"),
        &p,
        &|_: &Lwm2mPath| None,
    )
    .unwrap();
    assert_eq!(c.values, vec![(p.child(3).unwrap(), V::Integer(5))]);
    let c = decode(
        ContentFormat::Lwm2mCbor,
        &hex("a1 82 03 00 a5 00 63 41 43 4d 0d c1 1a 51 82 42 8f 18 64 f5 16 63 33 3a 30 18 63 42 01 02"),
        &Lwm2mPath::instance(3, 0),
        &std_types,
    )
    .unwrap();
    assert_eq!(
        c.values,
        vec![
            (Lwm2mPath::resource(3, 0, 0), V::String("ACM".into())),
            (Lwm2mPath::resource(3, 0, 13), V::Time(1367491215)),
            (Lwm2mPath::resource(3, 0, 100), V::Boolean(true)),
            (Lwm2mPath::resource(3, 0, 22), V::ObjectLink(3, 0)),
            // A boolean and bytes for resources of unknown type (/3/0/100, /3/0/99): String
            // /3/0/16 and Integer /3/0/11 would refuse them (TypeMismatch, as SenML does).
            (Lwm2mPath::resource(3, 0, 99), V::Opaque(vec![1, 2])),
        ]
    );
}

#[test]
fn lwm2m_cbor_rejects() {
    let dec = |h: &str| {
        decode(
            ContentFormat::Lwm2mCbor,
            &hex(h),
            &Lwm2mPath::ROOT,
            &|_: &Lwm2mPath| None,
        )
    };
    // Not a map; trailing bytes; a text key; five ids; a value above a resource.
    assert!(matches!(dec("80"), Err(ContentError::Cbor { .. })));
    assert!(matches!(dec("a0 00"), Err(ContentError::Cbor { .. })));
    assert!(matches!(dec("a1 61 61 01"), Err(ContentError::Cbor { .. })));
    assert!(matches!(
        dec("a1 85 01 01 01 01 01 01"),
        Err(ContentError::Cbor { .. })
    ));
    assert!(matches!(
        dec("a1 84 01 01 01 01 a1 01 01"),
        Err(ContentError::Cbor { .. })
    ));
    assert!(matches!(
        dec("a1 82 01 01 05"),
        Err(ContentError::UnexpectedEntry { .. })
    ));
    // The same path twice; a resource with a value and instances.
    assert_eq!(
        dec("a2 83 01 00 01 05 83 01 00 01 06"),
        Err(ContentError::DuplicatePath(Lwm2mPath::resource(1, 0, 1)))
    );
    assert_eq!(
        dec("a2 83 01 00 01 05 84 01 00 01 00 06"),
        Err(ContentError::ConflictingPaths(Lwm2mPath::resource(1, 0, 1)))
    );
    let both = Content {
        values: vec![
            (Lwm2mPath::resource(1, 0, 1), V::Integer(5)),
            (Lwm2mPath::resource_instance(1, 0, 1, 0), V::Integer(6)),
        ],
    };
    assert_eq!(
        encode(ContentFormat::Lwm2mCbor, &Lwm2mPath::ROOT, &both),
        Err(ContentError::ConflictingPaths(Lwm2mPath::resource(1, 0, 1)))
    );
    // The value bound, at the bound: resource instances of /9/0/1 (and /9/0/2), one
    // value each; MAX_VALUES of them pass, one more fails.
    let many = |n: usize| {
        let first = n.min(40_000);
        let mut b = hex("a1 82 09 00");
        b.push(if n > first { 0xa2 } else { 0xa1 });
        for (rid, count) in [(1u8, first), (2, n - first)] {
            if count == 0 {
                continue;
            }
            b.extend([rid, 0xba]);
            b.extend((count as u32).to_be_bytes());
            for i in 0..count as u32 {
                b.push(0x19);
                b.extend((i as u16).to_be_bytes());
                b.push(0x01);
            }
        }
        b
    };
    assert_eq!(dec("a0"), Ok(Content::default()));
    let at = decode(
        ContentFormat::Lwm2mCbor,
        &many(MAX_VALUES),
        &Lwm2mPath::ROOT,
        &std_types,
    );
    assert_eq!(at.map(|c| c.values.len()), Ok(MAX_VALUES));
    assert_eq!(
        decode(
            ContentFormat::Lwm2mCbor,
            &many(MAX_VALUES + 1),
            &Lwm2mPath::ROOT,
            &std_types
        ),
        Err(ContentError::TooManyValues { max: MAX_VALUES })
    );
}

#[test]
fn plain_cbor_single_values() {
    let p = Lwm2mPath::resource(3, 0, 9);
    let dec = |h: &str, p: &Lwm2mPath| decode(ContentFormat::Cbor, &hex(h), p, &std_types);
    assert_eq!(dec("18 64", &p), Ok(Content::single(p, V::Integer(100))));
    let t = Lwm2mPath::resource(3, 0, 13);
    assert_eq!(
        dec("c1 1a 51 82 42 8f", &t),
        Ok(Content::single(t, V::Time(1367491215)))
    );
    assert_eq!(dec("f6", &p), Ok(Content::default()));
    assert!(matches!(
        dec("18 64", &Lwm2mPath::instance(3, 0)),
        Err(ContentError::NotSingleResource { .. })
    ));
    assert!(matches!(
        dec("18 64 00", &p),
        Err(ContentError::Cbor { .. })
    ));
    assert_eq!(
        encode(
            ContentFormat::Cbor,
            &p,
            &Content::single(p, V::Integer(100))
        )
        .unwrap(),
        hex("18 64")
    );
}

/// The review's content findings (tests/content_review.rs) from the sides it does not
/// cover: SenML CBOR's kind check, base values over integers, mixed absolute and relative
/// times, decimal fractions beyond the exact fast path.
#[test]
fn senml_kinds_base_values_times_and_decimals() {
    let p = Lwm2mPath::instance(3, 0);
    let cbor = |h: &str| decode(ContentFormat::SenmlCbor, &hex(h), &p, &std_types);
    // [{0: "9", 4: true}]: a boolean for the integer /3/0/9.
    assert_eq!(
        cbor("81 a2 00 61 39 04 f5"),
        Err(ContentError::BadRecord {
            index: 0,
            problem: RecordProblem::TypeMismatch(ResourceType::Integer)
        })
    );
    // [{-5: 1, 0: "9", 2: 2}, {0: "10", 2: -1}]: bv is sticky; integers stay integers.
    let c = cbor("82 a3 24 01 00 61 39 02 02 a2 00 62 31 30 02 20").unwrap();
    assert_eq!(
        c.values,
        vec![
            (Lwm2mPath::resource(3, 0, 9), V::Integer(3)),
            (Lwm2mPath::resource(3, 0, 10), V::Integer(0)),
        ]
    );
    // An absolute time is older than any relative one (now is later than it).
    let c = decode(
        ContentFormat::SenmlJson,
        br#"[{"n":"9","v":1,"t":-5},{"n":"9","v":2,"t":1700000000},{"n":"9","v":3}]"#,
        &p,
        &std_types,
    )
    .unwrap();
    let order: Vec<&V> = c.values.iter().map(|(_, v)| v).collect();
    assert_eq!(order, [&V::Integer(2), &V::Integer(1), &V::Integer(3)]);
    // 4([-30, 12345]) and 4([3, 2^60]) (= 125 * 2^63, exact): outside the exact fast path,
    // still rounded once.
    let float = |_: &Lwm2mPath| Some(ResourceType::Float);
    let r = Lwm2mPath::resource(9, 0, 1);
    let c = decode(
        ContentFormat::Cbor,
        &hex("c4 82 38 1d 19 30 39"),
        &r,
        &float,
    );
    assert_eq!(c, Ok(Content::single(r, V::Float(12345e-30))));
    let c = decode(
        ContentFormat::Cbor,
        &hex("c4 82 03 1b 10 00 00 00 00 00 00 00"),
        &r,
        &float,
    );
    assert_eq!(c, Ok(Content::single(r, V::Float(125.0 * 2f64.powi(63)))));
}
