//! The job table: which runs are running, committing, finished or expired, and the ticker's
//! heartbeat lines.
//!
//! The table is one `Mutex<HashMap<Uuid, Job>>`. The lock is held only to read or change the
//! table, never across I/O: handlers take what they need, write to InfluxDB without the lock,
//! and come back to record the outcome. That is why a register first reserves a slot (so
//! `jobs.max_running` holds under concurrency) and a commit first marks the job `Committing`
//! (so two commits of one run cannot both succeed).
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
//! `jobs.max_finished` of them (the oldest are forgotten first), so memory stays bounded
//! however many runs come and go. A finished run keeps only what the state page shows.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::ingest::line_protocol::FieldValue;
use crate::ingest::points::{self, BeatLine, Event, Run};
use crate::state::journal;
use crate::state::schema::Known;

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
    fn is_active(self) -> bool {
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

#[derive(Debug, Clone)]
pub struct Job {
    pub run: Run,
    /// The fields every heartbeat repeats.
    pub fields: Vec<(String, FieldValue)>,
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
    pub owner: Option<String>,
}

impl Job {
    /// A run that has just registered.
    pub fn running(run: Run, fields: Vec<(String, FieldValue)>, now_ms: i64) -> Job {
        Job {
            beat: BeatLine::new(&run, &fields),
            run,
            fields,
            // The wall clock's time until the caller, who has a monotonic clock, sets it.
            last_seen_ms: now_ms,
            seen_mono_ms: now_ms,
            busy: false,
            state: State::Running,
            heartbeats: 0,
            progressed: false,
            owner: None,
        }
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
        OVERHEAD + self.run.host.len() + tags + fields + self.beat.size()
    }

    /// Whether `caller` (a client's name; `None` without tokens) may act on the run: a run
    /// registered with a token belongs to that token's client alone.
    pub fn is_for(&self, caller: Option<&str>) -> bool {
        match (&self.owner, caller) {
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
        self.run.tags = Vec::new();
        self.fields = Vec::new();
        self.beat = BeatLine::default();
    }
}

#[derive(Debug)]
struct Table {
    jobs: HashMap<Uuid, Job>,
    /// Jobs in an active state, kept with every state change so a register needs no scan.
    active: usize,
    /// Registers between their slot reservation and their outcome.
    reserved: usize,
    /// Per owner (token name): its active jobs and its registers under way. Owners with none
    /// have no entry.
    held: HashMap<String, usize>,
    /// [`Job::weight`] of every job in the table, and of every register prepared (held by its
    /// [`Slot`]).
    bytes: usize,
    /// The same, per owner. Owners with none have no entry.
    held_bytes: HashMap<String, usize>,
    /// Finished and expired runs as they ended, oldest first: (when, which). An entry whose job
    /// has since been revived, or ended again, no longer matches it and is skipped.
    ended: VecDeque<(i64, Uuid)>,
    /// Jobs now finished or expired.
    ended_count: usize,
    /// `jobs.max_finished`.
    max_ended: usize,
    /// Journal records of changes not yet handed out (removals of forgotten runs); they go
    /// out with the next [`Change`].
    pending: Vec<u8>,
    /// Sequence number of the last change.
    seq: u64,
    /// Changes prepared but not yet made: a snapshot covers only the changes below them.
    preparing: BTreeSet<u64>,
}

impl Table {
    fn new(max_ended: usize) -> Table {
        Table {
            jobs: HashMap::new(),
            active: 0,
            reserved: 0,
            held: HashMap::new(),
            bytes: 0,
            held_bytes: HashMap::new(),
            ended: VecDeque::new(),
            ended_count: 0,
            max_ended,
            pending: Vec::new(),
            seq: 0,
            preparing: BTreeSet::new(),
        }
    }

    /// Hands out the records made since the last change (ending with the latest), as one
    /// [`Change`] whose number is the latest.
    fn take(&mut self) -> Change {
        // Every numbered change adds its record to `pending`, so its last record is the
        // latest change whenever it holds any.
        let bytes = std::mem::take(&mut self.pending);
        Change {
            seq: if bytes.is_empty() { 0 } else { self.seq },
            bytes,
        }
    }

    /// A journal record of `job` in the state it is about to take, numbered and marked
    /// prepared; its removals waiting (if any) go with it.
    fn prepare(&mut self, job: &Job) -> Change {
        self.seq += 1;
        journal::encode_record(&mut self.pending, self.seq, Some(job), &job.run.uuid);
        self.preparing.insert(self.seq);
        self.take()
    }

    /// Records the job's present state in the journal.
    fn put(&mut self, uuid: &Uuid) {
        if let Some(job) = self.jobs.get(uuid) {
            self.seq += 1;
            journal::encode_record(&mut self.pending, self.seq, Some(job), uuid);
        }
    }

    /// Records the job's removal in the journal.
    fn del(&mut self, uuid: &Uuid) {
        self.seq += 1;
        journal::encode_record(&mut self.pending, self.seq, None, uuid);
    }

    fn is_ended_at(&self, uuid: &Uuid, at_ms: i64) -> bool {
        self.jobs
            .get(uuid)
            .and_then(|j| j.state.ended_at())
            .is_some_and(|at| at == at_ms)
    }

    /// A job has just become finished or expired; forgets the oldest ended runs beyond the cap.
    fn ended(&mut self, uuid: Uuid, at_ms: i64) -> usize {
        // In order of time: a run put back to the time it had expired at (a late commit that
        // was not recorded) is not the newest.
        let at = self.ended.partition_point(|&(at, _)| at <= at_ms);
        self.ended.insert(at, (at_ms, uuid));
        self.ended_count += 1;
        let mut forgotten = 0;
        while self.ended_count > self.max_ended {
            if self.front_is_busy() {
                break;
            }
            let Some((at, oldest)) = self.ended.pop_front() else {
                break;
            };
            if self.forget(&oldest, at) {
                forgotten += 1;
            }
        }
        self.tidy_ended();
        forgotten
    }

    /// Whether the oldest ended run is being revived by a progress not yet recorded: it is not
    /// forgotten under it (its progress may yet fail, and it would then be expired still).
    fn front_is_busy(&self) -> bool {
        self.ended
            .front()
            .and_then(|(_, uuid)| self.jobs.get(uuid))
            .is_some_and(|j| j.busy)
    }

    /// A finished or expired job is active again (a late commit began, or progress revived it).
    fn revived(&mut self, owner: Option<&str>) {
        self.ended_count -= 1;
        self.active += 1;
        hold(&mut self.held, owner);
    }

    /// Removes a job that ended at `at_ms`, if it still did.
    fn forget(&mut self, uuid: &Uuid, at_ms: i64) -> bool {
        if !self.is_ended_at(uuid, at_ms) {
            return false;
        }
        if let Some(job) = self.jobs.remove(uuid) {
            uncharge(
                &mut self.bytes,
                &mut self.held_bytes,
                job.owner.as_deref(),
                job.weight(),
            );
        }
        self.ended_count -= 1;
        self.del(uuid);
        true
    }

    /// Gives back the room of jobs forgotten since the table was last larger: a map keeps the
    /// capacity of the most jobs it ever held (about 210 bytes per job, mapped apart from the
    /// allocator's arenas once above 128 KiB, so giving it back lowers the resident memory),
    /// and the queue of ended runs likewise. Called by the tick once it has forgotten runs; the
    /// slack of 1 024 entries keeps a table of steady size from being rebuilt every tick.
    fn shrink(&mut self) {
        if self.jobs.capacity() > 4 * self.jobs.len() + 1024 {
            self.jobs.shrink_to(2 * self.jobs.len());
        }
        if self.ended.capacity() > 4 * self.ended.len() + 1024 {
            self.ended.shrink_to(2 * self.ended.len());
        }
    }

    /// Drops entries of `ended` that match no job any more, once they are the majority.
    fn tidy_ended(&mut self) {
        if self.ended.len() > 2 * self.ended_count + 1024 {
            let jobs = &self.jobs;
            self.ended.retain(|(at, uuid)| {
                jobs.get(uuid)
                    .and_then(|j| j.state.ended_at())
                    .is_some_and(|a| a == *at)
            });
        }
    }
}

/// One more active job or register under way for `owner`.
fn hold(held: &mut HashMap<String, usize>, owner: Option<&str>) {
    if let Some(owner) = owner {
        *held.entry(owner.to_string()).or_default() += 1;
    }
}

/// One less.
fn release(held: &mut HashMap<String, usize>, owner: Option<&str>) {
    if let Some(owner) = owner
        && let Some(n) = held.get_mut(owner)
    {
        *n -= 1;
        if *n == 0 {
            held.remove(owner);
        }
    }
}

/// Counts `n` more bytes held, in all and by `owner`.
fn charge(all: &mut usize, by: &mut HashMap<String, usize>, owner: Option<&str>, n: usize) {
    *all += n;
    if let Some(owner) = owner {
        *by.entry(owner.to_string()).or_default() += n;
    }
}

/// Counts `n` bytes less.
fn uncharge(all: &mut usize, by: &mut HashMap<String, usize>, owner: Option<&str>, n: usize) {
    *all -= n;
    if let Some(owner) = owner
        && let Some(held) = by.get_mut(owner)
    {
        *held -= n;
        if *held == 0 {
            by.remove(owner);
        }
    }
}

/// What one owner (a token's client) may hold: `max_running` active jobs and registers under
/// way, and `max_bytes` of the table (by [`Job::weight`]), at most.
#[derive(Debug, Clone, Copy)]
pub struct Quota<'a> {
    pub owner: &'a str,
    pub max_running: usize,
    pub max_bytes: usize,
}

#[derive(Debug)]
pub struct Jobs {
    table: Mutex<Table>,
    /// Woken when a job stops being busy.
    settled: Condvar,
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

/// A place for one more running job, held while register writes its points.
pub struct Slot<'a> {
    jobs: &'a Jobs,
    filled: bool,
    /// The number of the prepared change, once there is one.
    prepared: Option<u64>,
    /// The prepared job's [`Job::weight`], counted in the table's bytes.
    bytes: usize,
    /// Whose register it is: its place is counted as theirs.
    owner: Option<String>,
    /// Bytes of the table its owner may hold at most.
    owner_max_bytes: usize,
}

impl Slot<'_> {
    /// The journal record that adds `job`; the job joins the table with [`Slot::fill`] once
    /// the record is on disk. Its bytes count against the table's from now on.
    ///
    /// Errors: [`Refusal::RunTooLarge`] when the job's heartbeat is longer than
    /// `bounds.max_run_bytes`, [`Refusal::TableFull`] when the table would hold more than
    /// `bounds.max_table_bytes`.
    pub fn prepare(&mut self, job: &Job, bounds: &Bounds) -> Result<Change, Refusal> {
        bounds.check_run(job)?;
        let weight = job.weight();
        let mut t = self.jobs.lock();
        if let Some(seq) = self.prepared.take() {
            t.preparing.remove(&seq);
        }
        let t = &mut *t;
        let owner = self.owner.as_deref();
        uncharge(
            &mut t.bytes,
            &mut t.held_bytes,
            owner,
            std::mem::take(&mut self.bytes),
        );
        if t.bytes + weight > bounds.max_table_bytes {
            return Err(Refusal::TableFull {
                limit: bounds.max_table_bytes,
            });
        }
        if let Some(name) = owner
            && t.held_bytes.get(name).copied().unwrap_or(0) + weight > self.owner_max_bytes
        {
            return Err(Refusal::OwnerTableFull {
                limit: self.owner_max_bytes,
            });
        }
        charge(&mut t.bytes, &mut t.held_bytes, owner, weight);
        self.bytes = weight;
        let change = t.prepare(job);
        self.prepared = Some(change.seq);
        Ok(change)
    }

    /// Adds the job, whose record is on disk. Its owner is the slot's.
    pub fn fill(mut self, mut job: Job) {
        let mut t = self.jobs.lock();
        t.reserved -= 1;
        job.owner = self.owner.take();
        if job.state.is_active() {
            t.active += 1;
        } else {
            release(&mut t.held, job.owner.as_deref());
        }
        if let Some(seq) = self.prepared.take() {
            t.preparing.remove(&seq);
        }
        let t = &mut *t;
        let owner = job.owner.as_deref();
        uncharge(
            &mut t.bytes,
            &mut t.held_bytes,
            owner,
            std::mem::take(&mut self.bytes),
        );
        charge(&mut t.bytes, &mut t.held_bytes, owner, job.weight());
        t.jobs.insert(job.run.uuid, job);
        self.filled = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut t = self.jobs.lock();
        if !self.filled {
            t.reserved -= 1;
            release(&mut t.held, self.owner.as_deref());
        }
        if let Some(seq) = self.prepared.take() {
            t.preparing.remove(&seq);
        }
        let t = &mut *t;
        uncharge(
            &mut t.bytes,
            &mut t.held_bytes,
            self.owner.as_deref(),
            std::mem::take(&mut self.bytes),
        );
    }
}

/// A progress whose change is prepared and not yet on disk; see [`Jobs::prepare_progress`].
/// Dropped without [`PreparedProgress::applied`], it leaves the table as it was.
pub struct PreparedProgress<'a> {
    jobs: &'a Jobs,
    uuid: Uuid,
    owner: Option<String>,
    /// The number of the prepared change.
    seq: u64,
    /// The job as the change makes it; taken when applied.
    job: Option<Job>,
    /// [`Job::weight`] before the change.
    old: usize,
    /// Bytes held meanwhile beyond `old` (what the change adds).
    extra: usize,
    /// The run was expired and runs again: it holds a place meanwhile.
    revived: bool,
}

impl PreparedProgress<'_> {
    /// The change is on disk: the job takes it.
    pub fn applied(mut self) {
        let changed = self.job.take();
        let mut guard = self.jobs.lock();
        let t = &mut *guard;
        self.settle(t);
        if let (Some(mut changed), Some(job)) = (changed, t.jobs.get_mut(&self.uuid)) {
            // Heartbeats counted meanwhile.
            changed.heartbeats = job.heartbeats;
            let new = changed.weight();
            *job = changed;
            let owner = self.owner.as_deref();
            uncharge(&mut t.bytes, &mut t.held_bytes, owner, self.old);
            charge(&mut t.bytes, &mut t.held_bytes, owner, new);
            if self.revived {
                t.revived(owner);
            }
        }
        drop(guard);
        self.jobs.settled.notify_all();
    }

    /// Gives back what the preparation held, and the job's turn; once.
    fn settle(&mut self, t: &mut Table) {
        if self.seq == 0 {
            return;
        }
        t.preparing.remove(&self.seq);
        self.seq = 0;
        let owner = self.owner.as_deref();
        if self.revived {
            t.reserved -= 1;
            release(&mut t.held, owner);
        }
        uncharge(&mut t.bytes, &mut t.held_bytes, owner, self.extra);
        if let Some(job) = t.jobs.get_mut(&self.uuid) {
            job.busy = false;
        }
    }
}

impl Drop for PreparedProgress<'_> {
    fn drop(&mut self) {
        if self.seq == 0 {
            return;
        }
        let mut t = self.jobs.lock();
        self.settle(&mut t);
        drop(t);
        self.jobs.settled.notify_all();
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickLine {
    pub run: Uuid,
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
            settled: Condvar::new(),
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
            t = self
                .settled
                .wait(t)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        t
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
            jobs: self,
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
        let run = job.run.clone();
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
        let mut merged = job.fields.clone();
        for (k, v) in fields {
            match merged.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => merged.push((k, v)),
            }
        }
        if merged.len() > bounds.max_fields {
            return Err(Refusal::TooManyFields(bounds.max_fields));
        }
        let old = job.weight();
        let mut changed = Job {
            fields: merged,
            beat: BeatLine::default(),
            ..job.clone()
        };
        changed.beat = BeatLine::new(&changed.run, &changed.fields);
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
                jobs: self,
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
    pub fn end_commit(&self, uuid: &Uuid, prepared: Option<&Change>, recorded: bool, now_ms: i64) {
        let mut guard = self.lock();
        let t = &mut *guard;
        if let Some(change) = prepared {
            t.preparing.remove(&change.seq);
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

    /// Writes this tick's heartbeats and expiry events as line protocol, and forgets jobs past
    /// their retention. A running job expires when not heard from for `ages.max_age_ms`, or,
    /// once it has reported progress, for `ages.progress_timeout_ms`, on the monotonic clock
    /// (`now_mono_ms`, see [`Jobs::mono_ms`]), so a step of the wall clock (`now_ms`) expires
    /// nothing. Its expiry is stamped when its silence ran out, counted from the wall-clock time
    /// it was last heard from, and never later than `now_ms`. A run whose progress is being
    /// recorded is heard from: it does not expire. Only CPU work happens under the lock; the
    /// caller sends the lines.
    pub fn tick(&self, (now_ms, now_mono_ms): (i64, i64), ages: &Ages) -> Tick {
        let mut tick = Tick::default();
        let mut guard = self.lock();
        let t = &mut *guard;
        while let Some(&(at_ms, uuid)) = t.ended.front() {
            if now_ms - at_ms < ages.retention_ms || t.front_is_busy() {
                break;
            }
            t.ended.pop_front();
            if t.forget(&uuid, at_ms) {
                tick.removed += 1;
            }
        }
        if tick.removed > 0 {
            t.shrink();
        }
        let mut expired = Vec::new();
        for job in t.jobs.values_mut() {
            if job.state != State::Running {
                continue;
            }
            let silent_ms = if job.busy {
                0
            } else {
                now_mono_ms.saturating_sub(job.seen_mono_ms)
            };
            let why = if silent_ms >= ages.max_age_ms {
                Some(("no commit", ages.max_age_ms))
            } else if job.progressed && silent_ms >= ages.progress_timeout_ms {
                Some(("no progress", ages.progress_timeout_ms))
            } else {
                None
            };
            if let Some((what, after_ms)) = why {
                let at_ms = job.last_seen_ms.saturating_add(silent_ms).min(now_ms);
                job.state = State::Expired { at_ms };
                let text = format!(
                    "load test on {} expired: {what} within {} (run {})",
                    job.run.host,
                    crate::config::format_duration(std::time::Duration::from_millis(
                        after_ms as u64
                    )),
                    job.run.uuid
                );
                let event = points::event(&job.run, Event::Expired, at_ms, text);
                event.encode(&mut tick.lines);
                tick.lines.push('\n');
                tick.units.push(TickLine {
                    run: job.run.uuid,
                    end: tick.lines.len(),
                    beat: false,
                });
                expired.push((job.run.uuid, at_ms));
                release(&mut t.held, job.owner.as_deref());
                continue;
            }
            if job.beat.encode(job.run.started_ms, now_ms, &mut tick.lines) {
                tick.units.push(TickLine {
                    run: job.run.uuid,
                    end: tick.lines.len(),
                    beat: true,
                });
            }
        }
        tick.expired = expired.len();
        t.active -= tick.expired;
        for (uuid, at_ms) in expired {
            t.put(&uuid);
            tick.removed += t.ended(uuid, at_ms);
        }
        tick.change = t.take();
        tick
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

    /// `true` for running jobs, `false` for the ones that ended within the retention: those
    /// `caller` may act on (every one without tokens).
    pub fn is_running(&self, caller: Option<&str>) -> Vec<(Uuid, bool)> {
        let t = self.lock();
        t.jobs
            .values()
            .filter(|j| j.is_for(caller))
            .map(|j| (j.run.uuid, j.state.is_active()))
            .collect()
    }

    /// Bytes the table holds, by [`Job::weight`]: what `jobs.max_table_bytes` bounds.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How many jobs of the whole table are in each state.
    pub fn counts(&self) -> Counts {
        self.counts_for(None)
    }

    /// How many jobs `caller` may see (see [`Job::is_for`]; every job for `None`) are in each
    /// state.
    pub fn counts_for(&self, caller: Option<&str>) -> Counts {
        let t = self.lock();
        let mut c = Counts::default();
        for job in t.jobs.values().filter(|j| j.is_for(caller)) {
            match job.state {
                State::Running => c.running += 1,
                State::Committing { .. } => c.committing += 1,
                State::Finished { .. } => c.finished += 1,
                State::Expired { .. } => c.expired += 1,
            }
        }
        c
    }

    /// Whether run `uuid` exists and `caller` may act on it (see [`Job::is_for`]).
    pub fn is_for(&self, uuid: &Uuid, caller: Option<&str>) -> bool {
        self.lock().jobs.get(uuid).is_some_and(|j| j.is_for(caller))
    }

    /// Whether `name` is one of the tags of run `uuid`.
    pub fn has_tag(&self, uuid: &Uuid, name: &str) -> bool {
        self.lock()
            .jobs
            .get(uuid)
            .is_some_and(|j| j.run.tags.iter().any(|(k, _)| k == name))
    }

    /// Up to `limit` jobs of the whole table, newest first.
    #[cfg(test)]
    pub fn list(&self, limit: usize) -> Vec<Job> {
        self.list_for(limit, None)
    }

    /// Up to `limit` of the jobs `caller` may see (see [`Job::is_for`]; every job for
    /// `None`), newest first: a token's view of the state page.
    pub fn list_for(&self, limit: usize, caller: Option<&str>) -> Vec<Job> {
        let t = self.lock();
        let mut jobs: Vec<&Job> = t.jobs.values().filter(|j| j.is_for(caller)).collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.run.started_ms));
        jobs.into_iter().take(limit).cloned().collect()
    }

    /// The whole table as the bytes of `jobs.json`, and the number up to which it includes
    /// every change: the latest one, or the one before the oldest change still prepared. A job
    /// in the middle of a commit is saved as it was before the commit: the commit has not been
    /// answered yet.
    #[cfg(test)]
    pub fn snapshot(&self) -> (Vec<u8>, u64) {
        self.snapshot_with(&Known::new())
    }

    /// [`Jobs::snapshot`], with what the gateway knows of InfluxDB's schema saved beside.
    pub fn snapshot_with(&self, schema: &Known) -> (Vec<u8>, u64) {
        let t = self.lock();
        let covers = t.preparing.first().map_or(t.seq, |first| first - 1);
        (
            journal::encode_snapshot(covers, t.jobs.values(), schema),
            covers,
        )
    }

    /// A table of `jobs` (restored from disk by `journal`), whose last change was journal
    /// record `seq`: counts what is running, orders what has ended, and forgets the oldest
    /// ended runs beyond `max_ended`.
    pub fn from_saved(jobs: HashMap<Uuid, Job>, seq: u64, max_ended: usize) -> Jobs {
        let mut table = Table::new(max_ended);
        table.jobs = jobs;
        table.seq = seq;
        let mut ended: Vec<(i64, Uuid)> = Vec::new();
        for (uuid, job) in &mut table.jobs {
            match job.state.ended_at() {
                Some(at_ms) => ended.push((at_ms, *uuid)),
                None => {
                    table.active += 1;
                    hold(&mut table.held, job.owner.as_deref());
                }
            }
            if matches!(job.state, State::Finished { .. }) {
                job.shed();
            }
            charge(
                &mut table.bytes,
                &mut table.held_bytes,
                job.owner.as_deref(),
                job.weight(),
            );
        }
        ended.sort_unstable();
        table.ended_count = ended.len();
        table.ended = ended.into();
        while table.ended_count > table.max_ended {
            let Some((at, oldest)) = table.ended.pop_front() else {
                break;
            };
            table.forget(&oldest, at);
        }
        table.pending = Vec::new();
        // A restored run is as old as the wall clock says at the start (a clock that went back
        // makes it new): it was not heard from while the gateway was down. From here on its
        // age runs on the monotonic clock.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        for job in table.jobs.values_mut() {
            job.seen_mono_ms = -(now_ms.saturating_sub(job.last_seen_ms).max(0));
        }
        Jobs {
            table: Mutex::new(table),
            settled: Condvar::new(),
            origin: Instant::now(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Bounds no test job reaches.
    pub(crate) const BOUNDS: Bounds = Bounds {
        max_running: 1 << 20,
        max_fields: 64,
        max_run_bytes: 1 << 20,
        max_table_bytes: 1 << 30,
    };

    /// Ages with no progress timeout.
    fn ages(max_age_ms: i64, retention_ms: i64) -> Ages {
        Ages {
            max_age_ms,
            progress_timeout_ms: i64::MAX,
            retention_ms,
        }
    }

    pub(crate) fn job(n: u128, now_ms: i64) -> Job {
        job_with(n, now_ms, vec![], vec![])
    }

    pub(crate) fn job_with(
        n: u128,
        now_ms: i64,
        tags: Vec<(String, String)>,
        fields: Vec<(String, FieldValue)>,
    ) -> Job {
        let run = Run {
            uuid: Uuid::from_u128(n),
            host: "h".into(),
            tags,
            started_ms: now_ms,
        };
        Job::running(run, fields, now_ms)
    }

    /// Ends a commit begun with `begin_commit`, as recorded at `at_ms`.
    pub(crate) fn finish(jobs: &Jobs, id: &Uuid, at_ms: i64) {
        let change = jobs.prepare_finish(id, at_ms).unwrap();
        jobs.end_commit(id, Some(&change), true, at_ms);
    }

    /// The heartbeats of a tick (the runs), and the number of its lines.
    fn beats(t: &Tick) -> (Vec<Uuid>, usize) {
        let beats = t.units.iter().filter(|u| u.beat).map(|u| u.run).collect();
        (beats, t.lines.lines().count())
    }

    pub(crate) type Row = (Uuid, &'static str, Vec<(String, FieldValue)>);

    /// The table as (uuid, state, fields) rows, sorted, to compare two tables.
    pub(crate) fn rows(jobs: &Jobs) -> Vec<Row> {
        let mut rows: Vec<_> = jobs
            .list(usize::MAX)
            .into_iter()
            .map(|j| (j.run.uuid, j.state.as_str(), j.fields))
            .collect();
        rows.sort_by_key(|r| r.0);
        rows
    }

    #[test]
    fn max_running_counts_reservations() {
        let jobs = Jobs::new(1000);
        let a = jobs.reserve(2, None).unwrap();
        let b = jobs.reserve(2, None).unwrap();
        assert!(
            jobs.reserve(2, None).is_err(),
            "two reserved slots fill max_running = 2"
        );
        drop(b);
        a.fill(job(1, 0));
        assert!(
            jobs.reserve(2, None).is_ok(),
            "a dropped slot is free again"
        );
        jobs.reserve(2, None).unwrap().fill(job(2, 0));
        assert!(jobs.reserve(2, None).is_err());
        jobs.begin_commit(&Uuid::from_u128(1), None).unwrap();
        finish(&jobs, &Uuid::from_u128(1), 5);
        assert!(
            jobs.reserve(2, None).is_ok(),
            "a finished job frees its slot"
        );
    }

    #[test]
    fn commit_states() {
        let jobs = Jobs::new(1000);
        let id = Uuid::from_u128(1);
        jobs.reserve(10, None).unwrap().fill(job(1, 0));
        assert_eq!(
            jobs.begin_commit(&Uuid::from_u128(9), None),
            Err(Refusal::Unknown)
        );
        jobs.begin_commit(&id, None).unwrap();
        assert_eq!(jobs.begin_commit(&id, None), Err(Refusal::InProgress));
        jobs.end_commit(&id, None, false, 1);
        assert_eq!(
            jobs.is_running(None),
            vec![(id, true)],
            "a failed commit leaves the job running"
        );
        jobs.begin_commit(&id, None).unwrap();
        finish(&jobs, &id, 7);
        assert_eq!(
            jobs.begin_commit(&id, None),
            Err(Refusal::Finished { at_ms: 7 })
        );
        assert_eq!(jobs.is_running(None), vec![(id, false)]);
    }

    #[test]
    fn progress_updates_fields_and_revives_expired_runs() {
        let jobs = Jobs::new(1000);
        let id = Uuid::from_u128(1);
        let j = job_with(
            1,
            0,
            vec![("mode".into(), "single".into())],
            vec![
                ("clients".into(), FieldValue::Float(1.0)),
                ("rps".into(), FieldValue::Float(0.0)),
            ],
        );
        jobs.reserve(10, None).unwrap().fill(j);
        let update = vec![
            ("clients".into(), FieldValue::Float(5.0)),
            ("new".into(), FieldValue::Bool(true)),
        ];
        jobs.progress(&id, update, 50, &BOUNDS, None).unwrap();
        let fields = jobs.list(1)[0].fields.clone();
        assert_eq!(
            fields,
            vec![
                ("clients".into(), FieldValue::Float(5.0)),
                ("rps".into(), FieldValue::Float(0.0)),
                ("new".into(), FieldValue::Bool(true))
            ]
        );
        assert_eq!(jobs.list(1)[0].last_seen_ms, 50);
        assert_eq!(
            jobs.progress(
                &id,
                vec![("mode".into(), FieldValue::Float(1.0))],
                60,
                &BOUNDS,
                None
            ),
            Err(Refusal::IsTag)
        );
        assert_eq!(
            jobs.progress(
                &id,
                vec![("x".into(), FieldValue::Float(1.0))],
                60,
                &Bounds {
                    max_fields: 3,
                    ..BOUNDS
                },
                None
            ),
            Err(Refusal::TooManyFields(3))
        );
        assert_eq!(
            jobs.progress(&Uuid::from_u128(9), vec![], 60, &BOUNDS, None),
            Err(Refusal::Unknown)
        );
        let t = jobs.tick((2000, 2000), &ages(1000, 10_000));
        assert_eq!(t.expired, 1);
        jobs.progress(&id, vec![], 2100, &BOUNDS, None).unwrap();
        assert_eq!(jobs.counts().running, 1, "progress revives an expired run");
        assert!(jobs.reserve(1, None).is_err());
        jobs.begin_commit(&id, None).unwrap();
        finish(&jobs, &id, 2200);
        assert_eq!(
            jobs.progress(&id, vec![], 2300, &BOUNDS, None),
            Err(Refusal::Finished { at_ms: 2200 })
        );
    }

    #[test]
    fn tick_beats_expires_and_forgets() {
        let jobs = Jobs::new(1000);
        jobs.reserve(10, None).unwrap().fill(job(1, 0));
        jobs.reserve(10, None).unwrap().fill(job(2, 500));
        let t = jobs.tick((1000, 1000), &ages(1000, 300));
        let (beaten, lines) = beats(&t);
        assert_eq!(
            (t.expired, beaten.len(), lines, t.units.len()),
            (1, 1, 2, 2)
        );
        assert_eq!(beaten, vec![Uuid::from_u128(2)]);
        assert!(t.lines.contains("event=expired"));
        assert!(
            !t.change.bytes.is_empty(),
            "the expiry is a change of the table"
        );
        jobs.count_beats(&beaten);
        assert_eq!(
            jobs.counts(),
            Counts {
                running: 1,
                expired: 1,
                ..Counts::default()
            }
        );
        // The expired run can still be committed.
        jobs.begin_commit(&Uuid::from_u128(1), None).unwrap();
        finish(&jobs, &Uuid::from_u128(1), 1100);
        let t = jobs.tick((1200, 1200), &ages(10_000, 300));
        assert_eq!((t.expired, t.removed, beats(&t).0.len()), (0, 0, 1));
        let t = jobs.tick((1400, 1400), &ages(10_000, 300));
        assert_eq!(
            t.removed, 1,
            "finished at 1100, gone after 300 ms of retention"
        );
        assert_eq!(jobs.list(10)[0].heartbeats, 1);
        assert!(jobs.reserve(1, None).is_err(), "one job is still running");
    }

    #[test]
    fn ended_runs_beyond_max_finished_are_forgotten_oldest_first() {
        let jobs = Jobs::new(2);
        for n in 1..=5 {
            jobs.reserve(10, None).unwrap().fill(job(n, n as i64));
            jobs.begin_commit(&Uuid::from_u128(n), None).unwrap();
            finish(&jobs, &Uuid::from_u128(n), 100 + n as i64);
        }
        let kept: Vec<Uuid> = rows(&jobs).iter().map(|r| r.0).collect();
        assert_eq!(kept, [Uuid::from_u128(4), Uuid::from_u128(5)]);
        assert_eq!(
            jobs.begin_commit(&Uuid::from_u128(1), None),
            Err(Refusal::Unknown)
        );
        let finished = &jobs.list(1)[0];
        assert!(
            finished.fields.is_empty() && finished.run.tags.is_empty(),
            "a finished run keeps only what the state page shows"
        );
        // A revived run is no longer ended; its old entry is skipped, not used to forget it.
        jobs.reserve(10, None).unwrap().fill(job(6, 6));
        jobs.tick((10_000, 10_000), &ages(1000, 1_000_000));
        assert_eq!(jobs.counts().expired, 1);
        assert_eq!(
            jobs.counts().finished,
            1,
            "the expired run pushed out a finished one"
        );
        jobs.progress(&Uuid::from_u128(6), vec![], 10_001, &BOUNDS, None)
            .unwrap();
        jobs.reserve(10, None).unwrap().fill(job(7, 7));
        jobs.begin_commit(&Uuid::from_u128(7), None).unwrap();
        finish(&jobs, &Uuid::from_u128(7), 10_002);
        assert_eq!(
            jobs.counts(),
            Counts {
                running: 1,
                finished: 2,
                ..Counts::default()
            }
        );
        // The cap holds across a restart too.
        let (snapshot, _) = jobs.snapshot();
        let (small, _) = crate::state::journal::restore(Some(&snapshot[..]), b"", 1).unwrap();
        assert_eq!(small.counts().finished, 1);
        assert_eq!(small.counts().running, 1);
    }

    #[test]
    fn forgotten_runs_give_back_the_tables_room() {
        let jobs = Jobs::new(100_000);
        for n in 1..=20_000 {
            jobs.reserve(100_000, None).unwrap().fill(job(n, 0));
            jobs.begin_commit(&Uuid::from_u128(n), None).unwrap();
            finish(&jobs, &Uuid::from_u128(n), 0);
        }
        // Then the load goes on at a small rate: one run at a time.
        jobs.reserve(100_000, None).unwrap().fill(job(20_001, 0));
        let t = jobs.tick((1000, 1000), &ages(i64::MAX, 500));
        assert_eq!(t.removed, 20_000);
        let t = jobs.lock();
        assert_eq!(t.jobs.len(), 1);
        assert!(
            t.jobs.capacity() <= 4 * t.jobs.len() + 1024,
            "the map keeps room for {} jobs once 20 000 are forgotten",
            t.jobs.capacity()
        );
        assert!(
            t.ended.capacity() <= 4 * t.ended.len() + 1024,
            "the queue of ended runs keeps room for {}",
            t.ended.capacity()
        );
    }

    #[test]
    fn entries_of_revived_runs_do_not_pile_up() {
        let jobs = Jobs::new(10);
        let id = Uuid::from_u128(1);
        jobs.reserve(10, None).unwrap().fill(job(1, 0));
        // Expired by a tick, revived by progress, again and again: each round leaves an entry
        // in `ended` that no longer matches the job.
        for round in 1..=5000 {
            let t = jobs.tick((round * 10, round * 10), &ages(5, i64::MAX));
            assert_eq!(t.expired, 1);
            jobs.progress(&id, vec![], round * 10, &BOUNDS, None)
                .unwrap();
        }
        let t = jobs.lock();
        assert!(
            t.ended.len() <= 2 * t.ended_count + 1024,
            "{}",
            t.ended.len()
        );
        assert_eq!(t.ended_count, 0);
        assert_eq!(t.active, 1);
    }

    #[test]
    fn a_tick_has_one_line_per_running_job_and_says_where_each_ends() {
        let jobs = Jobs::new(10);
        for n in 0..2500 {
            jobs.reserve(10_000, None).unwrap().fill(job(n, 0));
        }
        let t = jobs.tick((1000, 1000), &ages(10_000, 10_000));
        let (mut beaten, lines) = beats(&t);
        assert_eq!(lines, 2500);
        beaten.sort();
        beaten.dedup();
        assert_eq!(beaten.len(), 2500, "every running job once");
        let mut start = 0;
        for unit in &t.units {
            let line = &t.lines[start..unit.end];
            assert!(
                line.ends_with('\n') && line.contains(&unit.run.to_string()),
                "{line}"
            );
            start = unit.end;
        }
        assert_eq!(start, t.lines.len());
        let empty = Jobs::new(10).tick((0, 0), &ages(1, 1));
        assert!(empty.units.is_empty() && empty.lines.is_empty());
    }

    #[test]
    fn a_snapshot_covers_only_the_changes_before_one_still_prepared() {
        let jobs = Jobs::new(10);
        jobs.reserve(10, None).unwrap().fill(job(1, 0));
        jobs.reserve(10, None).unwrap().fill(job(2, 0));
        // A register prepared (its record not yet on disk): the run is not in the table yet.
        let mut slot = jobs.reserve(10, None).unwrap();
        let three = job(3, 0);
        let prepared = slot.prepare(&three, &BOUNDS).unwrap();
        assert!(!prepared.bytes.is_empty());
        // A commit prepared too, then a change made at once after both.
        jobs.begin_commit(&Uuid::from_u128(1), None).unwrap();
        let finishing = jobs.prepare_finish(&Uuid::from_u128(1), 50).unwrap();
        let progress = jobs
            .progress(
                &Uuid::from_u128(2),
                vec![("x".into(), FieldValue::Float(1.0))],
                60,
                &BOUNDS,
                None,
            )
            .unwrap();
        assert!(progress.seq > finishing.seq && finishing.seq > prepared.seq);
        let (bytes, covers) = jobs.snapshot();
        assert_eq!(covers, prepared.seq - 1, "below the oldest prepared change");
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            !text.contains(&three.run.uuid.to_string()),
            "not in the table yet"
        );
        // Restored with the prepared changes after it (their records made it to disk), in any
        // order: the table has all three changes.
        let log: Vec<u8> = [
            finishing.bytes.as_slice(),
            progress.bytes.as_slice(),
            prepared.bytes.as_slice(),
        ]
        .concat();
        let (restored, _) =
            crate::state::journal::restore(Some(text.as_bytes()), &log, 10).unwrap();
        assert_eq!(restored.counts().running, 2);
        assert_eq!(restored.counts().finished, 1);
        slot.fill(three);
        jobs.end_commit(&Uuid::from_u128(1), Some(&finishing), true, 50);
        assert_eq!(jobs.snapshot().1, progress.seq, "nothing prepared any more");
    }

    #[test]
    fn tick_writes_each_running_job_once_with_its_fields() {
        let jobs = Jobs::new(10);
        jobs.reserve(10, None).unwrap().fill(job_with(
            1,
            0,
            vec![],
            vec![("clients".into(), FieldValue::Float(4.0))],
        ));
        jobs.reserve(10, None).unwrap().fill(job(2, 0));
        jobs.progress(
            &Uuid::from_u128(1),
            vec![("clients".into(), FieldValue::Float(8.0))],
            500,
            &BOUNDS,
            None,
        )
        .unwrap();
        let t = jobs.tick((1500, 1500), &ages(10_000, 10_000));
        let one = Uuid::from_u128(1);
        let two = Uuid::from_u128(2);
        let mut lines: Vec<&str> = t.lines.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                format!("load_testing,host=h,uuid={one} clients=8,elapsed=1.5 1500"),
                format!("load_testing,host=h,uuid={two} elapsed=1.5 1500"),
            ]
        );
        assert_eq!(t.change.seq, 0, "heartbeats alone change nothing on disk");
    }

    /// The table's count of bytes is the weight of its jobs (with no register under way).
    fn assert_bytes_add_up(jobs: &Jobs) {
        let t = jobs.lock();
        let sum: usize = t.jobs.values().map(Job::weight).sum();
        assert_eq!(t.bytes, sum);
    }

    fn text(n: usize) -> FieldValue {
        FieldValue::Str("x".repeat(n))
    }

    #[test]
    fn a_run_whose_heartbeat_is_over_max_run_bytes_is_refused_and_holds_nothing() {
        let jobs = Jobs::new(10);
        let bounds = Bounds {
            max_run_bytes: 4096,
            ..BOUNDS
        };
        let big = job_with(1, 0, vec![], vec![("note".into(), text(5000))]);
        let mut slot = jobs.reserve(10, None).unwrap();
        match slot.prepare(&big, &bounds) {
            Err(Refusal::RunTooLarge { bytes, limit: 4096 }) => assert!(bytes > 5000),
            other => panic!("{other:?}"),
        }
        drop(slot);
        assert_eq!(jobs.lock().bytes, 0);
        assert_eq!(jobs.lock().reserved, 0);

        // A small run fits; progress that makes it too large is refused and changes nothing.
        let small = job_with(2, 0, vec![], vec![("note".into(), text(10))]);
        let mut slot = jobs.reserve(10, None).unwrap();
        slot.prepare(&small, &bounds).unwrap();
        slot.fill(small);
        let id = Uuid::from_u128(2);
        assert!(matches!(
            jobs.progress(&id, vec![("note".into(), text(5000))], 5, &bounds, None),
            Err(Refusal::RunTooLarge { limit: 4096, .. })
        ));
        assert_eq!(rows(&jobs)[0].2, vec![("note".to_string(), text(10))]);
        assert_bytes_add_up(&jobs);
        jobs.progress(&id, vec![("note".into(), text(3000))], 5, &bounds, None)
            .unwrap();
        assert_bytes_add_up(&jobs);
    }

    #[test]
    fn the_table_holds_max_table_bytes_at_most_and_frees_what_runs_let_go() {
        let jobs = Jobs::new(10);
        let one = job_with(1, 0, vec![], vec![("note".into(), text(3000))]);
        let bounds = Bounds {
            max_table_bytes: one.weight() * 2 + 100,
            ..BOUNDS
        };
        let register = |n: u128| {
            let job = job_with(n, 0, vec![], vec![("note".into(), text(3000))]);
            let mut slot = jobs.reserve(10, None).unwrap();
            let prepared = slot.prepare(&job, &bounds).map(|_| ());
            if prepared.is_ok() {
                slot.fill(job);
            }
            prepared
        };
        register(1).unwrap();
        // A register under way holds its bytes: a second one finds the room taken.
        let mut held = jobs.reserve(10, None).unwrap();
        held.prepare(
            &job_with(2, 0, vec![], vec![("note".into(), text(3000))]),
            &bounds,
        )
        .unwrap();
        assert_eq!(
            register(3),
            Err(Refusal::TableFull {
                limit: bounds.max_table_bytes
            })
        );
        drop(held);
        register(2).unwrap();
        assert_eq!(
            register(3).unwrap_err(),
            Refusal::TableFull {
                limit: bounds.max_table_bytes
            }
        );
        assert_bytes_add_up(&jobs);

        // Progress that grows a run past the budget is refused; progress that shrinks it is not.
        let id = Uuid::from_u128(1);
        assert_eq!(
            jobs.progress(&id, vec![("more".into(), text(500))], 5, &bounds, None),
            Err(Refusal::TableFull {
                limit: bounds.max_table_bytes
            })
        );
        jobs.progress(&id, vec![("note".into(), text(10))], 5, &bounds, None)
            .unwrap();
        assert_bytes_add_up(&jobs);

        // A finished run keeps only what the state page shows; a forgotten one, nothing.
        jobs.begin_commit(&Uuid::from_u128(2), None).unwrap();
        finish(&jobs, &Uuid::from_u128(2), 10);
        assert_bytes_add_up(&jobs);
        register(3).unwrap();
        // A restored table counts its bytes too.
        let (snapshot, _) = jobs.snapshot();
        let (restored, _) = crate::state::journal::restore(Some(&snapshot[..]), b"", 10).unwrap();
        assert_bytes_add_up(&restored);
        assert_eq!(restored.lock().bytes, jobs.lock().bytes);
        jobs.tick((100, 100), &ages(1, 1000));
        assert_bytes_add_up(&jobs);
        jobs.tick((1100, 1100), &ages(1, 1000));
        assert_eq!(jobs.lock().bytes, 0, "every run forgotten");
    }

    #[test]
    fn a_run_that_reported_progress_expires_after_progress_timeout_without_it() {
        let jobs = Jobs::new(10);
        let ages = Ages {
            max_age_ms: 100_000,
            progress_timeout_ms: 1000,
            retention_ms: 100_000,
        };
        jobs.reserve(10, None).unwrap().fill(job(1, 0));
        jobs.reserve(10, None).unwrap().fill(job(2, 0));
        let reporting = Uuid::from_u128(1);
        jobs.progress(
            &reporting,
            vec![("users".into(), FieldValue::Float(3.0))],
            500,
            &BOUNDS,
            None,
        )
        .unwrap();
        assert_eq!(
            jobs.tick((1499, 1499), &ages).expired,
            0,
            "heard from 999 ms ago"
        );
        let t = jobs.tick((1500, 1500), &ages);
        assert_eq!(t.expired, 1);
        assert!(
            t.lines.contains("expired: no progress within 1s"),
            "{}",
            t.lines
        );
        assert_eq!(
            jobs.counts().running,
            1,
            "the run that never reported waits for max_age"
        );
        assert_eq!(
            rows(&jobs).iter().find(|r| r.0 == reporting).unwrap().1,
            "expired"
        );
        // What the table remembers of it survives a restart.
        let (snapshot, _) = jobs.snapshot();
        let (restored, _) = crate::state::journal::restore(Some(&snapshot[..]), b"", 10).unwrap();
        jobs.progress(&Uuid::from_u128(2), vec![], 1600, &BOUNDS, None)
            .unwrap();
        assert!(restored.lock().jobs[&reporting].progressed);
        let t = jobs.tick((100_000, 100_000), &ages);
        assert!(
            t.lines.contains("expired: no progress within 1s"),
            "{}",
            t.lines
        );
    }

    #[test]
    fn an_owner_holds_its_max_running_at_most_and_ended_runs_free_their_places() {
        let jobs = Jobs::new(10);
        let a = Quota {
            owner: "team-a",
            max_running: 2,
            max_bytes: usize::MAX,
        };
        let register = |n: u128, quota: Option<Quota<'_>>| {
            let slot = jobs.reserve(100, quota)?;
            slot.fill(job(n, 0));
            Ok::<(), Refusal>(())
        };
        register(1, Some(a)).unwrap();
        // A register under way holds its place.
        let held = jobs.reserve(100, Some(a)).unwrap();
        assert_eq!(
            register(3, Some(a)).unwrap_err(),
            Refusal::OwnerFull { limit: 2 }
        );
        drop(held);
        register(2, Some(a)).unwrap();
        assert!(register(3, Some(a)).is_err());
        register(
            4,
            Some(Quota {
                owner: "team-b",
                max_running: 2,
                max_bytes: usize::MAX,
            }),
        )
        .unwrap();
        register(5, None).unwrap();
        assert_eq!(
            jobs.reserve(4, None).err(),
            Some(Refusal::TooManyRunning { limit: 4 })
        );
        // A commit and an expiry each free a place; a revived run takes one again.
        jobs.begin_commit(&Uuid::from_u128(1), None).unwrap();
        finish(&jobs, &Uuid::from_u128(1), 10);
        assert_eq!(jobs.lock().held["team-a"], 1);
        jobs.tick((10_000, 10_000), &ages(1000, 1_000_000));
        assert!(
            !jobs.lock().held.contains_key("team-a"),
            "{:?}",
            jobs.lock().held
        );
        jobs.progress(&Uuid::from_u128(2), vec![], 10_001, &BOUNDS, None)
            .unwrap();
        assert_eq!(jobs.lock().held["team-a"], 1);
        // The owner is saved with the job: a restarted table counts the same.
        let (snapshot, _) = jobs.snapshot();
        let (restored, _) = crate::state::journal::restore(Some(&snapshot[..]), b"", 10).unwrap();
        assert_eq!(restored.lock().held, jobs.lock().held);
        assert_eq!(
            restored
                .list(10)
                .iter()
                .find(|j| j.run.uuid == Uuid::from_u128(2))
                .unwrap()
                .owner
                .as_deref(),
            Some("team-a")
        );
    }

    #[test]
    fn a_run_registered_with_a_token_is_its_clients_alone() {
        let jobs = Jobs::new(10);
        let a = Quota {
            owner: "team-a",
            max_running: 10,
            max_bytes: usize::MAX,
        };
        let b = Quota {
            owner: "team-b",
            ..a
        };
        jobs.reserve(10, Some(a)).unwrap().fill(job(1, 0));
        let id = Uuid::from_u128(1);
        assert_eq!(
            jobs.progress(&id, vec![], 5, &BOUNDS, Some(b)),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            jobs.begin_commit(&id, Some("team-b")).err(),
            Some(Refusal::Unknown)
        );
        assert!(jobs.is_running(Some("team-b")).is_empty());
        assert_eq!(jobs.is_running(Some("team-a")), vec![(id, true)]);
        jobs.progress(&id, vec![], 5, &BOUNDS, Some(a)).unwrap();
        jobs.begin_commit(&id, Some("team-a")).unwrap();
    }

    #[test]
    fn progress_that_revives_a_run_takes_a_place_as_a_register_does() {
        let jobs = Jobs::new(10);
        let a = Quota {
            owner: "team-a",
            max_running: 1,
            max_bytes: usize::MAX,
        };
        let bounds = Bounds {
            max_running: 2,
            ..BOUNDS
        };
        jobs.reserve(2, Some(a)).unwrap().fill(job(1, 0));
        jobs.tick((10_000, 10_000), &ages(1000, 1_000_000));
        jobs.reserve(2, Some(a)).unwrap().fill(job(2, 10_000));
        let expired = Uuid::from_u128(1);
        assert_eq!(
            jobs.progress(&expired, vec![], 10_001, &bounds, Some(a)),
            Err(Refusal::OwnerFull { limit: 1 }),
            "team-a has its one place"
        );
        let roomy = Quota {
            max_running: 5,
            ..a
        };
        jobs.reserve(2, None).unwrap().fill(job(3, 10_000));
        assert_eq!(
            jobs.progress(&expired, vec![], 10_001, &bounds, Some(roomy)),
            Err(Refusal::TooManyRunning { limit: 2 }),
            "the table is full"
        );
        assert_eq!(jobs.counts().expired, 1, "refused: still expired");
    }

    #[test]
    fn an_owner_holds_its_share_of_the_tables_bytes_at_most() {
        let jobs = Jobs::new(10);
        let one = job_with(1, 0, vec![], vec![("note".into(), text(3000))]);
        let a = Quota {
            owner: "team-a",
            max_running: 100,
            max_bytes: one.weight() * 2,
        };
        let register = |n: u128, q: Quota<'_>| {
            let job = job_with(n, 0, vec![], vec![("note".into(), text(3000))]);
            let mut slot = jobs.reserve(100, Some(q))?;
            slot.prepare(&job, &BOUNDS)?;
            slot.fill(job);
            Ok::<(), Refusal>(())
        };
        register(1, a).unwrap();
        register(2, a).unwrap();
        assert_eq!(
            register(3, a),
            Err(Refusal::OwnerTableFull {
                limit: one.weight() * 2
            })
        );
        register(
            4,
            Quota {
                owner: "team-b",
                ..a
            },
        )
        .unwrap();
        // Progress that grows a run past the share is refused too.
        assert_eq!(
            jobs.progress(
                &Uuid::from_u128(1),
                vec![("more".into(), text(100))],
                5,
                &BOUNDS,
                Some(a)
            ),
            Err(Refusal::OwnerTableFull {
                limit: one.weight() * 2
            })
        );
        assert_bytes_add_up(&jobs);
        let t = jobs.lock();
        assert_eq!(t.held_bytes["team-a"], 2 * one.weight());
    }
}
