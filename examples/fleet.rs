//! The main job: a hub on loopback UDP and a fleet of LWM2M devices built with the
//! device library, each on its own UDP socket.
//!
//! ```sh
//! cargo run --release --example fleet                    # 1,000 devices
//! cargo run --release --example fleet -- --devices 10000
//! cargo run --release --example fleet -- --plain         # plain CoAP instead of DTLS
//! cargo run --release --example fleet -- --data-dir /tmp/fleet   # durable; run it twice
//! cargo run --release --example fleet -- --bootstrap     # devices start from a bootstrap server
//! ```
//!
//! With `--bootstrap` the devices know only a bootstrap server (plain CoAP, beside the
//! hub and sharing its registry): each is given its server account there (the hub's URI
//! and, over DTLS, its own PSK) and then registers with the hub.
//!
//! With `--data-dir DIR` the hub keeps its twins, credentials and jobs in a store in
//! `DIR`: a second run starts with the first run's twins and job history (it prints
//! them), its simulated devices boot into the firmware version their twin last reported,
//! and its job updates only the devices still on 1.0 (none, if the first run finished).
//!
//! By default the whole story runs over DTLS 1.2 (`coaps`, PSK,
//! `TLS_PSK_WITH_AES_128_CCM_8`): each device has its own identity and key, and the
//! report counts the hub's handshakes. `--plain` runs it over plain CoAP for comparison.
//!
//! The story: the devices register (each with its own firmware version and battery
//! level; the service gives each twin a region and a model tag), the twins fill in through
//! property sync, a tag query, a JSON filter query and an aggregate query run, and a
//! firmware-update job takes every device on version 1.0 to 2.0, pulled from a CoAP
//! package server with block-wise transfer. Progress lines show while it runs; the job's
//! statistics, how long after the last device finished its update the job ended (its
//! tail), the aggregate again, the wall time and the peak memory close the report.
//! Exits non-zero if any step of the story does not happen.

#[path = "support/sim.rs"]
mod sim;

use sim::{Rng, SimDevice, firmware_image, serve_device, start_device};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use twinhub::DeviceId;
use twinhub::dtls::{PskCredentials, PskKey};
use twinhub::hub::{Hub, HubConfig, HubEvent, LifecycleKind, SubscribeOptions};
use twinhub::job::{JobId, JobSpec, JobStatus, JobType};
use twinhub::query::{QueryExpression, QueryOptions, QueryProperty};
use twinhub::registry::{ChangeKind, Registry};
use twinhub::store::{SharedStore, Store, StoreConfig};
use twinhub::twin::Twin;

fn main() {
    let (devices, plain, data_dir, bootstrap) = parse_args();
    let started = Instant::now();
    let elapsed = move || started.elapsed().as_secs_f64();

    // The service side: a registry with one twin per device (tags are the service's),
    // the hub with its LWM2M server on an ephemeral loopback port, and a package server.
    let mut rng = Rng(2016);
    let (mut registry, store) = match &data_dir {
        Some(dir) => {
            let (store, registry) = Store::open(dir, StoreConfig::default())
                .unwrap_or_else(|e| fail(&format!("cannot open the store in {dir}: {e}")));
            (registry, Some(SharedStore::new(store)))
        }
        None => (Registry::new(), None),
    };
    let resumed = registry.len();
    if let Some(dir) = &data_dir {
        println!("store {dir}: {resumed} twins from earlier runs");
    }
    let mut plan = Vec::with_capacity(devices);
    for i in 0..devices {
        let (id, region, model, version, battery) = sim::plan_device(&mut rng, i);
        if !registry.contains(id.as_str()) {
            registry
                .create(Twin::new(id.clone()).with_tag(region).with_tag(model))
                .expect("a new twin");
        }
        // A device that reported a version in an earlier run boots into it.
        let version = registry
            .get(id.as_str())
            .and_then(|t| match t.device_property("FirmwareVersion") {
                Some((twinhub::twin::Scalar::String(v), _)) => Some(v.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| version.to_string());
        plan.push((id, version, battery));
    }
    let config = HubConfig {
        store,
        ..HubConfig::default()
    };
    let hub = if plain {
        Hub::bind_udp("127.0.0.1:0", registry, config)
    } else {
        Hub::bind_dtls("127.0.0.1:0", registry, config)
    }
    .unwrap_or_else(|e| fail(&format!("cannot start the hub: {e}")));
    let history: Vec<_> = hub
        .job_records()
        .into_iter()
        .filter(|r| r.parent_job_id.is_empty())
        .collect();
    if data_dir.is_some() {
        println!("job history from earlier runs: {} jobs", history.len());
        for r in &history {
            println!(
                "  {} {} {:?}: \"{}\"",
                r.job_id, r.kind, r.status, r.status_message
            );
        }
    }
    let server = hub.local_addr().expect("a UDP hub");
    // One key per device (seeded: the same keys every run).
    let keys: Vec<Option<PskCredentials>> = plan
        .iter()
        .map(|(id, _, _)| {
            if plain {
                return None;
            }
            let key: Vec<u8> = (0..2).flat_map(|_| rng.next().to_be_bytes()).collect();
            let creds = PskCredentials::new(&format!("{id}-psk"), PskKey::new(key)).expect("valid");
            hub.set_psk(id.as_str(), creds.clone())
                .unwrap_or_else(|e| fail(&format!("cannot set the key of {id}: {e}")));
            Some(creds)
        })
        .collect();
    let scheme = if plain { "coap" } else { "coaps" };
    // The hub serves the image itself: each device pulls it over the session it
    // registered on (DTLS unless --plain).
    let package_uri = hub
        .publish_package("fw/2.0.bin", firmware_image(16 * 1024))
        .unwrap_or_else(|e| fail(&format!("cannot publish the firmware: {e}")));
    println!(
        "twinhub fleet: {devices} devices; hub on {scheme}://{server}; firmware at {package_uri}"
    );

    // Everything below waits on the hub's events, not on a timer: registrations and
    // property changes while the twins fill, job progress while the job runs.
    let events = hub
        .subscribe(SubscribeOptions {
            capacity: 1 << 16,
            ..SubscribeOptions::default()
        })
        .unwrap_or_else(|e| fail(&format!("subscribe: {e}")));
    let mut fill = FillCount::default();
    // With a store, twins hold what an earlier run synced: a device reporting the same
    // value again changes nothing and sends no event, so those twins count as filled.
    for twin in hub.registry().read().iter() {
        let id = twin.device_id();
        if twin.device_property("FirmwareVersion").is_some() {
            fill.firmware.insert(id.clone());
        }
        if twin.device_property("BatteryLevel").is_some() {
            fill.battery.insert(id.clone());
        }
    }

    // With --bootstrap, a bootstrap server beside the hub (plain CoAP, sharing its
    // registry) gives each device its account: the hub's URI and the device's key, in
    // clear to whoever asks (fine on loopback; see `bootstrap_from_registry`).
    let bootstrap_hub = bootstrap.then(|| {
        let bs = Hub::builder()
            .shared_registry(hub.registry().clone())
            .udp("127.0.0.1:0")
            .bootstrap_from_registry_in_clear(format!("{scheme}://{server}"))
            .build()
            .unwrap_or_else(|e| fail(&format!("cannot start the bootstrap server: {e}")));
        let events = bs
            .subscribe(SubscribeOptions {
                twins: false,
                jobs: false,
                capacity: 1 << 16,
                ..SubscribeOptions::default()
            })
            .unwrap_or_else(|e| fail(&format!("subscribe: {e}")));
        println!(
            "bootstrap server on coap://{}: devices know only it",
            bs.local_addr().expect("a UDP hub")
        );
        (bs, events)
    });
    let bootstrap_addr = bootstrap_hub.as_ref().and_then(|(bs, _)| bs.local_addr());

    // The device side: each device registers over real UDP.
    let mut fleet: Vec<SimDevice> = plan
        .iter()
        .zip(keys)
        .map(|((id, version, battery), psk)| {
            start_device(id, version, *battery, server, psk, bootstrap_addr)
                .unwrap_or_else(|e| fail(&format!("cannot start device {id}: {e}")))
        })
        .collect();

    // Twins fill in: registration, then property sync (observe /3/0, /1/0, /5/0).
    let deadline = Instant::now() + Duration::from_secs(60 + devices as u64 / 100);
    let mut last = 0.0;
    loop {
        let (registered, filled) = fill.counts(&hub);
        let done = filled == devices && registered >= devices;
        if elapsed() - last >= 0.5 || done {
            println!(
                "[{:>5.1}s] registered {registered:>6}/{devices}   twins with device properties {filled:>6}/{devices}",
                elapsed()
            );
            last = elapsed();
        }
        if done {
            break;
        }
        if Instant::now() > deadline {
            fail("not every twin filled in");
        }
        fill.follow(&events, Duration::from_millis(50));
    }
    let fill_time = elapsed();
    println!("all {devices} twins filled in {fill_time:.1} s");
    if let Some((_, events)) = &bootstrap_hub {
        let mut bootstrapped = 0;
        while let Ok(event) = events.try_recv() {
            if matches!(&event, HubEvent::Lifecycle(l) if l.event == LifecycleKind::Bootstrapped) {
                bootstrapped += 1;
            }
        }
        println!("bootstrapped: {bootstrapped} devices were given their account");
        if bootstrapped < devices {
            fail("not every device was bootstrapped");
        }
    }

    // A tag query, a JSON filter query and an aggregate query.
    let tagged = hub.query_tags(&["eu-west", "model-B"], 1000);
    println!(
        "\ntag query [eu-west, model-B]: {} devices (first: {})",
        tagged.len(),
        tagged.first().map_or("-", |d| d.as_str())
    );
    let low_battery = r#"{"filter": {"type": "logical", "logicalOperator": "and", "filters": [
        {"type": "comparison", "comparisonOperator": "lt",
         "property": {"name": "BatteryLevel", "type": "device"}, "value": 20},
        {"type": "comparison", "comparisonOperator": "eq",
         "property": {"name": "FirmwareVersion", "type": "device"}, "value": "1.0"}]},
        "project": {"properties": [{"name": "BatteryLevel", "type": "device"}]},
        "sort": [{"property": {"name": "BatteryLevel", "type": "device"}, "order": "asc"}]}"#;
    let page = hub
        .query_page(low_battery, &QueryOptions::page(5))
        .unwrap_or_else(|e| fail(&format!("filter query: {e}")));
    let on_1_0_low = hub
        .count(&twinhub::query::parse(low_battery).expect("a valid query"))
        .expect("a valid count");
    println!(
        "JSON filter query (BatteryLevel lt 20 and FirmwareVersion eq \"1.0\"): {on_1_0_low} devices; lowest five:"
    );
    for item in &page.result {
        println!("  {}", serde_json::to_string(item).expect("json"));
    }
    print_versions(&hub, "aggregate: count by FirmwareVersion");

    // The firmware-update job over every device on 1.0, targets frozen from a query.
    let on_1_0 = QueryExpression::new().filter(QueryProperty::device("FirmwareVersion").eq("1.0"));
    let targets = hub.resolve_targets(&on_1_0).expect("a valid query");
    let expected_targets = plan.iter().filter(|(_, v, _)| v == "1.0").count();
    if targets.len() != expected_targets {
        fail(&format!(
            "the query found {} devices on 1.0, the fleet has {expected_targets}",
            targets.len()
        ));
    }
    let job_id = match history.len() {
        0 => JobId::new("fw-2-0"),
        n => JobId::new(&format!("fw-2-0-run-{}", n + 1)),
    }
    .expect("a valid job id");
    let spec = JobSpec::new(
        job_id.clone(),
        JobType::FirmwareUpdate {
            package_uri: package_uri.clone(),
            expected_version: Some("2.0".into()),
        },
        targets.clone(),
    )
    .device_timeout(Duration::from_secs(120))
    .max_in_flight(500);
    let job_started = elapsed();
    hub.create_job(spec)
        .unwrap_or_else(|e| fail(&format!("job: {e}")));
    println!(
        "\nfirmware-update job {job_id}: {} devices on 1.0 -> 2.0",
        targets.len()
    );
    let deadline = Instant::now() + Duration::from_secs(120 + devices as u64 / 50);
    let mut last = 0.0;
    let mut last_device_done = job_started;
    let record = loop {
        // The devices' side of an update: when Update is executed, "install" the package
        // and boot into it (report the new version, Update Result 1).
        for d in fleet.iter_mut() {
            if serve_device(d) {
                last_device_done = elapsed();
            }
        }
        // The parent's record and counts come with each batch's job progress.
        let mut parent = None;
        if let Ok(first) = events.recv_timeout(Duration::from_millis(20)) {
            for event in std::iter::once(first).chain(std::iter::from_fn(|| events.try_recv().ok()))
            {
                match event {
                    HubEvent::Job(p)
                        if p.record.job_id == job_id.as_str() && p.statistics.is_some() =>
                    {
                        parent = Some(p)
                    }
                    HubEvent::Lagged { .. } => {
                        parent = hub.job(&job_id).map(|record| twinhub::job::JobProgress {
                            record,
                            statistics: hub.job_statistics(&job_id),
                        })
                    }
                    _ => {}
                }
            }
        }
        let Some(progress) = parent else {
            if Instant::now() > deadline {
                fail("the job did not finish");
            }
            continue;
        };
        let record = progress.record;
        if elapsed() - last >= 0.5 || record.status.is_terminal() {
            let s = progress.statistics.expect("a parent's progress has counts");
            println!(
                "[{:>5.1}s] {:?}: pending {:>5} running {:>5} waiting {:>4} succeeded {:>5} failed {:>4}   downloads served {}",
                elapsed(),
                record.status,
                s.pending,
                s.running,
                s.waiting_for_device,
                s.succeeded,
                s.failed,
                hub.package_downloads()
            );
            last = elapsed();
        }
        if record.status.is_terminal() {
            break record;
        }
        if Instant::now() > deadline {
            fail("the job did not finish");
        }
    };
    let job_end = elapsed();
    let job_time = job_end - job_started;
    let stats = hub.job_statistics(&job_id).expect("the job exists");
    println!(
        "job {job_id} {:?} in {job_time:.1} s: \"{}\"\n  statistics: {}",
        record.status,
        record.status_message,
        serde_json::to_string(&stats).expect("json")
    );
    println!(
        "job tail: the job ended {:.2} s after the last device finished its update",
        job_end - last_device_done
    );
    print_versions(&hub, "aggregate again: count by FirmwareVersion");

    // Close: the devices de-register; report time and memory.
    let hub_stats = hub.stats();
    for d in fleet {
        let _ = d.thread.shutdown(Duration::from_millis(500));
    }
    hub.stop();
    println!(
        "\nhub: {} events, {} registrations, {} notifications, {} property updates, {} ops sent",
        hub_stats.events,
        hub_stats.registrations,
        hub_stats.notifications,
        hub_stats.property_updates,
        hub_stats.ops_sent
    );
    match hub.dtls_stats() {
        Some(d) => println!(
            "dtls: {} handshakes, {} failed, {} sessions, {} refused (handshakes {}, sessions {}), {} unverified peers evicted",
            d.handshakes,
            d.handshake_failures,
            d.sessions,
            d.refused_handshakes + d.refused_sessions,
            d.refused_handshakes,
            d.refused_sessions,
            d.evicted_unverified
        ),
        None => println!("plain CoAP (no DTLS)"),
    }
    println!(
        "wall time {:.1} s (twins filled {fill_time:.1} s, job {job_time:.1} s); peak memory {} MiB for hub + {devices} devices in one process",
        elapsed(),
        peak_rss_kib() / 1024
    );
    if record.status != JobStatus::Completed || stats.succeeded != targets.len() as u64 {
        fail("the firmware update did not succeed on every target");
    }
}

/// Registered devices and twins with both FirmwareVersion and BatteryLevel, counted
/// from the hub's events (after a lag signal, from scans of the registry).
#[derive(Default)]
struct FillCount {
    registered: HashSet<String>,
    firmware: HashSet<DeviceId>,
    battery: HashSet<DeviceId>,
    lagged: bool,
}

impl FillCount {
    /// Takes the events that arrive within `wait` (at least one wait, then what is queued).
    fn follow(&mut self, events: &twinhub::hub::Subscription, wait: Duration) {
        let Ok(first) = events.recv_timeout(wait) else {
            return;
        };
        for event in std::iter::once(first).chain(std::iter::from_fn(|| events.try_recv().ok())) {
            match event {
                HubEvent::Lifecycle(l) if l.event == LifecycleKind::Registered => {
                    self.registered.insert(l.device);
                }
                HubEvent::Twin(c) => {
                    if let ChangeKind::DeviceProperty { name, .. } = &c.kind {
                        match &**name {
                            "FirmwareVersion" => self.firmware.insert(c.device.clone()),
                            "BatteryLevel" => self.battery.insert(c.device.clone()),
                            _ => false,
                        };
                    }
                }
                HubEvent::Lagged { .. } => self.lagged = true,
                _ => {}
            }
        }
    }

    fn counts(&mut self, hub: &Hub) -> (usize, usize) {
        if self.lagged {
            // Events were missed: the sets are incomplete, the twins are not.
            return fill_counts(hub);
        }
        let filled = self.firmware.intersection(&self.battery).count();
        (self.registered.len(), filled)
    }
}

/// (registrations this run, twins that have a FirmwareVersion and a BatteryLevel: with a
/// store, twins may hold values from an earlier run).
fn fill_counts(hub: &Hub) -> (usize, usize) {
    let registered = hub.stats().registrations as usize;
    let reg = hub.registry().read();
    let mut filled = 0;
    for twin in reg.iter() {
        filled += (twin.device_property("FirmwareVersion").is_some()
            && twin.device_property("BatteryLevel").is_some()) as usize;
    }
    (registered, filled)
}

fn print_versions(hub: &Hub, title: &str) {
    let result = hub
        .query(
            r#"{"aggregate": {"keys": [{"name": "FirmwareVersion", "type": "device"}],
                "properties": [{"operator": "count", "columnName": "devices"},
                               {"operator": "avg", "property": {"name": "BatteryLevel", "type": "device"}, "columnName": "avgBattery"}]},
               "sort": [{"property": {"name": "FirmwareVersion", "type": "device"}, "order": "asc"}]}"#,
        )
        .unwrap_or_else(|e| fail(&format!("aggregate query: {e}")));
    println!("{title}:");
    for row in &result.aggregate_result {
        println!("  {}", serde_json::to_string(row).expect("json"));
    }
}

/// Peak resident memory of this process (VmHWM), in KiB; 0 where /proc is missing.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn parse_args() -> (usize, bool, Option<String>, bool) {
    let mut devices = 1000;
    let mut plain = false;
    let mut bootstrap = false;
    let mut data_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--devices" => {
                devices = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .unwrap_or_else(|| fail("--devices needs a positive number"));
            }
            "--plain" => plain = true,
            "--bootstrap" => bootstrap = true,
            "--data-dir" => {
                data_dir = Some(args.next().unwrap_or_else(|| fail("--data-dir needs DIR")));
            }
            "-h" | "--help" => {
                println!("usage: fleet [--devices N] [--plain] [--data-dir DIR] [--bootstrap]");
                std::process::exit(0);
            }
            other => fail(&format!(
                "unknown argument {other:?}; usage: fleet [--devices N] [--plain] [--data-dir DIR] [--bootstrap]"
            )),
        }
    }
    (devices, plain, data_dir, bootstrap)
}

fn fail(why: &str) -> ! {
    eprintln!("fleet: {why}");
    std::process::exit(1)
}
