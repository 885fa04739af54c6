//! The CoRE link format (RFC 6690): LWM2M registration payloads
//! (`</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/0>,</3/0>`) and Discover answers.
//!
//! Grammar (RFC 6690 §2, RFC 5988), one nom function per production:
//!
//! ```text
//! links      = [ link *( "," link ) ]                ; optional whitespace around ","
//! link       = "<" uri-ref ">" *( ";" param )
//! param      = parmname [ "=" ( ptoken / quoted-string ) ]
//! parmname   = 1*( ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." / "^" / "_"
//!                / "`" / "|" / "~" / "*" )
//! ptoken     = 1*( "!" / "#" / "$" / "%" / "&" / "'" / "(" / ")" / "*" / "+" / "-" / "."
//!                / "/" / DIGIT / ":" / "<" / "=" / ">" / "?" / "@" / ALPHA / "[" / "]"
//!                / "^" / "_" / "`" / "{" / "|" / "}" / "~" )
//! quoted     = DQUOTE *( qdtext / "\" CHAR ) DQUOTE
//! ```
//!
//! Parsing is bounded: at most [`MAX_INPUT_LEN`] bytes, [`MAX_LINKS`] links and
//! [`MAX_PARAMS`] parameters per link.
//!
//! ```
//! use twinhub::coap::link_format::{self, Link};
//! let links = link_format::parse(r#"</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/0>,</3/0>"#).unwrap();
//! assert_eq!(links.len(), 4);
//! assert_eq!(links[0].param("rt"), Some("oma.lwm2m"));
//! assert_eq!(links[1].target, "/1");
//! assert_eq!(links[1].param("ver"), Some("1.1"));
//! assert_eq!(link_format::to_string(&links), r#"</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/0>,</3/0>"#);
//! ```

use nom::bytes::complete::{take_while, take_while1};
use nom::character::complete::char;
use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};
use std::fmt;

/// Longest input accepted (bytes).
pub const MAX_INPUT_LEN: usize = 64 * 1024;
/// Most links in one document.
pub const MAX_LINKS: usize = 4096;
/// Most parameters on one link.
pub const MAX_PARAMS: usize = 32;

/// A parameter's value, as written.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ParamValue {
    /// A bare token (`ct=110`).
    Token(String),
    /// A quoted string, unescaped (`rt="oma.lwm2m"`).
    Quoted(String),
}

impl ParamValue {
    /// The value text.
    pub fn as_str(&self) -> &str {
        match self {
            ParamValue::Token(s) | ParamValue::Quoted(s) => s,
        }
    }
}

/// One link parameter: a name and an optional value (`obs` has none).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LinkParam {
    /// Parameter name.
    pub name: String,
    /// Its value, if any.
    pub value: Option<ParamValue>,
}

/// One link: `<target>;param;param=value`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Link {
    /// The URI reference between `<` and `>`.
    pub target: String,
    /// Parameters in order.
    pub params: Vec<LinkParam>,
}

impl Link {
    /// A link without parameters.
    pub fn new(target: impl Into<String>) -> Link {
        Link {
            target: target.into(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter written as a token when it can be, quoted otherwise.
    pub fn with_param(mut self, name: &str, value: &str) -> Link {
        let value = if !value.is_empty() && value.bytes().all(is_ptoken_char) {
            ParamValue::Token(value.to_owned())
        } else {
            ParamValue::Quoted(value.to_owned())
        };
        self.params.push(LinkParam {
            name: name.to_owned(),
            value: Some(value),
        });
        self
    }

    /// Adds a quoted parameter (`rt="oma.lwm2m"`).
    pub fn with_quoted_param(mut self, name: &str, value: &str) -> Link {
        self.params.push(LinkParam {
            name: name.to_owned(),
            value: Some(ParamValue::Quoted(value.to_owned())),
        });
        self
    }

    /// Adds a parameter without value (`obs`).
    pub fn with_flag(mut self, name: &str) -> Link {
        self.params.push(LinkParam {
            name: name.to_owned(),
            value: None,
        });
        self
    }

    /// The value of the first parameter with this name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.value.as_ref().map(ParamValue::as_str))
    }

    /// Whether a parameter with this name is present (with or without value).
    pub fn has_param(&self, name: &str) -> bool {
        self.params.iter().any(|p| p.name == name)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.target)?;
        for p in &self.params {
            write!(f, ";{}", p.name)?;
            match &p.value {
                None => {}
                Some(ParamValue::Token(t)) if !t.is_empty() && t.bytes().all(is_ptoken_char) => {
                    write!(f, "={t}")?
                }
                Some(v) => {
                    f.write_str("=\"")?;
                    for c in v.as_str().chars() {
                        if c == '"' || c == '\\' {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("\"")?;
                }
            }
        }
        Ok(())
    }
}

/// What was wrong with a link-format document.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum LinkFormatErrorKind {
    /// Expected `<` starting a link.
    ExpectedLink,
    /// The target has no closing `>` or holds a character not allowed in a URI.
    BadTarget,
    /// A parameter name was expected after `;`.
    ExpectedParamName,
    /// A parameter value was expected after `=`.
    ExpectedParamValue,
    /// A quoted string has no closing quote.
    UnterminatedQuote,
    /// Expected `,`, `;` or the end after a link.
    UnexpectedCharacter,
    /// The input is longer than [`MAX_INPUT_LEN`].
    TooLong,
    /// More than [`MAX_LINKS`] links.
    TooManyLinks,
    /// More than [`MAX_PARAMS`] parameters on one link.
    TooManyParams,
}

/// A link-format parse failure: what and at which byte offset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LinkFormatError {
    /// What was wrong.
    pub kind: LinkFormatErrorKind,
    /// Byte offset in the input.
    pub offset: usize,
}

impl fmt::Display for LinkFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            LinkFormatErrorKind::ExpectedLink => "expected '<' starting a link",
            LinkFormatErrorKind::BadTarget => "bad link target",
            LinkFormatErrorKind::ExpectedParamName => "expected a parameter name",
            LinkFormatErrorKind::ExpectedParamValue => "expected a parameter value",
            LinkFormatErrorKind::UnterminatedQuote => "unterminated quoted string",
            LinkFormatErrorKind::UnexpectedCharacter => "expected ',' or ';'",
            LinkFormatErrorKind::TooLong => "link format document too long",
            LinkFormatErrorKind::TooManyLinks => "too many links",
            LinkFormatErrorKind::TooManyParams => "too many link parameters",
        };
        write!(f, "{what} at byte {}", self.offset)
    }
}

impl std::error::Error for LinkFormatError {}

#[derive(Debug)]
struct Fail<'a> {
    at: &'a str,
    kind: LinkFormatErrorKind,
}

impl<'a> ParseError<&'a str> for Fail<'a> {
    fn from_error_kind(input: &'a str, _: ErrorKind) -> Self {
        Fail {
            at: input,
            kind: LinkFormatErrorKind::UnexpectedCharacter,
        }
    }
    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a str, T, Fail<'a>>;

fn fail<T>(at: &str, kind: LinkFormatErrorKind) -> PResult<'_, T> {
    Err(nom::Err::Failure(Fail { at, kind }))
}

fn is_ptoken_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'()*+-./:<=>?@[]^_`{|}~".contains(&b)
}

fn is_parmname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$&+-.^_`|~*".contains(c)
}

fn is_target_char(c: char) -> bool {
    c != '>' && c != '<' && c != '"' && !c.is_control() && !c.is_whitespace()
}

fn ws(input: &str) -> PResult<'_, &str> {
    take_while(|c: char| c == ' ' || c == '\t' || c == '\r' || c == '\n').parse(input)
}

/// `quoted = DQUOTE *( qdtext / "\" CHAR ) DQUOTE`
fn quoted(input: &str) -> PResult<'_, String> {
    let (body, _) = char('"').parse(input)?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((&body[i + 1..], out)),
            '\\' => match chars.next() {
                Some((_, e)) => out.push(e),
                None => break,
            },
            c => out.push(c),
        }
    }
    fail(input, LinkFormatErrorKind::UnterminatedQuote)
}

/// `param = parmname [ "=" ( ptoken / quoted-string ) ]`
fn param(input: &str) -> PResult<'_, LinkParam> {
    let (rest, name) = match take_while1::<_, _, Fail<'_>>(is_parmname_char).parse(input) {
        Ok(ok) => ok,
        Err(_) => return fail(input, LinkFormatErrorKind::ExpectedParamName),
    };
    let Some(after_eq) = rest.strip_prefix('=') else {
        return Ok((
            rest,
            LinkParam {
                name: name.to_owned(),
                value: None,
            },
        ));
    };
    let (rest, value) = if after_eq.starts_with('"') {
        let (r, s) = quoted(after_eq)?;
        (r, ParamValue::Quoted(s))
    } else {
        match take_while1::<_, _, Fail<'_>>(|c: char| c.is_ascii() && is_ptoken_char(c as u8))
            .parse(after_eq)
        {
            Ok((r, t)) => (r, ParamValue::Token(t.to_owned())),
            Err(_) => return fail(after_eq, LinkFormatErrorKind::ExpectedParamValue),
        }
    };
    Ok((
        rest,
        LinkParam {
            name: name.to_owned(),
            value: Some(value),
        },
    ))
}

/// `link = "<" uri-ref ">" *( ";" param )`
fn link(input: &str) -> PResult<'_, Link> {
    let Some(rest) = input.strip_prefix('<') else {
        return fail(input, LinkFormatErrorKind::ExpectedLink);
    };
    let (rest, target) = take_while(is_target_char).parse(rest)?;
    let Some(mut rest) = rest.strip_prefix('>') else {
        return fail(rest, LinkFormatErrorKind::BadTarget);
    };
    let mut params = Vec::new();
    while let Some(r) = rest.strip_prefix(';') {
        if params.len() == MAX_PARAMS {
            return fail(rest, LinkFormatErrorKind::TooManyParams);
        }
        let (r, p) = param(r)?;
        params.push(p);
        rest = r;
    }
    Ok((
        rest,
        Link {
            target: target.to_owned(),
            params,
        },
    ))
}

/// `links = [ link *( "," link ) ]`
fn links(input: &str) -> PResult<'_, Vec<Link>> {
    let (mut rest, _) = ws(input)?;
    let mut out = Vec::new();
    if rest.is_empty() {
        return Ok((rest, out));
    }
    loop {
        if out.len() == MAX_LINKS {
            return fail(rest, LinkFormatErrorKind::TooManyLinks);
        }
        let (r, l) = link(rest)?;
        out.push(l);
        let (r, _) = ws(r)?;
        if r.is_empty() {
            return Ok((r, out));
        }
        let Some(r) = r.strip_prefix(',') else {
            return fail(r, LinkFormatErrorKind::UnexpectedCharacter);
        };
        let (r, _) = ws(r)?;
        rest = r;
    }
}

/// Parses a link-format document (an empty one is no links).
pub fn parse(input: &str) -> Result<Vec<Link>, LinkFormatError> {
    if input.len() > MAX_INPUT_LEN {
        return Err(LinkFormatError {
            kind: LinkFormatErrorKind::TooLong,
            offset: MAX_INPUT_LEN,
        });
    }
    match links(input) {
        Ok((_, l)) => Ok(l),
        Err(nom::Err::Error(f) | nom::Err::Failure(f)) => Err(LinkFormatError {
            kind: f.kind,
            offset: input.len() - f.at.len(),
        }),
        Err(nom::Err::Incomplete(_)) => Err(LinkFormatError {
            kind: LinkFormatErrorKind::UnexpectedCharacter,
            offset: input.len(),
        }),
    }
}

/// Parses a payload's bytes (must be UTF-8; a bad byte is reported as a bad target at
/// its offset).
pub fn parse_bytes(input: &[u8]) -> Result<Vec<Link>, LinkFormatError> {
    match std::str::from_utf8(input) {
        Ok(s) => parse(s),
        Err(e) => Err(LinkFormatError {
            kind: LinkFormatErrorKind::BadTarget,
            offset: e.valid_up_to(),
        }),
    }
}

/// Writes links as a document (`,`-separated, no whitespace).
pub fn to_string(links: &[Link]) -> String {
    let mut s = String::new();
    for (i, l) in links.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&l.to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lwm2m_registration_payload() {
        let doc = r#"</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/0>,</3/0>,</5/0>"#;
        let l = parse(doc).unwrap();
        assert_eq!(l.len(), 5);
        assert_eq!(l[0].target, "/");
        assert_eq!(
            l[0].params[0].value,
            Some(ParamValue::Quoted("oma.lwm2m".into()))
        );
        assert_eq!(l[0].params[1].value, Some(ParamValue::Token("110".into())));
        assert_eq!(l[4].target, "/5/0");
        assert_eq!(to_string(&l), doc);
    }

    #[test]
    fn discover_answer_with_flags_and_whitespace() {
        let doc = "</3/0>;pmin=10;pmax=60, \n</3/0/1>,</3/0/9>;obs;gt=\"5\\\"x\"";
        let l = parse(doc).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].param("pmax"), Some("60"));
        assert!(l[2].has_param("obs") && l[2].param("obs").is_none());
        assert_eq!(l[2].param("gt"), Some("5\"x"));
        assert_eq!(parse(&to_string(&l)).unwrap(), l);
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("  ").unwrap(), vec![]);
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = |s: &str| {
            let e = parse(s).unwrap_err();
            (e.kind, e.offset)
        };
        assert_eq!(e("/1/0"), (LinkFormatErrorKind::ExpectedLink, 0));
        assert_eq!(e("</1/0"), (LinkFormatErrorKind::BadTarget, 5));
        assert_eq!(e("</1 0>"), (LinkFormatErrorKind::BadTarget, 3));
        assert_eq!(e("</1>;"), (LinkFormatErrorKind::ExpectedParamName, 5));
        assert_eq!(e("</1>;a="), (LinkFormatErrorKind::ExpectedParamValue, 7));
        assert_eq!(e("</1>;a=\"x"), (LinkFormatErrorKind::UnterminatedQuote, 7));
        assert_eq!(e("</1>x"), (LinkFormatErrorKind::UnexpectedCharacter, 4));
        assert_eq!(e("</1>,"), (LinkFormatErrorKind::ExpectedLink, 5));
        assert_eq!(
            parse_bytes(b"</\xff>").unwrap_err().kind,
            LinkFormatErrorKind::BadTarget
        );
        assert_eq!(
            e(&"</a>,".repeat(MAX_LINKS + 1)[..]).0,
            LinkFormatErrorKind::TooManyLinks
        );
        assert_eq!(
            e(&format!("</a>{}", ";x".repeat(MAX_PARAMS + 1))).0,
            LinkFormatErrorKind::TooManyParams
        );
        assert_eq!(
            e(&" ".repeat(MAX_INPUT_LEN + 1)).0,
            LinkFormatErrorKind::TooLong
        );
        assert_eq!(
            parse("</1>;").unwrap_err().to_string(),
            "expected a parameter name at byte 5"
        );
    }

    #[test]
    fn builder_quotes_when_needed() {
        let l = Link::new("/3/0")
            .with_param("ct", "110")
            .with_param("title", "a b")
            .with_quoted_param("rt", "x")
            .with_flag("obs");
        assert_eq!(l.to_string(), r#"</3/0>;ct=110;title="a b";rt="x";obs"#);
        assert_eq!(parse(&l.to_string()).unwrap(), vec![l]);
    }
}
