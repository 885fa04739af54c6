//! End to end over real UDP on loopback: a hub with the bundled LWM2M server, devices
//! built with the crate's device library, and a CoAP package server. Devices register,
//! twins fill, queries answer (read-your-writes), each of the six job types succeeds,
//! and the failures end with the right child statuses: a device that rejects the
//! firmware (`deviceError:6`) and one that went offline (`deviceOffline`). A device with
//! confirmable notifications, behind a relay that loses the first copy of each
//! notification and of each ACK, still gets its value into the twin.

#![cfg(all(feature = "device", feature = "lwm2m"))]

mod e2e_support;

use e2e_support::{Device, device_value, prop, run_job, serve, start, wait_for};
use std::time::{Duration, Instant};
use twinhub::hub::{Hub, HubConfig};
use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
use twinhub::query::{QueryExpression, QueryProperty};
use twinhub::registry::Registry;
use twinhub::twin::{ConnectionState, Scalar, Twin};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue};

#[test]
fn devices_register_twins_fill_and_every_job_type_runs_over_udp() {
    let names = [
        "e2e-1",
        "e2e-2",
        "e2e-3",
        "e2e-4",
        "e2e-reject",
        "e2e-offline",
    ];
    let mut registry = Registry::new();
    for n in names {
        registry
            .create(Twin::new(DeviceId::new(n).unwrap()).with_tag("e2e"))
            .unwrap();
    }
    registry
        .create(Twin::new(DeviceId::new("e2e-never").unwrap()))
        .unwrap();
    let hub = Hub::bind_udp("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    let server = hub.local_addr().unwrap();
    // The hub serves the package itself, over plain CoAP here, to registered devices.
    let uri = hub.publish_package("fw/2.0.bin", vec![7u8; 5000]).unwrap();
    assert_eq!(uri, format!("coap://{server}/pkg/fw/2.0.bin"));

    let mut devices: Vec<Device> = names
        .iter()
        .map(|n| start(n, server, *n == "e2e-reject"))
        .collect();
    // A device the registry does not know is refused (4.03) and changes nothing.
    let mut stranger = vec![start("e2e-stranger", server, false)];

    // Registration and property sync fill the twins.
    wait_for(&mut devices, "twins to fill", || {
        names
            .iter()
            .all(|n| prop(&hub, n, "BatteryLevel").is_some())
    });
    {
        let reg = hub.registry().read();
        let twin = reg.get("e2e-1").unwrap();
        assert_eq!(twin.connection_state(), ConnectionState::Connected);
        assert!(twin.is_managed());
        let registration = twin.registration().unwrap();
        assert!(registration.objects.contains(&Lwm2mPath::instance(3, 0)));
        assert_eq!(
            twin.device_property("FirmwareVersion").unwrap().0,
            &Scalar::from("1.0")
        );
        assert!(reg.get("e2e-stranger").is_none());
        assert_eq!(
            reg.get("e2e-never").unwrap().connection_state(),
            ConnectionState::Disconnected
        );
    }
    wait_for(&mut stranger, "the stranger to be refused", || {
        hub.stats().rejected >= 1
    });

    // A device-side change arrives by notification; a query right after sees it.
    devices[0]
        .thread
        .as_ref()
        .unwrap()
        .with(|c| c.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(12)))
        .unwrap();
    wait_for(&mut devices, "the battery notification", || {
        prop(&hub, "e2e-1", "BatteryLevel") == Some(Scalar::from(12))
    });
    let low = QueryExpression::new().filter(QueryProperty::device("BatteryLevel").lt(20));
    assert_eq!(
        hub.resolve_targets(&low).unwrap(),
        vec![DeviceId::new("e2e-1").unwrap()]
    );

    // The offline device de-registers before the firmware job.
    devices[5]
        .thread
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(30))
        .unwrap();
    wait_for(&mut devices, "the offline device to disconnect", || {
        hub.registry()
            .read()
            .get("e2e-offline")
            .unwrap()
            .connection_state()
            == ConnectionState::Disconnected
    });

    // 1. Firmware update over everything on 1.0 (frozen from a query): four succeed,
    // one rejects the package, one is offline until the job's time runs out.
    let on_1_0 = QueryExpression::new().filter(QueryProperty::device("FirmwareVersion").eq("1.0"));
    let targets = hub.resolve_targets(&on_1_0).unwrap();
    assert_eq!(targets.len(), 6);
    let fw = JobId::new("fw").unwrap();
    let spec = JobSpec::new(
        fw.clone(),
        JobType::FirmwareUpdate {
            package_uri: uri,
            expected_version: Some("2.0".into()),
        },
        targets,
    )
    .max_execution_time(Some(Duration::from_secs(6)));
    assert_eq!(run_job(&hub, &mut devices, spec), JobStatus::Failed);
    let stats = hub.job_statistics(&fw).unwrap();
    assert_eq!((stats.succeeded, stats.failed), (4, 2));
    for child in hub.job_children(&fw) {
        let device = child.device_id.as_ref().unwrap().as_str().to_string();
        let expected = match device.as_str() {
            "e2e-reject" => Some("deviceError:6"),
            "e2e-offline" => Some("deviceOffline"),
            _ => None,
        };
        assert_eq!(
            child.failure_reason.as_deref(),
            expected,
            "child for {device}"
        );
    }
    for n in &names[..4] {
        assert_eq!(
            prop(&hub, n, "FirmwareVersion"),
            Some(Scalar::from("2.0")),
            "{n}"
        );
    }
    assert_eq!(
        prop(&hub, "e2e-reject", "FirmwareVersion"),
        Some(Scalar::from("1.0"))
    );
    assert!(hub.package_downloads() >= 5);

    let online: Vec<DeviceId> = devices[..5].iter().map(|d| d.id.clone()).collect();
    // 2. Reboot.
    let spec = JobSpec::new(
        JobId::new("reboot").unwrap(),
        JobType::Reboot {
            wait_for_registration: false,
        },
        online.clone(),
    );
    assert_eq!(run_job(&hub, &mut devices, spec), JobStatus::Completed);
    // The application hears of the reboot just after the device answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while devices[..5].iter().any(|d| d.reboots != 1) {
        assert!(
            Instant::now() < deadline,
            "every device was asked to reboot once"
        );
        serve(&mut devices);
        std::thread::sleep(Duration::from_millis(10));
    }
    // 3. Factory reset.
    let spec = JobSpec::new(
        JobId::new("reset").unwrap(),
        JobType::FactoryReset {
            wait_for_registration: false,
        },
        online.clone(),
    );
    assert_eq!(run_job(&hub, &mut devices, spec), JobStatus::Completed);
    // 4. Configuration update.
    let spec = JobSpec::new(
        JobId::new("config").unwrap(),
        JobType::ConfigurationUpdate {
            name: "sampling".into(),
            value: "10s".into(),
        },
        online.clone(),
    );
    assert_eq!(run_job(&hub, &mut devices, spec), JobStatus::Completed);
    for d in &devices[..5] {
        assert_eq!(
            device_value(d, Lwm2mPath::resource(10241, 0, 2)),
            Some(ResourceValue::String("10s".into()))
        );
    }
    // 5. Write device properties: the device's value changes; the twin follows by notify.
    let spec = JobSpec::new(
        JobId::new("write").unwrap(),
        JobType::WriteDeviceProperties {
            values: vec![(
                Lwm2mPath::resource(3, 0, 15),
                ResourceValue::String("Europe/Oslo".into()),
            )],
        },
        online.clone(),
    );
    assert_eq!(run_job(&hub, &mut devices, spec), JobStatus::Completed);
    for d in &devices[..5] {
        assert_eq!(
            device_value(d, Lwm2mPath::resource(3, 0, 15)),
            Some(ResourceValue::String("Europe/Oslo".into()))
        );
    }
    // 6. Read device properties: the twin gets the device's current value.
    let spec = JobSpec::new(
        JobId::new("read").unwrap(),
        JobType::ReadDeviceProperties {
            paths: vec![Lwm2mPath::resource(3, 0, 15)],
        },
        online.clone(),
    );
    assert_eq!(run_job(&hub, &mut devices, spec), JobStatus::Completed);
    for d in &devices[..5] {
        assert_eq!(
            prop(&hub, d.id.as_str(), "Timezone"),
            Some(Scalar::from("Europe/Oslo"))
        );
    }

    for d in devices.iter_mut().chain(stranger.iter_mut()) {
        if let Some(t) = d.thread.take() {
            let _ = t.shutdown(Duration::from_secs(2));
        }
    }
    hub.stop();
}

/// Issue #17: request/response with one device over real UDP: a read returns the value
/// (and the twin gets it), a write and an execute are answered, a missing path is a
/// device error with its code.
#[test]
fn request_response_over_udp() {
    use twinhub::hub::RequestError;
    use twinhub::transport::{DeviceError, DeviceReply, DeviceRequest, WriteMode};
    use twinhub::{Content, ResourceValue as V};
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("rr-1").unwrap()))
        .unwrap();
    let config = HubConfig {
        sync: None,
        ..HubConfig::default()
    };
    let hub = Hub::bind_udp("127.0.0.1:0", registry, config).unwrap();
    let mut devices = vec![start("rr-1", hub.local_addr().unwrap(), false)];
    let id = devices[0].id.clone();
    wait_for(&mut devices, "registration", || {
        hub.twin("rr-1")
            .is_some_and(|t| t.connection_state == ConnectionState::Connected)
    });
    let wait = Duration::from_secs(20);
    let battery = Lwm2mPath::resource(3, 0, 9);
    match hub
        .request(&id, DeviceRequest::Read { path: battery })
        .wait(wait)
    {
        Ok(DeviceReply::Content(c)) => assert_eq!(c.values, vec![(battery, V::Integer(80))]),
        other => panic!("{other:?}"),
    }
    wait_for(&mut devices, "the read in the twin", || {
        prop(&hub, "rr-1", "BatteryLevel") == Some(Scalar::from(80))
    });
    let name = Lwm2mPath::resource(10241, 0, 1);
    let write = DeviceRequest::Write {
        path: name,
        content: Content::single(name, V::String("mode".into())),
        mode: WriteMode::Replace,
    };
    assert_eq!(hub.request(&id, write).wait(wait), Ok(DeviceReply::Done));
    assert_eq!(
        device_value(&devices[0], name),
        Some(V::String("mode".into()))
    );
    let apply = DeviceRequest::Execute {
        path: Lwm2mPath::resource(10241, 0, 3),
        args: None,
    };
    assert_eq!(hub.request(&id, apply).wait(wait), Ok(DeviceReply::Done));
    let missing = DeviceRequest::Read {
        path: Lwm2mPath::instance(3303, 0),
    };
    assert_eq!(
        hub.request(&id, missing).wait(wait),
        Err(RequestError::Device(DeviceError::NotFound))
    );
    for d in &mut devices {
        if let Some(t) = d.thread.take() {
            let _ = t.shutdown(Duration::from_secs(2));
        }
    }
    hub.stop();
}

/// What the relay in [`confirmable_notifications_survive_loss_to_the_hub`] saw.
#[derive(Default, Debug)]
struct RelayCounts {
    /// Confirmable notifications dropped (the first copy of each).
    dropped_notifications: usize,
    /// Copies of those notifications passed on to the hub.
    passed_notifications: usize,
    /// The hub's ACKs to them: dropped (the first of each), passed on.
    dropped_acks: usize,
    passed_acks: usize,
}

/// Relays UDP between one device and the hub, dropping the first copy of every confirmable
/// notification from the device and the first ACK the hub sends for each; ends when `stop`
/// is set.
fn lossy_relay(
    hub: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (std::net::SocketAddr, std::thread::JoinHandle<RelayCounts>) {
    use std::collections::HashSet;
    use std::net::UdpSocket;
    use std::sync::atomic::Ordering;
    use twinhub::coap::{Code, Message, MessageType};
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(hub).unwrap();
    let timeout = Some(Duration::from_millis(5));
    front.set_read_timeout(timeout).unwrap();
    back.set_read_timeout(timeout).unwrap();
    let addr = front.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut counts = RelayCounts::default();
        let mut device = None;
        let mut notifications = HashSet::new();
        let mut acked = HashSet::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Acquire) {
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                device = Some(from);
                let m = Message::decode(&buf[..n]).unwrap();
                let notification = m.mtype == MessageType::Confirmable
                    && m.code == Code::CONTENT
                    && m.observe().is_some();
                if notification && notifications.insert(m.message_id) {
                    counts.dropped_notifications += 1;
                    continue;
                }
                counts.passed_notifications += usize::from(notification);
                back.send(&buf[..n]).unwrap();
            }
            if let Ok(n) = back.recv(&mut buf) {
                let m = Message::decode(&buf[..n]).unwrap();
                let ack = m.mtype == MessageType::Acknowledgement
                    && m.code.is_empty()
                    && notifications.contains(&m.message_id);
                if ack && acked.insert(m.message_id) {
                    counts.dropped_acks += 1;
                    continue;
                }
                counts.passed_acks += usize::from(ack);
                if let Some(d) = device {
                    front.send_to(&buf[..n], d).unwrap();
                }
            }
        }
        counts
    });
    (addr, thread)
}

/// A device with `confirmable_notifications` behind a relay that loses the first copy of
/// every notification and of every ACK the hub sends for one: the device sends each again
/// until the hub's ACK gets through, the hub acknowledges the duplicate again, and the
/// twin gets the value; nothing stays unacknowledged and no notification times out.
#[test]
fn confirmable_notifications_survive_loss_to_the_hub() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use twinhub::lwm2m::client::ClientEvent;
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("con-1").unwrap()))
        .unwrap();
    let hub = Hub::bind_udp("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (relay, relay_thread) = lossy_relay(hub.local_addr().unwrap(), stop.clone());
    let mut devices = vec![e2e_support::start_configured(
        "con-1",
        relay,
        false,
        None,
        |c| c.confirmable_notifications = true,
    )];
    wait_for(&mut devices, "the twin to fill", || {
        prop(&hub, "con-1", "BatteryLevel") == Some(Scalar::from(80i64))
    });
    let thread = devices[0].thread.as_ref().unwrap();
    thread.with(|c| {
        c.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(42))
            .unwrap()
    });
    wait_for(&mut devices, "the notified value", || {
        prop(&hub, "con-1", "BatteryLevel") == Some(Scalar::from(42i64))
    });
    let thread = devices[0].thread.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while thread.with(|c| c.unacknowledged_notifications()) != 0 {
        assert!(
            Instant::now() < deadline,
            "a notification stays unacknowledged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let events: Vec<ClientEvent> = thread.events().try_iter().collect();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ClientEvent::NotificationTimedOut { .. })),
        "{events:?}"
    );
    stop.store(true, Ordering::Release);
    let counts = relay_thread.join().unwrap();
    // One notification (the battery level): its first copy lost, the second passed and
    // acknowledged with the ACK lost, the third passed and acknowledged again by the hub
    // as a duplicate.
    assert_eq!(
        (
            counts.dropped_notifications,
            counts.passed_notifications,
            counts.dropped_acks,
            counts.passed_acks
        ),
        (1, 2, 1, 1),
        "{counts:?}"
    );
    hub.stop();
}

/// A hub bound to every interface cannot name itself in a package URI: the service says
/// where devices reach it (`packageAuthority` in the JSON settings).
#[test]
fn package_uris_name_the_configured_authority() {
    let config: HubConfig = serde_json::from_str(r#"{"packageAuthority": "192.0.2.7:5683"}"#)
        .expect("settings with the package authority");
    let hub = Hub::bind_udp("0.0.0.0:0", Registry::new(), config).unwrap();
    assert_eq!(
        hub.publish_package("fw/2.0.bin", vec![1; 10]).unwrap(),
        "coap://192.0.2.7:5683/pkg/fw/2.0.bin"
    );
    hub.stop();
    let hub = Hub::bind_udp("127.0.0.1:0", Registry::new(), HubConfig::default()).unwrap();
    let uri = hub.publish_package("fw/2.0.bin", vec![1; 10]).unwrap();
    assert_eq!(
        uri,
        format!("coap://{}/pkg/fw/2.0.bin", hub.local_addr().unwrap())
    );
    hub.stop();
}

/// A firmware job naming one of the hub's packages that is not published is refused at
/// creation, however the URI spells the hub's authority: the port the scheme implies or
/// written out, the host in any case. A URI naming another port, another host or another
/// scheme is not the hub's (taken as given). Before, the authority was compared as text:
/// `coap://hub.example/pkg/..` against `hub.example:5683` was taken for another server,
/// and the job failed every device's download instead.
#[test]
fn a_package_uri_names_the_hub_by_its_parsed_authority() {
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("d").unwrap()))
        .unwrap();
    let config = HubConfig {
        package_authority: Some("Hub.Example:5683".into()),
        ..HubConfig::default()
    };
    let hub = Hub::bind_udp("127.0.0.1:0", registry, config).unwrap();
    hub.publish_package("fw/2.0.bin", vec![1; 10]).unwrap();
    let job = |n: usize, uri: &str| {
        JobSpec::new(
            JobId::new(&format!("fw-{n}")).unwrap(),
            JobType::FirmwareUpdate {
                package_uri: uri.into(),
                expected_version: None,
            },
            vec![DeviceId::new("d").unwrap()],
        )
    };
    let refused = |r: Result<_, twinhub::job::SpecError>| {
        matches!(
            r,
            Err(twinhub::job::SpecError::InvalidParameter {
                name: "packageUri",
                ..
            })
        )
    };
    let ours = [
        "coap://hub.example/pkg/fw/3.0.bin",
        "coap://HUB.EXAMPLE:5683/pkg/fw/3.0.bin",
        "COAP://hub.example:/pkg/fw/3.0.bin",
    ];
    let foreign = [
        "coap://hub.example:5684/pkg/fw/3.0.bin",
        "coaps://hub.example/pkg/fw/3.0.bin",
        "coap://other.example/pkg/fw/3.0.bin",
        "http://hub.example:5683/pkg/fw/3.0.bin",
    ];
    let mut n = 0;
    for uri in ours {
        n += 1;
        assert!(refused(hub.create_job(job(n, uri))), "{uri} is the hub's");
    }
    for uri in foreign {
        n += 1;
        assert!(
            !refused(hub.create_job(job(n, uri))),
            "{uri} is not the hub's"
        );
    }
    // Published: taken whatever the spelling.
    n += 1;
    assert!(
        hub.create_job(job(n, "coap://hub.example/pkg/fw/2.0.bin"))
            .is_ok()
    );
    hub.stop();
}
