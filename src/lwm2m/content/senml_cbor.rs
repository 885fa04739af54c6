//! SenML CBOR (112, RFC 8428 §6 as profiled by LWM2M 1.1 §7.4.6): the SenML JSON records
//! with integer labels (`bver` -1, `bn` -2, `bt` -3, `bv` -5, `n` 0, `v` 2, `vs` 3, `vb` 4,
//! `t` 6, `vd` 8 as a byte string) and the LWM2M object link under the text label `"vlo"`.
//!
//! The same rules as SenML JSON: `bn`, `bt` and `bv` are sticky, a name not starting with
//! `/` is relative to the request path, `bv` is added to `v`, a `bver` above 10 is refused,
//! a value field of the wrong kind for a known type is a type mismatch, the records come
//! out oldest first by time (`bt` + `t`) so the last value of a path is its latest,
//! unknown labels are skipped except must-understand text labels (ending in `_`), names
//! are at most 64 bytes (`bn` + `n`), at most [`MAX_VALUES`] records. Definite and
//! indefinite lengths are both read; nesting below a record (in fields we skip, tags
//! included) stops at [`MAX_CBOR_DEPTH`]; tags in front of a value are skipped, each
//! counted as a level. Bytes after the record array are an error.

#[cfg(doc)]
use super::MAX_CBOR_DEPTH;
use super::cbor::{self, Num};
use super::senml_json::{
    Kind, MAX_NAME, bad, base_name, check_kind, check_version, newest_last, record_path,
    with_base_value,
};
use super::text::parse_text_value;
use super::{ContentError, MAX_VALUES, RecordProblem, type_key};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue};
use minicbor::data::Type;
use minicbor::{Decoder, Encoder};

const BVER: i64 = -1;
const BN: i64 = -2;
const BT: i64 = -3;
const BV: i64 = -5;
pub(super) const N: i64 = 0;
const V: i64 = 2;
const VS: i64 = 3;
const VB: i64 = 4;
const T: i64 = 6;
const VD: i64 = 8;
const VLO: &str = "vlo";

/// A record's key: an integer label or a text label.
enum Key {
    Label(i64),
    Text(String),
}

fn key(d: &mut Decoder<'_>, index: usize) -> Result<Key, ContentError> {
    match cbor::datatype(d)? {
        Type::String | Type::StringIndef => cbor::text(d, MAX_NAME)?
            .map(Key::Text)
            .ok_or(bad(index, RecordProblem::TooLong)),
        _ => match cbor::number(d)? {
            Some(Ok(Num::I(i))) => Ok(Key::Label(i)),
            // A huge positive or negative label, or a float: no SenML field; skip it.
            Some(_) => Ok(Key::Label(i64::MIN)),
            None => Err(bad(index, RecordProblem::WrongFieldType("label"))),
        },
    }
}

/// The base fields in force, sticky across records (RFC 8428 §4.1).
#[derive(Default)]
pub(super) struct Base {
    pub(super) bn: String,
    bt: f64,
    bv: Option<Num>,
}

pub(super) struct Record {
    pub(super) n: Option<String>,
    value: Option<Field>,
    /// Its resolved time, `bt` + `t`.
    time: f64,
}

/// A value field as it came, typed later against the resource.
enum Field {
    Num(Num),
    Str(String),
    Bool(bool),
    Data(Vec<u8>),
    Link(String),
}

/// One record; with `values` false (a path list) only its names are read and every other
/// field is skipped, as the JSON path list ignores them.
fn record(
    d: &mut Decoder<'_>,
    index: usize,
    base: &mut Base,
    values: bool,
) -> Result<Record, ContentError> {
    let len = match cbor::datatype(d)? {
        Type::Map | Type::MapIndef => d.map().map_err(|_| cbor::malformed(d))?,
        _ => return Err(bad(index, RecordProblem::NotAnObject)),
    };
    let mut rec = Record {
        n: None,
        value: None,
        time: 0.0,
    };
    // Fields in a map come in any order: `t` and `v` are resolved against `bt` and `bv`
    // once all are read.
    let mut t = 0.0;
    let mut remaining = len;
    loop {
        match &mut remaining {
            Some(0) => break,
            Some(k) => *k -= 1,
            None => {
                if cbor::at_break(d)? {
                    break;
                }
            }
        }
        let k = key(d, index)?;
        // The record map's values are enclosed by the array and the map.
        let depth = cbor::untag_at(d, 2)?;
        let mut set = |f: Field| {
            if rec.value.replace(f).is_some() {
                return Err(bad(index, RecordProblem::SeveralValues));
            }
            Ok(())
        };
        let wrong = |name| bad(index, RecordProblem::WrongFieldType(name));
        let string = |d: &mut Decoder<'_>, name, max| match cbor::datatype(d)? {
            Type::String | Type::StringIndef => {
                cbor::text(d, max)?.ok_or(bad(index, RecordProblem::TooLong))
            }
            _ => Err(wrong(name)),
        };
        // Below i64::MIN (`Some(Err(()))`): as far in the past as an i64 goes.
        let time = |n: Result<Num, ()>| n.map_or(i64::MIN as f64, Num::as_f64);
        match k {
            Key::Label(BN) => base.bn = string(d, "bn", MAX_NAME)?,
            Key::Label(N) => rec.n = Some(string(d, "n", MAX_NAME)?),
            Key::Text(t) if t.ends_with('_') => {
                return Err(bad(index, RecordProblem::MustUnderstand(t)));
            }
            _ if !values => cbor::skip(d, depth)?,
            Key::Label(BT) => match cbor::number(d)? {
                Some(n) => base.bt = time(n),
                None => return Err(wrong("bt")),
            },
            Key::Label(T) => match cbor::number(d)? {
                Some(n) => t = time(n),
                None => return Err(wrong("t")),
            },
            Key::Label(BVER) => match cbor::number(d)? {
                Some(Ok(n)) => check_version(n.as_f64(), index)?,
                // Below i64::MIN: not newer.
                Some(Err(())) => {}
                None => return Err(wrong("bver")),
            },
            Key::Label(BV) => match cbor::number(d)? {
                Some(Ok(n)) => base.bv = Some(n),
                Some(Err(())) => return Err(bad(index, RecordProblem::NumberOutOfRange)),
                None => return Err(wrong("bv")),
            },
            Key::Label(V) => match cbor::number(d)? {
                Some(Ok(n)) => set(Field::Num(n))?,
                Some(Err(())) => return Err(bad(index, RecordProblem::NumberOutOfRange)),
                None => return Err(wrong("v")),
            },
            Key::Label(VS) => set(Field::Str(string(d, "vs", usize::MAX)?))?,
            Key::Label(VB) => match cbor::datatype(d)? {
                Type::Bool => set(Field::Bool(d.bool().map_err(|_| cbor::malformed(d))?))?,
                _ => return Err(wrong("vb")),
            },
            Key::Label(VD) => match cbor::datatype(d)? {
                Type::Bytes | Type::BytesIndef => set(Field::Data(cbor::bytes(d)?))?,
                _ => return Err(wrong("vd")),
            },
            Key::Text(t) if t == VLO => set(Field::Link(string(d, "vlo", MAX_NAME)?))?,
            Key::Label(_) | Key::Text(_) => cbor::skip(d, depth)?,
        }
    }
    if let Some(Field::Num(v)) = rec.value {
        rec.value = Some(Field::Num(with_base_value(base.bv, v, index)?));
    }
    rec.time = base.bt + t;
    Ok(rec)
}

fn typed(
    index: usize,
    field: Field,
    ty: Option<ResourceType>,
) -> Result<ResourceValue, ContentError> {
    // A field's own form first (as in JSON), then whether its kind fits the type.
    let kind = |k| check_kind(k, ty, index);
    Ok(match field {
        Field::Num(n) => {
            kind(Kind::Number)?;
            cbor::number_value(n, ty)
        }
        Field::Str(s) => match ty {
            None | Some(ResourceType::String) | Some(ResourceType::None) => {
                ResourceValue::String(s)
            }
            Some(t) => parse_text_value(&s, t).ok_or(bad(index, RecordProblem::TypeMismatch(t)))?,
        },
        Field::Bool(b) => {
            kind(Kind::Boolean)?;
            ResourceValue::Boolean(b)
        }
        Field::Data(b) => {
            kind(Kind::Data)?;
            ResourceValue::Opaque(b)
        }
        Field::Link(s) => {
            let link = parse_text_value(&s, ResourceType::ObjectLink)
                .ok_or(bad(index, RecordProblem::BadObjectLink))?;
            kind(Kind::Link)?;
            link
        }
    })
}

/// A SenML CBOR pack read record by record: the top-level array (definite or
/// indefinite length), at most `max` records (one more is
/// [`ContentError::TooManyValues`]), the sticky base fields, and no bytes after the array.
/// Values and path lists (`super::paths`, `values` false: names only) both read through
/// it.
pub(super) struct Pack<'b> {
    d: Decoder<'b>,
    len: Option<u64>,
    index: usize,
    max: usize,
    values: bool,
    /// The base fields in force for the record just read.
    pub(super) base: Base,
}

impl<'b> Pack<'b> {
    pub(super) fn open(bytes: &'b [u8], max: usize, values: bool) -> Result<Self, ContentError> {
        let mut d = Decoder::new(bytes);
        let len = match cbor::datatype(&d)? {
            Type::Array | Type::ArrayIndef => d.array().map_err(|_| cbor::malformed(&d))?,
            _ => return Err(bad(0, RecordProblem::NotAnObject)),
        };
        if len.is_some_and(|n| n > max as u64) {
            return Err(ContentError::TooManyValues { max });
        }
        Ok(Pack {
            d,
            len,
            index: 0,
            max,
            values,
            base: Base::default(),
        })
    }

    /// How many records the array claims (never more than `max`), when it says.
    pub(super) fn claimed(&self) -> Option<usize> {
        self.len.map(|n| n as usize)
    }

    /// The next record and its index; `None` after the last one (the whole payload read).
    pub(super) fn next_record(&mut self) -> Result<Option<(usize, Record)>, ContentError> {
        let end = match self.len {
            Some(n) => self.index as u64 == n,
            None => cbor::at_break(&mut self.d)?,
        };
        if end {
            if self.d.position() != self.d.input().len() {
                return Err(cbor::malformed(&self.d));
            }
            return Ok(None);
        }
        if self.index >= self.max {
            return Err(ContentError::TooManyValues { max: self.max });
        }
        let index = self.index;
        let rec = record(&mut self.d, index, &mut self.base, self.values)?;
        self.index += 1;
        Ok(Some((index, rec)))
    }
}

pub(crate) fn decode(
    bytes: &[u8],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    let mut pack = Pack::open(bytes, MAX_VALUES, true)?;
    // Never reserve from a claimed length beyond what the payload can hold (a record
    // takes at least one byte).
    let mut out = Vec::with_capacity(pack.claimed().map_or(0, |n| n.min(bytes.len())));
    let mut times = Vec::with_capacity(out.capacity());
    while let Some((index, rec)) = pack.next_record()? {
        let path = record_path(base, &pack.base.bn, rec.n.as_deref().unwrap_or(""), index)?;
        let field = rec.value.ok_or(bad(index, RecordProblem::NoValue))?;
        let value = typed(index, field, types(&type_key(&path)))?;
        out.push((path, value));
        times.push(rec.time);
    }
    Ok(Content {
        values: newest_last(out, &times),
    })
}

pub(crate) fn encode(base: &Lwm2mPath, content: &Content) -> Result<Vec<u8>, ContentError> {
    let bn = base_name(base, content);
    let mut e = Encoder::new(Vec::with_capacity(16 * content.values.len() + bn.len()));
    let unencodable = |path: &Lwm2mPath| ContentError::UnencodableValue { path: *path };
    e.array(content.values.len() as u64)
        .map_err(|_| unencodable(base))?;
    for (i, (path, v)) in content.values.iter().enumerate() {
        let full = path.to_string();
        let rel = full.get(bn.len()..).unwrap_or("");
        let with_bn = i == 0 && !bn.is_empty();
        let mut write = || -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
            e.map(if with_bn { 3 } else { 2 })?;
            if with_bn {
                e.i64(BN)?.str(&bn)?;
            }
            e.i64(N)?.str(rel)?;
            match v {
                ResourceValue::String(s) => {
                    e.i64(VS)?.str(s)?;
                }
                ResourceValue::Integer(i) | ResourceValue::Time(i) => {
                    e.i64(V)?.i64(*i)?;
                }
                ResourceValue::UnsignedInteger(u) => {
                    e.i64(V)?.u64(*u)?;
                }
                ResourceValue::Float(x) => {
                    e.i64(V)?;
                    cbor::float(&mut e, *x)?;
                }
                ResourceValue::Boolean(b) => {
                    e.i64(VB)?.bool(*b)?;
                }
                ResourceValue::Opaque(b) => {
                    e.i64(VD)?.bytes(b)?;
                }
                ResourceValue::ObjectLink(o, i) => {
                    e.str(VLO)?.str(&format!("{o}:{i}"))?;
                }
            }
            Ok(())
        };
        write().map_err(|_| unencodable(path))?;
    }
    Ok(e.into_writer())
}
