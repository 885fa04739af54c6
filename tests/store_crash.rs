//! Crash test with real processes: a child process (this test binary re-invoked on
//! `crash_child`) runs a write storm on a store (service writes, device-event batches,
//! creates and removes) and prints an `ACK` line after each commit returns; the parent
//! kills it with SIGKILL after a random number of acknowledgements, reopens the directory
//! and checks that every acknowledged write is there, that no write is half-applied,
//! that the indexes agree with a full scan (`validate()`), and that sequence numbers keep
//! increasing across kills. Each created device also gets a job (its creation committed in
//! the same transaction), and the job of the device removed is cancelled: every
//! acknowledged job must come back, every acknowledged cancellation too, and the restored
//! job engine must be consistent.
//!
//! 20 kills by default; `TWINHUB_CRASH_KILLS=500` runs more. The seed is printed
//! (`TWINHUB_CRASH_SEED` replays one).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use twinhub::job::{CancelMode, EngineConfig, JobId, JobSpec, JobStatus, JobType};
use twinhub::store::{Store, StoreConfig};
use twinhub::twin::{Scalar, ServiceProperties, ServiceValue, Twin};
use twinhub::{DeviceId, Timestamp};

const DEVICES: u64 = 20;
const BATCH_PROP: &str = "/3303/0/5700";
/// Most operations one child runs (it is killed long before).
const CHILD_OPS: u64 = 200_000;

fn dev(n: u64) -> String {
    format!("d{n}")
}

/// The child's side: only runs when the parent sets the directory.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("TWINHUB_CRASH_DIR") else {
        return;
    };
    let start: u64 = std::env::var("TWINHUB_CRASH_START")
        .unwrap()
        .parse()
        .unwrap();
    let (mut store, mut reg) = Store::open(&dir, StoreConfig::default()).unwrap();
    let now = std::time::Instant::now();
    let mut jobs = store
        .load_jobs(EngineConfig::default(), now, Timestamp::now())
        .unwrap();
    for n in 0..DEVICES {
        if !reg.contains(&dev(n)) {
            reg.create(Twin::new(DeviceId::new(&dev(n)).unwrap()))
                .unwrap();
        }
    }
    store.commit(&reg).unwrap();
    println!("READY");
    for i in start..start + CHILD_OPS {
        match i % 4 {
            // A service write that changes two properties and a tag at once.
            0 | 1 => {
                let d = dev(i % DEVICES);
                let mut props = ServiceProperties::default();
                props
                    .properties
                    .insert("a".into(), ServiceValue::from(i as i64));
                props
                    .properties
                    .insert("b".into(), ServiceValue::from(i as i64));
                props.tags.insert(format!("g{}", i % 5));
                let etag = reg.replace_service_properties(&d, &props, None).unwrap();
                store.commit(&reg).unwrap();
                println!("ACK S {i} {d} {}", etag.0);
            }
            // A device-event batch: every device reports the same value.
            2 => {
                for n in 0..DEVICES {
                    reg.report_device_property(
                        &dev(n),
                        BATCH_PROP,
                        Scalar::from(i as f64),
                        Timestamp::from_millis(i),
                    )
                    .unwrap();
                }
                store.commit(&reg).unwrap();
                println!("ACK B {i} {}", reg.last_seq());
            }
            // A device created (and the one created 8 operations ago removed).
            _ => {
                let id = format!("x{i}");
                // A restarted child repeats operations that were committed but not
                // acknowledged before the kill: the device may exist already.
                let _ = reg.create(Twin::new(DeviceId::new(&id).unwrap()).with_tag("extra"));
                let gone = i.checked_sub(8).map(|j| format!("x{j}"));
                if let Some(g) = &gone {
                    let _ = reg.remove(g);
                }
                // Its job (a scheduled reboot, so nothing runs) and the removed one's
                // cancellation, in the same transaction.
                let spec = JobSpec::new(
                    JobId::new(&format!("j{i}")).unwrap(),
                    JobType::Reboot {
                        wait_for_registration: false,
                    },
                    vec![DeviceId::new(&id).unwrap()],
                )
                .start_at(Timestamp::now().saturating_add(std::time::Duration::from_secs(3600)));
                let _ = jobs.create(now, spec);
                if let Some(j) = i.checked_sub(8) {
                    let _ = jobs.cancel(
                        now,
                        &JobId::new(&format!("j{j}")).unwrap(),
                        CancelMode::Abandon,
                    );
                }
                store.commit_with_jobs(&reg, &mut jobs).unwrap();
                println!("ACK C {i} {id} {}", gone.unwrap_or_default());
            }
        }
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Default)]
struct Acked {
    /// Per device: the last acknowledged service write's value and etag.
    service: BTreeMap<String, (i64, u64)>,
    /// The last acknowledged batch.
    batch: Option<i64>,
    created: Vec<String>,
    removed: Vec<String>,
    max_seq: u64,
    last_op: Option<u64>,
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let kills: u64 = std::env::var("TWINHUB_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("TWINHUB_CRASH_SEED")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {kills} kills, TWINHUB_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = Acked::default();
    let mut total_acks = 0;
    for kill in 0..kills {
        let start = acked.last_op.map_or(0, |i| i + 1);
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("TWINHUB_CRASH_DIR", dir.path())
            .env("TWINHUB_CRASH_START", start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after 0..60 acknowledgements (0: while it opens or right after), then read
        // on to the end: every line the child printed before it died is an
        // acknowledgement too, so at most one committed operation goes unacknowledged.
        let wanted = rng.below(61);
        let mut seen = 0;
        let mut ready = false;
        let mut killed = false;
        if wanted == 0 {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
        for line in lines {
            let line = line.unwrap();
            // libtest may print "test crash_child ... " ahead of the child's first line.
            if line.ends_with("READY") {
                ready = true;
                continue;
            }
            let Some(ack) = line.split_once("ACK ").map(|(_, a)| a) else {
                continue;
            };
            seen += 1;
            let f: Vec<&str> = ack.split(' ').collect();
            let op: u64 = f[1].parse().unwrap();
            let seq = match f[0] {
                "S" => {
                    let etag: u64 = f[3].parse().unwrap();
                    acked.service.insert(f[2].to_string(), (op as i64, etag));
                    etag
                }
                "B" => {
                    acked.batch = Some(op as i64);
                    f[2].parse().unwrap()
                }
                _ => {
                    acked.created.retain(|c| c != f[3].trim());
                    acked.created.push(f[2].to_string());
                    if let Some(g) = f.get(3).filter(|g| !g.is_empty()) {
                        acked.removed.push(g.to_string());
                    }
                    0
                }
            };
            assert!(
                seq == 0 || seq > acked.max_seq,
                "kill {kill}: seq {seq} not above {}",
                acked.max_seq
            );
            acked.max_seq = acked.max_seq.max(seq);
            acked.last_op = Some(op);
            if !killed && seen >= wanted {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        if !killed {
            let _ = child.kill();
        }
        child.wait().unwrap();
        assert!(
            ready || seen == 0,
            "the child acknowledged before it was ready"
        );
        total_acks += seen;

        let (store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        reg.validate()
            .unwrap_or_else(|e| panic!("kill {kill}: {e}"));
        assert!(
            reg.last_seq() >= acked.max_seq,
            "kill {kill}: sequence went back"
        );
        for (d, &(value, etag)) in &acked.service {
            let t = reg
                .get(d)
                .unwrap_or_else(|| panic!("kill {kill}: {d} lost"));
            let a = t
                .service_property("a")
                .and_then(|s| s.as_number()?.as_i64());
            let b = t
                .service_property("b")
                .and_then(|s| s.as_number()?.as_i64());
            assert_eq!(a, b, "kill {kill}: {d} half-applied");
            let a = a.unwrap();
            assert!(a >= value, "kill {kill}: {d} lost write {value} (has {a})");
            assert!(
                t.has_tag(&format!("g{}", a % 5)),
                "kill {kill}: {d} tags half-applied"
            );
            assert!(
                t.service_etag().0 >= etag,
                "kill {kill}: {d} etag went back"
            );
        }
        if let Some(k) = acked.batch {
            let values: Vec<f64> = (0..DEVICES)
                .map(|n| {
                    let t = reg.get(&dev(n)).unwrap();
                    t.device_property(BATCH_PROP)
                        .unwrap()
                        .0
                        .as_number()
                        .unwrap()
                        .as_f64()
                })
                .collect();
            assert!(
                values.iter().all(|&v| v == values[0]),
                "kill {kill}: batch half-applied {values:?}"
            );
            assert!(values[0] >= k as f64, "kill {kill}: batch {k} lost");
        }
        let last_op = acked.last_op.unwrap_or(0);
        for c in &acked.created {
            // x{i} is removed by operation i + 8; only the operation after the last
            // acknowledged one may have committed unacknowledged.
            let i: u64 = c[1..].parse().unwrap();
            if !acked.removed.contains(c) && i + 8 > last_op + 1 {
                assert!(reg.contains(c), "kill {kill}: created {c} lost");
            }
        }
        for r in &acked.removed {
            assert!(!reg.contains(r), "kill {kill}: removed {r} is back");
        }
        let jobs = store
            .load_jobs(
                EngineConfig::default(),
                std::time::Instant::now(),
                Timestamp::now(),
            )
            .unwrap_or_else(|e| panic!("kill {kill}: jobs: {e}"));
        jobs.validate()
            .unwrap_or_else(|e| panic!("kill {kill}: jobs: {e}"));
        for c in &acked.created {
            let job = JobId::new(&format!("j{}", &c[1..])).unwrap();
            let record = jobs
                .job(&job)
                .unwrap_or_else(|| panic!("kill {kill}: acknowledged job {job} lost"));
            if acked.removed.contains(c) {
                assert_eq!(
                    record.status,
                    JobStatus::Cancelled,
                    "kill {kill}: acknowledged cancellation of {job} lost"
                );
            }
        }
        drop((store, reg));
    }
    eprintln!("crash test: {total_acks} acknowledged writes checked over {kills} kills");
    assert!(total_acks > 0, "no child ever acknowledged a write");
}
