//! What dogfooding the crate as a new user found (session 55), and the hostile review of
//! those fixes: each test failed before its fix, and its comment says what happened then.
#![cfg(feature = "device")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use twinhub::hub::{Hub, HubConfig, HubEvent, LifecycleKind, RequestError, SubscribeOptions};
use twinhub::lwm2m::client::{
    Access, ClientConfig, DeviceThread, Lwm2mClient, ObjectDef, ObjectTree, ResourceDef,
    ValueObject, objects,
};
use twinhub::registry::Registry;
use twinhub::transport::{DeviceError, DeviceReply, DeviceRequest, WriteMode};
use twinhub::twin::Twin;
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceType, ResourceValue};

const WAIT: Duration = Duration::from_secs(30);

/// A hub on loopback and one device `d` with `tree` (the Server object added), once it
/// registered.
fn hub_with(mut tree: ObjectTree) -> (Hub, DeviceThread) {
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
    tree.add(objects::server(1, 300, "U"));
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

/// A hub on loopback and one registered device whose tree has a creatable IPSO object
/// (3303, instance 0).
fn hub_and_device() -> (Hub, DeviceThread) {
    let mut tree = ObjectTree::new();
    tree.add(objects::device("C", "M", "S", "1.0"));
    let def = ObjectDef::new(
        3303,
        "Temperature",
        true,
        vec![
            ResourceDef::new(5700, "Sensor Value", ResourceType::Float, Access::Read),
            ResourceDef::new(
                5750,
                "Application Type",
                ResourceType::String,
                Access::ReadWrite,
            ),
        ],
    );
    tree.add(ValueObject::new(def).with_value(0, 5700, ResourceValue::Float(1.5)));
    hub_with(tree)
}

/// The instances of 3303 the device lists.
fn instances(hub: &Hub) -> String {
    let d = DeviceId::new("d").unwrap();
    let discover = DeviceRequest::Discover {
        path: Lwm2mPath::object(3303),
    };
    match hub.request(&d, discover).wait(WAIT) {
        Ok(DeviceReply::Links(links)) => links,
        other => panic!("{other:?}"),
    }
}

fn name(path: Lwm2mPath) -> Content {
    Content::single(
        Lwm2mPath::resource(3303, path.instance_id().unwrap(), 5750),
        ResourceValue::String("n".into()),
    )
}

/// `DeviceRequest::Create`'s path may be `/oid/iid` "to choose the instance id", but the
/// server posted to the object with the values as given: with no values the device chose
/// the id (`/3303/7` came back `Created(/3303/1)`), a value under another instance
/// created that one (`/3303/9` with a value at `/3303/5` made `/3303/5`), and a resource
/// path created an instance too. Now each is refused before anything is sent.
#[test]
fn create_honours_the_instance_it_names_or_sends_nothing() {
    let (hub, device) = hub_and_device();
    let d = DeviceId::new("d").unwrap();
    let create = |path: Lwm2mPath, content: Content| {
        hub.request(&d, DeviceRequest::Create { path, content })
            .wait(WAIT)
            .map_err(|e| match e {
                twinhub::hub::RequestError::Device(e) => e,
                other => panic!("{other:?}"),
            })
    };
    let refused =
        |r: Result<DeviceReply, DeviceError>| matches!(r, Err(DeviceError::BadPayload(_)));

    let r = create(Lwm2mPath::instance(3303, 7), Content::default());
    assert!(refused(r.clone()), "empty Create at /3303/7: {r:?}");
    let r = create(
        Lwm2mPath::instance(3303, 9),
        name(Lwm2mPath::instance(3303, 5)),
    );
    assert!(
        refused(r.clone()),
        "Create at /3303/9 with a value at /3303/5: {r:?}"
    );
    let r = create(
        Lwm2mPath::resource(3303, 0, 5750),
        name(Lwm2mPath::instance(3303, 2)),
    );
    assert_eq!(r, Err(DeviceError::BadRequest), "Create at a resource path");

    // What is well formed still goes: at the instance named, or where the values say.
    let at = Lwm2mPath::instance(3303, 8);
    assert_eq!(create(at, name(at)), Ok(DeviceReply::Created(at)));
    let at = Lwm2mPath::instance(3303, 4);
    assert_eq!(
        create(Lwm2mPath::object(3303), name(at)),
        Ok(DeviceReply::Created(at))
    );

    // The refused ones created nothing on the device.
    let links = instances(&hub);
    for gone in [
        "</3303/1>",
        "</3303/2>",
        "</3303/5>",
        "</3303/7>",
        "</3303/9>",
    ] {
        assert!(!links.contains(gone), "{gone} was created: {links}");
    }
    for kept in ["</3303/0>", "</3303/4>", "</3303/8>"] {
        assert!(links.contains(kept), "{kept} missing: {links}");
    }
    device.shutdown(Duration::from_secs(5)).unwrap();
    hub.stop();
}

/// An Execute names a resource and a Write an instance or a resource, but the server sent
/// either as a POST to whatever path it was given, and a POST's meaning is the path's:
/// `Execute { /3303 }` and a partial-update `Write { /3303 }` each created an instance
/// on the device and came back `Done`; `Execute { /3303/0, args }` went as a partial
/// Write of the argument text. Now they are refused with nothing sent.
#[test]
fn execute_and_partial_write_never_become_another_operation() {
    let (hub, device) = hub_and_device();
    let d = DeviceId::new("d").unwrap();
    let ask = |request| hub.request(&d, request).wait(WAIT);
    let bad = Err(twinhub::hub::RequestError::Device(DeviceError::BadRequest));
    for (path, args) in [
        (Lwm2mPath::object(3303), None),
        (Lwm2mPath::instance(3303, 0), Some("5750".to_owned())),
    ] {
        let r = ask(DeviceRequest::Execute { path, args });
        assert_eq!(r, bad, "Execute at {path}");
    }
    let r = ask(DeviceRequest::Write {
        path: Lwm2mPath::object(3303),
        mode: twinhub::transport::WriteMode::PartialUpdate,
        content: name(Lwm2mPath::instance(3303, 6)),
    });
    assert_eq!(r, bad, "partial Write of an object");
    let links = instances(&hub);
    assert!(
        !links.contains("</3303/1>") && !links.contains("</3303/6>"),
        "{links}"
    );
    // An instance's partial update still goes.
    let at = Lwm2mPath::instance(3303, 0);
    let r = ask(DeviceRequest::Write {
        path: at,
        mode: twinhub::transport::WriteMode::PartialUpdate,
        content: name(at),
    });
    assert_eq!(r, Ok(DeviceReply::Done));
    device.shutdown(Duration::from_secs(5)).unwrap();
    hub.stop();
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
    let mut tree = ObjectTree::new();
    let counted = reboots.clone();
    tree.add(
        objects::device("C", "M", "S", "1.0").on_execute(4, move |_, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }),
    );
    let (hub, device) = hub_with(tree);
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
