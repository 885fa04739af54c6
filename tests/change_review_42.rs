//! Review 42 of the merged change c09f663..f3658bb (a `Sent` held outside the hub's
//! held-events bound, what counts as device activity, held events across an engine
//! rebuilt after a failed commit; NAT rebinding and DTLS: a request that could not go out
//! is not reported `Sent`; the device library's duplicate cache and bootstrap; the
//! subscriptions' feed gaps). Each `#[ignore = "bug: ..."]` test fails on that code and
//! says what is wrong and what the right behaviour is; the others are controls that pin
//! behaviour checked right.

#![cfg(all(
    feature = "lwm2m",
    feature = "device",
    feature = "memory-fleet",
    feature = "fuzzing",
    feature = "dtls"
))]

mod dtls_support;
mod hub_support;
mod server_sim;

use hub_support::*;
use std::sync::Mutex;
use std::time::Duration;
use twinhub::DeviceId;
use twinhub::Lwm2mPath;
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, RegistrationInfo};

// ------------------------------------------------------------------ hub + job engine

fn is_execute(op: &DeviceOp) -> bool {
    matches!(op.request, DeviceRequest::Execute { .. })
}

/// `device` registers again (a new registration id, as after a network loss), the
/// registration a queued request then goes to.
fn registered_again(device: &DeviceId) -> DeviceEvent {
    DeviceEvent::Registered {
        device: device.clone(),
        registration: RegistrationInfo {
            endpoint: device.as_str().into(),
            registration_id: "r2".into(),
            lifetime: 300,
            lwm2m_version: "1.0".into(),
            binding: "U".into(),
            queue_mode: false,
            objects: vec![Lwm2mPath::instance(3, 0), Lwm2mPath::instance(1, 0)],
            address: None,
            psk_identity: None,
        },
    }
}

/// Pushes, in one go, the device registering again while the Execute still waits in the
/// transport's queue, then the Execute leaving for the new registration (`Sent`).
fn registered_then_sent(script: &Mutex<Script>, pump: &DeviceId, execute: &DeviceOp) {
    let mut s = script.lock().unwrap();
    s.events.push_back(registered_again(pump));
    s.events.push_back(DeviceEvent::Sent {
        op: execute.id,
        device: pump.clone(),
    });
}

/// Control: the device registers while the reboot's Execute is queued, then the Execute
/// leaves. That registration is no reboot (the Execute had not reached the device): the
/// child waits for the Execute's answer and a registration after it.
#[test]
fn control_a_registration_before_the_executes_sent_is_not_the_reboot() {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, execute, job) = reboot_handed_over(&pump, true);
    registered_then_sent(&script, &pump, &execute);
    wait_until("everything taken", || {
        script.lock().unwrap().events.is_empty()
    });
    std::thread::sleep(Duration::from_millis(200));
    wait_committed(&hub, &store, "the batch is durable");
    let stats = hub.job_statistics(&job).unwrap();
    assert_eq!(stats.succeeded, 0, "{stats:?}");
    assert_eq!(job_ops(&script).iter().filter(|o| is_execute(o)).count(), 1);
    hub.stop();
}

/// The same events, but the batch that carries them fails to commit once (the store
/// failing, the hub holding its events): the job engine is rebuilt from the store and the
/// batch is applied again.
///
/// Was a bug (fixed): the rebuilt engine took over the `Sent` the old engine took from
/// that batch (`JobEngine::adopt_executes` set FLAG_EXECUTE_SENT and adopted the Execute
/// as left, not queued), and the hub then discarded the batch's `Sent` (`Inner::hold`: no
/// engine awaited it). The batch applied again so handed the engine the registration that came
/// *before* the `Sent` with the Execute already counted as sent: `on_registered` ->
/// `redo_step` took it for the reboot and the child succeeded, although the Execute has
/// neither been answered nor been followed by any registration (the device may refuse it,
/// or never get it). Exactly what the backoff docs (`MAX_HELD_EVENTS`) say must not
/// happen: "a registration held before it is no proof of the reboot".
///
/// Right: the child's state after the batch is applied again is the one the control
/// reaches: in progress, waiting for the Execute's answer (the `Sent`'s effect must be
/// applied in its place, after the registration, e.g. by keeping the op awaited/queued in
/// the rebuilt engine and holding the `Sent` with the batch, or by not carrying
/// FLAG_EXECUTE_SENT ahead of events that preceded it).
#[test]
fn a_registration_before_the_executes_sent_is_not_the_reboot_after_a_failed_commit() {
    let pump = DeviceId::new("pump").unwrap();
    let (hub, store, script, _dir, execute, job) = reboot_handed_over(&pump, true);
    // The store fails: the hub backs off and holds what arrives, in order.
    store.lock().fail_commits(u32::MAX);
    push(&script, battery_level(&pump, 1));
    // Two failures in a row: the hub backs off (1 s), so what arrives now is held, not
    // tried, until the next try takes it all in one batch.
    wait_until("the backoff", || hub.metrics().failed_commits >= 2);
    registered_then_sent(&script, &pump, &execute);
    wait_until("everything taken", || {
        script.lock().unwrap().events.is_empty()
    });
    // Failed tries with the registration and the `Sent` among the events (held
    // together: a try takes them in one batch; two, should the first have come between
    // them).
    let failed = hub.metrics().failed_commits;
    wait_until("tries with both held", || {
        hub.metrics().failed_commits >= failed + 2
    });
    store.lock().fail_commits(0);
    wait_held_applied(&hub, &store);
    std::thread::sleep(Duration::from_millis(200));
    let stats = hub.job_statistics(&job).unwrap();
    assert_eq!(
        stats.succeeded, 0,
        "the reboot counted as done on a registration made before its Execute left \
         (no answer, no registration since): {stats:?}"
    );
    hub.stop();
}

// ------------------------------------------------------------------ DTLS: nothing sent

mod dtls_sent {
    use super::dtls_support::{
        RawDtlsDevice, assert_read_not_sent, creds, events_for, key, secure_server_with_registered,
    };
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};
    use twinhub::DeviceId;
    use twinhub::coap::{Code, Message};
    use twinhub::dtls::DtlsClient;
    use twinhub::transport::DeviceEvent;

    /// `d-1` registers over DTLS (identity `id-1`) from a loopback port; its NAT mapping
    /// goes, and the port goes to another device, `d-2` (identity `id-2`), which
    /// handshakes from it (replacing the session at the address). The hub then reads from
    /// `d-1`.
    ///
    /// Was a bug (fixed in bebb742): the request is reported [`DeviceEvent::Sent`] although nothing left. The
    /// server's pump (`Lwm2mServer::pump`) only asks whether *a* session exists at the
    /// registration's address (`sessions.contains(&reg.addr)`), so it dispatches and
    /// reports `Sent`; the DTLS layer (`SecureLayer::transmit`) then refuses to send it
    /// through `id-2`'s session (`may_send_to` is false) and returns without telling the
    /// server (unlike the no-session case, which now calls `Lwm2mServer::not_sent`). The
    /// module docs of `secure.rs` say "Nothing is reported sent that did not leave"; a
    /// reboot job would take the transport's later time-out for a lost answer and the
    /// device's next registration for the reboot, although the Execute never reached it.
    ///
    /// Right: no `Sent` for a request that did not go out; it waits in the device's queue
    /// for a session of the registration's identity at its address (as while there is no
    /// session at all), i.e. `pump` should check the session's identity (`may_send_to`),
    /// or the layer should hand a refused first transmission back (`not_sent`).
    #[test]
    fn a_request_refused_for_another_identitys_session_is_not_reported_sent() {
        let (udp, events, _store, dev1) =
            secure_server_with_registered(&[("d-1", "id-1", 1), ("d-2", "id-2", 2)]);
        let d1 = DeviceId::new("d-1").unwrap();
        let hub_addr = udp.local_addr();
        let port = dev1.socket.local_addr().unwrap().port();
        drop(dev1);
        // Another device behind the same address (the NAT gave it the port).
        let socket = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut dev2 = RawDtlsDevice {
            socket,
            dtls: DtlsClient::new(Instant::now(), creds("id-2", key(2))),
            server: hub_addr,
            next_mid: 900,
            requests: Vec::new(),
        };
        let _ = dev2.exchange(Message::request(Code::GET, "/hello"));
        assert!(dev2.dtls.handshakes() >= 1, "d-2's handshake");
        let before = events_for(&events, Duration::from_millis(300));
        assert!(
            before
                .iter()
                .all(|e| !matches!(e, DeviceEvent::Deregistered { .. })),
            "{before:?}"
        );
        // Right: d-2 is not d-1; nothing of d-1's goes to it.
        assert_read_not_sent(
            udp,
            &events,
            &mut dev2,
            &d1,
            Duration::from_millis(1500),
            "d-2",
        );
    }
}

// ------------------------------------------------------------------ NAT: displaced, then freed

mod displaced {
    use super::server_sim::{addr, events, notification, out, register, send, update};
    use std::time::{Duration, Instant};
    use twinhub::DeviceId;
    use twinhub::Lwm2mPath;
    use twinhub::coap::{Code, MessageType};
    use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
    use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, OpId, Transport};

    /// `e` registers from `b` and is observed there; `d` (registered from `a`) Updates
    /// from `b` (a NAT gave it `e`'s port: `e` is displaced, per the server docs), then
    /// from `c` (moved again: nobody holds `b` any more). `e`'s device then notifies from
    /// `b`: it is there (a fresh notification of its own observation, from an address no
    /// registration holds), and the server delivers the notification.
    ///
    /// Was a bug (fixed in bebb742): `e` stays displaced: nothing is sent to it (`Lwm2mServer::pump` returns on
    /// `reg.displaced`), although its device is talking from its registration's address
    /// and no other registration holds that address. `displaced` is cleared only by
    /// `follow_address`, which a notification reaches only from an address *other* than
    /// the registration's (`rebinding_notification` / `observation_elsewhere`); every
    /// request to `e` then waits in its queue until `queue_timeout` (timed out, never
    /// sent) or until the device's next Update (up to its lifetime, here 3000 s). The
    /// module docs promise requests wait only "until its device talks from where it is
    /// now".
    ///
    /// Right: once the address is free again, a (fresh) message from `e`'s device at its
    /// registration's address ends the displacement (as an Update from it does: the
    /// `old == peer && displaced` branch of `follow_address`), and `e`'s requests go out.
    /// Or `d` leaving `b` could hand `b` back to the registration it displaced there.
    #[test]
    fn a_displaced_registration_whose_device_notifies_from_its_freed_address_gets_requests_again() {
        let mut s = Lwm2mServer::with_seed(
            ServerConfig {
                auto_provision: true,
                ..ServerConfig::default()
            },
            42,
        );
        let now = Instant::now();
        let (a, b, c) = (addr(1), addr(2), addr(3));
        let e = DeviceId::new("e").unwrap();
        let bat = Lwm2mPath::resource(3, 0, 9);
        let d_location = register(&mut s, now, a, "d", 10);
        register(&mut s, now, b, "e", 20);
        events(&mut s);
        // The hub observes e's battery level.
        s.submit(
            now,
            DeviceOp {
                id: OpId(1),
                device: e.clone(),
                request: DeviceRequest::Observe { path: bat },
            },
        );
        let sent = out(&mut s);
        let (to, observe) = sent
            .iter()
            .find(|(_, m)| m.code == Code::GET)
            .expect("the Observe")
            .clone();
        assert_eq!(to, b);
        let first = notification(
            &observe,
            MessageType::Acknowledgement,
            observe.message_id,
            1,
            b"75",
        );
        send(&mut s, now, b, &first);
        out(&mut s);
        assert!(
            events(&mut s)
                .iter()
                .any(|ev| matches!(ev, DeviceEvent::Response { op: OpId(1), .. })),
            "observed"
        );
        // d's device gets b (e displaced), then moves on to c (b free again).
        update(&mut s, now, b, &d_location, 11);
        update(&mut s, now, c, &d_location, 12);
        events(&mut s);
        // e's device notifies from b, where it registered and still is.
        let later = now + Duration::from_secs(5);
        let note = notification(&observe, MessageType::NonConfirmable, 21, 2, b"76");
        send(&mut s, later, b, &note);
        out(&mut s);
        assert!(
            events(&mut s)
                .iter()
                .any(|ev| matches!(ev, DeviceEvent::Notification { device, .. } if *device == e)),
            "the notification is e's and delivered"
        );
        // The hub reads e.
        s.submit(
            later,
            DeviceOp {
                id: OpId(2),
                device: e.clone(),
                request: DeviceRequest::Read { path: bat },
            },
        );
        let sent = out(&mut s);
        let evs = events(&mut s);
        assert!(
            sent.iter().any(|(to, m)| *to == b && m.code == Code::GET),
            "nothing sent to e, whose device is talking from b (no one else holds b): \
             {sent:?} {evs:?}"
        );
    }
}
