//! Transmission parameters and bounds of an [`Endpoint`](super::Endpoint).

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
    /// per-peer queue, 1.
    pub nstart: usize,
    /// Bound of the per-peer queue of requests waiting for NSTART, 256.
    pub max_queued_per_peer: usize,
    /// Peers with state at once; datagrams from further peers are dropped, 16,384.
    pub max_peers: usize,
    /// Duplicate-detection entries in total; the oldest is forgotten first, 65,536.
    pub max_dedup_entries: usize,
    /// Duplicate-detection entries per peer; the peer's oldest is forgotten first, 1,024.
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
