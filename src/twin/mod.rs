//! The device twin: device fields, device properties, service properties and tags.
//!
//! A [`Twin`] is the owned form, in the 2016 preview's JSON shape (see its docs for an
//! example). Inside a [`Registry`](crate::registry::Registry) twins are stored compactly
//! and read back as borrowed views; [`Twin`] is what goes in and what a view converts to.
//!
//! - **Device properties** are reported by the device. Each is named by one of the
//!   preview's well-known names ([`WELL_KNOWN_PROPERTIES`], e.g. `FirmwareVersion` =
//!   `/3/0/3`) or, for any other LWM2M resource, by its path string (`/3303/0/5700`); see
//!   [`DevicePropertyName`]. Values are [`Scalar`]s.
//! - **Service properties** are written by the service; values are scalars or bounded
//!   objects ([`ServiceValue`]); nested members are addressed as `outer.inner`.
//! - **Tags** are strings on the service side, under the same etag as service properties.
//!
//! Names, tags and values are validated with the rules in [`validate_property_name`],
//! [`validate_tag`] and [`Twin::validate`]; every violation is a [`TwinError`] naming the
//! offender.

mod device_id;
mod error;
mod model;
mod property;
mod registration;
mod scalar;

pub use device_id::{DEVICE_ID_PUNCTUATION, DeviceId, DeviceIdError, MAX_DEVICE_ID_LEN};
pub use error::TwinError;
pub(crate) use model::check_field_lengths;
pub use model::{
    Authentication, ConnectionState, DeviceProperty, DeviceStatus, Etag, EtagParseError, PskKey,
    ServiceProperties, ServiceValue, Twin,
};
pub(crate) use property::validate_string_ref;
pub use property::{
    Access, DevicePropertyName, DeviceValueType, MAX_DEVICE_PROPERTIES, MAX_FIELD_LEN,
    MAX_NAME_LEN, MAX_OBJECT_DEPTH, MAX_OBJECT_MEMBERS, MAX_SERVICE_PROPERTIES,
    MAX_STRING_VALUE_LEN, MAX_TAGS, PropertyKind, WELL_KNOWN_PROPERTIES, WellKnownProperty,
    validate_property_name, validate_tag, well_known_by_name, well_known_by_path,
};
pub use registration::RegistrationInfo;
pub use scalar::{Number, Scalar, ScalarRef};
