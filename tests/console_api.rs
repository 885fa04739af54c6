//! Issue #18: the console's REST API and event stream (`examples/console/api.rs`), every
//! endpoint through the router in process, against a hub over the in-memory fleet;
//! bad input (malformed JSON, unknown device, stale etag, oversize body, bad query) gets
//! a JSON error with its status and changes nothing.

#![cfg(feature = "memory-fleet")]

#[path = "../examples/console/api.rs"]
#[allow(dead_code)]
mod api;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tower::ServiceExt;
use twinhub::DeviceId;
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::transport::memory::{DeviceSpec, MemoryConfig, MemoryTransport};
use twinhub::twin::{Scalar, ServiceValue, Twin};

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// A hub over three in-memory devices (two on 1.0, one on 1.1), their twins filled.
fn hub() -> Hub {
    let mut registry = Registry::new();
    let mut fleet = MemoryTransport::new(MemoryConfig::default());
    for (n, v) in [("d1", "1.0"), ("d2", "1.0"), ("d3", "1.1")] {
        registry.create(Twin::new(id(n)).with_tag("lab")).unwrap();
        fleet
            .add_device(
                Instant::now(),
                DeviceSpec::new(id(n)).firmware_version(v).battery_level(50),
            )
            .unwrap();
    }
    let hub = Hub::with_transport(fleet, registry, HubConfig::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    while ["d1", "d2", "d3"].iter().any(|d| {
        hub.twin(d)
            .is_none_or(|t| !t.device_properties.contains_key("FirmwareVersion"))
    }) {
        assert!(Instant::now() < deadline, "the twins never filled");
        std::thread::sleep(Duration::from_millis(10));
    }
    hub
}

struct Api {
    router: Router,
    runtime: tokio::runtime::Runtime,
}

impl Api {
    fn new(hub: &Hub) -> Api {
        Api {
            router: api::router(
                hub.clone(),
                vec![("2.0".into(), "coap://pkg/fw.bin".into())],
            ),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Sends a request; returns the status, the headers and the body as JSON (`null` if
    /// empty).
    fn call(
        &self,
        method: &str,
        uri: &str,
        body: impl Into<Body>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(body.into()).unwrap();
        self.runtime.block_on(async {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let json = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "{method} {uri}: not JSON ({e}): {:?}",
                        String::from_utf8_lossy(&bytes)
                    )
                })
            };
            (parts.status, parts.headers, json)
        })
    }

    fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call("GET", uri, Body::empty(), &[]);
        (s, v)
    }

    fn send(&self, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call(method, uri, body.to_owned(), &[]);
        (s, v)
    }
}

#[test]
fn devices_twins_tags_and_service_properties() {
    let hub = hub();
    let api = Api::new(&hub);

    let (status, page) = api.get("/api/devices?top=2");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["deviceId"], "d1");
    let token = page["continuation"].as_str().unwrap();
    let (_, next) = api.get(&format!("/api/devices?top=2&continuation={token}"));
    assert_eq!(next["items"][0]["deviceId"], "d3");
    assert!(next["continuation"].is_null());
    assert_eq!(api.get("/api/devices?top=0").0, StatusCode::BAD_REQUEST);
    assert_eq!(
        api.get("/api/devices?top=2&continuation=zz").0,
        StatusCode::BAD_REQUEST
    );

    // Create; a second create is a conflict; malformed and unknown fields are refused.
    let (status, twin) = api.send(
        "POST",
        "/api/devices",
        r#"{"deviceId": "n1", "tags": ["new"]}"#,
    );
    assert_eq!(status, StatusCode::CREATED, "{twin}");
    assert_eq!(twin["serviceProperties"]["tags"], json!(["new"]));
    let (status, err) = api.send("POST", "/api/devices", r#"{"deviceId": "n1"}"#);
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::CONFLICT, Some("deviceExists"))
    );
    for bad in [
        r#"{"deviceId": "#,
        r#"{"id": "x"}"#,
        r#"{"deviceId": "a b"}"#,
        "[1]",
    ] {
        let (status, err) = api.send("POST", "/api/devices", bad);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert!(err["message"].as_str().is_some());
    }
    assert_eq!(hub.registry().read().len(), 4);

    // A twin with its etag; tags and service properties honour If-Match.
    let (status, headers, twin) = api.call("GET", "/api/devices/d1", Body::empty(), &[]);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(twin["deviceProperties"]["FirmwareVersion"]["value"], "1.0");
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let (status, _, body) = api.call(
        "POST",
        "/api/devices/d1/tags",
        r#"["blue"]"#,
        &[("if-match", &etag)],
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_etag = format!("\"{}\"", body["etag"].as_str().unwrap());
    let (status, _, err) = api.call(
        "POST",
        "/api/devices/d1/tags",
        r#"["red"]"#,
        &[("if-match", &etag)],
    );
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{err}");
    let tags = hub.twin("d1").unwrap().service_properties.tags;
    assert!(tags.contains("blue") && !tags.contains("red"));
    let (status, _, body) = api.call(
        "PUT",
        "/api/devices/d1/serviceProperties/Owner",
        r#"{"team": "ops"}"#,
        &[("if-match", &new_etag)],
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, _) = api.call(
        "PUT",
        "/api/devices/d1/serviceProperties/Owner",
        "null",
        &[("if-match", &new_etag)],
    );
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(
        hub.twin("d1")
            .unwrap()
            .service_properties
            .properties
            .contains_key("Owner")
    );
    let (status, _, _) = api.call(
        "PUT",
        "/api/devices/d1/serviceProperties/Owner",
        "[1, 2]",
        &[],
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Unknown devices are 404 everywhere.
    assert_eq!(api.get("/api/devices/nope").0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.send("DELETE", "/api/devices/nope", "").0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.send("POST", "/api/devices/nope/tags", r#"["x"]"#).0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.send("POST", "/api/devices/nope/read", r#"{"path": "/3/0/9"}"#)
            .0,
        StatusCode::NOT_FOUND
    );

    // Delete.
    assert_eq!(
        api.send("DELETE", "/api/devices/n1", "").0,
        StatusCode::NO_CONTENT
    );
    assert!(hub.twin("n1").is_none());

    // An oversize body is 413 and creates nothing.
    let big = format!(
        r#"{{"deviceId": "big", "tags": ["{}"]}}"#,
        "x".repeat(api::MAX_BODY)
    );
    let (status, err) = api.send("POST", "/api/devices", &big);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(err["error"], "bodyRejected");
    assert!(hub.twin("big").is_none());

    let (status, stats) = api.get("/api/stats");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (stats["devices"].as_u64(), stats["connected"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(stats["hub"]["registrations"].as_u64().unwrap() >= 3);
    assert_eq!(api.get("/api/packages").1[0]["version"], "2.0");
}

#[test]
fn queries_and_their_errors() {
    let hub = hub();
    let api = Api::new(&hub);
    let q = r#"{"filter": {"type": "comparison", "comparisonOperator": "eq",
        "property": {"name": "FirmwareVersion", "type": "device"}, "value": "1.0"},
        "project": {"properties": [{"name": "FirmwareVersion", "type": "device"}]}}"#;
    let (status, r) = api.send("POST", "/api/query", q);
    assert_eq!(status, StatusCode::OK, "{r}");
    let ids: Vec<_> = r["Result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["deviceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["d1", "d2"]);
    let agg = r#"{"aggregate": {"keys": [{"name": "FirmwareVersion", "type": "device"}],
        "properties": [{"operator": "count", "columnName": "n"}]}}"#;
    let (_, r) = api.send("POST", "/api/query", agg);
    assert_eq!(
        r["AggregateResult"],
        json!([{"FirmwareVersion": "1.0", "n": 2}, {"FirmwareVersion": "1.1", "n": 1}])
    );
    // A parse error says where.
    let (status, err) = api.send(
        "POST",
        "/api/query",
        "{\"filter\":\n  {\"type\": \"comparisn\"}}",
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalidQuery");
    assert_eq!(
        (err["line"].as_u64(), err["column"].as_u64()),
        (Some(2), Some(12)),
        "{err}"
    );
    assert_eq!(
        api.send("POST", "/api/query", "").0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        api.send("POST", "/api/query?top=100000", "{}").0,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn device_operations_answer_with_the_devices_reply() {
    let hub = hub();
    let api = Api::new(&hub);
    let (status, r) = api.send("POST", "/api/devices/d1/read", r#"{"path": "/3/0/9"}"#);
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["values"][0]["path"], "/3/0/9");
    assert_eq!(
        r["values"][0]["value"],
        json!({"type": "integer", "value": 50})
    );
    let (status, r) = api.send(
        "POST",
        "/api/devices/d1/write",
        r#"{"path": "/3/0/14", "value": {"type": "string", "value": "+02:00"}}"#,
    );
    assert_eq!(status, StatusCode::OK, "{r}");
    let (_, r) = api.send("POST", "/api/devices/d1/read", r#"{"path": "/3/0/14"}"#);
    assert_eq!(r["values"][0]["value"]["value"], "+02:00");
    // Bad input: no value to write, a bad path, unknown fields.
    for (op, body) in [
        ("write", r#"{"path": "/3/0/14"}"#),
        ("read", r#"{"path": "/3/x"}"#),
        ("read", r#"{"path": "/3/0/9", "extra": 1}"#),
    ] {
        let (status, err) = api.send("POST", &format!("/api/devices/d1/{op}"), body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{op} {body}: {err}");
    }
    // The device's own refusal comes back as 502 with its error.
    let (status, err) = api.send("POST", "/api/devices/d1/read", r#"{"path": "/3/0/999"}"#);
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{err}");
    assert_eq!(err["error"], "deviceError");
    // Execute last: Reboot takes the device offline for a while.
    let (status, r) = api.send("POST", "/api/devices/d1/execute", r#"{"path": "/3/0/4"}"#);
    assert_eq!((status, &r), (StatusCode::OK, &json!({"done": true})));
}

#[test]
fn jobs_from_a_query_their_children_history_and_cancel() {
    let hub = hub();
    let api = Api::new(&hub);
    let body = r#"{"id": "reboot-1-0", "job": {"type": "rebootDevice"},
        "query": {"filter": {"type": "comparison", "comparisonOperator": "eq",
            "property": {"name": "FirmwareVersion", "type": "device"}, "value": "1.0"}}}"#;
    let (status, record) = api.send("POST", "/api/jobs", body);
    assert_eq!(status, StatusCode::CREATED, "{record}");
    assert_eq!(record["jobId"], "reboot-1-0");
    let (status, err) = api.send("POST", "/api/jobs", body);
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::CONFLICT, Some("jobExists"))
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, job) = api.get("/api/jobs/reboot-1-0");
        assert_eq!(status, StatusCode::OK);
        if job["record"]["status"] == "completed" {
            assert_eq!(job["statistics"]["deviceCount"], 2);
            break;
        }
        assert!(Instant::now() < deadline, "the job never completed: {job}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, children) = api.get("/api/jobs/reboot-1-0/children?top=1&skip=1");
    assert_eq!(children["total"], 2);
    assert_eq!(children["items"][0]["deviceId"], "d2");
    let (_, history) = api.get("/api/jobs");
    assert_eq!(history["items"][0]["jobId"], "reboot-1-0");
    let (status, r) = api.send(
        "POST",
        "/api/jobs/query",
        r#"{"filter": {"type": "comparison", "comparisonOperator": "eq",
            "property": {"name": "Status", "type": "default"}, "value": "completed"}}"#,
    );
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        r["Result"].as_array().unwrap().len(),
        3,
        "the parent and two children"
    );

    // Explicit targets, a job that is cancelled while it waits for its start.
    let (status, _) = api.send(
        "POST",
        "/api/jobs",
        r#"{"id": "later", "job": {"type": "rebootDevice"}, "targets": ["d3"],
            "startAt": "2099-01-01T00:00:00Z"}"#,
    );
    assert_eq!(status, StatusCode::CREATED);
    let (status, r) = api.send("DELETE", "/api/jobs/later", "");
    assert_eq!(
        (status, &r["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );

    // Bad input: unknown devices, a query selecting none, malformed, unknown job.
    for bad in [
        r#"{"id": "j2", "job": {"type": "rebootDevice"}, "targets": ["ghost"]}"#,
        r#"{"id": "j3", "job": {"type": "rebootDevice"}, "query": {"filter": {"type": "comparison",
            "comparisonOperator": "eq", "property": {"name": "FirmwareVersion", "type": "device"}, "value": "9"}}}"#,
        r#"{"id": "j4", "job": {"type": "nope"}, "targets": ["d1"]}"#,
        r#"{"id": "j5""#,
    ] {
        let (status, err) = api.send("POST", "/api/jobs", bad);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
    }
    assert_eq!(api.get("/api/jobs").1["items"].as_array().unwrap().len(), 2);
    assert_eq!(api.get("/api/jobs/ghost").0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/jobs/ghost/children").0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.send("DELETE", "/api/jobs/ghost", "").0,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn the_event_stream_resumes_after_a_sequence_number() {
    let hub = hub();
    let api = Api::new(&hub);
    let after = hub.registry().read().last_seq();
    hub.add_tags("d1", &["one"], None).unwrap();
    hub.add_tags("d2", &["two"], None).unwrap();
    let request = Request::builder()
        .uri(format!("/api/events?after={after}"))
        .body(Body::empty())
        .unwrap();
    let text = api.runtime.block_on(async {
        let response = api.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut body = response.into_body();
        let mut text = String::new();
        while text.matches("data:").count() < 2 {
            let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
                .await
                .expect("events in time")
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
        text
    });
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["seq"], after + 1);
    assert_eq!(events[0]["device"], "d1");
    assert_eq!(events[1]["device"], "d2");
    assert!(text.contains(&format!("id: {}", after + 1)));
    // A resume point the feed no longer holds is a conflict with a clear message.
    let small = Hub::with_transport(
        MemoryTransport::new(MemoryConfig::default()),
        Registry::with_feed_capacity(2),
        HubConfig::default(),
    );
    for i in 0..5 {
        small
            .create_device(Twin::new(id(&format!("s{i}"))))
            .unwrap();
    }
    let (status, err) = Api::new(&small).get("/api/events?after=0");
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::CONFLICT, Some("feedGap"))
    );
}

/// Sends a request; returns the status, the `Content-Type` and the body as text.
fn call_raw(
    api: &Api,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Body::empty()).unwrap();
    api.runtime.block_on(async {
        let response = api.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        // Bounded: an event stream never ends.
        let bytes = tokio::time::timeout(Duration::from_secs(2), body.collect())
            .await
            .map_or_else(
                |_| "(a stream that did not end)".into(),
                |b| b.unwrap().to_bytes(),
            );
        (
            parts.status,
            content_type,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    })
}

/// What an `EventSource` makes of an event stream (the HTML standard's parser): the
/// messages dispatched (their `data`) and the last event id, which an `id:` field sets
/// even in an event with no `data` (that event is not dispatched).
struct EventStream {
    messages: Vec<Value>,
    last_event_id: Option<String>,
    /// The server ended the stream (before `enough` or patience ran out).
    ended: bool,
}

/// Opens `GET uri` and reads it as an `EventSource` would until `enough` says so or
/// `patience` passes (then the connection drops, as a network failure would).
fn read_events(
    api: &Api,
    uri: &str,
    last_event_id: Option<&str>,
    patience: Duration,
    enough: impl Fn(&EventStream) -> bool,
) -> EventStream {
    read_events_after(api, uri, last_event_id, patience, enough, || {})
}

/// [`read_events`], calling `meanwhile` once the stream is open and before reading it
/// (the hub queues what happens meanwhile for the stream, as for a browser that is slow
/// to read).
fn read_events_after(
    api: &Api,
    uri: &str,
    last_event_id: Option<&str>,
    patience: Duration,
    enough: impl Fn(&EventStream) -> bool,
    meanwhile: impl FnOnce(),
) -> EventStream {
    let mut request = Request::builder().uri(uri);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let request = request.body(Body::empty()).unwrap();
    let mut stream = EventStream {
        messages: Vec::new(),
        last_event_id: last_event_id.map(str::to_owned),
        ended: false,
    };
    api.runtime.block_on(async {
        let response = api.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        meanwhile();
        let mut body = response.into_body();
        let deadline = tokio::time::Instant::now() + patience;
        let (mut text, mut data, mut id) = (String::new(), None::<String>, None);
        while !enough(&stream) {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => {
                    stream.ended = true;
                    break;
                }
                _ => break,
            };
            let Ok(bytes) = frame.into_data() else {
                continue;
            };
            text.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = text.find('\n') {
                let line: String = text.drain(..=end).collect();
                let line = line.trim_end_matches('\n');
                if line.is_empty() {
                    // Dispatch: the id first, then the data, if any.
                    if let Some(i) = id.take() {
                        stream.last_event_id = Some(i);
                    }
                    if let Some(d) = data.take() {
                        stream.messages.push(serde_json::from_str(&d).unwrap());
                    }
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "data" => data = Some(value.to_owned()),
                    "id" => id = Some(value.to_owned()),
                    _ => {}
                }
            }
        }
    });
    stream
}

/// A hub with no device: nothing changes unless the test changes it.
fn quiet_hub() -> Hub {
    let mut registry = Registry::new();
    registry.create(Twin::new(id("q1"))).unwrap();
    Hub::with_transport(
        MemoryTransport::new(MemoryConfig::default()),
        registry,
        HubConfig::default(),
    )
}

/// A browser whose stream carried no twin change before it broke (a quiet fleet, or only
/// lifecycle and job events) had no event id to send back: it reconnected without
/// `Last-Event-ID`, was subscribed "from now on", and silently missed every twin change
/// made while it was away, although the README promises a reconnecting browser resumes
/// without a gap. The stream now opens with an event that carries only an id (where it
/// starts in the feed, which an `EventSource` keeps without dispatching anything), so
/// every reconnect has a resume point.
#[test]
fn a_reconnect_resumes_even_when_the_stream_carried_no_twin_change() {
    let hub = quiet_hub();
    let api = Api::new(&hub);
    // (Patience generous for a loaded machine: the read ends at the first id.)
    let first = read_events(&api, "/api/events", None, Duration::from_secs(30), |s| {
        s.last_event_id.is_some()
    });
    assert!(first.messages.is_empty(), "{:?}", first.messages);
    // Away: the connection broke; meanwhile a twin changes.
    hub.add_tags("q1", &["away"], None).unwrap();
    let again = read_events(
        &api,
        "/api/events",
        first.last_event_id.as_deref(),
        Duration::from_secs(30),
        |s| !s.messages.is_empty(),
    );
    assert_eq!(
        again.messages.first().map(|m| (&m["device"], &m["kind"])),
        Some((&json!("q1"), &json!("tags"))),
        "the change made while away: {:?}",
        again.messages
    );
}

/// A `Last-Event-ID` (or `?after=`) that is not a sequence number was ignored: the stream
/// started "from now on" and the client, which asked to resume, missed everything since
/// without being told. It is a 400 with a JSON error now, as any bad input.
#[test]
fn an_event_id_that_is_not_a_sequence_number_is_refused() {
    let hub = quiet_hub();
    let api = Api::new(&hub);
    for (uri, headers) in [
        ("/api/events", &[("last-event-id", "abc")][..]),
        ("/api/events", &[("last-event-id", "-1")][..]),
        ("/api/events?after=abc", &[][..]),
    ] {
        let (status, content_type, body) = call_raw(&api, "GET", uri, headers);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {headers:?}: {body}");
        assert_eq!(
            content_type, "application/json",
            "{uri} {headers:?}: {body}"
        );
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["error"], "badRequest", "{body}");
    }
}

/// The API's errors are JSON (`{"error", "message"}`, the module docs and the README
/// say): but a query string or a path segment axum could not parse (`?top=abc`,
/// `?skip=-1`, a path that is not UTF-8) came back as axum's plain-text 400, and an
/// unknown endpoint or method as an empty 404 or 405.
#[test]
fn unparsable_query_strings_and_paths_are_json_errors() {
    let hub = quiet_hub();
    let api = Api::new(&hub);
    for (method, uri, expected, code) in [
        (
            "GET",
            "/api/devices?top=abc",
            StatusCode::BAD_REQUEST,
            "badRequest",
        ),
        (
            "GET",
            "/api/devices?top=-1",
            StatusCode::BAD_REQUEST,
            "badRequest",
        ),
        (
            "POST",
            "/api/query?top=x",
            StatusCode::BAD_REQUEST,
            "badRequest",
        ),
        (
            "GET",
            "/api/jobs/j1/children?skip=-1",
            StatusCode::BAD_REQUEST,
            "badRequest",
        ),
        (
            "GET",
            "/api/devices/%FF",
            StatusCode::BAD_REQUEST,
            "badRequest",
        ),
        (
            "GET",
            "/api/jobs/%FF",
            StatusCode::BAD_REQUEST,
            "badRequest",
        ),
        ("GET", "/api/nope", StatusCode::NOT_FOUND, "notFound"),
        (
            "PATCH",
            "/api/devices",
            StatusCode::METHOD_NOT_ALLOWED,
            "methodNotAllowed",
        ),
    ] {
        let (status, content_type, body) = call_raw(&api, method, uri, &[]);
        assert_eq!(status, expected, "{method} {uri}: {body}");
        assert_eq!(content_type, "application/json", "{method} {uri}: {body}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["error"], code, "{method} {uri}: {body}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // The page is still served.
    assert_eq!(call_raw(&api, "GET", "/", &[]).0, StatusCode::OK);
}

/// A page of a job's children took `top=0` (an empty page) and `top` past the largest
/// page (cut down to it) where every other paged endpoint refuses both with a 400.
#[test]
fn a_page_of_children_has_the_bounds_of_every_page() {
    let hub = quiet_hub();
    let api = Api::new(&hub);
    let (status, _) = api.send(
        "POST",
        "/api/jobs",
        r#"{"id": "later", "job": {"type": "rebootDevice"}, "targets": ["q1"],
            "startAt": "2099-01-01T00:00:00Z"}"#,
    );
    assert_eq!(status, StatusCode::CREATED);
    for top in [0, api::MAX_PAGE + 1] {
        let (status, err) = api.get(&format!("/api/jobs/later/children?top={top}"));
        assert_eq!(status, StatusCode::BAD_REQUEST, "top={top}: {err}");
        assert_eq!(err["error"], "badRequest");
    }
    let (status, page) = api.get(&format!("/api/jobs/later/children?top={}", api::MAX_PAGE));
    assert_eq!((status, &page["total"]), (StatusCode::OK, &json!(1)));
}

/// Events the hub dropped for a slow stream were lost for good: the stream sent its
/// `lagged` message and carried on, and the next twin change's id moved the browser's
/// last event id past the gap, so a reconnect replayed nothing (the page itself re-reads
/// on `lagged`; a generic `EventSource` client could not know). The stream now ends at
/// the lag, its last id the resume point, and the reconnect replays what was missed.
#[test]
fn a_lagging_stream_ends_at_its_resume_point_and_the_reconnect_replays_the_gap() {
    let hub = quiet_hub();
    let api = Api::new(&hub);
    // More changes than a subscription queues (4,096), made before the stream is read.
    let changes = 4_200;
    let lagged = read_events_after(
        &api,
        "/api/events",
        None,
        Duration::from_secs(30),
        |_| false,
        || {
            for i in 0..changes {
                let value = ServiceValue::Scalar(Scalar::from(i as i64));
                hub.set_service_property("q1", "n", Some(value), None)
                    .unwrap();
            }
        },
    );
    assert!(lagged.ended, "the stream ends at the lag");
    let last = lagged.messages.last().expect("messages");
    assert_eq!(last["type"], "lagged", "{last}");
    let resume = last["resumeAfter"].as_u64().unwrap();
    assert_eq!(lagged.last_event_id, Some(resume.to_string()));
    let delivered = lagged.messages.len() - 1;
    assert!(delivered < changes, "{delivered} delivered: no lag");
    // The reconnect replays every change after the resume point, up to the last.
    let newest = hub.registry().read().last_seq();
    let replay = read_events(
        &api,
        "/api/events",
        lagged.last_event_id.as_deref(),
        Duration::from_secs(30),
        |s| s.last_event_id.as_deref() == Some(&newest.to_string()),
    );
    let seqs: Vec<u64> = replay
        .messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs.first(),
        Some(&(resume + 1)),
        "{:?}",
        replay.messages.first()
    );
    assert_eq!(seqs.last(), Some(&newest));
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap, no repeat"
    );
    assert_eq!(delivered + seqs.len(), changes, "every change, once");
}

/// `POST /api/jobs` with both `targets` and a `query` ran the query's devices and
/// ignored `targets` without a word. Which was meant is not the API's to guess: 400.
#[test]
fn a_job_with_both_targets_and_a_query_is_refused() {
    let hub = quiet_hub();
    let api = Api::new(&hub);
    let body = r#"{"id": "both", "job": {"type": "rebootDevice"}, "targets": ["q1"],
        "query": {"filter": {"type": "comparison", "comparisonOperator": "eq",
            "property": {"name": "deviceId", "type": "default"}, "value": "q1"}}}"#;
    let (status, err) = api.send("POST", "/api/jobs", body);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("not both"),
        "{err}"
    );
}

/// A hub without a store numbered its change feed, and its etags, from 1 again when
/// restarted: a browser reconnecting with the first run's `Last-Event-ID` resumed
/// against the second run's history (here, as caught up: it would have missed the second
/// run's change), and a service's `If-Match` with the first run's etag was accepted
/// against the second run's twin. The second run's numbers now start past the first's
/// (from the clock): the id is 409 `feedGap` (the page reloads), the etag 412.
#[test]
fn a_restarted_hub_without_a_store_refuses_the_first_runs_event_id_and_etag() {
    // One run: a change seen on the event stream, and the twin's etag after it.
    let run = || {
        let hub = quiet_hub();
        let api = Api::new(&hub);
        let stream = read_events_after(
            &api,
            "/api/events",
            None,
            Duration::from_secs(30),
            |s| !s.messages.is_empty(),
            || {
                hub.add_tags("q1", &["seen"], None).unwrap();
            },
        );
        assert_eq!(stream.messages.len(), 1, "{:?}", stream.messages);
        let (status, headers, _) = api.call("GET", "/api/devices/q1", Body::empty(), &[]);
        assert_eq!(status, StatusCode::OK);
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        (hub, api, stream.last_event_id.unwrap(), etag)
    };
    let (first, _, last_event_id, etag) = run();
    first.stop();
    drop(first);
    let (_second, api, _, _) = run();
    let (status, _, body) = call_raw(
        &api,
        "GET",
        "/api/events",
        &[("last-event-id", &last_event_id)],
    );
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "Last-Event-ID {last_event_id} of the first run: {body}"
    );
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"], "feedGap", "{body}");
    let (status, _, body) = api.call(
        "PUT",
        "/api/devices/q1/serviceProperties/Owner",
        r#""intruder""#,
        &[("if-match", &etag)],
    );
    assert_eq!(
        status,
        StatusCode::PRECONDITION_FAILED,
        "the first run's etag {etag}: {body}"
    );
    let (status, _, _) = api.call(
        "POST",
        "/api/devices/q1/tags",
        r#"["intruder"]"#,
        &[("if-match", &etag)],
    );
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
}
