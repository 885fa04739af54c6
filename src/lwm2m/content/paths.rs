//! Path lists: the bodies of Read-Composite and Observe-Composite requests (LWM2M 1.1
//! §5.4.5, §5.5.2.2), SenML records that carry a name and no value, in SenML JSON (110)
//! or SenML CBOR (112): `[{"n":"/3/0/0"},{"n":"/3/0/9"}]`, or with a base name,
//! `[{"bn":"/3/0/","n":"0"},{"n":"9"}]`.
//!
//! Rules: `bn` is sticky as in any SenML pack; a name (`bn` + `n`) must be absolute (a
//! composite request has no request path to be relative to: a relative one is
//! [`RecordProblem::RelativeName`]) and may address an object, an instance, a resource or a
//! resource instance; a path named twice is kept once, at its first place; value fields
//! are ignored (a Write-Composite body is ordinary SenML content, decoded by
//! [`decode`](super::decode) at the root). At most [`MAX_COMPOSITE_PATHS`] records: one
//! more is [`ContentError::TooManyValues`] (a device answers 4.13).

use super::senml_cbor;
use super::senml_json::{MAX_NAME, bad};
use super::{ContentError, ContentFormat, RecordProblem};
use crate::lwm2m::Lwm2mPath;
use serde_json::Value;

/// The most paths one composite request may name. A device's whole object tree rarely
/// has more than a few hundred resources; a list beyond this is refused, not truncated.
pub const MAX_COMPOSITE_PATHS: usize = 1_024;

/// The paths a composite request's body names. `format` must be SenML JSON or SenML CBOR
/// (anything else is [`ContentError::UnsupportedFormat`]).
///
/// ```
/// use twinhub::lwm2m::content::{ContentFormat, decode_paths};
/// use twinhub::Lwm2mPath;
///
/// let body = br#"[{"bn":"/3/0/","n":"0"},{"n":"9"},{"bn":"/5/","n":"0"}]"#;
/// let paths = decode_paths(ContentFormat::SenmlJson, body).unwrap();
/// assert_eq!(
///     paths,
///     [Lwm2mPath::resource(3, 0, 0), Lwm2mPath::resource(3, 0, 9), Lwm2mPath::instance(5, 0)]
/// );
/// ```
pub fn decode_paths(format: ContentFormat, bytes: &[u8]) -> Result<Vec<Lwm2mPath>, ContentError> {
    if bytes.len() > super::MAX_PAYLOAD {
        return Err(ContentError::TooLarge {
            len: bytes.len(),
            max: super::MAX_PAYLOAD,
        });
    }
    let mut list = PathList::default();
    match format {
        ContentFormat::SenmlJson => {
            let doc: Value = serde_json::from_slice(bytes).map_err(|e| ContentError::Json {
                line: e.line(),
                column: e.column(),
            })?;
            let Value::Array(records) = doc else {
                return Err(bad(0, RecordProblem::NotAnObject));
            };
            if records.len() > MAX_COMPOSITE_PATHS {
                return Err(too_many());
            }
            for (index, rec) in records.iter().enumerate() {
                let Value::Object(rec) = rec else {
                    return Err(bad(index, RecordProblem::NotAnObject));
                };
                if let Some(k) = rec.keys().find(|k| k.ends_with('_')) {
                    return Err(bad(index, RecordProblem::MustUnderstand(k.clone())));
                }
                let field = |key: &'static str| match rec.get(key) {
                    None => Ok(None),
                    Some(Value::String(s)) if s.len() <= MAX_NAME => Ok(Some(s.as_str())),
                    Some(Value::String(_)) => Err(bad(index, RecordProblem::TooLong)),
                    Some(_) => Err(bad(index, RecordProblem::WrongFieldType(key))),
                };
                if let Some(bn) = field("bn")? {
                    list.bn = bn.to_owned();
                }
                let n = field("n")?.unwrap_or("");
                list.push(index, n)?;
            }
        }
        ContentFormat::SenmlCbor => {
            let mut pack = senml_cbor::Pack::open(bytes, MAX_COMPOSITE_PATHS, false)?;
            while let Some((index, rec)) = pack.next_record()? {
                list.bn.clone_from(&pack.base.bn);
                list.push(index, rec.n.as_deref().unwrap_or(""))?;
            }
        }
        other => return Err(ContentError::UnsupportedFormat(other)),
    }
    Ok(list.paths)
}

/// The body of a composite request naming `paths`, in SenML JSON or SenML CBOR: one
/// record per path with its absolute name (no base name), in the order given.
///
/// ```
/// use twinhub::lwm2m::content::{ContentFormat, decode_paths, encode_paths};
/// use twinhub::Lwm2mPath;
///
/// let paths = [Lwm2mPath::instance(3, 0), Lwm2mPath::resource(5, 0, 3)];
/// let body = encode_paths(ContentFormat::SenmlJson, &paths).unwrap();
/// assert_eq!(body, br#"[{"n":"/3/0"},{"n":"/5/0/3"}]"#);
/// let cbor = encode_paths(ContentFormat::SenmlCbor, &paths).unwrap();
/// assert_eq!(decode_paths(ContentFormat::SenmlCbor, &cbor).unwrap(), paths);
/// ```
pub fn encode_paths(format: ContentFormat, paths: &[Lwm2mPath]) -> Result<Vec<u8>, ContentError> {
    if paths.len() > MAX_COMPOSITE_PATHS {
        return Err(too_many());
    }
    match format {
        ContentFormat::SenmlJson => {
            let records: Vec<Value> = paths
                .iter()
                .map(|p| serde_json::json!({ "n": p.to_string() }))
                .collect();
            Ok(serde_json::to_vec(&records).expect("strings always serialise"))
        }
        ContentFormat::SenmlCbor => {
            let mut e = minicbor::Encoder::new(Vec::with_capacity(12 * paths.len() + 2));
            let mut write = || -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
                e.array(paths.len() as u64)?;
                for p in paths {
                    e.map(1)?.i64(senml_cbor::N)?.str(&p.to_string())?;
                }
                Ok(())
            };
            write().expect("writing to a Vec cannot fail");
            Ok(e.into_writer())
        }
        other => Err(ContentError::UnsupportedFormat(other)),
    }
}

fn too_many() -> ContentError {
    ContentError::TooManyValues {
        max: MAX_COMPOSITE_PATHS,
    }
}

/// The paths decoded so far and the sticky base name.
#[derive(Default)]
struct PathList {
    bn: String,
    paths: Vec<Lwm2mPath>,
}

impl PathList {
    fn push(&mut self, index: usize, n: &str) -> Result<(), ContentError> {
        if self.bn.len() + n.len() > MAX_NAME {
            return Err(bad(index, RecordProblem::TooLong));
        }
        let name = format!("{}{n}", self.bn);
        if !name.starts_with('/') {
            return Err(bad(index, RecordProblem::RelativeName(name)));
        }
        let path: Lwm2mPath = name
            .parse()
            .map_err(|e| bad(index, RecordProblem::BadName(e)))?;
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [ContentFormat; 2] = [ContentFormat::SenmlJson, ContentFormat::SenmlCbor];

    fn cbor_records(names: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut e = minicbor::Encoder::new(Vec::new());
        e.array(names.len() as u64).unwrap();
        for (n, bn) in names {
            e.map(if bn.is_some() { 2 } else { 1 }).unwrap();
            if let Some(bn) = bn {
                e.i64(-2).unwrap().str(bn).unwrap();
            }
            e.i64(senml_cbor::N).unwrap().str(n).unwrap();
        }
        e.into_writer()
    }

    #[test]
    fn every_depth_round_trips_in_both_formats() {
        let paths = [
            Lwm2mPath::object(3),
            Lwm2mPath::instance(5, 0),
            Lwm2mPath::resource(3, 0, 9),
            Lwm2mPath::resource_instance(3, 0, 6, 1),
        ];
        for f in BOTH {
            let body = encode_paths(f, &paths).unwrap();
            assert_eq!(decode_paths(f, &body).unwrap(), paths, "{f:?}");
        }
    }

    #[test]
    fn base_names_are_sticky_and_repeats_are_kept_once() {
        let json = br#"[{"bn":"/3/0/","n":"9"},{"n":"0"},{"n":"9"},{"bn":"","n":"/5/0"}]"#;
        let cbor = cbor_records(&[
            ("9", Some("/3/0/")),
            ("0", None),
            ("9", None),
            ("/5/0", Some("")),
        ]);
        let want = [
            Lwm2mPath::resource(3, 0, 9),
            Lwm2mPath::resource(3, 0, 0),
            Lwm2mPath::instance(5, 0),
        ];
        assert_eq!(decode_paths(ContentFormat::SenmlJson, json).unwrap(), want);
        assert_eq!(decode_paths(ContentFormat::SenmlCbor, &cbor).unwrap(), want);
    }

    #[test]
    fn bad_lists_are_typed_errors() {
        let relative = |e: ContentError| {
            matches!(
                e,
                ContentError::BadRecord {
                    index: 1,
                    problem: RecordProblem::RelativeName(_)
                }
            )
        };
        let json = br#"[{"n":"/3/0/9"},{"n":"3/0/0"}]"#;
        assert!(relative(
            decode_paths(ContentFormat::SenmlJson, json).unwrap_err()
        ));
        let cbor = cbor_records(&[("/3/0/9", None), ("3/0/0", None)]);
        assert!(relative(
            decode_paths(ContentFormat::SenmlCbor, &cbor).unwrap_err()
        ));
        for (body, want) in [
            (&br#"{"n":"/3"}"#[..], "not an object"),
            (br#"[{"n":"/3/x"}]"#, "not an lwm2m path"),
            (br#"[{"n":7}]"#, "wrong type"),
            (br#"[{"n":"/3","x_":1}]"#, "must-understand"),
            (br#"[{"n":"/3"}"#, "malformed json"),
        ] {
            let e = decode_paths(ContentFormat::SenmlJson, body).unwrap_err();
            assert!(e.to_string().contains(want), "{e} for {body:?}");
        }
        let mut trailing = cbor_records(&[("/3", None)]);
        trailing.push(0);
        assert!(matches!(
            decode_paths(ContentFormat::SenmlCbor, &trailing),
            Err(ContentError::Cbor { .. })
        ));
        assert_eq!(
            decode_paths(ContentFormat::Tlv, b""),
            Err(ContentError::UnsupportedFormat(ContentFormat::Tlv))
        );
    }

    #[test]
    fn at_most_max_composite_paths() {
        let paths: Vec<Lwm2mPath> = (0..=MAX_COMPOSITE_PATHS as u16)
            .map(|i| Lwm2mPath::resource(10241, i, 0))
            .collect();
        let (fit, over) = (&paths[..MAX_COMPOSITE_PATHS], &paths[..]);
        let too_many = ContentError::TooManyValues {
            max: MAX_COMPOSITE_PATHS,
        };
        for f in BOTH {
            let body = encode_paths(f, fit).unwrap();
            assert_eq!(decode_paths(f, &body).unwrap(), fit);
            assert_eq!(encode_paths(f, over), Err(too_many.clone()));
        }
        let json: Vec<serde_json::Value> = over
            .iter()
            .map(|p| serde_json::json!({ "n": p.to_string() }))
            .collect();
        let json = serde_json::to_vec(&json).unwrap();
        assert_eq!(
            decode_paths(ContentFormat::SenmlJson, &json),
            Err(too_many.clone())
        );
        let names: Vec<String> = over.iter().map(|p| p.to_string()).collect();
        let cbor = cbor_records(&names.iter().map(|n| (n.as_str(), None)).collect::<Vec<_>>());
        assert_eq!(decode_paths(ContentFormat::SenmlCbor, &cbor), Err(too_many));
    }
}
