//! The use-cases of a run — register, progress, commit and the heartbeat tick — as plain
//! functions over plain types: checked records in, typed outcomes out.
//!
//! Each use-case takes what `ingest::payload` checked, uses the job table for a moment, builds
//! the run's points, and has `delivery` record them together with the job-table change, as one
//! record of the log, before it returns. What it returns says what happened in the run's own words
//! ([`Registered`], [`Committed`], [`Refused`]); turning that into an HTTP answer is `api`'s
//! business, so nothing here knows of requests, headers or status codes (the tidy test keeps
//! `http` out of this file). Never holds the job-table lock across I/O.

mod judging;
mod upkeep;
/// The log target of the heartbeat tick and the schema thread ([`crate::storage::Repeats::new`]).
pub use upkeep::LOG_TARGET as UPKEEP_TARGET;
pub mod write;

pub use judging::Judging;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::delivery::{Delivery, Outcome, WriteLimits};
use crate::ingest::line_protocol::{Point, encode_batch};
use crate::ingest::payload::{Commit, Record};
use crate::ingest::points::{self, Run};
use crate::state::jobs::{Bounds, Change, Job, Jobs, Quota, Refusal};
use crate::state::schema::{Claim, Conflict, Schema, TooOld};
use crate::state::series::SeriesBudget;
use crate::state::snapshots::Snapshots;
use crate::stats::Stats;
use crate::storage::log::{LogError, Share};
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
    /// `storage.dir/series`: the distinct series each client made in each database it writes
    /// through InfluxDB's write API, bounded by its `max_series`.
    pub series: SeriesBudget,
    /// The schema of each database written through InfluxDB's write API.
    pub write_schemas: write::Schemas,
    /// Where the runs' points go: the write API may not write their measurements there.
    pub own_target: write::OwnTarget,
    /// `storage.dir/results`: committed runs' results, for reports and baselines.
    pub results: crate::state::results::Results,
    /// `[verdict]`: the configuration's checks and the identity of a run.
    pub judging: Judging,
    /// Each token's share of the log (`max_spool_bytes`), by its name: what its runs'
    /// heartbeats are charged to.
    pub spool_shares: std::collections::HashMap<String, u64>,
    /// The monotonic clock the expiry of runs runs on.
    pub clock: Clock,
    /// Ticks whose heartbeats could not be recorded (a full disk), told at once, then at most
    /// once a minute with a count.
    pub dropped_beats: crate::storage::Repeats,
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
        if let Some(at) = *crate::sync::lock(&self.set) {
            return at;
        }
        Instant::now()
    }

    /// From now on the clock says `at`.
    #[cfg(test)]
    pub fn set(&self, at: Instant) {
        *crate::sync::lock(&self.set) = Some(at);
    }
}

/// Wakes the thread that reads InfluxDB's schema again.
#[derive(Debug, Default)]
pub struct SchemaRefresh {
    wanted: std::sync::Mutex<bool>,
    /// A first write waits for its target's reading: read the targets never read, at once.
    first_reads: std::sync::atomic::AtomicBool,
    woken: crate::sync::Signal,
    /// Whether InfluxDB's refusal to let the gateway read its schema or retention was told
    /// (once, until a reading works again).
    unreadable_told: std::sync::atomic::AtomicBool,
}

impl SchemaRefresh {
    /// Asks for a reading soon.
    pub fn want(&self) {
        *crate::sync::lock(&self.wanted) = true;
        self.woken.notify_one();
    }

    /// Asks for the targets never read to be read at once (a first write waits for it): a
    /// reading of those alone, not of everything.
    pub fn want_first_read(&self) {
        let _wanted = crate::sync::lock(&self.wanted);
        self.first_reads
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.woken.notify_one();
    }

    /// Waits until a reading is asked for or `timeout` passes; true when a whole reading was
    /// asked for.
    fn wait(&self, timeout: Duration) -> bool {
        let wanted = crate::sync::lock(&self.wanted);
        let (mut wanted, _) = self
            .woken
            .wait_timeout_while(wanted, timeout, |w| {
                !*w && !self.first_reads.load(std::sync::atomic::Ordering::Relaxed)
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *wanted)
    }

    /// Whether first reads were asked for since the last call.
    fn take_first_reads(&self) -> bool {
        self.first_reads
            .swap(false, std::sync::atomic::Ordering::Relaxed)
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
#[derive(Debug, Clone, PartialEq)]
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
    /// The run's verdict.
    pub verdict: crate::verdict::Verdict,
    /// Why the result could not be kept for reports and baselines (a full disk), if so.
    pub not_kept: Option<String>,
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
            Refused::NotRecorded(why) => {
                write!(f, "nothing was recorded: {}", why.for_client())
            }
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

/// The share of the log of the client `quota` names: its records, and the bytes of them not yet
/// delivered it may hold.
fn share_of(quota: Option<Quota<'_>>) -> Option<Share<'_>> {
    quota.map(|q| Share {
        client: q.owner,
        limit: q.max_spool_bytes,
    })
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
        job.owner = quota.map(|q| q.owner.into());
        job.thresholds = Arc::new(record.thresholds);
        job.sample(now_ms);
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
                share_of(quota),
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
        let mut claimed = if self.check_schema {
            let mut claim = self.schema.claim();
            let fields = record.fields.iter().map(|(k, v)| (k.as_str(), v));
            claim
                .fields(points::HEARTBEAT, fields, std::iter::empty())
                .map_err(|conflict| self.heartbeat_refused(&uuid, conflict))?;
            Some(claim)
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
        // An expired run comes back with the fields it had, which its next heartbeats carry
        // again: those the progress does not send are claimed too (a reading of InfluxDB's
        // schema may have let their types go while it did not beat). Asked of the prepared
        // change, which holds the run (no tick expires it meanwhile), not before: a run that
        // expired between the two would have come back unchecked.
        if let (Some(claim), Some(had)) = (claimed.as_mut(), prepared.revived_fields()) {
            let old = had
                .iter()
                .filter(|(k, _)| !fields.iter().any(|(n, _)| n == k))
                .map(|(k, v)| (k.as_str(), v));
            claim
                .fields(points::HEARTBEAT, old, std::iter::empty())
                .map_err(|conflict| self.heartbeat_refused(&uuid, conflict))?;
        }
        // Dropped on the way out (not recorded), `prepared` leaves the job as it was.
        self.keep_room()?;
        self.delivery
            .record(Kind::Request, &change, &[], share_of(caller), &self.stats)
            .map_err(Refused::NotRecorded)?;
        prepared.applied();
        match claimed {
            Some(claim) => claim.written(),
            None => self.schema.learn_fields(points::HEARTBEAT, &fields),
        }
        Ok(())
    }

    /// The refusal of a progress whose heartbeat fields conflict with the schema: a field
    /// named like one of the run's own tags is the run's refusal, as without a schema.
    fn heartbeat_refused(&self, uuid: &Uuid, conflict: Conflict) -> Refused {
        match conflict {
            Conflict::TagAndField { ref name, .. } if self.jobs.has_tag(uuid, name) => {
                Refused::FieldIsTag
            }
            conflict => self.schema_refused(conflict),
        }
    }

    /// Ends a run with its result: records the result, per-endpoint and `finished` points with
    /// the run's end, and marks the run finished. If the record cannot be written, the run is
    /// as it was.
    ///
    /// `caller` is the client that sent it (`None` without tokens): a run registered with
    /// another token is unknown to it; the commit's record counts against its share of the log.
    pub fn commit(
        &self,
        mut commit: Commit,
        caller: Option<Quota<'_>>,
        now_ms: i64,
    ) -> Result<Committed, Refused> {
        let share = share_of(caller);
        let caller = caller.map(|q| q.owner);
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
        let (thresholds, samples) = self.jobs.judging(&uuid);
        let result = self.judge(judging::Judged {
            run: &run,
            owner: caller,
            now_ms,
            stats: commit.stats.as_ref(),
            thresholds: &thresholds,
            samples,
        });
        // The stats move into the points: a commit of many rows holds its members once.
        let mut points = points::commit(&run, &commit.record, commit.stats.take(), now_ms);
        let time = commit.record.started_at_ms.unwrap_or(now_ms);
        points.extend(points::verdict(&run, &result.verdict, time));
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
        // Kept before the record is written, made to count once it is on disk: a baseline is
        // always a run whose commit was acknowledged (see `state::results`).
        let not_kept = match self.results.save(&result) {
            Ok(bytes) => {
                // The record carries the result: it is durable with the record, and the file
                // is synced before a snapshot lets the record go (see `state::results`).
                crate::state::journal::encode_result(&mut change.bytes, change.seq, &bytes);
                None
            }
            Err(e) => {
                self.results.errors.error(&format!(
                    "cannot keep the result of run {uuid} in storage.dir/results: {e}; its commit is recorded, without a report, and it is no later run's baseline"
                ));
                Some(e.to_string())
            }
        };
        let recorded = self.delivery.record(
            Kind::Request,
            change,
            &request_unit(points.len(), &lines),
            share,
            &self.stats,
        );
        let seq = match recorded {
            Ok(seq) => seq,
            Err(e) => {
                if not_kept.is_none() {
                    self.results.forget(&uuid);
                }
                return Err(Refused::NotRecorded(e));
            }
        };
        guard.finish(now_ms);
        if not_kept.is_none() {
            self.results.committed(&uuid);
        }
        self.learned(claim, &points);
        log::info!(
            "run {uuid} committed; verdict: {}",
            crate::logtext::escape(&result.verdict.summary(), 300)
        );
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
            verdict: result.verdict,
            not_kept,
        })
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
        let mut left_out = claim.retain_fields(points::RESULT, &mut stats.scalars);
        for row in &mut stats.rows {
            left_out += claim.retain_fields(points::REQUEST_STATS, &mut row.fields);
        }
        left_out
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
}

#[cfg(test)]
mod tests;
