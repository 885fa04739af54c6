//! The decoder (RFC 7252 §3), written with nom. Each function parses one part of the
//! message format:
//!
//! ```text
//! message = header token *option [ %xFF 1*OCTET ]
//! header  = ver(2) type(2) tkl(4) code(8) message-id(16)      ; ver = 1, tkl 0..=8
//! option  = delta(4) length(4) [ext-delta] [ext-length] value ; nibble 13: +1 byte - 13,
//!                                                             ; 14: +2 bytes - 269, 15: reserved
//! ```

use super::code::{Code, MessageType};
use super::message::{Message, Token};
use nom::bytes::complete::take;
use nom::error::{ErrorKind, ParseError};
use nom::number::complete::{be_u8, be_u16};
use nom::{IResult, Parser};
use std::fmt;

/// What was wrong with a datagram that is not a CoAP message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended inside the header, token, an option or its extended fields.
    Truncated,
    /// The version field is not 1.
    UnsupportedVersion(u8),
    /// Token length 9 to 15 (reserved).
    InvalidTokenLength(u8),
    /// Option delta nibble 15 without being the payload marker.
    ReservedOptionDelta,
    /// Option length nibble 15 (reserved).
    ReservedOptionLength,
    /// The option numbers add up past 65,535.
    OptionNumberOverflow,
    /// A payload marker followed by no payload.
    EmptyPayload,
    /// A message with code 0.00 that carries a token, options or a payload.
    EmptyMessageNotEmpty,
}

/// A decoding failure: what was wrong and at which byte offset of the datagram.
///
/// ```
/// use twinhub::coap::{DecodeErrorKind, Message};
/// let err = Message::decode(&[0x40, 0x01, 0x00, 0x01, 0xff]).unwrap_err();
/// assert_eq!((err.kind, err.offset), (DecodeErrorKind::EmptyPayload, 4));
/// assert_eq!(err.to_string(), "payload marker without payload at byte 4");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DecodeError {
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// Byte offset in the datagram where the problem starts.
    pub offset: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DecodeErrorKind::Truncated => f.write_str("message truncated")?,
            DecodeErrorKind::UnsupportedVersion(v) => write!(f, "unsupported version {v}")?,
            DecodeErrorKind::InvalidTokenLength(n) => write!(f, "reserved token length {n}")?,
            DecodeErrorKind::ReservedOptionDelta => f.write_str("reserved option delta 15")?,
            DecodeErrorKind::ReservedOptionLength => f.write_str("reserved option length 15")?,
            DecodeErrorKind::OptionNumberOverflow => f.write_str("option number exceeds 65535")?,
            DecodeErrorKind::EmptyPayload => f.write_str("payload marker without payload")?,
            DecodeErrorKind::EmptyMessageNotEmpty => {
                f.write_str("empty message carries a token, options or payload")?
            }
        }
        write!(f, " at byte {}", self.offset)
    }
}

impl std::error::Error for DecodeError {}

/// nom's error for this grammar: where (the remaining input) and what.
#[derive(Debug)]
struct Fail<'a> {
    at: &'a [u8],
    kind: DecodeErrorKind,
}

impl<'a> ParseError<&'a [u8]> for Fail<'a> {
    fn from_error_kind(input: &'a [u8], _: ErrorKind) -> Self {
        Fail {
            at: input,
            kind: DecodeErrorKind::Truncated,
        }
    }

    fn append(_: &'a [u8], _: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a [u8], T, Fail<'a>>;

fn fail<T>(at: &[u8], kind: DecodeErrorKind) -> PResult<'_, T> {
    Err(nom::Err::Failure(Fail { at, kind }))
}

/// `header = ver(2) type(2) tkl(4) code(8) message-id(16)`
fn header(input: &[u8]) -> PResult<'_, (MessageType, u8, Code, u16)> {
    let (rest, (first, code, mid)) = (be_u8, be_u8, be_u16).parse(input)?;
    let version = first >> 6;
    if version != 1 {
        return fail(input, DecodeErrorKind::UnsupportedVersion(version));
    }
    let tkl = first & 0x0f;
    if tkl > 8 {
        return fail(input, DecodeErrorKind::InvalidTokenLength(tkl));
    }
    Ok((
        rest,
        (MessageType::from_bits(first >> 4), tkl, Code(code), mid),
    ))
}

/// `ext = nibble 13: 1 byte + 13 / nibble 14: 2 bytes + 269`
fn extended(input: &[u8], nibble: u8) -> PResult<'_, usize> {
    match nibble {
        13 => be_u8.map(|b| b as usize + 13).parse(input),
        14 => be_u16.map(|b| b as usize + 269).parse(input),
        n => Ok((input, n as usize)),
    }
}

/// `option = delta(4) length(4) [ext-delta] [ext-length] value`; returns `None` at the
/// payload marker (consumed).
fn option(input: &[u8]) -> PResult<'_, Option<(usize, &[u8])>> {
    let (rest, first) = be_u8(input)?;
    if first == 0xff {
        return Ok((rest, None));
    }
    let (dn, ln) = (first >> 4, first & 0x0f);
    if dn == 15 {
        return fail(input, DecodeErrorKind::ReservedOptionDelta);
    }
    if ln == 15 {
        return fail(input, DecodeErrorKind::ReservedOptionLength);
    }
    let (rest, delta) = extended(rest, dn)?;
    let (rest, len) = extended(rest, ln)?;
    let (rest, value) = take(len)(rest)?;
    Ok((rest, Some((delta, value))))
}

impl Message {
    /// Decodes one datagram. Every byte must belong to the message; anything malformed
    /// is a [`DecodeError`] with its offset. Options are accepted whatever their number;
    /// see [`Message::unrecognized_critical_option`] for what a receiver must reject.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let at = |rest: &[u8]| bytes.len() - rest.len();
        let to_err = |e: nom::Err<Fail<'_>>| match e {
            nom::Err::Error(f) | nom::Err::Failure(f) => DecodeError {
                kind: f.kind,
                offset: at(f.at),
            },
            nom::Err::Incomplete(_) => DecodeError {
                kind: DecodeErrorKind::Truncated,
                offset: bytes.len(),
            },
        };
        let (rest, (mtype, tkl, code, mid)) = header(bytes).map_err(to_err)?;
        if code.is_empty() && bytes.len() > 4 {
            return Err(DecodeError {
                kind: DecodeErrorKind::EmptyMessageNotEmpty,
                offset: 4,
            });
        }
        let (mut rest, token) = take::<_, _, Fail<'_>>(tkl as usize)
            .parse(rest)
            .map_err(to_err)?;
        let token = Token::from_slice(token).unwrap_or_default();
        let mut msg = Message::from_parts(mtype, code, mid, token, rest.len());
        let mut number = 0usize;
        while !rest.is_empty() {
            let start = rest;
            let (r, opt) = option(rest).map_err(to_err)?;
            rest = r;
            match opt {
                Some((delta, value)) => {
                    number += delta;
                    if number > u16::MAX as usize {
                        return Err(DecodeError {
                            kind: DecodeErrorKind::OptionNumberOverflow,
                            offset: at(start),
                        });
                    }
                    msg.push_option_in_order(number as u16, value);
                }
                None => {
                    if rest.is_empty() {
                        return Err(DecodeError {
                            kind: DecodeErrorKind::EmptyPayload,
                            offset: at(start),
                        });
                    }
                    msg.payload = rest.to_vec();
                    break;
                }
            }
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coap::{BlockOption, ContentFormat, OptionNumber};

    fn err(bytes: &[u8]) -> (DecodeErrorKind, usize) {
        let e = Message::decode(bytes).unwrap_err();
        (e.kind, e.offset)
    }

    #[test]
    fn rfc7252_figure_16_get_with_piggybacked_response() {
        // CON GET /temperature, MID 0x7d34, no token (RFC 7252 Appendix A, figure 16).
        let req = [
            0x40, 0x01, 0x7d, 0x34, 0xbb, b't', b'e', b'm', b'p', b'e', b'r', b'a', b't', b'u',
            b'r', b'e',
        ];
        let m = Message::decode(&req).unwrap();
        assert_eq!(m.mtype, MessageType::Confirmable);
        assert_eq!(m.code, Code::GET);
        assert_eq!(m.message_id, 0x7d34);
        assert!(m.token().is_empty());
        assert_eq!(m.uri_path().collect::<Vec<_>>(), ["temperature"]);
        assert_eq!(m.to_bytes().unwrap(), req);
        // ACK 2.05 "22.3 C".
        let resp = [
            0x60, 0x45, 0x7d, 0x34, 0xff, b'2', b'2', b'.', b'3', b' ', b'C',
        ];
        let m = Message::decode(&resp).unwrap();
        assert_eq!(m.mtype, MessageType::Acknowledgement);
        assert_eq!(m.code, Code::CONTENT);
        assert_eq!(m.payload, b"22.3 C");
        assert_eq!(m.to_bytes().unwrap(), resp);
    }

    #[test]
    fn token_lengths() {
        let m = Message::decode(&[0x48, 0x01, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(m.token().as_bytes(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        for tkl in 9..=15u8 {
            assert_eq!(
                err(&[0x40 | tkl, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                (DecodeErrorKind::InvalidTokenLength(tkl), 0)
            );
        }
        assert_eq!(
            err(&[0x44, 0x01, 0, 1, 1, 2]),
            (DecodeErrorKind::Truncated, 4)
        );
    }

    #[test]
    fn header_rules() {
        assert_eq!(err(&[]), (DecodeErrorKind::Truncated, 0));
        assert_eq!(err(&[0x40, 0x01, 0]), (DecodeErrorKind::Truncated, 2));
        for v in [0u8, 2, 3] {
            assert_eq!(
                err(&[v << 6, 0x01, 0, 1]),
                (DecodeErrorKind::UnsupportedVersion(v), 0)
            );
        }
        // Empty message: ok bare, rejected with token, options or payload.
        let ping = Message::decode(&[0x40, 0x00, 0x12, 0x34]).unwrap();
        assert!(ping.code.is_empty() && ping.mtype == MessageType::Confirmable);
        assert_eq!(
            err(&[0x41, 0x00, 0, 1, 9]),
            (DecodeErrorKind::EmptyMessageNotEmpty, 4)
        );
        assert_eq!(
            err(&[0x60, 0x00, 0, 1, 0xb1, b'a']),
            (DecodeErrorKind::EmptyMessageNotEmpty, 4)
        );
        assert_eq!(
            err(&[0x70, 0x00, 0, 1, 0xff, 1]),
            (DecodeErrorKind::EmptyMessageNotEmpty, 4)
        );
    }

    #[test]
    fn option_nibbles_and_extensions() {
        // delta 13 + ext byte: option 13+0 = 13 with 1-byte length ext (len 13+0 = 13)
        let mut b = vec![0x40, 0x01, 0, 1, 0xdd, 0x00, 0x00];
        b.extend_from_slice(&[b'x'; 13]);
        let m = Message::decode(&b).unwrap();
        let opts: Vec<_> = m.options().collect();
        assert_eq!(opts, [(OptionNumber(13), &[b'x'; 13][..])]);
        assert_eq!(m.to_bytes().unwrap(), b);
        // delta 14: 269 + 0x0100 = 525, length 14: 269 + 1 = 270
        let mut b = vec![0x40, 0x01, 0, 1, 0xee, 0x01, 0x00, 0x00, 0x01];
        b.extend_from_slice(&[7u8; 270]);
        let m = Message::decode(&b).unwrap();
        assert_eq!(m.option(OptionNumber(525)).unwrap().len(), 270);
        assert_eq!(m.to_bytes().unwrap(), b);
        // Reserved nibbles.
        assert_eq!(
            err(&[0x40, 0x01, 0, 1, 0xf1, 0]),
            (DecodeErrorKind::ReservedOptionDelta, 4)
        );
        assert_eq!(
            err(&[0x40, 0x01, 0, 1, 0xb1, b'a', 0x1f]),
            (DecodeErrorKind::ReservedOptionLength, 6)
        );
        // Truncated extended delta / length / value.
        assert_eq!(
            err(&[0x40, 0x01, 0, 1, 0xd0]),
            (DecodeErrorKind::Truncated, 5)
        );
        assert_eq!(
            err(&[0x40, 0x01, 0, 1, 0x0e, 0x01]),
            (DecodeErrorKind::Truncated, 5)
        );
        assert_eq!(
            err(&[0x40, 0x01, 0, 1, 0xb3, b'a', b'b']),
            (DecodeErrorKind::Truncated, 5)
        );
        // Option number overflow: 65535 + 1.
        assert_eq!(
            err(&[0x40, 0x01, 0, 1, 0xe0, 0xfe, 0xf2, 0x10]),
            (DecodeErrorKind::OptionNumberOverflow, 7)
        );
        let max = Message::decode(&[0x40, 0x01, 0, 1, 0xe0, 0xfe, 0xf2]).unwrap();
        assert!(max.has_option(OptionNumber(65535)));
    }

    #[test]
    fn repeated_options_keep_order() {
        let mut m = Message::request(Code::POST, "/rd");
        m.add_uri_query("ep=a");
        m.add_uri_query("lt=300");
        m.add_uri_path("x");
        m.add_option(OptionNumber::ETAG, b"1");
        m.add_option(OptionNumber::ETAG, b"2");
        let back = Message::decode(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back.uri_path().collect::<Vec<_>>(), ["rd", "x"]);
        assert_eq!(back.uri_query().collect::<Vec<_>>(), ["ep=a", "lt=300"]);
        let etags: Vec<_> = back.option_values(OptionNumber::ETAG).collect();
        assert_eq!(etags, [b"1", b"2"]);
        let numbers: Vec<_> = back.options().map(|(n, _)| n.0).collect();
        assert_eq!(numbers, [4, 4, 11, 11, 15, 15]);
    }

    #[test]
    fn payload_marker_rules() {
        assert_eq!(
            err(&[0x40, 0x01, 0, 1, 0xb1, b'a', 0xff]),
            (DecodeErrorKind::EmptyPayload, 6)
        );
        let m = Message::decode(&[0x50, 0x02, 0, 1, 0xff, 0xff, 0xff]).unwrap();
        assert_eq!(m.payload, [0xff, 0xff]);
        // An empty payload is not encoded with a marker.
        let m = Message::request(Code::GET, "/a");
        assert_eq!(m.to_bytes().unwrap().last(), Some(&b'a'));
    }

    #[test]
    fn typed_options_round_trip() {
        let mut m = Message::response(Code::CONTENT);
        m.set_token(&[1, 2, 3, 4]).unwrap();
        m.set_content_format(ContentFormat::LWM2M_TLV);
        m.set_observe(0x01_0203);
        m.set_block2(BlockOption::new(5, true, 6).unwrap());
        m.set_size2(100_000);
        m.set_max_age(0);
        m.add_etag(&[9, 9]);
        m.add_location_path("rd");
        m.add_location_path("abc");
        m.set_accept(ContentFormat::SENML_JSON);
        m.set_size1(7);
        m.set_block1(BlockOption::new(0, false, 0).unwrap());
        m.payload = vec![1, 2, 3];
        let back = Message::decode(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.content_format(), Some(ContentFormat::LWM2M_TLV));
        assert_eq!(back.observe(), Some(0x01_0203));
        assert_eq!(back.block2(), BlockOption::new(5, true, 6));
        assert_eq!(back.block1(), BlockOption::new(0, false, 0));
        assert_eq!(back.size2(), Some(100_000));
        assert_eq!(back.size1(), Some(7));
        assert_eq!(back.max_age(), Some(0));
        assert_eq!(back.option(OptionNumber::MAX_AGE), Some(&[][..]));
        assert_eq!(back.etag(), Some(&[9u8, 9][..]));
        assert_eq!(back.location_path().collect::<Vec<_>>(), ["rd", "abc"]);
        assert_eq!(back.accept(), Some(ContentFormat::SENML_JSON));
        assert_eq!(back.unrecognized_critical_option(), None);
    }

    #[test]
    fn unrecognized_critical_options() {
        let mut m = Message::request(Code::GET, "/a");
        m.add_option(OptionNumber(2048), b"elective unknown is fine");
        assert_eq!(m.unrecognized_critical_option(), None);
        let mut bad_len = m.clone();
        bad_len.set_option(OptionNumber::BLOCK2, &[1, 2, 3, 4]);
        assert_eq!(
            bad_len.unrecognized_critical_option(),
            Some(OptionNumber::BLOCK2)
        );
        let mut reserved_szx = m.clone();
        reserved_szx.set_option(OptionNumber::BLOCK1, &[0x07]);
        assert_eq!(
            reserved_szx.unrecognized_critical_option(),
            Some(OptionNumber::BLOCK1)
        );
        let mut repeated = m.clone();
        repeated.add_option(OptionNumber::URI_HOST, b"a");
        repeated.add_option(OptionNumber::URI_HOST, b"b");
        assert_eq!(
            repeated.unrecognized_critical_option(),
            Some(OptionNumber::URI_HOST)
        );
        let mut not_utf8 = m.clone();
        not_utf8.add_uri_path("\u{0}");
        not_utf8.add_option(OptionNumber::URI_PATH, &[0xff]);
        assert_eq!(
            not_utf8.unrecognized_critical_option(),
            Some(OptionNumber::URI_PATH)
        );
        let mut too_long = m.clone();
        too_long.add_option(OptionNumber::URI_QUERY, &[b'q'; 256]);
        assert_eq!(
            too_long.unrecognized_critical_option(),
            Some(OptionNumber::URI_QUERY)
        );
        // Elective option with a bad length: ignored by the check, accessor says None.
        let mut cf = m.clone();
        cf.set_option(OptionNumber::CONTENT_FORMAT, &[1, 2, 3]);
        assert_eq!(cf.unrecognized_critical_option(), None);
        assert_eq!(cf.content_format(), None);
    }

    #[test]
    fn encode_rejects_what_cannot_be_decoded() {
        let mut m = Message::empty(MessageType::Reset, 1);
        assert_eq!(m.to_bytes().unwrap(), [0x70, 0, 0, 1]);
        m.set_token(&[1]).unwrap();
        assert_eq!(
            m.to_bytes(),
            Err(EncodeErrorKindAlias::EmptyMessageNotEmpty)
        );
        let mut big = Message::request(Code::PUT, "/x");
        big.add_option(OptionNumber(2048), &vec![0; 70_000]);
        assert!(matches!(
            big.to_bytes(),
            Err(EncodeErrorKindAlias::OptionTooLong { len: 70_000, .. })
        ));
        let small = Message::request(Code::GET, "/abc");
        let mut out = [0u8; 4];
        assert_eq!(
            small.encode_into(&mut out),
            Err(EncodeErrorKindAlias::BufferTooSmall { needed: 8 })
        );
        let mut out = [0u8; 16];
        assert_eq!(small.encode_into(&mut out), Ok(8));
        assert_eq!(Message::decode(&out[..8]).unwrap(), small);
    }

    use crate::coap::EncodeError as EncodeErrorKindAlias;

    #[test]
    fn set_and_remove_options() {
        let mut m = Message::request(Code::GET, "/a/b/c");
        m.set_uri_path("x");
        assert_eq!(m.uri_path_string(), "x");
        m.set_uri_path("/");
        assert_eq!(m.uri_path().count(), 0);
        m.set_observe(0);
        assert_eq!(m.observe(), Some(0));
        m.remove_option(OptionNumber::OBSERVE);
        assert_eq!(m.observe(), None);
        for i in 0..100 {
            m.set_option(OptionNumber(2048), &[i; 40]);
        }
        assert_eq!(m.option(OptionNumber(2048)), Some(&[99u8; 40][..]));
        assert_eq!(m.option_count(), 1);
    }
}
