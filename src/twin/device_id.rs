//! Device identifiers: validated once at the edge, cheap to clone afterwards.

use std::fmt;
use std::sync::Arc;

/// Most bytes a device id may have (IoT Hub's limit).
pub const MAX_DEVICE_ID_LEN: usize = 128;

/// The punctuation IoT Hub allows in a device id besides ASCII letters and digits.
pub const DEVICE_ID_PUNCTUATION: &str = "-.+%_#*?!(),:=@$'";

/// A validated device id: 1 to 128 ASCII letters, digits and `-.+%_#*?!(),:=@$'`.
///
/// The same string is the LWM2M endpoint name the device registers with. Cloning is a
/// reference-count bump.
///
/// ```
/// use twinhub::DeviceId;
/// let id = DeviceId::new("thermostat-42").unwrap();
/// assert_eq!(id.as_str(), "thermostat-42");
/// assert!(DeviceId::new("no spaces").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(Arc<str>);

/// Why a string is not a valid [`DeviceId`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceIdError {
    /// The id is empty.
    Empty,
    /// The id is longer than [`MAX_DEVICE_ID_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id contains a character outside the allowed set.
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the id.
        at: usize,
    },
}

impl fmt::Display for DeviceIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceIdError::Empty => write!(f, "device id is empty"),
            DeviceIdError::TooLong { len } => write!(
                f,
                "device id is {len} bytes long; at most {MAX_DEVICE_ID_LEN} are allowed"
            ),
            DeviceIdError::InvalidChar { ch, at } => write!(
                f,
                "device id has {ch:?} at byte {at}; allowed are ASCII letters, digits and {DEVICE_ID_PUNCTUATION}"
            ),
        }
    }
}

impl std::error::Error for DeviceIdError {}

impl DeviceId {
    /// Validates `id` and makes a device id of it.
    pub fn new(id: &str) -> Result<Self, DeviceIdError> {
        Self::validate(id)?;
        Ok(DeviceId(Arc::from(id)))
    }

    /// Checks `id` against the rules without allocating.
    pub fn validate(id: &str) -> Result<(), DeviceIdError> {
        if id.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if id.len() > MAX_DEVICE_ID_LEN {
            return Err(DeviceIdError::TooLong { len: id.len() });
        }
        for (at, ch) in id.char_indices() {
            if !(ch.is_ascii_alphanumeric() || DEVICE_ID_PUNCTUATION.contains(ch)) {
                return Err(DeviceIdError::InvalidChar { ch, at });
            }
        }
        Ok(())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for DeviceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceId::new(s)
    }
}

impl TryFrom<&str> for DeviceId {
    type Error = DeviceIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        DeviceId::new(s)
    }
}

impl serde::Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DeviceId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_all_allowed_punctuation() {
        let id = format!("a{DEVICE_ID_PUNCTUATION}Z9");
        assert!(DeviceId::new(&id).is_ok());
    }

    #[test]
    fn rejects_with_position() {
        assert_eq!(DeviceId::new(""), Err(DeviceIdError::Empty));
        assert_eq!(
            DeviceId::new("ab/c"),
            Err(DeviceIdError::InvalidChar { ch: '/', at: 2 })
        );
        assert_eq!(
            DeviceId::new("é"),
            Err(DeviceIdError::InvalidChar { ch: 'é', at: 0 })
        );
        let long = "x".repeat(129);
        assert_eq!(
            DeviceId::new(&long),
            Err(DeviceIdError::TooLong { len: 129 })
        );
        assert!(DeviceId::new(&long[..128]).is_ok());
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<DeviceId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<DeviceId>("\"not ok\"").is_err());
    }
}
