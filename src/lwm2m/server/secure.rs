//! The server behind DTLS: the UDP driver's datagram layer that runs a [`DtlsServer`].
//!
//! A registration outlives the DTLS session it was made over, as in Leshan: when the
//! session ends (the device sent close_notify, or the DTLS server closed it: idle, key
//! rotated, superseded), the registration, its observations and queued requests stay
//! until its lifetime runs out or the device de-registers. The device handshakes again
//! and Updates it over the new session (from any address, under the same identity).
//! Meanwhile nothing reaches the device and nothing goes out in clear: a request to it
//! waits in its queue, as a sleeping device's does ([`ServerConfig::queue_timeout`](super::ServerConfig::queue_timeout)), and
//! is sent (and reported [`DeviceEvent::Sent`]) once a session to the registration's
//! address is up again, or goes to the device's new registration. One already sent when
//! the session ended is retransmitted into nothing until CoAP gives up or the
//! registration ends. A removed or rotated key ends the
//! session, not the registration: the device must handshake with its current key to
//! Update it (`tests/dtls_close_registration.rs`). The DTLS server meets a key withdrawn
//! (on another thread) when it next runs, which may be as the driver sends a request
//! handed out a moment before: that request is taken back, its [`DeviceEvent::Sent`]
//! withdrawn before the driver hands it out, and it waits in the queue as above
//! (`Lwm2mServer::not_sent`), in its submission order and with the deadline it got when
//! first queued. So is one the layer finds no session for at all (closed since the
//! server last heard), or only another identity's. Nothing is reported sent that did not
//! leave, and nothing handed out vanishes without a word.

use super::udp::DatagramLayer;
use super::{Lwm2mServer, Transmit, UdpServer};
use crate::dtls::{DtlsEvent, DtlsServer};
use crate::transport::DeviceEvent;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc::Receiver;
use std::time::Instant;

/// DTLS between the socket and the server: records in, plaintext with the session's
/// identity to the server; the server's datagrams out only through the session of the
/// identity the destination registered with (an answer, ACK or RST, through the session
/// it answers: [`Lwm2mServer::may_send`]).
pub(super) struct SecureLayer {
    dtls: DtlsServer,
}

impl SecureLayer {
    fn deliver(&mut self, now: Instant, server: &mut Lwm2mServer) {
        while let Some(event) = self.dtls.poll_event() {
            match event {
                DtlsEvent::Plaintext {
                    peer,
                    identity,
                    data,
                } => server.handle_datagram_from(now, peer, Some(&identity), &data),
                // The session table as it is now (a session replaced at the same address
                // may close after its successor connected).
                DtlsEvent::Connected { peer, .. } | DtlsEvent::Closed { peer, .. } => {
                    server.session_changed(now, peer, self.dtls.session_identity(peer));
                }
                // The device is not told (no alert); the operator is: most often a
                // device provisioned with another key than its twin's.
                #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
                DtlsEvent::HandshakeFailed { peer, identity } => {
                    crate::trace_event!(
                        warn,
                        address = %peer,
                        identity = identity.as_deref().unwrap_or(""),
                        "DTLS handshake failed (wrong key, unknown identity or no answer)"
                    );
                }
            }
        }
    }
}

impl DatagramLayer for SecureLayer {
    fn receive(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8], server: &mut Lwm2mServer) {
        self.dtls.handle_datagram(now, peer, bytes);
        self.deliver(now, server);
    }

    fn transmit(
        &mut self,
        now: Instant,
        t: Transmit,
        server: &mut Lwm2mServer,
        _socket: &UdpSocket,
    ) {
        // Not through this session: there is none (it closed since the server last
        // heard, as when its key was withdrawn on another thread, which `send` finds and
        // closes; nothing goes out in clear), or, for anything but an answer to what just
        // came through it, the address now belongs to another identity, or the identity
        // to another device. The server hears of the sessions
        // as they are, and takes back a request it was about to report sent: it waits for
        // a session of the registration's identity as any does while there is none. One
        // already reported sent is left to CoAP, which times it out.
        let refused = !server.may_send(&t, self.dtls.session_identity(t.destination))
            || self.dtls.send(now, t.destination, &t.payload).is_err();
        if refused {
            self.deliver(now, server);
            server.not_sent(now, &t, self.dtls.session_identity(t.destination));
        }
    }

    fn flush(&mut self, socket: &UdpSocket) {
        while let Some((to, record)) = self.dtls.poll_transmit() {
            let _ = socket.send_to(&record, to);
        }
    }

    fn handle_timeout(&mut self, now: Instant, server: &mut Lwm2mServer) {
        self.dtls.handle_timeout(now);
        self.deliver(now, server);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.dtls.poll_timeout()
    }

    fn shutdown(&mut self, socket: &UdpSocket) {
        // One close_notify per session, at most `max_sessions` datagrams, sent back to back
        // (a send error loses that one: the device then finds out by its own timeouts).
        self.dtls.close_all();
        self.flush(socket);
    }
}

impl UdpServer {
    /// Binds a `coaps` socket: the server behind a [`DtlsServer`] (DTLS 1.2, PSK,
    /// `TLS_PSK_WITH_AES_128_CCM_8`). The server is switched to
    /// [`Lwm2mServer::require_identity`]. Counters: [`DtlsServer::stats_handle`] before
    /// handing it over. As [`UdpServer::bind`], it refuses (an
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) error) server settings that
    /// [`ServerConfig::validate`](super::ServerConfig::validate) refuses, and DTLS bounds
    /// that [`DtlsServerConfig::validate`](crate::dtls::DtlsServerConfig::validate)
    /// refuses (the [`DtlsConfigError`](crate::dtls::DtlsConfigError) inside), and binds
    /// nothing.
    ///
    /// ```no_run
    /// use twinhub::dtls::{DtlsServer, DtlsServerConfig, PskStore};
    /// use twinhub::lwm2m::server::{Lwm2mServer, ServerConfig, UdpServer};
    /// let store = PskStore::new();
    /// let dtls = DtlsServer::new(DtlsServerConfig::default(), store.clone());
    /// let server = Lwm2mServer::new(ServerConfig { auto_provision: true, ..ServerConfig::default() });
    /// let (udp, events) = UdpServer::bind_secure("0.0.0.0:5684", server, dtls).unwrap();
    /// # let _ = (udp, events);
    /// ```
    pub fn bind_secure(
        addr: impl ToSocketAddrs,
        server: Lwm2mServer,
        dtls: DtlsServer,
    ) -> io::Result<(UdpServer, Receiver<DeviceEvent>)> {
        dtls.config()
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Self::bind_layer(
            addr,
            server.require_identity().track_sessions(),
            SecureLayer { dtls },
        )
    }
}

#[cfg(test)]
mod tests {
    //! The server's set of addresses with a DTLS session (`Lwm2mServer::sessions`) at the
    //! DTLS server's session bound, driven through the layer as the UDP driver does.

    use super::*;
    use crate::dtls::{DtlsClient, DtlsServerConfig, PskCredentials, PskKey, PskStore};
    use crate::lwm2m::server::ServerConfig;
    use crate::twin::DeviceId;
    use std::collections::HashSet;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 2], port))
    }

    fn creds(n: u16) -> PskCredentials {
        PskCredentials::new(&format!("id-{n}"), PskKey::new(vec![n as u8; 16])).unwrap()
    }

    /// Handshakes device `n` from `addr(n)` through the layer; returns its client.
    fn connect(
        now: Instant,
        n: u16,
        layer: &mut SecureLayer,
        server: &mut Lwm2mServer,
    ) -> DtlsClient {
        let mut client = DtlsClient::new(now, creds(n));
        client.send(now, b"x");
        for _ in 0..50 {
            let mut moved = false;
            while let Some(d) = client.poll_transmit() {
                layer.receive(now, addr(n), &d, server);
                moved = true;
            }
            while let Some((to, d)) = layer.dtls.poll_transmit() {
                if to == addr(n) {
                    client.handle_datagram(now, &d);
                }
                moved = true;
            }
            if !moved {
                break;
            }
        }
        client
    }

    /// Device `d-1` (identity `id-1`) handshaken from `addr(1)` and registered through a
    /// layer and a server that requires identities and tracks sessions.
    fn registered_over_dtls(
        now: Instant,
        socket: &UdpSocket,
    ) -> (PskStore, DeviceId, SecureLayer, Lwm2mServer) {
        use crate::coap::{Code, Message};
        let store = PskStore::new();
        let device = DeviceId::new("d-1").unwrap();
        store.set(Some(device.clone()), creds(1)).unwrap();
        let mut layer = SecureLayer {
            dtls: DtlsServer::new(DtlsServerConfig::default(), store.clone()),
        };
        let config = ServerConfig {
            auto_provision: true,
            ..ServerConfig::default()
        };
        let mut server = Lwm2mServer::with_seed(config, 3)
            .require_identity()
            .track_sessions();
        let mut client = connect(now, 1, &mut layer, &mut server);
        let mut register = Message::request(Code::POST, "/rd");
        register.message_id = 1;
        register.add_uri_query("ep=d-1");
        register.payload = b"</3/0>".to_vec();
        client.send(now, &register.to_bytes().unwrap());
        let got = exchange(now, 1, &mut client, &mut layer, &mut server, socket);
        assert_eq!(Message::decode(&got[0]).unwrap().code, Code::CREATED);
        (store, device, layer, server)
    }

    /// The server's set, and the DTLS server's session table.
    fn tables(
        layer: &SecureLayer,
        server: &Lwm2mServer,
    ) -> (HashSet<SocketAddr>, HashSet<SocketAddr>) {
        let tracked = server
            .sessions
            .as_ref()
            .expect("tracked")
            .keys()
            .copied()
            .collect();
        let live = (1..=40)
            .map(addr)
            .filter(|a| layer.dtls.session_identity(*a).is_some())
            .collect();
        (tracked, live)
    }

    /// Moves datagrams between `client` (at `addr(n)`) and the layer until quiet, the
    /// server's as the driver sends them; returns the plaintexts the client got.
    fn exchange(
        now: Instant,
        n: u16,
        client: &mut DtlsClient,
        layer: &mut SecureLayer,
        server: &mut Lwm2mServer,
        socket: &UdpSocket,
    ) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for _ in 0..50 {
            let mut moved = false;
            while let Some(d) = client.poll_transmit() {
                layer.receive(now, addr(n), &d, server);
                moved = true;
            }
            while let Some(t) = server.poll_transmit() {
                layer.transmit(now, t, server, socket);
                moved = true;
            }
            while let Some((to, d)) = layer.dtls.poll_transmit() {
                if to == addr(n) {
                    client.handle_datagram(now, &d);
                }
                moved = true;
            }
            got.extend(std::iter::from_fn(|| client.poll_plaintext()));
            if !moved {
                break;
            }
        }
        got
    }

    /// A request handed out just after the device's key was withdrawn (on another
    /// thread: the DTLS server meets it only as the request is sent) is not reported
    /// `Sent`: nothing left. It waits in the device's queue and goes out, reported `Sent`
    /// then, once the device handshakes with its current key. Before, it was reported
    /// `Sent` and dropped by the layer (a reboot job would then take the device's next
    /// Register for the reboot).
    #[test]
    fn a_request_sent_as_its_key_is_withdrawn_is_not_reported_sent_and_waits() {
        use crate::coap::{Code, Message};
        use crate::lwm2m::Lwm2mPath;
        use crate::transport::{DeviceOp, DeviceRequest, OpId, Transport};
        let now = Instant::now();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (store, device, mut layer, mut server) = registered_over_dtls(now, &socket);
        assert!(server.registration(&device).is_some());
        while server.poll_event().is_some() {}
        // The hub withdraws the key; the driver takes an operation before its DTLS
        // server ran again.
        assert!(store.remove_identity("id-1"));
        let read = DeviceOp {
            id: OpId(7),
            device: device.clone(),
            request: DeviceRequest::Read {
                path: Lwm2mPath::resource(3, 0, 9),
            },
        };
        server.submit(now, read);
        while let Some(t) = server.poll_transmit() {
            layer.transmit(now, t, &mut server, &socket);
        }
        let events: Vec<DeviceEvent> = std::iter::from_fn(|| server.poll_event()).collect();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, DeviceEvent::Sent { op: OpId(7), .. })),
            "reported sent, yet nothing left: {events:?}"
        );
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(layer.dtls.stats().sessions, 0);
        assert!(!server.sessions.as_ref().unwrap().contains_key(&addr(1)));
        // The device's key comes back (rotated): it handshakes and the read goes out,
        // reported sent then.
        store
            .set(
                Some(device.clone()),
                PskCredentials::new("id-1", PskKey::new(vec![9; 16])).unwrap(),
            )
            .unwrap();
        let later = now + Duration::from_secs(1);
        let mut client = DtlsClient::new(
            later,
            PskCredentials::new("id-1", PskKey::new(vec![9; 16])).unwrap(),
        );
        client.send(later, b"x");
        let got = exchange(later, 1, &mut client, &mut layer, &mut server, &socket);
        let requests: Vec<Message> = got
            .iter()
            .filter_map(|b| Message::decode(b).ok())
            .filter(|m| m.code == Code::GET)
            .collect();
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert_eq!(requests[0].uri_path_string(), "3/0/9");
        let events: Vec<DeviceEvent> = std::iter::from_fn(|| server.poll_event()).collect();
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, DeviceEvent::Sent { op: OpId(7), .. }))
                .count(),
            1,
            "{events:?}"
        );
    }

    /// The device's session closes (here by `close_identity`) and the layer has not told
    /// the server yet when a request to it is handed out: the layer finds no session
    /// (`may_send_to` fails for want of any), so nothing leaves. The request is taken
    /// back: not reported `Sent`, it waits in the queue and goes (reported `Sent` then)
    /// once the device handshakes again. Before, the layer returned without a word: the
    /// request was reported `Sent`, and vanished.
    #[test]
    fn a_request_for_an_address_without_a_session_is_taken_back_not_dropped() {
        use crate::coap::{Code, Message};
        use crate::lwm2m::Lwm2mPath;
        use crate::transport::{DeviceOp, DeviceRequest, OpId, Transport};
        let now = Instant::now();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (_store, device, mut layer, mut server) = registered_over_dtls(now, &socket);
        while server.poll_event().is_some() {}
        // The session ends; its Closed event is not delivered yet.
        assert_eq!(layer.dtls.close_identity("id-1"), 1);
        assert!(server.sessions.as_ref().unwrap().contains_key(&addr(1)));
        server.submit(
            now,
            DeviceOp {
                id: OpId(8),
                device: device.clone(),
                request: DeviceRequest::Read {
                    path: Lwm2mPath::resource(3, 0, 9),
                },
            },
        );
        while let Some(t) = server.poll_transmit() {
            layer.transmit(now, t, &mut server, &socket);
        }
        // The close_notify to the old session.
        while layer.dtls.poll_transmit().is_some() {}
        let events: Vec<DeviceEvent> = std::iter::from_fn(|| server.poll_event()).collect();
        assert!(
            events.is_empty(),
            "nothing left, nothing reported: {events:?}"
        );
        assert!(!server.sessions.as_ref().unwrap().contains_key(&addr(1)));
        // The device handshakes again: the read goes, reported sent then.
        let later = now + Duration::from_secs(1);
        let mut client = DtlsClient::new(later, creds(1));
        client.send(later, b"x");
        let got = exchange(later, 1, &mut client, &mut layer, &mut server, &socket);
        let reads = got
            .iter()
            .filter_map(|b| Message::decode(b).ok())
            .filter(|m| m.code == Code::GET && m.uri_path_string() == "3/0/9")
            .count();
        assert_eq!(reads, 1);
        let events: Vec<DeviceEvent> = std::iter::from_fn(|| server.poll_event()).collect();
        assert!(
            matches!(&events[..], [DeviceEvent::Sent { op: OpId(8), .. }]),
            "{events:?}"
        );
    }

    /// The set holds exactly the DTLS server's sessions after every step, so it never
    /// exceeds `DtlsServerConfig::max_sessions`: devices handshaking past the bound are
    /// refused by the DTLS server and leave no entry; idle sessions evicted to make room,
    /// sessions of a withdrawn key and those closed at shutdown leave none behind.
    #[test]
    fn the_session_set_follows_the_dtls_table_and_stays_within_max_sessions() {
        const MAX: usize = 3;
        let t0 = Instant::now();
        let store = PskStore::new();
        for n in 1..=40 {
            store
                .set(Some(DeviceId::new(&format!("d-{n}")).unwrap()), creds(n))
                .unwrap();
        }
        let config = DtlsServerConfig {
            max_sessions: MAX,
            session_idle_timeout: Duration::from_secs(60),
            ..DtlsServerConfig::default()
        };
        let mut layer = SecureLayer {
            dtls: DtlsServer::new(config, store.clone()),
        };
        let mut server = Lwm2mServer::new(ServerConfig::default())
            .require_identity()
            .track_sessions();
        // To the bound and past it, all at once: the first MAX get sessions.
        for n in 1..=MAX as u16 + 4 {
            connect(t0, n, &mut layer, &mut server);
            let (tracked, live) = tables(&layer, &server);
            assert_eq!(tracked, live, "device {n}");
            assert!(tracked.len() <= MAX, "device {n}: {}", tracked.len());
        }
        assert_eq!(layer.dtls.stats().sessions, MAX as u64);
        assert_eq!(layer.dtls.stats().refused_sessions, 4);
        // Later, the idle sessions make room for newcomers, many times over.
        let mut now = t0;
        for round in 0..4u16 {
            now += Duration::from_secs(61);
            for k in 0..MAX as u16 + 2 {
                let n = 10 + round * 6 + k;
                connect(now, n, &mut layer, &mut server);
                let (tracked, live) = tables(&layer, &server);
                assert_eq!(tracked, live, "round {round}, device {n}");
                assert!(tracked.len() <= MAX);
            }
            layer.handle_timeout(now, &mut server);
            let (tracked, live) = tables(&layer, &server);
            assert_eq!(tracked, live, "round {round}");
            assert_eq!(tracked.len(), MAX);
        }
        // A withdrawn key's session leaves the set at the layer's next timeout.
        let (tracked, _) = tables(&layer, &server);
        let gone = *tracked.iter().next().unwrap();
        let identity = layer
            .dtls
            .session_identity(gone)
            .unwrap()
            .psk_identity
            .clone();
        assert!(store.remove_identity(&identity));
        layer.handle_timeout(now, &mut server);
        let (tracked, live) = tables(&layer, &server);
        assert_eq!(tracked, live);
        assert_eq!(tracked.len(), MAX - 1);
        assert!(!tracked.contains(&gone));
    }
}
