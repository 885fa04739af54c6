//! [`ValueObject`]: an object that stores plain values and takes per-resource closures.

use super::model::{Object, ObjectDef, ObjectError, ResourceData, coerce};
use crate::lwm2m::{Lwm2mPath, ResourceValue};
use crate::transport::WriteMode;
use std::borrow::Cow;

/// A read callback: `(instance id) -> value`.
pub type ReadFn = Box<dyn FnMut(u16) -> Result<ResourceData, ObjectError> + Send>;
/// A write (or validate) callback: `(instance id, new value)`.
pub type WriteFn = Box<dyn FnMut(u16, &ResourceData) -> Result<(), ObjectError> + Send>;
/// An execute callback: `(instance id, argument text)`.
pub type ExecuteFn = Box<dyn FnMut(u16, &str) -> Result<(), ObjectError> + Send>;

#[derive(Default)]
struct Hooks {
    read: Option<ReadFn>,
    write: Option<WriteFn>,
    validate: Option<WriteFn>,
    execute: Option<ExecuteFn>,
}

struct Instance {
    id: u16,
    /// `(resource id, value)`, ascending ids.
    values: Vec<(u16, ResourceData)>,
}

/// An object whose resources are plain values the application sets, or callbacks it
/// registers per resource (read, write, validate, execute), or both: a write callback runs
/// before the value is stored, a read callback replaces the stored value.
///
/// Callbacks are shared by all instances of the object and receive the instance id.
///
/// ```
/// use twinhub::lwm2m::client::{Access, Object, ObjectDef, ResourceData, ResourceDef, ValueObject};
/// use twinhub::{ResourceType, ResourceValue};
/// let def = ObjectDef::new(3303, "Temperature", true, vec![
///     ResourceDef::new(5700, "Sensor Value", ResourceType::Float, Access::Read),
///     ResourceDef::new(5750, "Application Type", ResourceType::String, Access::ReadWrite),
/// ]);
/// let mut temp = ValueObject::new(def)
///     .with_instance(0)
///     .on_read(5700, |_iid| Ok(ResourceData::Single(ResourceValue::Float(21.5))));
/// temp.set(0, 5750, ResourceValue::String("room".into())).unwrap();
/// // A value that does not fit the declared type is refused: a Boolean is no String.
/// assert!(temp.set(0, 5750, ResourceValue::Boolean(true)).is_err());
/// assert_eq!(temp.read(0, 5700), Ok(ResourceData::Single(ResourceValue::Float(21.5))));
/// assert_eq!(temp.resource_ids(0), vec![5700, 5750]);
/// ```
pub struct ValueObject {
    def: Cow<'static, ObjectDef>,
    instances: Vec<Instance>,
    /// `(resource id, callbacks)`, ascending ids.
    hooks: Vec<(u16, Hooks)>,
    creatable: bool,
    max_instances: usize,
    changes: Vec<Lwm2mPath>,
}

impl std::fmt::Debug for ValueObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueObject").finish_non_exhaustive()
    }
}

impl ValueObject {
    /// An object with no instances. Instances may be created and deleted by the server
    /// when the definition allows several; see [`ValueObject::creatable`].
    pub fn new(def: impl Into<Cow<'static, ObjectDef>>) -> Self {
        let def = def.into();
        ValueObject {
            creatable: def.multiple,
            def,
            instances: Vec::new(),
            hooks: Vec::new(),
            max_instances: 256,
            changes: Vec::new(),
        }
    }

    /// Whether the server may create and delete instances (default: when the object is
    /// multiple-instance), and how many instances may exist at most.
    pub fn creatable(mut self, creatable: bool, max_instances: usize) -> Self {
        self.creatable = creatable;
        self.max_instances = max_instances.max(1);
        self
    }

    /// Adds instance `iid` (no values yet) if it does not exist.
    pub fn with_instance(mut self, iid: u16) -> Self {
        self.add_instance(iid);
        self
    }

    /// Adds instance `iid` if it does not exist; returns whether it was added.
    pub fn add_instance(&mut self, iid: u16) -> bool {
        match self.instances.binary_search_by_key(&iid, |i| i.id) {
            Ok(_) => false,
            Err(at) => {
                self.instances.insert(
                    at,
                    Instance {
                        id: iid,
                        values: Vec::new(),
                    },
                );
                true
            }
        }
    }

    /// Sets a stored value (creating the instance if needed), without access checks, and
    /// records the change for observers when the value differs. Returns whether it changed.
    ///
    /// The value is stored as the resource's declared type ([`coerce`]: `Float(3.0)` into an
    /// Integer resource is stored as `Integer(3)`); one that does not fit it (`Float(3.5)`
    /// into an Integer, a string into a Boolean, anything into an executable) is refused
    /// with [`ObjectError::TypeMismatch`] and nothing changes. A resource the definition
    /// does not declare is stored as given (it is never read: reads list declared
    /// resources only).
    pub fn set(&mut self, iid: u16, rid: u16, value: ResourceValue) -> Result<bool, ObjectError> {
        self.set_data(iid, rid, ResourceData::Single(value))
    }

    /// Like [`ValueObject::set`] for any [`ResourceData`] (e.g. a multiple resource): every
    /// value must fit the declared type.
    pub fn set_data(
        &mut self,
        iid: u16,
        rid: u16,
        data: ResourceData,
    ) -> Result<bool, ObjectError> {
        let data = self.fit(rid, data)?;
        Ok(self.put(iid, rid, data, true))
    }

    /// `data` as the declared type of resource `rid` (as it is when the definition does not
    /// declare `rid`).
    fn fit(&self, rid: u16, data: ResourceData) -> Result<ResourceData, ObjectError> {
        let Some(kind) = self.def.resource(rid).map(|d| d.kind) else {
            return Ok(data);
        };
        Ok(match data {
            ResourceData::Single(v) => ResourceData::Single(coerce(v, kind)?),
            ResourceData::Multiple(vs) => ResourceData::Multiple(
                vs.into_iter()
                    .map(|(ri, v)| Ok((ri, coerce(v, kind)?)))
                    .collect::<Result<_, ObjectError>>()?,
            ),
        })
    }

    fn put(&mut self, iid: u16, rid: u16, data: ResourceData, record: bool) -> bool {
        self.add_instance(iid);
        let inst = self.instance_mut(iid).expect("instance was just added");
        let changed = match inst.values.binary_search_by_key(&rid, |(r, _)| *r) {
            Ok(at) if inst.values[at].1 == data => false,
            Ok(at) => {
                inst.values[at].1 = data;
                true
            }
            Err(at) => {
                inst.values.insert(at, (rid, data));
                true
            }
        };
        if changed && record {
            let p = Lwm2mPath::resource(self.def.id, iid, rid);
            if !self.changes.contains(&p) {
                self.changes.push(p);
            }
        }
        changed
    }

    /// Builder form of [`ValueObject::set`].
    ///
    /// # Panics
    ///
    /// When the value does not fit the resource's declared type (the object is being
    /// built with a value of the wrong kind, a programming error); use
    /// [`ValueObject::set`] for values that come from elsewhere.
    pub fn with_value(self, iid: u16, rid: u16, value: ResourceValue) -> Self {
        self.with_data(iid, rid, ResourceData::Single(value))
    }

    /// Builder form of [`ValueObject::set_data`].
    ///
    /// # Panics
    ///
    /// As [`ValueObject::with_value`].
    pub fn with_data(mut self, iid: u16, rid: u16, data: ResourceData) -> Self {
        let oid = self.def.id;
        match self.fit(rid, data) {
            Ok(data) => {
                self.put(iid, rid, data, false);
            }
            Err(e) => panic!("/{oid}/{iid}/{rid}: {e}"),
        }
        self
    }

    /// The stored value of a resource (not its read callback's).
    pub fn value(&self, iid: u16, rid: u16) -> Option<&ResourceData> {
        let inst = self.instance(iid)?;
        inst.values
            .binary_search_by_key(&rid, |(r, _)| *r)
            .ok()
            .map(|at| &inst.values[at].1)
    }

    fn hooks_mut(&mut self, rid: u16) -> &mut Hooks {
        let at = match self.hooks.binary_search_by_key(&rid, |(r, _)| *r) {
            Ok(at) => at,
            Err(at) => {
                self.hooks.insert(at, (rid, Hooks::default()));
                at
            }
        };
        &mut self.hooks[at].1
    }

    fn hooks(&mut self, rid: u16) -> Option<&mut Hooks> {
        let at = self.hooks.binary_search_by_key(&rid, |(r, _)| *r).ok()?;
        Some(&mut self.hooks[at].1)
    }

    /// Registers a read callback for resource `rid`.
    pub fn on_read(
        mut self,
        rid: u16,
        f: impl FnMut(u16) -> Result<ResourceData, ObjectError> + Send + 'static,
    ) -> Self {
        self.hooks_mut(rid).read = Some(Box::new(f));
        self
    }

    /// Registers a write callback for resource `rid`; it runs before the value is stored
    /// and an error leaves the stored value unchanged.
    ///
    /// Refuse in [`ValueObject::on_validate`], not here: validation runs for every value
    /// of a request before any is written, while a write callback's error comes after the
    /// resources before it in the same request (ascending ids) were written
    /// ([`ObjectTree::write`](super::ObjectTree::write)). Nothing else in a `ValueObject`
    /// refuses a write, so with refusals in `on_validate` a refused request writes nothing.
    pub fn on_write(
        mut self,
        rid: u16,
        f: impl FnMut(u16, &ResourceData) -> Result<(), ObjectError> + Send + 'static,
    ) -> Self {
        self.hooks_mut(rid).write = Some(Box::new(f));
        self
    }

    /// Registers a validation callback for resource `rid`, consulted for every value of a
    /// request before any value is written.
    pub fn on_validate(
        mut self,
        rid: u16,
        f: impl FnMut(u16, &ResourceData) -> Result<(), ObjectError> + Send + 'static,
    ) -> Self {
        self.hooks_mut(rid).validate = Some(Box::new(f));
        self
    }

    /// Registers an execute callback for resource `rid`.
    pub fn on_execute(
        mut self,
        rid: u16,
        f: impl FnMut(u16, &str) -> Result<(), ObjectError> + Send + 'static,
    ) -> Self {
        self.hooks_mut(rid).execute = Some(Box::new(f));
        self
    }

    fn instance(&self, iid: u16) -> Option<&Instance> {
        self.instances
            .binary_search_by_key(&iid, |i| i.id)
            .ok()
            .map(|at| &self.instances[at])
    }

    fn instance_mut(&mut self, iid: u16) -> Option<&mut Instance> {
        self.instances
            .binary_search_by_key(&iid, |i| i.id)
            .ok()
            .map(|at| &mut self.instances[at])
    }

    fn store(&mut self, iid: u16, rid: u16, data: ResourceData, mode: WriteMode) {
        let data = match (mode, data, self.value(iid, rid)) {
            (
                WriteMode::PartialUpdate,
                ResourceData::Multiple(new),
                Some(ResourceData::Multiple(old)),
            ) => {
                let mut merged = old.clone();
                for (ri, v) in new {
                    match merged.binary_search_by_key(&ri, |(r, _)| *r) {
                        Ok(at) => merged[at].1 = v,
                        Err(at) => merged.insert(at, (ri, v)),
                    }
                }
                ResourceData::Multiple(merged)
            }
            (_, d, _) => d,
        };
        self.put(iid, rid, data, false);
    }
}

impl Object for ValueObject {
    fn definition(&self) -> &ObjectDef {
        &self.def
    }

    fn instance_ids(&self) -> Vec<u16> {
        self.instances.iter().map(|i| i.id).collect()
    }

    fn resource_ids(&self, iid: u16) -> Vec<u16> {
        let Some(inst) = self.instance(iid) else {
            return Vec::new();
        };
        let mut ids: Vec<u16> = inst.values.iter().map(|(r, _)| *r).collect();
        for (rid, h) in &self.hooks {
            if (h.read.is_some() || h.execute.is_some()) && self.def.resource(*rid).is_some() {
                ids.push(*rid);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn read(&mut self, iid: u16, rid: u16) -> Result<ResourceData, ObjectError> {
        if let Some(read) = self.hooks(rid).and_then(|h| h.read.as_mut()) {
            return read(iid);
        }
        self.value(iid, rid).cloned().ok_or(ObjectError::NotFound)
    }

    fn validate(&mut self, iid: u16, rid: u16, data: &ResourceData) -> Result<(), ObjectError> {
        match self.hooks(rid).and_then(|h| h.validate.as_mut()) {
            Some(validate) => validate(iid, data),
            None => Ok(()),
        }
    }

    fn write(
        &mut self,
        iid: u16,
        rid: u16,
        data: ResourceData,
        mode: WriteMode,
    ) -> Result<(), ObjectError> {
        if let Some(write) = self.hooks(rid).and_then(|h| h.write.as_mut()) {
            write(iid, &data)?;
        }
        // A server write is not recorded as a change: the core notifies observers of it.
        self.store(iid, rid, data, mode);
        Ok(())
    }

    fn execute(&mut self, iid: u16, rid: u16, args: &str) -> Result<(), ObjectError> {
        match self.hooks(rid).and_then(|h| h.execute.as_mut()) {
            Some(exec) => exec(iid, args),
            None => Err(ObjectError::MethodNotAllowed),
        }
    }

    fn create(&mut self, iid: u16, values: Vec<(u16, ResourceData)>) -> Result<(), ObjectError> {
        if !self.creatable {
            return Err(ObjectError::MethodNotAllowed);
        }
        if self.instance(iid).is_some() {
            return Err(ObjectError::AlreadyExists);
        }
        if self.instances.len() >= self.max_instances {
            return Err(ObjectError::Full);
        }
        self.add_instance(iid);
        for (rid, data) in values {
            self.store(iid, rid, data, WriteMode::Replace);
        }
        Ok(())
    }

    fn delete(&mut self, iid: u16) -> Result<(), ObjectError> {
        if !self.creatable {
            return Err(ObjectError::MethodNotAllowed);
        }
        let at = self
            .instances
            .binary_search_by_key(&iid, |i| i.id)
            .map_err(|_| ObjectError::NotFound)?;
        self.instances.remove(at);
        Ok(())
    }

    fn drain_changes(&mut self, out: &mut Vec<Lwm2mPath>) {
        out.append(&mut self.changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResourceType;
    use crate::lwm2m::client::{Access, ResourceDef};
    use std::sync::{Arc, Mutex};

    fn def() -> ObjectDef {
        ObjectDef::new(
            9000,
            "Test",
            true,
            vec![
                ResourceDef::new(0, "Name", ResourceType::String, Access::ReadWrite),
                ResourceDef::multiple(1, "List", ResourceType::Integer, Access::ReadWrite),
                ResourceDef::executable(2, "Go"),
            ],
        )
    }

    #[test]
    fn set_stores_the_declared_type_or_refuses() {
        let mut o = ValueObject::new(def()).with_instance(0);
        // A whole float fits an Integer resource and is stored as an integer.
        assert!(
            o.set_data(
                0,
                1,
                ResourceData::Multiple(vec![(0, ResourceValue::Float(3.0))])
            )
            .unwrap()
        );
        assert_eq!(
            o.read(0, 1),
            Ok(ResourceData::Multiple(vec![(0, ResourceValue::Integer(3))]))
        );
        // A fractional one does not, and changes nothing.
        assert_eq!(
            o.set_data(
                0,
                1,
                ResourceData::Multiple(vec![
                    (0, ResourceValue::Integer(4)),
                    (1, ResourceValue::Float(3.5))
                ])
            ),
            Err(ObjectError::TypeMismatch {
                expected: ResourceType::Integer
            })
        );
        assert_eq!(
            o.value(0, 1),
            Some(&ResourceData::Multiple(vec![(
                0,
                ResourceValue::Integer(3)
            )]))
        );
        assert!(
            o.set(0, 2, ResourceValue::Integer(1)).is_err(),
            "executable"
        );
        let mut out = Vec::new();
        o.drain_changes(&mut out);
        assert_eq!(out, vec![Lwm2mPath::resource(9000, 0, 1)]);
    }

    #[test]
    #[should_panic(expected = "/9000/0/1")]
    fn building_with_a_value_of_the_wrong_type_panics() {
        let _ = ValueObject::new(def()).with_value(0, 1, ResourceValue::Float(0.5));
    }

    #[test]
    fn set_records_changes_only_when_different() {
        let mut o = ValueObject::new(def()).with_instance(0);
        assert!(o.set(0, 0, ResourceValue::String("a".into())).unwrap());
        assert!(!o.set(0, 0, ResourceValue::String("a".into())).unwrap());
        let mut out = Vec::new();
        o.drain_changes(&mut out);
        assert_eq!(out, vec![Lwm2mPath::resource(9000, 0, 0)]);
        o.drain_changes(&mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn write_callback_error_leaves_value() {
        let mut o = ValueObject::new(def())
            .with_value(0, 0, ResourceValue::String("old".into()))
            .on_write(0, |_, d| match d {
                ResourceData::Single(ResourceValue::String(s)) if s.is_empty() => {
                    Err(ObjectError::Rejected)
                }
                _ => Ok(()),
            });
        let empty = ResourceData::Single(ResourceValue::String(String::new()));
        assert_eq!(
            o.write(0, 0, empty, WriteMode::Replace),
            Err(ObjectError::Rejected)
        );
        assert_eq!(
            o.read(0, 0),
            Ok(ResourceData::Single(ResourceValue::String("old".into())))
        );
    }

    #[test]
    fn multiple_resource_partial_merges_and_replace_replaces() {
        let mut o = ValueObject::new(def()).with_instance(0);
        let m = |v: &[(u16, i64)]| {
            ResourceData::Multiple(
                v.iter()
                    .map(|(i, x)| (*i, ResourceValue::Integer(*x)))
                    .collect(),
            )
        };
        o.write(0, 1, m(&[(0, 1), (1, 2)]), WriteMode::Replace)
            .unwrap();
        o.write(0, 1, m(&[(1, 20), (5, 50)]), WriteMode::PartialUpdate)
            .unwrap();
        assert_eq!(o.read(0, 1), Ok(m(&[(0, 1), (1, 20), (5, 50)])));
        o.write(0, 1, m(&[(7, 7)]), WriteMode::Replace).unwrap();
        assert_eq!(o.read(0, 1), Ok(m(&[(7, 7)])));
    }

    #[test]
    fn execute_create_delete() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = calls.clone();
        let mut o = ValueObject::new(def())
            .creatable(true, 2)
            .on_execute(2, move |iid, args| {
                c.lock().unwrap().push((iid, args.to_string()));
                Ok(())
            });
        o.create(
            3,
            vec![(0, ResourceData::Single(ResourceValue::String("x".into())))],
        )
        .unwrap();
        assert_eq!(o.create(3, vec![]), Err(ObjectError::AlreadyExists));
        o.create(4, vec![]).unwrap();
        assert_eq!(o.create(5, vec![]), Err(ObjectError::Full));
        assert_eq!(o.instance_ids(), vec![3, 4]);
        assert_eq!(o.resource_ids(3), vec![0, 2]);
        o.execute(3, 2, "0='a'").unwrap();
        assert_eq!(*calls.lock().unwrap(), vec![(3, "0='a'".to_string())]);
        o.delete(3).unwrap();
        assert_eq!(o.delete(3), Err(ObjectError::NotFound));
        assert_eq!(o.instance_ids(), vec![4]);
        let mut fixed = ValueObject::new(def()).creatable(false, 1).with_instance(0);
        assert_eq!(fixed.delete(0), Err(ObjectError::MethodNotAllowed));
        assert_eq!(fixed.create(1, vec![]), Err(ObjectError::MethodNotAllowed));
    }
}
