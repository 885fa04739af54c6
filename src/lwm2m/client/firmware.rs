//! Firmware Update /5: the State / Update Result state machine of LWM2M 1.1 §E.6.
//!
//! ```text
//!              write URI (valid) / first package bytes
//!   Idle(0) ─────────────────────────────────────────▶ Downloading(1)
//!     ▲  ▲                                                │      │
//!     │  │ failure: result 2-7, 9 / cancel: result 10     │      │ complete + accepted
//!     │  └────────────────────────────────────────────────┘      ▼
//!     │  empty URI or empty package: result 0   ◀──────── Downloaded(2)
//!     │                                                    │     ▲
//!     │ update succeeded: result 1        execute Update   ▼     │ update failed: result 8
//!     └──────────────────────────────────────────── Updating(3) ─┘
//! ```
//!
//! Update Result is reset to 0 whenever a download or an update starts. The package is
//! pushed by a (block-wise) write of /5/0/0, or pulled from a `coap://` Package URI (or a
//! `coaps://` one naming the client's own server, over its DTLS session): the
//! client core then fetches it with Block2 and reports the outcome through
//! [`FirmwareUpdate::download_finished`].
//!
//! **Package URI /5/0/1** holds the URI of the pull download under way, or of the last
//! one the device accepted: it stays after that download fails for a reason of its own
//! (results 2-6) or is cancelled (10), so the server can read what failed, and empties on
//! a reset or a successful update. A URI the device refuses, with result 7 (invalid URI:
//! not parsable, over [`MAX_URI`] bytes, or answered 4.04 by its server) or 9 (unsupported
//! protocol), is not kept, nor the one it replaced; the write still answers 2.04 (Update
//! Result is where object 5 reports it). So /5/0/1 never names a package the device
//! refused. The spec is silent here; Wakaama's client keeps no URI at all and Anjay does
//! not store one with an unsupported scheme.

use super::model::{Access, Object, ObjectDef, ObjectError, ResourceData, ResourceDef};
use crate::lwm2m::{Lwm2mPath, ResourceType as T, ResourceValue as V};
use crate::transport::WriteMode;
use std::borrow::Cow;

/// The longest Package URI accepted, in bytes (OMA object 5: String, 0..255 bytes); a
/// longer one is refused with result 7 (invalid URI) and not kept.
pub const MAX_URI: usize = 255;

/// Firmware Update /5 (LWM2M 1.1 object, the resources the client implements).
pub static FIRMWARE_UPDATE: ObjectDef = ObjectDef {
    id: 5,
    name: Cow::Borrowed("Firmware Update"),
    version: None,
    multiple: false,
    resources: Cow::Borrowed(&[
        ResourceDef::new(0, "Package", T::Opaque, Access::Write),
        ResourceDef::new(1, "Package URI", T::String, Access::ReadWrite),
        ResourceDef::executable(2, "Update"),
        ResourceDef::new(3, "State", T::Integer, Access::Read),
        ResourceDef::new(5, "Update Result", T::Integer, Access::Read),
        ResourceDef::new(6, "PkgName", T::String, Access::Read),
        ResourceDef::new(7, "PkgVersion", T::String, Access::Read),
        ResourceDef::multiple(
            8,
            "Firmware Update Protocol Support",
            T::Integer,
            Access::Read,
        ),
        ResourceDef::new(
            9,
            "Firmware Update Delivery Method",
            T::Integer,
            Access::Read,
        ),
        ResourceDef::executable(10, "Cancel"),
    ]),
};

/// /5/0/3 State.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum UpdateState {
    /// 0: nothing downloaded (or reset).
    Idle = 0,
    /// 1: a package is being received.
    Downloading = 1,
    /// 2: a complete package is stored and verified.
    Downloaded = 2,
    /// 3: the update is being applied.
    Updating = 3,
}

/// /5/0/5 Update Result.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[non_exhaustive]
pub enum UpdateResult {
    /// 0: initial value; reset when a download or update starts.
    Initial = 0,
    /// 1: the firmware was updated.
    Success = 1,
    /// 2: not enough flash for the package.
    NotEnoughFlash = 2,
    /// 3: out of RAM during download.
    OutOfRam = 3,
    /// 4: the connection was lost during download.
    ConnectionLost = 4,
    /// 5: the package failed its integrity check.
    IntegrityCheckFailure = 5,
    /// 6: the package type is not supported.
    UnsupportedPackage = 6,
    /// 7: the Package URI is invalid.
    InvalidUri = 7,
    /// 8: applying the update failed.
    UpdateFailed = 8,
    /// 9: the URI's protocol is not supported.
    UnsupportedProtocol = 9,
    /// 10: the update was cancelled (LWM2M 1.1 Cancel).
    Cancelled = 10,
}

/// Called with a complete package; an error leaves the state Idle with that result.
pub type PackageFn = Box<dyn FnMut(&[u8]) -> Result<(), UpdateResult> + Send>;
/// Called when the server executes Update; `Ok` means the update started (state Updating,
/// finish it with [`FirmwareUpdate::update_finished`], in a running client
/// [`Lwm2mClient::firmware_update_finished`](super::Lwm2mClient::firmware_update_finished)
/// through [`DeviceThread::with`](super::DeviceThread::with)); an error fails it at once.
/// Returning `Ok` does not finish the update: until it is finished, a firmware job waits
/// for it (up to its per-device timeout).
pub type UpdateFn = Box<dyn FnMut() -> Result<(), UpdateResult> + Send>;

/// A package download the client should perform (the Package URI was written).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PullRequest {
    /// The `coap://` URI as written.
    pub uri: String,
}

/// The Firmware Update object /5, instance 0.
///
/// ```
/// use twinhub::lwm2m::client::{FirmwareUpdate, UpdateResult, UpdateState};
/// let mut fw = FirmwareUpdate::new().on_package(|p| {
///     if p.starts_with(b"FW") { Ok(()) } else { Err(UpdateResult::UnsupportedPackage) }
/// });
/// fw.write_package(b"FW-1.1").unwrap();
/// assert_eq!(fw.state(), UpdateState::Downloaded);
/// fw.execute_update().unwrap();
/// assert_eq!(fw.state(), UpdateState::Updating);
/// fw.update_finished(Ok(()));
/// assert_eq!((fw.state(), fw.result()), (UpdateState::Idle, UpdateResult::Success));
/// ```
pub struct FirmwareUpdate {
    state: UpdateState,
    result: UpdateResult,
    uri: String,
    pkg_name: String,
    pkg_version: String,
    on_package: Option<PackageFn>,
    on_update: Option<UpdateFn>,
    pull: Option<PullRequest>,
    max_package: usize,
    changes: Vec<Lwm2mPath>,
    /// `coaps` Package URIs can be downloaded (the client talks to its server over DTLS);
    /// set by the client (see [`FirmwareUpdate::write_uri`]).
    coaps: bool,
    /// A Block1 push of /5/0/0 is under way (State Downloading since its first block).
    pushing: bool,
}

impl std::fmt::Debug for FirmwareUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirmwareUpdate").finish_non_exhaustive()
    }
}

impl Default for FirmwareUpdate {
    fn default() -> Self {
        FirmwareUpdate::new()
    }
}

impl FirmwareUpdate {
    /// State Idle, result Initial, packages up to 4 MiB, no callbacks (a package is
    /// accepted as is; Update succeeds to Updating and waits for `update_finished`: see
    /// [`UpdateFn`] and the [module](super) docs' example, which finishes it when
    /// [`ClientEvent::Executed`](super::ClientEvent::Executed) names `/5/0/2`).
    pub fn new() -> Self {
        FirmwareUpdate {
            state: UpdateState::Idle,
            result: UpdateResult::Initial,
            uri: String::new(),
            pkg_name: String::new(),
            pkg_version: String::new(),
            on_package: None,
            on_update: None,
            pull: None,
            max_package: 4 << 20,
            changes: Vec::new(),
            coaps: false,
            pushing: false,
        }
    }

    /// Sets the callback that receives a complete package (pushed or pulled).
    pub fn on_package(
        mut self,
        f: impl FnMut(&[u8]) -> Result<(), UpdateResult> + Send + 'static,
    ) -> Self {
        self.on_package = Some(Box::new(f));
        self
    }

    /// Sets the callback run when the server executes Update.
    pub fn on_update(
        mut self,
        f: impl FnMut() -> Result<(), UpdateResult> + Send + 'static,
    ) -> Self {
        self.on_update = Some(Box::new(f));
        self
    }

    /// The largest package accepted; a bigger one fails with NotEnoughFlash.
    pub fn max_package(mut self, bytes: usize) -> Self {
        self.max_package = bytes;
        self
    }

    /// Starts from a given result, e.g. `Success` after rebooting into a new image.
    pub fn with_result(mut self, result: UpdateResult) -> Self {
        self.result = result;
        self
    }

    /// Sets PkgName /5/0/6 and PkgVersion /5/0/7.
    pub fn set_package_info(&mut self, name: &str, version: &str) {
        self.pkg_name = name.to_string();
        self.pkg_version = version.to_string();
        self.changed(6);
        self.changed(7);
    }

    /// The current State.
    pub fn state(&self) -> UpdateState {
        self.state
    }

    /// The current Update Result.
    pub fn result(&self) -> UpdateResult {
        self.result
    }

    /// The Package URI last written.
    pub fn package_uri(&self) -> &str {
        &self.uri
    }

    fn changed(&mut self, rid: u16) {
        let p = Lwm2mPath::resource(5, 0, rid);
        if !self.changes.contains(&p) {
            self.changes.push(p);
        }
    }

    fn set(&mut self, state: UpdateState, result: UpdateResult) {
        if state != UpdateState::Downloading {
            self.pushing = false;
        }
        if self.state != state {
            self.state = state;
            self.changed(3);
        }
        if self.result != result {
            self.result = result;
            self.changed(5);
        }
    }

    fn reset(&mut self) {
        self.pull = None;
        if !self.uri.is_empty() {
            self.uri.clear();
            self.changed(1);
        }
        self.set(UpdateState::Idle, UpdateResult::Initial);
    }

    fn accept_package(&mut self, package: &[u8]) {
        if package.len() > self.max_package {
            self.set(UpdateState::Idle, UpdateResult::NotEnoughFlash);
            return;
        }
        let verdict = match self.on_package.as_mut() {
            Some(f) => f(package),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => self.set(UpdateState::Downloaded, UpdateResult::Initial),
            Err(r) => self.set(UpdateState::Idle, r),
        }
    }

    /// A write of /5/0/1. Empty resets to Idle (result 0). In Idle, a `coap://` URI (or a
    /// `coaps://` one, when the client talks to its server over DTLS) starts Downloading
    /// (result 0) and queues a [`PullRequest`]; an unparsable URI (or one longer than 255
    /// bytes) sets result 7 and another scheme result 9, staying Idle with /5/0/1 empty
    /// (the refused URI is not kept). Other states refuse a non-empty URI (4.05).
    pub fn write_uri(&mut self, uri: &str) -> Result<(), ObjectError> {
        if uri.is_empty() {
            if self.state == UpdateState::Updating {
                return Err(ObjectError::MethodNotAllowed);
            }
            self.reset();
            return Ok(());
        }
        if self.state != UpdateState::Idle {
            return Err(ObjectError::MethodNotAllowed);
        }
        if uri.len() > MAX_URI {
            self.refuse_uri(UpdateResult::InvalidUri);
            return Ok(());
        }
        match parse_coap_uri(uri) {
            Ok(u) if u.secure && !self.coaps => self.refuse_uri(UpdateResult::UnsupportedProtocol),
            Ok(_) => {
                if self.uri != uri {
                    self.uri = uri.to_string();
                    self.changed(1);
                }
                self.set(UpdateState::Downloading, UpdateResult::Initial);
                self.pull = Some(PullRequest {
                    uri: uri.to_string(),
                });
            }
            Err(r) => self.refuse_uri(r),
        }
        Ok(())
    }

    /// The Package URI is refused (result 7, invalid URI, or 9, unsupported protocol):
    /// Idle with that result, and /5/0/1 empty (a refused URI is not kept, nor the one it
    /// replaced: see the module docs).
    fn refuse_uri(&mut self, result: UpdateResult) {
        self.pull = None;
        if !self.uri.is_empty() {
            self.uri.clear();
            self.changed(1);
        }
        self.set(UpdateState::Idle, result);
    }

    /// A write of /5/0/0 with a complete package. Empty (or a single `\0`) resets to Idle,
    /// result 0. In Idle the package goes Downloading → Downloaded, or back to Idle with the
    /// callback's result. Other states refuse (4.05).
    pub fn write_package(&mut self, package: &[u8]) -> Result<(), ObjectError> {
        if package.is_empty() || package == [0] {
            if self.state == UpdateState::Updating {
                return Err(ObjectError::MethodNotAllowed);
            }
            self.reset();
            return Ok(());
        }
        if !self.takes_package() {
            return Err(ObjectError::MethodNotAllowed);
        }
        self.set(UpdateState::Downloading, UpdateResult::Initial);
        self.accept_package(package);
        Ok(())
    }

    /// A package is taken in Idle, or at the end of a Block1 push this object is in.
    fn takes_package(&self) -> bool {
        self.state == UpdateState::Idle || (self.state == UpdateState::Downloading && self.pushing)
    }

    /// The first block of a Block1 push of /5/0/0 arrived: Idle → Downloading (OMA object
    /// 5: State 1 while the package is received), so the server sees the push under way.
    /// Outside Idle, 4.05, before any more blocks are sent.
    pub(crate) fn push_started(&mut self) -> Result<(), ObjectError> {
        if self.state != UpdateState::Idle {
            return Err(ObjectError::MethodNotAllowed);
        }
        self.set(UpdateState::Downloading, UpdateResult::Initial);
        self.pushing = true;
        Ok(())
    }

    /// Whether a Block1 push is under way (a Cancel or a reset ends it).
    pub(crate) fn push_under_way(&self) -> bool {
        self.pushing && self.state == UpdateState::Downloading
    }

    /// The push under way broke off: Idle with `result` (2, not enough flash, for a
    /// package too large; 4, connection lost, for a block out of order or another
    /// transfer).
    pub(crate) fn push_abandoned(&mut self, result: UpdateResult) {
        if self.push_under_way() {
            self.set(UpdateState::Idle, result);
        }
    }

    /// Whether /5/0/8 (Firmware Update Protocol Support) lists CoAPS (1) beside CoAP (0).
    /// The client sets it when it talks to its server over DTLS: it then downloads a
    /// `coaps` Package URI that names its server's address over that session (any other
    /// `coaps` URI fails with result 9, unsupported protocol).
    pub(crate) fn set_coaps(&mut self, on: bool) {
        self.coaps = on;
    }

    /// Takes the queued package download, if the Package URI asked for one.
    pub fn take_pull_request(&mut self) -> Option<PullRequest> {
        self.pull.take()
    }

    /// The outcome of a pull download. Ignored unless the state is Downloading (a
    /// cancelled or reset download's late outcome changes nothing). A failure goes Idle
    /// with its result; result 7 (invalid URI, e.g. the package server answered 4.04) or 9
    /// (unsupported protocol) also empties /5/0/1, as a refused write does.
    pub fn download_finished(&mut self, outcome: Result<&[u8], UpdateResult>) {
        if self.state != UpdateState::Downloading {
            return;
        }
        match outcome {
            Ok(package) => self.accept_package(package),
            Err(r @ (UpdateResult::InvalidUri | UpdateResult::UnsupportedProtocol)) => {
                self.refuse_uri(r)
            }
            Err(r) => self.set(UpdateState::Idle, r),
        }
    }

    /// An execute of /5/0/2. Only in Downloaded (else 4.05): result resets to 0, the
    /// update callback runs; `Ok` moves to Updating, an error stays Downloaded with it.
    pub fn execute_update(&mut self) -> Result<(), ObjectError> {
        if self.state != UpdateState::Downloaded {
            return Err(ObjectError::MethodNotAllowed);
        }
        self.set(UpdateState::Downloaded, UpdateResult::Initial);
        let verdict = match self.on_update.as_mut() {
            Some(f) => f(),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => self.set(UpdateState::Updating, UpdateResult::Initial),
            Err(r) => self.set(UpdateState::Downloaded, r),
        }
        Ok(())
    }

    /// The application's report that the update it started has ended: success → Idle with
    /// result 1; failure → Downloaded with the given result, 8 (update failed) when it is
    /// no failure code (0 or 1: Downloaded with 0 is what a package never run says).
    /// Ignored unless Updating.
    pub fn update_finished(&mut self, outcome: Result<(), UpdateResult>) {
        if self.state != UpdateState::Updating {
            return;
        }
        match outcome {
            Ok(()) => {
                self.set(UpdateState::Idle, UpdateResult::Success);
                if !self.uri.is_empty() {
                    self.uri.clear();
                    self.changed(1);
                }
            }
            Err(r) => {
                let r = match r {
                    UpdateResult::Initial | UpdateResult::Success => UpdateResult::UpdateFailed,
                    r => r,
                };
                self.set(UpdateState::Downloaded, r)
            }
        }
    }

    /// An execute of /5/0/10 Cancel: Downloading or Downloaded → Idle with result 10;
    /// otherwise 4.05.
    pub fn cancel(&mut self) -> Result<(), ObjectError> {
        match self.state {
            UpdateState::Downloading | UpdateState::Downloaded => {
                self.pull = None;
                self.set(UpdateState::Idle, UpdateResult::Cancelled);
                Ok(())
            }
            _ => Err(ObjectError::MethodNotAllowed),
        }
    }
}

/// Where a `coap://host:port/path?query` (or `coaps://`) URI points. Only IP literals
/// and `localhost` are accepted: the sans-IO client resolves no names.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CoapUri {
    /// `coaps`: over DTLS (default port 5684, else 5683).
    pub secure: bool,
    /// The server's address.
    pub addr: std::net::SocketAddr,
    /// Uri-Path segments.
    pub path: Vec<String>,
    /// Uri-Query items.
    pub query: Vec<String>,
}

/// Parses a package URI: result 9 for another scheme, 7 for anything else wrong.
pub fn parse_coap_uri(uri: &str) -> Result<CoapUri, UpdateResult> {
    let (scheme, rest) = uri.split_once("://").ok_or(UpdateResult::InvalidUri)?;
    let secure = scheme.eq_ignore_ascii_case("coaps");
    if !secure && !scheme.eq_ignore_ascii_case("coap") {
        return Err(
            if scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+')
            {
                UpdateResult::UnsupportedProtocol
            } else {
                UpdateResult::InvalidUri
            },
        );
    }
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let host_port = |host: &str, port: &str| -> Result<std::net::SocketAddr, UpdateResult> {
        let port: u16 = if port.is_empty() {
            if secure { 5684 } else { 5683 }
        } else {
            port.parse().map_err(|_| UpdateResult::InvalidUri)?
        };
        let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            host.parse().map_err(|_| UpdateResult::InvalidUri)?
        };
        Ok(std::net::SocketAddr::new(ip, port))
    };
    let addr = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(UpdateResult::InvalidUri)?;
        let port = match after {
            "" => "",
            p => p.strip_prefix(':').ok_or(UpdateResult::InvalidUri)?,
        };
        host_port(host, port)?
    } else {
        let (host, port) = authority.split_once(':').unwrap_or((authority, ""));
        host_port(host, port)?
    };
    let split = |s: &str, sep: char| -> Vec<String> {
        s.split(sep)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(CoapUri {
        secure,
        addr,
        path: split(path, '/'),
        query: split(query, '&'),
    })
}

impl Object for FirmwareUpdate {
    fn definition(&self) -> &ObjectDef {
        &FIRMWARE_UPDATE
    }

    fn instance_ids(&self) -> Vec<u16> {
        vec![0]
    }

    fn resource_ids(&self, iid: u16) -> Vec<u16> {
        if iid != 0 {
            return Vec::new();
        }
        vec![0, 1, 2, 3, 5, 6, 7, 8, 9, 10]
    }

    fn read(&mut self, iid: u16, rid: u16) -> Result<ResourceData, ObjectError> {
        if iid != 0 {
            return Err(ObjectError::NotFound);
        }
        let s = |v: V| Ok(ResourceData::Single(v));
        match rid {
            1 => s(V::String(self.uri.clone())),
            3 => s(V::Integer(self.state as i64)),
            5 => s(V::Integer(self.result as i64)),
            6 => s(V::String(self.pkg_name.clone())),
            7 => s(V::String(self.pkg_version.clone())),
            8 => {
                let mut protocols = vec![(0, V::Integer(0))];
                if self.coaps {
                    protocols.push((1, V::Integer(1)));
                }
                Ok(ResourceData::Multiple(protocols))
            }
            // Both push and pull.
            9 => s(V::Integer(2)),
            0 | 2 | 10 => Err(ObjectError::MethodNotAllowed),
            _ => Err(ObjectError::NotFound),
        }
    }

    /// What [`FirmwareUpdate::write_package`] and [`FirmwareUpdate::write_uri`] would
    /// refuse, checked against the state before the request: a package or a URI outside
    /// Idle, a reset while Updating, a value of the wrong type. A package and a URI in one
    /// request (both non-empty) are refused as well (4.00): they would start two updates.
    fn validate_write(
        &mut self,
        iid: u16,
        writes: &[(u16, ResourceData)],
    ) -> Result<(), ObjectError> {
        if iid != 0 {
            return Err(ObjectError::NotFound);
        }
        let mut starts = 0;
        for (rid, data) in writes {
            let empty = match (rid, data) {
                (0, ResourceData::Single(V::Opaque(p))) => p.is_empty() || p[..] == [0],
                (1, ResourceData::Single(V::String(u))) => u.is_empty(),
                (0 | 1, _) => {
                    return Err(ObjectError::TypeMismatch {
                        expected: if *rid == 0 { T::Opaque } else { T::String },
                    });
                }
                _ => return Err(ObjectError::MethodNotAllowed),
            };
            let allowed = if empty {
                self.state != UpdateState::Updating
            } else {
                starts += 1;
                if *rid == 0 {
                    self.takes_package()
                } else {
                    self.state == UpdateState::Idle
                }
            };
            if !allowed {
                return Err(ObjectError::MethodNotAllowed);
            }
        }
        if starts > 1 {
            return Err(ObjectError::Rejected);
        }
        Ok(())
    }

    fn write(
        &mut self,
        iid: u16,
        rid: u16,
        data: ResourceData,
        _mode: WriteMode,
    ) -> Result<(), ObjectError> {
        if iid != 0 {
            return Err(ObjectError::NotFound);
        }
        match (rid, data) {
            (0, ResourceData::Single(V::Opaque(p))) => self.write_package(&p),
            (1, ResourceData::Single(V::String(u))) => self.write_uri(&u),
            (0 | 1, _) => Err(ObjectError::TypeMismatch {
                expected: if rid == 0 { T::Opaque } else { T::String },
            }),
            _ => Err(ObjectError::MethodNotAllowed),
        }
    }

    fn execute(&mut self, iid: u16, rid: u16, _args: &str) -> Result<(), ObjectError> {
        match (iid, rid) {
            (0, 2) => self.execute_update(),
            (0, 10) => self.cancel(),
            (0, _) => Err(ObjectError::MethodNotAllowed),
            _ => Err(ObjectError::NotFound),
        }
    }

    fn drain_changes(&mut self, out: &mut Vec<Lwm2mPath>) {
        out.append(&mut self.changes);
    }
}

#[cfg(test)]
mod tests {
    use super::UpdateResult as Res;
    use super::UpdateState::*;
    use super::*;

    fn fw() -> FirmwareUpdate {
        FirmwareUpdate::new()
            .on_package(|p| match p {
                b"bad" => Err(Res::IntegrityCheckFailure),
                b"huge" => Err(Res::NotEnoughFlash),
                _ => Ok(()),
            })
            .on_update(|| Ok(()))
    }

    fn at(s: UpdateState) -> FirmwareUpdate {
        let mut f = fw();
        match s {
            Idle => {}
            Downloading => f.write_uri("coap://127.0.0.1:5683/fw").unwrap(),
            Downloaded => f.write_package(b"ok").unwrap(),
            Updating => {
                f.write_package(b"ok").unwrap();
                f.execute_update().unwrap();
            }
        }
        assert_eq!(f.state(), s);
        f
    }

    #[test]
    fn idle_transitions() {
        let mut f = at(Idle);
        f.write_uri("coap://[::1]:5683/a/b?x=1").unwrap();
        assert_eq!((f.state(), f.result()), (Downloading, Res::Initial));
        assert_eq!(
            f.take_pull_request().unwrap().uri,
            "coap://[::1]:5683/a/b?x=1"
        );
        assert!(f.take_pull_request().is_none());

        let mut f = at(Idle);
        f.write_uri("http://example.com/fw").unwrap();
        assert_eq!((f.state(), f.result()), (Idle, Res::UnsupportedProtocol));
        f.write_uri("coap://not a host/fw").unwrap();
        assert_eq!((f.state(), f.result()), (Idle, Res::InvalidUri));
        // coaps only for a client that talks DTLS (the engine says so), and /5/0/8 says it.
        f.write_uri("coaps://127.0.0.1/fw").unwrap();
        assert_eq!((f.state(), f.result()), (Idle, Res::UnsupportedProtocol));
        assert_eq!(
            f.read(0, 8),
            Ok(ResourceData::Multiple(vec![(0, V::Integer(0))]))
        );
        f.set_coaps(true);
        assert_eq!(
            f.read(0, 8),
            Ok(ResourceData::Multiple(vec![
                (0, V::Integer(0)),
                (1, V::Integer(1))
            ]))
        );
        f.write_uri("coaps://127.0.0.1/fw").unwrap();
        assert_eq!((f.state(), f.result()), (Downloading, Res::Initial));
        f.write_uri("").unwrap();
        // A new download resets the result.
        f.write_uri("coap://localhost/fw").unwrap();
        assert_eq!((f.state(), f.result()), (Downloading, Res::Initial));

        let mut f = at(Idle);
        f.write_package(b"bad").unwrap();
        assert_eq!((f.state(), f.result()), (Idle, Res::IntegrityCheckFailure));
        f.write_package(b"good").unwrap();
        assert_eq!((f.state(), f.result()), (Downloaded, Res::Initial));

        let mut f = at(Idle).max_package(3);
        f.write_package(b"four").unwrap();
        assert_eq!((f.state(), f.result()), (Idle, Res::NotEnoughFlash));

        let mut f = at(Idle);
        assert_eq!(f.execute_update(), Err(ObjectError::MethodNotAllowed));
        assert_eq!(f.cancel(), Err(ObjectError::MethodNotAllowed));
        f.write_uri("").unwrap();
        assert_eq!((f.state(), f.result()), (Idle, Res::Initial));
    }

    #[test]
    fn downloading_transitions() {
        let mut f = at(Downloading);
        f.download_finished(Ok(b"pkg"));
        assert_eq!((f.state(), f.result()), (Downloaded, Res::Initial));

        for r in [Res::ConnectionLost, Res::OutOfRam, Res::UnsupportedPackage] {
            let mut f = at(Downloading);
            f.download_finished(Err(r));
            assert_eq!((f.state(), f.result()), (Idle, r));
        }
        let mut f = at(Downloading);
        f.download_finished(Ok(b"bad"));
        assert_eq!((f.state(), f.result()), (Idle, Res::IntegrityCheckFailure));

        let mut f = at(Downloading);
        assert_eq!(
            f.write_uri("coap://127.0.0.1/x"),
            Err(ObjectError::MethodNotAllowed)
        );
        assert_eq!(f.write_package(b"x"), Err(ObjectError::MethodNotAllowed));
        assert_eq!(f.execute_update(), Err(ObjectError::MethodNotAllowed));
        f.write_uri("").unwrap();
        assert_eq!(
            (f.state(), f.result(), f.package_uri()),
            (Idle, Res::Initial, "")
        );
        // A late outcome after the reset changes nothing.
        f.download_finished(Ok(b"pkg"));
        assert_eq!(f.state(), Idle);

        let mut f = at(Downloading);
        f.write_package(&[0]).unwrap();
        assert_eq!((f.state(), f.result()), (Idle, Res::Initial));

        let mut f = at(Downloading);
        f.cancel().unwrap();
        assert_eq!((f.state(), f.result()), (Idle, Res::Cancelled));
        assert!(f.take_pull_request().is_none());
    }

    #[test]
    fn downloaded_transitions() {
        let mut f = at(Downloaded);
        f.execute_update().unwrap();
        assert_eq!((f.state(), f.result()), (Updating, Res::Initial));

        let mut f = at(Downloaded);
        assert_eq!(
            f.write_package(b"again"),
            Err(ObjectError::MethodNotAllowed)
        );
        f.write_package(b"").unwrap();
        assert_eq!((f.state(), f.result()), (Idle, Res::Initial));

        let mut f = at(Downloaded);
        f.cancel().unwrap();
        assert_eq!((f.state(), f.result()), (Idle, Res::Cancelled));

        let mut f = FirmwareUpdate::new().on_update(|| Err(Res::UpdateFailed));
        f.write_package(b"p").unwrap();
        f.execute_update().unwrap();
        assert_eq!((f.state(), f.result()), (Downloaded, Res::UpdateFailed));
    }

    #[test]
    fn updating_transitions() {
        let mut f = at(Updating);
        assert_eq!(f.write_uri(""), Err(ObjectError::MethodNotAllowed));
        assert_eq!(f.write_package(b""), Err(ObjectError::MethodNotAllowed));
        assert_eq!(f.cancel(), Err(ObjectError::MethodNotAllowed));
        assert_eq!(f.execute_update(), Err(ObjectError::MethodNotAllowed));
        f.update_finished(Ok(()));
        assert_eq!((f.state(), f.result()), (Idle, Res::Success));

        let mut f = at(Updating);
        f.update_finished(Err(Res::UpdateFailed));
        assert_eq!((f.state(), f.result()), (Downloaded, Res::UpdateFailed));
        // Retry from Downloaded resets the result, then succeeds.
        f.execute_update().unwrap();
        assert_eq!(f.result(), Res::Initial);
        f.update_finished(Ok(()));
        assert_eq!((f.state(), f.result()), (Idle, Res::Success));
        // Ignored outside Updating.
        f.update_finished(Err(Res::UpdateFailed));
        assert_eq!((f.state(), f.result()), (Idle, Res::Success));
    }

    #[test]
    fn changes_report_state_and_result() {
        let mut f = at(Idle);
        f.write_package(b"ok").unwrap();
        let mut out = Vec::new();
        f.drain_changes(&mut out);
        assert!(out.contains(&Lwm2mPath::resource(5, 0, 3)));
        out.clear();
        f.write_package(b"").unwrap();
        f.drain_changes(&mut out);
        assert_eq!(out, vec![Lwm2mPath::resource(5, 0, 3)]);
    }

    #[test]
    fn object_interface() {
        let mut f = fw();
        let w = |v| ResourceData::Single(v);
        f.write(
            0,
            1,
            w(V::String("coap://127.0.0.1:9/p".into())),
            WriteMode::Replace,
        )
        .unwrap();
        assert_eq!(f.read(0, 3), Ok(w(V::Integer(1))));
        assert_eq!(f.read(0, 0), Err(ObjectError::MethodNotAllowed));
        assert!(matches!(
            f.write(0, 0, w(V::Integer(1)), WriteMode::Replace),
            Err(ObjectError::TypeMismatch { .. })
        ));
        assert_eq!(f.execute(0, 10, ""), Ok(()));
        assert_eq!(f.read(0, 5), Ok(w(V::Integer(10))));
    }

    #[test]
    fn uri_parsing() {
        let u = parse_coap_uri("coap://127.0.0.1:5700/fw/v2.bin?sig=1&x").unwrap();
        assert_eq!(u.addr, "127.0.0.1:5700".parse().unwrap());
        assert_eq!(u.path, vec!["fw", "v2.bin"]);
        assert_eq!(u.query, vec!["sig=1", "x"]);
        assert_eq!(parse_coap_uri("coap://[::1]").unwrap().addr.port(), 5683);
        let s = parse_coap_uri("coaps://127.0.0.1/pkg/fw").unwrap();
        assert_eq!((s.secure, s.addr.port()), (true, 5684));
        assert!(!u.secure);
        assert_eq!(parse_coap_uri("coaps://h/x"), Err(Res::InvalidUri));
        assert_eq!(
            parse_coap_uri("https://1.2.3.4/x"),
            Err(Res::UnsupportedProtocol)
        );
        assert_eq!(parse_coap_uri("nonsense"), Err(Res::InvalidUri));
        assert_eq!(
            parse_coap_uri("coap://1.2.3.4:99999/"),
            Err(Res::InvalidUri)
        );
        assert_eq!(parse_coap_uri("coap://[::1/"), Err(Res::InvalidUri));
    }
}
