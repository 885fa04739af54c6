//! The grammar's rules beyond syntax, checked on the user AST (parsed or built), so both
//! front ends enforce exactly the same rules.

use super::ast::{
    AggregateOperator, ComparisonOperator, ComparisonValue, Filter, Literal, LogicalOperator,
    PropertyType, QueryExpression, QueryLimits, QueryProperty,
};
use super::error::{InvalidExpression, Origin, Span};

type Check = Result<(), (InvalidExpression, Option<Span>)>;

fn at(invalid: InvalidExpression, origin: Origin) -> Check {
    Err((invalid, origin.0))
}

/// Every rule of the grammar, in text order as far as possible.
pub(crate) fn expression(q: &QueryExpression, limits: &QueryLimits) -> Check {
    if let Some(filter) = &q.filter {
        let mut count = 0;
        self::filter(filter, 1, &mut count, limits)?;
    }
    if let Some(project) = &q.project {
        if !project.all && project.properties.is_empty() {
            return at(InvalidExpression::EmptyProjection, project.origin);
        }
        if project.properties.len() > limits.max_projection {
            return at(
                InvalidExpression::TooMany {
                    what: "projected properties",
                    max: limits.max_projection,
                },
                project.origin,
            );
        }
        for p in &project.properties {
            property(p)?;
        }
    }
    if let Some(aggregate) = &q.aggregate {
        if q.project.is_some() {
            return at(InvalidExpression::ProjectAndAggregate, aggregate.origin);
        }
        if aggregate.keys.is_empty() {
            return at(InvalidExpression::EmptyAggregateKeys, aggregate.origin);
        }
        if aggregate.columns.is_empty() {
            return at(InvalidExpression::EmptyAggregateColumns, aggregate.origin);
        }
        if aggregate.keys.len() > limits.max_aggregate_keys {
            return at(
                InvalidExpression::TooMany {
                    what: "aggregate keys",
                    max: limits.max_aggregate_keys,
                },
                aggregate.origin,
            );
        }
        if aggregate.columns.len() > limits.max_aggregate_columns {
            return at(
                InvalidExpression::TooMany {
                    what: "aggregate columns",
                    max: limits.max_aggregate_columns,
                },
                aggregate.origin,
            );
        }
        for (n, key) in aggregate.keys.iter().enumerate() {
            property(key)?;
            // Keys are output under their names: two keys of one name would collide.
            if aggregate.keys[..n].iter().any(|k| k.name == key.name) {
                return at(
                    InvalidExpression::DuplicateAggregateKey {
                        name: key.name.clone(),
                    },
                    key.origin,
                );
            }
            if key.is_tags() {
                return at(
                    InvalidExpression::TagsNotAllowed { place: "aggregate" },
                    key.origin,
                );
            }
        }
        for (n, column) in aggregate.columns.iter().enumerate() {
            if column.column_name.is_empty() {
                return at(InvalidExpression::EmptyColumnName, column.origin);
            }
            if column.column_name.contains('$') {
                return at(
                    InvalidExpression::DollarInColumnName {
                        name: column.column_name.clone(),
                    },
                    column.origin,
                );
            }
            if aggregate.keys.iter().any(|k| k.name == column.column_name) {
                return at(
                    InvalidExpression::ColumnNameIsKey {
                        name: column.column_name.clone(),
                    },
                    column.origin,
                );
            }
            if aggregate.columns[..n]
                .iter()
                .any(|c| c.column_name == column.column_name)
            {
                return at(
                    InvalidExpression::DuplicateColumnName {
                        name: column.column_name.clone(),
                    },
                    column.origin,
                );
            }
            match &column.property {
                None if column.operator != AggregateOperator::Count => {
                    return at(
                        InvalidExpression::PropertyRequired {
                            operator: column.operator.as_str(),
                        },
                        column.origin,
                    );
                }
                None => {}
                Some(p) => {
                    property(p)?;
                    if p.is_tags() {
                        return at(
                            InvalidExpression::TagsNotAllowed { place: "aggregate" },
                            p.origin,
                        );
                    }
                }
            }
        }
    }
    let max_sort_keys = limits.max_sort_keys.min(super::MAX_SORT_KEYS);
    if q.sort.len() > max_sort_keys {
        return at(
            InvalidExpression::TooMany {
                what: "sort keys",
                max: max_sort_keys,
            },
            q.sort[max_sort_keys].origin,
        );
    }
    for key in &q.sort {
        let p = &key.property;
        if p.name.is_empty() {
            return at(InvalidExpression::EmptyPropertyName, p.origin);
        }
        if p.is_tags() {
            return at(
                InvalidExpression::TagsNotAllowed { place: "sort" },
                p.origin,
            );
        }
        match &q.aggregate {
            Some(aggregate) if p.kind == PropertyType::Aggregated => {
                if !aggregate.columns.iter().any(|c| c.column_name == p.name) {
                    return at(
                        InvalidExpression::UnknownColumn {
                            name: p.name.clone(),
                        },
                        p.origin,
                    );
                }
            }
            Some(aggregate) => {
                if !aggregate.keys.contains(p) {
                    return at(
                        InvalidExpression::SortKeyNotInAggregate {
                            name: p.name.clone(),
                        },
                        p.origin,
                    );
                }
            }
            None => property(p)?,
        }
    }
    Ok(())
}

/// A property outside an aggregate sort: named, and not `aggregated`.
fn property(p: &QueryProperty) -> Check {
    if p.name.is_empty() {
        return at(InvalidExpression::EmptyPropertyName, p.origin);
    }
    if p.kind == PropertyType::Aggregated {
        return at(InvalidExpression::AggregatedNotAllowed, p.origin);
    }
    Ok(())
}

fn literal(l: &Literal, origin: Origin) -> Check {
    match l {
        Literal::Number(n) if !n.is_finite() => at(InvalidExpression::NotFinite, origin),
        _ => Ok(()),
    }
}

fn filter(f: &Filter, depth: usize, count: &mut usize, limits: &QueryLimits) -> Check {
    *count += 1;
    if *count > limits.max_filters {
        return at(
            InvalidExpression::TooMany {
                what: "filters",
                max: limits.max_filters,
            },
            f.origin(),
        );
    }
    if depth > limits.max_depth {
        return at(
            InvalidExpression::TooDeep {
                max: limits.max_depth,
            },
            f.origin(),
        );
    }
    match f {
        Filter::Comparison(c) => {
            property(&c.property)?;
            let operator = c.operator.as_str();
            let tags = c.property.is_tags();
            if tags && c.operator != ComparisonOperator::All {
                return at(InvalidExpression::TagsNeedAll { operator }, c.origin);
            }
            if !tags && c.operator == ComparisonOperator::All {
                return at(InvalidExpression::AllNeedsTags, c.origin);
            }
            match &c.value {
                ComparisonValue::Null => {
                    if c.operator.takes_list() {
                        return at(InvalidExpression::ListRequired { operator }, c.value_origin);
                    }
                    if !matches!(c.operator, ComparisonOperator::Eq | ComparisonOperator::Ne) {
                        return at(
                            InvalidExpression::NullNotAllowed { operator },
                            c.value_origin,
                        );
                    }
                }
                ComparisonValue::Scalar(l) => {
                    if c.operator.takes_list() {
                        return at(InvalidExpression::ListRequired { operator }, c.value_origin);
                    }
                    literal(l, c.value_origin)?;
                }
                ComparisonValue::List(items) => {
                    if !c.operator.takes_list() {
                        return at(
                            InvalidExpression::ListNotAllowed { operator },
                            c.value_origin,
                        );
                    }
                    if items.len() > limits.max_list_items {
                        return at(
                            InvalidExpression::TooMany {
                                what: "list items",
                                max: limits.max_list_items,
                            },
                            c.value_origin,
                        );
                    }
                    for item in items {
                        literal(item, c.value_origin)?;
                        if tags && !matches!(item, Literal::String(_)) {
                            return at(InvalidExpression::TagNotString, c.value_origin);
                        }
                    }
                }
            }
            Ok(())
        }
        Filter::Logical(l) => {
            match l.operator {
                LogicalOperator::Not if l.filters.len() != 1 => {
                    return at(
                        InvalidExpression::NotArity {
                            found: l.filters.len(),
                        },
                        l.origin,
                    );
                }
                LogicalOperator::And | LogicalOperator::Or if l.filters.is_empty() => {
                    return at(
                        InvalidExpression::EmptyLogical {
                            operator: l.operator.as_str(),
                        },
                        l.origin,
                    );
                }
                _ => {}
            }
            for child in &l.filters {
                filter(child, depth + 1, count, limits)?;
            }
            Ok(())
        }
    }
}
