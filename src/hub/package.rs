//! A CoAP file server for firmware packages: what a firmware-update job's Package URI
//! points at, so devices pull (LWM2M `/5/0/1`) instead of the server pushing megabytes
//! through `/5/0/0`.
//!
//! Its packages are bounded as the hub's own are ([`Packages`]): a body at most
//! [`MAX_PACKAGE_BYTES`](crate::lwm2m::server::MAX_PACKAGE_BYTES), all bodies together
//! within [`PackageLimits`] (1,024 packages and 2 GiB by default); a publication past
//! either is refused with [`PackageError`] and changes nothing.

use crate::coap::{Code, ContentFormat, EndpointConfig, Message, ServerEvent, UdpDriver};
use crate::lwm2m::server::{PackageError, PackageLimits, Packages};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Serves byte packages by path (`GET coap://host:port/<path>`) on a UDP socket of its
/// own. Bodies larger than one block go out block-wise (RFC 7959 Block2); the CoAP
/// endpoint answers the follow-up block requests itself.
///
/// ```no_run
/// use twinhub::hub::PackageServer;
/// let server = PackageServer::bind("127.0.0.1:0").unwrap();
/// let uri = server.publish("fw/2.0.bin", vec![0u8; 64 * 1024]).unwrap();
/// println!("devices download from {uri}");
/// server.stop();
/// ```
pub struct PackageServer {
    local_addr: SocketAddr,
    packages: Packages,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PackageServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageServer")
            .field("local_addr", &self.local_addr)
            .field("downloads", &self.downloads())
            .finish_non_exhaustive()
    }
}

impl PackageServer {
    /// Binds the socket (port 0 for an ephemeral port) and starts serving, within the
    /// default [`PackageLimits`].
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<PackageServer> {
        Self::bind_with_limits(addr, PackageLimits::default())
    }

    /// [`PackageServer::bind`] with packages bounded by `limits`.
    pub fn bind_with_limits(
        addr: impl ToSocketAddrs,
        limits: PackageLimits,
    ) -> io::Result<PackageServer> {
        let driver = UdpDriver::bind(addr, EndpointConfig::default())?;
        let local_addr = driver.local_addr();
        let packages = Packages::with_limits(limits);
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (packages.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("twinhub-packages".into())
            .spawn(move || {
                let handle = driver.handle();
                while !s.load(Ordering::Acquire) {
                    let Some(ServerEvent::Request { id, request, .. }) =
                        driver.next_event(Duration::from_millis(100))
                    else {
                        continue;
                    };
                    let body = (request.code == Code::GET)
                        .then(|| {
                            let path = request.uri_path_string();
                            p.get_tagged(path.trim_start_matches('/'))
                        })
                        .flatten();
                    match body {
                        // Shared: the downloads of one package hold it once. The ETag
                        // tells a replaced body from the one a download began with.
                        Some((body, etag)) => {
                            if request.block2().is_none_or(|b| b.num == 0) {
                                p.count_download();
                            }
                            let mut head = Message::response(Code::CONTENT);
                            head.set_content_format(ContentFormat::OCTET_STREAM);
                            head.add_etag(&etag);
                            let _ = handle.respond_shared(id, head, body);
                        }
                        None if request.code != Code::GET => {
                            let _ = handle.respond(id, Message::response(Code::METHOD_NOT_ALLOWED));
                        }
                        None => {
                            let _ = handle.respond(id, Message::response(Code::NOT_FOUND));
                        }
                    }
                }
                driver.stop();
            })?;
        Ok(PackageServer {
            local_addr,
            packages,
            stop,
            thread: Some(thread),
        })
    }

    /// The address devices download from.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Publishes (or replaces) a package at `path` (a leading `/` is ignored; the rest
    /// is named as [`Packages::publish`] requires); returns its `coap://` URI. A
    /// download already under way keeps the body it started with.
    pub fn publish(&self, path: &str, body: Vec<u8>) -> Result<String, PackageError> {
        let path = path.trim_start_matches('/');
        self.packages.publish(path, body)?;
        Ok(format!("coap://{}/{}", self.local_addr, path))
    }

    /// Withdraws the package at `path`; returns whether it was published. Downloads
    /// under way finish.
    pub fn withdraw(&self, path: &str) -> bool {
        self.packages.withdraw(path.trim_start_matches('/'))
    }

    /// The packages served, for their names, sizes and limits.
    pub fn packages(&self) -> &Packages {
        &self.packages
    }

    /// How many package downloads have started (first blocks served).
    pub fn downloads(&self) -> u64 {
        self.packages.downloads()
    }

    /// Stops serving.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PackageServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coap::Code;

    #[test]
    fn publications_past_the_limits_are_refused_and_withdrawn_packages_are_gone() {
        let limits = PackageLimits {
            max_packages: 2,
            max_total_bytes: 100,
        };
        let server = PackageServer::bind_with_limits("127.0.0.1:0", limits).unwrap();
        let uri = server.publish("/fw/a.bin", vec![1; 60]).unwrap();
        assert_eq!(uri, format!("coap://{}/fw/a.bin", server.local_addr()));
        assert!(matches!(
            server.publish("fw/b.bin", vec![2; 41]),
            Err(PackageError::Full {
                packages: 1,
                bytes: 60,
                ..
            })
        ));
        assert!(matches!(
            server.publish("fw//c", vec![]),
            Err(PackageError::Name(_))
        ));
        server.publish("fw/b.bin", vec![2; 40]).unwrap();
        assert!(matches!(
            server.publish("fw/c.bin", vec![3]),
            Err(PackageError::Full { packages: 2, .. })
        ));
        // A replacement counts its new body instead of the old one.
        server.publish("fw/a.bin", vec![4; 50]).unwrap();
        assert_eq!(server.packages().total_bytes(), 90);

        let client = UdpDriver::bind("127.0.0.1:0", EndpointConfig::default()).unwrap();
        let get = |path: &str| {
            client
                .handle()
                .request(
                    server.local_addr(),
                    Message::request(Code::GET, path),
                    Duration::from_secs(5),
                )
                .unwrap()
        };
        let got = get("/fw/a.bin");
        assert_eq!((got.code, got.payload), (Code::CONTENT, vec![4; 50]));
        assert!(server.withdraw("fw/a.bin"));
        assert!(!server.withdraw("fw/a.bin"));
        assert_eq!(get("/fw/a.bin").code, Code::NOT_FOUND);
        assert_eq!(server.downloads(), 1);
        server.publish("fw/c.bin", vec![3]).unwrap();
        client.stop();
        server.stop();
    }
}
