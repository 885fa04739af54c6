//! How twins are laid out in the store's tables.
//!
//! - `twins`: device id -> the twin's **head**: every field, service properties, tags
//!   and the three version numbers, as JSON of [`Twin`] with its device properties left
//!   out, plus the PSK key that the twin's own JSON never carries: `"sealedPsk"` (see
//!   `seal.rs`) with a sealing key, `"psk"` (hex) without one. A head is
//!   rewritten whenever anything but a device-property report changes (a device
//!   property's removal rewrites it too).
//! - `properties`: device id -> every device property of the twin
//!   ([`encode_properties`]): the commit it is current through, the twin's etag then,
//!   and each property's canonical name, `lastUpdatedTime` (ms) and value (JSON).
//! - `property_log`: a commit's newest sequence number -> its device-property changes
//!   ([`encode_log_entry`]): device id, name, the change's sequence number, and the new
//!   value and time, or a removal. The twin's etag is the largest of the head's etag, its
//!   record's and its applied log entries' numbers.
//! - Formats 1 and 2 kept a `device_properties` row per (device id, name) instead
//!   ([`decode_prop`]); opening such a file converts them.
//!
//! Numbers and lengths are unsigned LEB128 varints. Decoding is bounded by the record
//! (redb hands over one value at a time; a value is at most one twin or one commit's
//! changes; a count is checked against the bytes left before anything is allocated for
//! it) and returns [`StoreError::BadRecord`] on anything unexpected.

use super::StoreError;
use super::seal::Sealer;
use crate::twin::{PskKey, Scalar, Twin};
use crate::{DeviceId, Timestamp};
use serde::{Deserialize, Serialize};

/// A twin's head as stored.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    twin: Twin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    psk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed_psk: Option<String>,
}

/// Encodes a twin's head; the caller has taken its device properties out. The PSK key
/// goes in sealed with `sealer`, or as hex without one (or one with no sealing key).
pub(crate) fn encode_head(twin: &Twin, sealer: Option<&Sealer>) -> Vec<u8> {
    debug_assert!(twin.device_properties.is_empty());
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct HeadRef<'a> {
        twin: &'a Twin,
        #[serde(skip_serializing_if = "Option::is_none")]
        psk: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sealed_psk: Option<String>,
    }
    let key = twin.authentication.psk_key.as_ref();
    let sealed_psk = key.and_then(|k| sealer?.seal(twin.device_id.as_str(), k));
    let psk = match sealed_psk {
        Some(_) => None,
        None => key.map(|k| hex::encode(k.expose())),
    };
    serde_json::to_vec(&HeadRef {
        twin,
        psk,
        sealed_psk,
    })
    .expect("a twin always serializes")
}

/// Decodes a twin's head (no device properties yet), opening a sealed PSK key with
/// `sealer`. Also returns whether the head is stale: it holds a PSK key as plain hex
/// though `sealer` seals, or sealed under a retired key.
pub(crate) fn decode_head(
    key: &str,
    bytes: &[u8],
    sealer: Option<&Sealer>,
) -> Result<(Twin, bool), StoreError> {
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
    let mut stale = false;
    twin.authentication.psk_key = match (head.psk, head.sealed_psk) {
        (Some(_), Some(_)) => return Err(bad("both psk and sealedPsk".into())),
        (Some(_), None) if sealer.is_some_and(Sealer::refuses_plain) => {
            return Err(StoreError::PlainKey {
                key: key.chars().take(128).collect(),
            });
        }
        (Some(k), None) => {
            stale = sealer.is_some_and(Sealer::seals);
            Some(PskKey::from_hex_digits(&k).ok_or_else(|| bad("psk is not hex".into()))?)
        }
        (None, Some(sealed)) => {
            let (psk, retired) = open_sealed(key, &sealed, sealer)?;
            stale = retired;
            Some(psk)
        }
        (None, None) => None,
    };
    twin.device_properties.clear();
    Ok((twin, stale))
}

/// Opens a head's sealed PSK key (and tells whether a retired key opened it): the
/// store's error without a sealer, or if it does not open.
pub(crate) fn open_sealed(
    key: &str,
    sealed: &str,
    sealer: Option<&Sealer>,
) -> Result<(PskKey, bool), StoreError> {
    match sealer {
        Some(s) => s.open_or_err(key, sealed),
        None => Err(StoreError::SealingKeyMissing {
            key: key.chars().take(128).collect(),
        }),
    }
}

/// A format 1 or 2 device property row.
pub(crate) struct PropRow {
    pub(crate) seq: u64,
    pub(crate) at: Timestamp,
    pub(crate) value: Scalar,
}

/// Encodes a format 2 device property row (tests build old files with it).
#[cfg(test)]
pub(crate) fn encode_prop(seq: u64, at: Timestamp, value: &Scalar, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&at.as_millis().to_le_bytes());
    serde_json::to_writer(&mut *out, value).expect("a scalar always serializes");
}

/// Decodes a format 1 or 2 device property row.
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

/// Appends `v` as an unsigned LEB128 varint (1 to 10 bytes).
pub(super) fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads what [`put_varint`] wrote; `None` past the end, or for more than 10 bytes or
/// a value past `u64`.
pub(super) fn take_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Takes `n` bytes.
pub(super) fn take<'b>(bytes: &mut &'b [u8], n: u64) -> Option<&'b [u8]> {
    let n = usize::try_from(n).ok().filter(|&n| n <= bytes.len())?;
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

/// Takes a varint length and that many bytes of UTF-8.
fn take_str<'b>(bytes: &mut &'b [u8]) -> Option<&'b str> {
    let n = take_varint(bytes)?;
    std::str::from_utf8(take(bytes, n)?).ok()
}

/// Appends a varint length and the bytes.
fn put_bytes(b: &[u8], out: &mut Vec<u8>) {
    put_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// One twin's device properties as the `properties` table holds them.
#[derive(Debug, PartialEq)]
pub(crate) struct PropertiesRecord {
    /// The commit (its newest sequence number) whose state the record holds: a
    /// `property_log` entry of this device numbered at or below it is in it already.
    pub(crate) through: u64,
    /// The twin's etag when it was written (the twin's etag is at least this).
    pub(crate) etag: u64,
    /// `(canonical name, lastUpdatedTime, value)`.
    pub(crate) properties: Vec<(String, Timestamp, Scalar)>,
}

/// Encodes a twin's `properties` record: `through` and `etag` (varints), the number of
/// properties, then each property's name, `lastUpdatedTime` in ms and value (JSON), the
/// name and value with their lengths in front (varints).
pub(crate) fn encode_properties<'p>(
    through: u64,
    etag: u64,
    properties: impl ExactSizeIterator<Item = (&'p str, &'p Scalar, Timestamp)>,
    out: &mut Vec<u8>,
) {
    out.clear();
    put_varint(through, out);
    put_varint(etag, out);
    put_varint(properties.len() as u64, out);
    let mut value = Vec::new();
    for (name, v, at) in properties {
        put_bytes(name.as_bytes(), out);
        put_varint(at.as_millis(), out);
        value.clear();
        serde_json::to_writer(&mut value, v).expect("a scalar always serializes");
        put_bytes(&value, out);
    }
}

/// Decodes a `properties` record; [`StoreError::BadRecord`] on anything unexpected,
/// including bytes after its last property.
pub(crate) fn decode_properties(id: &str, bytes: &[u8]) -> Result<PropertiesRecord, StoreError> {
    let mut properties = Vec::new();
    let (through, etag) = visit_properties(id, bytes, |name, at, value| {
        let value: Scalar = serde_json::from_slice(value).map_err(|e| format!("value: {e}"))?;
        properties.push((name.to_owned(), at, value));
        Ok(())
    })?;
    Ok(PropertiesRecord {
        through,
        etag,
        properties,
    })
}

/// Walks a `properties` record: `each` gets every property's name, `lastUpdatedTime`
/// and value (JSON text) in order, and may refuse it (its message becomes the
/// [`StoreError::BadRecord`]'s detail). Returns the record's `through` and `etag`.
pub(crate) fn visit_properties(
    id: &str,
    bytes: &[u8],
    mut each: impl FnMut(&str, Timestamp, &[u8]) -> Result<(), String>,
) -> Result<(u64, u64), StoreError> {
    let bad = |detail: &str| StoreError::BadRecord {
        table: "properties",
        key: id.chars().take(128).collect(),
        detail: detail.into(),
    };
    let mut b = bytes;
    let through = take_varint(&mut b).ok_or_else(|| bad("no commit number"))?;
    let etag = take_varint(&mut b).ok_or_else(|| bad("no etag"))?;
    let count = take_varint(&mut b).ok_or_else(|| bad("no property count"))?;
    // Every property takes at least 3 bytes: a count past that is a lie.
    if count > b.len() as u64 / 3 {
        return Err(bad("more properties than bytes"));
    }
    for _ in 0..count {
        let name = take_str(&mut b).ok_or_else(|| bad("bad property name"))?;
        let at = take_varint(&mut b).ok_or_else(|| bad("bad lastUpdatedTime"))?;
        let len = take_varint(&mut b).ok_or_else(|| bad("bad value length"))?;
        let value = take(&mut b, len).ok_or_else(|| bad("value past the end"))?;
        each(name, Timestamp::from_millis(at), value).map_err(|e| bad(&e))?;
    }
    if !b.is_empty() {
        return Err(bad("bytes after the last property"));
    }
    Ok((through, etag))
}

/// One entry of a `property_log` record: a device property reported (`Some`) or
/// removed (`None`) by change `seq`.
#[derive(Debug, PartialEq)]
pub(crate) struct LogEntry {
    /// The key of the record holding it (its commit's newest sequence number).
    pub(crate) record: u64,
    pub(crate) device: String,
    pub(crate) name: String,
    pub(crate) seq: u64,
    pub(crate) value: Option<(Timestamp, Scalar)>,
}

/// Appends one entry to a `property_log` record being built (see [`decode_log`]).
pub(crate) fn encode_log_entry(
    device: &str,
    name: &str,
    seq: u64,
    value: Option<(&Scalar, Timestamp)>,
    out: &mut Vec<u8>,
) {
    put_bytes(device.as_bytes(), out);
    put_bytes(name.as_bytes(), out);
    put_varint(seq, out);
    match value {
        None => out.push(0),
        Some((v, at)) => {
            out.push(1);
            put_varint(at.as_millis(), out);
            put_bytes(
                &serde_json::to_vec(v).expect("a scalar always serializes"),
                out,
            );
        }
    }
}

/// Decodes a `property_log` record: its entries back to back (device id, property
/// name, sequence number, then 0 for a removal or 1, `lastUpdatedTime` and the value as
/// JSON; lengths and numbers as varints).
pub(crate) fn decode_log(key: u64, bytes: &[u8]) -> Result<Vec<LogEntry>, StoreError> {
    let bad = |detail: &str| StoreError::BadRecord {
        table: "property_log",
        key: key.to_string(),
        detail: detail.into(),
    };
    let mut b = bytes;
    let mut out = Vec::new();
    while !b.is_empty() {
        let device = take_str(&mut b).ok_or_else(|| bad("bad device id"))?;
        let name = take_str(&mut b).ok_or_else(|| bad("bad property name"))?;
        let seq = take_varint(&mut b).ok_or_else(|| bad("bad sequence number"))?;
        let value = match b.split_first() {
            Some((0, rest)) => {
                b = rest;
                None
            }
            Some((1, rest)) => {
                b = rest;
                let at = take_varint(&mut b).ok_or_else(|| bad("bad lastUpdatedTime"))?;
                let len = take_varint(&mut b).ok_or_else(|| bad("bad value length"))?;
                let json = take(&mut b, len).ok_or_else(|| bad("value past the end"))?;
                let v: Scalar =
                    serde_json::from_slice(json).map_err(|e| bad(&format!("value: {e}")))?;
                Some((Timestamp::from_millis(at), v))
            }
            _ => return Err(bad("bad entry kind")),
        };
        out.push(LogEntry {
            record: key,
            device: device.to_owned(),
            name: name.to_owned(),
            seq,
            value,
        });
    }
    Ok(out)
}

/// Checks a stored device id and makes a device id of it.
pub(crate) fn device_id(key: &str) -> Result<DeviceId, StoreError> {
    DeviceId::new(key).map_err(|e| bad_device_id(key, e))
}

/// Checks a stored device id without making one (no allocation); the same error as
/// [`device_id`].
pub(crate) fn check_device_id(key: &str) -> Result<(), StoreError> {
    DeviceId::validate(key).map_err(|e| bad_device_id(key, e))
}

/// A stored device id that is not one.
fn bad_device_id(key: &str, e: crate::twin::DeviceIdError) -> StoreError {
    StoreError::BadRecord {
        table: "twins",
        key: key.chars().take(128).collect(),
        detail: e.to_string(),
    }
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
        let bytes = encode_head(&t, None);
        let (back, _) = decode_head("d1", &bytes, None).unwrap();
        assert_eq!(back.authentication, t.authentication);
        assert!(back.device_properties.is_empty());
        assert!(decode_head("d2", &bytes, None).is_err());
        assert!(decode_head("d1", b"{", None).is_err());
    }

    #[test]
    fn properties_records_round_trip_and_every_cut_or_lie_fails() {
        let props = [
            (
                "BatteryLevel",
                Scalar::from(57),
                Timestamp::from_millis(1_461_931_200_123),
            ),
            ("/3303/0/5700", Scalar::from(-1.25), Timestamp::EPOCH),
            (
                "FirmwareVersion",
                Scalar::from("4.4 \"é\""),
                Timestamp::from_millis(u64::MAX),
            ),
            ("Flag", Scalar::from(true), Timestamp::from_millis(127)),
        ];
        let mut out = Vec::new();
        encode_properties(
            u64::MAX,
            300,
            props.iter().map(|(n, v, at)| (*n, v, *at)),
            &mut out,
        );
        let r = decode_properties("d", &out).unwrap();
        assert_eq!((r.through, r.etag), (u64::MAX, 300));
        let back: Vec<_> = r
            .properties
            .iter()
            .map(|(n, at, v)| (n.as_str(), v.clone(), *at))
            .collect();
        assert_eq!(back, props.to_vec());
        for cut in 0..out.len() {
            assert!(decode_properties("d", &out[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = out.clone();
        long.push(0);
        assert!(
            decode_properties("d", &long).is_err(),
            "a byte after the end"
        );
        // A count far past the bytes is refused before anything is allocated for it.
        let mut lie = Vec::new();
        put_varint(1, &mut lie);
        put_varint(1, &mut lie);
        put_varint(u64::MAX, &mut lie);
        assert!(decode_properties("d", &lie).is_err());
        // A varint of 11 bytes, or one past u64, is no number.
        assert!(take_varint(&mut &[0xff; 11][..]).is_none());
        assert!(
            take_varint(&mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..])
                .is_none()
        );
        let mut max = Vec::new();
        put_varint(u64::MAX, &mut max);
        assert_eq!(
            (max.len(), take_varint(&mut &max[..])),
            (10, Some(u64::MAX))
        );
    }

    #[test]
    fn log_records_round_trip_and_cuts_inside_an_entry_fail() {
        let mut out = Vec::new();
        encode_log_entry(
            "d1",
            "BatteryLevel",
            5,
            Some((&Scalar::from(9), Timestamp::from_millis(3))),
            &mut out,
        );
        let first = out.len();
        encode_log_entry("d2", "/9/0/1", u64::MAX, None, &mut out);
        let entries = decode_log(7, &out).unwrap();
        assert_eq!(
            entries,
            vec![
                LogEntry {
                    record: 7,
                    device: "d1".into(),
                    name: "BatteryLevel".into(),
                    seq: 5,
                    value: Some((Timestamp::from_millis(3), Scalar::from(9))),
                },
                LogEntry {
                    record: 7,
                    device: "d2".into(),
                    name: "/9/0/1".into(),
                    seq: u64::MAX,
                    value: None,
                },
            ]
        );
        for cut in 0..out.len() {
            let r = decode_log(7, &out[..cut]);
            match cut {
                0 => assert_eq!(r.unwrap(), vec![]),
                c if c == first => assert_eq!(r.unwrap().len(), 1),
                _ => assert!(r.is_err(), "cut at {cut}"),
            }
        }
        let mut bad_kind = out[..first].to_vec();
        bad_kind.extend_from_slice(b"\x02d3\x01n\x01\x02");
        assert!(decode_log(7, &bad_kind).is_err());
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
