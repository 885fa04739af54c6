//! The nom parser: one method per production of the grammar in the [module docs](super),
//! straight from the JSON text (no intermediate `serde_json::Value`), so every error knows
//! its byte span.
//!
//! The grammar is LL(1) on the first character of each production, so nothing
//! backtracks: once a production has seen its first token, every failure inside it is a
//! committed [`nom::Err::Failure`] carrying a precise [`ParseErrorKind`] (the `cut` of the
//! Meilisearch filter parser, applied everywhere). Errors that nom itself produces are
//! mapped where they arise; an unmapped one would surface as
//! [`ParseErrorKind::Internal`], which the `query_parse` fuzz target asserts never
//! happens.

use std::borrow::Cow;
use std::cell::Cell;

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while_m_n};
use nom::character::complete::{char, digit0, digit1, multispace0, one_of, satisfy};
use nom::combinator::{opt, recognize, value};
use nom::{IResult, Parser};

use super::ast::{
    AggregateColumn, AggregateOperator, Aggregation, Comparison, ComparisonOperator,
    ComparisonValue, Filter, Literal, Logical, LogicalOperator, Projection, PropertyType,
    QueryExpression, QueryLimits, QueryProperty, SortKey, SortOrder,
};
use super::error::{Expected, InvalidExpression, Origin, ParseError, ParseErrorKind, Span};

/// A failure at `at` (the remaining input), `len` bytes long.
#[derive(Debug)]
pub(crate) struct Failure<'s> {
    at: &'s str,
    len: usize,
    kind: ParseErrorKind,
}

impl<'s> nom::error::ParseError<&'s str> for Failure<'s> {
    fn from_error_kind(input: &'s str, kind: nom::error::ErrorKind) -> Self {
        Failure {
            at: input,
            len: 0,
            kind: ParseErrorKind::Internal {
                detail: format!("{kind:?}"),
            },
        }
    }

    fn append(_: &'s str, _: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'s, T> = IResult<&'s str, T, Failure<'s>>;

fn fail<'s, T>(at: &'s str, len: usize, kind: ParseErrorKind) -> PResult<'s, T> {
    Err(nom::Err::Failure(Failure { at, len, kind }))
}

fn expected<'s, T>(at: &'s str, expected: Expected) -> PResult<'s, T> {
    let found = at.chars().next();
    fail(
        at,
        found.map_or(0, char::len_utf8),
        ParseErrorKind::Expected { expected, found },
    )
}

/// `ws ::= (" " | "\t" | "\n" | "\r")*`
fn ws(i: &str) -> &str {
    match multispace0::<_, Failure<'_>>(i) {
        Ok((rest, _)) => rest,
        Err(_) => i,
    }
}

/// Parses `text` as a query expression under the default [`QueryLimits`].
///
/// ```
/// use twinhub::query::{parse, QueryProperty};
/// let q = parse(r#"{
///     "filter": {
///         "property": {"name": "FirmwareVersion", "type": "device"},
///         "value": "1.0",
///         "comparisonOperator": "eq",
///         "type": "comparison"
///     },
///     "project": null, "aggregate": null, "sort": null
/// }"#).unwrap();
/// assert_eq!(q.filter, Some(QueryProperty::device("FirmwareVersion").eq("1.0")));
/// ```
pub fn parse(text: &str) -> Result<QueryExpression, ParseError> {
    parse_with_limits(text, &QueryLimits::DEFAULT)
}

/// The deepest nesting of logical filters any parse accepts, whatever
/// [`QueryLimits::max_depth`] says: deeper input is refused (`TooDeep`) before the
/// parser recurses, so parsing, dropping, printing, comparing and
/// running a parsed expression stay within a 2 MiB thread stack (tested).
pub const MAX_QUERY_DEPTH: usize = 128;

/// The most sort keys any expression may have, whatever [`QueryLimits::max_sort_keys`]
/// says: a continuation token carries the last row's value of each, and must stay within
/// [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN).
pub const MAX_SORT_KEYS: usize = 16;

/// Parses `text` as a query expression under the given limits (`max_depth` is capped at
/// [`MAX_QUERY_DEPTH`]).
pub fn parse_with_limits(text: &str, limits: &QueryLimits) -> Result<QueryExpression, ParseError> {
    if text.len() > limits.max_input_bytes {
        return Err(ParseError::new(
            text,
            Span::new(limits.max_input_bytes, text.len()),
            ParseErrorKind::InputTooLarge {
                max: limits.max_input_bytes,
                actual: text.len(),
            },
        ));
    }
    // No limit setting may let the recursive descent (or the recursive drop, display,
    // equality and execution of the tree it builds) run deeper than MAX_QUERY_DEPTH.
    let limits = QueryLimits {
        max_depth: limits.max_depth.min(MAX_QUERY_DEPTH),
        max_sort_keys: limits.max_sort_keys.min(MAX_SORT_KEYS),
        ..*limits
    };
    let grammar = Grammar {
        src: text,
        limits,
        filters: Cell::new(0),
    };
    let q = match grammar.query(text) {
        Ok((_, q)) => q,
        Err(nom::Err::Failure(f) | nom::Err::Error(f)) => {
            let start = text.len() - f.at.len();
            return Err(ParseError::new(
                text,
                Span::new(start, start + f.len),
                f.kind,
            ));
        }
        Err(nom::Err::Incomplete(_)) => {
            return Err(ParseError::new(
                text,
                Span::new(text.len(), text.len()),
                ParseErrorKind::Internal {
                    detail: "incomplete input".to_owned(),
                },
            ));
        }
    };
    q.validate_with(&limits).map_err(|(invalid, span)| {
        ParseError::new(
            text,
            span.unwrap_or_default(),
            ParseErrorKind::Invalid(invalid),
        )
    })?;
    // The canonical text spells out what the input may leave out (defaults, `.0`), so it
    // can be longer than the input: refused here when past the limit, every accepted
    // expression prints as text the same limits parse back.
    let canonical = canonical_len(&q);
    if canonical > limits.max_input_bytes {
        return Err(ParseError::new(
            text,
            Span::new(0, text.len()),
            ParseErrorKind::CanonicalTooLarge {
                max: limits.max_input_bytes,
                actual: canonical,
            },
        ));
    }
    Ok(q)
}

/// The length of `q`'s canonical text, without keeping it.
fn canonical_len(q: &QueryExpression) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = std::fmt::write(&mut count, format_args!("{q}"));
    count.0
}

impl std::str::FromStr for QueryExpression {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        parse(s)
    }
}

/// The state of one object being parsed: which keys were seen, whether a member came yet.
struct Members {
    first: bool,
    seen: u32,
}

struct Grammar<'s> {
    src: &'s str,
    limits: QueryLimits,
    filters: Cell<usize>,
}

const QUERY_KEYS: &[&str] = &["filter", "project", "aggregate", "sort"];
const FILTER_KEYS: &[&str] = &[
    "type",
    "property",
    "comparisonOperator",
    "value",
    "logicalOperator",
    "filters",
];
const FILTER_TYPES: &[&str] = &["comparison", "logical"];
const PROPERTY_KEYS: &[&str] = &["name", "type"];
const PROJECTION_KEYS: &[&str] = &["all", "properties"];
const AGGREGATION_KEYS: &[&str] = &["keys", "properties"];
const COLUMN_KEYS: &[&str] = &["operator", "property", "columnName"];
const SORT_KEYS: &[&str] = &["property", "order"];

impl<'s> Grammar<'s> {
    fn origin(&self, from: &'s str, to: &'s str) -> Origin {
        Origin(Some(Span::new(
            self.src.len() - from.len(),
            self.src.len() - to.len(),
        )))
    }

    // ---- JSON tokens ----------------------------------------------------------------

    /// `string ::= '"' (char | escape)* '"'` where `char` is any character but `"`, `\` and
    /// the controls U+0000..U+001F.
    fn string(&self, i: &'s str) -> PResult<'s, Cow<'s, str>> {
        let Ok((mut i, _)) = char::<_, Failure<'s>>('"').parse(i) else {
            return expected(i, Expected::String);
        };
        // Borrowed from the input unless an escape makes a copy necessary.
        let mut out: Option<String> = None;
        loop {
            let (rest, run) = take_while(|c: char| c != '"' && c != '\\' && c >= ' ').parse(i)?;
            i = rest;
            match i.chars().next() {
                None => return expected(i, Expected::StringEnd),
                Some('"') => {
                    let s = match out {
                        None => Cow::Borrowed(run),
                        Some(mut o) => {
                            o.push_str(run);
                            Cow::Owned(o)
                        }
                    };
                    return Ok((&i[1..], s));
                }
                Some('\\') => {
                    let (rest, c) = self.escape(i)?;
                    let o = out.get_or_insert_with(String::new);
                    o.push_str(run);
                    o.push(c);
                    i = rest;
                }
                Some(c) => return fail(i, c.len_utf8(), ParseErrorKind::ControlCharacter),
            }
        }
    }

    /// `escape ::= '\' ('"' | '\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' | 'u' hex4 ['\u' hex4])`
    /// (a `\u` high surrogate must be followed by a `\u` low surrogate).
    fn escape(&self, i: &'s str) -> PResult<'s, char> {
        let simple: PResult<'s, char> = alt((
            value('"', tag("\\\"")),
            value('\\', tag("\\\\")),
            value('/', tag("\\/")),
            value('\u{8}', tag("\\b")),
            value('\u{c}', tag("\\f")),
            value('\n', tag("\\n")),
            value('\r', tag("\\r")),
            value('\t', tag("\\t")),
        ))
        .parse(i);
        if let Ok(ok) = simple {
            return Ok(ok);
        }
        let Some((rest, high)) = hex4(i) else {
            let len = 1 + i[1..].chars().next().map_or(0, char::len_utf8);
            return fail(i, len, ParseErrorKind::InvalidEscape);
        };
        let code = match high {
            0xD800..=0xDBFF => match hex4(rest) {
                Some((rest2, low @ 0xDC00..=0xDFFF)) => {
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    return match char::from_u32(code) {
                        Some(c) => Ok((rest2, c)),
                        None => fail(i, 12, ParseErrorKind::InvalidUnicodeEscape),
                    };
                }
                _ => return fail(i, 6, ParseErrorKind::InvalidUnicodeEscape),
            },
            code => code,
        };
        match char::from_u32(code) {
            Some(c) => Ok((rest, c)),
            None => fail(i, 6, ParseErrorKind::InvalidUnicodeEscape),
        }
    }

    /// `number ::= '-'? ('0' | [1-9] [0-9]*) ('.' [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&self, i: &'s str) -> PResult<'s, Literal> {
        let int = alt((
            tag("0"),
            recognize((satisfy(|c| c.is_ascii_digit() && c != '0'), digit0)),
        ));
        let signed: PResult<'s, _> = (opt(char('-')), int).parse(i);
        let (rest, _) = match signed {
            Ok(ok) => ok,
            Err(_) => {
                let at = i.strip_prefix('-').unwrap_or(i);
                return expected(at, Expected::Digit);
            }
        };
        let rest = match char::<_, Failure<'s>>('.').parse(rest) {
            Ok((after_dot, _)) => match digit1::<_, Failure<'s>>(after_dot) {
                Ok((r, _)) => r,
                Err(_) => return expected(after_dot, Expected::Digit),
            },
            Err(_) => rest,
        };
        let exponent: PResult<'s, _> = (one_of("eE"), opt(one_of("+-"))).parse(rest);
        let rest = match exponent {
            Ok((after_e, _)) => match digit1::<_, Failure<'s>>(after_e) {
                Ok((r, _)) => r,
                Err(_) => return expected(after_e, Expected::Digit),
            },
            Err(_) => rest,
        };
        let text = &i[..i.len() - rest.len()];
        // An integer that fits an i64 or a u64 stays exact; anything else is an f64.
        if !text.contains(['.', 'e', 'E']) {
            if let Ok(n) = text.parse::<i64>() {
                return Ok((rest, Literal::Integer(n)));
            }
            if let Ok(n) = text.parse::<u64>() {
                return Ok((rest, Literal::Unsigned(n)));
            }
        }
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok((rest, Literal::Number(n))),
            _ => fail(i, text.len(), ParseErrorKind::NumberOutOfRange),
        }
    }

    /// `bool ::= "true" | "false"`
    fn boolean(&self, i: &'s str) -> PResult<'s, bool> {
        let b: PResult<'s, bool> =
            alt((value(true, tag("true")), value(false, tag("false")))).parse(i);
        match b {
            Ok(ok) => Ok(ok),
            Err(nom::Err::Error(_)) => expected(i, Expected::Bool),
            Err(e) => Err(e),
        }
    }

    /// `scalar ::= string | number | bool`
    fn scalar(&self, i: &'s str, what: Expected) -> PResult<'s, Literal> {
        match i.chars().next() {
            Some('"') => self
                .string(i)
                .map(|(r, s)| (r, Literal::String(s.into_owned()))),
            Some('t' | 'f') => self.boolean(i).map(|(r, b)| (r, Literal::Bool(b))),
            Some('-' | '0'..='9') => self.number(i),
            _ => expected(i, what),
        }
    }

    /// `null ::= "null"`; the `Some` branch is `inner`.
    fn nullable<T>(
        &self,
        i: &'s str,
        inner: impl FnOnce(&'s str) -> PResult<'s, T>,
    ) -> PResult<'s, Option<T>> {
        match tag::<_, _, Failure<'s>>("null").parse(i) {
            Ok((rest, _)) => Ok((rest, None)),
            Err(_) => inner(i).map(|(r, v)| (r, Some(v))),
        }
    }

    /// A string that must be one of `keywords` (the value of `field`).
    fn keyword<T>(
        &self,
        i: &'s str,
        field: &'static str,
        keywords: &'static [&'static str],
        from_keyword: fn(&str) -> Option<T>,
    ) -> PResult<'s, T> {
        let (rest, s) = self.string(i)?;
        match from_keyword(&s) {
            Some(k) => Ok((rest, k)),
            None => fail(
                i,
                i.len() - rest.len(),
                ParseErrorKind::UnknownKeyword {
                    field,
                    found: s.into_owned(),
                    expected: keywords,
                },
            ),
        }
    }

    // ---- objects and arrays ---------------------------------------------------------

    /// `"{"`, opening an object (`what` names its production for messages).
    fn open(&self, i: &'s str, what: &'static str) -> PResult<'s, Members> {
        match char::<_, Failure<'s>>('{').parse(i) {
            Ok((rest, _)) => Ok((
                rest,
                Members {
                    first: true,
                    seen: 0,
                },
            )),
            Err(_) => expected(i, Expected::Object(what)),
        }
    }

    /// `member ::= ws string ws ":" ws` (after `{` or `,`), or the closing `}`: returns the
    /// index of the key in `keys` and where the key starts, or `None` at `}`. Rejects
    /// unknown and repeated keys.
    fn member(
        &self,
        i: &'s str,
        members: &mut Members,
        keys: &'static [&'static str],
        object: &'static str,
    ) -> PResult<'s, Option<(usize, &'s str)>> {
        let mut i = ws(i);
        if let Some(rest) = i.strip_prefix('}') {
            return Ok((rest, None));
        }
        if !members.first {
            match i.strip_prefix(',') {
                Some(rest) => i = ws(rest),
                None => return expected(i, Expected::CommaOrObjectEnd),
            }
        }
        if !i.starts_with('"') {
            let what = if members.first {
                Expected::KeyOrObjectEnd
            } else {
                Expected::Key
            };
            return expected(i, what);
        }
        members.first = false;
        let key_at = i;
        let (rest, key) = self.string(i)?;
        let key_len = i.len() - rest.len();
        let Some(index) = keys.iter().position(|k| *k == key) else {
            return fail(
                key_at,
                key_len,
                ParseErrorKind::UnknownKey {
                    key: key.into_owned(),
                    object,
                    expected: keys,
                },
            );
        };
        if members.seen & (1 << index) != 0 {
            return fail(
                key_at,
                key_len,
                ParseErrorKind::DuplicateKey {
                    key: key.into_owned(),
                },
            );
        }
        members.seen |= 1 << index;
        let rest = ws(rest);
        let Some(rest) = rest.strip_prefix(':') else {
            return expected(rest, Expected::Colon);
        };
        Ok((ws(rest), Some((index, key_at))))
    }

    /// `array<item> ::= "[" ws [item ws ("," ws item ws)*] "]"`, at most `max` items.
    fn array<T>(
        &self,
        i: &'s str,
        what: &'static str,
        max: usize,
        mut item: impl FnMut(&'s str) -> PResult<'s, T>,
    ) -> PResult<'s, Vec<T>> {
        let Some(mut i) = i.strip_prefix('[') else {
            return expected(i, Expected::Array(what));
        };
        let mut items = Vec::new();
        i = ws(i);
        if let Some(rest) = i.strip_prefix(']') {
            return Ok((rest, items));
        }
        loop {
            if items.len() == max {
                return fail(
                    i,
                    1,
                    ParseErrorKind::Invalid(InvalidExpression::TooMany { what, max }),
                );
            }
            let (rest, v) = item(i)?;
            items.push(v);
            i = ws(rest);
            if let Some(rest) = i.strip_prefix(',') {
                i = ws(rest);
            } else if let Some(rest) = i.strip_prefix(']') {
                return Ok((rest, items));
            } else {
                return expected(i, Expected::CommaOrArrayEnd);
            }
        }
    }

    fn missing<T>(&self, open: &'s str, key: &'static str, object: &'static str) -> PResult<'s, T> {
        fail(open, 1, ParseErrorKind::MissingKey { key, object })
    }

    // ---- productions ----------------------------------------------------------------

    /// `query ::= ws "{" [query_member ("," query_member)*] "}" ws`
    fn query(&self, i: &'s str) -> PResult<'s, QueryExpression> {
        let i = ws(i);
        let (mut i, mut members) = self.open(i, "a query expression")?;
        let mut q = QueryExpression::default();
        loop {
            let (rest, member) = self.member(i, &mut members, QUERY_KEYS, "a query expression")?;
            let Some((key, _)) = member else {
                i = rest;
                break;
            };
            i = match key {
                0 => {
                    let (rest, f) = self.nullable(rest, |i| self.filter(i, 1))?;
                    q.filter = f;
                    rest
                }
                1 => {
                    let (rest, p) = self.nullable(rest, |i| self.projection(i))?;
                    q.project = p;
                    rest
                }
                2 => {
                    let (rest, a) = self.nullable(rest, |i| self.aggregation(i))?;
                    q.aggregate = a;
                    rest
                }
                _ => {
                    let (rest, s) = self.nullable(rest, |i| {
                        self.array(i, "sort keys", self.limits.max_sort_keys, |i| {
                            self.sort_key(i)
                        })
                    })?;
                    q.sort = s.unwrap_or_default();
                    rest
                }
            };
        }
        let i = ws(i);
        if !i.is_empty() {
            return expected(i, Expected::End);
        }
        Ok((i, q))
    }

    /// `filter ::= comparison | logical`, told apart by the member `"type"`, which may come
    /// in any position:
    /// `comparison ::= "{" {"type":"comparison", "property": property,
    ///                      "comparisonOperator": comparison_op, "value": value} "}"`,
    /// `logical ::= "{" {"type":"logical", "logicalOperator": logical_op,
    ///                   "filters": "[" filter ("," filter)* "]"} "}"`
    fn filter(&self, i: &'s str, depth: usize) -> PResult<'s, Filter> {
        let open = i;
        if depth > self.limits.max_depth {
            return fail(
                i,
                1,
                ParseErrorKind::Invalid(InvalidExpression::TooDeep {
                    max: self.limits.max_depth,
                }),
            );
        }
        self.filters.set(self.filters.get() + 1);
        if self.filters.get() > self.limits.max_filters {
            return fail(
                i,
                1,
                ParseErrorKind::Invalid(InvalidExpression::TooMany {
                    what: "filters",
                    max: self.limits.max_filters,
                }),
            );
        }
        let (mut i, mut members) = self.open(i, "a filter")?;
        let mut key_at: [Option<&'s str>; 6] = [None; 6];
        let mut logical_type = None;
        let mut property = None;
        let mut comparison_op = None;
        let mut comparison_value = None;
        let mut logical_op = None;
        let mut filters = None;
        loop {
            let (rest, member) = self.member(i, &mut members, FILTER_KEYS, "a filter")?;
            let Some((key, at)) = member else {
                i = rest;
                break;
            };
            key_at[key] = Some(at);
            i = match key {
                0 => {
                    let (rest, t) =
                        self.keyword(rest, "filter type", FILTER_TYPES, |s| match s {
                            "comparison" => Some(false),
                            "logical" => Some(true),
                            _ => None,
                        })?;
                    logical_type = Some(t);
                    rest
                }
                1 => {
                    let (rest, p) = self.property(rest)?;
                    property = Some(p);
                    rest
                }
                2 => {
                    let (rest, op) = self.keyword(
                        rest,
                        "comparison operator",
                        ComparisonOperator::KEYWORDS,
                        ComparisonOperator::from_keyword,
                    )?;
                    comparison_op = Some(op);
                    rest
                }
                3 => {
                    let (after, v) = self.value(rest)?;
                    comparison_value = Some((v, self.origin(rest, after)));
                    after
                }
                4 => {
                    let (rest, op) = self.keyword(
                        rest,
                        "logical operator",
                        LogicalOperator::KEYWORDS,
                        LogicalOperator::from_keyword,
                    )?;
                    logical_op = Some(op);
                    rest
                }
                _ => {
                    let (rest, fs) = self.array(rest, "filters", self.limits.max_filters, |i| {
                        self.filter(i, depth + 1)
                    })?;
                    filters = Some(fs);
                    rest
                }
            };
        }
        let origin = self.origin(open, i);
        match logical_type {
            None => self.missing(open, "type", "a filter"),
            Some(false) => {
                for k in [4, 5] {
                    if let Some(at) = key_at[k] {
                        return fail(
                            at,
                            FILTER_KEYS[k].len() + 2,
                            ParseErrorKind::KeyNotAllowed {
                                key: FILTER_KEYS[k],
                                filter_type: "comparison",
                            },
                        );
                    }
                }
                let Some(property) = property else {
                    return self.missing(open, "property", "a comparison");
                };
                let Some(operator) = comparison_op else {
                    return self.missing(open, "comparisonOperator", "a comparison");
                };
                let Some((value, value_origin)) = comparison_value else {
                    return self.missing(open, "value", "a comparison");
                };
                Ok((
                    i,
                    Filter::Comparison(Comparison {
                        property,
                        operator,
                        value,
                        origin,
                        value_origin,
                    }),
                ))
            }
            Some(true) => {
                for k in [1, 2, 3] {
                    if let Some(at) = key_at[k] {
                        return fail(
                            at,
                            FILTER_KEYS[k].len() + 2,
                            ParseErrorKind::KeyNotAllowed {
                                key: FILTER_KEYS[k],
                                filter_type: "logical",
                            },
                        );
                    }
                }
                let Some(operator) = logical_op else {
                    return self.missing(open, "logicalOperator", "a logical filter");
                };
                let Some(filters) = filters else {
                    return self.missing(open, "filters", "a logical filter");
                };
                Ok((
                    i,
                    Filter::Logical(Logical {
                        operator,
                        filters,
                        origin,
                    }),
                ))
            }
        }
    }

    /// `value ::= null | scalar | "[" [scalar ("," scalar)*] "]"`
    fn value(&self, i: &'s str) -> PResult<'s, ComparisonValue> {
        match i.chars().next() {
            Some('n') => match tag::<_, _, Failure<'s>>("null").parse(i) {
                Ok((rest, _)) => Ok((rest, ComparisonValue::Null)),
                Err(_) => expected(i, Expected::ComparisonValue),
            },
            Some('[') => {
                let (rest, items) =
                    self.array(i, "list items", self.limits.max_list_items, |i| {
                        self.scalar(i, Expected::Scalar)
                    })?;
                Ok((rest, ComparisonValue::List(items)))
            }
            _ => {
                let (rest, l) = self.scalar(i, Expected::ComparisonValue)?;
                Ok((rest, ComparisonValue::Scalar(l)))
            }
        }
    }

    /// `property ::= "{" {"name": string, "type": property_type} "}"`
    fn property(&self, i: &'s str) -> PResult<'s, QueryProperty> {
        let open = i;
        let (mut i, mut members) = self.open(i, "a property")?;
        let mut name = None;
        let mut kind = None;
        loop {
            let (rest, member) = self.member(i, &mut members, PROPERTY_KEYS, "a property")?;
            let Some((key, _)) = member else {
                i = rest;
                break;
            };
            i = if key == 0 {
                let (rest, n) = self.string(rest)?;
                name = Some(n.into_owned());
                rest
            } else {
                let (rest, k) = self.keyword(
                    rest,
                    "property type",
                    PropertyType::KEYWORDS,
                    PropertyType::from_keyword,
                )?;
                kind = Some(k);
                rest
            };
        }
        let Some(name) = name else {
            return self.missing(open, "name", "a property");
        };
        let Some(kind) = kind else {
            return self.missing(open, "type", "a property");
        };
        Ok((
            i,
            QueryProperty {
                name,
                kind,
                origin: self.origin(open, i),
            },
        ))
    }

    /// `projection ::= "{" {"all": bool, "properties": "[" [property ("," property)*] "]"} "}"`
    fn projection(&self, i: &'s str) -> PResult<'s, Projection> {
        let open = i;
        let (mut i, mut members) = self.open(i, "a projection")?;
        let mut all = false;
        let mut properties = Vec::new();
        loop {
            let (rest, member) = self.member(i, &mut members, PROJECTION_KEYS, "a projection")?;
            let Some((key, _)) = member else {
                i = rest;
                break;
            };
            i = if key == 0 {
                let (rest, b) = self.boolean(rest)?;
                all = b;
                rest
            } else {
                let (rest, ps) = self.array(
                    rest,
                    "projected properties",
                    self.limits.max_projection,
                    |i| self.property(i),
                )?;
                properties = ps;
                rest
            };
        }
        Ok((
            i,
            Projection {
                all,
                properties,
                origin: self.origin(open, i),
            },
        ))
    }

    /// `aggregation ::= "{" {"keys": "[" property ("," property)* "]",
    ///                       "properties": "[" column ("," column)* "]"} "}"`
    fn aggregation(&self, i: &'s str) -> PResult<'s, Aggregation> {
        let open = i;
        let (mut i, mut members) = self.open(i, "an aggregation")?;
        let mut keys = None;
        let mut columns = None;
        loop {
            let (rest, member) =
                self.member(i, &mut members, AGGREGATION_KEYS, "an aggregation")?;
            let Some((key, _)) = member else {
                i = rest;
                break;
            };
            i = if key == 0 {
                let (rest, ks) = self.array(
                    rest,
                    "aggregate keys",
                    self.limits.max_aggregate_keys,
                    |i| self.property(i),
                )?;
                keys = Some(ks);
                rest
            } else {
                let (rest, cs) = self.array(
                    rest,
                    "aggregate columns",
                    self.limits.max_aggregate_columns,
                    |i| self.column(i),
                )?;
                columns = Some(cs);
                rest
            };
        }
        let Some(keys) = keys else {
            return self.missing(open, "keys", "an aggregation");
        };
        let Some(columns) = columns else {
            return self.missing(open, "properties", "an aggregation");
        };
        Ok((
            i,
            Aggregation {
                keys,
                columns,
                origin: self.origin(open, i),
            },
        ))
    }

    /// `column ::= "{" {"operator": aggregate_op, "property": property | null,
    ///                  "columnName": string} "}"` (a missing `property` is `null`)
    fn column(&self, i: &'s str) -> PResult<'s, AggregateColumn> {
        let open = i;
        let (mut i, mut members) = self.open(i, "an aggregate column")?;
        let mut operator = None;
        let mut property = None;
        let mut column_name = None;
        loop {
            let (rest, member) =
                self.member(i, &mut members, COLUMN_KEYS, "an aggregate column")?;
            let Some((key, _)) = member else {
                i = rest;
                break;
            };
            i = match key {
                0 => {
                    let (rest, op) = self.keyword(
                        rest,
                        "aggregate operator",
                        AggregateOperator::KEYWORDS,
                        AggregateOperator::from_keyword,
                    )?;
                    operator = Some(op);
                    rest
                }
                1 => {
                    let (rest, p) = self.nullable(rest, |i| self.property(i))?;
                    property = p;
                    rest
                }
                _ => {
                    let (rest, n) = self.string(rest)?;
                    column_name = Some(n.into_owned());
                    rest
                }
            };
        }
        let Some(operator) = operator else {
            return self.missing(open, "operator", "an aggregate column");
        };
        let Some(column_name) = column_name else {
            return self.missing(open, "columnName", "an aggregate column");
        };
        Ok((
            i,
            AggregateColumn {
                operator,
                property,
                column_name,
                origin: self.origin(open, i),
            },
        ))
    }

    /// `sort_key ::= "{" {"property": property, "order": ("asc" | "desc")} "}"`
    /// (a missing `order` is `asc`)
    fn sort_key(&self, i: &'s str) -> PResult<'s, SortKey> {
        let open = i;
        let (mut i, mut members) = self.open(i, "a sort key")?;
        let mut property = None;
        let mut order = SortOrder::Asc;
        loop {
            let (rest, member) = self.member(i, &mut members, SORT_KEYS, "a sort key")?;
            let Some((key, _)) = member else {
                i = rest;
                break;
            };
            i = if key == 0 {
                let (rest, p) = self.property(rest)?;
                property = Some(p);
                rest
            } else {
                let (rest, o) = self.keyword(
                    rest,
                    "sort order",
                    SortOrder::KEYWORDS,
                    SortOrder::from_keyword,
                )?;
                order = o;
                rest
            };
        }
        let Some(property) = property else {
            return self.missing(open, "property", "a sort key");
        };
        Ok((
            i,
            SortKey {
                property,
                order,
                origin: self.origin(open, i),
            },
        ))
    }
}

/// `hex4 ::= "\u" [0-9a-fA-F]{4}`
fn hex4(i: &str) -> Option<(&str, u32)> {
    let (rest, digits) = (
        tag::<_, _, Failure<'_>>("\\u"),
        take_while_m_n(4, 4, |c: char| c.is_ascii_hexdigit()),
    )
        .parse(i)
        .ok()
        .map(|(r, (_, d))| (r, d))?;
    u32::from_str_radix(digits, 16).ok().map(|n| (rest, n))
}
