//! Issue #20: LWM2M 1.1 Send over UDP. A device built with the library pushes values of
//! a path nobody observes (`POST /dp`, SenML JSON); the hub applies them to the twin as it
//! applies notifications and its subscribers see the change. The service mutes Send per
//! device (Mute Send `/1/0/23`), the device then refuses to Send, and unmutes it again.

#![cfg(all(feature = "device", feature = "lwm2m"))]

mod e2e_support;

use e2e_support::{prop, start, wait_for};
use std::time::{Duration, Instant};
use twinhub::hub::{Hub, HubConfig, HubEvent, SubscribeOptions};
use twinhub::lwm2m::client::{ClientEvent, SendError};
use twinhub::registry::{ChangeKind, Registry};
use twinhub::twin::{Scalar, Twin};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue};

#[test]
fn a_device_sends_values_the_twin_takes_them_and_the_service_can_mute_it() {
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("sender").unwrap()))
        .unwrap();
    let hub = Hub::bind_udp("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    let mut devices = vec![start("sender", hub.local_addr().unwrap(), false)];
    wait_for(&mut devices, "the twin to fill", || {
        prop(&hub, "sender", "BatteryLevel").is_some()
    });
    let events = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    // /10241/0/1 (ConfigName in the twin) is not synced: only a Send brings it there.
    let name = Lwm2mPath::resource(10241, 0, 1);
    let device = devices[0].thread.as_ref().unwrap();
    device
        .with(|c| c.set_value(&name, ResourceValue::String("night-mode".into())))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(prop(&hub, "sender", "/10241/0/1"), None, "not observed");
    device.with(|c| c.send(Instant::now(), &[name])).unwrap();
    wait_for(&mut devices, "the sent value in the twin", || {
        prop(&hub, "sender", "/10241/0/1") == Some(Scalar::from("night-mode"))
    });
    let change = events.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        matches!(&change, HubEvent::Twin(c) if matches!(&c.kind,
            ChangeKind::DeviceProperty { name, value, previous: None }
                if &**name == "ConfigName" && *value == Scalar::from("night-mode"))),
        "{change:?}"
    );

    // The service mutes Send: the device refuses to Send until it is unmuted.
    let id = DeviceId::new("sender").unwrap();
    hub.mute_send(&id, true)
        .wait(Duration::from_secs(30))
        .expect("the device took Mute Send");
    let device = devices[0].thread.as_ref().unwrap();
    assert_eq!(
        device.with(|c| c.send(Instant::now(), &[name])),
        Err(SendError::Muted)
    );
    hub.mute_send(&id, false)
        .wait(Duration::from_secs(30))
        .unwrap();
    device
        .with(|c| c.set_value(&name, ResourceValue::String("day-mode".into())))
        .unwrap();
    device.with(|c| c.send(Instant::now(), &[name])).unwrap();
    let mut acknowledged = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !acknowledged {
        assert!(Instant::now() < deadline, "the Send was never acknowledged");
        match devices[0]
            .thread
            .as_ref()
            .unwrap()
            .events()
            .recv_timeout(Duration::from_millis(50))
        {
            Ok(ClientEvent::Sent) => acknowledged = true,
            Ok(ClientEvent::SendFailed { code }) => panic!("Send refused: {code:?}"),
            _ => {}
        }
    }
    // Acknowledged by the server; the hub thread applies it right after.
    wait_for(&mut devices, "the second sent value", || {
        prop(&hub, "sender", "/10241/0/1") == Some(Scalar::from("day-mode"))
    });
    assert_eq!(
        devices[0]
            .thread
            .as_ref()
            .unwrap()
            .with(|c| c.send(Instant::now(), &[Lwm2mPath::resource(10241, 0, 99)])),
        Err(SendError::Nothing(Lwm2mPath::resource(10241, 0, 99)))
    );
}
