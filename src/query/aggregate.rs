//! Aggregate arithmetic shared by the executor and the naive evaluator, so both compute
//! every column from the same inputs in the same order (float sums are order-sensitive).
//!
//! Per group and column the input is: how many documents have the property
//! (`present`), and how many have each distinct scalar value (`values`). From that:
//! `count` (without property: the group's size; with one: `present`), `sum` and `avg` over
//! the numeric values only, `min` and `max` over all scalar values in the scalar order
//! (`false < true <` numbers `<` strings). Columns without values are `null`.
//!
//! Sums: when every value is an integer (or a float equal to one, `2.0`: equal numbers
//! sum alike, whichever form a twin holds) the sum is exact (an `i128` accumulator); it is
//! reported as an integer when it fits an `i64` (or a `u64`), otherwise as the nearest
//! float. When any value has a fraction the sum is an `f64` (in ascending value order); a float sum beyond
//! the `f64` range is [`QueryError::AggregateOverflow`], never a `null`. Averages divide
//! as they go (each value weighted by its share), so they never overflow.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use indexmap::IndexMap;

use super::ast::{AggregateOperator, Aggregation, PropertyType, SortKey, SortOrder};
use super::exec::cmp_keys;
use super::result::{AggregateRow, QueryError};
use crate::twin::{Number, Scalar};

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

/// A float sum left the `f64` range.
struct Overflow;

fn finish(
    op: AggregateOperator,
    group_size: u64,
    has_property: bool,
    acc: &ColumnAcc,
) -> Result<Option<Scalar>, Overflow> {
    Ok(match op {
        AggregateOperator::Count => Some(Scalar::from(if has_property {
            acc.present
        } else {
            group_size
        })),
        AggregateOperator::Sum | AggregateOperator::Avg => {
            let numbers = || {
                acc.values.iter().filter_map(|(v, count)| match v {
                    Scalar::Number(x) => Some((x, *count)),
                    _ => None,
                })
            };
            let n: u64 = numbers().map(|(_, c)| c).sum();
            if n == 0 {
                return Ok(None);
            }
            // An integral float counts as the integer it equals: numbers that are equal
            // (`2 == 2.0`) must sum alike, and a property's dictionary keeps one of the
            // equal forms it was given.
            let whole = |x: &Number| {
                x.integer().or_else(|| {
                    let f = x.as_f64();
                    (f.fract() == 0.0 && f.abs() < 2f64.powi(64)).then_some(f as i128)
                })
            };
            let exact: Option<i128> = numbers().try_fold(0i128, |sum, (x, c)| {
                sum.checked_add(whole(x)?.checked_mul(c.into())?)
            });
            if op == AggregateOperator::Avg {
                let avg = match exact {
                    Some(sum) => sum as f64 / n as f64,
                    None => numbers()
                        .map(|(x, c)| x.as_f64() * (c as f64 / n as f64))
                        .sum(),
                };
                return Ok(Scalar::float(avg));
            }
            match exact {
                Some(sum) => match Number::from_i128(sum) {
                    Some(n) => Some(Scalar::Number(n)),
                    None => Scalar::float(sum as f64),
                },
                None => {
                    let sum: f64 = numbers().map(|(x, c)| x.as_f64() * c as f64).sum();
                    // A value times its count can pass the f64 range where the sum does
                    // not (1e308 twice, less 1e308): the same sum taken scaled down by
                    // 2^-64 (exact for all but subnormal values) says which.
                    let sum = if sum.is_finite() {
                        sum
                    } else {
                        const SCALE: f64 = 18_446_744_073_709_551_616.0; // 2^64
                        let scaled: f64 = numbers()
                            .map(|(x, c)| (x.as_f64() / SCALE) * c as f64)
                            .sum();
                        scaled * SCALE
                    };
                    Some(Scalar::float(sum).ok_or(Overflow)?)
                }
            }
        }
        AggregateOperator::Min => acc.values.keys().next().cloned(),
        AggregateOperator::Max => acc.values.keys().next_back().cloned(),
    })
}

/// Turns groups (key tuple -> (size, column inputs)) into sorted result rows.
pub(crate) fn rows(
    groups: Groups,
    aggregation: &Aggregation,
    sort: &[SortKey],
) -> Result<Vec<AggregateRow>, QueryError> {
    let mut out: Vec<(KeyTuple, KeyTuple)> = Vec::with_capacity(groups.len());
    for (key, (size, accs)) in groups {
        let mut columns = Vec::with_capacity(accs.len());
        for (c, acc) in aggregation.columns.iter().zip(&accs) {
            let v = finish(c.operator, size, c.property.is_some(), acc).map_err(|Overflow| {
                QueryError::AggregateOverflow {
                    column: c.column_name.clone(),
                }
            })?;
            columns.push(v);
        }
        out.push((key, columns));
    }
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
    Ok(out
        .into_iter()
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
        .collect())
}

enum Pick {
    Key(usize),
    Column(usize),
}
