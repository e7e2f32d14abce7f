//! The job table's snapshot on disk, `jobs.json`: written whole (through the room kept for it,
//! so a full disk can still be freed), read at start together with the log's changes, and the
//! room for the next one kept as the table grows. The format is `journal`'s; this module does
//! the I/O, through `storage`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::state::jobs::Jobs;
use crate::state::journal::{Place, Restore, RestoreError, Restored};
use crate::state::schema::Known;
use crate::storage::log::WriteFailure;
use crate::storage::{self, DirHandle, RESERVE_FILE, RESERVE_SLACK, write_reserved};
use crate::sync::lock;

/// The snapshot's file name in `storage.dir`.
pub const SNAPSHOT_FILE: &str = "jobs.json";

/// Why the job table could not be read or saved, naming the file.
#[derive(Debug, Clone)]
pub enum JournalError {
    /// A file could not be opened, read or written (`doing` says which).
    Io {
        doing: &'static str,
        path: PathBuf,
        error: Arc<io::Error>,
    },
    /// The table on disk does not read back: the start stops rather than forget runs.
    Damaged { path: PathBuf, error: RestoreError },
}

impl JournalError {
    /// True when the file could not be written for want of room on the disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, JournalError::Io { error, .. } if storage::is_disk_full(error))
    }

    pub(crate) fn io(doing: &'static str, path: &Path, error: io::Error) -> JournalError {
        JournalError::Io {
            doing,
            path: path.to_path_buf(),
            error: Arc::new(error),
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { doing, path, error } => {
                write!(f, "cannot {doing} {}: {error}", path.display())
            }
            JournalError::Damaged { path, error } => write!(
                f,
                "{}: {error}; the gateway will not start and forget its running jobs: repair the file, or move it away to start with an empty job table",
                path.display()
            ),
        }
    }
}

impl std::error::Error for JournalError {}

/// Where the job table is saved: `storage.dir/jobs.json`, written relative to the handle of
/// `storage.dir` opened at the start.
pub struct Snapshots {
    dir: DirHandle,
    /// The snapshot's path, for messages.
    path: PathBuf,
    /// What the reserve must hold for the next snapshot, and what it holds.
    room: std::sync::Mutex<Room>,
    /// Held across every change of the reserve's file (growing it, giving it up for a
    /// snapshot), never by a register that finds the reserve large enough.
    reserve_turn: std::sync::Mutex<()>,
    /// The snapshot's failures as they are logged: at once, then once a minute while they
    /// repeat.
    pub errors: storage::Repeats,
    /// The last failed growth of the reserve, and the size it failed to reach (bytes), while
    /// the reserve holds less: what would grow the table that far is answered 503
    /// `storage_error` meanwhile ([`Snapshots::failure`]).
    failure: std::sync::Mutex<Option<(WriteFailure, u64)>>,
}

/// The sizes behind the room kept for the next snapshot, in bytes.
#[derive(Debug, Default, Clone, Copy)]
struct Room {
    /// The last snapshot's size, and the table's ([`Jobs::bytes`]) when it was taken.
    snapshot: u64,
    table: u64,
    /// The reserve's size (`storage.dir/reserve`).
    reserve: u64,
}

impl Room {
    /// The next snapshot's size once the table holds `table` bytes: the last one's, plus what
    /// the table grew by since (a run's weight, its heartbeat line and the fields it is encoded
    /// from, is more than its entry in `jobs.json`), plus [`RESERVE_SLACK`].
    fn needed(&self, table: u64) -> u64 {
        self.snapshot + table.saturating_sub(self.table) + RESERVE_SLACK
    }
}

/// What the start found of the job table.
#[derive(Debug)]
pub struct Loaded {
    pub jobs: Jobs,
    pub restored: Restored,
}

impl Snapshots {
    /// The snapshot of the table in `storage_dir` (its handle, opened at the start).
    pub fn new(storage_dir: DirHandle) -> Snapshots {
        let room = Room {
            reserve: storage::reserve_len(&storage_dir),
            // Until the first snapshot is written, the one on disk tells what it takes.
            snapshot: storage_dir
                .open_read(SNAPSHOT_FILE)
                .and_then(|f| f.metadata())
                .map_or(0, |m| m.len()),
            table: 0,
        };
        Snapshots {
            path: storage_dir.join(SNAPSHOT_FILE),
            dir: storage_dir,
            room: std::sync::Mutex::new(room),
            reserve_turn: std::sync::Mutex::new(()),
            errors: storage::Repeats::new(module_path!()),
            failure: std::sync::Mutex::new(None),
        }
    }

    /// The last failed growth of the reserve (a full disk), while the reserve holds less than
    /// that growth asked for: registers and progress that grow the table that far are refused
    /// meanwhile, while the log may still take other writes. It ends when a register, a
    /// progress or a snapshot finds the room. For the state page, beside the log's own failed
    /// write.
    pub fn failure(&self) -> Option<WriteFailure> {
        lock(&self.failure).as_ref().map(|(told, _)| told.clone())
    }

    /// Starts rebuilding the table: reads the snapshot, if there is one, as it streams in. The
    /// log's changes go to [`Restore::log_changes`] as the log is opened; then
    /// [`Snapshots::finish`].
    pub fn read(&self) -> Result<Restore, JournalError> {
        let snapshot = match self.dir.open_read(SNAPSHOT_FILE) {
            Ok(file) => Some(io::BufReader::with_capacity(1 << 16, file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(JournalError::io("open", &self.path, e)),
        };
        Restore::from_snapshot(snapshot).map_err(|error| JournalError::Damaged {
            path: self.path.clone(),
            error,
        })
    }

    /// Finishes rebuilding the table, and reports the first change that did not read back,
    /// naming its file (`log_dir` for the log's).
    pub fn finish(
        &self,
        restore: Restore,
        log_dir: &Path,
        max_ended: usize,
    ) -> Result<Loaded, JournalError> {
        let (jobs, restored) =
            restore
                .finish(max_ended)
                .map_err(|error| JournalError::Damaged {
                    path: match error.place() {
                        Place::Snapshot => self.path.clone(),
                        Place::Log => log_dir.to_path_buf(),
                    },
                    error,
                })?;
        // The snapshot on disk is taken as the table's size now: the next snapshot needs room
        // for what the table grows by from here.
        lock(&self.room).table = jobs.bytes() as u64;
        Ok(Loaded { jobs, restored })
    }

    /// Rebuilds the table from the snapshot and the log's changes (`log_changes`, journal lines in the log's order; `log_dir` names them in
    /// errors).
    #[cfg(test)]
    pub fn load(
        &self,
        log_changes: &[u8],
        log_dir: &Path,
        max_ended: usize,
    ) -> Result<Loaded, JournalError> {
        let mut restore = self.read()?;
        restore.log_changes(log_changes, &mut |_| {});
        self.finish(restore, log_dir, max_ended)
    }

    /// Writes the whole table, and what the gateway knows of InfluxDB's schema; returns the
    /// number up to which it holds every change, and its size in bytes. With `lets_go` (whether
    /// a snapshot holding every change up to a number lets the log delete a segment), a full
    /// disk gives up the room kept for it ([`write_reserved`]) when this one does.
    /// `durable` runs once the table is taken and before it is written: it makes durable
    /// elsewhere what the log's records up to the snapshot carry besides the table (the runs'
    /// results); its error is the snapshot's, and nothing is written then.
    pub fn write(
        &self,
        jobs: &Jobs,
        schema: &Known,
        lets_go: Option<&dyn Fn(u64) -> bool>,
        durable: &dyn Fn() -> Result<(), JournalError>,
    ) -> Result<(u64, u64), JournalError> {
        let _turn = lock(&self.reserve_turn);
        let table = jobs.bytes() as u64;
        let (bytes, covers) = jobs.snapshot_with(schema);
        durable()?;
        let use_reserve = lets_go.is_some_and(|lets_go| lets_go(covers));
        let reserve = write_reserved(&self.dir, SNAPSHOT_FILE, &bytes, use_reserve)
            .map_err(|e| JournalError::io("write", &self.path, e))?;
        let reserve = self.grow_as_failed(reserve);
        *lock(&self.room) = Room {
            snapshot: bytes.len() as u64,
            table,
            reserve,
        };
        self.room_found(reserve);
        Ok((covers, bytes.len() as u64))
    }

    /// Keeps room for the next snapshot once the table holds `table` bytes
    /// ([`Jobs::bytes`] with what a request adds): grows the reserve when it would hold less
    /// than that snapshot may take. An error means the disk has no room for that: the request
    /// that would grow the table must be refused, or the disk could fill with no way out.
    pub fn keep_room(&self, table: u64) -> Result<(), JournalError> {
        let room = *lock(&self.room);
        if room.reserve >= room.needed(table) {
            self.room_found(room.reserve);
            return Ok(());
        }
        let _turn = lock(&self.reserve_turn);
        let room = *lock(&self.room);
        let needed = room.needed(table);
        let grown = storage::keep_reserve(&self.dir, room.reserve, needed);
        let mut now = lock(&self.room);
        match grown {
            Ok(len) => {
                now.reserve = len;
                drop(now);
                self.room_found(len);
                Ok(())
            }
            Err(e) => {
                now.reserve = storage::reserve_len(&self.dir);
                drop(now);
                let told = WriteFailure {
                    at: std::time::SystemTime::now(),
                    since: std::time::Instant::now(),
                    for_client: format!(
                        "the gateway cannot keep room on disk for the next snapshot of its job table: {e}"
                    ),
                    error: format!(
                        "cannot keep room for the next snapshot of the job table in {}: {e}",
                        self.dir.join(RESERVE_FILE).display()
                    ),
                };
                *lock(&self.failure) = Some((told, needed));
                Err(JournalError::io(
                    "keep room for the next snapshot of the job table in",
                    &self.dir.join(RESERVE_FILE),
                    e,
                ))
            }
        }
    }

    /// The reserve holds `reserve` bytes: a failure to grow it to no more than that is over.
    fn room_found(&self, reserve: u64) {
        let mut failure = lock(&self.failure);
        if failure
            .as_ref()
            .is_some_and(|(_, needed)| *needed <= reserve)
        {
            *failure = None;
        }
    }

    /// After a snapshot, with the reserve's turn held: a growth that failed is tried again
    /// (the disk may have been freed since), so that the failure is not told after its cause
    /// is gone, nor until the next register. The reserve's size after it.
    fn grow_as_failed(&self, reserve: u64) -> u64 {
        let Some(needed) = lock(&self.failure).as_ref().map(|(_, needed)| *needed) else {
            return reserve;
        };
        if needed <= reserve {
            return reserve;
        }
        storage::keep_reserve(&self.dir, reserve, needed).unwrap_or(reserve)
    }

    /// The bytes the reserve holds, as last seen.
    #[cfg(test)]
    pub fn reserve(&self) -> u64 {
        lock(&self.room).reserve
    }
}

// The format.

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{SmallDisk, fill, root};

    /// A reserve that cannot grow refuses what would grow the table while the log may still
    /// take other writes: the state page must say why, until the room is found again.
    #[test]
    fn a_reserve_that_cannot_grow_is_told_until_it_has_room_again() {
        let disk = SmallDisk::new("reserve-failure", "4m");
        let snapshots = Snapshots::new(root(&disk.0));
        snapshots.keep_room(1 << 10).unwrap();
        assert_eq!(snapshots.failure(), None);
        fill(disk.0.path());
        let err = snapshots.keep_room(2 << 20).unwrap_err();
        assert!(err.is_disk_full(), "{err}");
        let failure = snapshots.failure().expect("told");
        let dir = disk.0.path().display().to_string();
        assert!(failure.error.contains(&dir), "{failure:?}");
        assert!(failure.error.contains("No space left"), "{failure:?}");
        assert!(!failure.for_client.contains(&dir), "{failure:?}");
        assert!(failure.for_client.contains("No space left"), "{failure:?}");
        // Room for a smaller table (a progress) does not end it: a register still fails.
        snapshots.keep_room(1 << 10).unwrap();
        assert!(snapshots.failure().is_some());
        // Room for it found: it is over.
        std::fs::remove_file(disk.0.path().join("filler")).unwrap();
        snapshots.keep_room(2 << 20).unwrap();
        assert_eq!(snapshots.failure(), None);
    }

    /// A register asks room for the table and its run, a running run's progress only for the
    /// table: on a full disk the first fails and the second passes. The failure stays told
    /// while the larger need cannot be met.
    #[test]
    fn a_smaller_need_met_does_not_hide_a_larger_one_that_still_fails() {
        let disk = SmallDisk::new("reserve-failure-flicker", "4m");
        let snapshots = Snapshots::new(root(&disk.0));
        snapshots.keep_room(1 << 10).unwrap();
        fill(disk.0.path());
        snapshots.keep_room(8 << 20).unwrap_err();
        snapshots.keep_room(1 << 10).unwrap();
        assert!(
            snapshots.keep_room(8 << 20).is_err(),
            "registers still refused"
        );
        snapshots.keep_room(1 << 10).unwrap();
        assert!(
            snapshots.failure().is_some(),
            "told while registers are refused"
        );
    }

    /// The disk freed, a snapshot (which comes without any register) grows the reserve as the
    /// failed growth asked: the failure is not told after its cause is gone.
    #[test]
    fn a_snapshot_after_the_disk_is_freed_ends_the_failure() {
        let disk = SmallDisk::new("reserve-failure-stale", "4m");
        let snapshots = Snapshots::new(root(&disk.0));
        let jobs = Jobs::new(10);
        snapshots.keep_room(1 << 10).unwrap();
        fill(disk.0.path());
        snapshots.keep_room(2 << 20).unwrap_err();
        assert!(snapshots.failure().is_some());
        std::fs::remove_file(disk.0.path().join("filler")).unwrap();
        snapshots
            .write(&jobs, &Known::new(), None, &|| Ok(()))
            .unwrap();
        assert_eq!(snapshots.failure(), None, "the reserve has room again");
        // The room the register asked for is there: it would not be refused now.
        snapshots.keep_room(2 << 20).unwrap();
    }
}
