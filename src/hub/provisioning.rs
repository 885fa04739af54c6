//! The twins that auto-provisioning created, so that they neither pile up nor outlive
//! the devices that registered once.
//!
//! With [`HubConfig::auto_provision`](super::HubConfig::auto_provision) any endpoint name
//! may register and gets a twin. Two bounds keep a stream of made-up names from holding
//! memory forever:
//!
//! - **A count**: at most [`HubConfig::auto_provision_limit`](super::HubConfig) such twins
//!   exist at once (default 10,000). An unknown device beyond it gets 4.03 (rejected as
//!   unknown) until one goes; devices the service created are never counted or refused.
//!   A transport without the registration gate (the in-memory fleet) cannot refuse a
//!   device: past the limit, the device is registered there without a twin, until its
//!   next Update, when the hub ends the registration (as it ends every registration
//!   whose twin is gone); it registers again and gets a twin once a place is free.
//! - **An age**: a twin auto-provisioning created and the service never adopted (no tags,
//!   no service properties, no credentials) is removed
//!   [`HubConfig::auto_provision_expiry`](super::HubConfig) after its registration ended
//!   (de-registered or expired; default 24 h); the name then no longer counts.
//!
//! A twin the service adopted (gave it tags, a service property or credentials) is kept,
//! and its name stops counting at once when the write goes through the hub, or at the
//! hub's next sweep (within a second) when it went through
//! [`Hub::registry`](super::Hub::registry); so does the name of a twin the service
//! removed. A removed device that registers again is auto-provisioned again, as new.

use crate::twin::DeviceId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a name admitted by the authorizer may wait for its twin before its place is
/// given back (a registration that was refused after admission, e.g. the registration
/// table being full).
const ADMISSION_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Admitted at registration; its twin is not created yet.
    Admitted(Instant),
    /// Registered now.
    Connected,
    /// Its registration ended then.
    Disconnected(Instant),
}

/// The auto-provisioned twins, shared between the registration gate (which admits new
/// names, on the transport's thread) and the hub thread (which creates and expires twins).
#[derive(Debug)]
pub(crate) struct AutoProvisioned {
    limit: usize,
    expiry: Duration,
    names: Mutex<HashMap<DeviceId, State>>,
}

/// What a sweep found about one auto-provisioned name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Remove its twin (if still unadopted) and forget the name.
    Expired,
    /// Admitted long ago and never registered: forget the name.
    Abandoned,
}

impl AutoProvisioned {
    pub(crate) fn new(limit: usize, expiry: Duration) -> Self {
        AutoProvisioned {
            limit,
            expiry,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// The table for a hub with these settings, shared by its gate and its thread.
    pub(crate) fn for_config(config: &super::HubConfig) -> Arc<Self> {
        Arc::new(Self::new(
            config.auto_provision_limit,
            config.auto_provision_expiry,
        ))
    }

    fn names(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, State>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an unknown device may register (and so be auto-provisioned): yes while
    /// fewer than the limit are held, or if the name is already one of them.
    pub(crate) fn admit(&self, device: &DeviceId, now: Instant) -> bool {
        let mut names = self.names();
        if names.contains_key(device) {
            return true;
        }
        if names.len() >= self.limit {
            return false;
        }
        names.insert(device.clone(), State::Admitted(now));
        true
    }

    /// The device's twin was auto-provisioned (or it registered again).
    pub(crate) fn connected(&self, device: &DeviceId) {
        if let Some(s) = self.names().get_mut(device) {
            *s = State::Connected;
        }
    }

    /// The device's registration ended.
    pub(crate) fn disconnected(&self, device: &DeviceId, now: Instant) {
        if let Some(s) = self.names().get_mut(device) {
            *s = State::Disconnected(now);
        }
    }

    /// Forgets a name: the service adopted or removed its twin.
    pub(crate) fn forget(&self, device: &DeviceId) {
        self.names().remove(device);
    }

    /// Forgets the names whose twin exists no longer or was adopted (`kept` says false):
    /// those of devices that registered, not those admitted and waiting for their twin.
    pub(crate) fn retain(&self, mut kept: impl FnMut(&DeviceId) -> bool) {
        self.names()
            .retain(|d, s| matches!(s, State::Admitted(_)) || kept(d));
    }

    /// The names whose time is up; the caller removes the unadopted twins and forgets
    /// them all.
    pub(crate) fn due(&self, now: Instant) -> Vec<(DeviceId, Verdict)> {
        self.names()
            .iter()
            .filter_map(|(d, s)| match *s {
                State::Disconnected(at) if now.saturating_duration_since(at) >= self.expiry => {
                    Some((d.clone(), Verdict::Expired))
                }
                State::Admitted(at) if now.saturating_duration_since(at) >= ADMISSION_TIMEOUT => {
                    Some((d.clone(), Verdict::Abandoned))
                }
                _ => None,
            })
            .collect()
    }

    /// Auto-provisioned names held now.
    pub(crate) fn len(&self) -> usize {
        self.names().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    #[test]
    fn the_count_holds_and_names_come_back_as_they_go() {
        let t0 = Instant::now();
        let p = AutoProvisioned::new(3, Duration::from_secs(10));
        for i in 0..3 {
            assert!(p.admit(&dev(&format!("d{i}")), t0));
        }
        assert!(
            !p.admit(&dev("d3"), t0),
            "at the limit a new name is refused"
        );
        assert!(p.admit(&dev("d1"), t0), "a held name is still admitted");
        assert_eq!(p.len(), 3);
        p.connected(&dev("d0"));
        p.connected(&dev("d1"));
        p.disconnected(&dev("d0"), t0);
        // d2 was admitted and never registered; d0 disconnected at t0.
        assert!(p.due(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(
            p.due(t0 + Duration::from_secs(10)),
            vec![(dev("d0"), Verdict::Expired)]
        );
        let mut late = p.due(t0 + ADMISSION_TIMEOUT);
        late.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        assert_eq!(
            late,
            vec![
                (dev("d0"), Verdict::Expired),
                (dev("d2"), Verdict::Abandoned)
            ]
        );
        p.forget(&dev("d0"));
        assert!(p.admit(&dev("d3"), t0), "a forgotten name frees a place");
    }
}
