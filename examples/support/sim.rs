//! The simulated fleet shared by the `fleet` and `console` examples: seeded device
//! plans, and LWM2M devices built with the device library, each on its own UDP socket
//! and thread, whose application boots into a new image when Update is executed.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use twinhub::dtls::PskCredentials;
use twinhub::lwm2m::client::{
    ClientConfig, ClientEvent, DeviceThread, DriverOptions, FirmwareUpdate, Lwm2mClient,
    ObjectTree, objects,
};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue};

pub const VERSIONS: [(&str, u32); 4] = [("1.0", 40), ("1.1", 30), ("1.2", 20), ("0.9", 10)];
pub const REGIONS: [&str; 8] = [
    "eu-west", "eu-north", "us-east", "us-west", "ap-south", "ap-east", "sa-east", "af-south",
];

/// A tiny seeded generator (SplitMix64): the same fleet every run.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One simulated device: the library's client on its own socket and thread, plus the
/// flag its Update callback raises.
pub struct SimDevice {
    pub thread: DeviceThread,
    pub update_requested: Arc<AtomicBool>,
    pub new_version: Option<String>,
}

pub fn start_device(
    id: &DeviceId,
    version: &str,
    battery: i64,
    server: std::net::SocketAddr,
    psk: Option<PskCredentials>,
    bootstrap: Option<std::net::SocketAddr>,
) -> std::io::Result<SimDevice> {
    let scheme = if psk.is_some() { "coaps" } else { "coap" };
    let mut tree = ObjectTree::new();
    match bootstrap {
        // Only the bootstrap account: the bootstrap server gives the server account.
        Some(bs) => {
            tree.add(objects::bootstrap_security(&format!("coap://{bs}")));
            tree.add(objects::unprovisioned_server());
        }
        None => {
            tree.add(objects::security(&format!("{scheme}://{server}"), 1));
            tree.add(objects::server(1, 600, "U"));
        }
    }
    tree.add(
        objects::device("twinhub", "fleet-sim", id.as_str(), version)
            .with_value(0, 9, ResourceValue::Integer(battery))
            .with_value(0, 10, ResourceValue::Integer(4096))
            .with_value(0, 20, ResourceValue::Integer(0))
            .with_value(0, 21, ResourceValue::Integer(8192)),
    );
    let update_requested = Arc::new(AtomicBool::new(false));
    let flag = update_requested.clone();
    tree.set_firmware(FirmwareUpdate::new().on_update(move || {
        flag.store(true, Ordering::Release);
        Ok(())
    }));
    tree.add(objects::config());
    let mut config = ClientConfig::new(id.as_str(), server);
    match (bootstrap, psk) {
        (Some(bs), _) => config = config.with_bootstrap(bs),
        (None, Some(psk)) => config = config.with_psk(psk),
        (None, None) => {}
    }
    let client = Lwm2mClient::new(Instant::now(), config, tree);
    let options = DriverOptions {
        stack_size: 64 * 1024,
        ..DriverOptions::default()
    };
    let thread = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| DeviceThread::spawn_on(client, socket, options))?;
    Ok(SimDevice {
        thread,
        update_requested,
        new_version: None,
    })
}

/// What the application on one device does: remember which package it downloaded, and
/// when the server executes Update, boot into it. True when it booted into a new image.
pub fn serve_device(d: &mut SimDevice) -> bool {
    while let Ok(event) = d.thread.events().try_recv() {
        if let ClientEvent::FirmwareDownloadStarted { uri } = event {
            let file = uri.rsplit('/').next().unwrap_or_default();
            d.new_version = Some(file.trim_end_matches(".bin").to_string());
        }
    }
    if d.update_requested.swap(false, Ordering::AcqRel) {
        let version = d.new_version.clone().unwrap_or_else(|| "unknown".into());
        d.thread.with(|c| {
            let _ = c.set_value(
                &Lwm2mPath::resource(3, 0, 3),
                ResourceValue::String(version),
            );
            c.firmware_update_finished(Ok(()));
        });
        return true;
    }
    false
}

/// A deterministic image; its content does not matter to the simulated device.
pub fn firmware_image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// One device of the seeded fleet: its id, region and model tags, firmware version and
/// battery level (the same for the same index and seed every run).
pub fn plan_device(rng: &mut Rng, i: usize) -> (DeviceId, &'static str, &'static str, String, i64) {
    let id = DeviceId::new(&format!("device-{i:05}")).expect("a valid id");
    let region = REGIONS[rng.below(REGIONS.len() as u64) as usize];
    let model = if rng.below(3) == 0 {
        "model-B"
    } else {
        "model-A"
    };
    let mut pick = rng.below(100) as u32;
    let version = VERSIONS
        .iter()
        .find(|(_, share)| {
            let hit = pick < *share;
            pick = pick.saturating_sub(*share);
            hit
        })
        .map_or("1.0", |(v, _)| v);
    let battery = 5 + rng.below(96) as i64;
    (id, region, model, version.to_string(), battery)
}
