//! Durability: twins in an embedded [`redb`] database in a directory the service names.
//!
//! The in-memory [`Registry`] stays the query engine; the store is its write-behind
//! journal with one narrow interface: [`Store::commit`] appends a batch (every change the
//! registry made since the last commit, in one transaction), [`Store::open`] reads the
//! snapshot back (rebuilding the registry and every index through the bulk-load path),
//! and [`Store::compact`] gives space back. A store on another engine (a replicated one)
//! could sit behind the same three calls; the registry, queries and jobs would not know.
//!
//! **What a commit writes.** The store reads the registry's change feed after the last
//! committed sequence number and writes, per device touched, only what changed: anything
//! but a device-property report (fields, status, tags, service properties, registration,
//! credentials, and a device property's removal too) rewrites the twin's head; the
//! device-property reports and removals of the whole commit go into one record of a log
//! (`property_log`, keyed by the commit's newest sequence number), a sequential append.
//! Each twin's device properties live in one record of their own (`properties`) that names
//! the commit it is current through; every commit also folds some twins' logged changes
//! into their records, rewriting each from the registry, in device-id order from where the
//! previous commit stopped (so the records rewritten are neighbours on disk), and deletes
//! the log records no twin needs any more. How many: enough that a round over the twins
//! with logged changes *now* would end before the log took in half of
//! [`StoreConfig::property_log_limit`] changes, and every one of them when a commit would
//! leave it past the limit. Twins that get their first logged change during a round
//! lengthen it, so the log settles above half: with uniformly random reports in commits of
//! 4,096, a model of this schedule puts it at about 60% of the default limit over 100k
//! twins, 86% over 1M and 95% over 4M (below the limit, so no commit folds every twin;
//! larger fleets come nearer to it). A random report costs a log entry, not a page of the
//! table rewritten for one row; a twin reporting many times between two folds is rewritten
//! once. Opening reads each twin's record and applies its logged changes numbered after the
//! record's commit. The change feed kept on disk is one record per commit too (`feed.rs`).
//! See `record.rs` for the layout. If the feed no longer holds every change since the last
//! commit (more than its capacity between two commits), the commit rewrites every twin (and
//! empties the log) instead: slower, never wrong. Such a commit (and every
//! [`Store::commit_all`]) also empties the feed kept on disk: a consumer resuming from
//! before it gets a [`FeedGap`].
//!
//! **Opening** rebuilds the registry through its bulk load. A reader thread reads the
//! twins in id order and parses each head straight into a borrowed row of a batch (no
//! `Twin` is built: strings stay in the batch's text), with its record's properties and
//! its logged changes; a head that rows cannot hold (a service property whose value is an
//! object, members repeated in a damaged file, strings past what a batch's `u32` offsets
//! address) is decoded whole in its place. The calling thread adds each batch to the load
//! while the load's threads index earlier ones, so reading and loading overlap. A batch
//! holds 1,024 twins, or fewer once its heads, records and logged strings reach 16 MiB;
//! at most 6 batches are in memory (4 queued, one being filled, one being loaded): past
//! that the reader waits for the load. The whole log is read first, by the reader
//! thread, and sorted by device (at most [`StoreConfig::property_log_limit`] changes
//! after a commit). Measured
//! (`benches/store.rs`, 2026-12-07): 1M twins open in 4.0 s with an empty log and 4.6 s
//! with 907,373 logged changes; decoding an owned `Twin` per head took 7.4 to 7.9 s.
//!
//! **PSK keys.** A twin's head holds its PSK key: sealed (XChaCha20-Poly1305, the device
//! id bound in) when [`StoreConfig::sealing_key`] is set, as hex otherwise. See
//! [`SealingKey`] and the README's Durability section for what opening with, without or
//! with another key does.
//!
//! **Acknowledgement.** A commit returns after redb's `Durability::Immediate` commit (the
//! data and the new root are fsynced). A service-side write is acknowledged only after its
//! commit; device events (notifications, responses, registrations) are committed in
//! groups, one transaction per batch the hub applies.
//!
//! **What a crash can lose, and what it cannot.** A crash (power cut, `SIGKILL`, panic)
//! loses at most the changes made in memory since the last commit returned: for a hub,
//! the events of the batch being applied or committed, which devices report again (their
//! next notification or registration). It cannot lose anything acknowledged: a commit that
//! returned is on disk, and redb's copy-on-write commit is atomic, so after a crash every
//! twin is exactly as some commit left it, never half-written.
//!
//! **Sequence numbers** (etags, change-feed numbers) never repeat across restarts: opening
//! persists a high-water mark [`SEQ_RESERVE`] ahead of the numbers in use before the
//! registry hands out any, every commit moves it on once half of it is used, and a
//! reopened registry continues after the mark. The bound: at most `SEQ_RESERVE / 2` = 524,288 changes between two commits
//! (the hub commits every batch of at most 4,096 events); past it a crash before the
//! next commit could let numbers repeat.
//! The numbers each opening skips (those after the last committed change up to the
//! mark: a consumer may have read them from memory before a crash took them) are kept,
//! one range per opening, until the feed has dropped past them: resuming the feed after
//! one of them is a [`FeedGap`], after this restart and every later one, from the
//! registry and from [`Store::changes_after`] alike. Every opening adds a range (the
//! reserve always runs ahead of the last commit: a crash after a commit may still lose
//! numbers handed out later), and so does every [`Store::reload`]. At most 1,024 ranges
//! are kept, or more only while ranges are separated by committed changes the feed keeps
//! (so never more than [`StoreConfig::feed_retention`] + 2; 16 bytes a range). Past
//! 1,024, two neighbouring ranges with nothing between them (an opening that committed
//! no change, as in a crash loop) merge, the oldest such pair first: the only number that
//! joins the gap is that opening's start, its newest if it made no change, so a consumer
//! holding exactly that number re-reads its twins. Ranges with committed changes between
//! them (ordinary restarts, each committing something) never merge: a committed change
//! the feed keeps never answers with a gap, and a number lost in a crash always does.
//!
//! **Errors.** A failed write poisons the store ([`StoreError::Poisoned`]) until
//! [`Store::reload`] rebuilds the registry from what is durable; callers that hold a
//! registry lock while committing (the hub does) reload before anyone reads, so memory
//! never runs ahead of disk for an acknowledged write. A caller with jobs reloads them
//! too ([`Store::load_jobs`]) and never commits an engine that did not come from the
//! store: the failed write took its journal's rows, and later rows without them would
//! leave children whose job is not on disk. [`Store::commit`] refuses a registry this
//! store did not return ([`StoreError::ForeignRegistry`]).
//!
//! **What is durable.** Every twin: identity, status, connection state and the
//! registration (endpoint, objects, address), `isManaged`, authentication (the PSK key
//! is stored in the twin's head, sealed with [`StoreConfig::sealing_key`] when one is
//! set, as hex otherwise; it never appears in JSON output or `Debug`),
//! the configuration string, tags, service properties, device properties with their
//! `lastUpdatedTime`, the generation id and both etags; the sequence high-water mark;
//! the newest [`StoreConfig::feed_retention`] changes; every job: its spec, parent and
//! child states, attempts, step, results and failure reasons, so the whole job history
//! comes back ([`Store::commit_with_jobs`] writes the engine's journal in the batch's
//! transaction; [`Store::load_jobs`] restores the engine and resumes its jobs: see
//! [`JobEngine::restore`] for work that was in flight). The LWM2M server's registration
//! table is not written as such: a hub started on the bundled server (`Hub::bind_udp`,
//! `bind_dtls`, the builder's `udp` or `dtls`) puts back each connected twin's
//! registration whose lifetime (plus the grace) has not run out, same location, so the
//! device's Updates are accepted and operations reach it without a new Register; every
//! other connected twin is marked disconnected. **Not durable**: observations (the hub
//! observes the synced paths again at start), a device's announced content formats, a
//! queue-mode device's awake window and DTLS sessions. What a restored job's started
//! children wait for is in [`JobEngine::restore`].
//!
//! **Job rows.** `job_parents` (u32 position -> the parent's JSON: spec without targets,
//! state, times, how it ended) and `job_children` (u32 position -> state, attempt, step,
//! flags, times, device id, failure reason as JSON). A child row is rewritten when its
//! child changes (about 40 bytes per child). History retention
//! ([`EngineConfig::retain_jobs`] and [`EngineConfig::retain_children`]) bounds both
//! tables: the rows of the jobs it drops are deleted in the commit of the job whose
//! creation dropped them ([`JobRow::DropBefore`]).
//!
//! **Growth.** A twin's device properties have one record, rewritten in place; the log
//! holds at most [`StoreConfig::property_log_limit`] changes after a commit and the feed
//! [`StoreConfig::feed_retention`]; redb reuses the pages a commit frees, so a steady stream of
//! updates does not grow the file (tests/store_growth.rs). [`Store::compact`] gives
//! free pages back to the file system.
//!
//! **Backups.** The directory holds one file, `twinhub.redb`. Copy it only while no
//! process has it open: a copy taken while commits go on may hold pages of several
//! commits. A store in use is backed up with [`Store::snapshot`] and
//! [`StoreSnapshot::write_to`], which copy the last commit into a new directory while
//! commits go on (see [`StoreSnapshot`] for how, and what it costs).
//!
//! ```
//! use twinhub::store::{Store, StoreConfig};
//! use twinhub::twin::Twin;
//! use twinhub::DeviceId;
//!
//! let dir = std::env::temp_dir().join(format!("twinhub-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let (mut store, mut registry) = Store::open(&dir, StoreConfig::default())?;
//! registry.create(Twin::new(DeviceId::new("pump-1")?).with_tag("pumps"))?;
//! store.commit(&registry)?; // durable from here on
//! drop((store, registry));
//!
//! let (_store, registry) = Store::open(&dir, StoreConfig::default())?;
//! assert!(registry.get("pump-1").unwrap().has_tag("pumps"));
//! # drop(_store);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Under a hub**, with the PSK keys sealed: the store goes into [`HubConfig::store`]
//! and the hub starts on the registry [`Store::open`] returned. Another registry, such as
//! a `Registry::new()`, is imported only while the directory holds no twin; over one
//! that does the hub refuses it ([`StoreError::WouldReplace`]) instead of replacing the
//! twins, unless the service called [`Store::adopt`] with it first. [`StoreConfig`] is
//! `#[non_exhaustive]`: start from its defaults and set the fields.
//!
//! [`HubConfig::store`]: crate::hub::HubConfig::store
//!
#![cfg_attr(feature = "lwm2m", doc = "```")]
#![cfg_attr(not(feature = "lwm2m"), doc = "```ignore")]
//! use twinhub::hub::{Hub, HubConfig};
//! use twinhub::store::{SealingKey, SharedStore, Store, StoreConfig};
//! use twinhub::twin::Twin;
//! use twinhub::DeviceId;
//!
//! let dir = std::env::temp_dir().join(format!("twinhub-doc-hub-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let mut config = StoreConfig::default();
//! // 32 bytes the service keeps apart from the directory (a secrets manager, ...).
//! config.sealing_key = SealingKey::from_hex(&"5e".repeat(32));
//! let (store, registry) = Store::open(&dir, config.clone())?;
//! let mut hub_config = HubConfig::default();
//! hub_config.store = Some(SharedStore::new(store));
//! let hub = Hub::bind_udp("127.0.0.1:0", registry, hub_config)?; // `open`'s registry
//! hub.create_device(Twin::new(DeviceId::new("pump-1")?))?; // durable on return
//! hub.stop();
//! drop(hub);
//!
//! let (_store, registry) = Store::open(&dir, config)?; // the same sealing key
//! assert!(registry.get("pump-1").is_some());
//! # drop(_store);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backup;
mod error;
mod feed;
mod record;
mod seal;

pub use backup::{Backup, StoreSnapshot};
pub use error::StoreError;
use seal::Sealer;
pub use seal::SealingKey;

use crate::DeviceId;
use crate::job::{EngineConfig, JobEngine, JobRow};
use crate::registry::ndjson::StoredRows;
use crate::registry::{Change, ChangeKind, DEFAULT_FEED_CAPACITY, FeedGap, Registry, Slot};
use crate::time::Timestamp;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The newest file format this version reads and the one it writes.
///
/// Format 4 may hold a twin's PSK key sealed (`"sealedPsk"` in its head, see
/// [`StoreConfig::sealing_key`]); a version that reads up to format 3 refuses the file
/// rather than load the twins without their keys. A format 3 file opens as format 4 (no
/// record changes). Format 3 keeps each twin's device properties in one record, logs
/// each commit's device-property changes in one record, and keeps the change feed as one
/// record per commit (see the module docs). Format 2 kept a row per device property and a row per
/// change of the feed; format 1 also lacked the values in the feed's rows. A format 1
/// or 2 file opens converted, in the opening's transaction: its twins, properties and
/// jobs as they were, a format 2 feed as it was; a format 1 feed is dropped and counted
/// as dropped, so a consumer resuming inside it gets a [`crate::registry::FeedGap`].
pub const FORMAT: u64 = 4;

/// How many sequence numbers a commit reserves ahead of the newest one in use.
pub const SEQ_RESERVE: u64 = 1 << 20;

/// The store's file inside the data directory.
pub const FILE_NAME: &str = "twinhub.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TWINS: TableDefinition<&str, &[u8]> = TableDefinition::new("twins");
/// Device id -> every device property of the twin (`record::encode_properties`), as of
/// the commit the record names.
const PROPERTIES: TableDefinition<&str, &[u8]> = TableDefinition::new("properties");
/// Commit (its newest sequence number) -> the device-property changes it made, not yet
/// folded into `properties` (`record::encode_log_entry`).
const PROPERTY_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("property_log");
/// Formats 1 and 2: one row per device property, (device id, name) -> `seq | time |
/// value`; moved into `properties` when such a file opens.
const OLD_PROPS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("device_properties");
/// The newest change of a commit -> every change of the commit, oldest first
/// (`feed::append`): the change feed kept on disk.
const FEED: TableDefinition<u64, &[u8]> = TableDefinition::new("feed_records");
/// Formats 1 and 2: the feed as a row per change, sequence number -> `feed::encode`;
/// a format 2 file's rows become records of one change when it opens.
const OLD_FEED: TableDefinition<u64, &[u8]> = TableDefinition::new("feed");
const JOB_PARENTS: TableDefinition<u32, &[u8]> = TableDefinition::new("job_parents");
const JOB_CHILDREN: TableDefinition<u32, &[u8]> = TableDefinition::new("job_children");
/// Sequence numbers reserved before a restart that no surviving change used, one row per
/// opening: `below -> above`, the numbers strictly between. Rows whose numbers the feed
/// dropped anyway are deleted at the next opening.
const UNUSED: TableDefinition<u64, u64> = TableDefinition::new("unused_seq");
/// Packages the hub serves its devices (`Hub::publish_package`), by name.
const PACKAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("packages");

const META_FORMAT: &str = "format";
const META_COMMITTED: &str = "committed_seq";
const META_RESERVED: &str = "reserved_seq";
const META_FEED_DROPPED: &str = "feed_dropped_through";
/// Where the registry of the last opening started (a number it handed out as its newest).
const META_OPENED: &str = "opened_at";

/// Ranges of unused sequence numbers kept (one per opening, until the feed drops past
/// them); at the bound two neighbours merge, if two are (see `merge_neighbours`). 4 in
/// unit tests, to reach it.
const MAX_UNUSED_RANGES: u64 = if cfg!(test) { 4 } else { 1024 };

/// How many changes the store keeps on disk by default.
pub const DEFAULT_FEED_RETENTION: usize = 1 << 16;

/// How many device-property changes the store's log holds at most by default (see
/// [`StoreConfig::property_log_limit`]).
pub const DEFAULT_PROPERTY_LOG_LIMIT: usize = 1 << 20;

/// Settings of a [`Store`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The change-feed capacity of the registry [`Store::open`] returns
    /// (default [`DEFAULT_FEED_CAPACITY`]). A commit reads the feed; more changes than
    /// this between two commits make the commit rewrite every twin.
    pub feed_capacity: usize,
    /// How many of the newest changes the store keeps on disk (default
    /// [`DEFAULT_FEED_RETENTION`]), for consumers resuming after a restart
    /// ([`Store::changes_after`]). A commit writes its changes as one record and, past
    /// the bound, deletes the oldest records and cuts the oldest one left, so that
    /// exactly this many are kept once that many were committed; asking for changes
    /// before the oldest kept one is a [`FeedGap`]. A commit that rewrites every twin
    /// ([`Store::commit_all`], or more than `feed_capacity` changes since the last commit)
    /// empties the kept feed. 0 keeps none (and writes no feed records). A smaller value
    /// at a later opening cuts the feed on disk at its first commit.
    pub feed_retention: usize,
    /// How many device-property changes the log holds at most (default
    /// [`DEFAULT_PROPERTY_LOG_LIMIT`]; at least 1). A commit logs the device-property
    /// changes it makes and folds the logged changes of some twins into their records,
    /// aiming at half of this (the log settles higher, nearer the limit the larger the
    /// fleet: see the module docs); a commit that would leave more than this folds
    /// every twin with a logged change (one slower commit). Opening a directory replays
    /// the log: the limit of the commits that wrote it bounds how much (a smaller limit at
    /// a later opening applies from its first commit).
    pub property_log_limit: usize,
    /// Seals the PSK keys the store writes (default none: they are written as hex).
    /// With a key, each twin's PSK key is encrypted in its head (XChaCha20-Poly1305, the
    /// device id bound in), and opening rewrites sealed any head that still holds a plain
    /// key (its last step: an opening that fails leaves them as they were). A store
    /// holding sealed keys does not open without its key
    /// ([`StoreError::SealingKeyMissing`]) or with another
    /// ([`StoreError::Unsealing`]). Keep the key apart from the directory and its
    /// backups; a backup restores only with the key it was sealed under (or with that
    /// key among the retired ones). Plain keys written before may stay in the file's
    /// free pages until they are reused: see the README's Durability section.
    pub sealing_key: Option<SealingKey>,
    /// Keys the store's PSK keys may still be sealed under (default none): opening opens
    /// them with these too, and rewrites those heads under [`StoreConfig::sealing_key`],
    /// or plain if it is `None`, before [`Store::open`] returns. Changing the key: the
    /// new one as `sealing_key`, the old one here, for one opening (or as long as an old
    /// backup may be restored); turning sealing off: no `sealing_key`, the old one here.
    pub retired_sealing_keys: Vec<SealingKey>,
    /// With a [`StoreConfig::sealing_key`], refuse a head that holds its PSK key plain
    /// instead of sealing it (default `false`): [`Store::open`] (and a reload) fails
    /// with [`StoreError::PlainKey`] naming the twin, and reads nothing into memory.
    /// Sealing keeps the keys secret, but whoever can write the store's file can plant a
    /// plain key there (no sealing key is needed for that), and an opening that accepts
    /// plain keys seals it and hands it to the hub: a device identity with a key of the
    /// planter's choosing. Turn this on once the store's keys are sealed (after one
    /// opening with the sealing key). Without a sealing key it has no effect (the store
    /// writes its keys plain).
    pub refuse_plain_keys: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            feed_capacity: DEFAULT_FEED_CAPACITY,
            feed_retention: DEFAULT_FEED_RETENTION,
            property_log_limit: DEFAULT_PROPERTY_LOG_LIMIT,
            sealing_key: None,
            retired_sealing_keys: Vec::new(),
            refuse_plain_keys: false,
        }
    }
}

/// What one [`Store::commit`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// The registry's sequence number now durable.
    pub seq: u64,
    /// Twin heads written or deleted.
    pub heads: usize,
    /// Device-property changes written to the log (or, for a twin rewritten whole, its
    /// properties).
    pub properties: usize,
    /// Twins whose device properties were rewritten from the registry into their record
    /// (the fold of logged changes, and twins created or rewritten whole).
    pub folded: usize,
    /// Whether every twin was rewritten (the feed did not cover the commit).
    pub full: bool,
    /// Job rows (parents and children) written.
    pub jobs: usize,
}

/// The durable store of one data directory. See the [module docs](self).
pub struct Store {
    db: Option<Database>,
    path: PathBuf,
    config: StoreConfig,
    /// The registry sequence number the disk holds everything through.
    committed: u64,
    /// The high-water mark on disk: no number above it was ever handed out.
    reserved: u64,
    /// Where the registry this opening (or reload) returned started: its newest number
    /// until it makes a change, so a resume point ([`Store::changes_after`]) though no
    /// commit wrote it. 0 once [`Store::commit_all`] wrote a registry of another history.
    opened: u64,
    /// Marks the registry that open (or reload) returned as this store's.
    origin: u64,
    poisoned: bool,
    scratch: Vec<u8>,
    /// The log's state (which twins have changes in it, in which records).
    log: PropertyLog,
    /// Seals PSK keys and opens them (from [`StoreConfig::sealing_key`] and
    /// [`StoreConfig::retired_sealing_keys`]); `None` when neither names a key.
    sealer: Option<Sealer>,
    /// How many changes the `feed_records` table holds.
    feed_kept: usize,
    /// How many of the next reloads fail (a test hook, see [`Store::fail_next_reload`]).
    #[cfg(feature = "fuzzing")]
    fail_reloads: u32,
    /// Writes still to fail (a test hook, see [`Store::fail_next_commit`]).
    #[cfg(feature = "fuzzing")]
    fail_writes: u32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("committed", &self.committed)
            .field("reserved", &self.reserved)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

/// What a device touched since the last commit needs written.
#[derive(Default)]
struct Dirty {
    /// Created or removed: rewrite (or delete) the head and the properties record.
    full: bool,
    /// Rewrite the head.
    head: bool,
    /// Device properties reported or removed, with the newest change's sequence number.
    props: BTreeMap<Arc<str>, u64>,
}

impl Store {
    /// Opens (or creates) the store in `dir` (created if missing) and rebuilds the
    /// registry it holds: every twin and index through the bulk-load path, the etags and
    /// generation ids as they were, the sequence continuing after every number handed
    /// out before.
    pub fn open(
        dir: impl AsRef<Path>,
        config: StoreConfig,
    ) -> Result<(Store, Registry), StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let sealer = Sealer::from_config(&config);
        let mut store = Store {
            sealer,
            db: None,
            path,
            config,
            committed: 0,
            reserved: 0,
            opened: 0,
            origin: 0,
            poisoned: true,
            scratch: Vec::new(),
            log: PropertyLog::default(),
            feed_kept: 0,
            #[cfg(feature = "fuzzing")]
            fail_reloads: 0,
            #[cfg(feature = "fuzzing")]
            fail_writes: 0,
        };
        let registry = store.reload()?;
        Ok((store, registry))
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The registry sequence number through which everything is durable.
    pub fn committed_seq(&self) -> u64 {
        self.committed
    }

    /// How many device-property changes the log holds (at most
    /// [`StoreConfig::property_log_limit`] after a commit): opening applies each of them
    /// over its twin's record.
    pub fn logged_changes(&self) -> usize {
        self.log.entries
    }

    /// Whether a failed write left the store refusing commits until
    /// [`Store::reload`] ([`StoreError::Poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Drops what is in memory and rebuilds the registry from the disk (what
    /// [`Store::open`] does); clears [`StoreError::Poisoned`]. Changes not committed are
    /// gone from the returned registry.
    pub fn reload(&mut self) -> Result<Registry, StoreError> {
        self.poisoned = true;
        self.db = None;
        #[cfg(feature = "fuzzing")]
        if self.fail_reloads > 0 {
            self.fail_reloads -= 1;
            return Err(StoreError::Engine {
                detail: "reload failed (injected by fail_next_reload)".into(),
            });
        }
        // redb 2.6 asserts (panics) on some damaged files, e.g. one truncated below the
        // length its header records: that is a corrupted file, not a crash.
        let path = self.path.clone();
        let opened = std::panic::catch_unwind(move || Database::create(path)).map_err(|_| {
            StoreError::Corrupted {
                detail: "the storage engine refused the file (truncated or overwritten)".into(),
            }
        })?;
        let db = opened.map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: self.path.clone(),
            },
            e => e.into(),
        })?;
        let (committed, start) = init(&db)?;
        let origin = next_origin();
        let sealer = self.sealer.as_ref();
        let (registry, log, feed_kept, stale_psk) =
            rebuild(&db, &self.config, sealer, origin, committed, start)?;
        // The job rows are checked now, so that a damaged one is an error of the opening,
        // not of the hub that loads the jobs later.
        let (parents, children) = job_rows(&db)?;
        JobEngine::restore(
            EngineConfig::default(),
            Instant::now(),
            Timestamp::now(),
            parents,
            children,
        )
        .map_err(bad_job_row)?;
        // Rewriting the stale heads is the opening's last fallible step: an opening that
        // fails leaves them as they were, so the store still opens as it did before.
        if !stale_psk.is_empty() {
            rewrite_heads(&db, &registry, &stale_psk, sealer)?;
        }
        self.db = Some(db);
        self.committed = committed;
        self.origin = origin;
        self.reserved = start.saturating_add(SEQ_RESERVE);
        self.opened = start;
        self.log = log;
        self.feed_kept = feed_kept;
        self.poisoned = false;
        Ok(registry)
    }

    /// Makes every change `registry` made since the last commit durable, in one
    /// transaction; returns once it is on disk. `registry` must be the one
    /// [`Store::open`] (or [`Store::reload`]) returned, or one [`Store::adopt`] took,
    /// changed since only in memory, and not displaced since by a [`Store::commit_all`]
    /// of another registry.
    ///
    /// On error the store is poisoned: the caller must [`reload`](Store::reload) (and
    /// drop its registry for the one returned) before committing again.
    pub fn commit(&mut self, registry: &Registry) -> Result<Committed, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        self.check_origin(registry)?;
        let last = registry.last_seq();
        if last == self.committed {
            return Ok(Committed {
                seq: last,
                ..Committed::default()
            });
        }
        self.poisoned = true;
        let result = self.write(registry, None, Vec::new());
        if result.is_ok() {
            self.poisoned = false;
        }
        result
    }

    /// [`Store::commit`] with the job engine's changes since its last commit (its
    /// journal, see [`JobEngine::take_journal`]) in the same transaction: what the hub
    /// does after each batch of events and for each job created or cancelled. `jobs` must
    /// be the engine [`Store::load_jobs`] returned (or one with its journal on since the
    /// store was empty of jobs).
    ///
    /// On error the store is poisoned, as for [`Store::commit`]; reload both the registry
    /// and the jobs.
    pub fn commit_with_jobs(
        &mut self,
        registry: &Registry,
        jobs: &mut JobEngine,
    ) -> Result<Committed, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        self.check_origin(registry)?;
        let last = registry.last_seq();
        if last == self.committed && jobs.journal_is_empty() {
            return Ok(Committed {
                seq: last,
                ..Committed::default()
            });
        }
        self.poisoned = true;
        let result = self.write(registry, None, jobs.take_journal());
        if result.is_ok() {
            self.poisoned = false;
        }
        result
    }

    /// Rebuilds the job engine from the store (every job, its children and history) and
    /// resumes its jobs at `now`, with its journal on; see [`JobEngine::restore`] for what
    /// happens to work that was in flight. `wall` is the wall-clock time of `now`.
    pub fn load_jobs(
        &self,
        config: EngineConfig,
        now: Instant,
        wall: Timestamp,
    ) -> Result<JobEngine, StoreError> {
        let db = self.db.as_ref().ok_or(StoreError::Poisoned)?;
        let (parents, children) = job_rows(db)?;
        JobEngine::restore(config, now, wall, parents, children).map_err(bad_job_row)
    }

    /// [`Store::load_jobs`] in a running hub whose store refused a commit: the new engine
    /// replaces `earlier` and takes over what only memory held (see
    /// `JobEngine::restore_after`).
    pub(crate) fn reload_jobs(
        &self,
        earlier: &JobEngine,
        now: Instant,
        wall: Timestamp,
    ) -> Result<JobEngine, StoreError> {
        let db = self.db.as_ref().ok_or(StoreError::Poisoned)?;
        let (parents, children) = job_rows(db)?;
        JobEngine::restore_after(earlier, now, wall, parents, children).map_err(bad_job_row)
    }

    /// Rewrites every twin from `registry` in one transaction (a repair, or an import of
    /// a registry built in memory); returns once it is on disk. The registry's numbers
    /// are written as they are: a registry from another history may show etags and
    /// sequence numbers this directory handed out before (a consumer resuming past its
    /// last number gets a [`FeedGap`]). [`Store::adopt`] is the import that renumbers.
    ///
    /// Every twin's properties are written whole (the log is emptied), and the feed kept
    /// on disk starts afresh after the registry's last number: resuming from any earlier
    /// number is a [`FeedGap`].
    ///
    /// After a registry this store did not return is written, the one it did return no
    /// longer matches the disk: its commits are refused ([`StoreError::ForeignRegistry`];
    /// they would have written its recent changes over the import, leaving a mix of the
    /// two) until [`Store::reload`] returns the registry the disk now holds. Nor does
    /// [`Store::commit`] take the registry written (only `commit_all` again);
    /// [`Store::adopt`] is the import whose registry the store commits from then on.
    pub fn commit_all(&mut self, registry: &Registry) -> Result<Committed, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let foreign = registry.origin() != self.origin;
        self.poisoned = true;
        let result = self.write(registry, Some(Plan::Full), Vec::new());
        if result.is_ok() {
            self.poisoned = false;
            if foreign {
                self.origin = next_origin();
                self.opened = 0;
            }
        }
        result
    }

    /// The committed changes after sequence `after`, oldest first, at most `limit`, read
    /// from the disk: how a consumer resumes after a restart. Changes the store no longer
    /// keeps ([`StoreConfig::feed_retention`]) are a [`FeedGap`]: the consumer re-reads
    /// the twins it cares about and resumes from [`FeedGap::resume_after`]; so is a
    /// number past the newest this history has (from another history): past
    /// [`Store::committed_seq`] and past where the registry this opening returned
    /// started (its `last_seq()` before any change, where a fresh subscription of a hub
    /// on it starts: that number, like an earlier opening's that made no change, resumes
    /// without a gap, as in [`Registry::changes_after`]); and so is one reserved before
    /// a restart, this one or an earlier one, that no surviving change used (a change
    /// read before it was committed and lost in a crash). Changes made
    /// in memory but not yet committed are only in the registry's own feed
    /// ([`Registry::changes_after`]).
    pub fn changes_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Result<Vec<Change>, FeedGap>, StoreError> {
        let db = self.db.as_ref().ok_or(StoreError::Poisoned)?;
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let dropped = meta.get(META_FEED_DROPPED)?.map_or(0, |v| v.value());
        if after < dropped {
            return Ok(Err(FeedGap {
                after,
                dropped_through: dropped,
            }));
        }
        let rows = txn.open_table(FEED)?;
        // A number past everything committed comes from another history: a gap, as in
        // `Registry::changes_after`, not a silent skip. Where this opening's registry
        // started is no such number (it is that registry's newest until it makes a
        // change, `Subscription::starts_after` hands it out); the numbers before it that
        // no change used are in the unused ranges below.
        if after > self.committed.max(self.opened) {
            return Ok(Err(FeedGap {
                after,
                dropped_through: self.committed,
            }));
        }
        // So is one reserved before a restart that no surviving change used.
        if let Some(row) = txn.open_table(UNUSED)?.range(..after)?.next_back() {
            let (below, above) = row?;
            if after < above.value() {
                return Ok(Err(FeedGap {
                    after,
                    dropped_through: below.value(),
                }));
            }
        }
        let mut out = Vec::new();
        'records: for row in rows.range(after.saturating_add(1)..)? {
            let (k, v) = row?;
            for c in feed::decode_record(k.value(), v.value())? {
                if c.seq <= after {
                    continue;
                }
                if out.len() == limit {
                    break 'records;
                }
                out.push(c);
            }
        }
        Ok(Ok(out))
    }

    /// Makes `registry` the store's content and commits it. The registry
    /// [`Store::open`] (or [`Store::reload`]) returned is committed as usual. A registry
    /// built elsewhere is imported: its twins replace what the directory held, its
    /// sequence first moves past every number the directory ever handed out, and every
    /// twin's generation id and etags take a number after those (so no etag repeats: a
    /// client's `If-Match` from before fails), and it becomes this store's registry. A
    /// consumer resuming the change feed from before gets a [`FeedGap`]. A hub started
    /// over the store on another registry than `open`'s does not replace twins the
    /// directory holds ([`StoreError::WouldReplace`]): calling `adopt` first is how a
    /// service replaces them on purpose.
    pub fn adopt(&mut self, registry: &mut Registry) -> Result<Committed, StoreError> {
        if registry.origin() == self.origin {
            return self.commit(registry);
        }
        registry.advance_seq(self.reserved);
        registry.renumber_versions();
        let done = self.commit_all(registry)?;
        let (seq, committed) = (registry.last_seq(), self.committed);
        let changes = registry
            .changes_after(0)
            .map(|c| c.cloned().collect())
            .unwrap_or_default();
        // Everything through `seq` is committed: no number is reserved and unused.
        registry.restore_feed(self.origin, seq, committed.min(seq), changes, Vec::new());
        Ok(done)
    }

    /// Refuses a registry this store did not return while the directory holds twins: what
    /// a hub checks before it adopts the registry it was given
    /// ([`StoreError::WouldReplace`]), so that starting one on `Registry::new()` over a
    /// store cannot empty it. An explicit [`Store::adopt`] still replaces them.
    pub(crate) fn check_not_replacing(&self, registry: &Registry) -> Result<(), StoreError> {
        if registry.origin() == self.origin {
            return Ok(());
        }
        let db = self.db.as_ref().ok_or(StoreError::Poisoned)?;
        let txn = db.begin_read()?;
        let twins = txn.open_table(TWINS)?.len()?;
        if twins > 0 {
            return Err(StoreError::WouldReplace { twins });
        }
        Ok(())
    }

    /// [`Store::adopt`] after [`Store::check_not_replacing`]: how a hub makes its
    /// registry the store's.
    pub(crate) fn adopt_unless_replacing(
        &mut self,
        registry: &mut Registry,
    ) -> Result<Committed, StoreError> {
        self.check_not_replacing(registry)?;
        self.adopt(registry)
    }

    /// Refuses a registry this store did not return: its changes are counted from another
    /// history than the disk's, so a commit of them would write the wrong rows.
    fn check_origin(&self, registry: &Registry) -> Result<(), StoreError> {
        if registry.origin() == self.origin {
            Ok(())
        } else {
            Err(StoreError::ForeignRegistry)
        }
    }

    /// Refuses every commit until [`Store::reload`] (what a failed write does).
    pub(crate) fn poison(&mut self) {
        self.poisoned = true;
    }

    /// Fails the next commit that writes anything, in its write (after it took the job
    /// engine's journal), as a failing disk would: the store is poisoned until reloaded.
    /// Called n times, fails the next n such commits. For the tests of what the hub does
    /// then.
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn fail_next_commit(&mut self) {
        self.fail_writes += 1;
    }

    /// Fails the next `n` commits that write anything (0: none), as a disk that keeps
    /// failing would; for the tests of what the hub does then.
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn fail_commits(&mut self, n: u32) {
        self.fail_writes = n;
    }

    /// Fails the next [`Store::reload`] as an unreadable disk would (the store stays
    /// poisoned), for the tests of what the hub does then.
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn fail_next_reload(&mut self) {
        self.fail_reloads = self.fail_reloads.max(1);
    }

    /// Fails the next `n` reloads (0: none), as a disk that stays unreadable would (the
    /// store stays poisoned, memory keeps what it had); for the tests of what the hub does
    /// then.
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn fail_reloads(&mut self, n: u32) {
        self.fail_reloads = n;
    }

    /// Stores a package (a firmware image the hub serves, see `Hub::publish_package`)
    /// under `name`, replacing one of that name, durably, in a transaction of its own.
    /// Twins and jobs are not touched, so a failure here poisons nothing.
    pub fn put_package(&mut self, name: &str, body: &[u8]) -> Result<(), StoreError> {
        self.write_packages(|table| table.insert(name, body).map(drop))
    }

    /// Removes a stored package; returns whether there was one.
    pub fn remove_package(&mut self, name: &str) -> Result<bool, StoreError> {
        let mut had = false;
        self.write_packages(|table| {
            had = table.remove(name)?.is_some();
            Ok(())
        })?;
        Ok(had)
    }

    /// Every stored package, by name.
    pub fn packages(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let db = self.db.as_ref().ok_or(StoreError::Poisoned)?;
        let txn = db.begin_read()?;
        let table = txn.open_table(PACKAGES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn write_packages(
        &mut self,
        change: impl FnOnce(&mut redb::Table<'_, &str, &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        #[cfg(feature = "fuzzing")]
        if self.fail_writes > 0 {
            self.fail_writes -= 1;
            return Err(StoreError::Engine {
                detail: "write failed (injected by fail_next_commit)".into(),
            });
        }
        let db = self.db.as_ref().ok_or(StoreError::Poisoned)?;
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(PACKAGES)?;
            change(&mut table)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Gives the file's free pages back to the file system (redb's compaction). Old
    /// versions of rewritten rows are reused by later commits anyway; this shrinks the
    /// file after a large delete.
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let db = self.db.as_mut().ok_or(StoreError::Poisoned)?;
        Ok(db.compact()?)
    }

    fn plan(&self, registry: &Registry) -> Plan {
        if registry.last_seq() < self.committed {
            return Plan::Full;
        }
        let Ok(changes) = registry.changes_after(self.committed) else {
            return Plan::Full;
        };
        let mut devices: BTreeMap<DeviceId, Dirty> = BTreeMap::new();
        for c in changes {
            let d = devices.entry(c.device.clone()).or_default();
            match &c.kind {
                ChangeKind::Created | ChangeKind::Removed => d.full = true,
                ChangeKind::DeviceProperty { name, .. } => {
                    d.props.insert(name.clone(), c.seq);
                }
                ChangeKind::DevicePropertyRemoved { name } => {
                    d.props.insert(name.clone(), c.seq);
                    d.head = true;
                }
                _ => d.head = true,
            }
        }
        Plan::Devices(devices)
    }

    fn write(
        &mut self,
        registry: &Registry,
        plan: Option<Plan>,
        job_rows: Vec<JobRow>,
    ) -> Result<Committed, StoreError> {
        #[cfg(feature = "fuzzing")]
        if self.fail_writes > 0 {
            self.fail_writes -= 1;
            return Err(StoreError::Engine {
                detail: "write failed (injected by fail_next_commit)".into(),
            });
        }
        let plan = plan.unwrap_or_else(|| self.plan(registry));
        let last = registry.last_seq();
        let db = self.db.as_ref().ok_or(StoreError::Poisoned)?;
        let txn = db.begin_write()?;
        let mut done = Committed {
            seq: last,
            ..Committed::default()
        };
        let mut reserved = self.reserved;
        let mut feed_kept = self.feed_kept;
        {
            let mut twins = txn.open_table(TWINS)?;
            let mut props = txn.open_table(PROPERTIES)?;
            let mut log_rows = txn.open_table(PROPERTY_LOG)?;
            let mut meta = txn.open_table(META)?;
            let mut feed_rows = txn.open_table(FEED)?;
            let scratch = &mut self.scratch;
            let sealer = self.sealer.as_ref();
            let retention = self.config.feed_retention;
            match (&plan, registry.changes_after(self.committed)) {
                (Plan::Devices(_), Ok(changes)) if retention > 0 => {
                    // The commit's changes in one record, under its newest change.
                    let mut rec = Vec::new();
                    let mut newest = None;
                    for c in changes {
                        feed::append(c, scratch, &mut rec);
                        newest = Some(c.seq);
                        feed_kept += 1;
                    }
                    if let Some(key) = newest {
                        feed_rows.insert(key, rec.as_slice())?;
                    }
                    // The oldest commits' records go while the rest hold `retention`;
                    // then the oldest left keeps only its newest changes, so that exactly
                    // `retention` are kept.
                    let mut cut = None;
                    while feed_kept > retention {
                        let Some((key, bytes)) = feed_rows
                            .first()?
                            .map(|(k, v)| (k.value(), v.value().to_vec()))
                        else {
                            break;
                        };
                        let len = feed::record_len(key, &bytes)?;
                        let excess = feed_kept - retention;
                        if len <= excess {
                            feed_rows.remove(key)?;
                            feed_kept -= len;
                            cut = Some(key);
                        } else {
                            let (at, dropped) = feed::split(key, &bytes, excess)?;
                            feed_rows.insert(key, &bytes[at..])?;
                            feed_kept -= excess;
                            cut = Some(dropped);
                        }
                    }
                    if let Some(cut) = cut {
                        meta.insert(META_FEED_DROPPED, cut)?;
                    }
                }
                _ => {
                    // Not every change since the last commit is at hand (or none are
                    // kept): what the disk kept ends here.
                    feed_rows.retain(|_, _| false)?;
                    feed_kept = 0;
                    meta.insert(META_FEED_DROPPED, last)?;
                }
            }
            let log = &mut self.log;
            match plan {
                Plan::Full => {
                    done.full = true;
                    twins.retain(|_, _| false)?;
                    props.retain(|_, _| false)?;
                    log_rows.retain(|_, _| false)?;
                    *log = PropertyLog::default();
                    for t in registry.iter() {
                        write_twin(&mut twins, &mut props, t, last, scratch, &mut done, sealer)?;
                    }
                }
                Plan::Devices(devices) => {
                    // This commit's log record, and the twins with an entry in it.
                    let mut record = Vec::new();
                    let mut logged = Vec::new();
                    // Entries in `record` (`done.properties` also counts the properties of
                    // twins written whole, which the log does not hold).
                    let mut entries = 0;
                    for (id, d) in devices {
                        let Some(t) = registry.get(id.as_str()) else {
                            twins.remove(id.as_str())?;
                            props.remove(id.as_str())?;
                            log.folded(&id);
                            done.heads += 1;
                            continue;
                        };
                        if d.full {
                            write_twin(
                                &mut twins, &mut props, t, last, scratch, &mut done, sealer,
                            )?;
                            log.folded(&id);
                            continue;
                        }
                        if d.head {
                            write_head(&mut twins, t, sealer)?;
                            done.heads += 1;
                        }
                        if d.props.is_empty() {
                            continue;
                        }
                        for (name, seq) in &d.props {
                            let value = t.device_property(name);
                            record::encode_log_entry(id.as_str(), name, *seq, value, &mut record);
                            done.properties += 1;
                            entries += 1;
                        }
                        logged.push(id);
                    }
                    if !record.is_empty() {
                        log_rows.insert(last, record.as_slice())?;
                        log.add(last, logged, entries);
                    }
                    // Fold enough twins to keep the log near half its limit (all of them
                    // past the limit), in id order from where the last commit stopped:
                    // their records are neighbours in the table.
                    let limit = self.config.property_log_limit.max(1);
                    let quota = if log.entries > limit {
                        log.pending.len()
                    } else {
                        log.quota(entries, limit)
                    };
                    for id in log.next(quota) {
                        match registry.get(id.as_str()) {
                            Some(t) => {
                                write_properties(&mut props, t, last, scratch)?;
                                done.folded += 1;
                            }
                            None => {
                                props.remove(id.as_str())?;
                            }
                        }
                        log.folded(&id);
                    }
                    for key in log.release() {
                        log_rows.remove(key)?;
                    }
                }
            }
            if !job_rows.is_empty() {
                let mut parents = txn.open_table(JOB_PARENTS)?;
                let mut children = txn.open_table(JOB_CHILDREN)?;
                done.jobs = job_rows.len();
                for row in &job_rows {
                    match row {
                        JobRow::Parent(p, bytes) => parents.insert(*p, bytes.as_slice())?,
                        JobRow::Child(c, bytes) => children.insert(*c, bytes.as_slice())?,
                        JobRow::DropBefore {
                            parents: p,
                            children: c,
                        } => {
                            parents.retain_in(..*p, |_, _| false)?;
                            children.retain_in(..*c, |_, _| false)?;
                            None
                        }
                    };
                }
            }
            meta.insert(META_COMMITTED, last)?;
            if last.saturating_add(SEQ_RESERVE / 2) > reserved {
                reserved = last.saturating_add(SEQ_RESERVE);
                meta.insert(META_RESERVED, reserved)?;
            }
        }
        txn.commit()?;
        self.committed = last;
        self.reserved = reserved;
        self.feed_kept = feed_kept;
        Ok(done)
    }
}

/// A [`Store`] shared between threads (what [`HubConfig::store`](crate::hub::HubConfig::store)
/// takes): a service write and an event batch commit one at a time.
#[derive(Clone, Debug)]
pub struct SharedStore(Arc<Mutex<Store>>);

impl SharedStore {
    /// Shares a store.
    pub fn new(store: Store) -> Self {
        SharedStore(Arc::new(Mutex::new(store)))
    }

    /// The store, locked (a panic while it was locked does not poison it further: a
    /// commit that did not finish already poisoned the store itself).
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl From<Store> for SharedStore {
    fn from(store: Store) -> Self {
        SharedStore::new(store)
    }
}

/// A number no other opening in this process used (never 0).
fn next_origin() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

enum Plan {
    Full,
    Devices(BTreeMap<DeviceId, Dirty>),
}

type Twins<'t> = redb::Table<'t, &'static str, &'static [u8]>;
type Props<'t> = redb::Table<'t, &'static str, &'static [u8]>;

/// Writes a twin's head, its PSK key sealed with `sealer` if there is one.
fn write_head(
    twins: &mut Twins<'_>,
    t: crate::registry::TwinRef<'_>,
    sealer: Option<&Sealer>,
) -> Result<(), StoreError> {
    let mut twin = t.to_twin();
    twin.device_properties.clear();
    twins.insert(
        t.device_id().as_str(),
        record::encode_head(&twin, sealer).as_slice(),
    )?;
    Ok(())
}

/// Writes a twin's device properties as the registry holds them at commit `through`.
fn write_properties(
    props: &mut Props<'_>,
    t: crate::registry::TwinRef<'_>,
    through: u64,
    scratch: &mut Vec<u8>,
) -> Result<(), StoreError> {
    record::encode_properties(through, t.etag().0, t.device_properties(), scratch);
    props.insert(t.device_id().as_str(), scratch.as_slice())?;
    Ok(())
}

/// Rewrites the heads of `ids` (whose PSK keys are plain though the store seals, or
/// sealed under a retired key) with their keys as `sealer` writes them, in one
/// transaction: what opening with a new sealing key does.
fn rewrite_heads(
    db: &Database,
    registry: &Registry,
    ids: &[DeviceId],
    sealer: Option<&Sealer>,
) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut twins = txn.open_table(TWINS)?;
        for id in ids {
            if let Some(t) = registry.get(id.as_str()) {
                write_head(&mut twins, t, sealer)?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// Writes a twin's head and its device properties' record.
fn write_twin(
    twins: &mut Twins<'_>,
    props: &mut Props<'_>,
    t: crate::registry::TwinRef<'_>,
    through: u64,
    scratch: &mut Vec<u8>,
    done: &mut Committed,
    sealer: Option<&Sealer>,
) -> Result<(), StoreError> {
    write_head(twins, t, sealer)?;
    done.heads += 1;
    write_properties(props, t, through, scratch)?;
    done.properties += t.device_properties().len();
    done.folded += 1;
    Ok(())
}

/// What the store knows of its `property_log` table: which twins have changes there
/// not yet folded into their records, and which log records still hold such changes.
/// Rebuilt from the table when the store opens; a failed commit poisons the store, and
/// the reload rebuilds it, so it never runs ahead of the disk.
#[derive(Default)]
struct PropertyLog {
    /// Twin -> the key of the oldest record holding one of its unfolded changes.
    pending: BTreeMap<DeviceId, u64>,
    /// Record key -> its entries and how many pending twins it is the oldest record of.
    records: BTreeMap<u64, LogRecord>,
    /// Entries in all records.
    entries: usize,
    /// The fold continues after this twin (in id order, wrapping round).
    cursor: Option<DeviceId>,
}

#[derive(Default)]
struct LogRecord {
    entries: usize,
    oldest_of: usize,
}

impl PropertyLog {
    /// The log as opening found it: its records (key and number of changes) and the
    /// twins whose record lacks a logged change, each with the oldest record holding one
    /// of its changes.
    fn restore(records: LogRecords, pending: Vec<(DeviceId, u64)>) -> PropertyLog {
        let mut log = PropertyLog::default();
        for (key, entries) in records {
            log.records.entry(key).or_default().entries += entries;
            log.entries += entries;
        }
        for (device, key) in pending {
            if let std::collections::btree_map::Entry::Vacant(v) = log.pending.entry(device) {
                v.insert(key);
                log.records.entry(key).or_default().oldest_of += 1;
            }
        }
        log
    }

    /// Record `key` was written with `entries` changes of the twins `devices`.
    fn add(&mut self, key: u64, devices: impl IntoIterator<Item = DeviceId>, entries: usize) {
        let mut oldest_of = 0;
        for d in devices {
            if let std::collections::btree_map::Entry::Vacant(v) = self.pending.entry(d) {
                v.insert(key);
                oldest_of += 1;
            }
        }
        let r = self.records.entry(key).or_default();
        r.entries += entries;
        r.oldest_of += oldest_of;
        self.entries += entries;
    }

    /// `device`'s record was rewritten (or deleted) from the registry: the log holds
    /// nothing of it that the record lacks.
    fn folded(&mut self, device: &DeviceId) {
        if let Some(key) = self.pending.remove(device)
            && let Some(r) = self.records.get_mut(&key)
        {
            r.oldest_of -= 1;
        }
    }

    /// How many twins a commit that logged `entries` changes folds: a round over the
    /// twins pending now would take `limit / (2 * entries)` such commits. A record is
    /// deletable once each of its twins was folded, within one round, but twins that
    /// become pending during the round lengthen it: the log settles above half the limit
    /// (see the module docs), and `write` folds every twin past the limit.
    fn quota(&self, entries: usize, limit: usize) -> usize {
        let wanted = (self.pending.len() as u128 * 2 * entries as u128).div_ceil(limit as u128);
        wanted.min(self.pending.len() as u128) as usize
    }

    /// The next `n` pending twins after the cursor, in id order, wrapping round; moves
    /// the cursor past them.
    fn next(&mut self, n: usize) -> Vec<DeviceId> {
        let n = n.min(self.pending.len());
        let mut out: Vec<DeviceId> = match &self.cursor {
            Some(c) => self
                .pending
                .range::<DeviceId, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .map(|(d, _)| d.clone())
                .take(n)
                .collect(),
            None => Vec::new(),
        };
        if out.len() < n {
            // From the first twin on: those are at or before the cursor, none taken yet.
            let wrap = n - out.len();
            out.extend(self.pending.keys().take(wrap).cloned());
        }
        if let Some(last) = out.last() {
            self.cursor = Some(last.clone());
        }
        out
    }

    /// Removes (and returns the keys of) the records no pending twin needs: those older
    /// than the oldest record of every pending twin.
    fn release(&mut self) -> Vec<u64> {
        let mut gone = Vec::new();
        while let Some(entry) = self.records.first_entry() {
            if entry.get().oldest_of > 0 {
                break;
            }
            let (key, r) = entry.remove_entry();
            self.entries -= r.entries;
            gone.push(key);
        }
        gone
    }
}

/// Creates the tables of a fresh file, checks the format of an old one and converts a
/// format 1 or 2 file; reserves [`SEQ_RESERVE`] numbers; returns the committed sequence
/// number and where the registry continues.
fn init(db: &Database) -> Result<(u64, u64), StoreError> {
    let txn = db.begin_write()?;
    let (committed, start) = {
        let mut meta = txn.open_table(META)?;
        let format = meta.get(META_FORMAT)?.map(|v| v.value());
        match format {
            Some(found) if found > FORMAT => {
                return Err(StoreError::UnsupportedFormat {
                    found,
                    supported: FORMAT,
                });
            }
            Some(FORMAT) => {}
            Some(3) => {
                meta.insert(META_FORMAT, FORMAT)?;
            }
            Some(old) => {
                let committed = meta.get(META_COMMITTED)?.map_or(0, |v| v.value());
                if old < 2 {
                    // Format 1: the feed rows lack values; drop them (see FORMAT).
                    txn.delete_table(OLD_FEED)?;
                    meta.insert(META_FEED_DROPPED, committed)?;
                } else {
                    convert_feed_rows(&txn)?;
                }
                convert_property_rows(&txn, committed)?;
                meta.insert(META_FORMAT, FORMAT)?;
            }
            None => {
                meta.insert(META_FORMAT, FORMAT)?;
            }
        }
        let get = |k| -> Result<u64, StoreError> { Ok(meta.get(k)?.map_or(0, |v| v.value())) };
        let committed = get(META_COMMITTED)?;
        // Numbers through the old mark may have been handed out before a crash; the
        // registry continues after it, with a fresh reserve before it hands out any.
        let start = get(META_RESERVED)?.max(committed);
        // The numbers after the last committed one (and after where the last opening
        // started, which it handed out as its newest) up to `start` were possibly handed
        // out and then lost: a consumer resuming after one of them, after this restart
        // or a later one, is told of a gap. Ranges the feed dropped are gaps anyway.
        let below = committed.max(get(META_OPENED)?);
        let dropped = get(META_FEED_DROPPED)?;
        meta.insert(META_RESERVED, start.saturating_add(SEQ_RESERVE))?;
        meta.insert(META_OPENED, start)?;
        let mut unused = txn.open_table(UNUSED)?;
        unused.retain(|_, above| above > dropped.saturating_add(1))?;
        if start > below.saturating_add(1) {
            unused.insert(below, start)?;
            if unused.len()? > MAX_UNUSED_RANGES {
                merge_neighbours(&mut unused, committed)?;
            }
        }
        txn.open_table(TWINS)?;
        txn.open_table(PROPERTIES)?;
        txn.open_table(PROPERTY_LOG)?;
        txn.open_table(FEED)?;
        txn.open_table(JOB_PARENTS)?;
        txn.open_table(JOB_CHILDREN)?;
        txn.open_table(PACKAGES)?;
        (committed, start)
    };
    txn.commit()?;
    Ok((committed, start))
}

/// Moves a format 2 file's feed (a row per change) into records of one change each.
fn convert_feed_rows(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    {
        let old = txn.open_table(OLD_FEED)?;
        let mut feed_rows = txn.open_table(FEED)?;
        let (mut scratch, mut rec) = (Vec::new(), Vec::new());
        for row in old.iter()? {
            let (k, v) = row?;
            let change = feed::decode(k.value(), v.value())?;
            rec.clear();
            feed::append(&change, &mut scratch, &mut rec);
            feed_rows.insert(change.seq, rec.as_slice())?;
        }
    }
    txn.delete_table(OLD_FEED)?;
    Ok(())
}

/// Moves a format 1 or 2 file's device properties (a row each) into one record per
/// twin, as of commit `committed`, and deletes the old table; twins without device
/// properties get no record.
fn convert_property_rows(txn: &redb::WriteTransaction, committed: u64) -> Result<(), StoreError> {
    {
        let old = txn.open_table(OLD_PROPS)?;
        let mut props = txn.open_table(PROPERTIES)?;
        let mut scratch = Vec::new();
        /// One twin's rows: its id, (name, value, time) each, the largest sequence number.
        type Rows = (String, Vec<(String, crate::twin::Scalar, Timestamp)>, u64);
        let mut twin: Option<Rows> = None;
        let mut flush = |twin: Option<Rows>| -> Result<(), StoreError> {
            if let Some((id, rows, etag)) = twin {
                record::encode_properties(
                    committed,
                    etag,
                    rows.iter()
                        .map(|(n, v, at): &(String, _, _)| (n.as_str(), v, *at)),
                    &mut scratch,
                );
                props.insert(id.as_str(), scratch.as_slice())?;
            }
            Ok(())
        };
        for row in old.iter()? {
            let (k, v) = row?;
            let (id, name) = k.value();
            let r = record::decode_prop(id, name, v.value())?;
            if twin.as_ref().is_none_or(|t| t.0 != id) {
                flush(twin.take())?;
                twin = Some((id.to_owned(), Vec::new(), 0));
            }
            let t = twin.as_mut().expect("set above");
            t.1.push((name.to_owned(), r.value, r.at));
            t.2 = t.2.max(r.seq);
        }
        flush(twin)?;
    }
    txn.delete_table(OLD_PROPS)?;
    Ok(())
}

/// Past the bound ([`MAX_UNUSED_RANGES`]) of the `unused_seq` table: merges the oldest two
/// neighbouring ranges with nothing between them (`below` of the newer is `above` of the
/// older: the opening between them committed no change, as in a crash loop), so the only
/// number that joins the gap is that opening's start (its newest if it made no change).
/// Not when that start is the last committed number (the opening committed without a
/// change): the next commit reads the feed after it, and a gap there would make it drop
/// the whole feed and rewrite every twin.
///
/// Without such a pair nothing merges and the table keeps the new range. Past the bound
/// at most one pair is left unmerged (each opening adds at most one and merges one), and
/// every other two neighbours have a committed change the feed keeps between them (ranges
/// go once the feed drops past them): the table never holds more than `feed_retention +
/// 2` ranges past the bound, and no committed change the feed keeps ever answers with a
/// gap.
fn merge_neighbours(
    unused: &mut redb::Table<'_, u64, u64>,
    committed: u64,
) -> Result<(), StoreError> {
    let mut previous: Option<(u64, u64)> = None;
    let mut pair = None;
    for row in unused.iter()? {
        let (below, above) = row?;
        let range = (below.value(), above.value());
        if let Some(older) = previous
            && older.1 == range.0
            && range.0 != committed
        {
            pair = Some((older.0, range));
            break;
        }
        previous = Some(range);
    }
    if let Some((first, (second, above))) = pair {
        unused.remove(second)?;
        unused.insert(first, above)?;
    }
    Ok(())
}

/// The registry rebuilt, the log's state, the changes the feed table holds, and (with a
/// sealer) the twins whose heads hold their PSK key plain though it seals, or sealed
/// under a retired key.
type Rebuilt = (Registry, PropertyLog, usize, Vec<DeviceId>);

/// Rebuilds the registry from the file through a bulk load, then restores the version
/// numbers and the sequence.
fn rebuild(
    db: &Database,
    config: &StoreConfig,
    sealer: Option<&Sealer>,
    origin: u64,
    committed: u64,
    start: u64,
) -> Result<Rebuilt, StoreError> {
    let txn = db.begin_read()?;
    let twins = txn.open_table(TWINS)?;
    let props = txn.open_table(PROPERTIES)?;
    let log_table = txn.open_table(PROPERTY_LOG)?;
    let mut registry = Registry::with_feed_capacity(config.feed_capacity);
    let count = twins.len()? as usize;
    let mut versions: Vec<(Slot, u64, u64, u64)> = Vec::with_capacity(count);
    // A reader thread reads and decodes the log and the twins (redb's pages, the heads'
    // JSON, the records) while this one loads them: decoding is about half the work.
    let read = std::thread::scope(|scope| -> Result<_, StoreError> {
        let (sender, batches) = read_channel();
        let reader = std::thread::Builder::new()
            .name("twinhub-store-read".into())
            .spawn_scoped(scope, move || {
                read_twins(twins, props, log_table, sealer, |batch| {
                    sender.send(batch).is_ok()
                })
            })
            .map_err(|source| StoreError::Io { source })?;
        let mut bulk = registry.bulk_load();
        bulk.reserve(count);
        let mut loaded = Ok(());
        for batch in batches.iter() {
            let batch = batch.and_then(|batch| {
                batch
                    .load(&mut bulk, |slot, generation, etag, service| {
                        versions.push((slot, generation, etag, service))
                    })
                    .map_err(|source| StoreError::Rejected { source })
            });
            if let Err(e) = batch {
                loaded = Err(e);
                break;
            }
        }
        // After an error (the reader's, or a twin refused), dropping `batches` stops the
        // reader at its next batch. The reader is joined either way, so that nothing of
        // it (its thread-local storage) outlives the opening: leaving the scope would
        // wait for its closure only.
        drop(batches);
        let read = reader
            .join()
            .expect("the store's reader thread does not panic");
        loaded?;
        bulk.finish();
        Ok(read)
    })?;
    // Only twins whose record lacks a logged change are folded again: a record whose
    // twins were all folded (or removed) goes at the next commit.
    let stale_psk = read.stale_psk;
    let log = PropertyLog::restore(read.records, read.pending);
    for (slot, generation, etag, service) in versions {
        registry.restore_versions(slot, generation, etag, service);
    }
    let feed_rows = txn.open_table(FEED)?;
    let meta = txn.open_table(META)?;
    let mut dropped = meta.get(META_FEED_DROPPED)?.map_or(0, |v| v.value());
    let keep = config.feed_capacity.min(config.feed_retention);
    // The newest records until they hold `keep` changes; every record is counted (and
    // its framing checked).
    // Each record's changes come after the older record's (a file where they do not is
    // damaged: the feed would be served out of order).
    let mut newest_first: Vec<Vec<Change>> = Vec::new();
    let (mut read, mut total) = (0, 0);
    let mut newer_first: Option<u64> = None;
    for row in feed_rows.iter()?.rev() {
        let (k, v) = row?;
        let key = k.value();
        if newer_first.is_some_and(|f| key >= f) {
            return Err(StoreError::BadRecord {
                table: "feed_records",
                key: key.to_string(),
                detail: "changes past the oldest change of the next record".into(),
            });
        }
        if read < keep {
            let rec = feed::decode_record(key, v.value())?;
            read += rec.len();
            total += rec.len();
            newer_first = rec.first().map(|c| c.seq);
            newest_first.push(rec);
        } else {
            let (len, first) = feed::record_span(key, v.value())?;
            total += len;
            newer_first = Some(first);
        }
    }
    let mut changes: Vec<Change> = newest_first.into_iter().rev().flatten().collect();
    changes.drain(..changes.len().saturating_sub(keep));
    if changes.len() < total {
        dropped = changes
            .first()
            .map_or(committed, |c| c.seq.saturating_sub(1));
    }
    if changes.is_empty() {
        dropped = dropped.max(committed);
    }
    let mut unused = Vec::new();
    for row in txn.open_table(UNUSED)?.iter()? {
        let (below, above) = row?;
        unused.push((below.value(), above.value()));
    }
    registry.restore_feed(origin, start, dropped, changes, unused);
    Ok((registry, log, total, stale_psk))
}

/// Twins a batch holds, and batches the reader may run ahead of the load: at most
/// `READ_AHEAD + 2` batches (queued, being filled, being loaded) are in memory.
const READ_BATCH: usize = 1024;
const READ_AHEAD: usize = 4;
/// A batch ends early once its heads, records and logged strings reach this many bytes
/// (16 MiB): its rows' strings are `u32` offsets of its text, which holds at most that
/// and one twin.
const READ_BYTES: usize = 1 << 24;

/// Twins decoded for the load, as rows (or whole twins where rows cannot hold one).
type ReadBatch = Result<StoredRows, StoreError>;

/// The queue from the reader to the load: it holds `READ_AHEAD` batches, past that the
/// reader waits.
fn read_channel() -> (
    std::sync::mpsc::SyncSender<ReadBatch>,
    std::sync::mpsc::Receiver<ReadBatch>,
) {
    std::sync::mpsc::sync_channel(READ_AHEAD)
}

/// One twin of a batch being read: its id (a range of the batch's ids), its record (a
/// range of the batch's record bytes) and its logged changes (a range of the log's).
struct ReadTwin {
    id: std::ops::Range<usize>,
    record: Option<std::ops::Range<usize>>,
    logged: std::ops::Range<usize>,
}

/// The log's records: each one's key and number of changes.
type LogRecords = Vec<(u64, usize)>;

/// What the reader found in the log: its records (key and number of changes) and the
/// twins whose record lacks a logged change, with the oldest record holding one.
#[derive(Default)]
struct ReadLog {
    records: LogRecords,
    pending: Vec<(DeviceId, u64)>,
    /// The twins whose heads hold their PSK key plain though the store seals, or sealed
    /// under a retired key: to rewrite.
    stale_psk: Vec<DeviceId>,
}

/// The log's changes, sorted by device id (and, for each device, oldest first), with
/// each record's key and number of changes.
fn read_log(
    log: &redb::ReadOnlyTable<u64, &[u8]>,
) -> Result<(Vec<record::LogEntry>, LogRecords), StoreError> {
    let (mut entries, mut records) = (Vec::new(), Vec::new());
    for row in log.iter()? {
        let (k, v) = row?;
        let key = k.value();
        let decoded = record::decode_log(key, v.value())?;
        records.push((key, decoded.len()));
        for e in &decoded {
            let bad = |detail: &str| StoreError::BadRecord {
                table: "property_log",
                key: key.to_string(),
                detail: detail.into(),
            };
            DeviceId::validate(&e.device).map_err(|_| bad("invalid device id"))?;
            // A commit logs only changes numbered up to its own newest.
            if e.seq > key {
                return Err(bad("a change numbered after its commit"));
            }
        }
        entries.extend(decoded);
    }
    // Stable: records were read oldest first.
    entries.sort_by(|a, b| a.device.cmp(&b.device));
    Ok((entries, records))
}

/// The reader thread of [`rebuild`]: reads the log, then every twin in id order (its
/// head, its properties record, then its log entries numbered after the record) into
/// batches of rows and sends them with `send` (false once the load has hung up: a send
/// on [`read_channel`]); stops at the first error (sent) or when the load hangs up.
fn read_twins(
    twins: redb::ReadOnlyTable<&str, &[u8]>,
    props: redb::ReadOnlyTable<&str, &[u8]>,
    log: redb::ReadOnlyTable<u64, &[u8]>,
    sealer: Option<&Sealer>,
    send: impl FnMut(ReadBatch) -> bool,
) -> ReadLog {
    read_twins_within(twins, props, log, sealer, READ_BYTES, send)
}

/// [`read_twins`], a batch ending once its heads, records and logged strings reach
/// `read_bytes`.
fn read_twins_within(
    twins: redb::ReadOnlyTable<&str, &[u8]>,
    props: redb::ReadOnlyTable<&str, &[u8]>,
    log: redb::ReadOnlyTable<u64, &[u8]>,
    sealer: Option<&Sealer>,
    read_bytes: usize,
    mut send: impl FnMut(ReadBatch) -> bool,
) -> ReadLog {
    let mut found = ReadLog::default();
    let read = (|| -> Result<(), StoreError> {
        let (logged, log_records) = read_log(&log)?;
        found.records = log_records;
        // Changes of ids before the twin being read have no twin (it was removed).
        let mut next_logged = 0;
        let mut records = props.iter()?.peekable();
        let mut heads = twins.iter()?;
        let orphan = |id: &str| StoreError::BadRecord {
            table: "properties",
            key: id.chars().take(128).collect(),
            detail: "no twin has this device id".into(),
        };
        let (mut ids, mut bytes) = (String::new(), Vec::new());
        let mut batch: Vec<ReadTwin> = Vec::with_capacity(READ_BATCH);
        loop {
            // The batch's heads (text), records (bytes) and logged changes first.
            let mut rows = StoredRows::new();
            ids.clear();
            bytes.clear();
            batch.clear();
            // What the batch's logged changes will copy into its text.
            let mut logged_bytes = 0;
            for head in heads.by_ref() {
                let (k, v) = head?;
                let id = k.value();
                record::check_device_id(id)?;
                let text = std::str::from_utf8(v.value()).map_err(|_| StoreError::BadRecord {
                    table: "twins",
                    key: id.chars().take(128).collect(),
                    detail: "not UTF-8".into(),
                })?;
                rows.push_head(text)
                    .map_err(|detail| StoreError::BadRecord {
                        table: "twins",
                        key: id.chars().take(128).collect(),
                        detail: detail.into(),
                    })?;
                // The records of ids before this one have no twin.
                let mut record = None;
                while let Some(r) =
                    records.next_if(|r| r.as_ref().map_or(true, |(k, _)| k.value() <= id))
                {
                    let (k, v) = r?;
                    if k.value() != id {
                        return Err(orphan(k.value()));
                    }
                    let start = bytes.len();
                    bytes.extend_from_slice(v.value());
                    record = Some(start..bytes.len());
                }
                while logged
                    .get(next_logged)
                    .is_some_and(|e| e.device.as_str() < id)
                {
                    next_logged += 1;
                }
                let first = next_logged;
                while logged.get(next_logged).is_some_and(|e| e.device == id) {
                    logged_bytes += logged_copy_len(&logged[next_logged]);
                    next_logged += 1;
                }
                let start = ids.len();
                ids.push_str(id);
                batch.push(ReadTwin {
                    id: start..ids.len(),
                    record,
                    logged: first..next_logged,
                });
                if batch.len() == READ_BATCH
                    || rows.text_len() + bytes.len() + logged_bytes >= read_bytes
                {
                    break;
                }
            }
            if batch.is_empty() {
                if let Some(r) = records.next() {
                    let (k, _) = r?;
                    return Err(orphan(k.value()));
                }
                return Ok(());
            }
            for (i, t) in batch.iter().enumerate() {
                let id = &ids[t.id.clone()];
                let record = t.record.clone().map(|r| &bytes[r]);
                let logged = &logged[t.logged.clone()];
                let (applied, stale) = match row_twin(&mut rows, i, id, record, logged, sealer) {
                    Some(_) if rows.plain_psk() && sealer.is_some_and(Sealer::refuses_plain) => {
                        return Err(StoreError::PlainKey {
                            key: id.chars().take(128).collect(),
                        });
                    }
                    Some(applied) => (applied, rows.psk_stale(sealer.is_some_and(Sealer::seals))),
                    None => {
                        // Rows cannot hold this twin: decode it whole, which also
                        // tells what is wrong with a damaged one.
                        let head = rows.head(i).as_bytes();
                        let (twin, etag, through, stale) =
                            owned_twin(id, head, record, logged, sealer)?;
                        rows.push_twin(twin, etag);
                        (logged.iter().any(|e| e.seq > through), stale)
                    }
                };
                if stale {
                    found.stale_psk.push(record::device_id(id)?);
                }
                if applied {
                    // The oldest record with one of its changes (read oldest first).
                    found
                        .pending
                        .push((record::device_id(id)?, logged[0].record));
                }
            }
            if !send(Ok(rows)) {
                return Ok(());
            }
        }
    })();
    if let Err(e) = read {
        // The twins before the error are loaded, but the opening fails anyway.
        send(Err(e));
    }
    found
}

/// Parses twin `i` of `rows` (its head, then its record and its logged changes) into
/// a row; `None` (the row taken out again) if rows cannot hold it, or if anything is
/// wrong (a sealed PSK key that does not open with `sealer` among it): [`owned_twin`]
/// then decodes it. Returns whether a logged change applied.
fn row_twin(
    rows: &mut StoredRows,
    i: usize,
    id: &str,
    record: Option<&[u8]>,
    logged: &[record::LogEntry],
    sealer: Option<&Sealer>,
) -> Option<bool> {
    row_twin_within(rows, i, id, record, logged, sealer, ROW_TEXT_LIMIT)
}

/// The most text a batch's rows address (its heads, then the strings copied after
/// them): their strings are `u32` offsets. `READ_BYTES` bounds what a batch copies
/// (its heads, records and logged strings, a value each time it changes) far below it;
/// this is the check that holds whatever one twin brings.
const ROW_TEXT_LIMIT: usize = u32::MAX as usize;

/// The bytes a logged change copies into a batch's text: its name, and its value if
/// that is a string.
fn logged_copy_len(e: &record::LogEntry) -> usize {
    e.name.len()
        + match &e.value {
            Some((_, crate::twin::Scalar::String(s))) => s.len(),
            _ => 0,
        }
}

/// [`row_twin`], but a twin whose strings could take the batch's text past `limit` is
/// left to [`owned_twin`].
fn row_twin_within(
    rows: &mut StoredRows,
    i: usize,
    id: &str,
    record: Option<&[u8]>,
    logged: &[record::LogEntry],
    sealer: Option<&Sealer>,
    limit: usize,
) -> Option<bool> {
    // Parsing copies at most the head's and the record's length (escaped strings and
    // names), and each logged change its name and string value.
    let copied = rows.head(i).len()
        + record.map_or(0, <[u8]>::len)
        + logged.iter().map(logged_copy_len).sum::<usize>();
    if rows.text_len() + rows.extra_len() + copied > limit {
        return None;
    }
    let parsed = rows.parse_head(i).ok()?;
    // Repeated members (a damaged head) are decoded whole, which keeps the last one.
    if parsed != id || !rows.members_sorted() {
        rows.pop_row();
        return None;
    }
    if let Some(sealed) = rows.take_sealed_psk() {
        match sealer.and_then(|s| s.open(id, &sealed)) {
            Some((key, retired)) => rows.set_psk(key, retired),
            None => {
                rows.pop_row();
                return None;
            }
        }
    }
    // A twin without a record has no device properties in it (a file converted from
    // format 2 writes none for such a twin): every logged change applies.
    let mut through = 0;
    if let Some(bytes) = record {
        let visited = record::visit_properties(id, bytes, |name, at, value| {
            // A record is written in name order: one that is not (a repeated name) is
            // decoded whole, which keeps the last.
            if rows.last_device_name().is_some_and(|last| last >= name) {
                return Err("device properties out of order".into());
            }
            rows.push_device_json(name, value, at)
                .map_err(|e| e.to_string())
        });
        match visited {
            Ok((t, etag)) => {
                through = t;
                rows.raise_etag(etag);
            }
            Err(_) => {
                rows.pop_row();
                return None;
            }
        }
    }
    let mut applied = false;
    for e in logged.iter().filter(|e| e.seq > through) {
        applied = true;
        rows.raise_etag(e.seq);
        rows.set_device(&e.name, e.value.as_ref().map(|(at, v)| (v.borrowed(), *at)));
    }
    Some(applied)
}

/// Decodes a twin whole: its head, its record, then its logged changes numbered after
/// the record's commit, its sealed PSK key opened with `sealer`. Returns it, its etag,
/// the record's `through` and whether its head is stale (see [`record::decode_head`]).
fn owned_twin(
    id: &str,
    head: &[u8],
    record: Option<&[u8]>,
    logged: &[record::LogEntry],
    sealer: Option<&Sealer>,
) -> Result<(crate::twin::Twin, u64, u64, bool), StoreError> {
    let (mut twin, stale) = record::decode_head(id, head, sealer)?;
    let mut etag = twin.etag.0;
    let mut through = 0;
    if let Some(bytes) = record {
        let r = record::decode_properties(id, bytes)?;
        through = r.through;
        etag = etag.max(r.etag);
        for (name, at, value) in r.properties {
            twin.device_properties.insert(
                name,
                crate::twin::DeviceProperty {
                    value,
                    last_updated_time: at,
                },
            );
        }
    }
    for e in logged.iter().filter(|e| e.seq > through) {
        etag = etag.max(e.seq);
        match &e.value {
            Some((at, value)) => {
                twin.device_properties.insert(
                    e.name.clone(),
                    crate::twin::DeviceProperty {
                        value: value.clone(),
                        last_updated_time: *at,
                    },
                );
            }
            None => {
                twin.device_properties.remove(&e.name);
            }
        }
    }
    Ok((twin, etag, through, stale))
}

/// The job parents' and children's rows, in key order.
#[allow(clippy::type_complexity)]
fn job_rows(db: &Database) -> Result<(Vec<(u32, Vec<u8>)>, Vec<(u32, Vec<u8>)>), StoreError> {
    let txn = db.begin_read()?;
    let read = |table: TableDefinition<u32, &[u8]>| -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        let t = txn.open_table(table)?;
        let mut rows = Vec::with_capacity(t.len()? as usize);
        for row in t.iter()? {
            let (k, v) = row?;
            rows.push((k.value(), v.value().to_vec()));
        }
        Ok(rows)
    };
    Ok((read(JOB_PARENTS)?, read(JOB_CHILDREN)?))
}

fn bad_job_row(e: crate::job::JobRowError) -> StoreError {
    StoreError::BadRecord {
        table: e.table,
        key: e.key.to_string(),
        detail: e.detail,
    }
}

/// The fuzz body behind `fuzzing::store_records`: decodes `row` as a twin head
/// (`which % 6 == 0`; as rows and whole, which must agree, with a properties record and
/// logged changes after NUL bytes), a format 2 device-property row (1), a change (2), a properties
/// record (3), a property log record (4) or a feed record (5).
#[doc(hidden)]
pub fn fuzz_decode(which: u8, row: &[u8]) {
    match which % 6 {
        5 => {
            let key = u64::from(which);
            if let Ok(changes) = feed::decode_record(key, row) {
                assert_eq!(feed::record_len(key, row).ok(), Some(changes.len()));
                assert_eq!(
                    feed::record_span(key, row).ok(),
                    changes.first().map(|c| (changes.len(), c.seq))
                );
                let (mut scratch, mut out) = (Vec::new(), Vec::new());
                for c in &changes {
                    feed::append(c, &mut scratch, &mut out);
                }
                let back = feed::decode_record(key, &out).ok();
                assert_eq!(back, Some(changes), "a feed record did not round-trip");
            }
        }
        3 => {
            if let Ok(r) = record::decode_properties("d", row) {
                // JSON values have more than one spelling: the decoded record, not the
                // bytes, must survive a round trip.
                let mut out = Vec::new();
                record::encode_properties(
                    r.through,
                    r.etag,
                    r.properties.iter().map(|(n, at, v)| (n.as_str(), v, *at)),
                    &mut out,
                );
                let back = record::decode_properties("d", &out).ok();
                assert_eq!(
                    back.as_ref(),
                    Some(&r),
                    "a properties record did not round-trip"
                );
            }
        }
        4 => {
            if let Ok(entries) = record::decode_log(1, row) {
                let mut out = Vec::new();
                for e in &entries {
                    let value = e.value.as_ref().map(|(at, v)| (v, *at));
                    record::encode_log_entry(&e.device, &e.name, e.seq, value, &mut out);
                }
                let back = record::decode_log(1, &out).ok();
                assert_eq!(back, Some(entries), "a log record did not round-trip");
            }
        }
        0 => fuzz_head(row),
        1 => {
            let _ = record::decode_prop("d", "n", row);
        }
        _ => {
            if let Ok(c) = feed::decode(1, row) {
                // Values are JSON, whose spelling is not unique (`1e0`, `1.0`): the
                // decoded change, not the bytes, must survive a round trip.
                let mut out = Vec::new();
                feed::encode(&c, &mut out);
                assert_eq!(
                    feed::decode(1, &out).ok(),
                    Some(c),
                    "a feed row did not round-trip"
                );
            }
        }
    }
}

/// A head both ways: if rows take it, decoding it whole takes it too, and both load the
/// same twin with the same version numbers, or are both refused. After a NUL byte (no
/// head has one) comes a properties record, then, after another, a log record whose
/// entries are read as twin `d`'s changes: both ways apply them alike.
fn fuzz_head(row: &[u8]) {
    let mut parts = row.splitn(3, |&b| b == 0);
    let head = parts.next().unwrap_or_default();
    let record = parts.next();
    let logged: Vec<record::LogEntry> = parts
        .next()
        .and_then(|log| record::decode_log(u64::MAX, log).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|e| record::LogEntry {
            device: "d".into(),
            ..e
        })
        .collect();
    // A sealed key the fuzzer writes does not open (it cannot forge one): both ways
    // refuse the head alike. So that both ways also open one, the first `SEALED` in the
    // head stands for `d`'s key sealed under the body's sealing key.
    let sealer = Sealer::new(&SealingKey::new([7; 32]));
    let with_key;
    let head = match head.windows(6).position(|w| w == b"SEALED") {
        Some(at) => {
            let key = crate::twin::PskKey::new(b"fuzzed key".to_vec());
            let mut h = head.to_vec();
            let sealed = sealer
                .seal("d", &key)
                .expect("the sealer has a sealing key");
            h.splice(at..at + 6, sealed.into_bytes());
            with_key = h;
            with_key.as_slice()
        }
        None => head,
    };
    let whole = owned_twin("d", head, record, &logged, Some(&sealer));
    let mut rows = StoredRows::new();
    let Ok(text) = std::str::from_utf8(head) else {
        return;
    };
    if rows.push_head(text).is_err() {
        return;
    }
    let Some(applied) = row_twin(&mut rows, 0, "d", record, &logged, Some(&sealer)) else {
        return;
    };
    let (twin, etag, through, stale) = whole.expect("a twin rows take decodes whole");
    assert_eq!(
        rows.psk_stale(sealer.seals()),
        stale,
        "rows saw another form of the PSK key"
    );
    assert_eq!(
        applied,
        logged.iter().any(|e| e.seq > through),
        "rows applied other logged changes"
    );
    let versions = (twin.generation_id.0, etag, twin.service_properties.etag.0);
    let load = |add: &mut dyn FnMut(&mut crate::registry::BulkLoad<'_>) -> Result<(), ()>| {
        let mut reg = Registry::new();
        let added = add(&mut reg.bulk_load());
        let mut twins: Vec<crate::twin::Twin> = reg.iter().map(|t| t.to_twin()).collect();
        added.map(|()| twins.pop())
    };
    let mut got = None;
    let by_rows = load(&mut |bulk| {
        std::mem::replace(&mut rows, StoredRows::new())
            .load(bulk, |_, g, e, s| got = Some((g, e, s)))
            .map_err(|_| ())
    });
    let by_twin = load(&mut |bulk| bulk.add_twin(twin.clone()).map(|_| ()).map_err(|_| ()));
    match (by_rows, by_twin) {
        (Ok(a), Ok(b)) => {
            assert_eq!(got, Some(versions), "rows read other version numbers");
            assert_eq!(a, b, "rows and the whole twin loaded differently");
        }
        (Err(()), Err(())) => {}
        (a, b) => panic!("rows {a:?} and the whole twin {b:?} disagree"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::Twin;

    /// Openings with no change between them each keep a range of unused numbers: past
    /// `MAX_UNUSED_RANGES` (4 here) neighbouring ones merge, so the table stays bounded; a
    /// number lost in the first crash is still a gap, and the newest opening's own number
    /// still resumes without one.
    #[test]
    fn unused_ranges_stay_bounded_across_openings_without_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(dir.path(), StoreConfig::default()).unwrap();
        let (mut store, mut registry) = open();
        registry
            .create(Twin::new(DeviceId::new("d0").unwrap()))
            .unwrap();
        store.commit(&registry).unwrap();
        registry
            .create(Twin::new(DeviceId::new("lost").unwrap()))
            .unwrap();
        let lost = registry.last_seq();
        drop((store, registry));
        let mut newest = 0;
        for _ in 0..10 {
            let (store, registry) = open();
            newest = registry.last_seq();
            let (rows, _) = table_sizes(&store);
            assert!(rows <= MAX_UNUSED_RANGES, "{rows} ranges kept");
            assert!(registry.changes_after(lost).is_err(), "the lost number");
            assert!(matches!(store.changes_after(lost, 10), Ok(Err(_))));
        }
        let (_store, registry) = open();
        assert_eq!(registry.changes_after(newest).map(|c| c.count()), Ok(0));
    }

    /// Every twin of `reg`, owned, in id order.
    fn twins(reg: &Registry) -> Vec<Twin> {
        reg.iter().map(|t| t.to_twin()).collect()
    }

    /// How many ranges of unused numbers and feed changes the file holds.
    fn table_sizes(store: &Store) -> (u64, u64) {
        let txn = store.db.as_ref().unwrap().begin_read().unwrap();
        let ranges = txn.open_table(UNUSED).unwrap().len().unwrap();
        let mut rows = 0;
        for row in txn.open_table(FEED).unwrap().iter().unwrap() {
            let (k, v) = row.unwrap();
            rows += feed::record_len(k.value(), v.value()).unwrap() as u64;
        }
        assert_eq!(rows as usize, store.feed_kept, "the count kept in memory");
        (ranges, rows)
    }

    /// Openings that each commit a change (ordinary restarts) leave no neighbouring
    /// ranges to merge: past `MAX_UNUSED_RANGES` (4 here) the table keeps one range per
    /// opening, never more than the feed rows after them, and every committed change
    /// resumes without a gap. Idle openings in between (a crash loop) still merge, and a
    /// number lost in a crash stays a gap throughout.
    #[test]
    fn past_the_bound_ordinary_restarts_keep_every_committed_change() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(dir.path(), StoreConfig::default()).unwrap();
        let (mut store, mut registry) = open();
        registry
            .create(Twin::new(DeviceId::new("d").unwrap()))
            .unwrap();
        store.commit(&registry).unwrap();
        registry
            .create(Twin::new(DeviceId::new("lost").unwrap()))
            .unwrap();
        let lost = registry.last_seq();
        drop((store, registry));
        let mut seqs = Vec::new();
        for i in 0..12 {
            let (mut store, mut registry) = open();
            registry
                .create(Twin::new(DeviceId::new(&format!("d{i}")).unwrap()))
                .unwrap();
            store.commit(&registry).unwrap();
            seqs.push(registry.last_seq());
            let (ranges, rows) = table_sizes(&store);
            assert!(
                ranges <= MAX_UNUSED_RANGES.max(rows + 2),
                "{ranges} ranges for {rows} feed rows"
            );
            assert!(registry.changes_after(lost).is_err(), "the lost number");
            assert!(matches!(store.changes_after(lost, 10), Ok(Err(_))));
            if i % 3 == 2 {
                // A crash loop: openings that commit nothing.
                drop((store, registry));
                for _ in 0..3 {
                    drop(open());
                }
            }
        }
        let (store, registry) = open();
        for (i, &n) in seqs.iter().enumerate() {
            let want: Result<Vec<u64>, FeedGap> = Ok(seqs[i + 1..].to_vec());
            let from_registry = registry
                .changes_after(n)
                .map(|c| c.map(|c| c.seq).collect());
            assert_eq!(from_registry, want, "registry after {n}");
            let from_store = store.changes_after(n, 100).unwrap();
            let got = from_store.map(|c| c.iter().map(|c| c.seq).collect());
            assert_eq!(got, want, "store after {n}");
        }
        assert!(registry.changes_after(lost).is_err(), "the lost number");
        let (ranges, _) = table_sizes(&store);
        assert!(ranges > MAX_UNUSED_RANGES, "{ranges}: the bound was passed");
    }

    /// A step of the feed model below.
    #[derive(Clone, Debug)]
    enum Step {
        /// Makes a change in memory (uncommitted).
        Change,
        Commit,
        /// Drops store and registry without a commit and opens the directory again.
        Crash,
        /// `Store::reload`: what is not committed is gone.
        Reload,
    }

    /// What the model knows of one opening's history.
    #[derive(Default)]
    struct Model {
        /// Committed changes.
        committed: Vec<u64>,
        /// Handed out by the current registry, not committed.
        pending: Vec<u64>,
        /// Handed out and lost (a crash or reload before their commit).
        lost: Vec<u64>,
        /// Where each opening (or reload) started.
        starts: Vec<u64>,
    }

    /// Checks `changes_after(n)` of the store and the registry against the model, for
    /// every number the model knows: a lost number is a gap; a committed one resumes with
    /// exactly the committed (and, in the registry, pending) changes after it (the
    /// retention is not reached here); an opening's start may be a gap (once merged),
    /// else it lists exactly the changes after it. The table of ranges stays within its
    /// bound.
    fn check(model: &Model, store: &Store, registry: &Registry) {
        let after =
            |n: u64| -> Vec<u64> { model.committed.iter().copied().filter(|&s| s > n).collect() };
        let answers = |n: u64| {
            let s = store
                .changes_after(n, usize::MAX)
                .unwrap()
                .map(|c| c.iter().map(|c| c.seq).collect::<Vec<_>>());
            let r = registry
                .changes_after(n)
                .map(|c| c.map(|c| c.seq).collect::<Vec<_>>());
            (s, r)
        };
        for &n in &model.lost {
            let (s, r) = answers(n);
            assert!(
                s.is_err() && r.is_err(),
                "lost {n}: store {s:?}, registry {r:?}"
            );
        }
        for &n in &model.committed {
            let (s, r) = answers(n);
            let mut with_pending = after(n);
            with_pending.extend(&model.pending);
            match (s, r) {
                (Ok(s), Ok(r)) => {
                    assert_eq!(s, after(n), "store after committed {n}");
                    assert_eq!(r, with_pending, "registry after committed {n}");
                }
                (s, r) => panic!("committed {n}: store {s:?}, registry {r:?}"),
            }
        }
        for &n in &model.starts {
            let (s, r) = answers(n);
            if let Ok(s) = s {
                assert_eq!(s, after(n), "store after start {n}");
            }
            if let Ok(r) = r {
                let mut want = after(n);
                want.extend(&model.pending);
                assert_eq!(r, want, "registry after start {n}");
            }
        }
        // The newest opening's start resumes in its own registry.
        let start = *model.starts.last().unwrap();
        assert!(registry.changes_after(start).is_ok(), "own start {start}");
        let (ranges, rows) = table_sizes(store);
        assert!(
            ranges <= MAX_UNUSED_RANGES.max(rows + 2),
            "{ranges} for {rows} rows"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Random commits, crashes, reloads and changes keep the feed honest across
        /// restarts, with the unused-range bound (4 here) reached.
        #[test]
        fn the_feed_across_restarts_matches_a_model(
            steps in proptest::collection::vec(
                proptest::prop_oneof![
                    3 => proptest::strategy::Just(Step::Change),
                    2 => proptest::strategy::Just(Step::Commit),
                    2 => proptest::strategy::Just(Step::Crash),
                    1 => proptest::strategy::Just(Step::Reload),
                ],
                1..32,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let open = || Store::open(dir.path(), StoreConfig::default()).unwrap();
            let (mut store, mut registry) = open();
            let mut model = Model::default();
            model.starts.push(registry.last_seq());
            let mut next = 0u32;
            for step in steps {
                match step {
                    Step::Change => {
                        next += 1;
                        let id = DeviceId::new(&format!("d{next}")).unwrap();
                        registry.create(Twin::new(id)).unwrap();
                        model.pending.push(registry.last_seq());
                    }
                    Step::Commit => {
                        store.commit(&registry).unwrap();
                        model.committed.append(&mut model.pending);
                    }
                    Step::Crash | Step::Reload => {
                        model.lost.append(&mut model.pending);
                        if matches!(step, Step::Crash) {
                            drop((store, registry));
                            (store, registry) = open();
                        } else {
                            registry = store.reload().unwrap();
                        }
                        model.starts.push(registry.last_seq());
                    }
                }
                check(&model, &store, &registry);
            }
        }
    }

    /// A sealed head opens both ways (as a row and whole) with the same key, and both
    /// say it holds no plain key; the fuzz body's `SEALED` stands for such a key.
    #[test]
    fn a_sealed_head_opens_as_a_row_and_whole_alike() {
        let sealer = Sealer::new(&SealingKey::new([7; 32]));
        let mut twin = Twin::new(DeviceId::new("d").unwrap()).with_tag("t");
        twin.authentication.psk_key = Some(crate::twin::PskKey::new(b"fuzzed key".to_vec()));
        let head = record::encode_head(&twin, Some(&sealer));
        let mut rows = StoredRows::new();
        rows.push_head(std::str::from_utf8(&head).unwrap()).unwrap();
        let opener = Some(&sealer);
        assert_eq!(row_twin(&mut rows, 0, "d", None, &[], opener), Some(false));
        assert!(!rows.psk_stale(true));
        let (whole, _, _, stale) = owned_twin("d", &head, None, &[], opener).unwrap();
        assert!(!stale);
        assert_eq!(whole.authentication, twin.authentication);
        fuzz_head(&head);
        // The placeholder form the fuzz corpus uses (`head_sealed_psk`): a row.
        let corpus = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus/store_records/head_sealed_psk"),
        )
        .unwrap();
        let placeholder = std::str::from_utf8(&corpus[1..]).unwrap();
        let key = twin.authentication.psk_key.as_ref().unwrap();
        let text = placeholder.replace("SEALED", &sealer.seal("d", key).unwrap());
        let mut rows = StoredRows::new();
        rows.push_head(&text).unwrap();
        assert_eq!(row_twin(&mut rows, 0, "d", None, &[], opener), Some(false));
        fuzz_head(placeholder.as_bytes());
    }

    /// Reopening reads an ordinary head (every field, strings with escapes) as a row and
    /// one with an object-valued service property whole; both come back as written.
    #[test]
    fn heads_are_read_as_rows_unless_rows_cannot_hold_them() {
        let mut twin = Twin::new(DeviceId::new("d").unwrap()).with_tag("ü\"x");
        twin.status_reason = Some("off \"now\"".into());
        twin.configuration = Some("c\\fg".into());
        twin.authentication.psk_identity = Some("id".into());
        twin.authentication.psk_key = Some(crate::twin::PskKey::new(vec![1, 2]));
        twin.etag = crate::twin::Etag(9);
        let head = record::encode_head(&twin, None);
        let mut rows = StoredRows::new();
        rows.push_head(std::str::from_utf8(&head).unwrap()).unwrap();
        assert_eq!(row_twin(&mut rows, 0, "d", None, &[], None), Some(false));
        // The whole decode agrees (and a registry loads both alike).
        fuzz_head(&head);

        let nested: crate::twin::ServiceValue = serde_json::from_str(r#"{"a": 1}"#).unwrap();
        twin.service_properties
            .properties
            .insert("cfg".into(), nested);
        let head = record::encode_head(&twin, None);
        let mut rows = StoredRows::new();
        rows.push_head(std::str::from_utf8(&head).unwrap()).unwrap();
        assert_eq!(row_twin(&mut rows, 0, "d", None, &[], None), None);
        // Another id than the key's is not a row either (the whole decode refuses it).
        let mut rows = StoredRows::new();
        rows.push_head(std::str::from_utf8(&head).unwrap()).unwrap();
        assert_eq!(row_twin(&mut rows, 0, "e", None, &[], None), None);
        assert!(record::decode_head("e", &head, None).is_err());
    }

    /// The fuzz body's oracle takes a record and logged changes after the head: both ways
    /// agree on a record repeating a name and on changes set, replaced and removed.
    #[test]
    fn the_head_oracle_checks_records_and_logged_changes() {
        let mut twin = Twin::new(DeviceId::new("d").unwrap()).with_tag("t");
        twin.etag = crate::twin::Etag(3);
        let mut row = record::encode_head(&twin, None);
        let (one, two) = (
            crate::twin::Scalar::from(1),
            crate::twin::Scalar::from("tw\"o"),
        );
        let at = Timestamp::from_millis(5);
        let mut rec = Vec::new();
        let props = [
            ("BatteryLevel", &one, at),
            ("FirmwareVersion", &two, at),
            ("BatteryLevel", &one, at),
        ];
        record::encode_properties(4, 4, props.into_iter(), &mut rec);
        row.push(0);
        row.extend_from_slice(&rec);
        row.push(0);
        let mut log = Vec::new();
        record::encode_log_entry("x", "FirmwareVersion", 3, Some((&one, at)), &mut log);
        record::encode_log_entry("x", "BatteryLevel", 6, None, &mut log);
        record::encode_log_entry("x", "/3303/0/5700", 7, Some((&two, at)), &mut log);
        record::encode_log_entry("x", "FirmwareVersion", 8, Some((&two, at)), &mut log);
        row.extend_from_slice(&log);
        fuzz_head(&row);
        // In the right order, the record is read as rows.
        let props = [("BatteryLevel", &one, at), ("FirmwareVersion", &two, at)];
        record::encode_properties(4, 4, props.into_iter(), &mut rec);
        let mut rows = StoredRows::new();
        rows.push_head(std::str::from_utf8(&record::encode_head(&twin, None)).unwrap())
            .unwrap();
        assert_eq!(
            row_twin(&mut rows, 0, "d", Some(&rec), &[], None),
            Some(false)
        );
    }

    /// A twin whose logged changes would take a batch's text past what its `u32` spans
    /// address is decoded whole instead (here with a small limit: the real one is 4 GiB).
    #[test]
    fn a_twin_whose_changes_pass_the_text_limit_is_decoded_whole() {
        let head = record::encode_head(&Twin::new(DeviceId::new("d").unwrap()), None);
        let value = crate::twin::Scalar::from("v".repeat(100).as_str());
        let logged: Vec<record::LogEntry> = (1..=10)
            .map(|seq| record::LogEntry {
                record: 10,
                device: "d".into(),
                name: "FirmwareVersion".into(),
                seq,
                value: Some((Timestamp::from_millis(seq), value.clone())),
            })
            .collect();
        // The head is in the text, and its strings might all be copied once more.
        let needed = 2 * head.len() + 10 * ("FirmwareVersion".len() + 100);
        for (limit, as_row) in [(needed, true), (needed - 1, false)] {
            let mut rows = StoredRows::new();
            rows.push_head(std::str::from_utf8(&head).unwrap()).unwrap();
            let got = row_twin_within(&mut rows, 0, "d", None, &logged, None, limit);
            assert_eq!(got.is_some(), as_row, "limit {limit}");
        }
    }

    /// A head larger than an NDJSON import's chunk (256 MiB) is read as 99ccb72 read it:
    /// a valid twin's head reaches ~400 MB (256 service objects of 64 strings of 4,096
    /// control characters, each escaped in 6 bytes). Here an ordinary head padded with
    /// spaces, which JSON allows.
    #[test]
    fn a_head_past_an_import_chunk_is_read() {
        let mut head = String::from(r#"{"twin":{"deviceId":"d","etag":"4"}}"#);
        head.push_str(&" ".repeat(crate::registry::ndjson::MAX_CHUNK_BYTES));
        let mut rows = StoredRows::new();
        rows.push_head(&head).unwrap();
        assert_eq!(row_twin(&mut rows, 0, "d", None, &[], None), Some(false));
        drop(rows);
        assert_eq!(
            record::decode_head("d", head.as_bytes(), None)
                .unwrap()
                .0
                .etag
                .0,
            4
        );
    }

    /// Errors mid-way through the batches are 99ccb72's: a head that does not decode in
    /// the third batch is its `BadRecord` (after two batches loaded), a twin the load
    /// refuses in the first is `Rejected` (the reader, ahead, stops when the load hangs
    /// up), and an orphan record past the last twin is a `BadRecord` too.
    #[test]
    fn errors_in_later_batches_refuse_the_file_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let id = |i: usize| format!("t{i:05}");
        for i in 0..3 * READ_BATCH {
            reg.create(Twin::new(DeviceId::new(&id(i)).unwrap()))
                .unwrap();
        }
        store.commit(&reg).unwrap();
        drop((store, reg));
        let path = dir.path().join(FILE_NAME);
        let copy = dir.path().join("copy");
        std::fs::copy(&path, &copy).unwrap();
        let edit = |f: &dyn Fn(&redb::WriteTransaction)| {
            std::fs::copy(&copy, &path).unwrap();
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            f(&txn);
            txn.commit().unwrap();
            drop(db);
            Store::open(dir.path(), StoreConfig::default())
                .map(|_| ())
                .unwrap_err()
        };
        let bad = id(2 * READ_BATCH + 5);
        let err = edit(&|txn| {
            let mut twins = txn.open_table(TWINS).unwrap();
            twins.insert(bad.as_str(), &b"{\"twin\": 1}"[..]).unwrap();
        });
        assert!(
            matches!(&err, StoreError::BadRecord { table: "twins", key, .. } if *key == bad),
            "{err}"
        );
        let err = edit(&|txn| {
            let mut twins = txn.open_table(TWINS).unwrap();
            let head = format!(
                r#"{{"twin":{{"deviceId":"{}","serviceProperties":{{"tags":[""]}}}}}}"#,
                id(3)
            );
            twins.insert(id(3).as_str(), head.as_bytes()).unwrap();
            twins.insert(bad.as_str(), &b"{\"twin\": 1}"[..]).unwrap();
        });
        assert!(matches!(&err, StoreError::Rejected { .. }), "{err}");
        let err = edit(&|txn| {
            let mut rec = Vec::new();
            record::encode_properties(0, 0, std::iter::empty(), &mut rec);
            let mut props = txn.open_table(PROPERTIES).unwrap();
            props.insert("u", rec.as_slice()).unwrap();
        });
        assert!(
            matches!(&err, StoreError::BadRecord { table: "properties", key, .. } if key == "u"),
            "{err}"
        );
    }

    /// The tables [`read_twins`] reads: the twins, their property records and the log.
    #[allow(clippy::type_complexity)]
    fn read_tables(
        txn: &redb::ReadTransaction,
    ) -> (
        redb::ReadOnlyTable<&'static str, &'static [u8]>,
        redb::ReadOnlyTable<&'static str, &'static [u8]>,
        redb::ReadOnlyTable<u64, &'static [u8]>,
    ) {
        (
            txn.open_table(TWINS).unwrap(),
            txn.open_table(PROPERTIES).unwrap(),
            txn.open_table(PROPERTY_LOG).unwrap(),
        )
    }

    /// The reader runs at most `READ_AHEAD` batches ahead of the load: with the load
    /// holding off, its send after `READ_AHEAD` batches finds the queue full (and waits
    /// there); once the load takes them, every twin (its tag, service property, record
    /// and logged change) loads as committed.
    #[test]
    fn the_reader_waits_on_a_full_queue_and_every_twin_loads() {
        use std::sync::mpsc::TrySendError;
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        // Batches past the ones the queue holds, the one that waits, and two more.
        let n = (READ_AHEAD + 3) * READ_BATCH;
        let id = |i: usize| format!("w{i:05}");
        for i in 0..n {
            let twin = Twin::new(DeviceId::new(&id(i)).unwrap()).with_tag(format!("t{}", i % 7));
            reg.create(twin).unwrap();
            reg.set_service_property(&id(i), "s", Some((i as i64).into()), None)
                .unwrap();
            if i % 3 == 0 {
                let at = Timestamp::from_millis(1_000 + i as u64);
                reg.report_device_property(&id(i), "BatteryLevel", (i as i64 % 101).into(), at)
                    .unwrap();
            }
        }
        store.commit(&reg).unwrap();
        // Logged changes over some records.
        for i in (0..n).step_by(97) {
            let at = Timestamp::from_millis(900_000 + i as u64);
            reg.report_device_property(&id(i), "BatteryLevel", (i as i64 % 50).into(), at)
                .unwrap();
        }
        store.commit(&reg).unwrap();
        assert!(store.logged_changes() > 0);
        let expected = twins(&reg);
        drop((store, reg));

        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        let tables = read_tables(&txn);
        let (sender, batches) = read_channel();
        // The number of batches sent before a send first found the queue full.
        let (full_tx, full) = std::sync::mpsc::channel();
        let mut loaded = Registry::new();
        let mut versions = Vec::new();
        let sent_before_full = std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut sent = 0;
                read_twins(tables.0, tables.1, tables.2, None, |batch| {
                    let sent_now = match sender.try_send(batch) {
                        Ok(()) => true,
                        Err(TrySendError::Full(batch)) => {
                            let _ = full_tx.send(sent);
                            sender.send(batch).is_ok()
                        }
                        Err(TrySendError::Disconnected(_)) => false,
                    };
                    sent += 1;
                    sent_now
                })
            });
            // Nothing is taken off the queue until the reader found it full (or ended
            // without: `full_tx` dropped with its closure).
            let sent_before_full = full.recv().ok();
            let mut bulk = loaded.bulk_load();
            for batch in batches {
                batch
                    .unwrap()
                    .load(&mut bulk, |slot, generation, etag, service| {
                        versions.push((slot, generation, etag, service))
                    })
                    .unwrap();
            }
            bulk.finish();
            let read = reader.join().unwrap();
            assert!(!read.pending.is_empty(), "the logged changes were read");
            sent_before_full
        });
        assert_eq!(
            sent_before_full,
            Some(READ_AHEAD),
            "the reader's send after READ_AHEAD batches finds the queue full"
        );
        for (slot, generation, etag, service) in versions {
            loaded.restore_versions(slot, generation, etag, service);
        }
        assert_eq!(loaded.len(), n);
        assert!(twins(&loaded) == expected, "a twin loaded otherwise");
    }

    /// A batch ends once its heads, records and logged strings reach the read bound, so
    /// that logged changes (copied into the batch, a value each time it changed) cannot
    /// take a batch's text far past it; every twin still loads as committed.
    #[test]
    fn logged_strings_count_towards_a_batch_s_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let n = 40;
        let id = |i: usize| format!("g{i:03}");
        for i in 0..n {
            reg.create(Twin::new(DeviceId::new(&id(i)).unwrap()))
                .unwrap();
        }
        store.commit(&reg).unwrap();
        // Five logged changes a twin, each a 300-byte string: about 1.5 KB a twin.
        for round in 0..5u64 {
            for i in 0..n {
                let value = format!("{round}{}", "z".repeat(299));
                let at = Timestamp::from_millis(1_000 + round);
                reg.report_device_property(&id(i), "Timezone", value.into(), at)
                    .unwrap();
            }
            store.commit(&reg).unwrap();
        }
        assert_eq!(store.logged_changes(), 5 * n);
        let expected = twins(&reg);
        drop((store, reg));

        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        let tables = read_tables(&txn);
        let read_bytes = 8 * 1024;
        let mut sizes = Vec::new();
        let mut loaded = Registry::new();
        let mut versions = Vec::new();
        let mut bulk = loaded.bulk_load();
        read_twins_within(tables.0, tables.1, tables.2, None, read_bytes, |batch| {
            let rows = batch.unwrap();
            sizes.push(rows.text_len() + rows.extra_len());
            rows.load(&mut bulk, |slot, generation, etag, service| {
                versions.push((slot, generation, etag, service))
            })
            .unwrap();
            true
        });
        bulk.finish();
        // The twins of the heads' and records' bytes alone would fit one batch.
        assert!(sizes.len() > 1, "{sizes:?}");
        // A batch ends with the twin that reached the bound: at most one twin past it.
        assert!(sizes.iter().all(|&b| b < read_bytes + 2_048), "{sizes:?}");
        for (slot, generation, etag, service) in versions {
            loaded.restore_versions(slot, generation, etag, service);
        }
        assert!(twins(&loaded) == expected, "a twin loaded otherwise");
    }

    /// A head stored under a key that is not a device id (empty, a character outside the
    /// set, past 128 bytes) refuses the file with a `BadRecord` of table "twins", the key
    /// (at most 128 characters of it) and the device id's own error, as it did when the
    /// reader built a `DeviceId` of every key.
    #[test]
    fn a_head_under_a_bad_device_id_is_a_bad_record() {
        let long = "x".repeat(130);
        let cases = [
            ("", "device id is empty".to_string()),
            (
                "a b",
                format!(
                    "device id has ' ' at byte 1; allowed are ASCII letters, digits and {}",
                    crate::twin::DEVICE_ID_PUNCTUATION
                ),
            ),
            (
                long.as_str(),
                "device id is 130 bytes long; at most 128 are allowed".to_string(),
            ),
        ];
        for (bad, detail) in cases {
            let err = open_after(|txn| {
                let head = br#"{"twin":{"deviceId":"a"}}"#;
                txn.open_table(TWINS)
                    .unwrap()
                    .insert(bad, &head[..])
                    .unwrap();
            })
            .unwrap_err();
            let key: String = bad.chars().take(128).collect();
            assert!(
                matches!(&err, StoreError::BadRecord { table: "twins", key: k, detail: d }
                    if *k == key && *d == detail),
                "{err}"
            );
            assert_eq!(
                err.to_string(),
                format!("bad record {key:?} in table twins: {detail}")
            );
        }
    }

    /// A store with twins "a", "b" and "c" committed, then `edit` applied to its file
    /// (as a damaged one might be), reopened: its twins in id order.
    fn reopened_after(edit: impl FnOnce(&redb::WriteTransaction)) -> Vec<Twin> {
        open_after(edit).unwrap()
    }

    /// [`reopened_after`], or the opening's error.
    fn open_after(edit: impl FnOnce(&redb::WriteTransaction)) -> Result<Vec<Twin>, StoreError> {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        for id in ["a", "b", "c"] {
            reg.create(Twin::new(crate::DeviceId::new(id).unwrap()))
                .unwrap();
        }
        store.commit(&reg).unwrap();
        drop((store, reg));
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        edit(&txn);
        txn.commit().unwrap();
        drop(db);
        Store::open(dir.path(), StoreConfig::default()).map(|(_store, reg)| twins(&reg))
    }

    /// Members a well-written file holds once each but a damaged one may repeat open as
    /// the whole decode (99ccb72's opening) opens them, the last one winning, not
    /// refused as a row with a duplicate: a service property of a head...
    #[test]
    fn a_repeated_service_property_of_a_head_opens_as_decoded_whole() {
        let got = reopened_after(|txn| {
            let head =
                r#"{"twin":{"deviceId":"a","serviceProperties":{"properties":{"p":1,"p":"two"}}}}"#;
            txn.open_table(TWINS)
                .unwrap()
                .insert("a", head.as_bytes())
                .unwrap();
        });
        assert_eq!(
            got[0].service_properties.properties.get("p"),
            Some(&crate::twin::ServiceValue::Scalar("two".into()))
        );
        assert_eq!(got[0].service_properties.properties.len(), 1);
    }

    /// ... a tag of a head (64 tags, the most a twin has, one of them twice) ...
    #[test]
    fn a_repeated_tag_of_a_head_opens_as_decoded_whole() {
        let got = reopened_after(|txn| {
            let tags: Vec<String> = (0..64).chain([7]).map(|i| format!("\"t{i:02}\"")).collect();
            let head = format!(
                r#"{{"twin":{{"deviceId":"b","serviceProperties":{{"tags":[{}]}}}}}}"#,
                tags.join(",")
            );
            txn.open_table(TWINS)
                .unwrap()
                .insert("b", head.as_bytes())
                .unwrap();
        });
        assert_eq!(got[1].service_properties.tags.len(), crate::twin::MAX_TAGS);
    }

    /// ... and a device property of a properties record.
    #[test]
    fn a_repeated_device_property_of_a_record_opens_as_decoded_whole() {
        let got = reopened_after(|txn| {
            let (one, two) = (crate::twin::Scalar::from(1), crate::twin::Scalar::from(2));
            let mut rec = Vec::new();
            let props = [
                ("BatteryLevel", &one, Timestamp::from_millis(1)),
                ("BatteryLevel", &two, Timestamp::from_millis(2)),
            ];
            record::encode_properties(0, 0, props.into_iter(), &mut rec);
            txn.open_table(PROPERTIES)
                .unwrap()
                .insert("c", rec.as_slice())
                .unwrap();
        });
        let battery = &got[2].device_properties["BatteryLevel"];
        assert_eq!(battery.value, crate::twin::Scalar::from(2));
        assert_eq!(battery.last_updated_time, Timestamp::from_millis(2));
        assert_eq!(got[2].device_properties.len(), 1);
    }

    #[test]
    fn a_file_from_a_newer_format_is_refused_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        drop(store);
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_FORMAT, FORMAT + 1)
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = Store::open(dir.path(), StoreConfig::default()).unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedFormat { found, supported } if found == FORMAT + 1 && supported == FORMAT),
            "{err}"
        );
    }

    #[test]
    fn a_format_1_file_opens_with_its_twins_and_without_its_valueless_feed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        reg.create(Twin::new(crate::DeviceId::new("d1").unwrap()))
            .unwrap();
        reg.report_device_property("d1", "BatteryLevel", 7.into(), Timestamp::from_millis(3))
            .unwrap();
        store.commit(&reg).unwrap();
        let last = reg.last_seq();
        drop((store, reg));
        // Rewrite it as format 1 wrote it: format 1, a row per device property, a
        // property change without values.
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(PROPERTIES).unwrap();
        for table in [PROPERTY_LOG, FEED] {
            txn.delete_table(table).unwrap();
        }
        txn.open_table(META)
            .unwrap()
            .insert(META_FORMAT, 1)
            .unwrap();
        txn.open_table(OLD_FEED)
            .unwrap()
            .insert(last, &b"\x02d1\x00BatteryLevel"[..])
            .unwrap();
        let mut row = Vec::new();
        record::encode_prop(last, Timestamp::from_millis(3), &7.into(), &mut row);
        txn.open_table(OLD_PROPS)
            .unwrap()
            .insert(("d1", "BatteryLevel"), row.as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let (store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        assert_eq!(
            reg.get("d1")
                .unwrap()
                .device_property("BatteryLevel")
                .unwrap()
                .0,
            &crate::twin::Scalar::from(7)
        );
        assert!(reg.changes_after(0).is_err(), "the old feed is a gap");
        assert!(store.changes_after(0, 10).unwrap().is_err());
        assert_eq!(store.changes_after(last, 10).unwrap().unwrap(), vec![]);
        drop((store, reg));
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_read().unwrap();
        let format = txn.open_table(META).unwrap().get(META_FORMAT).unwrap();
        assert_eq!(format.map(|v| v.value()), Some(FORMAT));
    }

    /// A format 2 file (a row per device property) opens with its twins, properties and
    /// etags as they were, converted into one record per twin; later reports log and
    /// fold as usual.
    #[test]
    fn a_format_2_file_opens_converted_to_one_record_per_twin() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        for id in ["a", "b", "c"] {
            reg.create(Twin::new(crate::DeviceId::new(id).unwrap()))
                .unwrap();
        }
        reg.report_device_property("a", "BatteryLevel", 7.into(), Timestamp::from_millis(3))
            .unwrap();
        reg.report_device_property("a", "/3/0/0", "maker".into(), Timestamp::from_millis(4))
            .unwrap();
        reg.report_device_property("c", "BatteryLevel", 9.into(), Timestamp::from_millis(5))
            .unwrap();
        store.commit(&reg).unwrap();
        let want = twins(&reg);
        let last = reg.last_seq();
        drop((store, reg));
        // Rewrite it as format 2 laid it out: no records, no log, a row per property
        // carrying the number of the change that wrote it, a feed row per change.
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let feed: Vec<Change> = {
            let table = txn.open_table(FEED).unwrap();
            let mut all = Vec::new();
            for row in table.iter().unwrap() {
                let (k, v) = row.unwrap();
                all.extend(feed::decode_record(k.value(), v.value()).unwrap());
            }
            all
        };
        assert_eq!(feed.len(), 6, "three creations and three reports");
        txn.delete_table(PROPERTIES).unwrap();
        for table in [PROPERTY_LOG, FEED] {
            txn.delete_table(table).unwrap();
        }
        {
            let mut rows = txn.open_table(OLD_FEED).unwrap();
            let mut out = Vec::new();
            for c in &feed {
                feed::encode(c, &mut out);
                rows.insert(c.seq, out.as_slice()).unwrap();
            }
        }
        {
            txn.open_table(META)
                .unwrap()
                .insert(META_FORMAT, 2)
                .unwrap();
            let mut rows = txn.open_table(OLD_PROPS).unwrap();
            let mut out = Vec::new();
            for t in &want {
                for (i, (name, p)) in t.device_properties.iter().enumerate() {
                    // The newest row carries the twin's etag (its head's is older).
                    let seq = if i == 0 { t.etag.0 } else { 1 };
                    record::encode_prop(seq, p.last_updated_time, &p.value, &mut out);
                    rows.insert((t.device_id.as_str(), name.as_str()), out.as_slice())
                        .unwrap();
                }
            }
        }
        txn.commit().unwrap();
        drop(db);
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let got = twins(&reg);
        assert_eq!(got, want);
        reg.validate().unwrap();
        assert_eq!(store.changes_after(last, 10).unwrap().unwrap(), vec![]);
        assert_eq!(store.changes_after(0, 10).unwrap().unwrap(), feed);
        assert_eq!(
            store.changes_after(feed[2].seq, 2).unwrap().unwrap(),
            feed[3..5].to_vec()
        );
        assert_eq!(
            reg.changes_after(0).unwrap().cloned().collect::<Vec<_>>(),
            feed
        );
        reg.report_device_property("b", "BatteryLevel", 1.into(), Timestamp::from_millis(6))
            .unwrap();
        store.commit(&reg).unwrap();
        let want = twins(&reg);
        drop((store, reg));
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        {
            let txn = db.begin_read().unwrap();
            let format = txn.open_table(META).unwrap().get(META_FORMAT).unwrap();
            assert_eq!(format.map(|v| v.value()), Some(FORMAT));
            assert!(txn.open_table(OLD_PROPS).is_err(), "the old table is gone");
            assert!(txn.open_table(OLD_FEED).is_err(), "the old feed is gone");
            assert_eq!(txn.open_table(PROPERTIES).unwrap().len().unwrap(), 3);
        }
        drop(db);
        let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        let got = twins(&reg);
        assert_eq!(got, want);
    }

    #[test]
    fn a_garbage_or_truncated_file_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![0x5a; 10_000]).unwrap();
        let err = Store::open(dir.path(), StoreConfig::default()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Corrupted { .. } | StoreError::Io { .. } | StoreError::Engine { .. }
            ),
            "{err:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        for i in 0..200 {
            reg.create(Twin::new(crate::DeviceId::new(&format!("d{i}")).unwrap()))
                .unwrap();
        }
        store.commit(&reg).unwrap();
        drop((store, reg));
        let path = dir.path().join(FILE_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 3).unwrap();
        drop(file);
        // Either redb rolls back to a consistent commit or it reports the damage; it
        // never panics and never returns a half-read registry.
        match Store::open(dir.path(), StoreConfig::default()) {
            Ok((_store, reg)) => reg.validate().unwrap(),
            Err(e) => assert!(matches!(e, StoreError::Corrupted { .. }), "{e}"),
        }
    }

    #[test]
    fn a_data_directory_that_is_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&file, StoreConfig::default()).unwrap_err();
        assert!(matches!(err, StoreError::Directory { .. }), "{err}");
    }

    /// The log's bound: after every commit it holds at most `property_log_limit` changes
    /// and the count kept in memory is the table's; reopening gives back every twin as
    /// committed. (In this run the share folded each commit keeps it there alone: with
    /// the fold of every pending twin past the limit taken out, it still passes. That fold
    /// is the safety net for a log that settles near its limit.)
    #[test]
    fn the_log_never_holds_more_than_its_limit_after_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            property_log_limit: 50,
            ..StoreConfig::default()
        };
        let (mut store, mut reg) = Store::open(dir.path(), config.clone()).unwrap();
        for i in 0..40 {
            reg.create(Twin::new(DeviceId::new(&format!("d{i:02}")).unwrap()))
                .unwrap();
        }
        store.commit(&reg).unwrap();
        let mut x: u64 = 7;
        let mut most = 0;
        for round in 0..300u64 {
            for _ in 0..1 + round % 9 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let id = format!("d{:02}", (x >> 33) % 40);
                let value = crate::twin::Scalar::from((x >> 20) as i64 % 100);
                reg.report_device_property(
                    &id,
                    "BatteryLevel",
                    value,
                    Timestamp::from_millis(round),
                )
                .unwrap();
            }
            store.commit(&reg).unwrap();
            let txn = store.db.as_ref().unwrap().begin_read().unwrap();
            let mut on_disk = 0;
            for row in txn.open_table(PROPERTY_LOG).unwrap().iter().unwrap() {
                let (k, v) = row.unwrap();
                on_disk += record::decode_log(k.value(), v.value()).unwrap().len();
            }
            assert_eq!(on_disk, store.log.entries, "round {round}");
            assert!(on_disk <= 50, "round {round}: {on_disk} changes in the log");
            most = most.max(on_disk);
        }
        assert!(most > 10, "the log was used ({most} at most)");
        let want = twins(&reg);
        drop((store, reg));
        let (_store, reg) = Store::open(dir.path(), config).unwrap();
        let got = twins(&reg);
        assert_eq!(got, want);
    }

    /// Reopening counts as pending only the twins whose record lacks a logged change: a
    /// twin folded since its changes were logged is not rewritten again, and a log record
    /// that only such twins are in goes at the next commit.
    #[test]
    fn reopening_does_not_fold_again_twins_folded_since_their_changes_were_logged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        for id in ["a", "b"] {
            reg.create(Twin::new(DeviceId::new(id).unwrap())).unwrap();
        }
        store.commit(&reg).unwrap();
        // Both logged in one record; the default limit folds one twin a commit.
        for id in ["a", "b"] {
            reg.report_device_property(id, "BatteryLevel", 1.into(), Timestamp::EPOCH)
                .unwrap();
        }
        let done = store.commit(&reg).unwrap();
        assert_eq!(done.folded, 1, "one of the two folded");
        assert_eq!(store.log.pending.len(), 1);
        let want = twins(&reg);
        drop((store, reg));
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        assert_eq!(twins(&reg), want);
        assert_eq!(store.log.pending.len(), 1, "only the twin not folded yet");
        // The next commit folds it and drops the record.
        reg.create(Twin::new(DeviceId::new("c").unwrap())).unwrap();
        reg.report_device_property("c", "BatteryLevel", 2.into(), Timestamp::EPOCH)
            .unwrap();
        store.commit(&reg).unwrap();
        reg.report_device_property("c", "BatteryLevel", 3.into(), Timestamp::EPOCH)
            .unwrap();
        store.commit(&reg).unwrap();
        assert!(
            store.log.pending.len() <= 1,
            "{:?}",
            store.log.pending.keys().collect::<Vec<_>>()
        );
        let want = twins(&reg);
        drop((store, reg));
        let (_store, reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        assert_eq!(twins(&reg), want);
    }

    /// A log entry numbered after its commit (only a damaged or hostile file has one) is
    /// refused when opening, rather than restoring an etag from the future.
    #[test]
    fn a_log_entry_numbered_after_its_commit_is_a_bad_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        reg.create(Twin::new(crate::DeviceId::new("d").unwrap()))
            .unwrap();
        store.commit(&reg).unwrap();
        let last = reg.last_seq();
        drop((store, reg));
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let mut rec = Vec::new();
        let value = crate::twin::Scalar::from(1);
        record::encode_log_entry(
            "d",
            "BatteryLevel",
            last + 1,
            Some((&value, Timestamp::EPOCH)),
            &mut rec,
        );
        txn.open_table(PROPERTY_LOG)
            .unwrap()
            .insert(last, rec.as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(db);
        let err = Store::open(dir.path(), StoreConfig::default()).unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::BadRecord {
                    table: "property_log",
                    ..
                }
            ),
            "{err}"
        );
    }

    /// The in-memory count of logged changes is what the log's records hold, as a reload
    /// counts it: a twin created in the same commit is written whole and logs nothing
    /// (its properties were counted as log entries, so the count ran ahead of the table
    /// and a commit folded every twin long before the log was near its limit).
    #[test]
    fn twins_written_whole_add_nothing_to_the_log_count() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut reg) = Store::open(dir.path(), StoreConfig::default()).unwrap();
        for id in ["a", "c"] {
            reg.create(Twin::new(crate::DeviceId::new(id).unwrap()))
                .unwrap();
        }
        store.commit(&reg).unwrap();
        let at = Timestamp::from_millis(1);
        reg.create(
            Twin::new(crate::DeviceId::new("b").unwrap())
                .with_device_property("BatteryLevel", 5, at)
                .with_device_property("FirmwareVersion", "1.0", at)
                .with_device_property("/3303/0/5700", 1.5, at),
        )
        .unwrap();
        reg.report_device_property("a", "BatteryLevel", 1.into(), at)
            .unwrap();
        reg.report_device_property("c", "BatteryLevel", 2.into(), at)
            .unwrap();
        let done = store.commit(&reg).unwrap();
        assert_eq!(done.folded, 2, "b written whole, a folded");
        let in_memory = store.log.entries;
        let _reg = store.reload().unwrap();
        assert_eq!(store.log.entries, 2, "c's and a's entries are in the table");
        assert_eq!(in_memory, store.log.entries);
    }

    /// Feed records whose changes do not rise from one record to the next (a damaged or
    /// hostile file) are a typed error when the store opens: not an overflow panic (the
    /// registry's feed resumed before the oldest change kept, 0 here) and not a feed
    /// served out of order.
    #[test]
    fn feed_records_out_of_order_across_records_are_a_bad_record() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), StoreConfig::default()).unwrap());
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut rows = txn.open_table(FEED).unwrap();
            let change = |seq| Change {
                seq,
                device: crate::DeviceId::new("d").unwrap(),
                kind: ChangeKind::Tags,
            };
            let (mut scratch, mut rec) = (Vec::new(), Vec::new());
            for seq in [1, 2, 3] {
                feed::append(&change(seq), &mut scratch, &mut rec);
            }
            rows.insert(3, rec.as_slice()).unwrap();
            rec.clear();
            for seq in [0, 5] {
                feed::append(&change(seq), &mut scratch, &mut rec);
            }
            rows.insert(5, rec.as_slice()).unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_COMMITTED, 5)
                .unwrap();
        }
        txn.commit().unwrap();
        drop(db);
        for retention in [2, DEFAULT_FEED_RETENTION] {
            let config = StoreConfig {
                feed_retention: retention,
                ..StoreConfig::default()
            };
            let err = Store::open(dir.path(), config).unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::BadRecord {
                        table: "feed_records",
                        ..
                    }
                ),
                "retention {retention}: {err}"
            );
        }
    }
}
