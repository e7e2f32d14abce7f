//! The log: every accepted request as one checksummed record, in order, in segment files under
//! `storage.dir/log/`, written by group commit; and the reading of it, by the deliverer at run
//! time and by the start to rebuild the job table.
//!
//! **Writing.** A request encodes its record into the queue under the log's lock, takes a
//! ticket, and waits: the first waiter that finds no write under way becomes the writer, takes
//! everything queued, numbers the records (so a group that fails leaves no gap in the numbers),
//! writes them with one `write` and one `fdatasync`, and wakes the others. No lock is held
//! across the disk but the writer's turn. A request may instead leave its wait to a
//! [`crate::sync::Waiter`] ([`Log::wait_with`]): then the log's own thread
//! ([`Log::write_for_waiters`]) writes its group, and whoever writes it tells the waiter (see
//! `waiters`). Segment files are filled with zeros ahead of the records, 1 MiB at a time, and
//! records overwrite the zeros: an `fdatasync` of blocks inside the file's length flushes
//! those blocks alone, while one that grows the file also commits the filesystem's metadata,
//! several times slower (ext4: 0.2 ms against 1.2 ms on a busy machine). A segment is closed
//! once it passes [`SEGMENT_BYTES`], and the next group starts a new one named by its first
//! record's number. A failed write fails every request of its group; the segment is cut back
//! to where the group began (so no failed record survives to be read at the next start) and a
//! new segment is started; if even that fails, the log refuses writes until the process is
//! restarted.
//!
//! **Bounds.** Records not yet delivered may take `storage.max_spool_bytes`; a record with
//! points beyond that is refused ([`LogError::Full`]). A record without points (a change of the
//! job table alone, such as progress) may go [`HEADROOM_BYTES`] further, so the table can still
//! change while InfluxDB is away, without an unbounded log. Each client's records (a record
//! names the client that wrote it) may take its share ([`Share`]: its `max_spool_bytes`) of
//! that, with the same headroom for records without points; a record past it is refused
//! ([`LogError::ShareFull`]) while the log has room, so that one client writing hard while
//! InfluxDB is away fills its share, not everyone's log. A client with nothing waiting may
//! always write one record, whatever its size, so a share smaller than a large commit does not
//! shut its client out for good. The bytes of each client are counted
//! as its records are queued, given back when a write fails or when the deliverer marks them
//! delivered, and counted again at start from the records not yet delivered. Records without
//! a client (a tick's heartbeats, a gateway without tokens, segments older than version 3)
//! count against the whole log only.
//!
//! **Trimming.** A segment is deleted once every record in it is delivered and every job-table
//! change in it is in a snapshot (`jobs.json`), and it is not the one being written.
//!
//! **Formats.** Every segment starts with its header ([`record::segment_header`]: magic and
//! version) and the delivered mark with its format's name and version; the start refuses a file
//! of another program or version ([`OpenError::Format`]), naming it. Offsets count from the
//! start of the file, header included.
//!
//! **Reading at start** ([`Log::open`]): every segment is read and every record checked. The
//! records of the last segment may end in a write cut short by a crash — never acknowledged,
//! since the answer follows the fsync — which is dropped with a warning ([`Opened::torn`]).
//! Anything else that does not read back (a record that fails its checksum with whole records
//! after it, a gap in the numbers, a record in an earlier segment) stops the start, naming the
//! file and the offset; `--repair` drops such a record knowingly and keeps the ones around it.

mod delivered;
mod errors;
mod group;
mod hold;
mod mend;
mod open;
#[cfg(test)]
mod shares_tests;
#[cfg(test)]
mod targets_tests;
mod waiters;
#[cfg(test)]
mod waiters_tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::record::{self, Frame, Kind, Parts, SEGMENT_HEADER_BYTES, Target, Unit};
use super::{DirHandle, StorageError};
use crate::sync::{Signal, Waiter};
pub use errors::{LogError, OpenError, WriteFailure};
use waiters::Writer;

/// A segment is closed once it holds this many bytes; the next group starts a new one.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// Segment files grow by this much of zeros at a time.
const ZERO_FILL_BYTES: u64 = 1 << 20;
/// How far past `storage.max_spool_bytes` records without points may go.
pub const HEADROOM_BYTES: u64 = 16 << 20;
/// The file that says how far InfluxDB has taken the log.
const DELIVERED_FILE: &str = "delivered";
/// Records written within this long of each other share one entry of [`Inner::appended`]: the
/// age of the oldest record waiting is told to within it, and a log waiting for days keeps a
/// few tens of thousands of entries at most.
const APPENDED_WINDOW: Duration = Duration::from_secs(10);
/// How often, at most, the deliverer saves how far the log is delivered as it goes (besides at
/// the stop and when segments are let go): what a crash sends InfluxDB again, and counts as
/// waiting at the next start, is what was delivered in the last few seconds, not a segment.
const MARK_SAVE_EVERY: Duration = Duration::from_secs(2);
/// Where a segment's first record starts: after its header.
const FIRST_RECORD: u64 = SEGMENT_HEADER_BYTES as u64;
/// The log target of the log's own lines, also of those that may repeat ([`super::Repeats`]).
pub(crate) const LOG_TARGET: &str = module_path!();

/// The most room a written group's buffer keeps for the next group ([`Inner::spare`]), in
/// bytes: what many requests' records take at once, not what one large write's does.
const SPARE_BYTES: usize = 256 * 1024;

/// What the start found in the log besides the records.
#[derive(Debug, Default)]
pub struct Opened {
    /// Bytes of job-table changes in the log (handed one record's at a time to the caller).
    pub change_bytes: u64,
    /// Whole records found.
    pub records: u64,
    /// Records not yet delivered, and their bytes.
    pub undelivered: (u64, u64),
    /// A write cut short by a crash at the end of the last segment: (file, offset, bytes
    /// dropped). It was never acknowledged.
    pub torn: Option<(PathBuf, u64, u64)>,
    /// Damaged records dropped by `--repair`: (file, offset, bytes).
    pub repaired: Vec<(PathBuf, u64, u64)>,
}

/// The outcome of one group write, kept until each of its tickets' waiters has read it: a
/// waiter that was not scheduled for a while must still learn what became of its record.
#[derive(Debug)]
struct Group {
    /// The group's tickets are `(from, to]`.
    from: u64,
    to: u64,
    /// The number of its first record, or why the group failed.
    outcome: Result<u64, LogError>,
    /// Tickets whose waiter has not read the outcome yet.
    unread: u64,
}

/// A closed or active segment.
#[derive(Debug, Clone)]
struct Segment {
    /// The number of its first record, which names the file.
    first: u64,
    path: PathBuf,
    /// The number of its last record (`first - 1` while empty).
    last: u64,
    /// Bytes of whole records.
    bytes: u64,
    /// The number of the last job-table change in it (0: none).
    max_change: u64,
    /// The format version its header names (how its records decode).
    version: u16,
}

/// The segment being written.
struct Active {
    file: File,
    /// Bytes in the file: the records, then zeros.
    size: u64,
}

/// Records waiting to be written together, and the state shared with the writer.
struct Inner {
    /// The next ticket to hand out; tickets count appends, records are numbered when written.
    next_ticket: u64,
    /// The number the next written record gets.
    next_seq: u64,
    pending: Vec<u8>,
    /// The buffer of the group written last, emptied, for `pending` to be once that group's
    /// successor is taken: two buffers take turns rather than each group's growing from
    /// nothing. Not kept past [`SPARE_BYTES`] of room (after a group of large records).
    spare: Vec<u8>,
    /// Where each queued record starts in `pending`, in ticket order.
    pending_starts: Vec<usize>,
    /// The client and bytes of each queued record that has a client: given back to
    /// `clients` when their group fails.
    pending_clients: Vec<(String, u64)>,
    /// The last job-table change among the queued records.
    pending_change: u64,
    /// A writer is at work.
    writing: bool,
    /// Every ticket up to this one is settled: written, or failed.
    done: u64,
    /// Groups taken from the queue so far (written or failed), and the last ticket of the
    /// latest: a waiter whose ticket is beyond it is in the next group (see [`Log::turns`]).
    taken: u64,
    taken_to: u64,
    /// Groups with tickets whose waiters have not yet read the outcome, oldest first.
    groups: VecDeque<Group>,
    /// The requests that left their wait to a [`Waiter`] ([`Log::wait_with`]), by ticket: told
    /// by whoever settles their group.
    waiters: BTreeMap<u64, Arc<dyn Waiter>>,
    /// Whether the writer of waiters' records runs ([`Log::write_for_waiters`]).
    writer: Writer,
    /// The number of the last record on disk.
    durable: u64,
    /// Every segment, oldest first; the last one is being written.
    segments: Vec<Segment>,
    active: Option<Active>,
    /// Bytes and count of records (written or queued) not yet delivered.
    undelivered: u64,
    undelivered_records: u64,
    /// Whether a record with points that fits the bound was refused for what waits
    /// ([`LogError::Full`]), and since then neither was anything delivered nor a record with
    /// points taken: every write is refused then (`GET /health` says `fail`).
    full: bool,
    /// Bytes of records (written or queued) not yet delivered, per client that has some: what
    /// each client's [`Share`] bounds. Records without a client are not in it.
    clients: HashMap<String, u64>,
    /// Every record up to this number is delivered.
    delivered: u64,
    /// Job-table changes up to this number are in the last snapshot.
    snapshot_covers: u64,
    /// Bytes of job-table changes written since that snapshot, and its size.
    changes_since_snapshot: u64,
    snapshot_bytes: u64,
    /// A write found the disk full since the segment being written was begun: once that
    /// segment is delivered, it is let go (see [`Log::trim`]) whatever its size.
    disk_full: bool,
    /// Letting a segment go found no room for the delivered mark: a snapshot is asked for,
    /// which may take the room kept for it and leave some.
    let_go_blocked: bool,
    /// When the deliverer last saved the delivered mark as it went ([`MARK_SAVE_EVERY`]).
    mark_saved_at: Option<std::time::Instant>,
    /// When records not yet delivered were written: the number of the first record written in
    /// each [`APPENDED_WINDOW`], and when, in ms since `opened_at` (negative for records read at
    /// the start: when their segment file was last written, which they are no younger than).
    /// The front entry's window holds the oldest record waiting.
    appended: VecDeque<(u64, i64)>,
    /// When the log was opened: what `appended` counts from.
    opened_at: std::time::Instant,
    /// The last write of a group that failed (when, and why), until a write succeeds again:
    /// for the state page, while requests are answered 503.
    write_failure: Option<WriteFailure>,
    /// A write found the disk full: the writer looks for a segment to let go.
    trim_wanted: bool,
    /// A failed write could not be cut back from the segment: nothing is written until it is
    /// ([`Log::mend`], tried again at each append), or a record refused to its request could be
    /// read back at the next start.
    broken: bool,
}

/// The log of one `storage.dir`. See the module documentation.
pub struct Log {
    /// `storage.dir/log`, opened at the start: every file of the log is opened, created and
    /// removed relative to it, never by path.
    dir: DirHandle,
    limit: u64,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: u64,
    inner: Mutex<Inner>,
    /// Notified whenever a group is written: wakes the requests waiting for it, and the
    /// deliverer waiting for records.
    written: Signal,
    /// Where the writer of waiters' records waits for one ([`Log::write_for_waiters`]).
    writer_signal: Signal,
    /// Where requests wait for their group: group `n` on `turns[n % 2]`. A written group wakes
    /// its own waiters and one of the next group's, to write it; the others of the next group
    /// sleep on until theirs is written. One signal for all woke every waiter at every group,
    /// each waiter of the next group once for nothing (and all of them into the lock at once).
    turns: [Signal; 2],
    /// The segment [`Log::read`] read last (by its first record's number) and its file, kept
    /// open between reads; closed before that segment is deleted, so its room is free then.
    reading: Mutex<Option<(u64, Arc<File>)>>,
    /// Failed writes as they are logged: at once, then once a minute while they repeat (on a
    /// full disk every tick's heartbeats fail).
    errors: super::Repeats,
    /// The delivered mark as last written: its writes (by the deliverer, by a letting go of
    /// segments, at the stop) take turns here, and a mark never goes back.
    mark: Mutex<u64>,
    /// Tests make the next writes fail, as a disk gone bad would.
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicUsize,
    /// Tests make the next cut-backs of a failed write fail too.
    #[cfg(test)]
    fail_undos: std::sync::atomic::AtomicUsize,
    /// Tests make the next fsyncs of the directory, after a segment was begun, fail.
    #[cfg(test)]
    fail_dir_syncs: std::sync::atomic::AtomicUsize,
    /// Tests make the writes they fail find the disk full.
    #[cfg(test)]
    fail_full: std::sync::atomic::AtomicBool,
}

/// Why [`Log::roll`] failed, and whether the segment being written was closed first (its
/// file cut to its records and fsync'd) before the next one could not be begun.
struct Rolled {
    error: LogError,
    closed: bool,
}

/// One record as the deliverer reads it.
#[derive(Debug, Clone)]
pub struct Read {
    pub seq: u64,
    pub kind: Kind,
    /// The client that wrote it; `None`: no client.
    pub client: Option<String>,
    /// Bytes the record takes in the log.
    pub bytes: u64,
    /// Where its points go ([`Kind::Write`] only); `None`: `[influxdb]`'s database.
    pub target: Option<OwnedTarget>,
    pub units: Vec<OwnedUnit>,
    /// The lines of every unit, one after the other ([`Read::lines`]): one buffer a record
    /// (a large one goes back to the system when freed), where a buffer a unit left a tick's
    /// record (a heartbeat unit for each running run) as ten thousand small blocks in the
    /// allocator's arenas once delivered.
    text: String,
}

impl Read {
    /// The lines of `unit`, one of this record's (a unit of another record is a bug: loud in
    /// debug builds, no lines in release ones).
    pub fn lines(&self, unit: &OwnedUnit) -> &str {
        let lines = self.text.get(unit.lines.clone());
        debug_assert!(lines.is_some(), "a unit read with another record");
        lines.unwrap_or_default()
    }

    /// Each unit with its lines.
    pub fn units_with_lines(&self) -> impl Iterator<Item = (&OwnedUnit, &str)> {
        self.units.iter().map(|u| (u, self.lines(u)))
    }
}

/// The client a record is appended for, and the bytes of undelivered records it may hold in
/// the log: its `max_spool_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share<'a> {
    /// The client's name (a token's), 1 to [`record::MAX_CLIENT_BYTES`] bytes.
    pub client: &'a str,
    /// Bytes, records' headers included.
    pub limit: u64,
}

/// A record's [`Target`], read back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedTarget {
    pub database: String,
    /// Empty: the database's default.
    pub retention_policy: String,
}

/// A unit of a record read back: see [`record::Unit`]. Its lines are the record's
/// ([`Read::lines`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedUnit {
    pub run: uuid::Uuid,
    pub points: u32,
    /// Where its lines are in the record's text, in bytes.
    lines: std::ops::Range<usize>,
}

impl OwnedUnit {
    /// The bytes of its lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }
}

/// Where the deliverer is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The segment (by its first record's number) and the offset of the next record to read.
    segment: u64,
    offset: u64,
    /// The number of the next record.
    pub next_seq: u64,
}

pub(crate) fn segment_name(first: u64) -> String {
    format!("{first:020}.log")
}

/// Whom a settled group wakes ([`Log::wake_settled`]).
#[must_use]
struct Wake {
    /// The group settled.
    group: u64,
    /// Records were queued behind it: one of the next group's requests is woken to write them.
    next: bool,
    /// The group's requests that left their wait to a [`Waiter`], and whether it was written.
    waiters: Vec<Arc<dyn Waiter>>,
    written: bool,
    /// Waiters' records were queued behind it: the writer of waiters' records is woken.
    writer: bool,
}

/// The outcome of `ticket`, settled (`done` is at or past it): its record's number, or why its
/// group failed. Every ticket is read once; its group goes once all of its tickets were read.
fn outcome_of(inner: &mut Inner, ticket: u64) -> Result<u64, LogError> {
    let Some(group) = inner
        .groups
        .iter_mut()
        .find(|g| ticket > g.from && ticket <= g.to)
    else {
        // Every ticket is waited for once; a second wait has nothing to read.
        return Err(LogError::Broken);
    };
    group.unread -= 1;
    let outcome = match &group.outcome {
        Ok(first) => Ok(first + (ticket - group.from - 1)),
        Err(e) => Err(e.clone()),
    };
    while inner.groups.front().is_some_and(|g| g.unread == 0) {
        inner.groups.pop_front();
    }
    outcome
}

/// Whether a test asked the next of these operations to fail (`counter` of them are still to
/// fail); counts this one off.
#[cfg(test)]
fn asked_to_fail(counter: &std::sync::atomic::AtomicUsize) -> bool {
    counter
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        )
        .is_ok()
}

/// The signal of group `n` in [`Log::turns`].
fn turn(group: u64) -> usize {
    (group % 2) as usize
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    crate::sync::lock(m)
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Queues a record and returns its ticket; [`Log::wait`] then blocks until it is on disk.
    /// Every ticket is waited for once: its group's outcome is kept until then.
    /// `change_seq` is the number of the last job-table change in `changes` (0: none); `share`
    /// names the client the record is for and bounds what it holds (`None`: no client, the
    /// whole log's bound alone).
    ///
    /// Errors: [`LogError::Full`] past `storage.max_spool_bytes`, [`LogError::ShareFull`] past
    /// the client's share while the log has room, [`LogError::Broken`]; nothing is queued.
    pub fn append(
        &self,
        kind: Kind,
        change_seq: u64,
        changes: &[u8],
        units: &[Unit<'_>],
        share: Option<Share<'_>>,
    ) -> Result<u64, LogError> {
        self.append_record(
            Parts {
                change_seq,
                changes,
                ..Parts::of(kind, units)
            },
            share,
        )
    }

    /// Queues a write through InfluxDB's write API ([`Kind::Write`]): `units` (timestamps in
    /// nanoseconds) for `target`; see [`Log::append`].
    pub fn append_write(
        &self,
        target: Target<'_>,
        units: &[Unit<'_>],
        share: Option<Share<'_>>,
    ) -> Result<u64, LogError> {
        self.append_record(
            Parts {
                target: Some(target),
                ..Parts::of(Kind::Write, units)
            },
            share,
        )
    }

    fn append_record(&self, parts: Parts<'_>, share: Option<Share<'_>>) -> Result<u64, LogError> {
        // A name that a record cannot carry (none the configuration makes) would be counted
        // and never given back: such a record goes without a client.
        let share = share.filter(|s| record::client_fits(s.client));
        let parts = Parts {
            client: share.map(|s| s.client),
            ..parts
        };
        let len = record::encoded_len(&parts) as u64;
        let mut inner = self.lock();
        if inner.broken {
            inner = self.mend(inner);
            if inner.broken {
                // Refused without a write: the failure stands as of now.
                if let Some(failure) = &mut inner.write_failure {
                    failure.at = std::time::SystemTime::now();
                    failure.since = Instant::now();
                }
                return Err(LogError::Broken);
            }
        }
        let points = parts.units.iter().any(|u| u.points > 0);
        if let Err(e) = self.room_for(&inner, len, points, share) {
            // Full for what waits, not for a record larger than the whole bound (refused
            // whatever waits, while the writes after it are taken).
            if points && matches!(e, LogError::Full { .. }) && len <= self.limit {
                inner.full = true;
            }
            return Err(e);
        }
        if points {
            inner.full = false;
        }
        if let Some(share) = share {
            *inner.clients.entry(share.client.to_string()).or_insert(0) += len;
            inner.pending_clients.push((share.client.to_string(), len));
        }
        let ticket = inner.next_ticket;
        inner.next_ticket += 1;
        let start = inner.pending.len();
        inner.pending_starts.push(start);
        inner.pending.reserve(len as usize);
        record::encode(&mut inner.pending, 0, &parts);
        inner.pending_change = inner.pending_change.max(parts.change_seq);
        inner.undelivered += len;
        inner.undelivered_records += 1;
        inner.changes_since_snapshot += parts.changes.len() as u64;
        Ok(ticket)
    }

    /// Whether a record of `len` bytes holding points, for `share`, would be taken now, as
    /// [`Log::append_write`] decides it: [`LogError::Full`] or [`LogError::ShareFull`] when not.
    /// A look, not a promise: a request that takes something before it appends (the series
    /// budget) asks first, so that a record the log would refuse takes nothing.
    pub fn has_room(&self, len: u64, share: Option<Share<'_>>) -> Result<(), LogError> {
        let share = share.filter(|s| record::client_fits(s.client));
        self.room_for(&self.lock(), len, true, share)
    }

    /// The log's bound and the client's share, for a record of `len` bytes (`points`: it holds
    /// points; else it may take the headroom kept for progress).
    fn room_for(
        &self,
        inner: &Inner,
        len: u64,
        points: bool,
        share: Option<Share<'_>>,
    ) -> Result<(), LogError> {
        let headroom = if points { 0 } else { HEADROOM_BYTES };
        // A client with a share is held to it (below); the log as a whole only to its hard
        // bound, so that another's progress past its own share never takes this one's room for
        // points. The shares add up to the log's bound at most (`config::clients`), and their
        // parts of the headroom to the headroom.
        let room = match share {
            Some(_) => self.limit.saturating_add(HEADROOM_BYTES),
            None => self.limit.saturating_add(headroom),
        };
        if inner.undelivered + len > room {
            return Err(LogError::Full {
                bytes: inner.undelivered,
                limit: self.limit,
            });
        }
        if let Some(share) = share {
            let held = inner.clients.get(share.client).copied().unwrap_or(0);
            // A client with nothing waiting may always write one record (within the log's
            // bound): a share smaller than its largest request must not shut it out for good.
            // Its part of the headroom is its share's part of the log: the clients' progress
            // past their shares never takes more than the one headroom together, so it never
            // eats another's room for points.
            let own_headroom = (u128::from(headroom) * u128::from(share.limit)
                / u128::from(self.limit.max(1))) as u64;
            if held > 0 && held + len > share.limit.saturating_add(own_headroom) {
                return Err(LogError::ShareFull {
                    client: share.client.to_string(),
                    bytes: held,
                    limit: share.limit,
                });
            }
        }
        Ok(())
    }

    /// Blocks until the record of `ticket` is on disk, and returns its number; or returns why
    /// its write failed.
    pub fn wait(&self, ticket: u64) -> Result<u64, LogError> {
        let mut inner = self.lock();
        loop {
            if inner.done >= ticket {
                return outcome_of(&mut inner, ticket);
            }
            if !inner.writing && !inner.pending.is_empty() {
                let (mut written, wake) = self.write_group(inner);
                // This request's ticket is in the group just written: its outcome is read
                // before the others are woken, and they are woken once the lock is let go, so
                // that they do not queue on the lock this thread holds.
                let mine = (written.done >= ticket).then(|| outcome_of(&mut written, ticket));
                self.group_written(written, wake);
                if let Some(outcome) = mine {
                    return outcome;
                }
                inner = self.lock();
                continue;
            }
            let group = if ticket <= inner.taken_to {
                inner.taken
            } else {
                inner.taken + 1
            };
            inner = crate::sync::unpoisoned(self.turns[turn(group)].wait(inner));
        }
    }

    /// Bytes of the records not yet delivered: what `storage.max_spool_bytes` bounds.
    pub fn undelivered_bytes(&self) -> u64 {
        self.lock().undelivered
    }

    /// `storage.max_spool_bytes`: the bytes of undelivered records the log takes at most.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes of `client`'s records not yet delivered: what its [`Share`] bounds.
    pub fn undelivered_of(&self, client: &str) -> u64 {
        self.lock().clients.get(client).copied().unwrap_or(0)
    }

    /// The number of the last record written (on disk).
    pub fn last_written(&self) -> u64 {
        self.lock().durable
    }

    /// Records not yet delivered, and their bytes.
    pub fn undelivered(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.undelivered_records, inner.undelivered)
    }

    /// The last failed write to the log, while no write has succeeded since: requests are
    /// answered 503 `storage_error` meanwhile.
    pub fn write_failure(&self) -> Option<WriteFailure> {
        self.lock().write_failure.clone()
    }

    /// Whether the log refuses writes for being full (`storage.max_spool_bytes`): a record with
    /// points that fits the bound was refused for what waits, and since then nothing was
    /// delivered and no record with points taken; or it was opened with more waiting than the
    /// bound.
    pub fn is_full(&self) -> bool {
        self.lock().full
    }

    /// How long the oldest record written and not yet delivered has waited, to within
    /// [`APPENDED_WINDOW`] (never less); `None` when every record written is delivered. For
    /// records read at the start: at least since their segment file was last written.
    pub fn oldest_waiting(&self) -> Option<Duration> {
        let inner = self.lock();
        if inner.durable <= inner.delivered {
            return None;
        }
        let now = inner.opened_at.elapsed().as_millis() as i64;
        inner
            .appended
            .front()
            .map(|(_, at)| Duration::from_millis(now.saturating_sub(*at).max(0) as u64))
    }

    /// Makes the next `n` group writes fail, as a disk gone bad would.
    #[cfg(test)]
    pub fn fail_next_writes(&self, n: usize) {
        self.fail_writes
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes the next `n` cut-backs of a failed write fail too: the log is broken until one
    /// works.
    #[cfg(test)]
    pub fn fail_next_undos(&self, n: usize) {
        self.fail_undos
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Wakes whoever waits in [`Log::wait_for_more`], to ask its `stop` again.
    pub fn wake(&self) {
        let _inner = self.lock();
        self.wake_all();
    }
}

impl Inner {
    /// Gives back the bytes of records of each client in `records` (client, bytes): failed, or
    /// delivered. A client left with none is forgotten, so the map holds only clients with
    /// records waiting.
    fn release<S: AsRef<str>>(&mut self, records: impl IntoIterator<Item = (S, u64)>) {
        for (client, bytes) in records {
            let client = client.as_ref();
            if let Some(held) = self.clients.get_mut(client) {
                *held = held.saturating_sub(bytes);
                if *held == 0 {
                    self.clients.remove(client);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::Dir;
    use std::fs;
    use uuid::Uuid;

    const LIMIT: u64 = 1 << 30;

    fn open(dir: &Dir) -> Result<(Log, Position, Opened), OpenError> {
        open_sized(dir, LIMIT, false, 4096, &mut |_| {})
    }

    fn open_sized(
        dir: &Dir,
        limit: u64,
        repair: bool,
        segment_bytes: u64,
        changes: &mut dyn FnMut(&[u8]),
    ) -> Result<(Log, Position, Opened), OpenError> {
        let handle = DirHandle::open(dir.path()).unwrap();
        Log::open_sized(handle, limit, repair, segment_bytes, changes)
    }

    /// Appends a request record of `n`'s points and waits for it; its number.
    fn put(log: &Log, n: u64) -> u64 {
        let lines = format!("m,r=r{n} v={n} {n}\n");
        let change = format!(
            "{{\"seq\":{n},\"del\":\"{}\"}}\n",
            Uuid::from_u128(n.into())
        );
        let ticket = log
            .append(
                Kind::Request,
                n,
                change.as_bytes(),
                &[Unit {
                    run: Uuid::nil(),
                    points: 1,
                    lines: &lines,
                }],
                None,
            )
            .unwrap();
        log.wait(ticket).unwrap()
    }

    /// Appends a request record of one line with no job-table change; its number, or why it
    /// was not written.
    fn put_line(log: &Log, line: &str) -> Result<u64, LogError> {
        let ticket = log.append(Kind::Request, 0, b"", &one_line(line), None)?;
        log.wait(ticket)
    }

    /// Appends a request record of 64 KiB of points; its number, or why it was not written.
    fn put_wide(log: &Log, n: u64) -> Result<u64, LogError> {
        let lines = format!("m,r=r{n} v=\"{}\" {n}\n", "w".repeat(64 << 10));
        let change = format!("{{\"seq\":{n},\"del\":\"{}\"}}\n", Uuid::nil());
        let unit = [Unit {
            run: Uuid::nil(),
            points: 1,
            lines: &lines,
        }];
        let ticket = log.append(Kind::Request, n, change.as_bytes(), &unit, None)?;
        log.wait(ticket)
    }

    /// A start on a full disk whose own snapshot finds no room: the delivered segment being
    /// written goes when the snapshot the start read holds its changes, with no new snapshot.
    #[test]
    fn a_start_on_a_full_disk_lets_go_what_the_snapshot_it_read_holds() {
        let disk = crate::storage::tests::SmallDisk::new("log-start-full", "2m");
        let (log, mut at, _) = Log::open(
            crate::storage::tests::log_dir(disk.0.path()),
            LIMIT,
            false,
            &mut |_| {},
        )
        .unwrap();
        let mut last = 0;
        while let Ok(seq) = put_wide(&log, last + 1) {
            last = seq;
        }
        let read = read_all(&log, &mut at);
        log.delivered(last, &read);
        log.save_delivered();
        drop(log);
        let (log, _, opened) = Log::open(
            crate::storage::tests::log_dir(disk.0.path()),
            LIMIT,
            false,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(opened.undelivered, (0, 0));
        // The start's snapshot found the disk full.
        log.disk_is_full();
        assert_eq!(
            log.segments(),
            1,
            "held: no snapshot known to hold its changes"
        );
        log.snapshot_read(last);
        assert_eq!(
            log.segments(),
            0,
            "let go: the snapshot read holds its changes"
        );
        assert_eq!(put_wide(&log, last + 1).unwrap(), last + 1);
    }

    #[test]
    fn a_delivered_segment_still_being_written_is_let_go_on_a_full_disk_and_numbering_goes_on() {
        let disk = crate::storage::tests::SmallDisk::new("log-let-go", "2m");
        let handle = crate::storage::tests::log_dir(disk.0.path());
        // Segments of 16 MiB never fill on this disk: the first one is still being written
        // when the disk is full.
        let (log, mut at, _) = Log::open(handle, LIMIT, false, &mut |_| {}).unwrap();
        let mut last = 0;
        let full = loop {
            match put_wide(&log, last + 1) {
                Ok(seq) => last = seq,
                Err(e) => break e,
            }
        };
        assert!(full.is_disk_full(), "{full}");
        assert!(last > 3, "{last} records before the disk was full");
        assert!(!log.snapshot_frees_segments(), "nothing is delivered yet");
        let read = read_all(&log, &mut at);
        log.delivered(last, &read);
        assert_eq!(log.segments(), 1, "its changes are in no snapshot yet");
        assert!(
            log.snapshot_frees_segments(),
            "a snapshot would let the segment being written go"
        );
        log.snapshot_written(last, 10);
        assert_eq!(log.segments(), 0, "let go, its room free");
        assert!(segment_files(&disk.0).is_empty());
        // A start now finds no segment: it numbers on after the delivered mark.
        drop(log);
        let handle = crate::storage::tests::log_dir(disk.0.path());
        let (log, mut at, opened) = Log::open(handle, LIMIT, false, &mut |_| {}).unwrap();
        assert_eq!((opened.records, opened.undelivered), (0, (0, 0)));
        assert_eq!(
            put_wide(&log, last + 1).unwrap(),
            last + 1,
            "the next write begins a segment"
        );
        let read = read_all(&log, &mut at);
        assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), [last + 1]);
        // And a disk filled again gets out again, without a restart.
        let mut more = last + 1;
        while let Ok(seq) = put_wide(&log, more + 1) {
            more = seq;
        }
        let read = read_all(&log, &mut at);
        log.delivered(more, &read);
        log.snapshot_written(more, 10);
        assert_eq!(log.segments(), 0);
        assert_eq!(put_wide(&log, more + 1).unwrap(), more + 1);
    }

    /// The deliverer saves how far it got as it goes: a crash (no stop to save it) does not
    /// make a start count, and send again, what was delivered before it.
    #[test]
    fn a_crash_after_a_delivery_does_not_count_what_was_delivered_as_waiting() {
        let dir = Dir::new("log-mark-as-it-goes");
        let (log, mut at, _) = open(&dir).unwrap();
        let last = (1..=3)
            .map(|n| put_line(&log, &format!("m v={n} {n}\n")).unwrap())
            .last()
            .unwrap();
        let read = read_all(&log, &mut at);
        log.delivered(last, &read);
        // Killed: no save_delivered.
        drop(log);
        let (_, at, opened) = open(&dir).unwrap();
        assert_eq!(opened.undelivered, (0, 0));
        assert_eq!(at.next_seq, last + 1);
    }

    /// The age of the oldest record waiting is that record's: a delivery of the records before
    /// it does not start it again, a start finds it again, and it is gone once all are
    /// delivered.
    #[test]
    fn the_oldest_record_waiting_keeps_its_age_until_it_is_delivered() {
        let dir = Dir::new("log-oldest-age");
        let (log, mut at, _) = open(&dir).unwrap();
        assert_eq!(log.oldest_waiting(), None);
        let first = put_line(&log, "m v=1 1\n").unwrap();
        let second = put_line(&log, "m v=2 2\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while log.oldest_waiting().unwrap() < Duration::from_millis(50) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(5));
        }
        let read = read_all(&log, &mut at);
        log.delivered(first, &read[..1]);
        assert!(log.oldest_waiting().unwrap() >= Duration::from_millis(50));
        drop(log);
        // A start finds a record waiting, as old as its segment file's last write at least:
        // here 30 s ago (the file was made just now).
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(30))
            .unwrap();
        let (log, mut at, _) = open(&dir).unwrap();
        let age = log.oldest_waiting().unwrap();
        assert!(
            age >= Duration::from_secs(30) && age < Duration::from_secs(40),
            "{age:?}"
        );
        let read = read_all(&log, &mut at);
        log.delivered(second, &read);
        assert_eq!(log.oldest_waiting(), None);
    }

    /// A written group's buffer is kept, emptied, for the next group to fill, unless a group
    /// of large records made it larger than the room kept; what it holds is never written
    /// twice.
    #[test]
    fn a_written_groups_buffer_is_kept_for_the_next_unless_it_grew_large() {
        let dir = Dir::new("log-spare");
        let (log, mut at, _) = open_sized(&dir, LIMIT, false, 1 << 22, &mut |_| {}).unwrap();
        let spare = |log: &Log| {
            let inner = log.lock();
            (inner.spare.len(), inner.spare.capacity())
        };
        assert_eq!(spare(&log), (0, 0));
        put(&log, 1);
        let (len, room) = spare(&log);
        assert_eq!(len, 0);
        assert!(room > 0);
        put(&log, 2);
        for n in 3..8 {
            put_wide(&log, n).unwrap();
        }
        // Each wide record alone is a group of 64 KiB: kept.
        assert!(spare(&log).1 >= 64 << 10);
        // A group larger than SPARE_BYTES is not kept.
        let lines = format!("m v=\"{}\" 9\n", "w".repeat(SPARE_BYTES));
        let ticket = log
            .append(Kind::Request, 0, b"", &one_line(&lines), None)
            .unwrap();
        log.wait(ticket).unwrap();
        assert_eq!(spare(&log), (0, 0));
        put(&log, 10);
        let read = log.read(&mut at, u64::MAX).unwrap();
        let seqs: Vec<u64> = read.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=9).collect::<Vec<u64>>());
        assert!(read[0].lines(&read[0].units[0]).starts_with("m,r=r1 "));
        assert!(read[8].lines(&read[8].units[0]).starts_with("m,r=r10 "));
    }

    /// A record of several units reads back as one buffer of lines, each unit its own part of
    /// it, with its run and points.
    #[test]
    fn each_unit_of_a_record_reads_back_its_own_lines() {
        let dir = Dir::new("log-units");
        let (log, mut at, _) = open(&dir).unwrap();
        let lines = ["a v=1 1\n", "b v=2 2\nb v=3 3\n", "", "c s=\"x\" 4\n"];
        let units: Vec<Unit<'_>> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| Unit {
                run: Uuid::from_u128(i as u128 + 1),
                points: l.matches('\n').count() as u32,
                lines: l,
            })
            .collect();
        let ticket = log.append(Kind::Heartbeats, 0, b"", &units, None).unwrap();
        log.wait(ticket).unwrap();
        let read = log.read(&mut at, u64::MAX).unwrap();
        assert_eq!(read.len(), 1);
        let back: Vec<(u128, u32, &str, usize)> = read[0]
            .units_with_lines()
            .map(|(u, l)| (u.run.as_u128(), u.points, l, u.len()))
            .collect();
        assert_eq!(
            back,
            vec![
                (1, 1, lines[0], lines[0].len()),
                (2, 2, lines[1], lines[1].len()),
                (3, 0, lines[2], 0),
                (4, 1, lines[3], lines[3].len()),
            ]
        );
    }

    /// A failed write is told (for the state page) until a write succeeds again.
    #[test]
    fn a_failed_write_is_told_until_one_succeeds() {
        let dir = Dir::new("log-write-failure");
        let (log, _, _) = open(&dir).unwrap();
        assert_eq!(log.write_failure(), None);
        log.fail_next_writes(1);
        assert!(put_line(&log, "m v=1 1\n").is_err());
        let told = log.write_failure().expect("told");
        assert!(
            told.error.contains(&dir.path().display().to_string()),
            "{told:?}"
        );
        // A client is not told where storage.dir is.
        assert!(
            !told.for_client.contains(&dir.path().display().to_string()),
            "{told:?}"
        );
        assert!(told.for_client.contains("log"), "{told:?}");
        put_line(&log, "m v=2 2\n").unwrap();
        assert_eq!(log.write_failure(), None);
    }

    #[test]
    fn a_waiter_that_sleeps_through_many_groups_still_learns_its_number() {
        let dir = Dir::new("log-late-waiter");
        let (log, _, _) = open(&dir).unwrap();
        let lines = "m,r=late v=1 1\n";
        let unit = [Unit {
            run: Uuid::nil(),
            points: 1,
            lines,
        }];
        let late = log.append(Kind::Request, 0, b"", &unit, None).unwrap();
        // Another request writes the late one's group, then a thousand groups of its own.
        let first = put(&log, 1);
        for n in 2..1000 {
            put(&log, n);
        }
        assert_eq!(
            log.wait(late).unwrap(),
            first - 1,
            "written in the first group"
        );
        assert!(log.lock().groups.is_empty(), "every outcome read is let go");
    }

    /// Every record on disk after `at`, read in batches.
    pub(super) fn read_all(log: &Log, at: &mut Position) -> Vec<Read> {
        let mut all = Vec::new();
        loop {
            let batch = log.read(at, 1 << 20).unwrap();
            if batch.is_empty() {
                return all;
            }
            all.extend(batch);
        }
    }

    /// The numbers of the records [`read_all`] reads.
    fn read_seqs(log: &Log, at: &mut Position) -> Vec<u64> {
        read_all(log, at).iter().map(|r| r.seq).collect()
    }

    fn segment_files(dir: &Dir) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        files
    }

    /// A wake makes a waiter ask its `stop` again at once, and a record ends the wait whatever
    /// `stop` says; without either the wait lasts its whole timeout.
    #[test]
    fn a_wake_ends_a_wait_for_more_whose_stop_says_so() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let dir = Dir::new("log-wake");
        let (log, _, _) = open(&dir).unwrap();
        let (stopping, asked) = (AtomicBool::new(false), AtomicUsize::new(0));
        let long = Duration::from_secs(60);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let began = std::time::Instant::now();
                let more = log.wait_for_more(0, long, || {
                    asked.fetch_add(1, Ordering::SeqCst);
                    stopping.load(Ordering::SeqCst)
                });
                (more, began.elapsed())
            });
            // Asked once under the log's lock, the waiter waits before a wake can take it.
            let deadline = std::time::Instant::now() + long;
            while asked.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
                std::thread::yield_now();
            }
            stopping.store(true, Ordering::SeqCst);
            log.wake();
            let (more, waited) = waiter.join().unwrap();
            assert!(!more, "no record came");
            assert!(waited < long / 2, "the wake went unheard: {waited:?}");
        });
        // A record ends the wait whatever `stop` says.
        std::thread::scope(|s| {
            let waiter = s.spawn(|| log.wait_for_more(0, long, || false));
            put(&log, 1);
            assert!(waiter.join().unwrap(), "the record is seen");
        });
        // Nothing to wait for: the timeout, with `stop` saying no.
        assert!(!log.wait_for_more(1, Duration::from_millis(10), || false));
    }

    #[test]
    fn records_are_numbered_written_read_back_and_found_again_at_start() {
        let dir = Dir::new("log-basic");
        let (log, mut at, opened) = open(&dir).unwrap();
        assert_eq!(opened.records, 0);
        for n in 1..=200 {
            assert_eq!(put(&log, n), n, "numbered in order, without gaps");
        }
        assert!(segment_files(&dir).len() > 1, "4 KiB segments rolled");
        let read = read_all(&log, &mut at);
        assert_eq!(read.len(), 200);
        assert_eq!(read[41].seq, 42);
        assert_eq!(read[41].lines(&read[41].units[0]), "m,r=r42 v=42 42\n");
        drop(log);
        let mut changes = Vec::new();
        let (_, start, opened) = open_sized(&dir, LIMIT, false, 4096, &mut |c| {
            changes.extend_from_slice(c)
        })
        .unwrap();
        assert_eq!(opened.records, 200);
        assert_eq!(opened.undelivered.0, 200, "nothing was marked delivered");
        assert_eq!(start.next_seq, 1);
        assert!(opened.torn.is_none());
        assert_eq!(opened.change_bytes, changes.len() as u64);
        let changes = String::from_utf8(changes).unwrap();
        assert_eq!(changes.lines().count(), 200);
        assert!(changes.starts_with("{\"seq\":1,"));
    }

    #[test]
    fn requests_waiting_together_share_a_write_and_each_learns_its_number() {
        let dir = Dir::new("log-group");
        let (log, mut at, _) = open(&dir).unwrap();
        let log = Arc::new(log);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    (0..50).map(|i| put(&log, t * 1000 + i)).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        seqs.sort();
        assert_eq!(seqs, (1..=400).collect::<Vec<_>>());
        let read = read_all(&log, &mut at);
        assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    }

    /// Runs `threads` threads putting `each` records (numbered from `from`), with the writer's
    /// turn held and given back `holds` times meanwhile (as a snapshot on a full disk does);
    /// returns the numbers they learned, or fails when one of them never learns its own.
    fn put_together(log: &Arc<Log>, threads: u64, each: u64, holds: usize) -> Vec<u64> {
        let (done, finished) = std::sync::mpsc::channel();
        let writers: Vec<_> = (0..threads)
            .map(|t| {
                let log = Arc::clone(log);
                let done = done.clone();
                std::thread::spawn(move || {
                    let seqs: Vec<u64> = (0..each).map(|i| put(&log, t * 1000 + i)).collect();
                    let _ = done.send(seqs);
                })
            })
            .collect();
        let holder = {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                for _ in 0..holds {
                    let hold = log.hold_writes();
                    std::thread::yield_now();
                    drop(hold);
                    std::thread::yield_now();
                }
            })
        };
        let mut seqs = Vec::new();
        for _ in 0..threads {
            // Generous for a busy machine; a waiter never woken waits forever.
            let some = finished
                .recv_timeout(Duration::from_secs(120))
                .expect("a request waiting for its group was never woken");
            seqs.extend(some);
        }
        for w in writers {
            w.join().unwrap();
        }
        holder.join().unwrap();
        seqs.sort();
        seqs
    }

    /// A waiter sleeps on its group's signal, and only one of the next group is woken to write
    /// it: none may sleep through its group, whether the writer of the last group comes back
    /// with another record or not, and whether the writer's turn was held meanwhile.
    #[test]
    fn waiters_of_the_next_group_sleep_until_theirs_is_written_and_none_is_forgotten() {
        let dir = Dir::new("log-turns");
        let (log, mut at, _) = open(&dir).unwrap();
        let log = Arc::new(log);
        // One record a thread: the writer of a group does not come back to write the next.
        let mut seqs = Vec::new();
        for _ in 0..20 {
            let from = seqs.len() as u64;
            let round = put_together(&log, 32, 1, 0);
            assert_eq!(round, (from + 1..=from + 32).collect::<Vec<_>>());
            seqs.extend(round);
        }
        // Many records a thread, the writer's turn held and given back meanwhile.
        let round = put_together(&log, 12, 150, 200);
        assert_eq!(round, (641..=2440).collect::<Vec<_>>());
        assert_eq!(read_all(&log, &mut at).len(), 2440);
        assert!(log.lock().groups.is_empty(), "every outcome read is let go");
    }

    /// Runs `threads` threads putting `each` records, while `beside` runs again and again on
    /// another thread until they are done; returns what each put learned (its number, or why it
    /// was refused), or fails when a request is never woken.
    fn put_beside(
        log: &Arc<Log>,
        threads: u64,
        each: u64,
        beside: impl Fn(&Log) + Send + 'static,
    ) -> Vec<Result<u64, LogError>> {
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let side = {
            let (log, finished) = (Arc::clone(log), Arc::clone(&finished));
            std::thread::spawn(move || {
                while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                    beside(&log);
                    std::thread::yield_now();
                }
            })
        };
        let (done, learned) = std::sync::mpsc::channel();
        for t in 0..threads {
            let (log, done) = (Arc::clone(log), done.clone());
            std::thread::spawn(move || {
                let got: Vec<_> = (0..each).map(|i| try_put(&log, t * 1000 + i)).collect();
                let _ = done.send(got);
            });
        }
        let mut all = Vec::new();
        for _ in 0..threads {
            // Generous for a busy machine; a waiter never woken waits forever.
            let got = learned
                .recv_timeout(Duration::from_secs(120))
                .expect("a request waiting for its group was never woken");
            all.extend(got);
        }
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        side.join().unwrap();
        all
    }

    /// [`put`], its refusal returned.
    fn try_put(log: &Log, n: u64) -> Result<u64, LogError> {
        put_line(log, &format!("m,r=r{n} v={n} {n}\n"))
    }

    /// Writes failing now and then, their cut-backs too (the log broken, mended at a later
    /// append or write, which keeps the writer's turn meanwhile, or its queue failed), while
    /// requests come from many threads: none is left waiting, and the records written are
    /// numbered without a gap and are what is read back, none of a failed group among them.
    #[test]
    fn requests_beside_failed_writes_and_mends_are_all_answered_without_a_gap() {
        let dir = Dir::new("log-turns-mend");
        let (log, mut at, _) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        let log = Arc::new(log);
        let learned = put_beside(&log, 8, 150, |log| {
            if log.fail_writes.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                log.fail_next_undos(2);
                log.fail_next_writes(1);
            }
            std::thread::sleep(Duration::from_millis(10));
        });
        assert!(learned.iter().any(Result::is_err), "no write failed");
        let mut seqs: Vec<u64> = learned
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        seqs.sort();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "numbered without a gap"
        );
        let read: Vec<u64> = read_all(&log, &mut at).iter().map(|r| r.seq).collect();
        assert_eq!(read, seqs, "what is read back is what was written");
        assert!(log.lock().groups.is_empty(), "every outcome read is let go");
    }

    /// The segment being written let go between two writes (delivered, the disk full): the
    /// trim keeps the writer's turn meanwhile, and wakes the requests queued behind it when it
    /// gives it back. Each round, requests come while such a trim runs, and no other after.
    #[test]
    fn requests_queued_behind_a_trim_are_woken() {
        let dir = Dir::new("log-turns-trim");
        let (log, mut at, _) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        let log = Arc::new(log);
        let mut next = 1;
        let mut unread = Vec::new();
        for _ in 0..150 {
            assert_eq!(put(&log, 0), next, "numbered on");
            next += 1;
            // Everything delivered: the segment being written goes at the next trim once
            // the disk is found full.
            unread.extend(read_all(&log, &mut at));
            log.delivered(next - 1, &std::mem::take(&mut unread));
            let start = Arc::new(std::sync::Barrier::new(9));
            let (done, learned) = std::sync::mpsc::channel();
            for t in 0..8 {
                let (log, start, done) = (Arc::clone(&log), Arc::clone(&start), done.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let _ = done.send(try_put(&log, t));
                });
            }
            start.wait();
            log.disk_is_full();
            let mut seqs: Vec<u64> = (0..8)
                .map(|_| {
                    learned
                        .recv_timeout(Duration::from_secs(60))
                        .expect("a request queued behind the trim was never woken")
                        .unwrap()
                })
                .collect();
            seqs.sort();
            assert_eq!(seqs, (next..next + 8).collect::<Vec<_>>(), "no gap");
            next += 8;
            unread = read_all(&log, &mut at);
            let read: Vec<u64> = unread.iter().map(|r| r.seq).collect();
            assert_eq!(read, seqs, "read back, in a segment begun anew or not");
        }
    }

    /// Writes that find the disk full while requests queue behind them: the writer of such a
    /// group wakes the requests queued behind it, then asks for the trim that lets the segment
    /// being written go once delivered, which keeps the writer's turn meanwhile; the deliverer
    /// takes everything as it comes and trims too. No request is left waiting, no outcome is
    /// left unread, and the records written are numbered without a gap and read back.
    #[test]
    fn requests_beside_writes_that_find_the_disk_full_and_their_trims_are_all_answered() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = Dir::new("log-turns-full");
        let (log, at, _) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        let log = Arc::new(log);
        log.fail_full.store(true, SeqCst);
        // The deliverer: where it reads, and the numbers it read.
        let deliverer = Arc::new(Mutex::new((at, Vec::new())));
        let learned = {
            let deliverer = Arc::clone(&deliverer);
            put_beside(&log, 8, 150, move |log| {
                let mut guard = crate::sync::lock(&deliverer);
                let (at, seqs) = &mut *guard;
                let read = read_all(log, at);
                if let Some(last) = read.last() {
                    log.delivered(last.seq, &read);
                }
                seqs.extend(read.iter().map(|r| r.seq));
                drop(guard);
                if log.fail_writes.load(SeqCst) == 0 {
                    log.fail_next_writes(1);
                }
                std::thread::sleep(Duration::from_millis(2));
            })
        };
        let failed: Vec<&LogError> = learned.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(!failed.is_empty(), "no write failed");
        assert!(failed.iter().all(|e| e.is_disk_full()), "{failed:?}");
        let mut seqs: Vec<u64> = learned
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        seqs.sort();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "numbered without a gap"
        );
        let (mut at, mut read) = {
            let guard = crate::sync::lock(&deliverer);
            (guard.0, guard.1.clone())
        };
        read.extend(read_all(&log, &mut at).iter().map(|r| r.seq));
        assert_eq!(read, seqs, "what is read back is what was written");
        assert!(log.lock().groups.is_empty(), "every outcome read is let go");
    }

    #[test]
    fn points_beyond_the_limit_are_refused_and_changes_alone_have_headroom() {
        let dir = Dir::new("log-full");
        let (log, _, _) = open_sized(&dir, 300, false, 4096, &mut |_| {}).unwrap();
        put(&log, 1);
        put(&log, 2);
        let lines = "m v=1 1\n";
        let unit = Unit {
            run: Uuid::nil(),
            points: 1,
            lines,
        };
        let err = log
            .append(Kind::Request, 0, b"", &[unit], None)
            .unwrap_err();
        assert!(matches!(err, LogError::Full { limit: 300, .. }), "{err}");
        assert!(err.to_string().contains("storage.max_spool_bytes = 300"));
        let ticket = log
            .append(Kind::Request, 3, b"{\"seq\":3}\n", &[], None)
            .unwrap();
        log.wait(ticket).unwrap();
    }

    /// `is_full` (what `/health` reads): set by points refused for the log's bound, not by a
    /// change alone; cleared by points taken or by a delivery; set at a start whose bound is
    /// below what waits.
    #[test]
    fn the_log_says_it_is_full_from_a_refusal_for_its_bound_until_room_is_made() {
        let dir = Dir::new("log-is-full");
        let (log, mut at, _) = open_sized(&dir, 300, false, 4096, &mut |_| {}).unwrap();
        put(&log, 1);
        put(&log, 2);
        assert!(!log.is_full());
        let unit = Unit {
            run: Uuid::nil(),
            points: 1,
            lines: "m v=1 1\n",
        };
        let ticket = log
            .append(Kind::Request, 3, b"{\"seq\":3}\n", &[], None)
            .unwrap();
        log.wait(ticket).unwrap();
        assert!(!log.is_full(), "a change alone has headroom");
        assert!(log.append(Kind::Request, 0, b"", &[unit], None).is_err());
        assert!(log.is_full(), "points were refused for the bound");
        let read = read_all(&log, &mut at);
        log.delivered(read[0].seq, &read[..1]);
        assert!(!log.is_full(), "InfluxDB took part of the log");
        put(&log, 4);
        assert!(log.append(Kind::Request, 0, b"", &[unit], None).is_err());
        assert!(log.is_full());
        drop(log);
        let (log, _, opened) = open_sized(&dir, 100, false, 4096, &mut |_| {}).unwrap();
        assert!(opened.undelivered.1 >= 100, "{:?}", opened.undelivered);
        assert!(log.is_full(), "opened with more waiting than its bound");
        drop(log);
        let (log, _, _) = open_sized(&dir, 1 << 20, false, 4096, &mut |_| {}).unwrap();
        assert!(!log.is_full());
    }

    /// A record of points larger than the log's whole bound is refused whatever waits: the
    /// log is not full for it, and the writes after it are taken.
    #[test]
    fn a_record_larger_than_the_bound_does_not_make_the_log_full() {
        let dir = Dir::new("log-not-full-of-one");
        let (log, _, _) = open_sized(&dir, 300, false, 4096, &mut |_| {}).unwrap();
        let big = "m v=1 1\n".repeat(100);
        let unit = Unit {
            run: Uuid::nil(),
            points: 100,
            lines: &big,
        };
        assert!(log.append(Kind::Request, 0, b"", &[unit], None).is_err());
        assert!(
            !log.is_full(),
            "the log holds nothing: the next write is taken"
        );
        put(&log, 1);
    }

    #[test]
    fn delivered_segments_in_a_snapshot_are_deleted_and_the_start_resumes_after_them() {
        let dir = Dir::new("log-trim");
        let (log, mut at, _) = open(&dir).unwrap();
        for n in 1..=100 {
            put(&log, n);
        }
        let before = segment_files(&dir).len();
        let read = log.read(&mut at, 1 << 20).unwrap();
        let last = read.last().unwrap().seq;
        assert_eq!(last, 100);
        log.delivered(last, &read);
        assert_eq!(log.undelivered_bytes(), 0);
        assert!(
            log.needs_snapshot(),
            "delivered segments wait for a snapshot"
        );
        assert_eq!(
            segment_files(&dir).len(),
            before,
            "not yet: their changes are in no snapshot"
        );
        log.snapshot_written(100, 10);
        assert!(!log.needs_snapshot());
        assert_eq!(
            segment_files(&dir).len(),
            1,
            "only the segment being written is left"
        );
        drop(log);
        let (log, at, opened) = open(&dir).unwrap();
        assert_eq!(opened.undelivered, (0, 0));
        assert_eq!(at.next_seq, 101);
        assert_eq!(
            put(&log, 101),
            101,
            "numbers go on after the deleted segments"
        );
    }

    #[test]
    fn a_segment_trimmed_under_the_reader_is_stepped_over() {
        let dir = Dir::new("log-trim-reader");
        let (log, mut at, _) = open(&dir).unwrap();
        for n in 1..=100 {
            put(&log, n);
        }
        assert!(log.segments() > 2);
        // Read everything of the first segment (and only it), deliver it, snapshot: trimmed
        // while the reader still points at it.
        let first = log.lock().segments[0].clone();
        let mut read = Vec::new();
        while at.next_seq <= first.last {
            read.extend(log.read(&mut at, 1).unwrap());
        }
        assert_eq!(read.last().unwrap().seq, first.last);
        log.delivered(first.last, &read);
        log.snapshot_written(first.last, 1);
        assert!(!first.path.exists(), "the delivered segment is gone");
        // The reader kept the file open between its reads: closed when it was deleted, or its
        // room would stay taken (on a full disk, the room the deletion was for).
        let open_deleted = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| {
                // Its own path: another test's log may hold a segment of the same name.
                target
                    .to_string_lossy()
                    .starts_with(&*first.path.to_string_lossy())
            })
            .count();
        assert_eq!(open_deleted, 0, "the deleted segment is still open");
        let rest = read_all(&log, &mut at);
        assert_eq!(rest.first().unwrap().seq, first.last + 1);
        assert_eq!(rest.last().unwrap().seq, 100);
    }

    /// Five records in one segment, as (file, offsets of the records).
    fn five_records(dir: &Dir) -> (PathBuf, Vec<u64>) {
        let (log, mut at, _) = open_sized(dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        for n in 1..=5 {
            put(&log, n);
        }
        let mut offsets = vec![FIRST_RECORD];
        for r in read_all(&log, &mut at) {
            offsets.push(offsets.last().unwrap() + r.bytes);
        }
        offsets.pop();
        (segment_files(dir)[0].clone(), offsets)
    }

    #[test]
    fn a_write_cut_short_by_a_crash_is_dropped_at_start() {
        let dir = Dir::new("log-torn");
        let (file, offsets) = five_records(&dir);
        // The last record was half written when the power went: the rest of the file is zeros.
        let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&[0; 20], offsets[4] + 10).unwrap();
        drop(f);
        let (log, mut at, opened) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        let (path, offset, _) = opened.torn.clone().expect("a torn tail");
        assert_eq!((path, offset), (file.clone(), offsets[4]));
        assert_eq!(opened.records, 4);
        assert_eq!(read_all(&log, &mut at).len(), 4);
        assert_eq!(put(&log, 5), 5, "the dropped record's number is used again");
    }

    #[test]
    fn a_damaged_record_inside_stops_the_start_and_repair_drops_only_it() {
        for (what, damage) in [
            ("one byte set to NUL", 0usize),
            ("the whole record zeroed", 1),
            ("its length changed", 2),
        ] {
            let dir = Dir::new(&format!("log-damaged-{damage}"));
            let (file, offsets) = five_records(&dir);
            let mut bytes = fs::read(&file).unwrap();
            let (start, end) = (offsets[2] as usize, offsets[3] as usize);
            match damage {
                0 => bytes[(start + end) / 2] = 0,
                1 => bytes[start..end].fill(0),
                _ => bytes[start] ^= 0x40,
            }
            fs::write(&file, &bytes).unwrap();
            let err = match open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}) {
                Err(e) => e,
                Ok(_) => panic!("{what}: the start went on"),
            };
            let text = err.to_string();
            assert!(
                matches!(&err, OpenError::Damaged { offset, after_seq: 2, .. } if *offset == offsets[2]),
                "{what}: {text}"
            );
            assert!(
                text.contains(&file.display().to_string()) && text.contains("--repair"),
                "{text}"
            );
            let (log, mut at, opened) =
                open_sized(&dir, LIMIT, true, 1 << 20, &mut |_| {}).unwrap();
            assert_eq!(opened.repaired.len(), 1, "{what}");
            let seqs = read_seqs(&log, &mut at);
            assert_eq!(seqs, [1, 2, 4, 5], "{what}");
            drop(log);
            // Repaired for good: the next start needs no --repair.
            let (_, _, opened) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
            assert_eq!(opened.records, 4, "{what}");
        }
    }

    /// One unit of one point, `lines`.
    fn one_line(lines: &str) -> [Unit<'_>; 1] {
        [Unit {
            run: Uuid::nil(),
            points: 1,
            lines,
        }]
    }

    /// Appends `m v=2 2` with its write made to fail, and the next `undos` cut-backs too; its
    /// ticket.
    fn fail_a_write(log: &Log, undos: usize) -> u64 {
        log.fail_next_writes(1);
        log.fail_next_undos(undos);
        log.append(Kind::Request, 0, b"", &one_line("m v=2 2\n"), None)
            .unwrap()
    }

    /// A failed write whose cut-back fails too stops the log (a record refused to its request
    /// must not be read back at the next start), but not for good: the cut-back is tried again
    /// at each append, and once it works records are taken again, numbered on without a gap.
    #[test]
    fn a_failed_write_that_could_not_be_cut_back_is_cut_back_later_and_the_log_goes_on() {
        let dir = Dir::new("log-mend");
        let (log, mut at, _) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        put(&log, 1);
        let ticket = fail_a_write(&log, 2);
        assert!(log.wait(ticket).is_err(), "the write failed");
        let failed = log.write_failure().expect("told").since;
        assert!(
            matches!(
                log.append(Kind::Request, 0, b"", &one_line("m v=3 3\n"), None),
                Err(LogError::Broken)
            ),
            "the cut-back failed again: nothing is taken"
        );
        assert!(
            log.write_failure().expect("still told").since > failed,
            "a request refused while the log is broken is a failure as of now (GET /health)"
        );
        assert_eq!(put(&log, 4), 2, "cut back now: taken, numbered on");
        assert_eq!(log.write_failure(), None, "a write that succeeds clears it");
        let read = read_all(&log, &mut at);
        let lines: Vec<&str> = read.iter().map(|r| r.lines(&r.units[0])).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("v=2")), "{lines:?}");
        drop(log);
        let (_, _, opened) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        assert_eq!(
            opened.records, 2,
            "the failed write is not read back at a start"
        );
    }

    /// A log broken by a failed cut-back whose segment is then let go (delivered, a snapshot
    /// holding it, the disk full: its file and the failed bytes deleted) has nothing left to cut
    /// back: it takes records again, rather than refusing every append until a restart.
    #[test]
    fn a_broken_log_whose_segment_is_let_go_takes_records_again() {
        let dir = Dir::new("log-mend-let-go");
        let (log, mut at, _) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        put(&log, 1);
        let ticket = fail_a_write(&log, 1);
        assert!(log.wait(ticket).is_err(), "the write failed");
        let read = read_all(&log, &mut at);
        log.delivered(1, &read);
        log.disk_is_full();
        log.snapshot_written(1, 10);
        assert_eq!(log.segments(), 0, "the segment is let go");
        let taken = log.append(Kind::Request, 0, b"", &one_line("m v=3 3\n"), None);
        assert!(taken.is_ok(), "nothing left to cut back, yet {taken:?}");
    }

    /// A stop while the log is broken (the failed write's cut-back failed) tries the cut-back
    /// once more: a disk that works again then leaves no refused record for the next start to
    /// read back.
    #[test]
    fn a_stop_while_broken_cuts_the_failed_write_back_once_more() {
        let dir = Dir::new("log-broken-stop");
        let (log, _, _) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        put(&log, 1);
        let ticket = fail_a_write(&log, 2);
        assert!(
            log.wait(ticket).is_err(),
            "the write failed: refused to its request"
        );
        assert!(
            matches!(
                log.append(Kind::Request, 0, b"", &one_line("m v=3 3\n"), None),
                Err(LogError::Broken)
            ),
            "the cut-back failed again"
        );
        log.close();
        drop(log);
        let (_, _, opened) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        assert_eq!(opened.records, 1, "the refused record is not read back");
    }

    #[test]
    fn a_failed_write_fails_its_group_leaves_no_record_and_no_gap() {
        let dir = Dir::new("log-fail");
        let (log, mut at, _) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        put(&log, 1);
        let path = segment_files(&dir)[0].clone();
        log.fail_writes
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let err = put_line(&log, "m v=2 2\n").unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(log.undelivered_bytes() > 0, "the first record waits still");
        assert_eq!(put(&log, 3), 2, "the failed record took no number");
        let seqs = read_seqs(&log, &mut at);
        assert_eq!(seqs, [1, 2]);
    }

    /// The group buffer kept for the next group (`spare`) carries none of a failed group's
    /// bytes, nor of a written one's: after a failed write, a wide write and small ones taking
    /// turns, every record read back holds its own line only, once, and the files hold
    /// exactly the records read (no bytes of a group written again in another).
    #[test]
    fn records_after_failed_and_wide_groups_hold_their_own_lines_only() {
        let dir = Dir::new("log-spare-fail");
        let (log, mut at, _) = open_sized(&dir, LIMIT, false, 1 << 22, &mut |_| {}).unwrap();
        put(&log, 1);
        log.fail_next_writes(1);
        put_line(&log, "m,r=failed v=99 99\n").unwrap_err();
        put(&log, 2);
        put_wide(&log, 3).unwrap();
        put(&log, 4);
        log.fail_next_writes(1);
        put_wide(&log, 5).unwrap_err();
        put(&log, 6);
        let read = read_all(&log, &mut at);
        let lines: Vec<String> = read
            .iter()
            .flat_map(|r| r.units_with_lines().map(|(_, l)| l.to_string()))
            .collect();
        assert_eq!(
            lines.len(),
            5,
            "{:?}",
            read.iter().map(|r| r.seq).collect::<Vec<_>>()
        );
        for (line, n) in lines.iter().zip([1, 2, 3, 4, 6]) {
            assert!(line.starts_with(&format!("m,r=r{n} ")), "{n}: {line:.40}");
            assert_eq!(line.matches('\n').count(), 1, "{n}: {line:.40}");
        }
        assert!(!lines.iter().any(|l| l.contains("failed")));
        let on_disk: u64 = segment_files(&dir)
            .iter()
            .map(|p| fs::read(p).unwrap())
            .map(|b| b.windows(6).filter(|w| w == b"m,r=r6").count() as u64)
            .sum();
        assert_eq!(on_disk, 1, "record 6 is in the files once");
    }

    /// A segment begun whose directory entry could not be synced is not left behind: the
    /// group that began it fails, and the next one begins it anew and is written.
    #[test]
    fn a_segment_whose_directory_sync_failed_is_begun_anew_by_the_next_group() {
        let dir = Dir::new("log-dir-sync");
        let (log, mut at, _) = open_sized(&dir, LIMIT, false, 1 << 20, &mut |_| {}).unwrap();
        log.fail_dir_syncs
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let err = put_line(&log, "m v=1 1\n").unwrap_err();
        assert!(err.to_string().contains("cannot sync"), "{err}");
        assert!(segment_files(&dir).is_empty(), "{:?}", segment_files(&dir));
        assert_eq!(put(&log, 2), 1, "the next group is written, numbered first");
        let seqs = read_seqs(&log, &mut at);
        assert_eq!(seqs, [1]);
    }

    /// A file with the name of the segment a group begins, not listed in the log (left by
    /// a begin that failed after making it), is replaced: the group is written.
    #[test]
    fn a_file_in_the_way_of_a_segment_begun_is_replaced() {
        let dir = Dir::new("log-in-the-way");
        let (log, mut at, _) = open(&dir).unwrap();
        fs::write(dir.path().join(segment_name(1)), record::segment_header()).unwrap();
        assert_eq!(put(&log, 1), 1);
        let seqs = read_seqs(&log, &mut at);
        assert_eq!(seqs, [1]);
    }

    /// A full segment closed whose next one could not be begun (its directory sync failed):
    /// the next group begins that one even when it would fit in the closed segment, so that
    /// no segment's name is passed over. A file of that name left there (its removal failed,
    /// or undone by a crash) is begun anew, instead of stopping the next start as a segment
    /// that starts inside the one before it.
    #[test]
    fn a_segment_not_begun_at_a_roll_is_begun_by_the_next_group_even_a_small_one() {
        let dir = Dir::new("log-roll-dir-sync");
        let (log, mut at, _) = open(&dir).unwrap();
        assert_eq!(put(&log, 1), 1);
        log.fail_dir_syncs
            .store(1, std::sync::atomic::Ordering::SeqCst);
        let err = put_wide(&log, 2).unwrap_err();
        assert!(err.to_string().contains("cannot sync"), "{err}");
        // What a removal that failed would leave.
        fs::write(dir.path().join(segment_name(2)), record::segment_header()).unwrap();
        assert_eq!(
            put(&log, 3),
            2,
            "fits in the closed segment, but begins the next"
        );
        for n in 4..=60 {
            put(&log, n);
        }
        let seqs = read_seqs(&log, &mut at);
        assert_eq!(seqs, (1..=59).collect::<Vec<_>>());
        drop(log);
        let (_, _, opened) = open(&dir).unwrap();
        assert_eq!(opened.records, 59);
    }

    #[test]
    fn a_log_directory_swapped_for_a_link_is_not_followed() {
        let dir = Dir::new("log-swapped");
        let elsewhere = Dir::new("log-swapped-elsewhere");
        let log_path = dir.path().join("log");
        let (log, mut at, _) = Log::open_sized(
            crate::storage::tests::log_dir(dir.path()),
            LIMIT,
            false,
            4096,
            &mut |_| {},
        )
        .unwrap();
        put(&log, 1);
        let moved = dir.path().join("moved");
        fs::rename(&log_path, &moved).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), &log_path).unwrap();
        // Written, rolled into new segments, read back, delivered, trimmed and marked.
        for n in 2..=100 {
            assert_eq!(put(&log, n), n);
        }
        let read = read_all(&log, &mut at);
        assert_eq!(read.len(), 100);
        log.delivered(100, &read);
        log.snapshot_written(100, 10);
        log.save_delivered();
        assert_eq!(
            fs::read_dir(elsewhere.path()).unwrap().count(),
            0,
            "nothing written through the link"
        );
        assert_eq!(
            fs::read_to_string(moved.join(DELIVERED_FILE)).unwrap(),
            "metrics-consumer-delivered 1\n100\n"
        );
        assert_eq!(log.segments(), 1, "the delivered segments were trimmed");
        let left: Vec<_> = fs::read_dir(&moved)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    #[test]
    fn every_segment_starts_with_its_header_and_the_delivered_mark_names_its_format() {
        let dir = Dir::new("log-headers");
        let (log, mut at, _) = open(&dir).unwrap();
        for n in 1..=100 {
            put(&log, n);
        }
        let files = segment_files(&dir);
        assert!(files.len() > 2);
        for file in &files {
            let bytes = fs::read(file).unwrap();
            assert_eq!(&bytes[..8], b"MCLOG\0\x04\0", "{}", file.display());
        }
        let read = read_all(&log, &mut at);
        log.delivered(100, &read);
        log.save_delivered();
        assert_eq!(
            fs::read_to_string(dir.path().join(DELIVERED_FILE)).unwrap(),
            "metrics-consumer-delivered 1\n100\n"
        );
        drop(log);
        let (_, at, _) = open(&dir).unwrap();
        assert_eq!(at.next_seq, 101, "the mark reads back");
    }

    #[test]
    fn a_segment_or_mark_of_another_version_or_format_stops_the_start_naming_the_file() {
        for (what, file, bytes) in [
            ("another version", "segment", b"MCLOG\0\x05\0".to_vec()),
            ("another magic", "segment", b"RAFTLOG\x01".to_vec()),
            ("no header", "segment", b"\x10\0\0\0 some record".to_vec()),
            (
                "a mark of another version",
                "delivered",
                b"metrics-consumer-delivered 2\n5\n".to_vec(),
            ),
            ("a mark without its format", "delivered", b"5\n".to_vec()),
        ] {
            let dir = Dir::new(&format!("log-foreign-{}", what.replace(' ', "-")));
            let (log, _, _) = open(&dir).unwrap();
            for n in 1..=3 {
                put(&log, n);
            }
            drop(log);
            let path = match file {
                "segment" => segment_files(&dir)[0].clone(),
                _ => dir.path().join(DELIVERED_FILE),
            };
            let mut all = fs::read(&path).unwrap_or_default();
            if file == "segment" {
                all[..8].copy_from_slice(&bytes[..8]);
            } else {
                all = bytes;
            }
            fs::write(&path, &all).unwrap();
            let err = match open(&dir) {
                Err(e) => e,
                Ok(_) => panic!("{what}: the start went on"),
            };
            let text = err.to_string();
            assert!(matches!(err, OpenError::Format { .. }), "{what}: {text}");
            assert!(
                text.contains(&path.display().to_string())
                    && text.contains("reads log segments of format \"MCLOG\" versions 1 to 4"),
                "{what}: {text}"
            );
            if what == "another version" {
                assert!(text.contains("version 5 of the format"), "{what}: {text}");
            } else if what.contains("version") {
                assert!(text.contains("version 2 of the format"), "{what}: {text}");
            }
        }
    }

    #[test]
    fn a_last_segment_whose_header_never_reached_the_disk_is_taken_as_empty() {
        let dir = Dir::new("log-no-header");
        let (log, _, _) = open(&dir).unwrap();
        put(&log, 1);
        drop(log);
        // A crash between making the next segment and writing its header.
        fs::write(dir.path().join(segment_name(2)), [0u8; 0]).unwrap();
        let (log, _, opened) = open(&dir).unwrap();
        assert_eq!(opened.records, 1);
        assert_eq!(put(&log, 2), 2);
        assert_eq!(
            &fs::read(dir.path().join(segment_name(2))).unwrap()[..6],
            b"MCLOG\0"
        );
    }

    /// A record that does not read back after others that do: the ones before it are handed
    /// to the deliverer, and the error comes at the next read, where the damage is. Dropped
    /// with the error, they would have been skipped for good.
    #[test]
    fn records_read_before_a_damaged_one_are_returned_and_the_error_comes_next() {
        let dir = Dir::new("log-read-damaged");
        let (log, mut at, _) = open(&dir).unwrap();
        for n in 1..=3 {
            put(&log, n);
        }
        let segment = segment_files(&dir)[0].clone();
        let mut bytes = fs::read(&segment).unwrap();
        // The third record's checksum, past the first two records.
        let mut third = FIRST_RECORD as usize;
        for _ in 0..2 {
            third += record::HEADER_BYTES
                + u32::from_le_bytes(bytes[third..third + 4].try_into().unwrap()) as usize;
        }
        bytes[third + 4] ^= 0xff;
        fs::write(&segment, &bytes).unwrap();
        let read = log.read(&mut at, 1 << 20).unwrap();
        assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(at.next_seq, 3);
        let err = log.read(&mut at, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        assert_eq!(at.next_seq, 3, "still at the damage");
    }

    /// A start whose last segment holds no record and names an older version (one begun, then
    /// its first write failed, before an upgrade) writes on in a segment of this version
    /// begun under the same name: the log lists it once, and the reader reads its records.
    /// Listed twice, the reader went from the first to the "next", the same, for ever.
    #[test]
    fn an_empty_segment_of_an_older_version_is_begun_anew_and_listed_once() {
        let dir = Dir::new("log-empty-old-tail");
        let mut header = record::segment_header();
        header[6..].copy_from_slice(&record::SEGMENT_VERSION_CLIENTS.to_le_bytes());
        fs::write(dir.path().join(segment_name(1)), header).unwrap();
        let (log, mut at, _) = open(&dir).unwrap();
        assert_eq!(put(&log, 1), 1);
        assert_eq!(log.segments(), 1, "the segment is listed once");
        let log = Arc::new(log);
        let reader = std::thread::spawn({
            let log = Arc::clone(&log);
            move || {
                read_all(&log, &mut at)
                    .iter()
                    .map(|r| r.seq)
                    .collect::<Vec<_>>()
            }
        });
        let waited = std::time::Instant::now();
        while !reader.is_finished() && waited.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(reader.is_finished(), "the reader went round for ever");
        assert_eq!(reader.join().unwrap(), [1]);
    }
}
