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
//! writes a fresh snapshot and an empty journal at once.
//!
//! The journal file is filled with zeros ahead of the records, 1 MiB at a time, and records
//! overwrite the zeros.
//! An fsync of data written inside the file's length is a flush of those blocks alone; an
//! append that grows the file also has the filesystem commit its metadata, which costs several
//! times more (measured on ext4: 0.2 ms against 1.2 ms while the machine is busy). At start the
//! records end at the first zero byte; anything after it belongs to a write that was never
//! fsync'd whole, so never acknowledged.
//!
//! After a failed write the next write is a whole snapshot, which also starts a fresh journal,
//! so the file never keeps half a record in its middle; the requests in the failed group get
//! the error. A start whose first snapshot fails (a full or read-only disk) goes on: the state
//! page and the commits of runs still answer, and a register answers 503 until the disk works.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::delivery::spool::write_atomic;
use crate::state::jobs::{Jobs, RestoreError, Restored};

/// The journal is never compacted below this size: a snapshot costs more than many appends.
const MIN_COMPACT_BYTES: u64 = 1 << 20;
/// The journal file grows by this much of zeros at a time.
const ZERO_FILL_BYTES: u64 = 1 << 20;

pub struct Journal {
    snapshot: PathBuf,
    log: PathBuf,
    file: Mutex<LogFile>,
    state: Mutex<Flushes>,
    flushed: Condvar,
}

struct LogFile {
    file: File,
    /// Bytes of whole records at the start of the file.
    len: u64,
    /// Bytes in the file: the records, then zeros.
    size: u64,
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
            .truncate(false)
            .read(true)
            .write(true)
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
                len: 0,
                size: 0,
                compact_at: MIN_COMPACT_BYTES,
                broken: true,
            }),
            state: Mutex::new(Flushes::default()),
            flushed: Condvar::new(),
        };
        if let Err(e) = journal.compact(&jobs) {
            log::error!("{e}; registers are refused until the job table can be saved");
        }
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
            // The snapshot has every record, so the change is saved even if no new journal can
            // be started; records of the old one are skipped at start.
            log.compact_at = MIN_COMPACT_BYTES.max(2 * bytes.len() as u64);
            match log.restart() {
                Ok(()) => log.broken = false,
                Err(e) => log::warn!("cannot start a new {}: {e}", self.log.display()),
            }
            return (upto, Ok(()));
        }
        let (bytes, upto) = jobs.take_pending();
        if bytes.is_empty() {
            return (upto, Ok(()));
        }
        match log.append(&bytes) {
            Ok(()) => (upto, Ok(())),
            Err(e) => {
                // What may have been written stays after the last whole record, where a start
                // takes it for an unfinished write; the next write starts a new journal.
                log.broken = true;
                (
                    upto,
                    Err(format!("cannot write {}: {e}", self.log.display())),
                )
            }
        }
    }
}

impl LogFile {
    /// Writes records over the zeros after the last ones, and fsyncs them.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self.len + bytes.len() as u64;
        if end > self.size {
            self.zero_fill(end.max(self.size + ZERO_FILL_BYTES))?;
        }
        self.file.write_all_at(bytes, self.len)?;
        self.file.sync_data()?;
        self.len = end;
        Ok(())
    }

    /// Empties the journal. The zeros are written by the first append, not here: a start
    /// then answers its first ping without waiting for a megabyte to reach the disk.
    fn restart(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        self.size = 0;
        Ok(())
    }

    /// Grows the file with written zeros (not a hole, which the filesystem would still have to
    /// allocate on the first write) to `size` bytes, and fsyncs it.
    fn zero_fill(&mut self, size: u64) -> io::Result<()> {
        static CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut at = self.size;
        while at < size {
            let n = (size - at).min(CHUNK.len() as u64);
            self.file.write_all_at(&CHUNK[..n as usize], at)?;
            at += n;
        }
        self.file.sync_all()?;
        self.size = size;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::tests::Dir;
    use crate::ingest::line_protocol::FieldValue;
    use crate::ingest::points::Run;
    use crate::state::jobs::Job;
    use uuid::Uuid;

    fn register(jobs: &Jobs, n: u128) -> u64 {
        let run = Run {
            uuid: Uuid::from_u128(n),
            host: "lg-1".into(),
            tags: vec![("mode".into(), "single".into())],
            started_ms: 1,
        };
        let fields = vec![("note".into(), FieldValue::Str("x".repeat(200)))];
        jobs.reserve(usize::MAX)
            .unwrap()
            .fill(Job::running(run, fields, 1))
    }

    fn running(jobs: &Jobs) -> Vec<Uuid> {
        let mut list: Vec<Uuid> = jobs
            .is_running()
            .into_iter()
            .filter(|(_, running)| *running)
            .map(|(uuid, _)| uuid)
            .collect();
        list.sort();
        list
    }

    #[test]
    fn the_journal_grows_over_zeros_is_folded_into_a_snapshot_and_reads_back() {
        let dir = Dir::new("journal-compact");
        let (journal, jobs, _) = Journal::open(&dir.0, 100).unwrap();
        let journal_file = dir.0.join("jobs.journal");
        let mut snapshots = 0;
        let mut last_len = 0;
        // About 400 bytes a record: past MIN_COMPACT_BYTES several times over.
        for n in 1..=8000 {
            let seq = register(&jobs, n);
            journal.wait(&jobs, seq).unwrap();
            let log = journal.file.lock().unwrap();
            assert!(
                log.len <= log.size,
                "records stay inside the zero-filled file"
            );
            if log.len < last_len {
                snapshots += 1;
            }
            last_len = log.len;
            let on_disk = std::fs::metadata(&journal_file).unwrap().len();
            assert_eq!(
                on_disk, log.size,
                "the file is exactly the zero-filled size"
            );
        }
        assert!(snapshots >= 2, "{snapshots} snapshots");
        // A stop without a snapshot: what the journal holds since the last one reads back.
        drop(journal);
        let (_, again, restored) = Journal::open(&dir.0, 100).unwrap();
        assert!(!restored.torn_tail);
        assert!(restored.replayed > 0, "records after the last snapshot");
        assert_eq!(running(&again), running(&jobs));
        assert_eq!(running(&again).len(), 8000);
    }

    #[test]
    fn a_failed_append_fails_its_group_and_the_next_write_is_a_snapshot() {
        let dir = Dir::new("journal-fail");
        let (journal, jobs, _) = Journal::open(&dir.0, 100).unwrap();
        let seq = register(&jobs, 1);
        journal.wait(&jobs, seq).unwrap();
        // The journal file goes away under the gateway's feet: writes to a descriptor opened
        // read-only fail.
        journal.file.lock().unwrap().file = File::open(dir.0.join("jobs.journal")).unwrap();
        let seq = register(&jobs, 2);
        let err = journal.wait(&jobs, seq).unwrap_err();
        assert!(err.contains("jobs.journal"), "{err}");
        assert!(journal.file.lock().unwrap().broken);
        // The next change is saved by a snapshot, which has both runs.
        let seq = register(&jobs, 3);
        journal.wait(&jobs, seq).unwrap();
        drop(journal);
        let (_, again, _) = Journal::open(&dir.0, 100).unwrap();
        assert_eq!(
            running(&again),
            [1, 2, 3].map(Uuid::from_u128),
            "the snapshot after the failure has every change"
        );
    }
}
