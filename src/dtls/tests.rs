//! The DTLS layer without sockets: a client and a server exchange datagrams in memory.

use super::*;
use crate::twin::DeviceId;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

fn key(b: u8) -> PskKey {
    PskKey::new(vec![b; 16])
}

fn store_with(identity: &str, device: &str, k: PskKey) -> PskStore {
    let store = PskStore::new();
    store
        .set(
            Some(DeviceId::new(device).unwrap()),
            PskCredentials::new(identity, k).unwrap(),
        )
        .unwrap();
    store
}

/// Moves datagrams both ways until nothing moves (bounded); returns what the server
/// delivered as plaintext.
fn pump(
    now: Instant,
    client: &mut DtlsClient,
    from: SocketAddr,
    server: &mut DtlsServer,
) -> Vec<(PeerIdentity, Vec<u8>)> {
    pump_events(now, client, from, server)
        .into_iter()
        .filter_map(|e| match e {
            DtlsEvent::Plaintext { identity, data, .. } => Some((identity, data)),
            _ => None,
        })
        .collect()
}

/// [`pump`], returning every event the server reported.
fn pump_events(
    now: Instant,
    client: &mut DtlsClient,
    from: SocketAddr,
    server: &mut DtlsServer,
) -> Vec<DtlsEvent> {
    let mut events = Vec::new();
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
        events.extend(std::iter::from_fn(|| server.poll_event()));
        if !moved {
            break;
        }
    }
    events
}

fn creds(identity: &str, k: PskKey) -> PskCredentials {
    PskCredentials::new(identity, k).unwrap()
}

/// A server knowing `id-1` (device `dev-1`) and that identity's client at `addr(1)`,
/// after the handshake that carried `first`; what the server delivered.
fn connected(now: Instant) -> (DtlsServer, DtlsClient, Vec<(PeerIdentity, Vec<u8>)>) {
    let mut server = DtlsServer::new(
        DtlsServerConfig::default(),
        store_with("id-1", "dev-1", key(1)),
    );
    let mut client = DtlsClient::new(now, creds("id-1", key(1)));
    client.send(now, b"first");
    let got = pump(now, &mut client, addr(1), &mut server);
    (server, client, got)
}

#[test]
fn handshake_carries_the_identity_and_plaintext_both_ways() {
    let now = Instant::now();
    let (mut server, mut client, got) = connected(now);
    assert!(client.is_connected());
    assert_eq!(got.len(), 1);
    assert_eq!(&*got[0].0.psk_identity, "id-1");
    assert_eq!(got[0].0.device, Some(DeviceId::new("dev-1").unwrap()));
    assert_eq!(got[0].1, b"first");
    let stats = server.stats();
    assert_eq!(
        (
            stats.handshakes,
            stats.sessions,
            stats.unverified,
            stats.in_handshake
        ),
        (1, 1, 0, 0)
    );

    server.send(now, addr(1), b"answer").unwrap();
    pump(now, &mut client, addr(1), &mut server);
    assert_eq!(client.poll_plaintext().as_deref(), Some(&b"answer"[..]));
    // No session elsewhere: nothing goes out in clear.
    assert_eq!(server.send(now, addr(2), b"x"), Err(NoSession(addr(2))));
}

#[test]
fn a_wrong_key_fails_the_handshake_and_keeps_no_state() {
    let now = Instant::now();
    let mut server = DtlsServer::new(
        DtlsServerConfig::default(),
        store_with("id-1", "dev-1", key(1)),
    );
    let mut client = DtlsClient::new(now, creds("id-1", key(2)));
    client.send(now, b"first");
    let events = pump_events(now, &mut client, addr(1), &mut server);
    // Reported once, naming the identity whose key did not match.
    assert_eq!(
        events,
        [DtlsEvent::HandshakeFailed {
            peer: addr(1),
            identity: Some("id-1".into())
        }]
    );
    assert!(!client.is_connected());
    let stats = server.stats();
    assert_eq!((stats.handshakes, stats.sessions), (0, 0));
    // Whatever is still pending times out.
    server.handle_timeout(now + Duration::from_secs(11));
    let stats = server.stats();
    assert_eq!((stats.unverified, stats.in_handshake), (0, 0));
}

#[test]
fn an_unknown_identity_fails_the_handshake() {
    let now = Instant::now();
    let mut server = DtlsServer::new(
        DtlsServerConfig::default(),
        store_with("id-1", "dev-1", key(1)),
    );
    let mut client = DtlsClient::new(now, creds("stranger", key(1)));
    client.send(now, b"first");
    let events = pump_events(now, &mut client, addr(1), &mut server);
    assert_eq!(
        events,
        [DtlsEvent::HandshakeFailed {
            peer: addr(1),
            identity: None
        }]
    );
    assert_eq!(server.stats().sessions, 0);
}

#[test]
fn a_replayed_record_is_delivered_once() {
    let now = Instant::now();
    let mut server = DtlsServer::new(
        DtlsServerConfig::default(),
        store_with("id-1", "dev-1", key(1)),
    );
    let mut client = DtlsClient::new(now, creds("id-1", key(1)));
    client.send(now, b"hello");
    pump(now, &mut client, addr(1), &mut server);
    client.send(now, b"once");
    let record = client.poll_transmit().unwrap();
    server.handle_datagram(now, addr(1), &record);
    server.handle_datagram(now, addr(1), &record);
    let plaintexts = std::iter::from_fn(|| server.poll_event())
        .filter(|e| matches!(e, DtlsEvent::Plaintext { .. }))
        .count();
    assert_eq!(plaintexts, 1);
    // The same record from another address is not a ClientHello and has no session.
    server.handle_datagram(now, addr(9), &record);
    assert_eq!(server.stats().dropped_no_session, 1);
    assert!(server.poll_event().is_none());
}

#[test]
fn the_unverified_table_drops_its_oldest_peer_at_its_bound() {
    let now = Instant::now();
    let config = DtlsServerConfig {
        max_unverified: 4,
        ..DtlsServerConfig::default()
    };
    let mut server = DtlsServer::new(config, store_with("id-1", "dev-1", key(1)));
    let mut hello = DtlsClient::new(now, creds("id-1", key(1)));
    hello.send(now, b"x");
    let client_hello = hello.poll_transmit().unwrap();
    // Spoofed ClientHellos from many addresses: each is answered by a HelloVerifyRequest;
    // past the bound, each pushes the oldest out.
    for port in 0..10 {
        server.handle_datagram(now, addr(1000 + port), &client_hello);
    }
    let stats = server.stats();
    assert_eq!((stats.unverified, stats.evicted_unverified), (4, 6));
    assert_eq!(std::iter::from_fn(|| server.poll_transmit()).count(), 10);
    // A real device during the flood: its ClientHello finds room, and its cookie comes
    // back while the spoofed ClientHellos since have not pushed it out.
    let mut client = DtlsClient::new(now, creds("id-1", key(1)));
    client.send(now, b"real");
    let first = client.poll_transmit().unwrap();
    server.handle_datagram(now, addr(1), &first);
    for (to, d) in std::iter::from_fn(|| server.poll_transmit()) {
        assert_eq!(to, addr(1));
        client.handle_datagram(now, &d);
    }
    for port in 10..13 {
        server.handle_datagram(now, addr(1000 + port), &client_hello);
    }
    let got = pump(now, &mut client, addr(1), &mut server);
    assert_eq!(got.len(), 1);
    assert_eq!(server.stats().evicted_unverified, 10);
    // A device pushed out before its cookie came back: its echo is dropped (no state is
    // made for it), and it starts again.
    let mut late = DtlsClient::new(now, creds("id-1", key(1)));
    late.send(now, b"late");
    let first = late.poll_transmit().unwrap();
    server.handle_datagram(now, addr(2), &first);
    for (to, d) in std::iter::from_fn(|| server.poll_transmit()) {
        if to == addr(2) {
            late.handle_datagram(now, &d);
        }
    }
    for port in 20..24 {
        server.handle_datagram(now, addr(1000 + port), &client_hello);
    }
    // Three spoofed peers and the late device pushed out.
    assert_eq!(server.stats().evicted_unverified, 14);
    assert!(pump(now, &mut late, addr(2), &mut server).is_empty());
    assert_eq!(server.stats().unverified, 4);
    let mut again = DtlsClient::new(now, creds("id-1", key(1)));
    again.send(now, b"again");
    let got = pump(now, &mut again, addr(2), &mut server);
    assert_eq!(got.len(), 1);
    // The bound holds throughout, and the order queue stays within its own.
    assert!(server.stats().unverified <= 4);
    assert!(server.unverified_order_len() <= 2 * 4 + 64);
}

#[test]
fn a_bound_of_zero_unverified_peers_drops_every_client_hello() {
    let now = Instant::now();
    let config = DtlsServerConfig {
        max_unverified: 0,
        ..DtlsServerConfig::default()
    };
    let mut server = DtlsServer::new(config, store_with("id-1", "dev-1", key(1)));
    let mut client = DtlsClient::new(now, creds("id-1", key(1)));
    client.send(now, b"x");
    assert!(pump(now, &mut client, addr(1), &mut server).is_empty());
    let stats = server.stats();
    assert_eq!((stats.unverified, stats.evicted_unverified), (0, 1));
}

#[test]
fn the_handshake_table_stops_at_its_bound() {
    let now = Instant::now();
    let config = DtlsServerConfig {
        max_handshakes: 2,
        ..DtlsServerConfig::default()
    };
    let mut server = DtlsServer::new(config, store_with("id-1", "dev-1", key(1)));
    // Three clients echo their cookies; only two get a ServerHello.
    let mut clients: Vec<DtlsClient> = (0..3)
        .map(|_| DtlsClient::new(now, creds("id-1", key(1))))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(now, b"x");
        let hello = c.poll_transmit().unwrap();
        server.handle_datagram(now, addr(i as u16), &hello);
        let hvr: Vec<_> = std::iter::from_fn(|| server.poll_transmit()).collect();
        assert_eq!(hvr.len(), 1);
        c.handle_datagram(now, &hvr[0].1);
        let hello2 = c.poll_transmit().unwrap();
        server.handle_datagram(now, addr(i as u16), &hello2);
        while server.poll_transmit().is_some() {}
    }
    let stats = server.stats();
    assert_eq!((stats.in_handshake, stats.refused_handshakes), (2, 1));
    // The handshakes that never finish time out.
    server.handle_timeout(now + Duration::from_secs(11));
    assert_eq!(server.stats().in_handshake, 0);
}

#[test]
fn an_identity_holds_at_most_two_sessions_and_sessions_stop_at_their_bound() {
    let now = Instant::now();
    let store = store_with("id-1", "dev-1", key(1));
    store
        .set(Some(DeviceId::new("dev-2").unwrap()), creds("id-2", key(2)))
        .unwrap();
    let config = DtlsServerConfig {
        max_sessions: 3,
        ..DtlsServerConfig::default()
    };
    let mut server = DtlsServer::new(config, store);
    for port in 1..=3 {
        let mut c = DtlsClient::new(now, creds("id-1", key(1)));
        c.send(now, b"x");
        pump(now, &mut c, addr(port), &mut server);
    }
    // The third session of id-1 closed the oldest.
    assert_eq!(server.stats().sessions, 2);
    assert!(server.session_identity(addr(1)).is_none());
    let mut c = DtlsClient::new(now, creds("id-2", key(2)));
    c.send(now, b"x");
    pump(now, &mut c, addr(4), &mut server);
    assert_eq!(server.stats().sessions, 3);
    // Full, nobody idle: the newcomer is refused, existing sessions stay.
    store_refused(&mut server, now);
    assert_eq!(server.stats().sessions, 3);
    assert_eq!(server.stats().refused_sessions, 1);
    // After the idle timeout they are evicted.
    let later = now + Duration::from_secs(25 * 3600 + 120);
    server.handle_timeout(later);
    assert_eq!(server.stats().sessions, 0);
    assert_eq!(server.stats().evicted_idle, 3);
}

fn store_refused(server: &mut DtlsServer, now: Instant) {
    server
        .store()
        .set(Some(DeviceId::new("dev-3").unwrap()), creds("id-3", key(3)))
        .unwrap();
    let mut c = DtlsClient::new(now, creds("id-3", key(3)));
    c.send(now, b"x");
    let got = pump(now, &mut c, addr(5), server);
    assert!(got.is_empty());
}

#[test]
fn rotating_a_key_closes_the_session_and_the_new_key_works() {
    let now = Instant::now();
    let store = store_with("id-1", "dev-1", key(1));
    let mut server = DtlsServer::new(DtlsServerConfig::default(), store.clone());
    let mut client = DtlsClient::new(now, creds("id-1", key(1)));
    client.send(now, b"x");
    pump(now, &mut client, addr(1), &mut server);
    store
        .set(Some(DeviceId::new("dev-1").unwrap()), creds("id-1", key(7)))
        .unwrap();
    client.send(now, b"after rotation");
    let got = pump(now, &mut client, addr(1), &mut server);
    assert!(
        got.is_empty(),
        "a session made with the old key must not deliver"
    );
    assert_eq!(server.stats().sessions, 0);
    assert_eq!(server.send(now, addr(1), b"x"), Err(NoSession(addr(1))));
    let mut rotated = DtlsClient::new(now, creds("id-1", key(7)));
    rotated.send(now, b"new key");
    assert_eq!(pump(now, &mut rotated, addr(1), &mut server).len(), 1);
}

/// The records of a datagram, each as its own datagram.
fn split_records(mut datagram: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while datagram.len() >= 13 {
        let len = 13 + usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
        let len = len.min(datagram.len());
        out.push(datagram[..len].to_vec());
        datagram = &datagram[len..];
    }
    out
}

#[test]
fn a_key_rotated_between_the_key_exchange_and_finished_gives_no_session() {
    // The server resolves the key at the ClientKeyExchange; the key is rotated before the
    // client's Finished arrives. The handshake completes on the old key, so it must not
    // become a session (the rotation closed every session of the old key).
    let now = Instant::now();
    let store = store_with("id-1", "dev-1", key(1));
    let mut server = DtlsServer::new(DtlsServerConfig::default(), store.clone());
    let mut client = DtlsClient::new(now, creds("id-1", key(1)));
    client.send(now, b"x");
    let mut rotated = false;
    for _ in 0..20 {
        let mut moved = false;
        while let Some(d) = client.poll_transmit() {
            moved = true;
            // ClientKeyExchange: an epoch-0 handshake record of type 16.
            let records = split_records(&d);
            let cke = records
                .iter()
                .position(|r| r[0] == 22 && r[3..5] == [0, 0] && r.get(13) == Some(&16));
            match cke {
                Some(i) if !rotated => {
                    for r in &records[..=i] {
                        server.handle_datagram(now, addr(1), r);
                    }
                    store
                        .set(Some(DeviceId::new("dev-1").unwrap()), creds("id-1", key(7)))
                        .unwrap();
                    rotated = true;
                    for r in &records[i + 1..] {
                        server.handle_datagram(now, addr(1), r);
                    }
                }
                _ => server.handle_datagram(now, addr(1), &d),
            }
        }
        while let Some((_, d)) = server.poll_transmit() {
            client.handle_datagram(now, &d);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(rotated, "the client's flight held a ClientKeyExchange");
    let delivered = std::iter::from_fn(|| server.poll_event())
        .filter(|e| matches!(e, DtlsEvent::Plaintext { .. }))
        .count();
    assert_eq!(delivered, 0, "a handshake on a rotated key delivered");
    assert_eq!(server.stats().sessions, 0);
    assert!(server.stats().handshake_failures >= 1);
}

#[test]
fn a_client_handshakes_again_after_the_server_lost_the_session() {
    let now = Instant::now();
    let store = store_with("id-1", "dev-1", key(1));
    let mut server = DtlsServer::new(DtlsServerConfig::default(), store.clone());
    let mut client = DtlsClient::new(now, creds("id-1", key(1)));
    client.send(now, b"x");
    pump(now, &mut client, addr(1), &mut server);
    // The hub restarts: a new server with the same keys.
    let mut server = DtlsServer::new(DtlsServerConfig::default(), store);
    client.send(now, b"lost");
    assert!(pump(now, &mut client, addr(1), &mut server).is_empty());
    client.restart(now);
    client.send(now, b"again");
    let got = pump(now, &mut client, addr(1), &mut server);
    assert_eq!(got.len(), 1);
    assert_eq!(client.handshakes(), 2);
}

#[test]
fn keys_never_show_in_debug_output() {
    let k = key_from_hex("73656372657473656372657473656372").unwrap();
    let c = creds("id-1", k.clone());
    let store = PskStore::new();
    store.set(None, c.clone()).unwrap();
    for text in [format!("{k:?}"), format!("{c:?}"), format!("{store:?}")] {
        assert!(
            !text.contains("7365") && !text.contains("secret") && !text.contains("115"),
            "{text}"
        );
    }
    assert_eq!(
        PskCredentials::new("id", PskKey::new(Vec::new())),
        Err(CredentialsError::KeyLength { len: 0 })
    );
    assert_eq!(key_from_hex("abc"), Err(CredentialsError::KeyNotHex));
    assert!(PskCredentials::new(&"i".repeat(MAX_IDENTITY + 1), key(1)).is_err());
    // An identity belongs to one device.
    store
        .set(Some(DeviceId::new("a").unwrap()), creds("shared", key(1)))
        .unwrap();
    assert!(matches!(
        store.set(Some(DeviceId::new("b").unwrap()), creds("shared", key(2))),
        Err(CredentialsError::IdentityTaken { .. })
    ));
}

#[test]
fn a_spoofed_client_hello_does_not_divert_an_established_session() {
    let now = Instant::now();
    let (mut server, mut client, got) = connected(now);
    assert_eq!(got.len(), 1);
    // Someone else sends a ClientHello with the device's address as its source.
    let mut forger = DtlsClient::new(now, creds("id-x", key(9)));
    forger.send(now, b"x");
    let hello = forger.poll_transmit().expect("a ClientHello");
    server.handle_datagram(now, addr(1), &hello);
    assert_eq!(server.stats().unverified, 1);
    // The device's records still reach its session.
    client.send(now, b"after");
    let got = pump(now, &mut client, addr(1), &mut server);
    assert_eq!(got.len(), 1, "the session's datagram was diverted");
    assert_eq!(got[0].1, b"after");
    server.send(now, addr(1), b"answer").unwrap();
    pump(now, &mut client, addr(1), &mut server);
    assert_eq!(client.poll_plaintext().as_deref(), Some(&b"answer"[..]));
}

#[test]
fn a_full_table_still_takes_a_device_back_at_a_new_address() {
    // Full, and the device's identity at its cap: its new session (its address changed)
    // supersedes its old one rather than being refused.
    let now = Instant::now();
    let config = DtlsServerConfig {
        max_sessions: 2,
        ..DtlsServerConfig::default()
    };
    let store = store_with("id-1", "dev-1", key(1));
    let mut server = DtlsServer::new(config, store);
    for port in 1..=2 {
        let mut c = DtlsClient::new(now, creds("id-1", key(1)));
        c.send(now, b"x");
        pump(now, &mut c, addr(port), &mut server);
    }
    assert_eq!(server.stats().sessions, 2);
    let mut c = DtlsClient::new(now, creds("id-1", key(1)));
    c.send(now, b"back");
    let got = pump(now, &mut c, addr(3), &mut server);
    assert_eq!(got.len(), 1);
    assert_eq!(server.stats().refused_sessions, 0);
    assert!(server.session_identity(addr(3)).is_some());
    assert!(server.session_identity(addr(1)).is_none());
}

#[test]
fn a_new_key_lets_a_device_in_only_once_its_durable_step_succeeded() {
    let now = Instant::now();
    let store = store_with("id-1", "dev-1", key(1));
    let mut server = DtlsServer::new(DtlsServerConfig::default(), store.clone());
    let dev = DeviceId::new("dev-1").unwrap();
    let handshake = |server: &mut DtlsServer, port: u16, identity: &str, k: PskKey| {
        let mut client = DtlsClient::new(now, creds(identity, k));
        client.send(now, b"hello");
        !pump(now, &mut client, addr(port), server).is_empty()
    };
    // While the rotation is being made durable, the new key opens nothing and the old
    // one still works; a refusal there changes nothing.
    let refused = store.set_with(Some(dev.clone()), creds("id-2", key(2)), || {
        assert!(
            !handshake(&mut server, 1, "id-2", key(2)),
            "new key before durable"
        );
        assert!(
            handshake(&mut server, 2, "id-1", key(1)),
            "old key before durable"
        );
        Err("disk full")
    });
    assert_eq!(refused, Ok(Err("disk full")));
    assert_eq!(store.identity_of(&dev).as_deref(), Some("id-1"));
    assert!(handshake(&mut server, 3, "id-1", key(1)));
    assert!(!handshake(&mut server, 4, "id-2", key(2)));
    // Once durable, the new key works and the old one is gone.
    assert_eq!(
        store.set_with(
            Some(dev.clone()),
            creds("id-2", key(2)),
            || Ok::<(), ()>(())
        ),
        Ok(Ok(()))
    );
    assert!(handshake(&mut server, 5, "id-2", key(2)));
    assert!(!handshake(&mut server, 6, "id-1", key(1)));
    // Another device's identity is refused before the durable step runs.
    let other = DeviceId::new("dev-2").unwrap();
    let taken = store.set_with(Some(other), creds("id-2", key(3)), || -> Result<(), ()> {
        panic!("the durable step of a refused change ran")
    });
    assert_eq!(
        taken.map(drop),
        Err(CredentialsError::IdentityTaken { device: dev })
    );
}

#[test]
fn sessions_whose_key_went_make_room_in_a_full_table() {
    let now = Instant::now();
    let store = store_with("id-1", "dev-1", key(1));
    let dev2 = DeviceId::new("dev-2").unwrap();
    store
        .set(Some(dev2.clone()), creds("id-2", key(2)))
        .unwrap();
    let config = DtlsServerConfig {
        max_sessions: 2,
        ..DtlsServerConfig::default()
    };
    let mut server = DtlsServer::new(config, store.clone());
    for port in 1..=2 {
        let mut c = DtlsClient::new(now, creds("id-1", key(1)));
        c.send(now, b"x");
        pump(now, &mut c, addr(port), &mut server);
    }
    assert_eq!(server.stats().sessions, 2);
    // dev-1's key is removed: its two sessions are dead, though silent.
    assert!(store.remove_device(&DeviceId::new("dev-1").unwrap()));
    let mut c = DtlsClient::new(now, creds("id-2", key(2)));
    c.send(now, b"x");
    assert!(!pump(now, &mut c, addr(3), &mut server).is_empty());
    assert_eq!(server.stats().sessions, 1);
    assert_eq!(server.stats().refused_sessions, 0);
    assert_eq!(
        server.session_identity(addr(3)).map(|i| i.device.clone()),
        Some(Some(dev2))
    );
}

/// A change whose durable step fails changes nothing, also when the identity it names was
/// held by no device: `replace` overwrote that entry and `put_back` only restored the
/// device's own earlier entry, so the unowned identity was gone (moved here from
/// tests/hub_store_failures_review.rs, where it went through the hub's key store, now
/// read-only).
#[test]
fn a_refused_durable_step_leaves_an_unowned_identity_it_named_in_place() {
    let store = PskStore::new();
    let shared = creds("shared", key(7));
    store.set(None, shared).unwrap();
    let pump = DeviceId::new("pump").unwrap();
    let refused = store.set_with(Some(pump.clone()), creds("shared", key(9)), || {
        Err("commit failed")
    });
    assert_eq!(refused, Ok(Err("commit failed")));
    assert_eq!(store.len(), 1);
    assert_eq!(store.device_of("shared"), None);
    assert_eq!(store.entry("shared").map(|e| e.key), Some(key(7)));
    assert!(!store.has_device(&pump));
    // Control: the same change with its durable step succeeding takes the identity.
    store
        .set_with(Some(pump.clone()), creds("shared", key(9)), || {
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
    assert_eq!(store.device_of("shared"), Some(pump));
}

/// Why the cookie exchange is bounded, not stateless (module docs): `dimpl` 0.9 keeps its
/// cookie secret per state machine, and a state machine with its own cookie step off
/// (`use_server_cookie(false)`) cannot begin a handshake at the ClientHello that echoes
/// a cookie (message_seq 1, RFC 6347 §4.2.2): it waits for message_seq 0 and answers
/// nothing. So the HelloVerifyRequest cannot be made by a throwaway instance (or by us)
/// with the real instance created when the cookie comes back. Should a `dimpl` upgrade
/// make either work, this test fails: then the unverified table can go.
#[test]
fn dimpl_cannot_take_over_a_handshake_at_the_echoed_cookie() {
    struct Resolver;
    impl dimpl::PskResolver for Resolver {
        fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
            (identity == b"id-1").then(|| vec![1; 16])
        }
    }
    let now = Instant::now();
    let builder = |cookie: bool| {
        dimpl::Config::builder()
            .with_psk_server(None, std::sync::Arc::new(Resolver))
            .use_server_cookie(cookie)
    };
    let first = psk_config(builder(true), 1280, Duration::from_secs(10));
    let second = psk_config(builder(false), 1280, Duration::from_secs(10));
    let mut buf = vec![0u8; 2048];
    let mut out = |dtls: &mut dimpl::Dtls| {
        let mut packets = Vec::new();
        for _ in 0..64 {
            match dtls.poll_output(&mut buf) {
                dimpl::Output::Packet(p) => packets.push(p.to_vec()),
                dimpl::Output::Timeout(_) => break,
                _ => {}
            }
        }
        packets
    };
    let mut client = DtlsClient::new(now, creds("id-1", key(1)));
    client.send(now, b"x");
    // One instance answers the first ClientHello (HelloVerifyRequest) and is dropped.
    let mut throwaway = dimpl::Dtls::new_12_psk(first, now);
    throwaway.handle_timeout(now).unwrap();
    for d in std::iter::from_fn(|| client.poll_transmit()).collect::<Vec<_>>() {
        throwaway.handle_packet(&d).unwrap();
    }
    let hvr = out(&mut throwaway);
    assert_eq!(hvr.len(), 1, "the HelloVerifyRequest");
    drop(throwaway);
    for d in &hvr {
        client.handle_datagram(now, d);
    }
    let echoed: Vec<Vec<u8>> = std::iter::from_fn(|| client.poll_transmit()).collect();
    assert!(!echoed.is_empty(), "the ClientHello with the cookie");
    // A fresh instance, its cookie step off, takes the echoed ClientHello: nothing.
    let mut fresh = dimpl::Dtls::new_12_psk(second, now);
    fresh.handle_timeout(now).unwrap();
    out(&mut fresh);
    for d in &echoed {
        let _ = fresh.handle_packet(d);
    }
    assert!(
        out(&mut fresh).is_empty(),
        "dimpl now answers a handshake begun at the echoed cookie: the cookie exchange can \
         be made stateless (see the unverified table in src/dtls/server.rs)"
    );
}

/// A server knowing `id-1` (dev-1, key 1) and `id-2` (dev-2, key 2), with a session of
/// each: `id-1` at `addr(1)`, `id-2` at `addr(2)`. Events and datagrams drained.
fn two_sessions(now: Instant) -> (DtlsServer, DtlsClient, DtlsClient) {
    let store = store_with("id-1", "dev-1", key(1));
    store
        .set(Some(DeviceId::new("dev-2").unwrap()), creds("id-2", key(2)))
        .unwrap();
    let mut server = DtlsServer::new(DtlsServerConfig::default(), store);
    let mut one = DtlsClient::new(now, creds("id-1", key(1)));
    one.send(now, b"x");
    pump(now, &mut one, addr(1), &mut server);
    let mut two = DtlsClient::new(now, creds("id-2", key(2)));
    two.send(now, b"x");
    pump(now, &mut two, addr(2), &mut server);
    assert_eq!(server.stats().sessions, 2);
    while server.poll_event().is_some() {}
    (server, one, two)
}

/// The sessions closed as `CredentialsChanged` among the server's events, and whether a
/// datagram (the close_notify) went to each; drains both queues.
fn closed_for_credentials(server: &mut DtlsServer) -> Vec<(SocketAddr, bool)> {
    let sent: Vec<SocketAddr> = std::iter::from_fn(|| server.poll_transmit())
        .map(|(to, _)| to)
        .collect();
    std::iter::from_fn(|| server.poll_event())
        .filter_map(|e| match e {
            DtlsEvent::Closed {
                peer,
                reason: CloseReason::CredentialsChanged,
                ..
            } => Some((peer, sent.contains(&peer))),
            _ => None,
        })
        .collect()
}

/// A standalone server (no hub driver calling `handle_timeout` every quarter second):
/// `id-1`'s key is removed while `id-1` is silent; `id-2`'s next datagram, or a send to
/// `id-2`, closes `id-1`'s session at once with a close_notify. Before, only
/// `handle_timeout` looked at the store's withdrawals: a driver sleeping until
/// `poll_timeout` (up to a minute, the idle sweep) left the session open meanwhile,
/// however busy the server was with other peers.
#[test]
fn another_peers_datagram_or_a_send_closes_the_sessions_of_a_withdrawn_key() {
    let now = Instant::now();
    // Another peer's datagram.
    let (mut server, _one, mut two) = two_sessions(now);
    assert!(server.store().remove_identity("id-1"));
    two.send(now, b"from id-2");
    let record = two.poll_transmit().unwrap();
    server.handle_datagram(now, addr(2), &record);
    let delivered = matches!(
        server.poll_event(),
        Some(DtlsEvent::Closed { peer, .. }) if peer == addr(1)
    );
    assert!(delivered, "id-1's session was not closed first");
    assert!(matches!(
        server.poll_event(),
        Some(DtlsEvent::Plaintext { peer, .. }) if peer == addr(2)
    ));
    assert_eq!(server.stats().sessions, 1);
    assert!(
        std::iter::from_fn(|| server.poll_transmit()).any(|(to, _)| to == addr(1)),
        "no close_notify to id-1"
    );
    assert_eq!(server.stats().closed_key_withdrawn, 1);

    // A send to another peer.
    let (mut server, _one, _two) = two_sessions(now);
    server
        .store()
        .set(Some(DeviceId::new("dev-1").unwrap()), creds("id-1", key(9)))
        .unwrap();
    server.send(now, addr(2), b"to id-2").unwrap();
    assert_eq!(closed_for_credentials(&mut server), vec![(addr(1), true)]);
    assert_eq!(server.stats().sessions, 1);
    assert_eq!(server.stats().closed_key_withdrawn, 1);
}

/// Control: a change that withdraws nothing (the same credentials again) closes nothing,
/// and `handle_timeout` still closes a withdrawn key's sessions on a server that hears
/// from nobody.
#[test]
fn control_handle_timeout_alone_closes_the_sessions_of_a_withdrawn_key() {
    let now = Instant::now();
    let (mut server, _one, _two) = two_sessions(now);
    server
        .store()
        .set(Some(DeviceId::new("dev-2").unwrap()), creds("id-2", key(2)))
        .unwrap();
    server.handle_timeout(now);
    assert_eq!(closed_for_credentials(&mut server), vec![]);
    assert!(server.store().remove_identity("id-2"));
    server.handle_timeout(now);
    assert_eq!(closed_for_credentials(&mut server), vec![(addr(2), true)]);
    assert_eq!(server.stats().sessions, 1);
}

/// Every ended session is counted once under its reason; before, sessions closed for a
/// withdrawn key, by `close_all`, by `close_identity`, by their peer, superseded or
/// replaced were counted nowhere (only idle evictions were), so `handshakes` minus
/// `sessions` could not be told apart.
#[test]
fn every_closed_session_is_counted_under_its_reason() {
    let now = Instant::now();
    let store = store_with("id-1", "dev-1", key(1));
    for (n, id) in [(2, "id-2"), (3, "id-3"), (4, "id-4")] {
        store
            .set(
                Some(DeviceId::new(&format!("dev-{n}")).unwrap()),
                creds(id, key(n)),
            )
            .unwrap();
    }
    let mut server = DtlsServer::new(DtlsServerConfig::default(), store.clone());
    let connect = |server: &mut DtlsServer, id: &str, k: u8, port: u16| {
        let mut c = DtlsClient::new(now, creds(id, key(k)));
        c.send(now, b"x");
        assert_eq!(pump(now, &mut c, addr(port), server).len(), 1);
        c
    };
    // id-1 three times: the third supersedes the first (two per identity).
    connect(&mut server, "id-1", 1, 1);
    connect(&mut server, "id-1", 1, 2);
    connect(&mut server, "id-1", 1, 3);
    // id-2 twice from the same address: the second replaces the first.
    connect(&mut server, "id-2", 2, 4);
    let mut two = connect(&mut server, "id-2", 2, 4);
    // id-2 closes its session itself.
    assert!(two.close(now));
    pump(now, &mut two, addr(4), &mut server);
    // id-3's key goes (met by handle_timeout); id-4 is closed by the application.
    connect(&mut server, "id-3", 3, 5);
    connect(&mut server, "id-4", 4, 6);
    assert!(store.remove_identity("id-3"));
    server.handle_timeout(now);
    assert_eq!(server.close_identity("id-4"), 1);
    // The rest (id-1's two sessions) at shutdown.
    assert_eq!(server.close_all(), 2);
    let s = server.stats();
    assert_eq!(
        (
            s.superseded,
            s.replaced,
            s.closed_by_peer,
            s.closed_key_withdrawn,
            s.closed_local,
            s.closed_shutdown,
            s.evicted_idle,
            s.session_errors,
            s.sessions,
        ),
        (1, 1, 1, 1, 1, 2, 0, 0, 0)
    );
    assert_eq!(s.handshakes, 7);
}

#[test]
fn an_entrys_live_flag_is_cleared_exactly_when_its_revision_leaves_the_store() {
    let store = PskStore::new();
    let dev = DeviceId::new("dev-1").unwrap();
    // A flag stands for "the identity's revision is still this entry's".
    let agrees = |identity: &str, e: &psk::PskEntry| {
        let live = e.live.load(std::sync::atomic::Ordering::Acquire);
        assert_eq!(
            live,
            store.revision(identity) == Some(e.revision),
            "{identity}"
        );
        live
    };
    store.set(Some(dev.clone()), creds("id-1", key(1))).unwrap();
    let first = store.entry("id-1").unwrap();
    assert!(agrees("id-1", &first));
    // Set again unchanged: the same entry, still live.
    store.set(Some(dev.clone()), creds("id-1", key(1))).unwrap();
    assert!(agrees("id-1", &first));
    // Rotated: the old entry retires, the new one is live.
    store.set(Some(dev.clone()), creds("id-1", key(2))).unwrap();
    assert!(!agrees("id-1", &first));
    let rotated = store.entry("id-1").unwrap();
    assert!(agrees("id-1", &rotated));
    // The device takes another identity: its old one retires.
    store.set(Some(dev.clone()), creds("id-2", key(2))).unwrap();
    assert!(!agrees("id-1", &rotated));
    let moved = store.entry("id-2").unwrap();
    assert!(agrees("id-2", &moved));
    // An identity of no device: unchanged keeps it, a new key retires it.
    store.set(None, creds("free", key(3))).unwrap();
    let free = store.entry("free").unwrap();
    store.set(None, creds("free", key(3))).unwrap();
    assert!(agrees("free", &free));
    store.set(None, creds("free", key(4))).unwrap();
    assert!(!agrees("free", &free));
    let free = store.entry("free").unwrap();
    assert!(agrees("free", &free));
    // A device claims the free identity: the free entry retires.
    let other = DeviceId::new("dev-2").unwrap();
    store
        .set(Some(other.clone()), creds("free", key(4)))
        .unwrap();
    assert!(!agrees("free", &free));
    let claimed = store.entry("free").unwrap();
    assert!(agrees("free", &claimed));
    // Removed by identity, and by device.
    assert!(store.remove_identity("free"));
    assert!(!agrees("free", &claimed));
    assert!(store.remove_device(&dev));
    assert!(!agrees("id-2", &moved));
}
