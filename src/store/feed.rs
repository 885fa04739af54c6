//! The persisted change feed: `feed_records` table, the newest sequence number of a
//! commit -> every change of that commit, oldest first ([`append`]): each change's
//! number and the length of its encoding (varints), then the encoding. One record a
//! commit makes a commit's feed one sequential insert, not a B-tree insert (and a
//! delete, at the retention bound) per change: at 4,096 reports a commit, the rows
//! were most of the commit's cost (`benches/store.rs`).
//!
//! A change's encoding ([`encode`]): one byte for the kind, then for `ConnectionState`,
//! `Status` and `Managed` one byte of state, then the device id, and for the two
//! device-property kinds a zero byte and the property name; a reported property then has
//! a zero byte and its value and previous value as a JSON pair (`[value, previous]`,
//! `null` for none; names and ids hold no zero byte, so the split is unambiguous).
//! Decoding checks every byte, the id, and that the numbers rise and end at the
//! record's key ([`StoreError::BadRecord`] otherwise). Format 2 kept a row per change (an
//! encoding under its number): opening such a file makes each a record of one change.
//! Format 1 files kept no values: opening one drops its feed rows (see
//! [`super::FORMAT`]).

use super::{StoreError, record};
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

/// Encodes a change, without its sequence number (a record puts the number in front of
/// the encoding, see [`append`]; a format 2 row had it as its key).
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

/// Decodes a change's encoding ([`encode`]): one of a feed record's, or a format 2 row.
/// Its errors name the table `feed` and the change's number; [`decode_record`] renames
/// them after the record (`feed_records` and its key) for a change inside one.
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

/// Appends `change` to a feed record being built: its sequence number and the length of
/// its encoding ([`encode`]) as varints, then the encoding. A record holds one commit's
/// changes, oldest first, under the key of its newest.
pub(crate) fn append(change: &Change, scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
    encode(change, scratch);
    record::put_varint(change.seq, out);
    record::put_varint(scratch.len() as u64, out);
    out.extend_from_slice(scratch);
}

/// Calls `each` with every change of the feed record under `key`, oldest first, as
/// (sequence number, encoding, offset of the next change); checks that the numbers rise
/// and end at `key`.
fn entries<'b>(
    key: u64,
    bytes: &'b [u8],
    mut each: impl FnMut(u64, &'b [u8], usize) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let bad = |detail: &str| StoreError::BadRecord {
        table: "feed_records",
        key: key.to_string(),
        detail: detail.into(),
    };
    let mut b = bytes;
    let mut previous: Option<u64> = None;
    while !b.is_empty() {
        let seq = record::take_varint(&mut b).ok_or_else(|| bad("bad sequence number"))?;
        if previous.is_some_and(|p| seq <= p) || seq > key {
            return Err(bad("sequence numbers out of order"));
        }
        let len = record::take_varint(&mut b).ok_or_else(|| bad("bad change length"))?;
        let change = record::take(&mut b, len).ok_or_else(|| bad("change past the end"))?;
        each(seq, change, bytes.len() - b.len())?;
        previous = Some(seq);
    }
    if previous != Some(key) {
        return Err(bad("the newest change is not the record's key"));
    }
    Ok(())
}

/// Decodes a feed record (see [`append`]).
pub(crate) fn decode_record(key: u64, bytes: &[u8]) -> Result<Vec<Change>, StoreError> {
    let mut out = Vec::new();
    entries(key, bytes, |seq, change, _| {
        // A bad change is reported as the record's (table and key), naming the change.
        let change = decode(seq, change).map_err(|e| match e {
            StoreError::BadRecord { detail, .. } => StoreError::BadRecord {
                table: "feed_records",
                key: key.to_string(),
                detail: format!("change {seq}: {detail}"),
            },
            e => e,
        })?;
        out.push(change);
        Ok(())
    })?;
    Ok(out)
}

/// How many changes a feed record holds, checking its framing but not decoding them.
pub(crate) fn record_len(key: u64, bytes: &[u8]) -> Result<usize, StoreError> {
    let mut n = 0;
    entries(key, bytes, |_, _, _| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// How many changes a feed record holds and the number of its oldest, checking its
/// framing but not decoding them.
pub(crate) fn record_span(key: u64, bytes: &[u8]) -> Result<(usize, u64), StoreError> {
    let (mut n, mut first) = (0, key);
    entries(key, bytes, |seq, _, _| {
        if n == 0 {
            first = seq;
        }
        n += 1;
        Ok(())
    })?;
    Ok((n, first))
}

/// Where the feed record under `key` continues after its oldest `n` changes (fewer than
/// it holds): the offset of the next change (the rest of the bytes are a record of the
/// newer changes under the same key) and the sequence number of the `n`th.
pub(crate) fn split(key: u64, bytes: &[u8], n: usize) -> Result<(usize, u64), StoreError> {
    let (mut seen, mut at) = (0, None);
    entries(key, bytes, |seq, _, next| {
        seen += 1;
        if seen == n {
            at = Some((next, seq));
        }
        Ok(())
    })?;
    match at {
        Some(at) if seen > n => Ok(at),
        _ => Err(StoreError::BadRecord {
            table: "feed_records",
            key: key.to_string(),
            detail: format!("{seen} changes, cannot keep those after the first {n}"),
        }),
    }
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
        // A record of three changes; every cut but at a change's end fails, and a cut
        // there fails too unless that change is the key.
        let changes: Vec<Change> = [3u64, 4, 9]
            .iter()
            .map(|&seq| Change {
                seq,
                device: DeviceId::new("d").unwrap(),
                kind: ChangeKind::Tags,
            })
            .collect();
        let (mut rec, mut scratch) = (Vec::new(), Vec::new());
        for c in &changes {
            append(c, &mut scratch, &mut rec);
        }
        assert_eq!(decode_record(9, &rec).unwrap(), changes);
        assert_eq!(record_len(9, &rec).unwrap(), 3);
        for n in 1..3 {
            let (at, seq) = split(9, &rec, n).unwrap();
            assert_eq!(seq, changes[n - 1].seq);
            assert_eq!(decode_record(9, &rec[at..]).unwrap(), changes[n..]);
        }
        assert!(split(9, &rec, 0).is_err() && split(9, &rec, 3).is_err());
        for cut in 0..rec.len() {
            assert!(decode_record(9, &rec[..cut]).is_err(), "cut at {cut}");
        }
        assert!(
            decode_record(10, &rec).is_err(),
            "the key is not the newest"
        );
        // A change that does not decode names the record it is in.
        let mut damaged = Vec::new();
        record::put_varint(9, &mut damaged);
        record::put_varint(1, &mut damaged);
        damaged.push(99);
        match decode_record(9, &damaged) {
            Err(StoreError::BadRecord { table, key, detail }) => {
                assert_eq!((table, key.as_str()), ("feed_records", "9"));
                assert!(detail.starts_with("change 9: "), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        let mut twice = Vec::new();
        append(&changes[2], &mut scratch, &mut twice);
        append(&changes[2], &mut scratch, &mut twice);
        assert!(decode_record(9, &twice).is_err(), "a number repeated");
        assert!(decode(1, &[99, b'a']).is_err());
        assert!(decode(1, &[6, 7, b'a']).is_err());
        assert!(decode(1, &[2, b'a']).is_err());
    }
}
