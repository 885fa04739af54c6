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
#[derive(Clone)]
pub struct DeviceId(Repr);

/// Ids up to this many bytes are stored in place.
const INLINE: usize = 22;

/// Most device ids are short: they live in place (24 bytes, no allocation, no pointer to
/// follow when a lookup compares them); longer ones are shared on the heap.
#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl DeviceId {
    /// Whether this is the id `s` (no UTF-8 check, unlike comparing `as_str`).
    pub(crate) fn is(&self, s: &str) -> bool {
        self.bytes() == s.as_bytes()
    }

    /// The id's bytes, without the UTF-8 check `as_str` makes (comparisons need none).
    fn bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(s) => s.as_bytes(),
        }
    }
}

impl PartialEq for DeviceId {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for DeviceId {}

impl PartialOrd for DeviceId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DeviceId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // `str` orders by bytes.
        self.bytes().cmp(other.bytes())
    }
}

/// Hashes as the `str` does, as [`Borrow<str>`](std::borrow::Borrow) requires.
impl std::hash::Hash for DeviceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

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
    /// The id contains a character other than an ASCII letter, an ASCII digit or one of
    /// [`DEVICE_ID_PUNCTUATION`] (`-.+%_#*?!(),:=@$'`; IoT Hub's set, so no space, `/`
    /// or non-ASCII letter; `urn:imei:...` endpoint names fit). `at` points at the first
    /// such character.
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
        Ok(DeviceId(if id.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            Repr::Inline {
                len: id.len() as u8,
                bytes,
            }
        } else {
            Repr::Shared(Arc::from(id))
        }))
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
        match &self.0 {
            // Validated ASCII when built; the check is a few instructions for 22 bytes.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("device ids are ASCII")
            }
            Repr::Shared(s) => s,
        }
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for DeviceId {
    fn borrow(&self) -> &str {
        self.as_str()
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
        s.serialize_str(self.as_str())
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
    fn short_and_long_ids_behave_alike() {
        use std::collections::HashSet;
        let short = DeviceId::new("dev-0000001").unwrap();
        let edge = DeviceId::new(&"x".repeat(INLINE)).unwrap();
        let long = DeviceId::new(&"y".repeat(INLINE + 1)).unwrap();
        assert!(matches!(short.0, Repr::Inline { .. }) && matches!(edge.0, Repr::Inline { .. }));
        assert!(matches!(long.0, Repr::Shared(_)));
        assert_eq!(std::mem::size_of::<DeviceId>(), 24);
        for (id, text) in [
            (&short, "dev-0000001".to_string()),
            (&edge, "x".repeat(INLINE)),
            (&long, "y".repeat(INLINE + 1)),
        ] {
            assert_eq!(id.as_str(), text);
            assert_eq!(id.clone(), *id);
            let set: HashSet<DeviceId> = [id.clone()].into();
            assert!(set.contains(text.as_str()), "hashes as its str");
        }
        assert!(short < edge && edge < long);
    }

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
