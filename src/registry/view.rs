//! Borrowed views of stored twins.

use super::index::OBJECT_NODE;
use super::{Entry, Registry, Slot};
use crate::twin::RegistrationInfo;
use crate::twin::{
    Authentication, ConnectionState, DeviceProperty, DevicePropertyName, DeviceStatus, Etag,
    PropertyKind, Scalar, ServiceProperties, ServiceValue, Twin,
};
use crate::{DeviceId, Timestamp};
use std::collections::BTreeMap;
use std::fmt;

static NO_AUTHENTICATION: Authentication = Authentication {
    psk_identity: None,
    psk_key: None,
};

/// A borrowed view of one twin in a [`Registry`]: reading it clones nothing.
///
/// It serialises to exactly the JSON of the equivalent [`Twin`] and converts to one
/// with [`TwinRef::to_twin`].
///
/// ```
/// use twinhub::registry::Registry;
/// use twinhub::twin::{Scalar, Twin};
/// use twinhub::{DeviceId, Timestamp};
/// let mut reg = Registry::new();
/// let t = Twin::new(DeviceId::new("d1").unwrap())
///     .with_device_property("BatteryLevel", 40, Timestamp::EPOCH)
///     .with_tag("lab");
/// reg.create(t).unwrap();
/// let view = reg.get("d1").unwrap();
/// assert_eq!(view.device_property("/3/0/9").unwrap().0, &Scalar::from(40));
/// assert_eq!(serde_json::to_value(&view).unwrap(), serde_json::to_value(view.to_twin()).unwrap());
/// ```
#[derive(Clone, Copy)]
pub struct TwinRef<'a> {
    reg: &'a Registry,
    slot: u32,
    entry: &'a Entry,
}

impl<'a> TwinRef<'a> {
    pub(crate) fn new(reg: &'a Registry, slot: u32, entry: &'a Entry) -> Self {
        TwinRef { reg, slot, entry }
    }

    /// The device's slot.
    pub fn slot(&self) -> Slot {
        Slot(self.slot)
    }

    /// The device id.
    pub fn device_id(&self) -> &'a DeviceId {
        &self.entry.id
    }

    /// The generation id (the sequence number of the device's creation).
    pub fn generation_id(&self) -> Etag {
        Etag(self.entry.generation)
    }

    /// The twin's etag: changes with any change to the twin.
    pub fn etag(&self) -> Etag {
        Etag(self.entry.etag)
    }

    /// The service properties' etag (what `If-Match` compares against).
    pub fn service_etag(&self) -> Etag {
        Etag(self.entry.service_etag)
    }

    /// Enabled or disabled.
    pub fn status(&self) -> DeviceStatus {
        self.entry.status
    }

    /// Why the status was set.
    pub fn status_reason(&self) -> Option<&'a str> {
        self.entry.extra.as_ref()?.status_reason.as_deref()
    }

    /// When the status last changed.
    pub fn status_updated_time(&self) -> Option<Timestamp> {
        self.entry.status_updated.get()
    }

    /// Connected or disconnected.
    pub fn connection_state(&self) -> ConnectionState {
        self.entry.connection
    }

    /// When the connection state last changed.
    pub fn connection_state_updated_time(&self) -> Option<Timestamp> {
        self.entry.connection_updated.get()
    }

    /// When the device was last heard from.
    pub fn last_activity_time(&self) -> Option<Timestamp> {
        self.entry.last_activity.get()
    }

    /// Whether the device connected over the device-management channel.
    pub fn is_managed(&self) -> bool {
        self.entry.managed
    }

    /// The authentication material (the key is redacted in `Debug` and never serialized).
    pub fn authentication(&self) -> &'a Authentication {
        self.entry
            .extra
            .as_ref()
            .map_or(&NO_AUTHENTICATION, |e| &e.authentication)
    }

    /// The current LWM2M registration.
    pub fn registration(&self) -> Option<&'a RegistrationInfo> {
        self.entry.extra.as_ref()?.registration.as_ref()
    }

    /// The configuration string.
    pub fn configuration(&self) -> Option<&'a str> {
        self.entry.extra.as_ref()?.configuration.as_deref()
    }

    /// A device property's value and report time, by well-known name or path.
    pub fn device_property(&self, name: &str) -> Option<(&'a Scalar, Timestamp)> {
        let pid = match self.reg.property_id(PropertyKind::Device, name) {
            Some(p) => p,
            None => {
                let canonical = DevicePropertyName::parse(name).ok()?;
                self.reg
                    .property_id(PropertyKind::Device, canonical.as_str())?
            }
        };
        let i = self.entry.lists.find_device(pid.0).ok()?;
        let d = self.entry.lists.device_at(i);
        Some((self.reg.props[d.pid as usize].value(d.vid), d.ts))
    }

    /// Every device property as `(canonical name, value, lastUpdatedTime)`, in no
    /// particular order.
    pub fn device_properties(
        &self,
    ) -> impl ExactSizeIterator<Item = (&'a str, &'a Scalar, Timestamp)> + 'a {
        let reg = self.reg;
        self.entry.lists.device().map(move |d| {
            let p = &reg.props[d.pid as usize];
            (&*p.name, p.value(d.vid), d.ts)
        })
    }

    /// A service property's scalar value; nested members are addressed as `outer.inner`.
    /// `None` when absent or when the value is an object.
    pub fn service_property(&self, name: &str) -> Option<&'a Scalar> {
        let pid = self.reg.property_id(PropertyKind::Service, name)?;
        self.reg.value_of(self.slot(), pid)
    }

    /// Every service property leaf as `(name, value)`, objects flattened to
    /// `outer.inner`, in no particular order.
    pub fn service_leaves(&self) -> impl Iterator<Item = (&'a str, &'a Scalar)> + 'a {
        let reg = self.reg;
        self.entry.lists.service().filter_map(move |l| {
            let p = &reg.props[l.pid as usize];
            (l.vid != OBJECT_NODE).then(|| (&*p.name, p.value(l.vid)))
        })
    }

    /// The service properties as values (objects rebuilt), by name.
    pub fn service_properties(&self) -> BTreeMap<String, ServiceValue> {
        let mut nodes: Vec<ServiceNode<'a>> = self.service_node_iter().collect();
        nodes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut root = BTreeMap::new();
        for (name, value) in nodes {
            let mut map = &mut root;
            let mut parts = name.split('.').peekable();
            while let Some(part) = parts.next() {
                if parts.peek().is_none() {
                    match value {
                        Some(v) => {
                            map.insert(part.to_string(), ServiceValue::Scalar(v.clone()));
                        }
                        None => {
                            map.entry(part.to_string())
                                .or_insert_with(|| ServiceValue::Object(BTreeMap::new()));
                        }
                    }
                    break;
                }
                let node = map
                    .entry(part.to_string())
                    .or_insert_with(|| ServiceValue::Object(BTreeMap::new()));
                map = match node {
                    ServiceValue::Object(m) => m,
                    // Unreachable while indexes are consistent: a scalar has no members.
                    ServiceValue::Scalar(_) => break,
                };
            }
        }
        root
    }

    /// Every service property node (objects as `None`), sorted in the order the nested
    /// JSON writes them (see [`member_order`]).
    pub(crate) fn service_nodes(&self) -> Vec<ServiceNode<'a>> {
        let mut nodes: Vec<ServiceNode<'a>> = self.service_node_iter().collect();
        nodes.sort_unstable_by(|a, b| member_order(a.0, b.0));
        nodes
    }

    /// Every service property node (objects as `None`), in the stored (property id) order.
    fn service_node_iter(&self) -> impl Iterator<Item = ServiceNode<'a>> + 'a {
        let reg = self.reg;
        self.entry.lists.service().map(move |l| {
            let p = &reg.props[l.pid as usize];
            (&*p.name, (l.vid != OBJECT_NODE).then(|| p.value(l.vid)))
        })
    }

    /// The service property at `name` (nested members as `outer.inner`) as it serialises,
    /// read from the borrowed values: a scalar, or an object written from the nodes under
    /// it. `None` when absent, as in the rebuilt map of [`TwinRef::service_properties`].
    pub(crate) fn service_member(&self, name: &str) -> Option<ServiceMember<'a>> {
        let reg = self.reg;
        let node = reg
            .property_id(PropertyKind::Service, name)
            .and_then(|pid| self.entry.lists.find_service(pid.0).ok())
            .map(|i| self.entry.lists.service_at(i));
        if let Some(l) = node
            && l.vid != OBJECT_NODE
        {
            return Some(ServiceMember::Scalar(
                reg.props[l.pid as usize].value(l.vid),
            ));
        }
        // An object (its node recorded, or, were it not, implied by members under it).
        let mut members: Vec<ServiceNode<'a>> = self
            .service_node_iter()
            .filter(|(full, _)| {
                full.len() > name.len()
                    && full.starts_with(name)
                    && full.as_bytes()[name.len()] == b'.'
            })
            .collect();
        if node.is_none() && members.is_empty() {
            return None;
        }
        members.sort_unstable_by(|a, b| member_order(a.0, b.0));
        Some(ServiceMember::Object {
            members,
            depth: name.split('.').count(),
        })
    }

    /// The tags, in no particular order.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = &'a str> + 'a {
        let reg = self.reg;
        self.entry
            .lists
            .tags()
            .iter()
            .map(move |&t| &*reg.tags[t as usize].name)
    }

    /// Whether the twin has a tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.reg
            .tag_bitmap(tag)
            .is_some_and(|b| b.contains(self.slot))
    }

    /// An owned copy.
    pub fn to_twin(&self) -> Twin {
        Twin {
            device_id: self.entry.id.clone(),
            generation_id: self.generation_id(),
            etag: self.etag(),
            status: self.status(),
            status_reason: self.status_reason().map(str::to_string),
            status_updated_time: self.status_updated_time(),
            connection_state: self.connection_state(),
            connection_state_updated_time: self.connection_state_updated_time(),
            last_activity_time: self.last_activity_time(),
            is_managed: self.is_managed(),
            authentication: self.authentication().clone(),
            registration: self.registration().cloned(),
            configuration: self.configuration().map(str::to_string),
            device_properties: self
                .device_properties()
                .map(|(n, v, ts)| {
                    (
                        n.to_string(),
                        DeviceProperty {
                            value: v.clone(),
                            last_updated_time: ts,
                        },
                    )
                })
                .collect(),
            service_properties: ServiceProperties {
                etag: self.service_etag(),
                properties: self.service_properties(),
                tags: self.tags().map(str::to_string).collect(),
            },
        }
    }
}

impl fmt::Debug for TwinRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwinRef")
            .field("slot", &self.slot)
            .field("twin", &self.to_twin())
            .finish()
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct TwinJson<'a> {
    device_id: &'a DeviceId,
    generation_id: Etag,
    etag: Etag,
    status: DeviceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_updated_time: Option<Timestamp>,
    connection_state: ConnectionState,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_state_updated_time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_activity_time: Option<Timestamp>,
    is_managed: bool,
    authentication: &'a Authentication,
    #[serde(skip_serializing_if = "Option::is_none")]
    registration: Option<&'a RegistrationInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configuration: Option<&'a str>,
    device_properties: DevicePropertiesJson<'a>,
    service_properties: ServicePropertiesJson<'a>,
}

struct DevicePropertiesJson<'a>(TwinRef<'a>);

/// A device property as [`DeviceProperty`] serialises, from the borrowed value.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DevicePropertyJson<'a> {
    pub(crate) value: &'a Scalar,
    pub(crate) last_updated_time: Timestamp,
}

impl serde::Serialize for DevicePropertiesJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut props: Vec<_> = self.0.device_properties().collect();
        props.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(props.len()))?;
        for (name, value, ts) in props {
            map.serialize_entry(
                name,
                &DevicePropertyJson {
                    value,
                    last_updated_time: ts,
                },
            )?;
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
struct ServicePropertiesJson<'a> {
    etag: Etag,
    properties: ServiceTree<'a, 'a>,
    tags: Vec<&'a str>,
}

/// A service property node: its full name (`outer.inner`) and its scalar value (`None`:
/// an object).
pub(crate) type ServiceNode<'a> = (&'a str, Option<&'a Scalar>);

/// The order of service property names that makes each object's members contiguous and
/// sorted as a `BTreeMap<String, _>` of each level sorts them: names compared segment by
/// segment (`a` < `a.b` < `a-b` < `ab`), i.e. bytewise with `.` below every other byte.
pub(crate) fn member_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'.' { 0 } else { u16::from(c) + 1 };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

/// The `depth`-th segment of a dotted name, and whether more segments follow it.
fn segment(name: &str, depth: usize) -> (&str, bool) {
    let mut parts = name.split('.').skip(depth);
    let seg = parts.next().unwrap_or("");
    (seg, parts.next().is_some())
}

/// The members of one service object, written as a nested JSON object straight from the
/// sorted nodes under it: `nodes` share their first `depth` segments, have more than
/// `depth` segments, and are sorted by [`member_order`]. Writes exactly what the
/// [`BTreeMap`] of [`TwinRef::service_properties`] writes: an object node without
/// members is `{}`, an object implied only by members under it is written too, and a
/// scalar hides members under it (the registry never stores such).
pub(crate) struct ServiceTree<'n, 'a> {
    nodes: &'n [ServiceNode<'a>],
    depth: usize,
}

impl serde::Serialize for ServiceTree<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        let mut rest = self.nodes;
        while let Some(&(name, value)) = rest.first() {
            let (seg, deeper) = segment(name, self.depth);
            let end = rest
                .iter()
                .position(|n| segment(n.0, self.depth).0 != seg)
                .unwrap_or(rest.len());
            let (group, after) = rest.split_at(end);
            rest = after;
            let depth = self.depth + 1;
            match (deeper, value) {
                (false, Some(v)) => map.serialize_entry(seg, v)?,
                (false, None) => map.serialize_entry(
                    seg,
                    &ServiceTree {
                        nodes: &group[1..],
                        depth,
                    },
                )?,
                (true, _) => map.serialize_entry(
                    seg,
                    &ServiceTree {
                        nodes: group,
                        depth,
                    },
                )?,
            }
        }
        map.end()
    }
}

/// A service property read from the borrowed values ([`TwinRef::service_member`]); it
/// serialises as the equivalent [`ServiceValue`].
pub(crate) enum ServiceMember<'a> {
    /// A scalar.
    Scalar(&'a Scalar),
    /// An object: the nodes under it, sorted by [`member_order`], and its own segment count.
    Object {
        members: Vec<ServiceNode<'a>>,
        depth: usize,
    },
}

impl serde::Serialize for ServiceMember<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServiceMember::Scalar(v) => v.serialize(s),
            ServiceMember::Object { members, depth } => ServiceTree {
                nodes: members,
                depth: *depth,
            }
            .serialize(s),
        }
    }
}

/// Serialises as the equivalent [`Twin`] does (the preview's JSON shape).
impl serde::Serialize for TwinRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut tags: Vec<&str> = self.tags().collect();
        tags.sort_unstable();
        let nodes = self.service_nodes();
        TwinJson {
            device_id: self.device_id(),
            generation_id: self.generation_id(),
            etag: self.etag(),
            status: self.status(),
            status_reason: self.status_reason(),
            status_updated_time: self.status_updated_time(),
            connection_state: self.connection_state(),
            connection_state_updated_time: self.connection_state_updated_time(),
            last_activity_time: self.last_activity_time(),
            is_managed: self.is_managed(),
            authentication: self.authentication(),
            registration: self.registration(),
            configuration: self.configuration(),
            device_properties: DevicePropertiesJson(*self),
            service_properties: ServicePropertiesJson {
                etag: self.service_etag(),
                properties: ServiceTree {
                    nodes: &nodes,
                    depth: 0,
                },
                tags,
            },
        }
        .serialize(s)
    }
}
