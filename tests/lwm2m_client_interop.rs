//! Interop over loopback: our client (on a `DeviceThread`) against LWM2M servers nobody here
//! wrote: lwm2m-node-lib's server (npm) and an aiocoap-scripted server (PyPI).
//!
//! Each test skips with a loud message when its peer is missing, and fails instead when
//! `TWINHUB_REQUIRE_PEERS=1` (CI). Install the peers with `bash tests/peers/install.sh`.

#![cfg(feature = "device")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};
use twinhub::lwm2m::client::{
    ClientConfig, ClientEvent, DeviceThread, FirmwareUpdate, Lwm2mClient, ObjectTree, objects,
};
use twinhub::{Lwm2mPath, ResourceValue};

mod peers;
use peers::{peer_available, peers_dir};

/// A peer process whose stdout lines arrive on a channel; killed (by its pid) on drop.
struct Peer {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    fn spawn(mut cmd: Command) -> Peer {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("peer starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line starting with `prefix`; returns it.
    fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!("peer never printed {prefix:?}; it printed {:#?}", self.seen),
            }
        }
    }

    fn port(&mut self) -> u16 {
        let line = self.wait_for("PORT ", Duration::from_secs(30));
        line[5..].trim().parse().expect("port number")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn device_tree() -> ObjectTree {
    let mut tree = ObjectTree::new();
    tree.add(objects::security("coap://127.0.0.1", 1));
    tree.add(objects::server(1, 300, "U"));
    tree.add(
        objects::device("twinhub", "interop", "SN-1", "1.0.0").with_value(
            0,
            9,
            ResourceValue::Integer(100),
        ),
    );
    tree.set_firmware(FirmwareUpdate::new());
    tree.add(objects::config());
    tree
}

/// A device on a thread; `confirmable`: every notification CON (else NON).
fn start_device(port: u16, endpoint: &str, confirmable: bool) -> DeviceThread {
    let server = format!("127.0.0.1:{port}").parse().unwrap();
    let mut config = ClientConfig::new(endpoint, server);
    config.confirmable_notifications = confirmable;
    let client = Lwm2mClient::new(Instant::now(), config, device_tree());
    DeviceThread::spawn(client, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn result<'a>(peer: &'a Peer, name: &str) -> &'a str {
    let prefix = format!("RESULT {name} ");
    peer.seen
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no result {name} in {:#?}", peer.seen))
}

fn wait_event(device: &DeviceThread, want: impl Fn(&ClientEvent) -> bool) -> Vec<ClientEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(e) = device.events().recv_timeout(Duration::from_millis(100)) {
            let done = want(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
    panic!("event never came; saw {seen:?}");
}

#[test]
fn lwm2m_node_lib_server_drives_our_client() {
    let node_ok = Command::new("node").arg("--version").output().is_ok()
        && peers_dir().join("node_modules/lwm2m-node-lib").is_dir();
    if !peer_available("lwm2m-node-lib (node + tests/peers/node_modules)", node_ok) {
        return;
    }
    let mut cmd = Command::new("node");
    cmd.arg(peers_dir().join("lwm2m_node_server.js"));
    let mut peer = Peer::spawn(cmd);
    let port = peer.port();
    let device = start_device(port, "node-interop", false);
    let reg = peer.wait_for("REGISTERED ", Duration::from_secs(30));
    assert!(reg.starts_with("REGISTERED node-interop 300 "), "{reg}");
    assert!(reg.contains("</3/0>") && reg.contains("</5/0>") && !reg.contains("</0/"));

    // Its observe answers with the first notification, not the observe response: change
    // the value once the observation is in place, then once more for a notification.
    wait_event(&device, |e| matches!(e, ClientEvent::Observed { .. }));
    let battery = Lwm2mPath::resource(3, 0, 9);
    device
        .with(|c| c.set_value(&battery, ResourceValue::Integer(77)))
        .unwrap();
    peer.wait_for("RESULT observe_battery", Duration::from_secs(30));
    device
        .with(|c| c.set_value(&battery, ResourceValue::Integer(66)))
        .unwrap();
    let notify = peer.wait_for("NOTIFY ", Duration::from_secs(30));

    assert_eq!(result(&peer, "read_manufacturer"), r#"{"value":"twinhub"}"#);
    assert_eq!(result(&peer, "write_timezone"), r#"{"value":""}"#);
    assert_eq!(
        result(&peer, "read_timezone"),
        r#"{"value":"Europe/Paris"}"#
    );
    assert!(result(&peer, "write_readonly").contains("4.05"));
    assert_eq!(result(&peer, "execute_apply"), r#"{"value":""}"#);
    assert_eq!(result(&peer, "execute_reboot"), r#"{"value":""}"#);
    assert_eq!(result(&peer, "write_attributes"), r#"{"value":""}"#);
    assert_eq!(
        result(&peer, "discover"),
        r#"{"value":"</3/0/9>;pmin=0;pmax=30"}"#
    );
    assert!(result(&peer, "read_missing").contains("4.04"));
    assert_eq!(result(&peer, "observe_battery"), r#"{"value":"77"}"#);
    assert_eq!(notify, "NOTIFY 66");

    // The write landed in the object tree.
    device.with(|c| {
        let tz = c
            .objects_mut()
            .read(&Lwm2mPath::resource(3, 0, 15))
            .unwrap();
        assert_eq!(tz.values[0].1, ResourceValue::String("Europe/Paris".into()));
    });
    device.shutdown(Duration::from_secs(30)).unwrap();
    peer.wait_for("DEREGISTERED", Duration::from_secs(30));
}

#[test]
fn aiocoap_scripted_server_reads_writes_and_pushes_firmware() {
    let py_ok = Command::new("python3")
        .args(["-c", "import aiocoap"])
        .output()
        .is_ok_and(|o| o.status.success());
    let cbor_ok = Command::new("python3")
        .args(["-c", "import cbor2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !peer_available("aiocoap (python3 -m pip install aiocoap==0.4.17)", py_ok)
        || !peer_available("cbor2 (python3 -m pip install cbor2==6.3.0)", cbor_ok)
    {
        return;
    }
    let mut cmd = Command::new("python3");
    cmd.arg(peers_dir().join("aiocoap_lwm2m_server.py"));
    let mut peer = Peer::spawn(cmd);
    let port = peer.port();
    let device = start_device(port, "aiocoap-interop", true);
    let reg = peer.wait_for("REGISTERED ", Duration::from_secs(30));
    assert!(
        reg.starts_with("REGISTERED ep=aiocoap-interop&lt=300&lwm2m=1.1&b=U "),
        "{reg}"
    );
    peer.wait_for("OBSERVING", Duration::from_secs(30));
    device
        .with(|c| c.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(42)))
        .unwrap();
    let notified = peer.wait_for("RESULT notify_composite ", Duration::from_secs(30));
    assert_eq!(
        notified,
        r#"RESULT notify_composite 2.05 110 [{"n":"/3/0/9","v":42},{"n":"/3/0/15","vs":"Europe/Oslo"}]"#
    );
    // Sent CON (the device is configured so) and acknowledged by aiocoap's message layer.
    assert_eq!(
        peer.wait_for("MTYPE notify_composite ", Duration::from_secs(30)),
        "MTYPE notify_composite CON"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while device.with(|c| c.unacknowledged_notifications()) != 0 {
        assert!(
            Instant::now() < deadline,
            "aiocoap never acknowledged the notification"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    peer.wait_for("DONE", Duration::from_secs(30));

    let tlv = result(&peer, "read_tlv");
    assert!(tlv.starts_with("2.05 11542 c70074776"), "{tlv}");
    let senml = result(&peer, "read_senml");
    assert!(
        senml.starts_with(r#"2.05 110 [{"bn":"/3/0/","n":"0","vs":"twinhub"}"#),
        "{senml}"
    );
    assert!(senml.contains(r#"{"n":"9","v":100}"#));
    assert_eq!(result(&peer, "write_senml").trim_end(), "2.04 -");
    assert_eq!(result(&peer, "read_timezone"), "2.05 0 Asia/Tokyo");

    // LWM2M 1.1 composite operations, bodies made by json and cbor2.
    assert_eq!(
        result(&peer, "read_composite_json"),
        r#"2.05 110 [{"n":"/3/0/0","vs":"twinhub"},{"n":"/3/0/9","v":100}]"#
    );
    assert!(result(&peer, "read_composite_cbor").starts_with("2.05 112 "));
    let decoded = peer
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("DECODED read_composite_cbor "))
        .expect("cbor2 decoded the answer");
    assert_eq!(
        decoded,
        r#"[{"0": "/3/0/0", "3": "twinhub"}, {"0": "/3/0/15", "3": "Asia/Tokyo"}]"#
    );
    assert_eq!(result(&peer, "write_composite").trim_end(), "2.04 -");
    assert_eq!(
        result(&peer, "read_after_write_composite"),
        r#"2.05 110 [{"n":"/3/0/15","vs":"Europe/Oslo"},{"n":"/1/0/3","v":55}]"#
    );
    // A read-only resource in the body: 4.05, and nothing of the body is written.
    assert_eq!(
        result(&peer, "write_composite_read_only").trim_end(),
        "4.05 -"
    );
    assert_eq!(
        result(&peer, "timezone_after_refusal"),
        "2.05 0 Europe/Oslo"
    );
    assert_eq!(
        result(&peer, "observe_composite"),
        r#"2.05 110 [{"n":"/3/0/9","v":100},{"n":"/3/0/15","vs":"Europe/Oslo"}]"#
    );
    assert_eq!(result(&peer, "push_package").trim_end(), "2.04 -");
    assert_eq!(result(&peer, "state_after_push"), "2.05 0 2");
    assert_eq!(result(&peer, "execute_update").trim_end(), "2.04 -");
    assert_eq!(result(&peer, "state_after_update"), "2.05 0 3");
    let seen = wait_event(
        &device,
        |e| matches!(e, ClientEvent::Executed { path, .. } if *path == Lwm2mPath::resource(5, 0, 2)),
    );
    assert!(seen.contains(&ClientEvent::Written {
        path: Lwm2mPath::resource(5, 0, 0)
    }));
    device.with(|c| c.firmware_update_finished(Ok(())));
    device.shutdown(Duration::from_secs(30)).unwrap();
}
