//! The DTLS layer's timers and session ends, driven through the public sans-IO API on a
//! fake clock (offsets from one `Instant`): the server's flight retransmission after a slow
//! cookie round trip, and the close_notify each way a session ends.
#![cfg(feature = "dtls")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::dtls::{
    DtlsClient, DtlsEvent, DtlsServer, DtlsServerConfig, PskCredentials, PskKey, PskStore,
};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

fn key(b: u8) -> PskKey {
    PskKey::new(vec![b; 16])
}

fn creds(identity: &str, k: PskKey) -> PskCredentials {
    PskCredentials::new(identity, k).unwrap()
}

fn store_with(identity: &str, device: &str, k: PskKey) -> PskStore {
    let store = PskStore::new();
    store
        .set(Some(DeviceId::new(device).unwrap()), creds(identity, k))
        .unwrap();
    store
}

fn drain_client(c: &mut DtlsClient) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn drain_server(s: &mut DtlsServer) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| s.poll_transmit())
        .map(|(_, d)| d)
        .collect()
}

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
    let mut server = DtlsServer::new(
        DtlsServerConfig::default(),
        store_with("id-1", "dev-1", key(1)),
    );
    let mut client = DtlsClient::new(t0, creds("id-1", key(1)));
    client.send(t0, b"x");
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
    let mut server = DtlsServer::new(
        DtlsServerConfig::default(),
        store_with("id-1", "dev-1", key(1)),
    );
    let mut client = DtlsClient::new(t0, creds("id-1", key(1)));
    client.send(t0, b"x");
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
