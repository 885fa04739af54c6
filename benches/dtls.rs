//! DTLS 1.2 PSK benchmarks (`TLS_PSK_WITH_AES_128_CCM_8`).
//!
//! What is measured (sans-IO, one thread, no sockets, so the numbers are CPU cost and do
//! not depend on the loopback's scheduling):
//! - `dtls/handshake`: one complete PSK handshake including the cookie exchange, a
//!   [`DtlsClient`] and a [`DtlsServer`] exchanging their flights in memory; both sides'
//!   work is in the time (target >= 5,000 handshakes/s on one core for the server side);
//! - `dtls/con_get/plain` and `dtls/con_get/dtls`: a CON GET and its piggybacked 2.05
//!   between two CoAP [`Endpoint`]s, without and with a DTLS session between them (target:
//!   DTLS throughput >= 60% of plain); the ratio is printed;
//! - `dtls/spoofed_client_hello`: what a flood costs: one ClientHello from a new address
//!   while the unverified table is full (the default 1,024 peers), answered with a
//!   HelloVerifyRequest after the oldest unverified peer is dropped to make room;
//! - `dtls/client_new`, `dtls/server_new`: building a client or a server (each builds a
//!   `dimpl` configuration, which validates the crypto provider);
//! - idle session memory (printed, not timed, only with `DTLS_BENCH_MEMORY=1`): the resident-set growth of a server holding
//!   10,000 established, idle sessions, per session (target <= 2 KB).
//!
//! Corpus: fixed identities and keys, seeded CoAP tokens; `dimpl` draws its randoms from
//! the OS.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::coap::{Code, Endpoint, EndpointConfig, Event, Message};
use twinhub::dtls::{
    DtlsClient, DtlsEvent, DtlsServer, DtlsServerConfig, PskCredentials, PskKey, PskStore,
};

fn creds(i: usize) -> PskCredentials {
    PskCredentials::new(
        &format!("bench-{i}"),
        PskKey::new(vec![(i % 251) as u8; 16]),
    )
    .unwrap()
}

fn store(n: usize) -> PskStore {
    let store = PskStore::new();
    for i in 0..n {
        store
            .set(Some(DeviceId::new(&format!("dev-{i}")).unwrap()), creds(i))
            .unwrap();
    }
    store
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5684))
}

/// Runs a handshake to completion (bounded), delivering the client's queued plaintext.
fn handshake(now: Instant, server: &mut DtlsServer, client: &mut DtlsClient, from: SocketAddr) {
    for _ in 0..20 {
        let mut moved = false;
        while let Some(d) = client.poll_transmit() {
            server.handle_datagram(now, from, &d);
            moved = true;
        }
        while let Some((_, d)) = server.poll_transmit() {
            client.handle_datagram(now, &d);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    while server.poll_event().is_some() {}
    assert!(client.is_connected(), "the handshake completed");
}

fn bench_handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("dtls");
    g.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let mut server = DtlsServer::new(DtlsServerConfig::default(), store(1));
    g.bench_function("client_new", |b| {
        b.iter(|| black_box(DtlsClient::new(now, creds(0))))
    });
    g.bench_function("server_new", |b| {
        b.iter(|| {
            black_box(DtlsServer::new(
                DtlsServerConfig::default(),
                PskStore::new(),
            ))
        })
    });
    let mut flooded = DtlsServer::new(DtlsServerConfig::default(), store(1));
    let hello = {
        let mut c = DtlsClient::new(now, creds(0));
        c.send(now, b"x");
        c.poll_transmit().expect("a ClientHello")
    };
    let mut spoofed = 0usize;
    g.bench_function("spoofed_client_hello", |b| {
        b.iter(|| {
            spoofed += 1;
            flooded.handle_datagram(now, addr(100_000 + spoofed % 1_000_000), &hello);
            while let Some(t) = flooded.poll_transmit() {
                black_box(t);
            }
        })
    });
    // Only when the bench ran (a criterion filter may skip it).
    if spoofed > 0 {
        assert_eq!(
            flooded.stats().unverified,
            (DtlsServerConfig::default().max_unverified as u64).min(spoofed as u64),
            "the table stayed full"
        );
    }
    let mut i = 0usize;
    // One client, restarted each time: building a `dimpl` configuration costs ~8 ms (the
    // crate validates its crypto provider), measured apart as `client_new`.
    let mut client = DtlsClient::new(now, creds(0));
    g.bench_function("handshake", |b| {
        b.iter(|| {
            i += 1;
            client.restart(now);
            client.send(now, b"x");
            // A new address each time: the per-identity cap closes the older sessions.
            handshake(now, &mut server, &mut client, addr(i % 60_000));
            while client.poll_plaintext().is_some() {}
            black_box(client.handshakes())
        })
    });
    g.finish();
}

/// One CON GET and its answer between two endpoints; `wire` carries each datagram
/// (plain: as is; dtls: through the sessions).
fn exchange(
    now: Instant,
    client: &mut Endpoint,
    server: &mut Endpoint,
    server_addr: SocketAddr,
    client_addr: SocketAddr,
    wire: &mut dyn FnMut(bool, &[u8]) -> Vec<u8>,
) {
    client
        .send_request(now, server_addr, Message::request(Code::GET, "/3/0/9"))
        .unwrap();
    while let Some(t) = client.poll_transmit() {
        let d = wire(true, &t.payload);
        server.handle_datagram(now, client_addr, &d);
    }
    while let Some(e) = server.poll_event() {
        if let Event::Request { id, .. } = e {
            let mut r = Message::response(Code::CONTENT);
            r.payload = b"80".to_vec();
            server.respond(now, id, r).unwrap();
        }
    }
    while let Some(t) = server.poll_transmit() {
        let d = wire(false, &t.payload);
        client.handle_datagram(now, server_addr, &d);
    }
    let mut answered = false;
    while let Some(e) = client.poll_event() {
        answered |= matches!(e, Event::Response { .. });
    }
    assert!(answered);
}

fn bench_con_get(c: &mut Criterion) {
    let mut g = c.benchmark_group("dtls/con_get");
    g.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let (sa, ca) = (addr(1), addr(2));
    let mut plain_client = Endpoint::new_seeded(EndpointConfig::default(), 1);
    let mut plain_server = Endpoint::new_seeded(EndpointConfig::default(), 2);
    let mut plain_time = Duration::ZERO;
    let mut plain_iters = 0u64;
    g.bench_function("plain", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                exchange(
                    now,
                    &mut plain_client,
                    &mut plain_server,
                    sa,
                    ca,
                    &mut |_, d| d.to_vec(),
                );
            }
            let e = t.elapsed();
            plain_time += e;
            plain_iters += iters;
            e
        })
    });
    let mut dclient = DtlsClient::new(now, creds(0));
    let mut dserver = DtlsServer::new(DtlsServerConfig::default(), store(1));
    dclient.send(now, b"hello");
    handshake(now, &mut dserver, &mut dclient, ca);
    let mut client = Endpoint::new_seeded(EndpointConfig::default(), 1);
    let mut server = Endpoint::new_seeded(EndpointConfig::default(), 2);
    let mut dtls_time = Duration::ZERO;
    let mut dtls_iters = 0u64;
    g.bench_function("dtls", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                exchange(now, &mut client, &mut server, sa, ca, &mut |up, d| {
                    if up {
                        dclient.send(now, d);
                        let record = dclient.poll_transmit().unwrap();
                        dserver.handle_datagram(now, ca, &record);
                        match dserver.poll_event() {
                            Some(DtlsEvent::Plaintext { data, .. }) => data,
                            other => panic!("expected plaintext, got {other:?}"),
                        }
                    } else {
                        dserver.send(now, ca, d).unwrap();
                        let (_, record) = dserver.poll_transmit().unwrap();
                        dclient.handle_datagram(now, &record);
                        dclient.poll_plaintext().unwrap()
                    }
                });
            }
            let e = t.elapsed();
            dtls_time += e;
            dtls_iters += iters;
            e
        })
    });
    g.finish();
    if plain_iters > 0 && dtls_iters > 0 {
        let plain = plain_iters as f64 / plain_time.as_secs_f64();
        let dtls = dtls_iters as f64 / dtls_time.as_secs_f64();
        println!(
            "dtls/con_get: plain {plain:.0}/s, dtls {dtls:.0}/s, dtls/plain = {:.2} (sans-IO, no syscalls)",
            dtls / plain
        );
    }
}

fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Prints the resident-set growth per idle established session (not a timing).
fn report_idle_session_memory() {
    const N: usize = 10_000;
    let now = Instant::now();
    let keys = store(N);
    let mut server = DtlsServer::new(DtlsServerConfig::default(), keys);
    let before = resident_bytes();
    for i in 0..N {
        let mut client = DtlsClient::new(now, creds(i));
        client.send(now, b"x");
        handshake(now, &mut server, &mut client, addr(i));
    }
    assert_eq!(server.stats().sessions, N as u64);
    if let (Some(b), Some(a)) = (before, resident_bytes()) {
        println!(
            "dtls/idle_session_memory: {:.0} B per established idle session ({N} sessions, \
             server side only; resident-set growth from /proc/self/statm)",
            a.saturating_sub(b) as f64 / N as f64
        );
    }
    drop(server);
}

fn benches(c: &mut Criterion) {
    if std::env::var("DTLS_BENCH_MEMORY").is_ok_and(|v| v == "1") {
        report_idle_session_memory();
    }
    bench_handshake(c);
    bench_con_get(c);
}

criterion_group!(dtls, benches);
criterion_main!(dtls);
