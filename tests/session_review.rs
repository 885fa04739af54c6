//! Hostile review of the changes c6c317e..fe93581 (EndRegistration, DTLS cookie exchange,
//! firmware update push/pull). Every test here failed on the code as reviewed because of
//! the mistake its comment names; each is fixed since. (The review's two firmware tests
//! are in tests/firmware_review.rs, on its harness.)

#![cfg(all(feature = "lwm2m", feature = "device"))]

use std::time::{Duration, Instant};

// ---------------------------------------------------------------- hub: EndRegistration

#[cfg(feature = "memory-fleet")]
mod hub_end_registration {
    use super::*;
    use twinhub::DeviceId;
    use twinhub::hub::{Hub, HubConfig};
    use twinhub::registry::Registry;
    use twinhub::transport::memory::{DeviceSpec, FaultProfile, MemoryConfig, MemoryTransport};
    use twinhub::twin::{ConnectionState, Twin};

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Checks: a twin created again right after `Hub::remove_device` of a connected twin
    /// is not marked as heard from (last activity) by the removal's EndRegistration.
    /// Why wrong: EndRegistration never reaches the device (the transport makes up its
    /// answer, `DeviceReply::Done`, src/lwm2m/server/mod.rs `end_registration`,
    /// src/transport/memory.rs `end_registration`), and the hub's own rule is that "a
    /// failure the transport made up ... is not the device being heard from"
    /// (src/hub/mod.rs ~line 1929). The hub applies the made-up `Ok(Done)` like any
    /// answer: `reg.set_last_activity(device, at)` on whatever twin now holds the id.
    /// Before the fix: the new twin, Disconnected and never heard from, shows a lastActivityTime
    /// (the moment the old registration was ended).
    #[test]
    fn ending_a_removed_twin_s_registration_is_no_activity_of_the_new_twin() {
        let mut transport = MemoryTransport::new(MemoryConfig::with_seed(7));
        let mut registry = Registry::new();
        let now = Instant::now();
        let id = DeviceId::new("dev-0").unwrap();
        let faults = FaultProfile {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(5),
            ..FaultProfile::default()
        };
        transport
            .add_device(now, DeviceSpec::new(id.clone()).faults(faults))
            .unwrap();
        registry.create(Twin::new(id.clone())).unwrap();
        let hub = Hub::with_transport(transport, registry, HubConfig::default());
        wait_until("connected", || {
            hub.twin("dev-0")
                .is_some_and(|t| t.connection_state == ConnectionState::Connected)
        });
        std::thread::sleep(Duration::from_millis(100));
        hub.remove_device("dev-0").unwrap();
        hub.create_device(Twin::new(id.clone())).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = hub.twin("dev-0").unwrap();
        assert_eq!(t.connection_state, ConnectionState::Disconnected);
        assert_eq!(
            t.last_activity_time, None,
            "the new twin was never heard from"
        );
        hub.stop();
    }
}
