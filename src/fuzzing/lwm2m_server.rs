//! Fuzz bodies for the LWM2M payload formats and the registration interface.

use crate::lwm2m::content::{ContentFormat, decode, encode, standard_resource_type};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType};
use std::collections::HashMap;

const TYPES: [ResourceType; 9] = [
    ResourceType::String,
    ResourceType::Integer,
    ResourceType::UnsignedInteger,
    ResourceType::Float,
    ResourceType::Boolean,
    ResourceType::Opaque,
    ResourceType::Time,
    ResourceType::ObjectLink,
    ResourceType::None,
];

/// Compares contents with NaN equal to itself (floats decoded from 4/8 raw bytes).
fn same(a: &Content, b: &Content) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// The content in path order (the TLV encoder writes sorted ids; paths are unique).
fn sorted(c: &Content) -> Content {
    let mut values = c.values.clone();
    values.sort_by_key(|(p, _)| *p);
    Content { values }
}

/// TLV: byte 0 picks the base path depth and the type resolver; the rest is the payload.
/// Whatever decodes must re-encode and decode to the same content.
pub fn tlv_decode(data: &[u8]) {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let base = Lwm2mPath::from_ids(&[3, 0, 7, 1][..(sel % 5) as usize]).unwrap_or(Lwm2mPath::ROOT);
    let salt = (sel >> 3) as usize;
    let typed = move |p: &Lwm2mPath| {
        Some(TYPES[(p.resource_id().unwrap_or(0) as usize + salt) % TYPES.len()])
    };
    let standard = |p: &Lwm2mPath| standard_resource_type(p);
    let resolver: &dyn Fn(&Lwm2mPath) -> Option<ResourceType> =
        if sel & 4 == 0 { &typed } else { &standard };
    let Ok(content) = decode(ContentFormat::Tlv, payload, &base, resolver) else {
        return;
    };
    if let Ok(bytes) = encode(ContentFormat::Tlv, &base, &content) {
        let again = decode(ContentFormat::Tlv, &bytes, &base, resolver)
            .expect("tlv we encoded must decode");
        assert!(
            same(&again, &sorted(&content)),
            "tlv round trip changed {content:?} into {again:?}"
        );
    }
}

/// SenML JSON and LwM2M JSON: whatever decodes as SenML re-encodes and decodes (with the
/// decoded types as hints) to the same content.
pub fn senml_json_decode(data: &[u8]) {
    let base = Lwm2mPath::instance(3, 0);
    let _ = decode(ContentFormat::OldJson, data, &base, &standard_resource_type);
    senml_round_trip(ContentFormat::SenmlJson, data);
}

/// SenML CBOR: whatever decodes re-encodes and decodes (with the decoded types as hints)
/// to the same content.
pub fn senml_cbor_decode(data: &[u8]) {
    senml_round_trip(ContentFormat::SenmlCbor, data);
}

/// Composite path lists (SenML JSON, then SenML CBOR): whatever decodes has at most
/// [`MAX_COMPOSITE_PATHS`](crate::lwm2m::content::MAX_COMPOSITE_PATHS) paths, none twice,
/// and re-encodes and decodes to the same paths.
pub fn composite_paths(data: &[u8]) {
    use crate::lwm2m::content::{MAX_COMPOSITE_PATHS, decode_paths, encode_paths};
    for format in [ContentFormat::SenmlJson, ContentFormat::SenmlCbor] {
        if let Ok(paths) = decode_paths(format, data) {
            assert!(paths.len() <= MAX_COMPOSITE_PATHS);
            for (i, p) in paths.iter().enumerate() {
                assert!(!paths[..i].contains(p), "{p} twice");
            }
            let body = encode_paths(format, &paths).expect("a decoded list encodes");
            assert_eq!(decode_paths(format, &body).expect("re-decodes"), paths);
        }
    }
}

/// LwM2M CBOR: whatever decodes re-encodes and decodes (with the decoded types as hints)
/// to the same content, in path order (the encoder writes ids sorted). The same bytes as
/// plain CBOR (60) for one resource must not panic either.
pub fn lwm2m_cbor_decode(data: &[u8]) {
    let one = Lwm2mPath::resource(3, 0, 13);
    let _ = decode(ContentFormat::Cbor, data, &one, &standard_resource_type);
    senml_round_trip(ContentFormat::Lwm2mCbor, data);
}

fn senml_round_trip(format: ContentFormat, data: &[u8]) {
    let base = Lwm2mPath::instance(3, 0);
    let Ok(content) = decode(format, data, &base, &standard_resource_type) else {
        return;
    };
    // Types are by resource; a resource instance's type is its resource's.
    let mut types = HashMap::new();
    for (p, v) in &content.values {
        let key = if p.depth() == 4 {
            p.parent().unwrap_or(*p)
        } else {
            *p
        };
        if let Some(t) = types.insert(key, v.resource_type())
            && t != v.resource_type()
        {
            return; // one resource with values of several types: no single type hint
        }
    }
    let content = if format == ContentFormat::Lwm2mCbor {
        sorted(&content)
    } else {
        content
    };
    let bytes =
        encode(format, &Lwm2mPath::ROOT, &content).expect("decoded senml content must encode");
    let again = decode(format, &bytes, &Lwm2mPath::ROOT, &|p: &Lwm2mPath| {
        types.get(p).copied()
    })
    .expect("senml we encoded must decode");
    let again = if format == ContentFormat::Lwm2mCbor {
        sorted(&again)
    } else {
        again
    };
    assert!(
        same(&again, &content),
        "senml round trip changed {content:?} into {again:?}"
    );
}

/// The registration interface: bytes before the first `\n` are `&`-separated Uri-Query
/// values, the rest is the link payload; byte 0's low bits pick Register / Update /
/// De-register. A parsed Register re-rendered by its own `to_queries` and
/// `to_link_payload` parses back to itself.
pub fn registration(data: &[u8]) {
    use crate::lwm2m::server::{RdMessage, RdMethod, RegistrationRequest, queries_as_str};
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let (query, payload) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
    let raw: Vec<&[u8]> = query.split(|&b| b == b'&').collect();
    let Ok(queries) = queries_as_str(&raw) else {
        return;
    };
    let (method, path): (RdMethod, &[&str]) = match sel % 4 {
        0 => (RdMethod::Post, &["rd"]),
        1 => (RdMethod::Post, &["rd", "5a"]),
        2 => (RdMethod::Delete, &["rd", "5a"]),
        _ => (RdMethod::Other, &["rd"]),
    };
    match RdMessage::parse(method, path, &queries, payload) {
        Ok(RdMessage::Register(r)) => {
            assert!(!r.endpoint.is_empty() && r.lifetime > 0);
            assert!(r.objects.iter().all(|o| (1..=2).contains(&o.depth())));
            let qs = r.to_queries();
            let qs: Vec<&str> = qs.iter().map(String::as_str).collect();
            let back = RegistrationRequest::parse(&qs, r.to_link_payload().as_bytes())
                .expect("a rendered registration must parse");
            assert_eq!(back, r);
        }
        Ok(RdMessage::Update { update, .. }) => {
            assert!(update.lifetime != Some(0));
        }
        Ok(RdMessage::Deregister { .. }) | Err(_) => {}
    }
}
