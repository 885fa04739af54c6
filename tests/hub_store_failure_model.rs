//! Random sequences of device events, with commits failing at random between them,
//! against a naive model: whatever fails, the hub ends where the events lead (in memory
//! and on disk), and subscribers get every notification exactly once, in order. A
//! failure is retried at once (one at a time, so the hub never backs off and a case
//! takes well under a second).

#![cfg(all(feature = "fuzzing", feature = "memory-fleet"))]

mod hub_support;

use hub_support::{durable_hub, push};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use twinhub::hub::{HubConfig, HubEvent, SubscribeOptions};
use twinhub::registry::{ChangeKind, Registry};
use twinhub::store::{Store, StoreConfig};
use twinhub::transport::{DeviceEvent, RegistrationInfo};
use twinhub::twin::{ConnectionState, Scalar};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue};

const DEVICES: usize = 3;

#[derive(Clone, Debug)]
enum Step {
    /// A notification of a value no earlier step reported (a re-report of an equal
    /// value within the same millisecond changes nothing, so is not published).
    Notify(usize),
    Register(usize),
    Deregister(usize),
    /// The next commit that writes fails (and, if `rebuild`, the rebuild after it: the
    /// store is left poisoned, memory holding what it refused, until the next try).
    FailNextCommit {
        rebuild: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..DEVICES).prop_map(Step::Notify),
        1 => (0..DEVICES).prop_map(Step::Register),
        1 => (0..DEVICES).prop_map(Step::Deregister),
        2 => any::<bool>().prop_map(|rebuild| Step::FailNextCommit { rebuild }),
    ]
}

fn device(d: usize) -> DeviceId {
    DeviceId::new(&format!("d{d}")).unwrap()
}

fn registered(d: usize) -> DeviceEvent {
    DeviceEvent::Registered {
        device: device(d),
        registration: RegistrationInfo {
            endpoint: device(d).as_str().into(),
            registration_id: format!("r{d}"),
            lifetime: 300,
            lwm2m_version: "1.1".into(),
            binding: "U".into(),
            queue_mode: false,
            objects: vec![Lwm2mPath::instance(3, 0), Lwm2mPath::instance(1, 0)],
            address: None,
            psk_identity: None,
        },
    }
}

fn notified(d: usize, v: i64) -> DeviceEvent {
    let battery = Lwm2mPath::resource(3, 0, 9);
    DeviceEvent::Notification {
        device: device(d),
        registration_id: "r1".into(),
        path: battery,
        content: Content::single(battery, ResourceValue::Integer(v)),
    }
}

/// What the events lead to, per device: the last battery level reported and whether it
/// is connected; and every level reported, in order.
#[derive(Default, PartialEq, Debug)]
struct Model {
    battery: BTreeMap<String, Scalar>,
    connected: BTreeMap<String, bool>,
    reported: BTreeMap<String, Vec<Scalar>>,
}

fn observe(registry: &Registry) -> (BTreeMap<String, Scalar>, BTreeMap<String, bool>) {
    let mut battery = BTreeMap::new();
    let mut connected = BTreeMap::new();
    for d in 0..DEVICES {
        let name = device(d).as_str().to_owned();
        let twin = registry.get(&name).unwrap().to_twin();
        if let Some(p) = twin.device_properties.get("BatteryLevel") {
            battery.insert(name.clone(), p.value.clone());
        }
        connected.insert(name, twin.connection_state == ConnectionState::Connected);
    }
    (battery, connected)
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let devices: Vec<DeviceId> = (0..DEVICES).map(device).collect();
    let (hub, store, script, dir) =
        durable_hub(&devices.iter().collect::<Vec<_>>(), HubConfig::default());
    let mut model = Model::default();
    for d in &devices {
        model.connected.insert(d.as_str().to_owned(), false);
    }
    let feed = hub.subscribe(SubscribeOptions::twins_only()).unwrap();
    // A failure is injected right before the next event that surely writes (a
    // notification or a registration), one at a time: retried at once, never backed off
    // from.
    let mut fail_next: Option<bool> = None;
    for (i, step) in steps.iter().enumerate() {
        if let Some(rebuild) = fail_next
            && matches!(step, Step::Notify(..) | Step::Register(..))
        {
            let mut store = store.lock();
            store.fail_next_commit();
            if rebuild {
                store.fail_next_reload();
            }
            fail_next = None;
        }
        let event = match *step {
            Step::FailNextCommit { rebuild } => {
                fail_next = Some(rebuild);
                continue;
            }
            Step::Notify(d) => {
                let v = i as i64;
                let name = device(d).as_str().to_owned();
                model.battery.insert(name.clone(), Scalar::from(v));
                model
                    .reported
                    .entry(name)
                    .or_default()
                    .push(Scalar::from(v));
                notified(d, v)
            }
            Step::Register(d) => {
                model.connected.insert(device(d).as_str().to_owned(), true);
                registered(d)
            }
            Step::Deregister(d) => {
                model.connected.insert(device(d).as_str().to_owned(), false);
                DeviceEvent::Deregistered { device: device(d) }
            }
        };
        push(&script, event);
        // Applied and committed (a failed commit is retried at once) before the next.
        // The hub is watched for the state the model expects (every notification's value
        // is new, so the state tells that it was applied), not for counters of held
        // events, which the hub updates after it releases its locks.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (taken, durable, state) = {
                let reg = hub.registry().read();
                let committed = store.lock().committed_seq();
                (
                    script.lock().unwrap().events.is_empty(),
                    committed == reg.last_seq(),
                    observe(&reg),
                )
            };
            if taken && durable && state == (model.battery.clone(), model.connected.clone()) {
                break;
            }
            prop_assert!(
                Instant::now() < deadline,
                "the hub did not reach the model's state after {:?}: {:?}",
                step,
                state
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let seen = observe(&hub.registry().read());
    let dropped = hub.stats().dropped_events;
    let mut reported: BTreeMap<String, Vec<Scalar>> = BTreeMap::new();
    let take = |reported: &mut BTreeMap<String, Vec<Scalar>>| {
        while let Ok(event) = feed.try_recv() {
            if let HubEvent::Twin(c) = event
                && let ChangeKind::DeviceProperty { value, .. } = c.kind
            {
                reported
                    .entry(c.device.as_str().to_owned())
                    .or_default()
                    .push(value);
            }
        }
    };
    // The hub publishes after it released its locks: wait (bounded) for what the model
    // expects, then 50 ms more for anything published twice.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        take(&mut reported);
        if reported == model.reported || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    take(&mut reported);
    hub.stop();
    drop(hub);
    prop_assert_eq!(dropped, 0);
    prop_assert_eq!(&seen, &(model.battery.clone(), model.connected.clone()));
    prop_assert_eq!(&reported, &model.reported, "notifications published");
    drop(store);
    let (_store, registry) = Store::open(dir.path(), StoreConfig::default()).unwrap();
    prop_assert_eq!(
        observe(&registry).0,
        model.battery,
        "on disk after a restart"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn device_events_end_where_the_model_does_whatever_commits_fail(
        steps in prop::collection::vec(step(), 1..24)
    ) {
        run(&steps)?;
    }
}
