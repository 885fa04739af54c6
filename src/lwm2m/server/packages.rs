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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The first Uri-Path segment of package downloads.
pub const PACKAGE_PATH: &str = "pkg";

/// Longest package name, in bytes: the whole URI must fit the Package URI resource
/// (`/5/0/1`, 255 bytes), with room for the scheme, address and `/pkg/`.
pub const MAX_PACKAGE_NAME: usize = 180;

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
    bodies: RwLock<HashMap<String, Arc<Vec<u8>>>>,
    downloads: AtomicU64,
}

impl Packages {
    /// Publishes (or replaces) a package. Names are URI path segments of unreserved
    /// characters (RFC 3986: letters, digits, `-._~`) joined by `/`, so the name is its
    /// own URI path, with no escaping; at most [`MAX_PACKAGE_NAME`] bytes. A download
    /// already under way keeps the body it started with.
    pub fn publish(&self, name: &str, body: Vec<u8>) -> Result<(), PackageNameError> {
        Self::check_name(name)?;
        self.write().insert(name.to_owned(), Arc::new(body));
        Ok(())
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
        let mut names: Vec<String> = self
            .inner
            .bodies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Withdraws a package; returns whether it was published. Downloads under way finish.
    pub fn withdraw(&self, name: &str) -> bool {
        self.write().remove(name).is_some()
    }

    /// A published package's body.
    pub fn get(&self, name: &str) -> Option<Arc<Vec<u8>>> {
        self.inner
            .bodies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// How many downloads started (first blocks served).
    pub fn downloads(&self) -> u64 {
        self.inner.downloads.load(Ordering::Relaxed)
    }

    pub(crate) fn count_download(&self) {
        self.inner.downloads.fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Vec<u8>>>> {
        self.inner.bodies.write().unwrap_or_else(|p| p.into_inner())
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
}
