//! CoAP benchmarks.
//!
//! What is measured:
//! - `codec/decode+encode`: decoding and re-encoding (into a reused buffer) a typical LWM2M
//!   request — a Register (`POST /rd?ep=..&lt=..&lwm2m=1.1&b=U`, Content-Format 40, a
//!   link-format payload of eight objects) and a Read (`GET /3/0/9` with Accept) — one
//!   message per iteration (target >= 5M messages/s on one core);
//! - `codec/decode` and `codec/encode` separately, for the breakdown;
//! - `loopback/con_get_piggybacked`: request/response throughput over loopback UDP. A server
//!   thread runs one [`Endpoint`] on a socket and answers each request inline (piggybacked
//!   2.05 with a 2-byte payload); the bench thread is the client: one `Endpoint` keeping 64
//!   CON requests in flight (NSTART 64), each answered response immediately replaced by a
//!   new request (target >= 80,000 requests/s);
//! - `loopback/raw_udp_echo`: the same traffic shape without CoAP (a thread echoing 16-byte
//!   datagrams, the client keeping 64 in flight) — the ceiling this machine's loopback and
//!   scheduler allow at the moment, to read the CoAP number against (same run, same load).
//!
//! Corpus: the messages are fixed (built below); token bytes come from a seeded generator
//! (`Endpoint::new_seeded`) so runs are comparable. No randomness otherwise.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use twinhub::coap::{Code, ContentFormat, Endpoint, EndpointConfig, Event, Message, MessageType};

fn register_request() -> Message {
    let mut m = Message::new(MessageType::Confirmable, Code::POST, 0x1234);
    m.set_token(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]).unwrap();
    m.set_uri_path("/rd");
    m.add_uri_query("ep=urn:dev:ops:32473-Firmware-12345");
    m.add_uri_query("lt=86400");
    m.add_uri_query("lwm2m=1.1");
    m.add_uri_query("b=U");
    m.set_content_format(ContentFormat::LINK_FORMAT);
    m.payload =
        br#"</>;rt="oma.lwm2m";ct=110,</1>;ver=1.1,</1/0>,</3/0>,</4/0>,</5/0>,</6/0>,</10241/0>"#
            .to_vec();
    m
}

fn read_request() -> Message {
    let mut m = Message::new(MessageType::Confirmable, Code::GET, 0x4321);
    m.set_token(&[9, 8, 7, 6]).unwrap();
    m.set_uri_path("/3/0/9");
    m.set_accept(ContentFormat::LWM2M_TLV);
    m
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for (name, msg) in [("register", register_request()), ("read", read_request())] {
        let wire = msg.to_bytes().unwrap();
        let mut out = Vec::with_capacity(1500);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("decode+encode/{name}"), |b| {
            b.iter(|| {
                let m = Message::decode(black_box(&wire)).unwrap();
                out.clear();
                m.encode(&mut out).unwrap();
                black_box(out.len())
            })
        });
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| black_box(Message::decode(black_box(&wire)).unwrap()))
        });
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                out.clear();
                black_box(&msg).encode(&mut out).unwrap();
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// One thread, one endpoint, one socket: answers every request inline.
fn run_server(socket: UdpSocket, stop: Arc<AtomicBool>) {
    let mut ep = Endpoint::new_seeded(EndpointConfig::default(), 1);
    let mut buf = [0u8; 2048];
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let now = Instant::now();
            ep.handle_datagram(now, peer, &buf[..n]);
            while let Some(e) = ep.poll_event() {
                if let Event::Request { id, .. } = e {
                    let mut r = Message::response(Code::CONTENT);
                    r.payload = b"87".to_vec();
                    let _ = ep.respond(now, id, r);
                }
            }
            while let Some(t) = ep.poll_transmit() {
                let _ = socket.send_to(&t.payload, t.destination);
            }
        }
        let now = Instant::now();
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
    }
}

fn loopback(c: &mut Criterion) {
    let server_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server: SocketAddr = server_socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || run_server(server_socket, s));

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    const WINDOW: u64 = 64;
    let cfg = EndpointConfig {
        nstart: WINDOW as usize,
        max_queued_per_peer: 1024,
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new_seeded(cfg, 2);
    let request = Message::request(Code::GET, "/3/0/9");
    let mut buf = [0u8; 2048];

    let mut g = c.benchmark_group("loopback");
    g.throughput(Throughput::Elements(1));
    g.bench_function("con_get_piggybacked", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut sent = 0u64;
            let mut done = 0u64;
            while sent < iters.min(WINDOW) {
                ep.send_request(start, server, request.clone()).unwrap();
                sent += 1;
            }
            while done < iters {
                while let Some(t) = ep.poll_transmit() {
                    let _ = socket.send_to(&t.payload, t.destination);
                }
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    ep.handle_datagram(Instant::now(), peer, &buf[..n]);
                }
                let now = Instant::now();
                if ep.poll_timeout().is_some_and(|t| t <= now) {
                    ep.handle_timeout(now);
                }
                while let Some(e) = ep.poll_event() {
                    match e {
                        Event::Response { .. } | Event::RequestFailed { .. } => {
                            done += 1;
                            if sent < iters {
                                ep.send_request(now, server, request.clone()).unwrap();
                                sent += 1;
                            }
                        }
                        _ => {}
                    }
                }
            }
            start.elapsed()
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}

fn raw_echo(c: &mut Criterion) {
    let server_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server: SocketAddr = server_socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        server_socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        while !s.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = server_socket.recv_from(&mut buf) {
                let _ = server_socket.send_to(&buf[..n], peer);
            }
        }
    });
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let datagram = [7u8; 16];
    let mut g = c.benchmark_group("loopback");
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_udp_echo", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut sent = 0u64;
            let mut done = 0u64;
            while sent < iters.min(64) {
                socket.send_to(&datagram, server).unwrap();
                sent += 1;
            }
            while done < iters {
                match socket.recv_from(&mut buf) {
                    Ok(_) => {
                        done += 1;
                        if sent < iters {
                            socket.send_to(&datagram, server).unwrap();
                            sent += 1;
                        }
                    }
                    // A lost datagram: count it and send another to keep the window.
                    Err(_) => {
                        done += 1;
                        if sent < iters {
                            socket.send_to(&datagram, server).unwrap();
                            sent += 1;
                        }
                    }
                }
            }
            start.elapsed()
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}

criterion_group!(benches, codec, loopback, raw_echo);
criterion_main!(benches);
