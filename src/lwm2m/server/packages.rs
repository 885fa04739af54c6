//! Packages (firmware images, configuration files) the server hands its own registered
//! devices, over the connection they registered on: behind DTLS, a download is as
//! authenticated and encrypted as the registration, where a separate package server
//! ([`PackageServer`](crate::hub::PackageServer)) speaks plain CoAP to anyone.
//!
//! A package named `fw/2.0.bin` is served at `/pkg/fw/2.0.bin` (GET, block-wise when
//! larger than a block, RFC 7959). Who may download: a peer whose address holds a
//! registration, with the registration's identity when it registered over DTLS; anyone
//! else gets 4.04 (as for Send). The check runs at the first block; the CoAP endpoint
//! serves the follow-up blocks from the body it sliced for that transfer.
//!
//! **Versions.** Every answer carries an ETag, a 64-bit hash of the body (foldhash with a
//! fixed seed: the same body has the same tag across restarts of one build), so a device
//! whose transfer the endpoint dropped, and whose next block then comes from a body
//! replaced meanwhile, sees the change (RFC 7959 §2.4) rather than splicing two versions;
//! the device library then fails the download (result 5). A hash, not a counter: a package
//! restored at a restart keeps its tag, and a download survives the restart.
//!
//! **Bounds.** A body holds at most [`MAX_PACKAGE_BYTES`] (what block-wise transfer can
//! address); all the packages together at most [`PackageLimits`] (a count and a total of
//! bytes, 1,024 packages and 2 GiB by default). A publication past either is refused with
//! [`PackageError`] and changes nothing; a replacement counts its new body instead of the
//! old one. Packages a hub's store held at start are all kept even past the limits (the
//! limits may have been lowered since); publications are then refused until enough are
//! withdrawn.

use crate::coap::BlockOption;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The first Uri-Path segment of package downloads.
pub const PACKAGE_PATH: &str = "pkg";

/// Longest package name, in bytes: the whole URI must fit the Package URI resource
/// (`/5/0/1`, 255 bytes), with room for the scheme, address and `/pkg/`.
pub const MAX_PACKAGE_NAME: usize = 180;

/// The largest package body, 1 GiB: block-wise transfer (RFC 7959) numbers at most 2^20
/// blocks, so with 1,024-byte blocks (the largest) this is all a device can fetch. A device
/// asking for smaller blocks reaches 2^20 of them (64 MiB with 64-byte blocks).
pub const MAX_PACKAGE_BYTES: usize = (BlockOption::MAX_NUM as usize + 1) * 1024;

/// How much the packages may hold in memory together (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PackageLimits {
    /// Packages published at once. Default 1,024.
    pub max_packages: usize,
    /// Bytes of all bodies together. Default 2 GiB.
    pub max_total_bytes: u64,
}

impl Default for PackageLimits {
    fn default() -> Self {
        PackageLimits {
            max_packages: 1_024,
            max_total_bytes: 2 << 30,
        }
    }
}

/// Why a package was not published; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageError {
    /// The name is not a plain URI path.
    Name(PackageNameError),
    /// The body is larger than [`MAX_PACKAGE_BYTES`].
    TooLarge {
        /// The body's length.
        len: usize,
    },
    /// Publishing it would pass [`PackageLimits`]: withdraw packages, or raise them.
    Full {
        /// Packages published now.
        packages: usize,
        /// Bytes they hold now.
        bytes: u64,
        /// The limits.
        limits: PackageLimits,
    },
}

impl std::fmt::Display for PackageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackageError::Name(e) => e.fmt(f),
            PackageError::TooLarge { len } => write!(
                f,
                "a package of {len} bytes is larger than block-wise transfer can serve \
                 ({MAX_PACKAGE_BYTES} bytes)"
            ),
            PackageError::Full {
                packages,
                bytes,
                limits,
            } => write!(
                f,
                "the packages are full: {packages} packages of {bytes} bytes held, limits \
                 {} packages and {} bytes",
                limits.max_packages, limits.max_total_bytes
            ),
        }
    }
}

impl std::error::Error for PackageError {}

impl From<PackageNameError> for PackageError {
    fn from(e: PackageNameError) -> Self {
        PackageError::Name(e)
    }
}

/// Why a package name was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageNameError {
    /// The name given.
    pub name: String,
}

impl std::fmt::Display for PackageNameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "package name {:?} is not 1 to {MAX_PACKAGE_NAME} bytes of non-empty `/`-separated \
             segments of letters, digits and `-._~`",
            self.name
        )
    }
}

impl std::error::Error for PackageNameError {}

/// The packages a server hands out, shared between the service (which publishes and
/// withdraws them) and the server's thread (which serves them). Cheap to clone.
///
/// ```
/// use twinhub::lwm2m::server::Packages;
/// let packages = Packages::default();
/// packages.publish("fw/2.0.bin", vec![0u8; 4096]).unwrap();
/// assert_eq!(packages.get("fw/2.0.bin").map(|b| b.len()), Some(4096));
/// assert!(packages.publish("fw//x", vec![]).is_err());
/// assert!(packages.withdraw("fw/2.0.bin"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Packages {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    table: RwLock<Table>,
    /// Held by a publication or withdrawal from its check to its change, so that a hub
    /// can make the change durable in between (see [`Packages::publish_with`]).
    writer: Mutex<()>,
    limits: PackageLimits,
    downloads: AtomicU64,
}

/// One published body with its ETag.
#[derive(Debug)]
struct Package {
    body: Arc<Vec<u8>>,
    etag: [u8; 8],
}

/// A body's ETag: its 64-bit hash (a fixed seed, so it is the same at every start).
fn etag_of(body: &[u8]) -> [u8; 8] {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x0074_7769_6e68_7562)
        .hash_one(body)
        .to_be_bytes()
}

#[derive(Debug, Default)]
struct Table {
    bodies: HashMap<String, Package>,
    /// The bodies' bytes together.
    bytes: u64,
}

impl Table {
    fn insert(&mut self, name: &str, body: Vec<u8>) {
        self.bytes += body.len() as u64;
        let etag = etag_of(&body);
        let package = Package {
            body: Arc::new(body),
            etag,
        };
        if let Some(old) = self.bodies.insert(name.to_owned(), package) {
            self.bytes -= old.body.len() as u64;
        }
    }

    /// Whether a body of `len` bytes may be published as `name`.
    fn check(&self, name: &str, len: usize, limits: PackageLimits) -> Result<(), PackageError> {
        Packages::check_name(name)?;
        if len > MAX_PACKAGE_BYTES {
            return Err(PackageError::TooLarge { len });
        }
        let old = self.bodies.get(name).map(|p| p.body.len() as u64);
        let packages = self.bodies.len() + usize::from(old.is_none());
        let bytes = self.bytes - old.unwrap_or(0) + len as u64;
        if packages > limits.max_packages || bytes > limits.max_total_bytes {
            return Err(PackageError::Full {
                packages: self.bodies.len(),
                bytes: self.bytes,
                limits,
            });
        }
        Ok(())
    }
}

impl Packages {
    /// Packages bounded by `limits` (the default: [`PackageLimits::default`]).
    pub fn with_limits(limits: PackageLimits) -> Packages {
        Packages {
            inner: Arc::new(Inner {
                limits,
                ..Inner::default()
            }),
        }
    }

    /// Publishes (or replaces) a package. Names are URI path segments of unreserved
    /// characters (RFC 3986: letters, digits, `-._~`) joined by `/`, so the name is its
    /// own URI path, with no escaping; at most [`MAX_PACKAGE_NAME`] bytes. The body holds
    /// at most [`MAX_PACKAGE_BYTES`], and all packages stay within the
    /// [`PackageLimits`]. A download already under way keeps the body it started with.
    pub fn publish(&self, name: &str, body: Vec<u8>) -> Result<(), PackageError> {
        self.publish_with(name, body, |_| Ok::<(), PackageError>(()))
    }

    /// [`Packages::publish`], running `durable` (e.g. a store's write) after the checks
    /// and before the change, with other publications and withdrawals held off; an error
    /// of `durable` changes nothing.
    pub(crate) fn publish_with<E: From<PackageError>>(
        &self,
        name: &str,
        body: Vec<u8>,
        durable: impl FnOnce(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let _writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.read().check(name, body.len(), self.inner.limits)?;
        durable(&body)?;
        self.write().insert(name, body);
        Ok(())
    }

    /// Puts back a package published before a restart, within [`MAX_PACKAGE_BYTES`] but
    /// past the limits if need be (they may have been lowered since).
    pub(crate) fn restore(&self, name: &str, body: Vec<u8>) -> Result<(), PackageError> {
        Self::check_name(name)?;
        if body.len() > MAX_PACKAGE_BYTES {
            return Err(PackageError::TooLarge { len: body.len() });
        }
        self.write().insert(name, body);
        Ok(())
    }

    /// [`Packages::withdraw`], running `durable` first with publications and
    /// withdrawals held off; an error of `durable` changes nothing.
    pub(crate) fn withdraw_with<E>(
        &self,
        name: &str,
        durable: impl FnOnce() -> Result<(), E>,
    ) -> Result<bool, E> {
        let _writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        durable()?;
        Ok(self.withdraw(name))
    }

    /// The limits these packages keep to.
    pub fn limits(&self) -> PackageLimits {
        self.inner.limits
    }

    /// The bytes of all published bodies together.
    pub fn total_bytes(&self) -> u64 {
        self.read().bytes
    }

    /// Whether `name` may be published (see [`Packages::publish`]).
    pub fn check_name(name: &str) -> Result<(), PackageNameError> {
        if valid_name(name) {
            Ok(())
        } else {
            Err(PackageNameError {
                name: name.to_owned(),
            })
        }
    }

    /// The names published, in order.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().bodies.keys().cloned().collect();
        names.sort();
        names
    }

    /// Withdraws a package; returns whether it was published. Downloads under way finish.
    pub fn withdraw(&self, name: &str) -> bool {
        let mut t = self.write();
        match t.bodies.remove(name) {
            Some(package) => {
                t.bytes -= package.body.len() as u64;
                true
            }
            None => false,
        }
    }

    /// A published package's body.
    pub fn get(&self, name: &str) -> Option<Arc<Vec<u8>>> {
        self.read().bodies.get(name).map(|p| p.body.clone())
    }

    /// A published package's body and the ETag its answers carry (see the module docs).
    pub fn get_tagged(&self, name: &str) -> Option<(Arc<Vec<u8>>, [u8; 8])> {
        self.read()
            .bodies
            .get(name)
            .map(|p| (p.body.clone(), p.etag))
    }

    /// How many downloads started (first blocks served).
    pub fn downloads(&self) -> u64 {
        self.inner.downloads.load(Ordering::Relaxed)
    }

    pub(crate) fn count_download(&self) {
        self.inner.downloads.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.inner.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.inner.table.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn valid_name(name: &str) -> bool {
    name.len() <= MAX_PACKAGE_NAME
        && name.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_uri_paths() {
        for good in ["a", "fw/2.0.bin", "x-y_z~1/a.b"] {
            assert!(valid_name(good), "{good}");
        }
        let long = "a".repeat(MAX_PACKAGE_NAME + 1);
        for bad in [
            "", "/a", "a/", "a//b", "a b", "a?b", "%41", "../x", "./x", &long,
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn bodies_and_totals_are_bounded_and_a_refusal_changes_nothing() {
        let p = Packages::with_limits(PackageLimits {
            max_packages: 2,
            max_total_bytes: 10,
        });
        p.publish("a", vec![0; 6]).unwrap();
        p.publish("b", vec![0; 4]).unwrap();
        assert!(matches!(
            p.publish("c", vec![]),
            Err(PackageError::Full {
                packages: 2,
                bytes: 10,
                ..
            })
        ));
        assert!(matches!(
            p.publish("a", vec![0; 7]),
            Err(PackageError::Full { .. })
        ));
        assert_eq!(
            (p.names(), p.total_bytes()),
            (vec!["a".into(), "b".into()], 10)
        );
        // A replacement counts its new body instead of the old one.
        p.publish("a", vec![0; 1]).unwrap();
        assert_eq!(p.total_bytes(), 5);
        assert!(p.withdraw("b"));
        assert_eq!(p.total_bytes(), 1);
        // A durable step that fails changes nothing.
        let r = p.publish_with("c", vec![0; 2], |_| Err(PackageError::TooLarge { len: 0 }));
        assert!(r.is_err());
        assert_eq!((p.names(), p.total_bytes()), (vec!["a".to_string()], 1));
        // Past what block-wise transfer can serve (calloc'd: no pages touched).
        let huge = vec![0u8; MAX_PACKAGE_BYTES + 1];
        let unbounded = Packages::with_limits(PackageLimits {
            max_packages: 10,
            max_total_bytes: u64::MAX,
        });
        assert_eq!(
            unbounded.publish("big", huge),
            Err(PackageError::TooLarge {
                len: MAX_PACKAGE_BYTES + 1
            })
        );
        assert!(matches!(
            p.publish("x y", vec![]),
            Err(PackageError::Name(_))
        ));
    }
}
