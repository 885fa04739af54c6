//! A device's LWM2M registration as its twin keeps it.
//!
//! Defined with the twins (the domain) rather than the transport, so the core builds
//! without the transport; the `transport` module re-exports it.

use crate::resource::Lwm2mPath;
use std::net::SocketAddr;

/// What a device told the server when it registered (or updated its registration).
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationInfo {
    /// The endpoint name (`ep`); equals the device id.
    pub endpoint: String,
    /// The server-assigned registration id (the `rd/{id}` location).
    pub registration_id: String,
    /// Lifetime in seconds (`lt`, default 86400).
    pub lifetime: u32,
    /// LWM2M version (`lwm2m`, default "1.0").
    pub lwm2m_version: String,
    /// Binding mode (`b`, e.g. "U", "UQ").
    pub binding: String,
    /// Whether the device is in queue mode (`b=UQ` in 1.0, `Q` in 1.1).
    pub queue_mode: bool,
    /// The object instances the device announced (`</3/0>, </5/0>, ...`).
    pub objects: Vec<Lwm2mPath>,
    /// Where its datagrams come from; updated on NAT rebinding. `None` when not known:
    /// the registration was displaced (another device now speaks from the address it
    /// had, which is that device's) until its device talks from where it is now.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub address: Option<SocketAddr>,
    /// The PSK identity of the DTLS session the device registered over (none over plain
    /// CoAP). Only the identity: keys never travel in a registration.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub psk_identity: Option<String>,
}

impl RegistrationInfo {
    /// Whether the device registered as LWM2M 1.1 or later, and so takes the composite
    /// operations (Read-, Write-, Observe-Composite).
    pub fn speaks_1_1(&self) -> bool {
        let mut parts = self.lwm2m_version.split('.').map(|p| p.parse::<u32>().ok());
        matches!(
            (parts.next().flatten(), parts.next().flatten()),
            (Some(major), Some(minor)) if (major, minor) >= (1, 1)
        )
    }
}
