//! Deterministic simulations of the job engine on the in-memory transport, with a
//! simulated clock and seeded faults.

#![cfg(feature = "memory-fleet")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use twinhub::job::{
    AbortRule, CHILD_TRANSITIONS, CancelMode, ChildState, EngineConfig, ExponentialRamp,
    FailureKind, FailureReason, HistoryCursor, HistoryFilter, JobEngine, JobId, JobKind, JobRecord,
    JobSpec, JobStatus, JobType, ParentState, RecordScope, RetryRule,
};
use twinhub::transport::Transport;
use twinhub::transport::memory::{
    DeviceSpec, FaultProfile, MemoryConfig, MemoryTransport, OfflineMode, OfflinePeriods,
};
use twinhub::{DeviceId, Lwm2mPath, ResourceValue, Timestamp};

const WALL0: u64 = 1_461_931_200_000; // 2016-04-29T12:00:00Z

struct Sim {
    fleet: MemoryTransport,
    jobs: JobEngine,
    t0: Instant,
    now: Instant,
    twin_updates: Vec<(DeviceId, Lwm2mPath, ResourceValue)>,
    /// Largest `running` seen per job, sampled after every step.
    max_running: BTreeMap<JobId, u64>,
    /// Every child state seen, to check that terminal states never change.
    seen_terminal: BTreeMap<(usize, String), JobStatus>,
    /// Devices whose twins are gone: their operations are not sent, the engine forgets
    /// them instead (what the hub does).
    removed: Vec<DeviceId>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let t0 = Instant::now();
        let fleet = MemoryTransport::new(MemoryConfig::with_seed(seed));
        // The engine waits for the fleet's `Sent`, as the hub has it.
        let config = EngineConfig {
            transport_reports_sent: fleet.reports_sent(),
            ..EngineConfig::default()
        };
        Sim {
            fleet,
            jobs: JobEngine::new(config, t0, Timestamp::from_millis(WALL0)),
            t0,
            now: t0,
            twin_updates: Vec::new(),
            max_running: BTreeMap::new(),
            seen_terminal: BTreeMap::new(),
            removed: Vec::new(),
        }
    }

    fn add(&mut self, spec: DeviceSpec) {
        self.fleet.add_device(self.now, spec).unwrap();
    }

    /// Exchanges everything that is ready without advancing time.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(op) = self.jobs.poll_op() {
                if self.removed.contains(&op.device) {
                    self.jobs.forget_device(self.now, &op.device);
                } else {
                    self.fleet.submit(self.now, op);
                }
                moved = true;
            }
            while let Some(ev) = self.fleet.poll_event() {
                self.jobs.handle_event(self.now, &ev);
                moved = true;
            }
            while let Some(u) = self.jobs.poll_twin_update() {
                for (p, v) in u.content.values {
                    self.twin_updates.push((u.device.clone(), p, v));
                }
            }
            if !moved {
                break;
            }
        }
        for id in self.jobs.job_ids().cloned().collect::<Vec<_>>() {
            let running = self.jobs.statistics(&id).unwrap().running;
            let m = self.max_running.entry(id).or_default();
            *m = (*m).max(running);
        }
    }

    /// Advances to the next deadline; false when nothing is pending before `until`.
    fn step(&mut self, until: Instant) -> bool {
        self.settle();
        let next = [self.fleet.poll_timeout(), self.jobs.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t <= until => {
                self.now = self.now.max(t);
                self.fleet.handle_timeout(self.now);
                self.jobs.handle_timeout(self.now);
                self.settle();
                true
            }
            _ => {
                self.now = self.now.max(until);
                self.fleet.handle_timeout(self.now);
                self.jobs.handle_timeout(self.now);
                self.settle();
                false
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
    }

    fn run_until_done(&mut self, job: &JobId, limit: Duration) {
        let until = self.t0 + limit;
        while !self.jobs.job(job).unwrap().status.is_terminal() {
            assert!(
                self.step(until),
                "job {job} did not finish within {limit:?}"
            );
        }
        self.check_invariants();
    }

    fn check_invariants(&mut self) {
        self.jobs.validate().unwrap();
        for (i, r) in self.jobs.records().enumerate() {
            let key = (i, r.job_id.clone());
            if let Some(prev) = self.seen_terminal.get(&key) {
                assert_eq!(*prev, r.status, "{} left a terminal state", r.job_id);
            } else if r.status.is_terminal() {
                self.seen_terminal.insert(key, r.status);
            }
        }
    }

    fn history_json(&self) -> String {
        let records: Vec<JobRecord> = self.jobs.records().collect();
        serde_json::to_string(&records).unwrap()
    }
}

/// A Reboot job `job` over `targets`, waiting for the registration after the reboot or
/// not.
fn reboot_spec(job: &JobId, wait_for_registration: bool, targets: Vec<DeviceId>) -> JobSpec {
    JobSpec::new(
        job.clone(),
        JobType::Reboot {
            wait_for_registration,
        },
        targets,
    )
}

/// A simulation (`seed`) with the devices `dev(0)` to `dev(n - 1)`, run for 1 s so that
/// they registered.
fn sim_with_devices(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed);
    for i in 0..n {
        sim.add(DeviceSpec::new(dev(i)));
    }
    sim.run_for(Duration::from_secs(1));
    sim
}

fn dev(i: usize) -> DeviceId {
    DeviceId::new(&format!("dev-{i:05}")).unwrap()
}

fn jid(s: &str) -> JobId {
    JobId::new(s).unwrap()
}

fn firmware(version: &str) -> JobType {
    JobType::FirmwareUpdate {
        package_uri: format!("coap://fw.example/pkg/{version}.bin"),
        expected_version: Some(version.to_owned()),
    }
}

/// Which fault a device of the big fleet gets (disjoint classes, seeded by index).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Good,
    Lossy,
    BadDownload,
    BadUpdate,
    Mute,
    Flaky,
    LateOnline,
    NeverOnline,
}

fn class_of(i: usize) -> Class {
    // A fixed pseudo-random spread, independent of the transport's seed.
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1024
    match h {
        0..=40 => Class::BadDownload,
        41..=60 => Class::BadUpdate,
        61..=70 => Class::Mute,
        71..=150 => Class::Lossy,
        151..=190 => Class::Flaky,
        191..=210 => Class::LateOnline,
        211..=220 => Class::NeverOnline,
        _ => Class::Good,
    }
}

fn fleet_spec(i: usize) -> (DeviceSpec, Class) {
    let class = class_of(i);
    let mut faults = FaultProfile::default();
    match class {
        Class::Good | Class::LateOnline | Class::NeverOnline => {}
        Class::Lossy => faults.loss = 0.1,
        Class::BadDownload => faults.download_result = Some(5),
        Class::BadUpdate => faults.update_result = Some(8),
        Class::Mute => faults.unresponsive = true,
        Class::Flaky => {
            faults.offline_periods = Some(OfflinePeriods {
                mean_online: Duration::from_secs(120),
                mean_offline: Duration::from_secs(60),
            })
        }
    }
    let mut spec = DeviceSpec::new(dev(i))
        .firmware_version("1.0")
        .lifetime(120)
        .faults(faults);
    if matches!(class, Class::LateOnline | Class::NeverOnline) {
        spec = spec.starts_offline();
    }
    (spec, class)
}

fn big_fleet(seed: u64, n: usize) -> (Sim, Vec<Class>) {
    let mut sim = Sim::new(seed);
    let mut classes = Vec::with_capacity(n);
    for i in 0..n {
        let (spec, class) = fleet_spec(i);
        sim.add(spec);
        classes.push(class);
    }
    sim.run_for(Duration::from_secs(1));
    (sim, classes)
}

fn fw_job(n: usize) -> JobSpec {
    JobSpec::new(jid("fw-2-0"), firmware("2.0"), (0..n).map(dev).collect())
        .device_timeout(Duration::from_secs(15 * 60))
        .max_execution_time(Some(Duration::from_secs(4 * 3600)))
        .retry(RetryRule::new(Some(FailureKind::TimedOut), 2))
}

#[test]
fn firmware_rollout_over_10k_devices_with_seeded_faults() {
    let n = 10_000;
    let (mut sim, classes) = big_fleet(42, n);
    let job = jid("fw-2-0");
    sim.jobs.create(sim.now, fw_job(n)).unwrap();
    // Late devices come online after 20 minutes.
    sim.run_for(Duration::from_secs(20 * 60));
    for (i, c) in classes.iter().enumerate() {
        if *c == Class::LateOnline {
            sim.fleet.bring_online(sim.now, &dev(i)).unwrap();
        }
    }
    sim.run_until_done(&job, Duration::from_secs(5 * 3600));

    let stats = sim.jobs.statistics(&job).unwrap();
    assert_eq!(stats.device_count, n as u64);
    assert_eq!(stats.total(), n as u64);
    assert_eq!(stats.succeeded + stats.failed + stats.cancelled, n as u64);
    let record = sim.jobs.job(&job).unwrap();
    assert_eq!(record.status, JobStatus::Failed);

    let mut by_class: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (i, class) in classes.iter().enumerate() {
        let (state, failure) = sim.jobs.child_state(&job, &dev(i)).unwrap();
        assert!(state.is_terminal());
        let outcome = match (state, failure) {
            (ChildState::Succeeded, _) => "succeeded".to_owned(),
            (_, Some(f)) => f.code(),
            (s, None) => format!("{s:?}"),
        };
        *by_class
            .entry(format!("{class:?}"))
            .or_default()
            .entry(outcome.clone())
            .or_default() += 1;
        let version = sim.fleet.value(&dev(i), &Lwm2mPath::resource(3, 0, 3));
        match class {
            Class::Good | Class::LateOnline => {
                assert_eq!(outcome, "succeeded", "device {i} ({class:?})");
                assert_eq!(version, Some(&ResourceValue::String("2.0".into())));
            }
            Class::BadDownload => assert_eq!(outcome, "deviceError:5", "device {i}"),
            Class::BadUpdate => assert_eq!(outcome, "deviceError:8", "device {i}"),
            Class::Mute => assert_eq!(outcome, "timedOut", "device {i}"),
            Class::NeverOnline => assert_eq!(outcome, "deviceOffline", "device {i}"),
            Class::Lossy | Class::Flaky => {
                // Either outcome is possible, but a success means the device really has 2.0.
                if outcome == "succeeded" {
                    assert_eq!(version, Some(&ResourceValue::String("2.0".into())));
                }
            }
        }
    }
    // Retries and re-synchronisation carry most lossy and flaky devices through.
    for class in ["Lossy", "Flaky"] {
        let m = &by_class[class];
        let ok = m.get("succeeded").copied().unwrap_or(0);
        let total: u64 = m.values().sum();
        assert!(ok * 10 >= total * 7, "{class}: {m:?}");
    }
    // The history agrees with the statistics, grouped by failure reason.
    let failed_children = HistoryFilter {
        parent: Some(job.clone()),
        scope: RecordScope::Children,
        ..HistoryFilter::default()
    };
    let reasons = sim.jobs.failure_reasons(&failed_children);
    assert_eq!(reasons.values().sum::<u64>(), stats.failed);
    let expected_bad = classes.iter().filter(|c| **c == Class::BadDownload).count() as u64;
    assert_eq!(reasons["deviceError:5"], expected_bad);
    let counts = sim.jobs.status_counts(&failed_children);
    assert_eq!(counts[&JobStatus::Completed], stats.succeeded);
    assert_eq!(counts[&JobStatus::Failed], stats.failed);
    // Successful reads of the new version were handed out as twin updates.
    let fw_updates = sim
        .twin_updates
        .iter()
        .filter(|(_, p, v)| {
            *p == Lwm2mPath::resource(3, 0, 3) && *v == ResourceValue::String("2.0".into())
        })
        .count() as u64;
    assert!(fw_updates >= stats.succeeded);
}

#[test]
fn the_same_seed_replays_the_same_history() {
    let run = |seed| {
        let (mut sim, classes) = big_fleet(seed, 1_500);
        sim.jobs
            .create(sim.now, fw_job(1_500).max_per_minute(600))
            .unwrap();
        sim.run_for(Duration::from_secs(10 * 60));
        for (i, c) in classes.iter().enumerate() {
            if *c == Class::LateOnline {
                sim.fleet.bring_online(sim.now, &dev(i)).unwrap();
            }
        }
        sim.run_until_done(&jid("fw-2-0"), Duration::from_secs(5 * 3600));
        (sim.history_json(), sim.fleet.stats())
    };
    let (a, sa) = run(7);
    let (b, sb) = run(7);
    assert_eq!(sa, sb);
    assert!(a == b, "same seed, different history");
    let (c, _) = run(8);
    assert_ne!(a, c, "a different seed should change the history");
    assert!(a.contains("\"parentJobId\":\"fw-2-0\""));
    assert!(a.contains("\"startTimeUtc\":\"2016-04-29T12:00:01.000Z\""));
}

fn starts_per_window(sim: &Sim, job: &JobId) -> (Vec<u64>, u64) {
    let mut starts: Vec<u64> = sim
        .jobs
        .children(job)
        .filter_map(|r| r.start_time_utc.map(|t| t.as_millis()))
        .collect();
    starts.sort_unstable();
    // Largest number of starts in any 60-second window.
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..starts.len() {
        while starts[hi] - starts[lo] >= 60_000 {
            lo += 1;
        }
        best = best.max((hi - lo + 1) as u64);
    }
    (starts, best)
}

#[test]
fn rate_limit_and_in_flight_limit_hold() {
    let mut sim = sim_with_devices(3, 600);
    let job = jid("reboot-all");
    let spec = reboot_spec(&job, true, (0..600).map(dev).collect())
        .max_per_minute(100)
        .max_in_flight(7);
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_until_done(&job, Duration::from_secs(3 * 3600));
    let (starts, best) = starts_per_window(&sim, &job);
    assert_eq!(starts.len(), 600);
    assert!(best <= 100, "{best} starts in one minute");
    assert!(best >= 50, "rate limit far below the allowed rate: {best}");
    assert!(starts[599] - starts[0] >= 5 * 60_000);
    assert!(sim.max_running[&job] <= 7, "{}", sim.max_running[&job]);
    assert_eq!(sim.max_running[&job], 7);
    assert_eq!(sim.jobs.job(&job).unwrap().status, JobStatus::Completed);
    // Every device rebooted and came back.
    for i in 0..600 {
        assert_eq!(sim.fleet.registration_count(&dev(i)), 2);
    }
}

#[test]
fn exponential_ramp_starts_slow_and_speeds_up() {
    let mut sim = sim_with_devices(4, 400);
    let job = jid("ramp");
    let spec = reboot_spec(&job, false, (0..400).map(dev).collect())
        .max_per_minute(200)
        .ramp(ExponentialRamp {
            base_per_minute: 10,
            increment_factor: 2.0,
            every_succeeded: 10,
        });
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_until_done(&job, Duration::from_secs(3600));
    let (starts, best) = starts_per_window(&sim, &job);
    let mut ends: Vec<u64> = sim
        .jobs
        .children(&job)
        .map(|r| r.end_time_utc.unwrap().as_millis())
        .collect();
    ends.sort_unstable();
    // At every start, the starts of the last minute stay within the rate that the
    // successes so far allow: 10/min, doubling every 10 successes, capped at 200.
    for (i, &t) in starts.iter().enumerate() {
        let succeeded = ends.partition_point(|&e| e <= t) as u32;
        let allowed = (10u64 << (succeeded / 10).min(10)).min(200);
        let in_window = starts[..=i].iter().filter(|&&s| s + 60_000 > t).count() as u64;
        assert!(in_window <= allowed, "start {i}: {in_window} > {allowed}");
    }
    // Before the first success only the base rate is allowed.
    assert_eq!(starts.iter().filter(|&&s| s < ends[0]).count(), 10);
    assert!(best <= 200, "{best}");
    assert!(best > 40, "the ramp never sped up: {best}");
    assert_eq!(sim.jobs.job(&job).unwrap().status, JobStatus::Completed);
}

#[test]
fn abort_rule_cancels_the_rest() {
    let mut sim = Sim::new(5);
    for i in 0..500 {
        let faults = FaultProfile {
            download_result: (i % 3 == 0).then_some(7),
            download_time: Duration::from_secs(5),
            ..FaultProfile::default()
        };
        sim.add(DeviceSpec::new(dev(i)).faults(faults));
    }
    sim.run_for(Duration::from_secs(1));
    let job = jid("fw-abort");
    let spec = JobSpec::new(job.clone(), firmware("3.0"), (0..500).map(dev).collect())
        .max_per_minute(60)
        .abort_rule(AbortRule {
            on: Some(FailureKind::DeviceError),
            threshold_percent: 20.0,
            min_finished: 30,
        });
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_until_done(&job, Duration::from_secs(3 * 3600));
    let stats = sim.jobs.statistics(&job).unwrap();
    let record = sim.jobs.job(&job).unwrap();
    assert_eq!(record.status, JobStatus::Failed);
    assert!(
        record.status_message.starts_with("aborted:"),
        "{}",
        record.status_message
    );
    let finished = stats.succeeded + stats.failed;
    assert!(finished >= 30);
    assert!(stats.failed * 100 >= 20 * finished);
    assert!(stats.cancelled >= 300, "{stats:?}");
    assert_eq!(stats.total(), 500);
    // Cancelled children never ran on their device.
    for r in sim.jobs.children(&job) {
        if r.status == JobStatus::Cancelled && r.start_time_utc.is_none() {
            let id = r.device_id.unwrap();
            assert_eq!(
                sim.fleet.value(&id, &Lwm2mPath::resource(5, 0, 1)),
                Some(&ResourceValue::String(String::new()))
            );
        }
    }
}

fn all_types() -> Vec<(JobType, &'static str)> {
    vec![
        (firmware("2.5"), "fw"),
        (
            JobType::Reboot {
                wait_for_registration: true,
            },
            "reboot",
        ),
        (
            JobType::FactoryReset {
                wait_for_registration: true,
            },
            "reset",
        ),
        (
            JobType::ConfigurationUpdate {
                name: "telemetryInterval".into(),
                value: "60".into(),
            },
            "config",
        ),
        (
            JobType::ReadDeviceProperties {
                paths: vec![Lwm2mPath::resource(3, 0, 9), Lwm2mPath::resource(3, 0, 3)],
            },
            "read",
        ),
        (
            JobType::WriteDeviceProperties {
                values: vec![(
                    Lwm2mPath::resource(3, 0, 15),
                    ResourceValue::String("Europe/Paris".into()),
                )],
            },
            "write",
        ),
    ]
}

#[test]
fn each_job_type_succeeds_and_does_what_it_says() {
    let mut sim = Sim::new(6);
    for i in 0..20 {
        sim.add(DeviceSpec::new(dev(i)).battery_level(i as i64));
    }
    sim.run_for(Duration::from_secs(1));
    for (job_type, name) in all_types() {
        let job = jid(name);
        let kind = job_type.kind();
        sim.jobs
            .create(
                sim.now,
                JobSpec::new(job.clone(), job_type, (0..20).map(dev).collect()),
            )
            .unwrap();
        sim.run_until_done(&job, Duration::from_secs(24 * 3600));
        let record = sim.jobs.job(&job).unwrap();
        assert_eq!(
            record.status,
            JobStatus::Completed,
            "{name}: {}",
            record.status_message
        );
        assert_eq!(record.kind, kind);
        assert!(record.status_message.starts_with("20 devices"));
        assert!(record.status_message.ends_with(", all succeeded"));
    }
    for i in 0..20 {
        let d = dev(i);
        assert_eq!(
            sim.fleet.applied_config(&d),
            Some(("telemetryInterval", "60"))
        );
        assert_eq!(
            sim.fleet.value(&d, &Lwm2mPath::resource(3, 0, 15)),
            Some(&ResourceValue::String("Europe/Paris".into()))
        );
        // The factory reset restored the initial firmware after the update; the read job
        // ran after it and reported what the device has.
        assert!(sim.twin_updates.contains(&(
            d.clone(),
            Lwm2mPath::resource(3, 0, 9),
            ResourceValue::Integer(i as i64)
        )));
        // fw update + reboot + factory reset: three more registrations.
        assert_eq!(sim.fleet.registration_count(&d), 4);
    }
}

#[test]
fn one_child_per_device_at_a_time_across_jobs() {
    let mut sim = sim_with_devices(7, 10);
    let a = jid("a");
    let b = jid("b");
    sim.jobs
        .create(
            sim.now,
            JobSpec::new(a.clone(), firmware("2.0"), (0..10).map(dev).collect()),
        )
        .unwrap();
    sim.jobs
        .create(sim.now, reboot_spec(&b, true, (5..10).map(dev).collect()))
        .unwrap();
    assert_eq!(sim.jobs.statistics(&b).unwrap().pending, 5);
    sim.run_until_done(&a, Duration::from_secs(3600));
    sim.run_until_done(&b, Duration::from_secs(3600));
    let ends: BTreeMap<DeviceId, Timestamp> = sim
        .jobs
        .children(&a)
        .map(|r| (r.device_id.unwrap(), r.end_time_utc.unwrap()))
        .collect();
    for r in sim.jobs.children(&b) {
        let d = r.device_id.unwrap();
        assert!(
            r.start_time_utc.unwrap() >= ends[&d],
            "{d}: overlapping children"
        );
        assert_eq!(r.status, JobStatus::Completed);
    }
}

#[test]
fn scheduled_start_and_max_execution_time() {
    let mut sim = Sim::new(8);
    for i in 0..4 {
        let spec = DeviceSpec::new(dev(i));
        sim.add(if i == 3 { spec.starts_offline() } else { spec });
    }
    sim.run_for(Duration::from_secs(1));
    let job = jid("later");
    let start = Timestamp::from_millis(WALL0 + 3_600_000);
    let spec = reboot_spec(&job, false, (0..4).map(dev).collect())
        .start_at(start)
        .max_execution_time(Some(Duration::from_secs(600)));
    sim.jobs.create(sim.now, spec).unwrap();
    assert_eq!(sim.jobs.job(&job).unwrap().status, JobStatus::Enqueued);
    sim.run_for(Duration::from_secs(3_500));
    assert_eq!(sim.jobs.job(&job).unwrap().status, JobStatus::Enqueued);
    assert_eq!(sim.fleet.stats().submitted, 0);
    sim.run_until_done(&job, Duration::from_secs(2 * 3600));
    let record = sim.jobs.job(&job).unwrap();
    assert_eq!(record.start_time_utc, Some(start));
    assert_eq!(
        record.end_time_utc,
        Some(Timestamp::from_millis(start.as_millis() + 600_000))
    );
    assert_eq!(record.status, JobStatus::Failed);
    assert!(
        record
            .status_message
            .starts_with("maximum execution time reached")
    );
    let (state, reason) = sim.jobs.child_state(&job, &dev(3)).unwrap();
    assert_eq!(state, ChildState::Failed);
    assert_eq!(reason, Some(&FailureReason::DeviceOffline));
    assert_eq!(sim.jobs.statistics(&job).unwrap().succeeded, 3);
}

#[test]
fn cancel_abandons_or_lets_in_flight_children_finish() {
    for mode in [CancelMode::Abandon, CancelMode::FinishInFlight] {
        let mut sim = Sim::new(9);
        for i in 0..50 {
            sim.add(DeviceSpec::new(dev(i)));
        }
        sim.run_for(Duration::from_secs(1));
        let job = jid("fw-cancel");
        let spec = JobSpec::new(job.clone(), firmware("2.0"), (0..50).map(dev).collect())
            .max_in_flight(10);
        sim.jobs.create(sim.now, spec).unwrap();
        sim.run_for(Duration::from_secs(5));
        assert_eq!(sim.jobs.statistics(&job).unwrap().running, 10);
        let status = sim.jobs.cancel(sim.now, &job, mode).unwrap();
        let stats = sim.jobs.statistics(&job).unwrap();
        match mode {
            CancelMode::Abandon => {
                assert_eq!(status, JobStatus::Cancelled);
                assert_eq!(stats.cancelled, 50);
            }
            CancelMode::FinishInFlight => {
                assert_eq!(status, JobStatus::Running);
                assert_eq!(sim.jobs.job_state(&job), Some(ParentState::Cancelling));
                assert_eq!(stats.cancelled, 40);
                assert_eq!(stats.running, 10);
            }
        }
        sim.run_until_done(&job, Duration::from_secs(3600));
        let stats = sim.jobs.statistics(&job).unwrap();
        assert_eq!(sim.jobs.job(&job).unwrap().status, JobStatus::Cancelled);
        match mode {
            CancelMode::Abandon => assert_eq!(stats.cancelled, 50),
            CancelMode::FinishInFlight => {
                assert_eq!(stats.succeeded, 10);
                assert_eq!(stats.cancelled, 40);
            }
        }
        // A finished job stays as it is.
        assert_eq!(
            sim.jobs.cancel(sim.now, &job, CancelMode::Abandon),
            Ok(JobStatus::Cancelled)
        );
    }
}

#[test]
fn retries_with_backoff_then_success_after_the_device_returns() {
    let mut sim = Sim::new(10);
    sim.add(DeviceSpec::new(dev(0)));
    sim.run_for(Duration::from_secs(1));
    let job = jid("cfg");
    let spec = JobSpec::new(
        job.clone(),
        JobType::ConfigurationUpdate {
            name: "n".into(),
            value: "v".into(),
        },
        vec![dev(0)],
    )
    .device_timeout(Duration::from_secs(60))
    .retry(RetryRule::new(None, 3));
    // The device goes silent (still registered): the first attempt times out.
    sim.fleet
        .take_offline(
            sim.now,
            &dev(0),
            OfflineMode::Silent,
            Some(Duration::from_secs(90)),
        )
        .unwrap();
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_until_done(&job, Duration::from_secs(3600));
    let r: Vec<JobRecord> = sim.jobs.children(&job).collect();
    assert_eq!(r[0].status, JobStatus::Completed);
    assert!(
        r[0].status_message.starts_with("succeeded after"),
        "{}",
        r[0].status_message
    );
    assert_eq!(sim.fleet.applied_config(&dev(0)), Some(("n", "v")));
}

#[test]
fn history_paging_never_duplicates_or_skips() {
    let mut sim = sim_with_devices(11, 30);
    for (k, (t, name)) in all_types().into_iter().enumerate() {
        let targets = (k..30).step_by(k + 1).map(dev).collect();
        sim.jobs
            .create(sim.now, JobSpec::new(jid(name), t, targets))
            .unwrap();
    }
    sim.run_for(Duration::from_secs(3600));
    let all: Vec<JobRecord> = sim.jobs.records().collect();
    for scope in [
        RecordScope::All,
        RecordScope::Parents,
        RecordScope::Children,
    ] {
        for limit in [1, 7, 1000] {
            let filter = HistoryFilter {
                scope,
                ..HistoryFilter::default()
            };
            let mut got = Vec::new();
            let mut cursor = HistoryCursor::default();
            loop {
                let page = sim.jobs.history(&filter, cursor, limit).unwrap();
                assert!(page.records.len() <= limit);
                got.extend(page.records);
                match page.next {
                    Some(c) => cursor = c,
                    None => break,
                }
            }
            let expected: Vec<&JobRecord> = all
                .iter()
                .filter(|r| match scope {
                    RecordScope::All => true,
                    RecordScope::Parents => r.parent_job_id.is_empty(),
                    RecordScope::Children => !r.parent_job_id.is_empty(),
                })
                .collect();
            assert_eq!(
                got.iter().collect::<Vec<_>>(),
                expected,
                "{scope:?} {limit}"
            );
            assert_eq!(sim.jobs.history_count(&filter), expected.len() as u64);
        }
    }
    // Filters by device, type and time agree with a scan of every record.
    let d = dev(6);
    let by_device = sim
        .jobs
        .history(
            &HistoryFilter {
                device: Some(d.clone()),
                ..HistoryFilter::default()
            },
            HistoryCursor::default(),
            100,
        )
        .unwrap();
    let scan: Vec<&JobRecord> = all
        .iter()
        .filter(|r| r.device_id.as_ref() == Some(&d))
        .collect();
    assert_eq!(by_device.records.iter().collect::<Vec<_>>(), scan);
    let reads = sim.jobs.history_count(&HistoryFilter {
        kind: Some(JobKind::ReadDeviceProperties),
        ..HistoryFilter::default()
    });
    assert_eq!(
        reads,
        all.iter()
            .filter(|r| r.kind == JobKind::ReadDeviceProperties)
            .count() as u64
    );
    let mut end_times: Vec<Timestamp> = all.iter().filter_map(|r| r.end_time_utc).collect();
    end_times.sort();
    let cut = end_times[end_times.len() / 2];
    let ended_early = sim.jobs.history_count(&HistoryFilter {
        ended_before: Some(cut),
        ..HistoryFilter::default()
    });
    assert_eq!(
        ended_early,
        all.iter()
            .filter(|r| r.end_time_utc.is_some_and(|t| t < cut))
            .count() as u64
    );
    assert!(ended_early > 0 && ended_early < all.len() as u64);
    // The JSON shape of a record.
    let v = serde_json::to_value(&all[0]).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    for k in [
        "jobId",
        "parentJobId",
        "deviceId",
        "type",
        "status",
        "startTimeUtc",
        "endTimeUtc",
        "failureReason",
        "statusMessage",
    ] {
        assert!(keys.contains(&k), "missing {k} in {v}");
    }
    assert_eq!(v["type"], "firmwareUpdate");
}

/// Runs scenarios that between them take every edge of the child transition table.
#[test]
fn every_child_transition_edge_is_exercised_by_the_engine() {
    let mut hits = vec![0u64; CHILD_TRANSITIONS.len()];
    let mut add = |sim: &Sim| {
        for (h, n) in hits.iter_mut().zip(sim.jobs.child_edge_hits()) {
            *h += n;
        }
    };

    // 1. Offline at start, comes back; lossy devices retried; cancel while waiting.
    let mut sim = Sim::new(20);
    for i in 0..40 {
        let faults = FaultProfile {
            loss: if i < 20 { 0.3 } else { 0.0 },
            ..FaultProfile::default()
        };
        let spec = DeviceSpec::new(dev(i)).faults(faults);
        sim.add(if i >= 35 { spec.starts_offline() } else { spec });
    }
    sim.run_for(Duration::from_secs(1));
    sim.fleet
        .take_offline(sim.now, &dev(34), OfflineMode::Deregister, None)
        .unwrap();
    sim.run_for(Duration::from_secs(1));
    let job = jid("edges-1");
    let spec = JobSpec::new(
        job.clone(),
        JobType::ConfigurationUpdate {
            name: "a".into(),
            value: "b".into(),
        },
        (0..40).map(dev).collect(),
    )
    .device_timeout(Duration::from_secs(120))
    .retry(RetryRule::new(None, 10));
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_for(Duration::from_secs(30));
    sim.fleet.bring_online(sim.now, &dev(35)).unwrap();
    sim.run_for(Duration::from_secs(600));
    sim.jobs.cancel(sim.now, &job, CancelMode::Abandon).unwrap();
    sim.check_invariants();
    add(&sim);

    // 2. Device goes offline mid-firmware-update and returns; one never returns and its
    //    deadline retries it while offline; job expiry fails a child in backoff.
    let mut sim = Sim::new(21);
    for i in 0..6 {
        sim.add(DeviceSpec::new(dev(i)).lifetime(30));
    }
    sim.run_for(Duration::from_secs(1));
    let job = jid("edges-2");
    let spec = JobSpec::new(job.clone(), firmware("2.0"), (0..6).map(dev).collect())
        .device_timeout(Duration::from_secs(300))
        .max_execution_time(Some(Duration::from_secs(3000)))
        .retry(RetryRule {
            initial_backoff: Duration::from_secs(400),
            ..RetryRule::new(None, 10)
        });
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_for(Duration::from_secs(3));
    for i in 0..3 {
        sim.fleet
            .take_offline(sim.now, &dev(i), OfflineMode::Deregister, None)
            .unwrap();
    }
    sim.run_for(Duration::from_secs(10));
    sim.fleet.bring_online(sim.now, &dev(0)).unwrap();
    sim.run_until_done(&job, Duration::from_secs(10_000));
    add(&sim);

    // 3. A mute device fails for good; an offline device's retry comes due while offline.
    let mut sim = Sim::new(22);
    let mute = FaultProfile {
        unresponsive: true,
        ..FaultProfile::default()
    };
    sim.add(DeviceSpec::new(dev(0)).faults(mute));
    sim.add(DeviceSpec::new(dev(1)));
    sim.run_for(Duration::from_secs(1));
    let job = jid("edges-3");
    let spec = reboot_spec(&job, true, vec![dev(0), dev(1)])
        .device_timeout(Duration::from_secs(60))
        .retry(RetryRule::new(Some(FailureKind::DeviceOffline), 1));
    sim.fleet
        .take_offline(sim.now, &dev(1), OfflineMode::Silent, None)
        .unwrap();
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_for(Duration::from_secs(200));
    sim.fleet
        .take_offline(sim.now, &dev(1), OfflineMode::Deregister, None)
        .unwrap();
    sim.run_until_done(&job, Duration::from_secs(100_000));
    add(&sim);

    // 4. Cancel while children wait for a retry, run, or wait to start.
    let mut sim = Sim::new(23);
    sim.add(DeviceSpec::new(dev(0)).faults(FaultProfile {
        config_apply_error: Some(twinhub::transport::DeviceError::Code(5, 0)),
        ..FaultProfile::default()
    }));
    for i in 1..4 {
        sim.add(DeviceSpec::new(dev(i)));
    }
    sim.run_for(Duration::from_secs(1));
    let job = jid("edges-4");
    let spec = JobSpec::new(
        job.clone(),
        JobType::ConfigurationUpdate {
            name: "a".into(),
            value: "b".into(),
        },
        vec![dev(0)],
    )
    .retry(RetryRule::new(Some(FailureKind::Rejected), 5));
    sim.jobs.create(sim.now, spec).unwrap();
    let fw = jid("edges-4-fw");
    let spec =
        JobSpec::new(fw.clone(), firmware("2.0"), (1..4).map(dev).collect()).max_per_minute(1);
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.jobs.statistics(&job).unwrap().retrying, 1);
    let stats = sim.jobs.statistics(&fw).unwrap();
    assert_eq!((stats.running, stats.pending), (1, 2));
    sim.jobs.cancel(sim.now, &job, CancelMode::Abandon).unwrap();
    sim.jobs.cancel(sim.now, &fw, CancelMode::Abandon).unwrap();
    sim.check_invariants();
    add(&sim);

    // 5. The job runs out of time while a child waits for its retry.
    let mut sim = Sim::new(24);
    sim.add(DeviceSpec::new(dev(0)).faults(FaultProfile {
        unresponsive: true,
        ..FaultProfile::default()
    }));
    sim.run_for(Duration::from_secs(1));
    let job = jid("edges-5");
    let spec = reboot_spec(&job, false, vec![dev(0)])
        .device_timeout(Duration::from_secs(60))
        .max_execution_time(Some(Duration::from_secs(200)))
        .retry(RetryRule {
            initial_backoff: Duration::from_secs(1000),
            max_backoff: Duration::from_secs(1000),
            ..RetryRule::new(None, 3)
        });
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_until_done(&job, Duration::from_secs(1000));
    let (state, reason) = sim.jobs.child_state(&job, &dev(0)).unwrap();
    assert_eq!(
        (state, reason),
        (ChildState::Failed, Some(&FailureReason::TimedOut))
    );
    add(&sim);

    // 6. A device's twin is removed: the child holding it and one blocked behind it in
    // another job fail (a child that never started included).
    let mut sim = Sim::new(25);
    sim.add(DeviceSpec::new(dev(0)).faults(FaultProfile {
        unresponsive: true,
        ..FaultProfile::default()
    }));
    sim.run_for(Duration::from_secs(1));
    let holding = jid("edges-6");
    let waiting = jid("edges-6b");
    for id in [&holding, &waiting] {
        let spec = JobSpec::new(
            id.clone(),
            JobType::ConfigurationUpdate {
                name: "a".into(),
                value: "b".into(),
            },
            vec![dev(0)],
        );
        sim.jobs.create(sim.now, spec).unwrap();
    }
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.jobs.statistics(&holding).unwrap().running, 1);
    assert_eq!(sim.jobs.statistics(&waiting).unwrap().pending, 1);
    assert_eq!(sim.jobs.forget_device(sim.now, &dev(0)), 2);
    assert_eq!(
        sim.jobs.forget_device(sim.now, &dev(0)),
        0,
        "nothing is left"
    );
    for id in [&holding, &waiting] {
        assert_eq!(
            sim.jobs.child_state(id, &dev(0)).unwrap(),
            (ChildState::Failed, Some(&FailureReason::DeviceRemoved))
        );
        // A removal is no failure of the job: with nothing else to do, it completes.
        assert_eq!(sim.jobs.job_state(id), Some(ParentState::Completed));
    }
    sim.check_invariants();
    add(&sim);

    let missing: Vec<_> = CHILD_TRANSITIONS
        .iter()
        .zip(&hits)
        .filter(|(_, n)| **n == 0)
        .map(|(e, _)| e)
        .collect();
    assert!(missing.is_empty(), "edges never taken: {missing:?}");
}

/// Issue #16 finding 7: lost messages end in a resend well before the 30-minute device
/// timeout, with no retry rule: on a fleet that loses a tenth of all messages (requests,
/// answers and notifications), every idempotent job type completes on every device.
#[test]
fn lost_messages_are_resent_without_retry_rules() {
    let mut sim = Sim::new(16);
    let n = 100;
    for i in 0..n {
        let faults = FaultProfile {
            loss: 0.1,
            ..FaultProfile::default()
        };
        sim.add(
            DeviceSpec::new(dev(i))
                .firmware_version("1.0")
                .faults(faults),
        );
    }
    sim.run_for(Duration::from_secs(5));
    for (job_type, name) in all_types() {
        if matches!(
            job_type,
            JobType::Reboot { .. } | JobType::FactoryReset { .. }
        ) {
            // Never executed twice: a lost reboot needs a retry rule.
            continue;
        }
        let job = jid(&format!("lossy-{name}"));
        let started = sim.now;
        sim.jobs
            .create(
                sim.now,
                JobSpec::new(job.clone(), job_type, (0..n).map(dev).collect()),
            )
            .unwrap();
        sim.run_until_done(&job, Duration::from_secs(24 * 3600));
        let record = sim.jobs.job(&job).unwrap();
        assert_eq!(
            record.status,
            JobStatus::Completed,
            "{name}: {} {:?}",
            record.status_message,
            sim.jobs
                .children(&job)
                .filter(|c| c.failure_reason.is_some())
                .map(|c| (c.device_id, c.failure_reason, c.status_message))
                .take(5)
                .collect::<Vec<_>>()
        );
        // Each loss costs one transport time-out (93 s) and a resend, never the 30-minute
        // device timeout.
        let took = sim.now - started;
        assert!(took < Duration::from_secs(20 * 60), "{name} took {took:?}");
    }
    assert!(sim.fleet.stats().lost > 0, "the fleet lost messages");
}

/// A settled fleet of `n` devices; those `mute` picks never answer.
fn sim_with_mute(seed: u64, n: usize, mute: impl Fn(usize) -> bool) -> Sim {
    let mut sim = Sim::new(seed);
    for i in 0..n {
        let spec = DeviceSpec::new(dev(i));
        sim.add(if mute(i) {
            spec.faults(FaultProfile {
                unresponsive: true,
                ..FaultProfile::default()
            })
        } else {
            spec
        });
    }
    sim.run_for(Duration::from_secs(1));
    sim
}

/// A configuration update of devices `0..n`.
fn config_job(job: &JobId, n: usize) -> JobSpec {
    JobSpec::new(
        job.clone(),
        JobType::ConfigurationUpdate {
            name: "a".into(),
            value: "b".into(),
        },
        (0..n).map(dev).collect(),
    )
}

/// Removed devices fail as `deviceRemoved` without tripping abort rules (a rule that
/// aborts at the first failure of any kind stays quiet), found by `forget_device` or by
/// `retain_devices`; the other devices finish, and the job completes.
#[test]
fn removed_devices_fail_without_tripping_abort_rules() {
    let mut sim = sim_with_mute(26, 4, |i| i < 2);
    let job = jid("removals");
    let spec = config_job(&job, 4).abort_rule(AbortRule {
        on: None,
        threshold_percent: 1.0,
        min_finished: 1,
    });
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.jobs.statistics(&job).unwrap().running, 2);
    assert_eq!(sim.jobs.forget_device(sim.now, &dev(0)), 1);
    assert_eq!(
        sim.jobs
            .retain_devices(sim.now, |d| *d != dev(0) && *d != dev(1)),
        1
    );
    sim.run_until_done(&job, Duration::from_secs(60));
    for i in 0..2 {
        assert_eq!(
            sim.jobs.child_state(&job, &dev(i)).unwrap(),
            (ChildState::Failed, Some(&FailureReason::DeviceRemoved))
        );
    }
    for i in 2..4 {
        assert_eq!(
            sim.jobs.child_state(&job, &dev(i)).unwrap().0,
            ChildState::Succeeded
        );
    }
    let stats = sim.jobs.statistics(&job).unwrap();
    assert_eq!(
        (
            stats.failed,
            stats.removed,
            stats.succeeded,
            stats.cancelled
        ),
        (2, 2, 2, 0)
    );
    // Not aborted: it ran to its end, and completed, its only failures the removals.
    assert_eq!(sim.jobs.job_state(&job), Some(ParentState::Completed));
    assert_eq!(
        sim.jobs.job(&job).unwrap().status_message,
        "2 devices configured, all succeeded; 2 devices removed"
    );
    assert!(
        sim.jobs
            .failures_by_kind(&job)
            .unwrap()
            .iter()
            .all(|(_, n)| *n == 0)
    );
    sim.check_invariants();
}

/// A job with a real failure besides a removal fails, and its message tells the removal
/// apart.
#[test]
fn a_job_failed_besides_its_removals_says_how_many_were_removals() {
    let mut sim = sim_with_mute(27, 3, |i| i < 2);
    let job = jid("mixed");
    let spec = config_job(&job, 3).device_timeout(Duration::from_secs(60));
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.jobs.forget_device(sim.now, &dev(1)), 1);
    sim.run_until_done(&job, Duration::from_secs(600));
    assert_eq!(sim.jobs.job_state(&job), Some(ParentState::Failed));
    assert_eq!(
        sim.jobs.job(&job).unwrap().status_message,
        "3 devices: 1 configured, 2 failed (1 removed), 0 cancelled"
    );
    sim.check_invariants();
}

#[test]
fn a_reboot_that_never_reached_an_offline_device_is_sent_when_it_registers() {
    // The Execute finds the device not registered; when it registers, the reboot is still
    // to do (the registration is no proof of a reboot that was never delivered).
    let mut sim = Sim::new(21);
    sim.add(DeviceSpec::new(dev(0)).starts_offline());
    sim.run_for(Duration::from_secs(1));
    let job = jid("reboot-late");
    let spec = reboot_spec(&job, true, vec![dev(0)]);
    sim.jobs.create(sim.now, spec).unwrap();
    sim.run_for(Duration::from_secs(30));
    assert_eq!(
        sim.jobs.child_state(&job, &dev(0)).unwrap().0,
        ChildState::WaitingForDevice
    );
    sim.fleet.bring_online(sim.now, &dev(0)).unwrap();
    sim.run_until_done(&job, Duration::from_secs(3600));
    assert_eq!(sim.jobs.job(&job).unwrap().status, JobStatus::Completed);
    // Registered when brought online, then again after the reboot.
    assert_eq!(sim.fleet.registration_count(&dev(0)), 2);
    sim.check_invariants();
}

/// A child failed for its removed device as it starts (its operation never sent) gives
/// its start back to the rollout's rate window: removed devices do not slow the others.
#[test]
fn a_removed_devices_start_goes_back_to_the_rate_window() {
    let mut sim = sim_with_mute(27, 3, |_| false);
    let job = jid("rated");
    let spec = config_job(&job, 3).max_in_flight(1).max_per_minute(2);
    sim.jobs.create(sim.now, spec).unwrap();
    // dev(1)'s twin goes while dev(0) holds the rollout: its child fails as it starts.
    sim.removed.push(dev(1));
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        sim.jobs.child_state(&job, &dev(1)).unwrap(),
        (ChildState::Failed, Some(&FailureReason::DeviceRemoved))
    );
    // Two starts in the minute (dev(0), dev(1)): dev(2) would wait for the window;
    // dev(1)'s start came back, so dev(2) ran at once.
    assert_eq!(
        sim.jobs.child_state(&job, &dev(2)).unwrap().0,
        ChildState::Succeeded
    );
    sim.check_invariants();
}
