//! Hostile review of LwM2M bootstrap, both sides, sans-IO (simulated clock, no sockets):
//! the device library's Bootstrap-Discover / Bootstrap-Write / Client Hold Off Time /
//! fallback to bootstrap, and the hub server's bootstrap session against a client that
//! rejects Bootstrap-Discover. Each test failed on the code as reviewed (fixed since).

#![cfg(all(feature = "device", feature = "lwm2m"))]

mod scripted_bs;

use scripted_bs::{Dev, bootstrap_config, bootstrap_tree, bs, dm, security, server};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, ContentFormat, Message, MessageType};
use twinhub::lwm2m::client::{ObjectTree, objects};
use twinhub::lwm2m::server::{BootstrapPlan, Lwm2mServer, ServerAccount, ServerConfig};
use twinhub::transport::{BootstrapOutcome, DeviceEvent, Transport};
use twinhub::{Lwm2mPath, ResourceValue};

/// The client of `tree`, retrying after 1 s, then up to 8 s.
fn dev_with_tree(tree: ObjectTree) -> Dev {
    let mut config = bootstrap_config();
    config.retry_initial = Duration::from_secs(1);
    config.retry_max = Duration::from_secs(8);
    Dev::new(tree, config, 700)
}

/// [`dev_with_tree`] with only the bootstrap account.
fn new_dev() -> Dev {
    dev_with_tree(bootstrap_tree())
}

/// LwM2M 1.1 TS Core, Security object /0, resource 11 "Client Hold Off Time": "The number
/// of seconds to wait before initiating a Client Initiated Bootstrap once the LwM2M Client
/// has determined it should initiate this bootstrap mode." The crate's own bootstrap module
/// docs rely on it: "the device retries on its own (its hold-off and retry timers)".
#[test]
fn client_hold_off_time_delays_the_bootstrap_request() {
    let mut tree = ObjectTree::new();
    tree.add(
        objects::bootstrap_security(&format!("coap://{}", bs())).with_value(
            0,
            11,
            ResourceValue::Integer(30),
        ),
    );
    tree.add(objects::unprovisioned_server());
    tree.add(objects::device("Contoso", "MX1", "SN-42", "1.0.0"));
    let mut d = dev_with_tree(tree);
    let start = d.now;
    let mut first_request = None;
    for _ in 0..40 {
        d.client.handle_timeout(d.now);
        if d.sent()
            .iter()
            .any(|(to, m)| *to == bs() && m.uri_path().eq(["bs"]))
        {
            first_request = Some(d.now - start);
            break;
        }
        d.now += Duration::from_secs(1);
    }
    let at = first_request.expect("a Bootstrap-Request within 40 s");
    assert!(
        at >= Duration::from_secs(30),
        "Bootstrap-Request sent {at:?} after start, ignoring /0/0/11 = 30 s"
    );
}

/// LwM2M 1.1 TS Core, Server object /1, resource 16 "Bootstrap on Registration Failure":
/// "If set to true, or if this resource is not present, the LwM2M Client Bootstrap
/// procedure is initiated when the sequence of registration attempts fails." (default
/// Communication Retry Count /1/x/17 = 5, Sequence Retry Count /1/x/19 = 1). The brief and
/// README pair "bootstrap first" with the client; a device whose provisioned server keeps
/// refusing it must go back to its bootstrap server (after backoff), not retry forever.
#[test]
fn a_refused_registration_falls_back_to_bootstrap() {
    let mut d = new_dev();
    d.start_bootstrap();
    assert_eq!(
        d.write(
            Lwm2mPath::instance(0, 1),
            security(1, &format!("coap://{}", dm()), 5)
        ),
        Code::CHANGED
    );
    assert_eq!(
        d.write(Lwm2mPath::instance(1, 0), server(0, 5, 60)),
        Code::CHANGED
    );
    assert_eq!(
        d.request(Message::request(Code::POST, "/bs")).code,
        Code::CHANGED
    );
    while d.client.poll_event().is_some() {}

    // The provisioned server refuses every Register (4.03). Bounded: 30 attempts.
    let mut registers = 0;
    let mut rebootstrap = false;
    for _ in 0..200 {
        d.client.handle_timeout(d.now);
        for (to, m) in d.sent() {
            if to == bs() && m.uri_path().eq(["bs"]) {
                rebootstrap = true;
            } else if to == dm() && m.uri_path().eq(["rd"]) {
                registers += 1;
                d.answer_from(dm(), &m, Code::FORBIDDEN);
            }
        }
        while d.client.poll_event().is_some() {}
        if rebootstrap || registers >= 30 {
            break;
        }
        d.now = d
            .client
            .poll_timeout()
            .unwrap_or(d.now + Duration::from_secs(1))
            .max(d.now + Duration::from_millis(1));
    }
    assert!(registers >= 1, "the client registered at least once");
    assert!(
        rebootstrap,
        "{registers} refused registrations and no new Bootstrap-Request"
    );
}

/// LwM2M 1.1 TS Core, Bootstrap-Write parameters: Object ID (required), Object Instance
/// ID (optional), Resource ID (optional); a Bootstrap-Write on an Object writes (creating)
/// the instances in its payload (Leshan's bootstrap server writes whole objects). The
/// client module docs: "While it runs, only the bootstrap server's requests are served
/// (Discover, Write and Delete on any object, Security `/0` included; Finish)".
#[test]
fn a_bootstrap_write_of_a_whole_object_is_accepted() {
    let mut d = new_dev();
    d.start_bootstrap();
    let code = d.write(Lwm2mPath::object(1), server(0, 5, 60));
    assert_eq!(
        code,
        Code::CHANGED,
        "Bootstrap-Write PUT /1 answered {code:?}"
    );
    let ids = d.client.objects_mut().object_mut(1).unwrap().instance_ids();
    assert_eq!(ids, [0]);
}

/// LwM2M 1.1 TS Core, Bootstrap-Discover: its parameter is the Object ID ("/" is accepted
/// in place of it to report all Objects); the answer is the links "for each targeted Object
/// and Object Instance". Bootstrap-Discover of `/1` lists the Server object's instances,
/// not the whole tree (the module docs: "Bootstrap-Discover (`GET` with Accept link
/// format)", LWM2M 1.1 §5.2.7.3).
#[test]
fn a_bootstrap_discover_of_one_object_lists_only_that_object() {
    let mut d = new_dev();
    d.start_bootstrap();
    assert_eq!(
        d.write(Lwm2mPath::instance(1, 0), server(0, 5, 60)),
        Code::CHANGED
    );
    let mut m = Message::request(Code::GET, "/1");
    m.set_accept(ContentFormat::LINK_FORMAT);
    let r = d.request(m);
    assert_eq!(r.code, Code::CONTENT);
    let links = String::from_utf8(r.payload).unwrap();
    assert!(
        !links.contains("</0") && !links.contains("</3"),
        "Bootstrap-Discover /1 answered with other objects: {links}"
    );
}

/// The hub's bootstrap module docs (src/lwm2m/server/bootstrap.rs): "1. Bootstrap-Discover
/// ... An LWM2M 1.0 client may not support it, so its answer (or error) never stops the
/// session." A CoAP node that cannot process a CON rejects it with RST (RFC 7252 §4.2).
#[test]
fn a_rejected_bootstrap_discover_does_not_end_the_session() {
    let mut server =
        Lwm2mServer::with_seed(ServerConfig::default(), 7).with_bootstrap(Box::new(|_| {
            Some(BootstrapPlan::new(vec![ServerAccount::new(
                1,
                format!("coap://{}", dm()),
            )]))
        }));
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:9100".parse().unwrap();
    let mut req = Message::request(Code::POST, "/bs");
    req.add_uri_query("ep=dev");
    req.message_id = 42;
    req.set_token(&[1, 2, 3, 4]);
    server.handle_datagram(now, peer, &req.to_bytes().unwrap());
    let out: Vec<Message> = std::iter::from_fn(|| server.poll_transmit())
        .map(|t| Message::decode(&t.payload).unwrap())
        .collect();
    let discover = out
        .iter()
        .find(|m| m.code == Code::GET && m.mtype == MessageType::Confirmable)
        .expect("Bootstrap-Discover")
        .clone();
    // The 1.0 client rejects the Discover.
    let rst = Message::empty(MessageType::Reset, discover.message_id);
    server.handle_datagram(now, peer, &rst.to_bytes().unwrap());
    let events: Vec<DeviceEvent> = std::iter::from_fn(|| server.poll_event()).collect();
    let failed = events.iter().find(|e| {
        matches!(
            e,
            DeviceEvent::Bootstrap {
                outcome: BootstrapOutcome::Failed(_),
                ..
            }
        )
    });
    assert!(failed.is_none(), "the session ended: {failed:?}");
    let next: Vec<Message> = std::iter::from_fn(|| server.poll_transmit())
        .map(|t| Message::decode(&t.payload).unwrap())
        .collect();
    assert!(
        next.iter().any(|m| m.code == Code::DELETE),
        "no Bootstrap-Delete after the rejected Discover: {next:?}"
    );
    assert_eq!(server.bootstrap_sessions(), 1);
}
