//! The hub's `coaps` listener and device credentials.
//!
//! A device's PSK credentials are part of its identity in the registry: the twin's
//! [`Authentication`] holds the identity and the key (the key is never serialized and
//! prints as `<redacted>`). The DTLS layer reads keys from a [`PskStore`] (identity ->
//! key and device), which the hub keeps in step with the twins: [`Hub::set_psk`] and
//! [`Hub::create_device`] write both (the key store last, once the twin is durable),
//! [`Hub::remove_psk`] and [`Hub::remove_device`] clear both, and [`Hub::bind_dtls`] fills
//! the store from the twins it starts with (an identity two twins claim, written around
//! the hub, for neither of them); callers read the key store through [`Hub::psk_store`],
//! which cannot write it. A session made with a rotated or removed key carries nothing
//! more once the change is applied (when the call returns): its records are refused, and
//! it is closed, with a close_notify to the device, within a quarter second (the UDP
//! driver's next turn), or at once if a datagram goes either way on it first. The
//! device's LWM2M registration stays until its lifetime runs out; to Update it, the device
//! must handshake with its current key.

use super::provisioning::AutoProvisioned;
use super::{Hub, HubConfig};
use crate::dtls::{
    CredentialsError, DtlsServer, DtlsStats, DtlsStatsHandle, PskCredentials, PskStore,
    PskStoreView,
};
use crate::lwm2m::server::UdpServer;
use crate::registry::{Registry, RegistryError, SharedRegistry};
use crate::twin::{Authentication, DeviceId, Twin, TwinError};
use std::net::ToSocketAddrs;

/// The coaps listener's shared parts.
pub(super) struct Secure {
    pub(super) store: PskStore,
    /// What callers get ([`Hub::psk_store`]): the store, read-only.
    view: PskStoreView,
    stats: DtlsStatsHandle,
}

impl Hub {
    /// Starts a hub with the bundled LWM2M server behind DTLS 1.2 (`coaps`, PSK,
    /// `TLS_PSK_WITH_AES_128_CCM_8`; conventionally port 5684). Only devices with
    /// credentials can complete a handshake, and a device registers only under the
    /// endpoint its identity belongs to (LWM2M 1.1: `ep` may be left out). The DTLS
    /// bounds are [`HubConfig::dtls`]. Credentials already in the registry's twins are
    /// loaded; add more with [`Hub::set_psk`]. Server settings that
    /// [`ServerConfig::validate`](crate::lwm2m::server::ServerConfig::validate) refuses
    /// are an [`InvalidInput`](std::io::ErrorKind::InvalidInput) error, as for
    /// [`Hub::bind_udp`].
    ///
    /// ```no_run
    /// use twinhub::dtls::{PskCredentials, PskKey};
    /// use twinhub::hub::{Hub, HubConfig};
    /// use twinhub::registry::Registry;
    /// use twinhub::twin::Twin;
    /// use twinhub::DeviceId;
    /// let mut registry = Registry::new();
    /// registry.create(Twin::new(DeviceId::new("pump-7")?))?;
    /// let hub = Hub::bind_dtls("0.0.0.0:5684", registry, HubConfig::default())?;
    /// hub.set_psk("pump-7", PskCredentials::new("pump-7", PskKey::new(vec![7; 16]))?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bind_dtls(
        addr: impl ToSocketAddrs,
        registry: Registry,
        config: HubConfig,
    ) -> std::io::Result<Hub> {
        Self::bind_secure(
            addr,
            SharedRegistry::new(registry),
            config,
            super::builder::ServerParts::default(),
        )
    }

    /// [`Hub::bind_dtls`] with a shared registry and the builder's server parts.
    pub(super) fn bind_secure(
        addr: impl ToSocketAddrs,
        registry: SharedRegistry,
        config: HubConfig,
        parts: super::builder::ServerParts,
    ) -> std::io::Result<Hub> {
        super::udp::checked_server_config(&config, true)?;
        super::udp::checked_store(&config, &registry)?;
        let store = PskStore::new();
        {
            // An identity two twins claim (written around the hub, or before it had a
            // coaps listener) is loaded for neither: which one is the device is not
            // known, and taking the first by id order could hand one device's identity
            // to another.
            let registry = registry.read();
            let mut claims: std::collections::HashMap<&str, usize> = Default::default();
            for twin in registry.iter() {
                let auth = twin.authentication();
                if let (Some(identity), Some(_)) = (auth.psk_identity.as_deref(), &auth.psk_key) {
                    *claims.entry(identity).or_default() += 1;
                }
            }
            for twin in registry.iter() {
                let auth = twin.authentication();
                if let (Some(identity), Some(key)) = (&auth.psk_identity, &auth.psk_key)
                    && claims.get(identity.as_str()) == Some(&1)
                    && let Ok(creds) = PskCredentials::new(identity, key.clone())
                {
                    let _ = store.set(Some(twin.device_id().clone()), creds);
                } else if auth.psk_identity.is_some() {
                    crate::trace_event!(
                        warn,
                        device = twin.device_id().as_str(),
                        "PSK credentials not loaded: identity claimed twice, or out of bounds"
                    );
                }
            }
        }
        let provisioned = AutoProvisioned::for_config(&config);
        let packages = super::udp::stored_packages(&config)?;
        let mut server = Self::lwm2m_server(&registry, &config, &provisioned, parts, &packages);
        let restored = super::udp::restore_registrations(&registry, &mut server);
        let dtls = DtlsServer::new(config.dtls.clone(), store.clone());
        let stats = dtls.stats_handle();
        let (udp, events) = UdpServer::bind_secure(addr, server, dtls)?;
        let local = udp.local_addr();
        let link = Box::new(udp.handle());
        let hub = Self::start_shared(
            registry,
            link,
            events,
            config,
            (Some(local), Some(udp)),
            provisioned,
        );
        let view = store.view();
        let _ = hub.inner.secure.set(Secure { store, view, stats });
        let _ = hub.inner.packages.set(packages);
        hub.inner.resume_sync(restored);
        Ok(hub)
    }

    /// Sets (or rotates) a device's PSK credentials: in its twin's authentication and in
    /// the DTLS key store. Sessions made with its earlier key close. Fails for an unknown
    /// device or an identity another device holds; nothing changes then. With a store,
    /// returns once the credentials are durable; if they cannot be made durable, the
    /// earlier credentials stay in force (twin and key store) and the error says so.
    pub fn set_psk(
        &self,
        device: &str,
        credentials: PskCredentials,
    ) -> Result<(), CredentialsError> {
        let id = DeviceId::new(device).map_err(|_| CredentialsError::UnknownDevice {
            device: device.to_owned(),
        })?;
        // Jobs before the registry, as everywhere: the commit takes the engine's journal.
        let mut jobs = super::lock(&self.inner.jobs);
        let mut registry = self.inner.registry.write();
        self.inner
            .ready_to_write(&mut jobs, &mut registry)
            .map_err(|error| CredentialsError::NotDurable {
                detail: error.to_string(),
            })?;
        if !registry.contains(device) {
            return Err(CredentialsError::UnknownDevice {
                device: device.to_owned(),
            });
        }
        // The twin first, then the commit, then the key store: the new key lets a device
        // in only once it is durable. A failed commit leaves the registry as the disk has
        // it and the key store untouched (the earlier key's sessions stay open).
        let mut durable = || {
            registry
                .set_authentication(
                    device,
                    Authentication {
                        psk_identity: Some(credentials.identity().to_owned()),
                        psk_key: Some(credentials.key().clone()),
                    },
                )
                .map_err(|_| CredentialsError::UnknownDevice {
                    device: device.to_owned(),
                })?;
            self.inner
                .commit_locked(&mut jobs, &mut registry)
                .map_err(|error| CredentialsError::NotDurable {
                    detail: error.to_string(),
                })
        };
        match self.inner.secure.get() {
            Some(secure) => secure
                .store
                .set_with(Some(id), credentials.clone(), durable)??,
            None => durable()?,
        }
        drop(registry);
        drop(jobs);
        // Published before returning, like every service write through the hub.
        self.inner.publish(Vec::new());
        self.inner.note_adoption(device);
        Ok(())
    }

    /// Removes a device's credentials (twin and key store); its sessions close. Returns
    /// whether it had any. The device can then no longer complete a handshake. With a
    /// store, returns once the removal is durable; if it cannot be made durable, the key
    /// is still out of the live key store (removing access is the safe direction) but the
    /// twin keeps it, in memory and on disk, so a restart would let it in again: the
    /// error says so, and a retry completes the removal.
    pub fn remove_psk(&self, device: &str) -> Result<bool, CredentialsError> {
        let mut jobs = super::lock(&self.inner.jobs);
        let mut registry = self.inner.registry.write();
        // Checked first, so that memory holding a refused write is rebuilt from the disk
        // before `had` is read (a retry must find the key the disk still has).
        let ready = self.inner.ready_to_write(&mut jobs, &mut registry);
        let had = registry
            .get(device)
            .is_some_and(|t| !t.authentication().is_empty());
        let durable = match ready {
            // Backing off from a failing store, the twin keeps the key (as after a failed
            // commit); the live key store still loses it below.
            Err(error) => Err(error),
            Ok(()) if had => {
                let _ = registry.set_authentication(device, Authentication::default());
                self.inner.commit_locked(&mut jobs, &mut registry)
            }
            Ok(()) => Ok(()),
        };
        let in_store = match (self.inner.secure.get(), DeviceId::new(device)) {
            (Some(secure), Ok(id)) => secure.store.remove_device(&id),
            _ => false,
        };
        drop(registry);
        drop(jobs);
        durable.map_err(|error| CredentialsError::NotDurable {
            detail: error.to_string(),
        })?;
        if had {
            self.inner.publish(Vec::new());
        }
        Ok(had || in_store)
    }

    /// Whether [`Hub::create_device`] takes `twin` through [`Hub::create_with_psk`]: it
    /// carries credentials and the hub has a coaps listener.
    pub(super) fn takes_psk(&self, twin: &Twin) -> bool {
        // A twin with an identity and no key (the key is never serialised: a twin read
        // back from JSON looks so) is created as any other; it lets no device in.
        let auth = &twin.authentication;
        self.inner.secure.get().is_some() && auth.psk_identity.is_some() && auth.psk_key.is_some()
    }

    /// [`Hub::create_device`] for a twin carrying PSK credentials on a hub with a coaps
    /// listener: the identity checked against the key store, the twin created and
    /// committed, then the key stored, in `set_psk`'s lock order.
    pub(super) fn create_with_psk(&self, twin: Twin) -> Result<(), RegistryError> {
        let id = twin.device_id.clone();
        let invalid = |error| RegistryError::Invalid {
            id: id.to_string(),
            error,
        };
        let (Some(secure), Some(identity), Some(key)) = (
            self.inner.secure.get(),
            twin.authentication.psk_identity.clone(),
            twin.authentication.psk_key.clone(),
        ) else {
            return Err(invalid(TwinError::BadCredentials {
                detail: "an identity and a key are given together".into(),
            }));
        };
        let credentials = PskCredentials::new(&identity, key).map_err(|e| {
            invalid(TwinError::BadCredentials {
                detail: e.to_string(),
            })
        })?;
        let outcome = {
            let mut jobs = super::lock(&self.inner.jobs);
            let mut registry = self.inner.registry.write();
            if self.inner.config.store.is_some()
                && let Err(error) = self.inner.ready_to_write(&mut jobs, &mut registry)
            {
                return Err(RegistryError::NotDurable {
                    error: crate::registry::StoreFailure::new(error),
                });
            }
            let durable = || -> Result<(), RegistryError> {
                registry.create(twin)?;
                self.inner
                    .commit_locked(&mut jobs, &mut registry)
                    .map_err(|error| RegistryError::NotDurable {
                        error: crate::registry::StoreFailure::new(error),
                    })
            };
            match secure
                .store
                .set_with(Some(id.clone()), credentials, durable)
            {
                Ok(done) => done,
                Err(CredentialsError::IdentityTaken { device }) => {
                    Err(invalid(TwinError::PskIdentityTaken { device }))
                }
                Err(e) => Err(invalid(TwinError::BadCredentials {
                    detail: e.to_string(),
                })),
            }
        };
        if outcome.is_ok() {
            self.inner.publish(Vec::new());
        }
        outcome
    }

    /// The DTLS key store, read-only, when the hub runs a coaps listener: which device
    /// holds which identity. Credentials change only through [`Hub::set_psk`],
    /// [`Hub::remove_psk`], [`Hub::create_device`] and [`Hub::remove_device`], which keep
    /// the twin, the hub's store (durable on return) and the key store in step; the key
    /// store cannot be written around them (such a write reached neither the twin nor the
    /// disk, and was lost at the next restart).
    ///
    /// ```compile_fail
    /// use twinhub::dtls::{PskCredentials, PskKey};
    /// use twinhub::hub::{Hub, HubConfig};
    /// use twinhub::registry::Registry;
    /// let hub = Hub::bind_dtls("127.0.0.1:0", Registry::new(), HubConfig::default()).unwrap();
    /// let creds = PskCredentials::new("pump-7", PskKey::new(vec![7; 16])).unwrap();
    /// hub.psk_store().unwrap().set(None, creds).unwrap(); // no such method: use set_psk
    /// ```
    pub fn psk_store(&self) -> Option<&PskStoreView> {
        self.inner.secure.get().map(|s| &s.view)
    }

    /// The DTLS layer's counters (handshakes, refusals, table sizes), when the hub runs a
    /// coaps listener.
    pub fn dtls_stats(&self) -> Option<DtlsStats> {
        self.inner.secure.get().map(|s| s.stats.snapshot())
    }
}
