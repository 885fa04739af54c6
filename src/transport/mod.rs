//! The port between the hub and its devices.
//!
//! The hub talks to devices only through a [`Transport`]: it submits [`DeviceOp`]s
//! (read, write, execute, observe, ...) addressed by device id and LWM2M path, and takes
//! [`DeviceEvent`]s (registered, notification, response, timed out, ...) back out.
//!
//! A transport is a sans-IO state machine, like everything below the hub: it owns no
//! thread and reads no clock. The caller passes `now` in and drives it in this order:
//!
//! 1. [`Transport::submit`] operations as they come;
//! 2. feed it whatever IO it has (the LWM2M server takes datagrams through its own
//!    `handle_datagram`; the in-memory transport has none);
//! 3. drain [`Transport::poll_event`] until `None`;
//! 4. sleep until [`Transport::poll_timeout`] (or until new input), then call
//!    [`Transport::handle_timeout`] and go to 3.
//!
//! A transport that queues requests (for sleeping, queue-mode devices) says when each one
//! actually leaves with [`DeviceEvent::Sent`] and returns `true` from
//! [`Transport::reports_sent`]; the job engine needs it to tell an Execute that reached
//! the device from one still queued.
//!
//! Two transports ship with the crate: the bundled LWM2M server over CoAP/UDP
//! (`lwm2m::server`) and an in-memory simulated fleet (`transport::memory`) with seeded
//! faults for deterministic tests. Both pass one conformance suite.
//!
//! The operation and event types live in [`crate::resource`] (the job engine speaks them
//! without this module) and are re-exported here.

#[cfg(feature = "memory-fleet")]
pub mod memory;

pub use crate::resource::{
    BootstrapOutcome, DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest,
    NotificationAttributes, ObservationEndCause, OpId, PeerIdentity, RejectReason, WriteMode,
};
pub use crate::twin::RegistrationInfo;
use std::time::Instant;

/// The hub's view of a device transport. See the module docs for the driving order.
pub trait Transport {
    /// Hands an operation to the transport. Never blocks; the outcome arrives later as a
    /// [`DeviceEvent::Response`] or [`DeviceEvent::TimedOut`] with the same [`OpId`].
    fn submit(&mut self, now: Instant, op: DeviceOp);

    /// The next event, if any.
    fn poll_event(&mut self) -> Option<DeviceEvent>;

    /// Advances time-driven state (retransmissions, lifetimes, simulated devices).
    fn handle_timeout(&mut self, now: Instant);

    /// When [`Transport::handle_timeout`] should next be called.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Whether this transport emits [`DeviceEvent::Sent`] for every operation it
    /// transmits (default: no). Both bundled transports do.
    ///
    /// The job engine relies on it to tell a request that reached the device from one
    /// still waiting in a queue: with `true`, a reboot's, factory reset's or firmware
    /// update's Execute (or a Package URI Write) counts as possibly carried out only once
    /// its `Sent` (or its answer) arrived, and a registration before that is no proof of
    /// anything. With `false` the engine cannot know, and counts an operation as sent when
    /// it is handed over: right for a transport that transmits at once, wrong for one that
    /// queues requests for sleeping devices (a reboot job may then report success on a
    /// registration that came before its Execute went out). A transport that queues should
    /// emit `Sent` and return `true`.
    fn reports_sent(&self) -> bool {
        false
    }
}
