//! The standard objects: Security /0, Server /1, Device /3 and the preview's vendor Config
//! object /10241 as [`ValueObject`]s, with their `&'static` definitions. Firmware Update /5
//! is [`FirmwareUpdate`](super::FirmwareUpdate).

use super::model::{Access, ObjectDef, ObjectError, ResourceData, ResourceDef};
use super::value_object::ValueObject;
use crate::{ResourceType as T, ResourceValue as V};
use std::borrow::Cow;

use Access::{Read as R, ReadWrite as RW};

/// Security /0 (LWM2M 1.1). The LWM2M server may not access it; only the bootstrap server
/// can (see the client's bootstrap, [`ClientConfig::with_bootstrap`](super::ClientConfig::with_bootstrap)).
pub static SECURITY: ObjectDef = ObjectDef {
    id: 0,
    name: Cow::Borrowed("LWM2M Security"),
    version: None,
    multiple: true,
    resources: Cow::Borrowed(&[
        ResourceDef::new(0, "LWM2M Server URI", T::String, RW),
        ResourceDef::new(1, "Bootstrap-Server", T::Boolean, RW),
        ResourceDef::new(2, "Security Mode", T::Integer, RW),
        ResourceDef::new(3, "Public Key or Identity", T::Opaque, RW),
        ResourceDef::new(4, "Server Public Key", T::Opaque, RW),
        ResourceDef::new(5, "Secret Key", T::Opaque, RW),
        ResourceDef::new(10, "Short Server ID", T::Integer, RW),
        ResourceDef::new(11, "Client Hold Off Time", T::Integer, RW),
    ]),
};

/// Server /1 (LWM2M 1.1, mandatory resources plus the default periods).
pub static SERVER: ObjectDef = ObjectDef {
    id: 1,
    name: Cow::Borrowed("LWM2M Server"),
    version: None,
    multiple: true,
    resources: Cow::Borrowed(&[
        ResourceDef::new(0, "Short Server ID", T::Integer, R),
        ResourceDef::new(1, "Lifetime", T::Integer, RW),
        ResourceDef::new(2, "Default Minimum Period", T::Integer, RW),
        ResourceDef::new(3, "Default Maximum Period", T::Integer, RW),
        ResourceDef::executable(4, "Disable"),
        ResourceDef::new(5, "Disable Timeout", T::Integer, RW),
        ResourceDef::new(
            6,
            "Notification Storing When Disabled or Offline",
            T::Boolean,
            RW,
        ),
        ResourceDef::new(7, "Binding", T::String, RW),
        ResourceDef::executable(8, "Registration Update Trigger"),
        ResourceDef::new(23, "Mute Send", T::Boolean, RW),
    ]),
};

/// Device /3 (LWM2M 1.1 device object, the resources the preview mapped and the mandatory
/// ones).
pub static DEVICE: ObjectDef = ObjectDef {
    id: 3,
    name: Cow::Borrowed("Device"),
    version: None,
    multiple: false,
    resources: Cow::Borrowed(&[
        ResourceDef::new(0, "Manufacturer", T::String, R),
        ResourceDef::new(1, "Model Number", T::String, R),
        ResourceDef::new(2, "Serial Number", T::String, R),
        ResourceDef::new(3, "Firmware Version", T::String, R),
        ResourceDef::executable(4, "Reboot"),
        ResourceDef::executable(5, "Factory Reset"),
        ResourceDef::multiple(6, "Available Power Sources", T::Integer, R),
        ResourceDef::multiple(7, "Power Source Voltage", T::Integer, R),
        ResourceDef::multiple(8, "Power Source Current", T::Integer, R),
        ResourceDef::new(9, "Battery Level", T::Integer, R),
        ResourceDef::new(10, "Memory Free", T::Integer, R),
        ResourceDef::multiple(11, "Error Code", T::Integer, R),
        ResourceDef::executable(12, "Reset Error Code"),
        ResourceDef::new(13, "Current Time", T::Time, RW),
        ResourceDef::new(14, "UTC Offset", T::String, RW),
        ResourceDef::new(15, "Timezone", T::String, RW),
        ResourceDef::new(16, "Supported Binding and Modes", T::String, R),
        ResourceDef::new(17, "Device Type", T::String, R),
        ResourceDef::new(18, "Hardware Version", T::String, R),
        ResourceDef::new(19, "Software Version", T::String, R),
        ResourceDef::new(20, "Battery Status", T::Integer, R),
        ResourceDef::new(21, "Memory Total", T::Integer, R),
    ]),
};

/// The preview's vendor Config object /10241: a name, a value and an apply action.
pub static CONFIG: ObjectDef = ObjectDef {
    id: 10241,
    name: Cow::Borrowed("Config"),
    version: None,
    multiple: false,
    resources: Cow::Borrowed(&[
        ResourceDef::new(1, "ConfigName", T::String, RW),
        ResourceDef::new(2, "ConfigValue", T::String, RW),
        ResourceDef::executable(3, "ConfigApply"),
    ]),
};

/// Resource ids of Device /3, by the preview's property names.
pub mod device {
    /// /3/0/0
    pub const MANUFACTURER: u16 = 0;
    /// /3/0/1
    pub const MODEL_NUMBER: u16 = 1;
    /// /3/0/2
    pub const SERIAL_NUMBER: u16 = 2;
    /// /3/0/3
    pub const FIRMWARE_VERSION: u16 = 3;
    /// /3/0/4 (execute)
    pub const REBOOT: u16 = 4;
    /// /3/0/5 (execute)
    pub const FACTORY_RESET: u16 = 5;
    /// /3/0/9
    pub const BATTERY_LEVEL: u16 = 9;
    /// /3/0/10
    pub const MEMORY_FREE: u16 = 10;
    /// /3/0/11 (multiple)
    pub const ERROR_CODE: u16 = 11;
    /// /3/0/13
    pub const CURRENT_TIME: u16 = 13;
    /// /3/0/14
    pub const UTC_OFFSET: u16 = 14;
    /// /3/0/15
    pub const TIMEZONE: u16 = 15;
    /// /3/0/16
    pub const SUPPORTED_BINDING: u16 = 16;
    /// /3/0/17
    pub const DEVICE_TYPE: u16 = 17;
    /// /3/0/18
    pub const HARDWARE_VERSION: u16 = 18;
    /// /3/0/20
    pub const BATTERY_STATUS: u16 = 20;
    /// /3/0/21
    pub const MEMORY_TOTAL: u16 = 21;
}

/// Resource ids of Server /1.
pub mod server {
    /// /1/x/0
    pub const SHORT_SERVER_ID: u16 = 0;
    /// /1/x/1
    pub const LIFETIME: u16 = 1;
    /// /1/x/2
    pub const DEFAULT_PMIN: u16 = 2;
    /// /1/x/3
    pub const DEFAULT_PMAX: u16 = 3;
    /// /1/x/7
    pub const BINDING: u16 = 7;
    /// /1/x/8 (execute)
    pub const REGISTRATION_UPDATE_TRIGGER: u16 = 8;
    /// /1/x/23 Mute Send (LWM2M 1.1): while true, the client does not Send.
    pub const MUTE_SEND: u16 = 23;
}

/// Security /0 instance 0 for a NoSec server at `server_uri`.
///
/// ```
/// use twinhub::lwm2m::client::{objects, Object};
/// let sec = objects::security("coap://127.0.0.1:5683", 1);
/// assert_eq!(sec.instance_ids(), vec![0]);
/// ```
pub fn security(server_uri: &str, short_server_id: u16) -> ValueObject {
    ValueObject::new(&SECURITY)
        .creatable(false, 1)
        .with_value(0, 0, V::String(server_uri.to_string()))
        .with_value(0, 1, V::Boolean(false))
        .with_value(0, 2, V::Integer(3))
        .with_value(0, 10, V::Integer(short_server_id as i64))
}

/// Security /0 of a device that is bootstrapped: instance 0 is the bootstrap server's
/// account (`/0/0/1` true, NoSec), and the bootstrap server may write the LWM2M server
/// accounts beside it (at most 4 instances). Pair it with [`unprovisioned_server`] and
/// [`ClientConfig::with_bootstrap`](super::ClientConfig::with_bootstrap).
///
/// ```
/// use twinhub::lwm2m::client::{objects, Object};
/// let sec = objects::bootstrap_security("coap://127.0.0.1:5783");
/// assert_eq!(sec.instance_ids(), vec![0]);
/// ```
pub fn bootstrap_security(bootstrap_uri: &str) -> ValueObject {
    ValueObject::new(&SECURITY)
        .creatable(true, 4)
        .with_value(0, 0, V::String(bootstrap_uri.to_string()))
        .with_value(0, 1, V::Boolean(true))
        .with_value(0, 2, V::Integer(3))
}

/// Server /1 with no instance yet: the bootstrap server writes `/1/0` (the client reads
/// its lifetime and default periods from instance 0). The same validation as
/// [`server()`]'s: lifetime at least 1 s, periods not negative, binding `U` or `UQ`.
pub fn unprovisioned_server() -> ValueObject {
    server_rules(ValueObject::new(&SERVER).creatable(true, 2))
}

/// Server /1's rules: lifetime 1 s to `u32::MAX` s; the default periods (2, 3) and the
/// Disable Timeout (5) 0 to `u32::MAX` s (a negative number of seconds is refused, 4.00,
/// rather than stored and ignored); binding `U` or `UQ`; and a Registration Update
/// Trigger that the client core acts on.
fn server_rules(object: ValueObject) -> ValueObject {
    let seconds = |min: i64| {
        move |_: u16, d: &ResourceData| match d {
            ResourceData::Single(V::Integer(s)) if *s >= min && *s <= u32::MAX as i64 => Ok(()),
            _ => Err(super::ObjectError::Rejected),
        }
    };
    object
        .on_validate(1, seconds(1))
        .on_validate(2, seconds(0))
        .on_validate(3, seconds(0))
        .on_validate(5, seconds(0))
        .on_validate(7, |_, d| match d {
            ResourceData::Single(V::String(b)) if matches!(b.as_str(), "U" | "UQ") => Ok(()),
            _ => Err(super::ObjectError::Rejected),
        })
        .on_execute(server::REGISTRATION_UPDATE_TRIGGER, |_, _| Ok(()))
}

/// Server /1 instance 0: short server id, lifetime (s), binding (`"U"`, or `"UQ"` for
/// queue mode: the client then registers with `Q`), default periods pmin 0 / pmax none,
/// and a Registration Update Trigger that the client core acts on.
pub fn server(short_server_id: u16, lifetime: u32, binding: &str) -> ValueObject {
    let object = ValueObject::new(&SERVER)
        .creatable(false, 1)
        .with_value(0, 0, V::Integer(short_server_id as i64))
        .with_value(0, 1, V::Integer(lifetime as i64))
        .with_value(0, 2, V::Integer(0))
        .with_value(0, 6, V::Boolean(false))
        .with_value(0, 7, V::String(binding.to_string()))
        .with_value(0, 23, V::Boolean(false));
    server_rules(object)
}

/// Device /3 instance 0 with the identity strings, error code 0, binding `U`, and Reboot,
/// Factory Reset and Reset Error Code executes that succeed (the client reports every
/// execute as an event; replace them with [`ValueObject::on_execute`] to act inside).
///
/// ```
/// use twinhub::lwm2m::client::{objects, Object, ResourceData};
/// use twinhub::ResourceValue;
/// let mut dev = objects::device("Contoso", "MXChip", "SN-1", "1.0.0")
///     .on_execute(objects::device::REBOOT, |_, _| Ok(()));
/// assert_eq!(dev.read(0, 2), Ok(ResourceData::Single(ResourceValue::String("SN-1".into()))));
/// ```
pub fn device(
    manufacturer: &str,
    model: &str,
    serial: &str,
    firmware_version: &str,
) -> ValueObject {
    ValueObject::new(&DEVICE)
        .creatable(false, 1)
        .with_value(0, 0, V::String(manufacturer.to_string()))
        .with_value(0, 1, V::String(model.to_string()))
        .with_value(0, 2, V::String(serial.to_string()))
        .with_value(0, 3, V::String(firmware_version.to_string()))
        .with_value(0, 16, V::String("U".to_string()))
        .with_value(0, 14, V::String("+00:00".to_string()))
        .with_value(0, 15, V::String("UTC".to_string()))
        .with_value(0, 13, V::Time(0))
        .on_execute(device::REBOOT, |_, _| Ok(()))
        .on_execute(device::FACTORY_RESET, |_, _| Ok(()))
        .on_execute(12, |_, _| Ok(()))
        .on_validate(device::UTC_OFFSET, |_, data| match data {
            ResourceData::Single(V::String(s)) if valid_utc_offset(s) => Ok(()),
            _ => Err(ObjectError::Rejected),
        })
        .on_validate(device::TIMEZONE, |_, data| match data {
            ResourceData::Single(V::String(s)) if valid_timezone(s) => Ok(()),
            _ => Err(ObjectError::Rejected),
        })
        .with_data(0, 11, ResourceData::Multiple(vec![(0, V::Integer(0))]))
}

/// An ISO 8601 UTC offset as /3/0/14 holds it: `Z`, `±HH`, `±HHMM` or `±HH:MM`, with an
/// optional `UTC` before the sign (`UTC+01:00`); hours up to 14, minutes up to 59.
fn valid_utc_offset(s: &str) -> bool {
    let s = s.strip_prefix("UTC").unwrap_or(s);
    if s == "Z" {
        return true;
    }
    let Some(rest) = s.strip_prefix('+').or_else(|| s.strip_prefix('-')) else {
        return false;
    };
    let digits = |t: &str| t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit());
    let (hh, mm) = match rest.len() {
        2 => (rest, "00"),
        4 => rest.split_at(2),
        5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
        _ => return false,
    };
    digits(hh) && digits(mm) && hh <= "14" && mm <= "59"
}

/// An IANA time zone name as /3/0/15 holds it (`Europe/Berlin`, `UTC`): 1 to 64 bytes of
/// letters, digits and `/_+-`.
fn valid_timezone(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
}

/// Config /10241 instance 0: empty ConfigName and ConfigValue, and a ConfigApply execute
/// that succeeds (replace it with [`ValueObject::on_execute`] to apply the configuration).
pub fn config() -> ValueObject {
    ValueObject::new(&CONFIG)
        .creatable(false, 1)
        .with_value(0, 1, V::String(String::new()))
        .with_value(0, 2, V::String(String::new()))
        .on_execute(3, |_, _| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_offset_and_timezone_writes_are_validated() {
        for ok in ["Z", "+01:00", "-0530", "+14", "UTC+02:00", "UTC-11"] {
            assert!(valid_utc_offset(ok), "{ok}");
        }
        let long = "+".repeat(1001);
        for bad in [
            "",
            "01:00",
            "+1:00",
            "+15:00",
            "+01:60",
            "+01-00",
            "UTC",
            long.as_str(),
        ] {
            assert!(!valid_utc_offset(bad), "{bad}");
        }
        assert!(valid_timezone("Europe/Berlin") && valid_timezone("Etc/GMT+5"));
        assert!(!valid_timezone("") && !valid_timezone(&"A".repeat(65)));
        assert!(!valid_timezone("Europe/Berlin\n"));
        // Through the object: a refused write changes nothing.
        let mut dev = device("C", "M", "S", "1.0");
        use crate::lwm2m::client::Object;
        let bad = ResourceData::Single(V::String(long.clone()));
        assert_eq!(
            dev.validate(0, device::UTC_OFFSET, &bad),
            Err(ObjectError::Rejected)
        );
        assert_eq!(
            dev.read(0, device::UTC_OFFSET),
            Ok(ResourceData::Single(V::String("+00:00".into())))
        );
    }
}
