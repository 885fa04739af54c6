//! Query fuzz bodies and the byte-driven expression generator they share with the
//! proptests (`tests/query_*.rs`).

use crate::query::{
    AggregateOperator, Aggregation, Filter, Literal, ParseErrorKind, Projection, PropertyType,
    QueryExpression, QueryProperty, SortKey, parse,
};

/// Parse arbitrary text: never panic, never an internal error kind, spans inside the input,
/// and whatever parses prints canonically and parses back to itself.
pub fn query_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse(&text) {
        Ok(q) => {
            let canonical = q.to_string();
            let again = parse(&canonical)
                .unwrap_or_else(|e| panic!("canonical form does not parse: {e}\n{canonical}"));
            assert_eq!(again, q, "canonical form parses to another expression");
            assert_eq!(
                again.to_string(),
                canonical,
                "canonical form is not a fixpoint"
            );
        }
        Err(e) => {
            assert!(
                !matches!(e.kind, ParseErrorKind::Internal { .. }),
                "internal parser error on {text:?}: {e}"
            );
            assert!(e.span.start <= e.span.end && e.span.end <= text.len());
            assert!(e.line >= 1 && e.column >= 1);
            let _ = e.to_string();
        }
    }
}

/// Build an expression from bytes, print it, parse it back: equal, and valid expressions
/// are exactly the ones that parse.
pub fn query_roundtrip(data: &[u8]) {
    let q = ExpressionSource::new(data, Vocabulary::WIDE).expression();
    let text = q.to_string();
    match (q.validate(), parse(&text)) {
        (Ok(()), Ok(parsed)) => assert_eq!(parsed, q, "round trip changed {text}"),
        (Ok(()), Err(e)) => panic!("valid expression does not parse: {e}\n{text}"),
        (Err(_), Ok(_)) => panic!("invalid expression parses: {text}"),
        (Err(invalid), Err(e)) => assert_eq!(
            e.kind,
            ParseErrorKind::Invalid(invalid),
            "parser and validator disagree on {text}"
        ),
    }
}

/// What names and values a generated expression draws from.
#[derive(Clone, Copy, Debug)]
pub struct Vocabulary {
    /// Device property names.
    pub device: &'static [&'static str],
    /// Service property names.
    pub service: &'static [&'static str],
    /// Device field names (`type: "default"`, besides `tags`).
    pub fields: &'static [&'static str],
    /// Custom property names (LWM2M paths).
    pub custom: &'static [&'static str],
    /// String values and tags.
    pub strings: &'static [&'static str],
    /// Number values (integers and floats: a literal keeps the variant given here).
    pub numbers: &'static [Literal],
    /// Whether to also produce expressions that break the rules (for the parser's checks).
    pub invalid: bool,
}

impl Vocabulary {
    /// Odd names and values (escapes, unicode, extreme numbers) and invalid shapes too.
    pub const WIDE: Vocabulary = Vocabulary {
        device: &[
            "FirmwareVersion",
            "BatteryLevel",
            "x\"y",
            "\u{e9}t\u{e9}",
            "a\\b",
        ],
        service: &["region", "tab\there", "\u{1F600}", "ctl\u{1}"],
        fields: &["deviceId", "status", "connectionState", "isManaged"],
        custom: &["/4/0/2", "/3/0/99"],
        strings: &[
            "1.0",
            "",
            "a\"b",
            "\u{0}",
            "\u{1F600}",
            "line\nbreak",
            "tags",
        ],
        numbers: &[
            Literal::Number(0.0),
            Literal::Number(-0.0),
            Literal::Integer(1),
            Literal::Number(-1.5),
            Literal::Number(1e300),
            Literal::Number(2.5e-8),
            Literal::Integer(9007199254740993),
            Literal::Unsigned(18446744073709551615),
            Literal::Number(100.0),
        ],
        invalid: true,
    };
}

/// Reads choices from fuzzer bytes (zeros once they run out), so any byte string is an
/// expression and shrinking the bytes shrinks the expression.
#[derive(Debug)]
pub struct ExpressionSource<'a> {
    bytes: &'a [u8],
    vocabulary: Vocabulary,
}

impl<'a> ExpressionSource<'a> {
    /// A source over `bytes`.
    pub fn new(bytes: &'a [u8], vocabulary: Vocabulary) -> Self {
        ExpressionSource { bytes, vocabulary }
    }

    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((b, rest)) => {
                self.bytes = rest;
                *b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.byte() as usize % n }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A whole expression.
    pub fn expression(&mut self) -> QueryExpression {
        let mut q = QueryExpression::new();
        let shape = self.byte();
        if shape & 1 != 0 {
            q.filter = Some(self.filter(0));
        }
        let aggregate = shape & 2 != 0;
        if aggregate {
            let mut a = Aggregation::by((0..1 + self.below(2)).map(|_| self.scalar_property()));
            for n in 0..1 + self.below(3) {
                let op = self.pick(&[
                    AggregateOperator::Count,
                    AggregateOperator::Sum,
                    AggregateOperator::Avg,
                    AggregateOperator::Min,
                    AggregateOperator::Max,
                ]);
                let property = if op == AggregateOperator::Count && self.byte() & 1 == 0 {
                    None
                } else {
                    Some(self.scalar_property())
                };
                a = a.column(op, property, format!("c{n}"));
            }
            if self.vocabulary.invalid && self.byte() == 7 {
                a.columns[0].column_name = "$bad".into();
            }
            for _ in 0..self.below(3) {
                let key = if self.byte() & 1 == 0 {
                    QueryProperty::aggregated(
                        a.columns[self.below(a.columns.len())].column_name.clone(),
                    )
                } else {
                    a.keys[self.below(a.keys.len())].clone()
                };
                q.sort.push(self.order(key));
            }
            q.aggregate = Some(a);
        }
        if shape & 4 != 0 && (!aggregate || (self.vocabulary.invalid && self.byte() == 3)) {
            q.project = Some(if self.byte() & 1 == 0 {
                Projection::all()
            } else {
                // Tags too, now and then (`scalar_property` never names them).
                Projection::properties((0..1 + self.below(3)).map(|_| {
                    if self.byte().is_multiple_of(5) {
                        QueryProperty::tags()
                    } else {
                        self.scalar_property()
                    }
                }))
            });
        }
        if !aggregate {
            for _ in 0..self.below(3) {
                let key = self.scalar_property();
                q.sort.push(self.order(key));
            }
        }
        q
    }

    fn order(&mut self, property: QueryProperty) -> SortKey {
        if self.byte() & 1 == 0 {
            SortKey::asc(property)
        } else {
            SortKey::desc(property)
        }
    }

    /// A property that is not tags.
    pub fn scalar_property(&mut self) -> QueryProperty {
        let v = self.vocabulary;
        match self.below(8) {
            0..=3 => QueryProperty::device(self.pick(v.device)),
            4 | 5 => QueryProperty::service(self.pick(v.service)),
            6 => QueryProperty::default_field(self.pick(v.fields)),
            _ => QueryProperty::custom(self.pick(v.custom)),
        }
    }

    /// A literal of any type.
    pub fn literal(&mut self) -> Literal {
        match self.below(5) {
            0 | 1 => Literal::String(self.pick(self.vocabulary.strings).to_owned()),
            2 | 3 => {
                let numbers = self.vocabulary.numbers;
                numbers[self.below(numbers.len())].clone()
            }
            _ => Literal::Bool(self.byte() & 1 == 0),
        }
    }

    fn literals(&mut self) -> Vec<Literal> {
        (0..self.below(4)).map(|_| self.literal()).collect()
    }

    /// A filter nested at most a few levels below `depth`.
    pub fn filter(&mut self, depth: usize) -> Filter {
        let kind = if depth >= 3 { 0 } else { self.below(8) };
        match kind {
            0..=4 => self.comparison(),
            5 => Filter::all_of((0..1 + self.below(3)).map(|_| self.filter(depth + 1))),
            6 => Filter::any_of((0..1 + self.below(3)).map(|_| self.filter(depth + 1))),
            _ => Filter::negate(self.filter(depth + 1)),
        }
    }

    fn comparison(&mut self) -> Filter {
        let invalid = self.vocabulary.invalid && self.byte() == 0xff;
        if self.below(6) == 0 {
            let tags: Vec<Literal> = (0..self.below(3))
                .map(|_| Literal::String(self.pick(self.vocabulary.strings).to_owned()))
                .collect();
            return if invalid {
                QueryProperty::tags().eq("x")
            } else {
                QueryProperty::tags().all(tags)
            };
        }
        let p = self.scalar_property();
        if invalid {
            return match self.below(4) {
                0 => p.is_in(Vec::<Literal>::new()).with_null_value(),
                1 => p.all(["x"]),
                2 => QueryProperty::new(PropertyType::Aggregated, "c0").eq(1),
                _ => Filter::any_of([]),
            };
        }
        match self.below(11) {
            0 => p.eq(self.literal()),
            1 => p.ne(self.literal()),
            2 => p.gt(self.literal()),
            3 => p.gte(self.literal()),
            4 => p.lt(self.literal()),
            5 => p.lte(self.literal()),
            6 => p.is_in(self.literals()),
            7 => p.not_in(self.literals()),
            8 => p.exists(),
            9 => p.missing(),
            _ => p.eq(self.literal()),
        }
    }
}

impl Filter {
    /// Replaces a comparison's value with `null` (for generating invalid expressions).
    fn with_null_value(mut self) -> Filter {
        if let Filter::Comparison(c) = &mut self {
            c.value = crate::query::ComparisonValue::Null;
        }
        self
    }
}
