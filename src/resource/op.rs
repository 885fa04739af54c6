//! The operations the hub (or a job) asks of a device and the events a transport reports
//! back. Neutral values: the job engine and the hub speak them; a transport (the bundled
//! LWM2M server, the in-memory fleet, yours) carries them.

use super::{Content, Lwm2mPath};
use crate::twin::{DeviceId, RegistrationInfo};
use std::fmt;
use std::net::SocketAddr;

/// Identifies one submitted operation; its outcome event carries the same id.
///
/// The submitter chooses ids (the hub and the job engine draw them from one counter);
/// a transport only echoes them.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct OpId(pub u64);

/// How a write treats resources it does not mention (LWM2M §5.4.3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WriteMode {
    /// CoAP PUT: the target is replaced by the content.
    Replace,
    /// CoAP POST: only the given resources change.
    PartialUpdate,
}

/// Notification attributes for Write-Attributes and observations (LWM2M §5.1.2).
/// `None` leaves an attribute as it is.
///
/// JSON: `{"pmin": 1, "pmax": 3600}`; absent keys are `None`, any other key is refused
/// (`unknown field`), so a misspelt `"pmn"` fails rather than leaving pmin unset.
#[derive(Clone, Copy, PartialEq, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationAttributes {
    /// Minimum period between notifications, seconds.
    pub pmin: Option<u32>,
    /// Maximum period between notifications, seconds.
    pub pmax: Option<u32>,
    /// Notify when the value crosses above this threshold.
    pub gt: Option<f64>,
    /// Notify when the value crosses below this threshold.
    pub lt: Option<f64>,
    /// Notify when the value changed by at least this step.
    pub st: Option<f64>,
}

/// What to do on a device.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum DeviceRequest {
    /// Read a resource, an instance or an object.
    Read {
        /// What to read.
        path: Lwm2mPath,
    },
    /// Discover the resources and attributes under a path.
    Discover {
        /// Where to discover.
        path: Lwm2mPath,
    },
    /// Write values.
    Write {
        /// The resource or instance written (a partial update of an object is refused
        /// by the LwM2M server, [`DeviceError::BadRequest`], nothing sent: a POST to an
        /// object is a Create).
        path: Lwm2mPath,
        /// Replace or partial update.
        mode: WriteMode,
        /// The values; paths lie under `path`.
        content: Content,
    },
    /// Set notification attributes.
    WriteAttributes {
        /// Where the attributes apply.
        path: Lwm2mPath,
        /// The attributes.
        attributes: NotificationAttributes,
    },
    /// Execute a resource, with optional arguments (LWM2M text, e.g. `0='x',1`).
    Execute {
        /// The executable resource (another path is refused by the LwM2M server,
        /// [`DeviceError::BadRequest`], nothing sent: a POST to an instance is a partial
        /// Write, to an object a Create).
        path: Lwm2mPath,
        /// Raw argument text.
        args: Option<String>,
    },
    /// Create an object instance.
    Create {
        /// The object (or `/oid/iid` to choose the instance id). LwM2M sends a Create to
        /// the object, the instance id with the values, so with `/oid/iid` every value
        /// must lie under it and there must be at least one; the LwM2M server refuses
        /// another instance's value and an instance path with no values with
        /// [`DeviceError::BadPayload`], a resource path with [`DeviceError::BadRequest`],
        /// nothing sent.
        path: Lwm2mPath,
        /// The new instance's values.
        content: Content,
    },
    /// Delete an object instance.
    Delete {
        /// The instance.
        path: Lwm2mPath,
    },
    /// Start observing; values arrive as [`DeviceEvent::Notification`].
    Observe {
        /// What to observe.
        path: Lwm2mPath,
    },
    /// Stop observing. When the path is observed more than once (the hub's sync and a
    /// job), the newest observation ends and the older ones keep notifying.
    CancelObserve {
        /// What was observed.
        path: Lwm2mPath,
    },
    /// Read several paths in one exchange (LWM2M 1.1 Read-Composite: FETCH with a path
    /// list). The answer's values carry their full paths; only values at or below one of
    /// `paths` are kept.
    ReadComposite {
        /// What to read: objects, instances, resources or resource instances.
        paths: Vec<Lwm2mPath>,
    },
    /// Write values at several paths in one exchange (LWM2M 1.1 Write-Composite: iPATCH;
    /// resources not mentioned keep their values).
    WriteComposite {
        /// The values, at resource or resource-instance paths, possibly in several objects.
        content: Content,
    },
    /// Observe several paths as one observation (LWM2M 1.1 Observe-Composite). Its
    /// notifications arrive as [`DeviceEvent::Notification`] at the root path `/`, each with
    /// the values of every observed path.
    ObserveComposite {
        /// What to observe.
        paths: Vec<Lwm2mPath>,
    },
    /// Stop an Observe-Composite of the same paths (in any order). When there are several,
    /// the newest ends.
    CancelObserveComposite {
        /// The paths the observation was established with.
        paths: Vec<Lwm2mPath>,
    },
    /// Ends the device's registration at the transport, nothing sent to the device: its
    /// observations, requests in flight (failed with [`DeviceError::RegistrationEnded`]),
    /// queued requests (failed with [`DeviceError::NotRegistered`]) and address binding
    /// go, as at a de-registration, but no
    /// [`DeviceEvent::Deregistered`] follows.
    /// The device learns at its next Update (4.04 Not Found) and registers again. The hub
    /// sends it when a connected twin is removed. Only the registration with this id ends
    /// (a newer one stays): answered [`DeviceReply::Done`], or `NotRegistered` when the
    /// device holds no registration with that id.
    EndRegistration {
        /// The registration to end (the `rd/{id}` location's id, as
        /// [`RegistrationInfo::registration_id`](crate::twin::RegistrationInfo) says).
        registration_id: String,
    },
}

impl DeviceRequest {
    /// Whether LwM2M would take this request, sent as a POST to its path, for another
    /// operation (a POST's operation is told by its path alone): an Execute off a
    /// resource (at an instance it is a partial Write, at an object a Create); a
    /// partial-update Write at an object or the root (a Create), at a resource instance
    /// (no operation), or at a resource with anything but values of its resource
    /// instances (an Execute: only a multiple-instance resource, never executable, takes a
    /// partial update). The LwM2M server and the simulated fleet refuse such a request
    /// with [`DeviceError::BadRequest`], nothing sent.
    ///
    /// ```
    /// use twinhub::transport::DeviceRequest;
    /// use twinhub::Lwm2mPath;
    ///
    /// let execute = |path| DeviceRequest::Execute { path, args: None };
    /// assert!(!execute(Lwm2mPath::resource(3, 0, 4)).is_another_operation_by_path());
    /// assert!(execute(Lwm2mPath::instance(3, 0)).is_another_operation_by_path());
    /// assert!(execute(Lwm2mPath::object(3)).is_another_operation_by_path());
    /// ```
    pub fn is_another_operation_by_path(&self) -> bool {
        match self {
            DeviceRequest::Execute { path, .. } => path.depth() != 3,
            DeviceRequest::Write {
                path,
                mode: WriteMode::PartialUpdate,
                content,
            } => match path.depth() {
                0 | 1 | 4.. => true,
                2 => false,
                _ => {
                    content.values.is_empty()
                        || content
                            .values
                            .iter()
                            .any(|(p, _)| p.depth() != 4 || !path.contains(p))
                }
            },
            _ => false,
        }
    }

    /// The path the request addresses: the root `/` for the composite operations, which
    /// address the device as a whole.
    pub fn path(&self) -> &Lwm2mPath {
        match self {
            DeviceRequest::ReadComposite { .. }
            | DeviceRequest::WriteComposite { .. }
            | DeviceRequest::ObserveComposite { .. }
            | DeviceRequest::CancelObserveComposite { .. }
            | DeviceRequest::EndRegistration { .. } => &Lwm2mPath::ROOT,
            DeviceRequest::Read { path }
            | DeviceRequest::Discover { path }
            | DeviceRequest::Write { path, .. }
            | DeviceRequest::WriteAttributes { path, .. }
            | DeviceRequest::Execute { path, .. }
            | DeviceRequest::Create { path, .. }
            | DeviceRequest::Delete { path }
            | DeviceRequest::Observe { path }
            | DeviceRequest::CancelObserve { path } => path,
        }
    }
}

/// An operation for one device.
#[derive(Clone, PartialEq, Debug)]
pub struct DeviceOp {
    /// Echoed in the outcome event.
    pub id: OpId,
    /// The target device.
    pub device: DeviceId,
    /// What to do.
    pub request: DeviceRequest,
}

/// A successful answer from a device.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum DeviceReply {
    /// Values read (or the first value of an observation).
    Content(Content),
    /// Discover's answer: the CoRE link-format text.
    Links(String),
    /// Create's answer: where the new instance lives.
    Created(Lwm2mPath),
    /// Write, write-attributes, execute, delete, cancel: done, no body.
    Done,
}

/// Why a device (or the way to it) refused or failed an operation. JSON: `"notFound"`,
/// `{"code": [5, 0]}`, `{"badPayload": "why"}`, ...
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum DeviceError {
    /// 4.00: the request was malformed for the device.
    BadRequest,
    /// 4.01: not authorised for this path.
    Unauthorized,
    /// 4.04: no such object, instance or resource.
    NotFound,
    /// 4.05: the operation is not allowed on this resource (e.g. writing a read-only one).
    MethodNotAllowed,
    /// 4.06: none of the acceptable formats can be produced.
    NotAcceptable,
    /// 4.15: the device does not understand the content format sent.
    UnsupportedContentFormat,
    /// Another CoAP response code (class and detail, e.g. 5.00 is `(5, 0)`).
    Code(u8, u8),
    /// The device is not registered (or its registration expired). The request never
    /// reached the device.
    NotRegistered,
    /// The request was sent, but the device's registration ended before the answer came
    /// (it de-registered, its registration expired or was ended by the service, or a new
    /// registration replaced it, or the device's Update moved it to a new address while
    /// the request was out): whether the device carried it out is unknown. Reported
    /// as the registration ends, not after the transport's exchange timeout.
    RegistrationEnded,
    /// A sleeping (queue-mode) device's queue is full.
    QueueFull,
    /// A payload could not be decoded or encoded: the device's answer (the request was
    /// carried out, its result is unreadable), or the request's own content, refused
    /// before it was sent (a value that does not fit its resource's type, a NaN: see
    /// [`fit_value`](super::fit_value), which the LwM2M server applies through
    /// `lwm2m::content::fit_to_types`; nothing reached the device).
    BadPayload(String),
    /// The device answered with a CoAP Reset: it holds no state for the request (it
    /// restarted, or does not speak the protocol the request assumed).
    Reset,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::BadRequest => f.write_str("bad request (4.00)"),
            DeviceError::Unauthorized => f.write_str("unauthorized (4.01)"),
            DeviceError::NotFound => f.write_str("not found (4.04)"),
            DeviceError::MethodNotAllowed => f.write_str("method not allowed (4.05)"),
            DeviceError::NotAcceptable => f.write_str("not acceptable (4.06)"),
            DeviceError::UnsupportedContentFormat => {
                f.write_str("unsupported content format (4.15)")
            }
            DeviceError::Code(c, d) => write!(f, "device answered {c}.{d:02}"),
            DeviceError::NotRegistered => f.write_str("device is not registered"),
            DeviceError::RegistrationEnded => {
                f.write_str("the device's registration ended before it answered")
            }
            DeviceError::QueueFull => f.write_str("device's request queue is full"),
            DeviceError::BadPayload(why) => write!(f, "bad payload: {why}"),
            DeviceError::Reset => f.write_str("device reset the request"),
        }
    }
}

impl std::error::Error for DeviceError {}

/// Why a registration was refused.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RejectReason {
    /// No device with this endpoint name exists and auto-provisioning is off.
    UnknownDevice,
    /// The device exists but is disabled.
    Disabled,
    /// The registration request was malformed (bad query or link payload).
    Malformed(String),
    /// A live registration of this endpoint answers from another address (the LWM2M
    /// server's takeover policy).
    AddressInUse,
    /// The device registered with an LWM2M version the server does not speak (LWM2M
    /// 1.1 §6.2.1: 4.12 Precondition Failed, so that the client can retry with an older
    /// version).
    UnsupportedVersion(String),
    /// The request came over a DTLS session whose authenticated identity does not belong
    /// to the endpoint it names (or, for an Update or De-register, to the registration's
    /// owner). Answered 4.03.
    IdentityMismatch,
    /// The device has credentials but the request came without an authenticated identity
    /// (plain CoAP). Answered 4.03.
    CredentialsRequired,
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::UnknownDevice => f.write_str("unknown device"),
            RejectReason::Disabled => f.write_str("device disabled"),
            RejectReason::Malformed(why) => write!(f, "malformed request: {why}"),
            RejectReason::AddressInUse => {
                f.write_str("the endpoint is registered from another address")
            }
            RejectReason::UnsupportedVersion(v) => write!(f, "unsupported LWM2M version {v:?}"),
            RejectReason::IdentityMismatch => {
                f.write_str("the DTLS identity does not belong to the endpoint")
            }
            RejectReason::CredentialsRequired => {
                f.write_str("the device has credentials; plain CoAP refused")
            }
        }
    }
}

/// Who a peer proved to be over DTLS: its PSK identity, and the device the identity
/// belongs to (none for an identity set without a device). A neutral value, so the
/// transport and the hub can name it without the `dtls` feature.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The PSK identity the peer presented and proved with the key.
    pub psk_identity: std::sync::Arc<str>,
    /// The device the identity belongs to.
    pub device: Option<DeviceId>,
}

/// How a bootstrap session ended (see [`DeviceEvent::Bootstrap`]).
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum BootstrapOutcome {
    /// Every account was written and the device acknowledged Bootstrap-Finish.
    Finished,
    /// Nobody had a plan for the endpoint: its Bootstrap-Request was answered 4.00.
    Refused,
    /// A step failed (the device refused it or did not answer); the device retries on its
    /// own. The text says which step and why.
    Failed(String),
}

/// Who ended an observation, and how (see [`DeviceEvent::ObservationEnded`]). The first
/// three are the device's doing, and come with a message from it
/// ([`by_device`](Self::by_device)); the others are the transport's.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ObservationEndCause {
    /// The device answered the Observe with its values but did not observe (no Observe
    /// option in its answer): the values come as the operation's answer, no observation
    /// follows.
    Declined,
    /// The device ended it with an answer: a notification carrying an error code (RFC
    /// 7641 §3.2; also one that arrived late from an address the device left), or a final
    /// response without Observe option.
    EndedByDevice,
    /// The device rejected a message of the observation with a CoAP Reset.
    Reset,
    /// A Cancel-Observe of the same path through this transport ended it (whoever
    /// submitted the cancel: a job cancelling its observation of a path the hub also
    /// observes ends the one observed last, which may be the hub's).
    Cancelled,
    /// The transport got no answer in time to a message of the observation (a block-wise
    /// follow-up of a notification).
    TimedOut,
    /// The transport could not keep it: the device's answer to a follow-up could not be
    /// used (a block-wise download that failed), or the device moved (NAT rebinding) and
    /// the transport could not follow it there (its peer table was full).
    Dropped,
}

impl ObservationEndCause {
    /// Whether the device ended the observation ([`Declined`](Self::Declined),
    /// [`EndedByDevice`](Self::EndedByDevice), [`Reset`](Self::Reset)): the transport
    /// heard from it. False when the transport ended it (a cancel, a time-out, one it
    /// could not keep).
    pub fn by_device(self) -> bool {
        matches!(
            self,
            ObservationEndCause::Declined
                | ObservationEndCause::EndedByDevice
                | ObservationEndCause::Reset
        )
    }
}

impl std::fmt::Display for ObservationEndCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObservationEndCause::Declined => "the device declined to observe",
            ObservationEndCause::EndedByDevice => "the device ended the observation",
            ObservationEndCause::Reset => "the device reset the observation",
            ObservationEndCause::Cancelled => "cancelled through the transport",
            ObservationEndCause::TimedOut => "no answer in time",
            ObservationEndCause::Dropped => "the transport could not keep the observation",
        })
    }
}

/// Something a transport observed about a device.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// A device registered.
    Registered {
        /// The device.
        device: DeviceId,
        /// What it announced.
        registration: RegistrationInfo,
    },
    /// A registered device updated its registration (or just said it is alive).
    RegistrationUpdated {
        /// The device.
        device: DeviceId,
        /// The registration after the update.
        registration: RegistrationInfo,
    },
    /// A live registration lost its address: another device's Register, Update or
    /// notification came from it (a NAT gave the port to that device, or two devices
    /// swapped ports). The registration goes on (its device is probably alive behind a
    /// new mapping), but nothing is sent to it until its device talks from where it is
    /// now: an Update from a new address comes as a
    /// [`DeviceEvent::RegistrationUpdated`] with that address, a fresh notification from
    /// a new address, or from the address it lost once no other registration holds it,
    /// as a [`DeviceEvent::AddressChanged`]. Sent once per loss.
    Displaced {
        /// The device whose registration lost its address.
        device: DeviceId,
        /// That registration (as
        /// [`RegistrationInfo::registration_id`](crate::twin::RegistrationInfo) says).
        registration_id: String,
    },
    /// A live registration's address changed without a registration Update: its
    /// lifetime was not refreshed and nothing the device announced changed, so it is no
    /// Update to report (Leshan, too, moves a registration on a notification without
    /// telling its registration listeners of an update). The bundled server reports so
    /// a fresh notification of one of a registration's observations from another address
    /// than the registration's (NAT rebinding seen first in a notification: its device
    /// talks from there now; requests in flight to the address left fail first), and a
    /// [`DeviceEvent::Displaced`] registration that takes back the address it lost (such
    /// a notification came from there once no other registration held it). The
    /// notification itself follows as a [`DeviceEvent::Notification`] (unless it cannot
    /// be decoded). The device is reachable at the registration's new
    /// [`address`](RegistrationInfo::address): a host resumes what the move failed, as
    /// after an Update.
    ///
    /// It carries the whole registration, as [`DeviceEvent::RegistrationUpdated`] does,
    /// so that a host that never applied it (its [`DeviceEvent::Registered`] was lost:
    /// the hub drops events past a bound while its store fails) can apply it from the
    /// move alone, as it applies an Update under an unknown registration id, without
    /// asking the transport (which runs on a thread of its own, and whose registration
    /// may have moved on by the time it is asked).
    AddressChanged {
        /// The device.
        device: DeviceId,
        /// The registration after the move: its
        /// [`address`](RegistrationInfo::address) is where it is now (never `None`);
        /// nothing else changed.
        registration: RegistrationInfo,
    },
    /// A device de-registered.
    Deregistered {
        /// The device.
        device: DeviceId,
    },
    /// A registration's lifetime (plus grace) ran out.
    Expired {
        /// The device.
        device: DeviceId,
    },
    /// A registration was refused.
    Rejected {
        /// The endpoint name it used (may not be a valid device id).
        endpoint: String,
        /// Why.
        reason: RejectReason,
        /// Where the request came from, when the transport knows.
        address: Option<SocketAddr>,
    },
    /// The outcome of a submitted operation.
    Response {
        /// The operation.
        op: OpId,
        /// The device it was for.
        device: DeviceId,
        /// The answer.
        result: Result<DeviceReply, DeviceError>,
    },
    /// A notification for an observed path, or values the device sent unasked (LWM2M
    /// Send, at the root `/`).
    Notification {
        /// The device.
        device: DeviceId,
        /// The registration it came under (the `rd/{id}` location's id, as
        /// [`RegistrationInfo::registration_id`](crate::twin::RegistrationInfo) says):
        /// the hub ends it when the device's twin is gone.
        registration_id: String,
        /// The observed path (the root `/` for an Observe-Composite).
        path: Lwm2mPath,
        /// The new values.
        content: Content,
    },
    /// A submitted operation left for the device: its first transmission went out,
    /// either at once or, for a sleeping (queue-mode) device, once the device woke and the
    /// transport took the request from its queue. Sent once per operation, before its
    /// [`DeviceEvent::Response`] (an operation answered without being sent, such as one
    /// refused as not registered or queue full, or an `EndRegistration`, has none).
    ///
    /// The job engine takes it as the moment a reboot's, factory reset's or firmware
    /// update's Execute (or a Package URI Write) may have reached the device: a
    /// registration seen before it proves nothing. Only transports that say so emit it
    /// (the transport's `reports_sent`); the hub passes it to the job engine only,
    /// never to change feeds or subscriptions.
    Sent {
        /// The operation.
        op: OpId,
        /// The device it was for.
        device: DeviceId,
    },
    /// A submitted operation got no answer in time (CoAP retransmissions exhausted, or a
    /// queued request waited too long).
    TimedOut {
        /// The operation.
        op: OpId,
        /// The device it was for.
        device: DeviceId,
    },
    /// An established observation ended without anyone cancelling it through this
    /// transport: the device declined it, answered a notification with an error, stopped
    /// it (final response, RST), or a Cancel-Observe for the same path ended it, or the
    /// transport gave up on it; `cause` says which. Whoever needs it observes again. Not
    /// sent when a registration ends (its observations all go with it).
    ObservationEnded {
        /// The device.
        device: DeviceId,
        /// The observed path (the root `/` for an Observe-Composite).
        path: Lwm2mPath,
        /// The Observe operation that had established it.
        op: OpId,
        /// Who ended it, and how: the device
        /// ([`ObservationEndCause::by_device`]) or the transport.
        cause: ObservationEndCause,
    },
    /// A bootstrap session ended (LWM2M bootstrap interface, `POST /bs`).
    Bootstrap {
        /// The endpoint name the device gave (may not be a valid device id).
        endpoint: String,
        /// Where the device asked from.
        address: Option<SocketAddr>,
        /// How it ended.
        outcome: BootstrapOutcome,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_json_refuses_unknown_keys() {
        let a: NotificationAttributes = serde_json::from_str(r#"{"pmin":1,"pmax":60}"#).unwrap();
        assert_eq!((a.pmin, a.pmax, a.gt), (Some(1), Some(60), None));
        let none: NotificationAttributes = serde_json::from_str("{}").unwrap();
        assert_eq!(none, NotificationAttributes::default());
        let err = serde_json::from_str::<NotificationAttributes>(r#"{"pmn":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn device_error_json_refuses_extra_keys() {
        let e: DeviceError = serde_json::from_str(r#"{"code":[5,0]}"#).unwrap();
        assert_eq!(e, DeviceError::Code(5, 0));
        assert_eq!(
            serde_json::from_str::<DeviceError>(r#""notFound""#).unwrap(),
            DeviceError::NotFound
        );
        assert!(serde_json::from_str::<DeviceError>(r#"{"code":[5,0],"why":"x"}"#).is_err());
        assert!(serde_json::from_str::<DeviceError>(r#""notFund""#).is_err());
    }
}
