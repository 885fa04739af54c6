//! Job engine benchmarks.
//!
//! What is measured:
//! - `create_job_1m_targets/*`: `JobEngine::create` for one job over 1,000,000 device ids
//!   (validation, duplicate check, one child per target, indexes). `scheduled` starts later,
//!   so only the creation is timed; `rate_limited` starts at once with a 1,000/min rollout,
//!   so the first 1,000 children also start and emit their operations.
//! - `child_transitions`: a reboot job over 100,000 devices with no limits: create (every
//!   child Pending -> InProgress, one Execute op each), then a Done answer per op (InProgress
//!   -> Succeeded). Throughput is child transitions (2 per child) per second, including op
//!   allocation, event handling, statistics, history index and the device lock.
//! - `reboot_10k_in_memory`: wall time of a whole reboot job (`wait_for_registration`) across
//!   10,000 simulated devices on `MemoryTransport` with a simulated clock: ops, latency,
//!   reboots and re-registrations included.
//!
//! Each benchmark runs twice: with criterion's wall clock, and (groups suffixed `_cpu`) with
//! the benchmark thread's on-CPU time from `/proc/thread-self/schedstat`, which stays
//! meaningful when the machine is shared and the thread waits for a core.
//!
//! Corpus: device ids `dev-0000000` .. in order (ids are opaque to the engine); the
//! simulated fleet uses seed 1 and the default fault profile (5-50 ms one-way latency,
//! 5 s reboot). Everything is deterministic.
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use twinhub::job::{EngineConfig, JobEngine, JobId, JobSpec, JobStatus, JobType};
use twinhub::transport::memory::{DeviceSpec, MemoryConfig, MemoryTransport};
use twinhub::transport::{DeviceEvent, DeviceReply, Transport};
use twinhub::{DeviceId, Timestamp};

fn ids(n: usize) -> Vec<DeviceId> {
    (0..n)
        .map(|i| DeviceId::new(&format!("dev-{i:07}")).unwrap())
        .collect()
}

fn reboot(wait: bool) -> JobType {
    JobType::Reboot {
        wait_for_registration: wait,
    }
}

fn create_1m<M: Measurement>(c: &mut Criterion<M>, suffix: &str) {
    let targets = ids(1_000_000);
    let mut g = c.benchmark_group(format!("create_job_1m_targets{suffix}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(targets.len() as u64));
    let t0 = Instant::now();
    for (name, later) in [("scheduled", true), ("rate_limited", false)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut spec =
                        JobSpec::new(JobId::new("big").unwrap(), reboot(false), targets.clone())
                            .max_per_minute(1_000);
                    if later {
                        spec = spec.start_at(Timestamp::from_millis(3_600_000));
                    }
                    (
                        JobEngine::new(EngineConfig::default(), t0, Timestamp::EPOCH),
                        spec,
                    )
                },
                |(mut engine, spec)| {
                    engine.create(t0, spec).unwrap();
                    engine
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn child_transitions<M: Measurement>(c: &mut Criterion<M>, suffix: &str) {
    let n = 100_000;
    let targets = ids(n);
    let mut g = c.benchmark_group(format!("child_transitions{suffix}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * n as u64));
    let t0 = Instant::now();
    g.bench_function("reboot_100k", |b| {
        b.iter_batched(
            || {
                (
                    JobEngine::new(EngineConfig::default(), t0, Timestamp::EPOCH),
                    JobSpec::new(JobId::new("t").unwrap(), reboot(false), targets.clone()),
                    Vec::with_capacity(n),
                )
            },
            |(mut engine, spec, mut ops)| {
                engine.create(t0, spec).unwrap();
                while let Some(op) = engine.poll_op() {
                    ops.push(op);
                }
                let now = t0 + Duration::from_millis(10);
                for op in ops.drain(..) {
                    engine.handle_event(
                        now,
                        &DeviceEvent::Response {
                            op: op.id,
                            device: op.device,
                            result: Ok(DeviceReply::Done),
                        },
                    );
                }
                assert_eq!(
                    engine
                        .statistics(&JobId::new("t").unwrap())
                        .unwrap()
                        .succeeded,
                    n as u64
                );
                (engine, ops)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn reboot_10k<M: Measurement>(c: &mut Criterion<M>, suffix: &str) {
    let n = 10_000;
    let targets = ids(n);
    let mut g = c.benchmark_group(format!("reboot_10k_in_memory{suffix}"));
    g.sample_size(10);
    g.bench_function("wall_time", |b| {
        b.iter_batched(
            || {
                let t0 = Instant::now();
                let mut fleet = MemoryTransport::new(MemoryConfig::with_seed(1));
                for id in &targets {
                    fleet.add_device(t0, DeviceSpec::new(id.clone())).unwrap();
                }
                let now = t0 + Duration::from_secs(1);
                fleet.handle_timeout(now);
                while fleet.poll_event().is_some() {}
                let engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::EPOCH);
                (fleet, engine, now)
            },
            |(mut fleet, mut engine, mut now)| {
                let job = JobId::new("reboot").unwrap();
                engine
                    .create(
                        now,
                        JobSpec::new(job.clone(), reboot(true), targets.clone()),
                    )
                    .unwrap();
                loop {
                    while let Some(op) = engine.poll_op() {
                        fleet.submit(now, op);
                    }
                    while let Some(ev) = fleet.poll_event() {
                        engine.handle_event(now, &ev);
                    }
                    if engine.job_state(&job).unwrap().is_terminal() {
                        break;
                    }
                    let next = [fleet.poll_timeout(), engine.poll_timeout()]
                        .into_iter()
                        .flatten()
                        .min()
                        .expect("work pending");
                    now = now.max(next);
                    fleet.handle_timeout(now);
                    engine.handle_timeout(now);
                }
                assert_eq!(engine.job(&job).unwrap().status, JobStatus::Completed);
                black_box((fleet, engine))
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// On-CPU time of the calling thread, in nanoseconds (`/proc/thread-self/schedstat`).
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct NanosFormatter;

impl ValueFormatter for NanosFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical >= 1e9 {
            (1e9, "s (cpu)")
        } else if typical >= 1e6 {
            (1e6, "ms (cpu)")
        } else if typical >= 1e3 {
            (1e3, "µs (cpu)")
        } else {
            (1.0, "ns (cpu)")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => *n,
            Throughput::Bits(n) => *n,
            _ => 1,
        } as f64;
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v / 1e6);
        "Melem/s (cpu)"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }

    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start).max(1)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &NanosFormatter
    }
}

fn wall(c: &mut Criterion<WallTime>) {
    create_1m(c, "");
    child_transitions(c, "");
    reboot_10k(c, "");
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    create_1m(c, "_cpu");
    child_transitions(c, "_cpu");
    reboot_10k(c, "_cpu");
}

criterion_group!(wall_clock, wall);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(wall_clock, cpu_time);
