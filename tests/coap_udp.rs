//! Our client against our server over loopback UDP through the std driver.

#![cfg(feature = "lwm2m")]

mod coap_support;

use coap_support::{TestServer, big_body};
use std::net::SocketAddr;
use std::time::Duration;
use twinhub::coap::{Code, DriverError, EndpointConfig, Message, RequestError, UdpDriver};

/// How long a caller waits for an answer that comes at once (generous: a loaded machine
/// may not run the threads for a while).
const T: Duration = Duration::from_secs(30);

#[test]
fn get_put_post_delete_and_block_wise_over_loopback() {
    let server = TestServer::start("127.0.0.1:0");
    let client = UdpDriver::bind("127.0.0.1:0", EndpointConfig::default()).unwrap();
    let h = client.handle();
    let peer: SocketAddr = ([127, 0, 0, 1], server.port()).into();

    let r = h
        .request(peer, Message::request(Code::GET, "/hello"), T)
        .unwrap();
    assert_eq!(
        (r.code, r.payload.as_slice()),
        (Code::CONTENT, &b"world"[..])
    );

    let mut put = Message::request(Code::PUT, "/echo");
    put.payload = b"abc".to_vec();
    let r = h.request(peer, put, T).unwrap();
    assert_eq!((r.code, r.payload.as_slice()), (Code::CHANGED, &b"abc"[..]));

    // Block1 up and Block2 down in one exchange: 5000 bytes each way.
    let mut post = Message::request(Code::POST, "/echo");
    post.payload = (0..5000u32).map(|i| i as u8).collect();
    let r = h.request(peer, post.clone(), T).unwrap();
    assert_eq!(r.code, Code::CREATED);
    assert_eq!(r.payload, post.payload);

    let r = h
        .request(peer, Message::request(Code::DELETE, "/x"), T)
        .unwrap();
    assert_eq!(r.code, Code::DELETED);
    let r = h
        .request(peer, Message::request(Code::GET, "/nope"), T)
        .unwrap();
    assert_eq!(r.code, Code::NOT_FOUND);

    let r = h
        .request(peer, Message::request(Code::GET, "/big"), T)
        .unwrap();
    assert_eq!(r.payload, big_body());

    let seen = server.finish();
    let posts: Vec<_> = seen.iter().filter(|m| m.code == Code::POST).collect();
    assert_eq!(
        posts.len(),
        1,
        "the Block1 body reached the application once"
    );
    assert_eq!(posts[0].payload.len(), 5000);
    assert_eq!(
        seen.iter().filter(|m| m.uri_path_string() == "big").count(),
        1
    );
    client.stop();
}

#[test]
fn observe_over_loopback() {
    let server = TestServer::start("127.0.0.1:0");
    let client = UdpDriver::bind("127.0.0.1:0", EndpointConfig::default()).unwrap();
    let peer: SocketAddr = ([127, 0, 0, 1], server.port()).into();
    let obs = client
        .handle()
        .observe(peer, Message::request(Code::GET, "/obs"), T)
        .unwrap();
    assert_eq!(obs.first.payload, b"n=0");
    assert!(obs.first.observe().is_some());
    let mut got = Vec::new();
    for _ in 0..3 {
        let n = obs.next_notification(T).unwrap().expect("a notification");
        got.push(String::from_utf8(n.payload).unwrap());
    }
    assert_eq!(got, ["n=1", "n=2", "n=3"]);
    obs.forget().unwrap();
    drop(server);
}

#[test]
fn request_to_a_silent_port_times_out_for_the_caller() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = UdpDriver::bind("127.0.0.1:0", EndpointConfig::default()).unwrap();
    let r = client.handle().request(
        silent.local_addr().unwrap(),
        Message::request(Code::GET, "/x"),
        Duration::from_millis(300),
    );
    assert_eq!(r, Err(DriverError::Timeout));
    // With a short endpoint timeout the endpoint itself gives up.
    let cfg = EndpointConfig {
        ack_timeout: Duration::from_millis(20),
        max_retransmit: 2,
        ..EndpointConfig::default()
    };
    let fast = UdpDriver::bind("127.0.0.1:0", cfg).unwrap();
    let r = fast.handle().request(
        silent.local_addr().unwrap(),
        Message::request(Code::GET, "/x"),
        T,
    );
    assert_eq!(r, Err(DriverError::Request(RequestError::TimedOut)));
    fast.stop();
    client.stop();
}

#[test]
fn ipv6_loopback_works() {
    let Ok(server) = std::panic::catch_unwind(|| TestServer::start("[::1]:0")) else {
        eprintln!("!!! SKIPPING: no IPv6 loopback on this machine !!!");
        return;
    };
    let client = UdpDriver::bind("[::1]:0", EndpointConfig::default()).unwrap();
    let peer: SocketAddr = format!("[::1]:{}", server.port()).parse().unwrap();
    let r = client
        .handle()
        .request(peer, Message::request(Code::GET, "/hello"), T)
        .unwrap();
    assert_eq!(r.payload, b"world");
}
