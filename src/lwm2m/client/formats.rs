//! Payload formats as the client needs them: encode a read's [`Content`] in the format the
//! server accepts, decode a write's payload into untyped values that the object tree then
//! coerces to each resource's declared type ([`coerce`](super::coerce)).
//!
//! TLV carries no types, so TLV values decode to [`ResourceValue::Opaque`] bytes; SenML
//! numbers decode to floats; text to strings. The tree turns them into the declared types.
//! Every decoder is bounded (input size, record count, nesting) and never panics.

use crate::lwm2m::{Content, Lwm2mPath, ResourceValue, base64_encode};

/// Content-Format numbers the client speaks.
pub mod format {
    /// text/plain
    pub const TEXT: u16 = 0;
    /// application/link-format
    pub const LINK: u16 = 40;
    /// application/octet-stream
    pub const OPAQUE: u16 = 42;
    /// application/senml+json
    pub const SENML_JSON: u16 = 110;
    /// Pre-standard LWM2M text (lwm2m-node-lib and other 1.0 drafts).
    pub const OLD_TEXT: u16 = 1541;
    /// Pre-standard LWM2M TLV.
    pub const OLD_TLV: u16 = 1542;
    /// Pre-standard LWM2M JSON.
    pub const OLD_JSON: u16 = 1543;
    /// Pre-standard LWM2M opaque.
    pub const OLD_OPAQUE: u16 = 1544;
    /// application/vnd.oma.lwm2m+tlv
    pub const TLV: u16 = 11542;
    /// application/vnd.oma.lwm2m+json (LWM2M 1.0 JSON)
    pub const LWM2M_JSON: u16 = 11543;
}

/// The most values one payload may decode to.
pub const MAX_VALUES: usize = 1024;

/// A payload format the client encodes and decodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// text/plain (single resource).
    Text,
    /// octet-stream (single opaque resource).
    Opaque,
    /// LWM2M TLV.
    Tlv,
    /// SenML JSON.
    SenmlJson,
    /// LWM2M 1.0 JSON (`{"bn":..,"e":[..]}`).
    Lwm2mJson,
}

impl Format {
    /// The format for a Content-Format / Accept number, if the client speaks it.
    pub fn from_number(n: u16) -> Option<Format> {
        Some(match n {
            format::TEXT | format::OLD_TEXT => Format::Text,
            format::OPAQUE | format::OLD_OPAQUE => Format::Opaque,
            format::TLV | format::OLD_TLV => Format::Tlv,
            format::SENML_JSON => Format::SenmlJson,
            format::LWM2M_JSON | format::OLD_JSON => Format::Lwm2mJson,
            _ => return None,
        })
    }
}

/// Why a payload could not be encoded or decoded.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum FormatError {
    /// The format cannot carry this content (e.g. several values as text) (4.06).
    NotRepresentable,
    /// The payload is malformed; the text says where (4.00).
    Malformed(&'static str),
    /// The payload holds more than [`MAX_VALUES`] values or nests too deep (4.13).
    TooLarge,
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::NotRepresentable => {
                f.write_str("content not representable in this format")
            }
            FormatError::Malformed(why) => write!(f, "malformed payload: {why}"),
            FormatError::TooLarge => f.write_str("payload holds too many values"),
        }
    }
}

impl std::error::Error for FormatError {}

/// Encodes `content` (read at `base`) in `format`.
pub fn encode(content: &Content, base: &Lwm2mPath, format: Format) -> Result<Vec<u8>, FormatError> {
    match format {
        Format::Text | Format::Opaque => {
            let [(p, v)] = content.values.as_slice() else {
                return Err(FormatError::NotRepresentable);
            };
            if p.depth() < 3 || base.depth() < 3 {
                return Err(FormatError::NotRepresentable);
            }
            match (format, v) {
                (Format::Opaque, ResourceValue::Opaque(b)) => Ok(b.clone()),
                (Format::Opaque, _) => Err(FormatError::NotRepresentable),
                (_, v) => Ok(v.to_string().into_bytes()),
            }
        }
        Format::Tlv => Ok(encode_tlv(content, base)),
        Format::SenmlJson => Ok(encode_senml(content, base)),
        Format::Lwm2mJson => Ok(encode_lwm2m_json(content, base)),
    }
}

/// Decodes a write or create payload addressed to `base`.
pub fn decode(payload: &[u8], base: &Lwm2mPath, format: Format) -> Result<Content, FormatError> {
    match format {
        Format::Text => {
            if base.depth() < 3 {
                return Err(FormatError::NotRepresentable);
            }
            let s = std::str::from_utf8(payload)
                .map_err(|_| FormatError::Malformed("text is not utf-8"))?;
            Ok(Content::single(*base, ResourceValue::String(s.to_string())))
        }
        Format::Opaque => {
            if base.depth() < 3 {
                return Err(FormatError::NotRepresentable);
            }
            Ok(Content::single(
                *base,
                ResourceValue::Opaque(payload.to_vec()),
            ))
        }
        Format::Tlv => decode_tlv(payload, base),
        Format::SenmlJson => decode_senml(payload, base),
        Format::Lwm2mJson => decode_lwm2m_json(payload, base),
    }
}

// ---------------------------------------------------------------------------------- TLV

fn tlv_value(v: &ResourceValue) -> Vec<u8> {
    fn int(i: i64) -> Vec<u8> {
        if let Ok(x) = i8::try_from(i) {
            x.to_be_bytes().to_vec()
        } else if let Ok(x) = i16::try_from(i) {
            x.to_be_bytes().to_vec()
        } else if let Ok(x) = i32::try_from(i) {
            x.to_be_bytes().to_vec()
        } else {
            i.to_be_bytes().to_vec()
        }
    }
    match v {
        ResourceValue::String(s) => s.as_bytes().to_vec(),
        ResourceValue::Integer(i) | ResourceValue::Time(i) => int(*i),
        ResourceValue::UnsignedInteger(u) => match i64::try_from(*u) {
            Ok(i) => int(i),
            Err(_) => u.to_be_bytes().to_vec(),
        },
        ResourceValue::Float(f) => {
            if (*f as f32) as f64 == *f {
                (*f as f32).to_be_bytes().to_vec()
            } else {
                f.to_be_bytes().to_vec()
            }
        }
        ResourceValue::Boolean(b) => vec![*b as u8],
        ResourceValue::Opaque(b) => b.clone(),
        ResourceValue::ObjectLink(o, i) => {
            let mut out = o.to_be_bytes().to_vec();
            out.extend_from_slice(&i.to_be_bytes());
            out
        }
    }
}

/// TLV type bits: object instance, resource instance, multiple resource, resource value.
const OBJECT_INSTANCE: u8 = 0b00;
const RESOURCE_INSTANCE: u8 = 0b01;
const MULTIPLE_RESOURCE: u8 = 0b10;
const RESOURCE_VALUE: u8 = 0b11;

fn tlv_header(out: &mut Vec<u8>, kind: u8, id: u16, len: usize) {
    let mut b0 = kind << 6;
    if id > 255 {
        b0 |= 0x20;
    }
    let len_bytes: &[u8] = &(len as u32).to_be_bytes();
    let len_field: &[u8] = if len < 8 {
        b0 |= len as u8;
        &[]
    } else if len < 1 << 8 {
        b0 |= 0b01 << 3;
        &len_bytes[3..]
    } else if len < 1 << 16 {
        b0 |= 0b10 << 3;
        &len_bytes[2..]
    } else {
        b0 |= 0b11 << 3;
        &len_bytes[1..]
    };
    out.push(b0);
    if id > 255 {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    out.extend_from_slice(len_field);
}

fn tlv(out: &mut Vec<u8>, kind: u8, id: u16, body: &[u8]) {
    tlv_header(out, kind, id, body.len());
    out.extend_from_slice(body);
}

/// Encodes resources of one instance (paths `/o/i/r` or `/o/i/r/ri`, grouped by resource).
fn tlv_resources(values: &[(Lwm2mPath, ResourceValue)], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < values.len() {
        let (p, v) = &values[i];
        let rid = p.resource_id().unwrap_or(0);
        if p.depth() == 4 {
            let mut inner = Vec::new();
            while i < values.len()
                && values[i].0.depth() == 4
                && values[i].0.resource_id() == Some(rid)
                && values[i].0.instance_id() == p.instance_id()
            {
                let ri = values[i].0.resource_instance_id().unwrap_or(0);
                tlv(&mut inner, RESOURCE_INSTANCE, ri, &tlv_value(&values[i].1));
                i += 1;
            }
            tlv(out, MULTIPLE_RESOURCE, rid, &inner);
        } else {
            tlv(out, RESOURCE_VALUE, rid, &tlv_value(v));
            i += 1;
        }
    }
}

fn encode_tlv(content: &Content, base: &Lwm2mPath) -> Vec<u8> {
    let mut out = Vec::new();
    let values = &content.values;
    match base.depth() {
        // A single resource instance read: one resource-instance TLV.
        4 => {
            for (p, v) in values {
                tlv(
                    &mut out,
                    RESOURCE_INSTANCE,
                    p.resource_instance_id().unwrap_or(0),
                    &tlv_value(v),
                );
            }
        }
        2 | 3 => tlv_resources(values, &mut out),
        _ => {
            let mut i = 0;
            while i < values.len() {
                let iid = values[i].0.instance_id().unwrap_or(0);
                let start = i;
                while i < values.len() && values[i].0.instance_id() == Some(iid) {
                    i += 1;
                }
                let mut inner = Vec::new();
                tlv_resources(&values[start..i], &mut inner);
                tlv(&mut out, OBJECT_INSTANCE, iid, &inner);
            }
        }
    }
    out
}

struct TlvEntry<'a> {
    kind: u8,
    id: u16,
    value: &'a [u8],
}

fn parse_tlvs<'a>(mut input: &'a [u8], out: &mut Vec<TlvEntry<'a>>) -> Result<(), FormatError> {
    let mut entries = Vec::new();
    while !input.is_empty() {
        let b0 = input[0];
        let kind = b0 >> 6;
        let id_len = if b0 & 0x20 != 0 { 2 } else { 1 };
        let len_len = ((b0 >> 3) & 0b11) as usize;
        let head = 1 + id_len + len_len;
        if input.len() < head {
            return Err(FormatError::Malformed("truncated tlv header"));
        }
        let id = if id_len == 2 {
            u16::from_be_bytes([input[1], input[2]])
        } else {
            input[1] as u16
        };
        let len = if len_len == 0 {
            (b0 & 0b111) as usize
        } else {
            input[1 + id_len..head]
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize)
        };
        if input.len() - head < len {
            return Err(FormatError::Malformed("tlv length beyond payload"));
        }
        if id == u16::MAX {
            return Err(FormatError::Malformed("tlv id 65535 is reserved"));
        }
        entries.push(TlvEntry {
            kind,
            id,
            value: &input[head..head + len],
        });
        if entries.len() + out.len() > MAX_VALUES {
            return Err(FormatError::TooLarge);
        }
        input = &input[head + len..];
    }
    out.extend(entries);
    Ok(())
}

fn decode_tlv(payload: &[u8], base: &Lwm2mPath) -> Result<Content, FormatError> {
    let mut values = Vec::new();
    let mut top = Vec::new();
    parse_tlvs(payload, &mut top)?;
    let mut push =
        |p: Option<Lwm2mPath>, v: &[u8], values: &mut Vec<(Lwm2mPath, ResourceValue)>| {
            let p = p.ok_or(FormatError::Malformed(
                "tlv nests deeper than a resource instance",
            ))?;
            if values.len() >= MAX_VALUES {
                return Err(FormatError::TooLarge);
            }
            values.push((p, ResourceValue::Opaque(v.to_vec())));
            Ok(())
        };
    // The object path the TLVs hang under: the ids of `base` down to the object instance.
    let oid = base
        .object_id()
        .ok_or(FormatError::Malformed("tlv needs an object path"))?;
    for e in &top {
        match e.kind {
            OBJECT_INSTANCE => {
                if base.depth() > 2 || base.instance_id().is_some_and(|i| i != e.id) {
                    return Err(FormatError::Malformed(
                        "object instance tlv does not match the path",
                    ));
                }
                let inst = Lwm2mPath::instance(oid, e.id);
                let mut inner = Vec::new();
                parse_tlvs(e.value, &mut inner)?;
                for r in &inner {
                    decode_resource(r, &inst, &mut values, &mut push)?;
                }
            }
            _ => {
                let inst = match base.instance_id() {
                    Some(iid) => Lwm2mPath::instance(oid, iid),
                    // Create without an instance wrapper: the caller re-homes the paths.
                    None => Lwm2mPath::instance(oid, 0),
                };
                if base.depth() == 4 && e.kind == RESOURCE_INSTANCE {
                    push(
                        Some(*base).filter(|b| b.resource_instance_id() == Some(e.id)),
                        e.value,
                        &mut values,
                    )?;
                    continue;
                }
                if base.depth() == 3 && e.kind == RESOURCE_INSTANCE {
                    push(base.child(e.id), e.value, &mut values)?;
                    continue;
                }
                decode_resource(e, &inst, &mut values, &mut push)?;
            }
        }
    }
    Ok(Content { values })
}

type Push<'p> = dyn FnMut(Option<Lwm2mPath>, &[u8], &mut Vec<(Lwm2mPath, ResourceValue)>) -> Result<(), FormatError>
    + 'p;

fn decode_resource(
    e: &TlvEntry<'_>,
    inst: &Lwm2mPath,
    values: &mut Vec<(Lwm2mPath, ResourceValue)>,
    push: &mut Push<'_>,
) -> Result<(), FormatError> {
    let res = inst.child(e.id);
    match e.kind {
        RESOURCE_VALUE => push(res, e.value, values),
        MULTIPLE_RESOURCE => {
            let res = res.ok_or(FormatError::Malformed("bad resource id"))?;
            let mut inner = Vec::new();
            parse_tlvs(e.value, &mut inner)?;
            for ri in &inner {
                if ri.kind != RESOURCE_INSTANCE {
                    return Err(FormatError::Malformed(
                        "multiple resource holds a non-instance tlv",
                    ));
                }
                push(res.child(ri.id), ri.value, values)?;
            }
            Ok(())
        }
        _ => Err(FormatError::Malformed(
            "unexpected tlv type at resource level",
        )),
    }
}

// -------------------------------------------------------------------------------- SenML

fn json_value(v: &ResourceValue) -> (&'static str, serde_json::Value) {
    use serde_json::Value as J;
    match v {
        ResourceValue::String(s) => ("vs", J::String(s.clone())),
        ResourceValue::Integer(i) | ResourceValue::Time(i) => ("v", J::from(*i)),
        ResourceValue::UnsignedInteger(u) => ("v", J::from(*u)),
        ResourceValue::Float(f) => (
            "v",
            serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        ),
        ResourceValue::Boolean(b) => ("vb", J::Bool(*b)),
        ResourceValue::Opaque(b) => ("vd", J::String(base64url(b))),
        ResourceValue::ObjectLink(o, i) => ("vlo", J::String(format!("{o}:{i}"))),
    }
}

fn base64url(b: &[u8]) -> String {
    base64_encode(b)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn base_name(base: &Lwm2mPath) -> String {
    if base.depth() >= 3 {
        base.to_string()
    } else {
        format!("{base}/")
    }
}

fn relative(p: &Lwm2mPath, bn: &str) -> String {
    let full = p.to_string();
    full.strip_prefix(bn).unwrap_or(&full).to_string()
}

fn encode_senml(content: &Content, base: &Lwm2mPath) -> Vec<u8> {
    let bn = base_name(base);
    let mut records = Vec::with_capacity(content.values.len());
    for (i, (p, v)) in content.values.iter().enumerate() {
        let mut r = serde_json::Map::new();
        if i == 0 {
            r.insert("bn".into(), bn.clone().into());
        }
        let n = relative(p, &bn);
        if !n.is_empty() {
            r.insert("n".into(), n.into());
        }
        let (k, jv) = json_value(v);
        r.insert(k.into(), jv);
        records.push(serde_json::Value::Object(r));
    }
    serde_json::to_vec(&records).unwrap_or_default()
}

fn encode_lwm2m_json(content: &Content, base: &Lwm2mPath) -> Vec<u8> {
    let bn = base_name(base);
    let e: Vec<serde_json::Value> = content
        .values
        .iter()
        .map(|(p, v)| {
            let (k, jv) = json_value(v);
            let k = match k {
                "vs" | "vd" => "sv",
                "vb" => "bv",
                "vlo" => "ov",
                k => k,
            };
            let jv = match v {
                ResourceValue::Opaque(b) => base64_encode(b).into(),
                _ => jv,
            };
            serde_json::json!({ "n": relative(p, &bn), k: jv })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "bn": bn, "e": e })).unwrap_or_default()
}

fn record_value(
    r: &serde_json::Map<String, serde_json::Value>,
) -> Result<ResourceValue, FormatError> {
    use serde_json::Value as J;
    let bad = FormatError::Malformed("senml record value");
    for (k, v) in r {
        let value = match (k.as_str(), v) {
            ("v", J::Number(n)) => match n.as_i64() {
                Some(i) => ResourceValue::Integer(i),
                None => ResourceValue::Float(n.as_f64().ok_or(bad.clone())?),
            },
            ("vs" | "sv" | "vlo" | "ov", J::String(s)) => ResourceValue::String(s.clone()),
            ("vb" | "bv", J::Bool(b)) => ResourceValue::Boolean(*b),
            ("vd", J::String(s)) => ResourceValue::Opaque(base64_decode(s).ok_or(bad.clone())?),
            _ => continue,
        };
        return Ok(value);
    }
    Err(bad)
}

fn resolve(bn: &str, n: &str) -> Result<Lwm2mPath, FormatError> {
    format!("{bn}{n}")
        .parse()
        .map_err(|_| FormatError::Malformed("senml name is not an lwm2m path"))
}

fn decode_senml(payload: &[u8], base: &Lwm2mPath) -> Result<Content, FormatError> {
    let records: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(payload).map_err(|_| FormatError::Malformed("senml json"))?;
    if records.len() > MAX_VALUES {
        return Err(FormatError::TooLarge);
    }
    let mut bn = String::new();
    let mut values = Vec::with_capacity(records.len());
    for r in &records {
        if let Some(b) = r.get("bn") {
            bn = b
                .as_str()
                .ok_or(FormatError::Malformed("senml bn"))?
                .to_string();
        }
        let n = match r.get("n") {
            Some(n) => n.as_str().ok_or(FormatError::Malformed("senml n"))?,
            None => "",
        };
        let p = if bn.is_empty() && n.is_empty() {
            *base
        } else {
            resolve(&bn, n)?
        };
        values.push((p, record_value(r)?));
    }
    Ok(Content { values })
}

fn decode_lwm2m_json(payload: &[u8], base: &Lwm2mPath) -> Result<Content, FormatError> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default)]
        bn: Option<String>,
        e: Vec<serde_json::Map<String, serde_json::Value>>,
    }
    let doc: Doc =
        serde_json::from_slice(payload).map_err(|_| FormatError::Malformed("lwm2m json"))?;
    if doc.e.len() > MAX_VALUES {
        return Err(FormatError::TooLarge);
    }
    let bn = doc.bn.unwrap_or_else(|| base_name(base));
    let mut values = Vec::with_capacity(doc.e.len());
    for r in &doc.e {
        let n = r.get("n").and_then(|n| n.as_str()).unwrap_or("");
        values.push((resolve(&bn, n)?, record_value(r)?));
    }
    Ok(Content { values })
}

/// Decodes base64 in the standard or URL-safe alphabet, padding optional.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResourceValue as V;

    fn device_content() -> Content {
        Content {
            values: vec![
                (
                    Lwm2mPath::resource(3, 0, 0),
                    V::String("Open Mobile Alliance".into()),
                ),
                (Lwm2mPath::resource(3, 0, 9), V::Integer(100)),
                (Lwm2mPath::resource_instance(3, 0, 11, 0), V::Integer(0)),
                (Lwm2mPath::resource(3, 0, 13), V::Time(1367491215)),
            ],
        }
    }

    #[test]
    fn tlv_spec_example() {
        // LWM2M 1.0 TS §6.4.3.1 example fragments: /3/0/0 and the error code.
        let bytes = encode(&device_content(), &Lwm2mPath::instance(3, 0), Format::Tlv).unwrap();
        let mut expect = vec![0xC8, 0x00, 0x14];
        expect.extend_from_slice(b"Open Mobile Alliance");
        expect.extend_from_slice(&[0xC1, 0x09, 0x64]);
        expect.extend_from_slice(&[0x83, 0x0B, 0x41, 0x00, 0x00]);
        expect.extend_from_slice(&[0xC4, 0x0D, 0x51, 0x82, 0x42, 0x8F]);
        assert_eq!(bytes, expect);
        let back = decode(&bytes, &Lwm2mPath::instance(3, 0), Format::Tlv).unwrap();
        let paths: Vec<_> = back.values.iter().map(|(p, _)| *p).collect();
        let want: Vec<_> = device_content().values.iter().map(|(p, _)| *p).collect();
        assert_eq!(paths, want);
        assert_eq!(back.values[1].1, V::Opaque(vec![100]));
    }

    #[test]
    fn tlv_object_level_and_long_ids() {
        let c = Content {
            values: vec![
                (Lwm2mPath::resource(10241, 0, 1), V::String("x".repeat(300))),
                (Lwm2mPath::resource(10241, 300, 1), V::Float(1.5)),
            ],
        };
        let b = encode(&c, &Lwm2mPath::object(10241), Format::Tlv).unwrap();
        let back = decode(&b, &Lwm2mPath::object(10241), Format::Tlv).unwrap();
        assert_eq!(back.values[0].0, Lwm2mPath::resource(10241, 0, 1));
        assert_eq!(back.values[1].0, Lwm2mPath::resource(10241, 300, 1));
        assert_eq!(back.values[1].1, V::Opaque(1.5f32.to_be_bytes().to_vec()));
    }

    #[test]
    fn tlv_rejects_garbage() {
        let base = Lwm2mPath::instance(3, 0);
        assert!(decode(&[0xC8], &base, Format::Tlv).is_err());
        assert!(decode(&[0xC8, 0x00, 0x14, b'a'], &base, Format::Tlv).is_err());
        assert!(
            decode(&[0x08, 0x01, 0x03, 0xC1, 0x00, 0x01], &base, Format::Tlv).is_err(),
            "instance 1 under /3/0"
        );
        assert!(
            decode(&[0x48, 0x00, 0x01, 0x01], &base, Format::Tlv).is_err(),
            "resource instance at instance level"
        );
        let many: Vec<u8> = std::iter::repeat_n([0xC0u8, 0x01], MAX_VALUES + 1)
            .flatten()
            .collect();
        assert_eq!(
            decode(&many, &base, Format::Tlv),
            Err(FormatError::TooLarge)
        );
    }

    #[test]
    fn senml_round_trip_and_names() {
        let base = Lwm2mPath::instance(3, 0);
        let b = encode(&device_content(), &base, Format::SenmlJson).unwrap();
        let text = String::from_utf8(b.clone()).unwrap();
        assert!(
            text.starts_with(r#"[{"bn":"/3/0/","n":"0","vs":"Open Mobile Alliance"}"#),
            "{text}"
        );
        assert!(text.contains(r#"{"n":"11/0","v":0}"#));
        let back = decode(&b, &base, Format::SenmlJson).unwrap();
        assert_eq!(back.values[0], device_content().values[0]);
        assert_eq!(back.values[2].0, Lwm2mPath::resource_instance(3, 0, 11, 0));
        let single = decode(
            br#"[{"bn":"/1/0/1","v":60}]"#,
            &Lwm2mPath::resource(1, 0, 1),
            Format::SenmlJson,
        )
        .unwrap();
        assert_eq!(
            single.values,
            vec![(Lwm2mPath::resource(1, 0, 1), V::Integer(60))]
        );
        let opaque = decode(
            br#"[{"n":"/5/0/0","vd":"AQID"}]"#,
            &Lwm2mPath::resource(5, 0, 0),
            Format::SenmlJson,
        )
        .unwrap();
        assert_eq!(opaque.values[0].1, V::Opaque(vec![1, 2, 3]));
        assert!(decode(br#"[{"n":"x","v":1}]"#, &base, Format::SenmlJson).is_err());
        assert!(decode(br#"{"n":1}"#, &base, Format::SenmlJson).is_err());
        assert!(decode(br#"[{"n":"/3/0/1"}]"#, &base, Format::SenmlJson).is_err());
    }

    #[test]
    fn lwm2m_json_and_text() {
        let base = Lwm2mPath::instance(3, 0);
        let b = encode(&device_content(), &base, Format::Lwm2mJson).unwrap();
        let back = decode(&b, &base, Format::Lwm2mJson).unwrap();
        assert_eq!(back.values[0], device_content().values[0]);
        let r = Lwm2mPath::resource(3, 0, 9);
        assert_eq!(
            encode(&Content::single(r, V::Integer(7)), &r, Format::Text).unwrap(),
            b"7"
        );
        assert_eq!(
            encode(&device_content(), &base, Format::Text),
            Err(FormatError::NotRepresentable)
        );
        assert_eq!(
            decode(b"42", &r, Format::Text).unwrap().values[0].1,
            V::String("42".into())
        );
        assert_eq!(base64_decode("AQID"), Some(vec![1, 2, 3]));
        assert_eq!(base64_decode("_-8"), Some(vec![0xff, 0xef]));
        assert_eq!(base64_decode("a*"), None);
    }
}
