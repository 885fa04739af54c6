//! Why a store operation failed.

use crate::registry::RegistryError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why opening, reading or writing the durable store failed.
///
/// A caller's mistake (a directory that cannot hold a store, one another process has
/// open) is told apart from what the disk did (full, read-only, corrupted) and from a
/// file this version cannot read. After any write error the store is poisoned: see
/// [`StoreError::Poisoned`].
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created or is not a directory.
    Directory {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Another process (or another `Store` in this one) has the directory open.
    InUse {
        /// The store's file.
        path: PathBuf,
    },
    /// The directory or file cannot be written (read-only file system or permissions).
    ReadOnly {
        /// What the system said.
        source: io::Error,
    },
    /// The disk (or a file-size limit) has no room for the write.
    Full {
        /// What the system said.
        source: io::Error,
    },
    /// The file failed its checksums or its structure is broken (a truncated or
    /// overwritten file). Nothing was loaded and nothing written. A commit torn by a crash
    /// is not this (redb rolls back to the previous commit on opening): restore the
    /// directory from a backup, or keep the file for inspection and start afresh.
    Corrupted {
        /// What the storage engine found.
        detail: String,
    },
    /// A record decoded from the file is not one this version writes.
    BadRecord {
        /// The table.
        table: &'static str,
        /// The record's key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The registry refused a stored twin while rebuilding (a record that decodes but
    /// breaks a twin rule).
    Rejected {
        /// The registry's reason.
        source: RegistryError,
    },
    /// The file was written by a newer twinhub (or a newer storage engine) that uses a
    /// format this version cannot read.
    UnsupportedFormat {
        /// The format version found.
        found: u64,
        /// The newest format this version reads.
        supported: u64,
    },
    /// A twin's PSK key is sealed (see [`SealingKey`](super::SealingKey)) and the store
    /// was opened without a sealing key: nothing was read into memory.
    SealingKeyMissing {
        /// The twin's device id.
        key: String,
    },
    /// A twin's sealed PSK key opens with none of the store's keys (its sealing key and
    /// retired ones): another key sealed it, or the sealed key was changed or moved from
    /// another twin's head. Nothing was read into memory.
    Unsealing {
        /// The twin's device id.
        key: String,
    },
    /// A twin's head holds its PSK key plain and the store was opened to refuse that
    /// ([`StoreConfig::refuse_plain_keys`](super::StoreConfig::refuse_plain_keys)):
    /// nothing was read into memory, nothing was sealed. Either the store was never
    /// opened with its sealing key since the key was written, or someone wrote the key
    /// into the file.
    PlainKey {
        /// The twin's device id.
        key: String,
    },
    /// [`StoreSnapshot::write_to`](super::StoreSnapshot::write_to) was given a directory
    /// that holds a store file already: nothing was written (a backup never overwrites a
    /// store).
    Exists {
        /// The store file found.
        path: PathBuf,
    },
    /// Another input/output error.
    Io {
        /// What the system said.
        source: io::Error,
    },
    /// The storage engine failed in a way none of the other variants describes (an
    /// internal error: report it).
    Engine {
        /// The engine's message.
        detail: String,
    },
    /// The registry given to [`Store::commit`](super::Store::commit) is not the one this
    /// store returned (from [`Store::open`](super::Store::open), `reload` or `adopt`), or
    /// it is, but a [`Store::commit_all`](super::Store::commit_all) of another registry
    /// replaced what the disk held since (`reload` returns that one); nothing was
    /// written and the store is not poisoned. Use [`Store::adopt`](super::Store::adopt)
    /// to make another registry the store's.
    ForeignRegistry,
    /// A hub was started over this store on a registry other than the one
    /// [`Store::open`](super::Store::open) returned, while the directory holds twins:
    /// starting would have replaced them all with the registry's. Nothing was written.
    /// Start the hub on the registry `open` returned; to replace what the directory
    /// holds on purpose, call [`Store::adopt`](super::Store::adopt) with the other
    /// registry first.
    WouldReplace {
        /// The twins the directory holds.
        twins: u64,
    },
    /// An earlier write failed, so what is in memory may differ from the disk;
    /// [`Store::reload`](super::Store::reload) (or reopen the directory with
    /// [`Store::open`](super::Store::open)) to continue from what is durable.
    Poisoned,
    /// Returned by a [`Hub`](crate::hub::Hub), not by a `Store`: commits failed twice or
    /// more in a row, and the hub tries none until `retry_in` has passed (each failure
    /// rebuilds memory from the disk, see [`hub::backoff`](crate::hub::backoff)). Nothing
    /// was changed, in memory or on disk.
    BackingOff {
        /// How long until the hub tries its store again.
        retry_in: std::time::Duration,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Directory { path, .. } => {
                write!(f, "cannot use {} as a data directory", path.display())
            }
            StoreError::InUse { path } => write!(f, "{} is open elsewhere", path.display()),
            StoreError::ReadOnly { .. } => f.write_str("the data directory is read-only"),
            StoreError::Full { .. } => f.write_str("no space left for the store's write"),
            StoreError::Corrupted { detail } => write!(f, "the store file is corrupted: {detail}"),
            StoreError::BadRecord { table, key, detail } => {
                write!(f, "bad record {key:?} in table {table}: {detail}")
            }
            StoreError::Rejected { .. } => f.write_str("a stored twin was refused on rebuild"),
            StoreError::UnsupportedFormat { found, supported } => write!(
                f,
                "the store file has format {found}, this version reads up to {supported}"
            ),
            StoreError::SealingKeyMissing { key } => write!(
                f,
                "the PSK key of {key:?} is sealed: open the store with its sealing key"
            ),
            StoreError::Unsealing { key } => write!(
                f,
                "the PSK key of {key:?} does not open with this sealing key (another key, or a changed record)"
            ),
            StoreError::PlainKey { key } => write!(
                f,
                "the PSK key of {key:?} is stored unsealed, which this store refuses \
                 (StoreConfig::refuse_plain_keys)"
            ),
            StoreError::Exists { path } => write!(
                f,
                "{} exists: a backup never overwrites a store",
                path.display()
            ),
            StoreError::Io { .. } => f.write_str("store input/output failed"),
            StoreError::Engine { detail } => write!(f, "storage engine error: {detail}"),
            StoreError::ForeignRegistry => {
                f.write_str("the registry is not the one this store returned; adopt it first")
            }
            StoreError::WouldReplace { twins } => write!(
                f,
                "the directory holds {twins} twins and the hub was given another registry \
                 than Store::open returned (Store::adopt replaces them on purpose)"
            ),
            StoreError::Poisoned => {
                f.write_str("an earlier store write failed; reopen the data directory")
            }
            StoreError::BackingOff { retry_in } => write!(
                f,
                "store writes keep failing; the hub tries again in {} ms",
                retry_in.as_millis()
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Directory { source, .. }
            | StoreError::ReadOnly { source }
            | StoreError::Full { source }
            | StoreError::Io { source } => Some(source),
            StoreError::Rejected { source } => Some(source),
            _ => None,
        }
    }
}

/// Sorts an I/O error by what the caller can do about it.
pub(crate) fn from_io(source: io::Error) -> StoreError {
    // ENOSPC, EFBIG (a file-size limit), EDQUOT.
    const NO_SPACE: [i32; 3] = [28, 27, 122];
    match source.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            StoreError::ReadOnly { source }
        }
        io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge | io::ErrorKind::QuotaExceeded => {
            StoreError::Full { source }
        }
        _ if source.raw_os_error().is_some_and(|e| NO_SPACE.contains(&e)) => {
            StoreError::Full { source }
        }
        _ => StoreError::Io { source },
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Io(source) => from_io(source),
            redb::Error::Corrupted(detail) => StoreError::Corrupted { detail },
            redb::Error::UpgradeRequired(found) => StoreError::UnsupportedFormat {
                found: found.into(),
                supported: super::FORMAT,
            },
            other => StoreError::Engine {
                detail: other.to_string(),
            },
        }
    }
}

macro_rules! via_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}

via_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);
