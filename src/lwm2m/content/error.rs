//! Why a payload could not be decoded or encoded.

use super::ContentFormat;
use crate::lwm2m::{Lwm2mPath, PathError, ResourceType};
use std::fmt;

/// A payload that cannot be decoded, or content that cannot be encoded in a format.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum ContentError {
    /// The format is known but this module does not (de)serialise it.
    UnsupportedFormat(ContentFormat),
    /// The payload is longer than the decoder accepts.
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More values than the limit.
    TooManyValues {
        /// The limit.
        max: usize,
    },
    /// A TLV header or value runs past the end of its container.
    Truncated {
        /// Byte offset of the entry that is cut short.
        offset: usize,
    },
    /// A TLV entry of this kind may not appear at this place in the tree.
    UnexpectedEntry {
        /// Byte offset of the entry.
        offset: usize,
        /// The path the entry would have been placed under.
        under: Lwm2mPath,
        /// What kind of entry it is.
        kind: &'static str,
    },
    /// A value's bytes do not fit its type (e.g. a 3-byte integer).
    BadValue {
        /// The value's path.
        path: Lwm2mPath,
        /// The type it was decoded as.
        expected: ResourceType,
    },
    /// A value's kind contradicts the resource's known type (LwM2M CBOR and plain CBOR: a
    /// boolean, byte string or number for a resource of another type, or a text string that
    /// does not parse as the type). The SenML decoders report the same per record, as
    /// [`ContentError::BadRecord`] with [`RecordProblem::TypeMismatch`]. Writing: a value
    /// of another kind than its resource's type that
    /// [`fit_to_types`](super::fit_to_types) does not convert.
    TypeMismatch {
        /// The value's path.
        path: Lwm2mPath,
        /// The resource's type.
        expected: ResourceType,
    },
    /// A value to write is of the resource's kind but outside its type's range (`-1` for
    /// an Unsigned Integer, a `u64` above `i64::MAX` for an Integer, an integer a Float
    /// cannot hold exactly): see [`fit_to_types`](super::fit_to_types).
    OutOfRange {
        /// The value's path.
        path: Lwm2mPath,
        /// The resource's type.
        expected: ResourceType,
    },
    /// A string value is not UTF-8.
    InvalidUtf8 {
        /// The value's path.
        path: Lwm2mPath,
    },
    /// A text or opaque payload was addressed at something other than one resource.
    NotSingleResource {
        /// The path it was addressed at.
        path: Lwm2mPath,
    },
    /// The same path appears twice.
    DuplicatePath(Lwm2mPath),
    /// The JSON is not well-formed.
    Json {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// The CBOR is not well-formed (or has bytes after its one top-level item).
    Cbor {
        /// Byte offset where decoding stopped.
        offset: usize,
    },
    /// CBOR nested deeper than [`super::MAX_CBOR_DEPTH`].
    TooDeep {
        /// Byte offset of the item that is one level too deep.
        offset: usize,
        /// The limit.
        max: usize,
    },
    /// A SenML (JSON or CBOR) or LwM2M JSON record is not acceptable.
    BadRecord {
        /// 0-based index of the record.
        index: usize,
        /// What is wrong with it.
        problem: RecordProblem,
    },
    /// Encoding: a value's path does not lie at or below the base path, or is not a
    /// resource (instance) path.
    PathOutsideBase {
        /// The value's path.
        path: Lwm2mPath,
        /// The base path.
        base: Lwm2mPath,
    },
    /// Encoding: a single value is required at the base path, found something else.
    NeedsSingleValue {
        /// The base path.
        base: Lwm2mPath,
        /// How many values there were.
        count: usize,
    },
    /// Encoding: a resource appears both as a single value and with instances.
    ConflictingPaths(Lwm2mPath),
    /// Encoding: the format cannot carry this value (e.g. NaN in SenML, a string as opaque).
    UnencodableValue {
        /// The value's path.
        path: Lwm2mPath,
    },
}

/// What is wrong with one SenML / LwM2M JSON record.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum RecordProblem {
    /// The document or a record is not the expected JSON shape (array of objects).
    NotAnObject,
    /// A field has the wrong JSON type.
    WrongFieldType(&'static str),
    /// `bn` + `n` is not an LWM2M resource path.
    BadName(PathError),
    /// `bn` + `n` is a path, but not of a resource or resource instance.
    NotAResource(Lwm2mPath),
    /// No value field.
    NoValue,
    /// More than one value field.
    SeveralValues,
    /// `vd` is not base64.
    BadBase64,
    /// An object link is not `oid:iid`.
    BadObjectLink,
    /// A number does not fit the resource's type.
    NumberOutOfRange,
    /// A value's JSON type contradicts the resource's known type.
    TypeMismatch(ResourceType),
    /// A SenML must-understand field (name ending in `_`) that we do not understand.
    MustUnderstand(String),
    /// A name or string longer than the limit.
    TooLong,
    /// The pack's base version (`bver`) is newer than SenML 10, the one this crate reads
    /// (RFC 8428 §4.4: such a pack must not be processed).
    UnsupportedVersion,
    /// A composite request's path list names a relative path (`bn` + `n` must start with
    /// `/`: there is no request path to be relative to).
    RelativeName(String),
}

impl fmt::Display for ContentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentError::UnsupportedFormat(c) => {
                write!(f, "content format {} is not supported here", c.code())
            }
            ContentError::TooLarge { len, max } => {
                write!(f, "payload of {len} bytes exceeds the limit of {max}")
            }
            ContentError::TooManyValues { max } => write!(f, "more than {max} values"),
            ContentError::Truncated { offset } => {
                write!(f, "tlv entry at byte {offset} is truncated")
            }
            ContentError::UnexpectedEntry {
                offset,
                under,
                kind,
            } => write!(f, "tlv {kind} at byte {offset} cannot appear under {under}"),
            ContentError::BadValue { path, expected } => {
                write!(f, "value at {path} is not a valid {expected:?}")
            }
            ContentError::TypeMismatch { path, expected } => {
                write!(f, "value at {path} does not match type {expected:?}")
            }
            ContentError::OutOfRange { path, expected } => {
                write!(f, "value at {path} is out of range for type {expected:?}")
            }
            ContentError::InvalidUtf8 { path } => write!(f, "string at {path} is not utf-8"),
            ContentError::NotSingleResource { path } => {
                write!(f, "{path} is not a single resource")
            }
            ContentError::DuplicatePath(p) => write!(f, "path {p} appears twice"),
            ContentError::Json { line, column } => {
                write!(f, "malformed json at line {line}, column {column}")
            }
            ContentError::Cbor { offset } => write!(f, "malformed cbor at byte {offset}"),
            ContentError::TooDeep { offset, max } => {
                write!(
                    f,
                    "cbor at byte {offset} is nested deeper than {max} levels"
                )
            }
            ContentError::BadRecord { index, problem } => write!(f, "record {index}: {problem}"),
            ContentError::PathOutsideBase { path, base } => {
                write!(f, "path {path} is not a resource under {base}")
            }
            ContentError::NeedsSingleValue { base, count } => {
                write!(f, "format needs exactly one value at {base}, got {count}")
            }
            ContentError::ConflictingPaths(p) => {
                write!(f, "resource {p} is both single and multiple")
            }
            ContentError::UnencodableValue { path } => {
                write!(f, "value at {path} cannot be encoded in this format")
            }
        }
    }
}

impl std::error::Error for ContentError {}

impl fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordProblem::NotAnObject => f.write_str("not an object (map) in an array"),
            RecordProblem::WrongFieldType(k) => write!(f, "field {k} has the wrong type"),
            RecordProblem::BadName(e) => write!(f, "name is not an lwm2m path: {e}"),
            RecordProblem::NotAResource(p) => write!(f, "{p} is not a resource path"),
            RecordProblem::NoValue => f.write_str("no value"),
            RecordProblem::SeveralValues => f.write_str("more than one value field"),
            RecordProblem::BadBase64 => f.write_str("vd is not base64"),
            RecordProblem::BadObjectLink => f.write_str("object link is not oid:iid"),
            RecordProblem::NumberOutOfRange => f.write_str("number out of range for its type"),
            RecordProblem::TypeMismatch(t) => write!(f, "value does not match type {t:?}"),
            RecordProblem::MustUnderstand(k) => write!(f, "unknown must-understand field {k}"),
            RecordProblem::TooLong => f.write_str("name or string too long"),
            RecordProblem::UnsupportedVersion => f.write_str("senml version newer than 10"),
            RecordProblem::RelativeName(n) => write!(f, "{n:?} is not an absolute path"),
        }
    }
}
