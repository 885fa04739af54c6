//! LWM2M: paths and values shared by both ends, payload formats, the server endpoint
//! (the hub's bundled transport) and the device-side client library.

mod path;
mod value;

pub use path::{Lwm2mPath, PathError};
pub use value::{Content, ResourceType, ResourceValue, base64_encode};

pub mod client;
pub mod content;
pub mod server;
