//! The console's REST API and event stream over a [`Hub`], in the preview's JSON shapes.
//!
//! Every handler is a short call into the hub (reads take its read lock for
//! microseconds; a query of a page runs on the indexes); device operations `.await` the
//! device's answer without blocking a worker thread. Errors are JSON
//! `{"error": code, "message": text}` (queries add `line` and `column`) with 400 (a
//! query string, path or `Last-Event-ID` that does not parse too), 404 (an unknown
//! endpoint too), 405, 409, 412, 413, 502 (the device refused, or the request failed on
//! the way: not registered, queue full, content refused before sending, transport time-out,
//! hub stopped), 503 (not durable) or 504 (no answer in 30 s).
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/stats` | hub counters, devices, connected devices |
//! | `GET /api/packages` | firmware packages a job may install |
//! | `GET /api/devices?top=&continuation=` | a page of twins in device id order |
//! | `POST /api/devices` | create: `{"deviceId": "...", "tags": [...]}` |
//! | `GET /api/devices/{id}` | a twin; `ETag` is its service-properties etag |
//! | `DELETE /api/devices/{id}` | remove |
//! | `POST /api/devices/{id}/tags` | add tags (`If-Match` optional) |
//! | `PUT /api/devices/{id}/serviceProperties/{name}` | set (JSON value; `null` removes), `If-Match` |
//! | `POST /api/devices/{id}/read` `/write` `/execute` | one operation on the device now |
//! | `POST /api/query?top=&continuation=` | the JSON query expression as the body |
//! | `GET /api/jobs` | job history: parent records, newest first |
//! | `POST /api/jobs` | create: a job spec, with `targets` or a `query` whose filter selects them |
//! | `GET /api/jobs/{id}` | record and statistics |
//! | `DELETE /api/jobs/{id}` | cancel |
//! | `GET /api/jobs/{id}/children?top=&skip=` | child records |
//! | `POST /api/jobs/query` | a query expression over job history |
//! | `GET /api/events?after=` | server-sent events (also `Last-Event-ID`) |
//!
//! The event stream opens with an event that carries only an id, where the stream starts
//! in the change feed (an `EventSource` keeps it without dispatching a message), so a
//! browser reconnects with a `Last-Event-ID` even when no twin change came before the
//! connection broke. When the hub dropped events for a slow stream, the stream sends the
//! `lagged` message with the resume point as its id and ends: the browser reconnects with
//! it and gets the twin changes it missed from the feed (or 409 `feedGap`); lifecycle and
//! job events are not replayed.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;
use twinhub::hub::Hub;
use twinhub::hub::{HubEvent, RequestError, SubscribeOptions};
use twinhub::job::{CancelMode, JobId, JobSpec, SpecError};
use twinhub::query::{QueryError, QueryOptions};
use twinhub::registry::RegistryError;
use twinhub::transport::{DeviceReply, DeviceRequest, WriteMode};
use twinhub::twin::{ConnectionState, Etag, Twin};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

/// Largest request body, 64 KiB: bigger ones get 413 and change nothing.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest page of devices or children.
pub const MAX_PAGE: usize = 1000;
/// How long a device operation waits for the device's answer.
pub const DEVICE_TIMEOUT: Duration = Duration::from_secs(30);

const PAGE_HTML: &str = include_str!("index.html");

/// The console's routes over `hub`; `packages` are the firmware packages a job may
/// install (`{"version", "uri"}`, shown by the page's job form).
pub fn router(hub: Hub, packages: Vec<(String, String)>) -> Router {
    let packages: Value = packages
        .into_iter()
        .map(|(version, uri)| json!({"version": version, "uri": uri}))
        .collect();
    Router::new()
        .route("/", get(|| async { Html(PAGE_HTML) }))
        .route("/api/packages", get(move || async move { Json(packages) }))
        .route("/api/stats", get(stats))
        .route("/api/devices", get(list_devices).post(create_device))
        .route("/api/devices/{id}", get(get_twin).delete(delete_device))
        .route("/api/devices/{id}/tags", post(add_tags))
        .route(
            "/api/devices/{id}/serviceProperties/{name}",
            put(set_service_property),
        )
        .route("/api/devices/{id}/read", post(read_device))
        .route("/api/devices/{id}/write", post(write_device))
        .route("/api/devices/{id}/execute", post(execute_device))
        .route("/api/query", post(query))
        .route("/api/jobs", get(list_jobs).post(create_job))
        .route("/api/jobs/query", post(query_jobs))
        .route("/api/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/api/jobs/{id}/children", get(job_children))
        .route("/api/events", get(events))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "notFound", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "methodNotAllowed",
                "the endpoint does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(hub)
}

/// An error as JSON with its status code.
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, error: &str, message: impl std::fmt::Display) -> Self {
        ApiError {
            status,
            body: json!({"error": error, "message": message.to_string()}),
        }
    }

    fn bad(message: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "badRequest", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let (status, code) = match &e {
            RegistryError::DeviceNotFound { .. } => (StatusCode::NOT_FOUND, "deviceNotFound"),
            RegistryError::DeviceExists { .. } => (StatusCode::CONFLICT, "deviceExists"),
            RegistryError::PreconditionFailed { .. } => {
                (StatusCode::PRECONDITION_FAILED, "preconditionFailed")
            }
            RegistryError::NotDurable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "notDurable"),
            _ => (StatusCode::BAD_REQUEST, "invalid"),
        };
        ApiError::new(status, code, e)
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        let (status, code) = match &e {
            SpecError::UnknownJob(_) => (StatusCode::NOT_FOUND, "jobNotFound"),
            SpecError::DuplicateJob(_) => (StatusCode::CONFLICT, "jobExists"),
            SpecError::NotDurable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "notDurable"),
            _ => (StatusCode::BAD_REQUEST, "invalidJob"),
        };
        ApiError::new(status, code, e)
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let mut body = json!({"error": "invalidQuery", "message": e.to_string()});
        if let QueryError::Parse(p) = &e {
            body["line"] = json!(p.line);
            body["column"] = json!(p.column);
        }
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body,
        }
    }
}

/// A path parameter, or a query string, that axum could not parse: a JSON 400 (axum's own
/// rejection is plain text).
fn unparsable(status: StatusCode, text: String) -> ApiError {
    if status.is_client_error() {
        ApiError::new(status, "badRequest", text)
    } else {
        ApiError::new(status, "internal", text)
    }
}

/// [`axum::extract::Path`] whose rejection is a JSON error.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|r| unparsable(r.status(), r.body_text()))
    }
}

/// [`Query`] whose rejection is a JSON 400.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|r| unparsable(r.status(), r.body_text()))
    }
}

/// The body as bytes; a body over [`MAX_BODY`] is a JSON 413.
fn body(bytes: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    bytes.map_err(|r| ApiError::new(r.status(), "bodyRejected", r.body_text()))
}

/// The body as UTF-8 text (a query expression).
fn text_body(bytes: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    String::from_utf8(body(bytes)?.to_vec()).map_err(|_| ApiError::bad("the body is not UTF-8"))
}

/// The body parsed as JSON into `T`.
fn json_body<T: for<'de> Deserialize<'de>>(
    bytes: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body(bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))
}

fn device_id(id: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(id).map_err(ApiError::bad)
}

fn job_id(id: &str) -> Result<JobId, ApiError> {
    JobId::new(id).map_err(ApiError::bad)
}

/// `If-Match: "7"` (or `7`, or `*` for none).
fn if_match(headers: &HeaderMap) -> Result<Option<Etag>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().map_err(ApiError::bad)?.trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_matches('"')
        .parse()
        .map(|n| Some(Etag(n)))
        .map_err(|_| ApiError::bad(format!("If-Match {text:?} is not an etag")))
}

async fn stats(State(hub): State<Hub>) -> Json<Value> {
    let (devices, connected) = {
        let reg = hub.registry().read();
        let connected = reg
            .iter()
            .filter(|t| t.connection_state() == ConnectionState::Connected)
            .count();
        (reg.len(), connected)
    };
    Json(json!({"hub": hub.stats(), "devices": devices, "connected": connected}))
}

#[derive(Deserialize)]
struct Page {
    top: Option<usize>,
    continuation: Option<String>,
    skip: Option<usize>,
}

impl Page {
    /// `top`, 100 when not given; 0 and more than [`MAX_PAGE`] are refused.
    fn size(&self) -> Result<usize, ApiError> {
        let size = self.top.unwrap_or(100);
        if size == 0 || size > MAX_PAGE {
            return Err(ApiError::bad(format!("top must be 1..={MAX_PAGE}")));
        }
        Ok(size)
    }

    fn options(&self) -> Result<QueryOptions, ApiError> {
        let mut options = QueryOptions::page(self.size()?);
        options.continuation = self.continuation.clone();
        Ok(options)
    }
}

async fn list_devices(
    State(hub): State<Hub>,
    Params(page): Params<Page>,
) -> Result<Json<Value>, ApiError> {
    let result = hub.query_page("{}", &page.options()?)?;
    let total = hub.registry().read().len();
    Ok(Json(json!({
        "items": result.result,
        "continuation": result.continuation,
        "total": total,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewDevice {
    device_id: String,
    #[serde(default)]
    tags: Vec<String>,
}

async fn create_device(
    State(hub): State<Hub>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Twin>), ApiError> {
    let new: NewDevice = json_body(bytes)?;
    let mut twin = Twin::new(device_id(&new.device_id)?);
    for t in &new.tags {
        twin = twin.with_tag(t);
    }
    hub.create_device(twin)?;
    let twin = hub
        .twin(&new.device_id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "deviceNotFound", "removed since"))?;
    Ok((StatusCode::CREATED, Json(twin)))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "deviceNotFound",
        format!("no device {id:?}"),
    )
}

async fn get_twin(State(hub): State<Hub>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let twin = hub.twin(&id).ok_or_else(|| not_found(&id))?;
    let etag = format!("\"{}\"", twin.service_properties.etag);
    let mut response = Json(twin).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    Ok(response)
}

async fn delete_device(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    hub.remove_device(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_tags(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let tags: Vec<String> = json_body(bytes)?;
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let etag = hub.add_tags(&id, &tags, if_match(&headers)?)?;
    Ok(Json(json!({"etag": etag.to_string()})))
}

async fn set_service_property(
    State(hub): State<Hub>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let value: Value = json_body(bytes)?;
    let value = match value {
        Value::Null => None,
        v => Some(serde_json::from_value(v).map_err(ApiError::bad)?),
    };
    let etag = hub.set_service_property(&id, &name, value, if_match(&headers)?)?;
    Ok(Json(json!({"etag": etag.to_string()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Operation {
    path: String,
    value: Option<ResourceValue>,
    args: Option<String>,
}

/// One operation on one device, answered when the device answers.
async fn operate(
    hub: &Hub,
    id: &str,
    bytes: Result<Bytes, BytesRejection>,
    make: impl FnOnce(Lwm2mPath, Operation) -> Result<DeviceRequest, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let op: Operation = json_body(bytes)?;
    let device = device_id(id)?;
    if hub.twin(id).is_none() {
        return Err(not_found(id));
    }
    let path: Lwm2mPath = op.path.parse().map_err(ApiError::bad)?;
    let request = make(path, op)?;
    let reply = tokio::time::timeout(DEVICE_TIMEOUT, hub.request(&device, request))
        .await
        .map_err(|_| ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "no answer"))?;
    match reply {
        Ok(DeviceReply::Content(content)) => Ok(Json(json!({
            "values": content.values.iter().map(|(p, v)| json!({"path": p, "value": v})).collect::<Vec<_>>()
        }))),
        Ok(DeviceReply::Done) => Ok(Json(json!({"done": true}))),
        Ok(DeviceReply::Links(links)) => Ok(Json(json!({"links": links}))),
        Ok(DeviceReply::Created(p)) => Ok(Json(json!({"created": p}))),
        Ok(other) => Ok(Json(json!({"reply": format!("{other:?}")}))),
        Err(RequestError::Device(e)) => Err(ApiError {
            status: StatusCode::BAD_GATEWAY,
            body: json!({"error": "deviceError", "message": format!("{e:?}"), "device": e}),
        }),
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "deviceError", e)),
    }
}

async fn read_device(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    operate(&hub, &id, bytes, |path, _| Ok(DeviceRequest::Read { path })).await
}

async fn write_device(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    operate(&hub, &id, bytes, |path, op| {
        let value = op
            .value
            .ok_or_else(|| ApiError::bad("a write needs a value"))?;
        Ok(DeviceRequest::Write {
            path,
            mode: WriteMode::Replace,
            content: Content::single(path, value),
        })
    })
    .await
}

async fn execute_device(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    operate(&hub, &id, bytes, |path, op| {
        Ok(DeviceRequest::Execute {
            path,
            args: op.args,
        })
    })
    .await
}

async fn query(
    State(hub): State<Hub>,
    Params(page): Params<Page>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let text = text_body(bytes)?;
    let result = hub.query_page(&text, &page.options()?)?;
    Ok(Json(serde_json::to_value(result).map_err(ApiError::bad)?))
}

async fn list_jobs(State(hub): State<Hub>) -> Json<Value> {
    let mut parents: Vec<_> = hub
        .job_records()
        .into_iter()
        .filter(|r| r.parent_job_id.is_empty())
        .collect();
    parents.sort_by_key(|r| std::cmp::Reverse(r.start_time_utc));
    Json(json!({ "items": parents }))
}

async fn create_job(
    State(hub): State<Hub>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut body: Value = json_body(bytes)?;
    // `query` instead of `targets`: the devices its filter selects now (not both: which
    // one was meant is not ours to guess).
    if body.get("query").is_some() && body.get("targets").is_some() {
        return Err(ApiError::bad("give `targets` or `query`, not both"));
    }
    if let Some(q) = body.as_object_mut().and_then(|o| o.remove("query")) {
        let expr = twinhub::query::parse(&q.to_string()).map_err(QueryError::Parse)?;
        let targets = hub.resolve_targets(&expr)?;
        if targets.is_empty() {
            return Err(ApiError::bad("the query selects no device"));
        }
        body["targets"] = json!(targets);
    }
    let spec: JobSpec = serde_json::from_value(body).map_err(ApiError::bad)?;
    let record = hub.create_job(spec)?;
    Ok((StatusCode::CREATED, Json(json!(record))))
}

async fn get_job(State(hub): State<Hub>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    let record = hub
        .job(&id)
        .ok_or_else(|| SpecError::UnknownJob(id.clone()))?;
    Ok(Json(
        json!({"record": record, "statistics": hub.job_statistics(&id)}),
    ))
}

async fn cancel_job(
    State(hub): State<Hub>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let status = hub.cancel_job(&job_id(&id)?, CancelMode::Abandon)?;
    Ok(Json(json!({ "status": status })))
}

async fn job_children(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    Params(page): Params<Page>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(&id)?;
    if hub.job(&id).is_none() {
        return Err(SpecError::UnknownJob(id).into());
    }
    let top = page.size()?;
    let skip = page.skip.unwrap_or(0);
    let children = hub.job_children(&id);
    let total = children.len();
    let items: Vec<_> = children.into_iter().skip(skip).take(top).collect();
    Ok(Json(json!({"items": items, "total": total})))
}

async fn query_jobs(
    State(hub): State<Hub>,
    Params(page): Params<Page>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let text = text_body(bytes)?;
    let result = hub.query_jobs(&text, &page.options()?)?;
    Ok(Json(serde_json::to_value(result).map_err(ApiError::bad)?))
}

#[derive(Deserialize)]
struct EventsFrom {
    after: Option<u64>,
}

/// Server-sent events from a hub subscription: each event's `data` is the event's JSON;
/// twin changes carry their sequence number as the event id, so a reconnecting browser
/// (`Last-Event-ID`) or `?after=` resumes without a gap.
async fn events(
    State(hub): State<Hub>,
    Params(from): Params<EventsFrom>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The ids this stream hands out are sequence numbers: anything else cannot be
    // resumed from, and starting "from now on" would lose what the client asked for.
    let last_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad(format!("Last-Event-ID {v:?} is not a sequence number"))
                })?,
        ),
    };
    let options = SubscribeOptions {
        after: last_id.or(from.after),
        ..SubscribeOptions::default()
    };
    let subscription = hub.subscribe(options).map_err(|gap| {
        ApiError::new(
            StatusCode::CONFLICT,
            "feedGap",
            format!("{gap}; resume after {}", gap.resume_after()),
        )
    })?;
    // First an id alone: where the stream starts, the client's resume point until a twin
    // change brings the next one.
    let start = Event::default().id(subscription.starts_after().to_string());
    let start = futures_util::stream::once(async move { Ok(start) });
    let stream = futures_util::stream::unfold(Some(subscription), |sub| async move {
        let mut sub = sub?;
        let event = sub.recv_async().await?;
        let mut sse = Event::default().data(serde_json::to_string(&event).ok()?);
        let next = match &event {
            HubEvent::Twin(c) => {
                sse = sse.id(c.seq.to_string());
                Some(sub)
            }
            // Events were dropped: the stream ends here, its last id the resume point, so
            // that the client reconnects with `Last-Event-ID` and gets the twin changes it
            // missed from the feed (or 409 `feedGap`). Carrying on would move its last id
            // past the gap with the next change, and a reconnect would skip it.
            HubEvent::Lagged { resume_after, .. } => {
                sse = sse.id(resume_after.to_string());
                None
            }
            _ => Some(sub),
        };
        Some((Ok::<_, std::convert::Infallible>(sse), next))
    });
    Ok(Sse::new(futures_util::StreamExt::chain(start, stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}
