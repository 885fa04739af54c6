//! Job-history retention: the engine keeps at most `retain_jobs` jobs and
//! `retain_children` child records, dropping whole finished jobs from the oldest end,
//! and the store drops their rows in the same commit. Checked against a model over
//! random sequences of creations, completions, cancellations, expiries and restarts.

mod job_support;

use job_support::{Rows, answer_all, reboot_over_own_devices};
use proptest::prelude::*;
use std::time::{Duration, Instant};
use twinhub::job::{
    CancelMode, EngineConfig, HistoryCursor, HistoryFilter, JobEngine, JobId, JobSpec,
};
use twinhub::store::{Store, StoreConfig};
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceReply, RegistrationInfo};
use twinhub::{DeviceId, Timestamp};

const WALL0: u64 = 1_700_000_000_000;

fn config(retain_jobs: usize, retain_children: u64) -> EngineConfig {
    EngineConfig {
        retain_jobs,
        retain_children,
        ..EngineConfig::default()
    }
}

fn wall(t0: Instant, now: Instant) -> Timestamp {
    Timestamp::from_millis(WALL0 + (now - t0).as_millis() as u64)
}

fn registered(device: &DeviceId) -> DeviceEvent {
    DeviceEvent::Registered {
        device: device.clone(),
        registration: RegistrationInfo {
            endpoint: device.to_string(),
            registration_id: "r".into(),
            lifetime: 300,
            lwm2m_version: "1.1".into(),
            binding: "U".into(),
            queue_mode: false,
            objects: vec![],
            address: None,
            psk_identity: None,
        },
    }
}

/// A reboot job over `n` devices of its own (no device is shared between jobs).
fn reboot_job(id: &str, n: usize, expiry: Option<Duration>) -> JobSpec {
    reboot_over_own_devices(id, n).max_execution_time(expiry)
}

#[test]
fn the_oldest_finished_jobs_are_dropped_and_the_history_starts_after_them() {
    let t0 = Instant::now();
    let mut e = JobEngine::new(config(3, 1_000), t0, wall(t0, t0));
    e.enable_journal();
    let mut rows = Rows::default();
    for i in 0..6 {
        e.create(t0, reboot_job(&format!("j{i}"), 2, None)).unwrap();
        answer_all(&mut e, t0);
        rows.apply(e.take_journal());
        e.validate().unwrap();
    }
    let kept: Vec<String> = e.job_ids().map(|j| j.to_string()).collect();
    assert_eq!(kept, ["j3", "j4", "j5"]);
    assert_eq!(
        (e.kept_jobs(), e.kept_children(), e.dropped_jobs()),
        (3, 6, 3)
    );
    assert!(e.job(&JobId::new("j0").unwrap()).is_none());
    // A cursor from the very start continues at the oldest record kept.
    let page = e
        .history(&HistoryFilter::default(), HistoryCursor::default(), 100)
        .unwrap();
    assert_eq!(page.records.len(), 9);
    assert_eq!(page.records[0].job_id, "j3");
    assert_eq!(e.history_snapshot().len(), 9);
    // The rows a store would hold are the kept ones, and they restore the same history.
    assert_eq!((rows.parents.len(), rows.children.len()), (3, 6));
    let restored = JobEngine::restore(
        config(3, 1_000),
        t0,
        wall(t0, t0),
        rows.parents.clone(),
        rows.children.clone(),
    )
    .unwrap();
    restored.validate().unwrap();
    assert_eq!(
        restored.records().collect::<Vec<_>>(),
        e.records().collect::<Vec<_>>()
    );
    // A dropped job's id may be used again.
    e.create(t0, reboot_job("j0", 1, None)).unwrap();
}

#[test]
fn an_unfinished_job_holds_back_dropping_until_it_finishes() {
    let t0 = Instant::now();
    let mut e = JobEngine::new(config(2, 1_000), t0, wall(t0, t0));
    e.create(t0, reboot_job("slow", 1, None)).unwrap();
    let slow_ops: Vec<DeviceOp> = std::iter::from_fn(|| e.poll_op()).collect();
    for i in 0..4 {
        e.create(t0, reboot_job(&format!("j{i}"), 1, None)).unwrap();
        answer_all(&mut e, t0);
    }
    assert_eq!(
        e.kept_jobs(),
        5,
        "nothing older than the running job is dropped"
    );
    for op in slow_ops {
        e.handle_event(
            t0,
            &DeviceEvent::Response {
                op: op.id,
                device: op.device.clone(),
                result: Ok(DeviceReply::Done),
            },
        );
    }
    e.create(t0, reboot_job("last", 1, None)).unwrap();
    let kept: Vec<String> = e.job_ids().map(|j| j.to_string()).collect();
    assert_eq!(kept, ["j3", "last"]);
    e.validate().unwrap();
}

#[test]
fn the_newest_job_is_kept_whatever_its_size() {
    let t0 = Instant::now();
    let mut e = JobEngine::new(config(10, 4), t0, wall(t0, t0));
    e.create(t0, reboot_job("small", 2, None)).unwrap();
    answer_all(&mut e, t0);
    e.create(t0, reboot_job("big", 9, None)).unwrap();
    assert_eq!(
        e.job_ids().map(|j| j.to_string()).collect::<Vec<_>>(),
        ["big"]
    );
    assert_eq!(e.kept_children(), 9);
    e.validate().unwrap();
}

#[test]
fn jobs_that_ended_longer_ago_than_retain_for_are_dropped() {
    let t0 = Instant::now();
    let config = EngineConfig {
        retain_for: Some(Duration::from_secs(60)),
        ..EngineConfig::default()
    };
    let mut e = JobEngine::new(config, t0, wall(t0, t0));
    e.create(t0, reboot_job("j0", 1, None)).unwrap();
    answer_all(&mut e, t0);
    let t10 = t0 + Duration::from_secs(10);
    e.create(t10, reboot_job("j1", 1, None)).unwrap();
    answer_all(&mut e, t10);
    let ids = |e: &JobEngine| e.job_ids().map(|j| j.to_string()).collect::<Vec<_>>();
    e.handle_timeout(t0 + Duration::from_secs(59));
    assert_eq!(ids(&e), ["j0", "j1"]);
    // Timers running past j0's end + 60 s drop it; j1, the newest, stays.
    e.handle_timeout(t0 + Duration::from_secs(61));
    assert_eq!(ids(&e), ["j1"]);
    e.handle_timeout(t0 + Duration::from_secs(200));
    assert_eq!(ids(&e), ["j1"], "the newest job is always kept");
    let t200 = t0 + Duration::from_secs(200);
    e.create(t200, reboot_job("j2", 1, None)).unwrap();
    assert_eq!(ids(&e), ["j2"]);
    e.validate().unwrap();
}

/// `retain_for` is not bounded by `MAX_CONFIG_DURATION` as the engine's time-outs are:
/// it is only ever added to the wall-clock time a job ended (saturating at
/// `Timestamp::MAX`), never to the engine's clock, and no timer is set from it. So a
/// retention past a year is taken and works (two years: a job that ended two years and a
/// millisecond ago is dropped, one that ended exactly two years ago is not), and
/// `Duration::MAX` keeps jobs regardless of age, with no panic in creation or timers.
#[test]
fn retain_for_may_be_longer_than_a_year_and_duration_max_keeps_jobs_for_good() {
    let year = twinhub::MAX_CONFIG_DURATION;
    let ids = |e: &JobEngine| e.job_ids().map(|j| j.to_string()).collect::<Vec<_>>();
    for (keep, drops) in [(2 * year, true), (Duration::MAX, false)] {
        let config = EngineConfig {
            retain_for: Some(keep),
            ..EngineConfig::default()
        };
        assert_eq!(config.validate(), Ok(()), "{keep:?}");
        let t0 = Instant::now();
        let mut e = JobEngine::new(config, t0, wall(t0, t0));
        e.create(t0, reboot_job("j0", 1, None)).unwrap();
        answer_all(&mut e, t0);
        e.create(t0, reboot_job("j1", 1, None)).unwrap();
        let at_bound = t0 + 2 * year;
        e.handle_timeout(at_bound);
        assert_eq!(ids(&e), ["j0", "j1"], "{keep:?}: ended exactly 2 years ago");
        let past = at_bound + Duration::from_millis(1);
        e.handle_timeout(past);
        e.create(past, reboot_job("j2", 1, None)).unwrap();
        let kept: &[&str] = if drops {
            &["j1", "j2"]
        } else {
            &["j0", "j1", "j2"]
        };
        assert_eq!(ids(&e), kept, "{keep:?}");
        e.validate().unwrap();
    }
}

#[test]
fn timers_of_dropped_jobs_never_fire() {
    let t0 = Instant::now();
    let mut e = JobEngine::new(config(1, 1_000), t0, wall(t0, t0));
    // Finished jobs whose expiry timers are still queued, and a scheduled job cancelled
    // before its start.
    for i in 0..3 {
        e.create(
            t0,
            reboot_job(&format!("j{i}"), 1, Some(Duration::from_secs(10))),
        )
        .unwrap();
        answer_all(&mut e, t0);
    }
    let later = JobSpec {
        start_at: Some(wall(t0, t0 + Duration::from_secs(5))),
        ..reboot_job("scheduled", 1, None)
    };
    e.create(t0, later).unwrap();
    e.cancel(t0, &JobId::new("scheduled").unwrap(), CancelMode::Abandon)
        .unwrap();
    e.create(t0, reboot_job("last", 1, None)).unwrap();
    assert_eq!(e.kept_jobs(), 1);
    e.handle_timeout(t0 + Duration::from_secs(60));
    e.validate().unwrap();
    assert_eq!(e.dropped_jobs(), 4);
}

#[test]
fn the_store_deletes_the_rows_of_dropped_jobs_in_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    {
        let (mut store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let mut e = store.load_jobs(config(2, 1_000), t0, wall(t0, t0)).unwrap();
        for i in 0..5 {
            e.create(t0, reboot_job(&format!("j{i}"), 3, None)).unwrap();
            answer_all(&mut e, t0);
            store.commit_with_jobs(&registry, &mut e).unwrap();
        }
    }
    let (store, _) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    // A larger retention when opening again brings nothing back: the rows are gone.
    let e = store
        .load_jobs(config(100, 1_000), t0, wall(t0, t0))
        .unwrap();
    e.validate().unwrap();
    let kept: Vec<String> = e.job_ids().map(|j| j.to_string()).collect();
    assert_eq!(kept, ["j3", "j4"]);
    assert_eq!(e.kept_children(), 6);
    // Retention that shrank while the hub was down applies when the jobs are loaded.
    let e = store.load_jobs(config(1, 1_000), t0, wall(t0, t0)).unwrap();
    assert_eq!(
        e.job_ids().map(|j| j.to_string()).collect::<Vec<_>>(),
        ["j4"]
    );
}

// ---- the model ----

#[derive(Clone, Debug)]
enum Op {
    Create { devices: usize, expiry: bool },
    Finish(usize),
    Cancel(usize),
    Advance,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..=4, any::<bool>()).prop_map(|(devices, expiry)| Op::Create { devices, expiry }),
        3 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::Advance),
        1 => Just(Op::Restart),
    ]
}

struct ModelJob {
    id: String,
    children: u64,
    finished: bool,
    expires: Option<Instant>,
}

struct Model {
    jobs: Vec<ModelJob>,
    retain_jobs: usize,
    retain_children: u64,
}

impl Model {
    fn retain(&mut self) {
        loop {
            let children: u64 = self.jobs.iter().map(|j| j.children).sum();
            if self.jobs.len() > 1
                && (self.jobs.len() > self.retain_jobs || children > self.retain_children)
                && self.jobs[0].finished
            {
                self.jobs.remove(0);
            } else {
                break;
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        for j in &mut self.jobs {
            if j.expires.is_some_and(|t| t <= now) {
                j.finished = true;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn retention_matches_the_model(
        retain_jobs in 1usize..=4,
        retain_children in 1u64..=10,
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let t0 = Instant::now();
        let cfg = config(retain_jobs, retain_children);
        let mut now = t0;
        let mut e = JobEngine::new(cfg.clone(), t0, wall(t0, t0));
        e.enable_journal();
        let mut rows = Rows::default();
        let mut model = Model { jobs: Vec::new(), retain_jobs, retain_children };
        let mut next = 0;
        let mut inflight: Vec<DeviceOp> = Vec::new();
        for op in ops {
            match op {
                Op::Create { devices, expiry } => {
                    let id = format!("j{next}");
                    next += 1;
                    let expiry = expiry.then_some(Duration::from_secs(30));
                    e.create(now, reboot_job(&id, devices, expiry)).unwrap();
                    model.jobs.push(ModelJob {
                        id,
                        children: devices as u64,
                        finished: false,
                        expires: expiry.map(|d| now + d),
                    });
                    model.retain();
                }
                Op::Finish(i) | Op::Cancel(i) => {
                    let open: Vec<usize> =
                        (0..model.jobs.len()).filter(|&k| !model.jobs[k].finished).collect();
                    if open.is_empty() {
                        continue;
                    }
                    let k = open[i % open.len()];
                    let job = &mut model.jobs[k];
                    let id = JobId::new(&job.id).unwrap();
                    if matches!(op, Op::Cancel(_)) {
                        e.cancel(now, &id, CancelMode::Abandon).unwrap();
                    } else {
                        // Answer this job's operations in flight; after a restart the
                        // device's registration counts as the reboot.
                        let prefix = format!("{}-d", job.id);
                        inflight.extend(std::iter::from_fn(|| e.poll_op()));
                        let (mine, rest) = inflight
                            .into_iter()
                            .partition(|o: &DeviceOp| o.device.as_str().starts_with(&prefix));
                        inflight = rest;
                        for op in mine {
                            e.handle_event(now, &DeviceEvent::Response {
                                op: op.id,
                                device: op.device.clone(),
                                result: Ok(DeviceReply::Done),
                            });
                        }
                        for d in 0..job.children {
                            let dev = DeviceId::new(&format!("{prefix}{d}")).unwrap();
                            e.handle_event(now, &registered(&dev));
                        }
                    }
                    job.finished = true;
                }
                Op::Advance => {
                    now += Duration::from_secs(40);
                    e.handle_timeout(now);
                    model.expire(now);
                }
                Op::Restart => {
                    inflight.clear();
                    rows.apply(e.take_journal());
                    e = JobEngine::restore(
                        cfg.clone(),
                        now,
                        wall(t0, now),
                        rows.parents.clone(),
                        rows.children.clone(),
                    )
                    .unwrap();
                    model.retain();
                }
            }
            // Everything unfinished in the model is unfinished in the engine, and the
            // other way round.
            for j in &model.jobs {
                let state = e.job(&JobId::new(&j.id).unwrap()).map(|r| r.status.is_terminal());
                prop_assert_eq!(state, Some(j.finished), "job {}", &j.id);
            }
            rows.apply(e.take_journal());
            prop_assert!(e.validate().is_ok(), "{:?}", e.validate());
            let kept: Vec<String> = e.job_ids().map(|j| j.to_string()).collect();
            let want: Vec<String> = model.jobs.iter().map(|j| j.id.clone()).collect();
            prop_assert_eq!(&kept, &want);
            let children: u64 = model.jobs.iter().map(|j| j.children).sum();
            prop_assert_eq!(e.kept_children() as u64, children);
            prop_assert_eq!(rows.parents.len(), want.len());
            prop_assert_eq!(rows.children.len() as u64, children);
            let records = e
                .history(&HistoryFilter::default(), HistoryCursor::default(), 1_000)
                .unwrap();
            prop_assert_eq!(records.records.len() as u64, want.len() as u64 + children);
        }
    }
}
