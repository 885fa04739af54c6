//! The naive evaluator: the semantics of a query, written as plainly as possible over
//! owned twins. It is the oracle of the differential tests and the baseline of the
//! benchmarks; nothing else should use it.
//!
//! Semantics (the executor must agree exactly):
//! - `eq v`: the property has the scalar value `v` (numbers numerically, `1 == 1.0`);
//!   `eq null`: the property does not exist.
//! - `ne v`: the property exists and its value (if it has a scalar one) is not `v`;
//!   `ne null`: it exists.
//! - `gt gte lt lte v`: the property has a scalar value of `v`'s type that compares so.
//! - `in [..]`: the value is one of the list; `nin [..]`: it exists and is none of them.
//! - `all [..]` (tags): the twin has every tag.
//! - `and`, `or`, `not`: as in logic, `not` relative to all twins.
//! - Order: the sort keys (missing values last in either direction), then device id.
//! - Pages: the first `page_size` entries strictly after the cursor's (keys, id).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::aggregate::{ColumnAcc, Groups, rows};
use super::ast::{
    AggregateOperator, ComparisonOperator, ComparisonValue, Filter, Literal, LogicalOperator,
    QueryExpression,
};
use super::exec::{check, cmp_keys};
use super::result::{Cursor, QueryError, QueryOptions, QueryResult, ResultItem};
use super::source::{ScalarType, scalar};
use super::twins::{project_twin, twin_path, twin_value};
use crate::twin::{Scalar, Twin};

fn value(t: &Twin, p: &super::ast::QueryProperty) -> (bool, Option<Scalar>) {
    match twin_path(p) {
        Some(path) => twin_value(t, &path),
        None => (false, None),
    }
}

/// Whether a twin satisfies a filter.
pub fn matches(t: &Twin, f: &Filter) -> bool {
    match f {
        Filter::Logical(l) => match l.operator {
            LogicalOperator::And => l.filters.iter().all(|f| matches(t, f)),
            LogicalOperator::Or => l.filters.iter().any(|f| matches(t, f)),
            LogicalOperator::Not => !l.filters.iter().all(|f| matches(t, f)),
        },
        Filter::Comparison(c) => {
            use ComparisonOperator as Op;
            if c.property.is_tags() {
                return match &c.value {
                    ComparisonValue::List(items) => items.iter().all(|l| match l {
                        Literal::String(s) => t.service_properties.tags.contains(s),
                        _ => false,
                    }),
                    _ => false,
                };
            }
            let (exists, v) = value(t, &c.property);
            match (&c.value, c.operator) {
                (ComparisonValue::Null, Op::Eq) => !exists,
                (ComparisonValue::Null, Op::Ne) => exists,
                (ComparisonValue::Null, _) => false,
                (ComparisonValue::Scalar(l), op) => {
                    let w = scalar(l);
                    match op {
                        Op::Eq => v.as_ref() == Some(&w),
                        Op::Ne => exists && v.as_ref() != Some(&w),
                        Op::Gt | Op::Gte | Op::Lt | Op::Lte => v.is_some_and(|x| {
                            ScalarType::of(&x) == ScalarType::of(&w)
                                && match op {
                                    Op::Gt => x > w,
                                    Op::Gte => x >= w,
                                    Op::Lt => x < w,
                                    _ => x <= w,
                                }
                        }),
                        _ => false,
                    }
                }
                (ComparisonValue::List(items), op) => {
                    let found = v
                        .as_ref()
                        .is_some_and(|x| items.iter().any(|l| scalar(l) == *x));
                    match op {
                        Op::In => found,
                        Op::Nin => exists && !found,
                        _ => false,
                    }
                }
            }
        }
    }
}

/// How many twins match.
pub fn count(twins: &[Twin], expr: &QueryExpression) -> Result<u64, QueryError> {
    expr.validate()?;
    Ok(twins
        .iter()
        .filter(|t| expr.filter.as_ref().is_none_or(|f| matches(t, f)))
        .count() as u64)
}

/// Runs a query over plain twins (ids must be unique).
pub fn execute(
    twins: &[Twin],
    expr: &QueryExpression,
    options: &QueryOptions,
) -> Result<QueryResult<Twin>, QueryError> {
    let (fp, cursor) = check(expr, options, "")?;
    let selected: Vec<&Twin> = twins
        .iter()
        .filter(|t| expr.filter.as_ref().is_none_or(|f| matches(t, f)))
        .collect();
    if let Some(aggregation) = &expr.aggregate {
        let mut groups: Groups = BTreeMap::new();
        for t in selected {
            let key: Vec<Option<Scalar>> = aggregation.keys.iter().map(|k| value(t, k).1).collect();
            let (n, accs) = groups.entry(key).or_insert_with(|| {
                (
                    0,
                    aggregation
                        .columns
                        .iter()
                        .map(|_| ColumnAcc::default())
                        .collect(),
                )
            });
            *n += 1;
            for (acc, column) in accs.iter_mut().zip(&aggregation.columns) {
                let Some(p) = &column.property else { continue };
                let (exists, v) = value(t, p);
                acc.present += exists as u64;
                if column.operator != AggregateOperator::Count
                    && let Some(v) = v
                {
                    *acc.values.entry(v).or_insert(0) += 1;
                }
            }
        }
        return Ok(QueryResult {
            result: Vec::new(),
            aggregate_result: rows(groups, aggregation, &expr.sort)?,
            continuation: None,
        });
    }
    let orders: Vec<_> = expr.sort.iter().map(|k| k.order).collect();
    let mut entries: Vec<(Vec<Option<Scalar>>, &Twin)> = selected
        .into_iter()
        .map(|t| {
            let keys = expr.sort.iter().map(|k| value(t, &k.property).1).collect();
            (keys, t)
        })
        .collect();
    let cmp = |a: &Vec<Option<Scalar>>, a_id: &str, b: &Vec<Option<Scalar>>, b_id: &str| {
        cmp_keys(a, b, &orders).then_with(|| a_id.cmp(b_id))
    };
    entries.sort_by(|a, b| cmp(&a.0, a.1.device_id.as_str(), &b.0, b.1.device_id.as_str()));
    if let Some(c) = &cursor {
        entries.retain(|e| cmp(&e.0, e.1.device_id.as_str(), &c.keys, &c.id) == Ordering::Greater);
    }
    let more = entries.len() > options.page_size;
    entries.truncate(options.page_size);
    let continuation = if more {
        entries.last().map(|(keys, t)| {
            Cursor {
                fingerprint: fp,
                keys: keys.clone(),
                id: t.device_id.as_str().to_owned(),
            }
            .encode()
        })
    } else {
        None
    };
    let result = entries
        .into_iter()
        .map(|(_, t)| match &expr.project {
            Some(p) if !p.all => ResultItem::Projected(project_twin(t, &p.properties)),
            _ => ResultItem::Document(t.clone()),
        })
        .collect();
    Ok(QueryResult {
        result,
        aggregate_result: Vec::new(),
        continuation,
    })
}
