//! LWM2M: payload formats, the server endpoint (the hub's bundled transport) and the
//! device-side client library. Paths and values live in [`crate::resource`] and are
//! re-exported here.

// Paths and values are the crate's device vocabulary (see `crate::resource`); the
// protocol modules below name them from here as before.
pub use crate::resource::{
    Content, Lwm2mPath, PathError, ResourceType, ResourceValue, base64_encode,
};

#[cfg(feature = "device")]
pub mod client;
#[cfg(feature = "lwm2m")]
pub mod content;
#[cfg(feature = "lwm2m")]
pub mod server;
