//! The server's settings and its authorization hook.

use super::RegistrationRequest;
use crate::coap::EndpointConfig;
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
    /// How long past its lifetime a registration survives before it expires.
    #[serde(with = "crate::time::millis", rename = "lifetimeGraceMs")]
    pub lifetime_grace: Duration,
    /// Most registrations held at once; further Registers get 5.03.
    pub max_registrations: usize,
    /// What a Register from another address does to a live registration of the same
    /// endpoint (default: probe the old address for 5 s).
    pub takeover: Takeover,
    /// Most operations waiting per device (queue mode, or behind the one in flight).
    pub queue_capacity: usize,
    /// How long an operation may wait in a device's queue before it times out.
    #[serde(with = "crate::time::millis", rename = "queueTimeoutMs")]
    pub queue_timeout: Duration,
    /// How long a queue-mode device stays reachable after it last talked
    /// (LWM2M: MAX_TRANSMIT_WAIT, 93 s).
    #[serde(with = "crate::time::millis", rename = "awakeWindowMs")]
    pub awake_window: Duration,
    /// Requests in flight per device at once (CoAP NSTART, 1): sent and not answered
    /// yet. The CoAP layer's own [`EndpointConfig::nstart`] (`coap.nstart`, 1) bounds the
    /// requests unacknowledged per address too, and a request leaves the device's queue
    /// only when the CoAP layer sends it at once: set above `coap.nstart`, the lower of
    /// the two holds, and the others wait in the device's queue (reported
    /// [`Sent`](crate::transport::DeviceEvent::Sent) when they go, counted against
    /// [`queue_capacity`](Self::queue_capacity) and
    /// [`queue_timeout`](Self::queue_timeout)). 0 sends nothing: every request waits
    /// until it times out.
    pub nstart: usize,
    /// The CoAP message layer's settings (timers, bounds, block size). The server's
    /// default raises the peer and duplicate-detection bounds for large fleets, limits a
    /// Block1 registration to [`MAX_LINK_PAYLOAD`](super::MAX_LINK_PAYLOAD) while it is
    /// reassembled, and a peer's unfinished uploads to 64 KiB.
    pub coap: EndpointConfig,
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
