//! The fleet in a browser: a hub, a simulated fleet of LWM2M devices over real UDP, and
//! a web console (REST API, server-sent events, one static page) on loopback.
//!
//! ```sh
//! cargo run --release --example console                       # 200 devices
//! cargo run --release --example console -- --devices 10000
//! cargo run --release --example console -- --http 127.0.0.1:8080 --bind 0.0.0.0:5683
//! ```
//!
//! It prints the console's URL. `--bind ADDR` puts the hub's LWM2M server on `ADDR` so
//! real devices can register too (with `--auto-provision`, unknown ones get a twin);
//! `--devices 0` runs no simulated device. The page shows the device table (paged, live
//! connection state, firmware and battery), a twin, a query box, a live bar chart of
//! devices by firmware version, a firmware-update or reboot job over a query's devices
//! with its progress and per-device statuses, and the job history. The API is in
//! `api.rs`; axum and tokio are the example's dependencies only, the library has no
//! async runtime.

#[path = "../support/sim.rs"]
mod sim;

mod api;

use sim::{Rng, SimDevice, firmware_image, serve_device, start_device};
use std::time::Duration;
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::twin::Twin;

struct Args {
    devices: usize,
    http: String,
    bind: String,
    auto_provision: bool,
}

fn main() {
    let args = parse_args();
    let mut registry = Registry::new();
    let mut rng = Rng(2016);
    let mut plan = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let (id, region, model, version, battery) = sim::plan_device(&mut rng, i);
        registry
            .create(Twin::new(id.clone()).with_tag(region).with_tag(model))
            .expect("a new twin");
        plan.push((id, version, battery));
    }
    let config = HubConfig {
        auto_provision: args.auto_provision,
        ..HubConfig::default()
    };
    let hub = Hub::builder()
        .registry(registry)
        .config(config)
        .udp(&args.bind)
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the hub on {}: {e}", args.bind)));
    let server = hub.local_addr().expect("a UDP hub");
    // The hub serves the image itself, to its registered devices.
    let uri = hub
        .publish_package("fw/2.0.bin", firmware_image(16 * 1024))
        .unwrap_or_else(|e| fail(&format!("cannot publish the firmware: {e}")));

    // The devices and their application side (boot into the new image on Update).
    let devices: Vec<SimDevice> = plan
        .iter()
        .map(|(id, version, battery)| {
            start_device(id, version, *battery, server, None, None)
                .unwrap_or_else(|e| fail(&format!("cannot start device {id}: {e}")))
        })
        .collect();
    std::thread::Builder::new()
        .name("device-apps".into())
        .spawn(move || {
            let mut devices = devices;
            loop {
                for d in devices.iter_mut() {
                    serve_device(d);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .expect("spawning the device applications");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("tokio: {e}")));
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.http)
            .await
            .unwrap_or_else(|e| fail(&format!("cannot listen on {}: {e}", args.http)));
        let addr = listener.local_addr().expect("a bound listener");
        println!(
            "twinhub console: {} devices; LWM2M on coap://{server}; firmware 2.0 at {uri}",
            args.devices
        );
        println!("console: http://{addr}/");
        let app = api::router(hub, vec![("2.0".into(), uri)]);
        axum::serve(listener, app)
            .await
            .unwrap_or_else(|e| fail(&format!("http: {e}")));
    });
}

fn parse_args() -> Args {
    const USAGE: &str =
        "usage: console [--devices N] [--http ADDR:PORT] [--bind ADDR:PORT] [--auto-provision]";
    let mut args = Args {
        devices: 200,
        http: "127.0.0.1:0".into(),
        bind: "127.0.0.1:0".into(),
        auto_provision: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--devices" => {
                args.devices = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| fail("--devices needs a number"));
            }
            "--http" => args.http = it.next().unwrap_or_else(|| fail("--http needs ADDR:PORT")),
            "--bind" => args.bind = it.next().unwrap_or_else(|| fail("--bind needs ADDR:PORT")),
            "--auto-provision" => args.auto_provision = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => fail(&format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    args
}

fn fail(why: &str) -> ! {
    eprintln!("console: {why}");
    std::process::exit(1)
}
