//! The hub on the bundled LWM2M server over UDP (feature `lwm2m`): [`Hub::bind_udp`],
//! the registration gate the hub puts in front of the server, and the registrations a
//! restarted hub gives back to it.

use super::builder::ServerParts;
use super::provisioning::AutoProvisioned;
use super::{Hub, HubConfig};
use crate::lwm2m::server::{
    Decision, Lwm2mServer, PACKAGE_PATH, PackageError, Packages, ServerConfig, UdpServer,
};
use crate::registry::{Registry, SharedRegistry, StoreFailure};
use crate::time::Timestamp;
use crate::transport::RejectReason;
use crate::twin::{ConnectionState, DeviceId, DeviceStatus, RegistrationInfo};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Hub {
    /// Starts a hub with the bundled LWM2M server on a UDP socket (`"0.0.0.0:5683"`, or
    /// `"127.0.0.1:0"` for an ephemeral port). Only devices that exist in the registry and
    /// are enabled may register, unless [`HubConfig::auto_provision`] is set. Server
    /// settings that [`ServerConfig::validate`] refuses are an
    /// [`InvalidInput`](std::io::ErrorKind::InvalidInput) error carrying the
    /// [`ServerConfigError`](crate::lwm2m::server::ServerConfigError) (`get_ref`), and
    /// nothing starts.
    pub fn bind_udp(
        addr: impl ToSocketAddrs,
        registry: Registry,
        config: HubConfig,
    ) -> std::io::Result<Hub> {
        Self::bind_plain(
            addr,
            SharedRegistry::new(registry),
            config,
            ServerParts::default(),
        )
    }

    /// [`Hub::bind_udp`] with a shared registry and the builder's server parts.
    pub(super) fn bind_plain(
        addr: impl ToSocketAddrs,
        registry: SharedRegistry,
        config: HubConfig,
        parts: ServerParts,
    ) -> std::io::Result<Hub> {
        checked_server_config(&config, false)?;
        checked_store(&config, &registry)?;
        let provisioned = AutoProvisioned::for_config(&config);
        let packages = stored_packages(&config)?;
        let mut server = Self::lwm2m_server(&registry, &config, &provisioned, parts, &packages);
        let restored = restore_registrations(&registry, &mut server);
        let (udp, events) = UdpServer::bind(addr, server)?;
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
        let _ = hub.inner.packages.set(packages);
        hub.inner.resume_sync(restored);
        Ok(hub)
    }

    /// Publishes (or replaces) a package, a firmware image or a configuration file, that
    /// the hub's registered devices download from the hub itself, over the connection
    /// they registered on: behind DTLS the download is authenticated and encrypted like
    /// the registration (see [`Packages`] for who may download). Returns its URI, for a
    /// firmware job's Package URI: `coaps://<listener>/pkg/<name>` on a hub bound with
    /// DTLS, `coap://<listener>/pkg/<name>` on a plain one, where `<listener>` is
    /// [`HubConfig::package_authority`] when set (a hub bound to `0.0.0.0` needs it: the
    /// address the devices reach), else the listener's address. The crate's device
    /// library downloads a `coaps` URI over its session with its server.
    ///
    /// ```no_run
    /// use twinhub::hub::{Hub, HubConfig};
    /// use twinhub::registry::Registry;
    /// let hub = Hub::bind_dtls("127.0.0.1:0", Registry::new(), HubConfig::default())?;
    /// let uri = hub.publish_package("fw/2.0.bin", vec![0u8; 64 * 1024])?;
    /// assert!(uri.starts_with("coaps://127.0.0.1:") && uri.ends_with("/pkg/fw/2.0.bin"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// With a store ([`HubConfig::store`]) the package is written to it before it is
    /// served, in a transaction of its own, and a restarted hub serves it again; if it
    /// cannot be made durable, nothing is published and the error says so.
    pub fn publish_package(&self, name: &str, body: Vec<u8>) -> Result<String, PublishError> {
        let (Some(packages), Some(addr)) = (self.inner.packages.get(), self.local_addr()) else {
            return Err(PublishError::NoListener);
        };
        packages.publish_with(name, body, |body| {
            if self.inner.config.store.is_some() {
                self.inner
                    .write_store(|store| store.put_package(name, body))
                    .map_err(|error| PublishError::NotDurable {
                        error: StoreFailure::new(error),
                    })?;
            }
            Ok::<(), PublishError>(())
        })?;
        #[cfg(feature = "dtls")]
        let scheme = if self.inner.secure.get().is_some() {
            "coaps"
        } else {
            "coap"
        };
        #[cfg(not(feature = "dtls"))]
        let scheme = "coap";
        let authority = match &self.inner.config.package_authority {
            Some(authority) => authority.clone(),
            None => addr.to_string(),
        };
        Ok(format!("{scheme}://{authority}/{PACKAGE_PATH}/{name}"))
    }

    /// Withdraws a package [`Hub::publish_package`] published; returns whether it was.
    /// Downloads under way finish. With a store, it is removed from the store first (if
    /// that fails, it stays published and the error says so).
    pub fn withdraw_package(&self, name: &str) -> Result<bool, PublishError> {
        let Some(packages) = self.inner.packages.get() else {
            return Ok(false);
        };
        packages.withdraw_with(name, || {
            if self.inner.config.store.is_some() {
                self.inner
                    .write_store(|store| store.remove_package(name))
                    .map_err(|error| PublishError::NotDurable {
                        error: StoreFailure::new(error),
                    })?;
            }
            Ok::<(), PublishError>(())
        })
    }

    /// A firmware job's Package URI that names one of this hub's packages (its
    /// authority, `/pkg/<name>`) must name a published one: a typo would otherwise fail
    /// every device's download. URIs elsewhere are the service's business.
    ///
    /// The authority is compared parsed, as RFC 3986 §6.2.3 compares URIs: the host
    /// without regard to case (an IP address by its value), the port the scheme's
    /// default when absent (5683 for `coap`, 5684 for `coaps`), user information
    /// ignored. Only a `coap` or `coaps` URI can name the hub's packages (the hub serves
    /// them over CoAP). The hub's own authority is [`HubConfig::package_authority`],
    /// read with the scheme the hub publishes under, else its UDP address.
    pub(super) fn check_own_package(&self, uri: &str) -> Result<(), crate::job::SpecError> {
        let (Some(packages), Some(addr)) = (self.inner.packages.get(), self.local_addr()) else {
            return Ok(());
        };
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Ok(());
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        #[cfg(feature = "dtls")]
        let own_scheme = if self.inner.secure.get().is_some() {
            "coaps"
        } else {
            "coap"
        };
        #[cfg(not(feature = "dtls"))]
        let own_scheme = "coap";
        let own = match &self.inner.config.package_authority {
            Some(a) => Authority::parse(own_scheme, a),
            None => Some(Authority {
                host: addr.ip().to_string(),
                port: addr.port(),
            }),
        };
        let ours = own.is_some() && Authority::parse(scheme, authority) == own;
        let name = path.split('?').next().unwrap_or("");
        match name
            .strip_prefix(PACKAGE_PATH)
            .and_then(|n| n.strip_prefix('/'))
        {
            Some(name) if ours && packages.get(name).is_none() => {
                Err(crate::job::SpecError::InvalidParameter {
                    name: "packageUri",
                    reason: "names a package of this hub that is not published",
                })
            }
            _ => Ok(()),
        }
    }

    /// The names of the packages published, in order.
    pub fn packages(&self) -> Vec<String> {
        self.inner
            .packages
            .get()
            .map_or_else(Vec::new, Packages::names)
    }

    /// How many downloads of the hub's packages started (first blocks served).
    pub fn package_downloads(&self) -> u64 {
        self.inner.packages.get().map_or(0, Packages::downloads)
    }

    /// The bundled server with the hub's authorizer: the device exists and is enabled
    /// (or auto-provisioning is on), and a device with credentials (a PSK in its twin's
    /// authentication) registers only with an authenticated identity: over plain CoAP it
    /// gets 4.03 [`RejectReason::CredentialsRequired`]. (That the identity is the
    /// device's own is checked by the server before this runs.)
    ///
    /// `parts.authorizer`, if any, decides after these checks pass; `parts.types`, if
    /// any, is asked for resource types before the standard objects' table.
    pub(super) fn lwm2m_server(
        registry: &SharedRegistry,
        config: &HubConfig,
        provisioned: &Arc<AutoProvisioned>,
        parts: ServerParts,
        packages: &Packages,
    ) -> Lwm2mServer {
        let gate = registry.clone();
        let auto = config.auto_provision;
        let admit = provisioned.clone();
        let extra = parts.authorizer;
        let server = Lwm2mServer::new(ServerConfig {
            auto_provision: auto,
            ..config.server.clone()
        });
        let server = match parts.bootstrap {
            Some(plan) => server.with_bootstrap(plan),
            None => server,
        };
        let server = match parts.types {
            Some(types) => server.with_types(Box::new(move |path| {
                types(path).or_else(|| crate::lwm2m::content::standard_resource_type(path))
            })),
            None => server,
        };
        server
            .with_authorizer(Box::new(move |request, identity| {
                let decision = Self::gate(&gate, auto, &admit, request, identity);
                match (&decision, &extra) {
                    (Decision::Accept, Some(extra)) => extra(request, identity),
                    _ => decision,
                }
            }))
            .with_packages(packages.clone())
    }

    /// The hub's own registration checks (see [`Hub::lwm2m_server`]).
    fn gate(
        gate: &SharedRegistry,
        auto: bool,
        admit: &AutoProvisioned,
        request: &crate::lwm2m::server::RegistrationRequest,
        identity: Option<&crate::transport::PeerIdentity>,
    ) -> Decision {
        {
            let reg = gate.read();
            match reg.get(&request.endpoint) {
                Some(twin) if twin.status() != DeviceStatus::Enabled => {
                    Decision::Reject(RejectReason::Disabled)
                }
                Some(twin) if identity.is_none() && twin.authentication().psk_key.is_some() => {
                    Decision::Reject(RejectReason::CredentialsRequired)
                }
                Some(_) => Decision::Accept,
                None if auto => match DeviceId::new(&request.endpoint) {
                    Ok(d) if admit.admit(&d, Instant::now()) => Decision::Accept,
                    _ => Decision::Reject(RejectReason::UnknownDevice),
                },
                None => Decision::Reject(RejectReason::UnknownDevice),
            }
        }
    }
}

/// Gives the bundled server back the registrations the twins hold (a hub restarting on
/// a store): a twin that is connected, holds a registration with an address, and whose
/// lifetime (plus the server's grace) has not run out since its last activity, by the
/// wall clock, is registered again without the device doing anything; every other
/// connected twin is marked disconnected (its registration ran out while the hub was
/// down, or cannot be taken back: a displaced registration, whose twin shows no address,
/// is one, see the [hub's docs](super)). Returns the devices taken back, with the
/// objects they announced, for property sync.
pub(super) fn restore_registrations(
    registry: &SharedRegistry,
    server: &mut Lwm2mServer,
) -> Vec<(DeviceId, RegistrationInfo)> {
    let (now, wall) = (Instant::now(), Timestamp::now());
    let grace = server.config().lifetime_grace;
    let mut restored = Vec::new();
    let mut lapsed = Vec::new();
    for twin in registry.read().iter() {
        if twin.connection_state() != ConnectionState::Connected {
            continue;
        }
        let id = twin.device_id().clone();
        let remaining =
            twin.registration()
                .zip(twin.last_activity_time())
                .and_then(|(info, last)| {
                    let since =
                        Duration::from_millis(wall.as_millis().saturating_sub(last.as_millis()));
                    let left =
                        (Duration::from_secs(info.lifetime.into()) + grace).checked_sub(since)?;
                    Some((info, left)).filter(|_| !left.is_zero())
                });
        match remaining {
            Some((info, left)) if server.restore_registration(now, info.clone(), left) => {
                restored.push((id, info.clone()))
            }
            _ => lapsed.push(id),
        }
    }
    if !lapsed.is_empty() {
        let mut reg = registry.write();
        for id in lapsed {
            let _ = reg.set_connection_state(id.as_str(), ConnectionState::Disconnected, wall);
        }
    }
    restored
}

/// Why [`Hub::publish_package`] (or [`Hub::withdraw_package`]) refused.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PublishError {
    /// The name is not a plain URI path, the body is too large, or the packages are
    /// full ([`Packages::publish`], [`HubConfig::package_limits`]).
    Package(PackageError),
    /// The hub runs no UDP listener (it was started on another transport): there is no
    /// address to download from.
    NoListener,
    /// The hub's store could not make the change durable; nothing changed.
    NotDurable {
        /// The store's error.
        error: StoreFailure,
    },
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Package(e) => e.fmt(f),
            PublishError::NoListener => {
                f.write_str("the hub runs no UDP listener to serve packages")
            }
            PublishError::NotDurable { error } => {
                write!(f, "the package change could not be made durable: {error}")
            }
        }
    }
}

impl std::error::Error for PublishError {}

impl From<PackageError> for PublishError {
    fn from(e: PackageError) -> Self {
        PublishError::Package(e)
    }
}

/// A CoAP URI's authority, normalised for comparison (see `Hub::check_own_package`).
#[derive(Debug, PartialEq, Eq)]
struct Authority {
    /// Lower-case; an IP address in its canonical text (IPv6 without brackets).
    host: String,
    port: u16,
}

impl Authority {
    /// `authority` (`[userinfo@]host[:port]`) under `scheme`; `None` for a scheme other
    /// than CoAP's, an empty host or a port that is not a number.
    fn parse(scheme: &str, authority: &str) -> Option<Authority> {
        let default = match scheme.to_ascii_lowercase().as_str() {
            "coap" | "coap+tcp" => 5683,
            "coaps" | "coaps+tcp" => 5684,
            _ => return None,
        };
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = match authority.strip_prefix('[') {
            Some(rest) => {
                let (host, after) = rest.split_once(']')?;
                match after {
                    "" => (host, None),
                    p => (host, Some(p.strip_prefix(':')?)),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return None;
        }
        let port = match port {
            None | Some("") => default,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
        };
        let host = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => host.to_ascii_lowercase(),
        };
        Some(Authority { host, port })
    }
}

/// The packages a hub with a store published before it restarted (none without one).
pub(super) fn stored_packages(config: &HubConfig) -> std::io::Result<Packages> {
    let packages = Packages::with_limits(config.package_limits);
    if let Some(store) = &config.store {
        let stored = store.lock().packages().map_err(std::io::Error::other)?;
        for (name, body) in stored {
            // Checked when they were published; all kept, past lowered limits too.
            let _ = packages.restore(&name, body);
        }
    }
    Ok(packages)
}

/// `config` as [`HubConfig::validate`] checks it for the bundled server (`jobs` and
/// `server`; `dtls` too when `dtls`), as the I/O error the hub's `bind_*` calls return:
/// [`InvalidInput`](std::io::ErrorKind::InvalidInput) with the
/// [`HubConfigError`](super::HubConfigError) inside.
pub(super) fn checked_server_config(config: &HubConfig, dtls: bool) -> std::io::Result<()> {
    config
        .check(true, dtls)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// Refuses, before anything is bound, a registry that would replace the twins the
/// store's directory holds ([`StoreError::WouldReplace`](crate::store::StoreError), as an
/// `InvalidInput` error); other store failures are left to the hub's start, which
/// poisons the store.
pub(super) fn checked_store(config: &HubConfig, registry: &SharedRegistry) -> std::io::Result<()> {
    let Some(store) = &config.store else {
        return Ok(());
    };
    match store.lock().check_not_replacing(&registry.read()) {
        Err(e @ crate::store::StoreError::WouldReplace { .. }) => {
            Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::Authority;

    fn parse(scheme: &str, authority: &str) -> Option<(String, u16)> {
        Authority::parse(scheme, authority).map(|a| (a.host, a.port))
    }

    #[test]
    fn authorities_compare_by_host_value_and_effective_port() {
        let at = |h: &str, p| Some((h.to_string(), p));
        assert_eq!(parse("coap", "127.0.0.1"), at("127.0.0.1", 5683));
        assert_eq!(parse("coap", "127.0.0.1:5683"), at("127.0.0.1", 5683));
        assert_eq!(parse("COAP", "127.0.0.1:"), at("127.0.0.1", 5683));
        assert_eq!(parse("coaps", "Hub.Example"), at("hub.example", 5684));
        assert_eq!(
            parse("coaps", "user@HUB.example:05684"),
            at("hub.example", 5684)
        );
        assert_eq!(parse("coap", "[::1]"), at("::1", 5683));
        assert_eq!(parse("coap", "[0:0::1]:9"), at("::1", 9));
        assert_eq!(parse("coap+tcp", "h"), at("h", 5683));
        for (scheme, bad) in [
            ("http", "hub.example"),
            ("coap", ""),
            ("coap", ":5683"),
            ("coap", "h:x"),
            ("coap", "h:+1"),
            ("coap", "h:70000"),
            ("coap", "[::1"),
            ("coap", "[::1]5683"),
        ] {
            assert_eq!(parse(scheme, bad), None, "{scheme}://{bad}");
        }
    }
}
