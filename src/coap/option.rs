//! Option numbers, their value formats, content formats and the Block option value
//! (RFC 7252 §5.4 and §12.2, RFC 7641, RFC 7959).

use std::fmt;

/// A CoAP option number (RFC 7252 §5.4.6): odd numbers are critical, bit 1 marks
/// unsafe-to-forward options.
///
/// ```
/// use twinhub::coap::OptionNumber;
/// assert!(OptionNumber::URI_PATH.is_critical());
/// assert!(!OptionNumber::CONTENT_FORMAT.is_critical());
/// assert!(OptionNumber::BLOCK2.is_known());
/// assert!(!OptionNumber(2049).is_known());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct OptionNumber(pub u16);

impl OptionNumber {
    /// If-Match (1), opaque 0-8, repeatable.
    pub const IF_MATCH: OptionNumber = OptionNumber(1);
    /// Uri-Host (3), string 1-255.
    pub const URI_HOST: OptionNumber = OptionNumber(3);
    /// ETag (4), opaque 1-8, repeatable in requests.
    pub const ETAG: OptionNumber = OptionNumber(4);
    /// If-None-Match (5), empty.
    pub const IF_NONE_MATCH: OptionNumber = OptionNumber(5);
    /// Observe (6), uint 0-3 (RFC 7641).
    pub const OBSERVE: OptionNumber = OptionNumber(6);
    /// Uri-Port (7), uint 0-2.
    pub const URI_PORT: OptionNumber = OptionNumber(7);
    /// Location-Path (8), string 0-255, repeatable.
    pub const LOCATION_PATH: OptionNumber = OptionNumber(8);
    /// Uri-Path (11), string 0-255, repeatable.
    pub const URI_PATH: OptionNumber = OptionNumber(11);
    /// Content-Format (12), uint 0-2.
    pub const CONTENT_FORMAT: OptionNumber = OptionNumber(12);
    /// Max-Age (14), uint 0-4.
    pub const MAX_AGE: OptionNumber = OptionNumber(14);
    /// Uri-Query (15), string 0-255, repeatable.
    pub const URI_QUERY: OptionNumber = OptionNumber(15);
    /// Accept (17), uint 0-2.
    pub const ACCEPT: OptionNumber = OptionNumber(17);
    /// Location-Query (20), string 0-255, repeatable.
    pub const LOCATION_QUERY: OptionNumber = OptionNumber(20);
    /// Block2 (23), uint 0-3 (RFC 7959).
    pub const BLOCK2: OptionNumber = OptionNumber(23);
    /// Block1 (27), uint 0-3 (RFC 7959).
    pub const BLOCK1: OptionNumber = OptionNumber(27);
    /// Size2 (28), uint 0-4 (RFC 7959).
    pub const SIZE2: OptionNumber = OptionNumber(28);
    /// Proxy-Uri (35), string 1-1034.
    pub const PROXY_URI: OptionNumber = OptionNumber(35);
    /// Proxy-Scheme (39), string 1-255.
    pub const PROXY_SCHEME: OptionNumber = OptionNumber(39);
    /// Size1 (60), uint 0-4.
    pub const SIZE1: OptionNumber = OptionNumber(60);
    /// No-Response (258), uint 0-1 (RFC 7967).
    pub const NO_RESPONSE: OptionNumber = OptionNumber(258);

    /// Critical options must be understood by the receiver (odd numbers).
    pub const fn is_critical(self) -> bool {
        self.0 & 1 == 1
    }

    /// Unsafe-to-forward options (bit 1 set).
    pub const fn is_unsafe(self) -> bool {
        self.0 & 2 == 2
    }

    /// Whether this crate knows the option's format.
    pub fn is_known(self) -> bool {
        self.spec().is_some()
    }

    /// The option's name, for the known ones.
    pub fn name(self) -> Option<&'static str> {
        self.spec().map(|s| s.name)
    }

    pub(crate) fn spec(self) -> Option<&'static OptionSpec> {
        KNOWN_OPTIONS.iter().find(|s| s.number == self.0)
    }
}

impl fmt::Display for OptionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "option {}", self.0),
        }
    }
}

/// The value format of an option (RFC 7252 §3.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ValueFormat {
    Empty,
    Opaque,
    Uint,
    String,
}

/// What RFC 7252 §5.10 (and its extensions) says about a known option.
#[derive(Debug)]
pub(crate) struct OptionSpec {
    pub number: u16,
    pub name: &'static str,
    pub format: ValueFormat,
    pub min_len: usize,
    pub max_len: usize,
    pub repeatable: bool,
}

const fn spec(
    number: u16,
    name: &'static str,
    format: ValueFormat,
    min_len: usize,
    max_len: usize,
    repeatable: bool,
) -> OptionSpec {
    OptionSpec {
        number,
        name,
        format,
        min_len,
        max_len,
        repeatable,
    }
}

pub(crate) static KNOWN_OPTIONS: &[OptionSpec] = &[
    spec(1, "If-Match", ValueFormat::Opaque, 0, 8, true),
    spec(3, "Uri-Host", ValueFormat::String, 1, 255, false),
    spec(4, "ETag", ValueFormat::Opaque, 1, 8, true),
    spec(5, "If-None-Match", ValueFormat::Empty, 0, 0, false),
    spec(6, "Observe", ValueFormat::Uint, 0, 3, false),
    spec(7, "Uri-Port", ValueFormat::Uint, 0, 2, false),
    spec(8, "Location-Path", ValueFormat::String, 0, 255, true),
    spec(11, "Uri-Path", ValueFormat::String, 0, 255, true),
    spec(12, "Content-Format", ValueFormat::Uint, 0, 2, false),
    spec(14, "Max-Age", ValueFormat::Uint, 0, 4, false),
    spec(15, "Uri-Query", ValueFormat::String, 0, 255, true),
    spec(17, "Accept", ValueFormat::Uint, 0, 2, false),
    spec(20, "Location-Query", ValueFormat::String, 0, 255, true),
    spec(23, "Block2", ValueFormat::Uint, 0, 3, false),
    spec(27, "Block1", ValueFormat::Uint, 0, 3, false),
    spec(28, "Size2", ValueFormat::Uint, 0, 4, false),
    spec(35, "Proxy-Uri", ValueFormat::String, 1, 1034, false),
    spec(39, "Proxy-Scheme", ValueFormat::String, 1, 255, false),
    spec(60, "Size1", ValueFormat::Uint, 0, 4, false),
    spec(258, "No-Response", ValueFormat::Uint, 0, 1, false),
];

/// A Content-Format number (RFC 7252 §12.3, OMA LWM2M registry).
///
/// ```
/// use twinhub::coap::ContentFormat;
/// assert_eq!(ContentFormat::SENML_JSON.0, 110);
/// assert_eq!(ContentFormat::LWM2M_TLV.to_string(), "application/vnd.oma.lwm2m+tlv");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ContentFormat(pub u16);

impl ContentFormat {
    /// text/plain; charset=utf-8 (0).
    pub const TEXT_PLAIN: ContentFormat = ContentFormat(0);
    /// application/link-format (40).
    pub const LINK_FORMAT: ContentFormat = ContentFormat(40);
    /// application/xml (41).
    pub const XML: ContentFormat = ContentFormat(41);
    /// application/octet-stream (42).
    pub const OCTET_STREAM: ContentFormat = ContentFormat(42);
    /// application/exi (47).
    pub const EXI: ContentFormat = ContentFormat(47);
    /// application/json (50).
    pub const JSON: ContentFormat = ContentFormat(50);
    /// application/cbor (60).
    pub const CBOR: ContentFormat = ContentFormat(60);
    /// application/senml+json (110).
    pub const SENML_JSON: ContentFormat = ContentFormat(110);
    /// application/senml+cbor (112).
    pub const SENML_CBOR: ContentFormat = ContentFormat(112);
    /// Pre-standard LWM2M text/plain (1541), still sent by older clients.
    pub const OLD_LWM2M_TEXT: ContentFormat = ContentFormat(1541);
    /// Pre-standard LWM2M TLV (1542).
    pub const OLD_LWM2M_TLV: ContentFormat = ContentFormat(1542);
    /// Pre-standard LWM2M JSON (1543).
    pub const OLD_LWM2M_JSON: ContentFormat = ContentFormat(1543);
    /// Pre-standard LWM2M opaque (1544).
    pub const OLD_LWM2M_OPAQUE: ContentFormat = ContentFormat(1544);
    /// application/vnd.oma.lwm2m+tlv (11542).
    pub const LWM2M_TLV: ContentFormat = ContentFormat(11542);
    /// application/vnd.oma.lwm2m+json (11543).
    pub const LWM2M_JSON: ContentFormat = ContentFormat(11543);
    /// application/vnd.oma.lwm2m+cbor (11544).
    pub const LWM2M_CBOR: ContentFormat = ContentFormat(11544);

    /// The media type, for the formats above.
    pub fn media_type(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "text/plain;charset=utf-8",
            40 => "application/link-format",
            41 => "application/xml",
            42 => "application/octet-stream",
            47 => "application/exi",
            50 => "application/json",
            60 => "application/cbor",
            110 => "application/senml+json",
            112 => "application/senml+cbor",
            1541 => "application/vnd.oma.lwm2m+text (pre-standard)",
            1542 => "application/vnd.oma.lwm2m+tlv (pre-standard)",
            1543 => "application/vnd.oma.lwm2m+json (pre-standard)",
            1544 => "application/vnd.oma.lwm2m+opaque (pre-standard)",
            11542 => "application/vnd.oma.lwm2m+tlv",
            11543 => "application/vnd.oma.lwm2m+json",
            11544 => "application/vnd.oma.lwm2m+cbor",
            _ => return None,
        })
    }
}

impl fmt::Display for ContentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.media_type() {
            Some(m) => f.write_str(m),
            None => write!(f, "content-format {}", self.0),
        }
    }
}

/// The value of a Block1 or Block2 option (RFC 7959 §2.2): block number, more flag
/// and size exponent; the block size is `2^(szx + 4)`, 16 to 1024 bytes.
///
/// ```
/// use twinhub::coap::BlockOption;
/// let b = BlockOption::new(3, true, 6).unwrap();
/// assert_eq!((b.size(), b.offset()), (1024, 3072));
/// assert_eq!(BlockOption::from_uint(b.to_uint()), Some(b));
/// assert!(BlockOption::new(0, false, 7).is_none()); // SZX 7 is reserved
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BlockOption {
    /// Block number (20 bits at most).
    pub num: u32,
    /// More blocks follow.
    pub more: bool,
    /// Size exponent 0..=6.
    pub szx: u8,
}

impl BlockOption {
    /// The largest block number the 3-byte option can carry.
    pub const MAX_NUM: u32 = (1 << 20) - 1;

    /// A block value; `None` when `num` exceeds 20 bits or `szx` is above 6.
    pub fn new(num: u32, more: bool, szx: u8) -> Option<BlockOption> {
        (num <= Self::MAX_NUM && szx <= 6).then_some(BlockOption { num, more, szx })
    }

    /// Block size in bytes.
    pub const fn size(self) -> usize {
        1 << (self.szx as usize + 4)
    }

    /// Byte offset of this block in the body.
    pub const fn offset(self) -> usize {
        self.num as usize * self.size()
    }

    /// The option's uint value.
    pub const fn to_uint(self) -> u32 {
        (self.num << 4) | ((self.more as u32) << 3) | self.szx as u32
    }

    /// Decodes the option's uint value; `None` for the reserved SZX 7 or a value over 24 bits.
    pub fn from_uint(v: u32) -> Option<BlockOption> {
        if v >> 24 != 0 {
            return None;
        }
        BlockOption::new(v >> 4, v & 8 != 0, (v & 7) as u8)
    }

    /// The SZX of the largest block size not above `bytes` (16 at least).
    pub fn szx_for_size(bytes: usize) -> u8 {
        let mut szx = 6u8;
        while szx > 0 && (1usize << (szx + 4)) > bytes {
            szx -= 1;
        }
        szx
    }
}

/// Decodes a uint option value (big-endian, at most 4 bytes, leading zeros allowed).
pub(crate) fn decode_uint(value: &[u8]) -> Option<u32> {
    if value.len() > 4 {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// Encodes a uint option value in its shortest form (zero is the empty value).
pub(crate) fn encode_uint(v: u32) -> ([u8; 4], usize) {
    let bytes = v.to_be_bytes();
    let skip = (v.leading_zeros() / 8) as usize;
    let mut out = [0u8; 4];
    let len = 4 - skip;
    out[..len].copy_from_slice(&bytes[skip..]);
    (out, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint_shortest_encoding() {
        assert_eq!(encode_uint(0).1, 0);
        assert_eq!(encode_uint(255), ([255, 0, 0, 0], 1));
        assert_eq!(encode_uint(256), ([1, 0, 0, 0], 2));
        assert_eq!(encode_uint(0x0102_0304), ([1, 2, 3, 4], 4));
        for v in [0, 1, 255, 256, 65535, 65536, 0xffff_ffff] {
            let (b, n) = encode_uint(v);
            assert_eq!(decode_uint(&b[..n]), Some(v));
        }
        assert_eq!(decode_uint(&[0, 0, 1]), Some(1));
        assert_eq!(decode_uint(&[1, 2, 3, 4, 5]), None);
    }

    #[test]
    fn block_option_values() {
        // RFC 7959 §2.2: NUM=1, M=1, SZX=2 (64 bytes) -> 0x1a.
        let b = BlockOption::from_uint(0x1a).unwrap();
        assert_eq!(
            (b.num, b.more, b.szx, b.size(), b.offset()),
            (1, true, 2, 64, 64)
        );
        assert_eq!(BlockOption::from_uint(0x0f), None);
        assert_eq!(BlockOption::from_uint(1 << 24), None);
        assert_eq!(BlockOption::new(BlockOption::MAX_NUM + 1, false, 0), None);
        assert_eq!(BlockOption::szx_for_size(1024), 6);
        assert_eq!(BlockOption::szx_for_size(1000), 5);
        assert_eq!(BlockOption::szx_for_size(3), 0);
    }

    #[test]
    fn option_number_properties() {
        assert!(OptionNumber::IF_MATCH.is_critical());
        assert!(OptionNumber::URI_HOST.is_unsafe());
        assert!(!OptionNumber::OBSERVE.is_critical());
        assert!(OptionNumber::ACCEPT.is_critical());
        assert_eq!(OptionNumber::SIZE1.to_string(), "Size1 (60)");
        assert_eq!(OptionNumber(9999).to_string(), "option 9999");
    }
}
