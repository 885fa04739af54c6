//! The server's settings and its authorization hook.

use super::RegistrationRequest;
use crate::coap::{EndpointConfig, EndpointConfigError};
use crate::transport::{PeerIdentity, RejectReason};
use std::time::Duration;

/// What the authorization hook decides about a Register.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Decision {
    /// Let the device register.
    Accept,
    /// Answer 4.03 and emit [`DeviceEvent::Rejected`](crate::transport::DeviceEvent::Rejected).
    Reject(RejectReason),
}

/// Decides who may register, from the request (endpoint name) and the peer's
/// authenticated DTLS identity (`None` over plain CoAP). The hub passes "exists in the
/// registry, is enabled, and has no credentials unless it came over DTLS". Before the
/// hook runs, the server has already refused (4.03, [`RejectReason::IdentityMismatch`]) a
/// DTLS peer whose identity belongs to another endpoint.
pub type Authorizer = Box<dyn Fn(&RegistrationRequest, Option<&PeerIdentity>) -> Decision + Send>;

/// What a Register does to a live registration of the same endpoint that another address
/// holds. The specification lets a new Register replace the old one; over plain CoAP that
/// lets any host that knows an endpoint name take the device over (its operations, its
/// twin's device properties), so the default checks first whether the old address still
/// answers.
///
/// In JSON (a member of [`ServerConfig`]): `{"policy": "replace"}` or
/// `{"policy": "probeOldAddress", "probeTimeoutMs": 5000}`; any other member is an error
/// that names it, as everywhere in the configuration.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "policy", rename_all = "camelCase", try_from = "TakeoverJson")]
#[non_exhaustive]
pub enum Takeover {
    /// The new Register replaces the old registration (what LWM2M servers commonly do).
    Replace,
    /// The server probes the old address (a confirmable GET; any answer, even 4.04 or RST,
    /// shows a live endpoint there) and answers the newcomer 5.03 while the probe runs.
    /// If the old address answers, Registers from elsewhere get 4.03
    /// ([`RejectReason::AddressInUse`]) for [`TAKEOVER_REFUSAL`](super::TAKEOVER_REFUSAL),
    /// and a later attempt probes again. If it does not answer within `probe_timeout`, the
    /// old registration ends ([`DeviceEvent::Expired`](crate::transport::DeviceEvent)) and
    /// the next Register is accepted. At most one probe per registration is in flight, so a
    /// flood of Registers sends at most one datagram (and its retransmissions) per
    /// registration and refusal period.
    ProbeOldAddress {
        /// How long the old address has to answer.
        #[serde(with = "crate::time::millis", rename = "probeTimeoutMs")]
        probe_timeout: Duration,
    },
}

/// [`Takeover`] as JSON is read: every member named, none unknown. (serde's own reading
/// of an internally tagged enum lets a unit variant such as `replace` take members it does
/// not know, and drops them.)
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TakeoverJson {
    policy: TakeoverPolicy,
    #[serde(default)]
    probe_timeout_ms: Option<u64>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
enum TakeoverPolicy {
    Replace,
    ProbeOldAddress,
}

impl TryFrom<TakeoverJson> for Takeover {
    type Error = String;

    fn try_from(json: TakeoverJson) -> Result<Self, String> {
        match (json.policy, json.probe_timeout_ms) {
            (TakeoverPolicy::Replace, None) => Ok(Takeover::Replace),
            (TakeoverPolicy::Replace, Some(_)) => {
                Err("unknown field `probeTimeoutMs` for policy `replace`".into())
            }
            (TakeoverPolicy::ProbeOldAddress, Some(ms)) => Ok(Takeover::ProbeOldAddress {
                probe_timeout: Duration::from_millis(ms),
            }),
            (TakeoverPolicy::ProbeOldAddress, None) => Err("missing field `probeTimeoutMs`".into()),
        }
    }
}

impl Default for Takeover {
    fn default() -> Self {
        Takeover::ProbeOldAddress {
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// Tunables of [`Lwm2mServer`](super::Lwm2mServer). `Default` gives the RFC 7252 / LWM2M
/// defaults and refuses unknown devices.
///
/// ```
/// use twinhub::lwm2m::server::ServerConfig;
/// let c = ServerConfig { auto_provision: true, ..ServerConfig::default() };
/// assert_eq!(c.coap.max_retransmit, 4);
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerConfig {
    /// Accept any endpoint when no authorization hook is installed. Off by default: without
    /// a hook and without this, every Register is refused with 4.03.
    pub auto_provision: bool,
    /// How long past its lifetime a registration survives before it expires. Zero is
    /// allowed (it expires at the end of its lifetime); at most [`MAX_CONFIG_DURATION`].
    #[serde(with = "crate::time::millis", rename = "lifetimeGraceMs")]
    pub lifetime_grace: Duration,
    /// Most registrations held at once; further Registers get 5.03. At least 1.
    pub max_registrations: usize,
    /// What a Register from another address does to a live registration of the same
    /// endpoint (default: probe the old address for 5 s).
    pub takeover: Takeover,
    /// Most operations waiting per device (queue mode, or behind the one in flight);
    /// one more is failed at once ([`DeviceError::QueueFull`](crate::transport::DeviceError::QueueFull)).
    /// At least 1: every operation passes through the queue, so with 0 every one failed.
    pub queue_capacity: usize,
    /// How long an operation may wait in a device's queue before it times out. Above
    /// zero (with zero a sleeping device could never be reached) and at most
    /// [`MAX_CONFIG_DURATION`].
    #[serde(with = "crate::time::millis", rename = "queueTimeoutMs")]
    pub queue_timeout: Duration,
    /// How long a queue-mode device stays reachable after it last talked
    /// (LWM2M: MAX_TRANSMIT_WAIT, 93 s). Above zero (with zero a queue-mode device is
    /// never taken as awake, and nothing reaches it) and at most [`MAX_CONFIG_DURATION`].
    #[serde(with = "crate::time::millis", rename = "awakeWindowMs")]
    pub awake_window: Duration,
    /// Requests in flight per device at once (CoAP NSTART, 1): sent and not answered
    /// yet. The CoAP layer's own [`EndpointConfig::nstart`] (`coap.nstart`, 1) bounds the
    /// requests unacknowledged per address too, and a request leaves the device's queue
    /// only when the CoAP layer sends it at once: set above `coap.nstart`, the lower of
    /// the two holds, and the others wait in the device's queue (reported
    /// [`Sent`](crate::transport::DeviceEvent::Sent) when they go, counted against
    /// [`queue_capacity`](Self::queue_capacity) and
    /// [`queue_timeout`](Self::queue_timeout)). At least 1 ([`ServerConfig::validate`]:
    /// with 0 nothing would ever be sent).
    pub nstart: usize,
    /// The CoAP message layer's settings (timers, bounds, block size). The server's
    /// default raises the peer and duplicate-detection bounds for large fleets, limits a
    /// Block1 registration to [`MAX_LINK_PAYLOAD`](super::MAX_LINK_PAYLOAD) while it is
    /// reassembled, and a peer's unfinished uploads to 64 KiB. [`ServerConfig::validate`]
    /// refuses those of its settings that would leave the server inert (see there).
    pub coap: EndpointConfig,
}

pub use crate::time::MAX_CONFIG_DURATION;

/// Why [`ServerConfig::validate`] refused a configuration. Each names the setting by its
/// JSON member (`nstart`, `coap.maxPeers`, `takeover.probeTimeoutMs`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ServerConfigError {
    /// A count is 0 that must be at least 1: with it the server would be inert (nothing
    /// sent, every registration or operation refused).
    Zero(&'static str),
    /// A time-out or window is zero that must be above it: every request would time out
    /// at once, or a sleeping device never be reached.
    ZeroDuration(&'static str),
    /// A duration is longer than [`MAX_CONFIG_DURATION`].
    TooLong(&'static str),
    /// `coap.blockSzx` is above 6 (1024-byte blocks): 7 is reserved (RFC 7959 §2.2),
    /// and a larger one is no block size.
    BlockSize(u8),
    /// `coap.ackRandomFactor` is below 1.0 (RFC 7252 §4.8), not a number, or so large
    /// that `coap.ackTimeoutMs` times it passes [`MAX_CONFIG_DURATION`]: the first
    /// retransmission time-out of a confirmable request is drawn up to that product, and
    /// one out of `Duration`'s range panicked the server's thread at its first request.
    AckRandomFactor,
}

impl std::fmt::Display for ServerConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerConfigError::Zero(what) => write!(f, "{what} must be at least 1"),
            ServerConfigError::ZeroDuration(what) => write!(f, "{what} must be above zero"),
            ServerConfigError::TooLong(what) => write!(
                f,
                "{what} must be at most {} ms (a year)",
                MAX_CONFIG_DURATION.as_millis()
            ),
            ServerConfigError::AckRandomFactor => write!(
                f,
                "coap.ackRandomFactor must be at least 1.0, and coap.ackTimeoutMs times it at most {} ms (a year)",
                MAX_CONFIG_DURATION.as_millis()
            ),
            ServerConfigError::BlockSize(szx) => {
                write!(
                    f,
                    "coap.blockSzx must be at most 6 (1024-byte blocks), not {szx}"
                )
            }
        }
    }
}

impl std::error::Error for ServerConfigError {}

impl ServerConfig {
    /// Checks the settings that would leave the server inert or overflow its clock:
    ///
    /// - counts at least 1: `nstart`, `maxRegistrations`, `queueCapacity`, and of
    ///   `coap`: `nstart` (with 0 nothing is sent), `maxQueuedPerPeer` (a takeover
    ///   probe of an address with a request in flight could not be sent), `maxPeers`
    ///   (every datagram dropped), `maxOutstandingRequests` (no request can be sent),
    ///   `maxPendingRequests` and `maxPendingRequestsPerPeer` (every Register answered
    ///   5.03), `maxBodySize` (every Write refused);
    /// - durations above zero: `queueTimeoutMs`, `awakeWindowMs`,
    ///   `takeover.probeTimeoutMs` (a probe nobody can answer: use `replace`), and of
    ///   `coap`: `ackTimeoutMs` and `responseTimeoutMs` (every request would fail at
    ///   once);
    /// - every duration, `lifetimeGraceMs` and `coap`'s included, at most
    ///   [`MAX_CONFIG_DURATION`];
    /// - `coap.blockSzx` at most 6;
    /// - `coap.ackRandomFactor` at least 1.0, and `coap.ackTimeoutMs` times it at most
    ///   [`MAX_CONFIG_DURATION`] (a larger product panicked the server's thread at its
    ///   first confirmable request).
    ///
    /// The first setting found wrong is reported. [`UdpServer::bind`](super::UdpServer::bind),
    /// `Hub::bind_udp`, `Hub::bind_dtls` and `HubBuilder::build` call it and start nothing
    /// on a refusal; [`Lwm2mServer::new`](super::Lwm2mServer::new) does not (it cannot
    /// fail): a sans-IO user calls it first. `coap` is checked by
    /// [`EndpointConfig::validate`], each setting named as a member of `coap`. What the
    /// other bounds of `coap` do at 0 is documented on [`EndpointConfig`]; none of them
    /// stops the server.
    ///
    /// ```
    /// use twinhub::lwm2m::server::{ServerConfig, ServerConfigError};
    /// assert_eq!(ServerConfig::default().validate(), Ok(()));
    /// let inert = ServerConfig { nstart: 0, ..ServerConfig::default() };
    /// assert_eq!(inert.validate(), Err(ServerConfigError::Zero("nstart")));
    /// ```
    pub fn validate(&self) -> Result<(), ServerConfigError> {
        let counts = [
            ("nstart", self.nstart),
            ("maxRegistrations", self.max_registrations),
            ("queueCapacity", self.queue_capacity),
        ];
        if let Some((what, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(ServerConfigError::Zero(what));
        }
        let probe = match self.takeover {
            Takeover::ProbeOldAddress { probe_timeout } => Some(probe_timeout),
            Takeover::Replace => None,
        };
        // (name, value, must be above zero)
        let durations = [
            ("lifetimeGraceMs", Some(self.lifetime_grace), false),
            ("queueTimeoutMs", Some(self.queue_timeout), true),
            ("awakeWindowMs", Some(self.awake_window), true),
            ("takeover.probeTimeoutMs", probe, true),
        ];
        for (what, d, positive) in durations {
            let Some(d) = d else { continue };
            if positive && d.is_zero() {
                return Err(ServerConfigError::ZeroDuration(what));
            }
            if d > MAX_CONFIG_DURATION {
                return Err(ServerConfigError::TooLong(what));
            }
        }
        self.coap.check(true).map_err(|e| match e {
            EndpointConfigError::Zero(what) => ServerConfigError::Zero(what),
            EndpointConfigError::ZeroDuration(what) => ServerConfigError::ZeroDuration(what),
            EndpointConfigError::TooLong(what) => ServerConfigError::TooLong(what),
            EndpointConfigError::BlockSize(szx) => ServerConfigError::BlockSize(szx),
            EndpointConfigError::AckRandomFactor => ServerConfigError::AckRandomFactor,
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            auto_provision: false,
            lifetime_grace: Duration::from_secs(30),
            max_registrations: 1_000_000,
            takeover: Takeover::default(),
            queue_capacity: 16,
            queue_timeout: Duration::from_secs(600),
            awake_window: Duration::from_secs(93),
            nstart: 1,
            coap: EndpointConfig {
                max_peers: 1 << 20,
                max_dedup_entries: 1 << 18,
                max_pending_requests: 1 << 16,
                // Devices send the server small requests only (Register, Update,
                // De-register): a registration's size bound applies while its blocks
                // arrive, and no peer holds more than 64 KiB of unfinished uploads.
                block1_path_limits: vec![(vec!["rd".to_owned()], super::MAX_LINK_PAYLOAD)],
                max_block1_bytes_per_peer: 64 * 1024,
                ..EndpointConfig::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Day 45, item 2. Before: nothing checked the settings; `nstart: 0` (and the
    /// others below) was taken, and the server then sent nothing (or refused everything)
    /// without a word. Now each is refused, named as in JSON; the defaults and the
    /// bounds themselves pass.
    #[test]
    fn validate_refuses_what_leaves_the_server_inert() {
        type Change = fn(&mut ServerConfig);
        let refused: [(Change, ServerConfigError); 14] = [
            (|c| c.nstart = 0, ServerConfigError::Zero("nstart")),
            (
                |c| c.max_registrations = 0,
                ServerConfigError::Zero("maxRegistrations"),
            ),
            (
                |c| c.queue_capacity = 0,
                ServerConfigError::Zero("queueCapacity"),
            ),
            (
                |c| c.coap.nstart = 0,
                ServerConfigError::Zero("coap.nstart"),
            ),
            (
                |c| c.coap.max_peers = 0,
                ServerConfigError::Zero("coap.maxPeers"),
            ),
            (
                |c| c.coap.max_outstanding_requests = 0,
                ServerConfigError::Zero("coap.maxOutstandingRequests"),
            ),
            // Day 46, item 4: taken before (a takeover probe of an address with a
            // request in flight could not be sent; every Write refused).
            (
                |c| c.coap.max_queued_per_peer = 0,
                ServerConfigError::Zero("coap.maxQueuedPerPeer"),
            ),
            (
                |c| c.coap.max_body_size = 0,
                ServerConfigError::Zero("coap.maxBodySize"),
            ),
            (
                |c| c.coap.max_pending_requests = 0,
                ServerConfigError::Zero("coap.maxPendingRequests"),
            ),
            (
                |c| c.coap.max_pending_requests_per_peer = 0,
                ServerConfigError::Zero("coap.maxPendingRequestsPerPeer"),
            ),
            (|c| c.coap.block_szx = 7, ServerConfigError::BlockSize(7)),
            (
                |c| c.coap.ack_random_factor = 0.5,
                ServerConfigError::AckRandomFactor,
            ),
            (
                |c| c.coap.ack_random_factor = f64::NAN,
                ServerConfigError::AckRandomFactor,
            ),
            (
                |c| c.coap.ack_random_factor = 1e300,
                ServerConfigError::AckRandomFactor,
            ),
        ];
        type Set = fn(&mut ServerConfig, Duration);
        // Every duration setting: (name, setter, must be above zero).
        let durations: [(&str, Set, bool); 12] = [
            ("lifetimeGraceMs", |c, d| c.lifetime_grace = d, false),
            ("queueTimeoutMs", |c, d| c.queue_timeout = d, true),
            ("awakeWindowMs", |c, d| c.awake_window = d, true),
            (
                "takeover.probeTimeoutMs",
                |c, d| c.takeover = Takeover::ProbeOldAddress { probe_timeout: d },
                true,
            ),
            ("coap.ackTimeoutMs", |c, d| c.coap.ack_timeout = d, true),
            (
                "coap.responseTimeoutMs",
                |c, d| c.coap.response_timeout = d,
                true,
            ),
            (
                "coap.exchangeLifetimeMs",
                |c, d| c.coap.exchange_lifetime = d,
                false,
            ),
            ("coap.nonLifetimeMs", |c, d| c.coap.non_lifetime = d, false),
            (
                "coap.piggybackWindowMs",
                |c, d| c.coap.piggyback_window = d,
                false,
            ),
            (
                "coap.pendingRequestLifetimeMs",
                |c, d| c.coap.pending_request_lifetime = d,
                false,
            ),
            (
                "coap.blockTransferLifetimeMs",
                |c, d| c.coap.block_transfer_lifetime = d,
                false,
            ),
            (
                "coap.conNotificationIntervalMs",
                |c, d| c.coap.con_notification_interval = d,
                false,
            ),
        ];
        let validated = |change: &dyn Fn(&mut ServerConfig)| {
            let mut c = ServerConfig::default();
            change(&mut c);
            c.validate()
        };
        let refuses = |change: &dyn Fn(&mut ServerConfig), expected: ServerConfigError| {
            assert_eq!(validated(change), Err(expected));
            // The message names the setting.
            let named = match expected {
                ServerConfigError::Zero(what)
                | ServerConfigError::ZeroDuration(what)
                | ServerConfigError::TooLong(what) => what,
                ServerConfigError::BlockSize(_) => "coap.blockSzx",
                ServerConfigError::AckRandomFactor => "coap.ackRandomFactor",
            };
            assert!(expected.to_string().contains(named), "{expected}");
        };
        assert_eq!(ServerConfig::default().validate(), Ok(()));
        for (change, expected) in refused {
            refuses(&change, expected);
        }
        for (what, set, positive) in durations {
            if positive {
                refuses(
                    &|c| set(c, Duration::ZERO),
                    ServerConfigError::ZeroDuration(what),
                );
            } else {
                assert_eq!(
                    validated(&|c| set(c, Duration::ZERO)),
                    Ok(()),
                    "{what} zero"
                );
            }
            let just_over = MAX_CONFIG_DURATION + Duration::from_millis(1);
            refuses(&|c| set(c, just_over), ServerConfigError::TooLong(what));
            refuses(&|c| set(c, Duration::MAX), ServerConfigError::TooLong(what));
        }
        // At the bounds: taken.
        let edge = ServerConfig {
            nstart: 1,
            max_registrations: 1,
            queue_capacity: 1,
            lifetime_grace: Duration::ZERO,
            queue_timeout: MAX_CONFIG_DURATION,
            awake_window: Duration::from_millis(1),
            takeover: Takeover::Replace,
            coap: EndpointConfig {
                block_szx: 6,
                ack_random_factor: 1.0,
                ..ServerConfig::default().coap
            },
            ..ServerConfig::default()
        };
        assert_eq!(edge.validate(), Ok(()));
        // A configuration read from JSON is checked the same way.
        let json: ServerConfig = serde_json::from_str(r#"{"nstart":0}"#).unwrap();
        assert_eq!(json.validate(), Err(ServerConfigError::Zero("nstart")));
    }

    /// Checks: the takeover policy, a member of the hand-written server (and hub)
    /// configuration, refuses members it does not know, as the rest of it does.
    /// Before the fix: `{"policy": "probeOldAddress", "probeTimeoutMs": 100, "retries": 3}`
    /// and `{"policy": "replace", "probeTimeoutMs": 100}` were taken, the extra member
    /// dropped without a word.
    #[test]
    fn takeover_refuses_unknown_members() {
        let probe: Takeover =
            serde_json::from_str(r#"{"policy":"probeOldAddress","probeTimeoutMs":100}"#).unwrap();
        assert_eq!(
            probe,
            Takeover::ProbeOldAddress {
                probe_timeout: Duration::from_millis(100)
            }
        );
        let replace: Takeover = serde_json::from_str(r#"{"policy":"replace"}"#).unwrap();
        assert_eq!(replace, Takeover::Replace);
        for bad in [
            r#"{"policy":"probeOldAddress","probeTimeoutMs":100,"retries":3}"#,
            r#"{"policy":"replace","probeTimeoutMs":100}"#,
        ] {
            let e = serde_json::from_str::<Takeover>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("unknown field"), "{bad}: {e}");
        }
        let e = serde_json::from_str::<ServerConfig>(
            r#"{"takeover":{"policy":"replace","probeTimeoutMS":1}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("probeTimeoutMS"), "{e}");
        // What the configuration writes, it reads back.
        for t in [Takeover::Replace, Takeover::default()] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Takeover>(&json).unwrap(), t);
        }
    }
}
