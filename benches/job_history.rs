//! Job history queries at 100,000 children (issue #17), as `Hub::query_jobs` runs them:
//! through a `LiveHistory` beside the job engine's lock, which event routing also takes.
//!
//! Corpus: one reboot job over 100,000 devices (`dev-0000000` ..); every child started,
//! half answered (succeeded), half answered with an error (failed). Measured:
//! - `snapshot_build`: building the indexed snapshot from scratch (what every query paid
//!   before the snapshot was kept up to date, and what the first query still pays);
//! - `query_completed_children`: a whole history query, parse to result page (refresh
//!   with nothing changed, filter on status and parent, first 100 records);
//! - `query_under_routing`: the same query while another thread routes events into the
//!   engine (jobs of 2,000 devices created one after the other, their answers fed in
//!   batches of 100 under the engine's lock, a batch per millisecond): each query first
//!   applies the records that changed since the previous one;
//! - `routing_batch_while_querying`: the router's side: one batch of 100 answers (lock,
//!   feed, unlock) while another thread queries without pause. A query never holds the
//!   engine's lock except to take the changed records.
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twinhub::job::{EngineConfig, JobEngine, JobId, JobSpec, JobType, LiveHistory};
use twinhub::query::{QueryOptions, parse};
use twinhub::transport::{DeviceError, DeviceEvent, DeviceOp, DeviceReply};
use twinhub::{DeviceId, Timestamp};

const CHILDREN: usize = 100_000;
const ROUTED_DEVICES: usize = 2_000;
const BATCH: usize = 100;

fn reboot(id: &str, ids: Vec<DeviceId>) -> JobSpec {
    JobSpec::new(
        JobId::new(id).unwrap(),
        JobType::Reboot {
            wait_for_registration: false,
        },
        ids,
    )
}

fn answer(op: &DeviceOp, ok: bool) -> DeviceEvent {
    DeviceEvent::Response {
        op: op.id,
        device: op.device.clone(),
        result: if ok {
            Ok(DeviceReply::Done)
        } else {
            Err(DeviceError::NotFound)
        },
    }
}

fn engine() -> JobEngine {
    let t0 = Instant::now();
    let mut jobs = JobEngine::new(EngineConfig::default(), t0, Timestamp::EPOCH);
    let ids: Vec<DeviceId> = (0..CHILDREN)
        .map(|i| DeviceId::new(&format!("dev-{i:07}")).unwrap())
        .collect();
    jobs.create(t0, reboot("big", ids)).unwrap();
    let ops: Vec<_> = std::iter::from_fn(|| jobs.poll_op()).collect();
    for (i, op) in ops.iter().enumerate() {
        jobs.handle_event(t0, &answer(op, i % 2 == 0));
    }
    jobs
}

/// Routes events until `stop`: reboot jobs over their own devices, answered in batches.
fn route(jobs: &Mutex<JobEngine>, stop: &AtomicBool) {
    let ids: Vec<DeviceId> = (0..ROUTED_DEVICES)
        .map(|i| DeviceId::new(&format!("routed-{i:05}")).unwrap())
        .collect();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let ops: Vec<DeviceOp> = {
            let mut e = jobs.lock().unwrap();
            e.create(now, reboot(&format!("routed-{k}"), ids.clone()))
                .unwrap();
            std::iter::from_fn(|| e.poll_op()).collect()
        };
        k += 1;
        for batch in ops.chunks(BATCH) {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            {
                let mut e = jobs.lock().unwrap();
                for op in batch {
                    e.handle_event(now, &answer(op, true));
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn history(c: &mut Criterion) {
    let query = r#"{"filter": {"type": "logical", "logicalOperator": "and", "filters": [
        {"type": "comparison", "comparisonOperator": "eq",
         "property": {"name": "ParentJobId", "type": "default"}, "value": "big"},
        {"type": "comparison", "comparisonOperator": "eq",
         "property": {"name": "Status", "type": "default"}, "value": "completed"}]}}"#;
    let run = |live: &LiveHistory, jobs: &Mutex<JobEngine>| {
        let expr = parse(query).unwrap();
        let page = live.query(jobs, &expr, &QueryOptions::page(100)).unwrap();
        assert_eq!(page.result.len(), 100);
        black_box(page.result.len())
    };
    let mut g = c.benchmark_group("job_history_100k");
    g.sample_size(10);
    {
        let jobs = engine();
        g.bench_function("snapshot_build", |b| {
            b.iter(|| black_box(jobs.history_snapshot()))
        });
    }
    let jobs = Arc::new(Mutex::new(engine()));
    let live = Arc::new(LiveHistory::new());
    g.sample_size(50);
    g.bench_function("query_completed_children", |b| b.iter(|| run(&live, &jobs)));
    let stop = Arc::new(AtomicBool::new(false));
    let router = {
        let (jobs, stop) = (Arc::clone(&jobs), Arc::clone(&stop));
        std::thread::spawn(move || route(&jobs, &stop))
    };
    g.bench_function("query_under_routing", |b| b.iter(|| run(&live, &jobs)));
    stop.store(true, Ordering::Relaxed);
    router.join().unwrap();

    // The router's side: a batch of answers while queries run without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let querier = {
        let (jobs, live, stop) = (Arc::clone(&jobs), Arc::clone(&live), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                run(&live, &jobs);
            }
        })
    };
    let ids: Vec<DeviceId> = (0..ROUTED_DEVICES)
        .map(|i| DeviceId::new(&format!("batch-{i:05}")).unwrap())
        .collect();
    let mut pending: Vec<DeviceOp> = Vec::new();
    let mut k = 0u64;
    g.bench_function("routing_batch_while_querying", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if pending.is_empty() {
                    // A new job once the last one's answers are all in (not timed).
                    let mut e = jobs.lock().unwrap();
                    e.create(Instant::now(), reboot(&format!("batch-{k}"), ids.clone()))
                        .unwrap();
                    k += 1;
                    pending.extend(std::iter::from_fn(|| e.poll_op()));
                }
                let n = pending.len().min(BATCH);
                let batch: Vec<DeviceOp> = pending.drain(..n).collect();
                let start = Instant::now();
                let mut e = jobs.lock().unwrap();
                for op in &batch {
                    e.handle_event(start, &answer(op, true));
                }
                drop(e);
                spent += start.elapsed();
            }
            spent
        })
    });
    stop.store(true, Ordering::Relaxed);
    querier.join().unwrap();
    g.finish();
}

criterion_group!(benches, history);
criterion_main!(benches);
