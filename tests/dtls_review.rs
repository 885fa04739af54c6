//! Hostile review of the DTLS layer (src/dtls): probes through the public sans-IO API.
//! Each test failed on the code as reviewed; each is fixed since.
#![cfg(feature = "dtls")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::dtls::{
    CloseReason, DtlsClient, DtlsEvent, DtlsServer, DtlsServerConfig, PeerIdentity, PskStore,
};

mod dtls_support;
use dtls_support::{
    addr, creds, drain_client, drain_server, first_flight, first_flight_with, key, store_with,
};

fn pump(
    now: Instant,
    client: &mut DtlsClient,
    from: SocketAddr,
    server: &mut DtlsServer,
) -> Vec<(PeerIdentity, Vec<u8>)> {
    let mut delivered = Vec::new();
    for _ in 0..50 {
        let mut moved = false;
        while let Some(d) = client.poll_transmit() {
            server.handle_datagram(now, from, &d);
            moved = true;
        }
        while let Some((to, d)) = server.poll_transmit() {
            if to == from {
                client.handle_datagram(now, &d);
            }
            moved = true;
        }
        while let Some(e) = server.poll_event() {
            if let DtlsEvent::Plaintext { identity, data, .. } = e {
                delivered.push((identity, data));
            }
        }
        if !moved {
            break;
        }
    }
    delivered
}

fn connected(now: Instant) -> (DtlsServer, DtlsClient) {
    let (mut server, mut client) = first_flight(now, b"first");
    let got = pump(now, &mut client, addr(1), &mut server);
    assert_eq!(got.len(), 1);
    assert!(client.is_connected());
    (server, client)
}

fn closed_events(server: &mut DtlsServer) -> Vec<CloseReason> {
    std::iter::from_fn(|| server.poll_event())
        .filter_map(|e| match e {
            DtlsEvent::Closed { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

fn still_works(now: Instant, server: &mut DtlsServer, client: &mut DtlsClient) -> bool {
    client.send(now, b"after");
    let got = pump(now, client, addr(1), server);
    got.len() == 1 && got[0].1 == b"after"
}

/// What: re-setting a device's credentials to the very same identity and key (an
/// idempotent provisioning step, `Hub::set_psk` run twice) must leave its live session alone.
/// Why it was a bug: the store's revision is documented as "Bumped when the key changes; a session
/// keyed with an older revision is closed" (src/dtls/psk.rs, `PskEntry::revision`), and
/// `PskStore` says sessions close when made "with a replaced or removed key"; here the key did
/// not change. Before the fix: `PskStore::set_with` bumps the revision on every set, so the next send
/// (or datagram) closes the session with `CredentialsChanged` and the device must handshake again.
#[test]
fn resetting_identical_credentials_closes_the_live_session() {
    let now = Instant::now();
    let (mut server, mut client) = connected(now);
    server
        .store()
        .set(Some(DeviceId::new("dev-1").unwrap()), creds("id-1", key(1)))
        .unwrap();
    let sent = server.send(now, addr(1), b"x");
    let closed = closed_events(&mut server);
    assert!(
        sent.is_ok() && closed.is_empty(),
        "same key set again: send {sent:?}, closed {closed:?}"
    );
    assert!(still_works(now, &mut server, &mut client));
}

/// What: a handshake whose cookie exchange took 0.5 s and whose final flight arrives 9.7 s
/// after the ServerHello (10.2 s after the first ClientHello) completes.
/// Why it was a bug: `DtlsServerConfig::handshake_timeout` is documented as "How long a handshake may
/// take from its ServerHello; then it is dropped" (src/dtls/server.rs), and the bounds table
/// says "handshakes in progress | 256, 10 s timeout". Before the fix: the `dimpl` instance is created at
/// the first ClientHello with `handshake_timeout` as its own deadline (psk_config in
/// src/dtls/mod.rs, `Dtls::new_12_psk(.., now)` in `handle_datagram`), so the handshake dies
/// 10 s after the ClientHello; the time spent unverified (up to 5 s) is taken off the
/// documented budget and the handshake is counted as failed.
#[test]
fn handshake_deadline_runs_from_the_server_hello_as_documented() {
    let t0 = Instant::now();
    let (mut server, mut client) = first_flight(t0, b"x");
    for d in drain_client(&mut client) {
        server.handle_datagram(t0, addr(1), &d);
    }
    for d in drain_server(&mut server) {
        client.handle_datagram(t0 + Duration::from_millis(10), &d);
    }
    // The cookie comes back after 0.5 s: the ServerHello goes out then.
    let server_hello_at = t0 + Duration::from_millis(500);
    for d in drain_client(&mut client) {
        server.handle_datagram(server_hello_at, addr(1), &d);
    }
    assert_eq!(server.stats().in_handshake, 1);
    for d in drain_server(&mut server) {
        client.handle_datagram(t0 + Duration::from_millis(20), &d);
    }
    // The client's last flight arrives 9.7 s after the ServerHello: within the 10 s.
    let last = server_hello_at + Duration::from_millis(9700);
    for d in drain_client(&mut client) {
        server.handle_datagram(last, addr(1), &d);
    }
    let stats = server.stats();
    assert_eq!(
        (stats.sessions, stats.handshake_failures),
        (1, 0),
        "handshake dropped 9.7 s after its ServerHello: {stats:?}"
    );
}

/// What: one spoofed ClientHello, with the server's timers driven for 6 s (past the 5 s an
/// unverified peer is kept), gets exactly one HelloVerifyRequest back.
/// Why it was a bug: the cookie exchange exists so a spoofed ClientHello reflects at most one small,
/// stateless reply to the forged address (RFC 6347 §4.2.1; the client, not the server,
/// retransmits to recover a lost HelloVerifyRequest, §4.2.4). The docs count the unverified
/// table as the only cost of a spoofed ClientHello ("A flood of spoofed ClientHellos fills only
/// this table"), and the README's bench line says "a HelloVerifyRequest sent". Now:
/// `expire_pending` (src/dtls/server.rs) runs the `dimpl` retransmission timer of Unverified
/// peers too, so the victim gets the HelloVerifyRequest 3 times (at ~0 s, ~1 s, ~3 s): 3x the
/// datagrams and more bytes than the spoofed ClientHello (180 vs 114 bytes here), a reflection
/// amplifier at 5,000 spoofed hellos a second.
#[test]
fn a_spoofed_client_hello_is_answered_with_one_hello_verify_request() {
    let t0 = Instant::now();
    let mut server = DtlsServer::new(
        DtlsServerConfig::default(),
        store_with("id-1", "dev-1", key(1)),
    );
    let mut forger = DtlsClient::new(t0, creds("id-x", key(9)));
    forger.send(t0, b"x");
    let hello = forger.poll_transmit().unwrap();
    server.handle_datagram(t0, addr(7), &hello);
    let first = drain_server(&mut server);
    let mut sent = first.len();
    let mut bytes: usize = first.iter().map(Vec::len).sum();
    for _ in 0..20 {
        let Some(t) = server.poll_timeout() else {
            break;
        };
        if t > t0 + Duration::from_secs(6) {
            break;
        }
        server.handle_timeout(t);
        let more = drain_server(&mut server);
        sent += more.len();
        bytes += more.iter().map(Vec::len).sum::<usize>();
    }
    assert_eq!(
        sent,
        1,
        "a {}-byte spoofed ClientHello drew {sent} datagrams ({bytes} bytes) to the forged address",
        hello.len()
    );
}

/// What: a `DtlsServerConfig` with a very long handshake timeout (11 years, e.g. a
/// `handshakeTimeoutMs` meant as "no limit" in a JSON config) builds a server.
/// Why it was a bug: `DtlsServer::new` is infallible and `Hub::bind_dtls` returns `io::Result`; the
/// config is `Deserialize` with no validation, and `psk_config` (src/dtls/mod.rs) clamps the low
/// end (`.max(1 ms)`, `mtu.max(64)`) but not the high end while claiming the values are
/// "constants or validated by the caller's config". Before the fix: `dimpl` refuses timeouts over 10
/// years and `psk_config`'s `.expect("the dtls psk configuration is valid")` panics.
#[test]
fn a_long_handshake_timeout_does_not_panic_the_server() {
    let config = DtlsServerConfig {
        handshake_timeout: Duration::from_secs(11 * 365 * 24 * 3600),
        ..DtlsServerConfig::default()
    };
    let built = std::panic::catch_unwind(|| DtlsServer::new(config, PskStore::new()).stats());
    assert!(
        built.is_ok(),
        "DtlsServer::new panicked on a long handshake timeout"
    );
}

/// What: a server whose unverified peers never expire (`unverified_timeout: Duration::MAX`,
/// the usual "forever"; the table stays bounded by `max_unverified`) survives a ClientHello.
/// Why it was a bug: the field is a public, unvalidated `Duration` of an infallible constructor, and
/// any datagram from the network must not crash the server thread (the hub's UDP driver runs
/// it). Before the fix: `Pending::expires` (src/dtls/server.rs) computes `since + unverified_timeout`
/// with `Instant + Duration`, which panics on overflow at the first ClientHello, so one
/// unauthenticated datagram takes the coaps listener down.
#[test]
fn a_never_expiring_unverified_table_survives_a_client_hello() {
    let config = DtlsServerConfig {
        unverified_timeout: Duration::MAX,
        ..DtlsServerConfig::default()
    };
    let handled = std::panic::catch_unwind(|| {
        let now = Instant::now();
        let (mut server, mut client) = first_flight_with(config, now, b"x");
        let hello = client.poll_transmit().unwrap();
        server.handle_datagram(now, addr(1), &hello);
        server.stats().unverified
    });
    assert_eq!(
        handled.ok(),
        Some(1),
        "the first ClientHello panicked the server"
    );
}
