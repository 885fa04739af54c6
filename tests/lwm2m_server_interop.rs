//! Interop over loopback UDP: third-party LWM2M clients against our server's UDP driver.
//!
//! - lwm2m-node-lib's client (npm, tests/peers/lwm2m_node_client.js) registers, is read,
//!   written, executed and observed, updates (from a new source port) and de-registers;
//! - an aiocoap-scripted client (tests/peers/aiocoap_lwm2m_client.py) registers, answers
//!   reads in TLV and notifies in TLV and SenML JSON from recorded vectors, updates and
//!   de-registers;
//! - an aiocoap client that speaks only SenML CBOR through cbor2 (an independent CBOR
//!   codec; tests/peers/aiocoap_cbor_client.py) registers without `ct`, is read, written
//!   and observed: our encoder's bytes decode there, theirs decode here;
//! - an aiocoap-scripted bootstrap client (tests/peers/aiocoap_bootstrap_client.py) asks
//!   to be bootstrapped and is given a PSK server account: Discover, Delete, two TLV
//!   writes and Finish reach it in that order.
//!
//! A missing peer skips the test with a loud message; with TWINHUB_REQUIRE_PEERS=1 it fails.

#![cfg(feature = "lwm2m")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};
use twinhub::lwm2m::server::{Lwm2mServer, Packages, ServerConfig, UdpServer};
use twinhub::transport::{
    DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, OpId, WriteMode,
};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

/// How long a step may take (generous: a loaded machine may not run the peer or the
/// threads for a while; every wait ends as soon as its step is done).
const WAIT: Duration = Duration::from_secs(30);

mod peers;
use peers::{peer_available, peers_dir};

/// A child process whose stdout lines arrive on a channel; killed by PID on drop.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    fn spawn(cmd: &mut Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn peer");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for a stdout line starting with `prefix`.
    fn expect(&mut self, prefix: &str) -> String {
        let end = Instant::now() + WAIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(l) => {
                    assert!(
                        !l.starts_with("ERROR"),
                        "peer failed: {l} (earlier: {:?})",
                        self.seen
                    );
                    self.seen.push(l);
                }
                Err(_) => panic!("peer never said {prefix:?}; it said {:?}", self.seen),
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the first event `pick` accepts, keeping the others.
fn wait_for<T>(
    events: &Receiver<DeviceEvent>,
    what: &str,
    mut pick: impl FnMut(&DeviceEvent) -> Option<T>,
) -> T {
    let end = Instant::now() + WAIT;
    let mut skipped = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e) => match pick(&e) {
                Some(t) => return t,
                None => skipped.push(e),
            },
            Err(_) => panic!("no {what} event; got {skipped:?}"),
        }
    }
}

/// The first event `pick` accepts within `within` (the others dropped), or `None`.
fn recv_within<T>(
    events: &Receiver<DeviceEvent>,
    within: Duration,
    mut pick: impl FnMut(&DeviceEvent) -> Option<T>,
) -> Option<T> {
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if let Some(t) = pick(&events.recv_timeout(left).ok()?) {
            return Some(t);
        }
    }
}

fn response(events: &Receiver<DeviceEvent>, id: u64) -> Result<DeviceReply, DeviceError> {
    wait_for(events, &format!("response to op {id}"), |e| match e {
        DeviceEvent::Response { op, result, .. } if *op == OpId(id) => Some(result.clone()),
        DeviceEvent::TimedOut { op, .. } if *op == OpId(id) => panic!("op {id} timed out"),
        _ => None,
    })
}

fn op(id: u64, device: &DeviceId, request: DeviceRequest) -> DeviceOp {
    DeviceOp {
        id: OpId(id),
        device: device.clone(),
        request,
    }
}

fn open_server() -> (UdpServer, Receiver<DeviceEvent>) {
    let server = Lwm2mServer::new(ServerConfig {
        auto_provision: true,
        ..ServerConfig::default()
    });
    UdpServer::bind("127.0.0.1:0", server).unwrap()
}

#[test]
fn lwm2m_node_lib_client_full_cycle() {
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let lib_ok = peers_dir().join("node_modules/lwm2m-node-lib").is_dir();
    if !peer_available("node + lwm2m-node-lib", node_ok && lib_ok) {
        return;
    }
    let (udp, events) = open_server();
    let port = udp.local_addr().port().to_string();
    let handle = udp.handle();
    let mut peer = Peer::spawn(
        Command::new("node")
            .arg(peers_dir().join("lwm2m_node_client.js"))
            .args(["127.0.0.1", &port, "node-dev-1"]),
    );
    let device = DeviceId::new("node-dev-1").unwrap();

    let reg = wait_for(&events, "registered", |e| match e {
        DeviceEvent::Registered { registration, .. } => Some(registration.clone()),
        _ => None,
    });
    let location = peer.expect("REGISTERED ");
    assert_eq!(location, format!("REGISTERED rd/{}", reg.registration_id));
    assert_eq!(
        (
            reg.endpoint.as_str(),
            reg.lifetime,
            reg.lwm2m_version.as_str()
        ),
        ("node-dev-1", 60, "1.0")
    );
    assert!(reg.objects.contains(&Lwm2mPath::instance(3, 0)), "{reg:?}");

    // Read: plain text back, typed by the standard table.
    handle
        .submit(op(
            1,
            &device,
            DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        ))
        .unwrap();
    assert_eq!(
        response(&events, 1),
        Ok(DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 9),
            ResourceValue::Integer(87)
        )))
    );
    handle
        .submit(op(
            2,
            &device,
            DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 0),
            },
        ))
        .unwrap();
    assert_eq!(
        response(&events, 2),
        Ok(DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 0),
            ResourceValue::String("ACME".into())
        )))
    );

    // Write a single resource (text), then read it back.
    let utc = Lwm2mPath::resource(3, 0, 14);
    handle
        .submit(op(
            3,
            &device,
            DeviceRequest::Write {
                path: utc,
                mode: WriteMode::Replace,
                content: Content::single(utc, ResourceValue::String("+05:00".into())),
            },
        ))
        .unwrap();
    assert_eq!(response(&events, 3), Ok(DeviceReply::Done));
    assert_eq!(peer.expect("WRITE "), "WRITE /3/0/14 +05:00");
    handle
        .submit(op(4, &device, DeviceRequest::Read { path: utc }))
        .unwrap();
    assert_eq!(
        response(&events, 4),
        Ok(DeviceReply::Content(Content::single(
            utc,
            ResourceValue::String("+05:00".into())
        )))
    );

    // Execute.
    handle
        .submit(op(
            5,
            &device,
            DeviceRequest::Execute {
                path: Lwm2mPath::resource(3, 0, 4),
                args: None,
            },
        ))
        .unwrap();
    assert_eq!(response(&events, 5), Ok(DeviceReply::Done));
    assert!(peer.expect("EXECUTE ").starts_with("EXECUTE /3/0/4"));

    // A missing resource.
    handle
        .submit(op(
            6,
            &device,
            DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 77),
            },
        ))
        .unwrap();
    assert_eq!(response(&events, 6), Err(DeviceError::NotFound));

    // Observe: node-lib drops the first answer; the first value comes with the first change.
    let bat = Lwm2mPath::resource(3, 0, 9);
    handle
        .submit(op(7, &device, DeviceRequest::Observe { path: bat }))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    peer.say("set 3/0 9 42");
    // A change made before the Observe reached the peer (late on a loaded machine) does
    // not answer it: change the value again (43, 42, ...) until the answer comes.
    let mut changes = 0;
    let first = loop {
        let answer = recv_within(&events, Duration::from_secs(3), |e| match e {
            DeviceEvent::Response { op, result, .. } if *op == OpId(7) => Some(result.clone()),
            DeviceEvent::TimedOut { op, .. } if *op == OpId(7) => panic!("op 7 timed out"),
            _ => None,
        });
        if let Some(answer) = answer {
            break answer.unwrap();
        }
        changes += 1;
        assert!(changes < 10, "no answer to the Observe");
        peer.say(if changes % 2 == 1 {
            "set 3/0 9 43"
        } else {
            "set 3/0 9 42"
        });
    };
    assert!(matches!(first, DeviceReply::Content(_)), "{first:?}");
    peer.say("set 3/0 9 41");
    // Notifications in order; node-lib may repeat 42 (or 43, the value changed again
    // above) as a notification after the answer.
    let mut values = Vec::new();
    wait_for(&events, "notification of 41", |e| match e {
        DeviceEvent::Notification { path, content, .. } if *path == bat => {
            values.push(content.get(&bat).cloned());
            (content.get(&bat) == Some(&ResourceValue::Integer(41))).then_some(())
        }
        _ => None,
    });
    assert!(
        values
            .iter()
            .all(|v| matches!(v, Some(ResourceValue::Integer(41..=43)))),
        "{values:?}"
    );

    // Update comes from a new source port: the server follows it.
    peer.say("update");
    let updated = wait_for(&events, "registration updated", |e| match e {
        DeviceEvent::RegistrationUpdated { registration, .. } => Some(registration.clone()),
        _ => None,
    });
    peer.expect("UPDATED");
    assert_eq!(updated.registration_id, reg.registration_id);
    handle
        .submit(op(
            8,
            &device,
            DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 3),
            },
        ))
        .unwrap();
    assert_eq!(
        response(&events, 8),
        Ok(DeviceReply::Content(Content::single(
            Lwm2mPath::resource(3, 0, 3),
            ResourceValue::String("1.0.0".into())
        )))
    );

    peer.say("deregister");
    wait_for(&events, "deregistered", |e| match e {
        DeviceEvent::Deregistered { device: d } if *d == device => Some(()),
        _ => None,
    });
    peer.expect("DEREGISTERED");
    let server = udp.stop();
    assert_eq!(server.registered_count(), 0);
}

#[test]
fn aiocoap_scripted_client_tlv_and_senml_vectors() {
    let py_ok = Command::new("python3")
        .args(["-c", "import aiocoap"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !peer_available("python3 + aiocoap", py_ok) {
        return;
    }
    // The server also hands out a package (a firmware image) to registered devices.
    let packages = Packages::default();
    let image: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    packages.publish("fw/2.0.bin", image.clone()).unwrap();
    let server = Lwm2mServer::new(ServerConfig {
        auto_provision: true,
        ..ServerConfig::default()
    })
    .with_packages(packages.clone());
    let (udp, events) = UdpServer::bind("127.0.0.1:0", server).unwrap();
    let port = udp.local_addr().port().to_string();
    let handle = udp.handle();
    let mut peer = Peer::spawn(
        Command::new("python3")
            .arg(peers_dir().join("aiocoap_lwm2m_client.py"))
            .args(["127.0.0.1", &port, "py-dev-1"]),
    );
    let device = DeviceId::new("py-dev-1").unwrap();
    let reg = wait_for(&events, "registered", |e| match e {
        DeviceEvent::Registered { registration, .. } => Some(registration.clone()),
        _ => None,
    });
    peer.expect("REGISTERED rd/");
    assert_eq!((reg.lwm2m_version.as_str(), reg.lifetime), ("1.1", 60));
    assert_eq!(
        reg.objects,
        vec![
            Lwm2mPath::instance(1, 0),
            Lwm2mPath::instance(3, 0),
            Lwm2mPath::instance(5, 0)
        ]
    );

    // Read the whole Device instance: the TS's TLV vector, decoded with standard types.
    handle
        .submit(op(
            1,
            &device,
            DeviceRequest::Read {
                path: Lwm2mPath::instance(3, 0),
            },
        ))
        .unwrap();
    let Ok(DeviceReply::Content(c)) = response(&events, 1) else {
        panic!("read /3/0 failed")
    };
    assert_eq!(c.values.len(), 16);
    assert_eq!(
        c.get(&Lwm2mPath::resource(3, 0, 0)),
        Some(&ResourceValue::String("Open Mobile Alliance".into()))
    );
    assert_eq!(
        c.get(&Lwm2mPath::resource_instance(3, 0, 7, 1)),
        Some(&ResourceValue::Integer(5000))
    );
    assert_eq!(
        c.get(&Lwm2mPath::resource(3, 0, 13)),
        Some(&ResourceValue::Time(1_367_491_215))
    );

    // Observe the battery; notifications alternate TLV and SenML JSON.
    let bat = Lwm2mPath::resource(3, 0, 9);
    handle
        .submit(op(2, &device, DeviceRequest::Observe { path: bat }))
        .unwrap();
    assert_eq!(
        response(&events, 2),
        Ok(DeviceReply::Content(Content::single(
            bat,
            ResourceValue::Integer(51)
        )))
    );
    peer.expect("OBSERVED");
    for expected in [50, 49, 48, 47] {
        peer.say("notify");
        let v = wait_for(&events, "notification", |e| match e {
            DeviceEvent::Notification {
                device: d,
                path,
                content,
                ..
            } if *d == device && *path == bat => Some(content.values.clone()),
            _ => None,
        });
        assert_eq!(v, vec![(bat, ResourceValue::Integer(expected))]);
    }

    // aiocoap pulls the package block-wise (5000 bytes: five 1024-byte blocks) and gets
    // every byte; an unknown name is 4.04.
    peer.say("download pkg/fw/2.0.bin");
    let hex: String = image.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(peer.expect("DOWNLOAD"), format!("DOWNLOADED {hex}"));
    assert_eq!(packages.downloads(), 1);
    peer.say("download pkg/fw/none");
    assert_eq!(peer.expect("DOWNLOAD"), "DOWNLOAD 4.04");

    peer.say("update");
    let updated = wait_for(&events, "registration updated", |e| match e {
        DeviceEvent::RegistrationUpdated { registration, .. } => Some(registration.clone()),
        _ => None,
    });
    peer.expect("UPDATED");
    assert_eq!(updated.lifetime, 120);
    peer.say("deregister");
    wait_for(&events, "deregistered", |e| {
        matches!(e, DeviceEvent::Deregistered { .. }).then_some(())
    });
    peer.expect("DEREGISTERED");
    peer.say("exit");
    let server = udp.stop();
    assert_eq!(
        (server.registered_count(), server.observation_count()),
        (0, 0)
    );
}

#[test]
fn aiocoap_cbor2_client_exchanges_senml_cbor() {
    let py_ok = Command::new("python3")
        .args(["-c", "import aiocoap, cbor2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !peer_available("python3 + aiocoap + cbor2", py_ok) {
        return;
    }
    let (udp, events) = open_server();
    let port = udp.local_addr().port().to_string();
    let handle = udp.handle();
    let mut peer = Peer::spawn(
        Command::new("python3")
            .arg(peers_dir().join("aiocoap_cbor_client.py"))
            .args(["127.0.0.1", &port, "py-cbor-1"]),
    );
    let device = DeviceId::new("py-cbor-1").unwrap();
    wait_for(&events, "registered", |e| {
        matches!(e, DeviceEvent::Registered { .. }).then_some(())
    });
    peer.expect("REGISTERED rd/");

    // A read: the hub asks for SenML CBOR (1.1 without ct) and decodes cbor2's bytes.
    let inst = Lwm2mPath::instance(3, 0);
    handle
        .submit(op(1, &device, DeviceRequest::Read { path: inst }))
        .unwrap();
    let Ok(DeviceReply::Content(c)) = response(&events, 1) else {
        panic!("read /3/0 failed")
    };
    assert_eq!(peer.expect("ACCEPT"), "ACCEPT 112");
    assert_eq!(c.values.len(), 7);
    assert_eq!(
        c.get(&Lwm2mPath::resource(3, 0, 0)),
        Some(&ResourceValue::String("Interop Inc".into()))
    );
    assert_eq!(
        c.get(&Lwm2mPath::resource_instance(3, 0, 7, 1)),
        Some(&ResourceValue::Integer(5000))
    );
    assert_eq!(
        c.get(&Lwm2mPath::resource(3, 0, 13)),
        Some(&ResourceValue::Time(1_367_491_215))
    );

    // A write of two values goes as SenML CBOR; cbor2 decodes what we encoded.
    let two = Content {
        values: vec![
            (
                Lwm2mPath::resource(3, 0, 13),
                ResourceValue::Time(1_700_000_000),
            ),
            (
                Lwm2mPath::resource(3, 0, 14),
                ResourceValue::String("+01:00".into()),
            ),
        ],
    };
    handle
        .submit(op(
            2,
            &device,
            DeviceRequest::Write {
                path: inst,
                mode: WriteMode::PartialUpdate,
                content: two,
            },
        ))
        .unwrap();
    assert_eq!(response(&events, 2), Ok(DeviceReply::Done));
    assert_eq!(
        peer.expect("WROTE"),
        "WROTE /3/0/13=1700000000;/3/0/14=+01:00"
    );

    // Observe the battery: the first answer and a notification, both cbor2's SenML CBOR.
    let bat = Lwm2mPath::resource(3, 0, 9);
    handle
        .submit(op(3, &device, DeviceRequest::Observe { path: bat }))
        .unwrap();
    assert_eq!(
        response(&events, 3),
        Ok(DeviceReply::Content(Content::single(
            bat,
            ResourceValue::Integer(88)
        )))
    );
    peer.expect("OBSERVED");
    peer.say("notify");
    peer.expect("NOTIFIED 87");
    let n = wait_for(&events, "notification", |e| match e {
        DeviceEvent::Notification { content, .. } => Some(content.clone()),
        _ => None,
    });
    assert_eq!(n, Content::single(bat, ResourceValue::Integer(87)));
    peer.say("exit");
    udp.stop();
}

#[test]
fn aiocoap_scripted_bootstrap_client_is_provisioned() {
    use twinhub::lwm2m::content::{self, ContentFormat};
    use twinhub::lwm2m::server::{BootstrapPlan, ServerAccount};
    use twinhub::transport::BootstrapOutcome;
    let py_ok = Command::new("python3")
        .args(["-c", "import aiocoap"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !peer_available("python3 + aiocoap", py_ok) {
        return;
    }
    let server = Lwm2mServer::new(ServerConfig::default()).with_bootstrap(Box::new(|r| {
        (r.endpoint == "py-bs-1").then(|| {
            BootstrapPlan::new(vec![
                ServerAccount::new(4, "coaps://192.0.2.7:5684").with_psk("py-bs-1-id", vec![9; 16]),
            ])
        })
    }));
    let (udp, events) = UdpServer::bind("127.0.0.1:0", server).unwrap();
    let port = udp.local_addr().port().to_string();
    let mut peer = Peer::spawn(
        Command::new("python3")
            .arg(peers_dir().join("aiocoap_bootstrap_client.py"))
            .args(["127.0.0.1", &port, "py-bs-1"]),
    );
    let outcome = wait_for(&events, "bootstrap", |e| match e {
        DeviceEvent::Bootstrap {
            endpoint, outcome, ..
        } => Some((endpoint.clone(), outcome.clone())),
        _ => None,
    });
    assert_eq!(outcome, ("py-bs-1".to_owned(), BootstrapOutcome::Finished));
    peer.expect("FINISHED");
    // What the client got, in order: Discover, Delete /, the two writes, Finish.
    let requests: Vec<Vec<String>> = peer
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix("REQUEST "))
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect();
    let shape: Vec<(&str, &str, &str)> = requests
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            ("GET", "/", "-"),
            ("DELETE", "/", "-"),
            ("PUT", "/0/1", "11542"),
            ("PUT", "/1/0", "11542"),
            ("POST", "/bs", "-"),
        ]
    );
    // The Security instance's TLV, as aiocoap received it.
    let bytes = hex_bytes(&requests[2][3]);
    let security = content::decode(
        ContentFormat::Tlv,
        &bytes,
        &Lwm2mPath::instance(0, 1),
        &content::standard_resource_type,
    )
    .unwrap();
    let r = |rid| Lwm2mPath::resource(0, 1, rid);
    assert_eq!(
        security.get(&r(0)),
        Some(&ResourceValue::String("coaps://192.0.2.7:5684".into()))
    );
    assert_eq!(security.get(&r(2)), Some(&ResourceValue::Integer(0)));
    assert_eq!(
        security.get(&r(3)),
        Some(&ResourceValue::Opaque(b"py-bs-1-id".to_vec()))
    );
    assert_eq!(
        security.get(&r(5)),
        Some(&ResourceValue::Opaque(vec![9; 16]))
    );
    assert_eq!(security.get(&r(10)), Some(&ResourceValue::Integer(4)));
    udp.stop();
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
