//! OMA TLV (11542, pre-standard 1542), LWM2M 1.1 §7.4.3.
//!
//! Entry header: byte 0 bits 7-6 the kind (00 object instance, 01 resource instance,
//! 10 multiple resource, 11 resource with value); bit 5 the id width (8 or 16 bits);
//! bits 4-3 the length width (00: length in bits 2-0, 01/10/11: an 8/16/24-bit length
//! follows the id); then the id, the length and the value (or nested entries).
//!
//! Placement: an entry's kind fixes its depth (object instance 2, resource and multiple
//! resource 3, resource instance 4). Under a context path one level up it becomes a child
//! of the context; at the context's own depth with the context's own last id it is the
//! context itself (reading `/3/0/9` answers with a resource entry of id 9).

use super::{ContentError, MAX_VALUES, type_key};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue};
use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    ObjectInstance,
    ResourceInstance,
    MultipleResource,
    Resource,
}

impl Kind {
    fn bits(self) -> u8 {
        match self {
            Kind::ObjectInstance => 0b00,
            Kind::ResourceInstance => 0b01,
            Kind::MultipleResource => 0b10,
            Kind::Resource => 0b11,
        }
    }

    fn depth(self) -> usize {
        match self {
            Kind::ObjectInstance => 2,
            Kind::MultipleResource | Kind::Resource => 3,
            Kind::ResourceInstance => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::ObjectInstance => "object instance",
            Kind::ResourceInstance => "resource instance",
            Kind::MultipleResource => "multiple resource",
            Kind::Resource => "resource",
        }
    }
}

struct Decoder<'a> {
    types: &'a dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
    out: Vec<(Lwm2mPath, ResourceValue)>,
    seen: HashSet<Lwm2mPath>,
}

/// One parsed header: kind, id, and the value's byte range.
fn header(buf: &[u8], at: usize) -> Result<(Kind, u16, usize, usize), ContentError> {
    let trunc = ContentError::Truncated { offset: at };
    let b0 = *buf.get(at).ok_or(trunc.clone())?;
    let kind = match b0 >> 6 {
        0 => Kind::ObjectInstance,
        1 => Kind::ResourceInstance,
        2 => Kind::MultipleResource,
        _ => Kind::Resource,
    };
    let mut pos = at + 1;
    let id_len = if b0 & 0x20 != 0 { 2 } else { 1 };
    let len_len = ((b0 >> 3) & 0b11) as usize;
    let need = id_len + len_len;
    let hdr = buf.get(pos..pos + need).ok_or(trunc.clone())?;
    let id = if id_len == 2 {
        u16::from_be_bytes([hdr[0], hdr[1]])
    } else {
        hdr[0] as u16
    };
    pos += id_len;
    let len = if len_len == 0 {
        (b0 & 0b111) as usize
    } else {
        hdr[id_len..]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize)
    };
    pos += len_len;
    let end = pos.checked_add(len).ok_or(trunc.clone())?;
    if end > buf.len() {
        return Err(trunc);
    }
    Ok((kind, id, pos, end))
}

impl Decoder<'_> {
    fn place(
        ctx: &Lwm2mPath,
        kind: Kind,
        id: u16,
        offset: usize,
    ) -> Result<Lwm2mPath, ContentError> {
        let unexpected = ContentError::UnexpectedEntry {
            offset,
            under: *ctx,
            kind: kind.name(),
        };
        if ctx.depth() + 1 == kind.depth() {
            ctx.child(id).ok_or(unexpected)
        } else if ctx.depth() == kind.depth() && ctx.ids().last() == Some(&id) {
            Ok(*ctx)
        } else {
            Err(unexpected)
        }
    }

    /// Decodes the entries in `buf[start..end]` under `ctx`. `allowed` limits the kinds.
    fn entries(
        &mut self,
        buf: &[u8],
        start: usize,
        end: usize,
        ctx: &Lwm2mPath,
        allowed: &[Kind],
    ) -> Result<(), ContentError> {
        let mut at = start;
        while at < end {
            let (kind, id, vstart, vend) = header(&buf[..end], at)?;
            if !allowed.contains(&kind) {
                return Err(ContentError::UnexpectedEntry {
                    offset: at,
                    under: *ctx,
                    kind: kind.name(),
                });
            }
            let path = Self::place(ctx, kind, id, at)?;
            match kind {
                Kind::ObjectInstance => self.entries(
                    buf,
                    vstart,
                    vend,
                    &path,
                    &[Kind::Resource, Kind::MultipleResource],
                )?,
                Kind::MultipleResource => {
                    self.entries(buf, vstart, vend, &path, &[Kind::ResourceInstance])?
                }
                Kind::Resource | Kind::ResourceInstance => self.value(path, &buf[vstart..vend])?,
            }
            at = vend;
        }
        Ok(())
    }

    fn value(&mut self, path: Lwm2mPath, bytes: &[u8]) -> Result<(), ContentError> {
        if self.out.len() >= MAX_VALUES {
            return Err(ContentError::TooManyValues { max: MAX_VALUES });
        }
        if !self.seen.insert(path) {
            return Err(ContentError::DuplicatePath(path));
        }
        let ty = (self.types)(&type_key(&path)).unwrap_or(ResourceType::Opaque);
        let v = decode_value(path, ty, bytes)?;
        self.out.push((path, v));
        Ok(())
    }
}

fn be_signed(bytes: &[u8]) -> Option<i64> {
    Some(match bytes.len() {
        1 => bytes[0] as i8 as i64,
        2 => i16::from_be_bytes(bytes.try_into().ok()?) as i64,
        4 => i32::from_be_bytes(bytes.try_into().ok()?) as i64,
        8 => i64::from_be_bytes(bytes.try_into().ok()?),
        _ => return None,
    })
}

fn be_unsigned(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        1 | 2 | 4 | 8 => Some(bytes.iter().fold(0u64, |a, &b| (a << 8) | b as u64)),
        _ => None,
    }
}

fn decode_value(
    path: Lwm2mPath,
    ty: ResourceType,
    b: &[u8],
) -> Result<ResourceValue, ContentError> {
    let bad = ContentError::BadValue { path, expected: ty };
    Ok(match ty {
        ResourceType::String => ResourceValue::String(
            std::str::from_utf8(b)
                .map_err(|_| ContentError::InvalidUtf8 { path })?
                .to_owned(),
        ),
        ResourceType::Integer => ResourceValue::Integer(be_signed(b).ok_or(bad)?),
        ResourceType::Time => ResourceValue::Time(be_signed(b).ok_or(bad)?),
        ResourceType::UnsignedInteger => ResourceValue::UnsignedInteger(be_unsigned(b).ok_or(bad)?),
        ResourceType::Float => match b.len() {
            4 => ResourceValue::Float(f32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64),
            8 => ResourceValue::Float(f64::from_be_bytes(b.try_into().map_err(|_| bad)?)),
            _ => return Err(bad),
        },
        ResourceType::Boolean => match b {
            [0] => ResourceValue::Boolean(false),
            [1] => ResourceValue::Boolean(true),
            _ => return Err(bad),
        },
        ResourceType::ObjectLink => match b {
            [a, bb, c, d] => ResourceValue::ObjectLink(
                u16::from_be_bytes([*a, *bb]),
                u16::from_be_bytes([*c, *d]),
            ),
            _ => return Err(bad),
        },
        _ => ResourceValue::Opaque(b.to_vec()),
    })
}

/// Decodes TLV addressed at `base` (depth 1 to 4; the root has no TLV form).
pub(crate) fn decode(
    bytes: &[u8],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    let allowed: &[Kind] = match base.depth() {
        1 => &[Kind::ObjectInstance],
        // An instance read answers with resources; tolerate the instance wrapped in an
        // object-instance entry of its own id (some clients do that).
        2 => &[Kind::ObjectInstance, Kind::Resource, Kind::MultipleResource],
        3 => &[
            Kind::Resource,
            Kind::MultipleResource,
            Kind::ResourceInstance,
        ],
        4 => &[Kind::ResourceInstance],
        _ => {
            return Err(ContentError::UnexpectedEntry {
                offset: 0,
                under: *base,
                kind: "entry",
            });
        }
    };
    let mut d = Decoder {
        types,
        out: Vec::new(),
        seen: HashSet::new(),
    };
    d.entries(bytes, 0, bytes.len(), base, allowed)?;
    Ok(Content { values: d.out })
}

// ---- encoding ----

fn put_header(out: &mut Vec<u8>, kind: Kind, id: u16, len: usize) {
    let mut b0 = kind.bits() << 6;
    if id > 0xff {
        b0 |= 0x20;
    }
    let len_len = match len {
        0..=7 => {
            b0 |= len as u8;
            0
        }
        8..=0xff => 1,
        0x100..=0xffff => 2,
        _ => 3,
    };
    b0 |= (len_len as u8) << 3;
    out.push(b0);
    if id > 0xff {
        out.extend_from_slice(&id.to_be_bytes());
    } else {
        out.push(id as u8);
    }
    let lb = (len as u32).to_be_bytes();
    out.extend_from_slice(&lb[4 - len_len..]);
}

fn put_entry(out: &mut Vec<u8>, kind: Kind, id: u16, body: &[u8]) {
    put_header(out, kind, id, body.len());
    out.extend_from_slice(body);
}

/// TLV's largest value (24-bit length).
const MAX_TLV_LEN: usize = 0xff_ffff;

fn value_bytes(path: Lwm2mPath, v: &ResourceValue) -> Result<Vec<u8>, ContentError> {
    let b = match v {
        ResourceValue::String(s) => s.as_bytes().to_vec(),
        ResourceValue::Integer(i) | ResourceValue::Time(i) => {
            let i = *i;
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
        // The shortest width whose top bit is clear, as for a signed integer: TLV has no
        // types, and a reader whose resource is an Integer takes the bytes as signed (200
        // as the one byte 0xc8 would be -56). Only values above i64::MAX set the top bit.
        ResourceValue::UnsignedInteger(u) => {
            let u = *u;
            if let Ok(x) = i8::try_from(u) {
                x.to_be_bytes().to_vec()
            } else if let Ok(x) = i16::try_from(u) {
                x.to_be_bytes().to_vec()
            } else if let Ok(x) = i32::try_from(u) {
                x.to_be_bytes().to_vec()
            } else {
                u.to_be_bytes().to_vec()
            }
        }
        ResourceValue::Float(x) => x.to_be_bytes().to_vec(),
        ResourceValue::Boolean(b) => vec![*b as u8],
        ResourceValue::Opaque(b) => b.clone(),
        ResourceValue::ObjectLink(o, i) => {
            let mut b = o.to_be_bytes().to_vec();
            b.extend_from_slice(&i.to_be_bytes());
            b
        }
    };
    if b.len() > MAX_TLV_LEN {
        return Err(ContentError::UnencodableValue { path });
    }
    Ok(b)
}

/// One resource's values: a single value, or instances by id.
enum Res<'c> {
    Single(&'c ResourceValue),
    Multi(BTreeMap<u16, &'c ResourceValue>),
}

fn encode_resource(
    out: &mut Vec<u8>,
    path: Lwm2mPath,
    rid: u16,
    r: &Res<'_>,
) -> Result<(), ContentError> {
    match r {
        Res::Single(v) => put_entry(out, Kind::Resource, rid, &value_bytes(path, v)?),
        Res::Multi(insts) => {
            let mut body = Vec::new();
            for (riid, v) in insts {
                let p = path.child(*riid).unwrap_or(path);
                put_entry(
                    &mut body,
                    Kind::ResourceInstance,
                    *riid,
                    &value_bytes(p, v)?,
                );
            }
            if body.len() > MAX_TLV_LEN {
                return Err(ContentError::UnencodableValue { path });
            }
            put_entry(out, Kind::MultipleResource, rid, &body);
        }
    }
    Ok(())
}

/// Encodes content (already checked to lie under `base`, at resource depth or deeper).
pub(crate) fn encode(base: &Lwm2mPath, content: &Content) -> Result<Vec<u8>, ContentError> {
    if base.depth() == 0 {
        return Err(ContentError::UnexpectedEntry {
            offset: 0,
            under: *base,
            kind: "object",
        });
    }
    // instance id -> resource id -> values
    let mut tree: BTreeMap<u16, BTreeMap<u16, Res<'_>>> = BTreeMap::new();
    for (path, v) in &content.values {
        let ids = path.ids();
        let res = tree.entry(ids[1]).or_default();
        match (ids.get(3), res.get_mut(&ids[2])) {
            (None, None) => {
                res.insert(ids[2], Res::Single(v));
            }
            (Some(&riid), None) => {
                res.insert(ids[2], Res::Multi(BTreeMap::from([(riid, v)])));
            }
            (Some(&riid), Some(Res::Multi(m))) => {
                if m.insert(riid, v).is_some() {
                    return Err(ContentError::DuplicatePath(*path));
                }
            }
            (None, Some(Res::Single(_))) => return Err(ContentError::DuplicatePath(*path)),
            _ => return Err(ContentError::ConflictingPaths(type_key(path))),
        }
    }
    let oid = base.ids()[0];
    let mut out = Vec::new();
    for (iid, resources) in &tree {
        let inst = Lwm2mPath::instance(oid, *iid);
        let mut body = Vec::new();
        for (rid, r) in resources {
            let rpath = Lwm2mPath::resource(oid, *iid, *rid);
            match base.depth() {
                // A resource instance: just the instance entry.
                4 => {
                    if let Res::Multi(m) = r {
                        for (riid, v) in m {
                            let p = rpath.child(*riid).unwrap_or(rpath);
                            put_entry(
                                &mut body,
                                Kind::ResourceInstance,
                                *riid,
                                &value_bytes(p, v)?,
                            );
                        }
                    }
                }
                _ => encode_resource(&mut body, rpath, *rid, r)?,
            }
        }
        if base.depth() == 1 {
            if body.len() > MAX_TLV_LEN {
                return Err(ContentError::UnencodableValue { path: inst });
            }
            put_entry(&mut out, Kind::ObjectInstance, *iid, &body);
        } else {
            out.extend_from_slice(&body);
        }
    }
    Ok(out)
}
