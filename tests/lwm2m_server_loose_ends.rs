//! The LwM2M server's loose ends (sans-IO): a takeover probe's exchange once the
//! registration it probed moved, a displaced registration's address, who ended an
//! observation, and a server NSTART above the CoAP endpoint's.

#![cfg(feature = "lwm2m")]

mod server_sim;

use server_sim::{
    addr, con, established, events, is_probe, observe_battery, out, probes_within, register, run,
    send, server, update,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Message, MessageType};
use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, OpId, Transport};
use twinhub::{DeviceId, Lwm2mPath};

fn read(s: &mut Lwm2mServer, now: Instant, op: u64, device: &str, res: u16) {
    s.submit(
        now,
        DeviceOp {
            id: OpId(op),
            device: DeviceId::new(device).unwrap(),
            request: DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, res),
            },
        },
    );
}

/// `a` registered at port 1; a Register of `a` from port 2 makes the server probe port 1
/// (5.03 to the newcomer meanwhile). Returns `a`'s location.
fn probe_under_way(s: &mut Lwm2mServer, now: Instant) -> String {
    probe_and_location(s, now).0
}

/// [`probe_under_way`], with the probe.
fn probe_and_location(s: &mut Lwm2mServer, now: Instant) -> (String, Message) {
    let location = register(s, now, addr(1), "a", 10);
    events(s);
    let mut again = con(Code::POST, "/rd", 11);
    again.add_uri_query("ep=a");
    again.add_uri_query("lt=3000");
    again.payload = b"</3/0>".to_vec();
    send(s, now, addr(2), &again);
    let sent = out(s);
    let probe = sent
        .iter()
        .find(|(to, m)| *to == addr(1) && is_probe(m))
        .unwrap_or_else(|| panic!("the probe: {sent:?}"))
        .1
        .clone();
    assert!(
        sent.iter()
            .any(|(to, m)| *to == addr(2) && m.code == Code::SERVICE_UNAVAILABLE),
        "the newcomer waits: {sent:?}"
    );
    (location, probe)
}

/// Item 1. Before: `a`'s device moved (NAT rebinding) while the takeover probe of its
/// old address was in flight; `follow_address` (and `update`) marked the probe answered
/// but left its CoAP exchange running, so the probe kept being retransmitted to the
/// address left, and held the endpoint's NSTART slot there: the next device at that
/// address (`c`) had its first Read reported `Sent` but held behind the stale probe, and
/// got the probe's retransmissions, a request of someone else's registration. Now the
/// probe is forgotten with the requests stranded at the old address, in one stroke.
#[test]
fn an_update_from_a_new_address_ends_the_takeover_probe_of_the_old_one() {
    for new in [addr(3), addr(2)] {
        let mut s = server();
        let t0 = Instant::now();
        let location = probe_under_way(&mut s, t0);
        // a's device speaks from `new` (a fresh NAT mapping, or the newcomer's port).
        update(&mut s, t0, new, &location, 12);
        events(&mut s);
        // Another device gets a's old port from the NAT and registers there.
        let t1 = t0 + Duration::from_millis(100);
        register(&mut s, t1, addr(1), "c", 13);
        events(&mut s);
        read(&mut s, t1, 1, "c", 9);
        let evs = events(&mut s);
        let sent = out(&mut s);
        assert!(
            evs.iter()
                .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(1), .. })),
            "{evs:?}"
        );
        assert!(
            sent.iter()
                .any(|(to, m)| *to == addr(1) && m.uri_path_string() == "3/0/9"),
            "c's Read reported Sent, yet held behind the probe of a's old address ({new}): {sent:?}"
        );
        let stray = probes_within(&mut s, t1, 60, addr(1));
        assert!(
            stray.is_empty(),
            "the probe of a's old address went on after a moved to {new}: {stray:?}"
        );
    }
}

/// Item 1, the same through a notification from a new address (a rebinding seen first
/// in a notification): the probe of the address left ends.
#[test]
fn a_notification_from_a_new_address_ends_the_takeover_probe_of_the_old_one() {
    let t0 = Instant::now();
    let (mut s, observe) = a_observed(t0);
    // A Register of `a` from port 2: port 1 is probed.
    let mut again = con(Code::POST, "/rd", 11);
    again.add_uri_query("ep=a");
    again.payload = b"</3/0>".to_vec();
    send(&mut s, t0, addr(2), &again);
    assert!(
        out(&mut s)
            .iter()
            .any(|(to, m)| *to == addr(1) && is_probe(m))
    );
    // a's device notifies from port 3: the registration moves there.
    let mut note = Message::new(MessageType::NonConfirmable, Code::CONTENT, 500);
    note.with_token(observe.token());
    note.set_observe(3);
    note.payload = b"81".to_vec();
    send(&mut s, t0, addr(3), &note);
    out(&mut s);
    let evs = events(&mut s);
    assert!(
        evs.iter().any(
            |e| matches!(e, DeviceEvent::AddressChanged { registration, .. } if registration.address == Some(addr(3)))
        ),
        "{evs:?}"
    );
    let stray = probes_within(&mut s, t0, 60, addr(1));
    assert!(stray.is_empty(), "the probe went on: {stray:?}");
}

/// Item 1, where the registration stays: its device's Update from its own address
/// answers the probe (it is there). The probe's exchange ends too, and a Read submitted
/// then goes out at once instead of waiting behind the probe in the CoAP layer while
/// reported `Sent`.
#[test]
fn an_update_from_the_probed_address_ends_the_probe_and_lets_requests_go() {
    let mut s = server();
    let t0 = Instant::now();
    let location = probe_under_way(&mut s, t0);
    update(&mut s, t0, addr(1), &location, 12);
    events(&mut s);
    read(&mut s, t0, 1, "a", 9);
    let evs = events(&mut s);
    let sent = out(&mut s);
    assert!(
        evs.iter()
            .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(1), .. })),
        "{evs:?}"
    );
    assert!(
        sent.iter()
            .any(|(to, m)| *to == addr(1) && m.uri_path_string() == "3/0/9"),
        "a's Read reported Sent, yet held behind the answered probe: {sent:?}"
    );
    // Still answered: the newcomer at port 2 is refused (4.03) for a while.
    let mut again = con(Code::POST, "/rd", 14);
    again.add_uri_query("ep=a");
    again.payload = b"</3/0>".to_vec();
    send(&mut s, t0, addr(2), &again);
    let sent = out(&mut s);
    assert!(
        sent.iter()
            .any(|(to, m)| *to == addr(2) && m.code == Code::FORBIDDEN),
        "{sent:?}"
    );
    let stray = probes_within(&mut s, t0, 60, addr(1));
    assert!(stray.is_empty(), "the answered probe went on: {stray:?}");
}

/// Item 1, found on the way. Before: with a probe time-out longer than the CoAP exchange
/// (the endpoint gives up on the probe after its retransmissions, about 45 to 93 s),
/// the server forgot the probe's id on the endpoint's give-up but left the registration
/// marked as probed; an Update from the registration's device then could not mark the
/// probe answered, and the probe timer ended the registration (`Expired`) although its
/// device had just spoken. Now the device's Update settles the probe whatever the
/// endpoint did with it.
#[test]
fn an_update_after_the_probe_exchange_gave_up_keeps_the_registration() {
    use twinhub::lwm2m::server::Takeover;
    let mut s = Lwm2mServer::with_seed(
        ServerConfig {
            auto_provision: true,
            takeover: Takeover::ProbeOldAddress {
                probe_timeout: Duration::from_secs(200),
            },
            ..ServerConfig::default()
        },
        44,
    );
    let t0 = Instant::now();
    let location = probe_under_way(&mut s, t0);
    // The probe goes unanswered until the CoAP exchange gives up (at most 93 s).
    run(&mut s, t0, 100, addr(1));
    events(&mut s);
    // Then a's device updates from its own address: it is there.
    let t1 = t0 + Duration::from_secs(100);
    update(&mut s, t1, addr(1), &location, 12);
    events(&mut s);
    // The probe's time runs out.
    run(&mut s, t1, 120, addr(1));
    let evs = events(&mut s);
    assert!(
        !evs.iter().any(|e| matches!(e, DeviceEvent::Expired { .. })),
        "the registration ended although its device spoke: {evs:?}"
    );
    assert!(s.registration(&DeviceId::new("a").unwrap()).is_some());
}

fn address_of(s: &Lwm2mServer, device: &str) -> Option<SocketAddr> {
    s.registration(&DeviceId::new(device).unwrap())
        .expect("registered")
        .address
}

/// Item 2. Before: a registration displaced from its address (another device's
/// Register came from it) still showed that address in the server's own view
/// (`Lwm2mServer::registration`), now the other device's, while the hub's twin showed
/// none. Now it shows none until its device talks from where it is (an Update from a new
/// address), or from the address again once it is free (a fresh notification).
#[test]
fn a_displaced_registration_shows_no_address_until_its_device_talks() {
    let mut s = server();
    let t0 = Instant::now();
    let a = register(&mut s, t0, addr(1), "a", 10);
    assert_eq!(address_of(&s, "a"), Some(addr(1)));
    // b's Register comes from a's port (a NAT gave it away): a is displaced.
    register(&mut s, t0, addr(1), "b", 11);
    let evs = events(&mut s);
    assert!(
        evs.iter()
            .any(|e| matches!(e, DeviceEvent::Displaced { device, .. } if device.as_str() == "a")),
        "{evs:?}"
    );
    assert_eq!(address_of(&s, "a"), None, "a's address is b's now");
    assert_eq!(address_of(&s, "b"), Some(addr(1)));
    // a's device updates from a new mapping: the address is back.
    update(&mut s, t0, addr(3), &a, 12);
    assert_eq!(address_of(&s, "a"), Some(addr(3)));
    let evs = events(&mut s);
    assert!(
        evs.iter().any(|e| matches!(e, DeviceEvent::RegistrationUpdated { device, registration } if device.as_str() == "a" && registration.address == Some(addr(3)))),
        "{evs:?}"
    );
}

/// Item 2, the other way back: a displaced registration whose device notifies from the
/// address it lost, once the other registration there is gone, takes the address back;
/// the view and the event show it.
#[test]
fn a_displaced_registration_that_takes_its_address_back_shows_it() {
    let t0 = Instant::now();
    let (mut s, observe) = a_observed(t0);
    let b = register(&mut s, t0, addr(1), "b", 11);
    events(&mut s);
    assert_eq!(address_of(&s, "a"), None);
    // b de-registers: the address is free. a's device notifies from it.
    send(
        &mut s,
        t0,
        addr(1),
        &con(Code::DELETE, &format!("/{b}"), 12),
    );
    out(&mut s);
    events(&mut s);
    assert_eq!(address_of(&s, "a"), None, "nobody spoke for a yet");
    let mut note = Message::new(MessageType::NonConfirmable, Code::CONTENT, 600);
    note.with_token(observe.token());
    note.set_observe(3);
    note.payload = b"81".to_vec();
    send(&mut s, t0, addr(1), &note);
    out(&mut s);
    let evs = events(&mut s);
    assert_eq!(address_of(&s, "a"), Some(addr(1)));
    assert!(
        evs.iter().any(|e| matches!(e, DeviceEvent::AddressChanged { device, registration } if device.as_str() == "a" && registration.address == Some(addr(1)))),
        "{evs:?}"
    );
}

/// Observes `/3/0/9` on `a` (registered at port 1, op `op`) and answers it with Observe
/// 2 when `observe`, or declines (no Observe option); returns the Observe request.
fn observed(s: &mut Lwm2mServer, now: Instant, op: u64, observe: bool) -> Message {
    let request = observe_battery(s, now, op, "a", addr(1));
    let mut answer = established(&request);
    if !observe {
        answer.remove_option(twinhub::coap::OptionNumber::OBSERVE);
    }
    send(s, now, addr(1), &answer);
    out(s);
    request
}

/// [`server`] where `a` registered at port 1 and its `/3/0/9` is observed (op 1,
/// [`observed`]), its events drained; returns it and the Observe.
fn a_observed(now: Instant) -> (Lwm2mServer, Message) {
    let mut s = server();
    register(&mut s, now, addr(1), "a", 10);
    events(&mut s);
    let observe = observed(&mut s, now, 1, true);
    events(&mut s);
    (s, observe)
}

/// Who ended `a`'s observation established by `op`, as reported.
fn end_cause(evs: &[DeviceEvent], op: u64) -> Vec<twinhub::transport::ObservationEndCause> {
    evs.iter()
        .filter_map(|e| match e {
            DeviceEvent::ObservationEnded {
                op: OpId(n), cause, ..
            } if *n == op => Some(*cause),
            _ => None,
        })
        .collect()
}

/// A notification of `request`'s observation whose body comes in blocks (the first of
/// 64 bytes, more to come): the server asks for the next block. Returns that request.
fn blockwise_notification(s: &mut Lwm2mServer, now: Instant, request: &Message) -> Message {
    let mut note = Message::new(MessageType::NonConfirmable, Code::CONTENT, 700);
    note.with_token(request.token());
    note.set_observe(3);
    note.set_block2(twinhub::coap::BlockOption {
        num: 0,
        more: true,
        szx: 2,
    });
    note.payload = vec![b'8'; 64];
    send(s, now, addr(1), &note);
    out(s)
        .into_iter()
        .find(|(to, m)| *to == addr(1) && m.code == Code::GET && m.block2().is_some())
        .map(|(_, m)| m)
        .expect("the next block is asked for")
}

/// Item 3. Before: `ObservationEnded` did not say who ended the observation, so the hub
/// could not tell a device that spoke (its error notification, its RST) from the
/// server's own give-up or cancel. Now its `cause` says, at each place it is emitted.
#[test]
fn each_observation_end_says_who_ended_it() {
    use twinhub::transport::ObservationEndCause as Cause;
    let t0 = Instant::now();
    let fresh = || {
        let mut s = server();
        register(&mut s, t0, addr(1), "a", 10);
        events(&mut s);
        s
    };
    // The device declines (its answer has no Observe option).
    let mut s = fresh();
    observed(&mut s, t0, 1, false);
    assert_eq!(end_cause(&events(&mut s), 1), [Cause::Declined]);
    assert!(Cause::Declined.by_device());
    // The device ends it with an error notification.
    let mut s = fresh();
    let request = observed(&mut s, t0, 1, true);
    events(&mut s);
    let mut note = Message::new(MessageType::NonConfirmable, Code::NOT_FOUND, 701);
    note.with_token(request.token());
    note.set_observe(3);
    send(&mut s, t0, addr(1), &note);
    assert_eq!(end_cause(&events(&mut s), 1), [Cause::EndedByDevice]);
    assert!(Cause::EndedByDevice.by_device());
    // The device rejects a follow-up of a notification with RST.
    let mut s = fresh();
    let request = observed(&mut s, t0, 1, true);
    events(&mut s);
    let follow_up = blockwise_notification(&mut s, t0, &request);
    let rst = Message::new(MessageType::Reset, Code::EMPTY, follow_up.message_id);
    send(&mut s, t0, addr(1), &rst);
    assert_eq!(end_cause(&events(&mut s), 1), [Cause::Reset]);
    assert!(Cause::Reset.by_device());
    // Nobody answers the follow-up: the server gives up.
    let mut s = fresh();
    let request = observed(&mut s, t0, 1, true);
    events(&mut s);
    blockwise_notification(&mut s, t0, &request);
    run(&mut s, t0, 120, addr(1));
    assert_eq!(end_cause(&events(&mut s), 1), [Cause::TimedOut]);
    assert!(!Cause::TimedOut.by_device());
    // The follow-up's answer does not continue the body: the server drops it.
    let mut s = fresh();
    let request = observed(&mut s, t0, 1, true);
    events(&mut s);
    let follow_up = blockwise_notification(&mut s, t0, &request);
    let mut wrong = Message::new(
        MessageType::Acknowledgement,
        Code::NOT_FOUND,
        follow_up.message_id,
    );
    wrong.with_token(follow_up.token());
    send(&mut s, t0, addr(1), &wrong);
    assert_eq!(end_cause(&events(&mut s), 1), [Cause::Dropped]);
    assert!(!Cause::Dropped.by_device());
    // A Cancel-Observe of the same path submitted to the server ends it.
    let mut s = fresh();
    observed(&mut s, t0, 1, true);
    events(&mut s);
    s.submit(
        t0,
        DeviceOp {
            id: OpId(2),
            device: DeviceId::new("a").unwrap(),
            request: DeviceRequest::CancelObserve {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        },
    );
    assert_eq!(end_cause(&events(&mut s), 1), [Cause::Cancelled]);
    assert!(!Cause::Cancelled.by_device());
}

/// Item 3, the last place: a notification from a new address moves the registration,
/// but the CoAP peer table is full and the observation cannot follow it: the server
/// drops it.
#[test]
fn an_observation_that_cannot_follow_its_device_ends_as_dropped() {
    use twinhub::transport::ObservationEndCause as Cause;
    let config = ServerConfig {
        auto_provision: true,
        ..ServerConfig::default()
    };
    let mut s = Lwm2mServer::with_seed(
        ServerConfig {
            coap: twinhub::coap::EndpointConfig {
                max_peers: 1,
                ..config.coap.clone()
            },
            ..config
        },
        44,
    );
    let t0 = Instant::now();
    register(&mut s, t0, addr(1), "a", 10);
    events(&mut s);
    let request = observed(&mut s, t0, 1, true);
    events(&mut s);
    let mut note = Message::new(MessageType::NonConfirmable, Code::CONTENT, 702);
    note.with_token(request.token());
    note.set_observe(3);
    note.payload = b"81".to_vec();
    send(&mut s, t0, addr(3), &note);
    let evs = events(&mut s);
    assert_eq!(end_cause(&evs, 1), [Cause::Dropped], "{evs:?}");
}

/// The `/3/0/{res}` reads among `sent`, by resource.
fn reads_out(sent: &[(SocketAddr, Message)]) -> Vec<u16> {
    sent.iter()
        .filter(|(_, m)| m.code == Code::GET)
        .filter_map(|(_, m)| {
            let path: Vec<&str> = m.uri_path().collect();
            match path[..] {
                ["3", "0", r] => r.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

/// The operations reported `Sent` among `evs`.
fn sent_ops(evs: &[DeviceEvent]) -> Vec<u64> {
    evs.iter()
        .filter_map(|e| match e {
            DeviceEvent::Sent { op, .. } => Some(op.0),
            _ => None,
        })
        .collect()
}

/// Item 4. Before: with the server's `nstart` (3) above the CoAP endpoint's (1), the
/// server handed three requests to the endpoint and reported all three `Sent`, while
/// the endpoint sent one and held two in its own queue: a reboot job took a request
/// still waiting in the server for one that reached the device. Now a request goes to
/// the endpoint only when it leaves at once: the lower NSTART holds, the others wait in
/// the server's queue, and each is reported `Sent` when its datagram goes.
#[test]
fn a_server_nstart_above_the_endpoints_reports_sent_only_what_left() {
    let config = ServerConfig {
        auto_provision: true,
        nstart: 3,
        ..ServerConfig::default()
    };
    assert_eq!(config.coap.nstart, 1);
    let mut s = Lwm2mServer::with_seed(config, 44);
    let t0 = Instant::now();
    register(&mut s, t0, addr(1), "a", 10);
    events(&mut s);
    for (op, res) in [(1, 9), (2, 10), (3, 11)] {
        read(&mut s, t0, op, "a", res);
    }
    let evs = events(&mut s);
    let sent = out(&mut s);
    assert_eq!(reads_out(&sent), [9], "NSTART 1 at the CoAP layer");
    assert_eq!(
        sent_ops(&evs),
        [1],
        "only what left is reported Sent: {evs:?}"
    );
    // Each answer lets the next one go, reported as it goes.
    let mut log = sent;
    for (res, next) in [(9u16, Some((10u16, 2u64))), (10, Some((11, 3))), (11, None)] {
        let request = log
            .iter()
            .map(|(_, m)| m)
            .find(|m| reads_out(&[(addr(1), (*m).clone())]) == [res])
            .expect("the read went")
            .clone();
        let mut answer = Message::new(
            MessageType::Acknowledgement,
            Code::CONTENT,
            request.message_id,
        );
        answer.with_token(request.token());
        answer.payload = b"1".to_vec();
        send(&mut s, t0, addr(1), &answer);
        let evs = events(&mut s);
        let now_out = out(&mut s);
        match next {
            Some((r, op)) => {
                assert_eq!(reads_out(&now_out), [r]);
                assert_eq!(sent_ops(&evs), [op], "{evs:?}");
            }
            None => assert_eq!(sent_ops(&evs), Vec::<u64>::new()),
        }
        log.extend(now_out);
    }
}

/// Item 4, the same behind a takeover probe: a Read submitted while the probe of the
/// registration's address is in flight (CoAP NSTART 1 there) waits in the server, not
/// reported `Sent` (before: reported `Sent` while held behind the probe in the CoAP
/// layer, and failed `RegistrationEnded`, "sent, outcome unknown", when the registration
/// went), and goes, reported then, once the probe is answered.
#[test]
fn a_read_behind_a_takeover_probe_is_reported_sent_when_it_leaves() {
    let mut s = server();
    let t0 = Instant::now();
    let (_, probe) = probe_and_location(&mut s, t0);
    let t1 = t0 + Duration::from_millis(500);
    events(&mut s);
    read(&mut s, t1, 1, "a", 9);
    assert_eq!(sent_ops(&events(&mut s)), Vec::<u64>::new());
    assert_eq!(reads_out(&out(&mut s)), Vec::<u16>::new());
    let mut answer = Message::new(
        MessageType::Acknowledgement,
        Code::NOT_FOUND,
        probe.message_id,
    );
    answer.with_token(probe.token());
    send(&mut s, t1, addr(1), &answer);
    assert_eq!(reads_out(&out(&mut s)), [9]);
    assert_eq!(sent_ops(&events(&mut s)), [1]);
}

/// The addresses `evs` report `ep`'s registration moved to without an Update
/// (`AddressChanged`).
fn address_changes(evs: &[DeviceEvent], ep: &str) -> Vec<SocketAddr> {
    evs.iter()
        .filter_map(|e| match e {
            DeviceEvent::AddressChanged {
                device,
                registration,
            } if device.as_str() == ep => registration.address,
            _ => None,
        })
        .collect()
}

/// Day 45, item 1. Before: a fresh notification from a new address (NAT rebinding seen
/// first in a notification) moved the registration and was reported as
/// `RegistrationUpdated`, so the hub published a lifecycle `updated` event although the
/// device sent no Update (nothing it announced changed, its lifetime was not refreshed;
/// Leshan fires `updated` for an Update only). Now it is reported as `AddressChanged`
/// with the new address, as a displaced registration's taking its address back is: after
/// the request stranded at the old address failed, before the notification. From a free
/// address and from one another registration holds (that one is displaced).
#[test]
fn a_notification_from_a_new_address_is_reported_as_an_address_change() {
    for (to, held_by_b) in [(addr(3), false), (addr(2), true)] {
        let mut s = server();
        let t0 = Instant::now();
        let location = register(&mut s, t0, addr(1), "a", 10);
        if held_by_b {
            register(&mut s, t0, addr(2), "b", 11);
        }
        events(&mut s);
        let observe = observed(&mut s, t0, 1, true);
        events(&mut s);
        // A Read to port 1, unanswered: stranded there by the move.
        read(&mut s, t0, 2, "a", 10);
        events(&mut s);
        out(&mut s);
        let mut note = Message::new(MessageType::NonConfirmable, Code::CONTENT, 800);
        note.with_token(observe.token());
        note.set_observe(3);
        note.payload = b"81".to_vec();
        send(&mut s, t0, to, &note);
        out(&mut s);
        let evs = events(&mut s);
        assert!(
            !evs.iter()
                .any(|e| matches!(e, DeviceEvent::RegistrationUpdated { .. })),
            "the device sent no Update ({to}): {evs:?}"
        );
        assert_eq!(address_changes(&evs, "a"), [to], "{evs:?}");
        let at = |what: &dyn Fn(&DeviceEvent) -> bool| evs.iter().position(what);
        let stranded = at(&|e| {
            matches!(
                e,
                DeviceEvent::Response {
                    op: OpId(2),
                    result: Err(twinhub::transport::DeviceError::RegistrationEnded),
                    ..
                }
            )
        });
        let moved = at(&|e| {
            matches!(e, DeviceEvent::AddressChanged { registration, .. }
                if location == format!("rd/{}", registration.registration_id))
        });
        let notified = at(&|e| matches!(e, DeviceEvent::Notification { .. }));
        assert!(
            stranded.is_some() && stranded < moved && moved < notified,
            "{evs:?}"
        );
        assert_eq!(address_of(&s, "a"), Some(to));
        if held_by_b {
            assert_eq!(address_of(&s, "b"), None);
            assert!(
                evs.iter().any(
                    |e| matches!(e, DeviceEvent::Displaced { device, .. } if device.as_str() == "b")
                ),
                "{evs:?}"
            );
        }
    }
}

/// Day 45, item 3. `b` is registered at port 1, and a Bootstrap-Request of `a` came from
/// port 1 too (one CoAP endpoint for both). While the session's Bootstrap-Finish is out
/// there, the hub's Read of `b` waits in `b`'s queue (the CoAP NSTART of port 1 is the
/// Finish's; rightly not `Sent`). Then `a`'s device registers here from port 2, which
/// counts as the Finish's answer: the Finish is forgotten, and port 1 is free. Before,
/// nothing pumped `b` then, so its Read waited until `b`'s device next talked or
/// `queue_timeout` (600 s) failed it; as a failed bootstrap request does since f3e8f02,
/// the forgotten Finish now lets it go at once, reported `Sent` after `a`'s
/// `Registered`.
#[test]
fn a_read_held_behind_a_finish_goes_out_when_a_register_settles_it() {
    use twinhub::lwm2m::server::BootstrapPlan;
    let mut s = server().with_bootstrap(Box::new(|_| {
        Some(BootstrapPlan {
            delete_first: false,
            ..BootstrapPlan::new(Vec::new())
        })
    }));
    let t0 = Instant::now();
    register(&mut s, t0, addr(1), "b", 10);
    events(&mut s);
    let mut bs = con(Code::POST, "/bs", 20);
    bs.add_uri_query("ep=a");
    send(&mut s, t0, addr(1), &bs);
    // Each bootstrap request is answered until the Finish is out.
    let mut finish = None;
    for _ in 0..4 {
        let sent = out(&mut s);
        let Some((_, request)) = sent
            .into_iter()
            .find(|(to, m)| *to == addr(1) && m.mtype == MessageType::Confirmable)
        else {
            break;
        };
        if request.code == Code::POST && request.uri_path_string() == "bs" {
            finish = Some(request);
            break;
        }
        let mut answer = Message::new(
            MessageType::Acknowledgement,
            Code::CONTENT,
            request.message_id,
        );
        answer.with_token(request.token());
        send(&mut s, t0, addr(1), &answer);
    }
    assert!(finish.is_some(), "the Finish went out");
    events(&mut s);
    read(&mut s, t0, 1, "b", 9);
    let is_read = |m: &Message| m.code == Code::GET && m.uri_path_string() == "3/0/9";
    assert!(
        !out(&mut s).iter().any(|(_, m)| is_read(m)),
        "held behind the Finish"
    );
    assert_eq!(sent_ops(&events(&mut s)), Vec::<u64>::new());
    // a's device applied the Finish (its answers lost) and registers from port 2.
    let (_, sent) = server_sim::register_with(&mut s, t0, addr(2), "a", 21, &[]);
    let evs = events(&mut s);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            DeviceEvent::Bootstrap {
                outcome: twinhub::transport::BootstrapOutcome::Finished,
                ..
            }
        )),
        "{evs:?}"
    );
    assert!(
        sent.iter().any(|(to, m)| *to == addr(1) && is_read(m)),
        "port 1 is free once the Finish is settled: b's Read goes: {sent:?}"
    );
    let registered = evs.iter().position(
        |e| matches!(e, DeviceEvent::Registered { device, .. } if device.as_str() == "a"),
    );
    let went = evs
        .iter()
        .position(|e| matches!(e, DeviceEvent::Sent { op: OpId(1), .. }));
    assert!(
        registered.is_some() && registered < went,
        "b's Read reported Sent, after a's Registered: {evs:?}"
    );
}
