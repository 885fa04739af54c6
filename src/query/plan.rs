//! The executor's AST: filters lowered onto interned property handles and normalised.
//!
//! Lowering gives every comparison its set semantics (see [`Plan`]); normalising pushes
//! NOT down to the leaves, flattens AND/OR, merges the comparisons on one property inside
//! an AND into a single range (or point, or value list), turns contradictions into
//! [`Plan::Empty`] without looking at any data, and merges equalities inside an OR into an
//! IN (a union).

use std::ops::Bound;

use super::ast::{ComparisonOperator, ComparisonValue, Filter, Literal, LogicalOperator};
use super::source::{Comparand, IndexedSource, ScalarType, scalar};
use crate::twin::Scalar;

/// A normalised filter over property handles `P`. Every node denotes a set of slots
/// within the universe.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan<P> {
    /// Every slot.
    All,
    /// No slot.
    Empty,
    /// Slots carrying every one of the tags (sorted, deduplicated, at least one).
    Tags(Vec<String>),
    /// Slots where the property equals the value.
    Eq(P, Scalar),
    /// Slots where the property equals one of the values (sorted, deduplicated, >= 2).
    In(P, Vec<Scalar>),
    /// Slots where the property's value lies within bounds inside one type's segment of
    /// the scalar order.
    Range(P, Bound<Scalar>, Bound<Scalar>),
    /// Slots where the property exists.
    Exists(P),
    /// The universe minus a leaf.
    Not(Box<Plan<P>>),
    /// Intersection (at least two children, none of them `And`, `All` or `Empty`).
    And(Vec<Plan<P>>),
    /// Union (at least two children, none of them `Or`, `All` or `Empty`).
    Or(Vec<Plan<P>>),
}

/// Lowers a validated filter onto `source`'s property handles and normalises it.
pub fn lower<S: IndexedSource + ?Sized>(filter: Option<&Filter>, source: &S) -> Plan<S::Property> {
    match filter {
        None => Plan::All,
        Some(f) => normalize(lower_filter(f, source), false),
    }
}

fn lower_filter<S: IndexedSource + ?Sized>(f: &Filter, source: &S) -> Plan<S::Property> {
    match f {
        Filter::Logical(l) => {
            let children: Vec<_> = l.filters.iter().map(|f| lower_filter(f, source)).collect();
            match l.operator {
                LogicalOperator::And => Plan::And(children),
                LogicalOperator::Or => Plan::Or(children),
                LogicalOperator::Not => {
                    Plan::Not(Box::new(children.into_iter().next().unwrap_or(Plan::All)))
                }
            }
        }
        Filter::Comparison(c) => {
            use ComparisonOperator as Op;
            if c.property.is_tags() {
                let mut tags: Vec<String> = match &c.value {
                    ComparisonValue::List(items) => items
                        .iter()
                        .filter_map(|l| match l {
                            Literal::String(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                tags.sort();
                tags.dedup();
                return if tags.is_empty() {
                    Plan::All
                } else {
                    Plan::Tags(tags)
                };
            }
            let Some(p) = source.resolve(&c.property) else {
                // Nobody has the property: only "does not exist" holds.
                return match (c.operator, &c.value) {
                    (Op::Eq, ComparisonValue::Null) => Plan::All,
                    _ => Plan::Empty,
                };
            };
            let exists_and_not =
                |inner: Plan<_>| Plan::And(vec![Plan::Exists(p), Plan::Not(Box::new(inner))]);
            match (&c.value, c.operator) {
                (ComparisonValue::Null, Op::Ne) => Plan::Exists(p),
                (ComparisonValue::Null, _) => Plan::Not(Box::new(Plan::Exists(p))),
                (ComparisonValue::Scalar(l), op) => match source.comparand(p, scalar(l)) {
                    Comparand::Value(v) => {
                        let (seg_lo, seg_hi) = ScalarType::of(&v).segment();
                        match op {
                            Op::Eq => Plan::Eq(p, v),
                            Op::Ne => exists_and_not(Plan::Eq(p, v)),
                            Op::Gt => Plan::Range(p, Bound::Excluded(v), seg_hi),
                            Op::Gte => Plan::Range(p, Bound::Included(v), seg_hi),
                            Op::Lt => Plan::Range(p, seg_lo, Bound::Excluded(v)),
                            Op::Lte => Plan::Range(p, seg_lo, Bound::Included(v)),
                            // Validation rejects list operators with a scalar.
                            Op::In | Op::Nin | Op::All => Plan::Empty,
                        }
                    }
                    // No document holds the value: nothing equals it, and an order
                    // comparison is one with the nearest value a document can hold.
                    Comparand::Between { below, above } => match (op, below, above) {
                        (Op::Ne, _, _) => Plan::Exists(p),
                        (Op::Gt | Op::Gte, _, Some(a)) => {
                            let seg_hi = ScalarType::of(&a).segment().1;
                            Plan::Range(p, Bound::Included(a), seg_hi)
                        }
                        (Op::Lt | Op::Lte, Some(b), _) => {
                            let seg_lo = ScalarType::of(&b).segment().0;
                            Plan::Range(p, seg_lo, Bound::Included(b))
                        }
                        _ => Plan::Empty,
                    },
                },
                (ComparisonValue::List(items), op) => {
                    let values = items
                        .iter()
                        .filter_map(|l| match source.comparand(p, scalar(l)) {
                            Comparand::Value(v) => Some(v),
                            Comparand::Between { .. } => None,
                        })
                        .collect();
                    match op {
                        Op::In => any_of(p, values),
                        Op::Nin => exists_and_not(any_of(p, values)),
                        _ => Plan::Empty,
                    }
                }
            }
        }
    }
}

fn any_of<P>(p: P, mut values: Vec<Scalar>) -> Plan<P> {
    values.sort();
    values.dedup();
    match values.len() {
        0 => Plan::Empty,
        1 => Plan::Eq(p, values.pop().unwrap_or(Scalar::Bool(false))),
        _ => Plan::In(p, values),
    }
}

/// Pushes NOT down (De Morgan), flattens, merges and simplifies.
fn normalize<P: Copy + Eq + Ord>(plan: Plan<P>, negated: bool) -> Plan<P> {
    match plan {
        Plan::Not(inner) => normalize(*inner, !negated),
        Plan::And(children) | Plan::Or(children) if children.is_empty() => {
            unreachable_empty(negated)
        }
        Plan::And(children) => {
            let children = children
                .into_iter()
                .map(|c| normalize(c, negated))
                .collect();
            if negated {
                simplify_or(children)
            } else {
                simplify_and(children)
            }
        }
        Plan::Or(children) => {
            let children = children
                .into_iter()
                .map(|c| normalize(c, negated))
                .collect();
            if negated {
                simplify_and(children)
            } else {
                simplify_or(children)
            }
        }
        Plan::All if negated => Plan::Empty,
        Plan::Empty if negated => Plan::All,
        leaf if negated => Plan::Not(Box::new(leaf)),
        leaf => leaf,
    }
}

/// Validation forbids empty `and`/`or`; treat them as their identities if built anyway.
fn unreachable_empty<P>(negated: bool) -> Plan<P> {
    if negated { Plan::Empty } else { Plan::All }
}

fn simplify_or<P: Copy + Eq + Ord>(children: Vec<Plan<P>>) -> Plan<P> {
    let mut flat = Vec::new();
    for c in children {
        match c {
            Plan::All => return Plan::All,
            Plan::Empty => {}
            Plan::Or(grand) => flat.extend(grand),
            other => flat.push(other),
        }
    }
    // Equalities and value lists on one property become one IN.
    let mut merged: Vec<Plan<P>> = Vec::new();
    let mut lists: Vec<(P, Vec<Scalar>)> = Vec::new();
    for c in flat {
        match c {
            Plan::Eq(p, v) => match lists.iter_mut().find(|(q, _)| *q == p) {
                Some((_, vs)) => vs.push(v),
                None => lists.push((p, vec![v])),
            },
            Plan::In(p, vs) => match lists.iter_mut().find(|(q, _)| *q == p) {
                Some((_, existing)) => existing.extend(vs),
                None => lists.push((p, vs)),
            },
            other => {
                if !merged.contains(&other) {
                    merged.push(other);
                }
            }
        }
    }
    for (p, vs) in lists {
        merged.push(any_of(p, vs));
    }
    // `x or not x` covers everything.
    if merged
        .iter()
        .any(|c| matches!(c, Plan::Not(inner) if merged.contains(inner)))
    {
        return Plan::All;
    }
    match merged.len() {
        0 => Plan::Empty,
        1 => merged.pop().unwrap_or(Plan::Empty),
        _ => Plan::Or(merged),
    }
}

/// The constraint an AND puts on one property's value.
struct ValueConstraint {
    lo: Bound<Scalar>,
    hi: Bound<Scalar>,
    /// An explicit value list (from IN), if any; always within `lo..hi` when present.
    values: Option<Vec<Scalar>>,
}

fn max_lo(a: Bound<Scalar>, b: Bound<Scalar>) -> Bound<Scalar> {
    use Bound::*;
    match (a, b) {
        (Unbounded, x) | (x, Unbounded) => x,
        (Included(x), Included(y)) => Included(x.max(y)),
        (Excluded(x), Excluded(y)) => Excluded(x.max(y)),
        (Included(x), Excluded(y)) | (Excluded(y), Included(x)) => {
            if y >= x {
                Excluded(y)
            } else {
                Included(x)
            }
        }
    }
}

fn min_hi(a: Bound<Scalar>, b: Bound<Scalar>) -> Bound<Scalar> {
    use Bound::*;
    match (a, b) {
        (Unbounded, x) | (x, Unbounded) => x,
        (Included(x), Included(y)) => Included(x.min(y)),
        (Excluded(x), Excluded(y)) => Excluded(x.min(y)),
        (Included(x), Excluded(y)) | (Excluded(y), Included(x)) => {
            if y <= x {
                Excluded(y)
            } else {
                Included(x)
            }
        }
    }
}

/// Whether `v` lies within `lo..hi`.
pub(crate) fn within(v: &Scalar, lo: &Bound<Scalar>, hi: &Bound<Scalar>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(l) => v >= l,
        Bound::Excluded(l) => v > l,
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(h) => v <= h,
        Bound::Excluded(h) => v < h,
    };
    above && below
}

fn range_is_empty(lo: &Bound<Scalar>, hi: &Bound<Scalar>) -> bool {
    match (lo, hi) {
        (Bound::Included(l), Bound::Included(h)) => l > h,
        (Bound::Included(l), Bound::Excluded(h))
        | (Bound::Excluded(l), Bound::Included(h))
        | (Bound::Excluded(l), Bound::Excluded(h)) => l >= h,
        _ => false,
    }
}

fn simplify_and<P: Copy + Eq + Ord>(children: Vec<Plan<P>>) -> Plan<P> {
    let mut flat = Vec::new();
    for c in children {
        match c {
            Plan::Empty => return Plan::Empty,
            Plan::All => {}
            Plan::And(grand) => flat.extend(grand),
            other => flat.push(other),
        }
    }
    // Merge value constraints per property.
    let mut constraints: Vec<(P, ValueConstraint)> = Vec::new();
    let mut tags: Vec<String> = Vec::new();
    let mut rest: Vec<Plan<P>> = Vec::new();
    for c in flat {
        let (p, lo, hi, values) = match c {
            Plan::Eq(p, v) => (p, Bound::Included(v.clone()), Bound::Included(v), None),
            Plan::Range(p, lo, hi) => (p, lo, hi, None),
            Plan::In(p, vs) => (p, Bound::Unbounded, Bound::Unbounded, Some(vs)),
            Plan::Tags(ts) => {
                tags.extend(ts);
                continue;
            }
            other => {
                if !rest.contains(&other) {
                    rest.push(other);
                }
                continue;
            }
        };
        match constraints.iter_mut().find(|(q, _)| *q == p) {
            None => constraints.push((p, ValueConstraint { lo, hi, values })),
            Some((_, c)) => {
                c.lo = max_lo(c.lo.clone(), lo);
                c.hi = min_hi(c.hi.clone(), hi);
                c.values = match (c.values.take(), values) {
                    (None, v) | (v, None) => v,
                    (Some(a), Some(b)) => Some(a.into_iter().filter(|x| b.contains(x)).collect()),
                };
            }
        }
    }
    let mut out = Vec::new();
    if !tags.is_empty() {
        tags.sort();
        tags.dedup();
        out.push(Plan::Tags(tags));
    }
    for (p, c) in constraints {
        if let Some(values) = c.values {
            let kept: Vec<Scalar> = values
                .into_iter()
                .filter(|v| within(v, &c.lo, &c.hi))
                .collect();
            match any_of(p, kept) {
                Plan::Empty => return Plan::Empty,
                plan => out.push(plan),
            }
            continue;
        }
        if range_is_empty(&c.lo, &c.hi) {
            return Plan::Empty;
        }
        // Ranges from different types never overlap: each comparison's bounds lie in
        // its value's segment of the order, and segments are disjoint.
        match (&c.lo, &c.hi) {
            (Bound::Included(l), Bound::Included(h)) if l == h => {
                out.push(Plan::Eq(p, l.clone()));
            }
            _ => out.push(Plan::Range(p, c.lo, c.hi)),
        }
    }
    // Drop `exists p` when a value constraint on p implies it; `x and not x` is empty.
    let constrained: Vec<P> = out
        .iter()
        .filter_map(|c| match c {
            Plan::Eq(p, _) | Plan::In(p, _) | Plan::Range(p, _, _) => Some(*p),
            _ => None,
        })
        .collect();
    for c in rest {
        match &c {
            Plan::Exists(p) if constrained.contains(p) => {}
            Plan::Not(inner) => {
                if out.contains(inner) {
                    return Plan::Empty;
                }
                // `not (p = v)` next to `p = w`: empty if v == w, redundant otherwise.
                if let Plan::Eq(p, v) = inner.as_ref()
                    && let Some(w) = out.iter().find_map(|o| match o {
                        Plan::Eq(q, w) if q == p => Some(w),
                        _ => None,
                    })
                {
                    if v == w {
                        return Plan::Empty;
                    }
                    continue;
                }
                if let Plan::Exists(p) = inner.as_ref()
                    && constrained.contains(p)
                {
                    return Plan::Empty;
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    match out.len() {
        0 => Plan::All,
        1 => out.pop().unwrap_or(Plan::All),
        _ => Plan::And(out),
    }
}
