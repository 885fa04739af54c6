//! Scalar values: what a device property holds, what a service property's leaves hold, and
//! the key type of every value index.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A JSON number with a total order: integers and floats compare by their numeric value.
///
/// Integers are kept exactly (every `i64` and every `u64`); other numbers are finite `f64`s
/// (JSON has no NaN or infinity, so neither does `Number`). `Number::from(1)` and
/// `Number::from_f64(1.0)` are equal and hash alike, but each serialises as it was written
/// (`1` and `1.0`). `-0.0` is taken as `0.0`: they are equal, and the registry keeps one
/// spelling of equal floats, so a sign kept in one place would be lost in another.
///
/// ```
/// use twinhub::twin::Number;
/// let one = Number::from(1);
/// let one_and_a_half = Number::from_f64(1.5).unwrap();
/// assert!(one < one_and_a_half);
/// assert_eq!(one, Number::from_f64(1.0).unwrap());
/// assert!(Number::from_f64(f64::NAN).is_none());
/// // 2^63 + 1 is not 2^63 (an f64 cannot tell them apart).
/// assert!(Number::from(9_223_372_036_854_775_809u64) > Number::from(1u64 << 63));
/// ```
#[derive(Clone, Copy)]
pub struct Number(Repr);

#[derive(Clone, Copy)]
enum Repr {
    Int(i64),
    /// An integer above `i64::MAX` (smaller ones are always `Int`: one value, one repr).
    UInt(u64),
    Float(f64),
}

/// 2^63 as an `f64` (exact).
const TWO_63: f64 = 9_223_372_036_854_775_808.0;
/// 2^64 as an `f64` (exact).
const TWO_64: f64 = 18_446_744_073_709_551_616.0;

impl Number {
    /// A float, or `None` when it is NaN or infinite (`-0.0` becomes `0.0`).
    pub fn from_f64(f: f64) -> Option<Number> {
        // `+ 0.0` turns -0.0 into 0.0 and leaves every other value as it is.
        f.is_finite().then_some(Number(Repr::Float(f + 0.0)))
    }

    /// The value as an `i64` when it is an integer that fits (`2.0` counts as one).
    pub fn as_i64(&self) -> Option<i64> {
        match self.0 {
            Repr::Int(i) => Some(i),
            Repr::UInt(_) => None,
            Repr::Float(f) => float_as_i64(f),
        }
    }

    /// The value as a `u64` when it is a non-negative integer that fits (`2.0` counts as
    /// one).
    pub fn as_u64(&self) -> Option<u64> {
        match self.0 {
            Repr::Int(i) => u64::try_from(i).ok(),
            Repr::UInt(u) => Some(u),
            Repr::Float(f) => float_as_u64(f),
        }
    }

    /// The value as an `f64` (large integers round).
    pub fn as_f64(&self) -> f64 {
        match self.0 {
            Repr::Int(i) => i as f64,
            Repr::UInt(u) => u as f64,
            Repr::Float(f) => f,
        }
    }

    /// Whether the value was written as an integer (`1`, not `1.0`).
    pub fn is_integer(&self) -> bool {
        !matches!(self.0, Repr::Float(_))
    }

    /// The exact value of a number written as an integer.
    pub(crate) fn integer(&self) -> Option<i128> {
        match self.0 {
            Repr::Int(i) => Some(i.into()),
            Repr::UInt(u) => Some(u.into()),
            Repr::Float(_) => None,
        }
    }

    /// The number written as an integer equal to `i`, if one is (`|i| < 2^64`).
    pub(crate) fn from_i128(i: i128) -> Option<Number> {
        match i64::try_from(i) {
            Ok(i) => Some(Number(Repr::Int(i))),
            Err(_) => u64::try_from(i).ok().map(Number::from),
        }
    }
}

fn float_as_i64(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; every float in [-2^63, 2^63) with no fraction fits.
    (f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f)).then_some(f as i64)
}

fn float_as_u64(f: f64) -> Option<u64> {
    (f.fract() == 0.0 && (0.0..TWO_64).contains(&f)).then_some(f as u64)
}

/// Compares an integer (`|i| <= 2^64`) with a finite float exactly (no rounding of the
/// integer).
fn cmp_int_float(i: i128, f: f64) -> Ordering {
    if f >= TWO_64 * 2.0 {
        return Ordering::Less;
    }
    if f < -TWO_64 * 2.0 {
        return Ordering::Greater;
    }
    let t = f.trunc();
    match i.cmp(&(t as i128)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - t)).unwrap_or(Ordering::Equal),
        other => other,
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0, other.0) {
            (Repr::Int(a), Repr::Int(b)) => a.cmp(&b),
            (Repr::UInt(a), Repr::UInt(b)) => a.cmp(&b),
            // A `UInt` is above every `i64`.
            (Repr::Int(_), Repr::UInt(_)) => Ordering::Less,
            (Repr::UInt(_), Repr::Int(_)) => Ordering::Greater,
            // Both finite: partial_cmp is total here and makes -0.0 == 0.0.
            (Repr::Float(a), Repr::Float(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
            (_, Repr::Float(b)) => cmp_int_float(self.integer().unwrap_or_default(), b),
            (Repr::Float(a), _) => cmp_int_float(other.integer().unwrap_or_default(), a).reverse(),
        }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Number {}

impl Hash for Number {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal numbers hash alike: integral floats hash as the integer they equal.
        match self.0 {
            Repr::Int(i) => i.hash(state),
            Repr::UInt(u) => u.hash(state),
            Repr::Float(f) => match (float_as_i64(f), float_as_u64(f)) {
                (Some(i), _) => i.hash(state),
                (None, Some(u)) => u.hash(state),
                (None, None) => f.to_bits().hash(state),
            },
        }
    }
}

impl From<i64> for Number {
    fn from(i: i64) -> Self {
        Number(Repr::Int(i))
    }
}

impl From<i32> for Number {
    fn from(i: i32) -> Self {
        Number(Repr::Int(i.into()))
    }
}

impl From<u32> for Number {
    fn from(i: u32) -> Self {
        Number(Repr::Int(i.into()))
    }
}

impl From<u64> for Number {
    fn from(u: u64) -> Self {
        match i64::try_from(u) {
            Ok(i) => Number(Repr::Int(i)),
            Err(_) => Number(Repr::UInt(u)),
        }
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Repr::Int(i) => write!(f, "{i}"),
            Repr::UInt(u) => write!(f, "{u}"),
            // The same text serde_json writes.
            Repr::Float(x) => f.write_str(
                &serde_json::Number::from_f64(x).map_or_else(|| x.to_string(), |n| n.to_string()),
            ),
        }
    }
}

impl serde::Serialize for Number {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Repr::Int(i) => s.serialize_i64(i),
            Repr::UInt(u) => s.serialize_u64(u),
            Repr::Float(f) => s.serialize_f64(f),
        }
    }
}

/// A scalar value: a boolean, a number or a string. JSON `null` is not a value (an absent
/// property is simply absent).
///
/// `Scalar` is the key of every value index, so it has a **total order**:
/// `Bool < Number < String`; `false < true`; numbers by numeric value (integers and
/// floats compare with each other exactly, `1 == 1.0`); strings by their UTF-8 bytes.
/// A range query over one type therefore never picks up values of another type.
///
/// ```
/// use twinhub::twin::Scalar;
/// let mut v = vec![Scalar::from("a"), Scalar::from(2.5), Scalar::from(true), Scalar::from(3)];
/// v.sort();
/// assert_eq!(v, [Scalar::from(true), Scalar::from(2.5), Scalar::from(3), Scalar::from("a")]);
/// assert_eq!(serde_json::to_string(&Scalar::from("1.0")).unwrap(), r#""1.0""#);
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scalar {
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string (shared: cloning is a reference-count bump).
    String(Arc<str>),
}

impl Scalar {
    /// The JSON type name of this value (`"boolean"`, `"number"` or `"string"`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Scalar::Bool(_) => "boolean",
            Scalar::Number(_) => "number",
            Scalar::String(_) => "string",
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<Number> {
        match self {
            Scalar::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The value as a `serde_json::Value`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::Bool(b) => serde_json::Value::Bool(*b),
            Scalar::Number(n) => match n.0 {
                Repr::Int(i) => i.into(),
                Repr::UInt(u) => u.into(),
                Repr::Float(f) => serde_json::Number::from_f64(f)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number),
            },
            Scalar::String(s) => serde_json::Value::String(s.to_string()),
        }
    }

    /// A scalar from a JSON value; `None` for null, arrays, objects.
    pub fn from_json(v: &serde_json::Value) -> Option<Scalar> {
        match v {
            serde_json::Value::Bool(b) => Some(Scalar::Bool(*b)),
            serde_json::Value::Number(n) => json_number(n).map(Scalar::Number),
            serde_json::Value::String(s) => Some(Scalar::from(s.as_str())),
            _ => None,
        }
    }

    /// A float scalar, or `None` when `f` is NaN or infinite.
    pub fn float(f: f64) -> Option<Scalar> {
        Number::from_f64(f).map(Scalar::Number)
    }
}

/// A borrowed [`Scalar`]: a string is a `&str`, so a value can be handed over, looked
/// up and compared without allocating. Bulk loading takes values this way
/// ([`crate::registry::NewDevice`]); value indexes hash and compare it. It equals a
/// scalar, and hashes alike, exactly when the scalar equals it.
///
/// ```
/// use twinhub::twin::{Scalar, ScalarRef};
/// assert_eq!(ScalarRef::from("1.2").to_scalar(), Scalar::from("1.2"));
/// assert_eq!(ScalarRef::from(7), Scalar::from(7).borrowed());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ScalarRef<'a> {
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(&'a str),
}

impl<'a> From<&'a str> for ScalarRef<'a> {
    fn from(s: &'a str) -> Self {
        ScalarRef::String(s)
    }
}

impl From<bool> for ScalarRef<'_> {
    fn from(b: bool) -> Self {
        ScalarRef::Bool(b)
    }
}

impl From<i64> for ScalarRef<'_> {
    fn from(i: i64) -> Self {
        ScalarRef::Number(Number::from(i))
    }
}

impl From<i32> for ScalarRef<'_> {
    fn from(i: i32) -> Self {
        ScalarRef::Number(Number::from(i))
    }
}

impl From<Number> for ScalarRef<'_> {
    fn from(n: Number) -> Self {
        ScalarRef::Number(n)
    }
}

impl<'a> From<&'a Scalar> for ScalarRef<'a> {
    fn from(s: &'a Scalar) -> Self {
        s.borrowed()
    }
}

impl ScalarRef<'_> {
    /// The owned scalar (a string is copied).
    pub fn to_scalar(self) -> Scalar {
        match self {
            ScalarRef::Bool(b) => Scalar::Bool(b),
            ScalarRef::Number(n) => Scalar::Number(n),
            ScalarRef::String(s) => Scalar::from(s),
        }
    }
}

impl Scalar {
    /// This value, borrowed.
    pub fn borrowed(&self) -> ScalarRef<'_> {
        match self {
            Scalar::Bool(b) => ScalarRef::Bool(*b),
            Scalar::Number(n) => ScalarRef::Number(*n),
            Scalar::String(s) => ScalarRef::String(s),
        }
    }
}

fn json_number(n: &serde_json::Number) -> Option<Number> {
    if let Some(i) = n.as_i64() {
        Some(Number::from(i))
    } else if let Some(u) = n.as_u64() {
        Some(Number::from(u))
    } else {
        n.as_f64().and_then(Number::from_f64)
    }
}

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Writes the value as JSON text (`true`, `42`, `1.5`, `"text"`).
impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Number(n) => write!(f, "{n}"),
            Scalar::String(s) => f.write_str(&serde_json::to_string(&**s).map_err(|_| fmt::Error)?),
        }
    }
}

impl From<bool> for Scalar {
    fn from(b: bool) -> Self {
        Scalar::Bool(b)
    }
}

impl From<i64> for Scalar {
    fn from(i: i64) -> Self {
        Scalar::Number(i.into())
    }
}

impl From<i32> for Scalar {
    fn from(i: i32) -> Self {
        Scalar::Number(i.into())
    }
}

impl From<u32> for Scalar {
    fn from(i: u32) -> Self {
        Scalar::Number(i.into())
    }
}

impl From<u64> for Scalar {
    fn from(u: u64) -> Self {
        Scalar::Number(u.into())
    }
}

/// Non-finite floats (NaN, infinity) become the string `"NaN"`, `"inf"` or `"-inf"`; use
/// [`Scalar::float`] to reject them instead.
impl From<f64> for Scalar {
    fn from(f: f64) -> Self {
        Scalar::float(f).unwrap_or_else(|| Scalar::from(f.to_string().as_str()))
    }
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Scalar::String(Arc::from(s))
    }
}

impl From<String> for Scalar {
    fn from(s: String) -> Self {
        Scalar::String(Arc::from(s))
    }
}

impl From<Number> for Scalar {
    fn from(n: Number) -> Self {
        Scalar::Number(n)
    }
}

impl serde::Serialize for Scalar {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Bool(b) => s.serialize_bool(*b),
            Scalar::Number(n) => n.serialize(s),
            Scalar::String(v) => s.serialize_str(v),
        }
    }
}

pub(crate) struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, a number or a string")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
        Scalar::float(v).ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::from(v))
    }
}

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(s: &Scalar) -> u64 {
        let mut h = DefaultHasher::new();
        s.hash(&mut h);
        h.finish()
    }

    #[test]
    fn cross_type_order() {
        assert!(Scalar::from(true) < Scalar::from(i64::MIN));
        assert!(Scalar::from(f64::MAX) < Scalar::from(""));
        assert!(Scalar::from(false) < Scalar::from(true));
        assert!(Scalar::from("B") < Scalar::from("a"));
    }

    #[test]
    fn ints_and_floats_compare_exactly() {
        let big = i64::MAX;
        // i64::MAX as f64 rounds up to 2^63, which is greater than every i64.
        assert!(Scalar::from(big) < Scalar::from(big as f64));
        assert_eq!(Scalar::from(3), Scalar::from(3.0));
        assert_eq!(hash_of(&Scalar::from(3)), hash_of(&Scalar::from(3.0)));
        assert_eq!(Scalar::from(0.0), Scalar::from(-0.0));
        assert_eq!(hash_of(&Scalar::from(0.0)), hash_of(&Scalar::from(-0.0)));
        assert!(Scalar::from(-1) > Scalar::from(-1.5));
        assert!(Scalar::from(2) < Scalar::from(2.000001));
        assert!(Scalar::from(i64::MIN) > Scalar::from(-1e19));
    }

    #[test]
    fn integers_above_i64_stay_exact() {
        let two_63 = Scalar::from(1u64 << 63);
        let above = Scalar::from((1u64 << 63) + 1);
        assert!(Scalar::from(i64::MAX) < two_63 && two_63 < above);
        assert_eq!(two_63, Scalar::from(9_223_372_036_854_775_808.0));
        assert_eq!(
            hash_of(&two_63),
            hash_of(&Scalar::from(9_223_372_036_854_775_808.0))
        );
        // The float nearest 2^63 + 1 is 2^63: below the integer, not equal to it.
        assert!(above > Scalar::from((1u64 << 63) as f64 + 1.0));
        assert!(Scalar::from(u64::MAX) < Scalar::from(18_446_744_073_709_551_616.0));
        assert!(Scalar::from(u64::MAX) > Scalar::from(1.8e19));
        assert_eq!(above.to_string(), "9223372036854775809");
        assert_eq!(
            serde_json::to_string(&above).unwrap(),
            "9223372036854775809"
        );
        let back: Scalar = serde_json::from_str("9223372036854775809").unwrap();
        assert_eq!(back, above);
        assert_eq!(
            above.as_number().and_then(|n| n.as_u64()),
            Some((1 << 63) + 1)
        );
        assert_eq!(above.as_number().and_then(|n| n.as_i64()), None);
    }

    #[test]
    fn json_round_trip_keeps_integer_vs_float() {
        for text in ["1", "1.0", "-0.5", "true", "\"x\"", "18446744073709551615"] {
            let s: Scalar = serde_json::from_str(text).unwrap();
            let back = serde_json::to_string(&s).unwrap();
            let again: Scalar = serde_json::from_str(&back).unwrap();
            assert_eq!(s, again, "{text}");
        }
        assert_eq!(serde_json::to_string(&Scalar::from(1.0)).unwrap(), "1.0");
        assert!(serde_json::from_str::<Scalar>("null").is_err());
        assert!(serde_json::from_str::<Scalar>("[1]").is_err());
        assert!(serde_json::from_str::<Scalar>("{}").is_err());
    }

    #[test]
    fn display_is_json() {
        assert_eq!(Scalar::from("a\"b").to_string(), r#""a\"b""#);
        assert_eq!(Scalar::from(1.5).to_string(), "1.5");
        assert_eq!(Scalar::from(7).to_string(), "7");
    }

    proptest! {
        #[test]
        fn number_order_matches_exact_arithmetic(a in any::<i32>(), b in -1e10f64..1e10) {
            // i32 and these floats are exact in f64, so f64 comparison is the truth.
            let expected = (a as f64).partial_cmp(&b).unwrap();
            prop_assert_eq!(Number::from(a).cmp(&Number::from_f64(b).unwrap()), expected);
        }

        #[test]
        fn big_integer_order_is_exact(a in any::<u64>(), b in any::<u64>(), f in 0f64..2e19) {
            prop_assert_eq!(Number::from(a).cmp(&Number::from(b)), a.cmp(&b));
            // Every float in this range with no fraction is an integer below 2^65.
            let exact = if f.fract() == 0.0 {
                (a as i128).cmp(&(f as i128))
            } else {
                (a as i128).cmp(&(f.trunc() as i128)).then(std::cmp::Ordering::Less)
            };
            prop_assert_eq!(Number::from(a).cmp(&Number::from_f64(f).unwrap()), exact);
        }

        #[test]
        fn order_is_transitive(mut v in proptest::collection::vec(
            prop_oneof![
                any::<i64>().prop_map(Scalar::from),
                any::<u64>().prop_map(Scalar::from),
                (-1e20f64..1e20).prop_map(Scalar::from),
                (0u64..4).prop_map(|d| Scalar::from(((1u64 << 63) + d) as f64)),
                any::<bool>().prop_map(Scalar::from),
                "[a-c]{0,3}".prop_map(Scalar::from),
            ], 0..30)) {
            v.sort();
            for w in v.windows(2) {
                prop_assert!(w[0] <= w[1]);
            }
            for i in 0..v.len() {
                for j in i..v.len() {
                    prop_assert!(v[i] <= v[j]);
                    if v[i] == v[j] {
                        prop_assert_eq!(hash_of(&v[i]), hash_of(&v[j]));
                    }
                }
            }
        }
    }
}
