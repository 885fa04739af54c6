//! Errors of the query front end: where in the text ([`Span`]) and what went wrong
//! ([`ParseErrorKind`]), plus the rule violations that the typed builder can also make
//! ([`InvalidExpression`]).

use std::fmt;

/// A byte range `start..end` in the query text.
///
/// Spans index the UTF-8 text the parser was given; `start <= end <= text.len()`, and both
/// ends fall on character boundaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte of the range.
    pub start: usize,
    /// One past the last byte of the range.
    pub end: usize,
}

impl Span {
    /// The range `start..end`.
    pub const fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
}

/// Where an AST node came from in the query text, if it was parsed (the typed builder
/// leaves it empty).
///
/// An origin is metadata: it never takes part in equality or hashing, so an expression
/// parsed from text equals the same expression built in Rust or parsed from its canonical
/// form (`parse(display(q)) == q`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Origin(pub Option<Span>);

impl PartialEq for Origin {
    fn eq(&self, _: &Origin) -> bool {
        true
    }
}

impl Eq for Origin {}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// What the parser was looking for when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expected {
    /// `{` opening an object (the named production).
    Object(&'static str),
    /// `[` opening an array (the named production).
    Array(&'static str),
    /// A JSON string.
    String,
    /// A closing `"` of a string.
    StringEnd,
    /// `true` or `false`.
    Bool,
    /// A digit of a number.
    Digit,
    /// A string, number or boolean.
    Scalar,
    /// A scalar, a list of scalars or `null` (a comparison's `value`).
    ComparisonValue,
    /// A quoted object key or `}`.
    KeyOrObjectEnd,
    /// A quoted object key.
    Key,
    /// `:` after an object key.
    Colon,
    /// `,` or `}` after an object member.
    CommaOrObjectEnd,
    /// `,` or `]` after an array element.
    CommaOrArrayEnd,
    /// The end of the input (after the query expression).
    End,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Object(what) => write!(f, "`{{` opening {what}"),
            Expected::Array(what) => write!(f, "`[` opening {what}"),
            Expected::String => f.write_str("a string"),
            Expected::StringEnd => f.write_str("`\"` closing the string"),
            Expected::Bool => f.write_str("`true` or `false`"),
            Expected::Digit => f.write_str("a digit"),
            Expected::Scalar => f.write_str("a string, number or boolean"),
            Expected::ComparisonValue => {
                f.write_str("a string, number, boolean, list of them or `null`")
            }
            Expected::KeyOrObjectEnd => f.write_str("a quoted key or `}`"),
            Expected::Key => f.write_str("a quoted key"),
            Expected::Colon => f.write_str("`:`"),
            Expected::CommaOrObjectEnd => f.write_str("`,` or `}`"),
            Expected::CommaOrArrayEnd => f.write_str("`,` or `]`"),
            Expected::End => f.write_str("the end of the input"),
        }
    }
}

/// A query expression that breaks one of the grammar's rules beyond JSON syntax. The
/// parser reports these with a span; [`QueryExpression::validate`](super::QueryExpression::validate)
/// reports them for expressions built in Rust.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidExpression {
    /// Both `project` and `aggregate` are given; they are mutually exclusive.
    ProjectAndAggregate,
    /// `{name:"tags", type:"default"}` was compared with something other than `all`.
    TagsNeedAll {
        /// The operator used.
        operator: &'static str,
    },
    /// `all` was used on a property other than `{name:"tags", type:"default"}`.
    AllNeedsTags,
    /// Tags appear where only scalar properties make sense (sort, aggregate).
    TagsNotAllowed {
        /// Where: `sort` or `aggregate`.
        place: &'static str,
    },
    /// `in`, `nin` and `all` take a list value.
    ListRequired {
        /// The operator used.
        operator: &'static str,
    },
    /// `eq ne gt gte lt lte` take a single value (or `null` for `eq`/`ne`).
    ListNotAllowed {
        /// The operator used.
        operator: &'static str,
    },
    /// `null` is only meaningful with `eq` (does not exist) and `ne` (exists).
    NullNotAllowed {
        /// The operator used.
        operator: &'static str,
    },
    /// Tags are strings; a tag list held something else.
    TagNotString,
    /// A number literal is NaN or infinite (only the builder can make one).
    NotFinite,
    /// `not` takes exactly one filter.
    NotArity {
        /// How many it was given.
        found: usize,
    },
    /// `and` and `or` take at least one filter.
    EmptyLogical {
        /// The operator used.
        operator: &'static str,
    },
    /// A projection with `all: false` lists no properties.
    EmptyProjection,
    /// An aggregation without keys.
    EmptyAggregateKeys,
    /// An aggregation without properties (columns).
    EmptyAggregateColumns,
    /// An aggregate column name is empty.
    EmptyColumnName,
    /// An aggregate column name contains `$`.
    DollarInColumnName {
        /// The name given.
        name: String,
    },
    /// Two aggregate columns share a name.
    DuplicateColumnName {
        /// The name given twice.
        name: String,
    },
    /// Two aggregate keys share a name (each key is a field of the result rows).
    DuplicateAggregateKey {
        /// The name given twice.
        name: String,
    },
    /// An aggregate column is named like a key: the row would hold one field for both.
    ColumnNameIsKey {
        /// The name.
        name: String,
    },
    /// An aggregate column without a property uses an operator other than `count`.
    PropertyRequired {
        /// The operator used.
        operator: &'static str,
    },
    /// A property name is empty.
    EmptyPropertyName,
    /// A property of type `aggregated` outside a sort of an aggregate query.
    AggregatedNotAllowed,
    /// A sort key of type `aggregated` names no aggregate column.
    UnknownColumn {
        /// The name given.
        name: String,
    },
    /// With `aggregate`, sort keys must be aggregate keys or columns.
    SortKeyNotInAggregate {
        /// The property name given.
        name: String,
    },
    /// Filters nest deeper than the limit.
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// More items of one kind than the limit allows.
    TooMany {
        /// What there were too many of.
        what: &'static str,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for InvalidExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use InvalidExpression::*;
        match self {
            ProjectAndAggregate => f.write_str("`project` and `aggregate` are mutually exclusive"),
            TagsNeedAll { operator } => {
                write!(f, "tags only take the `all` operator, not `{operator}`")
            }
            AllNeedsTags => {
                f.write_str("`all` only applies to tags ({\"name\":\"tags\",\"type\":\"default\"})")
            }
            TagsNotAllowed { place } => write!(f, "tags cannot be used in `{place}`"),
            ListRequired { operator } => write!(f, "`{operator}` needs a list value"),
            ListNotAllowed { operator } => {
                write!(f, "`{operator}` takes a single value, not a list")
            }
            NullNotAllowed { operator } => write!(
                f,
                "`{operator}` cannot compare with null (only `eq` and `ne` can)"
            ),
            TagNotString => f.write_str("tags are strings"),
            NotFinite => f.write_str("numbers must be finite"),
            NotArity { found } => write!(f, "`not` takes exactly one filter, found {found}"),
            EmptyLogical { operator } => write!(f, "`{operator}` needs at least one filter"),
            EmptyProjection => {
                f.write_str("a projection needs `all: true` or at least one property")
            }
            EmptyAggregateKeys => f.write_str("an aggregation needs at least one key"),
            EmptyAggregateColumns => f.write_str("an aggregation needs at least one property"),
            EmptyColumnName => f.write_str("a column name cannot be empty"),
            DollarInColumnName { name } => write!(f, "column name `{name}` contains `$`"),
            DuplicateColumnName { name } => write!(f, "column name `{name}` is used twice"),
            DuplicateAggregateKey { name } => {
                write!(f, "aggregate key `{name}` is given twice")
            }
            ColumnNameIsKey { name } => write!(
                f,
                "column name `{name}` is also an aggregate key's name; rows would hold one field for both"
            ),
            PropertyRequired { operator } => write!(
                f,
                "`{operator}` needs a property (only `count` works without one)"
            ),
            EmptyPropertyName => f.write_str("a property name cannot be empty"),
            AggregatedNotAllowed => f.write_str(
                "properties of type `aggregated` only appear as sort keys of an aggregate query",
            ),
            UnknownColumn { name } => write!(f, "no aggregate column is named `{name}`"),
            SortKeyNotInAggregate { name } => write!(
                f,
                "sort key `{name}` is neither an aggregate key nor an aggregate column"
            ),
            TooDeep { max } => write!(f, "filters nest deeper than {max} levels"),
            TooMany { what, max } => write!(f, "more than {max} {what}"),
        }
    }
}

impl std::error::Error for InvalidExpression {}

/// What went wrong while parsing a query expression.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The text is not what the grammar allows here.
    Expected {
        /// What the grammar allows.
        expected: Expected,
        /// The character found instead (`None` at the end of the input).
        found: Option<char>,
    },
    /// A keyword-valued field holds a string outside its set.
    UnknownKeyword {
        /// The field, e.g. `comparisonOperator`.
        field: &'static str,
        /// What was found.
        found: String,
        /// The allowed keywords.
        expected: &'static [&'static str],
    },
    /// An object has a key its production does not know.
    UnknownKey {
        /// The key found.
        key: String,
        /// The production, e.g. `a filter`.
        object: &'static str,
        /// The allowed keys.
        expected: &'static [&'static str],
    },
    /// An object has the same key twice.
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// An object lacks a required key.
    MissingKey {
        /// The missing key.
        key: &'static str,
        /// The production, e.g. `a comparison`.
        object: &'static str,
    },
    /// A key that belongs to the other kind of filter (e.g. `filters` in a comparison).
    KeyNotAllowed {
        /// The key found.
        key: &'static str,
        /// The filter type, `comparison` or `logical`.
        filter_type: &'static str,
    },
    /// A backslash escape that JSON does not define.
    InvalidEscape,
    /// A `\u` escape that is not a valid Unicode scalar (e.g. a lone surrogate).
    InvalidUnicodeEscape,
    /// An unescaped control character inside a string.
    ControlCharacter,
    /// A number outside the range of an `f64`.
    NumberOutOfRange,
    /// The input is longer than the limit.
    InputTooLarge {
        /// The limit, in bytes.
        max: usize,
        /// The input's length, in bytes.
        actual: usize,
    },
    /// The input is within the limit but the expression's canonical text (what
    /// `to_string` writes, every default spelled out) is not, so it could not be parsed
    /// back: shorten the expression.
    CanonicalTooLarge {
        /// The limit, in bytes.
        max: usize,
        /// The canonical text's length, in bytes.
        actual: usize,
    },
    /// The expression breaks a rule of the grammar.
    Invalid(InvalidExpression),
    /// A parser error that was not mapped to a kind above: a bug in this crate, never the
    /// caller's mistake (the fuzz target asserts it never appears).
    Internal {
        /// The failing nom combinator.
        detail: String,
    },
}

impl fmt::Display for ParseErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ParseErrorKind::*;
        match self {
            Expected { expected, found } => {
                write!(f, "expected {expected}, found ")?;
                match found {
                    Some(c) if c.is_control() => write!(f, "{:?}", c),
                    Some(c) => write!(f, "`{c}`"),
                    None => f.write_str("the end of the input"),
                }
            }
            UnknownKeyword {
                field,
                found,
                expected,
            } => {
                write!(f, "unknown {field} `{found}`, expected one of ")?;
                write_list(f, expected)
            }
            UnknownKey {
                key,
                object,
                expected,
            } => {
                write!(f, "unknown key `{key}` in {object}, expected one of ")?;
                write_list(f, expected)
            }
            DuplicateKey { key } => write!(f, "duplicate key `{key}`"),
            MissingKey { key, object } => write!(f, "missing key `{key}` in {object}"),
            KeyNotAllowed { key, filter_type } => {
                write!(f, "key `{key}` does not belong in a {filter_type} filter")
            }
            InvalidEscape => f.write_str("invalid escape sequence"),
            InvalidUnicodeEscape => f.write_str("invalid unicode escape (lone surrogate)"),
            ControlCharacter => f.write_str("unescaped control character in string"),
            NumberOutOfRange => f.write_str("number out of range"),
            InputTooLarge { max, actual } => {
                write!(f, "query is {actual} bytes long, the limit is {max}")
            }
            CanonicalTooLarge { max, actual } => write!(
                f,
                "query's canonical text would be {actual} bytes long, the limit is {max}"
            ),
            Invalid(invalid) => invalid.fmt(f),
            Internal { detail } => write!(f, "internal parser error ({detail})"),
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[&str]) -> fmt::Result {
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            f.write_str(", ")?;
        }
        write!(f, "`{item}`")?;
    }
    Ok(())
}

/// Longest excerpt of the input line that an error message shows, in characters.
const MAX_EXCERPT_CHARS: usize = 120;

/// A query text that could not be parsed: where ([`span`](Self::span), line, column) and
/// what went wrong ([`kind`](Self::kind)).
///
/// Its `Display` renders the message, the line of input and a caret under the span:
///
/// ```
/// let err = twinhub::query::parse(r#"{"sort": [{"property": {"name": "x", "type": "devise"}}]}"#)
///     .unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "unknown property type `devise`, expected one of `default`, `device`, `service`, \
///      `custom`, `aggregated` at line 1, column 46\n\
///      {\"sort\": [{\"property\": {\"name\": \"x\", \"type\": \"devise\"}}]}\n\
///     \x20                                            ^^^^^^^^"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Where in the text.
    pub span: Span,
    /// What went wrong.
    pub kind: ParseErrorKind,
    /// 1-based line of `span.start`.
    pub line: usize,
    /// 1-based column (in characters) of `span.start`.
    pub column: usize,
    excerpt: Box<Excerpt>,
}

/// The input line an error is shown with, and where its caret goes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Excerpt {
    line: String,
    caret_offset: usize,
    caret_len: usize,
}

impl ParseError {
    /// Locates `span` in `text` and keeps the line it starts on for the message.
    pub(crate) fn new(text: &str, span: Span, kind: ParseErrorKind) -> Self {
        let start = floor_boundary(text, span.start.min(text.len()));
        let end = floor_boundary(text, span.end.clamp(start, text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |n| n + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |n| start + n);
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        // Keep at most MAX_EXCERPT_CHARS characters around the caret.
        let before: Vec<char> = text[line_start..start].chars().collect();
        let skip = before.len().saturating_sub(MAX_EXCERPT_CHARS / 2);
        let caret_offset = before.len() - skip;
        let mut excerpt: String = before[skip..].iter().collect();
        let rest: String = text[start..line_end]
            .chars()
            .take(MAX_EXCERPT_CHARS - caret_offset)
            .collect();
        excerpt.push_str(&rest);
        let excerpt: String = excerpt
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let caret_len = text[start..end.min(line_end)]
            .chars()
            .count()
            .clamp(1, (rest.chars().count()).max(1));
        ParseError {
            span: Span::new(start, end),
            kind,
            line,
            column,
            excerpt: Box::new(Excerpt {
                line: excerpt,
                caret_offset,
                caret_len,
            }),
        }
    }
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {}, column {}\n{}\n{}{}",
            self.kind,
            self.line,
            self.column,
            self.excerpt.line,
            " ".repeat(self.excerpt.caret_offset),
            "^".repeat(self.excerpt.caret_len)
        )
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ParseErrorKind::Invalid(invalid) => Some(invalid),
            _ => None,
        }
    }
}
