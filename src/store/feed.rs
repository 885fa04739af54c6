//! The persisted change feed: `feed` table, sequence number -> one encoded [`Change`].
//!
//! Row layout: one byte for the kind, then for `ConnectionState`, `Status` and `Managed`
//! one byte of state, then the device id, and for the two device-property kinds a zero
//! byte and the property name; a reported property then has a zero byte and its value
//! and previous value as a JSON pair (`[value, previous]`, `null` for none; names and
//! ids hold no zero byte, so the split is unambiguous). Decoding checks every byte and
//! the id ([`StoreError::BadRecord`] otherwise). Format 1 files kept no values: opening
//! one drops its feed rows (see [`super::FORMAT`]).

use super::StoreError;
use crate::DeviceId;
use crate::registry::{Change, ChangeKind};
use crate::twin::{ConnectionState, DeviceStatus, Scalar};

fn tag(kind: &ChangeKind) -> (u8, Option<u8>, Option<&str>) {
    match kind {
        ChangeKind::Created => (0, None, None),
        ChangeKind::Removed => (1, None, None),
        ChangeKind::DeviceProperty { name, .. } => (2, None, Some(name)),
        ChangeKind::DevicePropertyRemoved { name } => (3, None, Some(name)),
        ChangeKind::ServiceProperties => (4, None, None),
        ChangeKind::Tags => (5, None, None),
        ChangeKind::ConnectionState(s) => (6, Some(*s as u8), None),
        ChangeKind::Status(s) => (7, Some(*s as u8), None),
        ChangeKind::Managed(m) => (8, Some(*m as u8), None),
        ChangeKind::Registration => (9, None, None),
        ChangeKind::LastActivity => (10, None, None),
        ChangeKind::Configuration => (11, None, None),
        ChangeKind::Authentication => (12, None, None),
    }
}

/// Encodes a change (its sequence number is the row's key).
pub(crate) fn encode(change: &Change, out: &mut Vec<u8>) {
    out.clear();
    let (t, state, name) = tag(&change.kind);
    out.push(t);
    if let Some(s) = state {
        out.push(s);
    }
    out.extend_from_slice(change.device.as_str().as_bytes());
    if let Some(n) = name {
        out.push(0);
        out.extend_from_slice(n.as_bytes());
    }
    if let ChangeKind::DeviceProperty {
        value, previous, ..
    } = &change.kind
    {
        out.push(0);
        serde_json::to_writer(&mut *out, &(value, previous)).expect("scalars always serialize");
    }
}

/// Decodes a change row.
pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<Change, StoreError> {
    let bad = |detail: &str| StoreError::BadRecord {
        table: "feed",
        key: seq.to_string(),
        detail: detail.into(),
    };
    let (&t, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
    let (state, rest) = if matches!(t, 6..=8) {
        let (&s, rest) = rest.split_first().ok_or_else(|| bad("no state byte"))?;
        if s > 1 {
            return Err(bad("state byte out of range"));
        }
        (s, rest)
    } else {
        (0, rest)
    };
    let (id, name) = if matches!(t, 2 | 3) {
        let at = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| bad("no property name"))?;
        let (name, values) = if t == 2 {
            let tail = &rest[at + 1..];
            let end = tail
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("no property value"))?;
            let values: (Scalar, Option<Scalar>) = serde_json::from_slice(&tail[end + 1..])
                .map_err(|e| bad(&format!("property value: {e}")))?;
            (&tail[..end], Some(values))
        } else {
            (&rest[at + 1..], None)
        };
        let name = std::str::from_utf8(name).map_err(|_| bad("name is not UTF-8"))?;
        (
            &rest[..at],
            Some((std::sync::Arc::<str>::from(name), values)),
        )
    } else {
        (rest, None)
    };
    let id = std::str::from_utf8(id).map_err(|_| bad("device id is not UTF-8"))?;
    let device = DeviceId::new(id).map_err(|_| bad("invalid device id"))?;
    let kind = match (t, name) {
        (0, _) => ChangeKind::Created,
        (1, _) => ChangeKind::Removed,
        (2, Some((name, Some((value, previous))))) => ChangeKind::DeviceProperty {
            name,
            value,
            previous,
        },
        (3, Some((name, None))) => ChangeKind::DevicePropertyRemoved { name },
        (4, _) => ChangeKind::ServiceProperties,
        (5, _) => ChangeKind::Tags,
        (6, _) => ChangeKind::ConnectionState(if state == 1 {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        }),
        (7, _) => ChangeKind::Status(if state == 1 {
            DeviceStatus::Disabled
        } else {
            DeviceStatus::Enabled
        }),
        (8, _) => ChangeKind::Managed(state == 1),
        (9, _) => ChangeKind::Registration,
        (10, _) => ChangeKind::LastActivity,
        (11, _) => ChangeKind::Configuration,
        (12, _) => ChangeKind::Authentication,
        _ => return Err(bad("unknown kind")),
    };
    Ok(Change { seq, device, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let kinds = [
            ChangeKind::Created,
            ChangeKind::Removed,
            ChangeKind::DeviceProperty {
                name: "/3/0/9".into(),
                value: Scalar::from(87),
                previous: None,
            },
            ChangeKind::DeviceProperty {
                name: "FirmwareVersion".into(),
                value: Scalar::from("1.1\u{0}x"),
                previous: Some(Scalar::from(2.5)),
            },
            ChangeKind::DevicePropertyRemoved {
                name: "BatteryLevel".into(),
            },
            ChangeKind::ServiceProperties,
            ChangeKind::Tags,
            ChangeKind::ConnectionState(ConnectionState::Connected),
            ChangeKind::ConnectionState(ConnectionState::Disconnected),
            ChangeKind::Status(DeviceStatus::Disabled),
            ChangeKind::Status(DeviceStatus::Enabled),
            ChangeKind::Managed(true),
            ChangeKind::Registration,
            ChangeKind::LastActivity,
            ChangeKind::Configuration,
            ChangeKind::Authentication,
        ];
        let mut out = Vec::new();
        for (i, kind) in kinds.into_iter().enumerate() {
            let c = Change {
                seq: i as u64 + 1,
                device: DeviceId::new("dev-1").unwrap(),
                kind,
            };
            encode(&c, &mut out);
            assert_eq!(decode(c.seq, &out).unwrap(), c);
            for cut in 0..out.len() {
                let _ = decode(c.seq, &out[..cut]);
            }
        }
        assert!(decode(1, &[]).is_err());
        assert!(decode(1, &[99, b'a']).is_err());
        assert!(decode(1, &[6, 7, b'a']).is_err());
        assert!(decode(1, &[2, b'a']).is_err());
    }
}
