//! What goes in and out of an [`Endpoint`](super::Endpoint): ids, events, transmits, errors.

use crate::coap::{Code, EncodeError, Message};
use std::fmt;
use std::net::SocketAddr;

/// A request this endpoint sent (client role); its response and notifications carry it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RequestId(pub u64);

/// A request this endpoint received (server role), to answer with
/// [`Endpoint::respond`](super::Endpoint::respond).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct IncomingRequestId(pub u64);

/// An observer relation this endpoint serves (server role), fed with
/// [`Endpoint::notify`](super::Endpoint::notify).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ObservationId(pub u64);

/// A datagram to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The encoded CoAP message.
    pub payload: Vec<u8>,
}

/// Something the application must know about.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A request arrived (duplicates are filtered; block-wise bodies arrive whole).
    /// Answer it with `respond` or `respond_and_observe`.
    Request {
        /// The id to respond to.
        id: IncomingRequestId,
        /// Who sent it.
        peer: SocketAddr,
        /// The request (Block1 reassembled and its option removed).
        request: Message,
    },
    /// The response to a request we sent (Block2 reassembled). For an observe request this
    /// is the first response; if it carries an Observe option, the observation is
    /// registered and [`Event::Notification`]s follow.
    Response {
        /// The request it answers.
        id: RequestId,
        /// The response.
        response: Message,
    },
    /// A fresh notification of an observation we registered (stale and reordered ones are
    /// dropped, RFC 7641 §3.4). A notification without Observe option or with an error
    /// code ends the observation.
    Notification {
        /// The observe request.
        id: RequestId,
        /// The notification.
        response: Message,
    },
    /// A request we sent got no usable response; its id is done.
    RequestFailed {
        /// The request.
        id: RequestId,
        /// Why.
        error: RequestError,
    },
    /// An observer relation we served is gone (server role).
    ObservationEnded {
        /// The relation.
        id: ObservationId,
        /// Why.
        reason: ObservationEndReason,
    },
}

/// Why a request we sent failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// No ACK after MAX_RETRANSMIT retransmissions, or no response within the response
    /// timeout.
    TimedOut,
    /// The peer answered with RST.
    Reset,
    /// A Block2 download grew past `max_body_size`.
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A Block2 block did not continue the body (wrong number or size).
    BlockMismatch,
    /// The peer kept asking for smaller blocks than we can send, or its answer was unusable.
    BlockNegotiationFailed,
    /// The endpoint could not encode the request (an option too long).
    Encode(EncodeError),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::TimedOut => f.write_str("request timed out"),
            RequestError::Reset => f.write_str("peer reset the request"),
            RequestError::BodyTooLarge { limit } => {
                write!(f, "response body larger than {limit} bytes")
            }
            RequestError::BlockMismatch => f.write_str("block-wise response out of sequence"),
            RequestError::BlockNegotiationFailed => f.write_str("block-wise transfer failed"),
            RequestError::Encode(e) => write!(f, "cannot encode request: {e}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Why an observer relation ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ObservationEndReason {
    /// The observer answered a notification with RST.
    Reset,
    /// A CON notification was never acknowledged.
    TimedOut,
    /// The observer sent GET with Observe=1.
    Cancelled,
    /// The observer registered again with the same token (a new relation replaced this one).
    Replaced,
    /// We sent an error or non-observe notification, which ends the relation.
    FinalResponse,
}

/// Why [`Endpoint::send_request`](super::Endpoint::send_request) refused a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SendError {
    /// The message's code is not a method.
    NotARequest(Code),
    /// `max_outstanding_requests` reached.
    TooManyRequests,
    /// The peer's NSTART queue is full.
    PeerQueueFull,
    /// The request body exceeds `max_body_size`.
    BodyTooLarge {
        /// The body length.
        len: usize,
    },
    /// `max_peers` reached and this peer is new.
    TooManyPeers,
    /// The request cannot be encoded.
    Encode(EncodeError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotARequest(c) => write!(f, "code {c} is not a request method"),
            SendError::TooManyRequests => f.write_str("too many outstanding requests"),
            SendError::PeerQueueFull => f.write_str("request queue for this peer is full"),
            SendError::BodyTooLarge { len } => write!(f, "request body of {len} bytes too large"),
            SendError::TooManyPeers => f.write_str("too many peers"),
            SendError::Encode(e) => write!(f, "cannot encode request: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`Endpoint::respond`](super::Endpoint::respond) or
/// [`Endpoint::notify`](super::Endpoint::notify) refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RespondError {
    /// No such pending request (already answered, expired, or never existed).
    UnknownRequest(IncomingRequestId),
    /// No such observer relation (ended or never existed).
    UnknownObservation(ObservationId),
    /// The message's code is not a response code.
    NotAResponse(Code),
    /// The response cannot be encoded.
    Encode(EncodeError),
}

impl fmt::Display for RespondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespondError::UnknownRequest(id) => write!(f, "no pending request {}", id.0),
            RespondError::UnknownObservation(id) => write!(f, "no observation {}", id.0),
            RespondError::NotAResponse(c) => write!(f, "code {c} is not a response code"),
            RespondError::Encode(e) => write!(f, "cannot encode response: {e}"),
        }
    }
}

impl std::error::Error for RespondError {}
