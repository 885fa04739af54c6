//! The `registry_ops` fuzz body: bytes become a sequence of registry operations; after
//! each one the registry must still agree with a full scan (`validate()`), a successful
//! write must be visible to the next read, and a failed one must change nothing. Moves
//! of the history ([`Registry::continue_after`]) are among the operations: the feed's
//! numbers must then run consecutively except across the ranges the moves skipped.

use crate::registry::{NewDevice, Registry};
use crate::twin::{ConnectionState, DeviceStatus, Etag, Scalar, ServiceValue, Twin};
use crate::{DeviceId, Timestamp};
use std::collections::BTreeMap;

const IDS: &[&str] = &["a", "b", "c", "d", "e", "f", "g", "h"];
const DEVICE_NAMES: &[&str] = &[
    "FirmwareVersion",
    "/3/0/3",
    "BatteryLevel",
    "/3/0/9",
    "MemoryFree",
    "CurrentTime",
    "/3303/0/5700",
    "/3/0/6/1",
    "RebootDevice",
    "/3",
    "Nope",
];
const SERVICE_NAMES: &[&str] = &["region", "n", "cfg", "a.b", "$x", ""];
const TAGS: &[&str] = &["t0", "t1", "t2", "t3", "x,y", ""];

/// Reads bytes as small numbers; yields zeros when the input runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[self.byte() as usize % from.len()]
    }

    fn scalar(&mut self) -> Scalar {
        let b = self.byte();
        match b % 5 {
            0 => Scalar::from(b & 0x10 != 0),
            1 => Scalar::from((self.byte() % 8) as i64 - 2),
            2 => Scalar::from(f64::from(self.byte() % 8) / 2.0),
            3 => Scalar::from(["1.0", "2.0", "eu", "", "us"][self.byte() as usize % 5]),
            _ => Scalar::from(i64::from(self.byte()) * 1_000_003),
        }
    }

    fn service_value(&mut self, depth: usize) -> ServiceValue {
        if depth < 6 && self.byte().is_multiple_of(4) {
            let mut m = BTreeMap::new();
            for _ in 0..self.byte() % 3 {
                let k = self.pick(&["a", "b", "c.d", "$"]).to_string();
                let v = self.service_value(depth + 1);
                m.insert(k, v);
            }
            ServiceValue::Object(m)
        } else {
            ServiceValue::Scalar(self.scalar())
        }
    }

    fn tags(&mut self) -> Vec<&'static str> {
        (0..self.byte() % 4).map(|_| self.pick(TAGS)).collect()
    }

    fn etag(&mut self, reg: &Registry, id: &str) -> Option<Etag> {
        let cur = reg.get(id).map_or(Etag(0), |t| t.service_etag());
        match self.byte() % 3 {
            0 => None,
            1 => Some(cur),
            _ => Some(Etag(cur.0 ^ 1)),
        }
    }
}

/// Applies arbitrary operation sequences; panics only on a broken invariant.
pub fn registry_ops(data: &[u8]) {
    let mut input = Bytes(data);
    let capacity = input.byte() as usize % 16;
    let mut reg = Registry::with_feed_capacity(capacity);
    // The moves made so far: (newest number before, the number moved to).
    let mut moves: Vec<(u64, u64)> = Vec::new();
    let mut ops = 0;
    while !input.0.is_empty() && ops < 256 {
        ops += 1;
        let op = input.byte();
        let id = input.pick(IDS);
        let at = Timestamp::from_millis(u64::from(input.byte()) * 1000);
        let before_seq = reg.last_seq();
        let before = reg
            .get(id)
            .map(|t| serde_json::to_string(&t).unwrap_or_default());
        let mut moved = false;
        let ok = match op % 15 {
            0 | 1 => {
                let device: Vec<(&str, Scalar)> = (0..input.byte() % 4)
                    .map(|_| {
                        let v = input.scalar();
                        (input.pick(DEVICE_NAMES), v)
                    })
                    .collect();
                let service: Vec<(&str, ServiceValue)> = (0..input.byte() % 3)
                    .map(|_| {
                        let v = input.service_value(0);
                        (input.pick(SERVICE_NAMES), v)
                    })
                    .collect();
                let tags = input.tags();
                let mut t = Twin::new(DeviceId::new(id).expect("fixed ids are valid"));
                for (name, v) in &device {
                    t = t.with_device_property(*name, v.clone(), at);
                }
                for (name, v) in &service {
                    t = t.with_service_property(*name, v.clone());
                }
                for tag in &tags {
                    t = t.with_tag(*tag);
                }
                // Op 1 goes through a bulk load: of the twin, or of the lists as a
                // borrowed row (repeated names kept; object values left out).
                match (op % 15, input.byte() % 2) {
                    (0, _) => reg.create(t).is_ok(),
                    (_, 0) => reg.load([t]).is_ok(),
                    _ => {
                        let device: Vec<_> =
                            device.iter().map(|(n, v)| (*n, v.borrowed(), at)).collect();
                        let service: Vec<_> = service
                            .iter()
                            .filter_map(|(n, v)| match v {
                                ServiceValue::Scalar(s) => Some((*n, s.borrowed())),
                                ServiceValue::Object(_) => None,
                            })
                            .collect();
                        let mut bulk = reg.bulk_load();
                        let ok = bulk
                            .add(&NewDevice {
                                device_properties: &device,
                                service_properties: &service,
                                tags: &tags,
                                ..NewDevice::new(id)
                            })
                            .is_ok();
                        assert_eq!(bulk.finish(), usize::from(ok));
                        ok
                    }
                }
            }
            2 => reg.remove(id).is_ok(),
            3..=5 => {
                let name = input.pick(DEVICE_NAMES);
                let value = input.scalar();
                let ok = reg
                    .report_device_property(id, name, value.clone(), at)
                    .is_ok();
                if ok {
                    let got = reg
                        .get(id)
                        .and_then(|t| t.device_property(name).map(|p| p.0.clone()));
                    assert_eq!(got, Some(value), "a report is visible to the next read");
                }
                ok
            }
            6 => reg
                .remove_device_property(id, input.pick(DEVICE_NAMES))
                .is_ok_and(|removed| removed),
            7 => {
                let name = input.pick(SERVICE_NAMES);
                let value = (input.byte() % 4 != 0).then(|| input.service_value(0));
                let etag = input.etag(&reg, id);
                reg.set_service_property(id, name, value, etag).is_ok()
            }
            8 => {
                let tags = input.tags();
                let etag = input.etag(&reg, id);
                match input.byte() % 3 {
                    0 => reg.add_tags(id, &tags, etag),
                    1 => reg.remove_tags(id, &tags, etag),
                    _ => reg.replace_tags(id, &tags, etag),
                }
                .is_ok()
            }
            9 => {
                let state = if input.byte() % 2 == 0 {
                    ConnectionState::Connected
                } else {
                    ConnectionState::Disconnected
                };
                reg.set_connection_state(id, state, at).is_ok()
            }
            10 => {
                let status = if input.byte() % 2 == 0 {
                    DeviceStatus::Enabled
                } else {
                    DeviceStatus::Disabled
                };
                reg.set_status(id, status, Some("r".into()), at).is_ok()
            }
            11 => reg.set_managed(id, input.byte() % 2 == 0).is_ok(),
            12 => {
                let mut props = crate::twin::ServiceProperties::default();
                for _ in 0..input.byte() % 3 {
                    let v = input.service_value(0);
                    props
                        .properties
                        .insert(input.pick(SERVICE_NAMES).to_string(), v);
                }
                props.tags = input.tags().into_iter().map(String::from).collect();
                let etag = input.etag(&reg, id);
                reg.replace_service_properties(id, &props, etag).is_ok()
            }
            13 => {
                // A move forward (by 0 to 1,020: 0 moves nothing) or back (never moves).
                let step = u64::from(input.byte()) * 4;
                let to = if input.byte() % 4 == 0 {
                    before_seq.saturating_sub(step)
                } else {
                    before_seq + step
                };
                let outcome = reg.continue_after(to);
                assert_eq!(
                    outcome,
                    Ok(to > before_seq),
                    "moving from {before_seq} to {to}"
                );
                if to > before_seq {
                    assert_eq!(reg.last_seq(), to, "a move sets the newest number");
                    for t in reg.iter() {
                        assert_eq!(t.etag(), Etag(to), "a move renews every etag");
                        assert_eq!(t.service_etag(), Etag(to), "and every service etag");
                        assert_eq!(t.generation_id(), Etag(to), "and every generation id");
                    }
                    if to > before_seq + 1 {
                        assert!(
                            reg.changes_after(before_seq + 1).is_err(),
                            "a skipped number is a gap"
                        );
                    }
                    moves.push((before_seq, to));
                } else {
                    assert_eq!(reg.last_seq(), before_seq, "a history never goes back");
                }
                moved = true;
                false
            }
            _ => {
                let back = u64::from(input.byte());
                let after = if back & 0x80 == 0 {
                    back
                } else {
                    reg.last_seq().saturating_sub(back & 0x7f)
                };
                if let Ok(changes) = reg.changes_after(after) {
                    let mut prev = after;
                    for c in changes {
                        // The numbers between two changes the feed holds are all skipped by
                        // moves, one after the other (merged moves chain).
                        let mut reached = prev;
                        while reached + 1 < c.seq {
                            match moves.iter().find(|m| m.0 == reached) {
                                Some(&(_, to)) => reached = to,
                                None => panic!("{} follows {prev} with no move between", c.seq),
                            }
                        }
                        assert_eq!(c.seq, reached + 1, "feed numbers run on after a move");
                        prev = c.seq;
                    }
                }
                false
            }
        };
        if moved {
            // A move emits nothing and changes a twin's etags and generation id only.
            let without_etags = |json: Option<String>| {
                json.map(|j| {
                    let mut v: serde_json::Value = serde_json::from_str(&j).expect("twin JSON");
                    for key in ["etag", "generationId"] {
                        v.as_object_mut().map(|o| o.remove(key));
                    }
                    v.get_mut("serviceProperties")
                        .and_then(|p| p.as_object_mut())
                        .map(|o| o.remove("etag"));
                    v
                })
            };
            let after = reg
                .get(id)
                .map(|t| serde_json::to_string(&t).unwrap_or_default());
            assert_eq!(
                without_etags(before),
                without_etags(after),
                "a move changes no value"
            );
        } else if !ok {
            assert_eq!(reg.last_seq(), before_seq, "a failed write emits nothing");
            let after = reg
                .get(id)
                .map(|t| serde_json::to_string(&t).unwrap_or_default());
            assert_eq!(before, after, "a failed write changes nothing");
        }
        if let Err(e) = reg.validate() {
            panic!("registry inconsistent after op {ops}: {e}");
        }
    }
    for t in reg.iter() {
        let json = serde_json::to_value(t).expect("views serialise");
        assert_eq!(
            json,
            serde_json::to_value(t.to_twin()).expect("twins serialise")
        );
        t.to_twin().validate().expect("stored twins are valid");
    }
}

/// The `ndjson_import` fuzz body: the bytes are an NDJSON export. Imported with one
/// parser and whole-file chunks, and with three parsers and chunks of 1 to 64 bytes (the
/// first byte picks), the outcome must be the same: the same twins loaded (every field
/// and value), the same error (line and message) or the same count. Either way the registry must agree with a
/// full scan.
pub fn ndjson_import(data: &[u8]) {
    use crate::registry::ndjson::ImportOptions;
    let run = |options: ImportOptions| {
        let mut reg = Registry::new();
        let outcome = reg
            .import_ndjson_with(data, options)
            .map_err(|e| (e.line, e.to_string()));
        reg.validate()
            .expect("an import leaves the registry consistent");
        let mut twins: Vec<Twin> = reg.iter().map(|t| t.to_twin()).collect();
        twins.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        if let Ok(n) = outcome {
            assert_eq!(n, twins.len(), "the count is what was loaded");
        }
        (outcome, twins)
    };
    let whole = run(ImportOptions {
        parsers: 1,
        chunk_bytes: 1 << 20,
    });
    let chunked = run(ImportOptions {
        parsers: 3,
        chunk_bytes: data.first().map_or(1, |b| usize::from(b % 64) + 1),
    });
    assert_eq!(whole, chunked, "chunking changed the outcome");
}
