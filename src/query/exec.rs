//! The bitmap executor: evaluates a [`Plan`] over an [`IndexedSource`] with a universe
//! threaded through every AND (children ordered by estimated cardinality, early exit on
//! empty), then sorts, pages, projects or aggregates.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use roaring::{MultiOps, RoaringBitmap};

use super::aggregate::{ColumnAcc, Groups};
use super::ast::{
    AggregateOperator, ComparisonValue, Filter, Literal, PropertyType, QueryExpression,
    QueryProperty, SortOrder,
};
use super::plan::{Plan, lower, within};
use super::result::{
    Cursor, MAX_PAGE_SIZE, QueryError, QueryOptions, QueryResult, ResultItem, Strategy, fingerprint,
};
use super::source::{IndexedSource, ScalarType, Slots};
use crate::registry::IdBits;
use crate::twin::Scalar;

/// Runs a query expression against a source: one page of documents (or all aggregate
/// rows), in the preview's envelope.
///
/// ```
/// use twinhub::query::{execute, parse, QueryOptions};
/// use twinhub::registry::Registry;
/// use twinhub::twin::Twin;
/// use twinhub::{DeviceId, Timestamp};
///
/// let mut registry = Registry::new();
/// for (id, fw) in [("a", "1.0"), ("b", "2.0"), ("c", "1.0")] {
///     registry
///         .create(Twin::new(DeviceId::new(id).unwrap()).with_device_property(
///             "FirmwareVersion",
///             fw,
///             Timestamp::from_millis(0),
///         ))
///         .unwrap();
/// }
/// let q = parse(r#"{"filter": {"type": "comparison", "comparisonOperator": "eq",
///     "property": {"name": "FirmwareVersion", "type": "device"}, "value": "1.0"}}"#).unwrap();
/// let page = execute(&registry, &q, &QueryOptions::default()).unwrap();
/// let json = serde_json::to_value(&page).unwrap();
/// assert_eq!(json["Result"][1]["deviceId"], "c");
/// ```
pub fn execute<'s, S: IndexedSource + ?Sized>(
    source: &'s S,
    expr: &QueryExpression,
    options: &QueryOptions,
) -> Result<QueryResult<S::Document<'s>, S::Projected<'s>>, QueryError> {
    let (fp, cursor) = check(expr, options, source.token_scope())?;
    check_schema(source, expr)?;
    let exec = Executor {
        source,
        strategy: options.strategy,
    };
    let plan = lower(expr.filter.as_ref(), source);
    if expr.aggregate.is_none() && expr.sort.is_empty() {
        let after = cursor.as_ref().map(|c| c.id.as_str());
        if let Some(page) = exec.first_in_id_order(&plan, after, options.page_size + 1) {
            return Ok(finish_page(source, expr, fp, page, options.page_size));
        }
    }
    let rows = exec.eval(&plan, source.universe());
    if let Some(aggregation) = &expr.aggregate {
        let rows = exec.aggregate(&rows, aggregation, &expr.sort)?;
        return Ok(QueryResult {
            result: Vec::new(),
            aggregate_result: rows,
            continuation: None,
        });
    }
    let keys: Vec<(Option<S::Property>, SortOrder)> = expr
        .sort
        .iter()
        .map(|k| (source.resolve(&k.property), k.order))
        .collect();
    let page = exec.page(&rows, &keys, cursor.as_ref(), options.page_size + 1);
    Ok(finish_page(source, expr, fp, page, options.page_size))
}

/// The result of a page found with one entry beyond `page_size` if there are more: the
/// continuation points at the last row kept.
fn finish_page<'s, S: IndexedSource + ?Sized>(
    source: &'s S,
    expr: &QueryExpression,
    fp: u64,
    mut page: Vec<Entry>,
    page_size: usize,
) -> QueryResult<S::Document<'s>, S::Projected<'s>> {
    let continuation = if page.len() > page_size {
        page.truncate(page_size);
        page.last().map(|(slot, keys)| {
            Cursor {
                fingerprint: fp,
                keys: keys.clone(),
                id: source.id_of(*slot).to_owned(),
            }
            .encode()
        })
    } else {
        None
    };
    let projection = match &expr.project {
        Some(p) if !p.all => Some(source.projection(&p.properties)),
        _ => None,
    };
    let result = page
        .into_iter()
        .filter_map(|(slot, _)| match &projection {
            Some(p) => source.project(slot, p).map(ResultItem::Projected),
            None => source.document(slot).map(ResultItem::Document),
        })
        .collect();
    QueryResult {
        result,
        aggregate_result: Vec::new(),
        continuation,
    }
}

/// Validates the expression and the options; returns the query's fingerprint (of its
/// canonical text, over the source kind `scope`: see [`IndexedSource::token_scope`]) and
/// the decoded cursor.
pub(crate) fn check(
    expr: &QueryExpression,
    options: &QueryOptions,
    scope: &str,
) -> Result<(u64, Option<Cursor>), QueryError> {
    expr.validate()?;
    if options.page_size == 0 || options.page_size > MAX_PAGE_SIZE {
        return Err(QueryError::PageSize {
            requested: options.page_size,
            max: MAX_PAGE_SIZE,
        });
    }
    let text = expr.to_string();
    // A canonical text starts with '{', so a scoped text never equals an unscoped one.
    let fp = if scope.is_empty() {
        fingerprint(&text)
    } else {
        fingerprint(&format!("{scope}\n{text}"))
    };
    let cursor = match &options.continuation {
        None => None,
        Some(token) => {
            let c = Cursor::decode(token)?;
            if c.fingerprint != fp || c.keys.len() != expr.sort.len() {
                return Err(QueryError::ContinuationMismatch);
            }
            Some(c)
        }
    };
    Ok((fp, cursor))
}

/// How many documents match the expression's filter, answered from bitmap
/// intersections without materialising any document.
pub fn count<S: IndexedSource + ?Sized>(
    source: &S,
    expr: &QueryExpression,
) -> Result<u64, QueryError> {
    count_with(source, expr, Strategy::Auto)
}

/// [`count`] with a forced [`Strategy`]; tests check each one against the naive
/// evaluator. Not part of the stable API.
#[doc(hidden)]
pub fn count_with<S: IndexedSource + ?Sized>(
    source: &S,
    expr: &QueryExpression,
    strategy: Strategy,
) -> Result<u64, QueryError> {
    let plan = plan(source, expr)?;
    let executor = Executor { source, strategy };
    Ok(executor.count(&plan, source.universe()))
}

/// The slots whose documents match the expression's filter, as a bitmap: what a job's
/// target set is frozen from, without materialising any document.
pub fn matching_slots<S: IndexedSource + ?Sized>(
    source: &S,
    expr: &QueryExpression,
) -> Result<RoaringBitmap, QueryError> {
    let plan = plan(source, expr)?;
    Ok(auto_executor(source).eval(&plan, source.universe()))
}

fn auto_executor<S: IndexedSource + ?Sized>(source: &S) -> Executor<'_, S> {
    Executor {
        source,
        strategy: Strategy::Auto,
    }
}

/// The lowered, normalised plan of an expression's filter (for inspection and tests).
pub fn plan<S: IndexedSource + ?Sized>(
    source: &S,
    expr: &QueryExpression,
) -> Result<Plan<S::Property>, QueryError> {
    expr.validate()?;
    check_schema(source, expr)?;
    Ok(lower(expr.filter.as_ref(), source))
}

/// Refuses a (validated) expression naming, anywhere, a property `source` does not know
/// ([`IndexedSource::knows`]), comparing a property with a literal of a type it never
/// holds, or summing or averaging one that holds no numbers
/// ([`IndexedSource::value_type`]): the first mistake in the text's order.
fn check_schema<S: IndexedSource + ?Sized>(
    source: &S,
    expr: &QueryExpression,
) -> Result<(), QueryError> {
    let known = |place: &'static str| {
        move |p: &QueryProperty| {
            if source.knows(p) {
                Ok(())
            } else {
                Err(QueryError::UnknownProperty {
                    name: p.name.clone(),
                    kind: p.kind,
                    place,
                    origin: p.origin,
                })
            }
        }
    };
    // The type a fixed schema gives a (known) property; tags are no value.
    let holds = |p: &QueryProperty| {
        if p.is_tags() {
            return None;
        }
        source.value_type(p)
    };
    let mut stack: Vec<&Filter> = expr.filter.iter().collect();
    while let Some(f) = stack.pop() {
        match f {
            Filter::Logical(l) => stack.extend(l.filters.iter().rev()),
            Filter::Comparison(c) => {
                known("filter")(&c.property)?;
                let Some(holds) = holds(&c.property) else {
                    continue;
                };
                // `null` asks whether the property is missing, whatever it holds.
                let literals: &[Literal] = match &c.value {
                    ComparisonValue::Null => &[],
                    ComparisonValue::Scalar(l) => std::slice::from_ref(l),
                    ComparisonValue::List(items) => items,
                };
                if let Some(literal) = literals
                    .iter()
                    .map(ScalarType::of_literal)
                    .find(|t| *t != holds)
                {
                    return Err(QueryError::LiteralType {
                        name: c.property.name.clone(),
                        kind: c.property.kind,
                        holds,
                        literal,
                        origin: c.value_origin,
                    });
                }
            }
        }
    }
    if let Some(p) = expr.project.as_ref().filter(|p| !p.all) {
        p.properties.iter().try_for_each(known("projection"))?;
    }
    if let Some(a) = &expr.aggregate {
        a.keys.iter().try_for_each(known("aggregate key"))?;
        for c in &a.columns {
            let Some(p) = &c.property else { continue };
            known("aggregate column")(p)?;
            if matches!(c.operator, AggregateOperator::Sum | AggregateOperator::Avg)
                && let Some(holds) = holds(p).filter(|t| *t != ScalarType::Number)
            {
                return Err(QueryError::AggregateType {
                    column: c.column_name.clone(),
                    operator: c.operator,
                    name: p.name.clone(),
                    kind: p.kind,
                    holds,
                });
            }
        }
    }
    // An `aggregated` sort key names a column, which validation checked.
    expr.sort
        .iter()
        .map(|k| &k.property)
        .filter(|p| p.kind != PropertyType::Aggregated)
        .try_for_each(known("sort"))
}

/// A range step looks slots up in a column when the slots left are fewer than the
/// range's slots divided by this.
const RANGE_COLUMN_FACTOR: u64 = 4;

/// The smallest chunk of the id order [`Executor::first_in_id_order`] evaluates at once.
const MIN_CHUNK: u64 = 1024;

/// A sort entry: a slot and its sort key values.
type Entry = (u32, Vec<Option<Scalar>>);

/// Compares sort key tuples: missing values last, then each key in its order.
pub(crate) fn cmp_keys(
    a: &[Option<Scalar>],
    b: &[Option<Scalar>],
    orders: &[SortOrder],
) -> Ordering {
    for ((x, y), order) in a.iter().zip(b).zip(orders) {
        let o = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => match order {
                SortOrder::Asc => x.cmp(y),
                SortOrder::Desc => y.cmp(x),
            },
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

struct Executor<'s, S: IndexedSource + ?Sized> {
    source: &'s S,
    strategy: Strategy,
}

impl<S: IndexedSource + ?Sized> Executor<'_, S> {
    // ---- filters --------------------------------------------------------------------

    /// The slots of `plan` within `within`.
    fn eval(&self, plan: &Plan<S::Property>, within: &RoaringBitmap) -> RoaringBitmap {
        if within.is_empty() {
            return RoaringBitmap::new();
        }
        match plan {
            Plan::All => within.clone(),
            Plan::Empty => RoaringBitmap::new(),
            Plan::And(children) => self.eval_and(children, within),
            Plan::Or(children) => children.iter().map(|c| self.eval(c, within)).union(),
            Plan::Not(inner) => within - self.eval(inner, within),
            leaf => self.leaf(leaf, within),
        }
    }

    fn eval_and(&self, children: &[Plan<S::Property>], within: &RoaringBitmap) -> RoaringBitmap {
        self.narrow_all(&self.by_cardinality(children), within)
            .into_owned()
    }

    /// `within ∩ children`, step by step, stopping early when empty. A first step over
    /// the whole universe that is a stored bitmap (one tag, one value) is borrowed, not
    /// copied.
    fn narrow_all<'b>(
        &'b self,
        children: &[&Plan<S::Property>],
        within: &'b RoaringBitmap,
    ) -> Cow<'b, RoaringBitmap> {
        let mut acc = Cow::Borrowed(within);
        for (i, child) in children.iter().enumerate() {
            let stored = (i == 0 && within.len() == self.source.universe().len())
                .then(|| self.stored_bitmap(child))
                .flatten();
            acc = match stored {
                Some(b) => Cow::Borrowed(b),
                None => Cow::Owned(self.narrow(child, &acc)),
            };
            if acc.is_empty() {
                break;
            }
        }
        acc
    }

    /// The bitmap a leaf selects when the source stores exactly it.
    fn stored_bitmap(&self, leaf: &Plan<S::Property>) -> Option<&RoaringBitmap> {
        match leaf {
            Plan::Tags(tags) if tags.len() == 1 => self.source.tag_bitmap(&tags[0]),
            _ => None,
        }
    }

    /// One AND step: `base ∩ child` (a negated leaf subtracts).
    fn narrow(&self, child: &Plan<S::Property>, base: &RoaringBitmap) -> RoaringBitmap {
        match child {
            Plan::Not(inner) => base - self.eval(inner, base),
            other => self.eval(other, base),
        }
    }

    fn by_cardinality<'p>(&self, children: &'p [Plan<S::Property>]) -> Vec<&'p Plan<S::Property>> {
        let mut ordered: Vec<(u64, &Plan<S::Property>)> =
            children.iter().map(|c| (self.estimate(c), c)).collect();
        ordered.sort_by_key(|(n, _)| *n);
        ordered.into_iter().map(|(_, c)| c).collect()
    }

    /// An upper bound (exact for most leaves) of the slots a plan selects.
    fn estimate(&self, plan: &Plan<S::Property>) -> u64 {
        let s = self.source;
        let universe = s.universe().len();
        match plan {
            Plan::All => universe,
            Plan::Empty => 0,
            Plan::Tags(tags) => tags
                .iter()
                .map(|t| s.tag_bitmap(t).map_or(0, RoaringBitmap::len))
                .min()
                .unwrap_or(universe),
            Plan::Eq(p, v) => s.value_slots(*p, v).map_or(0, |x| x.len()),
            Plan::In(p, vs) => vs
                .iter()
                .map(|v| s.value_slots(*p, v).map_or(0, |x| x.len()))
                .sum(),
            Plan::Range(p, lo, hi) => {
                let mut total = 0;
                for (n, (_, slots)) in s.values_in_range(*p, lo.as_ref(), hi.as_ref()).enumerate() {
                    if n == 64 {
                        return s.exists_bitmap(*p).len();
                    }
                    total += slots.len();
                }
                total
            }
            Plan::Exists(p) => s.exists_bitmap(*p).len(),
            Plan::Not(inner) => universe.saturating_sub(self.estimate(inner)),
            Plan::And(cs) => cs
                .iter()
                .map(|c| self.estimate(c))
                .min()
                .unwrap_or(universe),
            Plan::Or(cs) => cs
                .iter()
                .map(|c| self.estimate(c))
                .sum::<u64>()
                .min(universe),
        }
    }

    /// How many slots a plan is expected to select, taking an AND's children as
    /// independent (the product of their shares of the universe). Unlike
    /// [`estimate`](Self::estimate) this is no bound: correlated children make it too low
    /// or too high; it only sizes [`first_in_id_order`](Self::first_in_id_order)'s chunks.
    fn expected_matches(&self, plan: &Plan<S::Property>) -> f64 {
        let universe = self.source.universe().len() as f64;
        match plan {
            Plan::And(cs) if universe > 0.0 => cs.iter().fold(universe, |acc, c| {
                acc * (self.expected_matches(c) / universe).min(1.0)
            }),
            Plan::Or(cs) => cs
                .iter()
                .map(|c| self.expected_matches(c))
                .sum::<f64>()
                .min(universe),
            Plan::Not(inner) => (universe - self.expected_matches(inner)).max(0.0),
            leaf => self.estimate(leaf) as f64,
        }
    }

    fn probe(&self, leaf: &Plan<S::Property>, within: &RoaringBitmap) -> bool {
        // One value's stored slots meet `within` container by container: a few ns per
        // slot of `within` plus one step per container, never more than a probe's cache
        // misses (under `Scans` it is probed all the same).
        let probe_worth = match leaf {
            Plan::In(..) | Plan::Range(..) => true,
            Plan::Eq(..) => self.strategy == Strategy::Scans,
            _ => false,
        };
        if !probe_worth {
            return false;
        }
        match self.strategy {
            Strategy::Scans => true,
            Strategy::Bitmaps | Strategy::Columns => false,
            // A probe costs a few cache misses per slot (~0.3-1 us); a bitmap pass costs a few
            // ns per slot of the leaf.
            Strategy::Auto => within.len().saturating_mul(256) < self.estimate(leaf),
        }
    }

    /// Whether one slot satisfies a value leaf.
    fn test(&self, leaf: &Plan<S::Property>, slot: u32) -> bool {
        let value = |p| self.source.value_of(slot, p);
        match leaf {
            Plan::Eq(p, v) => value(*p).is_some_and(|x| *x == *v),
            Plan::In(p, vs) => value(*p).is_some_and(|x| vs.binary_search(&x).is_ok()),
            Plan::Range(p, lo, hi) => value(*p).is_some_and(|x| within(&x, lo, hi)),
            _ => false,
        }
    }

    /// Whether a range step over `within` should look slots up in the source's value
    /// column: a lookup costs a few ns per slot of `within`, a bitmap pass a few ns per
    /// slot of the range.
    fn range_by_column(&self, range: &Plan<S::Property>, within: &RoaringBitmap) -> bool {
        match self.strategy {
            Strategy::Bitmaps => false,
            Strategy::Columns | Strategy::Scans => true,
            Strategy::Auto => {
                within.len().saturating_mul(RANGE_COLUMN_FACTOR) < self.estimate(range)
            }
        }
    }

    fn leaf(&self, leaf: &Plan<S::Property>, within: &RoaringBitmap) -> RoaringBitmap {
        let s = self.source;
        // A range the source can filter through its column (a dense array: a few ns a
        // slot) never probes slot by slot (a twin's lists: cache misses a slot).
        if let Plan::Range(p, lo, hi) = leaf
            && self.range_by_column(leaf, within)
            && let Some(filtered) = s.filter_range(*p, lo.as_ref(), hi.as_ref(), within)
        {
            return filtered;
        }
        if self.probe(leaf, within) {
            return within
                .iter()
                .filter(|&slot| self.test(leaf, slot))
                .collect();
        }
        match leaf {
            Plan::Tags(tags) => {
                let mut bitmaps = Vec::with_capacity(tags.len());
                for t in tags {
                    match s.tag_bitmap(t) {
                        Some(b) => bitmaps.push(b),
                        None => return RoaringBitmap::new(),
                    }
                }
                bitmaps.sort_by_key(|b| b.len());
                let Some((first, rest)) = bitmaps.split_first() else {
                    return within.clone();
                };
                // Every index bitmap lies within the universe: no need to intersect with it.
                let mut acc = if within.len() == s.universe().len() {
                    (*first).clone()
                } else {
                    *first & within
                };
                for b in rest {
                    if acc.is_empty() {
                        break;
                    }
                    acc &= *b;
                }
                acc
            }
            Plan::Eq(p, v) => {
                s.value_slots(*p, v)
                    .map_or_else(RoaringBitmap::new, |x| match x.bitmap() {
                        Some(b) if within.len() == s.universe().len() => b.clone(),
                        _ => x.intersection(within),
                    })
            }
            // Intersect each value's slots first: every piece is at most `within` large.
            Plan::In(p, vs) => vs
                .iter()
                .filter_map(|v| s.value_slots(*p, v))
                .map(|x| x.intersection(within))
                .union(),
            Plan::Range(p, lo, hi) => {
                let filtered = self
                    .range_by_column(leaf, within)
                    .then(|| s.filter_range(*p, lo.as_ref(), hi.as_ref(), within))
                    .flatten();
                filtered.unwrap_or_else(|| {
                    s.values_in_range(*p, lo.as_ref(), hi.as_ref())
                        .map(|(_, x)| x.intersection(within))
                        .union()
                })
            }
            Plan::Exists(p) => s.exists_bitmap(*p).as_ref() & within,
            other => self.eval(other, within),
        }
    }

    /// `|slots ∩ within|`. Over the whole universe that is the slots' own length (a
    /// source's bitmaps hold live slots only, [`IndexedSource`]'s contract, and `within`
    /// is always a subset of the universe), which costs one read per container instead of
    /// an AND: a count of one value does not grow with the fleet.
    fn count_within(&self, slots: &Slots<'_>, within: &RoaringBitmap) -> u64 {
        if within.len() == self.source.universe().len() {
            slots.len()
        } else {
            slots.intersection_len(within)
        }
    }

    /// `|eval(plan, within)|`, using intersection lengths for the last step of an AND and
    /// for single leaves, so the final bitmap is never built.
    fn count(&self, plan: &Plan<S::Property>, within: &RoaringBitmap) -> u64 {
        let s = self.source;
        match plan {
            Plan::All => within.len(),
            Plan::Empty => 0,
            Plan::Eq(p, v) => s
                .value_slots(*p, v)
                .map_or(0, |x| self.count_within(&x, within)),
            Plan::Exists(p) => self.count_within(&Slots::Borrowed(&s.exists_bitmap(*p)), within),
            Plan::Tags(tags) if tags.len() == 1 => s
                .tag_bitmap(&tags[0])
                .map_or(0, |b| self.count_within(&Slots::Borrowed(b), within)),
            Plan::Not(inner) => within.len() - self.count(inner, within),
            Plan::Range(p, lo, hi)
                if !self.probe(plan, within) && self.range_by_column(plan, within) =>
            {
                s.count_range(*p, lo.as_ref(), hi.as_ref(), within)
                    .unwrap_or_else(|| self.eval(plan, within).len())
            }
            Plan::And(children) => {
                let ordered = self.by_cardinality(children);
                let Some((last, first)) = ordered.split_last() else {
                    return within.len();
                };
                let acc = self.narrow_all(first, within);
                if acc.is_empty() {
                    return 0;
                }
                self.count(last, &acc)
            }
            other => self.eval(other, within).len(),
        }
    }

    // ---- sort and page --------------------------------------------------------------

    /// Up to `limit` matching slots in id order after `after`, found by evaluating the
    /// filter over successive chunks of the id order rather than over the whole fleet, so
    /// the first page costs what its rows need, not what the fleet holds. `None` when the
    /// estimate says matches are too sparse for that to pay (the walk would cover more
    /// than half the fleet): the caller evaluates the whole filter instead.
    ///
    /// The first chunk holds a quarter more slots than the estimate needs for `limit`
    /// matches (at least [`MIN_CHUNK`]); each further chunk doubles, so a wrong estimate
    /// costs at most about twice a whole evaluation.
    fn first_in_id_order(
        &self,
        plan: &Plan<S::Property>,
        after: Option<&str>,
        limit: usize,
    ) -> Option<Vec<Entry>> {
        let universe = self.source.universe().len();
        let expected = self.expected_matches(plan);
        if self.strategy == Strategy::Scans || expected < 1.0 {
            return None;
        }
        let needed = (limit as f64 * universe as f64 / expected) as u64;
        // A quarter more than expected: the first chunk usually holds the whole page.
        let first = needed.saturating_add(needed / 4).max(MIN_CHUNK);
        if first.saturating_mul(2) > universe {
            return None;
        }
        let mut chunk = first as usize;
        let mut page = Vec::with_capacity(limit);
        let mut in_id_order = Vec::with_capacity(chunk);
        let mut last: Option<u32> = None;
        loop {
            in_id_order.clear();
            let after = match last {
                Some(slot) => Some(self.source.id_of(slot)),
                None => after,
            };
            self.source.fill_id_order(after, chunk, &mut in_id_order);
            let (Some(&first_slot), Some(&last_slot)) = (in_id_order.first(), in_id_order.last())
            else {
                return Some(page);
            };
            last = Some(last_slot);
            let wanted = limit - page.len();
            if in_id_order.is_sorted() {
                // Slots follow the id order (a fleet loaded in id order): the matches
                // come out of the bitmap in page order.
                let within = if (last_slot - first_slot) as usize + 1 == in_id_order.len() {
                    let mut range = RoaringBitmap::new();
                    range.insert_range(first_slot..=last_slot);
                    range
                } else {
                    RoaringBitmap::from_sorted_iter(in_id_order.iter().copied())
                        .expect("sorted slots")
                };
                let matched = self.eval(plan, &within);
                page.extend(matched.iter().take(wanted).map(|slot| (slot, Vec::new())));
            } else {
                // (slot, place in the id order), by slot: the matches (by slot) are
                // joined to their places in one pass, then put back in id order.
                let mut by_slot: Vec<(u32, u32)> = in_id_order
                    .iter()
                    .zip(0u32..)
                    .map(|(&s, i)| (s, i))
                    .collect();
                by_slot.sort_unstable();
                let within = RoaringBitmap::from_sorted_iter(by_slot.iter().map(|&(s, _)| s))
                    .expect("sorted slots");
                let matched = self.eval(plan, &within);
                let mut places = Vec::with_capacity(matched.len() as usize);
                let mut rest = by_slot.iter();
                for slot in &matched {
                    if let Some(&(_, place)) = rest.by_ref().find(|(s, _)| *s == slot) {
                        places.push(place);
                    }
                }
                places.sort_unstable();
                page.extend(
                    places
                        .iter()
                        .take(wanted)
                        .map(|&place| (in_id_order[place as usize], Vec::new())),
                );
            }
            if page.len() == limit {
                return Some(page);
            }
            chunk = chunk.saturating_mul(2);
        }
    }

    fn key_values(
        &self,
        slot: u32,
        keys: &[(Option<S::Property>, SortOrder)],
    ) -> Vec<Option<Scalar>> {
        keys.iter()
            .map(|(p, _)| p.and_then(|p| self.source.value_of(slot, p).map(Cow::into_owned)))
            .collect()
    }

    /// Up to `limit` entries of `rows` after `cursor`, in (keys, id) order.
    fn page(
        &self,
        rows: &RoaringBitmap,
        keys: &[(Option<S::Property>, SortOrder)],
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Vec<Entry> {
        let s = self.source;
        if rows.is_empty() {
            return Vec::new();
        }
        if keys.is_empty() {
            let after = cursor.map(|c| c.id.as_str());
            let walk_steps = (limit as u64).saturating_mul(s.universe().len()) / rows.len();
            let walk = match self.strategy {
                Strategy::Bitmaps | Strategy::Columns => true,
                Strategy::Scans => false,
                Strategy::Auto => walk_steps < rows.len().saturating_mul(4),
            };
            if walk {
                // The walk tests `walk_steps` slots; a dense bitset answers in one load
                // where a bitmap binary-searches.
                let dense = IdBits::of(rows);
                return s
                    .slots_in_id_order(after)
                    .filter(|&slot| dense.contains(slot))
                    .take(limit)
                    .map(|slot| (slot, Vec::new()))
                    .collect();
            }
        } else if let [(Some(p), order)] = keys {
            let index_walk = match self.strategy {
                Strategy::Bitmaps | Strategy::Columns => true,
                Strategy::Scans => false,
                Strategy::Auto => (s.distinct_values(*p) as u64) <= rows.len().saturating_mul(4),
            };
            if index_walk {
                return self.index_walk(rows, *p, *order, cursor, limit);
            }
        }
        self.select(rows, keys, cursor, limit)
    }

    /// Collect every row's keys, keep those after the cursor, select the first `limit`.
    fn select(
        &self,
        rows: &RoaringBitmap,
        keys: &[(Option<S::Property>, SortOrder)],
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Vec<Entry> {
        let s = self.source;
        let orders: Vec<SortOrder> = keys.iter().map(|(_, o)| *o).collect();
        let cmp = |a: &(Vec<Option<Scalar>>, &str, u32), b: &(Vec<Option<Scalar>>, &str, u32)| {
            cmp_keys(&a.0, &b.0, &orders).then_with(|| a.1.cmp(b.1))
        };
        let mut entries: Vec<(Vec<Option<Scalar>>, &str, u32)> = rows
            .iter()
            .map(|slot| (self.key_values(slot, keys), s.id_of(slot), slot))
            .filter(|e| match cursor {
                None => true,
                Some(c) => {
                    cmp_keys(&e.0, &c.keys, &orders).then_with(|| e.1.cmp(c.id.as_str()))
                        == Ordering::Greater
                }
            })
            .collect();
        if entries.len() > limit {
            entries.select_nth_unstable_by(limit - 1, cmp);
            entries.truncate(limit);
        }
        entries.sort_unstable_by(cmp);
        entries
            .into_iter()
            .map(|(keys, _, slot)| (slot, keys))
            .collect()
    }

    /// Walk the key's values in order, each value's rows by id, then rows without a value.
    /// Whether a sorted page groups its rows by looking each row's value up in the
    /// source's column (one lookup a row) rather than intersecting each value's slots
    /// with the rows (one intersection a value, most of them empty when the rows are few).
    fn group_by_column(&self, rows: &RoaringBitmap) -> bool {
        match self.strategy {
            Strategy::Bitmaps | Strategy::Scans => false,
            Strategy::Columns => true,
            Strategy::Auto => rows.len().saturating_mul(16) < self.source.universe().len(),
        }
    }

    fn index_walk(
        &self,
        rows: &RoaringBitmap,
        p: S::Property,
        order: SortOrder,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Vec<Entry> {
        let s = self.source;
        let mut out: Vec<Entry> = Vec::new();
        let cursor_key: Option<Option<&Scalar>> = cursor.map(|c| c.keys[0].as_ref());
        let after_id = cursor.map(|c| c.id.as_str());
        // Values to walk: all of them, or from the cursor's value on.
        let walk_values = !matches!(cursor_key, Some(None));
        if walk_values {
            let start = cursor_key.flatten();
            let grouped = self
                .group_by_column(rows)
                .then(|| s.group_rows(p, rows))
                .flatten();
            let groups: Box<dyn Iterator<Item = (Cow<'_, Scalar>, RoaringBitmap)> + '_> =
                match grouped {
                    // Few rows: each row's value looked up once, groups already in order.
                    Some(groups) => {
                        let from_cursor = move |v: &Scalar| match (order, start) {
                            (_, None) => true,
                            (SortOrder::Asc, Some(c)) => *v >= *c,
                            (SortOrder::Desc, Some(c)) => *v <= *c,
                        };
                        let groups = groups.into_iter().filter(move |(v, _)| from_cursor(v));
                        match order {
                            SortOrder::Asc => Box::new(groups),
                            SortOrder::Desc => Box::new(groups.rev()),
                        }
                    }
                    None => {
                        let values = match (order, start) {
                            (SortOrder::Asc, Some(v)) => {
                                s.values_in_range(p, Bound::Included(v), Bound::Unbounded)
                            }
                            (SortOrder::Desc, Some(v)) => Box::new(
                                s.values_in_range(p, Bound::Unbounded, Bound::Included(v))
                                    .rev(),
                            ),
                            (SortOrder::Asc, None) => {
                                s.values_in_range(p, Bound::Unbounded, Bound::Unbounded)
                            }
                            (SortOrder::Desc, None) => Box::new(
                                s.values_in_range(p, Bound::Unbounded, Bound::Unbounded)
                                    .rev(),
                            ),
                        };
                        Box::new(values.map(|(value, slots)| (value, slots.intersection(rows))))
                    }
                };
            for (value, group) in groups {
                if group.is_empty() {
                    continue;
                }
                let same_as_cursor = start.is_some_and(|v| *v == *value);
                let mut ids: Vec<(&str, u32)> = group
                    .iter()
                    .map(|slot| (s.id_of(slot), slot))
                    .filter(|(id, _)| !same_as_cursor || after_id.is_none_or(|a| *id > a))
                    .collect();
                ids.sort_unstable();
                let value = value.into_owned();
                for (_, slot) in ids {
                    out.push((slot, vec![Some(value.clone())]));
                    if out.len() == limit {
                        return out;
                    }
                }
            }
        }
        // Rows without a scalar value come last, by id.
        let with_value = s
            .values_in_range(p, Bound::Unbounded, Bound::Unbounded)
            .map(|(_, slots)| match slots {
                Slots::One(slot) => std::iter::once(slot).collect(),
                Slots::Borrowed(b) => b.clone(),
                Slots::Owned(b) => b,
            })
            .union();
        let missing = rows - with_value;
        let after = if walk_values { None } else { after_id };
        let mut ids: Vec<(&str, u32)> = missing
            .iter()
            .map(|slot| (s.id_of(slot), slot))
            .filter(|(id, _)| after.is_none_or(|a| *id > a))
            .collect();
        ids.sort_unstable();
        out.extend(
            ids.into_iter()
                .take(limit - out.len())
                .map(|(_, slot)| (slot, vec![None])),
        );
        out
    }

    // ---- aggregate ------------------------------------------------------------------

    fn aggregate(
        &self,
        rows: &RoaringBitmap,
        aggregation: &super::ast::Aggregation,
        sort: &[super::ast::SortKey],
    ) -> Result<Vec<super::result::AggregateRow>, QueryError> {
        let s = self.source;
        let keys: Vec<Option<S::Property>> =
            aggregation.keys.iter().map(|k| s.resolve(k)).collect();
        let columns: Vec<(AggregateOperator, Option<Option<S::Property>>)> = aggregation
            .columns
            .iter()
            .map(|c| (c.operator, c.property.as_ref().map(|p| s.resolve(p))))
            .collect();
        let mut groups: Groups = BTreeMap::new();
        let bitmap_path = match (self.strategy, &keys[..]) {
            (Strategy::Scans, _) => false,
            (_, [Some(p)]) => {
                self.strategy == Strategy::Bitmaps
                    || (s.distinct_values(*p) as u64) <= rows.len() / 4 + 1
            }
            _ => false,
        };
        if let (true, [Some(p)]) = (bitmap_path, &keys[..]) {
            let only_counts = columns
                .iter()
                .all(|(op, prop)| *op == AggregateOperator::Count && prop.is_none());
            let mut grouped = 0;
            for (value, slots) in s.values_in_range(*p, Bound::Unbounded, Bound::Unbounded) {
                if only_counts {
                    let n = self.count_within(&slots, rows);
                    if n > 0 {
                        grouped += n;
                        let accs = columns.iter().map(|_| ColumnAcc::default()).collect();
                        groups.insert(vec![Some(value.into_owned())], (n, accs));
                    }
                    continue;
                }
                let group = slots.intersection(rows);
                if group.is_empty() {
                    continue;
                }
                grouped += group.len();
                let accs = self.columns_over(&group, &columns);
                groups.insert(vec![Some(value.into_owned())], (group.len(), accs));
            }
            // Rows without a scalar key value form the `null` group.
            if grouped < rows.len() {
                let with_value = s
                    .values_in_range(*p, Bound::Unbounded, Bound::Unbounded)
                    .map(|(_, slots)| slots.intersection(rows))
                    .union();
                let missing = rows - with_value;
                let accs = self.columns_over(&missing, &columns);
                groups.insert(vec![None], (missing.len(), accs));
            }
        } else {
            let exists: Vec<Option<Cow<'_, RoaringBitmap>>> = columns
                .iter()
                .map(|(_, p)| p.flatten().map(|p| s.exists_bitmap(p)))
                .collect();
            for slot in rows {
                let key: Vec<Option<Scalar>> = keys
                    .iter()
                    .map(|k| k.and_then(|k| s.value_of(slot, k).map(Cow::into_owned)))
                    .collect();
                let (n, accs) = groups
                    .entry(key)
                    .or_insert_with(|| (0, columns.iter().map(|_| ColumnAcc::default()).collect()));
                *n += 1;
                for ((acc, (op, prop)), exists) in accs.iter_mut().zip(&columns).zip(&exists) {
                    let Some(Some(p)) = prop else { continue };
                    if exists.as_ref().is_some_and(|e| e.contains(slot)) {
                        acc.present += 1;
                    }
                    if *op != AggregateOperator::Count
                        && let Some(v) = s.value_of(slot, *p)
                    {
                        *acc.values.entry(v.into_owned()).or_insert(0) += 1;
                    }
                }
            }
        }
        super::aggregate::rows(groups, aggregation, sort)
    }

    /// Column accumulators over one group's bitmap, from intersection lengths.
    fn columns_over(
        &self,
        group: &RoaringBitmap,
        columns: &[(AggregateOperator, Option<Option<S::Property>>)],
    ) -> Vec<ColumnAcc> {
        let s = self.source;
        columns
            .iter()
            .map(|(op, prop)| {
                let mut acc = ColumnAcc::default();
                let Some(Some(p)) = prop else { return acc };
                acc.present = self.count_within(&Slots::Borrowed(&s.exists_bitmap(*p)), group);
                if *op != AggregateOperator::Count {
                    for (value, slots) in s.values_in_range(*p, Bound::Unbounded, Bound::Unbounded)
                    {
                        let n = slots.intersection_len(group);
                        if n > 0 {
                            acc.values.insert(value.into_owned(), n);
                        }
                    }
                }
                acc
            })
            .collect()
    }
}

/// A tag query: the documents carrying **all** the tags, in id order, at most `top`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagQuery {
    /// The tags (at least one).
    pub tags: Vec<String>,
    /// At most this many results (1..=[`MAX_PAGE_SIZE`]; the preview's `maxCount`).
    pub top: usize,
}

/// Runs a tag query.
///
/// ```
/// use twinhub::query::{tag_query, TagQuery};
/// use twinhub::registry::Registry;
/// use twinhub::twin::Twin;
/// use twinhub::DeviceId;
/// let mut registry = Registry::new();
/// registry.create(Twin::new(DeviceId::new("a").unwrap()).with_tag("lab").with_tag("eu")).unwrap();
/// registry.create(Twin::new(DeviceId::new("b").unwrap()).with_tag("lab")).unwrap();
/// let page = tag_query(&registry, &TagQuery { tags: vec!["lab".into(), "eu".into()], top: 10 }).unwrap();
/// assert_eq!(page.result.len(), 1);
/// ```
pub fn tag_query<'s, S: IndexedSource + ?Sized>(
    source: &'s S,
    query: &TagQuery,
) -> Result<QueryResult<S::Document<'s>, S::Projected<'s>>, QueryError> {
    if query.tags.is_empty() || query.top == 0 || query.top > MAX_PAGE_SIZE {
        return Err(QueryError::BadTagQuery);
    }
    let expr = QueryExpression::new()
        .filter(super::ast::QueryProperty::tags().all(query.tags.iter().map(String::as_str)));
    execute(source, &expr, &QueryOptions::page(query.top))
}

/// Parses `text` and runs it: [`parse`](fn@super::parse) then [`execute`].
pub fn execute_text<'s, S: IndexedSource + ?Sized>(
    source: &'s S,
    text: &str,
    options: &QueryOptions,
) -> Result<QueryResult<S::Document<'s>, S::Projected<'s>>, QueryError> {
    let expr = super::parse(text)?;
    execute(source, &expr, options)
}
