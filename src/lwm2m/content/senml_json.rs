//! SenML JSON (110, RFC 8428 as profiled by LWM2M 1.1 §7.4.5) and, read tolerantly, the
//! LWM2M 1.0 JSON format (11543, pre-standard 1543: `{"bn": .., "e": [{"n", "v" | "sv" |
//! "bv" | "ov"}]}`).
//!
//! A record's path is the current base name (`bn`, sticky across records) followed by its
//! name (`n`); a name that does not start with `/` is taken relative to the request path.
//! The base value (`bv`, sticky, SenML only: LwM2M JSON's `bv` is a boolean) is added to
//! `v` (RFC 8428 §4.1); a pack whose `bver` is above 10 is refused (§4.4). Records for the
//! same path are all kept, but [`Content`] is applied in order, so the records come out
//! oldest first by their time (`bt` + `t`, [`newest_last`]): the last value of a path is
//! its latest. A value field of the wrong kind for the resource's known type (`vb` for an
//! integer, `v` for a string) is [`RecordProblem::TypeMismatch`]; `vs` is parsed as the
//! type. Unknown fields are ignored except SenML's must-understand ones (ending in `_`).
//! Both encode with the same base name (the deepest path every value lies strictly below).

use super::cbor::{self, Num};
use super::text::parse_text_value;
use super::{ContentError, MAX_VALUES, RecordProblem, base64url, type_key};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue, base64_encode};
use serde_json::{Map, Value};

/// Longest accepted `bn` + `n`, in bytes (the longest LWM2M path is 24 bytes). SenML CBOR
/// shares it.
pub(crate) const MAX_NAME: usize = 64;

/// The resource path a record names: base name `bn` + name `n`, relative to the request
/// path `base` when it does not start with `/`. SenML CBOR shares it.
pub(crate) fn record_path(
    base: &Lwm2mPath,
    bn: &str,
    n: &str,
    index: usize,
) -> Result<Lwm2mPath, ContentError> {
    if bn.len() + n.len() > MAX_NAME {
        return Err(bad(index, RecordProblem::TooLong));
    }
    let mut name = String::with_capacity(bn.len() + n.len() + 8);
    name.push_str(bn);
    name.push_str(n);
    if !name.starts_with('/') {
        let rel = name;
        name = base.to_string();
        if !name.ends_with('/') {
            name.push('/');
        }
        name.push_str(&rel);
    }
    let path: Lwm2mPath = name
        .parse()
        .map_err(|e| bad(index, RecordProblem::BadName(e)))?;
    if path.depth() < 3 {
        return Err(bad(index, RecordProblem::NotAResource(path)));
    }
    Ok(path)
}

/// The SenML base name for `content` addressed at `base`: the deepest path every value lies
/// strictly below, with a trailing `/` (empty at the root). SenML CBOR shares it.
pub(crate) fn base_name(base: &Lwm2mPath, content: &Content) -> String {
    let prefix = if content.values.iter().any(|(p, _)| p == base) {
        base.parent().unwrap_or(*base)
    } else {
        *base
    };
    if prefix.depth() == 0 {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, ContentError> {
    serde_json::from_slice(bytes).map_err(|e| ContentError::Json {
        line: e.line(),
        column: e.column(),
    })
}

pub(crate) fn bad(index: usize, problem: RecordProblem) -> ContentError {
    ContentError::BadRecord { index, problem }
}

/// The SenML version this crate reads (RFC 8428 §4.4); a pack whose `bver` is higher must
/// not be processed. SenML CBOR shares it.
pub(crate) fn check_version(bver: f64, index: usize) -> Result<(), ContentError> {
    if bver > 10.0 || bver.is_nan() {
        return Err(bad(index, RecordProblem::UnsupportedVersion));
    }
    Ok(())
}

/// `v` plus the base value in force (RFC 8428 §4.1): integers stay integers while the
/// sum fits one; anything with a float is a float. A sum out of range, integer or float
/// (two finite floats whose sum is infinite), is [`RecordProblem::NumberOutOfRange`]; a NaN
/// or infinity the record carried itself (SenML CBOR) stays what it is. SenML CBOR shares
/// it.
pub(crate) fn with_base_value(bv: Option<Num>, v: Num, index: usize) -> Result<Num, ContentError> {
    let Some(bv) = bv else {
        return Ok(v);
    };
    let int = |n| match n {
        Num::I(i) => Some(i128::from(i)),
        Num::U(u) => Some(i128::from(u)),
        Num::F(_) => None,
    };
    match (int(bv), int(v)) {
        // Two values within ±2^64 cannot overflow an i128.
        (Some(a), Some(b)) => {
            let sum = a + b;
            i64::try_from(sum)
                .map(Num::I)
                .or(u64::try_from(sum).map(Num::U))
                .map_err(|_| bad(index, RecordProblem::NumberOutOfRange))
        }
        _ => {
            let (a, b) = (bv.as_f64(), v.as_f64());
            let sum = a + b;
            if sum.is_finite() || !a.is_finite() || !b.is_finite() {
                Ok(Num::F(sum))
            } else {
                Err(bad(index, RecordProblem::NumberOutOfRange))
            }
        }
    }
}

/// What a SenML value field says its value is (`vs` aside: text is parsed as the type).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    /// `v`
    Number,
    /// `vb`
    Boolean,
    /// `vd`
    Data,
    /// `vlo`
    Link,
}

/// Refuses a value field whose kind contradicts the resource's known type, so that a
/// boolean never lands in an integer resource. Numbers go to any numeric type (integer,
/// unsigned, float, time, as [`cbor::number_value`] converts them); an unknown type or
/// an executable (no value type) takes anything. SenML CBOR shares it.
pub(crate) fn check_kind(
    kind: Kind,
    ty: Option<ResourceType>,
    index: usize,
) -> Result<(), ContentError> {
    match ty {
        Some(t) if !kind_fits(kind, t) => Err(bad(index, RecordProblem::TypeMismatch(t))),
        _ => Ok(()),
    }
}

/// Whether a value of this kind may go to a resource of type `ty` (see [`check_kind`]);
/// LwM2M CBOR checks its values' CBOR kinds by it too.
pub(crate) fn kind_fits(kind: Kind, ty: ResourceType) -> bool {
    use ResourceType as T;
    match ty {
        T::None => true,
        T::Integer | T::UnsignedInteger | T::Float | T::Time => kind == Kind::Number,
        T::Boolean => kind == Kind::Boolean,
        T::Opaque => kind == Kind::Data,
        T::ObjectLink => kind == Kind::Link,
        T::String => false,
    }
}

/// Puts decoded records oldest first by their resolved time (`bt` + `t`, one per value),
/// keeping pack order among equal times, because the hub applies [`Content`] in order and
/// the last value of a path must be its newest. Below 2^28 a time is relative to now
/// (RFC 8428 §4.5.3; no time is 0, now); the decoder has no clock, so it takes now to be
/// after every absolute time in the pack. SenML CBOR shares it.
pub(crate) fn newest_last(
    values: Vec<(Lwm2mPath, ResourceValue)>,
    times: &[f64],
) -> Vec<(Lwm2mPath, ResourceValue)> {
    if times.windows(2).all(|w| w[0].total_cmp(&w[1]).is_le()) {
        return values;
    }
    let key = |t: f64| (t.abs() < (1u64 << 28) as f64, t);
    let mut keyed: Vec<_> = times.iter().map(|t| key(*t)).zip(values).collect();
    // A stable sort: records of one time keep their pack order.
    keyed.sort_by(|(a, _), (b, _)| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    keyed.into_iter().map(|(_, v)| v).collect()
}

/// Field names of one dialect.
struct Dialect {
    string: &'static [&'static str],
    boolean: &'static [&'static str],
    objlnk: &'static [&'static str],
    /// SenML's base fields `bv` and `bver` (in LwM2M JSON `bv` is a boolean value).
    senml: bool,
}

const SENML: Dialect = Dialect {
    string: &["vs"],
    boolean: &["vb"],
    objlnk: &["vlo"],
    senml: true,
};

/// LwM2M JSON 1.0 names, plus SenML's for clients that mix them.
const OLD_JSON: Dialect = Dialect {
    string: &["sv", "vs"],
    boolean: &["bv", "vb"],
    objlnk: &["ov", "vlo"],
    senml: false,
};

struct Records<'a> {
    base: &'a Lwm2mPath,
    types: &'a dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
    dialect: &'a Dialect,
    bn: String,
    /// The base time and base value in force (sticky like `bn`).
    bt: f64,
    bv: Option<Num>,
    out: Vec<(Lwm2mPath, ResourceValue)>,
    /// Each record's resolved time, for [`newest_last`].
    times: Vec<f64>,
}

fn opt_str<'v>(
    rec: &'v Map<String, Value>,
    key: &'static str,
    index: usize,
) -> Result<Option<&'v str>, ContentError> {
    match rec.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(index, RecordProblem::WrongFieldType(key))),
    }
}

/// A numeric field as a number (`None` when absent); anything else is the wrong type.
fn opt_number(
    rec: &Map<String, Value>,
    key: &'static str,
    index: usize,
) -> Result<Option<Num>, ContentError> {
    match rec.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(num(n))),
        Some(_) => Err(bad(index, RecordProblem::WrongFieldType(key))),
    }
}

/// A JSON number as the CBOR decoder sees one, so both formats type numbers through
/// [`cbor::number_value`] alike (an integral `5.0` for an unsigned resource was a float
/// here and an unsigned integer in CBOR).
fn num(n: &serde_json::Number) -> Num {
    if let Some(i) = n.as_i64() {
        Num::I(i)
    } else if let Some(u) = n.as_u64() {
        Num::U(u)
    } else {
        // serde_json without arbitrary_precision always has an f64 here.
        Num::F(n.as_f64().unwrap_or(0.0))
    }
}

impl Records<'_> {
    fn record(&mut self, index: usize, rec: &Value) -> Result<(), ContentError> {
        let Value::Object(rec) = rec else {
            return Err(bad(index, RecordProblem::NotAnObject));
        };
        if let Some(k) = rec.keys().find(|k| k.ends_with('_')) {
            return Err(bad(index, RecordProblem::MustUnderstand(k.clone())));
        }
        if let Some(bn) = opt_str(rec, "bn", index)? {
            if bn.len() > MAX_NAME {
                return Err(bad(index, RecordProblem::TooLong));
            }
            self.bn = bn.to_owned();
        }
        if self.dialect.senml {
            if let Some(bver) = opt_number(rec, "bver", index)? {
                check_version(bver.as_f64(), index)?;
            }
            if let Some(bv) = opt_number(rec, "bv", index)? {
                self.bv = Some(bv);
            }
        }
        if let Some(bt) = opt_number(rec, "bt", index)? {
            self.bt = bt.as_f64();
        }
        let t = opt_number(rec, "t", index)?.map_or(0.0, Num::as_f64);
        let n = opt_str(rec, "n", index)?.unwrap_or("");
        let path = record_path(self.base, &self.bn, n, index)?;
        let value = self.value(index, rec, &path)?;
        if self.out.len() >= MAX_VALUES {
            return Err(ContentError::TooManyValues { max: MAX_VALUES });
        }
        self.out.push((path, value));
        self.times.push(self.bt + t);
        Ok(())
    }

    fn value(
        &self,
        index: usize,
        rec: &Map<String, Value>,
        path: &Lwm2mPath,
    ) -> Result<ResourceValue, ContentError> {
        let ty = (self.types)(&type_key(path));
        let mut found: Option<ResourceValue> = None;
        let mut set = |v: ResourceValue| -> Result<(), ContentError> {
            if found.replace(v).is_some() {
                return Err(bad(index, RecordProblem::SeveralValues));
            }
            Ok(())
        };
        if let Some(v) = opt_number(rec, "v", index)? {
            check_kind(Kind::Number, ty, index)?;
            let v = with_base_value(self.bv, v, index)?;
            set(cbor::number_value(v, ty))?;
        }
        for &k in self.dialect.string {
            if let Some(s) = opt_str(rec, k, index)? {
                let v = match ty {
                    None | Some(ResourceType::String) | Some(ResourceType::None) => {
                        ResourceValue::String(s.to_owned())
                    }
                    Some(t) => {
                        parse_text_value(s, t).ok_or(bad(index, RecordProblem::TypeMismatch(t)))?
                    }
                };
                set(v)?;
            }
        }
        for &k in self.dialect.boolean {
            match rec.get(k) {
                None => {}
                Some(Value::Bool(b)) => {
                    check_kind(Kind::Boolean, ty, index)?;
                    set(ResourceValue::Boolean(*b))?
                }
                Some(_) => return Err(bad(index, RecordProblem::WrongFieldType(k))),
            }
        }
        if let Some(s) = opt_str(rec, "vd", index)? {
            let b = base64url::decode(s).ok_or(bad(index, RecordProblem::BadBase64))?;
            check_kind(Kind::Data, ty, index)?;
            set(ResourceValue::Opaque(b))?;
        }
        for &k in self.dialect.objlnk {
            if let Some(s) = opt_str(rec, k, index)? {
                let v = parse_text_value(s, ResourceType::ObjectLink)
                    .ok_or(bad(index, RecordProblem::BadObjectLink))?;
                check_kind(Kind::Link, ty, index)?;
                set(v)?;
            }
        }
        found.ok_or(bad(index, RecordProblem::NoValue))
    }
}

/// The records of `list`, with the base name `bn` and base time `bt` a LwM2M JSON 1.0
/// document gives (empty and 0 for SenML).
fn records(
    list: &[Value],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
    dialect: &Dialect,
    (bn, bt): (String, f64),
) -> Result<Content, ContentError> {
    if list.len() > MAX_VALUES {
        return Err(ContentError::TooManyValues { max: MAX_VALUES });
    }
    let mut r = Records {
        base,
        types,
        dialect,
        bn,
        bt,
        bv: None,
        out: Vec::with_capacity(list.len()),
        times: Vec::with_capacity(list.len()),
    };
    for (index, rec) in list.iter().enumerate() {
        r.record(index, rec)?;
    }
    Ok(Content {
        values: newest_last(r.out, &r.times),
    })
}

pub(crate) fn decode_senml(
    bytes: &[u8],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    match parse_json(bytes)? {
        Value::Array(list) => records(&list, base, types, &SENML, (String::new(), 0.0)),
        _ => Err(bad(0, RecordProblem::NotAnObject)),
    }
}

pub(crate) fn decode_lwm2m_json(
    bytes: &[u8],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    match parse_json(bytes)? {
        // Some pre-standard clients already send SenML under 1543.
        Value::Array(list) => records(&list, base, types, &OLD_JSON, (String::new(), 0.0)),
        Value::Object(doc) => {
            let bn = match doc.get("bn") {
                None => String::new(),
                Some(Value::String(s)) if s.len() <= MAX_NAME => s.clone(),
                Some(Value::String(_)) => return Err(bad(0, RecordProblem::TooLong)),
                Some(_) => return Err(bad(0, RecordProblem::WrongFieldType("bn"))),
            };
            let bt = opt_number(&doc, "bt", 0)?.map_or(0.0, Num::as_f64);
            match doc.get("e") {
                Some(Value::Array(list)) => records(list, base, types, &OLD_JSON, (bn, bt)),
                _ => Err(bad(0, RecordProblem::WrongFieldType("e"))),
            }
        }
        _ => Err(bad(0, RecordProblem::NotAnObject)),
    }
}

pub(crate) fn encode_senml(base: &Lwm2mPath, content: &Content) -> Result<Vec<u8>, ContentError> {
    let (bn, records) = encode_records(base, content, &SENML, true)?;
    let mut records = records;
    if let (Some(Value::Object(first)), false) = (records.first_mut(), bn.is_empty()) {
        // `bn` leads the first record (RFC 8428 §4.1 does not require it, but readers look there).
        let mut rec = Map::new();
        rec.insert("bn".into(), Value::String(bn));
        rec.append(first);
        *first = rec;
    }
    serde_json::to_vec(&Value::Array(records))
        .map_err(|_| ContentError::UnencodableValue { path: *base })
}

/// LWM2M 1.0 JSON (11543): `{"bn": .., "e": [{"n": .., "v" | "sv" | "bv" | "ov": ..}]}`,
/// opaque values as standard base64 in `sv` (LWM2M 1.0 §6.4.4).
pub(crate) fn encode_lwm2m_json(
    base: &Lwm2mPath,
    content: &Content,
) -> Result<Vec<u8>, ContentError> {
    let (bn, records) = encode_records(base, content, &OLD_JSON, false)?;
    let mut doc = Map::new();
    doc.insert("bn".into(), Value::String(bn));
    doc.insert("e".into(), Value::Array(records));
    serde_json::to_vec(&Value::Object(doc))
        .map_err(|_| ContentError::UnencodableValue { path: *base })
}

/// The base name and one record per value, named relative to it, with field names from
/// `dialect` (its first name of each kind); opaque as base64url `vd` when `senml`.
fn encode_records(
    base: &Lwm2mPath,
    content: &Content,
    dialect: &Dialect,
    senml: bool,
) -> Result<(String, Vec<Value>), ContentError> {
    let bn = base_name(base, content);
    let mut out = Vec::with_capacity(content.values.len());
    for (path, v) in &content.values {
        let mut rec = Map::new();
        let full = path.to_string();
        let rel = if bn.is_empty() {
            &full[..]
        } else {
            &full[bn.len()..]
        };
        rec.insert("n".into(), Value::String(rel.to_owned()));
        let (k, val) = match v {
            ResourceValue::String(s) => (dialect.string[0], Value::String(s.clone())),
            ResourceValue::Integer(i) | ResourceValue::Time(i) => ("v", Value::from(*i)),
            ResourceValue::UnsignedInteger(u) => ("v", Value::from(*u)),
            ResourceValue::Float(x) => (
                "v",
                serde_json::Number::from_f64(*x)
                    .map(Value::Number)
                    .ok_or(ContentError::UnencodableValue { path: *path })?,
            ),
            ResourceValue::Boolean(b) => (dialect.boolean[0], Value::Bool(*b)),
            ResourceValue::Opaque(b) if senml => ("vd", Value::String(base64url::encode(b))),
            ResourceValue::Opaque(b) => (dialect.string[0], Value::String(base64_encode(b))),
            ResourceValue::ObjectLink(o, i) => {
                (dialect.objlnk[0], Value::String(format!("{o}:{i}")))
            }
        };
        rec.insert(k.into(), val);
        out.push(Value::Object(rec));
    }
    Ok((bn, out))
}
