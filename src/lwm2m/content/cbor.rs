//! The CBOR pieces SenML CBOR and LwM2M CBOR share, on top of `minicbor`'s pull decoder:
//! numbers, bounded strings and a depth-bounded skip of values nobody asked for.
//!
//! `minicbor` reads one item at a time and never builds a value tree, so every bound
//! (record count, nesting depth, string length) is the caller's, checked before anything
//! is allocated from a length the input claims.

use super::{ContentError, MAX_CBOR_DEPTH};
use crate::lwm2m::{ResourceType, ResourceValue};
use minicbor::Decoder;
use minicbor::data::Type;

/// A CBOR number as it came.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Num {
    I(i64),
    U(u64),
    F(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::U(u) => u as f64,
            Num::F(x) => x,
        }
    }
}

/// Malformed (or unsupported) CBOR at the decoder's position.
pub(crate) fn malformed(d: &Decoder<'_>) -> ContentError {
    ContentError::Cbor {
        offset: d.position(),
    }
}

pub(crate) fn datatype(d: &Decoder<'_>) -> Result<Type, ContentError> {
    d.datatype().map_err(|_| malformed(d))
}

/// Whether the next item is the break that ends an indefinite array or map; consumes it.
pub(crate) fn at_break(d: &mut Decoder<'_>) -> Result<bool, ContentError> {
    if datatype(d)? == Type::Break {
        d.set_position(d.position() + 1);
        Ok(true)
    } else {
        Ok(false)
    }
}

/// The next item as a number; `None` (nothing consumed) when it is not one, `Some(Err(()))`
/// for an integer below `i64::MIN` (which no LWM2M type holds).
pub(crate) fn number(d: &mut Decoder<'_>) -> Result<Option<Result<Num, ()>>, ContentError> {
    let n = match datatype(d)? {
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
            let u = d.u64().map_err(|_| malformed(d))?;
            Ok(i64::try_from(u).map_or(Num::U(u), Num::I))
        }
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
            let i = d.int().map_err(|_| malformed(d))?;
            i64::try_from(i).map(Num::I).map_err(|_| ())
        }
        Type::F16 | Type::F32 | Type::F64 => Ok(Num::F(d.f64().map_err(|_| malformed(d))?)),
        _ => return Ok(None),
    };
    Ok(Some(n))
}

/// A number as a value of the resource's type where it fits, else by its own shape (as
/// the SenML JSON decoder does).
pub(crate) fn number_value(n: Num, ty: Option<ResourceType>) -> ResourceValue {
    let integral = |x: f64| (x.fract() == 0.0 && x.abs() < 9.0e15).then_some(x as i64);
    match (ty, n) {
        (Some(ResourceType::Float), Num::F(x)) => return ResourceValue::Float(x),
        (Some(ResourceType::Float), Num::I(i)) => return ResourceValue::Float(i as f64),
        (Some(ResourceType::Float), Num::U(u)) => return ResourceValue::Float(u as f64),
        (Some(ResourceType::Time), Num::I(i)) => return ResourceValue::Time(i),
        (Some(ResourceType::Time), Num::F(x)) if integral(x).is_some() => {
            return ResourceValue::Time(x as i64);
        }
        (Some(ResourceType::Integer), Num::F(x)) if integral(x).is_some() => {
            return ResourceValue::Integer(x as i64);
        }
        (Some(ResourceType::UnsignedInteger), Num::I(i)) if i >= 0 => {
            return ResourceValue::UnsignedInteger(i as u64);
        }
        (Some(ResourceType::UnsignedInteger), Num::F(x)) if integral(x).is_some_and(|i| i >= 0) => {
            return ResourceValue::UnsignedInteger(x as u64);
        }
        _ => {}
    }
    match n {
        Num::I(i) => ResourceValue::Integer(i),
        Num::U(u) => ResourceValue::UnsignedInteger(u),
        Num::F(x) => ResourceValue::Float(x),
    }
}

/// A text string of at most `max` bytes (definite or indefinite length). `Ok(None)`:
/// longer than `max`.
pub(crate) fn text(d: &mut Decoder<'_>, max: usize) -> Result<Option<String>, ContentError> {
    match datatype(d)? {
        Type::String => {
            let s = d.str().map_err(|_| malformed(d))?;
            Ok((s.len() <= max).then(|| s.to_owned()))
        }
        Type::StringIndef => {
            let mut out = String::new();
            let mut too_long = false;
            // The iterator borrows the decoder: a bad chunk ends the loop, and the error
            // names where the decoder stopped once the borrow is over.
            let mut failed = false;
            let at = d.position();
            for part in d
                .str_iter()
                .map_err(|_| ContentError::Cbor { offset: at })?
            {
                match part {
                    Ok(part) if out.len() + part.len() > max => too_long = true,
                    Ok(part) => out.push_str(part),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                return Err(malformed(d));
            }
            Ok((!too_long).then_some(out))
        }
        _ => Err(malformed(d)),
    }
}

/// A byte string (definite or indefinite length); the payload bound limits its size.
pub(crate) fn bytes(d: &mut Decoder<'_>) -> Result<Vec<u8>, ContentError> {
    match datatype(d)? {
        Type::Bytes => Ok(d.bytes().map_err(|_| malformed(d))?.to_vec()),
        Type::BytesIndef => {
            let mut out = Vec::new();
            // As for text: the error's offset is read after the iterator's borrow ends.
            let mut failed = false;
            let at = d.position();
            for part in d
                .bytes_iter()
                .map_err(|_| ContentError::Cbor { offset: at })?
            {
                match part {
                    Ok(part) => out.extend_from_slice(part),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                return Err(malformed(d));
            }
            Ok(out)
        }
        _ => Err(malformed(d)),
    }
}

/// Skips one item that `depth` containers enclose; nothing may be enclosed by more than
/// [`MAX_CBOR_DEPTH`] arrays, maps and tags. Every item skipped consumes at least one byte, so a claimed length
/// larger than the payload ends at its end with an error.
pub(crate) fn skip(d: &mut Decoder<'_>, depth: usize) -> Result<(), ContentError> {
    let ty = datatype(d)?;
    let container = matches!(
        ty,
        Type::Array | Type::ArrayIndef | Type::Map | Type::MapIndef | Type::Tag
    );
    // An item at `depth` is enclosed by `depth` containers; a container here would put
    // its items one level deeper.
    if container && depth >= MAX_CBOR_DEPTH {
        return Err(ContentError::TooDeep {
            offset: d.position(),
            max: MAX_CBOR_DEPTH,
        });
    }
    match ty {
        Type::Array | Type::ArrayIndef => {
            match d.array().map_err(|_| malformed(d))? {
                Some(n) => {
                    for _ in 0..n {
                        skip(d, depth + 1)?;
                    }
                }
                None => {
                    while !at_break(d)? {
                        skip(d, depth + 1)?;
                    }
                }
            }
            Ok(())
        }
        Type::Map | Type::MapIndef => {
            match d.map().map_err(|_| malformed(d))? {
                Some(n) => {
                    for _ in 0..n {
                        skip(d, depth + 1)?;
                        skip(d, depth + 1)?;
                    }
                }
                None => {
                    while !at_break(d)? {
                        skip(d, depth + 1)?;
                        skip(d, depth + 1)?;
                    }
                }
            }
            Ok(())
        }
        Type::Tag => {
            d.tag().map_err(|_| malformed(d))?;
            skip(d, depth + 1)
        }
        Type::Break | Type::Unknown(_) => Err(malformed(d)),
        Type::StringIndef => text(d, usize::MAX).map(drop),
        Type::BytesIndef => bytes(d).map(drop),
        _ => d.skip().map_err(|_| malformed(d)),
    }
}

/// Skips any tags in front of the next item, which `depth` containers enclose. Each tag
/// is one level more, as in [`skip`] (tags stripped uncounted let a field nest deeper than
/// [`MAX_CBOR_DEPTH`]); returns the depth of the item after them.
pub(crate) fn untag_at(d: &mut Decoder<'_>, depth: usize) -> Result<usize, ContentError> {
    untag_keeping(d, depth, &[])
}

/// Skips tags in front of the next item up to one in `keep`, which stays to be read; the
/// item (or the kept tag) is enclosed by `depth` containers. Each tag is one level, as in
/// [`untag_at`], the kept one included: a tag at [`MAX_CBOR_DEPTH`] is
/// [`ContentError::TooDeep`]. Returns the depth of the item after the skipped tags.
pub(crate) fn untag_keeping(
    d: &mut Decoder<'_>,
    mut depth: usize,
    keep: &[u64],
) -> Result<usize, ContentError> {
    while datatype(d)? == Type::Tag {
        if depth >= MAX_CBOR_DEPTH {
            return Err(ContentError::TooDeep {
                offset: d.position(),
                max: MAX_CBOR_DEPTH,
            });
        }
        let at = d.position();
        let tag = d.tag().map_err(|_| malformed(d))?;
        if keep.iter().any(|k| minicbor::data::Tag::new(*k) == tag) {
            d.set_position(at);
            break;
        }
        depth += 1;
    }
    Ok(depth)
}

/// The shortest float encoding that keeps `x` exactly (f32 or f64).
pub(crate) fn float<W: minicbor::encode::Write>(
    e: &mut minicbor::Encoder<W>,
    x: f64,
) -> Result<(), minicbor::encode::Error<W::Error>> {
    if (x as f32) as f64 == x || x.is_nan() {
        e.f32(x as f32)?;
    } else {
        e.f64(x)?;
    }
    Ok(())
}
