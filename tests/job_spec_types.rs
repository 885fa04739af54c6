//! A write job whose value can never fit its standard resource's type is refused at
//! creation (`SpecError::ValueDoesNotFit`, by `JobSpec::validate`: through
//! `Hub::create_job` and a `JobEngine` alone, in every build), and nothing is created;
//! before, it was created and failed each child with `rejected:badPayload` at run time.
//! Values the server converts, and values at resources the standard table does not know,
//! still go; a job an older build stored with such a value still loads. No cargo feature
//! is needed (the check and the table are the domain's): run it with
//! `--no-default-features` too.

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Instant;
use twinhub::hub::{DeviceLink, Hub, HubConfig};
use twinhub::job::{EngineConfig, JobEngine, JobId, JobSpec, JobType, Misfit, SpecError};
use twinhub::registry::Registry;
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest};
use twinhub::twin::Twin;
use twinhub::{DeviceId, Lwm2mPath, ResourceType, ResourceValue, Timestamp};

mod job_support;
use job_support::{Rows, drain, registered};

/// A transport of the test's: it keeps what the hub submits and answers nothing.
struct Silent(Mutex<Vec<DeviceOp>>);

impl DeviceLink for Silent {
    fn submit(&self, op: DeviceOp) {
        self.0.lock().unwrap().push(op);
    }
    fn stop(&self) {}
}

fn pump() -> DeviceId {
    DeviceId::new("pump").unwrap()
}

/// A hub over [`Silent`] with one device, and the sending end of its event channel
/// (kept: dropping it is the transport ending).
fn hub() -> (Hub, mpsc::Sender<DeviceEvent>) {
    let (events, rx) = mpsc::channel();
    let mut registry = Registry::new();
    registry.create(Twin::new(pump())).unwrap();
    let link = Box::new(Silent(Mutex::new(Vec::new())));
    (Hub::start(registry, link, rx, HubConfig::default()), events)
}

fn write_job(id: &str, path: Lwm2mPath, value: ResourceValue) -> JobSpec {
    let job = JobType::WriteDeviceProperties {
        values: vec![(path, value)],
    };
    JobSpec::new(JobId::new(id).unwrap(), job, vec![pump()])
}

#[test]
fn values_that_cannot_fit_a_standard_resource_are_refused_and_nothing_is_created() {
    let (hub, _events) = hub();
    let priority_order = Lwm2mPath::resource(1, 0, 13); // Unsigned Integer
    let battery = Lwm2mPath::resource(3, 0, 9); // Integer
    let lifetime = Lwm2mPath::resource(1, 0, 1); // Integer
    let refused = [
        (
            write_job("negative", priority_order, ResourceValue::Integer(-1)),
            priority_order,
            ResourceType::UnsignedInteger,
            Misfit::OutOfRange,
        ),
        (
            write_job("text", battery, ResourceValue::String("full".into())),
            battery,
            ResourceType::Integer,
            Misfit::OtherKind,
        ),
        (
            write_job("fraction", lifetime, ResourceValue::Float(60.5)),
            lifetime,
            ResourceType::Integer,
            Misfit::OtherKind,
        ),
    ];
    for (spec, path, expected, reason) in refused {
        let err = hub.create_job(spec.clone()).unwrap_err();
        assert_eq!(
            err,
            SpecError::ValueDoesNotFit {
                path,
                expected,
                reason
            }
        );
        assert!(err.to_string().contains(&path.to_string()), "{err}");
        assert!(hub.job(&spec.id).is_none());
    }
    assert!(hub.job_records().is_empty());
    // The first value that does not fit is named, after values that fit.
    let spec = JobSpec::new(
        JobId::new("second").unwrap(),
        JobType::WriteDeviceProperties {
            values: vec![
                (lifetime, ResourceValue::Integer(60)),
                (battery, ResourceValue::Boolean(true)),
            ],
        },
        vec![pump()],
    );
    assert!(matches!(
        hub.create_job(spec),
        Err(SpecError::ValueDoesNotFit { path, .. }) if path == battery
    ));
    // A non-finite float is still the parameters' error.
    assert!(matches!(
        hub.create_job(write_job("nan", lifetime, ResourceValue::Float(f64::NAN))),
        Err(SpecError::InvalidParameter { name: "values", .. })
    ));
    assert!(hub.job_records().is_empty());
}

#[test]
fn values_that_fit_after_conversion_or_at_unknown_resources_are_created() {
    let (hub, _events) = hub();
    let accepted = [
        // An unsigned integer in an Integer resource (Lifetime).
        write_job(
            "unsigned",
            Lwm2mPath::resource(1, 0, 1),
            ResourceValue::UnsignedInteger(60),
        ),
        // An integer in a Time resource (Current Time).
        write_job(
            "time",
            Lwm2mPath::resource(3, 0, 13),
            ResourceValue::Integer(1_700_000_000),
        ),
        // A number in a String resource (Timezone) becomes its text.
        write_job(
            "zone",
            Lwm2mPath::resource(3, 0, 15),
            ResourceValue::Float(1.5),
        ),
        // IPSO Temperature's Sensor Value is not in the standard table: any finite value.
        write_job(
            "ipso",
            Lwm2mPath::resource(3303, 0, 5700),
            ResourceValue::String("warm".into()),
        ),
    ];
    for spec in accepted {
        hub.create_job(spec.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", spec.id));
        assert!(hub.job(&spec.id).is_some());
    }
}

/// The engine alone checks the types too (before, it took the job, and only the hub with
/// the `lwm2m` feature checked): `-1` at an Unsigned Integer resource is refused, in
/// every build, and nothing is created; a parameter's problem still comes first.
#[test]
fn the_engine_alone_checks_types() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::now());
    let priority_order = Lwm2mPath::resource(1, 0, 13); // Unsigned Integer
    let spec = write_job("negative", priority_order, ResourceValue::Integer(-1));
    assert_eq!(
        engine.create(t0, spec.clone()),
        Err(SpecError::ValueDoesNotFit {
            path: priority_order,
            expected: ResourceType::UnsignedInteger,
            reason: Misfit::OutOfRange,
        })
    );
    assert!(matches!(
        engine.dry_run(&spec),
        Err(SpecError::ValueDoesNotFit { .. })
    ));
    assert!(engine.job(&spec.id).is_none());
    // A zero device timeout is the parameters' error, before the value's type.
    let bad_timeout = spec.clone().device_timeout(std::time::Duration::ZERO);
    assert!(matches!(
        engine.create(t0, bad_timeout),
        Err(SpecError::InvalidParameter {
            name: "deviceTimeout",
            ..
        })
    ));
    // A value that fits (converted to the resource's type when sent) is taken.
    engine
        .create(
            t0,
            write_job("positive", priority_order, ResourceValue::Integer(2)),
        )
        .unwrap();
}

/// A job stored by an older build, which did not check the types at creation, with a
/// value that can never fit: restoring does not check the types again (only the
/// parameters), so the job loads and its write goes out as before (the server or the
/// device refuses it at run time).
#[test]
fn a_stored_job_whose_value_does_not_fit_still_loads() {
    let t0 = Instant::now();
    let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::now());
    engine.enable_journal();
    let priority_order = Lwm2mPath::resource(1, 0, 13); // Unsigned Integer
    let spec = write_job("old", priority_order, ResourceValue::Integer(7));
    engine.create(t0, spec.clone()).unwrap();
    let mut rows = Rows::default();
    rows.apply(engine.take_journal());
    // What an older build would have stored: the same job with `-1`.
    let (fit, misfit) = (
        r#"{"type":"integer","value":7}"#,
        r#"{"type":"integer","value":-1}"#,
    );
    for bytes in rows.parents.values_mut() {
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text.matches(fit).count(), 1, "{text}");
        *bytes = text.replace(fit, misfit).into_bytes();
    }
    // `restore` panics if the rows do not restore (it would be a `JobRowError`).
    let mut restored = rows.restore(t0);
    assert!(restored.job(&spec.id).is_some());
    restored.handle_event(t0, &registered(&pump()));
    let sent = drain(&mut restored);
    let [
        DeviceOp {
            request: DeviceRequest::Write { content, .. },
            ..
        },
    ] = &sent[..]
    else {
        panic!("{sent:?}")
    };
    assert_eq!(
        content.get(&priority_order),
        Some(&ResourceValue::Integer(-1))
    );
}

/// Through the hub over the simulated fleet, a write of `-1` to an Unsigned Integer
/// resource fails as the LwM2M server fails it, with `BadPayload` naming the path, and
/// the device keeps its value; an integer written to a Time resource arrives as a time.
#[cfg(feature = "memory-fleet")]
#[test]
fn the_memory_fleet_fits_a_hub_write_as_the_server_does() {
    use std::time::Duration;
    use twinhub::Content;
    use twinhub::hub::RequestError;
    use twinhub::resource::DeviceError;
    use twinhub::transport::memory::{DeviceSpec, MemoryConfig, MemoryTransport};
    use twinhub::transport::{DeviceReply, DeviceRequest, WriteMode};

    let order = Lwm2mPath::resource(1, 0, 13); // Unsigned Integer
    let time = Lwm2mPath::resource(3, 0, 13); // Time
    let mut fleet = MemoryTransport::new(MemoryConfig::with_seed(5));
    let spec = DeviceSpec::new(pump()).value(order, ResourceValue::UnsignedInteger(1));
    fleet.add_device(Instant::now(), spec).unwrap();
    let mut registry = Registry::new();
    registry.create(Twin::new(pump())).unwrap();
    let hub = Hub::with_transport(fleet, registry, HubConfig::default());
    let write = |path: Lwm2mPath, value: ResourceValue| DeviceRequest::Write {
        path,
        mode: WriteMode::Replace,
        content: Content::single(path, value),
    };
    let read = |path: Lwm2mPath| {
        hub.request(&pump(), DeviceRequest::Read { path })
            .wait(Duration::from_secs(10))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while read(order).is_err() {
        assert!(Instant::now() < deadline, "the device never registered");
        std::thread::sleep(Duration::from_millis(10));
    }
    let refused = hub
        .request(&pump(), write(order, ResourceValue::Integer(-1)))
        .wait(Duration::from_secs(10));
    let Err(RequestError::Device(DeviceError::BadPayload(message))) = refused else {
        panic!("{refused:?}")
    };
    assert!(message.contains("/1/0/13"), "{message}");
    assert_eq!(
        read(order),
        Ok(DeviceReply::Content(Content::single(
            order,
            ResourceValue::UnsignedInteger(1)
        )))
    );
    let written = hub
        .request(&pump(), write(time, ResourceValue::Integer(1_700_000_000)))
        .wait(Duration::from_secs(10));
    assert_eq!(written, Ok(DeviceReply::Done));
    assert_eq!(
        read(time),
        Ok(DeviceReply::Content(Content::single(
            time,
            ResourceValue::Time(1_700_000_000)
        )))
    );
    hub.stop();
}
