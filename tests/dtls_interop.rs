//! DTLS 1.2 PSK interop over loopback with software nobody here wrote:
//! - libcoap's `coap-client-openssl` and `coap-client-gnutls` (`-u IDENTITY -k KEY`)
//!   against our `coaps` CoAP server: GET, PUT, observe, block-wise; a wrong key or an
//!   unknown identity gets nothing;
//! - our device-side DTLS client against `coap-server-openssl` / `coap-server-gnutls` with
//!   a PSK: a CoAP GET over the session; a wrong key fails the handshake.
//!
//! libcoap's tools exit 0 even on failure: the tests read their output. A missing peer
//! skips loudly, or fails when TWINHUB_REQUIRE_PEERS=1.

#![cfg(feature = "lwm2m")]

mod coap_support;
mod peers;

use coap_support::{TestServer, big_body};
use peers::{have, missing_peer, run, strip_newline, wait_or_kill};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::dtls::{DtlsClient, PskCredentials, PskKey, PskStore};

const IDENTITY: &str = "interop-id";
/// libcoap takes the key as text; these are its bytes.
const KEY: &str = "interop-secret-1";

fn store() -> PskStore {
    let store = PskStore::new();
    store
        .set(
            None,
            PskCredentials::new(IDENTITY, PskKey::new(KEY.as_bytes().to_vec())).unwrap(),
        )
        .unwrap();
    store
}

/// libcoap's `tool` on `uri`; it gives up after 30 s without an answer (it ends as soon as
/// it has one: the bound is for a loaded machine).
fn client(tool: &str, extra: &[&str], uri: &str, key: &str) -> (Vec<u8>, String) {
    let mut args = vec!["-B", "30", "-u", IDENTITY, "-k", key];
    args.extend_from_slice(extra);
    args.push(uri);
    run(tool, &args, Duration::from_secs(40))
}

fn libcoap_client_against_our_coaps_server(tool: &str) {
    if !have(tool) {
        missing_peer(&format!("{tool} (Debian libcoap3-bin)"));
        return;
    }
    let server = TestServer::start_secure("127.0.0.1:0", store());
    let base = format!("coaps://127.0.0.1:{}", server.port());

    let (out, err) = client(tool, &["-m", "get"], &format!("{base}/hello"), KEY);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "world",
        "{tool} stderr: {err}"
    );

    let (out, err) = client(
        tool,
        &["-m", "put", "-e", "put-body"],
        &format!("{base}/echo"),
        KEY,
    );
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "put-body",
        "{tool} stderr: {err}"
    );

    // Block2 download in 64-byte blocks.
    let (out, err) = client(
        tool,
        &["-m", "get", "-b", "64"],
        &format!("{base}/big"),
        KEY,
    );
    assert_eq!(strip_newline(out), big_body(), "{tool} stderr: {err}");

    // Observe for 1 s: the first response and three notifications.
    let (out, err) = run(
        tool,
        &[
            "-B",
            "3",
            "-u",
            IDENTITY,
            "-k",
            KEY,
            "-s",
            "1",
            &format!("{base}/obs"),
        ],
        Duration::from_secs(15),
    );
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "n=0n=1n=2n=3",
        "{tool} stderr: {err}"
    );

    // A wrong key, and an unknown identity: no answer.
    let (out, err) = run(
        tool,
        &[
            "-B",
            "3",
            "-u",
            IDENTITY,
            "-k",
            "wrong-secret-123",
            &format!("{base}/hello"),
        ],
        Duration::from_secs(15),
    );
    assert!(
        !String::from_utf8_lossy(&out).contains("world"),
        "{tool}: {err}"
    );
    let (out, err) = run(
        tool,
        &[
            "-B",
            "3",
            "-u",
            "nobody",
            "-k",
            KEY,
            &format!("{base}/hello"),
        ],
        Duration::from_secs(15),
    );
    assert!(
        !String::from_utf8_lossy(&out).contains("world"),
        "{tool}: {err}"
    );

    let seen = server.finish();
    assert!(
        seen.iter()
            .any(|m| m.code == Code::PUT && m.payload == b"put-body")
    );
}

#[test]
fn coap_client_openssl_against_our_coaps_server() {
    libcoap_client_against_our_coaps_server("coap-client-openssl");
}

#[test]
fn coap_client_gnutls_against_our_coaps_server() {
    libcoap_client_against_our_coaps_server("coap-client-gnutls");
}

/// A CoAP GET through our DTLS client; the answer's payload, or `None` when no answer
/// came (the handshake failed).
fn get_over_dtls(server: SocketAddr, creds: PskCredentials, path: &str) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut dtls = DtlsClient::new(Instant::now(), creds);
    let mut m = Message::request(Code::GET, path);
    m.message_id = 0x1234;
    m.set_token(b"tk");
    let mut bytes = Vec::new();
    m.encode(&mut bytes).unwrap();
    dtls.send(Instant::now(), &bytes);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline && !dtls.has_failed() {
        while let Some(r) = dtls.poll_transmit() {
            socket.send_to(&r, server).unwrap();
        }
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            dtls.handle_datagram(Instant::now(), &buf[..n]);
        }
        dtls.handle_timeout(Instant::now());
        while let Some(plain) = dtls.poll_plaintext() {
            if let Ok(answer) = Message::decode(&plain)
                && answer.mtype == MessageType::Acknowledgement
                && answer.message_id == 0x1234
            {
                return Some(answer);
            }
        }
    }
    None
}

fn our_client_against_libcoap_server(tool: &str) {
    if !have(tool) {
        missing_peer(&format!("{tool} (Debian libcoap3-bin)"));
        return;
    }
    // libcoap listens for DTLS on port + 1: find two free neighbours.
    let port = (0..50)
        .find_map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").ok()?;
            let p = s.local_addr().ok()?.port();
            let next = UdpSocket::bind(("127.0.0.1", p.checked_add(1)?)).ok()?;
            drop((s, next));
            Some(p)
        })
        .expect("two free neighbouring ports");
    let mut child = Command::new(tool)
        .args(["-A", "127.0.0.1", "-p", &port.to_string(), "-k", KEY])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server: SocketAddr = ([127, 0, 0, 1], port + 1).into();
    std::thread::sleep(Duration::from_millis(300));
    let creds = PskCredentials::new(IDENTITY, PskKey::new(KEY.as_bytes().to_vec())).unwrap();
    // libcoap's server answers GET / with its banner. A loaded machine may start it late
    // (a CI run once saw no answer within the first 5 s): up to three tries.
    let answer = (0..3).find_map(|_| get_over_dtls(server, creds.clone(), "/"));
    let wrong = PskCredentials::new(IDENTITY, PskKey::new(b"wrong-secret-123".to_vec())).unwrap();
    let refused = get_over_dtls(server, wrong, "/");
    let _ = child.kill();
    wait_or_kill(&mut child, Duration::from_secs(2));
    let answer = answer.unwrap_or_else(|| panic!("no answer from {tool} over dtls"));
    assert_eq!(answer.code, Code::CONTENT, "{tool}");
    assert!(
        String::from_utf8_lossy(&answer.payload).contains("libcoap"),
        "{tool}"
    );
    assert!(refused.is_none(), "{tool} answered a wrong key");
}

#[test]
fn our_dtls_client_against_coap_server_openssl() {
    our_client_against_libcoap_server("coap-server-openssl");
}

#[test]
fn our_dtls_client_against_coap_server_gnutls() {
    our_client_against_libcoap_server("coap-server-gnutls");
}
