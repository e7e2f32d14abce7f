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
//! gets an error, and nothing of it was recorded. In `"influxdb"` mode a request may leave its
//! answer to the deliverer ([`Delivery::outcome_with`]): the deliverer sends it right after
//! InfluxDB stored the record's points, and the request's thread is not woken to send it.
//!
//! **The deliverer** ([`Delivery::run`]) reads the log in order and writes what it reads to
//! InfluxDB in batches of at most `influxdb.max_write_bytes` and `influxdb.max_write_lines`.
//! What InfluxDB stored, the log marks delivered (and trims). A failure that may pass
//! (unreachable, timeout, 5xx, 429, credentials, a missing database) keeps the batch: the
//! deliverer probes InfluxDB with `/ping`, waiting 0.5 s doubling to 30 s, and writes the same
//! batch again; a batch sent twice stores nothing twice, since every point has an explicit
//! timestamp and InfluxDB keeps one point per series and time. Only InfluxDB's definite
//! refusal of the data (a 400 or 422 in InfluxDB's own words, a 413 of a single line, the lines
//! InfluxDB 3 names) never travels and never loops: the batch is written again in parts until
//! the refused units stand alone; those go to the dead letters — a request's points as one
//! dead letter, a heartbeat once per run and reason (later refusals of the same run are only
//! counted, in a write of their own each tick) — and the deliverer goes on with what follows.
//! A connection broken while a large body is sent, while `/ping` answers, only splits the write.
//!
//! The files: `deliverer.rs` (the loop, batches, parts, refusals), `health.rs` (what delivery
//! tells of InfluxDB), `sink.rs` (the edge), `influx.rs` (InfluxDB over HTTP).
//!
//! Delivery knows nothing of runs beyond the uuid a heartbeat unit carries, and holds no lock
//! across I/O but the log's own writer turn.

mod deliverer;
mod health;
pub mod influx;
mod pieces;
pub mod sink;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use uuid::Uuid;

use crate::config::Acknowledge;
use crate::state::jobs::Change;
use crate::stats::Stats;
use crate::storage::dead_letters::DeadLetters;
use crate::storage::log::OwnedTarget;
use crate::storage::log::{Log, LogError, Share};
use crate::storage::record::{Kind, Unit};
use crate::sync::{Signal, Waiter, lock};
pub use health::Health;
use health::Streak;
use sink::{Disposition, Sink, SinkError};

/// Whether a write API target lands where `[influxdb]`'s own points go.
type OwnTargetTest = Box<dyn Fn(&OwnedTarget) -> bool + Send + Sync>;

/// First and longest wait between tries while InfluxDB fails.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a body limit learned from InfluxDB refusing a write as too large (413) holds before
/// writes of `influxdb.max_write_bytes` are tried again: one refused write an hour at most.
const BODY_LIMIT_KEPT: Duration = Duration::from_secs(3600);
/// A write larger than this that ends in a reset is taken for InfluxDB closing on a body it
/// will not read (influxd answers 413 and closes while the client still sends), once `/ping`
/// shows InfluxDB is up: the batch is split, not retried whole forever.
const RESET_SUSPECT_BYTES: usize = 1 << 20;
/// The smallest body, in bytes, that a 413 makes writes go down to; a single line no larger
/// than this answered 413 says the body limit is wrong, not the line (it is kept).
const MIN_BODY_LIMIT: usize = 1024;
/// Per-run heartbeat refusals remembered at most; the oldest are forgotten first.
const REFUSALS_KEPT: usize = 20_000;
/// How long a refusal waits for its request to read it, in multiples of the longest a request
/// waits (`influxdb.timeout`): the request reads it as soon as it is woken, or gave up waiting
/// long before (and answered "recorded").
const UNREAD_REFUSAL_WAITS: u32 = 10;

/// The deliverer's batches: the limits of one write, from `[influxdb]`, and how long records
/// that fill no write wait for more (`delivery.linger`).
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    /// `influxdb.max_write_bytes`: bytes of line protocol in one write at most (a single
    /// larger unit still goes, alone).
    pub max_bytes: usize,
    /// `influxdb.max_write_lines`: points in one write at most.
    pub max_lines: usize,
    /// `delivery.linger`: with `acknowledge = "disk"`, how long records that fill no write
    /// wait for more to be written with them, each once, counted from when the deliverer read
    /// it ([`Duration::ZERO`]: none). Not with `"influxdb"`: its requests wait for the write.
    pub linger: Duration,
}

impl WriteLimits {
    /// How many of the items whose (bytes, points) `sizes` gives go in one write: as many as
    /// fit both limits, and at least one (a single larger item still goes, alone).
    pub fn first_write(&self, sizes: impl IntoIterator<Item = (usize, usize)>) -> usize {
        let (mut bytes, mut lines, mut n) = (0usize, 0usize, 0usize);
        for (b, l) in sizes {
            if n > 0 && (bytes + b > self.max_bytes || lines + l > self.max_lines) {
                break;
            }
            bytes += b;
            lines += l;
            n += 1;
        }
        n.max(1)
    }
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
    /// Answers armed for records not yet settled, by record number, for the deliverer to send
    /// once InfluxDB stored their points ([`Delivery::outcome_with`]).
    answers: BTreeMap<u64, Arc<dyn Waiter>>,
}

const UNKNOWN: u8 = 0;
/// How many signals the requests waiting for their records to be settled are spread over, by
/// record number: requests of records this many apart share one and may wake for each other
/// (and check again), as all did with one signal.
const SETTLE_SIGNALS: usize = 64;

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
    /// What a request waiting for its record to be settled waits on: the signal of its record's
    /// number ([`Delivery::settle_signal`]), so a batch settled wakes its own requests, not
    /// those waiting for the next one.
    settled_changed: [Signal; SETTLE_SIGNALS],
    refusals: Mutex<HashMap<Uuid, RunRefusal>>,
    /// Set by [`Delivery::stop`]: the deliverer returns.
    stopping: AtomicBool,
    /// Bytes of one write at most, as learned from InfluxDB refusing larger ones (it starts at
    /// `influxdb.max_write_bytes`): later batches are cut to what it takes, so a body limit
    /// smaller than the configured batch is met with one refusal, not one per batch.
    learned_max_bytes: std::sync::atomic::AtomicUsize,
    /// When the body limit was last learned: after [`BODY_LIMIT_KEPT`] the configured size is
    /// tried again, so a limit raised since (or a proxy's passing refusal) does not keep the
    /// writes small for ever.
    learned_at: Mutex<Option<Instant>>,
    /// [`BODY_LIMIT_KEPT`], in milliseconds (tests shorten it).
    body_limit_kept_ms: AtomicU64,
    /// InfluxDB (or a proxy) answered 413 to a single line no body limit should refuse: until
    /// a write is stored again, no 413 to a single line is taken as about that line.
    body_limit_broken: AtomicBool,
    /// The smallest body limit told as a warning (`usize::MAX`: none yet).
    body_limit_told: std::sync::atomic::AtomicUsize,
    /// Units InfluxDB refused so far: a refusal may mean its schema changed.
    refusals_seen: AtomicU64,
    /// The failures since InfluxDB last took the log, for the log's account of them.
    streak: Mutex<Streak>,
    /// Whether a write API target lands where `[influxdb]`'s own points go
    /// ([`Delivery::set_own_target`]); unset, none does.
    own_target: std::sync::OnceLock<OwnTargetTest>,
    /// Run once, right after [`Delivery::caught_up`] next looked at the log: a test puts a
    /// request there, between the look and what follows it.
    #[cfg(test)]
    after_caught_up: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Delivery {
    /// Tells the deliverer which write API targets land where `[influxdb]`'s own points go:
    /// InfluxDB's answer that such a target is missing or closed (404, 403) is about the
    /// gateway's configuration, and keeps the points as it keeps the gateway's own, instead of
    /// refusing them as a client's database it cannot write ([`SinkError::disposition_for`]).
    /// Set once, before the deliverer runs; later calls change nothing.
    pub fn set_own_target(&self, lands: impl Fn(&OwnedTarget) -> bool + Send + Sync + 'static) {
        let _ = self.own_target.set(Box::new(lands));
    }

    /// What a failed write of points for `target` means for them:
    /// [`SinkError::disposition_for`], with a target where `[influxdb]`'s own points go taken
    /// as the gateway's own ([`Delivery::set_own_target`]).
    fn disposition_of(&self, e: &SinkError, target: Option<&OwnedTarget>) -> Disposition {
        let own = |t: &&OwnedTarget| self.own_target.get().is_some_and(|lands| lands(t));
        e.disposition_for(target.filter(|t| !own(t)))
    }

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
            settled_changed: std::array::from_fn(|_| Signal::new()),
            refusals: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            learned_max_bytes: std::sync::atomic::AtomicUsize::new(limits.max_bytes),
            learned_at: Mutex::new(None),
            body_limit_kept_ms: AtomicU64::new(BODY_LIMIT_KEPT.as_millis() as u64),
            body_limit_broken: AtomicBool::new(false),
            body_limit_told: std::sync::atomic::AtomicUsize::new(usize::MAX),
            refusals_seen: AtomicU64::new(0),
            streak: Mutex::new(Streak::default()),
            own_target: std::sync::OnceLock::new(),
            #[cfg(test)]
            after_caught_up: Mutex::new(None),
        }
    }

    /// Shortens [`BODY_LIMIT_KEPT`] for a test.
    #[cfg(test)]
    pub(crate) fn set_body_limit_kept(&self, kept: Duration) {
        self.body_limit_kept_ms
            .store(kept.as_millis() as u64, Ordering::Relaxed);
    }

    /// Has `hook` run once, right after [`Delivery::caught_up`] next looked at the log.
    #[cfg(test)]
    pub(crate) fn after_caught_up(&self, hook: impl FnOnce() + Send + 'static) {
        *lock(&self.after_caught_up) = Some(Box::new(hook));
    }

    /// Makes [`Delivery::run`] return soon: at once from a wait for records, within 100 ms
    /// from a linger or a backoff, after the write in flight (bounded by its timeout); what is
    /// undelivered stays in the log for the next start.
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

    /// How long the oldest undelivered record has waited
    /// ([`crate::storage::log::Log::oldest_waiting`]).
    pub fn oldest_waiting(&self) -> Option<Duration> {
        self.log.oldest_waiting()
    }

    /// The last refusal of each run whose heartbeat InfluxDB refused.
    pub fn refusals(&self) -> HashMap<Uuid, RunRefusal> {
        lock(&self.refusals).clone()
    }

    /// Units InfluxDB has refused since the start: when it grows, InfluxDB's schema may have
    /// changed under the gateway.
    pub fn refusals_seen(&self) -> u64 {
        self.refusals_seen.load(Ordering::Relaxed)
    }

    /// Whether every record of the log is delivered (InfluxDB stored its points, or refused
    /// them into the dead letters): then InfluxDB holds every type the gateway wrote, so far as
    /// its records go. A record is counted from when it is appended, before the request that
    /// wrote it learns its types ([`crate::state::schema::Claim::written`]).
    pub fn caught_up(&self) -> bool {
        let caught_up = self.log.undelivered().0 == 0;
        #[cfg(test)]
        {
            let hook = lock(&self.after_caught_up).take();
            if let Some(hook) = hook {
                hook();
            }
        }
        caught_up
    }

    /// What InfluxDB says of the schema of the gateway's measurements, where its API allows.
    pub fn read_schema(&self) -> Result<Option<crate::state::schema::Known>, SinkError> {
        self.sink.schema(&crate::ingest::points::MEASUREMENTS)
    }

    /// What InfluxDB says of the field types in `database` (a write API's database), where
    /// its API allows.
    pub fn read_field_types_of(
        &self,
        database: &str,
    ) -> Result<Option<crate::state::schema::Known>, SinkError> {
        self.sink.field_types_of(database)
    }

    /// What InfluxDB says of the retention policy of `target` (a write API's database and
    /// retention policy), where its API tells.
    pub fn read_retention_of(
        &self,
        target: &crate::storage::log::OwnedTarget,
    ) -> Result<crate::state::schema::TargetPolicy, SinkError> {
        self.sink.retention_of(target)
    }

    /// Puts a request's points (`units`) and job-table change into one record of the log, and
    /// waits until it is on disk; its number. `share` names the client the record is for and
    /// bounds its undelivered bytes (`None`: no client). An error means nothing of it was
    /// recorded ([`LogError::ShareFull`]: the client's share is full).
    pub fn record(
        &self,
        kind: Kind,
        change: &Change,
        units: &[Unit<'_>],
        share: Option<Share<'_>>,
        stats: &Stats,
    ) -> Result<u64, LogError> {
        self.record_with(kind, change, units, share, stats, None)
    }

    /// [`Delivery::record`], the wait left to `waiter` when there is one
    /// ([`Log::wait_with`]).
    pub fn record_with(
        &self,
        kind: Kind,
        change: &Change,
        units: &[Unit<'_>],
        share: Option<Share<'_>>,
        stats: &Stats,
        waiter: Option<Arc<dyn crate::sync::Waiter>>,
    ) -> Result<u64, LogError> {
        let ticket = self
            .log
            .append(kind, change.seq, &change.bytes, units, share)?;
        let seq = match waiter {
            Some(waiter) => self.log.wait_with(ticket, waiter),
            None => self.log.wait(ticket),
        }?;
        let points: u32 = units.iter().map(|u| u.points).sum();
        Stats::add(&stats.points_spooled, points as usize);
        Ok(seq)
    }

    /// Whether a request is answered once its record is on disk (`delivery.acknowledge =
    /// "disk"`), whatever InfluxDB says of it later.
    pub fn acknowledges_at_disk(&self) -> bool {
        self.acknowledge == Acknowledge::Disk
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
                settled =
                    crate::sync::unpoisoned(self.settle_signal(seq).wait_timeout(settled, left)).0;
            }
        }
        Self::outcome_now(&mut settled, seq)
    }

    /// What to answer for record `seq`, as far as it is settled now.
    fn outcome_now(settled: &mut Settled, seq: u64) -> Outcome {
        if let Some((why, _)) = settled.dead.remove(&seq) {
            return Outcome::DeadLettered(why);
        }
        if settled.upto >= seq {
            Outcome::Delivered
        } else {
            Outcome::Recorded
        }
    }

    /// [`Delivery::outcome`], with the answer for InfluxDB having stored record `seq` armed as
    /// `answer` (`None`: none): with `delivery.acknowledge = "influxdb"` the deliverer sends it
    /// ([`Waiter::settled`]) right after InfluxDB's answer, and this thread sleeps in
    /// [`Waiter::wait`] meanwhile. A record dead-lettered, InfluxDB down, the deliverer ending
    /// or the wait's bound passing drops it ([`Waiter::untold`]); the outcome returned says
    /// which answer goes, and matches the one sent.
    pub fn outcome_with(&self, seq: u64, answer: Option<Arc<dyn Waiter>>) -> Outcome {
        let Some(answer) = answer else {
            return self.outcome(seq);
        };
        let mut settled = lock(&self.settled);
        if self.acknowledge != Acknowledge::Influxdb
            || self.up.load(Ordering::Relaxed) == DOWN
            || self.is_stopping()
            || settled.upto >= seq
        {
            drop(settled);
            return self.outcome(seq);
        }
        settled.answers.insert(seq, Arc::clone(&answer));
        drop(settled);
        answer.wait(Some(Instant::now() + self.wait_at_most));
        let mut settled = lock(&self.settled);
        if settled.answers.remove(&seq).is_some() {
            // Still here: the bound passed. The deliverer will not send it.
            drop(settled);
            answer.untold();
        } else {
            // Taken by the deliverer (or dropped), which tells it right after taking it. Bounded
            // all the same: an answer never told is taken back by the connection's thread.
            drop(settled);
            answer.wait(Some(Instant::now() + self.wait_at_most));
        }
        Self::outcome_now(&mut lock(&self.settled), seq)
    }

    /// Records up to `upto` are settled; `dead` are the requests among them that were refused.
    /// The answers armed for the others are sent here ([`Delivery::outcome_with`]).
    fn settle(&self, upto: u64, dead: Vec<(u64, String)>) {
        let mut settled = lock(&self.settled);
        let before = settled.upto;
        settled.upto = settled.upto.max(upto);
        let mut answers = Vec::new();
        if self.acknowledge == Acknowledge::Influxdb {
            let now = Instant::now();
            let keep = self.wait_at_most * UNREAD_REFUSAL_WAITS;
            settled
                .dead
                .retain(|_, (_, at)| now.duration_since(*at) < keep);
            settled
                .dead
                .extend(dead.into_iter().map(|(seq, why)| (seq, (why, now))));
            let later = settled.answers.split_off(&(upto + 1));
            let due = std::mem::replace(&mut settled.answers, later);
            answers = due
                .into_iter()
                .map(|(seq, answer)| (!settled.dead.contains_key(&seq), answer))
                .collect();
        }
        drop(settled);
        for (stored, answer) in answers {
            match stored {
                true => answer.settled(true),
                false => answer.untold(),
            }
        }
        // The requests of the records settled now, `(before, upto]`.
        if upto.saturating_sub(before) >= SETTLE_SIGNALS as u64 {
            self.wake_every_waiter();
        } else {
            for seq in before + 1..=upto {
                self.settle_signal(seq).notify_all();
            }
        }
    }

    /// The signal the request of record `seq` waits on to be settled.
    fn settle_signal(&self, seq: u64) -> &Signal {
        &self.settled_changed[(seq % SETTLE_SIGNALS as u64) as usize]
    }

    /// Wakes every request waiting for its record to be settled (InfluxDB is down: they are
    /// answered at once).
    fn wake_every_waiter(&self) {
        for signal in &self.settled_changed {
            signal.notify_all();
        }
    }

    /// Drops every answer left to the deliverer ([`Delivery::outcome_with`]): InfluxDB is
    /// down, or the deliverer ends. Their requests answer at once, from their own threads.
    fn drop_answers(&self) {
        let answers = std::mem::take(&mut lock(&self.settled).answers);
        for answer in answers.into_values() {
            answer.untold();
        }
    }
}
