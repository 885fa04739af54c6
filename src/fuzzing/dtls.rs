//! Fuzz body for the DTLS record path: datagrams from a few addresses into a
//! [`DtlsServer`] with small bounds, and whatever plaintext comes out into the LWM2M
//! server, as the coaps driver does.

use crate::dtls::{
    DtlsClient, DtlsEvent, DtlsServer, DtlsServerConfig, PskCredentials, PskKey, PskStore,
};
use crate::lwm2m::server::{Lwm2mServer, ServerConfig};
use crate::twin::DeviceId;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Records into the server path. Input: a sequence of `[source][len hi][len lo][bytes]`
/// datagrams (the source picks one of four addresses; a source byte >= 0xf0 advances the
/// clock by that many 100 ms steps instead). The first address has a real session,
/// so records also reach an established session. Checks: no panic, every table within
/// its bound.
pub fn dtls_records(data: &[u8]) {
    let config = DtlsServerConfig {
        max_unverified: 3,
        max_handshakes: 2,
        max_sessions: 2,
        ..DtlsServerConfig::default()
    };
    let store = PskStore::new();
    let creds = PskCredentials::new("fuzz-id", PskKey::new(vec![0x42; 16])).expect("valid");
    let device = DeviceId::new("fuzz-dev").expect("valid id");
    store.set(Some(device), creds.clone()).expect("fresh store");
    let mut dtls = DtlsServer::new(config.clone(), store);
    let mut lwm2m = Lwm2mServer::with_seed(
        ServerConfig {
            auto_provision: true,
            ..ServerConfig::default()
        },
        1,
    )
    .require_identity();
    let mut now = Instant::now();
    let addrs: Vec<SocketAddr> = (0..4)
        .map(|i| SocketAddr::from(([10, 0, 0, 1], 5000 + i)))
        .collect();

    // A real session at the first address.
    let mut client = DtlsClient::new(now, creds);
    client.send(now, b"\x40\x01\x00\x01");
    for _ in 0..20 {
        while let Some(d) = client.poll_transmit() {
            dtls.handle_datagram(now, addrs[0], &d);
        }
        while let Some((_, d)) = dtls.poll_transmit() {
            client.handle_datagram(now, &d);
        }
        if client.is_connected() && client.poll_transmit().is_none() {
            break;
        }
    }

    let mut rest = data;
    while rest.len() >= 3 {
        let source = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let datagram = &rest[3..3 + len];
        rest = &rest[3 + len..];
        if source >= 0xf0 {
            now += Duration::from_millis(100) * u32::from(source - 0xef);
            dtls.handle_timeout(now);
        } else {
            dtls.handle_datagram(now, addrs[usize::from(source % 4)], datagram);
        }
        while let Some(event) = dtls.poll_event() {
            if let DtlsEvent::Plaintext {
                peer,
                identity,
                data,
            } = event
            {
                lwm2m.handle_datagram_from(now, peer, Some(&identity), &data);
            }
        }
        while lwm2m.poll_transmit().is_some() {}
        while dtls.poll_transmit().is_some() {}
        let stats = dtls.stats();
        assert!(
            stats.unverified <= config.max_unverified as u64,
            "{stats:?}"
        );
        assert!(
            stats.in_handshake <= config.max_handshakes as u64,
            "{stats:?}"
        );
        assert!(stats.sessions <= config.max_sessions as u64, "{stats:?}");
    }
}
