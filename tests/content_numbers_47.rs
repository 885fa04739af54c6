//! Issue #47: numbers through the LWM2M content formats, device to twin and back.
//!
//! Integers (`i64`, `u64`) are exact in every format that carries them; floats keep their
//! bits; a number the format claims finite but that overflows an `f64` is refused; NaN and
//! infinity sent as such (TLV, CBOR half/single/double) are decoded as the device said and
//! refused by the twin, value by value; what the hub writes back is exact on the wire.
#![cfg(feature = "lwm2m")]

use twinhub::lwm2m::content::{ContentError, ContentFormat as F, RecordProblem, decode, encode};
use twinhub::{Content, Lwm2mPath, ResourceType as T, ResourceValue as V};

const INT: Lwm2mPath = Lwm2mPath::resource(1000, 0, 1);
const UINT: Lwm2mPath = Lwm2mPath::resource(1000, 0, 2);
const FLOAT: Lwm2mPath = Lwm2mPath::resource(1000, 0, 3);
const TIME: Lwm2mPath = Lwm2mPath::resource(1000, 0, 4);

/// The test object's types (`/1000/0/1` integer, `2` unsigned, `3` float, `4` time).
fn types(p: &Lwm2mPath) -> Option<T> {
    match p.ids() {
        [1000, _, 1] => Some(T::Integer),
        [1000, _, 2] => Some(T::UnsignedInteger),
        [1000, _, 3] => Some(T::Float),
        [1000, _, 4] => Some(T::Time),
        _ => None,
    }
}

fn untyped(_: &Lwm2mPath) -> Option<T> {
    None
}

/// Formats that carry several values (encoded at the instance).
const MULTI: [F; 5] = [
    F::Tlv,
    F::SenmlJson,
    F::SenmlCbor,
    F::Lwm2mCbor,
    F::Lwm2mJson,
];
/// Formats that carry one value (encoded at the resource).
const SINGLE: [F; 2] = [F::Text, F::Cbor];

/// `value` at `path` through `format` and back, read with `types`.
fn round_trip(format: F, path: Lwm2mPath, value: V) -> Result<V, ContentError> {
    let base = if MULTI.contains(&format) {
        Lwm2mPath::instance(1000, 0)
    } else {
        path
    };
    let bytes = encode(format, &base, &Content::single(path, value))?;
    let back = decode(format, &bytes, &base, &types)?;
    assert_eq!(back.values.len(), 1, "{format:?}");
    assert_eq!(back.values[0].0, path, "{format:?}");
    Ok(back.values[0].1.clone())
}

fn one(format: F, bytes: &[u8], at: Lwm2mPath) -> Result<V, ContentError> {
    let base = if SINGLE.contains(&format) {
        at
    } else {
        Lwm2mPath::instance(1000, 0)
    };
    let c = decode(format, bytes, &base, &types)?;
    assert_eq!(c.values.len(), 1, "{format:?}");
    Ok(c.values[0].1.clone())
}

const BIG: i64 = 9_007_199_254_740_993; // 2^53 + 1: not an f64

#[test]
fn integers_are_exact_in_every_format() {
    let cases = [
        (INT, V::Integer(BIG)),
        (INT, V::Integer(-BIG)),
        (INT, V::Integer(i64::MAX)),
        (INT, V::Integer(i64::MIN)),
        (UINT, V::UnsignedInteger(BIG as u64)),
        (UINT, V::UnsignedInteger(i64::MAX as u64 + 1)),
        (UINT, V::UnsignedInteger(u64::MAX)),
        (TIME, V::Time(BIG)),
        (TIME, V::Time(i64::MIN)),
    ];
    for format in MULTI.into_iter().chain(SINGLE) {
        for (path, value) in &cases {
            assert_eq!(
                round_trip(format, *path, value.clone()).as_ref(),
                Ok(value),
                "{format:?} {value:?}"
            );
        }
    }
}

#[test]
fn senml_json_integers_are_not_read_through_f64() {
    for (text, want) in [
        (
            r#"[{"n":"/1000/0/1","v":9007199254740993}]"#,
            V::Integer(BIG),
        ),
        (
            r#"[{"n":"/1000/0/1","v":-9223372036854775808}]"#,
            V::Integer(i64::MIN),
        ),
        (
            r#"[{"n":"/1000/0/1","v":9223372036854775807}]"#,
            V::Integer(i64::MAX),
        ),
        (
            r#"[{"n":"/1000/0/2","v":18446744073709551615}]"#,
            V::UnsignedInteger(u64::MAX),
        ),
        // An integer resource given an unsigned beyond i64 keeps the number (its kind by
        // its shape, as for every number that does not fit the type).
        (
            r#"[{"n":"/1000/0/1","v":18446744073709551615}]"#,
            V::UnsignedInteger(u64::MAX),
        ),
        // The base value is added exactly.
        (
            r#"[{"bv":9007199254740992,"n":"/1000/0/1","v":1}]"#,
            V::Integer(BIG),
        ),
        (
            r#"[{"bv":-9223372036854775808,"n":"/1000/0/2","v":18446744073709551615}]"#,
            V::UnsignedInteger(i64::MAX as u64),
        ),
    ] {
        assert_eq!(one(F::SenmlJson, text.as_bytes(), INT), Ok(want), "{text}");
    }
    // Untyped (no model): still exact.
    let c = decode(
        F::SenmlJson,
        br#"[{"n":"/1000/0/9","v":9007199254740993}]"#,
        &Lwm2mPath::instance(1000, 0),
        &untyped,
    )
    .unwrap();
    assert_eq!(c.values[0].1, V::Integer(BIG));
    // LwM2M JSON 1.0 alike.
    let old = br#"{"bn":"/1000/0/","e":[{"n":"1","v":9007199254740993}]}"#;
    assert_eq!(one(F::Lwm2mJson, old, INT), Ok(V::Integer(BIG)));
    // Beyond the integer range of the base-value sum: refused, not rounded.
    let over = br#"[{"bv":18446744073709551615,"n":"/1000/0/2","v":1}]"#;
    assert_eq!(
        one(F::SenmlJson, over, UINT),
        Err(ContentError::BadRecord {
            index: 0,
            problem: RecordProblem::NumberOutOfRange
        })
    );
}

#[test]
fn cbor_integers_on_the_wire() {
    // 2^53 + 1 as a 64-bit head, u64::MAX, i64::MIN (-1 - (2^63 - 1)).
    let mut big = vec![0x1b];
    big.extend_from_slice(&(BIG as u64).to_be_bytes());
    assert_eq!(one(F::Cbor, &big, INT), Ok(V::Integer(BIG)));
    assert_eq!(
        one(
            F::Cbor,
            &[0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            UINT
        ),
        Ok(V::UnsignedInteger(u64::MAX))
    );
    assert_eq!(
        one(
            F::Cbor,
            &[0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            INT
        ),
        Ok(V::Integer(i64::MIN))
    );
    // -2^64 fits no LWM2M type: refused.
    assert!(
        one(
            F::Cbor,
            &[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            INT
        )
        .is_err()
    );
    // What the hub sends: the shortest exact head.
    let sent = encode(
        F::Cbor,
        &UINT,
        &Content::single(UINT, V::UnsignedInteger(u64::MAX)),
    )
    .unwrap();
    assert_eq!(sent, [0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let sent = encode(F::Cbor, &INT, &Content::single(INT, V::Integer(i64::MIN))).unwrap();
    assert_eq!(sent, [0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
}

#[test]
fn floats_keep_their_bits_in_every_format() {
    for x in [
        -0.0,
        1e300,
        -1e300,
        0.1,
        2.0,
        1e-300,
        f64::MIN_POSITIVE,
        f64::MAX,
    ] {
        for format in MULTI.into_iter().chain(SINGLE) {
            match round_trip(format, FLOAT, V::Float(x)) {
                Ok(V::Float(y)) => assert_eq!(y.to_bits(), x.to_bits(), "{format:?} {x}"),
                other => panic!("{format:?} {x}: {other:?}"),
            }
        }
    }
    // Text writes are plain decimals, exact (Rust's shortest round-trip digits).
    let text = |x: f64| {
        String::from_utf8(encode(F::Text, &FLOAT, &Content::single(FLOAT, V::Float(x))).unwrap())
            .unwrap()
    };
    assert_eq!(text(0.1), "0.1");
    assert_eq!(text(2.0), "2");
    assert_eq!(text(-0.0), "-0");
    assert_eq!(text(1e300).parse::<f64>().unwrap(), 1e300);
}

#[test]
fn integral_floats_and_integers_take_the_resource_type() {
    let two_f64 = [0xfb, 0x40, 0, 0, 0, 0, 0, 0, 0];
    let two_f16 = [0xf9, 0x40, 0x00];
    // A float with an integral value in an integer resource: an integer, in every format
    // that tells floats from integers.
    assert_eq!(one(F::Cbor, &two_f64, INT), Ok(V::Integer(2)));
    assert_eq!(one(F::Cbor, &two_f16, INT), Ok(V::Integer(2)));
    assert_eq!(one(F::Cbor, &two_f16, UINT), Ok(V::UnsignedInteger(2)));
    let mut lwm2m_cbor = vec![0xa1, 0x19, 0x03, 0xe8, 0xa1, 0x00, 0xa1, 0x01];
    lwm2m_cbor.extend_from_slice(&two_f64);
    assert_eq!(one(F::Lwm2mCbor, &lwm2m_cbor, INT), Ok(V::Integer(2)));
    // [{0 (n): "/1000/0/1", 2 (v): 2.0 as f16}]
    let mut senml_cbor = vec![0x81, 0xa2, 0x00, 0x69];
    senml_cbor.extend_from_slice(b"/1000/0/1");
    senml_cbor.extend_from_slice(&[0x02, 0xf9, 0x40, 0x00]);
    assert_eq!(one(F::SenmlCbor, &senml_cbor, INT), Ok(V::Integer(2)));
    assert_eq!(
        one(F::SenmlJson, br#"[{"n":"/1000/0/1","v":2.0}]"#, INT),
        Ok(V::Integer(2))
    );
    // Text is typed by its syntax: "2.0" is no integer.
    assert_eq!(
        one(F::Text, b"2.0", INT),
        Err(ContentError::BadValue {
            path: INT,
            expected: T::Integer
        })
    );
    // An integer in a float resource: a float, everywhere.
    assert_eq!(one(F::Cbor, &[0x02], FLOAT), Ok(V::Float(2.0)));
    assert_eq!(one(F::Text, b"2", FLOAT), Ok(V::Float(2.0)));
    assert_eq!(
        one(F::SenmlJson, br#"[{"n":"/1000/0/3","v":2}]"#, FLOAT),
        Ok(V::Float(2.0))
    );
    // -0.0 in an integer resource is 0.
    assert_eq!(one(F::Cbor, &[0xf9, 0x80, 0x00], INT), Ok(V::Integer(0)));
}

/// NaN and infinity as CBOR (half, single, double) and TLV carry them: decoded as the
/// device sent them (a float resource's value is an IEEE double); the twin refuses them
/// (see `the_twin_never_holds_nan`). Plain text and JSON cannot carry them at all.
#[test]
fn nan_and_infinity_from_the_wire_are_decoded_as_sent() {
    for bytes in [
        &[0xf9, 0x7e, 0x00][..],
        &[0xfa, 0x7f, 0xc0, 0x00, 0x00],
        &[0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],
    ] {
        assert!(
            matches!(one(F::Cbor, bytes, FLOAT), Ok(V::Float(x)) if x.is_nan()),
            "{bytes:x?}"
        );
    }
    for (bytes, want) in [
        (&[0xf9, 0x7c, 0x00][..], f64::INFINITY),
        (&[0xf9, 0xfc, 0x00], f64::NEG_INFINITY),
        (&[0xfa, 0x7f, 0x80, 0x00, 0x00], f64::INFINITY),
        (&[0xfb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0], f64::NEG_INFINITY),
    ] {
        assert_eq!(one(F::Cbor, bytes, FLOAT), Ok(V::Float(want)), "{bytes:x?}");
    }
    // TLV: a resource of id 3, 8 bytes.
    let mut tlv = vec![0xc8, 0x03, 0x08];
    tlv.extend_from_slice(&f64::NAN.to_be_bytes());
    assert!(matches!(one(F::Tlv, &tlv, FLOAT), Ok(V::Float(x)) if x.is_nan()));
    // A NaN or infinity in an integer resource is no integer: it stays a float.
    assert!(matches!(one(F::Cbor, &[0xf9, 0x7e, 0x00], INT), Ok(V::Float(x)) if x.is_nan()));
    // Text refuses them; JSON has no such literal, and 1e400 is out of its range.
    for text in ["NaN", "inf", "-infinity", "1e400"] {
        assert!(one(F::Text, text.as_bytes(), FLOAT).is_err(), "{text}");
    }
    for json in [
        r#"[{"n":"/1000/0/3","v":NaN}]"#,
        r#"[{"n":"/1000/0/3","v":1e400}]"#,
    ] {
        assert!(
            matches!(
                one(F::SenmlJson, json.as_bytes(), FLOAT),
                Err(ContentError::Json { .. })
            ),
            "{json}"
        );
    }
}

/// A number the format says is finite but whose value overflows an f64 (a SenML base value
/// plus a value, a decimal fraction with a large exponent) was decoded as infinity.
#[test]
fn overflow_to_infinity_is_refused() {
    let json = br#"[{"bv":1e308,"n":"/1000/0/3","v":1e308}]"#;
    assert_eq!(
        one(F::SenmlJson, json, FLOAT),
        Err(ContentError::BadRecord {
            index: 0,
            problem: RecordProblem::NumberOutOfRange
        })
    );
    // The same in SenML CBOR: {-6 (bv): 1e308 as f64, 0: "/1000/0/3", 2: 1e308}.
    let mut cbor = vec![0x81, 0xa3, 0x24, 0xfb];
    cbor.extend_from_slice(&1e308f64.to_be_bytes());
    cbor.extend_from_slice(&[0x00, 0x69]);
    cbor.extend_from_slice(b"/1000/0/3");
    cbor.extend_from_slice(&[0x02, 0xfb]);
    cbor.extend_from_slice(&1e308f64.to_be_bytes());
    assert_eq!(
        one(F::SenmlCbor, &cbor, FLOAT),
        Err(ContentError::BadRecord {
            index: 0,
            problem: RecordProblem::NumberOutOfRange
        })
    );
    // A decimal fraction 4([400, 9]) (9e400) in plain CBOR and in LwM2M CBOR.
    let decimal = [0xc4, 0x82, 0x19, 0x01, 0x90, 0x09];
    let bad = Err(ContentError::BadValue {
        path: FLOAT,
        expected: T::Float,
    });
    assert_eq!(one(F::Cbor, &decimal, FLOAT), bad);
    let mut lwm2m_cbor = vec![0xa1, 0x19, 0x03, 0xe8, 0xa1, 0x00, 0xa1, 0x03];
    lwm2m_cbor.extend_from_slice(&decimal);
    assert_eq!(one(F::Lwm2mCbor, &lwm2m_cbor, FLOAT), bad);
    // Still read: the largest finite decimal, and underflow (rounds to 0 as text does).
    let max = [0xc4, 0x82, 0x19, 0x01, 0x2c, 0x01]; // 4([300, 1])
    assert_eq!(one(F::Cbor, &max, FLOAT), Ok(V::Float(1e300)));
    let tiny = [0xc4, 0x82, 0x39, 0x01, 0x8f, 0x09]; // 4([-400, 9])
    assert_eq!(one(F::Cbor, &tiny, FLOAT), Ok(V::Float(0.0)));
}

/// TLV has no types on the wire: a device reads an integer's bytes as its resource's
/// type. An unsigned value of 128..=255 went as one byte, 0x80..=0xff, which a device
/// whose resource is an Integer reads as a negative number (200 arrived as -56).
#[test]
fn tlv_unsigned_writes_read_the_same_as_signed() {
    let base = Lwm2mPath::instance(1000, 0);
    for u in [
        0u64,
        127,
        128,
        200,
        255,
        256,
        32_767,
        32_768,
        65_535,
        2_147_483_648,
        u32::MAX as u64,
        BIG as u64,
        i64::MAX as u64,
    ] {
        let bytes = encode(F::Tlv, &base, &Content::single(INT, V::UnsignedInteger(u))).unwrap();
        let back = decode(F::Tlv, &bytes, &base, &types).unwrap();
        assert_eq!(back.values[0].1, V::Integer(u as i64), "{u}: {bytes:x?}");
        // And as an unsigned resource, the same number.
        let bytes = encode(F::Tlv, &base, &Content::single(UINT, V::UnsignedInteger(u))).unwrap();
        let back = decode(F::Tlv, &bytes, &base, &types).unwrap();
        assert_eq!(back.values[0].1, V::UnsignedInteger(u), "{u}");
    }
}

mod hub_support;

/// End to end: a device's SenML JSON and CBOR reports, decoded as the server decodes
/// them, reach the twin exactly; an equality query finds the twin by the exact integer
/// (and not by its f64 neighbour); a NaN report is refused by the twin (counted in
/// `property_errors`), which keeps the value it had.
#[test]
fn reports_reach_the_twin_exactly_and_nan_never_does() {
    use hub_support::*;
    use twinhub::DeviceId;
    use twinhub::hub::HubConfig;
    use twinhub::lwm2m::content::standard_resource_type;
    use twinhub::transport::DeviceEvent;

    let pump = DeviceId::new("pump").unwrap();
    let (hub, _store, script, _dir) = durable_hub(&[&pump], HubConfig::default());
    push(&script, registered_v(&pump, "1.1"));
    let report = |format: F, path: Lwm2mPath, bytes: &[u8]| {
        let content = decode(format, bytes, &path, &standard_resource_type).unwrap();
        push(
            &script,
            DeviceEvent::Notification {
                device: pump.clone(),
                registration_id: "r1".into(),
                path,
                content,
            },
        );
    };
    let battery = Lwm2mPath::resource(3, 0, 9);
    let temp = Lwm2mPath::resource(3303, 0, 5700);
    report(
        F::SenmlJson,
        battery,
        br#"[{"bn":"/3/0/","n":"9","v":9007199254740993}]"#,
    );
    report(F::Cbor, temp, &[0xfb, 0x40, 0x35, 0x80, 0, 0, 0, 0, 0]); // 21.5
    let query = |n: &str| {
        format!(
            r#"{{"filter":{{"type":"comparison","property":{{"name":"/3/0/9","type":"device"}},"comparisonOperator":"eq","value":{n}}}}}"#
        )
    };
    wait_until("the reports applied", || {
        hub.registry()
            .read()
            .get("pump")
            .is_some_and(|t| t.device_property("/3303/0/5700").is_some())
    });
    {
        let reg = hub.registry().read();
        let twin = reg.get("pump").unwrap();
        let (v, _) = twin.device_property("/3/0/9").unwrap();
        assert_eq!(v.to_json(), serde_json::json!(9007199254740993u64));
    }
    assert_eq!(
        hub.query(&query("9007199254740993")).unwrap().result.len(),
        1
    );
    assert_eq!(
        hub.query(&query("9007199254740992")).unwrap().result.len(),
        0
    );
    // u64::MAX and i64::MIN through LwM2M CBOR / plain CBOR.
    report(
        F::Cbor,
        battery,
        &[0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    );
    wait_until("i64::MIN applied", || {
        hub.query(&query("-9223372036854775808"))
            .unwrap()
            .result
            .len()
            == 1
    });
    // NaN (a CBOR half) and infinity (a CBOR single) for the temperature: refused.
    let errors = hub.stats().property_errors;
    report(F::Cbor, temp, &[0xf9, 0x7e, 0x00]);
    report(F::Cbor, temp, &[0xfa, 0x7f, 0x80, 0x00, 0x00]);
    wait_until("both refused", || hub.stats().property_errors == errors + 2);
    let reg = hub.registry().read();
    let twin = reg.get("pump").unwrap();
    let (v, _) = twin.device_property("/3303/0/5700").unwrap();
    assert_eq!(v.to_json(), serde_json::json!(21.5));
    let json = serde_json::to_string(&twin.to_twin()).unwrap();
    assert!(json.contains("21.5") && !json.contains("NaN"), "{json}");
}

/// A write job's values go as text, one per Write (exact: see
/// `floats_keep_their_bits_in_every_format`); its spec is stored as JSON. A NaN or
/// infinite float was accepted at creation, and its JSON form reads back as no float at
/// all (serde_json writes `null`): now refused as an invalid parameter, and its JSON form
/// refuses to serialise.
#[test]
fn write_jobs_refuse_non_finite_floats() {
    use twinhub::DeviceId;
    use twinhub::job::{JobId, JobSpec, JobType, SpecError};

    let spec = |x: f64| {
        JobSpec::new(
            JobId::new("w").unwrap(),
            JobType::WriteDeviceProperties {
                values: vec![(FLOAT, V::Float(x))],
            },
            vec![DeviceId::new("pump").unwrap()],
        )
    };
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(
            spec(x).validate(),
            Err(SpecError::InvalidParameter {
                name: "values",
                reason: "floats must be finite"
            }),
            "{x}"
        );
        // Nor does its JSON form stand `null` for it: serialising refuses (#48).
        let job = spec(x).job;
        let err = serde_json::to_string(&job).unwrap_err().to_string();
        assert!(err.contains("finite"), "{err}");
    }
    // Big integers and every finite float stay valid, and their JSON reads back exactly.
    for v in [
        V::Integer(BIG),
        V::Integer(i64::MIN),
        V::UnsignedInteger(u64::MAX),
        V::Float(-0.0),
        V::Float(1e300),
        V::Float(0.1),
        V::Float(2.0),
    ] {
        let job = JobType::WriteDeviceProperties {
            values: vec![(FLOAT, v.clone())],
        };
        let s = JobSpec::new(JobId::new("w").unwrap(), job.clone(), vec![]);
        assert_eq!(s.validate(), Ok(()), "{v:?}");
        let back: JobType = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
        let JobType::WriteDeviceProperties { values } = back else {
            unreachable!()
        };
        match (&values[0].1, &v) {
            (V::Float(a), V::Float(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            (a, b) => assert_eq!(a, b),
        }
    }
}
