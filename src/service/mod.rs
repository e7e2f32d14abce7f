//! The use-cases of a run — register, progress, commit and the heartbeat tick — as plain
//! functions over plain types: checked records in, typed outcomes out.
//!
//! Each use-case takes what `ingest::payload` checked, uses the job table for a moment, builds
//! the run's points, and has `delivery` record them together with the job-table change, as one
//! record of the log, before it returns. What it returns says what happened in the run's own words
//! ([`Registered`], [`Committed`], [`Refused`]); turning that into an HTTP answer is `api`'s
//! business, so nothing here knows of requests, headers or status codes (the tidy test keeps
//! `http` out of this file). Never holds the job-table lock across I/O.

mod answered;
#[cfg(test)]
mod answered_tests;
mod judging;
mod runs;
mod upkeep;
/// The log target of the heartbeat tick and the schema thread ([`crate::storage::Repeats::new`]).
pub use upkeep::LOG_TARGET as UPKEEP_TARGET;
pub mod write;

pub use answered::ArmEarly;
pub use judging::Judging;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::delivery::{Delivery, Outcome, WriteLimits};
use crate::ingest::line_protocol::{Point, encode_batch};
use crate::ingest::payload::{Commit, Record};
use crate::ingest::points::{self, Run};
use crate::state::jobs::{Bounds, Job, Jobs, Quota, Refusal};
use crate::state::schema::{Claim, Conflict, Schema, TooOld};
use crate::state::series::SeriesBudget;
use crate::state::snapshots::Snapshots;
use crate::stats::Stats;
use crate::storage::log::{LogError, Share};
use crate::storage::record::Unit;

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
    pub jobs: Arc<Jobs>,
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
    pub results: Arc<crate::state::results::Results>,
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
        let waiting =
            |w: &mut bool| !*w && !self.first_reads.load(std::sync::atomic::Ordering::Relaxed);
        let (mut wanted, _) =
            crate::sync::unpoisoned(self.woken.wait_timeout_while(wanted, timeout, waiting));
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
