//! CoAP (RFC 7252) for the bundled LWM2M transport and the device library.
//!
//! - [`Message`]: the codec (decode with nom, encode into a caller's buffer), typed
//!   option accessors, [`Code`], [`MessageType`], [`OptionNumber`], [`ContentFormat`],
//!   [`BlockOption`];
//! - [`link_format`]: the CoRE link format (RFC 6690) of registrations and Discover;
//! - [`Endpoint`]: the sans-IO message layer (both roles), with observe and block-wise;
//! - [`UdpDriver`]: runs an endpoint on a std UDP socket in a thread; [`udp`] also shows
//!   how to drive an endpoint from another runtime.

mod code;
mod decode;
pub(crate) mod endpoint;
pub mod link_format;
mod message;
mod observe;
mod option;
pub mod udp;

pub use code::{Code, MessageType};
pub use decode::{DecodeError, DecodeErrorKind};
pub use endpoint::{
    Endpoint, EndpointConfig, EndpointConfigError, Event, IncomingRequestId, ObservationEndReason,
    ObservationId, RequestError, RequestId, RespondError, SendError, Transmit,
};
pub use message::{EncodeError, MAX_OPTION_VALUE_LEN, Message, Token};
pub use observe::{OBSERVE_FRESHNESS, notification_is_fresh};
pub use option::{BlockOption, ContentFormat, OptionNumber};
pub use udp::{ClientEvent, DriverError, DriverHandle, Observation, ServerEvent, UdpDriver};
