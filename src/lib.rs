//! # twinhub
//!
//! Embeddable IoT device management for Rust services: device twins, indexed device
//! queries, device jobs, and a CoAP/LWM2M transport with a device-side client library.
//!
//! The crate is layered from the bottom up; every layer below the hub is a sans-IO state
//! machine (inputs are `handle_*(now, ...)`, outputs are `poll_*`), driven by small std
//! drivers:
//!
//! | module | what lives there |
//! |---|---|
//! | [`twin`] | the twin model: device fields, device properties, service properties, tags |
//! | [`registry`] | twins in dense `u32` slots with roaring-bitmap indexes and a change feed |
//! | [`query`] | the JSON query expression: nom parser, optimizer, bitmap executor |
//! | [`coap`] | RFC 7252 codec and message layer, observe (RFC 7641), block-wise (RFC 7959) |
//! | [`lwm2m`] | paths, values, payload formats, the server endpoint and the device library |
//! | [`transport`] | the [`Transport`](transport::Transport) port between hub and devices |
//! | [`job`] | the job engine: parent and child jobs, rollouts, history |
//! | [`hub`] | the facade: registry + jobs + a transport, and the event routing between them |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod time;

pub mod coap;
pub mod hub;
pub mod job;
pub mod lwm2m;
pub mod query;
pub mod registry;
pub mod transport;
pub mod twin;

#[doc(hidden)]
pub mod fuzzing;

pub use lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue};
pub use registry::{Registry, SharedRegistry};
pub use time::{Timestamp, TimestampParseError};
pub use twin::{DeviceId, DeviceIdError, Scalar, Twin};
