//! The DTLS layer's timers and session ends, driven through the public sans-IO API on a
//! fake clock (offsets from one `Instant`): the server's flight retransmission after a slow
//! cookie round trip, and the close_notify each way a session ends.
#![cfg(feature = "dtls")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::dtls::{CloseReason, DtlsClient, DtlsEvent, DtlsServer, DtlsServerConfig};

mod dtls_support;
use dtls_support::{addr, creds, drain_client, drain_server, first_flight, key, store_with};

/// Whether a datagram carries an epoch-0 ServerHello (handshake type 2) in its first record.
fn has_server_hello(d: &[u8]) -> bool {
    d.len() > 13 && d[0] == 22 && d[3..5] == [0, 0] && d[13] == 2
}

/// The first DTLS retransmission timeout (RFC 6347 §4.2.4.1: 1 s), with the ±25 % jitter
/// `dimpl` adds to every timer.
const FIRST_RTO_MIN: Duration = Duration::from_millis(750);
const FIRST_RTO_MAX: Duration = Duration::from_millis(1250);

/// What: the cookie exchange takes `round_trip` (the second ClientHello arrives that long
/// after the first), the server's ServerHello flight is lost; the server must send it again
/// one retransmission timeout (1 s ± jitter) later, and the handshake then completes.
/// Returns (copies of the flight sent when the cookie came back, when the next one went
/// out, relative to the cookie's arrival).
fn slow_cookie_then_lost_flight(round_trip: Duration) -> (usize, Duration) {
    let t0 = Instant::now();
    let (mut server, mut client) = first_flight(t0, b"x");
    for d in drain_client(&mut client) {
        server.handle_datagram(t0, addr(1), &d);
    }
    let hvr = drain_server(&mut server);
    assert_eq!(hvr.len(), 1);
    client.handle_datagram(t0, &hvr[0]);
    // The echoed cookie reaches the server late.
    let cookie_at = t0 + round_trip;
    for d in drain_client(&mut client) {
        server.handle_datagram(cookie_at, addr(1), &d);
    }
    // Its whole answer is lost.
    let lost = drain_server(&mut server);
    let copies = lost.iter().filter(|d| has_server_hello(d)).count();
    assert!(copies >= 1, "no ServerHello after the cookie");
    assert_eq!(server.stats().in_handshake, 1);
    // Only the server's timer runs (the client's retransmissions are lost too).
    let mut again = None;
    for _ in 0..20 {
        let Some(t) = server.poll_timeout() else {
            break;
        };
        if t > cookie_at + Duration::from_secs(10) {
            break;
        }
        server.handle_timeout(t.max(cookie_at));
        let sent = drain_server(&mut server);
        if sent.iter().any(|d| has_server_hello(d)) {
            again = Some((t.max(cookie_at), sent));
            break;
        }
    }
    let Some((at, flight)) = again else {
        panic!("round trip {round_trip:?}: the lost flight was never sent again");
    };
    // The client's own retransmission timer ran meanwhile; what it sent was lost. The
    // retransmitted flight completes the handshake.
    if client.poll_timeout().is_some_and(|t| t <= at) {
        client.handle_timeout(at);
        drain_client(&mut client);
    }
    for d in flight {
        client.handle_datagram(at, &d);
    }
    for _ in 0..3 {
        for d in drain_client(&mut client) {
            server.handle_datagram(at, addr(1), &d);
        }
        for d in drain_server(&mut server) {
            client.handle_datagram(at, &d);
        }
    }
    assert!(client.is_connected(), "round trip {round_trip:?}");
    assert_eq!(server.stats().sessions, 1, "round trip {round_trip:?}");
    assert!(
        std::iter::from_fn(|| server.poll_event()).any(|e| matches!(
            e,
            DtlsEvent::Plaintext { ref data, .. } if data == b"x"
        )),
        "round trip {round_trip:?}: the queued plaintext was not delivered"
    );
    (copies, at - cookie_at)
}

#[test]
fn a_lost_server_flight_after_a_slow_cookie_round_trip_is_sent_again_on_schedule() {
    for ms in [100, 600, 1500, 3000, 4900] {
        let round_trip = Duration::from_millis(ms);
        let (copies, after) = slow_cookie_then_lost_flight(round_trip);
        assert_eq!(
            copies, 1,
            "round trip {round_trip:?}: the flight went out {copies} times at once"
        );
        assert!(
            (FIRST_RTO_MIN..=FIRST_RTO_MAX).contains(&after),
            "round trip {round_trip:?}: the lost flight went out again {after:?} after the \
             cookie, not one retransmission timeout (1 s ± 25 %) later"
        );
    }
}

/// Runs a handshake at `addr(1)` to the point where the server's first answer past the
/// cookie (its ServerHello flight) is out; returns it, undelivered.
fn up_to_server_flight(t0: Instant) -> (DtlsServer, DtlsClient, Vec<Vec<u8>>) {
    let (mut server, mut client) = first_flight(t0, b"x");
    for _ in 0..2 {
        for d in drain_client(&mut client) {
            server.handle_datagram(t0, addr(1), &d);
        }
        let answer = drain_server(&mut server);
        if answer.iter().any(|d| has_server_hello(d)) {
            return (server, client, answer);
        }
        for d in answer {
            client.handle_datagram(t0, &d);
        }
    }
    panic!("no ServerHello");
}

/// Moves datagrams both ways at `now` until nothing moves (bounded).
fn pump(now: Instant, client: &mut DtlsClient, server: &mut DtlsServer) {
    for _ in 0..5 {
        let to_server = drain_client(client);
        let to_client = drain_server(server);
        if to_server.is_empty() && to_client.is_empty() {
            return;
        }
        for d in to_server {
            server.handle_datagram(now, addr(1), &d);
        }
        for d in to_client {
            client.handle_datagram(now, &d);
        }
    }
}

/// Past the first retransmission timeout of either side (1 s + at most 25 %), before the
/// second.
const LATE: Duration = Duration::from_millis(1300);

/// What: the server's (retransmitted) flight reaches the client when the client's own
/// retransmission timer is already due (its driver had not run it: the datagram and the
/// deadline came together); the handshake must complete.
/// Before the fix: `DtlsClient::handle_datagram` advanced dimpl's clock (which resent the
/// ClientHello) and fed the datagram with nothing polled in between, against dimpl's
/// "poll until `Output::Timeout` after each mutation"; the flight was not answered and the
/// handshake stalled until the client's next timeout, 2 s later.
#[test]
fn a_server_flight_arriving_when_the_client_timer_is_due_completes_the_handshake() {
    let t0 = Instant::now();
    let (mut server, mut client, _lost) = up_to_server_flight(t0);
    let t = server.poll_timeout().unwrap();
    assert!(t < t0 + LATE);
    server.handle_timeout(t);
    let again = drain_server(&mut server);
    assert!(again.iter().any(|d| has_server_hello(d)));
    let late = t0 + LATE;
    assert!(client.poll_timeout().is_some_and(|t| t <= late));
    for d in again {
        client.handle_datagram(late, &d);
    }
    pump(late, &mut client, &mut server);
    assert!(
        client.is_connected() && server.stats().sessions == 1,
        "the late flight was not answered: {:?}",
        server.stats()
    );
}

/// What: the client's last flight reaches the server when the server's retransmission
/// timer for its own flight is already due; the handshake must complete (the server side
/// of the test above: its datagrams too are fed only after the time's output is polled).
#[test]
fn a_client_flight_arriving_when_the_server_timer_is_due_completes_the_handshake() {
    let t0 = Instant::now();
    let (mut server, mut client, flight) = up_to_server_flight(t0);
    for d in flight {
        client.handle_datagram(t0, &d);
    }
    let late = t0 + LATE;
    assert!(server.poll_timeout().is_some_and(|t| t <= late));
    for d in drain_client(&mut client) {
        server.handle_datagram(late, addr(1), &d);
    }
    pump(late, &mut client, &mut server);
    assert!(
        client.is_connected() && server.stats().sessions == 1,
        "the late flight was not answered: {:?}",
        server.stats()
    );
}

/// A server knowing `id-1` (device `dev-1`) and `id-2` (`dev-2`), under `config`.
fn server_with_two(config: DtlsServerConfig) -> DtlsServer {
    let store = store_with("id-1", "dev-1", key(1));
    store
        .set(Some(DeviceId::new("dev-2").unwrap()), creds("id-2", key(2)))
        .unwrap();
    DtlsServer::new(config, store)
}

/// A client of `identity` with an established session at `from`, its first plaintext
/// delivered.
fn connect(now: Instant, server: &mut DtlsServer, identity: &str, k: u8, from: u16) -> DtlsClient {
    let mut client = DtlsClient::new(now, creds(identity, key(k)));
    client.send(now, b"hello");
    for _ in 0..5 {
        for d in drain_client(&mut client) {
            server.handle_datagram(now, addr(from), &d);
        }
        for (to, d) in std::iter::from_fn(|| server.poll_transmit()).collect::<Vec<_>>() {
            if to == addr(from) {
                client.handle_datagram(now, &d);
            }
        }
    }
    assert!(client.is_connected());
    client
}

/// Closed events with their addresses.
fn closed(server: &mut DtlsServer) -> Vec<(SocketAddr, CloseReason)> {
    std::iter::from_fn(|| server.poll_event())
        .filter_map(|e| match e {
            DtlsEvent::Closed { peer, reason, .. } => Some((peer, reason)),
            _ => None,
        })
        .collect()
}

/// Delivers what the server sends to `from` to the client; whether the client then knows
/// its session is gone (it received a close_notify it could read).
fn client_learns(
    now: Instant,
    server: &mut DtlsServer,
    client: &mut DtlsClient,
    from: u16,
) -> bool {
    let mut got = 0;
    for (to, d) in std::iter::from_fn(|| server.poll_transmit()).collect::<Vec<_>>() {
        if to == addr(from) {
            got += 1;
            client.handle_datagram(now, &d);
        }
    }
    got > 0 && !client.is_connected() && client.has_failed()
}

/// What: the server evicts a session idle past its timeout; the device is told
/// (close_notify) instead of finding out by its requests timing out.
/// Before the fix: the idle sweep forgot the session without a word.
#[test]
fn an_idle_session_is_closed_with_close_notify() {
    let t0 = Instant::now();
    let config = DtlsServerConfig {
        session_idle_timeout: Duration::from_secs(60),
        ..DtlsServerConfig::default()
    };
    let mut server = server_with_two(config);
    let mut client = connect(t0, &mut server, "id-1", 1, 1);
    closed(&mut server);
    let mut t = t0;
    for _ in 0..10 {
        let Some(next) = server.poll_timeout() else {
            break;
        };
        t = next;
        server.handle_timeout(t);
        if server.stats().sessions == 0 {
            break;
        }
    }
    assert!(t >= t0 + Duration::from_secs(60));
    assert_eq!(closed(&mut server), vec![(addr(1), CloseReason::Idle)]);
    assert!(
        client_learns(t, &mut server, &mut client, 1),
        "no close_notify for the idle session"
    );
    // The device's next send handshakes again.
    client.send(t, b"back");
    for _ in 0..5 {
        for d in drain_client(&mut client) {
            server.handle_datagram(t, addr(1), &d);
        }
        for d in drain_server(&mut server) {
            client.handle_datagram(t, &d);
        }
    }
    assert!(client.is_connected() && client.handshakes() == 2);
}

/// What: with the session table full, a newcomer's handshake evicts a session idle past
/// its timeout (not yet swept); that device is told.
/// Before the fix: evicted without a word.
#[test]
fn a_session_evicted_at_the_bound_is_closed_with_close_notify() {
    let t0 = Instant::now();
    let config = DtlsServerConfig {
        max_sessions: 1,
        // Swept every 60 s; the newcomer comes between sweeps.
        session_idle_timeout: Duration::from_secs(600),
        ..DtlsServerConfig::default()
    };
    let mut server = server_with_two(config);
    let mut old = connect(t0, &mut server, "id-1", 1, 1);
    closed(&mut server);
    let t = t0 + Duration::from_secs(601);
    assert!(server.poll_timeout().is_some_and(|s| s < t));
    // The newcomer's handshake, without the sweep having run.
    let mut new = DtlsClient::new(t, creds("id-2", key(2)));
    new.send(t, b"hi");
    let mut to_old = Vec::new();
    for _ in 0..5 {
        for d in drain_client(&mut new) {
            server.handle_datagram(t, addr(2), &d);
        }
        for (to, d) in std::iter::from_fn(|| server.poll_transmit()).collect::<Vec<_>>() {
            if to == addr(2) {
                new.handle_datagram(t, &d);
            } else {
                to_old.push(d);
            }
        }
    }
    assert!(new.is_connected());
    assert_eq!(closed(&mut server), vec![(addr(1), CloseReason::Idle)]);
    for d in &to_old {
        old.handle_datagram(t, d);
    }
    assert!(
        !to_old.is_empty() && old.has_failed(),
        "no close_notify for the evicted session"
    );
}

/// What: a device's key is removed (revoked) while its session is quiet; at the server's
/// next sweep the session closes and the device is told.
/// Before the fix: the sweep forgot the session without a word.
#[test]
fn a_session_whose_key_was_revoked_is_closed_with_close_notify() {
    let t0 = Instant::now();
    let mut server = server_with_two(DtlsServerConfig::default());
    let mut client = connect(t0, &mut server, "id-1", 1, 1);
    closed(&mut server);
    assert!(server.store().remove_identity("id-1"));
    // The sweep runs at most a minute later.
    let mut t = t0;
    for _ in 0..10 {
        let Some(next) = server.poll_timeout() else {
            break;
        };
        t = next;
        server.handle_timeout(t);
        if server.stats().sessions == 0 {
            break;
        }
    }
    assert!(t <= t0 + Duration::from_secs(60));
    assert_eq!(
        closed(&mut server),
        vec![(addr(1), CloseReason::CredentialsChanged)]
    );
    assert!(
        client_learns(t, &mut server, &mut client, 1),
        "no close_notify for the revoked session"
    );
}

/// What: `DtlsClient::close` sends close_notify; the server drops the session
/// (`CloseReason::PeerClosed`), and the client handshakes again at its next send, also
/// when the server's answering close_notify arrives after the new handshake began.
#[test]
fn a_client_close_sends_close_notify_and_the_next_send_handshakes_again() {
    let t0 = Instant::now();
    let mut server = server_with_two(DtlsServerConfig::default());
    let mut client = connect(t0, &mut server, "id-1", 1, 1);
    closed(&mut server);
    assert!(client.close(t0));
    assert!(!client.is_connected());
    // The close_notify, then at once a new ClientHello.
    client.send(t0, b"again");
    let mut delivered = Vec::new();
    for _ in 0..6 {
        for d in drain_client(&mut client) {
            server.handle_datagram(t0, addr(1), &d);
        }
        for d in drain_server(&mut server) {
            client.handle_datagram(t0, &d);
        }
        for e in std::iter::from_fn(|| server.poll_event()) {
            match e {
                DtlsEvent::Closed { reason, .. } => delivered.push(format!("{reason:?}")),
                DtlsEvent::Plaintext { data, .. } => {
                    delivered.push(String::from_utf8(data).unwrap())
                }
                DtlsEvent::Connected { .. } => delivered.push("connected".into()),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(delivered, ["PeerClosed", "connected", "again"]);
    assert!(client.is_connected() && client.handshakes() == 2);
    // Closing a client that never connected sends nothing.
    let mut idle = DtlsClient::new(t0, creds("id-2", key(2)));
    assert!(!idle.close(t0));
    assert!(idle.poll_transmit().is_none());
}

/// What: a device handshakes again from the same address (it rebooted); the old session
/// is replaced, and the close_notify sent under the old session's keys does not disturb
/// the new one (its client cannot read it and discards it).
#[test]
fn a_replaced_session_close_notify_does_not_disturb_the_new_session() {
    let t0 = Instant::now();
    let mut server = server_with_two(DtlsServerConfig::default());
    let _old = connect(t0, &mut server, "id-1", 1, 1);
    closed(&mut server);
    let mut rebooted = connect(t0, &mut server, "id-1", 1, 1);
    assert_eq!(closed(&mut server), vec![(addr(1), CloseReason::Replaced)]);
    assert!(rebooted.is_connected() && !rebooted.has_failed());
    rebooted.send(t0, b"still here");
    for d in drain_client(&mut rebooted) {
        server.handle_datagram(t0, addr(1), &d);
    }
    assert!(std::iter::from_fn(|| server.poll_event()).any(|e| matches!(
        e,
        DtlsEvent::Plaintext { ref data, .. } if data == b"still here"
    )));
}
