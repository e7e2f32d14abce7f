//! The use-cases of a run — register, progress, commit and the heartbeat tick — as plain
//! functions over plain types: checked records in, typed outcomes out.
//!
//! Each use-case takes what `ingest::payload` checked, uses the job table for a moment, builds
//! the run's points, and has `delivery` record them together with the job-table change, as one
//! record of the log, before it returns. What it returns says what happened in the run's own words
//! ([`Registered`], [`Committed`], [`Refused`]); turning that into an HTTP answer is `api`'s
//! business, so nothing here knows of requests, headers or status codes (the tidy test keeps
//! `http` out of this file). Never holds the job-table lock across I/O.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::delivery::sink::Sink;
use crate::delivery::{Delivery, Outcome, WriteLimits};
use crate::ingest::line_protocol::{Point, encode_batch};
use crate::ingest::payload::{Commit, Record};
use crate::ingest::points::{self, Run};
use crate::state::jobs::{Ages, Bounds, Change, Job, Jobs, Quota, Refusal, Tick};
use crate::state::journal::{JournalError, Snapshots};
use crate::state::schema::{Claim, Conflict, Schema, TooOld};
use crate::stats::Stats;
use crate::storage::log::LogError;
use crate::storage::record::{Kind, Unit};

/// The rules of the job table, from `[jobs]`.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `jobs.max_age`: a run not heard from (no register, progress or commit) for this long
    /// expires.
    pub max_age: Duration,
    /// `jobs.progress_timeout`: a run that has reported progress, and then none for this long,
    /// expires.
    pub progress_timeout: Duration,
    /// What the table may hold: `jobs.max_running`, `limits.max_run_bytes`,
    /// `jobs.max_table_bytes`.
    pub bounds: Bounds,
    /// `auth.tag_runs_with_token_name`: a run's points carry the `token_name` tag.
    pub tag_token_name: bool,
    /// `jobs.finished_retention`: how long an ended run is remembered.
    pub finished_retention: Duration,
    /// `jobs.heartbeat_interval`: time between two ticks.
    pub heartbeat_interval: Duration,
}

/// Everything the use-cases share.
pub struct Service {
    pub jobs: Jobs,
    /// `storage.dir/jobs.json`.
    pub snapshots: Snapshots,
    pub delivery: Delivery,
    pub stats: Stats,
    pub rules: Rules,
    /// How a tick's heartbeats are cut into records: as the deliverer's writes.
    pub write_limits: WriteLimits,
    /// What the gateway knows of InfluxDB's schema, to refuse at the request what InfluxDB
    /// would refuse.
    pub schema: Schema,
    /// Set when a request was refused for a schema conflict: the schema is read again soon.
    pub schema_stale: SchemaRefresh,
    /// `influxdb.check_schema`: refuse at the request what InfluxDB would refuse for a schema
    /// conflict.
    pub check_schema: bool,
    /// The monotonic clock the expiry of runs runs on.
    pub clock: Clock,
}

/// Where the use-cases read monotonic time: the system's `Instant`, or, in tests, one the
/// test sets.
#[derive(Debug, Default)]
pub struct Clock {
    #[cfg(test)]
    set: std::sync::Mutex<Option<Instant>>,
}

impl Clock {
    /// Now, on the monotonic clock.
    pub fn now(&self) -> Instant {
        #[cfg(test)]
        if let Some(at) = *self.set.lock().unwrap_or_else(|e| e.into_inner()) {
            return at;
        }
        Instant::now()
    }

    /// From now on the clock says `at`.
    #[cfg(test)]
    pub fn set(&self, at: Instant) {
        *self.set.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }
}

/// Wakes the thread that reads InfluxDB's schema again.
#[derive(Debug, Default)]
pub struct SchemaRefresh {
    wanted: std::sync::Mutex<bool>,
    woken: std::sync::Condvar,
}

impl SchemaRefresh {
    /// Asks for a reading soon.
    pub fn want(&self) {
        *self.wanted.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.woken.notify_one();
    }

    /// Waits until a reading is asked for or `timeout` passes; true when it was asked for.
    fn wait(&self, timeout: Duration) -> bool {
        let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let (mut wanted, _) = self
            .woken
            .wait_timeout_while(wanted, timeout, |w| !*w)
            .unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *wanted)
    }
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
    /// `requestStats` members left out of the points for a schema conflict.
    pub left_out: usize,
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
    /// The token's client has its `max_running` runs running.
    TooManyRunningForToken { owner: String, limit: usize },
    /// The token's client's runs hold its share of `jobs.max_table_bytes`.
    TableFullForToken { owner: String, limit: usize },
    /// A field is named like the tag the gateway adds (`token_name`).
    FieldIsTokenTag,
    /// Progress would give the run more than this many fields.
    TooManyFields(usize),
    /// Progress names a field like one of the run's tags.
    FieldIsTag,
    /// The run's heartbeat would be `bytes` long, more than `limit` (`limits.max_run_bytes`).
    RunTooLarge { bytes: usize, limit: usize },
    /// The running jobs hold this many bytes (`jobs.max_table_bytes`).
    TableFull(usize),
    /// The log could not record the request: full, or the disk failed.
    NotRecorded(LogError),
    /// InfluxDB would refuse the request's points: `key` is where the name is in the request.
    SchemaConflict { key: String, conflict: Conflict },
    /// `startedAt` is older than InfluxDB's retention policy keeps: its points would be
    /// dropped.
    OlderThanRetention(TooOld),
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
            Refused::TooManyRunningForToken { owner, limit } => write!(
                f,
                "the token {owner:?} has {limit} runs running already (its max_running); commit finished runs first"
            ),
            Refused::TableFullForToken { owner, limit } => write!(
                f,
                "the runs of token {owner:?} would hold more than its share of jobs.max_table_bytes ({limit} bytes); commit finished runs first"
            ),
            Refused::FieldIsTokenTag => write!(
                f,
                "measurement.fields.{}: the gateway tags every run with the name of its token under this name (auth.tag_runs_with_token_name); give the field another name",
                points::TOKEN_NAME_TAG
            ),
            Refused::TooManyFields(max) => write!(
                f,
                "measurement.fields: the run would have more than {max} fields"
            ),
            Refused::FieldIsTag => f.write_str(
                "measurement.fields: a field is named like one of the run's tags; a name can be a tag or a field, not both",
            ),
            Refused::RunTooLarge { bytes, limit } => write!(
                f,
                "measurement: the run's heartbeat (its measurement, tags and fields) would be {bytes} bytes, more than limits.max_run_bytes ({limit}); register and progress carry a few live numbers, the results go in the commit"
            ),
            Refused::TableFull(limit) => write!(
                f,
                "the running jobs would hold more than jobs.max_table_bytes ({limit} bytes); commit finished runs, or try again later"
            ),
            Refused::NotRecorded(why) => write!(f, "nothing was recorded: {why}"),
            Refused::SchemaConflict { key, conflict } => write!(f, "{key}: {conflict}"),
            Refused::OlderThanRetention(old) => write!(
                f,
                "startedAt {} is older than the retention policy {:?} keeps ({}): InfluxDB would drop these points; send a later startedAt, or lengthen the policy",
                rfc3339(old.at_ms),
                old.retention.policy,
                old.retention.keeps()
            ),
        }
    }
}

impl Refused {
    /// [`Refused::of`], naming `quota`'s owner where the refusal is about it.
    fn of_owner(uuid: Uuid, r: Refusal, quota: Option<Quota<'_>>) -> Refused {
        let owner = quota.map(|q| q.owner.to_string()).unwrap_or_default();
        match Refused::of(uuid, r) {
            Refused::TooManyRunningForToken { limit, .. } => {
                Refused::TooManyRunningForToken { owner, limit }
            }
            Refused::TableFullForToken { limit, .. } => Refused::TableFullForToken { owner, limit },
            other => other,
        }
    }

    fn of(uuid: Uuid, r: Refusal) -> Refused {
        match r {
            Refusal::Unknown => Refused::UnknownRun(uuid),
            Refusal::Finished { at_ms } => Refused::AlreadyCommitted { uuid, at_ms },
            Refusal::InProgress => Refused::CommitInProgress(uuid),
            Refusal::TooManyFields(max) => Refused::TooManyFields(max),
            Refusal::IsTag => Refused::FieldIsTag,
            Refusal::RunTooLarge { bytes, limit } => Refused::RunTooLarge { bytes, limit },
            Refusal::TooManyRunning { limit } => Refused::TooManyRunning(limit),
            // The caller names the owner.
            Refusal::OwnerFull { limit } => Refused::TooManyRunningForToken {
                owner: String::new(),
                limit,
            },
            Refusal::OwnerTableFull { limit } => Refused::TableFullForToken {
                owner: String::new(),
                limit,
            },
            Refusal::TableFull { limit } => Refused::TableFull(limit),
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
    /// The finishing change, once prepared.
    prepared: Option<Change>,
    done: bool,
}

impl CommitGuard<'_> {
    /// The commit's record is on disk: the run is finished.
    fn finish(mut self, now_ms: i64) {
        self.done = true;
        self.jobs
            .end_commit(&self.uuid, self.prepared.as_ref(), true, now_ms);
    }
}

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.jobs
                .end_commit(&self.uuid, self.prepared.as_ref(), false, now_ms());
        }
    }
}

/// A request's points as the one unit of its record.
fn request_unit(points: usize, lines: &str) -> [Unit<'_>; 1] {
    [Unit {
        run: Uuid::nil(),
        points: points as u32,
        lines,
    }]
}

impl Service {
    /// Starts a run: records its `started` event and first heartbeat with the new job, and adds
    /// it to the table. `default_host` is the run's host when the record names none (the
    /// client's address). `quota` names the client (a token's name) and how many runs it may
    /// have running; with `auth.tag_runs_with_token_name`, that name becomes the run's
    /// `token_name` tag, whatever the client sent under that name.
    pub fn register(
        &self,
        mut record: Record,
        default_host: &str,
        quota: Option<Quota<'_>>,
        now_ms: i64,
    ) -> Result<Registered, Refused> {
        if self.rules.tag_token_name
            && let Some(q) = quota
        {
            if record
                .fields
                .iter()
                .any(|(k, _)| k == points::TOKEN_NAME_TAG)
            {
                return Err(Refused::FieldIsTokenTag);
            }
            record.tags.retain(|(k, _)| k != points::TOKEN_NAME_TAG);
            record
                .tags
                .push((points::TOKEN_NAME_TAG.to_string(), q.owner.to_string()));
        }
        if let Some(at_ms) = record.started_at_ms {
            self.schema
                .check_age(at_ms, now_ms)
                .map_err(Refused::OlderThanRetention)?;
        }
        let mut slot = self
            .jobs
            .reserve(self.rules.bounds.max_running, quota)
            .map_err(|r| Refused::of_owner(Uuid::nil(), r, quota))?;
        let run = Run {
            uuid: Uuid::new_v4(),
            host: record
                .host
                .clone()
                .unwrap_or_else(|| default_host.to_string()),
            tags: record.tags.clone(),
            started_ms: record.started_at_ms.unwrap_or(now_ms),
        };
        let tags = record.tags.iter().map(|(k, _)| k.as_str());
        self.check_schema(points::HEARTBEAT, &record.fields, tags.clone())?;
        self.check_tags(&[points::EVENTS], tags)?;
        let points = points::register(&run, &record, now_ms);
        // Checked above for the order of the answers; checked again and claimed here in one
        // step, so a request racing with another type of a new field is refused.
        let claim = self.claim(&points)?;
        let lines = encode_batch(&points);
        let uuid = run.uuid;
        let mut job = Job::running(run, record.fields, now_ms);
        job.seen_mono_ms = self.jobs.mono_ms(self.clock.now());
        job.owner = quota.map(|q| q.owner.to_string());
        let change = slot
            .prepare(&job, &self.rules.bounds)
            .map_err(|r| Refused::of_owner(uuid, r, quota))?;
        // The table grows: the next snapshot must still fit in the room kept for it, or a
        // full disk could never be freed.
        self.keep_room()?;
        let seq = self
            .delivery
            .record(
                Kind::Request,
                &change,
                &request_unit(points.len(), &lines),
                &self.stats,
            )
            .map_err(Refused::NotRecorded)?;
        slot.fill(job);
        self.learned(claim, &points);
        log::info!("run {uuid} registered");
        Ok(Registered {
            uuid,
            outcome: self.delivery.outcome(seq),
        })
    }

    /// Live progress: new field values for the following heartbeats. Writes no point itself.
    /// The change is prepared, recorded, and made once on disk; when the log cannot record it,
    /// the answer is an error and the run is as before (its fields, expiry clocks and state).
    ///
    /// `caller` is the client that sent it (`None` without tokens): a run registered with
    /// another token is unknown to it, and a run it revives takes one of its places.
    pub fn progress(
        &self,
        uuid: Uuid,
        record: Record,
        caller: Option<Quota<'_>>,
        now_ms: i64,
    ) -> Result<(), Refused> {
        if !self.jobs.is_for(&uuid, caller.map(|q| q.owner)) {
            return Err(Refused::UnknownRun(uuid));
        }
        // Checked and claimed in one step, held until the change is on disk.
        let claimed = if self.check_schema {
            let mut claim = self.schema.claim();
            let fields = record.fields.iter().map(|(k, v)| (k.as_str(), v));
            match claim.fields(points::HEARTBEAT, fields, std::iter::empty()) {
                Ok(()) => Some(claim),
                // A field named like one of the run's own tags is the run's refusal, as
                // without a schema.
                Err(Conflict::TagAndField { name, .. }) if self.jobs.has_tag(&uuid, &name) => {
                    return Err(Refused::FieldIsTag);
                }
                Err(conflict) => return Err(self.schema_refused(conflict)),
            }
        } else {
            None
        };
        let fields = record.fields.clone();
        let mono_ms = self.jobs.mono_ms(self.clock.now());
        let (change, prepared) = self
            .jobs
            .prepare_progress(
                &uuid,
                record.fields,
                (now_ms, mono_ms),
                &self.rules.bounds,
                caller,
            )
            .map_err(|r| Refused::of_owner(uuid, r, caller))?;
        // Dropped on the way out (not recorded), `prepared` leaves the job as it was.
        self.keep_room()?;
        self.delivery
            .record(Kind::Request, &change, &[], &self.stats)
            .map_err(Refused::NotRecorded)?;
        prepared.applied();
        match claimed {
            Some(claim) => claim.written(),
            None => self.schema.learn_fields(points::HEARTBEAT, &fields),
        }
        Ok(())
    }

    /// Ends a run with its result: records the result, per-endpoint and `finished` points with
    /// the run's end, and marks the run finished. If the record cannot be written, the run is
    /// as it was.
    ///
    /// `caller` is the client that sent it (`None` without tokens): a run registered with
    /// another token is unknown to it.
    pub fn commit(
        &self,
        mut commit: Commit,
        caller: Option<&str>,
        now_ms: i64,
    ) -> Result<Committed, Refused> {
        let uuid = commit.uuid;
        // The commit's points are stamped with its startedAt.
        if let Some(at_ms) = commit.record.started_at_ms {
            self.schema
                .check_age(at_ms, now_ms)
                .map_err(Refused::OlderThanRetention)?;
        }
        let mut run = self
            .jobs
            .begin_commit(&uuid, caller)
            .map_err(|r| Refused::of(uuid, r))?;
        let mut guard = CommitGuard {
            jobs: &self.jobs,
            uuid,
            prepared: None,
            done: false,
        };
        // The run's tags are the register's and the commit's; the commit's win, except the
        // tag the gateway sets.
        for (k, v) in &commit.record.tags {
            if self.rules.tag_token_name && k == points::TOKEN_NAME_TAG {
                continue;
            }
            match run.tags.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.clone(),
                None => run.tags.push((k.clone(), v.clone())),
            }
        }
        // A field named like one of the run's tags would be left off the result: refused, as
        // in a progress.
        if let Some((name, _)) = commit
            .record
            .fields
            .iter()
            .find(|(k, _)| run.tags.iter().any(|(t, _)| t == k))
        {
            return Err(
                if name == points::TOKEN_NAME_TAG && self.rules.tag_token_name {
                    Refused::FieldIsTokenTag
                } else {
                    Refused::FieldIsTag
                },
            );
        }
        let tags = run.tags.iter().map(|(k, _)| k.as_str());
        self.check_schema(points::RESULT, &commit.record.fields, tags.clone())?;
        self.check_tags(&[points::REQUEST_STATS, points::EVENTS], tags)?;
        let mut claim = self.schema.claim();
        let left_out = match commit.stats.as_mut() {
            Some(stats) if self.check_schema => self.leave_out_conflicts(stats, &mut claim),
            _ => 0,
        };
        let rows_sent = commit.stats.as_ref().map_or(0, |s| s.rows_sent);
        // The stats move into the points: a commit of many rows holds its members once.
        let points = points::commit(&run, &commit.record, commit.stats.take(), now_ms);
        let claim = match self.check_schema {
            true => {
                claim
                    .points(&points)
                    .map_err(|conflict| self.schema_refused(conflict))?;
                Some(claim)
            }
            false => None,
        };
        let lines = encode_batch(&points);
        let change = self
            .jobs
            .prepare_finish(&uuid, now_ms)
            .ok_or(Refused::CommitInProgress(uuid))?;
        let change = guard.prepared.insert(change);
        let seq = self
            .delivery
            .record(
                Kind::Request,
                change,
                &request_unit(points.len(), &lines),
                &self.stats,
            )
            .map_err(Refused::NotRecorded)?;
        guard.finish(now_ms);
        self.learned(claim, &points);
        log::info!("run {uuid} committed");
        // The rows InfluxDB holds: a row left with nothing to record is not a point.
        let rows = points
            .iter()
            .filter(|p| p.measurement() == points::REQUEST_STATS)
            .count();
        Ok(Committed {
            uuid,
            points: points.len(),
            rows,
            rows_sent,
            left_out,
            outcome: self.delivery.outcome(seq),
        })
    }

    /// One heartbeat tick: expire what is too old, forget what is past its retention, and record
    /// every running job's heartbeat; then save a snapshot of the table when the log asks for
    /// one.
    pub fn tick(&self, now_ms: i64) {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let tick = self.jobs.tick(
            (now_ms, self.jobs.mono_ms(self.clock.now())),
            &Ages {
                max_age_ms: ms(self.rules.max_age),
                progress_timeout_ms: ms(self.rules.progress_timeout),
                retention_ms: ms(self.rules.finished_retention),
            },
        );
        Stats::add(&self.stats.heartbeat_ticks, 1);
        Stats::add(&self.stats.jobs_expired, tick.expired);
        if tick.expired > 0 {
            log::info!(
                "{} runs expired: no commit within jobs.max_age, or no progress within jobs.progress_timeout",
                tick.expired
            );
        }
        self.record_tick(&tick);
        if self.delivery.log().needs_snapshot() {
            self.save_snapshot();
        }
    }

    /// Records a tick's lines as records of the size of the deliverer's writes (the first one
    /// also carries the tick's changes of the table), and counts the heartbeats recorded.
    fn record_tick(&self, tick: &Tick) {
        let mut units: Vec<Unit<'_>> = Vec::with_capacity(tick.units.len());
        let mut start = 0;
        for line in &tick.units {
            units.push(Unit {
                run: line.run,
                points: 1,
                lines: &tick.lines[start..line.end],
            });
            start = line.end;
        }
        let mut chunks: Vec<&[Unit<'_>]> = Vec::new();
        let mut rest = &units[..];
        while !rest.is_empty() {
            let n = self
                .write_limits
                .first_write(rest.iter().map(|u| (u.lines.len(), u.points as usize)));
            let (chunk, after) = rest.split_at(n);
            chunks.push(chunk);
            rest = after;
        }
        if chunks.is_empty() && !tick.change.bytes.is_empty() {
            chunks.push(&[]);
        }
        let empty = Change::default();
        let mut start = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            let change = if i == 0 { &tick.change } else { &empty };
            let beats: Vec<Uuid> = tick.units[start..start + chunk.len()]
                .iter()
                .filter(|l| l.beat)
                .map(|l| l.run)
                .collect();
            start += chunk.len();
            match self
                .delivery
                .record(Kind::Heartbeats, change, chunk, &self.stats)
            {
                Ok(_) => self.jobs.count_beats(&beats),
                Err(why) => {
                    // The table made the tick's changes (expiries, removals): they go out with
                    // the next change instead.
                    if i == 0 {
                        self.jobs.unrecorded(tick.change.clone());
                    }
                    // Heartbeats were promised to nobody; losing some is logged, not fatal.
                    Stats::add(&self.stats.heartbeats_dropped, beats.len());
                    log::warn!("{} heartbeats dropped: {why}", beats.len());
                }
            }
        }
    }

    /// Refuses a request whose client fields (`fields`) or tags InfluxDB would refuse in
    /// `measurement` for a schema conflict, as far as the gateway knows; asks for InfluxDB's
    /// schema to be read again soon, so that a change under the gateway is noticed.
    fn check_schema<'a>(
        &self,
        measurement: &str,
        fields: &'a [(String, crate::ingest::line_protocol::FieldValue)],
        tags: impl Iterator<Item = &'a str>,
    ) -> Result<(), Refused> {
        if !self.check_schema {
            return Ok(());
        }
        let fields = fields.iter().map(|(k, v)| (k.as_str(), v));
        self.schema
            .check(measurement, fields, tags)
            .map_err(|conflict| self.schema_refused(conflict))
    }

    /// Leaves out of the points the `requestStats` members InfluxDB would refuse, as far as the
    /// gateway knows (a number where earlier runs wrote text, or where a commit under way
    /// claimed it as a boolean; a name that is a tag there): the load test's data never fails a
    /// commit, nor sends its row to the dead letters. They stay in the `requestStats` text.
    /// Each member kept is claimed by `claim` as it is checked. Returns how many were left out.
    fn leave_out_conflicts(
        &self,
        stats: &mut crate::ingest::payload::RequestStats,
        claim: &mut Claim<'_>,
    ) -> usize {
        let mut fits =
            |measurement: &str, (k, v): &(String, crate::ingest::line_protocol::FieldValue)| {
                claim
                    .fields(measurement, [(k.as_str(), v)], std::iter::empty())
                    .is_ok()
            };
        let before = stats.scalars.len() + stats.rows.iter().map(|r| r.fields.len()).sum::<usize>();
        stats.scalars.retain(|f| fits(points::RESULT, f));
        for row in &mut stats.rows {
            row.fields.retain(|f| fits(points::REQUEST_STATS, f));
        }
        let after = stats.scalars.len() + stats.rows.iter().map(|r| r.fields.len()).sum::<usize>();
        before - after
    }

    /// Checks the fields and tags of `points` against what the gateway knows and what other
    /// requests under way claimed, and claims them, in one step; `None` without
    /// `influxdb.check_schema`. The claim is let go if the request is not recorded.
    fn claim(&self, points: &[Point]) -> Result<Option<Claim<'_>>, Refused> {
        if !self.check_schema {
            return Ok(None);
        }
        let mut claim = self.schema.claim();
        claim
            .points(points)
            .map_err(|conflict| self.schema_refused(conflict))?;
        Ok(Some(claim))
    }

    /// The request's record is on disk: what it wrote is learned.
    fn learned(&self, claim: Option<Claim<'_>>, points: &[Point]) {
        match claim {
            Some(claim) => claim.written(),
            None => self.schema.learn(points),
        }
    }

    /// [`Service::check_schema`] of tags alone, in each of `measurements`.
    fn check_tags<'a>(
        &self,
        measurements: &[&str],
        tags: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), Refused> {
        if !self.check_schema {
            return Ok(());
        }
        for m in measurements {
            self.schema
                .check(m, std::iter::empty(), tags.clone())
                .map_err(|conflict| self.schema_refused(conflict))?;
        }
        Ok(())
    }

    fn schema_refused(&self, conflict: Conflict) -> Refused {
        self.schema_stale.want();
        let key = match &conflict {
            Conflict::TagAndField {
                is_tag_now: true, ..
            } => format!("tags.{}", conflict.name()),
            _ => format!("measurement.fields.{}", conflict.name()),
        };
        Refused::SchemaConflict { key, conflict }
    }

    /// Reads InfluxDB's schema at once, then every `every`, and soon after a request was
    /// refused for a conflict (at most once a second), until the process ends.
    /// `influx` tells the retention policy, read with the schema.
    pub fn schema_loop(self: Arc<Self>, every: Duration, influx: &dyn Sink) {
        self.refresh_schema();
        self.refresh_retention(influx);
        let mut last = Instant::now();
        let mut refusals = self.delivery.refusals_seen();
        loop {
            let asked = self.schema_stale.wait(every.min(Duration::from_secs(1)));
            // InfluxDB refusing a write (a dead letter) may mean its schema changed too.
            let refused = self.delivery.refusals_seen() != refusals;
            if !(asked || refused || last.elapsed() >= every) {
                continue;
            }
            if last.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_secs(1).saturating_sub(last.elapsed()));
            }
            refusals = self.delivery.refusals_seen();
            last = Instant::now();
            self.refresh_schema();
            self.refresh_retention(influx);
        }
    }

    /// Reads how long InfluxDB keeps points (v1: the retention policy; v2: the bucket's rule,
    /// where the token may read it), so that a run stamped older is refused at the request.
    /// When InfluxDB cannot be asked (it is down, the user may not read it), what was known
    /// holds.
    pub fn refresh_retention(&self, influx: &dyn Sink) {
        match influx.retention() {
            Ok(retention) => self.schema.set_retention(retention),
            Err(e) => log::debug!("cannot read InfluxDB's retention policy: {e}"),
        }
    }

    /// Reads InfluxDB's schema once, where its API allows; while nothing waits to be delivered
    /// it replaces what the gateway knew. Where it does not (v2, v3), what the gateway learned
    /// from its own writes is let go while nothing waits to be delivered: InfluxDB may have
    /// dropped it since (a bucket or table made anew), and the gateway cannot ask, so a type
    /// it learned holds until the next `influxdb.schema_refresh`, and is learned again from the
    /// next write that uses it.
    pub fn refresh_schema(&self) {
        let caught_up = self.delivery.log().undelivered().0 == 0;
        match self.delivery.read_schema() {
            Ok(Some(seen)) => self.schema.update_from_influxdb(seen, caught_up),
            Ok(None) => self
                .schema
                .update_from_influxdb(Default::default(), caught_up),
            Err(e) => log::debug!("cannot read InfluxDB's schema: {e}"),
        }
    }

    /// Grows the room kept for the next snapshot to what the table now holds (with the
    /// changes prepared); refuses, as not recorded, when the disk has no room for it.
    fn keep_room(&self) -> Result<(), Refused> {
        self.snapshots
            .keep_room(self.jobs.bytes() as u64)
            .map_err(|e| match e {
                JournalError::Io { doing, path, error } => {
                    Refused::NotRecorded(LogError::Io { doing, path, error })
                }
                JournalError::Damaged { .. } => Refused::NotRecorded(LogError::Broken),
            })
    }

    /// Writes a snapshot of the job table, so the log can let go of delivered segments. A
    /// failure is logged at once, then at most once a minute while it repeats (a full disk
    /// fails every tick until InfluxDB has the log).
    pub fn save_snapshot(&self) {
        match self.try_save_snapshot() {
            Ok(()) => self.snapshots.errors.reset(),
            Err(e) => self.snapshots.errors.error(&e),
        }
    }

    /// Writes a snapshot; an error says why it could not be written (one that found the disk
    /// full tells the log, which may then let its segment being written go once delivered).
    pub fn try_save_snapshot(&self) -> Result<(), JournalError> {
        let written = self.snapshots.write(
            &self.jobs,
            &self.schema.known(),
            self.delivery.log().snapshot_frees_segments(),
        );
        match written {
            Ok((covers, bytes)) => {
                self.delivery.log().snapshot_written(covers, bytes);
                Ok(())
            }
            Err(e) => {
                if e.is_disk_full() {
                    self.delivery.log().disk_is_full();
                }
                Err(e)
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
            // A slow disk must not make ticks pile up: skip the ones already missed.
            let now = Instant::now();
            while next <= now {
                next += interval;
            }
            self.tick(now_ms());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The use-cases in-process, over the in-memory sink and a real log in a temporary
    //! directory: what each records, and that a refusal or a failure half-way leaves the job
    //! table as it was.

    use super::*;
    use crate::config::Acknowledge;
    use crate::delivery::sink::testing::MemorySink;
    use crate::ingest::line_protocol::FieldValue;
    use crate::ingest::payload::{
        PayloadLimits, commit as parse_commit, register as parse_register,
    };
    use crate::state::jobs::{Job, State};
    use crate::state::schema::Schema;
    use crate::storage::dead_letters::DeadLetters;
    use crate::storage::log::Log;
    use crate::storage::tests::Dir;

    const LIMITS: PayloadLimits = PayloadLimits {
        max_string_bytes: 1 << 20,
        max_stats_rows: 1000,
    };

    /// A service over a fresh storage directory, its deliverer running on a thread of its own
    /// (stopped when the fixture is dropped), acknowledging once InfluxDB has the points.
    pub(crate) struct Fixture {
        pub service: Arc<Service>,
        pub sink: Arc<MemorySink>,
        deliverer: Option<std::thread::JoinHandle<()>>,
        pub dir: Dir,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            self.service.delivery.stop();
            if let Some(t) = self.deliverer.take() {
                let _ = t.join();
            }
        }
    }

    pub(crate) fn fixture(name: &str, max_running: usize, spool_limit: u64) -> Fixture {
        fixture_with(name, max_running, spool_limit, Acknowledge::Influxdb)
    }

    pub(crate) fn fixture_with(
        name: &str,
        max_running: usize,
        spool_limit: u64,
        acknowledge: Acknowledge,
    ) -> Fixture {
        let dir = Dir::new(name);
        let sink = Arc::new(MemorySink::new());
        let snapshots = Snapshots::new(crate::storage::tests::root(&dir));
        let mut restore = snapshots.read().unwrap();
        let (log, position, _) = Log::open(
            crate::storage::tests::log_dir(&dir.0),
            spool_limit,
            false,
            &mut |c| restore.log_changes(c),
        )
        .unwrap();
        let loaded = snapshots.finish(restore, &dir.0.join("log"), 100).unwrap();
        let write_limits = WriteLimits {
            max_bytes: 1 << 20,
            max_lines: 5000,
        };
        let delivery = Delivery::new(
            log,
            Box::new(Arc::clone(&sink)),
            DeadLetters::open(&crate::storage::tests::root(&dir), 1 << 20).unwrap(),
            acknowledge,
            Duration::from_secs(5),
            write_limits,
        );
        let service = Arc::new(Service {
            jobs: loaded.jobs,
            snapshots,
            delivery,
            stats: Stats::default(),
            rules: Rules {
                max_age: Duration::from_secs(3600),
                progress_timeout: Duration::from_secs(600),
                bounds: Bounds {
                    max_running,
                    max_fields: crate::ingest::payload::MAX_FIELDS,
                    max_run_bytes: 64 << 10,
                    max_table_bytes: 128 << 20,
                },
                finished_retention: Duration::from_secs(3600),
                heartbeat_interval: Duration::from_secs(15),
                tag_token_name: false,
            },
            write_limits,
            schema: Schema::new(loaded.restored.schema),
            schema_stale: SchemaRefresh::default(),
            check_schema: true,
            clock: Clock::default(),
        });
        let running = Arc::clone(&service);
        let deliverer = std::thread::spawn(move || running.delivery.run(position, &running.stats));
        Fixture {
            service,
            sink,
            deliverer: Some(deliverer),
            dir,
        }
    }

    /// Waits (10 s at most) until the sink has stored `n` lines; the lines.
    pub(crate) fn stored(f: &Fixture, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stored = f.sink.stored();
            if stored.len() >= n {
                return stored;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} lines stored: {stored:?}",
                stored.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn register(f: &Fixture, body: &str) -> Result<Registered, Refused> {
        let record = parse_register(body.as_bytes(), LIMITS).unwrap();
        f.service.register(record, "10.0.0.9", None, 1_000)
    }

    fn commit_body(uuid: Uuid, note: &str) -> String {
        format!(
            r#"{{"uuid":"{uuid}","measurement":{{"fields":{{"note":"{note}","requestStats":{{"stats":[{{"name":"/a","method":"GET","num_requests":3}}],"total_rps":1.5}}}}}}}}"#
        )
    }

    fn commit(f: &Fixture, uuid: Uuid) -> Result<Committed, Refused> {
        f.service.commit(
            parse_commit(commit_body(uuid, "").as_bytes(), LIMITS).unwrap(),
            None,
            2_000,
        )
    }

    fn state(f: &Fixture, uuid: Uuid) -> Option<State> {
        f.service
            .jobs
            .list(usize::MAX)
            .into_iter()
            .find(|j| j.run.uuid == uuid)
            .map(|j| j.state)
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
    fn with_acknowledge_disk_the_answer_does_not_wait_for_influxdb() {
        let f = fixture_with("service-disk", 10, 1 << 20, Acknowledge::Disk);
        // InfluxDB never answers; the register is answered all the same, as recorded.
        f.sink.set_ping_fails(true);
        f.sink.answer(std::iter::repeat_n(
            crate::delivery::sink::testing::Answer::Fail(
                crate::delivery::sink::SinkError::Unreachable("connection refused".into()),
            ),
            100,
        ));
        let r = register(&f, "{}").unwrap();
        assert_eq!(r.outcome, Outcome::Recorded);
        assert_eq!(state(&f, r.uuid), Some(State::Running));
    }

    #[test]
    fn a_register_that_cannot_be_recorded_leaves_no_run_and_frees_its_slot() {
        // The log has no room for a record with points.
        let f = fixture("service-register-full", 1, 0);
        let err = register(&f, "{}").unwrap_err();
        assert!(
            matches!(&err, Refused::NotRecorded(why) if why.is_spool_full()),
            "{err:?}"
        );
        assert!(f.service.jobs.list(usize::MAX).is_empty());
        // The slot it reserved is free again: with max_running = 1 a new register fits, and
        // the snapshot is not held back by a change that never happened.
        assert!(f.service.jobs.reserve(1, None).is_ok());
        assert_eq!(f.service.jobs.snapshot().1, 1);
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
        // Room for the register's record (delivered at once), not for a commit with a note of
        // 2 000 bytes.
        let f = fixture("service-commit-full", 10, 1500);
        let uuid = register(&f, "{}").unwrap().uuid;
        let big = parse_commit(commit_body(uuid, &"n".repeat(2000)).as_bytes(), LIMITS).unwrap();
        for attempt in 0..2 {
            let err = f.service.commit(big.clone(), None, 2_000).unwrap_err();
            assert!(
                matches!(&err, Refused::NotRecorded(why) if why.is_spool_full()),
                "attempt {attempt}: {err:?}"
            );
            assert_eq!(state(&f, uuid), Some(State::Running), "attempt {attempt}");
        }
        assert_eq!(f.sink.stored().len(), 2, "only the register's points");
        // A commit that fits goes through.
        commit(&f, uuid).unwrap();
        assert!(matches!(
            state(&f, uuid),
            Some(State::Finished { at_ms: 2_000 })
        ));
    }

    #[test]
    fn a_commit_that_fails_on_disk_leaves_the_run_running_and_can_be_sent_again() {
        let f = fixture("service-commit-disk", 10, 1 << 20);
        let uuid = register(&f, "{}").unwrap().uuid;
        f.service.delivery.log().fail_next_writes(1);
        let err = commit(&f, uuid).unwrap_err();
        assert!(
            matches!(&err, Refused::NotRecorded(why) if !why.is_spool_full()),
            "{err:?}"
        );
        assert_eq!(state(&f, uuid), Some(State::Running));
        let c = commit(&f, uuid).unwrap();
        assert_eq!((c.points, c.rows, c.rows_sent), (3, 1, 1));
        assert_eq!(c.outcome, Outcome::Delivered);
        assert!(matches!(
            state(&f, uuid),
            Some(State::Finished { at_ms: 2_000 })
        ));
    }

    #[test]
    fn a_commit_left_half_way_puts_the_run_back() {
        let f = fixture("service-commit-panic", 10, 1 << 20);
        let uuid = register(&f, "{}").unwrap().uuid;
        let jobs = &f.service.jobs;
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            jobs.begin_commit(&uuid, None).unwrap();
            let mut guard = CommitGuard {
                jobs,
                uuid,
                prepared: None,
                done: false,
            };
            guard.prepared = jobs.prepare_finish(&uuid, 1_500);
            panic!("a commit fails half-way (on purpose, by the test)");
        }));
        assert!(panicked.is_err());
        assert_eq!(
            state(&f, uuid),
            Some(State::Running),
            "the guard put the run back"
        );
        assert_eq!(
            jobs.snapshot().1,
            2,
            "the abandoned change does not hold the snapshot back"
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
            .progress(uuid, record.unwrap(), None, 1_500)
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
    fn a_tick_records_each_running_run_and_expires_the_silent_ones() {
        let f = fixture("service-tick", 10, 1 << 20);
        let t0 = Instant::now();
        f.service.clock.set(t0);
        let a = register(&f, r#"{"measurement":{"fields":{"clients":1}}}"#)
            .unwrap()
            .uuid;
        let b = register(&f, "{}").unwrap().uuid;
        commit(&f, b).unwrap();
        let before = f.sink.stored().len();
        f.service.clock.set(t0 + Duration::from_secs(60));
        f.service.tick(1_000 + 60_000);
        let beats: Vec<String> = stored(&f, before + 1)[before..].to_vec();
        assert_eq!(beats.len(), 1, "only the running run beats: {beats:?}");
        assert!(beats[0].contains(&a.to_string()) && beats[0].contains("elapsed=60"));
        f.service.clock.set(t0 + Duration::from_secs(3600));
        f.service.tick(1_000 + 3_600_000);
        assert!(matches!(state(&f, a), Some(State::Expired { .. })));
        let all = stored(&f, before + 2);
        assert!(all.last().unwrap().contains("event=expired"));
    }

    #[test]
    fn a_restart_finds_every_acknowledged_change() {
        let (a, b) = {
            let f = fixture("service-restart", 10, 1 << 20);
            let a = register(&f, r#"{"measurement":{"fields":{"clients":1}}}"#)
                .unwrap()
                .uuid;
            let b = register(&f, "{}").unwrap().uuid;
            let record = parse_register(br#"{"measurement":{"fields":{"clients":9}}}"#, LIMITS);
            f.service.progress(a, record.unwrap(), None, 1_500).unwrap();
            commit(&f, b).unwrap();
            // A copy of the directory as it is, no snapshot written since the start: as after
            // a kill -9.
            let path = f.dir.0.clone();
            let copy = std::env::temp_dir().join(format!("mc-restart-copy-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&copy);
            copy_dir(&path, &copy);
            (a, b)
        };
        let copy = std::env::temp_dir().join(format!("mc-restart-copy-{}", std::process::id()));
        let snapshots = Snapshots::new(crate::storage::tests::root_at(&copy));
        let mut restore = snapshots.read().unwrap();
        Log::open(
            crate::storage::tests::log_dir(&copy),
            1 << 20,
            false,
            &mut |c| restore.log_changes(c),
        )
        .unwrap();
        let loaded = snapshots.finish(restore, &copy.join("log"), 100).unwrap();
        let jobs = loaded.jobs.list(10);
        let find = |u: Uuid| jobs.iter().find(|j| j.run.uuid == u).unwrap().clone();
        assert_eq!(
            find(a).fields,
            [("clients".to_string(), FieldValue::Float(9.0))]
        );
        assert!(matches!(find(b).state, State::Finished { at_ms: 2_000 }));
        let _ = std::fs::remove_dir_all(&copy);
    }

    /// The jobs a start would find in a copy of the fixture's directory as it is now.
    fn restored(f: &Fixture, name: &str) -> Vec<Job> {
        let copy = std::env::temp_dir().join(format!("mc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&f.dir.0, &copy);
        let snapshots = Snapshots::new(crate::storage::tests::root_at(&copy));
        let mut restore = snapshots.read().unwrap();
        Log::open(
            crate::storage::tests::log_dir(&copy),
            1 << 20,
            false,
            &mut |c| restore.log_changes(c),
        )
        .unwrap();
        let loaded = snapshots.finish(restore, &copy.join("log"), 100).unwrap();
        let _ = std::fs::remove_dir_all(&copy);
        loaded.jobs.list(usize::MAX)
    }

    fn progress(f: &Fixture, uuid: Uuid, body: &str, now_ms: i64) -> Result<(), Refused> {
        let record = parse_register(body.as_bytes(), LIMITS).unwrap();
        f.service.progress(uuid, record, None, now_ms)
    }

    #[test]
    fn a_progress_that_is_not_recorded_changes_neither_the_heartbeats_nor_what_a_restart_finds() {
        let f = fixture("service-progress-not-recorded", 10, 1 << 20);
        let t0 = Instant::now();
        f.service.clock.set(t0);
        let uuid = register(&f, r#"{"measurement":{"fields":{"step":1}}}"#)
            .unwrap()
            .uuid;
        progress(&f, uuid, r#"{"measurement":{"fields":{"step":1}}}"#, 1_500).unwrap();
        f.service.delivery.log().fail_next_writes(1);
        f.service.clock.set(t0 + Duration::from_secs(100));
        let err = progress(
            &f,
            uuid,
            r#"{"measurement":{"fields":{"step":2}}}"#,
            101_000,
        );
        assert!(matches!(err, Err(Refused::NotRecorded(_))), "{err:?}");
        let job = f.service.jobs.list(1)[0].clone();
        assert_eq!(job.fields, [("step".to_string(), FieldValue::Float(1.0))]);
        assert_eq!(
            job.last_seen_ms, 1_500,
            "the expiry clocks did not start again"
        );
        // The next heartbeat carries the old value.
        let before = f.sink.stored().len();
        f.service.tick(102_000);
        let beat = stored(&f, before + 1)[before].clone();
        assert!(
            beat.contains("step=1") && !beat.contains("step=2"),
            "{beat}"
        );
        // So does a start after a stop (which writes a snapshot).
        f.service.save_snapshot();
        let jobs = restored(&f, "progress-not-recorded");
        assert_eq!(
            jobs[0].fields,
            [("step".to_string(), FieldValue::Float(1.0))]
        );
        assert_eq!(jobs[0].last_seen_ms, 1_500);
        // And the run is not stuck: the next progress is recorded and taken.
        progress(
            &f,
            uuid,
            r#"{"measurement":{"fields":{"step":3}}}"#,
            103_000,
        )
        .unwrap();
        assert_eq!(
            f.service.jobs.list(1)[0].fields,
            [("step".to_string(), FieldValue::Float(3.0))]
        );
    }

    #[test]
    fn a_progress_or_commit_of_an_expired_run_that_is_not_recorded_leaves_it_expired_as_it_was() {
        let f = fixture("service-revive-not-recorded", 10, 1 << 20);
        let t0 = Instant::now();
        f.service.clock.set(t0);
        let uuid = register(&f, "{}").unwrap().uuid;
        f.service.clock.set(t0 + Duration::from_secs(3600));
        f.service.tick(1_000 + 3_600_000);
        let expired = state(&f, uuid);
        assert!(
            matches!(expired, Some(State::Expired { .. })),
            "{expired:?}"
        );
        let places = f.service.jobs.counts();
        f.service.delivery.log().fail_next_writes(1);
        let err = progress(
            &f,
            uuid,
            r#"{"measurement":{"fields":{"step":2}}}"#,
            3_700_000,
        );
        assert!(matches!(err, Err(Refused::NotRecorded(_))), "{err:?}");
        assert_eq!(state(&f, uuid), expired);
        assert_eq!(f.service.jobs.counts(), places);
        f.service.delivery.log().fail_next_writes(1);
        assert!(matches!(commit(&f, uuid), Err(Refused::NotRecorded(_))));
        assert_eq!(state(&f, uuid), expired, "the same expiry time");
        f.service.save_snapshot();
        let jobs = restored(&f, "revive-not-recorded");
        assert_eq!(Some(jobs[0].state), expired);
        assert!(jobs[0].fields.is_empty());
    }

    #[test]
    fn a_wall_clock_step_forward_expires_no_run_still_reporting_and_stamps_nothing_ahead() {
        // max_age is 1 h, progress_timeout 10 min (the fixture's).
        let f = fixture("service-wall-clock-step", 10, 1 << 20);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        f.service.clock.set(at(0));
        let uuid = register(&f, r#"{"measurement":{"fields":{"step":1}}}"#)
            .unwrap()
            .uuid;
        f.service.clock.set(at(1));
        progress(&f, uuid, r#"{"measurement":{"fields":{"step":2}}}"#, 2_000).unwrap();
        // The wall clock steps 11 minutes forward for 3 s: the run still reports.
        let before = f.sink.stored().len();
        f.service.clock.set(at(2));
        f.service.tick(2_000 + 11 * 60_000);
        f.service.clock.set(at(3));
        progress(
            &f,
            uuid,
            r#"{"measurement":{"fields":{"step":3}}}"#,
            3_000 + 11 * 60_000,
        )
        .unwrap();
        f.service.clock.set(at(4));
        f.service.tick(4_000);
        assert_eq!(state(&f, uuid), Some(State::Running));
        assert_eq!(stored(&f, before + 2).len(), before + 2, "two heartbeats");
        // Silent from then on, it expires by the monotonic clock, 10 min after it was last heard
        // from: stamped then, though the wall clock has stepped an hour ahead at that tick.
        f.service.clock.set(at(3 + 600));
        let wall = 4_000 + 600_000 + 3_600_000;
        f.service.tick(wall);
        let lines = stored(&f, before + 3);
        let event = lines.last().unwrap();
        assert!(event.contains("event=expired"), "{event}");
        let stamp: i64 = event.rsplit(' ').next().unwrap().parse().unwrap();
        let last_seen = 3_000 + 11 * 60_000;
        assert_eq!(stamp, (last_seen + 600_000).min(wall));
        assert!(stamp <= wall);
        assert!(matches!(state(&f, uuid), Some(State::Expired { at_ms }) if at_ms == stamp));
        // A wall clock behind: the stamp is never ahead of it.
        let other = register(&f, "{}").unwrap().uuid;
        f.service.clock.set(at(3 + 600 + 3600));
        f.service.tick(500);
        assert!(matches!(
            state(&f, other),
            Some(State::Expired { at_ms: 500 })
        ));
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    #[test]
    fn a_field_of_another_type_is_refused_at_the_request_naming_the_type_used_before() {
        let f = fixture("service-schema", 10, 1 << 20);
        let a = register(
            &f,
            r#"{"tags":{"mode":"x"},"measurement":{"fields":{"clients":5}}}"#,
        )
        .unwrap()
        .uuid;
        let written = f.sink.stored().len();
        let err = register(&f, r#"{"measurement":{"fields":{"clients":"ten"}}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "measurement.fields.clients: is a string, but earlier runs wrote it to load_testing as a float, and InfluxDB keeps one type per field: send a number, or give the field another name"
        );
        // A name used as a tag is refused as a field, and the other way round.
        let err = register(&f, r#"{"measurement":{"fields":{"mode":1}}}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("measurement.fields.mode: is a field here"),
            "{err}"
        );
        let err = register(&f, r#"{"tags":{"clients":"many"}}"#).unwrap_err();
        assert!(
            err.to_string().starts_with("tags.clients: is a tag here"),
            "{err}"
        );
        // Progress is held to the same types.
        let record = parse_register(br#"{"measurement":{"fields":{"clients":"ten"}}}"#, LIMITS);
        assert!(matches!(
            f.service.progress(a, record.unwrap(), None, 1_500),
            Err(Refused::SchemaConflict { .. })
        ));
        assert_eq!(
            f.sink.stored().len(),
            written,
            "nothing of a refused request is written"
        );
        // What InfluxDB says wins once the log is delivered: the measurement is gone.
        f.service
            .schema
            .update_from_influxdb(Default::default(), true);
        register(&f, r#"{"measurement":{"fields":{"clients":"ten"}}}"#).unwrap();
    }

    #[test]
    fn a_register_that_fails_on_disk_does_not_hold_its_new_field_type_against_others() {
        let f = fixture("service-schema-claim-failed", 10, 1 << 20);
        f.service.delivery.log().fail_next_writes(1);
        let err = register(&f, r#"{"measurement":{"fields":{"fresh":1.5}}}"#).unwrap_err();
        assert!(matches!(err, Refused::NotRecorded(_)), "{err:?}");
        // Nobody wrote a number to it: a string is taken, and held from then on.
        register(&f, r#"{"measurement":{"fields":{"fresh":"s"}}}"#).unwrap();
        assert!(matches!(
            register(&f, r#"{"measurement":{"fields":{"fresh":2}}}"#),
            Err(Refused::SchemaConflict { .. })
        ));
    }

    #[test]
    fn a_stats_member_of_another_type_than_earlier_runs_wrote_is_left_out_not_its_row() {
        let f = fixture("service-stats-member-type", 10, 1 << 20);
        let commit_with = |member: &str| {
            let uuid = register(&f, "{}").unwrap().uuid;
            let stats = format!(
                r#"{{"stats":[{{"name":"/a","method":"GET","n":{member},"rps":2}}],"total":{member}}}"#
            );
            let body = serde_json::json!({"uuid": uuid, "measurement": {"fields": {"requestStats": stats}}});
            f.service
                .commit(
                    parse_commit(body.to_string().as_bytes(), LIMITS).unwrap(),
                    None,
                    2_000,
                )
                .unwrap()
        };
        assert_eq!(commit_with("1").left_out, 0);
        let second = commit_with("true");
        assert_eq!(
            (second.left_out, second.rows),
            (2, 1),
            "the row stays, without n"
        );
        let stored = f.sink.stored();
        let last_row = stored
            .iter()
            .rev()
            .find(|l| l.starts_with("load_testing_request_stats"))
            .unwrap();
        assert!(
            last_row.contains(" rps=2 ") && !last_row.contains("n="),
            "{last_row}"
        );
    }

    #[test]
    fn a_commit_field_named_like_a_tag_of_the_run_is_refused_and_the_run_goes_on() {
        let f = fixture("service-commit-field-is-tag", 10, 1 << 20);
        let uuid = register(&f, r#"{"tags":{"mode":"x"}}"#).unwrap().uuid;
        let body = format!(r#"{{"uuid":"{uuid}","measurement":{{"fields":{{"mode":1}}}}}}"#);
        let err = f
            .service
            .commit(parse_commit(body.as_bytes(), LIMITS).unwrap(), None, 2_000)
            .unwrap_err();
        assert!(matches!(err, Refused::FieldIsTag), "{err}");
        assert!(err.to_string().starts_with("measurement.fields:"), "{err}");
        commit(&f, uuid).unwrap();
    }

    #[test]
    fn where_influxdb_cannot_say_its_schema_what_was_learned_holds_until_the_next_refresh() {
        // The memory sink, like InfluxDB 2 and 3 here, cannot say what its schema is.
        let f = fixture("service-schema-forgotten", 10, 1 << 20);
        register(&f, r#"{"measurement":{"fields":{"mode":1}}}"#).unwrap();
        assert!(matches!(
            register(&f, r#"{"measurement":{"fields":{"mode":"x"}}}"#),
            Err(Refused::SchemaConflict { .. })
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.service.delivery.log().undelivered().0 > 0 {
            assert!(Instant::now() < deadline, "the log delivered");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A bucket made anew would take the new type: the gateway lets go of what it learned.
        f.service.refresh_schema();
        register(&f, r#"{"measurement":{"fields":{"mode":"x"}}}"#).unwrap();
    }
}
