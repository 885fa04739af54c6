//! Transmission parameters and bounds of an [`Endpoint`](super::Endpoint).

use crate::time::MAX_CONFIG_DURATION;
use std::time::Duration;

/// Transmission parameters (RFC 7252 §4.8) and the bounds that keep an endpoint's memory
/// finite. `Default` gives the RFC's values and bounds sized for a server with thousands
/// of peers.
///
/// ```
/// use std::time::Duration;
/// use twinhub::coap::EndpointConfig;
/// let c = EndpointConfig::default();
/// assert_eq!(c.ack_timeout, Duration::from_secs(2));
/// assert_eq!(c.max_retransmit, 4);
/// assert_eq!(c.exchange_lifetime, Duration::from_secs(247));
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointConfig {
    /// ACK_TIMEOUT: the first retransmission timeout, 2 s.
    #[serde(with = "crate::time::millis", rename = "ackTimeoutMs")]
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR: the first timeout is drawn from `[ack_timeout, ack_timeout * f]`, 1.5.
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT: retransmissions of a CON message before giving up, 4.
    pub max_retransmit: u32,
    /// EXCHANGE_LIFETIME: how long a CON's (peer, message id) is remembered for duplicate
    /// detection, 247 s.
    #[serde(with = "crate::time::millis", rename = "exchangeLifetimeMs")]
    pub exchange_lifetime: Duration,
    /// NON_LIFETIME: the same for NON messages, 145 s.
    #[serde(with = "crate::time::millis", rename = "nonLifetimeMs")]
    pub non_lifetime: Duration,
    /// How long a request we sent waits for its response: counted from `send_request`
    /// while it waits in the NSTART queue, then again from its first transmission, and
    /// restarted at every block of a block-wise transfer; 93 s (MAX_TRANSMIT_WAIT). A CON
    /// request also fails earlier when its retransmissions run out.
    #[serde(with = "crate::time::millis", rename = "responseTimeoutMs")]
    pub response_timeout: Duration,
    /// How long an incoming CON request waits for the application's response before the
    /// endpoint sends an empty ACK and the response goes out later as a separate CON
    /// response, 1 s (well inside the peer's ACK_TIMEOUT).
    #[serde(with = "crate::time::millis", rename = "piggybackWindowMs")]
    pub piggyback_window: Duration,
    /// NSTART: CON requests in flight (unacknowledged) to one peer; more wait in a
    /// per-peer queue, 1. At least 1 ([`EndpointConfig::validate`]).
    pub nstart: usize,
    /// Bound of the per-peer queue of requests waiting for NSTART, 256; a request that
    /// would wait beyond it fails at once (`SendError::PeerQueueFull`), and a request
    /// moved to a peer whose queue is full is not moved. At least 1
    /// ([`EndpointConfig::validate`]): with 0 nothing could wait behind a request in
    /// flight (the LWM2M server's takeover probe of an address with a request in flight
    /// could not be sent).
    pub max_queued_per_peer: usize,
    /// Peers with state at once; datagrams from further peers are dropped, 16,384.
    pub max_peers: usize,
    /// Duplicate-detection entries in total; the oldest is forgotten first, 65,536. At 0
    /// only the newest message is remembered.
    pub max_dedup_entries: usize,
    /// Duplicate-detection entries per peer; the peer's oldest is forgotten first, 1,024.
    /// At 0 only the peer's newest message is remembered.
    pub max_dedup_entries_per_peer: usize,
    /// Incoming requests handed to the application and not yet answered, in total; a CON
    /// request beyond this gets 5.03 Service Unavailable, a NON one is dropped, 4,096.
    pub max_pending_requests: usize,
    /// The same per peer, 64.
    pub max_pending_requests_per_peer: usize,
    /// How long an incoming request waits for the application before it is forgotten
    /// (a later `respond` fails), 247 s.
    #[serde(with = "crate::time::millis", rename = "pendingRequestLifetimeMs")]
    pub pending_request_lifetime: Duration,
    /// Requests we sent (in flight or queued) and observations we hold, in total, 65,536.
    pub max_outstanding_requests: usize,
    /// Block size exponent we use and prefer (RFC 7959): block size `2^(szx+4)`, 6 = 1024.
    pub block_szx: u8,
    /// Largest body reassembled from blocks (Block1 requests we receive, Block2 responses
    /// we download); larger ones get 4.13 or fail with `BodyTooLarge`, 1 MiB.
    pub max_body_size: usize,
    /// Block-wise transfers held at once (Block1 reassemblies plus sliced Block2 bodies
    /// kept for the follow-up requests); the oldest is dropped first, 256.
    pub max_block_transfers: usize,
    /// How long an idle block-wise transfer is kept, 120 s.
    #[serde(with = "crate::time::millis", rename = "blockTransferLifetimeMs")]
    pub block_transfer_lifetime: Duration,
    /// Bytes held in unfinished Block1 reassemblies, all peers together; a block that
    /// would pass it gets 5.03 Service Unavailable (Max-Age 1) and its transfer is
    /// dropped, 16 MiB.
    pub max_block1_bytes: usize,
    /// The same per peer; a block that would pass it gets 4.13 Request Entity Too Large
    /// (Size1: the bound) and its transfer is dropped, 1 MiB.
    pub max_block1_bytes_per_peer: usize,
    /// Smaller body limits by URI path prefix, applied while reassembling (and to the
    /// Size1 a client announces), not after: a request whose path starts with the
    /// segments of an entry may carry at most its bytes (the first matching entry wins;
    /// 4.13 with Size1 beyond it). Empty by default; the LWM2M server limits `/rd` to the
    /// registration payload bound.
    pub block1_path_limits: Vec<(Vec<String>, usize)>,
    /// Observers (server role) held at once; a further registration is answered as a
    /// plain response (no Observe option), 65,536.
    pub max_observers: usize,
    /// A notification goes out CON at least this often per observer (RFC 7641 §4.5), 24 h.
    #[serde(with = "crate::time::millis", rename = "conNotificationIntervalMs")]
    pub con_notification_interval: Duration,
}

/// Why [`EndpointConfig::validate`] refused a configuration. Each names the setting by
/// its JSON member (`nstart`, `maxQueuedPerPeer`, `ackTimeoutMs`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EndpointConfigError {
    /// A count is 0 that must be at least 1: with it the endpoint would send nothing,
    /// take no datagram, or refuse every request.
    Zero(&'static str),
    /// A time-out is zero that must be above it: every request would time out at once.
    ZeroDuration(&'static str),
    /// A duration is longer than [`MAX_CONFIG_DURATION`].
    TooLong(&'static str),
    /// `blockSzx` is above 6 (1024-byte blocks): 7 is reserved (RFC 7959 §2.2), and a
    /// larger one is no block size.
    BlockSize(u8),
    /// `ackRandomFactor` is below 1.0 (RFC 7252 §4.8), not a number, or so large that
    /// `ackTimeoutMs` times it passes [`MAX_CONFIG_DURATION`] (the first retransmission
    /// time-out is drawn up to that product; one out of `Duration`'s range panics the
    /// thread that sends the request).
    AckRandomFactor,
}

impl std::fmt::Display for EndpointConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointConfigError::Zero(what) => write!(f, "{what} must be at least 1"),
            EndpointConfigError::ZeroDuration(what) => write!(f, "{what} must be above zero"),
            EndpointConfigError::TooLong(what) => write!(
                f,
                "{what} must be at most {} ms (a year)",
                MAX_CONFIG_DURATION.as_millis()
            ),
            EndpointConfigError::BlockSize(szx) => write!(
                f,
                "blockSzx must be at most 6 (1024-byte blocks), not {szx}"
            ),
            EndpointConfigError::AckRandomFactor => write!(
                f,
                "ackRandomFactor must be at least 1.0, and ackTimeoutMs times it at most {} ms (a year)",
                MAX_CONFIG_DURATION.as_millis()
            ),
        }
    }
}

impl std::error::Error for EndpointConfigError {}

impl EndpointConfig {
    /// Checks the settings that would leave the endpoint inert or overflow its clock:
    ///
    /// - counts at least 1: `nstart` (with 0 no request is sent), `maxQueuedPerPeer`
    ///   (nothing could wait behind a request in flight), `maxPeers` (every datagram
    ///   dropped), `maxOutstandingRequests` (no request can be sent),
    ///   `maxPendingRequests` and `maxPendingRequestsPerPeer` (every request refused),
    ///   `maxBodySize` (every request with a body refused);
    /// - `ackTimeoutMs` and `responseTimeoutMs` above zero (every request would fail at
    ///   once);
    /// - every duration at most [`MAX_CONFIG_DURATION`];
    /// - `blockSzx` at most 6;
    /// - `ackRandomFactor` at least 1.0, and `ackTimeoutMs` times it at most
    ///   [`MAX_CONFIG_DURATION`].
    ///
    /// The first setting found wrong is reported.
    /// [`UdpDriver::bind`](crate::coap::UdpDriver::bind) calls it and starts nothing on a
    /// refusal; [`Endpoint::new`](super::Endpoint::new) does not (it cannot fail): a
    /// sans-IO user calls it first. The other bounds (`maxDedupEntries`,
    /// `maxBlockTransfers`, `maxObservers`, ...) and `maxRetransmit` may be 0: each says
    /// what happens at its bound. The LWM2M server's `ServerConfig::validate` checks its
    /// `coap` member with this.
    ///
    /// ```
    /// use twinhub::coap::{EndpointConfig, EndpointConfigError};
    /// assert_eq!(EndpointConfig::default().validate(), Ok(()));
    /// let c = EndpointConfig { max_queued_per_peer: 0, ..EndpointConfig::default() };
    /// assert_eq!(c.validate(), Err(EndpointConfigError::Zero("maxQueuedPerPeer")));
    /// ```
    pub fn validate(&self) -> Result<(), EndpointConfigError> {
        self.check(false)
    }

    /// [`Self::validate`], naming each setting as a member of a configuration's `coap`
    /// (`coap.nstart`) when `in_coap`.
    pub(crate) fn check(&self, in_coap: bool) -> Result<(), EndpointConfigError> {
        let name = |(plain, nested): (&'static str, &'static str)| {
            if in_coap { nested } else { plain }
        };
        let counts = [
            (("nstart", "coap.nstart"), self.nstart),
            (
                ("maxQueuedPerPeer", "coap.maxQueuedPerPeer"),
                self.max_queued_per_peer,
            ),
            (("maxPeers", "coap.maxPeers"), self.max_peers),
            (
                ("maxOutstandingRequests", "coap.maxOutstandingRequests"),
                self.max_outstanding_requests,
            ),
            (
                ("maxPendingRequests", "coap.maxPendingRequests"),
                self.max_pending_requests,
            ),
            (
                (
                    "maxPendingRequestsPerPeer",
                    "coap.maxPendingRequestsPerPeer",
                ),
                self.max_pending_requests_per_peer,
            ),
            (("maxBodySize", "coap.maxBodySize"), self.max_body_size),
        ];
        if let Some((what, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(EndpointConfigError::Zero(name(*what)));
        }
        // (names, value, must be above zero)
        let durations = [
            (
                ("ackTimeoutMs", "coap.ackTimeoutMs"),
                self.ack_timeout,
                true,
            ),
            (
                ("responseTimeoutMs", "coap.responseTimeoutMs"),
                self.response_timeout,
                true,
            ),
            (
                ("exchangeLifetimeMs", "coap.exchangeLifetimeMs"),
                self.exchange_lifetime,
                false,
            ),
            (
                ("nonLifetimeMs", "coap.nonLifetimeMs"),
                self.non_lifetime,
                false,
            ),
            (
                ("piggybackWindowMs", "coap.piggybackWindowMs"),
                self.piggyback_window,
                false,
            ),
            (
                ("pendingRequestLifetimeMs", "coap.pendingRequestLifetimeMs"),
                self.pending_request_lifetime,
                false,
            ),
            (
                ("blockTransferLifetimeMs", "coap.blockTransferLifetimeMs"),
                self.block_transfer_lifetime,
                false,
            ),
            (
                (
                    "conNotificationIntervalMs",
                    "coap.conNotificationIntervalMs",
                ),
                self.con_notification_interval,
                false,
            ),
        ];
        for (what, d, positive) in durations {
            if positive && d.is_zero() {
                return Err(EndpointConfigError::ZeroDuration(name(what)));
            }
            if d > MAX_CONFIG_DURATION {
                return Err(EndpointConfigError::TooLong(name(what)));
            }
        }
        if self.block_szx > 6 {
            return Err(EndpointConfigError::BlockSize(self.block_szx));
        }
        // (Written so that NaN is refused too.)
        let factor = self.ack_random_factor;
        if !(factor >= 1.0
            && self.ack_timeout.as_secs_f64() * factor <= MAX_CONFIG_DURATION.as_secs_f64())
        {
            return Err(EndpointConfigError::AckRandomFactor);
        }
        Ok(())
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            exchange_lifetime: Duration::from_secs(247),
            non_lifetime: Duration::from_secs(145),
            response_timeout: Duration::from_secs(93),
            piggyback_window: Duration::from_secs(1),
            nstart: 1,
            max_queued_per_peer: 256,
            max_peers: 16_384,
            max_dedup_entries: 65_536,
            max_dedup_entries_per_peer: 1024,
            max_pending_requests: 4096,
            max_pending_requests_per_peer: 64,
            pending_request_lifetime: Duration::from_secs(247),
            max_outstanding_requests: 65_536,
            block_szx: 6,
            max_body_size: 1 << 20,
            max_block_transfers: 256,
            block_transfer_lifetime: Duration::from_secs(120),
            max_block1_bytes: 16 << 20,
            max_block1_bytes_per_peer: 1 << 20,
            block1_path_limits: Vec::new(),
            max_observers: 65_536,
            con_notification_interval: Duration::from_secs(24 * 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Day 46, item 4. Before: `EndpointConfig` had no validation; a standalone endpoint
    /// (`UdpDriver::bind`) took `nstart: 0` (sent nothing), `maxQueuedPerPeer: 0`
    /// (nothing could wait behind a request in flight) or an `ackTimeoutMs` of
    /// `Duration::MAX` (a panic on the driver's thread at its first request). Now each is
    /// refused, named as in JSON, and `UdpDriver::bind` refuses it before binding; the
    /// defaults and the bounds themselves pass.
    #[test]
    fn validate_refuses_what_leaves_the_endpoint_inert() {
        type Change = fn(&mut EndpointConfig);
        let refused: [(Change, EndpointConfigError); 10] = [
            (|c| c.nstart = 0, EndpointConfigError::Zero("nstart")),
            (
                |c| c.max_queued_per_peer = 0,
                EndpointConfigError::Zero("maxQueuedPerPeer"),
            ),
            (|c| c.max_peers = 0, EndpointConfigError::Zero("maxPeers")),
            (
                |c| c.max_body_size = 0,
                EndpointConfigError::Zero("maxBodySize"),
            ),
            (
                |c| c.ack_timeout = Duration::ZERO,
                EndpointConfigError::ZeroDuration("ackTimeoutMs"),
            ),
            (
                |c| c.ack_timeout = Duration::MAX,
                EndpointConfigError::TooLong("ackTimeoutMs"),
            ),
            (
                |c| c.con_notification_interval = Duration::MAX,
                EndpointConfigError::TooLong("conNotificationIntervalMs"),
            ),
            (|c| c.block_szx = 7, EndpointConfigError::BlockSize(7)),
            (
                |c| c.ack_random_factor = f64::NAN,
                EndpointConfigError::AckRandomFactor,
            ),
            (
                |c| c.ack_random_factor = 0.99,
                EndpointConfigError::AckRandomFactor,
            ),
        ];
        assert_eq!(EndpointConfig::default().validate(), Ok(()));
        for (change, expected) in refused {
            let mut c = EndpointConfig::default();
            change(&mut c);
            assert_eq!(c.validate(), Err(expected));
            let named = match expected {
                EndpointConfigError::Zero(what)
                | EndpointConfigError::ZeroDuration(what)
                | EndpointConfigError::TooLong(what) => what,
                EndpointConfigError::BlockSize(_) => "blockSzx",
                EndpointConfigError::AckRandomFactor => "ackRandomFactor",
            };
            assert!(expected.to_string().contains(named), "{expected}");
            let bound = crate::coap::UdpDriver::bind("127.0.0.1:0", c);
            assert_eq!(
                bound.err().map(|e| e.kind()),
                Some(std::io::ErrorKind::InvalidInput)
            );
        }
        // At the bounds: taken.
        let edge = EndpointConfig {
            nstart: 1,
            max_queued_per_peer: 1,
            max_dedup_entries: 0,
            max_retransmit: 0,
            ack_timeout: Duration::from_millis(1),
            exchange_lifetime: MAX_CONFIG_DURATION,
            block_szx: 6,
            ack_random_factor: 1.0,
            ..EndpointConfig::default()
        };
        assert_eq!(edge.validate(), Ok(()));
        let json: EndpointConfig = serde_json::from_str(r#"{"maxQueuedPerPeer":0}"#).unwrap();
        assert_eq!(
            json.validate(),
            Err(EndpointConfigError::Zero("maxQueuedPerPeer"))
        );
    }
}
