//! A twin's device values, service leaves and tags as stored: one allocation.
//!
//! Three vectors would cost three allocations a twin (and 72 bytes in the entry for
//! their headers); a bulk load of a million twins spends a measurable share of its time
//! in those allocations and in faulting in their pages. The lists are written once and
//! rarely change length (a report of a property the twin already has changes a value id
//! and a time in place), so they share one boxed slice of `u32` words:
//!
//! `[device count, service count, time count, device values (pid, vid)..., their times
//! (a 16-bit index into the times, two a word)..., times (high, low)..., service leaves
//! (pid, vid)..., tag ids...]`
//!
//! A device reports many properties at once (a registration, a notification), so its
//! values share few report times: each distinct time is stored once (a twin of 21
//! properties reported at 5 times takes 63 words for them instead of 84). A time no
//! value uses any more is reused by the next report that needs a new one.
//!
//! The empty lists allocate nothing. Each list is sorted by id.

use super::{DeviceValue, ServiceLeaf};
use crate::Timestamp;

/// Words per device value (its time index aside).
const DEVICE: usize = 2;
/// Words per distinct time.
const TIME: usize = 2;
/// Words per service leaf.
const SERVICE: usize = 2;
/// Header words.
const HEAD: usize = 3;

/// A twin's device values, service leaves and tags (see the [module docs](self)).
#[derive(Debug, Default, Clone)]
pub(crate) struct TwinLists {
    words: Box<[u32]>,
}

/// Where each part starts, in words.
struct Offsets {
    device: usize,
    time_index: usize,
    times: usize,
    service: usize,
    tags: usize,
}

impl TwinLists {
    /// Lists from their parts, each sorted by id.
    pub(crate) fn new(device: &[DeviceValue], service: &[ServiceLeaf], tags: &[u32]) -> Self {
        Self::build(device, service, tags, &mut Vec::new())
    }

    /// [`TwinLists::new`] with a scratch list for the distinct times (a bulk load
    /// builds a batch's lists with one).
    pub(crate) fn build(
        device: &[DeviceValue],
        service: &[ServiceLeaf],
        tags: &[u32],
        times: &mut Vec<u64>,
    ) -> Self {
        if device.is_empty() && service.is_empty() && tags.is_empty() {
            return TwinLists::default();
        }
        // The distinct times first, so that the words are allocated at their size.
        times.clear();
        for d in device {
            let ms = d.ts.as_millis();
            if !times.contains(&ms) {
                times.push(ms);
            }
        }
        let nd = device.len();
        let mut words = Vec::with_capacity(
            HEAD + DEVICE * nd
                + nd.div_ceil(2)
                + TIME * times.len()
                + SERVICE * service.len()
                + tags.len(),
        );
        words.extend([nd as u32, service.len() as u32, times.len() as u32]);
        for d in device {
            words.extend([d.pid, d.vid]);
        }
        // At most one time a value, and a twin holds at most 1,024 values.
        let time_at = |d: &DeviceValue| {
            let ms = d.ts.as_millis();
            times.iter().position(|&t| t == ms).unwrap_or(0) as u32
        };
        for pair in device.chunks(2) {
            let low = time_at(&pair[0]);
            let high = pair.get(1).map_or(0, time_at);
            words.push(low | (high << 16));
        }
        for &ms in times.iter() {
            words.extend([(ms >> 32) as u32, ms as u32]);
        }
        for l in service {
            words.extend([l.pid, l.vid]);
        }
        words.extend_from_slice(tags);
        TwinLists {
            words: words.into_boxed_slice(),
        }
    }

    fn counts(&self) -> (usize, usize, usize) {
        match *self.words {
            [nd, ns, nt, ..] => (nd as usize, ns as usize, nt as usize),
            _ => (0, 0, 0),
        }
    }

    fn offsets(&self) -> Offsets {
        let (nd, ns, nt) = self.counts();
        let time_index = HEAD + DEVICE * nd;
        let times = time_index + nd.div_ceil(2);
        let service = times + TIME * nt;
        Offsets {
            device: HEAD,
            time_index,
            times,
            service,
            tags: service + SERVICE * ns,
        }
    }

    /// How many device values.
    pub(crate) fn device_len(&self) -> usize {
        self.counts().0
    }

    /// Device value `i`'s index into the times.
    fn time_index(&self, at: &Offsets, i: usize) -> usize {
        let word = self.words[at.time_index + i / 2];
        ((word >> (16 * (i % 2))) & 0xffff) as usize
    }

    fn set_time_index(&mut self, at: &Offsets, i: usize, t: usize) {
        let word = &mut self.words[at.time_index + i / 2];
        let shift = 16 * (i % 2);
        *word = (*word & !(0xffff << shift)) | ((t as u32) << shift);
    }

    fn time(&self, at: &Offsets, t: usize) -> u64 {
        let w = &self.words[at.times + TIME * t..at.times + TIME * (t + 1)];
        (u64::from(w[0]) << 32) | u64::from(w[1])
    }

    fn set_time(&mut self, at: &Offsets, t: usize, ms: u64) {
        let w = &mut self.words[at.times + TIME * t..at.times + TIME * (t + 1)];
        w[0] = (ms >> 32) as u32;
        w[1] = ms as u32;
    }

    /// Device value `i`.
    pub(crate) fn device_at(&self, i: usize) -> DeviceValue {
        self.device_in(&self.offsets(), i)
    }

    fn device_in(&self, at: &Offsets, i: usize) -> DeviceValue {
        let w = &self.words[at.device + DEVICE * i..at.device + DEVICE * (i + 1)];
        DeviceValue {
            pid: w[0],
            vid: w[1],
            ts: Timestamp::from_millis(self.time(at, self.time_index(at, i))),
        }
    }

    /// The device values, by property id.
    pub(crate) fn device(&self) -> impl ExactSizeIterator<Item = DeviceValue> + '_ {
        let at = self.offsets();
        (0..self.device_len()).map(move |i| self.device_in(&at, i))
    }

    /// Where device property `pid` is (`Err`: where it would go).
    pub(crate) fn find_device(&self, pid: u32) -> Result<usize, usize> {
        binary_search(self.device_len(), pid, |i| self.words[HEAD + DEVICE * i])
    }

    /// Sets device value `i`'s value id and report time: in place, unless the time is
    /// new to the twin while the value's old time is still another value's and every
    /// stored time is in use (then the lists are rebuilt with one more time).
    pub(crate) fn set_device_at(&mut self, i: usize, vid: u32, ts: Timestamp) {
        let at = self.offsets();
        self.words[at.device + DEVICE * i + 1] = vid;
        let ms = ts.as_millis();
        let old = self.time_index(&at, i);
        if self.time(&at, old) == ms {
            return;
        }
        let (nd, _, nt) = self.counts();
        if let Some(t) = (0..nt).find(|&t| self.time(&at, t) == ms) {
            self.set_time_index(&at, i, t);
            return;
        }
        // A time only this value uses is overwritten (a property reported on its own);
        // otherwise one no value uses any more is taken.
        if !(0..nd).any(|j| j != i && self.time_index(&at, j) == old) {
            self.set_time(&at, old, ms);
            return;
        }
        let mut in_use = vec![false; nt];
        for j in 0..nd {
            in_use[self.time_index(&at, j)] = true;
        }
        if let Some(free) = (0..nt).find(|&t| !in_use[t]) {
            self.set_time(&at, free, ms);
            self.set_time_index(&at, i, free);
            return;
        }
        let (mut device, service, tags) = self.parts();
        device[i].ts = ts;
        *self = TwinLists::new(&device, &service, &tags);
    }

    /// How many service leaves.
    pub(crate) fn service_len(&self) -> usize {
        self.counts().1
    }

    /// Service leaf `i`.
    pub(crate) fn service_at(&self, i: usize) -> ServiceLeaf {
        Self::leaf(&self.words[self.offsets().service..], i)
    }

    fn leaf(service: &[u32], i: usize) -> ServiceLeaf {
        ServiceLeaf {
            pid: service[SERVICE * i],
            vid: service[SERVICE * i + 1],
        }
    }

    /// The service leaves, by property id.
    pub(crate) fn service(&self) -> impl ExactSizeIterator<Item = ServiceLeaf> + '_ {
        let service = match self.words.len() {
            0 => &[][..],
            _ => &self.words[self.offsets().service..],
        };
        (0..self.service_len()).map(move |i| Self::leaf(service, i))
    }

    /// Where service leaf `pid` is (`Err`: where it would go).
    pub(crate) fn find_service(&self, pid: u32) -> Result<usize, usize> {
        let start = self.offsets().service;
        binary_search(self.service_len(), pid, |i| self.words[start + SERVICE * i])
    }

    /// The tag ids, ascending.
    pub(crate) fn tags(&self) -> &[u32] {
        if self.words.is_empty() {
            return &[];
        }
        &self.words[self.offsets().tags..]
    }

    /// The lists as vectors, to change their lengths (rare: a new or removed property,
    /// new tags) and then [`TwinLists::new`] again.
    fn parts(&self) -> (Vec<DeviceValue>, Vec<ServiceLeaf>, Vec<u32>) {
        (
            self.device().collect(),
            self.service().collect(),
            self.tags().to_vec(),
        )
    }

    /// Inserts a device value at `i` (where [`TwinLists::find_device`] put it).
    pub(crate) fn insert_device(&mut self, i: usize, value: DeviceValue) {
        let (mut device, service, tags) = self.parts();
        device.insert(i, value);
        *self = TwinLists::new(&device, &service, &tags);
    }

    /// Removes device value `i`.
    pub(crate) fn remove_device(&mut self, i: usize) -> DeviceValue {
        let (mut device, service, tags) = self.parts();
        let removed = device.remove(i);
        *self = TwinLists::new(&device, &service, &tags);
        removed
    }

    /// Inserts a service leaf at its place by id (replacing none: the caller removed
    /// any leaf with the same id).
    pub(crate) fn insert_service(&mut self, leaf: ServiceLeaf) {
        let (device, mut service, tags) = self.parts();
        let at = service.partition_point(|l| l.pid < leaf.pid);
        service.insert(at, leaf);
        *self = TwinLists::new(&device, &service, &tags);
    }

    /// Keeps the service leaves for which `keep` holds.
    pub(crate) fn retain_service(&mut self, keep: impl FnMut(&ServiceLeaf) -> bool) {
        let (device, mut service, tags) = self.parts();
        let before = service.len();
        service.retain(keep);
        if service.len() != before {
            *self = TwinLists::new(&device, &service, &tags);
        }
    }

    /// Replaces the tag ids (ascending).
    pub(crate) fn set_tags(&mut self, tags: &[u32]) {
        let (device, service, _) = self.parts();
        *self = TwinLists::new(&device, &service, tags);
    }

    /// Words held on the heap (0 for the empty lists).
    #[cfg(test)]
    fn heap_words(&self) -> usize {
        self.words.len()
    }
}

/// Binary search for `pid` among `len` ids read by `id_at`, ascending.
fn binary_search(len: usize, pid: u32, id_at: impl Fn(usize) -> u32) -> Result<usize, usize> {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match id_at(mid).cmp(&pid) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(mid),
        }
    }
    Err(lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted_unique(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v.dedup();
        v
    }

    proptest! {
        /// Random lists and edits agree with plain vectors.
        #[test]
        fn agrees_with_vectors(
            device in proptest::collection::vec((0u32..40, any::<u32>(), 0u64..4), 0..12),
            service in proptest::collection::vec((0u32..40, any::<u32>()), 0..8),
            tags in proptest::collection::vec(0u32..60, 0..6),
            edits in proptest::collection::vec((0u8..6, 0u32..40, any::<u32>(), 0u64..6), 0..20),
        ) {
            let ts = |ms: u64| Timestamp::from_millis(ms * 1_000);
            let mut d: Vec<DeviceValue> = Vec::new();
            for pid in sorted_unique(device.iter().map(|x| x.0).collect()) {
                let (_, vid, ms) = device.iter().find(|x| x.0 == pid).copied().unwrap_or_default();
                d.push(DeviceValue { pid, vid, ts: ts(ms) });
            }
            let mut s: Vec<ServiceLeaf> = sorted_unique(service.iter().map(|x| x.0).collect())
                .into_iter()
                .map(|pid| ServiceLeaf { pid, vid: pid.wrapping_mul(7) })
                .collect();
            let mut t = sorted_unique(tags);
            let mut lists = TwinLists::new(&d, &s, &t);
            for (op, pid, vid, ms) in edits {
                match op {
                    0 => match d.binary_search_by_key(&pid, |x| x.pid) {
                        Ok(i) => {
                            d[i].vid = vid;
                            d[i].ts = ts(ms);
                            prop_assert_eq!(lists.find_device(pid), Ok(i));
                            lists.set_device_at(i, vid, ts(ms));
                        }
                        Err(i) => {
                            let v = DeviceValue { pid, vid, ts: ts(ms) };
                            d.insert(i, v);
                            prop_assert_eq!(lists.find_device(pid), Err(i));
                            lists.insert_device(i, v);
                        }
                    },
                    1 => if let Ok(i) = d.binary_search_by_key(&pid, |x| x.pid) {
                        let removed = d.remove(i);
                        let got = lists.remove_device(i);
                        prop_assert_eq!((got.pid, got.vid, got.ts), (removed.pid, removed.vid, removed.ts));
                    },
                    2 => if s.binary_search_by_key(&pid, |x| x.pid).is_err() {
                        let leaf = ServiceLeaf { pid, vid };
                        let at = s.partition_point(|l| l.pid < pid);
                        s.insert(at, leaf);
                        lists.insert_service(leaf);
                    },
                    3 => {
                        s.retain(|l| l.pid != pid);
                        lists.retain_service(|l| l.pid != pid);
                    }
                    _ => {
                        t = sorted_unique(vec![pid, vid % 60, pid / 2]);
                        lists.set_tags(&t);
                    }
                }
                let got_d: Vec<_> = lists.device().map(|x| (x.pid, x.vid, x.ts)).collect();
                let want_d: Vec<_> = d.iter().map(|x| (x.pid, x.vid, x.ts)).collect();
                prop_assert_eq!(got_d, want_d);
                let got_s: Vec<_> = lists.service().map(|x| (x.pid, x.vid)).collect();
                let want_s: Vec<_> = s.iter().map(|x| (x.pid, x.vid)).collect();
                prop_assert_eq!(got_s, want_s);
                prop_assert_eq!(lists.tags(), &t[..]);
                for x in &s {
                    let i = lists.find_service(x.pid);
                    prop_assert!(i.is_ok());
                    prop_assert_eq!(lists.service_at(i.unwrap_or(0)).vid, x.vid);
                }
                // Times are shared: never more stored than values.
                let (nd, _, nt) = lists.counts();
                prop_assert!(nt <= nd);
                let empty = d.is_empty() && s.is_empty() && t.is_empty();
                prop_assert_eq!(lists.heap_words() == 0, empty);
            }
        }
    }
}
