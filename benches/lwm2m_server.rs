//! The bundled LWM2M server under load.
//!
//! - `register_udp`: LWM2M Register requests processed per second over loopback UDP. The
//!   server runs in its `UdpServer` driver thread; one client socket keeps a window of 64
//!   confirmable Registers in flight (endpoint names `bench-0` .. `bench-1999`, each with a
//!   four-object link payload, re-registering on every iteration; a lost datagram is resent
//!   after 200 ms) and drains the server's event channel. Target: >= 20,000/s.
//! - `notify_decode`: notifications turned into `DeviceEvent::Notification`s per second,
//!   sans-IO (no socket): 1,000 registered devices each with an established observation of
//!   /3/0/9; notifications alternate TLV (11542) and SenML JSON (110) payloads, the device
//!   and value chosen by a seeded xorshift generator. The hub's twin update is not part of
//!   it. Target: >= 50,000/s.
//! - `decode_device/<format>`: one read answer of the Device object instance (`/3/0`, the
//!   16 values of the LWM2M TS example: strings, integers, a time, multi-instance
//!   resources) decoded into `Content` with the standard types, in SenML JSON, SenML
//!   CBOR, LwM2M CBOR and TLV (the payloads our encoder writes; their sizes are printed).
//! - memory per registered device: the resident-set growth (Linux `/proc/self/statm`) of
//!   registering 100,000 devices in a sans-IO server, after the CoAP exchange state has
//!   expired, printed once before the timed benches. Target: <= 2 KB per device.
//! - flood memory (issue #16): a sans-IO server with its default bounds and one registered
//!   device is flooded with ten times each bound (valid CON requests from 4,096 spoofed
//!   addresses for duplicate detection; unfinished Block1 registrations; Registers under
//!   made-up names); the resident-set growth after one bound's worth, ten and twenty is
//!   printed, with the device's Updates answered 2.04 between every chunk.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use twinhub::coap::{Code, ContentFormat, Message, MessageType};
use twinhub::lwm2m::server::{Decision, Lwm2mServer, ServerConfig, UdpServer};
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest, OpId, RejectReason, Transport};
use twinhub::{DeviceId, Lwm2mPath};

const LINKS: &[u8] = b"</1/0>,</3/0>,</5/0>,</10241/0>";

fn open_config() -> ServerConfig {
    ServerConfig {
        auto_provision: true,
        ..ServerConfig::default()
    }
}

fn register_message(mid: u16, token: u64, name: &str) -> Vec<u8> {
    let mut m = Message::request(Code::POST, "rd");
    m.mtype = MessageType::Confirmable;
    m.message_id = mid;
    m.set_token(&token.to_be_bytes());
    m.add_uri_query(&format!("ep={name}"));
    m.add_uri_query("lt=86400");
    m.add_uri_query("lwm2m=1.1");
    m.add_uri_query("b=U");
    m.set_content_format(ContentFormat::LINK_FORMAT);
    m.payload = LINKS.to_vec();
    m.to_bytes().expect("encodes")
}

/// Registers `n` devices through the UDP driver with a window of in-flight requests.
fn register_burst(client: &UdpSocket, server: SocketAddr, n: usize, mid_base: &mut u16) {
    const WINDOW: usize = 64;
    let mut in_flight: std::collections::HashMap<u16, Vec<u8>> = Default::default();
    let mut next = 0usize;
    let mut done = 0usize;
    let mut buf = [0u8; 1500];
    while done < n {
        while in_flight.len() < WINDOW && next < n {
            *mid_base = mid_base.wrapping_add(1);
            let bytes = register_message(*mid_base, next as u64, &format!("bench-{next}"));
            client.send_to(&bytes, server).expect("send");
            in_flight.insert(*mid_base, bytes);
            next += 1;
        }
        match client.recv_from(&mut buf) {
            Ok((len, _)) => {
                if let Ok(m) = Message::decode(&buf[..len]) {
                    assert_eq!(m.code, Code::CREATED, "register refused");
                    if in_flight.remove(&m.message_id).is_some() {
                        done += 1;
                    }
                }
            }
            Err(_) => {
                // Lost on a busy loopback: resend what is outstanding (same message ids, so
                // the server answers duplicates from its cache).
                for bytes in in_flight.values() {
                    let _ = client.send_to(bytes, server);
                }
            }
        }
    }
}

fn bench_register_udp(c: &mut Criterion) {
    const N: usize = 2000;
    let (udp, events) = UdpServer::bind("127.0.0.1:0", Lwm2mServer::new(open_config())).unwrap();
    let server = udp.local_addr();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut mid = 0u16;
    let mut g = c.benchmark_group("lwm2m_server");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("register_udp", |b| {
        b.iter(|| {
            register_burst(&client, server, N, &mut mid);
            let registered = events
                .try_iter()
                .filter(|e| matches!(e, DeviceEvent::Registered { .. }))
                .count();
            std::hint::black_box(registered);
        })
    });
    g.finish();
    let s = udp.stop();
    assert_eq!(s.registered_count(), N);
}

/// A sans-IO server with `n` devices, each observing /3/0/9; returns the server, the
/// devices' addresses and their observation tokens.
fn observed_fleet(n: usize, now: Instant) -> (Lwm2mServer, Vec<(SocketAddr, Vec<u8>)>) {
    let mut s = Lwm2mServer::with_seed(open_config(), 42);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5683));
        s.handle_datagram(
            now,
            addr,
            &register_message(1, i as u64, &format!("obs-{i}")),
        );
        while s.poll_transmit().is_some() {}
        let device = DeviceId::new(&format!("obs-{i}")).unwrap();
        s.submit(
            now,
            DeviceOp {
                id: OpId(i as u64),
                device,
                request: DeviceRequest::Observe {
                    path: Lwm2mPath::resource(3, 0, 9),
                },
            },
        );
        let t = s.poll_transmit().expect("observe request");
        let req = Message::decode(&t.payload).unwrap();
        let mut resp = Message::new(MessageType::Acknowledgement, Code::CONTENT, req.message_id);
        resp.set_token(req.token().as_bytes());
        resp.set_observe(1);
        resp.payload = b"50".to_vec();
        s.handle_datagram(now, addr, &resp.to_bytes().unwrap());
        out.push((addr, req.token().as_bytes().to_vec()));
    }
    while s.poll_event().is_some() {}
    assert_eq!(s.observation_count(), n);
    (s, out)
}

fn bench_notify_decode(c: &mut Criterion) {
    const DEVICES: usize = 1000;
    const BATCH: usize = 10_000;
    let now = Instant::now();
    let (mut s, fleet) = observed_fleet(DEVICES, now);
    let mut seq = vec![0x10000u32; DEVICES];
    // Message ids per device: a peer's ids repeat only after 65,536 of its own messages,
    // long after its duplicate-detection entries (at most 1,024 per peer) are forgotten.
    let mut mids = vec![1u16; DEVICES];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut g = c.benchmark_group("lwm2m_server");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("notify_decode", |b| {
        b.iter(|| {
            let mut notified = 0usize;
            for k in 0..BATCH {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng % DEVICES as u64) as usize;
                let (addr, token) = &fleet[i];
                seq[i] += 1;
                mids[i] = mids[i].wrapping_add(1);
                let mid = mids[i];
                let level = (rng >> 32) % 100;
                let mut m = Message::new(MessageType::NonConfirmable, Code::CONTENT, mid);
                m.set_token(token);
                m.set_observe(seq[i]);
                if k % 2 == 0 {
                    m.set_content_format(ContentFormat(11542));
                    m.payload = vec![0xC1, 0x09, level as u8];
                } else {
                    m.set_content_format(ContentFormat(110));
                    m.payload =
                        format!("[{{\"bn\":\"/3/0/\",\"n\":\"9\",\"v\":{level}}}]").into_bytes();
                }
                s.handle_datagram(now, *addr, &m.to_bytes().unwrap());
                while let Some(e) = s.poll_event() {
                    if matches!(e, DeviceEvent::Notification { .. }) {
                        notified += 1;
                    }
                }
                while s.poll_transmit().is_some() {}
            }
            assert_eq!(notified, BATCH, "every notification becomes an event");
        })
    });
    g.finish();
}

fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Prints the memory per registered device (not a timing). Devices register in ten
/// waves 300 s apart, so each wave's CoAP duplicate-detection state (EXCHANGE_LIFETIME,
/// 247 s) has expired and its memory is reused by the next: what remains is the
/// registrations plus at most one wave's exchange state.
fn report_memory_per_device() {
    const N: usize = 100_000;
    const WAVES: usize = 10;
    let t0 = Instant::now();
    let before = resident_bytes();
    let mut s = Lwm2mServer::with_seed(open_config(), 7);
    for wave in 0..WAVES {
        let now = t0 + Duration::from_secs(300 * wave as u64);
        s.handle_timeout(now);
        for i in wave * N / WAVES..(wave + 1) * N / WAVES {
            let addr = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5683));
            s.handle_datagram(
                now,
                addr,
                &register_message(1, i as u64, &format!("mem-{i:06}")),
            );
            while s.poll_transmit().is_some() {}
            while s.poll_event().is_some() {}
        }
    }
    assert_eq!(s.registered_count(), N);
    if let (Some(b), Some(a)) = (before, resident_bytes()) {
        println!(
            "lwm2m_server/memory_per_device: {:.0} B per registered device ({N} devices, \
             endpoint names of 10 bytes, 4 objects; resident-set growth from /proc/self/statm)",
            a.saturating_sub(b) as f64 / N as f64,
        );
    }
    drop(s);
}

/// Makes the `i`th datagram of a flood and says where it comes from.
type Datagrams<'a> = dyn Fn(usize) -> (SocketAddr, Vec<u8>) + 'a;

/// One chunk of a flood: `n` datagrams made by `make(i)` from `from(i)`.
fn flood(s: &mut Lwm2mServer, now: Instant, range: std::ops::Range<usize>, make: &Datagrams) {
    for i in range {
        let (from, bytes) = make(i);
        s.handle_datagram(now, from, &bytes);
        while s.poll_transmit().is_some() {}
        while s.poll_event().is_some() {}
    }
}

/// Prints resident memory after one bound's worth of a flood and after ten, with a
/// registered device's Update answered between chunks (not a timing).
fn report_flood_memory() {
    let t0 = Instant::now();
    let config = ServerConfig::default();
    let dedup_bound = config.coap.max_dedup_entries;
    // Only the served device may register: made-up names are refused.
    let mut s = Lwm2mServer::with_seed(ServerConfig::default(), 9).with_authorizer(Box::new(
        |r: &twinhub::lwm2m::server::RegistrationRequest, _identity| {
            if r.endpoint == "served" {
                Decision::Accept
            } else {
                Decision::Reject(RejectReason::UnknownDevice)
            }
        },
    ));
    let device: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    s.handle_datagram(t0, device, &register_message(1, 1, "served"));
    let location: Vec<String> = std::iter::from_fn(|| s.poll_transmit())
        .filter_map(|t| Message::decode(&t.payload).ok())
        .flat_map(|m| m.location_path().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    while s.poll_event().is_some() {}
    let mut served = 0usize;
    let mut update_mid = 100u16;
    let mut check_served = |s: &mut Lwm2mServer| {
        update_mid = update_mid.wrapping_add(1);
        let mut m = Message::request(Code::POST, &format!("/{}", location.join("/")));
        m.message_id = update_mid;
        m.set_token(&[9]);
        s.handle_datagram(t0, device, &m.to_bytes().unwrap());
        let ok = std::iter::from_fn(|| s.poll_transmit())
            .filter_map(|t| Message::decode(&t.payload).ok())
            .any(|r| r.code == Code::CHANGED);
        while s.poll_event().is_some() {}
        served += ok as usize;
    };
    let spoofed = |i: usize| SocketAddr::from(([10, 9, (i >> 8) as u8 & 15, i as u8], 6000));
    let requests = |i: usize| {
        let mut m = Message::request(Code::GET, "/rd");
        m.message_id = (i / 4096) as u16;
        m.set_token(&(i as u64).to_be_bytes());
        (spoofed(i), m.to_bytes().unwrap())
    };
    let block1 = |i: usize| {
        let mut m = Message::request(Code::POST, "/rd");
        m.message_id = i as u16;
        m.set_token(&(i as u64).to_be_bytes());
        m.add_uri_query(&format!("ep=b{i}"));
        m.set_block1(twinhub::coap::BlockOption::new(0, true, 6).unwrap());
        m.payload = vec![b'<'; 1024];
        (
            SocketAddr::from(([10, 10, (i >> 8) as u8, i as u8], 7000)),
            m.to_bytes().unwrap(),
        )
    };
    let made_up = |i: usize| {
        let mut m = Message::request(Code::POST, "/rd");
        m.message_id = i as u16;
        m.set_token(&(i as u64).to_be_bytes());
        m.add_uri_query(&format!("ep=nobody-{i}"));
        m.payload = LINKS.to_vec();
        (
            SocketAddr::from(([10, 11, (i >> 8) as u8, i as u8], 7000)),
            m.to_bytes().unwrap(),
        )
    };
    let floods: [(&str, usize, &Datagrams<'_>); 3] = [
        ("CON requests (dedup)", dedup_bound, &requests),
        ("unfinished Block1 registrations", 16 * 1024, &block1),
        ("Registers under unknown names", dedup_bound, &made_up),
    ];
    for (what, bound, make) in floods {
        let server = &mut s;
        let base = resident_bytes().unwrap_or(0);
        flood(server, t0, 0..bound, make);
        let one = resident_bytes().unwrap_or(0).saturating_sub(base);
        let mut ten = 0;
        for chunk in 1..20 {
            flood(server, t0, chunk * bound..(chunk + 1) * bound, make);
            check_served(server);
            if chunk == 9 {
                ten = resident_bytes().unwrap_or(0).saturating_sub(base);
            }
        }
        let twenty = resident_bytes().unwrap_or(0).saturating_sub(base);
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        println!(
            "lwm2m_server/flood: {what}: resident +{:.1} MiB after {bound} datagrams (the \
             bound), +{:.1} MiB after 10x, +{:.1} MiB after 20x; now dedup entries {}, block \
             transfers {}, timer queue entries {}, registrations {}",
            mib(one),
            mib(ten),
            mib(twenty),
            server.endpoint().dedup_entries(),
            server.endpoint().block_transfers(),
            server.endpoint().timer_queue_entries(),
            server.registered_count(),
        );
    }
    println!(
        "lwm2m_server/flood: the registered device's Update answered 2.04 {served} of 57 times"
    );
}

fn bench_decode_device(c: &mut Criterion) {
    use twinhub::lwm2m::content::{self, ContentFormat as Cf, standard_resource_type};
    use twinhub::{Content, ResourceValue as V};
    let r = |rid| Lwm2mPath::resource(3, 0, rid);
    let ri = |rid, riid| Lwm2mPath::resource_instance(3, 0, rid, riid);
    let device = Content {
        values: vec![
            (r(0), V::String("Open Mobile Alliance".into())),
            (r(1), V::String("Lightweight M2M Client".into())),
            (r(2), V::String("345000123".into())),
            (r(3), V::String("1.0".into())),
            (ri(6, 0), V::Integer(1)),
            (ri(6, 1), V::Integer(5)),
            (ri(7, 0), V::Integer(3800)),
            (ri(7, 1), V::Integer(5000)),
            (ri(8, 0), V::Integer(125)),
            (ri(8, 1), V::Integer(900)),
            (r(9), V::Integer(100)),
            (r(10), V::Integer(15)),
            (ri(11, 0), V::Integer(0)),
            (r(13), V::Time(1367491215)),
            (r(14), V::String("+02:00".into())),
            (r(16), V::String("U".into())),
        ],
    };
    let base = Lwm2mPath::instance(3, 0);
    let mut g = c.benchmark_group("decode_device");
    g.throughput(Throughput::Elements(1));
    for (name, f) in [
        ("senml_json", Cf::SenmlJson),
        ("senml_cbor", Cf::SenmlCbor),
        ("lwm2m_cbor", Cf::Lwm2mCbor),
        ("tlv", Cf::Tlv),
    ] {
        let bytes = content::encode(f, &base, &device).unwrap();
        println!("decode_device/{name}: payload {} bytes", bytes.len());
        g.bench_function(name, |b| {
            b.iter(|| {
                let c = content::decode(
                    f,
                    std::hint::black_box(&bytes),
                    &base,
                    &standard_resource_type,
                )
                .unwrap();
                assert_eq!(c.values.len(), 16);
                c
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_decode_device(c);
    report_memory_per_device();
    report_flood_memory();
    bench_notify_decode(c);
    bench_register_udp(c);
}

criterion_group!(lwm2m, benches);
criterion_main!(lwm2m);
