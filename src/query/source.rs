//! What the executor needs from the thing it queries: [`IndexedSource`].
//!
//! The registry implements it for twins (`registry_source.rs`); a job-history store can
//! implement it for jobs and reuse the whole parser, optimizer and executor.

use std::borrow::Cow;
use std::ops::Bound;

use roaring::RoaringBitmap;

use super::ast::{Literal, QueryProperty};
use crate::registry::SlotSet;
use crate::twin::Scalar;

/// The slots holding one value: one slot, a borrowed bitmap, or one the source built.
#[derive(Clone, Debug)]
pub enum Slots<'a> {
    /// Exactly one slot.
    One(u32),
    /// A bitmap the source holds.
    Borrowed(&'a RoaringBitmap),
    /// A bitmap the source built for this call (for properties it does not index).
    Owned(RoaringBitmap),
}

impl<'a> From<SlotSet<'a>> for Slots<'a> {
    fn from(s: SlotSet<'a>) -> Self {
        match s {
            SlotSet::One(slot) => Slots::One(slot),
            SlotSet::Bitmap(b) => Slots::Borrowed(b),
        }
    }
}

impl Slots<'_> {
    /// How many slots.
    pub fn len(&self) -> u64 {
        match self {
            Slots::One(_) => 1,
            Slots::Borrowed(b) => b.len(),
            Slots::Owned(b) => b.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `slot` is in the set.
    pub fn contains(&self, slot: u32) -> bool {
        match self {
            Slots::One(s) => *s == slot,
            Slots::Borrowed(b) => b.contains(slot),
            Slots::Owned(b) => b.contains(slot),
        }
    }

    /// The bitmap, if this is one.
    pub fn bitmap(&self) -> Option<&RoaringBitmap> {
        match self {
            Slots::One(_) => None,
            Slots::Borrowed(b) => Some(b),
            Slots::Owned(b) => Some(b),
        }
    }

    /// `|self ∩ other|`, without allocating.
    pub fn intersection_len(&self, other: &RoaringBitmap) -> u64 {
        match self {
            Slots::One(s) => other.contains(*s) as u64,
            Slots::Borrowed(b) => b.intersection_len(other),
            Slots::Owned(b) => b.intersection_len(other),
        }
    }

    /// `self ∩ other`.
    pub fn intersection(&self, other: &RoaringBitmap) -> RoaringBitmap {
        match self {
            Slots::One(s) => {
                let mut r = RoaringBitmap::new();
                if other.contains(*s) {
                    r.insert(*s);
                }
                r
            }
            Slots::Borrowed(b) => *b & other,
            Slots::Owned(b) => b & other,
        }
    }

    /// `acc |= self`.
    pub fn union_into(&self, acc: &mut RoaringBitmap) {
        match self {
            Slots::One(s) => {
                acc.insert(*s);
            }
            Slots::Borrowed(b) => *acc |= *b,
            Slots::Owned(b) => *acc |= b,
        }
    }

    /// `acc -= self`.
    pub fn remove_from(&self, acc: &mut RoaringBitmap) {
        match self {
            Slots::One(s) => {
                acc.remove(*s);
            }
            Slots::Borrowed(b) => *acc -= *b,
            Slots::Owned(b) => *acc -= b,
        }
    }
}

/// What a literal compared with a property means to the source
/// ([`IndexedSource::comparand`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Comparand {
    /// Compare with this value, in [`Scalar`]'s order.
    Value(Scalar),
    /// A value no document can hold, strictly between two values a document can: `below`,
    /// the greatest one under it, and `above`, the least one over it (`None`: there is
    /// none on that side). `eq` matches nothing, `ne` every document with the property,
    /// `gt`/`gte` the values from `above` on, `lt`/`lte` those up to `below`; in an
    /// `in`/`nin` list it is left out (it equals nothing). Both bounds must be of one type.
    Between {
        /// The greatest value a document can hold beneath the literal.
        below: Option<Scalar>,
        /// The least value a document can hold above the literal.
        above: Option<Scalar>,
    },
}

/// An ordered walk over a property's distinct values with their slots.
pub type ValueWalk<'a> = Box<dyn DoubleEndedIterator<Item = (Cow<'a, Scalar>, Slots<'a>)> + 'a>;

/// A collection of documents (twins, jobs) in dense `u32` slots with indexes the query
/// executor reads. Implement it to make something queryable with the JSON query
/// expression.
///
/// # What a source must provide
///
/// - **Slots**: every document has a dense `u32` slot; [`universe`](Self::universe) is the
///   bitmap of live slots. Every bitmap the source returns is a subset of it.
/// - **Ids**: every document has a unique string id ([`id_of`](Self::id_of)), the tiebreak
///   of every sort and the default result order; [`ids_in_order`](Self::ids_in_order) walks
///   ids in ascending byte order from a point, so pages can re-seek.
/// - **Properties**: [`resolve`](Self::resolve) turns a query property (name + type) into an
///   interned handle, or `None` when no document can have it (the query then treats it as
///   absent everywhere, unless the source's fixed schema refuses the name: see
///   [`knows`](Self::knows)). Tags (`{"name":"tags","type":"default"}`) never reach
///   `resolve`; they go to [`tag_bitmap`](Self::tag_bitmap).
/// - **Literals** compared with a property go through [`comparand`](Self::comparand)
///   before planning (by default the literal as written). A source with a fixed schema
///   names the type each property holds ([`value_type`](Self::value_type)), and a
///   literal of another type is then an error rather than a match with nothing.
/// - **Values** are [`Scalar`]s in `Scalar`'s total order (booleans < numbers < strings;
///   numbers compare numerically, `1 == 1.0`). For each property the source answers: the
///   slots with one value ([`value_slots`](Self::value_slots)), the values within bounds in
///   order with their slots ([`values_in_range`](Self::values_in_range), reversible), the
///   slots where it exists ([`exists_bitmap`](Self::exists_bitmap); a property can exist
///   without a scalar value, e.g. a nested object), and one slot's value
///   ([`value_of`](Self::value_of)). A source may answer any of these by scanning, but the
///   answers must agree with each other and with `value_of`.
/// - **Output**: the whole document ([`document`](Self::document)) and a projection of it
///   ([`project`](Self::project)), each anything that serialises to the document's JSON.
///
/// Consistency: the executor borrows the source for a whole query, so a source behind a
/// lock (like [`SharedRegistry`](crate::registry::SharedRegistry)) answers each query from
/// one state, and a query that starts after a write returned sees it.
pub trait IndexedSource {
    /// An interned property handle.
    type Property: Copy + Eq + Ord + std::hash::Hash + std::fmt::Debug;
    /// A whole document as results carry it: ideally a borrowed view, so returning a
    /// page copies nothing.
    type Document<'a>: serde::Serialize
    where
        Self: 'a;

    /// A projection resolved for a page ([`projection`](Self::projection)).
    type Projection;
    /// A projected document as results carry it.
    type Projected<'a>: serde::Serialize
    where
        Self: 'a;

    /// Every live slot.
    fn universe(&self) -> &RoaringBitmap;
    /// The handle of a (non-tag) property, or `None` if no document can have it.
    fn resolve(&self, property: &QueryProperty) -> Option<Self::Property>;
    /// The slots carrying a tag (`None`: no document has it).
    fn tag_bitmap(&self, tag: &str) -> Option<&RoaringBitmap>;
    /// The slots where `property` equals `value`.
    fn value_slots(&self, property: Self::Property, value: &Scalar) -> Option<Slots<'_>>;
    /// The distinct values of `property` within bounds, ascending, with their slots.
    fn values_in_range<'a>(
        &'a self,
        property: Self::Property,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
    ) -> ValueWalk<'a>;
    /// How many distinct values `property` has (a cost hint; an estimate is fine).
    fn distinct_values(&self, property: Self::Property) -> usize;

    /// The slots of `within` whose value of `property` lies within the bounds, if the
    /// source can find them by looking each slot's value up (a column) — cheaper than
    /// [`values_in_range`](Self::values_in_range) when `within` is much smaller than the
    /// range. `None` (the default) makes the executor union the range's value slots.
    fn filter_range(
        &self,
        property: Self::Property,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
        within: &RoaringBitmap,
    ) -> Option<RoaringBitmap> {
        let _ = (property, lo, hi, within);
        None
    }

    /// `rows` grouped by their value of `property`, in ascending value order (rows
    /// without a scalar value left out), if the source can group them by looking each
    /// row's value up (a column). `None` (the default) makes sorted pages intersect each
    /// value's slots with the rows instead.
    fn group_rows(
        &self,
        property: Self::Property,
        rows: &RoaringBitmap,
    ) -> Option<Vec<(Cow<'_, Scalar>, RoaringBitmap)>> {
        let _ = (property, rows);
        None
    }

    /// The length of [`filter_range`](Self::filter_range)'s answer, without building it.
    fn count_range(
        &self,
        property: Self::Property,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
        within: &RoaringBitmap,
    ) -> Option<u64> {
        self.filter_range(property, lo, hi, within).map(|b| b.len())
    }
    /// The slots where `property` exists.
    fn exists_bitmap(&self, property: Self::Property) -> Cow<'_, RoaringBitmap>;
    /// The value of `property` in `slot` (`None`: absent or not a scalar).
    fn value_of(&self, slot: u32, property: Self::Property) -> Option<Cow<'_, Scalar>>;
    /// The id of the document in a live `slot`.
    fn id_of(&self, slot: u32) -> &str;
    /// Ids with their slots in ascending id order, strictly after `after` if given.
    fn ids_in_order<'a>(
        &'a self,
        after: Option<&str>,
    ) -> Box<dyn Iterator<Item = (&'a str, u32)> + 'a>;
    /// The slots of [`ids_in_order`](Self::ids_in_order) alone (a source may skip making
    /// the ids).
    fn slots_in_id_order<'a>(&'a self, after: Option<&str>) -> Box<dyn Iterator<Item = u32> + 'a> {
        Box::new(self.ids_in_order(after).map(|(_, slot)| slot))
    }
    /// Appends up to `n` slots of [`slots_in_id_order`](Self::slots_in_id_order) to
    /// `out`: what a first page in id order walks, a chunk at a time (a source may copy
    /// them faster than it iterates).
    fn fill_id_order(&self, after: Option<&str>, n: usize, out: &mut Vec<u32>) {
        out.extend(self.slots_in_id_order(after).take(n));
    }
    /// The whole document in `slot` (`None` if the slot is not live).
    fn document(&self, slot: u32) -> Option<Self::Document<'_>>;
    /// The document in `slot` reduced to its id and the projection's properties (`None`
    /// if the slot is not live): ideally a view that serialises straight from the
    /// source, so a narrow projection costs less than the whole document.
    fn project<'a>(
        &'a self,
        slot: u32,
        projection: &Self::Projection,
    ) -> Option<Self::Projected<'a>>;
    /// The projected properties resolved once for a whole page (what every row shares).
    fn projection(&self, properties: &[QueryProperty]) -> Self::Projection;
    /// Which kind of document this source holds, bound into continuation tokens: a token
    /// handed out over one kind of source is refused over another
    /// ([`QueryError::ContinuationMismatch`](super::QueryError::ContinuationMismatch)),
    /// even for the same query text, since its id and sort values mean nothing there.
    /// Twins are `""` (their tokens are as they always were); every other kind names
    /// itself (the job history is `"jobHistory"`).
    fn token_scope(&self) -> &'static str {
        ""
    }

    /// What a literal (`value`, as a scalar) compared with `property` (`eq ne lt lte gt
    /// gte`, an `in`/`nin` list item) means, before the filter is planned: every execution
    /// strategy then sees the same value. The default is the value as written; a source
    /// whose values have a canonical form (the job history's times) maps the literals
    /// that name a value in another form to it.
    fn comparand(&self, property: Self::Property, value: Scalar) -> Comparand {
        let _ = property;
        Comparand::Value(value)
    }

    /// Whether the source's schema has `property` (tags included). A source with an open
    /// schema (twins: any name may be set on some twin) knows every name, the default; a
    /// source with a fixed schema (the job history) says `false` to a name outside it, and
    /// a query naming one anywhere (filter, projection, sort, aggregate keys and columns)
    /// is refused with [`QueryError::UnknownProperty`](super::QueryError::UnknownProperty)
    /// (which says the clause and, for a parsed query, where the property was written)
    /// instead of treating it as missing everywhere.
    fn knows(&self, property: &QueryProperty) -> bool {
        let _ = property;
        true
    }

    /// The one type every value of `property` (a name [`knows`](Self::knows) accepts,
    /// never tags) has, if the source's schema fixes it. `None` (the default, an open
    /// schema like twins') says any type may occur, and a literal of a type no document
    /// holds simply matches nothing (`x gt 5` over string values is empty). With `Some(t)`, a query comparing `property` with a non-null
    /// literal of another type (`eq ne lt lte gt gte`, any `in`/`nin` item, at any depth)
    /// is refused with [`QueryError::LiteralType`](super::QueryError::LiteralType), and
    /// a `sum` or `avg` column over it, unless `t` is [`ScalarType::Number`], with
    /// [`QueryError::AggregateType`](super::QueryError::AggregateType), instead of
    /// answering nothing or `null`. `eq null` and `ne null` stay allowed (they ask whether
    /// the property is missing, not what it holds), as do sorting, grouping, `count`,
    /// `min` and `max`, which work on values of every type.
    fn value_type(&self, property: &QueryProperty) -> Option<ScalarType> {
        let _ = property;
        None
    }
}

/// A query literal as a twin scalar.
pub(crate) fn scalar(l: &Literal) -> Scalar {
    match l {
        Literal::Bool(b) => Scalar::Bool(*b),
        Literal::Number(n) => Scalar::float(*n).unwrap_or(Scalar::from(0)),
        Literal::Integer(i) => Scalar::from(*i),
        Literal::Unsigned(u) => Scalar::from(*u),
        Literal::String(s) => Scalar::from(s.as_str()),
    }
}

/// The type of a value or literal: which segment of the scalar order it is in
/// (booleans < numbers < strings). What a fixed-schema property holds
/// ([`IndexedSource::value_type`]), and what a literal is, in
/// [`QueryError::LiteralType`](super::QueryError::LiteralType).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarType {
    /// `true` or `false`.
    Bool,
    /// A number (integer or float).
    Number,
    /// A string.
    String,
}

impl std::fmt::Display for ScalarType {
    /// `boolean`, `number` or `string`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScalarType::Bool => "boolean",
            ScalarType::Number => "number",
            ScalarType::String => "string",
        })
    }
}

impl ScalarType {
    /// The type of a literal (every number literal is a [`ScalarType::Number`]).
    pub fn of_literal(l: &Literal) -> ScalarType {
        match l {
            Literal::Bool(_) => ScalarType::Bool,
            Literal::Number(_) | Literal::Integer(_) | Literal::Unsigned(_) => ScalarType::Number,
            Literal::String(_) => ScalarType::String,
        }
    }

    pub(crate) fn of(s: &Scalar) -> ScalarType {
        match s {
            Scalar::Bool(_) => ScalarType::Bool,
            Scalar::Number(_) => ScalarType::Number,
            Scalar::String(_) => ScalarType::String,
        }
    }

    /// The bounds of this type's segment of the total order.
    pub(crate) fn segment(self) -> (Bound<Scalar>, Bound<Scalar>) {
        match self {
            ScalarType::Bool => (Bound::Unbounded, Bound::Included(Scalar::Bool(true))),
            ScalarType::Number => (
                Bound::Excluded(Scalar::Bool(true)),
                Bound::Excluded(Scalar::from("")),
            ),
            ScalarType::String => (Bound::Included(Scalar::from("")), Bound::Unbounded),
        }
    }
}
