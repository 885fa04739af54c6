//! The shared seeded benchmark corpus: a realistic fleet of twins, generated
//! deterministically from [`SEED`] and the device's index, so any bench (and any process)
//! gets the same twin `i` without storing the fleet.
//!
//! Include it from a bench file with `mod corpus;` (this file is `benches/corpus/mod.rs`).
//!
//! Each twin has:
//! - **20 well-known device properties**: `Manufacturer` (8, skewed), `ModelNumber` (4 per
//!   manufacturer), `SerialNumber` (unique), `FirmwareVersion` (20 versions, newer ones
//!   more common), `BatteryLevel` (0-100), `BatteryStatus` (0-6, mostly 0),
//!   `MemoryTotal` (5 sizes), `MemoryFree` (KB, 4 KB steps below the total),
//!   `CurrentTime` (epoch seconds over 30 days: nearly unique), `UtcOffset` (24),
//!   `Timezone` (24), `DeviceDescription` (10 device types), `HardwareVersion` (8),
//!   `RegistrationLifetime` (3), `DefaultMinPeriod` (300), `DefaultMaxPeriod` (21600),
//!   `FirmwareUpdateState` (mostly 1), `FirmwareUpdateResult` (mostly 0/1),
//!   `FirmwarePackageName` (one per model), `FirmwarePackageVersion` (= firmware);
//!   plus, on a quarter of the devices, the custom `/3303/0/5700` temperature (a float
//!   with one decimal in -10.0..40.0);
//! - **5 service properties**: `region` (50 regions, skewed), `floor` (0-40),
//!   `maintenance` (bool, 10 % true), `installedOn` (a date string over ~3 years),
//!   `customer` (200 customers, skewed);
//! - **3 distinct tags** from a vocabulary of 100 (skewed: the first tags are common);
//! - status enabled (2 % disabled), connected (70 %), managed (95 %).
#![allow(dead_code)]

use twinhub::registry::{BulkLoad, NewDevice, Registry};
use twinhub::twin::{ConnectionState, DeviceStatus, Scalar, ScalarRef, ServiceValue, Twin};
use twinhub::{DeviceId, Timestamp};

/// The benches' indexed query with 2-3 predicates: tag `batch-0` AND FirmwareVersion =
/// "4.4" AND 20 <= BatteryLevel < 60 (7,000 of the 1M corpus twins).
pub const TAG_EQ_RANGE: &str = r#"{"filter": {"type": "logical", "logicalOperator": "and", "filters": [
    {"type": "comparison", "comparisonOperator": "all",
     "property": {"name": "tags", "type": "default"}, "value": ["batch-0"]},
    {"type": "comparison", "comparisonOperator": "eq",
     "property": {"name": "FirmwareVersion", "type": "device"}, "value": "4.4"},
    {"type": "comparison", "comparisonOperator": "gte",
     "property": {"name": "BatteryLevel", "type": "device"}, "value": 20},
    {"type": "comparison", "comparisonOperator": "lt",
     "property": {"name": "BatteryLevel", "type": "device"}, "value": 60}]}}"#;

/// A count per FirmwareVersion over the whole fleet.
pub const GROUP_BY_FIRMWARE: &str = r#"{"aggregate": {"keys": [{"name": "FirmwareVersion", "type": "device"}],
    "properties": [{"operator": "count", "property": null, "columnName": "n"}]}}"#;

/// The corpus seed.
pub const SEED: u64 = 0x7769_6e68_7562_2016;

/// The fleet size the issue's benches use.
pub const FLEET: usize = 1_000_000;

/// The fleet size to use: `TWINHUB_BENCH_DEVICES` if set (for quick runs), else [`FLEET`].
pub fn fleet_size() -> usize {
    std::env::var("TWINHUB_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FLEET)
}

/// The 20 firmware versions, oldest first (newer ones are more common).
pub const FIRMWARE_VERSIONS: [&str; 20] = [
    "1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1", "2.2", "2.3", "2.4", "3.0", "3.1", "3.2",
    "3.3", "3.4", "4.0", "4.1", "4.2", "4.3", "4.4",
];

/// The 8 manufacturers, most common first.
pub const MANUFACTURERS: [&str; 8] = [
    "Contoso",
    "Fabrikam",
    "Northwind",
    "Tailspin",
    "Wingtip",
    "Litware",
    "Adatum",
    "Proseware",
];

/// The 10 device types (`DeviceDescription`).
pub const DEVICE_TYPES: [&str; 10] = [
    "thermostat",
    "meter",
    "gateway",
    "tracker",
    "camera",
    "lock",
    "sensor",
    "light",
    "pump",
    "valve",
];

const ZONES: [(&str, &str); 24] = [
    ("Z", "UTC"),
    ("+01:00", "Europe/Berlin"),
    ("+01:00", "Europe/Paris"),
    ("+00:00", "Europe/London"),
    ("+02:00", "Europe/Athens"),
    ("-05:00", "America/New_York"),
    ("-06:00", "America/Chicago"),
    ("-07:00", "America/Denver"),
    ("-08:00", "America/Los_Angeles"),
    ("-03:00", "America/Sao_Paulo"),
    ("+09:00", "Asia/Tokyo"),
    ("+08:00", "Asia/Shanghai"),
    ("+05:30", "Asia/Kolkata"),
    ("+10:00", "Australia/Sydney"),
    ("+03:00", "Europe/Moscow"),
    ("+04:00", "Asia/Dubai"),
    ("+07:00", "Asia/Bangkok"),
    ("+12:00", "Pacific/Auckland"),
    ("-04:00", "America/Halifax"),
    ("+02:00", "Africa/Johannesburg"),
    ("+01:00", "Africa/Lagos"),
    ("+09:00", "Asia/Seoul"),
    ("-10:00", "Pacific/Honolulu"),
    ("+06:00", "Asia/Dhaka"),
];

/// Region `i` of 50 (`region-00` is the most common).
pub fn region(i: usize) -> String {
    const AREAS: [&str; 5] = ["eu-west", "eu-north", "us-east", "us-west", "ap-south"];
    format!("{}-{}", AREAS[i % 5], i / 5)
}

/// All 50 regions, most common first.
pub fn regions() -> Vec<String> {
    (0..50).map(region).collect()
}

/// Tag `i` of the 100-tag vocabulary (10 categories x 10 values; low `i` is common).
pub fn tag(i: usize) -> String {
    const CATEGORIES: [&str; 10] = [
        "building", "line", "ring", "batch", "zone", "pilot", "shift", "rack", "lot", "cohort",
    ];
    format!("{}-{}", CATEGORIES[i % 10], i / 10)
}

/// The device id of twin `i` (ids sort in index order).
pub fn device_id(i: usize) -> String {
    format!("dev-{i:07}")
}

/// SplitMix64: a tiny, well-mixed PRNG; enough for a benchmark corpus.
pub struct Rng(u64);

impl Rng {
    /// The generator for twin `i`.
    pub fn for_device(i: usize) -> Rng {
        Rng(SEED ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// In `0..n`, skewed towards 0 (index `floor(n * u^2)`).
    pub fn skewed(&mut self, n: usize) -> usize {
        let u = self.unit();
        ((n as f64) * u * u) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// The corpus epoch: 2016-04-29T12:00:00Z.
pub const EPOCH_MS: u64 = 1_461_931_200_000;

/// Twin `i` of the corpus.
pub fn twin(i: usize) -> Twin {
    let mut r = Rng::for_device(i);
    let id = DeviceId::new(&device_id(i)).expect("corpus ids are valid");
    let seen = Timestamp::from_millis(EPOCH_MS + r.below(30 * 86_400_000));
    let later = |r: &mut Rng| Timestamp::from_millis(seen.as_millis() + r.below(3_600_000));
    let m = r.skewed(MANUFACTURERS.len());
    let model = m * 4 + r.below(4) as usize;
    let fw = FIRMWARE_VERSIONS.len() - 1 - r.skewed(FIRMWARE_VERSIONS.len());
    let total: i64 = [256, 512, 1024, 2048, 4096][r.below(5) as usize];
    let free = (r.below(total as u64 / 4) * 4) as i64;
    let (offset, zone) = ZONES[r.skewed(ZONES.len())];
    let battery = r.below(101) as i64;
    let battery_status = if r.chance(0.8) { 0 } else { r.below(7) as i64 };
    let update_state = if r.chance(0.95) {
        1
    } else {
        2 + r.below(2) as i64
    };
    let update_result = if r.chance(0.9) {
        r.below(2) as i64
    } else {
        r.below(8) as i64
    };
    let mut t = Twin::new(id)
        .with_device_property("Manufacturer", MANUFACTURERS[m], seen)
        .with_device_property("ModelNumber", format!("M-{model:02}"), seen)
        .with_device_property(
            "SerialNumber",
            format!("SN{:012X}", r.next_u64() >> 16),
            seen,
        )
        .with_device_property("FirmwareVersion", FIRMWARE_VERSIONS[fw], seen)
        .with_device_property("BatteryLevel", battery, later(&mut r))
        .with_device_property("BatteryStatus", battery_status, seen)
        .with_device_property("MemoryTotal", total, seen)
        .with_device_property("MemoryFree", free, later(&mut r))
        .with_device_property(
            "CurrentTime",
            (seen.as_millis() / 1000 + r.below(3600)) as i64,
            later(&mut r),
        )
        .with_device_property("UtcOffset", offset, seen)
        .with_device_property("Timezone", zone, seen)
        .with_device_property("DeviceDescription", DEVICE_TYPES[model % 10], seen)
        .with_device_property("HardwareVersion", format!("hw-{}", r.below(8)), seen)
        .with_device_property(
            "RegistrationLifetime",
            [300i64, 3600, 86_400][r.below(3) as usize],
            seen,
        )
        .with_device_property("DefaultMinPeriod", 300, seen)
        .with_device_property("DefaultMaxPeriod", 21_600, seen)
        .with_device_property("FirmwareUpdateState", update_state, seen)
        .with_device_property("FirmwareUpdateResult", update_result, seen)
        .with_device_property("FirmwarePackageName", format!("fw-M-{model:02}"), seen)
        .with_device_property("FirmwarePackageVersion", FIRMWARE_VERSIONS[fw], seen);
    if r.chance(0.25) {
        let tenths = r.below(501) as f64 - 100.0;
        t = t.with_device_property("/3303/0/5700", Scalar::from(tenths / 10.0), later(&mut r));
    }
    let day = r.below(1000);
    t = t
        .with_service_property("region", region(r.skewed(50)))
        .with_service_property("floor", r.below(41) as i64)
        .with_service_property("maintenance", r.chance(0.1))
        .with_service_property(
            "installedOn",
            Timestamp::from_millis(EPOCH_MS - 1000 * 86_400_000 + day * 86_400_000).to_string()
                [..10]
                .to_string(),
        )
        .with_service_property("customer", format!("customer-{:03}", r.skewed(200)));
    while t.service_properties.tags.len() < 3 {
        t = t.with_tag(tag(r.skewed(100)));
    }
    if r.chance(0.02) {
        t.status = DeviceStatus::Disabled;
        t.status_reason = Some("decommissioned".into());
    }
    if r.chance(0.7) {
        t.connection_state = ConnectionState::Connected;
        t.connection_state_updated_time = Some(seen);
    }
    t.last_activity_time = Some(later(&mut r));
    t.is_managed = r.chance(0.95);
    t
}

/// Twin `i` of the second corpus shape, `timed`: the same devices, but every device
/// property carries its own `lastUpdatedTime` (anywhere in the 30 days) and the values
/// spread wider: `MemoryFree` any KB count, `CurrentTime` to the second over a year,
/// `HardwareVersion` 1,000 values, `RegistrationLifetime` 60-86,400 s, the temperature
/// with two decimals on every device, `floor` 0-999 and `customer` 100,000 values.
/// `FirmwareVersion`, `BatteryLevel` and the tags keep their distributions, so the same
/// queries select similar shares of the fleet.
pub fn twin_timed(i: usize) -> Twin {
    let mut t = twin(i);
    let mut r = Rng(SEED.rotate_left(17) ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let total = t.device_properties["MemoryTotal"]
        .value
        .as_number()
        .and_then(|n| n.as_i64())
        .unwrap_or(1024) as u64;
    let wider: [(&str, Scalar); 5] = [
        ("MemoryFree", Scalar::from(r.below(total) as i64)),
        (
            "CurrentTime",
            Scalar::from((EPOCH_MS / 1000 + r.below(365 * 86_400)) as i64),
        ),
        (
            "HardwareVersion",
            Scalar::from(format!("hw-{}", r.below(1000))),
        ),
        (
            "RegistrationLifetime",
            Scalar::from(60 + r.below(86_341) as i64),
        ),
        (
            "/3303/0/5700",
            Scalar::from((r.below(5001) as f64 - 1000.0) / 100.0),
        ),
    ];
    for (name, value) in wider {
        t = t.with_device_property(name, value, Timestamp::from_millis(EPOCH_MS));
    }
    for p in t.device_properties.values_mut() {
        p.last_updated_time = Timestamp::from_millis(EPOCH_MS + r.below(30 * 86_400_000));
    }
    t.with_service_property("floor", r.below(1000) as i64)
        .with_service_property("customer", format!("customer-{:05}", r.below(100_000)))
}

/// Twins `0..n`, generated lazily.
pub fn twins(n: usize) -> impl Iterator<Item = Twin> {
    (0..n).map(twin)
}

/// A registry loaded with twins `0..n`.
pub fn registry(n: usize) -> Registry {
    let mut reg = Registry::with_feed_capacity(1 << 16);
    reg.load(twins(n)).expect("the corpus is valid");
    reg
}

/// Twins as a flat table of borrowed rows, the way a loader holds a parsed file: every
/// string in one buffer, every value a fixed-size cell. Feeding it to a
/// [`BulkLoad`] measures the load alone: no twin is built or freed.
#[derive(Default)]
pub struct Rows {
    text: String,
    /// Property names and tags, interned once (a parser would borrow them from its input).
    names: Vec<String>,
    cells: Vec<Cell>,
    rows: Vec<RowHead>,
}

#[derive(Clone, Copy)]
enum CellValue {
    Text(u32, u32),
    Scalar(Option<twinhub::twin::Number>, bool),
}

#[derive(Clone, Copy)]
struct Cell {
    name: u32,
    value: CellValue,
    /// Device properties: the report time; service properties and tags: unused.
    ts: u64,
}

struct RowHead {
    id: (u32, u32),
    status: DeviceStatus,
    status_reason: Option<(u32, u32)>,
    connection: ConnectionState,
    connection_ts: Option<u64>,
    last_activity: Option<u64>,
    managed: bool,
    /// Cell counts after the previous row's: device properties, service properties, tags.
    counts: [u8; 3],
}

impl Rows {
    fn text(&mut self, s: &str) -> (u32, u32) {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        (start, s.len() as u32)
    }

    fn name(&mut self, s: &str) -> u32 {
        match self.names.iter().position(|n| n == s) {
            Some(i) => i as u32,
            None => {
                self.names.push(s.to_string());
                (self.names.len() - 1) as u32
            }
        }
    }

    fn value(&mut self, v: &Scalar) -> CellValue {
        match v {
            Scalar::String(s) => {
                let (a, b) = self.text(s);
                CellValue::Text(a, b)
            }
            Scalar::Number(n) => CellValue::Scalar(Some(*n), false),
            Scalar::Bool(b) => CellValue::Scalar(None, *b),
        }
    }

    /// Adds a twin as a row (scalar service properties only, as the corpus has).
    pub fn push(&mut self, t: &Twin) {
        let id = self.text(t.device_id.as_str());
        let status_reason = t.status_reason.as_deref().map(|r| self.text(r));
        for (name, p) in &t.device_properties {
            let cell = Cell {
                name: self.name(name),
                value: self.value(&p.value),
                ts: p.last_updated_time.as_millis(),
            };
            self.cells.push(cell);
        }
        for (name, v) in &t.service_properties.properties {
            let ServiceValue::Scalar(v) = v else {
                panic!("the corpus has scalar service properties")
            };
            let cell = Cell {
                name: self.name(name),
                value: self.value(v),
                ts: 0,
            };
            self.cells.push(cell);
        }
        for tag in &t.service_properties.tags {
            let cell = Cell {
                name: self.name(tag),
                value: CellValue::Scalar(None, false),
                ts: 0,
            };
            self.cells.push(cell);
        }
        self.rows.push(RowHead {
            id,
            status: t.status,
            status_reason,
            connection: t.connection_state,
            connection_ts: t.connection_state_updated_time.map(|t| t.as_millis()),
            last_activity: t.last_activity_time.map(|t| t.as_millis()),
            managed: t.is_managed,
            counts: [
                t.device_properties.len() as u8,
                t.service_properties.properties.len() as u8,
                t.service_properties.tags.len() as u8,
            ],
        });
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Adds every row to `bulk`.
    pub fn add_to(&self, bulk: &mut BulkLoad<'_>) {
        let str_at = |(a, b): (u32, u32)| &self.text[a as usize..(a + b) as usize];
        let value = |v: CellValue| match v {
            CellValue::Text(a, b) => ScalarRef::String(str_at((a, b))),
            CellValue::Scalar(Some(n), _) => ScalarRef::Number(n),
            CellValue::Scalar(None, b) => ScalarRef::Bool(b),
        };
        let mut dp = Vec::new();
        let mut sp = Vec::new();
        let mut tags = Vec::new();
        let mut at = 0;
        bulk.reserve(self.rows.len());
        for r in &self.rows {
            let [nd, ns, nt] = r.counts.map(usize::from);
            let cells = &self.cells[at..at + nd + ns + nt];
            at += cells.len();
            dp.clear();
            sp.clear();
            tags.clear();
            dp.extend(cells[..nd].iter().map(|c| {
                (
                    self.names[c.name as usize].as_str(),
                    value(c.value),
                    Timestamp::from_millis(c.ts),
                )
            }));
            sp.extend(
                cells[nd..nd + ns]
                    .iter()
                    .map(|c| (self.names[c.name as usize].as_str(), value(c.value))),
            );
            tags.extend(
                cells[nd + ns..]
                    .iter()
                    .map(|c| self.names[c.name as usize].as_str()),
            );
            bulk.add(&NewDevice {
                status: r.status,
                status_reason: r.status_reason.map(str_at),
                connection_state: r.connection,
                connection_state_updated_time: r.connection_ts.map(Timestamp::from_millis),
                last_activity_time: r.last_activity.map(Timestamp::from_millis),
                is_managed: r.managed,
                device_properties: &dp,
                service_properties: &sp,
                tags: &tags,
                ..NewDevice::new(str_at(r.id))
            })
            .expect("the corpus is valid");
        }
    }
}

/// Twins `0..n` as [`Rows`].
pub fn rows(n: usize) -> Rows {
    let mut rows = Rows::default();
    for i in 0..n {
        rows.push(&twin(i));
    }
    rows
}

/// This process's resident memory in bytes (from `/proc/self/statm`, pages of 4 KiB),
/// or 0 where that file does not exist.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// CPU time this thread has used, in seconds (user + system, from
/// `/proc/thread-self/stat`, 10 ms resolution), or 0 where that file does not exist. On a
/// shared machine wall-clock times grow with the load; CPU time much less so.
pub fn thread_cpu_seconds() -> f64 {
    cpu_seconds("/proc/thread-self/stat")
}

/// CPU time every thread of this process has used, in seconds (as
/// [`thread_cpu_seconds`], from `/proc/self/stat`, ended threads included).
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds("/proc/self/stat")
}

fn cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The machine's random memory read latency right now, in ns: a pointer chase through a
/// random cycle over 256 MiB (far beyond the caches, like the registry's lookups at 1M
/// twins). Printed next to latency-bound results: on a shared host it moves with the
/// neighbours' memory traffic, and the registry's lookups move with it.
pub fn random_read_ns() -> f64 {
    const N: usize = 64 << 20; // u32 entries: 256 MiB
    let mut next: Vec<u32> = (0..N as u32).collect();
    // Sattolo's shuffle: one cycle through every entry.
    let mut r = Rng::for_device(N);
    for i in (1..N).rev() {
        let j = r.below(i as u64) as usize;
        next.swap(i, j);
    }
    let steps = 2_000_000;
    let mut at = 0u32;
    let t = std::time::Instant::now();
    for _ in 0..steps {
        at = next[at as usize];
    }
    std::hint::black_box(at);
    t.elapsed().as_nanos() as f64 / steps as f64
}
