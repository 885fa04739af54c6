//! The device library's sans-IO client driven by a scripted LwM2M server under a simulated
//! clock: the test plays the server, datagram by datagram. Shared by the client test files
//! (each is its own crate; each uses a part, and may add its own `impl Harness` block).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, ContentFormat, Message, MessageType};
use twinhub::lwm2m::client::{ClientConfig, ClientEvent, Lwm2mClient, ObjectTree};

/// The scripted server's address.
pub const SERVER: &str = "127.0.0.1:5683";

/// [`SERVER`] as an address.
pub fn server() -> SocketAddr {
    SERVER.parse().unwrap()
}

/// A client and the server's side of its exchanges.
pub struct Harness {
    /// The client under test.
    pub client: Lwm2mClient,
    /// The simulated clock.
    pub now: Instant,
    /// The server's last message id.
    pub mid: u16,
    /// The server's last token.
    pub token: u32,
    /// Datagrams the client sent besides the response `request` returned.
    pub backlog: Vec<Message>,
}

impl Harness {
    /// A client that has not sent anything yet.
    pub fn new(now: Instant, config: ClientConfig, tree: ObjectTree) -> Harness {
        Harness {
            client: Lwm2mClient::new(now, config, tree),
            now,
            mid: 100,
            token: 1,
            backlog: Vec::new(),
        }
    }

    /// A client `dev-1` with `tree` that has registered (the server answered 2.01 rd/abc).
    pub fn registered_with(tree: ObjectTree) -> Harness {
        Harness::registered_configured(ClientConfig::new("dev-1", server()), tree)
    }

    /// A client that has registered (the server answered 2.01 rd/abc).
    pub fn registered_configured(config: ClientConfig, tree: ObjectTree) -> Harness {
        let mut h = Harness::new(Instant::now(), config, tree);
        h.client.handle_timeout(h.now);
        let reg = h.sent().pop().expect("register sent");
        h.answer(&reg, Code::CREATED, |r| {
            r.add_location_path("rd");
            r.add_location_path("abc");
        });
        assert_eq!(
            h.events(),
            vec![ClientEvent::Registered {
                location: "/rd/abc".into()
            }]
        );
        h
    }

    /// Every datagram the client sent since the last look (the backlog first).
    pub fn sent(&mut self) -> Vec<Message> {
        let mut out = std::mem::take(&mut self.backlog);
        while let Some(t) = self.client.poll_transmit() {
            out.push(Message::decode(&t.payload).expect("client sends valid CoAP"));
        }
        out
    }

    /// Every event the client reported since the last look.
    pub fn events(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    /// Answers a client request (piggybacked ACK).
    pub fn answer(&mut self, req: &Message, code: Code, f: impl FnOnce(&mut Message)) {
        let mut r = Message::new(MessageType::Acknowledgement, code, req.message_id);
        r.with_token(req.token());
        f(&mut r);
        self.client
            .handle_datagram(self.now, server(), &r.to_bytes().unwrap());
    }

    /// Sends a CON request from the server; returns the client's response.
    pub fn request(&mut self, mut req: Message) -> Message {
        self.mid = self.mid.wrapping_add(1);
        self.token += 1;
        req.mtype = MessageType::Confirmable;
        req.message_id = self.mid;
        req.set_token(&self.token.to_be_bytes());
        self.client
            .handle_datagram(self.now, server(), &req.to_bytes().unwrap());
        let mut sent = self.sent();
        let pos = sent
            .iter()
            .position(|m| m.message_id == self.mid && m.mtype == MessageType::Acknowledgement)
            .expect("piggybacked response");
        let resp = sent.remove(pos);
        self.backlog.extend(sent);
        resp
    }

    /// A GET of `path`, with an Accept of `accept` if given.
    pub fn get(&mut self, path: &str, accept: Option<u16>) -> Message {
        let mut m = Message::request(Code::GET, path);
        if let Some(a) = accept {
            m.set_accept(ContentFormat(a));
        }
        self.request(m)
    }

    /// The answer to a GET of `path`, as text.
    pub fn get_text(&mut self, path: &str) -> String {
        let r = self.request(Message::request(Code::GET, path));
        String::from_utf8_lossy(&r.payload).into_owned()
    }

    /// A PUT of `text` (text/plain) to `path`.
    pub fn put_text(&mut self, path: &str, text: &str) -> Message {
        let mut m = Message::request(Code::PUT, path);
        m.set_content_format(ContentFormat::TEXT_PLAIN);
        m.payload = text.as_bytes().to_vec();
        self.request(m)
    }

    /// Moves the clock `secs` seconds on and lets the client act.
    pub fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.client.handle_timeout(self.now);
    }

    /// Acknowledges the client's CON message `m` (an empty ACK).
    pub fn ack(&mut self, m: &Message) {
        let ack = Message::empty(MessageType::Acknowledgement, m.message_id);
        self.client
            .handle_datagram(self.now, server(), &ack.to_bytes().unwrap());
    }
}
