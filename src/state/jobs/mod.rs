//! The job table: which runs are running, committing, finished or expired, and the ticker's
//! heartbeat lines.
//!
//! The table is one `Mutex<HashMap<Uuid, Box<Job>>>`. The lock is held only to read or change the
//! table, never across I/O: handlers take what they need, write to InfluxDB without the lock,
//! and come back to record the outcome. That is why a register first reserves a slot (so
//! `jobs.max_running` holds under concurrency) and a commit first marks the job `Committing`
//! (so two commits of one run cannot both succeed). A snapshot takes the jobs' shared parts
//! under the lock ([`Job::saved`]) and encodes them after it is let go.
//!
//! Every change that must survive a restart is one journal record (a line of JSON: the job's
//! whole saved state, or its removal) with the next number of the table's changes, handed back
//! to the caller as a [`Change`], which puts it into the log with the points of the same
//! request. Records applied in the order of their numbers over any older state of the table
//! give the newest one, whatever order they reached the disk in. A request's changes are
//! *prepared* rather than made at once: a register's new job, a progress, a commit's end. The
//! table changes only once their record is on disk ([`Slot::fill`],
//! [`PreparedProgress::applied`], [`Jobs::end_commit`]), so a request answered with an error
//! changed nothing, and a snapshot never shows a run finished whose result may yet be lost; the snapshot says it covers the changes
//! below the oldest one still prepared. Changes made while forgetting old runs wait in the
//! table and go out with the next change. This module does no I/O.
//!
//! Finished and expired runs are remembered for `jobs.finished_retention`, and at most
//! `jobs.max_finished` of them (past it, the oldest of the owner holding the most is forgotten
//! first, so one token's runs never push out another's), so memory stays bounded however many
//! runs come and go. A finished run keeps only what the state page shows.

pub mod format;
mod prepared;
mod read;
mod sample;
mod saved;
mod table;
mod tick;

use prepared::Held;
pub use prepared::{PreparedProgress, Slot};
#[cfg(test)]
pub use sample::MAX_SAMPLES;
pub use sample::Sample;
use sample::add_sample;
pub use saved::SavedJob;
use table::{Table, charge, hold, release, uncharge};

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use compact_str::CompactString;
use uuid::Uuid;

use crate::ingest::line_protocol::FieldValue;
use crate::ingest::points::{self, BeatLine, Event, Run};
use crate::state::schema::Known;
use crate::sync::Signal;
use crate::verdict::Threshold;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Heartbeats are written.
    Running,
    /// A commit's points are being written; `expired` is when the run had expired, if it had
    /// (Unix ms): what it goes back to if the commit is not recorded.
    Committing { expired: Option<i64> },
    /// Committed at this time (Unix ms); kept for `jobs.finished_retention`.
    Finished { at_ms: i64 },
    /// No commit within `jobs.max_age`; heartbeats stopped. A late commit is still accepted:
    /// the result of a long test is worth more than the rule it broke.
    Expired { at_ms: i64 },
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Committing { .. } => "committing",
            State::Finished { .. } => "finished",
            State::Expired { .. } => "expired",
        }
    }

    /// Counts against `jobs.max_running`.
    pub(super) fn is_active(self) -> bool {
        matches!(self, State::Running | State::Committing { .. })
    }

    /// When a finished or expired run ended.
    fn ended_at(self) -> Option<i64> {
        match self {
            State::Finished { at_ms } | State::Expired { at_ms } => Some(at_ms),
            State::Running | State::Committing { .. } => None,
        }
    }
}

/// One run in the table. What a snapshot saves of it (its run, fields, checks and owner) is
/// shared (`Arc`), never changed in place but replaced, so that a snapshot takes it under the
/// table's lock for a few pointer copies and encodes it after the lock is let go
/// ([`Job::saved`]).
#[derive(Debug, Clone)]
pub struct Job {
    pub run: Arc<Run>,
    /// The fields every heartbeat repeats.
    pub fields: Arc<Vec<(CompactString, FieldValue)>>,
    /// The heartbeat, encoded from `run` and `fields` whenever they change.
    beat: BeatLine,
    /// When the gateway last heard of the run (Unix ms): saved, shown, and where an expiry's
    /// stamp counts from. Expiry itself runs on `seen_mono_ms`.
    pub last_seen_ms: i64,
    /// When the gateway last heard of the run on the table's monotonic timeline (ms since
    /// [`Jobs::mono_ms`]'s origin; negative for a run restored from disk, whose age is its
    /// wall-clock age at the start): `jobs.max_age` and `jobs.progress_timeout` count from here,
    /// so a step of the wall clock neither expires a run nor keeps one alive. Not saved.
    pub seen_mono_ms: i64,
    /// A progress of the run is being recorded: the job changes once its record is on disk
    /// (or not at all), and nothing else changes it meanwhile. Not saved.
    busy: bool,
    pub state: State,
    pub heartbeats: u64,
    /// The run has reported progress: it is expected to go on doing so, and expires after
    /// `jobs.progress_timeout` without it.
    pub progressed: bool,
    /// The name of the token that registered the run (none without tokens).
    pub owner: Option<Arc<str>>,
    /// The checks the register gave (`thresholds`), judged at the commit. Saved.
    pub thresholds: Arc<Vec<Threshold>>,
    /// Users and requests per second at the register and at each progress, oldest first, at
    /// most [`MAX_SAMPLES`] (when full, every other one is let go, so they span the whole
    /// run): the report's chart. Not saved: a restart begins them again.
    pub samples: Vec<Sample>,
}

impl Job {
    /// A run that has just registered.
    pub fn running(run: Run, fields: Vec<(String, FieldValue)>, now_ms: i64) -> Job {
        // Names held inline (most are short).
        let fields: Vec<(CompactString, FieldValue)> =
            fields.into_iter().map(|(k, v)| (k.into(), v)).collect();
        Job {
            beat: BeatLine::new(&run, &fields),
            run: Arc::new(run),
            fields: Arc::new(fields),
            // The wall clock's time until the caller, who has a monotonic clock, sets it.
            last_seen_ms: now_ms,
            seen_mono_ms: now_ms,
            busy: false,
            state: State::Running,
            heartbeats: 0,
            progressed: false,
            owner: None,
            thresholds: thresholds(Vec::new()),
            samples: Vec::new(),
        }
    }

    /// What a snapshot saves of the job, sharing its parts with the table: taking it costs a
    /// few pointer copies, whatever the run's size.
    pub fn saved(&self) -> SavedJob {
        SavedJob {
            run: Arc::clone(&self.run),
            fields: Arc::clone(&self.fields),
            thresholds: Arc::clone(&self.thresholds),
            owner: self.owner.clone(),
            last_seen_ms: self.last_seen_ms,
            state: self.state,
            heartbeats: self.heartbeats,
            progressed: self.progressed,
        }
    }

    /// Adds a sample of the run's fields as they are at `ms` (see [`Sample::of`]).
    pub fn sample(&mut self, ms: i64) {
        add_sample(&mut self.samples, Sample::of(&self.fields, ms));
    }

    /// Bytes the run keeps in memory while it runs, about: its heartbeat encoded once, and the
    /// tags and fields it is encoded from. What `jobs.max_table_bytes` bounds.
    pub fn weight(&self) -> usize {
        const OVERHEAD: usize = 256;
        let tags: usize = self.run.tags.iter().map(|(k, v)| k.len() + v.len()).sum();
        let fields: usize = self
            .fields
            .iter()
            .map(|(k, v)| {
                k.len()
                    + match v {
                        FieldValue::Str(s) => s.len(),
                        _ => 8,
                    }
            })
            .sum();
        let checks: usize = self
            .thresholds
            .iter()
            .map(|t| 64 + t.endpoint.len() + t.check.text.len())
            .sum();
        OVERHEAD
            + self.run.host.len()
            + tags
            + fields
            + self.beat.size()
            + checks
            + self.samples.len() * std::mem::size_of::<Sample>()
    }

    /// Whether `caller` (a client's name; `None` without tokens) may act on the run: a run
    /// registered with a token belongs to that token's client alone.
    pub fn is_for(&self, caller: Option<&str>) -> bool {
        match (self.owner.as_deref(), caller) {
            (Some(owner), Some(caller)) => owner == caller,
            (Some(_), None) | (None, _) => true,
        }
    }

    /// Bytes of the run's encoded heartbeat: what `limits.max_run_bytes` bounds.
    pub fn beat_len(&self) -> usize {
        self.beat.size()
    }

    /// Lets go of what a finished run no longer needs: its tags, fields and heartbeat.
    fn shed(&mut self) {
        if !self.run.tags.is_empty() {
            self.run = Arc::new(Run {
                uuid: self.run.uuid,
                host: self.run.host.clone(),
                tags: Vec::new(),
                started_ms: self.run.started_ms,
            });
        }
        self.fields = Arc::default();
        self.beat = BeatLine::default();
        self.thresholds = thresholds(Vec::new());
        self.samples = Vec::new();
    }
}

/// `checks` as a job holds them: most runs register none, and those share one empty list
/// rather than each holding an allocation of its own (10 000 running jobs, 0.4 MiB).
pub fn thresholds(checks: Vec<Threshold>) -> Arc<Vec<Threshold>> {
    static NONE: std::sync::LazyLock<Arc<Vec<Threshold>>> = std::sync::LazyLock::new(Arc::default);
    if checks.is_empty() {
        Arc::clone(&NONE)
    } else {
        Arc::new(checks)
    }
}

/// What one owner (a token's client) may hold: `max_running` active jobs and registers under
/// way, and `max_bytes` of the table (by [`Job::weight`]), at most.
#[derive(Debug, Clone, Copy)]
pub struct Quota<'a> {
    pub owner: &'a str,
    pub max_running: usize,
    pub max_bytes: usize,
    /// Bytes of its records not yet delivered the log may hold (its `max_spool_bytes`): not
    /// the table's to check, carried here for the log (`storage::log::Share`).
    pub max_spool_bytes: u64,
}

#[derive(Debug)]
pub struct Jobs {
    table: Mutex<Table>,
    /// Woken when a job stops being busy, and when a prepared change is applied or dropped.
    settled: Signal,
    /// The origin of the table's monotonic timeline ([`Jobs::mono_ms`]).
    origin: Instant,
}

/// Changes of the job table as journal records, to be made durable together with the points of
/// the same request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// The number of the last change among `bytes` (0: none).
    pub seq: u64,
    /// Journal lines, each ending in '\n'.
    pub bytes: Vec<u8>,
}

/// What one running job and the whole table may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// `jobs.max_running`: jobs active at once at most (a run revived by progress counts).
    pub max_running: usize,
    /// Fields a run may have at most.
    pub max_fields: usize,
    /// `limits.max_run_bytes`: bytes of a running job's heartbeat line (measurement, tags
    /// and fields) at most.
    pub max_run_bytes: usize,
    /// `jobs.max_table_bytes`: bytes the whole table may hold, by [`Job::weight`].
    pub max_table_bytes: usize,
}

impl Bounds {
    fn check_run(&self, job: &Job) -> Result<(), Refusal> {
        let bytes = job.beat_len();
        if bytes > self.max_run_bytes {
            return Err(Refusal::RunTooLarge {
                bytes,
                limit: self.max_run_bytes,
            });
        }
        Ok(())
    }
}

/// How long runs live, in ms: what a tick expires and forgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ages {
    /// `jobs.max_age`: a running job not heard from for this long expires.
    pub max_age_ms: i64,
    /// `jobs.progress_timeout`: a running job that has reported progress, and then none for
    /// this long, expires.
    pub progress_timeout_ms: i64,
    /// `jobs.finished_retention`: an ended job is forgotten this long after it ended.
    pub retention_ms: i64,
}

/// Why a commit cannot go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Finished {
        at_ms: i64,
    },
    InProgress,
    /// Progress would give the run more than this many fields.
    TooManyFields(usize),
    /// Progress names a field like one of the run's tags.
    IsTag,
    /// `limit` jobs are active or being registered (`jobs.max_running`).
    TooManyRunning {
        limit: usize,
    },
    /// The owner has `limit` jobs active or being registered (its token's `max_running`).
    OwnerFull {
        limit: usize,
    },
    /// The owner's jobs would hold more than `limit` bytes (its share of
    /// `jobs.max_table_bytes`).
    OwnerTableFull {
        limit: usize,
    },
    /// The run's heartbeat would be `bytes` long, more than `limit` (`limits.max_run_bytes`).
    RunTooLarge {
        bytes: usize,
        limit: usize,
    },
    /// The table would hold more than `limit` bytes (`jobs.max_table_bytes`).
    TableFull {
        limit: usize,
    },
}

/// One line of a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickLine {
    pub run: Uuid,
    /// The name of the token that registered the run: whose share of the log its line takes.
    pub owner: Option<Arc<str>>,
    /// Where the line ends in [`Tick::lines`] (exclusive; it starts where the one before ends).
    pub end: usize,
    /// A heartbeat (else the run's expiry event).
    pub beat: bool,
}

/// What one tick writes.
#[derive(Debug, Default)]
pub struct Tick {
    /// Heartbeats and expiry events as line protocol, one line each, ending in '\n'.
    pub lines: String,
    /// One entry per line of `lines`, in order.
    pub units: Vec<TickLine>,
    pub expired: usize,
    pub removed: usize,
    /// The tick's changes of the table: expiries and removals.
    pub change: Change,
}

/// Counts for the state page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub running: usize,
    pub committing: usize,
    pub finished: usize,
    pub expired: usize,
}

impl Jobs {
    /// An empty table that remembers at most `max_ended` finished or expired runs.
    #[cfg(test)]
    pub fn new(max_ended: usize) -> Jobs {
        Jobs {
            table: Mutex::new(Table::new(max_ended)),
            settled: Signal::new(),
            origin: Instant::now(),
        }
    }

    /// `at` on the table's monotonic timeline: ms since the table was made (negative before).
    pub fn mono_ms(&self, at: Instant) -> i64 {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        match at.checked_duration_since(self.origin) {
            Some(d) => ms(d),
            None => -ms(self.origin.duration_since(at)),
        }
    }

    /// The table's lock, once run `uuid` is not busy with a progress being recorded (at once
    /// when it is not, or is unknown). The wait lasts one write of the log at most.
    fn lock_settled(&self, uuid: &Uuid) -> MutexGuard<'_, Table> {
        let mut t = self.lock();
        while t.jobs.get(uuid).is_some_and(|j| j.busy) {
            t = crate::sync::unpoisoned(self.settled.wait(t));
        }
        t
    }

    /// The table's count of bytes, the weight of its jobs summed, and the places reserved:
    /// the first two equal and the third 0 when no register or progress is under way.
    #[cfg(test)]
    pub fn accounted(&self) -> (usize, usize, usize) {
        let t = self.lock();
        let sum = t.jobs.values().map(|j| j.weight()).sum();
        (t.bytes, sum, t.reserved)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere must not take the table down with it: every change below leaves the
        // table consistent before anything can panic, so the data is still good.
        crate::sync::lock(&self.table)
    }

    /// Reserves room for a new running job of `quota`'s owner (if any).
    ///
    /// Errors: [`Refusal::TooManyRunning`] when `max_running` jobs are active or being
    /// registered, [`Refusal::OwnerFull`] when the owner has its `max_running` already.
    pub fn reserve(
        &self,
        max_running: usize,
        quota: Option<Quota<'_>>,
    ) -> Result<Slot<'_>, Refusal> {
        let mut t = self.lock();
        if t.active + t.reserved >= max_running {
            return Err(Refusal::TooManyRunning { limit: max_running });
        }
        if let Some(q) = quota
            && t.held.get(q.owner).copied().unwrap_or(0) >= q.max_running
        {
            return Err(Refusal::OwnerFull {
                limit: q.max_running,
            });
        }
        t.reserved += 1;
        let owner = quota.map(|q| q.owner);
        hold(&mut t.held, owner);
        Ok(Slot {
            jobs: Held::Borrowed(self),
            filled: false,
            prepared: None,
            bytes: 0,
            owner: owner.map(str::to_string),
            owner_max_bytes: quota.map_or(usize::MAX, |q| q.max_bytes),
        })
    }

    /// Marks a job `Committing` and hands back its run, or says why it can't be committed.
    pub fn begin_commit(&self, uuid: &Uuid, caller: Option<&str>) -> Result<Run, Refusal> {
        let mut t = self.lock_settled(uuid);
        let Some(job) = t.jobs.get_mut(uuid).filter(|j| j.is_for(caller)) else {
            return Err(Refusal::Unknown);
        };
        let (state, was_active) = match job.state {
            State::Running => (State::Committing { expired: None }, true),
            State::Expired { at_ms } => (
                State::Committing {
                    expired: Some(at_ms),
                },
                false,
            ),
            State::Committing { .. } => return Err(Refusal::InProgress),
            State::Finished { at_ms } => return Err(Refusal::Finished { at_ms }),
        };
        job.state = state;
        let run = Run::clone(&job.run);
        let owner = job.owner.clone();
        if !was_active {
            t.revived(owner.as_deref());
        }
        Ok(run)
    }

    /// Live progress, prepared: the fields replace those of the same name in the following
    /// heartbeats, and the expiry clocks start again (`jobs.max_age`, and from now on
    /// `jobs.progress_timeout`); an expired run that reports progress is running again (it takes
    /// a place at once, as a register's slot does). The table does not change until
    /// [`PreparedProgress::applied`] says the change is on disk; dropped without it, nothing
    /// changed. Meanwhile the run is busy: another progress or a commit of it waits for the
    /// outcome, and a tick neither expires nor forgets it. `seen_mono_ms` is now on the table's
    /// monotonic timeline ([`Jobs::mono_ms`]).
    ///
    /// Errors: the run is unknown, finished or being committed; a field is named like a tag;
    /// the run would break one of `bounds`.
    pub fn prepare_progress(
        &self,
        uuid: &Uuid,
        fields: Vec<(String, FieldValue)>,
        (now_ms, seen_mono_ms): (i64, i64),
        bounds: &Bounds,
        caller: Option<Quota<'_>>,
    ) -> Result<(Change, PreparedProgress<'_>), Refusal> {
        let mut guard = self.lock_settled(uuid);
        let t = &mut *guard;
        let job = t.jobs.get_mut(uuid).ok_or(Refusal::Unknown)?;
        if !job.is_for(caller.map(|q| q.owner)) {
            return Err(Refusal::Unknown);
        }
        match job.state {
            State::Finished { at_ms } => return Err(Refusal::Finished { at_ms }),
            State::Committing { .. } => return Err(Refusal::InProgress),
            State::Running | State::Expired { .. } => {}
        }
        if fields
            .iter()
            .any(|(k, _)| job.run.tags.iter().any(|(t, _)| t == k))
        {
            return Err(Refusal::IsTag);
        }
        let revived = matches!(job.state, State::Expired { .. });
        let owner = job.owner.clone();
        if revived {
            // Running again takes a place, as a register does.
            if t.active + t.reserved >= bounds.max_running {
                return Err(Refusal::TooManyRunning {
                    limit: bounds.max_running,
                });
            }
            if let (Some(q), Some(name)) = (caller, owner.as_deref())
                && t.held.get(name).copied().unwrap_or(0) >= q.max_running
            {
                return Err(Refusal::OwnerFull {
                    limit: q.max_running,
                });
            }
        }
        let mut merged = Vec::clone(&job.fields);
        for (k, v) in fields {
            match merged.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => merged.push((k.into(), v)),
            }
        }
        if merged.len() > bounds.max_fields {
            return Err(Refusal::TooManyFields(bounds.max_fields));
        }
        let old = job.weight();
        let mut changed = Job {
            fields: Arc::new(merged),
            beat: BeatLine::default(),
            ..Job::clone(job)
        };
        changed.beat = BeatLine::new(&changed.run, &changed.fields);
        changed.sample(now_ms);
        bounds.check_run(&changed)?;
        let new = changed.weight();
        if new > old {
            if t.bytes - old + new > bounds.max_table_bytes {
                return Err(Refusal::TableFull {
                    limit: bounds.max_table_bytes,
                });
            }
            if let (Some(q), Some(name)) = (caller, owner.as_deref())
                && t.held_bytes.get(name).copied().unwrap_or(0) - old + new > q.max_bytes
            {
                return Err(Refusal::OwnerTableFull { limit: q.max_bytes });
            }
        }
        changed.last_seen_ms = now_ms;
        changed.seen_mono_ms = seen_mono_ms;
        changed.progressed = true;
        if revived {
            changed.state = State::Running;
        }
        job.busy = true;
        // What the change may add is held from now on, as a register's slot holds its bytes.
        let extra = new.saturating_sub(old);
        charge(&mut t.bytes, &mut t.held_bytes, owner.as_deref(), extra);
        if revived {
            t.reserved += 1;
            hold(&mut t.held, owner.as_deref());
        }
        let change = t.prepare(&changed);
        Ok((
            change.clone(),
            PreparedProgress {
                jobs: Held::Borrowed(self),
                uuid: *uuid,
                owner,
                seq: change.seq,
                job: Some(changed),
                old,
                extra,
                revived,
            },
        ))
    }

    /// The journal record that finishes a run being committed, at `now_ms`; the table shows
    /// the run finished once [`Jobs::end_commit`] says the record is on disk. `None` when the
    /// run is not being committed.
    pub fn prepare_finish(&self, uuid: &Uuid, now_ms: i64) -> Option<Change> {
        let mut t = self.lock();
        let job = t.jobs.get(uuid)?;
        if !matches!(job.state, State::Committing { .. }) {
            return None;
        }
        let mut finished = job.clone();
        finished.state = State::Finished { at_ms: now_ms };
        finished.shed();
        Some(t.prepare(&finished))
    }

    /// Records a commit's outcome: finished at `now_ms` when `recorded` (its prepared change,
    /// if one was prepared, is on disk); else back as it was, nothing of the commit recorded.
    pub fn end_commit(&self, uuid: &Uuid, prepared: Option<u64>, recorded: bool, now_ms: i64) {
        self.end_commit_locked(uuid, prepared, recorded, now_ms);
        self.settled.notify_all();
    }

    fn end_commit_locked(&self, uuid: &Uuid, prepared: Option<u64>, recorded: bool, now_ms: i64) {
        let mut guard = self.lock();
        let t = &mut *guard;
        if let Some(seq) = prepared {
            t.preparing.remove(&seq);
        }
        let Some(job) = t.jobs.get_mut(uuid) else {
            return;
        };
        let State::Committing { expired } = job.state else {
            return;
        };
        // Not recorded: back as it was, expiry time included; nothing to journal.
        job.state = match (recorded, expired) {
            (true, _) => State::Finished { at_ms: now_ms },
            (false, None) => State::Running,
            (false, Some(at_ms)) => State::Expired { at_ms },
        };
        let ended_at = job.state.ended_at().unwrap_or(now_ms);
        if recorded {
            let before = job.weight();
            job.shed();
            let owner = job.owner.as_deref();
            uncharge(&mut t.bytes, &mut t.held_bytes, owner, before);
            charge(&mut t.bytes, &mut t.held_bytes, owner, job.weight());
        }
        if job.state != State::Running {
            t.active -= 1;
            release(&mut t.held, job.owner.as_deref());
            t.ended(*uuid, ended_at);
        }
    }

    /// [`Jobs::prepare_progress`] applied at once, `now_ms` on both clocks.
    #[cfg(test)]
    pub fn progress(
        &self,
        uuid: &Uuid,
        fields: Vec<(String, FieldValue)>,
        now_ms: i64,
        bounds: &Bounds,
        caller: Option<Quota<'_>>,
    ) -> Result<Change, Refusal> {
        let (change, prepared) =
            self.prepare_progress(uuid, fields, (now_ms, now_ms), bounds, caller)?;
        prepared.applied();
        Ok(change)
    }

    /// A tick's `change` could not be recorded: its records go out with the next change (they
    /// are numbered, so their place among the others does not matter), and a snapshot covers
    /// them anyway, so the log never misses a change the table made.
    pub fn unrecorded(&self, change: Change) {
        if change.bytes.is_empty() {
            return;
        }
        let mut t = self.lock();
        let mut bytes = change.bytes;
        bytes.extend_from_slice(&t.pending);
        t.pending = bytes;
    }

    /// Counts the heartbeats that were recorded. Not a journal record: the counts reach the
    /// disk with the job's next record or the next snapshot.
    pub fn count_beats(&self, uuids: &[Uuid]) {
        let mut t = self.lock();
        for uuid in uuids {
            if let Some(job) = t.jobs.get_mut(uuid) {
                job.heartbeats += 1;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
