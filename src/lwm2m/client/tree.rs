//! [`ObjectTree`]: the device's objects, addressed by LWM2M path, with the server-side
//! rules (access modes, types, validation before any write, Security /0 hidden) applied
//! before any object is called. No CoAP here: the client core maps requests onto it.

use super::firmware::FirmwareUpdate;
use super::model::{Object, ObjectError, ResourceData, ResourceDef, coerce};
use crate::lwm2m::{Content, Lwm2mPath, ResourceType, ResourceValue};
use crate::transport::WriteMode;

/// The most instances a Create may make of one object, whatever the object allows.
pub const MAX_CREATED_INSTANCES: usize = 1024;

/// The objects of one device, sorted by object id.
///
/// ```
/// use twinhub::lwm2m::client::{ObjectTree, objects};
/// use twinhub::{Lwm2mPath, ResourceValue};
/// let mut tree = ObjectTree::new();
/// tree.add(objects::device("Contoso", "M1", "SN-7", "1.0"));
/// let c = tree.read(&Lwm2mPath::resource(3, 0, 2)).unwrap();
/// assert_eq!(c.values[0].1, ResourceValue::String("SN-7".into()));
/// ```
#[derive(Default)]
pub struct ObjectTree {
    objects: Vec<Box<dyn Object>>,
    firmware: Option<FirmwareUpdate>,
}

impl std::fmt::Debug for ObjectTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectTree")
            .field("objects", &self.objects.len())
            .finish_non_exhaustive()
    }
}

impl ObjectTree {
    /// An empty tree.
    pub fn new() -> Self {
        ObjectTree::default()
    }

    /// Adds (or replaces) an object; it answers for its definition's id.
    pub fn add(&mut self, object: impl Object + 'static) {
        self.add_boxed(Box::new(object));
    }

    /// Adds (or replaces) a boxed object.
    pub fn add_boxed(&mut self, object: Box<dyn Object>) {
        let id = object.definition().id;
        if id == 5 {
            self.firmware = None;
        }
        match self
            .objects
            .binary_search_by_key(&id, |o| o.definition().id)
        {
            Ok(at) => self.objects[at] = object,
            Err(at) => self.objects.insert(at, object),
        }
    }

    /// Installs the Firmware Update object /5 (kept typed, so the client can drive
    /// downloads and the application can report update outcomes).
    pub fn set_firmware(&mut self, firmware: FirmwareUpdate) {
        if let Ok(at) = self.objects.binary_search_by_key(&5, |o| o.definition().id) {
            self.objects.remove(at);
        }
        self.firmware = Some(firmware);
    }

    /// The Firmware Update object, if installed.
    pub fn firmware_mut(&mut self) -> Option<&mut FirmwareUpdate> {
        self.firmware.as_mut()
    }

    /// The object with id `oid`.
    pub fn object_mut(&mut self, oid: u16) -> Option<&mut dyn Object> {
        if oid == 5 && self.firmware.is_some() {
            return self.firmware.as_mut().map(|f| f as &mut dyn Object);
        }
        let at = self
            .objects
            .binary_search_by_key(&oid, |o| o.definition().id)
            .ok()?;
        Some(self.objects[at].as_mut())
    }

    /// The declared type of the resource a value path (`/o/i/r` or `/o/i/r/ri`) belongs to,
    /// if the tree has that object and its definition that resource.
    pub(crate) fn resource_type(&self, path: &Lwm2mPath) -> Option<ResourceType> {
        let (oid, rid) = (path.object_id()?, path.resource_id()?);
        let def = match (&self.firmware, oid) {
            (Some(fw), 5) => fw.definition(),
            _ => {
                let at = self
                    .objects
                    .binary_search_by_key(&oid, |o| o.definition().id)
                    .ok()?;
                self.objects[at].definition()
            }
        };
        def.resource(rid).map(|r| r.kind)
    }

    /// The object ids, ascending.
    pub fn object_ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.objects.iter().map(|o| o.definition().id).collect();
        if self.firmware.is_some()
            && let Err(at) = ids.binary_search(&5)
        {
            ids.insert(at, 5);
        }
        ids
    }

    fn each_object(&mut self, mut f: impl FnMut(&mut dyn Object)) {
        for o in &mut self.objects {
            f(o.as_mut());
        }
        if let Some(fw) = self.firmware.as_mut() {
            f(fw);
        }
    }

    /// Moves the paths objects changed on their own since the last call into `out`.
    pub fn drain_changes(&mut self, out: &mut Vec<Lwm2mPath>) {
        self.each_object(|o| o.drain_changes(out));
    }

    /// Finds the object for a server request; Security /0 is refused.
    fn server_object(&mut self, path: &Lwm2mPath) -> Result<&mut dyn Object, ObjectError> {
        let oid = path.object_id().ok_or(ObjectError::MethodNotAllowed)?;
        if oid == 0 {
            return Err(ObjectError::Unauthorized);
        }
        self.object_mut(oid).ok_or(ObjectError::NotFound)
    }

    /// Reads a resource, a resource instance, an instance or an object (only readable
    /// resources are included at instance and object level).
    pub fn read(&mut self, path: &Lwm2mPath) -> Result<Content, ObjectError> {
        let object = self.server_object(path)?;
        let oid = object.definition().id;
        let mut values = Vec::new();
        match *path.ids() {
            [_] => {
                for iid in object.instance_ids() {
                    read_instance(object, oid, iid, &mut values)?;
                }
            }
            [_, iid] => {
                if !object.instance_ids().contains(&iid) {
                    return Err(ObjectError::NotFound);
                }
                read_instance(object, oid, iid, &mut values)?;
            }
            [_, iid, rid] | [_, iid, rid, _] => {
                let def = readable_def(object, iid, rid)?;
                let data = object.read(iid, rid)?;
                push_data(&mut values, Lwm2mPath::resource(oid, iid, rid), &def, data)?;
                if let Some(riid) = path.resource_instance_id() {
                    values.retain(|(p, _)| p.resource_instance_id() == Some(riid));
                    if values.is_empty() {
                        return Err(ObjectError::NotFound);
                    }
                }
            }
            _ => return Err(ObjectError::MethodNotAllowed),
        }
        Ok(Content { values })
    }

    /// Whether `path` names something that exists (for observe and write-attributes).
    pub fn exists(&mut self, path: &Lwm2mPath) -> bool {
        let Ok(object) = self.server_object(path) else {
            return false;
        };
        match *path.ids() {
            [_] => true,
            [_, iid] => object.instance_ids().contains(&iid),
            [_, iid, rid] | [_, iid, rid, _] => {
                object.instance_ids().contains(&iid)
                    && object.definition().resource(rid).is_some()
                    && object.resource_ids(iid).contains(&rid)
            }
            _ => false,
        }
    }

    /// Writes `content` at `path` (an instance, a resource or a resource instance). Every
    /// value is type-checked and validated before any is written; a refusal writes nothing.
    /// (That holds for objects that refuse in [`Object::validate_write`]: an
    /// [`Object::write`] that refuses after it passed leaves the values before it written,
    /// which is why that method's docs ask objects to refuse there.) Returns the resource
    /// paths written.
    pub fn write(
        &mut self,
        path: &Lwm2mPath,
        content: Content,
        mode: WriteMode,
    ) -> Result<Vec<Lwm2mPath>, ObjectError> {
        let object = self.server_object(path)?;
        let (oid, iid) = match *path.ids() {
            [oid, iid, ..] => (oid, iid),
            _ => return Err(ObjectError::MethodNotAllowed),
        };
        if !object.instance_ids().contains(&iid) {
            return Err(ObjectError::NotFound);
        }
        let mode = if path.depth() == 4 {
            WriteMode::PartialUpdate
        } else {
            mode
        };
        let writes = group(object, path, content, |d| d.access.writable())?;
        object.validate_write(iid, &writes)?;
        let mut written = Vec::with_capacity(writes.len());
        for (rid, data) in writes {
            object.write(iid, rid, data, mode)?;
            written.push(Lwm2mPath::resource(oid, iid, rid));
        }
        Ok(written)
    }

    /// Write-Composite (LWM2M 1.1): values in several instances, possibly of several
    /// objects. Every instance's values are checked and validated before any is written,
    /// so a refusal (an unknown instance, a read-only resource, a value the application
    /// rejects in [`Object::validate_write`]) changes nothing. Resources not named keep
    /// their values (partial update).
    /// Returns the resources written.
    pub fn write_composite(&mut self, content: Content) -> Result<Vec<Lwm2mPath>, ObjectError> {
        let mut by_instance: Vec<(Lwm2mPath, Content)> = Vec::new();
        for (path, value) in content.values {
            let [oid, iid, _, ..] = *path.ids() else {
                return Err(ObjectError::MethodNotAllowed);
            };
            let instance = Lwm2mPath::instance(oid, iid);
            match by_instance.iter_mut().find(|(i, _)| *i == instance) {
                Some((_, c)) => c.values.push((path, value)),
                None => by_instance.push((instance, Content::single(path, value))),
            }
        }
        let mut planned = Vec::with_capacity(by_instance.len());
        for (instance, values) in by_instance {
            let object = self.server_object(&instance)?;
            let [oid, iid] = *instance.ids() else {
                unreachable!("an instance path has two ids");
            };
            if !object.instance_ids().contains(&iid) {
                return Err(ObjectError::NotFound);
            }
            let writes = group(object, &instance, values, |d| d.access.writable())?;
            object.validate_write(iid, &writes)?;
            planned.push((oid, iid, writes));
        }
        let mut written = Vec::new();
        for (oid, iid, writes) in planned {
            let object = self.server_object(&Lwm2mPath::object(oid))?;
            for (rid, data) in writes {
                object.write(iid, rid, data, WriteMode::PartialUpdate)?;
                written.push(Lwm2mPath::resource(oid, iid, rid));
            }
        }
        Ok(written)
    }

    /// Executes `/oid/iid/rid` with the raw argument text.
    pub fn execute(&mut self, path: &Lwm2mPath, args: &str) -> Result<(), ObjectError> {
        let object = self.server_object(path)?;
        let [_, iid, rid] = *path.ids() else {
            return Err(ObjectError::MethodNotAllowed);
        };
        if !object.instance_ids().contains(&iid) {
            return Err(ObjectError::NotFound);
        }
        match object.definition().resource(rid) {
            None => Err(ObjectError::NotFound),
            Some(d) if !d.access.executable() => Err(ObjectError::MethodNotAllowed),
            Some(_) => object.execute(iid, rid, args),
        }
    }

    /// Creates an instance under `/oid` (the id comes from the content's paths, or is the
    /// lowest free one) or at `/oid/iid`. Returns the new instance's path. Content naming
    /// more than one instance is refused ([`ObjectError::Rejected`], 4.00).
    pub fn create(&mut self, path: &Lwm2mPath, content: Content) -> Result<Lwm2mPath, ObjectError> {
        let object = self.server_object(path)?;
        let oid = object.definition().id;
        // One instance a Create: content naming several is refused, not merged into one.
        let mut named = content.values.iter().filter_map(|(p, _)| p.instance_id());
        if let Some(first) = named.next()
            && named.any(|i| i != first)
        {
            return Err(ObjectError::Rejected);
        }
        let existing = object.instance_ids();
        let iid = match *path.ids() {
            [_] => match content.values.first() {
                Some((p, _)) if p.depth() >= 2 => p.instance_id().unwrap_or(0),
                _ => (0..u16::MAX)
                    .find(|i| !existing.contains(i))
                    .ok_or(ObjectError::Full)?,
            },
            [_, iid] => iid,
            _ => return Err(ObjectError::MethodNotAllowed),
        };
        if existing.contains(&iid) {
            return Err(ObjectError::AlreadyExists);
        }
        if existing.len() >= MAX_CREATED_INSTANCES {
            return Err(ObjectError::Full);
        }
        let target = Lwm2mPath::instance(oid, iid);
        // Content paths may be relative to the object (TLV object instance) or absolute.
        let content = Content {
            values: content
                .values
                .into_iter()
                .map(|(p, v)| match *p.ids() {
                    [_, _, rid] => (Lwm2mPath::resource(oid, iid, rid), v),
                    [_, _, rid, ri] => (Lwm2mPath::resource_instance(oid, iid, rid, ri), v),
                    _ => (p, v),
                })
                .collect(),
        };
        let values = group(object, &target, content, |_| true)?;
        object.validate_write(iid, &values)?;
        object.create(iid, values)?;
        Ok(target)
    }

    /// Deletes `/oid/iid`.
    pub fn delete(&mut self, path: &Lwm2mPath) -> Result<(), ObjectError> {
        let object = self.server_object(path)?;
        let [_, iid] = *path.ids() else {
            return Err(ObjectError::MethodNotAllowed);
        };
        if !object.instance_ids().contains(&iid) {
            return Err(ObjectError::NotFound);
        }
        object.delete(iid)
    }

    /// What Discover lists under `path`: the path itself, then (object level) each
    /// instance and (object and instance level) each present resource.
    pub fn discover(&mut self, path: &Lwm2mPath) -> Result<Vec<Lwm2mPath>, ObjectError> {
        let object = self.server_object(path)?;
        let oid = object.definition().id;
        let mut out = vec![*path];
        match *path.ids() {
            [_] => {
                for iid in object.instance_ids() {
                    out.push(Lwm2mPath::instance(oid, iid));
                    for rid in object.resource_ids(iid) {
                        out.push(Lwm2mPath::resource(oid, iid, rid));
                    }
                }
            }
            [_, iid] => {
                if !object.instance_ids().contains(&iid) {
                    return Err(ObjectError::NotFound);
                }
                for rid in object.resource_ids(iid) {
                    out.push(Lwm2mPath::resource(oid, iid, rid));
                }
            }
            [_, iid, rid] => {
                if !object.instance_ids().contains(&iid) || !object.resource_ids(iid).contains(&rid)
                {
                    return Err(ObjectError::NotFound);
                }
            }
            _ => return Err(ObjectError::MethodNotAllowed),
        }
        Ok(out)
    }

    /// The registration payload's object list (CoRE link format): `</1/0>,</3/0>,...`,
    /// objects without instances as `</oid>`, Security /0 left out (LWM2M 1.1 §6.2.1).
    /// The root link announces SenML JSON (`ct=110`), the LWM2M 1.1 format the client
    /// registers with (it also answers SenML CBOR, TLV and LwM2M JSON when asked).
    pub fn registration_links(&mut self) -> String {
        let mut out = String::from("</>;rt=\"oma.lwm2m\";ct=110");
        for oid in self.object_ids() {
            if oid == 0 {
                continue;
            }
            let Some(object) = self.object_mut(oid) else {
                continue;
            };
            let ver = object.definition().version;
            let instances = object.instance_ids();
            if instances.is_empty() || ver.is_some() {
                out.push_str(&format!(",</{oid}>"));
                if let Some(v) = ver {
                    out.push_str(&format!(";ver={v}"));
                }
            }
            for iid in instances {
                out.push_str(&format!(",</{oid}/{iid}>"));
            }
        }
        out
    }

    /// Bootstrap-Discover's answer (LWM2M 1.1 §5.2.7.3): the LWM2M version, then every
    /// object (Security `/0` included) and instance, the Security and Server instances
    /// with their Short Server ID (`ssid`; a Security instance's Server URI as `uri`).
    pub fn bootstrap_links(&mut self) -> String {
        self.bootstrap_links_of(None)
    }

    /// [`ObjectTree::bootstrap_links`] of one object (Bootstrap-Discover of `/oid`), or of
    /// every object with `None`.
    pub fn bootstrap_links_of(&mut self, only: Option<u16>) -> String {
        let mut out = String::from("lwm2m=\"1.1\"");
        for oid in self.object_ids() {
            if only.is_some_and(|o| o != oid) {
                continue;
            }
            let Some(object) = self.object_mut(oid) else {
                continue;
            };
            let instances = object.instance_ids();
            if instances.is_empty() {
                out.push_str(&format!(",</{oid}>"));
            }
            for iid in instances {
                out.push_str(&format!(",</{oid}/{iid}>"));
                let mut single = |rid| match object.read(iid, rid) {
                    Ok(ResourceData::Single(v)) => Some(v),
                    _ => None,
                };
                let ssid = match oid {
                    0 => single(10),
                    1 => single(0),
                    _ => None,
                };
                if let Some(ResourceValue::Integer(ssid)) = ssid {
                    out.push_str(&format!(";ssid={ssid}"));
                }
                if oid == 0
                    && let Some(ResourceValue::String(uri)) = single(0)
                {
                    out.push_str(&format!(";uri=\"{uri}\""));
                }
            }
        }
        out
    }

    /// The bootstrap account's Client Hold Off Time (`/0/iid/11`, seconds): how long the
    /// client waits before its first Bootstrap-Request. `None` when not set.
    pub fn bootstrap_hold_off(&mut self) -> Option<u64> {
        let ids = self.object_mut(0)?.instance_ids();
        let iid = ids.into_iter().find(|&i| self.is_bootstrap_account(i))?;
        match self.object_mut(0)?.read(iid, 11).ok()? {
            ResourceData::Single(ResourceValue::Integer(s)) => u64::try_from(s).ok(),
            _ => None,
        }
    }

    /// Whether Security instance `iid` is the bootstrap server's own account (`/0/iid/1`
    /// true): Bootstrap-Delete keeps it.
    pub fn is_bootstrap_account(&mut self, iid: u16) -> bool {
        self.object_mut(0)
            .and_then(|o| o.read(iid, 1).ok())
            .is_some_and(|d| d == ResourceData::Single(ResourceValue::Boolean(true)))
    }

    /// Bootstrap-Write (LWM2M 1.1 §5.2.7.4): like a Write, but on any object (Security
    /// `/0` included), any resource whatever its access, and an instance that does not
    /// exist is created. The values are validated before anything is written.
    pub fn bootstrap_write(
        &mut self,
        path: &Lwm2mPath,
        content: Content,
    ) -> Result<Vec<Lwm2mPath>, ObjectError> {
        // A whole object (`/oid`): its instances as the content's paths name them, each
        // checked before any is written.
        let instances: Vec<(u16, Content)> = match *path.ids() {
            [oid] => {
                let mut by: Vec<(u16, Content)> = Vec::new();
                for (p, v) in content.values {
                    let Some(iid) = p.instance_id().filter(|_| p.object_id() == Some(oid)) else {
                        return Err(ObjectError::Rejected);
                    };
                    match by.iter_mut().find(|(i, _)| *i == iid) {
                        Some((_, c)) => c.values.push((p, v)),
                        None => by.push((iid, Content::single(p, v))),
                    }
                }
                by
            }
            [_, iid, ..] => vec![(iid, content)],
            _ => return Err(ObjectError::MethodNotAllowed),
        };
        let oid = path.object_id().expect("an object path or deeper");
        let object = self.object_mut(oid).ok_or(ObjectError::NotFound)?;
        let mut planned = Vec::with_capacity(instances.len());
        for (iid, content) in instances {
            let target = Lwm2mPath::instance(oid, iid);
            let values = group(object, &target, content, |_| true)?;
            object.validate_write(iid, &values)?;
            planned.push((iid, values));
        }
        let mut written = Vec::new();
        for (iid, values) in planned {
            written.extend(
                values
                    .iter()
                    .map(|(rid, _)| Lwm2mPath::resource(oid, iid, *rid)),
            );
            if object.instance_ids().contains(&iid) {
                for (rid, data) in values {
                    object.write(iid, rid, data, WriteMode::Replace)?;
                }
            } else {
                object.create(iid, values)?;
            }
        }
        Ok(written)
    }

    /// Bootstrap-Delete (LWM2M 1.1 §5.2.7.5) of `/`, an object or an instance: every
    /// instance under it goes, except the bootstrap server's account in `/0` and the
    /// Device object `/3`; instances an object cannot delete (a fixed single instance)
    /// stay. Deleting the bootstrap account or the Device object by name is 4.00.
    pub fn bootstrap_delete(&mut self, path: &Lwm2mPath) -> Result<(), ObjectError> {
        let targets: Vec<(u16, u16)> = match *path.ids() {
            [] => self
                .object_ids()
                .into_iter()
                .filter(|&oid| oid != 3)
                .flat_map(|oid| {
                    let ids = self
                        .object_mut(oid)
                        .map_or(Vec::new(), |o| o.instance_ids());
                    ids.into_iter().map(move |iid| (oid, iid))
                })
                .collect(),
            [3, ..] => return Err(ObjectError::Rejected),
            [oid] => self
                .object_mut(oid)
                .ok_or(ObjectError::NotFound)?
                .instance_ids()
                .into_iter()
                .map(|iid| (oid, iid))
                .collect(),
            [0, iid] if self.is_bootstrap_account(iid) => return Err(ObjectError::Rejected),
            [oid, iid] => vec![(oid, iid)],
            _ => return Err(ObjectError::MethodNotAllowed),
        };
        let named_instance = path.depth() == 2;
        for (oid, iid) in targets {
            if oid == 0 && self.is_bootstrap_account(iid) {
                continue;
            }
            let Some(object) = self.object_mut(oid) else {
                continue;
            };
            match object.delete(iid) {
                Ok(()) => {}
                Err(e) if named_instance => return Err(e),
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Checks the tree's invariants (for tests and fuzzing): instance ids ascending and
    /// unique, every present resource declared, every readable resource's value of its
    /// declared type. Returns a description of the first violation.
    #[doc(hidden)]
    pub fn check_invariants(&mut self) -> Result<(), String> {
        for oid in self.object_ids() {
            let object = self.object_mut(oid).ok_or("listed object missing")?;
            let ids = object.instance_ids();
            if !ids.windows(2).all(|w| w[0] < w[1]) {
                return Err(format!("/{oid}: instance ids not ascending: {ids:?}"));
            }
            for iid in ids {
                let rids = object.resource_ids(iid);
                if !rids.windows(2).all(|w| w[0] < w[1]) {
                    return Err(format!("/{oid}/{iid}: resource ids not ascending"));
                }
                for rid in rids {
                    let Some(def) = object.definition().resource(rid).cloned() else {
                        return Err(format!("/{oid}/{iid}/{rid}: not declared"));
                    };
                    if !def.access.readable() {
                        continue;
                    }
                    let Ok(data) = object.read(iid, rid) else {
                        continue;
                    };
                    let ok = match &data {
                        ResourceData::Single(v) => !def.multiple && v.resource_type() == def.kind,
                        ResourceData::Multiple(vs) => {
                            def.multiple
                                && vs.windows(2).all(|w| w[0].0 < w[1].0)
                                && vs.iter().all(|(_, v)| v.resource_type() == def.kind)
                        }
                    };
                    if !ok {
                        return Err(format!(
                            "/{oid}/{iid}/{rid}: value {data:?} does not match {def:?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn readable_def(object: &mut dyn Object, iid: u16, rid: u16) -> Result<ResourceDef, ObjectError> {
    if !object.instance_ids().contains(&iid) {
        return Err(ObjectError::NotFound);
    }
    let def = object
        .definition()
        .resource(rid)
        .cloned()
        .ok_or(ObjectError::NotFound)?;
    if !def.access.readable() {
        return Err(ObjectError::MethodNotAllowed);
    }
    Ok(def)
}

fn read_instance(
    object: &mut dyn Object,
    oid: u16,
    iid: u16,
    values: &mut Vec<(Lwm2mPath, ResourceValue)>,
) -> Result<(), ObjectError> {
    for rid in object.resource_ids(iid) {
        let Some(def) = object.definition().resource(rid).cloned() else {
            continue;
        };
        if !def.access.readable() {
            continue;
        }
        match object.read(iid, rid) {
            Ok(data) => push_data(values, Lwm2mPath::resource(oid, iid, rid), &def, data)?,
            // A resource that cannot be read right now is left out of a bulk read.
            Err(ObjectError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Adds a read resource's values, each as the resource's declared type ([`coerce`]): what
/// the hub receives is typed by the model, whatever the object held (`Float(3.0)` in an
/// Integer resource reads as `Integer(3)`). A value that does not fit (`Float(3.5)` there)
/// fails the read with [`ObjectError::HeldTypeMismatch`] (5.00) rather than reach the
/// server as another type.
fn push_data(
    values: &mut Vec<(Lwm2mPath, ResourceValue)>,
    path: Lwm2mPath,
    def: &ResourceDef,
    data: ResourceData,
) -> Result<(), ObjectError> {
    let typed = |v: ResourceValue| {
        coerce(v, def.kind).map_err(|_| ObjectError::HeldTypeMismatch { expected: def.kind })
    };
    match data {
        ResourceData::Single(v) if def.multiple => {
            values.push((path.child(0).unwrap_or(path), typed(v)?));
        }
        ResourceData::Single(v) => values.push((path, typed(v)?)),
        ResourceData::Multiple(vs) => {
            for (ri, v) in vs {
                values.push((path.child(ri).unwrap_or(path), typed(v)?));
            }
        }
    }
    Ok(())
}

/// Groups content values under `target` by resource, checking each is declared, allowed
/// (`allow`) and of (or convertible to) its type. A multiple resource's values become one
/// `Multiple`; a single value written to a multiple resource counts as instance 0.
fn group(
    object: &mut dyn Object,
    target: &Lwm2mPath,
    content: Content,
    allow: impl Fn(&ResourceDef) -> bool,
) -> Result<Vec<(u16, ResourceData)>, ObjectError> {
    let mut out: Vec<(u16, ResourceData)> = Vec::new();
    if content.values.is_empty() && target.depth() >= 3 {
        return Err(ObjectError::Rejected);
    }
    for (p, v) in content.values {
        if !target.contains(&p) || p.depth() < 3 {
            return Err(ObjectError::Rejected);
        }
        let rid = p.resource_id().unwrap_or(0);
        let def = object
            .definition()
            .resource(rid)
            .ok_or(ObjectError::NotFound)?;
        if !allow(def) {
            return Err(ObjectError::MethodNotAllowed);
        }
        if def.kind == ResourceType::None {
            return Err(ObjectError::MethodNotAllowed);
        }
        let v = coerce(v, def.kind)?;
        let slot = match out.iter().position(|(r, _)| *r == rid) {
            Some(i) => i,
            None => {
                out.push((
                    rid,
                    if def.multiple {
                        ResourceData::Multiple(Vec::new())
                    } else {
                        ResourceData::Single(v.clone())
                    },
                ));
                out.len() - 1
            }
        };
        match (&mut out[slot].1, def.multiple) {
            (ResourceData::Multiple(vs), true) => {
                let ri = p.resource_instance_id().unwrap_or(0);
                match vs.binary_search_by_key(&ri, |(r, _)| *r) {
                    Ok(at) => vs[at].1 = v,
                    Err(at) => vs.insert(at, (ri, v)),
                }
            }
            (ResourceData::Single(s), false) => {
                if p.depth() == 4 {
                    return Err(ObjectError::Rejected);
                }
                *s = v;
            }
            _ => return Err(ObjectError::Rejected),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::client::{Access, ObjectDef, ValueObject, objects};
    use ResourceValue as V;

    fn tree() -> ObjectTree {
        let mut t = ObjectTree::new();
        t.add(objects::security("coap://127.0.0.1:5683", 1));
        t.add(objects::server(1, 300, "U"));
        t.add(objects::device("Contoso", "M1", "SN-7", "1.0"));
        t.set_firmware(FirmwareUpdate::new());
        t.add(objects::config().on_validate(2, |_, d| match d {
            ResourceData::Single(V::String(s)) if s.len() <= 8 => Ok(()),
            _ => Err(ObjectError::Rejected),
        }));
        t.add(
            ValueObject::new(ObjectDef::new(
                9000,
                "multi",
                true,
                vec![
                    ResourceDef::new(0, "n", ResourceType::Integer, Access::ReadWrite),
                    ResourceDef::multiple(1, "l", ResourceType::String, Access::ReadWrite),
                ],
            ))
            .with_value(0, 0, V::Integer(1)),
        );
        t
    }

    fn one(p: Lwm2mPath, v: V) -> Content {
        Content::single(p, v)
    }

    #[test]
    fn security_is_hidden() {
        let mut t = tree();
        let p = Lwm2mPath::resource(0, 0, 0);
        assert_eq!(t.read(&p), Err(ObjectError::Unauthorized));
        assert_eq!(
            t.read(&Lwm2mPath::object(0)),
            Err(ObjectError::Unauthorized)
        );
        assert_eq!(
            t.delete(&Lwm2mPath::instance(0, 0)),
            Err(ObjectError::Unauthorized)
        );
        assert!(!t.registration_links().contains("</0"));
    }

    #[test]
    fn reads_at_every_level() {
        let mut t = tree();
        let c = t.read(&Lwm2mPath::instance(3, 0)).unwrap();
        assert_eq!(
            c.get(&Lwm2mPath::resource(3, 0, 0)),
            Some(&V::String("Contoso".into()))
        );
        assert_eq!(
            c.get(&Lwm2mPath::resource_instance(3, 0, 11, 0)),
            Some(&V::Integer(0))
        );
        // Executables are not read.
        assert!(c.values.iter().all(|(p, _)| p.resource_id() != Some(4)));
        let o = t.read(&Lwm2mPath::object(3)).unwrap();
        assert_eq!(o, c);
        let ri = t.read(&Lwm2mPath::resource_instance(3, 0, 11, 0)).unwrap();
        assert_eq!(ri.values.len(), 1);
        assert_eq!(
            t.read(&Lwm2mPath::resource_instance(3, 0, 11, 9)),
            Err(ObjectError::NotFound)
        );
        assert_eq!(
            t.read(&Lwm2mPath::resource(3, 0, 4)),
            Err(ObjectError::MethodNotAllowed)
        );
        assert_eq!(
            t.read(&Lwm2mPath::resource(3, 1, 0)),
            Err(ObjectError::NotFound)
        );
        assert_eq!(
            t.read(&Lwm2mPath::resource(3, 0, 99)),
            Err(ObjectError::NotFound)
        );
        assert_eq!(t.read(&Lwm2mPath::object(77)), Err(ObjectError::NotFound));
        assert_eq!(t.read(&Lwm2mPath::ROOT), Err(ObjectError::MethodNotAllowed));
        // Firmware (typed object) reads too.
        let fw = t.read(&Lwm2mPath::resource(5, 0, 3)).unwrap();
        assert_eq!(fw.values[0].1, V::Integer(0));
    }

    /// The library's own objects refuse in `validate_write` whatever `write` would refuse,
    /// so a refused request writes nothing: Server /1 (its rules run in `on_validate`), and
    /// Firmware Update /5 (state and type checked before any value goes in).
    #[test]
    fn library_objects_refuse_before_anything_is_written() {
        let mut t = tree();
        let lifetime = Lwm2mPath::resource(1, 0, 1);
        let binding = Lwm2mPath::resource(1, 0, 7);
        let server = Content {
            values: vec![(lifetime, V::Integer(60)), (binding, V::String("X".into()))],
        };
        assert_eq!(
            t.write(&Lwm2mPath::instance(1, 0), server, WriteMode::PartialUpdate),
            Err(ObjectError::Rejected)
        );
        assert_eq!(t.read(&lifetime).unwrap().values[0].1, V::Integer(300));
        // A package and a URI in one request would start two updates: refused whole.
        let package = Lwm2mPath::resource(5, 0, 0);
        let uri = Lwm2mPath::resource(5, 0, 1);
        let both = Content {
            values: vec![
                (package, V::Opaque(b"image".to_vec())),
                (uri, V::String("coap://127.0.0.1:5683/fw".into())),
            ],
        };
        assert_eq!(
            t.write(&Lwm2mPath::instance(5, 0), both, WriteMode::PartialUpdate),
            Err(ObjectError::Rejected)
        );
        let state = t.read(&Lwm2mPath::resource(5, 0, 3)).unwrap();
        assert_eq!(state.values[0].1, V::Integer(0), "still Idle");
        // Once Downloading, a package is refused before the reset beside it goes in.
        t.write(
            &uri,
            one(uri, V::String("coap://127.0.0.1:5683/fw".into())),
            WriteMode::Replace,
        )
        .unwrap();
        let reset_and_package = Content {
            values: vec![
                (package, V::Opaque(b"image".to_vec())),
                (uri, V::String(String::new())),
            ],
        };
        assert_eq!(
            t.write(
                &Lwm2mPath::instance(5, 0),
                reset_and_package,
                WriteMode::PartialUpdate
            ),
            Err(ObjectError::MethodNotAllowed)
        );
        let state = t.read(&Lwm2mPath::resource(5, 0, 3)).unwrap();
        assert_eq!(state.values[0].1, V::Integer(1), "still Downloading");
    }

    #[test]
    fn write_checks_access_type_and_validates_all_first() {
        let mut t = tree();
        let name = Lwm2mPath::resource(10241, 0, 1);
        let value = Lwm2mPath::resource(10241, 0, 2);
        // Read-only resource.
        assert_eq!(
            t.write(
                &Lwm2mPath::resource(3, 0, 0),
                one(Lwm2mPath::resource(3, 0, 0), V::String("x".into())),
                WriteMode::Replace
            ),
            Err(ObjectError::MethodNotAllowed)
        );
        // A failed validation of one value writes none of them.
        let both = Content {
            values: vec![
                (name, V::String("n".into())),
                (value, V::String("too long value".into())),
            ],
        };
        assert_eq!(
            t.write(
                &Lwm2mPath::instance(10241, 0),
                both,
                WriteMode::PartialUpdate
            ),
            Err(ObjectError::Rejected)
        );
        assert_eq!(t.read(&name).unwrap().values[0].1, V::String(String::new()));
        // Text is coerced to the type; an impossible coercion is refused.
        let lt = Lwm2mPath::resource(1, 0, 1);
        t.write(&lt, one(lt, V::String("600".into())), WriteMode::Replace)
            .unwrap();
        assert_eq!(t.read(&lt).unwrap().values[0].1, V::Integer(600));
        assert!(matches!(
            t.write(&lt, one(lt, V::String("x".into())), WriteMode::Replace),
            Err(ObjectError::TypeMismatch { .. })
        ));
        assert_eq!(
            t.write(&lt, one(lt, V::Integer(0)), WriteMode::Replace),
            Err(ObjectError::Rejected)
        );
        // Values outside the target are refused.
        assert_eq!(
            t.write(&lt, one(name, V::String("x".into())), WriteMode::Replace),
            Err(ObjectError::Rejected)
        );
        assert_eq!(
            t.write(&lt, Content::default(), WriteMode::Replace),
            Err(ObjectError::Rejected)
        );
        // Object-level write is not allowed.
        assert_eq!(
            t.write(
                &Lwm2mPath::object(1),
                Content::default(),
                WriteMode::Replace
            ),
            Err(ObjectError::MethodNotAllowed)
        );
        t.check_invariants().unwrap();
    }

    #[test]
    fn multiple_resource_writes() {
        let mut t = tree();
        let l = Lwm2mPath::resource(9000, 0, 1);
        let c = Content {
            values: vec![
                (l.child(3).unwrap(), V::String("c".into())),
                (l.child(1).unwrap(), V::String("a".into())),
            ],
        };
        t.write(&l, c, WriteMode::Replace).unwrap();
        t.write(
            &l.child(2).unwrap(),
            one(l.child(2).unwrap(), V::String("b".into())),
            WriteMode::Replace,
        )
        .unwrap();
        let r = t.read(&l).unwrap();
        let ris: Vec<u16> = r
            .values
            .iter()
            .map(|(p, _)| p.resource_instance_id().unwrap())
            .collect();
        assert_eq!(ris, vec![1, 2, 3]);
        t.check_invariants().unwrap();
    }

    #[test]
    fn execute_create_delete_discover() {
        let mut t = tree();
        t.execute(&Lwm2mPath::resource(3, 0, 4), "").unwrap();
        assert_eq!(
            t.execute(&Lwm2mPath::resource(3, 0, 0), ""),
            Err(ObjectError::MethodNotAllowed)
        );
        assert_eq!(
            t.execute(&Lwm2mPath::instance(3, 0), ""),
            Err(ObjectError::MethodNotAllowed)
        );
        assert_eq!(
            t.execute(&Lwm2mPath::resource(3, 2, 4), ""),
            Err(ObjectError::NotFound)
        );

        let o = Lwm2mPath::object(9000);
        assert_eq!(
            t.create(&o, one(Lwm2mPath::resource(9000, 0, 0), V::Integer(5))),
            Err(ObjectError::AlreadyExists)
        );
        let created = t
            .create(&o, one(Lwm2mPath::resource(9000, 7, 0), V::Integer(5)))
            .unwrap();
        assert_eq!(created, Lwm2mPath::instance(9000, 7));
        assert_eq!(
            t.read(&Lwm2mPath::resource(9000, 7, 0)).unwrap().values[0].1,
            V::Integer(5)
        );
        assert!(matches!(
            t.create(
                &o,
                one(Lwm2mPath::resource(9000, 8, 0), V::String("x".into()))
            ),
            Err(ObjectError::TypeMismatch { .. })
        ));
        assert_eq!(
            t.create(&o, one(Lwm2mPath::resource(9000, 8, 9), V::Integer(1))),
            Err(ObjectError::NotFound)
        );
        t.delete(&created).unwrap();
        let next = t
            .create(&Lwm2mPath::object(9000), Content::default())
            .unwrap();
        assert_eq!(next, Lwm2mPath::instance(9000, 1));
        assert_eq!(
            t.create(&Lwm2mPath::instance(9000, 1), Content::default()),
            Err(ObjectError::AlreadyExists)
        );
        assert_eq!(
            t.create(&Lwm2mPath::object(3), Content::default()),
            Err(ObjectError::MethodNotAllowed)
        );
        t.delete(&Lwm2mPath::instance(9000, 1)).unwrap();
        assert_eq!(
            t.delete(&Lwm2mPath::instance(9000, 1)),
            Err(ObjectError::NotFound)
        );
        assert_eq!(
            t.delete(&Lwm2mPath::instance(3, 0)),
            Err(ObjectError::MethodNotAllowed)
        );

        let d = t.discover(&Lwm2mPath::object(10241)).unwrap();
        assert_eq!(
            d,
            vec![
                Lwm2mPath::object(10241),
                Lwm2mPath::instance(10241, 0),
                Lwm2mPath::resource(10241, 0, 1),
                Lwm2mPath::resource(10241, 0, 2),
                Lwm2mPath::resource(10241, 0, 3),
            ]
        );
        assert_eq!(
            t.registration_links(),
            "</>;rt=\"oma.lwm2m\";ct=110,</1/0>,</3/0>,</5/0>,</9000/0>,</10241/0>"
        );
        t.check_invariants().unwrap();
    }
}
