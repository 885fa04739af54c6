//! One set of transport scenarios, run against both bundled transports:
//!
//! - the LWM2M server ([`Lwm2mServer`]) with in-process devices: each device is a
//!   `coap::Endpoint` (client role for registration, server role for device management and
//!   observe) scripted as an LWM2M client, on a simulated network with a simulated clock and
//!   optional seeded loss;
//! - the in-memory transport ([`MemoryTransport`]).
//!
//! Scenarios: register, read, write (and read back), execute, observe + notify, an
//! unreachable device times out, deregister, a registration's end (the hub's, a
//! De-register) failing its requests in flight at once, and every operation ending in
//! exactly one outcome under loss.

#![cfg(all(feature = "lwm2m", feature = "memory-fleet"))]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};
use twinhub::coap::{Code, Endpoint, EndpointConfig, Event, Message, ObservationId, RequestId};
use twinhub::lwm2m::content::{ContentFormat, standard_resource_type};
use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig};
use twinhub::transport::memory::{
    DeviceSpec, FaultProfile, MemoryConfig, MemoryTransport, OfflineMode,
};
use twinhub::transport::{
    DeviceError, DeviceEvent, DeviceOp, DeviceReply, DeviceRequest, OpId, Transport, WriteMode,
};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

const BATTERY: Lwm2mPath = Lwm2mPath::resource(3, 0, 9);
const UTC_OFFSET: Lwm2mPath = Lwm2mPath::resource(3, 0, 14);
const UPDATE_TRIGGER: Lwm2mPath = Lwm2mPath::resource(1, 0, 8);

/// What a scenario needs from a transport and its simulated devices.
trait Harness {
    /// Adds a device with battery 87 and UTC offset "+01:00"; it registers soon after.
    fn add_device(&mut self, id: &DeviceId);
    /// The device goes silent: it neither answers nor de-registers.
    fn silence(&mut self, id: &DeviceId);
    /// The device de-registers (a silenced one too: it stops answering, not talking).
    fn deregister(&mut self, id: &DeviceId);
    /// A value changes on the device (observers get notified).
    fn set_value(&mut self, id: &DeviceId, path: Lwm2mPath, value: ResourceValue);
    /// The value the device holds.
    fn device_value(&self, id: &DeviceId, path: &Lwm2mPath) -> Option<ResourceValue>;
    /// Hands an operation to the transport.
    fn submit(&mut self, op: DeviceOp);
    /// Runs the world for `d` of simulated time; returns the transport's events in order.
    fn run(&mut self, d: Duration) -> Vec<DeviceEvent>;
}

// ------------------------------------------------------------------ scenarios

fn dev(name: &str) -> DeviceId {
    DeviceId::new(name).unwrap()
}

fn op(id: u64, device: &DeviceId, request: DeviceRequest) -> DeviceOp {
    DeviceOp {
        id: OpId(id),
        device: device.clone(),
        request,
    }
}

/// A harness plus the events seen but not yet consumed by a scenario.
struct World<H> {
    h: H,
    backlog: VecDeque<DeviceEvent>,
}

impl<H> Deref for World<H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.h
    }
}

impl<H> DerefMut for World<H> {
    fn deref_mut(&mut self) -> &mut H {
        &mut self.h
    }
}

/// Runs in small steps until `pick` accepts an event (at most `limit`); returns it and
/// the events before it (events after it stay in the backlog).
fn run_until<H: Harness, T>(
    w: &mut World<H>,
    limit: Duration,
    mut pick: impl FnMut(&DeviceEvent) -> Option<T>,
) -> (T, Vec<DeviceEvent>) {
    let step = Duration::from_millis(250);
    let mut seen = Vec::new();
    let mut waited = Duration::ZERO;
    loop {
        while let Some(e) = w.backlog.pop_front() {
            if let Some(t) = pick(&e) {
                return (t, seen);
            }
            seen.push(e);
        }
        if waited > limit {
            panic!("nothing matched within {limit:?}; events: {seen:?}");
        }
        let events = w.h.run(step);
        w.backlog.extend(events);
        waited += step;
    }
}

fn outcome<H: Harness>(h: &mut World<H>, id: u64) -> Result<DeviceReply, DeviceError> {
    run_until(h, Duration::from_secs(30), |e| match e {
        DeviceEvent::Response { op, result, .. } if *op == OpId(id) => Some(result.clone()),
        DeviceEvent::TimedOut { op, .. } if *op == OpId(id) => panic!("op {id} timed out"),
        _ => None,
    })
    .0
}

/// The next notification from device `d` for `at`.
fn notification<H: Harness>(h: &mut World<H>, d: &DeviceId, at: Lwm2mPath) -> Content {
    run_until(h, Duration::from_secs(10), |e| match e {
        DeviceEvent::Notification {
            device,
            path,
            content,
            ..
        } if device == d && *path == at => Some(content.clone()),
        _ => None,
    })
    .0
}

fn registered<H: Harness>(h: &mut World<H>, id: &DeviceId) {
    registered_as(h, id);
}

/// Adds `id` and waits for its registration; returns the registration id.
fn registered_as<H: Harness>(h: &mut World<H>, id: &DeviceId) -> String {
    h.add_device(id);
    run_until(h, Duration::from_secs(10), |e| match e {
        DeviceEvent::Registered {
            device,
            registration,
        } if device == id => {
            assert_eq!(registration.endpoint, id.as_str());
            Some(registration.registration_id.clone())
        }
        _ => None,
    })
    .0
}

fn scenario_register_read_write_execute<H: Harness>(h: &mut World<H>) {
    let d = dev("conf-1");
    registered(h, &d);

    h.submit(op(1, &d, DeviceRequest::Read { path: BATTERY }));
    assert_eq!(
        outcome(h, 1),
        Ok(DeviceReply::Content(Content::single(
            BATTERY,
            ResourceValue::Integer(87)
        )))
    );

    let new = ResourceValue::String("+05:00".into());
    h.submit(op(
        2,
        &d,
        DeviceRequest::Write {
            path: UTC_OFFSET,
            mode: WriteMode::Replace,
            content: Content::single(UTC_OFFSET, new.clone()),
        },
    ));
    assert_eq!(outcome(h, 2), Ok(DeviceReply::Done));
    assert_eq!(h.device_value(&d, &UTC_OFFSET), Some(new.clone()));
    h.submit(op(3, &d, DeviceRequest::Read { path: UTC_OFFSET }));
    assert_eq!(
        outcome(h, 3),
        Ok(DeviceReply::Content(Content::single(UTC_OFFSET, new)))
    );

    // Executing the Registration Update Trigger: done, and the device updates.
    h.submit(op(
        4,
        &d,
        DeviceRequest::Execute {
            path: UPDATE_TRIGGER,
            args: None,
        },
    ));
    let (_, seen) = run_until(h, Duration::from_secs(10), |e| {
        matches!(e, DeviceEvent::RegistrationUpdated { device, .. } if *device == d).then_some(())
    });
    let done = seen.iter().any(|e| {
        matches!(
            e,
            DeviceEvent::Response {
                op: OpId(4),
                result: Ok(DeviceReply::Done),
                ..
            }
        )
    }) || outcome(h, 4) == Ok(DeviceReply::Done);
    assert!(done, "execute answered: {seen:?}");

    // A resource the device does not have.
    h.submit(op(
        5,
        &d,
        DeviceRequest::Read {
            path: Lwm2mPath::resource(3, 0, 777),
        },
    ));
    assert_eq!(outcome(h, 5), Err(DeviceError::NotFound));

    // Requests whose path makes them another operation in LwM2M (a POST to a resource is
    // an Execute, to an instance a partial Write, to an object a Create): refused
    // alike, nothing done.
    let refused = [
        DeviceRequest::Execute {
            path: Lwm2mPath::instance(3, 0),
            args: None,
        },
        DeviceRequest::Execute {
            path: Lwm2mPath::object(3),
            args: None,
        },
        DeviceRequest::Write {
            path: Lwm2mPath::object(3),
            mode: WriteMode::PartialUpdate,
            content: Content::single(UTC_OFFSET, ResourceValue::String("+01:00".into())),
        },
        // A POST to a single resource is an Execute.
        DeviceRequest::Write {
            path: UTC_OFFSET,
            mode: WriteMode::PartialUpdate,
            content: Content::single(UTC_OFFSET, ResourceValue::String("+01:00".into())),
        },
    ];
    for (i, request) in refused.into_iter().enumerate() {
        let id = 6 + i as u64;
        h.submit(op(id, &d, request));
        assert_eq!(outcome(h, id), Err(DeviceError::BadRequest), "request {id}");
    }
    assert_eq!(
        h.device_value(&d, &UTC_OFFSET),
        Some(ResourceValue::String("+05:00".into()))
    );
}

fn scenario_observe_notify<H: Harness>(h: &mut World<H>) {
    let d = dev("conf-2");
    registered(h, &d);
    h.submit(op(1, &d, DeviceRequest::Observe { path: BATTERY }));
    assert_eq!(
        outcome(h, 1),
        Ok(DeviceReply::Content(Content::single(
            BATTERY,
            ResourceValue::Integer(87)
        )))
    );
    for level in [80, 79] {
        h.set_value(&d, BATTERY, ResourceValue::Integer(level));
        let c = notification(h, &d, BATTERY);
        assert_eq!(c, Content::single(BATTERY, ResourceValue::Integer(level)));
    }
}

/// The hub's sync and a job observe one path; the job's cancel ends only its own
/// observation, and the device's changes keep arriving.
fn scenario_observed_twice_cancel_once<H: Harness>(h: &mut World<H>) {
    let d = dev("conf-5");
    registered(h, &d);
    for id in [1, 2] {
        h.submit(op(id, &d, DeviceRequest::Observe { path: BATTERY }));
        assert!(outcome(h, id).is_ok());
    }
    h.submit(op(3, &d, DeviceRequest::CancelObserve { path: BATTERY }));
    assert_eq!(outcome(h, 3), Ok(DeviceReply::Done));
    h.set_value(&d, BATTERY, ResourceValue::Integer(42));
    let c = notification(h, &d, BATTERY);
    assert_eq!(c, Content::single(BATTERY, ResourceValue::Integer(42)));
}

fn scenario_unreachable_device_times_out<H: Harness>(h: &mut World<H>) {
    let d = dev("conf-3");
    registered(h, &d);
    h.silence(&d);
    h.submit(op(1, &d, DeviceRequest::Read { path: BATTERY }));
    let (id, _) = run_until(h, Duration::from_secs(200), |e| match e {
        DeviceEvent::TimedOut { op, device } if *device == d => Some(*op),
        DeviceEvent::Response {
            op: OpId(1),
            result,
            ..
        } => panic!("silent device answered {result:?}"),
        _ => None,
    });
    assert_eq!(id, OpId(1));
}

fn scenario_deregister<H: Harness>(h: &mut World<H>) {
    let d = dev("conf-4");
    registered(h, &d);
    h.deregister(&d);
    run_until(h, Duration::from_secs(10), |e| {
        matches!(e, DeviceEvent::Deregistered { device } if *device == d).then_some(())
    });
    h.submit(op(1, &d, DeviceRequest::Read { path: BATTERY }));
    assert_eq!(outcome(h, 1), Err(DeviceError::NotRegistered));
}

/// A request sent to a device that does not answer fails at once with
/// [`DeviceError::RegistrationEnded`] when the registration ends (the hub ends it, the
/// device de-registers), not with a [`DeviceEvent::TimedOut`] up to 93 s later, and
/// nothing more comes for it.
fn scenario_registration_end_fails_requests_in_flight<H: Harness>(h: &mut World<H>) {
    for hub_ends_it in [true, false] {
        let d = dev(if hub_ends_it { "conf-6" } else { "conf-7" });
        let registration_id = registered_as(h, &d);
        h.silence(&d);
        h.submit(op(1, &d, DeviceRequest::Read { path: BATTERY }));
        let seen = h.run(Duration::from_secs(2));
        assert!(
            !seen
                .iter()
                .any(|e| matches!(e, DeviceEvent::Response { op: OpId(1), .. })),
            "a silent device does not answer: {seen:?}"
        );
        if hub_ends_it {
            h.submit(op(
                2,
                &d,
                DeviceRequest::EndRegistration { registration_id },
            ));
        } else {
            h.deregister(&d);
        }
        let (result, before) = run_until(h, Duration::from_secs(5), |e| match e {
            DeviceEvent::Response {
                op: OpId(1),
                result,
                ..
            } => Some(result.clone()),
            DeviceEvent::TimedOut { op: OpId(1), .. } => panic!("op 1 timed out"),
            _ => None,
        });
        assert_eq!(result, Err(DeviceError::RegistrationEnded), "{before:?}");
        if hub_ends_it {
            assert_eq!(outcome(h, 2), Ok(DeviceReply::Done));
        } else {
            run_until(h, Duration::from_secs(5), |e| {
                matches!(e, DeviceEvent::Deregistered { device } if *device == d).then_some(())
            });
        }
        let mut later: Vec<DeviceEvent> = h.backlog.drain(..).collect();
        later.extend(h.h.run(Duration::from_secs(120)));
        assert!(
            !later.iter().any(|e| matches!(
                e,
                DeviceEvent::Response { op: OpId(1), .. }
                    | DeviceEvent::TimedOut { op: OpId(1), .. }
            )),
            "one outcome for op 1: {later:?}"
        );
    }
}

/// Under loss every operation ends in exactly one outcome, and every successful read is
/// right.
fn scenario_lossy_outcomes<H: Harness>(h: &mut World<H>) {
    let d = dev("conf-5");
    registered(h, &d);
    let n = 12u64;
    let mut outcomes: HashMap<u64, usize> = HashMap::new();
    let mut sent: HashMap<u64, usize> = HashMap::new();
    let mut refused = 0;
    let mut ok = 0;
    for i in 0..n {
        h.submit(op(100 + i, &d, DeviceRequest::Read { path: BATTERY }));
    }
    for _ in 0..(400 * 4) {
        let mut batch: Vec<DeviceEvent> = h.backlog.drain(..).collect();
        batch.extend(h.h.run(Duration::from_millis(250)));
        for e in batch {
            match e {
                DeviceEvent::Response { op, result, .. } => {
                    *outcomes.entry(op.0).or_default() += 1;
                    if matches!(
                        result,
                        Err(DeviceError::NotRegistered | DeviceError::QueueFull)
                    ) {
                        refused += 1;
                    }
                    if let Ok(reply) = result {
                        assert_eq!(
                            reply,
                            DeviceReply::Content(Content::single(
                                BATTERY,
                                ResourceValue::Integer(87)
                            ))
                        );
                        ok += 1;
                    }
                }
                DeviceEvent::TimedOut { op, .. } => *outcomes.entry(op.0).or_default() += 1,
                DeviceEvent::Sent { op, .. } => {
                    assert!(
                        !outcomes.contains_key(&op.0),
                        "op {} reported sent after its outcome",
                        op.0
                    );
                    *sent.entry(op.0).or_default() += 1;
                }
                _ => {}
            }
        }
        if outcomes.len() as u64 == n {
            break;
        }
    }
    assert_eq!(outcomes.len() as u64, n, "every op ends: {outcomes:?}");
    assert!(
        outcomes.values().all(|&c| c == 1),
        "exactly once: {outcomes:?}"
    );
    // Every request the transport did not refuse itself left: one Sent each, lost or not.
    assert_eq!(sent.len() as u64 + refused, n, "every op sent: {sent:?}");
    assert!(sent.values().all(|&c| c == 1), "sent once: {sent:?}");
    assert!(ok > 0, "some reads succeed under 20% loss");
}

/// Every request that leaves for a registered device is reported once as `Sent`, before
/// its answer; one the transport refuses itself (no registration) and the ending of a
/// registration are not.
fn scenario_sent_before_the_answer<H: Harness>(h: &mut World<H>) {
    let d = dev("conf-6");
    registered(h, &d);
    h.submit(op(1, &d, DeviceRequest::Read { path: BATTERY }));
    let (_, seen) = run_until(h, Duration::from_secs(30), |e| match e {
        DeviceEvent::Response { op: OpId(1), .. } => Some(()),
        DeviceEvent::TimedOut { op: OpId(1), .. } => panic!("op 1 timed out"),
        _ => None,
    });
    let sent: Vec<&DeviceEvent> = seen
        .iter()
        .filter(|e| matches!(e, DeviceEvent::Sent { .. }))
        .collect();
    assert_eq!(
        sent,
        [&DeviceEvent::Sent {
            op: OpId(1),
            device: d.clone()
        }],
        "one Sent, before the answer: {seen:?}"
    );
    h.submit(op(2, &dev("nobody"), DeviceRequest::Read { path: BATTERY }));
    let (_, seen) = run_until(h, Duration::from_secs(10), |e| match e {
        DeviceEvent::Response {
            op: OpId(2),
            result,
            ..
        } => {
            assert_eq!(result, &Err(DeviceError::NotRegistered));
            Some(())
        }
        _ => None,
    });
    assert!(
        !seen
            .iter()
            .chain(h.backlog.iter())
            .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(2), .. })),
        "a refused request never left: {seen:?}"
    );
    // A later answer carries no second Sent for op 1.
    let later = h.h.run(Duration::from_secs(1));
    assert!(
        !later
            .iter()
            .chain(h.backlog.iter())
            .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(1), .. })),
        "{later:?}"
    );
}

// ------------------------------------------------------------------ LWM2M server harness

/// A scripted LWM2M client on a CoAP endpoint of its own.
struct SimDevice {
    endpoint: Endpoint,
    addr: SocketAddr,
    values: BTreeMap<Lwm2mPath, ResourceValue>,
    location: Option<String>,
    observers: Vec<(ObservationId, Lwm2mPath)>,
    silent: bool,
    register: Option<RequestId>,
}

struct Lwm2mHarness {
    server: Lwm2mServer,
    server_addr: SocketAddr,
    devices: HashMap<DeviceId, SimDevice>,
    now: Instant,
    loss: f64,
    rng: u64,
    next_port: u16,
}

impl Lwm2mHarness {
    fn new(loss: f64, seed: u64) -> Self {
        Lwm2mHarness {
            server: Lwm2mServer::with_seed(
                ServerConfig {
                    auto_provision: true,
                    ..ServerConfig::default()
                },
                seed,
            ),
            server_addr: "10.0.0.1:5683".parse().unwrap(),
            devices: HashMap::new(),
            now: Instant::now(),
            loss,
            rng: seed | 1,
            next_port: 40_000,
        }
    }

    fn lost(&mut self) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % 10_000) as f64 / 10_000.0 < self.loss
    }

    fn device_by_addr(&mut self, addr: SocketAddr) -> Option<&mut SimDevice> {
        self.devices.values_mut().find(|d| d.addr == addr)
    }

    /// Moves datagrams both ways and lets devices react, until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(t) = self.server.poll_transmit() {
                moved = true;
                if self.lost() {
                    continue;
                }
                let now = self.now;
                let from = self.server_addr;
                if let Some(d) = self.device_by_addr(t.destination)
                    && !d.silent
                {
                    d.endpoint.handle_datagram(now, from, &t.payload);
                }
            }
            let now = self.now;
            let server_addr = self.server_addr;
            let mut outgoing = Vec::new();
            for d in self.devices.values_mut() {
                d.react(now, server_addr);
                while let Some(t) = d.endpoint.poll_transmit() {
                    if !d.silent {
                        outgoing.push((d.addr, t.payload));
                    }
                }
            }
            for (from, bytes) in outgoing {
                moved = true;
                if !self.lost() {
                    self.server.handle_datagram(self.now, from, &bytes);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the simulated network never settled");
    }
}

impl SimDevice {
    fn request(&mut self, now: Instant, server: SocketAddr, mut m: Message) -> Option<RequestId> {
        m.mtype = twinhub::coap::MessageType::Confirmable;
        self.endpoint.send_request(now, server, m).ok()
    }

    fn text(&self, path: &Lwm2mPath) -> Option<Message> {
        let v = self.values.get(path)?;
        let mut m = Message::response(Code::CONTENT);
        m.set_content_format(twinhub::coap::ContentFormat(ContentFormat::Text.code()));
        m.payload = v.to_string().into_bytes();
        Some(m)
    }

    /// Handles the endpoint's events: registration answers and the server's requests.
    fn react(&mut self, now: Instant, server: SocketAddr) {
        while let Some(e) = self.endpoint.poll_event() {
            match e {
                Event::Response { id, response } if Some(id) == self.register => {
                    let loc: Vec<&str> = response.location_path().collect();
                    self.location = Some(loc.join("/"));
                }
                Event::Request { id, request, .. } => {
                    let path: Option<Lwm2mPath> =
                        format!("/{}", request.uri_path_string()).parse().ok();
                    let Some(path) = path else {
                        let _ =
                            self.endpoint
                                .respond(now, id, Message::response(Code::BAD_REQUEST));
                        continue;
                    };
                    let answer = match request.code {
                        Code::GET => match self.text(&path) {
                            Some(m) => {
                                if let Ok(Some(obs)) = self.endpoint.respond_and_observe(now, id, m)
                                {
                                    self.observers.push((obs, path));
                                }
                                continue;
                            }
                            None => Message::response(Code::NOT_FOUND),
                        },
                        Code::PUT => {
                            let cf = request.content_format().map(|c| c.0).unwrap_or(0);
                            let f = ContentFormat::from_code(cf).unwrap_or(ContentFormat::Text);
                            match twinhub::lwm2m::content::decode(
                                f,
                                &request.payload,
                                &path,
                                &standard_resource_type,
                            ) {
                                Ok(c) => {
                                    for (p, v) in c.values {
                                        self.values.insert(p, v);
                                    }
                                    Message::response(Code::CHANGED)
                                }
                                Err(_) => Message::response(Code::BAD_REQUEST),
                            }
                        }
                        Code::POST if path == UPDATE_TRIGGER => {
                            if let Some(loc) = self.location.clone() {
                                let m = Message::request(Code::POST, &loc);
                                self.request(now, server, m);
                            }
                            Message::response(Code::CHANGED)
                        }
                        _ => Message::response(Code::METHOD_NOT_ALLOWED),
                    };
                    let _ = self.endpoint.respond(now, id, answer);
                }
                _ => {}
            }
        }
    }
}

impl Harness for Lwm2mHarness {
    fn add_device(&mut self, id: &DeviceId) {
        self.next_port += 1;
        let mut d = SimDevice {
            endpoint: Endpoint::new_seeded(EndpointConfig::default(), self.next_port as u64),
            addr: SocketAddr::from(([10, 0, 0, 2], self.next_port)),
            values: BTreeMap::from([
                (BATTERY, ResourceValue::Integer(87)),
                (UTC_OFFSET, ResourceValue::String("+01:00".into())),
            ]),
            location: None,
            observers: Vec::new(),
            silent: false,
            register: None,
        };
        let mut m = Message::request(Code::POST, "rd");
        for q in [
            format!("ep={id}"),
            "lt=300".into(),
            "lwm2m=1.0".into(),
            "b=U".into(),
        ] {
            m.add_uri_query(&q);
        }
        m.payload = b"</1/0>,</3/0>".to_vec();
        d.register = d.request(self.now, self.server_addr, m);
        self.devices.insert(id.clone(), d);
    }

    fn silence(&mut self, id: &DeviceId) {
        self.devices.get_mut(id).unwrap().silent = true;
    }

    fn deregister(&mut self, id: &DeviceId) {
        let (now, server) = (self.now, self.server_addr);
        let d = self.devices.get_mut(id).unwrap();
        let loc = d.location.clone().expect("registered");
        d.request(now, server, Message::request(Code::DELETE, &loc));
        if d.silent {
            // Past the network's silence filter: the De-register goes out.
            let out: Vec<Vec<u8>> = std::iter::from_fn(|| d.endpoint.poll_transmit())
                .map(|t| t.payload)
                .collect();
            let from = d.addr;
            for bytes in out {
                self.server.handle_datagram(now, from, &bytes);
            }
        }
    }

    fn set_value(&mut self, id: &DeviceId, path: Lwm2mPath, value: ResourceValue) {
        let now = self.now;
        let d = self.devices.get_mut(id).unwrap();
        d.values.insert(path, value);
        let targets: Vec<ObservationId> = d
            .observers
            .iter()
            .filter(|(_, p)| *p == path)
            .map(|(o, _)| *o)
            .collect();
        for obs in targets {
            if let Some(mut m) = d.text(&path) {
                // Confirmable, so a lost notification is retransmitted.
                m.mtype = twinhub::coap::MessageType::Confirmable;
                let _ = d.endpoint.notify(now, obs, m);
            }
        }
    }

    fn device_value(&self, id: &DeviceId, path: &Lwm2mPath) -> Option<ResourceValue> {
        self.devices.get(id)?.values.get(path).cloned()
    }

    fn submit(&mut self, op: DeviceOp) {
        self.server.submit(self.now, op);
    }

    fn run(&mut self, d: Duration) -> Vec<DeviceEvent> {
        let end = self.now + d;
        let mut events = Vec::new();
        loop {
            self.settle();
            events.extend(std::iter::from_fn(|| self.server.poll_event()));
            let mut next = self.server.poll_timeout();
            for dv in self.devices.values_mut() {
                if let Some(t) = dv.endpoint.poll_timeout() {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
            }
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    self.server.handle_timeout(now);
                    for dv in self.devices.values_mut() {
                        dv.endpoint.handle_timeout(now);
                    }
                }
                _ => break,
            }
        }
        self.now = end;
        self.server.handle_timeout(end);
        for dv in self.devices.values_mut() {
            dv.endpoint.handle_timeout(end);
        }
        self.settle();
        events.extend(std::iter::from_fn(|| self.server.poll_event()));
        events
    }
}

// ------------------------------------------------------------------ in-memory harness

struct MemoryHarness {
    fleet: MemoryTransport,
    now: Instant,
}

impl MemoryHarness {
    fn new(seed: u64) -> Self {
        MemoryHarness {
            fleet: MemoryTransport::new(MemoryConfig::with_seed(seed)),
            now: Instant::now(),
        }
    }
}

fn memory_faults(loss: f64) -> FaultProfile {
    FaultProfile {
        loss,
        ..FaultProfile::default()
    }
}

impl Harness for MemoryHarness {
    fn add_device(&mut self, id: &DeviceId) {
        self.add_device_with(id, 0.0);
    }

    fn silence(&mut self, id: &DeviceId) {
        self.fleet
            .take_offline(self.now, id, OfflineMode::Silent, None)
            .unwrap();
    }

    fn deregister(&mut self, id: &DeviceId) {
        self.fleet
            .take_offline(self.now, id, OfflineMode::Deregister, None)
            .unwrap();
    }

    fn set_value(&mut self, id: &DeviceId, path: Lwm2mPath, value: ResourceValue) {
        self.fleet.set_value(self.now, id, path, value).unwrap();
    }

    fn device_value(&self, id: &DeviceId, path: &Lwm2mPath) -> Option<ResourceValue> {
        self.fleet.value(id, path).cloned()
    }

    fn submit(&mut self, op: DeviceOp) {
        self.fleet.submit(self.now, op);
    }

    fn run(&mut self, d: Duration) -> Vec<DeviceEvent> {
        let end = self.now + d;
        let mut events: Vec<DeviceEvent> = std::iter::from_fn(|| self.fleet.poll_event()).collect();
        while let Some(t) = self.fleet.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.fleet.handle_timeout(self.now);
            events.extend(std::iter::from_fn(|| self.fleet.poll_event()));
        }
        self.now = end;
        self.fleet.handle_timeout(end);
        events.extend(std::iter::from_fn(|| self.fleet.poll_event()));
        events
    }
}

impl MemoryHarness {
    fn add_device_with(&mut self, id: &DeviceId, loss: f64) {
        let spec = DeviceSpec::new(id.clone())
            .battery_level(87)
            .value(UTC_OFFSET, ResourceValue::String("+01:00".into()))
            .faults(memory_faults(loss));
        self.fleet.add_device(self.now, spec).unwrap();
    }
}

/// The in-memory fleet with every device lossy.
struct LossyMemoryHarness(MemoryHarness, f64);

impl Harness for LossyMemoryHarness {
    fn add_device(&mut self, id: &DeviceId) {
        self.0.add_device_with(id, self.1);
    }
    fn silence(&mut self, id: &DeviceId) {
        self.0.silence(id)
    }
    fn deregister(&mut self, id: &DeviceId) {
        self.0.deregister(id)
    }
    fn set_value(&mut self, id: &DeviceId, path: Lwm2mPath, value: ResourceValue) {
        self.0.set_value(id, path, value)
    }
    fn device_value(&self, id: &DeviceId, path: &Lwm2mPath) -> Option<ResourceValue> {
        self.0.device_value(id, path)
    }
    fn submit(&mut self, op: DeviceOp) {
        self.0.submit(op)
    }
    fn run(&mut self, d: Duration) -> Vec<DeviceEvent> {
        self.0.run(d)
    }
}

// ------------------------------------------------------------------ the matrix

fn world<H: Harness>(h: H) -> World<H> {
    World {
        h,
        backlog: VecDeque::new(),
    }
}

macro_rules! conformance {
    ($($name:ident: $scenario:ident;)*) => {
        mod lwm2m_server {
            use super::*;
            $(#[test] fn $name() { $scenario(&mut world(Lwm2mHarness::new(0.0, 11))); })*
        }
        mod memory {
            use super::*;
            $(#[test] fn $name() { $scenario(&mut world(MemoryHarness::new(11))); })*
        }
    };
}

conformance! {
    register_read_write_execute: scenario_register_read_write_execute;
    observe_notify: scenario_observe_notify;
    observed_twice_cancel_once: scenario_observed_twice_cancel_once;
    unreachable_device_times_out: scenario_unreachable_device_times_out;
    deregister: scenario_deregister;
    registration_end_fails_requests_in_flight: scenario_registration_end_fails_requests_in_flight;
    sent_before_the_answer: scenario_sent_before_the_answer;
}

#[test]
fn lwm2m_server_lossy_outcomes() {
    // Registration itself rides CoAP retransmission; 20% loss each way.
    for seed in [3, 5, 8] {
        scenario_lossy_outcomes(&mut world(Lwm2mHarness::new(0.2, seed)));
    }
}

#[test]
fn memory_lossy_outcomes() {
    for seed in [3, 5, 8] {
        scenario_lossy_outcomes(&mut world(LossyMemoryHarness(
            MemoryHarness::new(seed),
            0.2,
        )));
    }
}

#[test]
fn lwm2m_server_scenarios_hold_under_loss() {
    // With retransmission, the functional scenarios hold on a lossy network too.
    for seed in [21, 22] {
        scenario_register_read_write_execute(&mut world(Lwm2mHarness::new(0.1, seed)));
        scenario_observe_notify(&mut world(Lwm2mHarness::new(0.1, seed)));
    }
}
