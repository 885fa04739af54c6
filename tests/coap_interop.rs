//! Interop over loopback with CoAP implementations nobody here wrote:
//! - libcoap's `coap-client-notls` (GET, PUT, POST, observe `-s`, block-wise `-b`) against
//!   our server (we read its output: its exit status is 0 even on failure);
//! - aiocoap as a server our client talks to (GET, observe, Block2 download of 100 KiB);
//! - `aiocoap-client` against our server.
//!
//! A missing peer skips loudly, or fails when TWINHUB_REQUIRE_PEERS=1.

#![cfg(feature = "lwm2m")]

mod coap_support;

mod peers;
use coap_support::{TestServer, big_body};
use peers::{have, missing_peer, run, run_until, strip_newline, wait_or_kill};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use twinhub::coap::{Code, EndpointConfig, Message, UdpDriver};

/// libcoap's client on `args`; it gives up after 30 s without an answer (it ends as soon
/// as it has one: the bound is for a loaded machine).
fn libcoap(args: &[&str]) -> (Vec<u8>, String) {
    let mut all = vec!["-B", "30"];
    all.extend_from_slice(args);
    run("coap-client-notls", &all, Duration::from_secs(40))
}

#[test]
fn libcoap_client_against_our_server() {
    if !have("coap-client-notls") {
        missing_peer("coap-client-notls (Debian libcoap3-bin)");
        return;
    }
    let server = TestServer::start("127.0.0.1:0");
    let base = format!("coap://127.0.0.1:{}", server.port());

    let (out, err) = libcoap(&["-m", "get", &format!("{base}/hello")]);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "world",
        "stderr: {err}"
    );

    let (out, err) = libcoap(&["-m", "put", "-e", "put-body", &format!("{base}/echo")]);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "put-body",
        "stderr: {err}"
    );

    let (out, err) = libcoap(&["-m", "post", "-e", "post-body", &format!("{base}/echo")]);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "post-body",
        "stderr: {err}"
    );

    let (out, err) = libcoap(&["-m", "get", &format!("{base}/nothing")]);
    let text = format!("{}{err}", String::from_utf8_lossy(&out));
    assert!(text.contains("4.04"), "libcoap printed {text:?}");

    // Block2 download with 64-byte blocks asked by the client (early negotiation), and with
    // our default block size.
    let (out, err) = libcoap(&["-m", "get", "-b", "64", &format!("{base}/big")]);
    let out = strip_newline(out);
    assert_eq!(out.len(), big_body().len(), "stderr: {err}");
    assert_eq!(out, big_body());
    let (out, _) = libcoap(&["-m", "get", &format!("{base}/big")]);
    assert_eq!(strip_newline(out), big_body());

    // Block1 upload of 3000 bytes in 128-byte blocks; the echo comes back block-wise.
    let dir = std::env::temp_dir().join(format!("twinhub-coap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("upload.bin");
    let upload: Vec<u8> = (0..3000).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&file, &upload).unwrap();
    let (out, err) = libcoap(&[
        "-m",
        "put",
        "-b",
        "128",
        "-f",
        file.to_str().unwrap(),
        &format!("{base}/echo"),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(strip_newline(out), upload, "stderr: {err}");

    // Observe for 1 s: the first response and three notifications.
    let (out, err) = run(
        "coap-client-notls",
        &["-B", "3", "-s", "1", &format!("{base}/obs")],
        Duration::from_secs(10),
    );
    // libcoap prints each payload as it arrives, without separators.
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "n=0n=1n=2n=3",
        "stderr: {err}"
    );

    let seen = server.finish();
    let puts: Vec<_> = seen
        .iter()
        .filter(|m| m.code == Code::PUT && m.payload.len() == 3000)
        .collect();
    assert_eq!(
        puts.len(),
        1,
        "the Block1 upload reached the application once, whole"
    );
    assert_eq!(puts[0].payload, upload);
}

struct AiocoapServer {
    child: Child,
    port: u16,
}

impl AiocoapServer {
    fn start() -> Option<AiocoapServer> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/aiocoap_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        match line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
        {
            Some(port) => Some(AiocoapServer { child, port }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }
}

impl Drop for AiocoapServer {
    fn drop(&mut self) {
        // Closing stdin asks it to stop; kill (by PID) if it does not.
        drop(self.child.stdin.take());
        wait_or_kill(&mut self.child, Duration::from_secs(3));
    }
}

fn aiocoap_available() -> bool {
    Command::new("python3")
        .args(["-c", "import aiocoap"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn our_client_against_aiocoap_server() {
    if !aiocoap_available() {
        missing_peer("python3 aiocoap");
        return;
    }
    let server = AiocoapServer::start().expect("aiocoap server did not start");
    let peer: SocketAddr = ([127, 0, 0, 1], server.port).into();
    let client = UdpDriver::bind("127.0.0.1:0", EndpointConfig::default()).unwrap();
    let h = client.handle();
    let t = Duration::from_secs(30);

    let r = h
        .request(peer, Message::request(Code::GET, "/hello"), t)
        .unwrap();
    assert_eq!(
        (r.code, r.payload.as_slice()),
        (Code::CONTENT, &b"world"[..])
    );

    let r = h
        .request(peer, Message::request(Code::GET, "/big"), t)
        .unwrap();
    assert_eq!(r.code, Code::CONTENT);
    assert_eq!(r.payload.len(), 100 * 1024);
    assert_eq!(r.payload, big_body());

    // Block1 upload to aiocoap, whose echo comes back block-wise.
    let mut post = Message::request(Code::POST, "/echo");
    post.payload = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let r = h.request(peer, post.clone(), t).unwrap();
    assert_eq!(r.code, Code::CREATED);
    assert_eq!(r.payload, post.payload);

    let obs = h
        .observe(peer, Message::request(Code::GET, "/obs"), t)
        .unwrap();
    assert!(
        obs.first.observe().is_some(),
        "aiocoap accepted the observation"
    );
    let mut values = Vec::new();
    for _ in 0..3 {
        let n = obs.next_notification(t).unwrap().expect("notification");
        let v: u32 = String::from_utf8(n.payload).unwrap()[2..].parse().unwrap();
        values.push(v);
    }
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    obs.cancel().unwrap();
    client.stop();
}

#[test]
fn aiocoap_client_against_our_server() {
    if !have("aiocoap-client") {
        missing_peer("aiocoap-client");
        return;
    }
    let server = TestServer::start("127.0.0.1:0");
    let base = format!("coap://127.0.0.1:{}", server.port());
    let limit = Duration::from_secs(20);

    let (out, err) = run("aiocoap-client", &[&format!("{base}/hello")], limit);
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "world",
        "stderr: {err}"
    );

    let (out, err) = run(
        "aiocoap-client",
        &[
            "-m",
            "PUT",
            "--payload",
            "from-aiocoap",
            &format!("{base}/echo"),
        ],
        limit,
    );
    assert!(
        String::from_utf8_lossy(&out).contains("from-aiocoap"),
        "out: {out:?} stderr: {err}"
    );

    // A 100 KiB Block2 download; write it to a file to compare bytes.
    let (out, err) = run(
        "aiocoap-client",
        &["--content-format", "42", &format!("{base}/big")],
        limit,
    );
    let _ = err;
    let got = out.iter().filter(|b| !b.is_ascii_whitespace()).count();
    assert_eq!(got, big_body().len(), "the whole body arrived");

    // Observe. aiocoap-client 0.4.17 stops listening right after the first response (its
    // `finally` cancels the observation locally and it ignores the NON notifications that
    // follow), so only the registration itself can be checked here; notifications to
    // aiocoap are covered by `our_client_against_aiocoap_server` in the other direction
    // and by libcoap above.
    // It observes until stopped: stopped once it printed the first response (at most
    // 30 s: its start alone may take seconds on a loaded machine).
    let (out, err) = run_until(
        "aiocoap-client",
        &["--observe", &format!("{base}/obs")],
        Duration::from_secs(30),
        |out| String::from_utf8_lossy(out).contains("n=0"),
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("n=0"),
        "first response missing in {text:?}; stderr: {err}"
    );
    let mut seen = server.finish();
    assert!(
        seen.iter()
            .any(|m| m.uri_path_string() == "obs" && m.observe() == Some(0)),
        "aiocoap-client registered"
    );
    seen.retain(|m| m.uri_path_string() == "big");
    assert_eq!(seen.len(), 1, "follow-up blocks are served by the endpoint");
    let _ = std::io::stderr().flush();
}
