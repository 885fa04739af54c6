//! Online backups: [`StoreSnapshot`].

use super::error::from_io;
use super::{
    FEED, FILE_NAME, JOB_CHILDREN, JOB_PARENTS, META, META_COMMITTED, PACKAGES, PROPERTIES,
    PROPERTY_LOG, Store, StoreError, TWINS, UNUSED,
};
use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The file a backup is written to before it is complete, followed by `-{pid}-{n}`: its
/// own, whatever other backups write into the same directory at once.
const PARTIAL_NAME: &str = "twinhub.redb.partial";

/// Backups this process started (the `n` of their partial files' names).
static BACKUPS: AtomicU64 = AtomicU64::new(0);

/// What a store had committed when [`Store::snapshot`] took it, to copy with
/// [`StoreSnapshot::write_to`] while the store goes on committing: an online backup.
///
/// Copying `twinhub.redb` with `cp` while a hub commits does not give a usable file: the
/// copy reads pages over seconds while commits rewrite others, so it may hold pages of
/// several commits, which is no state the store was ever in. [`Store::snapshot`] instead
/// opens a read transaction (the storage engine's consistent view of the last commit,
/// which later commits do not change) and [`StoreSnapshot::write_to`] copies its tables
/// into a new store file, row by row, without holding the store: the hub keeps
/// committing meanwhile. The copy is a store directory like any other: [`Store::open`]
/// opens it as the original would have reopened after a crash right after that commit
/// (the twins, device properties, logged changes, the kept change feed, jobs, packages,
/// sealed PSK keys as they were sealed: it opens with the same sealing key).
///
/// Bounds: a snapshot holds the pages of its commit until it is dropped, so that while
/// a backup is written, the live file grows by what the commits meanwhile rewrite (the
/// storage engine reuses those pages after the snapshot is dropped). The copy is written
/// in one transaction into a file of its own (`twinhub.redb.partial-{pid}-{n}`), and
/// linked as `twinhub.redb` only once it is complete and durable, by a hard link, which
/// fails if that name exists by then: a backup never replaces a store, not even one
/// created in the directory while it ran, and one that fails or is interrupted never
/// leaves a file that looks like a whole store. (The directory's file system must allow
/// hard links.)
pub struct StoreSnapshot {
    txn: ReadTransaction,
    committed: u64,
}

impl std::fmt::Debug for StoreSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSnapshot")
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

/// What [`StoreSnapshot::write_to`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backup {
    /// The backup's file (`twinhub.redb` in the directory given).
    pub path: PathBuf,
    /// The registry sequence number the backup holds everything through (the snapshot's
    /// [`StoreSnapshot::committed_seq`]).
    pub committed: u64,
    /// Twins in the backup.
    pub twins: u64,
    /// Rows copied, over every table.
    pub rows: u64,
}

impl Store {
    /// A consistent view of what this store has committed, for an online backup: cheap
    /// (a read transaction), and it does not block commits. With a
    /// [`SharedStore`](super::SharedStore) the hub commits through, take it under the
    /// lock and write it after releasing the lock:
    ///
    /// ```
    /// use twinhub::store::{SharedStore, Store, StoreConfig};
    /// # let dir = std::env::temp_dir().join(format!("twinhub-doc-snapshot-{}", std::process::id()));
    /// # let backups = dir.join("backup");
    /// let (store, mut registry) = Store::open(dir.join("live"), StoreConfig::default())?;
    /// let store = SharedStore::new(store);
    /// registry.create(twinhub::twin::Twin::new(twinhub::DeviceId::new("pump-1")?))?;
    /// store.lock().commit(&registry)?;
    ///
    /// let snapshot = store.lock().snapshot()?; // the lock is released here
    /// let backup = snapshot.write_to(&backups)?; // commits may go on meanwhile
    /// assert_eq!(backup.twins, 1);
    /// let (_copy, restored) = Store::open(&backups, StoreConfig::default())?;
    /// assert!(restored.get("pump-1").is_some());
    /// # drop((_copy, store));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A store a failed write poisoned ([`Store::is_poisoned`]) still gives the last
    /// commit the disk holds (a backup is most wanted when the disk fails); one whose
    /// reload failed has no open file: [`StoreError::Poisoned`].
    pub fn snapshot(&self) -> Result<StoreSnapshot, StoreError> {
        let db = self.db.as_ref().ok_or(StoreError::Poisoned)?;
        let txn = db.begin_read()?;
        let committed = txn
            .open_table(META)?
            .get(META_COMMITTED)?
            .map_or(0, |v| v.value());
        Ok(StoreSnapshot { txn, committed })
    }
}

impl StoreSnapshot {
    /// The registry sequence number the snapshot holds everything through.
    pub fn committed_seq(&self) -> u64 {
        self.committed
    }

    /// Writes the snapshot as a new store in `dir` (created if missing): `dir` must not
    /// hold a store file, before or when the copy is complete ([`StoreError::Exists`],
    /// nothing left behind). The copy is durable when this returns. A backup that fails
    /// removes its partial file; one whose process died leaves it
    /// (`twinhub.redb.partial-{pid}-{n}`, never `twinhub.redb`), to delete by hand.
    pub fn write_to(&self, dir: impl AsRef<Path>) -> Result<Backup, StoreError> {
        let dir = dir.as_ref();
        let directory = |source| StoreError::Directory {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(directory)?;
        let path = dir.join(FILE_NAME);
        if path.try_exists().map_err(directory)? {
            return Err(StoreError::Exists { path });
        }
        let n = BACKUPS.fetch_add(1, Ordering::Relaxed);
        let partial = dir.join(format!("{PARTIAL_NAME}-{}-{n}", std::process::id()));
        // Only a dead process of the same id can have left a file of this name.
        match std::fs::remove_file(&partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(from_io(e)),
            _ => {}
        }
        let written = self.copy_into(&partial);
        let linked = written.and_then(|counts| match std::fs::hard_link(&partial, &path) {
            Ok(()) => Ok(counts),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::Exists { path: path.clone() })
            }
            Err(e) => Err(from_io(e)),
        });
        let removed = std::fs::remove_file(&partial);
        let (twins, rows) = linked?;
        removed.map_err(from_io)?;
        // The new name is durable once the directory is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(from_io)?;
        Ok(Backup {
            path,
            committed: self.committed,
            twins,
            rows,
        })
    }

    /// Copies every table into a new store file at `file`, durably; returns the twins
    /// and the rows copied.
    fn copy_into(&self, file: &Path) -> Result<(u64, u64), StoreError> {
        let db = Database::create(file)?;
        let txn = db.begin_write()?;
        let mut rows = 0;
        rows += copy(&self.txn, &txn, META)?;
        let twins = copy(&self.txn, &txn, TWINS)?;
        rows += twins;
        rows += copy(&self.txn, &txn, PROPERTIES)?;
        rows += copy(&self.txn, &txn, PROPERTY_LOG)?;
        rows += copy(&self.txn, &txn, FEED)?;
        rows += copy(&self.txn, &txn, JOB_PARENTS)?;
        rows += copy(&self.txn, &txn, JOB_CHILDREN)?;
        rows += copy(&self.txn, &txn, UNUSED)?;
        rows += copy(&self.txn, &txn, PACKAGES)?;
        txn.commit()?;
        Ok((twins, rows))
    }
}

/// Copies every row of `table` from the snapshot into the backup's transaction (a table
/// the snapshot lacks is left out, as opening creates it); returns how many.
fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = match from.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut target = to.open_table(table)?;
    let mut n = 0;
    for row in source.iter()? {
        let (k, v) = row?;
        target.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}
