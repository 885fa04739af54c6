//! Issue #16 findings 7, 8 and 9 over real UDP on loopback:
//!
//! - a device built with the device library restarts in the middle of its firmware
//!   download (the package server is unreachable until then); it registers again and the
//!   job writes the package URI again, so the job completes long before its device
//!   timeout;
//! - a scripted device that keeps one observation per path (a second Observe of a path
//!   replaces the first token, as common C implementations do) runs a firmware job: the
//!   job never observes `/5/0` itself, so the hub's sync observation survives the job and
//!   the twin's `/5` properties keep updating afterwards;
//! - a configuration job to that device, which never announced `/10241`, fails at once
//!   with `objectNotAnnounced:10241` and sends it nothing.

#![cfg(all(feature = "device", feature = "lwm2m"))]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, ContentFormat, Message, MessageType};
use twinhub::hub::{Hub, HubConfig, PackageServer};
use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
use twinhub::lwm2m::client::{
    ClientConfig, DeviceThread, DriverOptions, FirmwareUpdate, Lwm2mClient, ObjectTree, objects,
};
use twinhub::lwm2m::content;
use twinhub::registry::Registry;
use twinhub::twin::{Scalar, Twin};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn prop(hub: &Hub, id: &str, name: &str) -> Option<Scalar> {
    hub.registry()
        .read()
        .get(id)?
        .device_property(name)
        .map(|(v, _)| v.clone())
}

// ---- a gate in front of the package server ----

/// Forwards datagrams between one client and `upstream`, dropping everything while
/// closed.
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Gate {
    fn start(upstream: SocketAddr) -> Gate {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        back.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let addr = front.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, s) = (open.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut client = None;
            while !s.load(Ordering::Acquire) {
                if let Ok((n, from)) = front.recv_from(&mut buf)
                    && o.load(Ordering::Acquire)
                {
                    client = Some(from);
                    let _ = back.send_to(&buf[..n], upstream);
                }
                if let Ok((n, _)) = back.recv_from(&mut buf)
                    && let Some(c) = client
                {
                    let _ = front.send_to(&buf[..n], c);
                }
            }
        });
        Gate {
            addr,
            open,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn library_device(
    id: &str,
    server: SocketAddr,
    socket: UdpSocket,
) -> (DeviceThread, Arc<AtomicBool>) {
    let mut tree = ObjectTree::new();
    tree.add(objects::security(&format!("coap://{server}"), 1));
    tree.add(objects::server(1, 300, "U"));
    tree.add(objects::device("twinhub", "restart", id, "1.0"));
    let update_requested = Arc::new(AtomicBool::new(false));
    let flag = update_requested.clone();
    tree.set_firmware(FirmwareUpdate::new().on_update(move || {
        flag.store(true, Ordering::Release);
        Ok(())
    }));
    let client = Lwm2mClient::new(Instant::now(), ClientConfig::new(id, server), tree);
    let thread = DeviceThread::spawn_on(client, socket, DriverOptions::default()).unwrap();
    (thread, update_requested)
}

fn firmware_state(d: &DeviceThread) -> Option<ResourceValue> {
    let path = Lwm2mPath::resource(5, 0, 3);
    d.with(|c| c.objects_mut().read(&path).ok()?.get(&path).cloned())
}

#[test]
fn a_device_restarted_mid_download_gets_the_package_uri_again_over_udp() {
    let id = "restart-1";
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new(id).unwrap()))
        .unwrap();
    let hub = Hub::bind_udp("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    let server = hub.local_addr().unwrap();
    let packages = PackageServer::bind("127.0.0.1:0").unwrap();
    packages.publish("fw/2.0.bin", vec![7u8; 8 * 1024]).unwrap();
    let gate = Gate::start(packages.local_addr());
    let uri = format!("coap://{}/fw/2.0.bin", gate.addr);

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    let (device, _) = library_device(id, server, socket);
    wait_until("the twin's firmware state", Duration::from_secs(30), || {
        prop(&hub, id, "/5/0/3").is_some()
    });

    let job = JobId::new("fw-restart").unwrap();
    // A device timeout far beyond the test's wait: only a rewritten URI finishes in time.
    let spec = JobSpec::new(
        job.clone(),
        JobType::FirmwareUpdate {
            package_uri: uri,
            expected_version: Some("2.0".into()),
        },
        vec![DeviceId::new(id).unwrap()],
    )
    .device_timeout(Duration::from_secs(600));
    hub.create_job(spec).unwrap();
    wait_until("the download to start", Duration::from_secs(30), || {
        firmware_state(&device) == Some(ResourceValue::Integer(1))
    });

    // The device crashes mid-download (no de-registration) and boots again on the same
    // address with an empty Firmware Update object; the package server is reachable now.
    drop(device);
    gate.open.store(true, Ordering::Release);
    let socket = (0..100)
        .find_map(|_| {
            UdpSocket::bind(local).ok().or_else(|| {
                std::thread::sleep(Duration::from_millis(10));
                None
            })
        })
        .expect("the device's address again");
    let (device, update_requested) = library_device(id, server, socket);
    let mut status = JobStatus::Running;
    wait_until("the job to end", Duration::from_secs(30), || {
        if update_requested.swap(false, Ordering::AcqRel) {
            device.with(|c| {
                c.set_value(
                    &Lwm2mPath::resource(3, 0, 3),
                    ResourceValue::String("2.0".into()),
                )
                .unwrap();
                c.firmware_update_finished(Ok(()));
            });
        }
        status = hub.job(&job).unwrap().status;
        status.is_terminal()
    });
    assert_eq!(status, JobStatus::Completed, "{:?}", hub.job_children(&job));
    assert!(packages.downloads() >= 1, "the package was pulled again");
    drop(device);
    drop(gate);
    hub.stop();
    packages.stop();
}

// ---- a scripted device with one observation per path ----

/// What the scripted device saw and holds.
#[derive(Default)]
struct Script {
    /// Observe registrations per path (Observe=0).
    observes: HashMap<String, u32>,
    /// Every request path, in order.
    requests: Vec<String>,
    /// The one observation token per path.
    tokens: HashMap<String, Vec<u8>>,
    values: HashMap<Lwm2mPath, ResourceValue>,
}

struct ScriptedDevice {
    script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
    /// Set to ask the device thread to notify `/5/0` with its current values.
    notify: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn instance_content(values: &HashMap<Lwm2mPath, ResourceValue>, base: &Lwm2mPath) -> Content {
    let mut v: Vec<(Lwm2mPath, ResourceValue)> = values
        .iter()
        .filter(|(p, _)| base.contains(p))
        .map(|(p, v)| (*p, v.clone()))
        .collect();
    v.sort_by_key(|(p, _)| *p);
    Content { values: v }
}

impl ScriptedDevice {
    fn start(id: &str, hub: SocketAddr) -> ScriptedDevice {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut script = Script::default();
        let s = |v: &str| ResourceValue::String(v.into());
        for (p, v) in [
            (Lwm2mPath::resource(3, 0, 0), s("twinhub")),
            (Lwm2mPath::resource(3, 0, 3), s("1.0")),
            (Lwm2mPath::resource(5, 0, 1), s("")),
            (Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(0)),
            (Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(0)),
            (Lwm2mPath::resource(5, 0, 7), s("1.0")),
        ] {
            script.values.insert(p, v);
        }
        let script = Arc::new(Mutex::new(script));
        let stop = Arc::new(AtomicBool::new(false));
        let notify = Arc::new(AtomicBool::new(false));
        let (sc, st, nt) = (script.clone(), stop.clone(), notify.clone());
        let id = id.to_owned();
        let thread = std::thread::spawn(move || run_script(&id, &sock, hub, &sc, &st, &nt));
        ScriptedDevice {
            script,
            stop,
            notify,
            thread: Some(thread),
        }
    }
}

impl Drop for ScriptedDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_script(
    id: &str,
    sock: &UdpSocket,
    hub: SocketAddr,
    script: &Mutex<Script>,
    stop: &AtomicBool,
    notify: &AtomicBool,
) {
    static MID: AtomicU32 = AtomicU32::new(1);
    let mid = || MID.fetch_add(1, Ordering::Relaxed) as u16;
    let mut seq = 2u32;
    let fw = Lwm2mPath::instance(5, 0);
    let send_notification = |s: &Script, seq: &mut u32| {
        let Some(token) = s.tokens.get("5/0") else {
            return;
        };
        let mut n = Message::new(MessageType::NonConfirmable, Code::CONTENT, mid());
        n.set_token(token).unwrap();
        n.set_observe(*seq);
        *seq += 1;
        n.set_content_format(ContentFormat::SENML_JSON);
        n.payload = content::encode(
            content::ContentFormat::SenmlJson,
            &fw,
            &instance_content(&s.values, &fw),
        )
        .unwrap();
        sock.send_to(&n.to_bytes().unwrap(), hub).unwrap();
    };
    let mut reg = Message::new(MessageType::Confirmable, Code::POST, mid());
    reg.set_token(&[0xaa]).unwrap();
    reg.set_uri_path("/rd");
    reg.add_uri_query(&format!("ep={id}"));
    reg.add_uri_query("lt=300");
    reg.add_uri_query("lwm2m=1.1");
    reg.add_uri_query("b=U");
    reg.payload = b"</3/0>,</5/0>".to_vec();
    let reg = reg.to_bytes().unwrap();
    let mut registered = false;
    let mut last_try = Instant::now() - Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Acquire) {
        if !registered && last_try.elapsed() > Duration::from_secs(1) {
            sock.send_to(&reg, hub).unwrap();
            last_try = Instant::now();
        }
        if notify.swap(false, Ordering::AcqRel) {
            send_notification(&script.lock().unwrap(), &mut seq);
        }
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(req) = Message::decode(&buf[..n]) else {
            continue;
        };
        if req.mtype == MessageType::Acknowledgement {
            registered |= req.code == Code::CREATED;
            continue;
        }
        if !req.code.is_request() {
            continue;
        }
        let path_text = req.uri_path_string().trim_matches('/').to_owned();
        let path: Option<Lwm2mPath> = format!("/{path_text}").parse().ok();
        let mut s = script.lock().unwrap();
        s.requests.push(path_text.clone());
        let mut resp = Message::new(
            if req.mtype == MessageType::Confirmable {
                MessageType::Acknowledgement
            } else {
                MessageType::NonConfirmable
            },
            Code::NOT_FOUND,
            req.message_id,
        );
        resp.with_token(req.token());
        let mut changed = false;
        match (req.code, path) {
            (Code::GET, Some(p)) if p.object_id() == Some(3) || p.object_id() == Some(5) => {
                match req.observe() {
                    Some(0) => {
                        *s.observes.entry(path_text.clone()).or_default() += 1;
                        // One observation per path: a second Observe replaces the token.
                        s.tokens
                            .insert(path_text.clone(), req.token().as_bytes().to_vec());
                        resp.set_observe(1);
                    }
                    Some(1)
                        if s.tokens.get(&path_text).map(Vec::as_slice)
                            == Some(req.token().as_bytes()) =>
                    {
                        s.tokens.remove(&path_text);
                    }
                    _ => {}
                }
                resp.code = Code::CONTENT;
                resp.set_content_format(ContentFormat::SENML_JSON);
                resp.payload = content::encode(
                    content::ContentFormat::SenmlJson,
                    &p,
                    &instance_content(&s.values, &p),
                )
                .unwrap();
            }
            (Code::PUT, Some(p)) if req.uri_query().next().is_some() => {
                // Write-Attributes.
                let _ = p;
                resp.code = Code::CHANGED;
            }
            (Code::PUT, Some(p)) if p == Lwm2mPath::resource(5, 0, 1) => {
                // The package "downloads" at once.
                s.values.insert(p, ResourceValue::String("uri".into()));
                s.values
                    .insert(Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(2));
                resp.code = Code::CHANGED;
                changed = true;
            }
            (Code::POST, Some(p)) if p == Lwm2mPath::resource(5, 0, 2) => {
                s.values
                    .insert(Lwm2mPath::resource(5, 0, 3), ResourceValue::Integer(0));
                s.values
                    .insert(Lwm2mPath::resource(5, 0, 5), ResourceValue::Integer(1));
                s.values.insert(
                    Lwm2mPath::resource(3, 0, 3),
                    ResourceValue::String("2.0".into()),
                );
                s.values.insert(
                    Lwm2mPath::resource(5, 0, 7),
                    ResourceValue::String("2.0".into()),
                );
                resp.code = Code::CHANGED;
                changed = true;
            }
            _ => {}
        }
        let _ = sock.send_to(&resp.to_bytes().unwrap(), hub);
        if changed {
            send_notification(&s, &mut seq);
        }
    }
}

#[test]
fn a_firmware_job_keeps_the_hubs_observation_on_a_one_observation_per_path_device() {
    let id = "one-obs";
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new(id).unwrap()))
        .unwrap();
    let hub = Hub::bind_udp("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    let device = ScriptedDevice::start(id, hub.local_addr().unwrap());
    wait_until("the twin's /5 properties", Duration::from_secs(30), || {
        prop(&hub, id, "/5/0/7") == Some(Scalar::from("1.0"))
    });

    let job = JobId::new("fw-one-obs").unwrap();
    let spec = JobSpec::new(
        job.clone(),
        JobType::FirmwareUpdate {
            package_uri: "coap://127.0.0.1:9/fw.bin".into(),
            expected_version: Some("2.0".into()),
        },
        vec![DeviceId::new(id).unwrap()],
    )
    .device_timeout(Duration::from_secs(600));
    hub.create_job(spec).unwrap();
    wait_until("the firmware job", Duration::from_secs(30), || {
        hub.job(&job).unwrap().status.is_terminal()
    });
    assert_eq!(hub.job(&job).unwrap().status, JobStatus::Completed);
    // Give a late cancel (old behaviour) time to arrive before looking.
    std::thread::sleep(Duration::from_millis(300));
    {
        let s = device.script.lock().unwrap();
        assert_eq!(
            s.observes.get("5/0"),
            Some(&1),
            "only the hub's sync observes /5/0"
        );
        assert!(s.tokens.contains_key("5/0"), "the hub's observation lives");
    }

    // After the job the device's /5 changes; the twin follows through the hub's token.
    {
        let mut s = device.script.lock().unwrap();
        s.values.insert(
            Lwm2mPath::resource(5, 0, 7),
            ResourceValue::String("after-job".into()),
        );
    }
    device.notify.store(true, Ordering::Release);
    wait_until(
        "the twin to follow /5/0 after the job",
        Duration::from_secs(30),
        || prop(&hub, id, "/5/0/7") == Some(Scalar::from("after-job")),
    );

    // Finding 9: a configuration job for /10241, which the device never announced,
    // fails at once with the reason, and nothing is sent to the device.
    let cfg = JobId::new("cfg-none").unwrap();
    hub.create_job(JobSpec::new(
        cfg.clone(),
        JobType::ConfigurationUpdate {
            name: "n".into(),
            value: "v".into(),
        },
        vec![DeviceId::new(id).unwrap()],
    ))
    .unwrap();
    assert_eq!(hub.job(&cfg).unwrap().status, JobStatus::Failed);
    let child = hub.job_children(&cfg).pop().unwrap();
    assert_eq!(
        child.failure_reason.as_deref(),
        Some("objectNotAnnounced:10241")
    );
    assert!(child.status_message.contains("not announced"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !device
            .script
            .lock()
            .unwrap()
            .requests
            .iter()
            .any(|p| p.starts_with("10241")),
        "nothing was sent for /10241"
    );
    drop(device);
    hub.stop();
}
