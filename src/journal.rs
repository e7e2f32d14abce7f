//! The job table on disk: `jobs.json`, a snapshot of the whole table, and `jobs.journal`, the
//! changes made since, one line of JSON each.
//!
//! A change is durable once its journal record is appended and fsync'd; requests that change
//! the table together share one append and one fsync (group commit): the first request to wait
//! becomes the writer and takes every record queued so far, the others wait for its fsync, and
//! whoever waits when it is done writes the next group. No thread is added and no lock is held
//! across the disk write but the file's own.
//!
//! When the journal grows past twice the size of the last snapshot (and at least
//! [`MIN_COMPACT_BYTES`]), the writer writes a new snapshot (temp file, fsync, rename, directory
//! fsync, as every file under `storage.dir`) and empties the journal. Each record carries a
//! sequence number and the snapshot the number of the last record it includes, so records left
//! behind by a stop between the two steps are skipped at start. The start reads both files and
//! writes a fresh snapshot at once, which also proves `storage.dir` writable.
//!
//! A failed append is cut back off the file, and the next write is a whole snapshot, so the
//! file never keeps half a record in its middle; the requests in the failed group get the error.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::jobs::{Jobs, RestoreError, Restored};
use crate::storage::write_atomic;

/// The journal is never compacted below this size: a snapshot costs more than many appends.
pub const MIN_COMPACT_BYTES: u64 = 1 << 20;

pub struct Journal {
    snapshot: PathBuf,
    log: PathBuf,
    file: Mutex<LogFile>,
    state: Mutex<Flushes>,
    flushed: Condvar,
}

struct LogFile {
    file: File,
    /// Bytes of whole records in the file.
    len: u64,
    /// Compact once `len` reaches this.
    compact_at: u64,
    /// The last append failed: the next write must be a snapshot.
    broken: bool,
}

#[derive(Default)]
struct Flushes {
    /// Every record up to this number has been written (or has failed).
    done: u64,
    /// A writer is at work.
    writing: bool,
    /// Recent failed groups: records in `(from, to]` were not saved, for this reason.
    failures: Vec<(u64, u64, String)>,
}

/// Failed groups remembered for their waiters; older ones have been read long since.
const FAILURES_KEPT: usize = 64;

impl Journal {
    /// Reads the job table from `dir` and writes it back as a fresh snapshot with an empty
    /// journal. The error names the file and says what to do.
    pub fn open(dir: &Path, max_ended: usize) -> Result<(Journal, Jobs, Restored), String> {
        let snapshot = dir.join("jobs.json");
        let log = dir.join("jobs.journal");
        let read = |path: &Path| match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        };
        let snapshot_bytes = read(&snapshot)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        // What the file holds now, and no more: a journal is never read past its length.
        let mut journal_bytes = Vec::new();
        file.metadata()
            .and_then(|m| (&mut file).take(m.len()).read_to_end(&mut journal_bytes))
            .map_err(|e| format!("cannot read {}: {e}", log.display()))?;
        let refuse = |path: &Path, e: String| {
            format!(
                "{}: {e}; the gateway will not start and forget its running jobs: repair the file, or move jobs.json and jobs.journal away to start with an empty job table",
                path.display()
            )
        };
        let (jobs, restored) = Jobs::restore(snapshot_bytes.as_deref(), &journal_bytes, max_ended)
            .map_err(|e| match e {
                RestoreError::Snapshot(e) => refuse(&snapshot, e),
                RestoreError::Journal(e) => refuse(&log, e),
            })?;
        let journal = Journal {
            snapshot,
            log,
            file: Mutex::new(LogFile {
                file,
                len: journal_bytes.len() as u64,
                compact_at: MIN_COMPACT_BYTES,
                broken: false,
            }),
            state: Mutex::new(Flushes::default()),
            flushed: Condvar::new(),
        };
        journal.compact(&jobs)?;
        Ok((journal, jobs, restored))
    }

    fn state(&self) -> MutexGuard<'_, Flushes> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks until journal record `seq` (from a [`Jobs`] change) is on disk.
    pub fn wait(&self, jobs: &Jobs, seq: u64) -> Result<(), String> {
        self.lead(jobs, seq, false)
    }

    /// Writes a snapshot of the whole table and empties the journal (at start and at stop, so
    /// the heartbeat counts are saved too).
    pub fn compact(&self, jobs: &Jobs) -> Result<(), String> {
        self.lead(jobs, u64::MAX, true)
    }

    /// Waits for record `seq`, writing groups while nobody else does. With `compact`, writes one
    /// snapshot itself, after any write under way.
    fn lead(&self, jobs: &Jobs, seq: u64, compact: bool) -> Result<(), String> {
        let mut state = self.state();
        loop {
            if !compact && state.done >= seq {
                return match state
                    .failures
                    .iter()
                    .find(|(from, to, _)| seq > *from && seq <= *to)
                {
                    Some((_, _, e)) => Err(e.clone()),
                    None => Ok(()),
                };
            }
            if !state.writing {
                state.writing = true;
                let from = state.done;
                drop(state);
                let mut writer = Writer {
                    journal: self,
                    from,
                    finished: false,
                };
                let (upto, result) = self.write(jobs, compact);
                writer.finish(upto, result.clone());
                if compact {
                    return result;
                }
                state = self.state();
                continue;
            }
            state = self.flushed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Appends the queued records, or writes a snapshot; says up to which record.
    fn write(&self, jobs: &Jobs, compact: bool) -> (u64, Result<(), String>) {
        let mut log = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if compact || log.broken || log.len >= log.compact_at {
            let (bytes, upto) = jobs.snapshot();
            if let Err(e) = write_atomic(&self.snapshot, &bytes) {
                log.broken = true;
                return (
                    upto,
                    Err(format!("cannot write {}: {e}", self.snapshot.display())),
                );
            }
            // The snapshot has every record; an old journal left behind is skipped at start.
            match log.file.set_len(0).and_then(|()| log.file.sync_data()) {
                Ok(()) => log.len = 0,
                Err(e) => log::warn!("cannot empty {}: {e}", self.log.display()),
            }
            log.broken = false;
            log.compact_at = MIN_COMPACT_BYTES.max(2 * bytes.len() as u64);
            return (upto, Ok(()));
        }
        let (bytes, upto) = jobs.take_pending();
        if bytes.is_empty() {
            return (upto, Ok(()));
        }
        match log
            .file
            .write_all(&bytes)
            .and_then(|()| log.file.sync_data())
        {
            Ok(()) => {
                log.len += bytes.len() as u64;
                (upto, Ok(()))
            }
            Err(e) => {
                // Cut off what may have been written, so no half record stays in the middle.
                let len = log.len;
                let _ = log.file.set_len(len);
                log.broken = true;
                (
                    upto,
                    Err(format!("cannot write {}: {e}", self.log.display())),
                )
            }
        }
    }
}

/// The writer's turn: always handed back, with its outcome, even if the write panicked.
struct Writer<'a> {
    journal: &'a Journal,
    from: u64,
    finished: bool,
}

impl Writer<'_> {
    fn finish(&mut self, upto: u64, result: Result<(), String>) {
        let mut state = self.journal.state();
        state.writing = false;
        state.done = state.done.max(upto);
        if let Err(e) = result {
            state.failures.push((self.from, upto, e));
            if state.failures.len() > FAILURES_KEPT {
                state.failures.remove(0);
            }
        }
        self.finished = true;
        drop(state);
        self.journal.flushed.notify_all();
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Nothing is known to be written: the waiters of this group fail, the next writer
            // starts again from a snapshot.
            self.journal
                .file
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .broken = true;
            let upto = self.from;
            self.finish(upto, Ok(()));
        }
    }
}
