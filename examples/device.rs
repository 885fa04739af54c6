//! A standalone LWM2M device for LWM2M 1.1 servers, and 1.0 servers with `--lwm2m 1.0`
//! (it registers as 1.1 by default, which a 1.0-only server may refuse).
//!
//! ```text
//! cargo run --example device -- <endpoint-name> <server> [--lifetime S] [--run-for S] [--psk IDENTITY:HEXKEY] [--lwm2m 1.0]
//! cargo run --example device -- dev-1 127.0.0.1:5683
//! # over DTLS (PSK):
//! cargo run --example device -- sensor-1 coaps://127.0.0.1:5684 --psk sensor-1-id:00112233445566778899aabbccddeeff
//! # knowing only a bootstrap server, which gives it its server and credentials:
//! cargo run --example device -- sensor-1 --bootstrap coap://127.0.0.1:5783
//! ```
//!
//! `<server>` is `host:port`, `coap://host:port` or `coaps://host:port` (coaps needs
//! `--psk`). With `--bootstrap URI` the device knows only its bootstrap server (`coaps://`
//! with `--psk` holding the bootstrap account's credentials): it asks it for its server
//! account (Bootstrap-Request), then registers where it was told, over DTLS when it was
//! given a PSK.
//!
//! It registers with Security /0, Server /1, Device /3, Firmware Update /5 and Config
//! /10241, changes its battery level every 10 s (observers get notified as their attributes
//! allow), prints every event (reboot, factory reset, writes, executes, firmware), applies
//! a firmware update two seconds after the server executes Update, and de-registers when
//! it ends (after `--run-for` seconds, or when stdin closes).

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use twinhub::dtls::PskCredentials;
use twinhub::lwm2m::client::{
    ClientConfig, ClientEvent, ClientVersion, DeviceThread, FirmwareUpdate, Lwm2mClient,
    ObjectTree, objects,
};
use twinhub::{Lwm2mPath, ResourceValue};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: device <endpoint-name> (<server-host:port | coap://host:port | coaps://host:port> | --bootstrap coap(s)://host:port) [--lifetime S] [--run-for S] [--psk IDENTITY:HEXKEY] [--lwm2m 1.0|1.1]";
    let (Some(endpoint), Some(server)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let bootstrap = args.get(1).is_some_and(|a| a == "--bootstrap");
    let server = if bootstrap {
        args.get(2).ok_or("--bootstrap needs coap://host:port")?
    } else {
        server
    };
    let flag = |name: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse().ok()
    };
    let lifetime = flag("--lifetime").unwrap_or(300) as u32;
    let run_for = flag("--run-for").map(Duration::from_secs);
    let psk = match args.iter().position(|a| a == "--psk") {
        Some(i) => Some(PskCredentials::parse(
            args.get(i + 1).ok_or("--psk needs IDENTITY:HEXKEY")?,
        )?),
        None => None,
    };
    let (scheme, server) = match server.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None if psk.is_some() => ("coaps", server.as_str()),
        None => ("coap", server.as_str()),
    };
    if (scheme == "coaps") != psk.is_some() {
        return Err(format!(
            "{scheme}:// goes with{} --psk",
            if psk.is_some() { "out" } else { "" }
        )
        .into());
    }
    let server = server
        .to_socket_addrs()?
        .next()
        .ok_or("server address did not resolve")?;

    let mut tree = ObjectTree::new();
    if bootstrap {
        // Only the bootstrap account: the bootstrap server writes the server account.
        tree.add(objects::bootstrap_security(&format!("{scheme}://{server}")));
        tree.add(objects::unprovisioned_server());
    } else {
        tree.add(objects::security(&format!("{scheme}://{server}"), 1));
        tree.add(objects::server(1, lifetime, "U"));
    }
    tree.add(
        objects::device("twinhub", "example-device", endpoint, "1.0.0")
            .with_value(0, 9, ResourceValue::Integer(100))
            .with_value(0, 10, ResourceValue::Integer(512))
            .with_value(0, 20, ResourceValue::Integer(0))
            .with_value(0, 21, ResourceValue::Integer(1024)),
    );
    let updating = Arc::new(AtomicBool::new(false));
    let u = updating.clone();
    tree.set_firmware(
        FirmwareUpdate::new()
            .on_package(|p| {
                println!("firmware package received: {} bytes", p.len());
                Ok(())
            })
            .on_update(move || {
                u.store(true, Ordering::SeqCst);
                Ok(())
            }),
    );
    tree.add(objects::config().on_execute(3, |_, args| {
        println!("config apply {args:?}");
        Ok(())
    }));

    let mut config = ClientConfig::new(endpoint.clone(), server);
    config.lifetime = lifetime;
    match args.iter().position(|a| a == "--lwm2m") {
        None => {}
        Some(i) => match args.get(i + 1).map(String::as_str) {
            Some("1.0") => config.version = ClientVersion::V1_0,
            Some("1.1") => config.version = ClientVersion::V1_1,
            _ => return Err("--lwm2m takes 1.0 or 1.1".into()),
        },
    }
    match (bootstrap, psk) {
        // The PSK is the bootstrap server account's; the LWM2M server's comes from it.
        (true, Some(psk)) => config = config.with_bootstrap(server).with_bootstrap_psk(psk),
        (true, None) => config = config.with_bootstrap(server),
        (false, Some(psk)) => config = config.with_psk(psk),
        (false, None) => {}
    }
    let client = Lwm2mClient::new(Instant::now(), config, tree);
    let bind = if server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let device = DeviceThread::spawn(client, bind.parse()?)?;
    println!(
        "{endpoint}: listening on {}, server {scheme}://{server}",
        device.local_addr()
    );

    // Ends when stdin closes (unless --run-for is given).
    let stdin_closed = Arc::new(AtomicBool::new(false));
    if run_for.is_none() {
        let s = stdin_closed.clone();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                sink.clear();
            }
            s.store(true, Ordering::SeqCst);
        });
    }

    let start = Instant::now();
    let mut battery = 100i64;
    let mut next_tick = start + Duration::from_secs(10);
    let mut update_at: Option<Instant> = None;
    loop {
        if run_for.is_some_and(|d| start.elapsed() >= d) || stdin_closed.load(Ordering::SeqCst) {
            break;
        }
        if let Ok(e) = device.events().recv_timeout(Duration::from_millis(200)) {
            match &e {
                ClientEvent::Reboot => println!("reboot requested (simulated)"),
                ClientEvent::FactoryReset => println!("factory reset requested (simulated)"),
                other => println!("event: {other:?}"),
            }
        }
        if updating.swap(false, Ordering::SeqCst) {
            println!("applying firmware update...");
            update_at = Some(Instant::now() + Duration::from_secs(2));
        }
        if update_at.is_some_and(|t| Instant::now() >= t) {
            update_at = None;
            device.with(|c| {
                let _ = c.set_value(
                    &Lwm2mPath::resource(3, 0, 3),
                    ResourceValue::String("1.1.0".into()),
                );
                c.firmware_update_finished(Ok(()));
            });
            println!("firmware updated to 1.1.0");
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(10);
            battery = if battery <= 5 { 100 } else { battery - 1 };
            let _ = device.with(|c| {
                c.set_value(
                    &Lwm2mPath::resource(3, 0, 9),
                    ResourceValue::Integer(battery),
                )
            });
        }
    }
    println!("de-registering");
    device.shutdown(Duration::from_secs(5))?;
    Ok(())
}
