//! Client-initiated bootstrap end to end over UDP on loopback: the hub's bootstrap
//! interface (`HubBuilder::bootstrap`) provisions devices built with the crate's device
//! library, which then register with the server they were given: plain CoAP, and DTLS
//! with the PSK the bootstrap server wrote from the registry (a second hub bound to DTLS,
//! sharing its registry; the key goes over plain CoAP only when the service says so). An
//! endpoint the plan does not know, or a twin without a PSK for a `coaps` server, is
//! refused and never registers. The provisioned device then syncs
//! with one Observe-Composite, pushes a value with Send, and answers a read job's
//! Read-Composite.

#![cfg(all(feature = "device", feature = "dtls"))]

mod e2e_support;

use e2e_support::until;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::dtls::{PskCredentials, PskKey};
use twinhub::hub::{Hub, HubEvent, LifecycleKind, SubscribeOptions, Subscription};
use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
use twinhub::lwm2m::client::{
    ClientConfig, ClientEvent, DeviceThread, Lwm2mClient, ObjectTree, objects,
};
use twinhub::lwm2m::server::{BootstrapPlan, ServerAccount};
use twinhub::registry::Registry;
use twinhub::twin::{ConnectionState, Scalar, Twin};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue};

/// How long a step may take (generous: a loaded machine may not run the threads for a
/// while; every wait ends as soon as its step is done).
const WAIT: Duration = Duration::from_secs(30);

/// A device that knows only its bootstrap server.
fn device(endpoint: &str, bootstrap: SocketAddr) -> DeviceThread {
    let mut tree = ObjectTree::new();
    tree.add(objects::bootstrap_security(&format!("coap://{bootstrap}")));
    tree.add(objects::unprovisioned_server());
    tree.add(objects::device("twinhub", "bs", endpoint, "1.0"));
    tree.add(objects::config());
    let mut config = ClientConfig::new(endpoint, bootstrap).with_bootstrap(bootstrap);
    config.retry_initial = Duration::from_millis(200);
    let client = Lwm2mClient::new(Instant::now(), config, tree);
    DeviceThread::spawn(client, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn lifecycle(hub: &Hub) -> Subscription {
    hub.subscribe(SubscribeOptions {
        twins: false,
        jobs: false,
        ..SubscribeOptions::default()
    })
    .unwrap()
}

/// The next lifecycle event of `device` of one of `kinds` (bounded wait).
fn next_of(
    events: &Subscription,
    device: &str,
    kinds: &[LifecycleKind],
) -> (LifecycleKind, Option<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(HubEvent::Lifecycle(e)) if e.device == device && kinds.contains(&e.event) => {
                return (e.event, e.reason);
            }
            Ok(_) => {}
            Err(e) => panic!("no {kinds:?} event for {device}: {e:?}"),
        }
    }
}

fn property(hub: &Hub, id: &str, name: &str) -> Option<Scalar> {
    hub.registry()
        .read()
        .get(id)?
        .device_property(name)
        .map(|(v, _)| v.clone())
}

fn connected(hub: &Hub, id: &str) -> bool {
    hub.registry()
        .read()
        .get(id)
        .is_some_and(|t| t.connection_state() == ConnectionState::Connected)
}

#[test]
fn a_device_is_bootstrapped_then_registers_over_plain_coap() {
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("bs-plain").unwrap()))
        .unwrap();
    // The plan needs the hub's own address: the hub binds first, the plan reads it.
    let addr = std::sync::Arc::new(std::sync::OnceLock::<SocketAddr>::new());
    let plan_addr = addr.clone();
    let hub = Hub::builder()
        .registry(registry)
        .udp("127.0.0.1:0")
        .bootstrap(move |request| {
            (request.endpoint == "bs-plain").then(|| {
                let uri = format!("coap://{}", plan_addr.get().unwrap());
                BootstrapPlan::new(vec![ServerAccount::new(7, uri).with_lifetime(120)])
            })
        })
        .build()
        .unwrap();
    addr.set(hub.local_addr().unwrap()).unwrap();
    let events = lifecycle(&hub);

    let dev = device("bs-plain", hub.local_addr().unwrap());
    assert_eq!(
        next_of(
            &events,
            "bs-plain",
            &[LifecycleKind::Bootstrapped, LifecycleKind::BootstrapFailed]
        ),
        (LifecycleKind::Bootstrapped, None)
    );
    next_of(&events, "bs-plain", &[LifecycleKind::Registered]);
    until("the twin connected", WAIT, || connected(&hub, "bs-plain"));
    let registration = hub
        .registry()
        .read()
        .get("bs-plain")
        .unwrap()
        .registration()
        .cloned()
        .unwrap();
    assert_eq!(registration.lifetime, 120);
    // What the bootstrap server wrote, read on the device: the bootstrap account kept
    // at /0/0, the new account at /0/1 and /1/0.
    let read = |p: Lwm2mPath| {
        dev.with(|c| {
            c.objects_mut()
                .object_mut(p.object_id().unwrap())
                .and_then(|o| {
                    o.read(p.instance_id().unwrap(), p.resource_id().unwrap())
                        .ok()
                })
        })
    };
    use twinhub::lwm2m::client::ResourceData::Single;
    assert_eq!(
        read(Lwm2mPath::resource(0, 0, 1)),
        Some(Single(ResourceValue::Boolean(true)))
    );
    assert_eq!(
        read(Lwm2mPath::resource(0, 1, 0)),
        Some(Single(ResourceValue::String(format!(
            "coap://{}",
            hub.local_addr().unwrap()
        ))))
    );
    assert_eq!(
        read(Lwm2mPath::resource(0, 1, 10)),
        Some(Single(ResourceValue::Integer(7)))
    );
    assert_eq!(
        read(Lwm2mPath::resource(1, 0, 0)),
        Some(Single(ResourceValue::Integer(7)))
    );
    assert_eq!(
        read(Lwm2mPath::resource(1, 0, 1)),
        Some(Single(ResourceValue::Integer(120)))
    );

    // The provisioned device syncs with one Observe-Composite, pushes with Send, and a
    // job reads two of its paths (one Read-Composite: it speaks LWM2M 1.1).
    until("one composite observation", WAIT, || {
        dev.with(|c| c.observed_paths()) == [Lwm2mPath::ROOT]
    });
    let name = Lwm2mPath::resource(10241, 0, 1);
    dev.with(|c| c.set_value(&name, ResourceValue::String("night-mode".into())))
        .unwrap();
    dev.with(|c| c.send(Instant::now(), &[name])).unwrap();
    until("the sent value in the twin", WAIT, || {
        property(&hub, "bs-plain", "ConfigName") == Some(Scalar::from("night-mode"))
    });
    let job = JobId::new("read-two").unwrap();
    let paths = vec![Lwm2mPath::resource(3, 0, 0), Lwm2mPath::resource(1, 0, 1)];
    hub.create_job(JobSpec::new(
        job.clone(),
        JobType::ReadDeviceProperties { paths },
        vec![DeviceId::new("bs-plain").unwrap()],
    ))
    .unwrap();
    until("the read job", WAIT, || {
        hub.job(&job).is_some_and(|j| j.status.is_terminal())
    });
    assert_eq!(hub.job(&job).unwrap().status, JobStatus::Completed);
    assert_eq!(hub.job_statistics(&job).unwrap().succeeded, 1);

    // An endpoint the plan does not know is refused and never registers.
    let stranger = device("bs-stranger", hub.local_addr().unwrap());
    assert_eq!(
        next_of(
            &events,
            "bs-stranger",
            &[LifecycleKind::Bootstrapped, LifecycleKind::BootstrapFailed]
        ),
        (LifecycleKind::BootstrapFailed, Some("refused".into()))
    );
    let refused = stranger.events().recv_timeout(WAIT).unwrap();
    assert!(
        matches!(
            refused,
            ClientEvent::RegistrationFailed {
                code: Some((4, 0)),
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(!stranger.with(|c| c.is_registered()));
    hub.stop();
}

#[test]
fn a_device_bootstrapped_with_a_psk_registers_over_dtls() {
    // The DM server: DTLS, the device's PSK set on its twin.
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("bs-dtls").unwrap()))
        .unwrap();
    let dm = Hub::bind_dtls("127.0.0.1:0", registry, Default::default()).unwrap();
    dm.set_psk(
        "bs-dtls",
        PskCredentials::new("bs-dtls-id", PskKey::new(vec![0x5a; 16])).unwrap(),
    )
    .unwrap();
    let dm_addr = dm.local_addr().unwrap();
    // Over plain CoAP anyone may ask for any endpoint: the registry's plan gives no key
    // to a peer that did not prove it is the device.
    let strict = Hub::builder()
        .shared_registry(dm.registry().clone())
        .udp("127.0.0.1:0")
        .bootstrap_from_registry(format!("coaps://{dm_addr}"))
        .build()
        .unwrap();
    let strict_events = lifecycle(&strict);
    let asker = device("bs-dtls", strict.local_addr().unwrap());
    assert_eq!(
        next_of(
            &strict_events,
            "bs-dtls",
            &[LifecycleKind::Bootstrapped, LifecycleKind::BootstrapFailed]
        ),
        (LifecycleKind::BootstrapFailed, Some("refused".into()))
    );
    assert_eq!(asker.dtls_handshakes(), 0);
    drop(asker);
    strict.stop();
    // The bootstrap server of a lab: plain UDP, accounts made from the DM hub's
    // registry (the twin's PSK identity and key), sent in clear.
    let bs = Hub::builder()
        .shared_registry(dm.registry().clone())
        .udp("127.0.0.1:0")
        .bootstrap_from_registry_in_clear(format!("coaps://{dm_addr}"))
        .build()
        .unwrap();
    let bs_events = lifecycle(&bs);
    let dm_events = lifecycle(&dm);

    let dev = device("bs-dtls", bs.local_addr().unwrap());
    assert_eq!(
        next_of(
            &bs_events,
            "bs-dtls",
            &[LifecycleKind::Bootstrapped, LifecycleKind::BootstrapFailed]
        ),
        (LifecycleKind::Bootstrapped, None)
    );
    next_of(&dm_events, "bs-dtls", &[LifecycleKind::Registered]);
    until("the twin connected over DTLS", WAIT, || {
        connected(&dm, "bs-dtls")
    });
    let identity = dm
        .registry()
        .read()
        .get("bs-dtls")
        .and_then(|t| t.registration().and_then(|r| r.psk_identity.clone()));
    assert_eq!(identity.as_deref(), Some("bs-dtls-id"));
    assert!(dev.dtls_handshakes() >= 1);
    // A twin without a PSK gets no coaps account: refused.
    dm.create_device(Twin::new(DeviceId::new("bs-nokey").unwrap()))
        .unwrap();
    let _nokey = device("bs-nokey", bs.local_addr().unwrap());
    assert_eq!(
        next_of(
            &bs_events,
            "bs-nokey",
            &[LifecycleKind::Bootstrapped, LifecycleKind::BootstrapFailed]
        ),
        (LifecycleKind::BootstrapFailed, Some("refused".into()))
    );
    dm.stop();
    bs.stop();
}

#[test]
fn a_device_bootstraps_over_dtls_with_its_bootstrap_credentials() {
    // The DM server: plain UDP.
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("bs-secure").unwrap()))
        .unwrap();
    let dm = Hub::bind_udp("127.0.0.1:0", registry, Default::default()).unwrap();
    let dm_uri = format!("coap://{}", dm.local_addr().unwrap());
    // The bootstrap server: DTLS, knowing the device by its bootstrap identity; the plan
    // sees who the session proved to be.
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("bs-secure").unwrap()))
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let bs = Hub::builder()
        .registry(registry)
        .dtls("127.0.0.1:0")
        .bootstrap(move |request| {
            *record.lock().unwrap() = request
                .identity
                .as_ref()
                .map(|i| i.psk_identity.to_string());
            Some(BootstrapPlan::new(vec![ServerAccount::new(
                2,
                dm_uri.clone(),
            )]))
        })
        .build()
        .unwrap();
    let bootstrap_creds = PskCredentials::new("bs-secure-bs", PskKey::new(vec![0x33; 16])).unwrap();
    bs.set_psk("bs-secure", bootstrap_creds.clone()).unwrap();
    let bs_events = lifecycle(&bs);
    let dm_events = lifecycle(&dm);

    let bs_addr = bs.local_addr().unwrap();
    let mut tree = ObjectTree::new();
    tree.add(objects::bootstrap_security(&format!("coaps://{bs_addr}")));
    tree.add(objects::unprovisioned_server());
    tree.add(objects::device("twinhub", "bs", "bs-secure", "1.0"));
    let mut config = ClientConfig::new("bs-secure", bs_addr)
        .with_bootstrap(bs_addr)
        .with_bootstrap_psk(bootstrap_creds);
    // The bootstrap session stays open MAX_TRANSMIT_SPAN after Finish (for a retransmitted
    // Finish): 0.5 s x 3 x 1.5 = 2.25 s with these.
    config.ack_timeout = Duration::from_millis(500);
    config.max_retransmit = 2;
    let dev = DeviceThread::spawn(
        Lwm2mClient::new(Instant::now(), config, tree),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    assert_eq!(
        next_of(
            &bs_events,
            "bs-secure",
            &[LifecycleKind::Bootstrapped, LifecycleKind::BootstrapFailed]
        ),
        (LifecycleKind::Bootstrapped, None)
    );
    assert_eq!(seen.lock().unwrap().as_deref(), Some("bs-secure-bs"));
    assert!(dev.dtls_handshakes() >= 1, "the bootstrap went over DTLS");
    next_of(&dm_events, "bs-secure", &[LifecycleKind::Registered]);
    until("the twin connected", WAIT, || connected(&dm, "bs-secure"));
    // Leaving the bootstrap server, the device closed its session there (close_notify,
    // after MAX_TRANSMIT_SPAN): the bootstrap server holds none, rather than one idling
    // until its timeout.
    until("the bootstrap session to close", WAIT, || {
        bs.dtls_stats().unwrap().sessions == 0
    });
    assert_eq!(bs.dtls_stats().unwrap().evicted_idle, 0);
    dm.stop();
    bs.stop();
}

#[test]
fn a_device_that_goes_back_to_bootstrap_does_so_over_dtls() {
    // The provisioned server never answers (a socket nobody reads): after 5 Registers
    // lost in a row the device goes back to its bootstrap server, which speaks DTLS only.
    // Its second Bootstrap-Request went out in plain CoAP before (the thread had switched
    // to the provisioned server's plain link and never back), so the bootstrap server
    // dropped it and the device was stuck.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dm_uri = format!("coap://{}", silent.local_addr().unwrap());
    let mut registry = Registry::new();
    registry
        .create(Twin::new(DeviceId::new("bs-again").unwrap()))
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let bs = Hub::builder()
        .registry(registry)
        .dtls("127.0.0.1:0")
        .bootstrap(move |request| {
            record.lock().unwrap().push(
                request
                    .identity
                    .as_ref()
                    .map(|i| i.psk_identity.to_string()),
            );
            Some(BootstrapPlan::new(vec![ServerAccount::new(
                2,
                dm_uri.clone(),
            )]))
        })
        .build()
        .unwrap();
    let bootstrap_creds = PskCredentials::new("bs-again-bs", PskKey::new(vec![0x44; 16])).unwrap();
    bs.set_psk("bs-again", bootstrap_creds.clone()).unwrap();
    let bs_events = lifecycle(&bs);

    let bs_addr = bs.local_addr().unwrap();
    let mut tree = ObjectTree::new();
    tree.add(objects::bootstrap_security(&format!("coaps://{bs_addr}")));
    tree.add(objects::unprovisioned_server());
    tree.add(objects::device("twinhub", "bs", "bs-again", "1.0"));
    let mut config = ClientConfig::new("bs-again", bs_addr)
        .with_bootstrap(bs_addr)
        .with_bootstrap_psk(bootstrap_creds);
    // A Register is given up after about 0.6 s; the retries wait 0.1, 0.2, 0.4, 0.8 s.
    config.ack_timeout = Duration::from_millis(200);
    config.max_retransmit = 1;
    config.retry_initial = Duration::from_millis(100);
    let _dev = DeviceThread::spawn(
        Lwm2mClient::new(Instant::now(), config, tree),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let wait = Duration::from_secs(30);
    for round in 0..2 {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match bs_events.recv_timeout(left) {
                Ok(HubEvent::Lifecycle(e)) if e.device == "bs-again" => {
                    if e.event == LifecycleKind::Bootstrapped {
                        break;
                    }
                    assert_ne!(e.event, LifecycleKind::BootstrapFailed, "{e:?}");
                }
                Ok(_) => {}
                Err(e) => panic!("no bootstrap {} within {wait:?}: {e:?}", round + 1),
            }
        }
    }
    // Both Bootstrap-Requests came over DTLS, from the bootstrap identity.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.iter().all(|i| i.as_deref() == Some("bs-again-bs")),
        "{seen:?}"
    );
    bs.stop();
}
