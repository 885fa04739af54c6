//! LWM2M device library (`lwm2m::client`): what one client costs and how fast it serves.
//!
//! Measured:
//! - `sans_io/*`: server requests served per second by one registered `Lwm2mClient`, no
//!   sockets: `handle_datagram` of a pre-encoded request (message id patched per
//!   iteration so duplicate detection never answers from its cache) plus `poll_transmit`.
//!   Requests: read /3/0/0 (text), read /3/0 (TLV), read /3/0 (SenML JSON), write
//!   /3/0/15 (text), execute /10241/0/3, read of an observed resource after a change
//!   (notification path).
//! - `loopback/read_text`: GET /3/0/0 round trips over loopback UDP to a `DeviceThread`,
//!   16 requests in flight, from a plain std socket.
//! - memory (printed, not timed): resident-set growth per idle registered client over
//!   10,000 sans-IO clients with the standard objects (/0 /1 /3 /5 /10241), and per
//!   `DeviceThread` (socket + 128 KiB-stack thread) over 500 of them. RSS from
//!   /proc/self/statm (Linux), so it includes allocator overhead.
//!
//! Corpus: fixed; the device's values are the same every run (no RNG involved except the
//! client's CoAP tokens, which do not affect the work done).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use twinhub::coap::{Code, ContentFormat, Message, MessageType};
use twinhub::lwm2m::client::{
    ClientConfig, DeviceThread, FirmwareUpdate, Lwm2mClient, ObjectTree, objects,
};
use twinhub::{Lwm2mPath, ResourceValue};

fn server() -> SocketAddr {
    "127.0.0.1:5683".parse().unwrap()
}

fn tree() -> ObjectTree {
    // A ten-year lifetime: no registration update falls due while a bench runs (an
    // unanswered update would end the observations, as it should).
    let mut t = ObjectTree::new();
    t.add(objects::security("coap://127.0.0.1:5683", 1));
    t.add(objects::server(1, 315_360_000, "U"));
    t.add(
        objects::device("Contoso", "MX1", "SN-000042", "1.0.0")
            .with_value(0, 9, ResourceValue::Integer(100))
            .with_value(0, 10, ResourceValue::Integer(512)),
    );
    t.set_firmware(FirmwareUpdate::new());
    t.add(objects::config());
    t
}

/// A client that the (simulated) server has registered.
fn registered(now: Instant, endpoint: &str) -> Lwm2mClient {
    let mut c = Lwm2mClient::new(now, ClientConfig::new(endpoint, server()), tree());
    c.handle_timeout(now);
    let reg = Message::decode(&c.poll_transmit().unwrap().payload).unwrap();
    let mut ok = Message::new(MessageType::Acknowledgement, Code::CREATED, reg.message_id);
    ok.with_token(reg.token());
    ok.add_location_path("rd");
    ok.add_location_path("1");
    c.handle_datagram(now, server(), &ok.to_bytes().unwrap());
    while c.poll_event().is_some() {}
    assert!(c.is_registered());
    c
}

fn request(code: Code, path: &str, f: impl FnOnce(&mut Message)) -> Vec<u8> {
    let mut m = Message::request(code, path);
    m.set_token(&[1, 2, 3, 4]);
    f(&mut m);
    m.to_bytes().unwrap()
}

fn sans_io(c: &mut Criterion) {
    let now = Instant::now();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("read_text", request(Code::GET, "/3/0/0", |_| {})),
        (
            "read_instance_tlv",
            request(Code::GET, "/3/0", |m| m.set_accept(ContentFormat(11542))),
        ),
        (
            "read_instance_senml",
            request(Code::GET, "/3/0", |m| {
                m.set_accept(ContentFormat::SENML_JSON)
            }),
        ),
        (
            "write_text",
            request(Code::PUT, "/3/0/15", |m| {
                m.set_content_format(ContentFormat::TEXT_PLAIN);
                m.payload = b"Europe/Paris".to_vec();
            }),
        ),
        (
            "execute",
            request(Code::POST, "/10241/0/3", |m| m.payload = b"0='x'".to_vec()),
        ),
    ];
    let mut group = c.benchmark_group("lwm2m_client/sans_io");
    group.throughput(Throughput::Elements(1));
    for (name, wire) in cases {
        let mut client = registered(now, "bench");
        let mut wire = wire;
        let mut mid = 0u16;
        group.bench_function(name, |b| {
            b.iter(|| {
                mid = mid.wrapping_add(1);
                wire[2..4].copy_from_slice(&mid.to_be_bytes());
                client.handle_datagram(now, server(), &wire);
                black_box(client.poll_transmit().unwrap());
            })
        });
    }
    // Notification path: one observer on /3/0/9, a new value and a notification per iteration.
    let mut client = registered(now, "bench");
    let obs = request(Code::GET, "/3/0/9", |m| m.set_observe(0));
    client.handle_datagram(now, server(), &obs);
    client.poll_transmit().unwrap();
    let battery = Lwm2mPath::resource(3, 0, 9);
    let mut v = 0i64;
    let mut t = now;
    group.bench_function("set_value_and_notify", |b| {
        b.iter(|| {
            v = (v + 1) % 100;
            t += Duration::from_millis(1);
            client
                .set_value(&battery, ResourceValue::Integer(v))
                .unwrap();
            client.handle_timeout(t);
            black_box(client.poll_transmit().unwrap());
        })
    });
    group.finish();
}

fn loopback(c: &mut Criterion) {
    // A tiny "server": the bench's own socket, which answers the register request.
    let srv = UdpSocket::bind("127.0.0.1:0").unwrap();
    srv.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let addr = srv.local_addr().unwrap();
    let client = Lwm2mClient::new(Instant::now(), ClientConfig::new("loop", addr), tree());
    let device = DeviceThread::spawn(client, "127.0.0.1:0".parse().unwrap()).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = srv.recv_from(&mut buf).unwrap();
    let reg = Message::decode(&buf[..n]).unwrap();
    let mut ok = Message::new(MessageType::Acknowledgement, Code::CREATED, reg.message_id);
    ok.with_token(reg.token());
    ok.add_location_path("rd");
    ok.add_location_path("1");
    srv.send_to(&ok.to_bytes().unwrap(), from).unwrap();
    let mut wire = request(Code::GET, "/3/0/0", |_| {});
    let mut mid = 0u16;
    const WINDOW: u64 = 16;
    let mut group = c.benchmark_group("lwm2m_client/loopback");
    group.throughput(Throughput::Elements(WINDOW));
    group.bench_function("read_text_x16", |b| {
        b.iter(|| {
            for _ in 0..WINDOW {
                mid = mid.wrapping_add(1);
                wire[2..4].copy_from_slice(&mid.to_be_bytes());
                srv.send_to(&wire, from).unwrap();
            }
            let mut got = 0;
            while got < WINDOW {
                let (n, _) = srv.recv_from(&mut buf).unwrap();
                if n > 4 && buf[1] == Code::CONTENT.0 {
                    got += 1;
                }
            }
        })
    });
    group.finish();
    drop(device);
}

fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn memory(_c: &mut Criterion) {
    let now = Instant::now();
    const N: usize = 10_000;
    let Some(before) = rss_bytes() else {
        eprintln!("memory: /proc/self/statm unavailable, skipped");
        return;
    };
    let clients: Vec<Lwm2mClient> = (0..N)
        .map(|i| registered(now, &format!("dev-{i}")))
        .collect();
    let after = rss_bytes().unwrap_or(before);
    println!(
        "memory: {N} idle registered sans-IO clients: {:.1} MiB RSS growth, {:.0} bytes per client",
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / N as f64
    );
    drop(clients);

    const T: usize = 500;
    let before = rss_bytes().unwrap_or(0);
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sink.local_addr().unwrap();
    let mut devices = Vec::with_capacity(T);
    for i in 0..T {
        let mut cfg = ClientConfig::new(format!("t-{i}"), addr);
        cfg.retry_initial = Duration::from_secs(3600);
        let c = Lwm2mClient::new(Instant::now(), cfg, tree());
        devices.push(DeviceThread::spawn(c, "127.0.0.1:0".parse().unwrap()).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_bytes().unwrap_or(before);
    println!(
        "memory: {T} DeviceThreads (socket + thread each): {:.1} MiB RSS growth, {:.0} bytes per device",
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / T as f64
    );
    drop(devices);
}

criterion_group!(benches, sans_io, loopback, memory);
criterion_main!(benches);
