//! The device vocabulary the whole crate speaks: LWM2M object-model paths and values, and
//! the operations and events between the hub and a device.
//!
//! A device property in a twin *is* an LWM2M resource (`/3/0/3` is the firmware
//! version), and a job step *is* a device operation, so these types belong to the domain
//! rather than to a transport: [`twin`](crate::twin), [`job`](crate::job),
//! [`registry`](crate::registry), [`query`](crate::query) and [`store`](crate::store) name
//! them from here and never name the protocol modules (`coap`, `dtls`, `lwm2m`,
//! `transport`), which a test (`tests/layering.rs`) checks. The protocol (messages,
//! content formats, sockets) stays in `coap` and `lwm2m`; those modules and `transport`
//! re-export these types, so `twinhub::lwm2m::Lwm2mPath` and
//! `twinhub::transport::DeviceOp` name the same types as `twinhub::resource::...`.
//!
//! The standard objects' resource types ([`standard_resource_type`]) and the rule of which
//! value fits which type ([`fit_value`]) are the domain's too: a write job's values are
//! checked against them at creation ([`JobSpec::validate`](crate::job::JobSpec::validate))
//! and the in-memory fleet fits a write with them, in every build; the LwM2M content
//! formats re-export the table and apply the rule before a write is encoded.

mod fit;
mod op;
mod path;
mod types;
mod value;

pub use fit::{Misfit, fit_value};

pub use op::{
    BootstrapOutcome, DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest,
    NotificationAttributes, ObservationEndCause, OpId, PeerIdentity, RejectReason, WriteMode,
};
pub use path::{Lwm2mPath, PathError};
pub use types::standard_resource_type;
pub use value::{Content, ResourceType, ResourceValue, base64_encode};
