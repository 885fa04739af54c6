//! Keys, credentials and datagram plumbing for the DTLS tests that drive the sans-IO
//! server and client by hand. Shared by the `dtls_*` test files (each is its own crate;
//! each uses a part).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Instant;
use twinhub::DeviceId;
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
