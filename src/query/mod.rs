//! Device queries: the preview's JSON query expression, parsed with nom straight from the
//! text, validated, optimised and answered from the registry's bitmap indexes.
//!
//! # Layers
//!
//! | file | what lives there |
//! |---|---|
//! | `parse.rs` | the nom grammar below, one method per production, errors with spans |
//! | `ast.rs` | the user AST ([`QueryExpression`]), the typed builder, canonical JSON `Display` |
//! | `validate.rs` | the rules beyond syntax, shared by the parser and the builder |
//! | `error.rs` | [`ParseError`] (`span` + [`ParseErrorKind`], rendered with a caret) |
//! | `plan.rs` | lowering to [`Plan`] (interned properties) and normalisation: NOT pushed down, AND/OR flattened, ranges merged, contradictions to `Empty`, equalities in an OR to one IN |
//! | `source.rs` | [`IndexedSource`]: what the executor needs from a document store |
//! | `exec.rs` | the bitmap executor: AND children by cardinality over a shrinking universe, early exit, counts from intersection lengths (over the whole fleet: one bitmap's length), id-ordered pages evaluated chunk by chunk along the id order, sort, paging, aggregates; [`execute`], [`count`], [`tag_query`] |
//! | `aggregate.rs` | aggregate arithmetic shared with the naive evaluator |
//! | `result.rs` | the envelope ([`QueryResult`]), [`QueryOptions`], continuation tokens, [`QueryError`] |
//! | `twins.rs` | twins as a source: [`IndexedSource`] for the registry, the property vocabulary, projections as views ([`TwinProjection`]) |
//! | `naive.rs` | the naive evaluator over owned twins (hidden): the semantics, the test oracle and the bench baseline |
//!
//! Queries run against a borrowed registry, so under a
//! [`SharedRegistry`](crate::registry::SharedRegistry) read guard a query sees every write
//! that returned before it started (read-your-writes), and one consistent state throughout.
//!
//! # Grammar
//!
//! The preview's grammar (`QueryExpressions/*.cs`), written as BNF over JSON tokens.
//! `{a, b, c}` in a production means "an object with these members, **in any order**,
//! each at most once"; any other key is an error. `ws` (space, tab, CR, LF) may appear
//! between any two tokens. Names and keywords are case-sensitive.
//!
//! ```text
//! query          ::= ws "{" {filter_m?, project_m?, aggregate_m?, sort_m?} "}" ws
//! filter_m       ::= "\"filter\""    ":" (filter | "null")
//! project_m      ::= "\"project\""   ":" (projection | "null")
//! aggregate_m    ::= "\"aggregate\"" ":" (aggregation | "null")
//! sort_m         ::= "\"sort\""      ":" ("[" [sort_key ("," sort_key)*] "]" | "null")
//!
//! filter         ::= comparison | logical
//! comparison     ::= "{" {"type": "\"comparison\"", "property": property,
//!                         "comparisonOperator": comparison_op, "value": value} "}"
//! logical        ::= "{" {"type": "\"logical\"", "logicalOperator": logical_op,
//!                         "filters": "[" filter ("," filter)* "]"} "}"
//! comparison_op  ::= "\"eq\"" | "\"ne\"" | "\"gt\"" | "\"gte\"" | "\"lt\"" | "\"lte\""
//!                  | "\"in\"" | "\"nin\"" | "\"all\""
//! logical_op     ::= "\"and\"" | "\"or\"" | "\"not\""
//! value          ::= "null" | scalar | "[" [scalar ("," scalar)*] "]"
//! scalar         ::= string | number | "true" | "false"
//!
//! property       ::= "{" {"name": string, "type": property_type} "}"
//! property_type  ::= "\"default\"" | "\"device\"" | "\"service\"" | "\"custom\""
//!                  | "\"aggregated\""
//!
//! projection     ::= "{" {"all": ("true" | "false")?,
//!                         "properties": ("[" [property ("," property)*] "]")?} "}"
//! aggregation    ::= "{" {"keys": "[" property ("," property)* "]",
//!                         "properties": "[" column ("," column)* "]"} "}"
//! column         ::= "{" {"operator": aggregate_op, "property": (property | "null")?,
//!                         "columnName": string} "}"
//! aggregate_op   ::= "\"sum\"" | "\"avg\"" | "\"count\"" | "\"min\"" | "\"max\""
//! sort_key       ::= "{" {"property": property, "order": ("\"asc\"" | "\"desc\"")?} "}"
//!
//! string         ::= '"' (any char but '"', '\' and U+0000..U+001F | escape)* '"'
//! escape         ::= '\' ('"' | '\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' | 'u' hex hex hex hex)
//! number         ::= '-'? ('0' | [1-9] [0-9]*) ('.' [0-9]+)? ([eE] [+-]? [0-9]+)?
//! ```
//!
//! # Rules beyond syntax
//!
//! - `project` and `aggregate` are mutually exclusive.
//! - Tags are `{"name":"tags","type":"default"}` and take only `all`; `all` takes only tags
//!   (a list of strings). Tags cannot be sort keys or aggregated.
//! - `in`, `nin`, `all` take a list; `eq ne gt gte lt lte` a single value. `null` only with
//!   `ne` (the property exists, as in the preview) and `eq` (it does not).
//! - `not` takes exactly one filter; `and` and `or` at least one.
//! - A projection with `all: false` lists at least one property.
//! - An aggregation has at least one key and one column; column names are non-empty,
//!   unique and contain no `$`; only `count` may omit its property.
//! - `aggregated` properties name an aggregate column and appear only as sort keys of an
//!   aggregate query, whose other sort keys must be aggregate keys.
//! - Size and depth are bounded by [`QueryLimits`] (64 KiB of text, filters nested 32
//!   deep, ...), so parsing and running a query is bounded work.
//!
//! # Semantics
//!
//! Where the preview says nothing, these are the rules (each checked in
//! `tests/query_exec.rs`, against the naive evaluator too):
//!
//! - **Numbers**: integers from `i64::MIN` to `u64::MAX` are exact, in literals and in
//!   twins; other numbers are `f64`. An integer and a float of equal value are equal
//!   (`1 eq 1.0`); an integer and a float compare exactly (`2^63 + 1 gt 2^63` holds even
//!   against the float `9223372036854775808.0`). NaN and infinity are refused
//!   ([`InvalidExpression::NotFinite`]).
//! - **Types**: the scalar order is `false < true <` numbers `<` strings. Range comparisons
//!   (`gt gte lt lte`) stay within the literal's type: a string or boolean is never `gt 0`.
//!   Twins' schema is open, so a literal of a type no twin holds simply matches nothing
//!   (`ne` and `nin` every twin having the property). A source with a fixed schema says
//!   which type each property holds ([`IndexedSource::value_type`]; the job history's
//!   fields are all strings), and there a non-null literal of another type, in any
//!   comparison or `in`/`nin` item at any depth, is refused
//!   ([`QueryError::LiteralType`]), as is a `sum` or `avg` over a property that holds
//!   no numbers ([`QueryError::AggregateType`]); `eq null`/`ne null`, sorts, keys,
//!   `count`, `min` and `max` take any property.
//! - **Missing values and `null`**: `eq null` matches twins lacking the property, `ne null`
//!   twins having it. `ne v` and `nin [..]` match twins that have the property with another
//!   value, not twins lacking it; `eq` and the ranges never match a missing value.
//! - **`not`** is taken over all twins: `not (x eq 1)` also matches twins without `x`.
//! - **Sort**: by the scalar order; missing values come last in both directions (SQL
//!   engines put them first when ascending).
//! - **Aggregates**: `count` without a property is the group's size, with one the number
//!   of twins that have it; `sum` and `avg` take numbers only (an integer sum is exact,
//!   outside `i64::MIN..=u64::MAX` the nearest float; a float sum whose result is beyond `f64`
//!   is [`QueryError::AggregateOverflow`], however large its parts; over no numbers
//!   `null`); `min`/`max` use the scalar
//!   order over every value. A column may not share a key's name, nor a key be given
//!   twice.
//! - **Paging**: a twin whose sort key does not change between two pages is never skipped
//!   or repeated; a twin whose sort key changes in between may be seen twice or not at
//!   all (as with a SQL keyset page). A token carries the last row's sort values: usually
//!   under 200 bytes, at most [`MAX_TOKEN_LEN`] (a query has at most [`MAX_SORT_KEYS`]).
//! - **Canonical text**: `to_string` spells every default out, so it can be longer than
//!   the input; an input whose canonical text would pass the length limit is refused
//!   ([`ParseErrorKind::CanonicalTooLarge`]), so what the parser accepts its text parses
//!   back.
//! - **Depth**: parsing never nests deeper than [`MAX_QUERY_DEPTH`] (128), whatever
//!   [`QueryLimits`] says; running checks the default limits (32).
//!
//! # Example
//!
//! ```
//! use twinhub::query::{parse, QueryExpression, QueryProperty, Filter};
//! let q = parse(r#"{"filter": {"type": "logical", "logicalOperator": "and", "filters": [
//!     {"type": "comparison", "comparisonOperator": "all",
//!      "property": {"name": "tags", "type": "default"}, "value": ["building-7"]},
//!     {"type": "comparison", "comparisonOperator": "lt",
//!      "property": {"name": "BatteryLevel", "type": "device"}, "value": 20}]}}"#).unwrap();
//! let built = QueryExpression::new().filter(Filter::all_of([
//!     QueryProperty::tags().all(["building-7"]),
//!     QueryProperty::device("BatteryLevel").lt(20),
//! ]));
//! assert_eq!(q, built);
//! assert_eq!(parse(&q.to_string()).unwrap(), q);
//! ```

mod aggregate;
mod ast;
mod error;
mod exec;
#[doc(hidden)]
pub mod naive;
mod parse;
mod plan;
mod result;
mod source;
mod twins;
mod validate;

pub use ast::{
    AggregateColumn, AggregateOperator, Aggregation, Comparison, ComparisonOperator,
    ComparisonValue, Filter, Literal, Logical, LogicalOperator, Projection, PropertyType,
    QueryExpression, QueryLimits, QueryProperty, SortKey, SortOrder,
};
pub use error::{Expected, InvalidExpression, Origin, ParseError, ParseErrorKind, Span};
pub use exec::{
    TagQuery, count, count_with, execute, execute_text, matching_slots, plan, tag_query,
};
pub use parse::{MAX_QUERY_DEPTH, MAX_SORT_KEYS, parse, parse_with_limits};
pub use plan::Plan;
pub use result::{
    AggregateRow, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_TOKEN_LEN, QueryError, QueryOptions,
    QueryResult, ResultItem, Strategy,
};
pub use source::{Comparand, IndexedSource, ScalarType, Slots, ValueWalk};
pub use twins::{TwinField, TwinProjection, TwinProjectionPlan, TwinProperty, project_twin};
