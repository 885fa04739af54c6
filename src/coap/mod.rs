//! CoAP (RFC 7252) for the bundled LWM2M transport and the device library.
//!
//! - [`Message`]: the codec (decode with nom, encode into a caller's buffer), typed
//!   option accessors, [`Code`], [`MessageType`], [`OptionNumber`], [`ContentFormat`],
//!   [`BlockOption`];
//! - [`link_format`]: the CoRE link format (RFC 6690) of registrations and Discover.

mod code;
mod decode;
pub mod link_format;
mod message;
mod option;

pub use code::{Code, MessageType};
pub use decode::{DecodeError, DecodeErrorKind};
pub use message::{EncodeError, MAX_OPTION_VALUE_LEN, Message, Token};
pub use option::{BlockOption, ContentFormat, OptionNumber};
