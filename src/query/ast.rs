//! The user AST: what the query text (or the typed builder) said, with the source
//! [`Origin`] of each node for error messages. Its `Display` is the canonical JSON form.

use std::fmt;

use super::error::{InvalidExpression, Origin, Span};

/// Bounds on what one query expression may contain. The parser and
/// [`QueryExpression::validate`] enforce them, so an expression that passed either can be
/// lowered and run without unbounded work. Each is a count that is allowed exactly (`n`
/// sort keys pass `max_sort_keys: n`); one more is refused with the error named below
/// (`TooMany` carries the limit and what it counts). Running a query ([`execute`],
/// [`count`]) checks [`QueryLimits::DEFAULT`], whatever limits parsed it.
///
/// [`execute`]: crate::query::execute
/// [`count`]: crate::query::count
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest query text, in bytes (whitespace included); past it
    /// [`ParseErrorKind::InputTooLarge`](super::ParseErrorKind::InputTooLarge), and an
    /// input whose canonical text would be longer is
    /// [`ParseErrorKind::CanonicalTooLarge`](super::ParseErrorKind::CanonicalTooLarge).
    pub max_input_bytes: usize,
    /// Deepest nesting of logical filters (a lone comparison has depth 1, so `n` allows
    /// `n - 1` logicals around a comparison); past it
    /// [`InvalidExpression::TooDeep`]. The parser never goes past
    /// [`MAX_QUERY_DEPTH`](crate::query::MAX_QUERY_DEPTH).
    pub max_depth: usize,
    /// Most filter nodes (comparisons and logicals) in one expression; past it
    /// `TooMany { what: "filters" }`.
    pub max_filters: usize,
    /// Most items in one comparison's list value; past it `TooMany { what: "list items" }`.
    pub max_list_items: usize,
    /// Most projected properties; past it `TooMany { what: "projected properties" }`.
    pub max_projection: usize,
    /// Most aggregate keys; past it `TooMany { what: "aggregate keys" }`.
    pub max_aggregate_keys: usize,
    /// Most aggregate columns; past it `TooMany { what: "aggregate columns" }`.
    pub max_aggregate_columns: usize,
    /// Most sort keys (never more than [`MAX_SORT_KEYS`](crate::query::MAX_SORT_KEYS));
    /// past it `TooMany { what: "sort keys" }`.
    pub max_sort_keys: usize,
}

impl QueryLimits {
    /// The defaults: 64 KiB of text, depth 32, 1024 filters, 1024 list items, 256 projected
    /// properties, 8 aggregate keys, 32 aggregate columns, 8 sort keys.
    pub const DEFAULT: QueryLimits = QueryLimits {
        max_input_bytes: 64 * 1024,
        max_depth: 32,
        max_filters: 1024,
        max_list_items: 1024,
        max_projection: 256,
        max_aggregate_keys: 8,
        max_aggregate_columns: 32,
        max_sort_keys: 8,
    };
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits::DEFAULT
    }
}

/// Which part of a twin a [`QueryProperty`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PropertyType {
    /// A device field (`deviceId`, `status`, `connectionState`, `isManaged`, ...) or, with
    /// the name `tags`, the twin's tags.
    Default,
    /// A device property by its well-known name (`FirmwareVersion`, `BatteryLevel`, ...).
    Device,
    /// A service property (`serviceProperties.properties.<name>`).
    Service,
    /// A custom device property, named by its LWM2M path (e.g. `/4/0/2`).
    Custom,
    /// An aggregate column (only as a sort key of an aggregate query).
    Aggregated,
}

impl PropertyType {
    /// The keywords, in grammar order.
    pub const KEYWORDS: &'static [&'static str] =
        &["default", "device", "service", "custom", "aggregated"];

    /// The keyword as the query text spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            PropertyType::Default => "default",
            PropertyType::Device => "device",
            PropertyType::Service => "service",
            PropertyType::Custom => "custom",
            PropertyType::Aggregated => "aggregated",
        }
    }

    pub(crate) fn from_keyword(s: &str) -> Option<Self> {
        Some(match s {
            "default" => PropertyType::Default,
            "device" => PropertyType::Device,
            "service" => PropertyType::Service,
            "custom" => PropertyType::Custom,
            "aggregated" => PropertyType::Aggregated,
            _ => return None,
        })
    }
}

/// A property reference: `{"name": ..., "type": ...}`.
///
/// ```
/// use twinhub::query::QueryProperty;
/// let fw = QueryProperty::device("FirmwareVersion");
/// assert_eq!(fw.to_string(), r#"{"name":"FirmwareVersion","type":"device"}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueryProperty {
    /// The name, case-sensitive.
    pub name: String,
    /// Which part of the twin it names.
    pub kind: PropertyType,
    /// Where it was written.
    pub origin: Origin,
}

impl QueryProperty {
    /// A property of the given type.
    pub fn new(kind: PropertyType, name: impl Into<String>) -> Self {
        QueryProperty {
            name: name.into(),
            kind,
            origin: Origin::default(),
        }
    }

    /// A device field (`type: "default"`).
    pub fn default_field(name: impl Into<String>) -> Self {
        Self::new(PropertyType::Default, name)
    }

    /// A device property (`type: "device"`).
    pub fn device(name: impl Into<String>) -> Self {
        Self::new(PropertyType::Device, name)
    }

    /// A service property (`type: "service"`).
    pub fn service(name: impl Into<String>) -> Self {
        Self::new(PropertyType::Service, name)
    }

    /// A custom device property by LWM2M path (`type: "custom"`).
    pub fn custom(name: impl Into<String>) -> Self {
        Self::new(PropertyType::Custom, name)
    }

    /// An aggregate column (`type: "aggregated"`).
    pub fn aggregated(name: impl Into<String>) -> Self {
        Self::new(PropertyType::Aggregated, name)
    }

    /// The twin's tags: `{"name":"tags","type":"default"}`.
    pub fn tags() -> Self {
        Self::new(PropertyType::Default, "tags")
    }

    /// Whether this is `{"name":"tags","type":"default"}`.
    pub fn is_tags(&self) -> bool {
        self.kind == PropertyType::Default && self.name == "tags"
    }

    fn compare(self, operator: ComparisonOperator, value: ComparisonValue) -> Filter {
        Filter::Comparison(Comparison {
            property: self,
            operator,
            value,
            origin: Origin::default(),
            value_origin: Origin::default(),
        })
    }

    /// `property eq value`.
    pub fn eq(self, value: impl Into<Literal>) -> Filter {
        self.compare(
            ComparisonOperator::Eq,
            ComparisonValue::Scalar(value.into()),
        )
    }

    /// `property ne value` (the property exists and differs from `value`).
    pub fn ne(self, value: impl Into<Literal>) -> Filter {
        self.compare(
            ComparisonOperator::Ne,
            ComparisonValue::Scalar(value.into()),
        )
    }

    /// `property gt value`.
    pub fn gt(self, value: impl Into<Literal>) -> Filter {
        self.compare(
            ComparisonOperator::Gt,
            ComparisonValue::Scalar(value.into()),
        )
    }

    /// `property gte value`.
    pub fn gte(self, value: impl Into<Literal>) -> Filter {
        self.compare(
            ComparisonOperator::Gte,
            ComparisonValue::Scalar(value.into()),
        )
    }

    /// `property lt value`.
    pub fn lt(self, value: impl Into<Literal>) -> Filter {
        self.compare(
            ComparisonOperator::Lt,
            ComparisonValue::Scalar(value.into()),
        )
    }

    /// `property lte value`.
    pub fn lte(self, value: impl Into<Literal>) -> Filter {
        self.compare(
            ComparisonOperator::Lte,
            ComparisonValue::Scalar(value.into()),
        )
    }

    /// `property in [values]`.
    pub fn is_in<V: Into<Literal>>(self, values: impl IntoIterator<Item = V>) -> Filter {
        self.compare(
            ComparisonOperator::In,
            ComparisonValue::List(values.into_iter().map(Into::into).collect()),
        )
    }

    /// `property nin [values]` (the property exists and equals none of them).
    pub fn not_in<V: Into<Literal>>(self, values: impl IntoIterator<Item = V>) -> Filter {
        self.compare(
            ComparisonOperator::Nin,
            ComparisonValue::List(values.into_iter().map(Into::into).collect()),
        )
    }

    /// `property all [values]`; valid only on [`QueryProperty::tags`].
    pub fn all<V: Into<Literal>>(self, values: impl IntoIterator<Item = V>) -> Filter {
        self.compare(
            ComparisonOperator::All,
            ComparisonValue::List(values.into_iter().map(Into::into).collect()),
        )
    }

    /// `property ne null`: the property exists.
    pub fn exists(self) -> Filter {
        self.compare(ComparisonOperator::Ne, ComparisonValue::Null)
    }

    /// `property eq null`: the property does not exist.
    pub fn missing(self) -> Filter {
        self.compare(ComparisonOperator::Eq, ComparisonValue::Null)
    }
}

/// A JSON scalar in a query: string, finite number or boolean.
///
/// Integers are kept exactly: [`Literal::Integer`] when they fit an `i64` (the parser reads
/// `9007199254740993` as that integer, and `From<i64>` keeps it), [`Literal::Unsigned`]
/// above `i64::MAX` up to `u64::MAX`; other numbers are `f64`s ([`Literal::Number`]:
/// fractions, exponents, and integers beyond the `u64` range). JSON cannot write `NaN` or
/// infinities: [`Literal::number`] refuses them, and a literal made with `From<f64>` from
/// one is refused when the expression is validated or run
/// ([`InvalidExpression::NotFinite`](super::InvalidExpression::NotFinite)); its text is
/// `NaN`, `Infinity` or `-Infinity`, which no JSON parser takes (so such an expression
/// neither parses back nor serialises, rather than mean something else). Float literals
/// print with a fraction or exponent (`1.0`), so printing and parsing give back the same
/// variant. Integer and float literals of equal value match the same twins.
#[derive(Clone, Debug)]
pub enum Literal {
    /// A boolean.
    Bool(bool),
    /// A floating-point number (finite in any valid expression).
    Number(f64),
    /// An integer, exact.
    Integer(i64),
    /// An integer above `i64::MAX`, exact (the parser and `From<u64>` make one only
    /// there; a smaller value is equal to, hashes as, prints as and matches what the
    /// equal [`Literal::Integer`] does, and parses back as that `Integer`).
    Unsigned(u64),
    /// A string.
    String(String),
}

/// Variant by variant, but an `Unsigned` in the `i64` range equals the `Integer` it
/// prints as (and `0.0 == -0.0`).
impl PartialEq for Literal {
    fn eq(&self, other: &Literal) -> bool {
        match (self, other) {
            (Literal::Bool(a), Literal::Bool(b)) => a == b,
            (Literal::Number(a), Literal::Number(b)) => a == b,
            (Literal::Integer(a), Literal::Integer(b)) => a == b,
            (Literal::Unsigned(a), Literal::Unsigned(b)) => a == b,
            (Literal::Integer(i), Literal::Unsigned(u))
            | (Literal::Unsigned(u), Literal::Integer(i)) => u64::try_from(*i) == Ok(*u),
            (Literal::String(a), Literal::String(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Literal {}

impl std::hash::Hash for Literal {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Literal::Bool(b) => (0u8, b).hash(state),
            // `-0.0 == 0.0`, so both hash as 0.0.
            Literal::Number(n) => (1u8, (n + 0.0).to_bits()).hash(state),
            Literal::Integer(i) => (3u8, i).hash(state),
            // As the equal `Integer` where there is one.
            Literal::Unsigned(u) => match i64::try_from(*u) {
                Ok(i) => (3u8, i).hash(state),
                Err(_) => (4u8, u).hash(state),
            },
            Literal::String(s) => (2u8, s).hash(state),
        }
    }
}

impl Literal {
    /// A number literal, or `None` if `n` is not finite (JSON has no NaN or infinity).
    pub fn number(n: f64) -> Option<Literal> {
        n.is_finite().then_some(Literal::Number(n))
    }

    /// The keyword-free JSON type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Literal::Bool(_) => "boolean",
            Literal::Number(_) | Literal::Integer(_) | Literal::Unsigned(_) => "number",
            Literal::String(_) => "string",
        }
    }
}

impl From<&str> for Literal {
    fn from(s: &str) -> Self {
        Literal::String(s.to_owned())
    }
}

impl From<String> for Literal {
    fn from(s: String) -> Self {
        Literal::String(s)
    }
}

impl From<bool> for Literal {
    fn from(b: bool) -> Self {
        Literal::Bool(b)
    }
}

impl From<f64> for Literal {
    /// A float literal; NaN and infinities (which JSON cannot carry) make the expression
    /// invalid ([`InvalidExpression::NotFinite`](super::InvalidExpression::NotFinite) when
    /// it is validated or run).
    fn from(n: f64) -> Self {
        Literal::Number(n)
    }
}

macro_rules! literal_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Literal {
            /// Exact: [`Literal::Integer`], or [`Literal::Unsigned`] above `i64::MAX`.
            fn from(n: $t) -> Self {
                match i64::try_from(n) {
                    Ok(i) => Literal::Integer(i),
                    // Every integer type here fits a u64 when it does not fit an i64.
                    Err(_) => Literal::Unsigned(n as u64),
                }
            }
        }
    )*};
}
literal_from_int!(i32, u32, i64, u64, usize);

/// The right-hand side of a comparison.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ComparisonValue {
    /// `null`: with `ne`, "the property exists"; with `eq`, "it does not".
    Null,
    /// One scalar.
    Scalar(Literal),
    /// A list, for `in`, `nin` and `all`.
    List(Vec<Literal>),
}

/// `comparisonOperator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComparisonOperator {
    /// Equal.
    Eq,
    /// Not equal (and the property exists); with `null`, "exists".
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Equal to one of a list.
    In,
    /// Exists and equal to none of a list.
    Nin,
    /// Contains all of a list (tags only).
    All,
}

impl ComparisonOperator {
    /// The keywords, in grammar order.
    pub const KEYWORDS: &'static [&'static str] =
        &["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "all"];

    /// The keyword as the query text spells it.
    pub const fn as_str(self) -> &'static str {
        use ComparisonOperator::*;
        match self {
            Eq => "eq",
            Ne => "ne",
            Gt => "gt",
            Gte => "gte",
            Lt => "lt",
            Lte => "lte",
            In => "in",
            Nin => "nin",
            All => "all",
        }
    }

    pub(crate) fn from_keyword(s: &str) -> Option<Self> {
        use ComparisonOperator::*;
        Some(match s {
            "eq" => Eq,
            "ne" => Ne,
            "gt" => Gt,
            "gte" => Gte,
            "lt" => Lt,
            "lte" => Lte,
            "in" => In,
            "nin" => Nin,
            "all" => All,
            _ => return None,
        })
    }

    /// Whether the operator takes a list value.
    pub const fn takes_list(self) -> bool {
        matches!(
            self,
            ComparisonOperator::In | ComparisonOperator::Nin | ComparisonOperator::All
        )
    }
}

/// `{"type":"comparison", "property": .., "comparisonOperator": .., "value": ..}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Comparison {
    /// The property compared.
    pub property: QueryProperty,
    /// The operator.
    pub operator: ComparisonOperator,
    /// The value compared with.
    pub value: ComparisonValue,
    /// Where the whole comparison object was written.
    pub origin: Origin,
    /// Where its `value` was written.
    pub value_origin: Origin,
}

/// `logicalOperator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogicalOperator {
    /// All filters hold.
    And,
    /// At least one filter holds.
    Or,
    /// The single filter does not hold.
    Not,
}

impl LogicalOperator {
    /// The keywords, in grammar order.
    pub const KEYWORDS: &'static [&'static str] = &["and", "or", "not"];

    /// The keyword as the query text spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogicalOperator::And => "and",
            LogicalOperator::Or => "or",
            LogicalOperator::Not => "not",
        }
    }

    pub(crate) fn from_keyword(s: &str) -> Option<Self> {
        Some(match s {
            "and" => LogicalOperator::And,
            "or" => LogicalOperator::Or,
            "not" => LogicalOperator::Not,
            _ => return None,
        })
    }
}

/// `{"type":"logical", "logicalOperator": .., "filters": [..]}`.
///
/// A filter tree built in Rust may nest deeper than the parser allows
/// ([`MAX_QUERY_DEPTH`](crate::query::MAX_QUERY_DEPTH)): dropping, printing, comparing and
/// hashing, cloning and debug-printing one walk it with an explicit stack, never with
/// the call stack. Evaluating one deeper than the limits is a typed error
/// ([`InvalidExpression::TooDeep`](crate::query::InvalidExpression::TooDeep)).
#[derive(Clone, Debug)]
pub struct Logical {
    /// The operator.
    pub operator: LogicalOperator,
    /// Its operands (exactly one for `not`).
    pub filters: Vec<Filter>,
    /// Where the logical object was written.
    pub origin: Origin,
}

impl Drop for Logical {
    fn drop(&mut self) {
        // Children are moved onto a heap stack and emptied there, so dropping a tree of
        // any depth uses constant call stack.
        let mut stack = std::mem::take(&mut self.filters);
        while let Some(filter) = stack.pop() {
            if let Filter::Logical(mut l) = filter {
                stack.append(&mut l.filters);
            }
        }
    }
}

impl PartialEq for Logical {
    fn eq(&self, other: &Logical) -> bool {
        self.operator == other.operator
            && self.filters.len() == other.filters.len()
            && self.filters.iter().zip(&other.filters).all(|(a, b)| a == b)
    }
}

impl Eq for Logical {}

impl std::hash::Hash for Logical {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.operator.hash(state);
        self.filters.len().hash(state);
        for f in &self.filters {
            f.hash(state);
        }
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Filter) -> bool {
        let mut stack = vec![(self, other)];
        while let Some(pair) = stack.pop() {
            match pair {
                (Filter::Comparison(a), Filter::Comparison(b)) => {
                    if a != b {
                        return false;
                    }
                }
                (Filter::Logical(a), Filter::Logical(b)) => {
                    if a.operator != b.operator || a.filters.len() != b.filters.len() {
                        return false;
                    }
                    stack.extend(a.filters.iter().zip(&b.filters));
                }
                _ => return false,
            }
        }
        true
    }
}

impl Eq for Filter {}

impl Clone for Filter {
    fn clone(&self) -> Filter {
        // Post-order with an explicit stack: a node is built once its children are.
        enum Step<'a> {
            Visit(&'a Filter),
            Build(&'a Logical),
        }
        let mut steps = vec![Step::Visit(self)];
        let mut built: Vec<Filter> = Vec::new();
        while let Some(step) = steps.pop() {
            match step {
                Step::Visit(Filter::Comparison(c)) => built.push(Filter::Comparison(c.clone())),
                Step::Visit(Filter::Logical(l)) => {
                    steps.push(Step::Build(l));
                    steps.extend(l.filters.iter().rev().map(Step::Visit));
                }
                Step::Build(l) => {
                    let filters = built.split_off(built.len() - l.filters.len());
                    built.push(Filter::Logical(Logical {
                        operator: l.operator,
                        filters,
                        origin: l.origin,
                    }));
                }
            }
        }
        built.pop().expect("the root is built last")
    }
}

/// The canonical JSON (the `Display` form, written without recursion), not the tree of
/// Rust values a derived `Debug` would print (and recurse through).
impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Filter({self})")
    }
}

impl std::hash::Hash for Filter {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Pre-order with an explicit stack: equal trees feed the same sequence.
        let mut stack = vec![self];
        while let Some(f) = stack.pop() {
            match f {
                Filter::Comparison(c) => {
                    0u8.hash(state);
                    c.hash(state);
                }
                Filter::Logical(l) => {
                    1u8.hash(state);
                    l.operator.hash(state);
                    l.filters.len().hash(state);
                    stack.extend(l.filters.iter().rev());
                }
            }
        }
    }
}

/// A filter: a comparison or a logical combination of filters.
///
/// ```
/// use twinhub::query::{Filter, QueryProperty};
/// let f = Filter::all_of([
///     QueryProperty::tags().all(["building-7"]),
///     QueryProperty::device("BatteryLevel").lt(20),
/// ]);
/// assert_eq!(
///     f.to_string(),
///     r#"{"type":"logical","logicalOperator":"and","filters":[{"type":"comparison","property":{"name":"tags","type":"default"},"comparisonOperator":"all","value":["building-7"]},{"type":"comparison","property":{"name":"BatteryLevel","type":"device"},"comparisonOperator":"lt","value":20}]}"#
/// );
/// ```
pub enum Filter {
    /// A comparison.
    Comparison(Comparison),
    /// A logical combination.
    Logical(Logical),
}

impl Filter {
    fn logical(operator: LogicalOperator, filters: Vec<Filter>) -> Filter {
        Filter::Logical(Logical {
            operator,
            filters,
            origin: Origin::default(),
        })
    }

    /// `and` and `or` with the operands that are themselves the same operator spliced
    /// in (`all_of([all_of([a, b]), c])` is one `and` of three): the same meaning, and a
    /// chain built in a loop stays flat.
    fn flat(operator: LogicalOperator, filters: impl IntoIterator<Item = Filter>) -> Filter {
        let mut out = Vec::new();
        for f in filters {
            match f {
                Filter::Logical(mut l) if l.operator == operator => out.append(&mut l.filters),
                other => out.push(other),
            }
        }
        Self::logical(operator, out)
    }

    /// `and` of the filters; operands that are `and`s themselves are flattened into it.
    pub fn all_of(filters: impl IntoIterator<Item = Filter>) -> Filter {
        Self::flat(LogicalOperator::And, filters)
    }

    /// `or` of the filters; operands that are `or`s themselves are flattened into it.
    pub fn any_of(filters: impl IntoIterator<Item = Filter>) -> Filter {
        Self::flat(LogicalOperator::Or, filters)
    }

    /// `not` of the filter (also the `!` operator); `not not f` is `f`.
    pub fn negate(filter: Filter) -> Filter {
        match filter {
            Filter::Logical(mut l)
                if l.operator == LogicalOperator::Not && l.filters.len() == 1 =>
            {
                l.filters.pop().expect("one operand")
            }
            other => Self::logical(LogicalOperator::Not, vec![other]),
        }
    }

    /// Where the filter was written.
    pub fn origin(&self) -> Origin {
        match self {
            Filter::Comparison(c) => c.origin,
            Filter::Logical(l) => l.origin,
        }
    }
}

impl std::ops::Not for Filter {
    type Output = Filter;
    fn not(self) -> Filter {
        Filter::negate(self)
    }
}

/// `project`: `{"all": bool, "properties": [..]}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Projection {
    /// Return whole twins.
    pub all: bool,
    /// The properties to return when `all` is false.
    pub properties: Vec<QueryProperty>,
    /// Where the projection was written.
    pub origin: Origin,
}

impl Projection {
    /// Whole twins.
    pub fn all() -> Self {
        Projection {
            all: true,
            properties: Vec::new(),
            origin: Origin::default(),
        }
    }

    /// Only the given properties (and the device id).
    pub fn properties(properties: impl IntoIterator<Item = QueryProperty>) -> Self {
        Projection {
            all: false,
            properties: properties.into_iter().collect(),
            origin: Origin::default(),
        }
    }
}

/// An aggregate operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggregateOperator {
    /// Sum of the numeric values.
    Sum,
    /// Mean of the numeric values.
    Avg,
    /// Number of twins (with a property: that have it).
    Count,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
}

impl AggregateOperator {
    /// The keywords, in grammar order.
    pub const KEYWORDS: &'static [&'static str] = &["sum", "avg", "count", "min", "max"];

    /// The keyword as the query text spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            AggregateOperator::Sum => "sum",
            AggregateOperator::Avg => "avg",
            AggregateOperator::Count => "count",
            AggregateOperator::Min => "min",
            AggregateOperator::Max => "max",
        }
    }

    pub(crate) fn from_keyword(s: &str) -> Option<Self> {
        Some(match s {
            "sum" => AggregateOperator::Sum,
            "avg" => AggregateOperator::Avg,
            "count" => AggregateOperator::Count,
            "min" => AggregateOperator::Min,
            "max" => AggregateOperator::Max,
            _ => return None,
        })
    }
}

/// One aggregate column: `{"operator": .., "property": .. | null, "columnName": ..}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AggregateColumn {
    /// The operator.
    pub operator: AggregateOperator,
    /// The property aggregated (`None` only for `count`).
    pub property: Option<QueryProperty>,
    /// The column's name in the result rows (no `$`).
    pub column_name: String,
    /// Where the column was written.
    pub origin: Origin,
}

/// `aggregate`: group by `keys`, compute `properties` (columns) per group.
///
/// ```
/// use twinhub::query::{AggregateOperator, Aggregation, QueryProperty};
/// let agg = Aggregation::by([QueryProperty::device("FirmwareVersion")])
///     .column(AggregateOperator::Count, None, "devices")
///     .column(AggregateOperator::Avg, Some(QueryProperty::device("BatteryLevel")), "battery");
/// assert_eq!(agg.columns.len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Aggregation {
    /// The grouping keys.
    pub keys: Vec<QueryProperty>,
    /// The columns (the preview's `properties`).
    pub columns: Vec<AggregateColumn>,
    /// Where the aggregation was written.
    pub origin: Origin,
}

impl Aggregation {
    /// An aggregation grouped by `keys`, without columns yet.
    pub fn by(keys: impl IntoIterator<Item = QueryProperty>) -> Self {
        Aggregation {
            keys: keys.into_iter().collect(),
            columns: Vec::new(),
            origin: Origin::default(),
        }
    }

    /// Adds a column.
    pub fn column(
        mut self,
        operator: AggregateOperator,
        property: Option<QueryProperty>,
        column_name: impl Into<String>,
    ) -> Self {
        self.columns.push(AggregateColumn {
            operator,
            property,
            column_name: column_name.into(),
            origin: Origin::default(),
        });
        self
    }
}

/// `order`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SortOrder {
    /// Ascending (the default).
    #[default]
    Asc,
    /// Descending.
    Desc,
}

impl SortOrder {
    /// The keywords.
    pub const KEYWORDS: &'static [&'static str] = &["asc", "desc"];

    /// The keyword as the query text spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        }
    }

    pub(crate) fn from_keyword(s: &str) -> Option<Self> {
        match s {
            "asc" => Some(SortOrder::Asc),
            "desc" => Some(SortOrder::Desc),
            _ => None,
        }
    }
}

/// One sort key: `{"property": .., "order": "asc"|"desc"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SortKey {
    /// The property sorted on.
    pub property: QueryProperty,
    /// The direction.
    pub order: SortOrder,
    /// Where the sort key was written.
    pub origin: Origin,
}

impl SortKey {
    /// Ascending on `property`.
    pub fn asc(property: QueryProperty) -> Self {
        SortKey {
            property,
            order: SortOrder::Asc,
            origin: Origin::default(),
        }
    }

    /// Descending on `property`.
    pub fn desc(property: QueryProperty) -> Self {
        SortKey {
            property,
            order: SortOrder::Desc,
            origin: Origin::default(),
        }
    }
}

/// A whole query expression: `{filter?, project?, aggregate?, sort?}`.
///
/// Build one in Rust or parse one from text; both give the same value, and its `Display` is
/// the canonical JSON text that parses back to it.
///
/// ```
/// use twinhub::query::{QueryExpression, QueryProperty, SortKey};
/// let q = QueryExpression::new()
///     .filter(QueryProperty::device("FirmwareVersion").eq("1.0"))
///     .sort(SortKey::desc(QueryProperty::device("BatteryLevel")));
/// q.validate().unwrap();
/// assert_eq!(twinhub::query::parse(&q.to_string()).unwrap(), q);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueryExpression {
    /// Which twins; `None` means all.
    pub filter: Option<Filter>,
    /// What to return of each twin; `None` means whole twins.
    pub project: Option<Projection>,
    /// Group and aggregate instead of returning twins.
    pub aggregate: Option<Aggregation>,
    /// Result order, most significant key first; ties are broken by device id.
    pub sort: Vec<SortKey>,
}

/// In JSON the expression is itself: `{"filter": ..., "sort": ...}` inside a request body
/// deserialises straight through the query parser (the text is parsed once, by
/// [`parse`](fn@crate::query::parse), with its limits; an error carries the parser's message
/// with the line and column inside the expression). JSON only: the expression is taken
/// as raw JSON text, which other formats do not have.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Body { query: twinhub::query::QueryExpression }
/// let body: Body = serde_json::from_str(r#"{"query": {"filter": {"type": "comparison",
///     "comparisonOperator": "eq", "property": {"name": "x", "type": "service"}, "value": 1}}}"#)?;
/// assert_eq!(serde_json::to_value(&body.query)?["filter"]["value"], 1);
/// let bad = serde_json::from_str::<Body>(r#"{"query": {"sort": 1}}"#);
/// assert!(bad.err().unwrap().to_string().contains("line 1"));
/// # Ok::<(), serde_json::Error>(())
/// ```
impl<'de> serde::Deserialize<'de> for QueryExpression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <Box<serde_json::value::RawValue>>::deserialize(d)?;
        crate::query::parse(raw.get()).map_err(serde::de::Error::custom)
    }
}

/// Serialises as the JSON expression its `Display` prints (JSON only, see `Deserialize`).
impl serde::Serialize for QueryExpression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl QueryExpression {
    /// The expression that selects every twin.
    pub fn new() -> Self {
        QueryExpression::default()
    }

    /// Sets the filter.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sets the projection.
    pub fn project(mut self, projection: Projection) -> Self {
        self.project = Some(projection);
        self
    }

    /// Sets the aggregation.
    pub fn aggregate(mut self, aggregation: Aggregation) -> Self {
        self.aggregate = Some(aggregation);
        self
    }

    /// Appends a sort key.
    pub fn sort(mut self, key: SortKey) -> Self {
        self.sort.push(key);
        self
    }

    /// Checks the grammar's rules beyond syntax under the default limits.
    pub fn validate(&self) -> Result<(), InvalidExpression> {
        self.validate_with(&QueryLimits::DEFAULT)
            .map_err(|(invalid, _)| invalid)
    }

    /// Checks the grammar's rules; on failure also says where (for parsed expressions).
    pub(crate) fn validate_with(
        &self,
        limits: &QueryLimits,
    ) -> Result<(), (InvalidExpression, Option<Span>)> {
        super::validate::expression(self, limits)
    }
}

// ---------------------------------------------------------------------------------------
// Canonical JSON
// ---------------------------------------------------------------------------------------

/// Writes `s` as a JSON string.
pub(crate) fn write_json_string(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Writes a finite `f64` as the shortest JSON number that parses back to it.
pub(crate) fn write_json_number(f: &mut impl fmt::Write, n: f64) -> fmt::Result {
    let abs = n.abs();
    if abs != 0.0 && !(1e-5..1e16).contains(&abs) {
        write!(f, "{n:e}")
    } else {
        write!(f, "{n}")
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            // Not JSON, on purpose: an invalid expression's text must not parse as
            // another, valid one (`null` would: `eq null` is "missing").
            Literal::Number(n) if n.is_nan() => f.write_str("NaN"),
            Literal::Number(n) if !n.is_finite() => {
                f.write_str(if *n > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Literal::Number(n) => {
                let mut s = String::new();
                write_json_number(&mut s, *n)?;
                if !s.contains(['.', 'e', 'E']) {
                    s.push_str(".0");
                }
                f.write_str(&s)
            }
            Literal::Integer(i) => write!(f, "{i}"),
            Literal::Unsigned(u) => write!(f, "{u}"),
            Literal::String(s) => write_json_string(f, s),
        }
    }
}

impl fmt::Display for ComparisonValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComparisonValue::Null => f.write_str("null"),
            ComparisonValue::Scalar(l) => l.fmt(f),
            ComparisonValue::List(items) => {
                f.write_str("[")?;
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        f.write_str(",")?;
                    }
                    item.fmt(f)?;
                }
                f.write_str("]")
            }
        }
    }
}

impl fmt::Display for QueryProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{\"name\":")?;
        write_json_string(f, &self.name)?;
        write!(f, ",\"type\":\"{}\"}}", self.kind.as_str())
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An explicit stack, not recursion: a tree built in Rust may nest very deep.
        enum Step<'a> {
            Filter(&'a Filter),
            Text(&'static str),
        }
        let mut stack = vec![Step::Filter(self)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Text(t) => f.write_str(t)?,
                Step::Filter(Filter::Comparison(c)) => write!(
                    f,
                    "{{\"type\":\"comparison\",\"property\":{},\"comparisonOperator\":\"{}\",\"value\":{}}}",
                    c.property,
                    c.operator.as_str(),
                    c.value
                )?,
                Step::Filter(Filter::Logical(l)) => {
                    write!(
                        f,
                        "{{\"type\":\"logical\",\"logicalOperator\":\"{}\",\"filters\":[",
                        l.operator.as_str()
                    )?;
                    stack.push(Step::Text("]}"));
                    for (n, child) in l.filters.iter().enumerate().rev() {
                        stack.push(Step::Filter(child));
                        if n > 0 {
                            stack.push(Step::Text(","));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{\"all\":{},\"properties\":[", self.all)?;
        for (n, p) in self.properties.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            p.fmt(f)?;
        }
        f.write_str("]}")
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{\"keys\":[")?;
        for (n, k) in self.keys.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            k.fmt(f)?;
        }
        f.write_str("],\"properties\":[")?;
        for (n, c) in self.columns.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(
                f,
                "{{\"operator\":\"{}\",\"property\":",
                c.operator.as_str()
            )?;
            match &c.property {
                Some(p) => p.fmt(f)?,
                None => f.write_str("null")?,
            }
            f.write_str(",\"columnName\":")?;
            write_json_string(f, &c.column_name)?;
            f.write_str("}")?;
        }
        f.write_str("]}")
    }
}

impl fmt::Display for SortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{\"property\":{},\"order\":\"{}\"}}",
            self.property,
            self.order.as_str()
        )
    }
}

impl fmt::Display for QueryExpression {
    /// The canonical JSON form: compact, keys in grammar order, absent parts omitted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
            if !std::mem::take(&mut first) {
                f.write_str(",")?;
            }
            Ok(())
        };
        if let Some(filter) = &self.filter {
            sep(f)?;
            write!(f, "\"filter\":{filter}")?;
        }
        if let Some(project) = &self.project {
            sep(f)?;
            write!(f, "\"project\":{project}")?;
        }
        if let Some(aggregate) = &self.aggregate {
            sep(f)?;
            write!(f, "\"aggregate\":{aggregate}")?;
        }
        if !self.sort.is_empty() {
            sep(f)?;
            f.write_str("\"sort\":[")?;
            for (n, key) in self.sort.iter().enumerate() {
                if n > 0 {
                    f.write_str(",")?;
                }
                key.fmt(f)?;
            }
            f.write_str("]")?;
        }
        f.write_str("}")
    }
}
