//! SenML JSON (110, RFC 8428 as profiled by LWM2M 1.1 §7.4.5) and, read tolerantly, the
//! LWM2M 1.0 JSON format (11543, pre-standard 1543: `{"bn": .., "e": [{"n", "v" | "sv" |
//! "bv" | "ov"}]}`).
//!
//! A record's path is the current base name (`bn`, sticky across records) followed by its
//! name (`n`); a name that does not start with `/` is taken relative to the request path.
//! Timestamps (`bt`, `t`) are validated as numbers and dropped: [`Content`] holds the
//! latest values, not a time series. Records for the same path are all kept, in order.
//! Unknown fields are ignored except SenML's must-understand ones (ending in `_`).
//! Both encode with the same base name (the deepest path every value lies strictly below).

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

/// Field names of one dialect.
struct Dialect {
    string: &'static [&'static str],
    boolean: &'static [&'static str],
    objlnk: &'static [&'static str],
}

const SENML: Dialect = Dialect {
    string: &["vs"],
    boolean: &["vb"],
    objlnk: &["vlo"],
};

/// LwM2M JSON 1.0 names, plus SenML's for clients that mix them.
const OLD_JSON: Dialect = Dialect {
    string: &["sv", "vs"],
    boolean: &["bv", "vb"],
    objlnk: &["ov", "vlo"],
};

struct Records<'a> {
    base: &'a Lwm2mPath,
    types: &'a dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
    dialect: &'a Dialect,
    bn: String,
    out: Vec<(Lwm2mPath, ResourceValue)>,
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

fn check_number(
    rec: &Map<String, Value>,
    key: &'static str,
    index: usize,
) -> Result<(), ContentError> {
    match rec.get(key) {
        None | Some(Value::Number(_)) => Ok(()),
        Some(_) => Err(bad(index, RecordProblem::WrongFieldType(key))),
    }
}

fn number_value(n: &serde_json::Number, ty: Option<ResourceType>) -> ResourceValue {
    let integral = n.as_f64().filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15);
    match ty {
        Some(ResourceType::Float) => {
            return ResourceValue::Float(n.as_f64().unwrap_or(0.0));
        }
        Some(ResourceType::Time) => {
            if let Some(i) = n.as_i64().or(integral.map(|x| x as i64)) {
                return ResourceValue::Time(i);
            }
        }
        Some(ResourceType::Integer) => {
            if let Some(i) = n.as_i64().or(integral.map(|x| x as i64)) {
                return ResourceValue::Integer(i);
            }
        }
        Some(ResourceType::UnsignedInteger) => {
            if let Some(u) = n.as_u64() {
                return ResourceValue::UnsignedInteger(u);
            }
        }
        _ => {}
    }
    if let Some(i) = n.as_i64() {
        ResourceValue::Integer(i)
    } else if let Some(u) = n.as_u64() {
        ResourceValue::UnsignedInteger(u)
    } else {
        // serde_json without arbitrary_precision always has an f64 here.
        ResourceValue::Float(n.as_f64().unwrap_or(0.0))
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
        check_number(rec, "bt", index)?;
        check_number(rec, "t", index)?;
        let n = opt_str(rec, "n", index)?.unwrap_or("");
        let path = record_path(self.base, &self.bn, n, index)?;
        let value = self.value(index, rec, &path)?;
        if self.out.len() >= MAX_VALUES {
            return Err(ContentError::TooManyValues { max: MAX_VALUES });
        }
        self.out.push((path, value));
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
        if let Some(v) = rec.get("v") {
            let Value::Number(n) = v else {
                return Err(bad(index, RecordProblem::WrongFieldType("v")));
            };
            set(number_value(n, ty))?;
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
                Some(Value::Bool(b)) => set(ResourceValue::Boolean(*b))?,
                Some(_) => return Err(bad(index, RecordProblem::WrongFieldType(k))),
            }
        }
        if let Some(s) = opt_str(rec, "vd", index)? {
            let b = base64url::decode(s).ok_or(bad(index, RecordProblem::BadBase64))?;
            set(ResourceValue::Opaque(b))?;
        }
        for &k in self.dialect.objlnk {
            if let Some(s) = opt_str(rec, k, index)? {
                let v = parse_text_value(s, ResourceType::ObjectLink)
                    .ok_or(bad(index, RecordProblem::BadObjectLink))?;
                set(v)?;
            }
        }
        found.ok_or(bad(index, RecordProblem::NoValue))
    }
}

fn records(
    list: &[Value],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
    dialect: &Dialect,
    bn: String,
) -> Result<Content, ContentError> {
    if list.len() > MAX_VALUES {
        return Err(ContentError::TooManyValues { max: MAX_VALUES });
    }
    let mut r = Records {
        base,
        types,
        dialect,
        bn,
        out: Vec::with_capacity(list.len()),
    };
    for (index, rec) in list.iter().enumerate() {
        r.record(index, rec)?;
    }
    Ok(Content { values: r.out })
}

pub(crate) fn decode_senml(
    bytes: &[u8],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    match parse_json(bytes)? {
        Value::Array(list) => records(&list, base, types, &SENML, String::new()),
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
        Value::Array(list) => records(&list, base, types, &OLD_JSON, String::new()),
        Value::Object(doc) => {
            let bn = match doc.get("bn") {
                None => String::new(),
                Some(Value::String(s)) if s.len() <= MAX_NAME => s.clone(),
                Some(Value::String(_)) => return Err(bad(0, RecordProblem::TooLong)),
                Some(_) => return Err(bad(0, RecordProblem::WrongFieldType("bn"))),
            };
            check_number(&doc, "bt", 0)?;
            match doc.get("e") {
                Some(Value::Array(list)) => records(list, base, types, &OLD_JSON, bn),
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
