//! Message types and codes (RFC 7252 §3, §12.1).

use std::fmt;

/// The 2-bit message type in the CoAP header (RFC 7252 §4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MessageType {
    /// CON: needs an acknowledgement; retransmitted until one arrives.
    Confirmable,
    /// NON: fire and forget.
    NonConfirmable,
    /// ACK: acknowledges a CON message (may carry a piggybacked response).
    Acknowledgement,
    /// RST: the receiver could not process a message.
    Reset,
}

impl MessageType {
    /// The header bits (0 = CON, 1 = NON, 2 = ACK, 3 = RST).
    pub const fn bits(self) -> u8 {
        match self {
            MessageType::Confirmable => 0,
            MessageType::NonConfirmable => 1,
            MessageType::Acknowledgement => 2,
            MessageType::Reset => 3,
        }
    }

    /// The type for two header bits (only the low two bits are used).
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageType::Confirmable => "CON",
            MessageType::NonConfirmable => "NON",
            MessageType::Acknowledgement => "ACK",
            MessageType::Reset => "RST",
        })
    }
}

/// A CoAP code `c.dd`: a 3-bit class and a 5-bit detail (RFC 7252 §3).
///
/// Class 0 holds the methods (and 0.00, the empty message), 2 success, 4 client error,
/// 5 server error. Display renders `c.dd`:
///
/// ```
/// use twinhub::coap::Code;
/// assert_eq!(Code::CONTENT.to_string(), "2.05");
/// assert_eq!(Code::new(4, 4), Code::NOT_FOUND);
/// assert!(Code::GET.is_request() && Code::CHANGED.is_response());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Code(pub u8);

impl Code {
    /// 0.00, the code of an empty message.
    pub const EMPTY: Code = Code(0);
    /// 0.01 GET.
    pub const GET: Code = Code::new(0, 1);
    /// 0.02 POST.
    pub const POST: Code = Code::new(0, 2);
    /// 0.03 PUT.
    pub const PUT: Code = Code::new(0, 3);
    /// 0.04 DELETE.
    pub const DELETE: Code = Code::new(0, 4);
    /// 0.05 FETCH (RFC 8132).
    pub const FETCH: Code = Code::new(0, 5);
    /// 0.06 PATCH (RFC 8132).
    pub const PATCH: Code = Code::new(0, 6);
    /// 0.07 iPATCH (RFC 8132).
    pub const IPATCH: Code = Code::new(0, 7);
    /// 2.01 Created.
    pub const CREATED: Code = Code::new(2, 1);
    /// 2.02 Deleted.
    pub const DELETED: Code = Code::new(2, 2);
    /// 2.03 Valid.
    pub const VALID: Code = Code::new(2, 3);
    /// 2.04 Changed.
    pub const CHANGED: Code = Code::new(2, 4);
    /// 2.05 Content.
    pub const CONTENT: Code = Code::new(2, 5);
    /// 2.31 Continue (RFC 7959).
    pub const CONTINUE: Code = Code::new(2, 31);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    /// 4.01 Unauthorized.
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    /// 4.02 Bad Option.
    pub const BAD_OPTION: Code = Code::new(4, 2);
    /// 4.03 Forbidden.
    pub const FORBIDDEN: Code = Code::new(4, 3);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Code = Code::new(4, 4);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: Code = Code::new(4, 6);
    /// 4.08 Request Entity Incomplete (RFC 7959).
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    /// 4.09 Conflict (RFC 8132).
    pub const CONFLICT: Code = Code::new(4, 9);
    /// 4.12 Precondition Failed.
    pub const PRECONDITION_FAILED: Code = Code::new(4, 12);
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    /// 4.15 Unsupported Content-Format.
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);
    /// 5.00 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    /// 5.01 Not Implemented.
    pub const NOT_IMPLEMENTED: Code = Code::new(5, 1);
    /// 5.02 Bad Gateway.
    pub const BAD_GATEWAY: Code = Code::new(5, 2);
    /// 5.03 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);
    /// 5.04 Gateway Timeout.
    pub const GATEWAY_TIMEOUT: Code = Code::new(5, 4);
    /// 5.05 Proxying Not Supported.
    pub const PROXYING_NOT_SUPPORTED: Code = Code::new(5, 5);

    /// The code `class.detail`; `class` keeps its low 3 bits, `detail` its low 5.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code(((class & 7) << 5) | (detail & 31))
    }

    /// The class (0 request, 2 success, 4 client error, 5 server error).
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail (the `dd` of `c.dd`).
    pub const fn detail(self) -> u8 {
        self.0 & 31
    }

    /// 0.00: the code of an empty message (ping, empty ACK, RST).
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A method code (class 0, not 0.00).
    pub const fn is_request(self) -> bool {
        self.class() == 0 && self.0 != 0
    }

    /// A response code (class 2, 4 or 5).
    pub const fn is_response(self) -> bool {
        matches!(self.class(), 2 | 4 | 5)
    }

    /// A success response (class 2).
    pub const fn is_success(self) -> bool {
        self.class() == 2
    }

    /// A reserved class (1, 3, 6 or 7); RFC 7252 §4.2: a message with one is rejected.
    pub const fn is_reserved(self) -> bool {
        matches!(self.class(), 1 | 3 | 6 | 7)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_class_detail_and_display() {
        assert_eq!(Code::CONTENT.0, 0x45);
        assert_eq!(Code::NOT_FOUND.0, 0x84);
        assert_eq!(Code::CONTINUE.0, 0x5f);
        assert_eq!(Code::SERVICE_UNAVAILABLE.to_string(), "5.03");
        assert_eq!(Code::GET.to_string(), "0.01");
        assert_eq!(Code::REQUEST_ENTITY_TOO_LARGE.to_string(), "4.13");
        assert_eq!(format!("{:?}", Code::CHANGED), "Code(2.04)");
        assert!(Code::EMPTY.is_empty() && !Code::EMPTY.is_request());
        assert!(Code(0x20).is_reserved() && Code(0xe0).is_reserved());
        assert!(!Code::BAD_REQUEST.is_success() && Code::BAD_REQUEST.is_response());
    }

    #[test]
    fn message_type_bits_round_trip() {
        for b in 0..4 {
            assert_eq!(MessageType::from_bits(b).bits(), b);
        }
        assert_eq!(MessageType::Reset.to_string(), "RST");
    }
}
