//! LwM2M CBOR (11544, LWM2M 1.2 §7.4.8): nested CBOR maps keyed by path ids. A key is one
//! id (an unsigned integer) or several (an array of them, which shortens a path); a value
//! is another map one or more levels down, or the value of the resource (instance) its
//! keys add up to. Paths are absolute: `{[3, 0]: {9: 100, 7: {0: 3800, 1: 5000}}}`.
//!
//! Values: integers and floats (a decimal fraction, tag 4, is read as a float), text
//! (a string, or `"oid:iid"` for an object link), byte strings (opaque), booleans; tag 1
//! marks a time (for a resource of another numeric type, the number); other tags are
//! skipped; `null` carries no value and is dropped. Where the resolver knows the
//! resource's type, the value's CBOR kind must fit it as a SenML value field's must: a
//! number for Integer, Unsigned Integer, Float or Time, a boolean for Boolean, a byte
//! string for Opaque; a text string is parsed as the type (as SenML `vs` is, so `"87"`
//! fits an Integer and `"3:0"` an Object Link). Anything else is
//! [`ContentError::TypeMismatch`] naming the path and the type. An unknown type (and an
//! executable's) takes any kind, typed by its CBOR shape.
//!
//! Bounds: at most [`MAX_VALUES`] values, paths of at most 4 ids (so at most 4 maps),
//! nesting at most [`MAX_CBOR_DEPTH`] containers with maps and tags counted together (a
//! tag in front of a value or a map is one level, a decimal fraction's tag and array two):
//! one more is [`ContentError::TooDeep`]. Text values are bounded only by the payload; the
//! same path twice ([`ContentError::DuplicatePath`]) or a resource both with a value and
//! with instances ([`ContentError::ConflictingPaths`]) are refused.
//!
//! The encoder writes the deepest path all values share as one array key, then one
//! level per id below it, ids in ascending order.
//!
//! Plain CBOR (60, LWM2M 1.1 §7.4.5) is one such value alone, for one resource
//! (instance) at the request path: [`decode_single`] and [`encode_single`].

use super::cbor::{self, Num};
use super::senml_json::{Kind, kind_fits};
use super::text::parse_text_value;
use super::{ContentError, MAX_CBOR_DEPTH, MAX_VALUES, type_key};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue};
use minicbor::data::{Tag, Type};
use minicbor::{Decoder, Encoder};
use std::collections::HashSet;

/// Tag 1: epoch-based date/time (RFC 8949 §3.4.2).
const TAG_TIME: u64 = 1;
/// Tag 4: decimal fraction `[exponent, mantissa]` (RFC 8949 §3.4.4).
const TAG_DECIMAL: u64 = 4;

struct Walk<'t> {
    types: &'t dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
    out: Vec<(Lwm2mPath, ResourceValue)>,
    seen: HashSet<Lwm2mPath>,
}

fn path_of(ids: &[u16], d: &Decoder<'_>) -> Result<Lwm2mPath, ContentError> {
    Lwm2mPath::from_ids(ids).map_err(|_| cbor::malformed(d))
}

impl Walk<'_> {
    /// One map whose keys continue the path `prefix`; `depth` containers (maps and tags)
    /// enclose the map itself.
    fn map(
        &mut self,
        d: &mut Decoder<'_>,
        prefix: &[u16],
        depth: usize,
    ) -> Result<(), ContentError> {
        if depth >= MAX_CBOR_DEPTH {
            return Err(ContentError::TooDeep {
                offset: d.position(),
                max: MAX_CBOR_DEPTH,
            });
        }
        let len = match cbor::datatype(d)? {
            Type::Map | Type::MapIndef => d.map().map_err(|_| cbor::malformed(d))?,
            _ => return Err(cbor::malformed(d)),
        };
        let mut done = 0u64;
        loop {
            match len {
                Some(n) if done == n => break,
                Some(_) => done += 1,
                None => {
                    if cbor::at_break(d)? {
                        break;
                    }
                }
            }
            let mut ids = [0u16; 4];
            ids[..prefix.len()].copy_from_slice(prefix);
            let ids_len = self.key(d, &mut ids, prefix.len())?;
            // The map's values are enclosed by one more level; each tag is another.
            let at = cbor::untag_keeping(d, depth + 1, &[TAG_TIME, TAG_DECIMAL])?;
            match cbor::datatype(d)? {
                Type::Map | Type::MapIndef if ids_len < 4 => self.map(d, &ids[..ids_len], at)?,
                Type::Map | Type::MapIndef => return Err(cbor::malformed(d)),
                _ => self.value(d, &ids[..ids_len], at)?,
            }
        }
        Ok(())
    }

    /// Reads a key (an id or an array of ids) into `ids[at..]`; returns the new depth.
    fn key(
        &self,
        d: &mut Decoder<'_>,
        ids: &mut [u16; 4],
        at: usize,
    ) -> Result<usize, ContentError> {
        let id = |d: &mut Decoder<'_>| -> Result<u16, ContentError> {
            match cbor::datatype(d)? {
                Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
                    let n = d.u64().map_err(|_| cbor::malformed(d))?;
                    u16::try_from(n).map_err(|_| cbor::malformed(d))
                }
                _ => Err(cbor::malformed(d)),
            }
        };
        match cbor::datatype(d)? {
            Type::Array | Type::ArrayIndef => {
                let len = d.array().map_err(|_| cbor::malformed(d))?;
                let mut depth = at;
                loop {
                    match len {
                        Some(n) if (depth - at) as u64 == n => break,
                        Some(_) => {}
                        None => {
                            if cbor::at_break(d)? {
                                break;
                            }
                        }
                    }
                    if depth == 4 {
                        return Err(cbor::malformed(d));
                    }
                    ids[depth] = id(d)?;
                    depth += 1;
                }
                if depth == at {
                    return Err(cbor::malformed(d));
                }
                Ok(depth)
            }
            _ if at < 4 => {
                ids[at] = id(d)?;
                Ok(at + 1)
            }
            _ => Err(cbor::malformed(d)),
        }
    }

    /// The value of the resource (instance) `ids`, which `depth` containers enclose (a
    /// kept tag 1 or 4 in front of it included). Its CBOR kind must fit the resource's
    /// known type as a SenML value field's must ([`kind_fits`]): a number for a numeric
    /// type, a boolean for a boolean, a byte string for opaque; a text string is parsed as
    /// the type (as SenML `vs` is). Else [`ContentError::TypeMismatch`].
    fn value(
        &mut self,
        d: &mut Decoder<'_>,
        ids: &[u16],
        depth: usize,
    ) -> Result<(), ContentError> {
        let path = path_of(ids, d)?;
        if path.depth() < 3 {
            return Err(ContentError::UnexpectedEntry {
                offset: d.position(),
                under: path,
                kind: "value",
            });
        }
        let ty = (self.types)(&type_key(&path));
        let bad = ContentError::BadValue {
            path,
            expected: ty.unwrap_or(ResourceType::None),
        };
        let kind = |k: Kind| match ty {
            Some(t) if !kind_fits(k, t) => Err(ContentError::TypeMismatch { path, expected: t }),
            _ => Ok(()),
        };
        let value = match cbor::datatype(d)? {
            Type::Null | Type::Undefined => {
                d.skip().map_err(|_| cbor::malformed(d))?;
                return Ok(());
            }
            Type::Tag => {
                let tag = d.tag().map_err(|_| cbor::malformed(d))?;
                kind(Kind::Number)?;
                if tag == Tag::new(TAG_TIME) {
                    let secs = match cbor::number(d)? {
                        Some(Ok(Num::I(i))) => i,
                        Some(Ok(Num::F(x))) if x.fract() == 0.0 && x.abs() < 9.0e15 => x as i64,
                        _ => return Err(bad),
                    };
                    // A time for a time (or untyped) resource; another numeric type takes
                    // the number as its own.
                    match ty {
                        None | Some(ResourceType::Time) | Some(ResourceType::None) => {
                            ResourceValue::Time(secs)
                        }
                        _ => cbor::number_value(Num::I(secs), ty),
                    }
                } else {
                    // The fraction's array sits inside the tag.
                    if depth + 1 >= MAX_CBOR_DEPTH {
                        return Err(ContentError::TooDeep {
                            offset: d.position(),
                            max: MAX_CBOR_DEPTH,
                        });
                    }
                    let x = decimal(d).ok_or(bad)?;
                    cbor::number_value(Num::F(x), ty)
                }
            }
            Type::Bool => {
                kind(Kind::Boolean)?;
                ResourceValue::Boolean(d.bool().map_err(|_| cbor::malformed(d))?)
            }
            Type::Bytes | Type::BytesIndef => {
                kind(Kind::Data)?;
                ResourceValue::Opaque(cbor::bytes(d)?)
            }
            Type::String | Type::StringIndef => {
                let s = cbor::text(d, usize::MAX)?.unwrap_or_default();
                match ty {
                    None | Some(ResourceType::String) | Some(ResourceType::None) => {
                        ResourceValue::String(s)
                    }
                    Some(t) => parse_text_value(&s, t)
                        .ok_or(ContentError::TypeMismatch { path, expected: t })?,
                }
            }
            _ => match cbor::number(d)? {
                Some(Ok(n)) => {
                    kind(Kind::Number)?;
                    cbor::number_value(n, ty)
                }
                _ => return Err(bad),
            },
        };
        if !self.seen.insert(path) {
            return Err(ContentError::DuplicatePath(path));
        }
        if self.out.len() >= MAX_VALUES {
            return Err(ContentError::TooManyValues { max: MAX_VALUES });
        }
        self.out.push((path, value));
        Ok(())
    }
}

/// The powers of ten that are exact in an f64 (10^22 is the last).
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A decimal fraction's `[exponent, mantissa]` as a float (after its tag), rounded once to
/// the nearest f64; `None` when it is not one, or when its value is beyond the f64 range
/// (`4([400, 9])` is no infinity; a value too small rounds to 0, as text does). `m * 10f64.powi(e)` rounds 10^e first
/// (0.1 is not exact), so `4([-1, 3])` came out as 0.30000000000000004.
fn decimal(d: &mut Decoder<'_>) -> Option<f64> {
    if d.array().ok()? != Some(2) {
        return None;
    }
    let part = |d: &mut Decoder<'_>| match cbor::number(d).ok()?? {
        Ok(Num::I(i)) => Some(i),
        _ => None,
    };
    let exp = part(d)?;
    let mantissa = part(d)?;
    // Beyond ±400 every i64 mantissa is 0 or infinite already.
    let exp = i32::try_from(exp).ok()?.clamp(-400, 400);
    // Both operands exact: one IEEE operation rounds once.
    let pow = EXACT_POW10.get(exp.unsigned_abs() as usize);
    if let Some(&pow) = pow.filter(|_| mantissa.unsigned_abs() <= 1 << 53) {
        let m = mantissa as f64;
        return Some(if exp < 0 { m / pow } else { m * pow });
    }
    // Else the decimal text, which Rust parses correctly rounded (at most ~25 bytes).
    format!("{mantissa}e{exp}")
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite())
}

pub(crate) fn decode(
    bytes: &[u8],
    _base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    let mut d = Decoder::new(bytes);
    let mut walk = Walk {
        types,
        out: Vec::new(),
        seen: HashSet::new(),
    };
    walk.map(&mut d, &[], 0)?;
    if d.position() != bytes.len() {
        return Err(cbor::malformed(&d));
    }
    for (p, _) in &walk.out {
        if p.depth() == 4
            && let Some(parent) = p.parent()
            && walk.seen.contains(&parent)
        {
            return Err(ContentError::ConflictingPaths(parent));
        }
    }
    Ok(Content { values: walk.out })
}

type EncResult = Result<(), minicbor::encode::Error<std::convert::Infallible>>;

fn write_value(e: &mut Encoder<Vec<u8>>, v: &ResourceValue) -> EncResult {
    match v {
        ResourceValue::String(s) => {
            e.str(s)?;
        }
        ResourceValue::Integer(i) | ResourceValue::Time(i) => {
            e.i64(*i)?;
        }
        ResourceValue::UnsignedInteger(u) => {
            e.u64(*u)?;
        }
        ResourceValue::Float(x) => cbor::float(e, *x)?,
        ResourceValue::Boolean(b) => {
            e.bool(*b)?;
        }
        ResourceValue::Opaque(b) => {
            e.bytes(b)?;
        }
        ResourceValue::ObjectLink(o, i) => {
            e.str(&format!("{o}:{i}"))?;
        }
    }
    Ok(())
}

/// The map of `items` (sorted, unique, all sharing `ids[..depth]`, each longer), one id
/// per level.
fn children(
    e: &mut Encoder<Vec<u8>>,
    items: &[(&[u16], &ResourceValue)],
    depth: usize,
) -> Result<EncResult, ContentError> {
    let groups: Vec<&[(&[u16], &ResourceValue)]> =
        items.chunk_by(|a, b| a.0[depth] == b.0[depth]).collect();
    if let Err(x) = e.map(groups.len() as u64) {
        return Ok(Err(x));
    }
    for g in groups {
        if let Err(x) = e.u16(g[0].0[depth]) {
            return Ok(Err(x));
        }
        let r = match g {
            [(ids, v)] if ids.len() == depth + 1 => write_value(e, v),
            _ => {
                if let Some((ids, _)) = g.iter().find(|(ids, _)| ids.len() == depth + 1) {
                    let p = Lwm2mPath::from_ids(ids).unwrap_or(Lwm2mPath::ROOT);
                    return Err(ContentError::ConflictingPaths(p));
                }
                children(e, g, depth + 1)?
            }
        };
        if r.is_err() {
            return Ok(r);
        }
    }
    Ok(Ok(()))
}

pub(crate) fn encode(base: &Lwm2mPath, content: &Content) -> Result<Vec<u8>, ContentError> {
    let mut items: Vec<(&[u16], &ResourceValue)> =
        content.values.iter().map(|(p, v)| (p.ids(), v)).collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    if let Some(w) = items.windows(2).find(|w| w[0].0 == w[1].0) {
        let p = Lwm2mPath::from_ids(w[0].0).unwrap_or(Lwm2mPath::ROOT);
        return Err(ContentError::DuplicatePath(p));
    }
    let mut e = Encoder::new(Vec::with_capacity(8 + 12 * items.len()));
    let unencodable = || ContentError::UnencodableValue { path: *base };
    let r = match items.as_slice() {
        [] => e.map(0).map(drop),
        [(ids, v)] => (|| {
            e.map(1)?.array(ids.len() as u64)?;
            for id in ids.iter() {
                e.u16(*id)?;
            }
            write_value(&mut e, v)
        })(),
        [first, .., last] => {
            // The deepest prefix every value lies strictly below: one array key for it,
            // then one level per id (no shared prefix: the root map itself).
            let common = first
                .0
                .iter()
                .zip(last.0.iter())
                .take_while(|(a, b)| a == b)
                .count();
            let shortest = items.iter().map(|(ids, _)| ids.len()).min().unwrap_or(0);
            let prefix = common.min(shortest.saturating_sub(1));
            if prefix == 0 {
                children(&mut e, &items, 0)?
            } else {
                let head = (|| -> EncResult {
                    e.map(1)?.array(prefix as u64)?;
                    for id in &first.0[..prefix] {
                        e.u16(*id)?;
                    }
                    Ok(())
                })();
                match head {
                    Ok(()) => children(&mut e, &items, prefix)?,
                    Err(x) => Err(x),
                }
            }
        }
    };
    r.map_err(|_| unencodable())?;
    Ok(e.into_writer())
}

/// Plain CBOR (60): one value for the resource (instance) at `base`.
pub(crate) fn decode_single(
    bytes: &[u8],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    super::text::single_resource(base)?;
    let mut d = Decoder::new(bytes);
    let mut walk = Walk {
        types,
        out: Vec::new(),
        seen: HashSet::new(),
    };
    let depth = cbor::untag_keeping(&mut d, 0, &[TAG_TIME, TAG_DECIMAL])?;
    walk.value(&mut d, base.ids(), depth)?;
    if d.position() != bytes.len() {
        return Err(cbor::malformed(&d));
    }
    Ok(Content { values: walk.out })
}

/// Plain CBOR (60): the one value at `base`.
pub(crate) fn encode_single(base: &Lwm2mPath, content: &Content) -> Result<Vec<u8>, ContentError> {
    let v = super::text::the_value(base, content)?;
    let mut e = Encoder::new(Vec::with_capacity(16));
    write_value(&mut e, v).map_err(|_| ContentError::UnencodableValue { path: *base })?;
    Ok(e.into_writer())
}
