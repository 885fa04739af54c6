//! What a job is: its id, type and parameters, targets, and the rollout controls.

use crate::resource::DeviceError;
use crate::resource::{Lwm2mPath, ResourceType, ResourceValue, fit_value, standard_resource_type};
use crate::time::Timestamp;
use crate::twin::{DeviceId, DevicePropertyName, TwinError};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Most bytes a job id may have (IoT Hub's limit).
pub const MAX_JOB_ID_LEN: usize = 64;

/// Most properties one read or write job may name.
pub const MAX_JOB_PROPERTIES: usize = 64;

/// Most bytes of a firmware package URI (the preview's limit for `/5/0/1`).
pub const MAX_PACKAGE_URI_LEN: usize = 255;

/// The longest time a job spec may name (a device timeout, a maximum execution time, a
/// retry's backoff): 100 years. Longer ones are refused by [`JobSpec::validate`]; they
/// would pass the range of the clock the engine schedules on.
pub const MAX_JOB_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A validated job id: 1 to 64 ASCII letters, digits and `-` (IoT Hub's rule).
///
/// ```
/// use twinhub::job::JobId;
/// assert!(JobId::new("fw-rollout-2016-04").is_ok());
/// assert!(JobId::new("no_underscores").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(Arc<str>);

/// Why a string is not a valid [`JobId`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobIdError {
    /// The id is empty.
    Empty,
    /// Longer than [`MAX_JOB_ID_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside `[A-Za-z0-9-]`.
    InvalidChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
}

impl fmt::Display for JobIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobIdError::Empty => f.write_str("job id is empty"),
            JobIdError::TooLong { len } => write!(
                f,
                "job id is {len} bytes long; at most {MAX_JOB_ID_LEN} are allowed"
            ),
            JobIdError::InvalidChar { ch, at } => write!(
                f,
                "job id has {ch:?} at byte {at}; allowed are ASCII letters, digits and '-'"
            ),
        }
    }
}

impl std::error::Error for JobIdError {}

impl JobId {
    /// Validates and wraps a job id.
    pub fn new(id: &str) -> Result<Self, JobIdError> {
        if id.is_empty() {
            return Err(JobIdError::Empty);
        }
        if id.len() > MAX_JOB_ID_LEN {
            return Err(JobIdError::TooLong { len: id.len() });
        }
        if let Some((at, ch)) = id
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(JobIdError::InvalidChar { ch, at });
        }
        Ok(JobId(id.into()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Deserialising validates as [`JobId::new`] does.
impl<'de> serde::Deserialize<'de> for JobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        JobId::new(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// The preview's job types, by their wire names (`jobType`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum JobKind {
    /// `firmwareUpdate`
    FirmwareUpdate,
    /// `rebootDevice`
    RebootDevice,
    /// `factoryResetDevice`
    FactoryResetDevice,
    /// `updateDeviceConfiguration`
    UpdateDeviceConfiguration,
    /// `readDeviceProperties`
    ReadDeviceProperties,
    /// `writeDeviceProperties`
    WriteDeviceProperties,
}

impl JobKind {
    /// Every kind, in declaration order.
    pub const ALL: [JobKind; 6] = [
        JobKind::FirmwareUpdate,
        JobKind::RebootDevice,
        JobKind::FactoryResetDevice,
        JobKind::UpdateDeviceConfiguration,
        JobKind::ReadDeviceProperties,
        JobKind::WriteDeviceProperties,
    ];

    /// The preview's `jobType` string.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::FirmwareUpdate => "firmwareUpdate",
            JobKind::RebootDevice => "rebootDevice",
            JobKind::FactoryResetDevice => "factoryResetDevice",
            JobKind::UpdateDeviceConfiguration => "updateDeviceConfiguration",
            JobKind::ReadDeviceProperties => "readDeviceProperties",
            JobKind::WriteDeviceProperties => "writeDeviceProperties",
        }
    }

    /// Past participle for status messages ("6 devices updated").
    pub(crate) fn done_verb(self) -> &'static str {
        match self {
            JobKind::FirmwareUpdate => "updated",
            JobKind::RebootDevice => "rebooted",
            JobKind::FactoryResetDevice => "reset",
            JobKind::UpdateDeviceConfiguration => "configured",
            JobKind::ReadDeviceProperties => "read",
            JobKind::WriteDeviceProperties => "written",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for JobKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A job's type with its parameters: what each child does on its device.
///
/// Its JSON form names the type as the preview's `jobType` does, with the parameters
/// beside it in camelCase; a write job's values are `[path, value]` pairs:
///
/// ```
/// use twinhub::job::JobType;
/// let job: JobType = serde_json::from_str(
///     r#"{"type": "firmwareUpdate", "packageUri": "coap://fw/2.0.bin", "expectedVersion": "2.0"}"#,
/// ).unwrap();
/// assert!(matches!(job, JobType::FirmwareUpdate { .. }));
/// let job: JobType = serde_json::from_str(
///     r#"{"type": "writeDeviceProperties", "values": [["/3/0/13", {"type": "time", "value": 0}]]}"#,
/// ).unwrap();
/// assert!(matches!(job, JobType::WriteDeviceProperties { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
#[non_exhaustive]
pub enum JobType {
    /// Write `/5/0/1` (package URI), follow `/5/0/3` to Downloaded (observe plus periodic
    /// reads), execute `/5/0/2`, and succeed on State Idle with Update Result 1; then read
    /// `/3/0/3` and, if `expected_version` is set, require it.
    #[serde(rename = "firmwareUpdate", rename_all = "camelCase")]
    FirmwareUpdate {
        /// The package URI the device pulls.
        package_uri: String,
        /// The FirmwareVersion the device must report afterwards, if checked.
        #[serde(default)]
        expected_version: Option<String>,
    },
    /// Execute `/3/0/4`. Succeeds when the device answers, or (with
    /// `wait_for_registration`) when it has registered again.
    #[serde(rename = "rebootDevice", rename_all = "camelCase")]
    Reboot {
        /// Wait for the device to register again before succeeding.
        #[serde(default)]
        wait_for_registration: bool,
    },
    /// Execute `/3/0/5`; completion as for [`JobType::Reboot`].
    #[serde(rename = "factoryResetDevice", rename_all = "camelCase")]
    FactoryReset {
        /// Wait for the device to register again before succeeding.
        #[serde(default)]
        wait_for_registration: bool,
    },
    /// Write `/10241/0/1` (name) and `/10241/0/2` (value), then execute `/10241/0/3`.
    #[serde(rename = "updateDeviceConfiguration", rename_all = "camelCase")]
    ConfigurationUpdate {
        /// ConfigName.
        name: String,
        /// ConfigValue.
        value: String,
    },
    /// Read each path; the values come out of [`JobEngine::poll_twin_update`](super::JobEngine::poll_twin_update).
    /// A NaN or infinite float answered at a path read (or under it) cannot refresh the
    /// property (the twin refuses it, counted in `HubStats::property_errors`, and keeps
    /// what it had): the child fails with `rejected:badPayload`, its message naming the
    /// path. One the device adds unasked goes to the twin the same way, but is no part of
    /// the job.
    #[serde(rename = "readDeviceProperties", rename_all = "camelCase")]
    ReadDeviceProperties {
        /// Resource paths to read.
        paths: Vec<Lwm2mPath>,
    },
    /// Write each value (replace), one Write per value, in order. The twin changes when the
    /// device reports, not here.
    ///
    /// What is checked where:
    ///
    /// - at creation, by [`JobSpec::validate`] (so by [`JobEngine::create`](super::JobEngine::create)
    ///   and `Hub::create_job` alike, in every build): 1 to 64 resource paths, floats
    ///   finite, then each value against its resource's type in the standard objects'
    ///   table ([`standard_resource_type`](crate::resource::standard_resource_type):
    ///   Security, Server, Device, Firmware Update and the vendor Config object `/10241`):
    ///   one that can never fit (`-1` for an Unsigned Integer, a float for an Integer, a
    ///   string for an Integer such as `/3/0/9`) is [`SpecError::ValueDoesNotFit`], and
    ///   nothing is created. A value the server converts passes (an integer for a Float or
    ///   a String resource, 0 or 1 for a Boolean), and so does any value at a resource the
    ///   table does not know (IPSO and other vendor objects). A job restored from the
    ///   store is not checked again: one an older build stored loads as it was;
    /// - at run time, over the LwM2M server, each value against the server's types (the
    ///   standard table, and first any a service gave for other objects) before it is
    ///   sent (`lwm2m::content::fit_to_types`), and over the in-memory fleet (cargo
    ///   feature `memory-fleet`, with or without `lwm2m`) against the standard table by
    ///   the same rule: one that does not fit fails the child with `rejected:badPayload`,
    ///   and neither it nor the values after it are written; the values before it were.
    #[serde(rename = "writeDeviceProperties", rename_all = "camelCase")]
    WriteDeviceProperties {
        /// `(resource path, value)` pairs.
        values: Vec<(Lwm2mPath, ResourceValue)>,
    },
}

impl JobType {
    /// A read job over device property names: the preview's well-known names
    /// (`FirmwareVersion`, `BatteryLevel`, ...) or resource paths (`/3303/0/5700`).
    ///
    /// ```
    /// use twinhub::job::JobType;
    /// use twinhub::Lwm2mPath;
    /// let job = JobType::read_properties(&["BatteryLevel", "/3303/0/5700"]).unwrap();
    /// let JobType::ReadDeviceProperties { paths } = job else { unreachable!() };
    /// assert_eq!(paths, vec![Lwm2mPath::resource(3, 0, 9), Lwm2mPath::resource(3303, 0, 5700)]);
    /// assert!(JobType::read_properties(&["Battery"]).is_err());
    /// ```
    pub fn read_properties(names: &[&str]) -> Result<JobType, TwinError> {
        let paths = names
            .iter()
            .map(|n| DevicePropertyName::parse(n).map(|p| p.path()))
            .collect::<Result<_, _>>()?;
        Ok(JobType::ReadDeviceProperties { paths })
    }

    /// A write job over device property names (well-known names or resource paths).
    pub fn write_properties(values: &[(&str, ResourceValue)]) -> Result<JobType, TwinError> {
        let values = values
            .iter()
            .map(|(n, v)| DevicePropertyName::parse(n).map(|p| (p.path(), v.clone())))
            .collect::<Result<_, _>>()?;
        Ok(JobType::WriteDeviceProperties { values })
    }

    /// The kind, for history and statistics.
    pub fn kind(&self) -> JobKind {
        match self {
            JobType::FirmwareUpdate { .. } => JobKind::FirmwareUpdate,
            JobType::Reboot { .. } => JobKind::RebootDevice,
            JobType::FactoryReset { .. } => JobKind::FactoryResetDevice,
            JobType::ConfigurationUpdate { .. } => JobKind::UpdateDeviceConfiguration,
            JobType::ReadDeviceProperties { .. } => JobKind::ReadDeviceProperties,
            JobType::WriteDeviceProperties { .. } => JobKind::WriteDeviceProperties,
        }
    }
}

/// Failure classes that abort and retry rules select on (AWS IoT's FAILED / REJECTED /
/// TIMED_OUT, plus offline and deferred). JSON: `timedOut`, `rejected`, `deviceOffline`,
/// `deviceError`, `deferred`.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum FailureKind {
    /// The device did not answer, or the per-device timeout ran out.
    TimedOut,
    /// The device refused an operation (a 4.xx/5.xx answer), or cancelled a firmware
    /// update itself (Update Result 10: a cancel we did not ask for).
    Rejected,
    /// The device stayed offline.
    DeviceOffline,
    /// The device ran the operation and reported a failure (e.g. an Update Result code).
    DeviceError,
    /// The device deferred the firmware update (Update Result 11, LwM2M 1.1) and had not
    /// applied it when the per-device timeout ran out
    /// ([`FailureReason::FirmwareUpdateDeferred`]). A retry rule on it asks again.
    Deferred,
}

impl FailureKind {
    /// Every kind, in declaration order.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::TimedOut,
        FailureKind::Rejected,
        FailureKind::DeviceOffline,
        FailureKind::DeviceError,
        FailureKind::Deferred,
    ];
}

/// Why one child job failed. JSON: `{"kind": "timedOut"}`,
/// `{"kind": "rejected", "detail": "notFound"}`, `{"kind": "notAnnounced", "detail": {"object": 10241}}`, ...
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "camelCase")]
#[non_exhaustive]
pub enum FailureReason {
    /// No answer in time: the per-device timeout ran out, or the transport gave up.
    TimedOut,
    /// The device was offline when its timeout or the job's time ran out.
    DeviceOffline,
    /// The device's twin was removed from the registry before its step finished. Never
    /// retried, and left out of abort rules (neither failed nor finished there: removing
    /// decommissioned devices does not abort a rollout); [`FailureReason::kind`] calls it
    /// [`FailureKind::DeviceOffline`].
    DeviceRemoved,
    /// The device refused an operation.
    Rejected(DeviceError),
    /// The step addresses an object the device did not announce in its registration;
    /// nothing was sent.
    NotAnnounced {
        /// The object id (e.g. 10241 for the configuration object).
        object: u16,
    },
    /// The firmware update failed with this Update Result (`/5/0/5`) code. Its kind is
    /// [`FailureKind::DeviceError`], but for 10 (the update was cancelled on the device:
    /// the engine never cancels one, so someone else did) [`FailureKind::Rejected`].
    FirmwareUpdateFailed {
        /// The Update Result code (2..=10, or a code LwM2M does not define).
        result: u8,
    },
    /// The device deferred the firmware update (Update Result 11, LwM2M 1.1: it keeps the
    /// package and may apply it later, within its Maximum Defer Period `/5/0/13`) and had
    /// not applied it when the attempt's per-device timeout (or the job's time) ran out.
    /// Until then a deferral is no failure: the child keeps waiting for the update.
    FirmwareUpdateDeferred,
    /// The update finished but the device reports another firmware version.
    UnexpectedVersion {
        /// The version the job expected.
        expected: String,
        /// The version the device reports.
        actual: String,
    },
}

impl FailureReason {
    /// Its class, for abort and retry rules.
    pub fn kind(&self) -> FailureKind {
        match self {
            FailureReason::TimedOut => FailureKind::TimedOut,
            FailureReason::DeviceOffline | FailureReason::DeviceRemoved => {
                FailureKind::DeviceOffline
            }
            FailureReason::Rejected(_) | FailureReason::NotAnnounced { .. } => {
                FailureKind::Rejected
            }
            FailureReason::FirmwareUpdateFailed { result: 10 } => FailureKind::Rejected,
            FailureReason::FirmwareUpdateFailed { .. }
            | FailureReason::UnexpectedVersion { .. } => FailureKind::DeviceError,
            FailureReason::FirmwareUpdateDeferred => FailureKind::Deferred,
        }
    }

    /// The short, stable `failureReason` string of the job history: `timedOut`,
    /// `deviceOffline`, `deviceRemoved`, `rejected:<CoAP code or cause>` (`rejected:4.04`,
    /// `rejected:reset`, `rejected:badPayload`, ...), `objectNotAnnounced:<object id>`,
    /// `deviceError:<Update Result>`, `deferred` or `unexpectedVersion`. The status message
    /// spells it out.
    ///
    /// ```
    /// use twinhub::job::FailureReason;
    /// use twinhub::resource::DeviceError;
    /// assert_eq!(FailureReason::Rejected(DeviceError::NotFound).code(), "rejected:4.04");
    /// assert_eq!(FailureReason::NotAnnounced { object: 10241 }.code(), "objectNotAnnounced:10241");
    /// ```
    pub fn code(&self) -> String {
        match self {
            FailureReason::TimedOut => "timedOut".into(),
            FailureReason::DeviceOffline => "deviceOffline".into(),
            FailureReason::DeviceRemoved => "deviceRemoved".into(),
            FailureReason::Rejected(e) => format!("rejected:{}", device_error_code(e)),
            FailureReason::NotAnnounced { object } => format!("objectNotAnnounced:{object}"),
            FailureReason::FirmwareUpdateFailed { result } => format!("deviceError:{result}"),
            FailureReason::FirmwareUpdateDeferred => "deferred".into(),
            FailureReason::UnexpectedVersion { .. } => "unexpectedVersion".into(),
        }
    }
}

/// A short code for a device error: its CoAP response code (`4.04`) or its cause.
fn device_error_code(e: &DeviceError) -> String {
    match e {
        DeviceError::BadRequest => "4.00".into(),
        DeviceError::Unauthorized => "4.01".into(),
        DeviceError::NotFound => "4.04".into(),
        DeviceError::MethodNotAllowed => "4.05".into(),
        DeviceError::NotAcceptable => "4.06".into(),
        DeviceError::UnsupportedContentFormat => "4.15".into(),
        DeviceError::Code(c, d) => format!("{c}.{d:02}"),
        DeviceError::NotRegistered => "notRegistered".into(),
        DeviceError::RegistrationEnded => "registrationEnded".into(),
        DeviceError::QueueFull => "queueFull".into(),
        DeviceError::BadPayload(_) => "badPayload".into(),
        DeviceError::Reset => "reset".into(),
    }
}

/// The LWM2M 1.1 meaning of a Firmware Update Result code.
pub fn update_result_text(code: u8) -> &'static str {
    match code {
        0 => "initial value",
        1 => "success",
        2 => "not enough flash memory",
        3 => "out of RAM",
        4 => "connection lost during download",
        5 => "integrity check failure",
        6 => "unsupported package type",
        7 => "invalid URI",
        8 => "firmware update failed",
        9 => "unsupported protocol",
        10 => "update cancelled",
        11 => "update deferred",
        _ => "unknown result code",
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::TimedOut => f.write_str("timed out"),
            FailureReason::DeviceOffline => f.write_str("device offline"),
            FailureReason::DeviceRemoved => f.write_str("the device's twin was removed"),
            FailureReason::Rejected(e) => write!(f, "rejected: {e}"),
            FailureReason::NotAnnounced { object } => write!(
                f,
                "object /{object} not announced: the device's registration does not list it, so nothing was sent"
            ),
            FailureReason::FirmwareUpdateFailed { result: 10 } => f.write_str(
                "the firmware update was cancelled on the device, not by this job (update result 10)",
            ),
            FailureReason::FirmwareUpdateFailed { result } => write!(
                f,
                "firmware update failed: {} (update result {result})",
                update_result_text(*result)
            ),
            FailureReason::FirmwareUpdateDeferred => f.write_str(
                "the device deferred the firmware update (update result 11) and had not applied it in time",
            ),
            FailureReason::UnexpectedVersion { expected, actual } => write!(
                f,
                "device reports firmware version {actual:?}, expected {expected:?}"
            ),
        }
    }
}

/// Exponential ramp-up of the rollout rate (AWS IoT's `exponentialRate`): start at
/// `base_per_minute`, multiply by `increment_factor` every `every_succeeded` successes,
/// never above the rollout's `max_per_minute`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExponentialRamp {
    /// Starting rate, devices per minute (>= 1).
    pub base_per_minute: u32,
    /// Growth factor, 1.1 to 5.0.
    pub increment_factor: f64,
    /// Successes between increments (>= 1).
    pub every_succeeded: u32,
}

/// How fast a job starts children.
#[derive(Clone, Copy, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Rollout {
    /// At most this many children start in any sliding 60-second window.
    pub max_per_minute: Option<u32>,
    /// Optional ramp-up; the rate is capped by `max_per_minute` when both are set.
    pub ramp: Option<ExponentialRamp>,
    /// At most this many children in progress at once (waiting for an offline device or
    /// for a retry does not count). A child whose retry comes due, or whose device comes
    /// back, while this many are in progress waits for one of them to end, and goes on
    /// before any new child starts (its resumption is not a start: `max_per_minute` does
    /// not apply to it).
    pub max_in_flight: Option<u32>,
}

/// Cancel the rest of a job when too many children fail (AWS IoT's abort criteria;
/// hawkBit's error condition).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortRule {
    /// Which failures count; `None` counts every failure.
    #[serde(default)]
    pub on: Option<FailureKind>,
    /// Abort when matching failures reach this percentage (0-100) of finished children
    /// ([`JobSpec::validate`] refuses a value outside it, and NaN).
    pub threshold_percent: f64,
    /// ... but only once at least this many children have finished (>= 1).
    pub min_finished: u32,
}

/// Retry children that failed in a given way, with exponential backoff.
///
/// [`JobSpec::validate`] (which creating a job runs) refuses a rule with more than 10
/// retries, a multiplier below 1 or not finite, a backoff past [`MAX_JOB_DURATION`], or
/// an initial backoff longer than the longest.
///
/// JSON: `{"on": "timedOut", "maxRetries": 3, "initialBackoffMs": 10000, "multiplier": 2.0,
/// "maxBackoffMs": 600000}`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryRule {
    /// Which failures are retried; `None` retries every failure.
    #[serde(default)]
    pub on: Option<FailureKind>,
    /// Retries after the first attempt (0-10).
    pub max_retries: u32,
    /// Wait before the first retry (at most `max_backoff`; 0 retries at once).
    #[serde(rename = "initialBackoffMs", with = "millis")]
    pub initial_backoff: Duration,
    /// Factor applied per further retry (finite, >= 1.0).
    pub multiplier: f64,
    /// Longest wait (at most [`MAX_JOB_DURATION`]).
    #[serde(rename = "maxBackoffMs", with = "millis")]
    pub max_backoff: Duration,
}

impl RetryRule {
    /// Retry failures of `kind` up to `max_retries` times, backing off from 10 s, x2, up
    /// to 10 min.
    pub fn new(on: Option<FailureKind>, max_retries: u32) -> Self {
        RetryRule {
            on,
            max_retries,
            initial_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(600),
        }
    }

    /// The wait before retry number `retry` (1-based): `initial_backoff` times
    /// `multiplier` to the power `retry - 1`, at most `max_backoff` (which it is also
    /// when the product is too large to compute).
    pub fn backoff(&self, retry: u32) -> Duration {
        let f = self.multiplier.powi(retry.saturating_sub(1).min(64) as i32);
        let secs = self.initial_backoff.as_secs_f64() * f;
        // Also false for NaN and infinity.
        if secs < self.max_backoff.as_secs_f64() {
            Duration::try_from_secs_f64(secs).map_or(self.max_backoff, |d| d.min(self.max_backoff))
        } else {
            self.max_backoff
        }
    }
}

/// Everything needed to create a job. Build with [`JobSpec::new`] and the setters.
///
/// ```
/// use std::time::Duration;
/// use twinhub::job::{AbortRule, JobId, JobSpec, JobType};
/// use twinhub::DeviceId;
///
/// let spec = JobSpec::new(
///     JobId::new("fw-2-0").unwrap(),
///     JobType::FirmwareUpdate {
///         package_uri: "coap://fw.example/pkg/2.0.bin".into(),
///         expected_version: Some("2.0".into()),
///     },
///     vec![DeviceId::new("dev-1").unwrap()],
/// )
/// .device_timeout(Duration::from_secs(30 * 60))
/// .max_per_minute(100)
/// .abort_rule(AbortRule { on: None, threshold_percent: 20.0, min_finished: 10 });
/// assert_eq!(spec.targets.len(), 1);
/// ```
///
/// Its JSON form (camelCase; durations in milliseconds; what is left out takes
/// [`JobSpec::new`]'s default, and `"maxExecutionTimeMs": null` means no limit). A field
/// the form does not know is an error that names it, at every level (the spec, its
/// `job`, `rollout`, `ramp`, `abortRules` and `retries`): a misspelt limit is never
/// dropped silently for its default. Deserialising checks the form only; the values'
/// ranges are [`JobSpec::validate`]'s, which creating a job runs.
///
/// ```
/// use twinhub::job::JobSpec;
/// let spec: JobSpec = serde_json::from_str(r#"{
///     "id": "reboot-all",
///     "job": {"type": "rebootDevice"},
///     "targets": ["dev-1", "dev-2"],
///     "deviceTimeoutMs": 60000,
///     "rollout": {"maxPerMinute": 100}
/// }"#).unwrap();
/// assert_eq!(spec.targets.len(), 2);
/// assert_eq!(spec.max_execution_time, Some(std::time::Duration::from_secs(86_400)));
///
/// let typo = serde_json::from_str::<JobSpec>(r#"{
///     "id": "reboot-all",
///     "job": {"type": "rebootDevice"},
///     "rollout": {"maxConcurency": 10}
/// }"#).unwrap_err();
/// assert!(typo.to_string().contains("unknown field `maxConcurency`"));
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// The parent job's id.
    pub id: JobId,
    /// What each child does.
    pub job: JobType,
    /// The devices, one child each, in rollout order. A query is resolved to this list by
    /// the caller (the hub) when the job is created: the target set is frozen. An empty
    /// list is accepted on purpose (a target query that matched nothing, as on a hosted
    /// hub): the job completes at once and reports 0 devices.
    #[serde(default)]
    pub targets: Vec<DeviceId>,
    /// Wall-clock start; `None` starts at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Timestamp>,
    /// The job ends (remaining children fail or are cancelled) this long after it starts.
    /// Default 1 day, so every job terminates.
    #[serde(
        rename = "maxExecutionTimeMs",
        with = "crate::time::millis_opt",
        default = "default_max_execution_time"
    )]
    pub max_execution_time: Option<Duration>,
    /// Time one attempt on one device may take once the device is online (the preview's
    /// firmware `Timeout`, default 30 min). Waiting for an offline device before the
    /// attempt starts is bounded only by `max_execution_time`.
    #[serde(
        rename = "deviceTimeoutMs",
        with = "millis",
        default = "default_device_timeout"
    )]
    pub device_timeout: Duration,
    /// Rate and concurrency limits.
    #[serde(default)]
    pub rollout: Rollout,
    /// Abort rules; the first that trips cancels the rest.
    #[serde(default)]
    pub abort_rules: Vec<AbortRule>,
    /// Retry rules; the first whose `on` matches a failure applies.
    #[serde(default)]
    pub retries: Vec<RetryRule>,
}

fn default_max_execution_time() -> Option<Duration> {
    Some(Duration::from_secs(86_400))
}

fn default_device_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

use crate::time::millis;

impl JobSpec {
    /// A job with the defaults: start now, 1-day maximum, 30-minute device timeout, no
    /// rate limit, no abort or retry rules.
    pub fn new(id: JobId, job: JobType, targets: Vec<DeviceId>) -> Self {
        JobSpec {
            id,
            job,
            targets,
            start_at: None,
            max_execution_time: default_max_execution_time(),
            device_timeout: default_device_timeout(),
            rollout: Rollout::default(),
            abort_rules: Vec::new(),
            retries: Vec::new(),
        }
    }

    /// Sets the wall-clock start time.
    pub fn start_at(mut self, t: Timestamp) -> Self {
        self.start_at = Some(t);
        self
    }

    /// Sets (or with `None` removes) the job's maximum execution time: this long after
    /// the job starts it ends, pending children cancelled, children waiting for an
    /// offline device failed as `deviceOffline`, those in progress as `timedOut` (see
    /// the [module docs](super), Parent jobs). Default 1 day. With `None` a job whose
    /// device never comes back never ends. Zero or more than [`MAX_JOB_DURATION`] is
    /// refused at creation ([`SpecError::InvalidParameter`], `maxExecutionTime`).
    pub fn max_execution_time(mut self, d: Option<Duration>) -> Self {
        self.max_execution_time = d;
        self
    }

    /// Sets the per-device timeout: how long one attempt on one device may take, counted
    /// from its first operation's `Sent` (or from the attempt's start on a transport that
    /// does not report `Sent`), so time a sleeping device's request spends queued does
    /// not count. When it runs out the attempt fails as `timedOut` (`deferred` when the
    /// device deferred a firmware update) and the retry rules decide. Default 30 min.
    /// Zero or more than [`MAX_JOB_DURATION`] is refused at creation
    /// ([`SpecError::InvalidParameter`], `deviceTimeout`).
    pub fn device_timeout(mut self, d: Duration) -> Self {
        self.device_timeout = d;
        self
    }

    /// Starts at most `n` children in any sliding 60-second window
    /// ([`Rollout::max_per_minute`]); children over it stay pending
    /// ([`ChildState::Pending`](crate::job::ChildState::Pending)) until the window moves
    /// on. A child resuming after a retry or its device's return is no start and is not
    /// counted. Default: no limit. 0 is refused at creation
    /// ([`SpecError::InvalidParameter`], `rollout`).
    pub fn max_per_minute(mut self, n: u32) -> Self {
        self.rollout.max_per_minute = Some(n);
        self
    }

    /// Sets an exponential ramp-up.
    pub fn ramp(mut self, ramp: ExponentialRamp) -> Self {
        self.rollout.ramp = Some(ramp);
        self
    }

    /// Keeps at most `n` children in progress at once ([`Rollout::max_in_flight`]):
    /// children waiting for an offline device or for a retry do not count, and one
    /// resuming while `n` are in progress waits for a slot ahead of new starts. Default:
    /// no limit. 0 is refused at creation ([`SpecError::InvalidParameter`], `rollout`).
    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.rollout.max_in_flight = Some(n);
        self
    }

    /// Adds an abort rule.
    pub fn abort_rule(mut self, rule: AbortRule) -> Self {
        self.abort_rules.push(rule);
        self
    }

    /// Adds a retry rule.
    pub fn retry(mut self, rule: RetryRule) -> Self {
        self.retries.push(rule);
        self
    }

    /// Checks every parameter, then a write job's values against the standard objects'
    /// types; returns the first problem. No targets is no problem (see
    /// [`JobSpec::targets`]).
    ///
    /// A parameter's problem is [`SpecError::InvalidParameter`] (a NaN among a write job's
    /// values included); then each value of a
    /// [`WriteDeviceProperties`](JobType::WriteDeviceProperties) job at a resource the
    /// standard table knows ([`standard_resource_type`](crate::resource::standard_resource_type))
    /// must fit its type by the rule the LwM2M server applies before sending
    /// ([`fit_value`](crate::resource::fit_value)): the first that cannot is
    /// [`SpecError::ValueDoesNotFit`]. This holds in every build (no cargo feature), so
    /// for [`JobEngine::create`](super::JobEngine::create) without the hub too.
    ///
    /// ```
    /// use twinhub::job::{JobId, JobSpec, JobType, Misfit, SpecError};
    /// use twinhub::{DeviceId, Lwm2mPath, ResourceType, ResourceValue};
    /// let priority_order = Lwm2mPath::resource(1, 0, 13); // Unsigned Integer
    /// let job = JobType::WriteDeviceProperties {
    ///     values: vec![(priority_order, ResourceValue::Integer(-1))],
    /// };
    /// let spec = JobSpec::new(JobId::new("w").unwrap(), job, vec![DeviceId::new("d").unwrap()]);
    /// assert_eq!(
    ///     spec.validate(),
    ///     Err(SpecError::ValueDoesNotFit {
    ///         path: priority_order,
    ///         expected: ResourceType::UnsignedInteger,
    ///         reason: Misfit::OutOfRange,
    ///     }),
    /// );
    /// ```
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_parameters()?;
        self.check_value_types()
    }

    /// The parameters' checks of [`JobSpec::validate`], without the values' types: what a
    /// job read back from the store must meet. Its values were checked when it was
    /// created, by the build that created it; one an older build stored (without the type
    /// check, or before a table change) still loads, and its child fails as
    /// `rejected:badPayload` at run time, as it would have.
    pub(crate) fn validate_parameters(&self) -> Result<(), SpecError> {
        let bad = |name: &'static str, reason: &'static str| {
            Err(SpecError::InvalidParameter { name, reason })
        };
        match &self.job {
            JobType::FirmwareUpdate { package_uri, .. } => {
                if package_uri.is_empty() || package_uri.len() > MAX_PACKAGE_URI_LEN {
                    return bad("packageUri", "must be 1 to 255 bytes");
                }
            }
            JobType::ConfigurationUpdate { name, .. } => {
                if name.is_empty() {
                    return bad("name", "must not be empty");
                }
            }
            JobType::ReadDeviceProperties { paths } => {
                if paths.is_empty() || paths.len() > MAX_JOB_PROPERTIES {
                    return bad("paths", "must name 1 to 64 properties");
                }
                if paths.iter().any(|p| p.depth() != 3) {
                    return bad("paths", "must be resource paths /object/instance/resource");
                }
            }
            JobType::WriteDeviceProperties { values } => {
                if values.is_empty() || values.len() > MAX_JOB_PROPERTIES {
                    return bad("values", "must name 1 to 64 properties");
                }
                if values.iter().any(|(p, _)| p.depth() != 3) {
                    return bad("values", "must be resource paths /object/instance/resource");
                }
                // JSON (the spec's stored form) has no NaN or infinity: serde_json would
                // write `null`, which reads back as no float at all.
                if values
                    .iter()
                    .any(|(_, v)| matches!(v, ResourceValue::Float(x) if !x.is_finite()))
                {
                    return bad("values", "floats must be finite");
                }
            }
            JobType::Reboot { .. } | JobType::FactoryReset { .. } => {}
        }
        if self.device_timeout.is_zero() || self.device_timeout > MAX_JOB_DURATION {
            return bad("deviceTimeout", "must be positive and at most 100 years");
        }
        if self
            .max_execution_time
            .is_some_and(|d| d.is_zero() || d > MAX_JOB_DURATION)
        {
            return bad("maxExecutionTime", "must be positive and at most 100 years");
        }
        if self.rollout.max_per_minute == Some(0) || self.rollout.max_in_flight == Some(0) {
            return bad("rollout", "limits must be at least 1");
        }
        if let Some(r) = self.rollout.ramp
            && (r.base_per_minute == 0
                || r.every_succeeded == 0
                || !(1.1..=5.0).contains(&r.increment_factor))
        {
            return bad(
                "ramp",
                "base and step must be >= 1 and the factor within 1.1..=5",
            );
        }
        for a in &self.abort_rules {
            if !(0.0..=100.0).contains(&a.threshold_percent) || a.min_finished == 0 {
                return bad(
                    "abortRules",
                    "threshold must be 0..=100 and min_finished >= 1",
                );
            }
        }
        for r in &self.retries {
            if r.max_retries > 10
                || !r.multiplier.is_finite()
                || r.multiplier < 1.0
                || r.initial_backoff > MAX_JOB_DURATION
                || r.max_backoff > MAX_JOB_DURATION
            {
                return bad(
                    "retries",
                    "at most 10 retries, a finite multiplier >= 1 and backoffs of at most 100 years",
                );
            }
            if r.initial_backoff > r.max_backoff {
                return bad("retries", "initialBackoffMs must not exceed maxBackoffMs");
            }
        }
        Ok(())
    }

    /// A write job's values against the standard objects' types: the first that can never
    /// fit is [`SpecError::ValueDoesNotFit`]; a value at a resource the table does not
    /// know passes. After [`JobSpec::validate_parameters`] (a non-finite float is its to
    /// refuse).
    fn check_value_types(&self) -> Result<(), SpecError> {
        let JobType::WriteDeviceProperties { values } = &self.job else {
            return Ok(());
        };
        for (path, value) in values {
            let Some(expected) = standard_resource_type(path) else {
                continue;
            };
            if let Err(reason) = fit_value(value, Some(expected)) {
                return Err(SpecError::ValueDoesNotFit {
                    path: *path,
                    expected,
                    reason,
                });
            }
        }
        Ok(())
    }
}

/// Why a job could not be created (or cancelled).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SpecError {
    /// A job with this id exists.
    DuplicateJob(JobId),
    /// A device appears twice among the targets.
    DuplicateTarget(DeviceId),
    /// A parameter is out of range.
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// What is required.
        reason: &'static str,
    },
    /// No job with this id: it was never created, or it ended and retention has since
    /// dropped it ([`EngineConfig::retain_jobs`](crate::job::EngineConfig::retain_jobs),
    /// `retain_children`, `retain_for`), with its children and history.
    UnknownJob(JobId),
    /// A target device is not in the registry (the hub checks at creation).
    UnknownDevice(DeviceId),
    /// More children than the engine's u32 slots can hold.
    TooManyTargets {
        /// Children the engine would hold.
        total: u64,
    },
    /// The hub's durable store could not make the job's creation or cancellation durable;
    /// the jobs were rebuilt from the store, so the change is not in memory either (a
    /// failure in a commit's last step may have left it on disk, and then in the rebuilt
    /// jobs: look the job up before creating it again). Should the rebuild fail too, the
    /// change stays in memory, nothing of it is sent, and the hub's next commit rebuilds it
    /// away.
    NotDurable {
        /// The store's error.
        error: crate::registry::StoreFailure,
    },
    /// A value of a [`JobType::WriteDeviceProperties`] job can never fit its resource's
    /// type, which the standard objects' table knows ([`JobSpec::validate`] checks at
    /// creation, in every build): it would fail every child with `rejected:badPayload`.
    ValueDoesNotFit {
        /// The value's resource path.
        path: Lwm2mPath,
        /// The resource's type.
        expected: ResourceType,
        /// Why the value does not fit.
        reason: Misfit,
    },
}

/// Why a value cannot fit its resource's type ([`SpecError::ValueDoesNotFit`]): the
/// domain's [`resource::Misfit`](crate::resource::Misfit), under its name here too. A job's
/// error is never [`Misfit::NotFinite`] (a non-finite float is a parameter's problem).
pub use crate::resource::Misfit;

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::DuplicateJob(id) => write!(f, "job {id} already exists"),
            SpecError::DuplicateTarget(d) => write!(f, "device {d} is targeted twice"),
            SpecError::InvalidParameter { name, reason } => {
                write!(f, "job parameter {name} is invalid: {reason}")
            }
            SpecError::UnknownJob(id) => write!(f, "no job {id}"),
            SpecError::UnknownDevice(d) => write!(f, "no device {d} in the registry"),
            SpecError::TooManyTargets { total } => {
                write!(
                    f,
                    "the engine would hold {total} child jobs; at most 2^32-1 fit"
                )
            }
            SpecError::NotDurable { error } => {
                write!(
                    f,
                    "the job change could not be made durable: {}",
                    error.error()
                )
            }
            SpecError::ValueDoesNotFit {
                path,
                expected,
                reason,
            } => {
                write!(
                    f,
                    "job value at {path} does not fit the resource's type {expected:?}: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for SpecError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_type_and_rule_round_trips_through_json() {
        use crate::resource::{Lwm2mPath, ResourceValue};
        let dev = DeviceId::new("d").unwrap();
        let types = [
            JobType::FirmwareUpdate {
                package_uri: "coap://x/1".into(),
                expected_version: None,
            },
            JobType::Reboot {
                wait_for_registration: true,
            },
            JobType::FactoryReset {
                wait_for_registration: false,
            },
            JobType::ConfigurationUpdate {
                name: "n".into(),
                value: "v".into(),
            },
            JobType::ReadDeviceProperties {
                paths: vec![Lwm2mPath::resource(3, 0, 9)],
            },
            JobType::WriteDeviceProperties {
                values: vec![
                    (Lwm2mPath::resource(3, 0, 13), ResourceValue::Time(7)),
                    (
                        Lwm2mPath::resource(1, 0, 1),
                        ResourceValue::UnsignedInteger(u64::MAX),
                    ),
                    (
                        Lwm2mPath::resource(9, 0, 2),
                        ResourceValue::Opaque(vec![0, 255]),
                    ),
                    (
                        Lwm2mPath::resource(9, 0, 3),
                        ResourceValue::ObjectLink(3, 0),
                    ),
                    (Lwm2mPath::resource(9, 0, 4), ResourceValue::Float(0.5)),
                ],
            },
        ];
        for t in types {
            let spec = JobSpec::new(JobId::new("j").unwrap(), t, vec![dev.clone()])
                .start_at(Timestamp::from_millis(1_500_000_000_123))
                .max_execution_time(None)
                .device_timeout(Duration::from_millis(1_234))
                .max_per_minute(10)
                .ramp(ExponentialRamp {
                    base_per_minute: 2,
                    increment_factor: 1.5,
                    every_succeeded: 3,
                })
                .abort_rule(AbortRule {
                    on: Some(FailureKind::Rejected),
                    threshold_percent: 12.5,
                    min_finished: 4,
                })
                .retry(RetryRule::new(Some(FailureKind::TimedOut), 3));
            let json = serde_json::to_string(&spec).unwrap();
            let back: JobSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(back, spec, "{json}");
        }
        let reasons = [
            FailureReason::TimedOut,
            FailureReason::Rejected(DeviceError::Code(5, 3)),
            FailureReason::Rejected(DeviceError::BadPayload("x".into())),
            FailureReason::NotAnnounced { object: 10241 },
            FailureReason::FirmwareUpdateFailed { result: 5 },
            FailureReason::FirmwareUpdateDeferred,
            FailureReason::UnexpectedVersion {
                expected: "2".into(),
                actual: "1".into(),
            },
        ];
        for r in reasons {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(
                serde_json::from_str::<FailureReason>(&json).unwrap(),
                r,
                "{json}"
            );
        }
        assert!(serde_json::from_str::<JobId>("\"no_underscores\"").is_err());
    }

    #[test]
    fn job_ids_follow_iot_hub_rules() {
        assert_eq!(JobId::new(""), Err(JobIdError::Empty));
        assert_eq!(
            JobId::new(&"a".repeat(65)),
            Err(JobIdError::TooLong { len: 65 })
        );
        assert!(JobId::new(&"a".repeat(64)).is_ok());
        assert_eq!(
            JobId::new("a.b"),
            Err(JobIdError::InvalidChar { ch: '.', at: 1 })
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let r = RetryRule::new(None, 5);
        assert_eq!(r.backoff(1), Duration::from_secs(10));
        assert_eq!(r.backoff(2), Duration::from_secs(20));
        assert_eq!(r.backoff(3), Duration::from_secs(40));
        assert_eq!(r.backoff(20), Duration::from_secs(600));
    }

    #[test]
    fn validation_names_the_parameter() {
        let id = JobId::new("j").unwrap();
        let spec = JobSpec::new(
            id.clone(),
            JobType::ReadDeviceProperties { paths: vec![] },
            vec![],
        );
        assert!(matches!(
            spec.validate(),
            Err(SpecError::InvalidParameter { name: "paths", .. })
        ));
        let spec = JobSpec::new(
            id,
            JobType::Reboot {
                wait_for_registration: false,
            },
            vec![],
        )
        .ramp(ExponentialRamp {
            base_per_minute: 1,
            increment_factor: 9.0,
            every_succeeded: 1,
        });
        assert!(matches!(
            spec.validate(),
            Err(SpecError::InvalidParameter { name: "ramp", .. })
        ));
    }
}
