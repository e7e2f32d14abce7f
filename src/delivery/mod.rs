//! Delivery: every accepted request goes into the log, and one deliverer thread takes the log to
//! InfluxDB in bulk.
//!
//! **The request's side** ([`Delivery::record`]): the request's points and its job-table change
//! are one record of the log; the call returns once that record is on disk (group commit: the
//! requests waiting together share one write and one fsync). Then [`Delivery::outcome`] says
//! what to answer: with `delivery.acknowledge = "disk"` at once (the points are recorded,
//! normally not yet in InfluxDB); with `"influxdb"` once the deliverer has stored the record's
//! points or dead-lettered them (or, while InfluxDB does not answer, at once, as recorded but
//! not delivered). A request that gets no record on disk (the log is full, the disk failed)
//! gets an error, and nothing of it was recorded.
//!
//! **The deliverer** ([`Delivery::run`]) reads the log in order and writes what it reads to
//! InfluxDB in batches of at most `influxdb.max_write_bytes` and `influxdb.max_write_lines`.
//! What InfluxDB stored, the log marks delivered (and trims). A failure that may pass
//! (unreachable, timeout, 5xx, 429, credentials, a missing database) keeps the batch: the
//! deliverer probes InfluxDB with `/ping`, waiting 0.5 s doubling to 30 s, and writes the same
//! batch again; a batch sent twice stores nothing twice, since every point has an explicit
//! timestamp and InfluxDB keeps one point per series and time. A refusal (400, a partial
//! write, 422, 413, or a connection reset while sending a large body while `/ping` answers)
//! never travels and never loops: the batch is written again in halves, and halves of those,
//! until the refused units stand alone; those go to the dead letters — a request's points as
//! one dead letter, a heartbeat once per run and reason (later refusals of the same run for
//! the same reason are only counted) — and the deliverer goes on with what follows.
//!
//! Delivery knows nothing of runs beyond the uuid a heartbeat unit carries, and holds no lock
//! across I/O but the log's own writer turn.

pub mod influx;
pub mod sink;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use uuid::Uuid;

use crate::ingest::line_protocol;
use crate::state::jobs::Change;
use crate::stats::Stats;
use crate::storage::dead_letters::{DeadLetters, Kept, Key};
use crate::storage::log::{Log, LogError, Position, Read};
use crate::storage::record::{Kind, Unit};
use sink::{Disposition, Sink, SinkError};

/// First and longest wait between tries while InfluxDB fails.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A write larger than this that ends in a reset is taken for InfluxDB closing on a body it
/// will not read (influxd answers 413 and closes while the client still sends), once `/ping`
/// shows InfluxDB is up: the batch is split, not retried whole forever.
const RESET_SUSPECT_BYTES: usize = 1 << 20;
/// How often, at most, the log says again that InfluxDB still fails.
const REMINDER_EVERY: Duration = Duration::from_secs(60);
/// Per-run heartbeat refusals remembered at most; the oldest are forgotten first.
const REFUSALS_KEPT: usize = 20_000;
/// How long a refusal waits for its request to read it, in multiples of the longest a request
/// waits (`influxdb.timeout`): the request reads it as soon as it is woken, or gave up waiting
/// long before (and answered "recorded").
const UNREAD_REFUSAL_WAITS: u32 = 10;

/// When a request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Acknowledge {
    /// Once its record is on disk.
    Disk,
    /// Once InfluxDB stored its points or refused them (or, while InfluxDB does not answer, once
    /// its record is on disk).
    Influxdb,
}

/// The batch limits of the deliverer's writes, from `[influxdb]`.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// `influxdb.max_write_bytes`: bytes of line protocol in one write at most (a single
    /// larger unit still goes, alone).
    pub max_bytes: usize,
    /// `influxdb.max_write_lines`: points in one write at most.
    pub max_lines: usize,
}

/// Where a request's points stand when it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// InfluxDB stored them.
    Delivered,
    /// Recorded in the log; the deliverer will deliver them.
    Recorded,
    /// InfluxDB refused them; they wait in the dead letters with this message.
    DeadLettered(String),
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        *self == Outcome::Delivered
    }
}

/// Why nothing of a request was recorded.
#[derive(Debug, Clone)]
pub struct Failure(pub LogError);

impl Failure {
    /// True when the log is full: the disk works, InfluxDB must catch up first.
    pub fn is_spool_full(&self) -> bool {
        matches!(self.0, LogError::Full { .. })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Failure {}

/// What delivery has seen of InfluxDB, for the state page. The fields say one thing: `up` is
/// whether InfluxDB takes writes (a refusal of bad data is an answer, so it counts as up);
/// a probe that answers while writes fail (InfluxDB answers `/ping` but the database is
/// missing) does not make it up. While `up` is false, `last_error` is newer than
/// `last_success`.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// `None` until InfluxDB answered a write or the start's probe; then whether the last
    /// write (or, before any write, that probe) worked.
    pub up: Option<bool>,
    /// When InfluxDB last stored a write.
    pub last_success: Option<SystemTime>,
    /// When, and the error, as a sentence.
    pub last_error: Option<(SystemTime, String)>,
}

/// A streak of failed writes and probes, for the log's account of it: the first failure is
/// told at once, then a reminder at most every [`REMINDER_EVERY`], an error once the log is
/// half full, and one line once the log is delivered again.
#[derive(Default)]
struct Streak {
    /// When the streak's first failure came; `None` while InfluxDB takes the log.
    since: Option<Instant>,
    /// When it was last told.
    told: Option<Instant>,
    /// Whether the log passing half of `storage.max_spool_bytes` was told in this streak.
    half_full_told: bool,
}

/// The last refusal of a run's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRefusal {
    /// InfluxDB's message.
    pub error: String,
    pub at: SystemTime,
    /// Heartbeats of the run refused so far.
    pub count: u64,
}

/// Results of records, for requests waiting in `"influxdb"` mode.
#[derive(Default)]
struct Settled {
    /// Every record up to this number is delivered or dead-lettered.
    upto: u64,
    /// Dead-lettered requests, InfluxDB's message and when it came, until their request takes
    /// it (or gave up waiting for it long since).
    dead: BTreeMap<u64, (String, Instant)>,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

pub struct Delivery {
    log: Log,
    sink: Box<dyn Sink>,
    dead: DeadLetters,
    acknowledge: Acknowledge,
    /// How long a request waits for InfluxDB in `"influxdb"` mode at most.
    wait_at_most: Duration,
    limits: WriteLimits,
    health: Mutex<Health>,
    /// [`UNKNOWN`], [`UP`] or [`DOWN`]: readable without the health lock on the request path.
    up: AtomicU8,
    settled: Mutex<Settled>,
    settled_changed: Condvar,
    refusals: Mutex<HashMap<Uuid, RunRefusal>>,
    /// Since when the oldest undelivered record has waited, as the deliverer saw it.
    waiting_since: Mutex<Option<Instant>>,
    /// Set by [`Delivery::stop`]: the deliverer returns.
    stopping: AtomicBool,
    /// Bytes of one write at most, as learned from InfluxDB refusing larger ones (it starts at
    /// `influxdb.max_write_bytes`): later batches are cut to what it takes, so a body limit
    /// smaller than the configured batch is met with one refusal, not one per batch.
    learned_max_bytes: std::sync::atomic::AtomicUsize,
    /// Units InfluxDB refused so far: a refusal may mean its schema changed.
    refusals_seen: AtomicU64,
    /// The failures since InfluxDB last took the log, for the log's account of them.
    streak: Mutex<Streak>,
}

/// A unit of a batch (or a part of one, when a unit too large for one write was cut), with
/// the record it belongs to.
#[derive(Clone, Copy)]
struct Piece<'a> {
    seq: u64,
    kind: Kind,
    run: Uuid,
    /// The unit's place in its record: with `seq` and `line`, the key of its dead letter.
    unit: u32,
    /// The first of the unit's lines this piece holds (0 unless the unit was cut).
    line: u32,
    points: u32,
    lines: &'a str,
}

impl<'a> Piece<'a> {
    /// A run's heartbeat (not a request's points).
    fn is_heartbeat(&self) -> bool {
        self.kind == Kind::Heartbeats && !self.run.is_nil()
    }

    /// The piece cut in two at its middle line, or `None` for a single line.
    fn halves(&self) -> Option<(Piece<'a>, Piece<'a>)> {
        let starts: Vec<usize> = line_protocol::split_lines(self.lines)
            .map(|line| line.as_ptr() as usize - self.lines.as_ptr() as usize)
            .collect();
        let mid = starts.len() / 2;
        let cut = *starts.get(mid).filter(|_| mid > 0)?;
        let (head, tail) = self.lines.split_at(cut);
        let first = Piece {
            points: mid as u32,
            lines: head,
            ..*self
        };
        let second = Piece {
            line: self.line + mid as u32,
            points: (starts.len() - mid) as u32,
            lines: tail,
            ..*self
        };
        Some((first, second))
    }
}

impl Delivery {
    /// Delivery over `log` (opened at start), to `sink`, with refusals kept in `dead`.
    pub fn new(
        log: Log,
        sink: Box<dyn Sink>,
        dead: DeadLetters,
        acknowledge: Acknowledge,
        wait_at_most: Duration,
        limits: WriteLimits,
    ) -> Delivery {
        Delivery {
            log,
            sink,
            dead,
            acknowledge,
            wait_at_most,
            limits,
            health: Mutex::new(Health::default()),
            up: AtomicU8::new(UNKNOWN),
            settled: Mutex::new(Settled::default()),
            settled_changed: Condvar::new(),
            refusals: Mutex::new(HashMap::new()),
            waiting_since: Mutex::new(None),
            stopping: AtomicBool::new(false),
            learned_max_bytes: std::sync::atomic::AtomicUsize::new(limits.max_bytes),
            refusals_seen: AtomicU64::new(0),
            streak: Mutex::new(Streak::default()),
        }
    }

    /// Makes [`Delivery::run`] return soon (within a second); what is undelivered stays in the
    /// log for the next start.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.log.wake();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Sleeps for `d`, or less when the deliverer is asked to stop.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.is_stopping() {
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                return;
            };
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead
    }

    /// The last success and the last error of a write or a probe, and whether InfluxDB is up.
    pub fn health(&self) -> Health {
        let mut health = lock(&self.health).clone();
        health.up = match self.up.load(Ordering::Relaxed) {
            UP => Some(true),
            DOWN => Some(false),
            _ => None,
        };
        health
    }

    /// `None` until InfluxDB answered; then whether the last write or probe worked.
    pub fn influx_up(&self) -> Option<bool> {
        self.health().up
    }

    /// How long the oldest undelivered record has waited.
    pub fn oldest_waiting(&self) -> Option<Duration> {
        lock(&self.waiting_since).map(|at| at.elapsed())
    }

    /// The last refusal of each run whose heartbeat InfluxDB refused.
    pub fn refusals(&self) -> HashMap<Uuid, RunRefusal> {
        lock(&self.refusals).clone()
    }

    /// Notes a write's outcome in the health: stored, refused (InfluxDB is up, it only did not
    /// like the data) or failed.
    fn record_write(&self, result: &Result<(), SinkError>) {
        let mut health = lock(&self.health);
        match result {
            Ok(()) => {
                health.last_success = Some(SystemTime::now());
                self.up.store(UP, Ordering::Relaxed);
            }
            Err(e) => {
                health.last_error = Some((SystemTime::now(), e.to_string()));
                let up = if e.disposition() == Disposition::Reject {
                    UP
                } else {
                    DOWN
                };
                self.up.store(up, Ordering::Relaxed);
            }
        }
    }

    /// Notes a probe's outcome: a failure is an error and InfluxDB is down; an answer makes it
    /// up only before anything else was known (at start), since `/ping` answering says nothing
    /// of whether writes are taken.
    fn record_probe(&self, result: &Result<(), SinkError>) {
        let mut health = lock(&self.health);
        match result {
            Ok(()) => {
                let _ = self
                    .up
                    .compare_exchange(UNKNOWN, UP, Ordering::Relaxed, Ordering::Relaxed);
            }
            Err(e) => {
                health.last_error = Some((SystemTime::now(), e.to_string()));
                self.up.store(DOWN, Ordering::Relaxed);
            }
        }
    }

    /// Tells the log of a failure that keeps points waiting: the first of a streak at once
    /// (as an error when only a person can fix it), then at most every [`REMINDER_EVERY`]
    /// with what waits and since when; an error once the undelivered log passes half of
    /// `storage.max_spool_bytes`.
    fn tell_failure(&self, e: &SinkError) {
        let mut streak = lock(&self.streak);
        let now = Instant::now();
        let (records, bytes) = self.log.undelivered();
        let misconfigured = e.disposition() == Disposition::RetryMisconfigured;
        let level = if misconfigured {
            log::Level::Error
        } else {
            log::Level::Warn
        };
        let advice = if misconfigured {
            "fix the [influxdb] credentials, database or bucket"
        } else {
            "they are delivered once it takes writes again"
        };
        match streak.since {
            None => {
                streak.since = Some(now);
                streak.told = Some(now);
                log::log!(
                    level,
                    "{e}: points wait in the log ({records} records, {bytes} bytes); {advice}"
                );
            }
            Some(since) if streak.told.is_none_or(|t| now - t >= REMINDER_EVERY) => {
                streak.told = Some(now);
                log::log!(
                    level,
                    "influxdb has not taken writes for {}s: {records} records ({bytes} bytes) wait in the log; {advice}; the last error: {e}",
                    (now - since).as_secs()
                );
            }
            Some(_) => log::debug!("influxdb still fails: {e}"),
        }
        let limit = self.log.limit();
        if !streak.half_full_told && bytes > limit / 2 {
            streak.half_full_told = true;
            log::error!(
                "the log holds {bytes} bytes not yet delivered, over half of storage.max_spool_bytes ({limit}): when it is full, requests get 503 until influxdb takes writes again"
            );
        }
    }

    /// Tells the log, once, that InfluxDB took the whole log again after a streak of failures.
    fn tell_delivered(&self) {
        let mut streak = lock(&self.streak);
        if let Some(since) = streak.since.take() {
            *streak = Streak::default();
            log::info!(
                "influxdb takes writes again: the log is delivered, {}s after the first failure",
                since.elapsed().as_secs()
            );
        }
    }

    /// What InfluxDB says of the schema of the gateway's measurements, where its API allows.
    /// Units InfluxDB has refused since the start: when it grows, InfluxDB's schema may have
    /// changed under the gateway.
    pub fn refusals_seen(&self) -> u64 {
        self.refusals_seen.load(Ordering::Relaxed)
    }

    pub fn read_schema(&self) -> Result<Option<crate::state::schema::Known>, SinkError> {
        self.sink.schema(&crate::ingest::points::MEASUREMENTS)
    }

    /// Makes InfluxDB ready for writes (v1: `CREATE DATABASE`, which the sink tells of when it
    /// fails, and which holds nothing back) and probes whether it answers; run once at start by
    /// the deliverer.
    fn prepare(&self) {
        let _ = self.sink.prepare();
        let result = self.sink.ping();
        if let Err(e) = &result {
            self.tell_failure(e);
        }
        self.record_probe(&result);
    }

    /// Puts a request's points (`units`) and job-table change into one record of the log, and
    /// waits until it is on disk; its number. An error means nothing of it was recorded.
    pub fn record(
        &self,
        kind: Kind,
        change: &Change,
        units: &[Unit<'_>],
        stats: &Stats,
    ) -> Result<u64, Failure> {
        let ticket = self
            .log
            .append(kind, change.seq, &change.bytes, units)
            .map_err(Failure)?;
        let seq = self.log.wait(ticket).map_err(Failure)?;
        let points: u32 = units.iter().map(|u| u.points).sum();
        Stats::add(&stats.points_spooled, points as usize);
        Ok(seq)
    }

    /// What to answer for record `seq` (see the module documentation).
    pub fn outcome(&self, seq: u64) -> Outcome {
        let mut settled = lock(&self.settled);
        if self.acknowledge == Acknowledge::Influxdb && self.up.load(Ordering::Relaxed) != DOWN {
            let deadline = Instant::now() + self.wait_at_most;
            while settled.upto < seq && self.up.load(Ordering::Relaxed) != DOWN {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                settled = self
                    .settled_changed
                    .wait_timeout(settled, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        if let Some((why, _)) = settled.dead.remove(&seq) {
            return Outcome::DeadLettered(why);
        }
        if settled.upto >= seq {
            Outcome::Delivered
        } else {
            Outcome::Recorded
        }
    }

    /// Records up to `upto` are settled; `dead` are the requests among them that were refused.
    fn settle(&self, upto: u64, dead: Vec<(u64, String)>) {
        let mut settled = lock(&self.settled);
        settled.upto = settled.upto.max(upto);
        if self.acknowledge == Acknowledge::Influxdb {
            let now = Instant::now();
            let keep = self.wait_at_most * UNREAD_REFUSAL_WAITS;
            settled
                .dead
                .retain(|_, (_, at)| now.duration_since(*at) < keep);
            settled
                .dead
                .extend(dead.into_iter().map(|(seq, why)| (seq, (why, now))));
        }
        drop(settled);
        self.settled_changed.notify_all();
    }

    /// The deliverer: takes the log to InfluxDB from `at` on, until the process ends.
    pub fn run(&self, mut at: Position, stats: &Stats) {
        self.prepare();
        if at.next_seq > 1 {
            // Everything before the first undelivered record was delivered by an earlier run.
            self.settle(at.next_seq - 1, Vec::new());
        }
        let mut queue: VecDeque<Read> = VecDeque::new();
        let mut backoff = BACKOFF_MIN;
        // The batch at the front failed at least once.
        let mut retried = false;
        // When InfluxDB was last probed while nothing waited to be written.
        let mut idle_probe: Option<Instant> = None;
        while !self.is_stopping() {
            if queue.iter().map(|r| r.bytes).sum::<u64>() < self.limits.max_bytes as u64 {
                match self.log.read(&mut at, self.limits.max_bytes as u64) {
                    Ok(more) => queue.extend(more),
                    Err(e) => {
                        log::error!("the deliverer cannot read the log: {e}");
                        self.pause(BACKOFF_MIN);
                        continue;
                    }
                }
            }
            if queue.is_empty() {
                *lock(&self.waiting_since) = None;
                if self.up.load(Ordering::Relaxed) == DOWN
                    && idle_probe.is_none_or(|at: Instant| at.elapsed() >= backoff)
                {
                    // Nothing waits to be written, so a probe that answers is all there is to
                    // know: InfluxDB is up again.
                    idle_probe = Some(Instant::now());
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    match self.sink.ping() {
                        Ok(()) => {
                            self.up.store(UP, Ordering::Relaxed);
                            self.tell_delivered();
                            backoff = BACKOFF_MIN;
                        }
                        Err(e) => {
                            self.record_probe(&Err(e.clone()));
                            self.tell_failure(&e);
                        }
                    }
                }
                self.log
                    .wait_for_more(at.next_seq - 1, Duration::from_secs(1));
                continue;
            }
            lock(&self.waiting_since).get_or_insert_with(Instant::now);
            let take = self.batch_len(&queue);
            let batch: Vec<Read> = queue.drain(..take).collect();
            match self.deliver(&batch, stats) {
                Ok(dead) => {
                    let last = batch.last().map_or(0, |r| r.seq);
                    let bytes = batch.iter().map(|r| r.bytes).sum();
                    if std::mem::take(&mut retried) {
                        let points: u32 =
                            batch.iter().flat_map(|r| &r.units).map(|u| u.points).sum();
                        Stats::add(&stats.points_replayed, points as usize);
                    }
                    self.log.delivered(last, batch.len() as u64, bytes);
                    self.settle(last, dead);
                    *lock(&self.waiting_since) = if queue.is_empty() {
                        None
                    } else {
                        Some(Instant::now())
                    };
                    if queue.is_empty() && self.log.undelivered().0 == 0 {
                        self.tell_delivered();
                    }
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    retried = true;
                    // Nothing of the batch is settled: it goes again, first in line.
                    for record in batch.into_iter().rev() {
                        queue.push_front(record);
                    }
                    self.wait_for_influxdb(&e, &mut backoff);
                }
            }
        }
    }

    /// How many records of `queue` (at least one) go in the next write.
    fn batch_len(&self, queue: &VecDeque<Read>) -> usize {
        let (mut bytes, mut lines) = (0usize, 0usize);
        let max_bytes = self.learned_max_bytes.load(Ordering::Relaxed);
        let mut n = 0;
        for record in queue {
            let b: usize = record.units.iter().map(|u| u.lines.len()).sum();
            let l: usize = record.units.iter().map(|u| u.points as usize).sum();
            if n > 0 && (bytes + b > max_bytes || lines + l > self.limits.max_lines) {
                break;
            }
            bytes += b;
            lines += l;
            n += 1;
        }
        n.max(1)
    }

    /// After a failure that may pass: says so, then waits (probing with `/ping`) until
    /// InfluxDB answers again.
    fn wait_for_influxdb(&self, e: &SinkError, backoff: &mut Duration) {
        self.tell_failure(e);
        self.up.store(DOWN, Ordering::Relaxed);
        // Requests waiting in "influxdb" mode are answered now: their points are recorded.
        self.settled_changed.notify_all();
        while !self.is_stopping() {
            self.pause(*backoff);
            *backoff = (*backoff * 2).min(BACKOFF_MAX);
            let result = self.sink.ping();
            self.record_probe(&result);
            match result {
                Ok(()) => {
                    log::debug!("influxdb answers /ping; trying the write again");
                    return;
                }
                Err(e) => self.tell_failure(&e),
            }
        }
    }

    /// Writes a batch of records; `Ok` with the refused requests (settled: stored or
    /// dead-lettered), or the failure that may pass. The heartbeats of runs InfluxDB refused
    /// before go in a write of their own ([`Delivery::probe_refused`]), so that they never make
    /// everyone else's points wait while a shared write is split to find them again.
    fn deliver(&self, batch: &[Read], stats: &Stats) -> Result<Vec<(u64, String)>, SinkError> {
        let pieces = batch.iter().flat_map(|record| {
            record
                .units
                .iter()
                .enumerate()
                .filter(|(_, u)| u.points > 0)
                .map(move |(unit, u)| Piece {
                    seq: record.seq,
                    kind: record.kind,
                    run: u.run,
                    unit: unit as u32,
                    line: 0,
                    points: u.points,
                    lines: &u.lines,
                })
        });
        let refusals = lock(&self.refusals);
        let (known, others): (Vec<Piece<'_>>, Vec<Piece<'_>>) =
            pieces.partition(|p| p.is_heartbeat() && refusals.contains_key(&p.run));
        drop(refusals);
        let mut dead = Vec::new();
        if !others.is_empty() {
            self.write_pieces(&others, stats, &mut dead)?;
        }
        if !known.is_empty() {
            self.probe_refused(&known, stats)?;
        }
        Ok(dead)
    }

    /// Writes `pieces` as one write. Only InfluxDB's definite refusal of the data sends
    /// anything to the dead letters: a refused write of several pieces is written again in
    /// parts until the refused pieces stand alone ([`Delivery::write_split`]); a 413 is a
    /// refusal only of a single line; lines InfluxDB 3 names are refused and the rest counted
    /// as stored. Every other failure (5xx, 429, a timeout, a broken connection, credentials)
    /// is returned, and the caller keeps the whole batch to try again; a connection that broke
    /// while sending a large body, while `/ping` answers, is taken for a body limit and the
    /// write is split, never refused for it.
    fn write_pieces(
        &self,
        pieces: &[Piece<'_>],
        stats: &Stats,
        dead: &mut Vec<(u64, String)>,
    ) -> Result<(), SinkError> {
        let body = join(pieces);
        let points: usize = pieces.iter().map(|p| p.points as usize).sum();
        let error = match self.write(&body, stats) {
            Ok(()) => {
                Stats::add(&stats.points_written, points);
                return Ok(());
            }
            Err(e) => e,
        };
        // Counted as InfluxDB counts lines, not by what the units say they hold.
        let one_line =
            || pieces.len() == 1 && line_protocol::split_lines(pieces[0].lines).nth(1).is_none();
        match error {
            SinkError::Refused {
                status,
                message,
                lines: Some(refused),
            } => {
                // InfluxDB 3 names the refused lines and stored the others (a partial write):
                // the pieces holding a refused line are dead-lettered, the rest are written.
                // Its line numbers count lines as its parser splits them (a newline inside a
                // string value does not end a line), and so does `split_lines`.
                let e = SinkError::Refused {
                    status,
                    message,
                    lines: None,
                };
                let counts: Vec<usize> = pieces
                    .iter()
                    .map(|p| line_protocol::split_lines(p.lines).count())
                    .collect();
                let total: usize = counts.iter().sum();
                if refused.iter().any(|&line| line >= total) {
                    // The answer does not fit the body sent: find the refused lines by
                    // writing in parts, as when InfluxDB does not name them.
                    return self.refused_write(pieces, e, stats, dead);
                }
                let mut first_line = 0;
                for (piece, count) in pieces.iter().zip(counts) {
                    let range = first_line..first_line + count;
                    first_line += count;
                    if refused.iter().any(|line| range.contains(line)) {
                        self.refused(piece, &e, stats, dead);
                    } else {
                        Stats::add(&stats.points_written, piece.points as usize);
                    }
                }
                Ok(())
            }
            e @ SinkError::Refused { .. } => self.refused_write(pieces, e, stats, dead),
            e @ SinkError::TooLarge { .. } if one_line() => {
                // A single line InfluxDB will not take for its size: a definite refusal.
                self.refused(&pieces[0], &e, stats, dead);
                Ok(())
            }
            e @ SinkError::TooLarge { .. } => {
                self.learn_body_limit(body.len());
                log::debug!(
                    "influxdb refused a write of {} bytes as too large; writing it in parts: {e}",
                    body.len()
                );
                self.write_split(pieces, &e, stats, dead)
            }
            SinkError::Broken(why)
                if body.len() > RESET_SUSPECT_BYTES && !one_line() && self.sink.ping().is_ok() =>
            {
                // InfluxDB answers, yet the connection broke while a large body was being
                // sent: influxd answers 413 and closes on a body over its limit before the
                // client has sent it all. It may also have been a passing fault, so it is
                // never a refusal: the write is split, and writes stay smaller from now on.
                log::warn!(
                    "the connection to influxdb broke while sending {} bytes, and /ping answers: taken for a body limit, the write goes in parts ({why})",
                    body.len()
                );
                self.learn_body_limit(body.len());
                let e = SinkError::Broken(why);
                self.write_split(pieces, &e, stats, dead)
            }
            e => Err(e),
        }
    }

    /// A write InfluxDB refused for its data (400, 422) without naming the lines: a piece
    /// alone is dead-lettered, several are written again in parts.
    fn refused_write(
        &self,
        pieces: &[Piece<'_>],
        e: SinkError,
        stats: &Stats,
        dead: &mut Vec<(u64, String)>,
    ) -> Result<(), SinkError> {
        if let [piece] = pieces {
            self.refused(piece, &e, stats, dead);
            return Ok(());
        }
        log::debug!(
            "influxdb refused a write of {} units; writing it in parts to find the refused ones: {e}",
            pieces.len()
        );
        self.write_split(pieces, &e, stats, dead)
    }

    /// Writes `pieces` (more than one line), which failed with `e`, in parts: requests' points
    /// apart from heartbeats first (so a run's refused heartbeats never hold a request's points
    /// back), else in halves; a single piece is cut in halves at its lines.
    fn write_split(
        &self,
        pieces: &[Piece<'_>],
        e: &SinkError,
        stats: &Stats,
        dead: &mut Vec<(u64, String)>,
    ) -> Result<(), SinkError> {
        let parts: Vec<Vec<Piece<'_>>> = match pieces {
            [piece] => match piece.halves() {
                Some((first, second)) => vec![vec![first], vec![second]],
                // The callers split only what holds more than one line; a line cannot be cut.
                None if e.disposition() == Disposition::Reject => {
                    self.refused(piece, e, stats, dead);
                    return Ok(());
                }
                None => return Err(e.clone()),
            },
            _ if pieces.iter().any(|p| p.is_heartbeat())
                && pieces.iter().any(|p| !p.is_heartbeat()) =>
            {
                let (beats, requests): (Vec<Piece<'_>>, Vec<Piece<'_>>) =
                    pieces.iter().partition(|p| p.is_heartbeat());
                vec![requests, beats]
            }
            _ => {
                let (first, second) = pieces.split_at(pieces.len() / 2);
                vec![first.to_vec(), second.to_vec()]
            }
        };
        for part in parts {
            self.write_pieces(&part, stats, dead)?;
        }
        Ok(())
    }

    /// Writes the heartbeats of runs InfluxDB refused before, as one write of their own, each
    /// tick: a probe, never split. Runs whose heartbeat InfluxDB takes (the whole write
    /// stored, or InfluxDB 3 not naming their line) are known as refused no longer; the others
    /// are counted as refused again, without a dead letter (each run has one for its reason;
    /// a run probed alone is refused as usual, so a new reason of its own gets one).
    /// InfluxDB 1.x and 2.x store the good lines of a partial write, so a run that InfluxDB
    /// takes again among refused ones still has its heartbeats stored.
    fn probe_refused(&self, known: &[Piece<'_>], stats: &Stats) -> Result<(), SinkError> {
        let body = join(known);
        let refused: Vec<bool> = match self.write(&body, stats) {
            Ok(()) => vec![false; known.len()],
            Err(SinkError::Refused {
                lines: Some(lines), ..
            }) => {
                let mut first_line = 0;
                known
                    .iter()
                    .map(|piece| {
                        let count = line_protocol::split_lines(piece.lines).count();
                        let range = first_line..first_line + count;
                        first_line += count;
                        lines.iter().any(|line| range.contains(line))
                    })
                    .collect()
            }
            Err(e) if e.disposition() == Disposition::Reject => {
                if let [piece] = known {
                    // Alone, the refusal is the run's own: a new reason gets its dead letter.
                    self.refused(piece, &e, stats, &mut Vec::new());
                    return Ok(());
                }
                vec![true; known.len()]
            }
            Err(e) => return Err(e),
        };
        let mut taken = 0;
        let mut refusals = lock(&self.refusals);
        for (piece, refused) in known.iter().zip(refused) {
            if refused {
                Stats::add(&stats.heartbeats_refused, 1);
                if let Some(entry) = refusals.get_mut(&piece.run) {
                    entry.count += 1;
                    entry.at = SystemTime::now();
                }
            } else {
                Stats::add(&stats.points_written, piece.points as usize);
                refusals.remove(&piece.run);
                taken += 1;
            }
        }
        drop(refusals);
        if taken > 0 {
            log::info!("influxdb takes the heartbeats of {taken} runs it refused before");
        }
        Ok(())
    }

    /// InfluxDB refused a write of `bytes` as too large: later batches are at most half that.
    fn learn_body_limit(&self, bytes: usize) {
        let half = (bytes / 2).max(1024);
        let before = self.learned_max_bytes.fetch_min(half, Ordering::Relaxed);
        if half < before {
            log::warn!(
                "influxdb refused a write of {bytes} bytes as too large; writes are now at most {half} bytes (influxdb.max_write_bytes is {}: lower it to InfluxDB's body limit)",
                self.limits.max_bytes
            );
        }
    }

    /// One InfluxDB write, counted. A sink that panics (a bug) fails the write as if InfluxDB
    /// did not answer, so the deliverer lives on and tries again later.
    fn write(&self, body: &str, stats: &Stats) -> Result<(), SinkError> {
        Stats::add(&stats.influxdb_writes, 1);
        let result =
            catch_unwind(AssertUnwindSafe(|| self.sink.write(body))).unwrap_or_else(|_| {
                log::error!(
                    "the InfluxDB client panicked while writing; the write is tried again later"
                );
                Err(SinkError::Unreachable(
                    "the InfluxDB client panicked".into(),
                ))
            });
        self.record_write(&result);
        result
    }

    /// A unit InfluxDB refused on its own: a request's points go to the dead letters; a run's
    /// heartbeat too, the first time for each reason, and is counted after that.
    fn refused(
        &self,
        piece: &Piece<'_>,
        e: &SinkError,
        stats: &Stats,
        dead: &mut Vec<(u64, String)>,
    ) {
        self.refusals_seen.fetch_add(1, Ordering::Relaxed);
        let message = e.to_string();
        let points = piece.points as usize;
        if piece.kind == Kind::Heartbeats && !piece.run.is_nil() {
            Stats::add(&stats.heartbeats_refused, 1);
            let mut refusals = lock(&self.refusals);
            let seen = refusals.get(&piece.run).is_some_and(|r| r.error == message);
            let entry = refusals.entry(piece.run).or_insert_with(|| RunRefusal {
                error: message.clone(),
                at: SystemTime::now(),
                count: 0,
            });
            entry.error = message.clone();
            entry.at = SystemTime::now();
            entry.count += 1;
            if refusals.len() > REFUSALS_KEPT {
                forget_oldest(&mut refusals);
            }
            drop(refusals);
            if seen {
                return;
            }
            log::error!(
                "influxdb refused the heartbeat of run {}; it goes to the dead letters once for this reason, later ones are counted: {message}",
                piece.run
            );
        } else {
            log::error!(
                "influxdb refused {points} points (record {}, unit {}, from its line {}); they go to the dead letters: {message}",
                piece.seq,
                piece.unit,
                piece.line
            );
            dead.push((piece.seq, message.clone()));
        }
        match self.dead.store(
            Key {
                record: piece.seq,
                unit: piece.unit,
                line: piece.line,
            },
            piece.lines,
            points as u64,
            &message,
        ) {
            Ok(Kept::Kept) => Stats::add(&stats.points_dead_lettered, points),
            Ok(Kept::Dropped) => Stats::add(&stats.points_dropped, points),
            Err(io) => {
                // The points can be kept nowhere; holding up everything behind them would not
                // bring them back.
                log::error!(
                    "cannot write a dead letter ({io}); {points} refused points are dropped"
                );
                Stats::add(&stats.points_dropped, points);
            }
        }
    }
}

/// Forgets the tenth of the refusals heard of longest ago.
fn forget_oldest(refusals: &mut HashMap<Uuid, RunRefusal>) {
    let mut times: Vec<SystemTime> = refusals.values().map(|r| r.at).collect();
    times.sort_unstable();
    let cut = times[times.len() / 10];
    refusals.retain(|_, r| r.at > cut);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lines of several units as one body. Each unit's lines end with '\n'; one that does not
/// gets it, so lines of two units never run together.
fn join(pieces: &[Piece<'_>]) -> String {
    let mut body = String::with_capacity(pieces.iter().map(|p| p.lines.len() + 1).sum());
    for piece in pieces {
        body.push_str(piece.lines);
        if !piece.lines.is_empty() && !piece.lines.ends_with('\n') {
            body.push('\n');
        }
    }
    body
}

#[cfg(test)]
mod tests {
    //! Every outcome of a write, in-process, through the in-memory sink and a real log in a
    //! temporary directory: stored; refused alone, in a shared write, or as a run's heartbeat;
    //! too large, or cut off while sending; unreachable, timed out, busy or misconfigured and
    //! then back; a sink that panics; the acknowledgement modes; the health the state page
    //! shows; the bound on the dead letters. Against a real `influxd` through the binary too
    //! (`tests/it/delivery.rs`).

    use super::*;
    use std::sync::Arc;
    use std::thread::JoinHandle;

    use crate::delivery::sink::testing::{Answer, MemorySink};
    use crate::storage::dead_letters;
    use crate::storage::tests::Dir;

    struct Running {
        delivery: Arc<Delivery>,
        sink: Arc<MemorySink>,
        stats: Arc<Stats>,
        dir: Dir,
        position: Option<Position>,
        deliverer: Option<JoinHandle<()>>,
    }

    impl Running {
        /// The deliverer goes to work (records appended before wait for it, so they are
        /// written together).
        fn start(&mut self) {
            let (d, stats) = (Arc::clone(&self.delivery), Arc::clone(&self.stats));
            let at = self.position.take().unwrap();
            self.deliverer = Some(std::thread::spawn(move || d.run(at, &stats)));
        }

        /// Appends a request's record without waiting for its answer; its ticket.
        fn append(&self, lines: &str) -> u64 {
            let points = line_protocol::split_lines(lines).count() as u32;
            self.delivery
                .log
                .append(
                    Kind::Request,
                    0,
                    b"",
                    &[Unit {
                        run: Uuid::nil(),
                        points,
                        lines,
                    }],
                )
                .unwrap()
        }

        /// A request's record, and the answer it gets.
        fn request(&self, lines: &str) -> Outcome {
            let points = line_protocol::split_lines(lines).count() as u32;
            let seq = self
                .delivery
                .record(
                    Kind::Request,
                    &Change::default(),
                    &[Unit {
                        run: Uuid::nil(),
                        points,
                        lines,
                    }],
                    &self.stats,
                )
                .unwrap();
            self.delivery.outcome(seq)
        }

        /// A tick's record: one heartbeat unit per run.
        fn heartbeats(&self, beats: &[(Uuid, String)]) {
            let units: Vec<Unit<'_>> = beats
                .iter()
                .map(|(run, line)| Unit {
                    run: *run,
                    points: 1,
                    lines: line,
                })
                .collect();
            self.delivery
                .record(Kind::Heartbeats, &Change::default(), &units, &self.stats)
                .unwrap();
        }

        /// Waits (60 s at most: a busy machine is slow to write a thousand dead letters)
        /// until `done` holds.
        fn until(&self, what: &str, done: impl Fn(&Running) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done(self) {
                assert!(Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        fn delivered_all(&self) {
            self.until("every record delivered", |r| {
                r.delivery.log.undelivered().0 == 0
            });
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.delivery.stop();
            if let Some(t) = self.deliverer.take() {
                let _ = t.join();
            }
        }
    }

    fn setup(
        name: &str,
        acknowledge: Acknowledge,
        limits: WriteLimits,
        dead_limit: u64,
    ) -> Running {
        let dir = Dir::new(name);
        let sink = Arc::new(MemorySink::new());
        let (log, position, _) = Log::open(
            crate::storage::tests::log_dir(&dir.0),
            1 << 30,
            false,
            &mut |_| {},
        )
        .unwrap();
        let delivery = Arc::new(Delivery::new(
            log,
            Box::new(Arc::clone(&sink)),
            DeadLetters::open(&crate::storage::tests::root(&dir), dead_limit).unwrap(),
            acknowledge,
            Duration::from_secs(5),
            limits,
        ));
        Running {
            delivery,
            sink,
            stats: Arc::new(Stats::default()),
            dir,
            position: Some(position),
            deliverer: None,
        }
    }

    const LIMITS: WriteLimits = WriteLimits {
        max_bytes: 1 << 20,
        max_lines: 5000,
    };

    fn started(name: &str) -> Running {
        let mut r = setup(name, Acknowledge::Influxdb, LIMITS, 1 << 20);
        r.start();
        r
    }

    #[test]
    fn a_stored_request_is_answered_delivered() {
        let r = started("delivery-stored");
        assert_eq!(r.request("m,r=a v=1 1\nm,r=a v=2 2\n"), Outcome::Delivered);
        assert_eq!(r.sink.stored(), ["m,r=a v=1 1", "m,r=a v=2 2"]);
        assert_eq!(Stats::get(&r.stats.points_written), 2);
        assert_eq!(r.delivery.influx_up(), Some(true));
        r.delivered_all();
    }

    #[test]
    fn refused_data_goes_to_the_dead_letters_and_the_request_learns_why() {
        for (name, answer, status) in [
            (
                "refused",
                SinkError::Refused {
                    status: 400,
                    message: "partial write: field type conflict".into(),
                    lines: None,
                },
                400,
            ),
            (
                "too-large",
                SinkError::TooLarge {
                    message: "request entity too large".into(),
                },
                413,
            ),
            (
                "unprocessable",
                SinkError::from_status(422, "schema conflict".into()),
                422,
            ),
        ] {
            let r = started(&format!("delivery-{name}"));
            r.sink.answer([Answer::Fail(answer)]);
            let outcome = r.request("m,r=a v=1 1\n");
            match &outcome {
                Outcome::DeadLettered(why) => {
                    assert!(
                        why.contains(&format!("influxdb answered {status}")),
                        "{why}"
                    )
                }
                other => panic!("{name}: {other:?}"),
            }
            let letters = dead_letters::list(&r.dir.0).unwrap();
            assert_eq!(letters.len(), 1, "{name}");
            assert_eq!(dead_letters::read(&letters[0].0).unwrap(), "m,r=a v=1 1\n");
            assert_eq!(
                r.delivery.influx_up(),
                Some(true),
                "{name}: a refusal is an answer"
            );
            // What follows is delivered: a refusal never blocks the log.
            assert_eq!(r.request("m,r=b v=1 1\n"), Outcome::Delivered, "{name}");
        }
    }

    #[test]
    fn a_failure_that_may_pass_keeps_the_points_and_delivers_them_once_influxdb_answers() {
        for (name, e) in [
            (
                "unreachable",
                SinkError::Unreachable("connection refused".into()),
            ),
            ("timeout", SinkError::TimedOut("timeout: global".into())),
            ("busy", SinkError::from_status(503, "busy".into())),
            ("throttled", SinkError::from_status(429, "slow down".into())),
            (
                "credentials",
                SinkError::from_status(401, "authorization failed".into()),
            ),
            (
                "database",
                SinkError::from_status(404, "database not found".into()),
            ),
        ] {
            let r = started(&format!("delivery-retry-{name}"));
            r.until("the start's probe", |r| {
                r.delivery.influx_up() == Some(true)
            });
            r.sink
                .answer([Answer::Fail(e.clone()), Answer::Fail(e.clone())]);
            // In "influxdb" mode the request waits for the first write, which fails: it is
            // answered as recorded, not delivered.
            assert_eq!(r.request("m,r=a v=1 1\n"), Outcome::Recorded, "{name}");
            assert_eq!(r.delivery.influx_up(), Some(false), "{name}");
            assert!(r.delivery.health().last_error.is_some());
            // Later requests do not wait while InfluxDB is down.
            let started = Instant::now();
            assert_eq!(r.request("m,r=b v=1 1\n"), Outcome::Recorded, "{name}");
            assert!(started.elapsed() < Duration::from_secs(1), "{name}");
            // The probe answers: both are delivered, in order, once each.
            r.delivered_all();
            assert_eq!(r.sink.stored(), ["m,r=a v=1 1", "m,r=b v=1 1"], "{name}");
            assert_eq!(r.delivery.influx_up(), Some(true), "{name}");
            assert_eq!(Stats::get(&r.stats.points_replayed), 2, "{name}");
            assert!(dead_letters::list(&r.dir.0).unwrap().is_empty(), "{name}");
        }
    }

    #[test]
    fn a_refusal_is_told_to_its_request_however_many_records_were_settled_since() {
        let r = setup(
            "delivery-late-reader",
            Acknowledge::Influxdb,
            LIMITS,
            1 << 20,
        );
        r.delivery
            .settle(5, vec![(5, "influxdb answered 400".into())]);
        r.delivery.settle(500_000, Vec::new());
        match r.delivery.outcome(5) {
            Outcome::DeadLettered(why) => assert!(why.contains("400"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.delivery.outcome(6), Outcome::Delivered);
    }

    #[test]
    fn a_refused_request_in_a_shared_write_is_dead_lettered_alone() {
        let mut r = setup("delivery-shared", Acknowledge::Influxdb, LIMITS, 1 << 20);
        r.sink.refuse_lines_with("r=bad");
        for name in ["a", "b", "bad", "c", "d"] {
            r.append(&format!("m,r={name} v=1 1\nm,r={name} v=2 2\n"));
        }
        let last = r.append("m,r=e v=1 1\n");
        r.delivery.log.wait(last).unwrap();
        r.start();
        r.delivered_all();
        let bodies = r.sink.bodies();
        assert!(
            bodies[0].lines().count() == 11,
            "the six requests went as one write first: {bodies:?}"
        );
        let letters = dead_letters::list(&r.dir.0).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(
            dead_letters::read(&letters[0].0).unwrap(),
            "m,r=bad v=1 1\nm,r=bad v=2 2\n"
        );
        let stored = r.sink.stored();
        for good in ["r=a", "r=b", "r=c", "r=d", "r=e"] {
            assert!(
                stored.iter().any(|l| l.contains(good)),
                "{good}: {stored:?}"
            );
        }
        assert!(!stored.iter().any(|l| l.contains("r=bad")));
        assert_eq!(Stats::get(&r.stats.points_dead_lettered), 2);
        // The request that was refused learns it; the others do not.
        assert!(matches!(r.delivery.outcome(3), Outcome::DeadLettered(_)));
        assert_eq!(r.delivery.outcome(2), Outcome::Delivered);
    }

    #[test]
    fn a_refused_heartbeat_is_dead_lettered_once_per_run_and_reason_and_counted_after() {
        let r = started("delivery-heartbeats");
        r.sink.refuse_lines_with("clients=\"ten\"");
        let runs: Vec<Uuid> = (1..=5).map(Uuid::from_u128).collect();
        for tick in 1..=4 {
            let beats: Vec<(Uuid, String)> = runs
                .iter()
                .enumerate()
                .map(|(i, run)| {
                    let clients = if i == 4 {
                        "\"ten\"".to_string()
                    } else {
                        "5".to_string()
                    };
                    (
                        *run,
                        format!("load_testing,uuid={run} clients={clients} {tick}\n"),
                    )
                })
                .collect();
            r.heartbeats(&beats);
        }
        r.delivered_all();
        let letters = dead_letters::list(&r.dir.0).unwrap();
        assert_eq!(
            letters.len(),
            1,
            "one dead letter for the run and its reason"
        );
        assert!(
            dead_letters::read(&letters[0].0)
                .unwrap()
                .contains(&runs[4].to_string())
        );
        assert_eq!(Stats::get(&r.stats.heartbeats_refused), 4);
        assert_eq!(Stats::get(&r.stats.points_dead_lettered), 1);
        let refusals = r.delivery.refusals();
        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[&runs[4]].count, 4);
        // The four good runs' heartbeats are all stored, every tick (InfluxDB stores the good
        // lines of a partial write, and the same line again is the same point: counted once).
        let stored: std::collections::HashSet<String> = r.sink.stored().into_iter().collect();
        for run in &runs[..4] {
            let beats = stored
                .iter()
                .filter(|l| l.contains(&run.to_string()))
                .count();
            assert_eq!(beats, 4, "{run}");
        }
        // A new reason is dead-lettered again, once.
        r.sink.refuse_lines_with("clients=\"eleven\"");
        for tick in 5..=6 {
            r.heartbeats(&[(
                runs[4],
                format!("load_testing,uuid={} clients=\"eleven\" {tick}\n", runs[4]),
            )]);
        }
        r.delivered_all();
        assert_eq!(dead_letters::list(&r.dir.0).unwrap().len(), 2);
        assert_eq!(r.delivery.refusals()[&runs[4]].count, 6);
    }

    #[test]
    fn writes_over_influxdbs_body_limit_are_split_and_never_block_what_follows() {
        let limits = WriteLimits {
            max_bytes: 1 << 20,
            max_lines: 5000,
        };
        let mut r = setup("delivery-too-large", Acknowledge::Influxdb, limits, 1 << 22);
        r.sink.refuse_bodies_over(10_000);
        // Thirty runs of 900-byte heartbeats: the tick's write is 27 kB, over the sink's limit;
        // one run's heartbeat alone (12 kB) is over it too.
        let big = "x".repeat(900);
        let beats: Vec<(Uuid, String)> = (1..=30)
            .map(|n| {
                let run = Uuid::from_u128(n);
                let note = if n == 7 {
                    "y".repeat(12_000)
                } else {
                    big.clone()
                };
                (run, format!("load_testing,uuid={run} note=\"{note}\" 1\n"))
            })
            .collect();
        r.start();
        r.heartbeats(&beats);
        assert_eq!(r.request("m,r=after v=1 1\n"), Outcome::Delivered);
        r.delivered_all();
        let stored = r.sink.stored();
        assert_eq!(stored.len(), 30, "29 heartbeats and the request after them");
        assert!(
            stored
                .iter()
                .all(|l| !l.contains(&Uuid::from_u128(7).to_string()))
        );
        let letters = dead_letters::list(&r.dir.0).unwrap();
        assert_eq!(letters.len(), 1, "only the run too large on its own");
        assert!(letters[0].2.contains("413"), "{}", letters[0].2);
    }

    #[test]
    fn a_connection_broken_while_sending_a_large_body_is_split_when_influxdb_answers_ping() {
        let r = started("delivery-reset");
        r.sink.reset_bodies_over(1 << 20);
        let line = |n: u32| format!("m,r=r{n} note=\"{}\" 1\n", "z".repeat(100_000));
        // One request of 2 MB: taken for a body limit, it is written in parts, and all of it
        // is stored; nothing is dead-lettered for a broken connection.
        let lines: String = (0..20).map(line).collect();
        assert_eq!(r.request(&lines), Outcome::Delivered);
        assert_eq!(r.sink.stored().len(), 20);
        assert!(r.sink.bodies().iter().skip(1).all(|b| b.len() <= 1 << 20));
        assert!(dead_letters::list(&r.dir.0).unwrap().is_empty());
        assert_eq!(Stats::get(&r.stats.points_dead_lettered), 0);
    }

    #[test]
    fn a_line_whose_connection_breaks_is_kept_and_tried_again_never_dead_lettered() {
        let r = started("delivery-reset-line");
        r.until("the start's probe", |r| {
            r.delivery.influx_up() == Some(true)
        });
        r.sink.reset_bodies_over(1 << 20);
        let big = format!("m,r=big note=\"{}\" 1\n", "z".repeat(1_200_000));
        assert_eq!(r.request(&big), Outcome::Recorded);
        r.until("a few tries", |r| r.sink.bodies().len() >= 3);
        assert!(dead_letters::list(&r.dir.0).unwrap().is_empty());
        assert_eq!(r.delivery.log.undelivered().0, 1, "the record is kept");
        // The fault passes: the line is delivered.
        r.sink.reset_bodies_over(usize::MAX);
        r.delivered_all();
        assert_eq!(r.sink.stored().len(), 1);
        assert_eq!(Stats::get(&r.stats.points_dead_lettered), 0);
    }

    /// 1 002 points (1.5 MB) of one commit while InfluxDB answers 500 to writes and `/ping`
    /// answers: the commit waits in the log and is delivered whole once InfluxDB takes
    /// writes again; a timeout does the same. Only a definite refusal dead-letters.
    #[test]
    fn a_large_commit_is_kept_through_a_5xx_and_a_timeout_and_delivered_later() {
        let r = started("delivery-large-5xx");
        r.until("the start's probe", |r| {
            r.delivery.influx_up() == Some(true)
        });
        let members: String = (0..20).map(|m| format!(",m{m}=1{m}.5")).collect();
        let mut commit = format!(
            "load_testing_result,uuid=u requestStats=\"{}\" 1\n",
            "s".repeat(300)
        );
        for row in 0..1001 {
            commit.push_str(&format!(
                "load_testing_request_stats,uuid=u,name=/e{row} full_name=\"{}\"{members} 1\n",
                "n".repeat(1300)
            ));
        }
        assert!(commit.len() > 1_500_000, "{}", commit.len());
        r.sink.answer([
            Answer::Fail(SinkError::from_status(
                500,
                "engine: cache maximum memory size exceeded".into(),
            )),
            Answer::Fail(SinkError::TimedOut("timeout: global".into())),
            Answer::Fail(SinkError::from_status(503, "busy".into())),
        ]);
        assert_eq!(r.request(&commit), Outcome::Recorded);
        r.delivered_all();
        assert_eq!(r.sink.stored().len(), 1002);
        assert_eq!(r.sink.bodies().len(), 4, "three failures, then one write");
        assert!(dead_letters::list(&r.dir.0).unwrap().is_empty());
        assert_eq!(Stats::get(&r.stats.points_dead_lettered), 0);
        assert_eq!(Stats::get(&r.stats.points_written), 1002);
    }

    /// InfluxDB 3 numbers the lines of a partial write as its parser splits them: a newline
    /// inside a string value does not end a line. Run A's register holds one; run B's commit
    /// is refused; A's points are stored and B's are dead-lettered.
    #[test]
    fn influxdb_3_line_numbers_count_lines_as_its_parser_does() {
        let mut r = setup(
            "delivery-v3-newlines",
            Acknowledge::Influxdb,
            LIMITS,
            1 << 20,
        );
        r.sink.name_refused_lines();
        r.sink.refuse_lines_with("conflict=");
        r.append("load_testing_events,uuid=a commit_msg=\"Fix login\n\nCloses #12\" 1\n");
        r.append("load_testing_events,uuid=b event=\"started\" 2\n");
        let last = r.append("load_testing_result,uuid=b conflict=\"text\" 3\n");
        r.delivery.log.wait(last).unwrap();
        r.start();
        r.delivered_all();
        let letters = dead_letters::list(&r.dir.0).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(
            dead_letters::read(&letters[0].0).unwrap(),
            "load_testing_result,uuid=b conflict=\"text\" 3\n"
        );
        assert_eq!(r.sink.bodies().len(), 1, "no second write");
        assert_eq!(Stats::get(&r.stats.points_written), 2);
        // The records are numbered 1, 2, 3 as they were written.
        assert_eq!(r.delivery.outcome(1), Outcome::Delivered);
        assert_eq!(r.delivery.outcome(2), Outcome::Delivered);
        assert!(matches!(r.delivery.outcome(3), Outcome::DeadLettered(_)));
    }

    /// 1 000 runs whose heartbeats InfluxDB refuses: once known, they go in a write of their
    /// own each tick (a probe, not split again), so a tick costs two writes, not thousands,
    /// and a request recorded beside them is not held behind them.
    #[test]
    fn runs_known_to_be_refused_cost_one_write_a_tick_and_hold_nobody_back() {
        let r = setup(
            "delivery-refused-runs",
            Acknowledge::Disk,
            WriteLimits {
                max_bytes: 1 << 20,
                max_lines: 5000,
            },
            1 << 26,
        );
        let mut r = r;
        r.start();
        r.sink.refuse_lines_with("clients=\"ten\"");
        let refused: Vec<Uuid> = (1..=1000).map(Uuid::from_u128).collect();
        let good: Vec<Uuid> = (1001..=1005).map(Uuid::from_u128).collect();
        let tick = |n: u32, clients: &str| -> Vec<(Uuid, String)> {
            refused
                .iter()
                .map(|run| {
                    (
                        *run,
                        format!("load_testing,uuid={run} clients={clients} {n}\n"),
                    )
                })
                .chain(
                    good.iter()
                        .map(|run| (*run, format!("load_testing,uuid={run} clients=5 {n}\n"))),
                )
                .collect()
        };
        r.heartbeats(&tick(1, "\"ten\""));
        r.delivered_all();
        assert_eq!(r.delivery.refusals().len(), 1000);
        assert_eq!(dead_letters::list(&r.dir.0).unwrap().len(), 1000);
        let before = r.sink.bodies().len();
        for n in 2..=4 {
            r.heartbeats(&tick(n, "\"ten\""));
        }
        assert_eq!(
            r.request("load_testing_result,uuid=other v=1 5\n"),
            Outcome::Recorded
        );
        r.delivered_all();
        let writes = r.sink.bodies().len() - before;
        assert!(
            writes <= 8,
            "three ticks and a request took {writes} writes"
        );
        assert!(
            r.sink
                .stored()
                .iter()
                .any(|l| l.starts_with("load_testing_result,uuid=other"))
        );
        assert_eq!(
            dead_letters::list(&r.dir.0).unwrap().len(),
            1000,
            "no new dead letter for the same reason"
        );
        assert_eq!(Stats::get(&r.stats.heartbeats_refused), 4000);
        assert!(r.delivery.refusals().values().all(|x| x.count == 4));
        // InfluxDB takes them again (the conflict is gone): the probe sees it, and they are
        // known as refused no longer.
        r.sink.refuse_lines_with("no-such-text");
        r.heartbeats(&tick(5, "\"ten\""));
        r.delivered_all();
        assert!(r.delivery.refusals().is_empty());
        let stored = r.sink.stored();
        assert!(stored.iter().any(|l| l.contains("clients=\"ten\" 5")));
    }

    #[test]
    fn a_sink_that_panics_does_not_stop_the_deliverer() {
        let r = started("delivery-panic");
        r.until("the start's probe", |r| {
            r.delivery.influx_up() == Some(true)
        });
        r.sink.answer([Answer::Panic]);
        assert_eq!(r.request("m v=1 1\n"), Outcome::Recorded);
        r.delivered_all();
        assert_eq!(r.sink.stored(), ["m v=1 1"]);
    }

    #[test]
    fn health_is_unknown_until_influxdb_answers_then_follows_it() {
        let mut r = setup("delivery-health", Acknowledge::Disk, LIMITS, 1 << 20);
        assert_eq!(r.delivery.influx_up(), None, "nothing was asked yet");
        r.sink.set_ping_fails(true);
        // InfluxDB is away for writes too, so the record cannot be delivered before it is
        // answered.
        r.sink.answer([Answer::Fail(SinkError::Unreachable(
            "connection refused".into(),
        ))]);
        r.start();
        r.until("the start's probe fails", |r| {
            r.delivery.influx_up() == Some(false)
        });
        assert_eq!(r.request("m v=1 1\n"), Outcome::Recorded);
        r.sink.set_ping_fails(false);
        r.until("the probe answers", |r| {
            r.delivery.influx_up() == Some(true)
        });
        r.delivered_all();
        assert_eq!(r.sink.stored(), ["m v=1 1"]);
    }

    #[test]
    fn writes_respect_the_line_and_byte_limits() {
        let limits = WriteLimits {
            max_bytes: 60,
            max_lines: 3,
        };
        let mut r = setup("delivery-limits", Acknowledge::Disk, limits, 1 << 20);
        for n in 0..10 {
            r.append(&format!("m,r=r{n} v={n} 1\n"));
        }
        let last = r.append("m,r=last v=1 1\n");
        r.delivery.log.wait(last).unwrap();
        r.start();
        r.delivered_all();
        let bodies = r.sink.bodies();
        assert!(
            bodies
                .iter()
                .all(|b| b.lines().count() <= 3 && b.len() <= 60),
            "{bodies:?}"
        );
        assert_eq!(r.sink.stored().len(), 11);
    }

    #[test]
    fn beyond_the_dead_letter_bound_refusals_are_counted_as_dropped() {
        let mut r = setup(
            "delivery-dead-bound",
            Acknowledge::Influxdb,
            LIMITS,
            3 * 4096,
        );
        r.start();
        r.sink.refuse_lines_with("bad");
        assert!(matches!(
            r.request("m,t=bad v=1 1\n"),
            Outcome::DeadLettered(_)
        ));
        assert!(matches!(
            r.request("m,t=bad v=2 2\nm,t=bad v=3 3\n"),
            Outcome::DeadLettered(_)
        ));
        assert_eq!(dead_letters::list(&r.dir.0).unwrap().len(), 1);
        assert_eq!(Stats::get(&r.stats.points_dropped), 2);
        let usage = r.delivery.dead_letters().usage();
        assert_eq!((usage.records, usage.dropped_points), (1, 2));
    }

    #[test]
    fn refused_lines_named_by_influxdb_3_are_dead_lettered_without_a_second_write() {
        // Three requests in one write; InfluxDB 3 refuses line 4 (the second line of the
        // second request) and stores the rest.
        let mut r = setup("delivery-v3-lines", Acknowledge::Influxdb, LIMITS, 1 << 20);
        r.sink.answer([Answer::Fail(SinkError::Refused {
            status: 400,
            message: "partial write of line protocol occurred: line 4: invalid column type".into(),
            lines: Some(vec![3]),
        })]);
        r.append("m,r=a v=1 1\nm,r=a v=2 2\n");
        r.append("m,r=b v=1 1\nm,r=b v=2 2\n");
        let last = r.append("m,r=c v=1 1\n");
        r.delivery.log.wait(last).unwrap();
        r.start();
        r.delivered_all();
        assert_eq!(
            r.sink.bodies().len(),
            1,
            "no second write: {:?}",
            r.sink.bodies()
        );
        let letters = dead_letters::list(&r.dir.0).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(
            dead_letters::read(&letters[0].0).unwrap(),
            "m,r=b v=1 1\nm,r=b v=2 2\n"
        );
        assert_eq!(Stats::get(&r.stats.points_written), 3);
        assert!(matches!(r.delivery.outcome(2), Outcome::DeadLettered(_)));
        assert_eq!(r.delivery.outcome(3), Outcome::Delivered);
    }
}
