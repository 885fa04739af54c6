//! Hostile-server review of the device library (`lwm2m::client`): a scripted server drives
//! the sans-IO client under a simulated clock (the same style as tests/lwm2m_client.rs).
//! Every test here asserts a promise the docs make and fails on the code as reviewed.

#![cfg(all(feature = "device", feature = "lwm2m"))]

use std::net::SocketAddr;
use std::time::Instant;
use twinhub::coap::{Code, ContentFormat, Message, MessageType};
use twinhub::lwm2m::client::{
    Access, ClientConfig, ClientEvent, FirmwareUpdate, Lwm2mClient, ObjectDef, ObjectTree,
    ResourceDef, ValueObject, objects,
};
use twinhub::lwm2m::content::{self, ContentFormat as Cf};
use twinhub::{Content, Lwm2mPath, ResourceType, ResourceValue};

const SERVER: &str = "127.0.0.1:5683";

fn server() -> SocketAddr {
    SERVER.parse().unwrap()
}

fn tree() -> ObjectTree {
    let mut t = ObjectTree::new();
    t.add(objects::security(&format!("coap://{SERVER}"), 1));
    t.add(objects::server(1, 300, "U"));
    t.add(objects::device("Contoso", "MX1", "SN-42", "1.0.0"));
    t.set_firmware(FirmwareUpdate::new());
    t.add(
        ValueObject::new(ObjectDef::new(
            3303,
            "Temperature",
            true,
            vec![
                ResourceDef::new(5700, "Sensor Value", ResourceType::Float, Access::Read),
                ResourceDef::new(5701, "Units", ResourceType::String, Access::ReadWrite),
            ],
        ))
        .with_value(0, 5700, ResourceValue::Float(20.0))
        .with_value(0, 5701, ResourceValue::String("Cel".into())),
    );
    t
}

struct Harness {
    client: Lwm2mClient,
    now: Instant,
    mid: u16,
    token: u32,
}

impl Harness {
    fn new() -> Harness {
        let now = Instant::now();
        let client = Lwm2mClient::new(now, ClientConfig::new("dev-1", server()), tree());
        Harness {
            client,
            now,
            mid: 100,
            token: 1,
        }
    }

    /// A client the server accepted (2.01 rd/abc, piggybacked).
    fn registered() -> Harness {
        let mut h = Harness::new();
        h.client.handle_timeout(h.now);
        let reg = h.sent().pop().expect("register sent");
        let mut r = Message::new(MessageType::Acknowledgement, Code::CREATED, reg.message_id);
        r.with_token(reg.token());
        r.add_location_path("rd");
        r.add_location_path("abc");
        h.feed(&r);
        assert!(h.client.is_registered());
        h.events();
        h
    }

    fn feed(&mut self, m: &Message) {
        self.client
            .handle_datagram(self.now, server(), &m.to_bytes().unwrap());
    }

    fn sent(&mut self) -> Vec<Message> {
        std::iter::from_fn(|| self.client.poll_transmit())
            .map(|t| Message::decode(&t.payload).expect("client sends valid CoAP"))
            .collect()
    }

    fn events(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    /// A CON request from the server; the client's piggybacked response.
    fn request(&mut self, mut req: Message) -> Message {
        self.mid = self.mid.wrapping_add(1);
        self.token += 1;
        req.mtype = MessageType::Confirmable;
        req.message_id = self.mid;
        req.set_token(&self.token.to_be_bytes());
        self.feed(&req);
        self.sent()
            .into_iter()
            .find(|m| m.message_id == self.mid && m.mtype == MessageType::Acknowledgement)
            .expect("piggybacked response")
    }

    fn read_text(&mut self, path: &str) -> String {
        let r = self.request(Message::request(Code::GET, path));
        assert_eq!(r.code, Code::CONTENT, "GET {path}");
        String::from_utf8(r.payload).unwrap()
    }
}

/// README, "The device library": "Write-Composite (`iPATCH /`; every value is checked and
/// validated before any is written, so one refusal changes nothing)"; module docs: "validated
/// in full before anything is written ([`ObjectTree::write_composite`])".
///
/// A hostile server sends a Write-Composite that changes /3303/0/5701 and writes a Package
/// URI while the firmware object is not Idle. The firmware object refuses the URI (4.05), but
/// only inside `Object::write` (it has no `validate`), after /3303/0/5701 was already
/// written: the refusal is answered, and the other value stays changed.
#[test]
fn write_composite_refused_by_the_firmware_object_changes_nothing() {
    let mut h = Harness::registered();
    // Push a package: the firmware object goes Downloaded (state 2), no longer Idle.
    let mut push = Message::request(Code::PUT, "/5/0/0");
    push.set_content_format(ContentFormat::OCTET_STREAM);
    push.payload = b"package".to_vec();
    assert_eq!(h.request(push).code, Code::CHANGED);
    assert_eq!(h.read_text("/5/0/3"), "2");

    let body =
        br#"[{"n":"/3303/0/5701","vs":"Far"},{"n":"/5/0/1","vs":"coap://127.0.0.1:5683/fw"}]"#;
    let mut patch = Message::request(Code::IPATCH, "/");
    patch.set_content_format(ContentFormat(Cf::SenmlJson.code()));
    patch.payload = body.to_vec();
    let r = h.request(patch);
    assert!(
        !r.code.is_success(),
        "a Package URI write in state Downloaded is refused, got {:?}",
        r.code
    );
    assert_eq!(
        h.read_text("/3303/0/5701"),
        "Cel",
        "the refused Write-Composite ({:?}) changed /3303/0/5701 anyway",
        r.code
    );
}

/// tree.rs, `ObjectTree::write` (the Write of an instance, `PUT /5/0`): "Every value is
/// type-checked and validated before any is written; a refusal writes nothing."
///
/// A Write (Replace) of the Firmware Update instance with both the Package (/5/0/0) and a
/// Package URI (/5/0/1): the package was applied (state Downloaded, the application's
/// `on_package` ran), then the URI refused because the state was no longer Idle, and the
/// server got 4.05 for a write that did change the device. Now the pair is refused (4.00:
/// it would start two updates) before either is written.
#[test]
fn a_refused_instance_write_writes_nothing() {
    let mut h = Harness::registered();
    assert_eq!(h.read_text("/5/0/3"), "0");
    let instance = Lwm2mPath::instance(5, 0);
    let values = Content {
        values: vec![
            (
                Lwm2mPath::resource(5, 0, 0),
                ResourceValue::Opaque(b"package".to_vec()),
            ),
            (
                Lwm2mPath::resource(5, 0, 1),
                ResourceValue::String("coap://127.0.0.1:5683/fw".into()),
            ),
        ],
    };
    let mut put = Message::request(Code::PUT, "/5/0");
    put.set_content_format(ContentFormat(Cf::Tlv.code()));
    put.payload = content::encode(Cf::Tlv, &instance, &values).unwrap();
    let r = h.request(put);
    assert_eq!(
        r.code,
        Code::BAD_REQUEST,
        "a package and a URI in one Write"
    );
    assert_eq!(
        h.read_text("/5/0/3"),
        "0",
        "the Write was refused ({:?}) but the package was applied (state changed)",
        r.code
    );
    assert_eq!(h.read_text("/5/0/1"), "", "the URI was not written either");
}

/// RFC 7252 §4.5 (the CoAP the LWM2M client speaks; module docs: "Its own small CoAP
/// exchange layer"): "The recipient SHOULD acknowledge each duplicate copy of a Confirmable
/// message using the same Acknowledgement or Reset message but SHOULD process any request or
/// response in the message only once."
///
/// The server answers Register with an empty ACK, then a separate CON 2.01. Its copy of the
/// client's ACK is lost, so it retransmits the 2.01 (same message id): the client must ACK
/// it again. It answers with a RST instead (the exchange is gone from `outgoing`, so the
/// duplicate is taken for an unknown response), which tells the server its Register
/// response was rejected.
#[test]
fn a_duplicate_separate_register_response_is_acknowledged_not_reset() {
    let mut h = Harness::new();
    h.client.handle_timeout(h.now);
    let reg = h.sent().pop().expect("register sent");
    assert_eq!(reg.code, Code::POST);
    h.feed(&Message::empty(
        MessageType::Acknowledgement,
        reg.message_id,
    ));
    let mut created = Message::new(MessageType::Confirmable, Code::CREATED, 7000);
    created.with_token(reg.token());
    created.add_location_path("rd");
    created.add_location_path("abc");
    h.feed(&created);
    let first = h.sent();
    assert!(
        first
            .iter()
            .any(|m| m.mtype == MessageType::Acknowledgement && m.message_id == 7000),
        "the separate response is acknowledged: {first:?}"
    );
    assert!(h.client.is_registered());
    // The ACK was lost: the server retransmits the same CON response.
    h.feed(&created);
    let again = h.sent();
    assert!(
        again
            .iter()
            .all(|m| !(m.mtype == MessageType::Reset && m.message_id == 7000)),
        "the duplicate CON response got a RST: {again:?}"
    );
    assert!(
        again
            .iter()
            .any(|m| m.mtype == MessageType::Acknowledgement && m.message_id == 7000),
        "the duplicate CON response is acknowledged again: {again:?}"
    );
}

/// Create (LwM2M 1.1 §5.4.5: "Create ... a new Object Instance"): content naming two
/// instances was silently merged into the first one's id; it is refused now (4.00) and
/// creates nothing.
#[test]
fn a_create_naming_two_instances_is_refused_and_creates_nothing() {
    let mut h = Harness::registered();
    let body = br#"[{"n":"/3303/1/5701","vs":"Far"},{"n":"/3303/2/5701","vs":"Cel"}]"#;
    let mut post = Message::request(Code::POST, "/3303");
    post.set_content_format(ContentFormat(Cf::SenmlJson.code()));
    post.payload = body.to_vec();
    assert_eq!(h.request(post).code, Code::BAD_REQUEST);
    for path in ["/3303/1", "/3303/2"] {
        assert_eq!(
            h.request(Message::request(Code::GET, path)).code,
            Code::NOT_FOUND,
            "{path}"
        );
    }
    // One instance in the content is created as before.
    let mut post = Message::request(Code::POST, "/3303");
    post.set_content_format(ContentFormat(Cf::SenmlJson.code()));
    post.payload = br#"[{"n":"/3303/1/5701","vs":"Far"}]"#.to_vec();
    assert_eq!(h.request(post).code, Code::CREATED);
    assert_eq!(h.read_text("/3303/1/5701"), "Far");
}
