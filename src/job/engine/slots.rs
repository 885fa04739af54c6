//! Parents or children by position.
//!
//! Positions only grow, so a position (and the store key made from it) never changes
//! meaning. History retention drops the oldest records from the front; their positions
//! are gone for good and indexing one of them is a bug (it panics, like an index out of
//! bounds). A `VecDeque` keeps dropping from the front O(1) per record.

use std::collections::VecDeque;
use std::ops::{Index, IndexMut, Range};

pub(crate) struct Slots<T> {
    /// The position of `items[0]`.
    base: u32,
    items: VecDeque<T>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            base: 0,
            items: VecDeque::new(),
        }
    }
}

impl<T> Slots<T> {
    /// The oldest position still held.
    pub(crate) fn start(&self) -> u32 {
        self.base
    }

    /// The position the next record gets.
    pub(crate) fn end(&self) -> u32 {
        self.base + self.items.len() as u32
    }

    /// Positions held.
    pub(crate) fn range(&self) -> Range<u32> {
        self.start()..self.end()
    }

    /// Records held.
    pub(crate) fn count(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Starts an empty sequence at `base` (a restore whose oldest records were dropped).
    pub(crate) fn set_base(&mut self, base: u32) {
        debug_assert!(self.items.is_empty());
        self.base = base;
    }

    pub(crate) fn push(&mut self, item: T) {
        self.items.push_back(item);
    }

    pub(crate) fn reserve(&mut self, n: usize) {
        self.items.reserve(n);
    }

    pub(crate) fn front(&self) -> Option<&T> {
        self.items.front()
    }

    /// Drops the oldest record.
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        self.base += 1;
        Some(item)
    }

    /// Drops every record before `pos`.
    pub(crate) fn drop_before(&mut self, pos: u32) {
        let n = (pos.saturating_sub(self.base) as usize).min(self.items.len());
        self.items.drain(..n);
        self.base += n as u32;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.items.iter()
    }

    /// Records with their positions.
    pub(crate) fn enumerate(&self) -> impl Iterator<Item = (u32, &T)> + '_ {
        (self.base..).zip(self.items.iter())
    }
}

impl<T> Index<usize> for Slots<T> {
    type Output = T;
    fn index(&self, pos: usize) -> &T {
        &self.items[pos - self.base as usize]
    }
}

impl<T> IndexMut<usize> for Slots<T> {
    fn index_mut(&mut self, pos: usize) -> &mut T {
        &mut self.items[pos - self.base as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn positions_survive_dropping_the_front() {
        let mut s = Slots::default();
        for i in 0..5u32 {
            s.push(i * 10);
        }
        s.drop_before(2);
        assert_eq!(s.range(), 2..5);
        assert_eq!(s[3], 30);
        assert_eq!(s.pop_front(), Some(20));
        assert_eq!(s.enumerate().collect::<Vec<_>>(), vec![(3, &30), (4, &40)]);
        s.drop_before(100);
        assert!(s.is_empty());
        assert_eq!(s.end(), 5);
    }
}
