//! Property names, tags, the preview's well-known device properties and their LWM2M paths.

use super::{Scalar, ScalarRef, TwinError};
use crate::Lwm2mPath;
use std::fmt;

/// Most bytes in a property name (one segment of a service property path) or a tag.
pub const MAX_NAME_LEN: usize = 128;
/// Most bytes in a string value.
pub const MAX_STRING_VALUE_LEN: usize = 4096;
/// Most levels of nested objects in one service property value (`{"a":{"b":1}}` is 2).
pub const MAX_OBJECT_DEPTH: usize = 4;
/// Most members (at every level, together) in one service property's object value.
pub const MAX_OBJECT_MEMBERS: usize = 64;
/// Most tags on one twin.
pub const MAX_TAGS: usize = 64;
/// Most service properties (top level) on one twin.
pub const MAX_SERVICE_PROPERTIES: usize = 256;
/// Most device properties on one twin.
pub const MAX_DEVICE_PROPERTIES: usize = 1024;
/// Most bytes in a device field string (`statusReason`, `configuration`, `pskIdentity`).
pub const MAX_FIELD_LEN: usize = 4096;

/// Which part of the twin a property lives in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum PropertyKind {
    /// A device property: reported by the device, keyed by a well-known name or a path.
    Device,
    /// A service property: written by the service, never sent to the device.
    Service,
}

impl fmt::Display for PropertyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PropertyKind::Device => "device",
            PropertyKind::Service => "service",
        })
    }
}

/// Checks a service property name (or one segment of a nested member's path).
///
/// IoT Hub's rules for twin property names: 1 to [`MAX_NAME_LEN`] bytes, case-sensitive,
/// any UTF-8 except control characters, `.`, `$` and space. (`.` is reserved because the
/// indexes address nested members as `outer.inner`.)
///
/// ```
/// use twinhub::twin::validate_property_name;
/// assert!(validate_property_name("region").is_ok());
/// assert!(validate_property_name("a.b").is_err());
/// ```
pub fn validate_property_name(name: &str) -> Result<(), TwinError> {
    if name.is_empty() {
        return Err(TwinError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(TwinError::NameTooLong {
            name: truncate(name),
            len: name.len(),
        });
    }
    if let Some((at, ch)) = name
        .char_indices()
        .find(|&(_, c)| c.is_control() || c == '.' || c == '$' || c == ' ')
    {
        return Err(TwinError::InvalidNameChar {
            name: name.to_string(),
            ch,
            at,
        });
    }
    Ok(())
}

/// Checks a tag: 1 to [`MAX_NAME_LEN`] bytes of UTF-8 without control characters or `,`
/// (tag queries list tags separated by commas).
///
/// ```
/// use twinhub::twin::validate_tag;
/// assert!(validate_tag("building 7").is_ok());
/// assert!(validate_tag("a,b").is_err());
/// ```
pub fn validate_tag(tag: &str) -> Result<(), TwinError> {
    if tag.is_empty() {
        return Err(TwinError::EmptyTag);
    }
    if tag.len() > MAX_NAME_LEN {
        return Err(TwinError::TagTooLong {
            tag: truncate(tag),
            len: tag.len(),
        });
    }
    if let Some((at, ch)) = tag
        .char_indices()
        .find(|&(_, c)| c.is_control() || c == ',')
    {
        return Err(TwinError::InvalidTagChar {
            tag: tag.to_string(),
            ch,
            at,
        });
    }
    Ok(())
}

/// The first [`MAX_NAME_LEN`] bytes (on a char boundary), for error messages.
pub(crate) fn truncate(s: &str) -> String {
    let mut end = s.len().min(MAX_NAME_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Checks a string value's length.
pub(crate) fn validate_string_value(path: &str, s: &Scalar) -> Result<(), TwinError> {
    validate_string_ref(path, s.borrowed())
}

/// [`validate_string_value`] for a borrowed value.
pub(crate) fn validate_string_ref(path: &str, s: ScalarRef<'_>) -> Result<(), TwinError> {
    if let ScalarRef::String(v) = s
        && v.len() > MAX_STRING_VALUE_LEN
    {
        return Err(TwinError::StringTooLong {
            path: path.to_string(),
            len: v.len(),
        });
    }
    Ok(())
}

/// What values a well-known device property holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum DeviceValueType {
    /// A string.
    String,
    /// An integer number.
    Integer,
    /// A date-time: integer seconds since the Unix epoch (LWM2M Time) or an RFC 3339 string.
    DateTime,
    /// Opaque bytes, held as a base64 string.
    Opaque,
    /// An executable resource: it holds no value and never appears in a twin.
    Executable,
}

impl DeviceValueType {
    /// Whether `value` has this type.
    pub fn accepts(self, value: &Scalar) -> bool {
        self.accepts_ref(value.borrowed())
    }

    fn accepts_ref(self, value: ScalarRef<'_>) -> bool {
        match self {
            DeviceValueType::String | DeviceValueType::Opaque => {
                matches!(value, ScalarRef::String(_))
            }
            DeviceValueType::Integer => {
                matches!(value, ScalarRef::Number(n) if n.as_i64().is_some())
            }
            DeviceValueType::DateTime => match value {
                ScalarRef::Number(n) => n.as_i64().is_some(),
                ScalarRef::String(_) => true,
                ScalarRef::Bool(_) => false,
            },
            DeviceValueType::Executable => false,
        }
    }
}

impl fmt::Display for DeviceValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceValueType::String => "string",
            DeviceValueType::Integer => "integer",
            DeviceValueType::DateTime => "date-time",
            DeviceValueType::Opaque => "opaque (base64 string)",
            DeviceValueType::Executable => "executable (no value)",
        })
    }
}

/// What the service may do with a well-known device property's resource (LWM2M operations).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Access {
    /// Read (and observe).
    pub read: bool,
    /// Write.
    pub write: bool,
    /// Execute.
    pub execute: bool,
}

const R: Access = Access {
    read: true,
    write: false,
    execute: false,
};
const RW: Access = Access {
    read: true,
    write: true,
    execute: false,
};
const W: Access = Access {
    read: false,
    write: true,
    execute: false,
};
const E: Access = Access {
    read: false,
    write: false,
    execute: true,
};

/// One of the preview's predefined device properties: its service name, LWM2M path, type
/// and operations (preview-api §1.2; the preview's `DevicePropertyNames.cs`).
#[derive(Debug, PartialEq, Eq)]
pub struct WellKnownProperty {
    /// The service-side name, e.g. `FirmwareVersion`.
    pub name: &'static str,
    /// The LWM2M resource, e.g. `/3/0/3`.
    pub path: Lwm2mPath,
    /// The type of its values.
    pub value_type: DeviceValueType,
    /// The LWM2M operations it supports.
    pub access: Access,
    /// The valid range of an integer property, where the preview defined one (informative:
    /// reports outside it are stored as reported).
    pub range: Option<(i64, i64)>,
}

const fn wk(
    name: &'static str,
    path: Lwm2mPath,
    value_type: DeviceValueType,
    access: Access,
    range: Option<(i64, i64)>,
) -> WellKnownProperty {
    WellKnownProperty {
        name,
        path,
        value_type,
        access,
        range,
    }
}

use DeviceValueType as T;
const fn res(o: u16, r: u16) -> Lwm2mPath {
    Lwm2mPath::resource(o, 0, r)
}

/// The whole table of the preview's well-known device properties, in the preview's order.
///
/// ```
/// use twinhub::twin::{WELL_KNOWN_PROPERTIES, well_known_by_name};
/// let fw = well_known_by_name("FirmwareVersion").unwrap();
/// assert_eq!(fw.path.to_string(), "/3/0/3");
/// assert_eq!(WELL_KNOWN_PROPERTIES.len(), 28);
/// ```
pub const WELL_KNOWN_PROPERTIES: &[WellKnownProperty] = &[
    wk("Manufacturer", res(3, 0), T::String, R, None),
    wk("ModelNumber", res(3, 1), T::String, R, None),
    wk("SerialNumber", res(3, 2), T::String, R, None),
    wk("FirmwareVersion", res(3, 3), T::String, R, None),
    wk("RebootDevice", res(3, 4), T::Executable, E, None),
    wk("FactoryResetDevice", res(3, 5), T::Executable, E, None),
    wk("BatteryLevel", res(3, 9), T::Integer, R, Some((0, 100))),
    wk("MemoryFree", res(3, 10), T::Integer, R, None),
    wk("CurrentTime", res(3, 13), T::DateTime, RW, None),
    wk("UtcOffset", res(3, 14), T::String, RW, None),
    wk("Timezone", res(3, 15), T::String, RW, None),
    wk("DeviceDescription", res(3, 17), T::String, R, None),
    wk("HardwareVersion", res(3, 18), T::String, R, None),
    wk("BatteryStatus", res(3, 20), T::Integer, R, Some((0, 6))),
    wk("MemoryTotal", res(3, 21), T::Integer, R, None),
    wk("RegistrationLifetime", res(1, 1), T::Integer, RW, None),
    wk("DefaultMinPeriod", res(1, 2), T::Integer, RW, None),
    wk("DefaultMaxPeriod", res(1, 3), T::Integer, RW, None),
    wk("FirmwarePackage", res(5, 0), T::Opaque, W, None),
    wk("FirmwarePackageUri", res(5, 1), T::String, W, None),
    wk("UpdateFirmware", res(5, 2), T::Executable, E, None),
    wk(
        "FirmwareUpdateState",
        res(5, 3),
        T::Integer,
        R,
        Some((1, 3)),
    ),
    wk(
        "FirmwareUpdateResult",
        res(5, 5),
        T::Integer,
        R,
        Some((0, 7)),
    ),
    wk("FirmwarePackageName", res(5, 6), T::String, R, None),
    wk("FirmwarePackageVersion", res(5, 7), T::String, R, None),
    wk("ConfigName", res(10241, 1), T::String, RW, None),
    wk("ConfigValue", res(10241, 2), T::String, RW, None),
    wk("ConfigApply", res(10241, 3), T::Executable, E, None),
];

/// The well-known property with this service name (case-sensitive).
pub fn well_known_by_name(name: &str) -> Option<&'static WellKnownProperty> {
    WELL_KNOWN_PROPERTIES.iter().find(|p| p.name == name)
}

/// The well-known property at this LWM2M path.
pub fn well_known_by_path(path: &Lwm2mPath) -> Option<&'static WellKnownProperty> {
    WELL_KNOWN_PROPERTIES.iter().find(|p| p.path == *path)
}

/// A device property's name: one of the preview's well-known names, or (for everything
/// else a device exposes) the LWM2M path of the resource.
///
/// **Naming of custom properties.** A resource that is not in the well-known table is
/// named by its canonical path string, e.g. `/3303/0/5700` (a temperature sensor's value)
/// or `/3/0/6/1` (a resource instance). A well-known resource is always named by its
/// well-known name, never by its path, so each resource has exactly one name;
/// [`DevicePropertyName::parse`] accepts either spelling and returns the canonical one.
///
/// ```
/// use twinhub::twin::DevicePropertyName;
/// let by_path = DevicePropertyName::parse("/3/0/9").unwrap();
/// assert_eq!(by_path.as_str(), "BatteryLevel");
/// let custom = DevicePropertyName::parse("/3303/0/5700").unwrap();
/// assert_eq!(custom.as_str(), "/3303/0/5700");
/// assert!(DevicePropertyName::parse("Battery").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DevicePropertyName {
    /// A name from [`WELL_KNOWN_PROPERTIES`].
    WellKnown(&'static WellKnownProperty),
    /// Any other resource (or resource instance), named by its path.
    Custom {
        /// The resource's path (3 or 4 segments).
        path: Lwm2mPath,
        /// The canonical path string.
        name: String,
    },
}

impl DevicePropertyName {
    /// Parses a well-known name or an LWM2M resource path, returning the canonical name.
    pub fn parse(s: &str) -> Result<DevicePropertyName, TwinError> {
        if let Some(wk) = well_known_by_name(s) {
            return Ok(DevicePropertyName::WellKnown(wk));
        }
        if s.starts_with('/') {
            let path: Lwm2mPath = s.parse().map_err(|error| TwinError::BadPropertyPath {
                name: truncate(s),
                error,
            })?;
            return DevicePropertyName::from_path(path)
                .ok_or_else(|| TwinError::PropertyPathNotResource { name: truncate(s) });
        }
        Err(TwinError::UnknownDeviceProperty { name: truncate(s) })
    }

    /// The property for a resource path, or `None` when the path is not a resource or a
    /// resource instance (fewer than 3 segments).
    pub fn from_path(path: Lwm2mPath) -> Option<DevicePropertyName> {
        if path.depth() < 3 {
            return None;
        }
        Some(match well_known_by_path(&path) {
            Some(wk) => DevicePropertyName::WellKnown(wk),
            None => DevicePropertyName::Custom {
                path,
                name: path.to_string(),
            },
        })
    }

    /// The canonical name.
    pub fn as_str(&self) -> &str {
        match self {
            DevicePropertyName::WellKnown(wk) => wk.name,
            DevicePropertyName::Custom { name, .. } => name,
        }
    }

    /// The LWM2M resource (or resource instance) the property maps to.
    pub fn path(&self) -> Lwm2mPath {
        match self {
            DevicePropertyName::WellKnown(wk) => wk.path,
            DevicePropertyName::Custom { path, .. } => *path,
        }
    }

    /// [`DevicePropertyName::parse`], for a name a twin stores: it must be the canonical
    /// one (`BatteryLevel`, not `/3/0/9`; `/3303/0/5700`, not `/3303/00/5700`).
    pub(crate) fn parse_canonical(name: &str) -> Result<DevicePropertyName, TwinError> {
        let parsed = DevicePropertyName::parse(name)?;
        if parsed.as_str() == name {
            return Ok(parsed);
        }
        Err(match parsed {
            DevicePropertyName::WellKnown(wk) => TwinError::NotCanonicalName {
                name: truncate(name),
                canonical: wk.name,
            },
            DevicePropertyName::Custom { .. } => TwinError::UnknownDeviceProperty {
                name: truncate(name),
            },
        })
    }

    /// Checks that `value` fits the property: well-known properties have a type (and
    /// executable ones hold no value); custom ones take any scalar. Strings are bounded.
    pub fn check_value(&self, value: &Scalar) -> Result<(), TwinError> {
        self.check_value_ref(value.borrowed())
    }

    /// [`DevicePropertyName::check_value`] for a borrowed value.
    pub(crate) fn check_value_ref(&self, value: ScalarRef<'_>) -> Result<(), TwinError> {
        validate_string_ref(self.as_str(), value)?;
        if let DevicePropertyName::WellKnown(wk) = self {
            if wk.value_type == DeviceValueType::Executable {
                return Err(TwinError::ExecutableProperty { name: wk.name });
            }
            if !wk.value_type.accepts_ref(value) {
                return Err(TwinError::WrongValueType {
                    name: wk.name,
                    expected: wk.value_type,
                    found: value.to_scalar(),
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for DevicePropertyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for (i, a) in WELL_KNOWN_PROPERTIES.iter().enumerate() {
            assert!(a.path.depth() == 3, "{}", a.name);
            validate_property_name(a.name).unwrap();
            for b in &WELL_KNOWN_PROPERTIES[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.path, b.path);
            }
            assert_eq!(well_known_by_path(&a.path), Some(a));
            let n = DevicePropertyName::parse(&a.path.to_string()).unwrap();
            assert_eq!(n.as_str(), a.name);
        }
        let fw = well_known_by_name("FirmwareUpdateState").unwrap();
        assert_eq!(fw.path, Lwm2mPath::resource(5, 0, 3));
        assert_eq!(
            well_known_by_name("ConfigApply").unwrap().path,
            Lwm2mPath::resource(10241, 0, 3)
        );
    }

    #[test]
    fn property_name_errors_name_the_offender() {
        assert_eq!(validate_property_name(""), Err(TwinError::EmptyName));
        assert_eq!(
            validate_property_name("a b"),
            Err(TwinError::InvalidNameChar {
                name: "a b".into(),
                ch: ' ',
                at: 1
            })
        );
        for bad in ["$x", "x.y", "t\u{7}"] {
            assert!(matches!(
                validate_property_name(bad),
                Err(TwinError::InvalidNameChar { .. })
            ));
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            validate_property_name(&long),
            Err(TwinError::NameTooLong {
                name: "n".repeat(MAX_NAME_LEN),
                len: MAX_NAME_LEN + 1
            })
        );
        assert!(validate_property_name(&long[1..]).is_ok());
        assert!(validate_property_name("Région-1_x").is_ok());
    }

    #[test]
    fn tag_errors() {
        assert_eq!(validate_tag(""), Err(TwinError::EmptyTag));
        assert_eq!(
            validate_tag("a,b"),
            Err(TwinError::InvalidTagChar {
                tag: "a,b".into(),
                ch: ',',
                at: 1
            })
        );
        assert!(matches!(
            validate_tag(&"t".repeat(129)),
            Err(TwinError::TagTooLong { len: 129, .. })
        ));
    }

    #[test]
    fn device_property_names() {
        assert!(matches!(
            DevicePropertyName::parse("/3/0"),
            Err(TwinError::PropertyPathNotResource { .. })
        ));
        assert!(matches!(
            DevicePropertyName::parse("/3/x/1"),
            Err(TwinError::BadPropertyPath { .. })
        ));
        assert_eq!(
            DevicePropertyName::parse("firmwareVersion"),
            Err(TwinError::UnknownDeviceProperty {
                name: "firmwareVersion".into()
            })
        );
        let ri = DevicePropertyName::parse("/3/0/6/1").unwrap();
        assert_eq!(ri.path(), Lwm2mPath::resource_instance(3, 0, 6, 1));
        assert_eq!(ri.as_str(), "/3/0/6/1");
    }

    #[test]
    fn value_types() {
        let bl = DevicePropertyName::parse("BatteryLevel").unwrap();
        assert!(bl.check_value(&Scalar::from(50)).is_ok());
        assert!(bl.check_value(&Scalar::from(50.0)).is_ok());
        assert_eq!(
            bl.check_value(&Scalar::from("50")),
            Err(TwinError::WrongValueType {
                name: "BatteryLevel",
                expected: DeviceValueType::Integer,
                found: Scalar::from("50")
            })
        );
        assert!(bl.check_value(&Scalar::from(50.5)).is_err());
        let reboot = DevicePropertyName::parse("RebootDevice").unwrap();
        assert_eq!(
            reboot.check_value(&Scalar::from(true)),
            Err(TwinError::ExecutableProperty {
                name: "RebootDevice"
            })
        );
        let ct = DevicePropertyName::parse("CurrentTime").unwrap();
        assert!(ct.check_value(&Scalar::from(1_461_931_200)).is_ok());
        assert!(ct.check_value(&Scalar::from(true)).is_err());
        let custom = DevicePropertyName::parse("/3303/0/5700").unwrap();
        assert!(custom.check_value(&Scalar::from(21.5)).is_ok());
        assert!(matches!(
            custom.check_value(&Scalar::from("x".repeat(MAX_STRING_VALUE_LEN + 1))),
            Err(TwinError::StringTooLong { .. })
        ));
    }
}
