//! The device library's client against a bootstrap server the test plays (sans-IO, a
//! simulated clock): the addresses, the client with a bootstrap account, and the bootstrap
//! server's side (its requests, with the client's piggybacked answers, and its answers to
//! the client's requests). Shared by the client bootstrap test files (each is its own
//! crate and uses a part).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Instant;
use twinhub::coap::{Code, ContentFormat, Message, MessageType};
use twinhub::lwm2m::client::{ClientConfig, ClientEvent, Lwm2mClient, ObjectTree, objects};
use twinhub::lwm2m::content::{self, ContentFormat as Cf};
use twinhub::{Content, Lwm2mPath, ResourceValue};

/// The bootstrap server's address.
pub fn bs() -> SocketAddr {
    "127.0.0.1:5783".parse().unwrap()
}

/// The management server's address.
pub fn dm() -> SocketAddr {
    "127.0.0.1:6000".parse().unwrap()
}

/// A device with only its bootstrap account (`coap://` [`bs`]), an unprovisioned Server
/// object and its Device object.
pub fn bootstrap_tree() -> ObjectTree {
    let mut tree = ObjectTree::new();
    tree.add(objects::bootstrap_security(&format!("coap://{}", bs())));
    tree.add(objects::unprovisioned_server());
    tree.add(objects::device("Contoso", "MX1", "SN-42", "1.0.0"));
    tree
}

/// Endpoint `dev-1`, bootstrapping from [`bs`].
pub fn bootstrap_config() -> ClientConfig {
    ClientConfig::new("dev-1", bs()).with_bootstrap(bs())
}

/// Security instance `iid`'s values: server `uri`, not a bootstrap server, NoSec, Short
/// Server ID `ssid`.
pub fn security(iid: u16, uri: &str, ssid: i64) -> Vec<(Lwm2mPath, ResourceValue)> {
    let r = |rid| Lwm2mPath::resource(0, iid, rid);
    vec![
        (r(0), ResourceValue::String(uri.into())),
        (r(1), ResourceValue::Boolean(false)),
        (r(2), ResourceValue::Integer(3)),
        (r(10), ResourceValue::Integer(ssid)),
    ]
}

/// Server instance `iid`'s values: Short Server ID `ssid`, `lifetime`, binding `U`.
pub fn server(iid: u16, ssid: i64, lifetime: i64) -> Vec<(Lwm2mPath, ResourceValue)> {
    let s = |rid| Lwm2mPath::resource(1, iid, rid);
    vec![
        (s(0), ResourceValue::Integer(ssid)),
        (s(1), ResourceValue::Integer(lifetime)),
        (s(7), ResourceValue::String("U".into())),
    ]
}

/// The client, and the bootstrap server the test plays.
pub struct Dev {
    pub client: Lwm2mClient,
    /// The simulated clock.
    pub now: Instant,
    /// The bootstrap server's last message id (its requests' tokens are made of it).
    pub mid: u16,
}

impl Dev {
    /// The client of `tree` and `config`, started now; the bootstrap server's message ids
    /// start after `mid`.
    pub fn new(tree: ObjectTree, config: ClientConfig, mid: u16) -> Dev {
        let now = Instant::now();
        Dev {
            client: Lwm2mClient::new(now, config, tree),
            now,
            mid,
        }
    }

    /// What the client sent, decoded, with the destinations.
    pub fn sent(&mut self) -> Vec<(SocketAddr, Message)> {
        std::iter::from_fn(|| self.client.poll_transmit())
            .map(|t| (t.destination, Message::decode(&t.payload).unwrap()))
            .collect()
    }

    /// The client's events.
    pub fn events(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    /// `from` answers the client's `req` with `code` (piggybacked).
    pub fn answer_from(&mut self, from: SocketAddr, req: &Message, code: Code) {
        let mut r = Message::new(MessageType::Acknowledgement, code, req.message_id);
        r.with_token(req.token());
        self.client
            .handle_datagram(self.now, from, &r.to_bytes().unwrap());
    }

    /// Sends Bootstrap-Request and has the bootstrap server accept it (the client's
    /// events then are dropped).
    pub fn start_bootstrap(&mut self) {
        self.client.handle_timeout(self.now);
        let sent = self.sent();
        let (_, req) = sent
            .iter()
            .find(|(to, m)| *to == bs() && m.uri_path().eq(["bs"]))
            .expect("a Bootstrap-Request")
            .clone();
        self.answer_from(bs(), &req, Code::CHANGED);
        self.events();
    }

    /// A confirmable request `m` from the bootstrap server; the client's piggybacked
    /// answer.
    pub fn request(&mut self, mut m: Message) -> Message {
        self.mid = self.mid.wrapping_add(1);
        m.mtype = MessageType::Confirmable;
        m.message_id = self.mid;
        m.set_token(&self.mid.to_be_bytes());
        self.client
            .handle_datagram(self.now, bs(), &m.to_bytes().unwrap());
        let mid = self.mid;
        self.sent()
            .into_iter()
            .map(|(_, m)| m)
            .find(|r| r.message_id == mid && r.mtype == MessageType::Acknowledgement)
            .expect("a piggybacked answer")
    }

    /// Bootstrap-Write of `values` to `target` (TLV); the client's answer code.
    pub fn write(&mut self, target: Lwm2mPath, values: Vec<(Lwm2mPath, ResourceValue)>) -> Code {
        let mut m = Message::request(Code::PUT, &target.to_string());
        m.set_content_format(ContentFormat(Cf::Tlv.code()));
        m.payload = content::encode(Cf::Tlv, &target, &Content { values }).unwrap();
        self.request(m).code
    }

    /// Bootstrap-Finish; the client's answer code.
    pub fn finish(&mut self) -> Code {
        self.request(Message::request(Code::POST, "/bs")).code
    }
}
