//! proptest over random event orders for the job state machines.
//!
//! The scripts drive `twinhub::fuzzing::job_events`, which builds a job from the first
//! bytes and then feeds events in any order (answers, errors, time-outs, registrations,
//! notifications, time jumps, cancels, a second job on the same devices), checking after
//! every event that the engine is consistent, that no child or parent leaves a terminal
//! status, that a parent is terminal only once all its children are, and at the end that
//! every job has ended.

#![cfg(feature = "fuzzing")]

use proptest::prelude::*;
use std::time::{Duration, Instant};
use twinhub::job::{
    ChildEvent, ChildState, EngineConfig, JobEngine, JobId, JobSpec, JobStatus, JobType,
    ParentEvent, ParentState,
};
use twinhub::transport::{DeviceEvent, DeviceReply};
use twinhub::{DeviceId, Timestamp};

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_event_orders_keep_the_engine_consistent(
        head in proptest::collection::vec(any::<u8>(), 4),
        script in proptest::collection::vec((0u8..10, any::<u8>(), any::<u8>()), 0..150),
    ) {
        let mut bytes = head;
        for (a, b, c) in script {
            bytes.extend([a, b, c]);
        }
        twinhub::fuzzing::job_events(&bytes);
    }

    /// The tables alone: any walk through them never leaves a terminal state.
    #[test]
    fn table_walks_never_leave_terminal_states(
        events in proptest::collection::vec(0usize..ChildEvent::ALL.len(), 0..40),
        parent_events in proptest::collection::vec(0usize..ParentEvent::ALL.len(), 0..20),
    ) {
        let mut s = ChildState::Pending;
        for e in events {
            let before = s;
            if let Some(next) = s.next(ChildEvent::ALL[e]) {
                prop_assert!(!before.is_terminal());
                s = next;
            }
        }
        let mut p = ParentState::Scheduled;
        for e in parent_events {
            if let Some(next) = p.next(ParentEvent::ALL[e]) {
                prop_assert!(!p.is_terminal());
                p = next;
            }
        }
    }

    /// Answers in any order: the parent completes exactly when the last child does.
    #[test]
    fn parent_completes_only_after_all_children(
        n in 1usize..12,
        order in proptest::collection::vec(any::<u16>(), 12),
    ) {
        let t0 = Instant::now();
        let mut engine = JobEngine::new(EngineConfig::default(), t0, Timestamp::from_millis(0));
        let devices: Vec<DeviceId> = (0..n).map(|i| DeviceId::new(&format!("d{i}")).unwrap()).collect();
        let job = JobId::new("j").unwrap();
        let reboot = JobType::Reboot { wait_for_registration: false };
        engine.create(t0, JobSpec::new(job.clone(), reboot, devices)).unwrap();
        let mut ops: Vec<_> = std::iter::from_fn(|| engine.poll_op()).collect();
        prop_assert_eq!(ops.len(), n);
        // Shuffle by the given keys.
        let mut keyed: Vec<_> = ops.drain(..).zip(order.iter().copied()).collect();
        keyed.sort_by_key(|(_, k)| *k);
        let now = t0 + Duration::from_secs(1);
        for (i, (op, _)) in keyed.into_iter().enumerate() {
            prop_assert_eq!(engine.job(&job).unwrap().status, JobStatus::Running);
            engine.handle_event(now, &DeviceEvent::Response {
                op: op.id,
                device: op.device,
                result: Ok(DeviceReply::Done),
            });
            let stats = engine.statistics(&job).unwrap();
            prop_assert_eq!(stats.succeeded, i as u64 + 1);
            prop_assert_eq!(stats.total(), n as u64);
        }
        prop_assert_eq!(engine.job(&job).unwrap().status, JobStatus::Completed);
        engine.validate().unwrap();
    }
}
