//! LWM2M 1.1 composite operations end to end over UDP on loopback, between the hub's
//! bundled server and the crate's device library: the hub keeps an LWM2M 1.1 device in
//! sync with one Observe-Composite (one observation on the device; its notifications
//! fill the twin), a service reads and writes several paths in one request, a refused
//! Write-Composite changes nothing, and with `PropertySync::composite` off the device is
//! observed path by path. (An independent CoAP stack drives the device library's
//! composite operations in `lwm2m_client_interop.rs`; the server's wire format is
//! checked byte by byte in its unit tests.)

#![cfg(all(feature = "device", feature = "lwm2m", feature = "dtls"))]

mod e2e_support;

use e2e_support::{Device, device_value, prop, start, until, wait_for};
use std::time::Duration;
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::transport::{DeviceError, DeviceReply, DeviceRequest};
use twinhub::twin::{Scalar, Twin};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

const WAIT: Duration = Duration::from_secs(10);

fn hub(id: &str, composite: bool) -> Hub {
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new(id).unwrap()))
        .unwrap();
    let mut config = HubConfig::default();
    config.sync.as_mut().unwrap().composite = composite;
    Hub::bind_udp("127.0.0.1:0", registry, config).unwrap()
}

fn observed(device: &Device) -> Vec<Lwm2mPath> {
    let mut paths = device.thread.as_ref().unwrap().with(|c| c.observed_paths());
    paths.sort();
    paths
}

/// Waits (bounded) until `done`.

#[test]
fn a_1_1_device_is_synced_by_one_observe_composite_and_answers_composite_requests() {
    let hub = hub("comp-1", true);
    let id = DeviceId::new("comp-1").unwrap();
    let mut devices = vec![start("comp-1", hub.local_addr().unwrap(), false)];
    wait_for(&mut devices, "the twin to fill", || {
        prop(&hub, "comp-1", "BatteryLevel").is_some()
            && prop(&hub, "comp-1", "FirmwareUpdateState").is_some()
    });
    // One observation on the device, at the root: the composite of /3/0, /1/0 and /5/0.
    until("one composite observation", WAIT, || {
        observed(&devices[0]) == [Lwm2mPath::ROOT]
    });
    // A change on the device reaches the twin through the composite's notification.
    devices[0]
        .thread
        .as_ref()
        .unwrap()
        .with(|c| c.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(42)))
        .unwrap();
    wait_for(&mut devices, "the notified battery level", || {
        prop(&hub, "comp-1", "BatteryLevel") == Some(Scalar::from(42))
    });

    // Read-Composite: three paths of two objects in one exchange, in the order asked.
    let paths = vec![
        Lwm2mPath::resource(3, 0, 9),
        Lwm2mPath::resource(3, 0, 0),
        Lwm2mPath::resource(1, 0, 1),
    ];
    let reply = hub
        .request(&id, DeviceRequest::ReadComposite { paths })
        .wait(WAIT)
        .unwrap();
    assert_eq!(
        reply,
        DeviceReply::Content(Content {
            values: vec![
                (Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(42)),
                (
                    Lwm2mPath::resource(3, 0, 0),
                    ResourceValue::String("twinhub".into())
                ),
                (Lwm2mPath::resource(1, 0, 1), ResourceValue::Integer(300)),
            ]
        })
    );

    // Write-Composite: values in two objects at once.
    let timezone = Lwm2mPath::resource(3, 0, 15);
    let pmax = Lwm2mPath::resource(1, 0, 3);
    let write = Content {
        values: vec![
            (timezone, ResourceValue::String("Europe/Oslo".into())),
            (pmax, ResourceValue::Integer(55)),
        ],
    };
    let reply = hub
        .request(&id, DeviceRequest::WriteComposite { content: write })
        .wait(WAIT)
        .unwrap();
    assert_eq!(reply, DeviceReply::Done);
    assert_eq!(
        device_value(&devices[0], timezone),
        Some(ResourceValue::String("Europe/Oslo".into()))
    );
    assert_eq!(
        device_value(&devices[0], pmax),
        Some(ResourceValue::Integer(55))
    );
    // One read-only resource in the body: refused, and nothing of it written.
    let refused = Content {
        values: vec![
            (timezone, ResourceValue::String("UTC".into())),
            (
                Lwm2mPath::resource(3, 0, 0),
                ResourceValue::String("x".into()),
            ),
        ],
    };
    let error = hub
        .request(&id, DeviceRequest::WriteComposite { content: refused })
        .wait(WAIT)
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&DeviceError::MethodNotAllowed.to_string()),
        "{error}"
    );
    assert_eq!(
        device_value(&devices[0], timezone),
        Some(ResourceValue::String("Europe/Oslo".into()))
    );

    // The composite's cancel (paths in another order) ends the device's observation.
    let sync_paths = vec![
        Lwm2mPath::instance(5, 0),
        Lwm2mPath::instance(3, 0),
        Lwm2mPath::instance(1, 0),
    ];
    let reply = hub
        .request(
            &id,
            DeviceRequest::CancelObserveComposite { paths: sync_paths },
        )
        .wait(WAIT)
        .unwrap();
    assert_eq!(reply, DeviceReply::Done);
    until("no observation left", WAIT, || {
        observed(&devices[0]).is_empty()
    });
    hub.stop();
}

#[test]
fn with_composite_sync_off_each_synced_instance_is_observed_alone() {
    let hub = hub("comp-2", false);
    let mut devices = vec![start("comp-2", hub.local_addr().unwrap(), false)];
    let want = [
        Lwm2mPath::instance(1, 0),
        Lwm2mPath::instance(3, 0),
        Lwm2mPath::instance(5, 0),
    ];
    wait_for(&mut devices, "the twin to fill", || {
        prop(&hub, "comp-2", "BatteryLevel").is_some()
    });
    until("three observations", WAIT, || observed(&devices[0]) == want);
    hub.stop();
}
