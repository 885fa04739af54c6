//! [`Lwm2mClient`]: the sans-IO client core. Registration engine, request serving,
//! notifications and the firmware package download, over the CoAP codec.
//!
//! The core speaks CoAP itself at message level (CON retransmission of its own requests,
//! duplicate detection of the server's, Block1 reassembly, Block2 slicing and fetching)
//! with small, bounded tables sized for one server: an idle client stays a few kilobytes.

use super::attributes::{AttributeChange, AttributeTable, NotifyTimer, parse_attributes};
use super::firmware::{CoapUri, UpdateResult, UpdateState, parse_coap_uri};
use super::formats;
use super::model::{ObjectError, ResourceData, coerce, numeric};
use super::tree::ObjectTree;
use crate::coap::{BlockOption, Code, ContentFormat, Message, MessageType, OptionNumber, Token};
use crate::lwm2m::content::{ContentError, ContentFormat as Format};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue};
use crate::transport::WriteMode;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// RFC 7252 EXCHANGE_LIFETIME: how long a duplicate request is answered from the cache.
pub(super) const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// RFC 7252 MAX_TRANSMIT_WAIT: how long to wait for a separate response after an empty ACK.
const MAX_TRANSMIT_WAIT: Duration = Duration::from_secs(93);
/// RFC 7641 §4.5: a notification is sent confirmable at least this often.
const CONFIRMABLE_NOTIFY_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Cached responses for duplicate detection, a peer (the LWM2M server's and the bootstrap
/// server's kept apart, so that the first requests of the server a device registers with
/// do not push out the answer to a Bootstrap-Finish the bootstrap server may retransmit):
/// the peer's next answer pushes out its oldest. Twice this in all: a third peer's
/// answers push out the oldest of all (see the module docs of `lwm2m::client`).
const DEDUP_ENTRIES: usize = 8;
/// Registers refused or lost in a row after which a client with a bootstrap server
/// bootstraps again (LwM2M 1.1's default sequence: 5 attempts).
const REGISTER_ATTEMPTS_BEFORE_BOOTSTRAP: u32 = 5;
/// Queued events / datagrams kept when the application does not drain them (oldest dropped).
const QUEUE_BOUND: usize = 256;
/// The Firmware Update object's Package resource, which a server may push block-wise.
const PACKAGE: Lwm2mPath = Lwm2mPath::resource(5, 0, 0);

/// The LwM2M version a client registers as ([`ClientConfig::version`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientVersion {
    /// LwM2M 1.0 (`lwm2m=1.0`; queue mode as binding `UQ`).
    V1_0,
    /// LwM2M 1.1 (`lwm2m=1.1`; queue mode as the `Q` parameter): the default.
    #[default]
    V1_1,
}

/// How a client is set up. [`ClientConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The endpoint name (`ep`), unique per device.
    pub endpoint: String,
    /// The LWM2M server's address; requests from any other address are ignored.
    pub server: SocketAddr,
    /// Registration lifetime in seconds when there is no Server object /1 (else /1/0/1).
    pub lifetime: u32,
    /// Queue mode (`Q`): the server should hold requests until the device talks. A
    /// Server object whose Binding (`/1/0/7`) is `UQ` asks for it too.
    pub queue_mode: bool,
    /// The LwM2M version the client registers as (default 1.1). 1.0 is for a server
    /// that refuses a 1.1 client (LwM2M 1.1 §6.2.1 lets it answer 4.12): the Register
    /// then says `lwm2m=1.0` and asks for queue mode as 1.0 does, with binding `b=UQ`
    /// (1.1 says `b=U` and `Q`). The client serves the same requests either way; a 1.0
    /// server does not send the 1.1 ones (composite operations, Send's Mute).
    pub version: ClientVersion,
    /// CoAP ACK_TIMEOUT for the client's own requests.
    pub ack_timeout: Duration,
    /// CoAP MAX_RETRANSMIT.
    pub max_retransmit: u8,
    /// Send every notification confirmable (CON), retransmitted until the server
    /// acknowledges it, instead of non-confirmable (NON) with one CON at least every 24
    /// hours (RFC 7641 §4.5). Costs an ACK per notification; a notification lost on the
    /// way is then sent again rather than waiting for the next change or `pmax`. While
    /// one is unacknowledged, a newer notification of the same observation waits and
    /// replaces it at its next retransmission, or goes out when it is acknowledged (RFC
    /// 7641 §4.5.2: one in flight per observation); one that stays unacknowledged after
    /// `max_retransmit` retransmissions raises [`ClientEvent::NotificationTimedOut`] and a
    /// registration Update (see there). Default `false`, as in most LwM2M clients.
    pub confirmable_notifications: bool,
    /// First wait before re-registering after a failure; doubles with each failure in a
    /// row, up to `retry_max`. Each wait is also stretched by a random factor in [1, 1.5),
    /// so that devices that failed together (a server that went away for all of them)
    /// do not all come back at the same instant.
    pub retry_initial: Duration,
    /// Longest wait between registration attempts.
    pub retry_max: Duration,
    /// Most concurrent observations (more are answered without Observe).
    pub max_observations: usize,
    /// Block size for Block2 responses and downloads (16..=1024).
    pub block_size: usize,
    /// Largest request body reassembled from Block1, in bytes (past it: 4.13 with Size1),
    /// and largest package downloaded, block-wise or in one answer (past it the download
    /// fails with Update Result 2, not enough flash).
    pub max_body: usize,
    /// PSK credentials: when set, [`DeviceThread`](super::DeviceThread) talks to the server
    /// over DTLS 1.2 (`coaps`, `TLS_PSK_WITH_AES_128_CCM_8`). Set with
    /// [`ClientConfig::with_psk`].
    #[cfg(feature = "dtls")]
    pub psk: Option<crate::dtls::PskCredentials>,
    /// A bootstrap server to ask first (client-initiated bootstrap over plain CoAP, or
    /// DTLS with `ClientConfig::with_bootstrap_psk`, feature `dtls`): the
    /// client sends Bootstrap-Request there, takes the server accounts it writes, and at
    /// Bootstrap-Finish registers with the server they name (see
    /// [`ClientConfig::with_bootstrap`]). `None`: register with `server` at once.
    pub bootstrap: Option<SocketAddr>,
    /// PSK credentials for the bootstrap server: when set, [`DeviceThread`](super::DeviceThread)
    /// bootstraps over DTLS (`coaps`). Set with [`ClientConfig::with_bootstrap_psk`].
    #[cfg(feature = "dtls")]
    pub bootstrap_psk: Option<crate::dtls::PskCredentials>,
    /// How long a bootstrap may take from the request to Bootstrap-Finish before the
    /// client gives up and asks again (after its retry backoff).
    pub bootstrap_timeout: Duration,
}

impl ClientConfig {
    /// Defaults: lifetime 300 s, no queue mode, LwM2M 1.1, ACK_TIMEOUT 2 s, MAX_RETRANSMIT 4,
    /// non-confirmable notifications (one CON a day), retries
    /// from 5 s to 10 min, 32 observations, 1024-byte blocks, 4 MiB bodies.
    pub fn new(endpoint: impl Into<String>, server: SocketAddr) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            server,
            lifetime: 300,
            queue_mode: false,
            version: ClientVersion::V1_1,
            ack_timeout: Duration::from_secs(2),
            max_retransmit: 4,
            confirmable_notifications: false,
            retry_initial: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            max_observations: 32,
            block_size: 1024,
            max_body: 4 << 20,
            #[cfg(feature = "dtls")]
            psk: None,
            bootstrap: None,
            #[cfg(feature = "dtls")]
            bootstrap_psk: None,
            bootstrap_timeout: Duration::from_secs(60),
        }
    }

    /// Bootstraps first from the bootstrap server at `address` (plain CoAP, or DTLS with
    /// `ClientConfig::with_bootstrap_psk`, feature `dtls`): the tree needs a Security
    /// object and a Server object that the bootstrap server may write into
    /// ([`objects::bootstrap_security`](super::objects::bootstrap_security) and
    /// [`objects::unprovisioned_server`](super::objects::unprovisioned_server)). At
    /// Bootstrap-Finish the client takes the first Security instance that is not a
    /// bootstrap account and its Server instance: `server` becomes the address of its URI
    /// (`coap://` or `coaps://` with an IP address or `localhost`), and, for PSK security
    /// mode, `psk` its identity and key (feature `dtls`).
    pub fn with_bootstrap(mut self, address: SocketAddr) -> Self {
        self.bootstrap = Some(address);
        self
    }

    /// Bootstraps over DTLS (`coaps`) with these PSK credentials (the bootstrap server
    /// account's, which are not the LWM2M server's: those come from the bootstrap).
    #[cfg(feature = "dtls")]
    pub fn with_bootstrap_psk(mut self, credentials: crate::dtls::PskCredentials) -> Self {
        self.bootstrap_psk = Some(credentials);
        self
    }

    /// Talks to the server over DTLS with these PSK credentials (the server address is then
    /// its `coaps` port, conventionally 5684).
    ///
    /// ```
    /// use twinhub::dtls::{PskCredentials, PskKey};
    /// use twinhub::lwm2m::client::ClientConfig;
    /// let creds = PskCredentials::new("dev-1", PskKey::new(vec![1; 16])).unwrap();
    /// let config = ClientConfig::new("dev-1", "127.0.0.1:5684".parse().unwrap()).with_psk(creds);
    /// assert!(config.psk.is_some());
    /// ```
    #[cfg(feature = "dtls")]
    pub fn with_psk(mut self, credentials: crate::dtls::PskCredentials) -> Self {
        self.psk = Some(credentials);
        self
    }
}

/// A datagram for the driver to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The encoded CoAP message.
    pub payload: Vec<u8>,
}

/// Something the application may want to react to.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The server accepted the registration; `location` is the `rd/...` path it assigned.
    Registered {
        /// The registration's location path (`/rd/5a3f`).
        location: String,
    },
    /// A registration update (or keep-alive) was accepted.
    RegistrationUpdated,
    /// Registering or updating failed; another attempt follows after `retry_in`.
    RegistrationFailed {
        /// The server's answer, or `None` when it did not answer.
        code: Option<(u8, u8)>,
        /// When the next attempt goes out.
        retry_in: Duration,
    },
    /// The client de-registered (after [`Lwm2mClient::deregister`]).
    Deregistered,
    /// The server wrote values (the request's path).
    Written {
        /// The path of the write request.
        path: Lwm2mPath,
    },
    /// The server executed a resource (after the object's callback ran).
    Executed {
        /// The executed resource.
        path: Lwm2mPath,
        /// The argument text.
        args: String,
    },
    /// The server executed Device Reboot /3/0/4: the application should reboot. The
    /// answer (2.04) is queued before the event: a [`DeviceThread`](super::DeviceThread)
    /// has sent it when the event arrives; a loop of your own finds it in
    /// `poll_transmit`: send it before rebooting. Rebooting needs no De-register: the device
    /// registers anew when it comes back (a reboot job that waits for the registration
    /// sees it then).
    Reboot,
    /// The server executed Device Factory Reset /3/0/5. The library resets nothing: the
    /// application restores its factory settings (and restarts, if it must, as for
    /// [`ClientEvent::Reboot`]).
    FactoryReset,
    /// The server created an instance.
    Created {
        /// The new instance.
        path: Lwm2mPath,
    },
    /// The server deleted an instance.
    Deleted {
        /// The deleted instance.
        path: Lwm2mPath,
    },
    /// The server started observing a path.
    Observed {
        /// The observed path.
        path: Lwm2mPath,
    },
    /// A confirmable notification of the observation of `path` was not acknowledged
    /// after `max_retransmit` retransmissions. The client keeps the observation and sends
    /// a registration Update at once to learn whether the server is still there: if the
    /// Update is accepted, the current value is notified again (CON); if it fails, the
    /// client registers anew, which ends every observation (the server observes again).
    /// RFC 7641 lets a CoAP server drop such an observer; an LwM2M client has the
    /// registration to check instead, and dropping it silently would leave the server's
    /// copy stale. When that re-sent value times out too (the server answers Updates but
    /// not this observation), the observation ends (RFC 7641 §4.5), with this event
    /// again: no endless round of Updates and re-sends.
    NotificationTimedOut {
        /// The observed path (the root for an Observe-Composite).
        path: Lwm2mPath,
    },
    /// The server acknowledged a Send ([`Lwm2mClient::send`]) with 2.04.
    Sent,
    /// A Send was refused (the code) or got no answer (`None`).
    SendFailed {
        /// The server's response code, `None` when it never answered.
        code: Option<(u8, u8)>,
    },
    /// A firmware package download (Package URI) started.
    FirmwareDownloadStarted {
        /// The URI being fetched.
        uri: String,
    },
    /// A bootstrap server accepted the Bootstrap-Request; its writes follow.
    BootstrapStarted,
    /// Bootstrap-Finish: the client now registers with `server`.
    Bootstrapped {
        /// The LWM2M server the bootstrap server provisioned.
        server: SocketAddr,
        /// Whether the connection to it is secured with a provisioned PSK.
        secure: bool,
    },
    /// A Bootstrap-Finish was refused (4.06) because the accounts written do not make a
    /// usable server account; the text says what is missing.
    BootstrapRefused {
        /// What is wrong.
        reason: String,
    },
    /// A firmware package download ended (State and Update Result after it).
    FirmwareDownloadFinished {
        /// State after the download.
        state: UpdateState,
        /// Update Result after the download.
        result: UpdateResult,
    },
}

/// Why [`Lwm2mClient::send`] sent nothing.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SendError {
    /// Not registered (Send goes to the server the client is registered with).
    NotRegistered,
    /// The server muted Send: Mute Send (`/1/0/23`) is true.
    Muted,
    /// No path given, or a path with nothing to read.
    Nothing(Lwm2mPath),
    /// The values could not be encoded (too many, or too large for a datagram).
    Encode(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotRegistered => f.write_str("not registered"),
            SendError::Muted => f.write_str("the server muted Send (/1/0/23)"),
            SendError::Nothing(p) => write!(f, "nothing to send at {p}"),
            SendError::Encode(why) => write!(f, "cannot encode the values: {why}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`Lwm2mClient::set_value`] and friends refused.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The path does not name a resource of an existing instance.
    NoSuchResource(Lwm2mPath),
    /// The object refused the value.
    Object(ObjectError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoSuchResource(p) => write!(f, "no resource at {p}"),
            ClientError::Object(e) => write!(f, "object refused the value: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Object(e) => Some(e),
            ClientError::NoSuchResource(_) => None,
        }
    }
}

/// Where the registration engine is.
#[derive(Clone, PartialEq, Eq, Debug)]
enum RegState {
    /// Not registered; (re-)register (or bootstrap, until bootstrapped) at the instant.
    Idle { at: Instant },
    /// A Bootstrap-Request is out, or was accepted and the bootstrap server's writes are
    /// coming; given up at `deadline`.
    Bootstrapping { deadline: Instant },
    /// A Register request is out.
    Registering,
    /// Registered at `location`; update at `update_at` (or sooner when `update_due`).
    Registered {
        location: Vec<String>,
        update_at: Instant,
    },
    /// An Update request is out.
    Updating { location: Vec<String> },
    /// A De-register request is out.
    Deregistering,
    /// De-registered; nothing more happens.
    Stopped,
}

/// What an outstanding request of the client is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Purpose {
    Bootstrap,
    Register,
    Update,
    Deregister,
    Download,
    Send,
}

/// A CON request of the client, waiting for its response.
struct Outgoing {
    purpose: Purpose,
    token: Token,
    message_id: u16,
    destination: SocketAddr,
    bytes: Vec<u8>,
    retransmits: u8,
    wait: Duration,
    next: Instant,
    acked: bool,
}

/// One observation by the server.
struct Observation {
    token: Token,
    /// The observed path; the root for an Observe-Composite.
    path: Lwm2mPath,
    /// An Observe-Composite's paths (each notification reads them all).
    composite: Option<Vec<Lwm2mPath>>,
    format: u16,
    /// The format is the one the observer's Accept named: notifications stay in it (an
    /// error ends the observation when a value cannot be put in it, RFC 7641 §4.2), never
    /// falling back to TLV as those of an observation without Accept may.
    accepted: bool,
    seq: u32,
    timer: NotifyTimer,
    /// The message ids of its last notifications on the wire (newest first): an RST
    /// naming any of them cancels the observation (RFC 7641 §3.6), also one that answers
    /// a notification a newer one already followed.
    sent_ids: [Option<u16>; SENT_IDS],
    /// When the last confirmable notification went out (RFC 7641 §4.5: one at least every
    /// 24 hours, so a server that is gone is noticed by its RST or silence).
    last_confirmable: Instant,
    /// The confirmable notification not yet acknowledged (at most one an observation:
    /// a newer one waits behind it, see [`Unacked::newer`]).
    unacked: Option<Unacked>,
    /// The last confirmable notification timed out: the next notification goes CON, and
    /// is sent once a registration Update shows the server is there (if no change sends
    /// it sooner).
    renotify: bool,
    /// The notification in flight is that re-send after a timeout: if it times out too,
    /// the server answers Updates but not this observation's notifications, and the
    /// observation ends (RFC 7641 §4.5: an observer that does not acknowledge is removed).
    resent: bool,
}

/// How many recent notification message ids an observation remembers for RSTs.
const SENT_IDS: usize = 4;

impl Observation {
    /// A notification of this observation went out with message id `mid`.
    fn sent(&mut self, mid: u16) {
        self.sent_ids.rotate_right(1);
        self.sent_ids[0] = Some(mid);
    }
}

/// A confirmable notification waiting for its ACK, or for its turn to go out.
///
/// RFC 7641 §4.5.1: a server MUST NOT have more than NSTART (1) notifications
/// outstanding to a client. The client has one confirmable notification on the wire at
/// a time, whatever the observation; the others wait their turn (oldest first, see
/// [`Unacked::queued`]), each replaced in place by its observation's newer notification.
struct Unacked {
    /// The message on the wire: what an ACK or RST names, what is retransmitted.
    message_id: u16,
    bytes: Vec<u8>,
    /// `None` once on the wire; else its place in the queue for the wire (smaller goes
    /// first): it was not sent yet, has no timer, and nothing acknowledges it.
    queued: Option<u64>,
    retransmits: u8,
    wait: Duration,
    next: Instant,
    /// A newer notification of the observation, waiting to replace this one: it goes out
    /// at this one's next retransmission (with its counter and timer) or as soon as this
    /// one is acknowledged, so one notification at most is in flight per observation.
    newer: Option<(u16, Vec<u8>)>,
}

/// What a confirmable notification's timer says at a given moment.
enum Retransmit {
    /// Not due yet.
    Wait,
    /// Send these bytes (message id) again, or the newer notification in their place.
    Send(u16, Vec<u8>),
    /// Out of retransmissions: it was never acknowledged.
    GiveUp,
}

impl Unacked {
    fn new(message_id: u16, bytes: Vec<u8>, now: Instant, wait: Duration) -> Self {
        Unacked {
            message_id,
            bytes,
            queued: None,
            retransmits: 0,
            wait,
            next: now + wait,
            newer: None,
        }
    }

    /// One waiting for the wire, with its place in the queue.
    fn queued(message_id: u16, bytes: Vec<u8>, now: Instant, place: u64) -> Self {
        Unacked {
            queued: Some(place),
            ..Unacked::new(message_id, bytes, now, Duration::ZERO)
        }
    }

    /// Whether it was sent and waits for its ACK (not for its turn).
    fn on_wire(&self) -> bool {
        self.queued.is_none()
    }

    /// A newer notification of the same observation: it replaces a queued one in place
    /// (keeping its turn), or waits behind the one on the wire.
    fn replace(&mut self, message_id: u16, bytes: Vec<u8>) {
        if self.on_wire() {
            self.newer = Some((message_id, bytes));
        } else {
            self.message_id = message_id;
            self.bytes = bytes;
        }
    }

    /// Puts a queued one on the wire now: a fresh transmission.
    fn start(&mut self, now: Instant, wait: Duration) {
        self.queued = None;
        self.wait = wait;
        self.next = now + wait;
    }

    /// Advances the timer at `now` (RFC 7252 back-off; a newer notification takes the
    /// retransmission's place, RFC 7641 §4.5.2).
    fn step(&mut self, now: Instant, max_retransmit: u8) -> Retransmit {
        if !self.on_wire() || self.next > now {
            return Retransmit::Wait;
        }
        if self.retransmits >= max_retransmit {
            return Retransmit::GiveUp;
        }
        if let Some((mid, bytes)) = self.newer.take() {
            self.message_id = mid;
            self.bytes = bytes;
        }
        self.retransmits += 1;
        self.wait *= 2;
        self.next = now + self.wait;
        Retransmit::Send(self.message_id, self.bytes.clone())
    }

    /// The ACK for the message on the wire came: the newer notification waiting behind
    /// it, queued for the wire at `place` (behind those already waiting).
    fn acknowledged(self, now: Instant, place: u64) -> Option<Unacked> {
        self.newer
            .map(|(mid, bytes)| Unacked::queued(mid, bytes, now, place))
    }
}

/// A Block1 request being reassembled. Blocks are placed by byte offset (RFC 7959: block
/// number x block size), so a change of block size that would leave a gap or an overlap
/// is refused.
struct Block1 {
    key: String,
    body: Vec<u8>,
    /// Where the last appended block started, to recognise its retransmission.
    last_offset: usize,
    /// The total size the client announced (Size1), checked when the last block arrives.
    size1: Option<usize>,
}

/// A package download in progress.
struct Download {
    uri: CoapUri,
    body: Vec<u8>,
    next_num: u32,
    szx: u8,
    /// The first block's ETag: every later block must carry the same (RFC 7959 §2.4), or
    /// the package changed under the download and its blocks would be spliced.
    etag: Option<Vec<u8>>,
}

/// The sans-IO LWM2M client: one device, one server.
///
/// Drive it like every sans-IO machine in the crate, in this order:
///
/// 1. feed datagrams from the socket to [`Lwm2mClient::handle_datagram`];
/// 2. send every [`Lwm2mClient::poll_transmit`] until `None`;
/// 3. drain [`Lwm2mClient::poll_event`];
/// 4. sleep until [`Lwm2mClient::poll_timeout`] (or the next datagram), then call
///    [`Lwm2mClient::handle_timeout`] and go to 2.
///
/// The application changes values with [`Lwm2mClient::set_value`] or, for callback-backed
/// resources, tells the client with [`Lwm2mClient::notify_changed`]; observers get
/// notified as the attributes allow, from `handle_timeout`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use twinhub::lwm2m::client::{ClientConfig, Lwm2mClient, ObjectTree, objects};
/// let mut tree = ObjectTree::new();
/// tree.add(objects::server(1, 60, "U"));
/// tree.add(objects::device("Contoso", "M1", "SN-1", "1.0"));
/// let now = Instant::now();
/// let server = "127.0.0.1:5683".parse().unwrap();
/// let mut client = Lwm2mClient::new(now, ClientConfig::new("dev-1", server), tree);
/// client.handle_timeout(now);
/// let register = client.poll_transmit().unwrap();
/// assert_eq!(register.destination, server);
/// // Without an answer the request is retransmitted after ACK_TIMEOUT (2-3 s).
/// assert!(client.poll_timeout().unwrap() <= now + Duration::from_secs(3));
/// ```
pub struct Lwm2mClient {
    config: ClientConfig,
    tree: ObjectTree,
    attributes: AttributeTable,
    observations: Vec<Observation>,
    /// The confirmable error notifications of observations that ended (their target
    /// was deleted) not yet acknowledged: at most `max_observations`, the oldest dropped
    /// past that.
    finals: Vec<(Lwm2mPath, Unacked)>,
    reg: RegState,
    /// Registration attempts failed in a row (for the backoff).
    failures: u32,
    /// Registers refused or lost in a row since the last registration or bootstrap: at
    /// [`REGISTER_ATTEMPTS_BEFORE_BOOTSTRAP`] a client with a bootstrap server bootstraps
    /// again (LwM2M 1.1 `/1/x/16` "Bootstrap on Registration Failure", unless false).
    failed_registers: u32,
    /// An update should go out as soon as possible (trigger, lifetime change).
    update_due: bool,
    /// The object list changed: the next update carries it.
    objects_changed: bool,
    outgoing: Vec<Outgoing>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<ClientEvent>,
    dedup: VecDeque<(SocketAddr, u16, Instant, Vec<u8>)>,
    /// Confirmable (separate) responses acknowledged lately, by sender and message id: a
    /// copy of one (the server retransmits when our ACK is lost) is acknowledged again,
    /// not reset (RFC 7252 §4.5). At most [`DEDUP_ENTRIES`], each for EXCHANGE_LIFETIME.
    acked_responses: VecDeque<(SocketAddr, u16, Instant)>,
    block1: Option<Block1>,
    download: Option<Download>,
    changed: Vec<Lwm2mPath>,
    default_periods: (Option<u32>, Option<u32>),
    next_message_id: u16,
    token_state: u64,
    /// The latest `now` handed in (the client reads no clock).
    now: Instant,
    /// The next place in the queue of confirmable notifications waiting for the wire
    /// (see [`Unacked`]).
    next_place: u64,
    /// A bootstrap server is configured and has not finished bootstrapping the client.
    needs_bootstrap: bool,
}

impl std::fmt::Debug for Lwm2mClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lwm2mClient")
            .field("endpoint", &self.config.endpoint)
            .finish_non_exhaustive()
    }
}

impl Lwm2mClient {
    /// A client for `config.endpoint` serving `tree`; it registers at the first
    /// [`Lwm2mClient::handle_timeout`] at or after `now`.
    pub fn new(now: Instant, config: ClientConfig, tree: ObjectTree) -> Self {
        let mut seed = [0u8; 8];
        // Tokens need entropy (RFC 7252 §5.3.1); fall back to the clock's bits if the OS
        // generator is unavailable, which only weakens spoofing resistance.
        if getrandom::fill(&mut seed).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9e37_79b9_7f4a_7c15);
            seed = t.to_le_bytes();
        }
        let token_state = u64::from_le_bytes(seed) | 1;
        let mut client = Lwm2mClient {
            config,
            tree,
            attributes: AttributeTable::default(),
            observations: Vec::new(),
            finals: Vec::new(),
            reg: RegState::Idle { at: now },
            failures: 0,
            failed_registers: 0,
            update_due: false,
            objects_changed: false,
            outgoing: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dedup: VecDeque::new(),
            acked_responses: VecDeque::new(),
            block1: None,
            download: None,
            changed: Vec::new(),
            default_periods: (None, None),
            next_message_id: (token_state >> 16) as u16,
            token_state,
            now,
            needs_bootstrap: false,
            next_place: 0,
        };
        client.needs_bootstrap = client.config.bootstrap.is_some();
        if client.needs_bootstrap
            && let Some(secs) = client.tree.bootstrap_hold_off()
        {
            // Client Hold Off Time: the wait before a client-initiated bootstrap.
            client.reg = RegState::Idle {
                at: now + Duration::from_secs(secs.min(u64::from(u32::MAX))),
            };
        }
        client.refresh_defaults();
        client.sync_firmware_protocols();
        let mut drained = Vec::new();
        client.tree.drain_changes(&mut drained);
        client
    }

    // ------------------------------------------------------------------ getters

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The objects (for the application to inspect; after adding or removing objects or
    /// instances call [`Lwm2mClient::objects_changed`]).
    pub fn objects_mut(&mut self) -> &mut ObjectTree {
        &mut self.tree
    }

    /// Whether the client is registered (also while an update is out).
    pub fn is_registered(&self) -> bool {
        matches!(
            self.reg,
            RegState::Registered { .. } | RegState::Updating { .. }
        )
    }

    /// Whether a Bootstrap-Request is out (the client talks to its bootstrap server).
    #[cfg_attr(not(feature = "dtls"), allow(dead_code))]
    pub(crate) fn is_bootstrapping(&self) -> bool {
        matches!(self.reg, RegState::Bootstrapping { .. })
    }

    /// The registration's location (`/rd/...`) while registered.
    pub fn location(&self) -> Option<String> {
        match &self.reg {
            RegState::Registered { location, .. } | RegState::Updating { location } => {
                Some(format!("/{}", location.join("/")))
            }
            _ => None,
        }
    }

    /// How many observations the server holds.
    pub fn observation_count(&self) -> usize {
        self.observations.len()
    }

    /// Observations whose last confirmable notification is not known to have reached
    /// the server: sent and not yet acknowledged, or timed out and waiting to be sent
    /// again (see [`ClientEvent::NotificationTimedOut`]), at most one an observation;
    /// plus the unacknowledged final (error) notifications of ended observations, at most
    /// `max_observations`. 0 means every CON notification reached the server, e.g. before
    /// the device sleeps;
    /// non-confirmable ones are never counted (see
    /// [`ClientConfig::confirmable_notifications`]).
    pub fn unacknowledged_notifications(&self) -> usize {
        self.observations
            .iter()
            .filter(|o| o.unacked.is_some() || o.renotify)
            .count()
            + self.finals.len()
    }

    /// Confirmable notifications on the wire, and those waiting for their turn (see
    /// [`Unacked`]): for the fuzz harness's invariants.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn notification_queue(&self) -> (usize, usize) {
        let all = || {
            self.observations
                .iter()
                .filter_map(|o| o.unacked.as_ref())
                .chain(self.finals.iter().map(|(_, u)| u))
        };
        (
            all().filter(|u| u.on_wire()).count(),
            all().filter(|u| !u.on_wire()).count(),
        )
    }

    /// The paths under observation.
    pub fn observed_paths(&self) -> Vec<Lwm2mPath> {
        self.observations.iter().map(|o| o.path).collect()
    }

    /// The attributes table (Write-Attributes).
    pub fn attributes(&self) -> &AttributeTable {
        &self.attributes
    }

    // ------------------------------------------------------------------ application input

    /// LWM2M 1.1 Send: pushes the current values under `paths` to the server (a CON POST
    /// to `/dp`, SenML JSON), unobserved. The answer arrives as [`ClientEvent::Sent`] or
    /// [`ClientEvent::SendFailed`]. Refused while not registered, and while the server
    /// has muted Send (Mute Send `/1/0/23` true).
    pub fn send(&mut self, now: Instant, paths: &[Lwm2mPath]) -> Result<(), SendError> {
        if !matches!(
            self.reg,
            RegState::Registered { .. } | RegState::Updating { .. }
        ) {
            return Err(SendError::NotRegistered);
        }
        let mute = Lwm2mPath::resource(1, 0, super::objects::server::MUTE_SEND);
        if let Ok(c) = self.tree.read(&mute)
            && c.values
                .iter()
                .any(|(_, v)| *v == ResourceValue::Boolean(true))
        {
            return Err(SendError::Muted);
        }
        let Some(first) = paths.first() else {
            return Err(SendError::Nothing(Lwm2mPath::ROOT));
        };
        let mut content = Content::default();
        for path in paths {
            match self.tree.read(path) {
                Ok(c) if !c.values.is_empty() => content.values.extend(c.values),
                _ => return Err(SendError::Nothing(*path)),
            }
        }
        let body = crate::lwm2m::content::encode(Format::SenmlJson, &Lwm2mPath::ROOT, &content)
            .map_err(|e| SendError::Encode(e.to_string()))?;
        if body.len() > self.config.block_size.max(1024) {
            return Err(SendError::Encode(format!(
                "{} bytes at {first} and after, more than one datagram",
                body.len()
            )));
        }
        let mut m = Message::new(MessageType::Confirmable, Code::POST, 0);
        m.add_uri_path("dp");
        m.set_content_format(ContentFormat(Format::SenmlJson.code()));
        m.payload = body;
        self.send_request(now, Purpose::Send, m, self.config.server);
        Ok(())
    }

    /// Sets a resource's value as the application (no access check: read-only resources
    /// are set this way), and notifies its observers.
    pub fn set_value(&mut self, path: &Lwm2mPath, value: ResourceValue) -> Result<(), ClientError> {
        let [oid, iid, rid] = *path.ids() else {
            return Err(ClientError::NoSuchResource(*path));
        };
        let object = self
            .tree
            .object_mut(oid)
            .ok_or(ClientError::NoSuchResource(*path))?;
        let def = object
            .definition()
            .resource(rid)
            .cloned()
            .ok_or(ClientError::NoSuchResource(*path))?;
        if !object.instance_ids().contains(&iid) {
            return Err(ClientError::NoSuchResource(*path));
        }
        let value = coerce(value, def.kind).map_err(ClientError::Object)?;
        let data = if def.multiple {
            ResourceData::Multiple(vec![(0, value)])
        } else {
            ResourceData::Single(value)
        };
        object
            .write(iid, rid, data, WriteMode::Replace)
            .map_err(ClientError::Object)?;
        if oid == 1 {
            self.after_server_object_write(&[*path]);
        }
        self.notify_changed(path);
        Ok(())
    }

    /// Tells the client that the value at `path` (a resource, instance or object) changed,
    /// e.g. one backed by a read callback. Observers are notified from the next
    /// [`Lwm2mClient::handle_timeout`] that their pmin allows (see `poll_timeout`).
    pub fn notify_changed(&mut self, path: &Lwm2mPath) {
        if !self.changed.contains(path) {
            self.changed.push(*path);
        }
        self.collect_changes();
    }

    /// Tells the client that objects or instances were added or removed by the
    /// application: the next registration update carries the new object list (and goes
    /// out at the next `handle_timeout`).
    pub fn objects_changed(&mut self) {
        self.objects_changed = true;
        self.update_due = true;
    }

    /// Asks for a registration update at the next `handle_timeout` (as the Registration
    /// Update Trigger /1/0/8 does).
    pub fn trigger_update(&mut self) {
        self.update_due = true;
    }

    /// The application's report that the firmware update it started ended; `Ok` sets State
    /// Idle / Update Result 1. Observers of /5 are notified.
    pub fn firmware_update_finished(&mut self, outcome: Result<(), UpdateResult>) {
        if let Some(fw) = self.tree.firmware_mut() {
            fw.update_finished(outcome);
        }
        self.collect_changes();
    }

    /// De-registers (DELETE of the registration); [`ClientEvent::Deregistered`] follows.
    /// Without a registration the client just stops. From here on the server's requests
    /// are answered 5.03 (Service Unavailable) and not served: a request crossing the
    /// De-register is neither carried out nor acknowledged for an application that is
    /// going away.
    pub fn deregister(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.outgoing.retain(|o| o.purpose == Purpose::Download);
        match std::mem::replace(&mut self.reg, RegState::Stopped) {
            RegState::Registered { location, .. } | RegState::Updating { location } => {
                let mut m = Message::new(MessageType::Confirmable, Code::DELETE, 0);
                for seg in &location {
                    m.add_uri_path(seg);
                }
                self.reg = RegState::Deregistering;
                self.send_request(now, Purpose::Deregister, m, self.config.server);
            }
            _ => self.push_event(ClientEvent::Deregistered),
        }
        self.observations.clear();
        self.finals.clear();
    }

    // ------------------------------------------------------------------ sans-IO interface

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`Lwm2mClient::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |i: Instant| t = Some(t.map_or(i, |x| x.min(i)));
        match &self.reg {
            RegState::Idle { at: when } => at(*when),
            RegState::Bootstrapping { deadline } => at(*deadline),
            RegState::Registered { update_at, .. } => {
                if self.update_due {
                    // As soon as possible: the caller's next handle_timeout sends it.
                    at(self.now.min(*update_at));
                } else {
                    at(*update_at);
                }
            }
            _ => {}
        }
        for o in &self.outgoing {
            at(o.next);
        }
        for o in &self.observations {
            if let Some(d) = o.timer.deadline(&self.observation_attributes(o)) {
                at(d);
            }
            if let Some(u) = o.unacked.as_ref().filter(|u| u.on_wire()) {
                at(u.next);
            }
        }
        for (_, u) in self.finals.iter().filter(|(_, u)| u.on_wire()) {
            at(u.next);
        }
        t
    }

    /// Advances timers: registration and updates, retransmissions, notifications.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.retransmit(now);
        self.registration_step(now);
        self.collect_changes();
        self.release_queued(now);
        self.flush_notifications(now);
        self.release_queued(now);
    }

    /// Takes one datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.now = self.now.max(now);
        let Ok(msg) = Message::decode(bytes) else {
            return;
        };
        if msg.code.is_empty() {
            self.handle_empty(now, from, &msg);
        } else if msg.code.is_request() {
            // While bootstrapping, only the bootstrap server's requests are served: the
            // LWM2M server's account is being rewritten, and behind DTLS the session is the
            // bootstrap server's, so a request "from" the LWM2M server's address arrives
            // unauthenticated, in plain text. Otherwise only the LWM2M server's.
            let allowed = if matches!(self.reg, RegState::Bootstrapping { .. }) {
                self.bootstrapping_from(from)
            } else {
                from == self.config.server
            };
            // A copy of a request already answered gets the same answer again (RFC 7252
            // §4.5): also a copy from the bootstrap server once the client has left it,
            // which is its retransmitted Bootstrap-Finish when the answer was lost (else
            // it would time out there and the bootstrap be reported failed). Only a copy:
            // nothing the bootstrap server sends then is served anew.
            if (allowed || self.config.bootstrap == Some(from))
                && self.replay_duplicate(now, from, &msg)
            {
                return;
            }
            if !allowed {
                return;
            }
            self.handle_request(now, from, &msg);
        } else if msg.code.is_response() {
            self.handle_response(now, from, &msg);
        }
        self.collect_changes();
        self.release_queued(now);
        self.flush_notifications(now);
        self.release_queued(now);
    }

    // ------------------------------------------------------------------ internals: sending

    fn next_token(&mut self) -> Token {
        // xorshift64*: the seed came from the OS CSPRNG.
        let mut x = self.token_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.token_state = x;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        Token::from_slice(&v.to_be_bytes()[..4]).unwrap_or(Token::EMPTY)
    }

    fn next_mid(&mut self) -> u16 {
        self.next_message_id = self.next_message_id.wrapping_add(1);
        self.next_message_id
    }

    fn push_transmit(&mut self, destination: SocketAddr, msg: &Message) {
        let mut payload = Vec::with_capacity(msg.encoded_len());
        if msg.encode(&mut payload).is_err() {
            return;
        }
        self.push_bytes(destination, payload);
    }

    /// Queues an encoded datagram (the oldest is dropped past [`QUEUE_BOUND`]).
    fn push_bytes(&mut self, destination: SocketAddr, payload: Vec<u8>) {
        if self.transmits.len() >= QUEUE_BOUND {
            self.transmits.pop_front();
        }
        self.transmits.push_back(Transmit {
            destination,
            payload,
        });
    }

    /// The first wait for an ACK: ACK_TIMEOUT times a random factor in [1, 1.5)
    /// (RFC 7252 §4.8).
    fn first_ack_wait(&mut self) -> Duration {
        self.next_token();
        let jitter = (self.token_state >> 40) as f64 / (1u64 << 24) as f64;
        self.config.ack_timeout.mul_f64(1.0 + 0.5 * jitter)
    }

    fn push_event(&mut self, e: ClientEvent) {
        if self.events.len() >= QUEUE_BOUND {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn send_request(&mut self, now: Instant, purpose: Purpose, mut msg: Message, to: SocketAddr) {
        msg.mtype = MessageType::Confirmable;
        msg.message_id = self.next_mid();
        let token = self.next_token();
        msg.with_token(token);
        let Ok(bytes) = msg.to_bytes() else {
            return;
        };
        // ACK_TIMEOUT * random factor in [1, 1.5).
        let jitter = (self.token_state >> 40) as f64 / (1u64 << 24) as f64;
        let wait = self.config.ack_timeout.mul_f64(1.0 + 0.5 * jitter);
        self.outgoing.push(Outgoing {
            purpose,
            token,
            message_id: msg.message_id,
            destination: to,
            bytes: bytes.clone(),
            retransmits: 0,
            wait,
            next: now + wait,
            acked: false,
        });
        self.push_bytes(to, bytes);
    }

    /// An ACK for the notification on the wire with `message_id`: done, and the newer
    /// one waiting behind it joins the queue for the wire (behind those already waiting;
    /// the caller then puts the oldest on the wire, see [`Unacked`]).
    fn notification_acknowledged(&mut self, now: Instant, message_id: u16) {
        let place = self.next_place;
        let acked = |u: &Unacked| u.on_wire() && u.message_id == message_id;
        if let Some(o) = self
            .observations
            .iter_mut()
            .find(|o| o.unacked.as_ref().is_some_and(acked))
        {
            o.unacked = o.unacked.take().and_then(|u| u.acknowledged(now, place));
            o.resent = false;
        } else if let Some(at) = self.finals.iter().position(|(_, u)| acked(u)) {
            let (path, u) = self.finals.remove(at);
            if let Some(u) = u.acknowledged(now, place) {
                self.finals.push((path, u));
            }
        } else {
            return;
        }
        self.next_place += 1;
    }

    /// Puts the oldest confirmable notification waiting for the wire on it, when none is
    /// there: one outstanding notification to the server at a time (RFC 7641 §4.5.1,
    /// NSTART = 1; see [`Unacked`]).
    fn release_queued(&mut self, now: Instant) {
        let busy = self
            .observations
            .iter()
            .filter_map(|o| o.unacked.as_ref())
            .chain(self.finals.iter().map(|(_, u)| u))
            .any(Unacked::on_wire);
        if busy {
            return;
        }
        // (place, is a final, index): the smallest place goes first.
        let first = self
            .observations
            .iter()
            .enumerate()
            .filter_map(|(i, o)| Some((o.unacked.as_ref()?.queued?, false, i)))
            .chain(
                self.finals
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, u))| Some((u.queued?, true, i))),
            )
            .min();
        let Some((_, is_final, i)) = first else {
            return;
        };
        let wait = self.first_ack_wait();
        let bytes = if is_final {
            let u = &mut self.finals[i].1;
            u.start(now, wait);
            u.bytes.clone()
        } else {
            let o = &mut self.observations[i];
            let Some(u) = o.unacked.as_mut() else {
                return;
            };
            u.start(now, wait);
            let (mid, bytes) = (u.message_id, u.bytes.clone());
            o.sent(mid);
            bytes
        };
        self.push_bytes(self.config.server, bytes);
    }

    /// Retransmits the requests and confirmable notifications whose wait ran out; ends
    /// the exchanges that ran out of retransmissions.
    fn retransmit(&mut self, now: Instant) {
        let mut failed = Vec::new();
        let mut again = Vec::new();
        let mut lost = Vec::new();
        let mut ended: Vec<Token> = Vec::new();
        for o in &mut self.outgoing {
            if o.next > now {
                continue;
            }
            if o.acked || o.retransmits >= self.config.max_retransmit {
                failed.push(o.token);
                continue;
            }
            o.retransmits += 1;
            o.wait *= 2;
            o.next = now + o.wait;
            again.push((o.destination, o.bytes.clone()));
        }
        let max = self.config.max_retransmit;
        for o in &mut self.observations {
            let Some(u) = &mut o.unacked else {
                continue;
            };
            match u.step(now, max) {
                Retransmit::Wait => {}
                Retransmit::Send(mid, bytes) => {
                    o.sent(mid);
                    again.push((self.config.server, bytes));
                }
                Retransmit::GiveUp => {
                    o.unacked = None;
                    if o.resent {
                        ended.push(o.token);
                    } else {
                        o.renotify = true;
                    }
                    lost.push(o.path);
                }
            }
        }
        if !ended.is_empty() {
            self.observations.retain(|o| !ended.contains(&o.token));
        }
        // (Drawn only when needed: each draw moves the token sequence.)
        let fresh_wait = if self
            .finals
            .iter()
            .any(|(_, u)| u.newer.is_some() && u.next <= now && u.retransmits >= max)
        {
            self.first_ack_wait()
        } else {
            self.config.ack_timeout
        };
        self.finals.retain_mut(|(path, u)| match u.step(now, max) {
            Retransmit::Wait => true,
            Retransmit::Send(_, bytes) => {
                again.push((self.config.server, bytes));
                true
            }
            Retransmit::GiveUp => match u.newer.take() {
                // The last value notification before the final error went unanswered:
                // the final still goes, as a fresh transmission.
                Some((mid, bytes)) => {
                    *u = Unacked::new(mid, bytes.clone(), now, fresh_wait);
                    again.push((self.config.server, bytes));
                    true
                }
                None => {
                    lost.push(*path);
                    false
                }
            },
        });
        for (destination, bytes) in again {
            self.push_bytes(destination, bytes);
        }
        if !lost.is_empty() && !matches!(self.reg, RegState::Updating { .. }) {
            // Is the server still there? The Update answers it (see NotificationTimedOut);
            // one already in flight answers it as well.
            self.update_due = true;
        }
        for path in lost {
            self.push_event(ClientEvent::NotificationTimedOut { path });
        }
        for token in failed {
            if let Some(at) = self.outgoing.iter().position(|o| o.token == token) {
                let o = self.outgoing.remove(at);
                self.exchange_failed(now, o.purpose, None);
            }
        }
    }

    // ------------------------------------------------------------------ registration

    fn lifetime(&mut self) -> u32 {
        match self.tree.read(&Lwm2mPath::resource(1, 0, 1)) {
            Ok(c) => match c.values.first() {
                Some((_, ResourceValue::Integer(lt))) if *lt > 0 => {
                    (*lt).min(u32::MAX as i64) as u32
                }
                _ => self.config.lifetime,
            },
            Err(_) => self.config.lifetime,
        }
    }

    /// Whether the Server object's Binding (`/1/0/7`) asks for queue mode (`UQ`, the
    /// LwM2M 1.0 spelling, which [`objects::server`](super::objects::server) and a
    /// bootstrap server's write may set): the Register then carries `Q`, as with
    /// [`ClientConfig::queue_mode`].
    fn binding_has_queue(&mut self) -> bool {
        let binding = Lwm2mPath::resource(1, 0, super::objects::server::BINDING);
        self.tree.read(&binding).is_ok_and(|c| {
            c.values
                .iter()
                .any(|(_, v)| matches!(v, ResourceValue::String(b) if b.contains('Q')))
        })
    }

    fn refresh_defaults(&mut self) {
        let mut read = |rid| match self.tree.read(&Lwm2mPath::resource(1, 0, rid)) {
            Ok(c) => match c.values.first() {
                Some((_, ResourceValue::Integer(v))) if *v >= 0 => {
                    Some((*v).min(u32::MAX as i64) as u32)
                }
                _ => None,
            },
            Err(_) => None,
        };
        self.default_periods = (read(2), read(3));
    }

    fn update_deadline(&mut self, now: Instant) -> Instant {
        let lt = self.lifetime() as u64;
        now + Duration::from_secs(lt - 120.min(lt / 2))
    }

    fn backoff(&mut self, now: Instant, code: Option<(u8, u8)>) {
        let factor = 1u32 << self.failures.min(16);
        // Spread in [1, 1.5), as the ACK timeouts are: a fleet that lost its server at
        // one instant retries over a window, not in one burst (nor in bursts at each
        // doubling).
        self.next_token();
        let jitter = (self.token_state >> 40) as f64 / (1u64 << 24) as f64;
        let wait = self
            .config
            .retry_initial
            .saturating_mul(factor)
            .mul_f64(1.0 + 0.5 * jitter)
            .min(self.config.retry_max);
        self.failures = self.failures.saturating_add(1);
        self.reg = RegState::Idle { at: now + wait };
        self.push_event(ClientEvent::RegistrationFailed {
            code,
            retry_in: wait,
        });
    }

    fn registration_step(&mut self, now: Instant) {
        match &self.reg {
            RegState::Idle { at } if *at <= now && self.needs_bootstrap => {
                self.send_bootstrap_request(now)
            }
            RegState::Idle { at } if *at <= now => self.send_register(now),
            RegState::Bootstrapping { deadline } if *deadline <= now => {
                self.outgoing.retain(|o| o.purpose != Purpose::Bootstrap);
                self.backoff(now, None);
            }
            RegState::Registered {
                update_at,
                location,
            } if self.update_due || *update_at <= now => {
                let location = location.clone();
                self.send_update(now, location);
            }
            _ => {}
        }
    }

    /// Bootstrap-Request: `POST /bs?ep=NAME` to the bootstrap server.
    fn send_bootstrap_request(&mut self, now: Instant) {
        let Some(bs) = self.config.bootstrap else {
            self.needs_bootstrap = false;
            return;
        };
        let mut m = Message::new(MessageType::Confirmable, Code::POST, 0);
        m.add_uri_path("bs");
        m.add_uri_query(&format!("ep={}", self.config.endpoint));
        self.reg = RegState::Bootstrapping {
            deadline: now + self.config.bootstrap_timeout,
        };
        self.send_request(now, Purpose::Bootstrap, m, bs);
    }

    fn send_register(&mut self, now: Instant) {
        let mut m = Message::new(MessageType::Confirmable, Code::POST, 0);
        m.add_uri_path("rd");
        m.add_uri_query(&format!("ep={}", self.config.endpoint));
        let lt = self.lifetime();
        m.add_uri_query(&format!("lt={lt}"));
        let queue = self.config.queue_mode || self.binding_has_queue();
        match self.config.version {
            ClientVersion::V1_0 => {
                m.add_uri_query("lwm2m=1.0");
                m.add_uri_query(if queue { "b=UQ" } else { "b=U" });
            }
            ClientVersion::V1_1 => {
                m.add_uri_query("lwm2m=1.1");
                m.add_uri_query("b=U");
                if queue {
                    m.add_uri_query("Q");
                }
            }
        }
        m.set_content_format(ContentFormat::LINK_FORMAT);
        m.payload = self.tree.registration_links().into_bytes();
        self.objects_changed = false;
        self.update_due = false;
        self.reg = RegState::Registering;
        self.send_request(now, Purpose::Register, m, self.config.server);
    }

    fn send_update(&mut self, now: Instant, location: Vec<String>) {
        let mut m = Message::new(MessageType::Confirmable, Code::POST, 0);
        for seg in &location {
            m.add_uri_path(seg);
        }
        if self.update_due {
            let lt = self.lifetime();
            m.add_uri_query(&format!("lt={lt}"));
        }
        if self.objects_changed {
            m.set_content_format(ContentFormat::LINK_FORMAT);
            m.payload = self.tree.registration_links().into_bytes();
            self.objects_changed = false;
        }
        self.update_due = false;
        self.reg = RegState::Updating { location };
        self.send_request(now, Purpose::Update, m, self.config.server);
    }

    fn exchange_failed(&mut self, now: Instant, purpose: Purpose, code: Option<(u8, u8)>) {
        match purpose {
            Purpose::Register => {
                self.backoff(now, code);
                self.failed_registers = self.failed_registers.saturating_add(1);
                let bootstrap_on_failure = !self
                    .tree
                    .read(&Lwm2mPath::resource(1, 0, 16))
                    .is_ok_and(|c| {
                        matches!(c.values.as_slice(), [(_, ResourceValue::Boolean(false))])
                    });
                if self.config.bootstrap.is_some()
                    && self.failed_registers >= REGISTER_ATTEMPTS_BEFORE_BOOTSTRAP
                    && bootstrap_on_failure
                {
                    self.failed_registers = 0;
                    self.needs_bootstrap = true;
                }
            }
            Purpose::Bootstrap => self.backoff(now, code),
            Purpose::Update => {
                // 4.04: the server forgot us; anything else: treat the server as lost.
                self.observations.clear();
                self.finals.clear();
                if code == Some((4, 4)) {
                    self.reg = RegState::Idle { at: now };
                    self.push_event(ClientEvent::RegistrationFailed {
                        code,
                        retry_in: Duration::ZERO,
                    });
                } else {
                    self.backoff(now, code);
                }
            }
            Purpose::Deregister => {
                self.reg = RegState::Stopped;
                self.push_event(ClientEvent::Deregistered);
            }
            Purpose::Download => {
                let result = match code {
                    Some((4, 4)) => UpdateResult::InvalidUri,
                    Some((4, 15)) => UpdateResult::UnsupportedPackage,
                    _ => UpdateResult::ConnectionLost,
                };
                self.download_finished(Err(result));
            }
            Purpose::Send => self.push_event(ClientEvent::SendFailed { code }),
        }
    }

    // ------------------------------------------------------------------ incoming

    fn handle_empty(&mut self, now: Instant, from: SocketAddr, msg: &Message) {
        match msg.mtype {
            MessageType::Confirmable => {
                // CoAP ping.
                self.push_transmit(from, &Message::empty(MessageType::Reset, msg.message_id));
            }
            MessageType::Acknowledgement => {
                if let Some(o) = self
                    .outgoing
                    .iter_mut()
                    .find(|o| o.message_id == msg.message_id && o.destination == from)
                {
                    o.acked = true;
                    o.next = now + MAX_TRANSMIT_WAIT;
                } else if from == self.config.server {
                    self.notification_acknowledged(now, msg.message_id);
                }
            }
            MessageType::Reset => {
                if let Some(at) = self
                    .outgoing
                    .iter()
                    .position(|o| o.message_id == msg.message_id && o.destination == from)
                {
                    let o = self.outgoing.remove(at);
                    self.exchange_failed(now, o.purpose, None);
                } else if from == self.config.server {
                    // RST to a notification cancels the observation (RFC 7641 §3.6).
                    self.observations
                        .retain(|o| !o.sent_ids.contains(&Some(msg.message_id)));
                    self.finals
                        .retain(|(_, u)| !(u.on_wire() && u.message_id == msg.message_id));
                }
            }
            MessageType::NonConfirmable => {}
        }
    }

    fn handle_response(&mut self, now: Instant, from: SocketAddr, msg: &Message) {
        let Some(at) = self
            .outgoing
            .iter()
            .position(|o| o.token == msg.token() && o.destination == from)
        else {
            self.acked_responses
                .retain(|(_, _, t)| now.saturating_duration_since(*t) < EXCHANGE_LIFETIME);
            let duplicate = msg.mtype == MessageType::Confirmable
                && self
                    .acked_responses
                    .iter()
                    .any(|(peer, mid, _)| *peer == from && *mid == msg.message_id);
            if duplicate {
                self.push_transmit(
                    from,
                    &Message::empty(MessageType::Acknowledgement, msg.message_id),
                );
            } else if msg.mtype == MessageType::Confirmable
                || msg.mtype == MessageType::NonConfirmable
            {
                self.push_transmit(from, &Message::empty(MessageType::Reset, msg.message_id));
            }
            return;
        };
        if msg.mtype == MessageType::Confirmable {
            self.push_transmit(
                from,
                &Message::empty(MessageType::Acknowledgement, msg.message_id),
            );
            if self.acked_responses.len() >= DEDUP_ENTRIES {
                self.acked_responses.pop_front();
            }
            self.acked_responses.push_back((from, msg.message_id, now));
        }
        let o = self.outgoing.remove(at);
        let code = msg.code;
        match o.purpose {
            Purpose::Register if code == Code::CREATED => {
                let location: Vec<String> = msg.location_path().map(str::to_string).collect();
                if location.is_empty() {
                    self.exchange_failed(now, o.purpose, Some((code.class(), code.detail())));
                    return;
                }
                self.failures = 0;
                self.failed_registers = 0;
                self.observations.clear();
                self.finals.clear();
                let update_at = self.update_deadline(now);
                self.push_event(ClientEvent::Registered {
                    location: format!("/{}", location.join("/")),
                });
                self.reg = RegState::Registered {
                    location,
                    update_at,
                };
            }
            Purpose::Update if code == Code::CHANGED => {
                let location = match std::mem::replace(&mut self.reg, RegState::Stopped) {
                    RegState::Updating { location } | RegState::Registered { location, .. } => {
                        location
                    }
                    other => {
                        self.reg = other;
                        return;
                    }
                };
                self.failures = 0;
                let update_at = self.update_deadline(now);
                self.reg = RegState::Registered {
                    location,
                    update_at,
                };
                self.push_event(ClientEvent::RegistrationUpdated);
                // The server is there: notify what it may have missed.
                for o in &mut self.observations {
                    if o.renotify {
                        o.timer.pending = true;
                    }
                }
            }
            Purpose::Deregister => {
                self.reg = RegState::Stopped;
                self.push_event(ClientEvent::Deregistered);
            }
            // Accepted: the bootstrap server's writes follow (the deadline still runs).
            Purpose::Bootstrap if code == Code::CHANGED => {
                self.push_event(ClientEvent::BootstrapStarted)
            }
            Purpose::Download if code == Code::CONTENT => self.download_block(now, msg),
            Purpose::Send if code == Code::CHANGED => self.push_event(ClientEvent::Sent),
            purpose => self.exchange_failed(now, purpose, Some((code.class(), code.detail()))),
        }
    }

    /// Answers a duplicate request from the cache of recent answers; `false` when `req`
    /// is not one. A duplicate is the same message id from the same peer (RFC 7252 §4.5):
    /// the bootstrap server's and the LWM2M server's ids are their own. Entries live
    /// EXCHANGE_LIFETIME, at most [`DEDUP_ENTRIES`] a peer and twice that in all (see
    /// [`Self::remember_answer`]); a copy of a request whose answer is gone is `false`.
    /// The answer is queued as every datagram is: at [`QUEUE_BOUND`] unsent datagrams the
    /// oldest is dropped (the server is waiting for this one now).
    fn replay_duplicate(&mut self, now: Instant, from: SocketAddr, req: &Message) -> bool {
        self.dedup
            .retain(|(_, _, t, _)| now.saturating_duration_since(*t) < EXCHANGE_LIFETIME);
        let Some((_, _, _, cached)) = self
            .dedup
            .iter()
            .find(|(peer, mid, _, _)| *peer == from && *mid == req.message_id)
        else {
            return false;
        };
        let payload = cached.clone();
        self.push_bytes(from, payload);
        true
    }

    /// Keeps `answer`, the answer to `from`'s request `mid`, for [`Self::replay_duplicate`]:
    /// at its [`DEDUP_ENTRIES`] a peer, that peer's oldest answer goes; at twice that in
    /// all (only with a third peer: the LWM2M server a re-bootstrap moved the client away
    /// from), the oldest of all, which is then that old server's.
    fn remember_answer(&mut self, now: Instant, from: SocketAddr, mid: u16, answer: Vec<u8>) {
        let own = self.dedup.iter().filter(|(peer, ..)| *peer == from).count();
        if own >= DEDUP_ENTRIES {
            if let Some(i) = self.dedup.iter().position(|(peer, ..)| *peer == from) {
                self.dedup.remove(i);
            }
        } else if self.dedup.len() >= 2 * DEDUP_ENTRIES {
            self.dedup.pop_front();
        }
        self.dedup.push_back((from, mid, now, answer));
    }

    fn handle_request(&mut self, now: Instant, from: SocketAddr, req: &Message) {
        let confirmable = req.mtype == MessageType::Confirmable;
        let mut resp = if req.unrecognized_critical_option().is_some() {
            Message::response(Code::BAD_OPTION)
        } else if self.bootstrapping_from(from) {
            self.serve_bootstrap(now, req)
        } else if matches!(self.reg, RegState::Deregistering | RegState::Stopped) {
            // De-registering or de-registered (the application is shutting the device
            // down): nothing is served, so no Write, Execute or Create is acknowledged
            // whose event the application will never take (a `DeviceThread` stops once
            // the De-register is answered). 5.03 tells the server to try again later.
            Message::response(Code::SERVICE_UNAVAILABLE)
        } else {
            self.serve(now, req)
        };
        resp.with_token(req.token());
        if confirmable {
            resp.mtype = MessageType::Acknowledgement;
            resp.message_id = req.message_id;
        } else {
            resp.mtype = MessageType::NonConfirmable;
            resp.message_id = self.next_mid();
        }
        let Ok(bytes) = resp.to_bytes() else {
            return;
        };
        self.remember_answer(now, from, req.message_id, bytes.clone());
        // A separate (NON) response is ours and may be RST; a piggybacked one carries the
        // server's message id.
        if resp.mtype != MessageType::Acknowledgement
            && let Some(o) = self
                .observations
                .iter_mut()
                .find(|o| o.token == req.token() && resp.observe().is_some())
        {
            o.sent(resp.message_id);
        }
        if self.transmits.len() >= QUEUE_BOUND {
            self.transmits.pop_front();
        }
        self.transmits.push_back(Transmit {
            destination: from,
            payload: bytes,
        });
    }

    /// The LWM2M path a request's Uri-Path names (4.04 when it names none).
    fn request_path(req: &Message) -> Result<Lwm2mPath, Code> {
        let mut segs = Vec::new();
        for s in req.uri_path() {
            match s.parse::<u16>() {
                Ok(v) if v != u16::MAX && segs.len() < 4 && s.len() <= 5 => segs.push(v),
                _ => return Err(Code::NOT_FOUND),
            }
        }
        Lwm2mPath::from_ids(&segs).map_err(|_| Code::NOT_FOUND)
    }

    /// Whether `from` is the bootstrap server while a bootstrap runs: its requests are
    /// served by [`Self::serve_bootstrap`].
    fn bootstrapping_from(&self, from: SocketAddr) -> bool {
        matches!(self.reg, RegState::Bootstrapping { .. }) && self.config.bootstrap == Some(from)
    }

    /// Answers one bootstrap server request (LWM2M 1.1 §5.2.7): Bootstrap-Discover
    /// (`GET` with Accept link format), Bootstrap-Write (`PUT`), Bootstrap-Delete
    /// (`DELETE`) and Bootstrap-Finish (`POST /bs`); Bootstrap-Read of Server `/1` too.
    fn serve_bootstrap(&mut self, now: Instant, req: &Message) -> Message {
        if req.code == Code::POST && req.uri_path().eq(["bs"]) {
            return match self.finish_bootstrap(now) {
                Ok(()) => Message::response(Code::CHANGED),
                Err(reason) => {
                    self.push_event(ClientEvent::BootstrapRefused { reason });
                    Message::response(Code::NOT_ACCEPTABLE)
                }
            };
        }
        let path = match Self::request_path(req) {
            Ok(p) => p,
            Err(code) => return Message::response(code),
        };
        match req.code {
            Code::GET if req.accept() == Some(ContentFormat::LINK_FORMAT) => {
                let mut r = Message::response(Code::CONTENT);
                r.set_content_format(ContentFormat::LINK_FORMAT);
                r.payload = self.tree.bootstrap_links_of(path.object_id()).into_bytes();
                r
            }
            Code::GET if path.object_id() == Some(1) => {
                // The bootstrap interface has no Observe: Bootstrap-Read is a read.
                let mut read = req.clone();
                read.remove_option(OptionNumber::OBSERVE);
                self.read_or_observe(now, &path, &read)
            }
            Code::PUT if path.depth() >= 1 => {
                let content = match self.decode_payload(req, &req.payload, &path) {
                    Ok(c) => c,
                    Err(code) => return Message::response(code),
                };
                match self.tree.bootstrap_write(&path, content) {
                    Ok(_) => Message::response(Code::CHANGED),
                    Err(e) => Message::response(code_for(&e)),
                }
            }
            Code::DELETE => match self.tree.bootstrap_delete(&path) {
                Ok(()) => Message::response(Code::DELETED),
                Err(e) => Message::response(code_for(&e)),
            },
            _ => Message::response(Code::METHOD_NOT_ALLOWED),
        }
    }

    /// Bootstrap-Finish: takes the first Security instance that is not a bootstrap
    /// account, with the Server instance of its Short Server ID, as the server to register
    /// with. Nothing changes when they do not make a usable account.
    fn finish_bootstrap(&mut self, now: Instant) -> Result<(), String> {
        let account = self.provisioned_account()?;
        #[cfg(feature = "dtls")]
        {
            self.config.psk = account.psk;
            self.sync_firmware_protocols();
        }
        self.config.server = account.server;
        self.needs_bootstrap = false;
        // Not `failures`: a server that keeps refusing Registers (and sends the client
        // back to bootstrap every 5) must see the backoff go on growing to `retry_max`.
        self.outgoing.retain(|o| o.purpose != Purpose::Bootstrap);
        self.reg = RegState::Idle { at: now };
        self.refresh_defaults();
        self.push_event(ClientEvent::Bootstrapped {
            server: account.server,
            secure: account.secure,
        });
        Ok(())
    }

    fn provisioned_account(&mut self) -> Result<ProvisionedAccount, String> {
        let security = self
            .tree
            .object_mut(0)
            .ok_or("no Security object /0")?
            .instance_ids();
        let iid = security
            .into_iter()
            .find(|&i| !self.tree.is_bootstrap_account(i))
            .ok_or("no server account in Security /0")?;
        let single = |tree: &mut ObjectTree, oid: u16, iid: u16, rid: u16| {
            tree.object_mut(oid)
                .and_then(|o| o.read(iid, rid).ok())
                .and_then(|d| match d {
                    ResourceData::Single(v) => Some(v),
                    ResourceData::Multiple(_) => None,
                })
        };
        let Some(ResourceValue::String(uri)) = single(&mut self.tree, 0, iid, 0) else {
            return Err(format!("/0/{iid}/0 (LWM2M Server URI) is missing"));
        };
        let Some(ResourceValue::Integer(ssid)) = single(&mut self.tree, 0, iid, 10) else {
            return Err(format!("/0/{iid}/10 (Short Server ID) is missing"));
        };
        let servers = self
            .tree
            .object_mut(1)
            .ok_or("no Server object /1")?
            .instance_ids();
        if !servers
            .into_iter()
            .any(|j| single(&mut self.tree, 1, j, 0) == Some(ResourceValue::Integer(ssid)))
        {
            return Err(format!("no Server /1 instance has Short Server ID {ssid}"));
        }
        let (secure, rest) = match uri.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("coap") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("coaps") => (true, rest),
            _ => return Err(format!("server URI {uri:?} is not coap:// or coaps://")),
        };
        let default_port = if secure { 5684 } else { 5683 };
        let authority = rest.split('/').next().unwrap_or("");
        let server = parse_authority(authority, default_port)
            .ok_or(format!("server URI {uri:?} has no IP address and port"))?;
        let mode = single(&mut self.tree, 0, iid, 2);
        match (secure, mode) {
            (false, Some(ResourceValue::Integer(3))) => Ok(ProvisionedAccount {
                server,
                secure: false,
                #[cfg(feature = "dtls")]
                psk: None,
            }),
            #[cfg(feature = "dtls")]
            (true, Some(ResourceValue::Integer(0))) => {
                let opaque = |v: Option<ResourceValue>| match v {
                    Some(ResourceValue::Opaque(b)) => Some(b),
                    Some(ResourceValue::String(s)) => Some(s.into_bytes()),
                    _ => None,
                };
                let identity = opaque(single(&mut self.tree, 0, iid, 3))
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or(format!("/0/{iid}/3 (PSK identity) is missing"))?;
                let key = opaque(single(&mut self.tree, 0, iid, 5))
                    .ok_or(format!("/0/{iid}/5 (secret key) is missing"))?;
                let credentials =
                    crate::dtls::PskCredentials::new(&identity, crate::dtls::PskKey::new(key))
                        .map_err(|e| e.to_string())?;
                Ok(ProvisionedAccount {
                    server,
                    secure: true,
                    psk: Some(credentials),
                })
            }
            (secure, mode) => Err(format!(
                "security mode {mode:?} over {} is not supported",
                if secure { "coaps" } else { "coap" }
            )),
        }
    }

    /// Answers one server request (LWM2M DM interface on CoAP, LWM2M 1.1 §6.3 / §8).
    fn serve(&mut self, now: Instant, req: &Message) -> Message {
        let path = match Self::request_path(req) {
            Ok(p) => p,
            Err(code) => return Message::response(code),
        };
        // Block1: reassemble, answer 2.31 until the last block.
        let mut assembled = None;
        if let Some(b1) = req.block1() {
            if let Some(refused) = self.package_push_step(&path, req, b1) {
                return refused;
            }
            match self.block1_step(&path, req, b1) {
                Ok(Some(body)) => assembled = Some(body),
                Ok(None) => {
                    let mut r = Message::response(Code::CONTINUE);
                    r.set_block1(b1);
                    return r;
                }
                Err(code) => {
                    if path == PACKAGE
                        && let Some(fw) = self.tree.firmware_mut()
                    {
                        fw.push_abandoned(if code == Code::REQUEST_ENTITY_TOO_LARGE {
                            UpdateResult::NotEnoughFlash
                        } else {
                            UpdateResult::ConnectionLost
                        });
                    }
                    let mut r = Message::response(code);
                    if code == Code::REQUEST_ENTITY_TOO_LARGE {
                        r.set_size1(self.config.max_body as u32);
                    }
                    return r;
                }
            }
        }
        let payload: &[u8] = assembled.as_deref().unwrap_or(&req.payload);
        let mut resp = match req.code {
            Code::GET if req.accept() == Some(ContentFormat::LINK_FORMAT) => self.discover(&path),
            Code::GET => self.read_or_observe(now, &path, req),
            Code::PUT if payload.is_empty() && req.uri_query().next().is_some() => {
                self.write_attributes(&path, req)
            }
            Code::PUT => self.write(now, &path, req, payload, WriteMode::Replace),
            Code::POST => match path.depth() {
                1 => self.create(&path, req, payload),
                2 => self.write(now, &path, req, payload, WriteMode::PartialUpdate),
                3 => self.execute(&path, payload),
                _ => Message::response(Code::METHOD_NOT_ALLOWED),
            },
            Code::DELETE => self.delete(&path),
            Code::FETCH if path.depth() == 0 => self.read_composite(now, req, payload),
            Code::IPATCH if path.depth() == 0 => self.write_composite(now, req, payload),
            _ => Message::response(Code::METHOD_NOT_ALLOWED),
        };
        if let (Some(b1), true) = (req.block1(), resp.code.is_success()) {
            resp.set_block1(b1);
        }
        resp
    }

    /// The firmware object's side of a Block1 transfer: a push of /5/0/0 puts it in
    /// Downloading at its first block (or is refused there, 4.05, outside Idle), and a
    /// push the object no longer takes (cancelled, reset) ends with 4.08; another
    /// transfer starting breaks off a push under way. `Some` is the refusal to answer.
    fn package_push_step(
        &mut self,
        path: &Lwm2mPath,
        req: &Message,
        b1: BlockOption,
    ) -> Option<Message> {
        let pushing = |s: &mut Self| s.tree.firmware_mut().is_some_and(|f| f.push_under_way());
        let is_package = *path == PACKAGE && matches!(req.code, Code::PUT | Code::POST);
        if b1.num == 0 && pushing(self) {
            // A new transfer (of the package again, or of anything else) replaces it.
            if let Some(fw) = self.tree.firmware_mut() {
                fw.push_abandoned(UpdateResult::ConnectionLost);
            }
        }
        if !is_package || self.tree.firmware_mut().is_none() {
            return None;
        }
        if b1.num == 0 {
            if !b1.more {
                return None; // one block: an ordinary write
            }
            let started = self.tree.firmware_mut().map(|f| f.push_started());
            if let Some(Err(e)) = started {
                self.block1 = None;
                self.collect_changes();
                return Some(Message::response(code_for(&e)));
            }
            self.collect_changes();
            return None;
        }
        if !pushing(self) {
            self.block1 = None;
            return Some(Message::response(Code::REQUEST_ENTITY_INCOMPLETE));
        }
        None
    }

    fn block1_step(
        &mut self,
        path: &Lwm2mPath,
        req: &Message,
        b1: BlockOption,
    ) -> Result<Option<Vec<u8>>, Code> {
        let key = format!("{:?}{path}", req.code);
        let announced = req.size1().map(|n| n as usize);
        if announced.is_some_and(|n| n > self.config.max_body) {
            self.block1 = None;
            return Err(Code::REQUEST_ENTITY_TOO_LARGE);
        }
        if b1.num == 0 {
            self.block1 = Some(Block1 {
                key: key.clone(),
                body: Vec::new(),
                last_offset: 0,
                size1: None,
            });
        }
        let Some(state) = self.block1.as_mut().filter(|s| s.key == key) else {
            return Err(Code::REQUEST_ENTITY_INCOMPLETE);
        };
        let offset = b1.offset();
        if offset != state.body.len() {
            // The last block again (a retransmission): acknowledge without appending.
            if b1.more
                && offset == state.last_offset
                && offset + req.payload.len() == state.body.len()
            {
                return Ok(None);
            }
            self.block1 = None;
            return Err(Code::REQUEST_ENTITY_INCOMPLETE);
        }
        // Every block is its size; only the last may be shorter (RFC 7959 §2.2).
        if req.payload.len() > b1.size() || (b1.more && req.payload.len() != b1.size()) {
            self.block1 = None;
            return Err(Code::BAD_REQUEST);
        }
        if state.body.len() + req.payload.len() > self.config.max_body {
            self.block1 = None;
            return Err(Code::REQUEST_ENTITY_TOO_LARGE);
        }
        if announced.is_some() {
            state.size1 = announced;
        }
        state.last_offset = offset;
        state.body.extend_from_slice(&req.payload);
        if b1.more {
            return Ok(None);
        }
        let done = self.block1.take().expect("state checked above");
        if done.size1.is_some_and(|n| n != done.body.len()) {
            // The package is not the one announced: refuse it rather than apply it.
            return Err(Code::REQUEST_ENTITY_INCOMPLETE);
        }
        Ok(Some(done.body))
    }

    fn content_response(&self, req: &Message, body: Vec<u8>, fmt_number: u16) -> Message {
        let mut r = Message::response(Code::CONTENT);
        r.set_content_format(ContentFormat(fmt_number));
        let max = self.config.block_size.clamp(16, 1024);
        let requested = req.block2();
        let szx = BlockOption::szx_for_size(match requested {
            Some(b) => b.size().min(max),
            None => max,
        });
        let size = 1usize << (szx + 4);
        if body.len() <= size && requested.is_none_or(|b| b.num == 0) {
            r.payload = body;
            return r;
        }
        let num = requested.map_or(0, |b| b.num);
        let start = (num as usize).saturating_mul(size);
        if start >= body.len() && !(start == 0 && body.is_empty()) {
            return Message::response(Code::BAD_OPTION);
        }
        let end = (start + size).min(body.len());
        let more = end < body.len();
        if let Some(b) = BlockOption::new(num, more, szx) {
            r.set_block2(b);
        }
        r.set_size2(body.len() as u32);
        r.payload = body[start..end].to_vec();
        r
    }

    /// Picks the response format for a read: the Accept if the client speaks it, else text
    /// (opaque for opaque) for one single resource, TLV otherwise.
    fn pick_format(
        &self,
        req: &Message,
        content: &Content,
        path: &Lwm2mPath,
    ) -> Result<(Format, u16), Code> {
        if let Some(ContentFormat(n)) = req.accept() {
            return Format::from_code(n)
                .map(|f| (f, n))
                .ok_or(Code::NOT_ACCEPTABLE);
        }
        let f = match content.values.as_slice() {
            [(p, v)] if path.depth() >= 3 && p == path => match v {
                ResourceValue::Opaque(_) => Format::Opaque,
                _ => Format::Text,
            },
            _ => Format::Tlv,
        };
        Ok((f, f.code()))
    }

    fn read_or_observe(&mut self, now: Instant, path: &Lwm2mPath, req: &Message) -> Message {
        let observe = req.observe();
        if observe == Some(1) {
            self.observations.retain(|o| o.token != req.token());
        }
        let content = match self.tree.read(path) {
            Ok(c) => c,
            Err(e) => return Message::response(code_for(&e)),
        };
        let (fmt, number) = match self.pick_format(req, &content, path) {
            Ok(x) => x,
            Err(code) => return Message::response(code),
        };
        // The observation keeps the format negotiated here (the Accept, or the default for
        // the path), not a fallback this one answer needs: each notification falls back
        // on its own, as this read does.
        let negotiated = number;
        let (body, number) = match formats::encode(fmt, path, &content) {
            Ok(b) => (b, number),
            // No Accept: TLV carries what text cannot (a non-finite float), and says so.
            Err(_) if req.accept().is_none() => {
                match formats::encode(Format::Tlv, path, &content) {
                    Ok(b) => (b, Format::Tlv.code()),
                    Err(_) => return Message::response(Code::INTERNAL_SERVER_ERROR),
                }
            }
            Err(_) => return Message::response(Code::NOT_ACCEPTABLE),
        };
        let mut resp = self.content_response(req, body, number);
        if observe == Some(0)
            && resp.code == Code::CONTENT
            && req.block2().is_none_or(|b| b.num == 0)
        {
            let value = single_numeric(&content, path);
            let accepted = req.accept().is_some();
            if let Some(first) =
                self.start_observation(now, req.token(), *path, None, (negotiated, accepted), value)
            {
                resp.set_observe(first);
                self.push_event(ClientEvent::Observed { path: *path });
            }
        }
        resp
    }

    /// Starts (or, for a token already observing, restarts) an observation; returns the
    /// Observe value of the response, or `None` when `max_observations` are running. A
    /// restart with the same token (RFC 7641 §4.1 re-registration) goes on from the old
    /// sequence, so the observer never takes the response or the notifications after it
    /// for stale ones (§3.4, §4.4); a notification of the old one still in flight is
    /// replaced by the response.
    fn start_observation(
        &mut self,
        now: Instant,
        token: Token,
        path: Lwm2mPath,
        composite: Option<Vec<Lwm2mPath>>,
        (format, accepted): (u16, bool),
        value: Option<f64>,
    ) -> Option<u32> {
        let previous = self
            .observations
            .iter()
            .position(|o| o.token == token)
            .map(|at| self.observations.remove(at).seq);
        if self.observations.len() >= self.config.max_observations {
            return None;
        }
        let first = previous.map_or(0, |seq| (seq + 1) & 0xff_ffff);
        self.observations.push(Observation {
            token,
            path,
            composite,
            format,
            accepted,
            seq: (first + 1) & 0xff_ffff,
            timer: NotifyTimer::new(now, value),
            sent_ids: [None; SENT_IDS],
            last_confirmable: now,
            unacked: None,
            renotify: false,
            resent: false,
        });
        Some(first)
    }

    /// The SenML format a composite request's body is in (4.15 for any other).
    fn composite_body_format(req: &Message) -> Result<Format, Code> {
        match req.content_format().and_then(|c| Format::from_code(c.0)) {
            Some(f @ (Format::SenmlJson | Format::SenmlCbor)) => Ok(f),
            _ => Err(Code::UNSUPPORTED_CONTENT_FORMAT),
        }
    }

    /// The values of every path that has some, without repeats; a path with nothing to
    /// read (or that the server may not read) is left out; when none has any, the first
    /// path's error.
    fn read_paths(&mut self, paths: &[Lwm2mPath]) -> Result<Content, ObjectError> {
        let mut values: Vec<(Lwm2mPath, ResourceValue)> = Vec::new();
        let mut first_error = None;
        for path in paths {
            match self.tree.read(path) {
                Ok(c) => {
                    for (p, v) in c.values {
                        if !values.iter().any(|(q, _)| *q == p) {
                            values.push((p, v));
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if values.is_empty() => Err(e),
            _ => Ok(Content { values }),
        }
    }

    /// Read-Composite and Observe-Composite (LWM2M 1.1 §5.4.5, §5.5.2.2): FETCH on the
    /// root with a path list in SenML JSON or CBOR. The answer comes in the Accept's
    /// format when it is one that carries full paths (SenML JSON, SenML CBOR, LwM2M CBOR),
    /// else in the request's format.
    fn read_composite(&mut self, now: Instant, req: &Message, payload: &[u8]) -> Message {
        let format = match Self::composite_body_format(req) {
            Ok(f) => f,
            Err(code) => return Message::response(code),
        };
        let paths = match crate::lwm2m::content::decode_paths(format, payload) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => return Message::response(Code::BAD_REQUEST),
            Err(ContentError::TooManyValues { .. }) => {
                return Message::response(Code::REQUEST_ENTITY_TOO_LARGE);
            }
            Err(_) => return Message::response(Code::BAD_REQUEST),
        };
        let answer = match req.accept().map(|c| Format::from_code(c.0)) {
            None => format,
            Some(Some(f @ (Format::SenmlJson | Format::SenmlCbor | Format::Lwm2mCbor))) => f,
            Some(_) => return Message::response(Code::NOT_ACCEPTABLE),
        };
        let observe = req.observe();
        if observe == Some(1) {
            self.observations.retain(|o| o.token != req.token());
        }
        let content = match self.read_paths(&paths) {
            Ok(c) => c,
            Err(e) => return Message::response(code_for(&e)),
        };
        let Ok(body) = formats::encode(answer, &Lwm2mPath::ROOT, &content) else {
            return Message::response(Code::INTERNAL_SERVER_ERROR);
        };
        let mut resp = self.content_response(req, body, answer.code());
        if observe == Some(0)
            && resp.code == Code::CONTENT
            && req.block2().is_none_or(|b| b.num == 0)
        {
            let root = Lwm2mPath::ROOT;
            let format = (answer.code(), req.accept().is_some());
            if let Some(first) =
                self.start_observation(now, req.token(), root, Some(paths), format, None)
            {
                resp.set_observe(first);
                self.push_event(ClientEvent::Observed {
                    path: Lwm2mPath::ROOT,
                });
            }
        }
        resp
    }

    /// Write-Composite (LWM2M 1.1 §5.4.6): iPATCH on the root with SenML values at full
    /// paths; all validated before any is written (see [`ObjectTree::write_composite`]).
    fn write_composite(&mut self, now: Instant, req: &Message, payload: &[u8]) -> Message {
        if let Err(code) = Self::composite_body_format(req) {
            return Message::response(code);
        }
        let content = match self.decode_payload(req, payload, &Lwm2mPath::ROOT) {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => return Message::response(Code::BAD_REQUEST),
            Err(code) => return Message::response(code),
        };
        match self.tree.write_composite(content) {
            Ok(written) => {
                for p in &written {
                    if !self.changed.contains(p) {
                        self.changed.push(*p);
                    }
                }
                let server: Vec<Lwm2mPath> = written
                    .iter()
                    .filter(|p| p.object_id() == Some(1))
                    .copied()
                    .collect();
                if !server.is_empty() {
                    self.after_server_object_write(&server);
                }
                if written.iter().any(|p| p.object_id() == Some(5)) {
                    self.start_pending_download(now);
                }
                self.push_event(ClientEvent::Written {
                    path: Lwm2mPath::ROOT,
                });
                Message::response(Code::CHANGED)
            }
            Err(e) => Message::response(code_for(&e)),
        }
    }

    fn discover(&mut self, path: &Lwm2mPath) -> Message {
        let paths = match self.tree.discover(path) {
            Ok(p) => p,
            Err(e) => return Message::response(code_for(&e)),
        };
        let mut out = String::new();
        for p in paths {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&format!("<{p}>"));
            if p.depth() == 3
                && let Some(object) = p.object_id().and_then(|o| self.tree.object_mut(o))
                && object
                    .definition()
                    .resource(p.resource_id().unwrap_or(0))
                    .is_some_and(|d| d.multiple)
                && let Ok(ResourceData::Multiple(v)) =
                    object.read(p.instance_id().unwrap_or(0), p.resource_id().unwrap_or(0))
            {
                out.push_str(&format!(";dim={}", v.len()));
            }
            if let Some(a) = self.attributes.at(&p) {
                let mut add = |k: &str, v: Option<String>| {
                    if let Some(v) = v {
                        out.push_str(&format!(";{k}={v}"));
                    }
                };
                add("pmin", a.pmin.map(|v| v.to_string()));
                add("pmax", a.pmax.map(|v| v.to_string()));
                add("gt", a.gt.map(|v| v.to_string()));
                add("lt", a.lt.map(|v| v.to_string()));
                add("st", a.st.map(|v| v.to_string()));
            }
        }
        let mut r = Message::response(Code::CONTENT);
        r.set_content_format(ContentFormat::LINK_FORMAT);
        r.payload = out.into_bytes();
        r
    }

    fn decode_payload(
        &self,
        req: &Message,
        payload: &[u8],
        base: &Lwm2mPath,
    ) -> Result<Content, Code> {
        let number = req.content_format().map_or(Format::Text.code(), |c| c.0);
        let fmt = Format::from_code(number).ok_or(Code::UNSUPPORTED_CONTENT_FORMAT)?;
        if !formats::fits(fmt, self.tree.resource_type(base)) {
            return Err(Code::BAD_REQUEST);
        }
        let types = |p: &Lwm2mPath| formats::write_types(self.tree.resource_type(p));
        formats::decode(fmt, payload, base, &types).map_err(|e| match e {
            ContentError::UnsupportedFormat(_) => Code::UNSUPPORTED_CONTENT_FORMAT,
            ContentError::TooLarge { .. } | ContentError::TooManyValues { .. } => {
                Code::REQUEST_ENTITY_TOO_LARGE
            }
            _ => Code::BAD_REQUEST,
        })
    }

    fn write(
        &mut self,
        now: Instant,
        path: &Lwm2mPath,
        req: &Message,
        payload: &[u8],
        mode: WriteMode,
    ) -> Message {
        let content = match self.decode_payload(req, payload, path) {
            Ok(c) => c,
            Err(code) => return Message::response(code),
        };
        match self.tree.write(path, content, mode) {
            Ok(written) => {
                for p in &written {
                    if !self.changed.contains(p) {
                        self.changed.push(*p);
                    }
                }
                if path.object_id() == Some(1) {
                    self.after_server_object_write(&written);
                }
                if path.object_id() == Some(5) {
                    self.start_pending_download(now);
                }
                self.push_event(ClientEvent::Written { path: *path });
                Message::response(Code::CHANGED)
            }
            Err(e) => Message::response(code_for(&e)),
        }
    }

    fn after_server_object_write(&mut self, written: &[Lwm2mPath]) {
        self.refresh_defaults();
        if written
            .iter()
            .any(|p| matches!(p.resource_id(), Some(1) | Some(7)))
        {
            self.update_due = true;
        }
    }

    fn write_attributes(&mut self, path: &Lwm2mPath, req: &Message) -> Message {
        let changes = match parse_attributes(req.uri_query()) {
            Ok(c) => c,
            Err(_) => return Message::response(Code::BAD_REQUEST),
        };
        if path.depth() == 0 || path.object_id() == Some(0) {
            return Message::response(Code::METHOD_NOT_ALLOWED);
        }
        if !self.tree.exists(path) {
            return Message::response(Code::NOT_FOUND);
        }
        let thresholds = changes.iter().any(|c| {
            matches!(
                c,
                AttributeChange::Gt(Some(_))
                    | AttributeChange::Lt(Some(_))
                    | AttributeChange::St(Some(_))
            )
        });
        if thresholds {
            let kind = path
                .object_id()
                .and_then(|o| self.tree.object_mut(o))
                .and_then(|o| o.definition().resource(path.resource_id()?).map(|d| d.kind));
            let numeric_kind = matches!(
                kind,
                Some(
                    ResourceType::Integer
                        | ResourceType::UnsignedInteger
                        | ResourceType::Float
                        | ResourceType::Time
                )
            );
            if path.depth() < 3 || !numeric_kind {
                return Message::response(Code::BAD_REQUEST);
            }
        }
        match self.attributes.apply(*path, &changes) {
            Ok(()) => Message::response(Code::CHANGED),
            Err(_) => Message::response(Code::BAD_REQUEST),
        }
    }

    fn execute(&mut self, path: &Lwm2mPath, payload: &[u8]) -> Message {
        let Ok(args) = std::str::from_utf8(payload) else {
            return Message::response(Code::BAD_REQUEST);
        };
        if let Err(e) = self.tree.execute(path, args) {
            return Message::response(code_for(&e));
        }
        match *path.ids() {
            [1, _, 8] => self.update_due = true,
            [3, 0, 4] => self.push_event(ClientEvent::Reboot),
            [3, 0, 5] => self.push_event(ClientEvent::FactoryReset),
            _ => {}
        }
        self.push_event(ClientEvent::Executed {
            path: *path,
            args: args.to_string(),
        });
        Message::response(Code::CHANGED)
    }

    fn create(&mut self, path: &Lwm2mPath, req: &Message, payload: &[u8]) -> Message {
        let content = if payload.is_empty() {
            Content::default()
        } else {
            match self.decode_payload(req, payload, path) {
                Ok(c) => c,
                Err(code) => return Message::response(code),
            }
        };
        match self.tree.create(path, content) {
            Ok(created) => {
                self.objects_changed();
                self.push_event(ClientEvent::Created { path: created });
                let mut r = Message::response(Code::CREATED);
                for id in created.ids() {
                    r.add_location_path(&id.to_string());
                }
                r
            }
            Err(e) => Message::response(code_for(&e)),
        }
    }

    fn delete(&mut self, path: &Lwm2mPath) -> Message {
        match self.tree.delete(path) {
            Ok(()) => {
                self.objects_changed();
                self.attributes.remove_under(path);
                self.observations.retain(|o| !path.contains(&o.path));
                self.push_event(ClientEvent::Deleted { path: *path });
                Message::response(Code::DELETED)
            }
            Err(e) => Message::response(code_for(&e)),
        }
    }

    // ------------------------------------------------------------------ notifications

    /// The attributes an observation notifies by: its path's, or for an Observe-Composite
    /// the most eager of its paths' periods (the smallest pmin and the smallest pmax), so
    /// a change anywhere is reported as soon as that path's own observation would be;
    /// thresholds (gt, lt, st) do not apply to a composite.
    fn observation_attributes(&self, o: &Observation) -> crate::transport::NotificationAttributes {
        let Some(paths) = &o.composite else {
            return self.effective(&o.path);
        };
        let each = || paths.iter().map(|p| self.effective(p));
        crate::transport::NotificationAttributes {
            pmin: each().filter_map(|a| a.pmin).min(),
            pmax: each().filter_map(|a| a.pmax).min(),
            ..Default::default()
        }
    }

    fn effective(&self, path: &Lwm2mPath) -> crate::transport::NotificationAttributes {
        self.attributes
            .effective(path, self.default_periods.0, self.default_periods.1)
    }

    /// Moves changes (from the application and from objects) into the observations' timers.
    fn collect_changes(&mut self) {
        self.tree.drain_changes(&mut self.changed);
        if self.changed.is_empty() {
            return;
        }
        let changed = std::mem::take(&mut self.changed);
        if changed.iter().any(|p| p.object_id() == Some(1)) {
            self.refresh_defaults();
        }
        for i in 0..self.observations.len() {
            let path = self.observations[i].path;
            let hit = {
                let scope = match &self.observations[i].composite {
                    Some(paths) => paths.as_slice(),
                    None => std::slice::from_ref(&path),
                };
                changed
                    .iter()
                    .any(|c| scope.iter().any(|p| p.contains(c) || c.contains(p)))
            };
            if !hit {
                continue;
            }
            let value = if path.depth() >= 3 {
                self.tree
                    .read(&path)
                    .ok()
                    .and_then(|c| single_numeric(&c, &path))
            } else {
                None
            };
            let attrs = self.observation_attributes(&self.observations[i]);
            self.observations[i].timer.changed(&attrs, value);
        }
        self.changed = changed;
        self.changed.clear();
    }

    fn flush_notifications(&mut self, now: Instant) {
        // Whether a confirmable notification is on the wire: then a new one waits its
        // turn (see [`Unacked`]). The caller put the oldest waiting one on the wire first.
        let mut busy = self
            .observations
            .iter()
            .filter_map(|o| o.unacked.as_ref())
            .chain(self.finals.iter().map(|(_, u)| u))
            .any(Unacked::on_wire);
        let mut i = 0;
        while i < self.observations.len() {
            let path = self.observations[i].path;
            let attrs = self.observation_attributes(&self.observations[i]);
            if !self.observations[i].timer.due(now, &attrs) {
                i += 1;
                continue;
            }
            let read = match self.observations[i].composite.clone() {
                Some(paths) => self.read_paths(&paths),
                None => self.tree.read(&path),
            };
            let (number, accepted) = (self.observations[i].format, self.observations[i].accepted);
            let fmt = Format::from_code(number).unwrap_or(Format::Tlv);
            let encoded = read.map_err(|e| code_for(&e)).and_then(|content| {
                match formats::encode(fmt, &path, &content) {
                    Ok(b) => Ok((content, b, number)),
                    // The observer named this format: 4.06, as a read with that Accept.
                    Err(_) if accepted => Err(Code::NOT_ACCEPTABLE),
                    // No Accept: TLV where it can carry the value (not at the root of a
                    // composite), labelled as TLV.
                    Err(_) => match formats::encode(Format::Tlv, &path, &content) {
                        Ok(b) => Ok((content, b, Format::Tlv.code())),
                        Err(_) => Err(Code::INTERNAL_SERVER_ERROR),
                    },
                }
            });
            let (content, body, number) = match encoded {
                Ok(x) => x,
                Err(code) => {
                    // The target is gone, or its value has no form the observer takes: a
                    // final error notification ends the observation (RFC 7641 §4.2), CON
                    // (kept until acknowledged) when its notifications are.
                    let o = self.observations.remove(i);
                    let con =
                        self.config.confirmable_notifications || o.unacked.is_some() || o.renotify;
                    let mtype = if con {
                        MessageType::Confirmable
                    } else {
                        MessageType::NonConfirmable
                    };
                    let mid = self.next_mid();
                    let mut m = Message::new(mtype, code, mid);
                    m.with_token(o.token);
                    let Ok(bytes) = m.to_bytes() else {
                        continue;
                    };
                    if !con {
                        self.push_bytes(self.config.server, bytes);
                        continue;
                    }
                    if self.finals.len() >= self.config.max_observations.max(1) {
                        // Were it the one on the wire, the new one still queues: the
                        // caller then puts the oldest waiting one on the wire.
                        self.finals.remove(0);
                    }
                    match o.unacked {
                        // One in flight per observation: it waits for its turn.
                        Some(mut u) => {
                            u.replace(mid, bytes);
                            self.finals.push((o.path, u));
                        }
                        None if busy => {
                            let place = self.next_place;
                            self.next_place += 1;
                            self.finals
                                .push((o.path, Unacked::queued(mid, bytes, now, place)));
                        }
                        None => {
                            let wait = self.first_ack_wait();
                            self.finals
                                .push((o.path, Unacked::new(mid, bytes.clone(), now, wait)));
                            self.push_bytes(self.config.server, bytes);
                            busy = true;
                        }
                    }
                    continue;
                }
            };
            let value = single_numeric(&content, &path);
            let mid = self.next_mid();
            let first_wait = self.first_ack_wait();
            let always_con = self.config.confirmable_notifications;
            let o = &mut self.observations[i];
            o.seq = (o.seq + 1) & 0xff_ffff;
            o.timer.sent(now, value);
            // One that waits behind an unacknowledged CON replaces it, so it is CON too,
            // as is the one after a CON that timed out.
            let after_timeout = std::mem::take(&mut o.renotify);
            let con = always_con
                || after_timeout
                || o.unacked.is_some()
                || now.saturating_duration_since(o.last_confirmable) >= CONFIRMABLE_NOTIFY_EVERY;
            let mtype = if con {
                o.last_confirmable = now;
                MessageType::Confirmable
            } else {
                MessageType::NonConfirmable
            };
            let mut m = Message::new(mtype, Code::CONTENT, mid);
            m.with_token(o.token);
            m.set_observe(o.seq);
            m.set_content_format(ContentFormat(number));
            let max = self.config.block_size.clamp(16, 1024);
            if body.len() > max {
                let szx = BlockOption::szx_for_size(max);
                if let Some(b) = BlockOption::new(0, true, szx) {
                    m.set_block2(b);
                }
                m.set_size2(body.len() as u32);
                m.payload = body[..1usize << (szx + 4)].to_vec();
            } else {
                m.payload = body;
            }
            let Ok(bytes) = m.to_bytes() else {
                i += 1;
                continue;
            };
            let place = self.next_place;
            let o = &mut self.observations[i];
            i += 1;
            if let Some(u) = &mut o.unacked {
                // RFC 7641 §4.5.2: one still unacknowledged is replaced by this one at its
                // next retransmission (or when it is acknowledged), not joined by it; one
                // still waiting for the wire is replaced in place.
                u.replace(mid, bytes);
                continue;
            }
            if con && busy {
                o.unacked = Some(Unacked::queued(mid, bytes, now, place));
                o.resent = after_timeout;
                self.next_place += 1;
                continue;
            }
            o.sent(mid);
            if con {
                o.unacked = Some(Unacked::new(mid, bytes.clone(), now, first_wait));
                o.resent = after_timeout;
                busy = true;
            }
            self.push_bytes(self.config.server, bytes);
        }
    }

    // ------------------------------------------------------------------ firmware download

    fn start_pending_download(&mut self, now: Instant) {
        let Some(pull) = self.tree.firmware_mut().and_then(|f| f.take_pull_request()) else {
            return;
        };
        match parse_coap_uri(&pull.uri) {
            // A coaps download goes over the session with the server, so to it only.
            Ok(uri) if uri.secure && !(self.secure() && uri.addr == self.config.server) => {
                self.download_finished(Err(UpdateResult::UnsupportedProtocol))
            }
            Ok(uri) => {
                self.outgoing.retain(|o| o.purpose != Purpose::Download);
                self.download = Some(Download {
                    uri,
                    body: Vec::new(),
                    next_num: 0,
                    szx: BlockOption::szx_for_size(self.config.block_size.clamp(16, 1024)),
                    etag: None,
                });
                self.push_event(ClientEvent::FirmwareDownloadStarted { uri: pull.uri });
                self.send_download_request(now);
            }
            Err(r) => self.download_finished(Err(r)),
        }
    }

    /// Tells the firmware object whether `coaps` Package URIs can be downloaded (see
    /// [`FirmwareUpdate::set_coaps`](super::FirmwareUpdate)).
    fn sync_firmware_protocols(&mut self) {
        let secure = self.secure();
        if let Some(f) = self.tree.firmware_mut() {
            f.set_coaps(secure);
        }
    }

    /// Whether the client talks to its server over DTLS (the driver wraps every datagram
    /// to the server's address in its session).
    fn secure(&self) -> bool {
        #[cfg(feature = "dtls")]
        return self.config.psk.is_some();
        #[cfg(not(feature = "dtls"))]
        false
    }

    fn send_download_request(&mut self, now: Instant) {
        let Some(d) = self.download.as_ref() else {
            return;
        };
        let mut m = Message::new(MessageType::Confirmable, Code::GET, 0);
        for seg in &d.uri.path {
            m.add_uri_path(seg);
        }
        for q in &d.uri.query {
            m.add_uri_query(q);
        }
        if let Some(b) = BlockOption::new(d.next_num, false, d.szx) {
            m.set_block2(b);
        }
        let to = d.uri.addr;
        self.send_request(now, Purpose::Download, m, to);
    }

    fn download_block(&mut self, now: Instant, msg: &Message) {
        let max = self.config.max_body;
        // Cancelled or reset since it started (Cancel /5/0/10, an empty Package URI): the
        // download ends here, with nothing more requested.
        if !self
            .tree
            .firmware_mut()
            .is_some_and(|f| f.state() == UpdateState::Downloading)
        {
            self.download = None;
            self.outgoing.retain(|o| o.purpose != Purpose::Download);
            return;
        }
        let Some(d) = self.download.as_mut() else {
            return;
        };
        let etag = msg.etag();
        if d.next_num == 0 {
            d.etag = etag.map(<[u8]>::to_vec);
        } else if let (Some(first), Some(now)) = (d.etag.as_deref(), etag)
            && first != now
        {
            // Blocks of two versions of the package: refuse the splice. (A block without
            // an ETag says nothing either way.)
            return self.download_finished(Err(UpdateResult::IntegrityCheckFailure));
        }
        match msg.block2() {
            // The whole package at once: only as the answer to the first request, and
            // within `max_body` like a block-wise one.
            None if d.next_num == 0 && msg.payload.len() > max => {
                self.download_finished(Err(UpdateResult::NotEnoughFlash))
            }
            None if d.next_num == 0 => {
                let body = msg.payload.clone();
                self.download_finished(Ok(body));
            }
            None => self.download_finished(Err(UpdateResult::ConnectionLost)),
            Some(b) if b.num != d.next_num => {
                self.download_finished(Err(UpdateResult::ConnectionLost))
            }
            // Every block but the last is full (RFC 7959 §2.2): a short one with more to
            // come would be asked for again (empty: with no end) or spliced in twice.
            Some(b) if b.more && msg.payload.len() != b.size() => {
                self.download_finished(Err(UpdateResult::ConnectionLost))
            }
            Some(b) => {
                if d.body.len() + msg.payload.len() > max {
                    self.download_finished(Err(UpdateResult::NotEnoughFlash));
                    return;
                }
                d.body.extend_from_slice(&msg.payload);
                if b.more {
                    // Continue with the server's block size if it chose a smaller one.
                    d.szx = d.szx.min(b.szx);
                    d.next_num = ((d.body.len()) / (1usize << (d.szx + 4))) as u32;
                    self.send_download_request(now);
                } else {
                    let body = std::mem::take(&mut d.body);
                    self.download_finished(Ok(body));
                }
            }
        }
    }

    fn download_finished(&mut self, outcome: Result<Vec<u8>, UpdateResult>) {
        self.download = None;
        self.outgoing.retain(|o| o.purpose != Purpose::Download);
        let Some(fw) = self.tree.firmware_mut() else {
            return;
        };
        match &outcome {
            Ok(body) => fw.download_finished(Ok(body)),
            Err(r) => fw.download_finished(Err(*r)),
        }
        let (state, result) = (fw.state(), fw.result());
        self.push_event(ClientEvent::FirmwareDownloadFinished { state, result });
        self.collect_changes();
    }
}

/// The CoAP response code for an object's refusal.
fn code_for(e: &ObjectError) -> Code {
    match e {
        ObjectError::NotFound => Code::NOT_FOUND,
        ObjectError::MethodNotAllowed => Code::METHOD_NOT_ALLOWED,
        ObjectError::Unauthorized => Code::UNAUTHORIZED,
        ObjectError::Rejected | ObjectError::TypeMismatch { .. } | ObjectError::AlreadyExists => {
            Code::BAD_REQUEST
        }
        _ => Code::INTERNAL_SERVER_ERROR,
    }
}

/// The server account Bootstrap-Finish found.
struct ProvisionedAccount {
    server: SocketAddr,
    secure: bool,
    #[cfg(feature = "dtls")]
    psk: Option<crate::dtls::PskCredentials>,
}

/// `host:port` (or `[v6]:port`, or a host alone) as a socket address: an IP literal or
/// `localhost`; no name lookups.
fn parse_authority(authority: &str, default_port: u16) -> Option<SocketAddr> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse().ok()?
    };
    Some(SocketAddr::new(ip, port))
}

/// The numeric value of a single-resource read at `path`, for gt / lt / st.
fn single_numeric(content: &Content, path: &Lwm2mPath) -> Option<f64> {
    match content.values.as_slice() {
        [(p, v)] if p == path => numeric(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn request(mid: u16) -> Message {
        let mut m = Message::request(Code::GET, "/3/0/0");
        m.mtype = MessageType::Confirmable;
        m.message_id = mid;
        m
    }

    /// The answers the cache holds, by peer port and message id, oldest first.
    fn cached(c: &Lwm2mClient) -> Vec<(u16, u16)> {
        c.dedup
            .iter()
            .map(|(p, mid, ..)| (p.port(), *mid))
            .collect()
    }

    /// Whether a copy of `from`'s request `mid` is answered from the cache (and the answer
    /// queued); the queue is emptied.
    fn replayed(c: &mut Lwm2mClient, now: Instant, from: SocketAddr, mid: u16) -> bool {
        let hit = c.replay_duplicate(now, from, &request(mid));
        let queued: Vec<Transmit> = std::iter::from_fn(|| c.poll_transmit()).collect();
        assert_eq!(queued.len(), usize::from(hit));
        if let Some(t) = queued.first() {
            assert_eq!(
                (t.destination, t.payload.as_slice()),
                (from, &[mid as u8][..])
            );
        }
        hit
    }

    /// A duplicate's answer is queued like any datagram: with [`QUEUE_BOUND`] datagrams
    /// unsent (the application did not drain them), the oldest goes and the answer the
    /// server is retransmitting for goes out. Before, the replayed answer itself was
    /// dropped there, unlike every other datagram.
    #[test]
    fn a_duplicates_answer_at_the_queue_bound_drops_the_oldest_datagram() {
        let now = Instant::now();
        let a = peer(1);
        let mut client = Lwm2mClient::new(now, ClientConfig::new("d", a), ObjectTree::new());
        while client.poll_transmit().is_some() {}
        client.remember_answer(now, a, 7, vec![7]);
        for n in 0..QUEUE_BOUND {
            client.push_bytes(peer(2), (n as u32).to_be_bytes().to_vec());
        }
        assert!(client.replay_duplicate(now, a, &request(7)));
        let queued: Vec<Transmit> = std::iter::from_fn(|| client.poll_transmit()).collect();
        assert_eq!(queued.len(), QUEUE_BOUND);
        assert_eq!(queued[0].payload, 1u32.to_be_bytes(), "the oldest went");
        let last = queued.last().unwrap();
        assert_eq!((last.destination, last.payload.as_slice()), (a, &[7u8][..]));
    }

    /// The duplicate cache's bound in all: 2 x [`DEDUP_ENTRIES`] answers. Two peers at
    /// their bound a peer fill it; a third peer's answers (an LWM2M server the client was
    /// moved to by a re-bootstrap, the old one still in the cache) push out the oldest
    /// answers of all (the first peer's, one by one), never the second peer's; once the
    /// third has its own 8, its own oldest go.
    #[test]
    fn duplicate_cache_bound_in_all_is_sixteen_answers() {
        let now = Instant::now();
        let (a, b, c) = (peer(1), peer(2), peer(3));
        let mut client = Lwm2mClient::new(now, ClientConfig::new("d", a), ObjectTree::new());
        for mid in 0..8u16 {
            client.remember_answer(now, a, mid, vec![mid as u8]);
        }
        for mid in 100..108u16 {
            client.remember_answer(now, b, mid, vec![mid as u8]);
        }
        assert_eq!(client.dedup.len(), 2 * DEDUP_ENTRIES);
        for mid in 0..8 {
            assert!(replayed(&mut client, now, a, mid), "a's {mid}");
        }
        // The third peer's first answer: the oldest of all (a's 0) goes.
        client.remember_answer(now, c, 200, vec![200]);
        assert_eq!(client.dedup.len(), 16);
        assert!(!replayed(&mut client, now, a, 0), "a's oldest pushed out");
        assert!(replayed(&mut client, now, a, 1));
        for mid in 201..208u16 {
            client.remember_answer(now, c, mid, vec![mid as u8]);
        }
        // a's answers went one by one as c's came; b kept its 8.
        let mut expected: Vec<(u16, u16)> = (100..108).map(|m| (2, m)).collect();
        expected.extend((200..208).map(|m| (3, m)));
        assert_eq!(cached(&client), expected);
        // c has its 8: its own oldest goes, b's stay.
        client.remember_answer(now, c, 208, vec![208]);
        assert_eq!(client.dedup.len(), 16);
        assert!(!replayed(&mut client, now, c, 200), "c's oldest pushed out");
        assert!(replayed(&mut client, now, c, 201));
        for mid in 100..108 {
            assert!(replayed(&mut client, now, b, mid), "b's {mid} stays");
        }
        // Each for EXCHANGE_LIFETIME only.
        let later = now + EXCHANGE_LIFETIME;
        assert!(!replayed(&mut client, later, b, 107));
        assert!(client.dedup.is_empty());
    }
}
