//! What a query returns (the preview's envelope), how to ask for pages, and what can go
//! wrong: [`QueryResult`], [`QueryOptions`], [`QueryError`].

use std::fmt;

use indexmap::IndexMap;
use serde::Serialize;

use super::ast::{AggregateOperator, PropertyType};
use super::error::{InvalidExpression, Origin, ParseError};
use super::source::ScalarType;
use crate::twin::Scalar;

/// Results per page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest page a query returns (the preview's tag query allowed 1000).
pub const MAX_PAGE_SIZE: usize = 1000;
/// Longest continuation token accepted, in bytes: 1 MiB. A token carries the last row's
/// sort values, at most [`MAX_SORT_KEYS`](super::MAX_SORT_KEYS) of them, each at most a
/// 4 KiB string, JSON-escaped (up to 6 bytes a byte) and base64url-encoded: under 700 KiB,
/// so every token a query hands out is accepted back. A typical one is under 200 bytes.
pub const MAX_TOKEN_LEN: usize = 1 << 20;

/// Which physical strategy the executor uses; tests force each one against the naive
/// evaluator. Not part of the stable API.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Choose by estimated cost.
    #[default]
    Auto,
    /// Always use bitmaps and ordered index walks.
    Bitmaps,
    /// Always probe values slot by slot where a probe is possible.
    Scans,
    /// Bitmaps, but every range step looks slots up in the source's value column (where
    /// it has one).
    Columns,
}

/// How much of a result to return.
///
/// ```
/// use twinhub::query::QueryOptions;
/// let first = QueryOptions::page(10);
/// assert_eq!(first.page_size, 10);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryOptions {
    /// At most this many twins in `Result` (1..=[`MAX_PAGE_SIZE`]).
    pub page_size: usize,
    /// Continue after the page that returned this token.
    pub continuation: Option<String>,
    #[doc(hidden)]
    pub strategy: Strategy,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            page_size: DEFAULT_PAGE_SIZE,
            continuation: None,
            strategy: Strategy::Auto,
        }
    }
}

impl QueryOptions {
    /// The first page, of `page_size` results.
    pub fn page(page_size: usize) -> Self {
        QueryOptions {
            page_size,
            ..QueryOptions::default()
        }
    }

    /// The page after the one that returned `token`.
    pub fn after(mut self, token: impl Into<String>) -> Self {
        self.continuation = Some(token.into());
        self
    }
}

/// One entry of `Result`: a whole document, or a projection of it. The indexed executor
/// returns both as borrowed views of the source (`D` and `P` serialise straight from
/// it); [`QueryResult::map_documents`] turns a page into owned values.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResultItem<D, P = serde_json::Value> {
    /// The whole document (no projection, or `project.all`).
    Document(D),
    /// The id and the projected properties.
    Projected(P),
}

/// One row of `AggregateResult`: the key properties by name, then the columns by name
/// (`null` where a key is missing or a column has no value).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AggregateRow(pub IndexMap<String, Option<Scalar>>);

impl Serialize for AggregateRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A page of results in the preview's envelope:
/// `{"Result": [...], "AggregateResult": [...], "ContinuationToken": "..."}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryResult<D, P = serde_json::Value> {
    /// Matching documents (empty for aggregate queries).
    #[serde(rename = "Result")]
    pub result: Vec<ResultItem<D, P>>,
    /// Aggregate rows (empty unless the query aggregates).
    #[serde(rename = "AggregateResult")]
    pub aggregate_result: Vec<AggregateRow>,
    /// Pass to [`QueryOptions::after`] for the next page; `None` on the last page.
    #[serde(rename = "ContinuationToken", skip_serializing_if = "Option::is_none")]
    pub continuation: Option<String>,
}

impl<D, P: Serialize> QueryResult<D, P> {
    /// The same page with every whole document converted by `f` (e.g. borrowed twin
    /// views to owned twins) and every projection written out as JSON: owned, to keep
    /// after the registry's lock is released.
    pub fn map_documents<E>(self, mut f: impl FnMut(D) -> E) -> QueryResult<E> {
        QueryResult {
            result: self
                .result
                .into_iter()
                .map(|item| match item {
                    ResultItem::Document(d) => ResultItem::Document(f(d)),
                    ResultItem::Projected(p) => ResultItem::Projected(
                        serde_json::to_value(&p).unwrap_or(serde_json::Value::Null),
                    ),
                })
                .collect(),
            aggregate_result: self.aggregate_result,
            continuation: self.continuation,
        }
    }
}

/// Why a query could not run. Nothing here is an internal error: every variant is a
/// caller's mistake.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum QueryError {
    /// The query text did not parse.
    Parse(ParseError),
    /// A built expression breaks a grammar rule.
    Invalid(InvalidExpression),
    /// The page size is 0 or above [`MAX_PAGE_SIZE`].
    PageSize {
        /// What was asked for.
        requested: usize,
        /// The maximum.
        max: usize,
    },
    /// The continuation token is not one a page handed out: not base64url of the
    /// token's JSON, longer than [`MAX_TOKEN_LEN`] bytes, or holding a sort value that is
    /// no scalar (a token cut short or altered on its way, say). Pass a page's
    /// [`QueryResult::continuation`] back unchanged; to start over, run the query without
    /// a token (the first page).
    BadContinuation,
    /// The token is well formed but was handed out for another query: it carries a
    /// fingerprint of the query's canonical text (and of the kind of source, see
    /// [`IndexedSource::token_scope`](super::IndexedSource::token_scope)), and this
    /// query's differs. Ask for the next page with the same expression (whitespace, the
    /// order of an object's members and defaults left out do not matter; the page size
    /// may change); a changed query starts again without a token.
    ContinuationMismatch,
    /// A tag query without tags, or with a `top` outside 1..=[`MAX_PAGE_SIZE`].
    BadTagQuery,
    /// A `sum` over floats left the `f64` range (integer sums are exact; see the query
    /// module's aggregate rules).
    AggregateOverflow {
        /// The column's name.
        column: String,
    },
    /// The query names a property the source's fixed schema does not have (the job
    /// history's; twins have an open schema and treat an unknown name as missing): see
    /// [`IndexedSource::knows`](super::IndexedSource::knows).
    UnknownProperty {
        /// The name as written.
        name: String,
        /// Its type.
        kind: PropertyType,
        /// The clause naming it (the first such place in the text's order): `"filter"`,
        /// `"projection"`, `"sort"`, `"aggregate key"` or `"aggregate column"`.
        place: &'static str,
        /// Where the property object was written (empty for an expression built in
        /// Rust).
        origin: Origin,
    },
    /// The query compares a property of the source's fixed schema with a literal of a
    /// type the property never holds (`StartTimeUtc gt 1461931200000`, `Status eq true`
    /// over the job history), which could only match nothing: see
    /// [`IndexedSource::value_type`](super::IndexedSource::value_type). Twins' open
    /// schema never refuses a literal.
    LiteralType {
        /// The property's name as written.
        name: String,
        /// Its type.
        kind: PropertyType,
        /// The type every value of the property has.
        holds: ScalarType,
        /// The literal's type.
        literal: ScalarType,
        /// Where the comparison's value (the literal, or the list holding it) was
        /// written.
        origin: Origin,
    },
    /// A `sum` or `avg` column over a property of the source's fixed schema that holds no
    /// numbers, whose value would always be `null`: see
    /// [`IndexedSource::value_type`](super::IndexedSource::value_type).
    AggregateType {
        /// The column's name.
        column: String,
        /// Its operator (`sum` or `avg`).
        operator: AggregateOperator,
        /// The property's name as written.
        name: String,
        /// Its type.
        kind: PropertyType,
        /// The type every value of the property has.
        holds: ScalarType,
    },
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Parse(e) => write!(f, "query does not parse: {e}"),
            QueryError::Invalid(e) => write!(f, "invalid query: {e}"),
            QueryError::PageSize { requested, max } => {
                write!(f, "page size {requested} is outside 1..={max}")
            }
            QueryError::BadContinuation => f.write_str("malformed continuation token"),
            QueryError::ContinuationMismatch => {
                f.write_str("continuation token belongs to another query")
            }
            QueryError::AggregateOverflow { column } => {
                write!(
                    f,
                    "aggregate column {column:?}: the sum is beyond the f64 range"
                )
            }
            QueryError::UnknownProperty {
                name,
                kind,
                place,
                origin,
            } => {
                write!(
                    f,
                    "unknown property {name:?} (type {:?}) for this source ({place}{})",
                    kind.as_str(),
                    at(origin)
                )
            }
            QueryError::LiteralType {
                name,
                kind,
                holds,
                literal,
                origin,
            } => write!(
                f,
                "property {name:?} (type {:?}) holds {holds} values only; a {literal} literal{} never matches it",
                kind.as_str(),
                at(origin)
            ),
            QueryError::AggregateType {
                column,
                operator,
                name,
                kind,
                holds,
            } => write!(
                f,
                "aggregate column {column:?}: {} takes numbers, but property {name:?} (type {:?}) holds {holds} values only",
                operator.as_str(),
                kind.as_str()
            ),
            QueryError::BadTagQuery => {
                write!(
                    f,
                    "a tag query needs at least one tag and a top in 1..={MAX_PAGE_SIZE}"
                )
            }
        }
    }
}

/// `" at bytes a..b"` where an origin has a span, else nothing.
fn at(origin: &Origin) -> String {
    origin.0.map_or(String::new(), |s| {
        format!(" at bytes {}..{}", s.start, s.end)
    })
}

impl std::error::Error for QueryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueryError::Parse(e) => Some(e),
            QueryError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ParseError> for QueryError {
    fn from(e: ParseError) -> Self {
        QueryError::Parse(e)
    }
}

impl From<InvalidExpression> for QueryError {
    fn from(e: InvalidExpression) -> Self {
        QueryError::Invalid(e)
    }
}

/// Where a page ended: the sort key values and id of its last document, and which query
/// it belongs to (a fingerprint of the canonical expression).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cursor {
    pub fingerprint: u64,
    pub keys: Vec<Option<Scalar>>,
    pub id: String,
}

/// FNV-1a, 64 bit: a stable fingerprint of the canonical query text.
pub(crate) fn fingerprint(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Cursor {
    /// The opaque token: base64url (no padding) of `[fingerprint, [keys], id]` as JSON.
    pub(crate) fn encode(&self) -> String {
        use base64::Engine;
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|k| k.as_ref().map_or(serde_json::Value::Null, Scalar::to_json))
            .collect();
        let json = serde_json::json!([self.fingerprint.to_string(), keys, self.id]).to_string();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a token made by [`Cursor::encode`].
    pub(crate) fn decode(token: &str) -> Result<Cursor, QueryError> {
        use base64::Engine;
        if token.len() > MAX_TOKEN_LEN {
            return Err(QueryError::BadContinuation);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| QueryError::BadContinuation)?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| QueryError::BadContinuation)?;
        let serde_json::Value::Array(parts) = value else {
            return Err(QueryError::BadContinuation);
        };
        let [
            fp,
            serde_json::Value::Array(keys),
            serde_json::Value::String(id),
        ] = &parts[..]
        else {
            return Err(QueryError::BadContinuation);
        };
        let fingerprint = fp
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or(QueryError::BadContinuation)?;
        let keys = keys
            .iter()
            .map(|k| match k {
                serde_json::Value::Null => Ok(None),
                other => Scalar::from_json(other)
                    .map(Some)
                    .ok_or(QueryError::BadContinuation),
            })
            .collect::<Result<_, _>>()?;
        Ok(Cursor {
            fingerprint,
            keys,
            id: id.clone(),
        })
    }
}
