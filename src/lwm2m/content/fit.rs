//! What a write sends must mean what the caller asked: values checked against the target
//! resources' types before anything is encoded.

use super::{ContentError, type_key};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue};

/// Checks a write's `content` against the resources' types (`types`, as for
/// [`decode`](super::decode)) and returns it with each value in its resource's type, or the
/// first value that does not fit. Nothing is sent for a refused write.
///
/// The formats differ in what they would do with a value that does not fit its resource:
/// TLV carries no type and sends an integer as its two's complement, so `-1` in an
/// Unsigned Integer resource reads as 255 on the device, and a float's 8 bytes as an
/// integer; SenML and CBOR carry NaN, text and JSON cannot. So the check comes first, the
/// same for every format:
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
        .map(|(path, value)| Ok((*path, fit(path, value, types(&type_key(path)))?)))
        .collect::<Result<_, ContentError>>()?;
    Ok(Content { values })
}

/// 2^53: every integer of at most this magnitude is an exact `f64`.
const EXACT_F64: u64 = 1 << 53;

fn fit(
    path: &Lwm2mPath,
    value: &ResourceValue,
    ty: Option<ResourceType>,
) -> Result<ResourceValue, ContentError> {
    use ResourceType as T;
    use ResourceValue as V;
    if let V::Float(x) = value
        && !x.is_finite()
    {
        return Err(ContentError::UnencodableValue { path: *path });
    }
    let Some(ty) = ty else {
        return Ok(value.clone());
    };
    let out_of_range = || ContentError::OutOfRange {
        path: *path,
        expected: ty,
    };
    let mismatch = || ContentError::TypeMismatch {
        path: *path,
        expected: ty,
    };
    // An integer of any of the three integer kinds, widened.
    let int: Option<i128> = match value {
        V::Integer(i) | V::Time(i) => Some(i128::from(*i)),
        V::UnsignedInteger(u) => Some(i128::from(*u)),
        _ => None,
    };
    Ok(match (ty, int) {
        (T::Integer, Some(i)) => V::Integer(i64::try_from(i).map_err(|_| out_of_range())?),
        (T::Time, Some(i)) => V::Time(i64::try_from(i).map_err(|_| out_of_range())?),
        (T::UnsignedInteger, Some(i)) => {
            V::UnsignedInteger(u64::try_from(i).map_err(|_| out_of_range())?)
        }
        (T::Float, Some(i)) => {
            if i.unsigned_abs() > u128::from(EXACT_F64) {
                return Err(out_of_range());
            }
            V::Float(i as f64)
        }
        (T::String, Some(i)) => V::String(i.to_string()),
        (T::String, None) if matches!(value, V::Float(_)) => V::String(value.to_string()),
        (T::Boolean, Some(i @ (0 | 1))) => V::Boolean(i == 1),
        _ if value.resource_type() == ty => value.clone(),
        _ => return Err(mismatch()),
    })
}
