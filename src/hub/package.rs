//! A CoAP file server for firmware packages: what a firmware-update job's Package URI
//! points at, so devices pull (LWM2M `/5/0/1`) instead of the server pushing megabytes
//! through `/5/0/0`.

use crate::coap::{Code, ContentFormat, EndpointConfig, Message, ServerEvent, UdpDriver};
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Serves byte packages by path (`GET coap://host:port/<path>`) on a UDP socket of its
/// own. Bodies larger than one block go out block-wise (RFC 7959 Block2); the CoAP
/// endpoint answers the follow-up block requests itself.
///
/// ```no_run
/// use twinhub::hub::PackageServer;
/// let server = PackageServer::bind("127.0.0.1:0").unwrap();
/// let uri = server.publish("fw/2.0.bin", vec![0u8; 64 * 1024]);
/// println!("devices download from {uri}");
/// server.stop();
/// ```
pub struct PackageServer {
    local_addr: SocketAddr,
    packages: Arc<RwLock<HashMap<String, Arc<Vec<u8>>>>>,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
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
    /// Binds the socket (port 0 for an ephemeral port) and starts serving.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<PackageServer> {
        let driver = UdpDriver::bind(addr, EndpointConfig::default())?;
        let local_addr = driver.local_addr();
        let packages: Arc<RwLock<HashMap<String, Arc<Vec<u8>>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (p, s, n) = (packages.clone(), stop.clone(), served.clone());
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
                            p.read()
                                .unwrap_or_else(|e| e.into_inner())
                                .get(path.trim_start_matches('/'))
                                .cloned()
                        })
                        .flatten();
                    match body {
                        // Shared: the downloads of one package hold it once.
                        Some(body) => {
                            if request.block2().is_none_or(|b| b.num == 0) {
                                n.fetch_add(1, Ordering::Relaxed);
                            }
                            let mut head = Message::response(Code::CONTENT);
                            head.set_content_format(ContentFormat::OCTET_STREAM);
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
            served,
            thread: Some(thread),
        })
    }

    /// The address devices download from.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Publishes (or replaces) a package at `path`; returns its `coap://` URI.
    pub fn publish(&self, path: &str, body: Vec<u8>) -> String {
        let path = path.trim_start_matches('/').to_string();
        let uri = format!("coap://{}/{}", self.local_addr, path);
        self.packages
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path, Arc::new(body));
        uri
    }

    /// How many package downloads have started (first blocks served).
    pub fn downloads(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
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
