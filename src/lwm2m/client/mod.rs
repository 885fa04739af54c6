//! The device side: an LWM2M client library in which a device exposes objects and
//! resources through read / write / execute callbacks.
//!
//! Layers, from the bottom:
//!
//! - [`model`](self#the-object-model): [`ObjectDef`] / [`ResourceDef`] say what an object is;
//!   the [`Object`] trait is the per-object callback interface; [`ValueObject`] stores plain
//!   values and takes per-resource closures.
//! - [`objects`]: the standard objects Security /0, Server /1, Device /3, Config /10241, and
//!   [`FirmwareUpdate`] /5 with the spec's State / Update Result machine.
//!
//! # The object model
//!
//! The client core checks paths, access modes and value types before it calls an object, so
//! objects see only well-formed calls.

mod attributes;
mod driver;
mod engine;
mod firmware;
pub mod formats;
mod model;
pub mod objects;
mod tree;
mod value_object;

pub use attributes::{
    AttributeChange, AttributeError, AttributeTable, MAX_ATTRIBUTE_PATHS, NotifyTimer,
    parse_attributes,
};
pub use driver::{DeviceThread, DriverOptions};
pub use engine::{ClientConfig, ClientError, ClientEvent, Lwm2mClient, Transmit};
pub use firmware::{
    CoapUri, FIRMWARE_UPDATE, FirmwareUpdate, PackageFn, PullRequest, UpdateFn, UpdateResult,
    UpdateState, parse_coap_uri,
};
pub use model::{Access, Object, ObjectDef, ObjectError, ResourceData, ResourceDef, coerce};
pub use tree::{MAX_CREATED_INSTANCES, ObjectTree};
pub use value_object::{ExecuteFn, ReadFn, ValueObject, WriteFn};
