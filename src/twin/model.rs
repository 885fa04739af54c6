//! The owned twin, in the preview's JSON shape.

use super::property::{MAX_FIELD_LEN, truncate, validate_string_value};
use super::{
    DevicePropertyName, MAX_DEVICE_PROPERTIES, MAX_OBJECT_DEPTH, MAX_OBJECT_MEMBERS,
    MAX_SERVICE_PROPERTIES, MAX_TAGS, Scalar, TwinError, validate_property_name, validate_tag,
};
use crate::twin::RegistrationInfo;
use crate::{DeviceId, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// An entity tag: changes whenever what it covers changes. Serialised as a string.
///
/// The registry draws etags from its change-feed sequence, so an etag is the sequence
/// number of the last change that touched what it covers.
///
/// ```
/// use twinhub::twin::Etag;
/// let e: Etag = "42".parse().unwrap();
/// assert_eq!(e, Etag(42));
/// assert_eq!(serde_json::to_string(&e).unwrap(), r#""42""#);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Etag(pub u64);

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a string is not an [`Etag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtagParseError {
    /// The text (truncated).
    pub input: String,
}

impl fmt::Display for EtagParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid etag {:?}: expected a decimal number",
            self.input
        )
    }
}

impl std::error::Error for EtagParseError {}

impl std::str::FromStr for Etag {
    type Err = EtagParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Accept the quoted HTTP form too: "\"42\"".
        let t = s
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(s);
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EtagParseError { input: truncate(s) });
        }
        t.parse()
            .map(Etag)
            .map_err(|_| EtagParseError { input: truncate(s) })
    }
}

impl serde::Serialize for Etag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Etag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether a device may connect.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// The device may connect (the default).
    #[default]
    Enabled,
    /// The device is refused.
    Disabled,
}

/// Whether a device is connected (registered with the LWM2M server).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, Default, serde::Serialize, serde::Deserialize,
)]
pub enum ConnectionState {
    /// Not connected (the default).
    #[default]
    Disconnected,
    /// Connected.
    Connected,
}

/// A pre-shared key. Its bytes never appear in serialized output nor in `Debug`, and
/// are overwritten with zeros when the key is dropped (copies handed to the DTLS layer
/// through [`PskKey::expose`] are that layer's, and dimpl does not overwrite them).
///
/// ```
/// use twinhub::twin::PskKey;
/// let k = PskKey::new(vec![1, 2, 3]);
/// assert_eq!(format!("{k:?}"), "PskKey(<redacted>)");
/// assert_eq!(k.expose(), &[1, 2, 3]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PskKey(Box<[u8]>);

impl PskKey {
    /// A key from its bytes.
    pub fn new(key: impl Into<Box<[u8]>>) -> Self {
        PskKey(key.into())
    }

    /// The key's bytes, for the DTLS layer.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// A key from pairs of hex digits, decoded straight into the key's own buffer:
    /// `hex::decode` grows its vector as it goes, freeing (unzeroed) the smaller
    /// buffers that held the key's first bytes. `None` for anything but hex digits.
    pub(crate) fn from_hex_digits(text: &str) -> Option<PskKey> {
        if !text.len().is_multiple_of(2) {
            return None;
        }
        // Zeroed on drop also when the digits turn out not to be hex halfway through.
        let mut key = PskKey(vec![0u8; text.len() / 2].into_boxed_slice());
        hex::decode_to_slice(text, &mut key.0).ok()?;
        Some(key)
    }
}

impl Drop for PskKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut *self.0);
    }
}

impl fmt::Debug for PskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PskKey(<redacted>)")
    }
}

/// How a device authenticates. The key is never serialized: JSON carries only
/// `{"pskIdentity": ...}`, and deserializing yields no key.
#[derive(Clone, PartialEq, Eq, Default, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    /// The PSK identity the device presents, if it uses a PSK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk_identity: Option<String>,
    /// The pre-shared key (redacted in `Debug`, never serialized).
    #[serde(skip)]
    pub psk_key: Option<PskKey>,
}

impl Authentication {
    /// Whether there is nothing to authenticate with.
    pub fn is_empty(&self) -> bool {
        self.psk_identity.is_none() && self.psk_key.is_none()
    }
}

/// A device property's value and when the device last reported it.
#[derive(Clone, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceProperty {
    /// The value.
    pub value: Scalar,
    /// When the device reported it.
    pub last_updated_time: Timestamp,
}

/// A service property's value: a scalar or a bounded object whose leaves are scalars.
///
/// Nested members are indexed (and queried) as `outer.inner`. Arrays and `null` are not
/// values.
///
/// ```
/// use twinhub::twin::ServiceValue;
/// let v: ServiceValue = serde_json::from_str(r#"{"mode":"eco","level":3}"#).unwrap();
/// assert!(matches!(v, ServiceValue::Object(ref m) if m.len() == 2));
/// assert!(serde_json::from_str::<ServiceValue>("[1]").is_err());
/// ```
#[derive(Clone, PartialEq, Debug)]
pub enum ServiceValue {
    /// A scalar.
    Scalar(Scalar),
    /// An object.
    Object(BTreeMap<String, ServiceValue>),
}

impl<T: Into<Scalar>> From<T> for ServiceValue {
    fn from(v: T) -> Self {
        ServiceValue::Scalar(v.into())
    }
}

impl serde::Serialize for ServiceValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServiceValue::Scalar(v) => v.serialize(s),
            ServiceValue::Object(m) => m.serialize(s),
        }
    }
}

struct ServiceValueVisitor;

impl<'de> serde::de::Visitor<'de> for ServiceValueVisitor {
    type Value = ServiceValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, a number, a string or an object")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ServiceValue, E> {
        Ok(ServiceValue::Scalar(Scalar::Bool(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ServiceValue, E> {
        Ok(ServiceValue::Scalar(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ServiceValue, E> {
        Ok(ServiceValue::Scalar(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ServiceValue, E> {
        super::scalar::ScalarVisitor
            .visit_f64(v)
            .map(ServiceValue::Scalar)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ServiceValue, E> {
        Ok(ServiceValue::Scalar(v.into()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ServiceValue, A::Error> {
        let mut m = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, ServiceValue>()? {
            if m.len() >= MAX_OBJECT_MEMBERS {
                return Err(serde::de::Error::custom(format!(
                    "object has more than {MAX_OBJECT_MEMBERS} members"
                )));
            }
            m.insert(k, v);
        }
        Ok(ServiceValue::Object(m))
    }
}

impl<'de> serde::Deserialize<'de> for ServiceValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ServiceValueVisitor)
    }
}

impl ServiceValue {
    /// Checks names, depth, member count and string lengths; `name` is the property's name.
    pub fn validate(&self, name: &str) -> Result<(), TwinError> {
        let mut members = 0;
        self.validate_at(name, 0, &mut members)?;
        if members > MAX_OBJECT_MEMBERS {
            return Err(TwinError::ObjectTooLarge {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    fn validate_at(&self, path: &str, depth: usize, members: &mut usize) -> Result<(), TwinError> {
        match self {
            ServiceValue::Scalar(s) => validate_string_value(path, s),
            ServiceValue::Object(m) => {
                if depth >= MAX_OBJECT_DEPTH {
                    return Err(TwinError::ObjectTooDeep {
                        path: path.to_string(),
                    });
                }
                *members += m.len();
                if *members > MAX_OBJECT_MEMBERS {
                    return Ok(());
                }
                for (k, v) in m {
                    validate_property_name(k)?;
                    v.validate_at(&format!("{path}.{k}"), depth + 1, members)?;
                }
                Ok(())
            }
        }
    }

    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match self {
            ServiceValue::Scalar(s) => Some(s),
            ServiceValue::Object(_) => None,
        }
    }
}

/// The service's part of a twin: its properties and tags, under one etag.
#[derive(Clone, PartialEq, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ServiceProperties {
    /// Changes whenever a property or a tag changes; `If-Match` compares against it.
    #[serde(default)]
    pub etag: Etag,
    /// The properties, by name.
    #[serde(default)]
    pub properties: BTreeMap<String, ServiceValue>,
    /// The tags (a set; serialised as a sorted list).
    #[serde(default)]
    pub tags: BTreeSet<String>,
}

/// A device twin, owned, in the preview's JSON shape (`Device` of the 2016 preview):
///
/// ```json
/// { "deviceId": "thermo-1", "generationId": "1", "etag": "3", "status": "enabled",
///   "connectionState": "Connected", "connectionStateUpdatedTime": "2016-04-29T12:00:00.000Z",
///   "isManaged": true, "authentication": {},
///   "deviceProperties": { "BatteryLevel": { "value": 87, "lastUpdatedTime": "..." } },
///   "serviceProperties": { "etag": "2", "properties": { "region": "eu-west" }, "tags": ["lab"] } }
/// ```
///
/// Absent optional fields are omitted. The registry assigns `generationId` and both etags;
/// it ignores the ones a twin carries when it is created. Authentication keys never
/// appear in JSON or `Debug`. The preview's `cloudToDeviceMessageCount` is not modelled
/// (twinhub has no cloud-to-device messaging).
///
/// ```
/// use twinhub::twin::{Scalar, Twin};
/// use twinhub::{DeviceId, Timestamp};
/// let t = Twin::new(DeviceId::new("thermo-1").unwrap())
///     .with_device_property("BatteryLevel", 87, Timestamp::from_millis(0))
///     .with_service_property("region", "eu-west")
///     .with_tag("lab");
/// t.validate().unwrap();
/// let json = serde_json::to_string(&t).unwrap();
/// assert_eq!(serde_json::from_str::<Twin>(&json).unwrap(), t);
/// ```
#[derive(Clone, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Twin {
    /// The device id.
    pub device_id: DeviceId,
    /// Distinguishes devices that reused an id: set when the device is created.
    #[serde(default)]
    pub generation_id: Etag,
    /// Changes whenever anything in the twin changes.
    #[serde(default)]
    pub etag: Etag,
    /// Enabled or disabled.
    #[serde(default)]
    pub status: DeviceStatus,
    /// Why the status was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_updated_time: Option<Timestamp>,
    /// Connected or disconnected.
    #[serde(default)]
    pub connection_state: ConnectionState,
    /// When the connection state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state_updated_time: Option<Timestamp>,
    /// When the device was last heard from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Timestamp>,
    /// True once the device connected over the device-management (LWM2M) channel.
    #[serde(default)]
    pub is_managed: bool,
    /// Authentication material (the key is never serialized).
    #[serde(default)]
    pub authentication: Authentication,
    /// The device's latest LWM2M registration. It stays after the device de-registers or
    /// its registration expires (`connection_state` then says `Disconnected`), so its last
    /// address, lifetime and objects remain visible; the next registration replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegistrationInfo>,
    /// The configuration string set by the `updateDeviceConfiguration` job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<String>,
    /// Device properties by canonical name (see [`DevicePropertyName`]).
    #[serde(default)]
    pub device_properties: BTreeMap<String, DeviceProperty>,
    /// Service properties and tags.
    #[serde(default)]
    pub service_properties: ServiceProperties,
}

impl Twin {
    /// A fresh twin: enabled, disconnected, unmanaged, with no properties or tags.
    pub fn new(device_id: DeviceId) -> Self {
        Twin {
            device_id,
            generation_id: Etag(0),
            etag: Etag(0),
            status: DeviceStatus::Enabled,
            status_reason: None,
            status_updated_time: None,
            connection_state: ConnectionState::Disconnected,
            connection_state_updated_time: None,
            last_activity_time: None,
            is_managed: false,
            authentication: Authentication::default(),
            registration: None,
            configuration: None,
            device_properties: BTreeMap::new(),
            service_properties: ServiceProperties::default(),
        }
    }

    /// This twin with a device property set (not validated until [`Twin::validate`]).
    pub fn with_device_property(
        mut self,
        name: impl Into<String>,
        value: impl Into<Scalar>,
        last_updated_time: Timestamp,
    ) -> Self {
        self.device_properties.insert(
            name.into(),
            DeviceProperty {
                value: value.into(),
                last_updated_time,
            },
        );
        self
    }

    /// This twin with a service property set (not validated until [`Twin::validate`]).
    pub fn with_service_property(
        mut self,
        name: impl Into<String>,
        value: impl Into<ServiceValue>,
    ) -> Self {
        self.service_properties
            .properties
            .insert(name.into(), value.into());
        self
    }

    /// This twin with a tag added (not validated until [`Twin::validate`]).
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.service_properties.tags.insert(tag.into());
        self
    }

    /// Checks every rule: canonical, typed device properties; service property names,
    /// values and bounds; tags; field lengths. The error names the first offender.
    pub fn validate(&self) -> Result<(), TwinError> {
        self.validate_with(|_, _| None)
    }

    /// [`Twin::validate`] with a fast path for device properties: `known(name, value)`
    /// answers for names the caller already knows to be canonical (`None` = unknown,
    /// check it the slow way). The errors are the same.
    pub(crate) fn validate_with(
        &self,
        known: impl Fn(&str, &Scalar) -> Option<Result<(), TwinError>>,
    ) -> Result<(), TwinError> {
        check_field_lengths([
            ("statusReason", self.status_reason.as_deref()),
            ("configuration", self.configuration.as_deref()),
            (
                "authentication.pskIdentity",
                self.authentication.psk_identity.as_deref(),
            ),
        ])?;
        if self.device_properties.len() > MAX_DEVICE_PROPERTIES {
            return Err(TwinError::TooManyDeviceProperties {
                count: self.device_properties.len(),
            });
        }
        for (name, p) in &self.device_properties {
            if let Some(checked) = known(name, &p.value) {
                checked?;
                continue;
            }
            DevicePropertyName::parse_canonical(name)?.check_value(&p.value)?;
        }
        let sp = &self.service_properties;
        if sp.properties.len() > MAX_SERVICE_PROPERTIES {
            return Err(TwinError::TooManyServiceProperties {
                count: sp.properties.len(),
            });
        }
        for (name, v) in &sp.properties {
            validate_property_name(name)?;
            v.validate(name)?;
        }
        if sp.tags.len() > MAX_TAGS {
            return Err(TwinError::TooManyTags {
                count: sp.tags.len(),
            });
        }
        for t in &sp.tags {
            validate_tag(t)?;
        }
        Ok(())
    }
}

/// Fails with the first of `fields` longer than [`MAX_FIELD_LEN`].
pub(crate) fn check_field_lengths<'a>(
    fields: impl IntoIterator<Item = (&'static str, Option<&'a str>)>,
) -> Result<(), TwinError> {
    for (field, value) in fields {
        if let Some(v) = value
            && v.len() > MAX_FIELD_LEN
        {
            return Err(TwinError::FieldTooLong {
                field,
                len: v.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Lwm2mPath;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sample() -> Twin {
        let mut t = Twin::new(DeviceId::new("thermo-1").unwrap())
            .with_device_property("FirmwareVersion", "1.0", ts("2016-04-29T12:00:00Z"))
            .with_device_property("BatteryLevel", 87, ts("2016-04-29T12:00:01Z"))
            .with_device_property("/3303/0/5700", 21.5, ts("2016-04-29T12:00:02Z"))
            .with_service_property("region", "eu-west")
            .with_service_property(
                "config",
                ServiceValue::Object(BTreeMap::from([("level".into(), 3.into())])),
            )
            .with_tag("lab")
            .with_tag("floor-2");
        t.generation_id = Etag(1);
        t.etag = Etag(7);
        t.service_properties.etag = Etag(6);
        t.connection_state = ConnectionState::Connected;
        t.connection_state_updated_time = Some(ts("2016-04-29T11:59:00Z"));
        t.is_managed = true;
        t.authentication = Authentication {
            psk_identity: Some("thermo-1-id".into()),
            psk_key: Some(PskKey::new(b"sekrit-bytes".to_vec())),
        };
        t.registration = Some(RegistrationInfo {
            endpoint: "thermo-1".into(),
            registration_id: "rd/5".into(),
            lifetime: 300,
            lwm2m_version: "1.1".into(),
            binding: "U".into(),
            queue_mode: false,
            objects: vec![Lwm2mPath::instance(3, 0), Lwm2mPath::instance(3303, 0)],
            address: None,
            psk_identity: None,
        });
        t
    }

    const GOLDEN: &str = r#"{
  "deviceId": "thermo-1",
  "generationId": "1",
  "etag": "7",
  "status": "enabled",
  "connectionState": "Connected",
  "connectionStateUpdatedTime": "2016-04-29T11:59:00.000Z",
  "isManaged": true,
  "authentication": {
    "pskIdentity": "thermo-1-id"
  },
  "registration": {
    "endpoint": "thermo-1",
    "registrationId": "rd/5",
    "lifetime": 300,
    "lwm2mVersion": "1.1",
    "binding": "U",
    "queueMode": false,
    "objects": [
      "/3/0",
      "/3303/0"
    ]
  },
  "deviceProperties": {
    "/3303/0/5700": {
      "value": 21.5,
      "lastUpdatedTime": "2016-04-29T12:00:02.000Z"
    },
    "BatteryLevel": {
      "value": 87,
      "lastUpdatedTime": "2016-04-29T12:00:01.000Z"
    },
    "FirmwareVersion": {
      "value": "1.0",
      "lastUpdatedTime": "2016-04-29T12:00:00.000Z"
    }
  },
  "serviceProperties": {
    "etag": "6",
    "properties": {
      "config": {
        "level": 3
      },
      "region": "eu-west"
    },
    "tags": [
      "floor-2",
      "lab"
    ]
  }
}"#;

    #[test]
    fn golden_json_and_round_trip() {
        let t = sample();
        t.validate().unwrap();
        let json = serde_json::to_string_pretty(&t).unwrap();
        assert_eq!(json, GOLDEN);
        let back: Twin = serde_json::from_str(GOLDEN).unwrap();
        // The key is never serialized, so it does not come back.
        let mut expected = t.clone();
        expected.authentication.psk_key = None;
        assert_eq!(back, expected);
    }

    /// Checks: a twin is read from exports (the preview's, the hub's own, the store's),
    /// so members twinhub does not model are skipped, not refused: the preview's
    /// `cloudToDeviceMessageCount`, an authentication method it does not know, and a
    /// registration member a newer export may carry. (Hand-written inputs, such as
    /// `JobSpec`, `ResourceValue` and the configurations, refuse unknown members.)
    #[test]
    fn exports_with_members_twinhub_does_not_model_still_read() {
        let export = r#"{"deviceId":"d","generationId":"63","etag":"9",
            "cloudToDeviceMessageCount":0,
            "authentication":{"symmetricKey":{"primaryKey":null}},
            "registration":{"endpoint":"d","registrationId":"r1","lifetime":300,
                "lwm2mVersion":"1.1","binding":"U","queueMode":false,"objects":["/3/0"],
                "rootPath":"/"}}"#;
        let t: Twin = serde_json::from_str(export).unwrap();
        assert_eq!(t.device_id.as_str(), "d");
        assert!(t.authentication.is_empty());
        let r = t.registration.unwrap();
        assert_eq!((r.registration_id.as_str(), r.lifetime), ("r1", 300));
    }

    #[test]
    fn minimal_twin_json() {
        let t = Twin::new(DeviceId::new("d").unwrap());
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"deviceId":"d","generationId":"0","etag":"0","status":"enabled","connectionState":"Disconnected","isManaged":false,"authentication":{},"deviceProperties":{},"serviceProperties":{"etag":"0","properties":{},"tags":[]}}"#
        );
        let back: Twin = serde_json::from_str(r#"{"deviceId":"d"}"#).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn secrets_never_leak() {
        let t = sample();
        let json = serde_json::to_string(&t).unwrap();
        let debug = format!("{t:?}");
        for text in [&json, &debug] {
            assert!(!text.contains("sekrit"), "{text}");
            assert!(
                !text.contains(&format!("{:?}", b"sekrit-bytes".to_vec())),
                "{text}"
            );
        }
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn validation_names_the_offender() {
        let base = || Twin::new(DeviceId::new("d").unwrap());
        let t0 = Timestamp::EPOCH;
        assert_eq!(
            base().with_device_property("/3/0/3", "1.0", t0).validate(),
            Err(TwinError::NotCanonicalName {
                name: "/3/0/3".into(),
                canonical: "FirmwareVersion"
            })
        );
        assert_eq!(
            base()
                .with_device_property("/3303/00/5700", 1, t0)
                .validate(),
            Err(TwinError::UnknownDeviceProperty {
                name: "/3303/00/5700".into()
            })
        );
        assert!(matches!(
            base().with_device_property("Bogus", 1, t0).validate(),
            Err(TwinError::UnknownDeviceProperty { .. })
        ));
        assert!(matches!(
            base().with_service_property("a b", 1).validate(),
            Err(TwinError::InvalidNameChar { .. })
        ));
        assert!(matches!(
            base().with_tag("").validate(),
            Err(TwinError::EmptyTag)
        ));
        let mut t = base();
        t.configuration = Some("c".repeat(MAX_FIELD_LEN + 1));
        assert_eq!(
            t.validate(),
            Err(TwinError::FieldTooLong {
                field: "configuration",
                len: MAX_FIELD_LEN + 1
            })
        );
        let mut t = base();
        for i in 0..=MAX_TAGS {
            t = t.with_tag(format!("t{i}"));
        }
        assert_eq!(
            t.validate(),
            Err(TwinError::TooManyTags {
                count: MAX_TAGS + 1
            })
        );
        let mut t = base();
        for i in 0..=MAX_SERVICE_PROPERTIES {
            t = t.with_service_property(format!("p{i}"), 1);
        }
        assert!(matches!(
            t.validate(),
            Err(TwinError::TooManyServiceProperties { .. })
        ));
        let mut t = base();
        for i in 0..=MAX_DEVICE_PROPERTIES {
            t = t.with_device_property(format!("/9/0/{i}"), 1, t0);
        }
        assert!(matches!(
            t.validate(),
            Err(TwinError::TooManyDeviceProperties { .. })
        ));
    }

    #[test]
    fn nested_service_values_are_bounded() {
        let deep: ServiceValue =
            serde_json::from_str(r#"{"a":{"b":{"c":{"d":{"e":1}}}}}"#).unwrap();
        assert_eq!(
            deep.validate("p"),
            Err(TwinError::ObjectTooDeep {
                path: "p.a.b.c.d".into()
            })
        );
        let ok: ServiceValue = serde_json::from_str(r#"{"a":{"b":{"c":{"d":1}}}}"#).unwrap();
        assert!(ok.validate("p").is_ok());
        let bad_name: ServiceValue = serde_json::from_str(r#"{"a":{"$b":1}}"#).unwrap();
        assert!(matches!(
            bad_name.validate("p"),
            Err(TwinError::InvalidNameChar { ref name, .. }) if name == "$b"
        ));
        let wide = ServiceValue::Object(
            (0..40)
                .map(|i| {
                    (
                        format!("k{i}"),
                        ServiceValue::Object(BTreeMap::from([("x".to_string(), 1.into())])),
                    )
                })
                .collect(),
        );
        assert_eq!(
            wide.validate("p"),
            Err(TwinError::ObjectTooLarge { name: "p".into() })
        );
        let long = ServiceValue::from("x".repeat(5000));
        assert!(matches!(
            long.validate("p"),
            Err(TwinError::StringTooLong { ref path, len: 5000 }) if path == "p"
        ));
        assert!(serde_json::from_str::<ServiceValue>("null").is_err());
        assert!(serde_json::from_str::<ServiceValue>(r#"{"a":[1]}"#).is_err());
    }

    #[test]
    fn etag_parse() {
        assert_eq!("\"9\"".parse::<Etag>(), Ok(Etag(9)));
        assert!("".parse::<Etag>().is_err());
        assert!("-1".parse::<Etag>().is_err());
        assert!("99999999999999999999999".parse::<Etag>().is_err());
    }
}
