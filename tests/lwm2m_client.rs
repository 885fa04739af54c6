//! The sans-IO client core against a scripted server under a simulated clock: registration
//! (register, update timing, re-register with backoff, de-register), every DM operation,
//! notifications with pmin / pmax / gt / lt / st, Block1 firmware push and Block2 pull.

#![cfg(all(feature = "device", feature = "fuzzing", feature = "lwm2m"))]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twinhub::coap::{BlockOption, Code, ContentFormat, Message, MessageType};
use twinhub::lwm2m::client::{
    Access, ClientConfig, ClientEvent, FirmwareUpdate, Lwm2mClient, ObjectDef, ObjectError,
    ObjectTree, ResourceData, ResourceDef, UpdateResult, UpdateState, ValueObject, objects,
};
use twinhub::lwm2m::content::{self, ContentFormat as Cf};
use twinhub::{Content, Lwm2mPath, ResourceType, ResourceValue};

mod client_support;
use client_support::{Harness, SERVER, server};

fn tree() -> ObjectTree {
    let mut t = ObjectTree::new();
    t.add(objects::security(&format!("coap://{SERVER}"), 1));
    t.add(objects::server(1, 300, "U"));
    t.add(objects::device("Contoso", "MX1", "SN-42", "1.0.0"));
    t.set_firmware(FirmwareUpdate::new());
    t.add(objects::config().on_validate(2, |_, d| match d {
        ResourceData::Single(ResourceValue::String(s)) if !s.contains('!') => Ok(()),
        _ => Err(ObjectError::Rejected),
    }));
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

impl Harness {
    /// A client that has registered (the server answered 2.01 rd/abc).
    fn registered() -> Harness {
        Harness::registered_with(tree())
    }

    /// Sets the observed temperature (/3303/0/5700) and lets the client notify it.
    fn set_temperature(&mut self, celsius: f64) {
        self.client
            .set_value(&TEMPERATURE, ResourceValue::Float(celsius))
            .unwrap();
        self.advance(0);
    }

    /// Advances `secs` seconds, one at a time, checking that no notification goes out.
    fn expect_no_notification_for(&mut self, secs: u64) {
        for _ in 0..secs {
            self.advance(1);
            assert!(notifications(self.sent()).is_empty());
        }
    }

    /// Advances a second at a time, at most `secs` seconds, until the client sends a POST
    /// (a registration Update here); returns it.
    fn next_post(&mut self, secs: u64) -> Option<Message> {
        for _ in 0..secs {
            self.advance(1);
            if let Some(m) = self.sent().into_iter().find(|m| m.code == Code::POST) {
                return Some(m);
            }
        }
        None
    }
}

fn text(m: &Message) -> String {
    String::from_utf8(m.payload.clone()).unwrap()
}

#[test]
fn register_request_shape() {
    let now = Instant::now();
    let mut c = Lwm2mClient::new(now, ClientConfig::new("dev-1", server()), tree());
    assert_eq!(c.poll_timeout(), Some(now));
    c.handle_timeout(now);
    let t = c.poll_transmit().unwrap();
    assert_eq!(t.destination, server());
    let m = Message::decode(&t.payload).unwrap();
    assert_eq!((m.mtype, m.code), (MessageType::Confirmable, Code::POST));
    assert_eq!(m.uri_path().collect::<Vec<_>>(), ["rd"]);
    assert_eq!(
        m.uri_query().collect::<Vec<_>>(),
        ["ep=dev-1", "lt=300", "lwm2m=1.1", "b=U"]
    );
    assert_eq!(m.content_format(), Some(ContentFormat::LINK_FORMAT));
    assert_eq!(
        text(&m),
        "</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>,</5/0>,</3303/0>,</10241/0>"
    );
    assert!(m.token().len() >= 4);
}

#[test]
fn update_before_lifetime_runs_out() {
    let mut h = Harness::registered();
    // lt = 300: update at 300 - min(120, 150) = 180 s.
    assert_eq!(
        h.client.poll_timeout(),
        Some(h.now + Duration::from_secs(180))
    );
    h.advance(179);
    assert!(h.sent().is_empty());
    h.advance(1);
    let up = h.sent().pop().expect("update");
    assert_eq!(up.code, Code::POST);
    assert_eq!(up.uri_path().collect::<Vec<_>>(), ["rd", "abc"]);
    assert!(up.payload.is_empty(), "keep-alive carries no objects");
    h.answer(&up, Code::CHANGED, |_| {});
    assert_eq!(h.events(), vec![ClientEvent::RegistrationUpdated]);
    assert_eq!(
        h.client.poll_timeout(),
        Some(h.now + Duration::from_secs(180))
    );
}

#[test]
fn lifetime_write_and_trigger_send_update_with_lt() {
    let mut h = Harness::registered();
    assert_eq!(h.put_text("/1/0/1", "600").code, Code::CHANGED);
    h.advance(0);
    let up = h.sent().pop().expect("update after lifetime write");
    assert_eq!(up.uri_query().collect::<Vec<_>>(), ["lt=600"]);
    h.answer(&up, Code::CHANGED, |_| {});
    // 600 - 120 = 480 s.
    assert_eq!(
        h.client.poll_timeout(),
        Some(h.now + Duration::from_secs(480))
    );
    // Registration Update Trigger.
    assert_eq!(
        h.request(Message::request(Code::POST, "/1/0/8")).code,
        Code::CHANGED
    );
    h.advance(0);
    assert_eq!(
        h.sent().pop().unwrap().uri_path().collect::<Vec<_>>(),
        ["rd", "abc"]
    );
}

#[test]
fn register_retries_with_backoff_then_succeeds() {
    let now = Instant::now();
    let mut cfg = ClientConfig::new("dev-1", server());
    cfg.max_retransmit = 1;
    let mut c = Lwm2mClient::new(now, cfg, tree());
    c.handle_timeout(now);
    assert!(c.poll_transmit().is_some());
    // Retransmission, then give up: backoff 5 s, then 10 s.
    let mut t = now;
    let mut registers = 1;
    let mut failures = Vec::new();
    for _ in 0..200 {
        t += Duration::from_millis(500);
        c.handle_timeout(t);
        while c.poll_transmit().is_some() {
            registers += 1;
        }
        while let Some(e) = c.poll_event() {
            if let ClientEvent::RegistrationFailed { code, retry_in } = e {
                assert_eq!(code, None);
                failures.push(retry_in);
            }
        }
    }
    // Each wait doubles, stretched by a random factor in [1, 1.5).
    for (wait, base) in failures[..3].iter().zip([5, 10, 20]) {
        let base = Duration::from_secs(base);
        assert!(*wait >= base && *wait < base.mul_f64(1.5), "{failures:?}");
    }
    assert!(registers >= 6);
    assert!(!c.is_registered());
}

#[test]
fn update_404_reregisters_at_once() {
    let mut h = Harness::registered();
    h.advance(180);
    let up = h.sent().pop().unwrap();
    h.answer(&up, Code::NOT_FOUND, |_| {});
    assert!(matches!(
        h.events()[..],
        [ClientEvent::RegistrationFailed {
            code: Some((4, 4)),
            ..
        }]
    ));
    h.advance(0);
    let reg = h.sent().pop().unwrap();
    assert_eq!(reg.uri_path().collect::<Vec<_>>(), ["rd"]);
}

#[test]
fn reads_in_every_format() {
    let mut h = Harness::registered();
    let r = h.get("/3/0/0", None);
    assert_eq!((r.code, text(&r).as_str()), (Code::CONTENT, "Contoso"));
    assert_eq!(r.content_format(), Some(ContentFormat::TEXT_PLAIN));

    let r = h.get("/3/0", None);
    assert_eq!(r.content_format(), Some(ContentFormat(11542)));
    assert_eq!(&r.payload[..3], &[0xC7, 0x00, b'C']);

    let r = h.get("/3/0", Some(110));
    let json: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(json[0]["bn"], "/3/0/");
    assert_eq!(json[0]["vs"], "Contoso");
    assert_eq!(r.content_format(), Some(ContentFormat::SENML_JSON));

    // lwm2m-node-lib's pre-standard formats are echoed back.
    let r = h.get("/3/0/2", Some(1541));
    assert_eq!(
        (text(&r).as_str(), r.content_format()),
        ("SN-42", Some(ContentFormat(1541)))
    );
    let r = h.get("/3/0", Some(1543));
    let json: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(json["bn"], "/3/0/");
    let r = h.get("/3303", Some(11542));
    assert_eq!(r.payload[0] >> 6, 0, "object instance TLV");

    assert_eq!(h.get("/3/0", Some(0)).code, Code::NOT_ACCEPTABLE);
    assert_eq!(h.get("/3/0/0", Some(9999)).code, Code::NOT_ACCEPTABLE);
    assert_eq!(h.get("/0/0/0", None).code, Code::UNAUTHORIZED);
    assert_eq!(h.get("/3/0/4", None).code, Code::METHOD_NOT_ALLOWED);
    assert_eq!(h.get("/3/9", None).code, Code::NOT_FOUND);
    assert_eq!(h.get("/bs", None).code, Code::NOT_FOUND);
}

#[test]
fn large_read_is_served_block_wise() {
    let mut h = Harness::registered();
    assert_eq!(
        h.put_text("/10241/0/2", &"v".repeat(2000)).code,
        Code::CHANGED
    );
    let r = h.get("/10241/0/2", None);
    let b = r.block2().expect("block2");
    assert!(b.more && b.num == 0 && b.size() == 1024);
    assert_eq!(r.size2(), Some(2000));
    let mut next = Message::request(Code::GET, "/10241/0/2");
    next.set_block2(BlockOption::new(1, false, 6).unwrap());
    let r2 = h.request(next);
    let b2 = r2.block2().unwrap();
    assert!(!b2.more && b2.num == 1);
    assert_eq!(r.payload.len() + r2.payload.len(), 2000);
}

#[test]
fn writes_check_access_types_and_validation() {
    let mut h = Harness::registered();
    assert_eq!(h.put_text("/3/0/0", "x").code, Code::METHOD_NOT_ALLOWED);
    assert_eq!(h.put_text("/1/0/1", "abc").code, Code::BAD_REQUEST);
    assert_eq!(
        h.put_text("/1/0/1", "0").code,
        Code::BAD_REQUEST,
        "validated lifetime"
    );
    // Partial update of /10241/0 in TLV; validation fails for one value: nothing changes.
    let mut tlv = vec![0xC1, 0x01, b'n'];
    tlv.extend_from_slice(&[0xC2, 0x02, b'v', b'!']);
    let mut m = Message::request(Code::POST, "/10241/0");
    m.set_content_format(ContentFormat(11542));
    m.payload = tlv;
    assert_eq!(h.request(m).code, Code::BAD_REQUEST);
    assert_eq!(text(&h.get("/10241/0/1", None)), "");
    // The same with a good value applies both.
    let mut m = Message::request(Code::POST, "/10241/0");
    m.set_content_format(ContentFormat(11542));
    m.payload = vec![0xC1, 0x01, b'n', 0xC2, 0x02, b'v', b'1'];
    assert_eq!(h.request(m).code, Code::CHANGED);
    assert_eq!(text(&h.get("/10241/0/2", None)), "v1");
    // SenML write; unsupported content format.
    let mut m = Message::request(Code::PUT, "/3/0/15");
    m.set_content_format(ContentFormat::SENML_JSON);
    m.payload = br#"[{"bn":"/3/0/15","vs":"Europe/Paris"}]"#.to_vec();
    assert_eq!(h.request(m).code, Code::CHANGED);
    assert_eq!(text(&h.get("/3/0/15", None)), "Europe/Paris");
    let mut m = Message::request(Code::PUT, "/3/0/15");
    m.set_content_format(ContentFormat::LINK_FORMAT);
    m.payload = b"x".to_vec();
    assert_eq!(h.request(m).code, Code::UNSUPPORTED_CONTENT_FORMAT);
    // Plain CBOR (60): one text string; a payload that is no CBOR item is a bad request.
    let mut m = Message::request(Code::PUT, "/3/0/15");
    m.set_content_format(ContentFormat(60));
    m.payload = b"\x6cEurope/Berne".to_vec();
    assert_eq!(h.request(m).code, Code::CHANGED);
    assert_eq!(text(&h.get("/3/0/15", None)), "Europe/Berne");
    let mut m = Message::request(Code::PUT, "/3/0/15");
    m.set_content_format(ContentFormat(60));
    m.payload = b"x".to_vec();
    assert_eq!(h.request(m).code, Code::BAD_REQUEST);
    // Old-style text (1541), as lwm2m-node-lib writes.
    let mut m = Message::request(Code::PUT, "/3/0/14");
    m.set_content_format(ContentFormat(1541));
    m.payload = b"+02:00".to_vec();
    assert_eq!(h.request(m).code, Code::CHANGED);
    assert!(h.events().contains(&ClientEvent::Written {
        path: Lwm2mPath::resource(3, 0, 14)
    }));
}

#[test]
fn execute_with_arguments_and_device_events() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let mut t = tree();
    t.add(objects::config().on_execute(3, move |_, args| {
        c.lock().unwrap().push(args.to_string());
        Ok(())
    }));
    let mut h = Harness::registered_with(t);
    let mut m = Message::request(Code::POST, "/10241/0/3");
    m.payload = b"0='fast',1".to_vec();
    assert_eq!(h.request(m).code, Code::CHANGED);
    assert_eq!(*calls.lock().unwrap(), vec!["0='fast',1".to_string()]);
    assert_eq!(
        h.request(Message::request(Code::POST, "/3/0/4")).code,
        Code::CHANGED
    );
    let ev = h.events();
    assert!(ev.contains(&ClientEvent::Reboot));
    assert!(ev.contains(&ClientEvent::Executed {
        path: Lwm2mPath::resource(3, 0, 4),
        args: String::new()
    }));
    assert_eq!(
        h.request(Message::request(Code::POST, "/3/0/0")).code,
        Code::METHOD_NOT_ALLOWED
    );
}

#[test]
fn duplicate_request_is_answered_from_cache_not_reexecuted() {
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    let mut t = tree();
    t.add(objects::config().on_execute(3, move |_, _| {
        *c.lock().unwrap() += 1;
        Ok(())
    }));
    let mut h = Harness::registered_with(t);
    let mut m = Message::request(Code::POST, "/10241/0/3");
    m.message_id = 7;
    m.set_token(&[9, 9]);
    let bytes = m.to_bytes().unwrap();
    h.client.handle_datagram(h.now, server(), &bytes);
    let first = h.client.poll_transmit().unwrap();
    h.client.handle_datagram(h.now, server(), &bytes);
    let second = h.client.poll_transmit().unwrap();
    assert_eq!(first, second);
    assert_eq!(*count.lock().unwrap(), 1);
}

/// A registered client whose Config object counts the Executes of /10241/0/3 it carries
/// out, and that count.
fn counting_executes() -> (Harness, Arc<Mutex<u32>>) {
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    let mut t = tree();
    t.add(objects::config().on_execute(3, move |_, _| {
        *c.lock().unwrap() += 1;
        Ok(())
    }));
    (Harness::registered_with(t), count)
}

/// A CON Execute of /10241/0/3 with message id `mid`, as the server sends it.
fn execute_with_mid(mid: u16) -> Vec<u8> {
    let mut m = Message::request(Code::POST, "/10241/0/3");
    m.mtype = MessageType::Confirmable;
    m.message_id = mid;
    m.set_token(&mid.to_be_bytes()).unwrap();
    m.to_bytes().unwrap()
}

/// The client's answers to a datagram from the server.
fn answers_to(h: &mut Harness, bytes: &[u8]) -> Vec<Message> {
    h.client.handle_datagram(h.now, server(), bytes);
    h.sent()
}

/// The duplicate cache at its bound a peer (8 answers, the module docs): after 8
/// requests from the server, a copy of each, the oldest included, is answered from the
/// cache and nothing runs again.
#[test]
fn duplicate_cache_keeps_the_last_eight_answers_of_the_server() {
    let (mut h, count) = counting_executes();
    let firsts: Vec<Vec<Message>> = (0..8)
        .map(|i| answers_to(&mut h, &execute_with_mid(0x500 + i)))
        .collect();
    assert_eq!(*count.lock().unwrap(), 8);
    for (i, first) in (0..8).zip(&firsts) {
        let again = answers_to(&mut h, &execute_with_mid(0x500 + i));
        assert_eq!(&again, first, "copy of request {i}");
    }
    assert_eq!(*count.lock().unwrap(), 8, "no copy was executed again");
}

/// Past the bound a peer: the 9th request from the server pushes its oldest answer out.
/// A copy of the other 8 is still answered from the cache; a copy of the oldest is a new
/// request again, served afresh (the Execute runs a second time), as the module docs say.
#[test]
fn duplicate_cache_past_eight_answers_serves_a_copy_of_the_oldest_afresh() {
    let (mut h, count) = counting_executes();
    for i in 0..9 {
        let answer = answers_to(&mut h, &execute_with_mid(0x500 + i));
        assert_eq!(answer.len(), 1);
        assert_eq!(answer[0].code, Code::CHANGED);
    }
    assert_eq!(*count.lock().unwrap(), 9);
    for i in 1..9 {
        let again = answers_to(&mut h, &execute_with_mid(0x500 + i));
        assert_eq!(again.len(), 1, "copy of request {i}");
        assert_eq!(again[0].message_id, 0x500 + i);
    }
    assert_eq!(
        *count.lock().unwrap(),
        9,
        "the 8 newest were answered from the cache"
    );
    let oldest = answers_to(&mut h, &execute_with_mid(0x500));
    assert_eq!(oldest.len(), 1);
    assert_eq!(
        (oldest[0].mtype, oldest[0].code, oldest[0].message_id),
        (MessageType::Acknowledgement, Code::CHANGED, 0x500)
    );
    assert_eq!(
        *count.lock().unwrap(),
        10,
        "the oldest answer was pushed out: its copy ran again"
    );
}

#[test]
fn requests_from_other_addresses_are_ignored() {
    let mut h = Harness::registered();
    let mut m = Message::request(Code::GET, "/3/0/0");
    m.set_token(&[1]);
    let other: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    h.client
        .handle_datagram(h.now, other, &m.to_bytes().unwrap());
    assert!(h.client.poll_transmit().is_none());
    // Garbage from the server is ignored too.
    h.client.handle_datagram(h.now, server(), &[0xff, 0, 1]);
    assert!(h.client.poll_transmit().is_none());
}

/// Checks: the Server object's periods (/1/0/2 Default Minimum Period, /1/0/3 Default
/// Maximum Period, /1/0/5 Disable Timeout, all seconds) refuse a negative value (4.00), as
/// the lifetime /1/0/1 refuses one below 1 s, and keep what they held.
/// Before the fix: `PUT /1/0/2 "-5"` answered 2.04 and /1/0/2 read -5 afterwards, a value
/// the client core then ignored (`refresh_defaults` takes only values >= 0), so the server
/// was told the write took effect while the notifications kept the old default.
#[test]
fn server_periods_refuse_negative_seconds() {
    let mut h = Harness::registered();
    for rid in [2, 3, 5] {
        let path = format!("/1/0/{rid}");
        let before = text(&h.get(&path, None));
        assert_eq!(h.put_text(&path, "-5").code, Code::BAD_REQUEST, "{path}");
        assert_eq!(text(&h.get(&path, None)), before, "{path} changed");
        assert_eq!(h.put_text(&path, "30").code, Code::CHANGED, "{path}");
        assert_eq!(text(&h.get(&path, None)), "30", "{path}");
    }
}

#[test]
fn discover_and_write_attributes() {
    let mut h = Harness::registered();
    let mut wa = Message::request(Code::PUT, "/3303/0/5700");
    wa.add_uri_query("pmin=10");
    wa.add_uri_query("gt=25.5");
    assert_eq!(h.request(wa).code, Code::CHANGED);
    let mut bad = Message::request(Code::PUT, "/3/0/0");
    bad.add_uri_query("gt=1");
    assert_eq!(h.request(bad).code, Code::BAD_REQUEST, "gt on a string");
    let mut bad = Message::request(Code::PUT, "/3/0/0");
    bad.add_uri_query("bogus=1");
    assert_eq!(h.request(bad).code, Code::BAD_REQUEST);
    let mut missing = Message::request(Code::PUT, "/3/7");
    missing.add_uri_query("pmin=1");
    assert_eq!(h.request(missing).code, Code::NOT_FOUND);

    let r = h.get("/3303/0", Some(40));
    assert_eq!(r.content_format(), Some(ContentFormat::LINK_FORMAT));
    assert_eq!(
        text(&r),
        "</3303/0>,</3303/0/5700>;pmin=10;gt=25.5,</3303/0/5701>"
    );
    let r = h.get("/3", Some(40));
    assert!(text(&r).starts_with("</3>,</3/0>,</3/0/0>,</3/0/1>"));
    assert!(text(&r).contains("</3/0/11>;dim=1"));
}

/// Checks: a Write-Attributes that leaves a resource's thresholds inconsistent (LWM2M 1.1
/// §5.1.2: `lt` < `gt` and `lt` + 2·`st` < `gt`) is refused (4.00) and nothing is stored,
/// counting the attributes already set there (as Anjay checks them).
/// Before the fix: `lt=30` on a resource with `gt=25.5` answered 2.04 and Discover listed
/// both: the table stored whatever the query said, with no notification rule able to hold.
#[test]
fn write_attributes_refuse_inconsistent_thresholds() {
    let mut h = Harness::registered();
    let wa = |h: &mut Harness, q: &[&str]| {
        let mut m = Message::request(Code::PUT, "/3303/0/5700");
        for q in q {
            m.add_uri_query(q);
        }
        h.request(m).code
    };
    assert_eq!(wa(&mut h, &["gt=25.5"]), Code::CHANGED);
    assert_eq!(wa(&mut h, &["lt=30"]), Code::BAD_REQUEST, "lt above gt");
    assert_eq!(
        wa(&mut h, &["lt=25.5"]),
        Code::BAD_REQUEST,
        "lt equal to gt"
    );
    assert_eq!(
        wa(&mut h, &["lt=20", "st=3"]),
        Code::BAD_REQUEST,
        "lt + 2 st >= gt"
    );
    assert_eq!(
        text(&h.get("/3303/0", Some(40))),
        "</3303/0>,</3303/0/5700>;gt=25.5,</3303/0/5701>",
        "a refused Write-Attributes stored something"
    );
    assert_eq!(wa(&mut h, &["lt=20", "st=2"]), Code::CHANGED);
    assert_eq!(
        wa(&mut h, &["gt"]),
        Code::CHANGED,
        "unsetting gt is always consistent"
    );
}

#[test]
fn observe_notify_honours_pmin_pmax_and_thresholds() {
    let mut h = Harness::registered();
    let mut wa = Message::request(Code::PUT, "/3303/0/5700");
    for q in ["pmin=10", "pmax=60", "gt=25"] {
        wa.add_uri_query(q);
    }
    assert_eq!(h.request(wa).code, Code::CHANGED);
    let mut obs = Message::request(Code::GET, "/3303/0/5700");
    obs.set_observe(0);
    let r = h.request(obs);
    assert_eq!(
        (r.code, r.observe(), text(&r).as_str()),
        (Code::CONTENT, Some(0), "20")
    );
    let token = r.token();
    assert_eq!(h.client.observation_count(), 1);
    let path = Lwm2mPath::resource(3303, 0, 5700);

    // Below gt: no notification before pmax.
    h.client
        .set_value(&path, ResourceValue::Float(22.0))
        .unwrap();
    h.advance(30);
    let early = h.sent();
    assert!(early.is_empty(), "{early:?}");
    // Crossing gt at t=31 is sent (pmin passed).
    h.advance(1);
    h.client
        .set_value(&path, ResourceValue::Float(26.0))
        .unwrap();
    h.advance(0);
    let n = h.sent();
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].token(), text(&n[0]).as_str()), (token, "26"));
    let seq1 = n[0].observe().unwrap();
    // A second crossing right after waits for pmin (10 s).
    h.client
        .set_value(&path, ResourceValue::Float(24.0))
        .unwrap();
    h.advance(5);
    assert!(h.sent().is_empty());
    h.advance(5);
    let n = h.sent();
    assert_eq!(text(&n[0]), "24");
    assert!(n[0].observe().unwrap() > seq1);
    // Nothing changes: pmax (60 s) forces one.
    h.advance(59);
    assert!(h.sent().is_empty());
    h.advance(1);
    assert_eq!(h.sent().len(), 1);

    // RST on a notification cancels the observation.
    h.advance(60);
    let n = h.sent().pop().unwrap();
    let rst = Message::empty(MessageType::Reset, n.message_id);
    h.client
        .handle_datagram(h.now, server(), &rst.to_bytes().unwrap());
    assert_eq!(h.client.observation_count(), 0);
    h.advance(120);
    // (The registration update falls due meanwhile; no notification goes out.)
    assert!(h.sent().iter().all(|m| m.observe().is_none()));
}

#[test]
fn observe_instance_and_cancel_with_observe_1() {
    let mut h = Harness::registered();
    let mut obs = Message::request(Code::GET, "/3/0");
    obs.set_observe(0);
    obs.set_accept(ContentFormat::SENML_JSON);
    let r = h.request(obs.clone());
    assert_eq!(r.observe(), Some(0));
    // Default pmin is 0: a change notifies at once, in the observed format.
    h.client
        .set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(55))
        .unwrap();
    h.advance(0);
    let n = h.sent().pop().expect("notification");
    assert_eq!(n.content_format(), Some(ContentFormat::SENML_JSON));
    assert!(text(&n).contains(r#"{"n":"9","v":55}"#));
    // notify_changed for a callback-backed value.
    h.client.notify_changed(&Lwm2mPath::resource(3, 0, 13));
    h.advance(0);
    assert_eq!(h.sent().len(), 1);
    // Cancel with Observe=1 and the same token.
    let mut cancel = obs;
    cancel.set_observe(1);
    h.mid += 1;
    cancel.message_id = h.mid;
    cancel.set_token(r.token().as_bytes());
    h.client
        .handle_datagram(h.now, server(), &cancel.to_bytes().unwrap());
    let resp = h.sent().pop().unwrap();
    assert_eq!((resp.code, resp.observe()), (Code::CONTENT, None));
    assert_eq!(h.client.observation_count(), 0);
}

#[test]
fn create_and_delete_update_the_registration() {
    let mut h = Harness::registered();
    let mut m = Message::request(Code::POST, "/3303");
    m.set_content_format(ContentFormat(11542));
    // Object instance 4 holding Units /5701 (a 16-bit resource id) = "K".
    m.payload = vec![0x04, 0x04, 0xE1, 0x16, 0x45, b'K'];
    let r = h.request(m);
    assert_eq!(r.code, Code::CREATED);
    assert_eq!(r.location_path().collect::<Vec<_>>(), ["3303", "4"]);
    assert_eq!(text(&h.get("/3303/4/5701", None)), "K");
    h.advance(0);
    let up = h.sent().pop().expect("update with objects");
    assert!(text(&up).contains("</3303/0>,</3303/4>"));
    h.answer(&up, Code::CHANGED, |_| {});
    assert_eq!(
        h.request(Message::request(Code::DELETE, "/3303/4")).code,
        Code::DELETED
    );
    assert_eq!(h.get("/3303/4", None).code, Code::NOT_FOUND);
    assert_eq!(
        h.request(Message::request(Code::DELETE, "/3/0")).code,
        Code::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        h.request(Message::request(Code::POST, "/3")).code,
        Code::METHOD_NOT_ALLOWED
    );
    h.advance(0);
    let up = h.sent().pop().unwrap();
    assert!(!text(&up).contains("</3303/4>"));
}

#[test]
fn firmware_push_with_block1_then_update() {
    let mut h = Harness::registered();
    let package: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let mut last = None;
    for (num, chunk) in package.chunks(1024).enumerate() {
        let more = (num + 1) * 1024 < package.len();
        let mut m = Message::request(Code::PUT, "/5/0/0");
        m.set_content_format(ContentFormat::OCTET_STREAM);
        m.set_block1(BlockOption::new(num as u32, more, 6).unwrap());
        m.payload = chunk.to_vec();
        let r = h.request(m);
        let b1 = r.block1().expect("block1 echoed");
        assert_eq!(b1.num, num as u32);
        assert_eq!(r.code, if more { Code::CONTINUE } else { Code::CHANGED });
        last = Some(r);
    }
    assert_eq!(last.unwrap().code, Code::CHANGED);
    assert_eq!(text(&h.get("/5/0/3", None)), "2");
    assert_eq!(
        h.request(Message::request(Code::POST, "/5/0/2")).code,
        Code::CHANGED
    );
    assert_eq!(text(&h.get("/5/0/3", None)), "3");
    h.client.firmware_update_finished(Ok(()));
    assert_eq!(text(&h.get("/5/0/3", None)), "0");
    assert_eq!(text(&h.get("/5/0/5", None)), "1");
    // A block out of order is 4.08.
    let mut m = Message::request(Code::PUT, "/5/0/0");
    m.set_block1(BlockOption::new(3, true, 6).unwrap());
    m.payload = vec![0; 1024];
    assert_eq!(h.request(m).code, Code::REQUEST_ENTITY_INCOMPLETE);
}

/// Issue #16 finding 6: Block1 blocks are placed by byte offset. Block 0 of 1,024 bytes
/// followed by "block 1" of 16-byte blocks (offset 16) overlaps and is refused, and a
/// package whose length disagrees with the Size1 announced is refused, not applied.
#[test]
fn block1_reassembly_checks_offsets_and_size1() {
    let mut h = Harness::registered();
    let put = |num: u32, more: bool, szx: u8, len: usize, size1: Option<u32>| {
        let mut m = Message::request(Code::PUT, "/5/0/0");
        m.set_content_format(ContentFormat::OCTET_STREAM);
        m.set_block1(BlockOption::new(num, more, szx).unwrap());
        if let Some(n) = size1 {
            m.set_size1(n);
        }
        m.payload = vec![1; len];
        m
    };
    assert_eq!(h.request(put(0, true, 6, 1024, None)).code, Code::CONTINUE);
    assert_eq!(
        h.request(put(1, false, 0, 16, None)).code,
        Code::REQUEST_ENTITY_INCOMPLETE
    );
    assert_eq!(text(&h.get("/5/0/3", None)), "0", "nothing was applied");
    // A smaller block size at the right offset is fine (1024 = block 64 of 16 bytes).
    assert_eq!(
        h.request(put(0, true, 6, 1024, Some(1040))).code,
        Code::CONTINUE
    );
    // A retransmission of the last block is acknowledged again, not appended.
    assert_eq!(
        h.request(put(0, true, 6, 1024, Some(1040))).code,
        Code::CONTINUE
    );
    assert_eq!(h.request(put(64, false, 0, 16, None)).code, Code::CHANGED);
    assert_eq!(text(&h.get("/5/0/3", None)), "2", "downloaded");
    // Size1 says 3,000 bytes; only 2,048 arrive. (A push is taken only in Idle: reset.)
    let mut reset = Message::request(Code::PUT, "/5/0/0");
    reset.set_content_format(ContentFormat::OCTET_STREAM);
    reset.payload = vec![0];
    assert_eq!(h.request(reset).code, Code::CHANGED);
    assert_eq!(text(&h.get("/5/0/3", None)), "0");
    assert_eq!(
        h.request(put(0, true, 6, 1024, Some(3000))).code,
        Code::CONTINUE
    );
    assert_eq!(
        h.request(put(1, false, 6, 1024, None)).code,
        Code::REQUEST_ENTITY_INCOMPLETE
    );
}

#[test]
fn firmware_pull_downloads_with_block2() {
    let package: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let mut t = tree();
    t.set_firmware(FirmwareUpdate::new().on_package(move |p| {
        g.lock().unwrap().extend_from_slice(p);
        Ok(())
    }));
    let mut h = Harness::registered_with(t);
    let pkg_server: SocketAddr = "127.0.0.7:5700".parse().unwrap();
    assert_eq!(
        h.put_text("/5/0/1", "coap://127.0.0.7:5700/fw/v2.bin").code,
        Code::CHANGED
    );
    assert_eq!(text(&h.get("/5/0/3", None)), "1");
    let mut served = 0;
    for _ in 0..10 {
        let reqs: Vec<Message> = h.sent();
        let Some(get) = reqs.into_iter().find(|m| m.code == Code::GET) else {
            break;
        };
        assert_eq!(get.uri_path().collect::<Vec<_>>(), ["fw", "v2.bin"]);
        let b = get.block2().unwrap();
        // The package server prefers 512-byte blocks.
        let size = 512;
        let start = b.offset().min(package.len());
        let start = if b.size() > size {
            b.num as usize * size
        } else {
            start
        };
        let end = (start + size).min(package.len());
        let mut r = Message::new(MessageType::Acknowledgement, Code::CONTENT, get.message_id);
        r.with_token(get.token());
        r.set_block2(BlockOption::new((start / size) as u32, end < package.len(), 5).unwrap());
        r.payload = package[start..end].to_vec();
        h.client
            .handle_datagram(h.now, pkg_server, &r.to_bytes().unwrap());
        served += 1;
    }
    assert_eq!(served, 5);
    assert_eq!(*got.lock().unwrap(), package);
    assert_eq!(text(&h.get("/5/0/3", None)), "2");
    assert!(h.events().contains(&ClientEvent::FirmwareDownloadFinished {
        state: UpdateState::Downloaded,
        result: UpdateResult::Initial
    }));
}

#[test]
fn firmware_pull_failure_sets_result() {
    let mut h = Harness::registered();
    assert_eq!(
        h.put_text("/5/0/1", "coap://127.0.0.7:5700/missing").code,
        Code::CHANGED
    );
    let get = h.sent().into_iter().find(|m| m.code == Code::GET).unwrap();
    let mut r = Message::new(
        MessageType::Acknowledgement,
        Code::NOT_FOUND,
        get.message_id,
    );
    r.with_token(get.token());
    h.client.handle_datagram(
        h.now,
        "127.0.0.7:5700".parse().unwrap(),
        &r.to_bytes().unwrap(),
    );
    assert_eq!(text(&h.get("/5/0/3", None)), "0");
    assert_eq!(text(&h.get("/5/0/5", None)), "7");
    // An unreachable package server: connection lost after the retransmissions.
    assert_eq!(
        h.put_text("/5/0/1", "coap://127.0.0.7:5700/x").code,
        Code::CHANGED
    );
    for _ in 0..100 {
        h.advance(5);
    }
    assert_eq!(text(&h.get("/5/0/5", None)), "4");
    // An http URI: unsupported protocol, no download.
    assert_eq!(
        h.put_text("/5/0/1", "http://example.com/fw").code,
        Code::CHANGED
    );
    assert_eq!(text(&h.get("/5/0/5", None)), "9");
}

#[test]
fn deregister_sends_delete() {
    let mut h = Harness::registered();
    h.client.deregister(h.now);
    let d = h.sent().pop().unwrap();
    assert_eq!(
        (d.code, d.uri_path().collect::<Vec<_>>()),
        (Code::DELETE, vec!["rd", "abc"])
    );
    h.answer(&d, Code::DELETED, |_| {});
    assert_eq!(h.events(), vec![ClientEvent::Deregistered]);
    assert!(!h.client.is_registered());
    h.advance(10_000);
    assert!(h.sent().is_empty());
}

#[test]
fn application_setters_respect_the_model() {
    let mut h = Harness::registered();
    let bl = Lwm2mPath::resource(3, 0, 9);
    h.client.set_value(&bl, ResourceValue::Integer(80)).unwrap();
    assert_eq!(text(&h.get("/3/0/9", None)), "80");
    assert!(
        h.client
            .set_value(&Lwm2mPath::resource(3, 0, 999), ResourceValue::Integer(1))
            .is_err()
    );
    assert!(
        h.client
            .set_value(&bl, ResourceValue::String("x".into()))
            .is_err()
    );
    assert!(
        h.client
            .set_value(&Lwm2mPath::instance(3, 0), ResourceValue::Integer(1))
            .is_err()
    );
}

mod random {
    use proptest::prelude::*;

    /// One step of the `client_requests` fuzz body: a structured request or a clock tick.
    fn step() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![Just(1u8), Just(3), Just(15), Just(0)],
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(kind, body)| {
                let mut s = vec![kind, 0, body.len() as u8];
                s.extend(body);
                s
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        /// Random request sequences never panic, every datagram decodes and the object
        /// tree keeps its invariants (the fuzz body asserts all three).
        #[test]
        fn random_requests_keep_the_client_sound(steps in proptest::collection::vec(step(), 1..24)) {
            twinhub::fuzzing::client_requests(&steps.concat());
        }
    }
}

/// The fleet case: 10,000 sans-IO clients with the standard objects live in one process,
/// all register against a simulated server and answer a read. (Their memory is measured in
/// the `lwm2m_client` bench.)
#[test]
fn ten_thousand_clients_in_one_process() {
    let now = Instant::now();
    let mut clients: Vec<Lwm2mClient> = (0..10_000)
        .map(|i| Lwm2mClient::new(now, ClientConfig::new(format!("dev-{i}"), server()), tree()))
        .collect();
    let mut registered = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        c.handle_timeout(now);
        let reg = Message::decode(&c.poll_transmit().unwrap().payload).unwrap();
        assert!(reg.uri_query().any(|q| q == format!("ep=dev-{i}")));
        let mut ok = Message::new(MessageType::Acknowledgement, Code::CREATED, reg.message_id);
        ok.with_token(reg.token());
        ok.add_location_path("rd");
        ok.add_location_path(&i.to_string());
        c.handle_datagram(now, server(), &ok.to_bytes().unwrap());
        registered += c.is_registered() as usize;
    }
    assert_eq!(registered, 10_000);
    let mut get = Message::request(Code::GET, "/3/0/2");
    get.message_id = 9;
    let wire = get.to_bytes().unwrap();
    for c in clients.iter_mut().step_by(997) {
        c.handle_datagram(now, server(), &wire);
        let r = Message::decode(&c.poll_transmit().unwrap().payload).unwrap();
        assert_eq!(text(&r), "SN-42");
    }
}

/// Every read the client answers, in every format it speaks, decodes with the crate's
/// `lwm2m::content` (typed by the client's own object definitions) to exactly the values
/// the object tree holds; and every format's encoding of a value writes that value.
#[test]
fn reads_in_every_format_decode_to_the_tree_values() {
    use std::collections::HashMap;
    use twinhub::lwm2m::content::{self, ContentFormat as Cf};
    let mut h = Harness::registered();
    // The resolver a server would build from the device's object definitions.
    let mut types: HashMap<(u16, u16), ResourceType> = HashMap::new();
    for oid in h.client.objects_mut().object_ids() {
        let object = h.client.objects_mut().object_mut(oid).unwrap();
        for r in object.definition().resources.iter() {
            types.insert((oid, r.id), r.kind);
        }
    }
    let resolve = |p: &Lwm2mPath| types.get(&(p.object_id()?, p.resource_id()?)).copied();
    let bases = [
        Lwm2mPath::object(3),
        Lwm2mPath::instance(3, 0),
        Lwm2mPath::instance(1, 0),
        Lwm2mPath::object(3303),
        Lwm2mPath::instance(10241, 0),
        Lwm2mPath::resource(3, 0, 11),
        Lwm2mPath::resource(3, 0, 13),
    ];
    let mut checked = 0;
    for base in bases {
        let expected = h.client.objects_mut().read(&base).unwrap();
        assert!(!expected.values.is_empty(), "{base} reads nothing");
        for accept in [11542u16, 1542, 110, 112, 11543, 1543, 11544] {
            let r = h.get(&base.to_string(), Some(accept));
            assert_eq!(r.code, Code::CONTENT, "{base} as {accept}");
            assert_eq!(r.content_format(), Some(ContentFormat(accept)));
            let cf = Cf::from_code(accept).unwrap();
            let decoded = content::decode(cf, &r.payload, &base, &resolve)
                .unwrap_or_else(|e| panic!("{base} as {accept}: {e}"));
            assert_eq!(decoded, expected, "{base} as {accept}");
            checked += 1;
        }
    }
    // Single resources without Accept: text (or opaque), typed back by the definitions.
    for rid in [0, 1, 2, 3, 13, 14, 15, 16] {
        let p = Lwm2mPath::resource(3, 0, rid);
        let expected = h.client.objects_mut().read(&p).unwrap();
        let r = h.get(&p.to_string(), None);
        let cf = Cf::from_code(r.content_format().unwrap().0).unwrap();
        let decoded = content::decode(cf, &r.payload, &p, &resolve).unwrap();
        assert_eq!(decoded, expected, "{p} as {cf:?}");
        checked += 1;
    }
    assert_eq!(checked, 7 * 7 + 8);
    // And `lwm2m::content`'s encodings in every format are accepted as writes.
    let p = Lwm2mPath::resource(3, 0, 15);
    for (i, number) in [11542u16, 1542, 110, 112, 11543, 1543, 11544, 0, 1541]
        .into_iter()
        .enumerate()
    {
        let zone = format!("Africa/Zone{i}");
        let c = twinhub::Content::single(p, ResourceValue::String(zone.clone()));
        let body = content::encode(Cf::from_code(number).unwrap(), &p, &c).unwrap();
        let mut m = Message::request(Code::PUT, "/3/0/15");
        m.set_content_format(ContentFormat(number));
        m.payload = body;
        assert_eq!(h.request(m).code, Code::CHANGED, "format {number}");
        assert_eq!(text(&h.get("/3/0/15", None)), zone);
    }
    let lifetime = Lwm2mPath::resource(1, 0, 1);
    for (i, number) in [11542u16, 110, 112, 11543, 11544, 0]
        .into_iter()
        .enumerate()
    {
        let c = twinhub::Content::single(lifetime, ResourceValue::Integer(600 + i as i64));
        let body = content::encode(Cf::from_code(number).unwrap(), &lifetime, &c).unwrap();
        let mut m = Message::request(Code::PUT, "/1/0/1");
        m.set_content_format(ContentFormat(number));
        m.payload = body;
        assert_eq!(h.request(m).code, Code::CHANGED, "format {number}");
        assert_eq!(h.client.objects_mut().read(&lifetime).unwrap(), c);
    }
}

/// The per-object callback interface: an application implements `Object` by hand (here a
/// counter whose value lives in the application) and the client serves it like any other.
#[test]
fn hand_written_object_is_served() {
    use twinhub::lwm2m::client::Object;
    use twinhub::transport::WriteMode;

    struct Counter {
        count: i64,
        step: i64,
    }
    static DEF: std::sync::LazyLock<ObjectDef> = std::sync::LazyLock::new(|| {
        ObjectDef::new(
            3200,
            "Counter",
            false,
            vec![
                ResourceDef::new(5501, "Count", ResourceType::Integer, Access::Read),
                ResourceDef::new(5502, "Step", ResourceType::Integer, Access::ReadWrite),
                ResourceDef::executable(5505, "Increment"),
            ],
        )
    });
    impl Object for Counter {
        fn definition(&self) -> &ObjectDef {
            &DEF
        }
        fn instance_ids(&self) -> Vec<u16> {
            vec![0]
        }
        fn resource_ids(&self, _iid: u16) -> Vec<u16> {
            vec![5501, 5502, 5505]
        }
        fn read(&mut self, _iid: u16, rid: u16) -> Result<ResourceData, ObjectError> {
            match rid {
                5501 => Ok(ResourceData::Single(ResourceValue::Integer(self.count))),
                5502 => Ok(ResourceData::Single(ResourceValue::Integer(self.step))),
                _ => Err(ObjectError::NotFound),
            }
        }
        fn validate(
            &mut self,
            _iid: u16,
            _rid: u16,
            data: &ResourceData,
        ) -> Result<(), ObjectError> {
            match data {
                ResourceData::Single(ResourceValue::Integer(s)) if (1..=10).contains(s) => Ok(()),
                _ => Err(ObjectError::Rejected),
            }
        }
        fn write(
            &mut self,
            _iid: u16,
            _rid: u16,
            data: ResourceData,
            _mode: WriteMode,
        ) -> Result<(), ObjectError> {
            if let ResourceData::Single(ResourceValue::Integer(s)) = data {
                self.step = s;
            }
            Ok(())
        }
        fn execute(&mut self, _iid: u16, _rid: u16, _args: &str) -> Result<(), ObjectError> {
            self.count += self.step;
            Ok(())
        }
    }

    let mut t = tree();
    t.add(Counter { count: 0, step: 1 });
    let mut h = Harness::registered_with(t);
    assert_eq!(h.put_text("/3200/0/5502", "5").code, Code::CHANGED);
    assert_eq!(
        h.put_text("/3200/0/5502", "50").code,
        Code::BAD_REQUEST,
        "validation"
    );
    assert_eq!(
        h.put_text("/3200/0/5501", "1").code,
        Code::METHOD_NOT_ALLOWED
    );
    let mut obs = Message::request(Code::GET, "/3200/0/5501");
    obs.set_observe(0);
    assert_eq!(text(&h.request(obs)), "0");
    assert_eq!(
        h.request(Message::request(Code::POST, "/3200/0/5505")).code,
        Code::CHANGED
    );
    // The count lives in the application: it tells the client it changed.
    h.client.notify_changed(&Lwm2mPath::resource(3200, 0, 5501));
    h.advance(0);
    let n = h.sent().pop().expect("notification");
    assert_eq!(text(&n), "5");
    assert_eq!(
        text(&h.get("/3200/0", Some(110))),
        r#"[{"bn":"/3200/0/","n":"5501","v":5},{"n":"5502","v":5}]"#
    );
}

/// A registered client (default, non-confirmable notifications) whose server observes
/// the current time /3/0/13 with pmax 1 h; a 10-day lifetime keeps registration updates
/// out of the way.
fn observing_hourly() -> Harness {
    let mut t = tree();
    t.add(objects::server(1, 10 * 86400, "U"));
    let mut h = Harness::registered_with(t);
    let mut wa = Message::request(Code::PUT, "/3/0/13");
    wa.add_uri_query("pmax=3600");
    assert_eq!(h.request(wa).code, Code::CHANGED);
    let mut obs = Message::request(Code::GET, "/3/0/13");
    obs.set_observe(0);
    assert_eq!(h.request(obs).observe(), Some(0));
    h
}

/// RFC 7641 §4.5: at least one confirmable notification every 24 hours.
#[test]
fn a_confirmable_notification_at_least_daily() {
    let mut h = observing_hourly();
    let mut kinds = Vec::new();
    for _ in 0..25 {
        h.advance(3600);
        for m in h.sent() {
            if m.observe().is_some() {
                kinds.push(m.mtype);
                if m.mtype == MessageType::Confirmable {
                    h.ack(&m);
                }
            }
        }
    }
    assert_eq!(h.client.unacknowledged_notifications(), 0);
    assert_eq!(kinds.len(), 25);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == MessageType::Confirmable)
            .count(),
        1
    );
    assert_eq!(kinds[23], MessageType::Confirmable);
}

/// A registered client with `confirmable_notifications`, observing the temperature
/// (/3303/0/5700, default pmin 0); returns the harness and the observation's token.
fn observing_confirmably() -> (Harness, twinhub::coap::Token) {
    let mut config = ClientConfig::new("dev-1", server());
    config.confirmable_notifications = true;
    let mut h = Harness::registered_configured(config, tree());
    let mut obs = Message::request(Code::GET, "/3303/0/5700");
    obs.set_observe(0);
    let r = h.request(obs);
    assert_eq!(r.observe(), Some(0));
    assert_eq!(
        h.events(),
        vec![ClientEvent::Observed { path: TEMPERATURE }]
    );
    (h, r.token())
}

const TEMPERATURE: Lwm2mPath = Lwm2mPath::resource(3303, 0, 5700);

fn notifications(sent: Vec<Message>) -> Vec<Message> {
    sent.into_iter().filter(|m| m.observe().is_some()).collect()
}

#[test]
fn confirmable_notifications_are_retransmitted_until_acknowledged() {
    let (mut h, token) = observing_confirmably();
    h.set_temperature(21.0);
    let n = notifications(h.sent());
    assert_eq!(n.len(), 1);
    assert_eq!(
        (n[0].mtype, n[0].token(), text(&n[0]).as_str()),
        (MessageType::Confirmable, token, "21")
    );
    assert_eq!(h.client.unacknowledged_notifications(), 1);
    // ACK_TIMEOUT is 2 s times [1, 1.5): nothing after 1 s, the same datagram by 3 s.
    h.advance(1);
    assert!(h.sent().is_empty());
    h.advance(2);
    let again = notifications(h.sent());
    assert_eq!(again, n, "the retransmission is the same message");
    h.ack(&n[0]);
    assert_eq!(h.client.unacknowledged_notifications(), 0);
    h.expect_no_notification_for(100);
    assert_eq!(h.events(), vec![]);
}

#[test]
fn a_newer_notification_replaces_an_unacknowledged_one_at_its_retransmission() {
    let (mut h, _) = observing_confirmably();
    h.set_temperature(21.0);
    let first = notifications(h.sent()).remove(0);
    h.advance(3);
    assert_eq!(notifications(h.sent()), vec![first.clone()]);
    // A change at t=4, while the first is still unacknowledged: nothing goes out at once
    // (one notification in flight per observation, RFC 7641 §4.5.2) ...
    h.advance(1);
    h.set_temperature(22.0);
    assert!(
        h.sent().is_empty(),
        "the newer one waits for the older's turn"
    );
    assert_eq!(h.client.unacknowledged_notifications(), 1);
    // ... it takes the first one's next retransmission: the second wait (2 x 2-3 s from
    // t=3) ends in 7..9 s, where a timer restarted at t=4 would end by t=7.
    h.advance(3);
    assert!(h.sent().is_empty(), "the first one's timer is kept");
    h.advance(2);
    let second = notifications(h.sent()).remove(0);
    assert_eq!(second.mtype, MessageType::Confirmable);
    assert_ne!(second.message_id, first.message_id);
    assert!(second.observe().unwrap() > first.observe().unwrap());
    assert_eq!(text(&second), "22");
    // A late ACK of the replaced message changes nothing; the newer one's ACK ends it.
    h.ack(&first);
    assert_eq!(h.client.unacknowledged_notifications(), 1);
    h.ack(&second);
    assert_eq!(h.client.unacknowledged_notifications(), 0);
    h.expect_no_notification_for(60);
}

#[test]
fn a_newer_notification_goes_out_when_the_older_is_acknowledged() {
    let (mut h, _) = observing_confirmably();
    h.set_temperature(21.0);
    let first = notifications(h.sent()).remove(0);
    h.client
        .set_value(&TEMPERATURE, ResourceValue::Float(22.0))
        .unwrap();
    h.advance(1);
    assert!(h.sent().is_empty());
    h.ack(&first);
    let second = notifications(h.sent());
    assert_eq!(second.len(), 1, "sent as soon as the first is acknowledged");
    assert_eq!(
        (second[0].mtype, text(&second[0]).as_str()),
        (MessageType::Confirmable, "22")
    );
    assert_eq!(h.client.unacknowledged_notifications(), 1);
    // A fresh transmission: its first retransmission comes 2-3 s later.
    h.advance(1);
    assert!(h.sent().is_empty());
    h.advance(2);
    assert_eq!(notifications(h.sent()), second);
    h.ack(&second[0]);
    assert_eq!(h.client.unacknowledged_notifications(), 0);
}

#[test]
fn an_unacknowledged_notification_checks_the_registration_and_is_sent_again() {
    let (mut h, token) = observing_confirmably();
    h.set_temperature(21.0);
    let n = notifications(h.sent()).remove(0);
    // Four retransmissions (MAX_RETRANSMIT), then the last wait: 31 x 2-3 s in all.
    let mut copies = 0;
    let mut update = None;
    for _ in 0..100 {
        h.advance(1);
        for m in h.sent() {
            if m.observe().is_some() {
                assert_eq!(m, n);
                copies += 1;
            } else if m.code == Code::POST {
                update = Some(m);
            }
        }
        if update.is_some() {
            break;
        }
    }
    assert_eq!(copies, 4);
    let update = update.expect("a registration Update after the notification timed out");
    assert_eq!(update.uri_path_string(), "rd/abc");
    assert_eq!(
        h.events(),
        vec![ClientEvent::NotificationTimedOut { path: TEMPERATURE }]
    );
    // The observation stays, and counts as not delivered until it is sent again.
    assert_eq!(h.client.observation_count(), 1);
    assert_eq!(h.client.unacknowledged_notifications(), 1);
    // The server accepts the Update: the current value is notified again, CON.
    h.answer(&update, Code::CHANGED, |_| {});
    assert_eq!(h.events(), vec![ClientEvent::RegistrationUpdated]);
    let again = notifications(h.sent());
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].mtype, again[0].token(), text(&again[0]).as_str()),
        (MessageType::Confirmable, token, "21")
    );
    assert!(again[0].observe().unwrap() > n.observe().unwrap());
    h.ack(&again[0]);
    assert_eq!(h.client.unacknowledged_notifications(), 0);

    // Next time the server has forgotten the registration: the client registers anew
    // and the observation ends with it.
    h.set_temperature(23.0);
    let update = h.next_post(100).expect("a second Update");
    h.answer(&update, Code::NOT_FOUND, |_| {});
    assert_eq!(h.client.observation_count(), 0);
    h.advance(0);
    assert!(
        h.sent().iter().any(|m| m.uri_path_string() == "rd"),
        "registers anew"
    );
}

#[test]
fn non_confirmable_notifications_wait_for_no_ack() {
    let mut h = Harness::registered();
    let mut obs = Message::request(Code::GET, "/3303/0/5700");
    obs.set_observe(0);
    assert_eq!(h.request(obs).observe(), Some(0));
    h.set_temperature(21.0);
    let n = notifications(h.sent());
    assert_eq!(n[0].mtype, MessageType::NonConfirmable);
    assert_eq!(h.client.unacknowledged_notifications(), 0);
    h.expect_no_notification_for(100);
}

#[test]
fn a_timed_out_daily_con_is_sent_again_con() {
    // Non-confirmable notifications (the default) with pmax 1 h: the daily CON goes
    // unacknowledged, the Update is accepted, and its value is sent again CON, not NON.
    let mut h = observing_hourly();
    h.events();
    let mut daily = None;
    for _ in 0..24 {
        h.advance(3600);
        daily = notifications(h.sent())
            .into_iter()
            .find(|m| m.mtype == MessageType::Confirmable);
        if daily.is_some() {
            break;
        }
    }
    let daily = daily.expect("the daily confirmable notification");
    let update = h
        .next_post(100)
        .expect("an Update after the daily CON timed out");
    assert_eq!(
        h.events(),
        vec![ClientEvent::NotificationTimedOut {
            path: Lwm2mPath::resource(3, 0, 13)
        }]
    );
    h.answer(&update, Code::CHANGED, |_| {});
    let again = notifications(h.sent());
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].mtype, MessageType::Confirmable);
    assert!(again[0].observe().unwrap() > daily.observe().unwrap());
    assert_eq!(h.client.unacknowledged_notifications(), 1);
    h.ack(&again[0]);
    assert_eq!(h.client.unacknowledged_notifications(), 0);
}

#[test]
fn a_deleted_targets_final_notification_is_confirmable_and_retransmitted() {
    let (mut h, token) = observing_confirmably();
    // The application deletes the observed instance (a server's Delete drops the
    // observations under it silently: the server knows).
    let instance = Lwm2mPath::instance(3303, 0);
    h.client.objects_mut().delete(&instance).unwrap();
    h.client.notify_changed(&instance);
    h.advance(0);
    // The observation ends with an error notification, CON as its notifications are.
    let last: Vec<Message> = h
        .sent()
        .into_iter()
        .filter(|m| m.token() == token)
        .collect();
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(
        (last[0].mtype, last[0].code, last[0].observe()),
        (MessageType::Confirmable, Code::NOT_FOUND, None)
    );
    assert_eq!(h.client.observation_count(), 0);
    assert_eq!(h.client.unacknowledged_notifications(), 1);
    // Retransmitted like any CON notification until acknowledged.
    h.advance(3);
    assert_eq!(h.sent(), last);
    h.ack(&last[0]);
    assert_eq!(h.client.unacknowledged_notifications(), 0);
    for _ in 0..60 {
        h.advance(1);
        assert!(h.sent().iter().all(|m| m.token() != token));
    }
}

/// [`tree`] with three Humidity instances (/3304/0..2/5700: 40, 41, 42).
fn tree_with_humidity() -> ObjectTree {
    let mut t = tree();
    t.add(
        ValueObject::new(ObjectDef::new(
            3304,
            "Humidity",
            true,
            vec![ResourceDef::new(
                5700,
                "Sensor Value",
                ResourceType::Float,
                Access::Read,
            )],
        ))
        .with_value(0, 5700, ResourceValue::Float(40.0))
        .with_value(1, 5700, ResourceValue::Float(41.0))
        .with_value(2, 5700, ResourceValue::Float(42.0)),
    );
    t
}

#[test]
fn final_notifications_kept_are_bounded_by_max_observations() {
    // Two observations at most; three end unacknowledged: the oldest final is dropped
    // (no longer retransmitted) and the two newest are kept.
    let mut config = ClientConfig::new("dev-1", server());
    config.confirmable_notifications = true;
    config.max_observations = 2;
    let mut h = Harness::registered_configured(config, tree_with_humidity());
    let mut tokens = Vec::new();
    for iid in 0..3u16 {
        let mut obs = Message::request(Code::GET, &format!("/3304/{iid}/5700"));
        obs.set_observe(0);
        let r = h.request(obs);
        assert_eq!(r.observe(), Some(0));
        tokens.push(r.token());
        let instance = Lwm2mPath::instance(3304, iid);
        h.client.objects_mut().delete(&instance).unwrap();
        h.client.notify_changed(&instance);
        h.advance(0);
        // One notification on the wire at a time (RFC 7641 §4.5.1): the first final goes
        // out, the second waits behind it; the third drops the oldest (the one on the
        // wire, no longer retransmitted), which lets the second out.
        let sent: Vec<Message> = h.sent();
        let goes = [Some(0), None, Some(1)][iid as usize].map(|i: usize| tokens[i]);
        assert_eq!(sent.len(), usize::from(goes.is_some()), "{sent:?}");
        if let Some(token) = goes {
            assert_eq!(
                (sent[0].mtype, sent[0].code, sent[0].token()),
                (MessageType::Confirmable, Code::NOT_FOUND, token)
            );
        }
        assert_eq!(h.client.observation_count(), 0);
        assert_eq!(
            h.client.unacknowledged_notifications(),
            (iid as usize + 1).min(2)
        );
    }
    // Only the one on the wire is retransmitted; its ACK lets the newest out.
    h.advance(3);
    let again: Vec<Message> = h.sent();
    assert_eq!(
        again.iter().map(|m| m.token()).collect::<Vec<_>>(),
        vec![tokens[1]]
    );
    h.ack(&again[0]);
    let last = h.sent();
    assert_eq!(
        last.iter().map(|m| m.token()).collect::<Vec<_>>(),
        vec![tokens[2]]
    );
    assert_eq!(h.client.unacknowledged_notifications(), 1);
    h.ack(&last[0]);
    assert_eq!(h.client.unacknowledged_notifications(), 0);
}

/// RFC 7641 §4.5.1: at most one confirmable notification outstanding to the server,
/// whatever the observation; the others wait their turn, oldest first, each replaced in
/// place by its own observation's newer value (keeping its turn).
#[test]
fn one_confirmable_notification_is_outstanding_at_a_time_across_observations() {
    let mut config = ClientConfig::new("dev-1", server());
    config.confirmable_notifications = true;
    let mut h = Harness::registered_configured(config, tree_with_humidity());
    let path = |iid| Lwm2mPath::resource(3304, iid, 5700);
    let mut tokens = Vec::new();
    for iid in 0..3u16 {
        let mut obs = Message::request(Code::GET, &format!("/3304/{iid}/5700"));
        obs.set_observe(0);
        tokens.push(h.request(obs).token());
    }
    for iid in 0..3u16 {
        h.client
            .set_value(&path(iid), ResourceValue::Float(50.0 + f64::from(iid)))
            .unwrap();
    }
    h.advance(0);
    let on_wire = |sent: Vec<Message>| -> Vec<(twinhub::coap::Token, String)> {
        notifications(sent)
            .iter()
            .map(|m| {
                assert_eq!(m.mtype, MessageType::Confirmable);
                (m.token(), text(m))
            })
            .collect()
    };
    let first = notifications(h.sent());
    assert_eq!(
        on_wire(first.clone()),
        vec![(tokens[0], "50".to_owned())],
        "one on the wire"
    );
    assert_eq!(h.client.unacknowledged_notifications(), 3);
    // The second observation changes again while waiting: replaced where it stands.
    h.client
        .set_value(&path(1), ResourceValue::Float(61.0))
        .unwrap();
    h.advance(0);
    assert!(h.sent().is_empty());
    // Only the one on the wire is retransmitted (ACK_TIMEOUT 2-3 s).
    h.advance(3);
    assert_eq!(notifications(h.sent()), first);
    h.ack(&first[0]);
    let second = notifications(h.sent());
    assert_eq!(on_wire(second.clone()), vec![(tokens[1], "61".to_owned())]);
    h.ack(&second[0]);
    let third = notifications(h.sent());
    assert_eq!(on_wire(third.clone()), vec![(tokens[2], "52".to_owned())]);
    assert_eq!(h.client.unacknowledged_notifications(), 1);
    h.ack(&third[0]);
    assert_eq!(h.client.unacknowledged_notifications(), 0);
    h.expect_no_notification_for(30);
}

#[test]
fn a_final_notification_behind_an_unanswered_one_still_goes_out() {
    let (mut h, token) = observing_confirmably();
    h.set_temperature(21.0);
    assert_eq!(notifications(h.sent()).len(), 1);
    // Never acknowledged: past its fourth retransmission (15 x ACK_TIMEOUT x [1, 1.5)),
    // before it gives up (31 x ...).
    for _ in 0..46 {
        h.advance(1);
    }
    h.sent();
    let instance = Lwm2mPath::instance(3303, 0);
    h.client.objects_mut().delete(&instance).unwrap();
    h.client.notify_changed(&instance);
    let mut last = None;
    for _ in 0..100 {
        h.advance(1);
        if let Some(m) = h
            .sent()
            .into_iter()
            .find(|m| m.token() == token && m.code == Code::NOT_FOUND)
        {
            last = Some(m);
            break;
        }
    }
    let last = last.expect("the final error notification");
    assert_eq!(last.mtype, MessageType::Confirmable);
    h.ack(&last);
    assert_eq!(h.client.unacknowledged_notifications(), 0);
}

#[test]
fn an_observation_whose_notifications_are_never_acknowledged_ends() {
    // The server accepts Updates but never acknowledges this observation's notifications:
    // after the re-send that follows an accepted Update times out too, the observation
    // ends (RFC 7641 §4.5) instead of looping through Updates and re-sends.
    let (mut h, _) = observing_confirmably();
    h.set_temperature(21.0);
    for round in 0..2 {
        let update = h
            .next_post(200)
            .unwrap_or_else(|| panic!("an Update after timeout {round}"));
        assert_eq!(
            h.events(),
            vec![ClientEvent::NotificationTimedOut { path: TEMPERATURE }]
        );
        h.answer(&update, Code::CHANGED, |_| {});
        h.events();
    }
    assert_eq!(h.client.observation_count(), 0);
    assert_eq!(h.client.unacknowledged_notifications(), 0);
    h.set_temperature(25.0);
    h.expect_no_notification_for(300);
}

#[test]
fn re_observing_with_the_same_token_goes_on_from_the_old_sequence() {
    // RFC 7641 §4.1: an observer may re-register with the token it observes with; the
    // Observe values must keep increasing (§4.4), or it takes them for stale ones.
    let mut h = Harness::registered();
    let mut obs = Message::request(Code::GET, "/3303/0/5700");
    obs.set_observe(0);
    let first = h.request(obs.clone());
    let token = first.token();
    let mut last = 0;
    for t in [21.0, 22.0, 23.0] {
        h.set_temperature(t);
        h.advance(1);
        for n in notifications(h.sent()) {
            last = n.observe().unwrap();
        }
    }
    assert!(last > 0);
    obs.mtype = MessageType::Confirmable;
    obs.message_id = 999;
    obs.with_token(token);
    h.client
        .handle_datagram(h.now, server(), &obs.to_bytes().unwrap());
    let again = h
        .sent()
        .into_iter()
        .find(|m| m.message_id == 999)
        .expect("the re-registration's response");
    assert!(again.observe().unwrap() > last, "{again:?} after {last}");
    assert_eq!(h.client.observation_count(), 1);
    h.set_temperature(30.0);
    let n = notifications(h.sent());
    assert!(n[0].observe().unwrap() > again.observe().unwrap());
}

#[test]
fn a_reset_to_an_earlier_notification_cancels_the_observation() {
    // Notifications faster than the round trip: the observer's RST answers one that a
    // newer one already followed; it still ends the observation (RFC 7641 §3.6).
    let mut h = Harness::registered();
    let mut obs = Message::request(Code::GET, "/3303/0/5700");
    obs.set_observe(0);
    let response = h.request(obs);
    h.set_temperature(21.0);
    let first = notifications(h.sent()).remove(0);
    h.advance(1);
    h.set_temperature(22.0);
    assert_eq!(notifications(h.sent()).len(), 1);
    // An RST naming the piggybacked response's id (the server's own) cancels nothing.
    let rst = Message::empty(MessageType::Reset, response.message_id);
    h.client
        .handle_datagram(h.now, server(), &rst.to_bytes().unwrap());
    assert_eq!(h.client.observation_count(), 1);
    let rst = Message::empty(MessageType::Reset, first.message_id);
    h.client
        .handle_datagram(h.now, server(), &rst.to_bytes().unwrap());
    assert_eq!(h.client.observation_count(), 0);
}

#[test]
fn a_reset_matches_only_the_last_four_notifications() {
    // The client remembers the message ids of an observation's last 4 notifications: an
    // RST to an older one matches nothing (the id may be another exchange's by now).
    let mut h = Harness::registered();
    let mut obs = Message::request(Code::GET, "/3303/0/5700");
    obs.set_observe(0);
    h.request(obs);
    let mut ids = Vec::new();
    for t in 0..5 {
        h.advance(1);
        h.set_temperature(21.0 + f64::from(t));
        let n = notifications(h.sent());
        assert_eq!(n.len(), 1);
        ids.push(n[0].message_id);
    }
    let rst = |id: u16| Message::empty(MessageType::Reset, id).to_bytes().unwrap();
    h.client.handle_datagram(h.now, server(), &rst(ids[0]));
    assert_eq!(
        h.client.observation_count(),
        1,
        "an RST to the fifth-last cancelled"
    );
    h.client.handle_datagram(h.now, server(), &rst(ids[1]));
    assert_eq!(h.client.observation_count(), 0);
}

#[test]
fn a_notification_timing_out_during_an_update_asks_no_second_update() {
    // The Update in flight tells whether the server is there: its acceptance re-sends the
    // value, and no second Update follows.
    let (mut h, token) = observing_confirmably();
    h.set_temperature(21.0);
    for _ in 0..50 {
        h.advance(1);
        h.sent();
    }
    h.client.trigger_update();
    let update = h.next_post(5).expect("the triggered Update");
    // The notification gives up (31 x ACK_TIMEOUT x [1, 1.5) <= 93 s) while the Update,
    // unanswered, is still being retransmitted.
    let mut timed_out = false;
    for _ in 0..50 {
        h.advance(1);
        h.sent();
        timed_out |= h
            .events()
            .contains(&ClientEvent::NotificationTimedOut { path: TEMPERATURE });
        if timed_out {
            break;
        }
    }
    assert!(timed_out);
    h.answer(&update, Code::CHANGED, |_| {});
    let again = notifications(h.sent());
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].mtype, again[0].token()),
        (MessageType::Confirmable, token)
    );
    assert!(h.next_post(5).is_none(), "a second Update");
}

/// Reads `path` as text (2.05 expected).
fn read_text(h: &mut Harness, path: &str) -> String {
    let r = h.get(path, None);
    assert_eq!(r.code, Code::CONTENT, "GET {path}");
    text(&r)
}

/// Hands the client a datagram from the server.
fn feed(h: &mut Harness, m: &Message) {
    h.client
        .handle_datagram(h.now, server(), &m.to_bytes().unwrap());
}

/// README, "The device library": "Write-Composite (`iPATCH /`; every value is checked and
/// validated before any is written, so one refusal changes nothing)"; module docs: "validated
/// in full before anything is written ([`ObjectTree::write_composite`])".
///
/// A hostile server sends a Write-Composite that changes /3303/0/5701 and writes a Package
/// URI while the firmware object is not Idle. The firmware object refuses the URI (4.05), but
/// only inside `Object::write` (it had no `validate`), after /3303/0/5701 was already
/// written: the refusal was answered, and the other value stayed changed (a review
/// helper's finding; `Object::validate_write` checks the whole write first now).
#[test]
fn write_composite_refused_by_the_firmware_object_changes_nothing() {
    let mut h = Harness::registered();
    // Push a package: the firmware object goes Downloaded (state 2), no longer Idle.
    let mut push = Message::request(Code::PUT, "/5/0/0");
    push.set_content_format(ContentFormat::OCTET_STREAM);
    push.payload = b"package".to_vec();
    assert_eq!(h.request(push).code, Code::CHANGED);
    assert_eq!(read_text(&mut h, "/5/0/3"), "2");

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
        read_text(&mut h, "/3303/0/5701"),
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
    assert_eq!(read_text(&mut h, "/5/0/3"), "0");
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
        read_text(&mut h, "/5/0/3"),
        "0",
        "the Write was refused ({:?}) but the package was applied (state changed)",
        r.code
    );
    assert_eq!(
        read_text(&mut h, "/5/0/1"),
        "",
        "the URI was not written either"
    );
}

/// RFC 7252 §4.5 (the CoAP the LWM2M client speaks; module docs: "Its own small CoAP
/// exchange layer"): "The recipient SHOULD acknowledge each duplicate copy of a Confirmable
/// message using the same Acknowledgement or Reset message but SHOULD process any request or
/// response in the message only once."
///
/// The server answers Register with an empty ACK, then a separate CON 2.01. Its copy of the
/// client's ACK is lost, so it retransmits the 2.01 (same message id): the client must ACK
/// it again. It answered with a RST instead (the exchange was gone from `outgoing`, so the
/// duplicate was taken for an unknown response), which told the server its Register
/// response was rejected (a review helper's finding).
#[test]
fn a_duplicate_separate_register_response_is_acknowledged_not_reset() {
    let now = Instant::now();
    let mut h = Harness::new(now, ClientConfig::new("dev-1", server()), tree());
    h.client.handle_timeout(h.now);
    let reg = h.sent().pop().expect("register sent");
    assert_eq!(reg.code, Code::POST);
    feed(
        &mut h,
        &Message::empty(MessageType::Acknowledgement, reg.message_id),
    );
    let mut created = Message::new(MessageType::Confirmable, Code::CREATED, 7000);
    created.with_token(reg.token());
    created.add_location_path("rd");
    created.add_location_path("abc");
    feed(&mut h, &created);
    let first = h.sent();
    assert!(
        first
            .iter()
            .any(|m| m.mtype == MessageType::Acknowledgement && m.message_id == 7000),
        "the separate response is acknowledged: {first:?}"
    );
    assert!(h.client.is_registered());
    // The ACK was lost: the server retransmits the same CON response.
    feed(&mut h, &created);
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
    assert_eq!(read_text(&mut h, "/3303/1/5701"), "Far");
}

/// Devices whose server went away at one instant do not come back at one instant: the
/// first registration retry of eight clients that failed together is spread (a random
/// factor in [1, 1.5) on each wait), not one shared deadline.
#[test]
fn registration_retries_of_clients_that_failed_together_are_spread() {
    let now = Instant::now();
    let waits: Vec<Duration> = (0..8)
        .map(|_| {
            let mut cfg = ClientConfig::new("dev-1", server());
            cfg.max_retransmit = 0;
            let mut c = Lwm2mClient::new(now, cfg, tree());
            c.handle_timeout(now);
            let mut t = now;
            for _ in 0..100 {
                t += Duration::from_millis(500);
                c.handle_timeout(t);
                while c.poll_transmit().is_some() {}
                while let Some(e) = c.poll_event() {
                    if let ClientEvent::RegistrationFailed { retry_in, .. } = e {
                        return retry_in;
                    }
                }
            }
            panic!("the Register never failed");
        })
        .collect();
    let first = waits[0];
    assert!(waits.iter().any(|w| *w != first), "{waits:?}");
    assert!(
        waits
            .iter()
            .all(|w| *w >= Duration::from_secs(5) && *w < Duration::from_millis(7500)),
        "{waits:?}"
    );
}
