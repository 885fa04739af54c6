//! Why a twin (or a part of one) is invalid.

use super::{
    DeviceValueType, MAX_DEVICE_PROPERTIES, MAX_NAME_LEN, MAX_OBJECT_DEPTH, MAX_OBJECT_MEMBERS,
    MAX_SERVICE_PROPERTIES, MAX_STRING_VALUE_LEN, MAX_TAGS, Scalar,
};
use crate::resource::PathError;
use std::fmt;

/// Why a twin, a property, a value or a tag is invalid. Each variant names the offender.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TwinError {
    /// A property name is empty.
    EmptyName,
    /// A property name is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong {
        /// The name (its first [`MAX_NAME_LEN`] bytes).
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A property name has a control character, `.`, `$` or a space.
    InvalidNameChar {
        /// The name.
        name: String,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// A device property name is neither a well-known name nor an LWM2M path.
    UnknownDeviceProperty {
        /// The name (truncated).
        name: String,
    },
    /// A device property name looks like a path but does not parse.
    BadPropertyPath {
        /// The name (truncated).
        name: String,
        /// Why it does not parse.
        error: PathError,
    },
    /// A device property path names an object or an instance, not a resource.
    PropertyPathNotResource {
        /// The name.
        name: String,
    },
    /// A twin names a well-known resource by its path (`/3/0/3`) instead of its name
    /// (`FirmwareVersion`).
    NotCanonicalName {
        /// The name used.
        name: String,
        /// The canonical name.
        canonical: &'static str,
    },
    /// A value does not have the well-known property's type.
    WrongValueType {
        /// The property.
        name: &'static str,
        /// What it holds.
        expected: DeviceValueType,
        /// What was given.
        found: Scalar,
    },
    /// An executable resource (`RebootDevice`, ...) was given a value.
    ExecutableProperty {
        /// The property.
        name: &'static str,
    },
    /// A string value is longer than [`MAX_STRING_VALUE_LEN`] bytes.
    StringTooLong {
        /// Where: the property name, or `outer.inner` inside an object.
        path: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A service property's object value nests deeper than [`MAX_OBJECT_DEPTH`].
    ObjectTooDeep {
        /// Where the limit was crossed (`outer.inner...`).
        path: String,
    },
    /// A service property's object value has more than [`MAX_OBJECT_MEMBERS`] members.
    ObjectTooLarge {
        /// The property.
        name: String,
    },
    /// More than [`MAX_TAGS`] tags.
    TooManyTags {
        /// How many were given.
        count: usize,
    },
    /// More than [`MAX_SERVICE_PROPERTIES`] service properties.
    TooManyServiceProperties {
        /// How many were given.
        count: usize,
    },
    /// More than [`MAX_DEVICE_PROPERTIES`] device properties.
    TooManyDeviceProperties {
        /// How many were given.
        count: usize,
    },
    /// A tag is empty.
    EmptyTag,
    /// A tag is longer than [`MAX_NAME_LEN`] bytes.
    TagTooLong {
        /// The tag (its first [`MAX_NAME_LEN`] bytes).
        tag: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A tag has a control character or `,`.
    InvalidTagChar {
        /// The tag.
        tag: String,
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// A property is given twice (possible only where properties are a list, as in a
    /// [`crate::registry::NewDevice`]; a twin's are a map).
    DuplicateProperty {
        /// The name (its first [`MAX_NAME_LEN`] bytes).
        name: String,
    },
    /// The device id breaks the id rules (where the id comes as a string, as in a
    /// [`crate::registry::NewDevice`]).
    BadDeviceId(crate::DeviceIdError),
    /// A device field string (`statusReason`, `configuration`, ...) is too long.
    FieldTooLong {
        /// The field's JSON name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The twin's PSK credentials are not usable (an identity or key out of its bounds,
    /// or only one of the two), checked where a hub with a `coaps` listener takes them.
    BadCredentials {
        /// Why.
        detail: String,
    },
    /// The twin's PSK identity belongs to another device.
    PskIdentityTaken {
        /// The device that holds it.
        device: crate::DeviceId,
    },
}

impl fmt::Display for TwinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TwinError::EmptyName => f.write_str("property name is empty"),
            TwinError::NameTooLong { name, len } => write!(
                f,
                "property name {name:?}... is {len} bytes long; at most {MAX_NAME_LEN} are allowed"
            ),
            TwinError::InvalidNameChar { name, ch, at } => write!(
                f,
                "property name {name:?} has {ch:?} at byte {at}; control characters, '.', '$' and spaces are not allowed"
            ),
            TwinError::UnknownDeviceProperty { name } => write!(
                f,
                "{name:?} is not a well-known device property name nor an lwm2m resource path"
            ),
            TwinError::BadPropertyPath { name, error } => {
                write!(f, "device property path {name:?} is invalid: {error}")
            }
            TwinError::PropertyPathNotResource { name } => write!(
                f,
                "device property path {name:?} names an object or instance, not a resource"
            ),
            TwinError::NotCanonicalName { name, canonical } => write!(
                f,
                "device property {name:?} must be named {canonical:?}, its well-known name"
            ),
            TwinError::WrongValueType {
                name,
                expected,
                found,
            } => write!(
                f,
                "device property {name} holds a {expected} value, not the {} {found}",
                found.type_name()
            ),
            TwinError::ExecutableProperty { name } => {
                write!(f, "device property {name} is executable and holds no value")
            }
            TwinError::StringTooLong { path, len } => write!(
                f,
                "string value of {path:?} is {len} bytes long; at most {MAX_STRING_VALUE_LEN} are allowed"
            ),
            TwinError::ObjectTooDeep { path } => write!(
                f,
                "value of {path:?} nests objects deeper than {MAX_OBJECT_DEPTH} levels"
            ),
            TwinError::ObjectTooLarge { name } => write!(
                f,
                "object value of {name:?} has more than {MAX_OBJECT_MEMBERS} members"
            ),
            TwinError::TooManyTags { count } => {
                write!(f, "{count} tags given; at most {MAX_TAGS} are allowed")
            }
            TwinError::TooManyServiceProperties { count } => write!(
                f,
                "{count} service properties given; at most {MAX_SERVICE_PROPERTIES} are allowed"
            ),
            TwinError::TooManyDeviceProperties { count } => write!(
                f,
                "{count} device properties given; at most {MAX_DEVICE_PROPERTIES} are allowed"
            ),
            TwinError::EmptyTag => f.write_str("tag is empty"),
            TwinError::TagTooLong { tag, len } => write!(
                f,
                "tag {tag:?}... is {len} bytes long; at most {MAX_NAME_LEN} are allowed"
            ),
            TwinError::InvalidTagChar { tag, ch, at } => write!(
                f,
                "tag {tag:?} has {ch:?} at byte {at}; control characters and ',' are not allowed"
            ),
            TwinError::FieldTooLong { field, len } => write!(f, "{field} is {len} bytes long"),
            TwinError::DuplicateProperty { name } => {
                write!(f, "property {name:?} is given more than once")
            }
            TwinError::BadDeviceId(error) => write!(f, "{error}"),
            TwinError::BadCredentials { detail } => write!(f, "PSK credentials: {detail}"),
            TwinError::PskIdentityTaken { device } => {
                write!(f, "the PSK identity belongs to device {device}")
            }
        }
    }
}

impl std::error::Error for TwinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TwinError::BadPropertyPath { error, .. } => Some(error),
            TwinError::BadDeviceId(error) => Some(error),
            _ => None,
        }
    }
}
