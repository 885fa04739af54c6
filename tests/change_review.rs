//! Hostile review of the fixes in 0ef07d4..c440802: each test failed on the code as
//! reviewed because of a fix that went wrong or missed a case (fixed since).

#![cfg(all(feature = "dtls", feature = "lwm2m", feature = "device"))]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::coap::{
    BlockOption, Code, ContentFormat, Endpoint, EndpointConfig, Event, IncomingRequestId, Message,
    MessageType,
};
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::twin::Twin;

fn peer() -> SocketAddr {
    "127.0.0.1:40001".parse().unwrap()
}

fn drain(ep: &mut Endpoint) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        out.push(Message::decode(&t.payload).expect("endpoint sends valid CoAP"));
    }
    out
}

fn fetch(mid: u16, token: &[u8], payload: &[u8]) -> Message {
    let mut m = Message::request(Code::FETCH, "/");
    m.mtype = MessageType::Confirmable;
    m.message_id = mid;
    m.set_token(token).unwrap();
    m.set_content_format(ContentFormat::SENML_JSON);
    m.payload = payload.to_vec();
    m
}

fn send(ep: &mut Endpoint, now: Instant, m: &Message) {
    ep.handle_datagram(now, peer(), &m.to_bytes().unwrap());
}

fn next_request(ep: &mut Endpoint) -> Option<(IncomingRequestId, Message)> {
    loop {
        match ep.poll_event() {
            Some(Event::Request { id, request, .. }) => return Some((id, request)),
            Some(_) => continue,
            None => return None,
        }
    }
}

fn body(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// eb6b114 made the method part of the Block2 follow-up key so that "a GET's follow-up is
/// never served from a POST's (or another FETCH's) body". But the key holds no FETCH
/// payload (RFC 8132 §2: the payload is part of a FETCH's cache key, RFC 7959 §2.4: the
/// follow-ups are of the same request): two Read-Composites (FETCH `/`, different path
/// lists) from one peer share one key, and block 1 of the first is served from the
/// second's body — the splice the fix claims to prevent.
#[test]
fn block2_follow_up_of_a_fetch_is_not_served_from_another_fetchs_body() {
    let mut ep = Endpoint::new_seeded(EndpointConfig::default(), 11);
    let t0 = Instant::now();
    let a_body = body(3000, 3);
    let b_body = body(3000, 4);
    let a_req = br#"[{"n":"/3/0"}]"#;
    let b_req = br#"[{"n":"/5/0"}]"#;

    send(&mut ep, t0, &fetch(1, &[1], a_req));
    let (id, _) = next_request(&mut ep).expect("FETCH A handed to the application");
    let mut r = Message::response(Code::CONTENT);
    r.payload = a_body.clone();
    ep.respond(t0, id, r).unwrap();
    assert_eq!(drain(&mut ep)[0].payload, a_body[..1024]);

    send(&mut ep, t0, &fetch(2, &[2], b_req));
    let (id, _) = next_request(&mut ep).expect("FETCH B handed to the application");
    let mut r = Message::response(Code::CONTENT);
    r.payload = b_body.clone();
    ep.respond(t0, id, r).unwrap();
    drain(&mut ep);

    // A's download goes on: the same FETCH (same payload), Block2 num 1.
    let mut a1 = fetch(3, &[3], a_req);
    a1.set_block2(BlockOption::new(1, false, 6).unwrap());
    send(&mut ep, t0, &a1);
    let mut got = drain(&mut ep);
    if got.is_empty() {
        let (id, _) = next_request(&mut ep).expect("follow-up handed to the application");
        let mut r = Message::response(Code::CONTENT);
        r.payload = a_body.clone();
        ep.respond(t0, id, r).unwrap();
        got = drain(&mut ep);
    }
    assert!(
        got[0].payload != b_body[1024..2048],
        "block 1 of FETCH A was served from FETCH B's response body"
    );
    assert!(
        got[0].payload == a_body[1024..2048],
        "block 1 of FETCH A is not A's"
    );
}

/// d6a2581 routes `create_device` of a twin carrying any credentials through
/// `create_with_psk` on a hub with a coaps listener, which demands an identity *and* a
/// key. But `Authentication` says "the key is never serialized ... deserializing yields
/// no key", and a twin is valid with an identity alone: a twin read from JSON (an export,
/// a console body) is created on every other hub, and was on this one before the change;
/// now a coaps hub refuses it (BadCredentials).
#[test]
fn a_twin_from_json_with_an_identity_and_no_key_is_created_on_a_coaps_hub() {
    let json = r#"{"deviceId":"json-copy","authentication":{"pskIdentity":"json-copy-id"}}"#;
    let twin: Twin = match serde_json::from_str(json) {
        Ok(t) => t,
        Err(_) => {
            let mut t = Twin::new(DeviceId::new("json-copy").unwrap());
            t.authentication.psk_identity = Some("json-copy-id".into());
            t
        }
    };
    assert!(twin.authentication.psk_key.is_none());
    assert!(twin.validate().is_ok(), "the twin itself is valid");
    let plain = Hub::bind_udp("127.0.0.1:0", Registry::new(), HubConfig::default()).unwrap();
    let on_plain = plain.create_device(twin.clone());
    plain.stop();
    assert!(on_plain.is_ok(), "{on_plain:?}");
    let hub = Hub::bind_dtls("127.0.0.1:0", Registry::new(), HubConfig::default()).unwrap();
    let on_coaps = hub.create_device(twin);
    hub.stop();
    assert!(
        on_coaps.is_ok(),
        "a twin a plain hub takes is refused by a coaps hub: {on_coaps:?}"
    );
}

// ---- device library: bootstrap fallback (c440802) ----

use twinhub::lwm2m::client::ClientEvent;
use twinhub::{Lwm2mPath, ResourceValue};

mod scripted_bs;
use scripted_bs::{Dev, bootstrap_config, bootstrap_tree, bs, dm, security, server};

/// The bootstrap server provisions `dm()` (an account the server then refuses).
fn provision(d: &mut Dev) {
    let sec = security(1, &format!("coap://{}", dm()), 5);
    assert_eq!(d.write(Lwm2mPath::instance(0, 1), sec), Code::CHANGED);
    assert_eq!(
        d.write(Lwm2mPath::instance(1, 0), server(0, 5, 60)),
        Code::CHANGED
    );
    assert_eq!(d.finish(), Code::CHANGED);
}

/// `ClientConfig::retry_initial`: "First wait before re-registering after a failure;
/// doubles up to `retry_max`." c440802 sends a client back to bootstrap after 5 refused
/// Registers, and a finished bootstrap sets the failure count to 0: against a server
/// that keeps refusing (4.03), the client cycles register x5 -> bootstrap -> register x5
/// forever, its wait never past 16 x `retry_initial` (80 s with the defaults, never the
/// 600 s `retry_max`). Over two simulated hours it sends hundreds of Registers (and a
/// Bootstrap-Request every ~2.5 min) where the documented backoff allows about 20.
#[test]
fn bootstrap_fallback_does_not_reset_the_registration_backoff_forever() {
    let mut config = bootstrap_config();
    config.retry_initial = Duration::from_secs(5);
    config.retry_max = Duration::from_secs(600);
    let mut d = Dev::new(bootstrap_tree(), config, 700);
    let start = d.now;
    let (mut registers, mut bootstraps) = (0u32, 0u32);
    let mut longest_wait = Duration::ZERO;
    for _ in 0..5000 {
        if d.now - start > Duration::from_secs(2 * 3600) {
            break;
        }
        d.client.handle_timeout(d.now);
        for (to, m) in d.sent() {
            if to == bs() && m.uri_path().eq(["bs"]) && m.code == Code::POST {
                bootstraps += 1;
                d.answer_from(bs(), &m, Code::CHANGED);
                provision(&mut d);
            } else if to == dm() && m.uri_path().eq(["rd"]) {
                registers += 1;
                d.answer_from(dm(), &m, Code::FORBIDDEN);
            }
        }
        while let Some(e) = d.client.poll_event() {
            if let ClientEvent::RegistrationFailed { retry_in, .. } = e {
                longest_wait = longest_wait.max(retry_in);
            }
        }
        d.now = d
            .client
            .poll_timeout()
            .unwrap_or(d.now + Duration::from_secs(1))
            .max(d.now + Duration::from_millis(1));
    }
    assert!(registers >= 5, "the scenario ran ({registers} Registers)");
    assert!(
        registers <= 40,
        "{registers} refused Registers and {bootstraps} Bootstrap-Requests in 2 h; the \
         longest wait was {longest_wait:?} (retry_max 600 s)"
    );
}

// ---- job engine: children held for max_in_flight (c643d91) ----

use twinhub::job::{
    ChildState, EngineConfig, FailureKind, FailureReason, JobEngine, JobId, JobSpec, JobType,
    RetryRule,
};
use twinhub::transport::{DeviceEvent, DeviceOp};

mod job_support;
use job_support::{drain as drain_ops, registered};

fn write_job(id: &JobId, devices: Vec<DeviceId>) -> JobSpec {
    JobSpec::new(
        id.clone(),
        JobType::WriteDeviceProperties {
            values: vec![(
                Lwm2mPath::resource(3, 0, 14),
                ResourceValue::String("+02:00".into()),
            )],
        },
        devices,
    )
    .max_in_flight(1)
    .device_timeout(Duration::from_secs(60))
}

/// a starts, its device leaves (a waits for it), b starts in its place; a's device comes
/// back at t0+2 s while b runs, so a is held for the slot (c643d91). Returns the engine,
/// b's operation and t0.
fn held_behind_b(spec: impl FnOnce(JobSpec) -> JobSpec) -> (JobEngine, JobId, DeviceOp, Instant) {
    let t0 = Instant::now();
    let mut e = JobEngine::new(
        EngineConfig::default(),
        t0,
        twinhub::Timestamp::from_millis(0),
    );
    let a = DeviceId::new("a").unwrap();
    let b = DeviceId::new("b").unwrap();
    e.handle_event(t0, &registered(&a));
    e.handle_event(t0, &registered(&b));
    let id = JobId::new("j").unwrap();
    e.create(t0, spec(write_job(&id, vec![a.clone(), b.clone()])))
        .unwrap();
    let ops = drain_ops(&mut e);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].device, a);
    let t1 = t0 + Duration::from_secs(1);
    e.handle_event(t1, &DeviceEvent::Deregistered { device: a.clone() });
    let ops = drain_ops(&mut e);
    let b_op = ops.into_iter().find(|o| o.device == b).expect("b starts");
    let t2 = t0 + Duration::from_secs(2);
    e.handle_event(t2, &registered(&a));
    assert!(drain_ops(&mut e).is_empty(), "a is held while b runs");
    (e, id, b_op, t0)
}

/// src/job/mod.rs: "A child whose device is offline waits ... the per-device timeout
/// counts only once the device is online"; `Rollout::max_in_flight`: a device come back
/// "waits for one of them to end". A child held for a slot (its device online the whole
/// time) keeps the deadline of the attempt its device left, and fails when it passes —
/// with `DeviceOffline` ("The device stayed offline"), while the device was online and
/// only the slot was busy, and no operation was ever sent to it. (Before c643d91 it went
/// on at once and, unanswered, timed out as `TimedOut`; retry and abort rules keyed on
/// the kind now see the wrong one.)
#[test]
fn a_child_held_for_a_slot_does_not_fail_as_device_offline() {
    let (mut e, id, _b_op, t0) = held_behind_b(|s| s);
    let a = DeviceId::new("a").unwrap();
    // b's device is slow; a's device is online and waiting for the slot.
    e.handle_timeout(t0 + Duration::from_secs(61));
    let (state, failure) = e.child_state(&id, &a).unwrap();
    assert!(
        !(state == ChildState::Failed && matches!(failure, Some(FailureReason::DeviceOffline))),
        "a held child whose device is online failed as {failure:?}"
    );
}

/// `RetryRule` backoff: a retry comes after its wait. A child held for a slot was resumed
/// in whatever state it was then in: one that, while held, went to RetryWait (its
/// attempt's deadline passed) was retried at once when a slot opened, skipping the 1 h
/// backoff. Now holding a child whose device came back clears that deadline (the device
/// timeout starts when it goes on), and `resume_held` resumes a child only in the state
/// it was held in: the child waits through its old deadline and goes on when b ends.
#[test]
fn a_held_child_waits_through_its_old_deadline_and_goes_on_when_a_slot_opens() {
    let mut retry = RetryRule::new(Some(FailureKind::DeviceOffline), 1);
    retry.initial_backoff = Duration::from_secs(3600);
    retry.max_backoff = Duration::from_secs(3600);
    let (mut e, id, b_op, t0) = held_behind_b(|s| s.retry(retry));
    let a = DeviceId::new("a").unwrap();
    e.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(
        e.child_state(&id, &a).unwrap().0,
        ChildState::WaitingForDevice
    );
    assert!(drain_ops(&mut e).is_empty());
    // b's write is answered: b ends, a slot opens, a goes on.
    let t3 = t0 + Duration::from_secs(61);
    e.handle_event(
        t3,
        &DeviceEvent::Response {
            op: b_op.id,
            device: b_op.device.clone(),
            result: Ok(twinhub::resource::DeviceReply::Done),
        },
    );
    let sent: Vec<String> = drain_ops(&mut e)
        .iter()
        .map(|o| o.device.to_string())
        .collect();
    assert_eq!(sent, ["a"]);
    assert_eq!(e.child_state(&id, &a).unwrap().0, ChildState::InProgress);
}
