//! Hostile review of session 55's changes: each test failed before its fix.
#![cfg(feature = "device")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use twinhub::hub::{Hub, HubConfig, HubEvent, LifecycleKind, RequestError, SubscribeOptions};
use twinhub::lwm2m::client::{ClientConfig, DeviceThread, Lwm2mClient, ObjectTree, objects};
use twinhub::registry::Registry;
use twinhub::transport::{DeviceError, DeviceRequest, WriteMode};
use twinhub::twin::Twin;
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

const WAIT: Duration = Duration::from_secs(30);

/// A hub on loopback and one registered device whose Reboot (/3/0/4) counts its runs.
fn hub_and_device(reboots: Arc<AtomicUsize>) -> (Hub, DeviceThread) {
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("d").unwrap()))
        .unwrap();
    let hub = Hub::bind_udp("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    let events = hub
        .subscribe(SubscribeOptions {
            twins: false,
            jobs: false,
            ..SubscribeOptions::default()
        })
        .unwrap();
    let mut tree = ObjectTree::new();
    tree.add(objects::server(1, 300, "U"));
    tree.add(
        objects::device("C", "M", "S", "1.0").on_execute(4, move |_, _| {
            reboots.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }),
    );
    let config = ClientConfig::new("d", hub.local_addr().unwrap());
    let device = DeviceThread::spawn(
        Lwm2mClient::new(Instant::now(), config, tree),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(HubEvent::Lifecycle(e)) if e.event == LifecycleKind::Registered => break,
            Ok(_) => {}
            Err(e) => panic!("the device did not register: {e:?}"),
        }
    }
    (hub, device)
}

/// A partial-update Write to a resource went as a POST to the resource path, which is an
/// Execute: `Write { /3/0/4, PartialUpdate, <no value> }` rebooted the device and came
/// back `Done` (a value the server's model does not refuse for the resource would have
/// gone as the Execute's arguments). Only a multiple-instance resource's instances take
/// a partial update there; anything else is refused with nothing sent, as 91da880 does
/// for an object.
#[test]
fn a_partial_write_of_a_resource_never_becomes_an_execute() {
    let reboots = Arc::new(AtomicUsize::new(0));
    let (hub, device) = hub_and_device(reboots.clone());
    let d = DeviceId::new("d").unwrap();
    let reboot = Lwm2mPath::resource(3, 0, 4);
    let bad = Err(RequestError::Device(DeviceError::BadRequest));
    for content in [
        Content { values: Vec::new() },
        Content::single(reboot, ResourceValue::String("now".into())),
    ] {
        let r = hub
            .request(
                &d,
                DeviceRequest::Write {
                    path: reboot,
                    mode: WriteMode::PartialUpdate,
                    content,
                },
            )
            .wait(WAIT);
        assert_eq!(r, bad, "partial Write of {reboot}");
        assert_eq!(reboots.load(Ordering::SeqCst), 0, "a Write rebooted");
    }
    // A resource instance is no target of a POST either.
    let r = hub
        .request(
            &d,
            DeviceRequest::Write {
                path: Lwm2mPath::resource_instance(3, 0, 4, 0),
                mode: WriteMode::PartialUpdate,
                content: Content::single(
                    Lwm2mPath::resource_instance(3, 0, 4, 0),
                    ResourceValue::Integer(1),
                ),
            },
        )
        .wait(WAIT);
    assert_eq!(r, bad, "partial Write of a resource instance");
    // The Execute itself still goes.
    let r = hub
        .request(
            &d,
            DeviceRequest::Execute {
                path: reboot,
                args: None,
            },
        )
        .wait(WAIT);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        reboots.load(Ordering::SeqCst),
        1,
        "only the Execute rebooted"
    );
    device.shutdown(Duration::from_secs(5)).unwrap();
    hub.stop();
}
