//! The LWM2M bootstrap interface, server side (LWM2M 1.1 §5.2, §6.1): a device that
//! knows only its bootstrap server asks `POST /bs?ep=NAME` and is given its server
//! accounts (a Security `/0` and a Server `/1` instance per LWM2M server, with the PSK it
//! will use there), then told to finish.
//!
//! The server runs it on the same CoAP endpoint as the registration interface, so a hub
//! bound to UDP or to DTLS serves bootstrap too (over DTLS the request carries the
//! bootstrap session's authenticated identity, which the [`Bootstrapper`] may check).
//! Over DTLS the session's requests, whose Writes carry the LWM2M servers' keys, leave
//! only through a DTLS session of the identity that asked for the bootstrap, whatever
//! registration holds the address ([`Lwm2mServer::may_send`]): a device bootstraps
//! again from the address it registered from, through its bootstrap identity. Before,
//! they were judged as the registration's requests there (refused: the bootstrap failed
//! after about 93 s), and went through any session at an address no registration held.
//! Their answers (an empty ACK or an RST too) count only through a session of that
//! identity; through another, they are dropped unseen and the request goes on being
//! retransmitted (before, any session's answer moved the bootstrap on, and an answer to
//! the Finish ended it `Finished`).
//!
//! A bootstrap session, one at a time per device address, in this order, each request
//! waiting for the previous answer:
//!
//! 1. Bootstrap-Discover (`GET /` with Accept link format). An LWM2M 1.0 client may not
//!    support it, so its answer (or error) never stops the session.
//! 2. Bootstrap-Delete of `/` when the plan says so (the client keeps its bootstrap
//!    account and the Device object, as the specification asks); 4.04 counts as done.
//! 3. Bootstrap-Write (`PUT /0/{i}` then `PUT /1/{i}`, TLV, which every client reads) of
//!    each account: Server URI, Bootstrap-Server false, Security Mode (0 PSK, 3 NoSec),
//!    PSK identity and key, Short Server ID; Short Server ID, lifetime, notification
//!    storing off, binding.
//! 4. Bootstrap-Finish (`POST /bs`).
//!
//! Any other error or a time-out ends the session as failed; the device retries on its
//! own (its hold-off and retry timers). The outcome is a [`DeviceEvent::Bootstrap`].
//! A Finish whose answer is lost is retransmitted like any request, and a client that
//! already left for its LWM2M server answers the copy from its duplicate cache (the
//! crate's device library does, also over DTLS), so one answer getting through ends the
//! session finished. When this server is also the LWM2M server the device was given (a
//! hub that hosts both), an accepted Register of the session's endpoint while its Finish
//! is out counts as the Finish's answer: a device registers only once it applied the
//! Finish, so the session ends finished (reported before the registration) and the
//! Finish is not sent again, even if every answer to it was lost; requests of another
//! registration at the session's address that waited behind the Finish (CoAP NSTART)
//! go then, after the Register is reported (before, they waited until that
//! registration's device next talked, or [`ServerConfig::queue_timeout`](super::ServerConfig::queue_timeout)
//! failed them). Otherwise a Finish
//! that times out (no answer got through) is reported failed, as in Leshan's bootstrap
//! session, although the device may have applied it and registered elsewhere: this
//! server cannot tell.
//!
//! Bounds: at most [`MAX_BOOTSTRAP_SESSIONS`] sessions at once (a request beyond them is
//! answered 5.03 and nothing starts; the device retries later); a new request from an
//! address that has a session replaces it. A request without `ep`, or one the
//! [`Bootstrapper`] has no plan for, is answered 4.00 (LWM2M §5.2.7.1) and reported as
//! refused.

use super::Lwm2mServer;
use crate::coap::{Code, ContentFormat as CoapFormat, IncomingRequestId, Message, MessageType};
use crate::coap::{RequestError, RequestId};
use crate::lwm2m::content::{self, ContentFormat};
use crate::lwm2m::{Content, Lwm2mPath, ResourceValue};
use crate::transport::{BootstrapOutcome, DeviceEvent, PeerIdentity};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

/// The most bootstrap sessions running at once.
pub const MAX_BOOTSTRAP_SESSIONS: usize = 1_024;

/// What a device asked for when it sent Bootstrap-Request.
#[derive(Clone, Debug, PartialEq)]
pub struct BootstrapRequest {
    /// The endpoint name (`ep`).
    pub endpoint: String,
    /// Where the request came from.
    pub address: SocketAddr,
    /// The DTLS identity of the bootstrap session, when there is one.
    pub identity: Option<PeerIdentity>,
}

/// How a device will secure its connection to an LWM2M server (Security Mode, `/0/x/2`).
#[derive(Clone, PartialEq, Eq)]
pub enum AccountSecurity {
    /// No security (mode 3): plain CoAP.
    NoSec,
    /// Pre-shared key (mode 0): the PSK identity (`/0/x/3`) and key (`/0/x/5`).
    Psk {
        /// The PSK identity.
        identity: String,
        /// The key's bytes. Never shown by `Debug`.
        key: Vec<u8>,
    },
}

impl fmt::Debug for AccountSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountSecurity::NoSec => f.write_str("NoSec"),
            AccountSecurity::Psk { identity, key } => f
                .debug_struct("Psk")
                .field("identity", identity)
                .field("key", &format_args!("<{} bytes>", key.len()))
                .finish(),
        }
    }
}

/// One LWM2M server account to write into a device: a Security `/0` instance and a
/// Server `/1` instance.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerAccount {
    /// Short Server ID (`/0/x/10`, `/1/x/0`), 1..=65534.
    pub short_server_id: u16,
    /// The server's URI (`/0/x/0`), e.g. `coaps://192.0.2.1:5684`.
    pub uri: String,
    /// Registration lifetime in seconds (`/1/x/1`).
    pub lifetime: u32,
    /// Binding (`/1/x/7`), e.g. `U`.
    pub binding: String,
    /// How the device secures the connection.
    pub security: AccountSecurity,
    /// The Security instance to write (`/0/{security_instance}`); by default 1, leaving 0
    /// to a bootstrap account a factory may have put there.
    pub security_instance: u16,
    /// The Server instance to write (`/1/{server_instance}`); by default 0.
    pub server_instance: u16,
}

impl ServerAccount {
    /// An account for the server at `uri` with no security, lifetime 300 s, binding `U`,
    /// Security instance 1 and Server instance 0.
    pub fn new(short_server_id: u16, uri: impl Into<String>) -> Self {
        ServerAccount {
            short_server_id,
            uri: uri.into(),
            lifetime: 300,
            binding: "U".into(),
            security: AccountSecurity::NoSec,
            security_instance: 1,
            server_instance: 0,
        }
    }

    /// The same account secured with a pre-shared key.
    pub fn with_psk(mut self, identity: impl Into<String>, key: Vec<u8>) -> Self {
        self.security = AccountSecurity::Psk {
            identity: identity.into(),
            key,
        };
        self
    }

    /// The same account with this registration lifetime.
    pub fn with_lifetime(mut self, seconds: u32) -> Self {
        self.lifetime = seconds;
        self
    }

    fn security_content(&self) -> (Lwm2mPath, Content) {
        let i = self.security_instance;
        let r = |rid| Lwm2mPath::resource(0, i, rid);
        let mut values = vec![
            (r(0), ResourceValue::String(self.uri.clone())),
            (r(1), ResourceValue::Boolean(false)),
        ];
        match &self.security {
            AccountSecurity::NoSec => values.push((r(2), ResourceValue::Integer(3))),
            AccountSecurity::Psk { identity, key } => values.extend([
                (r(2), ResourceValue::Integer(0)),
                (r(3), ResourceValue::Opaque(identity.as_bytes().to_vec())),
                (r(5), ResourceValue::Opaque(key.clone())),
            ]),
        }
        values.push((r(10), ResourceValue::Integer(self.short_server_id.into())));
        (Lwm2mPath::instance(0, i), Content { values })
    }

    fn server_content(&self) -> (Lwm2mPath, Content) {
        let i = self.server_instance;
        let r = |rid| Lwm2mPath::resource(1, i, rid);
        let values = vec![
            (r(0), ResourceValue::Integer(self.short_server_id.into())),
            (r(1), ResourceValue::Integer(self.lifetime.into())),
            (r(6), ResourceValue::Boolean(false)),
            (r(7), ResourceValue::String(self.binding.clone())),
        ];
        (Lwm2mPath::instance(1, i), Content { values })
    }
}

/// What to give a device that asked to be bootstrapped.
#[derive(Clone, Debug, PartialEq)]
pub struct BootstrapPlan {
    /// Bootstrap-Delete `/` before writing (default true): the device forgets the server
    /// accounts it had.
    pub delete_first: bool,
    /// The accounts to write, in order.
    pub servers: Vec<ServerAccount>,
}

impl BootstrapPlan {
    /// A plan that deletes what the device had and writes these accounts.
    pub fn new(servers: Vec<ServerAccount>) -> Self {
        BootstrapPlan {
            delete_first: true,
            servers,
        }
    }
}

/// Decides what a device gets: `None` refuses it (4.00). Called on the server's thread
/// for every Bootstrap-Request; keep it quick.
pub type Bootstrapper = Box<dyn Fn(&BootstrapRequest) -> Option<BootstrapPlan> + Send>;

/// One request of a session.
#[derive(Clone, Debug)]
enum Step {
    Discover,
    Delete(Lwm2mPath),
    Write(Lwm2mPath, Content),
    Finish,
}

impl Step {
    fn name(&self) -> String {
        match self {
            Step::Discover => "discover".into(),
            Step::Delete(p) => format!("delete {p}"),
            Step::Write(p, _) => format!("write {p}"),
            Step::Finish => "finish".into(),
        }
    }

    fn message(&self) -> Result<Message, String> {
        let mut m = Message::new(MessageType::Confirmable, Code::GET, 0);
        let path = match self {
            Step::Discover => {
                m.set_accept(CoapFormat::LINK_FORMAT);
                Lwm2mPath::ROOT
            }
            Step::Delete(p) => {
                m.code = Code::DELETE;
                *p
            }
            Step::Write(p, c) => {
                m.code = Code::PUT;
                m.set_content_format(CoapFormat(ContentFormat::Tlv.code()));
                m.payload = content::encode(ContentFormat::Tlv, p, c).map_err(|e| e.to_string())?;
                *p
            }
            Step::Finish => {
                m.code = Code::POST;
                m.add_uri_path("bs");
                return Ok(m);
            }
        };
        for id in path.ids() {
            m.add_uri_path(&id.to_string());
        }
        Ok(m)
    }
}

struct Session {
    endpoint: String,
    /// The identity that asked for it (none over plain CoAP): its requests, which carry
    /// the LWM2M servers' keys, go only through a session of it
    /// ([`Lwm2mServer::may_send`]).
    identity: Option<PeerIdentity>,
    steps: VecDeque<Step>,
    /// The request in flight and its step.
    current: Option<(RequestId, Step)>,
}

/// The bootstrap side of a server: the plan maker and the sessions.
#[derive(Default)]
pub(super) struct Bootstraps {
    pub(super) bootstrapper: Option<Bootstrapper>,
    sessions: HashMap<SocketAddr, Session>,
    by_request: HashMap<RequestId, SocketAddr>,
}

impl Bootstraps {
    pub(super) fn owns(&self, id: RequestId) -> bool {
        self.by_request.contains_key(&id)
    }

    /// The address a session's request `id` went to.
    pub(super) fn peer_of(&self, id: RequestId) -> Option<SocketAddr> {
        self.by_request.get(&id).copied()
    }

    /// The identity that asked for the session whose request `id` is (`None`: no
    /// session's request; `Some(None)`: one asked for over plain CoAP).
    pub(super) fn identity_of(&self, id: RequestId) -> Option<Option<&PeerIdentity>> {
        let peer = self.by_request.get(&id)?;
        self.sessions.get(peer).map(|s| s.identity.as_ref())
    }

    pub(super) fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

impl Lwm2mServer {
    /// Serves the bootstrap interface (`POST /bs`): `bootstrapper` decides what each
    /// device that asks gets (see the [`bootstrap`](super::bootstrap) module docs).
    /// Without it, a Bootstrap-Request is answered 4.04.
    pub fn with_bootstrap(mut self, bootstrapper: Bootstrapper) -> Self {
        self.bootstraps.bootstrapper = Some(bootstrapper);
        self
    }

    /// Bootstrap sessions running now.
    pub fn bootstrap_sessions(&self) -> usize {
        self.bootstraps.session_count()
    }

    /// Bootstrap-Request (`POST /bs?ep=NAME`): answers it and starts the session.
    pub(super) fn bootstrap_request(
        &mut self,
        now: Instant,
        id: IncomingRequestId,
        peer: SocketAddr,
        m: &Message,
    ) {
        let code = self.bootstrap_answer(now, peer, m);
        let _ = self.endpoint.respond(now, id, Message::response(code));
        if code == Code::CHANGED {
            self.next_bootstrap_step(now, peer);
        }
    }

    fn bootstrap_answer(&mut self, now: Instant, peer: SocketAddr, m: &Message) -> Code {
        if m.code != Code::POST {
            return Code::METHOD_NOT_ALLOWED;
        }
        let Some(bootstrapper) = &self.bootstraps.bootstrapper else {
            return Code::NOT_FOUND;
        };
        let endpoint = m
            .uri_query()
            .find_map(|q| q.strip_prefix("ep="))
            .map(str::to_owned)
            .or_else(|| {
                let identity = self.current_identity.as_ref()?;
                identity.device.as_ref().map(|d| d.to_string())
            });
        let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) else {
            return Code::BAD_REQUEST;
        };
        let request = BootstrapRequest {
            endpoint: endpoint.clone(),
            address: peer,
            identity: self.current_identity.clone(),
        };
        let Some(plan) = bootstrapper(&request) else {
            self.events.push_back(DeviceEvent::Bootstrap {
                endpoint,
                address: Some(peer),
                outcome: BootstrapOutcome::Refused,
            });
            return Code::BAD_REQUEST;
        };
        if !self.bootstraps.sessions.contains_key(&peer)
            && self.bootstraps.sessions.len() >= MAX_BOOTSTRAP_SESSIONS
        {
            return Code::SERVICE_UNAVAILABLE;
        }
        let mut steps = VecDeque::from([Step::Discover]);
        if plan.delete_first {
            steps.push_back(Step::Delete(Lwm2mPath::ROOT));
        }
        for account in &plan.servers {
            let (path, c) = account.security_content();
            steps.push_back(Step::Write(path, c));
            let (path, c) = account.server_content();
            steps.push_back(Step::Write(path, c));
        }
        steps.push_back(Step::Finish);
        if let Some(old) = self.bootstraps.sessions.insert(
            peer,
            Session {
                endpoint,
                identity: self.current_identity.clone(),
                steps,
                current: None,
            },
        ) {
            if let Some((rid, _)) = old.current {
                self.bootstraps.by_request.remove(&rid);
                self.endpoint.forget_request(now, rid);
            }
            // Every session ends with an outcome, this one too.
            self.events.push_back(DeviceEvent::Bootstrap {
                endpoint: old.endpoint,
                address: Some(peer),
                outcome: BootstrapOutcome::Failed("replaced by a new Bootstrap-Request".into()),
            });
        }
        Code::CHANGED
    }

    /// Sends the session's next request, or ends it.
    fn next_bootstrap_step(&mut self, now: Instant, peer: SocketAddr) {
        let Some(session) = self.bootstraps.sessions.get_mut(&peer) else {
            return;
        };
        let Some(step) = session.steps.pop_front() else {
            return;
        };
        let sent = step
            .message()
            .and_then(|m| {
                self.endpoint
                    .send_request(now, peer, m)
                    .map_err(|e| e.to_string())
            })
            .map(|rid| (rid, step.clone()));
        match sent {
            Ok((rid, step)) => {
                session.current = Some((rid, step));
                self.bootstraps.by_request.insert(rid, peer);
            }
            Err(reason) => self.end_bootstrap(peer, Err(format!("{}: {reason}", step.name()))),
        }
    }

    /// An answer (or a failure) to a bootstrap session's request.
    pub(super) fn bootstrap_answered(
        &mut self,
        now: Instant,
        id: RequestId,
        answer: Result<&Message, RequestError>,
    ) {
        let Some(peer) = self.bootstraps.by_request.remove(&id) else {
            return;
        };
        let Some((_, step)) = self
            .bootstraps
            .sessions
            .get_mut(&peer)
            .and_then(|s| s.current.take())
        else {
            return;
        };
        let code = match answer {
            Ok(m) => m.code,
            // A 1.0 client that does not know Bootstrap-Discover may reset it: like an
            // error answer, that does not stop the session (a time-out does: the device
            // is gone).
            Err(RequestError::Reset) if matches!(step, Step::Discover) => Code::NOT_FOUND,
            Err(e) => return self.end_bootstrap(peer, Err(format!("{}: {e}", step.name()))),
        };
        let done = match step {
            // An LWM2M 1.0 client may not know Bootstrap-Discover: go on regardless.
            Step::Discover => true,
            Step::Delete(_) => code.is_success() || code == Code::NOT_FOUND,
            Step::Write(..) | Step::Finish => code.is_success(),
        };
        if !done {
            let (class, detail) = (code.class(), code.detail());
            return self.end_bootstrap(
                peer,
                Err(format!("{}: answered {class}.{detail:02}", step.name())),
            );
        }
        if matches!(step, Step::Finish) {
            return self.end_bootstrap(peer, Ok(()));
        }
        self.next_bootstrap_step(now, peer);
    }

    /// A Register of `endpoint` was accepted here: a session of that endpoint whose
    /// Finish is out but unanswered ends finished (the device only registers once it
    /// applied the Finish; its answers were lost), and the Finish is not sent again.
    /// Returns the session's address, free now for the requests of a registration there
    /// that waited behind the Finish (CoAP NSTART): the caller pumps it, once the
    /// Register is reported.
    pub(super) fn bootstrap_registered(
        &mut self,
        now: Instant,
        endpoint: &str,
    ) -> Option<SocketAddr> {
        let peer = self.bootstraps.sessions.iter().find_map(|(peer, s)| {
            let finishing = matches!(s.current, Some((_, Step::Finish)));
            (finishing && s.endpoint == endpoint).then_some(*peer)
        })?;
        if let Some((rid, _)) = self
            .bootstraps
            .sessions
            .get_mut(&peer)
            .and_then(|s| s.current.take())
        {
            self.bootstraps.by_request.remove(&rid);
            self.endpoint.forget_request(now, rid);
        }
        self.end_bootstrap(peer, Ok(()));
        Some(peer)
    }

    fn end_bootstrap(&mut self, peer: SocketAddr, result: Result<(), String>) {
        let Some(session) = self.bootstraps.sessions.remove(&peer) else {
            return;
        };
        self.events.push_back(DeviceEvent::Bootstrap {
            endpoint: session.endpoint,
            address: Some(peer),
            outcome: match result {
                Ok(()) => BootstrapOutcome::Finished,
                Err(reason) => BootstrapOutcome::Failed(reason),
            },
        });
    }
}
