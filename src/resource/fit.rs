//! Which values fit which resource types: the rule a write's values follow before anything
//! is sent, in the domain so that a write job is checked against it in every build (the
//! LwM2M server applies it through `lwm2m::content::fit_to_types`, the job spec at
//! creation, the in-memory fleet on every write).

use super::{ResourceType, ResourceValue};
use std::fmt;

/// Why a value cannot take its resource's type ([`fit_value`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misfit {
    /// A value of the type's kind beyond its range (`-1` for an Unsigned Integer).
    OutOfRange,
    /// A value of another kind (a float for an Integer, a string for an Integer).
    OtherKind,
    /// A NaN or infinite float, whatever the type (text and JSON cannot carry it, and a
    /// twin cannot hold it). A job spec refuses it as a parameter first, so a job's
    /// `SpecError::ValueDoesNotFit` never names it.
    NotFinite,
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Misfit::OutOfRange => "out of the type's range",
            Misfit::OtherKind => "of another kind",
            Misfit::NotFinite => "not a finite number",
        })
    }
}

impl std::error::Error for Misfit {}

/// 2^53: every integer of at most this magnitude is an exact `f64`.
const EXACT_F64: u64 = 1 << 53;

/// `value` in its resource's type `ty` (`None`: a resource whose type is not known), or
/// why it does not fit.
///
/// A value must mean what the caller asked once it is encoded, and the formats differ in
/// what they would do with one that does not fit its resource: TLV carries no type and
/// sends an integer as its two's complement, so `-1` in an Unsigned Integer resource reads
/// as 255 on the device, and a float's 8 bytes as an integer; SenML and CBOR carry NaN,
/// text and JSON cannot. So the rule is the same for every format:
///
/// - a NaN or infinite float is [`Misfit::NotFinite`], whatever the type;
/// - an integer (`Integer`, `UnsignedInteger` or `Time`) in an Integer, Unsigned Integer
///   or Time resource takes the resource's type when its value fits, and is
///   [`Misfit::OutOfRange`] when it does not (`-1` as unsigned, a `u64` above `i64::MAX`
///   as a signed integer or time);
/// - an integer in a Float resource becomes the float of the same value when that float
///   is exact (every integer up to 2^53 in magnitude), and is [`Misfit::OutOfRange`] when
///   it would round;
/// - a number in a String resource becomes its decimal text, and the integer 0 or 1 in a
///   Boolean resource the boolean (what the text format sends for them, and what Leshan's
///   converter does);
/// - any other kind that is not the resource's is [`Misfit::OtherKind`]: a float in an
///   integer resource (even `2.0`: the caller asked for a float), a string in an Opaque
///   resource, a boolean as an integer or a string, another integer in a Boolean
///   resource, anything written to an executable resource;
/// - a resource whose type is not known (`None`) keeps any finite value as given.
///
/// ```
/// use twinhub::resource::{Misfit, fit_value, standard_resource_type};
/// use twinhub::{Lwm2mPath, ResourceType, ResourceValue};
///
/// let priority_order = standard_resource_type(&Lwm2mPath::resource(1, 0, 13));
/// assert_eq!(priority_order, Some(ResourceType::UnsignedInteger));
/// assert_eq!(
///     fit_value(&ResourceValue::Integer(2), priority_order),
///     Ok(ResourceValue::UnsignedInteger(2)),
/// );
/// assert_eq!(fit_value(&ResourceValue::Integer(-1), priority_order), Err(Misfit::OutOfRange));
/// assert_eq!(
///     fit_value(&ResourceValue::Float(2.0), Some(ResourceType::Integer)),
///     Err(Misfit::OtherKind),
/// );
/// assert_eq!(fit_value(&ResourceValue::Float(f64::NAN), None), Err(Misfit::NotFinite));
/// assert_eq!(
///     fit_value(&ResourceValue::Float(0.5), Some(ResourceType::String)),
///     Ok(ResourceValue::String("0.5".into())),
/// );
/// ```
pub fn fit_value(value: &ResourceValue, ty: Option<ResourceType>) -> Result<ResourceValue, Misfit> {
    use ResourceType as T;
    use ResourceValue as V;
    if let V::Float(x) = value
        && !x.is_finite()
    {
        return Err(Misfit::NotFinite);
    }
    let Some(ty) = ty else {
        return Ok(value.clone());
    };
    // An integer of any of the three integer kinds, widened.
    let int: Option<i128> = match value {
        V::Integer(i) | V::Time(i) => Some(i128::from(*i)),
        V::UnsignedInteger(u) => Some(i128::from(*u)),
        _ => None,
    };
    let out_of_range = |_| Misfit::OutOfRange;
    Ok(match (ty, int) {
        (T::Integer, Some(i)) => V::Integer(i64::try_from(i).map_err(out_of_range)?),
        (T::Time, Some(i)) => V::Time(i64::try_from(i).map_err(out_of_range)?),
        (T::UnsignedInteger, Some(i)) => {
            V::UnsignedInteger(u64::try_from(i).map_err(out_of_range)?)
        }
        (T::Float, Some(i)) => {
            if i.unsigned_abs() > u128::from(EXACT_F64) {
                return Err(Misfit::OutOfRange);
            }
            V::Float(i as f64)
        }
        (T::String, Some(i)) => V::String(i.to_string()),
        (T::String, None) if matches!(value, V::Float(_)) => V::String(value.to_string()),
        (T::Boolean, Some(i @ (0 | 1))) => V::Boolean(i == 1),
        _ if value.resource_type() == ty => value.clone(),
        _ => return Err(Misfit::OtherKind),
    })
}
