//! Why the log did not take a record, or does not read back: [`LogError`] for a write (what
//! its client is told, and the state page's [`WriteFailure`]), [`OpenError`] for a start.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::storage::record::{self, HeaderError, SEGMENT_HEADER_BYTES};
use crate::storage::{StorageError, is_disk_full};

/// Why a record was not written, or the log could not be read.
#[derive(Debug, Clone)]
pub enum LogError {
    /// The record would take the undelivered records past the limit.
    Full { bytes: u64, limit: u64 },
    /// The record would take its client's undelivered records past the client's share
    /// (`[[auth.token]] max_spool_bytes`); the log itself has room for others.
    ShareFull {
        client: String,
        /// Bytes of the client's records not yet delivered.
        bytes: u64,
        /// Its share, in bytes.
        limit: u64,
    },
    /// A file of the log could not be written or read.
    Io {
        doing: &'static str,
        path: PathBuf,
        error: Arc<io::Error>,
    },
    /// A write failed earlier and its segment could not be cut back: nothing more is written
    /// until the gateway is restarted.
    Broken,
}

impl LogError {
    /// True when the log is full: the disk works, InfluxDB must catch up first.
    pub fn is_spool_full(&self) -> bool {
        matches!(self, LogError::Full { .. })
    }

    /// True when the client's share of the log is full: the disk and the log have room,
    /// InfluxDB must take that client's records first.
    pub fn is_share_full(&self) -> bool {
        matches!(self, LogError::ShareFull { .. })
    }

    /// The error as a client may read it: what failed and why, without the server's paths
    /// (the log has them).
    pub fn for_client(&self) -> String {
        match self {
            LogError::Io { doing, error, .. } => {
                format!("the gateway cannot {doing} its log on disk: {error}")
            }
            other => other.to_string(),
        }
    }

    /// True when a file of the log could not be written for want of room on the disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, LogError::Io { error, .. } if is_disk_full(error))
    }

    pub(super) fn io(doing: &'static str, path: &Path, error: io::Error) -> LogError {
        LogError::Io {
            doing,
            path: path.to_path_buf(),
            error: Arc::new(error),
        }
    }
}

/// A failed write to the log, for the state page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    pub at: std::time::SystemTime,
    /// The same, on the monotonic clock (how long ago, whatever the wall clock does since).
    pub since: Instant,
    /// Why, naming the file (for the operator).
    pub error: String,
    /// Why, without the file's path under `storage.dir` ([`LogError::for_client`]).
    pub for_client: String,
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Full { bytes, limit } => write!(
                f,
                "the log holds {bytes} bytes not yet delivered and is full (storage.max_spool_bytes = {limit}); InfluxDB must catch up first"
            ),
            LogError::ShareFull {
                client,
                bytes,
                limit,
            } => write!(
                f,
                "the token {client:?} has {bytes} bytes in the log not yet delivered, and its share is {limit} bytes ([[auth.token]] max_spool_bytes); InfluxDB must take them first (other tokens still write)"
            ),
            LogError::Io { doing, path, error } => {
                write!(f, "cannot {doing} {}: {error}", path.display())
            }
            LogError::Broken => f.write_str(
                "an earlier write to the log failed and could not be cut back yet; it is tried again at each request, and records are taken again once the disk works",
            ),
        }
    }
}

impl std::error::Error for LogError {}

/// Why the log does not read back at start.
#[derive(Debug)]
pub enum OpenError {
    Storage(StorageError),
    /// A record inside the log is damaged; `--repair` drops it and keeps the others.
    Damaged {
        path: PathBuf,
        offset: u64,
        /// The number of the last whole record before it (0: none).
        after_seq: u64,
        why: String,
    },
    /// A file of the log does not start with the header of a format this program reads.
    Format {
        path: PathBuf,
        why: HeaderError,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Storage(e) => e.fmt(f),
            OpenError::Damaged {
                path,
                offset,
                after_seq,
                why,
            } => write!(
                f,
                "{}: the record at byte {offset} of the file (counting its {SEGMENT_HEADER_BYTES}-byte header; after record {after_seq}) is damaged: {why}. Records after it are whole, so this is not a write cut short by a crash, and the gateway will not start and silently lose acknowledged data. Copy storage.dir for a post-mortem, then start once with --repair to drop the damaged record and keep the others",
                path.display()
            ),
            OpenError::Format { path, why } => write!(
                f,
                "{}: {why}. This program reads log segments of format {:?} versions {} to {} and delivered marks of format {:?} version {}: start the version of metrics-consumer that wrote this storage.dir until InfluxDB has its log, or give this one a new storage.dir (and move this file away if it is not metrics-consumer's)",
                path.display(),
                String::from_utf8_lossy(&record::SEGMENT_MAGIC[..5]),
                record::SEGMENT_VERSION_OLDEST,
                record::SEGMENT_VERSION,
                record::DELIVERED_FORMAT,
                record::DELIVERED_VERSION,
            ),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<StorageError> for OpenError {
    fn from(e: StorageError) -> Self {
        OpenError::Storage(e)
    }
}
