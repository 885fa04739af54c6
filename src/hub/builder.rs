//! [`HubBuilder`]: a hub assembled from parts.

use super::{Hub, HubConfig, TransportThread};
use crate::registry::{Registry, SharedRegistry};
use crate::store::SharedStore;
use crate::transport::Transport;
#[cfg(feature = "lwm2m")]
use {
    crate::Lwm2mPath,
    crate::lwm2m::ResourceType,
    crate::lwm2m::server::{Authorizer, Decision, RegistrationRequest, TypeResolver},
    crate::transport::PeerIdentity,
    std::net::{SocketAddr, ToSocketAddrs},
};

/// The bundled LWM2M server's parts a builder may replace.
#[derive(Default)]
pub(crate) struct ServerParts {
    #[cfg(feature = "lwm2m")]
    pub(crate) authorizer: Option<Authorizer>,
    #[cfg(feature = "lwm2m")]
    pub(crate) types: Option<TypeResolver>,
    #[cfg(feature = "lwm2m")]
    pub(crate) bootstrap: Option<crate::lwm2m::server::Bootstrapper>,
    /// [`HubBuilder::bootstrap_from_registry`]'s server URI, turned into a plan at build.
    #[cfg(feature = "lwm2m")]
    pub(crate) bootstrap_to: Option<String>,
    /// Whether that plan hands keys to a peer that did not prove it is the device
    /// ([`HubBuilder::bootstrap_from_registry_in_clear`]).
    #[cfg(feature = "lwm2m")]
    pub(crate) bootstrap_keys_in_clear: bool,
}

/// What the hub runs on.
enum Link {
    #[cfg(feature = "lwm2m")]
    Udp(Vec<SocketAddr>),
    #[cfg(feature = "dtls")]
    Dtls(Vec<SocketAddr>),
    Transport(
        Box<
            dyn FnOnce() -> (
                    TransportThread,
                    std::sync::mpsc::Receiver<crate::transport::DeviceEvent>,
                ) + Send,
        >,
    ),
}

/// Why [`HubBuilder::build`] made no hub.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    #[cfg_attr(
        feature = "lwm2m",
        doc = "No transport was chosen ([`HubBuilder::udp`], `dtls`, or [`HubBuilder::transport`])."
    )]
    #[cfg_attr(
        not(feature = "lwm2m"),
        doc = "No transport was chosen ([`HubBuilder::transport`])."
    )]
    NoTransport,
    /// An address did not resolve.
    Address(std::io::Error),
    /// The socket could not be bound: the address is in use (`AddrInUse`, another hub
    /// or process on the port), not this host's (`AddrNotAvailable`), or a port below
    /// 1024 without the privilege (`PermissionDenied`). With a store, the store already
    /// holds the registry (see [`HubBuilder::build`]).
    Bind(std::io::Error),
    /// An authorizer or object types were given for a transport other than the bundled
    /// LWM2M server: they would not be used.
    NotForTransport(&'static str),
    /// The registry could not be made the store's: it would have replaced the twins the
    /// directory holds ([`StoreError::WouldReplace`](crate::store::StoreError::WouldReplace):
    /// nothing written, the store goes on), or [`Store::adopt`](crate::store::Store::adopt)
    /// failed (a registry built in memory was not imported; the store is poisoned, and
    /// [`Store::reload`](crate::store::Store::reload) returns what the directory holds).
    Store(crate::store::StoreError),
    /// The settings would leave the hub inert or overflow a clock (see
    /// [`HubConfig::validate`]: the job engine's, and the bundled server's and DTLS
    /// layer's when the transport is theirs). Nothing was started, nor the store touched.
    Config(super::HubConfigError),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::NoTransport => f.write_str("no transport chosen (udp, dtls or transport)"),
            BuildError::Address(e) => write!(f, "the address does not resolve: {e}"),
            BuildError::Bind(e) => write!(f, "cannot bind: {e}"),
            BuildError::NotForTransport(what) => write!(
                f,
                "{what} applies to the bundled LWM2M server (udp or dtls), not to a custom transport"
            ),
            BuildError::Store(e) => write!(f, "the registry could not be stored: {e}"),
            BuildError::Config(e) => write!(f, "the configuration is refused: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Address(e) | BuildError::Bind(e) => Some(e),
            BuildError::Store(e) => Some(e),
            BuildError::Config(e) => Some(e),
            _ => None,
        }
    }
}

/// Builds a [`Hub`] from parts: the registry (owned or shared with the rest of the
/// service), the settings and a durable store, the transport (the bundled LWM2M server on
/// UDP or DTLS, or any sans-IO [`Transport`]), and for the bundled server an extra
/// registration check and the resource types of custom objects. `build` reports what is
/// wrong instead of panicking.
///
#[cfg_attr(feature = "lwm2m", doc = "```")]
#[cfg_attr(not(feature = "lwm2m"), doc = "```ignore")]
/// use twinhub::hub::Hub;
/// use twinhub::lwm2m::server::Decision;
/// use twinhub::lwm2m::ResourceType;
/// use twinhub::registry::{Registry, SharedRegistry};
///
/// let registry = SharedRegistry::new(Registry::new());
/// let hub = Hub::builder()
///     .shared_registry(registry.clone())
///     // IPSO Temperature (3303): Sensor Value (5700) is a float.
///     .object_types(|path| {
///         (path.object_id() == Some(3303) && path.resource_id() == Some(5700)).then_some(ResourceType::Float)
///     })
///     .authorizer(|request, _identity| {
///         if request.endpoint.starts_with("lab-") {
///             Decision::Accept
///         } else {
///             Decision::Reject(twinhub::transport::RejectReason::UnknownDevice)
///         }
///     })
///     .udp("127.0.0.1:0")
///     .build()?;
/// assert!(hub.local_addr().is_some());
/// # Ok::<(), twinhub::hub::BuildError>(())
/// ```
pub struct HubBuilder {
    registry: Option<SharedRegistry>,
    config: HubConfig,
    #[cfg_attr(not(feature = "lwm2m"), allow(dead_code))]
    parts: ServerParts,
    link: Option<Result<Link, std::io::Error>>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("HubBuilder");
        d.field("config", &self.config);
        #[cfg(feature = "lwm2m")]
        d.field("authorizer", &self.parts.authorizer.is_some())
            .field("object_types", &self.parts.types.is_some())
            .field("bootstrap", &self.parts.bootstrap.is_some());
        d.finish_non_exhaustive()
    }
}

impl Hub {
    /// A [`HubBuilder`] with an empty registry and the default settings.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            registry: None,
            config: HubConfig::default(),
            parts: ServerParts::default(),
            link: None,
        }
    }
}

#[cfg(feature = "lwm2m")]
fn resolve(addr: impl ToSocketAddrs) -> Result<Vec<SocketAddr>, std::io::Error> {
    Ok(addr.to_socket_addrs()?.collect())
}

impl HubBuilder {
    /// The registry the hub owns (default: an empty one).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(SharedRegistry::new(registry));
        self
    }

    /// A registry shared with the rest of the service: writes through either side are
    /// the same twins and indexes (the hub publishes writes it did not make to
    /// subscribers within 20 ms).
    pub fn shared_registry(mut self, registry: SharedRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The settings (replaces every earlier setting, the store included).
    pub fn config(mut self, config: HubConfig) -> Self {
        self.config = config;
        self
    }

    /// A durable store ([`HubConfig::store`]). Use the registry its `open` returned.
    pub fn store(mut self, store: SharedStore) -> Self {
        self.config.store = Some(store);
        self
    }

    /// Serves the LWM2M bootstrap interface (`POST /bs`) on the hub's UDP or DTLS port:
    /// `plan` decides, per Bootstrap-Request, which server accounts (URI, PSK, lifetime)
    /// a device is given; `None` refuses it. Outcomes arrive as
    /// [`LifecycleKind::Bootstrapped`](super::LifecycleKind::Bootstrapped) /
    /// [`BootstrapFailed`](super::LifecycleKind::BootstrapFailed) events. See
    /// [`lwm2m::server::bootstrap`](crate::lwm2m::server::bootstrap). The bundled server
    /// only.
    #[cfg(feature = "lwm2m")]
    pub fn bootstrap(
        mut self,
        plan: impl Fn(
            &crate::lwm2m::server::BootstrapRequest,
        ) -> Option<crate::lwm2m::server::BootstrapPlan>
        + Send
        + 'static,
    ) -> Self {
        self.parts.bootstrap = Some(Box::new(plan));
        self
    }

    /// Serves the bootstrap interface with a plan made from the registry: a device whose
    /// twin exists and is enabled gets one account (Short Server ID 1) for `server_uri`,
    /// with its twin's PSK identity and key when it has both. The key goes only to a
    /// bootstrap session that proved it is the device (DTLS, with an identity bound to
    /// that endpoint): over plain CoAP anyone may send a Bootstrap-Request with any
    /// endpoint name, so a twin with a key is refused there (see
    /// [`HubBuilder::bootstrap_from_registry_in_clear`] for a provisioning network you
    /// trust). Also refused: a `coaps://` URI for a twin without a PSK, a `coap://` (or
    /// any other not `coaps://`) URI for a twin with one (the device would be told to
    /// use a key with a server in clear: a client either fails to connect or registers
    /// in clear, which the hub refuses for a device with credentials; the key would also
    /// travel for nothing), any unknown or disabled endpoint, and a DTLS session whose
    /// identity belongs to another device. So the URI's scheme and the twin's credentials
    /// must agree; a refused device gets the bootstrap interface's 4.00 and a
    /// `BootstrapFailed` lifecycle event.
    /// Replaces [`HubBuilder::bootstrap`]. For a bootstrap port beside a DTLS hub, build
    /// a second hub with [`HubBuilder::shared_registry`] of the first's registry.
    #[cfg(feature = "lwm2m")]
    pub fn bootstrap_from_registry(mut self, server_uri: impl Into<String>) -> Self {
        self.parts.bootstrap_to = Some(server_uri.into());
        self.parts.bootstrap_keys_in_clear = false;
        self.parts.bootstrap = None;
        self
    }

    /// [`HubBuilder::bootstrap_from_registry`] that also hands a twin's PSK to a peer that
    /// did not prove it is the device: a Bootstrap-Request over plain CoAP, or over a
    /// DTLS identity bound to no device. Whoever can reach the port and names an endpoint
    /// gets its key, in clear over plain CoAP: for a lab, or a provisioning network
    /// where only your own devices can send (the examples' `--bootstrap` uses it on
    /// loopback).
    #[cfg(feature = "lwm2m")]
    pub fn bootstrap_from_registry_in_clear(mut self, server_uri: impl Into<String>) -> Self {
        self.parts.bootstrap_to = Some(server_uri.into());
        self.parts.bootstrap_keys_in_clear = true;
        self.parts.bootstrap = None;
        self
    }

    /// A registration check of the service's, asked after the hub's own (the device
    /// exists and is enabled, or auto-provisioning admits it; a device with credentials
    /// came over DTLS) have passed. The bundled server only.
    #[cfg(feature = "lwm2m")]
    pub fn authorizer(
        mut self,
        check: impl Fn(&RegistrationRequest, Option<&PeerIdentity>) -> Decision + Send + 'static,
    ) -> Self {
        self.parts.authorizer = Some(Box::new(check));
        self
    }

    /// Resource types of objects the standard table does not know (IPSO and vendor
    /// objects), asked first for payloads that carry no types (TLV, text): without them
    /// such a value decodes as opaque bytes or a string. The bundled server only.
    #[cfg(feature = "lwm2m")]
    pub fn object_types(
        mut self,
        types: impl Fn(&Lwm2mPath) -> Option<ResourceType> + Send + 'static,
    ) -> Self {
        self.parts.types = Some(Box::new(types));
        self
    }

    /// The bundled LWM2M server over plain CoAP on a UDP socket (`"0.0.0.0:5683"`, or
    /// `"127.0.0.1:0"` for an ephemeral port).
    #[cfg(feature = "lwm2m")]
    pub fn udp(mut self, addr: impl ToSocketAddrs) -> Self {
        self.link = Some(resolve(addr).map(Link::Udp));
        self
    }

    /// The bundled LWM2M server over DTLS 1.2 PSK (`coaps`) on a UDP socket; see
    /// [`Hub::bind_dtls`].
    #[cfg(feature = "dtls")]
    pub fn dtls(mut self, addr: impl ToSocketAddrs) -> Self {
        self.link = Some(resolve(addr).map(Link::Dtls));
        self
    }

    /// Any sans-IO transport (the in-memory fleet, your own), driven on a thread of its
    /// own on the real clock.
    pub fn transport<T: Transport + Send + 'static>(mut self, transport: T) -> Self {
        self.link = Some(Ok(Link::Transport(Box::new(move || {
            TransportThread::spawn(transport)
        }))));
        self
    }

    /// Checks the parts and starts the hub: its event thread, and for the bundled server
    /// its bound socket and UDP driver thread (the hub is serving when this returns; read
    /// the port with `local_addr`). In this order:
    ///
    /// 1. the settings that apply to the chosen transport ([`HubConfig::validate`]);
    ///    refused: [`BuildError::Config`], and nothing was started or touched;
    /// 2. with a store, the registry is made the store's ([`Store::adopt`]: the registry
    ///    `open` returned is committed, any other is imported if the directory holds no
    ///    twin, and refused, [`StoreError::WouldReplace`], if it does); refused or
    ///    failed: [`BuildError::Store`];
    /// 3. the transport: none chosen is [`BuildError::NoTransport`], an address that did
    ///    not resolve [`BuildError::Address`], server parts given for a transport of your
    ///    own [`BuildError::NotForTransport`], a socket that could not be bound (the port
    ///    in use, say) [`BuildError::Bind`]. A failure here comes after step 2: the
    ///    store already holds the registry.
    ///
    /// The registry defaults to an empty one, the settings to [`HubConfig::default`].
    ///
    /// [`Store::adopt`]: crate::store::Store::adopt
    /// [`StoreError::WouldReplace`]: crate::store::StoreError::WouldReplace
    #[cfg_attr(not(feature = "lwm2m"), allow(unused_mut))]
    pub fn build(mut self) -> Result<Hub, BuildError> {
        let registry = self
            .registry
            .unwrap_or_else(|| SharedRegistry::new(Registry::new()));
        // The settings, before anything is touched: the bundled server's and the DTLS
        // layer's only when the transport is theirs.
        let server = !matches!(
            self.link,
            None | Some(Err(_)) | Some(Ok(Link::Transport(_)))
        );
        #[cfg(feature = "dtls")]
        let dtls = matches!(self.link, Some(Ok(Link::Dtls(_))));
        #[cfg(not(feature = "dtls"))]
        let dtls = false;
        self.config
            .check(server, dtls)
            .map_err(BuildError::Config)?;
        // Imported now, so that a failure is the build's error (the hub's start would
        // only find the store poisoned).
        if let Some(store) = &self.config.store {
            store
                .lock()
                .adopt_unless_replacing(&mut registry.write())
                .map_err(BuildError::Store)?;
        }
        #[cfg(feature = "lwm2m")]
        if let Some(uri) = self.parts.bootstrap_to.take() {
            let in_clear = self.parts.bootstrap_keys_in_clear;
            self.parts.bootstrap = Some(registry_bootstrap(registry.clone(), uri, in_clear));
        }
        let link = self
            .link
            .ok_or(BuildError::NoTransport)?
            .map_err(BuildError::Address)?;
        match link {
            #[cfg(feature = "lwm2m")]
            Link::Udp(addrs) => Hub::bind_plain(&addrs[..], registry, self.config, self.parts)
                .map_err(BuildError::Bind),
            #[cfg(feature = "dtls")]
            Link::Dtls(addrs) => Hub::bind_secure(&addrs[..], registry, self.config, self.parts)
                .map_err(BuildError::Bind),
            Link::Transport(spawn) => {
                #[cfg(feature = "lwm2m")]
                if self.parts.authorizer.is_some() {
                    return Err(BuildError::NotForTransport("an authorizer"));
                }
                #[cfg(feature = "lwm2m")]
                if self.parts.types.is_some() {
                    return Err(BuildError::NotForTransport("object types"));
                }
                #[cfg(feature = "lwm2m")]
                if self.parts.bootstrap.is_some() {
                    return Err(BuildError::NotForTransport("a bootstrap server"));
                }
                let (thread, events) = spawn();
                Ok(Hub::start_shared_registry(
                    registry,
                    Box::new(thread),
                    events,
                    self.config,
                ))
            }
        }
    }
}

/// The plan of [`HubBuilder::bootstrap_from_registry`] (`keys_in_clear`: of
/// [`HubBuilder::bootstrap_from_registry_in_clear`]).
#[cfg(feature = "lwm2m")]
fn registry_bootstrap(
    registry: SharedRegistry,
    server_uri: String,
    keys_in_clear: bool,
) -> crate::lwm2m::server::Bootstrapper {
    use crate::lwm2m::server::{BootstrapPlan, ServerAccount};
    let secure = server_uri
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("coaps://"));
    Box::new(move |request| {
        let proven = request.identity.as_ref().and_then(|i| i.device.as_ref());
        // Over DTLS, the bootstrap session's identity must be the endpoint's own.
        if proven.is_some_and(|device| device.as_str() != request.endpoint) {
            return None;
        }
        let reg = registry.read();
        let twin = reg.get(&request.endpoint)?;
        if twin.status() != crate::twin::DeviceStatus::Enabled {
            return None;
        }
        let auth = twin.authentication();
        let account = ServerAccount::new(1, server_uri.clone());
        let account = match (&auth.psk_identity, &auth.psk_key) {
            // A key is for a `coaps` server only (see the builder's docs).
            (Some(_), Some(_)) if !secure => return None,
            // The key only to the device itself (or, when the service said so, to
            // whoever asks for the endpoint).
            (Some(identity), Some(key)) if proven.is_some() || keys_in_clear => {
                account.with_psk(identity.clone(), key.expose().to_vec())
            }
            (Some(_), Some(_)) => return None,
            _ if secure => return None,
            _ => account,
        };
        Some(BootstrapPlan::new(vec![account]))
    })
}

#[cfg(all(test, feature = "lwm2m"))]
mod tests {
    use super::*;
    use crate::lwm2m::server::{AccountSecurity, BootstrapRequest};
    use crate::twin::{Authentication, DeviceId, PskKey, Twin};

    fn plan(
        server_uri: &str,
        in_clear: bool,
        with_key: bool,
    ) -> Option<crate::lwm2m::server::BootstrapPlan> {
        let mut registry = Registry::new();
        registry
            .create(Twin::new(DeviceId::new("d").unwrap()))
            .unwrap();
        if with_key {
            registry
                .set_authentication(
                    "d",
                    Authentication {
                        psk_identity: Some("d-id".into()),
                        psk_key: Some(PskKey::new(vec![7; 16])),
                    },
                )
                .unwrap();
        }
        let bootstrap =
            registry_bootstrap(SharedRegistry::new(registry), server_uri.into(), in_clear);
        bootstrap(&BootstrapRequest {
            endpoint: "d".into(),
            address: "127.0.0.1:5783".parse().unwrap(),
            identity: Some(crate::transport::PeerIdentity {
                psk_identity: "d-id".into(),
                device: Some(DeviceId::new("d").unwrap()),
            }),
        })
    }

    /// A twin with a PSK is not bootstrapped to a `coap://` server (before, it got a PSK
    /// account for a server in clear: unusable), even from a session that proved it is
    /// the device; a `coaps://` one gets the key, and a twin without a key gets a NoSec
    /// account for `coap://` only.
    #[test]
    fn the_server_uri_scheme_and_the_twins_key_must_agree() {
        for in_clear in [false, true] {
            assert!(plan("coap://10.0.0.1:5683", in_clear, true).is_none());
            assert!(plan("COAP://10.0.0.1", in_clear, true).is_none());
            let secure = plan("coaps://10.0.0.1:5684", in_clear, true).expect("a plan");
            assert!(matches!(
                &secure.servers[0].security,
                AccountSecurity::Psk { identity, .. } if identity == "d-id"
            ));
            let plain = plan("coap://10.0.0.1:5683", in_clear, false).expect("a plan");
            assert!(plain.servers[0].security == AccountSecurity::NoSec);
            assert!(plan("coaps://10.0.0.1:5684", in_clear, false).is_none());
        }
    }
}
