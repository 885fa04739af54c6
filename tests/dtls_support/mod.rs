//! Keys, credentials and datagram plumbing for the DTLS tests that drive the sans-IO
//! server and client by hand, and [`RawDtlsDevice`], a raw CoAP device on a `DtlsClient`
//! speaking to a hub over loopback UDP. Shared by the DTLS test files (each is its own
//! crate; each uses a part).
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::coap::{Code, Message, MessageType};
use twinhub::dtls::{DtlsClient, DtlsServer, DtlsServerConfig, PskCredentials, PskKey, PskStore};

/// A device's address (10.0.0.1, `port`).
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

/// A 16-byte key of `b`s.
pub fn key(b: u8) -> PskKey {
    PskKey::new(vec![b; 16])
}

/// `identity` with key `k`.
pub fn creds(identity: &str, k: PskKey) -> PskCredentials {
    PskCredentials::new(identity, k).unwrap()
}

/// A key store holding `identity` with key `k` for `device`.
pub fn store_with(identity: &str, device: &str, k: PskKey) -> PskStore {
    let store = PskStore::new();
    store
        .set(Some(DeviceId::new(device).unwrap()), creds(identity, k))
        .unwrap();
    store
}

/// Every datagram the client has to send now.
pub fn drain_client(c: &mut DtlsClient) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

/// Every datagram the server has to send now (their addresses dropped).
pub fn drain_server(s: &mut DtlsServer) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| s.poll_transmit())
        .map(|(_, d)| d)
        .collect()
}

/// A server (default settings) knowing `id-1` with key 1 for `dev-1`, and a client of
/// `id-1` that was asked at `t0` to send `first`: its first flight (the ClientHello) is
/// queued ([`drain_client`]), nothing delivered yet.
pub fn first_flight(t0: Instant, first: &[u8]) -> (DtlsServer, DtlsClient) {
    first_flight_with(DtlsServerConfig::default(), t0, first)
}

/// [`first_flight`] with the server under `config`.
pub fn first_flight_with(
    config: DtlsServerConfig,
    t0: Instant,
    first: &[u8],
) -> (DtlsServer, DtlsClient) {
    let server = DtlsServer::new(config, store_with("id-1", "dev-1", key(1)));
    let mut client = DtlsClient::new(t0, creds("id-1", key(1)));
    client.send(t0, first);
    (server, client)
}

/// A raw CoAP device over real UDP on loopback: its own socket and a [`DtlsClient`]
/// (handshake, then CoAP messages inside the session). It answers nothing the hub sends
/// it; it records the paths of the requests the hub's datagrams carried
/// ([`RawDtlsDevice::requests`]).
pub struct RawDtlsDevice {
    /// The device's socket (loopback, port 0, read timeout 20 ms).
    pub socket: UdpSocket,
    /// Its DTLS client.
    pub dtls: DtlsClient,
    /// The hub's address.
    pub server: SocketAddr,
    /// The last message id (and token) used; the next message takes the one after.
    pub next_mid: u16,
    /// The paths of the requests the hub sent the device, in arrival order.
    pub requests: Vec<String>,
}

impl RawDtlsDevice {
    /// A device of `credentials` speaking to the hub at `server`.
    pub fn new(server: SocketAddr, credentials: PskCredentials) -> RawDtlsDevice {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        RawDtlsDevice {
            socket,
            dtls: DtlsClient::new(Instant::now(), credentials),
            server,
            next_mid: 100,
            requests: Vec::new(),
        }
    }

    /// Sends every record the DTLS client has queued.
    pub fn flush(&mut self) {
        while let Some(r) = self.dtls.poll_transmit() {
            self.socket.send_to(&r, self.server).unwrap();
        }
    }

    /// `m` with the next message id and token, encoded.
    pub fn encode(&mut self, mut m: Message) -> Vec<u8> {
        self.next_mid += 1;
        m.message_id = self.next_mid;
        m.set_token(&self.next_mid.to_be_bytes());
        let mut bytes = Vec::new();
        m.encode(&mut bytes).unwrap();
        bytes
    }

    /// Sends what is queued and reads for up to `wait`, recording the hub's requests;
    /// returns the piggybacked answer (an ACK) to message id `mid` as soon as it comes.
    pub fn pump(&mut self, wait: Duration, mid: Option<u16>) -> Option<Message> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            self.flush();
            if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                self.dtls.handle_datagram(Instant::now(), &buf[..n]);
            }
            self.dtls.handle_timeout(Instant::now());
            while let Some(plain) = self.dtls.poll_plaintext() {
                let Ok(m) = Message::decode(&plain) else {
                    continue;
                };
                if m.code.is_request() {
                    self.requests.push(m.uri_path_string());
                } else if Some(m.message_id) == mid && m.mtype == MessageType::Acknowledgement {
                    return Some(m);
                }
            }
        }
        None
    }

    /// Sends a CON request (handshaking first if there is no session) and waits (at most
    /// 30 s: generous for a loaded machine) for its piggybacked answer.
    pub fn exchange(&mut self, m: Message) -> Option<Message> {
        let bytes = self.encode(m);
        self.dtls.send(Instant::now(), &bytes);
        self.pump(Duration::from_secs(30), Some(self.next_mid))
    }

    /// Reads what the hub sends for up to `within`, sending nothing; true once the
    /// session was closed by the hub (a close_notify arrived).
    pub fn sees_close_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                self.dtls.handle_datagram(Instant::now(), &buf[..n]);
            }
            if self.dtls.has_failed() {
                return true;
            }
        }
        false
    }

    /// Registers as `ep` (lifetime 300 s, object 3 instance 0), asserting 2.01 Created;
    /// returns the registration's location (`rd/...`).
    pub fn register(&mut self, ep: &str) -> String {
        let mut register = Message::request(Code::POST, "/rd");
        register.add_uri_query(&format!("ep={ep}"));
        register.add_uri_query("lt=300");
        register.payload = b"</3/0>".to_vec();
        let answer = self.exchange(register).expect("an answer to Register");
        assert_eq!(answer.code, Code::CREATED);
        answer
            .location_path()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// The server's events that arrive within `within`.
pub fn events_for(
    events: &std::sync::mpsc::Receiver<twinhub::transport::DeviceEvent>,
    within: Duration,
) -> Vec<twinhub::transport::DeviceEvent> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(e) => got.push(e),
            Err(_) => break,
        }
    }
    got
}

/// An LWM2M server behind DTLS on loopback (port 0, the real driver,
/// `UdpServer::bind_secure`, `auto_provision` on) over a key store holding `keys`
/// (device, PSK identity, key byte for [`key`]), and the first of them registered over
/// DTLS by a [`RawDtlsDevice`]. Returns the server, its events, the key store and the
/// device.
#[cfg(feature = "lwm2m")]
pub fn secure_server_with_registered(
    keys: &[(&str, &str, u8)],
) -> (
    twinhub::lwm2m::server::UdpServer,
    std::sync::mpsc::Receiver<twinhub::transport::DeviceEvent>,
    PskStore,
    RawDtlsDevice,
) {
    use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig, UdpServer};
    let store = PskStore::new();
    for (device, identity, k) in keys {
        store
            .set(
                Some(DeviceId::new(device).unwrap()),
                creds(identity, key(*k)),
            )
            .unwrap();
    }
    let dtls = DtlsServer::new(DtlsServerConfig::default(), store.clone());
    let server = Lwm2mServer::new(ServerConfig {
        auto_provision: true,
        ..ServerConfig::default()
    });
    let (udp, events) = UdpServer::bind_secure("127.0.0.1:0", server, dtls).unwrap();
    let (device, identity, k) = keys[0];
    let mut dev = RawDtlsDevice::new(udp.local_addr(), creds(identity, key(k)));
    dev.register(device);
    (udp, events, store, dev)
}

/// Submits a Read of `/3/0/9` (operation 77) for `device` to `udp`, lets `dev` take what
/// comes for `pump_for`, and checks that `dev` got nothing and that the server reported
/// no `Sent` for the Read (nothing left); then stops the server. `who` names `dev` in
/// the failure message.
#[cfg(feature = "lwm2m")]
pub fn assert_read_not_sent(
    udp: twinhub::lwm2m::server::UdpServer,
    events: &std::sync::mpsc::Receiver<twinhub::transport::DeviceEvent>,
    dev: &mut RawDtlsDevice,
    device: &DeviceId,
    pump_for: Duration,
    who: &str,
) {
    use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, OpId};
    udp.handle()
        .submit(DeviceOp {
            id: OpId(77),
            device: device.clone(),
            request: DeviceRequest::Read {
                path: twinhub::Lwm2mPath::resource(3, 0, 9),
            },
        })
        .unwrap();
    dev.pump(pump_for, None);
    let after = events_for(events, Duration::from_millis(300));
    assert!(dev.requests.is_empty(), "{:?}", dev.requests);
    assert!(
        !after
            .iter()
            .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(77), .. })),
        "reported sent, yet nothing left ({who} got nothing): {after:?}"
    );
    let _ = udp.stop();
}
