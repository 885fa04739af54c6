//! A property's values in order, as a few sorted runs of value ids (a small log-structured
//! merge).
//!
//! Range lookups need the values in order; a balanced tree keyed by the values costs a
//! cache miss per comparison (the keys are shared strings on the heap) and about 1.5 µs
//! per insert at a million unique values, which alone would break the bulk-load target.
//! Here each entry is 16 bytes: an order-preserving 96-bit prefix of its value (64 bits,
//! then 32 more) and the value id. Comparisons decide on the prefix and read the value
//! only on a tie.
//!
//! New ids go into the newest (smallest) run; a batch arrives as one sorted run. The
//! runs are merged whenever the newest is more than a quarter of the one before it, so
//! there are O(log n) runs and each id is moved O(log n) times. Ranges are k-way merges
//! over the runs. Entries of removed values stay until a merge drops them (the caller
//! says which ids are still alive and frees the rest).

use std::cmp::Ordering;

/// One entry: the value's order prefix and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SortKey<P = u64> {
    /// Order-preserving: `a < b` implies `prefix(a) <= prefix(b)`, `a == b` equal prefixes.
    pub(crate) prefix: P,
    /// What follows `prefix` in the value's order (0 where nothing does), compared after
    /// it: it settles most of `prefix`'s ties (strings sharing a start: dates, serial
    /// numbers, versions) without reading the values. It fills what would be padding.
    pub(crate) more: u32,
    pub(crate) id: u32,
}

/// A run below this length takes single inserts in place.
const SMALL_RUN: usize = 256;

/// Entries sorted by value, as runs.
#[derive(Debug)]
pub(crate) struct SortedRuns<P = u64> {
    runs: Vec<Vec<SortKey<P>>>,
}

impl<P> Default for SortedRuns<P> {
    fn default() -> Self {
        SortedRuns { runs: Vec::new() }
    }
}

/// What the owner of the ids knows: their order (by the values they stand for) and
/// which are still wanted (a merge drops the others and reports them).
pub(crate) trait RunOrder {
    /// The order of two ids' values.
    fn cmp(&self, a: u32, b: u32) -> Ordering;
    /// Whether an id is still wanted.
    fn alive(&self, id: u32) -> bool;
}

/// Compares two entries: prefix first, then the ids' values.
fn order<P: Ord>(a: SortKey<P>, b: SortKey<P>, by: &impl RunOrder) -> Ordering {
    a.prefix
        .cmp(&b.prefix)
        .then(a.more.cmp(&b.more))
        .then_with(|| by.cmp(a.id, b.id))
}

impl<P: Ord + Copy> SortedRuns<P> {
    /// How many entries (live or not).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.runs.iter().map(Vec::len).sum()
    }

    /// The entries when they are one run (none counts as one, empty): a walk can then
    /// read them as a slice instead of merging.
    pub(crate) fn single_run(&self) -> Option<&[SortKey<P>]> {
        match &self.runs[..] {
            [] => Some(&[]),
            [run] => Some(run),
            _ => None,
        }
    }

    /// Adds one entry. Entries `by` no longer wants may be dropped by the merge this
    /// triggers; their ids are pushed to `dropped`.
    pub(crate) fn insert(&mut self, key: SortKey<P>, by: &impl RunOrder, dropped: &mut Vec<u32>) {
        match self.runs.last_mut() {
            Some(last) if last.len() < SMALL_RUN => {
                let at = last.partition_point(|k| order(*k, key, by) == Ordering::Less);
                last.insert(at, key);
            }
            _ => self.runs.push(vec![key]),
        }
        self.settle(by, dropped);
    }

    /// Adds a batch of entries (any order) as one run.
    pub(crate) fn insert_batch(
        &mut self,
        mut keys: Vec<SortKey<P>>,
        by: &impl RunOrder,
        dropped: &mut Vec<u32>,
    ) {
        if keys.is_empty() {
            return;
        }
        keys.sort_unstable_by(|a, b| order(*a, *b, by));
        self.runs.push(keys);
        self.settle(by, dropped);
    }

    /// Adds a batch of entries (any order) as one run, without merging: a bulk load
    /// pushes the id order's runs so, a batch at a time, and merges them all once at its
    /// end, with [`SortedRuns::settle_all`].
    pub(crate) fn push_run(&mut self, mut keys: Vec<SortKey<P>>, by: &impl RunOrder) {
        keys.sort_unstable_by(|a, b| order(*a, *b, by));
        self.runs.push(keys);
    }

    /// Merges the runs into one when there are more than two (a bulk load's batches):
    /// moved into one vector, each run freed as soon as it is moved, then sorted in
    /// place, so the merge needs little more memory than the entries themselves.
    pub(crate) fn settle_all(&mut self, by: &impl RunOrder, dropped: &mut Vec<u32>) {
        if self.runs.len() > 2 {
            let total = self.runs.iter().map(Vec::len).sum();
            let mut all = Vec::with_capacity(total);
            for run in self.runs.drain(..) {
                all.extend(run);
            }
            all.sort_unstable_by(|a, b| order(*a, *b, by));
            self.runs.push(all);
        }
        self.settle(by, dropped);
    }

    fn settle(&mut self, by: &impl RunOrder, dropped: &mut Vec<u32>) {
        while let [.., a, b] = &self.runs[..] {
            if b.len() * 4 <= a.len() {
                break;
            }
            self.merge_last_two(by, dropped);
        }
    }

    /// Merges every run into one, dropping entries that are no longer alive.
    pub(crate) fn compact(&mut self, by: &impl RunOrder, dropped: &mut Vec<u32>) {
        while self.runs.len() > 1 {
            self.merge_last_two(by, dropped);
        }
        if let Some(only) = self.runs.first_mut() {
            only.retain(|k| {
                let keep = by.alive(k.id);
                if !keep {
                    dropped.push(k.id);
                }
                keep
            });
        }
    }

    fn merge_last_two(&mut self, by: &impl RunOrder, dropped: &mut Vec<u32>) {
        let b = self.runs.pop().expect("two runs");
        let a = self.runs.pop().expect("two runs");
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        let mut keep = |k: SortKey<P>, out: &mut Vec<SortKey<P>>| {
            if by.alive(k.id) {
                out.push(k);
            } else {
                dropped.push(k.id);
            }
        };
        while i < a.len() && j < b.len() {
            if order(a[i], b[j], by) == Ordering::Greater {
                keep(b[j], &mut out);
                j += 1;
            } else {
                keep(a[i], &mut out);
                i += 1;
            }
        }
        for &k in a[i..].iter().chain(&b[j..]) {
            keep(k, &mut out);
        }
        if !out.is_empty() {
            self.runs.push(out);
        }
    }

    /// The entries `k` with `!before_start(k)` and `before_end(k)`, in order, from every
    /// run. Both predicates must be monotone over the order (true, then false).
    pub(crate) fn range<'a, B: RunOrder>(
        &'a self,
        before_start: impl Fn(SortKey<P>) -> bool,
        before_end: impl Fn(SortKey<P>) -> bool,
        by: B,
    ) -> Merge<'a, B, P> {
        let slices = self
            .runs
            .iter()
            .filter_map(|run| {
                let start = run.partition_point(|k| before_start(*k));
                let end = run.partition_point(|k| before_end(*k));
                (start < end).then(|| &run[start..end])
            })
            .collect();
        Merge {
            slices,
            by,
            streak: None,
        }
    }
}

/// A k-way merge over sorted slices, from both ends.
pub(crate) struct Merge<'a, B, P = u64> {
    slices: Vec<&'a [SortKey<P>]>,
    by: B,
    /// From the front: the slice holding the smallest entry, and the smallest front of
    /// the others. Entries of that slice below it come out with one comparison each.
    streak: Option<(usize, Option<SortKey<P>>)>,
}

impl<B: RunOrder, P: Ord + Copy> Iterator for Merge<'_, B, P> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if let Some((b, limit)) = self.streak {
            let front = self.slices[b][0];
            if limit.is_none_or(|l| order(front, l, &self.by) == Ordering::Less) {
                return Some(self.take_front(b));
            }
        }
        // Find the smallest front and the runner-up.
        let mut best: Option<usize> = None;
        let mut second: Option<SortKey<P>> = None;
        for (i, s) in self.slices.iter().enumerate() {
            match best {
                Some(b) if order(self.slices[b][0], s[0], &self.by) != Ordering::Greater => {
                    if second.is_none_or(|x| order(s[0], x, &self.by) == Ordering::Less) {
                        second = Some(s[0]);
                    }
                }
                _ => {
                    if let Some(b) = best {
                        second = Some(self.slices[b][0]);
                    }
                    best = Some(i);
                }
            }
        }
        let b = best?;
        self.streak = Some((b, second));
        Some(self.take_front(b))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.slices.iter().map(|s| s.len()).sum();
        (n, Some(n))
    }
}

impl<B, P: Copy> Merge<'_, B, P> {
    /// Takes slice `b`'s first entry; an emptied slice leaves (and ends the streak).
    fn take_front(&mut self, b: usize) -> u32 {
        let id = self.slices[b][0].id;
        self.slices[b] = &self.slices[b][1..];
        if self.slices[b].is_empty() {
            self.slices.swap_remove(b);
            self.streak = None;
        }
        id
    }
}

impl<B: RunOrder, P: Ord + Copy> DoubleEndedIterator for Merge<'_, B, P> {
    fn next_back(&mut self) -> Option<u32> {
        // Taking from the back may take the streak's limit: end the streak.
        self.streak = None;
        let last = |s: &[SortKey<P>]| s[s.len() - 1];
        let mut best: Option<usize> = None;
        for (i, s) in self.slices.iter().enumerate() {
            best = match best {
                Some(b) if order(last(self.slices[b]), last(s), &self.by) != Ordering::Less => {
                    Some(b)
                }
                _ => Some(i),
            };
        }
        let b = best?;
        let s = self.slices[b];
        let id = s[s.len() - 1].id;
        self.slices[b] = &s[..s.len() - 1];
        if self.slices[b].is_empty() {
            self.slices.swap_remove(b);
        }
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Ids are their own values; ids divisible by `dead_mod` are no longer wanted (none
    /// when it is 0).
    #[derive(Clone, Copy)]
    struct Plain {
        dead_mod: u32,
    }

    impl RunOrder for Plain {
        fn cmp(&self, a: u32, b: u32) -> Ordering {
            a.cmp(&b)
        }
        fn alive(&self, id: u32) -> bool {
            self.dead_mod == 0 || !id.is_multiple_of(self.dead_mod)
        }
    }

    proptest! {
        /// Single and batch inserts with coarse prefixes (many ties), then ranges both ways,
        /// agree with a sorted set; dead entries are dropped only through `dropped`.
        #[test]
        fn runs_agree_with_a_sorted_set(
            ops in proptest::collection::vec(proptest::collection::vec(0u32..5000, 1..40), 1..60),
            lo in 0u32..5000, hi in 0u32..5000, dead_mod in 2u32..9,
        ) {
            // id = value; prefix = value / 64 (ties resolved by cmp).
            let by = Plain { dead_mod };
            let key = |v: u32| SortKey { prefix: u64::from(v / 64), more: 0, id: v };
            let mut runs = SortedRuns::default();
            let mut all = BTreeSet::new();
            let mut dropped = Vec::new();
            for batch in ops {
                let fresh: Vec<u32> = batch.into_iter().filter(|v| all.insert(*v)).collect();
                if fresh.len() == 1 {
                    runs.insert(key(fresh[0]), &by, &mut dropped);
                } else {
                    runs.insert_batch(fresh.iter().map(|&v| key(v)).collect(), &by, &mut dropped);
                }
            }
            for d in &dropped {
                prop_assert!(!by.alive(*d));
                prop_assert!(all.remove(d));
            }
            prop_assert_eq!(runs.len(), all.len());
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            let got: Vec<u32> = runs.range(|k| k.id < lo, |k| k.id <= hi, by).collect();
            let want: Vec<u32> = all.range(lo..=hi).copied().collect();
            prop_assert_eq!(&got, &want);
            let back: Vec<u32> = runs.range(|k| k.id < lo, |k| k.id <= hi, by).rev().collect();
            prop_assert_eq!(back, want.iter().rev().copied().collect::<Vec<_>>());
            runs.compact(&by, &mut dropped);
            let live: Vec<u32> = runs.range(|_| false, |_| true, by).collect();
            let want_live: Vec<u32> = all.iter().copied().filter(|&v| by.alive(v)).collect();
            prop_assert_eq!(live, want_live);
        }
    }

    #[test]
    fn mixed_front_and_back_meet_once() {
        let by = Plain { dead_mod: 0 };
        let mut runs = SortedRuns::default();
        let mut dropped = Vec::new();
        runs.insert_batch(
            (0..100)
                .step_by(2)
                .map(|v| SortKey {
                    prefix: 0,
                    more: 0,
                    id: v,
                })
                .collect(),
            &by,
            &mut dropped,
        );
        for v in (1..100).step_by(2) {
            runs.insert(
                SortKey {
                    prefix: 0,
                    more: 0,
                    id: v,
                },
                &by,
                &mut dropped,
            );
        }
        let mut it = runs.range(|_| false, |_| true, by);
        let mut seen = Vec::new();
        loop {
            match (it.next(), it.next_back()) {
                (Some(a), Some(b)) => seen.extend([a, b]),
                (Some(a), None) | (None, Some(a)) => seen.push(a),
                (None, None) => break,
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }
}
