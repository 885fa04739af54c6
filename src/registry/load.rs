//! Where a new twin's values go: straight into the indexes ([`Direct`], for
//! [`Registry::create`]) or onto a bulk load's [`Stage`].
//!
//! A bulk load is a pipeline of batches. The calling thread admits twins (validates
//! them, gives them slots and entries with empty lists) onto a stage: each value goes to
//! its property's list, each twin's shape (property ids, report times, tags) to a
//! [`Layout`]. A full stage becomes [`Work`]: the property indexes its values need, and
//! the field and tag bitmaps, are moved out of the registry (an index leaves a stand-in
//! with its name, which is all admission reads) and helper threads do the work while
//! the calling thread admits the next batch:
//!
//! 1. one job a property: intern its values, append their slots (and one job adds the
//!    field and tag bitmaps);
//! 2. once every property is indexed, the twins' lists ([`TwinLists`], one allocation a
//!    twin), a share of 1,024 twins at a time.
//!
//! When the next batch is full, the calling thread joins in on what is left, waits for
//! the helpers, moves the indexes and bitmaps back and the lists into the entries. Most
//! allocations and page faults of a load so happen on the helpers, and the two threads
//! of a two-core machine take about half of the work each.

use super::index::{self, OBJECT_NODE, PropertyIndex, StagedValue};
use super::lists::TwinLists;
use super::{DeviceValue, Registry, RegistryError, ServiceLeaf, Slot};
use crate::Timestamp;
use crate::twin::{ConnectionState, DeviceStatus, ScalarRef};
use roaring::RoaringBitmap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

/// Twins in a load's first batch: large enough that a batch's work dwarfs handing it
/// to a thread. A load of borrowed rows doubles each next batch, up to [`BATCH_MAX`], so
/// that a small load is indexed behind its admission early on; a load of owned twins
/// stays at this size (see [`BATCH_MAX`]).
const BATCH_FIRST: usize = 8192;

/// Twins in a batch of borrowed rows at most. Indexing a batch touches each distinct
/// value's posting list (and sorted order) once, wherever it is in memory, so fewer,
/// larger batches touch them less often: importing 1M twins (`Registry::import_ndjson`,
/// the `compare_duckdb.py` corpora) took 13% less CPU for `timed` (many distinct values)
/// and 5% less for `preview` with batches of 32,768 than with 8,192 throughout (two
/// runs each, alternating; 16,384 was halfway; 65,536 gained nothing more), and 3.83 s
/// instead of 4.3 s for `timed`. The price is the staged batches (about 1 KB a twin, two
/// batches at once): peak resident memory 821 against 783 MiB. Loading 1M owned twins
/// (`Registry::load`) measured slower with them (1.93 to 1.99 s against 1.51 to 1.86 s in
/// the registry bench, three runs each, alternating, in a build that also inlined the
/// staging of a value, since undone; the two causes were not told apart), so owned twins
/// keep batches of [`BATCH_FIRST`].
const BATCH_MAX: usize = 32768;

/// Batches smaller than this are indexed on the calling thread alone.
const PARALLEL_MIN: usize = 1024;

/// At most this many threads index one batch.
const MAX_THREADS: usize = 4;

/// A new twin's value and tag lists while they are gathered.
#[derive(Default)]
pub(super) struct Lists {
    pub(super) device: Vec<DeviceValue>,
    pub(super) service: Vec<ServiceLeaf>,
    pub(super) tags: Vec<u32>,
    /// Scratch for [`TwinLists::build`].
    times: Vec<u64>,
}

impl Lists {
    /// The lists as an entry stores them (each sorted by id); they are emptied for the
    /// next twin.
    fn finish(&mut self) -> TwinLists {
        self.device.sort_unstable_by_key(|d| d.pid);
        self.service.sort_unstable_by_key(|l| l.pid);
        self.tags.sort_unstable();
        let stored = TwinLists::build(&self.device, &self.service, &self.tags, &mut self.times);
        self.device.clear();
        self.service.clear();
        self.tags.clear();
        stored
    }
}

/// Receives a new twin's values, tags and slot from [`Registry::admit_with`].
pub(super) trait Place {
    /// Takes `slot`'s device property `pid`.
    fn device(
        &mut self,
        reg: &mut Registry,
        pid: u32,
        value: ScalarRef<'_>,
        ts: Timestamp,
        slot: u32,
    );
    /// Takes `slot`'s service leaf `pid` (`None`: an object node).
    fn service(&mut self, reg: &mut Registry, pid: u32, value: Option<ScalarRef<'_>>, slot: u32);
    /// Takes `slot`'s tag `tid` (each tag once).
    fn tag(&mut self, reg: &mut Registry, tid: u32, slot: u32);
    /// The lists for the entry of the twin just placed: complete, or empty ones that
    /// indexing its batch fills in.
    fn lists(&mut self) -> TwinLists;
    /// Takes `slot`'s fields for the field bitmaps (and the universe).
    fn fields(
        &mut self,
        reg: &mut Registry,
        slot: u32,
        status: DeviceStatus,
        connection: ConnectionState,
        managed: bool,
    );
    /// The twin in `slot` is admitted: its entry is in place.
    fn created(&mut self, reg: &mut Registry, slot: u32);
}

/// Indexes `slot`'s value of property `pid` (`None`: a service object node) now;
/// returns the stored value id.
pub(super) fn index_value(
    reg: &mut Registry,
    pid: u32,
    value: Option<ScalarRef<'_>>,
    slot: u32,
) -> u32 {
    let index = &mut reg.props[pid as usize];
    match value {
        Some(v) => index.insert_ref(v, slot),
        None => {
            index.insert_object(slot);
            OBJECT_NODE
        }
    }
}

/// Indexes each value at once: a single [`Registry::create`].
#[derive(Default)]
pub(super) struct Direct {
    lists: Lists,
}

impl Place for Direct {
    fn device(
        &mut self,
        reg: &mut Registry,
        pid: u32,
        value: ScalarRef<'_>,
        ts: Timestamp,
        slot: u32,
    ) {
        let vid = index_value(reg, pid, Some(value), slot);
        self.lists.device.push(DeviceValue { pid, vid, ts });
    }

    fn service(&mut self, reg: &mut Registry, pid: u32, value: Option<ScalarRef<'_>>, slot: u32) {
        let vid = index_value(reg, pid, value, slot);
        self.lists.service.push(ServiceLeaf { pid, vid });
    }

    fn tag(&mut self, reg: &mut Registry, tid: u32, slot: u32) {
        index::add(&mut reg.tags[tid as usize].slots, slot);
        self.lists.tags.push(tid);
    }

    fn lists(&mut self) -> TwinLists {
        self.lists.finish()
    }

    fn fields(
        &mut self,
        reg: &mut Registry,
        slot: u32,
        status: DeviceStatus,
        connection: ConnectionState,
        managed: bool,
    ) {
        index::add(&mut reg.universe, slot);
        reg.set_field_bits(slot, status, connection, managed, true);
    }

    fn created(&mut self, reg: &mut Registry, slot: u32) {
        reg.id_order
            .insert(&reg.slots, &[slot], &mut reg.free_slots);
    }
}

/// Twins per share of a batch's list building (each thread takes shares).
const LIST_CHUNK: usize = 1024;

/// What a batch's twins hold, in admission order, apart from the value ids: what the
/// indexing threads need to build their entries' lists.
#[derive(Default)]
struct Layout {
    /// Per twin: how many device values, service leaves and tags.
    counts: Vec<[u32; 3]>,
    /// Device values' property ids and report times.
    device: Vec<(u32, Timestamp)>,
    /// Service leaves' property ids.
    service: Vec<u32>,
    tags: Vec<u32>,
    /// Where each share of [`LIST_CHUNK`] twins but the first starts.
    chunks: Vec<ChunkStart>,
}

/// Where a share of a batch's twins starts: in the lists above, and in each property's
/// staged values (by property id; missing ids are at 0).
#[derive(Default)]
struct ChunkStart {
    twin: usize,
    device: usize,
    service: usize,
    tags: usize,
    values: Vec<usize>,
}

impl Layout {
    fn clear(&mut self) {
        self.counts.clear();
        self.device.clear();
        self.service.clear();
        self.tags.clear();
        self.chunks.clear();
    }

    /// Marks where the next share starts if one starts at the next twin.
    fn mark(&mut self, values: &[Vec<StagedValue>]) {
        if self.counts.len().is_multiple_of(LIST_CHUNK) {
            self.chunks.push(ChunkStart {
                twin: self.counts.len(),
                device: self.device.len(),
                service: self.service.len(),
                tags: self.tags.len(),
                values: values.iter().map(Vec::len).collect(),
            });
        }
    }

    /// How many shares the twins make.
    fn shares(&self) -> usize {
        self.chunks.len() + 1
    }

    /// Share `k`'s twins' lists, value ids taken from the indexed values (`by_pid`:
    /// each property's, in admission order).
    fn lists(&self, k: usize, by_pid: &[&[StagedValue]]) -> Vec<TwinLists> {
        let first = ChunkStart::default();
        let start = if k == 0 { &first } else { &self.chunks[k - 1] };
        let end = self.chunks.get(k).map_or(self.counts.len(), |c| c.twin);
        let mut cursor = start.values.clone();
        cursor.resize(by_pid.len(), 0);
        let mut next = |pid: u32| {
            let c = &mut cursor[pid as usize];
            *c += 1;
            by_pid[pid as usize][*c - 1].vid()
        };
        let (mut d, mut s, mut t) = (start.device, start.service, start.tags);
        let mut twin = Lists::default();
        self.counts[start.twin..end]
            .iter()
            .map(|&[nd, ns, nt]| {
                let (nd, ns, nt) = (nd as usize, ns as usize, nt as usize);
                twin.device
                    .extend(self.device[d..d + nd].iter().map(|&(pid, ts)| DeviceValue {
                        pid,
                        vid: next(pid),
                        ts,
                    }));
                twin.service
                    .extend(self.service[s..s + ns].iter().map(|&pid| ServiceLeaf {
                        pid,
                        vid: next(pid),
                    }));
                twin.tags.extend_from_slice(&self.tags[t..t + nt]);
                (d, s, t) = (d + nd, s + ns, t + nt);
                twin.finish()
            })
            .collect()
    }
}

/// Twins admitted for a bulk load whose values, tags, lists and id-order entries wait.
#[derive(Default)]
pub(super) struct Stage {
    /// By property id: the values to index, in admission order.
    values: Vec<Vec<StagedValue>>,
    /// The staged strings, back to back (a staged value holds its range).
    text: String,
    /// By tag id: the slots to add.
    tags: Vec<Vec<u32>>,
    /// The slots admitted, in order.
    slots: Vec<u32>,
    /// By [`Field`]: the slots to add.
    fields: [Vec<u32>; FIELDS],
    layout: Layout,
    /// The twin being placed: how many device values, service leaves and tags so far.
    placing: [u32; 3],
    /// Emptied buffers of indexed batches, to stage the next ones in.
    spare: Vec<Vec<StagedValue>>,
    spare_text: Vec<String>,
    spare_slots: Vec<Vec<u32>>,
    spare_layouts: Vec<Layout>,
}

impl Stage {
    #[inline]
    fn value(&mut self, pid: u32, value: Option<ScalarRef<'_>>, slot: u32) {
        let pid = pid as usize;
        if self.values.len() <= pid {
            self.values.resize_with(pid + 1, Vec::new);
        }
        // Strings are copied into one buffer: the caller's can go at once (holding a
        // batch of twins' strings until the batch is indexed fragments the heap).
        self.values[pid].push(StagedValue::new(value, slot, &mut self.text));
    }
}

impl Place for Stage {
    #[inline]
    fn device(
        &mut self,
        _: &mut Registry,
        pid: u32,
        value: ScalarRef<'_>,
        ts: Timestamp,
        slot: u32,
    ) {
        self.value(pid, Some(value), slot);
        self.layout.device.push((pid, ts));
        self.placing[0] += 1;
    }

    #[inline]
    fn service(&mut self, _: &mut Registry, pid: u32, value: Option<ScalarRef<'_>>, slot: u32) {
        self.value(pid, value, slot);
        self.layout.service.push(pid);
        self.placing[1] += 1;
    }

    fn tag(&mut self, _: &mut Registry, tid: u32, slot: u32) {
        let tid = tid as usize;
        if self.tags.len() <= tid {
            self.tags.resize_with(tid + 1, Vec::new);
        }
        self.tags[tid].push(slot);
        self.layout.tags.push(tid as u32);
        self.placing[2] += 1;
    }

    fn lists(&mut self) -> TwinLists {
        self.layout.counts.push(std::mem::take(&mut self.placing));
        self.layout.mark(&self.values);
        TwinLists::default()
    }

    fn fields(
        &mut self,
        _: &mut Registry,
        slot: u32,
        status: DeviceStatus,
        connection: ConnectionState,
        managed: bool,
    ) {
        let status = match status {
            DeviceStatus::Enabled => Field::Enabled,
            DeviceStatus::Disabled => Field::Disabled,
        };
        let connection = match connection {
            ConnectionState::Connected => Field::Connected,
            ConnectionState::Disconnected => Field::Disconnected,
        };
        let managed = if managed {
            Field::Managed
        } else {
            Field::Unmanaged
        };
        for field in [status, connection, managed] {
            self.fields[field as usize].push(slot);
        }
    }

    fn created(&mut self, _: &mut Registry, slot: u32) {
        self.slots.push(slot);
    }
}

/// The field bitmaps a twin is in, as indexes into [`Stage::fields`] and
/// [`Bitmaps::fields`] (where the universe comes last).
#[derive(Clone, Copy)]
enum Field {
    Enabled,
    Disabled,
    Connected,
    Disconnected,
    Managed,
    Unmanaged,
}

/// How many field bitmaps there are.
const FIELDS: usize = 6;

/// The registry's field, universe and tag bitmaps a batch adds slots to, moved out of
/// the registry while a thread adds them (admission does not read them).
struct Bitmaps {
    /// By [`Field`], then the universe: the bitmap and the batch's slots for it.
    fields: Vec<(RoaringBitmap, Vec<u32>)>,
    /// By tag: its id, bitmap and the batch's slots for it.
    tags: Vec<(u32, RoaringBitmap, Vec<u32>)>,
}

impl Bitmaps {
    fn add(&mut self) {
        let lists = self.fields.iter_mut().map(|(b, s)| (b, s));
        for (bitmap, slots) in lists.chain(self.tags.iter_mut().map(|(_, b, s)| (b, s))) {
            // Slots ascend within a batch unless removed ones were reused.
            if !slots.is_sorted() {
                slots.sort_unstable();
            }
            index::add_sorted(bitmap, slots);
        }
    }
}

/// The bitmap job of a batch in flight.
enum BitmapJob {
    Todo(Bitmaps),
    Running,
    Done(Bitmaps),
}

/// One property's share of a batch.
struct Job {
    pid: u32,
    index: PropertyIndex,
    values: Vec<StagedValue>,
}

/// A batch's indexing work, shared by the threads doing it, in two phases: one job a
/// property, then (once every property is indexed, since a twin's list takes value ids
/// of many) the twins' lists, a share of [`LIST_CHUNK`] twins at a time.
///
/// (The locks guard a push, a pop or a flag, which cannot be left half-done, so a
/// poisoned lock is used as it is.)
struct Work {
    /// The staged strings the values point into.
    text: String,
    layout: Layout,
    /// How many properties the registry had when the batch was taken.
    props: usize,
    /// How many property jobs there are in all.
    jobs: usize,
    /// Property jobs not started, costliest last (taken first).
    todo: Mutex<Vec<Job>>,
    /// Property jobs done, until all are.
    done: Mutex<Phase>,
    /// Signalled when the first phase ends (or fails).
    indexed: Condvar,
    /// The property jobs, once all are done.
    jobs_done: OnceLock<Vec<Job>>,
    /// The next share of lists to build.
    next_share: AtomicUsize,
    /// Built lists, by share.
    lists: Mutex<Vec<Option<Vec<TwinLists>>>>,
    /// The field and tag bitmaps: the first thread to help adds to them.
    bitmaps: Mutex<BitmapJob>,
}

/// The first phase's progress.
#[derive(Default)]
struct Phase {
    jobs: Vec<Job>,
    /// A job panicked: the second phase will not start.
    failed: bool,
}

/// Fails the first phase if dropped while a property job unwinds, so that no thread
/// waits for it forever.
struct FailOnUnwind<'w>(&'w Work);

impl Drop for FailOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock_done().failed = true;
            self.0.indexed.notify_all();
        }
    }
}

impl Work {
    fn new(
        mut jobs: Vec<Job>,
        bitmaps: Bitmaps,
        text: String,
        layout: Layout,
        props: usize,
    ) -> Work {
        // The properties with the most distinct values are the costliest to intern.
        jobs.sort_by_key(|job| job.index.distinct());
        let shares = layout.shares();
        let work = Work {
            text,
            layout,
            props,
            jobs: jobs.len(),
            todo: Mutex::new(jobs),
            done: Mutex::new(Phase::default()),
            indexed: Condvar::new(),
            jobs_done: OnceLock::new(),
            next_share: AtomicUsize::new(0),
            lists: Mutex::new((0..shares).map(|_| None).collect()),
            bitmaps: Mutex::new(BitmapJob::Todo(bitmaps)),
        };
        if work.jobs == 0 {
            let _ = work.jobs_done.set(Vec::new());
        }
        work
    }

    fn lock_done(&self) -> MutexGuard<'_, Phase> {
        self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Does property jobs until none is left, waits for the others' to end, then
    /// builds shares of lists until none is left.
    fn help(&self) {
        let lock_bitmaps = || self.bitmaps.lock().unwrap_or_else(|e| e.into_inner());
        let todo = {
            let mut job = lock_bitmaps();
            match *job {
                BitmapJob::Todo(_) => std::mem::replace(&mut *job, BitmapJob::Running),
                _ => BitmapJob::Running,
            }
        };
        if let BitmapJob::Todo(mut bitmaps) = todo {
            bitmaps.add();
            *lock_bitmaps() = BitmapJob::Done(bitmaps);
        }
        loop {
            let job = self.todo.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut job) = job else { break };
            let failing = FailOnUnwind(self);
            job.index.load(&mut job.values, &self.text);
            drop(failing);
            let mut done = self.lock_done();
            done.jobs.push(job);
            if done.jobs.len() == self.jobs {
                let _ = self.jobs_done.set(std::mem::take(&mut done.jobs));
                self.indexed.notify_all();
            }
        }
        let jobs = {
            let mut done = self.lock_done();
            loop {
                if let Some(jobs) = self.jobs_done.get() {
                    break jobs;
                }
                if done.failed {
                    return;
                }
                done = self.indexed.wait(done).unwrap_or_else(|e| e.into_inner());
            }
        };
        let mut by_pid: Vec<&[StagedValue]> = vec![&[]; self.props];
        for job in jobs {
            by_pid[job.pid as usize] = &job.values;
        }
        loop {
            let k = self.next_share.fetch_add(1, Ordering::Relaxed);
            if k >= self.layout.shares() {
                break;
            }
            let built = self.layout.lists(k, &by_pid);
            self.lists.lock().unwrap_or_else(|e| e.into_inner())[k] = Some(built);
        }
    }
}

/// A batch being indexed.
struct InFlight {
    work: Arc<Work>,
    helpers: Vec<JoinHandle<()>>,
    /// The batch's slots, in admission order.
    slots: Vec<u32>,
}

/// A bulk load in progress: the stage being filled and the batch being indexed by other
/// threads meanwhile. Dropping it (also while unwinding from a panic in the caller's
/// code) finishes both, so the registry is consistent again whatever happens.
pub(super) struct Loader<'r> {
    reg: &'r mut Registry,
    stage: Stage,
    in_flight: Option<InFlight>,
    threads: usize,
    /// Twins in the batch being staged (from [`BATCH_FIRST`] to [`BATCH_MAX`]).
    batch: usize,
    /// Whether owned twins were admitted (then batches stay at [`BATCH_FIRST`]).
    owned: bool,
}

impl<'r> Loader<'r> {
    pub(super) fn new(reg: &'r mut Registry) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Loader {
            reg,
            stage: Stage::default(),
            in_flight: None,
            threads: cores.min(MAX_THREADS),
            batch: BATCH_FIRST,
            owned: false,
        }
    }

    /// Admits one twin.
    pub(super) fn push(&mut self, twin: crate::twin::Twin) -> Result<Slot, RegistryError> {
        let slot = self.reg.admit(twin, &mut self.stage)?;
        self.owned = true;
        self.admitted();
        Ok(slot)
    }

    /// The registry and the stage, to admit a device onto it (then call
    /// [`Loader::admitted`]).
    pub(super) fn parts(&mut self) -> (&mut Registry, &mut Stage) {
        (self.reg, &mut self.stage)
    }

    /// A device was admitted: starts indexing the stage when it is full.
    pub(super) fn admitted(&mut self) {
        if self.stage.slots.len() >= self.batch {
            self.batch = if self.owned {
                BATCH_FIRST
            } else {
                (2 * self.batch).min(BATCH_MAX)
            };
            self.send();
        }
    }

    /// Finishes the batch in flight, then hands the stage to helper threads (or, on one
    /// core, indexes it here).
    fn send(&mut self) {
        self.join();
        let props = self.reg.props.len();
        let (jobs, bitmaps, text, layout, slots) = self.reg.take_batch(&mut self.stage);
        let work = Arc::new(Work::new(jobs, bitmaps, text, layout, props));
        // A small batch (a load's last, or a small load) is not worth a thread.
        let threads = if slots.len() >= PARALLEL_MIN {
            self.threads
        } else {
            1
        };
        // A helper the system refuses is done without: this thread does its share.
        let helpers = (1..threads)
            .filter_map(|_| {
                let work = Arc::clone(&work);
                std::thread::Builder::new()
                    .name("twinhub-load".into())
                    .spawn(move || work.help())
                    .ok()
            })
            .collect();
        self.in_flight = Some(InFlight {
            work,
            helpers,
            slots,
        });
        if threads == 1 {
            self.join();
        }
    }

    /// Helps the batch in flight to its end, waits for the helpers and puts it back.
    fn join(&mut self) {
        let Some(InFlight {
            work,
            helpers,
            slots,
        }) = self.in_flight.take()
        else {
            return;
        };
        work.help();
        let mut panicked = None;
        for helper in helpers {
            if let Err(panic) = helper.join() {
                panicked = Some(panic);
            }
        }
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
        let work = Arc::try_unwrap(work).ok().expect("every helper has ended");
        let Work {
            mut text,
            mut layout,
            jobs_done,
            lists,
            bitmaps,
            ..
        } = work;
        match bitmaps.into_inner().unwrap_or_else(|e| e.into_inner()) {
            BitmapJob::Done(bitmaps) => self.reg.put_bitmaps(bitmaps, &mut self.stage),
            _ => unreachable!("the first thread to help adds the bitmaps"),
        }
        let jobs = jobs_done.into_inner().expect("every job is done");
        let lists = lists.into_inner().unwrap_or_else(|e| e.into_inner());
        let lists = lists
            .into_iter()
            .flat_map(|share| share.expect("every share is built"));
        self.reg.finish_batch(jobs, lists, &slots, &mut self.stage);
        let mut slots = slots;
        slots.clear();
        text.clear();
        layout.clear();
        self.stage.spare_slots.push(slots);
        self.stage.spare_text.push(text);
        self.stage.spare_layouts.push(layout);
    }

    /// Indexes what is staged and merges the id order's runs (one a batch), the latter
    /// while helpers index the last batch (they touch neither the order nor the entries).
    fn finish(&mut self) {
        if !self.stage.slots.is_empty() {
            self.send();
        }
        let reg = &mut *self.reg;
        reg.id_order.settle(&reg.slots, &mut reg.free_slots);
        self.join();
    }
}

impl Drop for Loader<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Registry {
    /// Takes the stage's batch: moves out the indexes its values need (leaving
    /// stand-ins) and the bitmaps its fields and tags need, and adds its id-order
    /// entries here and now.
    fn take_batch(&mut self, stage: &mut Stage) -> (Vec<Job>, Bitmaps, String, Layout, Vec<u32>) {
        let mut jobs = Vec::new();
        for (pid, values) in stage.values.iter_mut().enumerate() {
            if values.is_empty() {
                continue;
            }
            let stand_in = self.props[pid].stand_in();
            let spare = stage.spare.pop().unwrap_or_default();
            jobs.push(Job {
                pid: pid as u32,
                index: std::mem::replace(&mut self.props[pid], stand_in),
                values: std::mem::replace(values, spare),
            });
        }
        let mut spare = || stage.spare_slots.pop().unwrap_or_default();
        let mut fields: Vec<(RoaringBitmap, Vec<u32>)> = stage
            .fields
            .iter_mut()
            .zip(self.field_bitmaps_mut())
            .map(|(slots, bitmap)| (std::mem::take(bitmap), std::mem::replace(slots, spare())))
            .collect();
        let mut universe = spare();
        universe.extend_from_slice(&stage.slots);
        fields.push((std::mem::take(&mut self.universe), universe));
        let tags = stage
            .tags
            .iter_mut()
            .enumerate()
            .filter(|(_, slots)| !slots.is_empty())
            .map(|(tid, slots)| {
                let bitmap = std::mem::take(&mut self.tags[tid].slots);
                (tid as u32, bitmap, std::mem::take(slots))
            })
            .collect();
        self.id_order.push_batch(&self.slots, &stage.slots);
        let text = stage.spare_text.pop().unwrap_or_default();
        let slots = stage.spare_slots.pop().unwrap_or_default();
        let layout = stage.spare_layouts.pop().unwrap_or_default();
        (
            jobs,
            Bitmaps { fields, tags },
            std::mem::replace(&mut stage.text, text),
            std::mem::replace(&mut stage.layout, layout),
            std::mem::replace(&mut stage.slots, slots),
        )
    }

    /// The field bitmaps, in the order of [`Field`].
    pub(super) fn field_bitmaps_mut(&mut self) -> [&mut RoaringBitmap; FIELDS] {
        [
            &mut self.enabled,
            &mut self.disabled,
            &mut self.connected,
            &mut self.disconnected,
            &mut self.managed,
            &mut self.unmanaged,
        ]
    }

    /// Puts a batch's bitmaps back; their slot lists go to `stage` for reuse.
    fn put_bitmaps(&mut self, bitmaps: Bitmaps, stage: &mut Stage) {
        let Bitmaps { mut fields, tags } = bitmaps;
        let (universe, mut slots) = fields.pop().expect("the universe comes last");
        self.universe = universe;
        slots.clear();
        stage.spare_slots.push(slots);
        for (place, (bitmap, mut slots)) in self.field_bitmaps_mut().into_iter().zip(fields) {
            *place = bitmap;
            slots.clear();
            stage.spare_slots.push(slots);
        }
        for (tid, bitmap, mut slots) in tags {
            self.tags[tid as usize].slots = bitmap;
            // The next batch may be staged already: only an empty list is replaced.
            let staged = &mut stage.tags[tid as usize];
            if staged.is_empty() {
                slots.clear();
                *staged = slots;
            }
        }
    }

    /// Puts an indexed batch's indexes back and its lists into its twins' entries; its
    /// value lists go to `stage` for reuse.
    fn finish_batch(
        &mut self,
        jobs: Vec<Job>,
        lists: impl Iterator<Item = TwinLists>,
        slots: &[u32],
        stage: &mut Stage,
    ) {
        for (&slot, lists) in slots.iter().zip(lists) {
            let entry = self.slots[slot as usize]
                .as_mut()
                .expect("staged twins are live");
            entry.lists = lists;
        }
        for mut job in jobs {
            self.props[job.pid as usize] = job.index;
            job.values.clear();
            stage.spare.push(job.values);
        }
    }
}
