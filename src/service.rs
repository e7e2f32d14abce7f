//! The use-cases of a run — register, progress, commit and the heartbeat tick — as plain
//! functions over plain types: checked records in, typed outcomes out.
//!
//! Each use-case takes what `ingest::payload` checked, uses the job table for a moment, builds
//! the run's points, has `delivery` record them, and has the job-table change made durable by
//! `journal` before it returns. What it returns says what happened in the run's own words
//! ([`Registered`], [`Committed`], [`Refused`]); turning that into an HTTP answer is `api`'s
//! business, so nothing here knows of requests, headers or status codes (the tidy test keeps
//! `http` out of this file). Never holds the job-table lock across I/O.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::delivery::{Delivery, Failure, Outcome};
use crate::ingest::line_protocol::{Point, encode_batch};
use crate::ingest::payload::{self, Commit, Record};
use crate::ingest::points::{self, Run};
use crate::state::jobs::{Batch, Job, Jobs, Refusal};
use crate::state::journal::{Journal, JournalError};
use crate::stats::Stats;

/// The rules of the job table, from `[jobs]`.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `jobs.max_running`: runs running at once at most.
    pub max_running: usize,
    /// `jobs.max_age`: a run without a commit for this long expires.
    pub max_age: Duration,
    /// `jobs.finished_retention`: how long an ended run is remembered.
    pub finished_retention: Duration,
    /// `jobs.heartbeat_interval`: time between two ticks.
    pub heartbeat_interval: Duration,
}

/// Everything the use-cases share.
pub struct Service {
    pub jobs: Jobs,
    /// `storage.dir/jobs.json` and `jobs.journal`.
    pub journal: Journal,
    pub delivery: Delivery,
    pub stats: Stats,
    pub rules: Rules,
}

/// A run that has started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub uuid: Uuid,
    /// Where its first points went.
    pub outcome: Outcome,
}

/// A run that has ended with its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub uuid: Uuid,
    /// Points written by the commit.
    pub points: usize,
    /// Endpoint rows written as points (at most `limits.max_stats_rows`).
    pub rows: usize,
    /// Endpoint rows the client sent.
    pub rows_sent: usize,
    /// Where the points went.
    pub outcome: Outcome,
}

/// Why a use-case did not go ahead. Nothing of it was recorded, and the job table is as before.
#[derive(Debug)]
pub enum Refused {
    /// No run with this uuid is known.
    UnknownRun(Uuid),
    /// The run was committed at this time (Unix ms).
    AlreadyCommitted { uuid: Uuid, at_ms: i64 },
    /// A commit of the run is under way.
    CommitInProgress(Uuid),
    /// `jobs.max_running` runs are running (the number).
    TooManyRunning(usize),
    /// Progress would give the run more than this many fields.
    TooManyFields(usize),
    /// Progress names a field like one of the run's tags.
    FieldIsTag,
    /// Delivery could not record the points.
    NotRecorded(Failure),
    /// The job-table change could not be made durable (register only: a commit whose points are
    /// recorded stands).
    NotSaved(JournalError),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::UnknownRun(uuid) => write!(
                f,
                "no run {uuid} is known here; register it first (finished runs are forgotten after jobs.finished_retention)"
            ),
            Refused::AlreadyCommitted { uuid, at_ms } => write!(
                f,
                "run {uuid} was already committed at {}",
                rfc3339(*at_ms)
            ),
            Refused::CommitInProgress(uuid) => write!(
                f,
                "a commit of run {uuid} is in progress; wait for its answer"
            ),
            Refused::TooManyRunning(max) => write!(
                f,
                "{max} runs are running already (jobs.max_running); commit finished runs or raise the limit"
            ),
            Refused::TooManyFields(max) => write!(
                f,
                "measurement.fields: the run would have more than {max} fields"
            ),
            Refused::FieldIsTag => f.write_str(
                "measurement.fields: a field is named like one of the run's tags; a name can be a tag or a field, not both",
            ),
            Refused::NotRecorded(why) => write!(f, "nothing was recorded: {why}"),
            Refused::NotSaved(why) => write!(
                f,
                "the run could not be saved, so it was not registered: {why}"
            ),
        }
    }
}

impl Refused {
    fn of(uuid: Uuid, r: Refusal) -> Refused {
        match r {
            Refusal::Unknown => Refused::UnknownRun(uuid),
            Refusal::Finished { at_ms } => Refused::AlreadyCommitted { uuid, at_ms },
            Refusal::InProgress => Refused::CommitInProgress(uuid),
            Refusal::TooManyFields(max) => Refused::TooManyFields(max),
            Refusal::IsTag => Refused::FieldIsTag,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `ms` (since the Unix epoch) as RFC 3339 text, or the number when it cannot be shown.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A commit that has begun; if the use-case leaves early (an error or a panic), the job goes
/// back to what it was, so a run is never stuck in `Committing`.
struct CommitGuard<'a> {
    jobs: &'a Jobs,
    uuid: Uuid,
    done: bool,
}

impl CommitGuard<'_> {
    /// The number is the change's journal record.
    fn finish(mut self, now_ms: i64) -> u64 {
        self.done = true;
        self.jobs.end_commit(&self.uuid, true, now_ms)
    }
}

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.jobs.end_commit(&self.uuid, false, now_ms());
        }
    }
}

impl Service {
    /// Records points: `Ok` means InfluxDB or the spool has them (or the dead letters, when
    /// InfluxDB refused them).
    fn record(&self, points: &[Point]) -> Result<Outcome, Failure> {
        self.delivery
            .deliver(encode_batch(points), points.len(), &self.stats)
    }

    /// Waits until the job-table change `seq` is on disk.
    fn persist(&self, seq: u64) -> Result<(), JournalError> {
        self.journal.wait(&self.jobs, seq)
    }

    /// Starts a run: writes its `started` event and first heartbeat, and adds it to the table.
    /// `default_host` is the run's host when the record names none (the client's address).
    pub fn register(
        &self,
        record: Record,
        default_host: &str,
        now_ms: i64,
    ) -> Result<Registered, Refused> {
        let max = self.rules.max_running;
        let slot = self.jobs.reserve(max).ok_or(Refused::TooManyRunning(max))?;
        let run = Run {
            uuid: Uuid::new_v4(),
            host: record
                .host
                .clone()
                .unwrap_or_else(|| default_host.to_string()),
            tags: record.tags.clone(),
            started_ms: record.started_at_ms.unwrap_or(now_ms),
        };
        let outcome = self
            .record(&points::register(&run, &record, now_ms))
            .map_err(Refused::NotRecorded)?;
        let uuid = run.uuid;
        let seq = slot.fill(Job::running(run, record.fields, now_ms));
        if let Err(e) = self.persist(seq) {
            log::error!("{e}");
            let seq = self.jobs.remove(&uuid);
            let _ = self.persist(seq);
            return Err(Refused::NotSaved(e));
        }
        log::info!("run {uuid} registered");
        Ok(Registered { uuid, outcome })
    }

    /// Live progress: new field values for the following heartbeats. Writes no point itself.
    pub fn progress(&self, uuid: Uuid, record: Record, now_ms: i64) -> Result<(), Refused> {
        let seq = self
            .jobs
            .progress(&uuid, record.fields, now_ms, payload::MAX_FIELDS)
            .map_err(|r| Refused::of(uuid, r))?;
        if let Err(e) = self.persist(seq) {
            // The new values are in memory and go out with the next heartbeat; only a restart
            // before the next save would lose them, and the next progress brings them back.
            log::error!("{e}");
        }
        Ok(())
    }

    /// Ends a run with its result: writes the result, per-endpoint and `finished` points, and
    /// marks the run finished. If the points cannot be recorded, the run is as it was.
    pub fn commit(&self, commit: Commit, now_ms: i64) -> Result<Committed, Refused> {
        let uuid = commit.uuid;
        let mut run = self
            .jobs
            .begin_commit(&uuid)
            .map_err(|r| Refused::of(uuid, r))?;
        let guard = CommitGuard {
            jobs: &self.jobs,
            uuid,
            done: false,
        };
        // The run's tags are the register's and the commit's; the commit's win.
        for (k, v) in &commit.record.tags {
            match run.tags.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.clone(),
                None => run.tags.push((k.clone(), v.clone())),
            }
        }
        let points = points::commit(&run, &commit.record, commit.stats.as_ref(), now_ms);
        let outcome = self.record(&points).map_err(Refused::NotRecorded)?;
        let seq = guard.finish(now_ms);
        // The points are recorded, so the commit stands even if the table cannot be saved; a
        // restart would then show the run as running again, which a second commit settles.
        if let Err(e) = self.persist(seq) {
            log::error!("{e}");
        }
        log::info!("run {uuid} committed");
        let (rows, rows_sent) = commit
            .stats
            .as_ref()
            .map_or((0, 0), |s| (s.rows.len(), s.rows_sent));
        Ok(Committed {
            uuid,
            points: points.len(),
            rows,
            rows_sent,
            outcome,
        })
    }

    /// One heartbeat tick: expire what is too old, forget what is past its retention, and write
    /// every running job's heartbeat.
    pub fn tick(&self, now_ms: i64) {
        let tick = self.jobs.tick(
            now_ms,
            self.rules.max_age.as_millis() as i64,
            self.rules.finished_retention.as_millis() as i64,
        );
        Stats::add(&self.stats.heartbeat_ticks, 1);
        Stats::add(&self.stats.jobs_expired, tick.expired);
        if tick.expired > 0 {
            log::info!(
                "{} runs expired without a commit (jobs.max_age)",
                tick.expired
            );
        }
        let mut batches = tick.batches.into_iter();
        if let Some(first) = batches.next() {
            self.write_beats(first, batches);
        }
        if let Err(e) = self.persist(tick.seq) {
            log::error!("{e}");
        }
    }

    /// Writes a tick's batches at the same time (see `jobs::TICK_BATCHES`): the first on this
    /// thread, the others on threads of their own that end with the tick.
    fn write_beats(&self, first: Batch, others: impl Iterator<Item = Batch>) {
        std::thread::scope(|scope| {
            let others: Vec<_> = others
                .map(
                    |Batch {
                         lines,
                         points,
                         beats,
                     }| {
                        let handle = std::thread::Builder::new()
                            .name("heartbeat-write".into())
                            .spawn_scoped(scope, move || {
                                self.delivery.deliver_alone(lines, points, &self.stats)
                            });
                        (beats, handle)
                    },
                )
                .collect();
            let result = self
                .delivery
                .deliver_alone(first.lines, first.points, &self.stats);
            self.beats_written(&first.beats, result);
            for (beats, handle) in others {
                let result = match handle {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or(Err(Failure::Interrupted("their write panicked"))),
                    Err(_) => Err(Failure::Interrupted("cannot start a thread to write them")),
                };
                self.beats_written(&beats, result);
            }
        });
    }

    /// Counts the heartbeats of a batch once written, or says they were dropped.
    fn beats_written(&self, beats: &[Uuid], result: Result<Outcome, Failure>) {
        match result {
            Ok(_) => self.jobs.count_beats(beats),
            Err(why) => {
                // Heartbeats were promised to nobody; losing some is logged, not fatal.
                Stats::add(&self.stats.heartbeats_dropped, beats.len());
                log::warn!("{} heartbeats dropped: {why}", beats.len());
            }
        }
    }

    /// Runs [`Service::tick`] every `jobs.heartbeat_interval` until the process ends.
    pub fn heartbeat_loop(self: Arc<Self>) {
        let interval = self.rules.heartbeat_interval;
        let mut next = Instant::now() + interval;
        loop {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += interval;
            // A slow InfluxDB must not make ticks pile up: skip the ones already missed.
            let now = Instant::now();
            while next <= now {
                next += interval;
            }
            self.tick(now_ms());
        }
    }
}

#[cfg(test)]
mod tests {
    //! The use-cases in-process, over the in-memory sink: what each records, and that a
    //! refusal or a failure half-way leaves the job table as it was.

    use super::*;
    use crate::delivery::sink::SinkError;
    use crate::delivery::sink::testing::{Answer, MemorySink};
    use crate::delivery::spool::Spool;
    use crate::delivery::spool::tests::Dir;
    use crate::ingest::line_protocol::FieldValue;
    use crate::ingest::payload::{
        PayloadLimits, commit as parse_commit, register as parse_register,
    };
    use crate::state::jobs::State;

    const LIMITS: PayloadLimits = PayloadLimits {
        max_string_bytes: 1 << 20,
        max_stats_rows: 1000,
    };

    struct Fixture {
        service: Service,
        sink: Arc<MemorySink>,
        _dir: Dir,
    }

    fn fixture(name: &str, max_running: usize, spool_limit: u64) -> Fixture {
        let dir = Dir::new(name);
        let sink = Arc::new(MemorySink::new());
        let (journal, jobs, _) = Journal::open(&dir.0, 100).unwrap();
        let spool = Spool::open(&dir.0, spool_limit).unwrap();
        let service = Service {
            jobs,
            journal,
            delivery: Delivery::new(Box::new(Arc::clone(&sink)), spool),
            stats: Stats::default(),
            rules: Rules {
                max_running,
                max_age: Duration::from_secs(3600),
                finished_retention: Duration::from_secs(3600),
                heartbeat_interval: Duration::from_secs(15),
            },
        };
        Fixture {
            service,
            sink,
            _dir: dir,
        }
    }

    fn register(f: &Fixture, body: &str) -> Result<Registered, Refused> {
        let record = parse_register(body.as_bytes(), LIMITS).unwrap();
        f.service.register(record, "10.0.0.9", 1_000)
    }

    fn commit(f: &Fixture, uuid: Uuid) -> Result<Committed, Refused> {
        let body = format!(
            r#"{{"uuid":"{uuid}","measurement":{{"fields":{{"requestStats":{{"stats":[{{"name":"/a","method":"GET","num_requests":3}}],"total_rps":1.5}}}}}}}}"#
        );
        f.service
            .commit(parse_commit(body.as_bytes(), LIMITS).unwrap(), 2_000)
    }

    fn state(f: &Fixture, uuid: Uuid) -> Option<State> {
        f.service
            .jobs
            .list(usize::MAX)
            .into_iter()
            .find(|j| j.run.uuid == uuid)
            .map(|j| j.state)
    }

    fn unreachable() -> Answer {
        Answer::Fail(SinkError::Unreachable("connection refused".into()))
    }

    #[test]
    fn register_records_the_start_and_keeps_the_run() {
        let f = fixture("service-register", 10, 1 << 20);
        let r = register(&f, r#"{"measurement":{"fields":{"clients":5}}}"#).unwrap();
        assert_eq!(r.outcome, Outcome::Delivered);
        let stored = f.sink.stored();
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert!(stored[0].starts_with("load_testing_events,event=started,host=10.0.0.9,"));
        assert!(stored[1].starts_with("load_testing,host=10.0.0.9,"));
        assert!(stored[1].contains("clients=5"));
        assert_eq!(state(&f, r.uuid), Some(State::Running));
        let job = &f.service.jobs.list(1)[0];
        assert_eq!(
            job.fields,
            [("clients".to_string(), FieldValue::Float(5.0))]
        );
    }

    #[test]
    fn a_register_that_cannot_be_recorded_leaves_no_run_and_frees_its_slot() {
        // InfluxDB is unreachable and the spool has no room: nothing can be recorded.
        let f = fixture("service-register-full", 1, 0);
        f.sink.answer([unreachable()]);
        let err = register(&f, "{}").unwrap_err();
        assert!(
            matches!(&err, Refused::NotRecorded(why) if why.is_spool_full()),
            "{err:?}"
        );
        assert!(f.service.jobs.list(usize::MAX).is_empty());
        // The slot it reserved is free again: with max_running = 1 a new register fits.
        assert!(f.service.jobs.reserve(1).is_some());
    }

    #[test]
    fn max_running_refuses_the_next_register() {
        let f = fixture("service-max-running", 2, 1 << 20);
        register(&f, "{}").unwrap();
        register(&f, "{}").unwrap();
        assert!(matches!(
            register(&f, "{}"),
            Err(Refused::TooManyRunning(2))
        ));
        assert_eq!(
            f.sink.stored().len(),
            4,
            "the refused register wrote nothing"
        );
    }

    #[test]
    fn a_commit_that_cannot_be_recorded_leaves_the_run_running() {
        // The register is delivered; then InfluxDB goes away and the spool is too small for
        // the commit's points.
        let f = fixture("service-commit-full", 10, 64);
        let uuid = register(&f, "{}").unwrap().uuid;
        f.sink.answer([unreachable()]);
        for attempt in 0..2 {
            let err = commit(&f, uuid).unwrap_err();
            assert!(
                matches!(&err, Refused::NotRecorded(why) if why.is_spool_full()),
                "attempt {attempt}: {err:?}"
            );
            assert_eq!(state(&f, uuid), Some(State::Running), "attempt {attempt}");
        }
        assert_eq!(f.service.delivery.spool().usage().records, 0);
        assert_eq!(f.sink.stored().len(), 2, "only the register's points");
    }

    #[test]
    fn a_commit_whose_write_panics_leaves_the_run_running() {
        let f = fixture("service-commit-panic", 10, 1 << 20);
        let uuid = register(&f, "{}").unwrap().uuid;
        f.sink.answer([Answer::Panic]);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(&f, uuid)));
        assert!(panicked.is_err());
        assert_eq!(
            state(&f, uuid),
            Some(State::Running),
            "the commit guard put the run back"
        );
        commit(&f, uuid).unwrap();
        assert!(matches!(state(&f, uuid), Some(State::Finished { .. })));
    }

    #[test]
    fn refusals_name_the_run_and_change_nothing() {
        let f = fixture("service-refusals", 10, 1 << 20);
        let unknown = Uuid::from_u128(7);
        assert!(matches!(commit(&f, unknown), Err(Refused::UnknownRun(u)) if u == unknown));
        let uuid = register(&f, r#"{"tags":{"mode":"x"}}"#).unwrap().uuid;
        let record = parse_register(br#"{"measurement":{"fields":{"mode":1}}}"#, LIMITS);
        // The payload alone is fine; against the run's tags it is not.
        let err = f
            .service
            .progress(uuid, record.unwrap(), 1_500)
            .unwrap_err();
        assert!(matches!(err, Refused::FieldIsTag), "{err:?}");
        commit(&f, uuid).unwrap();
        let written = f.sink.stored().len();
        let err = commit(&f, uuid).unwrap_err();
        assert!(
            matches!(err, Refused::AlreadyCommitted { at_ms: 2_000, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("already committed"), "{err}");
        assert_eq!(f.sink.stored().len(), written, "a refusal writes nothing");
    }

    #[test]
    fn a_tick_writes_each_running_run_and_expires_the_silent_ones() {
        let f = fixture("service-tick", 10, 1 << 20);
        let a = register(&f, r#"{"measurement":{"fields":{"clients":1}}}"#)
            .unwrap()
            .uuid;
        let b = register(&f, "{}").unwrap().uuid;
        commit(&f, b).unwrap();
        let before = f.sink.stored().len();
        f.service.tick(1_000 + 60_000);
        let beats: Vec<String> = f.sink.stored()[before..].to_vec();
        assert_eq!(beats.len(), 1, "only the running run beats: {beats:?}");
        assert!(beats[0].contains(&a.to_string()) && beats[0].contains("elapsed=60"));
        f.service.tick(1_000 + 3_600_000);
        assert!(matches!(state(&f, a), Some(State::Expired { .. })));
        assert!(f.sink.stored().last().unwrap().contains("event=expired"));
    }
}
