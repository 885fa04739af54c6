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
//! Update it (`tests/dtls_close_registration.rs`).

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
/// identity the destination registered with.
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
                    let up = self.dtls.session_identity(peer).is_some();
                    server.session_changed(now, peer, up);
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

    fn transmit(&mut self, now: Instant, t: Transmit, server: &Lwm2mServer, _socket: &UdpSocket) {
        if !server.may_send_to(t.destination, self.dtls.session_identity(t.destination)) {
            // The address now belongs to another identity (or none, or the identity now
            // belongs to another device): the device's requests do not go to it. CoAP
            // times the request out.
            return;
        }
        // No session: the datagram is dropped; nothing goes out in clear.
        let _ = self.dtls.send(now, t.destination, &t.payload);
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
    /// handing it over.
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
        Self::bind_layer(
            addr,
            server.require_identity().track_sessions(),
            SecureLayer { dtls },
        )
    }
}
