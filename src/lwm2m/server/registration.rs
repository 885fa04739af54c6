//! The LWM2M registration interface (LWM2M 1.1 TS §6.2, transport §6.4): Register,
//! Update and De-register requests, parsed from a CoAP request's method, Uri-Path,
//! Uri-Query options and CoRE link-format payload.
//!
//! | operation | CoAP | parsed into |
//! |---|---|---|
//! | Register | `POST /rd?ep=..&lt=..&lwm2m=..&b=..[&sms=..][&Q]` + links | [`RegistrationRequest`] |
//! | Update | `POST /rd/{id}[?lt=..&b=..&sms=..][&Q]` [+ links] | [`UpdateRequest`] |
//! | De-register | `DELETE /rd/{id}` | [`RdMessage::Deregister`] |
//!
//! The link payload is read with [`crate::coap::link_format`]. Parsing is bounded
//! ([`MAX_QUERIES`], [`MAX_LINK_PAYLOAD`], [`MAX_OBJECTS`]) and returns a typed
//! [`RegistrationError`]; it never panics on input.

use crate::coap::link_format::{self, LinkFormatErrorKind};
use crate::lwm2m::Lwm2mPath;
use std::fmt;

/// Most Uri-Query options a registration may carry.
pub const MAX_QUERIES: usize = 16;
/// Longest accepted link-format payload, in bytes.
pub const MAX_LINK_PAYLOAD: usize = 16 * 1024;
/// Most object (instance) links a registration may announce.
pub const MAX_OBJECTS: usize = 1024;
/// Longest accepted endpoint name, in bytes: what fits beside `ep=` in one Uri-Query
/// option (at most 255 bytes, RFC 7252 §5.10).
pub const MAX_ENDPOINT: usize = 252;
/// Longest accepted lifetime (`lt`), in seconds: one year. A longer one gets 4.00; the
/// specification sets no maximum, but a registration that never expires would hold its
/// state forever for a device that is gone.
pub const MAX_LIFETIME: u32 = 365 * 24 * 3600;
/// The lifetime when a Register carries no `lt` (LWM2M §6.2.1: 86400 s).
pub const DEFAULT_LIFETIME: u32 = 86_400;

/// A Register request.
///
/// ```
/// use twinhub::lwm2m::server::RegistrationRequest;
/// use twinhub::Lwm2mPath;
///
/// let r = RegistrationRequest::parse(
///     &["ep=dev-1", "lt=300", "lwm2m=1.1", "b=U", "Q"],
///     br#"</>;rt="oma.lwm2m";ct="110 11542",</1>;ver=1.1,</1/0>,</3/0>,</5/0>"#,
/// )
/// .unwrap();
/// assert_eq!(r.endpoint, "dev-1");
/// assert_eq!(r.lifetime, 300);
/// assert!(r.queue_mode);
/// assert_eq!(r.content_formats, vec![110, 11542]);
/// assert_eq!(r.objects[1], Lwm2mPath::instance(1, 0));
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RegistrationRequest {
    /// The endpoint name (`ep`).
    pub endpoint: String,
    /// Lifetime in seconds (`lt`, default [`DEFAULT_LIFETIME`]).
    pub lifetime: u32,
    /// LWM2M version (`lwm2m`, default "1.0").
    pub lwm2m_version: String,
    /// Binding (`b`, default "U").
    pub binding: String,
    /// Queue mode: `b` contains `Q` (1.0 `UQ`) or the 1.1 `Q` flag is present.
    pub queue_mode: bool,
    /// MSISDN (`sms`), if given.
    pub sms: Option<String>,
    /// The announced objects and object instances, alternate path stripped.
    pub objects: Vec<Lwm2mPath>,
    /// The alternate path of the LWM2M objects (`</lwm2m>;rt="oma.lwm2m"`), if not `/`.
    pub alternate_path: Option<String>,
    /// The content formats the client announced (`ct` on the `rt="oma.lwm2m"` link; when
    /// there is none, on a bare `</>` link, as Leshan's clients send it), at most 16.
    pub content_formats: Vec<u16>,
}

/// An Update request: only what it carries changes.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct UpdateRequest {
    /// New lifetime (`lt`).
    pub lifetime: Option<u32>,
    /// New binding (`b`).
    pub binding: Option<String>,
    /// New MSISDN (`sms`).
    pub sms: Option<String>,
    /// `Some(true)` when the 1.1 `Q` flag or a `b` with `Q` is present, `Some(false)` when
    /// a `b` without `Q` is present, `None` when neither.
    pub queue_mode: Option<bool>,
    /// New object list, when the payload is not empty.
    pub objects: Option<Vec<Lwm2mPath>>,
    /// New content formats, when the payload announces them.
    pub content_formats: Option<Vec<u16>>,
}

/// The CoAP methods the registration interface distinguishes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RdMethod {
    /// POST: Register or Update.
    Post,
    /// DELETE: De-register.
    Delete,
    /// Anything else (not part of the interface).
    Other,
}

/// The LWM2M versions the server speaks (`lwm2m=` at registration). Anything else that is
/// a well-formed version is refused with 4.12 Precondition Failed (LWM2M 1.1 §6.2.1), so
/// that a client can register again with an older one.
pub const SUPPORTED_VERSIONS: [(u8, u8); 2] = [(1, 0), (1, 1)];

/// An LWM2M version `major.minor` (each 1 to 3 digits), or `None` when `v` is not one.
///
/// ```
/// use twinhub::lwm2m::server::parse_version;
/// assert_eq!(parse_version("1.1"), Some((1, 1)));
/// assert_eq!(parse_version("1.2"), Some((1, 2)));
/// assert_eq!(parse_version(".."), None);
/// assert_eq!(parse_version("1.0.2"), None);
/// ```
pub fn parse_version(v: &str) -> Option<(u8, u8)> {
    let (major, minor) = v.split_once('.')?;
    let part = |p: &str| {
        (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u8>().ok())
            .flatten()
    };
    Some((part(major)?, part(minor)?))
}

/// A request to the registration interface.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RdMessage {
    /// `POST /rd`.
    Register(RegistrationRequest),
    /// `POST /rd/{id}`.
    Update {
        /// The registration id.
        id: String,
        /// What changes.
        update: UpdateRequest,
    },
    /// `DELETE /rd/{id}`.
    Deregister {
        /// The registration id.
        id: String,
    },
}

/// Why a registration-interface request is malformed.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The path or method is not part of the registration interface.
    NotRegistrationInterface,
    /// No `ep` query (or an empty one).
    MissingEndpoint,
    /// The endpoint name is longer than [`MAX_ENDPOINT`] or not UTF-8 printable.
    BadEndpoint,
    /// A query parameter appears twice.
    DuplicateQuery(&'static str),
    /// A query parameter has a bad value.
    BadQueryValue(&'static str),
    /// A query option is not UTF-8.
    QueryNotUtf8,
    /// More than [`MAX_QUERIES`] queries.
    TooManyQueries,
    /// The link payload is larger than [`MAX_LINK_PAYLOAD`].
    PayloadTooLarge(usize),
    /// The link payload is not UTF-8.
    PayloadNotUtf8,
    /// The link payload is not CoRE link format.
    BadLinkFormat {
        /// Byte offset of the problem.
        offset: usize,
    },
    /// More than [`MAX_OBJECTS`] object links.
    TooManyObjects,
}

impl fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistrationError::NotRegistrationInterface => {
                f.write_str("not a registration interface request")
            }
            RegistrationError::MissingEndpoint => f.write_str("missing endpoint name (ep)"),
            RegistrationError::BadEndpoint => {
                f.write_str("endpoint name too long or not printable")
            }
            RegistrationError::DuplicateQuery(k) => write!(f, "query parameter {k} appears twice"),
            RegistrationError::BadQueryValue(k) => write!(f, "bad value for query parameter {k}"),
            RegistrationError::QueryNotUtf8 => f.write_str("query option is not utf-8"),
            RegistrationError::TooManyQueries => {
                write!(f, "more than {MAX_QUERIES} query options")
            }
            RegistrationError::PayloadTooLarge(n) => {
                write!(f, "link payload of {n} bytes exceeds {MAX_LINK_PAYLOAD}")
            }
            RegistrationError::PayloadNotUtf8 => f.write_str("link payload is not utf-8"),
            RegistrationError::BadLinkFormat { offset } => {
                write!(f, "malformed link format at byte {offset}")
            }
            RegistrationError::TooManyObjects => write!(f, "more than {MAX_OBJECTS} object links"),
        }
    }
}

impl std::error::Error for RegistrationError {}

/// The query parameters of Register and Update, each at most once.
#[derive(Default)]
struct Queries<'a> {
    ep: Option<&'a str>,
    lt: Option<&'a str>,
    lwm2m: Option<&'a str>,
    b: Option<&'a str>,
    sms: Option<&'a str>,
    q: bool,
}

fn split_queries<'a>(queries: &[&'a str]) -> Result<Queries<'a>, RegistrationError> {
    if queries.len() > MAX_QUERIES {
        return Err(RegistrationError::TooManyQueries);
    }
    let mut out = Queries::default();
    for q in queries {
        let (k, v) = q.split_once('=').unwrap_or((q, ""));
        let slot = match k {
            "ep" => (&mut out.ep, "ep"),
            "lt" => (&mut out.lt, "lt"),
            "lwm2m" => (&mut out.lwm2m, "lwm2m"),
            "b" => (&mut out.b, "b"),
            "sms" => (&mut out.sms, "sms"),
            "Q" => {
                if out.q {
                    return Err(RegistrationError::DuplicateQuery("Q"));
                }
                out.q = true;
                continue;
            }
            // Unknown parameters (pct, ...) are ignored.
            _ => continue,
        };
        if slot.0.replace(v).is_some() {
            return Err(RegistrationError::DuplicateQuery(slot.1));
        }
    }
    Ok(out)
}

fn parse_lifetime(v: &str) -> Result<u32, RegistrationError> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 && n <= MAX_LIFETIME && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(RegistrationError::BadQueryValue("lt")),
    }
}

fn parse_binding(v: &str) -> Result<String, RegistrationError> {
    if v.is_empty() || v.len() > 8 || !v.bytes().all(|b| b"UMHTSNQ".contains(&b)) {
        return Err(RegistrationError::BadQueryValue("b"));
    }
    Ok(v.to_owned())
}

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

/// Uri-Query option values as UTF-8 strings.
pub fn queries_as_str<'a>(raw: &[&'a [u8]]) -> Result<Vec<&'a str>, RegistrationError> {
    if raw.len() > MAX_QUERIES {
        return Err(RegistrationError::TooManyQueries);
    }
    raw.iter()
        .map(|q| std::str::from_utf8(q).map_err(|_| RegistrationError::QueryNotUtf8))
        .collect()
}

impl RegistrationRequest {
    /// Parses a Register from its Uri-Query option values and link payload.
    pub fn parse(queries: &[&str], payload: &[u8]) -> Result<Self, RegistrationError> {
        let q = split_queries(queries)?;
        let endpoint = q.ep.ok_or(RegistrationError::MissingEndpoint)?;
        if endpoint.is_empty() {
            return Err(RegistrationError::MissingEndpoint);
        }
        if !printable(endpoint, MAX_ENDPOINT) {
            return Err(RegistrationError::BadEndpoint);
        }
        let lifetime =
            q.lt.map(parse_lifetime)
                .transpose()?
                .unwrap_or(DEFAULT_LIFETIME);
        let lwm2m_version = match q.lwm2m {
            None => "1.0".to_owned(),
            Some(v) if parse_version(v).is_some() => v.to_owned(),
            Some(_) => return Err(RegistrationError::BadQueryValue("lwm2m")),
        };
        let binding =
            q.b.map(parse_binding)
                .transpose()?
                .unwrap_or_else(|| "U".to_owned());
        let sms = q.sms.map(|s| {
            if printable(s, 32) {
                Ok(s.to_owned())
            } else {
                Err(RegistrationError::BadQueryValue("sms"))
            }
        });
        let links = parse_links(payload)?;
        Ok(RegistrationRequest {
            endpoint: endpoint.to_owned(),
            lifetime,
            lwm2m_version,
            queue_mode: q.q || binding.contains('Q'),
            binding,
            sms: sms.transpose()?,
            objects: links.objects,
            alternate_path: links.alternate_path,
            content_formats: links.content_formats,
        })
    }

    /// The Uri-Query options that express this request (the client side of [`Self::parse`]).
    pub fn to_queries(&self) -> Vec<String> {
        let mut q = vec![
            format!("ep={}", self.endpoint),
            format!("lt={}", self.lifetime),
            format!("lwm2m={}", self.lwm2m_version),
            format!("b={}", self.binding),
        ];
        if let Some(s) = &self.sms {
            q.push(format!("sms={s}"));
        }
        if self.queue_mode && !self.binding.contains('Q') {
            q.push("Q".to_owned());
        }
        q
    }

    /// The link-format payload that announces this request's objects.
    pub fn to_link_payload(&self) -> String {
        let root = self.alternate_path.as_deref().unwrap_or("/");
        let mut s = format!("<{root}>;rt=\"oma.lwm2m\"");
        if !self.content_formats.is_empty() {
            let cts: Vec<String> = self.content_formats.iter().map(u16::to_string).collect();
            s.push_str(&format!(";ct=\"{}\"", cts.join(" ")));
        }
        let prefix = self.alternate_path.as_deref().unwrap_or("");
        for o in &self.objects {
            s.push_str(&format!(",<{prefix}{o}>"));
        }
        s
    }
}

impl UpdateRequest {
    /// Parses an Update from its Uri-Query option values and (possibly empty) payload.
    pub fn parse(queries: &[&str], payload: &[u8]) -> Result<Self, RegistrationError> {
        let q = split_queries(queries)?;
        let binding = q.b.map(parse_binding).transpose()?;
        let queue_mode = match (&binding, q.q) {
            (_, true) => Some(true),
            (Some(b), false) => Some(b.contains('Q')),
            (None, false) => None,
        };
        let sms = match q.sms {
            Some(s) if printable(s, 32) => Some(s.to_owned()),
            Some(_) => return Err(RegistrationError::BadQueryValue("sms")),
            None => None,
        };
        let (objects, content_formats) = if payload.iter().all(u8::is_ascii_whitespace) {
            (None, None)
        } else {
            let l = parse_links(payload)?;
            let cts = (!l.content_formats.is_empty()).then_some(l.content_formats);
            (Some(l.objects), cts)
        };
        Ok(UpdateRequest {
            lifetime: q.lt.map(parse_lifetime).transpose()?,
            binding,
            sms,
            queue_mode,
            objects,
            content_formats,
        })
    }

    /// Whether the update changes nothing (a keep-alive).
    pub fn is_keep_alive(&self) -> bool {
        *self == UpdateRequest::default()
    }
}

impl RdMessage {
    /// Classifies and parses a request by method and Uri-Path segments: `POST rd` is a
    /// Register, `POST rd/{id}` an Update, `DELETE rd/{id}` a De-register.
    ///
    /// ```
    /// use twinhub::lwm2m::server::{RdMessage, RdMethod};
    /// let m = RdMessage::parse(RdMethod::Delete, &["rd", "7"], &[], b"").unwrap();
    /// assert_eq!(m, RdMessage::Deregister { id: "7".into() });
    /// ```
    pub fn parse(
        method: RdMethod,
        path: &[&str],
        queries: &[&str],
        payload: &[u8],
    ) -> Result<RdMessage, RegistrationError> {
        match (method, path) {
            (RdMethod::Post, ["rd"]) => Ok(RdMessage::Register(RegistrationRequest::parse(
                queries, payload,
            )?)),
            (RdMethod::Post, ["rd", id]) if valid_id(id) => Ok(RdMessage::Update {
                id: (*id).to_owned(),
                update: UpdateRequest::parse(queries, payload)?,
            }),
            (RdMethod::Delete, ["rd", id]) if valid_id(id) => Ok(RdMessage::Deregister {
                id: (*id).to_owned(),
            }),
            _ => Err(RegistrationError::NotRegistrationInterface),
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// What a registration's link payload says.
#[derive(Default)]
struct Links {
    objects: Vec<Lwm2mPath>,
    alternate_path: Option<String>,
    content_formats: Vec<u16>,
}

fn parse_links(payload: &[u8]) -> Result<Links, RegistrationError> {
    if payload.len() > MAX_LINK_PAYLOAD {
        return Err(RegistrationError::PayloadTooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| RegistrationError::PayloadNotUtf8)?;
    if text.trim().is_empty() {
        return Ok(Links::default());
    }
    let links = link_format::parse(text.trim()).map_err(|e| match e.kind {
        LinkFormatErrorKind::TooManyLinks => RegistrationError::TooManyObjects,
        _ => RegistrationError::BadLinkFormat { offset: e.offset },
    })?;
    let mut targets = Vec::new();
    let mut out = Links::default();
    // A `</>` link with `ct` but no `rt` (Leshan's clients announce their formats so):
    // its formats count when no link has `rt="oma.lwm2m"`, as in Leshan. It cannot be
    // anything else: `/` is no object, and the root is the default object path anyway.
    let mut bare_root_ct = None;
    let mut oma_link = false;
    for l in &links {
        if l.param("rt")
            .is_some_and(|rt| rt.split(' ').any(|t| t == "oma.lwm2m"))
        {
            oma_link = true;
            let root = l.target.trim_end_matches('/');
            if !root.is_empty() {
                if !root.starts_with('/') || root.len() > 64 {
                    return Err(RegistrationError::BadLinkFormat { offset: 0 });
                }
                out.alternate_path = Some(root.to_owned());
            }
            if let Some(ct) = l.param("ct") {
                add_formats(&mut out.content_formats, ct)?;
            }
        } else {
            if l.target == "/" && l.param("rt").is_none() {
                bare_root_ct = bare_root_ct.or(l.param("ct"));
            }
            if targets.len() >= MAX_OBJECTS {
                return Err(RegistrationError::TooManyObjects);
            }
            targets.push(l.target.as_str());
        }
    }
    if !oma_link && let Some(ct) = bare_root_ct {
        add_formats(&mut out.content_formats, ct)?;
    }
    let prefix = out.alternate_path.as_deref().unwrap_or("");
    for t in targets {
        // Links outside the object tree (or deeper than an instance) are not objects.
        let Some(rest) = t.strip_prefix(prefix) else {
            continue;
        };
        if let Ok(p) = rest.parse::<Lwm2mPath>()
            && (1..=2).contains(&p.depth())
            && !out.objects.contains(&p)
        {
            out.objects.push(p);
        }
    }
    Ok(out)
}

/// Adds the formats of a `ct` value (space-separated numbers), at most 16 in all.
fn add_formats(formats: &mut Vec<u16>, ct: &str) -> Result<(), RegistrationError> {
    for c in ct.split(' ').filter(|c| !c.is_empty()) {
        let n = c
            .parse::<u16>()
            .map_err(|_| RegistrationError::BadLinkFormat { offset: 0 })?;
        if formats.len() < 16 && !formats.contains(&n) {
            formats.push(n);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_defaults_and_fields() {
        let r = RegistrationRequest::parse(&["ep=a"], b"</3/0>").unwrap();
        assert_eq!(r.lifetime, DEFAULT_LIFETIME);
        assert_eq!(r.lwm2m_version, "1.0");
        assert_eq!(r.binding, "U");
        assert!(!r.queue_mode);
        assert_eq!(r.objects, vec![Lwm2mPath::instance(3, 0)]);
        let r = RegistrationRequest::parse(&["b=UQ", "ep=a", "sms=123", "pct=11542"], b"").unwrap();
        assert!(r.queue_mode);
        assert_eq!(r.sms.as_deref(), Some("123"));
        assert!(r.objects.is_empty());
    }

    #[test]
    fn register_errors() {
        use RegistrationError as E;
        let p = |q: &[&str]| RegistrationRequest::parse(q, b"").unwrap_err();
        assert_eq!(p(&[]), E::MissingEndpoint);
        assert_eq!(p(&["ep="]), E::MissingEndpoint);
        assert_eq!(p(&["ep=a", "ep=b"]), E::DuplicateQuery("ep"));
        assert_eq!(p(&["ep=a", "lt=0"]), E::BadQueryValue("lt"));
        assert_eq!(p(&["ep=a", "lt=-5"]), E::BadQueryValue("lt"));
        assert_eq!(p(&["ep=a", "lt=99999999999"]), E::BadQueryValue("lt"));
        assert_eq!(p(&["ep=a", "lt=4294967295"]), E::BadQueryValue("lt"));
        let year = format!("lt={MAX_LIFETIME}");
        let ok = |q: &[&str]| RegistrationRequest::parse(q, b"").unwrap();
        assert_eq!(ok(&["ep=a", &year]).lifetime, MAX_LIFETIME);
        let at_option_limit = format!("ep={}", "x".repeat(MAX_ENDPOINT));
        assert_eq!(at_option_limit.len(), 255);
        assert_eq!(ok(&[&at_option_limit]).endpoint.len(), MAX_ENDPOINT);
        assert_eq!(p(&["ep=a", "b=X"]), E::BadQueryValue("b"));
        assert_eq!(p(&["ep=a", "lwm2m=one"]), E::BadQueryValue("lwm2m"));
        assert_eq!(p(&["ep=a\n"]), E::BadEndpoint);
        assert_eq!(p(&["ep=a"; 17]), E::TooManyQueries);
        let long = format!("ep={}", "x".repeat(MAX_ENDPOINT + 1));
        assert_eq!(p(&[&long]), E::BadEndpoint);
        for bad in [
            &b"<3/0"[..],
            b"</3/0>;",
            b"</3/0> x",
            b"</1>;ct=\"110",
            b"\xff",
        ] {
            assert!(
                RegistrationRequest::parse(&["ep=a"], bad).is_err(),
                "{bad:?}"
            );
        }
        let many: String = (0..=MAX_OBJECTS).map(|i| format!("</{i}/0>,")).collect();
        assert_eq!(
            RegistrationRequest::parse(&["ep=a"], many.trim_end_matches(',').as_bytes()),
            Err(E::TooManyObjects)
        );
    }

    #[test]
    fn links_alternate_path_and_tolerance() {
        let r = RegistrationRequest::parse(
            &["ep=a"],
            b"</lwm2m>;rt=\"oma.lwm2m\";ct=11543, </lwm2m/1/0>,\n </lwm2m/3/0>;ver=\"1.0\",</other>,</lwm2m/3/0/9>,</lwm2m/5>",
        )
        .unwrap();
        assert_eq!(r.alternate_path.as_deref(), Some("/lwm2m"));
        assert_eq!(r.content_formats, vec![11543]);
        assert_eq!(
            r.objects,
            vec![
                Lwm2mPath::instance(1, 0),
                Lwm2mPath::instance(3, 0),
                Lwm2mPath::object(5)
            ]
        );
        // A quoted attribute value may hold commas and semicolons.
        let r = RegistrationRequest::parse(&["ep=a"], b"</1/0>;title=\"a,b;c\",</3/0>").unwrap();
        assert_eq!(r.objects.len(), 2);
    }

    /// LwM2M 1.1.1 Transport §6.4.1 (1.0 §5.3.1 alike): the alternate path is the link
    /// "identified by the RFC 6690 Resource Type parameter `oma.lwm2m`". A link without
    /// that `rt` is not one, however much it looks like a root (`</lwm2m>`, `</lwm2m/>`):
    /// the objects stay at the root, and links under it are not objects (another CoAP
    /// resource of the device's, as Leshan takes them). Quoted or not, `rt` counts; a
    /// trailing slash on the alternate path does not.
    #[test]
    fn only_an_oma_lwm2m_link_names_the_alternate_path() {
        let r = RegistrationRequest::parse(
            &["ep=a"],
            b"</lwm2m>,</lwm2m/>;ct=110,</lwm2m/3/0>,</1/0>,</5>",
        )
        .unwrap();
        assert_eq!(r.alternate_path, None);
        assert_eq!(
            r.objects,
            vec![Lwm2mPath::instance(1, 0), Lwm2mPath::object(5)]
        );
        assert!(r.content_formats.is_empty(), "ct of a link without rt");
        for (links, want) in [
            (
                &b"</lwm2m/>;rt=oma.lwm2m,</lwm2m/3/0>,</1/0>"[..],
                Some("/lwm2m"),
            ),
            (
                b"</lwm2m>;rt=\"x oma.lwm2m\",</lwm2m/3/0>,</1/0>",
                Some("/lwm2m"),
            ),
            (b"</>;rt=\"oma.lwm2m\",</3/0>", None),
        ] {
            let r = RegistrationRequest::parse(&["ep=a"], links).unwrap();
            assert_eq!(r.alternate_path.as_deref(), want, "{links:?}");
            assert_eq!(r.objects, vec![Lwm2mPath::instance(3, 0)], "{links:?}");
        }
        // Leshan's clients announce their formats on a bare `</>` (no `rt`): taken as
        // Leshan takes them, unless a link with `rt="oma.lwm2m"` says otherwise.
        let r = RegistrationRequest::parse(&["ep=a"], b"</>;ct=\"60 110 112\",</3/0>").unwrap();
        assert_eq!(r.content_formats, [60, 110, 112]);
        assert_eq!(r.alternate_path, None);
        assert_eq!(r.objects, vec![Lwm2mPath::instance(3, 0)]);
        let r = RegistrationRequest::parse(
            &["ep=a"],
            b"</>;ct=110,</lwm2m>;rt=\"oma.lwm2m\";ct=112,</lwm2m/3/0>",
        )
        .unwrap();
        assert_eq!(r.content_formats, [112]);
        let r = RegistrationRequest::parse(&["ep=a"], b"</>;rt=\"other\";ct=110,</3/0>").unwrap();
        assert!(r.content_formats.is_empty(), "another resource type");
        assert!(matches!(
            RegistrationRequest::parse(&["ep=a"], b"</>;ct=json,</3/0>"),
            Err(RegistrationError::BadLinkFormat { .. })
        ));
        // An alternate path that is not a path is refused.
        assert!(matches!(
            RegistrationRequest::parse(&["ep=a"], b"<lwm2m>;rt=\"oma.lwm2m\",</3/0>"),
            Err(RegistrationError::BadLinkFormat { .. })
        ));
    }

    #[test]
    fn update_and_message_classification() {
        let u = UpdateRequest::parse(&[], b"").unwrap();
        assert!(u.is_keep_alive());
        let u = UpdateRequest::parse(&["lt=60", "b=UQ"], b"</3/0>,</5/0>").unwrap();
        assert_eq!(u.lifetime, Some(60));
        assert_eq!(u.queue_mode, Some(true));
        assert_eq!(u.objects.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            UpdateRequest::parse(&["b=U"], b"").unwrap().queue_mode,
            Some(false)
        );
        assert!(matches!(
            RdMessage::parse(RdMethod::Post, &["rd", "12"], &["lt=5"], b""),
            Ok(RdMessage::Update { id, .. }) if id == "12"
        ));
        assert!(matches!(
            RdMessage::parse(RdMethod::Post, &["rd"], &["ep=x"], b""),
            Ok(RdMessage::Register(_))
        ));
        for (m, p) in [
            (RdMethod::Other, &["rd"][..]),
            (RdMethod::Delete, &["rd"][..]),
            (RdMethod::Post, &["rd", "a/b"][..]),
            (RdMethod::Post, &["rd", "1", "2"][..]),
            (RdMethod::Post, &["bs"][..]),
        ] {
            assert_eq!(
                RdMessage::parse(m, p, &["ep=x"], b""),
                Err(RegistrationError::NotRegistrationInterface)
            );
        }
    }

    #[test]
    fn render_parse_round_trip() {
        let r = RegistrationRequest::parse(
            &["ep=dev", "lt=30", "lwm2m=1.1", "b=U", "Q", "sms=+4912"],
            b"</a>;rt=\"oma.lwm2m\";ct=\"110 11542\",</a/1/0>,</a/3/0>,</a/5>",
        )
        .unwrap();
        let qs = r.to_queries();
        let qs: Vec<&str> = qs.iter().map(String::as_str).collect();
        let back = RegistrationRequest::parse(&qs, r.to_link_payload().as_bytes()).unwrap();
        assert_eq!(back, r);
    }

    #[cfg(feature = "fuzzing")]
    proptest::proptest! {
        /// The fuzz body's invariants (re-rendered registrations parse back to themselves)
        /// over inputs drawn from the link-format alphabet.
        #[test]
        fn registration_fuzz_body_holds(
            sel in 0u8..4,
            q in "(ep=[a-z0-9]{1,4}|lt=[0-9]{1,3}|b=[UQ]{1,2}|Q|lwm2m=1\\.[01]|sms=[0-9]{1,3})(&(lt=[0-9]{1,3}|b=[UQS]{1,2}|Q|pct=[0-9]))*",
            links in "((</[a-z0-9/]{0,6}>)(;(rt|ct|ver|title)(=(\"[a-z0-9 ,.;]{0,8}\"|[0-9a-z.]{0,4}))?)*)(, ?</[0-9/]{0,6}>(;ver=1\\.[01])?){0,5}",
        ) {
            let mut data = vec![sel];
            data.extend_from_slice(q.as_bytes());
            data.push(b'\n');
            data.extend_from_slice(links.as_bytes());
            crate::fuzzing::lwm2m_server::registration(&data);
        }
    }
}
