//! Job history through the query engine: [`HistorySnapshot`] implements
//! [`IndexedSource`], so the preview's JSON query expressions (filter, project, aggregate,
//! sort, paging) run over job records with the same parser, optimizer and executor as
//! device queries.
//!
//! Properties are `type: "default"` names, in the preview's spelling or the JSON field
//! name: `JobId`/`jobId`, `ParentJobId`/`parentJobId` (`""` for a parent),
//! `DeviceId`/`deviceId`, `Type`/`JobType`/`type`, `Status`/`status`,
//! `StartTimeUtc`/`startTimeUtc`, `EndTimeUtc`/`endTimeUtc`,
//! `FailureReason`/`failureReason`. The schema is fixed: a name outside this list (a
//! misspelt `Statuss`, `tags`, a `device`, `service` or `custom` property) anywhere in a
//! query (filter, projection, sort, aggregate keys and columns) is refused with
//! [`QueryError::UnknownProperty`] (naming the clause and, for a parsed query, the bytes
//! where the property was written), where a twin query, over an open schema, treats it as
//! missing everywhere.
//!
//! Every field holds a string or nothing ([`IndexedSource::value_type`] is
//! [`ScalarType::String`]), so a number or boolean literal compared with one
//! (`StartTimeUtc gt 1461931200000`, `Status eq true`, a `7` in an `in`/`nin` list, at
//! any depth of `and`/`or`/`not`) is refused with [`QueryError::LiteralType`], naming the
//! property, what it holds and the literal's type, where a twin query would match nothing;
//! a `sum` or `avg` column over a field is refused with [`QueryError::AggregateType`]
//! (it could only be `null`). `null` is no type: `EndTimeUtc eq null` (unfinished jobs)
//! and `ne null` ask whether a field is missing and are accepted on every field, as are
//! sorts, aggregate keys, `count`, `min` and `max`.
//!
//! Times are indexed as RFC 3339 strings with milliseconds (`2016-04-29T12:00:00.000Z`),
//! and a string literal compared with `StartTimeUtc`/`EndTimeUtc` (`eq ne lt lte gt gte`,
//! an `in`/`nin` item) that [`Timestamp`] parses (`YYYY-MM-DDTHH:MM:SS[.fraction]` then
//! `Z` or an offset `+HH:MM`/`-HH:MM`, years 1970 to 9999; a fraction of any length, of
//! which the digits past the ninth count only as a sub-millisecond part) compares as the
//! time it names, as Azure IoT Hub's job queries do: `"2016-04-29T12:00:00Z"`,
//! `"2016-04-29T12:00:00.000Z"` and `"2016-04-29T14:00:00+02:00"` are one time. Stored
//! times have whole milliseconds, so a literal with a finer non-zero fraction
//! (`"2016-04-29T12:00:00.0005Z"`) equals none of them: `eq` matches nothing, `ne` every
//! record with the time, `gt`/`gte` the times from the next millisecond (`12:00:00.001`)
//! on, `lt`/`lte` those up to its millisecond (`12:00:00.000`), and an `in`/`nin` list
//! leaves it out. A leap second (`23:59:60`) is such a literal too: after every instant
//! of `23:59:59`, before the next second. A string that does not parse as a time
//! (`"2016-04-29"`, a year before 1970) compares as a string with the indexed form, byte
//! by byte. Sorts, groups and `min`/`max` use the indexed strings, whose order is the
//! times' order.
//!
//! Paging follows the query module's rules (a record whose sort key does not change
//! between two pages is never skipped or repeated, while jobs are created, progress and
//! are dropped by retention). A continuation token is bound to the job history: a token
//! from a twin query, even one with the same text, is refused with
//! [`QueryError::ContinuationMismatch`], and a job history token by a twin query.
//!
//! A snapshot is built from the engine in one pass ([`JobEngine::history_snapshot`]) and
//! answers every query from that one state; take a new one to see later changes.
//!
//! ```
//! use std::time::Instant;
//! use twinhub::job::{EngineConfig, JobEngine, JobId, JobSpec, JobType};
//! use twinhub::query::{execute, parse, QueryOptions};
//! use twinhub::{DeviceId, Timestamp};
//!
//! let t0 = Instant::now();
//! let mut jobs = JobEngine::new(EngineConfig::default(), t0, Timestamp::EPOCH);
//! let ids = (0..3).map(|i| DeviceId::new(&format!("d{i}")).unwrap()).collect();
//! let reboot = JobType::Reboot { wait_for_registration: false };
//! jobs.create(t0, JobSpec::new(JobId::new("r1").unwrap(), reboot, ids)).unwrap();
//! let snapshot = jobs.history_snapshot();
//! let q = parse(r#"{"filter": {"type": "comparison", "comparisonOperator": "eq",
//!     "property": {"name": "ParentJobId", "type": "default"}, "value": "r1"},
//!   "aggregate": {"keys": [{"name": "Status", "type": "default"}],
//!     "properties": [{"operator": "count", "columnName": "n"}]}}"#).unwrap();
//! let result = execute(&snapshot, &q, &QueryOptions::default()).unwrap();
//! let json = serde_json::to_value(&result).unwrap();
//! assert_eq!(json["AggregateResult"][0]["Status"], "running");
//! assert_eq!(json["AggregateResult"][0]["n"], 3);
//! ```

use super::engine::JobEngine;
use super::history::JobRecord;
use crate::Timestamp;
use crate::query::{
    Comparand, IndexedSource, PropertyType, QueryError, QueryExpression, QueryOptions,
    QueryProperty, QueryResult, ScalarType, Slots, ValueWalk,
};
use crate::twin::Scalar;
use roaring::RoaringBitmap;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, RwLock};

/// A queryable property of a job record.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum HistoryProperty {
    /// `jobId`
    JobId,
    /// `parentJobId`
    ParentJobId,
    /// `deviceId` (children only)
    DeviceId,
    /// `type`
    Type,
    /// `status`
    Status,
    /// `startTimeUtc`
    StartTimeUtc,
    /// `endTimeUtc`
    EndTimeUtc,
    /// `failureReason` (failed children only)
    FailureReason,
}

impl HistoryProperty {
    const ALL: [HistoryProperty; 8] = [
        HistoryProperty::JobId,
        HistoryProperty::ParentJobId,
        HistoryProperty::DeviceId,
        HistoryProperty::Type,
        HistoryProperty::Status,
        HistoryProperty::StartTimeUtc,
        HistoryProperty::EndTimeUtc,
        HistoryProperty::FailureReason,
    ];

    /// The property a query names (`type: "default"` only).
    pub fn from_query(p: &QueryProperty) -> Option<HistoryProperty> {
        if p.kind != PropertyType::Default {
            return None;
        }
        Some(match p.name.as_str() {
            "JobId" | "jobId" => HistoryProperty::JobId,
            "ParentJobId" | "parentJobId" => HistoryProperty::ParentJobId,
            "DeviceId" | "deviceId" => HistoryProperty::DeviceId,
            "Type" | "JobType" | "type" | "jobType" => HistoryProperty::Type,
            "Status" | "status" => HistoryProperty::Status,
            "StartTimeUtc" | "startTimeUtc" => HistoryProperty::StartTimeUtc,
            "EndTimeUtc" | "endTimeUtc" => HistoryProperty::EndTimeUtc,
            "FailureReason" | "failureReason" => HistoryProperty::FailureReason,
            _ => return None,
        })
    }

    /// The JSON field name in a [`JobRecord`].
    pub fn field(self) -> &'static str {
        match self {
            HistoryProperty::JobId => "jobId",
            HistoryProperty::ParentJobId => "parentJobId",
            HistoryProperty::DeviceId => "deviceId",
            HistoryProperty::Type => "type",
            HistoryProperty::Status => "status",
            HistoryProperty::StartTimeUtc => "startTimeUtc",
            HistoryProperty::EndTimeUtc => "endTimeUtc",
            HistoryProperty::FailureReason => "failureReason",
        }
    }

    fn value(self, r: &JobRecord) -> Option<Scalar> {
        match self {
            HistoryProperty::JobId => Some(Scalar::from(r.job_id.as_str())),
            HistoryProperty::ParentJobId => Some(Scalar::from(r.parent_job_id.as_str())),
            HistoryProperty::DeviceId => r.device_id.as_ref().map(|d| Scalar::from(d.as_str())),
            HistoryProperty::Type => Some(Scalar::from(r.kind.as_str())),
            HistoryProperty::Status => Some(Scalar::from(r.status.as_str())),
            HistoryProperty::StartTimeUtc => r
                .start_time_utc
                .map(|t| Scalar::from(t.to_string().as_str())),
            HistoryProperty::EndTimeUtc => {
                r.end_time_utc.map(|t| Scalar::from(t.to_string().as_str()))
            }
            HistoryProperty::FailureReason => r.failure_reason.as_deref().map(Scalar::from),
        }
    }
}

struct Column {
    /// By slot, from the snapshot's `base`.
    values: VecDeque<Option<Scalar>>,
    index: BTreeMap<Scalar, RoaringBitmap>,
    exists: RoaringBitmap,
}

impl Column {
    fn add(&mut self, slot: u32, v: &Option<Scalar>) {
        if let Some(v) = v {
            self.exists.insert(slot);
            match self.index.get_mut(v) {
                Some(b) => {
                    b.insert(slot);
                }
                None => {
                    self.index
                        .insert(v.clone(), RoaringBitmap::from_iter([slot]));
                }
            }
        }
    }

    fn remove(&mut self, slot: u32, v: &Option<Scalar>) {
        if let Some(v) = v {
            self.exists.remove(slot);
            if let Some(b) = self.index.get_mut(v) {
                b.remove(slot);
                if b.is_empty() {
                    self.index.remove(v);
                }
            }
        }
    }
}

/// Job records indexed for the query executor. Slots are record positions in creation
/// order (each parent, then its children); a snapshot from the engine numbers them as
/// the engine does, so it can be kept up to date with [`HistorySnapshot::apply`].
pub struct HistorySnapshot {
    /// The slot of `records[0]` (history retention drops from the front).
    base: u32,
    records: VecDeque<JobRecord>,
    universe: RoaringBitmap,
    /// `(jobId, slot)`, for paging in id order.
    ids: BTreeSet<(Box<str>, u32)>,
    columns: Vec<Column>,
}

impl std::fmt::Debug for HistorySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistorySnapshot")
            .field("base", &self.base)
            .field("records", &self.records.len())
            .finish()
    }
}

impl Default for HistorySnapshot {
    fn default() -> Self {
        HistorySnapshot {
            base: 0,
            records: VecDeque::new(),
            universe: RoaringBitmap::new(),
            ids: BTreeSet::new(),
            columns: HistoryProperty::ALL
                .iter()
                .map(|_| Column {
                    values: VecDeque::new(),
                    index: BTreeMap::new(),
                    exists: RoaringBitmap::new(),
                })
                .collect(),
        }
    }
}

/// What changed in a job engine's history since it was last taken
/// ([`JobEngine::take_history_changes`]), for [`HistorySnapshot::apply`].
#[derive(Debug, Default)]
pub struct HistoryChanges {
    /// Retention dropped every record before this slot.
    dropped_before: Option<u32>,
    /// Changed and new records by slot, ascending.
    records: Vec<(u32, JobRecord)>,
}

impl HistoryChanges {
    /// Records changed or added.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.dropped_before.is_none()
    }
}

impl HistorySnapshot {
    /// Indexes the given records (slot = position).
    pub fn new(records: Vec<JobRecord>) -> Self {
        let mut s = HistorySnapshot::default();
        for (slot, r) in records.into_iter().enumerate() {
            s.upsert(slot as u32, r);
        }
        s
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn column(&self, p: HistoryProperty) -> &Column {
        &self.columns[p as usize]
    }

    fn end(&self) -> u32 {
        self.base + self.records.len() as u32
    }

    fn record(&self, slot: u32) -> Option<&JobRecord> {
        self.records.get(slot.checked_sub(self.base)? as usize)
    }

    /// Brings the snapshot up to date with changes taken from the engine it was made
    /// from; costs what changed (each changed record re-indexes the columns whose value
    /// changed), not the size of the history.
    pub fn apply(&mut self, changes: HistoryChanges) {
        if let Some(slot) = changes.dropped_before {
            self.drop_before(slot);
        }
        for (slot, record) in changes.records {
            self.upsert(slot, record);
        }
    }

    /// Replaces the record at `slot`, or appends it at the end.
    fn upsert(&mut self, slot: u32, record: JobRecord) {
        if slot < self.base || slot > self.end() {
            // The engine numbers records without gaps and never changes a dropped
            // one; anything else is a bug, and the record is not indexed.
            debug_assert!(
                false,
                "history slot {slot} outside {}..={}",
                self.base,
                self.end()
            );
            return;
        }
        let i = (slot - self.base) as usize;
        if i == self.records.len() {
            self.universe.insert(slot);
            self.ids.insert((record.job_id.as_str().into(), slot));
            for (p, column) in HistoryProperty::ALL.iter().zip(&mut self.columns) {
                let v = p.value(&record);
                column.add(slot, &v);
                column.values.push_back(v);
            }
            self.records.push_back(record);
            return;
        }
        let old = &self.records[i];
        if old.job_id != record.job_id {
            self.ids.remove(&(old.job_id.as_str().into(), slot));
            self.ids.insert((record.job_id.as_str().into(), slot));
        }
        for (p, column) in HistoryProperty::ALL.iter().zip(&mut self.columns) {
            let v = p.value(&record);
            if column.values[i] != v {
                let before = std::mem::replace(&mut column.values[i], v);
                column.remove(slot, &before);
                let now = column.values[i].clone();
                column.add(slot, &now);
            }
        }
        self.records[i] = record;
    }

    /// Forgets every record before `slot`, and starts the snapshot there. `slot` may lie
    /// past the records held: retention can drop jobs created (and finished) since the
    /// last take, and the next record the engine adds is numbered from `slot`.
    fn drop_before(&mut self, slot: u32) {
        if slot <= self.base {
            return;
        }
        let n = ((slot - self.base) as usize).min(self.records.len());
        for (i, r) in self.records.drain(..n).enumerate() {
            let key = (Box::<str>::from(r.job_id.as_str()), self.base + i as u32);
            self.ids.remove(&key);
        }
        self.base = slot;
        self.universe.remove_range(..slot);
        for column in &mut self.columns {
            column.values.drain(..n);
            column.exists.remove_range(..slot);
            column.index.retain(|_, b| {
                b.remove_range(..slot);
                !b.is_empty()
            });
        }
    }
}

impl IndexedSource for HistorySnapshot {
    type Property = HistoryProperty;
    type Document<'a> = &'a JobRecord;
    type Projection = Vec<QueryProperty>;
    type Projected<'a> = serde_json::Value;

    fn universe(&self) -> &RoaringBitmap {
        &self.universe
    }

    fn resolve(&self, property: &QueryProperty) -> Option<HistoryProperty> {
        HistoryProperty::from_query(property)
    }

    fn tag_bitmap(&self, _tag: &str) -> Option<&RoaringBitmap> {
        None
    }

    fn value_slots(&self, property: HistoryProperty, value: &Scalar) -> Option<Slots<'_>> {
        self.column(property).index.get(value).map(Slots::Borrowed)
    }

    fn values_in_range<'a>(
        &'a self,
        property: HistoryProperty,
        lo: Bound<&Scalar>,
        hi: Bound<&Scalar>,
    ) -> ValueWalk<'a> {
        let index = &self.column(property).index;
        // BTreeMap::range panics on inverted or doubly-excluded equal bounds; those ranges
        // are empty.
        let empty = match (lo, hi) {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b))
                if a > b =>
            {
                true
            }
            (Bound::Excluded(a), Bound::Excluded(b)) if a == b => true,
            _ => false,
        };
        if empty {
            return Box::new(std::iter::empty());
        }
        Box::new(
            index
                .range::<Scalar, _>((lo, hi))
                .map(|(k, b)| (Cow::Borrowed(k), Slots::Borrowed(b))),
        )
    }

    fn distinct_values(&self, property: HistoryProperty) -> usize {
        self.column(property).index.len()
    }

    fn exists_bitmap(&self, property: HistoryProperty) -> Cow<'_, RoaringBitmap> {
        Cow::Borrowed(&self.column(property).exists)
    }

    fn value_of(&self, slot: u32, property: HistoryProperty) -> Option<Cow<'_, Scalar>> {
        self.column(property)
            .values
            .get(slot.checked_sub(self.base)? as usize)?
            .as_ref()
            .map(Cow::Borrowed)
    }

    fn id_of(&self, slot: u32) -> &str {
        self.record(slot).map_or("", |r| r.job_id.as_str())
    }

    fn ids_in_order<'a>(
        &'a self,
        after: Option<&str>,
    ) -> Box<dyn Iterator<Item = (&'a str, u32)> + 'a> {
        let lo = match after {
            None => Bound::Unbounded,
            // Every id equal to `after` sorts at or before (after, u32::MAX).
            Some(a) => Bound::Excluded((Box::<str>::from(a), u32::MAX)),
        };
        Box::new(
            self.ids
                .range((lo, Bound::Unbounded))
                .map(|(id, s)| (&**id, *s)),
        )
    }

    fn document(&self, slot: u32) -> Option<&JobRecord> {
        self.record(slot)
    }

    fn projection(&self, properties: &[QueryProperty]) -> Vec<QueryProperty> {
        properties.to_vec()
    }

    fn project(&self, slot: u32, properties: &Vec<QueryProperty>) -> Option<serde_json::Value> {
        let r = self.record(slot)?;
        let mut out = serde_json::Map::new();
        out.insert("jobId".into(), r.job_id.clone().into());
        for p in properties {
            if let Some(hp) = HistoryProperty::from_query(p) {
                let v = hp.value(r).map_or(serde_json::Value::Null, |s| s.to_json());
                out.insert(hp.field().into(), v);
            }
        }
        Some(serde_json::Value::Object(out))
    }

    fn token_scope(&self) -> &'static str {
        "jobHistory"
    }

    fn comparand(&self, property: HistoryProperty, value: Scalar) -> Comparand {
        let time = matches!(
            property,
            HistoryProperty::StartTimeUtc | HistoryProperty::EndTimeUtc
        );
        match value.as_str().filter(|_| time).and_then(time_comparand) {
            Some(c) => c,
            None => Comparand::Value(value),
        }
    }

    fn knows(&self, property: &QueryProperty) -> bool {
        HistoryProperty::from_query(property).is_some()
    }

    fn value_type(&self, property: &QueryProperty) -> Option<ScalarType> {
        // Every field is a string or missing (times as their RFC 3339 text).
        HistoryProperty::from_query(property).map(|_| ScalarType::String)
    }
}

/// A time literal as the indexed times compare with it (see the module docs): `None` if
/// the text is no time [`Timestamp`] parses.
fn time_comparand(text: &str) -> Option<Comparand> {
    let t: Timestamp = nine_fraction_digits(text).parse().ok()?;
    if text.as_bytes().get(17..19) == Some(b"60") {
        // A leap second: `Timestamp` reads it as the second before (it counts none), but
        // it lies after every instant of that second and before the next, as no stored
        // time does.
        let second = t.as_millis() - t.as_millis() % 1000;
        let next = second + 1000;
        return Some(Comparand::Between {
            below: Some(Scalar::from(
                Timestamp::from_millis(second + 999).to_string().as_str(),
            )),
            above: (next <= Timestamp::MAX.as_millis())
                .then(|| Scalar::from(Timestamp::from_millis(next).to_string().as_str())),
        });
    }
    if !sub_millisecond(text) {
        return Some(Comparand::Value(Scalar::from(t.to_string().as_str())));
    }
    // The parser keeps whole milliseconds (offsets are whole minutes), so the literal
    // lies strictly between `t` and the next millisecond, which no stored time does.
    let above = (t < Timestamp::MAX).then(|| {
        Scalar::from(
            Timestamp::from_millis(t.as_millis() + 1)
                .to_string()
                .as_str(),
        )
    });
    Some(Comparand::Between {
        below: Some(Scalar::from(t.to_string().as_str())),
        above,
    })
}

/// `text` with the digits of its fraction (`.` at byte 19) past the ninth dropped:
/// [`Timestamp`] reads at most nine, RFC 3339 bounds none (`time-secfrac = "." 1*DIGIT`).
/// The time parsed is then the literal's, cut to the nanosecond, and [`sub_millisecond`]
/// (on the whole literal) still sees the finer digits.
fn nine_fraction_digits(text: &str) -> std::borrow::Cow<'_, str> {
    let b = text.as_bytes();
    if b.get(19) != Some(&b'.') {
        return text.into();
    }
    let digits = b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits <= 9 {
        return text.into();
    }
    // Bytes 19 to the end of the digits are ASCII: every offset cut is a char boundary.
    format!("{}{}", &text[..29], &text[20 + digits..]).into()
}

/// Whether a time's fraction (`.` at byte 19, as [`Timestamp`] reads it) has a non-zero
/// digit past the milliseconds.
fn sub_millisecond(text: &str) -> bool {
    let b = text.as_bytes();
    b.get(19) == Some(&b'.')
        && b[20..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .skip(3)
            .any(|&c| c != b'0')
}

impl JobEngine {
    /// Every job record now, indexed for [`crate::query::execute`] and friends. Slots
    /// are the engine's record positions.
    pub fn history_snapshot(&self) -> HistorySnapshot {
        let mut s = HistorySnapshot {
            base: self.record_start(),
            ..HistorySnapshot::default()
        };
        let base = s.base;
        for (i, r) in self.records().enumerate() {
            s.upsert(base + i as u32, r);
        }
        s
    }

    /// [`JobEngine::history_snapshot`], and from now on the engine notes every record
    /// that changes, for [`JobEngine::take_history_changes`]. One tracker per engine:
    /// a second call starts over (the first tracker's snapshot must be rebuilt).
    pub fn track_history(&mut self) -> HistorySnapshot {
        self.view_marks = Some(Default::default());
        self.history_snapshot()
    }

    /// The records changed or added since the last take (or since
    /// [`JobEngine::track_history`]), and what retention dropped, for
    /// [`HistorySnapshot::apply`]. `None` when this engine is not tracked (a restored
    /// engine, or one never tracked): build the snapshot again with `track_history`.
    pub fn take_history_changes(&mut self) -> Option<HistoryChanges> {
        let marks = std::mem::take(self.view_marks.as_mut()?);
        let mut parents = marks.parents;
        // A parent's record (its status message) follows its children's states.
        for c in &marks.children {
            parents.insert(self.children[c as usize].parent);
        }
        let mut records = Vec::with_capacity(parents.len() + marks.children.len() as usize);
        for p in parents {
            records.push((self.parent_position(p), self.parent_record(p)));
        }
        for c in &marks.children {
            records.push((self.child_position(c), self.child_record(c)));
        }
        records.sort_unstable_by_key(|(slot, _)| *slot);
        Some(HistoryChanges {
            dropped_before: marks.dropped_before.map(|(p, c)| p + c),
            records,
        })
    }
}

/// A [`HistorySnapshot`] kept up to date for queries from several threads, beside the
/// [`JobEngine`] it follows (what [`Hub::query_jobs`](crate::hub::Hub::query_jobs)
/// uses).
///
/// Each query first brings the snapshot up to date: under the engine's lock it only
/// takes the records that changed since the previous query (nothing else holds that lock
/// for a query, so event routing waits at most for that), then applies them under the
/// snapshot's write lock and runs the query under its read lock. Routing never touches
/// the snapshot. The first query builds it whole; from then on the engine notes changed
/// records (at most one note per record). Use one per engine.
#[derive(Debug, Default)]
pub struct LiveHistory {
    snapshot: RwLock<Option<HistorySnapshot>>,
}

impl LiveHistory {
    /// An empty tracker; the first query builds the snapshot.
    pub fn new() -> Self {
        LiveHistory::default()
    }

    /// Brings the snapshot up to date with `jobs` (see the type's docs).
    pub fn refresh(&self, jobs: &Mutex<JobEngine>) {
        let mut guard = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        let changes = {
            let mut engine = jobs.lock().unwrap_or_else(|p| p.into_inner());
            match (guard.as_ref(), engine.take_history_changes()) {
                (Some(_), Some(changes)) => Some(changes),
                _ => {
                    *guard = Some(engine.track_history());
                    None
                }
            }
        };
        if let (Some(snapshot), Some(changes)) = (guard.as_mut(), changes) {
            snapshot.apply(changes);
        }
    }

    /// Runs a query over the job history as it is now; the page's records are copies.
    pub fn query(
        &self,
        jobs: &Mutex<JobEngine>,
        expr: &QueryExpression,
        options: &QueryOptions,
    ) -> Result<QueryResult<JobRecord>, QueryError> {
        self.refresh(jobs);
        let guard = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let empty = HistorySnapshot::default();
        let snapshot = guard.as_ref().unwrap_or(&empty);
        Ok(crate::query::execute(snapshot, expr, options)?.map_documents(|r| r.clone()))
    }

    /// Forgets the snapshot (the next query builds it again from the engine it is
    /// given): for when the engine was replaced.
    pub fn reset(&self) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
