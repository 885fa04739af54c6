//! The CoAP message: header fields, token, options in order, payload (RFC 7252 §3), its
//! typed option accessors and the encoder. The decoder lives in `decode.rs`.

use super::code::{Code, MessageType};
use super::option::{
    BlockOption, ContentFormat, OptionNumber, ValueFormat, decode_uint, encode_uint,
};
use std::fmt;

/// A token: 0 to 8 opaque bytes that match a response to its request.
///
/// ```
/// use twinhub::coap::Token;
/// let t = Token::from_slice(&[1, 2, 3]).unwrap();
/// assert_eq!(t.as_bytes(), &[1, 2, 3]);
/// assert!(Token::from_slice(&[0; 9]).is_none());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Token {
    len: u8,
    bytes: [u8; 8],
}

impl Token {
    /// The empty (zero-length) token.
    pub const EMPTY: Token = Token {
        len: 0,
        bytes: [0; 8],
    };

    /// A token from at most 8 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Token> {
        if bytes.len() > 8 {
            return None;
        }
        let mut t = Token {
            len: bytes.len() as u8,
            bytes: [0; 8],
        };
        t.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(t)
    }

    /// The token bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Number of bytes (0..=8).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the token is zero-length.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

#[derive(Clone, Copy, Debug)]
struct OptionEntry {
    number: u16,
    start: u32,
    len: u32,
}

/// A CoAP message (RFC 7252 §3).
///
/// Options are kept sorted by number, repeated options in the order they were added
/// (their order is meaningful, e.g. Uri-Path segments). Option values live in one
/// buffer, so a decoded message costs three allocations at most.
///
/// ```
/// use twinhub::coap::{Code, ContentFormat, Message, MessageType};
/// let mut req = Message::new(MessageType::Confirmable, Code::POST, 0x1234);
/// req.set_token(&[0xde, 0xad]).unwrap();
/// req.set_uri_path("/rd");
/// req.add_uri_query("ep=dev-1");
/// req.set_content_format(ContentFormat::LINK_FORMAT);
/// req.payload = b"</1/0>,</3/0>".to_vec();
///
/// let mut wire = Vec::new();
/// req.encode(&mut wire).unwrap();
/// let back = Message::decode(&wire).unwrap();
/// assert_eq!(back, req);
/// assert_eq!(back.uri_path().collect::<Vec<_>>(), ["rd"]);
/// assert_eq!(back.content_format(), Some(ContentFormat::LINK_FORMAT));
/// ```
#[derive(Clone)]
pub struct Message {
    /// CON, NON, ACK or RST.
    pub mtype: MessageType,
    /// Method or response code.
    pub code: Code,
    /// The 16-bit message id (duplicate detection, ACK/RST matching).
    pub message_id: u16,
    token: Token,
    entries: Vec<OptionEntry>,
    data: Vec<u8>,
    /// The payload (never encoded with a marker when empty).
    pub payload: Vec<u8>,
}

/// Why a message could not be encoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EncodeError {
    /// An option value is longer than the header can express (65,804 bytes).
    OptionTooLong {
        /// The option.
        number: OptionNumber,
        /// Its length.
        len: usize,
    },
    /// An empty message (code 0.00) must carry no token, options or payload.
    EmptyMessageNotEmpty,
    /// The encoded message does not fit the caller's buffer.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::OptionTooLong { number, len } => {
                write!(f, "{number} value of {len} bytes is too long to encode")
            }
            EncodeError::EmptyMessageNotEmpty => {
                f.write_str("an empty message (0.00) cannot carry a token, options or payload")
            }
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "buffer too small: {needed} bytes needed")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// The longest option value the option header can describe.
pub const MAX_OPTION_VALUE_LEN: usize = 65535 + 269;

impl Message {
    /// A message without token, options or payload.
    pub fn new(mtype: MessageType, code: Code, message_id: u16) -> Message {
        Message {
            mtype,
            code,
            message_id,
            token: Token::EMPTY,
            entries: Vec::new(),
            data: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// A request with the given method and path, CON, message id 0 (the endpoint fills in
    /// message id and token when it sends it).
    ///
    /// ```
    /// use twinhub::coap::{Code, Message};
    /// let get = Message::request(Code::GET, "/3/0/9");
    /// assert_eq!(get.uri_path().collect::<Vec<_>>(), ["3", "0", "9"]);
    /// ```
    pub fn request(code: Code, path: &str) -> Message {
        let mut m = Message::new(MessageType::Confirmable, code, 0);
        m.set_uri_path(path);
        m
    }

    /// A response with the given code (type and ids are filled in by the endpoint).
    pub fn response(code: Code) -> Message {
        Message::new(MessageType::Acknowledgement, code, 0)
    }

    /// An empty ACK or RST for `message_id`.
    pub fn empty(mtype: MessageType, message_id: u16) -> Message {
        Message::new(mtype, Code::EMPTY, message_id)
    }

    // ---- token ----

    /// The token.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Sets the token; `None` (and nothing changed) when longer than 8 bytes.
    pub fn set_token(&mut self, token: &[u8]) -> Option<()> {
        self.token = Token::from_slice(token)?;
        Some(())
    }

    /// Sets the token from a [`Token`].
    pub fn with_token(&mut self, token: Token) {
        self.token = token;
    }

    // ---- generic options ----

    /// Every option in wire order: by number, repeated ones in the order added.
    pub fn options(&self) -> impl Iterator<Item = (OptionNumber, &[u8])> + '_ {
        self.entries
            .iter()
            .map(|e| (OptionNumber(e.number), self.value(e)))
    }

    /// Number of options.
    pub fn option_count(&self) -> usize {
        self.entries.len()
    }

    /// The values of every occurrence of one option, in order.
    pub fn option_values(&self, number: OptionNumber) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries
            .iter()
            .filter(move |e| e.number == number.0)
            .map(|e| self.value(e))
    }

    /// The first value of an option.
    pub fn option(&self, number: OptionNumber) -> Option<&[u8]> {
        self.option_values(number).next()
    }

    /// Whether the option is present.
    pub fn has_option(&self, number: OptionNumber) -> bool {
        self.entries.iter().any(|e| e.number == number.0)
    }

    /// Appends an occurrence of an option (after any with the same number).
    pub fn add_option(&mut self, number: OptionNumber, value: &[u8]) {
        let pos = self.entries.partition_point(|e| e.number <= number.0);
        let start = self.data.len() as u32;
        self.data.extend_from_slice(value);
        self.entries.insert(
            pos,
            OptionEntry {
                number: number.0,
                start,
                len: value.len() as u32,
            },
        );
    }

    /// Replaces every occurrence of an option with one value.
    pub fn set_option(&mut self, number: OptionNumber, value: &[u8]) {
        self.remove_option(number);
        self.add_option(number, value);
    }

    /// Removes every occurrence of an option.
    pub fn remove_option(&mut self, number: OptionNumber) {
        let before = self.entries.len();
        self.entries.retain(|e| e.number != number.0);
        if self.entries.len() != before {
            self.compact_if_wasteful();
        }
    }

    /// Removes every option.
    pub fn clear_options(&mut self) {
        self.entries.clear();
        self.data.clear();
    }

    fn compact_if_wasteful(&mut self) {
        let live: usize = self.entries.iter().map(|e| e.len as usize).sum();
        if self.data.len() > 64 && live * 2 < self.data.len() {
            let mut data = Vec::with_capacity(live);
            for e in &mut self.entries {
                let s = e.start as usize;
                let start = data.len() as u32;
                data.extend_from_slice(&self.data[s..s + e.len as usize]);
                e.start = start;
            }
            self.data = data;
        }
    }

    fn value(&self, e: &OptionEntry) -> &[u8] {
        &self.data[e.start as usize..(e.start + e.len) as usize]
    }

    fn uint_option(&self, number: OptionNumber) -> Option<u32> {
        let v = self.option(number)?;
        let max = number.spec().map_or(4, |s| s.max_len);
        if v.len() > max {
            return None;
        }
        decode_uint(v)
    }

    /// Replaces an option with a uint value in its shortest encoding.
    pub fn set_uint_option(&mut self, number: OptionNumber, value: u32) {
        let (b, n) = encode_uint(value);
        self.set_option(number, &b[..n]);
    }

    fn strings(&self, number: OptionNumber) -> impl Iterator<Item = &str> + '_ {
        self.option_values(number)
            .map(|v| std::str::from_utf8(v).unwrap_or("\u{fffd}"))
    }

    // ---- typed accessors ----

    /// Uri-Path segments. (A segment that is not UTF-8 reads as U+FFFD; such a message
    /// fails [`Message::unrecognized_critical_option`].)
    pub fn uri_path(&self) -> impl Iterator<Item = &str> + '_ {
        self.strings(OptionNumber::URI_PATH)
    }

    /// The Uri-Path joined with `/`, without a leading slash (`"3/0/9"`).
    pub fn uri_path_string(&self) -> String {
        let mut s = String::new();
        for (i, seg) in self.uri_path().enumerate() {
            if i > 0 {
                s.push('/');
            }
            s.push_str(seg);
        }
        s
    }

    /// Replaces the Uri-Path with the `/`-separated segments of `path` (a leading slash
    /// is ignored; `"/"` and `""` mean no segment).
    pub fn set_uri_path(&mut self, path: &str) {
        self.remove_option(OptionNumber::URI_PATH);
        let path = path.strip_prefix('/').unwrap_or(path);
        if !path.is_empty() {
            for seg in path.split('/') {
                self.add_option(OptionNumber::URI_PATH, seg.as_bytes());
            }
        }
    }

    /// Appends a Uri-Path segment.
    pub fn add_uri_path(&mut self, segment: &str) {
        self.add_option(OptionNumber::URI_PATH, segment.as_bytes());
    }

    /// Uri-Query items (`"ep=dev-1"`).
    pub fn uri_query(&self) -> impl Iterator<Item = &str> + '_ {
        self.strings(OptionNumber::URI_QUERY)
    }

    /// Appends a Uri-Query item.
    pub fn add_uri_query(&mut self, item: &str) {
        self.add_option(OptionNumber::URI_QUERY, item.as_bytes());
    }

    /// Location-Path segments (e.g. `["rd", "5a3f"]` from a registration's 2.01).
    pub fn location_path(&self) -> impl Iterator<Item = &str> + '_ {
        self.strings(OptionNumber::LOCATION_PATH)
    }

    /// Appends a Location-Path segment.
    pub fn add_location_path(&mut self, segment: &str) {
        self.add_option(OptionNumber::LOCATION_PATH, segment.as_bytes());
    }

    /// Location-Query items.
    pub fn location_query(&self) -> impl Iterator<Item = &str> + '_ {
        self.strings(OptionNumber::LOCATION_QUERY)
    }

    /// Uri-Host.
    pub fn uri_host(&self) -> Option<&str> {
        self.strings(OptionNumber::URI_HOST).next()
    }

    /// Content-Format.
    pub fn content_format(&self) -> Option<ContentFormat> {
        self.uint_option(OptionNumber::CONTENT_FORMAT)
            .map(|v| ContentFormat(v as u16))
    }

    /// Sets Content-Format.
    pub fn set_content_format(&mut self, format: ContentFormat) {
        self.set_uint_option(OptionNumber::CONTENT_FORMAT, format.0.into());
    }

    /// Accept.
    pub fn accept(&self) -> Option<ContentFormat> {
        self.uint_option(OptionNumber::ACCEPT)
            .map(|v| ContentFormat(v as u16))
    }

    /// Sets Accept.
    pub fn set_accept(&mut self, format: ContentFormat) {
        self.set_uint_option(OptionNumber::ACCEPT, format.0.into());
    }

    /// Observe (RFC 7641): 0 registers, 1 deregisters in a request; a sequence number
    /// (24 bits) in a notification.
    pub fn observe(&self) -> Option<u32> {
        self.uint_option(OptionNumber::OBSERVE)
    }

    /// Sets Observe (only the low 24 bits are kept).
    pub fn set_observe(&mut self, value: u32) {
        self.set_uint_option(OptionNumber::OBSERVE, value & 0xff_ffff);
    }

    /// Block1 (RFC 7959): the block of a request body being sent.
    pub fn block1(&self) -> Option<BlockOption> {
        self.uint_option(OptionNumber::BLOCK1)
            .and_then(BlockOption::from_uint)
    }

    /// Sets Block1.
    pub fn set_block1(&mut self, block: BlockOption) {
        self.set_uint_option(OptionNumber::BLOCK1, block.to_uint());
    }

    /// Block2 (RFC 7959): the block of a response body.
    pub fn block2(&self) -> Option<BlockOption> {
        self.uint_option(OptionNumber::BLOCK2)
            .and_then(BlockOption::from_uint)
    }

    /// Sets Block2.
    pub fn set_block2(&mut self, block: BlockOption) {
        self.set_uint_option(OptionNumber::BLOCK2, block.to_uint());
    }

    /// Size1: the size of the whole request body (or, in a 4.13, the largest accepted).
    pub fn size1(&self) -> Option<u32> {
        self.uint_option(OptionNumber::SIZE1)
    }

    /// Sets Size1.
    pub fn set_size1(&mut self, size: u32) {
        self.set_uint_option(OptionNumber::SIZE1, size);
    }

    /// Size2: the size of the whole response body.
    pub fn size2(&self) -> Option<u32> {
        self.uint_option(OptionNumber::SIZE2)
    }

    /// Sets Size2.
    pub fn set_size2(&mut self, size: u32) {
        self.set_uint_option(OptionNumber::SIZE2, size);
    }

    /// The first ETag.
    pub fn etag(&self) -> Option<&[u8]> {
        self.option(OptionNumber::ETAG)
    }

    /// Appends an ETag (requests may carry several).
    pub fn add_etag(&mut self, etag: &[u8]) {
        self.add_option(OptionNumber::ETAG, etag);
    }

    /// Max-Age in seconds (absent means 60).
    pub fn max_age(&self) -> Option<u32> {
        self.uint_option(OptionNumber::MAX_AGE)
    }

    /// Sets Max-Age.
    pub fn set_max_age(&mut self, seconds: u32) {
        self.set_uint_option(OptionNumber::MAX_AGE, seconds);
    }

    /// The first critical option this message carries that a receiver must treat as
    /// unrecognized (RFC 7252 §5.4.1, §5.4.3, §5.4.5): an unknown critical option, a known
    /// one whose value length is out of range, whose string is not UTF-8, whose Block value
    /// is reserved, or a non-repeatable one that repeats. A CON request with one gets 4.02
    /// Bad Option; a CON response with one gets RST. Elective oddities are ignored.
    ///
    /// ```
    /// use twinhub::coap::{Code, Message, OptionNumber};
    /// let mut m = Message::request(Code::GET, "/a");
    /// assert_eq!(m.unrecognized_critical_option(), None);
    /// m.add_option(OptionNumber(2049), b"x"); // unknown, odd: critical
    /// assert_eq!(m.unrecognized_critical_option(), Some(OptionNumber(2049)));
    /// ```
    pub fn unrecognized_critical_option(&self) -> Option<OptionNumber> {
        let mut prev: Option<u16> = None;
        for e in &self.entries {
            let number = OptionNumber(e.number);
            let repeated = prev == Some(e.number);
            prev = Some(e.number);
            if !number.is_critical() {
                continue;
            }
            let Some(spec) = number.spec() else {
                return Some(number);
            };
            let v = self.value(e);
            let bad = v.len() < spec.min_len
                || v.len() > spec.max_len
                || (repeated && !spec.repeatable)
                || (spec.format == ValueFormat::String && std::str::from_utf8(v).is_err())
                || ((number == OptionNumber::BLOCK1 || number == OptionNumber::BLOCK2)
                    && decode_uint(v).and_then(BlockOption::from_uint).is_none());
            if bad {
                return Some(number);
            }
        }
        None
    }

    // ---- encoding ----

    /// The encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        let mut n = 4 + self.token.len();
        let mut last = 0u16;
        for e in &self.entries {
            n += 1 + ext_len((e.number - last) as usize) + ext_len(e.len as usize) + e.len as usize;
            last = e.number;
        }
        if !self.payload.is_empty() {
            n += 1 + self.payload.len();
        }
        n
    }

    fn check_encodable(&self) -> Result<(), EncodeError> {
        if self.code.is_empty()
            && (!self.token.is_empty() || !self.entries.is_empty() || !self.payload.is_empty())
        {
            return Err(EncodeError::EmptyMessageNotEmpty);
        }
        for e in &self.entries {
            if e.len as usize > MAX_OPTION_VALUE_LEN {
                return Err(EncodeError::OptionTooLong {
                    number: OptionNumber(e.number),
                    len: e.len as usize,
                });
            }
        }
        Ok(())
    }

    /// Appends the encoded message to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.check_encodable()?;
        buf.reserve(self.encoded_len());
        buf.push(0x40 | (self.mtype.bits() << 4) | self.token.len() as u8);
        buf.push(self.code.0);
        buf.extend_from_slice(&self.message_id.to_be_bytes());
        buf.extend_from_slice(self.token.as_bytes());
        let mut last = 0u16;
        for e in &self.entries {
            let delta = (e.number - last) as usize;
            last = e.number;
            let len = e.len as usize;
            let (dn, dext, dl) = nibble(delta);
            let (ln, lext, ll) = nibble(len);
            buf.push((dn << 4) | ln);
            buf.extend_from_slice(&dext[..dl]);
            buf.extend_from_slice(&lext[..ll]);
            buf.extend_from_slice(self.value(e));
        }
        if !self.payload.is_empty() {
            buf.push(0xff);
            buf.extend_from_slice(&self.payload);
        }
        Ok(())
    }

    /// Encodes into a fresh vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Encodes into the start of `out`, returning the number of bytes written.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.check_encodable()?;
        let needed = self.encoded_len();
        if out.len() < needed {
            return Err(EncodeError::BufferTooSmall { needed });
        }
        let mut v = Vec::with_capacity(needed);
        self.encode(&mut v)?;
        out[..needed].copy_from_slice(&v);
        Ok(needed)
    }

    pub(crate) fn from_parts(
        mtype: MessageType,
        code: Code,
        message_id: u16,
        token: Token,
        option_capacity: usize,
    ) -> Message {
        Message {
            mtype,
            code,
            message_id,
            token,
            entries: Vec::with_capacity(if option_capacity > 0 { 8 } else { 0 }),
            data: Vec::with_capacity(option_capacity),
            payload: Vec::new(),
        }
    }

    /// Appends an option known to sort after every present one (the decoder's fast path).
    pub(crate) fn push_option_in_order(&mut self, number: u16, value: &[u8]) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(value);
        self.entries.push(OptionEntry {
            number,
            start,
            len: value.len() as u32,
        });
    }
}

fn ext_len(v: usize) -> usize {
    match v {
        0..=12 => 0,
        13..=268 => 1,
        _ => 2,
    }
}

fn nibble(v: usize) -> (u8, [u8; 2], usize) {
    match v {
        0..=12 => (v as u8, [0, 0], 0),
        13..=268 => (13, [(v - 13) as u8, 0], 1),
        _ => {
            let x = ((v - 269) as u16).to_be_bytes();
            (14, x, 2)
        }
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        self.mtype == other.mtype
            && self.code == other.code
            && self.message_id == other.message_id
            && self.token == other.token
            && self.payload == other.payload
            && self.entries.len() == other.entries.len()
            && self.options().eq(other.options())
    }
}

impl Eq for Message {}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        d.field("type", &self.mtype)
            .field("code", &self.code)
            .field("mid", &self.message_id)
            .field("token", &self.token);
        let opts: Vec<_> = self
            .options()
            .map(|(n, v)| match std::str::from_utf8(v) {
                Ok(s) if !s.is_empty() => format!("{}={s:?}", n.0),
                _ => format!("{}={v:02x?}", n.0),
            })
            .collect();
        d.field("options", &opts);
        d.field("payload_len", &self.payload.len());
        d.finish()
    }
}
