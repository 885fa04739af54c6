//! A small CoAP test server on the std UDP driver, shared by the loopback and interop tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use twinhub::coap::{
    Code, ContentFormat, EndpointConfig, Message, ObservationEndReason, ServerEvent, UdpDriver,
};

/// The body of GET /big: 100 KiB of a fixed pattern.
pub fn big_body() -> Vec<u8> {
    (0..100 * 1024)
        .map(|i: usize| b"0123456789abcdef"[i % 16])
        .collect()
}

/// Resources: GET /hello -> "world"; PUT|POST /echo -> 2.04|2.01 with the payload echoed;
/// GET /big -> 100 KiB; GET /obs (observable) -> "n=0", then three notifications
/// "n=1".."n=3" 100 ms apart; DELETE /x -> 2.02; anything else 4.04.
pub struct TestServer {
    pub driver: Arc<UdpDriver>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Vec<Message>, Vec<ObservationEndReason>)>>,
}

impl TestServer {
    pub fn start(bind: &str) -> TestServer {
        let driver = Arc::new(UdpDriver::bind(bind, EndpointConfig::default()).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (driver.clone(), stop.clone());
        let thread = std::thread::spawn(move || serve(&d, &s));
        TestServer {
            driver,
            stop,
            thread: Some(thread),
        }
    }

    /// The same server behind DTLS 1.2 PSK (`coaps`), keys from `store`.
    pub fn start_secure(bind: &str, store: twinhub::dtls::PskStore) -> TestServer {
        let dtls =
            twinhub::dtls::DtlsServer::new(twinhub::dtls::DtlsServerConfig::default(), store);
        let socket = std::net::UdpSocket::bind(bind).unwrap();
        let endpoint = twinhub::coap::Endpoint::new(EndpointConfig::default());
        let driver = Arc::new(UdpDriver::spawn_secure(socket, endpoint, dtls).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (driver.clone(), stop.clone());
        let thread = std::thread::spawn(move || serve(&d, &s));
        TestServer {
            driver,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.driver.local_addr().port()
    }

    /// Stops the server loop and returns every request it received.
    pub fn finish(self) -> Vec<Message> {
        self.finish_with_observations().0
    }

    /// Stops the server loop; returns the requests and how observations ended.
    pub fn finish_with_observations(mut self) -> (Vec<Message>, Vec<ObservationEndReason>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(driver: &UdpDriver, stop: &AtomicBool) -> (Vec<Message>, Vec<ObservationEndReason>) {
    let handle = driver.handle();
    let mut seen = Vec::new();
    let mut ended = Vec::new();
    let mut notifying = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let Some(ev) = driver.next_event(Duration::from_millis(20)) else {
            continue;
        };
        let (id, request) = match ev {
            ServerEvent::Request { id, request, .. } => (id, request),
            ServerEvent::ObservationEnded { reason, .. } => {
                ended.push(reason);
                continue;
            }
            _ => continue,
        };
        seen.push(request.clone());
        let path = request.uri_path_string();
        let mut resp;
        match (request.code, path.as_str()) {
            (Code::GET, "hello") => {
                resp = Message::response(Code::CONTENT);
                resp.set_content_format(ContentFormat::TEXT_PLAIN);
                resp.payload = b"world".to_vec();
            }
            (Code::PUT, "echo") | (Code::POST, "echo") => {
                resp = Message::response(if request.code == Code::PUT {
                    Code::CHANGED
                } else {
                    Code::CREATED
                });
                resp.payload = request.payload.clone();
            }
            (Code::DELETE, "x") => resp = Message::response(Code::DELETED),
            (Code::GET, "big") => {
                resp = Message::response(Code::CONTENT);
                resp.set_content_format(ContentFormat::OCTET_STREAM);
                resp.payload = big_body();
            }
            (Code::GET, "obs") => {
                resp = Message::response(Code::CONTENT);
                resp.payload = b"n=0".to_vec();
                if request.observe() == Some(0) {
                    if let Ok(Some(obs)) = handle.respond_and_observe(id, resp) {
                        let h = handle.clone();
                        notifying.push(std::thread::spawn(move || {
                            for n in 1..=3 {
                                std::thread::sleep(Duration::from_millis(100));
                                let mut m = Message::response(Code::CONTENT);
                                m.payload = format!("n={n}").into_bytes();
                                if h.notify(obs, m).is_err() {
                                    break;
                                }
                            }
                        }));
                    }
                    continue;
                }
            }
            _ => resp = Message::response(Code::NOT_FOUND),
        }
        let _ = handle.respond(id, resp);
    }
    for t in notifying {
        let _ = t.join();
    }
    (seen, ended)
}
