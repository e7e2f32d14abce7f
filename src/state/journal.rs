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
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::delivery::spool::write_atomic;
use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ingest::line_protocol::{self, FieldValue};
use crate::ingest::points::Run;
use crate::state::jobs::{Job, Jobs, State};

/// The journal is never compacted below this size: a snapshot costs more than many appends.
const MIN_COMPACT_BYTES: u64 = 1 << 20;
/// The journal file grows by this much of zeros at a time.
const ZERO_FILL_BYTES: u64 = 1 << 20;

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
    fn io(doing: &'static str, path: &Path, error: io::Error) -> JournalError {
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
                "{}: {error}; the gateway will not start and forget its running jobs: repair the file, or move jobs.json and jobs.journal away to start with an empty job table",
                path.display()
            ),
        }
    }
}

impl std::error::Error for JournalError {}

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
    failures: Vec<(u64, u64, JournalError)>,
}

/// Failed groups remembered for their waiters; older ones have been read long since.
const FAILURES_KEPT: usize = 64;

impl Journal {
    /// Reads the job table from `dir` and writes it back as a fresh snapshot with an empty
    /// journal. The error names the file and says what to do.
    pub fn open(dir: &Path, max_ended: usize) -> Result<(Journal, Jobs, Restored), JournalError> {
        let snapshot = dir.join("jobs.json");
        let log = dir.join("jobs.journal");
        let read = |path: &Path| match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JournalError::io("read", path, e)),
        };
        let snapshot_bytes = read(&snapshot)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&log)
            .map_err(|e| JournalError::io("open", &log, e))?;
        // What the file holds now, and no more: a journal is never read past its length.
        let mut journal_bytes = Vec::new();
        file.metadata()
            .and_then(|m| (&mut file).take(m.len()).read_to_end(&mut journal_bytes))
            .map_err(|e| JournalError::io("read", &log, e))?;
        let (jobs, restored) = restore(snapshot_bytes.as_deref(), &journal_bytes, max_ended)
            .map_err(|error| JournalError::Damaged {
                path: if error.in_snapshot() {
                    snapshot.clone()
                } else {
                    log.clone()
                },
                error,
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
    pub fn wait(&self, jobs: &Jobs, seq: u64) -> Result<(), JournalError> {
        self.lead(jobs, seq, false)
    }

    /// Writes a snapshot of the whole table and empties the journal (at start and at stop, so
    /// the heartbeat counts are saved too).
    pub fn compact(&self, jobs: &Jobs) -> Result<(), JournalError> {
        self.lead(jobs, u64::MAX, true)
    }

    /// Waits for record `seq`, writing groups while nobody else does. With `compact`, writes one
    /// snapshot itself, after any write under way.
    fn lead(&self, jobs: &Jobs, seq: u64, compact: bool) -> Result<(), JournalError> {
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
    fn write(&self, jobs: &Jobs, compact: bool) -> (u64, Result<(), JournalError>) {
        let mut log = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if compact || log.broken || log.len >= log.compact_at {
            let (bytes, upto) = jobs.snapshot();
            if let Err(e) = write_atomic(&self.snapshot, &bytes) {
                log.broken = true;
                return (upto, Err(JournalError::io("write", &self.snapshot, e)));
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
                (upto, Err(JournalError::io("write", &self.log, e)))
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
    fn finish(&mut self, upto: u64, result: Result<(), JournalError>) {
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

// The format of both files.

/// Rebuilds the table from `jobs.json` (if there is one) and the journal records after it.
/// Anything that does not check out is an error, never an empty table: forgetting running
/// jobs silently is worse than not starting. The one exception is the journal's end: a last
/// line that does not parse, or bytes after the zero padding, were being written when the
/// process stopped, so they were never acknowledged.
pub fn restore(
    snapshot: Option<&[u8]>,
    journal: &[u8],
    max_ended: usize,
) -> Result<(Jobs, Restored), RestoreError> {
    let mut jobs: HashMap<Uuid, Job> = HashMap::new();
    let mut seq = 0;
    if let Some(bytes) = snapshot {
        let saved: SavedTable =
            serde_json::from_slice(bytes).map_err(|e| RestoreError::NotATable(e.to_string()))?;
        if saved.version != 1 {
            return Err(RestoreError::UnknownVersion(saved.version));
        }
        for s in saved.jobs {
            let uuid = s.uuid;
            let job = s
                .into_job()
                .map_err(|why| RestoreError::BadSavedJob { uuid, why })?;
            jobs.insert(uuid, job);
        }
        seq = saved.journal_seq;
    }
    let mut restored = Restored::default();
    // The journal file is zero-filled ahead of the records (see `journal`); what follows
    // the first zero byte was never fsync'd as a whole, so never acknowledged.
    let end = journal
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(journal.len());
    if journal[end..].iter().any(|&b| b != 0) {
        restored.torn_tail = true;
    }
    let mut rest = &journal[..end];
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        let record = match serde_json::from_slice::<SavedRecord>(line) {
            Ok(record) => record,
            Err(_) if after.is_empty() => {
                restored.torn_tail = true;
                break;
            }
            Err(e) => {
                return Err(RestoreError::BadRecord {
                    line: line_no,
                    why: e.to_string(),
                });
            }
        };
        if record.seq <= seq {
            // Already in the snapshot (the journal is emptied after each snapshot, but a
            // stop between the two leaves the old records behind).
            continue;
        }
        seq = record.seq;
        restored.replayed += 1;
        match (record.put, record.del) {
            (Some(saved), None) => {
                let uuid = saved.uuid;
                let job = saved
                    .into_job()
                    .map_err(|why| RestoreError::BadRecordedJob {
                        line: line_no,
                        uuid,
                        why,
                    })?;
                jobs.insert(uuid, job);
            }
            (None, Some(uuid)) => {
                jobs.remove(&uuid);
            }
            _ => return Err(RestoreError::NotOneChange { line: line_no }),
        }
    }
    Ok((Jobs::from_saved(jobs, seq, max_ended), restored))
}

/// The bytes of `jobs.json`: every job of `jobs`, and the number of the last journal record
/// they include. A job in the middle of a commit is saved as it was before the commit: the
/// commit has not been answered yet.
pub fn encode_snapshot<'a>(seq: u64, jobs: impl Iterator<Item = &'a Job>) -> Vec<u8> {
    let jobs: Vec<SavedView> = jobs.map(SavedView::of).collect();
    // Serializing plain data into a Vec cannot fail.
    serde_json::to_vec(&SnapshotView {
        version: 1,
        journal_seq: seq,
        jobs,
    })
    .unwrap_or_default()
}

/// Why the job table could not be rebuilt from its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    /// `jobs.json` is not a job table; serde_json's description of where.
    NotATable(String),
    /// `jobs.json` was written by a version of the program this one does not know.
    UnknownVersion(u32),
    /// A job of `jobs.json` breaks a rule a request would be held to (the file was edited).
    BadSavedJob { uuid: Uuid, why: String },
    /// Line `line` of `jobs.journal` (1-based), followed by more records, does not parse.
    BadRecord { line: usize, why: String },
    /// A job in line `line` of `jobs.journal` breaks a rule a request would be held to.
    BadRecordedJob {
        line: usize,
        uuid: Uuid,
        why: String,
    },
    /// Line `line` of `jobs.journal` has neither or both of `put` and `del`.
    NotOneChange { line: usize },
}

impl RestoreError {
    /// Whether the error is in the snapshot (`jobs.json`) rather than the journal.
    pub fn in_snapshot(&self) -> bool {
        matches!(
            self,
            RestoreError::NotATable(_)
                | RestoreError::UnknownVersion(_)
                | RestoreError::BadSavedJob { .. }
        )
    }
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::NotATable(why) => write!(f, "not a job table ({why})"),
            RestoreError::UnknownVersion(v) => {
                write!(f, "version {v} is not known to this program")
            }
            RestoreError::BadSavedJob { uuid, why } => write!(f, "job {uuid}: {why}"),
            RestoreError::BadRecord { line, why } => {
                write!(f, "line {line} is not a journal record ({why})")
            }
            RestoreError::BadRecordedJob { line, uuid, why } => {
                write!(f, "line {line}, job {uuid}: {why}")
            }
            RestoreError::NotOneChange { line } => write!(
                f,
                "line {line} must have exactly one of \"put\" and \"del\""
            ),
        }
    }
}

/// What [`restore`] found besides the table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Journal records applied over the snapshot.
    pub replayed: usize,
    /// The journal ended in a record that was being written when the process stopped; it was
    /// never acknowledged and is left out.
    pub torn_tail: bool,
}

/// Appends one journal record and its newline to `out`: `{"seq":N,"put":{job}}` (the job's
/// whole saved state) or, when `job` is `None`, `{"seq":N,"del":"uuid"}`.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, job: Option<&Job>, uuid: &Uuid) {
    let record = RecordView {
        seq,
        put: job.map(SavedView::of),
        del: if job.is_none() { Some(*uuid) } else { None },
    };
    // Serializing plain data into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &record);
    out.push(b'\n');
}

#[derive(Deserialize)]
struct SavedTable {
    version: u32,
    /// The last journal record included (files from before the journal have none).
    #[serde(default)]
    journal_seq: u64,
    jobs: Vec<Saved>,
}

#[derive(Serialize)]
struct SnapshotView<'a> {
    version: u32,
    journal_seq: u64,
    jobs: Vec<SavedView<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedRecord {
    seq: u64,
    #[serde(default)]
    put: Option<Saved>,
    #[serde(default)]
    del: Option<Uuid>,
}

#[derive(Serialize)]
struct RecordView<'a> {
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    put: Option<SavedView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    del: Option<Uuid>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    uuid: Uuid,
    host: String,
    tags: Vec<(String, String)>,
    started_ms: i64,
    fields: Vec<(String, SavedField)>,
    last_seen_ms: i64,
    state: SavedState,
    heartbeats: u64,
}

/// A job as it is saved, borrowed from the table: the same JSON as [`Saved`].
#[derive(Serialize)]
struct SavedView<'a> {
    uuid: Uuid,
    host: &'a str,
    tags: &'a [(String, String)],
    started_ms: i64,
    fields: Vec<(&'a str, SavedFieldView<'a>)>,
    last_seen_ms: i64,
    state: SavedState,
    heartbeats: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum SavedField {
    Float(f64),
    Bool(bool),
    Str(String),
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum SavedFieldView<'a> {
    Float(f64),
    Bool(bool),
    Str(&'a str),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SavedState {
    Running,
    Finished { at_ms: i64 },
    Expired { at_ms: i64 },
}

impl<'a> SavedView<'a> {
    fn of(job: &'a Job) -> SavedView<'a> {
        let state = match job.state {
            State::Running | State::Committing { expired: false } => SavedState::Running,
            State::Committing { expired: true } => SavedState::Expired {
                at_ms: job.last_seen_ms,
            },
            State::Finished { at_ms } => SavedState::Finished { at_ms },
            State::Expired { at_ms } => SavedState::Expired { at_ms },
        };
        SavedView {
            uuid: job.run.uuid,
            host: &job.run.host,
            tags: &job.run.tags,
            started_ms: job.run.started_ms,
            fields: job
                .fields
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        FieldValue::Float(f) => SavedFieldView::Float(*f),
                        FieldValue::Bool(b) => SavedFieldView::Bool(*b),
                        FieldValue::Str(s) => SavedFieldView::Str(s),
                    };
                    (k.as_str(), v)
                })
                .collect(),
            last_seen_ms: job.last_seen_ms,
            state,
            heartbeats: job.heartbeats,
        }
    }
}

impl Saved {
    /// Checks names and values as a request's would be: the file may have been edited by hand.
    fn into_job(self) -> Result<Job, String> {
        line_protocol::check_tag_value(&self.host).map_err(|e| format!("host: {e}"))?;
        for (k, v) in &self.tags {
            line_protocol::check_name(k).map_err(|e| format!("tag {k:?}: {e}"))?;
            line_protocol::check_tag_value(v).map_err(|e| format!("tag {k:?}: {e}"))?;
        }
        let mut fields = Vec::with_capacity(self.fields.len());
        for (k, v) in self.fields {
            line_protocol::check_name(&k).map_err(|e| format!("field {k:?}: {e}"))?;
            let v = match v {
                SavedField::Float(f) if f.is_finite() => FieldValue::Float(f),
                SavedField::Float(_) => return Err(format!("field {k:?}: is not a finite number")),
                SavedField::Bool(b) => FieldValue::Bool(b),
                SavedField::Str(s) => FieldValue::Str(s),
            };
            fields.push((k, v));
        }
        let run = Run {
            uuid: self.uuid,
            host: self.host,
            tags: self.tags,
            started_ms: self.started_ms,
        };
        let mut job = Job::running(run, fields, self.last_seen_ms);
        job.state = match self.state {
            SavedState::Running => State::Running,
            SavedState::Finished { at_ms } => State::Finished { at_ms },
            SavedState::Expired { at_ms } => State::Expired { at_ms },
        };
        job.heartbeats = self.heartbeats;
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::tests::Dir;
    use crate::ingest::line_protocol::FieldValue;
    use crate::ingest::points::Run;
    use crate::state::jobs::Job;
    use crate::state::jobs::tests::{job, job_with, rows};

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
        let err = journal.wait(&jobs, seq).unwrap_err().to_string();
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

    #[test]
    fn the_table_survives_a_snapshot() {
        let jobs = Jobs::new(1000);
        let a = job_with(
            1,
            100,
            vec![("mode".into(), "single".into())],
            vec![
                ("clients".into(), FieldValue::Float(10.0)),
                ("ok".into(), FieldValue::Bool(true)),
                ("note".into(), FieldValue::Str("a \"quoted\"\nline".into())),
            ],
        );
        jobs.reserve(10).unwrap().fill(a);
        jobs.reserve(10).unwrap().fill(job(2, 200));
        jobs.reserve(10).unwrap().fill(job(3, 300));
        jobs.begin_commit(&Uuid::from_u128(2)).unwrap();
        jobs.end_commit(&Uuid::from_u128(2), true, 250);
        jobs.begin_commit(&Uuid::from_u128(3)).unwrap();
        let loaded = restore(Some(&jobs.snapshot().0), b"", 1000).unwrap().0;
        let mut before = jobs.is_running();
        let mut after = loaded.is_running();
        before.sort();
        after.sort();
        // The commit in progress is saved as running: it was not answered yet.
        assert_eq!(
            after,
            [
                (Uuid::from_u128(1), true),
                (Uuid::from_u128(2), false),
                (Uuid::from_u128(3), true)
            ]
        );
        assert_eq!(before.len(), after.len());
        let restored = loaded
            .list(10)
            .into_iter()
            .find(|j| j.run.uuid == Uuid::from_u128(1))
            .unwrap();
        assert_eq!(
            restored.fields,
            jobs.list(10)
                .into_iter()
                .find(|j| j.run.uuid == Uuid::from_u128(1))
                .unwrap()
                .fields
        );
        assert_eq!(
            restored.run.tags,
            [("mode".to_string(), "single".to_string())]
        );
        assert!(
            loaded.reserve(2).is_none(),
            "the two running jobs count against max_running"
        );
        assert!(loaded.reserve(3).is_some());
    }

    #[test]
    fn a_bad_table_is_an_error_not_an_empty_table() {
        let load = |bytes: &[u8]| match restore(Some(bytes), b"", 10) {
            Ok(_) => Ok(()),
            Err(e) if e.in_snapshot() => Err(e.to_string()),
            Err(e) => panic!("{e:?}"),
        };
        assert!(load(b"").is_err());
        assert!(
            load(b"{\"version\": 2, \"jobs\": []}")
                .unwrap_err()
                .contains("version 2")
        );
        let bad_tag = br#"{"version":1,"jobs":[{"uuid":"00000000-0000-0000-0000-000000000001","host":"h","tags":[["a\nb","v"]],"started_ms":0,"fields":[],"last_seen_ms":0,"state":"running","heartbeats":0}]}"#;
        let err = load(bad_tag).unwrap_err();
        assert!(
            err.contains("00000000-0000-0000-0000-000000000001")
                && err.contains("control character"),
            "{err}"
        );
        assert!(load(br#"{"version":1,"jobs":[]}"#).is_ok());
    }

    #[test]
    fn the_journal_replayed_over_an_old_snapshot_gives_the_table() {
        let jobs = Jobs::new(1000);
        jobs.reserve(10).unwrap().fill(job(1, 0));
        let (old, _) = jobs.snapshot();
        let mut journal = Vec::new();
        let mut take = |jobs: &Jobs| journal.extend(jobs.take_pending().0);
        jobs.reserve(10).unwrap().fill(job(2, 10));
        jobs.reserve(10).unwrap().fill(job(3, 20));
        take(&jobs);
        jobs.progress(
            &Uuid::from_u128(2),
            vec![("rps".into(), FieldValue::Float(3.5))],
            30,
            64,
        )
        .unwrap();
        jobs.begin_commit(&Uuid::from_u128(1)).unwrap();
        jobs.end_commit(&Uuid::from_u128(1), true, 40);
        jobs.remove(&Uuid::from_u128(3));
        take(&jobs);
        assert_eq!(
            rows(&restore(Some(&old), &journal, 1000).unwrap().0),
            rows(&jobs)
        );
        assert_eq!(
            rows(&restore(None, &journal, 1000).unwrap().0)
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
            [Uuid::from_u128(1), Uuid::from_u128(2)],
            "without a snapshot, the journal alone has what it recorded"
        );
        // A snapshot taken later already has every record; replaying them again changes nothing
        // (a stop between writing the snapshot and emptying the journal).
        let (new, seq) = jobs.snapshot();
        assert_eq!(seq, 6, "five changes after the first register");
        let (again, restored) = restore(Some(&new), &journal, 1000).unwrap();
        assert_eq!(rows(&again), rows(&jobs));
        assert_eq!(restored.replayed, 0);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_a_bad_one_inside_is_an_error() {
        let jobs = Jobs::new(1000);
        jobs.reserve(10).unwrap().fill(job(1, 0));
        jobs.reserve(10).unwrap().fill(job(2, 0));
        let journal = jobs.take_pending().0;
        let first_line = journal.iter().position(|&b| b == b'\n').unwrap() + 1;
        for cut in [journal.len() - 2, journal.len() - 20, first_line + 3] {
            let (restored, how) = restore(None, &journal[..cut], 10).unwrap();
            assert!(how.torn_tail, "cut at {cut}");
            assert_eq!(restored.counts().running, 1, "cut at {cut}");
        }
        // Whole but for its newline: the record is complete, so it counts.
        let (restored, how) = restore(None, &journal[..journal.len() - 1], 10).unwrap();
        assert_eq!((restored.counts().running, how.torn_tail), (2, false));
        let (_, how) = restore(None, &journal, 10).unwrap();
        assert_eq!(
            how,
            Restored {
                replayed: 2,
                torn_tail: false
            }
        );
        let mut bad = journal[..first_line - 5].to_vec();
        bad.extend_from_slice(&journal[first_line - 1..]);
        assert!(matches!(
            restore(None, &bad, 10),
            Err(e @ RestoreError::BadRecord { line: 1, .. }) if !e.in_snapshot()
        ));
        // Zero padding ends the records; bytes after it are an unfinished write.
        let mut padded = journal.clone();
        padded.extend_from_slice(&[0; 100]);
        let (restored, how) = restore(None, &padded, 10).unwrap();
        assert_eq!((restored.counts().running, how.torn_tail), (2, false));
        padded.extend_from_slice(&journal[..10]);
        padded.extend_from_slice(&[0; 10]);
        let (restored, how) = restore(None, &padded, 10).unwrap();
        assert_eq!((restored.counts().running, how.torn_tail), (2, true));
        let both = br#"{"seq":1,"del":"00000000-0000-0000-0000-000000000001"}
{"seq":2}
{"seq":3,"del":"00000000-0000-0000-0000-000000000001"}
"#;
        assert!(matches!(
            restore(None, both, 10),
            Err(e @ RestoreError::NotOneChange { line: 2 }) if e.to_string().contains("exactly one")
        ));
    }
}
