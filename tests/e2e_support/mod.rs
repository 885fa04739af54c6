//! Helpers shared by the end-to-end tests over real UDP (plain: `e2e_udp.rs`, DTLS:
//! `dtls_e2e.rs`, and the LWM2M 1.1 and bootstrap tests): devices built with the crate's device library, the application's side
//! of them, and waiting for jobs.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twinhub::dtls::PskCredentials;
use twinhub::hub::Hub;
use twinhub::job::{JobSpec, JobStatus};
use twinhub::lwm2m::client::{
    ClientConfig, ClientEvent, DeviceThread, FirmwareUpdate, Lwm2mClient, ObjectTree, UpdateResult,
    objects,
};
use twinhub::twin::{ConnectionState, Scalar};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue};

pub struct Device {
    pub id: DeviceId,
    pub thread: Option<DeviceThread>,
    pub update_requested: Arc<AtomicBool>,
    pub reboots: usize,
    /// The last firmware package the device took (pushed or pulled).
    pub package: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

/// A plain-CoAP device.
pub fn start(id: &str, server: std::net::SocketAddr, rejects_firmware: bool) -> Device {
    start_with(id, server, rejects_firmware, None)
}

/// A device, over DTLS when `psk` is given.
pub fn start_with(
    id: &str,
    server: std::net::SocketAddr,
    rejects_firmware: bool,
    psk: Option<PskCredentials>,
) -> Device {
    start_configured(id, server, rejects_firmware, psk, |_| {})
}

/// A device whose client settings `tune` adjusts.
pub fn start_configured(
    id: &str,
    server: std::net::SocketAddr,
    rejects_firmware: bool,
    psk: Option<PskCredentials>,
    tune: impl FnOnce(&mut ClientConfig),
) -> Device {
    let scheme = if psk.is_some() { "coaps" } else { "coap" };
    let mut tree = ObjectTree::new();
    tree.add(objects::security(&format!("{scheme}://{server}"), 1));
    tree.add(objects::server(1, 300, "U"));
    tree.add(objects::device("twinhub", "e2e", id, "1.0").with_value(
        0,
        9,
        ResourceValue::Integer(80),
    ));
    let update_requested = Arc::new(AtomicBool::new(false));
    let flag = update_requested.clone();
    let mut firmware = FirmwareUpdate::new().on_update(move || {
        flag.store(true, Ordering::Release);
        Ok(())
    });
    let package: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
    let taken = package.clone();
    firmware = if rejects_firmware {
        firmware.on_package(|_| Err(UpdateResult::UnsupportedPackage))
    } else {
        firmware.on_package(move |body| {
            *taken.lock().unwrap() = Some(body.to_vec());
            Ok(())
        })
    };
    tree.set_firmware(firmware);
    tree.add(objects::config());
    let mut config = ClientConfig::new(id, server);
    if let Some(psk) = psk {
        config = config.with_psk(psk);
    }
    tune(&mut config);
    let client = Lwm2mClient::new(Instant::now(), config, tree);
    let thread = DeviceThread::spawn(client, "127.0.0.1:0".parse().unwrap()).unwrap();
    Device {
        id: DeviceId::new(id).unwrap(),
        thread: Some(thread),
        update_requested,
        reboots: 0,
        package,
    }
}

/// The application's side of each device: boot into a new image when Update is
/// executed, count reboots.
pub fn serve(devices: &mut [Device]) {
    for d in devices.iter_mut() {
        let Some(thread) = &d.thread else { continue };
        while let Ok(event) = thread.events().try_recv() {
            if matches!(event, ClientEvent::Reboot) {
                d.reboots += 1;
            }
        }
        if d.update_requested.swap(false, Ordering::AcqRel) {
            thread.with(|c| {
                c.set_value(
                    &Lwm2mPath::resource(3, 0, 3),
                    ResourceValue::String("2.0".into()),
                )
                .unwrap();
                c.firmware_update_finished(Ok(()));
            });
        }
    }
}

pub fn wait_for(devices: &mut [Device], what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        serve(devices);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (at most `wait`) for `done`, with devices that run on their own threads.
pub fn until(what: &str, wait: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + wait;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn run_job(hub: &Hub, devices: &mut [Device], spec: JobSpec) -> JobStatus {
    let id = spec.id.clone();
    hub.create_job(spec).unwrap();
    let mut status = JobStatus::Enqueued;
    wait_for(devices, &format!("job {id}"), || {
        status = hub.job(&id).unwrap().status;
        status.is_terminal()
    });
    let stats = hub.job_statistics(&id).unwrap();
    assert_eq!(
        stats.finished(),
        stats.device_count,
        "every child of {id} ended"
    );
    status
}

pub fn prop(hub: &Hub, id: &str, name: &str) -> Option<Scalar> {
    hub.registry()
        .read()
        .get(id)?
        .device_property(name)
        .map(|(v, _)| v.clone())
}

pub fn device_value(d: &Device, path: Lwm2mPath) -> Option<ResourceValue> {
    d.thread
        .as_ref()?
        .with(|c| c.objects_mut().read(&path).ok()?.get(&path).cloned())
}

/// A NAT between a device and the hub: the device talks to `front`; the NAT forwards from
/// `back`, whose port [`Nat::rebind`] changes, as a NAT that forgot its mapping would.
pub struct Nat {
    pub front: SocketAddr,
    back: Arc<Mutex<UdpSocket>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn short_timeout(s: &UdpSocket) {
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
}

impl Nat {
    pub fn start(hub: SocketAddr) -> Nat {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        short_timeout(&front);
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        short_timeout(&back);
        let back = Arc::new(Mutex::new(back));
        let stop = Arc::new(AtomicBool::new(false));
        let front_addr = front.local_addr().unwrap();
        let (b, s) = (back.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut device: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65_536];
            while !s.load(Ordering::SeqCst) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    device = Some(from);
                    let _ = b.lock().unwrap().send_to(&buf[..n], hub);
                }
                let got = b.lock().unwrap().recv_from(&mut buf);
                if let (Ok((n, _)), Some(d)) = (got, device) {
                    let _ = front.send_to(&buf[..n], d);
                }
            }
        });
        Nat {
            front: front_addr,
            back,
            stop,
            thread: Some(thread),
        }
    }

    pub fn outside_port(&self) -> u16 {
        self.back.lock().unwrap().local_addr().unwrap().port()
    }

    pub fn rebind(&self) {
        let fresh = UdpSocket::bind("127.0.0.1:0").unwrap();
        short_timeout(&fresh);
        *self.back.lock().unwrap() = fresh;
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The port of `id`'s registration while its twin is Connected.
pub fn registered_port(hub: &Hub, id: &str) -> Option<u16> {
    let reg = hub.registry().read();
    let twin = reg.get(id)?;
    if twin.connection_state() != ConnectionState::Connected {
        return None;
    }
    twin.registration()?.address.map(|a| a.port())
}
