//! Hostile second pass over stop 48's changes: job history time literals, borrowed rows,
//! writes checked against resource types, and the registry fuzz body. Each test states
//! the promise it checks; those that failed on the code as reviewed say so.

use twinhub::Timestamp;
use twinhub::job::{HistorySnapshot, JobKind, JobRecord, JobStatus};
use twinhub::query::{QueryOptions, execute, parse};

const WALL0: u64 = 1_461_931_200_000; // 2016-04-29T12:00:00.000Z

/// A finished reboot child of job `p` that started at `start` (ms since the epoch).
fn record(id: &str, start: u64) -> JobRecord {
    JobRecord {
        job_id: id.to_owned(),
        parent_job_id: "p".to_owned(),
        device_id: None,
        kind: JobKind::RebootDevice,
        status: JobStatus::Completed,
        start_time_utc: Some(Timestamp::from_millis(start)),
        end_time_utc: None,
        failure_reason: None,
        status_message: String::new(),
    }
}

fn comparison(op: &str, value: &str) -> String {
    format!(
        r#"{{"type": "comparison", "comparisonOperator": "{op}",
            "property": {{"name": "StartTimeUtc", "type": "default"}}, "value": {value}}}"#
    )
}

/// The ids of the records matching `StartTimeUtc <op> <value>` (`value` as JSON), sorted.
fn matching(s: &HistorySnapshot, op: &str, value: &str) -> Vec<String> {
    ids(s, &comparison(op, value))
}

/// The ids of the records matching `filter`, sorted.
fn ids(s: &HistorySnapshot, filter: &str) -> Vec<String> {
    let q = parse(&format!(r#"{{"filter": {filter}}}"#)).unwrap();
    let page = execute(s, &q, &QueryOptions::page(100)).unwrap();
    let v = serde_json::to_value(&page).unwrap();
    let mut ids: Vec<String> = v["Result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["jobId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

// Promise (history_query module docs): a literal `YYYY-MM-DDTHH:MM:SS[.fraction]` then `Z`
// or an offset compares as the time it names. RFC 3339 bounds no fraction's length
// (`time-secfrac = "." 1*DIGIT`), but `Timestamp` reads at most nine digits, so a literal
// with ten or more compared as a string with the indexed form: `eq` with ten zeros missed
// the record at that very millisecond, `lt ...00.0000000000001Z` left it out ('Z' sorts
// above '0'), and `gt ...00.999999999999Z` took in the record at .999. Failed on the code
// as reviewed; fixed in `time_comparand` (digits past the ninth are dropped before
// parsing, and still count as a sub-millisecond part).
#[test]
fn time_literals_with_long_fractions_compare_as_times() {
    let unstarted = JobRecord {
        start_time_utc: None,
        ..record("r3", 0)
    };
    let s = HistorySnapshot::new(vec![
        record("r0", WALL0),
        record("r1", WALL0 + 999),
        record("r2", WALL0 + 1000),
        unstarted,
    ]);
    let zeros = "0".repeat(27);
    for (op, lit, want) in [
        (
            "eq",
            "2016-04-29T12:00:00.0000000000Z".to_owned(),
            &["r0"][..],
        ),
        (
            "eq",
            format!("2016-04-29T12:00:00.999{zeros}Z"),
            &["r1"][..],
        ),
        (
            "lt",
            "2016-04-29T12:00:00.0000000000001Z".to_owned(),
            &["r0"][..],
        ),
        (
            "lte",
            "2016-04-29T12:00:00.0000000000001Z".to_owned(),
            &["r0"][..],
        ),
        (
            "gt",
            "2016-04-29T12:00:00.999999999999Z".to_owned(),
            &["r2"][..],
        ),
        (
            "gte",
            "2016-04-29T12:00:00.999999999999Z".to_owned(),
            &["r2"][..],
        ),
        (
            "eq",
            "2016-04-29T12:00:00.999999999999Z".to_owned(),
            &[][..],
        ),
        (
            "ne",
            "2016-04-29T12:00:00.999999999999Z".to_owned(),
            &["r0", "r1", "r2"][..],
        ),
        (
            "gte",
            "2016-04-29T13:00:00.0000000000+01:00".to_owned(),
            &["r0", "r1", "r2"][..],
        ),
        (
            "lt",
            format!("2016-04-29T12:00:01.{zeros}1Z"),
            &["r0", "r1", "r2"][..],
        ),
    ] {
        assert_eq!(matching(&s, op, &format!("\"{lit}\"")), want, "{op} {lit}");
    }
    // In a list: an exact long literal is its time, a sub-millisecond one equals nothing.
    let list = r#"["2016-04-29T12:00:00.9990000000Z", "2016-04-29T12:00:01.0000000001Z"]"#;
    assert_eq!(matching(&s, "in", list), ["r1"]);
    assert_eq!(matching(&s, "nin", list), ["r0", "r2"]);
    // `not` around a literal no stored time equals is `not` around any comparison that
    // matches nothing: every record, those without the time too.
    for lit in [
        "2016-04-29T12:00:00.0005Z",
        "2016-04-29T12:00:00.0000000000001Z",
        "2016-04-29T12:00:00.5Z",
    ] {
        let not = format!(
            r#"{{"type": "logical", "logicalOperator": "not", "filters": [{}]}}"#,
            comparison("eq", &format!("\"{lit}\""))
        );
        assert_eq!(ids(&s, &not), ["r0", "r1", "r2", "r3"], "not eq {lit}");
    }
    // Still no time: a fraction without digits, a date alone.
    assert_eq!(
        matching(&s, "eq", r#""2016-04-29T12:00:00.Z""#),
        Vec::<String>::new()
    );
    assert_eq!(
        matching(&s, "gt", r#""2016-04-29""#),
        ["r0", "r1", "r2"],
        "compared as strings"
    );
}

// Promise (`JobType::ReadDeviceProperties`): a NaN or infinity the device answers for a
// path the job reads fails the child (`rejected:badPayload`); the engine's own test sends
// a value beside it unasked, "what it sent goes on". A NaN in such an unasked value
// failed the child although the property read was refreshed. Failed on the code as
// reviewed; the check now looks only at values at or under the paths the step asked for.
#[test]
fn a_read_fails_only_for_a_nan_at_a_path_it_read() {
    use std::time::Instant;
    use twinhub::job::{ChildState, EngineConfig, JobEngine, JobId, JobSpec, JobType};
    use twinhub::transport::{DeviceEvent, DeviceReply};
    use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue as V};

    let temp = Lwm2mPath::resource(3303, 0, 5700);
    let unasked = Lwm2mPath::resource(3303, 0, 5601);
    let run = |values: Vec<(Lwm2mPath, V)>| {
        let t0 = Instant::now();
        let mut e = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(WALL0));
        let dev = DeviceId::new("d").unwrap();
        let id = JobId::new("read").unwrap();
        let job = JobType::ReadDeviceProperties { paths: vec![temp] };
        e.create(t0, JobSpec::new(id.clone(), job, vec![dev.clone()]))
            .unwrap();
        let op = e.poll_op().expect("the read");
        e.handle_event(
            t0,
            &DeviceEvent::Response {
                op: op.id,
                device: dev.clone(),
                result: Ok(DeviceReply::Content(Content { values })),
            },
        );
        let update = e.poll_twin_update().expect("what the device answered");
        assert_eq!(update.content.values.len(), 2);
        let (state, reason) = e.child_state(&id, &dev).unwrap();
        (state, reason.map(|r| r.to_string()))
    };
    let (state, reason) = run(vec![(temp, V::Float(21.5)), (unasked, V::Float(f64::NAN))]);
    assert_eq!((state, reason), (ChildState::Succeeded, None));
    // The control: the same answer with the NaN at the path read fails.
    let (state, reason) = run(vec![(temp, V::Float(f64::NAN)), (unasked, V::Float(21.5))]);
    assert_eq!(state, ChildState::Failed);
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("/3303/0/5700")),
        "{reason:?}"
    );
}

#[cfg(feature = "lwm2m")]
mod server_sim;

/// Writes the library makes itself and writes that were right before the type check
/// (stop 48) still go out, and the device reads what was asked.
#[cfg(feature = "lwm2m")]
mod writes {
    use super::server_sim::{self, registered_pump, submit_write};
    use std::time::Instant;
    use twinhub::lwm2m::content::{ContentFormat as F, decode, standard_resource_type};
    use twinhub::lwm2m::server::Lwm2mServer;
    use twinhub::transport::{DeviceError, DeviceRequest, NotificationAttributes, WriteMode};
    use twinhub::{Content, Lwm2mPath, ResourceValue as V};

    /// A server with the standard types and a device `pump` that announced `ct`.
    fn registered(ct: &str) -> (Lwm2mServer, Instant) {
        registered_pump(server_sim::server(), ct)
    }

    /// What the device reads from `m`, sorted by path.
    fn reads(m: &twinhub::coap::Message, base: &Lwm2mPath) -> Content {
        let f = F::from_code(m.content_format().unwrap().0).unwrap();
        let mut c = decode(f, &m.payload, base, &standard_resource_type).unwrap();
        c.values.sort_by_key(|(p, _)| *p);
        c
    }

    fn sorted(mut c: Content) -> Content {
        c.values.sort_by_key(|(p, _)| *p);
        c
    }

    // Promise (server module docs, `fit_to_types`): only values that do not fit their
    // resource's type are refused. The hub's own writes (Mute Send, the firmware package
    // URI and its reset, the Config object), a Create, a composite write, an instance
    // write, Opaque, Time, ObjectLink, a multi-instance resource and resources no resolver
    // knows still go out, in every format, and read back as asked. Held.
    #[test]
    fn writes_that_were_right_still_go_out() {
        let unknown = Lwm2mPath::resource(3303, 0, 5700);
        let single = |path: Lwm2mPath, v: V| DeviceRequest::Write {
            path,
            mode: WriteMode::Replace,
            content: Content::single(path, v),
        };
        // (request, the base its payload is read at, what the device must read)
        let mut cases: Vec<(DeviceRequest, Lwm2mPath, Content)> = vec![
            (
                single(Lwm2mPath::resource(1, 0, 23), V::Boolean(true)),
                Lwm2mPath::resource(1, 0, 23),
                Content::single(Lwm2mPath::resource(1, 0, 23), V::Boolean(true)),
            ),
            (
                single(Lwm2mPath::resource(5, 0, 1), V::String(String::new())),
                Lwm2mPath::resource(5, 0, 1),
                Content::single(Lwm2mPath::resource(5, 0, 1), V::String(String::new())),
            ),
            (
                single(Lwm2mPath::resource(5, 0, 0), V::Opaque(vec![0, 255, 7])),
                Lwm2mPath::resource(5, 0, 0),
                Content::single(Lwm2mPath::resource(5, 0, 0), V::Opaque(vec![0, 255, 7])),
            ),
            (
                single(Lwm2mPath::resource(3, 0, 13), V::Integer(1_700_000_000)),
                Lwm2mPath::resource(3, 0, 13),
                Content::single(Lwm2mPath::resource(3, 0, 13), V::Time(1_700_000_000)),
            ),
            (
                single(unknown, V::Integer(-21)),
                unknown,
                // Text carries no type: the device reads the digits it was sent.
                Content::single(unknown, V::String("-21".into())),
            ),
        ];
        let config = Content {
            values: vec![
                (Lwm2mPath::resource(10241, 0, 1), V::String("mode".into())),
                (Lwm2mPath::resource(10241, 0, 2), V::String("eco".into())),
            ],
        };
        cases.push((
            DeviceRequest::Write {
                path: Lwm2mPath::instance(10241, 0),
                mode: WriteMode::PartialUpdate,
                content: config.clone(),
            },
            Lwm2mPath::instance(10241, 0),
            config,
        ));
        let server = |t: V| Content {
            values: vec![
                (Lwm2mPath::resource(1, 1, 0), V::Integer(7)),
                (Lwm2mPath::resource(1, 1, 1), V::Integer(86_400)),
                (Lwm2mPath::resource(1, 1, 6), V::Boolean(false)),
                (Lwm2mPath::resource(1, 1, 7), V::String("U".into())),
                (Lwm2mPath::resource(1, 1, 10), V::ObjectLink(11, 0)),
                (Lwm2mPath::resource(1, 1, 12), t),
                (Lwm2mPath::resource(1, 1, 13), V::Integer(3)),
            ],
        };
        let mut fitted = server(V::Time(1_600_000_000));
        fitted.values[6].1 = V::UnsignedInteger(3);
        cases.push((
            DeviceRequest::Create {
                path: Lwm2mPath::object(1),
                content: server(V::Integer(1_600_000_000)),
            },
            Lwm2mPath::object(1),
            fitted,
        ));
        let power = Content {
            values: vec![
                (Lwm2mPath::resource_instance(3, 0, 6, 0), V::Integer(1)),
                (Lwm2mPath::resource_instance(3, 0, 6, 1), V::Integer(5)),
                (Lwm2mPath::resource(3, 0, 14), V::String("+01:00".into())),
                (Lwm2mPath::resource(3, 0, 22), V::ObjectLink(20, 1)),
            ],
        };
        cases.push((
            DeviceRequest::Write {
                path: Lwm2mPath::instance(3, 0),
                mode: WriteMode::PartialUpdate,
                content: power.clone(),
            },
            Lwm2mPath::instance(3, 0),
            power,
        ));
        for ct in ["ct=11542", "ct=110", "ct=112", "ct=11544"] {
            for (request, base, want) in &cases {
                let (mut s, now) = registered(ct);
                let (sent, result) = submit_write(&mut s, now, request.clone());
                assert_eq!(result, None, "{ct} {request:?}: answered at once");
                let m = sent.unwrap_or_else(|| panic!("{ct} {request:?}: nothing sent"));
                assert_eq!(reads(&m, base), sorted(want.clone()), "{ct} {request:?}");
            }
        }
        // A composite write across objects, a resource nobody knows among them.
        let composite = Content {
            values: vec![
                (
                    Lwm2mPath::resource(3, 0, 13),
                    V::UnsignedInteger(1_700_000_000),
                ),
                (
                    Lwm2mPath::resource(3, 0, 15),
                    V::String("Europe/Paris".into()),
                ),
                (unknown, V::Float(21.5)),
                (Lwm2mPath::resource(1, 0, 23), V::Boolean(false)),
            ],
        };
        let mut want = composite.clone();
        want.values[0].1 = V::Time(1_700_000_000);
        for ct in ["ct=110", "ct=112"] {
            let (mut s, now) = registered(ct);
            let (sent, result) = submit_write(
                &mut s,
                now,
                DeviceRequest::WriteComposite {
                    content: composite.clone(),
                },
            );
            assert_eq!(result, None, "{ct}");
            let m = sent.unwrap_or_else(|| panic!("{ct}: nothing sent"));
            assert_eq!(reads(&m, &Lwm2mPath::ROOT), sorted(want.clone()), "{ct}");
        }
    }

    // Promise (RFC 7252 §5.10, server code): a threshold's Uri-Query item of up to 255
    // bytes goes out whole; 256 is refused. `1e251` prints as 252 digits: `gt=` + 252 =
    // 255. Held.
    #[test]
    fn a_threshold_item_of_exactly_255_bytes_goes_out() {
        let path = Lwm2mPath::resource(3303, 0, 5700);
        let attrs = |gt: f64, st: Option<f64>| DeviceRequest::WriteAttributes {
            path,
            attributes: NotificationAttributes {
                gt: Some(gt),
                st,
                ..NotificationAttributes::default()
            },
        };
        for (gt, st) in [(1e251, None), (-1e250, Some(1e251))] {
            let (mut s, now) = registered("ct=11542");
            let (sent, result) = submit_write(&mut s, now, attrs(gt, st));
            assert_eq!(result, None, "{gt}");
            let m = sent.unwrap_or_else(|| panic!("{gt}: nothing sent"));
            let q: Vec<&str> = m.uri_query().collect();
            assert!(q.iter().all(|item| item.len() == 255), "{q:?}");
            assert_eq!(q.len(), 1 + usize::from(st.is_some()));
            let v: f64 = q[0].strip_prefix("gt=").unwrap().parse().unwrap();
            assert_eq!(v.to_bits(), gt.to_bits());
        }
        for gt in [1e252, -1e251] {
            let (mut s, now) = registered("ct=11542");
            let (sent, result) = submit_write(&mut s, now, attrs(gt, None));
            assert_eq!(result, Some(Err(DeviceError::BadRequest)), "{gt}");
            assert!(sent.is_none(), "{gt}");
        }
    }
}

// Promise (`JobType::WriteDeviceProperties`, as corrected here: it said "nothing is
// written"): each value is its own Write, in order; when the transport refuses one at
// once with `BadPayload` (the LwM2M server's type check), the child fails as
// `rejected:badPayload`, the values before it went out and those after it do not. The
// engine's side; the server's refusal is pinned in tests/values_48.rs. Held.
#[test]
fn a_write_job_refused_midway_wrote_the_values_before() {
    use std::time::Instant;
    use twinhub::job::{ChildState, EngineConfig, JobEngine, JobId, JobSpec, JobType};
    use twinhub::transport::{DeviceError, DeviceEvent, DeviceReply, DeviceRequest};
    use twinhub::{DeviceId, Lwm2mPath, ResourceValue as V};

    let t0 = Instant::now();
    let mut e = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(WALL0));
    let dev = DeviceId::new("d").unwrap();
    let id = JobId::new("write").unwrap();
    let values: Vec<(Lwm2mPath, V)> = (1..=3)
        .map(|r| (Lwm2mPath::resource(1000, 0, r), V::Integer(i64::from(r))))
        .collect();
    let job = JobType::WriteDeviceProperties {
        values: values.clone(),
    };
    e.create(t0, JobSpec::new(id.clone(), job, vec![dev.clone()]))
        .unwrap();
    let mut written = Vec::new();
    for step in 0..3 {
        let Some(op) = e.poll_op() else { break };
        match &op.request {
            DeviceRequest::Write { path, .. } => written.push(*path),
            other => panic!("{other:?}"),
        }
        let result = if step == 0 {
            Ok(DeviceReply::Done)
        } else {
            Err(DeviceError::BadPayload(
                "value at /1000/0/2 does not match".into(),
            ))
        };
        e.handle_event(
            t0,
            &DeviceEvent::Response {
                op: op.id,
                device: dev.clone(),
                result,
            },
        );
    }
    assert_eq!(written, [values[0].0, values[1].0]);
    assert!(e.poll_op().is_none());
    let (state, reason) = e.child_state(&id, &dev).unwrap();
    assert_eq!(state, ChildState::Failed);
    assert_eq!(
        reason.map(|r| r.code()).as_deref(),
        Some("rejected:badPayload")
    );
}

// Promise (history_query module docs): a literal `Timestamp` parses compares as the time
// it names. `Timestamp` reads a leap second (`23:59:60`) as `23:59:59`, as its own value
// must (it counts no leap seconds), but as a literal the leap second lies after every
// instant of `23:59:59` and before the next day: no stored time equals it, `lt` takes in
// `23:59:59.500`, `gt` starts at `00:00:00.000`. It compared as `23:59:59.000` (plus its
// fraction): `eq` matched the record at `23:59:59.000`, `gt` took in `23:59:59.500`.
// Failed on the code as reviewed.
#[test]
fn a_leap_second_literal_lies_between_its_neighbours() {
    const NEW_YEAR: u64 = 1_483_228_800_000; // 2017-01-01T00:00:00.000Z
    let s = HistorySnapshot::new(vec![
        record("r0", NEW_YEAR - 1000),
        record("r1", NEW_YEAR - 500),
        record("r2", NEW_YEAR),
    ]);
    for lit in [
        "2016-12-31T23:59:60Z",
        "2016-12-31T23:59:60.250Z",
        "2017-01-01T00:59:60+01:00",
    ] {
        let lit = format!("\"{lit}\"");
        assert_eq!(matching(&s, "eq", &lit), Vec::<String>::new(), "eq {lit}");
        assert_eq!(matching(&s, "ne", &lit), ["r0", "r1", "r2"], "ne {lit}");
        assert_eq!(matching(&s, "lt", &lit), ["r0", "r1"], "lt {lit}");
        assert_eq!(matching(&s, "lte", &lit), ["r0", "r1"], "lte {lit}");
        assert_eq!(matching(&s, "gt", &lit), ["r2"], "gt {lit}");
        assert_eq!(matching(&s, "gte", &lit), ["r2"], "gte {lit}");
        assert_eq!(
            matching(&s, "in", &format!("[{lit}]")),
            Vec::<String>::new()
        );
    }
    // The second before it is itself.
    assert_eq!(matching(&s, "eq", r#""2016-12-31T23:59:59Z""#), ["r0"]);
}
