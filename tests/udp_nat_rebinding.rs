//! NAT rebinding over real UDP on loopback (plain CoAP): a device behind a NAT that
//! forgets its mapping. Its first message from the new port is a notification (no Update
//! before it): the hub takes it, the twin follows the value and the registration the new
//! port, and the observation keeps working. Before, the notification was answered RST,
//! the device dropped the observation, and the twin's sync stopped silently.

#![cfg(all(feature = "device", feature = "lwm2m"))]

mod e2e_support;

use e2e_support::{prop, start, wait_for};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::twin::{ConnectionState, Scalar, Twin};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue};

/// A NAT between a device and the hub: the device talks to `front`; the NAT forwards from
/// `back`, whose port [`Nat::rebind`] changes, as a NAT that forgot its mapping would.
struct Nat {
    front: SocketAddr,
    back: Arc<Mutex<UdpSocket>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn short_timeout(s: &UdpSocket) {
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
}

impl Nat {
    fn start(hub: SocketAddr) -> Nat {
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

    fn outside_port(&self) -> u16 {
        self.back.lock().unwrap().local_addr().unwrap().port()
    }

    fn rebind(&self) {
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

fn registered_port(hub: &Hub, id: &str) -> Option<u16> {
    let reg = hub.registry().read();
    let twin = reg.get(id)?;
    if twin.connection_state() != ConnectionState::Connected {
        return None;
    }
    twin.registration()?.address.map(|a| a.port())
}

#[test]
fn a_notification_from_a_new_nat_port_keeps_the_twin_in_step() {
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("nat-obs").unwrap()))
        .unwrap();
    let hub = Hub::bind_udp("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    let nat = Nat::start(hub.local_addr().unwrap());
    let mut devices = vec![start("nat-obs", nat.front, false)];
    wait_for(&mut devices, "the twin to fill", || {
        registered_port(&hub, "nat-obs") == Some(nat.outside_port())
            && prop(&hub, "nat-obs", "BatteryLevel") == Some(Scalar::from(80))
    });
    let battery = Lwm2mPath::resource(3, 0, 9);
    for (round, level) in [(1, 12), (2, 34)] {
        // The NAT forgets the mapping; the device's next message is a notification.
        let old = nat.outside_port();
        nat.rebind();
        assert_ne!(nat.outside_port(), old);
        devices[0]
            .thread
            .as_ref()
            .unwrap()
            .with(|c| c.set_value(&battery, ResourceValue::Integer(level)))
            .unwrap();
        wait_for(
            &mut devices,
            &format!("notification {round} from the new port"),
            || {
                prop(&hub, "nat-obs", "BatteryLevel") == Some(Scalar::from(level))
                    && registered_port(&hub, "nat-obs") == Some(nat.outside_port())
            },
        );
    }
    for d in devices.iter_mut() {
        drop(d.thread.take());
    }
    hub.stop();
}
