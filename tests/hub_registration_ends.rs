//! The hub ending LWM2M registrations whose twins are gone, over a scripted transport:
//! orderings a real server produces only by chance (an Update answered just before the
//! end reached the server) and removals the registry's removal log cannot cover.

mod hub_support;

use hub_support::{
    Script, Scripted, answer_done, battery_level, push, register, submitted_where, wait_until,
};
use std::sync::{Arc, Mutex};
use twinhub::hub::{Hub, HubConfig};
use twinhub::registry::Registry;
use twinhub::transport::{DeviceEvent, DeviceOp, DeviceRequest};
use twinhub::twin::{ConnectionState, Twin};
use twinhub::{Content, DeviceId, Lwm2mPath, ResourceValue, Scalar};

fn hub_over(devices: &[&DeviceId]) -> (Hub, Arc<Mutex<Script>>) {
    let mut registry = Registry::new();
    for d in devices {
        registry.create(Twin::new((*d).clone())).unwrap();
    }
    let script = Arc::new(Mutex::new(Script::default()));
    let hub = Hub::with_transport(Scripted(script.clone()), registry, HubConfig::default());
    (hub, script)
}

/// `device`'s Update under its registration `r1` (what `register` registered).
fn updated(device: &DeviceId) -> DeviceEvent {
    match hub_support::registered_v(device, "1.0") {
        DeviceEvent::Registered {
            device,
            registration,
        } => DeviceEvent::RegistrationUpdated {
            device,
            registration,
        },
        _ => unreachable!(),
    }
}

/// The EndRegistrations the hub sent.
fn ends(script: &Mutex<Script>) -> Vec<DeviceOp> {
    submitted_where(script, |op| {
        matches!(op.request, DeviceRequest::EndRegistration { .. })
    })
}

/// Every event pushed before this one was applied: `marker` registers and is connected.
fn applied_so_far(hub: &Hub, script: &Mutex<Script>, marker: &DeviceId) {
    push(
        script,
        DeviceEvent::Deregistered {
            device: marker.clone(),
        },
    );
    wait_until("the marker's de-registration", || {
        hub.twin(marker.as_str()).unwrap().connection_state == ConnectionState::Disconnected
    });
    register(hub, script, marker);
}

/// A twin removed and created again while its device's Update was on its way: the
/// transport answered the Update (2.04) before the hub's end of the registration reached
/// it, so the Update comes before the end's answer. The new twin does not adopt the
/// registration being ended: it stays disconnected and holds none. Before, it took the
/// Update as its own and showed the device connected under a registration the transport
/// no longer held, until the device's next Update (4.04) made it register again.
#[test]
fn an_update_under_a_registration_being_ended_is_not_adopted_by_a_twin_created_again() {
    let d = DeviceId::new("reborn").unwrap();
    let marker = DeviceId::new("marker").unwrap();
    let (hub, script) = hub_over(&[&d, &marker]);
    register(&hub, &script, &d);
    register(&hub, &script, &marker);
    hub.remove_device("reborn").unwrap();
    // Sent by `remove_device`, or by the hub's tick if it took the removal first.
    wait_until("the end", || ends(&script).len() == 1);
    let sent = ends(&script);
    assert_eq!(sent.len(), 1, "{sent:?}");
    hub.create_device(Twin::new(d.clone())).unwrap();
    push(&script, updated(&d));
    answer_done(&script, &d, &sent[0]);
    applied_so_far(&hub, &script, &marker);
    let twin = hub.twin("reborn").unwrap();
    assert_eq!(twin.connection_state, ConnectionState::Disconnected);
    assert_eq!(twin.registration, None);
    // The device registers anew: the twin takes that registration.
    register(&hub, &script, &d);
    hub.stop();
}

/// A hub where `lost` and `marker` registered, then `lost`'s twin was removed along with
/// 4,200 others, straight in the registry: more removals than its log covers, so the
/// hub sends no end for `lost`'s registration (checked). Returns the hub, its script,
/// `lost`, `marker` and the others.
#[allow(clippy::type_complexity)]
fn lost_beyond_the_removal_log() -> (Hub, Arc<Mutex<Script>>, DeviceId, DeviceId, Vec<DeviceId>) {
    let lost = DeviceId::new("lost").unwrap();
    let marker = DeviceId::new("marker").unwrap();
    let others: Vec<DeviceId> = (0..4_200)
        .map(|i| DeviceId::new(&format!("other-{i}")).unwrap())
        .collect();
    let mut all: Vec<&DeviceId> = others.iter().collect();
    all.push(&lost);
    all.push(&marker);
    let (hub, script) = hub_over(&all);
    register(&hub, &script, &lost);
    register(&hub, &script, &marker);
    {
        let mut reg = hub.registry().write();
        reg.remove("lost").unwrap();
        for d in &others {
            reg.remove(d.as_str()).unwrap();
        }
    }
    applied_so_far(&hub, &script, &marker);
    assert!(
        ends(&script).is_empty(),
        "the removal log covered 4,201 removals"
    );
    (hub, script, lost, marker, others)
}

/// Removals the registry's log cannot cover (more than 4,096 between two of the hub's
/// looks) lose the ends of the removed twins' registrations: the transport keeps
/// answering the device's Updates. The hub ends such a registration at its next Update,
/// the twin being gone, once; an Update under a registration already being ended (its
/// twin removed through the hub) gets no second end.
#[test]
fn a_registration_whose_twin_is_gone_is_ended_at_its_next_update() {
    let (hub, script, lost, marker, _) = lost_beyond_the_removal_log();
    // The device's Update: its registration is ended, once.
    push(&script, updated(&lost));
    push(&script, updated(&lost));
    applied_so_far(&hub, &script, &marker);
    let sent = ends(&script);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].device, lost);
    assert_eq!(
        sent[0].request,
        DeviceRequest::EndRegistration {
            registration_id: "r1".into()
        }
    );
    // Its answer is the transport's; a late Update under the ended registration sends
    // nothing more.
    answer_done(&script, &lost, &sent[0]);
    push(&script, updated(&lost));
    applied_so_far(&hub, &script, &marker);
    assert_eq!(ends(&script).len(), 1);

    // A twin removed through the hub: its end goes at once; an Update that raced it
    // gets no second one.
    let d = DeviceId::new("removed").unwrap();
    hub.create_device(Twin::new(d.clone())).unwrap();
    register(&hub, &script, &d);
    hub.remove_device("removed").unwrap();
    wait_until("the end", || ends(&script).len() == 2);
    push(&script, updated(&d));
    applied_so_far(&hub, &script, &marker);
    assert_eq!(ends(&script).len(), 2);
    hub.stop();
}

/// A device whose twin is gone, with the removal's end lost, that only notifies (or
/// Sends, which arrives as a notification at `/`), its lifetime long: its registration
/// is ended at its first notification, once, as at an Update. Before, its notifications
/// were answered (ACKed, 2.04) and dropped, and it stayed registered until its lifetime
/// ran out.
#[test]
fn a_registration_whose_twin_is_gone_is_ended_at_its_next_notification_or_send() {
    let (hub, script, lost, marker, others) = lost_beyond_the_removal_log();
    let send = || DeviceEvent::Notification {
        device: lost.clone(),
        registration_id: "r1".into(),
        path: Lwm2mPath::ROOT,
        content: Content::single(Lwm2mPath::resource(3, 0, 9), ResourceValue::Integer(5)),
    };
    // Notifications and a Send in one batch, and more after: one end.
    push(&script, battery_level(&lost, 40));
    push(&script, send());
    applied_so_far(&hub, &script, &marker);
    let sent = ends(&script);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].device, lost);
    assert_eq!(
        sent[0].request,
        DeviceRequest::EndRegistration {
            registration_id: "r1".into()
        }
    );
    push(&script, send());
    applied_so_far(&hub, &script, &marker);
    answer_done(&script, &lost, &sent[0]);
    push(&script, battery_level(&lost, 39));
    applied_so_far(&hub, &script, &marker);
    assert_eq!(ends(&script).len(), 1);

    // A Send alone ends it too (another device, its twin removed the same way).
    let quiet = DeviceId::new("quiet").unwrap();
    hub.create_device(Twin::new(quiet.clone())).unwrap();
    register(&hub, &script, &quiet);
    {
        let mut reg = hub.registry().write();
        reg.remove("quiet").unwrap();
        for d in &others {
            let _ = reg.create(Twin::new(d.clone()));
        }
        for d in &others {
            reg.remove(d.as_str()).unwrap();
        }
    }
    applied_so_far(&hub, &script, &marker);
    assert_eq!(ends(&script).len(), 1, "the removal log lost this one too");
    push(
        &script,
        DeviceEvent::Notification {
            device: quiet.clone(),
            registration_id: "r1".into(),
            path: Lwm2mPath::ROOT,
            content: Content::default(),
        },
    );
    applied_so_far(&hub, &script, &marker);
    let sent = ends(&script);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].device, quiet);
    hub.stop();
}

/// A twin removed and created again while its device's notification was on its way:
/// the notification came under the registration being ended, and the new twin does not
/// take its values (as it does not take the registration's Updates).
#[test]
fn a_notification_under_a_registration_being_ended_is_not_applied_to_a_twin_created_again() {
    let d = DeviceId::new("reborn").unwrap();
    let marker = DeviceId::new("marker").unwrap();
    let (hub, script) = hub_over(&[&d, &marker]);
    register(&hub, &script, &d);
    register(&hub, &script, &marker);
    push(&script, battery_level(&d, 10));
    applied_so_far(&hub, &script, &marker);
    let battery = |hub: &Hub| {
        hub.twin("reborn")
            .unwrap()
            .device_properties
            .get("BatteryLevel")
            .map(|p| p.value.clone())
    };
    assert_eq!(
        battery(&hub),
        Some(Scalar::from(10)),
        "applied while current"
    );
    hub.remove_device("reborn").unwrap();
    wait_until("the end", || ends(&script).len() == 1);
    hub.create_device(Twin::new(d.clone())).unwrap();
    push(&script, battery_level(&d, 11));
    applied_so_far(&hub, &script, &marker);
    assert_eq!(battery(&hub), None);
    assert_eq!(ends(&script).len(), 1, "no second end");
    hub.stop();
}
