//! Job history through the query engine: [`HistorySnapshot`] implements
//! [`IndexedSource`], so the preview's JSON query expressions (filter, project, aggregate,
//! sort, paging) run over job records with the same parser, optimizer and executor as
//! device queries.
//!
//! Properties are `type: "default"` names, in the preview's spelling or the JSON field
//! name: `JobId`/`jobId`, `ParentJobId`/`parentJobId` (`""` for a parent),
//! `DeviceId`/`deviceId`, `Type`/`JobType`/`type`, `Status`/`status`,
//! `StartTimeUtc`/`startTimeUtc`, `EndTimeUtc`/`endTimeUtc`,
//! `FailureReason`/`failureReason`. Times are RFC 3339 strings with milliseconds
//! (`2016-04-29T12:00:00.000Z`); they compare correctly as strings written in that form.
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
use crate::query::{IndexedSource, PropertyType, QueryProperty, Slots, ValueWalk};
use crate::twin::Scalar;
use roaring::RoaringBitmap;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;

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
    values: Vec<Option<Scalar>>,
    index: BTreeMap<Scalar, RoaringBitmap>,
    exists: RoaringBitmap,
}

/// Every job record at one moment, indexed for the query executor. Slots are record
/// positions in creation order (each parent, then its children).
pub struct HistorySnapshot {
    records: Vec<JobRecord>,
    universe: RoaringBitmap,
    by_id: Vec<u32>,
    columns: Vec<Column>,
}

impl std::fmt::Debug for HistorySnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistorySnapshot")
            .field("records", &self.records.len())
            .finish()
    }
}

impl HistorySnapshot {
    /// Indexes the given records (slot = position).
    pub fn new(records: Vec<JobRecord>) -> Self {
        let n = records.len() as u32;
        let mut universe = RoaringBitmap::new();
        universe.insert_range(0..n);
        let mut by_id: Vec<u32> = (0..n).collect();
        by_id.sort_by(|a, b| {
            records[*a as usize]
                .job_id
                .cmp(&records[*b as usize].job_id)
        });
        let columns = HistoryProperty::ALL
            .iter()
            .map(|p| {
                let mut column = Column {
                    values: Vec::with_capacity(records.len()),
                    index: BTreeMap::new(),
                    exists: RoaringBitmap::new(),
                };
                for (slot, r) in records.iter().enumerate() {
                    let v = p.value(r);
                    if let Some(v) = &v {
                        column.exists.insert(slot as u32);
                        column
                            .index
                            .entry(v.clone())
                            .or_default()
                            .insert(slot as u32);
                    }
                    column.values.push(v);
                }
                column
            })
            .collect();
        HistorySnapshot {
            records,
            universe,
            by_id,
            columns,
        }
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
}

impl IndexedSource for HistorySnapshot {
    type Property = HistoryProperty;
    type Document<'a> = &'a JobRecord;

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
            .get(slot as usize)?
            .as_ref()
            .map(Cow::Borrowed)
    }

    fn id_of(&self, slot: u32) -> &str {
        self.records
            .get(slot as usize)
            .map_or("", |r| r.job_id.as_str())
    }

    fn ids_in_order<'a>(
        &'a self,
        after: Option<&str>,
    ) -> Box<dyn Iterator<Item = (&'a str, u32)> + 'a> {
        let start = match after {
            None => 0,
            Some(a) => self
                .by_id
                .partition_point(|&s| self.records[s as usize].job_id.as_str() <= a),
        };
        Box::new(
            self.by_id[start..]
                .iter()
                .map(move |&s| (self.records[s as usize].job_id.as_str(), s)),
        )
    }

    fn document(&self, slot: u32) -> Option<&JobRecord> {
        self.records.get(slot as usize)
    }

    fn project(&self, slot: u32, properties: &[QueryProperty]) -> Option<serde_json::Value> {
        let r = self.records.get(slot as usize)?;
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
}

impl JobEngine {
    /// Every job record now, indexed for [`crate::query::execute`] and friends.
    pub fn history_snapshot(&self) -> HistorySnapshot {
        HistorySnapshot::new(self.records().collect())
    }
}
