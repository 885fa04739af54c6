//! What a write sends must mean what the caller asked: values checked against the target
//! resources' types before anything is encoded, by the domain's rule
//! ([`crate::resource::fit_value`]).

use super::{ContentError, type_key};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType};
use crate::resource::{Misfit, fit_value};

/// Checks a write's `content` against the resources' types (`types`, as for
/// [`decode`](super::decode)) and returns it with each value in its resource's type, or the
/// first value that does not fit. Nothing is sent for a refused write.
///
/// The formats differ in what they would do with a value that does not fit its resource:
/// TLV carries no type and sends an integer as its two's complement, so `-1` in an
/// Unsigned Integer resource reads as 255 on the device, and a float's 8 bytes as an
/// integer; SenML and CBOR carry NaN, text and JSON cannot. So the check comes first, the
/// same for every format: the domain's rule, [`fit_value`] (which a write job's values
/// also meet at creation), with its [`Misfit`] in this module's error:
///
/// - a NaN or infinite float is [`ContentError::UnencodableValue`], whatever the type
///   (text and JSON cannot carry it, and a twin cannot hold it);
/// - an integer (`Integer`, `UnsignedInteger` or `Time`) in an Integer, Unsigned Integer
///   or Time resource takes the resource's type when its value fits, and is
///   [`ContentError::OutOfRange`] when it does not (`-1` as unsigned, a `u64` above
///   `i64::MAX` as a signed integer or time);
/// - an integer in a Float resource becomes the float of the same value when that float
///   is exact (every integer up to 2^53 in magnitude), and is
///   [`ContentError::OutOfRange`] when it would round;
/// - a number in a String resource becomes its decimal text, and the integer 0 or 1 in a
///   Boolean resource the boolean: what the text format sent for them before this check
///   (and what Leshan's converter does), now the same in every format (TLV would have
///   sent a number's bytes as the string);
/// - any other kind that is not the resource's ([`ContentError::TypeMismatch`]): a float
///   in an integer resource (even `2.0`: the caller asked for a float), a string in an
///   Opaque resource (text would send it as base64 to decode), a boolean as an integer or
///   a string, another integer in a Boolean resource, anything written to an executable
///   resource;
/// - a resource whose type `types` does not know keeps the value as given.
///
/// ```
/// use twinhub::lwm2m::content::{ContentError, fit_to_types, standard_resource_type};
/// use twinhub::{Content, Lwm2mPath, ResourceType, ResourceValue};
///
/// let lifetime = Lwm2mPath::resource(1, 0, 1); // Integer
/// let priority_order = Lwm2mPath::resource(1, 0, 13); // Unsigned Integer (priority order)
/// let c = Content::single(priority_order, ResourceValue::Integer(2));
/// assert_eq!(
///     fit_to_types(&c, &standard_resource_type).unwrap(),
///     Content::single(priority_order, ResourceValue::UnsignedInteger(2)),
/// );
/// let c = Content::single(priority_order, ResourceValue::Integer(-1));
/// assert_eq!(
///     fit_to_types(&c, &standard_resource_type),
///     Err(ContentError::OutOfRange { path: priority_order, expected: ResourceType::UnsignedInteger }),
/// );
/// let c = Content::single(lifetime, ResourceValue::Float(2.0));
/// assert!(fit_to_types(&c, &standard_resource_type).is_err());
/// let timezone = Lwm2mPath::resource(3, 0, 15); // String
/// let c = Content::single(timezone, ResourceValue::Float(0.5));
/// assert_eq!(
///     fit_to_types(&c, &standard_resource_type).unwrap(),
///     Content::single(timezone, ResourceValue::String("0.5".into())),
/// );
/// ```
pub fn fit_to_types(
    content: &Content,
    types: &dyn Fn(&Lwm2mPath) -> Option<ResourceType>,
) -> Result<Content, ContentError> {
    let values = content
        .values
        .iter()
        .map(|(path, value)| {
            let ty = types(&type_key(path));
            fit_value(value, ty)
                .map(|v| (*path, v))
                .map_err(|m| misfit_error(*path, ty, m))
        })
        .collect::<Result<_, ContentError>>()?;
    Ok(Content { values })
}

/// The content formats' words for a value that does not fit: out of range and another
/// kind name the resource's type; a NaN or infinity is a value no format should carry.
fn misfit_error(path: Lwm2mPath, ty: Option<ResourceType>, misfit: Misfit) -> ContentError {
    match (misfit, ty) {
        (Misfit::OutOfRange, Some(expected)) => ContentError::OutOfRange { path, expected },
        (Misfit::OtherKind, Some(expected)) => ContentError::TypeMismatch { path, expected },
        // `fit_value` refuses only a non-finite float when the type is not known.
        (Misfit::NotFinite, _) | (_, None) => ContentError::UnencodableValue { path },
    }
}
