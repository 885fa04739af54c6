//! LWM2M: paths and values shared by both ends, payload formats, the server endpoint
//! (the hub's bundled transport) and the device-side client library.

mod path;
mod value;

pub use path::{Lwm2mPath, PathError};
pub use value::{Content, ResourceType, ResourceValue, base64_encode};

#[cfg(feature = "device")]
pub mod client;
#[cfg(feature = "lwm2m")]
pub mod content;
#[cfg(feature = "lwm2m")]
pub mod server;
