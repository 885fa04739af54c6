//! Twins as a query source: [`IndexedSource`] for the [`Registry`], the property
//! vocabulary of twins (which names mean what), and the projection of a twin, shared with
//! the naive evaluator so both define values identically.
//!
//! | query property | value |
//! |---|---|
//! | `{type:"default", name:"deviceId"}` | the id (string) |
//! | `status` | `"enabled"` / `"disabled"` |
//! | `connectionState` | `"Connected"` / `"Disconnected"` |
//! | `isManaged` | boolean |
//! | `statusReason`, `configuration` | string, when set |
//! | `statusUpdatedTime`, `connectionStateUpdatedTime`, `lastActivityTime` | RFC 3339 string, when set |
//! | `generationId`, `etag` | string (as serialized) |
//! | `{type:"device" or "custom", name}` | device property by well-known name or LWM2M path (`/3/0/9` is `BatteryLevel`) |
//! | `{type:"service", name}` | service property; nested members as `outer.inner` (an object exists but has no scalar value) |
//!
//! `status`, `connectionState`, `isManaged`, `deviceId` and all device and service
//! properties are answered from indexes; the other device fields by a scan.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use roaring::RoaringBitmap;

use super::ast::{PropertyType, QueryProperty};
use super::plan::within;
use super::source::{IndexedSource, Slots, ValueWalk};
use crate::registry::view::{DevicePropertyJson, ServiceMember};
use crate::registry::{PropertyId, Registry, Slot, TwinRef};
use crate::twin::{
    ConnectionState, DevicePropertyName, DeviceStatus, PropertyKind, Scalar, ServiceValue, Twin,
};

/// A device field a query can name with `type: "default"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TwinField {
    /// `deviceId`.
    DeviceId,
    /// `status`.
    Status,
    /// `connectionState`.
    ConnectionState,
    /// `isManaged`.
    IsManaged,
    /// `statusReason`.
    StatusReason,
    /// `statusUpdatedTime`.
    StatusUpdatedTime,
    /// `connectionStateUpdatedTime`.
    ConnectionStateUpdatedTime,
    /// `lastActivityTime`.
    LastActivityTime,
    /// `configuration`.
    Configuration,
    /// `generationId`.
    GenerationId,
    /// `etag`.
    Etag,
}

impl TwinField {
    /// Every field with its JSON name.
    pub const ALL: &'static [(TwinField, &'static str)] = &[
        (TwinField::DeviceId, "deviceId"),
        (TwinField::Status, "status"),
        (TwinField::ConnectionState, "connectionState"),
        (TwinField::IsManaged, "isManaged"),
        (TwinField::StatusReason, "statusReason"),
        (TwinField::StatusUpdatedTime, "statusUpdatedTime"),
        (
            TwinField::ConnectionStateUpdatedTime,
            "connectionStateUpdatedTime",
        ),
        (TwinField::LastActivityTime, "lastActivityTime"),
        (TwinField::Configuration, "configuration"),
        (TwinField::GenerationId, "generationId"),
        (TwinField::Etag, "etag"),
    ];

    fn by_name(name: &str) -> Option<TwinField> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }
}

fn status_str(s: DeviceStatus) -> &'static str {
    match s {
        DeviceStatus::Enabled => "enabled",
        DeviceStatus::Disabled => "disabled",
    }
}

fn connection_str(c: ConnectionState) -> &'static str {
    match c {
        ConnectionState::Connected => "Connected",
        ConnectionState::Disconnected => "Disconnected",
    }
}

/// The field's values, from whichever twin form (owned or view) provides them.
struct FieldValues<'a> {
    device_id: &'a str,
    status: DeviceStatus,
    connection_state: ConnectionState,
    is_managed: bool,
    status_reason: Option<&'a str>,
    status_updated_time: Option<crate::Timestamp>,
    connection_state_updated_time: Option<crate::Timestamp>,
    last_activity_time: Option<crate::Timestamp>,
    configuration: Option<&'a str>,
    generation_id: crate::twin::Etag,
    etag: crate::twin::Etag,
}

impl FieldValues<'_> {
    fn get(&self, field: TwinField) -> Option<Scalar> {
        Some(match field {
            TwinField::DeviceId => Scalar::from(self.device_id),
            TwinField::Status => Scalar::from(status_str(self.status)),
            TwinField::ConnectionState => Scalar::from(connection_str(self.connection_state)),
            TwinField::IsManaged => Scalar::Bool(self.is_managed),
            TwinField::StatusReason => Scalar::from(self.status_reason?),
            TwinField::StatusUpdatedTime => Scalar::from(self.status_updated_time?.to_string()),
            TwinField::ConnectionStateUpdatedTime => {
                Scalar::from(self.connection_state_updated_time?.to_string())
            }
            TwinField::LastActivityTime => Scalar::from(self.last_activity_time?.to_string()),
            TwinField::Configuration => Scalar::from(self.configuration?),
            TwinField::GenerationId => Scalar::from(self.generation_id.to_string()),
            TwinField::Etag => Scalar::from(self.etag.to_string()),
        })
    }
}

fn owned_fields(t: &Twin) -> FieldValues<'_> {
    FieldValues {
        device_id: t.device_id.as_str(),
        status: t.status,
        connection_state: t.connection_state,
        is_managed: t.is_managed,
        status_reason: t.status_reason.as_deref(),
        status_updated_time: t.status_updated_time,
        connection_state_updated_time: t.connection_state_updated_time,
        last_activity_time: t.last_activity_time,
        configuration: t.configuration.as_deref(),
        generation_id: t.generation_id,
        etag: t.etag,
    }
}

fn view_fields<'a>(t: &TwinRef<'a>) -> FieldValues<'a> {
    FieldValues {
        device_id: t.device_id().as_str(),
        status: t.status(),
        connection_state: t.connection_state(),
        is_managed: t.is_managed(),
        status_reason: t.status_reason(),
        status_updated_time: t.status_updated_time(),
        connection_state_updated_time: t.connection_state_updated_time(),
        last_activity_time: t.last_activity_time(),
        configuration: t.configuration(),
        generation_id: t.generation_id(),
        etag: t.etag(),
    }
}

/// What a query property names on a twin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TwinPath {
    Field(TwinField),
    Device(String),
    Service(String),
}

/// Resolves a query property on twins (tags excluded), or `None` if no twin can have it.
pub(crate) fn twin_path(p: &QueryProperty) -> Option<TwinPath> {
    match p.kind {
        PropertyType::Default => TwinField::by_name(&p.name).map(TwinPath::Field),
        PropertyType::Device | PropertyType::Custom => DevicePropertyName::parse(&p.name)
            .ok()
            .map(|n| TwinPath::Device(n.as_str().to_owned())),
        PropertyType::Service => Some(TwinPath::Service(p.name.clone())),
        PropertyType::Aggregated => None,
    }
}

/// A twin's value at a path: `(exists, scalar value)`.
pub(crate) fn twin_value(t: &Twin, path: &TwinPath) -> (bool, Option<Scalar>) {
    match path {
        TwinPath::Field(f) => {
            let v = owned_fields(t).get(*f);
            (v.is_some(), v)
        }
        TwinPath::Device(name) => match t.device_properties.get(name) {
            Some(d) => (true, Some(d.value.clone())),
            None => (false, None),
        },
        TwinPath::Service(name) => {
            let mut parts = name.split('.');
            let first = parts.next().unwrap_or("");
            let mut node = t.service_properties.properties.get(first);
            for part in parts {
                node = match node {
                    Some(ServiceValue::Object(m)) => m.get(part),
                    _ => None,
                };
            }
            match node {
                None => (false, None),
                Some(ServiceValue::Scalar(s)) => (true, Some(s.clone())),
                Some(ServiceValue::Object(_)) => (true, None),
            }
        }
    }
}

/// A twin reduced to its id and the given properties, in the twin's JSON shape:
/// device fields at the top, `deviceProperties.<name>`, `serviceProperties.properties.<name>`
/// (nested names kept as written), `serviceProperties.tags`.
pub fn project_twin(t: &Twin, properties: &[QueryProperty]) -> serde_json::Value {
    let full = serde_json::to_value(t).unwrap_or_default();
    let mut out = serde_json::Map::new();
    out.insert("deviceId".into(), full["deviceId"].clone());
    for p in properties {
        if p.is_tags() {
            let tags = full["serviceProperties"]["tags"].clone();
            service_section(&mut out).insert("tags".into(), tags);
            continue;
        }
        match twin_path(p) {
            Some(TwinPath::Field(_)) => {
                if let Some(v) = full.get(&p.name) {
                    out.insert(p.name.clone(), v.clone());
                }
            }
            Some(TwinPath::Device(name)) => {
                if let Some(v) = full["deviceProperties"].get(&name) {
                    let section = out
                        .entry("deviceProperties")
                        .or_insert_with(|| serde_json::Value::Object(Default::default()));
                    if let Some(m) = section.as_object_mut() {
                        m.insert(name, v.clone());
                    }
                }
            }
            Some(TwinPath::Service(name)) => {
                let mut node = Some(&full["serviceProperties"]["properties"]);
                for part in name.split('.') {
                    node = node.and_then(|n| n.get(part));
                }
                if let Some(v) = node {
                    let section = service_section(&mut out)
                        .entry("properties")
                        .or_insert_with(|| serde_json::Value::Object(Default::default()));
                    if let Some(m) = section.as_object_mut() {
                        m.insert(name, v.clone());
                    }
                }
            }
            None => {}
        }
    }
    serde_json::Value::Object(out)
}

/// A projection resolved once for a page of twins: the keys each row writes, in the
/// order they sort (the order [`project_twin`]'s JSON object has), each device and
/// service property once.
#[derive(Debug)]
pub struct TwinProjectionPlan {
    top: Vec<Top>,
    device: Vec<String>,
    service: Vec<String>,
    tags: bool,
}

#[derive(Debug)]
enum Top {
    Field(String, TwinField),
    DeviceProperties,
    ServiceProperties,
}

impl Top {
    fn key(&self) -> &str {
        match self {
            Top::Field(name, _) => name,
            Top::DeviceProperties => "deviceProperties",
            Top::ServiceProperties => "serviceProperties",
        }
    }
}

impl TwinProjectionPlan {
    /// Resolves the properties (unknown ones project nothing).
    pub fn new(properties: &[QueryProperty]) -> Self {
        let mut fields = BTreeMap::from([("deviceId".to_owned(), TwinField::DeviceId)]);
        let mut device = std::collections::BTreeSet::new();
        let mut service = std::collections::BTreeSet::new();
        let mut tags = false;
        for p in properties {
            if p.is_tags() {
                tags = true;
                continue;
            }
            match twin_path(p) {
                Some(TwinPath::Field(f)) => {
                    fields.insert(p.name.clone(), f);
                }
                Some(TwinPath::Device(name)) => {
                    device.insert(name);
                }
                Some(TwinPath::Service(name)) => {
                    service.insert(name);
                }
                None => {}
            }
        }
        let mut top: Vec<Top> = fields
            .into_iter()
            .map(|(name, f)| Top::Field(name, f))
            .collect();
        if !device.is_empty() {
            top.push(Top::DeviceProperties);
        }
        if tags || !service.is_empty() {
            top.push(Top::ServiceProperties);
        }
        top.sort_by(|a, b| a.key().cmp(b.key()));
        TwinProjectionPlan {
            top,
            device: device.into_iter().collect(),
            service: service.into_iter().collect(),
            tags,
        }
    }
}

/// One twin's projection, read from the registry's view as it is written out: no owned
/// twin, no `serde_json::Value`, no owned map of the row's service properties and no
/// cloned value is built (a projected scalar is written from the registry's value; a
/// projected object from the sorted borrowed nodes under it). Serialises to the same
/// JSON as [`project_twin`] on the same twin.
#[derive(Clone, Debug)]
pub struct TwinProjection<'a> {
    twin: TwinRef<'a>,
    plan: Arc<TwinProjectionPlan>,
}

impl TwinProjection<'_> {
    /// The projected twin's id.
    pub fn device_id(&self) -> &str {
        self.twin.device_id().as_str()
    }
}

impl serde::Serialize for TwinProjection<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let t = &self.twin;
        let plan = &self.plan;
        let mut map = s.serialize_map(None)?;
        for top in &plan.top {
            match top {
                Top::Field(name, f) => match f {
                    TwinField::DeviceId => map.serialize_entry(name, t.device_id())?,
                    TwinField::Status => map.serialize_entry(name, &t.status())?,
                    TwinField::ConnectionState => {
                        map.serialize_entry(name, &t.connection_state())?
                    }
                    TwinField::IsManaged => map.serialize_entry(name, &t.is_managed())?,
                    TwinField::StatusReason => {
                        if let Some(v) = t.status_reason() {
                            map.serialize_entry(name, v)?
                        }
                    }
                    TwinField::StatusUpdatedTime => {
                        if let Some(v) = t.status_updated_time() {
                            map.serialize_entry(name, &v)?
                        }
                    }
                    TwinField::ConnectionStateUpdatedTime => {
                        if let Some(v) = t.connection_state_updated_time() {
                            map.serialize_entry(name, &v)?
                        }
                    }
                    TwinField::LastActivityTime => {
                        if let Some(v) = t.last_activity_time() {
                            map.serialize_entry(name, &v)?
                        }
                    }
                    TwinField::Configuration => {
                        if let Some(v) = t.configuration() {
                            map.serialize_entry(name, v)?
                        }
                    }
                    TwinField::GenerationId => map.serialize_entry(name, &t.generation_id())?,
                    TwinField::Etag => map.serialize_entry(name, &t.etag())?,
                },
                Top::DeviceProperties => {
                    let present: Vec<(&str, DevicePropertyJson<'_>)> = plan
                        .device
                        .iter()
                        .filter_map(|name| {
                            let (value, at) = t.device_property(name)?;
                            Some((
                                name.as_str(),
                                DevicePropertyJson {
                                    value,
                                    last_updated_time: at,
                                },
                            ))
                        })
                        .collect();
                    if !present.is_empty() {
                        map.serialize_entry("deviceProperties", &Entries(&present))?;
                    }
                }
                Top::ServiceProperties => {
                    let present: Vec<(&str, ServiceMember<'_>)> = plan
                        .service
                        .iter()
                        .filter_map(|name| Some((name.as_str(), t.service_member(name)?)))
                        .collect();
                    if plan.tags || !present.is_empty() {
                        let mut tags: Vec<&str> = if plan.tags {
                            t.tags().collect()
                        } else {
                            Vec::new()
                        };
                        tags.sort_unstable();
                        map.serialize_entry(
                            "serviceProperties",
                            &ServiceSection {
                                properties: (!present.is_empty()).then_some(Entries(&present)),
                                tags: plan.tags.then_some(tags),
                            },
                        )?;
                    }
                }
            }
        }
        map.end()
    }
}

/// A list of `(name, value)` written as a JSON object.
struct Entries<'a, V>(&'a [(&'a str, V)]);

impl<V: serde::Serialize> serde::Serialize for Entries<'_, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(serde::Serialize)]
struct ServiceSection<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<Entries<'a, ServiceMember<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<&'a str>>,
}

fn service_section(
    out: &mut serde_json::Map<String, serde_json::Value>,
) -> &mut serde_json::Map<String, serde_json::Value> {
    let section = out
        .entry("serviceProperties")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !section.is_object() {
        *section = serde_json::Value::Object(Default::default());
    }
    match section {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// A property of the registry's twins, as the executor addresses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TwinProperty {
    /// An indexed device or service property.
    Indexed(PropertyId),
    /// A device field.
    Field(TwinField),
}

impl Registry {
    fn field_of(&self, slot: u32, field: TwinField) -> Option<Scalar> {
        let t = self.twin_at(Slot(slot))?;
        view_fields(&t).get(field)
    }

    /// Every value of a scanned field with its slots (for fields without an index).
    fn scan_field(&self, field: TwinField) -> BTreeMap<Scalar, RoaringBitmap> {
        let mut out: BTreeMap<Scalar, RoaringBitmap> = BTreeMap::new();
        for slot in self.universe() {
            if let Some(v) = self.field_of(slot, field) {
                out.entry(v).or_default().insert(slot);
            }
        }
        out
    }

    fn field_bitmaps(&self, field: TwinField) -> Option<Vec<(Scalar, &RoaringBitmap)>> {
        Some(match field {
            TwinField::Status => [DeviceStatus::Disabled, DeviceStatus::Enabled]
                .into_iter()
                .map(|s| (Scalar::from(status_str(s)), self.status_bitmap(s)))
                .collect(),
            TwinField::ConnectionState => {
                [ConnectionState::Connected, ConnectionState::Disconnected]
                    .into_iter()
                    .map(|c| (Scalar::from(connection_str(c)), self.connection_bitmap(c)))
                    .collect()
            }
            TwinField::IsManaged => [false, true]
                .into_iter()
                .map(|m| (Scalar::Bool(m), self.managed_bitmap(m)))
                .collect(),
            _ => return None,
        })
    }
}

fn to_str_bound(b: Bound<&Scalar>, lower: bool) -> Option<Bound<&str>> {
    // Strings are the top segment: a non-string lower bound admits every string, a
    // non-string upper bound admits none.
    Some(match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(Scalar::String(s)) => Bound::Included(s),
        Bound::Excluded(Scalar::String(s)) => Bound::Excluded(s),
        _ if lower => Bound::Unbounded,
        _ => return None,
    })
}

impl IndexedSource for Registry {
    type Property = TwinProperty;
    type Document<'a> = TwinRef<'a>;
    type Projection = Arc<TwinProjectionPlan>;
    type Projected<'a> = TwinProjection<'a>;

    fn universe(&self) -> &RoaringBitmap {
        Registry::universe(self)
    }

    fn resolve(&self, property: &QueryProperty) -> Option<TwinProperty> {
        match twin_path(property)? {
            TwinPath::Field(f) => Some(TwinProperty::Field(f)),
            TwinPath::Device(name) => self
                .property_id(PropertyKind::Device, &name)
                .map(TwinProperty::Indexed),
            TwinPath::Service(name) => self
                .property_id(PropertyKind::Service, &name)
                .map(TwinProperty::Indexed),
        }
    }

    fn tag_bitmap(&self, tag: &str) -> Option<&RoaringBitmap> {
        Registry::tag_bitmap(self, tag)
    }

    fn value_slots(&self, property: TwinProperty, value: &Scalar) -> Option<Slots<'_>> {
        match property {
            TwinProperty::Indexed(id) => Registry::value_slots(self, id, value).map(Slots::from),
            TwinProperty::Field(TwinField::DeviceId) => {
                self.slot_of(value.as_str()?).map(|s| Slots::One(s.0))
            }
            TwinProperty::Field(f) => match self.field_bitmaps(f) {
                Some(all) => all
                    .into_iter()
                    .find(|(v, _)| v == value)
                    .map(|(_, b)| Slots::Borrowed(b)),
                None => self.scan_field(f).remove(value).map(Slots::Owned),
            },
        }
    }

    fn filter_range(
        &self,
        property: TwinProperty,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
        within: &RoaringBitmap,
    ) -> Option<RoaringBitmap> {
        match property {
            TwinProperty::Indexed(id) => Some(Registry::filter_range(self, id, lo, hi, within)),
            TwinProperty::Field(_) => None,
        }
    }

    fn group_rows(
        &self,
        property: TwinProperty,
        rows: &RoaringBitmap,
    ) -> Option<Vec<(Cow<'_, Scalar>, RoaringBitmap)>> {
        match property {
            TwinProperty::Indexed(id) => Some(
                Registry::group_rows(self, id, rows)
                    .into_iter()
                    .map(|(v, slots)| (Cow::Borrowed(v), slots))
                    .collect(),
            ),
            TwinProperty::Field(_) => None,
        }
    }

    fn count_range(
        &self,
        property: TwinProperty,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
        within: &RoaringBitmap,
    ) -> Option<u64> {
        match property {
            TwinProperty::Indexed(id) => Some(Registry::count_range(self, id, lo, hi, within)),
            TwinProperty::Field(_) => None,
        }
    }

    fn values_in_range<'a>(
        &'a self,
        property: TwinProperty,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
    ) -> ValueWalk<'a> {
        let (lo_owned, hi_owned) = (lo.cloned(), hi.cloned());
        let inside = move |v: &Scalar| within(v, &lo_owned, &hi_owned);
        match property {
            TwinProperty::Indexed(id) => Box::new(
                Registry::values_in_range(self, id, lo, hi)
                    .map(|(v, s)| (Cow::Borrowed(v), Slots::from(s))),
            ),
            TwinProperty::Field(TwinField::DeviceId) => {
                let (Some(l), Some(h)) = (to_str_bound(lo, true), to_str_bound(hi, false)) else {
                    return Box::new(std::iter::empty());
                };
                let ids: Vec<(Cow<'a, Scalar>, Slots<'a>)> = self
                    .device_ids(l)
                    .take_while(|(id, _)| match h {
                        Bound::Unbounded => true,
                        Bound::Included(h) => id.as_str() <= h,
                        Bound::Excluded(h) => id.as_str() < h,
                    })
                    .map(|(id, slot)| (Cow::Owned(Scalar::from(id.as_str())), Slots::One(slot.0)))
                    .collect();
                Box::new(ids.into_iter())
            }
            TwinProperty::Field(f) => match self.field_bitmaps(f) {
                Some(all) => Box::new(
                    all.into_iter()
                        .filter(move |(v, b)| inside(v) && !b.is_empty())
                        .map(|(v, b)| (Cow::Owned(v), Slots::Borrowed(b))),
                ),
                None => Box::new(
                    self.scan_field(f)
                        .into_iter()
                        .filter(move |(v, _)| inside(v))
                        .map(|(v, b)| (Cow::Owned(v), Slots::Owned(b))),
                ),
            },
        }
    }

    fn distinct_values(&self, property: TwinProperty) -> usize {
        match property {
            TwinProperty::Indexed(id) => Registry::distinct_values(self, id),
            TwinProperty::Field(
                TwinField::Status | TwinField::ConnectionState | TwinField::IsManaged,
            ) => 2,
            TwinProperty::Field(_) => self.len(),
        }
    }

    fn exists_bitmap(&self, property: TwinProperty) -> Cow<'_, RoaringBitmap> {
        match property {
            TwinProperty::Indexed(id) => Registry::exists_bitmap(self, id)
                .map_or_else(|| Cow::Owned(RoaringBitmap::new()), Cow::Borrowed),
            TwinProperty::Field(
                TwinField::DeviceId
                | TwinField::Status
                | TwinField::ConnectionState
                | TwinField::IsManaged
                | TwinField::GenerationId
                | TwinField::Etag,
            ) => Cow::Borrowed(Registry::universe(self)),
            TwinProperty::Field(f) => Cow::Owned(
                Registry::universe(self)
                    .iter()
                    .filter(|&slot| self.field_of(slot, f).is_some())
                    .collect(),
            ),
        }
    }

    fn value_of(&self, slot: u32, property: TwinProperty) -> Option<Cow<'_, Scalar>> {
        match property {
            TwinProperty::Indexed(id) => {
                Registry::value_of(self, Slot(slot), id).map(Cow::Borrowed)
            }
            TwinProperty::Field(f) => self.field_of(slot, f).map(Cow::Owned),
        }
    }

    fn id_of(&self, slot: u32) -> &str {
        self.twin_at(Slot(slot))
            .map_or("", |t| t.device_id().as_str())
    }

    fn ids_in_order<'a>(
        &'a self,
        after: Option<&str>,
    ) -> Box<dyn Iterator<Item = (&'a str, u32)> + 'a> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Box::new(
            self.device_ids(start)
                .map(|(id, slot)| (id.as_str(), slot.0)),
        )
    }

    fn slots_in_id_order<'a>(&'a self, after: Option<&str>) -> Box<dyn Iterator<Item = u32> + 'a> {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        // Straight from the id order's entries: no slot entry is read per step.
        Box::new(self.id_order.range(&self.slots, start))
    }

    fn fill_id_order(&self, after: Option<&str>, n: usize, out: &mut Vec<u32>) {
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.id_order.fill(&self.slots, start, n, out);
    }

    fn document(&self, slot: u32) -> Option<TwinRef<'_>> {
        self.twin_at(Slot(slot))
    }

    fn projection(&self, properties: &[QueryProperty]) -> Arc<TwinProjectionPlan> {
        Arc::new(TwinProjectionPlan::new(properties))
    }

    fn project(&self, slot: u32, plan: &Arc<TwinProjectionPlan>) -> Option<TwinProjection<'_>> {
        self.twin_at(Slot(slot)).map(|twin| TwinProjection {
            twin,
            plan: Arc::clone(plan),
        })
    }
}
