//! Aggregate arithmetic shared by the executor and the naive evaluator, so both compute
//! every column from the same inputs in the same order (float sums are order-sensitive).
//!
//! Per group and column the input is: how many documents have the property
//! (`present`), and how many have each distinct scalar value (`values`). From that:
//! `count` (without property: the group's size; with one: `present`), `sum` and `avg` over
//! the numeric values (summed in ascending value order), `min` and `max` over all scalar
//! values in the scalar order. Columns without values are `null`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use indexmap::IndexMap;

use super::ast::{AggregateOperator, Aggregation, PropertyType, SortKey, SortOrder};
use super::exec::cmp_keys;
use super::result::AggregateRow;
use crate::twin::Scalar;

/// A group's key values (or a sort key tuple), `None` where missing.
pub(crate) type KeyTuple = Vec<Option<Scalar>>;

/// Groups by key tuple: the group's size and its column inputs.
pub(crate) type Groups = BTreeMap<KeyTuple, (u64, Vec<ColumnAcc>)>;

/// One column's inputs within one group.
#[derive(Clone, Debug, Default)]
pub(crate) struct ColumnAcc {
    /// Documents in the group that have the property.
    pub present: u64,
    /// Distinct scalar values with their document counts (not filled for `count`).
    pub values: BTreeMap<Scalar, u64>,
}

/// Largest magnitude an integral sum is reported as an integer.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

fn finish(
    op: AggregateOperator,
    group_size: u64,
    has_property: bool,
    acc: &ColumnAcc,
) -> Option<Scalar> {
    match op {
        AggregateOperator::Count => Some(Scalar::from(if has_property {
            acc.present
        } else {
            group_size
        })),
        AggregateOperator::Sum | AggregateOperator::Avg => {
            let mut sum = 0.0f64;
            let mut n = 0u64;
            let mut integral = true;
            for (v, count) in &acc.values {
                if let Scalar::Number(x) = v {
                    sum += x.as_f64() * *count as f64;
                    n += count;
                    integral &= x.is_integer();
                }
            }
            if n == 0 {
                return None;
            }
            if op == AggregateOperator::Avg {
                return Scalar::float(sum / n as f64);
            }
            if integral && sum.abs() <= MAX_EXACT {
                Some(Scalar::from(sum as i64))
            } else {
                Scalar::float(sum)
            }
        }
        AggregateOperator::Min => acc.values.keys().next().cloned(),
        AggregateOperator::Max => acc.values.keys().next_back().cloned(),
    }
}

/// Turns groups (key tuple -> (size, column inputs)) into sorted result rows.
pub(crate) fn rows(
    groups: Groups,
    aggregation: &Aggregation,
    sort: &[SortKey],
) -> Vec<AggregateRow> {
    let mut out: Vec<(KeyTuple, KeyTuple)> = groups
        .into_iter()
        .map(|(key, (size, accs))| {
            let columns = aggregation
                .columns
                .iter()
                .zip(&accs)
                .map(|(c, acc)| finish(c.operator, size, c.property.is_some(), acc))
                .collect();
            (key, columns)
        })
        .collect();
    // Sort keys pick a key value or a column value; ties fall back to the key tuple.
    let picks: Vec<(Pick, SortOrder)> = sort
        .iter()
        .filter_map(|k| {
            let pick = if k.property.kind == PropertyType::Aggregated {
                aggregation
                    .columns
                    .iter()
                    .position(|c| c.column_name == k.property.name)
                    .map(Pick::Column)
            } else {
                aggregation
                    .keys
                    .iter()
                    .position(|key| *key == k.property)
                    .map(Pick::Key)
            };
            pick.map(|p| (p, k.order))
        })
        .collect();
    let orders: Vec<SortOrder> = picks.iter().map(|(_, o)| *o).collect();
    let key_orders = vec![SortOrder::Asc; aggregation.keys.len()];
    let sort_values = |row: &(KeyTuple, KeyTuple)| -> KeyTuple {
        picks
            .iter()
            .map(|(pick, _)| match pick {
                Pick::Key(i) => row.0[*i].clone(),
                Pick::Column(i) => row.1[*i].clone(),
            })
            .collect()
    };
    out.sort_by(|a, b| {
        let o = cmp_keys(&sort_values(a), &sort_values(b), &orders);
        if o != Ordering::Equal {
            return o;
        }
        cmp_keys(&a.0, &b.0, &key_orders)
    });
    out.into_iter()
        .map(|(key, columns)| {
            let mut row = IndexMap::new();
            for (k, v) in aggregation.keys.iter().zip(key) {
                row.insert(k.name.clone(), v);
            }
            for (c, v) in aggregation.columns.iter().zip(columns) {
                row.insert(c.column_name.clone(), v);
            }
            AggregateRow(row)
        })
        .collect()
}

enum Pick {
    Key(usize),
    Column(usize),
}
