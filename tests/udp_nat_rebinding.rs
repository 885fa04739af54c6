//! NAT rebinding over real UDP on loopback (plain CoAP): a device behind a NAT that
//! forgets its mapping. Its first message from the new port is a notification (no Update
//! before it): the hub takes it, the twin follows the value and the registration the new
//! port, and the observation keeps working. Before, the notification was answered RST,
//! the device dropped the observation, and the twin's sync stopped silently.

#![cfg(all(feature = "device", feature = "lwm2m"))]

mod e2e_support;

use e2e_support::{Nat, prop, registered_port, start, wait_for};
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::twin::{Scalar, Twin};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue};

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
