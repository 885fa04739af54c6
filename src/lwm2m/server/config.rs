//! The server's settings and its authorization hook.

use super::RegistrationRequest;
use crate::transport::RejectReason;
use std::time::Duration;

/// What the authorization hook decides about a Register.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Decision {
    /// Let the device register.
    Accept,
    /// Answer 4.03 and emit [`DeviceEvent::Rejected`](crate::transport::DeviceEvent::Rejected).
    Reject(RejectReason),
}

/// Decides who may register, from the request (endpoint name; later the DTLS identity).
/// The hub passes "exists in the registry and is enabled".
pub type Authorizer = Box<dyn Fn(&RegistrationRequest) -> Decision + Send>;

/// Tunables of [`Lwm2mServer`](super::Lwm2mServer). `Default` gives the RFC 7252 / LWM2M
/// defaults and refuses unknown devices.
///
/// ```
/// use twinhub::lwm2m::server::ServerConfig;
/// let c = ServerConfig { auto_provision: true, ..ServerConfig::default() };
/// assert_eq!(c.max_retransmit, 4);
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Accept any endpoint when no authorization hook is installed. Off by default: without
    /// a hook and without this, every Register is refused with 4.03.
    pub auto_provision: bool,
    /// How long past its lifetime a registration survives before it expires.
    pub lifetime_grace: Duration,
    /// Most registrations held at once; further Registers get 5.03.
    pub max_registrations: usize,
    /// Most operations waiting per device (queue mode, or behind the one in flight).
    pub queue_capacity: usize,
    /// How long an operation may wait in a device's queue before it times out.
    pub queue_timeout: Duration,
    /// How long a queue-mode device stays reachable after it last talked
    /// (LWM2M: MAX_TRANSMIT_WAIT, 93 s).
    pub awake_window: Duration,
    /// CoAP ACK_TIMEOUT (2 s); the first retransmission waits 1 to 1.5 times this.
    pub ack_timeout: Duration,
    /// CoAP MAX_RETRANSMIT (4).
    pub max_retransmit: u8,
    /// How long to wait for a separate response after an empty ACK.
    pub response_timeout: Duration,
    /// Requests in flight per device at once (CoAP NSTART, 1).
    pub nstart: usize,
    /// How long answers to confirmable requests are remembered for duplicate detection
    /// (EXCHANGE_LIFETIME, 247 s).
    pub exchange_lifetime: Duration,
    /// Most remembered answers (duplicate detection), across all peers.
    pub dedup_capacity: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            auto_provision: false,
            lifetime_grace: Duration::from_secs(30),
            max_registrations: 1_000_000,
            queue_capacity: 16,
            queue_timeout: Duration::from_secs(600),
            awake_window: Duration::from_secs(93),
            ack_timeout: Duration::from_secs(2),
            max_retransmit: 4,
            response_timeout: Duration::from_secs(93),
            nstart: 1,
            exchange_lifetime: Duration::from_secs(247),
            dedup_capacity: 65_536,
        }
    }
}
