//! The object model: definitions (what an object's resources are), the [`Object`] trait an
//! application implements per object, and the errors an object may answer with.
//!
//! The client core checks access modes, types and paths before it calls an object, so an
//! implementation only sees well-formed calls for resources its definition declares.

use crate::lwm2m::{Lwm2mPath, ResourceType, ResourceValue};
use crate::transport::WriteMode;
use std::borrow::Cow;
use std::fmt;

/// What the LWM2M server may do with a resource.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Access {
    /// Read (and observe) only.
    Read,
    /// Write only.
    Write,
    /// Read and write.
    ReadWrite,
    /// Execute only; the resource has no value.
    Execute,
}

impl Access {
    /// Whether the server may read the resource.
    pub fn readable(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    /// Whether the server may write the resource.
    pub fn writable(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }

    /// Whether the server may execute the resource.
    pub fn executable(self) -> bool {
        self == Access::Execute
    }
}

/// One resource of an object definition.
///
/// ```
/// use twinhub::lwm2m::client::{Access, ResourceDef};
/// use twinhub::ResourceType;
/// let r = ResourceDef::new(9, "Battery Level", ResourceType::Integer, Access::Read);
/// assert!(r.access.readable() && !r.multiple);
/// ```
#[derive(Clone, PartialEq, Debug)]
pub struct ResourceDef {
    /// The resource id.
    pub id: u16,
    /// A human-readable name (the OMA registry's name for standard resources).
    pub name: Cow<'static, str>,
    /// The value type ([`ResourceType::None`] for executable resources).
    pub kind: ResourceType,
    /// What the server may do with it.
    pub access: Access,
    /// Whether it holds several resource instances (`/o/i/r/ri`).
    pub multiple: bool,
}

impl ResourceDef {
    /// A single-instance resource.
    pub const fn new(id: u16, name: &'static str, kind: ResourceType, access: Access) -> Self {
        ResourceDef {
            id,
            name: Cow::Borrowed(name),
            kind,
            access,
            multiple: false,
        }
    }

    /// A multiple-instance resource.
    pub const fn multiple(id: u16, name: &'static str, kind: ResourceType, access: Access) -> Self {
        ResourceDef {
            id,
            name: Cow::Borrowed(name),
            kind,
            access,
            multiple: true,
        }
    }

    /// An executable resource.
    pub const fn executable(id: u16, name: &'static str) -> Self {
        ResourceDef::new(id, name, ResourceType::None, Access::Execute)
    }
}

/// What an object is: its id, whether it may have several instances, and its resources.
///
/// Standard objects use `&'static` definitions (no per-device memory); applications build
/// their own with [`ObjectDef::new`].
#[derive(Clone, PartialEq, Debug)]
pub struct ObjectDef {
    /// The object id.
    pub id: u16,
    /// A human-readable name.
    pub name: Cow<'static, str>,
    /// The object version announced at registration (`ver=`), when not 1.0.
    pub version: Option<&'static str>,
    /// Whether the object may have more than one instance.
    pub multiple: bool,
    /// The resources, in ascending id order.
    pub resources: Cow<'static, [ResourceDef]>,
}

impl ObjectDef {
    /// An application-defined object; `resources` are sorted by id.
    ///
    /// ```
    /// use twinhub::lwm2m::client::{Access, ObjectDef, ResourceDef};
    /// use twinhub::ResourceType;
    /// let temp = ObjectDef::new(3303, "Temperature", true, vec![
    ///     ResourceDef::new(5700, "Sensor Value", ResourceType::Float, Access::Read),
    /// ]);
    /// assert!(temp.resource(5700).is_some());
    /// ```
    pub fn new(
        id: u16,
        name: impl Into<Cow<'static, str>>,
        multiple: bool,
        mut resources: Vec<ResourceDef>,
    ) -> Self {
        resources.sort_by_key(|r| r.id);
        resources.dedup_by_key(|r| r.id);
        ObjectDef {
            id,
            name: name.into(),
            version: None,
            multiple,
            resources: Cow::Owned(resources),
        }
    }

    /// The definition of resource `rid`, if the object has one.
    pub fn resource(&self, rid: u16) -> Option<&ResourceDef> {
        self.resources
            .binary_search_by_key(&rid, |r| r.id)
            .ok()
            .map(|i| &self.resources[i])
    }
}

impl From<ObjectDef> for Cow<'static, ObjectDef> {
    fn from(def: ObjectDef) -> Self {
        Cow::Owned(def)
    }
}

impl From<&'static ObjectDef> for Cow<'static, ObjectDef> {
    fn from(def: &'static ObjectDef) -> Self {
        Cow::Borrowed(def)
    }
}

/// A resource's value: one value, or the instances of a multiple resource.
#[derive(Clone, PartialEq, Debug)]
pub enum ResourceData {
    /// A single-instance resource's value.
    Single(ResourceValue),
    /// A multiple resource's instances, `(resource instance id, value)`, ascending ids.
    Multiple(Vec<(u16, ResourceValue)>),
}

impl ResourceData {
    /// The single value, if this is one.
    pub fn as_single(&self) -> Option<&ResourceValue> {
        match self {
            ResourceData::Single(v) => Some(v),
            ResourceData::Multiple(_) => None,
        }
    }
}

/// Why an object refused an operation. The client core maps each to a CoAP code.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ObjectError {
    /// No such instance or resource (4.04).
    NotFound,
    /// The operation is not allowed here (4.05), e.g. Update outside the Downloaded state.
    MethodNotAllowed,
    /// The server may not access this object (4.01), e.g. Security /0.
    Unauthorized,
    /// The application's validation refused the value (4.00); nothing was changed.
    Rejected,
    /// A value does not have, and cannot be read as, the resource's type (4.00).
    TypeMismatch {
        /// The resource's declared type.
        expected: ResourceType,
    },
    /// Create was asked for an instance id that exists (4.00).
    AlreadyExists,
    /// A bounded table (instances, observations, attributes) is full (5.00 / 4.13).
    Full,
    /// The application failed to carry out an execute or write (5.00).
    Failed,
    /// A value the device holds (a read callback's, a custom [`Object`]'s) does not fit,
    /// and cannot be read as, its resource's declared type (5.00: the device's fault, not
    /// the request's). The read answers this rather than send a value of another type.
    HeldTypeMismatch {
        /// The resource's declared type.
        expected: ResourceType,
    },
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectError::NotFound => f.write_str("no such instance or resource"),
            ObjectError::MethodNotAllowed => f.write_str("operation not allowed here"),
            ObjectError::Unauthorized => f.write_str("the server may not access this object"),
            ObjectError::Rejected => f.write_str("the application rejected the value"),
            ObjectError::TypeMismatch { expected } => {
                write!(f, "value is not of the resource's type {expected:?}")
            }
            ObjectError::AlreadyExists => f.write_str("the instance already exists"),
            ObjectError::Full => f.write_str("a bounded table is full"),
            ObjectError::Failed => f.write_str("the application failed to carry out the operation"),
            ObjectError::HeldTypeMismatch { expected } => {
                write!(
                    f,
                    "the value held is not of the resource's type {expected:?}"
                )
            }
        }
    }
}

impl std::error::Error for ObjectError {}

/// One LWM2M object as the application implements it: the per-object callback interface.
///
/// The client core has already checked, before any call, that the instance exists (except
/// for `create`), that the resource is declared with a suitable access mode, and that
/// written values have the declared type. Values a server may see change outside a server
/// request are reported through [`Object::drain_changes`] (or the client's `notify_changed`).
///
/// Most applications do not implement this trait by hand: [`ValueObject`](super::ValueObject)
/// stores plain values and takes per-resource closures.
pub trait Object: Send {
    /// The object's definition.
    fn definition(&self) -> &ObjectDef;

    /// The ids of the existing instances, ascending.
    fn instance_ids(&self) -> Vec<u16>;

    /// The ids of the resources present in instance `iid`, ascending (for reads of whole
    /// instances and for discover). Executable resources are listed too.
    fn resource_ids(&self, iid: u16) -> Vec<u16>;

    /// Reads resource `rid` of instance `iid`.
    fn read(&mut self, iid: u16, rid: u16) -> Result<ResourceData, ObjectError>;

    /// Checks a value before anything is written; the core validates every value of a
    /// request before it applies any. The default accepts everything.
    fn validate(&mut self, iid: u16, rid: u16, data: &ResourceData) -> Result<(), ObjectError> {
        let _ = (iid, rid, data);
        Ok(())
    }

    /// Checks all the values one request writes into instance `iid` (by resource id,
    /// ascending) before any of them is written: a Write, a Write-Composite's values in
    /// this instance, a Create, a Bootstrap-Write. A refusal writes nothing. The default
    /// checks each value with [`Object::validate`]; override it when the values constrain
    /// one another, or when the object's state decides what may be written, so that
    /// [`Object::write`] is not left to refuse after earlier values went in.
    fn validate_write(
        &mut self,
        iid: u16,
        writes: &[(u16, ResourceData)],
    ) -> Result<(), ObjectError> {
        writes
            .iter()
            .try_for_each(|(rid, data)| self.validate(iid, *rid, data))
    }

    /// Writes resource `rid` of instance `iid`. For a multiple resource, `Replace` replaces
    /// all its instances and `PartialUpdate` merges the given ones in.
    fn write(
        &mut self,
        iid: u16,
        rid: u16,
        data: ResourceData,
        mode: WriteMode,
    ) -> Result<(), ObjectError>;

    /// Executes resource `rid` of instance `iid` with the raw argument text.
    fn execute(&mut self, iid: u16, rid: u16, args: &str) -> Result<(), ObjectError> {
        let _ = (iid, rid, args);
        Err(ObjectError::MethodNotAllowed)
    }

    /// Creates instance `iid` with initial values. The default refuses (4.05).
    fn create(&mut self, iid: u16, values: Vec<(u16, ResourceData)>) -> Result<(), ObjectError> {
        let _ = (iid, values);
        Err(ObjectError::MethodNotAllowed)
    }

    /// Deletes instance `iid`. The default refuses (4.05).
    fn delete(&mut self, iid: u16) -> Result<(), ObjectError> {
        let _ = iid;
        Err(ObjectError::MethodNotAllowed)
    }

    /// Moves the paths whose values changed on their own (not through a server request)
    /// since the last call into `out`. The default reports nothing.
    fn drain_changes(&mut self, out: &mut Vec<Lwm2mPath>) {
        let _ = out;
    }
}

/// Reads `value` as a value of type `kind`, converting where LWM2M allows it: text payloads
/// arrive as strings, TLV payloads of unknown type as raw bytes.
///
/// Raw bytes (`Opaque`) read as LWM2M 1.1's TLV value encodings (Appendix C): an Integer
/// or a Time from 1, 2, 4 or 8 big-endian bytes, two's complement (`0xff` is -1); an
/// Unsigned Integer from 1, 2, 4 or 8 big-endian bytes, unsigned (`0xff` is 255, eight
/// `0xff` are `u64::MAX`); a Float from 4 (single precision) or 8 (double) bytes; a
/// Boolean from one byte 0 or 1; an Objlnk from 4 bytes. Other lengths are a
/// [`ObjectError::TypeMismatch`]. Text reads as the type's decimal form, an Unsigned
/// Integer to `u64::MAX`.
///
/// ```
/// use twinhub::lwm2m::client::coerce;
/// use twinhub::{ResourceType, ResourceValue};
/// let v = coerce(ResourceValue::String("42".into()), ResourceType::Integer).unwrap();
/// assert_eq!(v, ResourceValue::Integer(42));
/// let v = coerce(ResourceValue::Opaque(vec![0x01, 0x00]), ResourceType::Integer).unwrap();
/// assert_eq!(v, ResourceValue::Integer(256));
/// ```
pub fn coerce(value: ResourceValue, kind: ResourceType) -> Result<ResourceValue, ObjectError> {
    use ResourceValue as V;
    let bad = ObjectError::TypeMismatch { expected: kind };
    if value.resource_type() == kind {
        return Ok(value);
    }
    Ok(match (kind, value) {
        (ResourceType::String, V::Opaque(b)) => V::String(String::from_utf8(b).map_err(|_| bad)?),
        (ResourceType::String, v @ (V::Integer(_) | V::UnsignedInteger(_) | V::Float(_))) => {
            V::String(v.to_string())
        }
        (ResourceType::Opaque, V::String(s)) => V::Opaque(s.into_bytes()),
        (ResourceType::Integer, v) => V::Integer(as_integer(&v).ok_or(bad)?),
        (ResourceType::Time, v) => V::Time(as_integer(&v).ok_or(bad)?),
        (ResourceType::UnsignedInteger, v) => V::UnsignedInteger(as_unsigned(&v).ok_or(bad)?),
        (ResourceType::Float, V::Integer(i)) => V::Float(i as f64),
        (ResourceType::Float, V::UnsignedInteger(u)) => V::Float(u as f64),
        (ResourceType::Float, V::String(s)) => V::Float(
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or(bad)?,
        ),
        (ResourceType::Float, V::Opaque(b)) => match b.len() {
            4 => V::Float(f32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64),
            8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b);
                V::Float(f64::from_be_bytes(a))
            }
            _ => return Err(bad),
        },
        (ResourceType::Boolean, V::String(s)) => match s.trim() {
            "1" | "true" => V::Boolean(true),
            "0" | "false" => V::Boolean(false),
            _ => return Err(bad),
        },
        (ResourceType::Boolean, V::Integer(i @ (0 | 1))) => V::Boolean(i == 1),
        (ResourceType::Boolean, V::Opaque(b)) if b.len() == 1 && b[0] <= 1 => V::Boolean(b[0] == 1),
        (ResourceType::ObjectLink, V::String(s)) => {
            let (o, i) = s.trim().split_once(':').ok_or(bad.clone())?;
            V::ObjectLink(
                o.parse().map_err(|_| bad.clone())?,
                i.parse().map_err(|_| bad)?,
            )
        }
        (ResourceType::ObjectLink, V::Opaque(b)) if b.len() == 4 => V::ObjectLink(
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        ),
        _ => return Err(bad),
    })
}

/// An integer from an integer, a time, decimal text, or 1/2/4/8 big-endian bytes (TLV).
fn as_integer(v: &ResourceValue) -> Option<i64> {
    match v {
        ResourceValue::Integer(i) | ResourceValue::Time(i) => Some(*i),
        ResourceValue::UnsignedInteger(u) => i64::try_from(*u).ok(),
        ResourceValue::String(s) => s.trim().parse().ok(),
        ResourceValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        ResourceValue::Opaque(b) => match b.len() {
            1 => Some(b[0] as i8 as i64),
            2 => Some(i16::from_be_bytes([b[0], b[1]]) as i64),
            4 => Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64),
            8 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Some(i64::from_be_bytes(a))
            }
            _ => None,
        },
        _ => None,
    }
}

/// An unsigned integer from an unsigned integer, a non-negative integer or time, decimal
/// text (to `u64::MAX`), or 1/2/4/8 big-endian bytes read unsigned (TLV).
fn as_unsigned(v: &ResourceValue) -> Option<u64> {
    match v {
        ResourceValue::UnsignedInteger(u) => Some(*u),
        ResourceValue::String(s) => s.trim().parse().ok(),
        ResourceValue::Opaque(b) if matches!(b.len(), 1 | 2 | 4 | 8) => {
            Some(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
        }
        ResourceValue::Opaque(_) => None,
        other => as_integer(other).and_then(|i| u64::try_from(i).ok()),
    }
}

/// A value as a number, for the gt / lt / st notification attributes.
pub(crate) fn numeric(v: &ResourceValue) -> Option<f64> {
    match v {
        ResourceValue::Integer(i) | ResourceValue::Time(i) => Some(*i as f64),
        ResourceValue::UnsignedInteger(u) => Some(*u as f64),
        ResourceValue::Float(f) => Some(*f),
        ResourceValue::Boolean(b) => Some(*b as u8 as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coerce_conversions() {
        use ResourceValue as V;
        let t = |v, k| coerce(v, k);
        assert_eq!(
            t(V::String("1".into()), ResourceType::Boolean),
            Ok(V::Boolean(true))
        );
        assert_eq!(
            t(V::String("2.5".into()), ResourceType::Float),
            Ok(V::Float(2.5))
        );
        assert_eq!(
            t(V::String("3:1".into()), ResourceType::ObjectLink),
            Ok(V::ObjectLink(3, 1))
        );
        assert_eq!(
            t(V::Opaque(vec![0xff]), ResourceType::Integer),
            Ok(V::Integer(-1))
        );
        assert_eq!(
            t(V::Opaque(vec![0, 3, 0, 1]), ResourceType::ObjectLink),
            Ok(V::ObjectLink(3, 1))
        );
        assert_eq!(
            t(V::Opaque(b"hi".to_vec()), ResourceType::String),
            Ok(V::String("hi".into()))
        );
        assert_eq!(
            t(V::String("x".into()), ResourceType::Integer),
            Err(ObjectError::TypeMismatch {
                expected: ResourceType::Integer
            })
        );
        assert!(t(V::Opaque(vec![1, 2, 3]), ResourceType::Integer).is_err());
        assert!(t(V::String("nan".into()), ResourceType::Float).is_err());
        assert!(t(V::Boolean(true), ResourceType::ObjectLink).is_err());
        assert_eq!(t(V::Integer(5), ResourceType::Time), Ok(V::Time(5)));
    }

    /// Checks: raw bytes read as the declared type's TLV encoding, signed for Integer and
    /// Time, unsigned for Unsigned Integer, at every width LWM2M allows (1, 2, 4, 8), and
    /// decimal text to the type's full range.
    /// Before the fix: Unsigned Integer went through the signed reading, so `0xff` (255)
    /// was -1 and refused, as were `0xffff`, `0xffffffff`, eight `0xff` (`u64::MAX`) and
    /// the text "18446744073709551615".
    #[test]
    fn opaque_bytes_and_text_read_with_the_declared_signedness_at_every_width() {
        use ResourceValue as V;
        let t = |v: Vec<u8>, k| coerce(V::Opaque(v), k);
        let widths: [(Vec<u8>, i64, u64); 8] = [
            (vec![0x7f], 127, 127),
            (vec![0xff], -1, 255),
            (vec![0x80, 0x00], i64::from(i16::MIN), 0x8000),
            (vec![0xff; 2], -1, u64::from(u16::MAX)),
            (vec![0x80, 0, 0, 0], i64::from(i32::MIN), 0x8000_0000),
            (vec![0xff; 4], -1, u64::from(u32::MAX)),
            (vec![0x80, 0, 0, 0, 0, 0, 0, 0], i64::MIN, 1 << 63),
            (vec![0xff; 8], -1, u64::MAX),
        ];
        for (bytes, signed, unsigned) in widths {
            assert_eq!(
                t(bytes.clone(), ResourceType::Integer),
                Ok(V::Integer(signed)),
                "{bytes:02x?}"
            );
            assert_eq!(
                t(bytes.clone(), ResourceType::Time),
                Ok(V::Time(signed)),
                "{bytes:02x?}"
            );
            assert_eq!(
                t(bytes.clone(), ResourceType::UnsignedInteger),
                Ok(V::UnsignedInteger(unsigned)),
                "{bytes:02x?}"
            );
        }
        // Lengths LWM2M does not have are refused, signed or not.
        for len in [0, 3, 5, 6, 7, 9] {
            for k in [
                ResourceType::Integer,
                ResourceType::Time,
                ResourceType::UnsignedInteger,
            ] {
                assert_eq!(
                    t(vec![1; len], k),
                    Err(ObjectError::TypeMismatch { expected: k }),
                    "{len} bytes as {k:?}"
                );
            }
        }
        // Floats: 4 bytes single, 8 double, nothing else.
        assert_eq!(
            t(1.5f32.to_be_bytes().to_vec(), ResourceType::Float),
            Ok(V::Float(1.5))
        );
        assert_eq!(
            t((-2.25f64).to_be_bytes().to_vec(), ResourceType::Float),
            Ok(V::Float(-2.25))
        );
        for len in [1, 2, 3, 5, 7, 9] {
            assert!(t(vec![0x3f; len], ResourceType::Float).is_err(), "{len}");
        }
        // Text: the whole unsigned range, and no negative unsigned.
        let text = |s: &str, k| coerce(V::String(s.into()), k);
        assert_eq!(
            text("18446744073709551615", ResourceType::UnsignedInteger),
            Ok(V::UnsignedInteger(u64::MAX))
        );
        assert!(text("-1", ResourceType::UnsignedInteger).is_err());
        assert!(text("18446744073709551616", ResourceType::UnsignedInteger).is_err());
        assert_eq!(
            text("-9223372036854775808", ResourceType::Integer),
            Ok(V::Integer(i64::MIN))
        );
        // Across types: a negative number is no Unsigned Integer, one above i64 no Integer.
        assert!(coerce(V::Integer(-1), ResourceType::UnsignedInteger).is_err());
        assert!(coerce(V::UnsignedInteger(u64::MAX), ResourceType::Integer).is_err());
        assert_eq!(
            coerce(V::UnsignedInteger(7), ResourceType::Integer),
            Ok(V::Integer(7))
        );
    }

    #[test]
    fn definition_lookup_sorted() {
        let d = ObjectDef::new(
            9000,
            "x",
            false,
            vec![
                ResourceDef::new(5, "b", ResourceType::Integer, Access::Read),
                ResourceDef::new(1, "a", ResourceType::String, Access::ReadWrite),
            ],
        );
        assert_eq!(d.resources[0].id, 1);
        assert_eq!(d.resource(5).unwrap().name, "b");
        assert!(d.resource(2).is_none());
    }
}
