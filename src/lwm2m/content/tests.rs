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
        decode(ContentFormat::Cbor, b"", &s, &std_types),
        Err(ContentError::UnsupportedFormat(ContentFormat::Cbor))
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
    assert_eq!(
        c.values,
        vec![
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
            // An integer-typed resource with a fractional value keeps the fraction.
            (Lwm2mPath::resource(3, 0, 21), V::Float(2.5)),
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
