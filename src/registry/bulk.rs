//! Bulk loading: many new devices at once, from owned twins or from borrowed rows.

use super::hash::same_str;
use super::load::{Loader, Place};
use super::{Extra, NewFields, Registry, RegistryError, Slot, truncated};
use crate::twin::{
    ConnectionState, DevicePropertyName, DeviceStatus, MAX_DEVICE_PROPERTIES,
    MAX_SERVICE_PROPERTIES, MAX_TAGS, PropertyKind, ScalarRef, Twin, TwinError,
    check_field_lengths, validate_property_name, validate_string_ref, validate_tag,
};
use crate::{DeviceId, Timestamp};

/// A new device as borrowed rows: what [`BulkLoad::add`] takes.
///
/// It covers what a fleet import carries; a device that also needs authentication, a
/// registration or a configuration goes in as a [`Twin`]
/// ([`BulkLoad::add_twin`]). Service properties here are scalars; a nested object goes
/// in as a twin too.
#[derive(Clone, Copy, Debug)]
pub struct NewDevice<'a> {
    /// The device id (validated like [`DeviceId::new`]).
    pub device_id: &'a str,
    /// Enabled or disabled.
    pub status: DeviceStatus,
    /// Why the status was set.
    pub status_reason: Option<&'a str>,
    /// When the status last changed.
    pub status_updated_time: Option<Timestamp>,
    /// Connected or disconnected.
    pub connection_state: ConnectionState,
    /// When the connection state last changed.
    pub connection_state_updated_time: Option<Timestamp>,
    /// When the device was last heard from.
    pub last_activity_time: Option<Timestamp>,
    /// Whether the device is managed over LWM2M.
    pub is_managed: bool,
    /// Device properties: canonical name (see [`DevicePropertyName`]), value, and when
    /// it was reported. Each name at most once.
    pub device_properties: &'a [(&'a str, ScalarRef<'a>, Timestamp)],
    /// Service properties: name and scalar value. Each name at most once.
    pub service_properties: &'a [(&'a str, ScalarRef<'a>)],
    /// Tags (a repeated tag counts once).
    pub tags: &'a [&'a str],
}

impl<'a> NewDevice<'a> {
    /// A device with this id and nothing else: enabled, disconnected, unmanaged.
    pub fn new(device_id: &'a str) -> Self {
        NewDevice {
            device_id,
            status: DeviceStatus::Enabled,
            status_reason: None,
            status_updated_time: None,
            connection_state: ConnectionState::Disconnected,
            connection_state_updated_time: None,
            last_activity_time: None,
            is_managed: false,
            device_properties: &[],
            service_properties: &[],
            tags: &[],
        }
    }
}

/// A bulk load in progress: many new devices at once.
///
/// [`Registry::bulk_load`] returns a [`BulkLoad`]. It takes devices one at a time, either
/// as owned [`Twin`]s ([`BulkLoad::add_twin`], what [`Registry::load`] does) or as
/// borrowed [`NewDevice`] rows ([`BulkLoad::add`]): ids, names and values as `&str`
/// slices of the caller's buffer (a file being parsed, a database cursor's row), so no
/// twin is built and nothing per value is allocated unless the value is new.
///
/// The calling thread validates each device and gives it a slot, a batch at a time
/// (8,192 twins; for rows each next batch twice as many, up to 32,768); a full batch's
/// values are indexed by other threads (up to 3) while this one takes the next batch,
/// then it helps them finish. Reads wait: a `BulkLoad` holds the registry mutably.
/// When it ends ([`BulkLoad::finish`], or dropped, also while unwinding from a panic)
/// the last batch is indexed and every thread has ended, so the registry is consistent
/// again.
///
/// ```
/// use twinhub::registry::{NewDevice, Registry};
/// use twinhub::twin::ScalarRef;
/// use twinhub::Timestamp;
///
/// let mut reg = Registry::new();
/// let now = Timestamp::from_millis(1_461_931_200_000);
/// let mut bulk = reg.bulk_load();
/// for (id, fw, region) in [("d1", "1.2", "eu"), ("d2", "1.3", "us")] {
///     let props = [("FirmwareVersion", ScalarRef::from(fw), now)];
///     let service = [("region", ScalarRef::from(region))];
///     bulk.add(&NewDevice {
///         device_properties: &props,
///         service_properties: &service,
///         tags: &["pilot"],
///         ..NewDevice::new(id)
///     })
///     .unwrap();
/// }
/// assert_eq!(bulk.finish(), 2);
/// assert_eq!(reg.tag_bitmap("pilot").unwrap().len(), 2);
/// reg.validate().unwrap();
/// ```
pub struct BulkLoad<'r> {
    loader: Loader<'r>,
    /// The previous row's property and tag ids, by position. The rows of a fleet list
    /// the same names in the same order, so a name is usually resolved (and known
    /// valid) with one string comparison instead of a hash lookup and validation.
    device_pids: Vec<u32>,
    service_pids: Vec<u32>,
    tag_ids: Vec<u32>,
    /// Whether the ids above are those of a row that was admitted (so unique).
    trusted: bool,
    /// Scratch: the ids being replaced; sorted ids (duplicate checks).
    previous: Vec<u32>,
    sorted: Vec<u32>,
    added: usize,
    /// Tag ids met lately, by a hash of the tag: a fleet's rows draw their tags from a
    /// few hundred, in no order the position cache above can follow.
    recent_tags: Box<[u32; RECENT_TAGS]>,
}

impl std::fmt::Debug for BulkLoad<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkLoad").finish_non_exhaustive()
    }
}

/// Entries in [`BulkLoad`]'s recent tags (each a tag id plus one; 0 is empty).
const RECENT_TAGS: usize = 512;

/// Where `tag` goes among the recent tags.
fn recent_tag_at(tag: &str) -> usize {
    (super::hash::memo_key(tag.as_bytes()) >> 55) as usize
}

impl Registry {
    /// Starts a bulk load: see [`BulkLoad`].
    pub fn bulk_load(&mut self) -> BulkLoad<'_> {
        BulkLoad {
            loader: Loader::new(self),
            device_pids: Vec::new(),
            service_pids: Vec::new(),
            tag_ids: Vec::new(),
            trusted: false,
            previous: Vec::new(),
            sorted: Vec::new(),
            added: 0,
            recent_tags: Box::new([0; RECENT_TAGS]),
        }
    }

    /// The id of device property `name`, which must be canonical (interned if new).
    fn device_property_id(&mut self, name: &str) -> Result<u32, TwinError> {
        if let Some(&pid) = self.device_prop_ids.get(name) {
            return Ok(pid);
        }
        DevicePropertyName::parse_canonical(name)?;
        Ok(self.intern_property(PropertyKind::Device, name))
    }

    /// The id of service property `name` (validated, interned if new).
    fn service_property_id(&mut self, name: &str) -> Result<u32, TwinError> {
        if let Some(&pid) = self.service_prop_ids.get(name) {
            return Ok(pid);
        }
        validate_property_name(name)?;
        Ok(self.intern_property(PropertyKind::Service, name))
    }

    /// The id of `tag` (validated, interned if new).
    fn tag_id(&mut self, tag: &str) -> Result<u32, TwinError> {
        if let Some(&tid) = self.tag_ids.get(tag) {
            return Ok(tid);
        }
        validate_tag(tag)?;
        Ok(self.intern_tag(tag))
    }
}

fn property_name(reg: &Registry, pid: u32) -> &str {
    &reg.props[pid as usize].name
}

fn tag_name(reg: &Registry, tid: u32) -> &str {
    &reg.tags[tid as usize].name
}

/// Resolves `names` into `ids` (position by position). The previous row's ids are
/// there already: `names[i]` is usually the name of the id at `i` (or, when an optional
/// property comes or goes, at `i + 1` or `i - 1`), found with a string comparison;
/// otherwise `resolve` looks it up (and validates it). Returns whether the ids are the
/// previous row's, exactly.
fn resolve_all<'n>(
    reg: &mut Registry,
    names: impl Iterator<Item = &'n str>,
    ids: &mut Vec<u32>,
    previous: &mut Vec<u32>,
    name_of: fn(&Registry, u32) -> &str,
    mut resolve: impl FnMut(&mut Registry, &str) -> Result<u32, TwinError>,
) -> Result<bool, TwinError> {
    std::mem::swap(ids, previous);
    ids.clear();
    let mut same = true;
    for (i, name) in names.enumerate() {
        let is = |j: usize| {
            previous
                .get(j)
                .copied()
                .filter(|&id| same_str(name_of(reg, id), name))
        };
        let id = match is(i) {
            Some(id) => id,
            None => {
                same = false;
                match is(i + 1).or_else(|| i.checked_sub(1).and_then(is)) {
                    Some(id) => id,
                    None => resolve(reg, name)?,
                }
            }
        };
        ids.push(id);
    }
    Ok(same && ids.len() == previous.len())
}

/// Fails with the first name whose id repeats in `ids`.
fn check_unique(
    ids: &[u32],
    sorted: &mut Vec<u32>,
    name: impl Fn(u32) -> String,
) -> Result<(), TwinError> {
    sorted.clear();
    sorted.extend_from_slice(ids);
    sorted.sort_unstable();
    match sorted.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(TwinError::DuplicateProperty { name: name(w[0]) }),
        None => Ok(()),
    }
}

impl BulkLoad<'_> {
    /// Creates a device from a borrowed row. The row is validated first; an invalid row
    /// (or one whose id exists) changes nothing and the load goes on. Emits
    /// [`super::ChangeKind::Created`].
    pub fn add(&mut self, device: &NewDevice<'_>) -> Result<Slot, RegistryError> {
        self.add_with(device, None)
    }

    /// [`BulkLoad::add`] of a stored twin: `extra` holds what a row does not (its
    /// authentication, registration and configuration; the row's status reason is put
    /// into it), checked like [`Registry::create`] checks a twin's.
    pub(crate) fn add_stored(
        &mut self,
        device: &NewDevice<'_>,
        extra: Extra,
    ) -> Result<Slot, RegistryError> {
        self.add_with(device, Some(extra))
    }

    fn add_with(
        &mut self,
        device: &NewDevice<'_>,
        extra: Option<Extra>,
    ) -> Result<Slot, RegistryError> {
        let id = DeviceId::new(device.device_id).map_err(|e| RegistryError::Invalid {
            id: truncated(device.device_id),
            error: TwinError::BadDeviceId(e),
        })?;
        let BulkLoad {
            loader,
            device_pids,
            service_pids,
            tag_ids,
            trusted,
            previous,
            sorted,
            added,
            recent_tags,
        } = self;
        let (reg, stage) = loader.parts();
        let id_hash = reg.id_hash(id.as_str());
        if reg.find_slot_hashed(id_hash, id.as_str()).is_some() {
            return Err(RegistryError::DeviceExists { id });
        }
        let checked = (|| {
            let (dp, sp, tags) = (
                device.device_properties,
                device.service_properties,
                device.tags,
            );
            let extra = extra.as_ref();
            check_field_lengths([
                ("statusReason", device.status_reason),
                (
                    "configuration",
                    extra.and_then(|e| e.configuration.as_deref()),
                ),
                (
                    "authentication.pskIdentity",
                    extra.and_then(|e| e.authentication.psk_identity.as_deref()),
                ),
            ])?;
            if dp.len() > MAX_DEVICE_PROPERTIES {
                return Err(TwinError::TooManyDeviceProperties { count: dp.len() });
            }
            if sp.len() > MAX_SERVICE_PROPERTIES {
                return Err(TwinError::TooManyServiceProperties { count: sp.len() });
            }
            if tags.len() > MAX_TAGS {
                return Err(TwinError::TooManyTags { count: tags.len() });
            }
            let same_device = resolve_all(
                reg,
                dp.iter().map(|d| d.0),
                device_pids,
                previous,
                property_name,
                Registry::device_property_id,
            )?;
            for (&pid, &(_, value, _)) in device_pids.iter().zip(dp) {
                reg.check_device_value(pid, value)?;
            }
            let same_service = resolve_all(
                reg,
                sp.iter().map(|s| s.0),
                service_pids,
                previous,
                property_name,
                Registry::service_property_id,
            )?;
            for &(name, value) in sp {
                validate_string_ref(name, value)?;
            }
            resolve_all(
                reg,
                tags.iter().copied(),
                tag_ids,
                previous,
                tag_name,
                |reg, tag| {
                    let at = recent_tag_at(tag);
                    let known = recent_tags[at].checked_sub(1);
                    if let Some(tid) = known.filter(|&tid| same_str(tag_name(reg, tid), tag)) {
                        return Ok(tid);
                    }
                    let tid = reg.tag_id(tag)?;
                    recent_tags[at] = tid + 1;
                    Ok(tid)
                },
            )?;
            // The previous row's names were unique if it was admitted.
            if !(same_device && same_service && *trusted) {
                let name = |pid: u32| reg.props[pid as usize].name.to_string();
                check_unique(device_pids, sorted, name)?;
                check_unique(service_pids, sorted, name)?;
            }
            Ok(())
        })();
        *trusted = checked.is_ok();
        checked.map_err(|error| RegistryError::Invalid {
            id: id.to_string(),
            error,
        })?;
        let fields = NewFields {
            id,
            id_hash,
            status: device.status,
            status_updated: device.status_updated_time,
            connection: device.connection_state,
            connection_updated: device.connection_state_updated_time,
            last_activity: device.last_activity_time,
            managed: device.is_managed,
            extra: match (extra, device.status_reason) {
                (None, None) => None,
                (extra, reason) => {
                    let mut extra = extra.unwrap_or_default();
                    extra.status_reason = reason.map(str::to_string);
                    Extra::boxed(extra)
                }
            },
        };
        let slot = reg.admit_with(fields, stage, |reg, place, slot| {
            for (&pid, &(_, value, ts)) in device_pids.iter().zip(device.device_properties) {
                place.device(reg, pid, value, ts, slot);
            }
            for (&pid, &(_, value)) in service_pids.iter().zip(device.service_properties) {
                place.service(reg, pid, Some(value), slot);
            }
            sorted.clear();
            sorted.extend_from_slice(tag_ids);
            sorted.sort_unstable();
            sorted.dedup();
            for &tid in sorted.iter() {
                place.tag(reg, tid, slot);
            }
        })?;
        loader.admitted();
        *added += 1;
        Ok(slot)
    }

    /// Makes room for `additional` more devices, so that the load need not grow (and
    /// rehash) the registry's tables on the way: call it first when the count is known
    /// (a file's row count, a query's). [`Registry::load`] calls it with the iterator's
    /// lower size bound.
    pub fn reserve(&mut self, additional: usize) {
        let (reg, _) = self.loader.parts();
        reg.reserve(additional);
    }

    /// Creates a device from an owned twin, as [`Registry::create`] does (the twin is
    /// validated first; an invalid one changes nothing and the load goes on).
    pub fn add_twin(&mut self, twin: Twin) -> Result<Slot, RegistryError> {
        let slot = self.loader.push(twin)?;
        self.added += 1;
        Ok(slot)
    }

    /// Ends the load (indexes what is left, waits for the other threads) and returns
    /// how many devices it created.
    pub fn finish(self) -> usize {
        self.added
    }
}
