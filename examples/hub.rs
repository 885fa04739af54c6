//! A standalone hub that any standard LWM2M 1.0/1.1 device can register to.
//!
//! ```sh
//! cargo run --example hub -- --bind 0.0.0.0:5683 --auto-provision
//! # or only known devices:
//! cargo run --example hub -- --bind 127.0.0.1:5683 --device sensor-1 --device sensor-2
//! # over DTLS (coaps, PSK): each --psk creates the device with that credential
//! cargo run --example hub -- --dtls-bind 0.0.0.0:5684 --psk sensor-1:sensor-1-id:00112233445566778899aabbccddeeff
//! # durable: twins, tags and device properties survive a restart
//! cargo run --example hub -- --data-dir /var/lib/twinhub --auto-provision
//! # ...with the PSK keys sealed on disk (64 hex digits, kept apart from the directory)
//! TWINHUB_SEALING_KEY=$(cat /run/secrets/twinhub-key) cargo run --example hub -- --data-dir /var/lib/twinhub
//! # a bootstrap server beside it: devices that know only it get this hub's account
//! cargo run --example hub -- --dtls-bind 0.0.0.0:5684 --bootstrap-bind 127.0.0.1:5783 \
//!     --psk sensor-1:sensor-1-id:00112233445566778899aabbccddeeff
//! ```
//!
//! With `--bootstrap-bind` a second, plain-CoAP port serves the LWM2M bootstrap interface
//! (`POST /bs`) from the hub's registry: a device the hub knows is given one server
//! account, this hub's URI, with its `--psk` credentials when the hub speaks DTLS; the
//! key travels in clear, to whoever names the endpoint, so bind it where only your own
//! devices can reach it (a lab, a provisioning network).
//! `cargo run --example device -- sensor-1 --bootstrap coap://127.0.0.1:5783` bootstraps
//! from it.
//!
//! With `--dtls-bind` the hub listens for `coaps` only (DTLS 1.2,
//! `TLS_PSK_WITH_AES_128_CCM_8`): devices prove who they are with their key. Without it,
//! plain CoAP: anyone who reaches the port can claim any known device name, so use that
//! on trusted networks only.
//!
//! It prints registrations and device property updates as they happen, and reads
//! commands on stdin, one per line (`help` lists them): list devices, show a twin, run a
//! query, serve a firmware file to the registered devices (`publish`, over their own
//! DTLS sessions on a `--dtls-bind` hub; `--package-host HOST:PORT` names the address
//! devices reach when the hub is bound to `0.0.0.0`), start a job (firmware update,
//! reboot, factory reset, configuration, read, write) and follow it, back up its store
//! while it runs (`backup <dir>`, with `--data-dir`). It exits on `quit` or at the end of
//! its input.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use twinhub::DeviceId;
use twinhub::dtls::PskCredentials;
use twinhub::hub::{
    Hub, HubConfig, HubEvent, LifecycleKind, RecvTimeoutError, SubscribeOptions, Subscription,
};
use twinhub::job::{JobId, JobSpec, JobType};
use twinhub::lwm2m::{Lwm2mPath, ResourceValue};
use twinhub::registry::{ChangeKind, Registry};
use twinhub::store::{SealingKey, SharedStore, Store, StoreConfig};
use twinhub::twin::Twin;

const HELP: &str = "\
commands:
  devices                          list devices: id, connection, firmware, battery
  twin <id>                        print a twin as JSON
  add <id> [tag ...]               create a device (so it may register)
  query <json>                     run a JSON query expression (one line)
  tags <tag> [tag ...]             devices that carry all these tags
  reboot <id|all> ...              reboot job
  reset <id|all> ...               factory reset job
  publish <name> <file>            serve a file to registered devices; prints its URI
  fw <package-uri> <id|all> ...    firmware update job
  config <name> <value> <id|all>   configuration update job
  read <path> <id|all> ...         read device property job (e.g. read /3/0/9 all)
  write <path> <text> <id|all>     write device property job (string value)
  jobs                             list jobs with their statistics and failed devices' reasons
  backup <dir>                     (with --data-dir) copy what the store committed into a new store in <dir>
  quit";

fn main() {
    let mut bind = "0.0.0.0:5683".to_string();
    let mut config = HubConfig::default();
    let mut devices = Vec::new();
    let mut data_dir = None;
    let mut dtls_bind: Option<String> = None;
    let mut psks: Vec<(String, PskCredentials)> = Vec::new();
    let mut bootstrap_bind: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bind" => {
                bind = args
                    .next()
                    .unwrap_or_else(|| usage("--bind needs ADDR:PORT"))
            }
            "--auto-provision" => config.auto_provision = true,
            "--package-host" => {
                config.package_authority = Some(
                    args.next()
                        .unwrap_or_else(|| usage("--package-host needs HOST:PORT")),
                )
            }
            "--dtls-bind" => {
                dtls_bind = Some(
                    args.next()
                        .unwrap_or_else(|| usage("--dtls-bind needs ADDR:PORT")),
                )
            }
            "--psk" => {
                let spec = args
                    .next()
                    .unwrap_or_else(|| usage("--psk needs ID:IDENTITY:HEXKEY"));
                let (id, creds) = spec
                    .split_once(':')
                    .unwrap_or_else(|| usage("--psk needs ID:IDENTITY:HEXKEY"));
                let creds = PskCredentials::parse(creds).unwrap_or_else(|e| usage(&e.to_string()));
                let device = DeviceId::new(id).unwrap_or_else(|e| usage(&e.to_string()));
                devices.push(device);
                psks.push((id.to_owned(), creds));
            }
            "--bootstrap-bind" => {
                bootstrap_bind = Some(
                    args.next()
                        .unwrap_or_else(|| usage("--bootstrap-bind needs ADDR:PORT")),
                )
            }
            "--device" => {
                let id = args.next().unwrap_or_else(|| usage("--device needs an id"));
                let id = DeviceId::new(&id).unwrap_or_else(|e| usage(&e.to_string()));
                devices.push(id);
            }
            "--data-dir" => {
                data_dir = Some(args.next().unwrap_or_else(|| usage("--data-dir needs DIR")))
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let mut registry = match &data_dir {
        None => Registry::new(),
        Some(dir) => {
            let mut store_config = StoreConfig::default();
            // A secret from the environment, not the command line (which `ps` shows).
            if let Ok(hex) = std::env::var("TWINHUB_SEALING_KEY") {
                store_config.sealing_key = Some(SealingKey::from_hex(&hex).unwrap_or_else(|| {
                    usage("TWINHUB_SEALING_KEY must be 64 hex digits (32 bytes)")
                }));
            }
            let (store, registry) = Store::open(dir, store_config).unwrap_or_else(|e| {
                eprintln!("cannot open the data directory {dir}: {e}");
                std::process::exit(1)
            });
            println!("{} twins restored from {dir}", registry.len());
            config.store = Some(SharedStore::new(store));
            registry
        }
    };
    for id in devices {
        if !registry.contains(id.as_str()) {
            registry.create(Twin::new(id)).expect("a new device");
        }
    }
    // Kept for `backup` (the hub holds the other handle).
    let config_store = config.store.clone();
    let (hub, scheme) = match &dtls_bind {
        Some(addr) => (Hub::bind_dtls(addr, registry, config), "coaps"),
        None => (Hub::bind_udp(&bind, registry, config), "coap"),
    };
    let hub = hub.unwrap_or_else(|e| {
        eprintln!("cannot bind {}: {e}", dtls_bind.as_deref().unwrap_or(&bind));
        std::process::exit(1)
    });
    let bootstrap = bootstrap_bind.map(|addr| {
        bootstrap_server(&hub, &addr, scheme).unwrap_or_else(|e| {
            eprintln!("cannot bind the bootstrap server on {addr}: {e}");
            std::process::exit(1)
        })
    });
    for (id, creds) in psks {
        hub.set_psk(&id, creds)
            .unwrap_or_else(|e| usage(&e.to_string()));
    }
    println!(
        "twinhub listening for LWM2M devices on {scheme}://{}",
        hub.local_addr().unwrap()
    );
    println!("{HELP}");

    let done = Arc::new(AtomicBool::new(false));
    let events = hub
        .subscribe(SubscribeOptions::default())
        .expect("subscribing from now cannot miss the feed");
    let printer = {
        let (hub, done) = (hub.clone(), done.clone());
        std::thread::spawn(move || print_events(&hub, &events, &done))
    };
    let mut next_job = 1;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["quit"] | ["exit"] => break,
            ["help"] => println!("{HELP}"),
            _ => {
                if let Err(e) = command(&hub, &config_store, &line, &words, &mut next_job) {
                    println!("error: {e}");
                }
            }
        }
    }
    done.store(true, Ordering::Release);
    let _ = printer.join();
    if let Some(bs) = bootstrap {
        bs.stop();
    }
    hub.stop();
}

/// A plain-CoAP bootstrap server on `addr`, sharing the hub's registry: a device the hub
/// knows gets one account, the hub's URI, with its PSK when the hub speaks DTLS. The key
/// goes in clear to whoever names the endpoint (a lab's setting: see
/// `HubBuilder::bootstrap_from_registry`). Its outcomes are printed.
fn bootstrap_server(
    hub: &Hub,
    addr: &str,
    scheme: &str,
) -> Result<Hub, Box<dyn std::error::Error>> {
    let hub_addr = hub.local_addr().ok_or("the hub has no address")?;
    // A wildcard bind is no address a device can use: name loopback instead.
    let host = if hub_addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), hub_addr.port())
    } else {
        hub_addr
    };
    let uri = format!("{scheme}://{host}");
    let bs = Hub::builder()
        .shared_registry(hub.registry().clone())
        .udp(addr)
        .bootstrap_from_registry_in_clear(uri.clone())
        .build()?;
    println!(
        "bootstrap server on coap://{} (accounts for {uri}; keys sent in clear to whoever \
         asks: for a lab)",
        bs.local_addr().ok_or("no bootstrap address")?
    );
    let events = bs.subscribe(SubscribeOptions {
        twins: false,
        jobs: false,
        ..SubscribeOptions::default()
    })?;
    std::thread::spawn(move || {
        while let Some(event) = events.recv() {
            let HubEvent::Lifecycle(l) = event else {
                continue;
            };
            if matches!(
                l.event,
                LifecycleKind::Bootstrapped | LifecycleKind::BootstrapFailed
            ) {
                println!(
                    "[{}] bootstrap {:?}{}",
                    l.device,
                    l.event,
                    l.reason.map(|r| format!(": {r}")).unwrap_or_default()
                );
            }
        }
    });
    Ok(bs)
}

fn command(
    hub: &Hub,
    store: &Option<SharedStore>,
    line: &str,
    words: &[&str],
    next_job: &mut u32,
) -> Result<(), String> {
    match words {
        ["backup", dir] => {
            let store = store
                .as_ref()
                .ok_or("no store: start the hub with --data-dir")?;
            // Taken under the store's lock, written after it: the hub goes on committing.
            let snapshot = store.lock().snapshot().map_err(|e| e.to_string())?;
            let backup = snapshot.write_to(dir).map_err(|e| e.to_string())?;
            println!(
                "{} twins, committed through {}, backed up to {}",
                backup.twins,
                backup.committed,
                backup.path.display()
            );
        }
        ["devices"] => {
            let reg = hub.registry().read();
            for twin in reg.iter() {
                let prop = |n: &str| {
                    twin.device_property(n)
                        .map_or("-".to_string(), |(v, _)| v.to_string())
                };
                println!(
                    "{:<24} {:<12?} fw {:<8} battery {}",
                    twin.device_id().as_str(),
                    twin.connection_state(),
                    prop("FirmwareVersion"),
                    prop("BatteryLevel")
                );
            }
        }
        ["publish", name, file] => {
            let body = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            let uri = hub.publish_package(name, body).map_err(|e| e.to_string())?;
            println!("{file} published: {uri}");
        }
        ["twin", id] => {
            let twin = hub.twin(id).ok_or("no such device")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&twin).map_err(|e| e.to_string())?
            );
        }
        ["add", id, tags @ ..] => {
            let mut twin = Twin::new(DeviceId::new(id).map_err(|e| e.to_string())?);
            for t in tags {
                twin = twin.with_tag(*t);
            }
            hub.create_device(twin).map_err(|e| e.to_string())?;
        }
        ["query", ..] => {
            let text = line.trim_start().strip_prefix("query").unwrap_or_default();
            let result = hub.query(text).map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&result).map_err(|e| e.to_string())?
            );
        }
        ["tags", tags @ ..] if !tags.is_empty() => {
            for id in hub.query_tags(tags, 1000) {
                println!("{id}");
            }
        }
        ["jobs"] => {
            for job in hub
                .job_records()
                .into_iter()
                .filter(|r| r.parent_job_id.is_empty())
            {
                let id = JobId::new(&job.job_id).map_err(|e| e.to_string())?;
                println!(
                    "{} {:?} {:?} {}",
                    job.job_id, job.kind, job.status, job.status_message
                );
                println!("    {:?}", hub.job_statistics(&id));
                // Every child that failed, with its reason (CoAP code, Update Result,
                // "object not announced", "device offline", ...).
                for child in hub
                    .job_children(&id)
                    .into_iter()
                    .filter(|c| c.failure_reason.is_some())
                {
                    println!(
                        "    failed {}: {} ({})",
                        child.device_id.as_ref().map_or("-", |d| d.as_str()),
                        child.failure_reason.as_deref().unwrap_or("-"),
                        child.status_message
                    );
                }
            }
        }
        [kind, rest @ ..] => {
            let (job, targets) = match (*kind, rest) {
                ("reboot", t) => (
                    JobType::Reboot {
                        wait_for_registration: false,
                    },
                    t,
                ),
                ("reset", t) => (
                    JobType::FactoryReset {
                        wait_for_registration: false,
                    },
                    t,
                ),
                ("fw", [uri, t @ ..]) => (
                    JobType::FirmwareUpdate {
                        package_uri: uri.to_string(),
                        expected_version: None,
                    },
                    t,
                ),
                ("config", [name, value, t @ ..]) => (
                    JobType::ConfigurationUpdate {
                        name: name.to_string(),
                        value: value.to_string(),
                    },
                    t,
                ),
                ("read", [path, t @ ..]) => (
                    JobType::ReadDeviceProperties {
                        paths: vec![parse_path(path)?],
                    },
                    t,
                ),
                ("write", [path, text, t @ ..]) => (
                    JobType::WriteDeviceProperties {
                        values: vec![(parse_path(path)?, ResourceValue::String(text.to_string()))],
                    },
                    t,
                ),
                _ => return Err("unknown command; try help".into()),
            };
            let targets = resolve(hub, targets)?;
            let id = JobId::new(&format!("job-{next_job}")).map_err(|e| e.to_string())?;
            *next_job += 1;
            hub.create_job(JobSpec::new(id.clone(), job, targets))
                .map_err(|e| e.to_string())?;
            println!("started {id}; `jobs` shows its progress");
        }
        _ => return Err("unknown command; try help".into()),
    }
    Ok(())
}

fn parse_path(s: &str) -> Result<Lwm2mPath, String> {
    s.parse()
        .map_err(|e: twinhub::lwm2m::PathError| e.to_string())
}

/// `all` is every connected device; otherwise the ids given.
fn resolve(hub: &Hub, targets: &[&str]) -> Result<Vec<DeviceId>, String> {
    if targets == ["all"] {
        let reg = hub.registry().read();
        return Ok(reg
            .iter()
            .filter(|t| t.connection_state() == twinhub::twin::ConnectionState::Connected)
            .map(|t| t.device_id().clone())
            .collect());
    }
    if targets.is_empty() {
        return Err("name the target devices (or all)".into());
    }
    targets
        .iter()
        .map(|t| DeviceId::new(t).map_err(|e| e.to_string()))
        .collect()
}

/// Prints what the hub pushes: registrations (and refusals), device property changes
/// and job progress.
fn print_events(hub: &Hub, events: &Subscription, done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        let event = match events.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Closed) => return,
        };
        match event {
            HubEvent::Lifecycle(l) if l.event == LifecycleKind::Registered => {
                let registration = hub
                    .registry()
                    .read()
                    .get(&l.device)
                    .and_then(|t| t.registration().cloned());
                if let Some(r) = registration {
                    println!(
                        "[{}] registered from {:?}: lwm2m {} lifetime {} s binding {} objects {:?}",
                        l.device, l.address, r.lwm2m_version, r.lifetime, r.binding, r.objects
                    );
                }
            }
            HubEvent::Lifecycle(l) if l.event == LifecycleKind::Rejected => println!(
                "[{}] refused from {:?}: {}",
                l.device,
                l.address,
                l.reason.unwrap_or_default()
            ),
            HubEvent::Lifecycle(l) => println!("[{}] {:?}", l.device, l.event),
            HubEvent::Twin(change) => {
                if let ChangeKind::DeviceProperty {
                    name,
                    value,
                    previous,
                } = &change.kind
                {
                    match previous {
                        Some(old) => println!("[{}] {name} = {value} (was {old})", change.device),
                        None => println!("[{}] {name} = {value}", change.device),
                    }
                }
            }
            HubEvent::Job(progress) => {
                let r = &progress.record;
                if r.status.is_terminal() || progress.statistics.is_some() {
                    println!("[job {}] {:?}: {}", r.job_id, r.status, r.status_message);
                }
            }
            HubEvent::Lagged { missed, .. } => println!("({missed} events missed)"),
            _ => {}
        }
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("{problem}");
    }
    eprintln!(
        "usage: hub [--bind ADDR:PORT | --dtls-bind ADDR:PORT] [--auto-provision] [--device ID]... [--psk ID:IDENTITY:HEXKEY]... [--data-dir DIR] [--bootstrap-bind ADDR:PORT] [--package-host HOST:PORT]"
    );
    std::process::exit(2)
}
