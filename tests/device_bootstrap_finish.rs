//! A lost answer to Bootstrap-Finish, sans-IO under a simulated clock: the device library
//! bootstraps from one LwM2M server (the crate's bootstrap interface) and registers with
//! another, over a link that loses the device's 2.04 to `POST /bs` (and, in the second
//! test, any datagram at random). The bootstrap server retransmits the Finish after the
//! device has left it for the management server; the device answers the copy from its
//! duplicate cache, so both sides end right: the device registered with the management
//! server, the bootstrap session finished (not failed by a time-out). When every answer
//! to the Finish is lost, a bootstrap server that is also the management server takes
//! the device's Register for the answer; one apart reports the Finish timed out.

#![cfg(all(feature = "device", feature = "lwm2m"))]

mod bootstrap_sim;

use bootstrap_sim::{BootstrapNet, FinishLoss, Management};
use std::time::Duration;
use twinhub::lwm2m::client::ClientEvent;
use twinhub::transport::BootstrapOutcome;

/// Device `dev-7`, the bootstrap server and a management server of its own on a link
/// that loses the first answer to each Finish and, with chance `loss`, any datagram.
fn net(seed: u64, loss: f64) -> BootstrapNet {
    BootstrapNet::new("dev-7", seed ^ 0xb5, Management::Server(seed ^ 0xd3)).lossy(seed, loss)
}

#[test]
fn a_lost_answer_to_bootstrap_finish_is_answered_again_from_the_duplicate_cache() {
    let mut net = net(1, 0.0);
    net.run(Duration::from_secs(300));
    assert!(
        net.finishes_delivered >= 2,
        "the bootstrap server retransmitted the Finish ({} delivered)",
        net.finishes_delivered
    );
    assert!(net.client.is_registered(), "{:?}", net.client_events);
    assert_eq!(net.registered_at_dm, 1);
    assert_eq!(
        net.outcomes,
        vec![BootstrapOutcome::Finished],
        "the bootstrap server saw the Finish acknowledged"
    );
    // One bootstrap, one registration: the copy of the Finish changed nothing.
    let bootstrapped = net
        .client_events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Bootstrapped { .. }))
        .count();
    assert_eq!(bootstrapped, 1, "{:?}", net.client_events);
    assert_eq!(net.bs.bootstrap_sessions(), 0);
}

/// Over a link that loses 20 % of all datagrams (and the first answer to every Finish),
/// for 24 seeds: the device always ends registered, and the bootstrap server reports the
/// bootstrap finished whenever one of the device's answers to the Finish reached it.
/// Only when every transmission of the Finish or its answer was lost (the exchange failed
/// for CoAP: nothing the device can do about it) is the session reported failed, although
/// the device applied it. Before the fix, every seed ended that way: the device dropped
/// each retransmitted Finish once it had left the bootstrap server.
#[test]
fn over_a_lossy_link_the_bootstrap_ends_finished_when_an_answer_gets_through() {
    let mut finished = 0;
    for seed in 0..24u64 {
        let mut net = net(seed, 0.2);
        net.run(Duration::from_secs(900));
        assert!(
            net.client.is_registered(),
            "seed {seed}: {:?} {:?}",
            net.client_events,
            net.outcomes
        );
        match net.outcomes.last() {
            Some(BootstrapOutcome::Finished) => finished += 1,
            Some(BootstrapOutcome::Failed(why)) if why.starts_with("finish") => assert_eq!(
                net.finish_answers_delivered, 0,
                "seed {seed}: an answer to the Finish reached the server, yet: {why}"
            ),
            other => panic!("seed {seed}: {other:?} ({:?})", net.outcomes),
        }
    }
    assert!(finished >= 20, "only {finished} of 24 bootstraps finished");
}

/// Every answer to Bootstrap-Finish lost, and the bootstrap server also the management
/// server (a hub that hosts both, as `HubBuilder::bootstrap` with an account of its own
/// address gives): the device applied the Finish and registered at that same server, so
/// the bootstrap is reported finished, once, before the registration, and the Finish is
/// not retransmitted after the Register. Before the fix the Finish timed out and the
/// session was reported failed ("finish: ...") although the server had the device's
/// Register in hand.
#[test]
fn a_finish_with_every_answer_lost_is_finished_by_the_register_at_the_same_server() {
    let mut net = BootstrapNet::new("dev-7", 7, Management::Bootstrap);
    net.lose_finish_answers = FinishLoss::All;
    net.run_until(Duration::from_secs(60), |n| n.registered_at_dm > 0);
    let finishes = net.finishes_delivered;
    assert!(finishes >= 1);
    net.run(Duration::from_secs(300));
    assert!(net.client.is_registered(), "{:?}", net.client_events);
    assert_eq!(net.registered_at_dm, 1);
    assert!(
        !net.finish_answers_lost.is_empty(),
        "the answers to Finish were lost"
    );
    assert_eq!(net.finish_answers_delivered, 0, "none got through");
    assert_eq!(net.outcomes, vec![BootstrapOutcome::Finished]);
    assert_eq!(net.bs_log, ["bootstrap", "registered"]);
    assert_eq!(
        net.finishes_delivered, finishes,
        "no Finish after the Register"
    );
    assert_eq!(net.bs.bootstrap_sessions(), 0);
}

/// The same with the management server apart (the bootstrap server sees no Register):
/// as in Leshan's bootstrap session, a Finish that timed out is reported failed, with
/// its reason, although the device applied it and registered there.
#[test]
fn a_finish_with_every_answer_lost_fails_at_a_bootstrap_server_apart() {
    let mut net = BootstrapNet::new("dev-7", 7, Management::Server(8));
    net.lose_finish_answers = FinishLoss::All;
    net.run(Duration::from_secs(300));
    assert!(net.client.is_registered(), "{:?}", net.client_events);
    assert_eq!(net.registered_at_dm, 1);
    assert_eq!(net.finish_answers_delivered, 0);
    match net.outcomes.as_slice() {
        [BootstrapOutcome::Failed(why)] => assert!(why.starts_with("finish"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// The same over DTLS, through the hub's bootstrap interface on real UDP (loopback): a
/// relay between the device and the bootstrap hub loses the device's answer to the
/// Finish (the application-data record that follows the hub's sixth: the answer to
/// Bootstrap-Request, then Discover, Delete, two Writes, Finish). The device keeps its
/// bootstrap session after Finish, so the hub's retransmitted Finish reaches it, and is
/// answered from the duplicate cache: the hub reports the bootstrap finished and the
/// device registers with the management hub. Before the fix, the device had closed that
/// session (close_notify) at Finish and dropped the bootstrap server's datagrams, so the
/// Finish timed out (MAX_TRANSMIT_WAIT, 93 s) and the hub reported the bootstrap failed.
#[cfg(feature = "dtls")]
#[test]
fn over_dtls_a_lost_answer_to_finish_reaches_the_device_through_its_bootstrap_session() {
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;
    use twinhub::DeviceId;
    use twinhub::dtls::{PskCredentials, PskKey};
    use twinhub::hub::{Hub, HubEvent, LifecycleKind, SubscribeOptions};
    use twinhub::lwm2m::client::{ClientConfig, DeviceThread, Lwm2mClient, ObjectTree, objects};
    use twinhub::lwm2m::server::{BootstrapPlan, ServerAccount};
    use twinhub::registry::Registry;
    use twinhub::twin::{ConnectionState, Twin};

    const WAIT: Duration = Duration::from_secs(20);
    const ID: &str = "bs-lost";
    let twin_registry = || {
        let mut r = Registry::new();
        r.create(Twin::new(DeviceId::new(ID).unwrap())).unwrap();
        r
    };
    let dm = Hub::bind_udp("127.0.0.1:0", twin_registry(), Default::default()).unwrap();
    let dm_uri = format!("coap://{}", dm.local_addr().unwrap());
    let bs = Hub::builder()
        .registry(twin_registry())
        .dtls("127.0.0.1:0")
        .bootstrap(move |_| {
            Some(BootstrapPlan::new(vec![ServerAccount::new(
                2,
                dm_uri.clone(),
            )]))
        })
        .build()
        .unwrap();
    let creds = PskCredentials::new("bs-lost-bs", PskKey::new(vec![0x44; 16])).unwrap();
    bs.set_psk(ID, creds.clone()).unwrap();
    let events = bs
        .subscribe(SubscribeOptions {
            twins: false,
            jobs: false,
            ..SubscribeOptions::default()
        })
        .unwrap();

    // The relay: the device talks to `front`, the bootstrap hub sees `back`.
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&front, &back] {
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    }
    let front_addr = front.local_addr().unwrap();
    let hub_addr = bs.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let from_hub = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let relay = {
        let (stop, from_hub, lost) = (stop.clone(), from_hub.clone(), lost.clone());
        std::thread::spawn(move || {
            const APPLICATION_DATA: u8 = 23;
            let mut device = None;
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    device = Some(from);
                    let answer_to_finish = buf[0] == APPLICATION_DATA
                        && from_hub.load(Ordering::SeqCst) == 6
                        && lost.load(Ordering::SeqCst) == 0;
                    if answer_to_finish {
                        lost.store(1, Ordering::SeqCst);
                    } else {
                        let _ = back.send_to(&buf[..n], hub_addr);
                    }
                }
                if let (Ok((n, _)), Some(d)) = (back.recv_from(&mut buf), device) {
                    if buf[0] == APPLICATION_DATA {
                        from_hub.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = front.send_to(&buf[..n], d);
                }
            }
        })
    };

    let mut tree = ObjectTree::new();
    tree.add(objects::bootstrap_security(&format!(
        "coaps://{front_addr}"
    )));
    tree.add(objects::unprovisioned_server());
    tree.add(objects::device("twinhub", "bs", ID, "1.0"));
    let config = ClientConfig::new(ID, front_addr)
        .with_bootstrap(front_addr)
        .with_bootstrap_psk(creds);
    let dev = DeviceThread::spawn(
        Lwm2mClient::new(Instant::now(), config, tree),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(HubEvent::Lifecycle(e))
                if e.device == ID
                    && matches!(
                        e.event,
                        LifecycleKind::Bootstrapped | LifecycleKind::BootstrapFailed
                    ) =>
            {
                break (e.event, e.reason);
            }
            Ok(_) => {}
            Err(e) => panic!("no bootstrap outcome: {e:?}"),
        }
    };
    assert_eq!(outcome, (LifecycleKind::Bootstrapped, None));
    assert_eq!(
        lost.load(Ordering::SeqCst),
        1,
        "the answer to Finish was lost"
    );
    assert!(
        from_hub.load(Ordering::SeqCst) >= 7,
        "the hub retransmitted the Finish"
    );
    let deadline = Instant::now() + WAIT;
    while dm.registry().read().get(ID).unwrap().connection_state() != ConnectionState::Connected {
        assert!(Instant::now() < deadline, "the device never registered");
        std::thread::sleep(Duration::from_millis(10));
    }
    dev.shutdown(Duration::from_secs(30)).unwrap();
    stop.store(true, Ordering::SeqCst);
    relay.join().unwrap();
    dm.stop();
    bs.stop();
}
