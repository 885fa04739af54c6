//! `validate()`: every index checked against a full scan of the twins.

use super::Registry;
use super::index::{FLOAT_BIT, OBJECT_NODE, Posting, float_flag};
use crate::twin::{ConnectionState, DeviceStatus, PropertyKind, Scalar};
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, BTreeSet};

impl Registry {
    /// Checks every index against a full scan of the stored twins; `Err` describes the
    /// first inconsistency. For tests and fuzzing: it is O(everything).
    #[doc(hidden)]
    pub fn validate(&self) -> Result<(), String> {
        let mut universe = RoaringBitmap::new();
        let mut fields: [RoaringBitmap; 6] = Default::default();
        // property -> value -> slots, and property -> exists
        let mut values: Vec<BTreeMap<Scalar, RoaringBitmap>> =
            vec![BTreeMap::new(); self.props.len()];
        let mut exists: Vec<RoaringBitmap> = vec![RoaringBitmap::new(); self.props.len()];
        let mut tags: Vec<RoaringBitmap> = vec![RoaringBitmap::new(); self.tags.len()];
        let mut max_seq = 0;
        for (slot, entry) in self.slots.iter().enumerate() {
            let slot = slot as u32;
            let Some(e) = entry else { continue };
            universe.insert(slot);
            let id = e.id.as_str();
            if self.find_slot(id) != Some(slot) {
                return Err(format!("device {id} at slot {slot} is not mapped to it"));
            }
            max_seq = max_seq.max(e.etag).max(e.service_etag).max(e.generation);
            if e.etag < e.service_etag || e.etag < e.generation {
                return Err(format!("device {id}: twin etag older than a part of it"));
            }
            fields[match e.status {
                DeviceStatus::Enabled => 0,
                DeviceStatus::Disabled => 1,
            }]
            .insert(slot);
            fields[match e.connection {
                ConnectionState::Connected => 2,
                ConnectionState::Disconnected => 3,
            }]
            .insert(slot);
            fields[if e.managed { 4 } else { 5 }].insert(slot);
            let device: Vec<_> = e.lists.device().collect();
            let service: Vec<_> = e.lists.service().collect();
            if !device.windows(2).all(|w| w[0].pid < w[1].pid)
                || !service.windows(2).all(|w| w[0].pid < w[1].pid)
                || !e.lists.tags().windows(2).all(|w| w[0] < w[1])
            {
                return Err(format!(
                    "device {id}: property or tag lists not strictly sorted"
                ));
            }
            let leaves = device.iter().map(|d| (d.pid, d.vid, PropertyKind::Device));
            let svc = service
                .iter()
                .map(|l| (l.pid, l.vid, PropertyKind::Service));
            for (pid, vid, kind) in leaves.chain(svc) {
                let p = self
                    .props
                    .get(pid as usize)
                    .ok_or_else(|| format!("device {id}: unknown property id {pid}"))?;
                if p.kind != kind {
                    return Err(format!(
                        "device {id}: property {} has the wrong kind",
                        p.name
                    ));
                }
                exists[pid as usize].insert(slot);
                if vid == OBJECT_NODE {
                    if kind == PropertyKind::Device {
                        return Err(format!(
                            "device {id}: device property {} is an object",
                            p.name
                        ));
                    }
                    continue;
                }
                let v = p
                    .values
                    .get((vid & !FLOAT_BIT) as usize)
                    .ok_or_else(|| format!("device {id}: {} has no value id {vid}", p.name))?;
                if matches!(v.slots, Posting::Empty) {
                    return Err(format!(
                        "device {id}: {} points at freed value id {vid}",
                        p.name
                    ));
                }
                if float_flag(p.value(vid)) != vid & FLOAT_BIT {
                    return Err(format!(
                        "device {id}: {} value written unlike its flag",
                        p.name
                    ));
                }
                values[pid as usize]
                    .entry(v.value.clone())
                    .or_default()
                    .insert(slot);
            }
            for &t in e.lists.tags() {
                tags.get_mut(t as usize)
                    .ok_or_else(|| format!("device {id}: unknown tag id {t}"))?
                    .insert(slot);
            }
            // Service object nodes: every dotted leaf has its parents present.
            let names: BTreeSet<&str> = service
                .iter()
                .map(|l| &*self.props[l.pid as usize].name)
                .collect();
            for n in &names {
                if let Some((parent, _)) = n.rsplit_once('.')
                    && !names.contains(parent)
                {
                    return Err(format!(
                        "device {id}: service member {n} has no parent {parent}"
                    ));
                }
            }
        }
        if max_seq > self.seq {
            return Err(format!(
                "an etag {max_seq} is newer than the last sequence {}",
                self.seq
            ));
        }
        if universe != self.universe {
            return Err("universe differs from the live slots".into());
        }
        // Empty slots are free, or removed and waiting for the id order to drop them.
        let free: BTreeSet<u32> = self.free_slots.iter().copied().collect();
        let pending: BTreeSet<u32> = self.id_order.pending_removals().collect();
        let empty: BTreeSet<u32> = (0..self.slots.len() as u32)
            .filter(|s| self.slots[*s as usize].is_none())
            .collect();
        if free.len() != self.free_slots.len()
            || !free.is_disjoint(&pending)
            || free.union(&pending).copied().collect::<BTreeSet<u32>>() != empty
        {
            return Err("free and pending slots differ from the empty slots".into());
        }
        if self.by_id_hash.len() != universe.len() as usize {
            return Err("id map has entries for dead slots".into());
        }
        // The id order: every live slot once, ids strictly increasing; plus the pending.
        let ordered: Vec<u32> = self.id_order.all(&self.slots).collect();
        let live: Vec<u32> = ordered
            .iter()
            .copied()
            .filter(|&s| self.slots[s as usize].is_some())
            .collect();
        if ordered.len() != live.len() + pending.len()
            || live.iter().copied().collect::<RoaringBitmap>() != universe
        {
            return Err("id order differs from the live and pending slots".into());
        }
        let ids: Vec<&str> = live
            .iter()
            .map(|&s| {
                self.slots[s as usize]
                    .as_ref()
                    .map_or("", |e| e.id.as_str())
            })
            .collect();
        if ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err("id order is not in id order".into());
        }
        let actual = [
            &self.enabled,
            &self.disabled,
            &self.connected,
            &self.disconnected,
            &self.managed,
            &self.unmanaged,
        ];
        let names = [
            "enabled",
            "disabled",
            "connected",
            "disconnected",
            "managed",
            "unmanaged",
        ];
        for i in 0..6 {
            if &fields[i] != actual[i] {
                return Err(format!("{} bitmap differs from the twins", names[i]));
            }
        }
        for (pid, p) in self.props.iter().enumerate() {
            let ids = match p.kind {
                PropertyKind::Device => &self.device_prop_ids,
                PropertyKind::Service => &self.service_prop_ids,
            };
            if ids.get(&*p.name) != Some(&(pid as u32)) {
                return Err(format!("property {} is not interned to its id", p.name));
            }
            if p.exists != exists[pid] {
                return Err(format!(
                    "{} property {}: exists bitmap differs",
                    p.kind, p.name
                ));
            }
            let expected = &values[pid];
            // The order holds every live value once, in value order, plus dead values
            // (no slots) that a merge has not dropped yet.
            let mut live = Vec::with_capacity(expected.len());
            let mut dead = 0;
            let mut in_order = BTreeSet::new();
            for vid in p.ordered_ids() {
                let entry = p
                    .values
                    .get(vid as usize)
                    .ok_or_else(|| format!("property {}: order holds unknown id {vid}", p.name))?;
                if !in_order.insert(vid) {
                    return Err(format!("property {}: id {vid} twice in the order", p.name));
                }
                match &entry.slots {
                    Posting::Empty => dead += 1,
                    _ => live.push((vid, entry)),
                }
            }
            if dead != p.dead() || live.len() != p.distinct() {
                return Err(format!(
                    "property {}: counts {} live / {} dead, order has {} / {dead}",
                    p.name,
                    p.distinct(),
                    p.dead(),
                    live.len()
                ));
            }
            if live.len() != expected.len() {
                return Err(format!(
                    "{} property {}: {} indexed values, {} in twins",
                    p.kind,
                    p.name,
                    live.len(),
                    expected.len()
                ));
            }
            for ((vid, entry), (ev, eslots)) in live.into_iter().zip(expected) {
                let v = &entry.value;
                if v != ev {
                    return Err(format!(
                        "{} property {}: value {v} not in twins",
                        p.kind, p.name
                    ));
                }
                if p.slots_of(v).map(|s| s.len()) != Some(eslots.len()) {
                    return Err(format!(
                        "{} property {}: value {v} (id {vid}) not found by hash",
                        p.kind, p.name
                    ));
                }
                let slots = match &entry.slots {
                    Posting::Empty => RoaringBitmap::new(),
                    Posting::One(s) => std::iter::once(*s).collect(),
                    Posting::Many(b) => {
                        if b.len() < 2 {
                            return Err(format!(
                                "{}: value {v} has a bitmap of {} slots",
                                p.name,
                                b.len()
                            ));
                        }
                        b.clone()
                    }
                };
                if &slots != eslots {
                    return Err(format!(
                        "{} property {}: slots of value {v} differ",
                        p.kind, p.name
                    ));
                }
            }
            let hashed = p.lookup_consistent()?;
            if hashed != p.distinct() {
                return Err(format!(
                    "property {}: hash table holds {hashed} values, {} live",
                    p.name,
                    p.distinct()
                ));
            }
            let accounted = in_order.len() + p.free_ids().len();
            if accounted != p.values.len() {
                return Err(format!(
                    "property {}: value ids leak ({accounted} of {})",
                    p.name,
                    p.values.len()
                ));
            }
            for &f in p.free_ids() {
                if in_order.contains(&f) || !matches!(p.values[f as usize].slots, Posting::Empty) {
                    return Err(format!("property {}: free value id {f} in use", p.name));
                }
            }
        }
        if self.device_prop_ids.len() + self.service_prop_ids.len() != self.props.len() {
            return Err("property interner has stray names".into());
        }
        for (t, idx) in self.tags.iter().enumerate() {
            if self.tag_ids.get(&idx.name) != Some(&(t as u32)) {
                return Err(format!("tag {} is not interned to its id", idx.name));
            }
            if idx.slots != tags[t] {
                return Err(format!("tag {} bitmap differs from the twins", idx.name));
            }
        }
        if self.tag_ids.len() != self.tags.len() {
            return Err("tag interner has stray names".into());
        }
        self.feed.check(self.seq)
    }
}
