//! How twins are laid out in the store's tables.
//!
//! - `twins`: device id -> the twin's **head**: every field, service properties, tags
//!   and the three version numbers, as JSON of [`Twin`] with its device properties left
//!   out, plus the PSK key (hex) that the twin's own JSON never carries. A head is
//!   rewritten whenever anything but a device property changes.
//! - `device_properties`: (device id, canonical name) -> `seq (u64 LE) | lastUpdatedTime
//!   in ms (u64 LE) | value as JSON`. `seq` is the change that wrote the row, so a
//!   device-property update writes only its own small row; the twin's etag is the
//!   largest of the head's etag and its rows' `seq`s.
//!
//! Decoding is bounded by the record (redb hands over one value at a time; a value is
//! at most one twin) and returns [`StoreError::BadRecord`] on anything unexpected.

use super::StoreError;
use crate::twin::{PskKey, Scalar, Twin};
use crate::{DeviceId, Timestamp};
use serde::{Deserialize, Serialize};

/// A twin's head as stored.
#[derive(Serialize, Deserialize)]
struct Head {
    twin: Twin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    psk: Option<String>,
}

/// Encodes a twin's head; the caller has taken its device properties out.
pub(crate) fn encode_head(twin: &Twin) -> Vec<u8> {
    debug_assert!(twin.device_properties.is_empty());
    #[derive(Serialize)]
    struct HeadRef<'a> {
        twin: &'a Twin,
        #[serde(skip_serializing_if = "Option::is_none")]
        psk: Option<String>,
    }
    let psk = twin
        .authentication
        .psk_key
        .as_ref()
        .map(|k| hex::encode(k.expose()));
    serde_json::to_vec(&HeadRef { twin, psk }).expect("a twin always serializes")
}

/// Decodes a twin's head (no device properties yet).
pub(crate) fn decode_head(key: &str, bytes: &[u8]) -> Result<Twin, StoreError> {
    let bad = |detail: String| StoreError::BadRecord {
        table: "twins",
        key: key.chars().take(128).collect(),
        detail,
    };
    let head: Head = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let mut twin = head.twin;
    if twin.device_id.as_str() != key {
        return Err(bad(format!("holds device {}", twin.device_id)));
    }
    if let Some(k) = head.psk {
        let key = hex::decode(&k).map_err(|_| bad("psk is not hex".into()))?;
        twin.authentication.psk_key = Some(PskKey::new(key));
    }
    twin.device_properties.clear();
    Ok(twin)
}

/// A device property row.
pub(crate) struct PropRow {
    pub(crate) seq: u64,
    pub(crate) at: Timestamp,
    pub(crate) value: Scalar,
}

/// Encodes a device property row.
pub(crate) fn encode_prop(seq: u64, at: Timestamp, value: &Scalar, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&at.as_millis().to_le_bytes());
    serde_json::to_writer(&mut *out, value).expect("a scalar always serializes");
}

/// Decodes a device property row.
pub(crate) fn decode_prop(id: &str, name: &str, bytes: &[u8]) -> Result<PropRow, StoreError> {
    let bad = |detail: String| StoreError::BadRecord {
        table: "device_properties",
        key: format!(
            "{}/{}",
            id.chars().take(128).collect::<String>(),
            name.chars().take(128).collect::<String>()
        ),
        detail,
    };
    if bytes.len() < 16 {
        return Err(bad(format!("{} bytes, fewer than 16", bytes.len())));
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let value = serde_json::from_slice(&bytes[16..]).map_err(|e| bad(e.to_string()))?;
    Ok(PropRow {
        seq: word(0),
        at: Timestamp::from_millis(word(8)),
        value,
    })
}

/// Checks a stored device id.
pub(crate) fn device_id(key: &str) -> Result<DeviceId, StoreError> {
    DeviceId::new(key).map_err(|e| StoreError::BadRecord {
        table: "twins",
        key: key.chars().take(128).collect(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_keeps_the_psk_key_and_drops_device_properties() {
        let mut t = Twin::new(DeviceId::new("d1").unwrap())
            .with_tag("lab")
            .with_device_property("BatteryLevel", 50, Timestamp::from_millis(5));
        t.authentication.psk_identity = Some("id".into());
        t.authentication.psk_key = Some(PskKey::new(vec![0, 1, 0xfe]));
        t.device_properties.clear();
        let bytes = encode_head(&t);
        let back = decode_head("d1", &bytes).unwrap();
        assert_eq!(back.authentication, t.authentication);
        assert!(back.device_properties.is_empty());
        assert!(decode_head("d2", &bytes).is_err());
        assert!(decode_head("d1", b"{").is_err());
    }

    #[test]
    fn prop_rows_round_trip_and_short_rows_fail() {
        let mut out = Vec::new();
        encode_prop(7, Timestamp::from_millis(9), &Scalar::from(1.5), &mut out);
        let row = decode_prop("d", "n", &out).unwrap();
        assert_eq!(
            (row.seq, row.at.as_millis(), row.value),
            (7, 9, Scalar::from(1.5))
        );
        assert!(decode_prop("d", "n", &out[..15]).is_err());
        encode_prop(7, Timestamp::from_millis(9), &Scalar::from("abc"), &mut out);
        assert!(decode_prop("d", "n", &out[..18]).is_err());
    }
}
