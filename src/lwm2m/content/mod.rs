//! LWM2M payload formats: plain text, opaque, TLV, SenML JSON, SenML CBOR and LwM2M CBOR
//! (plus the pre-standard codes that LWM2M 1.0-era clients still send).
//!
//! Every format decodes into the same [`Content`] shape (full resource paths with typed
//! [`ResourceValue`]s), so nothing above this module looks at a wire format.
//!
//! | format | code(s) | decode | encode |
//! |---|---|---|---|
//! | text/plain | 0, 1541 | one resource | one resource |
//! | CoRE link format | 40 | — (Discover answers are kept as text) | — |
//! | opaque | 42, 1544 | one resource | one opaque resource |
//! | CBOR | 60 | one resource | one resource |
//! | TLV | 11542, 1542 | yes | yes |
//! | SenML JSON | 110 | yes | yes |
//! | SenML CBOR | 112 | yes | yes |
//! | LwM2M CBOR (1.2) | 11544 | yes | yes |
//! | LwM2M JSON (1.0) | 11543, 1543 | yes (read tolerantly) | yes |
//!
//! The composite operations' path lists (SenML records with names only) have their own
//! pair, [`decode_paths`] and [`encode_paths`].
//!
//! Where the resource's type is known, a value of another kind is refused: SenML (JSON and
//! CBOR) with [`RecordProblem::TypeMismatch`] for the record, LwM2M CBOR and plain CBOR
//! with [`ContentError::TypeMismatch`] for the path (a number for a numeric type, a boolean
//! for a boolean, bytes for opaque, an object link for an object link; text is parsed as
//! the type).
//!
//! **Numbers.** Integers are exact in every format, every `i64` and every `u64` (SenML
//! JSON numbers are read as integers, never through an `f64`; a SenML base value is
//! added exactly, and a sum outside `i64::MIN..=u64::MAX` is
//! [`RecordProblem::NumberOutOfRange`]). A number takes the resource's type where it
//! fits: a float with an integral value below 9e15 (`2.0`) in an Integer, Unsigned
//! Integer or Time resource is an integer, an integer in a Float resource a float (which
//! rounds above 2^53); one that does not fit keeps its own kind (`2.5` in an Integer
//! resource is a float, `u64::MAX` an unsigned integer). Text is typed by its syntax
//! (`"2.0"` is no Integer). Floats keep their bits (`-0.0` included). NaN and infinity:
//! text and JSON cannot carry them; TLV and the CBOR formats (half, single or double
//! precision) decode them as sent, a Float being an IEEE double (the hub's twin refuses
//! such a value, as JSON has none). A number the format gives as finite whose value
//! overflows an `f64` (a SenML base value plus a value, a decimal fraction
//! `4([400, 9])`) is refused: [`RecordProblem::NumberOutOfRange`] for the record,
//! [`ContentError::BadValue`] in LwM2M CBOR and plain CBOR. Encoding is exact: integers
//! as they are, floats as the shortest decimal that reads back the same (text, JSON) or
//! the shortest exact float (CBOR), 8 bytes in TLV. TLV integers, unsigned ones too, take
//! the shortest width whose top bit is clear (only an unsigned above `i64::MAX` sets it),
//! so a device that reads the resource as an Integer reads the same number. Text and
//! JSON refuse to encode NaN or infinity ([`ContentError::UnencodableValue`]); TLV and
//! CBOR send them (a device's read answer may hold one).
//!
//! **Writes** (the server's Write, Create and Write-Composite) go through
//! [`fit_to_types`] first, the same for every format, so the device reads what the
//! service asked: each value takes its resource's type where it fits exactly (`5` for an
//! Unsigned Integer, an integer up to 2^53 for a Float; a number in a String resource
//! becomes its decimal text, 0 or 1 in a Boolean resource the boolean), and anything
//! else is refused before a byte is sent: a value outside its type's range
//! ([`ContentError::OutOfRange`]: `-1` as unsigned, which TLV would carry as a byte the
//! device reads as 255; a `u64` above `i64::MAX` as an Integer), a value of another kind
//! ([`ContentError::TypeMismatch`]: a float, even `2.0`, for an integer resource, whose
//! 8 TLV bytes would read as an integer; a string for Opaque), a NaN or infinity
//! ([`ContentError::UnencodableValue`], in TLV and CBOR too).
//!
//! **Floats in text** are plain decimals, never an exponent (LWM2M 1.1 Core, Appendix C:
//! "a decimal number"; some device stacks parse nothing else): the shortest digits that
//! read back as the same double, so `1e300` is written as its 301 digits and `5e-324` as
//! 326 characters, which still fit one CoAP message. Reading is tolerant: `1.0E300`
//! (Leshan's `Double.toString`) is read too.
//!
//! TLV carries no types on the wire: [`decode`] takes a type resolver (any
//! `Fn(&Lwm2mPath) -> Option<ResourceType>`; [`standard_resource_type`] knows the objects
//! 0, 1, 3, 5 and the vendor Config object 10241). A value whose type the resolver does
//! not know decodes as [`ResourceValue::Opaque`] (TLV) or by its JSON shape (SenML).
//!
//! Decoders never panic on input and are bounded: at most [`MAX_PAYLOAD`] bytes and
//! [`MAX_VALUES`] values per payload; TLV nesting is at most three levels by construction,
//! CBOR nesting (maps, arrays and tags together) at most [`MAX_CBOR_DEPTH`] levels; SenML names (`bn` + `n`) at most
//! 64 bytes in JSON and CBOR alike.
//!
//! **CBOR crate.** The CBOR formats sit on [`minicbor`](https://docs.rs/minicbor): a pull
//! decoder that reads one item at a time without building a value tree, so these codecs
//! check every count, depth and length themselves before allocating anything, and read
//! zero-copy from the payload; it is actively maintained and `no_std`-capable (the
//! device library may one day run on one). `ciborium` (serde-based) was the other
//! candidate: its `Value` tree would decode a whole payload before any of our bounds
//! could look at it, and it has been dormant since January 2024.
//!
//! ```
//! use twinhub::lwm2m::content::{ContentFormat, decode, encode, standard_resource_type};
//! use twinhub::{Content, Lwm2mPath, ResourceValue};
//!
//! let base = Lwm2mPath::instance(3, 0);
//! let content = Content {
//!     values: vec![
//!         (Lwm2mPath::resource(3, 0, 0), ResourceValue::String("ACME".into())),
//!         (Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(87)),
//!     ],
//! };
//! let tlv = encode(ContentFormat::Tlv, &base, &content).unwrap();
//! let back = decode(ContentFormat::Tlv, &tlv, &base, &standard_resource_type).unwrap();
//! assert_eq!(back, content);
//! ```

mod base64url;
mod cbor;
mod error;
mod fit;
mod lwm2m_cbor;
mod paths;
mod senml_cbor;
mod senml_json;
mod text;
mod tlv;

/// The standard objects' resource types: the domain's table
/// ([`crate::resource::standard_resource_type`]), under its name here too.
pub use crate::resource::standard_resource_type;
pub use error::{ContentError, RecordProblem};
pub use fit::fit_to_types;
pub use paths::{MAX_COMPOSITE_PATHS, decode_paths, encode_paths};

#[cfg(doc)]
use super::ResourceValue;
use super::{Content, Lwm2mPath, ResourceType};

/// The largest payload any decoder accepts, in bytes (TLV's own limit is 16 MiB; a CoAP
/// message body reassembled from blocks is far below this in practice).
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// The most values one payload may decode to.
pub const MAX_VALUES: usize = 65_536;

/// The deepest CBOR nesting (arrays, maps and tags inside each other, each tag one level)
/// a CBOR decoder follows: an item may be enclosed by at most this many containers.
/// SenML CBOR needs 2 levels (the pack's array, a record's map) and LwM2M CBOR 6 (four
/// maps, a decimal fraction's tag and its array); a container that would put its contents
/// deeper is refused with [`ContentError::TooDeep`], in every CBOR format alike.
pub const MAX_CBOR_DEPTH: usize = 16;

/// A CoAP content format that LWM2M uses, with its registered number.
///
/// ```
/// use twinhub::lwm2m::content::ContentFormat;
/// assert_eq!(ContentFormat::from_code(1542), Some(ContentFormat::OldTlv));
/// assert_eq!(ContentFormat::SenmlJson.code(), 110);
/// assert_eq!(ContentFormat::OldTlv.canonical(), ContentFormat::Tlv);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum ContentFormat {
    /// `text/plain;charset=utf-8` (0).
    Text,
    /// `application/link-format` (40).
    LinkFormat,
    /// `application/octet-stream` (42).
    Opaque,
    /// `application/cbor` (60).
    Cbor,
    /// `application/senml+json` (110).
    SenmlJson,
    /// `application/senml+cbor` (112).
    SenmlCbor,
    /// `application/vnd.oma.lwm2m+tlv` (11542).
    Tlv,
    /// `application/vnd.oma.lwm2m+json` (11543), the LWM2M 1.0 JSON format.
    Lwm2mJson,
    /// `application/vnd.oma.lwm2m+cbor` (11544, LWM2M 1.2).
    Lwm2mCbor,
    /// Pre-standard text (1541), sent by lwm2m-node-lib and other early clients.
    OldText,
    /// Pre-standard TLV (1542).
    OldTlv,
    /// Pre-standard LwM2M JSON (1543).
    OldJson,
    /// Pre-standard opaque (1544).
    OldOpaque,
}

impl ContentFormat {
    /// Every format this enum knows, in code order.
    pub const ALL: [ContentFormat; 13] = [
        ContentFormat::Text,
        ContentFormat::LinkFormat,
        ContentFormat::Opaque,
        ContentFormat::Cbor,
        ContentFormat::SenmlJson,
        ContentFormat::SenmlCbor,
        ContentFormat::OldText,
        ContentFormat::OldTlv,
        ContentFormat::OldJson,
        ContentFormat::OldOpaque,
        ContentFormat::Tlv,
        ContentFormat::Lwm2mJson,
        ContentFormat::Lwm2mCbor,
    ];

    /// The CoAP Content-Format number.
    pub const fn code(self) -> u16 {
        match self {
            ContentFormat::Text => 0,
            ContentFormat::LinkFormat => 40,
            ContentFormat::Opaque => 42,
            ContentFormat::Cbor => 60,
            ContentFormat::SenmlJson => 110,
            ContentFormat::SenmlCbor => 112,
            ContentFormat::Tlv => 11542,
            ContentFormat::Lwm2mJson => 11543,
            ContentFormat::Lwm2mCbor => 11544,
            ContentFormat::OldText => 1541,
            ContentFormat::OldTlv => 1542,
            ContentFormat::OldJson => 1543,
            ContentFormat::OldOpaque => 1544,
        }
    }

    /// The format with this number, if LWM2M uses it.
    pub fn from_code(code: u16) -> Option<ContentFormat> {
        ContentFormat::ALL.into_iter().find(|f| f.code() == code)
    }

    /// The standard format a pre-standard code stands for (1541 -> text, 1542 -> TLV,
    /// 1543 -> LwM2M JSON, 1544 -> opaque); other formats map to themselves.
    pub const fn canonical(self) -> ContentFormat {
        match self {
            ContentFormat::OldText => ContentFormat::Text,
            ContentFormat::OldTlv => ContentFormat::Tlv,
            ContentFormat::OldJson => ContentFormat::Lwm2mJson,
            ContentFormat::OldOpaque => ContentFormat::Opaque,
            f => f,
        }
    }
}

/// Decodes a payload addressed at `base` (the request path, or the observed path) into
/// [`Content`]. `types` tells the type of a resource path (`/oid/iid/rid`) where the
/// format does not carry it (TLV always, text always, SenML numbers); pass
/// [`standard_resource_type`] or a closure that consults a device model first.
///
/// ```
/// use twinhub::lwm2m::content::{ContentFormat, decode, standard_resource_type};
/// use twinhub::{Lwm2mPath, ResourceValue};
///
/// let c = decode(ContentFormat::Text, b"87", &Lwm2mPath::resource(3, 0, 9), &standard_resource_type)
///     .unwrap();
/// assert_eq!(c.get(&Lwm2mPath::resource(3, 0, 9)), Some(&ResourceValue::Integer(87)));
/// ```
pub fn decode(
    format: ContentFormat,
    bytes: &[u8],
    base: &Lwm2mPath,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    if bytes.len() > MAX_PAYLOAD {
        return Err(ContentError::TooLarge {
            len: bytes.len(),
            max: MAX_PAYLOAD,
        });
    }
    match format.canonical() {
        ContentFormat::Text => text::decode_text(bytes, base, types),
        ContentFormat::Opaque => text::decode_opaque(bytes, base),
        ContentFormat::Tlv => tlv::decode(bytes, base, types),
        ContentFormat::SenmlJson => senml_json::decode_senml(bytes, base, types),
        ContentFormat::SenmlCbor => senml_cbor::decode(bytes, base, types),
        ContentFormat::Lwm2mCbor => lwm2m_cbor::decode(bytes, base, types),
        ContentFormat::Cbor => lwm2m_cbor::decode_single(bytes, base, types),
        ContentFormat::Lwm2mJson => senml_json::decode_lwm2m_json(bytes, base, types),
        other => Err(ContentError::UnsupportedFormat(other)),
    }
}

/// Encodes `content` (paths under `base`) in `format`. Text, opaque and plain CBOR take
/// exactly one value at `base`; TLV needs `base` at least an object; SenML (JSON and CBOR) and LwM2M
/// JSON take anything.
/// Pre-standard codes encode like the standard format they stand for.
///
/// ```
/// use twinhub::lwm2m::content::{ContentFormat, encode};
/// use twinhub::{Content, Lwm2mPath, ResourceValue};
///
/// let p = Lwm2mPath::resource(1, 0, 1);
/// let body = encode(ContentFormat::Text, &p, &Content::single(p, ResourceValue::Integer(300)))
///     .unwrap();
/// assert_eq!(body, b"300");
/// ```
pub fn encode(
    format: ContentFormat,
    base: &Lwm2mPath,
    content: &Content,
) -> Result<Vec<u8>, ContentError> {
    if content.values.len() > MAX_VALUES {
        return Err(ContentError::TooManyValues { max: MAX_VALUES });
    }
    for (path, _) in &content.values {
        if !base.contains(path) || path.depth() < 3 {
            return Err(ContentError::PathOutsideBase {
                path: *path,
                base: *base,
            });
        }
    }
    match format.canonical() {
        ContentFormat::Text => text::encode_text(base, content),
        ContentFormat::Opaque => text::encode_opaque(base, content),
        ContentFormat::Tlv => tlv::encode(base, content),
        ContentFormat::SenmlJson => senml_json::encode_senml(base, content),
        ContentFormat::SenmlCbor => senml_cbor::encode(base, content),
        ContentFormat::Lwm2mCbor => lwm2m_cbor::encode(base, content),
        ContentFormat::Cbor => lwm2m_cbor::encode_single(base, content),
        ContentFormat::Lwm2mJson => senml_json::encode_lwm2m_json(base, content),
        other => Err(ContentError::UnsupportedFormat(other)),
    }
}

/// The resource path (`/oid/iid/rid`) a value path's type is looked up by: resource
/// instances share their resource's type.
pub(crate) fn type_key(path: &Lwm2mPath) -> Lwm2mPath {
    if path.depth() == 4 {
        path.parent().unwrap_or(*path)
    } else {
        *path
    }
}

#[cfg(test)]
mod tests;
