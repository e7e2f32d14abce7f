//! The job table: which runs are running, committing, finished or expired, and the ticker's
//! heartbeat lines.
//!
//! The table is one `Mutex<HashMap<Uuid, Job>>`. The lock is held only to read or change the
//! table, never across I/O: handlers take what they need, write to InfluxDB without the lock,
//! and come back to record the outcome. That is why a register first reserves a slot (so
//! `jobs.max_running` holds under concurrency) and a commit first marks the job `Committing`
//! (so two commits of one run cannot both succeed).
//!
//! Every change that must survive a restart appends one journal record (a line of JSON: the
//! job's whole saved state, or its removal) to a buffer in the table, under the same lock, and
//! returns the record's sequence number. The records are therefore in the order of the changes,
//! and replaying them over any older state of the table gives the newest one. Writing them out
//! and waiting until they are on disk is `journal`'s business; this module does no I/O.
//!
//! Finished and expired runs are remembered for `jobs.finished_retention`, and at most
//! `jobs.max_finished` of them (the oldest are forgotten first), so memory stays bounded
//! however many runs come and go. A finished run keeps only what the state page shows.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use uuid::Uuid;

use crate::ingest::line_protocol::FieldValue;
use crate::ingest::points::{self, BeatLine, Event, Run};
use crate::state::journal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Heartbeats are written.
    Running,
    /// A commit's points are being written; `expired` says what it was before.
    Committing { expired: bool },
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
    /// When the gateway last heard of the run (Unix ms); `jobs.max_age` counts from here.
    pub last_seen_ms: i64,
    pub state: State,
    pub heartbeats: u64,
}

impl Job {
    /// A run that has just registered.
    pub fn running(run: Run, fields: Vec<(String, FieldValue)>, now_ms: i64) -> Job {
        Job {
            beat: BeatLine::new(&run, &fields),
            run,
            fields,
            last_seen_ms: now_ms,
            state: State::Running,
            heartbeats: 0,
        }
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
    /// Finished and expired runs as they ended, oldest first: (when, which). An entry whose job
    /// has since been revived, or ended again, no longer matches it and is skipped.
    ended: VecDeque<(i64, Uuid)>,
    /// Jobs now finished or expired.
    ended_count: usize,
    /// `jobs.max_finished`.
    max_ended: usize,
    /// Journal records not yet taken by the journal writer.
    pending: Vec<u8>,
    /// Sequence number of the last change.
    seq: u64,
}

impl Table {
    fn new(max_ended: usize) -> Table {
        Table {
            jobs: HashMap::new(),
            active: 0,
            reserved: 0,
            ended: VecDeque::new(),
            ended_count: 0,
            max_ended,
            pending: Vec::new(),
            seq: 0,
        }
    }

    /// Records the job's present state in the journal.
    fn put(&mut self, uuid: &Uuid) -> u64 {
        self.seq += 1;
        if let Some(job) = self.jobs.get(uuid) {
            journal::encode_record(&mut self.pending, self.seq, Some(job), uuid);
        }
        self.seq
    }

    /// Records the job's removal in the journal.
    fn del(&mut self, uuid: &Uuid) -> u64 {
        self.seq += 1;
        journal::encode_record(&mut self.pending, self.seq, None, uuid);
        self.seq
    }

    fn is_ended_at(&self, uuid: &Uuid, at_ms: i64) -> bool {
        self.jobs
            .get(uuid)
            .and_then(|j| j.state.ended_at())
            .is_some_and(|at| at == at_ms)
    }

    /// A job has just become finished or expired; forgets the oldest ended runs beyond the cap.
    fn ended(&mut self, uuid: Uuid, at_ms: i64) -> usize {
        self.ended.push_back((at_ms, uuid));
        self.ended_count += 1;
        let mut forgotten = 0;
        while self.ended_count > self.max_ended {
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

    /// A finished or expired job is active again (a late commit began, or progress revived it).
    fn revived(&mut self) {
        self.ended_count -= 1;
        self.active += 1;
    }

    /// Removes a job that ended at `at_ms`, if it still did.
    fn forget(&mut self, uuid: &Uuid, at_ms: i64) -> bool {
        if !self.is_ended_at(uuid, at_ms) {
            return false;
        }
        self.jobs.remove(uuid);
        self.ended_count -= 1;
        self.del(uuid);
        true
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

#[derive(Debug)]
pub struct Jobs {
    table: Mutex<Table>,
}

/// A place for one more running job, held while register writes its points.
pub struct Slot<'a> {
    jobs: &'a Jobs,
    filled: bool,
}

impl Slot<'_> {
    /// Adds the job; the number is its journal record.
    pub fn fill(mut self, job: Job) -> u64 {
        let mut t = self.jobs.lock();
        t.reserved -= 1;
        if job.state.is_active() {
            t.active += 1;
        }
        let uuid = job.run.uuid;
        t.jobs.insert(uuid, job);
        self.filled = true;
        t.put(&uuid)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.filled {
            self.jobs.lock().reserved -= 1;
        }
    }
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
}

/// A tick's points are cut into at most this many batches of at least [`TICK_BATCH_MIN`]
/// points, which the caller writes at the same time: InfluxDB parses each write on one core,
/// and on 2 cores four writes of 2 500 heartbeats were stored in about 40% less time than one
/// write of 10 000.
pub const TICK_BATCHES: usize = 4;
pub const TICK_BATCH_MIN: usize = 1000;

/// Points of a tick that go in one write.
#[derive(Debug, Default)]
pub struct Batch {
    /// Heartbeats and expiry events, as line protocol.
    pub lines: String,
    pub points: usize,
    /// Runs whose heartbeat is among `lines`.
    pub beats: Vec<Uuid>,
}

/// What one tick writes.
#[derive(Debug, Default)]
pub struct Tick {
    /// Never empty batches; none when there is nothing to write.
    pub batches: Vec<Batch>,
    pub expired: usize,
    pub removed: usize,
    /// The journal record of the last change the tick made (0: none).
    pub seq: u64,
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
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic elsewhere must not take the table down with it: every change below leaves the
        // table consistent before anything can panic, so the data is still good.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves room for a new running job, or `None` when `max_running` are running already.
    pub fn reserve(&self, max_running: usize) -> Option<Slot<'_>> {
        let mut t = self.lock();
        if t.active + t.reserved >= max_running {
            return None;
        }
        t.reserved += 1;
        Some(Slot {
            jobs: self,
            filled: false,
        })
    }

    /// Marks a job `Committing` and hands back its run, or says why it can't be committed.
    pub fn begin_commit(&self, uuid: &Uuid) -> Result<Run, Refusal> {
        let mut t = self.lock();
        let Some(job) = t.jobs.get_mut(uuid) else {
            return Err(Refusal::Unknown);
        };
        let (state, was_active) = match job.state {
            State::Running => (State::Committing { expired: false }, true),
            State::Expired { .. } => (State::Committing { expired: true }, false),
            State::Committing { .. } => return Err(Refusal::InProgress),
            State::Finished { at_ms } => return Err(Refusal::Finished { at_ms }),
        };
        job.state = state;
        let run = job.run.clone();
        if !was_active {
            t.revived();
        }
        Ok(run)
    }

    /// Live progress: the fields replace those of the same name in the following heartbeats,
    /// and the expiry clock starts again. An expired run that reports progress is running again.
    /// The number is the change's journal record.
    pub fn progress(
        &self,
        uuid: &Uuid,
        fields: Vec<(String, FieldValue)>,
        now_ms: i64,
        max_fields: usize,
    ) -> Result<u64, Refusal> {
        let mut t = self.lock();
        let job = t.jobs.get_mut(uuid).ok_or(Refusal::Unknown)?;
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
        let mut merged = job.fields.clone();
        for (k, v) in fields {
            match merged.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => merged.push((k, v)),
            }
        }
        if merged.len() > max_fields {
            return Err(Refusal::TooManyFields(max_fields));
        }
        job.beat = BeatLine::new(&job.run, &merged);
        job.fields = merged;
        job.last_seen_ms = now_ms;
        if matches!(job.state, State::Expired { .. }) {
            job.state = State::Running;
            t.revived();
        }
        Ok(t.put(uuid))
    }

    /// Records a commit's outcome: finished when its points were recorded, else back as it was.
    /// The number is the change's journal record (0: there was no commit to end).
    pub fn end_commit(&self, uuid: &Uuid, recorded: bool, now_ms: i64) -> u64 {
        let mut t = self.lock();
        let Some(job) = t.jobs.get_mut(uuid) else {
            return 0;
        };
        let State::Committing { expired } = job.state else {
            return 0;
        };
        job.state = match (recorded, expired) {
            (true, _) => State::Finished { at_ms: now_ms },
            (false, false) => State::Running,
            (false, true) => State::Expired { at_ms: now_ms },
        };
        if recorded {
            job.shed();
        }
        if job.state != State::Running {
            t.active -= 1;
            t.ended(*uuid, now_ms);
        }
        t.put(uuid)
    }

    /// Writes this tick's heartbeats and expiry events as line protocol, and forgets jobs past
    /// their retention. Only CPU work happens under the lock; the caller sends the lines.
    pub fn tick(&self, now_ms: i64, max_age_ms: i64, retention_ms: i64) -> Tick {
        let mut tick = Tick::default();
        let mut guard = self.lock();
        let t = &mut *guard;
        while let Some(&(at_ms, uuid)) = t.ended.front() {
            if now_ms - at_ms < retention_ms {
                break;
            }
            t.ended.pop_front();
            if t.forget(&uuid, at_ms) {
                tick.removed += 1;
                tick.seq = t.seq;
            }
        }
        let mut expired = Vec::new();
        let per_batch = t.active.div_ceil(TICK_BATCHES).max(TICK_BATCH_MIN);
        let mut batch = Batch::default();
        for job in t.jobs.values_mut() {
            if job.state != State::Running {
                continue;
            }
            if batch.points >= per_batch {
                tick.batches.push(std::mem::take(&mut batch));
            }
            if now_ms - job.last_seen_ms >= max_age_ms {
                job.state = State::Expired { at_ms: now_ms };
                let text = format!(
                    "load test on {} expired: no commit within {} (run {})",
                    job.run.host,
                    crate::config::format_duration(std::time::Duration::from_millis(
                        max_age_ms as u64
                    )),
                    job.run.uuid
                );
                let event = points::event(&job.run, Event::Expired, now_ms, text);
                event.encode(&mut batch.lines);
                batch.lines.push('\n');
                batch.points += 1;
                expired.push(job.run.uuid);
                continue;
            }
            if job
                .beat
                .encode(job.run.started_ms, now_ms, &mut batch.lines)
            {
                batch.points += 1;
                batch.beats.push(job.run.uuid);
            }
        }
        if batch.points > 0 {
            tick.batches.push(batch);
        }
        tick.expired = expired.len();
        t.active -= tick.expired;
        for uuid in expired {
            t.put(&uuid);
            tick.removed += t.ended(uuid, now_ms);
            tick.seq = t.seq;
        }
        tick
    }

    /// Counts the heartbeats that were written. Not a journal record: the counts reach the disk
    /// with the job's next record or the next snapshot.
    pub fn count_beats(&self, uuids: &[Uuid]) {
        let mut t = self.lock();
        for uuid in uuids {
            if let Some(job) = t.jobs.get_mut(uuid) {
                job.heartbeats += 1;
            }
        }
    }

    /// `true` for running jobs, `false` for the ones that ended within the retention.
    pub fn is_running(&self) -> Vec<(Uuid, bool)> {
        let t = self.lock();
        t.jobs
            .values()
            .map(|j| (j.run.uuid, j.state.is_active()))
            .collect()
    }

    pub fn counts(&self) -> Counts {
        let t = self.lock();
        let mut c = Counts::default();
        for job in t.jobs.values() {
            match job.state {
                State::Running => c.running += 1,
                State::Committing { .. } => c.committing += 1,
                State::Finished { .. } => c.finished += 1,
                State::Expired { .. } => c.expired += 1,
            }
        }
        c
    }

    /// Takes out a job that could not be made durable. The number is the journal record.
    pub fn remove(&self, uuid: &Uuid) -> u64 {
        let mut t = self.lock();
        if let Some(job) = t.jobs.remove(uuid) {
            if job.state.is_active() {
                t.active -= 1;
            } else {
                t.ended_count -= 1;
            }
        }
        t.del(uuid)
    }

    /// Up to `limit` jobs, newest first, for the state page.
    pub fn list(&self, limit: usize) -> Vec<Job> {
        let t = self.lock();
        let mut jobs: Vec<&Job> = t.jobs.values().collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.run.started_ms));
        jobs.into_iter().take(limit).cloned().collect()
    }

    /// The journal records written since the last call, and the number of the last one.
    pub fn take_pending(&self) -> (Vec<u8>, u64) {
        let mut t = self.lock();
        (std::mem::take(&mut t.pending), t.seq)
    }

    /// The whole table as the bytes of `jobs.json`, and the number of the last journal record
    /// it includes; the records waiting to be written are in it, so they are dropped. A job in
    /// the middle of a commit is saved as it was before the commit: the commit has not been
    /// answered yet.
    pub fn snapshot(&self) -> (Vec<u8>, u64) {
        let mut t = self.lock();
        t.pending = Vec::new();
        (journal::encode_snapshot(t.seq, t.jobs.values()), t.seq)
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
                None => table.active += 1,
            }
            if matches!(job.state, State::Finished { .. }) {
                job.shed();
            }
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
        Jobs {
            table: Mutex::new(table),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
        let a = jobs.reserve(2).unwrap();
        let b = jobs.reserve(2).unwrap();
        assert!(
            jobs.reserve(2).is_none(),
            "two reserved slots fill max_running = 2"
        );
        drop(b);
        a.fill(job(1, 0));
        assert!(jobs.reserve(2).is_some(), "a dropped slot is free again");
        jobs.reserve(2).unwrap().fill(job(2, 0));
        assert!(jobs.reserve(2).is_none());
        jobs.begin_commit(&Uuid::from_u128(1)).unwrap();
        jobs.end_commit(&Uuid::from_u128(1), true, 5);
        assert!(jobs.reserve(2).is_some(), "a finished job frees its slot");
    }

    #[test]
    fn commit_states() {
        let jobs = Jobs::new(1000);
        let id = Uuid::from_u128(1);
        jobs.reserve(10).unwrap().fill(job(1, 0));
        assert_eq!(
            jobs.begin_commit(&Uuid::from_u128(9)),
            Err(Refusal::Unknown)
        );
        jobs.begin_commit(&id).unwrap();
        assert_eq!(jobs.begin_commit(&id), Err(Refusal::InProgress));
        jobs.end_commit(&id, false, 1);
        assert_eq!(
            jobs.is_running(),
            vec![(id, true)],
            "a failed commit leaves the job running"
        );
        jobs.begin_commit(&id).unwrap();
        jobs.end_commit(&id, true, 7);
        assert_eq!(jobs.begin_commit(&id), Err(Refusal::Finished { at_ms: 7 }));
        assert_eq!(jobs.is_running(), vec![(id, false)]);
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
        jobs.reserve(10).unwrap().fill(j);
        let update = vec![
            ("clients".into(), FieldValue::Float(5.0)),
            ("new".into(), FieldValue::Bool(true)),
        ];
        jobs.progress(&id, update, 50, 64).unwrap();
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
            jobs.progress(&id, vec![("mode".into(), FieldValue::Float(1.0))], 60, 64),
            Err(Refusal::IsTag)
        );
        assert_eq!(
            jobs.progress(&id, vec![("x".into(), FieldValue::Float(1.0))], 60, 3),
            Err(Refusal::TooManyFields(3))
        );
        assert_eq!(
            jobs.progress(&Uuid::from_u128(9), vec![], 60, 64),
            Err(Refusal::Unknown)
        );
        let t = jobs.tick(2000, 1000, 10_000);
        assert_eq!(t.expired, 1);
        jobs.progress(&id, vec![], 2100, 64).unwrap();
        assert_eq!(jobs.counts().running, 1, "progress revives an expired run");
        assert!(jobs.reserve(1).is_none());
        jobs.begin_commit(&id).unwrap();
        jobs.end_commit(&id, true, 2200);
        assert_eq!(
            jobs.progress(&id, vec![], 2300, 64),
            Err(Refusal::Finished { at_ms: 2200 })
        );
    }

    #[test]
    fn tick_beats_expires_and_forgets() {
        let jobs = Jobs::new(1000);
        jobs.reserve(10).unwrap().fill(job(1, 0));
        jobs.reserve(10).unwrap().fill(job(2, 500));
        let t = jobs.tick(1000, 1000, 300);
        assert_eq!(t.batches.len(), 1);
        let b = &t.batches[0];
        assert_eq!((t.expired, b.beats.len(), b.points), (1, 1, 2));
        assert_eq!(b.lines.lines().count(), 2);
        assert_eq!(b.beats, vec![Uuid::from_u128(2)]);
        jobs.count_beats(&b.beats);
        assert_eq!(
            jobs.counts(),
            Counts {
                running: 1,
                expired: 1,
                ..Counts::default()
            }
        );
        // The expired run can still be committed.
        jobs.begin_commit(&Uuid::from_u128(1)).unwrap();
        jobs.end_commit(&Uuid::from_u128(1), true, 1100);
        let t = jobs.tick(1200, 10_000, 300);
        assert_eq!((t.expired, t.removed, t.batches[0].beats.len()), (0, 0, 1));
        let t = jobs.tick(1400, 10_000, 300);
        assert_eq!(
            t.removed, 1,
            "finished at 1100, gone after 300 ms of retention"
        );
        assert_eq!(jobs.list(10)[0].heartbeats, 1);
        assert!(jobs.reserve(1).is_none(), "one job is still running");
    }

    #[test]
    fn ended_runs_beyond_max_finished_are_forgotten_oldest_first() {
        let jobs = Jobs::new(2);
        for n in 1..=5 {
            jobs.reserve(10).unwrap().fill(job(n, n as i64));
            jobs.begin_commit(&Uuid::from_u128(n)).unwrap();
            jobs.end_commit(&Uuid::from_u128(n), true, 100 + n as i64);
        }
        let kept: Vec<Uuid> = rows(&jobs).iter().map(|r| r.0).collect();
        assert_eq!(kept, [Uuid::from_u128(4), Uuid::from_u128(5)]);
        assert_eq!(
            jobs.begin_commit(&Uuid::from_u128(1)),
            Err(Refusal::Unknown)
        );
        let finished = &jobs.list(1)[0];
        assert!(
            finished.fields.is_empty() && finished.run.tags.is_empty(),
            "a finished run keeps only what the state page shows"
        );
        // A revived run is no longer ended; its old entry is skipped, not used to forget it.
        jobs.reserve(10).unwrap().fill(job(6, 6));
        jobs.tick(10_000, 1000, 1_000_000);
        assert_eq!(jobs.counts().expired, 1);
        assert_eq!(
            jobs.counts().finished,
            1,
            "the expired run pushed out a finished one"
        );
        jobs.progress(&Uuid::from_u128(6), vec![], 10_001, 64)
            .unwrap();
        jobs.reserve(10).unwrap().fill(job(7, 7));
        jobs.begin_commit(&Uuid::from_u128(7)).unwrap();
        jobs.end_commit(&Uuid::from_u128(7), true, 10_002);
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
        let (small, _) = crate::state::journal::restore(Some(&snapshot), b"", 1).unwrap();
        assert_eq!(small.counts().finished, 1);
        assert_eq!(small.counts().running, 1);
    }

    #[test]
    fn entries_of_revived_runs_do_not_pile_up() {
        let jobs = Jobs::new(10);
        let id = Uuid::from_u128(1);
        jobs.reserve(10).unwrap().fill(job(1, 0));
        // Expired by a tick, revived by progress, again and again: each round leaves an entry
        // in `ended` that no longer matches the job.
        for round in 1..=5000 {
            let t = jobs.tick(round * 10, 5, i64::MAX);
            assert_eq!(t.expired, 1);
            jobs.progress(&id, vec![], round * 10, 64).unwrap();
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
    fn a_large_tick_is_cut_into_batches_written_together() {
        let jobs = Jobs::new(10);
        for n in 0..2500 {
            jobs.reserve(10_000).unwrap().fill(job(n, 0));
        }
        let t = jobs.tick(1000, 10_000, 10_000);
        let sizes: Vec<usize> = t.batches.iter().map(|b| b.points).collect();
        assert_eq!(sizes, [TICK_BATCH_MIN, TICK_BATCH_MIN, 500]);
        let mut beats: Vec<Uuid> = t.batches.iter().flat_map(|b| b.beats.clone()).collect();
        beats.sort();
        beats.dedup();
        assert_eq!(beats.len(), 2500, "every running job once");
        for b in &t.batches {
            assert_eq!(b.lines.lines().count(), b.points);
        }
        for n in 2500..10_000 {
            jobs.reserve(10_000).unwrap().fill(job(n, 0));
        }
        let t = jobs.tick(2000, 10_000, 10_000);
        let sizes: Vec<usize> = t.batches.iter().map(|b| b.points).collect();
        assert_eq!(sizes, [2500; TICK_BATCHES]);
        assert!(Jobs::new(10).tick(0, 1, 1).batches.is_empty());
    }

    #[test]
    fn tick_writes_each_running_job_once_with_its_fields() {
        let jobs = Jobs::new(10);
        jobs.reserve(10).unwrap().fill(job_with(
            1,
            0,
            vec![],
            vec![("clients".into(), FieldValue::Float(4.0))],
        ));
        jobs.reserve(10).unwrap().fill(job(2, 0));
        jobs.progress(
            &Uuid::from_u128(1),
            vec![("clients".into(), FieldValue::Float(8.0))],
            500,
            64,
        )
        .unwrap();
        let t = jobs.tick(1500, 10_000, 10_000);
        let one = Uuid::from_u128(1);
        let two = Uuid::from_u128(2);
        let mut lines: Vec<&str> = t.batches[0].lines.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                format!("load_testing,host=h,uuid={one} clients=8,elapsed=1.5 1500"),
                format!("load_testing,host=h,uuid={two} elapsed=1.5 1500"),
            ]
        );
        assert_eq!(t.seq, 0, "heartbeats alone change nothing on disk");
    }
}
